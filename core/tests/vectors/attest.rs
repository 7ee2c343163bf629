//! Android Key Attestation vectors (`testdata/android-key-attestation/`, copied from the
//! upstream verifier's test data; its README pins the expected results and dates).
//!
//! Each real chain is verified at the `creationDateTime` of its JSON against `roots.json`, and
//! its decoded leaf is compared with the JSON. Decisions taken on purpose (see
//! `docs/ATTESTATION.md`): the Sony chain is refused (its intermediate that signs the leaf is
//! not a CA); the `01 01 01` deviceLocked BOOLEAN is refused (strict DER), never read as false.

use std::path::{Path, PathBuf};

use data_encoding::BASE64;
use ota_core::attest::{
    AttestError, AttestationChallenge, KeyDescription, KeyDescriptionError, Reason, Requirements,
    SecurityLevel, StatusList, TrustAnchors, VerifiedBootState, judge, key_description,
    leaf_key_description, pem_certificates, verify_chain,
};
use ota_core::director::DeviceHandle;
use ota_core::time::UnixTime;
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/android-key-attestation")
}

fn roots() -> TrustAnchors {
    TrustAnchors::from_pem_or_json(&std::fs::read(dir().join("roots.json")).unwrap()).unwrap()
}

fn chain(name: &str) -> Vec<Vec<u8>> {
    pem_certificates(
        &std::fs::read(dir().join("testdata").join(format!("{name}.pem"))).unwrap(),
        64,
    )
    .unwrap()
}

fn expected(name: &str) -> Value {
    let text =
        std::fs::read_to_string(dir().join("testdata").join(format!("{name}.json"))).unwrap();
    let stripped: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    serde_json::from_str(&stripped).unwrap()
}

fn creation_time(json: &Value) -> UnixTime {
    let ms = json["softwareEnforced"]["creationDateTime"]
        .as_str()
        .or(json["hardwareEnforced"]["creationDateTime"].as_str())
        .unwrap();
    UnixTime(ms.parse::<i64>().unwrap() / 1000)
}

fn ymd(y: i32, m: u32, d: u32) -> UnixTime {
    // Days from civil (Howard Hinnant's algorithm), for pinning dates without a time crate.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy as i32;
    UnixTime(i64::from(era * 146_097 + doe - 719_468) * 86_400)
}

const VALID: &[&str] = &[
    "akita/sdk34/SB_RSA_NONE",
    "akita/sdk34/TEE_EC_NONE",
    "akita/sdk34/TEE_RSA_BASE+IMEI",
    "akita/sdk34/TEE_RSA_NONE",
    "akita/sdk34/TEE_RSA_NONE_USERAUTH",
    "blueline/sdk28/SB_RSA_NONE",
    "blueline/sdk28/SB_RSA_NONE_USERAUTH",
    "blueline/sdk28/TEE_EC_NONE",
    "blueline/sdk28/TEE_RSA_BASE+IMEI",
    "blueline/sdk28/TEE_RSA_NONE",
    "caiman/sdk36/SB_EC_RKP",
    "caiman/sdk36/TEE_EC_RKP",
    "tegu/sdk36/SB_EC_2026_ROOT",
    "tegu/sdk36/TEE_EC_2026_ROOT",
    "tegu/sdk37/TEE_MAX_USAGE_COUNT",
    "tegu/sdk37/TEE_TRUSTED_CONF",
    "tokay/sdk37/TEE_MLDSA_FACTORY",
    "tokay/sdk37/TEE_MLDSA_RKP",
];

fn b64(v: &Value) -> Vec<u8> {
    BASE64.decode(v.as_str().unwrap_or("").as_bytes()).unwrap()
}

fn num(v: &Value) -> Option<u64> {
    v.as_str().map(|s| s.parse().unwrap())
}

fn text(v: &Value) -> Option<Vec<u8>> {
    v.as_str().map(|s| s.as_bytes().to_vec())
}

