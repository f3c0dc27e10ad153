//! Typed client calls for volumes.

use crate::Method;
use crate::client::{Client, ClientError};

impl Client {
    // ------------------------------------------------------------------ volumes

    pub async fn volume_create(
        &self,
        req: &crate::CreateVolumeRequest,
    ) -> Result<crate::Volume, ClientError> {
        self.post_json(&["v1", "volumes"], req).await
    }

    pub async fn volume_list(&self) -> Result<Vec<crate::Volume>, ClientError> {
        self.list_all(&["v1", "volumes"]).await
    }

    /// By id or name.
    pub async fn volume_get(&self, volume: &str) -> Result<crate::Volume, ClientError> {
        self.get_json(&["v1", "volumes", volume]).await
    }

    /// Starts the deletion (status `deleting`; gone once its node has deleted it).
    pub async fn volume_delete(&self, volume: &str) -> Result<crate::Volume, ClientError> {
        self.json(self.request(Method::DELETE, self.url(&["v1", "volumes", volume])))
            .await
    }

    /// Grows a volume (its node grows the disk and, when formatted, the filesystem).
    pub async fn volume_resize(
        &self,
        volume: &str,
        size_gb: u64,
    ) -> Result<crate::Volume, ClientError> {
        self.post_json(
            &["v1", "volumes", volume, "resize"],
            &crate::ResizeVolumeRequest { size_gb },
        )
        .await
    }

    /// Mounts a volume in an instance (its container is recreated, same instance id).
    pub async fn volume_attach(
        &self,
        volume: &str,
        instance: &str,
        mount_path: &str,
    ) -> Result<crate::Volume, ClientError> {
        self.post_json(
            &["v1", "volumes", volume, "attach"],
            &crate::AttachVolumeRequest {
                instance_id: instance.to_owned(),
                mount_path: mount_path.to_owned(),
            },
        )
        .await
    }

    /// Unmounts a volume from its instance (its container is recreated without it).
    pub async fn volume_detach(&self, volume: &str) -> Result<crate::Volume, ClientError> {
        self.post_json(&["v1", "volumes", volume, "detach"], &serde_json::json!({}))
            .await
    }
}
