//! Multi-host tests of the Linux VPC data plane. Every simulated host is a network namespace
//! (`<tp>h<n>`) on a shared underlay bridge (namespace `<tp>sw`, 172.31.0.<n>/24); every
//! "instance" is a plain namespace (`<tp>i<name>`) handed to `attach` as /run/netns/<name>.
//! Each test uses its own two-letter prefix `<tp>` (backends use `<tp><n>`), so tests run in
//! parallel, and a Drop guard deletes every namespace of that prefix even when a test fails.
//!
//! Needs root and iproute2/nftables/ping; otherwise the tests skip with a printed reason,
//! unless THECLOUD_REQUIRE_NETNS=1 (CI), in which case they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use cloud_agent::network::{
    FirewallRule, LinuxNetwork, LinuxNetworkConfig, Mac, NetworkAttachment, NetworkBackend,
    NetworkError, Protocol, RemoteEndpoint, SubnetSpec, VpcSpec,
};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- harness

fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"))
}

fn must(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Whether this machine can run the tests; panics when CI requires them.
fn can_run() -> bool {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    let reason = if String::from_utf8_lossy(&uid).trim() != "0" {
        Some("not root".to_owned())
    } else {
        ["ip", "nft", "ping"]
            .iter()
            .find(|t| Command::new(t).arg("-V").output().is_err())
            .map(|t| format!("{t} is not installed"))
    };
    match reason {
        None => true,
        Some(r) if std::env::var("THECLOUD_REQUIRE_NETNS").as_deref() == Ok("1") => {
            panic!("THECLOUD_REQUIRE_NETNS=1 but network namespaces are unusable: {r}")
        }
        Some(r) => {
            eprintln!("skipping: network namespace tests need root and ip/nft/ping ({r})");
            false
        }
    }
}

fn del_netns_with_prefix(tp: &str) {
    for n in std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = n.file_name().to_string_lossy().into_owned();
        if name.starts_with(tp) {
            let _ = run(&["ip", "netns", "del", &name]);
        }
    }
}

/// A lab of simulated hosts; deletes every namespace of its prefix on drop.
struct Lab {
    tp: &'static str,
    hosts: Vec<Host>,
}

struct Host {
    ns: String,
    ip: Ipv4Addr,
    net: Arc<LinuxNetwork>,
}

impl Lab {
    fn new(tp: &'static str, hosts: usize) -> Lab {
        del_netns_with_prefix(tp);
        let sw = format!("{tp}sw");
        must(&["ip", "netns", "add", &sw]);
        must(&["ip", "-n", &sw, "link", "add", "br0", "type", "bridge"]);
        must(&["ip", "-n", &sw, "link", "set", "br0", "up"]);
        let mut lab = Lab {
            tp,
            hosts: Vec::new(),
        };
        for _ in 0..hosts {
            lab.add_host();
        }
        lab
    }

