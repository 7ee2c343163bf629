//! Private content across programs: a real `ota-origin serve` with a release whose artifact
//! is private (`release create --private system`), a real `ota-peer` carrying it, and a real
//! `ota-device` that installs it through the peer (its check-in relayed on the connection it
//! then fetches on). An attacker's client, on connections of its own, gets `Missing` for every
//! private chunk from the peer (which holds them by then) and from the origin, and a 404 from
//! the HTTP mirror, which still serves the metadata saying the artifact is private. Where the
//! channel requires a passed attestation for private content, a device without one gets no
//! offer through the peer (so no grant there either), and an attested one installs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ota_core::chunk::{ChunkingParams, CutChunk, Ingest};
use ota_core::digest::ChunkId;
use ota_net::client::Client;
use ota_net::quic::CertPin;
use ota_tests::{OriginFixture, Proc, bin, http_get, metric, run, run_ok, test_image, wait_ready};
use serde_json::Value;

/// The chunk ids of `image` as `release create` cuts them (without the index).
fn chunk_ids(image: &[u8]) -> BTreeSet<ChunkId> {
    let mut ids = BTreeSet::new();
    let mut sink = |c: CutChunk<'_>| -> Result<(), std::convert::Infallible> {
        ids.insert(*c.id());
        Ok(())
    };
    let mut ingest = Ingest::new(ChunkingParams::DEFAULT);
    ingest.update(image, &mut sink).unwrap();
    ingest.finish(&mut sink).unwrap();
    ids
}

/// Starts `ota-peer serve` with the origin as upstream, its node key enrolled as a relay;
/// returns the process, its QUIC address, pin and metrics base URL.
fn start_peer(dir: &Path, fixture: &OriginFixture, origin: &ota_tests::Served) -> PeerProc {
    let data = dir.join("peer");
    let printed = run_ok(&bin("ota-peer"), &["pin", "--data", data.to_str().unwrap()]);
    let public = printed
        .lines()
        .find_map(|l| l.strip_prefix("public_key "))
        .unwrap()
        .to_string();
    fixture.origin(&[
        "peer",
        "enroll",
        "--data",
        fixture.data_str(),
        "--public-key",
        &public,
        "--name",
        "site",
    ]);
    let ready = dir.join("peer.ready.json");
    let mut command = Command::new(bin("ota-peer"));
    command
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
        ])
        .args(["--data", data.to_str().unwrap()])
        .args([
            "--origin",
            &origin.quic.to_string(),
            "--origin-pin",
            &origin.pin,
        ])
        .args(["--ready-file", ready.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut proc = Proc::spawn("ota-peer serve", &mut command);
    let ready = wait_ready(&mut proc, &ready);
    PeerProc {
        _proc: proc,
        quic: ready["quic"].as_str().unwrap().to_string(),
        pin: ready["pin"].as_str().unwrap().to_string(),
        metrics: format!("http://{}", ready["metrics"].as_str().unwrap()),
    }
}

struct PeerProc {
    _proc: Proc,
    quic: String,
    pin: String,
    metrics: String,
}

impl PeerProc {
    fn stat(&self, name: &str) -> u64 {
        let (status, body) = http_get(&self.metrics, "/stats", &[]).unwrap();
        assert_eq!(status, 200);
        let stats: Value = serde_json::from_slice(&body).unwrap();
        stats[name].as_u64().unwrap()
    }
}

/// A device whose origin is `quic` (the peer's or the origin's address) with `pin`,
/// enrolled on `stable`.
fn device(dir: &Path, name: &str, fixture: &OriginFixture, quic: &str, pin: &str) -> PathBuf {
    let state = dir.join(name);
    let out = run(
        &bin("ota-device"),
        &[
            "init",
            "--state",
            state.to_str().unwrap(),
            "--root",
            fixture.root.to_str().unwrap(),
            "--director-root",
            fixture.director_root.to_str().unwrap(),
            "--origin",
            quic,
            "--origin-pin",
            pin,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let handle = fixture.enroll(&public, "stable");
    run_ok(
        &bin("ota-device"),
        &[
            "enrolled",
            "--state",
            state.to_str().unwrap(),
            "--handle",
            &handle,
        ],
    );
    state
}

/// Asks `addr` for `ids` on a fresh connection of the attacker's: (served, missing).
fn attacker_fetch(addr: &str, pin: &str, ids: &BTreeSet<ChunkId>) -> (usize, usize) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let pin: CertPin = pin.parse().unwrap();
        let client = Client::connect(addr.parse().unwrap(), pin).await.unwrap();
        let mut stream = client
            .blobs(ids.iter().copied().collect(), 1 << 20)
            .await
            .unwrap();
        let (mut served, mut missing) = (0, 0);
        while let Some(item) = stream.next().await {
            match item.unwrap() {
                (_, Some(_)) => served += 1,
                (_, None) => missing += 1,
            }
        }
        client.close();
        (served, missing)
    })
}

