//! The KeyDescription extension (OID 1.3.6.1.4.1.11129.2.1.17) of an Android attestation leaf:
//! a strict DER parser over `asn1-rs` TLVs, and the matching encoder (for the software
//! provider and the tests).
//!
//! ```text
//! KeyDescription ::= SEQUENCE {
//!   attestationVersion INTEGER, attestationSecurityLevel ENUMERATED,
//!   keyMintVersion INTEGER, keyMintSecurityLevel ENUMERATED,
//!   attestationChallenge OCTET STRING, uniqueId OCTET STRING,
//!   softwareEnforced AuthorizationList, hardwareEnforced AuthorizationList }
//! AuthorizationList ::= SEQUENCE { [tag] EXPLICIT value, ... }   -- tags strictly ascending
//! RootOfTrust ::= SEQUENCE { verifiedBootKey OCTET STRING, deviceLocked BOOLEAN,
//!   verifiedBootState ENUMERATED, verifiedBootHash OCTET STRING OPTIONAL }
//! ```
//!
//! Strictness, on purpose: tags of an authorization list must be strictly ascending (the schema
//! is a SEQUENCE of OPTIONAL fields, so any other order is not DER), BOOLEAN must be `00` or
//! `FF` (a `01 01 01` "true" is refused, never read as false), integers fit 64 bits, and
//! nothing may trail a value. Every value borrows from the input, so memory is bounded by the
//! certificate's size, which the chain parser bounds first.

use x509_parser::der_parser::asn1_rs::{Any, Class, FromDer};

/// The attestation extension's OID.
pub const KEY_DESCRIPTION_OID: &str = "1.3.6.1.4.1.11129.2.1.17";

/// The most entries an authorization list may hold (the schema defines about 60 tags).
pub const MAX_AUTHORIZATION_ENTRIES: usize = 128;

/// The largest integer content, in bytes (a `u64` plus a sign byte).
pub const MAX_INTEGER_LEN: usize = 9;

/// Tag numbers of the authorization list fields this module reads.
pub mod tag {
    /// `[701] creationDateTime INTEGER` (ms since the epoch).
    pub const CREATION_DATE_TIME: u32 = 701;
    /// `[702] origin INTEGER`.
    pub const ORIGIN: u32 = 702;
    /// `[704] rootOfTrust RootOfTrust`.
    pub const ROOT_OF_TRUST: u32 = 704;
    /// `[705] osVersion INTEGER`.
    pub const OS_VERSION: u32 = 705;
    /// `[706] osPatchLevel INTEGER` (YYYYMM).
    pub const OS_PATCH_LEVEL: u32 = 706;
    /// `[710] attestationIdBrand OCTET STRING`.
    pub const ID_BRAND: u32 = 710;
    /// `[711] attestationIdDevice OCTET STRING`.
    pub const ID_DEVICE: u32 = 711;
    /// `[712] attestationIdProduct OCTET STRING`.
    pub const ID_PRODUCT: u32 = 712;
    /// `[716] attestationIdManufacturer OCTET STRING`.
    pub const ID_MANUFACTURER: u32 = 716;
    /// `[717] attestationIdModel OCTET STRING`.
    pub const ID_MODEL: u32 = 717;
    /// `[718] vendorPatchLevel INTEGER`.
    pub const VENDOR_PATCH_LEVEL: u32 = 718;
    /// `[719] bootPatchLevel INTEGER`.
    pub const BOOT_PATCH_LEVEL: u32 = 719;
}

/// Where the attested key lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SecurityLevel {
    /// Android's software keystore: no hardware vouches for anything.
    Software,
    /// A trusted execution environment.
    TrustedEnvironment,
    /// A discrete secure element.
    StrongBox,
}

impl SecurityLevel {
    fn from_enum(value: i64) -> Result<Self, KeyDescriptionError> {
        match value {
            0 => Ok(Self::Software),
            1 => Ok(Self::TrustedEnvironment),
            2 => Ok(Self::StrongBox),
            other => Err(KeyDescriptionError::UnknownEnum {
                field: "securityLevel",
                value: other,
            }),
        }
    }

    fn value(self) -> i64 {
        match self {
            Self::Software => 0,
            Self::TrustedEnvironment => 1,
            Self::StrongBox => 2,
        }
    }

    /// The name Android's tools use (`TRUSTED_ENVIRONMENT`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::Software => "SOFTWARE",
            Self::TrustedEnvironment => "TRUSTED_ENVIRONMENT",
            Self::StrongBox => "STRONG_BOX",
        }
    }
}

