//! Security group rule SPECs: the compact `direction:protocol:ports:remote` strings of
//! `--rule`, parsed into and printed from [`SecurityGroupRule`].
//!
//! * direction: `ingress` or `egress`
//! * protocol: `tcp`, `udp`, `icmp` or `all`
//! * ports: `22` or `8000-8080` (tcp/udp only); empty for every port, and always empty for
//!   `icmp` and `all`
//! * remote: an IPv4 CIDR such as `0.0.0.0/0`, or `sg=NAME_OR_ID` (the members of another
//!   security group)
//!
//! Examples: `ingress:tcp:22:0.0.0.0/0`, `ingress:tcp:8000-8080:sg=web`,
//! `egress:all::0.0.0.0/0`, `ingress:icmp::10.0.0.0/8`.

use cloud_api::{Direction, Protocol, SecurityGroupRule};
use std::net::Ipv4Addr;

/// The grammar, for `--help` texts and error messages.
pub const RULE_SPEC_HELP: &str = "A rule is DIRECTION:PROTOCOL:PORTS:REMOTE, where DIRECTION is \
    ingress or egress; PROTOCOL is tcp, udp, icmp or all; PORTS is 22 or 8000-8080 (tcp/udp \
    only; leave it empty for every port, and for icmp/all); REMOTE is an IPv4 CIDR like \
    0.0.0.0/0 or sg=NAME_OR_ID (the members of another security group). Repeatable.\n\
    Examples:\n  ingress:tcp:22:0.0.0.0/0\n  ingress:tcp:8000-8080:sg=web\n  \
    egress:all::0.0.0.0/0\n  ingress:icmp::10.0.0.0/8";

const SHAPE: &str = "expected DIRECTION:PROTOCOL:PORTS:REMOTE, e.g. ingress:tcp:22:0.0.0.0/0";

/// Parses one SPEC; the error names the part that is wrong (clap shows it as a usage error).
pub fn parse_rule(spec: &str) -> Result<SecurityGroupRule, String> {
    let spec = spec.trim();
    // At most four parts, so a remote may hold ':' without confusing the split.
    let parts: Vec<&str> = spec.splitn(4, ':').collect();
    let [direction, protocol, ports, remote] = parts.as_slice() else {
        return Err(format!(
            "invalid rule {spec:?}: {SHAPE} (got {} part(s))",
            parts.len()
        ));
    };
    let direction = Direction::parse(direction).ok_or_else(|| {
        format!("invalid rule {spec:?}: unknown direction {direction:?} (use ingress or egress)")
    })?;
    let protocol = Protocol::parse(protocol).ok_or_else(|| {
        format!("invalid rule {spec:?}: unknown protocol {protocol:?} (use tcp, udp, icmp or all)")
    })?;
    let (port_min, port_max) =
        parse_ports(protocol, ports).map_err(|why| format!("invalid rule {spec:?}: {why}"))?;
    let (cidr, source_group) =
        parse_remote(remote).map_err(|why| format!("invalid rule {spec:?}: {why}"))?;
    Ok(SecurityGroupRule {
        direction,
        protocol,
        port_min,
        port_max,
        cidr,
        source_group,
    })
}

type PortRange = (Option<u16>, Option<u16>);

fn parse_ports(protocol: Protocol, ports: &str) -> Result<PortRange, String> {
    if ports.is_empty() {
        return Ok((None, None));
    }
    if !protocol.has_ports() {
        return Err(format!(
            "{protocol} has no ports: leave PORTS empty, e.g. ingress:{protocol}::0.0.0.0/0"
        ));
    }
    let port = |s: &str| -> Result<u16, String> {
        match s.parse::<u16>() {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(format!(
                "invalid port {s:?} in {ports:?}: ports are 1 to 65535"
            )),
        }
    };
    let (min, max) = match ports.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => {
            let p = port(ports)?;
            (p, p)
        }
    };
    if min > max {
        return Err(format!(
            "port range {ports:?} is backwards: write the lower port first"
        ));
    }
    Ok((Some(min), Some(max)))
}

type Remote = (Option<String>, Option<String>);

fn parse_remote(remote: &str) -> Result<Remote, String> {
    if remote.is_empty() {
        return Err("REMOTE is missing: use a CIDR like 0.0.0.0/0 or sg=NAME_OR_ID".into());
    }
    if let Some(group) = remote.strip_prefix("sg=") {
        if group.is_empty() {
            return Err("sg= needs a security group name or id, e.g. sg=web".into());
        }
        return Ok((None, Some(group.to_string())));
    }
    check_cidr(remote)?;
    Ok((Some(remote.to_string()), None))
}

