//! The TUF client workflow (specification §5, "Detailed client workflow") as a sans-IO state
//! machine.
//!
//! [`Updater`] never touches the network, the disk or the clock. Its driver:
//!
//! 1. builds it from the trusted root and whatever trusted metadata it kept from the last run
//!    ([`TrustedFiles`], the non-versioned `timestamp.json`, `snapshot.json`, … a TUF client
//!    keeps);
//! 2. calls [`Updater::refresh`], then loops on [`Updater::poll_action`]: for
//!    [`Action::Fetch`] it downloads the named file (reading at most `max_len` bytes) and hands
//!    the result to [`Updater::handle_fetched`]; for [`Action::Persist`] and
//!    [`Action::Remove`] it updates its store; [`Action::Refreshed`] ends the refresh;
//! 3. calls [`Updater::find_target`] and loops the same way until [`Action::Found`].
//!
//! The order of checks follows the specification and python-tuf's `TrustedMetadataSet`:
//! root rotation one version at a time (signed by the old and the new root threshold, the
//! version inside the file checked), the root's expiry, timestamp (rollback of itself and of
//! the snapshot version it pins), snapshot (hashes and length pinned by timestamp, version
//! equal to the pinned one, no role removed or rolled back), targets (pinned by snapshot), then
//! the preorder depth-first delegation search with terminating roles and a visit limit. Every
//! download has a length cap, pinned lengths included. Our additions: a root whose targets keys
//! overlap the release authority is refused (in [`Root`]'s static rules), and a `release`
//! delegation must name exactly the release authority pinned in root.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use sha2::Digest as _;

use super::VerifiedArtifact;
use super::enigm::artifact_chunks;
use super::error::Error;
use super::metadata::{
    Delegations, Envelope, MetaFile, RELEASE_ROLE, Root, Snapshot, TargetFile, Targets, Timestamp,
};
use super::path::{check_target_path, hash_prefix_matches, pattern_matches};
use crate::digest::Sha256Hash;
use crate::time::UnixTime;

/// Size and search limits. Every file is read with a cap, whether or not its length is pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Cap on a root file.
    pub root_max_len: u64,
    /// Cap on `timestamp.json`.
    pub timestamp_max_len: u64,
    /// Cap on snapshot (also when timestamp pins a larger length).
    pub snapshot_max_len: u64,
    /// Cap on targets and each delegated role.
    pub targets_max_len: u64,
    /// Root versions to walk in one refresh.
    pub max_root_rotations: u32,
    /// Delegated roles to visit in one target search.
    pub max_delegations: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            root_max_len: 512 * 1024,
            timestamp_max_len: 16 * 1024,
            snapshot_max_len: 4 * 1024 * 1024,
            targets_max_len: 16 * 1024 * 1024,
            max_root_rotations: 32,
            max_delegations: 32,
        }
    }
}

/// Trusted metadata kept from an earlier run, under non-versioned names. Each is re-verified
/// before use; one that fails is ignored (and the driver told to remove it).
#[derive(Debug, Clone, Default)]
pub struct TrustedFiles {
    /// `timestamp.json`.
    pub timestamp: Option<Vec<u8>>,
    /// `snapshot.json`.
    pub snapshot: Option<Vec<u8>>,
    /// `targets.json`.
    pub targets: Option<Vec<u8>>,
    /// Delegated roles by name (`NAME.json`).
    pub delegated: BTreeMap<String, Vec<u8>>,
}

/// A file the updater asks its driver for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRequest {
    /// The role it holds.
    pub role: String,
    /// The file name on the repository, e.g. `3.root.json`, `timestamp.json`.
    pub file: String,
    /// Read at most this many bytes; a longer file is an endless-data attack.
    pub max_len: u64,
}

/// What the driver got for a [`FileRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The file's bytes (at most `max_len`; the driver stops reading there).
    Bytes(Vec<u8>),
    /// The repository does not have the file.
    NotFound,
}

