//! The origin's data directory: configuration, keys, catalog and blob store.
//!
//! ```text
//! DATA/
//!   origin.json          where the catalog and blobs live, expiry settings
//!   root.json            the trusted root of the image repository (latest registered)
//!   director-root.json   the director's root (pins the offer-signing key)
//!   keys/                online keys (snapshot, timestamp, director), the fleet handle key
//!                        and the nonce key, 32-byte seeds in hex, mode 0600; never offline
//!                        keys
//!   catalog.sqlite       the catalog, unless origin.json names a postgres:// URL
//!   blobs/               chunks and chunk indexes, unless origin.json names an s3:// URL
//!   requests/C/N/        signing requests and the manifest of release N of channel C
//!   audit.log            every lifecycle step, hash-chained
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use ota_core::director::HandleKey;
use ota_core::tuf::InMemoryKey;

use crate::keys::{OnlineKey, TokenKeys};
use crate::nonce::NonceKey;
use crate::repository::{OnlineExpiry, OnlineKeys};
use crate::store::{BlobStore, Catalog};

/// The origin's configuration file (`origin.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginConfig {
    /// Catalog location: a SQLite path (relative to the data dir) or a `postgres://` URL.
    pub catalog: String,
    /// Blob location: a directory (relative to the data dir) or an `s3://` URL.
    pub blobs: String,
    /// Seconds a signed snapshot stays valid.
    pub snapshot_expiry_secs: i64,
    /// Seconds a signed timestamp stays valid.
    pub timestamp_expiry_secs: i64,
    /// Seconds an offer stays valid.
    pub offer_expiry_secs: i64,
    /// Seconds a nonce stays valid.
    pub nonce_expiry_secs: i64,
    /// How far a signed request's timestamp may be from the origin's clock.
    pub request_window_secs: i64,
    /// Remote attestation policy (see [`crate::attest`]); absent: attestation is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<crate::attest::AttestationConfig>,
}

impl Default for OriginConfig {
    fn default() -> Self {
        Self {
            catalog: "catalog.sqlite".into(),
            blobs: "blobs".into(),
            snapshot_expiry_secs: 7 * 86_400,
            timestamp_expiry_secs: 86_400,
            offer_expiry_secs: 15 * 60,
            nonce_expiry_secs: 120,
            request_window_secs: 300,
            attestation: None,
        }
    }
}

impl OriginConfig {
    /// The online expiry settings.
    pub fn online_expiry(&self) -> OnlineExpiry {
        OnlineExpiry {
            snapshot_secs: self.snapshot_expiry_secs,
            timestamp_secs: self.timestamp_expiry_secs,
        }
    }
}

/// The origin's online keys and secrets.
#[derive(Debug)]
pub struct Keys {
    /// Snapshot and timestamp keys.
    pub online: OnlineKeys,
    /// The director's offer-signing key.
    pub director: OnlineKey,
    /// The fleet's device-handle key.
    pub handle: HandleKey,
    /// The key that mints request nonces (see [`crate::nonce`]).
    pub nonce: NonceKey,
}

