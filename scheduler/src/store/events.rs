//! The stored event stream: appended by one writer (so `seq` order is commit order), read
//! per project after a `seq` (resume).

use super::{Store, StoreResult, in_tx, on_pool};
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct NewEvent {
    pub at: DateTime<Utc>,
    pub project_id: Option<Uuid>,
    pub kind: String,
    pub resource_type: String,
    pub resource_id: String,
    pub data: serde_json::Value,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRecord {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub project_id: Option<Uuid>,
    pub kind: String,
    pub resource_type: String,
    pub resource_id: String,
    pub data: Json<serde_json::Value>,
}

impl Store {
    /// The last `seq` stored (0 when none).
    pub async fn events_last_seq(&self) -> StoreResult<i64> {
        on_pool!(self, p => {
            let (seq,): (Option<i64>,) = sqlx::query_as("SELECT MAX(seq) FROM events")
                .fetch_one(p)
                .await?;
            Ok(seq.unwrap_or(0))
        })
    }

    /// Appends events with the given consecutive `seq`s (the single writer numbers them, so
    /// `seq` order is commit order), many rows per statement.
    pub async fn events_append(
        &self,
        first_seq: i64,
        events: &[NewEvent],
    ) -> StoreResult<Vec<EventRecord>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let pg = self.is_postgres();
        let out: Vec<EventRecord> = events
            .iter()
            .enumerate()
            .map(|(i, e)| EventRecord {
                seq: first_seq + i as i64,
                at: e.at,
                project_id: e.project_id,
                kind: e.kind.clone(),
                resource_type: e.resource_type.clone(),
                resource_id: e.resource_id.clone(),
                data: Json(e.data.clone()),
            })
            .collect();
        in_tx!(self, tx => {
            for chunk in out.chunks(200) {
                // The SQL holds only placeholders; every value is bound.
                let sql = format!(
                    "INSERT INTO events (seq, at, project_id, kind, resource_type, resource_id, data) VALUES {}",
                    super::batch::values(chunk.len(), 7, pg)
                );
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for e in chunk {
                    q = q
                        .bind(e.seq)
                        .bind(e.at)
                        .bind(e.project_id)
                        .bind(e.kind.clone())
                        .bind(e.resource_type.clone())
                        .bind(e.resource_id.clone())
                        .bind(e.data.clone());
                }
                q.execute(&mut *tx).await?;
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Events after `after` that `project` may see (and fleet events when `fleet`), oldest
    /// first.
    pub async fn events_after(
        &self,
        project: Uuid,
        fleet: bool,
        after: i64,
        limit: u32,
    ) -> StoreResult<Vec<EventRecord>> {
        on_pool!(self, p => {
            Ok(sqlx::query_as::<_, EventRecord>(
                "SELECT seq, at, project_id, kind, resource_type, resource_id, data FROM events
                 WHERE seq > $1 AND (project_id = $2 OR ($3 AND project_id IS NULL))
                 ORDER BY seq LIMIT $4",
            )
            .bind(after)
            .bind(project)
            .bind(fleet)
            .bind(i64::from(limit))
            .fetch_all(p)
            .await?)
        })
    }

    /// Drops events older than `before` (retention).
    pub async fn events_prune(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        on_pool!(self, p => {
            Ok(sqlx::query("DELETE FROM events WHERE at < $1")
                .bind(before)
                .execute(p)
                .await?
                .rows_affected())
        })
    }
}
