//! The volume half of a reconcile pass: creates the volumes the scheduler wants on this node
//! (empty, or restored from a snapshot), grows them when their size grows (never shrinks
//! them), takes and deletes snapshots, deletes the volumes it asks to delete, unmounts volumes
//! no container uses any more, and reports every volume and snapshot: the desired ones
//! (`available` with their real size, or `failed` with the cause), the ones whose deletion
//! failed (`failed`), and every other one the backend has (`orphan`: reported, never touched).
//! A deleted volume or snapshot is not reported at all; its absence tells the scheduler the
//! deletion is done.
//!
//! Everything is found again from the backend's listing alone, so a restarted agent adopts
//! what exists without creating anything. Failed operations are retried no more often than
//! `retry_after_failure`, unless what is asked changes (another size, delete instead of
//! create). Order within a pass: volumes (so a snapshot's source exists), snapshots, snapshot
//! deletions, volume deletions (so snapshots go before the volume they depend on).

use super::snapshots::{self, SnapshotAsks};
use crate::model::{DesiredState, VolumeObservation, VolumeState};
use crate::storage::{SnapshotInfo, StorageError, VolumeBackend, VolumeInfo};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Reason of every desired volume on a node without a volume backend.
pub(super) const NO_BACKEND: &str = "this node has no volume backend";

/// What was asked of the backend for one volume or snapshot; a failure throttles only the
/// same ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Ask {
    Create(u64),
    Restore(String),
    Grow(u64),
    Delete,
    Unmount,
    Snapshot,
    DeleteSnapshot,
}

#[derive(Debug, Clone)]
pub(super) struct VolFailure {
    pub(super) ask: Ask,
    at: Instant,
    pub(super) reason: String,
}

/// Volume memory of the reconciler.
pub(super) struct VolState {
    backend: Option<Arc<dyn VolumeBackend>>,
    retry_after: Duration,
    /// Volume or snapshot id → its last failed operation (throttles retries, explains
    /// `failed`). Ids are UUIDs, so volumes and snapshots never collide.
    pub(super) failures: HashMap<String, VolFailure>,
    /// The last listing error, logged once per distinct message.
    list_error: Option<String>,
    observed: Vec<VolumeObservation>,
    observed_snapshots: Vec<crate::model::SnapshotObservation>,
    /// Volume id → mounted, at the last listing.
    listed: BTreeMap<String, bool>,
}

/// What one pass found on the backend.
struct Listing {
    volumes: Vec<VolumeInfo>,
    snapshots: Vec<SnapshotInfo>,
}

impl VolState {
    pub(super) fn new(backend: Option<Arc<dyn VolumeBackend>>, retry_after: Duration) -> Self {
        Self {
            backend,
            retry_after,
            failures: HashMap::new(),
            list_error: None,
            observed: Vec::new(),
            observed_snapshots: Vec::new(),
            listed: BTreeMap::new(),
        }
    }

    pub(super) fn throttled(&self, id: &str, ask: &Ask, now: Instant) -> bool {
        self.failures.get(id).is_some_and(|f| {
            f.ask == *ask && now.saturating_duration_since(f.at) < self.retry_after
        })
    }

    /// The backend, if this node has one.
    pub(super) fn backend(&self) -> Option<Arc<dyn VolumeBackend>> {
        self.backend.clone()
    }

    /// Whether the last listing showed this volume present but not mounted (after a host
    /// reboot, say: its containers cannot have started).
    pub(super) fn lost_mount(&self, volume_id: &str) -> bool {
        self.listed.get(volume_id) == Some(&false)
    }

    async fn list(&self, backend: &dyn VolumeBackend) -> Result<Listing, StorageError> {
        Ok(Listing {
            volumes: backend.list().await?,
            snapshots: backend.list_snapshots().await?,
        })
    }

