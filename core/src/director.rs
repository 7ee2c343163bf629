//! The director's decisions (DESIGN.md §2 layer 5, §3 "Offer" and "Device handle"): who is
//! offered which release, as pure functions of their inputs.
//!
//! - [`DeviceHandle`]: a device is known by a keyed BLAKE3 hash of its public key, with a
//!   fleet-specific key, never by a hardware serial.
//! - [`decide`]: eligibility from enrollment, channel, model, upgrade path, rollout stage and
//!   percentage, validation cohort and attestation. Percentage buckets are deterministic per
//!   release and handle, so raising the percentage never removes a device already offered.
//! - [`Offer`]: the director-signed answer, bound to the handle, the request nonce and a short
//!   expiry, carrying the exact artifact targets and hashes the device must find identical in
//!   the image repository (the Uptane rule).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Sha256Hash;
use crate::rollout::Stage;
use crate::time::UnixTime;
use crate::tuf::enigm::{Channel, ReleaseNumber};

/// The fleet-specific key that derives device handles.
#[derive(Clone, PartialEq, Eq)]
pub struct HandleKey(pub [u8; 32]);

impl std::fmt::Debug for HandleKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandleKey(..)")
    }
}

/// A device's privacy-preserving handle: keyed BLAKE3 of its public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeviceHandle(#[serde(with = "hex_32")] pub [u8; 32]);

impl DeviceHandle {
    /// The handle of the device whose public key is `device_key`.
    pub fn derive(key: &HandleKey, device_key: &[u8; 32]) -> Self {
        let mut hasher = blake3::Hasher::new_keyed(&key.0);
        hasher.update(b"enigm-ota device handle v1\0");
        hasher.update(device_key);
        Self(*hasher.finalize().as_bytes())
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Debug for DeviceHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceHandle({})", &self.to_hex()[..16])
    }
}

impl std::fmt::Display for DeviceHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// What the director knows of a device. Nothing else is stored about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFacts {
    /// The device's handle.
    pub handle: DeviceHandle,
    /// Whether its enrollment was revoked.
    pub revoked: bool,
    /// Its model, as it reports it in a signed check-in.
    pub model: String,
    /// The channel it follows.
    pub channel: Channel,
    /// The release it runs, if any.
    pub installed: Option<ReleaseNumber>,
    /// Whether it is in the validation cohort.
    pub validation_cohort: bool,
    /// The outcome of its latest attestation, if any.
    pub attestation: Option<AttestationOutcome>,
}

/// A stored attestation outcome (never the evidence itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttestationOutcome {
    /// The evidence verified and met the policy.
    Passed,
    /// The evidence was refused.
    Failed,
}

/// Whether a channel needs attestation before an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttestationPolicy {
    /// Not asked for.
    Off,
    /// Counted, not enforced.
    Preferred,
    /// No offer without a passed attestation.
    Required,
}

/// What the director knows of a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseFacts {
    /// Its channel.
    pub channel: Channel,
    /// Its number in the channel.
    pub number: ReleaseNumber,
    /// The models it is built for.
    pub models: Vec<String>,
    /// The lowest installed release it upgrades from.
    pub min_installed: Option<ReleaseNumber>,
    /// Its stage.
    pub stage: Stage,
    /// The channel's attestation policy for check-ins.
    pub attestation: AttestationPolicy,
}

/// The director's answer for one device and one release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Offer the release.
    Offer,
    /// Don't, for this reason.
    NoOffer(Ineligible),
}

/// Why a device is not offered a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Ineligible {
    /// The device's enrollment is revoked.
    #[error("device enrollment revoked")]
    Revoked,
    /// The device follows another channel.
    #[error("device follows another channel")]
    OtherChannel,
    /// The release is not built for the device's model.
    #[error("release not built for this model")]
    Model,
    /// The device already runs this release or a later one.
    #[error("device already runs this release or a later one")]
    NotNewer,
    /// The device's installed release is below the release's upgrade floor.
    #[error("installed release below the upgrade path's floor")]
    UpgradePath,
    /// The release is a draft.
    #[error("release is a draft")]
    Draft,
    /// The release is in validation and the device is not in the cohort.
    #[error("release is in validation and the device is not in the cohort")]
    NotInCohort,
    /// The device's bucket is above the rollout percentage.
    #[error("device not yet in the rollout percentage")]
    NotYetInRollout,
    /// The release is halted.
    #[error("release rollout halted")]
    Halted,
    /// The release is revoked.
    #[error("release revoked")]
    ReleaseRevoked,
    /// The channel requires attestation and the device has none that passed.
    #[error("channel requires a passed attestation")]
    AttestationRequired,
}

