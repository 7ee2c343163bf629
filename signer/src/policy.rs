//! The signing policy of a station (`policy.json`), written by people and reviewed like code.
//!
//! ```json
//! {
//!   "operators": {
//!     "alice": { "key": { "keytype": "ecdsa", "scheme": "ecdsa-sha2-nistp256", "keyval": { "public": "-----BEGIN PUBLIC KEY-----\n…" } } },
//!     "carol": { "key": { … }, "revoked": "2027-03-01T00:00:00Z" }
//!   },
//!   "roles": {
//!     "root":      { "max_expiry_days": 365 },
//!     "targets":   { "max_expiry_days": 90 },
//!     "release":   { "max_expiry_days": 90, "approvals": 2 },
//!     "snapshot":  { "max_expiry_days": 7 },
//!     "timestamp": { "max_expiry_days": 1 }
//!   },
//!   "approval_max_hours": 24
//! }
//! ```
//!
//! Rules: operator names are `[a-z0-9][a-z0-9._-]*` (at most 64); operator keys are usable and
//! distinct; an operator is never deleted, only `revoked` (so the audit log stays verifiable);
//! `max_expiry_days` is 1 to 3660; `release`, if present, needs at least 2 approvals (dual
//! control) and no more than there are operators; `approval_max_hours` is 1 to 720 (default
//! 24). A role missing from `roles` cannot be signed at this station.

use std::collections::BTreeMap;

use ota_core::time::UnixTime;
use ota_core::tuf::Key;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::roles::{SignRole, key_identity, same_key};

/// Largest policy file read.
pub const MAX_POLICY_LEN: u64 = 1024 * 1024;

/// The policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Operators who approve requests, by name.
    pub operators: BTreeMap<String, Operator>,
    /// Per-role rules.
    pub roles: BTreeMap<SignRole, RolePolicy>,
    /// The longest an approval may be valid, in hours.
    #[serde(default = "default_approval_hours")]
    pub approval_max_hours: u64,
}

fn default_approval_hours() -> u64 {
    24
}

/// An operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operator {
    /// The operator's approval key (on their own token).
    pub key: Key,
    /// From this time on, the operator's approvals are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<UnixTime>,
}

/// Rules for one role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolePolicy {
    /// The latest expiry a signature may vouch for, in days from now.
    pub max_expiry_days: u64,
    /// Distinct operators who must approve a request before the role's key signs it.
    #[serde(default)]
    pub approvals: u64,
}

/// The policy file is unusable: the station's configuration is at fault (exit code 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
#[error("policy: {reason}")]
pub struct PolicyError {
    /// What is wrong.
    pub reason: String,
}

impl Policy {
    /// Parse and check a policy file.
    pub fn parse(bytes: &[u8]) -> Result<Self, PolicyError> {
        let err = |reason: String| PolicyError { reason };
        let policy: Self = serde_json::from_slice(bytes).map_err(|e| err(e.to_string()))?;
        let mut seen: Vec<(&str, &Key)> = Vec::new();
        for (name, operator) in &policy.operators {
            let ok_name = name.len() <= 64
                && name
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
            if !ok_name {
                return Err(err(format!(
                    "operator name {name:?} is not [a-z0-9][a-z0-9._-]*"
                )));
            }
            if key_identity(&operator.key).is_none() {
                return Err(err(format!("operator {name}: key is not usable")));
            }
            if let Some((other, _)) = seen.iter().find(|(_, k)| same_key(k, &operator.key)) {
                return Err(err(format!("operators {other} and {name} share one key")));
            }
            seen.push((name, &operator.key));
        }
        for (role, rules) in &policy.roles {
            if !(1..=3660).contains(&rules.max_expiry_days) {
                return Err(err(format!(
                    "{role}: max_expiry_days {} is outside 1..=3660",
                    rules.max_expiry_days
                )));
            }
            if *role == SignRole::Release && rules.approvals < 2 {
                return Err(err(format!(
                    "release: approvals {} is below 2; the release authority is under dual \
                     control",
                    rules.approvals
                )));
            }
            if rules.approvals > policy.operators.len() as u64 {
                return Err(err(format!(
                    "{role}: {} approvals needed but only {} operators exist",
                    rules.approvals,
                    policy.operators.len()
                )));
            }
        }
        if !(1..=720).contains(&policy.approval_max_hours) {
            return Err(err(format!(
                "approval_max_hours {} is outside 1..=720",
                policy.approval_max_hours
            )));
        }
        Ok(policy)
    }

    /// The operator holding `key`, if any.
    pub fn operator_by_key(&self, key: &Key) -> Option<(&str, &Operator)> {
        self.operators
            .iter()
            .find(|(_, op)| same_key(&op.key, key))
            .map(|(name, op)| (name.as_str(), op))
    }
}

/// The SHA-256 of the policy file as read, recorded in every signature and approval entry of
/// the audit log so that an auditor sees which policy each was made under.
pub fn policy_digest(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use ota_core::tuf::InMemoryKey;
    use serde_json::json;

    use super::*;

    fn key(seed: u8) -> serde_json::Value {
        serde_json::to_value(InMemoryKey::ed25519_from_seed([seed; 32]).public()).unwrap()
    }

    fn policy(release_approvals: u64) -> serde_json::Value {
        json!({
            "operators": { "alice": {"key": key(1)}, "bob": {"key": key(2)} },
            "roles": { "release": {"max_expiry_days": 90, "approvals": release_approvals} }
        })
    }

    #[test]
    fn accepts_a_dual_control_policy() {
        let p = Policy::parse(&serde_json::to_vec(&policy(2)).unwrap()).unwrap();
        assert_eq!(p.approval_max_hours, 24);
        let alice = InMemoryKey::ed25519_from_seed([1; 32]).public();
        assert_eq!(p.operator_by_key(&alice).unwrap().0, "alice");
    }

    #[test]
    fn refuses_weak_or_impossible_rules() {
        let err = Policy::parse(&serde_json::to_vec(&policy(1)).unwrap()).unwrap_err();
        assert!(err.reason.contains("dual control"), "{err}");
        let err = Policy::parse(&serde_json::to_vec(&policy(3)).unwrap()).unwrap_err();
        assert!(err.reason.contains("only 2 operators"), "{err}");
        let mut shared = policy(2);
        shared["operators"]["bob"]["key"] = key(1);
        let err = Policy::parse(&serde_json::to_vec(&shared).unwrap()).unwrap_err();
        assert!(err.reason.contains("share one key"), "{err}");
        let mut unknown = policy(2);
        unknown["approvals_for_everyone"] = json!(0);
        assert!(Policy::parse(&serde_json::to_vec(&unknown).unwrap()).is_err());
        let mut bad_name = policy(2);
        bad_name["operators"]["Eve Smith"] = json!({"key": key(3)});
        assert!(Policy::parse(&serde_json::to_vec(&bad_name).unwrap()).is_err());
    }
}
