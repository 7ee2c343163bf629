//! Signing requests.
//!
//! A request is a TUF metadata file (`{"signatures": [...], "signed": {...}}`) with zero or
//! more signatures: the origin writes it with none, each co-signer adds one. The request is
//! identified by the SHA-256 of the canonical bytes of `signed` ([`RequestDigest`]): those
//! bytes are what every signature covers, so signatures added along the way do not change it.
//!
//! Parsing is strict, because the operator must see everything they sign:
//!
//! - the file is at most [`MAX_REQUEST_LEN`] bytes, valid JSON, with no object key given
//!   twice anywhere (two parsers could read such a file differently: "not canonical");
//! - `signed` is canonical-JSON representable (integers of at most 64 bits, no floats) and of
//!   the requested role's type, with `ota-core`'s static rules (including the refusal of a root
//!   listing one key for both authorities);
//! - `signed` holds no field our tools do not write ("not ours"): the typed document, with
//!   every "unknown fields" map emptied and re-serialised, must equal `signed` exactly.

use std::fmt;
use std::str::FromStr;

use ota_core::time::UnixTime;
use ota_core::tuf::metadata::{Envelope, Root, Signature, Snapshot, Targets, Timestamp};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use sha2::Digest as _;

use crate::roles::SignRole;

/// Largest request file read.
pub const MAX_REQUEST_LEN: u64 = 16 * 1024 * 1024;

/// SHA-256 of a request's canonical `signed` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestDigest(pub [u8; 32]);

impl RequestDigest {
    /// The digest of canonical bytes.
    pub fn of(canonical: &[u8]) -> Self {
        Self(sha2::Sha256::digest(canonical).into())
    }
}

impl fmt::Display for RequestDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl FromStr for RequestDigest {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err("expected 64 lowercase hex characters".into());
        }
        hex::decode_to_slice(s, &mut out).map_err(|e| e.to_string())?;
        Ok(Self(out))
    }
}

impl Serialize for RequestDigest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RequestDigest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// A request's typed document.
#[derive(Debug, Clone)]
pub enum Document {
    /// A root.
    Root(Root),
    /// `targets` or a delegated targets role (`release`).
    Targets(Targets),
    /// A snapshot.
    Snapshot(Snapshot),
    /// A timestamp.
    Timestamp(Timestamp),
}

/// A parsed signing request.
#[derive(Debug, Clone)]
pub struct Request {
    role: SignRole,
    envelope: Envelope,
    document: Document,
    digest: RequestDigest,
}

/// A request file was refused: it is not a well-formed request of ours. The file (and whoever
/// wrote it) is at fault; exit code 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// Not canonical: a key given twice, invalid JSON, a number canonical JSON cannot hold.
    #[error("request is not canonical: {reason}")]
    NotCanonical {
        /// What is wrong.
        reason: String,
    },
    /// Not TUF metadata of the requested role, or breaking its static rules.
    #[error("request is not valid {role} metadata: {source}")]
    Metadata {
        /// The role asked for.
        role: SignRole,
        /// `ota-core`'s reason.
        source: ota_core::tuf::Error,
    },
    /// Holds a field our tools do not write.
    #[error("request is not ours: {path}: {reason}")]
    NotOurs {
        /// Where in `signed`.
        path: String,
        /// What is there.
        reason: String,
    },
}

