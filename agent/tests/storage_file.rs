//! The real `file` volume backend in a temporary directory: sparse images, ext4 on loop
//! devices, snapshots by copy, online growth, finding everything again after a restart.
//!
//! Tests that mount need root, loop devices and e2fsprogs/util-linux; without them they skip
//! with a printed reason, unless THECLOUD_REQUIRE_STORAGE=1 (CI), in which case they fail.
//! Every test has its own directory, and a Drop guard unmounts and detaches whatever is left
//! under it even when a test fails, so tests run in parallel.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use cloud_agent::storage::{
    FileBackend, FileBackendConfig, StorageError, VolumeBackend, volume_file_name,
};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

fn id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Why this machine cannot mount volumes, if it cannot; panics when CI requires it.
fn cannot_mount() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().map(|o| o.stdout);
    let reason = if String::from_utf8_lossy(&uid.unwrap_or_default()).trim() != "0" {
        Some("not root".to_owned())
    } else if !Path::new("/dev/loop-control").exists() {
        Some("no /dev/loop-control".to_owned())
    } else {
        [
            "mkfs.ext4",
            "resize2fs",
            "e2fsck",
            "losetup",
            "mount",
            "umount",
            "fsfreeze",
        ]
        .iter()
        .find(|t| {
            !["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
                .iter()
                .any(|d| Path::new(d).join(t).exists())
        })
        .map(|t| format!("{t} is not installed (apt-get install e2fsprogs util-linux mount)"))
    };
    match reason {
        Some(r) if std::env::var("THECLOUD_REQUIRE_STORAGE").as_deref() == Ok("1") => {
            panic!("THECLOUD_REQUIRE_STORAGE=1 but volumes cannot be mounted here: {r}")
        }
        Some(r) => {
            eprintln!("SKIPPED: mounting volumes needs root, loop devices and e2fsprogs ({r})");
            Some(r)
        }
        None => None,
    }
}

/// A backend in its own temporary directory; cleans up mounts and loop devices on drop.
struct Env {
    dir: tempfile::TempDir,
    backend: FileBackend,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let backend = FileBackend::new(Self::config_in(dir.path())).unwrap();
        Env { dir, backend }
    }

    fn config_in(dir: &Path) -> FileBackendConfig {
        FileBackendConfig::under(&std::fs::canonicalize(dir).unwrap())
    }

    fn config(&self) -> FileBackendConfig {
        Self::config_in(self.dir.path())
    }

    fn image_names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.config().image_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Loop devices whose backing file is in this test's directory.
    fn loops(&self) -> Vec<String> {
        let out = Command::new("losetup").arg("-a").output().unwrap();
        let dir = self.config().image_dir;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(&*dir.to_string_lossy()))
            .map(|l| l.split(':').next().unwrap_or_default().to_owned())
            .collect()
    }

    /// Asserts (allowing the kernel a moment to run down autoclear devices) that no loop
    /// device is left on this test's images.
    fn assert_no_loops(&self) {
        let deadline = Instant::now() + Duration::from_secs(3);
        while !self.loops().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(self.loops(), Vec::<String>::new(), "loop devices leaked");
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let root = self.config().mount_dir;
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for line in mounts.lines() {
            if let Some(mp) = line.split(' ').nth(4)
                && Path::new(mp).starts_with(&root)
            {
                let _ = Command::new("umount").arg("-l").arg(mp).status();
            }
        }
        for dev in self.loops() {
            let _ = Command::new("losetup").arg("-d").arg(dev).status();
        }
    }
}

fn write(mp: &Path, name: &str, data: &[u8]) {
    let p = mp.join(name);
    std::fs::write(&p, data).unwrap();
    std::fs::File::open(&p).unwrap().sync_all().unwrap();
}

fn fs_size(mp: &Path) -> u64 {
    let st = rustix::fs::statvfs(mp).unwrap();
    st.f_blocks * st.f_frsize
}

fn allocated(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).unwrap().blocks() * 512
}

