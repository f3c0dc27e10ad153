//! The snapshot part of the volume half of a reconcile pass: takes the snapshots the scheduler
//! wants (of volumes as they are at that moment), deletes the ones it asks to delete, and
//! reports each: `available` with the size a restore creates, `failed` with the cause, or
//! `orphan` for snapshots the backend has that nobody asked for (kept, never deleted on the
//! agent's own initiative). A deleted snapshot is absent from the report.

use super::volumes::{Ask, VolState};
use crate::model::{DesiredState, SnapshotObservation, VolumeState};
use crate::storage::{SnapshotInfo, VolumeBackend};
use std::collections::BTreeMap;
use tokio::time::Instant;

/// The snapshots a desired document asks for, and the ones it asks to delete.
pub(super) struct SnapshotAsks<'a> {
    /// Snapshot id → (the volume it is taken of, whether to take it when missing).
    want: BTreeMap<&'a str, (&'a str, bool)>,
    /// Not also wanted (a snapshot both wanted and to be deleted is kept).
    delete: Vec<&'a str>,
}

impl<'a> SnapshotAsks<'a> {
    pub(super) fn of(desired: &'a DesiredState) -> Self {
        let want: BTreeMap<&str, (&str, bool)> = desired
            .snapshots
            .iter()
            .map(|s| (s.snapshot_id.as_str(), (s.volume_id.as_str(), s.take)))
            .collect();
        let mut delete: Vec<&str> = desired
            .delete_snapshots
            .iter()
            .map(String::as_str)
            .filter(|id| !want.contains_key(id))
            .collect();
        delete.sort_unstable();
        delete.dedup();
        Self { want, delete }
    }

    pub(super) fn mentions(&self, id: &str) -> bool {
        self.want.contains_key(id) || self.delete.contains(&id)
    }

    /// Every snapshot asked about, failed with `reason` (the state of the backend is unknown:
    /// snapshots to delete too, since absence would say they are gone).
    pub(super) fn all_failed(&self, reason: &str) -> Vec<SnapshotObservation> {
        let mut out: Vec<SnapshotObservation> = self
            .want
            .iter()
            .map(|(s, (v, _))| failed(s, v, 0, reason.to_owned()))
            .chain(
                self.delete
                    .iter()
                    .map(|s| failed(s, "", 0, reason.to_owned())),
            )
            .collect();
        out.sort_by(|a, b| a.snapshot_id.cmp(&b.snapshot_id));
        out
    }
}

/// Takes missing snapshots and deletes unwanted ones. Returns whether it acted.
pub(super) async fn converge(
    state: &mut VolState,
    backend: &dyn VolumeBackend,
    asks: &SnapshotAsks<'_>,
    listed: &[SnapshotInfo],
    now: Instant,
) -> bool {
    let present: BTreeMap<&str, &SnapshotInfo> =
        listed.iter().map(|s| (s.snapshot_id.as_str(), s)).collect();
    let mut acted = false;
    for (&snap, &(volume, take)) in &asks.want {
        if present.contains_key(snap) {
            state.failures.remove(snap);
            continue;
        }
        // Taken earlier and gone since: reported lost, never re-taken from newer data.
        if !take || state.throttled(snap, &Ask::Snapshot, now) {
            continue;
        }
        acted = true;
        tracing::info!(snapshot_id = %snap, volume_id = %volume, "taking snapshot");
        let result = backend.snapshot(volume, snap).await.map(drop);
        state.record(snap, Ask::Snapshot, result, "");
    }
    for &snap in &asks.delete {
        if !present.contains_key(snap) {
            state.failures.remove(snap);
            continue;
        }
        if state.throttled(snap, &Ask::DeleteSnapshot, now) {
            continue;
        }
        acted = true;
        tracing::info!(snapshot_id = %snap, "deleting snapshot");
        let result = backend.delete_snapshot(snap).await;
        state.record(snap, Ask::DeleteSnapshot, result, "delete failed: ");
    }
    acted
}

/// The observation of every snapshot, sorted by id, from the backend's listing.
pub(super) fn observe(
    state: &VolState,
    asks: &SnapshotAsks<'_>,
    listed: &[SnapshotInfo],
) -> Vec<SnapshotObservation> {
    let mut out: BTreeMap<&str, SnapshotObservation> = BTreeMap::new();
    let present: BTreeMap<&str, &SnapshotInfo> =
        listed.iter().map(|s| (s.snapshot_id.as_str(), s)).collect();
    for (&snap, &(volume, take)) in &asks.want {
        let obs = match present.get(snap) {
            Some(s) => SnapshotObservation {
                snapshot_id: snap.to_owned(),
                volume_id: s.volume_id.clone(),
                state: VolumeState::Available,
                size_bytes: s.size_bytes,
                reason: String::new(),
            },
            None => {
                let reason = match state.failures.get(snap) {
                    Some(f) => f.reason.clone(),
                    None if take => "snapshot not taken yet".to_owned(),
                    None => "snapshot lost: it is no longer on this node".to_owned(),
                };
                failed(snap, volume, 0, reason)
            }
        };
        out.insert(snap, obs);
    }
    for s in listed {
        let id = s.snapshot_id.as_str();
        if asks.want.contains_key(id) {
            continue;
        }
        let obs = match state.failures.get(id) {
            Some(f) if f.ask == Ask::DeleteSnapshot => {
                failed(id, &s.volume_id, s.size_bytes, f.reason.clone())
            }
            _ => SnapshotObservation {
                state: VolumeState::Orphan,
                ..failed(id, &s.volume_id, s.size_bytes, String::new())
            },
        };
        out.insert(id, obs);
    }
    out.into_values().collect()
}

fn failed(snap: &str, volume: &str, size_bytes: u64, reason: String) -> SnapshotObservation {
    SnapshotObservation {
        snapshot_id: snap.to_owned(),
        volume_id: volume.to_owned(),
        state: VolumeState::Failed,
        size_bytes,
        reason,
    }
}
