//! VM images: base disks that nodes find at the same path, optionally booted from a kernel.

use crate::ids::ImageId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// `POST /v1/images`: registers a VM image. The files are not uploaded: every node that runs
/// VMs of this image must have them at these absolute paths (shared storage, or copied by the
/// operator, e.g. with the Ansible roles).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateImageRequest {
    pub name: String,
    /// Absolute path of the base disk on the nodes.
    pub path: String,
    /// `qcow2` (default) or `raw`.
    #[serde(default)]
    pub format: ImageFormat,
    /// Boot this kernel directly instead of the disk's boot loader (absolute path on the nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// Initial ramdisk for `kernel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    /// Kernel command line for `kernel` (default `console=ttyS0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// Every project may see and use it (default true: images are an operator's offer to all
    /// tenants); false keeps it in the operator's project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public: Option<bool>,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    #[default]
    Qcow2,
    Raw,
}

impl ImageFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Qcow2 => "qcow2",
            Self::Raw => "raw",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "qcow2" => Some(Self::Qcow2),
            "raw" => Some(Self::Raw),
            _ => None,
        }
    }
}

impl fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Image {
    pub id: ImageId,
    pub name: String,
    pub path: String,
    pub format: ImageFormat,
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub cmdline: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Seen and used by every project.
    #[serde(default)]
    pub public: bool,
}
