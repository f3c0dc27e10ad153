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

use super::cmd::Cmd;
use super::lvm_report::{LvRow, VgRow, parse_lvs, parse_vgs};
use super::model::{check_fits, parse_snapshot_lv_name, parse_volume_name};
use super::mount;
use super::{
    PoolCapacity, SnapshotInfo, StorageError, VolumeBackend, VolumeInfo, check_new_size, io_err,
    validate_id,
};
use async_trait::async_trait;
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
}

#[async_trait]
impl VolumeBackend for LvmBackend {
    fn kind(&self) -> &'static str {
        "lvm"
    }

    async fn capacity(&self) -> Result<PoolCapacity, StorageError> {
        let vg = self.vg().await?;
        Ok(PoolCapacity {
            total_bytes: vg.size_bytes,
            free_bytes: vg.free_bytes,
        })
    }

    async fn create(&self, volume_id: &str, size_bytes: u64) -> Result<VolumeInfo, StorageError> {
        validate_id("volume id", volume_id)?;
        check_new_size(size_bytes)?;
        let _g = self.lock.lock().await;
        let vg = self.vg().await?;
        let size = round_to_extents(size_bytes, vg.extent_bytes);
        let name = format!("vol-{volume_id}");
        if let Some(row) = Self::find(&self.lvs().await?, &name) {
            if row.size_bytes != size {
                return Err(StorageError::Invalid(format!(
                    "volume {volume_id} already exists with {} bytes",
                    row.size_bytes
                )));
            }
            return Ok(self.info(volume_id, row, &mount::mount_table()?));
        }
        check_fits(size, vg.free_bytes)?;
        self.create_lv(&name, size).await?;
        self.get_unlocked(volume_id).await
    }

    async fn delete(&self, volume_id: &str) -> Result<(), StorageError> {
        validate_id("volume id", volume_id)?;
        let _g = self.lock.lock().await;
        let name = format!("vol-{volume_id}");
        let rows = self.lvs().await?;
        let mp = self.mountpoint(volume_id);
        if Self::find(&rows, &name).is_none() {
            let _ = std::fs::remove_dir(&mp);
            return Ok(());
        }
        if mount::mount_at(&mount::mount_table()?, &mp).is_some() {
            return Err(StorageError::InUse(format!(
                "volume {volume_id} is mounted at {}; detach it from its instance (unmount) \
                 first",
                mp.display()
            )));
        }
        let snaps: Vec<String> = rows
            .iter()
            .filter(|r| r.origin.as_deref() == Some(name.as_str()))
            .filter_map(|r| parse_snapshot_lv_name(&r.name))
            .collect();
        if !snaps.is_empty() {
            return Err(StorageError::InUse(format!(
                "volume {volume_id} has snapshots that depend on it ({}); delete them first",
                snaps.join(", ")
            )));
        }
        if self.cfg.activation && self.cfg.wipe_on_delete {
            let dev = self.active_device(&name).await?;
            Cmd::new("blkdiscard").arg("-z").arg(&dev).run().await?;
        }
        self.remove_lv(&name).await?;
        let _ = std::fs::remove_dir(&mp);
        Ok(())
    }

    async fn resize(
        &self,
        volume_id: &str,
        new_size_bytes: u64,
    ) -> Result<VolumeInfo, StorageError> {
        validate_id("volume id", volume_id)?;
        check_new_size(new_size_bytes)?;
        let _g = self.lock.lock().await;
        let name = format!("vol-{volume_id}");
        let vg = self.vg().await?;
        let rows = self.lvs().await?;
        let row = Self::find(&rows, &name)
            .ok_or_else(|| StorageError::NotFound(format!("volume {volume_id}")))?;
        let size = round_to_extents(new_size_bytes, vg.extent_bytes);
        if size < row.size_bytes {
            return Err(StorageError::Invalid(format!(
                "volumes only grow: volume {volume_id} has {} bytes, {new_size_bytes} asked",
                row.size_bytes
            )));
        }
        if size > row.size_bytes {
            check_fits(size - row.size_bytes, vg.free_bytes)?;
            self.lvm("lvextend")
                .arg("-L")
                .arg(format!("{size}b"))
                .arg(self.lv(&name))
                .run()
                .await?;
        }
        if self.cfg.activation {
            let mounted = mount::mount_at(&mount::mount_table()?, &self.mountpoint(volume_id));
            let dev = self.active_device(&name).await?;
            mount::grow_ext4(&dev, size, mounted.is_some()).await?;
        }
        self.get_unlocked(volume_id).await
    }

    async fn snapshot(
        &self,
        volume_id: &str,
        snapshot_id: &str,
    ) -> Result<SnapshotInfo, StorageError> {
        validate_id("volume id", volume_id)?;
        validate_id("snapshot id", snapshot_id)?;
        let _g = self.lock.lock().await;
        let origin = format!("vol-{volume_id}");
        let name = format!("snap-{snapshot_id}");
        let rows = self.lvs().await?;
        if let Some(row) = Self::find(&rows, &name) {
            return match self.snapshot_info(row) {
                Some(s) if s.volume_id == volume_id => Ok(s),
                _ => Err(StorageError::Invalid(format!(
                    "snapshot {snapshot_id} already exists, of another volume"
                ))),
            };
        }
        if Self::find(&rows, &origin).is_none() {
            return Err(StorageError::NotFound(format!("volume {volume_id}")));
        }
        // lvcreate -s suspends the origin (with activation), which flushes the filesystem.
        self.lvm("lvcreate")
            .args(["--yes", "-s", "-l"])
            .arg(format!("{}%ORIGIN", self.cfg.snapshot_percent))
            .arg("-n")
            .arg(&name)
            .arg(self.lv(&origin))
            .run()
            .await
            .map_err(|e| map_dm_error(e, "an LVM snapshot"))?;
        let rows = self.lvs().await?;
        Self::find(&rows, &name)
            .and_then(|r| self.snapshot_info(r))
            .ok_or_else(|| StorageError::Io(format!("snapshot {snapshot_id} vanished")))
    }

    async fn delete_snapshot(&self, snapshot_id: &str) -> Result<(), StorageError> {
        validate_id("snapshot id", snapshot_id)?;
        let _g = self.lock.lock().await;
        let name = format!("snap-{snapshot_id}");
        if Self::find(&self.lvs().await?, &name).is_some() {
            self.remove_lv(&name).await?;
        }
        Ok(())
    }

    async fn restore(
        &self,
        snapshot_id: &str,
        new_volume_id: &str,
    ) -> Result<VolumeInfo, StorageError> {
        validate_id("snapshot id", snapshot_id)?;
        validate_id("volume id", new_volume_id)?;
        let _g = self.lock.lock().await;
        let rows = self.lvs().await?;
        let snap_name = format!("snap-{snapshot_id}");
        let snap = Self::find(&rows, &snap_name)
            .and_then(|r| self.snapshot_info(r))
            .ok_or_else(|| StorageError::NotFound(format!("snapshot {snapshot_id}")))?;
        let name = format!("vol-{new_volume_id}");
        if let Some(row) = Self::find(&rows, &name) {
            if row.size_bytes != snap.size_bytes {
                return Err(StorageError::Invalid(format!(
                    "volume {new_volume_id} already exists with {} bytes",
                    row.size_bytes
                )));
            }
            return Ok(self.info(new_volume_id, row, &mount::mount_table()?));
        }
        self.need_activation("restoring a snapshot")?;
        check_fits(snap.size_bytes, self.vg().await?.free_bytes)?;
        // Built under a temporary name, renamed when the copy is complete.
        let tmp = format!("restore-{new_volume_id}");
        if Self::find(&rows, &tmp).is_some() {
            self.remove_lv(&tmp).await?;
        }
        self.create_lv(&tmp, snap.size_bytes).await?;
        let copy = async {
            let from = self.active_device(&snap_name).await?;
            let to = self.active_device(&tmp).await?;
            let mut if_arg = std::ffi::OsString::from("if=");
            if_arg.push(&from);
            let mut of_arg = std::ffi::OsString::from("of=");
            of_arg.push(&to);
            Cmd::new("dd")
                .arg(if_arg)
                .arg(of_arg)
                .args(["bs=4M", "conv=fsync", "status=none"])
                .run()
                .await?;
            self.lvm("lvrename")
                .arg(&self.cfg.vg)
                .arg(&tmp)
                .arg(&name)
                .run()
                .await
        };
        if let Err(e) = copy.await {
            let _ = self.remove_lv(&tmp).await;
            return Err(e);
        }
        self.get_unlocked(new_volume_id).await
    }

    async fn get(&self, volume_id: &str) -> Result<VolumeInfo, StorageError> {
        validate_id("volume id", volume_id)?;
        self.get_unlocked(volume_id).await
    }

    async fn list(&self) -> Result<Vec<VolumeInfo>, StorageError> {
        let table = mount::mount_table()?;
        Ok(self
            .lvs()
            .await?
            .iter()
            .filter(|r| r.origin.is_none())
            .filter_map(|r| Some(self.info(&parse_volume_name(&r.name, "")?, r, &table)))
            .collect())
    }

    async fn list_snapshots(&self) -> Result<Vec<SnapshotInfo>, StorageError> {
        Ok(self
            .lvs()
            .await?
            .iter()
            .filter_map(|r| self.snapshot_info(r))
            .collect())
    }

    async fn mount(&self, volume_id: &str) -> Result<PathBuf, StorageError> {
        validate_id("volume id", volume_id)?;
        let _g = self.lock.lock().await;
        let name = format!("vol-{volume_id}");
        if Self::find(&self.lvs().await?, &name).is_none() {
            return Err(StorageError::NotFound(format!("volume {volume_id}")));
        }
        let mp = self.mountpoint(volume_id);
        if mount::mount_at(&mount::mount_table()?, &mp).is_some() {
            return Ok(mp);
        }
        self.need_activation("mounting a volume")?;
        let dev = self.active_device(&name).await?;
        mount::format_ext4(&dev, volume_id).await?;
        let size = Self::find(&self.lvs().await?, &name).map_or(0, |r| r.size_bytes);
        mount::grow_ext4(&dev, size, false).await?;
        mount::mount_ext4(&dev, &mp, false).await?;
        Ok(mp)
    }

    async fn unmount(&self, volume_id: &str) -> Result<(), StorageError> {
        validate_id("volume id", volume_id)?;
        let _g = self.lock.lock().await;
        mount::umount_all(&self.mountpoint(volume_id), volume_id).await
    }

    async fn mounted(&self, volume_id: &str) -> Result<bool, StorageError> {
        validate_id("volume id", volume_id)?;
        Ok(mount::mount_at(&mount::mount_table()?, &self.mountpoint(volume_id)).is_some())
    }
}

impl LvmBackend {
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
