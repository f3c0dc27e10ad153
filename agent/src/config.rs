//! Configuration of one agent: where the scheduler is, where the identity lives, what to
//! advertise, and the timing knobs (defaults match production; tests shorten them).

use crate::reconcile::ReconcilerConfig;
use crate::telemetry::HostProbe;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Manual capacity values; each `Some` replaces the detected value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CapacityOverride {
    pub cpu_millis: Option<u64>,
    pub memory_mb: Option<u64>,
    pub disk_gb: Option<u64>,
}

/// Session timing. Heartbeat/telemetry intervals normally come from `SessionAccepted`; these
/// defaults apply when the scheduler sends 0.
#[derive(Debug, Clone)]
pub struct SessionTiming {
    pub default_heartbeat: Duration,
    pub default_telemetry: Duration,
    /// Full `ObservedState` resend period.
    pub observed_resend: Duration,
    /// How long to wait for `SessionAccepted` after opening the stream.
    pub accept_timeout: Duration,
    /// Reconnect backoff start and cap.
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// A session that lasted longer than this resets the backoff.
    pub backoff_reset_after: Duration,
    /// How often the session re-checks the container runtime and re-announces the node's
    /// drivers when that changed.
    pub facts_recheck: Duration,
}

impl Default for SessionTiming {
    fn default() -> Self {
        Self {
            default_heartbeat: Duration::from_secs(1),
            default_telemetry: Duration::from_secs(5),
            observed_resend: Duration::from_secs(30),
            accept_timeout: Duration::from_secs(30),
            backoff_base: Duration::from_millis(250),
            backoff_cap: Duration::from_secs(10),
            backoff_reset_after: Duration::from_secs(30),
            facts_recheck: Duration::from_secs(15),
        }
    }
}

/// Everything one agent needs. Build with [`AgentConfig::new`] and adjust the public fields.
#[derive(Clone)]
pub struct AgentConfig {
    /// Scheduler gRPC address, `HOST:PORT`. HOST is also the TLS name checked.
    pub scheduler: String,
    /// CA certificate (PEM) that signed the scheduler's certificate; used for enrollment.
    pub ca_file: PathBuf,
    /// File holding the one-time join token (whitespace is trimmed). Read only to enroll.
    pub join_token_file: PathBuf,
    /// Identity and state directory (created if missing).
    pub data_dir: PathBuf,
    /// Preferred node name (defaults to the hostname on the scheduler side).
    pub name: Option<String>,
    /// Labels advertised in `Hello`.
    pub labels: BTreeMap<String, String>,
    pub capacity_override: CapacityOverride,
    /// Hostname to report; `None` = the system hostname. Simulated nodes set their own.
    pub hostname: Option<String>,
    /// Host usage/capacity source; `None` = procfs + statvfs of `data_dir`.
    pub host_probe: Option<Arc<dyn HostProbe>>,
    pub reconciler: ReconcilerConfig,
    pub session: SessionTiming,
    /// Start with the link to the scheduler cut (see [`crate::AgentHandle::set_partitioned`]).
    /// Only the node simulator sets this, to restart a partitioned node; default `false`.
    pub partitioned: bool,
    /// VPC networking (underlay address + data plane). `None`: instances in a VPC fail here
    /// with a clear reason and the scheduler does not place them on this node.
    pub network: Option<NodeNetwork>,
    /// Node-local volumes (file directory or LVM volume group). `None`: no volumes here.
    pub volumes: Option<Arc<dyn crate::storage::VolumeBackend>>,
    /// Virtual machines: the hypervisor and where per-VM files go. `None`: no VMs here (the
    /// node does not advertise the `libvirt` driver).
    pub vms: Option<NodeVms>,
    /// Version reported in `Hello` (shown as the node's `agent_version`); the binary adds its
    /// build id to the crate version.
    pub version: String,
}

/// A node's VM support.
#[derive(Clone)]
pub struct NodeVms {
    pub hypervisor: Arc<dyn crate::vm::Hypervisor>,
    pub files: crate::vm::VmFiles,
}

/// A node's VPC networking: where other nodes reach its VXLAN endpoint, and the data plane.
#[derive(Clone)]
pub struct NodeNetwork {
    pub underlay_ip: std::net::Ipv4Addr,
    pub underlay_mtu: u32,
    pub backend: Arc<dyn crate::network::NetworkBackend>,
}

impl fmt::Debug for NodeNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeNetwork")
            .field("underlay_ip", &self.underlay_ip)
            .field("underlay_mtu", &self.underlay_mtu)
            .finish_non_exhaustive()
    }
}

impl AgentConfig {
    /// A configuration with defaults for everything but the four required settings.
    pub fn new(
        scheduler: impl Into<String>,
        ca_file: impl Into<PathBuf>,
        join_token_file: impl Into<PathBuf>,
        data_dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            scheduler: scheduler.into(),
            ca_file: ca_file.into(),
            join_token_file: join_token_file.into(),
            data_dir: data_dir.into(),
            name: None,
            labels: BTreeMap::new(),
            capacity_override: CapacityOverride::default(),
            hostname: None,
            host_probe: None,
            reconciler: ReconcilerConfig::default(),
            session: SessionTiming::default(),
            partitioned: false,
            network: None,
            volumes: None,
            vms: None,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

impl fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentConfig")
            .field("scheduler", &self.scheduler)
            .field("ca_file", &self.ca_file)
            .field("join_token_file", &self.join_token_file)
            .field("data_dir", &self.data_dir)
            .field("name", &self.name)
            .field("labels", &self.labels)
            .field("capacity_override", &self.capacity_override)
            .field("hostname", &self.hostname)
            .field("host_probe", &self.host_probe.as_ref().map(|_| "custom"))
            .field("reconciler", &self.reconciler)
            .field("session", &self.session)
            .field("partitioned", &self.partitioned)
            .field("network", &self.network)
            .field("volumes", &self.volumes.as_ref().map(|v| v.kind()))
            .field(
                "vms",
                &self.vms.as_ref().map(|v| v.files.dir().to_path_buf()),
            )
            .finish()
    }
}
