//! The director on the wire (DESIGN.md §2 layers 2 and 5): verifies signed requests and
//! answers check-ins with director-signed offers, records install reports and runs the health
//! gate.
//!
//! Request verification, in order (each refusal names its reason): the device's signature over
//! the request kind, nonce, timestamp, **this connection's** TLS exporter value and body; the
//! timestamp within the window; the device enrolled and not revoked (its handle is the keyed
//! hash of the key that signed); the nonce issued on this connection, unexpired and unused
//! (consumed atomically, so a replay loses).
//!
//! A request relayed by a site peer ([`verify_relayed`]) is checked the same way, with two
//! differences: first the relay itself (enrolled, not revoked, its signature over this
//! connection's binding), then the device's signature over the device↔peer binding the relay
//! names, and the nonce issued on the relay's connection to the origin.

use ota_core::attest::{Action, AttestError};
use ota_core::director::{
    AttestationOutcome, AttestationPolicy, AttestedCheckIn, CheckInAnswer, Decision, DeviceHandle,
    Ineligible, InstallReport, MAX_ATTESTED_BODY_LEN, MAX_BODY_LEN, Offer, OfferedArtifact,
    ReleaseFacts, decide,
};
use ota_core::time::UnixTime;
use ota_net::proto::{
    ChannelBinding, Refusal, RelayKey, Relayed, RelayedVia, SignedKind, SignedRequest,
};
use ota_net::server::ConnInfo;

use crate::lifecycle;
use crate::metrics::Metrics;
use crate::nonce::NonceRefusal;
use crate::service::Origin;
use crate::store::{DeviceRecord, DeviceState, Report, ReportOutcome};

/// Why a signed request was refused. The text is what the device sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestRefusal {
    /// The signature does not verify over this connection's binding (tampered body, relayed
    /// from another connection, or not the key it names).
    #[error("bad signature")]
    BadSignature,
    /// The timestamp is outside the window.
    #[error("timestamp {timestamp} outside the window around {now}")]
    StaleTimestamp {
        /// The request's timestamp.
        timestamp: UnixTime,
        /// The origin's time.
        now: UnixTime,
    },
    /// No such device is enrolled.
    #[error("unknown device")]
    UnknownDevice,
    /// The device's enrollment was revoked.
    #[error("revoked device")]
    RevokedDevice,
    /// The nonce was never issued (or expired long ago).
    #[error("unknown nonce")]
    UnknownNonce,
    /// The nonce was used already: a replay.
    #[error("nonce already used")]
    NonceReused,
    /// The nonce expired.
    #[error("nonce expired")]
    NonceExpired,
    /// The nonce was issued on another connection.
    #[error("nonce issued on another connection")]
    OtherConnection,
    /// A relayed request from a relay key that is not enrolled.
    #[error("relay not enrolled")]
    UnknownRelay,
    /// A relayed request from a relay whose enrollment was revoked.
    #[error("revoked relay")]
    RevokedRelay,
    /// The relay's signature does not verify over this connection's binding (made for
    /// another connection, tampered, or not the key it names).
    #[error("bad relay signature")]
    BadRelaySignature,
    /// The body does not parse.
    #[error("malformed body: {0}")]
    Malformed(String),
    /// Not offered on the wire.
    #[error("{0}")]
    NotSupported(&'static str),
    /// The origin failed; the device may retry.
    #[error("origin unavailable")]
    Unavailable,
}

impl RequestRefusal {
    /// The refusal on the wire.
    pub fn to_wire(&self) -> Refusal {
        let code = match self {
            Self::Malformed(_) => Refusal::BAD_REQUEST,
            Self::NotSupported(_) => Refusal::NOT_SUPPORTED,
            Self::Unavailable => Refusal::UNAVAILABLE,
            _ => Refusal::FORBIDDEN,
        };
        Refusal::new(code, self.to_string())
    }
}

/// Verify a signed request on connection `conn`; returns the enrolled device.
pub async fn verify_request(
    origin: &Origin,
    conn: &ConnInfo,
    kind: SignedKind,
    request: &SignedRequest,
    now: UnixTime,
) -> Result<DeviceRecord, RequestRefusal> {
    verify_bound(origin, &conn.binding, &conn.binding, kind, request, now).await
}

