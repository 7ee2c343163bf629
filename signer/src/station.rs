//! The signing station: a directory on the offline machine where the authorities sign.
//!
//! ```text
//! STATION/policy.json        operators, approvals, maximum expiry per role (written by people)
//! STATION/state.json         what this station signed last (written by the tool, atomically)
//! STATION/audit.jsonl        the audit log (appended by the tool)
//! STATION/roots/N.root.json  every root installed here, in order (root ceremonies)
//! STATION/root.json          a copy of the newest, for whoever needs the trusted root
//! STATION/.lock              held while a command runs: one command at a time
//! ```
//!
//! `state.json`: the last version and request digest signed per role (a version never goes
//! down, and one version is never signed for two different requests), the last release number
//! signed per channel with the hash of every release manifest signed (a new release must be
//! numbered above the last; a signed release never changes), and the head (seq, hash) of the
//! audit log, so that entries cut from the end of the log are noticed.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use ota_core::time::UnixTime;
use ota_core::tuf::Key;
use ota_core::tuf::metadata::{Envelope, Root};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::audit::{self, Action, Entry, GENESIS, Head, KnownActors};
use crate::backend::SigningKey;
use crate::error::Error;
use crate::fsutil::{read_capped, write_atomic};
use crate::policy::{MAX_POLICY_LEN, Policy, policy_digest};
use crate::refusal::Refusal;
use crate::request::RequestDigest;
use crate::roles::{SignRole, role_keys};

/// Environment variable naming the station directory when `--station` is not given.
pub const STATION_ENV: &str = "OTA_SIGN_STATION";

/// Largest root file read.
const MAX_ROOT_LEN: u64 = 512 * 1024;

/// What the station signed last (`state.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// The last version signed per role.
    #[serde(default)]
    pub roles: BTreeMap<SignRole, SignedVersion>,
    /// The last release number signed per channel.
    #[serde(default)]
    pub channels: BTreeMap<String, u64>,
    /// SHA-256 of every release manifest signed, by target path.
    #[serde(default)]
    pub manifests: BTreeMap<String, String>,
    /// The audit log's last entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_head: Option<Head>,
}

/// A version signed for a role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedVersion {
    /// The metadata version.
    pub version: u64,
    /// The request signed.
    pub request: RequestDigest,
}

/// A root installed at the station.
#[derive(Debug, Clone)]
pub struct TrustedRoot {
    /// The parsed root.
    pub root: Root,
    /// The file as installed.
    pub bytes: Vec<u8>,
}

/// The station directory is unusable (exit code 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StationError {
    /// No station directory given.
    #[error("no signing station: pass --station DIR or set {STATION_ENV}")]
    NotGiven,
    /// The directory or a file in it cannot be used.
    #[error("station {path}: {reason}")]
    Unusable {
        /// The file or directory.
        path: String,
        /// Why.
        reason: String,
    },
    /// Another command holds the station.
    #[error("station {path} is in use by another ota-sign command")]
    Busy {
        /// The directory.
        path: String,
    },
    /// The operation needs a trusted root and none is installed.
    #[error("station has no trusted root yet: run the root ceremony (ota-sign root create) first")]
    NoTrustedRoot,
}

/// An open, locked station.
#[derive(Debug)]
pub struct Station {
    dir: PathBuf,
    _lock: File,
    policy: Policy,
    policy_digest: String,
    state: State,
    roots: Vec<TrustedRoot>,
    /// The log's head once its integrity was checked in this process.
    head: Option<Option<Head>>,
    /// Whether the time comes from `--now` instead of the clock (tests only).
    clock_overridden: bool,
}

