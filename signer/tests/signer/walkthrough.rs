//! A full release signing on SoftHSM2: root ceremony 2-of-3, `targets` on a P-256 token key,
//! `release` on an Ed25519 token key under 2-of-3 operator approvals, the repository accepted
//! by `ota-core`'s client workflow.

use std::collections::BTreeMap;
use std::path::Path;

use crate::harness::*;

/// Sign snapshot and timestamp (version `version`) over the signed targets and release with
/// keys `snapshot_key` and `timestamp_key`, and return the repository's metadata files.
pub(crate) fn publish(
    f: &Fixture,
    version: u64,
    targets: (&Path, u64),
    release: (&Path, u64),
    (snapshot_key, timestamp_key): (&str, &str),
) -> BTreeMap<String, Vec<u8>> {
    let targets_bytes = std::fs::read(targets.0).unwrap();
    let release_bytes = std::fs::read(release.0).unwrap();
    let snapshot_req = f.request(
        &format!("snapshot-{version}.request.json"),
        &snapshot_doc(
            version,
            (&targets_bytes, targets.1),
            (&release_bytes, release.1),
        ),
    );
    let snapshot = f.path(&format!("{version}.snapshot.json"));
    f.sign("snapshot", snapshot_key, &snapshot_req, &snapshot, &[])
        .ok();
    let snapshot_bytes = std::fs::read(&snapshot).unwrap();
    let timestamp_req = f.request(
        &format!("timestamp-{version}.request.json"),
        &timestamp_doc(version, (&snapshot_bytes, version)),
    );
    let timestamp = f.path(&format!("timestamp-{version}.json"));
    f.sign("timestamp", timestamp_key, &timestamp_req, &timestamp, &[])
        .ok();
    let mut metadata = BTreeMap::new();
    for entry in std::fs::read_dir(f.station.join("roots")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        metadata.insert(name, std::fs::read(&path).unwrap());
    }
    metadata.insert(format!("{}.targets.json", targets.1), targets_bytes);
    metadata.insert(format!("{}.release.json", release.1), release_bytes);
    metadata.insert(format!("{version}.snapshot.json"), snapshot_bytes);
    metadata.insert("timestamp.json".into(), std::fs::read(&timestamp).unwrap());
    metadata
}

#[test]
fn release_signing_walkthrough_on_softhsm() {
    let Some(f) = Fixture::keys_only(Keys::Tokens) else {
        return;
    };

    // Root ceremony: root-1 opens and signs, root-2 co-signs; 2 of 3 installs the root.
    let root = f.path("root.json");
    let out = f.root_create(&f.key_args("targets", "release"), &root);
    assert!(
        out.ok().contains("new root (version 1): 1 of 2 signatures"),
        "{}",
        out.stdout
    );
    assert!(
        !f.station.join("root.json").exists(),
        "not installed before the threshold"
    );
    let out = f.sign("root", "root-2", &root, &root, &[]);
    assert!(
        out.ok()
            .contains("root version 1 is now this station's trusted root"),
        "{}",
        out.stdout
    );
    let trusted = f.root();
    assert_eq!(trusted.roles["root"].threshold, 2);

    // The origin's signing requests.
    let artifact = artifact_bytes(1, 300_000);
    let release_req = f.request(
        "release.request.json",
        &release_doc(1, 30 * DAY, &[("artifacts/system-1.img", &artifact)]),
    );
    let manifest_bytes = manifest("stable", 1, "artifacts/system-1.img");
    let manifest_file = f.path("manifest-stable-1.json");
    std::fs::write(&manifest_file, &manifest_bytes).unwrap();
    let targets_req = f.request(
        "targets.request.json",
        &targets_doc(&trusted, 1, &[("releases/stable/1.json", &manifest_bytes)]),
    );

    // Dual control: two of the three operators approve this exact request.
    let (alice, carol) = (f.path("alice.approval.json"), f.path("carol.approval.json"));
    let out = f.approve("alice", &release_req, &alice, &[]);
    assert!(out.ok().contains("operator alice approved release request"));
    assert!(
        out.stderr.contains("artifacts/system-1.img"),
        "{}",
        out.stderr
    );
    f.approve("carol", &release_req, &carol, &[]).ok();

    // The HSM signs release.
    let release = f.path("1.release.json");
    let out = f.sign(
        "release",
        "release",
        &release_req,
        &release,
        &[
            "--approval",
            alice.to_str().unwrap(),
            "--approval",
            carol.to_str().unwrap(),
        ],
    );
    assert!(
        out.ok().contains("release: every threshold is met"),
        "{}",
        out.stdout
    );
    for shown in [
        "role:      release",
        "version:   1 (first signed here)",
        "artifacts/system-1.img",
        "length      300000",
        "sha256      ",
        "approvals: 2 (alice, carol)",
    ] {
        assert!(
            out.stderr.contains(shown),
            "review lacks {shown:?}:\n{}",
            out.stderr
        );
    }

    // The PIV key signs targets, with the release manifest shown.
    let targets = f.path("1.targets.json");
    let manifest_arg = manifest_file.to_str().unwrap();
    let out = f.sign(
        "targets",
        "targets",
        &targets_req,
        &targets,
        &["--manifest", manifest_arg],
    );
    out.ok();
    for shown in [
        "channel stable release 1 [NEW]: releases/stable/1.json",
        "artifact artifacts/system-1.img -> slot system",
        "delegates: release, 1 key(s) as pinned in root",
    ] {
        assert!(
            out.stderr.contains(shown),
            "review lacks {shown:?}:\n{}",
            out.stderr
        );
    }

    // The origin signs snapshot and timestamp; a device's client workflow accepts it all.
    let metadata = publish(
        &f,
        1,
        (&targets, 1),
        (&release, 1),
        ("snapshot", "timestamp"),
    );
    let files = BTreeMap::from([
        ("releases/stable/1.json".to_string(), manifest_bytes),
        ("artifacts/system-1.img".to_string(), artifact),
    ]);
    let found = client_accepts(
        &metadata["1.root.json"],
        &metadata,
        &files,
        &["releases/stable/1.json", "artifacts/system-1.img"],
    )
    .unwrap();
    assert_eq!(
        found,
        [
            "releases/stable/1.json in targets",
            "artifacts/system-1.img in release"
        ]
    );

    // The tool's own verification, and the audit log.
    for (role, file) in [
        ("release", &release),
        ("targets", &targets),
        ("root", &root),
    ] {
        let out = f.run(&["verify", "--role", role, "--in", file.to_str().unwrap()]);
        assert!(
            out.ok().contains("every threshold is met"),
            "{}",
            out.stdout
        );
    }
    let out = f.run(&["audit", "verify"]);
    assert!(out.ok().starts_with("audit log intact: "), "{}", out.stdout);
    let actions: Vec<String> = f
        .audit_lines()
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let step = v["details"]["step"].as_str().unwrap_or("");
            format!("{} {step}", v["action"].as_str().unwrap())
                .trim()
                .to_string()
        })
        .collect();
    assert_eq!(
        actions[..7],
        ["ceremony key-generated"; 7],
        "root-1..3, targets, release, snapshot, timestamp: each proved its key"
    );
    assert_eq!(
        actions[7..],
        [
            "ceremony root-create",
            "request",
            "signature",
            "request",
            "signature",
            "ceremony root-installed",
            "request",
            "approval",
            "request",
            "approval",
            "request",
            "signature",
            "request",
            "signature",
            "request",
            "signature",
            "request",
            "signature",
        ]
    );
}