/// Verify a device's request relayed by a site peer on connection `conn` (see
/// [`ota_net::proto::Relayed`]); returns the enrolled device.
///
/// In order: the relay's key is enrolled and not revoked; the relay's signature covers this
/// connection's binding (so the message was made for this connection, by the holder of the
/// relay's key); then every check of a direct request, with the device's signature over the
/// device↔relay binding the relay vouches for, and the nonce issued on **this** (the
/// relay's) connection.
pub async fn verify_relayed(
    origin: &Origin,
    conn: &ConnInfo,
    relayed: &Relayed,
    now: UnixTime,
) -> Result<DeviceRecord, RequestRefusal> {
    check_relay(
        origin,
        &relayed.relay_key,
        &relayed.relay_signature,
        &relayed.signing_bytes(&conn.binding),
    )
    .await?;
    verify_bound(
        origin,
        &relayed.device_binding,
        &conn.binding,
        relayed.kind,
        &relayed.request,
        now,
    )
    .await
}

/// Verify a device's request relayed through several relays on connection `conn` (see
/// [`ota_net::proto::RelayedVia`]: a site peer, then a regional peer that sends it here);
/// returns the enrolled device.
///
/// In order: the sender is enrolled, not revoked, and its signature covers this connection's
/// binding and the hops it names; then each hop, nearest the device first: enrolled, not
/// revoked, its signature over the binding of the connection it sent on (which the next
/// relay, enrolled, vouches for); then every check of a direct request, with the device's
/// signature over the device↔first-relay binding, and the nonce issued on **this** (the
/// sender's) connection. A relay named twice is refused (a loop).
pub async fn verify_relayed_via(
    origin: &Origin,
    conn: &ConnInfo,
    message: &RelayedVia,
    now: UnixTime,
) -> Result<DeviceRecord, RequestRefusal> {
    let relayed = &message.relayed;
    check_relay(
        origin,
        &relayed.relay_key,
        &relayed.relay_signature,
        &message.signing_bytes(&conn.binding),
    )
    .await?;
    let mut seen = std::collections::HashSet::from([relayed.relay_key]);
    for (i, hop) in message.via.iter().enumerate() {
        if !seen.insert(hop.relay_key) {
            return Err(RequestRefusal::BadRelaySignature);
        }
        let bytes = message
            .hop_signing_bytes(i)
            .ok_or(RequestRefusal::BadRelaySignature)?;
        check_relay(origin, &hop.relay_key, &hop.relay_signature, &bytes).await?;
    }
    verify_bound(
        origin,
        &relayed.device_binding,
        &conn.binding,
        relayed.kind,
        &relayed.request,
        now,
    )
    .await
}

/// A relay's key is enrolled, not revoked, and its signature over `message` verifies.
async fn check_relay(
    origin: &Origin,
    relay_key: &RelayKey,
    signature: &ota_net::proto::Signature,
    message: &[u8],
) -> Result<(), RequestRefusal> {
    let relay = origin
        .catalog
        .relay(&relay_key.0)
        .await
        .map_err(|e| unavailable(&e))?
        .ok_or(RequestRefusal::UnknownRelay)?;
    if relay.revoked_at.is_some() {
        return Err(RequestRefusal::RevokedRelay);
    }
    let key = ed25519_dalek::VerifyingKey::from_bytes(&relay_key.0)
        .map_err(|_| RequestRefusal::BadRelaySignature)?;
    let signature = ed25519_dalek::Signature::from_bytes(&signature.0);
    if key.is_weak() || key.verify_strict(message, &signature).is_err() {
        return Err(RequestRefusal::BadRelaySignature);
    }
    Ok(())
}