/// What the driver must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Download a file and pass it to [`Updater::handle_fetched`].
    Fetch(FileRequest),
    /// Store trusted metadata under this non-versioned name (atomically: write, rename).
    Persist {
        /// e.g. `root.json`, `timestamp.json`, `release.json`.
        file: String,
        /// The file's bytes as received.
        bytes: Vec<u8>,
    },
    /// Delete stored metadata that is no longer trusted.
    Remove {
        /// The non-versioned name.
        file: String,
    },
    /// The refresh is complete: every top-level role is fresh and consistent.
    Refreshed,
    /// The target search ended with this target.
    Found(TargetInfo),
}

/// A target that the workflow found in a trusted role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetInfo {
    path: String,
    role: String,
    file: TargetFile,
    consistent_snapshot: bool,
}

impl TargetInfo {
    /// The target path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The role that listed it.
    pub fn role(&self) -> &str {
        &self.role
    }

    /// The signed entry.
    pub fn file(&self) -> &TargetFile {
        &self.file
    }

    /// The path to download under the repository's `targets/`: with consistent snapshots,
    /// `DIR/HASH.NAME` for the target's SHA-256 (or first listed hash), as python-tuf does.
    pub fn download_path(&self) -> String {
        if !self.consistent_snapshot {
            return self.path.clone();
        }
        let hash = self
            .file
            .hashes
            .get("sha256")
            .or_else(|| self.file.hashes.values().next());
        match (hash, self.path.rsplit_once('/')) {
            (None, _) => self.path.clone(),
            (Some(h), Some((dir, name))) => format!("{dir}/{h}.{name}"),
            (Some(h), None) => format!("{h}.{}", self.path),
        }
    }

    /// Check downloaded bytes against the signed length and every hash.
    pub fn verify_bytes(&self, bytes: &[u8]) -> Result<(), Error> {
        check_length_and_hashes(
            &self.path,
            bytes,
            Some(self.file.length),
            Some(&self.file.hashes),
        )
    }

    /// This target as an artifact: listed by the `release` role under `artifacts/`, with a
    /// SHA-256 and valid `custom.enigm` fields.
    pub fn into_artifact(self) -> Result<VerifiedArtifact, Error> {
        let not = |reason: String| Error::NotAnArtifact {
            path: self.path.clone(),
            reason,
        };
        if self.role != RELEASE_ROLE {
            return Err(not(format!(
                "listed by role {}, not {RELEASE_ROLE}",
                self.role
            )));
        }
        if !self.path.starts_with("artifacts/") {
            return Err(not("not under artifacts/".into()));
        }
        let sha256 = self
            .file
            .hashes
            .get("sha256")
            .ok_or_else(|| not("no sha256 hash".into()))?
            .parse::<Sha256Hash>()
            .map_err(|e| not(e.to_string()))?;
        let chunks = artifact_chunks(&self.file).map_err(not)?;
        Ok(VerifiedArtifact::from_verified_parts(
            self.path,
            self.file.length,
            sha256,
            chunks,
        ))
    }
}

/// The TUF client workflow. See the module documentation for the driver loop.
#[derive(Debug)]
pub struct Updater {
    limits: Limits,
    root: Root,
    /// Timestamp and snapshot key identities of the root we started the refresh with.
    start_keys: Option<RoleKeyIdentities>,
    timestamp: Option<Timestamp>,
    snapshot: Option<Snapshot>,
    targets: Option<Targets>,
    delegated: BTreeMap<String, Targets>,
    cached: TrustedFiles,
    step: Step,
    actions: VecDeque<Action>,
    rotations: u32,
}

/// The public keys of the timestamp and snapshot roles, compared across a root rotation.
type RoleKeyIdentities = (BTreeSet<Vec<u8>>, BTreeSet<Vec<u8>>);

