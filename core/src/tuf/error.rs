//! The errors of TUF metadata verification.

use crate::time::UnixTime;

use super::key::{KeyError, KeyId};

/// Why metadata or a target was refused. Each variant names the file or role at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file is larger than we are willing to read.
    #[error("{file}: {len} bytes is over the cap of {max} bytes")]
    TooLarge {
        /// The file.
        file: String,
        /// Its length (or the length it claims).
        len: u64,
        /// The cap.
        max: u64,
    },
    /// The file is not well-formed metadata.
    #[error("{file}: malformed metadata: {reason}")]
    Malformed {
        /// The file.
        file: String,
        /// The parser's reason.
        reason: String,
    },
    /// The file holds metadata of another role.
    #[error("{file}: expected _type {expected:?}, found {found:?}")]
    WrongType {
        /// The file.
        file: String,
        /// The role type it should hold.
        expected: &'static str,
        /// The role type it holds.
        found: String,
    },
    /// The metadata is written for a TUF specification major version other than 1.
    #[error("{file}: unsupported spec_version {found:?}")]
    UnsupportedSpecVersion {
        /// The file.
        file: String,
        /// The version it names.
        found: String,
    },
    /// A key listed in metadata cannot be used.
    #[error("{role}: key {keyid}: {reason}")]
    BadKey {
        /// The role whose metadata lists the key.
        role: String,
        /// The key id.
        keyid: KeyId,
        /// Why it cannot be used.
        reason: KeyError,
    },
    /// A role names a key id that the metadata does not define.
    #[error("{role}: role {delegated} names undefined key {keyid}")]
    UndefinedKey {
        /// The role whose metadata is at fault.
        role: String,
        /// The role whose key list names it.
        delegated: String,
        /// The missing key id.
        keyid: KeyId,
    },
    /// A role's threshold is zero or above its number of keys.
    #[error("{role}: role {delegated} has threshold {threshold} with {keys} distinct keys")]
    BadThreshold {
        /// The role whose metadata is at fault.
        role: String,
        /// The role whose threshold it is.
        delegated: String,
        /// The threshold.
        threshold: u64,
        /// The number of distinct keys.
        keys: usize,
    },
    /// Root lacks one of the four top-level roles.
    #[error("root: top-level role {role} is missing")]
    MissingRole {
        /// The missing role.
        role: &'static str,
    },
    /// Not enough distinct keys of the role signed.
    #[error("{role}: {valid} valid signature(s) from distinct keys, {needed} needed")]
    ThresholdNotMet {
        /// The role (for a root rotation: `root (trusted version N)` or `root (new version N)`).
        role: String,
        /// Distinct keys with a valid signature.
        valid: u64,
        /// The threshold.
        needed: u64,
    },
    /// The metadata has expired.
    #[error("{role}: expired at {expires}, now is {now}")]
    Expired {
        /// The role.
        role: String,
        /// Its expiry.
        expires: UnixTime,
        /// The time the driver passed in.
        now: UnixTime,
    },
    /// A new root does not carry the version its file name promised.
    #[error("root: file {expected}.root.json holds version {found}")]
    RootVersionMismatch {
        /// The version asked for (trusted + 1).
        expected: u64,
        /// The version inside the file.
        found: u64,
    },
    /// A role's version differs from the version the referring metadata pins (mix-and-match).
    #[error("{role}: version {found} differs from the pinned version {expected}")]
    VersionMismatch {
        /// The role.
        role: String,
        /// The version pinned by timestamp or snapshot.
        expected: u64,
        /// The version the file holds.
        found: u64,
    },
    /// A role's version went down (rollback attack).
    #[error("{role}: rollback from trusted version {trusted} to {offered}")]
    Rollback {
        /// The role.
        role: String,
        /// The version already trusted.
        trusted: u64,
        /// The lower version offered.
        offered: u64,
    },
    /// The new snapshot no longer lists a role the trusted snapshot listed.
    #[error("snapshot: role {role} listed by the trusted snapshot is missing")]
    RoleRemoved {
        /// The missing role's file name.
        role: String,
    },
    /// A file's hash differs from the one its referrer signed.
    #[error("{file}: {algorithm} hash mismatch")]
    HashMismatch {
        /// The file.
        file: String,
        /// The algorithm that disagreed.
        algorithm: String,
    },
    /// A file's length differs from the one its referrer signed.
    #[error("{file}: length {found} differs from the signed length {expected}")]
    LengthMismatch {
        /// The file.
        file: String,
        /// The signed length.
        expected: u64,
        /// The length received.
        found: u64,
    },
    /// A referrer lists hashes but none in an algorithm we compute.
    #[error("{file}: no supported hash algorithm among {algorithms:?}")]
    NoSupportedHash {
        /// The file.
        file: String,
        /// The algorithms listed.
        algorithms: Vec<String>,
    },
    /// A target path that could escape a directory or means nothing.
    #[error("{role}: dubious target path {path:?}: {reason}")]
    DubiousTargetPath {
        /// The role whose metadata lists it (or `lookup` for a path asked for).
        role: String,
        /// The path, cut to 200 characters.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A delegated role name that cannot name a file.
    #[error("{role}: invalid delegated role name {name:?}")]
    BadRoleName {
        /// The delegating role.
        role: String,
        /// The name, cut to 200 characters.
        name: String,
    },
    /// One key serves both the manifest authority (`targets`) and the release authority.
    #[error("root: key {keyid} is listed for both targets and the release authority")]
    AuthorityKeyShared {
        /// The shared key (as listed for targets).
        keyid: KeyId,
    },
    /// The `release` delegation does not match the release authority pinned in root.
    #[error("targets: delegation of release does not match the root's release authority: {reason}")]
    ReleaseDelegationMismatch {
        /// What differs.
        reason: String,
    },
    /// Snapshot does not list the metadata of a role we need.
    #[error("snapshot: no entry for {role}")]
    NotInSnapshot {
        /// The role file name.
        role: String,
    },
    /// Timestamp's `meta` is not exactly `snapshot.json`.
    #[error("timestamp: meta must list exactly snapshot.json")]
    BadTimestampMeta,
    /// No role on the delegation path lists the target.
    #[error("target {path:?} not found in any trusted role")]
    TargetNotFound {
        /// The path looked up.
        path: String,
    },
    /// The delegation graph is deeper or wider than the configured limit.
    #[error("target {path:?}: gave up after visiting {visited} delegated roles")]
    TooManyDelegations {
        /// The path looked up.
        path: String,
        /// Roles visited.
        visited: u32,
    },
    /// The target is not an artifact with valid `custom.enigm` fields.
    #[error("{path}: not an artifact: {reason}")]
    NotAnArtifact {
        /// The target path.
        path: String,
        /// Why.
        reason: String,
    },
    /// The driver fed a file the updater did not ask for, or asked out of order.
    #[error("unexpected input: {0}")]
    Unexpected(String),
    /// A required file was not found on the repository.
    #[error("{file}: not found on the repository")]
    FileNotFound {
        /// The file.
        file: String,
    },
}