/// The verified boot state the bootloader reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifiedBootState {
    /// Booted an image signed by the OEM key.
    Verified,
    /// Booted an image signed by a user-installed key.
    SelfSigned,
    /// Booted an unverified image (unlocked bootloader).
    Unverified,
    /// Verification failed.
    Failed,
}

impl VerifiedBootState {
    fn from_enum(value: i64) -> Result<Self, KeyDescriptionError> {
        match value {
            0 => Ok(Self::Verified),
            1 => Ok(Self::SelfSigned),
            2 => Ok(Self::Unverified),
            3 => Ok(Self::Failed),
            other => Err(KeyDescriptionError::UnknownEnum {
                field: "verifiedBootState",
                value: other,
            }),
        }
    }

    fn value(self) -> i64 {
        match self {
            Self::Verified => 0,
            Self::SelfSigned => 1,
            Self::Unverified => 2,
            Self::Failed => 3,
        }
    }

    /// The name Android's tools use (`VERIFIED`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::Verified => "VERIFIED",
            Self::SelfSigned => "SELF_SIGNED",
            Self::Unverified => "UNVERIFIED",
            Self::Failed => "FAILED",
        }
    }
}

/// The decoded extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDescription {
    /// `attestationVersion`.
    pub attestation_version: i64,
    /// `attestationSecurityLevel`.
    pub attestation_security_level: SecurityLevel,
    /// `keyMintVersion` (`keymasterVersion` before KeyMint).
    pub keymint_version: i64,
    /// `keyMintSecurityLevel`.
    pub keymint_security_level: SecurityLevel,
    /// `attestationChallenge`: what the verifier asked the device to attest.
    pub attestation_challenge: Vec<u8>,
    /// `uniqueId`.
    pub unique_id: Vec<u8>,
    /// Authorizations the keystore (Android) enforces.
    pub software_enforced: AuthorizationList,
    /// Authorizations the secure hardware enforces.
    pub hardware_enforced: AuthorizationList,
}

/// The fields of an authorization list that the policy reads; every tag present is listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizationList {
    /// Every tag present, ascending.
    pub tags: Vec<u32>,
    /// `rootOfTrust`.
    pub root_of_trust: Option<RootOfTrust>,
    /// `osVersion`, e.g. 140000 for Android 14.
    pub os_version: Option<u64>,
    /// `osPatchLevel`, YYYYMM.
    pub os_patch_level: Option<u64>,
    /// `vendorPatchLevel`, YYYYMMDD.
    pub vendor_patch_level: Option<u64>,
    /// `bootPatchLevel`, YYYYMMDD.
    pub boot_patch_level: Option<u64>,
    /// `creationDateTime`, ms since the epoch.
    pub creation_date_time: Option<u64>,
    /// `origin` (0 generated, 2 imported, …).
    pub origin: Option<u64>,
    /// `attestationIdBrand`.
    pub id_brand: Option<Vec<u8>>,
    /// `attestationIdDevice`.
    pub id_device: Option<Vec<u8>>,
    /// `attestationIdProduct`.
    pub id_product: Option<Vec<u8>>,
    /// `attestationIdManufacturer`.
    pub id_manufacturer: Option<Vec<u8>>,
    /// `attestationIdModel`.
    pub id_model: Option<Vec<u8>>,
}

/// `RootOfTrust`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootOfTrust {
    /// Hash of the key that verified the boot image.
    pub verified_boot_key: Vec<u8>,
    /// Whether the bootloader is locked.
    pub device_locked: bool,
    /// The boot state.
    pub verified_boot_state: VerifiedBootState,
    /// Digest of the verified boot data (attestation version 3 and later).
    pub verified_boot_hash: Option<Vec<u8>>,
}