fn level(name: &str) -> SecurityLevel {
    match name {
        "SOFTWARE" => SecurityLevel::Software,
        "TRUSTED_ENVIRONMENT" => SecurityLevel::TrustedEnvironment,
        "STRONG_BOX" => SecurityLevel::StrongBox,
        other => panic!("level {other}"),
    }
}

/// Compare every field the decoder keeps with upstream's JSON.
fn assert_matches_json(name: &str, d: &KeyDescription, json: &Value) {
    assert_eq!(
        d.attestation_version.to_string(),
        json["attestationVersion"].as_str().unwrap(),
        "{name}"
    );
    assert_eq!(
        d.keymint_version.to_string(),
        json["keyMintVersion"].as_str().unwrap(),
        "{name}"
    );
    assert_eq!(
        d.attestation_security_level,
        level(json["attestationSecurityLevel"].as_str().unwrap()),
        "{name}"
    );
    assert_eq!(
        d.keymint_security_level,
        level(json["keyMintSecurityLevel"].as_str().unwrap()),
        "{name}"
    );
    assert_eq!(
        d.attestation_challenge,
        b64(&json["attestationChallenge"]),
        "{name}"
    );
    assert_eq!(d.unique_id, b64(&json["uniqueId"]), "{name}");
    for (list, j) in [
        (&d.software_enforced, &json["softwareEnforced"]),
        (&d.hardware_enforced, &json["hardwareEnforced"]),
    ] {
        assert_eq!(list.os_version, num(&j["osVersion"]), "{name} osVersion");
        assert_eq!(list.os_patch_level, num(&j["osPatchLevel"]), "{name}");
        assert_eq!(
            list.vendor_patch_level,
            num(&j["vendorPatchLevel"]),
            "{name}"
        );
        assert_eq!(list.boot_patch_level, num(&j["bootPatchLevel"]), "{name}");
        assert_eq!(
            list.creation_date_time,
            num(&j["creationDateTime"]),
            "{name}"
        );
        assert_eq!(list.id_brand, text(&j["attestationIdBrand"]), "{name}");
        assert_eq!(list.id_device, text(&j["attestationIdDevice"]), "{name}");
        assert_eq!(list.id_product, text(&j["attestationIdProduct"]), "{name}");
        assert_eq!(
            list.id_manufacturer,
            text(&j["attestationIdManufacturer"]),
            "{name}"
        );
        assert_eq!(list.id_model, text(&j["attestationIdModel"]), "{name}");
        let rot = &j["rootOfTrust"];
        match &list.root_of_trust {
            None => assert!(rot.is_null(), "{name}: rootOfTrust missing"),
            Some(r) => {
                assert_eq!(r.verified_boot_key, b64(&rot["verifiedBootKey"]), "{name}");
                assert_eq!(r.device_locked, rot["deviceLocked"].as_bool().unwrap());
                assert_eq!(
                    r.verified_boot_state.name(),
                    rot["verifiedBootState"].as_str().unwrap(),
                    "{name}"
                );
                assert_eq!(
                    r.verified_boot_hash.clone(),
                    rot.get("verifiedBootHash").map(b64),
                    "{name}"
                );
            }
        }
    }
}

#[test]
fn real_chains_verify_at_their_creation_time_and_decode_as_upstream() {
    let anchors = roots();
    assert_eq!(anchors.len(), 2);
    for name in VALID {
        let json = expected(name);
        let at = creation_time(&json);
        let verified = verify_chain(&chain(name), &anchors, &StatusList::default(), at)
            .unwrap_or_else(|e| panic!("{name} at {at}: {e}"));
        assert_matches_json(name, &verified.key_description, &json);
        // The challenge is the JSON's, byte for byte; ours would not match it.
        let ours = AttestationChallenge::bind(&[1; 32], &DeviceHandle([2; 32]), &[3; 32]);
        assert_eq!(
            ours.check(&verified.key_description.attestation_challenge)
                .unwrap_err()
                .reason(),
            Reason::Replay,
            "{name}"
        );
    }
}

