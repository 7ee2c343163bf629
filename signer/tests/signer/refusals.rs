//! Refusals, each asserting its reason and exit code, and that nothing partial is left.
//! These run on development file keys (with `--insecure-file-keys`), so they need no token.

use std::path::{Path, PathBuf};

use crate::harness::*;

fn release_request(f: &Fixture, name: &str, version: u64, seed: u64) -> PathBuf {
    let artifact = artifact_bytes(seed, 100_000);
    f.request(
        name,
        &release_doc(version, 30 * DAY, &[("artifacts/system.img", &artifact)]),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn approvals_are_bound_to_the_request() {
    let f = Fixture::ready(Keys::Files).unwrap();
    let first = release_request(&f, "first.json", 1, 1);
    let (a, b) = (f.path("alice.json"), f.path("bob.json"));
    f.approve("alice", &first, &a, &[]).ok();
    f.approve("bob", &first, &b, &[]).ok();
    // The same approvals presented for another request (other content, same version).
    let second = release_request(&f, "second.json", 1, 2);
    let out_file = f.path("release.json");
    let out = f.sign(
        "release",
        "release",
        &second,
        &out_file,
        &["--approval", s(&a), "--approval", s(&b)],
    );
    out.fails(1, "operator alice's approval is for request");
    assert!(out.stderr.contains("approvals cannot be reused"));
    assert!(!out_file.exists());
    // They still count for the request they approve.
    f.sign(
        "release",
        "release",
        &first,
        &out_file,
        &["--approval", s(&a), "--approval", s(&b)],
    )
    .ok();
}

#[test]
fn expired_approvals_are_refused() {
    let f = Fixture::ready(Keys::Files).unwrap();
    let req = release_request(&f, "r.json", 1, 1);
    let (a, b) = (f.path("alice.json"), f.path("bob.json"));
    f.approve("alice", &req, &a, &["--valid-for", "1h"]).ok();
    f.approve("bob", &req, &b, &["--valid-for", "4h"]).ok();
    let out_file = f.path("release.json");
    let later = at(2 * 3600);
    let out = f.sign(
        "release",
        "release",
        &req,
        &out_file,
        &["--approval", s(&a), "--approval", s(&b), "--now", &later],
    );
    out.fails(
        1,
        &format!(
            "operator alice's approval expired at {} (now {later})",
            at(3600)
        ),
    );
    assert!(!out_file.exists());
    // An approval may not be made to live longer than the policy allows (24 hours).
    let out = f.approve("carol", &req, &f.path("c.json"), &["--valid-for", "2d"]);
    out.fails(1, "an approval may be valid for at most 24 hours");
}

#[test]
fn one_operator_approving_twice_is_refused() {
    let f = Fixture::ready(Keys::Files).unwrap();
    let req = release_request(&f, "r.json", 1, 1);
    let (a1, a2) = (f.path("alice-1.json"), f.path("alice-2.json"));
    f.approve("alice", &req, &a1, &[]).ok();
    f.approve("alice", &req, &a2, &["--valid-for", "2h"]).ok();
    let out_file = f.path("release.json");
    f.sign(
        "release",
        "release",
        &req,
        &out_file,
        &["--approval", s(&a1), "--approval", s(&a2)],
    )
    .fails(
        1,
        "operator alice approved more than once; approvals must come from distinct operators",
    );
    assert!(!out_file.exists());
}

#[test]
fn too_few_approvals_are_refused() {
    let f = Fixture::ready(Keys::Files).unwrap();
    let req = release_request(&f, "r.json", 1, 1);
    let a = f.path("alice.json");
    f.approve("alice", &req, &a, &[]).ok();
    let out_file = f.path("release.json");
    f.sign(
        "release",
        "release",
        &req,
        &out_file,
        &["--approval", s(&a)],
    )
    .fails(
        1,
        "release: 1 valid approval(s) from distinct operators, 2 needed",
    );
    f.sign("release", "release", &req, &out_file, &[]).fails(
        1,
        "release: 0 valid approval(s) from distinct operators, 2 needed",
    );
    assert!(!out_file.exists());
    // A key that is no operator's cannot approve.
    f.approve("targets", &req, &f.path("x.json"), &[])
        .fails(1, "is no operator's approval key in the policy");
}

#[test]
fn revoked_operators_cannot_approve() {
    let f = Fixture::ready(Keys::Files).unwrap();
    let req = release_request(&f, "r.json", 1, 1);
    let a = f.path("alice.json");
    f.approve("alice", &req, &a, &[]).ok();
    f.write_policy(&[("alice", NOW)]);
    f.approve("alice", &req, &f.path("again.json"), &[])
        .fails(1, &format!("operator alice was revoked at {NOW}"));
    let b = f.path("bob.json");
    f.approve("bob", &req, &b, &[]).ok();
    f.sign(
        "release",
        "release",
        &req,
        &f.path("out.json"),
        &["--approval", s(&a), "--approval", s(&b)],
    )
    .fails(1, "operator alice was revoked");
}

#[test]
fn file_keys_for_offline_roles_need_the_flag() {
    let f = Fixture::ready(Keys::Files).unwrap();
    let trusted = f.root();
    let req = f.request("t.json", &targets_doc(&trusted, 1, &[]));
    let out_file = f.path("signed.json");
    let before = f.audit_lines().len();
    for (role, key) in [
        ("targets", "targets"),
        ("release", "release"),
        ("root", "root-1"),
    ] {
        let out = f.run(&[
            "sign",
            "--role",
            role,
            "--key",
            &f.refs[key],
            "--in",
            s(&req),
            "--out",
            s(&out_file),
            "--yes",
        ]);
        out.fails(
            1,
            &format!("refusing a file key for {role}: offline roles use keys on tokens"),
        );
    }
    assert!(!out_file.exists());
    assert_eq!(
        f.audit_lines().len(),
        before,
        "refused before any key was used"
    );
}

#[test]
fn versions_must_rise() {
    let f = Fixture::ready(Keys::Files).unwrap();
    let trusted = f.root();
    let v2 = f.request("v2.json", &targets_doc(&trusted, 2, &[]));
    f.sign("targets", "targets", &v2, &f.path("2.targets.json"), &[])
        .ok();
    let v1 = f.request("v1.json", &targets_doc(&trusted, 1, &[]));
    let out_file = f.path("1.targets.json");
    f.sign("targets", "targets", &v1, &out_file, &[]).fails(
        1,
        "targets: version 1 does not rise above version 2 signed before",
    );
    assert!(!out_file.exists());
    // Version 2 again with other content: two documents under one version.
    let mut other = targets_doc(&trusted, 2, &[]);
    other.common.expires = NOW_TIME.plus_secs(20 * DAY);
    let other = f.request("v2-other.json", &other);
    f.sign("targets", "targets", &other, &out_file, &[]).fails(
        1,
        "targets: version 2 was already signed for another request",
    );
    // The same request again (a co-signature) is fine.
    f.sign("targets", "targets", &v2, &f.path("2.targets.json"), &[])
        .ok();
    // A root that is not the next version.
    let root = f.path("root-again.json");
    f.root_create(&f.key_args("targets", "release"), &root)
        .fails(
            1,
            "root: version 1 does not rise above version 1 signed before",
        );
}

#[test]
fn expiry_beyond_the_policy_is_refused() {
    let f = Fixture::ready(Keys::Files).unwrap();
    let trusted = f.root();
    let mut doc = targets_doc(&trusted, 1, &[]);
    doc.common.expires = NOW_TIME.plus_secs(91 * DAY);
    let req = f.request("t.json", &doc);
    f.sign("targets", "targets", &req, &f.path("o.json"), &[])
        .fails(
            1,
            "targets: expiry 2027-02-22T00:00:00Z is beyond the policy's maximum of 90 days",
        );
    doc.common.expires = NOW_TIME;
    let req = f.request("t2.json", &doc);
    f.sign("targets", "targets", &req, &f.path("o.json"), &[])
        .fails(
            1,
            "targets: expiry 2026-11-23T00:00:00Z is not in the future",
        );
}

#[test]
fn release_numbers_rise_per_channel_and_never_change() {
    let f = Fixture::ready(Keys::Files).unwrap();
    let trusted = f.root();
    let m5 = manifest("stable", 5, "artifacts/system-5.img");
    let v1 = f.request(
        "v1.json",
        &targets_doc(&trusted, 1, &[("releases/stable/5.json", &m5)]),
    );
    f.sign("targets", "targets", &v1, &f.path("1.targets.json"), &[])
        .ok();
    // A new manifest numbered at or below the last release of its channel.
    let m4 = manifest("stable", 4, "artifacts/system-4.img");
    let v2 = f.request(
        "v2.json",
        &targets_doc(
            &trusted,
            2,
            &[
                ("releases/stable/5.json", &m5),
                ("releases/stable/4.json", &m4),
            ],
        ),
    );
    f.sign("targets", "targets", &v2, &f.path("2.targets.json"), &[]).fails(
        1,
        "targets: releases/stable/4.json is a new release 4 on channel stable, not above release 5 signed before",
    );
    // Release 5 with other content.
    let m5b = manifest("stable", 5, "artifacts/system-5b.img");
    let v2 = f.request(
        "v2b.json",
        &targets_doc(&trusted, 2, &[("releases/stable/5.json", &m5b)]),
    );
    f.sign("targets", "targets", &v2, &f.path("2.targets.json"), &[])
        .fails(
            1,
            "targets: releases/stable/5.json was signed before with other content",
        );
    // Release 6 on stable, and release 1 on another channel, are fine.
    let m6 = manifest("stable", 6, "artifacts/system-6.img");
    let b1 = manifest("beta", 1, "artifacts/system-6.img");
    let v2 = f.request(
        "v2c.json",
        &targets_doc(
            &trusted,
            2,
            &[
                ("releases/stable/5.json", &m5),
                ("releases/stable/6.json", &m6),
                ("releases/beta/1.json", &b1),
            ],
        ),
    );
    let out = f.sign("targets", "targets", &v2, &f.path("2.targets.json"), &[]);
    out.ok();
    assert!(
        out.stderr
            .contains("channel stable release 5 [signed before]")
    );
    assert!(out.stderr.contains("channel stable release 6 [NEW]"));
    assert!(out.stderr.contains("channel beta release 1 [NEW]"));
}

#[test]
fn inconsistent_metadata_is_refused() {
    let f = Fixture::ready(Keys::Files).unwrap();
    let trusted = f.root();
    // targets delegating release to a key the root does not pin (the manifest key swapping
    // out the HSM).
    let mut doc = targets_doc(&trusted, 1, &[]);
    let mallory: ota_core::tuf::Key =
        serde_json::from_slice(&std::fs::read(f.public("targets")).unwrap()).unwrap();
    let delegations = doc.delegations.as_mut().unwrap();
    delegations.keys = [(mallory.key_id(), mallory.clone())].into();
    delegations.roles[0].keyids = vec![mallory.key_id()];
    let req = f.request("t.json", &doc);
    f.sign("targets", "targets", &req, &f.path("o.json"), &[]).fails(
        1,
        "the release delegation names other keys than the release authority pinned in the trusted root",
    );
    // An artifact in targets (the manifest authority signing artifacts).
    let artifact = artifact_bytes(1, 1000);
    let mut doc = targets_doc(&trusted, 1, &[]);
    doc.targets
        .insert("artifacts/x.img".into(), target_file(&artifact, None));
    let req = f.request("t2.json", &doc);
    f.sign("targets", "targets", &req, &f.path("o.json"), &[])
        .fails(
            1,
            "it lists artifacts/x.img, which is not a release manifest",
        );
    // A manifest whose content names another release than its path.
    let m = manifest("stable", 9, "artifacts/system-9.img");
    let req = f.request(
        "t3.json",
        &targets_doc(&trusted, 1, &[("releases/stable/8.json", &m)]),
    );
    let file = f.path("m.json");
    std::fs::write(&file, &m).unwrap();
    f.sign(
        "targets",
        "targets",
        &req,
        &f.path("o.json"),
        &["--manifest", s(&file)],
    )
    .fails(
        1,
        "releases/stable/8.json holds the manifest of channel stable release 9",
    );
    // A release artifact whose chunk count contradicts its length.
    let mut doc = release_doc(1, 30 * DAY, &[("artifacts/system.img", &artifact)]);
    let file_entry = doc.targets.get_mut("artifacts/system.img").unwrap();
    file_entry.length += 10_000_000;
    let req = f.request("r.json", &doc);
    f.review("release", &req)
        .fails(1, "cannot be cut into 1 chunks");
    // A release target outside artifacts/*.
    let doc = release_doc(1, 30 * DAY, &[("releases/stable/1.json", &artifact)]);
    let req = f.request("r2.json", &doc);
    f.review("release", &req)
        .fails(1, "releases/stable/1.json is outside artifacts/*");
    assert!(!f.path("o.json").exists());
}

#[test]
fn one_key_for_both_authorities_is_refused() {
    let f = Fixture::keys_only(Keys::Files).unwrap();
    let root = f.path("root.json");
    let out = f.root_create(&f.key_args("targets", "targets"), &root);
    out.fails(1, "is listed for both targets and the release authority");
    assert!(!root.exists());
    assert!(!f.station.join("root.json").exists());
    // An operator's approval key in a root is refused too.
    let out = f.root_create(&f.key_args("targets", "alice"), &root);
    out.fails(1, "operator alice's approval key is listed for release");
}

#[test]
fn keys_sign_only_for_their_own_role() {
    let f = Fixture::ready(Keys::Files).unwrap();
    let trusted = f.root();
    let rel = release_request(&f, "r.json", 1, 1);
    let (a, b) = (f.path("alice.json"), f.path("bob.json"));
    f.approve("alice", &rel, &a, &[]).ok();
    f.approve("bob", &rel, &b, &[]).ok();
    let approvals = ["--approval", s(&a), "--approval", s(&b)];
    let out_file = f.path("o.json");
    // The manifest key on release metadata.
    f.sign("release", "targets", &rel, &out_file, &approvals)
        .fails(
            1,
            "is not a release key of the trusted root (the root lists it for targets)",
        );
    // The release key on targets metadata.
    let tgt = f.request("t.json", &targets_doc(&trusted, 1, &[]));
    f.sign("targets", "release", &tgt, &out_file, &[]).fails(
        1,
        "is not a targets key of the trusted root (the root lists it for release)",
    );
    // An operator's approval key on metadata.
    f.sign("release", "alice", &rel, &out_file, &approvals)
        .fails(
            1,
            "is operator alice's approval key; it never signs metadata",
        );
    assert!(!out_file.exists());
}

#[test]
fn requests_that_are_not_canonical_or_not_ours_are_refused() {
    let f = Fixture::ready(Keys::Files).unwrap();
    let trusted = f.root();
    let good = std::fs::read(f.request("t.json", &targets_doc(&trusted, 1, &[]))).unwrap();
    let text = String::from_utf8(good).unwrap();
    let cases = [
        (
            text.replacen(
                "\"_type\": \"targets\"",
                "\"_type\": \"targets\", \"version\": 9",
                1,
            ),
            "request is not canonical: key \"version\" appears twice in one object",
        ),
        (
            text.replacen(
                "\"_type\": \"targets\"",
                "\"_type\": \"targets\", \"x-note\": 1",
                1,
            ),
            "request is not ours: signed.x-note: a field our tools do not write",
        ),
        (
            text.replacen("\"version\": 1", "\"version\": 1.0", 1),
            "request is not canonical",
        ),
        (
            "{\"signatures\": [], \"signed\": ".to_string(),
            "request is not canonical",
        ),
        (
            text.replacen("\"_type\": \"targets\"", "\"_type\": \"snapshot\"", 1),
            "request is not valid targets metadata",
        ),
    ];
    let out_file = f.path("signed.json");
    for (i, (bytes, reason)) in cases.iter().enumerate() {
        let req = f.path(&format!("bad-{i}.json"));
        std::fs::write(&req, bytes).unwrap();
        let before = listing(f.tmp.path());
        f.sign("targets", "targets", &req, &out_file, &[])
            .fails(1, reason);
        assert_eq!(listing(f.tmp.path()), before, "nothing left behind");
    }
    // A request carrying a signature that is not one of the role's keys.
    let mut envelope: serde_json::Value = serde_json::from_str(&text).unwrap();
    envelope["signatures"] = serde_json::json!([{ "keyid": "ab".repeat(32), "sig": "00" }]);
    let req = f.path("foreign.json");
    std::fs::write(&req, serde_json::to_vec(&envelope).unwrap()).unwrap();
    f.sign("targets", "targets", &req, &out_file, &[])
        .fails(1, "request carries a signature by key abab");
    assert!(!out_file.exists());
}

impl Fixture {
    pub(crate) fn review(&self, role: &str, req: &Path) -> Out {
        self.run(&["review", "--role", role, "--in", s(req)])
    }
}
