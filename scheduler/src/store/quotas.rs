//! Per-project quotas (instances, vCPUs as millicores, memory, volume GB; NULL: unlimited)
//! and usage. Creation checks them inside its own transaction after locking the project's
//! quota row (`quota_locked!`), so two concurrent creates cannot both take the last room.

use super::{Store, StoreResult, on_pool};
use cloud_api::ProjectId;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct QuotaRecord {
    pub max_instances: Option<i64>,
    pub max_cpu_millis: Option<i64>,
    pub max_memory_mb: Option<i64>,
    pub max_volume_gb: Option<i64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaUsage {
    pub instances: i64,
    pub cpu_millis: i64,
    pub memory_mb: i64,
    pub volume_gb: i64,
}

/// A project's instance count, CPU millicores and memory.
pub(crate) const INSTANCE_USAGE: &str = "SELECT COUNT(*), CAST(SUM(cpu_millis) AS BIGINT), \
     CAST(SUM(memory_mb) AS BIGINT) FROM instances WHERE project_id = $1";
/// A project's volume GB.
pub(crate) const VOLUME_USAGE: &str =
    "SELECT CAST(SUM(size_gb) AS BIGINT) FROM volumes WHERE project_id = $1";

/// Locks the project's quota row (if it has one) in `$tx` and returns it with the project's
/// instance usage: `StoreResult<Option<(QuotaRecord, QuotaUsage)>>`.
macro_rules! quota_locked {
    ($tx:ident, $project:expr) => {{
        let project: ::uuid::Uuid = $project;
        let q: Option<$crate::store::QuotaRecord> = sqlx::query_as(
            "UPDATE project_quotas SET max_instances = max_instances WHERE project_id = $1
             RETURNING max_instances, max_cpu_millis, max_memory_mb, max_volume_gb",
        )
        .bind(project)
        .fetch_optional(&mut *$tx)
        .await?;
        match q {
            None => None,
            Some(q) => {
                let (n, cpu, mem): (i64, Option<i64>, Option<i64>) =
                    sqlx::query_as($crate::store::quotas::INSTANCE_USAGE)
                        .bind(project)
                        .fetch_one(&mut *$tx)
                        .await?;
                let (gb,): (Option<i64>,) = sqlx::query_as($crate::store::quotas::VOLUME_USAGE)
                    .bind(project)
                    .fetch_one(&mut *$tx)
                    .await?;
                Some((
                    q,
                    $crate::store::QuotaUsage {
                        instances: n,
                        cpu_millis: cpu.unwrap_or(0),
                        memory_mb: mem.unwrap_or(0),
                        volume_gb: gb.unwrap_or(0),
                    },
                ))
            }
        }
    }};
}
pub(crate) use quota_locked;

impl QuotaRecord {
    /// Why `usage` plus one more instance of (`cpu_millis`, `memory_mb`) is over this quota.
    pub fn instance_refusal(
        &self,
        usage: &QuotaUsage,
        cpu_millis: i64,
        memory_mb: i64,
    ) -> Option<String> {
        let over = |limit: Option<i64>, used: i64, more: i64, what: &str, unit: &str| {
            limit.filter(|l| used + more > *l).map(|l| {
                format!("quota exceeded: the project may use {l}{unit} {what}; {used}{unit} are used and this needs {more}{unit} more")
            })
        };
        over(self.max_instances, usage.instances, 1, "instances", "")
            .or_else(|| {
                over(
                    self.max_cpu_millis,
                    usage.cpu_millis,
                    cpu_millis,
                    "CPU (millicores)",
                    "",
                )
            })
            .or_else(|| {
                over(
                    self.max_memory_mb,
                    usage.memory_mb,
                    memory_mb,
                    "memory",
                    " MB",
                )
            })
    }

    pub fn volume_refusal(&self, usage: &QuotaUsage, more_gb: i64) -> Option<String> {
        self.max_volume_gb.filter(|l| usage.volume_gb + more_gb > *l).map(|l| {
            format!(
                "quota exceeded: the project may have {l} GB of volumes; {} GB exist and this needs {more_gb} GB more",
                usage.volume_gb
            )
        })
    }
}

impl Store {
    pub async fn quota_get(&self, project: ProjectId) -> StoreResult<QuotaRecord> {
        on_pool!(self, p => {
            Ok(sqlx::query_as::<_, QuotaRecord>(
                "SELECT max_instances, max_cpu_millis, max_memory_mb, max_volume_gb
                 FROM project_quotas WHERE project_id = $1",
            )
            .bind(project.0)
            .fetch_optional(p)
            .await?
            .unwrap_or_default())
        })
    }

    pub async fn quota_set(&self, project: ProjectId, q: &QuotaRecord) -> StoreResult<()> {
        on_pool!(self, p => {
            sqlx::query(
                "INSERT INTO project_quotas (project_id, max_instances, max_cpu_millis, max_memory_mb, max_volume_gb)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (project_id) DO UPDATE SET max_instances = $2, max_cpu_millis = $3,
                   max_memory_mb = $4, max_volume_gb = $5",
            )
            .bind(project.0)
            .bind(q.max_instances)
            .bind(q.max_cpu_millis)
            .bind(q.max_memory_mb)
            .bind(q.max_volume_gb)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    pub async fn quota_usage(&self, project: ProjectId) -> StoreResult<QuotaUsage> {
        on_pool!(self, p => {
            let (n, cpu, mem): (i64, Option<i64>, Option<i64>) = sqlx::query_as(
                INSTANCE_USAGE,
            )
            .bind(project.0)
            .fetch_one(p)
            .await?;
            let (gb,): (Option<i64>,) =
                sqlx::query_as(VOLUME_USAGE)
                    .bind(project.0)
                    .fetch_one(p)
                    .await?;
            Ok(QuotaUsage {
                instances: n,
                cpu_millis: cpu.unwrap_or(0),
                memory_mb: mem.unwrap_or(0),
                volume_gb: gb.unwrap_or(0),
            })
        })
    }
}
