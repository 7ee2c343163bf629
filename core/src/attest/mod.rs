//! Remote attestation (DESIGN.md §2 layer 6): Android Key Attestation evidence, verified as one
//! more eligibility signal. It never replaces a signature, a verification or a rollout rule.
//!
//! # Participants
//!
//! The *device* asks its keystore (a TEE or StrongBox in production, a software provider in
//! tests) to attest a key over a challenge; the keystore returns an X.509 chain whose leaf
//! carries the KeyDescription extension. The *director* (the origin) verifies the chain and
//! judges the attested facts against its policy; it stores the outcome, never the chain.
//!
//! # The challenge
//!
//! [`AttestationChallenge::bind`] makes the challenge from the server nonce of the request the
//! evidence travels with, the device handle and the TLS exporter of the connection:
//!
//! ```text
//! "EOA1"              4 bytes  version
//! nonce              32 bytes  issued by the origin for this request (single use, short-lived)
//! handle             32 bytes  the device handle of the requesting device
//! binding digest     32 bytes  BLAKE3 derive_key("enigm-ota attestation binding v1", exporter)
//! ```
//!
//! The parts stay apart (rather than one hash) so a mismatch says which binding broke:
//! another nonce is a **replay**; another handle or another connection is a **relay**.
//!
//! # Checks, in order (each refusal has a [`Reason`])
//!
//! 1. Bounds: at most [`MAX_CHAIN_LEN`] certificates of at most [`MAX_CERT_LEN`] bytes each,
//!    checked before decoding. `invalid_chain`.
//! 2. The chain: leaf extension decodes (strict DER), each link issued and signed by the next,
//!    issuers are CAs and valid at `now`, no serial on the status list, ending at a configured
//!    anchor. `invalid_chain`.
//! 3. The challenge: replay / relay as above.
//! 4. Freshness: the key's `creationDateTime`, when present, within `max_age_secs` of `now`
//!    (and not in the future beyond the skew). `stale`.
//! 5. Device: security level (TEE or StrongBox when hardware is required), allowed models.
//!    `unsupported_device`.
//! 6. Build: verified boot state `VERIFIED`, bootloader locked, OS version and patch level
//!    floors. `ineligible_build`.
//!
//! A device that presents no evidence where the policy requires it fails with
//! `eligibility_failure`.

mod chain;
pub mod key_description;

use serde::{Deserialize, Serialize};

pub use chain::{
    ConfigError, MAX_ANCHORS, MAX_CONFIG_FILE_LEN, StatusList, TrustAnchors, VerifiedChain,
    leaf_key_description, pem_certificates, serial_hex, verify_chain,
};
pub use key_description::{
    KEY_DESCRIPTION_OID, KeyDescription, KeyDescriptionError, SecurityLevel, VerifiedBootState,
};

use crate::director::DeviceHandle;
use crate::time::UnixTime;

/// The most certificates in an evidence chain (real chains have 3 to 5).
pub const MAX_CHAIN_LEN: usize = 8;

/// The largest certificate, DER (real ones are under 2 KiB).
pub const MAX_CERT_LEN: usize = 8 * 1024;

/// The largest evidence chain in total, DER.
pub const MAX_EVIDENCE_LEN: usize = 24 * 1024;

/// Length of an [`AttestationChallenge`].
pub const CHALLENGE_LEN: usize = 100;

/// Allowed clock skew for a key's creation time in the future.
pub const CREATION_SKEW_SECS: i64 = 300;

const CHALLENGE_VERSION: &[u8; 4] = b"EOA1";
const BINDING_CONTEXT: &str = "enigm-ota attestation binding v1";

/// Evidence as a device sends it: the attestation chain, DER, leaf first.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    /// The certificates, each standard base64 of DER.
    #[serde(with = "b64_chain")]
    pub chain: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Evidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the chain: it holds hardware identifiers.
        write!(f, "Evidence({} certificates)", self.chain.len())
    }
}

/// The challenge a device's keystore attests over.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AttestationChallenge(pub [u8; CHALLENGE_LEN]);

impl std::fmt::Debug for AttestationChallenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AttestationChallenge({})", hex::encode(&self.0[4..12]))
    }
}

