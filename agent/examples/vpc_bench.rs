//! Benchmark of the Linux VPC data plane on one machine: two simulated hosts (network
//! namespaces on a veth/bridge underlay), one instance on each in one VPC. Reports medians of
//! ping RTT and iperf3 TCP throughput over VXLAN vs the raw underlay, and `attach` latency.
//!
//! `cargo run --release -p cloud-agent --example vpc_bench` (as root; needs ping and iperf3).
//! Everything it creates is named `vb*` and removed at the end (also on failure).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use cloud_agent::network::{
    FirewallRule, LinuxNetwork, LinuxNetworkConfig, Mac, NetworkAttachment, NetworkBackend,
    Protocol, RemoteEndpoint, SubnetSpec, VpcSpec,
};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const TP: &str = "vb";

fn run(args: &[&str]) -> (bool, String) {
    let o = Command::new(args[0]).args(&args[1..]).output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

fn must(args: &[&str]) -> String {
    let (ok, out) = run(args);
    assert!(ok, "{args:?} failed");
    out
}

fn cleanup() {
    for n in std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = n.file_name().to_string_lossy().into_owned();
        if name.starts_with(TP) {
            let _ = run(&["ip", "netns", "del", &name]);
        }
    }
}

struct Guard;
impl Drop for Guard {
    fn drop(&mut self) {
        cleanup();
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn p95(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 * 0.95).ceil() as usize).saturating_sub(1)]
}

