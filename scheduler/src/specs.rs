//! A cache of the immutable part of instance specs (image, command, env, limits…), keyed by
//! instance id, so pushing a node's desired state reads only the changing columns from the
//! store. An instance's spec never changes after creation; entries leave when it is deleted.

use crate::store::{InstanceRecord, InstanceState, to_u64};
use cloud_proto::v1 as pb;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use uuid::Uuid;

#[derive(Default)]
pub struct SpecCache {
    map: Mutex<HashMap<Uuid, Arc<pb::InstanceSpec>>>,
}

fn restart_policy(s: &str) -> pb::RestartPolicy {
    match s {
        "never" => pb::RestartPolicy::Never,
        "on-failure" => pb::RestartPolicy::OnFailure,
        _ => pb::RestartPolicy::Always,
    }
}

/// The immutable part of a spec (desired state and change generation are filled per push).
pub fn base_spec(r: &InstanceRecord) -> pb::InstanceSpec {
    pb::InstanceSpec {
        instance_id: r.id.to_string(),
        name: r.name.clone(),
        image: r.image.clone(),
        command: r.command.0.clone(),
        env: r.env.0.clone().into_iter().collect(),
        cpu_millis: to_u64(r.cpu_millis),
        memory_mb: to_u64(r.memory_mb),
        restart_policy: restart_policy(&r.restart_policy) as i32,
        desired: pb::RunState::Unspecified as i32,
        kind: r.kind.clone(),
        change_generation: 0,
        // Filled per push for nodes holding volumes.
        mounts: Vec::new(),
        // A marker with the immutable part of the port; `netdesired` completes it per push
        // (security group rules change).
        network: match (&r.subnet_id, &r.private_ip, &r.mac) {
            (Some(subnet), Some(ip), Some(mac)) => Some(pb::NetworkAttachment {
                subnet_id: subnet.to_string(),
                ip: ip.clone(),
                mac: mac.clone(),
                ..Default::default()
            }),
            _ => None,
        },
        vm: r.vm_spec.as_ref().map(|v| pb::VmSpec {
            image: Some(pb::VmImage {
                image_id: v.image_id.to_string(),
                path: v.path.clone(),
                format: v.format.clone(),
                kernel: v.kernel.clone().unwrap_or_default(),
                initrd: v.initrd.clone().unwrap_or_default(),
                cmdline: v.cmdline.clone().unwrap_or_default(),
            }),
            disk_gb: v.disk_gb,
            user_data: v.user_data.clone(),
            hostname: r.name.clone(),
        }),
    }
}

/// The full spec: the cached part plus the instance's current desired state.
pub fn spec(base: &pb::InstanceSpec, state: &InstanceState) -> pb::InstanceSpec {
    let mut s = base.clone();
    s.desired = if state.desired_state == "stopped" {
        pb::RunState::Stopped as i32
    } else {
        pb::RunState::Running as i32
    };
    s.change_generation = to_u64(state.change_generation);
    s
}

impl SpecCache {
    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, Arc<pb::InstanceSpec>>> {
        // Single inserts and removals cannot leave the map inconsistent: recover the guard.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn insert(&self, r: &InstanceRecord) {
        self.lock().insert(r.id, Arc::new(base_spec(r)));
    }

    pub fn get(&self, id: &Uuid) -> Option<Arc<pb::InstanceSpec>> {
        self.lock().get(id).cloned()
    }

    /// The ids among `ids` with no cached spec.
    pub fn missing(&self, ids: impl Iterator<Item = Uuid>) -> Vec<Uuid> {
        let map = self.lock();
        ids.filter(|id| !map.contains_key(id)).collect()
    }

    pub fn remove(&self, id: &Uuid) {
        self.lock().remove(id);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