/// Number of rollout buckets: percentages have a resolution of 0.01 point.
pub const BUCKETS: u16 = 10_000;

/// The device's rollout bucket for a release, uniform in `0..BUCKETS` and fixed for the pair.
pub fn bucket(channel: &Channel, release: ReleaseNumber, handle: &DeviceHandle) -> u16 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"enigm-ota rollout bucket v1\0");
    hasher.update(channel.0.as_bytes());
    hasher.update(b"\0");
    hasher.update(&release.0.to_le_bytes());
    hasher.update(&handle.0);
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_bytes()[..8]);
    // Modulo bias is below 2^-50: negligible.
    (u64::from_le_bytes(first) % u64::from(BUCKETS)) as u16
}

/// Decide whether `device` is offered `release`. Pure: same inputs, same answer.
pub fn decide(device: &DeviceFacts, release: &ReleaseFacts) -> Decision {
    match check(device, release) {
        Ok(()) => Decision::Offer,
        Err(reason) => Decision::NoOffer(reason),
    }
}

fn check(device: &DeviceFacts, release: &ReleaseFacts) -> Result<(), Ineligible> {
    if device.revoked {
        return Err(Ineligible::Revoked);
    }
    match release.stage {
        Stage::Draft => return Err(Ineligible::Draft),
        Stage::Halted { .. } => return Err(Ineligible::Halted),
        Stage::Revoked => return Err(Ineligible::ReleaseRevoked),
        _ => {}
    }
    if device.channel != release.channel {
        return Err(Ineligible::OtherChannel);
    }
    if !release.models.contains(&device.model) {
        return Err(Ineligible::Model);
    }
    if device
        .installed
        .is_some_and(|installed| installed >= release.number)
    {
        return Err(Ineligible::NotNewer);
    }
    if let Some(floor) = release.min_installed
        && device.installed.is_none_or(|installed| installed < floor)
    {
        return Err(Ineligible::UpgradePath);
    }
    if release.attestation == AttestationPolicy::Required
        && device.attestation != Some(AttestationOutcome::Passed)
    {
        return Err(Ineligible::AttestationRequired);
    }
    match release.stage {
        Stage::Validation if !device.validation_cohort => Err(Ineligible::NotInCohort),
        Stage::Limited { basis_points } => {
            // The validation cohort keeps its offer through the limited waves.
            if device.validation_cohort
                || bucket(&release.channel, release.number, &device.handle) < basis_points
            {
                Ok(())
            } else {
                Err(Ineligible::NotYetInRollout)
            }
        }
        _ => Ok(()),
    }
}

/// A device's check-in body (the signed request carries who and when; this says what it runs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckIn {
    /// The release the device runs, if any.
    pub installed: Option<ReleaseNumber>,
}

/// A check-in body with optional attestation evidence: the same JSON as [`CheckIn`] plus an
/// `attestation` field, so a device without a provider keeps sending [`CheckIn`] unchanged
/// and the origin parses both with this type (an additive wire change, docs/PROTOCOL.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestedCheckIn {
    /// The release the device runs, if any.
    pub installed: Option<ReleaseNumber>,
    /// Evidence over [`crate::attest::AttestationChallenge::bind`] of this request's nonce,
    /// the device's handle and the connection's TLS exporter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<crate::attest::Evidence>,
}

/// Largest check-in body carrying evidence ([`crate::attest::MAX_EVIDENCE_LEN`] of DER as
/// base64, plus the JSON around it); it fits a 64 KiB request frame.
pub const MAX_ATTESTED_BODY_LEN: usize = 48 * 1024;

/// The director's answer to a check-in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CheckInAnswer {
    /// A signed offer (the envelope, as JSON).
    Offer(serde_json::Value),
    /// Nothing to install, and why (for the device's status).
    NoOffer {
        /// The reason, e.g. "device not yet in the rollout percentage".
        reason: String,
    },
}

/// A device's install report body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallReport {
    /// The release's channel.
    pub channel: Channel,
    /// The release.
    pub release: ReleaseNumber,
    /// Whether it installed and booted.
    pub success: bool,
    /// The error class of a failure (`download`, `verify`, `boot-check`, …).
    pub error_class: Option<String>,
}

/// Largest check-in or report body the director parses.
pub const MAX_BODY_LEN: usize = 16 * 1024;

