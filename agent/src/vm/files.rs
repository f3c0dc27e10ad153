//! Per-VM files in `<vm dir>/<instance id>/`: the root disk (a qcow2 overlay on the image,
//! `qemu-img create -b`), the cloud-init NoCloud seed (an ISO labelled `cidata` holding
//! `meta-data`, `user-data` and `network-config`, made with `genisoimage`), and the serial
//! console log. Commands run from argument vectors (no shell); instance ids are checked before
//! they become paths.

use super::VmError;
use std::path::{Path, PathBuf};
use tokio::process::Command;

/// The image a VM's root disk is an overlay on (and, for kernel images, how to boot it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VmImage {
    pub image_id: String,
    /// The base disk on this node (qcow2 or raw).
    pub path: String,
    pub format: String,
    /// Direct kernel boot (empty: boot the disk).
    pub kernel: String,
    pub initrd: String,
    pub cmdline: String,
}

/// The cloud-init seed's content.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Seed {
    pub instance_id: String,
    pub hostname: String,
    /// `#cloud-config` or a script; may hold secrets (never logged).
    pub user_data: String,
    pub network_config: String,
}

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seed")
            .field("instance_id", &self.instance_id)
            .field("hostname", &self.hostname)
            .field("user_data_bytes", &self.user_data.len())
            .finish()
    }
}

/// Where VM files live on this node.
#[derive(Debug, Clone)]
pub struct VmFiles {
    dir: PathBuf,
}

/// Paths of one VM's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmPaths {
    pub root_disk: PathBuf,
    pub seed_iso: PathBuf,
    pub serial_log: PathBuf,
}

/// The host tools per-VM files need (`qemu-img`, `genisoimage`) that do not run here.
pub fn missing_tools() -> Vec<&'static str> {
    ["qemu-img", "genisoimage"]
        .into_iter()
        .filter(|t| {
            !std::process::Command::new(t)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect()
}

fn safe_id(id: &str) -> Result<&str, VmError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(id)
    } else {
        Err(VmError::Invalid(format!(
            "instance id ({} bytes) is not usable in a path",
            id.len()
        )))
    }
}

