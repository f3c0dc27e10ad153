//! The `file` volume backend: every volume is a sparse raw image `vol-<id>.raw` in one
//! directory, every snapshot a copy `snap-<id>-of-<volume id>.raw` (reflinked where the
//! filesystem can, sparse otherwise). Volumes are loop-mounted (ext4, formatted on first
//! mount) under `<mount dir>/<id>`; VMs would get the raw file itself.
//!
//! Everything is built under a hidden temporary name (`.tmp-…`) and renamed into place when
//! complete, so a crash or failure never leaves a half-made volume or snapshot under a real
//! name; leftovers are removed when the backend starts. Free space is the filesystem's free
//! space minus what the sparse volumes may still grow into, so promised sizes always fit.

use super::cmd::Cmd;
use super::model::{check_fits, parse_snapshot_file_name, parse_volume_name};
use super::mount::{self, MountEntry};
use super::{
    PoolCapacity, SnapshotInfo, StorageError, VolumeBackend, VolumeInfo, check_new_size, io_err,
    snapshot_file_name, validate_id, volume_file_name,
};
use async_trait::async_trait;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Where a file backend keeps images and mounts volumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileBackendConfig {
    /// Directory of the image files (created 0700 if missing).
    pub image_dir: PathBuf,
    /// Directory under which volumes are mounted, one subdirectory per volume id.
    pub mount_dir: PathBuf,
}

impl FileBackendConfig {
    /// Images in `<data dir>/volume-images`, mounts under `<data dir>/volumes`.
    pub fn under(data_dir: &Path) -> Self {
        Self {
            image_dir: data_dir.join("volume-images"),
            mount_dir: data_dir.join("volumes"),
        }
    }
}

/// Volumes as sparse image files. One backend per image directory.
#[derive(Debug)]
pub struct FileBackend {
    image_dir: PathBuf,
    mount_dir: PathBuf,
    /// Serializes every call that changes something.
    lock: tokio::sync::Mutex<()>,
}

const EXT: &str = ".raw";
const TMP_PREFIX: &str = ".tmp-";

/// A volume or snapshot file found in the image directory.
struct Found {
    path: PathBuf,
    len: u64,
    allocated: u64,
}

fn stat(path: &Path) -> Result<Option<Found>, StorageError> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some(Found {
            path: path.to_owned(),
            len: m.len(),
            allocated: m.blocks().saturating_mul(512),
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(format_args!("reading {}", path.display()))(e)),
    }
}

fn remove_if_exists(path: &Path) -> Result<(), StorageError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(io_err(format_args!("removing {}", path.display()))(e))
        }
        _ => Ok(()),
    }
}

impl FileBackend {
    /// Creates both directories if needed and removes leftovers of interrupted calls. The
    /// mount directory is 0700; the image directory 0711: traversable, so that QEMU (libvirt's
    /// unprivileged user, which libvirt hands a VM's volume file to) can open a file it is
    /// given, but not listable (the image files themselves stay 0600).
    pub fn new(config: FileBackendConfig) -> Result<Self, StorageError> {
        use std::os::unix::fs::PermissionsExt;
        let mut b = fs::DirBuilder::new();
        b.recursive(true);
        let mut dirs = [(config.image_dir, 0o711), (config.mount_dir, 0o700)];
        for (d, mode) in &mut dirs {
            b.mode(*mode)
                .create(&*d)
                .map_err(io_err(format_args!("creating {}", d.display())))?;
            fs::set_permissions(&*d, fs::Permissions::from_mode(*mode))
                .map_err(io_err(format_args!("setting the mode of {}", d.display())))?;
            // Loop devices report their backing file by its canonical path.
            *d =
                fs::canonicalize(&*d).map_err(io_err(format_args!("resolving {}", d.display())))?;
        }
        let [(image_dir, _), (mount_dir, _)] = dirs;
        let backend = Self {
            image_dir,
            mount_dir,
            lock: tokio::sync::Mutex::new(()),
        };
        for entry in backend.entries()? {
            if entry.to_string_lossy().starts_with(TMP_PREFIX) {
                remove_if_exists(&backend.image_dir.join(entry))?;
            }
        }
        Ok(backend)
    }

