//! The roles the tool signs for, and which keys a trusted root lists for each.

use std::collections::BTreeMap;
use std::fmt;

use ota_core::tuf::metadata::{RELEASE_ROLE, Root};
use ota_core::tuf::{Key, KeyId};
use p256::pkcs8::DecodePublicKey as _;
use serde::{Deserialize, Serialize};

/// A role whose metadata the tool signs.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum SignRole {
    /// `root`: offline keys, threshold; signed at root ceremonies.
    Root,
    /// `targets`: the manifest signing authority (offline PIV key).
    Targets,
    /// Delegated `release`: the release-signing authority (HSM, dual control).
    Release,
    /// `snapshot`: an online role of the origin.
    Snapshot,
    /// `timestamp`: an online role of the origin.
    Timestamp,
}

impl SignRole {
    /// The role's name in metadata.
    pub fn name(self) -> &'static str {
        match self {
            Self::Root => "root",
            Self::Targets => "targets",
            Self::Release => RELEASE_ROLE,
            Self::Snapshot => "snapshot",
            Self::Timestamp => "timestamp",
        }
    }

    /// The `_type` its metadata carries.
    pub fn metadata_type(self) -> &'static str {
        match self {
            Self::Release => "targets",
            other => other.name(),
        }
    }

    /// Roles whose keys must stay offline on tokens: file keys are refused for them.
    pub fn is_offline(self) -> bool {
        matches!(self, Self::Root | Self::Targets | Self::Release)
    }
}

impl fmt::Display for SignRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A public key's identity independent of how it is written (an ECDSA key may be written as
/// PEM in several ways): Ed25519 raw bytes, P-256 compressed point. `None` for a key we
/// cannot use.
pub fn key_identity(key: &Key) -> Option<Vec<u8>> {
    if key.unusable().is_some() {
        return None;
    }
    let public = crate::backend::file::public_value(key);
    match key.scheme() {
        "ed25519" => hex::decode(&public).ok().map(|b| [&[0u8][..], &b].concat()),
        "ecdsa-sha2-nistp256" => p256::ecdsa::VerifyingKey::from_public_key_pem(&public)
            .ok()
            .map(|k| [&[1u8][..], k.to_encoded_point(true).as_bytes()].concat()),
        _ => None,
    }
}

/// Whether two keys are the same public key.
pub fn same_key(a: &Key, b: &Key) -> bool {
    match (key_identity(a), key_identity(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// The keys and threshold a root gives one role.
#[derive(Debug, Clone)]
pub struct RoleKeySet {
    /// Key id → key, restricted to the role's key ids.
    pub keys: BTreeMap<KeyId, Key>,
    /// The role's key ids in listed order.
    pub keyids: Vec<KeyId>,
    /// Distinct keys needed.
    pub threshold: u64,
}

impl RoleKeySet {
    /// The key id under which this set lists `key`, if it does.
    pub fn find(&self, key: &Key) -> Option<&KeyId> {
        self.keyids
            .iter()
            .find(|id| self.keys.get(*id).is_some_and(|k| same_key(k, key)))
    }
}

/// The keys root lists for `role`; `None` for `release` when root pins no release authority.
pub fn role_keys(root: &Root, role: SignRole) -> Option<RoleKeySet> {
    if role == SignRole::Release {
        let authority = root.release_authority.as_ref()?;
        return Some(RoleKeySet {
            keys: authority
                .keyids
                .iter()
                .filter_map(|id| authority.keys.get(id).map(|k| (id.clone(), k.clone())))
                .collect(),
            keyids: authority.keyids.clone(),
            threshold: authority.threshold,
        });
    }
    let listed = root.roles.get(role.name())?;
    Some(RoleKeySet {
        keys: listed
            .keyids
            .iter()
            .filter_map(|id| root.keys.get(id).map(|k| (id.clone(), k.clone())))
            .collect(),
        keyids: listed.keyids.clone(),
        threshold: listed.threshold,
    })
}

/// Every role `root` lists `key` for (the release authority as `release`).
pub fn roles_of(root: &Root, key: &Key) -> Vec<SignRole> {
    [
        SignRole::Root,
        SignRole::Targets,
        SignRole::Release,
        SignRole::Snapshot,
        SignRole::Timestamp,
    ]
    .into_iter()
    .filter(|role| role_keys(root, *role).is_some_and(|set| set.find(key).is_some()))
    .collect()
}

#[cfg(test)]
mod tests {
    use ota_core::tuf::InMemoryKey;

    use super::*;

    #[test]
    fn identity_ignores_how_a_key_is_written() {
        let k = InMemoryKey::p256_from_scalar([9; 32]).unwrap().public();
        // The legacy keytype writes the same public key under another key id.
        let mut json = serde_json::to_value(&k).unwrap();
        json["keytype"] = "ecdsa-sha2-nistp256".into();
        let legacy: Key = serde_json::from_value(json).unwrap();
        assert_ne!(legacy.key_id(), k.key_id());
        assert!(same_key(&legacy, &k));
        let other = InMemoryKey::ed25519_from_seed([9; 32]).public();
        assert!(!same_key(&other, &k));
    }
}
