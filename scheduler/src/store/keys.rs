//! API keys: a public prefix for lookup and the SHA-256 of the secret (keys are 256-bit random,
//! so a fast hash is enough; the clear key is never stored). A key belongs to a user and acts
//! in one project; a rotated key keeps working until its `expires_at`.

use super::{Store, StoreError, StoreResult, on_pool};
use chrono::{DateTime, Utc};
use cloud_api::ProjectId;
use cloud_api::ids::ApiKeyId;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub id: ApiKeyId,
    pub project_id: ProjectId,
    pub name: String,
    pub prefix: String,
    pub secret_hash: Vec<u8>,
    /// The bootstrap key: every permission, whatever its user's roles.
    pub is_admin: bool,
    pub user_id: Option<Uuid>,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKeyRecord {
    pub id: Uuid,
    pub project_id: Uuid,
    pub name: String,
    pub prefix: String,
    pub secret_hash: Vec<u8>,
    pub is_admin: bool,
    pub user_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

macro_rules! key_cols {
    () => {
        "id, project_id, name, prefix, secret_hash, is_admin, user_id, created_at, expires_at, revoked_at"
    };
}

impl Store {
    pub async fn api_key_insert(&self, key: &NewApiKey) -> StoreResult<()> {
        on_pool!(self, p => {
            sqlx::query(
                "INSERT INTO api_keys (id, project_id, name, prefix, secret_hash, is_admin, created_at, user_id, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(key.id.0)
            .bind(key.project_id.0)
            .bind(&key.name)
            .bind(&key.prefix)
            .bind(&key.secret_hash)
            .bind(key.is_admin)
            .bind(Utc::now())
            .bind(key.user_id)
            .bind(key.expires_at)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    pub async fn api_key_get_by_prefix(&self, prefix: &str) -> StoreResult<ApiKeyRecord> {
        const SQL: &str = concat!("SELECT ", key_cols!(), " FROM api_keys WHERE prefix = $1");
        on_pool!(self, p => {
            Ok(sqlx::query_as::<_, ApiKeyRecord>(SQL).bind(prefix).fetch_one(p).await?)
        })
    }

    /// A user's key (revoked ones too).
    pub async fn api_key_get(&self, user: Uuid, id: Uuid) -> StoreResult<ApiKeyRecord> {
        const SQL: &str = concat!(
            "SELECT ",
            key_cols!(),
            " FROM api_keys WHERE id = $1 AND user_id = $2"
        );
        on_pool!(self, p => {
            Ok(sqlx::query_as::<_, ApiKeyRecord>(SQL).bind(id).bind(user).fetch_one(p).await?)
        })
    }

    /// A user's keys that are not revoked, newest first.
    pub async fn api_key_list(&self, user: Uuid) -> StoreResult<Vec<ApiKeyRecord>> {
        const SQL: &str = concat!(
            "SELECT ",
            key_cols!(),
            " FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL ORDER BY id DESC"
        );
        on_pool!(self, p => {
            Ok(sqlx::query_as::<_, ApiKeyRecord>(SQL).bind(user).fetch_all(p).await?)
        })
    }

    /// Revokes one of a user's keys (idempotent for an already revoked key).
    pub async fn api_key_revoke(&self, user: Uuid, id: Uuid) -> StoreResult<()> {
        on_pool!(self, p => {
            let n = sqlx::query(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 AND user_id = $3",
            )
            .bind(Utc::now())
            .bind(id)
            .bind(user)
            .execute(p)
            .await?
            .rows_affected();
            if n == 0 {
                return Err(StoreError::NotFound);
            }
        });
        Ok(())
    }

    /// Rotation: inserts `new` and makes the old key expire at `old_expires` (never later
    /// than an expiry it already had), in one transaction.
    pub async fn api_key_rotate(
        &self,
        user: Uuid,
        old: Uuid,
        old_expires: DateTime<Utc>,
        new: &NewApiKey,
    ) -> StoreResult<()> {
        super::in_tx!(self, tx => {
            let n = sqlx::query(
                "UPDATE api_keys SET expires_at = CASE WHEN expires_at IS NULL OR expires_at > $1 THEN $1 ELSE expires_at END
                 WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL",
            )
            .bind(old_expires)
            .bind(old)
            .bind(user)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            sqlx::query(
                "INSERT INTO api_keys (id, project_id, name, prefix, secret_hash, is_admin, created_at, user_id, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(new.id.0)
            .bind(new.project_id.0)
            .bind(&new.name)
            .bind(&new.prefix)
            .bind(&new.secret_hash)
            .bind(new.is_admin)
            .bind(Utc::now())
            .bind(new.user_id)
            .bind(new.expires_at)
            .execute(&mut *tx)
            .await?;
            Ok(())
        })
    }

    pub async fn api_key_count_admin(&self) -> StoreResult<i64> {
        on_pool!(self, p => {
            let row: (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM api_keys WHERE is_admin = TRUE AND revoked_at IS NULL",
            )
            .fetch_one(p)
            .await?;
            Ok(row.0)
        })
    }

    /// Gives the bootstrap keys made before users existed to `user` (the bootstrap admin).
    pub async fn api_keys_adopt(&self, user: Uuid) -> StoreResult<u64> {
        on_pool!(self, p => {
            Ok(sqlx::query("UPDATE api_keys SET user_id = $1 WHERE user_id IS NULL AND is_admin = TRUE")
                .bind(user)
                .execute(p)
                .await?
                .rows_affected())
        })
    }
}