#[derive(Debug)]
enum Step {
    Idle,
    Root { next: u64 },
    Timestamp,
    Snapshot,
    Targets,
    Refreshed,
    Search(Search),
    Failed,
}

#[derive(Debug)]
struct Search {
    path: String,
    /// (role, delegating role) pairs still to visit; the last is next.
    stack: Vec<(String, String)>,
    visited: BTreeSet<(String, String)>,
    remaining: u32,
}

impl Updater {
    /// Start from a trusted root (which must be signed by its own threshold) and the trusted
    /// metadata kept from earlier runs.
    pub fn new(limits: Limits, trusted_root: &[u8], cached: TrustedFiles) -> Result<Self, Error> {
        let envelope = Envelope::parse("root", "root.json", trusted_root, limits.root_max_len)?;
        let root: Root = envelope.role()?;
        root.verify_role("root", "root", &envelope)?;
        Ok(Self {
            limits,
            root,
            start_keys: None,
            timestamp: None,
            snapshot: None,
            targets: None,
            delegated: BTreeMap::new(),
            cached,
            step: Step::Idle,
            actions: VecDeque::new(),
            rotations: 0,
        })
    }

    /// The trusted root.
    pub fn root(&self) -> &Root {
        &self.root
    }

    /// The trusted timestamp, once loaded.
    pub fn timestamp(&self) -> Option<&Timestamp> {
        self.timestamp.as_ref()
    }

    /// The trusted snapshot, once loaded.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    /// The trusted top-level targets, once loaded.
    pub fn targets(&self) -> Option<&Targets> {
        self.targets.as_ref()
    }

    /// Begin a refresh of the top-level metadata.
    pub fn refresh(&mut self) -> Result<(), Error> {
        if !matches!(self.step, Step::Idle | Step::Refreshed) {
            return Err(Error::Unexpected(
                "refresh while another operation runs".into(),
            ));
        }
        self.start_keys = Some(self.timestamp_and_snapshot_keys());
        self.rotations = 0;
        self.step = Step::Root {
            next: self.next_root_version()?,
        };
        self.request_root();
        Ok(())
    }

    /// The next thing the driver must do, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Hand over the result of the last [`Action::Fetch`], judged at time `now`.
    pub fn handle_fetched(
        &mut self,
        now: UnixTime,
        request: &FileRequest,
        fetched: Fetched,
    ) -> Result<(), Error> {
        let result = self.advance(now, request, fetched);
        if result.is_err() {
            self.step = Step::Failed;
            self.actions.retain(|a| !matches!(a, Action::Fetch(_)));
        }
        result
    }

    /// Look `path` up through the delegation graph (after a completed refresh).
    pub fn find_target(&mut self, now: UnixTime, path: &str) -> Result<(), Error> {
        if !matches!(self.step, Step::Refreshed) {
            return Err(Error::Unexpected(
                "find_target before a completed refresh".into(),
            ));
        }
        check_target_path("lookup", path)?;
        self.step = Step::Search(Search {
            path: path.into(),
            stack: vec![("targets".into(), String::new())],
            visited: BTreeSet::new(),
            remaining: self.limits.max_delegations,
        });
        let result = self.continue_search(now);
        if result.is_err() {
            self.step = Step::Refreshed;
        }
        result
    }

