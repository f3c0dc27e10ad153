//! Fixtures shared by the unit tests.

use chrono::{DateTime, Duration, TimeZone, Utc};
use cloud_api::{
    Instance, InstanceId, InstanceKind, InstanceStatus, Node, NodeId, NodeStatus, Resources,
    RestartPolicy, RunState, SecurityGroup, SecurityGroupId, Subnet, SubnetId, Volume, VolumeId,
    VolumeStatus, Vpc, VpcId,
};
use std::collections::BTreeMap;

pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap()
}

pub fn instance(name: &str, status: InstanceStatus, age_s: i64) -> Instance {
    Instance {
        id: InstanceId::new(),
        name: name.into(),
        kind: InstanceKind::Container,
        image: "local/busybox:latest".into(),
        command: vec!["sh".into(), "-c".into(), "echo hi; sleep 1".into()],
        env: BTreeMap::from([
            ("GREETING".into(), "hello".into()),
            ("DB_PASSWORD".into(), "hunter2-very-secret".into()),
        ]),
        cpu_millis: 250,
        memory_mb: 64,
        restart_policy: RestartPolicy::Always,
        node_selector: BTreeMap::new(),
        placement_group: None,
        placement_strategy: None,
        subnet_id: None,
        private_ip: None,
        mac: None,
        security_groups: Vec::new(),
        volumes: Vec::new(),
        vm: None,
        desired_state: RunState::Running,
        status,
        status_reason: None,
        node_id: Some(NodeId::new()),
        node_name: Some("node-1".into()),
        runtime_id: Some("abc123".into()),
        started_at: Some(now() - Duration::seconds(age_s)),
        exit_code: None,
        usage: None,
        created_at: now() - Duration::seconds(age_s),
        updated_at: now() - Duration::seconds(1),
    }
}

pub fn node(name: &str) -> Node {
    Node {
        id: NodeId::new(),
        name: name.into(),
        hostname: format!("{name}.local"),
        status: NodeStatus::Ready,
        capacity: Resources {
            cpu_millis: 2000,
            memory_mb: 4096,
            disk_gb: 100,
        },
        allocated: Resources {
            cpu_millis: 250,
            memory_mb: 64,
            disk_gb: 0,
        },
        drivers: vec!["docker".into(), "libvirt".into()],
        labels: BTreeMap::from([("zone".into(), "a".into())]),
        agent_version: Some("0.1.0".into()),
        drain: None,
        connected: true,
        last_heartbeat_at: Some(now() - Duration::seconds(2)),
        usage: None,
        created_at: now() - Duration::days(4),
    }
}

pub fn vpc(name: &str, cidr: &str, age_s: i64) -> Vpc {
    Vpc {
        id: VpcId::new(),
        name: name.into(),
        cidr: cidr.into(),
        vni: 4242,
        created_at: now() - Duration::seconds(age_s),
    }
}

/// A subnet whose gateway is the `.1` of `cidr` (an x.y.z.0/n range).
pub fn subnet(vpc: &Vpc, name: &str, cidr: &str) -> Subnet {
    let base = cidr.split('/').next().unwrap_or_default();
    Subnet {
        id: SubnetId::new(),
        vpc_id: vpc.id,
        name: name.into(),
        cidr: cidr.into(),
        gateway: format!("{}1", base.trim_end_matches('0')),
        nat_egress: false,
        created_at: now() - Duration::seconds(30),
    }
}

/// A group with the rules of these SPECs.
pub fn security_group(name: &str, specs: &[&str]) -> SecurityGroup {
    SecurityGroup {
        id: SecurityGroupId::new(),
        name: name.into(),
        description: String::new(),
        rules: specs
            .iter()
            .map(|s| crate::rulespec::parse_rule(s).unwrap())
            .collect(),
        created_at: now() - Duration::hours(1),
    }
}

/// A volume on node-1, created `age_s` seconds ago.
pub fn volume(name: &str, size_gb: u64, status: VolumeStatus, age_s: i64) -> Volume {
    Volume {
        id: VolumeId::new(),
        name: name.into(),
        size_gb,
        node_id: Some(NodeId::new()),
        node_name: Some("node-1".into()),
        status,
        status_reason: None,
        instance_id: None,
        mount_path: None,
        source_snapshot_id: None,
        created_at: now() - Duration::seconds(age_s),
        updated_at: now() - Duration::seconds(1),
    }
}

/// A snapshot of a volume `data` on node-1.
pub fn snapshot(name: &str, status: cloud_api::SnapshotStatus) -> cloud_api::Snapshot {
    cloud_api::Snapshot {
        id: cloud_api::SnapshotId::new(),
        name: name.into(),
        volume_id: VolumeId::new(),
        volume_name: Some("data".into()),
        size_gb: 10,
        node_id: Some(NodeId::new()),
        node_name: Some("node-1".into()),
        status,
        status_reason: None,
        created_at: now() - Duration::seconds(60),
        updated_at: now() - Duration::seconds(1),
    }
}
