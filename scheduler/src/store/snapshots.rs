//! Snapshots: point-in-time copies of volumes, on the volume's node. Taking or deleting one
//! bumps the node's generation (the node is told in its desired state) and stamps the snapshot
//! with it, so an observation older than the change never completes it.

use super::{Store, StoreError, StoreResult, in_tx, on_pool};
use chrono::{DateTime, Utc};
use cloud_api::{NodeId, ProjectId, SnapshotId, VolumeId};
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SnapshotRecord {
    pub id: Uuid,
    pub project_id: Uuid,
    pub name: String,
    pub volume_id: Uuid,
    /// The source volume's name, while it exists.
    pub volume_name: Option<String>,
    pub node_id: Option<Uuid>,
    pub node_name: Option<String>,
    pub size_gb: i64,
    pub status: String,
    pub status_reason: Option<String>,
    pub change_generation: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A snapshot as its node's agent reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotSeen {
    Available,
    Failed(String),
}

/// (id, source volume, status) of a node's snapshots, for its desired state.
pub type NodeSnapshotRow = (Uuid, Uuid, String);

/// Statuses of a volume that can be snapshotted (it exists on its node).
const SNAPSHOTTABLE: [&str; 4] = ["available", "in-use", "attaching", "detaching"];

macro_rules! select_snapshots {
    ($tail:literal) => {
        concat!(
            "SELECT s.id, s.project_id, s.name, s.volume_id, v.name AS volume_name, s.node_id, ",
            "n.name AS node_name, s.size_gb, s.status, s.status_reason, s.change_generation, ",
            "s.created_at, s.updated_at ",
            "FROM snapshots s LEFT JOIN volumes v ON v.id = s.volume_id ",
            "LEFT JOIN nodes n ON n.id = s.node_id ",
            $tail
        )
    };
}

