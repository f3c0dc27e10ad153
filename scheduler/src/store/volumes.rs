//! Volumes: node-local disks. Creating or deleting one bumps its node's generation (the node
//! is told in its desired state) and stamps the volume with it, so an observation older than
//! the change never completes it.

use super::{Store, StoreError, StoreResult, in_tx, on_pool};
use chrono::{DateTime, Utc};
use cloud_api::{NodeId, ProjectId, VolumeId};
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VolumeRecord {
    pub id: Uuid,
    pub project_id: Uuid,
    pub name: String,
    pub size_gb: i64,
    pub node_id: Option<Uuid>,
    pub node_name: Option<String>,
    pub status: String,
    pub status_reason: Option<String>,
    pub instance_id: Option<Uuid>,
    pub mount_path: Option<String>,
    /// The snapshot it was restored from.
    pub source_snapshot_id: Option<Uuid>,
    pub change_generation: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A volume as its node's agent reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSeen {
    /// Present; mounted in this instance's container, if any.
    Available(Option<Uuid>),
    Failed(String),
}

/// (id, size GB, status, instance it is mounted in, mount path, snapshot it is restored from).
pub type NodeVolumeRow = (
    Uuid,
    i64,
    String,
    Option<Uuid>,
    Option<String>,
    Option<Uuid>,
);

/// (id, status, reason, change generation, instance it is mounted in unless that is going).
type ObservedRow = (Uuid, String, Option<String>, i64, Option<Uuid>, Uuid);

/// A volume whose status an observation changed (`to` = "deleted" when it went).
#[derive(Debug, Clone)]
pub struct VolumeChange {
    pub id: Uuid,
    pub project_id: Uuid,
    pub from: String,
    pub to: String,
    pub reason: Option<String>,
}

macro_rules! select_volumes {
    ($tail:literal) => {
        concat!(
            "SELECT v.id, v.project_id, v.name, v.size_gb, v.node_id, n.name AS node_name, v.status, ",
            "v.status_reason, v.instance_id, v.mount_path, v.source_snapshot_id, v.change_generation, ",
            "v.created_at, v.updated_at ",
            "FROM volumes v LEFT JOIN nodes n ON n.id = v.node_id ",
            $tail
        )
    };
}