impl AttestationChallenge {
    /// The challenge for a request with `nonce`, from the device `handle`, on the connection
    /// whose TLS exporter value is `exporter`.
    pub fn bind(nonce: &[u8; 32], handle: &DeviceHandle, exporter: &[u8; 32]) -> Self {
        let mut out = [0u8; CHALLENGE_LEN];
        out[..4].copy_from_slice(CHALLENGE_VERSION);
        out[4..36].copy_from_slice(nonce);
        out[36..68].copy_from_slice(&handle.0);
        out[68..].copy_from_slice(&blake3::derive_key(BINDING_CONTEXT, exporter));
        Self(out)
    }

    /// Compare with the challenge found in evidence: `Ok` when equal, else the reason.
    pub fn check(&self, attested: &[u8]) -> Result<(), AttestError> {
        if attested.len() != CHALLENGE_LEN || attested[..4] != *CHALLENGE_VERSION {
            return Err(AttestError::ChallengeFormat);
        }
        if attested[4..36] != self.0[4..36] {
            return Err(AttestError::OtherNonce);
        }
        if attested[36..68] != self.0[36..68] {
            return Err(AttestError::OtherHandle);
        }
        if attested[68..] != self.0[68..] {
            return Err(AttestError::OtherConnection);
        }
        Ok(())
    }
}

/// The reason classes of a refusal (the stored and reported names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The chain does not verify: malformed, unknown root, bad signature, expired, revoked.
    InvalidChain,
    /// The device or its keystore is not one the policy accepts (software keystore where
    /// hardware is required, model not allowed).
    UnsupportedDevice,
    /// The build is not acceptable: unverified boot, unlocked, OS or patch level too old.
    IneligibleBuild,
    /// The evidence is older than the window.
    Stale,
    /// The evidence answers another request's nonce.
    Replay,
    /// The evidence was made for another device or another connection.
    Relay,
    /// No evidence where the policy requires it.
    EligibilityFailure,
}

