//! Virtual machines: libvirt domains behind one trait, with a real implementation over the
//! `virt` crate (`libvirt`) and an in-memory fake (`fake`) for unit tests and simulated nodes.
//!
//! Every domain the agent creates is named `tc-vm-<instance id>` and carries the instance id
//! in its `<metadata>`, so a restarted agent finds its domains from libvirt alone and never
//! touches anyone else's. Per-VM files (root-disk overlay, cloud-init seed, serial log) live
//! in `<vm dir>/<instance id>/` (`files`); the domain XML is generated in `xml`.

pub mod fake;
pub mod files;
pub mod libvirt;
pub mod netconfig;
pub mod usage;
pub mod xml;

pub use fake::FakeHypervisor;
pub use files::VmFiles;
pub use libvirt::LibvirtHypervisor;
pub use usage::VmSampler;

use async_trait::async_trait;

/// Prefix of the names of the agent's domains.
pub const DOMAIN_PREFIX: &str = "tc-vm-";

/// The domain name of an instance.
pub fn domain_name(instance_id: &str) -> String {
    format!("{DOMAIN_PREFIX}{instance_id}")
}

/// The instance id in one of our domain names.
pub fn instance_of(domain: &str) -> Option<&str> {
    domain
        .strip_prefix(DOMAIN_PREFIX)
        .filter(|id| !id.is_empty())
}

/// What libvirt says a domain is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainState {
    Running,
    Paused,
    ShuttingDown,
    ShutOff,
    Crashed,
    Other,
}

/// One of our domains as libvirt reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainInfo {
    pub name: String,
    /// The node whose agent created it (from its `<metadata>`): an agent only ever manages
    /// its own node's domains, even when several agents share one libvirtd.
    pub node_id: Option<String>,
    pub uuid: String,
    pub state: DomainState,
    /// CPU time used since it started, in nanoseconds.
    pub cpu_time_ns: u64,
    pub memory_kib: u64,
    pub vcpus: u32,
}

/// How QEMU runs guests: hardware virtualisation or TCG emulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtType {
    Kvm,
    Qemu,
}

impl VirtType {
    /// The `<domain type=…>` value.
    pub fn as_str(self) -> &'static str {
        match self {
            VirtType::Kvm => "kvm",
            VirtType::Qemu => "qemu",
        }
    }
}

/// Errors of the hypervisor layer. Messages name domains and the agent's own paths, never
/// user data (user-data may hold secrets).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VmError {
    #[error("domain {0} not found")]
    NotFound(String),
    #[error("libvirt: {0}")]
    Libvirt(String),
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("{0}")]
    Io(String),
    #[error("{cmd} failed ({status}): {stderr}")]
    Command {
        cmd: String,
        status: String,
        stderr: String,
    },
}

/// I/O counters of a running domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DomainIo {
    /// Bytes read from and written to all of its disks.
    pub disk: (u64, u64),
    /// Bytes received and sent by its NIC (the guest's view, as libvirt reports it); `None`
    /// without a NIC.
    pub net: Option<(u64, u64)>,
}

/// A hypervisor the agent runs VMs on. Every method is idempotent where that makes sense:
/// starting a running domain, destroying a stopped one or undefining a missing one succeed.
#[async_trait]
pub trait Hypervisor: Send + Sync {
    /// The virtualisation type new domains use on this host.
    fn virt_type(&self) -> VirtType;
    /// Our domains (named `tc-vm-…`), whatever their state.
    async fn list(&self) -> Result<Vec<DomainInfo>, VmError>;
    /// Defines (or redefines) a persistent domain from XML.
    async fn define(&self, xml: &str) -> Result<(), VmError>;
    async fn start(&self, name: &str) -> Result<(), VmError>;
    /// Asks the guest to power off (ACPI power button).
    async fn shutdown(&self, name: &str) -> Result<(), VmError>;
    /// Pulls the plug.
    async fn destroy(&self, name: &str) -> Result<(), VmError>;
    /// Removes the domain's definition (it must be shut off).
    async fn undefine(&self, name: &str) -> Result<(), VmError>;
    /// The running domain's VNC server: (port on 127.0.0.1, password).
    async fn vnc(&self, name: &str) -> Result<(u16, String), VmError>;
    /// I/O counters of the running domain since it started: all of its disks, and its NIC.
    async fn io(&self, name: &str) -> Result<DomainIo, VmError>;
    /// (guest device, source) of the domain's volume disks (not the root disk).
    async fn disks(&self, name: &str) -> Result<Vec<(String, String)>, VmError>;
    /// Adds a disk (`<disk>` XML) to the domain's definition and, when it runs, hot-plugs it.
    async fn attach_disk(&self, name: &str, xml: &str) -> Result<(), VmError>;
    /// Removes a disk from the definition and, when the domain runs, hot-unplugs it.
    async fn detach_disk(&self, name: &str, xml: &str) -> Result<(), VmError>;
}

