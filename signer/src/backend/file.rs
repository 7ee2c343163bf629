//! Development keys in a file (`file:PATH`).
//!
//! The file holds the key in the securesystemslib shape with the private part added:
//! `{"keytype": "ed25519", "scheme": "ed25519", "keyval": {"public": HEX, "private": HEX}}`
//! (the 32-byte seed), or `keytype` `ecdsa`, scheme `ecdsa-sha2-nistp256`, `public` PEM and
//! `private` the hex 32-byte scalar. Files are created with mode 0600 and never overwritten.

use std::path::{Path, PathBuf};

use ota_core::tuf::{InMemoryKey, Key};
use serde::{Deserialize, Serialize};

use super::{BackendError, Scheme, SigningKey, checked};
use crate::keyref::KeyRef;

/// A private key read from a file.
#[derive(Debug)]
pub struct FileKey {
    key: InMemoryKey,
    public: Key,
    reference: KeyRef,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    keytype: String,
    scheme: String,
    keyval: KeyVal,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyVal {
    public: String,
    private: String,
}

/// Largest key file we read.
const MAX_KEY_FILE: u64 = 16 * 1024;

impl FileKey {
    /// Read a key file.
    pub fn load(path: &Path) -> Result<Self, BackendError> {
        let err = |reason: String| BackendError::FileKey {
            path: path.display().to_string(),
            reason,
        };
        let bytes = crate::fsutil::read_capped(path, MAX_KEY_FILE).map_err(err)?;
        let file: KeyFile =
            serde_json::from_slice(&bytes).map_err(|e| err(format!("not a key file: {e}")))?;
        let mut scalar = [0u8; 32];
        hex::decode_to_slice(file.keyval.private.trim(), &mut scalar)
            .map_err(|_| err("private part is not 32 bytes of hex".into()))?;
        let key = match (file.keytype.as_str(), file.scheme.as_str()) {
            ("ed25519", "ed25519") => InMemoryKey::ed25519_from_seed(scalar),
            ("ecdsa", "ecdsa-sha2-nistp256") => InMemoryKey::p256_from_scalar(scalar)
                .ok_or_else(|| err("private scalar out of range".into()))?,
            (t, s) => return Err(err(format!("unsupported keytype {t:?} / scheme {s:?}"))),
        };
        let public = key.public();
        let listed: Key = serde_json::from_value(serde_json::json!({
            "keytype": file.keytype, "scheme": file.scheme, "keyval": {"public": file.keyval.public}
        }))
        .map_err(|e| err(e.to_string()))?;
        if listed.key_id() != public.key_id() {
            return Err(err(
                "the public part does not belong to the private part".into()
            ));
        }
        Ok(Self {
            key,
            public,
            reference: KeyRef::File(path.to_path_buf()),
        })
    }

    /// Generate a key and write it to `path` (mode 0600, refusing to overwrite).
    pub fn generate(path: &Path, scheme: Scheme) -> Result<Self, BackendError> {
        use rand_core::RngCore as _;
        let mut seed = [0u8; 32];
        let key = loop {
            rand_core::OsRng.fill_bytes(&mut seed);
            let key = match scheme {
                Scheme::Ed25519 => Some(InMemoryKey::ed25519_from_seed(seed)),
                Scheme::P256 => InMemoryKey::p256_from_scalar(seed),
            };
            if let Some(key) = key {
                break key;
            }
        };
        let public = key.public();
        let file = KeyFile {
            keytype: public.keytype().into(),
            scheme: public.scheme().into(),
            keyval: KeyVal {
                public: public_value(&public),
                private: hex::encode(seed),
            },
        };
        let mut bytes = serde_json::to_vec_pretty(&file)
            .unwrap_or_else(|_| unreachable!("a key file serialises"));
        bytes.push(b'\n');
        crate::fsutil::write_new_private(path, &bytes).map_err(|reason| BackendError::FileKey {
            path: path.display().to_string(),
            reason,
        })?;
        Ok(Self {
            key,
            public,
            reference: KeyRef::File(PathBuf::from(path)),
        })
    }
}

/// `keyval.public` of a TUF key.
pub(crate) fn public_value(key: &Key) -> String {
    serde_json::to_value(key)
        .ok()
        .and_then(|v| v["keyval"]["public"].as_str().map(String::from))
        .unwrap_or_default()
}

impl SigningKey for FileKey {
    fn public(&self) -> &Key {
        &self.public
    }

    fn reference(&self) -> &KeyRef {
        &self.reference
    }

    fn sign(&mut self, msg: &[u8]) -> Result<Vec<u8>, BackendError> {
        checked(&self.public, msg, self.key.sign(msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_load_sign() {
        let dir = tempfile::tempdir().unwrap();
        for scheme in [Scheme::Ed25519, Scheme::P256] {
            let path = dir.path().join(format!("{scheme}.json"));
            let mut made = FileKey::generate(&path, scheme).unwrap();
            let mut loaded = FileKey::load(&path).unwrap();
            assert_eq!(made.public().key_id(), loaded.public().key_id());
            let sig = loaded.sign(b"m").unwrap();
            assert!(made.public().verify(b"m", &sig));
            made.sign(b"m").unwrap();
            // Never overwritten.
            assert!(FileKey::generate(&path, scheme).is_err());
        }
    }

    #[test]
    fn mismatched_public_part_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.json");
        FileKey::generate(&a, Scheme::Ed25519).unwrap();
        let mut json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&a).unwrap()).unwrap();
        json["keyval"]["public"] = serde_json::Value::String("11".repeat(32));
        std::fs::write(&a, serde_json::to_vec(&json).unwrap()).unwrap();
        let err = FileKey::load(&a).unwrap_err();
        assert!(err.to_string().contains("does not belong"), "{err}");
    }
}
