//! The TUF metadata documents: the envelope, the four top-level roles and delegations.
//!
//! Parsing is two-staged. [`Envelope::parse`] bounds the file size, checks the envelope's
//! shape and keeps the canonical bytes of `signed` exactly as received; signatures are
//! checked over those bytes. The role's typed form is then parsed from the same value with
//! every static rule applied (types, key formats, thresholds, role names, target paths), so a
//! role object that exists is well-formed. Unknown fields inside `signed` are kept (TUF allows
//! them, and our root extension relies on stock clients keeping them); unknown fields in the
//! envelope or in a signature entry are refused.

use std::collections::{BTreeMap, BTreeSet};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::canonical::to_canonical;
use super::error::Error;
use super::key::{InMemoryKey, Key, KeyId};
use super::path::{check_role_name, check_target_path};
use crate::time::UnixTime;

/// The spec version we write.
pub const SPEC_VERSION: &str = "1.0.31";

/// Name of the root extension field that pins the release authority.
pub const RELEASE_AUTHORITY_FIELD: &str = "x-enigm-release-authority";

/// Name of the delegated role of the production release-signing authority.
pub const RELEASE_ROLE: &str = "release";

/// One signature entry of an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// The key id of the signer.
    pub keyid: KeyId,
    /// The signature, hex.
    pub sig: String,
}

/// A metadata file as received: its signatures and the `signed` object with its canonical
/// bytes.
#[derive(Debug, Clone)]
pub struct Envelope {
    role: String,
    file: String,
    signatures: Vec<Signature>,
    signed: Value,
    canonical: Vec<u8>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeJson {
    signatures: Vec<Signature>,
    signed: Value,
}

/// Signatures per envelope we look at; more is a malformed file (bounds verification work).
pub const MAX_SIGNATURES: usize = 1024;

impl Envelope {
    /// Parse `bytes` as the metadata file `file` of role `role`, refusing anything over
    /// `max_len` bytes before parsing.
    pub fn parse(role: &str, file: &str, bytes: &[u8], max_len: u64) -> Result<Self, Error> {
        if bytes.len() as u64 > max_len {
            return Err(Error::TooLarge {
                file: file.into(),
                len: bytes.len() as u64,
                max: max_len,
            });
        }
        let malformed = |reason: String| Error::Malformed {
            file: file.into(),
            reason,
        };
        let json: EnvelopeJson =
            serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
        if json.signatures.len() > MAX_SIGNATURES {
            return Err(malformed(format!(
                "{} signatures, at most {MAX_SIGNATURES} allowed",
                json.signatures.len()
            )));
        }
        if !json.signed.is_object() {
            return Err(malformed("signed is not an object".into()));
        }
        // serde_json reads integers beyond 64 bits as floats, which canonical JSON refuses.
        let canonical = to_canonical(&json.signed).map_err(|_| {
            malformed(
                "a number is not an integer of at most 64 bits (canonical JSON has no floats)"
                    .into(),
            )
        })?;
        Ok(Self {
            role: role.into(),
            file: file.into(),
            signatures: json.signatures,
            signed: json.signed,
            canonical,
        })
    }

    /// The file name this envelope was parsed as.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The signatures, in file order.
    pub fn signatures(&self) -> &[Signature] {
        &self.signatures
    }

    /// The canonical bytes signatures are made over.
    pub fn canonical_signed(&self) -> &[u8] {
        &self.canonical
    }

    /// The `signed` object as received.
    pub fn signed(&self) -> &Value {
        &self.signed
    }

    /// Add a signature made over [`Self::canonical_signed`]. A signature by the same key id
    /// replaces the earlier one, so co-signing in turn never duplicates an entry.
    pub fn add_signature(&mut self, signature: Signature) {
        self.signatures.retain(|s| s.keyid != signature.keyid);
        self.signatures.push(signature);
    }

    /// The metadata file's bytes: pretty JSON with a final newline, `signed` unchanged.
    pub fn to_bytes(&self) -> Vec<u8> {
        let envelope = serde_json::json!({ "signatures": self.signatures, "signed": self.signed });
        let mut out = serde_json::to_vec_pretty(&envelope)
            .unwrap_or_else(|_| unreachable!("a JSON value serialises"));
        out.push(b'\n');
        out
    }

