//! Typed client calls for snapshots.

use crate::Method;
use crate::client::{Client, ClientError};

impl Client {
    /// Takes a snapshot of a volume (status `creating` until its node has taken it).
    pub async fn snapshot_create(
        &self,
        req: &crate::CreateSnapshotRequest,
    ) -> Result<crate::Snapshot, ClientError> {
        self.post_json(&["v1", "snapshots"], req).await
    }

    pub async fn snapshot_list(&self) -> Result<Vec<crate::Snapshot>, ClientError> {
        self.list_all(&["v1", "snapshots"]).await
    }

    /// By id or name.
    pub async fn snapshot_get(&self, snapshot: &str) -> Result<crate::Snapshot, ClientError> {
        self.get_json(&["v1", "snapshots", snapshot]).await
    }

    /// Starts the deletion (status `deleting`; gone once its node has deleted it).
    pub async fn snapshot_delete(&self, snapshot: &str) -> Result<crate::Snapshot, ClientError> {
        self.json(self.request(Method::DELETE, self.url(&["v1", "snapshots", snapshot])))
            .await
    }

    /// Creates a NEW volume with the snapshot's content (status `creating` until restored).
    pub async fn snapshot_restore(
        &self,
        snapshot: &str,
        req: &crate::RestoreSnapshotRequest,
    ) -> Result<crate::Volume, ClientError> {
        self.post_json(&["v1", "snapshots", snapshot, "restore"], req)
            .await
    }
}
