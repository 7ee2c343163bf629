//! Cost of verifying an attestation chain (parse, path validation, extension, policy) against
//! the physical limit measured in the same run: the signature checks of the same links, done
//! directly with `ring`.
//!
//! `cargo bench -p ota-core --bench attest`. `OTA_BENCH_REPS` (default 5) repetitions of
//! `OTA_BENCH_ITERS` (default 200) verifications; each figure is the best repetition's mean.

// A benchmark is a driver: it reads the clock, which `ota-core` itself never does.
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use ota_core::attest::{
    Requirements, StatusList, TrustAnchors, judge, pem_certificates, verify_chain,
};
use ota_core::time::UnixTime;
use ring::signature;
use x509_parser::prelude::{FromDer, X509Certificate};

fn main() {
    let reps = env_usize("OTA_BENCH_REPS", 5).max(1);
    let iters = env_usize("OTA_BENCH_ITERS", 200).max(1);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/android-key-attestation");
    let anchors =
        TrustAnchors::from_pem_or_json(&std::fs::read(dir.join("roots.json")).unwrap()).unwrap();
    let status = StatusList::default();
    let requirements = Requirements {
        verified_boot: false,
        locked: false,
        max_age_secs: i64::MAX,
        ..Requirements::default()
    };
    println!("attestation chain verification, best of {reps} × {iters}");
    for (name, at_ms) in [
        ("tegu/sdk36/TEE_EC_2026_ROOT", 1_771_894_563_060_i64),
        ("akita/sdk34/TEE_RSA_NONE", 1_727_389_884_700),
        ("blueline/sdk28/TEE_EC_NONE", 1_538_178_035_062),
    ] {
        let pem = std::fs::read(dir.join("testdata").join(format!("{name}.pem"))).unwrap();
        let chain = pem_certificates(&pem, 8).unwrap();
        let at = UnixTime(at_ms / 1000);
        let verified = verify_chain(&chain, &anchors, &status, at).unwrap();
        let links = links(&chain, verified.path_len);
        let full = best(reps, iters, || {
            let v = verify_chain(black_box(&chain), &anchors, &status, at).unwrap();
            black_box(judge(&v.key_description, &requirements, at).unwrap());
        });
        let limit = best(reps, iters, || {
            for (alg, key, tbs, sig) in &links {
                signature::UnparsedPublicKey::new(*alg, key)
                    .verify(black_box(tbs), sig)
                    .unwrap();
            }
        });
        println!(
            "  {name}: {} certificates, {} signature checks: verify {:.1} µs, signatures alone \
             {:.1} µs (limit), overhead {:.0}%",
            chain.len(),
            links.len(),
            full * 1e6,
            limit * 1e6,
            (full / limit - 1.0) * 100.0
        );
    }
}

type Link = (
    &'static dyn signature::VerificationAlgorithm,
    Vec<u8>,
    Vec<u8>,
    Vec<u8>,
);

/// (algorithm, issuer key, signed bytes, signature) of each link of the validated path; the
/// last issuer is the anchor, whose key is the next certificate's in these chains.
fn links(chain: &[Vec<u8>], path_len: usize) -> Vec<Link> {
    let certs: Vec<X509Certificate<'_>> = chain
        .iter()
        .map(|der| X509Certificate::from_der(der).unwrap().1)
        .collect();
    (0..path_len)
        .map(|i| {
            let (child, issuer) = (&certs[i], &certs[i + 1]);
            let spki = issuer.public_key();
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string());
            let alg: &'static dyn signature::VerificationAlgorithm = match (
                curve.as_deref(),
                child.signature_algorithm.algorithm.to_id_string().as_str(),
            ) {
                (Some("1.2.840.10045.3.1.7"), "1.2.840.10045.4.3.2") => {
                    &signature::ECDSA_P256_SHA256_ASN1
                }
                (Some("1.3.132.0.34"), "1.2.840.10045.4.3.2") => &signature::ECDSA_P384_SHA256_ASN1,
                (Some("1.3.132.0.34"), "1.2.840.10045.4.3.3") => &signature::ECDSA_P384_SHA384_ASN1,
                (_, "1.2.840.113549.1.1.11") => &signature::RSA_PKCS1_2048_8192_SHA256,
                other => panic!("bench does not know {other:?}"),
            };
            (
                alg,
                spki.subject_public_key.data.to_vec(),
                child.tbs_certificate.as_ref().to_vec(),
                child.signature_value.data.to_vec(),
            )
        })
        .collect()
}

/// The best repetition's mean seconds per call.
fn best(reps: usize, iters: usize, mut f: impl FnMut()) -> f64 {
    (0..reps)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iters {
                f();
            }
            start.elapsed().as_secs_f64() / iters as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
