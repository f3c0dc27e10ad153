//! Validation of VPC networking input: CIDRs, addresses and security group rules. Pure
//! functions; every message names the field.

use crate::error::{Error, Result};
use cloud_api::SecurityGroupRule;
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;

/// Widest and narrowest VPC ranges.
pub const VPC_PREFIX: std::ops::RangeInclusive<u8> = 8..=28;
/// Narrowest subnet: a /29 leaves 5 usable addresses after network, gateway and broadcast.
pub const MAX_SUBNET_PREFIX: u8 = 29;
pub const MAX_RULES: usize = 100;

/// Parses `a.b.c.d/n`, refusing host bits (`10.0.0.5/16` is almost always a typo).
pub fn cidr(field: &str, s: &str) -> Result<Ipv4Net> {
    let net: Ipv4Net = s.trim().parse().map_err(|_| {
        Error::Invalid(format!(
            "{field}: {s:?} is not an IPv4 CIDR such as 10.10.0.0/16"
        ))
    })?;
    if net.addr() != net.network() {
        return Err(Error::Invalid(format!(
            "{field}: {s:?} has host bits set; did you mean {}?",
            net.trunc()
        )));
    }
    Ok(net)
}

/// A VPC range: private-use sized between /8 and /28.
pub fn vpc_cidr(s: &str) -> Result<Ipv4Net> {
    let net = cidr("cidr", s)?;
    if !VPC_PREFIX.contains(&net.prefix_len()) {
        return Err(Error::Invalid(format!(
            "cidr: a VPC range must be between /{} and /{}, not /{}",
            VPC_PREFIX.start(),
            VPC_PREFIX.end(),
            net.prefix_len()
        )));
    }
    let a = net.network();
    if a.is_loopback()
        || a.is_multicast()
        || a.is_link_local()
        || a.is_unspecified()
        || a.is_broadcast()
    {
        return Err(Error::Invalid(format!(
            "cidr: {net} is a reserved range; use a private range such as 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16"
        )));
    }
    let transit: Ipv4Net = TRANSIT.parse().map_err(|_| Error::Invalid("cidr".into()))?;
    if transit.contains(&net.network()) || net.contains(&transit.network()) {
        return Err(Error::Invalid(format!(
            "cidr: {net} overlaps {TRANSIT}, which nodes use to link VPCs to the outside; pick another range"
        )));
    }
    Ok(net)
}

/// The range nodes take VPC uplink transit addresses from (agent `network::linux::host`).
pub const TRANSIT: &str = "100.64.0.0/10";

/// A subnet range inside `vpc`, overlapping none of `others` (name, range).
pub fn subnet_cidr(s: &str, vpc: Ipv4Net, others: &[(String, Ipv4Net)]) -> Result<Ipv4Net> {
    let net = cidr("cidr", s)?;
    if net.prefix_len() > MAX_SUBNET_PREFIX {
        return Err(Error::Invalid(format!(
            "cidr: a subnet must be /{MAX_SUBNET_PREFIX} or wider (network, gateway and broadcast are reserved), not /{}",
            net.prefix_len()
        )));
    }
    if !vpc.contains(&net) {
        return Err(Error::Invalid(format!(
            "cidr: {net} is not inside the VPC's range {vpc}"
        )));
    }
    if let Some((name, other)) = others
        .iter()
        .find(|(_, o)| o.contains(&net) || net.contains(o))
    {
        return Err(Error::Invalid(format!(
            "cidr: {net} overlaps subnet {name:?} ({other})"
        )));
    }
    Ok(net)
}

/// The gateway of a subnet: its first host address.
pub fn gateway(net: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + 1)
}

/// Whether `ip` may be given to an instance in `net` (not network, gateway or broadcast).
pub fn usable(net: Ipv4Net, ip: Ipv4Addr) -> bool {
    net.contains(&ip) && ip != net.network() && ip != gateway(net) && ip != net.broadcast()
}

/// A requested `private_ip` for `net`.
pub fn private_ip(s: &str, net: Ipv4Net) -> Result<Ipv4Addr> {
    let ip: Ipv4Addr = s
        .trim()
        .parse()
        .map_err(|_| Error::Invalid(format!("private_ip: {s:?} is not an IPv4 address")))?;
    if !net.contains(&ip) {
        return Err(Error::Invalid(format!(
            "private_ip: {ip} is outside the subnet {net}"
        )));
    }
    if !usable(net, ip) {
        return Err(Error::Invalid(format!(
            "private_ip: {ip} is reserved in {net} (network, gateway {} and broadcast addresses cannot be used)",
            gateway(net)
        )));
    }
    Ok(ip)
}

/// The lowest usable address of `net` not in `used`.
pub fn lowest_free(net: Ipv4Net, used: &std::collections::HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let first = u32::from(net.network()) + 2;
    let last = u32::from(net.broadcast()).checked_sub(1)?;
    (first..=last)
        .map(Ipv4Addr::from)
        .find(|ip| !used.contains(ip))
}

