//! Fleet behaviour with tens of simulated nodes (the real agent code over fake runtimes):
//! placement constraints under concurrency, drain, node loss and rescheduling, fencing of a
//! partitioned node that rejoins, the eviction rate limit and the mass-failure guard.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: fail fast with the message

use cloud_api::{
    ErrorCode, GroupPolicy, Instance, InstanceStatus, NodeStatus, PlacementGroup, RestartPolicy,
};
use cloud_tests::{Cluster, busybox, wait_for};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

fn fast_failover(c: &mut cloud_scheduler::Config) {
    c.node_down_after = Duration::from_secs(2);
    c.reschedule_after = Duration::from_millis(500);
    c.evictions_per_second = 50.0;
}

async fn all_instances(c: &Cluster) -> Vec<Instance> {
    c.client().instance_list().await.unwrap()
}

/// Running fake containers per instance id, across every simulated node.
fn running_copies(sim: &cloud_agent::sim::Sim) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for i in 0..sim.len() {
        for ct in sim.runtime(i).containers() {
            if ct.status == cloud_agent::runtime::ContainerStatus::Running
                && let Some(id) = ct.label("thecloud.instance-id")
            {
                *out.entry(id.to_string()).or_default() += 1;
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_respect_capacity_labels_and_groups() {
    let c = Cluster::start().await;
    let sim = c
        .sim(30, |cfg| {
            cfg.zones = 3;
            cfg.capacity.cpu_millis = 2000;
        })
        .await;
    let client = c.client();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..120 {
        let client = client.clone();
        tasks.spawn(async move {
            let mut req = busybox(&format!("w{i}"), &["sleep", "1000"]);
            req.cpu_millis = 300;
            let zone = format!("z{}", i % 3);
            req.node_selector = BTreeMap::from([("zone".to_string(), zone)]);
            if i < 10 {
                req.placement_group = Some(PlacementGroup {
                    name: "web".into(),
                    policy: GroupPolicy::Spread,
                });
            } else if i < 16 {
                req.placement_group = Some(PlacementGroup {
                    name: "db".into(),
                    policy: GroupPolicy::Pack,
                });
                req.node_selector.clear();
                req.cpu_millis = 100;
            }
            if !(10..16).contains(&i) {
                // Spread the rest so the pack group's node keeps room for its members.
                req.placement_strategy = Some(cloud_api::PlacementStrategy::Spread);
            }
            client.instance_create(&req).await
        });
    }
    let mut created = 0;
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
        created += 1;
    }
    assert_eq!(created, 120);

    let nodes = client.node_list().await.unwrap();
    let zone_of: HashMap<String, String> = nodes
        .iter()
        .map(|n| {
            (
                n.name.clone(),
                n.labels.get("zone").cloned().unwrap_or_default(),
            )
        })
        .collect();
    for n in &nodes {
        assert!(
            n.allocated.cpu_millis <= n.capacity.cpu_millis,
            "{} over-committed: {:?}",
            n.name,
            n.allocated
        );
    }
    let instances = all_instances(&c).await;
    let mut web_nodes = HashSet::new();
    let mut db_nodes = HashSet::new();
    for inst in &instances {
        let node = inst.node_name.clone().unwrap();
        if let Some(z) = inst.node_selector.get("zone") {
            assert_eq!(&zone_of[&node], z, "{} ignores its selector", inst.name);
        }
        match inst.placement_group.as_ref().map(|g| g.name.as_str()) {
            Some("web") => assert!(web_nodes.insert(node), "two web members on one node"),
            Some("db") => {
                db_nodes.insert(node);
            }
            _ => {}
        }
    }
    assert_eq!(web_nodes.len(), 10);
    assert_eq!(db_nodes.len(), 1, "pack keeps the group together");

    // A group's policy cannot change.
    let mut bad = busybox("w-bad", &["true"]);
    bad.placement_group = Some(PlacementGroup {
        name: "web".into(),
        policy: GroupPolicy::Pack,
    });
    let err = client.instance_create(&bad).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Conflict), "{err}");
    // Nothing fits: the reason counts nodes per filter.
    let mut huge = busybox("huge", &["true"]);
    huge.cpu_millis = 1900;
    huge.node_selector = BTreeMap::from([("zone".to_string(), "nowhere".to_string())]);
    let err = client.instance_create(&huge).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InsufficientCapacity));
    assert!(err.to_string().contains("zone=nowhere"), "{err}");

    wait_for("all running", Duration::from_secs(60), || async {
        let list = all_instances(&c).await;
        list.iter()
            .all(|i| i.status == InstanceStatus::Running)
            .then_some(())
    })
    .await;
    assert_eq!(sim.running_instances(), 120);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_moves_movable_instances_and_stops_the_rest() {
    let c = Cluster::start_with(fast_failover).await;
    let sim = c.sim(4, |_| {}).await;
    let client = c.client();
    // Bin-packing puts these on one node.
    for i in 0..3 {
        client
            .instance_create(&busybox(&format!("keep{i}"), &["sleep", "1000"]))
            .await
            .unwrap();
    }
    let mut once = busybox("once", &["sleep", "1000"]);
    once.restart_policy = RestartPolicy::Never;
    client.instance_create(&once).await.unwrap();
    let first = c.wait_instance("keep0", InstanceStatus::Running).await;
    let node = first.node_name.clone().unwrap();
    for inst in all_instances(&c).await {
        assert_eq!(
            inst.node_name.as_deref(),
            Some(node.as_str()),
            "bin-packing"
        );
    }

    let drained = client.node_drain(&node, false).await.unwrap();
    assert_eq!(drained.status, NodeStatus::Draining);
    wait_for(
        "instances moved off the drained node",
        Duration::from_secs(20),
        || async {
            let list = all_instances(&c).await;
            let ok = list.iter().all(|i| {
                if i.name == "once" {
                    i.status == InstanceStatus::Stopped
                        && i.node_name.as_deref() == Some(node.as_str())
                } else {
                    i.status == InstanceStatus::Running
                        && i.node_name.as_deref() != Some(node.as_str())
                }
            });
            ok.then_some(())
        },
    )
    .await;
    let copies = running_copies(&sim);
    assert!(
        copies.values().all(|n| *n == 1),
        "never two copies: {copies:?}"
    );
    // Nothing new lands on a draining node.
    let next = client
        .instance_create(&busybox("after-drain", &["sleep", "1"]))
        .await
        .unwrap();
    assert_ne!(next.node_name.as_deref(), Some(node.as_str()));
    let back = client.node_undrain(&node).await.unwrap();
    assert_eq!(back.status, NodeStatus::Ready);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_node_is_replaced_and_a_rejoining_node_stops_its_copies() {
    let c = Cluster::start_with(fast_failover).await;
    let sim = c.sim(4, |_| {}).await;
    let client = c.client();
    for i in 0..3 {
        client
            .instance_create(&busybox(&format!("svc{i}"), &["sleep", "1000"]))
            .await
            .unwrap();
    }
    let mut once = busybox("batch", &["sleep", "1000"]);
    once.restart_policy = RestartPolicy::Never;
    client.instance_create(&once).await.unwrap();
    let first = c.wait_instance("svc0", InstanceStatus::Running).await;
    c.wait_instance("batch", InstanceStatus::Running).await;
    let node = first.node_name.clone().unwrap();
    let idx = sim.index_of(&node).unwrap();

    // Cut the node off: its workloads keep running where they are.
    let cut = Instant::now();
    sim.partition(idx, true);
    wait_for("node down", Duration::from_secs(10), || async {
        (client.node_get(&node).await.ok()?.status == NodeStatus::Down).then_some(())
    })
    .await;
    let down_after = cut.elapsed();
    let down_at = Instant::now();
    wait_for(
        "services running elsewhere",
        Duration::from_secs(15),
        || async {
            let list = all_instances(&c).await;
            list.iter()
                .filter(|i| i.name.starts_with("svc"))
                .all(|i| {
                    i.status == InstanceStatus::Running
                        && i.node_name.as_deref() != Some(node.as_str())
                })
                .then_some(())
        },
    )
    .await;
    let moved_after = down_at.elapsed();
    assert!(
        down_after < c.config.node_down_after + Duration::from_secs(2),
        "down after {down_after:?}"
    );
    assert!(
        moved_after < Duration::from_secs(5),
        "running elsewhere {moved_after:?} after down"
    );
    let batch = client.instance_get("batch").await.unwrap();
    assert_eq!(
        batch.status,
        InstanceStatus::Lost,
        "never-restart instances are not moved"
    );
    // During the partition the old copies still run on the cut-off node.
    assert_eq!(sim.runtime(idx).containers().len(), 4);

    // Heal: the node learns its desired state no longer holds the moved instances.
    sim.partition(idx, false);
    wait_for(
        "rejoined node stops its moved copies",
        Duration::from_secs(15),
        || async {
            let copies = running_copies(&sim);
            (copies.len() == 4 && copies.values().all(|n| *n == 1)).then_some(())
        },
    )
    .await;
    c.wait_node_ready(&node).await;
    let batch = c.wait_instance("batch", InstanceStatus::Running).await;
    assert_eq!(batch.node_name.as_deref(), Some(node.as_str()));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evictions_pause_when_too_many_nodes_are_down_and_are_rate_limited() {
    let c = Cluster::start_with(|cfg| {
        fast_failover(cfg);
        cfg.max_down_fraction = 0.5;
        cfg.evictions_per_second = 0.5; // one node every two seconds
    })
    .await;
    let mut sim = c.sim(6, |cfg| cfg.capacity.cpu_millis = 1000).await;
    let client = c.client();
    // Two instances per node (500m each on 1000m nodes).
    for i in 0..12 {
        let mut req = busybox(&format!("i{i}"), &["sleep", "1000"]);
        req.cpu_millis = 500;
        client.instance_create(&req).await.unwrap();
    }
    wait_for("all running", Duration::from_secs(30), || async {
        all_instances(&c)
            .await
            .iter()
            .all(|i| i.status == InstanceStatus::Running)
            .then_some(())
    })
    .await;

    // Four of six nodes die: more than half is down, nothing may move.
    for i in 0..4 {
        sim.kill(i);
    }
    wait_for("four nodes down", Duration::from_secs(10), || async {
        let n = client.node_list().await.ok()?;
        (n.iter().filter(|n| n.status == NodeStatus::Down).count() == 4).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let lost = all_instances(&c)
        .await
        .iter()
        .filter(|i| i.status == InstanceStatus::Lost)
        .count();
    assert_eq!(lost, 8, "nothing moves while too many nodes are down");
    let metrics = c
        .client_with_key(None)
        .raw(cloud_api::Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("thecloud_evictions_blocked 1"),
        "{metrics}"
    );

    // When did each dead node first lose an instance to another node?
    let names: Vec<String> = (2..4).map(|i| sim.node_name(i).to_string()).collect();
    let home: HashMap<String, String> = all_instances(&c)
        .await
        .into_iter()
        .filter_map(|i| Some((i.name.clone(), i.node_name.clone()?)))
        .collect();
    // Two come back (2 of 6 down = 33%): evictions resume, one node per two seconds. The two
    // surviving nodes have no room, so add room first.
    sim.restart(0).await.unwrap();
    sim.restart(1).await.unwrap();
    let extra = c
        .sim(4, |cfg| {
            cfg.name_prefix = "extra".into();
            cfg.capacity.cpu_millis = 1000;
        })
        .await;
    let mut first_move: HashMap<String, Instant> = HashMap::new();
    let start = Instant::now();
    while first_move.len() < 2 && start.elapsed() < Duration::from_secs(20) {
        for inst in all_instances(&c).await {
            let Some(was) = home.get(&inst.name) else {
                continue;
            };
            if names.contains(was) && inst.node_name.as_ref() != Some(was) {
                first_move.entry(was.clone()).or_insert_with(Instant::now);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        first_move.len(),
        2,
        "both dead nodes were evicted eventually: {first_move:?}"
    );
    let mut times: Vec<Instant> = first_move.values().copied().collect();
    times.sort();
    let gap = times[1] - times[0];
    assert!(
        gap >= Duration::from_millis(1500),
        "evictions of two nodes {gap:?} apart; the limit is one per 2 s"
    );
    extra.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_instances_drain_leaves_instances_running_and_survives_an_agent_restart() {
    // Long reschedule_after: an agent upgrade (down for a few seconds) must not move anything.
    let c = Cluster::start_with(|cfg| {
        fast_failover(cfg);
        cfg.reschedule_after = Duration::from_secs(120);
    })
    .await;
    let mut sim = c.sim(2, |_| {}).await;
    let client = c.client();
    for i in 0..2 {
        client
            .instance_create(&busybox(&format!("web{i}"), &["sleep", "1000"]))
            .await
            .unwrap();
    }
    let first = c.wait_instance("web0", InstanceStatus::Running).await;
    c.wait_instance("web1", InstanceStatus::Running).await;
    let node = first.node_name.clone().unwrap();
    let idx = sim.index_of(&node).unwrap();
    // Ids and start times: a restarted container keeps its id, not its start time.
    let ids_before: Vec<(String, i64)> = sim
        .runtime(idx)
        .containers()
        .into_iter()
        .map(|c| (c.id, c.started_at_unix_ms))
        .collect();
    assert!(!ids_before.is_empty());

    let drained = client.node_drain(&node, true).await.unwrap();
    assert_eq!(drained.status, NodeStatus::Draining);
    assert_eq!(drained.drain, Some(cloud_api::DrainMode::KeepInstances));
    // Nothing new lands there; nothing leaves.
    let next = client
        .instance_create(&busybox("after-drain", &["sleep", "1000"]))
        .await
        .unwrap();
    assert_ne!(next.node_name.as_deref(), Some(node.as_str()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let web0 = client.instance_get("web0").await.unwrap();
    assert_eq!(web0.node_name.as_deref(), Some(node.as_str()));
    assert_eq!(web0.status, InstanceStatus::Running);

    // The agent goes away (an upgrade) long enough to be declared down, then returns.
    sim.kill(idx);
    wait_for("node down", Duration::from_secs(10), || async {
        let n = client.node_get(&node).await.ok()?;
        (n.status == NodeStatus::Down && n.drain.is_some()).then_some(())
    })
    .await;
    sim.restart(idx).await.unwrap();
    wait_for(
        "node back, still drained",
        Duration::from_secs(15),
        || async {
            let n = client.node_get(&node).await.ok()?;
            (n.connected && n.status == NodeStatus::Draining).then_some(())
        },
    )
    .await;
    c.wait_instance("web0", InstanceStatus::Running).await;
    let ids_after: Vec<(String, i64)> = sim
        .runtime(idx)
        .containers()
        .into_iter()
        .map(|c| (c.id, c.started_at_unix_ms))
        .collect();
    assert_eq!(
        ids_before, ids_after,
        "the same containers, never restarted"
    );
    assert_eq!(
        client
            .instance_get("web0")
            .await
            .unwrap()
            .node_name
            .as_deref(),
        Some(node.as_str())
    );

    // Undrain ends it.
    let back = client.node_undrain(&node).await.unwrap();
    assert_eq!(back.status, NodeStatus::Ready);
    assert_eq!(back.drain, None);
    assert_eq!(
        client.node_undrain(&node).await.unwrap().status,
        NodeStatus::Ready,
        "undrain is idempotent"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evacuating_drain_holds_when_the_agent_restarts() {
    let c = Cluster::start_with(fast_failover).await;
    let mut sim = c.sim(2, |_| {}).await;
    let client = c.client();
    let node = sim.node_name(0).to_owned();
    let drained = client.node_drain(&node, false).await.unwrap();
    assert_eq!(drained.drain, Some(cloud_api::DrainMode::Evacuate));
    sim.kill(0);
    wait_for("node down", Duration::from_secs(10), || async {
        (client.node_get(&node).await.ok()?.status == NodeStatus::Down).then_some(())
    })
    .await;
    sim.restart(0).await.unwrap();
    wait_for(
        "node back and draining, not ready",
        Duration::from_secs(15),
        || async {
            let n = client.node_get(&node).await.ok()?;
            (n.connected && n.status == NodeStatus::Draining).then_some(())
        },
    )
    .await;
    // Bad input: an unknown query parameter is a 400 naming it, and changes nothing.
    let resp = c
        .client()
        .raw(
            cloud_api::Method::POST,
            &format!("/v1/nodes/{node}/drain?keep=true"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body = resp.text().await.unwrap();
    assert!(
        body.contains("keep"),
        "the error names the parameter: {body}"
    );
    assert_eq!(
        client.node_get(&node).await.unwrap().drain,
        Some(cloud_api::DrainMode::Evacuate)
    );
    sim.shutdown().await;
}