/// Why the data directory cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file's content is not what it should be.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The catalog failed.
    #[error(transparent)]
    Catalog(#[from] crate::store::CatalogError),
    /// The blob store failed.
    #[error(transparent)]
    Blobs(#[from] crate::store::BlobError),
}

/// An opened data directory.
#[derive(Debug)]
pub struct DataDir {
    /// Its path.
    pub path: PathBuf,
    /// Its configuration.
    pub config: OriginConfig,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl DataDir {
    /// Open an initialised data directory.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        let file = path.join("origin.json");
        let bytes = std::fs::read(&file).map_err(io(&file))?;
        let config = serde_json::from_slice(&bytes).map_err(|e| StateError::Invalid {
            path: file.clone(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            config,
        })
    }

    /// Create the directory layout and write the configuration (refusing an existing one).
    pub fn create(path: &Path, config: OriginConfig) -> Result<Self, StateError> {
        std::fs::create_dir_all(path.join("keys")).map_err(io(path))?;
        let file = path.join("origin.json");
        if file.exists() {
            return Err(StateError::Invalid {
                path: file,
                reason: "already initialised".into(),
            });
        }
        let mut bytes = serde_json::to_vec_pretty(&config).map_err(|e| StateError::Invalid {
            path: file.clone(),
            reason: e.to_string(),
        })?;
        bytes.push(b'\n');
        write_atomic(&file, &bytes)?;
        Ok(Self {
            path: path.to_path_buf(),
            config,
        })
    }

    /// A path inside the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    fn location(&self, value: &str) -> String {
        if value.contains("://") || value.starts_with("sqlite:") {
            value.to_string()
        } else {
            self.path.join(value).to_string_lossy().into_owned()
        }
    }

    /// Open the catalog (running migrations).
    pub async fn catalog(&self) -> Result<Catalog, StateError> {
        Ok(Catalog::open(&self.location(&self.config.catalog)).await?)
    }

    /// Open the blob store.
    pub fn blobs(&self) -> Result<BlobStore, StateError> {
        let location = self.location(&self.config.blobs);
        if !location.contains("://") {
            std::fs::create_dir_all(&location).map_err(io(Path::new(&location)))?;
        }
        Ok(BlobStore::open(&location)?)
    }

    /// Load the online keys: those `keys/online.json` names from their token (see
    /// [`crate::keys`]), the others from their seed files, creating any that do not exist yet.
    pub fn keys(&self) -> Result<Keys, StateError> {
        let on_token = TokenKeys::read(&self.path).map_err(|e| self.key_error(&e))?;
        let key = |role: &'static str| -> Result<OnlineKey, StateError> {
            match on_token.get(role) {
                Some(uri) => OnlineKey::open_token(role, uri).map_err(|e| self.key_error(&e)),
                None => Ok(InMemoryKey::ed25519_from_seed(self.seed(role)?).into()),
            }
        };
        Ok(Keys {
            online: OnlineKeys {
                snapshot: key("snapshot")?,
                timestamp: key("timestamp")?,
            },
            director: key("director")?,
            handle: HandleKey(self.seed("fleet-handle")?),
            nonce: NonceKey::from_seed(&self.seed("nonce")?),
        })
    }

    fn key_error(&self, error: &crate::keys::KeyError) -> StateError {
        StateError::Invalid {
            path: self.path.join("keys").join(crate::keys::ONLINE_KEYS_FILE),
            reason: error.to_string(),
        }
    }

    fn seed(&self, name: &str) -> Result<[u8; 32], StateError> {
        let path = self.path.join("keys").join(format!("{name}.key"));
        if !path.exists() {
            let mut seed = [0u8; 32];
            rand_core::RngCore::try_fill_bytes(&mut rand_core::OsRng, &mut seed).map_err(|e| {
                StateError::Invalid {
                    path: path.clone(),
                    reason: format!("no randomness: {e}"),
                }
            })?;
            write_secret(&path, hex::encode(seed).as_bytes())?;
        }
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        let mut seed = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut seed).map_err(|e| StateError::Invalid {
            path: path.clone(),
            reason: format!("not a 32-byte hex seed: {e}"),
        })?;
        Ok(seed)
    }

    /// Read a file of the data directory.
    pub fn read(&self, name: &str) -> Result<Vec<u8>, StateError> {
        let path = self.file(name);
        std::fs::read(&path).map_err(io(&path))
    }

    /// Write a file of the data directory atomically.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<(), StateError> {
        let path = self.file(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        write_atomic(&path, bytes)
    }
}

/// Write a file atomically: a temporary file in the same directory, fsync, rename, fsync the
/// directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map_or_else(|| "file".into(), |n| n.to_string_lossy())
    ));
    let mut file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io(path))?;
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Write a secret file once (mode 0600): whole, or not at all. Written to a temporary file
/// first and then linked to its name, so a reader never sees it half written; when two
/// processes make the same secret at once (a server and a command opening a data directory
/// that lacks it), the first link wins and both read that one.
fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    /// Tells apart the temporary files of one process's threads.
    static TMP: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        path.file_name()
            .map_or_else(|| "secret".into(), |n| n.to_string_lossy()),
        std::process::id(),
        TMP.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    drop(file);
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(path)(e)),
    }
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}
