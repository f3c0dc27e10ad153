//! The audit log: one row per mutating request and per authentication failure.

use super::{Store, StoreResult, on_pool};
use chrono::{DateTime, Utc};
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct NewAuditEntry {
    pub at: DateTime<Utc>,
    pub request_id: String,
    pub project_id: Option<Uuid>,
    pub user_id: Option<Uuid>,
    pub key_id: Option<Uuid>,
    /// `METHOD /route/template`, e.g. `POST /v1/instances`.
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<String>,
    /// `success`, `denied` (401/403/429) or `failure`.
    pub outcome: String,
    pub status: u16,
    /// The client's address.
    pub source: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRecord {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub request_id: String,
    pub project_id: Option<Uuid>,
    pub user_id: Option<Uuid>,
    pub key_id: Option<Uuid>,
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub outcome: String,
    pub status: i64,
    pub source: String,
}

/// Filters of `GET /v1/audit` (all optional, combined with AND).
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub user_id: Option<Uuid>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub outcome: Option<String>,
    pub since: Option<DateTime<Utc>>,
    /// Also rows of no project (failed authentications, failed logins): operators only.
    pub fleet: bool,
}

impl Store {
    /// Appends entries (one statement each, one transaction).
    pub async fn audit_insert(&self, entries: &[NewAuditEntry]) -> StoreResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        super::in_tx!(self, tx => {
            for e in entries {
                sqlx::query(
                    "INSERT INTO audit_log (id, at, request_id, project_id, user_id, key_id, action,
                       resource_type, resource_id, outcome, status, source)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                )
                .bind(Uuid::now_v7())
                .bind(e.at)
                .bind(&e.request_id)
                .bind(e.project_id)
                .bind(e.user_id)
                .bind(e.key_id)
                .bind(&e.action)
                .bind(&e.resource_type)
                .bind(&e.resource_id)
                .bind(&e.outcome)
                .bind(i64::from(e.status))
                .bind(&e.source)
                .execute(&mut *tx)
                .await?;
            }
            Ok(())
        })
    }

    /// A project's audit rows, newest first, before the row `before` (paging).
    pub async fn audit_list(
        &self,
        project: Uuid,
        f: &AuditFilter,
        before: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Vec<AuditRecord>> {
        on_pool!(self, p => {
            Ok(sqlx::query_as::<_, AuditRecord>(
                "SELECT id, at, request_id, project_id, user_id, key_id, action, resource_type,
                        resource_id, outcome, status, source
                 FROM audit_log
                 WHERE (project_id = $1 OR ($9 AND project_id IS NULL))
                   AND ($2 IS NULL OR user_id = $2)
                   AND ($3 IS NULL OR resource_type = $3)
                   AND ($4 IS NULL OR resource_id = $4)
                   AND ($5 IS NULL OR outcome = $5)
                   AND ($6 IS NULL OR at >= $6)
                   AND ($7 IS NULL OR id < $7)
                 ORDER BY id DESC LIMIT $8",
            )
            .bind(project)
            .bind(f.user_id)
            .bind(&f.resource_type)
            .bind(&f.resource_id)
            .bind(&f.outcome)
            .bind(f.since)
            .bind(before)
            .bind(i64::from(limit))
            .bind(f.fleet)
            .fetch_all(p)
            .await?)
        })
    }
}
