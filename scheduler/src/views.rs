//! Conversions from stored records to the public API types.

use crate::error::{Error, Result};
use crate::sessions::Sessions;
use crate::store::{InstanceRecord, NodeWithAllocation, to_u64};
use cloud_api::{
    GroupPolicy, Instance, InstanceKind, InstanceStatus, Node, NodeStatus, PlacementGroup,
    PlacementStrategy, Resources, RestartPolicy, RunState,
};

fn corrupt(what: &str, v: &str) -> Error {
    Error::internal(anyhow::anyhow!("stored {what} {v:?} is not valid"))
}

/// An instance as the API shows it; `groups` are the security groups of its port.
pub fn instance(
    r: InstanceRecord,
    groups: Vec<uuid::Uuid>,
    mounts: Vec<cloud_api::VolumeMount>,
    sessions: &Sessions,
) -> Result<Instance> {
    let usage = r
        .node_id
        .and_then(|n| sessions.instance_usage(n.into(), r.id.into()))
        .filter(|_| r.status == "running");
    Ok(Instance {
        usage,
        id: r.id.into(),
        kind: InstanceKind::parse(&r.kind).ok_or_else(|| corrupt("kind", &r.kind))?,
        restart_policy: RestartPolicy::parse(&r.restart_policy)
            .ok_or_else(|| corrupt("restart_policy", &r.restart_policy))?,
        desired_state: RunState::parse(&r.desired_state)
            .ok_or_else(|| corrupt("desired_state", &r.desired_state))?,
        status: InstanceStatus::parse(&r.status).ok_or_else(|| corrupt("status", &r.status))?,
        name: r.name,
        image: r.image,
        command: r.command.0,
        env: r.env.0,
        cpu_millis: to_u64(r.cpu_millis),
        memory_mb: to_u64(r.memory_mb),
        status_reason: r.status_reason,
        node_id: r.node_id.map(Into::into),
        node_name: r.node_name,
        runtime_id: r.runtime_id,
        started_at: r.started_at,
        exit_code: r.exit_code,
        node_selector: r.node_selector.0,
        placement_group: match (
            r.placement_group,
            r.placement_policy.as_deref().and_then(GroupPolicy::parse),
        ) {
            (Some(name), Some(policy)) => Some(PlacementGroup { name, policy }),
            _ => None,
        },
        placement_strategy: r
            .placement_strategy
            .as_deref()
            .and_then(PlacementStrategy::parse),
        created_at: r.created_at,
        updated_at: r.updated_at,
        subnet_id: r.subnet_id.map(Into::into),
        private_ip: r.private_ip,
        mac: r.mac,
        security_groups: groups.into_iter().map(Into::into).collect(),
        volumes: mounts,
        vm: r.vm_spec.map(|v| cloud_api::InstanceVm {
            image_id: v.0.image_id.into(),
            image_name: v.0.image_name.clone(),
            disk_gb: v.0.disk_gb,
            user_data: !v.0.user_data.is_empty(),
        }),
    })
}

pub fn image(r: crate::store::ImageRecord) -> Result<cloud_api::Image> {
    Ok(cloud_api::Image {
        id: r.id.into(),
        format: cloud_api::ImageFormat::parse(&r.format)
            .ok_or_else(|| corrupt("image format", &r.format))?,
        name: r.name,
        path: r.path,
        kernel: r.kernel,
        initrd: r.initrd,
        cmdline: r.cmdline,
        created_at: r.created_at,
        public: r.public,
    })
}

