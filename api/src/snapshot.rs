//! Point-in-time snapshots of volumes, and restoring them into new volumes.

use crate::ids::{NodeId, SnapshotId, VolumeId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// `POST /v1/snapshots`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshotRequest {
    /// The volume (id or name). It may be attached: its filesystem is frozen while the
    /// snapshot is taken, so the copy is consistent.
    pub volume_id: String,
    pub name: String,
}

/// `POST /v1/snapshots/{id}/restore`: a NEW volume with the snapshot's content, on the
/// snapshot's node; the snapshot and its source volume are untouched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreSnapshotRequest {
    /// Name of the new volume.
    pub name: String,
    /// Size of the new volume in GB (default: the snapshot's size; never smaller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_gb: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SnapshotStatus {
    Creating,
    Available,
    Deleting,
    Failed,
}

impl SnapshotStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Available => "available",
            Self::Deleting => "deleting",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "creating" => Self::Creating,
            "available" => Self::Available,
            "deleting" => Self::Deleting,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

impl fmt::Display for SnapshotStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Snapshot {
    pub id: SnapshotId,
    pub name: String,
    /// The volume it was taken of (which may have been deleted since, where the node's
    /// storage allows that).
    pub volume_id: VolumeId,
    pub volume_name: Option<String>,
    /// Size in GB of the volume a restore creates.
    pub size_gb: u64,
    /// Snapshots live on their volume's node; restores land there too.
    pub node_id: Option<NodeId>,
    pub node_name: Option<String>,
    pub status: SnapshotStatus,
    pub status_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}
