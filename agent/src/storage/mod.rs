//! Node-local block storage: persistent volumes and their snapshots, one trait with three
//! implementations that keep the same contract. `file` keeps sparse raw image files in a
//! directory and loop-mounts them (runs everywhere, including CI); `lvm` keeps logical volumes
//! in a volume group named in the agent config; `fake` keeps everything in memory for unit
//! tests and simulated nodes.
//!
//! Names carry ids (`vol-<uuid>`, `snap-<uuid>…`), so a restarted agent finds everything again
//! from what is on disk alone. Ids are validated as canonical UUIDs before they are used in a
//! path or a command argument, and every command runs from an argument vector (no shell).
//! Volumes get an ext4 filesystem on first mount and are mounted under
//! `<agent data dir>/volumes/<volume id>`, from where the runtime bind-mounts them.

mod cmd;
pub mod fake;
pub mod file;
pub mod lvm;
mod model;
mod mount;

pub use fake::FakeVolumes;
pub use file::{FileBackend, FileBackendConfig};
pub use lvm::{LvRow, LvmBackend, LvmBackendConfig, VgRow, parse_lvs, parse_vgs};
pub use model::{
    PoolCapacity, SnapshotInfo, VolumeInfo, check_new_size, snapshot_file_name, validate_id,
    volume_file_name,
};
pub use mount::{FsProbe, probe_fs};

use async_trait::async_trait;
use std::path::PathBuf;

/// Errors of a volume backend. Messages name ids and the agent's own paths, never user data,
/// and say what to do when the caller can fix it (unmount first, delete snapshots first …).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// No such volume or snapshot (the message says which).
    #[error("{0} not found")]
    NotFound(String),
    /// The volume is mounted or other things depend on it; the message says what to do.
    #[error("in use: {0}")]
    InUse(String),
    /// A bad id, a bad size, a shrink, an id that exists with other properties …
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The pool has not enough free space; nothing was created or changed.
    #[error("not enough space: {0}")]
    NoSpace(String),
    /// This backend or host cannot do it (no device-mapper, activation disabled, tool missing).
    #[error("not supported: {0}")]
    Unsupported(String),
    /// A command failed: its argument vector, exit status and (shortened) stderr.
    #[error("{cmd} failed ({status}): {stderr}")]
    Command {
        cmd: String,
        status: String,
        stderr: String,
    },
    /// A file-system call failed.
    #[error("{0}")]
    Io(String),
}

/// One node's pool of volume storage.
///
/// Every method converges and is idempotent: repeating a call that succeeded changes nothing
/// and succeeds again. A call that fails half-way leaves nothing half-made behind. Calls that
/// change something are serialized inside each backend.
#[async_trait]
pub trait VolumeBackend: Send + Sync {
    /// `"file"`, `"lvm"` (the fake reports the kind it imitates).
    fn kind(&self) -> &'static str;

    /// Total and free bytes of the pool, as reported in telemetry and checked by `create`.
    async fn capacity(&self) -> Result<PoolCapacity, StorageError>;

    /// Creates an empty (unformatted) volume. The same id with the same size again is a
    /// no-op; size 0 or more than the free space is refused before anything is created.
    async fn create(&self, volume_id: &str, size_bytes: u64) -> Result<VolumeInfo, StorageError>;

    /// Deletes a volume (nothing to do when it is gone). Refused with `InUse` while it is
    /// mounted, or, where snapshots depend on their origin (lvm), while it has snapshots.
    async fn delete(&self, volume_id: &str) -> Result<(), StorageError>;

    /// Grows a volume to `new_size_bytes` (a smaller size is `Invalid`, the same size a
    /// no-op) and grows its ext4 filesystem when it has one, online when it is mounted.
    /// Where the kernel refuses online growth (no CAP_SYS_RESOURCE) the volume is grown and
    /// `Unsupported` says so; its filesystem then grows on the next `mount` (or `resize`
    /// while unmounted).
    async fn resize(
        &self,
        volume_id: &str,
        new_size_bytes: u64,
    ) -> Result<VolumeInfo, StorageError>;

    /// Takes a point-in-time snapshot of a volume (consistent: a mounted filesystem is frozen
    /// while it is taken). The same ids again are a no-op.
    async fn snapshot(
        &self,
        volume_id: &str,
        snapshot_id: &str,
    ) -> Result<SnapshotInfo, StorageError>;

    /// Deletes a snapshot (nothing to do when it is gone).
    async fn delete_snapshot(&self, snapshot_id: &str) -> Result<(), StorageError>;

    /// Creates the NEW volume `new_volume_id` with the snapshot's content and size; the
    /// snapshot and its source volume are untouched.
    async fn restore(
        &self,
        snapshot_id: &str,
        new_volume_id: &str,
    ) -> Result<VolumeInfo, StorageError>;

    /// One volume, or `NotFound`.
    async fn get(&self, volume_id: &str) -> Result<VolumeInfo, StorageError>;

    /// Every volume of this backend, found from names alone (also after a restart).
    async fn list(&self) -> Result<Vec<VolumeInfo>, StorageError>;

    /// Every snapshot of this backend, found from names alone.
    async fn list_snapshots(&self) -> Result<Vec<SnapshotInfo>, StorageError>;

    /// Mounts a volume (formatting it as ext4 on first use) under
    /// `<mount dir>/<volume id>` and returns that path; already mounted → the same path.
    async fn mount(&self, volume_id: &str) -> Result<PathBuf, StorageError>;

    /// Unmounts a volume (nothing to do when it is not mounted) and releases its loop device.
    async fn unmount(&self, volume_id: &str) -> Result<(), StorageError>;

    /// Whether the volume is mounted at its mountpoint.
    async fn mounted(&self, volume_id: &str) -> Result<bool, StorageError>;
}

impl From<std::io::Error> for StorageError {
    fn from(e: std::io::Error) -> Self {
        StorageError::Io(e.to_string())
    }
}

/// An io error with what was being done, e.g. `io_err("reading /x")`.
pub(crate) fn io_err(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> StorageError {
    move |e| StorageError::Io(format!("{what}: {e}"))
}
