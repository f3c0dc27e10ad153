//! In-memory VPC data plane with the contract of the real one: attach needs the VPC to have
//! been synced first, `sync_vpcs` removing a VPC drops its ports, everything is idempotent.
//! Tests read back what was built, and can make the next calls fail.

use super::{
    NetworkAttachment, NetworkBackend, NetworkError, PortInfo, VpcSpec, port_name, vm_link_name,
};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// The "namespace" recorded for a VM's port (VMs have none: their port is a host link).
pub const VM_PORT: &str = "(vm)";

#[derive(Debug, Default)]
struct State {
    vpcs: BTreeMap<String, VpcSpec>,
    /// instance id → (netns path, attachment)
    ports: BTreeMap<String, (PathBuf, NetworkAttachment)>,
    attach_calls: u64,
    fail_attach: Option<NetworkError>,
    unavailable: Option<String>,
}

/// Cheap to clone; clones share state.
#[derive(Debug, Clone, Default)]
pub struct FakeNetwork {
    state: Arc<Mutex<State>>,
}

impl FakeNetwork {
    pub fn new() -> Self {
        Self::default()
    }

    /// A backend that reports VPC networking as unavailable, like a node without underlay.
    pub fn unavailable(reason: &str) -> Self {
        let fake = Self::default();
        fake.lock().unavailable = Some(reason.to_owned());
        fake
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock only happens in a failing test; keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// VPCs currently built, by id.
    pub fn vpcs(&self) -> BTreeMap<String, VpcSpec> {
        self.lock().vpcs.clone()
    }

    /// The attachment and netns of an instance's port, if it has one.
    pub fn port(&self, instance_id: &str) -> Option<(PathBuf, NetworkAttachment)> {
        self.lock().ports.get(instance_id).cloned()
    }

    /// Number of `attach` calls so far (successful or not).
    pub fn attach_calls(&self) -> u64 {
        self.lock().attach_calls
    }

    /// Makes every following `attach` fail with `error` (None: succeed again).
    pub fn fail_attach(&self, error: Option<NetworkError>) {
        self.lock().fail_attach = error;
    }
}

#[async_trait]
impl NetworkBackend for FakeNetwork {
    fn available(&self) -> Result<(), NetworkError> {
        match &self.lock().unavailable {
            Some(reason) => Err(NetworkError::Unavailable(reason.clone())),
            None => Ok(()),
        }
    }

    async fn sync_vpcs(&self, vpcs: &[VpcSpec]) -> Result<(), NetworkError> {
        self.available()?;
        let mut st = self.lock();
        st.vpcs = vpcs.iter().map(|v| (v.vpc_id.clone(), v.clone())).collect();
        let State { vpcs, ports, .. } = &mut *st;
        ports.retain(|_, (_, a)| vpcs.contains_key(&a.vpc_id));
        Ok(())
    }

    async fn attach(
        &self,
        instance_id: &str,
        netns: &Path,
        attachment: &NetworkAttachment,
    ) -> Result<(), NetworkError> {
        self.available()?;
        let mut st = self.lock();
        st.attach_calls += 1;
        if let Some(e) = &st.fail_attach {
            return Err(e.clone());
        }
        if !st.vpcs.contains_key(&attachment.vpc_id) {
            return Err(NetworkError::Invalid(format!(
                "VPC {} is not built on this host",
                attachment.vpc_id
            )));
        }
        st.ports.insert(
            instance_id.to_owned(),
            (netns.to_path_buf(), attachment.clone()),
        );
        Ok(())
    }

    async fn attach_vm(
        &self,
        instance_id: &str,
        attachment: &NetworkAttachment,
    ) -> Result<String, NetworkError> {
        self.attach(instance_id, Path::new(VM_PORT), attachment)
            .await?;
        Ok(vm_link_name("fake", instance_id))
    }

    async fn detach(&self, instance_id: &str) -> Result<(), NetworkError> {
        self.lock().ports.remove(instance_id);
        Ok(())
    }

    async fn ports(&self) -> Result<Vec<PortInfo>, NetworkError> {
        Ok(self
            .lock()
            .ports
            .iter()
            .map(|(id, (_, a))| PortInfo {
                instance_id: id.clone(),
                vpc_id: a.vpc_id.clone(),
                port: port_name(id),
            })
            .collect())
    }
}
