//! Canonical JSON (the OLPC form TUF and securesystemslib sign over).
//!
//! The bytes a signature covers are the canonical form of the `signed` object exactly as it
//! was received, unknown fields included, so that a field we do not model can neither be
//! dropped nor slipped in.

use olpc_cjson::CanonicalFormatter;
use serde::Serialize;

/// Encode `value` as canonical JSON.
///
/// Fails on values canonical JSON cannot hold (floating-point numbers).
pub fn to_canonical<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, CanonicalFormatter::new());
    value.serialize(&mut ser)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_keys_and_drops_whitespace() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{ "b": [1, 2], "a": {"z": "x\"y", "c": true} }"#).unwrap();
        assert_eq!(
            String::from_utf8(to_canonical(&v).unwrap()).unwrap(),
            r#"{"a":{"c":true,"z":"x\"y"},"b":[1,2]}"#
        );
    }

    #[test]
    fn refuses_floats() {
        let v: serde_json::Value = serde_json::from_str(r#"{"a": 1.5}"#).unwrap();
        assert!(to_canonical(&v).is_err());
    }
}
