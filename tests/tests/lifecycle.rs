//! Instance and node lifecycle end to end with the real scheduler and the real agent code over
//! the in-memory fake runtime: placement, start/stop/delete, node failure and return, fencing,
//! scheduler restart, failures surfaced as `failed` with a reason.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: fail fast with the message

use cloud_api::{InstanceStatus, NodeStatus, RestartPolicy, RunState};
use cloud_tests::{Cluster, busybox, wait_for};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn launch_stop_start_delete() {
    let c = Cluster::start().await;
    let node = c.fake_node("node-1").await;
    let client = c.client();
    let created = client
        .instance_create(&busybox("web", &["sh", "-c", "echo hi"]))
        .await
        .unwrap();
    assert_eq!(created.status, InstanceStatus::Scheduled);
    assert_eq!(created.node_name.as_deref(), Some("node-1"));
    let running = c.wait_instance("web", InstanceStatus::Running).await;
    let container = node
        .runtime
        .container_of(&created.id.to_string())
        .expect("container exists");
    assert_eq!(running.runtime_id.as_deref(), Some(container.id.as_str()));
    assert_eq!(
        container.label("thecloud.instance-id"),
        Some(created.id.to_string().as_str())
    );
    assert_eq!(
        container.label("thecloud.node-id"),
        Some(node.agent.node_id())
    );
    assert!(running.started_at.is_some());

    let n = client.node_get("node-1").await.unwrap();
    assert_eq!((n.allocated.cpu_millis, n.allocated.memory_mb), (250, 64));

    // Telemetry: host usage on the node, per-instance usage on the instance.
    node.runtime.set_stats(
        &created.id.to_string(),
        cloud_agent::runtime::ContainerStats {
            cpu_percent: 12.5,
            memory_used_bytes: 3 << 20,
            memory_limit_bytes: 64 << 20,
        },
    );
    let usage = wait_for("instance usage", Duration::from_secs(10), || {
        let client = client.clone();
        async move {
            // The fake reports its default stats until `set_stats` lands, so
            // wait for the values we set rather than the first report.
            client
                .instance_get("web")
                .await
                .ok()?
                .usage
                .filter(|u| u.cpu_percent == 12.5)
        }
    })
    .await;
    assert_eq!(
        (
            usage.cpu_percent,
            usage.memory_used_bytes,
            usage.memory_limit_bytes
        ),
        (12.5, 3 << 20, 64 << 20)
    );
    let host = client
        .node_get("node-1")
        .await
        .unwrap()
        .usage
        .expect("host usage reported");
    assert!(host.memory_total_mb > 0, "{host:?}");

    let stopping = client.instance_stop("web").await.unwrap();
    assert_eq!(stopping.desired_state, RunState::Stopped);
    c.wait_instance("web", InstanceStatus::Stopped).await;
    assert_ne!(
        node.runtime
            .container_of(&created.id.to_string())
            .unwrap()
            .status,
        cloud_agent::runtime::ContainerStatus::Running
    );
    // Idempotent.
    client.instance_stop("web").await.unwrap();

    client
        .instance_start(&created.id.to_string())
        .await
        .unwrap();
    c.wait_instance("web", InstanceStatus::Running).await;

    let deleting = client.instance_delete("web").await.unwrap();
    assert_eq!(deleting.status, InstanceStatus::Deleting);
    c.wait_instance_gone("web").await;
    wait_for("container removed", Duration::from_secs(10), || async {
        node.runtime
            .container_of(&created.id.to_string())
            .is_none()
            .then_some(())
    })
    .await;
    assert_eq!(
        client
            .node_get("node-1")
            .await
            .unwrap()
            .allocated
            .cpu_millis,
        0
    );
}

