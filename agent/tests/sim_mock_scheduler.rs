//! The node simulator against an in-process mock scheduler (real gRPC, real mutual TLS):
//! 20 nodes enroll with one multi-use token and connect; desired state runs containers after
//! the simulated start delay; kill, restart (re-adoption), partition (the reconciler keeps
//! enforcing) and heal (fencing to the new desired state); single-use tokens are explained;
//! identities are reused; the console drives it all.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use cloud_agent::runtime::fake::FakeCall;
use cloud_agent::runtime::{ContainerRuntime, ContainerStatus};
use cloud_agent::sim::console::{self, End};
use cloud_agent::sim::{Sim, SimConfig, SimError};
use cloud_proto::v1::{InstanceSpec, InstanceState, ObservedState, RunState};
use common::mock::{Mock, MockOptions};
use std::path::Path;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);
const START_DELAY: Duration = Duration::from_millis(200);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .try_init();
}

fn sim_config(mock: &Mock, dir: &Path, nodes: usize) -> SimConfig {
    let mut c = SimConfig::new(
        nodes,
        mock.addr.to_string(),
        &mock.ca_file,
        &mock.token_file,
        dir.join("nodes"),
    );
    c.zones = 3;
    c.labels.insert("env".into(), "sim".into());
    c.start_delay = START_DELAY;
    c.enroll_concurrency = 4;
    c.connect_timeout = WAIT;
    c.record_calls = true;
    c.reconciler.interval = Duration::from_millis(300);
    c.session.backoff_base = Duration::from_millis(50);
    c.session.backoff_cap = Duration::from_millis(200);
    c
}

fn spec(id: &str, cg: u64) -> InstanceSpec {
    InstanceSpec {
        instance_id: id.into(),
        name: id.into(),
        image: "local/busybox:latest".into(),
        memory_mb: 32,
        cpu_millis: 100,
        desired: RunState::Running as i32,
        kind: "container".into(),
        change_generation: cg,
        ..InstanceSpec::default()
    }
}

fn state_of(o: &ObservedState, id: &str) -> Option<i32> {
    o.instances
        .iter()
        .find(|i| i.instance_id == id)
        .map(|i| i.state)
}

