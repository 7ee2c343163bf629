//! Key references: `file:PATH` (development keys) and RFC 7512 `pkcs11:` URIs.
//!
//! A `pkcs11:` URI names a token and a key object on it, e.g.
//! `pkcs11:token=release-hsm;object=release-2026?module-path=/usr/lib/softhsm/libsofthsm2.so`.
//! Supported path attributes: `token`, `manufacturer`, `serial`, `model` (select the token),
//! `object`, `id` (select the key; `id` is percent-encoded bytes), `type` (`private` or
//! `public`, ignored: we always use the private key and its public twin), `slot-id`, and
//! vendor attributes `x-…` (ignored). Query attributes: `module-path` (the PKCS#11 module; the
//! `OTA_PKCS11_MODULE` environment variable is used when absent). `pin-value` and `pin-source`
//! are refused: a PIN never travels in an argument or a file, only in the environment or at a
//! prompt.

use std::fmt;
use std::path::PathBuf;

/// Environment variable naming the PKCS#11 module when a URI has no `module-path`.
pub const MODULE_ENV: &str = "OTA_PKCS11_MODULE";

/// A reference to a private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRef {
    /// A development key in a file (`file:PATH`).
    File(PathBuf),
    /// A key on a PKCS#11 token.
    Pkcs11(Pkcs11Uri),
}

/// A parsed RFC 7512 URI.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pkcs11Uri {
    /// Token label.
    pub token: Option<String>,
    /// Token manufacturer.
    pub manufacturer: Option<String>,
    /// Token serial number.
    pub serial: Option<String>,
    /// Token model.
    pub model: Option<String>,
    /// Slot id.
    pub slot_id: Option<u64>,
    /// Key label (`CKA_LABEL`).
    pub object: Option<String>,
    /// Key id (`CKA_ID`).
    pub id: Option<Vec<u8>>,
    /// The module to load.
    pub module_path: Option<PathBuf>,
}

/// A key reference could not be parsed. The operator's argument is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyRefError {
    /// Neither `file:` nor `pkcs11:`.
    #[error("key reference {found:?} is neither file:PATH nor a pkcs11: URI")]
    UnknownScheme {
        /// The reference, cut to 80 characters.
        found: String,
    },
    /// The URI carries a PIN.
    #[error(
        "pkcs11 URI attribute {attribute} is refused: PINs come from the environment or a prompt"
    )]
    PinInUri {
        /// `pin-value` or `pin-source`.
        attribute: String,
    },
    /// An attribute we do not know.
    #[error("pkcs11 URI: unsupported attribute {attribute:?}")]
    UnsupportedAttribute {
        /// The attribute name.
        attribute: String,
    },
    /// An attribute given twice.
    #[error("pkcs11 URI: attribute {attribute} given twice")]
    Duplicate {
        /// The attribute name.
        attribute: String,
    },
    /// A malformed attribute or value.
    #[error("pkcs11 URI: {reason}")]
    Malformed {
        /// What is wrong.
        reason: String,
    },
    /// Neither `object` nor `id` names the key.
    #[error("pkcs11 URI names no key: give object=LABEL or id=BYTES")]
    NoObject,
}

impl KeyRef {
    /// Parse a key reference as given on the command line.
    pub fn parse(s: &str) -> Result<Self, KeyRefError> {
        if let Some(path) = s.strip_prefix("file:") {
            if path.is_empty() {
                return Err(KeyRefError::Malformed {
                    reason: "file: with an empty path".into(),
                });
            }
            return Ok(Self::File(PathBuf::from(path)));
        }
        if s.starts_with("pkcs11:") {
            return Pkcs11Uri::parse(s).map(Self::Pkcs11);
        }
        Err(KeyRefError::UnknownScheme {
            found: s.chars().take(80).collect(),
        })
    }

    /// Whether this is a development file key.
    pub fn is_file(&self) -> bool {
        matches!(self, Self::File(_))
    }
}

impl fmt::Display for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "file:{}", path.display()),
            Self::Pkcs11(uri) => uri.fmt(f),
        }
    }
}

impl Pkcs11Uri {
    /// Parse `pkcs11:PATH-ATTRS[?QUERY-ATTRS]`.
    pub fn parse(s: &str) -> Result<Self, KeyRefError> {
        let rest = s
            .strip_prefix("pkcs11:")
            .ok_or(KeyRefError::UnknownScheme {
                found: s.chars().take(80).collect(),
            })?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut uri = Self::default();
        let mut seen = Vec::new();
        for (attr, sep) in path
            .split(';')
            .map(|a| (a, ';'))
            .chain(query.split('&').map(|a| (a, '&')))
        {
            if attr.is_empty() {
                continue;
            }
            let (name, value) = attr.split_once('=').ok_or_else(|| KeyRefError::Malformed {
                reason: format!("attribute {attr:?} has no '='"),
            })?;
            if seen.contains(&name) {
                return Err(KeyRefError::Duplicate {
                    attribute: name.into(),
                });
            }
            seen.push(name);
            let bytes = pct_decode(value)?;
            let text = || {
                String::from_utf8(bytes.clone()).map_err(|_| KeyRefError::Malformed {
                    reason: format!("attribute {name} is not UTF-8"),
                })
            };
            match (sep, name) {
                (';', "token") => uri.token = Some(text()?),
                (';', "manufacturer") => uri.manufacturer = Some(text()?),
                (';', "serial") => uri.serial = Some(text()?),
                (';', "model") => uri.model = Some(text()?),
                (';', "object") => uri.object = Some(text()?),
                (';', "id") => uri.id = Some(bytes),
                (';', "slot-id") => {
                    uri.slot_id = Some(text()?.parse().map_err(|_| KeyRefError::Malformed {
                        reason: "slot-id is not a number".into(),
                    })?);
                }
                (';', "type") => match text()?.as_str() {
                    "private" | "public" => {}
                    other => {
                        return Err(KeyRefError::Malformed {
                            reason: format!("type={other}: only private or public keys sign"),
                        });
                    }
                },
                ('&', "module-path") => uri.module_path = Some(PathBuf::from(text()?)),
                (_, "pin-value" | "pin-source") => {
                    return Err(KeyRefError::PinInUri {
                        attribute: name.into(),
                    });
                }
                (_, n) if n.starts_with("x-") => {}
                _ => {
                    return Err(KeyRefError::UnsupportedAttribute {
                        attribute: name.chars().take(40).collect(),
                    });
                }
            }
        }
        if uri.object.is_none() && uri.id.is_none() {
            return Err(KeyRefError::NoObject);
        }
        Ok(uri)
    }

