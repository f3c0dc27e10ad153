//! The VM half of a reconcile pass: instances of kind `vm` as libvirt domains. Creates what is
//! missing (root-disk overlay, cloud-init seed, domain definition, start), stops domains whose
//! instance should be stopped (ACPI power button, then destroy after `vm_shutdown_timeout`),
//! starts them again once per change generation (or by their restart policy), and removes
//! domains (and their files) no instance wants. Running domains of a restarted agent are
//! re-adopted untouched: everything is found again from libvirt and the VM directory.

use super::state::ActedStore;
use crate::model::{
    DesiredState, InstanceObservation, InstanceSpec, InstanceState, ObservedState, RestartPolicy,
    RunState,
};
use crate::storage::VolumeBackend;
use crate::vm::files::{Seed, VmFiles};
use crate::vm::netconfig::{host_nameservers, network_config};
use crate::vm::xml::{DomainParams, disk_xml, domain_xml};
use crate::vm::{DomainInfo, DomainState, Hypervisor, domain_name, instance_of};
use rand::Rng;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Reason of every VM on a node without a hypervisor.
const NO_HYPERVISOR: &str = "this node has no hypervisor (libvirt): VMs cannot run here; start the agent with --libvirt-uri";

pub(super) struct VmHalf {
    node_id: String,
    hv: Option<Arc<dyn Hypervisor>>,
    files: Option<VmFiles>,
    retry_after: Duration,
    shutdown_timeout: Duration,
    /// Instance → (change generation, when, why) of its last failed action.
    failures: HashMap<String, (u64, Instant, String)>,
    /// Instance → when the guest was asked to power off.
    stopping: HashMap<String, Instant>,
    /// Instances whose domain this process has seen (a vanished one is then noticed).
    seen: HashSet<String>,
    /// Instance → the mounts its domain's disks were last made to match. A domain is read
    /// (its XML) and changed only when its instance's mounts differ from these.
    synced: HashMap<String, Vec<(String, String)>>,
    /// VMs not created in this pass because their VPC port is not up: (state, why).
    blocked: HashMap<String, (InstanceState, String)>,
    observed: Vec<InstanceObservation>,
}

fn is_vm(spec: &InstanceSpec) -> bool {
    spec.kind == "vm"
}

/// A random 8-character VNC password (VNC's limit).
fn vnc_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..8)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

impl VmHalf {
    pub(super) fn new(
        node_id: &str,
        hv: Option<Arc<dyn Hypervisor>>,
        files: Option<VmFiles>,
        retry_after: Duration,
        shutdown_timeout: Duration,
    ) -> Self {
        Self {
            node_id: node_id.to_owned(),
            hv,
            files,
            retry_after,
            shutdown_timeout,
            failures: HashMap::new(),
            stopping: HashMap::new(),
            seen: HashSet::new(),
            synced: HashMap::new(),
            blocked: HashMap::new(),
            observed: Vec::new(),
        }
    }

    fn throttled(&self, spec: &InstanceSpec, now: Instant) -> bool {
        self.failures
            .get(&spec.instance_id)
            .is_some_and(|(cg, at, _)| {
                *cg >= spec.change_generation
                    && now.saturating_duration_since(*at) < self.retry_after
            })
    }

    fn fail(&mut self, spec: &InstanceSpec, reason: String) {
        tracing::warn!(instance_id = %spec.instance_id, reason = %reason, "VM action failed");
        self.failures.insert(
            spec.instance_id.clone(),
            (spec.change_generation, Instant::now(), reason),
        );
    }

    /// Volume id → instance, for the volumes attached to this node's VMs.
    pub(super) fn volume_users(&self) -> HashMap<String, String> {
        self.synced
            .iter()
            .flat_map(|(inst, mounts)| mounts.iter().map(move |(v, _)| (v.clone(), inst.clone())))
            .collect()
    }

