//! The TUF client conformance adapter behind `ota-tuf-client`: `init`, `refresh` and
//! `download` as the TUF conformance suite's client command line defines them, driving
//! `ota-core`'s sans-IO client workflow ([`Updater`]) over plain HTTP.
//!
//! - **Metadata directory.** Trusted metadata is kept under non-versioned names (`root.json`,
//!   `timestamp.json`, `snapshot.json`, `targets.json`, `ROLE.json` for delegated roles), each
//!   written atomically (temporary file, fsync, rename, fsync of the directory), and read back
//!   with the workflow's size caps checked before anything is read.
//! - **Refresh.** Every run starts from the stored root and re-verifies every stored file; the
//!   workflow asks for files, this driver fetches them with the cap the workflow gives, and
//!   applies what it says to store or remove.
//! - **Download.** After a refresh, the target is looked up through the delegation graph, and
//!   fetched from the target base URL (hash-prefixed with consistent snapshots) with its signed
//!   length as the cap. Only bytes that match the signed length and hashes are written into the
//!   target directory, under the target path percent-encoded into one file name (as python-tuf
//!   names them). A file already there that matches is not downloaded again.
//!
//! A plain TUF repository (no `x-enigm-release-authority` in root) pins no release authority,
//! so the workflow applies the specification's rules only; the Enigm rules apply to roots that
//! carry the pin.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use ota_core::time::UnixTime;
use ota_core::tuf::Error as TufError;
use ota_core::tuf::client::{Action, Fetched, Limits, TargetInfo, TrustedFiles, Updater};

use crate::http_fetch::{Body, FetchError, HttpFetcher, encode_path, join_url};

/// Largest target the adapter downloads (it holds the target in memory to verify it before
/// writing anything).
pub const MAX_TARGET_LEN: u64 = 1024 * 1024 * 1024;

