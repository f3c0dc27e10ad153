//! Domain types of the agent: what the scheduler wants (desired state) and what the agent sees
//! (observed state). Protobuf types convert to and from these at the gRPC edge (`convert`).

use std::collections::BTreeMap;
use std::fmt;

/// Docker restart policy requested for an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    /// Never restart (Docker `no`).
    #[default]
    Never,
    /// Restart when the process exits non-zero (Docker `on-failure`).
    OnFailure,
    /// Always restart (Docker `unless-stopped`, so a stop by the agent is not undone).
    Always,
}

/// Whether an instance should run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunState {
    /// The instance should be running.
    #[default]
    Running,
    /// The instance should exist but be stopped.
    Stopped,
}

/// One instance the scheduler wants on this node.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct InstanceSpec {
    pub instance_id: String,
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    /// Environment. Values may be secrets: never log them (the `Debug` impl shows keys only).
    pub env: BTreeMap<String, String>,
    pub cpu_millis: u64,
    pub memory_mb: u64,
    pub restart_policy: RestartPolicy,
    pub desired: RunState,
    /// "container" (or empty, meaning container).
    pub kind: String,
    /// Node generation at which this instance's desired state last changed.
    pub change_generation: u64,
    /// Volumes bind-mounted into the container: (volume id, path inside).
    pub mounts: Vec<(String, String)>,
    /// Its port in a VPC, or why the one the scheduler sent is unusable.
    pub network: Option<Result<crate::network::NetworkAttachment, String>>,
    /// kind "vm": image, root disk and cloud-init data.
    pub vm: Option<VmSpec>,
}

/// What a VM needs besides CPU and memory.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct VmSpec {
    pub image: crate::vm::files::VmImage,
    pub disk_gb: u64,
    /// May hold secrets: never logged (the `Debug` impl shows its size only).
    pub user_data: String,
    pub hostname: String,
}

impl fmt::Debug for VmSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VmSpec")
            .field("image", &self.image.image_id)
            .field("disk_gb", &self.disk_gb)
            .field("user_data_bytes", &self.user_data.len())
            .finish()
    }
}

impl fmt::Debug for InstanceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstanceSpec")
            .field("instance_id", &self.instance_id)
            .field("name", &self.name)
            .field("image", &self.image)
            .field("command", &self.command)
            .field("env_keys", &self.env.keys().collect::<Vec<_>>())
            .field("cpu_millis", &self.cpu_millis)
            .field("memory_mb", &self.memory_mb)
            .field("restart_policy", &self.restart_policy)
            .field("desired", &self.desired)
            .field("kind", &self.kind)
            .field("change_generation", &self.change_generation)
            .field("network", &self.network)
            .field("vm", &self.vm)
            .finish()
    }
}

/// The full desired state of this node. A newer generation replaces the older document.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DesiredState {
    pub generation: u64,
    pub instances: Vec<InstanceSpec>,
    /// Every VPC with at least one instance on this node.
    pub vpcs: Vec<crate::network::VpcSpec>,
    /// Volumes this node must have.
    pub volumes: Vec<VolumeSpec>,
    /// Volumes this node must delete.
    pub delete_volumes: Vec<String>,
    /// Snapshots this node must have.
    pub snapshots: Vec<SnapshotSpec>,
    /// Snapshots this node must delete.
    pub delete_snapshots: Vec<String>,
}

/// A volume the scheduler wants on this node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VolumeSpec {
    pub volume_id: String,
    pub size_bytes: u64,
    /// Create it from this snapshot (a restore) when it does not exist yet.
    pub from_snapshot_id: Option<String>,
}

/// A snapshot the scheduler wants on this node, of one of its volumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotSpec {
    pub snapshot_id: String,
    pub volume_id: String,
    /// Take it when missing (only while it is being created).
    pub take: bool,
}

/// What the agent sees of one snapshot (state as for volumes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotObservation {
    pub snapshot_id: String,
    pub volume_id: String,
    pub state: VolumeState,
    pub size_bytes: u64,
    pub reason: String,
}

/// What the agent sees of one volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeState {
    Available,
    Failed,
    /// On the backend but not in the desired state (kept, reported).
    Orphan,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeObservation {
    pub volume_id: String,
    pub state: VolumeState,
    pub size_bytes: u64,
    pub reason: String,
    /// The instance whose container mounts it (empty: none).
    pub instance_id: String,
}

/// Observed lifecycle state of one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceState {
    Starting,
    Running,
    Stopping,
    Stopped,
    Failed,
}

/// What the agent observes about one instance after a reconcile pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceObservation {
    pub instance_id: String,
    pub state: InstanceState,
    /// Human-readable cause (exit code, image missing, ...). Empty when there is nothing to say.
    pub reason: String,
    /// Runtime object id (Docker container id); empty when no container exists.
    pub runtime_id: String,
    /// Start time of the current/last run, 0 when unknown.
    pub started_at_unix_ms: i64,
    /// Exit code of the last run, when it exited.
    pub exit_code: Option<i32>,
}

impl InstanceObservation {
    pub(crate) fn new(instance_id: &str, state: InstanceState, reason: impl Into<String>) -> Self {
        Self {
            instance_id: instance_id.to_owned(),
            state,
            reason: reason.into(),
            runtime_id: String::new(),
            started_at_unix_ms: 0,
            exit_code: None,
        }
    }
}

/// Everything the agent runs for the scheduler, sorted by instance id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedState {
    /// Generation of the desired document this observation answers.
    pub applied_generation: u64,
    pub instances: Vec<InstanceObservation>,
    /// Volumes (sorted by id).
    pub volumes: Vec<VolumeObservation>,
    /// Snapshots (sorted by id).
    pub snapshots: Vec<SnapshotObservation>,
}

impl ObservedState {
    /// The observation of one instance, if the node reports it.
    pub fn instance(&self, instance_id: &str) -> Option<&InstanceObservation> {
        self.instances.iter().find(|o| o.instance_id == instance_id)
    }
}

/// Node capacity (what the scheduler may place here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capacity {
    pub cpu_millis: u64,
    pub memory_mb: u64,
    pub disk_gb: u64,
}

/// Host usage at one telemetry tick.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct HostUsage {
    pub cpu_percent: f64,
    pub memory_used_mb: u64,
    pub memory_total_mb: u64,
    pub disk_used_gb: u64,
    pub disk_total_gb: u64,
    pub load1: f64,
    pub load5: f64,
    pub load15: f64,
}

/// Usage of one running instance.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InstanceUsage {
    pub instance_id: String,
    pub cpu_percent: f64,
    pub memory_used_bytes: u64,
    pub memory_limit_bytes: u64,
    /// Disk bytes read and written since the instance started (VMs), when known.
    pub disk_io: Option<(u64, u64)>,
    /// Network bytes received and sent since the instance started (VMs), when known.
    pub net_io: Option<(u64, u64)>,
}

/// One telemetry report.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TelemetryReport {
    pub sampled_at_unix_ms: i64,
    pub host: HostUsage,
    pub instances: Vec<InstanceUsage>,
    /// The volume pool: backend kind and capacity (None: no volume backend here).
    pub pool: Option<(&'static str, crate::storage::PoolCapacity)>,
}