    /// Converges the backend toward `desired` and remembers what to report. `in_use` holds
    /// the volumes that containers of this node mount (whatever their state): every other
    /// mounted volume that no desired instance mounts is unmounted.
    pub(super) async fn converge(&mut self, desired: &DesiredState, in_use: &BTreeSet<&str>) {
        // Desired sizes (and restore sources) by id; a duplicated id keeps its largest size.
        let mut want: BTreeMap<&str, (u64, Option<&str>)> = BTreeMap::new();
        for v in &desired.volumes {
            let e = want
                .entry(v.volume_id.as_str())
                .or_insert((v.size_bytes, v.from_snapshot_id.as_deref()));
            e.0 = e.0.max(v.size_bytes);
        }
        // A volume both desired and to be deleted is kept: deleting data cannot be undone.
        let mut delete: Vec<&str> = desired
            .delete_volumes
            .iter()
            .map(String::as_str)
            .filter(|id| !want.contains_key(id))
            .collect();
        delete.sort_unstable();
        delete.dedup();
        let snaps = SnapshotAsks::of(desired);
        self.failures.retain(|id, _| {
            want.contains_key(id.as_str()) || delete.contains(&id.as_str()) || snaps.mentions(id)
        });

        let Some(backend) = self.backend.clone() else {
            // Nothing can exist here, so there is nothing to delete either.
            self.observed = want
                .keys()
                .map(|id| failed(id, 0, NO_BACKEND.to_owned()))
                .collect();
            self.observed_snapshots = snaps.all_failed(NO_BACKEND);
            return;
        };

        let listed = match self.list(backend.as_ref()).await {
            Ok(v) => {
                if self.list_error.take().is_some() {
                    tracing::info!("volume backend reachable again");
                }
                v
            }
            Err(e) => {
                let msg = format!("cannot list volumes: {e}");
                if self.list_error.as_deref() != Some(msg.as_str()) {
                    tracing::warn!(error = %e, "cannot list volumes; none touched");
                    self.list_error = Some(msg.clone());
                }
                // Unknown state: volumes to delete are reported failed too, since absence
                // would tell the scheduler they are gone.
                let mut ids: Vec<&str> = want.keys().copied().chain(delete).collect();
                ids.sort_unstable();
                self.observed = ids
                    .into_iter()
                    .map(|id| failed(id, 0, msg.clone()))
                    .collect();
                self.observed_snapshots = snaps.all_failed(&msg);
                return;
            }
        };
        let now = Instant::now();
        let mut acted = self
            .converge_volumes(backend.as_ref(), &want, &listed, now)
            .await;
        acted |= snapshots::converge(self, backend.as_ref(), &snaps, &listed.snapshots, now).await;
        acted |= self
            .delete_volumes(backend.as_ref(), &delete, &listed, now)
            .await;
        // Mounted, and neither a container nor a desired instance uses it: detached.
        let keep: BTreeSet<&str> = desired
            .instances
            .iter()
            .flat_map(|s| s.mounts.iter().map(|(v, _)| v.as_str()))
            .chain(in_use.iter().copied())
            .collect();
        // (Orphans are never touched, so never unmounted either.)
        for v in listed.volumes.iter().filter(|v| v.mounted) {
            let id = v.volume_id.as_str();
            if !want.contains_key(id) {
                continue;
            }
            if keep.contains(id) || delete.contains(&id) || self.throttled(id, &Ask::Unmount, now) {
                continue;
            }
            acted = true;
            tracing::info!(volume_id = %id, "unmounting volume no container uses");
            let result = backend.unmount(id).await;
            self.record(id, Ask::Unmount, result, "unmount failed: ");
        }

        // Observe what the actions left behind (no second listing when nothing was done).
        let relisted;
        let after: &Listing = if acted {
            match self.list(backend.as_ref()).await {
                Ok(v) => {
                    relisted = v;
                    &relisted
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list volumes after acting on them");
                    &listed
                }
            }
        } else {
            &listed
        };
        self.listed = after
            .volumes
            .iter()
            .map(|v| (v.volume_id.clone(), v.mounted))
            .collect();
        self.observed = self.observe(&want, &after.volumes);
        self.observed_snapshots = snapshots::observe(self, &snaps, &after.snapshots);
    }

    /// Creates (or restores) missing volumes and grows small ones. Returns whether it acted.
    async fn converge_volumes(
        &mut self,
        backend: &dyn VolumeBackend,
        want: &BTreeMap<&str, (u64, Option<&str>)>,
        listed: &Listing,
        now: Instant,
    ) -> bool {
        let present: BTreeMap<&str, &VolumeInfo> = listed
            .volumes
            .iter()
            .map(|v| (v.volume_id.as_str(), v))
            .collect();
        let mut acted = false;
        for (&id, &(size, from)) in want {
            let ask = match (present.get(id), from) {
                (None, None) => Ask::Create(size),
                (None, Some(snap)) => Ask::Restore(snap.to_owned()),
                (Some(v), _) if v.size_bytes < size => Ask::Grow(size),
                (Some(_), _) => {
                    // Present and big enough: nothing to do (a bigger volume is fine).
                    if !matches!(self.failures.get(id), Some(f) if f.ask == Ask::Unmount) {
                        self.failures.remove(id);
                    }
                    continue;
                }
            };
            if self.throttled(id, &ask, now) {
                continue;
            }
            acted = true;
            // Where only the filesystem's online growth is refused (`Unsupported`), the
            // volume did grow: the listing shows it available, and the failure is forgotten
            // on the next pass (its filesystem grows when it is next mounted).
            let result = match &ask {
                Ask::Grow(_) => {
                    tracing::info!(volume_id = %id, size_bytes = size, "growing volume");
                    backend.resize(id, size).await.map(drop)
                }
                Ask::Restore(snap) => {
                    tracing::info!(volume_id = %id, snapshot_id = %snap, size_bytes = size, "restoring volume from snapshot");
                    match backend.restore(snap, id).await {
                        // A restore asked bigger than the snapshot grows right away.
                        Ok(v) if v.size_bytes < size => backend.resize(id, size).await.map(drop),
                        other => other.map(drop),
                    }
                }
                _ => {
                    tracing::info!(volume_id = %id, size_bytes = size, "creating volume");
                    backend.create(id, size).await.map(drop)
                }
            };
            self.record(id, ask, result, "");
        }
        acted
    }