/// Why the extension does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyDescriptionError {
    /// Not a DER TLV where one was expected (truncated, bad length, …).
    #[error("malformed DER in {field}")]
    Der {
        /// The field being read.
        field: &'static str,
    },
    /// A value of the wrong ASN.1 type.
    #[error("{field}: expected {expected}")]
    WrongType {
        /// The field.
        field: &'static str,
        /// What the schema says.
        expected: &'static str,
    },
    /// Bytes after the end of a value.
    #[error("trailing bytes after {field}")]
    Trailing {
        /// The field.
        field: &'static str,
    },
    /// An integer longer than 64 bits, negative where it cannot be, or not minimally encoded.
    #[error("{field}: integer out of range or not DER")]
    Integer {
        /// The field.
        field: &'static str,
    },
    /// A BOOLEAN that is not `00` or `FF`.
    #[error("{field}: BOOLEAN is not DER (00 or FF)")]
    Boolean {
        /// The field.
        field: &'static str,
    },
    /// An enumerated value the schema does not define.
    #[error("{field}: unknown value {value}")]
    UnknownEnum {
        /// The field.
        field: &'static str,
        /// The value.
        value: i64,
    },
    /// Authorization list tags out of order or repeated.
    #[error("authorization list tag [{tag}] after [{previous}]: tags must be strictly ascending")]
    TagOrder {
        /// The earlier tag.
        previous: u32,
        /// The tag that broke the order.
        tag: u32,
    },
    /// More entries than [`MAX_AUTHORIZATION_ENTRIES`].
    #[error("authorization list over {MAX_AUTHORIZATION_ENTRIES} entries")]
    TooManyEntries,
}

impl KeyDescription {
    /// Decode the extension's value (the OCTET STRING content).
    pub fn parse(der: &[u8]) -> Result<Self, KeyDescriptionError> {
        let (body, rest) = expect(der, "KeyDescription", UNIVERSAL_SEQUENCE)?;
        no_trailing(rest, "KeyDescription")?;
        let (attestation_version, body) = integer_field(body, "attestationVersion")?;
        let (level, body) = enumerated_field(body, "attestationSecurityLevel")?;
        let (keymint_version, body) = integer_field(body, "keyMintVersion")?;
        let (keymint_level, body) = enumerated_field(body, "keyMintSecurityLevel")?;
        let (challenge, body) = expect(body, "attestationChallenge", UNIVERSAL_OCTET_STRING)?;
        let (unique_id, body) = expect(body, "uniqueId", UNIVERSAL_OCTET_STRING)?;
        let (software, body) = expect(body, "softwareEnforced", UNIVERSAL_SEQUENCE)?;
        let (hardware, body) = expect(body, "hardwareEnforced", UNIVERSAL_SEQUENCE)?;
        no_trailing(body, "KeyDescription")?;
        Ok(Self {
            attestation_version,
            attestation_security_level: SecurityLevel::from_enum(level)?,
            keymint_version,
            keymint_security_level: SecurityLevel::from_enum(keymint_level)?,
            attestation_challenge: challenge.to_vec(),
            unique_id: unique_id.to_vec(),
            software_enforced: AuthorizationList::parse(software)?,
            hardware_enforced: AuthorizationList::parse(hardware)?,
        })
    }

    /// Encode as DER (the inverse of [`KeyDescription::parse`] for the fields it keeps).
    pub fn to_der(&self) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend(tlv(&[0x02], &int_content(self.attestation_version)));
        body.extend(tlv(
            &[0x0a],
            &int_content(self.attestation_security_level.value()),
        ));
        body.extend(tlv(&[0x02], &int_content(self.keymint_version)));
        body.extend(tlv(
            &[0x0a],
            &int_content(self.keymint_security_level.value()),
        ));
        body.extend(tlv(&[0x04], &self.attestation_challenge));
        body.extend(tlv(&[0x04], &self.unique_id));
        body.extend(self.software_enforced.to_der());
        body.extend(self.hardware_enforced.to_der());
        tlv(&[0x30], &body)
    }
}

