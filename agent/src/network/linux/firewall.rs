//! nftables of the data plane: pure functions that generate `nft -f` transaction text (unit
//! tested below) and `apply`, which feeds one transaction to `nft -f -` in the calling thread's
//! namespace. One transaction is atomic: the kernel switches from the old to the new rules in
//! one step, so an instance's ingress is never open while its rules are being replaced.
//!
//! Tables in a VPC namespace:
//! * `inet <p>_sg` — security groups. Base chain `forward` (bridged IPv4 traverses it thanks to
//!   br_netfilter): established/related accept, invalid drop, then `ip saddr vmap @egress`
//!   (→ `out_<port>`: allowed → return, else drop when restricted) and `ip daddr vmap @ingress`
//!   (→ `in_<port>`: allowed → accept, else drop). Only elements and per-port chains change
//!   when instances come and go.
//! * `inet <p>_vpc` — rebuilt on every sync: gateway input policy, uplink (NAT) policy and the
//!   masquerade of subnets with `nat_egress`.
//! * `bridge <p>_as` — anti-spoofing per port (`ports` vmap by iifname) and the filter that
//!   keeps ARP for the (per-host) gateway addresses from crossing the VXLAN.
//!
//! Host namespace: `inet <p>_host` (uplinks may not reach each other nor the host's own
//! services) and `ip <p>_nat` (masquerade of the transit range).

use super::super::{FirewallRule, NetworkAttachment, NetworkError, Protocol, VpcSpec};
use super::netns::run_command;
use std::fmt::Write;
use std::net::Ipv4Addr;

/// Name of the uplink veth inside a VPC namespace.
pub(crate) const UPLINK: &str = "uplink";
/// Name of the VXLAN device inside a VPC namespace.
pub(crate) const VXLAN: &str = "vx0";
/// The transit range of the uplinks (RFC 6598 shared address space).
pub(crate) const TRANSIT: &str = "100.64.0.0/10";

/// Runs one nft transaction (atomic) in the calling thread's namespace.
pub(crate) fn apply(script: &str, ns: &str) -> Result<(), NetworkError> {
    run_command("nft", &["-f", "-"], Some(script), |e| {
        NetworkError::Firewall(format!("in namespace {ns}: {e}"))
    })
    .map(|_| ())
}

