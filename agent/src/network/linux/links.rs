//! rtnetlink operations of the data plane (links, addresses, routes, VXLAN FDB, neighbours).
//! Every function acts in the namespace of the `Handle`'s socket, i.e. of the `NsWorker`
//! thread it runs on, and is idempotent: it reads the current state and changes only what
//! differs, so re-running a sync disturbs no traffic.

use super::super::NetworkError;
use futures::TryStreamExt;
use rtnetlink::packet_core::{
    NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkMessage,
    NetlinkPayload,
};
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVxlan, RouteMessageBuilder,
};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::RawFd;

/// UDP port of the VXLAN tunnels (IANA).
pub(crate) const VXLAN_PORT: u16 = 4789;

/// What we need to know about one interface.
#[derive(Debug, Clone, Default)]
pub(crate) struct Link {
    pub index: u32,
    pub name: String,
    /// Bridge it is enslaved to.
    pub controller: Option<u32>,
    /// Peer interface index (veth), in the peer's namespace.
    pub peer: Option<u32>,
    pub alias: Option<String>,
    pub mac: Vec<u8>,
    pub mtu: u32,
    pub up: bool,
}

impl From<LinkMessage> for Link {
    fn from(m: LinkMessage) -> Self {
        let mut l = Link {
            index: m.header.index,
            up: m.header.flags.contains(LinkFlags::Up),
            ..Link::default()
        };
        for a in m.attributes {
            match a {
                LinkAttribute::IfName(n) => l.name = n,
                LinkAttribute::Controller(c) if c != 0 => l.controller = Some(c),
                LinkAttribute::Link(p) if p != 0 => l.peer = Some(p),
                LinkAttribute::IfAlias(s) => l.alias = Some(s),
                LinkAttribute::Address(mac) => l.mac = mac,
                LinkAttribute::Mtu(mtu) => l.mtu = mtu,
                _ => {}
            }
        }
        l
    }
}

/// The errno of a netlink error (positive), if it is one.
pub(crate) fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

/// Maps a netlink error, naming what was being done (device, namespace).
pub(crate) fn nl(what: impl std::fmt::Display) -> impl FnOnce(rtnetlink::Error) -> NetworkError {
    move |e| NetworkError::Netlink(format!("{what}: {e}"))
}

const ENOENT: i32 = 2;
const ESRCH: i32 = 3;
const EEXIST: i32 = 17;
const ENODEV: i32 = 19;
const EADDRNOTAVAIL: i32 = 99;

pub(crate) async fn get_link(
    h: &Handle,
    name: &str,
    ns: &str,
) -> Result<Option<Link>, NetworkError> {
    let mut s = h.link().get().match_name(name.to_owned()).execute();
    match s.try_next().await {
        Ok(m) => Ok(m.map(Link::from)),
        Err(e) if matches!(errno(&e), Some(ENODEV) | Some(ENOENT)) => Ok(None),
        Err(e) => Err(nl(format!("looking up {name} in {ns}"))(e)),
    }
}

pub(crate) async fn list_links(h: &Handle, ns: &str) -> Result<Vec<Link>, NetworkError> {
    let msgs: Vec<LinkMessage> = h
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(nl(format!("listing links of {ns}")))?;
    Ok(msgs.into_iter().map(Link::from).collect())
}

pub(crate) async fn del_link(h: &Handle, index: u32, what: &str) -> Result<(), NetworkError> {
    match h.link().del(index).execute().await {
        Ok(()) => Ok(()),
        Err(e) if matches!(errno(&e), Some(ENODEV) | Some(ENOENT)) => Ok(()),
        Err(e) => Err(nl(format!("deleting {what}"))(e)),
    }
}

/// Sets MTU, bridge and up state of a link (a no-op in the kernel when already so).
pub(crate) async fn set_link(
    h: &Handle,
    link: &Link,
    mtu: Option<u32>,
    controller: Option<u32>,
    ns: &str,
) -> Result<(), NetworkError> {
    let mut b = LinkUnspec::new_with_index(link.index);
    let mut changed = !link.up;
    if let Some(m) = mtu.filter(|m| *m != link.mtu) {
        b = b.mtu(m);
        changed = true;
    }
    if let Some(c) = controller.filter(|c| link.controller != Some(*c)) {
        b = b.controller(c);
        changed = true;
    }
    if !changed {
        return Ok(());
    }
    h.link()
        .set(b.up().build())
        .execute()
        .await
        .map_err(nl(format!("configuring {} in {ns}", link.name)))
}

pub(crate) async fn set_alias(
    h: &Handle,
    index: u32,
    alias: &str,
    what: &str,
) -> Result<(), NetworkError> {
    h.link()
        .set(LinkUnspec::new_with_index(index).alias(alias).build())
        .execute()
        .await
        .map_err(nl(format!("setting the alias of {what}")))
}

