//! The real Docker runtime driven by the reconciler, against the local dockerd and the
//! `local/busybox:latest` image. Everything it creates carries a random node id and is removed
//! at the end (also on panic). Skips when Docker is not reachable, unless
//! `THECLOUD_REQUIRE_DOCKER=1`.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use cloud_agent::runtime::{ContainerRuntime, ContainerStatus, DockerRuntime, LogOptions, labels};
use cloud_agent::{
    DesiredState, InstanceSpec, InstanceState, ObservedState, Reconciler, ReconcilerConfig,
    RestartPolicy, RunState,
};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const IMAGE: &str = "local/busybox:latest";

/// Removes every container of the test node, even when the test panics.
struct Cleanup {
    node_id: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let script = format!(
            "docker ps -aq --filter label={}={} | xargs -r docker rm -f >/dev/null",
            labels::NODE_ID,
            self.node_id
        );
        let _ = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .status();
    }
}

/// Docker, or `None` (after printing why) when the test must be skipped.
async fn docker_or_skip() -> Option<DockerRuntime> {
    let required = std::env::var("THECLOUD_REQUIRE_DOCKER").as_deref() == Ok("1");
    let skip = |why: String| {
        if required {
            panic!("THECLOUD_REQUIRE_DOCKER=1 but {why}");
        }
        eprintln!("SKIPPED: {why} (set THECLOUD_REQUIRE_DOCKER=1 to make this a failure)");
    };
    if !std::path::Path::new("/var/run/docker.sock").exists() {
        skip("/var/run/docker.sock is absent".into());
        return None;
    }
    let rt = match tokio::time::timeout(Duration::from_secs(10), DockerRuntime::connect(None)).await
    {
        Ok(Ok(rt)) => rt,
        Ok(Err(e)) => {
            skip(format!("Docker is not answering: {e}"));
            return None;
        }
        Err(_) => {
            skip("Docker did not answer within 10 s".into());
            return None;
        }
    };
    match rt.image_present(IMAGE).await {
        Ok(true) => Some(rt),
        Ok(false) => {
            skip(format!(
                "image {IMAGE} is missing (build it as in HOST-NOTES 10-docker.sh)"
            ));
            None
        }
        Err(e) => {
            skip(format!("cannot inspect {IMAGE}: {e}"));
            None
        }
    }
}

fn spec(id: &str, command: &[&str], desired: RunState, cg: u64) -> InstanceSpec {
    InstanceSpec {
        instance_id: id.into(),
        name: format!("it-{id}"),
        image: IMAGE.into(),
        command: command.iter().map(|s| (*s).to_owned()).collect(),
        env: BTreeMap::from([("GREETING".into(), "hello-from-agent".into())]),
        cpu_millis: 500,
        memory_mb: 64,
        restart_policy: RestartPolicy::Never,
        desired,
        kind: "container".into(),
        change_generation: cg,
        mounts: Vec::new(),
        network: None,
        vm: None,
    }
}

fn obs<'a>(o: &'a ObservedState, id: &str) -> &'a cloud_agent::InstanceObservation {
    o.instance(id)
        .unwrap_or_else(|| panic!("{id} missing from {o:?}"))
}

async fn pass(rec: &mut Reconciler) -> ObservedState {
    rec.reconcile_once()
        .await
        .expect("reconcile pass")
        .expect("desired state set")
}