/// `a.b.c.d/n` with n in 0..=32.
pub fn check_cidr(s: &str) -> Result<(), String> {
    let bad = || format!("invalid CIDR {s:?}: expected an IPv4 range like 10.0.0.0/8 or sg=NAME");
    let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
    addr.parse::<Ipv4Addr>().map_err(|_| bad())?;
    match prefix.parse::<u8>() {
        Ok(p) if p <= 32 && !prefix.starts_with('+') => Ok(()),
        _ => Err(bad()),
    }
}

/// The SPEC of a rule, the inverse of [`parse_rule`]. `group_name` maps a `source_group` (as
/// stored: an id) to a display name; return `None` to print it as it is.
pub fn format_rule(
    rule: &SecurityGroupRule,
    group_name: impl Fn(&str) -> Option<String>,
) -> String {
    format!(
        "{}:{}:{}:{}",
        rule.direction.as_str(),
        rule.protocol.as_str(),
        format_ports(rule),
        format_remote(rule, group_name)
    )
}

/// `22`, `8000-8080`, or empty for every port.
pub fn format_ports(rule: &SecurityGroupRule) -> String {
    match (rule.port_min, rule.port_max) {
        (None, None) => String::new(),
        (Some(a), Some(b)) if a == b => a.to_string(),
        (min, max) => format!("{}-{}", min.unwrap_or(1), max.unwrap_or(u16::MAX)),
    }
}

/// The CIDR, or `sg=NAME_OR_ID`.
pub fn format_remote(
    rule: &SecurityGroupRule,
    group_name: impl Fn(&str) -> Option<String>,
) -> String {
    match (&rule.cidr, &rule.source_group) {
        (_, Some(g)) => format!("sg={}", group_name(g).unwrap_or_else(|| g.clone())),
        (Some(c), None) => c.clone(),
        (None, None) => String::new(),
    }
}

