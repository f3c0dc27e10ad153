//! The gRPC edge: conversions between `cloud_proto::v1` messages and the agent's domain types.
//! Generated types do not travel further into the agent than this module and `session`.

use crate::model::{
    Capacity, DesiredState, HostUsage, InstanceObservation, InstanceSpec, InstanceState,
    InstanceUsage, ObservedState, RestartPolicy, RunState, TelemetryReport,
};
use cloud_proto::v1 as pb;

pub fn desired_from_pb(d: pb::DesiredState) -> DesiredState {
    DesiredState {
        generation: d.generation,
        vpcs: crate::convert_network::vpcs_from_pb(&d.vpcs),
        volumes: d
            .volumes
            .iter()
            .map(|v| crate::model::VolumeSpec {
                volume_id: v.volume_id.clone(),
                size_bytes: v.size_bytes,
                from_snapshot_id: Some(v.from_snapshot_id.clone()).filter(|s| !s.is_empty()),
            })
            .collect(),
        delete_volumes: d.delete_volumes.clone(),
        snapshots: d
            .snapshots
            .iter()
            .map(|s| crate::model::SnapshotSpec {
                snapshot_id: s.snapshot_id.clone(),
                volume_id: s.volume_id.clone(),
                take: s.take,
            })
            .collect(),
        delete_snapshots: d.delete_snapshots.clone(),
        instances: d.instances.into_iter().map(spec_from_pb).collect(),
    }
}

fn spec_from_pb(s: pb::InstanceSpec) -> InstanceSpec {
    let restart_policy = match pb::RestartPolicy::try_from(s.restart_policy) {
        Ok(pb::RestartPolicy::OnFailure) => RestartPolicy::OnFailure,
        Ok(pb::RestartPolicy::Always) => RestartPolicy::Always,
        _ => RestartPolicy::Never,
    };
    let desired = match pb::RunState::try_from(s.desired) {
        Ok(pb::RunState::Stopped) => RunState::Stopped,
        Ok(pb::RunState::Running) => RunState::Running,
        _ => {
            tracing::warn!(instance_id = %s.instance_id, value = s.desired, "unspecified desired run state; treating as running");
            RunState::Running
        }
    };
    InstanceSpec {
        instance_id: s.instance_id,
        name: s.name,
        image: s.image,
        command: s.command,
        env: s.env.into_iter().collect(),
        cpu_millis: s.cpu_millis,
        memory_mb: s.memory_mb,
        restart_policy,
        desired,
        kind: s.kind,
        change_generation: s.change_generation,
        mounts: s
            .mounts
            .iter()
            .map(|m| (m.volume_id.clone(), m.mount_path.clone()))
            .collect(),
        network: s
            .network
            .as_ref()
            .map(crate::convert_network::attachment_from_pb),
        vm: s.vm.map(|v| {
            let image = v.image.unwrap_or_default();
            crate::model::VmSpec {
                image: crate::vm::files::VmImage {
                    image_id: image.image_id,
                    path: image.path,
                    format: image.format,
                    kernel: image.kernel,
                    initrd: image.initrd,
                    cmdline: image.cmdline,
                },
                disk_gb: v.disk_gb,
                user_data: v.user_data,
                hostname: v.hostname,
            }
        }),
    }
}

fn state_to_pb(s: InstanceState) -> pb::InstanceState {
    match s {
        InstanceState::Starting => pb::InstanceState::Starting,
        InstanceState::Running => pb::InstanceState::Running,
        InstanceState::Stopping => pb::InstanceState::Stopping,
        InstanceState::Stopped => pb::InstanceState::Stopped,
        InstanceState::Failed => pb::InstanceState::Failed,
    }
}

pub fn observed_to_pb(o: &ObservedState) -> pb::ObservedState {
    pb::ObservedState {
        applied_generation: o.applied_generation,
        instances: o.instances.iter().map(observation_to_pb).collect(),
        volumes: o
            .volumes
            .iter()
            .map(|v| pb::VolumeObservation {
                volume_id: v.volume_id.clone(),
                state: volume_state_to_pb(v.state) as i32,
                size_bytes: v.size_bytes,
                reason: v.reason.clone(),
                instance_id: v.instance_id.clone(),
            })
            .collect(),
        snapshots: o
            .snapshots
            .iter()
            .map(|s| pb::SnapshotObservation {
                snapshot_id: s.snapshot_id.clone(),
                volume_id: s.volume_id.clone(),
                state: volume_state_to_pb(s.state) as i32,
                size_bytes: s.size_bytes,
                reason: s.reason.clone(),
            })
            .collect(),
    }
}

fn volume_state_to_pb(s: crate::model::VolumeState) -> pb::VolumeState {
    match s {
        crate::model::VolumeState::Available => pb::VolumeState::VolumeAvailable,
        crate::model::VolumeState::Failed => pb::VolumeState::VolumeFailed,
        crate::model::VolumeState::Orphan => pb::VolumeState::VolumeOrphan,
    }
}

