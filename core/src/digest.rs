//! Digest newtypes: BLAKE3 and SHA-256 values, and the chunk id.
//!
//! All of them print and parse as lowercase hex, which is how they appear in metadata.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A digest string was not 64 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected 64 lowercase hex characters for a 32-byte digest, got {found:?}")]
pub struct DigestParseError {
    /// The offending input, cut to 80 characters.
    pub found: String,
}

macro_rules! digest_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The raw 32 bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// Lowercase hex, as written in metadata.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl FromStr for $name {
            type Err = DigestParseError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_hex32(s).map(Self)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.to_hex())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

digest_newtype!(
    /// A BLAKE3-256 hash of some bytes other than a single chunk (a whole artifact, a tree root).
    Blake3Hash
);
digest_newtype!(
    /// A SHA-256 hash, as TUF's `hashes.sha256`.
    Sha256Hash
);
digest_newtype!(
    /// The id of a chunk or blob: the BLAKE3-256 hash of its bytes.
    ChunkId
);

impl ChunkId {
    /// The id of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }
}

impl Blake3Hash {
    /// The BLAKE3 hash of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }
}

impl Sha256Hash {
    /// The SHA-256 hash of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::Digest as _;
        Self(sha2::Sha256::digest(bytes).into())
    }
}

fn parse_hex32(s: &str) -> Result<[u8; 32], DigestParseError> {
    let bad = || DigestParseError {
        found: s.chars().take(80).collect(),
    };
    if s.len() != 64
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|_| bad())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_strictness() {
        let id = ChunkId::of(b"abc");
        let hex = id.to_hex();
        assert_eq!(hex.parse::<ChunkId>().unwrap(), id);
        assert!(
            hex.to_uppercase().parse::<ChunkId>().is_err(),
            "uppercase is not canonical"
        );
        assert!(hex[..62].parse::<ChunkId>().is_err());
        assert!(format!("{hex}00").parse::<ChunkId>().is_err());
    }
}