    fn advance(
        &mut self,
        now: UnixTime,
        request: &FileRequest,
        fetched: Fetched,
    ) -> Result<(), Error> {
        match std::mem::replace(&mut self.step, Step::Failed) {
            Step::Root { next } => {
                self.expect_request(request, &format!("{next}.root.json"))?;
                match fetched {
                    Fetched::Bytes(bytes) => {
                        self.accept_root(next, &bytes)?;
                        self.rotations += 1;
                        self.step = Step::Root {
                            next: self.next_root_version()?,
                        };
                        if self.rotations < self.limits.max_root_rotations {
                            self.request_root();
                            return Ok(());
                        }
                    }
                    Fetched::NotFound => {}
                }
                self.finish_root(now)?;
                self.step = Step::Timestamp;
                if let Some(bytes) = self.cached.timestamp.take() {
                    // A stored copy that no longer verifies is simply not trusted.
                    if self.accept_timestamp(now, &bytes, true).is_err() && self.timestamp.is_none()
                    {
                        self.actions.push_back(Action::Remove {
                            file: "timestamp.json".into(),
                        });
                    }
                }
                self.request(
                    "timestamp",
                    "timestamp.json".into(),
                    self.limits.timestamp_max_len,
                );
                Ok(())
            }
            Step::Timestamp => {
                self.expect_request(request, "timestamp.json")?;
                let bytes = required(request, fetched)?;
                self.accept_timestamp(now, &bytes, false)?;
                self.step = Step::Snapshot;
                if let Some(bytes) = self.cached.snapshot.take()
                    && self.accept_snapshot(now, &bytes, true).is_err()
                    && self.snapshot.is_none()
                {
                    self.actions.push_back(Action::Remove {
                        file: "snapshot.json".into(),
                    });
                }
                if self.snapshot_is_current(now) {
                    return self.after_snapshot(now);
                }
                let meta = self.timestamp_meta().clone();
                let (file, max_len) = self.meta_request("snapshot", &meta)?;
                self.request("snapshot", file, max_len);
                Ok(())
            }
            Step::Snapshot => {
                let meta = self.timestamp_meta().clone();
                let (file, _) = self.meta_request("snapshot", &meta)?;
                self.expect_request(request, &file)?;
                let bytes = required(request, fetched)?;
                check_length_and_hashes(&file, &bytes, meta.length, meta.hashes.as_ref())?;
                self.accept_snapshot(now, &bytes, false)?;
                self.after_snapshot(now)
            }
            Step::Targets => {
                let meta = self.snapshot_meta("targets")?;
                let (file, _) = self.meta_request("targets", &meta)?;
                self.expect_request(request, &file)?;
                let bytes = required(request, fetched)?;
                check_length_and_hashes(&file, &bytes, meta.length, meta.hashes.as_ref())?;
                self.accept_targets(now, "targets", "", &bytes, false)?;
                self.step = Step::Refreshed;
                self.actions.push_back(Action::Refreshed);
                Ok(())
            }
            Step::Search(search) => {
                let Some((role, parent)) = search.stack.last().cloned() else {
                    return Err(Error::Unexpected("no search in progress".into()));
                };
                let meta = self.snapshot_meta(&role)?;
                let (file, _) = self.meta_request(&role, &meta)?;
                self.expect_request(request, &file)?;
                let bytes = required(request, fetched)?;
                check_length_and_hashes(&file, &bytes, meta.length, meta.hashes.as_ref())?;
                self.step = Step::Search(search);
                self.accept_targets(now, &role, &parent, &bytes, false)?;
                self.continue_search(now)
            }
            other @ (Step::Idle | Step::Refreshed | Step::Failed) => {
                self.step = other;
                Err(Error::Unexpected(format!(
                    "{} was not asked for",
                    request.file
                )))
            }
        }
    }

    fn expect_request(&self, request: &FileRequest, file: &str) -> Result<(), Error> {
        if request.file == file {
            Ok(())
        } else {
            Err(Error::Unexpected(format!(
                "got {}, expected {file}",
                request.file
            )))
        }
    }

    fn request(&mut self, role: &str, file: String, max_len: u64) {
        self.actions.push_back(Action::Fetch(FileRequest {
            role: role.into(),
            file,
            max_len,
        }));
    }

    fn next_root_version(&self) -> Result<u64, Error> {
        self.root
            .common
            .version
            .checked_add(1)
            .ok_or_else(|| Error::Malformed {
                file: "root.json".into(),
                reason: "version cannot rise further".into(),
            })
    }

    fn request_root(&mut self) {
        if let Step::Root { next } = self.step {
            self.request(
                "root",
                format!("{next}.root.json"),
                self.limits.root_max_len,
            );
        }
    }