impl Store {
    /// Records a snapshot of a volume of `project` (`creating`) and tells its node. `InUse`
    /// when the volume is not on its node in a state that can be snapshotted.
    pub async fn snapshot_insert(
        &self,
        project: ProjectId,
        id: SnapshotId,
        name: &str,
        volume: VolumeId,
    ) -> StoreResult<()> {
        let now = Utc::now();
        let node = in_tx!(self, tx => {
            // An UPDATE that changes nothing, to lock the volume row first (PostgreSQL: a
            // concurrent delete of the volume waits for this transaction; SQLite transactions
            // are serialised anyway).
            let row: Option<(Option<Uuid>, i64, String)> = sqlx::query_as(
                "UPDATE volumes SET updated_at = updated_at WHERE project_id = $1 AND id = $2
                 RETURNING node_id, size_gb, status",
            )
            .bind(project.0)
            .bind(volume.0)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((node, size_gb, status)) = row else { return Err(StoreError::NotFound) };
            let Some(node) = node.filter(|_| SNAPSHOTTABLE.contains(&status.as_str())) else {
                return Err(StoreError::InUse(format!(
                    "the volume is {status}; only a volume that exists on its node can be snapshotted"
                )));
            };
            let (generation,): (i64,) = sqlx::query_as(
                "UPDATE nodes SET generation = generation + 1 WHERE id = $1 RETURNING generation",
            )
            .bind(node)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO snapshots (id, project_id, name, volume_id, node_id, size_gb, status,
                    status_reason, change_generation, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, 'creating', NULL, $7, $8, $8)",
            )
            .bind(id.0)
            .bind(project.0)
            .bind(name)
            .bind(volume.0)
            .bind(node)
            .bind(size_gb)
            .bind(generation)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            Ok(node)
        })?;
        self.wake(&[node]);
        Ok(())
    }

    pub async fn snapshot_get(
        &self,
        project: ProjectId,
        id: SnapshotId,
    ) -> StoreResult<SnapshotRecord> {
        on_pool!(self, p => Ok(sqlx::query_as(select_snapshots!("WHERE s.project_id = $1 AND s.id = $2"))
            .bind(project.0)
            .bind(id.0)
            .fetch_one(p)
            .await?))
    }

    pub async fn snapshot_get_by_name(
        &self,
        project: ProjectId,
        name: &str,
    ) -> StoreResult<SnapshotRecord> {
        on_pool!(self, p => Ok(sqlx::query_as(select_snapshots!("WHERE s.project_id = $1 AND s.name = $2"))
            .bind(project.0)
            .bind(name)
            .fetch_one(p)
            .await?))
    }

    /// A page of the project's snapshots, optionally only those of one volume.
    pub async fn snapshot_list(
        &self,
        project: ProjectId,
        volume: Option<VolumeId>,
        after: Option<SnapshotId>,
        limit: u32,
    ) -> StoreResult<Vec<SnapshotRecord>> {
        on_pool!(self, p => Ok(sqlx::query_as(select_snapshots!(
            "WHERE s.project_id = $1 AND ($2 IS NULL OR s.volume_id = $2) AND ($3 IS NULL OR s.id > $3)
             ORDER BY s.id LIMIT $4"
        ))
        .bind(project.0)
        .bind(volume.map(|v| v.0))
        .bind(after.map(|a| a.0))
        .bind(i64::from(limit))
        .fetch_all(p)
        .await?))
    }

    /// Starts deleting a snapshot (its node is told); one without a node goes at once.
    /// Idempotent while it is being deleted. `InUse` while a volume is being restored from it.
    pub async fn snapshot_delete(&self, project: ProjectId, id: SnapshotId) -> StoreResult<()> {
        let now = Utc::now();
        let node = in_tx!(self, tx => {
            // Lock the snapshot row first: a restore from it (`volume_insert`) locks it too.
            let row: Option<(Option<Uuid>, String)> = sqlx::query_as(
                "UPDATE snapshots SET updated_at = updated_at WHERE project_id = $1 AND id = $2
                 RETURNING node_id, status",
            )
            .bind(project.0)
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((node, status)) = row else { return Err(StoreError::NotFound) };
            if status == "deleting" {
                return Ok(None);
            }
            let restoring: Option<(String,)> = sqlx::query_as(
                "SELECT name FROM volumes WHERE source_snapshot_id = $1 AND status = 'creating' LIMIT 1",
            )
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((volume,)) = restoring {
                return Err(StoreError::InUse(format!(
                    "volume {volume:?} is being restored from it; delete the snapshot once that volume is available"
                )));
            }
            let Some(node) = node else {
                sqlx::query("DELETE FROM snapshots WHERE id = $1").bind(id.0).execute(&mut *tx).await?;
                return Ok(None);
            };
            let (generation,): (i64,) = sqlx::query_as(
                "UPDATE nodes SET generation = generation + 1 WHERE id = $1 RETURNING generation",
            )
            .bind(node)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE snapshots SET status = 'deleting', status_reason = NULL, change_generation = $2,
                    updated_at = $3 WHERE id = $1",
            )
            .bind(id.0)
            .bind(generation)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            Ok(Some(node))
        })?;
        if let Some(n) = node {
            self.wake(&[n]);
        }
        Ok(())
    }

    /// Every snapshot of a node, for its desired state.
    pub async fn node_snapshots(&self, node: Uuid) -> StoreResult<Vec<NodeSnapshotRow>> {
        on_pool!(self, p => Ok(sqlx::query_as(
            "SELECT id, volume_id, status FROM snapshots WHERE node_id = $1 ORDER BY id",
        )
        .bind(node)
        .fetch_all(p)
        .await?))
    }

    /// Applies a node's snapshot observations (`applied` = the desired generation it answers):
    /// snapshots complete or fail, deletions complete when the snapshot is no longer reported.
    pub async fn snapshots_observe(
        &self,
        node: NodeId,
        applied: i64,
        seen: &std::collections::HashMap<Uuid, SnapshotSeen>,
    ) -> StoreResult<()> {
        let now = Utc::now();
        let rows: Vec<(Uuid, String, Option<String>, i64)> = on_pool!(self, p => sqlx::query_as(
            "SELECT id, status, status_reason, change_generation FROM snapshots WHERE node_id = $1",
        )
        .bind(node.0)
        .fetch_all(p)
        .await?);
        for (id, status, reason, change) in rows {
            if change > applied {
                continue; // the node has not seen the last change yet
            }
            let obs = seen.get(&id);
            let (want, want_reason) = match (status.as_str(), obs) {
                ("deleting", None) => {
                    on_pool!(self, p => sqlx::query("DELETE FROM snapshots WHERE id = $1 AND status = 'deleting'")
                        .bind(id)
                        .execute(p)
                        .await
                        .map(|_| ())?);
                    continue;
                }
                ("deleting", Some(SnapshotSeen::Failed(r))) => ("deleting", Some(r.as_str())),
                ("deleting", Some(SnapshotSeen::Available)) | (_, None) => continue,
                (_, Some(SnapshotSeen::Available)) => ("available", None),
                (_, Some(SnapshotSeen::Failed(r))) => ("failed", Some(r.as_str())),
            };
            if status != want || reason.as_deref() != want_reason {
                // Only if nothing changed since the read (a delete accepted meanwhile wins).
                on_pool!(self, p => sqlx::query(
                    "UPDATE snapshots SET status = $2, status_reason = $3, updated_at = $4
                     WHERE id = $1 AND status = $5 AND change_generation <= $6",
                )
                .bind(id)
                .bind(want)
                .bind(want_reason)
                .bind(now)
                .bind(&status)
                .bind(applied)
                .execute(p)
                .await
                .map(|_| ())?);
            }
        }
        Ok(())
    }
}
