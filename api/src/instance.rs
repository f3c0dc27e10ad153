//! Instance resources: what users launch.

use crate::ids::{InstanceId, NodeId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// What runs: a container (Docker) or a VM (libvirt).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum InstanceKind {
    #[default]
    Container,
    Vm,
}

/// When the node restarts an instance whose process exited.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    Never,
    OnFailure,
    #[default]
    Always,
}

/// What the user asked the instance to be doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Running,
    Stopped,
}

/// Lifecycle of an instance:
/// `pending` → `scheduled` → `starting` → `running` → `stopping` → `stopped`;
/// `deleting`; `failed` (with `status_reason`); `lost` while its node is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InstanceStatus {
    Pending,
    Scheduled,
    Starting,
    Running,
    Stopping,
    Stopped,
    Deleting,
    Failed,
    Lost,
}

impl InstanceStatus {
    pub const ALL: [InstanceStatus; 9] = [
        InstanceStatus::Pending,
        InstanceStatus::Scheduled,
        InstanceStatus::Starting,
        InstanceStatus::Running,
        InstanceStatus::Stopping,
        InstanceStatus::Stopped,
        InstanceStatus::Deleting,
        InstanceStatus::Failed,
        InstanceStatus::Lost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            InstanceStatus::Pending => "pending",
            InstanceStatus::Scheduled => "scheduled",
            InstanceStatus::Starting => "starting",
            InstanceStatus::Running => "running",
            InstanceStatus::Stopping => "stopping",
            InstanceStatus::Stopped => "stopped",
            InstanceStatus::Deleting => "deleting",
            InstanceStatus::Failed => "failed",
            InstanceStatus::Lost => "lost",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl fmt::Display for InstanceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl RestartPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Never => "never",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Always => "always",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            RestartPolicy::Never,
            RestartPolicy::OnFailure,
            RestartPolicy::Always,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl InstanceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceKind::Container => "container",
            InstanceKind::Vm => "vm",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "container" => Some(InstanceKind::Container),
            "vm" => Some(InstanceKind::Vm),
            _ => None,
        }
    }
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Stopped => "stopped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "running" => Some(RunState::Running),
            "stopped" => Some(RunState::Stopped),
            _ => None,
        }
    }
}

/// How the members of a placement group are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GroupPolicy {
    /// Anti-affinity: never two members on the same node.
    Spread,
    /// Affinity: every member on a node that already runs one (the first goes anywhere).
    Pack,
}

/// A named group of instances placed together or apart (per project).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlacementGroup {
    pub name: String,
    pub policy: GroupPolicy,
}

/// How to choose among nodes that fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlacementStrategy {
    /// Fill nodes up (the default): keeps whole nodes free for big instances.
    Binpack,
    /// Prefer the emptiest node.
    Spread,
}

impl GroupPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupPolicy::Spread => "spread",
            GroupPolicy::Pack => "pack",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "spread" => Some(GroupPolicy::Spread),
            "pack" => Some(GroupPolicy::Pack),
            _ => None,
        }
    }
}

impl PlacementStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            PlacementStrategy::Binpack => "binpack",
            PlacementStrategy::Spread => "spread",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "binpack" => Some(PlacementStrategy::Binpack),
            "spread" => Some(PlacementStrategy::Spread),
            _ => None,
        }
    }
}

