//! End to end with real parts: scheduler + real agent + real dockerd. Uses the local image
//! `local/busybox:latest` (built by ./scripts/test.sh). Every agent here has its own node id,
//! so these tests never touch containers they did not create.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: fail fast with the message

use bollard::Docker;
use bollard::query_parameters::{InspectContainerOptions, ListContainersOptionsBuilder};
use cloud_api::{InstanceStatus, RestartPolicy};
use cloud_tests::{Cluster, busybox, docker_available, wait_for};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Removes every container of a test node when the test ends, pass or fail, so a failed run
/// leaves nothing behind on the shared dockerd.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let ids = std::process::Command::new("/usr/bin/docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=thecloud.node-id={}", self.0),
            ])
            .output();
        if let Ok(out) = ids {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = std::process::Command::new("/usr/bin/docker")
                    .args(["rm", "-f", id])
                    .output();
            }
        }
    }
}

async fn docker() -> Docker {
    Docker::connect_with_local_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .unwrap()
}

async fn real_agent(c: &Cluster, name: &str) -> cloud_agent::AgentHandle {
    let runtime = Arc::new(
        cloud_agent::DockerRuntime::connect(None)
            .await
            .expect("docker runtime"),
    );
    c.start_agent(name, runtime).await
}

/// Containers carrying this node's label (running or not).
async fn containers_of(d: &Docker, node_id: &str) -> Vec<bollard::models::ContainerSummary> {
    let filters: HashMap<String, Vec<String>> = [(
        "label".to_string(),
        vec![format!("thecloud.node-id={node_id}")],
    )]
    .into();
    d.list_containers(Some(
        ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build(),
    ))
    .await
    .unwrap()
}

#[tokio::test]
async fn container_lifecycle_with_real_docker() {
    if !docker_available().await {
        return;
    }
    let c = Cluster::start().await;
    let agent = real_agent(&c, "docker-1").await;
    let _cleanup = Cleanup(agent.node_id().to_string());
    let d = docker().await;
    let client = c.client();
    let req = busybox(
        "web",
        &["sh", "-c", "while true; do echo hi; sleep 1; done"],
    );
    let created = client.instance_create(&req).await.unwrap();
    let running = c.wait_instance("web", InstanceStatus::Running).await;
    let cid = running.runtime_id.clone().expect("container id");

    let inspect = d
        .inspect_container(&cid, None::<InspectContainerOptions>)
        .await
        .unwrap();
    let labels = inspect
        .config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default();
    assert_eq!(
        labels.get("thecloud.instance-id"),
        Some(&created.id.to_string())
    );
    assert_eq!(
        labels.get("thecloud.node-id").map(String::as_str),
        Some(agent.node_id())
    );
    let host = inspect.host_config.unwrap();
    assert_eq!(host.memory, Some(64 * 1024 * 1024), "memory limit applied");
    assert_eq!(host.nano_cpus, Some(250_000_000), "CPU limit applied");
    assert_eq!(
        host.init,
        Some(true),
        "an init forwards signals and reaps zombies"
    );

    let logs = wait_for("logs with 'hi'", Duration::from_secs(15), || {
        let client = client.clone();
        async move {
            client
                .instance_logs("web", Some(5))
                .await
                .ok()
                .filter(|l| l.contains("hi"))
        }
    })
    .await;
    assert!(logs.lines().count() <= 5, "tail is honoured: {logs:?}");

    let asked = std::time::Instant::now();
    client.instance_stop("web").await.unwrap();
    c.wait_instance("web", InstanceStatus::Stopped).await;
    assert!(
        asked.elapsed() < Duration::from_secs(8),
        "a shell loop stops on SIGTERM, not after the kill grace: {:?}",
        asked.elapsed()
    );
    let state = d
        .inspect_container(&cid, None::<InspectContainerOptions>)
        .await
        .unwrap()
        .state
        .unwrap();
    assert_eq!(state.running, Some(false));

    client.instance_start("web").await.unwrap();
    let again = c.wait_instance("web", InstanceStatus::Running).await;
    assert_eq!(
        again.runtime_id.as_deref(),
        Some(cid.as_str()),
        "start reuses the container"
    );

    client.instance_delete("web").await.unwrap();
    c.wait_instance_gone("web").await;
    wait_for("container removed", Duration::from_secs(20), || {
        let d = d.clone();
        let node = agent.node_id().to_string();
        async move { containers_of(&d, &node).await.is_empty().then_some(()) }
    })
    .await;
    agent.abort();
}

