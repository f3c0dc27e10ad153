//! Conversions between generated protobuf types and domain types, at the gRPC edge only.

use crate::store::NodeFacts;
use cloud_proto::v1 as pb;

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
            .map(|(k, v)| (k.chars().take(63).collect(), v.chars().take(253).collect()))
            .collect(),
        agent_version: h.agent_version.chars().take(64).collect(),
    }
}
