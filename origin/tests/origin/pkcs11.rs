//! The origin's online keys on a PKCS#11 token (SoftHSM2): `ota-origin keys --pkcs11`
//! generates them on the token, the ceremony lists their public halves, and a release is
//! published and served with snapshot and timestamp signed by the token; ota-core's Updater,
//! fetching over QUIC from `ota-origin serve`, accepts it. Skipped when SoftHSM2 is missing,
//! unless `OTA_REQUIRE_SOFTHSM` is set.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use ota_core::tuf::client::{Action, Fetched, Limits, TrustedFiles, Updater};
use ota_core::tuf::metadata::Envelope;
use ota_net::client::Client;
use ota_net::proto::MAX_METADATA_LEN;

use crate::e2e::{Authorities, cosign, make_roots, now, serve_with_env};

const BIN: &str = env!("CARGO_BIN_EXE_ota-origin");
const PIN: &str = "4321";

/// SoftHSM2 with a token directory of its own and the token `origin`; `None` (skip) when it is
/// not installed, unless `OTA_REQUIRE_SOFTHSM` is set.
fn softhsm(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let Some(hsm) = ota_tests::softhsm::SoftHsm::find(dir) else {
        assert!(
            std::env::var_os("OTA_REQUIRE_SOFTHSM").is_none(),
            "OTA_REQUIRE_SOFTHSM is set but SoftHSM2 (module and softhsm2-util) is missing; \
             install the Debian package softhsm2"
        );
        eprintln!("skipped: SoftHSM2 is not installed (Debian package softhsm2)");
        return None;
    };
    hsm.init_token("origin", PIN).unwrap();
    Some((hsm.module, hsm.conf))
}