impl Store {
    /// Records a new volume on `node` if the node's pool (`pool_gb`) still holds it next to
    /// the node's other volumes; `Rejected` otherwise. The node row is locked first, so two
    /// creates cannot both take the last room.
    pub async fn volume_insert(
        &self,
        v: &VolumeRecord,
        node: NodeId,
        pool_gb: i64,
    ) -> StoreResult<()> {
        in_tx!(self, tx => {
            let generation: Option<(i64,)> = sqlx::query_as(
                "UPDATE nodes SET generation = generation + 1 WHERE id = $1 AND status = 'ready' RETURNING generation",
            )
            .bind(node.0)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((generation,)) = generation else {
                return Err(StoreError::Rejected("the node is not ready".into()));
            };
            if let Some((quota, usage)) = super::quotas::quota_locked!(tx, v.project_id)
                && let Some(why) = quota.volume_refusal(&usage, v.size_gb)
            {
                return Err(StoreError::QuotaExceeded(why));
            }
            let used: (Option<i64>,) = sqlx::query_as(
                "SELECT CAST(SUM(size_gb) AS BIGINT) FROM volumes WHERE node_id = $1",
            )
            .bind(node.0)
            .fetch_one(&mut *tx)
            .await?;
            let used = used.0.unwrap_or(0);
            if used + v.size_gb > pool_gb {
                return Err(StoreError::Rejected(format!(
                    "{} GB of its {pool_gb} GB pool are already promised",
                    used
                )));
            }
            if let Some(snap) = v.source_snapshot_id {
                // A restore: its snapshot must still be there (not being deleted).
                // Locks the snapshot row: a concurrent delete of it waits, then sees this
                // restore.
                let status: Option<(String,)> = sqlx::query_as(
                    "UPDATE snapshots SET updated_at = updated_at
                     WHERE id = $1 AND project_id = $2 AND node_id = $3 RETURNING status",
                )
                .bind(snap)
                .bind(v.project_id)
                .bind(node.0)
                .fetch_optional(&mut *tx)
                .await?;
                match status {
                    Some((s,)) if s == "available" => {}
                    Some((s,)) => {
                        return Err(StoreError::InUse(format!("the snapshot is {s}, not available")));
                    }
                    None => return Err(StoreError::NotFound),
                }
            }
            sqlx::query(
                "INSERT INTO volumes (id, project_id, name, size_gb, node_id, status, status_reason,
                    source_snapshot_id, change_generation, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, 'creating', NULL, $8, $6, $7, $7)",
            )
            .bind(v.id)
            .bind(v.project_id)
            .bind(&v.name)
            .bind(v.size_gb)
            .bind(node.0)
            .bind(generation)
            .bind(v.created_at)
            .bind(v.source_snapshot_id)
            .execute(&mut *tx)
            .await?;
            Ok(())
        })?;
        self.wake(&[node.0]);
        Ok(())
    }

    pub async fn volume_get(&self, project: ProjectId, id: VolumeId) -> StoreResult<VolumeRecord> {
        on_pool!(self, p => Ok(sqlx::query_as(select_volumes!("WHERE v.project_id = $1 AND v.id = $2"))
            .bind(project.0)
            .bind(id.0)
            .fetch_one(p)
            .await?))
    }

    pub async fn volume_get_by_name(
        &self,
        project: ProjectId,
        name: &str,
    ) -> StoreResult<VolumeRecord> {
        on_pool!(self, p => Ok(sqlx::query_as(select_volumes!("WHERE v.project_id = $1 AND v.name = $2"))
            .bind(project.0)
            .bind(name)
            .fetch_one(p)
            .await?))
    }

    pub async fn volume_list(
        &self,
        project: ProjectId,
        after: Option<VolumeId>,
        limit: u32,
    ) -> StoreResult<Vec<VolumeRecord>> {
        on_pool!(self, p => Ok(sqlx::query_as(select_volumes!(
            "WHERE v.project_id = $1 AND ($2 IS NULL OR v.id > $2) ORDER BY v.id LIMIT $3"
        ))
        .bind(project.0)
        .bind(after.map(|a| a.0))
        .bind(i64::from(limit))
        .fetch_all(p)
        .await?))
    }

    /// Grows a volume to `size_gb` if its node's pool (`pool_gb`) still holds the difference;
    /// its node is told (generation bump). `Rejected` when it does not fit or is not larger.
    pub async fn volume_grow(
        &self,
        project: ProjectId,
        id: VolumeId,
        size_gb: i64,
        pool_gb: i64,
    ) -> StoreResult<()> {
        let now = Utc::now();
        let node = in_tx!(self, tx => {
            let row: Option<(Option<Uuid>, i64, String)> = sqlx::query_as(
                "SELECT node_id, size_gb, status FROM volumes WHERE project_id = $1 AND id = $2",
            )
            .bind(project.0)
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((Some(node), current, status)) = row else { return Err(StoreError::NotFound) };
            if status == "deleting" {
                return Err(StoreError::InUse("the volume is being deleted".into()));
            }
            if size_gb <= current {
                return Err(StoreError::Rejected(format!(
                    "size_gb: volumes only grow: {size_gb} is not larger than the current {current}"
                )));
            }
            if let Some((quota, usage)) = super::quotas::quota_locked!(tx, project.0)
                && let Some(why) = quota.volume_refusal(&usage, size_gb - current)
            {
                return Err(StoreError::QuotaExceeded(why));
            }
            let (generation,): (i64,) = sqlx::query_as(
                "UPDATE nodes SET generation = generation + 1 WHERE id = $1 RETURNING generation",
            )
            .bind(node)
            .fetch_one(&mut *tx)
            .await?;
            let used: (Option<i64>,) = sqlx::query_as(
                "SELECT CAST(SUM(size_gb) AS BIGINT) FROM volumes WHERE node_id = $1",
            )
            .bind(node)
            .fetch_one(&mut *tx)
            .await?;
            let used = used.0.unwrap_or(0);
            if used - current + size_gb > pool_gb {
                return Err(StoreError::InUse(format!(
                    "the node's pool cannot hold {size_gb} GB: {used} GB of its {pool_gb} GB are already promised"
                )));
            }
            sqlx::query(
                "UPDATE volumes SET size_gb = $2, change_generation = $3, updated_at = $4 WHERE id = $1",
            )
            .bind(id.0)
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

    /// Mounts an available volume in an instance of the same node (`mount_path` checked by the
    /// caller) or, with `to: None`, unmounts it. The node is told; its agent recreates the
    /// container with the new mounts. `InUse` explains a refusal.
    pub async fn volume_set_mount(
        &self,
        project: ProjectId,
        id: VolumeId,
        to: Option<(Uuid, String)>,
    ) -> StoreResult<()> {
        let now = Utc::now();
        let node = in_tx!(self, tx => {
            let row: Option<(Option<Uuid>, String, Option<Uuid>)> = sqlx::query_as(
                "SELECT node_id, status, instance_id FROM volumes WHERE project_id = $1 AND id = $2",
            )
            .bind(project.0)
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((Some(node), status, current)) = row else { return Err(StoreError::NotFound) };
            sqlx::query("UPDATE nodes SET generation = generation + 1 WHERE id = $1")
                .bind(node)
                .execute(&mut *tx)
                .await?;
            match to {
                Some((instance, path)) => {
                    if let Some(other) = current {
                        return Err(StoreError::InUse(format!(
                            "the volume is already mounted in instance {other}; detach it first"
                        )));
                    }
                    if status != "available" {
                        return Err(StoreError::InUse(format!("the volume is {status}, not available")));
                    }
                    let inst: Option<(Option<Uuid>, String, String)> = sqlx::query_as(
                        "SELECT node_id, status, kind FROM instances WHERE project_id = $1 AND id = $2",
                    )
                    .bind(project.0)
                    .bind(instance)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let kind = match inst {
                        None => return Err(StoreError::Rejected("instance_id: no such instance".into())),
                        Some((_, s, _)) if s == "deleting" => {
                            return Err(StoreError::InUse("the instance is being deleted".into()));
                        }
                        Some((n, _, _)) if n != Some(node) => {
                            return Err(StoreError::InUse(
                                "the instance runs on another node than the volume (volumes are node-local)".into(),
                            ));
                        }
                        Some((_, _, kind)) => kind,
                    };
                    let reason = if kind == "vm" {
                        "hot-plugged into the VM as a virtio disk (no restart)"
                    } else {
                        "its instance restarts (stopping, then starting, same instance id) to mount it"
                    };
                    let clash: Option<(Uuid,)> = sqlx::query_as(
                        "SELECT id FROM volumes WHERE instance_id = $1 AND mount_path = $2",
                    )
                    .bind(instance)
                    .bind(&path)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if clash.is_some() {
                        return Err(StoreError::Rejected(format!(
                            "mount_path: the instance already has a volume at {path}"
                        )));
                    }
                    sqlx::query(
                        "UPDATE volumes SET instance_id = $2, mount_path = $3, status = 'attaching',
                            status_reason = $5, updated_at = $4 WHERE id = $1",
                    )
                    .bind(id.0)
                    .bind(instance)
                    .bind(&path)
                    .bind(now)
                    .bind(reason)
                    .execute(&mut *tx)
                    .await?;
                }
                None => {
                    if current.is_none() {
                        return Ok(None); // already detached
                    }
                    sqlx::query(
                        "UPDATE volumes SET instance_id = NULL, mount_path = NULL, status = 'detaching',
                            updated_at = $2 WHERE id = $1",
                    )
                    .bind(id.0)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            Ok(Some(node))
        })?;
        if let Some(n) = node {
            self.wake(&[n]);
        }
        Ok(())
    }

    /// Starts deleting a volume (its node is told); a volume without a node goes at once.
    /// Idempotent while it is being deleted.
    ///
    /// With `snapshots_depend` (the node's backend keeps snapshots as views of their volume,
    /// like lvm), a volume with snapshots is refused (`InUse`, saying how many).
    pub async fn volume_delete(
        &self,
        project: ProjectId,
        id: VolumeId,
        snapshots_depend: bool,
    ) -> StoreResult<()> {
        let now = Utc::now();
        let node = in_tx!(self, tx => {
            let row: Option<(Option<Uuid>, String)> = sqlx::query_as(
                "UPDATE volumes SET updated_at = updated_at WHERE project_id = $1 AND id = $2
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
            if snapshots_depend {
                let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM snapshots WHERE volume_id = $1")
                    .bind(id.0)
                    .fetch_one(&mut *tx)
                    .await?;
                if count > 0 {
                    return Err(StoreError::InUse(format!(
                        "it has {count} snapshot(s), which its node's storage keeps as views of the volume; delete them first"
                    )));
                }
            }
            let Some(node) = node else {
                sqlx::query("DELETE FROM volumes WHERE id = $1").bind(id.0).execute(&mut *tx).await?;
                return Ok(None);
            };
            let (generation,): (i64,) = sqlx::query_as(
                "UPDATE nodes SET generation = generation + 1 WHERE id = $1 RETURNING generation",
            )
            .bind(node)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE volumes SET status = 'deleting', status_reason = NULL, change_generation = $2, updated_at = $3
                 WHERE id = $1",
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

    /// Every volume of a node, for its desired state: (id, size GB, status, mounted in, path).
    pub async fn node_volumes(&self, node: Uuid) -> StoreResult<Vec<NodeVolumeRow>> {
        on_pool!(self, p => Ok(sqlx::query_as(
            "SELECT id, size_gb, status, instance_id, mount_path, source_snapshot_id FROM volumes
             WHERE node_id = $1 ORDER BY id",
        )
        .bind(node)
        .fetch_all(p)
        .await?))
    }

    /// Volumes of these instances: (instance, volume, path), for API views.
    pub async fn mounts_of_instances(
        &self,
        instances: &[Uuid],
    ) -> StoreResult<Vec<(Uuid, Uuid, String)>> {
        if instances.is_empty() {
            return Ok(Vec::new());
        }
        let list = super::batch::values(1, instances.len(), self.is_postgres());
        // The SQL holds only placeholders; every value is bound.
        let sql = format!(
            "SELECT instance_id, id, mount_path FROM volumes WHERE mount_path IS NOT NULL AND instance_id IN {list} ORDER BY mount_path"
        );
        on_pool!(self, p => {
            let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql));
            for id in instances {
                q = q.bind(*id);
            }
            Ok(q.fetch_all(p).await?)
        })
    }

    /// Nodes holding at least one volume or snapshot (the sessions read volumes only for these).
    pub async fn nodes_with_volumes(&self) -> StoreResult<Vec<Uuid>> {
        let rows: Vec<(Uuid,)> = on_pool!(self, p => sqlx::query_as(
            "SELECT node_id FROM volumes WHERE node_id IS NOT NULL
             UNION SELECT node_id FROM snapshots WHERE node_id IS NOT NULL",
        )
        .fetch_all(p)
        .await?);
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    /// Applies a node's volume observations (`applied` = the desired generation it answers):
    /// creates complete or fail, deletions complete when the volume is no longer reported.
    pub async fn volumes_observe(
        &self,
        node: NodeId,
        applied: i64,
        seen: &std::collections::HashMap<Uuid, VolumeSeen>,
    ) -> StoreResult<Vec<VolumeChange>> {
        let now = Utc::now();
        let mut changes = Vec::new();
        let rows: Vec<ObservedRow> = on_pool!(self, p => sqlx::query_as(
            "SELECT v.id, v.status, v.status_reason, v.change_generation,
                CASE WHEN i.status = 'deleting' THEN NULL ELSE v.instance_id END, v.project_id
             FROM volumes v LEFT JOIN instances i ON i.id = v.instance_id WHERE v.node_id = $1",
        )
        .bind(node.0)
        .fetch_all(p)
        .await?);
        for (id, status, reason, change, attached_to, project_id) in rows {
            let mut changed = |to: &str, reason: Option<&str>| {
                changes.push(VolumeChange {
                    id,
                    project_id,
                    from: status.clone(),
                    to: to.to_owned(),
                    reason: reason.map(str::to_owned),
                })
            };
            if change > applied {
                continue; // the node has not seen the last change yet
            }
            let obs = seen.get(&id);
            if status == "deleting" {
                if obs.is_none() {
                    on_pool!(self, p => sqlx::query("DELETE FROM volumes WHERE id = $1 AND status = 'deleting'")
                        .bind(id)
                        .execute(p)
                        .await
                        .map(|_| ())?);
                    changed("deleted", None);
                } else if let Some(VolumeSeen::Failed(r)) = obs
                    && reason.as_deref() != Some(r.as_str())
                {
                    self.volume_set_status(id, "deleting", Some(r), now).await?;
                }
                continue;
            }
            let (want, want_reason) = match obs {
                // Attached in the store: in use once the container mounts it. Detached: available
                // once no container mounts it any more.
                Some(VolumeSeen::Available(user)) => match (attached_to, user) {
                    (Some(a), Some(u)) if a == *u => ("in-use", None),
                    (Some(_), _) => ("attaching", None),
                    (None, None) => ("available", None),
                    (None, Some(_)) => ("detaching", None),
                },
                Some(VolumeSeen::Failed(r)) => ("failed", Some(r.as_str())),
                None => continue,
            };
            if status != want || reason.as_deref() != want_reason {
                self.volume_set_status(id, want, want_reason, now).await?;
                changed(want, want_reason);
            }
        }
        Ok(changes)
    }

    async fn volume_set_status(
        &self,
        id: Uuid,
        status: &str,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        on_pool!(self, p => sqlx::query(
            "UPDATE volumes SET status = $2, status_reason = $3, updated_at = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(status)
        .bind(reason)
        .bind(now)
        .execute(p)
        .await
        .map(|_| ())?);
        Ok(())
    }
}