pub fn node(r: NodeWithAllocation, sessions: &Sessions) -> Result<Node> {
    let n = r.node;
    let id = n.id.into();
    let last_heartbeat_at = match (sessions.last_seen_at(id), n.last_heartbeat_at) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    Ok(Node {
        id,
        status: NodeStatus::parse(&n.status).ok_or_else(|| corrupt("node status", &n.status))?,
        name: n.name,
        hostname: n.hostname,
        capacity: Resources {
            cpu_millis: to_u64(n.cpu_millis),
            memory_mb: to_u64(n.memory_mb),
            disk_gb: to_u64(n.disk_gb),
        },
        allocated: Resources {
            cpu_millis: to_u64(r.alloc_cpu_millis.unwrap_or(0)),
            memory_mb: to_u64(r.alloc_memory_mb.unwrap_or(0)),
            disk_gb: 0,
        },
        drivers: n.drivers.0,
        labels: n.labels.0,
        agent_version: n.agent_version,
        drain: n.drain.as_deref().and_then(cloud_api::DrainMode::parse),
        connected: sessions.is_connected(id),
        last_heartbeat_at,
        usage: sessions.usage(id),
        created_at: n.created_at,
    })
}

pub fn vpc(r: crate::store::VpcRecord) -> cloud_api::Vpc {
    cloud_api::Vpc {
        id: r.id.into(),
        name: r.name,
        cidr: r.cidr,
        vni: u32::try_from(r.vni).unwrap_or(0),
        created_at: r.created_at,
    }
}

pub fn subnet(r: crate::store::SubnetRecord) -> cloud_api::Subnet {
    cloud_api::Subnet {
        id: r.id.into(),
        vpc_id: r.vpc_id.into(),
        name: r.name,
        cidr: r.cidr,
        gateway: r.gateway,
        nat_egress: r.nat_egress,
        created_at: r.created_at,
    }
}

/// A security group with its stored rules (`source_group` shows the referenced group's id).
pub fn security_group(
    g: crate::store::SecurityGroupRecord,
    rules: Vec<crate::store::RuleRecord>,
) -> Result<cloud_api::SecurityGroup> {
    let rules = rules
        .into_iter()
        .map(|r| {
            let ports = u16::try_from(r.port_min)
                .ok()
                .zip(u16::try_from(r.port_max).ok())
                .filter(|&(a, b)| (a, b) != (0, 0));
            Ok(cloud_api::SecurityGroupRule {
                direction: cloud_api::Direction::parse(&r.direction)
                    .ok_or_else(|| corrupt("rule direction", &r.direction))?,
                protocol: cloud_api::Protocol::parse(&r.protocol)
                    .ok_or_else(|| corrupt("rule protocol", &r.protocol))?,
                port_min: ports.map(|p| p.0),
                port_max: ports.map(|p| p.1),
                cidr: r.cidr,
                source_group: r.source_group_id.map(|g| g.to_string()),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(cloud_api::SecurityGroup {
        id: g.id.into(),
        name: g.name,
        description: g.description,
        rules,
        created_at: g.created_at,
    })
}

pub fn volume(r: crate::store::VolumeRecord) -> Result<cloud_api::Volume> {
    Ok(cloud_api::Volume {
        id: r.id.into(),
        status: cloud_api::VolumeStatus::parse(&r.status)
            .ok_or_else(|| corrupt("volume status", &r.status))?,
        name: r.name,
        size_gb: to_u64(r.size_gb),
        node_id: r.node_id.map(Into::into),
        node_name: r.node_name,
        status_reason: r.status_reason,
        instance_id: r.instance_id.map(Into::into),
        mount_path: r.mount_path,
        source_snapshot_id: r.source_snapshot_id.map(Into::into),
        created_at: r.created_at,
        updated_at: r.updated_at,
    })
}

pub fn snapshot(r: crate::store::SnapshotRecord) -> Result<cloud_api::Snapshot> {
    Ok(cloud_api::Snapshot {
        id: r.id.into(),
        status: cloud_api::SnapshotStatus::parse(&r.status)
            .ok_or_else(|| corrupt("snapshot status", &r.status))?,
        name: r.name,
        volume_id: r.volume_id.into(),
        volume_name: r.volume_name,
        size_gb: to_u64(r.size_gb),
        node_id: r.node_id.map(Into::into),
        node_name: r.node_name,
        status_reason: r.status_reason,
        created_at: r.created_at,
        updated_at: r.updated_at,
    })
}
