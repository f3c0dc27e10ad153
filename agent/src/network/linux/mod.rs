//! The real VPC data plane: `LinuxNetwork` builds VPCs from network namespaces, a bridge,
//! VXLAN and veth pairs (rtnetlink, see `links`), security groups and NAT (nftables, see
//! `firewall`), all from worker threads inside the namespaces (see `netns`).
//!
//! Layout on a host ("host" = `host_netns` when set, else the agent's own namespace):
//! * per VPC a namespace `<prefix>v<vni>` (bind-mounted in /run/netns, so `ip netns exec`
//!   works) with bridge `br0` (fixed per-host MAC, every subnet's gateway address, alias =
//!   VPC id), `vx0` (VXLAN created from the host namespace, so its UDP socket stays there,
//!   static FDB: all-zero entries to every peer for BUM flooding plus one per remote
//!   endpoint) and permanent ARP entries for the remote endpoints;
//! * per VPC an uplink veth `<prefix>u<vni>` (host) ↔ `uplink` (VPC) on a transit /30 inside
//!   100.64.0.0/10, used for NAT egress;
//! * per instance a veth `p<id tail>` (bridge port, alias = "<instance id> <ip>") ↔ `eth0` in
//!   the instance's namespace, or for a VM ↔ `<prefix>m<id tail>` in the host namespace, under
//!   the guest's macvtap (see `vm_port`).
//!
//! State lives in the kernel only (namespaces, interface aliases, nft tables): no state file
//! and no cache to go stale, so an agent restart or a second agent instance sees the same
//! truth. `ports()` lists the bridge ports; `detach` finds an instance by its port name.

mod firewall;
mod host;
mod instance;
mod links;
mod netns;
mod vm_port;

use super::{NetworkAttachment, NetworkBackend, NetworkError, PortInfo, VpcSpec, port_name};
use async_trait::async_trait;
use firewall::{UPLINK, VXLAN};
use links::{Link, get_link};
use netns::{NETNS_DIR, NsTarget, NsWorker};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Settings of the Linux data plane.
#[derive(Debug, Clone)]
pub struct LinuxNetworkConfig {
    /// This host's VXLAN endpoint address (must be configured on an interface of `host_netns`).
    pub underlay_ip: Ipv4Addr,
    /// MTU of the underlay; instance/bridge MTU = this − 50.
    pub underlay_mtu: u32,
    /// Prefix (≤ 4 chars) of every namespace and interface this backend creates, so two agents
    /// (tests) or other software on the host never collide with ours. Default "tc".
    pub prefix: String,
    /// Namespace that plays the host (`None`: the agent's own). Multi-host tests run several
    /// "hosts" as namespaces on one machine.
    pub host_netns: Option<PathBuf>,
}

impl LinuxNetworkConfig {
    /// Defaults: MTU 1500, prefix "tc", the agent's own namespace as host.
    pub fn new(underlay_ip: Ipv4Addr) -> Self {
        Self {
            underlay_ip,
            underlay_mtu: 1500,
            prefix: "tc".to_owned(),
            host_netns: None,
        }
    }
}

/// VPC data plane of a Linux host.
pub struct LinuxNetwork {
    config: LinuxNetworkConfig,
    workers: Mutex<Workers>,
    /// Serialises `sync_vpcs` calls (attach/detach are serialised per VPC by its worker).
    sync_lock: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Workers {
    host: Option<Arc<NsWorker>>,
    vpcs: HashMap<u32, Arc<NsWorker>>,
}

/// First and second usable address of the VPC's transit /30 (host side, VPC side).
pub(crate) fn transit(vni: u32) -> (Ipv4Addr, Ipv4Addr) {
    let base = u32::from(Ipv4Addr::new(100, 64, 0, 0)) + 4 * (vni & 0xF_FFFF);
    (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2))
}

/// MAC of the VPC bridge (the gateway) on this host: unique per host, stable across restarts.
fn gateway_mac(underlay: Ipv4Addr, vni: u32) -> [u8; 6] {
    let o = underlay.octets();
    [0x0a, o[0], o[1], o[2], o[3], (vni & 0xff) as u8]
}