/// Average RTT (ms) of `ping -c 50 -i 0.01` from `ns` to `ip`.
fn ping_avg(ns: &str, ip: &str) -> f64 {
    let out = must(&[
        "ip", "netns", "exec", ns, "ping", "-c", "50", "-i", "0.01", "-q", ip,
    ]);
    let line = out.lines().find(|l| l.contains("min/avg/max")).unwrap();
    line.split('=')
        .nth(1)
        .unwrap()
        .trim()
        .split('/')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

/// TCP throughput (Gbit/s) of a 3-second iperf3 run from `client` to `ip` in `server`.
fn iperf(server: &str, client: &str, ip: &str) -> f64 {
    must(&[
        "ip", "netns", "exec", server, "iperf3", "-s", "-1", "-D", "-p", "5201",
    ]);
    for _ in 0..50 {
        let (ok, out) = run(&[
            "ip", "netns", "exec", client, "iperf3", "-c", ip, "-p", "5201", "-t", "3", "-J",
        ]);
        if ok {
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            return v["end"]["sum_received"]["bits_per_second"]
                .as_f64()
                .unwrap()
                / 1e9;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("iperf3 client never connected to {ip}");
}

fn host(n: u8) -> (String, Ipv4Addr, LinuxNetwork) {
    let ns = format!("{TP}h{n}");
    let ip = Ipv4Addr::new(172, 31, 0, n);
    must(&["ip", "netns", "add", &ns]);
    let sport = format!("s{n}");
    let sw = format!("{TP}sw");
    must(&[
        "ip", "link", "add", &sport, "netns", &sw, "type", "veth", "peer", "name", "u0", "netns",
        &ns,
    ]);
    must(&[
        "ip", "-n", &sw, "link", "set", &sport, "master", "br0", "up",
    ]);
    must(&[
        "ip",
        "-n",
        &ns,
        "addr",
        "add",
        &format!("{ip}/24"),
        "dev",
        "u0",
    ]);
    must(&["ip", "-n", &ns, "link", "set", "u0", "up"]);
    let mut cfg = LinuxNetworkConfig::new(ip);
    cfg.prefix = format!("{TP}{n}");
    cfg.host_netns = Some(PathBuf::from(format!("/run/netns/{ns}")));
    (ns, ip, LinuxNetwork::new(cfg))
}

fn attachment(n: u8) -> NetworkAttachment {
    NetworkAttachment {
        vpc_id: "bench".into(),
        vni: 300,
        subnet_id: "s".into(),
        ip: Ipv4Addr::new(10, 30, 0, n),
        prefix_len: 24,
        gateway: Ipv4Addr::new(10, 30, 0, 1),
        mac: Mac([2, 0x7c, 0, 0, 0, n]),
        ingress: vec![FirewallRule {
            protocol: Protocol::All,
            port_min: 0,
            port_max: 0,
            cidrs: vec!["10.30.0.0/24".parse().unwrap()],
        }],
        egress: vec![],
        egress_restricted: false,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let (ok, uid) = run(&["id", "-u"]);
    if !ok || uid.trim() != "0" {
        eprintln!("vpc_bench must run as root");
        std::process::exit(2);
    }
    cleanup();
    let _guard = Guard;
    let sw = format!("{TP}sw");
    must(&["ip", "netns", "add", &sw]);
    must(&["ip", "-n", &sw, "link", "add", "br0", "type", "bridge"]);
    must(&["ip", "-n", &sw, "link", "set", "br0", "up"]);
    let (h1, ip1, net1) = host(1);
    let (_h2, ip2, net2) = host(2);
    let (a, b) = (attachment(10), attachment(11));
    let vpc = VpcSpec {
        vpc_id: "bench".into(),
        vni: 300,
        subnets: vec![SubnetSpec {
            subnet_id: "s".into(),
            cidr: "10.30.0.0/24".parse().unwrap(),
            gateway: Ipv4Addr::new(10, 30, 0, 1),
            nat_egress: false,
        }],
        peers: vec![ip1, ip2],
        remote_endpoints: vec![
            RemoteEndpoint {
                mac: a.mac,
                ip: a.ip,
                node_ip: ip1,
            },
            RemoteEndpoint {
                mac: b.mac,
                ip: b.ip,
                node_ip: ip2,
            },
        ],
    };
    let t = Instant::now();
    net1.sync_vpcs(std::slice::from_ref(&vpc)).await.unwrap();
    let sync_ms = t.elapsed().as_secs_f64() * 1e3;
    net2.sync_vpcs(std::slice::from_ref(&vpc)).await.unwrap();
    let (ia, ib) = (format!("{TP}ia"), format!("{TP}ib"));
    for ns in [&ia, &ib] {
        must(&["ip", "netns", "add", ns]);
    }
    net1.attach(
        "0190a000-0000-7000-8000-00000000000a",
        &PathBuf::from(format!("/run/netns/{ia}")),
        &a,
    )
    .await
    .unwrap();
    net2.attach(
        "0190a000-0000-7000-8000-00000000000b",
        &PathBuf::from(format!("/run/netns/{ib}")),
        &b,
    )
    .await
    .unwrap();
    must(&[
        "ip",
        "netns",
        "exec",
        &ia,
        "ping",
        "-c",
        "3",
        "-i",
        "0.2",
        "-q",
        "10.30.0.11",
    ]);

    let runs = 5;
    let rtt_vx = median((0..runs).map(|_| ping_avg(&ia, "10.30.0.11")).collect());
    let rtt_ul = median((0..runs).map(|_| ping_avg(&h1, "172.31.0.2")).collect());
    let tput_vx = median((0..3).map(|_| iperf(&ib, &ia, "10.30.0.11")).collect());
    let tput_ul = median((0..3).map(|_| iperf(&_h2, &h1, "172.31.0.2")).collect());

    // attach latency: fresh instance namespaces on host 1 (full port creation), then
    // re-attaches of an existing port (rules-only replacement).
    let mut create = Vec::new();
    let mut replace = Vec::new();
    for i in 0..20u8 {
        let ns = format!("{TP}x{i}");
        must(&["ip", "netns", "add", &ns]);
        let path = PathBuf::from(format!("/run/netns/{ns}"));
        let id = format!("0190a000-0000-7000-8000-0000000001{i:02x}");
        let att = attachment(100 + i);
        let t = Instant::now();
        net1.attach(&id, &path, &att).await.unwrap();
        create.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        net1.attach(&id, &path, &att).await.unwrap();
        replace.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let t = Instant::now();
    net1.sync_vpcs(std::slice::from_ref(&vpc)).await.unwrap();
    let resync_ms = t.elapsed().as_secs_f64() * 1e3;
    net1.sync_vpcs(&[]).await.unwrap();
    net2.sync_vpcs(&[]).await.unwrap();

    println!("| metric | VXLAN (instance → instance) | raw underlay (host → host) |");
    println!("|---|---|---|");
    println!("| ping RTT, median of {runs}×50 (ms) | {rtt_vx:.3} | {rtt_ul:.3} |");
    println!("| TCP throughput iperf3 -t 3, median of 3 (Gbit/s) | {tput_vx:.2} | {tput_ul:.2} |");
    println!();
    println!("| operation | median (ms) | p95 (ms) |");
    println!("|---|---|---|");
    println!(
        "| attach, new port (20 runs) | {:.1} | {:.1} |",
        median(create.clone()),
        p95(create)
    );
    println!(
        "| attach, existing port: rules replaced (20 runs) | {:.1} | {:.1} |",
        median(replace.clone()),
        p95(replace)
    );
    println!("| sync_vpcs, new VPC (1 run) | {sync_ms:.1} | |");
    println!("| sync_vpcs, unchanged VPC with 21 ports (1 run) | {resync_ms:.1} | |");
}
