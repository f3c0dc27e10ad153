//! The real hypervisor: libvirt through the `virt` crate (0.4). libvirt calls block, so each
//! runs on the blocking pool with the shared connection (`Connect` is Send + Sync: libvirt
//! connections are thread-safe).

use super::{DOMAIN_PREFIX, DomainInfo, DomainState, Hypervisor, VirtType, VmError};
use async_trait::async_trait;
use std::sync::Arc;
use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::ErrorNumber;

/// libvirt at a URI (`qemu:///system` on nodes, `test:///default` in unit tests).
pub struct LibvirtHypervisor {
    /// Re-opened when libvirtd went away and came back (its restart must not leave every VM
    /// of the node failed until the agent restarts).
    conn: std::sync::RwLock<Arc<Connect>>,
    uri: String,
    virt_type: VirtType,
}

fn err(e: virt::error::Error) -> VmError {
    if e.code() == ErrorNumber::NoDomain {
        VmError::NotFound(e.message().to_owned())
    } else {
        VmError::Libvirt(e.message().to_owned())
    }
}

fn state(s: u32) -> DomainState {
    match s {
        virt::sys::VIR_DOMAIN_RUNNING | virt::sys::VIR_DOMAIN_BLOCKED => DomainState::Running,
        virt::sys::VIR_DOMAIN_PAUSED | virt::sys::VIR_DOMAIN_PMSUSPENDED => DomainState::Paused,
        virt::sys::VIR_DOMAIN_SHUTDOWN => DomainState::ShuttingDown,
        virt::sys::VIR_DOMAIN_SHUTOFF => DomainState::ShutOff,
        virt::sys::VIR_DOMAIN_CRASHED => DomainState::Crashed,
        _ => DomainState::Other,
    }
}

/// Device changes go to the definition, and to the running guest when it runs.
fn affect(d: &Domain) -> Result<u32, VmError> {
    let mut flags = virt::sys::VIR_DOMAIN_AFFECT_CONFIG;
    if d.is_active().map_err(err)? {
        flags |= virt::sys::VIR_DOMAIN_AFFECT_LIVE;
    }
    Ok(flags)
}

impl LibvirtHypervisor {
    /// Connects to `uri`. `virt_type`: `None` detects (`kvm` where the CPU has vmx/svm and
    /// libvirt offers kvm domains, `qemu` otherwise).
    pub async fn connect(uri: &str, virt_type: Option<VirtType>) -> Result<Self, VmError> {
        let u = uri.to_owned();
        let conn = tokio::task::spawn_blocking(move || Connect::open(Some(&u)).map_err(err))
            .await
            .map_err(|e| VmError::Libvirt(e.to_string()))??;
        let conn = Arc::new(conn);
        let virt_type = match virt_type {
            Some(t) => t,
            None => {
                let c = Arc::clone(&conn);
                let kvm_offered = tokio::task::spawn_blocking(move || {
                    c.get_domain_capabilities(None, Some("x86_64"), None, Some("kvm"), 0)
                        .is_ok()
                })
                .await
                .unwrap_or(false);
                if kvm_offered && super::host_has_hw_virt() {
                    VirtType::Kvm
                } else {
                    VirtType::Qemu
                }
            }
        };
        tracing::info!(uri, virt_type = virt_type.as_str(), "connected to libvirt");
        Ok(Self {
            conn: std::sync::RwLock::new(conn),
            uri: uri.to_owned(),
            virt_type,
        })
    }

    fn current(&self) -> Arc<Connect> {
        self.conn.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Runs `f` with the connection on the blocking pool. When the connection is dead
    /// (libvirtd restarted), it is re-opened first; the call fails if that fails.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connect) -> Result<T, VmError> + Send + 'static,
    ) -> Result<T, VmError> {
        let c = self.current();
        let uri = self.uri.clone();
        let (result, reopened) = tokio::task::spawn_blocking(move || {
            if c.is_alive().unwrap_or(false) {
                return (f(&c), None);
            }
            tracing::warn!(uri = %uri, "libvirt connection lost; reconnecting");
            match Connect::open(Some(&uri)) {
                Ok(fresh) => {
                    let fresh = Arc::new(fresh);
                    (f(&fresh), Some(fresh))
                }
                Err(e) => (Err(err(e)), None),
            }
        })
        .await
        .map_err(|e| VmError::Libvirt(format!("libvirt call panicked or was cancelled: {e}")))?;
        if let Some(fresh) = reopened {
            tracing::info!(uri = %self.uri, "reconnected to libvirt");
            *self.conn.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        }
        result
    }

    /// Looks a domain up and runs `f` on it.
    async fn on_domain(
        &self,
        name: &str,
        f: impl FnOnce(&Domain) -> Result<(), VmError> + Send + 'static,
    ) -> Result<(), VmError> {
        let name = name.to_owned();
        self.with(move |c| {
            let d = Domain::lookup_by_name(c, &name).map_err(err)?;
            f(&d)
        })
        .await
    }
}

