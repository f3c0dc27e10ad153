//! Small file helpers: atomic writes with the right permissions.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

fn write_mode(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Writes a secret: readable by the owner only (0600), replaced atomically.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    write_mode(path, contents, 0o600)
}

/// Writes a public file (0644), replaced atomically.
pub fn write_public(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    write_mode(path, contents, 0o644)
}
