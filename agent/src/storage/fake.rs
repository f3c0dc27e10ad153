//! In-memory volumes with the contract of the real backends: ids and sizes validated, pool
//! space checked, grow-only resize, refusing to delete mounted volumes, snapshots restored
//! into new volumes, everything idempotent. `lvm_like()` also keeps LVM's rule that a volume
//! with snapshots cannot be deleted. A volume's "content" is a byte string that tests write
//! and read (only while mounted, like files under the mountpoint); tests can make the next
//! call fail.

use super::model::check_fits;
use super::{
    PoolCapacity, SnapshotInfo, StorageError, VolumeBackend, VolumeInfo, check_new_size,
    validate_id,
};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Debug, Clone)]
struct Vol {
    size: u64,
    formatted: bool,
    mounted: bool,
    data: Vec<u8>,
}

#[derive(Debug, Clone)]
struct Snap {
    volume_id: String,
    size: u64,
    data: Vec<u8>,
}

#[derive(Debug)]
struct State {
    kind: &'static str,
    total: u64,
    mount_dir: PathBuf,
    volumes: BTreeMap<String, Vol>,
    snapshots: BTreeMap<String, Snap>,
    fail_next: Option<StorageError>,
}

/// Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct FakeVolumes {
    state: Arc<Mutex<State>>,
}