#[async_trait]
impl Hypervisor for LibvirtHypervisor {
    fn virt_type(&self) -> VirtType {
        self.virt_type
    }

    async fn list(&self) -> Result<Vec<DomainInfo>, VmError> {
        self.with(|c| {
            let mut out = Vec::new();
            for d in c.list_all_domains(0).map_err(err)? {
                let Ok(name) = d.get_name() else { continue };
                if !name.starts_with(DOMAIN_PREFIX) {
                    continue;
                }
                // A domain that vanishes between the listing and these calls is skipped.
                let Ok(info) = d.get_info() else { continue };
                let node_id = d
                    .get_metadata(
                        virt::sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
                        Some(super::xml::METADATA_NS),
                        0,
                    )
                    .ok()
                    .and_then(|m| {
                        super::xml_attr(&m, "thecloud:instance", "node")
                            .or_else(|| super::xml_attr(&m, "instance", "node"))
                    });
                // A QEMU that died (or a guest crash with on_crash=destroy) shows as shut off
                // with reason "crashed": report it as a crash, for `on-failure`.
                let crashed_off = info.state == virt::sys::VIR_DOMAIN_SHUTOFF
                    && d.get_state().is_ok_and(|(_, reason)| {
                        u32::try_from(reason).ok() == Some(virt::sys::VIR_DOMAIN_SHUTOFF_CRASHED)
                    });
                out.push(DomainInfo {
                    node_id,
                    uuid: d.get_uuid_string().unwrap_or_default(),
                    name,
                    state: if crashed_off {
                        DomainState::Crashed
                    } else {
                        state(info.state)
                    },
                    cpu_time_ns: info.cpu_time,
                    memory_kib: info.memory,
                    vcpus: info.nr_virt_cpu,
                });
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
        .await
    }

    async fn define(&self, xml: &str) -> Result<(), VmError> {
        let xml = xml.to_owned();
        self.with(move |c| Domain::define_xml(c, &xml).map(drop).map_err(err))
            .await
    }

    async fn start(&self, name: &str) -> Result<(), VmError> {
        self.on_domain(name, |d| {
            if d.is_active().map_err(err)? {
                return Ok(());
            }
            d.create().map(drop).map_err(err)
        })
        .await
    }

    async fn shutdown(&self, name: &str) -> Result<(), VmError> {
        self.on_domain(name, |d| {
            if !d.is_active().map_err(err)? {
                return Ok(());
            }
            d.shutdown().map(drop).map_err(err)
        })
        .await
    }

    async fn destroy(&self, name: &str) -> Result<(), VmError> {
        match self
            .on_domain(name, |d| {
                if !d.is_active().map_err(err)? {
                    return Ok(());
                }
                d.destroy().map_err(err)
            })
            .await
        {
            Err(VmError::NotFound(_)) => Ok(()),
            other => other,
        }
    }

    async fn undefine(&self, name: &str) -> Result<(), VmError> {
        match self.on_domain(name, |d| d.undefine().map_err(err)).await {
            Err(VmError::NotFound(_)) => Ok(()),
            other => other,
        }
    }

    async fn io(&self, name: &str) -> Result<super::DomainIo, VmError> {
        let name = name.to_owned();
        self.with(move |c| {
            let d = Domain::lookup_by_name(c, &name).map_err(err)?;
            let xml = d.get_xml_desc(0).map_err(err)?;
            let devs = std::iter::once("vda".to_owned()).chain(
                super::xml::volume_disks(&xml)
                    .into_iter()
                    .map(|(dev, _)| dev),
            );
            let (mut rd, mut wr) = (0u64, 0u64);
            for dev in devs {
                if let Ok(s) = d.get_block_stats(&dev) {
                    rd = rd.saturating_add(u64::try_from(s.rd_bytes).unwrap_or(0));
                    wr = wr.saturating_add(u64::try_from(s.wr_bytes).unwrap_or(0));
                }
            }
            // libvirt finds an interface by its MAC address as well as by its device name.
            let net = super::xml::interface_macs(&xml)
                .iter()
                .filter_map(|mac| d.interface_stats(mac).ok())
                .fold(None, |acc: Option<(u64, u64)>, s| {
                    let (rx, tx) = acc.unwrap_or_default();
                    Some((
                        rx.saturating_add(u64::try_from(s.rx_bytes).unwrap_or(0)),
                        tx.saturating_add(u64::try_from(s.tx_bytes).unwrap_or(0)),
                    ))
                });
            Ok(super::DomainIo {
                disk: (rd, wr),
                net,
            })
        })
        .await
    }

    async fn disks(&self, name: &str) -> Result<Vec<(String, String)>, VmError> {
        let name = name.to_owned();
        self.with(move |c| {
            let d = Domain::lookup_by_name(c, &name).map_err(err)?;
            Ok(super::xml::volume_disks(&d.get_xml_desc(0).map_err(err)?))
        })
        .await
    }

    async fn attach_disk(&self, name: &str, xml: &str) -> Result<(), VmError> {
        let xml = xml.to_owned();
        self.on_domain(name, move |d| {
            d.attach_device_flags(&xml, affect(d)?)
                .map(drop)
                .map_err(err)
        })
        .await
    }

    async fn detach_disk(&self, name: &str, xml: &str) -> Result<(), VmError> {
        let xml = xml.to_owned();
        self.on_domain(name, move |d| {
            d.detach_device_flags(&xml, affect(d)?)
                .map(drop)
                .map_err(err)
        })
        .await
    }

    async fn vnc(&self, name: &str) -> Result<(u16, String), VmError> {
        let name = name.to_owned();
        self.with(move |c| {
            let d = Domain::lookup_by_name(c, &name).map_err(err)?;
            let xml = d
                .get_xml_desc(virt::sys::VIR_DOMAIN_XML_SECURE)
                .map_err(err)?;
            super::vnc_from_xml(&xml).ok_or_else(|| {
                VmError::NotFound(format!("{name} has no VNC console (not running?)"))
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// libvirt's in-process test driver (no daemon). Every `test:///default` connection of a
    /// process shares state, so each test uses its own domain names.
    async fn test_driver() -> LibvirtHypervisor {
        LibvirtHypervisor::connect("test:///default", Some(VirtType::Qemu))
            .await
            .unwrap()
    }

    fn xml(name: &str) -> String {
        format!(
            "<domain type='test'><name>{name}</name><memory unit='MiB'>128</memory><vcpu>1</vcpu>\
             <os><type arch='x86_64'>hvm</type></os></domain>"
        )
    }

    #[tokio::test]
    async fn a_domain_goes_through_its_lifecycle_on_the_test_driver() {
        let hv = test_driver().await;
        let name = "tc-vm-lifecycle";
        hv.define(&xml(name)).await.unwrap();
        let found = |l: Vec<DomainInfo>| l.into_iter().find(|d| d.name == name);
        let d = found(hv.list().await.unwrap()).unwrap();
        assert_eq!(d.state, DomainState::ShutOff);
        hv.start(name).await.unwrap();
        hv.start(name).await.unwrap(); // idempotent
        let d = found(hv.list().await.unwrap()).unwrap();
        assert_eq!(
            (d.state, d.vcpus, d.memory_kib),
            (DomainState::Running, 1, 128 * 1024)
        );
        hv.destroy(name).await.unwrap();
        hv.destroy(name).await.unwrap(); // idempotent
        assert_eq!(
            found(hv.list().await.unwrap()).unwrap().state,
            DomainState::ShutOff
        );
        hv.undefine(name).await.unwrap();
        hv.undefine(name).await.unwrap(); // gone: fine
        assert!(found(hv.list().await.unwrap()).is_none());
        assert!(matches!(hv.start(name).await, Err(VmError::NotFound(_))));
    }

    #[tokio::test]
    async fn the_owning_node_is_read_from_the_metadata() {
        let hv = test_driver().await;
        let xml = "<domain type='test'><name>tc-vm-meta</name><memory unit='MiB'>128</memory>\
                   <metadata><thecloud:instance xmlns:thecloud='https://thecloud.dev/xmlns/instance/1' \
                   id='meta' node='node-7'/></metadata><os><type arch='x86_64'>hvm</type></os></domain>";
        hv.define(xml).await.unwrap();
        let d = hv
            .list()
            .await
            .unwrap()
            .into_iter()
            .find(|d| d.name == "tc-vm-meta")
            .unwrap();
        assert_eq!(d.node_id.as_deref(), Some("node-7"));
        hv.undefine("tc-vm-meta").await.unwrap();
    }

    #[tokio::test]
    async fn only_our_domains_are_listed() {
        let hv = test_driver().await;
        // The test driver's built-in domain is named "test": not ours.
        assert!(
            hv.list()
                .await
                .unwrap()
                .iter()
                .all(|d| d.name.starts_with(DOMAIN_PREFIX))
        );
        hv.define(&xml("someone-elses")).await.unwrap();
        assert!(
            !hv.list()
                .await
                .unwrap()
                .iter()
                .any(|d| d.name == "someone-elses")
        );
    }

    #[tokio::test]
    async fn bad_xml_is_a_clear_error() {
        let hv = test_driver().await;
        let e = hv.define("<domain").await.unwrap_err();
        assert!(matches!(e, VmError::Libvirt(_)), "{e}");
    }
}
