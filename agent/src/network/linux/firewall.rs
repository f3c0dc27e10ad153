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
//! The host namespace's rules are in `host`.

use super::super::{FirewallRule, NetworkAttachment, NetworkError, Protocol, VpcSpec};
use super::netns::run_command;
use std::fmt::Write;
use std::net::Ipv4Addr;

/// Name of the uplink veth inside a VPC namespace.
pub(crate) const UPLINK: &str = "uplink";
/// Name of the VXLAN device inside a VPC namespace.
pub(crate) const VXLAN: &str = "vx0";

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
            many.iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
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
    let _ = writeln!(
        s,
        "add map inet {sg} ingress {{ type ipv4_addr : verdict; }}"
    );
    let _ = writeln!(
        s,
        "add map inet {sg} egress {{ type ipv4_addr : verdict; }}"
    );
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
        let list = gws
            .iter()
            .map(|g| g.to_string())
            .collect::<Vec<_>>()
            .join(", ");
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
    (
        format!("in_{port}"),
        format!("out_{port}"),
        format!("as_{port}"),
    )
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
    let _ = writeln!(
        s,
        "add element inet {sg} ingress {{ {} : jump {cin} }}",
        a.ip
    );
    let _ = writeln!(
        s,
        "add element inet {sg} egress {{ {} : jump {cout} }}",
        a.ip
    );

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
    let _ = writeln!(
        s,
        "add element bridge {at} ports {{ \"{port}\" : jump {cas} }}"
    );
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
    let _ = writeln!(
        s,
        "add element bridge {at} ports {{ \"{port}\" : jump {cas} }}"
    );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::{Mac, SubnetSpec};

    fn rule(protocol: Protocol, ports: (u16, u16), cidrs: &[&str]) -> FirewallRule {
        FirewallRule {
            protocol,
            port_min: ports.0,
            port_max: ports.1,
            cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
        }
    }

    fn attachment() -> NetworkAttachment {
        NetworkAttachment {
            vpc_id: "v".into(),
            vni: 7,
            subnet_id: "s".into(),
            ip: "10.0.0.5".parse().unwrap(),
            prefix_len: 24,
            gateway: "10.0.0.1".parse().unwrap(),
            mac: Mac([2, 0x7c, 0, 0, 0, 5]),
            ingress: vec![rule(Protocol::Tcp, (22, 22), &["10.0.0.0/24"])],
            egress: vec![rule(Protocol::Udp, (53, 53), &["1.1.1.1/32"])],
            egress_restricted: false,
        }
    }

    #[test]
    fn rule_matches() {
        let m = |r: &FirewallRule| rule_match(r, "saddr").unwrap();
        assert_eq!(
            m(&rule(Protocol::Tcp, (80, 80), &["10.0.0.0/8"])),
            "ip saddr 10.0.0.0/8 tcp dport 80"
        );
        assert_eq!(
            m(&rule(
                Protocol::Udp,
                (2000, 1000),
                &["1.2.3.4/32", "5.6.7.0/24"]
            )),
            "ip saddr { 1.2.3.4/32, 5.6.7.0/24 } udp dport 1000-2000"
        );
        assert_eq!(
            m(&rule(Protocol::Tcp, (0, 0), &["0.0.0.0/0"])),
            "ip saddr 0.0.0.0/0 meta l4proto tcp"
        );
        assert_eq!(
            m(&rule(Protocol::Icmp, (5, 6), &["0.0.0.0/0"])),
            "ip saddr 0.0.0.0/0 meta l4proto icmp"
        );
        assert_eq!(
            m(&rule(Protocol::All, (0, 0), &["10.1.0.0/16"])),
            "ip saddr 10.1.0.0/16"
        );
        // No CIDR: the rule matches nothing and is left out instead of allowing everyone.
        assert_eq!(rule_match(&rule(Protocol::All, (0, 0), &[]), "saddr"), None);
    }

    #[test]
    fn instance_rules_replace_atomically_and_default_deny() {
        let s = instance_rules("tc", "pabc", &attachment(), None);
        let lines: Vec<&str> = s.lines().collect();
        // Chains are created if missing, then flushed and refilled in the same transaction.
        assert_eq!(lines[0], "add chain inet tc_sg in_pabc");
        assert_eq!(lines[1], "flush chain inet tc_sg in_pabc");
        assert!(s.contains("add rule inet tc_sg in_pabc ip saddr 10.0.0.0/24 tcp dport 22 accept\nadd rule inet tc_sg in_pabc drop\n"));
        // Unrestricted egress: an empty out chain (falls through to the ingress check).
        assert!(!s.contains("add rule inet tc_sg out_pabc"));
        assert!(s.contains("add element inet tc_sg ingress { 10.0.0.5 : jump in_pabc }"));
        assert!(s.contains("add element inet tc_sg egress { 10.0.0.5 : jump out_pabc }"));
        assert!(s.contains("add rule bridge tc_as as_pabc ether saddr != 02:7c:00:00:00:05 drop"));
        assert!(
            s.contains("add rule bridge tc_as as_pabc ether type ip ip saddr != 10.0.0.5 drop")
        );
        assert!(s.contains(
            "add rule bridge tc_as as_pabc ether type arp arp saddr ip != 10.0.0.5 drop"
        ));
        assert!(s.contains("add element bridge tc_as ports { \"pabc\" : jump as_pabc }"));
        assert!(!s.contains("delete"));
        // No `fwd` chain name (nft keyword).
        assert!(!s.contains(" fwd"));
    }

    #[test]
    fn restricted_egress_and_address_change() {
        let mut a = attachment();
        a.egress_restricted = true;
        let s = instance_rules("tc", "pabc", &a, Some("10.0.0.9".parse().unwrap()));
        assert!(s.contains("add rule inet tc_sg out_pabc ip daddr 1.1.1.1/32 udp dport 53 return\nadd rule inet tc_sg out_pabc drop\n"));
        // The old address's elements are removed (re-added first so the delete cannot fail).
        let add = s
            .find("add element inet tc_sg ingress { 10.0.0.9 : jump in_pabc }")
            .unwrap();
        let del = s
            .find("delete element inet tc_sg ingress { 10.0.0.9 }")
            .unwrap();
        assert!(add < del);
        // Same address: nothing deleted.
        assert!(!instance_rules("tc", "pabc", &a, Some(a.ip)).contains("delete"));
    }

    #[test]
    fn detach_removes_elements_then_chains() {
        let s = detach_rules("tc", "pabc", Some("10.0.0.5".parse().unwrap()));
        let del_elem = s
            .find("delete element inet tc_sg ingress { 10.0.0.5 }")
            .unwrap();
        let del_chain = s.find("delete chain inet tc_sg in_pabc").unwrap();
        assert!(del_elem < del_chain);
        assert!(s.contains("delete element bridge tc_as ports { \"pabc\" }"));
        assert!(s.contains("delete chain bridge tc_as as_pabc"));
        // Without an address: chains are still created-then-deleted, so it never fails.
        let s = detach_rules("tc", "pabc", None);
        assert!(s.starts_with("add chain inet tc_sg in_pabc\n"));
        assert!(!s.contains("element inet"));
    }

    #[test]
    fn vpc_ruleset_nat_and_gateways() {
        let vpc = VpcSpec {
            vpc_id: "v".into(),
            vni: 7,
            subnets: vec![
                SubnetSpec {
                    subnet_id: "a".into(),
                    cidr: "10.0.1.0/24".parse().unwrap(),
                    gateway: "10.0.1.1".parse().unwrap(),
                    nat_egress: true,
                },
                SubnetSpec {
                    subnet_id: "b".into(),
                    cidr: "10.0.2.0/24".parse().unwrap(),
                    gateway: "10.0.2.1".parse().unwrap(),
                    nat_egress: false,
                },
            ],
            peers: vec![],
            remote_endpoints: vec![],
        };
        let s = vpc_ruleset("tc", &vpc);
        assert!(s.contains("elements = { 10.0.1.0/24 }"));
        assert!(!s.contains("10.0.2.0/24"));
        assert!(s.contains("add element bridge tc_as gateways { 10.0.1.1, 10.0.2.1 }"));
        assert!(s.contains("oifname \"uplink\" ip saddr @nat_src masquerade"));
        assert!(s.contains("oifname \"uplink\" drop"));
        assert!(s.contains("add rule inet tc_sg forward ct state established,related accept"));
        // The policy table is swapped whole; the per-port chains are never flushed here.
        assert!(s.contains("delete table inet tc_vpc\ntable inet tc_vpc {"));
        assert!(!s.contains("flush chain inet tc_sg in_"));
        // Without NAT subnets the set is empty, so nothing leaves via the uplink.
        let mut none = vpc.clone();
        none.subnets.iter_mut().for_each(|s| s.nat_egress = false);
        assert!(!vpc_ruleset("tc", &none).contains("elements = {"));
    }
}