impl Request {
    /// Parse `bytes` as a request to sign role `role`.
    pub fn parse(role: SignRole, bytes: &[u8]) -> Result<Self, RequestError> {
        if bytes.len() as u64 > MAX_REQUEST_LEN {
            return Err(RequestError::NotCanonical {
                reason: format!("{} bytes is over the cap of {MAX_REQUEST_LEN}", bytes.len()),
            });
        }
        check_no_duplicate_keys(bytes)?;
        let file = format!("{} request", role.name());
        let metadata = |source| RequestError::Metadata { role, source };
        let envelope =
            Envelope::parse(role.name(), &file, bytes, MAX_REQUEST_LEN).map_err(|e| match e {
                ota_core::tuf::Error::Malformed { reason, .. } => {
                    RequestError::NotCanonical { reason }
                }
                other => metadata(other),
            })?;
        let (document, retyped) = match role {
            SignRole::Root => {
                let mut root: Root = envelope.role().map_err(metadata)?;
                let doc = Document::Root(root.clone());
                root.extra.clear();
                for keys in root.roles.values_mut() {
                    keys.extra.clear();
                }
                (doc, to_value(&root))
            }
            SignRole::Targets | SignRole::Release => {
                let mut targets: Targets = envelope.role().map_err(metadata)?;
                let doc = Document::Targets(targets.clone());
                targets.extra.clear();
                for file in targets.targets.values_mut() {
                    file.extra.clear();
                }
                if let Some(d) = targets.delegations.as_mut() {
                    d.extra.clear();
                    for r in &mut d.roles {
                        r.extra.clear();
                    }
                }
                (doc, to_value(&targets))
            }
            SignRole::Snapshot => {
                let mut snapshot: Snapshot = envelope.role().map_err(metadata)?;
                let doc = Document::Snapshot(snapshot.clone());
                snapshot.extra.clear();
                for m in snapshot.meta.values_mut() {
                    m.extra.clear();
                }
                (doc, to_value(&snapshot))
            }
            SignRole::Timestamp => {
                let mut timestamp: Timestamp = envelope.role().map_err(metadata)?;
                let doc = Document::Timestamp(timestamp.clone());
                timestamp.extra.clear();
                for m in timestamp.meta.values_mut() {
                    m.extra.clear();
                }
                (doc, to_value(&timestamp))
            }
        };
        if let Some((path, reason)) = first_difference("signed", envelope.signed(), &retyped) {
            return Err(RequestError::NotOurs { path, reason });
        }
        let digest = RequestDigest::of(envelope.canonical_signed());
        Ok(Self {
            role,
            envelope,
            document,
            digest,
        })
    }

    /// The role it is for.
    pub fn role(&self) -> SignRole {
        self.role
    }

    /// The digest approvals bind to.
    pub fn digest(&self) -> RequestDigest {
        self.digest
    }

    /// The typed document.
    pub fn document(&self) -> &Document {
        &self.document
    }

    /// The envelope, with the signatures so far.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The bytes a signature covers.
    pub fn canonical(&self) -> &[u8] {
        self.envelope.canonical_signed()
    }

    /// The metadata version.
    pub fn version(&self) -> u64 {
        self.common().version
    }

    /// The expiry.
    pub fn expires(&self) -> UnixTime {
        self.common().expires
    }

    fn common(&self) -> &ota_core::tuf::metadata::Common {
        match &self.document {
            Document::Root(r) => &r.common,
            Document::Targets(t) => &t.common,
            Document::Snapshot(s) => &s.common,
            Document::Timestamp(t) => &t.common,
        }
    }

    /// Add a signature (replacing an earlier one by the same key id).
    pub fn add_signature(&mut self, signature: Signature) {
        self.envelope.add_signature(signature);
    }

    /// The file's bytes with the signatures so far.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.envelope.to_bytes()
    }
}

fn to_value<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or_else(|_| unreachable!("role documents serialise"))
}

/// The first place where `found` (the request) and `ours` (what our types write) differ.
fn first_difference(path: &str, found: &Value, ours: &Value) -> Option<(String, String)> {
    match (found, ours) {
        (Value::Object(f), Value::Object(o)) => {
            for (k, v) in f {
                let here = format!("{path}.{k}");
                match o.get(k) {
                    None => return Some((here, "a field our tools do not write".into())),
                    Some(w) => {
                        if let Some(d) = first_difference(&here, v, w) {
                            return Some(d);
                        }
                    }
                }
            }
            o.keys().find(|k| !f.contains_key(*k)).map(|k| {
                (
                    format!("{path}.{k}"),
                    "missing (our tools always write it)".into(),
                )
            })
        }
        (Value::Array(f), Value::Array(o)) if f.len() == o.len() => f
            .iter()
            .zip(o)
            .enumerate()
            .find_map(|(i, (a, b))| first_difference(&format!("{path}[{i}]"), a, b)),
        (a, b) if a == b => None,
        _ => Some((path.into(), "not in the form our tools write".into())),
    }
}

