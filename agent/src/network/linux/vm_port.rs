//! VM ports: a veth pair whose VPC end `p<id tail>` is a port of the VPC bridge (same name,
//! alias, security-group and anti-spoofing rules as a container's port) and whose host end
//! `<prefix>m<id tail>` stays in the host namespace, where libvirt puts a macvtap on it
//! (`<interface type='direct'>`) for QEMU. The guest's frames leave the macvtap with the
//! attachment's MAC, so the bridge's anti-spoofing rules hold for VMs exactly as for
//! containers. The pair outlives QEMU (a reboot of the guest keeps its port); `detach`
//! deletes it, and the macvtap goes with it.

use super::LinuxNetwork;
use super::instance::{check_address, port_and_bridge, refresh_alias};
use super::links::{self, get_link};
use super::netns::NsWorker;
use crate::network::{NetworkAttachment, NetworkError, port_name, vm_link_name};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::Arc;

impl LinuxNetwork {
    pub(super) async fn attach_vm_port(
        &self,
        instance_id: &str,
        a: &NetworkAttachment,
    ) -> Result<String, NetworkError> {
        check_address(instance_id, a)?;
        let w = self.built_vpc(a).await?;
        let host = self.host().await?;
        let port = port_name(instance_id);
        let host_if = vm_link_name(&self.config.prefix, instance_id);
        let (ns, mtu) = (self.ns_name(a.vni), self.mtu());

        let (port_link, br) = port_and_bridge(&w, &port, &ns).await?;
        let (hi, label) = (host_if.clone(), host.label().to_owned());
        let host_link = host
            .run(move |h| async move { get_link(&h, &hi, &label).await })
            .await?;
        let mut reuse = match (&port_link, &host_link) {
            (Some(p), Some(l)) => {
                p.controller == Some(br.index)
                    && p.peer == Some(l.index)
                    && l.peer == Some(p.index)
                    && l.up
                    && l.mtu == mtu
            }
            _ => false,
        };

        // 1. Rules first, in one transaction (see `install_rules`).
        let mut port_link = port_link;
        if self
            .install_rules(&w, &ns, &port, a, &mut port_link)
            .await?
        {
            reuse = false;
        }
        let alias = format!("{instance_id} {}", a.ip);
        if reuse {
            refresh_alias(&w, &ns, port_link, alias).await?;
            return Ok(host_if);
        }

        // 2. (Re)create the pair: drop stale ends first (a lone host end of an earlier pair
        //    would block the name).
        if let Some(l) = host_link {
            let (hi, label) = (host_if.clone(), host.label().to_owned());
            host.run(move |h| async move {
                links::del_link(&h, l.index, &format!("{hi} in {label}")).await
            })
            .await?;
        }
        let host_ns = host_namespace(&host).await?;
        let (p, n, hi) = (port.clone(), ns.clone(), host_if.clone());
        w.run(move |h| async move {
            if let Some(old) = port_link {
                links::del_link(&h, old.index, &format!("{p} in {n}")).await?;
            }
            links::create_veth_into(
                &h,
                &p,
                &hi,
                host_ns.as_raw_fd(),
                None,
                mtu,
                Some(br.index),
                &n,
            )
            .await?;
            let link = get_link(&h, &p, &n)
                .await?
                .ok_or_else(|| NetworkError::Netlink(format!("{p} vanished in {n}")))?;
            links::set_alias(&h, link.index, &alias, &format!("{p} in {n}")).await
        })
        .await?;

        // 3. Bring the host end up for the macvtap.
        let (hi, label) = (host_if.clone(), host.label().to_owned());
        host.run(move |h| async move {
            let l = get_link(&h, &hi, &label)
                .await?
                .ok_or_else(|| NetworkError::Netlink(format!("{hi} missing in {label}")))?;
            links::set_link(&h, &l, Some(mtu), None, &label).await
        })
        .await?;
        Ok(host_if)
    }
}

/// A handle on the host namespace, opened from the host worker's own thread (which may be
/// in another namespace than the agent, see `host_netns`).
async fn host_namespace(host: &Arc<NsWorker>) -> Result<File, NetworkError> {
    host.run(|_h| async move {
        File::open("/proc/thread-self/ns/net")
            .map_err(|e| NetworkError::Host(format!("opening the host namespace: {e}")))
    })
    .await
}
