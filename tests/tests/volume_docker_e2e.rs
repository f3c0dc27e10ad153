//! Volumes end to end with real parts: scheduler + real agent on real dockerd with the `file`
//! backend (sparse image, ext4, loop mount, bind mount into the container). Data written by one
//! instance survives it and is read by the next; two volumes never see each other's files.
//!
//! Needs root (loop devices, mount) and Docker; skips with a reason otherwise, unless
//! THECLOUD_REQUIRE_DOCKER=1 / THECLOUD_REQUIRE_STORAGE=1 (CI).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: fail fast with the message

use cloud_api::{
    CreateInstanceRequest, CreateVolumeRequest, InstanceStatus, VolumeMount, VolumeStatus,
};
use cloud_tests::storage_e2e::{DiskNode, exec, root};
use cloud_tests::{Cluster, busybox, docker_available, wait_for};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_on_a_volume_outlives_its_instance() {
    if !docker_available().await || !root() {
        return;
    }
    let c = Cluster::start().await;
    let node = DiskNode::start(&c, "disk").await;
    let client = c.client();

    for name in ["data", "other"] {
        client
            .volume_create(&CreateVolumeRequest {
                name: name.into(),
                size_gb: 1,
                node: None,
                node_selector: Default::default(),
            })
            .await
            .unwrap();
    }
    for name in ["data", "other"] {
        let n = name.to_string();
        wait_for("volume available", Duration::from_secs(30), || {
            let (client, n) = (client.clone(), n.clone());
            async move {
                (client.volume_get(&n).await.ok()?.status == VolumeStatus::Available).then_some(())
            }
        })
        .await;
    }
    let launch = |name: &str, volume: &str, path: &str| CreateInstanceRequest {
        volumes: vec![VolumeMount {
            volume: volume.into(),
            mount_path: path.into(),
        }],
        ..busybox(name, &["sleep", "100000"])
    };

    let w = client
        .instance_create(&launch("writer", "data", "/data"))
        .await
        .unwrap();
    let w = c.wait_instance(&w.name, InstanceStatus::Running).await;
    let cw = w.runtime_id.clone().unwrap();
    exec(&cw, "echo written-by-writer > /data/f && sync");
    assert_eq!(exec(&cw, "cat /data/f"), "written-by-writer");
    assert!(
        exec(&cw, "mount | grep ' /data '").contains("ext4"),
        "an ext4 volume at /data"
    );

    // Another volume in another instance: empty, and it does not see the first one's file.
    let o = client
        .instance_create(&launch("stranger", "other", "/data"))
        .await
        .unwrap();
    let o = c.wait_instance(&o.name, InstanceStatus::Running).await;
    assert_eq!(
        exec(
            o.runtime_id.as_deref().unwrap(),
            "cat /data/f 2>/dev/null || echo absent"
        ),
        "absent"
    );

    // The writer goes; a new instance mounts the same volume elsewhere and reads the bytes.
    client.instance_delete("writer").await.unwrap();
    c.wait_instance_gone("writer").await;
    let r = client
        .instance_create(&launch("reader", "data", "/srv"))
        .await
        .unwrap();
    let r = c.wait_instance(&r.name, InstanceStatus::Running).await;
    assert_eq!(
        exec(r.runtime_id.as_deref().unwrap(), "cat /srv/f"),
        "written-by-writer"
    );

    for n in ["reader", "stranger"] {
        client.instance_delete(n).await.unwrap();
        c.wait_instance_gone(n).await;
    }
    for n in ["data", "other"] {
        wait_for("volume free", Duration::from_secs(15), || {
            let (client, n) = (client.clone(), n.to_string());
            async move {
                (client.volume_get(&n).await.ok()?.status == VolumeStatus::Available).then_some(())
            }
        })
        .await;
        client.volume_delete(n).await.unwrap();
    }
    wait_for("volumes deleted", Duration::from_secs(30), || {
        let client = client.clone();
        async move { client.volume_list().await.ok()?.is_empty().then_some(()) }
    })
    .await;
    node.agent.abort();
}
