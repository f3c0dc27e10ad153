//! The reconciler's volume half against the in-memory volume backend.

use super::*;
use crate::model::{VolumeObservation, VolumeSpec, VolumeState};
use crate::runtime::FakeRuntime;
use crate::runtime::fake::FakeCall;
use crate::storage::{
    FakeVolumes, PoolCapacity, SnapshotInfo, StorageError, VolumeBackend, VolumeInfo,
};
use async_trait::async_trait;
use std::sync::Mutex;
use tempfile::TempDir;

const NODE: &str = "node-a";
const A: &str = "01a22355-bf78-7117-9e6f-ce93a3165224";
const B: &str = "0196f1b8-3c1e-7a4b-8d2f-5e6a7b8c9d0e";
const C: &str = "0196f1b8-3c1e-7a4b-8d2f-5e6a7b8c9d0f";
const SNAP: &str = "0196f1b8-3c1e-7a4b-8d2f-000000000001";
const POOL: u64 = 10_000;

/// A backend that records every call (by name) before passing it to a `FakeVolumes`, and
/// can make listings fail.
struct Counting {
    inner: FakeVolumes,
    calls: Mutex<Vec<&'static str>>,
    fail_list: Mutex<Option<StorageError>>,
}

impl Counting {
    fn new(inner: FakeVolumes) -> Self {
        Self {
            inner,
            calls: Mutex::new(Vec::new()),
            fail_list: Mutex::new(None),
        }
    }

    fn note(&self, name: &'static str) {
        self.calls.lock().unwrap().push(name);
    }

    /// The calls since the last `take`.
    fn take(&self) -> Vec<&'static str> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

#[async_trait]
impl VolumeBackend for Counting {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    async fn capacity(&self) -> Result<PoolCapacity, StorageError> {
        self.note("capacity");
        self.inner.capacity().await
    }
    async fn create(&self, id: &str, size: u64) -> Result<VolumeInfo, StorageError> {
        self.note("create");
        self.inner.create(id, size).await
    }
    async fn delete(&self, id: &str) -> Result<(), StorageError> {
        self.note("delete");
        self.inner.delete(id).await
    }
    async fn resize(&self, id: &str, size: u64) -> Result<VolumeInfo, StorageError> {
        self.note("resize");
        self.inner.resize(id, size).await
    }
    async fn snapshot(&self, id: &str, snap: &str) -> Result<SnapshotInfo, StorageError> {
        self.note("snapshot");
        self.inner.snapshot(id, snap).await
    }
    async fn delete_snapshot(&self, snap: &str) -> Result<(), StorageError> {
        self.note("delete_snapshot");
        self.inner.delete_snapshot(snap).await
    }
    async fn restore(&self, snap: &str, id: &str) -> Result<VolumeInfo, StorageError> {
        self.note("restore");
        self.inner.restore(snap, id).await
    }
    async fn get(&self, id: &str) -> Result<VolumeInfo, StorageError> {
        self.note("get");
        self.inner.get(id).await
    }
    async fn list(&self) -> Result<Vec<VolumeInfo>, StorageError> {
        self.note("list");
        if let Some(e) = self.fail_list.lock().unwrap().clone() {
            return Err(e);
        }
        self.inner.list().await
    }
    async fn list_snapshots(&self) -> Result<Vec<SnapshotInfo>, StorageError> {
        self.note("list_snapshots");
        self.inner.list_snapshots().await
    }
    async fn mount(&self, id: &str) -> Result<PathBuf, StorageError> {
        self.note("mount");
        self.inner.mount(id).await
    }
    async fn unmount(&self, id: &str) -> Result<(), StorageError> {
        self.note("unmount");
        self.inner.unmount(id).await
    }
    async fn mounted(&self, id: &str) -> Result<bool, StorageError> {
        self.note("mounted");
        self.inner.mounted(id).await
    }
}

fn vol(id: &str, size_bytes: u64) -> VolumeSpec {
    VolumeSpec {
        volume_id: id.into(),
        size_bytes,
        from_snapshot_id: None,
    }
}

fn doc(generation: u64, volumes: Vec<VolumeSpec>, delete: &[&str]) -> Arc<DesiredState> {
    Arc::new(DesiredState {
        generation,
        instances: Vec::new(),
        vpcs: Vec::new(),
        volumes,
        delete_volumes: delete.iter().map(|s| (*s).to_owned()).collect(),
        snapshots: Vec::new(),
        delete_snapshots: Vec::new(),
    })
}

fn available(id: &str, size_bytes: u64) -> VolumeObservation {
    VolumeObservation {
        volume_id: id.into(),
        state: VolumeState::Available,
        size_bytes,
        reason: String::new(),
        instance_id: String::new(),
    }
}

fn orphan(id: &str, size_bytes: u64) -> VolumeObservation {
    VolumeObservation {
        state: VolumeState::Orphan,
        ..available(id, size_bytes)
    }
}

fn find<'a>(o: &'a ObservedState, id: &str) -> &'a VolumeObservation {
    o.volumes
        .iter()
        .find(|v| v.volume_id == id)
        .unwrap_or_else(|| panic!("{id} not observed in {:?}", o.volumes))
}

