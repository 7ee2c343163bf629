//! Links that go silent mid-update while every process keeps running: a [`UdpRelay`] stands
//! for the network between a device and its origin, or between a site peer and its origin,
//! and drops every datagram (both directions) once a set number of bytes has crossed it, then
//! comes back. QUIC's TLS session is end to end (the relay's address is dialled with the
//! server's pin), so the programs see nothing but a link that stops carrying anything.
//!
//! - A device whose only source goes silent notices (its requests make no progress for 30 s:
//!   `source_lost`) and waits for it (backing it off and redialling; the update is not given
//!   up while it has a source that may come back, up to its 120 s no-progress limit), keeps
//!   its active slot as it was and its journal's verified chunks, and once the link is back
//!   the same update completes without fetching again what it had verified.
//! - A site peer whose uplink goes silent keeps serving what it holds, logs the stalled
//!   upstream fetch (`--stall-timeout-secs`), answers what it cannot get `Missing` (the
//!   device's update fails cleanly, resumable), and serves the rest once the link is back
//!   (and the fetches it started during the silence have run out their stall bound).
//! - A device whose link to the origin loses one datagram in twenty each way installs the
//!   signed image (QUIC's loss recovery; nothing banned).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ota_core::chunk::{ChunkingParams, CutChunk, Ingest};
use ota_core::digest::ChunkId;
use ota_tests::udp_relay::UdpRelay;
use ota_tests::{OriginFixture, Proc, bin, http_get, run_ok, test_image, wait_ready};
use serde_json::Value;

use crate::attacks::{Dev, published, two_releases};
use crate::faults::{binding, journalled};

/// Each distinct chunk of `image` (as the origin cuts it) with its length, and the length of
/// its chunk index.
fn chunks_of(image: &[u8]) -> (HashMap<ChunkId, u64>, u64) {
    let mut chunks = HashMap::new();
    let mut sink = |c: CutChunk<'_>| -> Result<(), std::convert::Infallible> {
        chunks.insert(*c.id(), c.bytes().len() as u64);
        Ok(())
    };
    let mut ingest = Ingest::new(ChunkingParams::DEFAULT);
    ingest.update(image, &mut sink).unwrap();
    let done = ingest.finish(&mut sink).unwrap();
    (chunks, done.index.len() as u64)
}

