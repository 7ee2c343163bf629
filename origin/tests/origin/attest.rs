//! Remote attestation: every attack on the evidence, each asserting its reason, and end to
//! end over QUIC against `ota-origin serve` with a channel that requires attestation.
//!
//! Evidence comes from `ota_device::attest::SoftwareProvider`: a CA made here issues a leaf
//! carrying the KeyDescription extension over the challenge, with the device properties each
//! test sets.

use std::path::Path;
use std::sync::Arc;

use ota_core::attest::{
    AttestError, AttestationChallenge, Evidence, Reason, Requirements, StatusList, TrustAnchors,
    Verifier,
};
use ota_core::attest::{SecurityLevel, VerifiedBootState};
use ota_core::director::{AttestationOutcome, AttestedCheckIn, CheckInAnswer, DeviceHandle};
use ota_core::time::UnixTime;
use ota_core::tuf::InMemoryKey;
use ota_device::attest::{
    DeviceProperties, EvidenceProvider, SoftwareCa, SoftwareProvider, check_in_with_evidence,
};
use ota_net::client::{Answer, Client};
use ota_net::proto::{ChannelBinding, DeviceKey, Nonce, SignedKind, SignedRequest, signing_bytes};
use ota_net::quic::{Identity, NodeKey};

use crate::e2e::{Device, ceremony, check_in_body, cosign, init, now, ok, serve};

const NONCE: [u8; 32] = [0x11; 32];
const EXPORTER: [u8; 32] = [0x22; 32];

fn handle(i: u8) -> DeviceHandle {
    DeviceHandle([i; 32])
}

pub(crate) fn ca(name: &str) -> Arc<SoftwareCa> {
    Arc::new(SoftwareCa::generate(name, 2000, 2100).unwrap())
}

pub(crate) fn provider(ca: &Arc<SoftwareCa>, at: UnixTime) -> SoftwareProvider {
    SoftwareProvider::new(
        ca.clone(),
        DeviceProperties {
            created_ms: (at.0 as u64) * 1000,
            ..DeviceProperties::default()
        },
    )
}

fn requirements() -> Requirements {
    Requirements {
        min_os_version: Some(140_000),
        min_patch_level: Some(202_501),
        models: vec!["enigm-one".into()],
        max_age_secs: 600,
        ..Requirements::default()
    }
}

/// Verify `evidence` as the director does for device `handle(1)`'s request with `NONCE` on
/// the connection `EXPORTER`, with `ca`'s root as the only anchor.
fn verify(
    ca: &SoftwareCa,
    status: &StatusList,
    evidence: &Evidence,
    at: UnixTime,
) -> Result<ota_core::attest::Attested, AttestError> {
    let anchors = TrustAnchors::from_der(&[&ca.root_der()]).unwrap();
    let requirements = requirements();
    Verifier {
        anchors: &anchors,
        status,
        requirements: &requirements,
    }
    .verify(
        evidence,
        &AttestationChallenge::bind(&NONCE, &handle(1), &EXPORTER),
        at,
    )
}

fn expected() -> AttestationChallenge {
    AttestationChallenge::bind(&NONCE, &handle(1), &EXPORTER)
}

/// Run `evidence` through the verifier and return the refusal.
fn refusal(ca: &SoftwareCa, evidence: &Evidence, at: UnixTime) -> AttestError {
    verify(ca, &StatusList::default(), evidence, at).unwrap_err()
}

#[test]
fn attested_evidence_passes() {
    let at = now();
    let ca = ca("fleet");
    let evidence = provider(&ca, at).evidence(&expected()).unwrap();
    let attested = verify(&ca, &StatusList::default(), &evidence, at).unwrap();
    assert_eq!(attested.security_level, SecurityLevel::TrustedEnvironment);
    assert_eq!(attested.boot_state, VerifiedBootState::Verified);
    assert!(attested.locked);
}

