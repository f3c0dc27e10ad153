//! VPC networking end to end with real parts: scheduler + two real agents on real dockerd,
//! each with the real Linux data plane. The two "hosts" share this machine's Docker, so each
//! agent's host side (VXLAN socket, uplinks) lives in its own network namespace joined to the
//! other by a veth underlay; containers are real Docker containers (network mode none) whose
//! `eth0` the agents plug in. Checks cross-host reachability, security groups on live
//! instances, and isolation between VPCs with the same addresses.
//!
//! Needs root, Docker and iproute2/nftables; skips with a reason otherwise, unless
//! THECLOUD_REQUIRE_DOCKER=1 / THECLOUD_REQUIRE_NETNS=1 (CI).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: fail fast with the message

use cloud_api::{
    CreateInstanceRequest, CreateSecurityGroupRequest, CreateSubnetRequest, CreateVpcRequest,
    Direction, GroupPolicy, InstanceStatus, PlacementGroup, Protocol, SecurityGroupRule,
};
use cloud_tests::{Cluster, busybox, docker_available, wait_for};
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TP: &str = "ve";

fn sh(args: &[&str]) -> std::process::Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"))
}

fn must(args: &[&str]) {
    let o = sh(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn netns_usable() -> bool {
    let root = sh(&["id", "-u"]).stdout == b"0\n";
    let tools = ["ip", "nft"]
        .iter()
        .all(|t| Command::new(t).arg("-V").output().is_ok());
    if root && tools {
        return true;
    }
    if std::env::var("THECLOUD_REQUIRE_NETNS").as_deref() == Ok("1") {
        panic!(
            "THECLOUD_REQUIRE_NETNS=1 but network namespaces are unusable (root: {root}, ip/nft: {tools})"
        );
    }
    eprintln!("skipping: VPC end-to-end tests need root, ip and nft");
    false
}

fn delete_lab() {
    for e in std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(TP) {
            let _ = sh(&["ip", "netns", "del", &name]);
        }
    }
}

/// Removes the lab namespaces and the test nodes' containers, pass or fail.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for node in &self.0 {
            let out = sh(&[
                "docker",
                "ps",
                "-aq",
                "--filter",
                &format!("label=thecloud.node-id={node}"),
            ]);
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = sh(&["docker", "rm", "-f", id]);
            }
        }
        delete_lab();
    }
}

/// Two host namespaces `veh1`/`veh2` with 172.31.0.1 and .2 on a veth underlay.
fn build_underlay() {
    delete_lab();
    must(&["ip", "netns", "add", "veh1"]);
    must(&["ip", "netns", "add", "veh2"]);
    must(&[
        "ip", "link", "add", "u0", "netns", "veh1", "type", "veth", "peer", "name", "u0", "netns",
        "veh2",
    ]);
    for (ns, ip) in [("veh1", "172.31.0.1/24"), ("veh2", "172.31.0.2/24")] {
        must(&["ip", "-n", ns, "addr", "add", ip, "dev", "u0"]);
        must(&["ip", "-n", ns, "link", "set", "u0", "up"]);
        must(&["ip", "-n", ns, "link", "set", "lo", "up"]);
    }
}

async fn vpc_agent(c: &Cluster, name: &str, host: u8) -> cloud_agent::AgentHandle {
    let runtime = Arc::new(
        cloud_agent::DockerRuntime::connect(None)
            .await
            .expect("docker runtime"),
    );
    let underlay = Ipv4Addr::new(172, 31, 0, host);
    let backend =
        cloud_agent::network::LinuxNetwork::new(cloud_agent::network::LinuxNetworkConfig {
            underlay_ip: underlay,
            underlay_mtu: 1500,
            prefix: format!("{TP}{host}"),
            host_netns: Some(format!("/run/netns/veh{host}").into()),
        });
    let mut cfg = c.agent_config(name);
    // Drift (a deleted port, a missing FDB entry) is repaired within a second here.
    cfg.reconciler.network_resync = Duration::from_secs(1);
    cfg.capacity_override.cpu_millis = Some(4000);
    cfg.capacity_override.memory_mb = Some(4096);
    cfg.network = Some(cloud_agent::config::NodeNetwork {
        underlay_ip: underlay,
        underlay_mtu: 1500,
        backend: Arc::new(backend),
    });
    let agent = cloud_agent::start(cfg, runtime)
        .await
        .expect("agent starts");
    c.wait_node_ready(name).await;
    agent
}