async fn run(program: &str, args: &[&std::ffi::OsStr]) -> Result<(), VmError> {
    let out = Command::new(program)
        .args(args)
        .output()
        .await
        .map_err(|e| VmError::Io(format!("cannot run {program}: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(VmError::Command {
        cmd: program.to_owned(),
        status: out.status.to_string(),
        stderr: stderr.trim().chars().take(400).collect(),
    })
}

fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> VmError {
    move |e| VmError::Io(format!("{what}: {e}"))
}

impl VmFiles {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// This node's own subdirectory: agents sharing a VM directory (and a libvirtd) never see,
    /// or clean up, each other's files.
    pub fn for_node(&self, node_id: &str) -> Self {
        match safe_id(node_id) {
            Ok(n) => Self::new(self.dir.join(n)),
            Err(_) => self.clone(),
        }
    }

    pub fn paths(&self, instance_id: &str) -> Result<VmPaths, VmError> {
        let d = self.dir.join(safe_id(instance_id)?);
        Ok(VmPaths {
            root_disk: d.join("root.qcow2"),
            seed_iso: d.join("seed.iso"),
            serial_log: d.join("serial.log"),
        })
    }

    /// Creates what is missing: the overlay (on `image`, `disk_gb` large) and the seed.
    /// Idempotent; a failure leaves no half-written file under its final name.
    pub async fn prepare(
        &self,
        image: &VmImage,
        disk_gb: u64,
        seed: &Seed,
    ) -> Result<VmPaths, VmError> {
        let p = self.paths(&seed.instance_id)?;
        let dir = self.dir.join(&seed.instance_id);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(io(format!("creating {}", dir.display())))?;
        if tokio::fs::metadata(&p.root_disk).await.is_err() {
            for (what, f) in [
                ("file", &image.path),
                ("kernel", &image.kernel),
                ("initrd", &image.initrd),
            ] {
                if f.is_empty() && what != "file" {
                    continue;
                }
                self.check_image_file(&image.image_id, what, f).await?;
            }
            let format = if image.format == "raw" {
                "raw"
            } else {
                "qcow2"
            };
            let tmp = dir.join("root.qcow2.tmp");
            let size = format!("{disk_gb}G");
            run(
                "qemu-img",
                &[
                    "create".as_ref(),
                    "-q".as_ref(),
                    "-f".as_ref(),
                    "qcow2".as_ref(),
                    "-F".as_ref(),
                    format.as_ref(),
                    "-b".as_ref(),
                    image.path.as_ref(),
                    tmp.as_os_str(),
                    size.as_ref(),
                ],
            )
            .await?;
            tokio::fs::rename(&tmp, &p.root_disk)
                .await
                .map_err(io("placing the root disk"))?;
        }
        if tokio::fs::metadata(&p.seed_iso).await.is_err() {
            self.write_seed(&dir, &p.seed_iso, seed).await?;
        }
        Ok(p)
    }

    /// An image file must be a regular file (no device, no symlink) outside the VM directory
    /// (never another VM's disk).
    async fn check_image_file(&self, image: &str, what: &str, f: &str) -> Result<(), VmError> {
        let meta = tokio::fs::symlink_metadata(f).await.map_err(|_| {
            VmError::Invalid(format!("image {image}: its {what} {f} is not on this node"))
        })?;
        let inside = Path::new(f).starts_with(&self.dir);
        if !meta.is_file() || inside {
            return Err(VmError::Invalid(format!(
                "image {image}: its {what} {f} is not a regular file outside the VM directory"
            )));
        }
        Ok(())
    }

    async fn write_seed(&self, dir: &Path, iso: &Path, seed: &Seed) -> Result<(), VmError> {
        let src = dir.join("seed");
        tokio::fs::create_dir_all(&src)
            .await
            .map_err(io("creating the seed directory"))?;
        let meta = format!(
            "instance-id: {}\nlocal-hostname: {}\n",
            seed.instance_id, seed.hostname
        );
        let files = [
            ("meta-data", meta.as_str()),
            ("user-data", seed.user_data.as_str()),
            ("network-config", seed.network_config.as_str()),
        ];
        for (name, content) in files {
            tokio::fs::write(src.join(name), content)
                .await
                .map_err(io(format!("writing the seed's {name}")))?;
        }
        let tmp = dir.join("seed.iso.tmp");
        // user-data may hold secrets: nobody but root (and QEMU, which libvirt grants) reads it.
        if let Ok(f) = std::fs::File::create(&tmp) {
            use std::os::unix::fs::PermissionsExt;
            let _ = f.set_permissions(std::fs::Permissions::from_mode(0o600));
        }
        let result = run(
            "genisoimage",
            &[
                "-quiet".as_ref(),
                "-output".as_ref(),
                tmp.as_os_str(),
                "-volid".as_ref(),
                "cidata".as_ref(),
                "-joliet".as_ref(),
                "-rock".as_ref(),
                src.join("user-data").as_os_str(),
                src.join("meta-data").as_os_str(),
                src.join("network-config").as_os_str(),
            ],
        )
        .await;
        // The sources may hold secrets: they go whatever happened.
        let _ = tokio::fs::remove_dir_all(&src).await;
        result?;
        tokio::fs::rename(&tmp, iso)
            .await
            .map_err(io("placing the seed"))
    }

    /// Removes every file of a VM (nothing to do when they are gone).
    pub async fn remove(&self, instance_id: &str) -> Result<(), VmError> {
        let dir = self.dir.join(safe_id(instance_id)?);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(VmError::Io(format!("removing {}: {e}", dir.display()))),
        }
    }

    /// Instance ids that have a directory here (to find leftovers).
    pub async fn instances(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Ok(mut rd) = tokio::fs::read_dir(&self.dir).await {
            while let Ok(Some(e)) = rd.next_entry().await {
                if let Some(n) = e.file_name().to_str()
                    && safe_id(n).is_ok()
                {
                    out.push(n.to_owned());
                }
            }
        }
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_are_not_plain_never_become_paths() {
        let f = VmFiles::new("/vms");
        assert_eq!(
            f.paths("01a2-b").unwrap().root_disk,
            PathBuf::from("/vms/01a2-b/root.qcow2")
        );
        for bad in ["", "../x", "a/b", "a b", "."] {
            assert!(f.paths(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn seeds_never_show_user_data_in_debug() {
        let s = Seed {
            user_data: "password: hunter2".into(),
            ..Default::default()
        };
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn a_missing_image_file_is_a_clear_error_and_leaves_no_disk() {
        let dir = tempfile::tempdir().unwrap();
        let f = VmFiles::new(dir.path());
        let image = VmImage {
            image_id: "img-1".into(),
            path: "/nonexistent/base.qcow2".into(),
            format: "qcow2".into(),
            ..Default::default()
        };
        let seed = Seed {
            instance_id: "i1".into(),
            ..Default::default()
        };
        let e = f.prepare(&image, 1, &seed).await.unwrap_err();
        assert!(e.to_string().contains("not on this node"), "{e}");
        assert!(!f.paths("i1").unwrap().root_disk.exists());
        f.remove("i1").await.unwrap();
        assert!(f.instances().await.is_empty());
    }
}
