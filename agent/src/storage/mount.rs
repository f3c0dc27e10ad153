//! Filesystems on volumes, shared by the file and lvm backends: what is on a device (ext4
//! superblock, blank, or something else that must not be formatted over), mkfs/resize2fs,
//! mounting and unmounting, the mount table (/proc/self/mountinfo) and the loop devices
//! backing a file (/sys/block/loop*/loop/backing_file).

use super::cmd::Cmd;
use super::{StorageError, io_err};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// ext2/3/4 superblock: at byte 1024, magic 0xEF53 at byte 0x38 of it (0x438 overall).
const EXT_MAGIC: u16 = 0xEF53;
/// btrfs magic `_BHRfS_M` at 64 KiB + 0x40; iso9660 `CD001` at 32 KiB + 1.
const BTRFS_MAGIC: (u64, &[u8]) = (0x10040, b"_BHRfS_M");
const ISO_MAGIC: (u64, &[u8]) = (0x8001, b"CD001");
/// A device whose first 4 KiB are zero (and has none of the magics above) is blank: MBR/GPT,
/// LUKS, xfs, swap, vfat, ntfs and ext all put a signature there.
const BLANK_HEAD: usize = 4096;

/// What `probe_fs` found on a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsProbe {
    /// An ext2/3/4 filesystem of this many bytes.
    Ext { fs_bytes: u64 },
    /// Nothing: safe to format.
    Blank,
    /// Something else (a partition table, another filesystem, data written by a VM): never
    /// formatted over.
    Other,
}

/// Reads what is on `path` (an image file or a block device) without any external tool.
pub fn probe_fs(path: &Path) -> Result<FsProbe, StorageError> {
    let f = File::open(path).map_err(io_err(format_args!("opening {}", path.display())))?;
    let mut head = vec![0u8; 2048];
    let n = read_at_most(&f, &mut head, 0)?;
    head.truncate(n);
    if head.len() >= 2048 {
        let sb = &head[1024..2048];
        if u16::from_le_bytes([sb[0x38], sb[0x39]]) == EXT_MAGIC {
            return Ok(FsProbe::Ext {
                fs_bytes: ext_fs_bytes(sb),
            });
        }
    }
    let mut first = vec![0u8; BLANK_HEAD];
    let n = read_at_most(&f, &mut first, 0)?;
    if first[..n].iter().any(|&b| b != 0) {
        return Ok(FsProbe::Other);
    }
    for (offset, magic) in [BTRFS_MAGIC, ISO_MAGIC] {
        let mut buf = vec![0u8; magic.len()];
        if read_at_most(&f, &mut buf, offset)? == magic.len() && buf == magic {
            return Ok(FsProbe::Other);
        }
    }
    Ok(FsProbe::Blank)
}

/// Size in bytes of the ext filesystem whose 1024-byte superblock is `sb`.
fn ext_fs_bytes(sb: &[u8]) -> u64 {
    let le32 = |o: usize| u64::from(u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]));
    let mut blocks = le32(0x04);
    // INCOMPAT_64BIT: the high half of the block count lives at 0x150.
    if le32(0x60) & 0x80 != 0 {
        blocks |= le32(0x150) << 32;
    }
    let log = le32(0x18).min(6);
    blocks.saturating_mul(1024 << log)
}

fn read_at_most(f: &File, buf: &mut [u8], offset: u64) -> Result<usize, StorageError> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err("reading a volume's superblock")(e)),
        }
    }
    Ok(done)
}

/// Formats a blank volume as ext4. Refuses anything that is not blank. When mkfs fails the
/// head is zeroed again, so the volume stays "blank" (it was blank before) and a later mount
/// retries cleanly.
pub(crate) async fn format_ext4(path: &Path, volume_id: &str) -> Result<(), StorageError> {
    match probe_fs(path)? {
        FsProbe::Ext { .. } => return Ok(()),
        FsProbe::Other => {
            return Err(StorageError::Invalid(format!(
                "volume {volume_id} holds data that is not an ext4 filesystem (a VM's disk?); \
                 refusing to format it"
            )));
        }
        FsProbe::Blank => {}
    }
    // -m 0: no blocks reserved for root on a data volume; no discard pass on a blank volume.
    let mkfs = Cmd::new("mkfs.ext4")
        .args(["-q", "-F", "-m", "0", "-E", "nodiscard"])
        .arg(path);
    if let Err(e) = mkfs.run().await {
        zero_head(path)?;
        return Err(e);
    }
    Ok(())
}

fn zero_head(path: &Path) -> Result<(), StorageError> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err(format_args!("opening {}", path.display())))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    // Block devices report length 0 here: zero the whole window then.
    let n = if len == 0 {
        128 * 1024
    } else {
        len.min(128 * 1024)
    };
    let zeros = vec![0u8; usize::try_from(n).unwrap_or(0)];
    f.write_all_at(&zeros, 0)
        .and_then(|()| f.sync_data())
        .map_err(io_err(format_args!("wiping {}", path.display())))
}

