//! File helpers: bounded reads and atomic writes.
//!
//! Every output the tool writes goes to a temporary file in the destination's directory, is
//! synced, then renamed over the destination: a refusal or a crash never leaves a partial file
//! where an operator expects a signed one.

use std::io::{Read as _, Write as _};
use std::path::Path;

/// Read at most `max` bytes of `path`; a longer file is refused before it is read whole.
pub fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > max {
        return Err(format!("larger than {max} bytes"));
    }
    Ok(bytes)
}

/// Write `bytes` to `path` atomically (temporary file in the same directory, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".ota-sign-")
        .tempfile_in(dir)
        .map_err(|e| format!("cannot create a temporary file in {}: {e}", dir.display()))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| format!("cannot write: {e}"))?;
    tmp.persist(path)
        .map_err(|e| format!("cannot rename into place: {}", e.error))?;
    if let Ok(d) = std::fs::File::open(dir) {
        // Make the rename durable; not every file system supports syncing a directory.
        let _ = d.sync_all();
    }
    Ok(())
}

/// Create `path` with `bytes`, readable by the owner only; refuse if it exists.
pub fn write_new_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if path.exists() {
        return Err("exists already; refusing to overwrite a key".into());
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".ota-sign-")
        .tempfile_in(dir)
        .map_err(|e| format!("cannot create a temporary file: {e}"))?;
    // tempfile creates files with mode 0600 on Unix.
    let mut file = tmp.as_file();
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write: {e}"))?;
    tmp.persist_noclobber(path)
        .map_err(|e| format!("cannot create: {}", e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_read_refuses_long_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, [0u8; 11]).unwrap();
        assert!(read_capped(&p, 10).is_err());
        assert_eq!(read_capped(&p, 11).unwrap().len(), 11);
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn private_files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        write_new_private(&p, b"secret").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0);
        assert!(write_new_private(&p, b"again").is_err());
    }
}