fn origin_metric(served: &ota_tests::Served, name: &str) -> f64 {
    let admin = format!("http://{}", served.ready["admin"].as_str().unwrap());
    let (status, text) = http_get(&admin, "/metrics", &[]).unwrap();
    assert_eq!(status, 200);
    metric(&String::from_utf8(text).unwrap(), name).unwrap_or(0.0)
}

#[test]
fn a_private_release_installs_through_the_peer_and_nobody_else_gets_its_chunks() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    let fixture = OriginFixture::new(dir);
    let image = test_image("private system", 3 << 20);
    let path = dir.join("system.img");
    std::fs::write(&path, &image).unwrap();
    fixture.release("stable", 1, &[("system", &path)], &["--private", "system"]);
    fixture.promote("stable", 1, &["--stable"]);
    let ids = chunk_ids(&image);

    let origin = fixture.serve_with(&["--admin", "127.0.0.1:0"]);
    let peer = start_peer(dir, &fixture, &origin);
    let through_peer = device(dir, "through-peer", &fixture, &peer.quic, &peer.pin);
    let direct = device(
        dir,
        "direct",
        &fixture,
        &origin.quic.to_string(),
        &origin.pin,
    );

    // A device installs through the peer: its check-in, relayed by the peer on the device's
    // connection, grants that connection (at the peer) and the peer's connection (at the
    // origin) the release. Another talks to the origin directly and fetches on the connection
    // it checked in on; the peer, given to it as a LAN peer it did not check in through,
    // refuses it the private chunks (though it holds them by then) and the origin serves them.
    let lan_peer = format!("{}={}", peer.quic, peer.pin);
    let mut refused_to_direct = 0;
    for (state, extra) in [
        (&through_peer, &[][..]),
        (&direct, &["--peer", &lan_peer][..]),
    ] {
        let before = peer.stat("private_refused");
        let out = run(
            &bin("ota-device"),
            &[
                &["update", "--state", state.to_str().unwrap(), "--json"][..],
                extra,
            ]
            .concat(),
        );
        refused_to_direct = peer.stat("private_refused") - before;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        let done: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        assert_eq!(done["outcome"], "installed", "{done}");
        let installed = std::fs::read(state.join("slots").join("B").join("system.img")).unwrap();
        assert!(
            installed == image,
            "{}: wrong image installed",
            state.display()
        );
    }
    assert!(peer.stat("access_granted") >= 1);
    assert!(
        refused_to_direct > 0,
        "the LAN peer served private chunks to a device that did not check in through it"
    );

    // The attacker, on connections of its own: Missing everywhere, though the peer holds the
    // chunks (it served them to the device).
    let refused_before = peer.stat("private_refused");
    assert_eq!(
        attacker_fetch(&peer.quic, &peer.pin, &ids),
        (0, ids.len()),
        "the peer served private chunks to a connection without a grant"
    );
    assert_eq!(
        peer.stat("private_refused") - refused_before,
        ids.len() as u64
    );
    let origin_refused = origin_metric(&origin, "ota_origin_private_refused_total");
    assert_eq!(
        attacker_fetch(&origin.quic.to_string(), &origin.pin, &ids),
        (0, ids.len()),
        "the origin served private chunks to a connection without a grant"
    );
    assert_eq!(
        origin_metric(&origin, "ota_origin_private_refused_total") - origin_refused,
        ids.len() as f64
    );

    // The HTTP mirror: 404 for the chunks and the artifact; the metadata says it is private.
    let http = origin.http.clone().unwrap();
    for id in ids.iter().take(5) {
        let (status, _) = http_get(&http, &format!("/chunks/{id}"), &[]).unwrap();
        assert_eq!(status, 404, "mirror served private chunk {id}");
    }
    let (status, _) = http_get(&http, "/targets/artifacts/system-2026.11.1.img", &[]).unwrap();
    assert_eq!(status, 404);
    let (status, body) = http_get(&http, "/metadata/1.release.json", &[]).unwrap();
    assert_eq!(status, 200);
    let release: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        release["signed"]["targets"]["artifacts/system-2026.11.1.img"]["custom"]["enigm"]["private"],
        true
    );
}

