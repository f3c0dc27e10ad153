//! `VolumeBackend` for LVM: the contract (checks, idempotency, refusals) on top of the
//! command helpers of the parent module.

use super::{LvmBackend, map_dm_error, round_to_extents};
use crate::storage::cmd::Cmd;
use crate::storage::model::{check_fits, parse_snapshot_lv_name, parse_volume_name};
use crate::storage::mount;
use crate::storage::{
    PoolCapacity, SnapshotInfo, StorageError, VolumeBackend, VolumeInfo, check_new_size,
    validate_id,
};
use async_trait::async_trait;
use std::path::PathBuf;

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