    fn timestamp_and_snapshot_keys(&self) -> RoleKeyIdentities {
        let identities = |role: &str| {
            self.root
                .role_keys(role)
                .keyids
                .iter()
                .filter_map(|id| self.root.keys.get(id))
                .map(|k| k.identity())
                .collect::<BTreeSet<_>>()
        };
        (identities("timestamp"), identities("snapshot"))
    }

    /// Spec 5.3.4–5.3.9: a new root must be signed by the trusted root's threshold and by its
    /// own, and carry the version its file name promised.
    fn accept_root(&mut self, version: u64, bytes: &[u8]) -> Result<(), Error> {
        let file = format!("{version}.root.json");
        let envelope = Envelope::parse("root", &file, bytes, self.limits.root_max_len)?;
        let new: Root = envelope.role()?;
        let trusted = self.root.common.version;
        self.root.verify_role(
            "root",
            &format!("root (trusted version {trusted})"),
            &envelope,
        )?;
        new.verify_role("root", &format!("root (new version {version})"), &envelope)?;
        if new.common.version != version {
            return Err(Error::RootVersionMismatch {
                expected: version,
                found: new.common.version,
            });
        }
        self.root = new;
        self.actions.push_back(Action::Persist {
            file: "root.json".into(),
            bytes: bytes.to_vec(),
        });
        Ok(())
    }

    /// Spec 5.3.10–5.3.11: the final root must be fresh; if it rotated the timestamp or
    /// snapshot keys, the trusted timestamp and snapshot are dropped (fast-forward recovery).
    fn finish_root(&mut self, now: UnixTime) -> Result<(), Error> {
        check_expiry("root", self.root.common.expires, now)?;
        let rotated = self
            .start_keys
            .take()
            .is_some_and(|start| start != self.timestamp_and_snapshot_keys());
        if rotated {
            self.timestamp = None;
            self.snapshot = None;
            self.cached.timestamp = None;
            self.cached.snapshot = None;
            for file in ["timestamp.json", "snapshot.json"] {
                self.actions.push_back(Action::Remove { file: file.into() });
            }
        }
        Ok(())
    }

    /// Spec 5.4.
    fn accept_timestamp(&mut self, now: UnixTime, bytes: &[u8], cached: bool) -> Result<(), Error> {
        let envelope = Envelope::parse(
            "timestamp",
            "timestamp.json",
            bytes,
            self.limits.timestamp_max_len,
        )?;
        let new: Timestamp = envelope.role()?;
        self.root.verify_role("timestamp", "timestamp", &envelope)?;
        if let Some(old) = &self.timestamp {
            if new.common.version < old.common.version {
                return Err(Error::Rollback {
                    role: "timestamp".into(),
                    trusted: old.common.version,
                    offered: new.common.version,
                });
            }
            if new.common.version == old.common.version {
                // Nothing new; keep what we trust.
                return check_expiry("timestamp", old.common.expires, now);
            }
            let (old_snap, new_snap) = (old.snapshot_meta().version, new.snapshot_meta().version);
            if new_snap < old_snap {
                return Err(Error::Rollback {
                    role: "snapshot".into(),
                    trusted: old_snap,
                    offered: new_snap,
                });
            }
        }
        let expires = new.common.expires;
        self.timestamp = Some(new);
        // An expired timestamp stays trusted for rollback checks in this run, but is not
        // stored (python-tuf does the same).
        check_expiry("timestamp", expires, now)?;
        if !cached {
            self.actions.push_back(Action::Persist {
                file: "timestamp.json".into(),
                bytes: bytes.to_vec(),
            });
        }
        Ok(())
    }

    fn timestamp_meta(&self) -> &MetaFile {
        self.timestamp
            .as_ref()
            .map(Timestamp::snapshot_meta)
            .unwrap_or_else(|| unreachable!("snapshot is only handled after timestamp"))
    }