impl Reason {
    /// The stored name (`invalid_chain`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::InvalidChain => "invalid_chain",
            Self::UnsupportedDevice => "unsupported_device",
            Self::IneligibleBuild => "ineligible_build",
            Self::Stale => "stale",
            Self::Replay => "replay",
            Self::Relay => "relay",
            Self::EligibilityFailure => "eligibility_failure",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why evidence was refused, precisely. [`AttestError::reason`] gives the class.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttestError {
    /// No certificate.
    #[error("empty attestation chain")]
    EmptyChain,
    /// Over [`MAX_CHAIN_LEN`] certificates.
    #[error("attestation chain of {len} certificates (at most {MAX_CHAIN_LEN})")]
    ChainTooLong {
        /// Certificates sent.
        len: usize,
    },
    /// A certificate over [`MAX_CERT_LEN`] bytes, or the chain over [`MAX_EVIDENCE_LEN`].
    #[error("certificate {index} of {len} bytes over the cap")]
    CertTooLarge {
        /// Position in the chain (the chain's length for the total).
        index: usize,
        /// Its length.
        len: usize,
    },
    /// A certificate does not parse.
    #[error("certificate {index} malformed: {reason}")]
    MalformedCert {
        /// Position in the chain.
        index: usize,
        /// What the parser said.
        reason: String,
    },
    /// The leaf has no attestation extension.
    #[error("leaf has no attestation extension")]
    NoExtension,
    /// The leaf has the attestation extension twice.
    #[error("leaf has duplicate extensions")]
    DuplicateExtension,
    /// The extension does not decode.
    #[error("attestation extension: {0}")]
    KeyDescription(KeyDescriptionError),
    /// A certificate's issuer name is not the next certificate's subject.
    #[error("certificate {index} is not issued by the next certificate")]
    IssuerMismatch {
        /// Position of the child.
        index: usize,
    },
    /// A certificate's signature does not verify with its issuer's key.
    #[error("certificate {index}: {reason}")]
    BadSignature {
        /// Position of the child.
        index: usize,
        /// Why.
        reason: String,
    },
    /// An issuing certificate is not a CA (basicConstraints or keyUsage).
    #[error("certificate {index} issues certificates but is not a CA")]
    IssuerNotCa {
        /// Position of the issuer.
        index: usize,
    },
    /// An issuing certificate has expired.
    #[error("certificate {index} expired at {not_after}")]
    Expired {
        /// Position.
        index: usize,
        /// Its notAfter.
        not_after: UnixTime,
    },
    /// An issuing certificate is not yet valid.
    #[error("certificate {index} not valid before {not_before}")]
    NotYetValid {
        /// Position.
        index: usize,
        /// Its notBefore.
        not_before: UnixTime,
    },
    /// A certificate's serial is on the status list.
    #[error("certificate {index} (serial {serial}) is revoked")]
    Revoked {
        /// Position.
        index: usize,
        /// Its serial, lowercase hex.
        serial: String,
    },
    /// The chain does not end at a configured anchor.
    #[error("chain does not lead to a configured trust anchor")]
    UnknownRoot,
    /// The challenge is not one this origin makes.
    #[error("attestation challenge is not in the enigm-ota format")]
    ChallengeFormat,
    /// The challenge was made for another nonce.
    #[error("attestation challenge answers another nonce")]
    OtherNonce,
    /// The challenge was made for another device handle.
    #[error("attestation challenge names another device")]
    OtherHandle,
    /// The challenge was made on another connection.
    #[error("attestation challenge was made on another connection")]
    OtherConnection,
    /// The attested key is older than the window.
    #[error("attested key created at {created}, older than {max_age_secs} s before {now}")]
    Stale {
        /// The key's creation time (seconds).
        created: UnixTime,
        /// The window.
        max_age_secs: i64,
        /// The origin's time.
        now: UnixTime,
    },
    /// The attested key's creation time is in the future.
    #[error("attested key created at {created}, in the future (now {now})")]
    FromTheFuture {
        /// The key's creation time (seconds).
        created: UnixTime,
        /// The origin's time.
        now: UnixTime,
    },
    /// The keystore's security level is below the policy's.
    #[error("attestation security level {found} where hardware is required")]
    SoftwareOnly {
        /// What the evidence says.
        found: &'static str,
    },
    /// The model is not allowed, or not attested where models are restricted.
    #[error("model {model:?} not allowed")]
    ModelNotAllowed {
        /// The attested model, if any (a product name, not a hardware identifier).
        model: Option<String>,
    },
    /// No root of trust in the hardware-enforced list.
    #[error("no hardware root of trust")]
    NoRootOfTrust,
    /// Verified boot did not verify the OS.
    #[error("verified boot state {found}")]
    BootNotVerified {
        /// The state.
        found: &'static str,
    },
    /// The bootloader is unlocked.
    #[error("bootloader unlocked")]
    Unlocked,
    /// The OS version is below the floor (or not attested).
    #[error("OS version {found:?} below {floor}")]
    OsVersion {
        /// Attested version.
        found: Option<u64>,
        /// The floor.
        floor: u64,
    },
    /// The OS patch level is below the floor (or not attested).
    #[error("OS patch level {found:?} below {floor}")]
    PatchLevel {
        /// Attested level (YYYYMM).
        found: Option<u64>,
        /// The floor.
        floor: u64,
    },
    /// The policy requires evidence and none came.
    #[error("no attestation evidence presented")]
    Missing,
}

impl AttestError {
    /// The class of this refusal.
    pub fn reason(&self) -> Reason {
        match self {
            Self::ChallengeFormat | Self::OtherNonce => Reason::Replay,
            Self::OtherHandle | Self::OtherConnection => Reason::Relay,
            Self::Stale { .. } | Self::FromTheFuture { .. } => Reason::Stale,
            Self::SoftwareOnly { .. } | Self::ModelNotAllowed { .. } => Reason::UnsupportedDevice,
            Self::NoRootOfTrust
            | Self::BootNotVerified { .. }
            | Self::Unlocked
            | Self::OsVersion { .. }
            | Self::PatchLevel { .. } => Reason::IneligibleBuild,
            Self::Missing => Reason::EligibilityFailure,
            _ => Reason::InvalidChain,
        }
    }
}

/// What the policy asks of attested devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Requirements {
    /// Require a TEE or StrongBox keystore (refuse `SOFTWARE`).
    pub hardware: bool,
    /// Require verified boot state `VERIFIED`.
    pub verified_boot: bool,
    /// Require a locked bootloader.
    pub locked: bool,
    /// Lowest OS version (e.g. 140000), if any.
    pub min_os_version: Option<u64>,
    /// Lowest OS patch level (YYYYMM), if any.
    pub min_patch_level: Option<u64>,
    /// Allowed attested models (`attestationIdModel`); empty allows any.
    pub models: Vec<String>,
    /// Largest age of the attested key, in seconds.
    pub max_age_secs: i64,
}