impl Station {
    /// Open and lock the station at `dir`.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        let unusable = |path: &Path, reason: String| StationError::Unusable {
            path: path.display().to_string(),
            reason,
        };
        if !dir.is_dir() {
            return Err(unusable(dir, "not a directory".into()).into());
        }
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(".lock"))
            .map_err(|e| unusable(dir, format!("cannot open the lock file: {e}")))?;
        lock.try_lock().map_err(|_| StationError::Busy {
            path: dir.display().to_string(),
        })?;
        let policy_path = dir.join("policy.json");
        let policy_bytes =
            read_capped(&policy_path, MAX_POLICY_LEN).map_err(|e| unusable(&policy_path, e))?;
        let policy = Policy::parse(&policy_bytes)?;
        let state_path = dir.join("state.json");
        let state = if state_path.exists() {
            let bytes =
                read_capped(&state_path, 64 * 1024 * 1024).map_err(|e| unusable(&state_path, e))?;
            serde_json::from_slice(&bytes).map_err(|e| unusable(&state_path, e.to_string()))?
        } else {
            State::default()
        };
        let roots = load_roots(&dir.join("roots"))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            _lock: lock,
            policy,
            policy_digest: policy_digest(&policy_bytes),
            state,
            roots,
            head: None,
            clock_overridden: false,
        })
    }

    /// Mark every entry this command writes with `"clock_override": true`: its time did not
    /// come from the clock (`--now`, for tests only).
    pub fn note_clock_override(&mut self) {
        self.clock_overridden = true;
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// SHA-256 of the policy file.
    pub fn policy_digest(&self) -> &str {
        &self.policy_digest
    }

    /// What the station signed last.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The newest installed root, if any.
    pub fn root(&self) -> Option<&TrustedRoot> {
        self.roots.last()
    }

    /// The newest installed root, or [`StationError::NoTrustedRoot`].
    pub fn require_root(&self) -> Result<&TrustedRoot, Error> {
        self.root()
            .ok_or_else(|| StationError::NoTrustedRoot.into())
    }

    /// Every installed root, oldest first.
    pub fn roots(&self) -> &[TrustedRoot] {
        &self.roots
    }

    /// The audit log's path.
    pub fn audit_path(&self) -> PathBuf {
        self.dir.join("audit.jsonl")
    }

    /// Change the state and write it (atomically).
    pub fn update_state(&mut self, change: impl FnOnce(&mut State)) -> Result<(), Error> {
        change(&mut self.state);
        let mut bytes = serde_json::to_vec_pretty(&self.state)
            .unwrap_or_else(|_| unreachable!("the state serialises"));
        bytes.push(b'\n');
        let path = self.dir.join("state.json");
        write_atomic(&path, &bytes).map_err(|reason| {
            StationError::Unusable {
                path: path.display().to_string(),
                reason,
            }
            .into()
        })
    }

    /// Append an entry signed by `key` to the audit log. The log's integrity (chain, hashes,
    /// signatures, the recorded head) is checked before the first append of a command; a
    /// damaged log stops everything.
    pub fn record(
        &mut self,
        key: &mut dyn SigningKey,
        action: Action,
        mut details: Value,
        now: UnixTime,
    ) -> Result<Head, Error> {
        if self.clock_overridden
            && let Some(map) = details.as_object_mut()
        {
            map.insert("clock_override".into(), Value::Bool(true));
        }
        let head = match &self.head {
            Some(head) => head.clone(),
            None => {
                let report = self.verify_log(None)?;
                if let Some(problem) = report.problems.first() {
                    return Err(Refusal::AuditDamaged {
                        problem: problem.to_string(),
                    }
                    .into());
                }
                report.head
            }
        };
        let (seq, prev) = head
            .as_ref()
            .map_or((1, GENESIS.to_string()), |h| (h.seq + 1, h.hash.clone()));
        let entry = Entry::seal(seq, now, key, action, details, &prev)?;
        let path = self.audit_path();
        audit::append(&path, &entry).map_err(|e| StationError::Unusable {
            path: path.display().to_string(),
            reason: format!("cannot append: {e}"),
        })?;
        let new_head = entry.head();
        self.head = Some(Some(new_head.clone()));
        self.update_state(|s| s.audit_head = Some(new_head.clone()))?;
        Ok(new_head)
    }

    /// Verify the audit log against the recorded head and, if given, the known actors.
    pub fn verify_log(&self, actors: Option<&KnownActors>) -> Result<audit::Report, Error> {
        let path = self.audit_path();
        let bytes = if path.exists() {
            read_capped(&path, audit::MAX_LOG_LEN).map_err(|reason| StationError::Unusable {
                path: path.display().to_string(),
                reason,
            })?
        } else {
            Vec::new()
        };
        Ok(audit::verify(
            &bytes,
            actors,
            self.state.audit_head.as_ref(),
        ))
    }

    /// The actors allowed to write to the log: every operator of the policy (until their
    /// revocation), every key of every installed root, and `extra` keys.
    pub fn known_actors(&self, extra: &[Key]) -> KnownActors {
        let mut actors = KnownActors::default();
        for (name, operator) in &self.policy.operators {
            actors.add(&operator.key, name, operator.revoked);
        }
        for trusted in &self.roots {
            for role in [
                SignRole::Root,
                SignRole::Targets,
                SignRole::Release,
                SignRole::Snapshot,
                SignRole::Timestamp,
            ] {
                if let Some(set) = role_keys(&trusted.root, role) {
                    for key in set.keys.values() {
                        actors.add(key, &format!("{role} key"), None);
                    }
                }
            }
        }
        for key in extra {
            actors.add(key, "extra key", None);
        }
        actors
    }

    /// Install `bytes` (already verified as the next root) as the station's trusted root.
    pub fn install_root(&mut self, bytes: &[u8], root: Root) -> Result<(), Error> {
        let dir = self.dir.join("roots");
        let unusable = |path: &Path, reason: String| StationError::Unusable {
            path: path.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(&dir).map_err(|e| unusable(&dir, e.to_string()))?;
        let versioned = dir.join(format!("{}.root.json", root.common.version));
        write_atomic(&versioned, bytes).map_err(|e| unusable(&versioned, e))?;
        let current = self.dir.join("root.json");
        write_atomic(&current, bytes).map_err(|e| unusable(&current, e))?;
        self.roots.push(TrustedRoot {
            root,
            bytes: bytes.to_vec(),
        });
        Ok(())
    }
}

/// Check that `envelope` (holding `root`) may follow `previous`: version 1 signed by its own
/// threshold, version N+1 signed by the thresholds of both N and N+1.
pub fn verify_root_step(
    previous: Option<&Root>,
    envelope: &Envelope,
    root: &Root,
) -> Result<(), ota_core::tuf::Error> {
    let version = root.common.version;
    match previous {
        None if version != 1 => Err(ota_core::tuf::Error::RootVersionMismatch {
            expected: 1,
            found: version,
        }),
        Some(prev) if version != prev.common.version + 1 => {
            Err(ota_core::tuf::Error::RootVersionMismatch {
                expected: prev.common.version + 1,
                found: version,
            })
        }
        _ => {
            if let Some(prev) = previous {
                prev.verify_role(
                    "root",
                    &format!("root (trusted version {})", prev.common.version),
                    envelope,
                )?;
            }
            root.verify_role("root", &format!("root (new version {version})"), envelope)
        }
    }
}

fn load_roots(dir: &Path) -> Result<Vec<TrustedRoot>, Error> {
    let unusable = |path: &Path, reason: String| StationError::Unusable {
        path: path.display().to_string(),
        reason,
    };
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(|e| unusable(dir, e.to_string()))? {
        let entry = entry.map_err(|e| unusable(dir, e.to_string()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(version) = name
            .strip_suffix(".root.json")
            .and_then(|v| v.parse::<u64>().ok())
        else {
            continue;
        };
        files.insert(version, entry.path());
    }
    let mut roots: Vec<TrustedRoot> = Vec::new();
    for (version, path) in files {
        let bytes = read_capped(&path, MAX_ROOT_LEN).map_err(|e| unusable(&path, e))?;
        let envelope = Envelope::parse(
            "root",
            &format!("{version}.root.json"),
            &bytes,
            MAX_ROOT_LEN,
        )
        .map_err(|e| unusable(&path, e.to_string()))?;
        let root: Root = envelope
            .role()
            .map_err(|e| unusable(&path, e.to_string()))?;
        verify_root_step(roots.last().map(|r| &r.root), &envelope, &root)
            .map_err(|e| unusable(&path, format!("does not follow the root before it: {e}")))?;
        roots.push(TrustedRoot { root, bytes });
    }
    Ok(roots)
}
