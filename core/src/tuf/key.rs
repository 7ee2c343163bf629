//! Public keys and signatures in the TUF / securesystemslib formats.
//!
//! Two key types are supported, written exactly as securesystemslib writes them so that stock
//! TUF clients read our repositories and we read theirs:
//!
//! | `keytype` | `scheme` | `keyval.public` | signature `sig` |
//! |---|---|---|---|
//! | `ed25519` | `ed25519` | 32-byte key, hex | 64 bytes R‖S, hex |
//! | `ecdsa` or `ecdsa-sha2-nistp256` | `ecdsa-sha2-nistp256` | SubjectPublicKeyInfo PEM | DER `ECDSA-Sig-Value` over SHA-256, hex |
//!
//! Ed25519 verification is strict (`verify_strict`): non-canonical `S`, non-canonical point
//! encodings and small-order keys or `R` are refused, so one message has one valid signature
//! per key. The key id is the SHA-256 of the canonical JSON of `{keytype, scheme, keyval}`.

use std::collections::BTreeMap;
use std::fmt;

use ed25519_dalek::Verifier as _;
use p256::pkcs8::{DecodePublicKey as _, EncodePublicKey as _, LineEnding};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Digest as _;

use super::canonical::to_canonical;

/// A key id as it appears in metadata: the hex SHA-256 of the key's canonical JSON.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyId(pub String);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key type or scheme is not one we verify.
    #[error("unsupported key type {keytype:?} with scheme {scheme:?}")]
    Unsupported {
        /// `keytype` as written.
        keytype: String,
        /// `scheme` as written.
        scheme: String,
    },
    /// The public key value does not decode.
    #[error("malformed {scheme} public key: {reason}")]
    Malformed {
        /// `scheme` as written.
        scheme: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A public key in TUF's JSON form, parsed and ready to verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// The key as written, unknown fields included, so that the key id and re-serialisation
    /// stay exact.
    json: KeyJson,
    verifier: KeyVerifier,
}

#[derive(Clone, PartialEq, Eq)]
enum KeyVerifier {
    Ed25519(ed25519_dalek::VerifyingKey),
    EcdsaP256(p256::ecdsa::VerifyingKey),
    /// A key we cannot use. TUF tolerates such keys until a role relies on them; root and
    /// delegation checks refuse any role that lists one, naming the key and the reason.
    Unusable(KeyError),
}

impl fmt::Debug for KeyVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ed25519(_) => f.write_str("Ed25519"),
            Self::EcdsaP256(_) => f.write_str("EcdsaP256"),
            Self::Unusable(e) => write!(f, "Unusable({e})"),
        }
    }
}

/// The JSON shape of a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct KeyJson {
    keytype: String,
    scheme: String,
    keyval: KeyVal,
    #[serde(flatten)]
    extra: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct KeyVal {
    public: String,
    #[serde(flatten)]
    extra: BTreeMap<String, Value>,
}

impl Key {
    /// Parse a key from its JSON parts.
    fn from_json(json: KeyJson) -> Result<Self, KeyError> {
        let malformed = |reason: String| KeyError::Malformed {
            scheme: json.scheme.clone(),
            reason,
        };
        let verifier = match (json.keytype.as_str(), json.scheme.as_str()) {
            ("ed25519", "ed25519") => {
                let mut raw = [0u8; 32];
                if json.keyval.public.len() != 64
                    || json.keyval.public.bytes().any(|b| b.is_ascii_uppercase())
                {
                    return Err(malformed("expected 64 lowercase hex characters".into()));
                }
                hex::decode_to_slice(&json.keyval.public, &mut raw)
                    .map_err(|e| malformed(e.to_string()))?;
                let key = ed25519_dalek::VerifyingKey::from_bytes(&raw)
                    .map_err(|e| malformed(e.to_string()))?;
                if key.is_weak() {
                    return Err(malformed("small-order (weak) key".into()));
                }
                KeyVerifier::Ed25519(key)
            }
            ("ecdsa" | "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp256") => {
                if json.keyval.public.len() > 1024 {
                    return Err(malformed("PEM longer than 1024 bytes".into()));
                }
                let key = p256::ecdsa::VerifyingKey::from_public_key_pem(&json.keyval.public)
                    .map_err(|e| malformed(e.to_string()))?;
                KeyVerifier::EcdsaP256(key)
            }
            _ => {
                return Err(KeyError::Unsupported {
                    keytype: json.keytype,
                    scheme: json.scheme,
                });
            }
        };
        Ok(Self { json, verifier })
    }

    fn new(keytype: &str, scheme: &str, public: String, verifier: KeyVerifier) -> Self {
        Self {
            json: KeyJson {
                keytype: keytype.into(),
                scheme: scheme.into(),
                keyval: KeyVal {
                    public,
                    extra: BTreeMap::new(),
                },
                extra: BTreeMap::new(),
            },
            verifier,
        }
    }

    /// An Ed25519 key in the securesystemslib form.
    pub fn ed25519(key: ed25519_dalek::VerifyingKey) -> Self {
        Self::new(
            "ed25519",
            "ed25519",
            hex::encode(key.as_bytes()),
            KeyVerifier::Ed25519(key),
        )
    }