/// The value of attribute `name` in the first `<tag …>` of `xml` (single or double quotes).
pub fn xml_attr(xml: &str, tag: &str, name: &str) -> Option<String> {
    let start = xml.find(&format!("<{tag}"))?;
    let end = xml[start..].find('>')? + start;
    let el = &xml[start..end];
    for q in ['\'', '"'] {
        let key = format!(" {name}={q}");
        if let Some(i) = el.find(&key) {
            let i = i + key.len();
            let j = el[i..].find(q)? + i;
            return Some(el[i..j].to_owned());
        }
    }
    None
}

/// `(port, password)` of the VNC `<graphics>` element in live domain XML (with secrets).
pub fn vnc_from_xml(xml: &str) -> Option<(u16, String)> {
    let start = xml.find("<graphics type='vnc'")?;
    let end = xml[start..].find('>')? + start;
    let el = &xml[start..end];
    let attr = |name: &str| {
        let key = format!(" {name}='");
        let i = el.find(&key)? + key.len();
        let j = el[i..].find('\'')? + i;
        Some(el[i..j].to_owned())
    };
    let port: u16 = attr("port")?.parse().ok()?;
    if port == 0 || port == u16::MAX {
        return None;
    }
    let password = attr("passwd").unwrap_or_default();
    Some((port, password))
}

/// Whether this host's CPU has hardware virtualisation that ordinary guests can use: vmx or
/// svm in /proc/cpuinfo. (A `/dev/kvm` alone is not enough: PVM hosts expose one on which
/// normal Linux guests do not boot.)
pub fn host_has_hw_virt() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| {
        c.lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
    }) && std::path::Path::new("/dev/kvm").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_read_with_either_quote() {
        let m = r#"<thecloud:instance xmlns:thecloud="https://x" id="i1" node='n1'/>"#;
        assert_eq!(
            xml_attr(m, "thecloud:instance", "id").as_deref(),
            Some("i1")
        );
        assert_eq!(
            xml_attr(m, "thecloud:instance", "node").as_deref(),
            Some("n1")
        );
        assert_eq!(xml_attr(m, "thecloud:instance", "other"), None);
        assert_eq!(xml_attr(m, "missing", "id"), None);
    }

    #[test]
    fn the_vnc_endpoint_is_read_from_live_xml() {
        let xml = "<domain><devices><graphics type='vnc' port='5901' autoport='yes' listen='127.0.0.1' passwd='abc'>\
                   <listen type='address' address='127.0.0.1'/></graphics></devices></domain>";
        assert_eq!(vnc_from_xml(xml), Some((5901, "abc".into())));
        assert_eq!(
            vnc_from_xml("<graphics type='vnc' port='-1' autoport='yes'/>"),
            None
        );
        assert_eq!(vnc_from_xml("<domain/>"), None);
    }

    #[test]
    fn domain_names_carry_the_instance_id() {
        let n = domain_name("01a2");
        assert_eq!(n, "tc-vm-01a2");
        assert_eq!(instance_of(&n), Some("01a2"));
        assert_eq!(instance_of("tc-vm-"), None);
        assert_eq!(instance_of("someone-else"), None);
    }
}