    fn add_host(&mut self) -> usize {
        let n = self.hosts.len() + 1;
        let (tp, sw) = (self.tp, format!("{}sw", self.tp));
        let ns = format!("{tp}h{n}");
        let ip = Ipv4Addr::new(172, 31, 0, n as u8);
        must(&["ip", "netns", "add", &ns]);
        let sport = format!("s{n}");
        must(&[
            "ip", "link", "add", &sport, "netns", &sw, "type", "veth", "peer", "name", "u0",
            "netns", &ns,
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
        must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        let mut cfg = LinuxNetworkConfig::new(ip);
        cfg.prefix = format!("{tp}{n}");
        cfg.host_netns = Some(PathBuf::from(format!("/run/netns/{ns}")));
        self.hosts.push(Host {
            ns,
            ip,
            net: Arc::new(LinuxNetwork::new(cfg)),
        });
        n
    }

    fn host(&self, n: usize) -> &Host {
        &self.hosts[n - 1]
    }

    /// A fresh instance namespace; returns (name, path).
    fn instance(&self, name: &str) -> (String, PathBuf) {
        let ns = format!("{}i{name}", self.tp);
        must(&["ip", "netns", "add", &ns]);
        let path = PathBuf::from(format!("/run/netns/{ns}"));
        (ns, path)
    }

    fn peers(&self) -> Vec<Ipv4Addr> {
        self.hosts.iter().map(|h| h.ip).collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.hosts.clear();
        del_netns_with_prefix(self.tp);
    }
}

fn subnet(id: &str, cidr: &str, gw: &str, nat: bool) -> SubnetSpec {
    SubnetSpec {
        subnet_id: id.into(),
        cidr: cidr.parse().unwrap(),
        gateway: gw.parse().unwrap(),
        nat_egress: nat,
    }
}

fn allow(protocol: Protocol, ports: (u16, u16), cidr: &str) -> FirewallRule {
    FirewallRule {
        protocol,
        port_min: ports.0,
        port_max: ports.1,
        cidrs: vec![cidr.parse().unwrap()],
    }
}

/// One instance of a test: where it runs and its attachment.
struct Inst {
    id: String,
    ns: String,
    path: PathBuf,
    host: usize,
    att: NetworkAttachment,
}

impl Inst {
    fn new(
        lab: &Lab,
        name: &str,
        host: usize,
        vpc: &VpcSpec,
        ip: &str,
        ingress: Vec<FirewallRule>,
    ) -> Inst {
        let ip: Ipv4Addr = ip.parse().unwrap();
        let s = vpc.subnets.iter().find(|s| s.cidr.contains(&ip)).unwrap();
        let o = ip.octets();
        let (ns, path) = lab.instance(name);
        Inst {
            id: format!(
                "0190a000-0000-7000-8000-{:04x}{:02x}{:02x}{:02x}{:02x}",
                vpc.vni, o[0], o[1], o[2], o[3]
            ),
            ns,
            path,
            host,
            att: NetworkAttachment {
                vpc_id: vpc.vpc_id.clone(),
                vni: vpc.vni,
                subnet_id: s.subnet_id.clone(),
                ip,
                prefix_len: s.cidr.prefix_len(),
                gateway: s.gateway,
                mac: Mac([0x02, 0x7c, (vpc.vni & 0xff) as u8, o[1], o[2], o[3]]),
                ingress,
                egress: vec![],
                egress_restricted: false,
            },
        }
    }

    fn remote(&self, lab: &Lab) -> RemoteEndpoint {
        RemoteEndpoint {
            mac: self.att.mac,
            ip: self.att.ip,
            node_ip: lab.host(self.host).ip,
        }
    }

    async fn attach(&self, lab: &Lab) -> Result<(), NetworkError> {
        lab.host(self.host)
            .net
            .attach(&self.id, &self.path, &self.att)
            .await
    }
}

fn vpc(id: &str, vni: u32, subnets: Vec<SubnetSpec>, lab: &Lab, insts: &[&Inst]) -> VpcSpec {
    VpcSpec {
        vpc_id: id.into(),
        vni,
        subnets,
        peers: lab.peers(),
        remote_endpoints: insts.iter().map(|i| i.remote(lab)).collect(),
    }
}

/// Syncs `vpcs` (the same desired state) on the given hosts.
async fn sync(lab: &Lab, hosts: &[usize], vpcs: &[VpcSpec]) {
    for h in hosts {
        lab.host(*h).net.sync_vpcs(vpcs).await.unwrap();
    }
}

/// `ping` from namespace `ns`: true if any of `tries` single pings gets a reply.
fn ping(ns: &str, ip: &str, tries: u32) -> bool {
    (0..tries).any(|_| {
        run(&[
            "ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "1", "-q", ip,
        ])
        .status
        .success()
    })
}

/// Runs `f` on a thread inside namespace `ns`.
fn in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
}

/// A TCP echo server in `ns` on `port`, serving until the returned flag is set.
fn echo_server(ns: &str, port: u16) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    in_ns(ns, move || {
        let l = TcpListener::bind(("0.0.0.0", port)).unwrap();
        l.set_nonblocking(true).unwrap();
        tx.send(()).unwrap();
        while !s.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((mut c, _)) => {
                    c.set_nonblocking(false).unwrap();
                    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    let mut buf = [0u8; 64];
                    if let Ok(n) = c.read(&mut buf) {
                        let _ = c.write_all(&buf[..n]);
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    rx.recv().unwrap();
    stop
}

/// Whether a TCP echo from `ns` to ip:port works.
fn tcp_echo(ns: &str, ip: Ipv4Addr, port: u16) -> bool {
    in_ns(ns, move || {
        let addr = SocketAddr::from((ip, port));
        let Ok(mut c) = TcpStream::connect_timeout(&addr, Duration::from_millis(800)) else {
            return false;
        };
        c.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut buf = [0u8; 5];
        c.write_all(b"hello").is_ok() && c.read_exact(&mut buf).is_ok() && &buf == b"hello"
    })
    .join()
    .unwrap()
}

fn ifindex(ns: &str, dev: &str) -> String {
    let out = must(&["ip", "-n", ns, "-o", "link", "show", dev]);
    out.split(':').next().unwrap().to_owned()
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn vxlan_same_and_cross_subnet_and_idempotency() {
    if !can_run() {
        return;
    }
    let lab = Lab::new("na", 2);
    let subnets = vec![
        subnet("s1", "10.1.1.0/24", "10.1.1.1", false),
        subnet("s2", "10.1.2.0/24", "10.1.2.1", false),
    ];
    let v0 = vpc("vpc-a", 100, subnets.clone(), &lab, &[]);
    let icmp = || vec![allow(Protocol::Icmp, (0, 0), "10.1.0.0/16")];
    let a = Inst::new(&lab, "a", 1, &v0, "10.1.1.10", icmp());
    let b = Inst::new(&lab, "b", 2, &v0, "10.1.1.11", icmp());
    let c = Inst::new(&lab, "c", 2, &v0, "10.1.2.10", icmp());
    let v = vpc("vpc-a", 100, subnets, &lab, &[&a, &b, &c]);

    // Attaching before the VPC exists, or into a missing namespace, fails cleanly.
    let err = a.attach(&lab).await.unwrap_err();
    assert!(matches!(err, NetworkError::Invalid(_)), "{err}");
    sync(&lab, &[1, 2], std::slice::from_ref(&v)).await;
    let gone = PathBuf::from("/run/netns/na-no-such-ns");
    let err = lab
        .host(1)
        .net
        .attach(&a.id, &gone, &a.att)
        .await
        .unwrap_err();
    assert!(matches!(err, NetworkError::NamespaceGone(_)), "{err}");
    // The host's own namespace is never taken for an instance's (a stale or reused PID).
    let host_ns = PathBuf::from(format!("/run/netns/{}", lab.host(1).ns));
    let err = lab
        .host(1)
        .net
        .attach(&a.id, &host_ns, &a.att)
        .await
        .unwrap_err();
    assert!(matches!(err, NetworkError::Invalid(_)), "{err}");

    let t = Instant::now();
    for i in [&a, &b, &c] {
        i.attach(&lab).await.unwrap();
    }
    eprintln!("3 attaches took {:?}", t.elapsed());
    assert!(
        ping(&a.ns, "10.1.1.11", 3),
        "same subnet across hosts over VXLAN"
    );
    assert!(ping(&a.ns, "10.1.2.10", 3), "cross subnet via the gateways");
    assert!(ping(&c.ns, "10.1.1.10", 3), "cross subnet, other direction");
    assert!(ping(&a.ns, "10.1.1.1", 2), "own gateway");
    let eth0 = must(&["ip", "-n", &a.ns, "-o", "link", "show", "eth0"]);
    assert!(
        eth0.contains("mtu 1450") && eth0.contains(&a.att.mac.to_string()),
        "{eth0}"
    );

    // Idempotency: same calls again change nothing (same devices), no errors.
    let vpc_ns = "na1v100";
    let before = (
        ifindex(vpc_ns, "br0"),
        ifindex(vpc_ns, "vx0"),
        ifindex(&a.ns, "eth0"),
    );
    let rules_before = must(&["ip", "netns", "exec", vpc_ns, "nft", "list", "ruleset"]);
    sync(&lab, &[1, 2], std::slice::from_ref(&v)).await;
    a.attach(&lab).await.unwrap();
    a.attach(&lab).await.unwrap();
    let after = (
        ifindex(vpc_ns, "br0"),
        ifindex(vpc_ns, "vx0"),
        ifindex(&a.ns, "eth0"),
    );
    assert_eq!(before, after);
    let rules_after = must(&["ip", "netns", "exec", vpc_ns, "nft", "list", "ruleset"]);
    assert_eq!(rules_before, rules_after);
    let fdb = must(&["bridge", "-n", vpc_ns, "fdb", "show", "dev", "vx0"]);
    assert_eq!(
        fdb.matches("00:00:00:00:00:00 dst 172.31.0.2").count(),
        1,
        "{fdb}"
    );
    assert!(
        fdb.contains(&format!("{} dst 172.31.0.2", b.att.mac)),
        "{fdb}"
    );
    assert!(ping(&a.ns, "10.1.1.11", 3));

    let ports = lab.host(2).net.ports().await.unwrap();
    let mut ids: Vec<_> = ports
        .iter()
        .map(|p| (p.instance_id.clone(), p.vpc_id.clone()))
        .collect();
    ids.sort();
    let mut want = vec![
        (b.id.clone(), "vpc-a".to_owned()),
        (c.id.clone(), "vpc-a".to_owned()),
    ];
    want.sort();
    assert_eq!(ids, want);

    // Container restarted: new namespace at another path → port recreated there.
    let (ns2, path2) = lab.instance("a2");
    lab.host(1).net.attach(&a.id, &path2, &a.att).await.unwrap();
    assert!(
        ping(&ns2, "10.1.1.11", 3),
        "re-attached into a new namespace"
    );
    assert!(
        run(&["ip", "-n", &a.ns, "link", "show", "eth0"])
            .status
            .code()
            != Some(0)
    );
}

#[tokio::test]
async fn vpcs_are_isolated_on_one_host_and_across_hosts() {
    if !can_run() {
        return;
    }
    let lab = Lab::new("nb", 2);
    let sn = || vec![subnet("s", "10.2.0.0/24", "10.2.0.1", true)];
    let any_icmp = || vec![allow(Protocol::Icmp, (0, 0), "0.0.0.0/0")];
    let (va0, vb0) = (
        vpc("vpc-a", 101, sn(), &lab, &[]),
        vpc("vpc-b", 102, sn(), &lab, &[]),
    );
    let a1 = Inst::new(&lab, "a1", 1, &va0, "10.2.0.10", any_icmp());
    let a2 = Inst::new(&lab, "a2", 2, &va0, "10.2.0.11", any_icmp());
    let b1 = Inst::new(&lab, "b1", 1, &vb0, "10.2.0.12", any_icmp());
    let b2 = Inst::new(&lab, "b2", 2, &vb0, "10.2.0.11", any_icmp()); // same IP as a2
    let va = vpc("vpc-a", 101, sn(), &lab, &[&a1, &a2]);
    let vb = vpc("vpc-b", 102, sn(), &lab, &[&b1, &b2]);
    sync(&lab, &[1, 2], &[va, vb]).await;
    for i in [&a1, &a2, &b1, &b2] {
        i.attach(&lab).await.unwrap();
    }
    assert!(ping(&a1.ns, "10.2.0.11", 3), "a1 → a2");
    assert!(ping(&b1.ns, "10.2.0.11", 3), "b1 → b2");
    // 10.2.0.11 answered each from its own VPC: the learnt MAC is the right one.
    let neigh_a = must(&["ip", "-n", &a1.ns, "neigh", "show", "10.2.0.11"]);
    let neigh_b = must(&["ip", "-n", &b1.ns, "neigh", "show", "10.2.0.11"]);
    assert!(neigh_a.contains(&a2.att.mac.to_string()), "{neigh_a}");
    assert!(neigh_b.contains(&b2.att.mac.to_string()), "{neigh_b}");
    assert!(
        !ping(&a1.ns, "10.2.0.12", 1),
        "a1 must not reach b1 (same host)"
    );
    assert!(
        !ping(&a2.ns, "10.2.0.12", 1),
        "a2 must not reach b1 (across hosts)"
    );
    // Not through the uplinks either: B's transit address from A is dropped by the host.
    let b_transit = "100.64.1.154"; // 100.64.0.0 + 4*102 + 2
    let sw = format!("{}sw", lab.tp);
    must(&[
        "ip",
        "-n",
        &sw,
        "addr",
        "add",
        "172.31.0.200/24",
        "dev",
        "br0",
    ]);
    assert!(
        ping(&b1.ns, "172.31.0.200", 2),
        "sanity: B's NAT egress works"
    );
    assert!(
        !ping(&a1.ns, b_transit, 1),
        "VPC A must not reach VPC B via the host"
    );
}

#[tokio::test]
async fn security_groups_default_deny_ports_sources_and_state() {
    if !can_run() {
        return;
    }
    let lab = Lab::new("nc", 2);
    let sn = || vec![subnet("s", "10.3.0.0/24", "10.3.0.1", false)];
    let v0 = vpc("vpc-c", 103, sn(), &lab, &[]);
    // s accepts tcp/8080 from c only (a source-group style /32); c and d accept nothing.
    let s = Inst::new(
        &lab,
        "s",
        1,
        &v0,
        "10.3.0.10",
        vec![allow(Protocol::Tcp, (8080, 8080), "10.3.0.11/32")],
    );
    let mut c = Inst::new(&lab, "c", 2, &v0, "10.3.0.11", vec![]);
    let d = Inst::new(&lab, "d", 2, &v0, "10.3.0.12", vec![]);
    sync(
        &lab,
        &[1, 2],
        &[vpc("vpc-c", 103, sn(), &lab, &[&s, &c, &d])],
    )
    .await;
    for i in [&s, &c, &d] {
        i.attach(&lab).await.unwrap();
    }
    let stop_s = echo_server(&s.ns, 8080);
    let stop_c = echo_server(&c.ns, 9090);
    assert!(
        tcp_echo(&c.ns, s.att.ip, 8080),
        "allowed port from the allowed source (replies pass c's deny-all ingress: stateful)"
    );
    assert!(
        !ping(&c.ns, "10.3.0.10", 1),
        "ICMP is not allowed: default deny"
    );
    assert!(
        !tcp_echo(&d.ns, s.att.ip, 8080),
        "other source is not in the /32"
    );
    assert!(!tcp_echo(&s.ns, c.att.ip, 9090), "c denies all ingress");
    assert!(ping(&c.ns, "10.3.0.1", 2), "the gateway answers ICMP");

    // Restricted egress: c may only talk to tcp/8081 → its 8080 connection is refused.
    c.att.egress_restricted = true;
    c.att.egress = vec![allow(Protocol::Tcp, (8081, 8081), "10.3.0.0/24")];
    c.attach(&lab).await.unwrap();
    assert!(!tcp_echo(&c.ns, s.att.ip, 8080), "egress restricted");
    c.att.egress = vec![allow(Protocol::Tcp, (8000, 8100), "10.3.0.10/32")];
    c.attach(&lab).await.unwrap();
    assert!(
        tcp_echo(&c.ns, s.att.ip, 8080),
        "egress range allows it again"
    );

    // Opening ICMP on s takes effect on the next attach.
    let mut s2 = s;
    s2.att
        .ingress
        .push(allow(Protocol::Icmp, (0, 0), "10.3.0.0/24"));
    s2.attach(&lab).await.unwrap();
    assert!(ping(&d.ns, "10.3.0.10", 2), "ICMP allowed after the update");
    stop_s.store(true, Ordering::Relaxed);
    stop_c.store(true, Ordering::Relaxed);
}

#[tokio::test]
async fn rule_replacement_is_atomic_and_never_opens_ingress() {
    if !can_run() {
        return;
    }
    let lab = Lab::new("nd", 1);
    let sn = || vec![subnet("s", "10.4.0.0/24", "10.4.0.1", false)];
    let v0 = vpc("vpc-d", 104, sn(), &lab, &[]);
    let mut x = Inst::new(&lab, "x", 1, &v0, "10.4.0.10", vec![]);
    let y = Inst::new(
        &lab,
        "y",
        1,
        &v0,
        "10.4.0.11",
        vec![allow(Protocol::All, (0, 0), "10.4.0.0/24")],
    );
    sync(&lab, &[1], &[vpc("vpc-d", 104, sn(), &lab, &[])]).await;
    x.attach(&lab).await.unwrap();
    y.attach(&lab).await.unwrap();
    assert!(ping(&x.ns, "10.4.0.11", 2), "sanity: x → y");

    // A ping flood y → x (never allowed) runs while x's rules are replaced 50 times.
    let yns = y.ns.clone();
    let flood = std::thread::spawn(move || {
        run(&[
            "ip",
            "netns",
            "exec",
            &yns,
            "ping",
            "-c",
            "400",
            "-i",
            "0.005",
            "-W",
            "1",
            "-q",
            "10.4.0.10",
        ])
    });
    let t = Instant::now();
    for i in 0..50u16 {
        x.att.ingress = vec![
            allow(Protocol::Tcp, (8000 + i, 8000 + i), "10.4.0.0/24"),
            allow(Protocol::Udp, (53, 53), "10.4.0.11/32"),
        ];
        x.attach(&lab).await.unwrap();
    }
    let per = t.elapsed() / 50;
    let out = flood.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "50 replacements, {per:?} each; flood: {}",
        text.lines().rev().nth(1).unwrap_or("")
    );
    assert!(
        text.contains(" 0 received"),
        "a blocked flow got replies: {text}"
    );
    // The chain holds exactly the last rule set (flushed and refilled in one transaction).
    let chain = must(&[
        "ip",
        "netns",
        "exec",
        "nd1v104",
        "nft",
        "list",
        "chain",
        "inet",
        "nd1_sg",
        &format!("in_{}", cloud_agent::network::port_name(&x.id)),
    ]);
    assert!(
        chain.contains("tcp dport 8049 accept") && !chain.contains("8048"),
        "{chain}"
    );
    assert_eq!(chain.matches("accept").count(), 2, "{chain}");
}

#[tokio::test]
async fn anti_spoofing_drops_foreign_addresses() {
    if !can_run() {
        return;
    }
    let lab = Lab::new("ne", 1);
    let sn = || vec![subnet("s", "10.5.0.0/24", "10.5.0.1", false)];
    let v0 = vpc("vpc-e", 105, sn(), &lab, &[]);
    let icmp = || vec![allow(Protocol::Icmp, (0, 0), "10.5.0.0/24")];
    let p = Inst::new(&lab, "p", 1, &v0, "10.5.0.10", icmp());
    let q = Inst::new(&lab, "q", 1, &v0, "10.5.0.11", icmp());
    sync(&lab, &[1], &[vpc("vpc-e", 105, sn(), &lab, &[])]).await;
    p.attach(&lab).await.unwrap();
    q.attach(&lab).await.unwrap();
    assert!(ping(&p.ns, "10.5.0.11", 2), "sanity");
    // p takes another address (one q would accept): dropped.
    must(&["ip", "-n", &p.ns, "addr", "flush", "dev", "eth0"]);
    must(&[
        "ip",
        "-n",
        &p.ns,
        "addr",
        "add",
        "10.5.0.99/24",
        "dev",
        "eth0",
    ]);
    assert!(
        !ping(&p.ns, "10.5.0.11", 2),
        "spoofed source address must be dropped"
    );
    must(&["ip", "-n", &p.ns, "addr", "flush", "dev", "eth0"]);
    must(&[
        "ip",
        "-n",
        &p.ns,
        "addr",
        "add",
        "10.5.0.10/24",
        "dev",
        "eth0",
    ]);
    assert!(ping(&p.ns, "10.5.0.11", 3), "own address works again");
    // A foreign MAC is dropped too.
    must(&[
        "ip",
        "-n",
        &p.ns,
        "link",
        "set",
        "eth0",
        "address",
        "02:00:de:ad:be:ef",
    ]);
    must(&["ip", "-n", &q.ns, "neigh", "flush", "all"]);
    assert!(!ping(&p.ns, "10.5.0.11", 2), "spoofed MAC must be dropped");
}

#[tokio::test]
async fn peers_update_in_place_detach_and_cleanup() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new("nf", 2);
    let sn = || vec![subnet("s", "10.6.0.0/24", "10.6.0.1", true)];
    let v0 = vpc("vpc-f", 106, sn(), &lab, &[]);
    let icmp = || vec![allow(Protocol::Icmp, (0, 0), "10.6.0.0/24")];
    let i1 = Inst::new(&lab, "i1", 1, &v0, "10.6.0.10", icmp());
    let i2 = Inst::new(&lab, "i2", 2, &v0, "10.6.0.11", icmp());
    sync(&lab, &[1, 2], &[vpc("vpc-f", 106, sn(), &lab, &[&i1, &i2])]).await;
    i1.attach(&lab).await.unwrap();
    i2.attach(&lab).await.unwrap();
    assert!(ping(&i1.ns, "10.6.0.11", 3));
    let vx_before = ifindex("nf1v106", "vx0");

    // A third host joins; a ping i1 → i2 runs meanwhile and must lose nothing.
    lab.add_host();
    let i3 = Inst::new(&lab, "i3", 3, &v0, "10.6.0.12", icmp());
    let ns1 = i1.ns.clone();
    let pinger = std::thread::spawn(move || {
        run(&[
            "ip",
            "netns",
            "exec",
            &ns1,
            "ping",
            "-c",
            "30",
            "-i",
            "0.02",
            "-W",
            "1",
            "-q",
            "10.6.0.11",
        ])
    });
    let full = vpc("vpc-f", 106, sn(), &lab, &[&i1, &i2, &i3]);
    sync(&lab, &[1, 2, 3], std::slice::from_ref(&full)).await;
    i3.attach(&lab).await.unwrap();
    let out = String::from_utf8_lossy(&pinger.join().unwrap().stdout).into_owned();
    assert!(
        out.contains("30 received"),
        "traffic disturbed by the peer update: {out}"
    );
    assert_eq!(ifindex("nf1v106", "vx0"), vx_before, "vx0 was recreated");
    assert!(ping(&i1.ns, "10.6.0.12", 3), "i1 → i3 on the new host");
    assert!(ping(&i3.ns, "10.6.0.11", 3), "i3 → i2");
    let fdb = must(&["bridge", "-n", "nf1v106", "fdb", "show", "dev", "vx0"]);
    assert!(fdb.contains("00:00:00:00:00:00 dst 172.31.0.3"), "{fdb}");

    // Host 3 leaves again: its flood entry goes, the others stay.
    let two = VpcSpec {
        peers: full.peers[..2].to_vec(),
        remote_endpoints: full.remote_endpoints[..2].to_vec(),
        ..full.clone()
    };
    sync(&lab, &[1], std::slice::from_ref(&two)).await;
    let fdb = must(&["bridge", "-n", "nf1v106", "fdb", "show", "dev", "vx0"]);
    assert!(
        !fdb.contains("172.31.0.3") && fdb.contains("dst 172.31.0.2"),
        "{fdb}"
    );

    // Detach: port and rules gone; twice is fine.
    lab.host(2).net.detach(&i2.id).await.unwrap();
    lab.host(2).net.detach(&i2.id).await.unwrap();
    assert!(lab.host(2).net.ports().await.unwrap().is_empty());
    assert!(!ping(&i1.ns, "10.6.0.11", 1));
    let rules = must(&[
        "ip", "netns", "exec", "nf2v106", "nft", "list", "table", "inet", "nf2_sg",
    ]);
    assert!(
        !rules.contains("10.6.0.11") && !rules.contains("in_p"),
        "{rules}"
    );
    // Rules of a port whose instance namespace died are removed too.
    must(&["ip", "netns", "del", &i3.ns]);
    std::thread::sleep(Duration::from_millis(200));
    lab.host(3).net.detach(&i3.id).await.unwrap();
    let rules = must(&[
        "ip", "netns", "exec", "nf3v106", "nft", "list", "table", "inet", "nf3_sg",
    ]);
    assert!(
        !rules.contains("10.6.0.12") && !rules.contains("in_p"),
        "{rules}"
    );

    // sync_vpcs([]) removes everything of the prefix; twice is fine.
    for h in [1, 2, 3] {
        let net = &lab.host(h).net;
        net.sync_vpcs(&[]).await.unwrap();
        net.sync_vpcs(&[]).await.unwrap();
        let hns = &lab.host(h).ns;
        assert!(!std::path::Path::new(&format!("/run/netns/nf{h}v106")).exists());
        let links = must(&["ip", "-n", hns, "-o", "link"]);
        assert!(!links.contains(&format!("nf{h}u")), "{links}");
        let rules = must(&["ip", "netns", "exec", hns, "nft", "list", "ruleset"]);
        assert!(!rules.contains(&format!("nf{h}_")), "{rules}");
        assert!(net.ports().await.unwrap().is_empty());
    }
    // And the VPC can be built again right away (VNI and names reusable).
    sync(&lab, &[1], std::slice::from_ref(&two)).await;
    i1.attach(&lab).await.unwrap();
    assert!(ping(&i1.ns, "10.6.0.1", 2));
}

#[tokio::test]
async fn nat_egress_only_for_subnets_that_have_it() {
    if !can_run() {
        return;
    }
    let lab = Lab::new("ng", 2);
    let sn = || {
        vec![
            subnet("pub", "10.7.1.0/24", "10.7.1.1", true),
            subnet("prv", "10.7.2.0/24", "10.7.2.1", false),
        ]
    };
    let v = vpc("vpc-g", 107, sn(), &lab, &[]);
    let en = Inst::new(&lab, "en", 1, &v, "10.7.1.10", vec![]);
    let ep = Inst::new(&lab, "ep", 1, &v, "10.7.2.10", vec![]);
    sync(&lab, &[1], &[v]).await;
    en.attach(&lab).await.unwrap();
    ep.attach(&lab).await.unwrap();
    // "The outside world": an address on the underlay switch that is no node (172.31.0.200).
    // Host 2 is a peer of the VPC, so its underlay address must stay out of reach.
    must(&[
        "ip",
        "-n",
        "ngsw",
        "addr",
        "add",
        "172.31.0.200/24",
        "dev",
        "br0",
    ]);
    assert!(
        ping(&en.ns, "172.31.0.200", 3),
        "NAT egress from a nat_egress subnet"
    );
    assert!(
        !ping(&ep.ns, "172.31.0.200", 1),
        "no egress without nat_egress"
    );
    assert!(
        !ping(&en.ns, "172.31.0.2", 1),
        "a peer node's underlay endpoint is closed to instances"
    );
    assert!(
        !ping(&en.ns, "172.31.0.1", 1),
        "the host's own services stay closed"
    );
    let stop = echo_server("ngsw", 7070);
    assert!(
        tcp_echo(&en.ns, Ipv4Addr::new(172, 31, 0, 200), 7070),
        "TCP through NAT"
    );
    stop.store(true, Ordering::Relaxed);
    let stop = echo_server(&lab.host(2).ns, 7071);
    assert!(
        !tcp_echo(&en.ns, Ipv4Addr::new(172, 31, 0, 2), 7071),
        "no TCP to a peer node's underlay"
    );
    stop.store(true, Ordering::Relaxed);
    let hns = &lab.host(1).ns;
    let nat = must(&[
        "ip", "netns", "exec", hns, "nft", "list", "table", "ip", "ng1_nat",
    ]);
    assert!(nat.contains("masquerade"), "{nat}");
}