/// Refuse JSON with an object key given twice (serde_json would silently keep the last).
fn check_no_duplicate_keys(bytes: &[u8]) -> Result<(), RequestError> {
    struct Strict;
    impl<'de> Deserialize<'de> for Strict {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(StrictVisitor)
        }
    }
    struct StrictVisitor;
    impl<'de> Visitor<'de> for StrictVisitor {
        type Value = Strict;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, _: bool) -> Result<Strict, E> {
            Ok(Strict)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Strict, E> {
            Ok(Strict)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Strict, E> {
            Ok(Strict)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Strict, E> {
            Ok(Strict)
        }
        fn visit_str<E>(self, _: &str) -> Result<Strict, E> {
            Ok(Strict)
        }
        fn visit_unit<E>(self) -> Result<Strict, E> {
            Ok(Strict)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
            while seq.next_element::<Strict>()?.is_some() {}
            Ok(Strict)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
            let mut seen = std::collections::BTreeSet::new();
            while let Some(key) = map.next_key::<String>()? {
                if !seen.insert(key.clone()) {
                    return Err(de::Error::custom(format!(
                        "key {:?} appears twice in one object",
                        key.chars().take(64).collect::<String>()
                    )));
                }
                map.next_value::<Strict>()?;
            }
            Ok(Strict)
        }
    }
    serde_json::from_slice::<Strict>(bytes)
        .map(|_| ())
        .map_err(|e| RequestError::NotCanonical {
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ota_core::tuf::metadata::{Common, MetaFile, sign_role};

    use super::*;

    fn timestamp() -> Timestamp {
        Timestamp {
            common: Common::new("timestamp", 3, UnixTime(2_000_000_000)),
            meta: BTreeMap::from([("snapshot.json".into(), MetaFile::version(2))]),
            extra: BTreeMap::new(),
        }
    }

    #[test]
    fn our_request_parses_and_digest_ignores_signatures() {
        let bytes = sign_role(&timestamp(), &[]);
        let req = Request::parse(SignRole::Timestamp, &bytes).unwrap();
        assert_eq!(req.version(), 3);
        let key = ota_core::tuf::InMemoryKey::ed25519_from_seed([1; 32]);
        let signed = sign_role(&timestamp(), &[&key]);
        assert_eq!(
            Request::parse(SignRole::Timestamp, &signed)
                .unwrap()
                .digest(),
            req.digest()
        );
    }

    #[test]
    fn duplicate_keys_are_not_canonical() {
        let text = r#"{"signatures": [], "signed": {"_type": "timestamp", "_type": "root"}}"#;
        let err = Request::parse(SignRole::Timestamp, text.as_bytes()).unwrap_err();
        assert!(
            matches!(&err, RequestError::NotCanonical { reason } if reason.contains("appears twice")),
            "{err}"
        );
    }

    #[test]
    fn unknown_fields_are_not_ours() {
        let mut value: Value = serde_json::from_slice(&sign_role(&timestamp(), &[])).unwrap();
        value["signed"]["meta"]["snapshot.json"]["x-note"] = "sign me blind".into();
        let err =
            Request::parse(SignRole::Timestamp, &serde_json::to_vec(&value).unwrap()).unwrap_err();
        assert_eq!(
            err,
            RequestError::NotOurs {
                path: "signed.meta.snapshot.json.x-note".into(),
                reason: "a field our tools do not write".into()
            }
        );
    }

    #[test]
    fn wrong_role_and_floats_are_refused() {
        let bytes = sign_role(&timestamp(), &[]);
        assert!(matches!(
            Request::parse(SignRole::Snapshot, &bytes),
            Err(RequestError::Metadata { .. })
        ));
        let text = r#"{"signatures": [], "signed": {"_type": "timestamp", "version": 1.5}}"#;
        assert!(matches!(
            Request::parse(SignRole::Timestamp, text.as_bytes()),
            Err(RequestError::NotCanonical { .. })
        ));
        assert!(matches!(
            Request::parse(SignRole::Timestamp, b"not json"),
            Err(RequestError::NotCanonical { .. })
        ));
    }
}