#[tokio::test]
async fn failures_surface_with_a_reason() {
    let c = Cluster::start().await;
    let node = c.fake_node("node-1").await;
    node.runtime.add_missing_executable("nosuchcmd");
    let client = c.client();

    let mut missing = busybox("no-image", &["true"]);
    missing.image = "local/does-not-exist:1".into();
    client.instance_create(&missing).await.unwrap();
    let failed = c.wait_instance("no-image", InstanceStatus::Failed).await;
    let reason = failed.status_reason.unwrap();
    assert!(reason.contains("local/does-not-exist:1"), "{reason}");

    client
        .instance_create(&busybox("bad-cmd", &["nosuchcmd"]))
        .await
        .unwrap();
    let failed = c.wait_instance("bad-cmd", InstanceStatus::Failed).await;
    assert!(failed.status_reason.unwrap().contains("nosuchcmd"));

    let mut once = busybox("once", &["sh", "-c", "exit 3"]);
    once.restart_policy = RestartPolicy::Never;
    let once = client.instance_create(&once).await.unwrap();
    c.wait_instance("once", InstanceStatus::Running).await;
    node.runtime.exit(&once.id.to_string(), 3);
    let exited = c.wait_instance("once", InstanceStatus::Failed).await;
    assert_eq!(exited.exit_code, Some(3));
    assert!(exited.status_reason.unwrap().contains("exited with code 3"));
    // It is not restarted behind the user's back...
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        client.instance_get("once").await.unwrap().status,
        InstanceStatus::Failed
    );
    // ...but `start` retries it.
    client.instance_start("once").await.unwrap();
    c.wait_instance("once", InstanceStatus::Running).await;
}

#[tokio::test]
async fn a_silent_node_goes_down_and_its_agent_readopts_on_return() {
    let c = Cluster::start().await;
    let node = c.fake_node("node-1").await;
    let client = c.client();
    let keep = client
        .instance_create(&busybox("keep", &["sleep", "1000"]))
        .await
        .unwrap();
    let drop_me = client
        .instance_create(&busybox("drop-me", &["sleep", "1000"]))
        .await
        .unwrap();
    c.wait_instance("keep", InstanceStatus::Running).await;
    c.wait_instance("drop-me", InstanceStatus::Running).await;
    let container_before = node.runtime.container_of(&keep.id.to_string()).unwrap();

    // Kill the agent: the workloads keep running, the node goes silent.
    let runtime = node.runtime.clone();
    node.agent.abort();
    wait_for("node down", Duration::from_secs(15), || async {
        let n = client.node_get("node-1").await.ok()?;
        (n.status == NodeStatus::Down).then_some(())
    })
    .await;
    let lost = c.wait_instance("keep", InstanceStatus::Lost).await;
    assert!(lost.status_reason.unwrap().contains("heartbeat"));
    assert!(
        runtime.container_of(&keep.id.to_string()).unwrap().status
            == cloud_agent::runtime::ContainerStatus::Running,
        "the agent's death stops nothing"
    );

    // Deleting while the node is down is immediate; the returning agent must remove it
    // (fencing: it is no longer in its desired state).
    client.instance_delete("drop-me").await.unwrap();
    c.wait_instance_gone("drop-me").await;

    let agent = c.start_agent("node-1", runtime.clone()).await;
    let back = c.wait_instance("keep", InstanceStatus::Running).await;
    let container_after = runtime.container_of(&keep.id.to_string()).unwrap();
    assert_eq!(
        container_after.id, container_before.id,
        "re-adopted, not recreated"
    );
    assert_eq!(
        container_after.started_at_unix_ms, container_before.started_at_unix_ms,
        "not restarted"
    );
    assert_eq!(
        back.runtime_id.as_deref(),
        Some(container_before.id.as_str())
    );
    wait_for(
        "fenced container removed",
        Duration::from_secs(10),
        || async {
            runtime
                .container_of(&drop_me.id.to_string())
                .is_none()
                .then_some(())
        },
    )
    .await;
    agent.abort();
}

#[tokio::test]
async fn scheduler_restart_keeps_state_and_agents_reconnect() {
    let mut c = Cluster::start().await;
    let node = c.fake_node("node-1").await;
    let client = c.client();
    let created = client
        .instance_create(&busybox("web", &["sleep", "1000"]))
        .await
        .unwrap();
    c.wait_instance("web", InstanceStatus::Running).await;
    let key = c.admin_key();

    c.stop_scheduler().await;
    c.start_scheduler().await;
    assert_eq!(c.admin_key(), key, "the admin key survives restarts");
    c.wait_node_ready("node-1").await;
    let client = c.client();
    let after = client.instance_get("web").await.unwrap();
    assert_eq!(after.id, created.id);
    assert_eq!(after.status, InstanceStatus::Running);
    assert_eq!(node.runtime.containers().len(), 1, "nothing was recreated");

    // And the platform keeps working.
    client
        .instance_create(&busybox("web2", &["sleep", "1000"]))
        .await
        .unwrap();
    c.wait_instance("web2", InstanceStatus::Running).await;
    assert_eq!(node.runtime.containers().len(), 2);
}