/// One artifact as the offer names it: exactly what the image repository must sign too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfferedArtifact {
    /// Target path in the image repository's `release` role.
    pub target: String,
    /// Signed length.
    pub length: u64,
    /// Signed SHA-256.
    pub sha256: Sha256Hash,
    /// Signed BLAKE3 (from `custom.enigm`).
    pub blake3: crate::digest::Blake3Hash,
    /// The install slot.
    pub slot: String,
}

/// A director-signed offer (`_type` `offer`, signed like TUF metadata by the director's online
/// key, which the device pins in the director root).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Offer {
    /// Always `offer`.
    #[serde(rename = "_type")]
    pub type_: String,
    /// The device it is for.
    pub handle: DeviceHandle,
    /// The nonce of the check-in it answers.
    #[serde(with = "hex_32")]
    pub nonce: [u8; 32],
    /// When it was issued.
    pub issued_at: UnixTime,
    /// When it stops being valid (minutes later).
    pub expires: UnixTime,
    /// The channel.
    pub channel: Channel,
    /// The release offered.
    pub release: ReleaseNumber,
    /// The release manifest's target path in the image repository.
    pub manifest: String,
    /// The artifacts, installed all or nothing.
    pub artifacts: Vec<OfferedArtifact>,
    /// The rollout stage at issue time.
    pub stage: Stage,
}

/// Why a device refuses an offer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OfferError {
    /// The offer's signature does not meet the director root's threshold, or it is malformed.
    #[error("offer: {0}")]
    Metadata(#[from] crate::tuf::Error),
    /// The offer is for another device.
    #[error("offer is for device {offered}, not this device")]
    OtherDevice {
        /// The handle in the offer.
        offered: DeviceHandle,
    },
    /// The offer answers another check-in.
    #[error("offer answers another check-in (nonce mismatch)")]
    NonceMismatch,
    /// The offer has expired.
    #[error("offer expired at {expires}, now is {now}")]
    Expired {
        /// Its expiry.
        expires: UnixTime,
        /// The device's time.
        now: UnixTime,
    },
    /// The offer was issued in the future beyond the allowed skew.
    #[error("offer issued at {issued_at}, in the future (now {now})")]
    FromTheFuture {
        /// Its issue time.
        issued_at: UnixTime,
        /// The device's time.
        now: UnixTime,
    },
    /// The offer is for a release not above the installed one (rollback).
    #[error("offer of release {offered} is not above the installed release {installed}")]
    Rollback {
        /// Offered release number.
        offered: u64,
        /// Installed release number.
        installed: u64,
    },
    /// The offer names no artifacts.
    #[error("offer names no artifacts")]
    Empty,
}

/// Largest offer file a device parses.
pub const MAX_OFFER_LEN: u64 = 64 * 1024;

/// Allowed clock skew for an offer's issue time.
pub const OFFER_SKEW_SECS: i64 = 300;

/// What the device expects of an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfferExpectation<'a> {
    /// This device's handle.
    pub handle: &'a DeviceHandle,
    /// The nonce of the check-in just made.
    pub nonce: &'a [u8; 32],
    /// The installed release, if any.
    pub installed: Option<ReleaseNumber>,
    /// The device's time.
    pub now: UnixTime,
}

impl Offer {
    /// Sign this offer with the director key(s); the result is an envelope like TUF metadata.
    pub fn sign(&self, keys: &[&crate::tuf::InMemoryKey]) -> Vec<u8> {
        crate::tuf::metadata::sign_document(self, keys)
    }

