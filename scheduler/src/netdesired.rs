//! The VPC part of a node's desired state: for every instance with a port, its attachment
//! (address, gateway, MAC, VXLAN id, security group rules resolved to CIDRs); for every VPC on
//! the node, its subnets, the other nodes' VXLAN endpoints and the VPC's instances there.

use crate::store::{NodeNetwork, Store, StoreResult};
use cloud_proto::v1 as pb;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use uuid::Uuid;

/// Fills in the attachments of `instances` and returns the node's VPCs. Reads the store only
/// when one of the instances has a port.
pub async fn fill(
    store: &Store,
    node: Uuid,
    instances: &mut [pb::InstanceSpec],
) -> StoreResult<Vec<pb::VpcSpec>> {
    if !instances.iter().any(|i| i.network.is_some()) {
        return Ok(Vec::new());
    }
    let net = store.node_network(node).await?;
    Ok(assemble(&net, instances))
}

fn prefix_len(cidr: &str) -> u32 {
    cidr.parse::<ipnet::Ipv4Net>()
        .map_or(32, |n| u32::from(n.prefix_len()))
}

fn rule_pb(
    r: &crate::store::network_desired::InstanceRuleRow,
    cidrs: Vec<String>,
) -> pb::FirewallRule {
    pb::FirewallRule {
        protocol: r.protocol.clone(),
        port_min: u32::try_from(r.port_min).unwrap_or(0),
        port_max: u32::try_from(r.port_max).unwrap_or(0),
        cidrs,
    }
}

/// Pure assembly from what the store returned (unit-tested).
pub fn assemble(net: &NodeNetwork, instances: &mut [pb::InstanceSpec]) -> Vec<pb::VpcSpec> {
    // Members of source groups, per (group, VPC).
    let mut members: HashMap<(Uuid, Uuid), Vec<String>> = HashMap::new();
    for m in &net.members {
        members
            .entry((m.group_id, m.vpc_id))
            .or_default()
            .push(format!("{}/32", m.private_ip));
    }
    let ports: HashMap<String, &crate::store::network_desired::PortRow> = net
        .ports
        .iter()
        .map(|p| (p.instance_id.to_string(), p))
        .collect();
    let mut rules_of: HashMap<Uuid, Vec<&crate::store::network_desired::InstanceRuleRow>> =
        HashMap::new();
    for r in &net.rules {
        rules_of.entry(r.instance_id).or_default().push(r);
    }
    for spec in instances.iter_mut() {
        if spec.network.is_none() {
            continue;
        }
        let Some(port) = ports.get(&spec.instance_id) else {
            // No complete port in the store (should not happen): leave it unattached
            // rather than guessing.
            spec.network = None;
            continue;
        };
        let mut att = pb::NetworkAttachment {
            vpc_id: port.vpc_id.to_string(),
            vni: u32::try_from(port.vni).unwrap_or(0),
            subnet_id: port.subnet_id.to_string(),
            ip: port.private_ip.clone(),
            prefix_len: prefix_len(&port.cidr),
            gateway: port.gateway.clone(),
            mac: port.mac.clone(),
            ..Default::default()
        };
        for r in rules_of.get(&port.instance_id).into_iter().flatten() {
            let cidrs = match (&r.cidr, r.source_group_id) {
                (Some(c), _) => vec![c.clone()],
                (None, Some(g)) => members.get(&(g, port.vpc_id)).cloned().unwrap_or_default(),
                (None, None) => Vec::new(),
            };
            // A source group with no members in this VPC matches nothing: skip the rule
            // (an empty CIDR list must never mean "anyone").
            if cidrs.is_empty() {
                if r.direction == "egress" {
                    att.egress_restricted = true;
                }
                continue;
            }
            if r.direction == "egress" {
                att.egress_restricted = true;
                att.egress.push(rule_pb(r, cidrs));
            } else {
                att.ingress.push(rule_pb(r, cidrs));
            }
        }
        spec.network = Some(att);
    }
    // VPCs: subnets, peers and remote endpoints.
    let mut vpcs: BTreeMap<Uuid, pb::VpcSpec> = BTreeMap::new();
    for p in &net.ports {
        vpcs.entry(p.vpc_id).or_insert_with(|| pb::VpcSpec {
            vpc_id: p.vpc_id.to_string(),
            vni: u32::try_from(p.vni).unwrap_or(0),
            ..Default::default()
        });
    }
    for s in &net.subnets {
        if let Some(v) = vpcs.get_mut(&s.vpc_id) {
            v.subnets.push(pb::SubnetSpec {
                subnet_id: s.id.to_string(),
                cidr: s.cidr.clone(),
                gateway: s.gateway.clone(),
                nat_egress: s.nat_egress,
            });
        }
    }
    let mut peers: BTreeMap<Uuid, BTreeSet<String>> = BTreeMap::new();
    for r in &net.remotes {
        if let Some(v) = vpcs.get_mut(&r.vpc_id) {
            v.remote_endpoints.push(pb::RemoteEndpoint {
                mac: r.mac.clone(),
                ip: r.private_ip.clone(),
                node_ip: r.underlay_ip.clone(),
            });
            peers
                .entry(r.vpc_id)
                .or_default()
                .insert(r.underlay_ip.clone());
        }
    }
    for (vpc, set) in peers {
        if let Some(v) = vpcs.get_mut(&vpc) {
            v.peers = set.into_iter().collect();
        }
    }
    vpcs.into_values().collect()
}
