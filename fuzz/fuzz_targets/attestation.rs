//! Attestation evidence: any bytes, read as a KeyDescription extension, as a chain of
//! certificates verified against Google's roots, as the check-in's evidence JSON, as a status
//! list and as a trust anchor file, end in a typed refusal or a value; never a panic, and no
//! allocation beyond the bounds (`MAX_CHAIN_LEN`, `MAX_CERT_LEN`, `MAX_EVIDENCE_LEN`) checked
//! before decoding.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ota_core::attest::{
    AttestationChallenge, Evidence, KeyDescription, MAX_CHAIN_LEN, Requirements, StatusList,
    TrustAnchors, Verifier,
};
use ota_core::director::DeviceHandle;
use ota_core::time::UnixTime;

fn anchors() -> &'static TrustAnchors {
    static ANCHORS: OnceLock<TrustAnchors> = OnceLock::new();
    ANCHORS.get_or_init(|| {
        TrustAnchors::from_pem_or_json(include_bytes!(
            "../../core/testdata/android-key-attestation/roots.json"
        ))
        .expect("the shipped roots parse")
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(description) = KeyDescription::parse(data) {
        // What decodes re-encodes to something that decodes to the same fields.
        let again = KeyDescription::parse(&description.to_der()).expect("re-encoding decodes");
        assert_eq!(
            again.attestation_challenge,
            description.attestation_challenge
        );
        assert_eq!(
            again.hardware_enforced.root_of_trust,
            description.hardware_enforced.root_of_trust
        );
    }

    // A chain: the first byte says how many certificates (up to 2 past the cap, to hit the
    // bound), then each is a 2-byte big-endian length and that many bytes.
    if let Some((&count, mut rest)) = data.split_first() {
        let count = usize::from(count) % (MAX_CHAIN_LEN + 3);
        let mut chain = Vec::new();
        while chain.len() < count && rest.len() >= 2 {
            let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
            chain.push(rest[2..2 + len].to_vec());
            rest = &rest[2 + len..];
        }
        let status = StatusList::default();
        let requirements = Requirements::default();
        let verifier = Verifier {
            anchors: anchors(),
            status: &status,
            requirements: &requirements,
        };
        let challenge = AttestationChallenge::bind(&[1; 32], &DeviceHandle([2; 32]), &[3; 32]);
        let result = verifier.verify(&Evidence { chain }, &challenge, UnixTime(1_760_000_000));
        if let Err(error) = result {
            let _ = error.reason();
        }
    }

    let _ = serde_json::from_slice::<Evidence>(data);
    let _ = StatusList::from_json(data);
    let _ = TrustAnchors::from_pem_or_json(data);
});
