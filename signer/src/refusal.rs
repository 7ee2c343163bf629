//! Refusals: the signing authority's policy said no (exit code 1). Each names who or what is
//! at fault and carries what an operator needs to understand it.

use ota_core::time::UnixTime;

use crate::request::RequestDigest;
use crate::roles::SignRole;

/// Why the tool refused to sign, approve or perform a ceremony step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// A development file key for an offline role without `--insecure-file-keys`.
    #[error(
        "refusing a file key for {role}: offline roles use keys on tokens (pass \
         --insecure-file-keys only for development)"
    )]
    FileKeyForOfflineRole {
        /// The role.
        role: SignRole,
    },
    /// The key is not one the trusted root lists for the role.
    #[error(
        "key {keyid} is not a {role} key of the trusted root{}",
        listed_for_text(listed_for)
    )]
    KeyNotForRole {
        /// The key.
        keyid: String,
        /// The role asked for.
        role: SignRole,
        /// The roles the root does list it for.
        listed_for: Vec<SignRole>,
    },
    /// An operator's approval key used to sign metadata.
    #[error("key {keyid} is operator {operator}'s approval key; it never signs metadata")]
    OperatorKeyAsRoleKey {
        /// The key.
        keyid: String,
        /// The operator.
        operator: String,
    },
    /// The version is below the last one signed.
    #[error("{role}: version {version} does not rise above version {last} signed before")]
    VersionNotRising {
        /// The role.
        role: SignRole,
        /// The version offered.
        version: u64,
        /// The last version signed at this station.
        last: u64,
    },
    /// The same version was signed before with other content (equivocation).
    #[error(
        "{role}: version {version} was already signed for another request ({signed}); a new \
         request needs a new version"
    )]
    VersionReused {
        /// The role.
        role: SignRole,
        /// The version.
        version: u64,
        /// The digest signed before.
        signed: RequestDigest,
    },
    /// A root that is not the next version of the trusted root.
    #[error(
        "root: version {version} is not the next version of the trusted root (version {trusted})"
    )]
    RootNotNext {
        /// The version offered.
        version: u64,
        /// The trusted root's version (0: none installed).
        trusted: u64,
    },
    /// The metadata has already expired.
    #[error("{role}: expiry {expires} is not in the future (now {now})")]
    Expired {
        /// The role.
        role: SignRole,
        /// Its expiry.
        expires: UnixTime,
        /// Now.
        now: UnixTime,
    },
    /// The expiry is beyond the policy's maximum.
    #[error(
        "{role}: expiry {expires} is beyond the policy's maximum of {max_days} days (latest {latest})"
    )]
    ExpiryTooFar {
        /// The role.
        role: SignRole,
        /// Its expiry.
        expires: UnixTime,
        /// The policy's maximum.
        max_days: u64,
        /// The latest expiry allowed now.
        latest: UnixTime,
    },
    /// A new release manifest does not raise the channel's release number.
    #[error(
        "targets: {path} is a new release {release} on channel {channel}, not above release \
         {last} signed before"
    )]
    ReleaseNotRising {
        /// The manifest path.
        path: String,
        /// The channel.
        channel: String,
        /// The release number offered.
        release: u64,
        /// The last release number signed for the channel.
        last: u64,
    },
    /// A release manifest signed before now has other content.
    #[error("targets: {path} was signed before with other content; a release is never changed")]
    ManifestChanged {
        /// The manifest path.
        path: String,
    },
    /// The metadata contradicts itself, the trusted root or a given manifest.
    #[error("{role}: inconsistent metadata: {reason}")]
    Inconsistent {
        /// The role.
        role: SignRole,
        /// What contradicts what.
        reason: String,
    },
    /// The request carries a signature that is not a valid one of the role's keys.
    #[error(
        "request carries a signature by key {keyid} that {reason}; it was altered or is not ours"
    )]
    ForeignSignature {
        /// The key id in the entry.
        keyid: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The policy has no rules for the role.
    #[error("the station's policy has no rules for role {role}; it cannot be signed here")]
    NoPolicyForRole {
        /// The role.
        role: SignRole,
    },
    /// Too few approvals.
    #[error("{role}: {have} valid approval(s) from distinct operators, {needed} needed")]
    TooFewApprovals {
        /// The role.
        role: SignRole,
        /// Approvals that counted.
        have: u64,
        /// Approvals needed.
        needed: u64,
    },
    /// An approval for another request.
    #[error(
        "operator {operator}'s approval is for request {approved}, not {request}; approvals \
         cannot be reused"
    )]
    ApprovalForAnotherRequest {
        /// The operator.
        operator: String,
        /// The request they approved.
        approved: RequestDigest,
        /// The request being signed.
        request: RequestDigest,
    },
    /// An approval for another role.
    #[error("operator {operator}'s approval is for role {approved}, not {role}")]
    ApprovalForAnotherRole {
        /// The operator.
        operator: String,
        /// The role they approved.
        approved: SignRole,
        /// The role being signed.
        role: SignRole,
    },
    /// An expired approval.
    #[error("operator {operator}'s approval expired at {expires} (now {now})")]
    ApprovalExpired {
        /// The operator.
        operator: String,
        /// Its expiry.
        expires: UnixTime,
        /// Now.
        now: UnixTime,
    },
    /// An approval valid for longer than the policy allows.
    #[error(
        "operator {operator}'s approval is valid for {hours} hours; the policy allows {max_hours}"
    )]
    ApprovalTooLong {
        /// The operator.
        operator: String,
        /// Its lifetime.
        hours: i64,
        /// The policy's maximum.
        max_hours: u64,
    },
    /// One operator approved twice.
    #[error(
        "operator {operator} approved more than once; approvals must come from distinct \
         operators"
    )]
    DuplicateApproval {
        /// The operator.
        operator: String,
    },
    /// An approval by a key the policy does not list.
    #[error("approval signed by key {keyid}, which is no operator of the policy")]
    UnknownOperator {
        /// The key.
        keyid: String,
    },
    /// The approving key is no operator's.
    #[error("key {keyid} is no operator's approval key in the policy")]
    NotAnOperator {
        /// The key.
        keyid: String,
    },
    /// An approval by a revoked operator.
    #[error("operator {operator} was revoked at {revoked}")]
    OperatorRevoked {
        /// The operator.
        operator: String,
        /// When.
        revoked: UnixTime,
    },
    /// An approval that cannot be read or verified.
    #[error("bad approval: {reason}")]
    BadApproval {
        /// What is wrong.
        reason: String,
    },
    /// An approval asked to live longer than the policy allows.
    #[error("an approval may be valid for at most {max_hours} hours")]
    ApprovalLifetime {
        /// The policy's maximum.
        max_hours: u64,
    },
    /// Signed metadata does not meet a threshold yet.
    #[error("{role}: thresholds not met: {status}")]
    Incomplete {
        /// The role.
        role: SignRole,
        /// The status of each threshold.
        status: String,
    },
    /// The operator did not confirm.
    #[error("the operator declined")]
    Declined,
    /// The audit log is damaged; nothing is signed until it is repaired.
    #[error("audit log: {problem}; nothing is signed until an auditor has looked at it")]
    AuditDamaged {
        /// The first problem found.
        problem: String,
    },
}

fn listed_for_text(roles: &[SignRole]) -> String {
    if roles.is_empty() {
        " (the root lists it for no role)".into()
    } else {
        let names: Vec<&str> = roles.iter().map(|r| r.name()).collect();
        format!(" (the root lists it for {})", names.join(", "))
    }
}
