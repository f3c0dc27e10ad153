//! Instance ports: `attach` (veth into the instance's namespace, address, route, and its
//! security-group/anti-spoofing rules in one nft transaction) and `detach`.
//!
//! Order matters for least privilege: the rules for the instance's address are installed
//! (atomically) *before* its port exists, so there is never a moment where the port forwards
//! traffic without them; when the port is already right only the rules are replaced.

use super::links::{self, Link, get_link};
use super::netns::{self, NsTarget, NsWorker};
use super::{LinuxNetwork, firewall};
use crate::network::{NetworkAttachment, NetworkError, port_name};
use std::collections::BTreeSet;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Name of the instance's interface.
const ETH0: &str = "eth0";

/// The address recorded in a port's alias ("<instance id> <ip>").
pub(super) fn alias_ip(link: &Link) -> Option<Ipv4Addr> {
    link.alias
        .as_deref()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

impl LinuxNetwork {
    pub(super) async fn attach_port(
        &self,
        instance_id: &str,
        netns: &Path,
        a: &NetworkAttachment,
    ) -> Result<(), NetworkError> {
        check_address(instance_id, a)?;
        self.refuse_own_namespace(netns)?;
        let w = self.built_vpc(a).await?;
        let target = NsWorker::start(
            &format!("instance {instance_id}"),
            NsTarget::Path(netns.to_path_buf()),
        )
        .await?;
        let port = port_name(instance_id);
        let (ns, mtu) = (self.ns_name(a.vni), self.mtu());

        let (port_link, br) = port_and_bridge(&w, &port, &ns).await?;
        let label = target.label().to_owned();
        let eth0 = target
            .run(move |h| async move {
                match get_link(&h, ETH0, &label).await? {
                    Some(l) => {
                        let addrs = links::addresses(&h, l.index, &label).await?;
                        let addrs: Vec<(Ipv4Addr, u8)> =
                            addrs.into_iter().map(|(i, p, _)| (i, p)).collect();
                        Ok(Some((l, addrs)))
                    }
                    None => Ok(None),
                }
            })
            .await?;
        // Never delete an interface that is not ours: a foreign eth0 (another MAC) is refused.
        if let Some((e, _)) = &eth0
            && e.mac != a.mac.0
            && port_link.as_ref().and_then(|p| p.peer) != Some(e.index)
        {
            return Err(NetworkError::Invalid(format!(
                "instance {instance_id}: its namespace already has an eth0 that is not our port; not touching it"
            )));
        }
        let reuse = match (&port_link, &eth0) {
            (Some(p), Some((e, addrs))) => {
                p.peer == Some(e.index)
                    && e.peer == Some(p.index)
                    && p.controller == Some(br.index)
                    && e.mac == a.mac.0
                    && e.up
                    && addrs.contains(&(a.ip, a.prefix_len))
            }
            _ => false,
        };

        // 1. Rules first, in one transaction.
        let mut port_link = port_link;
        let mut eth0 = eth0;
        let mut reuse = reuse;
        if self
            .install_rules(&w, &ns, &port, a, &mut port_link)
            .await?
        {
            eth0 = None;
            reuse = false;
        }
        let alias = format!("{instance_id} {}", a.ip);
        if reuse {
            refresh_alias(&w, &ns, port_link, alias).await?;
            return Ok(());
        }

        // 2. (Re)create the port: drop stale ends first.
        if let Some((e, _)) = eth0 {
            let label = target.label().to_owned();
            target
                .run(move |h| async move {
                    links::del_link(&h, e.index, &format!("{ETH0} in {label}")).await
                })
                .await?;
        }
        let (p, n, path, mac) = (port.clone(), ns.clone(), netns.to_path_buf(), a.mac.0);
        w.run(move |h| async move {
            if let Some(old) = port_link {
                links::del_link(&h, old.index, &format!("{p} in {n}")).await?;
            }
            let f = open_ns(&path)?;
            links::create_veth_into(
                &h,
                &p,
                ETH0,
                f.as_raw_fd(),
                Some(mac),
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

        // 3. Configure the instance side.
        let label = target.label().to_owned();
        let (addr, gw) = ((a.ip, a.prefix_len), a.gateway);
        target
            .run(move |h| async move {
                let e = get_link(&h, ETH0, &label)
                    .await?
                    .ok_or_else(|| NetworkError::Netlink(format!("{ETH0} missing in {label}")))?;
                links::set_link(&h, &e, None, None, &label).await?;
                links::sync_addresses(&h, e.index, &BTreeSet::from([addr]), &label).await?;
                if let Some(lo) = get_link(&h, "lo", &label).await? {
                    links::set_link(&h, &lo, None, None, &label).await?;
                }
                links::default_route(&h, gw, &label).await
            })
            .await
    }

    /// Installs a port's security-group and anti-spoofing rules in one transaction. A stale
    /// element for the address (an instance never detached) must be evicted, which leaves the
    /// address without dispatch for a moment: then the existing port is removed first (fail
    /// closed; the caller recreates it) and `true` is returned.
    pub(super) async fn install_rules(
        &self,
        w: &Arc<NsWorker>,
        ns: &str,
        port: &str,
        a: &NetworkAttachment,
        port_link: &mut Option<Link>,
    ) -> Result<bool, NetworkError> {
        let prefix = self.config.prefix.clone();
        let old_ip = port_link.as_ref().and_then(alias_ip);
        let rules = firewall::instance_rules(&prefix, port, a, old_ip);
        let (n, ip) = (ns.to_owned(), a.ip);
        let r = rules.clone();
        let first_try = w
            .run(move |_h| async move { firewall::apply(&r, &n) })
            .await;
        if first_try.is_ok() {
            return Ok(false);
        }
        let removed = match port_link.take() {
            Some(old) => {
                let (n, p) = (ns.to_owned(), port.to_owned());
                w.run(move |h| async move {
                    links::del_link(&h, old.index, &format!("{p} in {n}")).await
                })
                .await?;
                true
            }
            None => false,
        };
        let n = ns.to_owned();
        w.run(move |_h| async move {
            for s in firewall::evict_ip(&prefix, ip) {
                let _ = firewall::apply(&s, &n);
            }
            firewall::apply(&rules, &n)
        })
        .await?;
        Ok(removed)
    }

    /// Removes a port and its rules from one VPC namespace (nothing when it has neither).
    pub(super) async fn detach_in(
        &self,
        w: &Arc<NsWorker>,
        port: &str,
    ) -> Result<(), NetworkError> {
        let (p, ns, prefix) = (
            port.to_owned(),
            w.label().to_owned(),
            self.config.prefix.clone(),
        );
        w.run(move |h| async move {
            let link = get_link(&h, &p, &ns).await?;
            let ips: Vec<Ipv4Addr> = match link.as_ref().and_then(alias_ip) {
                Some(ip) => vec![ip],
                // The port is gone (its instance's namespace died) or has no alias: find what
                // still points at its chains.
                None => {
                    let found = rule_refs(&prefix, &p, &ns)?;
                    if !found.0 && link.is_none() {
                        return Ok(());
                    }
                    found.1
                }
            };
            for extra in ips.iter().skip(1) {
                for s in firewall::evict_ip(&prefix, *extra) {
                    let _ = firewall::apply(&s, &ns);
                }
            }
            let script = firewall::detach_rules(&prefix, &p, ips.first().copied());
            firewall::apply(&script, &ns)?;
            if let Some(l) = link {
                links::del_link(&h, l.index, &format!("{p} in {ns}")).await?;
            }
            Ok(())
        })
        .await
    }
}

/// A port (if it exists) and the VPC bridge, from the VPC's namespace.
pub(super) async fn port_and_bridge(
    w: &Arc<NsWorker>,
    port: &str,
    ns: &str,
) -> Result<(Option<Link>, Link), NetworkError> {
    let (p, n) = (port.to_owned(), ns.to_owned());
    w.run(move |h| async move {
        let br = get_link(&h, "br0", &n)
            .await?
            .ok_or_else(|| NetworkError::Invalid(format!("VPC namespace {n} has no br0")))?;
        Ok((get_link(&h, &p, &n).await?, br))
    })
    .await
}

/// Sets a kept port's alias ("<instance id> <ip>") when it differs.
pub(super) async fn refresh_alias(
    w: &Arc<NsWorker>,
    ns: &str,
    port_link: Option<Link>,
    alias: String,
) -> Result<(), NetworkError> {
    if let Some(p) = port_link.filter(|p| p.alias.as_deref() != Some(alias.as_str())) {
        let n = ns.to_owned();
        w.run(move |h| async move { links::set_alias(&h, p.index, &alias, &n).await })
            .await?;
    }
    Ok(())
}

/// Refuses an attachment whose address cannot work (the gateway's, or a prefix with no room).
pub(super) fn check_address(instance_id: &str, a: &NetworkAttachment) -> Result<(), NetworkError> {
    if a.prefix_len == 0 || a.prefix_len > 30 || a.ip == a.gateway {
        return Err(NetworkError::Invalid(format!(
            "instance {instance_id}: bad address {}/{} (gateway {})",
            a.ip, a.prefix_len, a.gateway
        )));
    }
    Ok(())
}

fn open_ns(path: &PathBuf) -> Result<File, NetworkError> {
    File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            NetworkError::NamespaceGone(path.display().to_string())
        } else {
            NetworkError::Host(format!("opening namespace {}: {e}", path.display()))
        }
    })
}

/// Whether any chain of `port` exists in the security-group table, and the addresses whose
/// dispatch elements jump to them (from `nft -j`).
fn rule_refs(prefix: &str, port: &str, ns: &str) -> Result<(bool, Vec<Ipv4Addr>), NetworkError> {
    let table = firewall::sg_table(prefix);
    let out = match netns::run_command("nft", &["-j", "list", "table", "inet", &table], None, |e| {
        NetworkError::Firewall(format!("in namespace {ns}: {e}"))
    }) {
        Ok(o) => o,
        Err(_) => return Ok((false, Vec::new())), // no table: nothing references the port
    };
    Ok(parse_refs(&out, port))
}

/// See [`rule_refs`]; pure, for tests.
pub(super) fn parse_refs(json: &str, port: &str) -> (bool, Vec<Ipv4Addr>) {
    let (cin, cout) = (format!("in_{port}"), format!("out_{port}"));
    let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
        return (false, Vec::new());
    };
    let items = v["nftables"].as_array().cloned().unwrap_or_default();
    let mut chain = false;
    let mut ips = BTreeSet::new();
    for item in &items {
        if let Some(name) = item["chain"]["name"].as_str() {
            chain |= name == cin || name == cout;
        }
        for e in item["map"]["elem"].as_array().into_iter().flatten() {
            let target = e[1]["jump"]["target"].as_str().unwrap_or_default();
            if (target == cin || target == cout)
                && let Some(ip) = e[0].as_str().and_then(|s| s.parse().ok())
            {
                ips.insert(ip);
            }
        }
    }
    (chain, ips.into_iter().collect())
}