#[tokio::test]
async fn create_is_sparse_checked_and_idempotent() {
    let env = Env::new();
    let b = &env.backend;
    assert_eq!(b.kind(), "file");
    let before = b.capacity().await.unwrap();
    assert!(before.total_bytes > 0 && before.free_bytes <= before.total_bytes);

    let a = id();
    let v = b.create(&a, 1 << 30).await.unwrap();
    assert_eq!(
        (v.size_bytes, v.formatted, v.mounted),
        (1 << 30, false, false)
    );
    assert_eq!(
        v.path,
        env.config().image_dir.join(volume_file_name(&a, ".raw"))
    );
    assert!(
        allocated(&v.path) < MIB,
        "sparse: {} bytes allocated",
        allocated(&v.path)
    );
    // The sparse volume's size is promised: free space drops by about 1 GiB.
    let after = b.capacity().await.unwrap();
    let dropped = before.free_bytes.abs_diff(after.free_bytes);
    assert!(
        dropped.abs_diff(1 << 30) < 64 * MIB,
        "free dropped by {dropped}"
    );

    assert_eq!(
        b.create(&a, 1 << 30).await.unwrap(),
        v,
        "same id + size: no-op"
    );
    assert!(matches!(
        b.create(&a, 2 << 30).await,
        Err(StorageError::Invalid(_))
    ));
    assert!(matches!(
        b.create(&id(), 0).await,
        Err(StorageError::Invalid(_))
    ));
    for bad in ["../../etc/passwd", "vol", "", &a.to_uppercase()] {
        assert!(
            matches!(b.create(bad, MIB).await, Err(StorageError::Invalid(_))),
            "{bad}"
        );
        assert!(
            matches!(b.delete(bad).await, Err(StorageError::Invalid(_))),
            "{bad}"
        );
    }
    let too_big = after.free_bytes + (4 << 30);
    let e = b.create(&id(), too_big).await.unwrap_err();
    assert!(matches!(e, StorageError::NoSpace(_)), "{e}");
    assert_eq!(
        env.image_names(),
        vec![volume_file_name(&a, ".raw")],
        "nothing left behind"
    );

    assert!(
        matches!(b.resize(&a, MIB).await, Err(StorageError::Invalid(_))),
        "no shrinking"
    );
    assert!(matches!(
        b.resize(&a, too_big).await,
        Err(StorageError::NoSpace(_))
    ));
    assert_eq!(b.resize(&a, 2 << 30).await.unwrap().size_bytes, 2 << 30);
    assert_eq!(b.resize(&a, 2 << 30).await.unwrap().size_bytes, 2 << 30);
    assert!(allocated(&v.path) < MIB, "growth stays sparse");
    b.delete(&a).await.unwrap();
    b.delete(&a).await.unwrap();
    assert!(env.image_names().is_empty());
    assert!(matches!(b.get(&a).await, Err(StorageError::NotFound(_))));
    assert!(matches!(
        b.resize(&a, 1 << 30).await,
        Err(StorageError::NotFound(_))
    ));
    assert!(matches!(
        b.snapshot(&a, &id()).await,
        Err(StorageError::NotFound(_))
    ));
    assert!(matches!(
        b.restore(&id(), &a).await,
        Err(StorageError::NotFound(_))
    ));
    b.delete_snapshot(&id()).await.unwrap();
}

#[tokio::test]
async fn list_finds_everything_after_a_restart() {
    let env = Env::new();
    let (a, c, s) = (id(), id(), id());
    env.backend.create(&a, 8 * MIB).await.unwrap();
    env.backend.create(&c, 16 * MIB).await.unwrap();
    env.backend.snapshot(&a, &s).await.unwrap();
    // Foreign and half-made files: ignored, and leftovers of interrupted calls removed.
    let images = env.config().image_dir;
    for junk in ["notes.txt", "vol-nope.raw", "snap-x-of-y.raw"] {
        std::fs::write(images.join(junk), b"x").unwrap();
    }
    std::fs::write(images.join(format!(".tmp-create-{}", id())), b"x").unwrap();

    let restarted = FileBackend::new(env.config()).unwrap();
    let vols = restarted.list().await.unwrap();
    let mut want = vec![(a.clone(), 8 * MIB), (c.clone(), 16 * MIB)];
    want.sort();
    let got: Vec<(String, u64)> = vols
        .iter()
        .map(|v| (v.volume_id.clone(), v.size_bytes))
        .collect();
    assert_eq!(got, want);
    let snaps = restarted.list_snapshots().await.unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(
        (snaps[0].snapshot_id.as_str(), snaps[0].volume_id.as_str()),
        (s.as_str(), a.as_str())
    );
    assert_eq!(snaps[0].size_bytes, 8 * MIB);
    assert!(!env.image_names().iter().any(|n| n.starts_with(".tmp-")));
    assert!(
        env.image_names().contains(&"notes.txt".to_owned()),
        "foreign files untouched"
    );
}

