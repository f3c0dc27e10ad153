//! Snapshots through the public API with real schedulers and agents (fake container runtime
//! and in-memory volume backends imitating `file` and `lvm`): take, list, restore into a new
//! volume with the old bytes while the source keeps its new ones, delete; the refusals (bad
//! input, restoring too small, deleting an lvm volume that has snapshots). SQLite and
//! PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: fail fast with the message

use cloud_agent::storage::{FakeVolumes, VolumeBackend};
use cloud_api::{
    ClientError, CreateSnapshotRequest, CreateVolumeRequest, RestoreSnapshotRequest,
    SnapshotStatus, VolumeStatus,
};
use cloud_tests::{Cluster, wait_for};
use std::sync::Arc;
use std::time::Duration;

fn status(r: Result<impl std::fmt::Debug, ClientError>) -> (u16, String) {
    match r {
        Err(e) => (e.status().unwrap_or(0), e.to_string()),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

fn snap(volume: &str, name: &str) -> CreateSnapshotRequest {
    CreateSnapshotRequest {
        volume_id: volume.into(),
        name: name.into(),
    }
}

fn restore(name: &str, size_gb: Option<u64>) -> RestoreSnapshotRequest {
    RestoreSnapshotRequest {
        name: name.into(),
        size_gb,
    }
}

/// Writes through a mount, as a container would (the fake keeps data only while mounted).
async fn put(vols: &FakeVolumes, id: &str, data: &[u8]) {
    vols.mount(id).await.unwrap();
    vols.write(id, data).unwrap();
    vols.unmount(id).await.unwrap();
}

async fn get(vols: &FakeVolumes, id: &str) -> Vec<u8> {
    vols.mount(id).await.unwrap();
    let data = vols.read(id).unwrap();
    vols.unmount(id).await.unwrap();
    data
}

async fn volume(c: &Cluster, name: &str, gb: u64, node: &str) -> String {
    let client = c.client();
    let v = client
        .volume_create(&CreateVolumeRequest {
            name: name.into(),
            size_gb: gb,
            node: Some(node.into()),
            node_selector: Default::default(),
        })
        .await
        .unwrap();
    wait_volume(c, name, VolumeStatus::Available).await;
    v.id.to_string()
}

async fn wait_volume(c: &Cluster, name: &str, want: VolumeStatus) -> cloud_api::Volume {
    let client = c.client();
    wait_for(
        &format!("volume {name} {want}"),
        Duration::from_secs(15),
        || {
            let client = client.clone();
            async move {
                let v = client.volume_get(name).await.ok()?;
                (v.status == want).then_some(v)
            }
        },
    )
    .await
}

async fn wait_snapshot(c: &Cluster, name: &str, want: SnapshotStatus) -> cloud_api::Snapshot {
    let client = c.client();
    wait_for(
        &format!("snapshot {name} {want}"),
        Duration::from_secs(15),
        || {
            let client = client.clone();
            async move {
                let s = client.snapshot_get(name).await.ok()?;
                (s.status == want).then_some(s)
            }
        },
    )
    .await
}

async fn wait_gone<F, Fut, T>(what: &str, mut get: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    wait_for(what, Duration::from_secs(15), || {
        let f = get();
        async move {
            f.await
                .err()
                .filter(|e| e.status() == Some(404))
                .map(|_| ())
        }
    })
    .await;
}

async fn lifecycle(c: &Cluster) {
    let (_node, vols) = c.fake_volume_node("disk", 100).await;
    let client = c.client();
    let data = volume(c, "data", 10, "disk").await;
    put(&vols, &data, b"monday's bytes").await;

    // Take one: creating, then available, on the volume's node, sized like the volume.
    let s = client
        .snapshot_create(&snap("data", "monday"))
        .await
        .unwrap();
    assert_eq!(s.status, SnapshotStatus::Creating);
    assert_eq!(
        (s.node_name.as_deref(), s.volume_name.as_deref(), s.size_gb),
        (Some("disk"), Some("data"), 10)
    );
    let s = wait_snapshot(c, "monday", SnapshotStatus::Available).await;
    assert_eq!(vols.list_snapshots().await.unwrap().len(), 1);

    // Bad input and impossible requests change nothing.
    for (r, code, says) in [
        (snap("data", "Bad Name"), 422, "name"),
        (snap("data", "monday"), 409, "already exists"),
        (snap("ghost", "x"), 422, "volume_id"),
    ] {
        let (st, m) = status(client.snapshot_create(&r).await);
        assert_eq!(st, code, "{}: {m}", r.name);
        assert!(m.contains(says), "{}: {m}", r.name);
    }
    assert_eq!(client.snapshot_list().await.unwrap().len(), 1);

    // The volume moves on; a restore is a NEW volume with the snapshot's bytes, grown as asked.
    put(&vols, &data, b"tuesday's bytes").await;
    let r = client
        .snapshot_restore("monday", &restore("restored", Some(12)))
        .await
        .unwrap();
    assert_eq!(r.status, VolumeStatus::Creating);
    assert_eq!(r.source_snapshot_id, Some(s.id));
    assert_eq!(
        r.node_name.as_deref(),
        Some("disk"),
        "restores land on the snapshot's node"
    );
    let r = wait_volume(c, "restored", VolumeStatus::Available).await;
    assert_eq!(r.size_gb, 12);
    let rid = r.id.to_string();
    assert_eq!(vols.get(&rid).await.unwrap().size_bytes, 12 << 30);
    assert!(get(&vols, &rid).await.starts_with(b"monday's bytes"));
    assert!(
        get(&vols, &data).await.starts_with(b"tuesday's bytes"),
        "the source volume is untouched"
    );
    for (name, size, code, says) in [
        ("small", Some(5), 422, "size_gb"),
        ("restored", None, 409, "already exists"),
        ("Bad Name", None, 422, "name"),
        ("huge", Some(90), 409, "cannot hold"),
    ] {
        let (st, m) = status(
            client
                .snapshot_restore("monday", &restore(name, size))
                .await,
        );
        assert_eq!(st, code, "{name}: {m}");
        assert!(m.contains(says), "{name}: {m}");
    }
    let (st, _) = status(client.snapshot_restore("ghost", &restore("g", None)).await);
    assert_eq!(st, 404);
    assert_eq!(
        client.volume_list().await.unwrap().len(),
        2,
        "no half-made volume"
    );

    // `file` snapshots are copies: the source volume can go, the snapshot stays usable.
    client.volume_delete("data").await.unwrap();
    wait_gone("volume data gone", || client.volume_get("data")).await;
    let s = client.snapshot_get("monday").await.unwrap();
    assert_eq!((s.status, s.volume_name), (SnapshotStatus::Available, None));
    client
        .snapshot_restore("monday", &restore("again", None))
        .await
        .unwrap();
    let again = wait_volume(c, "again", VolumeStatus::Available).await;
    assert!(
        get(&vols, &again.id.to_string())
            .await
            .starts_with(b"monday's bytes")
    );

    // Delete: deleting, then gone, on the node too; idempotent while it goes.
    let d = client.snapshot_delete("monday").await.unwrap();
    assert_eq!(d.status, SnapshotStatus::Deleting);
    wait_gone("snapshot gone", || client.snapshot_get("monday")).await;
    assert!(
        vols.list_snapshots().await.unwrap().is_empty(),
        "deleted on the node"
    );
    let (st, _) = status(client.snapshot_delete("monday").await);
    assert_eq!(st, 404);
}

#[tokio::test]
async fn snapshot_lifecycle_on_sqlite() {
    let c = Cluster::start().await;
    lifecycle(&c).await;
}

#[tokio::test]
async fn snapshot_lifecycle_on_postgres() {
    let Some(url) = cloud_tests::postgres_scratch_url().await else {
        return;
    };
    let db = url.clone();
    let mut c = Cluster::start_with(move |cfg| cfg.database_url = Some(db)).await;
    lifecycle(&c).await;
    c.stop_scheduler().await;
    cloud_tests::postgres_drop(&url).await;
}

#[tokio::test]
async fn an_lvm_volume_with_snapshots_cannot_be_deleted_until_they_are() {
    let c = Cluster::start().await;
    let vols = FakeVolumes::lvm_like(100 << 30);
    let backend = Arc::new(vols.clone());
    let _node = c
        .fake_node_with("lvm", |cfg| cfg.volumes = Some(backend))
        .await;
    let client = c.client();
    wait_for("volume pool reported", Duration::from_secs(15), || {
        let client = client.clone();
        async move { client.node_get("lvm").await.ok()?.usage?.volume_pool }
    })
    .await;
    let id = volume(&c, "db", 5, "lvm").await;
    client
        .snapshot_create(&snap("db", "nightly"))
        .await
        .unwrap();
    wait_snapshot(&c, "nightly", SnapshotStatus::Available).await;

    let (st, m) = status(client.volume_delete("db").await);
    assert_eq!(st, 409, "{m}");
    assert!(
        m.contains("1 snapshot(s)") && m.contains("delete them first"),
        "{m}"
    );
    assert_eq!(
        client.volume_get("db").await.unwrap().status,
        VolumeStatus::Available,
        "the refusal changed nothing"
    );

    client.snapshot_delete("nightly").await.unwrap();
    wait_gone("snapshot gone", || client.snapshot_get("nightly")).await;
    client.volume_delete("db").await.unwrap();
    wait_gone("volume gone", || client.volume_get("db")).await;
    assert!(vols.get(&id).await.is_err());
}

#[tokio::test]
async fn a_snapshot_being_restored_from_cannot_be_deleted() {
    let c = Cluster::start().await;
    let (node, _vols) = c.fake_volume_node("disk", 100).await;
    let client = c.client();
    volume(&c, "data", 1, "disk").await;
    client.snapshot_create(&snap("data", "s1")).await.unwrap();
    wait_snapshot(&c, "s1", SnapshotStatus::Available).await;
    // The node's agent stops: a restore recorded now stays `creating`.
    node.agent.stop(Duration::from_secs(5)).await.unwrap();
    let v = client
        .snapshot_restore("s1", &restore("copy", None))
        .await
        .unwrap();
    assert_eq!(v.status, VolumeStatus::Creating);
    let (st, m) = status(client.snapshot_delete("s1").await);
    assert_eq!(st, 409, "{m}");
    assert!(m.contains("\"copy\" is being restored from it"), "{m}");
    assert_eq!(
        client.snapshot_get("s1").await.unwrap().status,
        SnapshotStatus::Available,
        "the refusal changed nothing"
    );
}