struct Fixture {
    rt: Arc<FakeRuntime>,
    fake: FakeVolumes,
    backend: Arc<Counting>,
    _dir: TempDir,
    rec: Reconciler,
    generation: u64,
}

impl Fixture {
    fn new(fake: FakeVolumes) -> Self {
        let rt = Arc::new(FakeRuntime::with_images(["local/busybox:latest"]));
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(Counting::new(fake.clone()));
        let rec = Reconciler::new(NODE, rt.clone(), dir.path(), ReconcilerConfig::default())
            .unwrap()
            .with_volumes(backend.clone());
        Self {
            rt,
            fake,
            backend,
            _dir: dir,
            rec,
            generation: 0,
        }
    }

    /// A new desired document (next generation) and one pass.
    async fn apply(&mut self, volumes: Vec<VolumeSpec>, delete: &[&str]) -> ObservedState {
        self.generation += 1;
        assert!(self.rec.set_desired(doc(self.generation, volumes, delete)));
        self.pass().await
    }

    /// One pass with the desired document in force (a timer tick).
    async fn pass(&mut self) -> ObservedState {
        self.rec.reconcile_once().await.unwrap().unwrap()
    }
}

fn retry_after() -> Duration {
    ReconcilerConfig::default().retry_after_failure
}

#[tokio::test(start_paused = true)]
async fn nothing_is_listed_before_the_first_desired_document() {
    let mut f = Fixture::new(FakeVolumes::new(POOL));
    assert!(f.rec.reconcile_once().await.unwrap().is_none());
    assert!(f.backend.take().is_empty());
}

