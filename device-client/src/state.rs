//! The device's state directory (DESIGN.md §7).
//!
//! ```text
//! STATE/
//!   device.json          where the origin is (address, certificate pin, HTTP mirror), the
//!                        device's handle once enrolled, boot tries, the attestation
//!                        provider (`ota_device::attest::ProviderConfig`)
//!   device.key           the device's Ed25519 key: a 32-byte seed in hex, mode 0600
//!   director-root.json   the director's pinned root (verifies offers)
//!   tuf/                 trusted image-repository metadata under non-versioned names:
//!                        root.json, timestamp.json, snapshot.json, targets.json, release.json
//!   slots.json           the A/B slot state (ota_core::install::Slots)
//!   slots/A/, slots/B/   one file per install slot (`NAME.img`), the verified chunk index of
//!                        each (`NAME.index`) and what the slot holds (`contents.json`)
//!   journal/NAME.journal the download journal of the artifact being written (ota_core::journal)
//!   last-update.json     what the last update did and why
//!   install.log          one JSON line per update, boot check and revert
//!   pending-report.json  an outcome the origin has not been told yet
//! ```
//!
//! Every file that decides something is replaced atomically: written to a temporary file in the
//! same directory, synced, renamed over the old one, and the directory synced.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use ota_core::digest::Sha256Hash;
use ota_core::director::DeviceHandle;
use ota_core::install::{Slot, Slots};
use ota_core::tuf::client::TrustedFiles;
use ota_core::tuf::enigm::{Channel, ReleaseNumber};
use serde::{Deserialize, Serialize};

/// Largest state file read (configuration, slot state, reports).
pub const MAX_STATE_FILE: u64 = 1 << 20;
/// Largest trusted metadata file read back from the state directory.
pub const MAX_TRUSTED_FILE: u64 = 16 << 20;

/// A state-directory failure: the device's own environment is at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The state directory does not exist or is not initialised.
    #[error("{path}: not an initialised state directory (run `ota-device init`)")]
    NotInitialised {
        /// The directory.
        path: PathBuf,
    },
    /// The directory already holds a device.
    #[error("{path}: already initialised")]
    AlreadyInitialised {
        /// The directory.
        path: PathBuf,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A file's content is not what the device wrote.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl StateError {
    /// Whether the disk ran full (the update can proceed once space is freed).
    pub fn disk_full(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.raw_os_error() == Some(28))
    }
}

/// `device.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// The origin's QUIC address.
    pub origin: SocketAddr,
    /// The pin of the origin's certificate (SHA-256 of its DER encoding).
    pub origin_pin: Sha256Hash,
    /// The origin's HTTP mirror, e.g. `http://127.0.0.1:8080`, if the device may use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// The handle the origin's enrollment gave this device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<DeviceHandle>,
    /// Boots a new slot gets before it is reverted.
    pub boot_tries: u8,
    /// The attestation evidence provider (`ota-device attestation`); none by default.
    #[serde(
        default,
        skip_serializing_if = "crate::attest::ProviderConfig::is_none"
    )]
    pub attestation: crate::attest::ProviderConfig,
}

/// What a slot holds (`slots/X/contents.json`), written before the slot is marked pending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotContents {
    /// The release's channel.
    pub channel: Channel,
    /// The release.
    pub release: ReleaseNumber,
    /// The artifacts, by install slot name.
    pub artifacts: Vec<SlotArtifact>,
}

/// One artifact in a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotArtifact {
    /// The install slot name (file `NAME.img`).
    pub slot: String,
    /// The artifact's target path.
    pub target: String,
    /// Its length.
    pub length: u64,
}

/// An opened state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    /// The directory.
    pub path: PathBuf,
    /// `device.json`.
    pub config: DeviceConfig,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl DeviceConfig {
    /// The origin's certificate pin.
    pub fn pin(&self) -> ota_net::quic::CertPin {
        ota_net::quic::CertPin(self.origin_pin)
    }
}

impl StateDir {
    /// Create a device's state: its key (0600), the trusted roots, slot A active and empty.
    /// Returns the directory and the device's public key.
    pub fn init(
        path: &Path,
        root: &[u8],
        director_root: &[u8],
        config: DeviceConfig,
    ) -> Result<(Self, [u8; 32]), StateError> {
        if path.join("device.json").exists() {
            return Err(StateError::AlreadyInitialised {
                path: path.to_path_buf(),
            });
        }
        for dir in ["", "tuf", "slots/A", "slots/B", "journal"] {
            let dir = path.join(dir);
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        }
        let mut seed = [0u8; 32];
        rand_core::RngCore::try_fill_bytes(&mut rand_core::OsRng, &mut seed).map_err(|e| {
            StateError::Invalid {
                path: path.join("device.key"),
                reason: format!("no randomness: {e}"),
            }
        })?;
        write_secret(&path.join("device.key"), hex::encode(seed).as_bytes())?;
        let key = SigningKey::from_bytes(&seed);
        write_atomic(&path.join("tuf/root.json"), root)?;
        write_atomic(&path.join("director-root.json"), director_root)?;
        let state = Self {
            path: path.to_path_buf(),
            config,
        };
        state.save_slots(&Slots::new(None))?;
        // The configuration last: its presence marks a complete init.
        state.save_config()?;
        Ok((state, key.verifying_key().to_bytes()))
    }

