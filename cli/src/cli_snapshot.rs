//! The snapshot part of the command tree: `cloud snapshot`.

use crate::cli_volume::{VolumeWaitArgs, parse_size_gb};
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum SnapshotCmd {
    /// Take a point-in-time snapshot of a volume and, by default, wait until it is taken.
    ///
    /// The volume may be attached: its filesystem is frozen while the copy is made, so the
    /// snapshot is consistent. Snapshots live on the volume's node.
    #[command(after_help = "Examples:\n  \
        cloud snapshot create data-monday --volume data\n  \
        cloud snapshot create before-upgrade --volume db --no-wait")]
    Create(SnapshotCreateArgs),
    /// List the snapshots of your project (or of one volume).
    #[command(
        visible_alias = "ls",
        after_help = "Examples:\n  cloud snapshot list\n  cloud snapshot list --volume data"
    )]
    List(SnapshotListArgs),
    /// Show every field of one snapshot, including why it failed.
    #[command(
        visible_alias = "get",
        after_help = "Example:\n  cloud snapshot show data-monday"
    )]
    Show(SnapshotTarget),
    /// Delete a snapshot and, by default, wait until it is gone (refused while a volume is
    /// being restored from it).
    #[command(
        visible_alias = "delete",
        after_help = "Example:\n  cloud snapshot rm data-monday"
    )]
    Rm(SnapshotRmArgs),
    /// Create a NEW volume with the snapshot's content (on the snapshot's node) and, by
    /// default, wait until it is available. The snapshot and its volume are untouched.
    #[command(after_help = "Examples:\n  \
        cloud snapshot restore data-monday --name data-restored\n  \
        cloud snapshot restore data-monday --name bigger --size 20G")]
    Restore(SnapshotRestoreArgs),
}

#[derive(Debug, Clone, Args)]
pub struct SnapshotCreateArgs {
    /// Snapshot name (lowercase letters, digits and '-').
    pub name: String,
    /// The volume to snapshot (name or id).
    #[arg(long, value_name = "VOLUME")]
    pub volume: String,
    #[command(flatten)]
    pub wait: VolumeWaitArgs,
}

#[derive(Debug, Clone, Args)]
pub struct SnapshotListArgs {
    /// Only the snapshots of this volume (name or id).
    #[arg(long, value_name = "VOLUME")]
    pub volume: Option<String>,
}

/// One snapshot, by name or id.
#[derive(Debug, Clone, Args)]
pub struct SnapshotTarget {
    /// Snapshot name or id.
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: String,
}

#[derive(Debug, Clone, Args)]
pub struct SnapshotRmArgs {
    #[command(flatten)]
    pub target: SnapshotTarget,
    #[command(flatten)]
    pub wait: VolumeWaitArgs,
}

#[derive(Debug, Clone, Args)]
pub struct SnapshotRestoreArgs {
    #[command(flatten)]
    pub target: SnapshotTarget,
    /// Name of the new volume.
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// Size of the new volume (default: the snapshot's; never smaller): 20G, 1T …
    #[arg(long, value_name = "SIZE", value_parser = parse_size_gb)]
    pub size: Option<u64>,
    #[command(flatten)]
    pub wait: VolumeWaitArgs,
}

#[cfg(test)]
mod tests {
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn snapshot_commands_parse() {
        let cli = Cli::try_parse_from([
            "cloud", "snapshot", "restore", "s1", "--name", "v2", "--size", "20G",
        ])
        .unwrap();
        let Command::Snapshot(super::SnapshotCmd::Restore(a)) = cli.command else {
            panic!("not a restore");
        };
        assert_eq!(
            (a.target.snapshot.as_str(), a.name.as_str(), a.size),
            ("s1", "v2", Some(20))
        );
        assert!(
            Cli::try_parse_from(["cloud", "snapshot", "create", "s1"]).is_err(),
            "--volume is required"
        );
        let cli = Cli::try_parse_from(["cloud", "snapshots", "ls", "--volume", "data"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Snapshot(super::SnapshotCmd::List(ref l)) if l.volume.as_deref() == Some("data")
        ));
    }
}