#[tokio::test(start_paused = true)]
async fn creates_missing_volumes_and_reports_them_available() {
    let mut f = Fixture::new(FakeVolumes::new(POOL));
    let o = f.apply(vec![vol(B, 300), vol(A, 100)], &[]).await;
    assert_eq!(o.volumes, vec![available(B, 300), available(A, 100)]);
    assert_eq!(
        f.fake.get(A).await.unwrap().size_bytes,
        100,
        "created on the backend"
    );
    assert_eq!(f.fake.get(B).await.unwrap().size_bytes, 300);
    let mut calls = f.backend.take();
    calls.sort_unstable();
    assert_eq!(
        calls,
        vec![
            "create",
            "create",
            "list",
            "list",
            "list_snapshots",
            "list_snapshots"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_converged_pass_only_lists() {
    let mut f = Fixture::new(FakeVolumes::new(POOL));
    let first = f.apply(vec![vol(A, 100), vol(B, 200)], &[]).await;
    f.backend.take();
    // The same volumes in a new document, then a timer tick.
    let o = f.apply(vec![vol(A, 100), vol(B, 200)], &[]).await;
    assert_eq!(f.backend.take(), vec!["list", "list_snapshots"]);
    assert_eq!(o.volumes, first.volumes);
    let o = f.pass().await;
    assert_eq!(f.backend.take(), vec!["list", "list_snapshots"]);
    assert_eq!(o.volumes, first.volumes);
}

#[tokio::test(start_paused = true)]
async fn grows_when_the_spec_grows() {
    let mut f = Fixture::new(FakeVolumes::new(POOL));
    f.apply(vec![vol(A, 100)], &[]).await;
    f.backend.take();
    let o = f.apply(vec![vol(A, 250)], &[]).await;
    assert_eq!(o.volumes, vec![available(A, 250)]);
    assert_eq!(
        f.backend.take(),
        vec!["list", "list_snapshots", "resize", "list", "list_snapshots"]
    );
    assert_eq!(f.fake.get(A).await.unwrap().size_bytes, 250);
    // Grown once; nothing more to do.
    f.pass().await;
    assert_eq!(f.backend.take(), vec!["list", "list_snapshots"]);
}

#[tokio::test(start_paused = true)]
async fn a_smaller_spec_never_shrinks_and_reports_the_real_size() {
    let mut f = Fixture::new(FakeVolumes::new(POOL));
    f.apply(vec![vol(A, 500)], &[]).await;
    f.backend.take();
    let o = f.apply(vec![vol(A, 100)], &[]).await;
    assert_eq!(o.volumes, vec![available(A, 500)]);
    assert_eq!(f.backend.take(), vec!["list", "list_snapshots"]);
    assert_eq!(f.fake.get(A).await.unwrap().size_bytes, 500);
}

#[tokio::test(start_paused = true)]
async fn a_failed_create_is_reported_and_retried_only_after_the_throttle() {
    let mut f = Fixture::new(FakeVolumes::new(POOL));
    f.fake.fail_next(StorageError::Io("disk on fire".into()));
    let o = f.apply(vec![vol(A, 100)], &[]).await;
    let a = find(&o, A);
    assert_eq!(a.state, VolumeState::Failed);
    assert_eq!(a.size_bytes, 0);
    assert!(a.reason.contains("disk on fire"), "{}", a.reason);
    assert!(f.fake.list().await.unwrap().is_empty());
    f.backend.take();

    // Within the throttle: not retried (also not for a new document with the same spec).
    tokio::time::advance(retry_after() / 2).await;
    let o = f.pass().await;
    assert_eq!(f.backend.take(), vec!["list", "list_snapshots"]);
    assert_eq!(find(&o, A).state, VolumeState::Failed);
    assert!(find(&o, A).reason.contains("disk on fire"));
    f.apply(vec![vol(A, 100)], &[]).await;
    assert_eq!(f.backend.take(), vec!["list", "list_snapshots"]);

    // Past it: retried, and it works this time.
    tokio::time::advance(retry_after()).await;
    let o = f.pass().await;
    assert_eq!(
        f.backend.take(),
        vec!["list", "list_snapshots", "create", "list", "list_snapshots"]
    );
    assert_eq!(o.volumes, vec![available(A, 100)]);
}

#[tokio::test(start_paused = true)]
async fn a_volume_larger_than_the_pool_fails_and_a_changed_spec_is_tried_at_once() {
    let mut f = Fixture::new(FakeVolumes::new(POOL));
    let o = f.apply(vec![vol(A, POOL + 1), vol(B, 100)], &[]).await;
    let a = find(&o, A);
    assert_eq!(a.state, VolumeState::Failed);
    assert!(a.reason.contains("not enough space"), "{}", a.reason);
    // One volume's failure does not block another.
    assert_eq!(find(&o, B), &available(B, 100));
    f.backend.take();

    // The same spec again: throttled. A smaller spec: tried at once.
    f.apply(vec![vol(A, POOL + 1), vol(B, 100)], &[]).await;
    assert_eq!(f.backend.take(), vec!["list", "list_snapshots"]);
    let o = f.apply(vec![vol(A, 1000), vol(B, 100)], &[]).await;
    assert_eq!(
        f.backend.take(),
        vec!["list", "list_snapshots", "create", "list", "list_snapshots"]
    );
    assert_eq!(o.volumes, vec![available(B, 100), available(A, 1000)]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_grow_is_reported_with_the_real_size_and_retried_later() {
    let mut f = Fixture::new(FakeVolumes::new(POOL));
    f.apply(vec![vol(A, 100)], &[]).await;
    let o = f.apply(vec![vol(A, POOL * 2)], &[]).await;
    let a = find(&o, A);
    assert_eq!((a.state, a.size_bytes), (VolumeState::Failed, 100));
    assert!(a.reason.contains("not enough space"), "{}", a.reason);
    f.backend.take();
    f.pass().await;
    assert_eq!(f.backend.take(), vec!["list", "list_snapshots"]);
    tokio::time::advance(retry_after()).await;
    f.pass().await;
    assert_eq!(
        f.backend.take(),
        vec!["list", "list_snapshots", "resize", "list", "list_snapshots"]
    );
    assert_eq!(f.fake.get(A).await.unwrap().size_bytes, 100);
}

#[tokio::test(start_paused = true)]
async fn deleted_volumes_disappear_from_the_observation() {
    let mut f = Fixture::new(FakeVolumes::new(POOL));
    f.apply(vec![vol(A, 100), vol(B, 200)], &[]).await;
    // B is mounted (was attached): it is unmounted, then deleted.
    f.fake.mount(B).await.unwrap();
    f.backend.take();
    let o = f.apply(vec![vol(A, 100)], &[B]).await;
    assert_eq!(o.volumes, vec![available(A, 100)]);
    assert_eq!(
        f.backend.take(),
        vec![
            "list",
            "list_snapshots",
            "unmount",
            "delete",
            "list",
            "list_snapshots"
        ]
    );
    assert!(matches!(
        f.fake.get(B).await,
        Err(StorageError::NotFound(_))
    ));
    // Still asked to delete it: done, nothing to do.
    let o = f.pass().await;
    assert_eq!(f.backend.take(), vec!["list", "list_snapshots"]);
    assert_eq!(o.volumes, vec![available(A, 100)]);
}

#[tokio::test(start_paused = true)]
async fn a_refused_delete_is_reported_failed_and_the_volume_kept() {
    // lvm: a volume with snapshots cannot be deleted.
    let mut f = Fixture::new(FakeVolumes::lvm_like(POOL));
    f.apply(vec![vol(A, 100)], &[]).await;
    f.fake.snapshot(A, SNAP).await.unwrap();
    let o = f.apply(vec![], &[A]).await;
    let a = find(&o, A);
    assert_eq!((a.state, a.size_bytes), (VolumeState::Failed, 100));
    assert!(
        a.reason.starts_with("delete failed: in use:"),
        "{}",
        a.reason
    );
    assert!(f.fake.get(A).await.is_ok());
    f.backend.take();

    // Throttled, still reported failed.
    let o = f.pass().await;
    assert_eq!(f.backend.take(), vec!["list", "list_snapshots"]);
    assert_eq!(find(&o, A).state, VolumeState::Failed);

    // Once the snapshot is gone, the next attempt after the throttle deletes it.
    f.fake.delete_snapshot(SNAP).await.unwrap();
    tokio::time::advance(retry_after()).await;
    let o = f.pass().await;
    assert_eq!(
        f.backend.take(),
        vec!["list", "list_snapshots", "delete", "list", "list_snapshots"]
    );
    assert!(o.volumes.is_empty(), "{:?}", o.volumes);
}

#[tokio::test(start_paused = true)]
async fn a_failing_delete_does_not_block_other_volumes() {
    let mut f = Fixture::new(FakeVolumes::new(POOL));
    f.apply(vec![vol(A, 100), vol(B, 100), vol(C, 100)], &[])
        .await;
    // The first change of the next pass (deleting B, the lower id) fails.
    f.fake
        .fail_next(StorageError::InUse(format!("volume {B} is busy")));
    let o = f.apply(vec![vol(C, 100)], &[A, B]).await;
    let b = find(&o, B);
    assert_eq!(b.state, VolumeState::Failed);
    assert!(
        b.reason.starts_with("delete failed: in use: "),
        "{}",
        b.reason
    );
    assert_eq!(o.volumes.len(), 2, "A deleted: {:?}", o.volumes);
    assert_eq!(find(&o, C), &available(C, 100));
    assert!(f.fake.get(A).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn orphans_are_reported_and_never_touched() {
    let fake = FakeVolumes::new(POOL);
    fake.create(B, 300).await.unwrap();
    fake.mount(B).await.unwrap();
    let mut f = Fixture::new(fake);
    let o = f.apply(vec![vol(A, 100)], &[]).await;
    assert_eq!(o.volumes, vec![orphan(B, 300), available(A, 100)]);
    f.backend.take();
    let o = f.apply(vec![], &[]).await;
    assert_eq!(f.backend.take(), vec!["list", "list_snapshots"]);
    assert_eq!(o.volumes, vec![orphan(B, 300), orphan(A, 100)]);
    assert!(f.fake.mounted(B).await.unwrap(), "orphan left mounted");
    assert_eq!(f.fake.list().await.unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn without_a_backend_volumes_fail_clearly_and_deletions_are_done() {
    let rt = Arc::new(FakeRuntime::with_images(["local/busybox:latest"]));
    let dir = tempfile::tempdir().unwrap();
    let mut rec = Reconciler::new(NODE, rt, dir.path(), ReconcilerConfig::default()).unwrap();
    rec.set_desired(doc(1, vec![vol(B, 100), vol(A, 100)], &[C]));
    let o = rec.reconcile_once().await.unwrap().unwrap();
    assert_eq!(o.volumes.len(), 2, "{:?}", o.volumes);
    assert_eq!(o.volumes[0].volume_id, B, "sorted by id");
    for v in &o.volumes {
        assert_eq!(v.state, VolumeState::Failed);
        assert_eq!(v.reason, "this node has no volume backend");
    }
}

#[tokio::test(start_paused = true)]
async fn a_restarted_agent_adopts_existing_volumes() {
    let mut f = Fixture::new(FakeVolumes::new(POOL));
    f.apply(vec![vol(A, 100), vol(B, 200)], &[]).await;
    f.fake.mount(A).await.unwrap();
    // A new reconciler (new process, fresh data dir) over the same volumes.
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(Counting::new(f.fake.clone()));
    let mut rec = Reconciler::new(NODE, f.rt.clone(), dir.path(), ReconcilerConfig::default())
        .unwrap()
        .with_volumes(backend.clone());
    rec.set_desired(doc(7, vec![vol(A, 100), vol(B, 200)], &[]));
    let o = rec.reconcile_once().await.unwrap().unwrap();
    // Nothing created; A, mounted though no container uses it, is unmounted.
    assert_eq!(
        backend.take(),
        vec![
            "list",
            "list_snapshots",
            "unmount",
            "list",
            "list_snapshots"
        ]
    );
    assert_eq!(o.volumes, vec![available(B, 200), available(A, 100)]);
    assert!(!f.fake.mounted(A).await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn an_unlistable_backend_touches_nothing_and_reports_deletions_unfinished() {
    let mut f = Fixture::new(FakeVolumes::new(POOL));
    f.apply(vec![vol(A, 100), vol(B, 100)], &[]).await;
    *f.backend.fail_list.lock().unwrap() = Some(StorageError::Io("vgs hung".into()));
    f.backend.take();
    let o = f.apply(vec![vol(A, 100), vol(C, 100)], &[B]).await;
    assert_eq!(f.backend.take(), vec!["list"]);
    assert_eq!(o.volumes.len(), 3, "{:?}", o.volumes);
    for v in &o.volumes {
        assert_eq!(v.state, VolumeState::Failed);
        assert!(
            v.reason.contains("cannot list volumes: vgs hung"),
            "{}",
            v.reason
        );
    }
    *f.backend.fail_list.lock().unwrap() = None;
    let o = f.pass().await;
    assert_eq!(o.volumes, vec![available(C, 100), available(A, 100)]);
}

#[tokio::test(start_paused = true)]
async fn a_volume_both_wanted_and_deleted_is_kept() {
    let mut f = Fixture::new(FakeVolumes::new(POOL));
    f.apply(vec![vol(A, 100)], &[]).await;
    f.backend.take();
    let o = f.apply(vec![vol(A, 100)], &[A]).await;
    assert_eq!(f.backend.take(), vec!["list", "list_snapshots"]);
    assert_eq!(o.volumes, vec![available(A, 100)]);
}

// ------------------------------------------------------------------ snapshots and mounts

const SNAP2: &str = "0196f1b8-3c1e-7a4b-8d2f-000000000002";

fn snap(id: &str, volume: &str) -> crate::model::SnapshotSpec {
    crate::model::SnapshotSpec {
        snapshot_id: id.into(),
        volume_id: volume.into(),
        take: true,
    }
}

impl Fixture {
    /// A new desired document with snapshots and instances too, and one pass.
    async fn apply_all(
        &mut self,
        volumes: Vec<VolumeSpec>,
        snapshots: Vec<crate::model::SnapshotSpec>,
        delete_snapshots: &[&str],
        instances: Vec<InstanceSpec>,
    ) -> ObservedState {
        self.generation += 1;
        let mut d = (*doc(self.generation, volumes, &[])).clone();
        d.snapshots = snapshots;
        d.delete_snapshots = delete_snapshots.iter().map(|s| (*s).to_owned()).collect();
        d.instances = instances;
        assert!(self.rec.set_desired(Arc::new(d)));
        self.pass().await
    }
}

/// Writes through a mount, as a container would (the agent unmounts what no container uses).
async fn put(fake: &FakeVolumes, id: &str, data: &[u8]) {
    fake.mount(id).await.unwrap();
    fake.write(id, data).unwrap();
    fake.unmount(id).await.unwrap();
}

async fn get(fake: &FakeVolumes, id: &str) -> Vec<u8> {
    fake.mount(id).await.unwrap();
    let data = fake.read(id).unwrap();
    fake.unmount(id).await.unwrap();
    data
}

fn snap_obs(o: &ObservedState, id: &str) -> crate::model::SnapshotObservation {
    o.snapshots
        .iter()
        .find(|s| s.snapshot_id == id)
        .cloned()
        .unwrap_or_else(|| panic!("{id} not observed in {:?}", o.snapshots))
}

fn with_volume(id: &str, volume: &str, policy: RestartPolicy, generation: u64) -> InstanceSpec {
    InstanceSpec {
        instance_id: id.into(),
        name: format!("app-{id}"),
        image: "local/busybox:latest".into(),
        restart_policy: policy,
        desired: RunState::Running,
        kind: "container".into(),
        change_generation: generation,
        mounts: vec![(volume.into(), "/data".into())],
        ..Default::default()
    }
}

#[tokio::test(start_paused = true)]
async fn snapshots_are_taken_once_reported_and_deleted() {
    let mut f = Fixture::new(FakeVolumes::new(POOL));
    f.apply(vec![vol(A, 100)], &[]).await;
    put(&f.fake, A, b"before").await;
    f.backend.take();
    let o = f
        .apply_all(vec![vol(A, 100)], vec![snap(SNAP, A)], &[], vec![])
        .await;
    assert_eq!(
        f.backend.take(),
        vec![
            "list",
            "list_snapshots",
            "snapshot",
            "list",
            "list_snapshots"
        ]
    );
    let s = snap_obs(&o, SNAP);
    assert_eq!((s.state, s.size_bytes), (VolumeState::Available, 100));
    assert_eq!(s.volume_id, A);
    // Taken once: a pass with the same document only lists.
    f.pass().await;
    assert_eq!(f.backend.take(), vec!["list", "list_snapshots"]);

    // Deleted when asked; then absent from the observation.
    let o = f
        .apply_all(vec![vol(A, 100)], vec![], &[SNAP], vec![])
        .await;
    assert_eq!(
        f.backend.take(),
        vec![
            "list",
            "list_snapshots",
            "delete_snapshot",
            "list",
            "list_snapshots"
        ]
    );
    assert!(o.snapshots.is_empty(), "{:?}", o.snapshots);
    assert!(f.fake.list_snapshots().await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_restore_creates_a_new_volume_with_the_snapshot_content_grown_as_asked() {
    let mut f = Fixture::new(FakeVolumes::new(POOL));
    f.apply_all(vec![vol(A, 100)], vec![], &[], vec![]).await;
    put(&f.fake, A, b"old bytes").await;
    f.apply_all(vec![vol(A, 100)], vec![snap(SNAP, A)], &[], vec![])
        .await;
    put(&f.fake, A, b"new bytes").await;
    f.backend.take();
    let restored = VolumeSpec {
        from_snapshot_id: Some(SNAP.into()),
        ..vol(B, 300)
    };
    let o = f
        .apply_all(
            vec![vol(A, 100), restored.clone()],
            vec![snap(SNAP, A)],
            &[],
            vec![],
        )
        .await;
    assert_eq!(
        f.backend.take(),
        vec![
            "list",
            "list_snapshots",
            "restore",
            "resize",
            "list",
            "list_snapshots"
        ]
    );
    assert_eq!(find(&o, B), &available(B, 300));
    assert!(get(&f.fake, B).await.starts_with(b"old bytes"));
    assert!(
        get(&f.fake, A).await.starts_with(b"new bytes"),
        "source untouched"
    );
    // Restored once: the source snapshot is not used again.
    f.pass().await;
    assert_eq!(f.backend.take(), vec!["list", "list_snapshots"]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_snapshot_is_reported_and_retried_after_the_throttle() {
    let mut f = Fixture::new(FakeVolumes::new(POOL));
    // Its volume does not exist (yet): the snapshot fails with the cause.
    let o = f.apply_all(vec![], vec![snap(SNAP, A)], &[], vec![]).await;
    let s = snap_obs(&o, SNAP);
    assert_eq!(s.state, VolumeState::Failed);
    assert!(s.reason.contains("not found"), "{}", s.reason);
    f.fake.create(A, 100).await.unwrap();
    f.backend.take();
    f.pass().await;
    assert_eq!(
        f.backend.take(),
        vec!["list", "list_snapshots"],
        "throttled"
    );
    tokio::time::advance(retry_after()).await;
    let o = f.pass().await;
    assert_eq!(snap_obs(&o, SNAP).state, VolumeState::Available);
}

#[tokio::test(start_paused = true)]
async fn orphan_snapshots_are_reported_and_kept() {
    let fake = FakeVolumes::new(POOL);
    fake.create(A, 100).await.unwrap();
    fake.snapshot(A, SNAP2).await.unwrap();
    let mut f = Fixture::new(fake);
    let o = f.apply(vec![vol(A, 100)], &[]).await;
    let s = snap_obs(&o, SNAP2);
    assert_eq!((s.state, s.volume_id.as_str()), (VolumeState::Orphan, A));
    assert_eq!(f.fake.list_snapshots().await.unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_detached_volume_is_unmounted_once_no_container_uses_it() {
    let mut f = Fixture::new(FakeVolumes::new(POOL));
    let app = with_volume("i1", A, RestartPolicy::Never, 1);
    f.apply(vec![vol(A, 100)], &[]).await;
    f.apply_all(vec![vol(A, 100)], vec![], &[], vec![app.clone()])
        .await;
    assert!(
        f.fake.mounted(A).await.unwrap(),
        "mounted for its container"
    );
    f.backend.take();
    // A pass with the container running keeps it mounted.
    f.pass().await;
    assert_eq!(f.backend.take(), vec!["list", "list_snapshots"]);
    // Detached: the container is recreated without it, then the volume is unmounted.
    let detached = InstanceSpec {
        mounts: Vec::new(),
        change_generation: 2,
        ..app
    };
    f.apply_all(vec![vol(A, 100)], vec![], &[], vec![detached])
        .await;
    f.pass().await;
    assert!(!f.fake.mounted(A).await.unwrap());
    assert!(f.backend.take().contains(&"unmount"));
    assert!(
        f.rt.container_of("i1")
            .unwrap()
            .label(labels::MOUNTS)
            .is_none()
    );
}

#[tokio::test(start_paused = true)]
async fn after_a_host_reboot_volumes_are_mounted_again_and_always_instances_restarted() {
    let mut f = Fixture::new(FakeVolumes::new(POOL));
    let app = with_volume("i1", A, RestartPolicy::Always, 1);
    let never = with_volume("i2", B, RestartPolicy::Never, 1);
    f.apply(vec![vol(A, 100), vol(B, 100)], &[]).await;
    f.apply_all(
        vec![vol(A, 100), vol(B, 100)],
        vec![],
        &[],
        vec![app, never],
    )
    .await;
    let id = f.rt.container_of("i1").unwrap().id;
    let id2 = f.rt.container_of("i2").unwrap().id;
    // The reboot: every mount is gone and the containers are down.
    f.fake.unmount(A).await.unwrap();
    f.fake.unmount(B).await.unwrap();
    f.rt.stop(&id, Duration::ZERO).await.unwrap();
    f.rt.stop(&id2, Duration::ZERO).await.unwrap();
    f.rt.clear_calls();
    // The first pass sees the lost mounts, the next acts on them.
    f.pass().await;
    let o = f.pass().await;
    assert_eq!(f.rt.calls(), vec![FakeCall::Start { id: id.clone() }]);
    assert!(f.fake.mounted(A).await.unwrap(), "mounted before the start");
    assert_eq!(
        o.instance("i1").unwrap().state,
        crate::model::InstanceState::Running
    );
    // A `never` instance stays down (like any container after a reboot) and keeps its volume
    // unmounted until it is started.
    assert!(!f.fake.mounted(B).await.unwrap());
    f.rt.clear_calls();
    f.pass().await;
    assert!(f.rt.calls().is_empty(), "{:?}", f.rt.calls());
}

#[tokio::test(start_paused = true)]
async fn a_snapshot_lost_after_it_was_taken_is_reported_not_retaken() {
    let mut f = Fixture::new(FakeVolumes::new(POOL));
    f.apply(vec![vol(A, 100)], &[]).await;
    f.apply_all(vec![vol(A, 100)], vec![snap(SNAP, A)], &[], vec![])
        .await;
    // Taken; the scheduler now sends it as existing (take: false). It vanishes on the node.
    f.fake.delete_snapshot(SNAP).await.unwrap();
    f.backend.take();
    let existing = crate::model::SnapshotSpec {
        take: false,
        ..snap(SNAP, A)
    };
    let o = f
        .apply_all(vec![vol(A, 100)], vec![existing], &[], vec![])
        .await;
    assert!(!f.backend.take().contains(&"snapshot"), "not re-taken");
    let s = snap_obs(&o, SNAP);
    assert_eq!(s.state, VolumeState::Failed);
    assert!(s.reason.contains("lost"), "{}", s.reason);
}