    /// Parse the `signed` object as role `R`, applying its static rules.
    pub fn role<R: Role>(&self) -> Result<R, Error> {
        let found = self
            .signed
            .get("_type")
            .and_then(Value::as_str)
            .unwrap_or("");
        if found != R::TYPE {
            return Err(Error::WrongType {
                file: self.file.clone(),
                expected: R::TYPE,
                found: found.chars().take(64).collect(),
            });
        }
        let role: R =
            serde_json::from_value(self.signed.clone()).map_err(|e| Error::Malformed {
                file: self.file.clone(),
                reason: e.to_string(),
            })?;
        check_spec_version(&self.file, &role.common().spec_version)?;
        if role.common().version == 0 {
            return Err(Error::Malformed {
                file: self.file.clone(),
                reason: "version must be at least 1".into(),
            });
        }
        role.check(&self.role, &self.file)?;
        Ok(role)
    }

    /// Count the distinct keys among `keys` (restricted to `keyids`) with a valid signature,
    /// and refuse if fewer than `threshold`. A key id signing twice, or one key listed under
    /// two ids, counts once.
    pub fn verify_threshold(
        &self,
        role: &str,
        keys: &BTreeMap<KeyId, Key>,
        keyids: &[KeyId],
        threshold: u64,
    ) -> Result<(), Error> {
        let mut counted_ids = BTreeSet::new();
        let mut counted_keys = BTreeSet::new();
        for signature in &self.signatures {
            if !keyids.contains(&signature.keyid) || counted_ids.contains(&signature.keyid) {
                continue;
            }
            let Some(key) = keys.get(&signature.keyid) else {
                continue;
            };
            if signature.sig.len() > 1024 || signature.sig.bytes().any(|b| b.is_ascii_uppercase()) {
                continue;
            }
            let Ok(sig) = hex::decode(&signature.sig) else {
                continue;
            };
            if key.verify(&self.canonical, &sig) {
                counted_ids.insert(signature.keyid.clone());
                counted_keys.insert(key.identity());
            }
        }
        let valid = counted_keys.len() as u64;
        if valid < threshold {
            return Err(Error::ThresholdNotMet {
                role: role.into(),
                valid,
                needed: threshold,
            });
        }
        Ok(())
    }
}

fn check_spec_version(file: &str, version: &str) -> Result<(), Error> {
    let mut parts = version.split('.');
    let ok = parts.next() == Some("1")
        && parts.clone().count() <= 2
        && parts.all(|p| !p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(Error::UnsupportedSpecVersion {
            file: file.into(),
            found: version.chars().take(64).collect(),
        })
    }
}

/// Fields every role has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Common {
    /// The role type.
    #[serde(rename = "_type")]
    pub type_: String,
    /// The TUF spec version the metadata follows.
    pub spec_version: String,
    /// The metadata version, rising with every change.
    pub version: u64,
    /// When the metadata stops being trusted.
    pub expires: UnixTime,
}

impl Common {
    /// Common fields for a new role document.
    pub fn new(type_: &str, version: u64, expires: UnixTime) -> Self {
        Self {
            type_: type_.into(),
            spec_version: SPEC_VERSION.into(),
            version,
            expires,
        }
    }
}

/// A typed role document.
pub trait Role: DeserializeOwned + Serialize {
    /// Its `_type`.
    const TYPE: &'static str;

    /// Its common fields.
    fn common(&self) -> &Common;

    /// Static rules beyond the JSON shape; `role` is the role's name, `file` its file.
    fn check(&self, role: &str, file: &str) -> Result<(), Error>;
}

/// A role's keys and threshold as root lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleKeys {
    /// The key ids allowed to sign for the role.
    pub keyids: Vec<KeyId>,
    /// How many distinct keys must sign.
    pub threshold: u64,
    /// Unknown fields, kept.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// The release authority pinned in root (`x-enigm-release-authority`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseAuthority {
    /// The authority's keys.
    pub keys: BTreeMap<KeyId, Key>,
    /// The key ids, as in a role.
    pub keyids: Vec<KeyId>,
    /// How many distinct keys must sign release metadata.
    pub threshold: u64,
}

/// The `root` role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Root {
    /// Common fields.
    #[serde(flatten)]
    pub common: Common,
    /// Whether files are published under version-prefixed names.
    pub consistent_snapshot: bool,
    /// Every key of the top-level roles.
    pub keys: BTreeMap<KeyId, Key>,
    /// The four top-level roles.
    pub roles: BTreeMap<String, RoleKeys>,
    /// Our pin of the release authority (see DESIGN.md §2), if any.
    #[serde(
        rename = "x-enigm-release-authority",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub release_authority: Option<ReleaseAuthority>,
    /// Unknown fields, kept.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// The top-level roles.
pub const TOP_LEVEL_ROLES: [&str; 4] = ["root", "timestamp", "snapshot", "targets"];

impl Root {
    /// The keys and threshold of top-level role `name` (present: [`Role::check`] ensured it).
    pub fn role_keys(&self, name: &str) -> &RoleKeys {
        self.roles
            .get(name)
            .unwrap_or_else(|| unreachable!("root was checked to list {name}"))
    }