    /// Verify an offer file against the director root and the device's expectations.
    pub fn verify(
        bytes: &[u8],
        director_root: &crate::tuf::metadata::Root,
        expect: OfferExpectation<'_>,
    ) -> Result<Self, OfferError> {
        let envelope =
            crate::tuf::metadata::Envelope::parse("offer", "offer.json", bytes, MAX_OFFER_LEN)?;
        // The director's offer key is its root's `targets` role (Uptane's director targets).
        director_root.verify_role("targets", "offer", &envelope)?;
        let offer: Self = serde_json::from_value(envelope.signed().clone()).map_err(|e| {
            crate::tuf::Error::Malformed {
                file: "offer.json".into(),
                reason: e.to_string(),
            }
        })?;
        if offer.type_ != "offer" {
            return Err(crate::tuf::Error::WrongType {
                file: "offer.json".into(),
                expected: "offer",
                found: offer.type_.chars().take(64).collect(),
            }
            .into());
        }
        if offer.handle != *expect.handle {
            return Err(OfferError::OtherDevice {
                offered: offer.handle,
            });
        }
        if offer.nonce != *expect.nonce {
            return Err(OfferError::NonceMismatch);
        }
        if expect.now >= offer.expires {
            return Err(OfferError::Expired {
                expires: offer.expires,
                now: expect.now,
            });
        }
        if offer.issued_at > expect.now.plus_secs(OFFER_SKEW_SECS) {
            return Err(OfferError::FromTheFuture {
                issued_at: offer.issued_at,
                now: expect.now,
            });
        }
        if let Some(installed) = expect.installed
            && offer.release <= installed
        {
            return Err(OfferError::Rollback {
                offered: offer.release.0,
                installed: installed.0,
            });
        }
        if offer.artifacts.is_empty() {
            return Err(OfferError::Empty);
        }
        Ok(offer)
    }

    /// Artifacts by target path.
    pub fn artifacts_by_target(&self) -> BTreeMap<&str, &OfferedArtifact> {
        self.artifacts
            .iter()
            .map(|a| (a.target.as_str(), a))
            .collect()
    }
}