    fn snapshot_is_current(&self, now: UnixTime) -> bool {
        self.snapshot.as_ref().is_some_and(|s| {
            s.common.version == self.timestamp_meta().version && s.common.expires > now
        })
    }

    /// Spec 5.5.
    fn accept_snapshot(&mut self, now: UnixTime, bytes: &[u8], cached: bool) -> Result<(), Error> {
        let file = if cached {
            "snapshot.json".to_string()
        } else {
            self.meta_request("snapshot", &self.timestamp_meta().clone())?
                .0
        };
        let envelope = Envelope::parse("snapshot", &file, bytes, self.limits.snapshot_max_len)?;
        let new: Snapshot = envelope.role()?;
        self.root.verify_role("snapshot", "snapshot", &envelope)?;
        if let Some(old) = &self.snapshot {
            for (name, old_meta) in &old.meta {
                let new_meta = new
                    .meta
                    .get(name)
                    .ok_or_else(|| Error::RoleRemoved { role: name.clone() })?;
                if new_meta.version < old_meta.version {
                    return Err(Error::Rollback {
                        role: name.trim_end_matches(".json").into(),
                        trusted: old_meta.version,
                        offered: new_meta.version,
                    });
                }
            }
        }
        let (version, expires) = (new.common.version, new.common.expires);
        self.snapshot = Some(new);
        let pinned = self.timestamp_meta().version;
        if version != pinned {
            return Err(Error::VersionMismatch {
                role: "snapshot".into(),
                expected: pinned,
                found: version,
            });
        }
        check_expiry("snapshot", expires, now)?;
        if !cached {
            self.actions.push_back(Action::Persist {
                file: "snapshot.json".into(),
                bytes: bytes.to_vec(),
            });
        }
        Ok(())
    }

    fn after_snapshot(&mut self, now: UnixTime) -> Result<(), Error> {
        self.step = Step::Targets;
        if let Some(bytes) = self.cached.targets.take() {
            // A stored targets that is still the pinned version saves a download.
            if self
                .accept_targets(now, "targets", "", &bytes, true)
                .is_ok()
            {
                self.step = Step::Refreshed;
                self.actions.push_back(Action::Refreshed);
                return Ok(());
            }
            self.targets = None;
        }
        let meta = self.snapshot_meta("targets")?;
        let (file, max_len) = self.meta_request("targets", &meta)?;
        self.request("targets", file, max_len);
        Ok(())
    }

    fn snapshot_meta(&self, role: &str) -> Result<MetaFile, Error> {
        let name = format!("{role}.json");
        self.snapshot
            .as_ref()
            .and_then(|s| s.meta.get(&name))
            .cloned()
            .ok_or(Error::NotInSnapshot { role: name })
    }

    /// The file name and read cap for a role pinned by `meta`.
    fn meta_request(&self, role: &str, meta: &MetaFile) -> Result<(String, u64), Error> {
        let file = if self.root.consistent_snapshot {
            format!("{}.{role}.json", meta.version)
        } else {
            format!("{role}.json")
        };
        let cap = if role == "snapshot" {
            self.limits.snapshot_max_len
        } else {
            self.limits.targets_max_len
        };
        match meta.length {
            Some(length) if length > cap => Err(Error::TooLarge {
                file,
                len: length,
                max: cap,
            }),
            Some(length) => Ok((file, length)),
            None => Ok((file, cap)),
        }
    }

