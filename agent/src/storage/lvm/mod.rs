//! The `lvm` volume backend: every volume is a logical volume `vol-<id>` in the volume group
//! named in the config, every snapshot a classic COW snapshot LV `snap-<id>` (sized as a
//! percentage of its origin) that depends on its origin. Sizes are rounded up to whole
//! extents. Volumes are formatted ext4 on first mount and mounted from `/dev/<vg>/vol-<id>`.
//!
//! `activation: false` is for hosts without device-mapper (like the CI kernel): every LVM
//! command gets `--config global{activation=0}`, so only metadata changes (create, grow,
//! list, remove); whatever needs the data (mount, format, restore, wiping) is `Unsupported`.
//! With activation, deleted volumes are zeroed before removal, so a later volume on the
//! same extents never sees another tenant's data.

mod backend;
mod report;

pub use report::{LvRow, VgRow, parse_lvs, parse_vgs};

use super::cmd::Cmd;
use super::model::{parse_snapshot_lv_name, parse_volume_name};
use super::mount;
use super::{SnapshotInfo, StorageError, VolumeInfo, io_err};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// How the agent uses LVM on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvmBackendConfig {
    /// The volume group holding the volumes (created by the operator).
    pub vg: String,
    /// Directory under which volumes are mounted, one subdirectory per volume id.
    pub mount_dir: PathBuf,
    /// false: metadata only (`--config global{activation=0}`), for kernels without
    /// device-mapper.
    pub activation: bool,
    /// Copy-on-write space of a snapshot, in percent of its origin's size (1–100).
    pub snapshot_percent: u32,
    /// Zero a volume (`blkdiscard -z`) before removing it (needs activation).
    pub wipe_on_delete: bool,
}

impl LvmBackendConfig {
    /// Activation on, snapshots of 20 %, wipe on delete.
    pub fn new(vg: impl Into<String>, mount_dir: impl Into<PathBuf>) -> Self {
        Self {
            vg: vg.into(),
            mount_dir: mount_dir.into(),
            activation: true,
            snapshot_percent: 20,
            wipe_on_delete: true,
        }
    }
}

/// Volumes as logical volumes of one VG.
#[derive(Debug)]
pub struct LvmBackend {
    cfg: LvmBackendConfig,
    /// Serializes every call that changes something.
    lock: tokio::sync::Mutex<()>,
}

/// LVM's rules for VG names, minus anything that could look like an option or a path.
fn validate_vg_name(vg: &str) -> Result<(), StorageError> {
    let ok = !vg.is_empty()
        && vg.len() <= 127
        && !vg.starts_with('-')
        && vg != "."
        && vg != ".."
        && vg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(StorageError::Invalid(format!(
            "{vg:?} is not a valid volume group name"
        )))
    }
}

/// `size` rounded up to whole extents.
pub(crate) fn round_to_extents(size: u64, extent: u64) -> u64 {
    let extent = extent.max(1);
    size.div_ceil(extent).saturating_mul(extent)
}

/// LVM's way of saying there is no device-mapper, as a clear `Unsupported`.
fn map_dm_error(e: StorageError, what: &str) -> StorageError {
    match e {
        StorageError::Command { ref stderr, .. } if stderr.contains("device-mapper") => {
            StorageError::Unsupported(format!(
                "{what} needs the device-mapper kernel driver, which this host lacks ({stderr})"
            ))
        }
        other => other,
    }
}

impl LvmBackend {
    /// Checks the config and creates the mount directory (0700). Does not touch the VG.
    pub fn new(mut cfg: LvmBackendConfig) -> Result<Self, StorageError> {
        validate_vg_name(&cfg.vg)?;
        if !(1..=100).contains(&cfg.snapshot_percent) {
            return Err(StorageError::Invalid(format!(
                "snapshot_percent {} is not within 1..=100",
                cfg.snapshot_percent
            )));
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&cfg.mount_dir)
            .map_err(io_err(format_args!("creating {}", cfg.mount_dir.display())))?;
        cfg.mount_dir = std::fs::canonicalize(&cfg.mount_dir).map_err(io_err(format_args!(
            "resolving {}",
            cfg.mount_dir.display()
        )))?;
        Ok(Self {
            cfg,
            lock: tokio::sync::Mutex::new(()),
        })
    }

    /// An LVM command with the activation config applied.
    fn lvm(&self, program: &'static str) -> Cmd {
        let c = Cmd::new(program);
        if self.cfg.activation {
            c
        } else {
            c.args(["--config", "global{activation=0}"])
        }
    }

    fn lv(&self, name: &str) -> String {
        format!("{}/{name}", self.cfg.vg)
    }

    fn device(&self, name: &str) -> PathBuf {
        Path::new("/dev").join(&self.cfg.vg).join(name)
    }

    fn mountpoint(&self, volume_id: &str) -> PathBuf {
        self.cfg.mount_dir.join(volume_id)
    }

    fn need_activation(&self, what: &str) -> Result<(), StorageError> {
        if self.cfg.activation {
            return Ok(());
        }
        Err(StorageError::Unsupported(format!(
            "{what} needs LV device nodes, but LVM activation is disabled on this node \
             (no device-mapper)"
        )))
    }

