//! Snapshots: taking one of a volume (on the volume's node), deleting it, and restoring it
//! into a new volume on the same node. The node's agent does the work and reports back.

use super::{Caller, validate};
use crate::app::App;
use crate::error::{Error, Result};
use crate::store::{SnapshotRecord, StoreError, VolumeRecord};
use cloud_api::{
    CreateSnapshotRequest, MAX_VOLUME_GB, RestoreSnapshotRequest, SnapshotId, VolumeId,
};

const GIB: u64 = 1 << 30;

impl App {
    pub async fn snapshot_lookup(
        &self,
        caller: &Caller,
        id_or_name: &str,
    ) -> Result<SnapshotRecord> {
        let found = match id_or_name.parse::<SnapshotId>() {
            Ok(id) => self.store.snapshot_get(caller.project, id).await,
            Err(_) => {
                self.store
                    .snapshot_get_by_name(caller.project, id_or_name)
                    .await
            }
        };
        found.map_err(|e| match e {
            StoreError::NotFound => Error::NotFound(format!("snapshot {id_or_name:?} not found")),
            other => other.into(),
        })
    }

    /// A page of the project's snapshots; `volume` (id or name) keeps only that volume's.
    pub async fn snapshot_list(
        &self,
        caller: &Caller,
        volume: Option<&str>,
        after: Option<SnapshotId>,
        limit: u32,
    ) -> Result<Vec<SnapshotRecord>> {
        let volume = match volume {
            None => None,
            Some(v) => Some(VolumeId(self.volume_lookup(caller, v).await?.id)),
        };
        Ok(self
            .store
            .snapshot_list(caller.project, volume, after, limit)
            .await?)
    }

    /// Records the snapshot (`creating`); the volume's node takes it and it becomes
    /// `available` (or `failed` with the cause).
    pub async fn snapshot_create(
        &self,
        caller: &Caller,
        req: CreateSnapshotRequest,
    ) -> Result<SnapshotRecord> {
        validate::name("name", &req.name)?;
        let volume = self
            .volume_lookup(caller, &req.volume_id)
            .await
            .map_err(|e| match e {
                Error::NotFound(m) => Error::Invalid(format!("volume_id: {m}")),
                other => other,
            })?;
        let id = SnapshotId::new();
        self.store
            .snapshot_insert(caller.project, id, &req.name, VolumeId(volume.id))
            .await
            .map_err(|e| match e {
                StoreError::Duplicate => Error::AlreadyExists(format!(
                    "a snapshot named {:?} already exists in this project",
                    req.name
                )),
                StoreError::NotFound => {
                    Error::Invalid(format!("volume_id: volume {:?} not found", req.volume_id))
                }
                StoreError::InUse(m) => Error::Conflict(format!("volume {:?}: {m}", volume.name)),
                other => other.into(),
            })?;
        self.snapshot_lookup(caller, &id.to_string()).await
    }

    /// Starts deleting a snapshot. Idempotent while it is being deleted.
    pub async fn snapshot_delete(
        &self,
        caller: &Caller,
        id_or_name: &str,
    ) -> Result<SnapshotRecord> {
        let s = self.snapshot_lookup(caller, id_or_name).await?;
        self.store
            .snapshot_delete(caller.project, SnapshotId(s.id))
            .await
            .map_err(|e| match e {
                StoreError::NotFound => {
                    Error::NotFound(format!("snapshot {id_or_name:?} not found"))
                }
                StoreError::InUse(m) => Error::Conflict(format!("snapshot {:?}: {m}", s.name)),
                other => other.into(),
            })?;
        self.snapshot_lookup(caller, &SnapshotId(s.id).to_string())
            .await
            .or(Ok(SnapshotRecord {
                status: "deleting".into(),
                ..s
            }))
    }

    /// Records a new volume (`creating`) on the snapshot's node that its agent fills from the
    /// snapshot; it becomes `available` once restored.
    pub async fn snapshot_restore(
        &self,
        caller: &Caller,
        id_or_name: &str,
        req: RestoreSnapshotRequest,
    ) -> Result<VolumeRecord> {
        let snap = self.snapshot_lookup(caller, id_or_name).await?;
        validate::name("name", &req.name)?;
        let min = crate::store::to_u64(snap.size_gb);
        let size_gb = req.size_gb.unwrap_or(min);
        if size_gb < min || size_gb > MAX_VOLUME_GB {
            return Err(Error::Invalid(format!(
                "size_gb: {size_gb} is out of range: a restore of this snapshot takes {min} to {MAX_VOLUME_GB} GB"
            )));
        }
        if snap.status != "available" {
            return Err(Error::Conflict(format!(
                "snapshot {:?} is {}, not available",
                snap.name, snap.status
            )));
        }
        let Some(node) = snap.node_id else {
            return Err(Error::Conflict(format!(
                "snapshot {:?} has no node",
                snap.name
            )));
        };
        if self
            .store
            .volume_get_by_name(caller.project, &req.name)
            .await
            .is_ok()
        {
            return Err(Error::AlreadyExists(format!(
                "a volume named {:?} already exists in this project",
                req.name
            )));
        }
        let pool = self
            .sessions
            .usage(node.into())
            .and_then(|u| u.volume_pool)
            .ok_or_else(|| {
                Error::Unavailable(format!(
                    "snapshot {:?}: its node has not reported its volume pool; retry shortly",
                    snap.name
                ))
            })?;
        if pool.free_bytes < size_gb.saturating_mul(GIB) {
            return Err(Error::InsufficientCapacity(format!(
                "the snapshot's node has {} GB free, {size_gb} GB needed (restores land on the snapshot's node)",
                pool.free_bytes / GIB
            )));
        }
        let now = chrono::Utc::now();
        let rec = VolumeRecord {
            id: VolumeId::new().0,
            project_id: caller.project.0,
            name: req.name.clone(),
            size_gb: crate::store::to_i64(size_gb),
            node_id: None,
            node_name: None,
            status: "creating".into(),
            status_reason: None,
            instance_id: None,
            mount_path: None,
            source_snapshot_id: Some(snap.id),
            change_generation: 0,
            created_at: now,
            updated_at: now,
        };
        self.store
            .volume_insert(
                &rec,
                cloud_api::NodeId(node),
                crate::store::to_i64(pool.total_bytes / GIB),
            )
            .await
            .map_err(|e| match e {
                StoreError::Duplicate => Error::AlreadyExists(format!(
                    "a volume named {:?} already exists in this project",
                    req.name
                )),
                StoreError::Rejected(m) => Error::InsufficientCapacity(format!(
                    "the snapshot's node cannot hold {size_gb} GB more: {m}"
                )),
                StoreError::NotFound => {
                    Error::NotFound(format!("snapshot {id_or_name:?} not found"))
                }
                StoreError::InUse(m) => Error::Conflict(format!("snapshot {:?}: {m}", snap.name)),
                other => other.into(),
            })?;
        self.volume_nodes_add(node);
        self.volume_lookup(caller, &VolumeId(rec.id).to_string())
            .await
    }
}