    /// Deletes volumes (unmounting them first). Returns whether it acted.
    async fn delete_volumes(
        &mut self,
        backend: &dyn VolumeBackend,
        delete: &[&str],
        listed: &Listing,
        now: Instant,
    ) -> bool {
        let mut acted = false;
        for &id in delete {
            let Some(v) = listed.volumes.iter().find(|v| v.volume_id == id) else {
                // Gone: done (and nothing to report).
                self.failures.remove(id);
                continue;
            };
            if self.throttled(id, &Ask::Delete, now) {
                continue;
            }
            acted = true;
            tracing::info!(volume_id = %id, "deleting volume");
            let mut result = Ok(());
            if v.mounted {
                result = backend.unmount(id).await;
            }
            if result.is_ok() {
                result = backend.delete(id).await;
            }
            self.record(id, Ask::Delete, result, "delete failed: ");
        }
        acted
    }

    /// Remembers the outcome of one operation and logs a failure.
    pub(super) fn record(
        &mut self,
        id: &str,
        ask: Ask,
        result: Result<(), StorageError>,
        prefix: &str,
    ) {
        match result {
            Ok(()) => {
                self.failures.remove(id);
            }
            Err(e) => {
                tracing::warn!(id = %id, operation = ?ask, error = %e, "volume operation failed");
                self.failures.insert(
                    id.to_owned(),
                    VolFailure {
                        ask,
                        at: Instant::now(),
                        reason: format!("{prefix}{e}"),
                    },
                );
            }
        }
    }

    /// The observation of every volume, sorted by id, from the backend's listing.
    fn observe(
        &self,
        want: &BTreeMap<&str, (u64, Option<&str>)>,
        listed: &[VolumeInfo],
    ) -> Vec<VolumeObservation> {
        let mut out: BTreeMap<&str, VolumeObservation> = BTreeMap::new();
        let present: BTreeMap<&str, &VolumeInfo> =
            listed.iter().map(|v| (v.volume_id.as_str(), v)).collect();
        for (&id, &(size, _)) in want {
            let obs = match present.get(id) {
                Some(v) if v.size_bytes >= size => VolumeObservation {
                    volume_id: id.to_owned(),
                    state: VolumeState::Available,
                    size_bytes: v.size_bytes,
                    reason: String::new(),
                    instance_id: String::new(),
                },
                other => {
                    let real = other.map_or(0, |v| v.size_bytes);
                    let reason = match self.failures.get(id) {
                        Some(f) => f.reason.clone(),
                        // Not created or grown, with no error: only a listing that lags
                        // behind the backend gets here.
                        None if other.is_none() => "volume not created yet".to_owned(),
                        None => format!("volume has {real} bytes, {size} wanted"),
                    };
                    failed(id, real, reason)
                }
            };
            out.insert(id, obs);
        }
        for v in listed {
            let id = v.volume_id.as_str();
            if want.contains_key(id) {
                continue;
            }
            let obs = match self.failures.get(id) {
                Some(f) if f.ask == Ask::Delete => failed(id, v.size_bytes, f.reason.clone()),
                _ => VolumeObservation {
                    volume_id: id.to_owned(),
                    state: VolumeState::Orphan,
                    size_bytes: v.size_bytes,
                    reason: String::new(),
                    instance_id: String::new(),
                },
            };
            out.insert(id, obs);
        }
        out.into_values().collect()
    }

    /// Puts the volumes and snapshots of the last pass into `observed` (sorted by id).
    pub(super) fn amend(&self, observed: &mut crate::model::ObservedState) {
        observed.volumes = self.observed.clone();
        observed.snapshots = self.observed_snapshots.clone();
    }
}

pub(super) fn failed(id: &str, size_bytes: u64, reason: String) -> VolumeObservation {
    VolumeObservation {
        volume_id: id.to_owned(),
        state: VolumeState::Failed,
        size_bytes,
        reason,
        instance_id: String::new(),
    }
}