    /// Open an initialised state directory.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        let file = path.join("device.json");
        if !file.is_file() {
            return Err(StateError::NotInitialised {
                path: path.to_path_buf(),
            });
        }
        let config = read_json(&file)?;
        Ok(Self {
            path: path.to_path_buf(),
            config,
        })
    }

    /// Write `device.json`.
    pub fn save_config(&self) -> Result<(), StateError> {
        write_json(&self.path.join("device.json"), &self.config)
    }

    /// The device's signing key.
    pub fn key(&self) -> Result<SigningKey, StateError> {
        let path = self.path.join("device.key");
        let text = read_bounded(&path, 1024)?;
        let mut seed = [0u8; 32];
        hex::decode_to_slice(String::from_utf8_lossy(&text).trim(), &mut seed).map_err(|e| {
            StateError::Invalid {
                path: path.clone(),
                reason: format!("not a 32-byte hex seed: {e}"),
            }
        })?;
        Ok(SigningKey::from_bytes(&seed))
    }

    /// A file of the state directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// The trusted root of the image repository.
    pub fn trusted_root(&self) -> Result<Vec<u8>, StateError> {
        read_bounded(&self.path.join("tuf/root.json"), MAX_TRUSTED_FILE)
    }

    /// The director's pinned root.
    pub fn director_root(&self) -> Result<Vec<u8>, StateError> {
        read_bounded(&self.path.join("director-root.json"), MAX_TRUSTED_FILE)
    }

    /// The trusted metadata kept from the last refresh.
    pub fn trusted_files(&self) -> Result<TrustedFiles, StateError> {
        let dir = self.path.join("tuf");
        let mut files = TrustedFiles::default();
        let entries = std::fs::read_dir(&dir).map_err(io(&dir))?;
        for entry in entries {
            let entry = entry.map_err(io(&dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(role) = name.strip_suffix(".json") else {
                continue;
            };
            if role == "root" || name.starts_with('.') {
                continue;
            }
            let bytes = read_bounded(&entry.path(), MAX_TRUSTED_FILE)?;
            match role {
                "timestamp" => files.timestamp = Some(bytes),
                "snapshot" => files.snapshot = Some(bytes),
                "targets" => files.targets = Some(bytes),
                _ => {
                    files.delegated.insert(role.to_string(), bytes);
                }
            }
        }
        Ok(files)
    }

    /// Store trusted metadata under its non-versioned name.
    pub fn persist_trusted(&self, file: &str, bytes: &[u8]) -> Result<(), StateError> {
        write_atomic(&self.path.join("tuf").join(safe_name(file)?), bytes)
    }

    /// Forget trusted metadata.
    pub fn remove_trusted(&self, file: &str) -> Result<(), StateError> {
        let path = self.path.join("tuf").join(safe_name(file)?);
        match std::fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.path.join("tuf")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// The slot state.
    pub fn slots(&self) -> Result<Slots, StateError> {
        read_json(&self.path.join("slots.json"))
    }

    /// Replace the slot state atomically.
    pub fn save_slots(&self, slots: &Slots) -> Result<(), StateError> {
        write_json(&self.path.join("slots.json"), slots)
    }

    /// A slot's directory.
    pub fn slot_dir(&self, slot: Slot) -> PathBuf {
        self.path.join("slots").join(match slot {
            Slot::A => "A",
            Slot::B => "B",
        })
    }

    /// What a slot holds, if it was ever written completely.
    pub fn slot_contents(&self, slot: Slot) -> Result<Option<SlotContents>, StateError> {
        let path = self.slot_dir(slot).join("contents.json");
        if !path.exists() {
            return Ok(None);
        }
        read_json(&path).map(Some)
    }

    /// Append one JSON line to `install.log` (synced).
    pub fn log(&self, entry: &serde_json::Value) -> Result<(), StateError> {
        let path = self.path.join("install.log");
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        let mut line = serde_json::to_vec(entry).map_err(|e| StateError::Invalid {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        line.push(b'\n');
        file.write_all(&line).map_err(io(&path))?;
        file.sync_data().map_err(io(&path))
    }
}

fn safe_name(file: &str) -> Result<&str, StateError> {
    if file.is_empty()
        || file.starts_with('.')
        || file.contains(['/', '\\'])
        || !file.ends_with(".json")
        || file.len() > 255
    {
        return Err(StateError::Invalid {
            path: PathBuf::from(file),
            reason: "not a metadata file name".into(),
        });
    }
    Ok(file)
}

/// Read a file of at most `max` bytes (a longer one is refused before it is read).
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, StateError> {
    let file = File::open(path).map_err(io(path))?;
    let len = file.metadata().map_err(io(path))?.len();
    if len > max {
        return Err(StateError::Invalid {
            path: path.to_path_buf(),
            reason: format!("{len} bytes, over the {max}-byte cap"),
        });
    }
    let mut bytes = Vec::with_capacity(len as usize);
    std::io::Read::read_to_end(&mut std::io::Read::take(file, max + 1), &mut bytes)
        .map_err(io(path))?;
    if bytes.len() as u64 > max {
        return Err(StateError::Invalid {
            path: path.to_path_buf(),
            reason: format!("over the {max}-byte cap"),
        });
    }
    Ok(bytes)
}

/// Read a JSON state file.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, StateError> {
    let bytes = read_bounded(path, MAX_STATE_FILE)?;
    serde_json::from_slice(&bytes).map_err(|e| StateError::Invalid {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Write a JSON state file atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| StateError::Invalid {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Replace `path` atomically: write a temporary file beside it, sync it, rename it over
/// `path`, sync the directory. A power cut leaves the old file or the new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.tmp"));
    let result = (|| {
        let mut file = File::create(&temp).map_err(io(&temp))?;
        file.write_all(bytes).map_err(io(&temp))?;
        file.sync_all().map_err(io(&temp))?;
        drop(file);
        std::fs::rename(&temp, path).map_err(io(path))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// Sync a directory, so that a rename or a new file in it survives a power cut.
pub fn sync_dir(dir: &Path) -> Result<(), StateError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

#[cfg(unix)]
fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    file.write_all(bytes).map_err(io(path))?;
    file.sync_all().map_err(io(path))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

#[cfg(not(unix))]
fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    write_atomic(path, bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn config() -> DeviceConfig {
        DeviceConfig {
            origin: "127.0.0.1:4433".parse().unwrap(),
            origin_pin: Sha256Hash::of(b"certificate"),
            http: None,
            handle: None,
            boot_tries: 3,
            attestation: Default::default(),
        }
    }

    #[test]
    fn init_makes_a_private_key_and_refuses_a_second_init() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("state");
        let (state, public) = StateDir::init(&dir, b"root", b"director", config()).unwrap();
        assert_eq!(state.key().unwrap().verifying_key().to_bytes(), public);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.join("device.key"))
                .unwrap()
                .permissions();
            assert_eq!(mode.mode() & 0o777, 0o600);
        }
        assert_eq!(state.slots().unwrap(), Slots::new(None));
        assert_eq!(state.trusted_root().unwrap(), b"root");
        assert!(matches!(
            StateDir::init(&dir, b"root", b"director", config()),
            Err(StateError::AlreadyInitialised { .. })
        ));
        assert_eq!(StateDir::open(&dir).unwrap().config, config());
    }

    #[test]
    fn a_missing_directory_is_not_initialised() {
        let temp = tempfile::tempdir().unwrap();
        let err = StateDir::open(&temp.path().join("nothing")).unwrap_err();
        assert!(matches!(err, StateError::NotInitialised { .. }), "{err}");
    }

    #[test]
    fn trusted_files_keep_their_names_and_refuse_paths() {
        let temp = tempfile::tempdir().unwrap();
        let (state, _) = StateDir::init(temp.path(), b"root", b"d", config()).unwrap();
        state.persist_trusted("timestamp.json", b"t").unwrap();
        state.persist_trusted("release.json", b"r").unwrap();
        let files = state.trusted_files().unwrap();
        assert_eq!(files.timestamp.as_deref(), Some(&b"t"[..]));
        assert_eq!(files.delegated["release"], b"r");
        for bad in ["../x.json", "a/b.json", ".hidden.json", "x.txt", ""] {
            assert!(state.persist_trusted(bad, b"x").is_err(), "{bad}");
        }
        state.remove_trusted("timestamp.json").unwrap();
        state.remove_trusted("timestamp.json").unwrap();
        assert!(state.trusted_files().unwrap().timestamp.is_none());
    }

    #[test]
    fn reads_are_capped_before_allocation() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("big");
        std::fs::write(&path, vec![0u8; 100]).unwrap();
        assert_eq!(read_bounded(&path, 100).unwrap().len(), 100);
        assert!(matches!(
            read_bounded(&path, 99),
            Err(StateError::Invalid { .. })
        ));
    }

    #[test]
    fn atomic_writes_leave_no_temporary_behind() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("slots.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(temp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("slots.json")]);
    }
}