/// Delegated role files read from the metadata directory at most.
const MAX_STORED_ROLES: usize = 1024;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The repository's metadata or target was refused by the workflow.
    #[error("refused: {0}")]
    Refused(#[from] TufError),
    /// A download failed.
    #[error("download failed: {0}")]
    Fetch(#[from] FetchError),
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A local file is larger than the cap for what it should hold.
    #[error("{path}: {len} bytes is over the cap of {max} bytes")]
    LocalTooLarge {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
        /// The cap.
        max: u64,
    },
    /// No trusted root in the metadata directory (`init` was not run).
    #[error("{0}: no trusted root; run init first")]
    NotInitialised(PathBuf),
    /// The signed target is larger than this adapter downloads.
    #[error("{path}: signed length {len} is over the adapter's limit of {max} bytes")]
    TargetTooLarge {
        /// The target path.
        path: String,
        /// Its signed length.
        len: u64,
        /// [`MAX_TARGET_LEN`].
        max: u64,
    },
    /// The workflow stopped without saying it was done (a defect, reported rather than hidden).
    #[error("the client workflow stopped without an outcome")]
    Stalled,
    /// The workflow asked for something the driver does not do (a defect).
    #[error("the client workflow asked for an unexpected action: {0}")]
    UnexpectedAction(String),
}

/// Where the workflow's files come from.
pub trait MetadataSource {
    /// Fetch `file` (a name on the repository, e.g. `2.root.json`), at most `max_len` bytes.
    fn fetch(&mut self, role: &str, file: &str, max_len: u64) -> Result<Fetched, ClientError>;
}

/// Trusted metadata under non-versioned names in one directory.
#[derive(Debug, Clone)]
pub struct MetadataDir {
    dir: PathBuf,
}

impl MetadataDir {
    /// The store in `dir` (which must exist).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The stored trusted root.
    pub fn root(&self, limits: &Limits) -> Result<Vec<u8>, ClientError> {
        read_capped(&self.dir.join("root.json"), limits.root_max_len)?
            .ok_or_else(|| ClientError::NotInitialised(self.dir.clone()))
    }

    /// The other stored metadata, for the workflow to re-verify. A file over its cap is left
    /// out (the workflow then fetches a fresh copy).
    pub fn trusted_files(&self, limits: &Limits) -> Result<TrustedFiles, ClientError> {
        let read = |name: &str, max: u64| match read_capped(&self.dir.join(name), max) {
            Ok(bytes) => Ok(bytes),
            Err(ClientError::LocalTooLarge { .. }) => Ok(None),
            Err(e) => Err(e),
        };
        let mut files = TrustedFiles {
            timestamp: read("timestamp.json", limits.timestamp_max_len)?,
            snapshot: read("snapshot.json", limits.snapshot_max_len)?,
            targets: read("targets.json", limits.targets_max_len)?,
            delegated: BTreeMap::new(),
        };
        let entries = fs::read_dir(&self.dir).map_err(|source| ClientError::Io {
            path: self.dir.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            if files.delegated.len() >= MAX_STORED_ROLES {
                break;
            }
            let name = entry.file_name();
            let Some(role) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if role.starts_with('.') || ["root", "timestamp", "snapshot", "targets"].contains(&role)
            {
                continue;
            }
            if let Some(bytes) = read(&format!("{role}.json"), limits.targets_max_len)? {
                files.delegated.insert(role.to_string(), bytes);
            }
        }
        Ok(files)
    }

    /// Store `bytes` as `name`, atomically.
    pub fn persist(&self, name: &str, bytes: &[u8]) -> Result<(), ClientError> {
        check_file_name(name)?;
        write_atomic(&self.dir, name, bytes)
    }

    /// Delete `name` if present.
    pub fn remove(&self, name: &str) -> Result<(), ClientError> {
        check_file_name(name)?;
        let path = self.dir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(ClientError::Io { path, source }),
        }
    }
}

/// Drive `updater` until the refresh or search it started ends. Fetches go to `source`;
/// `Persist` and `Remove` go to `store` (ignored without one, for read-only verification).
/// Returns the target found, if the run was a search.
pub fn drive(
    updater: &mut Updater,
    now: UnixTime,
    source: &mut dyn MetadataSource,
    store: Option<&MetadataDir>,
) -> Result<Option<TargetInfo>, ClientError> {
    loop {
        let Some(action) = updater.poll_action() else {
            return Err(ClientError::Stalled);
        };
        match action {
            Action::Fetch(request) => {
                let fetched = source.fetch(&request.role, &request.file, request.max_len)?;
                if let Err(refusal) = updater.handle_fetched(now, &request, fetched) {
                    // What the workflow trusted before the refusal (a rotated root, a removed
                    // stale file) is still applied.
                    apply_remaining(updater, store)?;
                    return Err(refusal.into());
                }
            }
            Action::Persist { file, bytes } => {
                if let Some(store) = store {
                    store.persist(&file, &bytes)?;
                }
            }
            Action::Remove { file } => {
                if let Some(store) = store {
                    store.remove(&file)?;
                }
            }
            Action::Refreshed => return Ok(None),
            Action::Found(info) => return Ok(Some(info)),
            other => return Err(ClientError::UnexpectedAction(format!("{other:?}"))),
        }
    }
}

fn apply_remaining(updater: &mut Updater, store: Option<&MetadataDir>) -> Result<(), ClientError> {
    while let Some(action) = updater.poll_action() {
        match (action, store) {
            (Action::Persist { file, bytes }, Some(store)) => store.persist(&file, &bytes)?,
            (Action::Remove { file }, Some(store)) => store.remove(&file)?,
            _ => {}
        }
    }
    Ok(())
}

/// The repository's metadata over HTTP.
#[derive(Debug)]
pub struct HttpMetadata<'a> {
    fetcher: &'a HttpFetcher,
    base_url: String,
}

impl<'a> HttpMetadata<'a> {
    /// Metadata under `base_url` (the repository's `metadata/` URL).
    pub fn new(fetcher: &'a HttpFetcher, base_url: &str) -> Self {
        Self {
            fetcher,
            base_url: base_url.into(),
        }
    }
}