/// Runs `ota-origin` with the token's configuration and PIN; asserts success.
fn ok(conf: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .env("SOFTHSM2_CONF", conf)
        .env("OTA_PKCS11_PIN", PIN)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ota-origin {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_served_with_online_keys_on_a_token() {
    let temp = tempfile::tempdir().unwrap();
    let Some((module, conf)) = softhsm(temp.path()) else {
        return;
    };
    let data = temp.path().join("origin");
    let data_s = data.to_str().unwrap();

    // The online keys are generated on the token; only their URIs are on disk.
    let online: serde_json::Value = serde_json::from_str(&ok(
        &conf,
        &[
            "keys",
            "--data",
            data_s,
            "--pkcs11",
            module.to_str().unwrap(),
            "--token",
            "origin",
        ],
    ))
    .unwrap();
    let recorded: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("keys/online.json")).unwrap()).unwrap();
    for role in ["snapshot", "timestamp", "director", "audit"] {
        let uri = recorded[role].as_str().unwrap();
        assert!(
            uri.starts_with("pkcs11:") && uri.contains(&format!("object=ota-origin-{role}")),
            "{uri}"
        );
        assert!(!uri.contains(PIN), "no PIN in {uri}");
        assert!(
            !data.join(format!("keys/{role}.key")).exists(),
            "{role} has a seed file"
        );
    }
    // Generating again would replace nothing: refused.
    let again = Command::new(BIN)
        .env("SOFTHSM2_CONF", &conf)
        .env("OTA_PKCS11_PIN", PIN)
        .args(["keys", "--data", data_s, "--pkcs11"])
        .arg(&module)
        .args(["--token", "origin"])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("on a token already"));

    // The ceremony lists the token's keys; the origin is initialised and a release goes
    // through create, the authorities' signatures, register, validate and promote.
    let authorities = Authorities::fixed();
    let (root, director_root) = make_roots(&authorities, &online, temp.path());
    ok(
        &conf,
        &[
            "init",
            "--data",
            data_s,
            "--root",
            root.to_str().unwrap(),
            "--director-root",
            director_root.to_str().unwrap(),
        ],
    );
    let image = temp.path().join("system.img");
    let mut bytes = vec![0u8; 1 << 20];
    blake3::Hasher::new()
        .update(b"token image")
        .finalize_xof()
        .fill(&mut bytes);
    std::fs::write(&image, &bytes).unwrap();
    let id = ["--data", data_s, "--channel", "stable", "--release", "1"];
    let artifact = format!("system={}", image.display());
    ok(
        &conf,
        &[
            &["release", "create"][..],
            &id,
            &["--version", "2026.11.1", "--model", "enigm-one"],
            &["--artifact", &artifact],
        ]
        .concat(),
    );
    let requests = data.join("requests/stable/1");
    let (signed_release, signed_targets) = (
        temp.path().join("release.signed"),
        temp.path().join("targets.signed"),
    );
    cosign(
        &requests.join("release.request.json"),
        "release",
        &authorities.release,
        &signed_release,
    );
    cosign(
        &requests.join("targets.request.json"),
        "targets",
        &authorities.targets,
        &signed_targets,
    );
    ok(
        &conf,
        &[
            &["release", "register"][..],
            &id,
            &["--signed-release", signed_release.to_str().unwrap()],
            &["--signed-targets", signed_targets.to_str().unwrap()],
        ]
        .concat(),
    );
    ok(&conf, &[&["release", "validate"][..], &id].concat());
    ok(
        &conf,
        &[&["release", "promote"][..], &id, &["--stable"]].concat(),
    );
    // The audit log is signed by the token's audit key and verifies.
    let audit = ok(&conf, &["audit", "verify", "--data", data_s]);
    assert!(audit.contains("audit log intact"), "{audit}");

    // Served: a device's client workflow, over QUIC, accepts the metadata.
    let env: [(&str, &OsStr); 2] = [
        ("SOFTHSM2_CONF", conf.as_os_str()),
        ("OTA_PKCS11_PIN", OsStr::new(PIN)),
    ];
    let served = serve_with_env(&data, &env);
    let client = Client::connect(served.quic, served.pin).await.unwrap();
    let root_bytes = std::fs::read(&root).unwrap();
    let mut updater =
        Updater::new(Limits::default(), &root_bytes, TrustedFiles::default()).unwrap();
    updater.refresh().unwrap();
    let mut fetched = Vec::new();
    let found = loop {
        match updater.poll_action() {
            Some(Action::Fetch(request)) => {
                let bytes = client
                    .metadata(&request.file, MAX_METADATA_LEN)
                    .await
                    .unwrap();
                fetched.push(request.file.clone());
                let answer = bytes.map_or(Fetched::NotFound, |b| Fetched::Bytes(b.to_vec()));
                updater.handle_fetched(now(), &request, answer).unwrap();
            }
            Some(Action::Refreshed) => updater
                .find_target(now(), "artifacts/system-2026.11.1.img")
                .unwrap(),
            Some(Action::Found(info)) => break info,
            Some(_) => {}
            None => panic!("the client workflow stopped; fetched {fetched:?}"),
        }
    };
    let artifact = found.into_artifact().unwrap();
    assert_eq!(artifact.length(), 1 << 20);
    assert!(fetched.iter().any(|f| f == "timestamp.json"), "{fetched:?}");

    // The timestamp it accepted is signed by the token's timestamp key, the one `keys`
    // printed and the root lists.
    let timestamp = client
        .metadata("timestamp.json", MAX_METADATA_LEN)
        .await
        .unwrap()
        .unwrap();
    let envelope = Envelope::parse("timestamp", "timestamp.json", &timestamp, 1 << 16).unwrap();
    let token_key: ota_core::tuf::Key =
        serde_json::from_value(online["timestamp"].clone()).unwrap();
    assert_eq!(
        envelope
            .signatures()
            .iter()
            .map(|s| s.keyid.clone())
            .collect::<Vec<_>>(),
        vec![token_key.key_id()]
    );
    client.close();
    drop(served);
}
