//! The audit log: each kind of tampering is detected and named by `ota-sign audit verify`,
//! and a damaged log stops signing.

use ota_core::time::UnixTime;
use ota_sign::audit::{Action, Entry};
use ota_sign::backend::Scheme;
use ota_sign::backend::file::FileKey;
use sha2::Digest as _;

use crate::harness::*;

/// A station with a few operations in its log.
fn busy_station() -> Fixture {
    let f = Fixture::ready(Keys::Files).unwrap();
    let trusted = f.root();
    let req = f.request("t.json", &targets_doc(&trusted, 1, &[]));
    f.sign("targets", "targets", &req, &f.path("1.targets.json"), &[])
        .ok();
    let out = f.run(&["audit", "verify"]);
    assert!(
        out.ok().starts_with("audit log intact: 15 entries"),
        "{}",
        out.stdout
    );
    f
}

fn entry(line: &str) -> Entry {
    serde_json::from_str(line).unwrap()
}

#[test]
fn each_kind_of_tampering_is_named() {
    let f = busy_station();
    let original = f.audit_lines();
    let verify = |lines: &[String]| {
        f.write_audit(lines);
        f.run(&["audit", "verify"])
    };

    // Changed: a detail edited, the hash left alone.
    let mut lines = original.clone();
    lines[9] = lines[9].replacen("T00:00:00Z\"", "T00:00:01Z\"", 1);
    assert_ne!(lines[9], original[9]);
    let out = verify(&lines);
    out.fails(
        1,
        "audit log: 1 problem(s), the first: entry 10 was changed",
    );
    assert!(
        out.stdout
            .contains("entry 10 was changed: its content does not match its hash")
    );

    // Changed and re-hashed: the signature fails and the next entry no longer chains.
    let mut lines = original.clone();
    let mut e = entry(&lines[9]);
    e.details["file"] = "something else".into();
    e.hash = hex::encode(sha2::Sha256::digest(e.message()));
    lines[9] = e.to_line();
    let out = verify(&lines);
    assert_eq!(out.code, 1);
    assert!(
        out.stdout
            .contains("entry 10 was changed or forged: its signature does not verify")
    );
    assert!(
        out.stdout
            .contains("entry 11 does not chain to the entry before it")
    );

    // Removed in the middle.
    let mut lines = original.clone();
    lines.remove(9);
    verify(&lines).fails(1, "entry 10 was removed");

    // Removed from the end: the station recorded the head.
    let lines = original[..original.len() - 2].to_vec();
    verify(&lines).fails(
        1,
        "the log ends at entry 13 but the station recorded entry 15: entries were removed from the end",
    );

    // Reordered.
    let mut lines = original.clone();
    lines.swap(9, 10);
    verify(&lines).fails(1, "entry 10 appears after entry 11: entries were reordered");

    // Appended by someone else: a well-formed, chained, signed entry by a stranger's key.
    let mut lines = original.clone();
    let last = entry(lines.last().unwrap());
    let mut mallory = FileKey::generate(&f.path("mallory.json"), Scheme::Ed25519).unwrap();
    let forged = Entry::seal(
        last.seq + 1,
        UnixTime(last.time.0 + 60),
        &mut mallory,
        Action::Signature,
        serde_json::json!({ "role": "release", "note": "nothing to see" }),
        &last.hash,
    )
    .unwrap();
    lines.push(forged.to_line());
    let out = verify(&lines);
    out.fails(1, "entry 16 was appended by someone else");
    assert!(out.stdout.contains(&format!(
        "entry 16 was appended by someone else: key {} is neither an operator nor a key of an installed root",
        forged.actor
    )));
    // Unless the auditor vouches for that key.
    let pubfile = f.path("mallory.pub.json");
    std::fs::write(&pubfile, serde_json::to_vec(&forged.actor_key).unwrap()).unwrap();
    verify(&lines).fails(1, "appended by someone else");
    let out = f.run(&["audit", "verify", "--known-key", pubfile.to_str().unwrap()]);
    assert!(out.ok().starts_with("audit log intact: 16 entries"));

    // The intact log verifies again.
    verify(&original).ok();
}

#[test]
fn a_damaged_log_stops_signing() {
    let f = busy_station();
    let mut lines = f.audit_lines();
    lines[3] = lines[3].replacen("key-generated", "key-lost", 1);
    f.write_audit(&lines);
    let trusted = f.root();
    let req = f.request("t2.json", &targets_doc(&trusted, 2, &[]));
    let out_file = f.path("2.targets.json");
    f.sign("targets", "targets", &req, &out_file, &[]).fails(
        1,
        "audit log: entry 4 was changed: its content does not match its hash; nothing is signed until an auditor has looked at it",
    );
    assert!(!out_file.exists());
}

#[test]
fn revoked_operators_writing_after_revocation_are_named() {
    let f = Fixture::ready(Keys::Files).unwrap();
    let artifact = artifact_bytes(3, 50_000);
    let req = f.request(
        "r.json",
        &release_doc(1, 30 * DAY, &[("artifacts/a.img", &artifact)]),
    );
    f.approve("carol", &req, &f.path("c.json"), &[]).ok();
    // Carol's revocation is back-dated before her approval: her entries become suspect.
    f.write_policy(&[("carol", &at(-3600))]);
    let out = f.run(&["audit", "verify"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stdout
            .contains("was appended by operator carol after their revocation at"),
        "{}",
        out.stdout
    );
}
