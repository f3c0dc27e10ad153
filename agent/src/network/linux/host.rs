//! Rules of the host namespace: `inet <p>_host` (uplinks may neither reach each other nor the
//! host's own services), `ip <p>_nat` (masquerade of the transit range out of the host),
//! `net.ipv4.ip_forward`, and accept rules in Docker's `DOCKER-USER` iptables chain (Docker
//! sets the FORWARD policy to DROP). iptables is called with argument vectors, never a shell.

use super::netns::{self, NsWorker};
use super::{LinuxNetwork, firewall};
use crate::network::NetworkError;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// The transit range of the uplinks (RFC 6598 shared address space).
pub(crate) const TRANSIT: &str = "100.64.0.0/10";

impl LinuxNetwork {
    /// Host rules, ip_forward and Docker's DOCKER-USER exceptions (or their removal).
    pub(super) async fn host_rules(
        &self,
        host: &Arc<NsWorker>,
        present: bool,
        protected: Vec<Ipv4Addr>,
    ) -> Result<(), NetworkError> {
        let prefix = self.config.prefix.clone();
        let label = host.label().to_owned();
        host.run(move |_h| async move {
            if present {
                netns::write_sysctl("net.ipv4.ip_forward", "1", &label)?;
                firewall::apply(&host_ruleset(&prefix, &protected), &label)?;
            } else {
                firewall::apply(&host_cleanup(&prefix), &label)?;
            }
            docker_user(&prefix, present, &label)
        })
        .await
    }
}

/// Adds (or removes) our accept rules in iptables' DOCKER-USER chain when it exists.
fn docker_user(prefix: &str, present: bool, ns: &str) -> Result<(), NetworkError> {
    let err = |e: String| NetworkError::Firewall(format!("iptables in {ns}: {e}"));
    if netns::run_command("iptables", &["-w", "-n", "-L", "DOCKER-USER"], None, err).is_err() {
        return Ok(()); // no Docker (or no iptables): nothing to open
    }
    for rule in docker_user_rules(prefix) {
        let with = |op: &'static str| {
            let mut a = vec!["-w", op, "DOCKER-USER"];
            a.extend(rule.iter().map(String::as_str));
            a
        };
        let exists = netns::run_command("iptables", &with("-C"), None, err).is_ok();
        if present && !exists {
            netns::run_command("iptables", &with("-I"), None, err)?;
        } else if !present && exists {
            netns::run_command("iptables", &with("-D"), None, err)?;
        }
    }
    Ok(())
}

/// Host rules (rebuilt atomically on every sync while the host has VPCs). Traffic from the
/// uplinks may go out to the world, but never to another uplink, to the host itself, to the
/// `protected` addresses (this node's and its peers' underlay endpoints), to Docker's bridges
/// (other workloads of this host), or as VXLAN anywhere; containers on Docker's bridges may
/// not send VXLAN either. Together this keeps tenants from injecting frames into VPCs.
pub(crate) fn host_ruleset(prefix: &str, protected: &[Ipv4Addr]) -> String {
    let up = format!("\"{prefix}u*\"");
    let to_protected = if protected.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = protected.iter().map(Ipv4Addr::to_string).collect();
        format!("iifname {up} ip daddr {{ {} }} drop\n    ", list.join(", "))
    };
    format!(
        "add table inet {prefix}_host
delete table inet {prefix}_host
table inet {prefix}_host {{
  chain input {{ type filter hook input priority 0; policy accept;
    iifname {up} ct state established,related accept
    iifname {up} drop
  }}
  chain forward {{ type filter hook forward priority 0; policy accept;
    iifname {up} oifname {up} drop
    iifname {up} udp dport 4789 drop
    iifname {{ \"docker0\", \"br-*\" }} udp dport 4789 drop
    {to_protected}iifname {up} oifname \"docker0\" drop
    iifname {up} oifname \"br-*\" drop
    iifname {up} accept
    oifname {up} ct state established,related accept
    oifname {up} drop
  }}
}}
add table ip {prefix}_nat
delete table ip {prefix}_nat
table ip {prefix}_nat {{
  chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;
    ip saddr {TRANSIT} oifname != {up} masquerade
  }}
}}
"
    )
}

/// Removes the host rules (when the host has no VPC left).
pub(crate) fn host_cleanup(prefix: &str) -> String {
    format!(
        "add table inet {prefix}_host\ndelete table inet {prefix}_host\n\
         add table ip {prefix}_nat\ndelete table ip {prefix}_nat\n"
    )
}

/// iptables rules for Docker's `DOCKER-USER` chain (Docker sets the FORWARD policy to DROP).
pub(crate) fn docker_user_rules(prefix: &str) -> Vec<Vec<String>> {
    let up = format!("{prefix}u+");
    vec![
        vec!["-i".into(), up.clone(), "-j".into(), "ACCEPT".into()],
        vec![
            "-o".into(),
            up,
            "-m".into(),
            "conntrack".into(),
            "--ctstate".into(),
            "RELATED,ESTABLISHED".into(),
            "-j".into(),
            "ACCEPT".into(),
        ],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_rules_are_prefixed() {
        let s = host_ruleset("ab", &[Ipv4Addr::new(172, 31, 0, 2)]);
        assert!(
            s.contains("iifname \"abu*\" ip daddr { 172.31.0.2 } drop"),
            "{s}"
        );
        assert!(s.contains("iifname \"abu*\" udp dport 4789 drop"), "{s}");
        assert!(!host_ruleset("ab", &[]).contains("ip daddr {"));
        assert!(s.contains("iifname \"abu*\" oifname \"abu*\" drop"));
        assert!(s.contains("ip saddr 100.64.0.0/10 oifname != \"abu*\" masquerade"));
        assert!(host_cleanup("ab").contains("delete table ip ab_nat"));
        assert_eq!(docker_user_rules("ab")[0], ["-i", "abu+", "-j", "ACCEPT"]);
    }
}
