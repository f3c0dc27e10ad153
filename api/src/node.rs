//! Node resources: the compute hosts agents run on.

use crate::ids::NodeId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    Ready,
    Draining,
    Down,
}

impl NodeStatus {
    pub const ALL: [NodeStatus; 3] = [NodeStatus::Ready, NodeStatus::Draining, NodeStatus::Down];

    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Ready => "ready",
            NodeStatus::Draining => "draining",
            NodeStatus::Down => "down",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An amount of schedulable resources.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct Resources {
    pub cpu_millis: u64,
    pub memory_mb: u64,
    pub disk_gb: u64,
}

/// Latest host usage reported by the node's agent (procfs).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HostUsage {
    pub cpu_percent: f64,
    pub memory_used_mb: u64,
    pub memory_total_mb: u64,
    pub disk_used_gb: u64,
    pub disk_total_gb: u64,
    pub load1: f64,
    pub load5: f64,
    pub load15: f64,
    pub sampled_at: DateTime<Utc>,
    /// The node's volume pool, when it has a volume backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_pool: Option<VolumePool>,
}

/// Where a node keeps volumes and how much room is left.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VolumePool {
    /// `file` or `lvm`.
    pub kind: String,
    pub total_bytes: u64,
    /// What can still be promised to new volumes or growth.
    pub free_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Node {
    pub id: NodeId,
    pub name: String,
    pub hostname: String,
    pub status: NodeStatus,
    pub capacity: Resources,
    pub allocated: Resources,
    pub drivers: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub agent_version: Option<String>,
    /// How the node is drained, when it is (`status` is `draining`, or `down` if its agent
    /// went away meanwhile: the drain holds until `undrain`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainMode>,
    /// Whether the node's agent has a session open with this scheduler right now.
    pub connected: bool,
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    pub usage: Option<HostUsage>,
    pub created_at: DateTime<Utc>,
}

/// How a drained node treats the instances it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DrainMode {
    /// Move `always`/`on-failure` instances to other nodes; stop `never` instances in place.
    Evacuate,
    /// Place nothing new here but leave its instances running (agent upgrades, maintenance
    /// that does not stop workloads). If the agent stays away longer than the scheduler's
    /// `reschedule_after`, its instances are moved as for any down node.
    KeepInstances,
}

impl DrainMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Evacuate => "evacuate",
            Self::KeepInstances => "keep_instances",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "evacuate" => Some(Self::Evacuate),
            "keep_instances" => Some(Self::KeepInstances),
            _ => None,
        }
    }
}

/// Query of `POST /v1/nodes/{id}/drain`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DrainQuery {
    /// `true`: leave the node's instances running (see [`DrainMode::KeepInstances`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_instances: Option<bool>,
}

/// `POST /v1/nodes/join-tokens`: a token agents enroll with.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJoinTokenRequest {
    /// How many agents may enroll with it (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<u32>,
    /// Lifetime in seconds (default 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

/// A new join token. The secret is shown only in this response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct JoinToken {
    pub token: String,
    pub uses: u32,
    pub expires_at: DateTime<Utc>,
}
