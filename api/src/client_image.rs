//! Typed client calls for VM images.

use crate::Method;
use crate::client::{Client, ClientError};

impl Client {
    pub async fn image_create(
        &self,
        req: &crate::CreateImageRequest,
    ) -> Result<crate::Image, ClientError> {
        self.post_json(&["v1", "images"], req).await
    }

    pub async fn image_list(&self) -> Result<Vec<crate::Image>, ClientError> {
        self.list_all(&["v1", "images"]).await
    }

    /// By id or name.
    pub async fn image_get(&self, image: &str) -> Result<crate::Image, ClientError> {
        self.get_json(&["v1", "images", image]).await
    }

    /// Unregisters an image (VMs created from it keep running; their disks are overlays on
    /// the file, which stays).
    pub async fn image_delete(&self, image: &str) -> Result<(), ClientError> {
        self.send(self.request(Method::DELETE, self.url(&["v1", "images", image])))
            .await
            .map(drop)
    }
}