    /// An ECDSA P-256 key in the securesystemslib form (`keytype` `ecdsa`).
    pub fn ecdsa_p256(key: p256::ecdsa::VerifyingKey) -> Self {
        // Encoding a valid P-256 point as SPKI PEM cannot fail.
        let public = key
            .to_public_key_pem(LineEnding::LF)
            .unwrap_or_else(|_| unreachable!("SPKI encoding of a valid P-256 key"));
        Self::new(
            "ecdsa",
            "ecdsa-sha2-nistp256",
            public,
            KeyVerifier::EcdsaP256(key),
        )
    }

    /// Why this key cannot verify anything, if it cannot.
    pub fn unusable(&self) -> Option<&KeyError> {
        match &self.verifier {
            KeyVerifier::Unusable(e) => Some(e),
            _ => None,
        }
    }

    /// `keytype` as written.
    pub fn keytype(&self) -> &str {
        &self.json.keytype
    }

    /// `scheme` as written.
    pub fn scheme(&self) -> &str {
        &self.json.scheme
    }

    /// The key id TUF derives from this key: hex SHA-256 of its canonical JSON.
    pub fn key_id(&self) -> KeyId {
        let bytes = to_canonical(&self.json)
            .unwrap_or_else(|_| unreachable!("a key holds no floating-point numbers"));
        KeyId(hex::encode(sha2::Sha256::digest(&bytes)))
    }

    /// The public key's identity independent of how it is written, so that one key listed
    /// under two ids is still recognised as one key.
    pub(crate) fn identity(&self) -> Vec<u8> {
        match &self.verifier {
            KeyVerifier::Unusable(_) => [&[2u8][..], self.json.keyval.public.as_bytes()].concat(),
            KeyVerifier::Ed25519(k) => [&[0u8][..], k.as_bytes()].concat(),
            KeyVerifier::EcdsaP256(k) => [&[1u8][..], k.to_encoded_point(true).as_bytes()].concat(),
        }
    }

    /// Whether `sig` (as decoded from hex) is a valid signature of `msg` by this key.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        match &self.verifier {
            KeyVerifier::Unusable(_) => false,
            KeyVerifier::Ed25519(key) => {
                let Ok(sig) = ed25519_dalek::Signature::from_slice(sig) else {
                    return false;
                };
                key.verify_strict(msg, &sig).is_ok()
            }
            KeyVerifier::EcdsaP256(key) => {
                let Ok(sig) = p256::ecdsa::Signature::from_der(sig) else {
                    return false;
                };
                key.verify(msg, &sig).is_ok()
            }
        }
    }
}

impl Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.json.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let json = KeyJson::deserialize(deserializer)?;
        Ok(match Self::from_json(json.clone()) {
            Ok(key) => key,
            Err(e) => Self {
                json,
                verifier: KeyVerifier::Unusable(e),
            },
        })
    }
}

/// A private key held in memory: for development, tests and the origin's online roles when
/// no token is configured. Offline roles use the signer's PKCS#11 backend instead.
#[derive(Clone)]
pub enum InMemoryKey {
    /// An Ed25519 key.
    Ed25519(ed25519_dalek::SigningKey),
    /// An ECDSA P-256 key (signatures are deterministic, RFC 6979).
    EcdsaP256(p256::ecdsa::SigningKey),
}

impl fmt::Debug for InMemoryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InMemoryKey({})", self.public().key_id())
    }
}

impl InMemoryKey {
    /// An Ed25519 key from a 32-byte seed.
    pub fn ed25519_from_seed(seed: [u8; 32]) -> Self {
        Self::Ed25519(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    /// A P-256 key from a 32-byte scalar; `None` if the scalar is zero or not below the order.
    pub fn p256_from_scalar(scalar: [u8; 32]) -> Option<Self> {
        p256::ecdsa::SigningKey::from_bytes(&scalar.into())
            .ok()
            .map(Self::EcdsaP256)
    }

    /// The public half in TUF form.
    pub fn public(&self) -> Key {
        match self {
            Self::Ed25519(k) => Key::ed25519(k.verifying_key()),
            Self::EcdsaP256(k) => Key::ecdsa_p256(*k.verifying_key()),
        }
    }

    /// Sign `msg`; the result is the raw signature bytes TUF hex-encodes into `sig`.
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        use ed25519_dalek::Signer as _;
        match self {
            Self::Ed25519(k) => k.sign(msg).to_bytes().to_vec(),
            Self::EcdsaP256(k) => {
                let sig: p256::ecdsa::Signature = k.sign(msg);
                sig.to_der().as_bytes().to_vec()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_schemes_sign_and_verify() {
        for key in [
            InMemoryKey::ed25519_from_seed([7; 32]),
            InMemoryKey::p256_from_scalar([7; 32]).unwrap(),
        ] {
            let public = key.public();
            let sig = key.sign(b"message");
            assert!(public.verify(b"message", &sig));
            assert!(!public.verify(b"messagf", &sig));
            let json = serde_json::to_value(&public).unwrap();
            let back: Key = serde_json::from_value(json).unwrap();
            assert_eq!(back.key_id(), public.key_id());
        }
    }

    #[test]
    fn unknown_key_type_is_named() {
        let json = serde_json::json!({
            "keytype": "rsa", "scheme": "rsassa-pss-sha256", "keyval": {"public": "x"}
        });
        let err = Key::from_json(serde_json::from_value(json).unwrap()).unwrap_err();
        assert_eq!(
            err,
            KeyError::Unsupported {
                keytype: "rsa".into(),
                scheme: "rsassa-pss-sha256".into()
            }
        );
    }
}