#[test]
fn attack_chain_to_an_unknown_root() {
    let at = now();
    let (fleet, rogue) = (ca("fleet"), ca("rogue"));
    let evidence = provider(&rogue, at).evidence(&expected()).unwrap();
    let err = refusal(&fleet, &evidence, at);
    assert_eq!(err, AttestError::UnknownRoot);
    assert_eq!(err.reason(), Reason::InvalidChain);
}

#[test]
fn attack_expired_intermediate() {
    let at = now();
    let old = Arc::new(SoftwareCa::generate("old", 2000, 2001).unwrap());
    let evidence = provider(&old, at).evidence(&expected()).unwrap();
    let err = refusal(&old, &evidence, at);
    assert!(
        matches!(err, AttestError::Expired { index: 1, .. }),
        "{err}"
    );
    assert_eq!(err.reason(), Reason::InvalidChain);
}

#[test]
fn attack_revoked_key() {
    let at = now();
    let ca = ca("fleet");
    let evidence = provider(&ca, at).evidence(&expected()).unwrap();
    let list = format!(
        r#"{{"entries":{{"{}":{{"status":"REVOKED","reason":"KEY_COMPROMISE"}}}}}}"#,
        ca.intermediate_serial_hex()
    );
    let status = StatusList::from_json(list.as_bytes()).unwrap();
    let err = verify(&ca, &status, &evidence, at).unwrap_err();
    assert_eq!(
        err,
        AttestError::Revoked {
            index: 1,
            serial: ca.intermediate_serial_hex()
        }
    );
    assert_eq!(err.reason(), Reason::InvalidChain);
    // A suspended leaf too.
    let mut leaf = provider(&ca, at);
    leaf.leaf_serial = 0x7777;
    let evidence = leaf.evidence(&expected()).unwrap();
    let status = StatusList::from_json(br#"{"entries":{"7777":{"status":"SUSPENDED"}}}"#).unwrap();
    let err = verify(&ca, &status, &evidence, at).unwrap_err();
    assert_eq!(err.reason(), Reason::InvalidChain);
    assert!(matches!(err, AttestError::Revoked { index: 0, .. }));
}

fn with(
    ca: &Arc<SoftwareCa>,
    at: UnixTime,
    change: impl FnOnce(&mut DeviceProperties),
) -> Evidence {
    let mut p = provider(ca, at);
    change(&mut p.properties);
    p.evidence(&expected()).unwrap()
}

#[test]
fn attack_software_only_where_hardware_is_required() {
    let (at, ca) = (now(), ca("fleet"));
    let evidence = with(&ca, at, |p| p.security_level = SecurityLevel::Software);
    let err = refusal(&ca, &evidence, at);
    assert_eq!(err, AttestError::SoftwareOnly { found: "SOFTWARE" });
    assert_eq!(err.reason(), Reason::UnsupportedDevice);
}

#[test]
fn attack_model_not_allowed() {
    let (at, ca) = (now(), ca("fleet"));
    let evidence = with(&ca, at, |p| p.model = Some("knockoff".into()));
    let err = refusal(&ca, &evidence, at);
    assert_eq!(err.reason(), Reason::UnsupportedDevice);
    let evidence = with(&ca, at, |p| p.model = None);
    assert_eq!(
        refusal(&ca, &evidence, at),
        AttestError::ModelNotAllowed { model: None }
    );
}

#[test]
fn attack_unlocked_device() {
    let (at, ca) = (now(), ca("fleet"));
    let evidence = with(&ca, at, |p| p.locked = false);
    let err = refusal(&ca, &evidence, at);
    assert_eq!(err, AttestError::Unlocked);
    assert_eq!(err.reason(), Reason::IneligibleBuild);
}

#[test]
fn attack_unverified_boot() {
    let (at, ca) = (now(), ca("fleet"));
    for state in [
        VerifiedBootState::Unverified,
        VerifiedBootState::SelfSigned,
        VerifiedBootState::Failed,
    ] {
        let evidence = with(&ca, at, |p| p.boot_state = state);
        let err = refusal(&ca, &evidence, at);
        assert_eq!(
            err,
            AttestError::BootNotVerified {
                found: state.name()
            }
        );
        assert_eq!(err.reason(), Reason::IneligibleBuild);
    }
}

#[test]
fn attack_old_patch_level_and_os_version() {
    let (at, ca) = (now(), ca("fleet"));
    let evidence = with(&ca, at, |p| p.os_patch_level = 202_412);
    let err = refusal(&ca, &evidence, at);
    assert_eq!(
        err,
        AttestError::PatchLevel {
            found: Some(202_412),
            floor: 202_501
        }
    );
    assert_eq!(err.reason(), Reason::IneligibleBuild);
    let evidence = with(&ca, at, |p| p.os_version = 130_000);
    assert_eq!(
        refusal(&ca, &evidence, at).reason(),
        Reason::IneligibleBuild
    );
}

#[test]
fn attack_replay_challenge_from_another_nonce() {
    let (at, ca) = (now(), ca("fleet"));
    // Evidence made for an earlier request's nonce, presented with this one.
    let earlier = AttestationChallenge::bind(&[0x99; 32], &handle(1), &EXPORTER);
    let evidence = provider(&ca, at).evidence(&earlier).unwrap();
    let err = refusal(&ca, &evidence, at);
    assert_eq!(err, AttestError::OtherNonce);
    assert_eq!(err.reason(), Reason::Replay);
    // A challenge not made by this protocol at all (e.g. upstream's "challenge").
    let evidence = provider(&ca, at).evidence_over(b"challenge").unwrap();
    assert_eq!(refusal(&ca, &evidence, at).reason(), Reason::Replay);
}

#[test]
fn attack_relay_other_handle_or_other_connection() {
    let (at, ca) = (now(), ca("fleet"));
    // Device X (handle 2) attested over the nonce device Y (handle 1) relayed to it: the
    // challenge names X, the request comes from Y.
    let for_x = AttestationChallenge::bind(&NONCE, &handle(2), &EXPORTER);
    let evidence = provider(&ca, at).evidence(&for_x).unwrap();
    let err = refusal(&ca, &evidence, at);
    assert_eq!(err, AttestError::OtherHandle);
    assert_eq!(err.reason(), Reason::Relay);
    // Made on X's connection, presented on Y's.
    let other_connection = AttestationChallenge::bind(&NONCE, &handle(1), &[0x33; 32]);
    let evidence = provider(&ca, at).evidence(&other_connection).unwrap();
    let err = refusal(&ca, &evidence, at);
    assert_eq!(err, AttestError::OtherConnection);
    assert_eq!(err.reason(), Reason::Relay);
}

#[test]
fn attack_stale_evidence() {
    let (at, ca) = (now(), ca("fleet"));
    let old = UnixTime(at.0 - 3600);
    let evidence = provider(&ca, old).evidence(&expected()).unwrap();
    let err = refusal(&ca, &evidence, at);
    assert!(
        matches!(
            err,
            AttestError::Stale {
                max_age_secs: 600,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.reason(), Reason::Stale);
    // A key "created" an hour in the future is refused the same way.
    let future = provider(&ca, UnixTime(at.0 + 3600))
        .evidence(&expected())
        .unwrap();
    assert_eq!(refusal(&ca, &future, at).reason(), Reason::Stale);
}

// --- end to end --------------------------------------------------------------------------

/// A stable release 1 on `channel`, signed by the ceremony's authorities.
fn publish(data: &Path, temp: &Path, channel: &str) {
    let data_s = data.to_str().unwrap();
    let image = temp.join(format!("{channel}.img"));
    std::fs::write(&image, vec![7u8; 300_000]).unwrap();
    let artifact = format!("system={}", image.display());
    ok(&[
        "release",
        "create",
        "--data",
        data_s,
        "--channel",
        channel,
        "--release",
        "1",
        "--version",
        "2026.11.1",
        "--model",
        "enigm-one",
        "--artifact",
        &artifact,
    ]);
    let requests = data.join("requests").join(channel).join("1");
    let (release, targets) = (temp.join("release.signed"), temp.join("targets.signed"));
    cosign(
        &requests.join("release.request.json"),
        "release",
        &InMemoryKey::ed25519_from_seed([3; 32]),
        &release,
    );
    cosign(
        &requests.join("targets.request.json"),
        "targets",
        &InMemoryKey::p256_from_scalar([2; 32]).unwrap(),
        &targets,
    );
    ok(&[
        "release",
        "register",
        "--data",
        data_s,
        "--channel",
        channel,
        "--release",
        "1",
        "--signed-release",
        release.to_str().unwrap(),
        "--signed-targets",
        targets.to_str().unwrap(),
    ]);
    let id = ["--data", data_s, "--channel", channel, "--release", "1"];
    ok(&[&["release", "validate"][..], &id].concat());
    ok(&[&["release", "promote"][..], &id, &["--stable"]].concat());
}

fn enroll(data: &Path, device: &Device, channel: &str) -> DeviceHandle {
    let handle = ok(&[
        "device",
        "enroll",
        "--data",
        data.to_str().unwrap(),
        "--public-key",
        &device.public_hex(),
        "--channel",
        channel,
        "--model",
        "enigm-one",
    ]);
    DeviceHandle(hex::decode(handle.trim()).unwrap().try_into().unwrap())
}

/// One check-in of `device` on a fresh connection; the body is made by `body` from the
/// nonce and the connection's binding.
async fn check_in(
    served: &crate::e2e::Served,
    device: &Device,
    body: impl FnOnce(&[u8; 32], &[u8; 32]) -> Vec<u8>,
) -> CheckInAnswer {
    let client = Client::connect(served.quic, served.pin).await.unwrap();
    let nonce = client.challenge().await.unwrap();
    let binding = client.channel_binding();
    let request = device.sign(
        &client,
        SignedKind::CheckIn,
        nonce,
        now(),
        body(&nonce.0, &binding.0),
    );
    let answer = match client.signed(SignedKind::CheckIn, request).await.unwrap() {
        Answer::Signed(body) => serde_json::from_slice(&body).unwrap(),
        Answer::Refused(refusal) => panic!("refused: {refusal}"),
    };
    client.close();
    answer
}

fn no_offer(answer: CheckInAnswer) -> String {
    match answer {
        CheckInAnswer::NoOffer { reason } => reason,
        CheckInAnswer::Offer(_) => panic!("offered"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_requiring_attestation_offers_only_to_attested_devices_over_quic() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("origin");
    let (_, root, director_root) = ceremony(&data, temp.path());
    init(&data, &root, &director_root);
    publish(&data, temp.path(), "private");
    publish(&data, temp.path(), "stable");

    // The policy: channel `private` requires attestation at check-in; `stable` does not.
    let fleet = ca("fleet");
    std::fs::create_dir_all(data.join("attestation")).unwrap();
    std::fs::write(data.join("attestation/roots.pem"), fleet.root_pem()).unwrap();
    let config_path = data.join("origin.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    config["attestation"] = serde_json::json!({
        "roots": "attestation/roots.pem",
        "channels": { "private": { "check_in": "required" } },
        "requirements": { "models": ["enigm-one"], "min_patch_level": 202501 }
    });
    std::fs::write(&config_path, serde_json::to_vec(&config).unwrap()).unwrap();

    let (attested, plain, relayer) = (Device::new(40), Device::new(41), Device::new(43));
    let attested_handle = enroll(&data, &attested, "private");
    let plain_handle = enroll(&data, &plain, "private");
    let relayer_handle = enroll(&data, &relayer, "private");
    let stable = Device::new(44);
    let stable_handle = enroll(&data, &stable, "stable");
    let served = serve(&data);
    let at = now();
    let hardware = provider(&fleet, at);

    // An attested device is offered the release.
    let answer = check_in(&served, &attested, |nonce, exporter| {
        let body =
            check_in_with_evidence(&hardware, None, nonce, &attested_handle, exporter).unwrap();
        serde_json::to_vec(&body).unwrap()
    })
    .await;
    assert!(matches!(answer, CheckInAnswer::Offer(_)), "{answer:?}");

    // An unattested device is refused, with the reason in its status.
    let reason = no_offer(check_in(&served, &plain, |_, _| check_in_body(None)).await);
    assert_eq!(
        reason,
        "channel requires a passed attestation: eligibility_failure"
    );

    // An unlocked device: ineligible build.
    let mut unlocked = provider(&fleet, at);
    unlocked.properties.locked = false;
    let reason = no_offer(
        check_in(&served, &plain, |nonce, exporter| {
            let body =
                check_in_with_evidence(&unlocked, None, nonce, &plain_handle, exporter).unwrap();
            serde_json::to_vec(&body).unwrap()
        })
        .await,
    );
    assert_eq!(
        reason,
        "channel requires a passed attestation: ineligible_build (bootloader unlocked)"
    );

    // Replay: evidence the attested device made for an earlier check-in, sent again.
    let mut earlier = None;
    let _ = check_in(&served, &attested, |nonce, exporter| {
        let body =
            check_in_with_evidence(&hardware, None, nonce, &attested_handle, exporter).unwrap();
        earlier = body.attestation.clone();
        serde_json::to_vec(&body).unwrap()
    })
    .await;
    let reason = no_offer(
        check_in(&served, &attested, |_, _| {
            serde_json::to_vec(&AttestedCheckIn {
                installed: None,
                attestation: earlier,
            })
            .unwrap()
        })
        .await,
    );
    assert_eq!(
        reason,
        "channel requires a passed attestation: replay (attestation challenge answers another nonce)"
    );

    // Relay: the relayer gets a nonce on its connection, has the attested device's hardware
    // attest it (bound to the attested device's handle, as that device's software does), and
    // presents the evidence as its own.
    let reason = no_offer(
        check_in(&served, &relayer, |nonce, exporter| {
            let body =
                check_in_with_evidence(&hardware, None, nonce, &attested_handle, exporter).unwrap();
            serde_json::to_vec(&body).unwrap()
        })
        .await,
    );
    assert_eq!(
        reason,
        "channel requires a passed attestation: relay (attestation challenge names another device)"
    );
    // Relay on another connection: evidence made on another connection (the attested
    // device's own) with the relayer's handle, presented on the relayer's.
    let thief_conn = Client::connect(served.quic, served.pin).await.unwrap();
    let thief_exporter = thief_conn.channel_binding().0;
    let reason = no_offer(
        check_in(&served, &relayer, |nonce, _| {
            let body =
                check_in_with_evidence(&hardware, None, nonce, &relayer_handle, &thief_exporter)
                    .unwrap();
            serde_json::to_vec(&body).unwrap()
        })
        .await,
    );
    assert_eq!(
        reason,
        "channel requires a passed attestation: relay (attestation challenge was made on another connection)"
    );
    thief_conn.close();

    // A channel without the policy still offers without evidence.
    let answer = check_in(&served, &stable, |_, _| check_in_body(None)).await;
    assert!(matches!(answer, CheckInAnswer::Offer(_)), "{answer:?}");

    // Through a site peer: the evidence is bound to the device's connection to the peer (the
    // binding its request is signed over), not to the peer's connection to the origin.
    let peer_key = NodeKey::from_seed([50; 32]);
    let peer_hex = hex::encode(Identity::from_node_key(&peer_key).unwrap().public_key());
    ok(&[
        "peer",
        "enroll",
        "--data",
        data.to_str().unwrap(),
        "--public-key",
        &peer_hex,
    ]);
    let upstream = Client::connect(served.quic, served.pin).await.unwrap();
    let device_binding = [0x44; 32];
    for (bound_to, expect_offer) in [
        (device_binding, true),
        (upstream.channel_binding().0, false),
    ] {
        let nonce = upstream.challenge().await.unwrap();
        let body =
            check_in_with_evidence(&hardware, None, &nonce.0, &attested_handle, &bound_to).unwrap();
        let request = sign_over(
            40,
            nonce,
            &ChannelBinding(device_binding),
            serde_json::to_vec(&body).unwrap(),
        );
        let answer = match upstream
            .relayed(
                &peer_key,
                SignedKind::CheckIn,
                ChannelBinding(device_binding),
                request,
            )
            .await
            .unwrap()
        {
            Answer::Signed(body) => serde_json::from_slice::<CheckInAnswer>(&body).unwrap(),
            Answer::Refused(refusal) => panic!("relayed check-in refused: {refusal}"),
        };
        if expect_offer {
            assert!(matches!(answer, CheckInAnswer::Offer(_)), "{answer:?}");
        } else {
            assert_eq!(
                no_offer(answer),
                "channel requires a passed attestation: relay (attestation challenge was made on another connection)"
            );
        }
    }
    upstream.close();
    drop(served);

    // Enrollment required: no offer on any channel until an attestation passed; then a pass
    // on record counts for check-ins that carry none (on channels that do not ask for more).
    config["attestation"]["enrollment"] = "required".into();
    std::fs::write(&config_path, serde_json::to_vec(&config).unwrap()).unwrap();
    let served = serve(&data);
    let reason = no_offer(check_in(&served, &stable, |_, _| check_in_body(None)).await);
    assert_eq!(
        reason,
        "enrollment requires a passed attestation: eligibility_failure"
    );
    let answer = check_in(&served, &stable, |nonce, exporter| {
        let body =
            check_in_with_evidence(&hardware, None, nonce, &stable_handle, exporter).unwrap();
        serde_json::to_vec(&body).unwrap()
    })
    .await;
    assert!(matches!(answer, CheckInAnswer::Offer(_)), "{answer:?}");
    let answer = check_in(&served, &stable, |_, _| check_in_body(None)).await;
    assert!(matches!(answer, CheckInAnswer::Offer(_)), "{answer:?}");
    // Fresh evidence that fails overrides the pass on record.
    let reason = no_offer(
        check_in(&served, &stable, |nonce, exporter| {
            let body =
                check_in_with_evidence(&unlocked, None, nonce, &stable_handle, exporter).unwrap();
            serde_json::to_vec(&body).unwrap()
        })
        .await,
    );
    assert_eq!(
        reason,
        "enrollment requires a passed attestation: ineligible_build (bootloader unlocked)"
    );
    drop(served);

    // The origin stored outcomes, reasons and times, never the chain.
    let origin = ota_origin::service::Origin::open(&data).await.unwrap();
    let record = origin
        .catalog
        .device(&attested_handle)
        .await
        .unwrap()
        .unwrap();
    // Its latest attestation: the relayed check-in bound to the wrong connection.
    let attestation = record.attestation.unwrap();
    assert_eq!(attestation.outcome, AttestationOutcome::Failed);
    assert_eq!(attestation.reasons, vec!["relay".to_string()]);
    let record = origin
        .catalog
        .device(&relayer_handle)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        record.attestation.unwrap().reasons,
        vec!["relay".to_string()]
    );
    drop(origin);
    // No certificate anywhere in the catalog: the subject name every leaf carries is absent.
    let marker = b"Android Keystore Key";
    for file in ["catalog.sqlite", "catalog.sqlite-wal"] {
        let bytes = std::fs::read(data.join(file)).unwrap_or_default();
        assert!(
            !bytes.windows(marker.len()).any(|w| w == marker),
            "{file} holds a certificate"
        );
    }
}

/// A check-in signed by the device `Device::new(seed)` over `binding` (as a device signs for
/// the connection to the peer it talks to).
pub(crate) fn sign_over(
    seed: u8,
    nonce: Nonce,
    binding: &ChannelBinding,
    body: Vec<u8>,
) -> SignedRequest {
    use ed25519_dalek::Signer as _;
    let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let device_key = DeviceKey(key.verifying_key().to_bytes());
    let timestamp = now();
    let message = signing_bytes(
        SignedKind::CheckIn,
        &device_key,
        &nonce,
        timestamp,
        binding,
        &body,
    );
    SignedRequest {
        device_key,
        nonce,
        timestamp,
        body,
        signature: ota_net::proto::Signature(key.sign(&message).to_bytes()),
    }
}