impl MetadataSource for HttpMetadata<'_> {
    fn fetch(&mut self, _role: &str, file: &str, max_len: u64) -> Result<Fetched, ClientError> {
        let url = join_url(&self.base_url, &encode_path(file, false));
        Ok(match self.fetcher.get(&url, max_len)? {
            Body::Bytes(bytes) => Fetched::Bytes(bytes),
            Body::NotFound => Fetched::NotFound,
        })
    }
}

/// What a refresh ended on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshReport {
    /// Versions of root, timestamp, snapshot and targets.
    pub versions: [u64; 4],
}

/// `init`: store `trusted_root` as the metadata directory's `root.json`. The root must be
/// signed by its own threshold (a refresh would refuse it anyway).
pub fn init(metadata_dir: &Path, trusted_root: &Path) -> Result<u64, ClientError> {
    let limits = Limits::default();
    let bytes = read_capped(trusted_root, limits.root_max_len)?.ok_or_else(|| ClientError::Io {
        path: trusted_root.into(),
        source: io::ErrorKind::NotFound.into(),
    })?;
    let updater = Updater::new(limits, &bytes, TrustedFiles::default())?;
    fs::create_dir_all(metadata_dir).map_err(|source| ClientError::Io {
        path: metadata_dir.into(),
        source,
    })?;
    MetadataDir::new(metadata_dir).persist("root.json", &bytes)?;
    Ok(updater.root().common.version)
}

/// `refresh`: update the top-level metadata in `metadata_dir` from `metadata_url`.
pub fn refresh(metadata_dir: &Path, metadata_url: &str) -> Result<RefreshReport, ClientError> {
    let fetcher = HttpFetcher::new()?;
    let store = MetadataDir::new(metadata_dir);
    let mut updater = refreshed_updater(&store, &fetcher, metadata_url, now())?;
    Ok(report(&mut updater))
}

/// Where `download` put the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// The file written (or found already verified).
    pub path: PathBuf,
    /// Its length.
    pub length: u64,
    /// The role that listed the target.
    pub role: String,
    /// Whether a matching copy was already there (nothing was downloaded).
    pub cached: bool,
}

/// `download`: refresh, look `target_name` up, fetch it from `target_base_url`, verify it, and
/// store it in `target_dir`.
pub fn download(
    metadata_dir: &Path,
    metadata_url: &str,
    target_name: &str,
    target_base_url: &str,
    target_dir: &Path,
) -> Result<Downloaded, ClientError> {
    let fetcher = HttpFetcher::new()?;
    let store = MetadataDir::new(metadata_dir);
    let now = now();
    let mut updater = refreshed_updater(&store, &fetcher, metadata_url, now)?;
    updater.find_target(now, target_name)?;
    let mut source = HttpMetadata::new(&fetcher, metadata_url);
    let info = drive(&mut updater, now, &mut source, Some(&store))?.ok_or(ClientError::Stalled)?;
    let length = info.file().length;
    let local_name = encode_path(info.path(), false);
    let local = target_dir.join(&local_name);
    let found = |cached| Downloaded {
        path: local.clone(),
        length,
        role: info.role().to_string(),
        cached,
    };
    // A verified copy from an earlier download is not fetched again.
    if let Ok(Some(existing)) = read_capped(&local, length)
        && info.verify_bytes(&existing).is_ok()
    {
        return Ok(found(true));
    }
    if length > MAX_TARGET_LEN {
        return Err(ClientError::TargetTooLarge {
            path: info.path().into(),
            len: length,
            max: MAX_TARGET_LEN,
        });
    }
    let url = join_url(target_base_url, &encode_path(&info.download_path(), true));
    let bytes = match fetcher.get(&url, length)? {
        Body::Bytes(bytes) => bytes,
        Body::NotFound => {
            return Err(TufError::FileNotFound {
                file: info.download_path(),
            }
            .into());
        }
    };
    info.verify_bytes(&bytes)?;
    fs::create_dir_all(target_dir).map_err(|source| ClientError::Io {
        path: target_dir.into(),
        source,
    })?;
    write_atomic(target_dir, &local_name, &bytes)?;
    Ok(found(false))
}