/// Grows the ext4 filesystem on `device` to the device's size. `mounted`: online (resize2fs
/// on the mounted device); otherwise offline after the forced check resize2fs requires, and
/// only when the filesystem is smaller than `size_bytes`.
pub(crate) async fn grow_ext4(
    device: &Path,
    size_bytes: u64,
    mounted: bool,
) -> Result<(), StorageError> {
    if mounted {
        let cmd = Cmd::new("resize2fs").arg(device);
        let f = cmd.finish().await?;
        if f.code == Some(0) {
            return Ok(());
        }
        // ext4's resize ioctl needs CAP_SYS_RESOURCE (missing e.g. in some VMs' bounding set).
        if f.stderr.contains("Permission denied to resize") {
            return Err(StorageError::Unsupported(
                "growing a mounted filesystem needs CAP_SYS_RESOURCE, which the agent lacks; \
                 the volume itself was grown, and its filesystem grows when the volume is next \
                 mounted (detach and attach it again)"
                    .into(),
            ));
        }
        return Err(cmd.failed(&f));
    }
    let FsProbe::Ext { fs_bytes } = probe_fs(device)? else {
        return Ok(());
    };
    // resize2fs rounds down to whole blocks (≤ 64 KiB).
    if fs_bytes.saturating_add(64 * 1024) > size_bytes {
        return Ok(());
    }
    let fsck = Cmd::new("e2fsck").args(["-f", "-p"]).arg(device);
    let f = fsck.finish().await?;
    // 0: clean; 1: errors corrected. Anything else needs a human.
    if !matches!(f.code, Some(0 | 1)) {
        return Err(fsck.failed(&f));
    }
    Cmd::new("resize2fs").arg(device).run().await?;
    Ok(())
}

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountEntry {
    pub mountpoint: PathBuf,
    pub fstype: String,
    pub source: String,
}

/// Parses mountinfo text (octal escapes in paths decoded).
pub(crate) fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mountpoint = left.split(' ').nth(4)?;
            let mut r = right.split(' ');
            let fstype = r.next()?;
            let source = r.next()?;
            Some(MountEntry {
                mountpoint: PathBuf::from(unescape(mountpoint)),
                fstype: unescape(fstype),
                source: unescape(source),
            })
        })
        .collect()
}

/// Decodes the `\040`-style escapes of mountinfo.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The current mount table of this process's mount namespace.
pub(crate) fn mount_table() -> Result<Vec<MountEntry>, StorageError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(io_err("reading /proc/self/mountinfo"))?;
    Ok(parse_mountinfo(&text))
}

/// The topmost mount at `mountpoint`, if any.
pub(crate) fn mount_at(table: &[MountEntry], mountpoint: &Path) -> Option<MountEntry> {
    table
        .iter()
        .rev()
        .find(|m| m.mountpoint == mountpoint)
        .cloned()
}

/// Mounts the ext4 filesystem on `source` at `mountpoint` (created if missing), nosuid and
/// nodev; `loop_file`: `source` is an image file, attached to a fresh loop device that the
/// kernel detaches again on unmount (autoclear).
pub(crate) async fn mount_ext4(
    source: &Path,
    mountpoint: &Path,
    loop_file: bool,
) -> Result<(), StorageError> {
    std::fs::create_dir_all(mountpoint)
        .map_err(io_err(format_args!("creating {}", mountpoint.display())))?;
    let opts = if loop_file {
        "loop,nosuid,nodev"
    } else {
        "nosuid,nodev"
    };
    let r = Cmd::new("mount")
        .args(["-t", "ext4", "-o", opts])
        .arg(source)
        .arg(mountpoint)
        .run()
        .await;
    if r.is_err() {
        let _ = std::fs::remove_dir(mountpoint);
    }
    r.map(|_| ())
}

/// Unmounts everything stacked at `mountpoint` and removes the (empty) directory.
pub(crate) async fn umount_all(mountpoint: &Path, volume_id: &str) -> Result<(), StorageError> {
    for _ in 0..8 {
        if mount_at(&mount_table()?, mountpoint).is_none() {
            break;
        }
        let cmd = Cmd::new("umount").arg(mountpoint);
        let f = cmd.finish().await?;
        if f.code != Some(0) {
            if f.stderr.contains("busy") {
                return Err(StorageError::InUse(format!(
                    "volume {volume_id} is busy: a process still uses {}; stop the instance \
                     using it first",
                    mountpoint.display()
                )));
            }
            return Err(cmd.failed(&f));
        }
    }
    match std::fs::remove_dir(mountpoint) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(format_args!("removing {}", mountpoint.display()))(e)),
    }
}

