//! What backends report (volumes, snapshots, pool capacity) and the checks every backend runs
//! before touching anything: ids must be canonical UUIDs, sizes must be sane. Also the on-disk
//! names that carry ids, and their strict parsers (a name that does not parse is not ours).

use super::StorageError;
use std::path::PathBuf;

/// Size of a backend's pool, for telemetry and placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolCapacity {
    pub total_bytes: u64,
    /// Bytes that can still be promised to new volumes or growth.
    pub free_bytes: u64,
}

/// One volume as the backend sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    pub volume_id: String,
    pub size_bytes: u64,
    /// It has an ext4 filesystem (it was mounted once). Always false where the data cannot be
    /// read (lvm with activation disabled).
    pub formatted: bool,
    pub mounted: bool,
    /// The image file (file) or the block device (lvm): what a VM would be given.
    pub path: PathBuf,
}

/// One snapshot as the backend sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub snapshot_id: String,
    /// The volume it was taken from (which may have been deleted since, for `file`).
    pub volume_id: String,
    /// Size of the volume a restore creates.
    pub size_bytes: u64,
    pub path: PathBuf,
}

/// Largest accepted size: 1 PiB (keeps every size computation far from overflow and within
/// what `set_len` and LVM accept).
pub const MAX_SIZE_BYTES: u64 = 1 << 50;

/// Accepts only canonical lowercase UUIDs (`8-4-4-4-12` hex digits). `what` names the id in
/// the error ("volume id", "snapshot id"); the id itself is echoed only when it is short and
/// printable, so bad input never floods logs.
pub fn validate_id(what: &str, id: &str) -> Result<(), StorageError> {
    let ok = id.len() == 36
        && id.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        });
    if ok {
        return Ok(());
    }
    let shown = if id.len() <= 64 && id.chars().all(|c| c.is_ascii_graphic()) {
        format!("{id:?}")
    } else {
        format!("({} bytes)", id.len())
    };
    Err(StorageError::Invalid(format!(
        "{what} {shown} is not a lowercase UUID"
    )))
}

/// Sizes of new volumes and growth targets: more than 0 and at most [`MAX_SIZE_BYTES`].
pub fn check_new_size(size_bytes: u64) -> Result<(), StorageError> {
    if size_bytes == 0 {
        return Err(StorageError::Invalid(
            "size must be more than 0 bytes".into(),
        ));
    }
    if size_bytes > MAX_SIZE_BYTES {
        return Err(StorageError::Invalid(format!(
            "size {size_bytes} bytes is above the maximum of {MAX_SIZE_BYTES} bytes"
        )));
    }
    Ok(())
}

/// `NoSpace` unless `needed` fits into `free`.
pub(crate) fn check_fits(needed: u64, free: u64) -> Result<(), StorageError> {
    if needed > free {
        return Err(StorageError::NoSpace(format!(
            "{needed} bytes needed, {free} bytes free in the pool"
        )));
    }
    Ok(())
}

/// File (and LV) name of a volume: `vol-<id>` plus `ext` (".raw" for files, "" for LVs).
pub fn volume_file_name(volume_id: &str, ext: &str) -> String {
    format!("vol-{volume_id}{ext}")
}

/// File name of a file snapshot: `snap-<snapshot id>-of-<volume id>.raw`, so that the source
/// is known after a restart without any metadata file.
pub fn snapshot_file_name(snapshot_id: &str, volume_id: &str) -> String {
    format!("snap-{snapshot_id}-of-{volume_id}.raw")
}

/// The id in `vol-<id><ext>`, if `name` is exactly that with a valid id.
pub(crate) fn parse_volume_name(name: &str, ext: &str) -> Option<String> {
    let id = name.strip_prefix("vol-")?.strip_suffix(ext)?;
    validate_id("volume id", id).ok()?;
    Some(id.to_owned())
}

