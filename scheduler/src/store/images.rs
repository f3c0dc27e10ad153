//! VM images: registrations of base disks that nodes find at the same path, optionally with a
//! kernel (and initrd, command line) to boot directly. An instance copies what it needs of its
//! image at creation (`VmSpecRecord`), so deleting an image never breaks running VMs.

use super::{Store, StoreError, StoreResult, on_pool};
use chrono::{DateTime, Utc};
use cloud_api::ProjectId;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ImageRecord {
    pub id: Uuid,
    pub project_id: Uuid,
    pub name: String,
    pub path: String,
    pub format: String,
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub cmdline: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Every project sees and uses it (operators' images, by default).
    pub public: bool,
}

/// The VM part of an instance, stored with it as JSON.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpecRecord {
    pub image_id: Uuid,
    pub image_name: String,
    pub path: String,
    pub format: String,
    #[serde(default)]
    pub kernel: Option<String>,
    #[serde(default)]
    pub initrd: Option<String>,
    #[serde(default)]
    pub cmdline: Option<String>,
    pub disk_gb: u64,
    /// May hold secrets: never logged, never shown by the API.
    #[serde(default)]
    pub user_data: String,
}

impl std::fmt::Debug for VmSpecRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmSpecRecord")
            .field("image_id", &self.image_id)
            .field("disk_gb", &self.disk_gb)
            .field("user_data_bytes", &self.user_data.len())
            .finish_non_exhaustive()
    }
}

const SELECT: &str = "SELECT id, project_id, name, path, format, kernel, initrd, cmdline, created_at, public FROM images";

impl Store {
    pub async fn image_insert(&self, r: &ImageRecord) -> StoreResult<()> {
        on_pool!(self, p => sqlx::query(
            "INSERT INTO images (id, project_id, name, path, format, kernel, initrd, cmdline, created_at, public)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(r.id)
        .bind(r.project_id)
        .bind(&r.name)
        .bind(&r.path)
        .bind(&r.format)
        .bind(&r.kernel)
        .bind(&r.initrd)
        .bind(&r.cmdline)
        .bind(r.created_at)
        .bind(r.public)
        .execute(p)
        .await
        .map(|_| ())?);
        Ok(())
    }

    /// By id or name: the project's own, else a public one.
    pub async fn image_get(
        &self,
        project: ProjectId,
        id_or_name: &str,
    ) -> StoreResult<ImageRecord> {
        let by_id = id_or_name.parse::<Uuid>().ok();
        let sql = format!(
            "{SELECT} WHERE (project_id = $1 OR public) AND (id = $2 OR name = $3)
             ORDER BY CASE WHEN project_id = $1 THEN 0 ELSE 1 END LIMIT 1"
        );
        on_pool!(self, p => Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(project.0)
            .bind(by_id)
            .bind(id_or_name)
            .fetch_one(p)
            .await?))
    }

    pub async fn image_list(
        &self,
        project: ProjectId,
        after: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Vec<ImageRecord>> {
        let sql = format!(
            "{SELECT} WHERE (project_id = $1 OR public) AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3"
        );
        on_pool!(self, p => Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(project.0)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(p)
            .await?))
    }

    pub async fn image_delete(&self, project: ProjectId, id: Uuid) -> StoreResult<()> {
        let done = on_pool!(self, p => sqlx::query("DELETE FROM images WHERE project_id = $1 AND id = $2")
            .bind(project.0)
            .bind(id)
            .execute(p)
            .await?
            .rows_affected());
        if done == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
