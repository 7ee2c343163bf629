//! `ota-device` against a real `ota-origin serve`, test peers and a dishonest director, all on
//! loopback: updates from the origin alone, from peers honest and hostile, with the origin
//! lost, with the device killed at random points, a delta update, a boot check that reverts,
//! and every refusal of an offer or metadata the device must not accept, each asserting the
//! exact reason and that the active slot was not touched.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ota_core::chunk::{ChunkIndex, ChunkingParams, IndexLimits, Ingest};
use ota_core::digest::ChunkId;
use ota_core::director::{DeviceHandle, Offer, OfferedArtifact};
use ota_core::journal::{self, JournalBinding};
use ota_core::rollout::Stage;
use ota_core::tuf::InMemoryKey;
use ota_core::tuf::enigm::{Channel, ReleaseNumber};
use ota_core::tuf::metadata::{Envelope, Timestamp, sign_role};
use ota_tests::fake_peer::{Breach, FakeDirector, FakePeer, Mode, RawPeer};
use ota_tests::{OriginFixture, Proc, Served, bin, now, run, test_image};
use serde_json::Value;

/// A device's state directory and identity.
struct Device {
    state: PathBuf,
    handle: String,
}

impl Device {
    /// `ota-device init` against `origin` (QUIC address and pin), enrolled at the fixture.
    fn new(
        dir: &Path,
        name: &str,
        fixture: &OriginFixture,
        addr: &str,
        pin: &str,
        http: Option<&str>,
    ) -> Self {
        let state = dir.join(name);
        let mut args = vec![
            "init",
            "--state",
            state.to_str().unwrap(),
            "--root",
            fixture.root.to_str().unwrap(),
            "--director-root",
            fixture.director_root.to_str().unwrap(),
            "--origin",
            addr,
            "--origin-pin",
            pin,
        ];
        if let Some(http) = http {
            args.extend(["--http", http]);
        }
        let out = run(&bin("ota-device"), &args);
        assert!(
            out.status.success(),
            "init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let public = String::from_utf8(out.stdout).unwrap().trim().to_string();
        assert_eq!(public.len(), 64, "init prints the public key: {public}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(state.join("device.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "the device key is private");
        }
        let handle = fixture.enroll(&public, "stable");
        let out = run(
            &bin("ota-device"),
            &[
                "enrolled",
                "--state",
                state.to_str().unwrap(),
                "--handle",
                &handle,
            ],
        );
        assert!(
            out.status.success(),
            "enrolled: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { state, handle }
    }

    fn state_str(&self) -> &str {
        self.state.to_str().unwrap()
    }

    /// `ota-device update --json` with extra arguments; (exit code, JSON lines, stderr).
    fn update(&self, extra: &[&str]) -> (i32, Vec<Value>, String) {
        let args = [
            &["update", "--state", self.state_str(), "--json"][..],
            extra,
        ]
        .concat();
        let out = run(&bin("ota-device"), &args);
        let lines = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (
            out.status.code().unwrap_or(-1),
            lines,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// An update that must install; returns its report (the last JSON line).
    fn update_ok(&self, extra: &[&str]) -> Value {
        let (code, lines, stderr) = self.update(extra);
        assert_eq!(code, 0, "update failed: {stderr}\n{lines:?}");
        let done = lines.last().cloned().unwrap();
        assert_eq!(done["event"], "done");
        assert_eq!(done["outcome"], "installed", "{done}");
        done
    }

    /// An update that must be refused with exit code 1 and `reason` in its message.
    fn update_refused(&self, extra: &[&str], reason: &str) -> Value {
        let before = self.slots();
        let (code, lines, stderr) = self.update(extra);
        assert_eq!(
            code, 1,
            "expected a refusal ({reason}): {stderr}\n{lines:?}"
        );
        assert!(stderr.contains(reason), "expected {reason:?} in: {stderr}");
        let done = lines.last().cloned().unwrap();
        assert_eq!(done["outcome"], "failed");
        assert!(done["reason"].as_str().unwrap().contains(reason), "{done}");
        assert_eq!(
            self.slots(),
            before,
            "a refused update leaves the slots as they were"
        );
        done
    }

    fn slots(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.state.join("slots.json")).unwrap()).unwrap()
    }

    fn image(&self, slot: &str, name: &str) -> Vec<u8> {
        std::fs::read(
            self.state
                .join("slots")
                .join(slot)
                .join(format!("{name}.img")),
        )
        .unwrap()
    }

    fn boot_check(&self, fail: bool) -> (i32, Value) {
        let mut args = vec!["boot-check", "--state", self.state_str(), "--json"];
        if fail {
            args.push("--fail");
        }
        let out = run(&bin("ota-device"), &args);
        let value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("boot-check: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code().unwrap_or(-1), value)
    }

    fn status(&self) -> Value {
        let out = run(
            &bin("ota-device"),
            &["status", "--state", self.state_str(), "--json"],
        );
        assert!(out.status.success());
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

fn published(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn kind_bytes(report: &Value, kind: &str) -> u64 {
    report["bytes_by_kind"][kind].as_u64().unwrap_or(0)
}

fn origin_args(served: &Served) -> (String, String) {
    (served.quic.to_string(), served.pin.clone())
}

#[test]
fn device_updates_from_the_origin_then_by_delta_and_a_failed_boot_check_reverts() {
    let temp = tempfile::tempdir().unwrap();
    let fixture = OriginFixture::new(temp.path());
    let v1 = test_image("device v1", 6 << 20);
    let v1_path = published(temp.path(), "v1.img", &v1);
    fixture.release("stable", 1, &[("system", &v1_path)], &[]);
    fixture.promote("stable", 1, &["--stable"]);
    let served = fixture.serve();
    let (addr, pin) = origin_args(&served);
    let device = Device::new(temp.path(), "device", &fixture, &addr, &pin, None);

    // From the origin alone: every byte from the origin, into slot B, pending its boot check.
    let report = device.update_ok(&[]);
    assert_eq!(report["release"], 1);
    assert_eq!(report["slot"], "B");
    assert_eq!(kind_bytes(&report, "origin"), v1.len() as u64, "{report}");
    assert_eq!(report["reported"], true, "the origin was told");
    assert_eq!(device.image("B", "system"), v1);
    let status = device.status();
    assert_eq!(status["pending"]["release"], 1);
    assert_eq!(
        status["floor"], 0,
        "the floor rises only when the slot is marked good"
    );
    // A second update before the boot check is refused for the environment (exit 2).
    let (code, _, stderr) = device.update(&[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("pending its boot check"), "{stderr}");

    let (code, booted) = device.boot_check(false);
    assert_eq!(code, 0);
    assert_eq!(booted["outcome"], "marked_good");
    assert_eq!(booted["active"], "B");
    assert_eq!(
        booted["floor"], 1,
        "the anti-rollback floor rose with the good boot"
    );

    // Nothing newer: no offer, nothing written.
    let (code, lines, _) = device.update(&[]);
    assert_eq!(code, 0);
    assert_eq!(lines.last().unwrap()["outcome"], "no_offer");

    // Release 2: 5 % of the image changed, in five places.
    let mut v2 = v1.clone();
    let changed = test_image("device v2 changes", v1.len() / 20);
    let piece = changed.len() / 5;
    for i in 0..5 {
        let at = i * (v1.len() / 5) + v1.len() / 11;
        v2[at..at + piece].copy_from_slice(&changed[i * piece..(i + 1) * piece]);
    }
    let v2_path = published(temp.path(), "v2.img", &v2);
    fixture.release("stable", 2, &[("system", &v2_path)], &[]);
    fixture.promote("stable", 2, &["--stable"]);
    let report = device.update_ok(&[]);
    assert_eq!(report["release"], 2);
    assert_eq!(report["slot"], "A");
    assert_eq!(device.image("A", "system"), v2);
    // Bytes fetched against the bytes of the chunks that changed.
    let index = |slot: &str| {
        let bytes =
            std::fs::read(device.state.join("slots").join(slot).join("system.index")).unwrap();
        ChunkIndex::parse(&bytes, IndexLimits::UNBOUNDED).unwrap()
    };
    let (old, new) = (index("B"), index("A"));
    let old_ids: HashSet<ChunkId> = old.entries().iter().map(|e| *e.id()).collect();
    let mut counted = HashSet::new();
    let changed_bytes: u64 = new
        .entries()
        .iter()
        .filter(|e| !old_ids.contains(e.id()) && counted.insert(*e.id()))
        .map(|e| u64::from(e.len()))
        .sum();
    let fetched = kind_bytes(&report, "origin");
    let local = kind_bytes(&report, "local_slot");
    assert!(changed_bytes > 0 && local > 0, "{report}");
    assert!(
        fetched as f64 <= 1.15 * changed_bytes as f64,
        "fetched {fetched} bytes for {changed_bytes} bytes of changed chunks: {report}"
    );
    assert!(
        changed_bytes < v2.len() as u64 / 4,
        "only a small part changed: {changed_bytes}"
    );

    // The new slot fails its health check three times: the old slot is active again.
    let (code, first) = device.boot_check(true);
    assert_eq!(
        (code, first["outcome"]["will_retry"]["tries_left"].clone()),
        (1, 2.into()),
        "{first}"
    );
    let (_, second) = device.boot_check(true);
    assert_eq!(second["outcome"]["will_retry"]["tries_left"], 1, "{second}");
    let (code, third) = device.boot_check(true);
    assert_eq!(code, 1);
    assert_eq!(third["outcome"], "reverted", "{third}");
    let status = device.status();
    assert_eq!(status["active"], "B");
    assert_eq!(status["active_release"], 1);
    assert_eq!(
        status["floor"], 1,
        "a reverted release does not raise the floor"
    );
    assert!(status["pending"].is_null());
    assert_eq!(device.image("B", "system"), v1, "the old slot is intact");
    // The failure is reported to the origin at the next check-in.
    assert!(device.state.join("pending-report.json").exists());
}

#[test]
fn device_uses_peers_and_bans_the_hostile_ones() {
    let temp = tempfile::tempdir().unwrap();
    let fixture = OriginFixture::new(temp.path());
    let image = test_image("peers", 6 << 20);
    let path = published(temp.path(), "system.img", &image);
    fixture.release("stable", 1, &[("system", &path)], &[]);
    fixture.promote("stable", 1, &["--stable"]);
    let served = fixture.serve();
    let (addr, pin) = origin_args(&served);
    let blobs = fixture.data.join("blobs");

    // An honest peer and the origin: the LAN peer is preferred.
    let peer = FakePeer::start(&blobs, Mode::Honest);
    let device = Device::new(
        temp.path(),
        "honest",
        &fixture,
        &addr,
        &pin,
        served.http.as_deref(),
    );
    let report = device.update_ok(&["--peer", &peer.peer_arg()]);
    assert_eq!(device.image("B", "system"), image);
    assert!(
        kind_bytes(&report, "lan_peer") > image.len() as u64 / 2,
        "{report}"
    );
    assert!(report["banned"].as_object().unwrap().is_empty(), "{report}");

    // A peer that corrupts every tenth chunk: the right image, the peer banned and named.
    let corrupt = FakePeer::start(&blobs, Mode::CorruptEveryTenth);
    let device = Device::new(temp.path(), "corrupt", &fixture, &addr, &pin, None);
    let report = device.update_ok(&["--peer", &corrupt.peer_arg()]);
    assert_eq!(device.image("B", "system"), image);
    let name = format!("peer {}", corrupt.addr);
    let reason = report["banned"][&name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} not banned: {report}"));
    assert!(reason.contains("should hash to"), "{reason}");
    assert!(
        kind_bytes(&report, "origin") > 0,
        "the origin filled in: {report}"
    );

    // A peer that withholds everything: all from the origin, nobody banned.
    let withhold = FakePeer::start(&blobs, Mode::Withhold);
    let device = Device::new(temp.path(), "withhold", &fixture, &addr, &pin, None);
    let report = device.update_ok(&["--peer", &withhold.peer_arg()]);
    assert_eq!(device.image("B", "system"), image);
    assert_eq!(
        kind_bytes(&report, "origin"),
        image.len() as u64,
        "{report}"
    );
    assert!(report["banned"].as_object().unwrap().is_empty(), "{report}");

    // A peer whose chunk index claims a billion chunks: refused before parsing, peer banned.
    let forged = FakePeer::start(&blobs, Mode::BillionChunkIndex);
    let device = Device::new(temp.path(), "forged-index", &fixture, &addr, &pin, None);
    let report = device.update_ok(&["--peer", &forged.peer_arg()]);
    assert_eq!(device.image("B", "system"), image);
    let name = format!("peer {}", forged.addr);
    let reason = report["banned"][&name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} not banned: {report}"));
    assert!(reason.contains("served a bad chunk index"), "{reason}");

    // A peer that is not there at all: lost (dialled again after backoffs, in case it
    // comes), the update goes on from the origin.
    let device = Device::new(temp.path(), "unreachable", &fixture, &addr, &pin, None);
    let gone = format!("127.0.0.1:9={}", peer.pin);
    let report = device.update_ok(&["--peer", &gone]);
    assert_eq!(device.image("B", "system"), image);
    let absent = report["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "peer 127.0.0.1:9")
        .cloned()
        .unwrap_or_else(|| panic!("{report}"));
    assert!(absent["lost"].as_u64().unwrap() >= 1, "{absent}");
    assert!(
        absent["last_error"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1:9"),
        "{absent}"
    );
    assert_eq!(absent["bytes"], 0, "{absent}");
    assert!(
        absent["dropped"].is_null() && absent["banned"].is_null(),
        "{absent}"
    );
    assert_eq!(
        kind_bytes(&report, "origin"),
        image.len() as u64,
        "{report}"
    );
}

#[test]
fn device_finishes_from_a_peer_when_the_origin_dies() {
    let temp = tempfile::tempdir().unwrap();
    let fixture = OriginFixture::new(temp.path());
    let image = test_image("origin dies", 6 << 20);
    let path = published(temp.path(), "system.img", &image);
    fixture.release("stable", 1, &[("system", &path)], &[]);
    fixture.promote("stable", 1, &["--stable"]);
    let mut served = fixture.serve();
    let (addr, pin) = origin_args(&served);
    let peer = FakePeer::start(&fixture.data.join("blobs"), Mode::Honest);
    let device = Device::new(temp.path(), "device", &fixture, &addr, &pin, None);

    let mut child = Proc::spawn(
        "ota-device update",
        Command::new(bin("ota-device"))
            .args([
                "update",
                "--state",
                device.state_str(),
                "--json",
                "--peer",
                &peer.peer_arg(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    // Kill the origin as soon as the download starts (check-in, offer and metadata done).
    let stdout = child.child().stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let mut last = Value::Null;
    for line in lines.by_ref() {
        let value: Value = serde_json::from_str(&line.unwrap()).unwrap();
        if value["event"] == "download" {
            served.kill();
        }
        last = value;
        if last["event"] == "done" {
            break;
        }
    }
    let status = child.wait_for(Duration::from_secs(60));
    assert!(status.success(), "{last}");
    assert_eq!(last["outcome"], "installed", "{last}");
    assert_eq!(device.image("B", "system"), image);
    assert_eq!(kind_bytes(&last, "lan_peer"), image.len() as u64, "{last}");
    assert_eq!(last["reported"], false, "the origin is gone");
    assert!(
        device.state.join("pending-report.json").exists(),
        "kept for the next check-in"
    );
}

#[test]
fn device_killed_at_twenty_random_points_resumes_without_refetching() {
    let temp = tempfile::tempdir().unwrap();
    let fixture = OriginFixture::new(temp.path());
    let image = test_image("killed", 64 << 20);
    let path = published(temp.path(), "system.img", &image);
    fixture.release("stable", 1, &[("system", &path)], &[]);
    fixture.promote("stable", 1, &["--stable"]);
    let served = fixture.serve();
    let (addr, pin) = origin_args(&served);
    let peer = FakePeer::start(&fixture.data.join("blobs"), Mode::Honest);
    let device = Device::new(temp.path(), "device", &fixture, &addr, &pin, None);

    // The journal's binding, from what the release signs.
    let artifacts: Value = serde_json::from_slice(
        &std::fs::read(fixture.data.join("requests/stable/1/artifacts.json")).unwrap(),
    )
    .unwrap();
    let artifact = &artifacts[0];
    let binding = JournalBinding::new(
        artifact["target"].as_str().unwrap(),
        &artifact["sha256"].as_str().unwrap().parse().unwrap(),
        &artifact["chunks"]["chunk_tree"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap(),
    );
    let chunks = artifact["chunks"]["chunks"].as_u64().unwrap();
    let index_id: ChunkId = artifact["chunks"]["chunk_index"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let journal_path = device.state.join("journal/system.journal");
    let journalled = || -> HashSet<ChunkId> {
        match std::fs::read(&journal_path) {
            Ok(bytes) => journal::parse(&bytes, &binding, chunks)
                .map(|(records, _)| records.into_iter().map(|r| r.id).collect())
                .unwrap_or_default(),
            Err(_) => HashSet::new(),
        }
    };

    // A fixed seed: the kill points are random but the run is repeatable.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut random = move |max: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % max.max(1)
    };
    let journal_len = || std::fs::metadata(&journal_path).map_or(0, |m| m.len());
    let mut kills = 0;
    let mut finished = false;
    for round in 0..20 {
        let verified_before = journalled();
        let served_before = peer.served_blobs().len();
        let mut child = Proc::spawn(
            "ota-device update",
            Command::new(bin("ota-device"))
                .args([
                    "update",
                    "--state",
                    device.state_str(),
                    "--json",
                    "--peer",
                    &peer.peer_arg(),
                ])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(temp.path().join("update.err")).unwrap()),
        );
        if round % 4 == 3 {
            // Before the download: during check-in, refresh, index or resume.
            let delay = Duration::from_millis(random(300));
            let start = Instant::now();
            while start.elapsed() < delay && child.try_wait().is_none() {
                std::thread::sleep(Duration::from_millis(1));
            }
        } else {
            // During the download: once 1 to 64 more chunks are journalled, then a little later.
            let target = journal_len().max(journal::HEADER_LEN as u64)
                + (1 + random(64)) * journal::RECORD_LEN as u64;
            let start = Instant::now();
            while journal_len() < target
                && child.try_wait().is_none()
                && start.elapsed() < Duration::from_secs(30)
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(random(30)));
        }
        if let Some(status) = child.try_wait() {
            assert!(
                status.success(),
                "a resumed update failed: {status}: {}",
                std::fs::read_to_string(temp.path().join("update.err")).unwrap()
            );
            finished = true;
        } else {
            child.kill();
            kills += 1;
            // Killed after the slot was marked pending, before it exited: the work is done.
            finished = !device.slots()["pending"].is_null();
        }
        let fetched_again: Vec<ChunkId> = peer.served_blobs()[served_before..]
            .iter()
            .filter(|id| **id != index_id && verified_before.contains(id))
            .copied()
            .collect();
        assert!(
            fetched_again.is_empty(),
            "chunks verified before the run were fetched again: {fetched_again:?}"
        );
        if finished {
            break;
        }
    }
    if !finished {
        let verified_before = journalled();
        let served_before = peer.served_blobs().len();
        let report = device.update_ok(&["--peer", &peer.peer_arg()]);
        let resumed = report["artifacts"][0]["resumed_chunks"].as_u64().unwrap();
        assert!(resumed > 0, "the last run resumed: {report}");
        let fetched_again = peer.served_blobs()[served_before..]
            .iter()
            .filter(|id| **id != index_id && verified_before.contains(id))
            .count();
        assert_eq!(fetched_again, 0);
    }
    assert!(kills >= 10, "only {kills} runs were killed mid-way");
    assert_eq!(device.image("B", "system"), image);
    assert_eq!(device.slots()["pending"]["release"], 1);
}

/// The offer the origin would make for release `number` of `stable`, from its ingest record.
fn honest_offer(data: &Path, number: u64, handle: &str, nonce: &[u8; 32]) -> Offer {
    let artifacts: Vec<Value> = serde_json::from_slice(
        &std::fs::read(data.join(format!("requests/stable/{number}/artifacts.json"))).unwrap(),
    )
    .unwrap();
    let mut h = [0u8; 32];
    hex::decode_to_slice(handle, &mut h).unwrap();
    Offer {
        type_: "offer".into(),
        handle: DeviceHandle(h),
        nonce: *nonce,
        issued_at: now(),
        expires: now().plus_secs(600),
        channel: Channel("stable".into()),
        release: ReleaseNumber(number),
        manifest: format!("releases/stable/{number}.json"),
        artifacts: artifacts
            .iter()
            .map(|a| OfferedArtifact {
                target: a["target"].as_str().unwrap().into(),
                length: a["length"].as_u64().unwrap(),
                sha256: a["sha256"].as_str().unwrap().parse().unwrap(),
                blake3: a["chunks"]["blake3"].as_str().unwrap().parse().unwrap(),
                slot: a["slot"].as_str().unwrap().into(),
            })
            .collect(),
        stage: Stage::Stable,
    }
}

fn online_key(fixture: &OriginFixture, name: &str) -> InMemoryKey {
    let text =
        std::fs::read_to_string(fixture.data.join("keys").join(format!("{name}.key"))).unwrap();
    let mut seed = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut seed).unwrap();
    InMemoryKey::ed25519_from_seed(seed)
}

#[test]
fn device_refuses_what_it_must_not_install() {
    let temp = tempfile::tempdir().unwrap();
    let fixture = OriginFixture::new(temp.path());
    let v1 = test_image("refusals v1", 1 << 20);
    let v2 = test_image("refusals v2", 1 << 20);
    let (p1, p2) = (
        published(temp.path(), "v1.img", &v1),
        published(temp.path(), "v2.img", &v2),
    );
    fixture.release("stable", 1, &[("system", &p1)], &[]);
    fixture.release("stable", 2, &[("system", &p2)], &[]);
    let served = fixture.serve();
    let director = FakeDirector::start(served.quic, &served.pin);
    let device = Device::new(
        temp.path(),
        "device",
        &fixture,
        &director.addr.to_string(),
        &director.pin,
        None,
    );
    let key = std::sync::Arc::new(online_key(&fixture, "director"));
    let offer_with = |tamper: fn(&mut Offer)| {
        let (fixture_data, handle, key) =
            (fixture.data.clone(), device.handle.clone(), key.clone());
        move |nonce: &[u8; 32]| {
            let mut offer = honest_offer(&fixture_data, 2, &handle, nonce);
            tamper(&mut offer);
            Some(offer.sign(&[&key]))
        }
    };

    // A release the image repository does not sign.
    director.set_offer(offer_with(|o| {
        o.release = ReleaseNumber(5);
        o.manifest = "releases/stable/5.json".into();
    }));
    let done = device.update_refused(
        &[],
        "the image repository does not sign releases/stable/5.json",
    );
    assert_eq!(done["error_class"], "offer-mismatch");

    // Offered hashes that differ from the repository's.
    director.set_offer(offer_with(|o| {
        o.artifacts[0].sha256 = "00".repeat(32).parse().unwrap()
    }));
    device.update_refused(&[], "offered sha256 0000000000000000");

    // An expired offer.
    director.set_offer(offer_with(|o| {
        o.issued_at = now().plus_secs(-1200);
        o.expires = now().plus_secs(-600);
    }));
    let done = device.update_refused(&[], "offer expired at");
    assert_eq!(done["error_class"], "offer");

    // An offer for another device.
    director.set_offer(offer_with(|o| o.handle = DeviceHandle([7; 32])));
    device.update_refused(&[], "offer is for device 0707070707");

    // An offer that answers another check-in.
    director.set_offer(offer_with(|o| o.nonce = [9; 32]));
    device.update_refused(&[], "offer answers another check-in");

    // An offer not signed by the director's key.
    {
        let (fixture_data, handle) = (fixture.data.clone(), device.handle.clone());
        director.set_offer(move |nonce: &[u8; 32]| {
            Some(
                honest_offer(&fixture_data, 2, &handle, nonce)
                    .sign(&[&InMemoryKey::ed25519_from_seed([42; 32])]),
            )
        });
    }
    device.update_refused(&[], "offer: ");

    // Expired timestamp metadata (a freeze attack), signed with the real timestamp key.
    director.set_offer(offer_with(|_| {}));
    let real = ota_tests::http_get(
        served.http.as_deref().unwrap(),
        "/metadata/timestamp.json",
        &[],
    )
    .unwrap()
    .1;
    let envelope = Envelope::parse("timestamp", "timestamp.json", &real, 1 << 16).unwrap();
    let mut timestamp: Timestamp = envelope.role().unwrap();
    // A newer version than the device holds, validly signed, but expired.
    timestamp.common.version += 1;
    timestamp.common.expires = now().plus_secs(-60);
    director.override_metadata(
        "timestamp.json",
        sign_role(&timestamp, &[&online_key(&fixture, "timestamp")]),
    );
    let done = device.update_refused(&[], "expired");
    assert_eq!(done["error_class"], "metadata");
    director.override_metadata("timestamp.json", real);

    // The honest offer installs (the control), then an older release is refused.
    let report = device.update_ok(&[]);
    assert_eq!(report["release"], 2);
    assert_eq!(device.image("B", "system"), v2);
    assert_eq!(device.boot_check(false).1["outcome"], "marked_good");
    director.set_offer(offer_with(|o| {
        o.release = ReleaseNumber(1);
        o.manifest = "releases/stable/1.json".into();
    }));
    let done = device.update_refused(
        &[],
        "offer of release 1 is not above the installed release 2",
    );
    assert_eq!(done["error_class"], "offer");

    // The last update's refusal is what `status` says.
    let status = device.status();
    assert!(
        status["last_update"]["reason"]
            .as_str()
            .unwrap()
            .contains("not above"),
        "{status}"
    );
    let _: BTreeMap<String, Value> = serde_json::from_value(status).unwrap();
}

/// A small tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// `None` when this machine does not let the test mount (not root).
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let out = run(
            Path::new("mount"),
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                dir.to_str().unwrap(),
            ],
        );
        out.status.success().then(|| Self(dir.to_path_buf()))
    }

    fn resize(&self, size: &str) {
        let out = run(
            Path::new("mount"),
            &[
                "-o",
                &format!("remount,size={size}"),
                self.0.to_str().unwrap(),
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = run(Path::new("umount"), &["-l", self.0.to_str().unwrap()]);
    }
}

#[test]
fn device_survives_bad_input() {
    let temp = tempfile::tempdir().unwrap();
    let fixture = OriginFixture::new(temp.path());
    let image = test_image("bad input", 3 << 20);
    let path = published(temp.path(), "system.img", &image);
    fixture.release("stable", 1, &[("system", &path)], &[]);
    fixture.promote("stable", 1, &["--stable"]);
    let served = fixture.serve();
    let (addr, pin) = origin_args(&served);
    let blobs = fixture.data.join("blobs");

    // A peer that sends more bytes than it announced, and one that announces a chunk longer
    // than the maximum: each banned for breaking the protocol, the update finishes elsewhere.
    for (name, breach, says) in [
        ("oversend", Breach::MoreThanAnnounced, "broke the protocol"),
        ("overlong", Breach::LongerThanMax, "over the"),
    ] {
        let peer = RawPeer::start(&blobs, breach);
        let device = Device::new(temp.path(), name, &fixture, &addr, &pin, None);
        let report = device.update_ok(&["--peer", &peer.peer_arg()]);
        assert_eq!(device.image("B", "system"), image);
        let source = report["sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == format!("peer {}", peer.addr))
            .cloned()
            .unwrap();
        let banned = source["banned"]
            .as_str()
            .unwrap_or_else(|| panic!("{report}"));
        assert!(
            banned.contains("broke the protocol") && banned.contains(says),
            "{banned}"
        );
        assert_eq!(report["banned"][&source["name"].as_str().unwrap()], banned);
        assert_eq!(source["bytes"], 0, "nothing it sent was used: {source}");
    }

    // A missing state directory: a typed error and a report on stdout, exit 2.
    let missing = temp.path().join("no-such-state");
    let out = run(
        &bin("ota-device"),
        &["update", "--state", missing.to_str().unwrap(), "--json"],
    );
    assert_eq!(out.status.code(), Some(2));
    let done: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["error_class"], "state", "{done}");
    assert!(
        done["reason"]
            .as_str()
            .unwrap()
            .contains("not an initialised state directory")
    );

    // A full disk: the update stops with a typed error, the slots as they were; once there
    // is room the next update proceeds (resuming what was written).
    let Some(disk) = Tmpfs::mount(&temp.path().join("small-disk"), "1m") else {
        assert!(
            std::env::var_os("OTA_REQUIRE_MOUNT").is_none(),
            "OTA_REQUIRE_MOUNT is set but tmpfs cannot be mounted"
        );
        eprintln!("skipping the full-disk case: cannot mount a tmpfs (not root)");
        return;
    };
    let device = Device::new(&disk.0, "device", &fixture, &addr, &pin, None);
    let before = device.slots();
    let (code, lines, stderr) = device.update(&[]);
    assert_eq!(code, 2, "{stderr}");
    let done = lines.last().unwrap();
    assert_eq!(done["error_class"], "disk-full", "{done}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert_eq!(device.slots(), before, "the slots are as they were");
    disk.resize("32m");
    device.update_ok(&[]);
    assert_eq!(device.image("B", "system"), image);
}

#[test]
fn device_finds_a_cache_by_discovery() {
    let temp = tempfile::tempdir().unwrap();
    let fixture = OriginFixture::new(temp.path());
    let image = test_image("discovery", 3 << 20);
    let path = published(temp.path(), "system.img", &image);
    fixture.release("stable", 1, &[("system", &path)], &[]);
    fixture.promote("stable", 1, &["--stable"]);
    let served = fixture.serve();
    let (addr, pin) = origin_args(&served);
    let mut peer = FakePeer::start(&fixture.data.join("blobs"), Mode::Honest);
    // On loopback mDNS finds nothing (it runs on the LAN interfaces): the device dials the
    // cache's discovery node, which advertises the cache's QUIC address and pin.
    let node = peer.advertise();
    let device = Device::new(temp.path(), "device", &fixture, &addr, &pin, None);
    let report = device.update_ok(&["--bootstrap", &node, "--discover-wait-ms", "10000"]);
    assert_eq!(device.image("B", "system"), image);
    let name = format!("peer {} (discovered)", peer.addr);
    let cache = report["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} not among the sources: {report}"));
    assert_eq!(cache["kind"], "lan_peer");
    assert!(
        kind_bytes(&report, "lan_peer") > image.len() as u64 / 2,
        "{report}"
    );
}

/// The chunk ids of `image` as the origin cuts it (the default chunking).
fn chunk_ids(image: &[u8]) -> Vec<ChunkId> {
    let mut ids = Vec::new();
    let mut ingest = Ingest::new(ChunkingParams::DEFAULT);
    let mut sink = |c: ota_core::chunk::CutChunk<'_>| {
        ids.push(*c.id());
        Ok::<(), std::convert::Infallible>(())
    };
    ingest.update(image, &mut sink).unwrap();
    ingest.finish(&mut sink).unwrap();
    ids
}

#[test]
fn device_installs_a_release_of_several_artifacts_all_or_nothing() {
    let temp = tempfile::tempdir().unwrap();
    let fixture = OriginFixture::new(temp.path());
    let images = |tag: &str| {
        [
            (
                "system",
                test_image(&format!("bundle {tag} system"), 2 << 20),
            ),
            ("boot", test_image(&format!("bundle {tag} boot"), 512 << 10)),
            (
                "vendor",
                test_image(&format!("bundle {tag} vendor"), 1 << 20),
            ),
        ]
    };
    let release = |number: u64, images: &[(&str, Vec<u8>)]| {
        let paths: Vec<(&str, PathBuf)> = images
            .iter()
            .map(|(name, bytes)| {
                let file = format!("{name}-{number}.img");
                (*name, published(temp.path(), &file, bytes))
            })
            .collect();
        let artifacts: Vec<(&str, &Path)> = paths.iter().map(|(n, p)| (*n, p.as_path())).collect();
        fixture.release("stable", number, &artifacts, &[]);
        fixture.promote("stable", number, &["--stable"]);
    };
    let v1 = images("v1");
    release(1, &v1);
    let served = fixture.serve();
    let (addr, pin) = origin_args(&served);
    let device = crate::attacks::Dev::new(temp.path(), "device", &fixture, &addr, &pin, "stable");
    let report = device.update_ok(&[]);
    assert_eq!(report["release"], 1);
    assert_eq!(report["artifacts"].as_array().unwrap().len(), 3, "{report}");
    device.boot_good();
    for (name, bytes) in &v1 {
        assert_eq!(device.image("B", name).as_ref(), Some(bytes), "{name}");
    }

    // Release 2: one chunk of its boot image is withheld everywhere (the only source, the
    // origin, lost it). The other artifacts download, but nothing is installed.
    let v2 = images("v2");
    release(2, &v2);
    let boot_ids = chunk_ids(&v2[1].1);
    let others: HashSet<ChunkId> = [&v2[0].1, &v2[2].1]
        .iter()
        .flat_map(|image| chunk_ids(image))
        .collect();
    let withheld = boot_ids[boot_ids.len() / 2];
    assert!(!others.contains(&withheld));
    let blob = ota_tests::fake_peer::blob_path(&fixture.data.join("blobs"), &withheld);
    let before = device.active_slot();

    // First the chunk is corrupt everywhere: on the origin's disk (its store checks a blob
    // before serving it, so it withholds this one) and at a peer that serves it as stored
    // (banned for the update and named). Nothing is installed.
    let good = std::fs::read(&blob).unwrap();
    let mut bad = good.clone();
    bad[0] ^= 0xff;
    std::fs::write(&blob, &bad).unwrap();
    let peer = FakePeer::start(&fixture.data.join("blobs"), Mode::Honest);
    let (code, lines, stderr) = device.update(&["--peer", &peer.peer_arg()]);
    let done = lines.last().cloned().unwrap_or(Value::Null);
    assert_eq!(code, 2, "{stderr}\n{done}");
    assert_eq!(done["outcome"], "failed", "{done}");
    assert_eq!(
        done["reason"],
        format!("chunk {withheld} cannot be had from any source still usable"),
        "{done}"
    );
    let name = format!("peer {}", peer.addr);
    let banned = done["banned"][&name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} not banned: {done}"));
    assert!(banned.contains("should hash to"), "{banned}");
    assert_eq!(device.active_slot(), before, "the active slot is untouched");
    assert!(device.status()["pending"].is_null());
    drop(peer);
    std::fs::write(&blob, &good).unwrap();

    // Then withheld everywhere (the only source lost it).
    let aside = blob.with_extension("aside");
    std::fs::rename(&blob, &aside).unwrap();
    let (code, lines, stderr) = device.update(&[]);
    let done = lines.last().cloned().unwrap_or(Value::Null);
    assert_eq!(code, 2, "{stderr}\n{done}");
    assert_eq!(done["outcome"], "failed", "{done}");
    assert_eq!(
        done["reason"],
        format!("chunk {withheld} cannot be had from any source still usable"),
        "{done}"
    );
    assert_eq!(device.active_slot(), before, "the active slot is untouched");
    let status = device.status();
    assert!(status["pending"].is_null(), "nothing pending: {status}");
    assert_eq!(status["active_release"], 1, "{status}");
    assert!(
        device.image("A", "boot").as_ref() != Some(&v2[1].1),
        "the boot image is not whole"
    );

    // Served again: all three installed together (the chunks written before are resumed).
    std::fs::rename(&aside, &blob).unwrap();
    let report = device.update_ok(&[]);
    assert_eq!(report["release"], 2);
    assert_eq!(report["slot"], "A");
    let resumed: u64 = report["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["resumed_bytes"].as_u64().unwrap())
        .sum();
    assert!(resumed > 0, "the first run's chunks were kept: {report}");
    for (name, bytes) in &v2 {
        assert_eq!(device.image("A", name).as_ref(), Some(bytes), "{name}");
    }
    assert_eq!(device.status()["pending"]["release"], 2);
}

/// A loopback UDP address nobody listens on (the OS's pick, released).
fn free_udp_addr() -> std::net::SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[test]
fn device_redials_an_origin_restarted_mid_download_and_finishes_from_it() {
    let temp = tempfile::tempdir().unwrap();
    let fixture = OriginFixture::new(temp.path());
    let image = test_image("origin restarts", 6 << 20);
    let path = published(temp.path(), "system.img", &image);
    fixture.release("stable", 1, &[("system", &path)], &[]);
    fixture.promote("stable", 1, &["--stable"]);
    let quic = free_udp_addr();
    let log = temp.path().join("origin.log");
    let mut origin = crate::faults::OriginProc::start(&fixture, quic, &log);
    let pin = origin.pin.clone();
    let device = Device::new(
        temp.path(),
        "device",
        &fixture,
        &quic.to_string(),
        &pin,
        None,
    );

    let mut child = Proc::spawn(
        "ota-device update",
        Command::new(bin("ota-device"))
            .args(["update", "--state", device.state_str(), "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    // The origin, the only source, is killed as the download starts and restarted on the
    // same address (same key) a second later: its old connection is dead.
    let stdout = child.child().stdout.take().unwrap();
    let lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let mut last = Value::Null;
    let mut events = Vec::new();
    let mut done_at_redial = None;
    let mut done = 0;
    for line in lines {
        let value: Value = serde_json::from_str(&line.unwrap()).unwrap();
        match value["event"].as_str() {
            Some("download") => {
                origin.proc.kill();
                std::thread::sleep(Duration::from_secs(1));
                origin = crate::faults::OriginProc::start(&fixture, quic, &log);
                assert_eq!(origin.pin, pin, "the same origin");
            }
            Some("progress") => done = value["done"].as_u64().unwrap(),
            Some("source_redialled") => {
                done_at_redial.get_or_insert(done);
            }
            _ => {}
        }
        if let Some(event) = value["event"].as_str() {
            events.push(event.to_string());
        }
        last = value;
        if last["event"] == "done" {
            break;
        }
    }
    let status = child.wait_for(Duration::from_secs(150));
    assert!(status.success(), "{last}");
    assert_eq!(last["outcome"], "installed", "{last}");
    assert_eq!(device.image("B", "system"), image);
    assert_eq!(kind_bytes(&last, "origin"), image.len() as u64, "{last}");
    let origin_use = last["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "origin")
        .cloned()
        .unwrap();
    assert!(origin_use["lost"].as_u64().unwrap() >= 1, "{origin_use}");
    assert!(origin_use["redials"].as_u64().unwrap() >= 1, "{origin_use}");
    assert!(origin_use["dropped"].is_null() && origin_use["banned"].is_null());
    // The connection was lost, then dialled again, and most of the image came after that.
    let lost = events.iter().position(|e| e == "source_lost");
    let redialled = events.iter().position(|e| e == "source_redialled");
    assert!(
        matches!((lost, redialled), (Some(l), Some(r)) if l < r),
        "{events:?}"
    );
    let before = done_at_redial.unwrap();
    assert!(
        before < image.len() as u64 / 2,
        "{before} bytes verified before the redial: {events:?}"
    );
}

/// A site's peer is down when the update starts and comes up as the download begins: the
/// device waits for it a second at most, starts from the origin, goes on dialling the peer in
/// the background and hands over to it once connected. (It used to wait the full connect
/// timeout at the start, then a backoff: on a fast machine the origin had finished first.)
#[test]
fn device_starts_from_the_origin_and_hands_over_to_a_peer_that_appears() {
    let temp = tempfile::tempdir().unwrap();
    let fixture = OriginFixture::new(temp.path());
    let image = test_image("handover", 160 << 20);
    let path = published(temp.path(), "system.img", &image);
    fixture.release("stable", 1, &[("system", &path)], &[]);
    fixture.promote("stable", 1, &["--stable"]);
    let served = fixture.serve();
    let (addr, pin) = origin_args(&served);
    let device = Device::new(temp.path(), "device", &fixture, &addr, &pin, None);

    // The site's peer: its address and pin known, but not running when the update starts.
    let peer_data = temp.path().join("site-peer");
    let printed = ota_tests::run_ok(
        &bin("ota-peer"),
        &["pin", "--data", peer_data.to_str().unwrap()],
    );
    let peer_pin = printed
        .lines()
        .find_map(|l| l.strip_prefix("pin "))
        .unwrap()
        .to_string();
    let peer_addr = free_udp_addr();
    let peer_name = format!("peer {peer_addr}");
    let mut child = Proc::spawn(
        "ota-device update",
        Command::new(bin("ota-device"))
            .args(["update", "--state", device.state_str(), "--json"])
            .args(["--peer", &format!("{peer_addr}={peer_pin}")])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let stdout = child.child().stdout.take().unwrap();
    let lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let mut last = Value::Null;
    let mut peer = None;
    // Progress before the peer delivered anything (from the origin alone), then with it.
    let (mut origin_alone, mut with_peer) = (0u64, 0u64);
    let mut lost_reasons = Vec::new();
    for line in lines {
        let value: Value = serde_json::from_str(&line.unwrap()).unwrap();
        match value["event"].as_str() {
            Some("source_lost") => lost_reasons.push(value["reason"].to_string()),
            Some("download") => {
                // The download starts from the origin alone; the peer comes up now.
                peer = Some(crate::attacks::PeerProc::start(
                    temp.path(),
                    "site-peer",
                    &fixture,
                    (&addr, &pin),
                    &peer_addr.to_string(),
                    &temp.path().join("peer.log"),
                ));
            }
            Some("progress") => {
                let (origin, lan) = (kind_bytes(&value, "origin"), kind_bytes(&value, "lan_peer"));
                if lan == 0 {
                    origin_alone = origin_alone.max(origin);
                } else {
                    with_peer = with_peer.max(lan);
                }
            }
            _ => {}
        }
        last = value;
        if last["event"] == "done" {
            break;
        }
    }
    let status = child.wait_for(Duration::from_secs(120));
    assert!(status.success(), "{last}");
    assert!(peer.is_some(), "the download started");
    assert_eq!(last["outcome"], "installed", "{last}");
    assert_eq!(device.image("B", "system"), image);
    let (origin, lan) = (kind_bytes(&last, "origin"), kind_bytes(&last, "lan_peer"));
    assert_eq!(origin + lan, image.len() as u64, "{last}");
    assert!(
        origin_alone > 0 && with_peer > 0,
        "the origin alone first, then the peer: {origin_alone} then {with_peer}: {last}"
    );
    assert!(lan > 0 && origin > 0, "{last}");
    eprintln!("handover: {origin} bytes from the origin, then {lan} from the peer");
    let used = last["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == peer_name)
        .cloned()
        .unwrap_or_else(|| panic!("{last}"));
    assert!(
        used["lost"].as_u64().unwrap() >= 1,
        "unreachable at the start: {used}"
    );
    // Not reached at the start, the peer held the update up for a second only (not the full
    // connect timeout), then was dialled on in the background.
    assert!(
        lost_reasons
            .iter()
            .any(|r| r.contains(&peer_addr.to_string())
                && r.contains("made no progress for 1s while connecting at the start")),
        "{lost_reasons:?}"
    );
    assert!(
        used["redials"].as_u64().unwrap() >= 1,
        "dialled once up: {used}"
    );
    assert_eq!(used["bytes"].as_u64().unwrap(), lan, "{used}");
}
