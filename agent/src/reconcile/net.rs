//! The network half of a reconcile pass: builds this node's VPCs, plugs each running container
//! that has a VPC port into it (again after every restart: a new process has a new network
//! namespace), unplugs what is gone, and amends the observation: an instance with a port is
//! `running` only once its port is up. VMs get their port (a veth whose host end carries the
//! guest's macvtap) before their domain is created, and keep it while their instance exists.

use crate::model::{DesiredState, InstanceState, ObservedState, RunState};
use crate::network::{NetworkAttachment, NetworkBackend, VpcSpec};
use crate::runtime::{ContainerInfo, ContainerStatus, labels};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// One plugged port: which run of which container has which attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Plugged {
    container_id: String,
    pid: i64,
    attachment: NetworkAttachment,
}

/// Network memory of the reconciler.
pub(super) struct NetState {
    backend: Option<Arc<dyn NetworkBackend>>,
    /// Re-check period when nothing changed (drift repair).
    resync: Duration,
    synced: Option<(Vec<VpcSpec>, Instant)>,
    vpc_error: Option<String>,
    plugged: HashMap<String, Plugged>,
    /// VM instance → (its attachment, the host link of its port).
    vm_ports: HashMap<String, (NetworkAttachment, String)>,
    /// Instance → why its port is not up (shown as the instance's reason).
    errors: HashMap<String, String>,
}

impl NetState {
    pub(super) fn new(backend: Option<Arc<dyn NetworkBackend>>, resync: Duration) -> Self {
        Self {
            backend,
            resync,
            synced: None,
            vpc_error: None,
            plugged: HashMap::new(),
            vm_ports: HashMap::new(),
            errors: HashMap::new(),
        }
    }

    /// Converges VPCs and ports toward `desired`, given the containers as they are now.
    pub(super) async fn converge(&mut self, desired: &DesiredState, actual: &[ContainerInfo]) {
        self.errors.clear();
        let Some(backend) = self.backend.clone() else {
            for s in desired.instances.iter().filter(|s| s.network.is_some()) {
                self.errors.insert(
                    s.instance_id.clone(),
                    "VPC networking is not available on this node (no underlay address configured)"
                        .into(),
                );
            }
            return;
        };
        // Also with no VPC wanted: the first pass after a restart removes what an earlier
        // run left behind (instances deleted while the agent was down); later passes are
        // no-ops until the list changes or `resync` passes.
        let resynced = self.sync_vpcs(backend.as_ref(), &desired.vpcs).await;

        let running: HashMap<&str, &ContainerInfo> = actual
            .iter()
            .filter(|c| c.status == ContainerStatus::Running && c.pid > 0)
            .filter_map(|c| Some((c.label(labels::INSTANCE_ID)?, c)))
            .collect();
        if resynced {
            self.check_ports(backend.as_ref(), &running, desired).await;
        }
        // Unplug what is no longer wanted or no longer runs.
        let stale: Vec<String> = self
            .plugged
            .iter()
            .filter(|(id, p)| {
                let wanted = desired
                    .instances
                    .iter()
                    .any(|s| s.instance_id == **id && matches!(s.network, Some(Ok(_))));
                let same_run = running
                    .get(id.as_str())
                    .is_some_and(|c| c.id == p.container_id && c.pid == p.pid);
                !wanted || !same_run
            })
            .map(|(id, _)| id.clone())
            .collect();
        let stale_vms: Vec<String> = self
            .vm_ports
            .keys()
            .filter(|id| {
                !desired
                    .instances
                    .iter()
                    .any(|s| s.instance_id == **id && matches!(s.network, Some(Ok(_))))
            })
            .cloned()
            .collect();
        for id in stale.into_iter().chain(stale_vms) {
            self.plugged.remove(&id);
            self.vm_ports.remove(&id);
            if let Err(e) = backend.detach(&id).await {
                tracing::warn!(instance_id = %id, error = %e, "cannot remove an instance's port");
            }
        }
        // Plug running containers whose port is missing or changed.
        for spec in &desired.instances {
            let id = spec.instance_id.as_str();
            let attachment = match &spec.network {
                None => continue,
                Some(Err(e)) => {
                    self.errors
                        .insert(id.to_owned(), format!("invalid network attachment: {e}"));
                    continue;
                }
                Some(Ok(a)) => a,
            };
            if let Some(e) = &self.vpc_error {
                self.errors.insert(id.to_owned(), format!("network: {e}"));
                continue;
            }
            if spec.kind == "vm" {
                self.plug_vm(backend.as_ref(), id, attachment).await;
                continue;
            }
            let Some(c) = running.get(id) else { continue };
            let want = Plugged {
                container_id: c.id.clone(),
                pid: c.pid,
                attachment: attachment.clone(),
            };
            if self.plugged.get(id) == Some(&want) {
                continue;
            }
            let netns = PathBuf::from(format!("/proc/{}/ns/net", c.pid));
            let started = std::time::Instant::now();
            match backend.attach(id, &netns, attachment).await {
                Ok(()) => {
                    tracing::info!(instance_id = %id, ip = %attachment.ip, took_ms = started.elapsed().as_millis() as u64, "VPC port up");
                    self.plugged.insert(id.to_owned(), want);
                }
                Err(e) => {
                    tracing::warn!(instance_id = %id, error = %e, "cannot plug the instance into its VPC");
                    self.errors.insert(id.to_owned(), format!("network: {e}"));
                }
            }
        }
    }

