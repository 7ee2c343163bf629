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
    start_peer_as(dir, "peer", fixture, origin, None, true, &[])
}

/// Starts `ota-peer serve` named `name` with `extra` options, fetching from `upstream` (another
/// peer) when given, else from the origin; its node key enrolled as a relay at the origin when
/// `enroll`.
fn start_peer_as(
    dir: &Path,
    name: &str,
    fixture: &OriginFixture,
    origin: &ota_tests::Served,
    upstream: Option<&PeerProc>,
    enroll: bool,
    extra: &[&str],
) -> PeerProc {
    let data = dir.join(name);
    let printed = run_ok(&bin("ota-peer"), &["pin", "--data", data.to_str().unwrap()]);
    let public = printed
        .lines()
        .find_map(|l| l.strip_prefix("public_key "))
        .unwrap()
        .to_string();
    if enroll {
        fixture.origin(&[
            "peer",
            "enroll",
            "--data",
            fixture.data_str(),
            "--public-key",
            &public,
            "--name",
            name,
        ]);
    }
    let ready = dir.join(format!("{name}.ready.json"));
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
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(parent) = upstream {
        command.args(["--upstream", &format!("{}={}", parent.quic, parent.pin)]);
    }
    let mut proc = Proc::spawn(name, &mut command);
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
    // The peer walks the repository once at start, then not for an hour: a release created
    // later is first walked when it is offered (the last part).
    let peer = start_peer_as(
        dir,
        "peer",
        &fixture,
        &origin,
        None,
        true,
        &["--poll-secs", "3600"],
    );
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

    // Attack: a private release created after the peer's walk, offered to the device through
    // the peer, which fetches its chunks for it. The peer walks it on the offer: the attacker
    // gets every one of its chunks `Missing` (without that walk, the peer held them as public
    // and served them all).
    let image = test_image("private system two", 3 << 20);
    std::fs::write(&path, &image).unwrap();
    fixture.release("stable", 2, &[("system", &path)], &["--private", "system"]);
    fixture.promote("stable", 2, &["--stable"]);
    let ids = chunk_ids(&image);
    assert_eq!(peer.stat("offer_walks"), 0);
    run_ok(
        &bin("ota-device"),
        &["boot-check", "--state", through_peer.to_str().unwrap()],
    );
    let out = run(
        &bin("ota-device"),
        &[
            "update",
            "--state",
            through_peer.to_str().unwrap(),
            "--json",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(done["outcome"], "installed", "{done}");
    let installed = std::fs::read(through_peer.join("slots").join("A").join("system.img")).unwrap();
    assert!(installed == image, "release 2: wrong image installed");
    assert_eq!(
        peer.stat("offer_walks"),
        1,
        "release 2 was not walked on its offer"
    );
    let refused_before = peer.stat("private_refused");
    assert_eq!(
        attacker_fetch(&peer.quic, &peer.pin, &ids),
        (0, ids.len()),
        "the peer served the private chunks of a release offered before it walked it"
    );
    assert_eq!(
        peer.stat("private_refused") - refused_before,
        ids.len() as u64
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

/// A device of the test's own: a key enrolled on a channel, a connection to a server, a
/// check-in signed over that connection, then blob requests on the same connection.
struct RawDevice {
    key: ota_core::tuf::InMemoryKey,
    device_key: ota_net::proto::DeviceKey,
}

impl RawDevice {
    fn enrolled(fixture: &OriginFixture, seed: u8, channel: &str) -> Self {
        let key = ota_core::tuf::InMemoryKey::ed25519_from_seed([seed; 32]);
        let public = serde_json::to_value(key.public()).unwrap()["keyval"]["public"]
            .as_str()
            .unwrap()
            .to_string();
        fixture.enroll(&public, channel);
        let mut raw = [0u8; 32];
        hex::decode_to_slice(&public, &mut raw).unwrap();
        Self {
            key,
            device_key: ota_net::proto::DeviceKey(raw),
        }
    }

    /// On one fresh connection to `addr`: checks in (the answer, or the refusal's reason),
    /// then asks for `ids` (served, missing).
    fn check_in_then_fetch(
        &self,
        addr: &str,
        pin: &str,
        ids: &BTreeSet<ChunkId>,
    ) -> (
        Result<ota_core::director::CheckInAnswer, String>,
        (usize, usize),
    ) {
        use ota_net::proto::{SignedKind, SignedRequest, signing_bytes};
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let client = Client::connect(addr.parse().unwrap(), pin.parse().unwrap())
                .await
                .unwrap();
            let nonce = client.challenge().await.unwrap();
            let body =
                serde_json::to_vec(&ota_core::director::CheckIn { installed: None }).unwrap();
            let timestamp = ota_tests::now();
            let message = signing_bytes(
                SignedKind::CheckIn,
                &self.device_key,
                &nonce,
                timestamp,
                &client.channel_binding(),
                &body,
            );
            let mut signature = [0u8; 64];
            signature.copy_from_slice(&self.key.sign(&message));
            let request = SignedRequest {
                device_key: self.device_key,
                nonce,
                timestamp,
                body,
                signature: ota_net::proto::Signature(signature),
            };
            let answer = match client.signed(SignedKind::CheckIn, request).await.unwrap() {
                ota_net::client::Answer::Signed(body) => Ok(serde_json::from_slice(&body).unwrap()),
                ota_net::client::Answer::Refused(refusal) => Err(refusal.reason),
            };
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
            (answer, (served, missing))
        })
    }
}

/// The offered release of a check-in answer (`channel/number`), or the reason for none.
fn offered(answer: &ota_core::director::CheckInAnswer) -> Result<String, String> {
    match answer {
        ota_core::director::CheckInAnswer::Offer(envelope) => Ok(format!(
            "{}/{}",
            envelope["signed"]["channel"].as_str().unwrap(),
            envelope["signed"]["release"]
        )),
        ota_core::director::CheckInAnswer::NoOffer { reason } => Err(reason.clone()),
    }
}

/// Two levels: origin → regional peer → site peer → device. The site peer relays the device's
/// check-in through the regional peer (which re-relays it to the origin naming the site peer as
/// a hop), so every hop on the blob path sees the offer: the origin grants the regional peer's
/// connection, the regional peer the site peer's, the site peer the device's, and the private
/// release installs. Then the attacks, each answered `Missing` and counted: a connection of
/// its own to the regional peer without a check-in; a device offered another release asking
/// the site peer for this release's private chunks on the connection it checked in on; and a
/// site peer that is not enrolled, whose relayed check-ins the enrolled regional peer passes on
/// and the origin refuses (no laundering through an enrolled peer).
#[test]
fn a_private_release_installs_through_two_levels_of_peers_and_only_there() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    let fixture = OriginFixture::new(dir);
    let image = test_image("private system, two levels", 3 << 20);
    let path = dir.join("system.img");
    std::fs::write(&path, &image).unwrap();
    fixture.release("stable", 1, &[("system", &path)], &["--private", "system"]);
    fixture.promote("stable", 1, &["--stable"]);
    let other = test_image("another channel's system", 1 << 20);
    let other_path = dir.join("other.img");
    std::fs::write(&other_path, &other).unwrap();
    fixture.release("beta", 2, &[("system", &other_path)], &[]);
    fixture.promote("beta", 2, &["--stable"]);
    let ids = chunk_ids(&image);

    let origin = fixture.serve_with(&["--admin", "127.0.0.1:0"]);
    // The regional peer prefetches `beta` only: it must still know stable/1's chunks private
    // (it walks every channel for that), or it would serve them to anyone once it held them.
    let regional = start_peer_as(
        dir,
        "regional",
        &fixture,
        &origin,
        None,
        true,
        &["--channel", "beta", "--poll-secs", "1"],
    );
    let site = start_peer_as(dir, "site", &fixture, &origin, Some(&regional), true, &[]);
    let state = device(dir, "through-two", &fixture, &site.quic, &site.pin);

    let done = update(&state);
    assert_eq!(done["outcome"], "installed", "{done}");
    let installed = std::fs::read(state.join("slots").join("B").join("system.img")).unwrap();
    assert!(installed == image, "wrong image installed");
    // Its install report went the same way (site → regional → origin) and was recorded.
    assert_eq!(done["reported"], true, "{done}");
    assert_eq!(origin_metric(&origin, "ota_origin_reports_total"), 1.0);
    assert!(
        site.stat("access_granted") >= 1,
        "the site peer granted the device"
    );
    assert!(
        regional.stat("access_granted") >= 1,
        "the regional peer granted the site peer"
    );
    assert_eq!(regional.stat("relay_refused"), 0);

    // A second site-side connection to the regional peer, without a check-in: Missing for
    // every private chunk, though the regional peer holds them (it served the site peer).
    let before = regional.stat("private_refused");
    assert_eq!(
        attacker_fetch(&regional.quic, &regional.pin, &ids),
        (0, ids.len()),
        "the regional peer served private chunks to a connection without a grant"
    );
    assert_eq!(regional.stat("private_refused") - before, ids.len() as u64);

    // A device offered another release (beta/2) asks the site peer, on the connection its
    // check-in granted, for this release's private chunks: Missing.
    let beta = RawDevice::enrolled(&fixture, 0x6b, "beta");
    let before = site.stat("private_refused");
    let (answer, fetched) = beta.check_in_then_fetch(&site.quic, &site.pin, &ids);
    assert_eq!(offered(&answer.unwrap()), Ok("beta/2".to_string()));
    assert_eq!(
        fetched,
        (0, ids.len()),
        "the site peer served stable/1's private chunks to a connection granted beta/2"
    );
    assert_eq!(site.stat("private_refused") - before, ids.len() as u64);

    // A site peer the origin never enrolled, under the enrolled regional peer: the regional
    // peer passes its relayed check-ins on (it cannot know), the origin refuses them (a hop not
    // enrolled), so nothing is granted anywhere on the way and its device installs nothing.
    let rogue = start_peer_as(
        dir,
        "rogue-site",
        &fixture,
        &origin,
        Some(&regional),
        false,
        &[],
    );
    let victim = RawDevice::enrolled(&fixture, 0x6c, "stable");
    let granted_before = regional.stat("access_granted");
    let (answer, fetched) = victim.check_in_then_fetch(&rogue.quic, &rogue.pin, &ids);
    let reason = answer.expect_err("a check-in through a rogue site peer is refused");
    assert_eq!(reason, "relay not enrolled");
    assert_eq!(regional.stat("access_granted"), granted_before);
    assert_eq!(
        fetched,
        (0, ids.len()),
        "a device of a rogue site peer got private chunks"
    );
}
