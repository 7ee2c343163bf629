//! `ota-device verify` (the real binary): offline verification of a file against the python-tuf
//! interop repository's signed metadata, for auditors. A good file passes with every check
//! printed; a changed byte, a bad signature, an unlisted target and expired metadata are each
//! refused with the reason.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::conformance::{HELLO_SERVED, Run, copy_dir, interop_repo, run};

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
