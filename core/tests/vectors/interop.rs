//! Interoperability with python-tuf, the reference implementation.
//!
//! - A repository written by python-tuf's Metadata API (`core/testdata/interop/python-tuf-repo`,
//!   made by `make_python_tuf_repo.py`: root rotation, mixed Ed25519/ECDSA keys, a terminating
//!   `release` delegation, our root extension) is accepted by our client workflow.
//! - Metadata written by `ota-core` is accepted by python-tuf's `ngclient` (run through
//!   `check_with_ngclient.py` with the interpreter in `OTA_PYTHON`; `scripts/test` installs it
//!   and sets `OTA_REQUIRE_INTEROP`, so in CI the test cannot silently skip).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use ota_core::tuf::client::{Action, Fetched, Limits, TrustedFiles, Updater};

use super::repo::{ARTIFACT, NOW, Repo};

fn interop_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/interop"))
}

/// Refresh from `metadata`, look up `target` and check the bytes in `targets`.
fn fetch_and_verify(
    root: &[u8],
    metadata: &dyn Fn(&str) -> Option<Vec<u8>>,
    targets: &dyn Fn(&str) -> Option<Vec<u8>>,
    names: &[&str],
) -> Result<(u64, Vec<String>), String> {
    let mut updater = Updater::new(Limits::default(), root, TrustedFiles::default())
        .map_err(|e| e.to_string())?;
    updater.refresh().map_err(|e| e.to_string())?;
    let mut roles = Vec::new();
    let mut pending: Vec<&str> = names.iter().rev().copied().collect();
    loop {
        match updater.poll_action() {
            Some(Action::Fetch(request)) => {
                let fetched = metadata(&request.file).map_or(Fetched::NotFound, Fetched::Bytes);
                updater
                    .handle_fetched(NOW, &request, fetched)
                    .map_err(|e| e.to_string())?;
            }
            Some(Action::Found(info)) => {
                let bytes = targets(&info.download_path())
                    .ok_or_else(|| format!("{} missing", info.download_path()))?;
                info.verify_bytes(&bytes).map_err(|e| e.to_string())?;
                roles.push(format!("{} in {}", info.path(), info.role()));
                let Some(next) = pending.pop() else { break };
                updater.find_target(NOW, next).map_err(|e| e.to_string())?;
            }
            Some(Action::Refreshed) => {
                let Some(next) = pending.pop() else { break };
                updater.find_target(NOW, next).map_err(|e| e.to_string())?;
            }
            Some(_) => {}
            None => return Err("updater stopped without an outcome".into()),
        }
    }
    Ok((updater.root().common.version, roles))
}

#[test]
fn python_tuf_repository_is_accepted() {
    let repo = interop_dir().join("python-tuf-repo");
    let root = std::fs::read(repo.join("metadata/1.root.json")).unwrap();
    let metadata = |name: &str| std::fs::read(repo.join("metadata").join(name)).ok();
    let targets = |name: &str| std::fs::read(repo.join("targets").join(name)).ok();
    let (root_version, found) = fetch_and_verify(
        &root,
        &metadata,
        &targets,
        &["releases/stable/1.json", "artifacts/hello.img"],
    )
    .unwrap();
    assert_eq!(
        root_version, 2,
        "python-tuf's root rotation v1 -> v2 is followed"
    );
    assert_eq!(
        found,
        [
            "releases/stable/1.json in targets",
            "artifacts/hello.img in release"
        ]
    );
}

#[test]
fn python_tuf_repository_with_tampered_target_is_refused() {
    let repo = interop_dir().join("python-tuf-repo");
    let root = std::fs::read(repo.join("metadata/1.root.json")).unwrap();
    let metadata = |name: &str| std::fs::read(repo.join("metadata").join(name)).ok();
    let targets = |name: &str| {
        let mut bytes = std::fs::read(repo.join("targets").join(name)).ok()?;
        bytes[0] ^= 1;
        Some(bytes)
    };
    let err = fetch_and_verify(&root, &metadata, &targets, &["artifacts/hello.img"]).unwrap_err();
    assert_eq!(err, "artifacts/hello.img: sha256 hash mismatch");
}

/// Write a repository in the standard TUF layout.
fn write_layout(
    dir: &Path,
    metadata: &BTreeMap<String, Vec<u8>>,
    targets: &BTreeMap<String, Vec<u8>>,
) {
    std::fs::create_dir_all(dir.join("metadata")).unwrap();
    for (name, bytes) in metadata {
        std::fs::write(dir.join("metadata").join(name), bytes).unwrap();
    }
    for (path, bytes) in targets {
        let file = dir.join("targets").join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, bytes).unwrap();
    }
}

fn python() -> Option<String> {
    match std::env::var("OTA_PYTHON") {
        Ok(p) => Some(p),
        Err(_) if std::env::var_os("OTA_REQUIRE_INTEROP").is_some() => {
            panic!("OTA_REQUIRE_INTEROP is set but OTA_PYTHON is not")
        }
        Err(_) => {
            eprintln!("skipping: OTA_PYTHON is not set (scripts/test sets it)");
            None
        }
    }
}

#[test]
fn our_repository_loads_in_python_tuf() {
    let Some(python) = python() else { return };
    let repo = Repo::standard();
    let dir = std::env::temp_dir().join(format!("ota-interop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut targets = repo.targets_dir.clone();
    let manifest = br#"{"channel":"stable","release":1}"#;
    targets.insert(
        format!(
            "releases/stable/{}.1.json",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(manifest))
        ),
        manifest.to_vec(),
    );
    write_layout(&dir, &repo.metadata, &targets);
    let output = Command::new(python)
        .arg(interop_dir().join("check_with_ngclient.py"))
        .arg(dir.join("metadata/1.root.json"))
        .arg(dir.join("metadata"))
        .arg(dir.join("targets"))
        .arg("releases/stable/1.json")
        .arg(ARTIFACT)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "python-tuf refused our repository:\n{stdout}\n{stderr}"
    );
}