impl LinuxNetwork {
    /// The worker of the attachment's VPC, which `sync_vpcs` must have built.
    pub(super) async fn built_vpc(
        &self,
        a: &NetworkAttachment,
    ) -> Result<Arc<NsWorker>, NetworkError> {
        self.vpc(a.vni, false).await?.ok_or_else(|| {
            NetworkError::Invalid(format!(
                "VPC {} (vni {}) is not built on this host",
                a.vpc_id, a.vni
            ))
        })
    }

    /// Refuses to plug into the host's (or the agent's own) network namespace: a stale or
    /// reused PID must never make attach rename or delete host interfaces.
    fn refuse_own_namespace(&self, netns: &Path) -> Result<(), NetworkError> {
        use std::os::unix::fs::MetadataExt;
        let id = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
        let target =
            id(netns).ok_or_else(|| NetworkError::NamespaceGone(netns.display().to_string()))?;
        let own = id(Path::new("/proc/self/ns/net"));
        let host = self.config.host_netns.as_deref().and_then(id);
        if Some(target) == own || Some(target) == host {
            return Err(NetworkError::Invalid(format!(
                "{} is the host's network namespace, not an instance's",
                netns.display()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_elements_pointing_at_a_port() {
        let json = r#"{"nftables": [{"metainfo": {}},
          {"map": {"name": "ingress", "elem": [["10.0.0.5", {"jump": {"target": "in_pa"}}],
                                               ["10.0.0.6", {"jump": {"target": "in_pb"}}]]}},
          {"map": {"name": "egress", "elem": [["10.0.0.5", {"jump": {"target": "out_pa"}}]]}},
          {"chain": {"name": "in_pa"}}]}"#;
        assert_eq!(
            parse_refs(json, "pa"),
            (true, vec!["10.0.0.5".parse().unwrap()])
        );
        assert_eq!(parse_refs(json, "pc"), (false, vec![]));
        assert_eq!(parse_refs("garbage", "pa"), (false, vec![]));
    }
}