    /// The module to load: `module-path`, else `$OTA_PKCS11_MODULE`.
    pub fn module(&self) -> Option<PathBuf> {
        self.module_path
            .clone()
            .or_else(|| std::env::var_os(MODULE_ENV).map(PathBuf::from))
    }

    /// A URI for a key on a token, as `key generate` prints it.
    pub fn for_key(module: PathBuf, token: &str, object: &str) -> Self {
        Self {
            token: Some(token.into()),
            object: Some(object.into()),
            module_path: Some(module),
            ..Self::default()
        }
    }

    /// A short description of the token selection, for messages.
    pub fn token_description(&self) -> String {
        let mut parts = Vec::new();
        for (name, value) in [
            ("token", &self.token),
            ("serial", &self.serial),
            ("manufacturer", &self.manufacturer),
            ("model", &self.model),
        ] {
            if let Some(v) = value {
                parts.push(format!("{name}={v}"));
            }
        }
        if let Some(slot) = self.slot_id {
            parts.push(format!("slot-id={slot}"));
        }
        if parts.is_empty() {
            "any token".into()
        } else {
            parts.join(";")
        }
    }
}

impl fmt::Display for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut path = Vec::new();
        for (name, value) in [
            ("token", &self.token),
            ("manufacturer", &self.manufacturer),
            ("serial", &self.serial),
            ("model", &self.model),
            ("object", &self.object),
        ] {
            if let Some(v) = value {
                path.push(format!("{name}={}", pct_encode(v.as_bytes())));
            }
        }
        if let Some(slot) = self.slot_id {
            path.push(format!("slot-id={slot}"));
        }
        if let Some(id) = &self.id {
            let hex: String = id.iter().map(|b| format!("%{b:02x}")).collect();
            path.push(format!("id={hex}"));
        }
        write!(f, "pkcs11:{}", path.join(";"))?;
        if let Some(module) = &self.module_path {
            write!(
                f,
                "?module-path={}",
                pct_encode(module.to_string_lossy().as_bytes())
            )?;
        }
        Ok(())
    }
}

fn pct_decode(value: &str) -> Result<Vec<u8>, KeyRefError> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .ok_or_else(|| KeyRefError::Malformed {
                    reason: "truncated percent escape".into(),
                })?;
            let hex = std::str::from_utf8(hex)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            out.push(hex.ok_or_else(|| KeyRefError::Malformed {
                reason: "bad percent escape".into(),
            })?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn pct_encode(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-._~/:".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc7512_examples() {
        let r = KeyRef::parse(
            "pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;object=my-key;id=%01%02\
             ?module-path=/usr/lib/softhsm/libsofthsm2.so",
        )
        .unwrap();
        let KeyRef::Pkcs11(uri) = r else { panic!() };
        assert_eq!(uri.token.as_deref(), Some("The Software PKCS#11 Softtoken"));
        assert_eq!(uri.object.as_deref(), Some("my-key"));
        assert_eq!(uri.id, Some(vec![1, 2]));
        assert_eq!(
            uri.module_path,
            Some(PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"))
        );
        // Display round-trips.
        assert_eq!(Pkcs11Uri::parse(&uri.to_string()).unwrap(), uri);
    }

    #[test]
    fn refuses_pins_and_unknown_attributes() {
        assert_eq!(
            KeyRef::parse("pkcs11:object=k?pin-value=1234"),
            Err(KeyRefError::PinInUri {
                attribute: "pin-value".into()
            })
        );
        assert!(matches!(
            KeyRef::parse("pkcs11:object=k;pin-source=file:/tmp/pin"),
            Err(KeyRefError::PinInUri { .. })
        ));
        assert!(matches!(
            KeyRef::parse("pkcs11:object=k;colour=blue"),
            Err(KeyRefError::UnsupportedAttribute { .. })
        ));
        assert!(matches!(
            KeyRef::parse("pkcs11:object=k;object=l"),
            Err(KeyRefError::Duplicate { .. })
        ));
        assert_eq!(KeyRef::parse("pkcs11:token=t"), Err(KeyRefError::NoObject));
        assert!(KeyRef::parse("pkcs11:object=%zz").is_err());
        assert!(KeyRef::parse("ssh:key").is_err());
        assert!(KeyRef::parse("pkcs11:object=k;x-vendor=1").is_ok());
    }

    #[test]
    fn file_refs() {
        assert_eq!(
            KeyRef::parse("file:keys/dev.json").unwrap(),
            KeyRef::File("keys/dev.json".into())
        );
        assert!(KeyRef::parse("file:").is_err());
    }
}