/// Two rules are the same when every field is; ports are compared as ranges (an absent
/// range is every port).
pub fn same_rule(a: &SecurityGroupRule, b: &SecurityGroupRule) -> bool {
    let range = |r: &SecurityGroupRule| match (r.port_min, r.port_max) {
        (None, None) => (1, u16::MAX),
        (min, max) => (min.unwrap_or(1), max.unwrap_or(u16::MAX)),
    };
    a.direction == b.direction
        && a.protocol == b.protocol
        && (!a.protocol.has_ports() || range(a) == range(b))
        && a.cidr == b.cidr
        && a.source_group == b.source_group
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(spec: &str) -> SecurityGroupRule {
        parse_rule(spec).unwrap_or_else(|e| panic!("{spec}: {e}"))
    }

    #[test]
    fn parses_the_documented_examples() {
        let r = rule("ingress:tcp:22:0.0.0.0/0");
        assert_eq!(r.direction, Direction::Ingress);
        assert_eq!(r.protocol, Protocol::Tcp);
        assert_eq!((r.port_min, r.port_max), (Some(22), Some(22)));
        assert_eq!(r.cidr.as_deref(), Some("0.0.0.0/0"));
        assert_eq!(r.source_group, None);

        let r = rule("ingress:tcp:8000-8080:sg=web");
        assert_eq!((r.port_min, r.port_max), (Some(8000), Some(8080)));
        assert_eq!(r.cidr, None);
        assert_eq!(r.source_group.as_deref(), Some("web"));

        let r = rule("egress:all::0.0.0.0/0");
        assert_eq!(r.direction, Direction::Egress);
        assert_eq!(r.protocol, Protocol::All);
        assert_eq!((r.port_min, r.port_max), (None, None));

        let r = rule("ingress:icmp::10.0.0.0/8");
        assert_eq!(r.protocol, Protocol::Icmp);
        assert_eq!(r.cidr.as_deref(), Some("10.0.0.0/8"));

        let r = rule("egress:udp::192.168.1.7/32");
        assert_eq!(
            (r.protocol, r.port_min, r.port_max),
            (Protocol::Udp, None, None)
        );
        let r = rule("  ingress:udp:1-65535:sg=0196a1b2-0000-7000-8000-000000000001 ");
        assert_eq!((r.port_min, r.port_max), (Some(1), Some(65535)));
    }

    #[test]
    fn errors_name_what_is_wrong() {
        for (spec, needle) in [
            ("", "DIRECTION:PROTOCOL:PORTS:REMOTE"),
            ("ingress:tcp:22", "got 3 part(s)"),
            ("inbound:tcp:22:0.0.0.0/0", "unknown direction \"inbound\""),
            ("ingress:sctp:22:0.0.0.0/0", "unknown protocol \"sctp\""),
            ("ingress:TCP:22:0.0.0.0/0", "unknown protocol"),
            ("ingress:icmp:22:0.0.0.0/0", "icmp has no ports"),
            ("egress:all:1-10:0.0.0.0/0", "all has no ports"),
            ("ingress:tcp:0:0.0.0.0/0", "invalid port \"0\""),
            ("ingress:tcp:70000:0.0.0.0/0", "invalid port \"70000\""),
            ("ingress:tcp:ssh:0.0.0.0/0", "invalid port \"ssh\""),
            ("ingress:tcp:80-:0.0.0.0/0", "invalid port \"\""),
            ("ingress:tcp:9000-8000:0.0.0.0/0", "backwards"),
            ("ingress:tcp:22:", "REMOTE is missing"),
            ("ingress:tcp:22:sg=", "sg= needs"),
            ("ingress:tcp:22:10.0.0.0", "invalid CIDR \"10.0.0.0\""),
            ("ingress:tcp:22:10.0.0.0/33", "invalid CIDR"),
            ("ingress:tcp:22:10.0.0/8", "invalid CIDR"),
            ("ingress:tcp:22:web", "invalid CIDR \"web\""),
            ("ingress:tcp:22:::/0", "invalid CIDR"),
        ] {
            let err = parse_rule(spec).expect_err(spec);
            assert!(err.contains(needle), "{spec:?}: {err}");
            if !spec.trim().is_empty() {
                assert!(err.contains(spec.trim()), "names the spec: {err}");
            }
        }
    }

    #[test]
    fn printing_round_trips() {
        for spec in [
            "ingress:tcp:22:0.0.0.0/0",
            "ingress:tcp:8000-8080:sg=web",
            "egress:all::0.0.0.0/0",
            "ingress:icmp::10.0.0.0/8",
            "egress:udp::10.1.0.0/16",
        ] {
            let r = rule(spec);
            assert_eq!(format_rule(&r, |_| None), spec);
            assert_eq!(rule(&format_rule(&r, |_| None)), r);
        }
    }

    #[test]
    fn printing_maps_group_ids_to_names_and_fills_half_ranges() {
        let mut r = rule("ingress:tcp:443:sg=0196-id");
        assert_eq!(
            format_rule(&r, |id| (id == "0196-id").then(|| "web".to_string())),
            "ingress:tcp:443:sg=web"
        );
        assert_eq!(format_rule(&r, |_| None), "ingress:tcp:443:sg=0196-id");
        r.port_max = None;
        assert_eq!(format_ports(&r), "443-65535");
        r.port_min = None;
        r.port_max = Some(80);
        assert_eq!(format_ports(&r), "1-80");
    }

    #[test]
    fn rules_compare_by_meaning() {
        let a = rule("ingress:tcp::0.0.0.0/0");
        let mut b = a.clone();
        b.port_min = Some(1);
        b.port_max = Some(65535);
        assert!(same_rule(&a, &b), "no ports is every port");
        assert!(!same_rule(&a, &rule("ingress:tcp:22:0.0.0.0/0")));
        assert!(!same_rule(&a, &rule("egress:tcp::0.0.0.0/0")));
        assert!(!same_rule(&a, &rule("ingress:udp::0.0.0.0/0")));
        assert!(!same_rule(&a, &rule("ingress:tcp::10.0.0.0/8")));
        assert!(!same_rule(&a, &rule("ingress:tcp::sg=web")));
        assert!(same_rule(
            &rule("ingress:icmp::sg=web"),
            &rule("ingress:icmp::sg=web")
        ));
    }

    #[test]
    fn cidrs() {
        for ok in ["0.0.0.0/0", "10.10.0.0/16", "192.168.1.7/32"] {
            assert_eq!(check_cidr(ok), Ok(()), "{ok}");
        }
        for bad in [
            "10.0.0.0",
            "10.0.0.0/",
            "10.0.0.0/x",
            "10.0.0.0/+8",
            "300.0.0.0/8",
            "/8",
        ] {
            assert!(check_cidr(bad).is_err(), "{bad}");
        }
    }
}
