//! An in-memory hypervisor for unit tests and simulated nodes: domains defined from XML (only
//! the name is read), started, shut down (a guest that honours ACPI unless told otherwise),
//! destroyed and undefined; records every call.

use super::{DOMAIN_PREFIX, DomainInfo, DomainState, Hypervisor, VirtType, VmError};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Default)]
struct State {
    domains: BTreeMap<String, (DomainState, String)>,
    /// Domain → (CPU time ns, memory KiB).
    usage: BTreeMap<String, (u64, u64)>,
    /// Domain → (disk bytes read, written).
    disk_io: BTreeMap<String, (u64, u64)>,
    /// Domain → (NIC bytes received, sent).
    net_io: BTreeMap<String, (u64, u64)>,
    calls: Vec<String>,
    /// Guests ignore the ACPI power button (like the busybox test guest).
    ignore_acpi: bool,
    fail_next: Option<VmError>,
}

/// Cheap to clone: clones share the domains.
#[derive(Clone, Default)]
pub struct FakeHypervisor {
    state: Arc<Mutex<State>>,
}

fn name_in(xml: &str) -> Option<String> {
    let start = xml.find("<name>")? + "<name>".len();
    let end = xml[start..].find("</name>")? + start;
    Some(xml[start..end].to_owned())
}

impl FakeHypervisor {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Guests ignore ACPI shutdown requests from now on.
    pub fn ignore_acpi(&self, on: bool) {
        self.lock().ignore_acpi = on;
    }

    /// The next call fails with `e`.
    pub fn fail_next(&self, e: VmError) {
        self.lock().fail_next = Some(e);
    }

    /// Calls since the last `take_calls`, as `"start tc-vm-…"`.
    pub fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut self.lock().calls)
    }

    /// The XML a domain was defined with.
    pub fn xml_of(&self, name: &str) -> Option<String> {
        self.lock().domains.get(name).map(|(_, x)| x.clone())
    }

    pub fn state_of(&self, name: &str) -> Option<DomainState> {
        self.lock().domains.get(name).map(|(s, _)| *s)
    }

    /// The guest powers itself off (or crashes).
    pub fn set_state(&self, name: &str, state: DomainState) {
        if let Some(d) = self.lock().domains.get_mut(name) {
            d.0 = state;
        }
    }

    /// The domain's CPU time so far and its memory.
    pub fn set_usage(&self, name: &str, cpu_time_ns: u64, memory_kib: u64) {
        self.lock()
            .usage
            .insert(name.to_owned(), (cpu_time_ns, memory_kib));
    }

    /// The domain's disk bytes read and written so far.
    pub fn set_disk_io(&self, name: &str, read: u64, written: u64) {
        self.lock().disk_io.insert(name.to_owned(), (read, written));
    }

    /// The domain's NIC bytes received and sent so far.
    pub fn set_net_io(&self, name: &str, rx: u64, tx: u64) {
        self.lock().net_io.insert(name.to_owned(), (rx, tx));
    }

    /// The domain vanishes behind the agent's back.
    pub fn vanish(&self, name: &str) {
        self.lock().domains.remove(name);
    }

    fn call(&self, what: &str, name: &str) -> Result<MutexGuard<'_, State>, VmError> {
        let mut st = self.lock();
        st.calls.push(format!("{what} {name}"));
        match st.fail_next.take() {
            Some(e) => Err(e),
            None => Ok(st),
        }
    }
}

#[async_trait]
impl Hypervisor for FakeHypervisor {
    fn virt_type(&self) -> VirtType {
        VirtType::Qemu
    }