fn observation_to_pb(o: &InstanceObservation) -> pb::InstanceObservation {
    pb::InstanceObservation {
        instance_id: o.instance_id.clone(),
        state: state_to_pb(o.state) as i32,
        reason: o.reason.clone(),
        runtime_id: o.runtime_id.clone(),
        started_at_unix_ms: o.started_at_unix_ms,
        exit_code: o.exit_code,
    }
}

pub fn capacity_to_pb(c: Capacity) -> pb::Capacity {
    pb::Capacity {
        cpu_millis: c.cpu_millis,
        memory_mb: c.memory_mb,
        disk_gb: c.disk_gb,
    }
}

fn host_to_pb(h: HostUsage) -> pb::HostUsage {
    pb::HostUsage {
        cpu_percent: h.cpu_percent,
        memory_used_mb: h.memory_used_mb,
        memory_total_mb: h.memory_total_mb,
        disk_used_gb: h.disk_used_gb,
        disk_total_gb: h.disk_total_gb,
        load1: h.load1,
        load5: h.load5,
        load15: h.load15,
    }
}

fn usage_to_pb(u: &InstanceUsage) -> pb::InstanceUsage {
    pb::InstanceUsage {
        instance_id: u.instance_id.clone(),
        cpu_percent: u.cpu_percent,
        memory_used_bytes: u.memory_used_bytes,
        memory_limit_bytes: u.memory_limit_bytes,
        disk_read_bytes: u.disk_io.map(|d| d.0),
        disk_write_bytes: u.disk_io.map(|d| d.1),
        net_rx_bytes: u.net_io.map(|n| n.0),
        net_tx_bytes: u.net_io.map(|n| n.1),
    }
}

pub fn telemetry_to_pb(t: &TelemetryReport) -> pb::Telemetry {
    pb::Telemetry {
        sampled_at_unix_ms: t.sampled_at_unix_ms,
        host: Some(host_to_pb(t.host)),
        instances: t.instances.iter().map(usage_to_pb).collect(),
        pool: t.pool.map(|(kind, c)| pb::StoragePool {
            kind: kind.to_owned(),
            total_bytes: c.total_bytes,
            free_bytes: c.free_bytes,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_specs_and_defaults_unknown_enums() {
        let d = pb::DesiredState {
            generation: 7,
            instances: vec![pb::InstanceSpec {
                instance_id: "i".into(),
                restart_policy: pb::RestartPolicy::Always as i32,
                desired: pb::RunState::Stopped as i32,
                env: [("K".to_owned(), "V".to_owned())].into(),
                change_generation: 5,
                ..Default::default()
            }],
            vpcs: vec![],
            volumes: Vec::new(),
            delete_volumes: Vec::new(),
            snapshots: Vec::new(),
            delete_snapshots: Vec::new(),
        };
        let d = desired_from_pb(d);
        assert_eq!(d.generation, 7);
        let s = &d.instances[0];
        assert_eq!(s.restart_policy, RestartPolicy::Always);
        assert_eq!(s.desired, RunState::Stopped);
        assert_eq!(s.change_generation, 5);
        assert_eq!(s.env.get("K").map(String::as_str), Some("V"));

        let unspecified = desired_from_pb(pb::DesiredState {
            generation: 1,
            instances: vec![pb::InstanceSpec::default()],
            vpcs: vec![],
            volumes: Vec::new(),
            delete_volumes: Vec::new(),
            snapshots: Vec::new(),
            delete_snapshots: Vec::new(),
        });
        assert_eq!(unspecified.instances[0].desired, RunState::Running);
        assert_eq!(
            unspecified.instances[0].restart_policy,
            RestartPolicy::Never
        );
    }

    #[test]
    fn converts_observations() {
        let o = ObservedState {
            applied_generation: 3,
            instances: vec![InstanceObservation {
                exit_code: Some(2),
                ..InstanceObservation::new("i", InstanceState::Failed, "exited with code 2")
            }],
            volumes: vec![crate::model::VolumeObservation {
                volume_id: "v".into(),
                state: crate::model::VolumeState::Orphan,
                size_bytes: 1 << 30,
                reason: String::new(),
                instance_id: "i".into(),
            }],
            snapshots: vec![crate::model::SnapshotObservation {
                snapshot_id: "s".into(),
                volume_id: "v".into(),
                state: crate::model::VolumeState::Failed,
                size_bytes: 1 << 30,
                reason: "no space".into(),
            }],
        };
        let p = observed_to_pb(&o);
        assert_eq!(p.volumes[0].state, pb::VolumeState::VolumeOrphan as i32);
        assert_eq!(p.snapshots[0].state, pb::VolumeState::VolumeFailed as i32);
        assert_eq!(p.snapshots[0].reason, "no space");
        assert_eq!(p.applied_generation, 3);
        assert_eq!(p.instances[0].state, pb::InstanceState::Failed as i32);
        assert_eq!(p.instances[0].exit_code, Some(2));
        assert_eq!(p.instances[0].reason, "exited with code 2");
    }
}