/// `ping` from inside an instance's container; true when a reply came back.
fn ping_from(container: &str, ip: &str) -> bool {
    sh(&[
        "docker", "exec", container, "ping", "-c", "1", "-W", "1", ip,
    ])
    .status
    .success()
}

/// A TCP exchange from inside a container with busybox httpd on `ip:port`.
fn http_from(container: &str, ip: &str, port: u16) -> bool {
    let script = format!("printf 'GET /hostname HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {ip} {port}");
    let out = sh(&["docker", "exec", container, "sh", "-c", &script]);
    String::from_utf8_lossy(&out.stdout).contains("200 OK")
}

fn tcp_from(cidr: &str, port: u16) -> SecurityGroupRule {
    SecurityGroupRule {
        direction: Direction::Ingress,
        protocol: Protocol::Tcp,
        port_min: Some(port),
        port_max: Some(port),
        cidr: Some(cidr.into()),
        source_group: None,
    }
}

fn host_of(i: &cloud_api::Instance) -> u8 {
    if i.node_name.as_deref() == Some("vpc-h1") {
        1
    } else {
        2
    }
}

fn port_of(i: &cloud_api::Instance) -> String {
    cloud_agent::network::port_name(&i.id.to_string())
}

fn link_index(ns: &str, dev: &str) -> Option<String> {
    let out = sh(&["ip", "-n", ns, "-o", "link", "show", dev]);
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .split(':')
            .next()
            .unwrap_or("")
            .to_string()
    })
}

fn icmp_from(cidr: &str) -> SecurityGroupRule {
    SecurityGroupRule {
        direction: Direction::Ingress,
        protocol: Protocol::Icmp,
        port_min: None,
        port_max: None,
        cidr: Some(cidr.into()),
        source_group: None,
    }
}