#[tokio::test]
async fn agents_only_touch_their_own_containers() {
    let c = Cluster::start().await;
    // Two agents share one runtime, as several agents share one dockerd in tests.
    let shared = Arc::new(cloud_agent::FakeRuntime::with_images([
        "local/busybox:latest",
    ]));
    let a = c.start_agent("node-a", shared.clone()).await;
    let b = c.start_agent("node-b", shared.clone()).await;
    let client = c.client();
    // 1500m each on 4000m nodes: bin-packing must use both nodes.
    for i in 0..4 {
        let mut req = busybox(&format!("w{i}"), &["sleep", "1000"]);
        req.cpu_millis = 1500;
        client.instance_create(&req).await.unwrap();
    }
    for i in 0..4 {
        c.wait_instance(&format!("w{i}"), InstanceStatus::Running)
            .await;
    }
    let on_a: Vec<_> = shared
        .containers()
        .into_iter()
        .filter(|ct| ct.label("thecloud.node-id") == Some(a.node_id()))
        .collect();
    let on_b: Vec<_> = shared
        .containers()
        .into_iter()
        .filter(|ct| ct.label("thecloud.node-id") == Some(b.node_id()))
        .collect();
    assert_eq!((on_a.len(), on_b.len()), (2, 2));
    // Deleting everything on one node leaves the other node's containers alone.
    for inst in client.instance_list().await.unwrap() {
        if inst.node_name.as_deref() == Some("node-a") {
            client.instance_delete(&inst.name).await.unwrap();
            c.wait_instance_gone(&inst.name).await;
        }
    }
    wait_for("node-a emptied", Duration::from_secs(10), || async {
        (shared.containers().len() == on_b.len()).then_some(())
    })
    .await;
    assert!(
        shared
            .containers()
            .iter()
            .all(|ct| ct.label("thecloud.node-id") == Some(b.node_id()))
    );
}

#[tokio::test]
async fn the_platform_runs_on_postgresql_and_survives_a_restart() {
    let Some(url) = cloud_tests::postgres_scratch_url().await else {
        return;
    };
    let db = url.clone();
    let mut c = Cluster::start_with(move |cfg| cfg.database_url = Some(db)).await;
    assert_eq!(c.running().app.store.driver_name(), "postgres");
    let node = c.fake_node("pg-node").await;
    let client = c.client();
    let created = client
        .instance_create(&busybox("web", &["sleep", "1000"]))
        .await
        .unwrap();
    c.wait_instance("web", InstanceStatus::Running).await;
    client.instance_stop("web").await.unwrap();
    c.wait_instance("web", InstanceStatus::Stopped).await;

    c.stop_scheduler().await;
    c.start_scheduler().await;
    c.wait_node_ready("pg-node").await;
    let client = c.client();
    assert_eq!(client.instance_get("web").await.unwrap().id, created.id);
    client.instance_start("web").await.unwrap();
    c.wait_instance("web", InstanceStatus::Running).await;
    client.instance_delete("web").await.unwrap();
    c.wait_instance_gone("web").await;
    assert!(node.runtime.containers().is_empty());
    node.agent.abort();
    c.stop_scheduler().await;
    cloud_tests::postgres_drop(&url).await;
}

#[tokio::test]
async fn a_node_advertises_docker_only_while_its_runtime_answers() {
    let c = Cluster::start().await;
    let runtime = Arc::new(cloud_agent::FakeRuntime::with_images([
        "local/busybox:latest",
    ]));
    runtime.set_unavailable(true);
    let mut cfg = c.agent_config("flaky");
    cfg.session.facts_recheck = Duration::from_millis(300);
    cfg.capacity_override.cpu_millis = Some(2000);
    cfg.capacity_override.memory_mb = Some(2048);
    let agent = cloud_agent::start(cfg, runtime.clone()).await.unwrap();
    c.wait_node_ready("flaky").await;
    let client = c.client();
    assert!(client.node_get("flaky").await.unwrap().drivers.is_empty());
    let err = client
        .instance_create(&busybox("early", &["sleep", "1"]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("driver"), "{err}");

    runtime.set_unavailable(false);
    wait_for("docker advertised", Duration::from_secs(10), || async {
        let n = client.node_get("flaky").await.ok()?;
        (n.drivers == ["docker"]).then_some(())
    })
    .await;
    client
        .instance_create(&busybox("later", &["sleep", "1000"]))
        .await
        .unwrap();
    c.wait_instance("later", InstanceStatus::Running).await;
    agent.abort();
}