/// The bridge `name` with a fixed MAC (so the gateway's MAC never changes when ports come and
/// go), `mtu`, up and `alias`; returns it.
pub(crate) async fn ensure_bridge(
    h: &Handle,
    name: &str,
    mtu: u32,
    mac: [u8; 6],
    alias: &str,
    ns: &str,
) -> Result<Link, NetworkError> {
    if get_link(h, name, ns).await?.is_none() {
        let msg = LinkBridge::new(name)
            .mtu(mtu)
            .address(mac.to_vec())
            .up()
            .build();
        h.link()
            .add(msg)
            .execute()
            .await
            .map_err(nl(format!("creating bridge {name} in {ns}")))?;
    }
    let link = get_link(h, name, ns)
        .await?
        .ok_or_else(|| NetworkError::Netlink(format!("bridge {name} vanished in {ns}")))?;
    set_link(h, &link, Some(mtu), None, ns).await?;
    if link.alias.as_deref() != Some(alias) {
        set_alias(h, link.index, alias, &format!("{name} in {ns}")).await?;
    }
    Ok(link)
}

/// Creates the VXLAN device `name` from the calling (host) namespace directly inside the
/// namespace `target_fd`: the device lives there, its UDP socket stays in the host namespace.
pub(crate) async fn create_vxlan_into(
    h: &Handle,
    name: &str,
    vni: u32,
    local: Ipv4Addr,
    mtu: u32,
    target_fd: RawFd,
    ns: &str,
) -> Result<(), NetworkError> {
    let msg = LinkVxlan::new(name, vni)
        .port(VXLAN_PORT)
        .local(local)
        .learning(false)
        .mtu(mtu)
        .setns_by_fd(target_fd)
        .build();
    h.link()
        .add(msg)
        .execute()
        .await
        .map_err(nl(format!("creating VXLAN {name} (vni {vni}) for {ns}")))
}

/// Creates a veth pair: `name` here (optionally enslaved to `controller`, up) and `peer_name`
/// inside the namespace `peer_fd` (with `peer_mac` if given, down).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn create_veth_into(
    h: &Handle,
    name: &str,
    peer_name: &str,
    peer_fd: RawFd,
    peer_mac: Option<[u8; 6]>,
    mtu: u32,
    controller: Option<u32>,
    ns: &str,
) -> Result<(), NetworkError> {
    let mut peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(peer_name)
        .mtu(mtu)
        .setns_by_fd(peer_fd);
    if let Some(mac) = peer_mac {
        peer = peer.address(mac.to_vec());
    }
    let mut b = LinkVeth::new(name, peer_name)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
        .mtu(mtu)
        .up();
    if let Some(c) = controller {
        b = b.controller(c);
    }
    h.link()
        .add(b.build())
        .execute()
        .await
        .map_err(nl(format!("creating veth {name}/{peer_name} in {ns}")))
}

/// IPv4 addresses (address, prefix length) on a link.
pub(crate) async fn addresses(
    h: &Handle,
    index: u32,
    what: &str,
) -> Result<Vec<(Ipv4Addr, u8, AddressMessage)>, NetworkError> {
    let msgs: Vec<AddressMessage> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(nl(format!("listing addresses of {what}")))?;
    Ok(msgs
        .into_iter()
        .filter(|m| m.header.index == index)
        .filter_map(|m| {
            let ip = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            })?;
            Some((ip, m.header.prefix_len, m))
        })
        .collect())
}

/// Makes the IPv4 addresses of a link exactly `want` (adds missing, removes stale).
pub(crate) async fn sync_addresses(
    h: &Handle,
    index: u32,
    want: &BTreeSet<(Ipv4Addr, u8)>,
    what: &str,
) -> Result<(), NetworkError> {
    let have = addresses(h, index, what).await?;
    for (ip, plen, msg) in &have {
        if !want.contains(&(*ip, *plen)) {
            match h.address().del(msg.clone()).execute().await {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(EADDRNOTAVAIL) => {}
                Err(e) => return Err(nl(format!("removing {ip}/{plen} from {what}"))(e)),
            }
        }
    }
    for (ip, plen) in want {
        if !have.iter().any(|(i, p, _)| i == ip && p == plen) {
            h.address()
                .add(index, IpAddr::V4(*ip), *plen)
                .replace()
                .execute()
                .await
                .map_err(nl(format!("adding {ip}/{plen} to {what}")))?;
        }
    }
    Ok(())
}

/// Default route via `gateway` (replaced if it points elsewhere).
pub(crate) async fn default_route(
    h: &Handle,
    gateway: Ipv4Addr,
    what: &str,
) -> Result<(), NetworkError> {
    let msg = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(gateway)
        .build();
    h.route()
        .add(msg)
        .replace()
        .execute()
        .await
        .map_err(nl(format!("default route via {gateway} in {what}")))
}