    pub(super) async fn converge(
        &mut self,
        desired: &DesiredState,
        acted: &mut ActedStore,
        volumes: Option<Arc<dyn VolumeBackend>>,
        links: &HashMap<String, Result<String, String>>,
    ) {
        self.blocked.clear();
        let specs: Vec<&InstanceSpec> = desired.instances.iter().filter(|s| is_vm(s)).collect();
        let wanted: HashSet<&str> = specs.iter().map(|s| s.instance_id.as_str()).collect();
        self.failures.retain(|id, _| wanted.contains(id.as_str()));
        self.stopping.retain(|id, _| wanted.contains(id.as_str()));
        let (Some(hv), Some(files)) = (self.hv.clone(), self.files.clone()) else {
            self.observed = specs
                .iter()
                .map(|s| {
                    InstanceObservation::new(&s.instance_id, InstanceState::Failed, NO_HYPERVISOR)
                })
                .collect();
            return;
        };
        // Only this node's domains: another agent may share the libvirtd (tests, or a
        // mistake in a deployment), and its domains are never ours to touch.
        let node_id = self.node_id.clone();
        let own = move |d: Vec<DomainInfo>| -> Vec<DomainInfo> {
            d.into_iter()
                .filter(|d| d.node_id.as_deref() == Some(node_id.as_str()))
                .collect()
        };
        let domains = match hv.list().await.map(&own) {
            Ok(d) => d,
            Err(e) => {
                // libvirtd away for a moment (restart, upgrade): the guests keep running, so the
                // last observation stands; VMs never seen yet wait. Nothing is acted on.
                tracing::warn!(error = %e, "cannot list libvirt domains; VM states are the last known");
                let reason = format!("libvirt unreachable: {e}");
                let last: HashMap<String, InstanceObservation> = std::mem::take(&mut self.observed)
                    .into_iter()
                    .map(|o| (o.instance_id.clone(), o))
                    .collect();
                self.observed = specs
                    .iter()
                    .map(|s| {
                        last.get(&s.instance_id).cloned().unwrap_or_else(|| {
                            InstanceObservation::new(
                                &s.instance_id,
                                InstanceState::Starting,
                                reason.clone(),
                            )
                        })
                    })
                    .collect();
                return;
            }
        };
        let by_instance: BTreeMap<&str, &DomainInfo> = domains
            .iter()
            .filter_map(|d| Some((instance_of(&d.name)?, d)))
            .collect();
        let now = Instant::now();
        let mut changed = false;
        for spec in &specs {
            let id = spec.instance_id.as_str();
            let dom = by_instance.get(id).copied();
            if dom.is_some() {
                self.seen.insert(id.to_owned());
            }
            if self.throttled(spec, now) {
                continue;
            }
            let new_ask = spec.change_generation > acted.get(id);
            if spec.desired == RunState::Running {
                // A stop timer belongs to one stop: a later stop starts with ACPI again.
                self.stopping.remove(id);
            }
            let result = match (spec.desired, dom.map(|d| d.state)) {
                (RunState::Running, None) => {
                    if self.seen.contains(id)
                        && spec.restart_policy == RestartPolicy::Never
                        && !new_ask
                    {
                        // It vanished behind our back; `never` means it is not brought back.
                        self.failures.insert(
                            id.to_owned(),
                            (
                                spec.change_generation,
                                now,
                                "its libvirt domain vanished".into(),
                            ),
                        );
                        continue;
                    }
                    let nic = match (&spec.network, links.get(id)) {
                        (None, _) => None,
                        (Some(Ok(a)), Some(Ok(link))) => Some((link.clone(), a.mac.to_string())),
                        (_, Some(Err(e))) => {
                            self.blocked
                                .insert(id.to_owned(), (InstanceState::Failed, e.clone()));
                            continue;
                        }
                        (_, _) => {
                            self.blocked.insert(
                                id.to_owned(),
                                (InstanceState::Starting, "waiting for its VPC port".into()),
                            );
                            continue;
                        }
                    };
                    changed = true;
                    acted.mark(id, spec.change_generation);
                    self.create(hv.as_ref(), &files, volumes.as_deref(), spec, nic)
                        .await
                }
                (RunState::Running, Some(DomainState::ShutOff | DomainState::Crashed)) => {
                    let crashed = dom.is_some_and(|d| d.state == DomainState::Crashed);
                    let by_policy = match spec.restart_policy {
                        RestartPolicy::Always => true,
                        RestartPolicy::OnFailure => crashed,
                        RestartPolicy::Never => false,
                    };
                    if !(new_ask || by_policy) {
                        continue;
                    }
                    changed = true;
                    acted.mark(id, spec.change_generation);
                    tracing::info!(instance_id = %id, "starting VM");
                    hv.start(&domain_name(id)).await.map_err(|e| e.to_string())
                }
                (
                    RunState::Stopped,
                    Some(DomainState::Running | DomainState::Paused | DomainState::ShuttingDown),
                ) => {
                    changed = true;
                    acted.mark(id, spec.change_generation);
                    let name = domain_name(id);
                    match self.stopping.get(id) {
                        None => {
                            tracing::info!(instance_id = %id, "asking the VM's guest to power off (ACPI)");
                            self.stopping.insert(id.to_owned(), now);
                            hv.shutdown(&name).await.map_err(|e| e.to_string())
                        }
                        Some(at) if now.saturating_duration_since(*at) >= self.shutdown_timeout => {
                            tracing::info!(instance_id = %id, timeout_s = self.shutdown_timeout.as_secs(), "the guest did not power off in time; destroying the domain");
                            hv.destroy(&name).await.map_err(|e| e.to_string())
                        }
                        Some(_) => Ok(()),
                    }
                }
                _ => {
                    if dom.is_some_and(|d| d.state == DomainState::ShutOff) {
                        self.stopping.remove(id);
                    }
                    continue;
                }
            };
            if let Err(reason) = result {
                self.fail(spec, reason);
            } else {
                self.seen.insert(id.to_owned());
                if spec.desired == RunState::Running {
                    self.failures.remove(id);
                }
            }
        }
        // Volumes: attach what is missing (hot-plug when running), detach what is gone; only
        // for domains whose instance's mounts changed since they were last made to match.
        self.synced
            .retain(|id, _| by_instance.contains_key(id.as_str()));
        for spec in &specs {
            let id = spec.instance_id.as_str();
            if !by_instance.contains_key(id) || self.synced.get(id) == Some(&spec.mounts) {
                continue;
            }
            match self.sync_disks(hv.as_ref(), volumes.as_deref(), spec).await {
                Ok(acted) => {
                    changed |= acted;
                    self.synced.insert(id.to_owned(), spec.mounts.clone());
                }
                Err(reason) => self.fail(spec, reason),
            }
        }
        // Domains (and files) no instance wants.
        for d in &domains {
            let Some(id) = instance_of(&d.name) else {
                continue;
            };
            if wanted.contains(id) {
                continue;
            }
            changed = true;
            tracing::info!(instance_id = %id, domain = %d.name, "removing VM that is not desired");
            let r = async {
                hv.destroy(&d.name).await?;
                hv.undefine(&d.name).await?;
                files.remove(id).await
            }
            .await;
            if let Err(e) = r {
                tracing::warn!(instance_id = %id, error = %e, "cannot remove VM; will retry");
            } else {
                self.seen.remove(id);
                acted.forget(id);
            }
        }
        for id in files.instances().await {
            if !wanted.contains(id.as_str())
                && !by_instance.contains_key(id.as_str())
                && let Err(e) = files.remove(&id).await
            {
                tracing::warn!(instance_id = %id, error = %e, "cannot remove leftover VM files");
            }
        }
        let after = if changed {
            hv.list().await.map(&own).unwrap_or(domains)
        } else {
            domains
        };
        self.observed = self.observe(&specs, &after);
    }