#[tokio::test]
async fn mount_write_unmount_remount_keeps_the_bytes() {
    if cannot_mount().is_some() {
        return;
    }
    let env = Env::new();
    let b = &env.backend;
    let a = id();
    b.create(&a, 64 * MIB).await.unwrap();
    assert!(!b.mounted(&a).await.unwrap());
    let mp = b.mount(&a).await.unwrap();
    assert_eq!(mp, env.config().mount_dir.join(&a));
    assert_eq!(b.mount(&a).await.unwrap(), mp, "mount is idempotent");
    assert!(b.mounted(&a).await.unwrap());
    let info = b.get(&a).await.unwrap();
    assert!(info.formatted && info.mounted);
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    write(&mp, "data.bin", &data);

    b.unmount(&a).await.unwrap();
    b.unmount(&a).await.unwrap();
    assert!(!b.mounted(&a).await.unwrap());
    assert!(!mp.exists(), "mountpoint removed");
    env.assert_no_loops();

    let mp2 = b.mount(&a).await.unwrap();
    assert_eq!(std::fs::read(mp2.join("data.bin")).unwrap(), data);
    let listed = b.list().await.unwrap();
    assert!(listed[0].formatted && listed[0].mounted);
    b.unmount(&a).await.unwrap();
    env.assert_no_loops();
}

#[tokio::test]
async fn two_volumes_never_see_each_others_files() {
    if cannot_mount().is_some() {
        return;
    }
    let env = Env::new();
    let b = &env.backend;
    let (a, c) = (id(), id());
    b.create(&a, 32 * MIB).await.unwrap();
    b.create(&c, 32 * MIB).await.unwrap();
    let (mpa, mpc) = (b.mount(&a).await.unwrap(), b.mount(&c).await.unwrap());
    write(&mpa, "secret-a", b"only in a");
    write(&mpc, "secret-c", b"only in c");
    let names = |p: &Path| -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    };
    assert_eq!(names(&mpa), ["lost+found", "secret-a"]);
    assert_eq!(names(&mpc), ["lost+found", "secret-c"]);
    b.unmount(&a).await.unwrap();
    b.unmount(&c).await.unwrap();
    env.assert_no_loops();
}

#[tokio::test]
async fn snapshot_overwrite_restore_gives_the_old_bytes() {
    if cannot_mount().is_some() {
        return;
    }
    let env = Env::new();
    let b = &env.backend;
    let (a, s, r) = (id(), id(), id());
    b.create(&a, 32 * MIB).await.unwrap();
    let mp = b.mount(&a).await.unwrap();
    write(&mp, "f", b"old bytes");
    // Taken while mounted: the filesystem is frozen for the copy.
    let snap = b.snapshot(&a, &s).await.unwrap();
    assert_eq!(
        (snap.volume_id.as_str(), snap.size_bytes),
        (a.as_str(), 32 * MIB)
    );
    assert_eq!(
        b.snapshot(&a, &s).await.unwrap(),
        snap,
        "snapshot is idempotent"
    );
    assert!(matches!(
        b.snapshot(&id(), &s).await,
        Err(StorageError::NotFound(_) | StorageError::Invalid(_))
    ));
    write(&mp, "f", b"new bytes");

    let v = b.restore(&s, &r).await.unwrap();
    assert_eq!(
        (v.size_bytes, v.formatted, v.mounted),
        (32 * MIB, true, false)
    );
    assert_eq!(b.restore(&s, &r).await.unwrap(), v, "restore is idempotent");
    let mpr = b.mount(&r).await.unwrap();
    assert_eq!(std::fs::read(mpr.join("f")).unwrap(), b"old bytes");
    assert_eq!(
        std::fs::read(mp.join("f")).unwrap(),
        b"new bytes",
        "source untouched"
    );

    // Snapshots are independent copies: the source can go, the snapshot stays usable.
    b.unmount(&a).await.unwrap();
    b.delete(&a).await.unwrap();
    assert_eq!(b.list_snapshots().await.unwrap().len(), 1);
    b.delete_snapshot(&s).await.unwrap();
    b.delete_snapshot(&s).await.unwrap();
    assert!(b.list_snapshots().await.unwrap().is_empty());
    b.unmount(&r).await.unwrap();
    b.delete(&r).await.unwrap();
    env.assert_no_loops();
}

/// Whether this process may grow a mounted ext4 filesystem (the resize ioctl needs
/// CAP_SYS_RESOURCE, which some VMs, like this project's CI machine, drop from the bounding set).
fn can_grow_online() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    eff & (1 << 24) != 0
}