/// The MAC of an instance port: locally administered `02:7c` + the IPv4 address, so an
/// address always maps to one MAC and FDB/neighbour entries stay consistent.
pub fn mac_for(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("02:7c:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

/// Checks one rule (index `i`, for messages) and returns its port range as stored.
pub fn rule(i: usize, r: &SecurityGroupRule) -> Result<(i32, i32)> {
    let field = format!("rules[{i}]");
    match (&r.cidr, &r.source_group) {
        (Some(_), Some(_)) => {
            return Err(Error::Invalid(format!(
                "{field}: give either cidr or source_group, not both"
            )));
        }
        (None, None) => {
            return Err(Error::Invalid(format!(
                "{field}: give cidr (e.g. 0.0.0.0/0) or source_group"
            )));
        }
        (Some(c), None) => {
            cidr(&format!("{field}.cidr"), c)?;
        }
        (None, Some(_)) => {}
    }
    if !r.protocol.has_ports() {
        if r.port_min.is_some() || r.port_max.is_some() {
            return Err(Error::Invalid(format!(
                "{field}: ports apply to tcp and udp only, not {}",
                r.protocol
            )));
        }
        return Ok((0, 0));
    }
    let (min, max) = match (r.port_min, r.port_max) {
        (None, None) => (0, 0),
        (Some(a), None) => (a, a),
        (None, Some(_)) => {
            return Err(Error::Invalid(format!(
                "{field}.port_min: required when port_max is given"
            )));
        }
        (Some(a), Some(b)) => (a, b),
    };
    if (min, max) != (0, 0) && (min == 0 || min > max) {
        return Err(Error::Invalid(format!(
            "{field}: port range {min}-{max} is invalid (1-65535, port_min <= port_max)"
        )));
    }
    Ok((i32::from(min), i32::from(max)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloud_api::{Direction, Protocol};

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_are_checked_and_host_bits_refused() {
        assert_eq!(vpc_cidr("10.10.0.0/16").unwrap(), net("10.10.0.0/16"));
        let e = vpc_cidr("10.10.0.5/16").unwrap_err().to_string();
        assert!(e.contains("did you mean 10.10.0.0/16"), "{e}");
        assert!(vpc_cidr("10.10.0.0").is_err());
        assert!(vpc_cidr("banana").is_err());
        assert!(
            vpc_cidr("10.0.0.0/30")
                .unwrap_err()
                .to_string()
                .contains("/28")
        );
        assert!(vpc_cidr("127.0.0.0/8").is_err());
        assert!(
            vpc_cidr("100.100.0.0/16")
                .unwrap_err()
                .to_string()
                .contains("100.64.0.0/10")
        );
        assert!(vpc_cidr("100.0.0.0/8").is_err());
    }

    #[test]
    fn subnets_stay_inside_and_never_overlap() {
        let vpc = net("10.10.0.0/16");
        let others = vec![("a".to_string(), net("10.10.1.0/24"))];
        assert!(subnet_cidr("10.10.2.0/24", vpc, &others).is_ok());
        let e = subnet_cidr("10.10.1.128/25", vpc, &others)
            .unwrap_err()
            .to_string();
        assert!(e.contains("overlaps subnet \"a\""), "{e}");
        assert!(subnet_cidr("10.10.0.0/23", vpc, &others).is_err());
        assert!(
            subnet_cidr("10.11.0.0/24", vpc, &others)
                .unwrap_err()
                .to_string()
                .contains("not inside")
        );
        assert!(subnet_cidr("10.10.9.0/30", vpc, &others).is_err());
    }

    #[test]
    fn ipam_reserves_network_gateway_and_broadcast() {
        let n = net("10.10.1.0/29");
        assert_eq!(gateway(n), Ipv4Addr::new(10, 10, 1, 1));
        let mut used = std::collections::HashSet::new();
        let mut got = Vec::new();
        while let Some(ip) = lowest_free(n, &used) {
            used.insert(ip);
            got.push(ip.octets()[3]);
        }
        assert_eq!(got, vec![2, 3, 4, 5, 6]);
        assert!(
            private_ip("10.10.1.1", n)
                .unwrap_err()
                .to_string()
                .contains("reserved")
        );
        assert!(private_ip("10.10.1.7", n).is_err());
        assert!(
            private_ip("10.10.2.3", n)
                .unwrap_err()
                .to_string()
                .contains("outside")
        );
        assert_eq!(
            private_ip("10.10.1.3", n).unwrap(),
            Ipv4Addr::new(10, 10, 1, 3)
        );
        assert_eq!(mac_for(Ipv4Addr::new(10, 10, 1, 5)), "02:7c:0a:0a:01:05");
    }

    #[test]
    fn rules_need_one_remote_and_sane_ports() {
        let base = SecurityGroupRule {
            direction: Direction::Ingress,
            protocol: Protocol::Tcp,
            port_min: Some(22),
            port_max: None,
            cidr: Some("0.0.0.0/0".into()),
            source_group: None,
        };
        assert_eq!(rule(0, &base).unwrap(), (22, 22));
        let both = SecurityGroupRule {
            source_group: Some("web".into()),
            ..base.clone()
        };
        assert!(rule(0, &both).is_err());
        let icmp_ports = SecurityGroupRule {
            protocol: Protocol::Icmp,
            ..base.clone()
        };
        assert!(
            rule(3, &icmp_ports)
                .unwrap_err()
                .to_string()
                .starts_with("rules[3]")
        );
        let backwards = SecurityGroupRule {
            port_min: Some(90),
            port_max: Some(80),
            ..base.clone()
        };
        assert!(rule(0, &backwards).is_err());
        let all = SecurityGroupRule {
            port_min: None,
            ..base.clone()
        };
        assert_eq!(rule(0, &all).unwrap(), (0, 0));
        let bad_cidr = SecurityGroupRule {
            cidr: Some("10.0.0.1/8".into()),
            ..base
        };
        assert!(
            rule(0, &bad_cidr)
                .unwrap_err()
                .to_string()
                .contains("rules[0].cidr")
        );
    }
}