/// The checks of a signed request whose signature covers `signed_binding` and whose nonce
/// was issued on the connection with binding `nonce_binding` (the same, for a direct request).
async fn verify_bound(
    origin: &Origin,
    signed_binding: &ChannelBinding,
    nonce_binding: &ChannelBinding,
    kind: SignedKind,
    request: &SignedRequest,
    now: UnixTime,
) -> Result<DeviceRecord, RequestRefusal> {
    let key = ed25519_dalek::VerifyingKey::from_bytes(&request.device_key.0)
        .map_err(|_| RequestRefusal::BadSignature)?;
    let signature = ed25519_dalek::Signature::from_bytes(&request.signature.0);
    let message = request.signing_bytes(kind, signed_binding);
    if key.is_weak() || key.verify_strict(&message, &signature).is_err() {
        return Err(RequestRefusal::BadSignature);
    }
    let window = origin.dir.config.request_window_secs;
    if (request.timestamp.0 - now.0).abs() > window {
        return Err(RequestRefusal::StaleTimestamp {
            timestamp: request.timestamp,
            now,
        });
    }
    let handle = DeviceHandle::derive(&origin.keys.handle, &request.device_key.0);
    // With an attestation policy, the attestation on record decides offers: read it afresh.
    let device = if origin.attestation.is_some() {
        origin.catalog.device(&handle).await
    } else {
        origin.cache.device(&origin.catalog, &handle).await
    }
    .map_err(|e| unavailable(&e))?
    .ok_or(RequestRefusal::UnknownDevice)?;
    if device.public_key != request.device_key.0 {
        return Err(RequestRefusal::UnknownDevice);
    }
    if device.revoked_at.is_some() {
        return Err(RequestRefusal::RevokedDevice);
    }
    let minted = origin
        .keys
        .nonce
        .open(
            &request.nonce.0,
            &nonce_binding.0,
            origin.cache.nonce_time(now),
        )
        .map_err(|refusal| match refusal {
            NonceRefusal::Unknown => RequestRefusal::UnknownNonce,
            NonceRefusal::Expired => RequestRefusal::NonceExpired,
            NonceRefusal::OtherConnection => RequestRefusal::OtherConnection,
        })?;
    // The one catalog statement of the request: the nonce's use, the device's revocation and
    // the release generation, read together.
    let used = origin
        .catalog
        .use_nonce(
            &request.nonce.0,
            &nonce_binding.0,
            minted.issued_at,
            minted.expires_at,
            &handle,
        )
        .await
        .map_err(|e| unavailable(&e))?
        .ok_or(RequestRefusal::NonceReused)?;
    origin.cache.purge_nonces(&origin.catalog, now);
    origin.cache.saw_generation(used.generation);
    match used.device {
        DeviceState::Enrolled => Ok(device),
        DeviceState::Revoked => {
            origin.cache.revoked(&handle, now);
            Err(RequestRefusal::RevokedDevice)
        }
        DeviceState::Unknown => Err(RequestRefusal::UnknownDevice),
    }
}

fn unavailable(error: &dyn std::fmt::Display) -> RequestRefusal {
    tracing::error!(target: "origin.director", %error, "catalog failed");
    RequestRefusal::Unavailable
}

/// A check-in's answer, with what the private-content gate (`crate::access`) needs.
#[derive(Debug)]
pub struct CheckedIn {
    /// The answer the device gets.
    pub answer: CheckInAnswer,
    /// The release offered and when the offer expires (`None`: no offer).
    pub offered: Option<(
        ota_core::tuf::enigm::Channel,
        ota_core::tuf::enigm::ReleaseNumber,
        UnixTime,
    )>,
    /// This check-in's attestation outcome (`None`: no evidence, or no policy).
    pub attestation: Option<AttestationOutcome>,
}