    /// Files, definition, start. Whatever fails leaves nothing defined.
    async fn create(
        &self,
        hv: &dyn Hypervisor,
        files: &VmFiles,
        volumes: Option<&dyn VolumeBackend>,
        spec: &InstanceSpec,
        nic: Option<(String, String)>,
    ) -> Result<(), String> {
        let id = spec.instance_id.as_str();
        let vm = spec
            .vm
            .as_ref()
            .ok_or_else(|| "the scheduler sent no VM image for this instance".to_owned())?;
        tracing::info!(instance_id = %id, image = %vm.image.image_id, disk_gb = vm.disk_gb, "creating VM");
        let seed = Seed {
            instance_id: id.to_owned(),
            hostname: if vm.hostname.is_empty() {
                spec.name.clone()
            } else {
                vm.hostname.clone()
            },
            user_data: vm.user_data.clone(),
            network_config: match &spec.network {
                Some(Ok(a)) => network_config(Some(a), &host_nameservers().await),
                _ => network_config(None, &[]),
            },
        };
        let disks = volume_disks(volumes, spec).await?;
        let paths = files
            .prepare(&vm.image, vm.disk_gb.max(1), &seed)
            .await
            .map_err(|e| e.to_string())?;
        let kernel = (!vm.image.kernel.is_empty()).then(|| {
            (
                vm.image.kernel.clone().into(),
                (!vm.image.initrd.is_empty()).then(|| vm.image.initrd.clone().into()),
                vm.image.cmdline.clone(),
            )
        });
        let xml = domain_xml(&DomainParams {
            name: domain_name(id),
            instance_id: id.to_owned(),
            node_id: self.node_id.clone(),
            virt_type: hv.virt_type(),
            vcpus: u32::try_from(spec.cpu_millis.div_ceil(1000).max(1)).unwrap_or(1),
            memory_mib: spec.memory_mb.max(64),
            machine: "pc".into(),
            root_disk: paths.root_disk,
            seed_iso: Some(paths.seed_iso),
            volumes: disks,
            kernel,
            nic,
            serial_log: paths.serial_log,
            vnc_password: vnc_password(),
        });
        let name = domain_name(id);
        hv.define(&xml).await.map_err(|e| e.to_string())?;
        if let Err(e) = hv.start(&name).await {
            let _ = hv.undefine(&name).await;
            return Err(format!("starting the domain: {e}"));
        }
        Ok(())
    }