impl AuthorizationList {
    fn parse(mut body: &[u8]) -> Result<Self, KeyDescriptionError> {
        let mut list = Self::default();
        let mut previous: Option<u32> = None;
        while !body.is_empty() {
            if list.tags.len() >= MAX_AUTHORIZATION_ENTRIES {
                return Err(KeyDescriptionError::TooManyEntries);
            }
            let (any, rest) = read(body, "AuthorizationList")?;
            body = rest;
            if any.class() != Class::ContextSpecific || !any.header.is_constructed() {
                return Err(KeyDescriptionError::WrongType {
                    field: "AuthorizationList",
                    expected: "[tag] EXPLICIT",
                });
            }
            let number = any.tag().0;
            if let Some(previous) = previous
                && number <= previous
            {
                return Err(KeyDescriptionError::TagOrder {
                    previous,
                    tag: number,
                });
            }
            previous = Some(number);
            list.tags.push(number);
            // EXPLICIT: exactly one complete inner value.
            let (inner, trailing) = read(any.data, "authorization")?;
            no_trailing(trailing, "authorization")?;
            match number {
                tag::ROOT_OF_TRUST => {
                    list.root_of_trust = Some(RootOfTrust::parse(&inner)?);
                }
                tag::OS_VERSION => list.os_version = Some(unsigned(&inner, "osVersion")?),
                tag::OS_PATCH_LEVEL => {
                    list.os_patch_level = Some(unsigned(&inner, "osPatchLevel")?);
                }
                tag::VENDOR_PATCH_LEVEL => {
                    list.vendor_patch_level = Some(unsigned(&inner, "vendorPatchLevel")?);
                }
                tag::BOOT_PATCH_LEVEL => {
                    list.boot_patch_level = Some(unsigned(&inner, "bootPatchLevel")?);
                }
                tag::CREATION_DATE_TIME => {
                    list.creation_date_time = Some(unsigned(&inner, "creationDateTime")?);
                }
                tag::ORIGIN => list.origin = Some(unsigned(&inner, "origin")?),
                tag::ID_BRAND => list.id_brand = Some(octets(&inner, "attestationIdBrand")?),
                tag::ID_DEVICE => list.id_device = Some(octets(&inner, "attestationIdDevice")?),
                tag::ID_PRODUCT => {
                    list.id_product = Some(octets(&inner, "attestationIdProduct")?);
                }
                tag::ID_MANUFACTURER => {
                    list.id_manufacturer = Some(octets(&inner, "attestationIdManufacturer")?);
                }
                tag::ID_MODEL => list.id_model = Some(octets(&inner, "attestationIdModel")?),
                // Other tags are checked for shape only: the policy does not read them.
                _ => {}
            }
        }
        Ok(list)
    }

    fn to_der(&self) -> Vec<u8> {
        let mut entries: Vec<(u32, Vec<u8>)> = Vec::new();
        let int = |v: u64| tlv(&[0x02], &uint_content(v));
        if let Some(v) = self.creation_date_time {
            entries.push((tag::CREATION_DATE_TIME, int(v)));
        }
        if let Some(v) = self.origin {
            entries.push((tag::ORIGIN, int(v)));
        }
        if let Some(rot) = &self.root_of_trust {
            entries.push((tag::ROOT_OF_TRUST, rot.to_der()));
        }
        if let Some(v) = self.os_version {
            entries.push((tag::OS_VERSION, int(v)));
        }
        if let Some(v) = self.os_patch_level {
            entries.push((tag::OS_PATCH_LEVEL, int(v)));
        }
        for (t, v) in [
            (tag::ID_BRAND, &self.id_brand),
            (tag::ID_DEVICE, &self.id_device),
            (tag::ID_PRODUCT, &self.id_product),
            (tag::ID_MANUFACTURER, &self.id_manufacturer),
            (tag::ID_MODEL, &self.id_model),
        ] {
            if let Some(v) = v {
                entries.push((t, tlv(&[0x04], v)));
            }
        }
        if let Some(v) = self.vendor_patch_level {
            entries.push((tag::VENDOR_PATCH_LEVEL, int(v)));
        }
        if let Some(v) = self.boot_patch_level {
            entries.push((tag::BOOT_PATCH_LEVEL, int(v)));
        }
        entries.sort_by_key(|(t, _)| *t);
        let mut body = Vec::new();
        for (t, inner) in entries {
            body.extend(tlv(&context_tag(t), &inner));
        }
        tlv(&[0x30], &body)
    }
}

impl RootOfTrust {
    fn parse(any: &Any<'_>) -> Result<Self, KeyDescriptionError> {
        is(any, "rootOfTrust", UNIVERSAL_SEQUENCE)?;
        let body = any.data;
        let (key, body) = expect(body, "verifiedBootKey", UNIVERSAL_OCTET_STRING)?;
        let (locked, body) = read(body, "deviceLocked")?;
        is(&locked, "deviceLocked", UNIVERSAL_BOOLEAN)?;
        let device_locked = match locked.data {
            [0x00] => false,
            [0xff] => true,
            _ => {
                return Err(KeyDescriptionError::Boolean {
                    field: "deviceLocked",
                });
            }
        };
        let (state, body) = enumerated_field(body, "verifiedBootState")?;
        let (hash, body) = if body.is_empty() {
            (None, body)
        } else {
            let (hash, body) = expect(body, "verifiedBootHash", UNIVERSAL_OCTET_STRING)?;
            (Some(hash.to_vec()), body)
        };
        no_trailing(body, "rootOfTrust")?;
        Ok(Self {
            verified_boot_key: key.to_vec(),
            device_locked,
            verified_boot_state: VerifiedBootState::from_enum(state)?,
            verified_boot_hash: hash,
        })
    }