    /// Spec 5.6 (and 5.6.7.2 for delegated roles): verify a targets document of `role`,
    /// delegated by `parent` (empty for the top-level role).
    fn accept_targets(
        &mut self,
        now: UnixTime,
        role: &str,
        parent: &str,
        bytes: &[u8],
        cached: bool,
    ) -> Result<(), Error> {
        let meta = self.snapshot_meta(role)?;
        let file = if cached {
            format!("{role}.json")
        } else {
            self.meta_request(role, &meta)?.0
        };
        let envelope = Envelope::parse(role, &file, bytes, self.limits.targets_max_len)?;
        let new: Targets = envelope.role()?;
        if parent.is_empty() {
            self.root.verify_role("targets", "targets", &envelope)?;
        } else {
            let delegations = self.delegations_of(parent)?;
            let delegated = delegations
                .roles
                .iter()
                .find(|d| d.name == role)
                .ok_or_else(|| Error::Unexpected(format!("{parent} does not delegate {role}")))?;
            envelope.verify_threshold(
                role,
                &delegations.keys,
                &delegated.keyids,
                delegated.threshold,
            )?;
        }
        if new.common.version != meta.version {
            return Err(Error::VersionMismatch {
                role: role.into(),
                expected: meta.version,
                found: new.common.version,
            });
        }
        check_expiry(role, new.common.expires, now)?;
        if let Some(delegations) = &new.delegations {
            self.check_release_delegation(delegations)?;
        }
        if parent.is_empty() {
            self.targets = Some(new);
        } else {
            self.delegated.insert(role.into(), new);
        }
        if !cached {
            self.actions.push_back(Action::Persist {
                file: format!("{role}.json"),
                bytes: bytes.to_vec(),
            });
        }
        Ok(())
    }

    /// A `release` delegation must name exactly the keys root pins for the release authority,
    /// with at least its threshold, and be terminating: the manifest key alone cannot swap out
    /// the release authority (DESIGN.md §2).
    fn check_release_delegation(&self, delegations: &Delegations) -> Result<(), Error> {
        let Some(pin) = &self.root.release_authority else {
            return Ok(());
        };
        let Some(release) = delegations.roles.iter().find(|d| d.name == RELEASE_ROLE) else {
            return Ok(());
        };
        let mismatch = |reason: String| Err(Error::ReleaseDelegationMismatch { reason });
        let named: BTreeSet<Vec<u8>> = release
            .keyids
            .iter()
            .filter_map(|id| delegations.keys.get(id))
            .map(|k| k.identity())
            .collect();
        let pinned: BTreeSet<Vec<u8>> = pin
            .keyids
            .iter()
            .filter_map(|id| pin.keys.get(id))
            .map(|k| k.identity())
            .collect();
        if named != pinned {
            return mismatch(format!(
                "delegation names {} key(s) not identical to the {} pinned",
                named.len(),
                pinned.len()
            ));
        }
        if release.threshold < pin.threshold {
            return mismatch(format!(
                "threshold {} below the pinned {}",
                release.threshold, pin.threshold
            ));
        }
        if !release.terminating {
            return mismatch("delegation is not terminating".into());
        }
        Ok(())
    }

    fn delegations_of(&self, role: &str) -> Result<&Delegations, Error> {
        let targets = if role == "targets" {
            self.targets.as_ref()
        } else {
            self.delegated.get(role)
        };
        targets
            .and_then(|t| t.delegations.as_ref())
            .ok_or_else(|| Error::Unexpected(format!("{role} has no delegations")))
    }