fn lock(m: &Mutex<Workers>) -> MutexGuard<'_, Workers> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LinuxNetwork {
    pub fn new(config: LinuxNetworkConfig) -> Self {
        Self {
            config,
            workers: Mutex::new(Workers::default()),
            sync_lock: tokio::sync::Mutex::new(()),
        }
    }

    fn mtu(&self) -> u32 {
        self.config.underlay_mtu.saturating_sub(50)
    }

    fn ns_name(&self, vni: u32) -> String {
        format!("{}v{vni}", self.config.prefix)
    }

    fn ns_path(&self, vni: u32) -> PathBuf {
        Path::new(NETNS_DIR).join(self.ns_name(vni))
    }

    /// VNIs of the VPC namespaces of our prefix that exist on this machine.
    fn existing_vnis(&self) -> Vec<u32> {
        let head = format!("{}v", self.config.prefix);
        let mut v: Vec<u32> = netns::list_named()
            .iter()
            .filter_map(|n| n.strip_prefix(&head)?.parse().ok())
            .collect();
        v.sort_unstable();
        v
    }

    async fn host(&self) -> Result<Arc<NsWorker>, NetworkError> {
        if let Some(h) = &lock(&self.workers).host {
            return Ok(h.clone());
        }
        let target = match &self.config.host_netns {
            Some(p) => NsTarget::Path(p.clone()),
            None => NsTarget::Current,
        };
        let w = Arc::new(NsWorker::start(&format!("{}-host", self.config.prefix), target).await?);
        Ok(lock(&self.workers).host.get_or_insert(w).clone())
    }

    /// The worker of a VPC namespace; creates the namespace when `create`.
    async fn vpc(&self, vni: u32, create: bool) -> Result<Option<Arc<NsWorker>>, NetworkError> {
        if let Some(w) = lock(&self.workers).vpcs.get(&vni) {
            return Ok(Some(w.clone()));
        }
        let (name, path) = (self.ns_name(vni), self.ns_path(vni));
        let w = if path.exists() {
            match NsWorker::start(&name, NsTarget::Path(path.clone())).await {
                Ok(w) => w,
                Err(_) if create => {
                    // A namespace file left behind unmounted (crash): start over.
                    netns::delete_named(&path)?;
                    NsWorker::start(&name, NsTarget::Create(path)).await?
                }
                Err(e) => return Err(e),
            }
        } else if create {
            NsWorker::start(&name, NsTarget::Create(path)).await?
        } else {
            return Ok(None);
        };
        let w = Arc::new(w);
        Ok(Some(
            lock(&self.workers).vpcs.entry(vni).or_insert(w).clone(),
        ))
    }

    fn validate(&self, vpcs: &[VpcSpec]) -> Result<(), NetworkError> {
        let mut vnis = HashSet::new();
        let mut transits = HashSet::new();
        for v in vpcs {
            if v.vni == 0 || v.vni >= 1 << 24 {
                return Err(NetworkError::Invalid(format!(
                    "VPC {}: bad VNI {}",
                    v.vpc_id, v.vni
                )));
            }
            if !vnis.insert(v.vni) || !transits.insert(v.vni & 0xF_FFFF) {
                return Err(NetworkError::Invalid(format!(
                    "VPC {}: VNI {} collides with another VPC on this host",
                    v.vpc_id, v.vni
                )));
            }
            for s in &v.subnets {
                if !s.cidr.contains(&s.gateway) {
                    return Err(NetworkError::Invalid(format!(
                        "subnet {}: gateway {} outside {}",
                        s.subnet_id, s.gateway, s.cidr
                    )));
                }
            }
        }
        Ok(())
    }

    /// Creates or updates one VPC on this host, in place.
    async fn ensure_vpc(&self, host: &Arc<NsWorker>, vpc: &VpcSpec) -> Result<(), NetworkError> {
        let vni = vpc.vni;
        let w = self.vpc(vni, true).await?.ok_or_else(|| {
            NetworkError::Host(format!("namespace {} missing", self.ns_name(vni)))
        })?;
        let (ns, path, mtu) = (self.ns_name(vni), self.ns_path(vni), self.mtu());
        let (prefix, underlay) = (self.config.prefix.clone(), self.config.underlay_ip);
        let (transit_host, transit_vpc) = transit(vni);
        let gw_addrs: BTreeSet<(Ipv4Addr, u8)> = vpc
            .subnets
            .iter()
            .map(|s| (s.gateway, s.cidr.prefix_len()))
            .collect();
        let rules = firewall::vpc_ruleset(&prefix, vpc);
        let (ns1, vpc_id) = (ns.clone(), vpc.vpc_id.clone());
        let (br, has_vx) = w
            .run(move |h| async move {
                netns::write_sysctl("net.ipv4.ip_forward", "1", &ns1)?;
                netns::write_sysctl("net.bridge.bridge-nf-call-iptables", "1", &ns1)?;
                firewall::apply(&rules, &ns1)?;
                if let Some(lo) = get_link(&h, "lo", &ns1).await? {
                    links::set_link(&h, &lo, None, None, &ns1).await?;
                }
                let br =
                    links::ensure_bridge(&h, "br0", mtu, gateway_mac(underlay, vni), &vpc_id, &ns1)
                        .await?;
                links::sync_addresses(&h, br.index, &gw_addrs, &format!("br0 in {ns1}")).await?;
                Ok((br, get_link(&h, VXLAN, &ns1).await?.is_some()))
            })
            .await?;

        let (ns2, up_name, umtu) = (
            ns.clone(),
            format!("{prefix}u{vni}"),
            self.config.underlay_mtu,
        );
        let host_label = host.label().to_owned();
        host.run(move |h| async move {
            let open = || {
                File::open(&path)
                    .map_err(|e| NetworkError::Host(format!("opening namespace {ns2}: {e}")))
            };
            if !has_vx {
                let f = open()?;
                links::create_vxlan_into(&h, VXLAN, vni, underlay, mtu, f.as_raw_fd(), &ns2)
                    .await?;
            }
            let up = match get_link(&h, &up_name, &host_label).await? {
                Some(l) => l,
                None => {
                    let f = open()?;
                    links::create_veth_into(
                        &h,
                        &up_name,
                        UPLINK,
                        f.as_raw_fd(),
                        None,
                        umtu,
                        None,
                        &host_label,
                    )
                    .await?;
                    get_link(&h, &up_name, &host_label).await?.ok_or_else(|| {
                        NetworkError::Netlink(format!("{up_name} vanished in {host_label}"))
                    })?
                }
            };
            links::set_link(&h, &up, None, None, &host_label).await?;
            let want = BTreeSet::from([(transit_host, 30)]);
            links::sync_addresses(&h, up.index, &want, &format!("{up_name} in {host_label}")).await
        })
        .await?;

        let fdb: BTreeSet<([u8; 6], Ipv4Addr)> = vpc
            .peers
            .iter()
            .filter(|p| **p != underlay)
            .map(|p| ([0u8; 6], *p))
            .chain(
                vpc.remote_endpoints
                    .iter()
                    .filter(|r| r.node_ip != underlay)
                    .map(|r| (r.mac.0, r.node_ip)),
            )
            .collect();
        let neigh: BTreeMap<Ipv4Addr, [u8; 6]> = vpc
            .remote_endpoints
            .iter()
            .filter(|r| r.node_ip != underlay)
            .map(|r| (r.ip, r.mac.0))
            .collect();
        w.run(move |h| async move {
            let vx = get_link(&h, VXLAN, &ns)
                .await?
                .ok_or_else(|| NetworkError::Netlink(format!("{VXLAN} missing in {ns}")))?;
            links::set_link(&h, &vx, Some(mtu), Some(br.index), &ns).await?;
            let up = get_link(&h, UPLINK, &ns)
                .await?
                .ok_or_else(|| NetworkError::Netlink(format!("{UPLINK} missing in {ns}")))?;
            links::set_link(&h, &up, None, None, &ns).await?;
            let want = BTreeSet::from([(transit_vpc, 30)]);
            links::sync_addresses(&h, up.index, &want, &format!("{UPLINK} in {ns}")).await?;
            links::default_route(&h, transit_host, &ns).await?;
            links::sync_fdb(&h, vx.index, &fdb, &format!("{VXLAN} in {ns}")).await?;
            links::sync_neighbours(&h, br.index, &neigh, &format!("br0 in {ns}")).await
        })
        .await
    }

    /// Removes one VPC namespace of ours with everything in it.
    async fn remove_vpc(&self, host: &Arc<NsWorker>, vni: u32) -> Result<(), NetworkError> {
        let up_name = format!("{}u{vni}", self.config.prefix);
        let label = host.label().to_owned();
        // Delete the devices explicitly: namespace teardown is asynchronous, and a VNI or
        // uplink name must be reusable right away.
        host.run(move |h| async move {
            if let Some(l) = get_link(&h, &up_name, &label).await? {
                links::del_link(&h, l.index, &format!("{up_name} in {label}")).await?;
            }
            Ok(())
        })
        .await?;
        if let Some(w) = self.vpc(vni, false).await.ok().flatten() {
            let ns = self.ns_name(vni);
            w.run(move |h| async move {
                if let Some(l) = get_link(&h, VXLAN, &ns).await? {
                    links::del_link(&h, l.index, &format!("{VXLAN} in {ns}")).await?;
                }
                Ok(())
            })
            .await?;
        }
        let worker = lock(&self.workers).vpcs.remove(&vni);
        drop(worker);
        netns::delete_named(&self.ns_path(vni))
    }
}

