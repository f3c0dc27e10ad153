//! Projects and join tokens. Secrets are never stored: only their SHA-256.

use super::{Store, StoreResult, in_tx, on_pool};
use chrono::{DateTime, Utc};
use cloud_api::ids::{NodeId, ProjectId};
use sqlx::types::Json;
use std::collections::BTreeMap;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct NewJoinToken {
    pub token_hash: Vec<u8>,
    pub is_bootstrap: bool,
    pub expires_at: Option<DateTime<Utc>>,
    /// How many enrollments it allows.
    pub max_uses: u32,
}

impl Store {
    /// The project named `name`, created if missing.
    pub async fn project_ensure(&self, name: &str) -> StoreResult<ProjectId> {
        let id = ProjectId::new();
        on_pool!(self, p => {
            sqlx::query(
                "INSERT INTO projects (id, name, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(id.0)
            .bind(name)
            .bind(Utc::now())
            .execute(p)
            .await?;
            let row: (Uuid,) = sqlx::query_as("SELECT id FROM projects WHERE name = $1")
                .bind(name)
                .fetch_one(p)
                .await?;
            Ok(ProjectId(row.0))
        })
    }

    pub async fn join_token_insert(&self, token: &NewJoinToken) -> StoreResult<()> {
        on_pool!(self, p => {
            sqlx::query(
                "INSERT INTO join_tokens (id, token_hash, is_bootstrap, created_at, expires_at, max_uses, uses)
                 VALUES ($1, $2, $3, $4, $5, $6, 0)",
            )
            .bind(Uuid::now_v7())
            .bind(&token.token_hash)
            .bind(token.is_bootstrap)
            .bind(Utc::now())
            .bind(token.expires_at)
            .bind(i64::from(token.max_uses))
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Whether the token with this hash exists and can still be used.
    pub async fn join_token_is_usable(&self, token_hash: &[u8]) -> StoreResult<bool> {
        on_pool!(self, p => {
            let row: Option<(Uuid,)> = sqlx::query_as(
                "SELECT id FROM join_tokens WHERE token_hash = $1 AND uses < max_uses
                 AND (expires_at IS NULL OR expires_at > $2)",
            )
            .bind(token_hash)
            .bind(Utc::now())
            .fetch_optional(p)
            .await?;
            Ok(row.is_some())
        })
    }

    /// Enrollment in one transaction: consumes one use of the join token (atomically) and
    /// inserts the node (`down`, no capacity, until its agent says hello). Returns whether the
    /// token was the bootstrap token, or `NotFound` when the token is unknown, used up or
    /// expired, and `Duplicate` when the node name is taken (the use is then not consumed).
    pub async fn join_token_consume_and_insert_node(
        &self,
        token_hash: &[u8],
        node_id: NodeId,
        node_name: &str,
        hostname: &str,
        cert_serial: &str,
    ) -> StoreResult<bool> {
        let now = Utc::now();
        in_tx!(self, tx => {
            let row: Option<(bool,)> = sqlx::query_as(
                "UPDATE join_tokens SET used_at = $1, used_by_node = $2, uses = uses + 1
                 WHERE token_hash = $3 AND uses < max_uses AND (expires_at IS NULL OR expires_at > $1)
                 RETURNING is_bootstrap",
            )
            .bind(now)
            .bind(node_id.0)
            .bind(token_hash)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((is_bootstrap,)) = row else {
                return Err(super::StoreError::NotFound);
            };
            // A node exists from enrollment on; it is `down` with no capacity until its agent
            // opens a session and says hello.
            sqlx::query(
                "INSERT INTO nodes (id, name, hostname, status, cpu_millis, memory_mb, disk_gb,
                    drivers, labels, generation, applied_generation, cert_serial, created_at, updated_at)
                 VALUES ($1, $2, $3, 'down', 0, 0, 0, $4, $5, 0, 0, $6, $7, $7)",
            )
            .bind(node_id.0)
            .bind(node_name)
            .bind(hostname)
            .bind(Json(Vec::<String>::new()))
            .bind(Json(BTreeMap::<String, String>::new()))
            .bind(cert_serial)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            Ok(is_bootstrap)
        })
    }
}