fn set_of<T: std::fmt::Display>(items: &[T]) -> String {
    match items {
        [one] => one.to_string(),
        many => format!(
            "{{ {} }}",
            many.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// The match part of one rule; `remote` is `saddr` (ingress) or `daddr` (egress). `None` when
/// the rule can match nothing (no CIDRs), so it is left out rather than widened.
pub(crate) fn rule_match(rule: &FirewallRule, remote: &str) -> Option<String> {
    if rule.cidrs.is_empty() {
        return None;
    }
    let mut m = format!("ip {remote} {}", set_of(&rule.cidrs));
    let (lo, hi) = (
        rule.port_min.min(rule.port_max),
        rule.port_min.max(rule.port_max),
    );
    let ports = match (lo, hi) {
        (0, 0) => None,
        (a, b) if a == b => Some(a.to_string()),
        (a, b) => Some(format!("{a}-{b}")),
    };
    let proto = match rule.protocol {
        Protocol::Tcp => Some("tcp"),
        Protocol::Udp => Some("udp"),
        Protocol::Icmp => Some("icmp"),
        Protocol::All => None,
    };
    match (proto, ports) {
        (Some(p @ ("tcp" | "udp")), Some(ports)) => write!(m, " {p} dport {ports}").ok()?,
        (Some(p), _) => write!(m, " meta l4proto {p}").ok()?,
        (None, _) => {}
    }
    Some(m)
}

/// Table names of a prefix.
pub(crate) fn sg_table(prefix: &str) -> String {
    format!("{prefix}_sg")
}
fn vpc_table(prefix: &str) -> String {
    format!("{prefix}_vpc")
}
fn as_table(prefix: &str) -> String {
    format!("{prefix}_as")
}

/// VPC-wide rules (run on every sync): ensures the security-group and anti-spoofing tables
/// and their base chains, refreshes the gateway set, and rebuilds the VPC policy table.
pub(crate) fn vpc_ruleset(prefix: &str, vpc: &VpcSpec) -> String {
    let (sg, vt, at) = (sg_table(prefix), vpc_table(prefix), as_table(prefix));
    let mut s = String::new();
    let _ = writeln!(s, "add table inet {sg}");
    let _ = writeln!(s, "add map inet {sg} ingress {{ type ipv4_addr : verdict; }}");
    let _ = writeln!(s, "add map inet {sg} egress {{ type ipv4_addr : verdict; }}");
    let _ = writeln!(
        s,
        "add chain inet {sg} forward {{ type filter hook forward priority 0; policy accept; }}"
    );
    let _ = writeln!(s, "flush chain inet {sg} forward");
    for r in [
        "ct state established,related accept",
        "ct state invalid drop",
        "ip saddr vmap @egress",
        "ip daddr vmap @ingress",
    ] {
        let _ = writeln!(s, "add rule inet {sg} forward {r}");
    }

    let _ = writeln!(s, "add table bridge {at}");
    let _ = writeln!(s, "add map bridge {at} ports {{ type ifname : verdict; }}");
    let _ = writeln!(s, "add set bridge {at} gateways {{ type ipv4_addr; }}");
    let _ = writeln!(s, "flush set bridge {at} gateways");
    let gws: Vec<Ipv4Addr> = vpc.subnets.iter().map(|s| s.gateway).collect();
    if !gws.is_empty() {
        let list = gws.iter().map(|g| g.to_string()).collect::<Vec<_>>().join(", ");
        let _ = writeln!(s, "add element bridge {at} gateways {{ {list} }}");
    }
    for (chain, hook, rules) in [
        (
            "prerouting",
            "prerouting",
            vec![
                "iifname vmap @ports".to_owned(),
                format!("iifname \"{VXLAN}\" arp operation request arp daddr ip @gateways drop"),
                format!("iifname \"{VXLAN}\" arp operation reply arp saddr ip @gateways drop"),
            ],
        ),
        (
            "forward",
            "forward",
            vec![format!(
                "oifname \"{VXLAN}\" arp operation request arp daddr ip @gateways drop"
            )],
        ),
        (
            "output",
            "output",
            vec![
                format!("oifname \"{VXLAN}\" arp daddr ip @gateways drop"),
                format!("oifname \"{VXLAN}\" arp operation reply arp saddr ip @gateways drop"),
            ],
        ),
    ] {
        let _ = writeln!(
            s,
            "add chain bridge {at} {chain} {{ type filter hook {hook} priority -200; policy accept; }}"
        );
        let _ = writeln!(s, "flush chain bridge {at} {chain}");
        for r in rules {
            let _ = writeln!(s, "add rule bridge {at} {chain} {r}");
        }
    }

    let nat: Vec<String> = vpc
        .subnets
        .iter()
        .filter(|s| s.nat_egress)
        .map(|s| s.cidr.trunc().to_string())
        .collect();
    let _ = writeln!(s, "add table inet {vt}");
    let _ = writeln!(s, "delete table inet {vt}");
    let _ = writeln!(s, "table inet {vt} {{");
    let _ = writeln!(s, "  set nat_src {{ type ipv4_addr; flags interval;");
    if !nat.is_empty() {
        let _ = writeln!(s, "    elements = {{ {} }}", nat.join(", "));
    }
    let _ = writeln!(s, "  }}");
    let _ = writeln!(
        s,
        "  chain input {{ type filter hook input priority 0; policy drop;
    iif \"lo\" accept
    ct state established,related accept
    ct state invalid drop
    iifname \"br0\" meta l4proto icmp accept
  }}
  chain forward {{ type filter hook forward priority 10; policy accept;
    iifname \"{UPLINK}\" ct state established,related accept
    iifname \"{UPLINK}\" drop
    oifname \"{UPLINK}\" ip saddr @nat_src accept
    oifname \"{UPLINK}\" drop
  }}
  chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;
    oifname \"{UPLINK}\" ip saddr @nat_src masquerade
  }}
}}"
    );
    s
}

/// Chain names of one port.
fn port_chains(port: &str) -> (String, String, String) {
    (format!("in_{port}"), format!("out_{port}"), format!("as_{port}"))
}

/// Removes the dispatch elements of `ip` if they point at `port`'s chains. The element is
/// re-added first so that the delete never fails on a missing element (both in one
/// transaction; `add` of an identical element is a no-op).
fn drop_elements(s: &mut String, prefix: &str, port: &str, ip: Ipv4Addr) {
    let sg = sg_table(prefix);
    let (cin, cout, _) = port_chains(port);
    let _ = writeln!(s, "add element inet {sg} ingress {{ {ip} : jump {cin} }}");
    let _ = writeln!(s, "add element inet {sg} egress {{ {ip} : jump {cout} }}");
    let _ = writeln!(s, "delete element inet {sg} ingress {{ {ip} }}");
    let _ = writeln!(s, "delete element inet {sg} egress {{ {ip} }}");
}

