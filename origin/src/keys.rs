//! The origin's online keys: snapshot, timestamp, director and audit. Each is either a seed
//! file in `DATA/keys/` (the default) or a key on a PKCS#11 token, opened through `ota-sign`'s
//! backend (the same code the signing stations use), whose private half never leaves the
//! token.
//!
//! Which keys live on a token is recorded in `DATA/keys/online.json`, written by
//! `ota-origin keys --pkcs11 MODULE --token LABEL` (before `init`, which is why it is not in
//! `origin.json`):
//!
//! ```json
//! { "snapshot": "pkcs11:token=origin;object=ota-origin-snapshot?module-path=…", … }
//! ```
//!
//! The URIs carry no PIN: it comes from `OTA_PKCS11_PIN` (or a prompt on a terminal). A role
//! the file does not name keeps its seed file.

use std::path::Path;
use std::sync::Mutex;

use ota_core::tuf::canonical::to_canonical;
use ota_core::tuf::metadata::Signature;
use ota_core::tuf::{InMemoryKey, Key};
use ota_sign::backend::SigningKey as _;
use ota_sign::backend::pkcs11::Pkcs11Key;
use ota_sign::backend::{BackendError, PinSource, Scheme};
use ota_sign::keyref::Pkcs11Uri;
use serde::{Deserialize, Serialize};

/// The file, inside `DATA/keys/`, that names the online keys kept on a token.
pub const ONLINE_KEYS_FILE: &str = "online.json";

/// The labels `ota-origin keys --pkcs11` gives the keys it generates on a token.
pub const TOKEN_LABELS: [(&str, &str); 4] = [
    ("snapshot", "ota-origin-snapshot"),
    ("timestamp", "ota-origin-timestamp"),
    ("director", "ota-origin-director"),
    ("audit", "ota-origin-audit"),
];

/// `DATA/keys/online.json`: a `pkcs11:` URI per role kept on a token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenKeys {
    /// The snapshot key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// The timestamp key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// The director's offer key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub director: Option<String>,
    /// The audit log key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<String>,
}

impl TokenKeys {
    /// The URI recorded for `role`.
    pub fn get(&self, role: &str) -> Option<&str> {
        match role {
            "snapshot" => self.snapshot.as_deref(),
            "timestamp" => self.timestamp.as_deref(),
            "director" => self.director.as_deref(),
            "audit" => self.audit.as_deref(),
            _ => None,
        }
    }

    fn set(&mut self, role: &str, uri: String) {
        match role {
            "snapshot" => self.snapshot = Some(uri),
            "timestamp" => self.timestamp = Some(uri),
            "director" => self.director = Some(uri),
            "audit" => self.audit = Some(uri),
            _ => {}
        }
    }

    /// Reads `keys/online.json` of the data directory `data`; empty when there is none.
    pub fn read(data: &Path) -> Result<Self, KeyError> {
        let path = data.join("keys").join(ONLINE_KEYS_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| KeyError::Config {
                path: path.display().to_string(),
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(KeyError::Config {
                path: path.display().to_string(),
                reason: e.to_string(),
            }),
        }
    }

    /// Generates an Ed25519 key per online role on token `token` of `module` (labels
    /// [`TOKEN_LABELS`]), sensitive and not extractable, and returns their URIs. A role whose
    /// label already exists on the token is refused (nothing is replaced).
    pub fn generate(module: &Path, token: &str, pins: &PinSource) -> Result<Self, KeyError> {
        let mut keys = Self::default();
        for (role, label) in TOKEN_LABELS {
            Pkcs11Key::generate(module, token, label, Scheme::Ed25519, pins)
                .map_err(|source| KeyError::Token { role, source })?;
            keys.set(
                role,
                Pkcs11Uri::for_key(module.to_path_buf(), token, label).to_string(),
            );
        }
        Ok(keys)
    }
}

/// An online key: a seed in a file, or a key on a token.
#[derive(Debug)]
pub enum OnlineKey {
    /// A key held in memory (from a seed file, or a test's).
    Memory(InMemoryKey),
    /// A key on a PKCS#11 token; one signature at a time goes through its session.
    Token {
        /// The session and key.
        key: Box<Mutex<Pkcs11Key>>,
        /// Its public half.
        public: Key,
    },
}

/// An online key could not be opened or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// `keys/online.json` cannot be read or does not parse.
    #[error("{path}: {reason}")]
    Config {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A URI does not parse.
    #[error("the {role} key's URI: {reason}")]
    Uri {
        /// The role.
        role: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The token refused or failed.
    #[error("the {role} key: {source}")]
    Token {
        /// The role.
        role: &'static str,
        /// What the backend said.
        #[source]
        source: BackendError,
    },
}

impl OnlineKey {
    /// Opens the key of `role` that `uri` names, with a PIN from `OTA_PKCS11_PIN`.
    pub fn open_token(role: &'static str, uri: &str) -> Result<Self, KeyError> {
        let parsed = Pkcs11Uri::parse(uri).map_err(|e| KeyError::Uri {
            role,
            reason: e.to_string(),
        })?;
        let key = Pkcs11Key::open(&parsed, &PinSource::default())
            .map_err(|source| KeyError::Token { role, source })?;
        let public = key.public().clone();
        Ok(Self::Token {
            key: Box::new(Mutex::new(key)),
            public,
        })
    }

    /// The public half, in TUF form.
    pub fn public(&self) -> Key {
        match self {
            Self::Memory(key) => key.public(),
            Self::Token { public, .. } => public.clone(),
        }
    }

    /// Signs `msg` (the token's signature is checked against the public half before it is
    /// returned).
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, BackendError> {
        match self {
            Self::Memory(key) => Ok(key.sign(msg)),
            Self::Token { key, .. } => {
                // A poisoned lock only means another signature panicked; the session is
                // still a session.
                let mut key = key
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                key.sign(msg)
            }
        }
    }

    /// Signs a JSON document the way TUF metadata is signed, byte for byte as
    /// `ota_core::tuf::metadata::sign_document` does with an in-memory key: the signature
    /// covers the canonical form of `signed`, and the file is pretty JSON and a newline.
    pub fn sign_document<T: Serialize>(&self, document: &T) -> Result<Vec<u8>, BackendError> {
        let signed = serde_json::to_value(document)
            .unwrap_or_else(|_| unreachable!("role documents serialise to JSON"));
        let canonical =
            to_canonical(&signed).unwrap_or_else(|_| unreachable!("role documents hold no floats"));
        let signature = Signature {
            keyid: self.public().key_id(),
            sig: hex::encode(self.sign(&canonical)?),
        };
        let envelope = serde_json::json!({ "signatures": [signature], "signed": signed });
        let mut out = serde_json::to_vec_pretty(&envelope)
            .unwrap_or_else(|_| unreachable!("a JSON value serialises"));
        out.push(b'\n');
        Ok(out)
    }
}

impl From<InMemoryKey> for OnlineKey {
    fn from(key: InMemoryKey) -> Self {
        Self::Memory(key)
    }
}
