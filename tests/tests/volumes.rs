//! Volumes through the public API with real schedulers and agents (fake container runtime and
//! in-memory volume backend): validation, node choice by pool capacity, the lifecycle
//! creating → available → deleting → gone, and orphans left alone. SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: fail fast with the message

use cloud_agent::storage::{FakeVolumes, VolumeBackend};
use cloud_api::{ClientError, CreateVolumeRequest, VolumeStatus};
use cloud_tests::{Cluster, wait_for};
use std::sync::Arc;
use std::time::Duration;

fn req(name: &str, size_gb: u64) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        size_gb,
        node: None,
        node_selector: Default::default(),
    }
}

fn status(r: Result<impl std::fmt::Debug, ClientError>) -> (u16, String) {
    match r {
        Err(e) => (e.status().unwrap_or(0), e.to_string()),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

async fn pooled_node(c: &Cluster, name: &str, gb: u64) -> (cloud_agent::AgentHandle, FakeVolumes) {
    let (node, volumes) = c.fake_volume_node(name, gb).await;
    (node.agent, volumes)
}

async fn pooled_node_rt(
    c: &Cluster,
    name: &str,
    gb: u64,
) -> (
    cloud_agent::AgentHandle,
    FakeVolumes,
    Arc<cloud_agent::FakeRuntime>,
) {
    let (node, volumes) = c.fake_volume_node(name, gb).await;
    (node.agent, volumes, node.runtime)
}

async fn lifecycle(c: &Cluster) {
    let (_big, vols) = pooled_node(c, "big", 100).await;
    let _plain = c.fake_node("plain").await;
    let client = c.client();

    let v = client.volume_create(&req("data", 10)).await.unwrap();
    assert_eq!(v.status, VolumeStatus::Creating);
    assert_eq!(v.node_name.as_deref(), Some("big"));
    let id = v.id.to_string();
    let v = wait_for("volume available", Duration::from_secs(15), || {
        let client = client.clone();
        async move {
            let v = client.volume_get("data").await.ok()?;
            (v.status == VolumeStatus::Available).then_some(v)
        }
    })
    .await;
    assert_eq!(v.size_gb, 10);
    assert_eq!(vols.get(&id).await.unwrap().size_bytes, 10 << 30);

    // Bad input and impossible requests change nothing.
    for (r, code, says) in [
        (req("zero", 0), 422, "size_gb"),
        (req("huge", 20_000), 422, "size_gb"),
        (req("Bad Name", 1), 422, "name"),
        (req("data", 1), 409, "already exists"),
        (req("toobig", 95), 409, "no node can hold 95 GB"),
        (
            CreateVolumeRequest {
                node: Some("plain".into()),
                ..req("pinned", 1)
            },
            409,
            "without a volume backend",
        ),
        (
            CreateVolumeRequest {
                node: Some("ghost".into()),
                ..req("pinned", 1)
            },
            422,
            "node",
        ),
        (
            CreateVolumeRequest {
                node_selector: [("zone".into(), "x".into())].into(),
                ..req("sel", 1)
            },
            409,
            "node_selector",
        ),
    ] {
        let (s, m) = status(client.volume_create(&r).await);
        assert_eq!(s, code, "{}: {m}", r.name);
        assert!(m.contains(says), "{}: {m}", r.name);
    }
    assert_eq!(
        client.volume_list().await.unwrap().len(),
        1,
        "no half-made volume"
    );

    // Grow only; the node grows the disk.
    let g = client.volume_resize("data", 12).await.unwrap();
    assert_eq!(g.size_gb, 12);
    wait_for("volume grown on the node", Duration::from_secs(15), || {
        let (vols, id) = (vols.clone(), id.clone());
        async move { (vols.get(&id).await.ok()?.size_bytes == 12 << 30).then_some(()) }
    })
    .await;
    for (gb, code, says) in [
        (12, 422, "only grow"),
        (8, 422, "only grow"),
        (500, 409, "cannot hold"),
    ] {
        let (s, m) = status(client.volume_resize("data", gb).await);
        assert_eq!(s, code, "{gb}: {m}");
        assert!(m.contains(says), "{gb}: {m}");
    }
    assert_eq!(
        client.volume_get("data").await.unwrap().size_gb,
        12,
        "refusals changed nothing"
    );

    // An orphan (on the node, unknown to the scheduler) is left alone.
    let orphan = uuid::Uuid::now_v7().to_string();
    vols.create(&orphan, 1 << 30).await.unwrap();

    // Delete: deleting, then gone; the node's backend no longer has it.
    let d = client.volume_delete("data").await.unwrap();
    assert_eq!(d.status, VolumeStatus::Deleting);
    wait_for("volume gone", Duration::from_secs(15), || {
        let client = client.clone();
        async move {
            client
                .volume_get("data")
                .await
                .err()
                .filter(|e| e.status() == Some(404))
                .map(|_| ())
        }
    })
    .await;
    assert!(vols.get(&id).await.is_err(), "deleted on the node");
    assert!(
        vols.get(&orphan).await.is_ok(),
        "the orphan was not deleted"
    );
    let (s, _) = status(client.volume_delete("data").await);
    assert_eq!(s, 404);
}

#[tokio::test]
async fn volume_lifecycle_on_sqlite() {
    let c = Cluster::start().await;
    lifecycle(&c).await;
}

#[tokio::test]
async fn volume_lifecycle_on_postgres() {
    let Some(url) = cloud_tests::postgres_scratch_url().await else {
        return;
    };
    let db = url.clone();
    let mut c = Cluster::start_with(move |cfg| cfg.database_url = Some(db)).await;
    lifecycle(&c).await;
    c.stop_scheduler().await;
    cloud_tests::postgres_drop(&url).await;
}

async fn wait_volume(c: &Cluster, name: &str, want: VolumeStatus) -> cloud_api::Volume {
    let client = c.client();
    let n = name.to_string();
    wait_for(
        &format!("volume {name} {want}"),
        Duration::from_secs(15),
        || {
            let (client, n) = (client.clone(), n.clone());
            async move {
                let v = client.volume_get(&n).await.ok()?;
                (v.status == want).then_some(v)
            }
        },
    )
    .await
}

#[tokio::test]
async fn instances_mount_volumes_on_their_node_and_data_outlives_them() {
    let c = Cluster::start().await;
    let (_a, vols, rt) = pooled_node_rt(&c, "disk-node", 100).await;
    let (_b, _other, _) = pooled_node_rt(&c, "other-node", 100).await;
    let client = c.client();
    client
        .volume_create(&CreateVolumeRequest {
            node: Some("disk-node".into()),
            ..req("data", 5)
        })
        .await
        .unwrap();
    let v = wait_volume(&c, "data", VolumeStatus::Available).await;
    vols.mount(&v.id.to_string()).await.unwrap();
    vols.write(&v.id.to_string(), b"kept across instances")
        .unwrap();

    let with = |name: &str, mounts: &[(&str, &str)]| cloud_api::CreateInstanceRequest {
        volumes: mounts
            .iter()
            .map(|(v, p)| cloud_api::VolumeMount {
                volume: v.to_string(),
                mount_path: p.to_string(),
            })
            .collect(),
        ..cloud_tests::busybox(name, &["sleep", "1000"])
    };
    // Bad mounts change nothing.
    for (m, code, says) in [
        (vec![("data", "data")], 422, "volumes[0].mount_path"),
        (vec![("data", "/a:b")], 422, "volumes[0].mount_path"),
        (vec![("ghost", "/data")], 422, "volumes[0].volume"),
        (vec![("data", "/x"), ("data", "/y")], 422, "listed twice"),
    ] {
        let (s, msg) = status(client.instance_create(&with("bad", &m)).await);
        assert_eq!(s, code, "{m:?}: {msg}");
        assert!(msg.contains(says), "{m:?}: {msg}");
    }
    assert!(client.instance_list().await.unwrap().is_empty());

    // The instance follows its volume to its node, and the container gets the bind mount.
    let i = client
        .instance_create(&with("db", &[("data", "/data")]))
        .await
        .unwrap();
    assert_eq!(i.node_name.as_deref(), Some("disk-node"));
    c.wait_instance("db", cloud_api::InstanceStatus::Running)
        .await;
    let spec = rt.spec_of(&i.id.to_string()).expect("container");
    assert!(
        spec.binds.iter().any(|b| b.ends_with(":/data")),
        "{:?}",
        spec.binds
    );
    let v = wait_volume(&c, "data", VolumeStatus::InUse).await;
    assert_eq!(v.instance_id, Some(i.id));
    assert_eq!(v.mount_path.as_deref(), Some("/data"));
    let shown = client.instance_get("db").await.unwrap();
    assert_eq!(shown.volumes.len(), 1, "{shown:?}");
    assert_eq!(shown.volumes[0].mount_path, "/data");

    // Mounted: no second user, no deletion.
    let (s, msg) = status(
        client
            .instance_create(&with("db2", &[("data", "/data")]))
            .await,
    );
    assert_eq!(s, 409, "{msg}");
    let (s, msg) = status(client.volume_delete("data").await);
    assert_eq!(s, 409, "{msg}");
    assert!(msg.contains("mounted in instance"), "{msg}");

    // The instance goes; the volume and its bytes stay and serve the next instance.
    client.instance_delete("db").await.unwrap();
    c.wait_instance_gone("db").await;
    let v = wait_volume(&c, "data", VolumeStatus::Available).await;
    assert_eq!(v.instance_id, None);
    // No container uses it any more: its node unmounts it.
    let vid = v.id.to_string();
    wait_for(
        "volume unmounted on its node",
        Duration::from_secs(15),
        || {
            let (vols, vid) = (vols.clone(), vid.clone());
            async move { (!vols.mounted(&vid).await.ok()?).then_some(()) }
        },
    )
    .await;
    vols.mount(&vid).await.unwrap();
    assert_eq!(vols.read(&vid).unwrap(), b"kept across instances");
    vols.unmount(&vid).await.unwrap();
    client
        .instance_create(&with("db3", &[("data", "/srv")]))
        .await
        .unwrap();
    c.wait_instance("db3", cloud_api::InstanceStatus::Running)
        .await;
    wait_volume(&c, "data", VolumeStatus::InUse).await;

    // Detach from a running instance: its container is recreated without the mount, under the
    // same instance id; then attach it to another running instance of that node.
    let db3 = client.instance_get("db3").await.unwrap();
    let before = db3.runtime_id.clone();
    let d = client.volume_detach("data").await.unwrap();
    assert_eq!(d.status, VolumeStatus::Detaching);
    wait_volume(&c, "data", VolumeStatus::Available).await;
    let db3 = wait_for("db3 recreated and running", Duration::from_secs(15), || {
        let (client, before) = (client.clone(), before.clone());
        async move {
            let i = client.instance_get("db3").await.ok()?;
            let recreated = i.runtime_id.is_some() && i.runtime_id != before;
            (i.status == cloud_api::InstanceStatus::Running && recreated).then_some(i)
        }
    })
    .await;
    assert!(rt.spec_of(&db3.id.to_string()).unwrap().binds.is_empty());
    assert!(client.instance_get("db3").await.unwrap().volumes.is_empty());

    let plain = client
        .instance_create(&cloud_tests::busybox("plain", &["sleep", "1000"]))
        .await
        .unwrap();
    let plain = c
        .wait_instance(&plain.name, cloud_api::InstanceStatus::Running)
        .await;
    if plain.node_name.as_deref() != Some("disk-node") {
        let (s, msg) = status(client.volume_attach("data", "plain", "/data").await);
        assert_eq!(s, 409, "{msg}");
        assert!(msg.contains("another node"), "{msg}");
    }
    for path in ["rel", "/a:b"] {
        let (s, msg) = status(client.volume_attach("data", "db3", path).await);
        assert_eq!(s, 422, "{path}: {msg}");
    }
    let a = client
        .volume_attach("data", "db3", "/mnt/data")
        .await
        .unwrap();
    assert_eq!(a.status, VolumeStatus::Attaching);
    assert!(
        a.status_reason.unwrap_or_default().contains("restarts"),
        "the API says so"
    );
    let v = wait_volume(&c, "data", VolumeStatus::InUse).await;
    assert_eq!(v.instance_id, Some(db3.id));
    let db3 = c
        .wait_instance("db3", cloud_api::InstanceStatus::Running)
        .await;
    let binds = rt.spec_of(&db3.id.to_string()).unwrap().binds;
    assert!(binds.iter().any(|b| b.ends_with(":/mnt/data")), "{binds:?}");
    let (s, msg) = status(client.volume_attach("data", "db3", "/other").await);
    assert_eq!(s, 409, "{msg}");
}

#[tokio::test]
async fn an_agent_restart_keeps_mounted_volumes_in_place() {
    let c = Cluster::start().await;
    let runtime = Arc::new(cloud_agent::FakeRuntime::with_images([
        "local/busybox:latest",
    ]));
    let vols = FakeVolumes::new(50 << 30);
    let config = || {
        let mut cfg = c.agent_config("disk");
        cfg.volumes = Some(Arc::new(vols.clone()));
        cfg
    };
    let agent = cloud_agent::start(config(), runtime.clone()).await.unwrap();
    c.wait_node_ready("disk").await;
    let client = c.client();
    wait_for("pool reported", Duration::from_secs(15), || {
        let client = client.clone();
        async move { client.node_get("disk").await.ok()?.usage?.volume_pool }
    })
    .await;
    client.volume_create(&req("data", 1)).await.unwrap();
    wait_volume(&c, "data", VolumeStatus::Available).await;
    let i = client
        .instance_create(&cloud_api::CreateInstanceRequest {
            volumes: vec![cloud_api::VolumeMount {
                volume: "data".into(),
                mount_path: "/data".into(),
            }],
            ..cloud_tests::busybox("db", &["sleep", "1000"])
        })
        .await
        .unwrap();
    let before = c
        .wait_instance(&i.name, cloud_api::InstanceStatus::Running)
        .await;
    wait_volume(&c, "data", VolumeStatus::InUse).await;

    // The agent crashes and comes back over the same host (runtime and volumes).
    agent.abort();
    let agent = cloud_agent::start(config(), runtime.clone()).await.unwrap();
    c.wait_node_ready("disk").await;
    // Proof that the new agent has reconciled: a new instance on the node comes up. Then the
    // old container must still be the one it adopted, not a recreated one.
    client
        .instance_create(&cloud_tests::busybox("probe", &["sleep", "1000"]))
        .await
        .unwrap();
    c.wait_instance("probe", cloud_api::InstanceStatus::Running)
        .await;
    let after = client.instance_get("db").await.unwrap();
    assert_eq!(after.status, cloud_api::InstanceStatus::Running);
    assert_eq!(
        after.runtime_id, before.runtime_id,
        "container adopted, not recreated"
    );
    assert_eq!(
        runtime.container_count(),
        2,
        "db's and probe's containers only"
    );
    let v = client.volume_get("data").await.unwrap();
    assert_eq!(v.status, VolumeStatus::InUse);
    assert_eq!(v.instance_id, Some(i.id));
    agent.abort();
}