    fn to_der(&self) -> Vec<u8> {
        let mut body = tlv(&[0x04], &self.verified_boot_key);
        body.extend(tlv(
            &[0x01],
            &[if self.device_locked { 0xff } else { 0x00 }],
        ));
        body.extend(tlv(&[0x0a], &int_content(self.verified_boot_state.value())));
        if let Some(hash) = &self.verified_boot_hash {
            body.extend(tlv(&[0x04], hash));
        }
        tlv(&[0x30], &body)
    }
}

// --- reading -------------------------------------------------------------------------------

const UNIVERSAL_BOOLEAN: (u32, bool, &str) = (1, false, "BOOLEAN");
const UNIVERSAL_INTEGER: (u32, bool, &str) = (2, false, "INTEGER");
const UNIVERSAL_OCTET_STRING: (u32, bool, &str) = (4, false, "OCTET STRING");
const UNIVERSAL_ENUMERATED: (u32, bool, &str) = (10, false, "ENUMERATED");
const UNIVERSAL_SEQUENCE: (u32, bool, &str) = (16, true, "SEQUENCE");

fn read<'a>(
    input: &'a [u8],
    field: &'static str,
) -> Result<(Any<'a>, &'a [u8]), KeyDescriptionError> {
    match Any::from_der(input) {
        Ok((rest, any)) => Ok((any, rest)),
        Err(_) => Err(KeyDescriptionError::Der { field }),
    }
}

fn is(
    any: &Any<'_>,
    field: &'static str,
    ty: (u32, bool, &'static str),
) -> Result<(), KeyDescriptionError> {
    if any.class() == Class::Universal && any.tag().0 == ty.0 && any.header.is_constructed() == ty.1
    {
        Ok(())
    } else {
        Err(KeyDescriptionError::WrongType {
            field,
            expected: ty.2,
        })
    }
}

fn expect<'a>(
    input: &'a [u8],
    field: &'static str,
    ty: (u32, bool, &'static str),
) -> Result<(&'a [u8], &'a [u8]), KeyDescriptionError> {
    let (any, rest) = read(input, field)?;
    is(&any, field, ty)?;
    Ok((any.data, rest))
}

fn no_trailing(rest: &[u8], field: &'static str) -> Result<(), KeyDescriptionError> {
    if rest.is_empty() {
        Ok(())
    } else {
        Err(KeyDescriptionError::Trailing { field })
    }
}

fn integer_field<'a>(
    input: &'a [u8],
    field: &'static str,
) -> Result<(i64, &'a [u8]), KeyDescriptionError> {
    let (content, rest) = expect(input, field, UNIVERSAL_INTEGER)?;
    Ok((signed(content, field)?, rest))
}

fn enumerated_field<'a>(
    input: &'a [u8],
    field: &'static str,
) -> Result<(i64, &'a [u8]), KeyDescriptionError> {
    let (content, rest) = expect(input, field, UNIVERSAL_ENUMERATED)?;
    Ok((signed(content, field)?, rest))
}

fn unsigned(any: &Any<'_>, field: &'static str) -> Result<u64, KeyDescriptionError> {
    is(any, field, UNIVERSAL_INTEGER)?;
    let value = signed_wide(any.data, field)?;
    u64::try_from(value).map_err(|_| KeyDescriptionError::Integer { field })
}

fn octets(any: &Any<'_>, field: &'static str) -> Result<Vec<u8>, KeyDescriptionError> {
    is(any, field, UNIVERSAL_OCTET_STRING)?;
    Ok(any.data.to_vec())
}

fn signed(content: &[u8], field: &'static str) -> Result<i64, KeyDescriptionError> {
    i64::try_from(signed_wide(content, field)?).map_err(|_| KeyDescriptionError::Integer { field })
}