impl Default for Requirements {
    fn default() -> Self {
        Self {
            hardware: true,
            verified_boot: true,
            locked: true,
            min_os_version: None,
            min_patch_level: None,
            models: Vec::new(),
            max_age_secs: 600,
        }
    }
}

/// What the verifier needs besides the evidence.
#[derive(Debug, Clone, Copy)]
pub struct Verifier<'a> {
    /// The trust anchors.
    pub anchors: &'a TrustAnchors,
    /// The status list.
    pub status: &'a StatusList,
    /// The requirements.
    pub requirements: &'a Requirements,
}

/// The facts of a verified attestation that the director may log or count (no identifiers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attested {
    /// The keystore's security level.
    pub security_level: SecurityLevel,
    /// The verified boot state.
    pub boot_state: VerifiedBootState,
    /// Whether the bootloader is locked.
    pub locked: bool,
    /// The attested OS version.
    pub os_version: Option<u64>,
    /// The attested OS patch level.
    pub os_patch_level: Option<u64>,
}

impl Verifier<'_> {
    /// Verify `evidence` for the request whose expected challenge is `expected`, at `now`.
    /// Pure: no clock, no I/O.
    pub fn verify(
        &self,
        evidence: &Evidence,
        expected: &AttestationChallenge,
        now: UnixTime,
    ) -> Result<Attested, AttestError> {
        let total: usize = evidence.chain.iter().map(Vec::len).sum();
        if total > MAX_EVIDENCE_LEN {
            return Err(AttestError::CertTooLarge {
                index: evidence.chain.len(),
                len: total,
            });
        }
        let chain = verify_chain(&evidence.chain, self.anchors, self.status, now)?;
        let description = &chain.key_description;
        expected.check(&description.attestation_challenge)?;
        judge(description, self.requirements, now)
    }
}

/// Judge decoded facts against the requirements (steps 4 to 6 of the module doc).
pub fn judge(
    description: &KeyDescription,
    requirements: &Requirements,
    now: UnixTime,
) -> Result<Attested, AttestError> {
    let hw = &description.hardware_enforced;
    let sw = &description.software_enforced;
    if let Some(ms) = sw.creation_date_time.or(hw.creation_date_time) {
        let created = UnixTime(i64::try_from(ms / 1000).unwrap_or(i64::MAX));
        if created.0 > now.0.saturating_add(CREATION_SKEW_SECS) {
            return Err(AttestError::FromTheFuture { created, now });
        }
        if now.0.saturating_sub(created.0) > requirements.max_age_secs {
            return Err(AttestError::Stale {
                created,
                max_age_secs: requirements.max_age_secs,
                now,
            });
        }
    }
    let level = description.attestation_security_level;
    if requirements.hardware && level == SecurityLevel::Software {
        return Err(AttestError::SoftwareOnly {
            found: level.name(),
        });
    }
    if !requirements.models.is_empty() {
        let model = hw.id_model.as_ref().map(|m| {
            String::from_utf8_lossy(m)
                .chars()
                .take(64)
                .collect::<String>()
        });
        if !model
            .as_ref()
            .is_some_and(|m| requirements.models.iter().any(|allowed| allowed == m))
        {
            return Err(AttestError::ModelNotAllowed { model });
        }
    }
    // Only the hardware-enforced list speaks for the boot chain.
    let Some(root) = &hw.root_of_trust else {
        return Err(AttestError::NoRootOfTrust);
    };
    if requirements.verified_boot && root.verified_boot_state != VerifiedBootState::Verified {
        return Err(AttestError::BootNotVerified {
            found: root.verified_boot_state.name(),
        });
    }
    if requirements.locked && !root.device_locked {
        return Err(AttestError::Unlocked);
    }
    if let Some(floor) = requirements.min_os_version
        && hw.os_version.is_none_or(|v| v < floor)
    {
        return Err(AttestError::OsVersion {
            found: hw.os_version,
            floor,
        });
    }
    if let Some(floor) = requirements.min_patch_level
        && hw.os_patch_level.is_none_or(|v| v < floor)
    {
        return Err(AttestError::PatchLevel {
            found: hw.os_patch_level,
            floor,
        });
    }
    Ok(Attested {
        security_level: level,
        boot_state: root.verified_boot_state,
        locked: root.device_locked,
        os_version: hw.os_version,
        os_patch_level: hw.os_patch_level,
    })
}

