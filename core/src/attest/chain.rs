//! X.509 path validation for attestation chains (parsed by `x509-parser`, signatures checked
//! with `ring`).
//!
//! The chain arrives leaf first, as Android's keystore returns it. Starting at the leaf, each
//! certificate must be issued (name and signature) by the next one, until a certificate is
//! issued by a configured trust anchor. Anchors are matched by subject name **and** public
//! key, never by certificate bytes (Google re-issued the same root key under three validity
//! periods), and the anchor's own validity is not checked (it is configuration, not evidence).
//! Whatever follows the anchored link (usually the self-signed root) is ignored.
//!
//! Checked for every issuing certificate: CA in basicConstraints, keyCertSign when keyUsage is
//! present, validity at the given time, and no serial on the status list. The leaf's validity is
//! not checked (the device sets it, typically 1970 → 2048); its serial is checked against the
//! status list like the others.

use std::collections::BTreeSet;

use ring::signature;
use x509_parser::certificate::X509Certificate;
use x509_parser::oid_registry::Oid;
use x509_parser::prelude::FromDer;

use super::key_description::{KEY_DESCRIPTION_OID, KeyDescription};
use super::{AttestError, MAX_CERT_LEN, MAX_CHAIN_LEN};
use crate::time::UnixTime;

/// Configured trust anchors: (subject, public key) pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustAnchors {
    anchors: Vec<Anchor>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Anchor {
    /// DER of the subject Name.
    subject: Vec<u8>,
    /// DER of the SubjectPublicKeyInfo.
    spki: Vec<u8>,
}

/// The most trust anchors a configuration may hold.
pub const MAX_ANCHORS: usize = 64;

/// The largest trust anchor or status list file parsed.
pub const MAX_CONFIG_FILE_LEN: usize = 16 * 1024 * 1024;

/// Why a configuration file (anchors, status list) is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file is over [`MAX_CONFIG_FILE_LEN`].
    #[error("file of {0} bytes over the cap")]
    TooLarge(usize),
    /// The file does not parse.
    #[error("{0}")]
    Malformed(String),
    /// More than [`MAX_ANCHORS`] anchors, or none.
    #[error("trust anchors: {0} certificates (1 to {MAX_ANCHORS} allowed)")]
    AnchorCount(usize),
}

impl TrustAnchors {
    /// Anchors from DER certificates.
    pub fn from_der(certs: &[&[u8]]) -> Result<Self, ConfigError> {
        if certs.is_empty() || certs.len() > MAX_ANCHORS {
            return Err(ConfigError::AnchorCount(certs.len()));
        }
        let mut anchors = Vec::with_capacity(certs.len());
        for der in certs {
            if der.len() > MAX_CERT_LEN {
                return Err(ConfigError::TooLarge(der.len()));
            }
            let cert = parse_cert(der).map_err(|e| ConfigError::Malformed(e.to_string()))?;
            anchors.push(Anchor {
                subject: cert.subject().as_raw().to_vec(),
                spki: cert.public_key().raw.to_vec(),
            });
        }
        Ok(Self { anchors })
    }

    /// Anchors from PEM text (one or more `CERTIFICATE` blocks), or from a JSON array of PEM
    /// strings (the format of Google's published `roots.json`).
    pub fn from_pem_or_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        if bytes.len() > MAX_CONFIG_FILE_LEN {
            return Err(ConfigError::TooLarge(bytes.len()));
        }
        let trimmed = bytes.trim_ascii_start();
        let ders = if trimmed.starts_with(b"[") {
            let pems: Vec<String> = serde_json::from_slice(bytes)
                .map_err(|e| ConfigError::Malformed(format!("roots JSON: {e}")))?;
            if pems.len() > MAX_ANCHORS {
                return Err(ConfigError::AnchorCount(pems.len()));
            }
            let mut ders = Vec::new();
            for pem in &pems {
                ders.extend(pem_certificates(pem.as_bytes(), MAX_ANCHORS)?);
            }
            ders
        } else {
            pem_certificates(bytes, MAX_ANCHORS)?
        };
        let refs: Vec<&[u8]> = ders.iter().map(Vec::as_slice).collect();
        Self::from_der(&refs)
    }

    /// How many anchors are configured.
    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }
}

/// The DER certificates of PEM text, at most `max` of them, each at most [`MAX_CERT_LEN`].
pub fn pem_certificates(text: &[u8], max: usize) -> Result<Vec<Vec<u8>>, ConfigError> {
    if text.len() > MAX_CONFIG_FILE_LEN {
        return Err(ConfigError::TooLarge(text.len()));
    }
    let mut out = Vec::new();
    for pem in x509_parser::pem::Pem::iter_from_buffer(text) {
        let pem = pem.map_err(|e| ConfigError::Malformed(format!("PEM: {e}")))?;
        if pem.label != "CERTIFICATE" {
            continue;
        }
        if out.len() >= max {
            return Err(ConfigError::AnchorCount(out.len() + 1));
        }
        if pem.contents.len() > MAX_CERT_LEN {
            return Err(ConfigError::TooLarge(pem.contents.len()));
        }
        out.push(pem.contents);
    }
    Ok(out)
}