/// Answer a verified check-in.
///
/// `binding` is the channel binding the request's signature covers (this connection's, or
/// for a relayed request the device↔relay one): attestation evidence in the body must attest
/// the challenge bound to it, the nonce and the device's handle.
pub async fn check_in(
    origin: &Origin,
    device: &DeviceRecord,
    nonce: [u8; 32],
    binding: &ChannelBinding,
    body: &[u8],
    now: UnixTime,
) -> Result<CheckedIn, RequestRefusal> {
    if body.len() > MAX_ATTESTED_BODY_LEN {
        return Err(RequestRefusal::Malformed(format!(
            "body of {} bytes over the {MAX_ATTESTED_BODY_LEN}-byte cap",
            body.len()
        )));
    }
    let check_in: AttestedCheckIn =
        serde_json::from_slice(body).map_err(|e| RequestRefusal::Malformed(e.to_string()))?;
    let attestation = attest(
        origin,
        device,
        &nonce,
        binding,
        check_in.attestation.as_ref(),
        now,
    )
    .await?;
    if device.installed != check_in.installed {
        origin
            .catalog
            .set_installed(&device.handle, check_in.installed)
            .await
            .map_err(|e| unavailable(&e))?;
        origin.cache.installed(&device.handle, check_in.installed);
    }
    let mut facts = device.facts();
    facts.installed = check_in.installed;
    // A channel's policy judges this check-in's evidence only (fresh, bound to this request).
    facts.attestation = attestation.as_ref().map(|r| match r {
        Ok(_) => AttestationOutcome::Passed,
        Err(_) => AttestationOutcome::Failed,
    });
    let refused_reason = attestation_reason(attestation.as_ref());
    let no_offer = |answer| CheckedIn {
        answer,
        offered: None,
        attestation: facts.attestation,
    };
    if let Some(policy) = &origin.attestation {
        // Enrollment: no offer on any channel until a passed attestation is on record.
        let on_record = device
            .attestation
            .as_ref()
            .is_some_and(|a| a.outcome == AttestationOutcome::Passed);
        match ota_core::attest::enrollment_gate(
            policy.mode(Action::Enrollment, &device.channel),
            attestation.as_ref(),
            on_record,
        ) {
            ota_core::attest::Gate::Refuse(reason) => {
                return Ok(no_offer(CheckInAnswer::NoOffer {
                    reason: format!(
                        "enrollment requires a passed attestation: {reason}{}",
                        refused_reason.as_deref().unwrap_or("")
                    ),
                }));
            }
            ota_core::attest::Gate::PassCounted(_) => {
                Metrics::inc(&origin.metrics.attestations_preferred_missed);
            }
            ota_core::attest::Gate::Pass => {}
        }
        if let ota_core::attest::Gate::PassCounted(_) = ota_core::attest::gate(
            policy.mode(Action::CheckIn, &device.channel),
            attestation.as_ref(),
        ) {
            Metrics::inc(&origin.metrics.attestations_preferred_missed);
        }
    }
    let channel_policy = origin
        .attestation
        .as_ref()
        .map_or(AttestationPolicy::Off, |a| {
            a.mode(Action::CheckIn, &device.channel)
        });
    // Newest first (the newest release the device may have wins), as recent as the release
    // generation this request's nonce statement read.
    let releases = origin
        .cache
        .releases(&origin.catalog, &device.channel)
        .await
        .map_err(|e| unavailable(&e))?;
    let mut first_reason = None;
    for release in releases.iter() {
        let release_facts = ReleaseFacts {
            channel: release.channel.clone(),
            number: release.number,
            models: release.models.clone(),
            min_installed: release.min_installed,
            stage: release.stage,
            attestation: channel_policy,
        };
        match decide(&facts, &release_facts) {
            Decision::Offer => {
                let offer = make_offer(origin, device, release, nonce, now).await?;
                Metrics::inc(&origin.metrics.offers);
                return Ok(CheckedIn {
                    answer: CheckInAnswer::Offer(offer),
                    offered: Some((
                        release.channel.clone(),
                        release.number,
                        now.plus_secs(origin.dir.config.offer_expiry_secs),
                    )),
                    attestation: facts.attestation,
                });
            }
            Decision::NoOffer(reason) => {
                first_reason.get_or_insert(reason);
            }
        }
    }
    Ok(no_offer(CheckInAnswer::NoOffer {
        reason: match first_reason {
            None => "no release on this channel".to_string(),
            Some(r @ Ineligible::AttestationRequired) => {
                let class = match &attestation {
                    Some(Err(e)) => e.reason(),
                    _ => ota_core::attest::Reason::EligibilityFailure,
                };
                format!("{r}: {class}{}", refused_reason.as_deref().unwrap_or(""))
            }
            Some(r) => r.to_string(),
        },
    }))
}

/// Verify the evidence a check-in carries (when the origin has an attestation policy) and
/// record the outcome: the verdict, the reason's name and the time, never the chain.
async fn attest(
    origin: &Origin,
    device: &DeviceRecord,
    nonce: &[u8; 32],
    binding: &ChannelBinding,
    evidence: Option<&ota_core::attest::Evidence>,
    now: UnixTime,
) -> Result<Option<Result<ota_core::attest::Attested, AttestError>>, RequestRefusal> {
    let (Some(policy), Some(evidence)) = (&origin.attestation, evidence) else {
        return Ok(None);
    };
    let result = policy.verify(evidence, nonce, &device.handle, &binding.0, now);
    let (outcome, reasons) = match &result {
        Ok(_) => {
            Metrics::inc(&origin.metrics.attestations_passed);
            (AttestationOutcome::Passed, Vec::new())
        }
        Err(error) => {
            Metrics::inc(&origin.metrics.attestations_failed);
            (
                AttestationOutcome::Failed,
                vec![error.reason().name().to_string()],
            )
        }
    };
    // The handle and the reason class only: details may name hardware (serials, models).
    tracing::info!(
        target: "origin.director",
        handle = %device.handle,
        outcome = ?outcome,
        reason = result.as_ref().err().map(|e| e.reason().name()),
        "attestation"
    );
    origin
        .catalog
        .record_attestation(&device.handle, outcome, &reasons, now)
        .await
        .map_err(|e| unavailable(&e))?;
    Ok(Some(result))
}