/// The actions attestation can gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Enrollment: a device counts as enrolled for offers only once it attested.
    Enrollment,
    /// A check-in on a channel.
    CheckIn,
    /// Access to a channel's private content.
    PrivateContent,
}

/// What the policy makes of an attestation result for one action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Go on (the attestation passed, or the policy does not ask for it).
    Pass,
    /// Go on, but count the miss (policy `preferred`).
    PassCounted(Reason),
    /// Stop, for this reason (policy `required`).
    Refuse(Reason),
}

/// Apply a policy mode to the result of this request's attestation (`None`: no evidence).
/// Pure; the caller still runs every other check (attestation never bypasses one).
pub fn gate(
    mode: crate::director::AttestationPolicy,
    result: Option<&Result<Attested, AttestError>>,
) -> Gate {
    apply(
        mode,
        match result {
            Some(Ok(_)) => None,
            Some(Err(e)) => Some(e.reason()),
            None => Some(Reason::EligibilityFailure),
        },
    )
}

/// Like [`gate`], over the outcome recorded for this request's attestation (the director keeps
/// the outcome, never the evidence): anything but a pass counts as `eligibility_failure`.
pub fn outcome_gate(
    mode: crate::director::AttestationPolicy,
    outcome: Option<crate::director::AttestationOutcome>,
) -> Gate {
    let passed = outcome == Some(crate::director::AttestationOutcome::Passed);
    apply(mode, (!passed).then_some(Reason::EligibilityFailure))
}

/// A policy mode applied to a failure (`None`: the attestation passed).
fn apply(mode: crate::director::AttestationPolicy, failure: Option<Reason>) -> Gate {
    use crate::director::AttestationPolicy as Mode;
    match (mode, failure) {
        (Mode::Off, _) | (_, None) => Gate::Pass,
        (Mode::Preferred, Some(reason)) => Gate::PassCounted(reason),
        (Mode::Required, Some(reason)) => Gate::Refuse(reason),
    }
}

/// The enrollment gate: like [`gate`], except that a device presenting no evidence this time
/// passes when its latest attestation on record passed (`on_record_passed`). Fresh evidence
/// always decides (a failure now overrides a pass on record).
pub fn enrollment_gate(
    mode: crate::director::AttestationPolicy,
    result: Option<&Result<Attested, AttestError>>,
    on_record_passed: bool,
) -> Gate {
    if result.is_none() && on_record_passed {
        Gate::Pass
    } else {
        gate(mode, result)
    }
}

mod b64_chain {
    use data_encoding::BASE64;
    use serde::{Deserializer, Serializer};

    use super::{MAX_CERT_LEN, MAX_CHAIN_LEN};