impl FakeVolumes {
    /// A `file`-like pool of `total_bytes`, mounting under `/fake/volumes`.
    pub fn new(total_bytes: u64) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                kind: "file",
                total: total_bytes,
                mount_dir: PathBuf::from("/fake/volumes"),
                volumes: BTreeMap::new(),
                snapshots: BTreeMap::new(),
                fail_next: None,
            })),
        }
    }

    /// An `lvm`-like pool: snapshots depend on their volume.
    pub fn lvm_like(total_bytes: u64) -> Self {
        let f = Self::new(total_bytes);
        f.lock().kind = "lvm";
        f
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock only happens in a failing test; keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the next call that changes something fail with `error` (without changing
    /// anything).
    pub fn fail_next(&self, error: StorageError) {
        self.lock().fail_next = Some(error);
    }

    /// Replaces a mounted volume's content (what an instance writes under the mountpoint).
    pub fn write(&self, volume_id: &str, data: &[u8]) -> Result<(), StorageError> {
        let mut st = self.lock();
        let v = st
            .volumes
            .get_mut(volume_id)
            .ok_or_else(|| StorageError::NotFound(format!("volume {volume_id}")))?;
        if !v.mounted {
            return Err(StorageError::Invalid(format!(
                "volume {volume_id} is not mounted"
            )));
        }
        v.data = data.to_vec();
        Ok(())
    }

    /// A mounted volume's content.
    pub fn read(&self, volume_id: &str) -> Result<Vec<u8>, StorageError> {
        let st = self.lock();
        match st.volumes.get(volume_id) {
            Some(v) if v.mounted => Ok(v.data.clone()),
            Some(_) => Err(StorageError::Invalid(format!(
                "volume {volume_id} is not mounted"
            ))),
            None => Err(StorageError::NotFound(format!("volume {volume_id}"))),
        }
    }
}

impl State {
    fn free(&self) -> u64 {
        let used: u64 = self.volumes.values().map(|v| v.size).sum::<u64>()
            + self
                .snapshots
                .values()
                .map(|s| s.data.len() as u64)
                .sum::<u64>();
        self.total.saturating_sub(used)
    }

    fn take_failure(&mut self) -> Result<(), StorageError> {
        self.fail_next.take().map_or(Ok(()), Err)
    }

    fn info(&self, id: &str) -> Result<VolumeInfo, StorageError> {
        let v = self
            .volumes
            .get(id)
            .ok_or_else(|| StorageError::NotFound(format!("volume {id}")))?;
        Ok(VolumeInfo {
            volume_id: id.to_owned(),
            size_bytes: v.size,
            formatted: v.formatted,
            mounted: v.mounted,
            path: PathBuf::from(format!("/fake/images/vol-{id}")),
        })
    }

    fn snap_info(id: &str, s: &Snap) -> SnapshotInfo {
        SnapshotInfo {
            snapshot_id: id.to_owned(),
            volume_id: s.volume_id.clone(),
            size_bytes: s.size,
            path: PathBuf::from(format!("/fake/images/snap-{id}")),
        }
    }
}

#[async_trait]
impl VolumeBackend for FakeVolumes {
    fn kind(&self) -> &'static str {
        self.lock().kind
    }

    async fn capacity(&self) -> Result<PoolCapacity, StorageError> {
        let st = self.lock();
        Ok(PoolCapacity {
            total_bytes: st.total,
            free_bytes: st.free(),
        })
    }

    async fn create(&self, volume_id: &str, size_bytes: u64) -> Result<VolumeInfo, StorageError> {
        validate_id("volume id", volume_id)?;
        check_new_size(size_bytes)?;
        let mut st = self.lock();
        st.take_failure()?;
        if let Some(v) = st.volumes.get(volume_id) {
            if v.size != size_bytes {
                return Err(StorageError::Invalid(format!(
                    "volume {volume_id} already exists with {} bytes",
                    v.size
                )));
            }
            return st.info(volume_id);
        }
        check_fits(size_bytes, st.free())?;
        let vol = Vol {
            size: size_bytes,
            formatted: false,
            mounted: false,
            data: Vec::new(),
        };
        st.volumes.insert(volume_id.to_owned(), vol);
        st.info(volume_id)
    }

    async fn delete(&self, volume_id: &str) -> Result<(), StorageError> {
        validate_id("volume id", volume_id)?;
        let mut st = self.lock();
        st.take_failure()?;
        let Some(v) = st.volumes.get(volume_id) else {
            return Ok(());
        };
        if v.mounted {
            return Err(StorageError::InUse(format!(
                "volume {volume_id} is mounted; detach it from its instance (unmount) first"
            )));
        }
        if st.kind == "lvm" && st.snapshots.values().any(|s| s.volume_id == volume_id) {
            return Err(StorageError::InUse(format!(
                "volume {volume_id} has snapshots that depend on it; delete them first"
            )));
        }
        st.volumes.remove(volume_id);
        Ok(())
    }

    async fn resize(
        &self,
        volume_id: &str,
        new_size_bytes: u64,
    ) -> Result<VolumeInfo, StorageError> {
        validate_id("volume id", volume_id)?;
        check_new_size(new_size_bytes)?;
        let mut st = self.lock();
        st.take_failure()?;
        let size = st.info(volume_id)?.size_bytes;
        if new_size_bytes < size {
            return Err(StorageError::Invalid(format!(
                "volumes only grow: volume {volume_id} has {size} bytes, {new_size_bytes} asked"
            )));
        }
        check_fits(new_size_bytes - size, st.free())?;
        if let Some(v) = st.volumes.get_mut(volume_id) {
            v.size = new_size_bytes;
        }
        st.info(volume_id)
    }

    async fn snapshot(
        &self,
        volume_id: &str,
        snapshot_id: &str,
    ) -> Result<SnapshotInfo, StorageError> {
        validate_id("volume id", volume_id)?;
        validate_id("snapshot id", snapshot_id)?;
        let mut st = self.lock();
        st.take_failure()?;
        if let Some(s) = st.snapshots.get(snapshot_id) {
            if s.volume_id != volume_id {
                return Err(StorageError::Invalid(format!(
                    "snapshot {snapshot_id} already exists, of volume {}",
                    s.volume_id
                )));
            }
            return Ok(State::snap_info(snapshot_id, s));
        }
        let v = st
            .volumes
            .get(volume_id)
            .ok_or_else(|| StorageError::NotFound(format!("volume {volume_id}")))?;
        let snap = Snap {
            volume_id: volume_id.to_owned(),
            size: v.size,
            data: v.data.clone(),
        };
        check_fits(snap.data.len() as u64, st.free())?;
        let info = State::snap_info(snapshot_id, &snap);
        st.snapshots.insert(snapshot_id.to_owned(), snap);
        Ok(info)
    }

    async fn delete_snapshot(&self, snapshot_id: &str) -> Result<(), StorageError> {
        validate_id("snapshot id", snapshot_id)?;
        let mut st = self.lock();
        st.take_failure()?;
        st.snapshots.remove(snapshot_id);
        Ok(())
    }

    async fn restore(
        &self,
        snapshot_id: &str,
        new_volume_id: &str,
    ) -> Result<VolumeInfo, StorageError> {
        validate_id("snapshot id", snapshot_id)?;
        validate_id("volume id", new_volume_id)?;
        let mut st = self.lock();
        st.take_failure()?;
        let s = st
            .snapshots
            .get(snapshot_id)
            .cloned()
            .ok_or_else(|| StorageError::NotFound(format!("snapshot {snapshot_id}")))?;
        if let Some(v) = st.volumes.get(new_volume_id) {
            if v.size != s.size {
                return Err(StorageError::Invalid(format!(
                    "volume {new_volume_id} already exists with {} bytes",
                    v.size
                )));
            }
            return st.info(new_volume_id);
        }
        check_fits(s.size, st.free())?;
        let vol = Vol {
            size: s.size,
            formatted: st.volumes.get(&s.volume_id).is_none_or(|v| v.formatted),
            mounted: false,
            data: s.data,
        };
        st.volumes.insert(new_volume_id.to_owned(), vol);
        st.info(new_volume_id)
    }

    async fn get(&self, volume_id: &str) -> Result<VolumeInfo, StorageError> {
        validate_id("volume id", volume_id)?;
        self.lock().info(volume_id)
    }

    async fn list(&self) -> Result<Vec<VolumeInfo>, StorageError> {
        let st = self.lock();
        st.volumes.keys().map(|id| st.info(id)).collect()
    }

    async fn list_snapshots(&self) -> Result<Vec<SnapshotInfo>, StorageError> {
        let st = self.lock();
        Ok(st
            .snapshots
            .iter()
            .map(|(id, s)| State::snap_info(id, s))
            .collect())
    }

    async fn mount(&self, volume_id: &str) -> Result<PathBuf, StorageError> {
        validate_id("volume id", volume_id)?;
        let mut st = self.lock();
        st.take_failure()?;
        let path = st.mount_dir.join(volume_id);
        let v = st
            .volumes
            .get_mut(volume_id)
            .ok_or_else(|| StorageError::NotFound(format!("volume {volume_id}")))?;
        v.formatted = true;
        v.mounted = true;
        Ok(path)
    }

    async fn unmount(&self, volume_id: &str) -> Result<(), StorageError> {
        validate_id("volume id", volume_id)?;
        let mut st = self.lock();
        st.take_failure()?;
        if let Some(v) = st.volumes.get_mut(volume_id) {
            v.mounted = false;
        }
        Ok(())
    }

    async fn mounted(&self, volume_id: &str) -> Result<bool, StorageError> {
        validate_id("volume id", volume_id)?;
        Ok(self
            .lock()
            .volumes
            .get(volume_id)
            .is_some_and(|v| v.mounted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "01a22355-bf78-7117-9e6f-ce93a3165224";
    const B: &str = "0196f1b8-3c1e-7a4b-8d2f-5e6a7b8c9d0e";
    const S: &str = "0196f1b8-3c1e-7a4b-8d2f-000000000001";

    #[tokio::test]
    async fn create_is_checked_and_idempotent() {
        let f = FakeVolumes::new(1000);
        assert!(matches!(
            f.create(A, 0).await,
            Err(StorageError::Invalid(_))
        ));
        assert!(matches!(
            f.create("../x", 1).await,
            Err(StorageError::Invalid(_))
        ));
        assert!(matches!(
            f.create(A, 1001).await,
            Err(StorageError::NoSpace(_))
        ));
        assert!(
            f.list().await.unwrap().is_empty(),
            "refused creates leave nothing"
        );
        let v = f.create(A, 600).await.unwrap();
        assert_eq!((v.size_bytes, v.formatted, v.mounted), (600, false, false));
        assert_eq!(f.create(A, 600).await.unwrap(), v);
        assert!(matches!(
            f.create(A, 700).await,
            Err(StorageError::Invalid(_))
        ));
        assert!(matches!(
            f.create(B, 401).await,
            Err(StorageError::NoSpace(_))
        ));
        assert_eq!(f.capacity().await.unwrap().free_bytes, 400);
        f.fail_next(StorageError::Io("disk on fire".into()));
        assert!(f.create(B, 1).await.is_err());
        assert!(matches!(f.get(B).await, Err(StorageError::NotFound(_))));
    }

    #[tokio::test]
    async fn mount_delete_resize() {
        let f = FakeVolumes::new(1000);
        f.create(A, 100).await.unwrap();
        let p = f.mount(A).await.unwrap();
        assert_eq!(p, f.mount(A).await.unwrap());
        assert!(f.mounted(A).await.unwrap());
        assert!(f.get(A).await.unwrap().formatted);
        assert!(matches!(f.delete(A).await, Err(StorageError::InUse(_))));
        assert!(matches!(
            f.resize(A, 50).await,
            Err(StorageError::Invalid(_))
        ));
        assert!(matches!(
            f.resize(A, 2000).await,
            Err(StorageError::NoSpace(_))
        ));
        assert_eq!(f.resize(A, 300).await.unwrap().size_bytes, 300);
        assert_eq!(f.resize(A, 300).await.unwrap().size_bytes, 300);
        f.unmount(A).await.unwrap();
        f.unmount(A).await.unwrap();
        f.delete(A).await.unwrap();
        f.delete(A).await.unwrap();
        assert!(matches!(f.mount(A).await, Err(StorageError::NotFound(_))));
    }

    #[tokio::test]
    async fn snapshots_restore_into_new_volumes() {
        let f = FakeVolumes::new(10_000);
        f.create(A, 100).await.unwrap();
        f.mount(A).await.unwrap();
        f.write(A, b"old").unwrap();
        let s = f.snapshot(A, S).await.unwrap();
        assert_eq!((s.volume_id.as_str(), s.size_bytes), (A, 100));
        assert_eq!(f.snapshot(A, S).await.unwrap(), s);
        assert!(matches!(
            f.snapshot(B, S).await,
            Err(StorageError::Invalid(_))
        ));
        f.write(A, b"new").unwrap();
        let v = f.restore(S, B).await.unwrap();
        assert_eq!((v.size_bytes, v.mounted), (100, false));
        assert_eq!(f.restore(S, B).await.unwrap(), v);
        f.mount(B).await.unwrap();
        assert_eq!(f.read(B).unwrap(), b"old");
        assert_eq!(f.read(A).unwrap(), b"new");
        f.unmount(A).await.unwrap();
        // file-like: snapshots are independent copies.
        f.delete(A).await.unwrap();
        assert_eq!(f.list_snapshots().await.unwrap().len(), 1);
        f.delete_snapshot(S).await.unwrap();
        f.delete_snapshot(S).await.unwrap();
        assert!(matches!(
            f.restore(S, A).await,
            Err(StorageError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn lvm_like_volumes_keep_their_snapshots() {
        let f = FakeVolumes::lvm_like(10_000);
        assert_eq!(f.kind(), "lvm");
        f.create(A, 100).await.unwrap();
        f.snapshot(A, S).await.unwrap();
        let e = f.delete(A).await.unwrap_err();
        assert!(
            matches!(&e, StorageError::InUse(m) if m.contains("snapshots")),
            "{e}"
        );
        f.delete_snapshot(S).await.unwrap();
        f.delete(A).await.unwrap();
    }
}
