//! The reconciler's small persistent memory: for each instance, the last `change_generation`
//! whose start/stop the agent has carried out (or found already satisfied). It survives agent
//! restarts so a container that exited on its own is not restarted by a freshly started agent.

use crate::fsutil::atomic_write;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// File name inside the data dir.
pub const STATE_FILE: &str = "reconciler-state.json";

#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    /// instance id → last acted change_generation.
    acted: BTreeMap<String, u64>,
}

/// Last acted change generation per instance, persisted atomically on `flush`.
#[derive(Debug)]
pub struct ActedStore {
    path: PathBuf,
    acted: BTreeMap<String, u64>,
    dirty: bool,
}

impl ActedStore {
    /// Loads the file; a missing file is an empty store, a corrupt one is logged and reset.
    pub fn load(path: &Path) -> io::Result<Self> {
        let acted = match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice::<StateFile>(&bytes) {
                Ok(f) => f.acted,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "corrupt reconciler state file; starting empty");
                    BTreeMap::new()
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        Ok(Self {
            path: path.to_owned(),
            acted,
            dirty: false,
        })
    }

    /// Last acted change generation of `instance_id` (0 = never).
    pub fn get(&self, instance_id: &str) -> u64 {
        self.acted.get(instance_id).copied().unwrap_or(0)
    }

    /// Records that `change_generation` of `instance_id` has been carried out.
    pub fn mark(&mut self, instance_id: &str, change_generation: u64) {
        if self.get(instance_id) < change_generation {
            self.acted.insert(instance_id.to_owned(), change_generation);
            self.dirty = true;
        }
    }

    /// Instances with a recorded generation.
    pub fn ids(&self) -> Vec<String> {
        self.acted.keys().cloned().collect()
    }

    /// Drops an instance that is gone from the node.
    pub fn forget(&mut self, instance_id: &str) {
        if self.acted.remove(instance_id).is_some() {
            self.dirty = true;
        }
    }

    /// Writes the file if anything changed, on the blocking pool: the write ends with an
    /// fsync, which must not hold up an async worker thread (many simulated agents share
    /// two of them).
    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let file = StateFile {
            acted: self.acted.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(io::Error::other)?;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || atomic_write(&path, &bytes, 0o600))
            .await
            .map_err(io::Error::other)??;
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn marks_only_forward_persists_and_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        let mut s = ActedStore::load(&path).unwrap();
        assert_eq!(s.get("a"), 0);
        s.mark("a", 5);
        s.mark("a", 3);
        s.mark("b", 1);
        assert_eq!(s.get("a"), 5);
        s.flush().await.unwrap();
        let mut again = ActedStore::load(&path).unwrap();
        assert_eq!(again.get("a"), 5);
        assert_eq!(again.get("b"), 1);
        again.forget("a");
        again.flush().await.unwrap();
        assert_eq!(ActedStore::load(&path).unwrap().get("a"), 0);
    }

    #[test]
    fn corrupt_file_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        std::fs::write(&path, "{oops").unwrap();
        assert_eq!(ActedStore::load(&path).unwrap().get("a"), 0);
    }
}