#[test]
fn blueline_attests_its_identity_and_tegu_its_verified_boot() {
    let name = "blueline/sdk28/TEE_RSA_BASE+IMEI";
    let json = expected(name);
    let d = verify_chain(
        &chain(name),
        &roots(),
        &StatusList::default(),
        creation_time(&json),
    )
    .unwrap()
    .key_description;
    assert_eq!(
        d.hardware_enforced.id_model.as_deref(),
        Some(&b"Pixel 3"[..])
    );
    assert_eq!(
        d.hardware_enforced.id_brand.as_deref(),
        Some(&b"google"[..])
    );
    // An unlocked, unverified development phone: refused as an ineligible build.
    let err = judge(&d, &lenient_age(), creation_time(&json)).unwrap_err();
    assert_eq!(
        err,
        AttestError::BootNotVerified {
            found: "UNVERIFIED"
        }
    );
    assert_eq!(err.reason(), Reason::IneligibleBuild);

    let name = "tegu/sdk36/TEE_EC_2026_ROOT";
    let json = expected(name);
    let d = verify_chain(
        &chain(name),
        &roots(),
        &StatusList::default(),
        creation_time(&json),
    )
    .unwrap()
    .key_description;
    let attested = judge(&d, &lenient_age(), creation_time(&json)).unwrap();
    assert_eq!(attested.security_level, SecurityLevel::TrustedEnvironment);
    assert_eq!(attested.boot_state, VerifiedBootState::Verified);
    assert!(attested.locked);
    // A patch floor above its 2026-02 level refuses it.
    let floor = Requirements {
        min_patch_level: Some(202_603),
        ..lenient_age()
    };
    assert_eq!(
        judge(&d, &floor, creation_time(&json))
            .unwrap_err()
            .reason(),
        Reason::IneligibleBuild
    );
}

fn lenient_age() -> Requirements {
    Requirements {
        max_age_secs: 3600,
        ..Requirements::default()
    }
}

#[test]
fn sony_chain_is_refused_its_leaf_issuer_is_not_a_ca() {
    let name = "sony-xperia10-iii/sdk33/TEE_EC";
    let at = creation_time(&expected(name));
    let err = verify_chain(&chain(name), &roots(), &StatusList::default(), at).unwrap_err();
    assert_eq!(err, AttestError::IssuerNotCa { index: 1 });
    // Also at 2024-10-20, when every certificate is inside its validity.
    let err = verify_chain(
        &chain(name),
        &roots(),
        &StatusList::default(),
        ymd(2024, 10, 20),
    )
    .unwrap_err();
    assert_eq!(err, AttestError::IssuerNotCa { index: 1 });
    assert_eq!(err.reason(), Reason::InvalidChain);
}

#[test]
fn rkp_intermediates_expire_factory_ones_per_their_dates() {
    let at = ymd(2030, 1, 1);
    let err = verify_chain(
        &chain("caiman/sdk36/TEE_EC_RKP"),
        &roots(),
        &StatusList::default(),
        at,
    )
    .unwrap_err();
    assert!(matches!(err, AttestError::Expired { .. }), "{err}");
    assert_eq!(err.reason(), Reason::InvalidChain);
}

#[test]
fn software_attestation_roots_are_not_anchors() {
    for name in ["marlin/sdk29/TEE_EC_NONE", "marlin/sdk29/TEE_RSA_NONE"] {
        let at = creation_time(&expected(name));
        let err = verify_chain(&chain(name), &roots(), &StatusList::default(), at).unwrap_err();
        // The RSA chain fails earlier still: its RSA-1024 intermediate is below what the
        // verifier accepts at all.
        assert!(
            matches!(
                err,
                AttestError::UnknownRoot | AttestError::BadSignature { index: 0, .. }
            ),
            "{name}: {err}"
        );
        assert_eq!(err.reason(), Reason::InvalidChain);
    }
    // With its own software root as the anchor the EC chain verifies, and the policy refuses
    // it: software-only where hardware is required.
    let name = "marlin/sdk29/TEE_EC_NONE";
    let json = expected(name);
    let certs = chain(name);
    let own = TrustAnchors::from_der(&[certs.last().unwrap().as_slice()]).unwrap();
    let d = verify_chain(&certs, &own, &StatusList::default(), creation_time(&json))
        .unwrap()
        .key_description;
    assert_matches_json(name, &d, &json);
    let err = judge(&d, &lenient_age(), creation_time(&json)).unwrap_err();
    assert_eq!(err, AttestError::SoftwareOnly { found: "SOFTWARE" });
    assert_eq!(err.reason(), Reason::UnsupportedDevice);
    // The RSA-1024 software root is below what the verifier accepts at all.
    let certs = chain("marlin/sdk29/TEE_RSA_NONE");
    let own = TrustAnchors::from_der(&[certs.last().unwrap().as_slice()]).unwrap();
    let err = verify_chain(
        &certs,
        &own,
        &StatusList::default(),
        creation_time(&expected("marlin/sdk29/TEE_RSA_NONE")),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            AttestError::BadSignature { .. } | AttestError::UnknownRoot
        ),
        "{err}"
    );
}

