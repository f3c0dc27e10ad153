//! The VPC data plane seam: what the reconciler needs to give instances a port in their VPC.
//! `linux` builds it for real (network namespaces, bridges, VXLAN via rtnetlink, nftables);
//! `fake` keeps the same contract in memory for unit tests and simulated nodes.
//!
//! Layout on a host (see `linux`): one network namespace per VPC holding the VPC bridge (with
//! every subnet's gateway address), the VXLAN device (unicast, static FDB towards the peers
//! in the desired state) and, per instance, the bridge end of a veth pair whose other end is
//! `eth0` inside the instance's own network namespace.

pub mod fake;
pub mod linux;
mod model;
pub mod underlay;

pub use fake::FakeNetwork;
pub use linux::{LinuxNetwork, LinuxNetworkConfig};
pub use model::{
    FirewallRule, Mac, NetworkAttachment, Protocol, RemoteEndpoint, SubnetSpec, VpcSpec,
};

use async_trait::async_trait;
use std::path::Path;

/// Errors of the VPC data plane. Messages end up in an instance's `status_reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    /// This node has no VPC networking (no underlay address configured or detected).
    #[error("VPC networking is not available on this node: {0}")]
    Unavailable(String),
    /// The desired state asks for something impossible (unknown VPC, bad address …).
    #[error("invalid network request: {0}")]
    Invalid(String),
    /// A netlink request failed.
    #[error("netlink: {0}")]
    Netlink(String),
    /// An nftables transaction failed (the previous rules stay in force).
    #[error("nftables: {0}")]
    Firewall(String),
    /// The instance's network namespace is gone (its process exited).
    #[error("network namespace {0} is gone")]
    NamespaceGone(String),
    /// Anything else from the host (files, threads).
    #[error("{0}")]
    Host(String),
}

/// What the host has for one attached instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    pub instance_id: String,
    pub vpc_id: String,
    /// Host-side interface name (on the VPC bridge).
    pub port: String,
}

/// A host's VPC data plane.
///
/// Every method is idempotent and converges: calling it again with the same input changes
/// nothing and disturbs no traffic.
#[async_trait]
pub trait NetworkBackend: Send + Sync {
    /// Whether this host can do VPC networking at all (an underlay address is known).
    fn available(&self) -> Result<(), NetworkError>;

    /// Make the per-VPC plumbing on this host exactly `vpcs`: create what is missing, update
    /// subnets (gateways, NAT), VXLAN peers and static FDB entries in place, and remove the
    /// VPCs that are not listed (with every port still in them).
    async fn sync_vpcs(&self, vpcs: &[VpcSpec]) -> Result<(), NetworkError>;

    /// Gives the instance whose network namespace is `netns` (e.g. `/proc/<pid>/ns/net`) its
    /// port: a veth pair, `eth0` inside `netns` with the attachment's MAC, address, MTU and
    /// default route, and its security group rules (replaced atomically). When the port is
    /// already there and right, only the rules are brought up to date. The VPC must have been
    /// created by [`NetworkBackend::sync_vpcs`] first.
    async fn attach(
        &self,
        instance_id: &str,
        netns: &Path,
        attachment: &NetworkAttachment,
    ) -> Result<(), NetworkError>;

    /// Gives a VM its port: a veth pair whose VPC end is a bridge port like a container's
    /// (same rules) and whose host end, returned by name, stays in the host namespace for
    /// libvirt to put the guest's macvtap on. Idempotent like [`NetworkBackend::attach`]: a
    /// pair that is already right is left alone (the running guest keeps its link) and only
    /// the rules are brought up to date.
    async fn attach_vm(
        &self,
        instance_id: &str,
        attachment: &NetworkAttachment,
    ) -> Result<String, NetworkError>;

    /// Removes an instance's port and rules (nothing to do when it has none).
    async fn detach(&self, instance_id: &str) -> Result<(), NetworkError>;

    /// Instances that have a port on this host.
    async fn ports(&self) -> Result<Vec<PortInfo>, NetworkError>;
}

/// Interface name of an instance's host-side port: `p` + the last 12 hex digits of its id,
/// always ≤ 15 bytes. Instance ids are UUIDv7, whose leading digits are a timestamp and whose
/// trailing 48 bits are random, so the tail is what tells two instances apart.
pub fn port_name(instance_id: &str) -> String {
    let hex: Vec<char> = instance_id
        .chars()
        .filter(char::is_ascii_hexdigit)
        .collect();
    let tail: String = hex[hex.len().saturating_sub(12)..].iter().collect();
    format!("p{}", tail.to_ascii_lowercase())
}

/// Host-side interface of a VM's port: the agent's prefix, `m`, then as many trailing hex
/// digits of the instance id as fit in 15 bytes (at least 10 with the longest prefix).
pub fn vm_link_name(prefix: &str, instance_id: &str) -> String {
    let tail = port_name(instance_id);
    let room = 15usize.saturating_sub(prefix.len() + 1);
    let digits = &tail[1..];
    format!("{prefix}m{}", &digits[digits.len().saturating_sub(room)..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_names_fit_ifnamsiz() {
        let n = port_name("01a22355-bf78-7117-9e6f-ce93a3165224");
        assert_eq!(n, "pce93a3165224");
        assert!(n.len() <= 15);
    }

    #[test]
    fn vm_link_names_fit_ifnamsiz() {
        let id = "01a22355-bf78-7117-9e6f-ce93a3165224";
        assert_eq!(vm_link_name("tc", id), "tcmce93a3165224");
        assert_eq!(vm_link_name("abcd", id), "abcdm93a3165224");
        assert!(vm_link_name("abcd", id).len() <= 15);
    }
}