#[async_trait]
impl NetworkBackend for LinuxNetwork {
    fn available(&self) -> Result<(), NetworkError> {
        let c = &self.config;
        if c.underlay_ip.is_unspecified() {
            return Err(NetworkError::Unavailable(
                "no underlay address configured".into(),
            ));
        }
        let p = &c.prefix;
        if p.is_empty()
            || p.len() > 4
            || !p
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit())
        {
            return Err(NetworkError::Unavailable(format!(
                "bad interface prefix {p:?}"
            )));
        }
        if c.underlay_mtu < 50 + 576 {
            return Err(NetworkError::Unavailable(format!(
                "underlay MTU {} too small",
                c.underlay_mtu
            )));
        }
        if let Some(ns) = &c.host_netns
            && !ns.exists()
        {
            return Err(NetworkError::Unavailable(format!(
                "host namespace {} missing",
                ns.display()
            )));
        }
        Ok(())
    }

    async fn sync_vpcs(&self, vpcs: &[VpcSpec]) -> Result<(), NetworkError> {
        self.available()?;
        self.validate(vpcs)?;
        let _guard = self.sync_lock.lock().await;
        let host = self.host().await?;
        if !vpcs.is_empty() {
            // Instances must never reach the underlay endpoints of this or any peer node.
            let mut protected: Vec<std::net::Ipv4Addr> = vpcs
                .iter()
                .flat_map(|v| v.peers.iter().copied())
                .chain(std::iter::once(self.config.underlay_ip))
                .collect();
            protected.sort();
            protected.dedup();
            self.host_rules(&host, true, protected).await?;
        }
        for vpc in vpcs {
            self.ensure_vpc(&host, vpc).await?;
        }
        let want: HashSet<u32> = vpcs.iter().map(|v| v.vni).collect();
        for vni in self.existing_vnis() {
            if !want.contains(&vni) {
                self.remove_vpc(&host, vni).await?;
            }
        }
        if vpcs.is_empty() {
            self.host_rules(&host, false, Vec::new()).await?;
        }
        Ok(())
    }

    async fn attach(
        &self,
        instance_id: &str,
        netns: &Path,
        attachment: &NetworkAttachment,
    ) -> Result<(), NetworkError> {
        self.available()?;
        self.attach_port(instance_id, netns, attachment).await
    }

    async fn attach_vm(
        &self,
        instance_id: &str,
        attachment: &NetworkAttachment,
    ) -> Result<String, NetworkError> {
        self.available()?;
        self.attach_vm_port(instance_id, attachment).await
    }

    async fn detach(&self, instance_id: &str) -> Result<(), NetworkError> {
        let port = port_name(instance_id);
        for vni in self.existing_vnis() {
            if let Some(w) = self.vpc(vni, false).await? {
                self.detach_in(&w, &port).await?;
            }
        }
        Ok(())
    }

    async fn ports(&self) -> Result<Vec<PortInfo>, NetworkError> {
        let mut out = Vec::new();
        for vni in self.existing_vnis() {
            let Some(w) = self.vpc(vni, false).await? else {
                continue;
            };
            let ns = self.ns_name(vni);
            let all: Vec<Link> = w
                .run(move |h| async move { links::list_links(&h, &ns).await })
                .await?;
            let Some(br) = all.iter().find(|l| l.name == "br0") else {
                continue;
            };
            let vpc_id = br.alias.clone().unwrap_or_default();
            for l in all
                .iter()
                .filter(|l| l.controller == Some(br.index) && l.name.starts_with('p'))
            {
                if let Some(id) = l.alias.as_deref().and_then(|a| a.split_whitespace().next()) {
                    out.push(PortInfo {
                        instance_id: id.to_owned(),
                        vpc_id: vpc_id.clone(),
                        port: l.name.clone(),
                    });
                }
            }
        }
        Ok(out)
    }
}