/// `ota-device software-ca --out DIR --name NAME`: a test CA whose root the origin trusts.
fn software_ca(dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(name);
    run_ok(
        &bin("ota-device"),
        &[
            "software-ca",
            "--out",
            out.to_str().unwrap(),
            "--name",
            name,
        ],
    );
    out
}

/// `ota-device update --json` through the peer: exit 0, the last JSON line.
fn update(state: &Path) -> Value {
    let out = run(
        &bin("ota-device"),
        &["update", "--state", state.to_str().unwrap(), "--json"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

/// The channel requires a passed attestation for private content: through the peer, a device
/// without one gets no offer (so the peer grants it nothing, even once it holds the chunks),
/// with the reason in its report; an attested device installs.
#[test]
fn private_content_requiring_attestation_is_withheld_through_the_peer() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    let fixture = OriginFixture::new(dir);
    let image = test_image("attested private system", 2 << 20);
    let path = dir.join("system.img");
    std::fs::write(&path, &image).unwrap();
    fixture.release("stable", 1, &[("system", &path)], &["--private", "system"]);
    fixture.promote("stable", 1, &["--stable"]);
    let ca = software_ca(dir, "fleet-ca");
    std::fs::create_dir_all(fixture.data.join("attestation")).unwrap();
    std::fs::copy(
        ca.join("root.pem"),
        fixture.data.join("attestation/roots.pem"),
    )
    .unwrap();
    fixture.set_config(
        "attestation",
        serde_json::json!({
            "roots": "attestation/roots.pem",
            "channels": { "stable": { "private_content": "required" } },
            "requirements": { "models": ["enigm-one"], "max_age_secs": 600 }
        }),
    );
    let origin = fixture.serve_with(&["--admin", "127.0.0.1:0"]);
    let peer = start_peer(dir, &fixture, &origin);
    let plain = device(dir, "plain", &fixture, &peer.quic, &peer.pin);
    let attested = device(dir, "attested", &fixture, &peer.quic, &peer.pin);
    run_ok(
        &bin("ota-device"),
        &[
            "attestation",
            "--state",
            attested.to_str().unwrap(),
            "--provider",
            "software",
            "--software-ca",
            ca.to_str().unwrap(),
        ],
    );

    let reason = "private content requires a passed attestation: eligibility_failure";
    let done = update(&plain);
    assert_eq!(done["outcome"], "no_offer", "{done}");
    assert_eq!(done["reason"], reason, "{done}");

    let done = update(&attested);
    assert_eq!(done["outcome"], "installed", "{done}");
    let installed = std::fs::read(attested.join("slots").join("B").join("system.img")).unwrap();
    assert!(installed == image, "wrong image installed");

    // The peer holds the chunks now; the unattested device is still offered nothing.
    let done = update(&plain);
    assert_eq!(done["outcome"], "no_offer", "{done}");
    assert_eq!(done["reason"], reason, "{done}");
    assert!(origin_metric(&origin, "ota_origin_private_grants_refused_total") >= 2.0);
}
