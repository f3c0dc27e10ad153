//! Conversions between generated protobuf types and domain types, at the gRPC edge only.

use crate::store::{InstanceRecord, NodeFacts, to_u64};
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

fn restart_policy(s: &str) -> pb::RestartPolicy {
    match s {
        "never" => pb::RestartPolicy::Never,
        "on-failure" => pb::RestartPolicy::OnFailure,
        _ => pb::RestartPolicy::Always,
    }
}

pub fn instance_spec(r: &InstanceRecord) -> pb::InstanceSpec {
    pb::InstanceSpec {
        instance_id: r.id.to_string(),
        name: r.name.clone(),
        image: r.image.clone(),
        command: r.command.0.clone(),
        env: r.env.0.clone().into_iter().collect(),
        cpu_millis: to_u64(r.cpu_millis),
        memory_mb: to_u64(r.memory_mb),
        restart_policy: restart_policy(&r.restart_policy) as i32,
        desired: if r.desired_state == "stopped" {
            pb::RunState::Stopped as i32
        } else {
            pb::RunState::Running as i32
        },
        kind: r.kind.clone(),
        change_generation: to_u64(r.change_generation),
    }
}