    /// Makes sure a VM's port exists and is right (cheap when it is: one comparison).
    async fn plug_vm(&mut self, backend: &dyn NetworkBackend, id: &str, a: &NetworkAttachment) {
        if self.vm_ports.get(id).is_some_and(|(had, _)| had == a) {
            return;
        }
        let started = std::time::Instant::now();
        match backend.attach_vm(id, a).await {
            Ok(link) => {
                tracing::info!(instance_id = %id, ip = %a.ip, link = %link, took_ms = started.elapsed().as_millis() as u64, "VM's VPC port up");
                self.vm_ports.insert(id.to_owned(), (a.clone(), link));
            }
            Err(e) => {
                tracing::warn!(instance_id = %id, error = %e, "cannot give the VM its VPC port");
                self.errors.insert(id.to_owned(), format!("network: {e}"));
            }
        }
    }

    /// Where each VM with a VPC port stands: `Ok(host link)` when its port is up, `Err(why)`
    /// when it cannot be made. VMs missing from the map have no port yet.
    pub(super) fn vm_links(&self) -> HashMap<String, Result<String, String>> {
        let mut out: HashMap<String, Result<String, String>> = self
            .vm_ports
            .iter()
            .map(|(id, (_, link))| (id.clone(), Ok(link.clone())))
            .collect();
        for (id, e) in &self.errors {
            out.insert(id.clone(), Err(e.clone()));
        }
        out
    }

    /// Syncs the VPCs when they changed, failed last time, or `resync` passed; true when a
    /// sync ran and succeeded.
    async fn sync_vpcs(&mut self, backend: &dyn NetworkBackend, vpcs: &[VpcSpec]) -> bool {
        let fresh = self
            .synced
            .as_ref()
            .is_some_and(|(v, at)| v == vpcs && at.elapsed() < self.resync);
        if fresh && self.vpc_error.is_none() {
            return false;
        }
        match backend.sync_vpcs(vpcs).await {
            Ok(()) => {
                if self.vpc_error.take().is_some() {
                    tracing::info!("VPC networking converged again");
                }
                self.synced = Some((vpcs.to_vec(), Instant::now()));
                true
            }
            Err(e) => {
                let msg = e.to_string();
                if self.vpc_error.as_deref() != Some(msg.as_str()) {
                    tracing::warn!(error = %msg, "cannot build this node's VPCs");
                }
                self.vpc_error = Some(msg);
                self.synced = None;
                false
            }
        }
    }

    /// Compares the host's ports (listed once) with what this agent knows: forgets plugged
    /// ports the host no longer has (a deleted veth), so they are plugged again in this pass —
    /// a port of a container that still runs the same process is drift —, and removes ports no
    /// desired instance has (VM ports outlive their guest's process, so those of VMs deleted
    /// while the agent was down are found here: after a restart it remembers none).
    async fn check_ports(
        &mut self,
        backend: &dyn NetworkBackend,
        running: &HashMap<&str, &ContainerInfo>,
        desired: &DesiredState,
    ) {
        let ports = match backend.ports().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list VPC ports");
                return;
            }
        };
        // Only drift is forgotten here: ports of containers that stopped or went stay known,
        // so the stale pass below detaches them (their rules and dispatch entries).
        self.plugged.retain(|id, p| {
            let same_run = running
                .get(id.as_str())
                .is_some_and(|c| c.id == p.container_id && c.pid == p.pid);
            if !same_run || ports.iter().any(|port| port.instance_id == *id) {
                return true;
            }
            tracing::warn!(instance_id = %id, "an instance's VPC port vanished; plugging it again");
            false
        });
        self.vm_ports.retain(|id, _| {
            let there = ports.iter().any(|port| port.instance_id == *id);
            // (A VM being deleted loses its port with its VPC: no news.)
            let wanted = desired.instances.iter().any(|s| s.instance_id == *id);
            if !there && wanted {
                tracing::warn!(instance_id = %id, "a VM's VPC port vanished; making it again (the guest needs a restart to use it)");
            }
            there
        });
        for port in &ports {
            let wanted = desired
                .instances
                .iter()
                .any(|s| s.instance_id == port.instance_id && matches!(s.network, Some(Ok(_))));
            if wanted {
                continue;
            }
            tracing::info!(instance_id = %port.instance_id, port = %port.port, "removing a VPC port no instance wants");
            self.plugged.remove(&port.instance_id);
            self.vm_ports.remove(&port.instance_id);
            if let Err(e) = backend.detach(&port.instance_id).await {
                tracing::warn!(instance_id = %port.instance_id, error = %e, "cannot remove an instance's port");
            }
        }
    }

    /// An instance with a port reports `running` only once the port is up; until then it is
    /// `starting` (waiting) or `failed` (with the network error).
    pub(super) fn amend(&self, desired: &DesiredState, observed: &mut ObservedState) {
        for o in &mut observed.instances {
            if o.state != InstanceState::Running {
                continue;
            }
            let Some(spec) = desired
                .instances
                .iter()
                .find(|s| s.instance_id == o.instance_id)
            else {
                continue;
            };
            if spec.network.is_none() || spec.desired != RunState::Running {
                continue;
            }
            if let Some(e) = self.errors.get(&o.instance_id) {
                o.state = InstanceState::Failed;
                o.reason = e.clone();
            } else if !self.plugged.contains_key(&o.instance_id)
                && !self.vm_ports.contains_key(&o.instance_id)
            {
                o.state = InstanceState::Starting;
                o.reason = "waiting for its VPC port".into();
            }
        }
    }
}