#[test]
fn fault_link_to_the_origin_goes_silent_mid_update_the_device_keeps_its_slot_and_resumes() {
    let temp = tempfile::tempdir().unwrap();
    let fixture = OriginFixture::new(temp.path());
    let (_, v2) = two_releases(temp.path(), &fixture, "silent link", (1 << 20, 12 << 20));
    let served = fixture.serve();
    let link = UdpRelay::start(served.quic);
    // The device knows the origin by the link's address (and the origin's own pin).
    let device = Dev::new(
        temp.path(),
        "device",
        &fixture,
        &link.addr.to_string(),
        &served.pin,
        "stable",
    );
    device.update_ok(&[]);
    device.boot_good();
    fixture.promote("stable", 2, &["--stable"]);
    let before = device.active_slot();
    let release2 = binding(&fixture, 2);
    let (chunks, index_len) = chunks_of(&v2);

    // The link dies once 7 MiB of the 12 MiB image has come through (the device has 64
    // chunks, about 4 MiB, in flight at once, all arriving together). The device's requests
    // stall; after 30 s without progress it declares its only source lost and backs it off,
    // waiting for it (its chunks cannot come from anywhere else), not giving the update up.
    link.silence_after_down(7 << 20);
    let mut command = Command::new(bin("ota-device"));
    command
        .args(["update", "--state", device.state_str(), "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut update = Proc::spawn("ota-device update (silent link)", &mut command);
    let stdout = update.child().stdout.take().unwrap();
    let (tx, events) = std::sync::mpsc::channel::<Value>();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let mut lines = Vec::new();
    let lost = loop {
        let event = events
            .recv_timeout(Duration::from_secs(90))
            .unwrap_or_else(|e| panic!("no source_lost within 90 s ({e}): {lines:?}"));
        lines.push(event.clone());
        assert_ne!(
            event["event"], "done",
            "the update ended on a silent link: {event}"
        );
        if event["event"] == "source_lost" {
            break event;
        }
    };
    assert!(
        link.is_silent(),
        "the source was lost before the link went silent: {lost}"
    );
    let noticed = lost["reason"].as_str().unwrap_or_default().to_string();
    assert!(
        noticed.ends_with("made no progress for 30s while reading a response header")
            || noticed.ends_with("made no progress for 30s while reading a blob"),
        "the silent link is noticed as a stall: {lost}"
    );

    // The link still silent and the update still running: the active slot is as it was,
    // nothing is pending, and the journal holds the chunks verified before the link died
    // (some, not all).
    assert!(update.try_wait().is_none(), "the update gave up: {lines:?}");
    assert_eq!(
        device.active_slot(),
        before,
        "a stalled update touched the active slot"
    );
    assert!(device.status()["pending"].is_null());
    let held = journalled(&device, &release2);
    assert!(
        !held.is_empty() && held.len() < chunks.len(),
        "the journal holds part of the image: {} of {}",
        held.len(),
        chunks.len()
    );
    assert!(held.iter().all(|id| chunks.contains_key(id)));
    let dropped = link.dropped();
    assert!(dropped > 0, "the silent link dropped nothing");

    // The link comes back: the same update redials its source after the backoff and
    // completes, without fetching again what it had verified.
    let down_before = link.down_bytes();
    link.restore();
    let status = update.wait_for(Duration::from_secs(120));
    reader.join().unwrap();
    lines.extend(events.try_iter());
    let report = lines.last().cloned().unwrap_or(Value::Null);
    assert!(status.success(), "{status}: {report}");
    assert_eq!(report["outcome"], "installed", "{report}");
    assert_eq!(report["release"], 2, "{report}");
    assert!(
        lines.iter().any(|l| l["event"] == "source_redialled"),
        "the device redialled its source: {lines:?}"
    );
    let status = device.status();
    assert_eq!(status["pending"]["release"], 2, "{status}");
    let other = if status["active"] == "A" { "B" } else { "A" };
    assert!(
        device.image(other, "system").as_deref() == Some(&v2[..]),
        "the pending slot holds the new signed image bit for bit"
    );

    // What crossed the link after it came back is at most what the journal did not hold
    // (its verified chunks were not fetched again), plus framing, the chunk index and the
    // report: 10 % and 256 KiB of slack. QUIC's ~1 % overhead is well inside it; a refetch
    // of what was held (about 3 MiB) is not.
    let missing: u64 = chunks
        .iter()
        .filter(|(id, _)| !held.contains(*id))
        .map(|(_, len)| *len)
        .sum::<u64>()
        + index_len;
    let after = link.down_bytes() - down_before;
    let held_bytes: u64 = held.iter().map(|id| chunks[id]).sum();
    assert!(
        after <= missing + missing / 10 + (256 << 10),
        "{after} bytes crossed the link after it came back; only {missing} were missing"
    );
    // Over the whole update, nothing was fetched twice.
    let image_bytes: u64 = chunks.values().sum();
    let fetched = crate::attacks::kind_bytes(&report, "origin");
    assert!(
        fetched <= image_bytes,
        "{fetched} bytes fetched for a {image_bytes}-byte image: {report}"
    );
    eprintln!(
        "silent link: {noticed:?}, then redialled, after {} datagrams dropped; journal held {} chunks ({held_bytes} \
         bytes) of {}; {after} bytes after the link came back for {missing} missing",
        dropped,
        held.len(),
        chunks.len()
    );
}

/// A running `ota-peer serve` enrolled as a relay, its log in a file.
pub(crate) struct SitePeer {
    _proc: Proc,
    pub(crate) quic: String,
    pub(crate) pin: String,
    metrics: String,
    pub(crate) log: PathBuf,
}

impl SitePeer {
    /// Enrolls the peer and starts it with `origin` (ADDR, PIN) as its origin and `extra`
    /// options, the command first given to `configure`.
    pub(crate) fn start(
        dir: &Path,
        fixture: &OriginFixture,
        origin: (&str, &str),
        extra: &[&str],
        configure: impl FnOnce(&mut Command),
    ) -> Self {
        let data = dir.join("site");
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
        let ready = dir.join("site.ready.json");
        let log = dir.join("site.log");
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
            .args(["--origin", origin.0, "--origin-pin", origin.1])
            .args(["--ready-file", ready.to_str().unwrap()])
            .args(["--metadata-ttl-secs", "1"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        configure(&mut command);
        let mut proc = Proc::spawn("ota-peer serve", &mut command);
        let ready = wait_ready(&mut proc, &ready);
        Self {
            quic: ready["quic"].as_str().unwrap().to_string(),
            pin: ready["pin"].as_str().unwrap().to_string(),
            metrics: format!("http://{}", ready["metrics"].as_str().unwrap()),
            log,
            _proc: proc,
        }
    }

    pub(crate) fn stat(&self, name: &str) -> u64 {
        let (status, body) = http_get(&self.metrics, "/stats", &[]).unwrap();
        assert_eq!(status, 200);
        let stats: Value = serde_json::from_slice(&body).unwrap();
        stats[name].as_u64().unwrap()
    }
}

/// Fetches `ids` from the peer at `quic`/`pin` on a connection of the test's own; returns how
/// many came back and hashed to their ids (a `Missing` counts as not served).
fn served_by(quic: &str, pin: &str, ids: &[ChunkId]) -> usize {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = ota_net::client::Client::connect(quic.parse().unwrap(), pin.parse().unwrap())
            .await
            .unwrap();
        let mut good = 0;
        // One blob per request: a request for blobs of up to the protocol's maximum length.
        for batch in ids.chunks(1) {
            let mut stream = client
                .blobs(batch.to_vec(), ota_net::proto::MAX_BLOB_LEN)
                .await
                .unwrap();
            while let Some(item) = stream.next().await {
                let (id, bytes) = item.unwrap();
                if bytes.is_some_and(|b| ChunkId::of(&b) == id) {
                    good += 1;
                }
            }
        }
        client.close();
        good
    })
}

#[test]
fn fault_peer_uplink_goes_silent_the_peer_serves_what_it_holds_and_recovers() {
    let temp = tempfile::tempdir().unwrap();
    let fixture = OriginFixture::new(temp.path());
    let (v1, v2) = two_releases(temp.path(), &fixture, "silent uplink", (2 << 20, 6 << 20));
    let served = fixture.serve();
    let uplink = UdpRelay::start(served.quic);
    // It holds only what devices walked; a stalled upstream read fails after 2 s.
    let peer = SitePeer::start(
        temp.path(),
        &fixture,
        (&uplink.addr.to_string(), &served.pin),
        &["--no-prefetch", "--stall-timeout-secs", "2"],
        |_| {},
    );
    let device = Dev::new(
        temp.path(),
        "device",
        &fixture,
        &peer.quic,
        &peer.pin,
        "stable",
    );

    // Release 1 through the peer: the peer now holds its chunks.
    device.update_ok(&[]);
    device.boot_good();
    let (v1_chunks, _) = chunks_of(&v1);
    let v1_ids: Vec<ChunkId> = v1_chunks.keys().copied().collect();

    // Release 2: the uplink dies once 2 MiB of its 6 MiB has come through.
    fixture.promote("stable", 2, &["--stable"]);
    let release2 = binding(&fixture, 2);
    let (v2_chunks, v2_index) = chunks_of(&v2);
    let before = device.active_slot();
    uplink.silence_after_down(2 << 20);
    let started = Instant::now();
    let (code, lines, stderr) = device.update(&[]);
    let failed_after = started.elapsed();
    let done = lines.last().cloned().unwrap_or(Value::Null);
    assert!(
        uplink.is_silent(),
        "the update ended before the uplink went silent: {done}"
    );
    assert_eq!(code, 2, "{stderr}\n{done}");
    assert_eq!(done["outcome"], "failed", "{done}");
    assert_eq!(done["error_class"], "download", "{done}");
    let reason = done["reason"].as_str().unwrap_or_default().to_string();
    // The peer answered `Missing` for what its silent uplink did not bring.
    assert!(
        reason.contains("cannot be had from any source still usable"),
        "{done}"
    );
    assert_eq!(
        device.active_slot(),
        before,
        "the failed update touched the active slot"
    );
    assert!(device.status()["pending"].is_null());
    let held = journalled(&device, &release2);
    assert!(
        !held.is_empty() && held.len() < v2_chunks.len(),
        "the journal holds part of release 2: {} of {}",
        held.len(),
        v2_chunks.len()
    );

    // The uplink still silent: the peer serves every chunk of release 1 it holds (to a client
    // of the test's own), logs the stalled upstream fetch and counts it.
    assert_eq!(
        served_by(&peer.quic, &peer.pin, &v1_ids),
        v1_ids.len(),
        "the peer stopped serving what it holds"
    );
    assert!(uplink.is_silent());
    let stalled = |log: &str| {
        log.lines()
            .any(|l| l.contains("upstream fetch failed") && l.contains("made no progress for 2s"))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut log = std::fs::read_to_string(&peer.log).unwrap();
    while !stalled(&log) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        log = std::fs::read_to_string(&peer.log).unwrap();
    }
    assert!(stalled(&log), "the peer logs the stalled upstream:\n{log}");
    assert!(peer.stat("upstream_failures") > 0);

    // The uplink comes back. Upstream fetches the peer started during the silence (for the
    // failed update's requests) still end in their 2 s stall, each answered `Missing`; once
    // its failure count has stayed still for two stall bounds, the next update completes,
    // fetching only what it lacked.
    uplink.restore();
    let mut failures = peer.stat("upstream_failures");
    let mut still_since = Instant::now();
    let settle = Instant::now();
    while still_since.elapsed() < Duration::from_secs(4) {
        assert!(
            settle.elapsed() < Duration::from_secs(60),
            "the peer's upstream keeps failing after the link came back"
        );
        std::thread::sleep(Duration::from_millis(250));
        let now_failures = peer.stat("upstream_failures");
        if now_failures != failures {
            failures = now_failures;
            still_since = Instant::now();
        }
    }
    let report = device.update_ok(&[]);
    assert_eq!(report["release"], 2, "{report}");
    let status = device.status();
    let other = if status["active"] == "A" { "B" } else { "A" };
    assert!(
        device.image(other, "system").as_deref() == Some(&v2[..]),
        "the pending slot holds the new signed image bit for bit"
    );
    let missing: u64 = v2_chunks
        .iter()
        .filter(|(id, _)| !held.contains(*id))
        .map(|(_, len)| *len)
        .sum::<u64>()
        + v2_index;
    let fetched =
        crate::attacks::kind_bytes(&report, "origin") + crate::attacks::kind_bytes(&report, "peer");
    assert!(
        fetched <= missing,
        "{fetched} bytes fetched on resuming; only {missing} were missing: {report}"
    );
    eprintln!(
        "silent uplink: the device failed after {failed_after:?} with {reason:?}; journal held \
         {} of {} chunks; {fetched} bytes fetched on resuming for {missing} missing",
        held.len(),
        v2_chunks.len()
    );
}

#[test]
fn fault_lossy_link_to_the_origin_the_device_installs_the_signed_image() {
    let temp = tempfile::tempdir().unwrap();
    let fixture = OriginFixture::new(temp.path());
    let image = test_image("lossy link", 4 << 20);
    let path = published(temp.path(), "v1.img", &image);
    fixture.release("stable", 1, &[("system", &path)], &[]);
    fixture.promote("stable", 1, &["--stable"]);
    let served = fixture.serve();
    let link = UdpRelay::start(served.quic);
    // One datagram in twenty lost, each way, from the first packet (handshake included).
    link.set_loss(50);
    let device = Dev::new(
        temp.path(),
        "device",
        &fixture,
        &link.addr.to_string(),
        &served.pin,
        "stable",
    );
    let started = Instant::now();
    let report = device.update_ok(&[]);
    let took = started.elapsed();
    assert_eq!(report["release"], 1, "{report}");
    assert!(
        report["banned"].as_object().is_none_or(|b| b.is_empty()),
        "{report}"
    );
    let status = device.status();
    let other = if status["active"] == "A" { "B" } else { "A" };
    assert!(
        device.image(other, "system").as_deref() == Some(&image[..]),
        "the pending slot holds the signed image bit for bit"
    );
    let lost = link.lost();
    assert!(lost > 0, "the link lost nothing");
    eprintln!(
        "lossy link (5 % each way): installed in {took:?}, {lost} datagrams lost, {} bytes down",
        link.down_bytes()
    );
}