/// A DER INTEGER's content as i128: non-empty, minimal, at most [`MAX_INTEGER_LEN`] bytes.
fn signed_wide(content: &[u8], field: &'static str) -> Result<i128, KeyDescriptionError> {
    let bad = KeyDescriptionError::Integer { field };
    if content.is_empty() || content.len() > MAX_INTEGER_LEN {
        return Err(bad);
    }
    if content.len() > 1
        && ((content[0] == 0x00 && content[1] & 0x80 == 0)
            || (content[0] == 0xff && content[1] & 0x80 != 0))
    {
        return Err(bad);
    }
    let mut value: i128 = if content[0] & 0x80 != 0 { -1 } else { 0 };
    for &byte in content {
        value = (value << 8) | i128::from(byte);
    }
    Ok(value)
}

// --- writing -------------------------------------------------------------------------------

fn tlv(tag: &[u8], content: &[u8]) -> Vec<u8> {
    let mut out = tag.to_vec();
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// The identifier octets of `[number]` EXPLICIT (context-specific, constructed).
fn context_tag(number: u32) -> Vec<u8> {
    if number < 31 {
        return vec![0xa0 | number as u8];
    }
    let mut groups = Vec::new();
    let mut n = number;
    loop {
        groups.push((n & 0x7f) as u8);
        n >>= 7;
        if n == 0 {
            break;
        }
    }
    let mut out = vec![0xbf];
    for (i, group) in groups.iter().enumerate().rev() {
        out.push(if i == 0 { *group } else { group | 0x80 });
    }
    out
}

fn int_content(value: i64) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let mut start = 0;
    while start < 7
        && ((bytes[start] == 0x00 && bytes[start + 1] & 0x80 == 0)
            || (bytes[start] == 0xff && bytes[start + 1] & 0x80 != 0))
    {
        start += 1;
    }
    bytes[start..].to_vec()
}

fn uint_content(value: u64) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(&value.to_be_bytes());
    let mut start = 0;
    while start < 8 && out[start] == 0 && out[start + 1] & 0x80 == 0 {
        start += 1;
    }
    out[start..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> KeyDescription {
        KeyDescription {
            attestation_version: 300,
            attestation_security_level: SecurityLevel::StrongBox,
            keymint_version: 300,
            keymint_security_level: SecurityLevel::StrongBox,
            attestation_challenge: vec![7; 100],
            unique_id: vec![],
            software_enforced: AuthorizationList {
                creation_date_time: Some(1_727_389_887_639),
                ..AuthorizationList::default()
            },
            hardware_enforced: AuthorizationList {
                root_of_trust: Some(RootOfTrust {
                    verified_boot_key: vec![1; 32],
                    device_locked: true,
                    verified_boot_state: VerifiedBootState::Verified,
                    verified_boot_hash: Some(vec![2; 32]),
                }),
                os_version: Some(150_000),
                os_patch_level: Some(202_511),
                id_model: Some(b"enigm-one".to_vec()),
                vendor_patch_level: Some(20_251_105),
                boot_patch_level: Some(20_251_105),
                origin: Some(0),
                ..AuthorizationList::default()
            },
        }
    }

    fn with_tags(mut d: KeyDescription) -> KeyDescription {
        d.software_enforced.tags = vec![tag::CREATION_DATE_TIME];
        d.hardware_enforced.tags = vec![
            tag::ORIGIN,
            tag::ROOT_OF_TRUST,
            tag::OS_VERSION,
            tag::OS_PATCH_LEVEL,
            tag::ID_MODEL,
            tag::VENDOR_PATCH_LEVEL,
            tag::BOOT_PATCH_LEVEL,
        ];
        d
    }

    #[test]
    fn round_trips() {
        let d = sample();
        assert_eq!(KeyDescription::parse(&d.to_der()).unwrap(), with_tags(d));
    }

    #[test]
    fn integers_are_bounded_and_minimal() {
        assert_eq!(signed_wide(&[0x00, 0xff], "x"), Ok(255));
        assert_eq!(signed_wide(&[0xff], "x"), Ok(-1));
        assert!(signed_wide(&[0x00, 0x01], "x").is_err());
        assert!(signed_wide(&[], "x").is_err());
        assert!(signed_wide(&[0x01; 10], "x").is_err());
        assert_eq!(int_content(300), vec![0x01, 0x2c]);
        assert_eq!(uint_content(255), vec![0x00, 0xff]);
        assert_eq!(context_tag(704), vec![0xbf, 0x85, 0x40]);
    }

    #[test]
    fn every_truncation_is_refused_without_panic() {
        let der = sample().to_der();
        for len in 0..der.len() {
            assert!(
                KeyDescription::parse(&der[..len]).is_err(),
                "prefix of {len}"
            );
        }
    }
}