mod hex_32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(text.as_bytes(), &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tuf::InMemoryKey;
    use crate::tuf::metadata::{Common, RoleKeys, Root};

    fn handle(i: u64) -> DeviceHandle {
        DeviceHandle::derive(
            &HandleKey([9; 32]),
            blake3::hash(&i.to_le_bytes()).as_bytes(),
        )
    }

    fn device(i: u64) -> DeviceFacts {
        DeviceFacts {
            handle: handle(i),
            revoked: false,
            model: "enigm-one".into(),
            channel: Channel("stable".into()),
            installed: Some(ReleaseNumber(1)),
            validation_cohort: false,
            attestation: None,
        }
    }

    fn release(stage: Stage) -> ReleaseFacts {
        ReleaseFacts {
            channel: Channel("stable".into()),
            number: ReleaseNumber(2),
            models: vec!["enigm-one".into()],
            min_installed: None,
            stage,
            attestation: AttestationPolicy::Off,
        }
    }

    fn offered(stage: Stage, n: u64) -> usize {
        (0..n)
            .filter(|&i| decide(&device(i), &release(stage)) == Decision::Offer)
            .count()
    }

    #[test]
    fn buckets_land_within_two_points_of_the_percentage() {
        for percent in [1u16, 5, 10, 25, 50, 75, 99] {
            let got = offered(
                Stage::Limited {
                    basis_points: percent * 100,
                },
                10_000,
            );
            let share = got as f64 / 100.0;
            assert!(
                (share - f64::from(percent)).abs() <= 2.0,
                "{percent}% set, {share}% offered"
            );
        }
    }

    #[test]
    fn raising_the_percentage_never_removes_a_device() {
        let mut before: Vec<bool> = vec![false; 2000];
        for basis_points in (0..=BUCKETS).step_by(250) {
            for (i, was) in before.iter_mut().enumerate() {
                let now = decide(&device(i as u64), &release(Stage::Limited { basis_points }))
                    == Decision::Offer;
                assert!(
                    !*was || now,
                    "device {i} lost its offer at {basis_points} bp"
                );
                *was = now;
            }
        }
        assert!(before.iter().all(|&b| b), "100% offers everyone");
    }

    #[test]
    fn stages_gate_offers() {
        assert_eq!(offered(Stage::Draft, 500), 0);
        assert_eq!(
            offered(
                Stage::Halted {
                    resume: crate::rollout::Active::Stable
                },
                500
            ),
            0
        );
        assert_eq!(offered(Stage::Revoked, 500), 0);
        assert_eq!(offered(Stage::Security, 500), 500);
        assert_eq!(offered(Stage::Stable, 500), 500);
        assert_eq!(offered(Stage::Validation, 500), 0);
        let mut cohort = device(1);
        cohort.validation_cohort = true;
        assert_eq!(
            decide(&cohort, &release(Stage::Validation)),
            Decision::Offer
        );
        assert_eq!(
            decide(
                &device(1),
                &release(Stage::Halted {
                    resume: crate::rollout::Active::Stable
                })
            ),
            Decision::NoOffer(Ineligible::Halted)
        );
    }

    #[test]
    fn device_facts_gate_offers() {
        let stable = release(Stage::Stable);
        let mut d = device(3);
        d.revoked = true;
        assert_eq!(decide(&d, &stable), Decision::NoOffer(Ineligible::Revoked));
        let mut d = device(3);
        d.model = "other".into();
        assert_eq!(decide(&d, &stable), Decision::NoOffer(Ineligible::Model));
        let mut d = device(3);
        d.channel = Channel("beta".into());
        assert_eq!(
            decide(&d, &stable),
            Decision::NoOffer(Ineligible::OtherChannel)
        );
        let mut d = device(3);
        d.installed = Some(ReleaseNumber(2));
        assert_eq!(decide(&d, &stable), Decision::NoOffer(Ineligible::NotNewer));
        let mut floor = release(Stage::Stable);
        floor.min_installed = Some(ReleaseNumber(5));
        assert_eq!(
            decide(&device(3), &floor),
            Decision::NoOffer(Ineligible::UpgradePath)
        );
        let mut attested = release(Stage::Security);
        attested.attestation = AttestationPolicy::Required;
        assert_eq!(
            decide(&device(3), &attested),
            Decision::NoOffer(Ineligible::AttestationRequired)
        );
        let mut d = device(3);
        d.attestation = Some(AttestationOutcome::Passed);
        assert_eq!(decide(&d, &attested), Decision::Offer);
    }

    fn director() -> (InMemoryKey, Root) {
        let key = InMemoryKey::ed25519_from_seed([42; 32]);
        let id = key.public().key_id();
        let role = RoleKeys {
            keyids: vec![id.clone()],
            threshold: 1,
            extra: BTreeMap::new(),
        };
        let root = Root {
            common: Common::new("root", 1, UnixTime(2_000_000_000)),
            consistent_snapshot: true,
            keys: BTreeMap::from([(id, key.public())]),
            roles: ["root", "timestamp", "snapshot", "targets"]
                .into_iter()
                .map(|r| (r.to_string(), role.clone()))
                .collect(),
            release_authority: None,
            extra: BTreeMap::new(),
        };
        (key, root)
    }

    fn offer() -> Offer {
        Offer {
            type_: "offer".into(),
            handle: handle(1),
            nonce: [7; 32],
            issued_at: UnixTime(1_000),
            expires: UnixTime(1_600),
            channel: Channel("stable".into()),
            release: ReleaseNumber(2),
            manifest: "releases/stable/2.json".into(),
            artifacts: vec![OfferedArtifact {
                target: "artifacts/system-2.img".into(),
                length: 10,
                sha256: Sha256Hash::of(b"x"),
                blake3: crate::digest::Blake3Hash::of(b"x"),
                slot: "system".into(),
            }],
            stage: Stage::Stable,
        }
    }

    fn expect<'a>(handle: &'a DeviceHandle, nonce: &'a [u8; 32]) -> OfferExpectation<'a> {
        OfferExpectation {
            handle,
            nonce,
            installed: Some(ReleaseNumber(1)),
            now: UnixTime(1_100),
        }
    }

    #[test]
    fn offers_verify_and_refuse() {
        let (key, root) = director();
        let bytes = offer().sign(&[&key]);
        let (h, n) = (handle(1), [7u8; 32]);
        assert_eq!(
            Offer::verify(&bytes, &root, expect(&h, &n)).unwrap(),
            offer()
        );

        let other = handle(2);
        assert_eq!(
            Offer::verify(&bytes, &root, expect(&other, &n)),
            Err(OfferError::OtherDevice { offered: h })
        );
        assert_eq!(
            Offer::verify(&bytes, &root, expect(&h, &[8; 32])),
            Err(OfferError::NonceMismatch)
        );
        let mut late = expect(&h, &n);
        late.now = UnixTime(1_600);
        assert_eq!(
            Offer::verify(&bytes, &root, late),
            Err(OfferError::Expired {
                expires: UnixTime(1_600),
                now: UnixTime(1_600)
            })
        );
        let mut newer = expect(&h, &n);
        newer.installed = Some(ReleaseNumber(2));
        assert_eq!(
            Offer::verify(&bytes, &root, newer),
            Err(OfferError::Rollback {
                offered: 2,
                installed: 2
            })
        );
        let forged = offer().sign(&[&InMemoryKey::ed25519_from_seed([1; 32])]);
        assert!(matches!(
            Offer::verify(&forged, &root, expect(&h, &n)),
            Err(OfferError::Metadata(
                crate::tuf::Error::ThresholdNotMet { .. }
            ))
        ));
    }
}
