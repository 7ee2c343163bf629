//! `ota-device verify` (the real binary): offline verification of a file against the python-tuf
//! interop repository's signed metadata, for auditors. A good file passes with every check
//! printed; a changed byte, a bad signature, an unlisted target and expired metadata are each
//! refused with the reason.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::conformance::{HELLO_SERVED, RepoServer, Run, copy_dir, interop_repo, run};

fn verify(root: &Path, target: &str, file: &Path, extra: &[&str]) -> Run {
    let mut args = vec![
        "verify",
        "--root",
        root.to_str().unwrap(),
        "--target",
        target,
        "--file",
        file.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(env!("CARGO_BIN_EXE_ota-device"), &args)
}

fn root_v1(repo: &Path) -> PathBuf {
    repo.join("metadata/1.root.json")
}

#[test]
fn signed_file_is_verified_with_every_check_printed() {
    let repo = interop_repo();
    let file = repo.join(HELLO_SERVED);
    let out = verify(&root_v1(&repo), "artifacts/hello.img", &file, &[]);
    assert_eq!(out.code, 0, "{out:?}");
    for line in [
        "ok  trusted root: version 1",
        "ok  root: version 2 (1 rotation(s) from 1), expires 2099-01-01T00:00:00Z",
        "ok  timestamp: version 1",
        "ok  snapshot: version 1",
        "ok  targets: version 1",
        "ok  target: artifacts/hello.img listed by role release",
        "ok  length: 6144 bytes, as signed",
        "ok  sha256: 28221b77d579c8d9b4f8f4fec6bc0bd47dc6bb4ca036680eaa1534750160f759, as signed",
        "VERIFIED:",
    ] {
        assert!(
            out.stdout.contains(line),
            "missing {line:?}:\n{}",
            out.stdout
        );
    }

    // The same as JSON lines: every check, then the verdict.
    let out = verify(&root_v1(&repo), "artifacts/hello.img", &file, &["--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 9, "{out:?}");
    assert_eq!(lines[7]["check"], "sha256");
    assert_eq!(lines[8]["verdict"], "verified");
    assert_eq!(lines[8]["reason"], Value::Null);
}

#[test]
fn one_changed_byte_is_refused() {
    let repo = interop_repo();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hello.img");
    let mut bytes = std::fs::read(repo.join(HELLO_SERVED)).unwrap();
    bytes[4000] ^= 0x80;
    std::fs::write(&file, &bytes).unwrap();
    let metadata = repo.join("metadata");
    let out = verify(
        &root_v1(&repo),
        "artifacts/hello.img",
        &file,
        &["--metadata", metadata.to_str().unwrap()],
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout
            .contains("REFUSED: artifacts/hello.img: sha256 hash mismatch: signed 28221b77"),
        "{out:?}"
    );
    assert!(!out.stdout.contains("VERIFIED"));
    let out = verify(
        &root_v1(&repo),
        "artifacts/hello.img",
        &file,
        &["--metadata", metadata.to_str().unwrap(), "--json"],
    );
    assert_eq!(out.code, 1, "{out:?}");
    let last: Value = serde_json::from_str(out.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["verdict"], "refused");
    assert!(
        last["reason"]
            .as_str()
            .unwrap()
            .starts_with("artifacts/hello.img: sha256 hash mismatch"),
        "{last}"
    );

    // One byte missing: refused on the length before hashing.
    std::fs::write(&file, &bytes[..6143]).unwrap();
    let out = verify(
        &root_v1(&repo),
        "artifacts/hello.img",
        &file,
        &["--metadata", metadata.to_str().unwrap()],
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout
            .contains("length 6143 differs from the signed length 6144"),
        "{out:?}"
    );
}

#[test]
fn metadata_with_a_wrong_signature_is_refused() {
    let repo = tempfile::tempdir().unwrap();
    copy_dir(&interop_repo(), repo.path());
    let path = repo.path().join("metadata/timestamp.json");
    let mut timestamp: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let sig = timestamp["signatures"][0]["sig"]
        .as_str()
        .unwrap()
        .to_string();
    let flipped = if sig.starts_with('0') { "1" } else { "0" };
    timestamp["signatures"][0]["sig"] = Value::from(format!("{flipped}{}", &sig[1..]));
    std::fs::write(&path, serde_json::to_vec_pretty(&timestamp).unwrap()).unwrap();

    let file = repo.path().join(HELLO_SERVED);
    let out = verify(&root_v1(repo.path()), "artifacts/hello.img", &file, &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout
            .contains("REFUSED: timestamp: 0 valid signature(s) from distinct keys, 1 needed"),
        "{out:?}"
    );
}

#[test]
fn unlisted_target_and_expired_metadata_are_refused() {
    let repo = interop_repo();
    let file = repo.join(HELLO_SERVED);
    let out = verify(&root_v1(&repo), "artifacts/other.img", &file, &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains("not found in any trusted role"),
        "{out:?}"
    );

    let out = verify(
        &root_v1(&repo),
        "artifacts/hello.img",
        &file,
        &["--at", "2099-01-01T00:00:00Z"],
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout
            .contains("REFUSED: root: expired at 2099-01-01T00:00:00Z"),
        "{out:?}"
    );

    let out = verify(
        &root_v1(&repo),
        "artifacts/hello.img",
        Path::new("/nonexistent/file"),
        &[],
    );
    assert_eq!(out.code, 2, "{out:?}");
}

/// An Enigm repository written with `ota-core`: root pinning the release authority, `targets`
/// delegating `release` (terminating, `artifacts/*`) to `release_key`, and one artifact with
/// `custom.enigm` from the real ingest, optionally with another signed BLAKE3.
fn enigm_repo(dir: &Path, artifact: &[u8], release_key: &str, signed_blake3: Option<&str>) {
    use std::collections::BTreeMap;

    use ota_core::chunk::{ChunkingParams, CutChunk, Ingest};
    use ota_core::time::UnixTime;
    use ota_core::tuf::InMemoryKey;
    use ota_core::tuf::metadata::{
        Common, DelegatedRole, Delegations, MetaFile, ReleaseAuthority, RoleKeys, Root, Snapshot,
        TargetFile, Targets, Timestamp, sign_role,
    };
    use sha2::Digest as _;

    let key =
        |name: &str| InMemoryKey::ed25519_from_seed(*blake3::hash(name.as_bytes()).as_bytes());
    let expires = UnixTime(4_070_908_800); // 2099-01-01
    let role_keys = |k: &InMemoryKey| RoleKeys {
        keyids: vec![k.public().key_id()],
        threshold: 1,
        extra: BTreeMap::new(),
    };
    let (root_key, timestamp, snapshot, targets) = (
        key("root"),
        key("timestamp"),
        key("snapshot"),
        key("targets"),
    );
    let (pinned, delegated) = (key("release"), key(release_key));
    let mut keys = BTreeMap::new();
    for k in [&root_key, &timestamp, &snapshot, &targets] {
        keys.insert(k.public().key_id(), k.public());
    }
    let root = Root {
        common: Common::new("root", 1, expires),
        consistent_snapshot: true,
        keys,
        roles: BTreeMap::from([
            ("root".into(), role_keys(&root_key)),
            ("timestamp".into(), role_keys(&timestamp)),
            ("snapshot".into(), role_keys(&snapshot)),
            ("targets".into(), role_keys(&targets)),
        ]),
        release_authority: Some(ReleaseAuthority {
            keys: BTreeMap::from([(pinned.public().key_id(), pinned.public())]),
            keyids: vec![pinned.public().key_id()],
            threshold: 1,
        }),
        extra: BTreeMap::new(),
    };
    let no_sink = |_: CutChunk<'_>| Ok::<(), std::convert::Infallible>(());
    let mut ingest = Ingest::new(ChunkingParams::DEFAULT);
    ingest.update(artifact, no_sink).unwrap();
    let ingested = ingest.finish(no_sink).unwrap();
    let mut enigm = serde_json::to_value(&ingested.chunks).unwrap();
    if let Some(blake3) = signed_blake3 {
        enigm["blake3"] = Value::from(blake3);
    }
    let release = Targets {
        common: Common::new("targets", 1, expires),
        targets: BTreeMap::from([(
            "artifacts/system.img".to_string(),
            TargetFile {
                length: artifact.len() as u64,
                hashes: BTreeMap::from([(
                    "sha256".to_string(),
                    hex::encode(sha2::Sha256::digest(artifact)),
                )]),
                custom: Some(serde_json::json!({ "enigm": enigm })),
                extra: BTreeMap::new(),
            },
        )]),
        delegations: None,
        extra: BTreeMap::new(),
    };
    let top = Targets {
        common: Common::new("targets", 1, expires),
        targets: BTreeMap::new(),
        delegations: Some(Delegations {
            keys: BTreeMap::from([(delegated.public().key_id(), delegated.public())]),
            roles: vec![DelegatedRole {
                name: "release".into(),
                keyids: vec![delegated.public().key_id()],
                threshold: 1,
                terminating: true,
                paths: Some(vec!["artifacts/*".into()]),
                path_hash_prefixes: None,
                extra: BTreeMap::new(),
            }],
            extra: BTreeMap::new(),
        }),
        extra: BTreeMap::new(),
    };
    let snapshot_doc = Snapshot {
        common: Common::new("snapshot", 1, expires),
        meta: BTreeMap::from([
            ("targets.json".to_string(), MetaFile::version(1)),
            ("release.json".to_string(), MetaFile::version(1)),
        ]),
        extra: BTreeMap::new(),
    };
    let snapshot_bytes = sign_role(&snapshot_doc, &[&snapshot]);
    let mut pin = MetaFile::version(1);
    pin.length = Some(snapshot_bytes.len() as u64);
    pin.hashes = Some(BTreeMap::from([(
        "sha256".to_string(),
        hex::encode(sha2::Sha256::digest(&snapshot_bytes)),
    )]));
    let timestamp_doc = Timestamp {
        common: Common::new("timestamp", 1, expires),
        meta: BTreeMap::from([("snapshot.json".to_string(), pin)]),
        extra: BTreeMap::new(),
    };
    for (name, bytes) in [
        ("1.root.json", sign_role(&root, &[&root_key])),
        ("1.targets.json", sign_role(&top, &[&targets])),
        ("1.release.json", sign_role(&release, &[&delegated])),
        ("1.snapshot.json", snapshot_bytes),
        ("timestamp.json", sign_role(&timestamp_doc, &[&timestamp])),
    ] {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

fn artifact() -> Vec<u8> {
    let mut out = vec![0u8; 200_000];
    blake3::Hasher::new()
        .update(b"verify artifact")
        .finalize_xof()
        .fill(&mut out);
    out
}

#[test]
fn enigm_artifact_is_checked_against_its_signed_blake3() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = artifact();
    let file = dir.path().join("system.img");
    std::fs::write(&file, &bytes).unwrap();
    enigm_repo(dir.path(), &bytes, "release", None);
    let root = dir.path().join("1.root.json");
    let out = verify(&root, "artifacts/system.img", &file, &[]);
    assert_eq!(out.code, 0, "{out:?}");
    let blake3 = blake3::hash(&bytes).to_hex().to_string();
    assert!(
        out.stdout
            .contains(&format!("ok  blake3: {blake3}, as signed in custom.enigm")),
        "{out:?}"
    );

    // The release authority signed another BLAKE3 (the SHA-256 still matches): refused.
    let other = blake3::hash(b"another build").to_hex().to_string();
    enigm_repo(dir.path(), &bytes, "release", Some(&other));
    let out = verify(&root, "artifacts/system.img", &file, &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("ok  sha256:"), "{out:?}");
    assert!(
        out.stdout.contains(&format!(
            "REFUSED: artifacts/system.img: blake3 mismatch: signed {other}, file has {blake3}"
        )),
        "{out:?}"
    );
}

#[test]
fn release_delegated_to_a_key_root_does_not_pin_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = artifact();
    let file = dir.path().join("system.img");
    std::fs::write(&file, &bytes).unwrap();
    // The manifest key re-delegates `release` to a key of its own choosing.
    enigm_repo(dir.path(), &bytes, "manifest-key-choice", None);
    let out = verify(
        &dir.path().join("1.root.json"),
        "artifacts/system.img",
        &file,
        &[],
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains(
            "REFUSED: targets: delegation of release does not match the root's release authority"
        ),
        "{out:?}"
    );
}

#[test]
fn a_devices_non_versioned_metadata_directory_is_accepted() {
    // `ota-tuf-client` leaves what a device keeps: root.json (the newest root), timestamp.json,
    // snapshot.json, targets.json, release.json.
    let repo = interop_repo();
    let server = RepoServer::serve(&repo);
    let dir = tempfile::tempdir().unwrap();
    let (metadata, targets) = (dir.path().join("metadata"), dir.path().join("targets"));
    std::fs::create_dir(&metadata).unwrap();
    let client = env!("CARGO_BIN_EXE_ota-tuf-client");
    let md = metadata.to_str().unwrap();
    let init = run(
        client,
        &[
            "--metadata-dir",
            md,
            "init",
            root_v1(&repo).to_str().unwrap(),
        ],
    );
    assert_eq!(init.code, 0, "{init:?}");
    let download = run(
        client,
        &[
            "--metadata-dir",
            md,
            "--metadata-url",
            &server.url("metadata"),
            "--target-name",
            "artifacts/hello.img",
            "--target-base-url",
            &server.url("targets"),
            "--target-dir",
            targets.to_str().unwrap(),
            "download",
        ],
    );
    assert_eq!(download.code, 0, "{download:?}");
    assert!(!metadata.join("2.root.json").exists());

    let file = targets.join("artifacts%2Fhello.img");
    let out = verify(
        &root_v1(&repo),
        "artifacts/hello.img",
        &file,
        &["--metadata", md],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("ok  root: version 2 (1 rotation(s) from 1)"),
        "root.json stands in for 2.root.json: {out:?}"
    );
    assert!(out.stdout.contains("listed by role release"), "{out:?}");
}
