//! Snapshots, restores, growth and a simulated host reboot end to end with real parts:
//! scheduler + real agent on real dockerd with the `file` backend.
//!
//! - a snapshot of a volume in use, then new bytes, then a restore into a new volume: the new
//!   volume has the old bytes, the source keeps the new ones;
//! - growing a volume grows its ext4 filesystem (online where the kernel lets the agent, else
//!   when it is next mounted: after a detach and attach here);
//! - a "reboot" (agent gone, container stopped, volume unmounted): the restarted agent mounts
//!   the volume again and starts the same container, which sees its data.
//!
//! Needs root and Docker; skips with a reason otherwise, unless THECLOUD_REQUIRE_DOCKER=1 /
//! THECLOUD_REQUIRE_STORAGE=1 (CI).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: fail fast with the message

use cloud_api::{
    CreateInstanceRequest, CreateSnapshotRequest, CreateVolumeRequest, InstanceStatus,
    RestoreSnapshotRequest, SnapshotStatus, VolumeMount, VolumeStatus,
};
use cloud_tests::storage_e2e::{DiskNode, exec, root};
use cloud_tests::{Cluster, busybox, docker_available, wait_for};
use std::process::Command;
use std::time::Duration;

fn launch(name: &str, volume: &str, path: &str) -> CreateInstanceRequest {
    CreateInstanceRequest {
        volumes: vec![VolumeMount {
            volume: volume.into(),
            mount_path: path.into(),
        }],
        ..busybox(name, &["sleep", "100000"])
    }
}

async fn wait_volume(c: &Cluster, name: &str, ok: fn(&cloud_api::Volume) -> bool) {
    let client = c.client();
    wait_for(&format!("volume {name}"), Duration::from_secs(60), || {
        let client = client.clone();
        async move { ok(&client.volume_get(name).await.ok()?).then_some(()) }
    })
    .await;
}

/// KiB of the filesystem at `path` in the container.
fn fs_kib(container: &str, path: &str) -> u64 {
    exec(container, &format!("df -k {path} | tail -1"))
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Waits until the instance runs in a container other than `old` (recreated for a mount
/// change); its container id.
async fn recreated(c: &Cluster, name: &str, old: &str) -> String {
    let client = c.client();
    wait_for(
        &format!("{name} recreated"),
        Duration::from_secs(60),
        || {
            let client = client.clone();
            async move {
                let i = client.instance_get(name).await.ok()?;
                let id = i.runtime_id.filter(|id| id != old)?;
                (i.status == InstanceStatus::Running).then_some(id)
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_restore_growth_and_reboot_with_real_volumes() {
    if !docker_available().await || !root() {
        return;
    }
    let c = Cluster::start().await;
    let mut node = DiskNode::start(&c, "disk").await;
    let client = c.client();
    client
        .volume_create(&CreateVolumeRequest {
            name: "db".into(),
            size_gb: 1,
            node: None,
            node_selector: Default::default(),
        })
        .await
        .unwrap();
    wait_volume(&c, "db", |v| v.status == VolumeStatus::Available).await;
    client
        .instance_create(&launch("app", "db", "/data"))
        .await
        .unwrap();
    let app = c.wait_instance("app", InstanceStatus::Running).await;
    let cid = app.runtime_id.unwrap();
    exec(&cid, "echo monday > /data/f && sync");

    // Snapshot while in use (the filesystem is frozen for the copy), then new bytes.
    client
        .snapshot_create(&CreateSnapshotRequest {
            volume_id: "db".into(),
            name: "monday".into(),
        })
        .await
        .unwrap();
    wait_for("snapshot taken", Duration::from_secs(60), || {
        let client = client.clone();
        async move {
            (client.snapshot_get("monday").await.ok()?.status == SnapshotStatus::Available)
                .then_some(())
        }
    })
    .await;
    exec(&cid, "echo tuesday > /data/f && sync");
    assert_eq!(
        exec(&cid, "cat /data/f"),
        "tuesday",
        "the container still writes"
    );

    // Restore into a new volume and read it from another instance.
    client
        .snapshot_restore(
            "monday",
            &RestoreSnapshotRequest {
                name: "db-monday".into(),
                size_gb: None,
            },
        )
        .await
        .unwrap();
    wait_volume(&c, "db-monday", |v| v.status == VolumeStatus::Available).await;
    client
        .instance_create(&launch("auditor", "db-monday", "/old"))
        .await
        .unwrap();
    let auditor = c.wait_instance("auditor", InstanceStatus::Running).await;
    assert_eq!(
        exec(auditor.runtime_id.as_deref().unwrap(), "cat /old/f"),
        "monday"
    );
    assert_eq!(
        exec(&cid, "cat /data/f"),
        "tuesday",
        "the source is untouched"
    );

    // Grow: 1 → 2 GB. Online when the kernel lets the agent; otherwise at the next mount.
    let before = fs_kib(&cid, "/data");
    assert!((900_000..1_100_000).contains(&before), "{before} KiB");
    client.volume_resize("db", 2).await.unwrap();
    wait_volume(&c, "db", |v| {
        v.size_gb == 2 && v.status == VolumeStatus::InUse
    })
    .await;
    let online = fs_kib(&cid, "/data");
    eprintln!("filesystem after an online resize: {online} KiB (before {before} KiB)");
    client.volume_detach("db").await.unwrap();
    let cid2 = recreated(&c, "app", &cid).await;
    wait_volume(&c, "db", |v| v.status == VolumeStatus::Available).await;
    client.volume_attach("db", "app", "/data").await.unwrap();
    let cid3 = recreated(&c, "app", &cid2).await;
    let after = fs_kib(&cid3, "/data");
    assert!(after > 1_900_000, "the filesystem grew: {after} KiB");
    assert_eq!(
        exec(&cid3, "cat /data/f"),
        "tuesday",
        "bytes kept across growth"
    );

    // A "reboot": the agent goes, the container stops, the volume's mount is gone.
    node.agent.abort();
    let vol = client.volume_get("db").await.unwrap();
    let out = Command::new("docker")
        .args(["stop", "-t", "1", &cid3])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mountpoint = node
        .config
        .data_dir
        .join("volumes")
        .join(vol.id.to_string());
    let out = Command::new("umount").arg(&mountpoint).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    node.agent = DiskNode::run(&node.config).await;
    let back = wait_for("app running again", Duration::from_secs(60), || {
        let (client, cid3) = (client.clone(), cid3.clone());
        async move {
            let i = client.instance_get("app").await.ok()?;
            let running = exec(&cid3, "cat /data/f") == "tuesday";
            (i.status == InstanceStatus::Running && running).then_some(i)
        }
    })
    .await;
    assert_eq!(
        back.runtime_id.as_deref(),
        Some(cid3.as_str()),
        "the same container"
    );
    node.agent.abort();
}