#[test]
fn invalid_vectors_are_refused_with_their_defect() {
    let certs = chain("invalid/tags_not_in_ascending_order");
    let err = verify_chain(&certs, &roots(), &StatusList::default(), ymd(2024, 8, 15)).unwrap_err();
    // The leaf's signature does not verify (upstream: "Verification Failed")...
    assert!(
        matches!(err, AttestError::BadSignature { index: 0, .. }),
        "{err}"
    );
    assert_eq!(err.reason(), Reason::InvalidChain);
    // ...and its extension breaks the tag order.
    assert_eq!(
        leaf_key_description(&certs[0]).unwrap_err(),
        AttestError::KeyDescription(KeyDescriptionError::TagOrder {
            previous: 2,
            tag: 1
        })
    );

    let err = verify_chain(
        &chain("invalid/malformed_rot_device_locked"),
        &roots(),
        &StatusList::default(),
        ymd(2026, 2, 14),
    )
    .unwrap_err();
    assert_eq!(
        err,
        AttestError::KeyDescription(KeyDescriptionError::Boolean {
            field: "deviceLocked"
        })
    );
}

#[test]
fn lone_leaf_decodes_and_cannot_chain() {
    let certs = chain("allow_while_on_body");
    assert_eq!(certs.len(), 1);
    let d = leaf_key_description(&certs[0]).unwrap();
    assert!(d.software_enforced.tags.contains(&506));
    assert!(d.software_enforced.tags.contains(&509));
    assert_eq!(
        verify_chain(&certs, &roots(), &StatusList::default(), ymd(2024, 10, 20)).unwrap_err(),
        AttestError::UnknownRoot
    );
}

#[test]
fn p256_sha384_chain_verifies_with_its_own_root_only() {
    let certs = chain("p256_sha384_intermediate");
    let own = TrustAnchors::from_der(&[certs.last().unwrap().as_slice()]).unwrap();
    let at = ymd(2024, 10, 20);
    // The path verifies (P-256 with SHA-384); its synthetic extension is no KeyDescription,
    // so the evidence as a whole is still refused, by type.
    assert_eq!(
        verify_chain(&certs, &own, &StatusList::default(), at).unwrap_err(),
        AttestError::KeyDescription(KeyDescriptionError::WrongType {
            field: "KeyDescription",
            expected: "SEQUENCE"
        })
    );
    assert_eq!(
        verify_chain(&certs, &roots(), &StatusList::default(), at).unwrap_err(),
        AttestError::UnknownRoot
    );
}

#[test]
fn status_list_revokes_an_intermediate_of_a_real_chain() {
    let name = "tegu/sdk36/TEE_EC_2026_ROOT";
    let certs = chain(name);
    let at = creation_time(&expected(name));
    let serial = {
        use x509_parser::prelude::FromDer;
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&certs[1]).unwrap();
        ota_core::attest::serial_hex(cert.raw_serial())
    };
    let list = format!(
        r#"{{"entries":{{"{}":{{"status":"REVOKED","reason":"KEY_COMPROMISE"}},"ffff":{{"status":"REVOKED"}}}}}}"#,
        serial.to_uppercase()
    );
    let status = StatusList::from_json(list.as_bytes()).unwrap();
    let err = verify_chain(&certs, &roots(), &status, at).unwrap_err();
    assert_eq!(err, AttestError::Revoked { index: 1, serial });
    assert_eq!(err.reason(), Reason::InvalidChain);
}

