//! The gRPC edge for VPC networking: parses and checks the network part of the desired
//! state, so the data plane only ever sees well-formed addresses.

use crate::network::{
    FirewallRule, Mac, NetworkAttachment, Protocol, RemoteEndpoint, SubnetSpec, VpcSpec,
};
use cloud_proto::v1 as pb;
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;

fn ip(field: &str, s: &str) -> Result<Ipv4Addr, String> {
    s.parse()
        .map_err(|_| format!("{field}: {s:?} is not an IPv4 address"))
}

fn net(field: &str, s: &str) -> Result<Ipv4Net, String> {
    s.parse()
        .map_err(|_| format!("{field}: {s:?} is not an IPv4 CIDR"))
}

fn vni(v: u32) -> Result<u32, String> {
    if (1..1 << 24).contains(&v) {
        Ok(v)
    } else {
        Err(format!("vni {v} is not a 24-bit VXLAN id"))
    }
}

fn rule(r: &pb::FirewallRule) -> Result<FirewallRule, String> {
    let port = |p: u32| u16::try_from(p).map_err(|_| format!("port {p} is out of range"));
    let rule = FirewallRule {
        protocol: r.protocol.parse::<Protocol>()?,
        port_min: port(r.port_min)?,
        port_max: port(r.port_max)?,
        cidrs: r
            .cidrs
            .iter()
            .map(|c| net("rule cidr", c))
            .collect::<Result<_, _>>()?,
    };
    if rule.cidrs.is_empty() {
        return Err("a firewall rule without addresses".into());
    }
    if rule.port_min > rule.port_max {
        return Err(format!(
            "port range {}-{} is backwards",
            rule.port_min, rule.port_max
        ));
    }
    Ok(rule)
}

/// An instance's attachment, or why it is unusable.
pub fn attachment_from_pb(a: &pb::NetworkAttachment) -> Result<NetworkAttachment, String> {
    let prefix_len = u8::try_from(a.prefix_len)
        .ok()
        .filter(|p| (1..=30).contains(p))
        .ok_or_else(|| format!("prefix length {} is unusable", a.prefix_len))?;
    Ok(NetworkAttachment {
        vpc_id: a.vpc_id.clone(),
        vni: vni(a.vni)?,
        subnet_id: a.subnet_id.clone(),
        ip: ip("ip", &a.ip)?,
        prefix_len,
        gateway: ip("gateway", &a.gateway)?,
        mac: a.mac.parse::<Mac>()?,
        ingress: a.ingress.iter().map(rule).collect::<Result<_, _>>()?,
        egress: a.egress.iter().map(rule).collect::<Result<_, _>>()?,
        egress_restricted: a.egress_restricted,
    })
}

pub fn vpc_from_pb(v: &pb::VpcSpec) -> Result<VpcSpec, String> {
    Ok(VpcSpec {
        vpc_id: v.vpc_id.clone(),
        vni: vni(v.vni)?,
        subnets: v
            .subnets
            .iter()
            .map(|s| {
                Ok(SubnetSpec {
                    subnet_id: s.subnet_id.clone(),
                    cidr: net("subnet cidr", &s.cidr)?,
                    gateway: ip("gateway", &s.gateway)?,
                    nat_egress: s.nat_egress,
                })
            })
            .collect::<Result<_, String>>()?,
        peers: v
            .peers
            .iter()
            .map(|p| ip("peer", p))
            .collect::<Result<_, _>>()?,
        remote_endpoints: v
            .remote_endpoints
            .iter()
            .map(|e| {
                Ok(RemoteEndpoint {
                    mac: e.mac.parse::<Mac>()?,
                    ip: ip("endpoint ip", &e.ip)?,
                    node_ip: ip("endpoint node", &e.node_ip)?,
                })
            })
            .collect::<Result<_, String>>()?,
    })
}

/// The VPCs of a desired document; unusable ones are left out (their instances then fail to
/// attach, with a reason) and logged.
pub fn vpcs_from_pb(vpcs: &[pb::VpcSpec]) -> Vec<VpcSpec> {
    vpcs.iter()
        .filter_map(|v| match vpc_from_pb(v) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(vpc = %v.vpc_id, error = %e, "ignoring an unusable VPC in the desired state");
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn att() -> pb::NetworkAttachment {
        pb::NetworkAttachment {
            vpc_id: "v".into(),
            vni: 42,
            subnet_id: "s".into(),
            ip: "10.0.1.2".into(),
            prefix_len: 24,
            gateway: "10.0.1.1".into(),
            mac: "02:7c:0a:00:01:02".into(),
            ingress: vec![pb::FirewallRule {
                protocol: "tcp".into(),
                port_min: 22,
                port_max: 22,
                cidrs: vec!["0.0.0.0/0".into()],
            }],
            egress: vec![],
            egress_restricted: false,
        }
    }

    #[test]
    fn parses_attachments_and_refuses_garbage() {
        let a = attachment_from_pb(&att()).unwrap();
        assert_eq!(a.ip, Ipv4Addr::new(10, 0, 1, 2));
        assert_eq!(a.ingress[0].protocol, Protocol::Tcp);
        for bad in [
            pb::NetworkAttachment {
                vni: 1 << 24,
                ..att()
            },
            pb::NetworkAttachment {
                ip: "10.0.1".into(),
                ..att()
            },
            pb::NetworkAttachment {
                mac: "nope".into(),
                ..att()
            },
            pb::NetworkAttachment {
                prefix_len: 0,
                ..att()
            },
            pb::NetworkAttachment {
                ingress: vec![pb::FirewallRule {
                    protocol: "tcp".into(),
                    cidrs: vec![],
                    ..Default::default()
                }],
                ..att()
            },
            pb::NetworkAttachment {
                ingress: vec![pb::FirewallRule {
                    protocol: "sctp".into(),
                    cidrs: vec!["0.0.0.0/0".into()],
                    ..Default::default()
                }],
                ..att()
            },
        ] {
            assert!(attachment_from_pb(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn drops_unusable_vpcs() {
        let good = pb::VpcSpec {
            vpc_id: "a".into(),
            vni: 7,
            subnets: vec![pb::SubnetSpec {
                subnet_id: "s".into(),
                cidr: "10.0.1.0/24".into(),
                gateway: "10.0.1.1".into(),
                nat_egress: true,
            }],
            peers: vec!["192.168.0.2".into()],
            remote_endpoints: vec![pb::RemoteEndpoint {
                mac: "02:7c:0a:00:01:03".into(),
                ip: "10.0.1.3".into(),
                node_ip: "192.168.0.2".into(),
            }],
        };
        let bad = pb::VpcSpec {
            vpc_id: "b".into(),
            vni: 8,
            peers: vec!["x".into()],
            ..Default::default()
        };
        let v = vpcs_from_pb(&[good, bad]);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].subnets[0].gateway, Ipv4Addr::new(10, 0, 1, 1));
    }
}