/// `POST /v1/instances`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInstanceRequest {
    /// Unique per project; lowercase letters, digits and `-`, at most 63 characters.
    /// Generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub kind: InstanceKind,
    pub image: String,
    /// Command and arguments; the image's default command when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// CPU in millicores (1000 = one core).
    pub cpu_millis: u64,
    /// Memory limit in MiB.
    pub memory_mb: u64,
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    /// Only nodes whose labels include all of these (e.g. `{"zone": "a"}`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement_group: Option<PlacementGroup>,
    /// Overrides the scheduler's default strategy for this instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement_strategy: Option<PlacementStrategy>,
    /// Subnet to put the instance in; it then gets a private address and an `eth0` in its
    /// VPC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<crate::SubnetId>,
    /// A specific address in the subnet (default: the lowest free one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_ip: Option<String>,
    /// Security groups (ids or names) of the instance's port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<String>,
    /// Volumes to mount; the instance then runs on their node (volumes are node-local).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<crate::VolumeMount>,
    /// kind `vm`: size of the root disk in GB (a copy-on-write overlay on the image; default
    /// 10, 1 to 2048).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_gb: Option<u64>,
    /// kind `vm`: cloud-init user-data (`#cloud-config` or a script, at most 64 KiB), given to
    /// the guest in a NoCloud seed. Never shown again by the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
}

/// Largest cloud-init user-data, in bytes.
pub const MAX_USER_DATA_BYTES: usize = 64 * 1024;

/// The VM part of an instance (kind `vm`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct InstanceVm {
    pub image_id: crate::ImageId,
    pub image_name: String,
    pub disk_gb: u64,
    /// Whether user-data was given (its content is never shown).
    pub user_data: bool,
}

/// An instance as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Instance {
    pub id: InstanceId,
    pub name: String,
    pub kind: InstanceKind,
    pub image: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cpu_millis: u64,
    pub memory_mb: u64,
    pub restart_policy: RestartPolicy,
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default)]
    pub placement_group: Option<PlacementGroup>,
    #[serde(default)]
    pub placement_strategy: Option<PlacementStrategy>,
    #[serde(default)]
    pub subnet_id: Option<crate::SubnetId>,
    #[serde(default)]
    pub private_ip: Option<String>,
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub security_groups: Vec<crate::SecurityGroupId>,
    /// Mounted volumes (`volume` holds the id).
    #[serde(default)]
    pub volumes: Vec<crate::VolumeMount>,
    /// kind `vm`: image and root disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<InstanceVm>,
    /// What the user asked for (`running` or `stopped`).
    pub desired_state: RunState,
    pub status: InstanceStatus,
    pub status_reason: Option<String>,
    pub node_id: Option<NodeId>,
    pub node_name: Option<String>,
    /// Runtime object id on the node (Docker container id).
    pub runtime_id: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub exit_code: Option<i32>,
    /// Latest resource usage reported by the node (absent until the first sample).
    #[serde(default)]
    pub usage: Option<InstanceUsage>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Resource usage of a running instance, sampled by its node's agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct InstanceUsage {
    /// Percent of one core (100 = one full core).
    pub cpu_percent: f64,
    pub memory_used_bytes: u64,
    pub memory_limit_bytes: u64,
    /// Bytes read from and written to its disks since it started (VMs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_read_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_write_bytes: Option<u64>,
    /// Bytes received and sent on its VPC interface since it started (VMs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_rx_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_tx_bytes: Option<u64>,
    pub sampled_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_request_rejects_unknown_fields_and_defaults_the_rest() {
        let ok: CreateInstanceRequest = serde_json::from_str(
            r#"{"image":"local/busybox:latest","cpu_millis":250,"memory_mb":64}"#,
        )
        .unwrap();
        assert_eq!(ok.kind, InstanceKind::Container);
        assert_eq!(ok.restart_policy, RestartPolicy::Always);
        assert!(ok.command.is_empty());
        let err = serde_json::from_str::<CreateInstanceRequest>(
            r#"{"image":"x","cpu_millis":1,"memory_mb":64,"cpus":2}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("cpus"), "{err}");
    }

    #[test]
    fn enums_use_their_wire_names() {
        assert_eq!(
            serde_json::to_string(&RestartPolicy::OnFailure).unwrap(),
            "\"on-failure\""
        );
        for s in InstanceStatus::ALL {
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
            assert_eq!(InstanceStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(
            RestartPolicy::parse("on-failure"),
            Some(RestartPolicy::OnFailure)
        );
    }
}
