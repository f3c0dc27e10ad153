//! Node-local block volumes.

use crate::ids::{NodeId, VolumeId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Largest volume, in GB.
pub const MAX_VOLUME_GB: u64 = 16 * 1024;

/// `POST /v1/volumes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVolumeRequest {
    pub name: String,
    /// Size in GB (1 GB = 2^30 bytes), 1 to 16384.
    pub size_gb: u64,
    /// Put it on this node (id or name) instead of letting the scheduler choose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Only on nodes with all these labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
}

/// `POST /v1/volumes/{id}/resize`: grow only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResizeVolumeRequest {
    /// The new size in GB; larger than the current one.
    pub size_gb: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum VolumeStatus {
    Creating,
    Available,
    Attaching,
    InUse,
    Detaching,
    Deleting,
    Failed,
}

impl VolumeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Available => "available",
            Self::Attaching => "attaching",
            Self::InUse => "in-use",
            Self::Detaching => "detaching",
            Self::Deleting => "deleting",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "creating" => Self::Creating,
            "available" => Self::Available,
            "attaching" => Self::Attaching,
            "in-use" => Self::InUse,
            "detaching" => Self::Detaching,
            "deleting" => Self::Deleting,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

impl fmt::Display for VolumeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `POST /v1/volumes/{id}/attach`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachVolumeRequest {
    /// The instance (id or name); it must run on the volume's node.
    pub instance_id: String,
    /// Absolute path inside the container.
    pub mount_path: String,
}

/// A volume in an instance: `POST /v1/instances` takes `volumes: [{volume, mount_path}]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeMount {
    /// The volume (id or name on input; id on output).
    pub volume: String,
    /// Absolute path inside the container, e.g. `/data`.
    pub mount_path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Volume {
    pub id: VolumeId,
    pub name: String,
    pub size_gb: u64,
    /// The node holding it (volumes are node-local).
    pub node_id: Option<NodeId>,
    pub node_name: Option<String>,
    pub status: VolumeStatus,
    pub status_reason: Option<String>,
    /// The instance it is attached to, and where.
    #[serde(default)]
    pub instance_id: Option<crate::InstanceId>,
    #[serde(default)]
    pub mount_path: Option<String>,
    /// The snapshot it was restored from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_snapshot_id: Option<crate::SnapshotId>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}