    /// Spec 5.6.7: preorder depth-first search, as python-tuf walks it.
    fn continue_search(&mut self, now: UnixTime) -> Result<(), Error> {
        let Step::Search(mut search) = std::mem::replace(&mut self.step, Step::Failed) else {
            return Err(Error::Unexpected("no search in progress".into()));
        };
        while let Some((role, parent)) = search.stack.last().cloned() {
            if search.remaining == 0 {
                return Err(Error::TooManyDelegations {
                    path: search.path,
                    visited: self.limits.max_delegations,
                });
            }
            if search.visited.contains(&(role.clone(), parent.clone())) {
                search.stack.pop();
                continue;
            }
            let loaded = role == "targets" || self.delegated.contains_key(&role);
            if !loaded {
                if let Some(bytes) = self.cached.delegated.remove(&role)
                    && self
                        .accept_targets(now, &role, &parent, &bytes, true)
                        .is_ok()
                {
                    continue;
                }
                let meta = self.snapshot_meta(&role)?;
                let (file, max_len) = self.meta_request(&role, &meta)?;
                self.request(&role, file, max_len);
                self.step = Step::Search(search);
                return Ok(());
            }
            search.stack.pop();
            let targets = if role == "targets" {
                self.targets.as_ref()
            } else {
                self.delegated.get(&role)
            }
            .ok_or_else(|| Error::Unexpected(format!("{role} not loaded")))?;
            if let Some(file) = targets.targets.get(&search.path) {
                let info = TargetInfo {
                    path: search.path.clone(),
                    role: role.clone(),
                    file: file.clone(),
                    consistent_snapshot: self.root.consistent_snapshot,
                };
                self.actions.push_back(Action::Found(info));
                self.step = Step::Refreshed;
                return Ok(());
            }
            search.visited.insert((role.clone(), parent));
            search.remaining -= 1;
            if let Some(delegations) = &targets.delegations {
                let mut children = Vec::new();
                for delegated in &delegations.roles {
                    let covers = match (&delegated.paths, &delegated.path_hash_prefixes) {
                        (Some(patterns), _) => {
                            patterns.iter().any(|p| pattern_matches(p, &search.path))
                        }
                        (None, Some(prefixes)) => hash_prefix_matches(prefixes, &search.path),
                        (None, None) => false,
                    };
                    if covers {
                        children.push((delegated.name.clone(), role.clone()));
                        if delegated.terminating {
                            search.stack.clear();
                            break;
                        }
                    }
                }
                search.stack.extend(children.into_iter().rev());
            }
        }
        self.step = Step::Refreshed;
        Err(Error::TargetNotFound { path: search.path })
    }
}

fn required(request: &FileRequest, fetched: Fetched) -> Result<Vec<u8>, Error> {
    match fetched {
        Fetched::Bytes(bytes) => {
            if bytes.len() as u64 > request.max_len {
                return Err(Error::TooLarge {
                    file: request.file.clone(),
                    len: bytes.len() as u64,
                    max: request.max_len,
                });
            }
            Ok(bytes)
        }
        Fetched::NotFound => Err(Error::FileNotFound {
            file: request.file.clone(),
        }),
    }
}

fn check_expiry(role: &str, expires: UnixTime, now: UnixTime) -> Result<(), Error> {
    if now >= expires {
        return Err(Error::Expired {
            role: role.into(),
            expires,
            now,
        });
    }
    Ok(())
}

/// Check `bytes` against a pinned length and hashes. Unknown algorithms are skipped, but at
/// least one listed algorithm must be one we compute.
fn check_length_and_hashes(
    file: &str,
    bytes: &[u8],
    length: Option<u64>,
    hashes: Option<&BTreeMap<String, String>>,
) -> Result<(), Error> {
    if let Some(expected) = length
        && bytes.len() as u64 != expected
    {
        return Err(Error::LengthMismatch {
            file: file.into(),
            expected,
            found: bytes.len() as u64,
        });
    }
    let Some(hashes) = hashes else {
        return Ok(());
    };
    let mut checked = 0;
    for (algorithm, expected) in hashes {
        let actual = match algorithm.as_str() {
            "sha256" => hex::encode(sha2::Sha256::digest(bytes)),
            "sha512" => hex::encode(sha2::Sha512::digest(bytes)),
            _ => continue,
        };
        checked += 1;
        if !actual.eq_ignore_ascii_case(expected) {
            return Err(Error::HashMismatch {
                file: file.into(),
                algorithm: algorithm.clone(),
            });
        }
    }
    if checked == 0 && !hashes.is_empty() {
        return Err(Error::NoSupportedHash {
            file: file.into(),
            algorithms: hashes.keys().take(8).cloned().collect(),
        });
    }
    Ok(())
}