fn refreshed_updater(
    store: &MetadataDir,
    fetcher: &HttpFetcher,
    metadata_url: &str,
    now: UnixTime,
) -> Result<Updater, ClientError> {
    let limits = Limits::default();
    let root = store.root(&limits)?;
    let trusted = store.trusted_files(&limits)?;
    let mut updater = Updater::new(limits, &root, trusted)?;
    updater.refresh()?;
    let mut source = HttpMetadata::new(fetcher, metadata_url);
    drive(&mut updater, now, &mut source, Some(store))?;
    Ok(updater)
}

fn report(updater: &mut Updater) -> RefreshReport {
    let version = |v: Option<u64>| v.unwrap_or(0);
    RefreshReport {
        versions: [
            updater.root().common.version,
            version(updater.timestamp().map(|t| t.common.version)),
            version(updater.snapshot().map(|s| s.common.version)),
            version(updater.targets().map(|t| t.common.version)),
        ],
    }
}

/// The current time as the workflow sees it.
pub fn now() -> UnixTime {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    UnixTime(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// Read `path` if it exists, refusing one longer than `max` before reading it.
pub fn read_capped(path: &Path, max: u64) -> Result<Option<Vec<u8>>, ClientError> {
    let io_err = |source| ClientError::Io {
        path: path.into(),
        source,
    };
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(e)),
    };
    let len = file.metadata().map_err(io_err)?.len();
    if len > max {
        return Err(ClientError::LocalTooLarge {
            path: path.into(),
            len,
            max,
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    // The file may grow after the check; never read past the cap.
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    if bytes.len() as u64 > max {
        return Err(ClientError::LocalTooLarge {
            path: path.into(),
            len: bytes.len() as u64,
            max,
        });
    }
    Ok(Some(bytes))
}

/// Write `dir/name` atomically: a temporary file in `dir`, fsync, rename, fsync of `dir`.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), ClientError> {
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let target = dir.join(name);
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, &target)
    })();
    if let Err(source) = written {
        let _ = fs::remove_file(&tmp);
        return Err(ClientError::Io {
            path: target,
            source,
        });
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), ClientError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| ClientError::Io {
            path: dir.into(),
            source,
        })
}

/// A name the workflow asks to store must be one plain file name in the directory.
fn check_file_name(name: &str) -> Result<(), ClientError> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
        && name.len() <= 255;
    if ok {
        Ok(())
    } else {
        Err(ClientError::UnexpectedAction(format!(
            "store under the file name {:?}",
            name.chars().take(80).collect::<String>()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(dir.path(), "timestamp.json", b"one").unwrap();
        write_atomic(dir.path(), "timestamp.json", b"two").unwrap();
        assert_eq!(fs::read(dir.path().join("timestamp.json")).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["timestamp.json"]);
    }

    #[test]
    fn read_capped_refuses_a_file_over_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.json");
        fs::write(&path, [b'x'; 11]).unwrap();
        assert!(matches!(
            read_capped(&path, 10),
            Err(ClientError::LocalTooLarge {
                len: 11,
                max: 10,
                ..
            })
        ));
        assert_eq!(read_capped(&path, 11).unwrap().unwrap().len(), 11);
        assert!(read_capped(&dir.path().join("none"), 1).unwrap().is_none());
    }

    #[test]
    fn store_refuses_names_outside_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetadataDir::new(dir.path());
        for name in ["../root.json", "a/b.json", ".hidden.json", ""] {
            assert!(
                matches!(
                    store.persist(name, b"{}"),
                    Err(ClientError::UnexpectedAction(_))
                ),
                "{name:?} must be refused"
            );
        }
    }
}