#[tokio::test]
async fn a_restarted_agent_readopts_running_containers() {
    if !docker_available().await {
        return;
    }
    let c = Cluster::start().await;
    let agent = real_agent(&c, "docker-2").await;
    let node_id = agent.node_id().to_string();
    let _cleanup = Cleanup(node_id.clone());
    let d = docker().await;
    let client = c.client();
    client
        .instance_create(&busybox("sticky", &["sleep", "100000"]))
        .await
        .unwrap();
    let before = c.wait_instance("sticky", InstanceStatus::Running).await;
    let cid = before.runtime_id.clone().unwrap();
    let started = d
        .inspect_container(&cid, None::<InspectContainerOptions>)
        .await
        .unwrap()
        .state
        .unwrap()
        .started_at;

    agent.abort(); // like kill -9
    tokio::time::sleep(Duration::from_millis(500)).await;
    let agent = real_agent(&c, "docker-2").await;
    assert_eq!(agent.node_id(), node_id, "same identity, no re-enrollment");
    tokio::time::sleep(Duration::from_secs(3)).await; // a few reconcile passes
    let after = c.wait_instance("sticky", InstanceStatus::Running).await;
    assert_eq!(
        after.runtime_id.as_deref(),
        Some(cid.as_str()),
        "same container id"
    );
    let state = d
        .inspect_container(&cid, None::<InspectContainerOptions>)
        .await
        .unwrap()
        .state
        .unwrap();
    assert_eq!(state.started_at, started, "same start time: not restarted");
    assert_eq!(state.running, Some(true));
    assert_eq!(containers_of(&d, &node_id).await.len(), 1);

    client.instance_delete("sticky").await.unwrap();
    c.wait_instance_gone("sticky").await;
    agent.abort();
}

#[tokio::test]
async fn bad_images_and_commands_fail_with_a_readable_reason() {
    if !docker_available().await {
        return;
    }
    let c = Cluster::start().await;
    let agent = real_agent(&c, "docker-3").await;
    let _cleanup = Cleanup(agent.node_id().to_string());
    let client = c.client();

    let mut bad_image = busybox("bad-image", &["true"]);
    bad_image.image = "local/does-not-exist:1".into();
    client.instance_create(&bad_image).await.unwrap();
    let failed = c.wait_instance("bad-image", InstanceStatus::Failed).await;
    let reason = failed.status_reason.unwrap_or_default();
    assert!(reason.contains("local/does-not-exist:1"), "{reason}");

    let mut bad_cmd = busybox("bad-cmd", &["/no/such/binary"]);
    bad_cmd.restart_policy = RestartPolicy::Never;
    client.instance_create(&bad_cmd).await.unwrap();
    let failed = c.wait_instance("bad-cmd", InstanceStatus::Failed).await;
    let reason = failed.status_reason.unwrap_or_default();
    assert!(reason.contains("/no/such/binary"), "{reason}");

    let mut exits = busybox("exits", &["sh", "-c", "exit 7"]);
    exits.restart_policy = RestartPolicy::Never;
    client.instance_create(&exits).await.unwrap();
    let failed = c.wait_instance("exits", InstanceStatus::Failed).await;
    assert_eq!(failed.exit_code, Some(7));

    for name in ["bad-image", "bad-cmd", "exits"] {
        client.instance_delete(name).await.unwrap();
        c.wait_instance_gone(name).await;
    }
    let d = docker().await;
    wait_for("containers removed", Duration::from_secs(20), || {
        let d = d.clone();
        let node = agent.node_id().to_string();
        async move { containers_of(&d, &node).await.is_empty().then_some(()) }
    })
    .await;
    agent.abort();
}