    fn entries(&self) -> Result<Vec<std::ffi::OsString>, StorageError> {
        let dir = fs::read_dir(&self.image_dir)
            .map_err(io_err(format_args!("listing {}", self.image_dir.display())))?;
        Ok(dir.flatten().map(|e| e.file_name()).collect())
    }

    fn volume_path(&self, volume_id: &str) -> PathBuf {
        self.image_dir.join(volume_file_name(volume_id, EXT))
    }

    fn mountpoint(&self, volume_id: &str) -> PathBuf {
        self.mount_dir.join(volume_id)
    }

    fn tmp_path(&self, what: &str, id: &str) -> PathBuf {
        self.image_dir.join(format!("{TMP_PREFIX}{what}-{id}"))
    }

    fn volumes(&self) -> Result<Vec<(String, Found)>, StorageError> {
        let mut out = Vec::new();
        for name in self.entries()? {
            let Some(id) = name.to_str().and_then(|n| parse_volume_name(n, EXT)) else {
                continue;
            };
            if let Some(f) = stat(&self.image_dir.join(&name))? {
                out.push((id, f));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// (snapshot id, volume id, file) of every snapshot.
    fn snapshots(&self) -> Result<Vec<(String, String, Found)>, StorageError> {
        let mut out = Vec::new();
        for name in self.entries()? {
            let Some((snap, vol)) = name.to_str().and_then(parse_snapshot_file_name) else {
                continue;
            };
            if let Some(f) = stat(&self.image_dir.join(&name))? {
                out.push((snap, vol, f));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn find_snapshot(&self, snapshot_id: &str) -> Result<Option<(String, Found)>, StorageError> {
        Ok(self
            .snapshots()?
            .into_iter()
            .find(|(s, _, _)| s == snapshot_id)
            .map(|(_, v, f)| (v, f)))
    }

    fn existing(&self, volume_id: &str) -> Result<Found, StorageError> {
        stat(&self.volume_path(volume_id))?
            .ok_or_else(|| StorageError::NotFound(format!("volume {volume_id}")))
    }

    fn pool(&self) -> Result<PoolCapacity, StorageError> {
        let st = rustix::fs::statvfs(&self.image_dir)
            .map_err(|e| StorageError::Io(format!("statvfs {}: {e}", self.image_dir.display())))?;
        let total = st.f_blocks.saturating_mul(st.f_frsize);
        let avail = st.f_bavail.saturating_mul(st.f_frsize);
        // Sparse volumes may still grow into their full size: that space is promised.
        let promised: u64 = self
            .volumes()?
            .iter()
            .map(|(_, f)| f.len.saturating_sub(f.allocated))
            .sum();
        Ok(PoolCapacity {
            total_bytes: total,
            free_bytes: avail.saturating_sub(promised),
        })
    }

    fn info(
        &self,
        volume_id: &str,
        f: &Found,
        table: &[MountEntry],
    ) -> Result<VolumeInfo, StorageError> {
        Ok(VolumeInfo {
            volume_id: volume_id.to_owned(),
            size_bytes: f.len,
            formatted: matches!(mount::probe_fs(&f.path)?, mount::FsProbe::Ext { .. }),
            mounted: mount::mount_at(table, &self.mountpoint(volume_id)).is_some(),
            path: f.path.clone(),
        })
    }

    fn snapshot_info(snapshot_id: &str, volume_id: &str, f: &Found) -> SnapshotInfo {
        SnapshotInfo {
            snapshot_id: snapshot_id.to_owned(),
            volume_id: volume_id.to_owned(),
            size_bytes: f.len,
            path: f.path.clone(),
        }
    }

    /// The mount of `volume_id`, checked to be its own image on a loop device.
    fn own_mount(&self, volume_id: &str) -> Result<Option<MountEntry>, StorageError> {
        let mp = self.mountpoint(volume_id);
        let Some(m) = mount::mount_at(&mount::mount_table()?, &mp) else {
            return Ok(None);
        };
        let loops = mount::loop_devices_of(&self.volume_path(volume_id));
        if !loops.iter().any(|l| Path::new(&m.source) == l) {
            return Err(StorageError::Io(format!(
                "{} is mounted from {}, not from volume {volume_id}'s image",
                mp.display(),
                m.source
            )));
        }
        Ok(Some(m))
    }

    /// Copies `from` to the temporary `tmp` (sparse, reflinked where possible), then renames
    /// it to `to`; removes the temporary file on failure.
    async fn copy_into_place(
        &self,
        from: &Path,
        tmp: &Path,
        to: &Path,
    ) -> Result<(), StorageError> {
        remove_if_exists(tmp)?;
        let args: Vec<&std::ffi::OsStr> = vec![
            "--reflink=auto".as_ref(),
            "--sparse=always".as_ref(),
            "--".as_ref(),
            from.as_os_str(),
            tmp.as_os_str(),
        ];
        let r = Cmd::new("cp").args(args).run().await.and_then(|_| {
            fs::rename(tmp, to).map_err(io_err(format_args!("renaming to {}", to.display())))
        });
        if r.is_err() {
            let _ = fs::remove_file(tmp);
        }
        r
    }
}

#[async_trait]
impl VolumeBackend for FileBackend {
    fn kind(&self) -> &'static str {
        "file"
    }

    async fn capacity(&self) -> Result<PoolCapacity, StorageError> {
        self.pool()
    }

    async fn create(&self, volume_id: &str, size_bytes: u64) -> Result<VolumeInfo, StorageError> {
        validate_id("volume id", volume_id)?;
        check_new_size(size_bytes)?;
        let _g = self.lock.lock().await;
        if let Some(f) = stat(&self.volume_path(volume_id))? {
            if f.len != size_bytes {
                return Err(StorageError::Invalid(format!(
                    "volume {volume_id} already exists with {} bytes",
                    f.len
                )));
            }
            return self.info(volume_id, &f, &mount::mount_table()?);
        }
        check_fits(size_bytes, self.pool()?.free_bytes)?;
        let tmp = self.tmp_path("create", volume_id);
        let path = self.volume_path(volume_id);
        let r = (|| {
            let f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.set_len(size_bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        })();
        if let Err(e) = r {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(format_args!("creating volume {volume_id}"))(e));
        }
        self.info(volume_id, &self.existing(volume_id)?, &[])
    }

    async fn delete(&self, volume_id: &str) -> Result<(), StorageError> {
        validate_id("volume id", volume_id)?;
        let _g = self.lock.lock().await;
        let path = self.volume_path(volume_id);
        let mp = self.mountpoint(volume_id);
        if mount::mount_at(&mount::mount_table()?, &mp).is_some() {
            return Err(StorageError::InUse(format!(
                "volume {volume_id} is mounted at {}; detach it from its instance (unmount) \
                 first",
                mp.display()
            )));
        }
        if let Some(dev) = mount::loop_devices_of(&path).first() {
            return Err(StorageError::InUse(format!(
                "volume {volume_id} is attached to {}; detach it first",
                dev.display()
            )));
        }
        remove_if_exists(&path)?;
        let _ = fs::remove_dir(&mp);
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
        let f = self.existing(volume_id)?;
        if new_size_bytes < f.len {
            return Err(StorageError::Invalid(format!(
                "volumes only grow: volume {volume_id} has {} bytes, {new_size_bytes} asked",
                f.len
            )));
        }
        if new_size_bytes > f.len {
            check_fits(new_size_bytes - f.len, self.pool()?.free_bytes)?;
            fs::OpenOptions::new()
                .write(true)
                .open(&f.path)
                .and_then(|file| file.set_len(new_size_bytes))
                .map_err(io_err(format_args!("growing volume {volume_id}")))?;
        }
        match self.own_mount(volume_id)? {
            Some(m) => {
                // Tell the loop device about the new size, then grow online.
                Cmd::new("losetup").arg("-c").arg(&m.source).run().await?;
                mount::grow_ext4(Path::new(&m.source), new_size_bytes, true).await?;
            }
            None => mount::grow_ext4(&f.path, new_size_bytes, false).await?,
        }
        self.info(
            volume_id,
            &self.existing(volume_id)?,
            &mount::mount_table()?,
        )
    }

    async fn snapshot(
        &self,
        volume_id: &str,
        snapshot_id: &str,
    ) -> Result<SnapshotInfo, StorageError> {
        validate_id("volume id", volume_id)?;
        validate_id("snapshot id", snapshot_id)?;
        let _g = self.lock.lock().await;
        if let Some((vol, f)) = self.find_snapshot(snapshot_id)? {
            if vol != volume_id {
                return Err(StorageError::Invalid(format!(
                    "snapshot {snapshot_id} already exists, of volume {vol}"
                )));
            }
            return Ok(Self::snapshot_info(snapshot_id, &vol, &f));
        }
        let src = self.existing(volume_id)?;
        check_fits(src.allocated, self.pool()?.free_bytes)?;
        let dest = self
            .image_dir
            .join(snapshot_file_name(snapshot_id, volume_id));
        let tmp = self.tmp_path("snap", snapshot_id);
        let mp = self.own_mount(volume_id)?.map(|m| m.mountpoint);
        mount::with_frozen(mp.as_deref(), || {
            self.copy_into_place(&src.path, &tmp, &dest)
        })
        .await?;
        let f = stat(&dest)?.ok_or_else(|| StorageError::Io("snapshot vanished".into()))?;
        Ok(Self::snapshot_info(snapshot_id, volume_id, &f))
    }

    async fn delete_snapshot(&self, snapshot_id: &str) -> Result<(), StorageError> {
        validate_id("snapshot id", snapshot_id)?;
        let _g = self.lock.lock().await;
        if let Some((_, f)) = self.find_snapshot(snapshot_id)? {
            remove_if_exists(&f.path)?;
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
        let (_, snap) = self
            .find_snapshot(snapshot_id)?
            .ok_or_else(|| StorageError::NotFound(format!("snapshot {snapshot_id}")))?;
        let dest = self.volume_path(new_volume_id);
        if let Some(f) = stat(&dest)? {
            if f.len != snap.len {
                return Err(StorageError::Invalid(format!(
                    "volume {new_volume_id} already exists with {} bytes",
                    f.len
                )));
            }
            return self.info(new_volume_id, &f, &mount::mount_table()?);
        }
        // The new volume may grow into its full size.
        check_fits(snap.len, self.pool()?.free_bytes)?;
        let tmp = self.tmp_path("restore", new_volume_id);
        self.copy_into_place(&snap.path, &tmp, &dest).await?;
        self.info(new_volume_id, &self.existing(new_volume_id)?, &[])
    }

    async fn get(&self, volume_id: &str) -> Result<VolumeInfo, StorageError> {
        validate_id("volume id", volume_id)?;
        self.info(
            volume_id,
            &self.existing(volume_id)?,
            &mount::mount_table()?,
        )
    }

    async fn list(&self) -> Result<Vec<VolumeInfo>, StorageError> {
        let table = mount::mount_table()?;
        self.volumes()?
            .iter()
            .map(|(id, f)| self.info(id, f, &table))
            .collect()
    }

    async fn list_snapshots(&self) -> Result<Vec<SnapshotInfo>, StorageError> {
        Ok(self
            .snapshots()?
            .iter()
            .map(|(s, v, f)| Self::snapshot_info(s, v, f))
            .collect())
    }

    async fn mount(&self, volume_id: &str) -> Result<PathBuf, StorageError> {
        validate_id("volume id", volume_id)?;
        let _g = self.lock.lock().await;
        let f = self.existing(volume_id)?;
        let mp = self.mountpoint(volume_id);
        if self.own_mount(volume_id)?.is_some() {
            return Ok(mp);
        }
        mount::format_ext4(&f.path, volume_id).await?;
        // Growth that could not be done online (see `resize`) happens now.
        mount::grow_ext4(&f.path, f.len, false).await?;
        if let Err(e) = mount::mount_ext4(&f.path, &mp, true).await {
            mount::release_loops(&f.path).await?;
            return Err(e);
        }
        Ok(mp)
    }

    async fn unmount(&self, volume_id: &str) -> Result<(), StorageError> {
        validate_id("volume id", volume_id)?;
        let _g = self.lock.lock().await;
        mount::umount_all(&self.mountpoint(volume_id), volume_id).await?;
        mount::release_loops(&self.volume_path(volume_id)).await
    }

    async fn mounted(&self, volume_id: &str) -> Result<bool, StorageError> {
        validate_id("volume id", volume_id)?;
        Ok(mount::mount_at(&mount::mount_table()?, &self.mountpoint(volume_id)).is_some())
    }
}