    async fn list(&self) -> Result<Vec<DomainInfo>, VmError> {
        let mut st = self.lock();
        if let Some(e) = st.fail_next.take() {
            return Err(e);
        }
        Ok(st
            .domains
            .iter()
            .filter(|(n, _)| n.starts_with(DOMAIN_PREFIX))
            .map(|(name, (state, xml))| {
                let (cpu_time_ns, memory_kib) = st.usage.get(name).copied().unwrap_or_default();
                DomainInfo {
                    node_id: super::xml_attr(xml, "thecloud:instance", "node"),
                    name: name.clone(),
                    uuid: String::new(),
                    state: *state,
                    cpu_time_ns,
                    memory_kib,
                    vcpus: 1,
                }
            })
            .collect())
    }

    async fn define(&self, xml: &str) -> Result<(), VmError> {
        let name = name_in(xml).ok_or_else(|| VmError::Invalid("no <name> in the XML".into()))?;
        let mut st = self.call("define", &name)?;
        let state = st
            .domains
            .get(&name)
            .map_or(DomainState::ShutOff, |(s, _)| *s);
        st.domains.insert(name, (state, xml.to_owned()));
        Ok(())
    }

    async fn start(&self, name: &str) -> Result<(), VmError> {
        let mut st = self.call("start", name)?;
        let d = st
            .domains
            .get_mut(name)
            .ok_or_else(|| VmError::NotFound(name.to_owned()))?;
        d.0 = DomainState::Running;
        Ok(())
    }

    async fn shutdown(&self, name: &str) -> Result<(), VmError> {
        let mut st = self.call("shutdown", name)?;
        let ignore = st.ignore_acpi;
        let d = st
            .domains
            .get_mut(name)
            .ok_or_else(|| VmError::NotFound(name.to_owned()))?;
        if !ignore && d.0 == DomainState::Running {
            d.0 = DomainState::ShutOff;
        }
        Ok(())
    }

    async fn destroy(&self, name: &str) -> Result<(), VmError> {
        let mut st = self.call("destroy", name)?;
        if let Some(d) = st.domains.get_mut(name) {
            d.0 = DomainState::ShutOff;
        }
        Ok(())
    }

    async fn undefine(&self, name: &str) -> Result<(), VmError> {
        let mut st = self.call("undefine", name)?;
        st.domains.remove(name);
        Ok(())
    }

    async fn io(&self, name: &str) -> Result<super::DomainIo, VmError> {
        let st = self.lock();
        st.domains
            .get(name)
            .map(|_| super::DomainIo {
                disk: st.disk_io.get(name).copied().unwrap_or_default(),
                net: st.net_io.get(name).copied(),
            })
            .ok_or_else(|| VmError::NotFound(name.to_owned()))
    }

    async fn disks(&self, name: &str) -> Result<Vec<(String, String)>, VmError> {
        let st = self.lock();
        let (_, xml) = st
            .domains
            .get(name)
            .ok_or_else(|| VmError::NotFound(name.to_owned()))?;
        Ok(super::xml::volume_disks(xml))
    }

    async fn attach_disk(&self, name: &str, xml: &str) -> Result<(), VmError> {
        let mut st = self.call("attach_disk", name)?;
        let d = st
            .domains
            .get_mut(name)
            .ok_or_else(|| VmError::NotFound(name.to_owned()))?;
        d.1 = d.1.replace("</devices>", &format!("{xml}</devices>"));
        Ok(())
    }

    async fn detach_disk(&self, name: &str, xml: &str) -> Result<(), VmError> {
        let mut st = self.call("detach_disk", name)?;
        let d = st
            .domains
            .get_mut(name)
            .ok_or_else(|| VmError::NotFound(name.to_owned()))?;
        d.1 = d.1.replace(xml, "");
        Ok(())
    }

    async fn vnc(&self, name: &str) -> Result<(u16, String), VmError> {
        let st = self.lock();
        match st.domains.get(name) {
            Some((DomainState::Running, xml)) => {
                super::vnc_from_xml(xml).ok_or_else(|| VmError::NotFound(name.to_owned()))
            }
            _ => Err(VmError::NotFound(name.to_owned())),
        }
    }
}