    pub(super) fn serialize<S: Serializer>(chain: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(chain.iter().map(|c| BASE64.encode(c)))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        struct Chain;
        impl<'de> serde::de::Visitor<'de> for Chain {
            type Value = Vec<Vec<u8>>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "at most {MAX_CHAIN_LEN} base64 certificates")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(text) = seq.next_element::<std::borrow::Cow<'de, str>>()? {
                    if out.len() >= MAX_CHAIN_LEN {
                        return Err(serde::de::Error::custom(format!(
                            "attestation chain over {MAX_CHAIN_LEN} certificates"
                        )));
                    }
                    if text.len() > MAX_CERT_LEN.div_ceil(3) * 4 {
                        return Err(serde::de::Error::custom(format!(
                            "certificate over {MAX_CERT_LEN} bytes"
                        )));
                    }
                    out.push(
                        BASE64
                            .decode(text.as_bytes())
                            .map_err(serde::de::Error::custom)?,
                    );
                }
                Ok(out)
            }
        }
        d.deserialize_seq(Chain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_mismatches_name_their_binding() {
        let handle = DeviceHandle([1; 32]);
        let c = AttestationChallenge::bind(&[2; 32], &handle, &[3; 32]);
        assert_eq!(c.check(&c.0), Ok(()));
        let other_nonce = AttestationChallenge::bind(&[9; 32], &handle, &[3; 32]);
        assert_eq!(c.check(&other_nonce.0), Err(AttestError::OtherNonce));
        let other_handle = AttestationChallenge::bind(&[2; 32], &DeviceHandle([5; 32]), &[3; 32]);
        assert_eq!(c.check(&other_handle.0), Err(AttestError::OtherHandle));
        let other_conn = AttestationChallenge::bind(&[2; 32], &handle, &[4; 32]);
        assert_eq!(c.check(&other_conn.0), Err(AttestError::OtherConnection));
        assert_eq!(c.check(b"challenge"), Err(AttestError::ChallengeFormat));
        assert_eq!(AttestError::OtherNonce.reason(), Reason::Replay);
        assert_eq!(AttestError::OtherConnection.reason(), Reason::Relay);
    }

    #[test]
    fn outcome_gate_follows_the_mode() {
        use crate::director::AttestationOutcome::{Failed, Passed};
        use crate::director::AttestationPolicy::{Off, Preferred, Required};
        for outcome in [None, Some(Passed), Some(Failed)] {
            assert_eq!(outcome_gate(Off, outcome), Gate::Pass);
        }
        assert_eq!(outcome_gate(Required, Some(Passed)), Gate::Pass);
        assert_eq!(outcome_gate(Preferred, Some(Passed)), Gate::Pass);
        let failure = Reason::EligibilityFailure;
        assert_eq!(outcome_gate(Required, Some(Failed)), Gate::Refuse(failure));
        assert_eq!(outcome_gate(Required, None), Gate::Refuse(failure));
        assert_eq!(outcome_gate(Preferred, None), Gate::PassCounted(failure));
    }

    #[test]
    fn gates_follow_the_mode() {
        use crate::director::AttestationPolicy as Mode;
        let refused: Result<Attested, AttestError> = Err(AttestError::Unlocked);
        assert_eq!(gate(Mode::Off, None), Gate::Pass);
        assert_eq!(
            gate(Mode::Preferred, None),
            Gate::PassCounted(Reason::EligibilityFailure)
        );
        assert_eq!(
            gate(Mode::Required, Some(&refused)),
            Gate::Refuse(Reason::IneligibleBuild)
        );
        assert_eq!(
            gate(Mode::Required, None),
            Gate::Refuse(Reason::EligibilityFailure)
        );
    }

    #[test]
    fn enrollment_counts_a_pass_on_record_until_fresh_evidence_fails() {
        use crate::director::AttestationPolicy as Mode;
        let refused: Result<Attested, AttestError> = Err(AttestError::OtherHandle);
        assert_eq!(enrollment_gate(Mode::Required, None, true), Gate::Pass);
        assert_eq!(
            enrollment_gate(Mode::Required, None, false),
            Gate::Refuse(Reason::EligibilityFailure)
        );
        assert_eq!(
            enrollment_gate(Mode::Required, Some(&refused), true),
            Gate::Refuse(Reason::Relay)
        );
        assert_eq!(
            enrollment_gate(Mode::Preferred, Some(&refused), true),
            Gate::PassCounted(Reason::Relay)
        );
    }

    #[test]
    fn evidence_bounds_hold_at_decode() {
        let many = format!(r#"{{"chain":[{}]}}"#, ["\"AA==\""; 9].join(","));
        assert!(serde_json::from_str::<Evidence>(&many).is_err());
        let big = format!(r#"{{"chain":["{}"]}}"#, "A".repeat(MAX_CERT_LEN * 2));
        assert!(serde_json::from_str::<Evidence>(&big).is_err());
        let ok: Evidence = serde_json::from_str(r#"{"chain":["AAEC"]}"#).unwrap();
        assert_eq!(ok.chain, vec![vec![0, 1, 2]]);
    }
}