fn observed_running(mock: &Mock, node: &str, generation: u64, ids: &[&str]) -> bool {
    mock.node(node).observed.is_some_and(|o| {
        o.applied_generation == generation
            && o.instances.len() == ids.len()
            && ids
                .iter()
                .all(|id| state_of(&o, id) == Some(InstanceState::Running as i32))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_nodes_kill_restart_partition_heal() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mock = Mock::start(dir.path(), MockOptions::default()).await;
    let mut sim = Sim::start(sim_config(&mock, dir.path(), 20)).await.unwrap();

    // All enrolled with the one token and connected, with their own facts.
    assert_eq!(sim.len(), 20);
    assert_eq!(mock.enrolled(), 20);
    assert!(mock.wait(WAIT, |m| m.connected() == 20).await);
    assert_eq!(sim.status().connected, 20);
    assert!(
        mock.wait(WAIT, |m| (0..20)
            .all(|i| m.node(sim.node_id(i)).hello.is_some()))
            .await
    );
    for i in 0..20 {
        let rec = mock.node(sim.node_id(i));
        assert_eq!(rec.name, format!("sim-{i}"));
        assert_eq!(sim.node_name(i), format!("sim-{i}"));
        let hello = rec.hello.unwrap();
        assert_eq!(hello.hostname, format!("sim-{i}"));
        assert_eq!(hello.labels.get("zone"), Some(&format!("z{}", i % 3)));
        assert_eq!(hello.labels.get("env").map(String::as_str), Some("sim"));
        let cap = hello.capacity.unwrap();
        assert_eq!(
            (cap.cpu_millis, cap.memory_mb, cap.disk_gb),
            (4000, 16384, 200)
        );
        assert_eq!(hello.drivers, vec!["docker"]);
    }
    assert!(
        mock.wait(WAIT, |m| (0..20)
            .all(|i| m.node(sim.node_id(i)).heartbeats > 0))
            .await,
        "every node heartbeats"
    );

    // Desired state for node 3: its fake runtime starts both containers, each start taking
    // the simulated delay, and the node reports RUNNING.
    let n3 = sim.node_id(3).to_owned();
    let sent = Instant::now();
    assert!(mock.send_desired(&n3, 1, vec![spec("i1", 1), spec("i2", 1)]));
    assert!(
        mock.wait(WAIT, |m| observed_running(m, &n3, 1, &["i1", "i2"]))
            .await
    );
    assert!(
        sent.elapsed() >= START_DELAY,
        "RUNNING after {:?}, before the start delay",
        sent.elapsed()
    );
    assert_eq!(sim.runtime(3).running_count(), 2);
    assert_eq!(sim.running_instances(), 2, "no other node runs anything");
    let c1 = sim.runtime(3).container_of("i1").unwrap();

    // kill -9: the scheduler sees the session drop; the containers keep running.
    sim.kill(3);
    assert!(!sim.is_alive(3));
    assert!(
        mock.wait(WAIT, |m| !m.node(&n3).connected).await,
        "session dropped"
    );
    assert_eq!(mock.node(&n3).sessions_opened, 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        sim.runtime(3).running_count(),
        2,
        "workloads survive the agent"
    );
    assert_eq!(mock.connected(), 19);

    // Restart: same identity (no enrollment), containers re-adopted, not restarted.
    sim.runtime(3).clear_calls();
    sim.restart(3).await.unwrap();
    assert!(sim.is_connected(3));
    assert_eq!(sim.node_id(3), n3);
    assert_eq!(mock.enrolled(), 20);
    assert!(mock.wait(WAIT, |m| m.node(&n3).connected).await);
    assert_eq!(mock.node(&n3).sessions_opened, 2);
    assert!(mock.send_desired(&n3, 1, vec![spec("i1", 1), spec("i2", 1)]));
    assert!(
        mock.wait(WAIT, |m| observed_running(m, &n3, 1, &["i1", "i2"]))
            .await
    );
    let o = mock.node(&n3).observed.unwrap();
    let i1 = o.instances.iter().find(|i| i.instance_id == "i1").unwrap();
    assert_eq!(i1.runtime_id, c1.id);
    assert_eq!(i1.started_at_unix_ms, c1.started_at_unix_ms);
    assert!(
        sim.runtime(3).calls().is_empty(),
        "{:?}",
        sim.runtime(3).calls()
    );

    // Partition: the session drops and stays down...
    sim.partition(3, true);
    assert!(sim.is_partitioned(3));
    assert!(
        mock.wait(WAIT, |m| !m.node(&n3).connected).await,
        "session dropped"
    );
    assert!(!sim.is_connected(3));
    let opened = mock.node(&n3).sessions_opened;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        mock.node(&n3).sessions_opened,
        opened,
        "no reconnection while partitioned (backoff cap is 200 ms)"
    );
    assert!(!mock.node(&n3).connected);
    // ...while the reconciler keeps enforcing the last desired state: a container removed
    // behind its back comes back.
    let rt = sim.runtime(3).clone();
    rt.remove(&c1.id, true).await.unwrap();
    let back = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(c) = rt.container_of("i1")
                && c.status == ContainerStatus::Running
            {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the reconciler recreates i1 while partitioned");
    assert_ne!(back.id, c1.id);
    assert!(
        rt.calls()
            .iter()
            .any(|c| matches!(c, FakeCall::Create { name } if name == "tc-i1"))
    );
    assert_eq!(mock.node(&n3).sessions_opened, opened, "still no session");

    // Heal: it reconnects; the scheduler meanwhile moved i2 away, and the node fences it.
    sim.partition(3, false);
    assert!(
        mock.wait(WAIT, |m| m.node(&n3).connected).await,
        "reconnected"
    );
    assert_eq!(mock.node(&n3).sessions_opened, opened + 1);
    assert!(mock.send_desired(&n3, 2, vec![spec("i1", 1)]));
    assert!(
        mock.wait(WAIT, |m| observed_running(m, &n3, 2, &["i1"]))
            .await
    );
    assert!(rt.container_of("i2").is_none(), "i2 stopped and removed");
    assert_eq!(sim.running_instances(), 1);
    assert!(sim.wait_connected(WAIT).await);
    assert_eq!(sim.status().connected, 20);

    // A node killed while partitioned restarts partitioned, then heals.
    sim.partition(5, true);
    sim.kill(5);
    sim.restart(5).await.unwrap();
    assert!(sim.is_alive(5) && sim.is_partitioned(5));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!sim.is_connected(5));
    sim.partition(5, false);
    assert!(sim.wait_connected(WAIT).await);

    sim.shutdown().await;
    assert!(mock.wait(WAIT, |m| m.connected() == 0).await);
    assert_eq!(
        rt.running_count(),
        1,
        "shutdown leaves the (fake) workloads alone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_use_token_is_explained() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mock = Mock::start(
        dir.path(),
        MockOptions {
            token_uses: Some(1),
            ..MockOptions::default()
        },
    )
    .await;
    let err = Sim::start(sim_config(&mock, dir.path(), 5))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            SimError::SingleUseToken {
                enrolled: 1,
                needed: 5,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(msg.contains("the join token is single-use"), "{msg}");
    assert!(msg.contains("cloud node token create --uses N"), "{msg}");
    assert!(msg.contains("Unauthenticated"), "{msg}");
    assert_eq!(mock.enrolled(), 1);
    // The enrolled node was stopped with the failed start.
    assert!(mock.wait(WAIT, |m| m.connected() == 0).await);

    // A token refused outright (no node enrolled) is an ordinary refusal, with a hint.
    mock.revoke_token();
    let fresh = tempfile::tempdir().unwrap();
    let err = Sim::start(sim_config(&mock, fresh.path(), 2))
        .await
        .unwrap_err();
    assert!(matches!(err, SimError::Agent { .. }), "{err:?}");
    assert!(err.hint().unwrap().contains("multi-use token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_are_reused_and_the_console_drives_the_nodes() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mock = Mock::start(dir.path(), MockOptions::default()).await;
    let sim = Sim::start(sim_config(&mock, dir.path(), 3)).await.unwrap();
    let ids: Vec<String> = (0..3).map(|i| sim.node_id(i).to_owned()).collect();
    sim.shutdown().await;
    assert!(mock.wait(WAIT, |m| m.connected() == 0).await);

    // Same data dir, token revoked: every node reuses its identity.
    mock.revoke_token();
    let mut progress = Vec::new();
    let mut sim = Sim::start_with_progress(sim_config(&mock, dir.path(), 3), |p| progress.push(p))
        .await
        .unwrap();
    assert_eq!(mock.enrolled(), 3);
    assert_eq!(
        (0..3)
            .map(|i| sim.node_id(i).to_owned())
            .collect::<Vec<_>>(),
        ids
    );
    assert_eq!(progress.len(), 3);
    assert_eq!(
        progress.last().map(|p| (p.ready, p.total, p.enrolled)),
        Some((3, 3, 0))
    );
    assert!(mock.wait(WAIT, |m| m.connected() == 3).await);

    let script = [
        "status",
        "kill 1",
        "status",
        "restart sim-1",
        "partition 0-1",
        "",
        "heal 0-1",
        "kill 7",
        "bogus",
        "quit",
        "status",
    ];
    let input = futures::stream::iter(script.iter().map(|s| s.to_string()));
    let mut out = Vec::new();
    let end = console::run(&mut sim, input, &mut out, std::future::pending())
        .await
        .unwrap();
    assert_eq!(end, End::Quit);
    let out = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 9, "{out}");
    assert!(
        lines[0].starts_with("status connected 3/3 alive 3 partitioned 0 running 0"),
        "{out}"
    );
    assert_eq!(lines[1], "killed 1 (sim-1)");
    assert!(lines[2].contains("alive 2"), "{out}");
    assert_eq!(lines[3], "restarted 1 (sim-1): connected");
    assert_eq!(lines[4], "partitioned 0-1 (2 nodes)");
    assert_eq!(lines[5], "healed 0-1 (2 nodes)");
    assert_eq!(lines[6], "error: no node 7: the simulator has 3 node(s)");
    assert!(
        lines[7].starts_with("error: unknown command \"bogus\""),
        "{out}"
    );
    assert_eq!(lines[8], "bye");
    assert!(sim.wait_connected(WAIT).await);
    assert!(mock.wait(WAIT, |m| m.connected() == 3).await);

    // A signal (the stop future) ends the console too.
    let mut out = Vec::new();
    let end = console::run(
        &mut sim,
        futures::stream::pending::<String>(),
        &mut out,
        tokio::time::sleep(Duration::from_millis(100)),
    )
    .await
    .unwrap();
    assert_eq!(end, End::Stopped);
    sim.shutdown().await;
}