    /// Verify `envelope` as top-level role `name` under this root.
    pub fn verify_role(&self, name: &str, label: &str, envelope: &Envelope) -> Result<(), Error> {
        let role = self.role_keys(name);
        envelope.verify_threshold(label, &self.keys, &role.keyids, role.threshold)
    }
}

impl Role for Root {
    const TYPE: &'static str = "root";

    fn common(&self) -> &Common {
        &self.common
    }

    fn check(&self, _role: &str, _file: &str) -> Result<(), Error> {
        for name in TOP_LEVEL_ROLES {
            let role = self
                .roles
                .get(name)
                .ok_or(Error::MissingRole { role: name })?;
            check_role_keys("root", name, &self.keys, &role.keyids, role.threshold)?;
        }
        if let Some(authority) = &self.release_authority {
            check_role_keys(
                "root",
                RELEASE_AUTHORITY_FIELD,
                &authority.keys,
                &authority.keyids,
                authority.threshold,
            )?;
            // The two signing authorities must stay distinct (DESIGN.md §2).
            let release: BTreeSet<Vec<u8>> = authority
                .keyids
                .iter()
                .filter_map(|id| authority.keys.get(id))
                .map(Key::identity)
                .collect();
            for id in &self.role_keys("targets").keyids {
                if let Some(key) = self.keys.get(id)
                    && release.contains(&key.identity())
                {
                    return Err(Error::AuthorityKeyShared { keyid: id.clone() });
                }
            }
        }
        Ok(())
    }
}

/// Check that every key id of a role is defined, and that the threshold is reachable by
/// distinct keys.
fn check_role_keys(
    role: &str,
    delegated: &str,
    keys: &BTreeMap<KeyId, Key>,
    keyids: &[KeyId],
    threshold: u64,
) -> Result<(), Error> {
    let mut distinct = BTreeSet::new();
    for id in keyids {
        let key = keys.get(id).ok_or_else(|| Error::UndefinedKey {
            role: role.into(),
            delegated: delegated.into(),
            keyid: id.clone(),
        })?;
        if let Some(reason) = key.unusable() {
            return Err(Error::BadKey {
                role: role.into(),
                keyid: id.clone(),
                reason: reason.clone(),
            });
        }
        distinct.insert(key.identity());
    }
    if threshold == 0 || threshold > distinct.len() as u64 {
        return Err(Error::BadThreshold {
            role: role.into(),
            delegated: delegated.into(),
            threshold,
            keys: distinct.len(),
        });
    }
    Ok(())
}

/// A reference to a metadata file from timestamp or snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaFile {
    /// The version it pins.
    pub version: u64,
    /// Its length in bytes, if pinned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    /// Its hashes, if pinned (algorithm → hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hashes: Option<BTreeMap<String, String>>,
    /// Unknown fields, kept.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl MetaFile {
    /// A reference pinning the version only.
    pub fn version(version: u64) -> Self {
        Self {
            version,
            length: None,
            hashes: None,
            extra: BTreeMap::new(),
        }
    }
}

/// The `timestamp` role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timestamp {
    /// Common fields.
    #[serde(flatten)]
    pub common: Common,
    /// Exactly one entry, `snapshot.json`.
    pub meta: BTreeMap<String, MetaFile>,
    /// Unknown fields, kept.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Timestamp {
    /// The snapshot reference.
    pub fn snapshot_meta(&self) -> &MetaFile {
        self.meta
            .get("snapshot.json")
            .unwrap_or_else(|| unreachable!("timestamp was checked to list snapshot.json"))
    }
}

impl Role for Timestamp {
    const TYPE: &'static str = "timestamp";

    fn common(&self) -> &Common {
        &self.common
    }

    fn check(&self, _role: &str, _file: &str) -> Result<(), Error> {
        if self.meta.len() != 1 || !self.meta.contains_key("snapshot.json") {
            return Err(Error::BadTimestampMeta);
        }
        Ok(())
    }
}

/// The `snapshot` role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Common fields.
    #[serde(flatten)]
    pub common: Common,
    /// `targets.json` and every delegated role's `NAME.json`.
    pub meta: BTreeMap<String, MetaFile>,
    /// Unknown fields, kept.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Role for Snapshot {
    const TYPE: &'static str = "snapshot";

    fn common(&self) -> &Common {
        &self.common
    }

    fn check(&self, _role: &str, file: &str) -> Result<(), Error> {
        for name in self.meta.keys() {
            let Some(role) = name.strip_suffix(".json") else {
                return Err(Error::Malformed {
                    file: file.into(),
                    reason: format!("meta entry {name:?} is not a .json file"),
                });
            };
            if role != "targets" {
                check_role_name("snapshot", role)?;
            }
        }
        Ok(())
    }
}