/// (snapshot id, volume id) of `snap-<id>-of-<id>.raw`.
pub(crate) fn parse_snapshot_file_name(name: &str) -> Option<(String, String)> {
    let rest = name.strip_prefix("snap-")?.strip_suffix(".raw")?;
    let (snap, vol) = rest.split_once("-of-")?;
    validate_id("snapshot id", snap).ok()?;
    validate_id("volume id", vol).ok()?;
    Some((snap.to_owned(), vol.to_owned()))
}

/// The id in an LV name `snap-<id>`.
pub(crate) fn parse_snapshot_lv_name(name: &str) -> Option<String> {
    let id = name.strip_prefix("snap-")?;
    validate_id("snapshot id", id).ok()?;
    Some(id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "01a22355-bf78-7117-9e6f-ce93a3165224";
    const ID2: &str = "0196f1b8-3c1e-7a4b-8d2f-5e6a7b8c9d0e";

    #[test]
    fn ids_must_be_canonical_lowercase_uuids() {
        assert!(validate_id("volume id", ID).is_ok());
        for bad in [
            "",
            "01A22355-BF78-7117-9E6F-CE93A3165224",
            "01a22355bf7871179e6fce93a3165224",
            "01a22355-bf78-7117-9e6f-ce93a316522",
            "01a22355-bf78-7117-9e6f-ce93a31652245",
            "../../../../../etc/passwd-aaaaaaaaaaa",
            "01a22355-bf78-7117-9e6f-ce93a316522/",
            "01a22355-bf78-7117-9e6f ce93a3165224",
            "01a22355-bf78-7117-9e6f-ce93a316522g",
            "-1a22355-bf78-7117-9e6f-ce93a3165224",
            "01a22355-bf78-7117-9e6f-ce93a3165224\n",
        ] {
            let e = validate_id("volume id", bad).unwrap_err();
            assert!(matches!(e, StorageError::Invalid(_)), "{bad:?}: {e}");
        }
        let long = "x".repeat(10_000);
        let msg = validate_id("volume id", &long).unwrap_err().to_string();
        assert!(msg.len() < 100, "long ids are not echoed: {msg}");
    }

    #[test]
    fn size_checks() {
        assert!(matches!(check_new_size(0), Err(StorageError::Invalid(_))));
        assert!(check_new_size(1).is_ok());
        assert!(check_new_size(MAX_SIZE_BYTES).is_ok());
        assert!(matches!(
            check_new_size(MAX_SIZE_BYTES + 1),
            Err(StorageError::Invalid(_))
        ));
        assert!(matches!(
            check_new_size(u64::MAX),
            Err(StorageError::Invalid(_))
        ));
        assert!(check_fits(10, 10).is_ok());
        assert!(matches!(check_fits(11, 10), Err(StorageError::NoSpace(_))));
    }

    #[test]
    fn names_round_trip_and_foreign_names_are_ignored() {
        let v = volume_file_name(ID, ".raw");
        assert_eq!(v, format!("vol-{ID}.raw"));
        assert_eq!(parse_volume_name(&v, ".raw").as_deref(), Some(ID));
        assert_eq!(
            parse_volume_name(&format!("vol-{ID}"), "").as_deref(),
            Some(ID)
        );
        let s = snapshot_file_name(ID2, ID);
        assert_eq!(
            parse_snapshot_file_name(&s),
            Some((ID2.to_owned(), ID.to_owned()))
        );
        assert_eq!(
            parse_snapshot_lv_name(&format!("snap-{ID2}")).as_deref(),
            Some(ID2)
        );
        for foreign in [
            "vol-x.raw",
            &format!("vol-{ID}.raw.tmp"),
            &format!(".tmp-vol-{ID}.raw"),
            &format!("vol-{ID}.qcow2"),
            &format!("snap-{ID}.raw"),
            &format!("snap-{ID}-of-{ID}-of-{ID}.raw"),
            "lost+found",
        ] {
            assert_eq!(parse_volume_name(foreign, ".raw"), None, "{foreign}");
            assert_eq!(parse_snapshot_file_name(foreign), None, "{foreign}");
        }
        assert_eq!(parse_volume_name(&format!("vol-{ID}-x"), ""), None);
        assert_eq!(parse_snapshot_lv_name("snap-"), None);
    }
}