/// Sends one raw neighbour/FDB request and waits for its acknowledgement.
async fn neigh_request(
    h: &Handle,
    msg: RouteNetlinkMessage,
    flags: u16,
) -> Result<(), rtnetlink::Error> {
    let mut req = NetlinkMessage::from(msg);
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    let mut h = h.clone();
    let mut resp = h.request(req)?;
    use futures::StreamExt;
    while let Some(m) = resp.next().await {
        if let NetlinkPayload::Error(e) = m.payload
            && e.code.is_some()
        {
            return Err(rtnetlink::Error::NetlinkError(e));
        }
    }
    Ok(())
}

fn fdb_msg(index: u32, mac: [u8; 6], dst: Ipv4Addr) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.header.flags = NeighbourFlags::Own;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    m.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(dst)));
    m
}

/// Makes the VXLAN device's own FDB exactly `want` ((MAC, remote VTEP) pairs; the all-zero
/// MAC entries are the BUM flood list). Entries are added/removed one by one, never flushed.
pub(crate) async fn sync_fdb(
    h: &Handle,
    vx_index: u32,
    want: &BTreeSet<([u8; 6], Ipv4Addr)>,
    what: &str,
) -> Result<(), NetworkError> {
    let all: Vec<NeighbourMessage> = h
        .neighbours()
        .get()
        .set_address_family(AddressFamily::Bridge)
        .execute()
        .try_collect()
        .await
        .map_err(nl(format!("listing the FDB of {what}")))?;
    let mut have = BTreeSet::new();
    for m in all.iter().filter(|m| m.header.ifindex == vx_index) {
        let mac = m.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::LinkLayerAddress(l) => <[u8; 6]>::try_from(l.as_slice()).ok(),
            _ => None,
        });
        // In bridge-family dumps the crate leaves NDA_DST unparsed (`Other`).
        let dst = m.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
            NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                <[u8; 4]>::try_from(b.as_slice()).ok().map(Ipv4Addr::from)
            }
            _ => None,
        });
        if let (Some(mac), Some(dst)) = (mac, dst) {
            have.insert((mac, dst));
        }
    }
    for (mac, dst) in have.difference(want) {
        let msg = fdb_msg(vx_index, *mac, *dst);
        match h.neighbours().del(msg).execute().await {
            Ok(()) => {}
            Err(e) if matches!(errno(&e), Some(ENOENT) | Some(ESRCH)) => {}
            Err(e) => return Err(nl(format!("removing FDB entry {dst} from {what}"))(e)),
        }
    }
    for (mac, dst) in want.difference(&have) {
        let msg = RouteNetlinkMessage::NewNeighbour(fdb_msg(vx_index, *mac, *dst));
        // The all-zero MAC has one entry per peer (append); other MACs have one destination.
        let flags = if *mac == [0; 6] {
            NLM_F_CREATE | NLM_F_APPEND
        } else {
            NLM_F_CREATE | NLM_F_REPLACE
        };
        match neigh_request(h, msg, flags).await {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(EEXIST) => {}
            Err(e) => return Err(nl(format!("adding FDB entry {dst} to {what}"))(e)),
        }
    }
    Ok(())
}

/// Makes the permanent ARP entries on the bridge exactly `want` (remote instances), leaving
/// dynamically learnt entries alone.
pub(crate) async fn sync_neighbours(
    h: &Handle,
    br_index: u32,
    want: &BTreeMap<Ipv4Addr, [u8; 6]>,
    what: &str,
) -> Result<(), NetworkError> {
    let all: Vec<NeighbourMessage> = h
        .neighbours()
        .get()
        .set_address_family(AddressFamily::Inet)
        .execute()
        .try_collect()
        .await
        .map_err(nl(format!("listing neighbours of {what}")))?;
    let mut have = BTreeMap::new();
    for m in all
        .iter()
        .filter(|m| m.header.ifindex == br_index && m.header.state == NeighbourState::Permanent)
    {
        let ip = m.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
            _ => None,
        });
        let mac = m.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::LinkLayerAddress(l) => <[u8; 6]>::try_from(l.as_slice()).ok(),
            _ => None,
        });
        if let (Some(ip), Some(mac)) = (ip, mac) {
            have.insert(ip, (mac, m.clone()));
        }
    }
    for (ip, (_, msg)) in &have {
        if !want.contains_key(ip) {
            match h.neighbours().del(msg.clone()).execute().await {
                Ok(()) => {}
                Err(e) if matches!(errno(&e), Some(ENOENT) | Some(ESRCH)) => {}
                Err(e) => return Err(nl(format!("removing neighbour {ip} from {what}"))(e)),
            }
        }
    }
    for (ip, mac) in want {
        if have.get(ip).map(|(m, _)| m) != Some(mac) {
            h.neighbours()
                .add(br_index, IpAddr::V4(*ip))
                .link_layer_address(mac)
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .await
                .map_err(nl(format!("adding neighbour {ip} to {what}")))?;
        }
    }
    Ok(())
}
