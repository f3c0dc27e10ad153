//! VM images: registration (paths on the nodes, checked for shape only: the nodes check that
//! the files exist when a VM needs them), lookup, and the VM part of new instances.

use super::{Caller, validate};
use crate::app::App;
use crate::error::{Error, Result};
use crate::store::{ImageRecord, StoreError, VmSpecRecord};
use cloud_api::{CreateImageRequest, CreateInstanceRequest, InstanceKind, MAX_USER_DATA_BYTES};

/// Root disks: 1 to 2048 GB, 10 by default.
pub const MAX_DISK_GB: u64 = 2048;
pub const DEFAULT_DISK_GB: u64 = 10;

/// An absolute, normalised path without control characters.
fn node_path(field: &str, p: &str) -> Result<()> {
    let ok = p.starts_with('/')
        && p.len() <= 4096
        && !p.split('/').any(|c| c == "..")
        && !p.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{field}: {p:?} is not an absolute path on the nodes (no '..', no control characters)"
        )))
    }
}

impl App {
    pub async fn image_create(
        &self,
        caller: &Caller,
        req: CreateImageRequest,
    ) -> Result<ImageRecord> {
        validate::name("name", &req.name)?;
        node_path("path", &req.path)?;
        if let Some(k) = &req.kernel {
            node_path("kernel", k)?;
        }
        match (&req.initrd, &req.kernel) {
            (Some(i), Some(_)) => node_path("initrd", i)?,
            (Some(_), None) => {
                return Err(Error::Invalid("initrd: only with kernel".into()));
            }
            _ => {}
        }
        if let Some(c) = &req.cmdline {
            if req.kernel.is_none() {
                return Err(Error::Invalid("cmdline: only with kernel".into()));
            }
            if c.len() > 1024 || c.chars().any(char::is_control) {
                return Err(Error::Invalid(
                    "cmdline: at most 1024 characters, no control characters".into(),
                ));
            }
        }
        let rec = ImageRecord {
            id: cloud_api::ImageId::new().0,
            project_id: caller.project.0,
            name: req.name.clone(),
            path: req.path,
            format: req.format.as_str().to_owned(),
            cmdline: req
                .kernel
                .as_ref()
                .map(|_| req.cmdline.unwrap_or_else(|| "console=ttyS0".into())),
            kernel: req.kernel,
            initrd: req.initrd,
            created_at: chrono::Utc::now(),
            public: req.public.unwrap_or(true),
        };
        self.store.image_insert(&rec).await.map_err(|e| match e {
            StoreError::Duplicate => Error::AlreadyExists(format!(
                "an image named {:?} already exists in this project",
                req.name
            )),
            other => other.into(),
        })?;
        Ok(rec)
    }

    pub async fn image_lookup(&self, caller: &Caller, id_or_name: &str) -> Result<ImageRecord> {
        self.store
            .image_get(caller.project, id_or_name)
            .await
            .map_err(|e| match e {
                StoreError::NotFound => Error::NotFound(format!("image {id_or_name:?} not found")),
                other => other.into(),
            })
    }

    pub async fn image_list(
        &self,
        caller: &Caller,
        after: Option<cloud_api::ImageId>,
        limit: u32,
    ) -> Result<Vec<ImageRecord>> {
        Ok(self
            .store
            .image_list(caller.project, after.map(|a| a.0), limit)
            .await?)
    }

    /// Unregisters an image. VMs created from it keep their copy of what they need.
    pub async fn image_delete(&self, caller: &Caller, id_or_name: &str) -> Result<()> {
        let img = self.image_lookup(caller, id_or_name).await?;
        self.store
            .image_delete(caller.project, img.id)
            .await
            .map_err(|e| match e {
                StoreError::NotFound => Error::NotFound(format!("image {id_or_name:?} not found")),
                other => other.into(),
            })
    }

    /// The VM part of a new instance: checks that VM-only fields go with kind `vm` and that
    /// container-only ones do not, and resolves the image.
    pub async fn vm_spec(
        &self,
        caller: &Caller,
        req: &CreateInstanceRequest,
    ) -> Result<Option<VmSpecRecord>> {
        if req.kind != InstanceKind::Vm {
            if req.disk_gb.is_some() {
                return Err(Error::Invalid(
                    "disk_gb: only for instances of kind vm".into(),
                ));
            }
            if req.user_data.is_some() {
                return Err(Error::Invalid(
                    "user_data: only for instances of kind vm".into(),
                ));
            }
            return Ok(None);
        }
        if !req.command.is_empty() {
            return Err(Error::Invalid(
                "command: VMs run their image's OS; pass commands in user_data".into(),
            ));
        }
        if !req.env.is_empty() {
            return Err(Error::Invalid(
                "env: VMs take their configuration in user_data".into(),
            ));
        }
        for (i, m) in req.volumes.iter().enumerate() {
            super::volumes::vm_device(&format!("volumes[{i}].mount_path"), &m.mount_path)?;
        }
        let disk_gb = req.disk_gb.unwrap_or(DEFAULT_DISK_GB);
        if !(1..=MAX_DISK_GB).contains(&disk_gb) {
            return Err(Error::Invalid(format!(
                "disk_gb: {disk_gb} is out of range: must be between 1 and {MAX_DISK_GB}"
            )));
        }
        let user_data = req.user_data.clone().unwrap_or_default();
        if user_data.len() > MAX_USER_DATA_BYTES {
            return Err(Error::Invalid(format!(
                "user_data: {} bytes is over the limit of {MAX_USER_DATA_BYTES} bytes",
                user_data.len()
            )));
        }
        if user_data.contains('\0') {
            return Err(Error::Invalid(
                "user_data: must not contain NUL bytes".into(),
            ));
        }
        let image = self
            .image_lookup(caller, req.image.trim())
            .await
            .map_err(|e| match e {
                Error::NotFound(m) => Error::Invalid(format!(
                    "image: {m}; register it first with POST /v1/images (cloud image create)"
                )),
                other => other,
            })?;
        Ok(Some(VmSpecRecord {
            image_id: image.id,
            image_name: image.name,
            path: image.path,
            format: image.format,
            kernel: image.kernel,
            initrd: image.initrd,
            cmdline: image.cmdline,
            disk_gb,
            user_data,
        }))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn node_paths_are_absolute_and_plain() {
        assert!(super::node_path("p", "/var/lib/images/debian.qcow2").is_ok());
        for bad in ["", "images/x", "/a/../b", "/a\nb"] {
            assert!(super::node_path("p", bad).is_err(), "{bad:?}");
        }
    }
}
