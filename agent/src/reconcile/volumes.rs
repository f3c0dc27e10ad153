//! The volume half of a reconcile pass: creates the volumes the scheduler wants on this node,
//! grows them when their size grows (never shrinks them), deletes the volumes it asks to
//! delete, and reports every volume: the desired ones (`available` with their real size, or
//! `failed` with the cause), the ones whose deletion failed (`failed`), and every other volume
//! the backend has (`orphan`: reported, never touched). A deleted volume is not reported at
//! all; its absence tells the scheduler the deletion is done.
//!
//! Volumes are found again from the backend's listing alone, so a restarted agent adopts what
//! exists without creating anything. Failed operations are retried no more often than
//! `retry_after_failure`, unless what is asked changes (another size, delete instead of
//! create).

use crate::model::{DesiredState, VolumeObservation, VolumeState};
use crate::storage::{StorageError, VolumeBackend, VolumeInfo};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Reason of every desired volume on a node without a volume backend.
pub(super) const NO_BACKEND: &str = "this node has no volume backend";

/// What was asked of the backend for one volume; a failure throttles only the same ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    Create(u64),
    Grow(u64),
    Delete,
}

#[derive(Debug, Clone)]
struct VolFailure {
    ask: Ask,
    at: Instant,
    reason: String,
}

/// Volume memory of the reconciler.
pub(super) struct VolState {
    backend: Option<Arc<dyn VolumeBackend>>,
    retry_after: Duration,
    /// Volume id → its last failed operation (throttles retries, explains `failed`).
    failures: HashMap<String, VolFailure>,
    /// The last listing error, logged once per distinct message.
    list_error: Option<String>,
    observed: Vec<VolumeObservation>,
}

impl VolState {
    pub(super) fn new(backend: Option<Arc<dyn VolumeBackend>>, retry_after: Duration) -> Self {
        Self {
            backend,
            retry_after,
            failures: HashMap::new(),
            list_error: None,
            observed: Vec::new(),
        }
    }

    fn throttled(&self, id: &str, ask: Ask, now: Instant) -> bool {
        self.failures
            .get(id)
            .is_some_and(|f| f.ask == ask && now.saturating_duration_since(f.at) < self.retry_after)
    }

    /// The backend, if this node has one.
    pub(super) fn backend(&self) -> Option<Arc<dyn VolumeBackend>> {
        self.backend.clone()
    }

    /// Converges the backend's volumes toward `desired` and remembers what to report.
    pub(super) async fn converge(&mut self, desired: &DesiredState) {
        // Desired sizes by id; a duplicated id keeps its largest size (never shrink).
        let mut want: BTreeMap<&str, u64> = BTreeMap::new();
        for v in &desired.volumes {
            let size = want.entry(v.volume_id.as_str()).or_insert(v.size_bytes);
            *size = (*size).max(v.size_bytes);
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
        self.failures
            .retain(|id, _| want.contains_key(id.as_str()) || delete.contains(&id.as_str()));

        let Some(backend) = self.backend.clone() else {
            // Nothing can exist here, so there is nothing to delete either.
            self.observed = want
                .keys()
                .map(|id| failed(id, 0, NO_BACKEND.to_owned()))
                .collect();
            return;
        };

        let listed = match backend.list().await {
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
                return;
            }
        };
        let present: BTreeMap<&str, &VolumeInfo> =
            listed.iter().map(|v| (v.volume_id.as_str(), v)).collect();

        let now = Instant::now();
        let mut acted = false;
        for (&id, &size) in &want {
            let grow = match present.get(id) {
                None => false,
                Some(v) if v.size_bytes < size => true,
                Some(_) => {
                    // Present and big enough: nothing to do (a bigger volume is fine).
                    self.failures.remove(id);
                    continue;
                }
            };
            let ask = if grow {
                Ask::Grow(size)
            } else {
                Ask::Create(size)
            };
            if self.throttled(id, ask, now) {
                continue;
            }
            acted = true;
            // Where only the filesystem's online growth is refused (`Unsupported`), the
            // volume did grow: the listing below shows it available, and the failure is
            // forgotten on the next pass.
            let result = if grow {
                tracing::info!(volume_id = %id, size_bytes = size, "growing volume");
                backend.resize(id, size).await.map(drop)
            } else {
                tracing::info!(volume_id = %id, size_bytes = size, "creating volume");
                backend.create(id, size).await.map(drop)
            };
            self.record(id, ask, result, "");
        }

        for id in delete {
            let Some(v) = present.get(id) else {
                // Gone: done (and nothing to report).
                self.failures.remove(id);
                continue;
            };
            if self.throttled(id, Ask::Delete, now) {
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

        // Observe what the actions left behind (no second listing when nothing was done).
        let relisted;
        let after: &[VolumeInfo] = if acted {
            match backend.list().await {
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
        self.observed = self.observe(&want, after);
    }

    /// Remembers the outcome of one operation and logs a failure.
    fn record(&mut self, id: &str, ask: Ask, result: Result<(), StorageError>, prefix: &str) {
        match result {
            Ok(()) => {
                self.failures.remove(id);
            }
            Err(e) => {
                tracing::warn!(volume_id = %id, operation = ?ask, error = %e, "volume operation failed");
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
    fn observe(&self, want: &BTreeMap<&str, u64>, listed: &[VolumeInfo]) -> Vec<VolumeObservation> {
        let mut out: BTreeMap<&str, VolumeObservation> = BTreeMap::new();
        let present: BTreeMap<&str, &VolumeInfo> =
            listed.iter().map(|v| (v.volume_id.as_str(), v)).collect();
        for (&id, &size) in want {
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

    /// Puts the volumes of the last pass into `observed` (sorted by id).
    pub(super) fn amend(&self, observed: &mut crate::model::ObservedState) {
        observed.volumes = self.observed.clone();
    }
}

fn failed(id: &str, size_bytes: u64, reason: String) -> VolumeObservation {
    VolumeObservation {
        volume_id: id.to_owned(),
        state: VolumeState::Failed,
        size_bytes,
        reason,
        instance_id: String::new(),
    }
}