// Multi-threaded: the checks below shell out (docker exec, ip, bridge) and block their
// thread for up to seconds; the scheduler and agents in this process must keep running.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_on_two_hosts_talk_over_their_vpc_and_nothing_else() {
    if !docker_available().await || !netns_usable() {
        return;
    }
    build_underlay();
    let c = Cluster::start().await;
    let a1 = vpc_agent(&c, "vpc-h1", 1).await;
    let a2 = vpc_agent(&c, "vpc-h2", 2).await;
    let _cleanup = Cleanup(vec![a1.node_id().to_string(), a2.node_id().to_string()]);
    let client = c.client();

    let blue_vpc = client
        .vpc_create(&CreateVpcRequest {
            name: "blue".into(),
            cidr: "10.77.0.0/16".into(),
        })
        .await
        .unwrap();
    let blue = client
        .subnet_create(
            "blue",
            &CreateSubnetRequest {
                name: "s".into(),
                cidr: "10.77.1.0/24".into(),
                nat_egress: false,
            },
        )
        .await
        .unwrap();
    client
        .vpc_create(&CreateVpcRequest {
            name: "red".into(),
            cidr: "10.77.0.0/16".into(),
        })
        .await
        .unwrap();
    let red = client
        .subnet_create(
            "red",
            &CreateSubnetRequest {
                name: "s".into(),
                cidr: "10.77.1.0/24".into(),
                nat_egress: false,
            },
        )
        .await
        .unwrap();
    client
        .sg_create(&CreateSecurityGroupRequest {
            name: "ping".into(),
            description: String::new(),
            rules: vec![icmp_from("10.77.0.0/16"), tcp_from("10.77.0.0/16", 80)],
        })
        .await
        .unwrap();

    let launch = |name: &str, subnet, sgs: &[&str]| CreateInstanceRequest {
        subnet_id: Some(subnet),
        security_groups: sgs.iter().map(|s| s.to_string()).collect(),
        // a and b on different hosts; the others wherever they fit.
        placement_group: ["a", "b"].contains(&name).then(|| PlacementGroup {
            name: "pair".into(),
            policy: GroupPolicy::Spread,
        }),
        // Web servers on 80 and 22 (busybox httpd daemonizes), then wait.
        ..busybox(
            name,
            &[
                "sh",
                "-c",
                "httpd -p 80 -h /etc; httpd -p 22 -h /etc; exec sleep 100000",
            ],
        )
    };
    // Time from the create request to `running`, which for a VPC instance means its port is
    // up (the agent reports running only after the attach).
    let t0 = Instant::now();
    client
        .instance_create(&launch("a", blue.id, &["ping"]))
        .await
        .unwrap();
    let a = c.wait_instance("a", InstanceStatus::Running).await;
    let ready_ms = t0.elapsed().as_millis();
    client
        .instance_create(&launch("b", blue.id, &["ping"]))
        .await
        .unwrap();
    let b = c.wait_instance("b", InstanceStatus::Running).await;
    assert_ne!(a.node_name, b.node_name, "spread over the two hosts");
    eprintln!("request → running with network: {ready_ms} ms");
    let (ca, cb) = (a.runtime_id.clone().unwrap(), b.runtime_id.clone().unwrap());
    let (ip_a, ip_b) = (a.private_ip.clone().unwrap(), b.private_ip.clone().unwrap());

    // eth0 as the scheduler described it.
    let addr =
        String::from_utf8_lossy(&sh(&["docker", "exec", &ca, "ip", "addr", "show", "eth0"]).stdout)
            .into_owned();
    assert!(addr.contains(&format!("{ip_a}/24")), "{addr}");
    assert!(addr.contains("mtu 1450"), "{addr}");
    assert!(addr.contains(a.mac.as_deref().unwrap()), "{addr}");

    // Across hosts over VXLAN, both ways, and to the gateway.
    let reach = wait_for("a reaches b across hosts", Duration::from_secs(15), || {
        let (ca, ip_b) = (ca.clone(), ip_b.clone());
        async move { ping_from(&ca, &ip_b).then_some(()) }
    });
    reach.await;
    assert!(ping_from(&cb, &ip_a), "b reaches a");
    assert!(ping_from(&ca, "10.77.1.1"), "a reaches its gateway");

    // Security group on live instances: port 80 allowed, 22 refused; removing the rule takes
    // effect within one reconcile.
    assert!(
        http_from(&cb, "127.0.0.1", 22),
        "control: b serves on 22 locally"
    );
    assert!(http_from(&ca, &ip_b, 80), "tcp/80 allowed a -> b");
    assert!(!http_from(&ca, &ip_b, 22), "tcp/22 refused a -> b");
    client
        .sg_replace_rules(
            "ping",
            &cloud_api::ReplaceRulesRequest {
                rules: vec![icmp_from("10.77.0.0/16")],
            },
        )
        .await
        .unwrap();
    wait_for(
        "tcp/80 closed after the rule went",
        Duration::from_secs(10),
        || {
            let (ca, ip_b) = (ca.clone(), ip_b.clone());
            async move { (!http_from(&ca, &ip_b, 80)).then_some(()) }
        },
    )
    .await;
    assert!(ping_from(&ca, &ip_b), "icmp still allowed");

    // Drift: b's port deleted behind the agent's back, and a's node loses b's FDB entry.
    let (hb, ha) = (host_of(&b), host_of(&a));
    let ns_b = format!("{TP}{hb}v{}", blue_vpc.vni);
    let ns_a = format!("{TP}{ha}v{}", blue_vpc.vni);
    must(&["ip", "-n", &ns_b, "link", "del", &port_of(&b)]);
    let mac_b = b.mac.clone().unwrap();
    let _ = sh(&[
        "bridge", "-n", &ns_a, "fdb", "del", &mac_b, "dev", "vx0", "master",
    ]);
    let _ = sh(&["bridge", "-n", &ns_a, "fdb", "del", &mac_b, "dev", "vx0"]);
    wait_for(
        "b's port plugged again and reachable",
        Duration::from_secs(15),
        || {
            let (ca, ip_b) = (ca.clone(), ip_b.clone());
            async move { ping_from(&ca, &ip_b).then_some(()) }
        },
    )
    .await;
    wait_for(
        "b's FDB entry restored on a's node",
        Duration::from_secs(15),
        || {
            let ns_a = ns_a.clone();
            let mac_b = mac_b.clone();
            async move {
                let fdb = String::from_utf8_lossy(
                    &sh(&["bridge", "-n", &ns_a, "fdb", "show", "dev", "vx0"]).stdout,
                )
                .into_owned();
                fdb.contains(&mac_b).then_some(())
            }
        },
    )
    .await;

    // Agent restart (a crash): traffic keeps flowing while it is gone, and the restarted agent
    // re-adopts b's port without recreating it.
    let port_before = link_index(&ns_b, &port_of(&b)).expect("b's port exists");
    let (crashed, kept) = if hb == 1 { (a1, a2) } else { (a2, a1) };
    crashed.abort();
    assert!(ping_from(&ca, &ip_b), "traffic flows with b's agent down");
    let restarted = vpc_agent(&c, if hb == 1 { "vpc-h1" } else { "vpc-h2" }, hb).await;
    // Proof that the new agent reconciles b's port: taking b's group away closes it, giving
    // it back opens it again; only then is "port kept" meaningful.
    client.instance_sg_detach("b", "ping").await.unwrap();
    wait_for(
        "the restarted agent applies b's rules",
        Duration::from_secs(15),
        || {
            let (ca, ip_b) = (ca.clone(), ip_b.clone());
            async move { (!ping_from(&ca, &ip_b)).then_some(()) }
        },
    )
    .await;
    client.instance_sg_attach("b", "ping").await.unwrap();
    wait_for("b reachable again", Duration::from_secs(15), || {
        let (ca, ip_b) = (ca.clone(), ip_b.clone());
        async move { ping_from(&ca, &ip_b).then_some(()) }
    })
    .await;
    assert_eq!(
        link_index(&ns_b, &port_of(&b)),
        Some(port_before),
        "port kept, not recreated"
    );

    // Default deny: c has no group, so nobody may ping it; giving it the group opens it.
    let cc = client
        .instance_create(&launch("c", blue.id, &[]))
        .await
        .unwrap();
    let cc = c.wait_instance(&cc.name, InstanceStatus::Running).await;
    let ip_c = cc.private_ip.clone().unwrap();
    let ccid = cc.runtime_id.clone().unwrap();
    assert!(!ping_from(&ca, &ip_c), "ingress to c is denied by default");
    assert!(
        ping_from(&ccid, &ip_a),
        "c's egress is open and the reply comes back (stateful)"
    );
    client.instance_sg_attach("c", "ping").await.unwrap();
    wait_for(
        "c accepts pings once it has the group",
        Duration::from_secs(15),
        || {
            let (ca, ip_c) = (ca.clone(), ip_c.clone());
            async move { ping_from(&ca, &ip_c).then_some(()) }
        },
    )
    .await;

    // Another VPC with the very same addresses: its instance gets a's address, and neither
    // side can reach the other.
    let d = client
        .instance_create(&launch("d", red.id, &["ping"]))
        .await
        .unwrap();
    let d = c.wait_instance(&d.name, InstanceStatus::Running).await;
    assert_eq!(d.private_ip, a.private_ip, "same address, other VPC");
    let cd = d.runtime_id.clone().unwrap();
    assert!(!ping_from(&cd, &ip_b), "red cannot reach blue's b");
    assert!(!ping_from(&cd, &ip_c), "red cannot reach blue's c");
    // b pinging a's address reaches blue's a, never red's d: take a down and the ping fails.
    client.instance_stop("a").await.unwrap();
    c.wait_instance("a", InstanceStatus::Stopped).await;
    assert!(
        !ping_from(&cb, &ip_a),
        "with a stopped, a's address is unreachable from blue"
    );

    for n in ["a", "b", "c", "d"] {
        client.instance_delete(n).await.unwrap();
    }
    for n in ["a", "b", "c", "d"] {
        c.wait_instance_gone(n).await;
    }
    // The hosts tore their VPCs down: no namespaces, uplinks or nft tables of ours left.
    wait_for(
        "VPC namespaces removed",
        Duration::from_secs(15),
        || async {
            let left: Vec<String> = std::fs::read_dir("/run/netns")
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("ve1") || n.starts_with("ve2"))
                .collect();
            left.is_empty().then_some(())
        },
    )
    .await;
    for host in ["veh1", "veh2"] {
        let tables = String::from_utf8_lossy(
            &sh(&["ip", "netns", "exec", host, "nft", "list", "tables"]).stdout,
        )
        .into_owned();
        assert!(
            !tables.contains("ve1") && !tables.contains("ve2"),
            "{host}: {tables}"
        );
        let links =
            String::from_utf8_lossy(&sh(&["ip", "-n", host, "-o", "link"]).stdout).into_owned();
        assert!(
            !links.contains("ve1u") && !links.contains("ve2u"),
            "{host}: {links}"
        );
    }
    kept.abort();
    restarted.abort();
}