    /// All LVs of the VG.
    pub async fn lvs(&self) -> Result<Vec<LvRow>, StorageError> {
        let out = self
            .lvm("lvs")
            .args([
                "--reportformat",
                "json",
                "-o",
                "lv_name,lv_size,origin,origin_size",
            ])
            .args(["--units", "b", "--nosuffix"])
            .arg(&self.cfg.vg)
            .run()
            .await?;
        parse_lvs(&out)
    }

    /// The VG's size, free space and extent size.
    pub async fn vg(&self) -> Result<VgRow, StorageError> {
        let out = self
            .lvm("vgs")
            .args([
                "--reportformat",
                "json",
                "-o",
                "vg_name,vg_size,vg_free,vg_extent_size",
            ])
            .args(["--units", "b", "--nosuffix"])
            .arg(&self.cfg.vg)
            .run()
            .await?;
        parse_vgs(&out)?
            .into_iter()
            .find(|v| v.name == self.cfg.vg)
            .ok_or_else(|| StorageError::NotFound(format!("volume group {}", self.cfg.vg)))
    }

    fn find<'a>(rows: &'a [LvRow], name: &str) -> Option<&'a LvRow> {
        rows.iter().find(|r| r.name == name)
    }

    fn info(&self, volume_id: &str, row: &LvRow, table: &[mount::MountEntry]) -> VolumeInfo {
        let path = self.device(&row.name);
        let formatted =
            self.cfg.activation && matches!(mount::probe_fs(&path), Ok(mount::FsProbe::Ext { .. }));
        VolumeInfo {
            volume_id: volume_id.to_owned(),
            size_bytes: row.size_bytes,
            formatted,
            mounted: mount::mount_at(table, &self.mountpoint(volume_id)).is_some(),
            path,
        }
    }

    fn snapshot_info(&self, row: &LvRow) -> Option<SnapshotInfo> {
        let snapshot_id = parse_snapshot_lv_name(&row.name)?;
        let volume_id = parse_volume_name(row.origin.as_deref()?, "")?;
        Some(SnapshotInfo {
            snapshot_id,
            volume_id,
            size_bytes: row.origin_size_bytes.unwrap_or(row.size_bytes),
            path: self.device(&row.name),
        })
    }

    /// The device node of an LV, activating the LV when the node is missing.
    async fn active_device(&self, name: &str) -> Result<PathBuf, StorageError> {
        let dev = self.device(name);
        if !dev.exists() {
            self.lvm("lvchange")
                .arg("-ay")
                .arg(self.lv(name))
                .run()
                .await?;
        }
        Ok(dev)
    }

    async fn remove_lv(&self, name: &str) -> Result<(), StorageError> {
        self.lvm("lvremove")
            .arg("--yes")
            .arg(self.lv(name))
            .run()
            .await?;
        Ok(())
    }

    /// Creates LV `name` of `size` bytes (already whole extents).
    async fn create_lv(&self, name: &str, size: u64) -> Result<(), StorageError> {
        let mut c = self.lvm("lvcreate").arg("--yes");
        if self.cfg.activation {
            c = c.args(["--wipesignatures", "y", "--zero", "y"]);
        }
        let c = c
            .arg("-L")
            .arg(format!("{size}b"))
            .arg("-n")
            .arg(name)
            .arg(&self.cfg.vg);
        if let Err(e) = c.run().await {
            // lvcreate cleans up after itself; make sure nothing half-made stays.
            if let Ok(rows) = self.lvs().await
                && Self::find(&rows, name).is_some()
            {
                let _ = self.remove_lv(name).await;
            }
            return Err(e);
        }
        Ok(())
    }

    async fn get_unlocked(&self, volume_id: &str) -> Result<VolumeInfo, StorageError> {
        let name = format!("vol-{volume_id}");
        let rows = self.lvs().await?;
        let row = Self::find(&rows, &name)
            .ok_or_else(|| StorageError::NotFound(format!("volume {volume_id}")))?;
        Ok(self.info(volume_id, row, &mount::mount_table()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vg_names_and_rounding() {
        for ok in ["vg0", "tc_vg.1+x", "a-b"] {
            assert!(validate_vg_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-vg",
            "..",
            ".",
            "vg/x",
            "vg x",
            "vg;rm",
            &"v".repeat(128),
        ] {
            assert!(validate_vg_name(bad).is_err(), "{bad}");
        }
        let mb4 = 4 << 20;
        assert_eq!(round_to_extents(1, mb4), mb4);
        assert_eq!(round_to_extents(mb4, mb4), mb4);
        assert_eq!(round_to_extents(mb4 + 1, mb4), 2 * mb4);
    }

    #[test]
    fn device_mapper_errors_become_unsupported() {
        let e = StorageError::Command {
            cmd: "lvcreate".into(),
            status: "exit status 5".into(),
            stderr: "Can't create snapshot without using device-mapper kernel driver.".into(),
        };
        assert!(matches!(map_dm_error(e, "x"), StorageError::Unsupported(_)));
        let other = StorageError::Io("x".into());
        assert_eq!(map_dm_error(other.clone(), "x"), other);
    }

    #[test]
    fn config_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = LvmBackendConfig::new("vg0", dir.path().join("volumes"));
        cfg.snapshot_percent = 0;
        assert!(LvmBackend::new(cfg.clone()).is_err());
        cfg.snapshot_percent = 20;
        assert!(LvmBackend::new(cfg.clone()).is_ok());
        cfg.vg = "--config".into();
        assert!(LvmBackend::new(cfg).is_err());
    }
}
