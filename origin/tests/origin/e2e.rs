//! `ota-origin` as a real process: keys, init, release create / register / validate /
//! promote, device enrollment, and `serve` answering a device over QUIC — plus every attack
//! on signed requests, each asserting the exact refusal.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ed25519_dalek::Signer as _;
use ota_core::director::{CheckIn, CheckInAnswer, DeviceHandle, Offer, OfferExpectation};
use ota_core::time::UnixTime;
use ota_core::tuf::enigm::ReleaseNumber;
use ota_core::tuf::metadata::{Envelope, Root};
use ota_net::client::{Answer, Client};
use ota_net::proto::{DeviceKey, SignedKind, SignedRequest, signing_bytes};
use ota_net::quic::CertPin;

const BIN: &str = env!("CARGO_BIN_EXE_ota-origin");

fn origin(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run ota-origin")
}

pub(crate) fn ok(args: &[&str]) -> String {
    let out = origin(args);
    assert!(
        out.status.success(),
        "ota-origin {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub(crate) fn refused(args: &[&str]) -> String {
    let out = origin(args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{args:?} should be refused: {out:?}"
    );
    String::from_utf8(out.stderr).unwrap()
}

pub(crate) fn now() -> UnixTime {
    UnixTime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
    )
}

pub(crate) use ota_tests::{Authorities, cosign, make_roots};

/// The ceremony with fixed test keys: the origin's online keys (from `ota-origin keys`) go
/// into root and director root, written to `dir`.
pub(crate) fn ceremony(data: &Path, dir: &Path) -> (Authorities, PathBuf, PathBuf) {
    let online: serde_json::Value =
        serde_json::from_str(&ok(&["keys", "--data", data.to_str().unwrap()])).unwrap();
    let authorities = Authorities::fixed();
    let (root, director_root) = make_roots(&authorities, &online, dir);
    (authorities, root, director_root)
}

pub(crate) fn init(data: &Path, root: &Path, director_root: &Path) {
    ok(&[
        "init",
        "--data",
        data.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
        "--director-root",
        director_root.to_str().unwrap(),
    ]);
}

pub(crate) struct Served {
    child: Child,
    pub(crate) quic: std::net::SocketAddr,
    pub(crate) pin: CertPin,
    pub(crate) http: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn serve(data: &Path) -> Served {
    serve_with_env(data, &[])
}

/// `serve`, with these environment variables set for the server.
pub(crate) fn serve_with_env(data: &Path, env: &[(&str, &std::ffi::OsStr)]) -> Served {
    let ready = data.join("ready.json");
    let _ = std::fs::remove_file(&ready);
    let mut child = Command::new(BIN)
        .envs(env.iter().copied())
        .args(["serve", "--data"])
        .arg(data)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--ready-file",
        ])
        .arg(&ready)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("ota-origin serve exited: {status}");
        }
        if let Ok(text) = std::fs::read_to_string(&ready) {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            return Served {
                child,
                quic: v["quic"].as_str().unwrap().parse().unwrap(),
                pin: v["pin"].as_str().unwrap().parse().unwrap(),
                http: v["http"].as_str().unwrap().to_string(),
            };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("ota-origin serve did not become ready");
}

/// A device: its key, and how it signs requests.
pub(crate) struct Device {
    key: ed25519_dalek::SigningKey,
}

impl Device {
    pub(crate) fn new(seed: u8) -> Self {
        Self {
            key: ed25519_dalek::SigningKey::from_bytes(&[seed; 32]),
        }
    }

    pub(crate) fn public_hex(&self) -> String {
        hex::encode(self.key.verifying_key().as_bytes())
    }

    /// A signed request bound to `client`'s connection.
    pub(crate) fn sign(
        &self,
        client: &Client,
        kind: SignedKind,
        nonce: ota_net::proto::Nonce,
        timestamp: UnixTime,
        body: Vec<u8>,
    ) -> SignedRequest {
        let device_key = DeviceKey(self.key.verifying_key().to_bytes());
        let message = signing_bytes(
            kind,
            &device_key,
            &nonce,
            timestamp,
            &client.channel_binding(),
            &body,
        );
        SignedRequest {
            device_key,
            nonce,
            timestamp,
            body,
            signature: ota_net::proto::Signature(self.key.sign(&message).to_bytes()),
        }
    }
}

pub(crate) fn check_in_body(installed: Option<u64>) -> Vec<u8> {
    serde_json::to_vec(&CheckIn {
        installed: installed.map(ReleaseNumber),
    })
    .unwrap()
}