async fn logs_of(rt: &DockerRuntime, id: &str) -> String {
    let mut stream = rt
        .logs(
            id,
            LogOptions {
                tail: 0,
                follow: false,
            },
        )
        .await
        .expect("logs");
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.expect("log chunk"));
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_runtime_through_the_reconciler() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let node_id = format!("it-node-{}", uuid::Uuid::new_v4());
    let _cleanup = Cleanup {
        node_id: node_id.clone(),
    };
    let rt = Arc::new(docker);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = ReconcilerConfig {
        pull_timeout: Duration::from_secs(20),
        stop_grace: Duration::from_secs(2),
        ..ReconcilerConfig::default()
    };
    let mut rec = Reconciler::new(&node_id, rt.clone(), dir.path(), config).expect("reconciler");

    let id = |s: &str| format!("{s}-{}", &node_id[8..16]);
    let (web, once, badimg, badcmd) = (id("web"), id("once"), id("badimg"), id("badcmd"));
    let web_cmd = [
        "sh",
        "-c",
        "echo $GREETING; echo err-line >&2; exec sleep 1000",
    ];
    let mut bad_image = spec(&badimg, &[], RunState::Running, 1);
    bad_image.image = "local/nope:1".into();
    let gen1 = DesiredState {
        generation: 1,
        vpcs: vec![],
        volumes: Vec::new(),
        delete_volumes: Vec::new(),
        snapshots: Vec::new(),
        delete_snapshots: Vec::new(),
        instances: vec![
            spec(&web, &web_cmd, RunState::Running, 1),
            spec(&once, &["sh", "-c", "exit 3"], RunState::Running, 1),
            bad_image.clone(),
            spec(&badcmd, &["nosuchcmd"], RunState::Running, 1),
        ],
    };
    rec.set_desired(Arc::new(gen1.clone()));
    let o = pass(&mut rec).await;

    // Running with limits and labels.
    let w = obs(&o, &web);
    assert_eq!(w.state, InstanceState::Running, "{w:?}");
    assert!(w.started_at_unix_ms > 0);
    let info = rt.inspect(&w.runtime_id).await.expect("inspect");
    assert_eq!(info.name, format!("tc-{web}"));
    assert_eq!(info.status, ContainerStatus::Running);
    assert_eq!(info.memory_bytes, 64 * 1024 * 1024);
    assert_eq!(info.nano_cpus, 500_000_000);
    assert_eq!(info.label(labels::NODE_ID), Some(node_id.as_str()));
    assert_eq!(info.label(labels::INSTANCE_ID), Some(web.as_str()));
    assert_eq!(info.label(labels::MANAGED_BY), Some("cloud-agent"));

    // Failures carry readable reasons.
    let bi = obs(&o, &badimg);
    assert_eq!(bi.state, InstanceState::Failed);
    assert!(
        bi.reason
            .starts_with("image \"local/nope:1\" is not available on node:"),
        "{}",
        bi.reason
    );
    eprintln!("bad image reason: {}", bi.reason);
    // The bad command's container exits a moment after it started: observe until it has.
    let mut later: Option<ObservedState> = None;
    for _ in 0..50 {
        if obs(later.as_ref().unwrap_or(&o), &badcmd).state != InstanceState::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        later = Some(pass(&mut rec).await);
    }
    let bc = obs(later.as_ref().unwrap_or(&o), &badcmd);
    eprintln!("bad command reason: {}", bc.reason);
    assert_eq!(bc.state, InstanceState::Failed);
    // Containers run under a tiny init, so a missing executable is an exit with code 127
    // whose last output line (from the init) says which command could not be run.
    assert!(
        bc.reason.starts_with("exited with code 127") && bc.reason.contains("nosuchcmd"),
        "{}",
        bc.reason
    );

    // Logs contain stdout and stderr.
    let mut text = String::new();
    for _ in 0..50 {
        text = logs_of(&rt, &w.runtime_id).await;
        if text.contains("err-line") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(text.contains("hello-from-agent"), "logs: {text:?}");
    assert!(text.contains("err-line"), "logs: {text:?}");

    // One-shot stats see the memory limit.
    let stats = rt.stats(&w.runtime_id).await.expect("stats");
    assert_eq!(stats.memory_limit_bytes, 64 * 1024 * 1024);
    assert!(stats.cpu_percent >= 0.0);

    // The container that exits on its own is reported, not restarted.
    let mut o = pass(&mut rec).await;
    for _ in 0..50 {
        if obs(&o, &once).state == InstanceState::Failed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        o = pass(&mut rec).await;
    }
    let on = obs(&o, &once);
    assert_eq!(on.state, InstanceState::Failed, "{on:?}");
    assert_eq!(on.reason, "exited with code 3");
    assert_eq!(on.exit_code, Some(3));
    let o2 = pass(&mut rec).await;
    assert_eq!(obs(&o2, &once).started_at_unix_ms, on.started_at_unix_ms);

    // A restarted agent re-adopts the running container untouched.
    drop(rec);
    let mut rec = Reconciler::new(
        &node_id,
        rt.clone(),
        dir.path(),
        ReconcilerConfig {
            stop_grace: Duration::from_secs(2),
            ..ReconcilerConfig::default()
        },
    )
    .expect("reconciler");
    rec.set_desired(Arc::new(gen1.clone()));
    let o = pass(&mut rec).await;
    assert_eq!(obs(&o, &web).runtime_id, w.runtime_id);
    assert_eq!(obs(&o, &web).started_at_unix_ms, w.started_at_unix_ms);
    assert_eq!(obs(&o, &once).state, InstanceState::Failed);

    // Stop.
    let mut gen2 = gen1.clone();
    gen2.generation = 2;
    gen2.instances[0] = spec(&web, &web_cmd, RunState::Stopped, 2);
    rec.set_desired(Arc::new(gen2));
    let o = pass(&mut rec).await;
    assert_eq!(obs(&o, &web).state, InstanceState::Stopped);
    let info = rt.inspect(&w.runtime_id).await.expect("inspect");
    assert_eq!(info.status, ContainerStatus::Exited);

    // Remove everything.
    rec.set_desired(Arc::new(DesiredState {
        generation: 3,
        vpcs: vec![],
        volumes: Vec::new(),
        delete_volumes: Vec::new(),
        snapshots: Vec::new(),
        delete_snapshots: Vec::new(),
        instances: vec![],
    }));
    let o = pass(&mut rec).await;
    assert!(o.instances.is_empty(), "{o:?}");
    let own = BTreeMap::from([(labels::NODE_ID.to_owned(), node_id.clone())]);
    assert!(rt.list(&own).await.expect("list").is_empty());
}