#[tokio::test]
async fn resize_grows_the_filesystem_online_and_offline() {
    if cannot_mount().is_some() {
        return;
    }
    let env = Env::new();
    let b = &env.backend;
    let a = id();
    b.create(&a, 64 * MIB).await.unwrap();
    let mp = b.mount(&a).await.unwrap();
    write(&mp, "keep", b"still here");
    let small = fs_size(&mp);
    let online = b.resize(&a, 128 * MIB).await;
    let grown = if can_grow_online() {
        assert_eq!(online.unwrap().size_bytes, 128 * MIB);
        let grown = fs_size(&mp);
        assert!(grown > small + 48 * MIB, "online: {small} -> {grown}");
        b.resize(&a, 128 * MIB).await.unwrap();
        grown
    } else {
        eprintln!("no CAP_SYS_RESOURCE: online growth is refused; checking the clear error");
        let e = online.unwrap_err();
        assert!(
            matches!(&e, StorageError::Unsupported(m) if m.contains("CAP_SYS_RESOURCE")),
            "{e}"
        );
        assert_eq!(
            b.get(&a).await.unwrap().size_bytes,
            128 * MIB,
            "the volume grew"
        );
        assert_eq!(fs_size(&mp), small);
        // The filesystem catches up on the next mount.
        b.unmount(&a).await.unwrap();
        let mp = b.mount(&a).await.unwrap();
        let grown = fs_size(&mp);
        assert!(grown > small + 48 * MIB, "on remount: {small} -> {grown}");
        grown
    };
    assert!(matches!(
        b.resize(&a, 64 * MIB).await,
        Err(StorageError::Invalid(_))
    ));

    b.unmount(&a).await.unwrap();
    b.resize(&a, 192 * MIB).await.unwrap();
    b.resize(&a, 192 * MIB).await.unwrap();
    let mp = b.mount(&a).await.unwrap();
    let offline = fs_size(&mp);
    assert!(offline > grown + 48 * MIB, "offline: {grown} -> {offline}");
    assert_eq!(std::fs::read(mp.join("keep")).unwrap(), b"still here");
    b.unmount(&a).await.unwrap();
    env.assert_no_loops();
}

#[tokio::test]
async fn delete_refuses_while_mounted() {
    if cannot_mount().is_some() {
        return;
    }
    let env = Env::new();
    let b = &env.backend;
    let a = id();
    b.create(&a, 16 * MIB).await.unwrap();
    b.mount(&a).await.unwrap();
    let e = b.delete(&a).await.unwrap_err();
    assert!(
        matches!(&e, StorageError::InUse(m) if m.contains("unmount")),
        "{e}"
    );
    assert!(b.get(&a).await.is_ok());
    b.unmount(&a).await.unwrap();
    b.delete(&a).await.unwrap();
    assert!(env.image_names().is_empty());
    assert!(!env.config().mount_dir.join(&a).exists());
    env.assert_no_loops();
}

#[tokio::test]
async fn failing_mkfs_leaves_the_volume_unformatted() {
    if cannot_mount().is_some() {
        return;
    }
    let env = Env::new();
    let b = &env.backend;
    let a = id();
    // 64 KiB is too small for ext4: mkfs.ext4 fails.
    b.create(&a, 64 * 1024).await.unwrap();
    let e = b.mount(&a).await.unwrap_err();
    assert!(
        matches!(&e, StorageError::Command { cmd, .. } if cmd.starts_with("mkfs.ext4")),
        "{e}"
    );
    let info = b.get(&a).await.unwrap();
    assert!(!info.formatted && !info.mounted, "{info:?}");
    assert!(!b.mounted(&a).await.unwrap());
    assert!(!env.config().mount_dir.join(&a).exists());
    // The same error again, not a refusal to format "foreign data".
    let again = b.mount(&a).await.unwrap_err();
    assert!(matches!(again, StorageError::Command { .. }), "{again}");
    b.delete(&a).await.unwrap();
    env.assert_no_loops();
}

#[tokio::test]
async fn foreign_data_is_never_formatted_over() {
    if cannot_mount().is_some() {
        return;
    }
    let env = Env::new();
    let b = &env.backend;
    let a = id();
    let v = b.create(&a, 16 * MIB).await.unwrap();
    // A VM wrote a partition table.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&v.path)
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"\x55\xaa", 510).unwrap();
    let e = b.mount(&a).await.unwrap_err();
    assert!(matches!(e, StorageError::Invalid(_)), "{e}");
    assert_eq!(std::fs::read(&v.path).unwrap()[510..512], *b"\x55\xaa");
    env.assert_no_loops();
}