#[test]
fn hostile_chains_are_refused_by_type() {
    let anchors = roots();
    let status = StatusList::default();
    let at = creation_time(&expected("tegu/sdk36/TEE_EC_2026_ROOT"));
    let good = chain("tegu/sdk36/TEE_EC_2026_ROOT");
    // 50 certificates: refused before any is parsed.
    let fifty = vec![good[0].clone(); 50];
    assert_eq!(
        verify_chain(&fifty, &anchors, &status, at).unwrap_err(),
        AttestError::ChainTooLong { len: 50 }
    );
    assert_eq!(
        verify_chain(&[], &anchors, &status, at).unwrap_err(),
        AttestError::EmptyChain
    );
    // Every truncation of the leaf is a typed refusal.
    for len in [0, 1, 2, 10, good[0].len() / 2, good[0].len() - 1] {
        let mut c = good.clone();
        c[0].truncate(len);
        let err = verify_chain(&c, &anchors, &status, at).unwrap_err();
        assert!(
            matches!(err, AttestError::MalformedCert { index: 0, .. }),
            "{len}: {err}"
        );
    }
    // A huge certificate is refused by size.
    let mut c = good.clone();
    c[1] = vec![0x30; 100_000];
    assert!(matches!(
        verify_chain(&c, &anchors, &status, at).unwrap_err(),
        AttestError::CertTooLarge { index: 1, .. }
    ));
    // A leaf without the extension (an intermediate in leaf position).
    assert_eq!(
        verify_chain(&good[1..], &anchors, &status, at).unwrap_err(),
        AttestError::NoExtension
    );
}

#[test]
fn hostile_key_descriptions_are_refused_by_type() {
    // Wrong types where the schema says INTEGER / SEQUENCE / OCTET STRING.
    let as_octets = [0x04, 0x02, 0x01, 0x02];
    assert!(matches!(
        KeyDescription::parse(&as_octets),
        Err(KeyDescriptionError::WrongType { .. })
    ));
    // A huge integer in attestationVersion.
    let mut huge = vec![0x30, 0x84, 0x00, 0x00, 0x01, 0x04, 0x02, 0x82, 0x01, 0x00];
    huge.extend(std::iter::repeat_n(0x7f, 256));
    assert!(matches!(
        KeyDescription::parse(&huge),
        Err(KeyDescriptionError::Der { .. } | KeyDescriptionError::Integer { .. })
    ));
    let mut huge = vec![0x30, 0x82, 0x01, 0x04, 0x02, 0x82, 0x01, 0x00];
    huge.extend(std::iter::repeat_n(0x7f, 256));
    assert_eq!(
        KeyDescription::parse(&huge),
        Err(KeyDescriptionError::Integer {
            field: "attestationVersion"
        })
    );
    // An authorization entry whose EXPLICIT wrapper holds two values.
    let d = KeyDescription {
        attestation_version: 4,
        attestation_security_level: SecurityLevel::TrustedEnvironment,
        keymint_version: 4,
        keymint_security_level: SecurityLevel::TrustedEnvironment,
        attestation_challenge: vec![],
        unique_id: vec![],
        software_enforced: Default::default(),
        hardware_enforced: key_description::AuthorizationList {
            os_version: Some(1),
            ..Default::default()
        },
    };
    let der = d.to_der();
    let parsed = KeyDescription::parse(&der).unwrap();
    assert_eq!(parsed.hardware_enforced.os_version, Some(1));
    // Patch the osVersion INTEGER into an OCTET STRING: a typed wrong-type refusal.
    let mut bad = der.clone();
    let at = bad.len() - 3;
    assert_eq!(bad[at], 0x02);
    bad[at] = 0x04;
    assert_eq!(
        KeyDescription::parse(&bad),
        Err(KeyDescriptionError::WrongType {
            field: "osVersion",
            expected: "INTEGER"
        })
    );
}