    /// Makes the domain's volume disks match the spec's mounts; returns whether anything
    /// changed.
    async fn sync_disks(
        &self,
        hv: &dyn Hypervisor,
        volumes: Option<&dyn VolumeBackend>,
        spec: &InstanceSpec,
    ) -> Result<bool, String> {
        let name = domain_name(&spec.instance_id);
        let current = hv.disks(&name).await.map_err(|e| e.to_string())?;
        if current.is_empty() && spec.mounts.is_empty() {
            return Ok(false);
        }
        let wanted = volume_disks(volumes, spec).await?;
        let mut changed = false;
        for (dev, src) in &current {
            if !wanted
                .iter()
                .any(|(p, d)| d == dev && p.as_os_str() == src.as_str())
            {
                tracing::info!(instance_id = %spec.instance_id, dev = %dev, "detaching volume from VM");
                hv.detach_disk(&name, &disk_xml(std::path::Path::new(src), dev))
                    .await
                    .map_err(|e| format!("detaching {dev}: {e}"))?;
                changed = true;
            }
        }
        for (p, dev) in &wanted {
            if !current
                .iter()
                .any(|(d, s)| d == dev && p.as_os_str() == s.as_str())
            {
                tracing::info!(instance_id = %spec.instance_id, dev = %dev, "attaching volume to VM");
                hv.attach_disk(&name, &disk_xml(p, dev))
                    .await
                    .map_err(|e| format!("attaching {dev}: {e}"))?;
                changed = true;
            }
        }
        Ok(changed)
    }

