//! Conversions between generated protobuf types and domain types, at the gRPC edge only.

use crate::store::NodeFacts;
use cloud_proto::v1 as pb;

/// The node's VXLAN endpoint, when it sent a usable one.
fn underlay(h: &pb::Hello) -> Option<String> {
    let ip: std::net::Ipv4Addr = h.underlay_ip.parse().ok()?;
    (!ip.is_unspecified() && !ip.is_broadcast() && h.underlay_mtu >= 1280).then(|| ip.to_string())
}

/// Label the scheduler sets on nodes that can host instances in a VPC (agents cannot set it).
pub const VPC_LABEL: &str = "thecloud.io/vpc";

pub fn facts_from_hello(h: &pb::Hello) -> NodeFacts {
    let cap = h.capacity.unwrap_or_default();
    NodeFacts {
        hostname: h.hostname.chars().take(253).collect(),
        cpu_millis: cap.cpu_millis,
        memory_mb: cap.memory_mb,
        disk_gb: cap.disk_gb,
        drivers: h
            .drivers
            .iter()
            .take(16)
            .map(|d| d.chars().take(32).collect())
            .collect(),
        labels: h
            .labels
            .iter()
            .take(64)
            .filter(|(k, _)| !k.starts_with("thecloud.io/"))
            .map(|(k, v)| (k.chars().take(63).collect(), v.chars().take(253).collect()))
            .chain(underlay(h).map(|_| (VPC_LABEL.to_string(), "true".to_string())))
            .collect(),
        agent_version: h.agent_version.chars().take(64).collect(),
        underlay_ip: underlay(h),
        underlay_mtu: h.underlay_mtu,
    }
}
