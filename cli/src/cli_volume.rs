//! The volume part of the command tree: `cloud volume`, plus the `--size` value parser.

use crate::cli::{parse_duration, parse_env_pair};
use clap::{Args, Subcommand};
use cloud_api::{CreateVolumeRequest, MAX_VOLUME_GB};
use std::time::Duration;

const CREATE_EXAMPLES: &str = "Examples:\n  \
    cloud volume create data --size 10G\n  \
    cloud volume create logs --size 50Gi --node node-1 --no-wait\n  \
    cloud volume create db --size 100 --selector disk=ssd --timeout 5m";

#[derive(Debug, Subcommand)]
pub enum VolumeCmd {
    /// Create a block volume on a node and, by default, wait until it is available.
    ///
    /// Volumes are node-local: the scheduler picks a node with room in its volume pool
    /// (among those matching every --selector), unless --node names one.
    #[command(after_help = CREATE_EXAMPLES)]
    Create(Box<VolumeCreateArgs>),
    /// List the volumes of your project.
    #[command(visible_alias = "ls", after_help = "Example:\n  cloud volume list")]
    List,
    /// Show every field of one volume, including why it failed.
    #[command(
        visible_alias = "get",
        after_help = "Example:\n  cloud volume show data"
    )]
    Show(VolumeTarget),
    /// Delete a volume and its data and, by default, wait until it is gone (refused while
    /// it is in use).
    #[command(
        visible_alias = "delete",
        after_help = "Examples:\n  cloud volume rm data\n  cloud volume rm data --no-wait"
    )]
    Rm(VolumeRmArgs),
    /// Grow a volume (never shrinks): its node grows the disk and, when it is formatted, the
    /// filesystem.
    #[command(after_help = "Example:\n  cloud volume resize data --size 20G")]
    Resize(VolumeResizeArgs),
    /// Mount a volume in an instance on the volume's node; the instance's container is
    /// recreated (stopping, then starting, same instance id) to mount it.
    #[command(
        after_help = "Example:\n  cloud volume attach data --instance db --path /var/lib/data"
    )]
    Attach(VolumeAttachArgs),
    /// Unmount a volume from its instance (the container is recreated without it); the data
    /// stays on the volume.
    #[command(after_help = "Example:\n  cloud volume detach data")]
    Detach(VolumeTarget),
}

#[derive(Debug, Clone, Args)]
pub struct VolumeAttachArgs {
    /// Volume name or id.
    #[arg(value_name = "VOLUME")]
    pub volume: String,
    /// The instance (name or id).
    #[arg(long, value_name = "INSTANCE")]
    pub instance: String,
    /// Absolute path inside the container.
    #[arg(long, value_name = "PATH")]
    pub path: String,
}

#[derive(Debug, Clone, Args)]
pub struct VolumeResizeArgs {
    /// Volume name or id.
    #[arg(value_name = "VOLUME")]
    pub volume: String,
    /// The new size, larger than the current one: 20G, 20Gi, 1T or a bare number of GB.
    #[arg(long, value_name = "SIZE", value_parser = parse_size_gb)]
    pub size: u64,
}

#[derive(Debug, Clone, Args)]
pub struct VolumeCreateArgs {
    /// Volume name (lowercase letters, digits and '-').
    pub name: String,
    /// Size in GB (1G = 1Gi = 2^30 bytes): 10G, 10Gi, 1T or a bare number of GB; 1G to 16T.
    #[arg(long, value_name = "SIZE", value_parser = parse_size_gb)]
    pub size: u64,
    /// Put the volume on this node (name or id) instead of letting the scheduler choose.
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
    /// Only place on nodes with this label KEY=VALUE (repeatable; all must match).
    #[arg(long = "selector", value_name = "KEY=VALUE", value_parser = parse_env_pair)]
    pub selector: Vec<(String, String)>,
    #[command(flatten)]
    pub wait: VolumeWaitArgs,
}

impl VolumeCreateArgs {
    /// The request body of `POST /v1/volumes`.
    pub fn to_request(&self) -> CreateVolumeRequest {
        CreateVolumeRequest {
            name: self.name.clone(),
            size_gb: self.size,
            node: self.node.clone(),
            node_selector: self.selector.iter().cloned().collect(),
        }
    }
}

/// One volume, by name or id.
#[derive(Debug, Clone, Args)]
pub struct VolumeTarget {
    /// Volume name or id.
    #[arg(value_name = "VOLUME")]
    pub volume: String,
}

#[derive(Debug, Clone, Args)]
pub struct VolumeRmArgs {
    #[command(flatten)]
    pub target: VolumeTarget,
    #[command(flatten)]
    pub wait: VolumeWaitArgs,
}

/// Waiting behaviour of `create` and `rm`, like `cloud instance launch`'s.
#[derive(Debug, Clone, Args)]
pub struct VolumeWaitArgs {
    /// Return as soon as the server accepted the request.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for the volume to settle, e.g. 120s, 2m, 500ms.
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// `10G`, `10Gi`, `10GB`, `10GiB`, `1T` (1024G) or `10` → GB, 1 to 16384.
pub fn parse_size_gb(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "g" | "gi" | "gb" | "gib" => 1,
        "t" | "ti" | "tb" | "tib" => 1024,
        _ if unit.starts_with(['.', ',']) => {
            return Err(format!(
                "invalid size {s:?}: use a whole number of GB, e.g. 10G"
            ));
        }
        "m" | "mi" | "mb" | "mib" | "k" | "ki" | "kb" | "kib" => {
            return Err(format!(
                "invalid size {s:?}: volumes are sized in whole GB, e.g. 1G"
            ));
        }
        _ => {
            return Err(format!(
                "invalid size {s:?}: expected e.g. 10G, 10Gi, 1T or a number of GB"
            ));
        }
    };
    if num.is_empty() {
        return Err(format!(
            "invalid size {s:?}: expected e.g. 10G, 10Gi, 1T or a number of GB"
        ));
    }
    let too_big = || {
        format!(
            "invalid size {s:?}: at most {MAX_VOLUME_GB}G ({}T)",
            MAX_VOLUME_GB / 1024
        )
    };
    // All digits: only an overflow fails the parse.
    let n: u64 = num.parse().map_err(|_| too_big())?;
    let gb = n.checked_mul(scale).ok_or_else(too_big)?;
    if gb == 0 {
        return Err(format!("invalid size {s:?}: must be at least 1G"));
    }
    if gb > MAX_VOLUME_GB {
        return Err(too_big());
    }
    Ok(gb)
}

#[cfg(test)]
mod tests;