/// A configured revocation list, in the format of Android's attestation status list:
/// `{"entries": {"<serial in lowercase hex>": {"status": "REVOKED" | "SUSPENDED", ...}}}`.
/// Both statuses count as revoked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusList {
    revoked: BTreeSet<String>,
}

impl StatusList {
    /// Parse a status list.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        #[derive(serde::Deserialize)]
        struct File {
            entries: std::collections::BTreeMap<String, Entry>,
        }
        #[derive(serde::Deserialize)]
        struct Entry {
            status: String,
        }
        if bytes.len() > MAX_CONFIG_FILE_LEN {
            return Err(ConfigError::TooLarge(bytes.len()));
        }
        let file: File = serde_json::from_slice(bytes)
            .map_err(|e| ConfigError::Malformed(format!("status list: {e}")))?;
        let revoked = file
            .entries
            .into_iter()
            .filter(|(_, e)| e.status == "REVOKED" || e.status == "SUSPENDED")
            .map(|(serial, _)| normalize_serial(&serial))
            .collect();
        Ok(Self { revoked })
    }

    /// Whether the certificate with this serial (DER INTEGER content) is revoked.
    pub fn is_revoked(&self, raw_serial: &[u8]) -> bool {
        self.revoked.contains(&serial_hex(raw_serial))
    }
}

/// A serial number as the status list writes it: lowercase hex, no leading zeros.
pub fn serial_hex(raw_serial: &[u8]) -> String {
    normalize_serial(&hex::encode(raw_serial))
}

fn normalize_serial(serial: &str) -> String {
    let lower = serial.to_ascii_lowercase();
    let trimmed = lower.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".into()
    } else {
        trimmed.into()
    }
}

/// What a verified chain yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedChain {
    /// The leaf's decoded attestation extension.
    pub key_description: KeyDescription,
    /// The leaf's SubjectPublicKeyInfo (DER): the attested key.
    pub leaf_spki: Vec<u8>,
    /// Certificates in the validated path, leaf included (the anchor's own certificate not).
    pub path_len: usize,
}

/// Verify `chain` (DER, leaf first) at `now` against `anchors` and `status`.
pub fn verify_chain(
    chain: &[Vec<u8>],
    anchors: &TrustAnchors,
    status: &StatusList,
    now: UnixTime,
) -> Result<VerifiedChain, AttestError> {
    if chain.is_empty() {
        return Err(AttestError::EmptyChain);
    }
    if chain.len() > MAX_CHAIN_LEN {
        return Err(AttestError::ChainTooLong { len: chain.len() });
    }
    let mut certs = Vec::with_capacity(chain.len());
    for (index, der) in chain.iter().enumerate() {
        if der.len() > MAX_CERT_LEN {
            return Err(AttestError::CertTooLarge {
                index,
                len: der.len(),
            });
        }
        certs.push(parse_cert(der).map_err(|reason| AttestError::MalformedCert { index, reason })?);
    }
    for (index, cert) in certs.iter().enumerate() {
        if status.is_revoked(cert.raw_serial()) {
            return Err(AttestError::Revoked {
                index,
                serial: serial_hex(cert.raw_serial()),
            });
        }
    }
    let t = now.0;
    for index in 0..certs.len() {
        let child = &certs[index];
        // Issued by a trust anchor?
        for anchor in &anchors.anchors {
            if anchor.subject == child.issuer().as_raw()
                && check_signature(child, &anchor.spki).is_ok()
            {
                // The path holds: only now is the leaf's extension worth decoding.
                let leaf = &certs[0];
                return Ok(VerifiedChain {
                    key_description: leaf_extension(leaf)?,
                    leaf_spki: leaf.public_key().raw.to_vec(),
                    path_len: index + 1,
                });
            }
        }
        let Some(issuer) = certs.get(index + 1) else {
            break;
        };
        if issuer.subject().as_raw() != child.issuer().as_raw() {
            return Err(AttestError::IssuerMismatch { index });
        }
        check_signature(child, issuer.public_key().raw)
            .map_err(|reason| AttestError::BadSignature { index, reason })?;
        if !issuer.is_ca() {
            return Err(AttestError::IssuerNotCa { index: index + 1 });
        }
        if let Ok(Some(usage)) = issuer.key_usage() {
            if !usage.value.key_cert_sign() {
                return Err(AttestError::IssuerNotCa { index: index + 1 });
            }
        } else if issuer.key_usage().is_err() {
            return Err(AttestError::MalformedCert {
                index: index + 1,
                reason: "keyUsage".into(),
            });
        }
        let validity = issuer.validity();
        let (not_before, not_after) = (
            validity.not_before.timestamp(),
            validity.not_after.timestamp(),
        );
        if t < not_before {
            return Err(AttestError::NotYetValid {
                index: index + 1,
                not_before: UnixTime(not_before),
            });
        }
        if t > not_after {
            return Err(AttestError::Expired {
                index: index + 1,
                not_after: UnixTime(not_after),
            });
        }
    }
    Err(AttestError::UnknownRoot)
}

fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err("trailing bytes after the certificate".into()),
        Err(e) => Err(e.to_string().chars().take(200).collect()),
    }
}

fn leaf_extension(leaf: &X509Certificate<'_>) -> Result<KeyDescription, AttestError> {
    let oid =
        Oid::from(&[1, 3, 6, 1, 4, 1, 11129, 2, 1, 17]).map_err(|_| AttestError::NoExtension)?;
    debug_assert_eq!(oid.to_id_string(), KEY_DESCRIPTION_OID);
    let extension = leaf
        .get_extension_unique(&oid)
        .map_err(|_| AttestError::DuplicateExtension)?
        .ok_or(AttestError::NoExtension)?;
    KeyDescription::parse(extension.value).map_err(AttestError::KeyDescription)
}

/// Check `cert`'s signature with the issuer key `spki_der`.
fn check_signature(cert: &X509Certificate<'_>, spki_der: &[u8]) -> Result<(), String> {
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der)
        .map_err(|_| "issuer key does not parse".to_string())?;
    let key_alg = spki.algorithm.algorithm.to_id_string();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string());
    let sig_alg = cert.signature_algorithm.algorithm.to_id_string();
    let algorithm: &dyn signature::VerificationAlgorithm =
        match (key_alg.as_str(), curve.as_deref(), sig_alg.as_str()) {
            (EC_KEY, Some(P256), ECDSA_SHA256) => &signature::ECDSA_P256_SHA256_ASN1,
            (EC_KEY, Some(P256), ECDSA_SHA384) => &signature::ECDSA_P256_SHA384_ASN1,
            (EC_KEY, Some(P384), ECDSA_SHA256) => &signature::ECDSA_P384_SHA256_ASN1,
            (EC_KEY, Some(P384), ECDSA_SHA384) => &signature::ECDSA_P384_SHA384_ASN1,
            (RSA_KEY, _, RSA_SHA256) => &signature::RSA_PKCS1_2048_8192_SHA256,
            (RSA_KEY, _, RSA_SHA384) => &signature::RSA_PKCS1_2048_8192_SHA384,
            (RSA_KEY, _, RSA_SHA512) => &signature::RSA_PKCS1_2048_8192_SHA512,
            (ED25519_KEY, _, ED25519_SIG) => &signature::ED25519,
            _ => {
                return Err(format!(
                    "unsupported algorithm {sig_alg} with key {key_alg}"
                ));
            }
        };
    if cert.signature_value.unused_bits != 0 {
        return Err("signature bit string has unused bits".into());
    }
    signature::UnparsedPublicKey::new(algorithm, &spki.subject_public_key.data)
        .verify(cert.tbs_certificate.as_ref(), &cert.signature_value.data)
        .map_err(|_| "signature does not verify".to_string())
}

const EC_KEY: &str = "1.2.840.10045.2.1";
const RSA_KEY: &str = "1.2.840.113549.1.1.1";
const ED25519_KEY: &str = "1.3.101.112";
const P256: &str = "1.2.840.10045.3.1.7";
const P384: &str = "1.3.132.0.34";
const ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
const ECDSA_SHA384: &str = "1.2.840.10045.4.3.3";
const RSA_SHA256: &str = "1.2.840.113549.1.1.11";
const RSA_SHA384: &str = "1.2.840.113549.1.1.12";
const RSA_SHA512: &str = "1.2.840.113549.1.1.13";
const ED25519_SIG: &str = "1.3.101.112";

/// Decode the attestation extension of a single DER certificate, without any chain check
/// (for tools and tests; the verifier uses [`verify_chain`]).
pub fn leaf_key_description(der: &[u8]) -> Result<KeyDescription, AttestError> {
    if der.len() > MAX_CERT_LEN {
        return Err(AttestError::CertTooLarge {
            index: 0,
            len: der.len(),
        });
    }
    let cert = parse_cert(der).map_err(|reason| AttestError::MalformedCert { index: 0, reason })?;
    leaf_extension(&cert)
}