/// Loop devices (`/dev/loopN`) whose backing file is `file` (an absolute, canonical path).
pub(crate) fn loop_devices_of(file: &Path) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    let want = file.as_os_str().as_encoded_bytes();
    let mut out: Vec<PathBuf> = dir
        .flatten()
        .filter(|e| e.file_name().as_encoded_bytes().starts_with(b"loop"))
        .filter(|e| {
            std::fs::read(e.path().join("loop/backing_file")).is_ok_and(|b| {
                let b = b.strip_suffix(b"\n").unwrap_or(&b);
                b == want
            })
        })
        .map(|e| Path::new("/dev").join(e.file_name()))
        .collect();
    out.sort();
    out
}

/// Waits (briefly) for the kernel to release `file`'s loop devices after an unmount, then
/// detaches whatever is still attached.
pub(crate) async fn release_loops(file: &Path) -> Result<(), StorageError> {
    let deadline = Instant::now() + Duration::from_secs(2);
    while !loop_devices_of(file).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for dev in loop_devices_of(file) {
        let cmd = Cmd::new("losetup").arg("-d").arg(&dev);
        let f = cmd.finish().await?;
        // Gone in the meantime: fine.
        if f.code != Some(0) && !loop_devices_of(file).is_empty() {
            return Err(cmd.failed(&f));
        }
    }
    Ok(())
}

/// Runs `f` with the filesystem mounted at `mountpoint` (if any) frozen, so that what `f` reads
/// is consistent; thaws it again whatever `f` returns.
pub(crate) async fn with_frozen<T, Fut>(
    mountpoint: Option<&Path>,
    f: impl FnOnce() -> Fut,
) -> Result<T, StorageError>
where
    Fut: std::future::Future<Output = Result<T, StorageError>>,
{
    let Some(mp) = mountpoint else {
        return f().await;
    };
    Cmd::new("fsfreeze").arg("-f").arg(mp).run().await?;
    let r = f().await;
    let thaw = Cmd::new("fsfreeze").arg("-u").arg(mp).run().await;
    let v = r?;
    thaw?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_is_parsed_with_escapes() {
        let text = "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
                    95 22 7:3 / /var/lib/agent/volumes/with\\040space rw,nosuid,nodev,relatime - ext4 /dev/loop3 rw\n\
                    garbage line\n";
        let t = parse_mountinfo(text);
        assert_eq!(t.len(), 2);
        assert_eq!(
            t[1].mountpoint,
            Path::new("/var/lib/agent/volumes/with space")
        );
        assert_eq!(t[1].source, "/dev/loop3");
        assert_eq!(t[1].fstype, "ext4");
        assert!(mount_at(&t, Path::new("/")).is_some());
        assert!(mount_at(&t, Path::new("/var")).is_none());
        assert_eq!(unescape("a\\134b\\"), "a\\b\\");
    }

    #[test]
    fn superblock_detection_on_small_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        std::fs::File::create(&p)
            .unwrap()
            .set_len(256 * 1024)
            .unwrap();
        assert_eq!(probe_fs(&p).unwrap(), FsProbe::Blank);

        // A hand-made ext4 superblock: 64bit feature, 4 KiB blocks, 2^32 + 10 blocks.
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        let mut sb = vec![0u8; 1024];
        sb[0x04..0x08].copy_from_slice(&10u32.to_le_bytes());
        sb[0x18..0x1c].copy_from_slice(&2u32.to_le_bytes());
        sb[0x38..0x3a].copy_from_slice(&0xEF53u16.to_le_bytes());
        sb[0x60..0x64].copy_from_slice(&0x80u32.to_le_bytes());
        sb[0x150..0x154].copy_from_slice(&1u32.to_le_bytes());
        f.write_all_at(&sb, 1024).unwrap();
        assert_eq!(
            probe_fs(&p).unwrap(),
            FsProbe::Ext {
                fs_bytes: ((1u64 << 32) + 10) * 4096
            }
        );

        // Anything else in the first 4 KiB, or a btrfs magic, is "Other".
        zero_head(&p).unwrap();
        assert_eq!(probe_fs(&p).unwrap(), FsProbe::Blank);
        f.write_all_at(b"\x55\xaa", 510).unwrap();
        assert_eq!(probe_fs(&p).unwrap(), FsProbe::Other);
        zero_head(&p).unwrap();
        f.write_all_at(b"_BHRfS_M", 0x10040).unwrap();
        assert_eq!(probe_fs(&p).unwrap(), FsProbe::Other);

        // Files shorter than a superblock are blank when zero.
        let tiny = dir.path().join("tiny");
        std::fs::write(&tiny, [0u8; 100]).unwrap();
        assert_eq!(probe_fs(&tiny).unwrap(), FsProbe::Blank);
    }
}