/// The device-facing detail of a refused attestation, e.g. " (attestation challenge names
/// another device)".
fn attestation_reason(
    result: Option<&Result<ota_core::attest::Attested, AttestError>>,
) -> Option<String> {
    match result {
        Some(Err(e)) => Some(format!(" ({e})")),
        _ => None,
    }
}

async fn make_offer(
    origin: &Origin,
    device: &DeviceRecord,
    release: &crate::store::ReleaseRecord,
    nonce: [u8; 32],
    now: UnixTime,
) -> Result<serde_json::Value, RequestRefusal> {
    let artifacts = origin
        .catalog
        .artifacts(&release.channel, release.number)
        .await
        .map_err(|e| unavailable(&e))?;
    let offer = Offer {
        type_: "offer".into(),
        handle: device.handle,
        nonce,
        issued_at: now,
        expires: now.plus_secs(origin.dir.config.offer_expiry_secs),
        channel: release.channel.clone(),
        release: release.number,
        manifest: release.manifest_target.clone(),
        artifacts: artifacts
            .into_iter()
            .map(|a| OfferedArtifact {
                target: a.target,
                length: a.length,
                sha256: a.sha256,
                blake3: a.blake3,
                slot: a.slot,
            })
            .collect(),
        stage: release.stage,
    };
    // What `OnlineKey::sign_document` signs and returns, built as the JSON value the answer
    // carries (without printing it and parsing it back).
    let signed = serde_json::to_value(&offer).map_err(|e| unavailable(&e))?;
    let canonical = ota_core::tuf::canonical::to_canonical(&signed).map_err(|e| unavailable(&e))?;
    let director = &origin.keys.director;
    let signature = ota_core::tuf::metadata::Signature {
        keyid: origin
            .cache
            .director_key_id(|| director.public().key_id())
            .clone(),
        sig: hex::encode(director.sign(&canonical).map_err(|e| unavailable(&e))?),
    };
    Ok(serde_json::json!({ "signatures": [signature], "signed": signed }))
}

/// Record a verified install report and run the health gate of its release.
pub async fn report(
    origin: &Origin,
    device: &DeviceRecord,
    body: &[u8],
    now: UnixTime,
) -> Result<(), RequestRefusal> {
    let report: InstallReport = parse_body(body)?;
    origin
        .catalog
        .record_report(&Report {
            channel: report.channel.clone(),
            number: report.release,
            handle: device.handle,
            outcome: if report.success {
                ReportOutcome::Success
            } else {
                ReportOutcome::Failure
            },
            error_class: report.error_class.clone(),
            at: now,
        })
        .await
        .map_err(|e| RequestRefusal::Malformed(e.to_string()))?;
    Metrics::inc(&origin.metrics.reports);
    if report.success {
        origin
            .catalog
            .set_installed(&device.handle, Some(report.release))
            .await
            .map_err(|e| unavailable(&e))?;
        origin.cache.installed(&device.handle, Some(report.release));
    }
    match lifecycle::health_gate(origin, &report.channel, report.release, now).await {
        Ok((_, true)) => Metrics::inc(&origin.metrics.health_halts),
        Ok(_) => {}
        Err(error) => tracing::warn!(target: "origin.director", %error, "health gate failed"),
    }
    Ok(())
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, RequestRefusal> {
    if body.len() > MAX_BODY_LEN {
        return Err(RequestRefusal::Malformed(format!(
            "body of {} bytes over the {MAX_BODY_LEN}-byte cap",
            body.len()
        )));
    }
    serde_json::from_slice(body).map_err(|e| RequestRefusal::Malformed(e.to_string()))
}