    fn observe(&self, specs: &[&InstanceSpec], domains: &[DomainInfo]) -> Vec<InstanceObservation> {
        let by_instance: BTreeMap<&str, &DomainInfo> = domains
            .iter()
            .filter_map(|d| Some((instance_of(&d.name)?, d)))
            .collect();
        let mut out: Vec<InstanceObservation> = specs
            .iter()
            .map(|spec| {
                let id = spec.instance_id.as_str();
                let failure = self.failures.get(id).map(|(_, _, r)| r.clone());
                let (state, reason) = match (by_instance.get(id).map(|d| d.state), spec.desired) {
                    (Some(DomainState::Running), RunState::Running) => {
                        (InstanceState::Running, String::new())
                    }
                    (
                        Some(
                            DomainState::Running | DomainState::ShuttingDown | DomainState::Paused,
                        ),
                        RunState::Stopped,
                    ) => (InstanceState::Stopping, "the guest is powering off".into()),
                    (Some(DomainState::Paused), RunState::Running) => {
                        (InstanceState::Starting, "the domain is paused".into())
                    }
                    (Some(DomainState::ShuttingDown), RunState::Running) => {
                        (InstanceState::Stopping, "the guest is powering off".into())
                    }
                    (Some(DomainState::Crashed), _) => (
                        InstanceState::Failed,
                        failure.unwrap_or_else(|| "the guest crashed".into()),
                    ),
                    (Some(_), RunState::Stopped) | (None, RunState::Stopped) => {
                        (InstanceState::Stopped, String::new())
                    }
                    (Some(_), RunState::Running) => match failure {
                        Some(r) => (InstanceState::Failed, r),
                        None => (InstanceState::Stopped, "the guest powered off".into()),
                    },
                    (None, RunState::Running) => match (failure, self.blocked.get(id)) {
                        (Some(r), _) => (InstanceState::Failed, r),
                        (None, Some((state, why))) => (*state, why.clone()),
                        (None, None) => (InstanceState::Starting, "creating the VM".into()),
                    },
                };
                let mut o = InstanceObservation::new(id, state, reason);
                if let Some(d) = by_instance.get(id) {
                    o.runtime_id = d.uuid.clone();
                }
                o
            })
            .collect();
        out.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        out
    }

    /// Replaces the observations of VM instances (the container half reports them as
    /// unsupported) with the VM half's.
    pub(super) fn amend(&self, observed: &mut ObservedState) {
        if self.observed.is_empty() {
            return;
        }
        let ours: HashSet<&str> = self
            .observed
            .iter()
            .map(|o| o.instance_id.as_str())
            .collect();
        observed
            .instances
            .retain(|o| !ours.contains(o.instance_id.as_str()));
        observed.instances.extend(self.observed.iter().cloned());
        observed
            .instances
            .sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
    }
}

/// (image file or block device, guest device) of a VM spec's volumes. Each is unmounted from
/// the host first (it may have served a container before): QEMU must be its only user.
async fn volume_disks(
    volumes: Option<&dyn VolumeBackend>,
    spec: &InstanceSpec,
) -> Result<Vec<(std::path::PathBuf, String)>, String> {
    if spec.mounts.is_empty() {
        return Ok(Vec::new());
    }
    let backend = volumes.ok_or_else(|| super::volumes::NO_BACKEND.to_owned())?;
    let mut out = Vec::with_capacity(spec.mounts.len());
    for (volume, path) in &spec.mounts {
        let dev = path
            .strip_prefix("/dev/")
            .filter(|d| d.len() == 3 && d.starts_with("vd") && *d != "vda")
            .ok_or_else(|| {
                format!("volume {volume}: {path:?} is not a VM disk device (/dev/vdb…)")
            })?;
        backend
            .unmount(volume)
            .await
            .map_err(|e| format!("volume {volume}: {e}"))?;
        let info = backend
            .get(volume)
            .await
            .map_err(|e| format!("volume {volume}: {e}"))?;
        out.push((info.path, dev.to_owned()));
    }
    Ok(out)
}
