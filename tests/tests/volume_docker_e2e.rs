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
use cloud_tests::{Cluster, busybox, docker_available, wait_for};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

fn root() -> bool {
    let ok = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    if !ok {
        if std::env::var("THECLOUD_REQUIRE_STORAGE").as_deref() == Ok("1") {
            panic!("THECLOUD_REQUIRE_STORAGE=1 but not root (loop mounts need root)");
        }
        eprintln!("skipping: volume end-to-end tests need root (loop devices, mount)");
    }
    ok
}

/// Removes the node's containers, then unmounts its volumes, pass or fail.
struct Cleanup {
    node: String,
    mounts: std::path::PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let out = Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=thecloud.node-id={}", self.node),
            ])
            .output();
        if let Ok(out) = out {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("docker").args(["rm", "-f", id]).output();
            }
        }
        for e in std::fs::read_dir(&self.mounts)
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = Command::new("umount").arg(e.path()).output();
        }
    }
}

fn exec(container: &str, script: &str) -> String {
    let o = Command::new("docker")
        .args(["exec", container, "sh", "-c", script])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_on_a_volume_outlives_its_instance() {
    if !docker_available().await || !root() {
        return;
    }
    let c = Cluster::start().await;
    let runtime = Arc::new(cloud_agent::DockerRuntime::connect(None).await.unwrap());
    let mut cfg = c.agent_config("disk");
    let backend = cloud_agent::storage::FileBackend::new(
        cloud_agent::storage::FileBackendConfig::under(&cfg.data_dir),
    )
    .unwrap();
    cfg.volumes = Some(Arc::new(backend));
    let agent = cloud_agent::start(cfg.clone(), runtime).await.unwrap();
    let _cleanup = Cleanup {
        node: agent.node_id().to_string(),
        mounts: cfg.data_dir.join("volumes"),
    };
    c.wait_node_ready("disk").await;
    let client = c.client();
    wait_for("pool reported", Duration::from_secs(15), || {
        let client = client.clone();
        async move { client.node_get("disk").await.ok()?.usage?.volume_pool }
    })
    .await;

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
    agent.abort();
}