async fn refusal(client: &Client, request: SignedRequest) -> String {
    match client.signed(SignedKind::CheckIn, request).await.unwrap() {
        Answer::Refused(refusal) => refusal.reason,
        Answer::Signed(body) => panic!("accepted: {}", String::from_utf8_lossy(&body)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_lifecycle_and_signed_requests_over_quic() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("origin");
    let data_s = data.to_str().unwrap();

    // Ceremony: the origin's online keys go into root and director root.
    let (authorities, root, director_root) = ceremony(&data, temp.path());
    init(&data, &root, &director_root);

    // Short-lived timestamps, so that the test sees `serve` re-sign one.
    let config_path = data.join("origin.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    config["timestamp_expiry_secs"] = 8.into();
    std::fs::write(&config_path, serde_json::to_vec(&config).unwrap()).unwrap();

    // A build: 3 MiB of bytes.
    let image = temp.path().join("system.img");
    let mut bytes = vec![0u8; 3 << 20];
    blake3::Hasher::new()
        .update(b"image")
        .finalize_xof()
        .fill(&mut bytes);
    std::fs::write(&image, &bytes).unwrap();
    let create = [
        "release",
        "create",
        "--data",
        data_s,
        "--channel",
        "stable",
        "--release",
        "1",
        "--version",
        "2026.11.1",
        "--model",
        "enigm-one",
    ];
    let artifact = format!("system={}", image.display());
    ok(&[&create[..], &["--artifact", &artifact]].concat());
    // A release number that does not rise is refused.
    let again = refused(&[&create[..], &["--artifact", &artifact]].concat());
    assert!(again.contains("release number 1 does not rise"), "{again}");

    // The authorities sign; register refuses metadata signed by the wrong authority first.
    let requests = data.join("requests/stable/1");
    let (signed_release, signed_targets) = (
        temp.path().join("release.signed"),
        temp.path().join("targets.signed"),
    );
    cosign(
        &requests.join("release.request.json"),
        "release",
        &authorities.targets,
        &signed_release,
    );
    cosign(
        &requests.join("targets.request.json"),
        "targets",
        &authorities.targets,
        &signed_targets,
    );
    let register = |release: &Path, targets: &Path| {
        vec![
            "release".to_string(),
            "register".into(),
            "--data".into(),
            data_s.into(),
            "--channel".into(),
            "stable".into(),
            "--release".into(),
            "1".into(),
            "--signed-release".into(),
            release.display().to_string(),
            "--signed-targets".into(),
            targets.display().to_string(),
        ]
    };
    let args = register(&signed_release, &signed_targets);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let wrong = refused(&args);
    assert!(
        wrong.contains("release: 0 valid signature(s) from distinct keys, 1 needed"),
        "{wrong}"
    );
    cosign(
        &requests.join("release.request.json"),
        "release",
        &authorities.release,
        &signed_release,
    );
    ok(&args);

    let id = ["--data", data_s, "--channel", "stable", "--release", "1"];
    // A draft cannot be promoted before validation.
    let early = refused(&[&["release", "promote"][..], &id, &["--stable"]].concat());
    assert!(
        early.contains("a draft must pass validation first"),
        "{early}"
    );
    let validated = ok(&[&["release", "validate"][..], &id].concat());
    assert!(validated.contains("validated"), "{validated}");
    ok(&[&["release", "promote"][..], &id, &["--stable"]].concat());

    // Devices: one enrolled, one enrolled then revoked, one never enrolled.
    let (good, revoked, stranger) = (Device::new(10), Device::new(11), Device::new(12));
    let handle = ok(&[
        "device",
        "enroll",
        "--data",
        data_s,
        "--public-key",
        &good.public_hex(),
        "--channel",
        "stable",
        "--model",
        "enigm-one",
    ]);
    let handle = DeviceHandle(hex::decode(handle.trim()).unwrap().try_into().unwrap());
    ok(&[
        "device",
        "enroll",
        "--data",
        data_s,
        "--public-key",
        &revoked.public_hex(),
        "--channel",
        "stable",
        "--model",
        "enigm-one",
    ]);
    ok(&[
        "device",
        "revoke",
        "--data",
        data_s,
        "--public-key",
        &revoked.public_hex(),
    ]);

    let served = serve(&data);
    let client = Client::connect(served.quic, served.pin).await.unwrap();

    // The metadata a device needs is served over QUIC.
    let timestamp = client.metadata("timestamp.json", 16 * 1024).await.unwrap();
    assert!(timestamp.is_some());

    // A valid check-in gets an offer that verifies against the director root.
    let nonce = client.challenge().await.unwrap();
    let request = good.sign(
        &client,
        SignedKind::CheckIn,
        nonce,
        now(),
        check_in_body(None),
    );
    let Answer::Signed(body) = client
        .signed(SignedKind::CheckIn, request.clone())
        .await
        .unwrap()
    else {
        panic!("check-in refused")
    };
    let answer: CheckInAnswer = serde_json::from_slice(&body).unwrap();
    let CheckInAnswer::Offer(offer) = answer else {
        panic!("no offer: {answer:?}")
    };
    let director: Root = Envelope::parse(
        "root",
        "d",
        &std::fs::read(&director_root).unwrap(),
        1 << 20,
    )
    .unwrap()
    .role()
    .unwrap();
    let offer = Offer::verify(
        &serde_json::to_vec(&offer).unwrap(),
        &director,
        OfferExpectation {
            handle: &handle,
            nonce: &nonce.0,
            installed: None,
            now: now(),
        },
    )
    .unwrap();
    assert_eq!(offer.release, ReleaseNumber(1));
    assert_eq!(offer.artifacts[0].length, 3 << 20);
    // The chunk index named by the release is served as a blob.
    let index_id: ota_core::digest::ChunkId = {
        let artifacts: serde_json::Value =
            serde_json::from_slice(&std::fs::read(requests.join("artifacts.json")).unwrap())
                .unwrap();
        artifacts[0]["chunks"]["chunk_index"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let mut blobs = client.blobs(vec![index_id], 1 << 20).await.unwrap();
    let (served_id, blob) = blobs.next().await.unwrap().unwrap();
    assert_eq!(served_id, index_id);
    assert_eq!(ota_core::digest::ChunkId::of(&blob.unwrap()), index_id);

    // A stock TUF client (python-tuf's ngclient) refreshes from the running origin's HTTP
    // mirror and downloads and verifies the artifact.
    match std::env::var("OTA_PYTHON") {
        Ok(python) => {
            let script = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../core/testdata/interop/check_with_ngclient.py");
            let out = Command::new(python)
                .arg(script)
                .arg(&root)
                .arg(format!("http://{}/metadata/", served.http))
                .arg(format!("http://{}/targets/", served.http))
                .arg(&offer.artifacts[0].target)
                .arg(&offer.manifest)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "ngclient refused the origin: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(_) if std::env::var_os("OTA_REQUIRE_INTEROP").is_some() => {
            panic!("OTA_REQUIRE_INTEROP is set but OTA_PYTHON is not")
        }
        Err(_) => eprintln!("skipping ngclient: OTA_PYTHON is not set"),
    }

    // Attack: the same signed check-in replayed.
    assert_eq!(
        refusal(&client, request.clone()).await,
        "nonce already used"
    );

    // Attack: a nonce issued on another connection.
    let other = Client::connect(served.quic, served.pin).await.unwrap();
    let foreign_nonce = other.challenge().await.unwrap();
    let request = good.sign(
        &client,
        SignedKind::CheckIn,
        foreign_nonce,
        now(),
        check_in_body(None),
    );
    assert_eq!(
        refusal(&client, request).await,
        "nonce issued on another connection"
    );

    // Attack: a request signed for another connection's binding (relayed).
    let nonce = client.challenge().await.unwrap();
    let relayed = good.sign(
        &other,
        SignedKind::CheckIn,
        nonce,
        now(),
        check_in_body(None),
    );
    assert_eq!(refusal(&client, relayed).await, "bad signature");

    // Attack: a tampered body.
    let nonce = client.challenge().await.unwrap();
    let mut tampered = good.sign(
        &client,
        SignedKind::CheckIn,
        nonce,
        now(),
        check_in_body(None),
    );
    tampered.body = check_in_body(Some(0));
    assert_eq!(refusal(&client, tampered).await, "bad signature");

    // Attack: a stale timestamp.
    let nonce = client.challenge().await.unwrap();
    let stale = good.sign(
        &client,
        SignedKind::CheckIn,
        nonce,
        now().plus_secs(-3600),
        check_in_body(None),
    );
    let reason = refusal(&client, stale).await;
    assert!(
        reason.starts_with("timestamp ") && reason.contains("outside the window"),
        "{reason}"
    );

    // Attack: an unknown device and a revoked one.
    for (device, expected) in [(&stranger, "unknown device"), (&revoked, "revoked device")] {
        let nonce = client.challenge().await.unwrap();
        let request = device.sign(
            &client,
            SignedKind::CheckIn,
            nonce,
            now(),
            check_in_body(None),
        );
        assert_eq!(refusal(&client, request).await, expected);
    }

    // The timestamp is re-signed before it expires (8 s lifetime, refreshed at half-life).
    let version = |bytes: &[u8]| -> u64 {
        let v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
        v["signed"]["version"].as_u64().unwrap()
    };
    let first = version(&timestamp.unwrap());
    let mut refreshed = false;
    for _ in 0..40 {
        let current = client
            .metadata("timestamp.json", 16 * 1024)
            .await
            .unwrap()
            .unwrap();
        if version(&current) > first {
            refreshed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(refreshed, "serve re-signs the timestamp before it expires");

    // Halting stops new offers at once.
    ok(&[
        &["release", "halt"][..],
        &id,
        &["--reason", "field reports"],
    ]
    .concat());
    let nonce = client.challenge().await.unwrap();
    let request = good.sign(
        &client,
        SignedKind::CheckIn,
        nonce,
        now(),
        check_in_body(None),
    );
    let Answer::Signed(body) = client.signed(SignedKind::CheckIn, request).await.unwrap() else {
        panic!("refused")
    };
    assert_eq!(
        serde_json::from_slice::<CheckInAnswer>(&body).unwrap(),
        CheckInAnswer::NoOffer {
            reason: "release rollout halted".into()
        }
    );
    drop(served);

    // Every lifecycle step is in the audit log, and the log verifies.
    let audit = ok(&["audit", "verify", "--data", data_s]);
    assert_eq!(audit.trim(), "audit log intact: 5 entries");
    let log = std::fs::read_to_string(data.join("audit.jsonl")).unwrap();
    let steps: Vec<String> = log
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let d = &v["details"];
            format!(
                "{}:{}",
                d["step"].as_str().unwrap(),
                d["to"]["stage"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            "created:",
            "registered:",
            "stage:validation",
            "stage:stable",
            "stage:halted"
        ]
    );
    // Tampering with an entry is caught.
    let tampered = log.replacen("\"field reports\"", "\"nothing to see\"", 1);
    assert_ne!(tampered, log);
    std::fs::write(data.join("audit.jsonl"), tampered).unwrap();
    let problem = refused(&["audit", "verify", "--data", data_s]);
    assert!(problem.contains("entry 5"), "{problem}");
}

#[test]
fn release_create_refuses_bad_input_and_leaves_nothing() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("origin");
    let data_s = data.to_str().unwrap();
    let (authorities, root, director_root) = ceremony(&data, temp.path());
    // A root that does not list this origin's keys is refused at init.
    let other: serde_json::Value = serde_json::from_str(&ok(&[
        "keys",
        "--data",
        temp.path().join("other").to_str().unwrap(),
    ]))
    .unwrap();
    let (foreign_root, _) = make_roots(&authorities, &other, &temp.path().join("other"));
    let err = refused(&[
        "init",
        "--data",
        data_s,
        "--root",
        foreign_root.to_str().unwrap(),
        "--director-root",
        director_root.to_str().unwrap(),
    ]);
    assert!(
        err.contains("the root does not list this origin's snapshot key"),
        "{err}"
    );
    init(&data, &root, &director_root);
    // An artifact path that does not exist: an environment error, nothing recorded.
    let out = origin(&[
        "release",
        "create",
        "--data",
        data_s,
        "--channel",
        "stable",
        "--release",
        "1",
        "--version",
        "1.0",
        "--model",
        "m",
        "--artifact",
        "system=/nonexistent/system.img",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("artifact /nonexistent/system.img: cannot open"),
        "{stderr}"
    );
    let list = ok(&["release", "list", "--data", data_s]);
    assert!(list.is_empty(), "nothing half-published: {list}");
}

#[test]
fn killed_release_create_leaves_nothing_half_published() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("origin");
    let data_s = data.to_str().unwrap();
    let (_, root, director_root) = ceremony(&data, temp.path());
    init(&data, &root, &director_root);
    let image = temp.path().join("big.img");
    let mut bytes = vec![0u8; 96 << 20];
    blake3::Hasher::new()
        .update(b"big")
        .finalize_xof()
        .fill(&mut bytes);
    std::fs::write(&image, &bytes).unwrap();
    let artifact = format!("system={}", image.display());
    let args = [
        "release",
        "create",
        "--data",
        data_s,
        "--channel",
        "stable",
        "--release",
        "1",
        "--version",
        "1.0",
        "--model",
        "m",
        "--artifact",
        &artifact,
    ];
    // Kill the ingest at several points; each time nothing is recorded.
    for delay_ms in [50, 150, 300] {
        let mut child = Command::new(BIN)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let finished = child.try_wait().unwrap().is_some();
        let _ = child.kill();
        let _ = child.wait();
        let list = ok(&["release", "list", "--data", data_s]);
        if finished {
            break;
        }
        assert!(
            list.is_empty(),
            "killed after {delay_ms} ms, yet recorded: {list}"
        );
    }
    // A retry completes, reusing what the killed runs stored.
    if ok(&["release", "list", "--data", data_s]).is_empty() {
        ok(&args);
    }
    let list = ok(&["release", "list", "--data", data_s]);
    assert!(list.contains("draft"), "{list}");
}

/// `release create --json` and `release validate --json`: progress as JSON lines on stdout,
/// then the result; every line parses, bytes only rise, and the last progress line of a
/// phase is complete.
#[test]
fn release_create_and_validate_report_progress_as_json_lines() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("origin");
    let data_s = data.to_str().unwrap();
    let (authorities, root, director_root) = ceremony(&data, temp.path());
    init(&data, &root, &director_root);
    let image = temp.path().join("system.img");
    let mut bytes = vec![0u8; 5 << 20];
    blake3::Hasher::new()
        .update(b"progress")
        .finalize_xof()
        .fill(&mut bytes);
    std::fs::write(&image, &bytes).unwrap();
    let id = ["--data", data_s, "--channel", "stable", "--release", "1"];
    let artifact = format!("system={}", image.display());
    let lines = |out: &str| -> Vec<serde_json::Value> {
        out.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect()
    };
    let check = |events: &[serde_json::Value], phase: &str, result: &str| {
        let progress: Vec<&serde_json::Value> = events
            .iter()
            .filter(|e| e["event"] == "progress" && e["phase"] == phase)
            .collect();
        assert!(progress.len() > 2, "{events:?}");
        let bytes: Vec<u64> = progress
            .iter()
            .map(|e| e["bytes"].as_u64().unwrap())
            .collect();
        assert!(bytes.windows(2).all(|w| w[0] <= w[1]), "{bytes:?}");
        let last = progress.last().unwrap();
        assert_eq!(last["chunks"], last["total_chunks"], "{last}");
        assert_eq!(events.last().unwrap()["event"], result, "{events:?}");
        last["chunks"].as_u64().unwrap()
    };
    let created = lines(&ok(&[
        &["release", "create"][..],
        &id,
        &["--version", "2026.11.1", "--model", "enigm-one", "--json"],
        &["--artifact", &artifact],
    ]
    .concat()));
    let ingested = check(&created, "ingest", "created");
    let last = created.iter().rfind(|e| e["event"] == "progress").unwrap();
    assert_eq!(last["bytes"], 5 << 20);
    assert_eq!(last["total_bytes"], 5 << 20);
    assert_eq!(last["target"], "artifacts/system-2026.11.1.img");

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
    ok(&[
        &["release", "register"][..],
        &id,
        &["--signed-release", signed_release.to_str().unwrap()],
        &["--signed-targets", signed_targets.to_str().unwrap()],
    ]
    .concat());
    let validated = lines(&ok(
        &[&["release", "validate"][..], &id, &["--json"]].concat()
    ));
    let rehashed = check(&validated, "rehash", "validated");
    assert_eq!(rehashed, ingested, "every blob ingested is re-hashed");
    assert!(
        validated
            .iter()
            .any(|e| e["event"] == "progress" && e["phase"] == "metadata")
    );
    let result = validated.last().unwrap();
    assert_eq!(result["chunks"].as_u64(), Some(rehashed));
    let last_rehash = validated
        .iter()
        .rfind(|e| e["event"] == "progress" && e["phase"] == "rehash")
        .unwrap();
    assert_eq!(result["bytes"], last_rehash["bytes"]);
    // The chunks and the chunk index.
    assert!(result["bytes"].as_u64().unwrap() > 5 << 20, "{result}");
}