/// A target file entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetFile {
    /// Its length in bytes.
    pub length: u64,
    /// Its hashes (algorithm → hex). Only algorithms stock clients know: `sha256`, `sha512`.
    pub hashes: BTreeMap<String, String>,
    /// Application fields; ours live under `enigm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<Value>,
    /// Unknown fields, kept.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// A delegated role as its delegator lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelegatedRole {
    /// The role name (also its file name, `NAME.json`).
    pub name: String,
    /// The key ids allowed to sign.
    pub keyids: Vec<KeyId>,
    /// How many distinct keys must sign.
    pub threshold: u64,
    /// Whether the search stops at this role.
    #[serde(default)]
    pub terminating: bool,
    /// Shell-style path patterns the role is trusted for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    /// SHA-256 prefixes of target paths the role is trusted for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_hash_prefixes: Option<Vec<String>>,
    /// Unknown fields, kept.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// A targets role's delegations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delegations {
    /// Keys of the delegated roles.
    pub keys: BTreeMap<KeyId, Key>,
    /// The delegated roles, in search order.
    pub roles: Vec<DelegatedRole>,
    /// Unknown fields, kept.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// Delegated roles one targets document may list.
pub const MAX_DELEGATED_ROLES: usize = 256;

/// The `targets` role and every delegated targets role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Targets {
    /// Common fields.
    #[serde(flatten)]
    pub common: Common,
    /// Target path → file.
    pub targets: BTreeMap<String, TargetFile>,
    /// Delegations, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegations: Option<Delegations>,
    /// Unknown fields, kept.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Role for Targets {
    const TYPE: &'static str = "targets";

    fn common(&self) -> &Common {
        &self.common
    }

    fn check(&self, role: &str, file: &str) -> Result<(), Error> {
        for path in self.targets.keys() {
            check_target_path(role, path)?;
        }
        if let Some(delegations) = &self.delegations {
            if delegations.extra.contains_key("succinct_roles") {
                return Err(Error::Malformed {
                    file: file.into(),
                    reason: "succinct_roles delegations are not supported".into(),
                });
            }
            if delegations.roles.len() > MAX_DELEGATED_ROLES {
                return Err(Error::Malformed {
                    file: file.into(),
                    reason: format!(
                        "{} delegated roles, at most {MAX_DELEGATED_ROLES}",
                        delegations.roles.len()
                    ),
                });
            }
            let mut names = BTreeSet::new();
            for delegated in &delegations.roles {
                check_role_name(role, &delegated.name)?;
                if TOP_LEVEL_ROLES.contains(&delegated.name.as_str())
                    || !names.insert(&delegated.name)
                {
                    return Err(Error::BadRoleName {
                        role: role.into(),
                        name: delegated.name.clone(),
                    });
                }
                if delegated.paths.is_some() == delegated.path_hash_prefixes.is_some() {
                    return Err(Error::Malformed {
                        file: file.into(),
                        reason: format!(
                            "delegated role {} must have exactly one of paths and \
                             path_hash_prefixes",
                            delegated.name
                        ),
                    });
                }
                check_role_keys(
                    role,
                    &delegated.name,
                    &delegations.keys,
                    &delegated.keyids,
                    delegated.threshold,
                )?;
            }
        }
        Ok(())
    }
}

/// Sign a role document with `keys` and return the metadata file's bytes (pretty JSON, as
/// repositories usually publish it; signatures cover the canonical form).
pub fn sign_role<R: Role>(role: &R, keys: &[&InMemoryKey]) -> Vec<u8> {
    sign_document(role, keys)
}

/// Sign any JSON document the way TUF metadata is signed (used for director offers too).
pub fn sign_document<T: Serialize>(document: &T, keys: &[&InMemoryKey]) -> Vec<u8> {
    let signed = serde_json::to_value(document)
        .unwrap_or_else(|_| unreachable!("role documents serialise to JSON"));
    let canonical =
        to_canonical(&signed).unwrap_or_else(|_| unreachable!("role documents hold no floats"));
    let signatures: Vec<Signature> = keys
        .iter()
        .map(|key| Signature {
            keyid: key.public().key_id(),
            sig: hex::encode(key.sign(&canonical)),
        })
        .collect();
    let envelope = serde_json::json!({ "signatures": signatures, "signed": signed });
    let mut out = serde_json::to_vec_pretty(&envelope)
        .unwrap_or_else(|_| unreachable!("a JSON value serialises"));
    out.push(b'\n');
    out
}