/// One transaction that (re)writes an instance's security group and anti-spoofing rules.
/// `old_ip`: the address the port had before, whose dispatch elements must go.
pub(crate) fn instance_rules(
    prefix: &str,
    port: &str,
    a: &NetworkAttachment,
    old_ip: Option<Ipv4Addr>,
) -> String {
    let (sg, at) = (sg_table(prefix), as_table(prefix));
    let (cin, cout, cas) = port_chains(port);
    let mut s = String::new();
    for c in [&cin, &cout] {
        let _ = writeln!(s, "add chain inet {sg} {c}");
        let _ = writeln!(s, "flush chain inet {sg} {c}");
    }
    for rule in &a.ingress {
        if let Some(m) = rule_match(rule, "saddr") {
            let _ = writeln!(s, "add rule inet {sg} {cin} {m} accept");
        }
    }
    let _ = writeln!(s, "add rule inet {sg} {cin} drop");
    if a.egress_restricted {
        for rule in &a.egress {
            if let Some(m) = rule_match(rule, "daddr") {
                let _ = writeln!(s, "add rule inet {sg} {cout} {m} return");
            }
        }
        let _ = writeln!(s, "add rule inet {sg} {cout} drop");
    }
    if let Some(old) = old_ip.filter(|o| *o != a.ip) {
        drop_elements(&mut s, prefix, port, old);
    }
    let _ = writeln!(s, "add element inet {sg} ingress {{ {} : jump {cin} }}", a.ip);
    let _ = writeln!(s, "add element inet {sg} egress {{ {} : jump {cout} }}", a.ip);

    let _ = writeln!(s, "add chain bridge {at} {cas}");
    let _ = writeln!(s, "flush chain bridge {at} {cas}");
    let (mac, ip) = (a.mac, a.ip);
    for r in [
        format!("ether saddr != {mac} drop"),
        format!("ether type arp arp saddr ether != {mac} drop"),
        format!("ether type arp arp saddr ip != {ip} drop"),
        format!("ether type ip ip saddr != {ip} drop"),
        "ether type != { ip, arp } drop".to_owned(),
    ] {
        let _ = writeln!(s, "add rule bridge {at} {cas} {r}");
    }
    let _ = writeln!(s, "add element bridge {at} ports {{ \"{port}\" : jump {cas} }}");
    s
}

/// One transaction that removes every rule of a port (its address `ip` if known).
pub(crate) fn detach_rules(prefix: &str, port: &str, ip: Option<Ipv4Addr>) -> String {
    let (sg, at) = (sg_table(prefix), as_table(prefix));
    let (cin, cout, cas) = port_chains(port);
    let mut s = String::new();
    for c in [&cin, &cout] {
        let _ = writeln!(s, "add chain inet {sg} {c}");
    }
    let _ = writeln!(s, "add chain bridge {at} {cas}");
    if let Some(ip) = ip {
        drop_elements(&mut s, prefix, port, ip);
    }
    let _ = writeln!(s, "add element bridge {at} ports {{ \"{port}\" : jump {cas} }}");
    let _ = writeln!(s, "delete element bridge {at} ports {{ \"{port}\" }}");
    for c in [&cin, &cout] {
        let _ = writeln!(s, "delete chain inet {sg} {c}");
    }
    let _ = writeln!(s, "delete chain bridge {at} {cas}");
    s
}

/// Deletes the dispatch elements of `ip` whatever they point to (stale state of an instance
/// that was never detached); used before retrying a failed attach.
pub(crate) fn evict_ip(prefix: &str, ip: Ipv4Addr) -> [String; 2] {
    let sg = sg_table(prefix);
    ["ingress", "egress"].map(|m| format!("delete element inet {sg} {m} {{ {ip} }}\n"))
}

/// Host rules (rebuilt atomically on every sync while the host has VPCs).
pub(crate) fn host_ruleset(prefix: &str) -> String {
    let up = format!("\"{prefix}u*\"");
    format!(
        "add table inet {prefix}_host
delete table inet {prefix}_host
table inet {prefix}_host {{
  chain input {{ type filter hook input priority 0; policy accept;
    iifname {up} ct state established,related accept
    iifname {up} drop
  }}
  chain forward {{ type filter hook forward priority 0; policy accept;
    iifname {up} oifname {up} drop
    iifname {up} accept
    oifname {up} ct state established,related accept
    oifname {up} drop
  }}
}}
add table ip {prefix}_nat
delete table ip {prefix}_nat
table ip {prefix}_nat {{
  chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;
    ip saddr {TRANSIT} oifname != {up} masquerade
  }}
}}
"
    )
}

/// Removes the host rules (when the host has no VPC left).
pub(crate) fn host_cleanup(prefix: &str) -> String {
    format!(
        "add table inet {prefix}_host\ndelete table inet {prefix}_host\n\
         add table ip {prefix}_nat\ndelete table ip {prefix}_nat\n"
    )
}

/// iptables rules for Docker's `DOCKER-USER` chain (Docker sets the FORWARD policy to DROP).
pub(crate) fn docker_user_rules(prefix: &str) -> Vec<Vec<String>> {
    let up = format!("{prefix}u+");
    vec![
        vec!["-i".into(), up.clone(), "-j".into(), "ACCEPT".into()],
        vec![
            "-o".into(),
            up,
            "-m".into(),
            "conntrack".into(),
            "--ctstate".into(),
            "RELATED,ESTABLISHED".into(),
            "-j".into(),
            "ACCEPT".into(),
        ],
    ]
}

