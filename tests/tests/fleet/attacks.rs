//! The attack suite: each test plays one attacker (a mirror or man-in-the-middle rewriting or
//! replaying metadata, a thief holding online keys, a hostile LAN peer speaking `enigm-ota/1`)
//! against real `ota-origin`, `ota-peer` and `ota-device` processes on loopback, and asserts
//! that the device refuses with the documented reason and that its active slot (bytes and
//! `status --json`) is exactly as it was. Attacks already mounted by `device.rs`, `peer.rs`
//! and the origin's end-to-end tests are not repeated here; docs/THREAT-MODEL.md maps them.
//!
//! Every test starts from a device with release 1 installed and marked good (so there is an
//! active image to protect), then mounts its attack with release 2, and most end with the
//! honest control: with the attacker gone (or honest), the same device installs release 2.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ota_core::digest::ChunkId;
use ota_core::director::{DeviceHandle, Offer, OfferedArtifact};
use ota_core::rollout::Stage;
use ota_core::tuf::InMemoryKey;
use ota_core::tuf::enigm::{Channel, ReleaseNumber};
use ota_core::tuf::metadata::{Envelope, Role, Snapshot, Targets, Timestamp, sign_role};
use ota_net::proto::{Nonce, Refusal, SignedKind, SignedRequest};
use ota_net::quic::{Identity, NodeKey};
use ota_net::server::{ConnInfo, Handler, Server, ServerConfig};
use ota_tests::fake_peer::{Breach, FakeDirector, RawPeer, blob_path};
use ota_tests::{
    OriginFixture, Proc, Served, bin, http_get, now, run, run_ok, test_image, wait_ready,
};
use serde_json::Value;

/// A device's state directory and identity, driven through the `ota-device` binary.
pub(crate) struct Dev {
    pub(crate) state: PathBuf,
    pub(crate) handle: String,
    pub(crate) public: String,
}

/// What must not change when an update is refused: `slots.json`, the status fields about
/// slots, and every file of the active slot.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ActiveSlot {
    slots: Value,
    status: Value,
    files: BTreeMap<String, Vec<u8>>,
}

impl Dev {
    /// `ota-device init` against ADDR/PIN, enrolled on `channel`.
    pub(crate) fn new(
        dir: &Path,
        name: &str,
        fixture: &OriginFixture,
        addr: &str,
        pin: &str,
        channel: &str,
    ) -> Self {
        let state = dir.join(name);
        let public = run_ok(
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
                addr,
                "--origin-pin",
                pin,
            ],
        )
        .trim()
        .to_string();
        assert_eq!(public.len(), 64, "init prints the public key: {public}");
        let handle = fixture.origin(&[
            "device",
            "enroll",
            "--data",
            fixture.data_str(),
            "--public-key",
            &public,
            "--channel",
            channel,
            "--model",
            &fixture.model,
        ]);
        let handle = handle.trim().to_string();
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
        Self {
            state,
            handle,
            public,
        }
    }

    pub(crate) fn state_str(&self) -> &str {
        self.state.to_str().unwrap()
    }

    /// `ota-device update --json` with extra arguments: (exit code, JSON lines, stderr).
    pub(crate) fn update(&self, extra: &[&str]) -> (i32, Vec<Value>, String) {
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

    /// An update that must install; its report.
    pub(crate) fn update_ok(&self, extra: &[&str]) -> Value {
        let (code, lines, stderr) = self.update(extra);
        let done = lines.last().cloned().unwrap_or(Value::Null);
        assert_eq!(code, 0, "update failed: {stderr}\n{done}");
        assert_eq!(done["outcome"], "installed", "{done}");
        done
    }

    /// An update that must be refused (exit 1) with `reason` in the report and on stderr,
    /// leaving the active slot as it was. Returns the report.
    pub(crate) fn update_refused(&self, extra: &[&str], reason: &str) -> Value {
        let before = self.active_slot();
        let (code, lines, stderr) = self.update(extra);
        let done = lines.last().cloned().unwrap_or(Value::Null);
        assert_eq!(code, 1, "expected a refusal ({reason}): {stderr}\n{done}");
        assert_eq!(done["outcome"], "failed", "{done}");
        let said = done["reason"].as_str().unwrap_or_default();
        assert!(said.contains(reason), "expected {reason:?} in {done}");
        assert!(stderr.contains(reason), "expected {reason:?} in: {stderr}");
        assert_eq!(
            self.active_slot(),
            before,
            "a refused update leaves the active slot as it was"
        );
        done
    }

    pub(crate) fn status(&self) -> Value {
        serde_json::from_str(&run_ok(
            &bin("ota-device"),
            &["status", "--state", self.state_str(), "--json"],
        ))
        .unwrap()
    }

    /// The active slot's state and bytes.
    pub(crate) fn active_slot(&self) -> ActiveSlot {
        let status = self.status();
        let active = status["active"].as_str().unwrap().to_string();
        let mut files = BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir(self.state.join("slots").join(&active)) {
            for entry in entries {
                let entry = entry.unwrap();
                files.insert(
                    entry.file_name().to_string_lossy().into_owned(),
                    std::fs::read(entry.path()).unwrap(),
                );
            }
        }
        ActiveSlot {
            slots: serde_json::from_slice(&std::fs::read(self.state.join("slots.json")).unwrap())
                .unwrap(),
            status: serde_json::json!({
                "active": status["active"],
                "active_release": status["active_release"],
                "floor": status["floor"],
            }),
            files,
        }
    }

    /// The image in `slot` under the slot name `name`.
    pub(crate) fn image(&self, slot: &str, name: &str) -> Option<Vec<u8>> {
        std::fs::read(
            self.state
                .join("slots")
                .join(slot)
                .join(format!("{name}.img")),
        )
        .ok()
    }

    /// `boot-check` (good): the pending slot becomes active.
    pub(crate) fn boot_good(&self) {
        let out = run_ok(
            &bin("ota-device"),
            &["boot-check", "--state", self.state_str(), "--json"],
        );
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["outcome"], "marked_good", "{v}");
    }
}

/// Writes `bytes` to `dir/name`.
pub(crate) fn published(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Images `LABEL v1` and `LABEL v2` of `v1_len` and `v2_len` bytes, published as releases 1 and
/// 2 of `stable`, release 1 promoted to stable (release 2 waits for its promotion).
pub(crate) fn two_releases(
    dir: &Path,
    fixture: &OriginFixture,
    label: &str,
    (v1_len, v2_len): (usize, usize),
) -> (Vec<u8>, Vec<u8>) {
    let v1 = test_image(&format!("{label} v1"), v1_len);
    let v2 = test_image(&format!("{label} v2"), v2_len);
    let p1 = published(dir, "v1.img", &v1);
    let p2 = published(dir, "v2.img", &v2);
    fixture.release("stable", 1, &[("system", &p1)], &[]);
    fixture.release("stable", 2, &[("system", &p2)], &[]);
    fixture.promote("stable", 1, &["--stable"]);
    (v1, v2)
}

pub(crate) fn kind_bytes(report: &Value, kind: &str) -> u64 {
    report["bytes_by_kind"][kind].as_u64().unwrap_or(0)
}

/// The offer the origin would make for release `number` of `stable` to `handle`.
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

/// One of the origin's online keys, as a thief who copied its key directory holds it.
fn stolen_key(fixture: &OriginFixture, name: &str) -> InMemoryKey {
    let text =
        std::fs::read_to_string(fixture.data.join("keys").join(format!("{name}.key"))).unwrap();
    let mut seed = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut seed).unwrap();
    InMemoryKey::ed25519_from_seed(seed)
}

/// A metadata file from the origin's HTTP mirror.
fn mirror_file(served: &Served, name: &str) -> Vec<u8> {
    let (status, body) = http_get(
        served.http.as_deref().unwrap(),
        &format!("/metadata/{name}"),
        &[],
    )
    .unwrap();
    assert_eq!(status, 200, "{name} from the mirror");
    body
}

fn parse_role<R: Role>(role: &str, bytes: &[u8]) -> R {
    Envelope::parse(role, role, bytes, 1 << 24)
        .unwrap()
        .role()
        .unwrap()
}

/// Re-pins `meta` to `bytes` at `version`, with the length and hashes the original pinned.
fn repin(meta: &mut ota_core::tuf::metadata::MetaFile, version: u64, bytes: &[u8]) {
    meta.version = version;
    if meta.length.is_some() {
        meta.length = Some(bytes.len() as u64);
    }
    if meta.hashes.is_some() {
        meta.hashes = Some(BTreeMap::from([(
            "sha256".to_string(),
            ota_core::digest::Sha256Hash::of(bytes).to_hex(),
        )]));
    }
}

/// Everything the attack tests start from: an origin serving releases 1 and 2 (1 promoted),
/// a dishonest director in front of it, and a device (through the director) on release 1,
/// marked good.
struct Scene {
    _temp: tempfile::TempDir,
    fixture: OriginFixture,
    served: Served,
    director: FakeDirector,
    device: Dev,
    v2: Vec<u8>,
    director_key: Arc<InMemoryKey>,
}

impl Scene {
    fn new(tag: &str, config: &[(&str, Value)]) -> Self {
        let temp = tempfile::tempdir().unwrap();
        let fixture = OriginFixture::new(temp.path());
        for (key, value) in config {
            fixture.set_config(key, value.clone());
        }
        let v1 = test_image(&format!("{tag} v1"), 1 << 20);
        let v2 = test_image(&format!("{tag} v2"), 1 << 20);
        let p1 = published(temp.path(), "v1.img", &v1);
        let p2 = published(temp.path(), "v2.img", &v2);
        fixture.release("stable", 1, &[("system", &p1)], &[]);
        fixture.release("stable", 2, &[("system", &p2)], &[]);
        let served = fixture.serve();
        let director = FakeDirector::start(served.quic, &served.pin);
        let device = Dev::new(
            temp.path(),
            "device",
            &fixture,
            &director.addr.to_string(),
            &director.pin,
            "stable",
        );
        let director_key = Arc::new(stolen_key(&fixture, "director"));
        let scene = Self {
            _temp: temp,
            fixture,
            served,
            director,
            device,
            v2,
            director_key,
        };
        scene.offer(1);
        let report = scene.device.update_ok(&[]);
        assert_eq!(report["release"], 1);
        scene.device.boot_good();
        assert_eq!(scene.device.image("B", "system").unwrap(), v1);
        scene
    }

    /// From now on the director offers release `number`, signed with the real director key.
    fn offer(&self, number: u64) {
        let (data, handle, key) = (
            self.fixture.data.clone(),
            self.device.handle.clone(),
            self.director_key.clone(),
        );
        self.director.set_offer(move |nonce: &[u8; 32]| {
            Some(honest_offer(&data, number, &handle, nonce).sign(&[&key]))
        });
    }

    /// The honest control: the honest director's offer of release 2 installs.
    fn control_installs_release_2(&self) {
        self.offer(2);
        let report = self.device.update_ok(&[]);
        assert_eq!(report["release"], 2);
        assert_eq!(self.device.image("A", "system").unwrap(), self.v2);
    }
}

#[test]
fn attack_freeze_with_stale_timestamp_is_refused_then_noticed_at_expiry() {
    // A short timestamp lifetime so that a captured timestamp expires within the test.
    let temp = tempfile::tempdir().unwrap();
    let fixture = OriginFixture::new(temp.path());
    fixture.set_config("timestamp_expiry_secs", 8.into());
    let v1 = test_image("freeze v1", 1 << 20);
    let v2 = test_image("freeze v2", 1 << 20);
    let p1 = published(temp.path(), "v1.img", &v1);
    let p2 = published(temp.path(), "v2.img", &v2);
    fixture.release("stable", 1, &[("system", &p1)], &[]);
    let mut first = fixture.serve();
    // The attacker (a mirror) records today's timestamp: signed, valid, listing release 1.
    let frozen = mirror_file(&first, "timestamp.json");
    let frozen_ts: Timestamp = parse_role("timestamp", &frozen);
    first.kill();
    fixture.release("stable", 2, &[("system", &p2)], &[]);
    let served = fixture.serve();
    let director = FakeDirector::start(served.quic, &served.pin);
    let device = Dev::new(
        temp.path(),
        "device",
        &fixture,
        &director.addr.to_string(),
        &director.pin,
        "stable",
    );
    let key = Arc::new(stolen_key(&fixture, "director"));
    let (data, handle) = (fixture.data.clone(), device.handle.clone());
    director.set_offer(move |nonce: &[u8; 32]| {
        Some(honest_offer(&data, 2, &handle, nonce).sign(&[&key]))
    });

    // The mirror keeps serving the frozen timestamp: release 2 (offered by the director) is
    // not in what it signs, so the device installs nothing.
    director.override_metadata("timestamp.json", frozen.clone());
    assert!(
        frozen_ts.common.expires.0 > now().0,
        "the frozen timestamp is still valid here"
    );
    device.update_refused(
        &[],
        "the image repository does not sign releases/stable/2.json",
    );

    // Once the frozen timestamp's expiry passes, the device says so (an indefinite freeze is
    // noticed, not waited out).
    while now().0 <= frozen_ts.common.expires.0 {
        std::thread::sleep(Duration::from_millis(200));
    }
    let done = device.update_refused(&[], "expired");
    assert_eq!(done["error_class"], "metadata", "{done}");

    // Control: the origin's current timestamp (re-signed by `serve` meanwhile) installs.
    director.override_metadata("timestamp.json", mirror_file(&served, "timestamp.json"));
    let report = device.update_ok(&[]);
    assert_eq!(report["release"], 2);
    assert_eq!(device.image("B", "system").unwrap(), v2);
}

#[test]
fn attack_mix_and_match_metadata_from_other_snapshot_versions_is_refused() {
    let scene = Scene::new("mix", &[]);
    let timestamp: Timestamp =
        parse_role("timestamp", &mirror_file(&scene.served, "timestamp.json"));
    let snap_v = timestamp.snapshot_meta().version;
    let snapshot_name = format!("{snap_v}.snapshot.json");
    let snapshot: Snapshot = parse_role("snapshot", &mirror_file(&scene.served, &snapshot_name));
    assert!(snap_v >= 2, "two releases make at least two snapshots");
    scene.offer(2);

    // Devices that do not hold the current snapshot yet (the scene's device does: nothing
    // was published since its last update), so that they fetch what the attacker mixes.
    let temp = tempfile::tempdir().unwrap();
    let fresh = |name: &str| {
        let device = Dev::new(
            temp.path(),
            name,
            &scene.fixture,
            &scene.director.addr.to_string(),
            &scene.director.pin,
            "stable",
        );
        let (data, handle, key) = (
            scene.fixture.data.clone(),
            device.handle.clone(),
            scene.director_key.clone(),
        );
        (device, move |nonce: &[u8; 32]| {
            Some(honest_offer(&data, 2, &handle, nonce).sign(&[&key]))
        })
    };

    // 1. The current timestamp with the previous snapshot (signed, older) served under the
    //    current snapshot's name.
    let older = mirror_file(&scene.served, &format!("{}.snapshot.json", snap_v - 1));
    scene.director.override_metadata(&snapshot_name, older);
    let (first, offer) = fresh("first");
    scene.director.set_offer(offer);
    let done = first.update_refused(&[], &format!("{snapshot_name}: sha256 hash mismatch"));
    assert_eq!(done["error_class"], "metadata", "{done}");
    scene
        .director
        .override_metadata(&snapshot_name, mirror_file(&scene.served, &snapshot_name));

    // 2. The current snapshot with an older version of the release role's metadata under
    //    the name the snapshot pins.
    let release_v = snapshot.meta["release.json"].version;
    assert!(release_v >= 2, "{snapshot:?}");
    let release_name = format!("{release_v}.release.json");
    let older_release = mirror_file(&scene.served, &format!("{}.release.json", release_v - 1));
    scene
        .director
        .override_metadata(&release_name, older_release);
    let (second, offer) = fresh("second");
    scene.director.set_offer(offer);
    // The snapshot pins the release role's length and hashes: the older file is caught
    // before its signatures are even read.
    let done = second.update_refused(&[], &format!("{release_name}: length"));
    assert_eq!(done["error_class"], "offer-mismatch", "{done}");

    // Control: the honest files install, on the second device and on the scene's.
    scene
        .director
        .override_metadata(&release_name, mirror_file(&scene.served, &release_name));
    let report = second.update_ok(&[]);
    assert_eq!(second.image("B", "system").unwrap(), scene.v2, "{report}");
    scene.control_installs_release_2();
}

/// The chain of online metadata a thief re-signs: the release role's metadata (changed by
/// `change` and signed by `release_signer`), a snapshot pinning it (signed by
/// `snapshot_signer`) and a timestamp pinning that (signed with the stolen timestamp key).
fn forge_chain(
    scene: &Scene,
    change: impl FnOnce(&mut Targets),
    release_signer: &InMemoryKey,
    snapshot_signer: &InMemoryKey,
    bump: u64,
) {
    let served = &scene.served;
    let mut timestamp: Timestamp = parse_role("timestamp", &mirror_file(served, "timestamp.json"));
    let snap_v = timestamp.snapshot_meta().version;
    let mut snapshot: Snapshot = parse_role(
        "snapshot",
        &mirror_file(served, &format!("{snap_v}.snapshot.json")),
    );
    let release_v = snapshot.meta["release.json"].version;
    let mut release: Targets = parse_role(
        "release",
        &mirror_file(served, &format!("{release_v}.release.json")),
    );

    // `bump` above the origin's versions: a device keeps the highest versions it accepted,
    // so each forgery in a test goes one higher than the last.
    release.common.version = release_v + bump;
    change(&mut release);
    let release_bytes = sign_role(&release, &[release_signer]);
    repin(
        snapshot.meta.get_mut("release.json").unwrap(),
        release_v + bump,
        &release_bytes,
    );
    snapshot.common.version = snap_v + bump;
    let snapshot_bytes = sign_role(&snapshot, &[snapshot_signer]);
    repin(
        timestamp.meta.get_mut("snapshot.json").unwrap(),
        snap_v + bump,
        &snapshot_bytes,
    );
    timestamp.common.version += bump;
    let timestamp_bytes = sign_role(&timestamp, &[&stolen_key(&scene.fixture, "timestamp")]);

    let director = &scene.director;
    director.override_metadata(&format!("{}.release.json", release_v + bump), release_bytes);
    director.override_metadata(&format!("{}.snapshot.json", snap_v + bump), snapshot_bytes);
    director.override_metadata("timestamp.json", timestamp_bytes);
}

/// The change a thief wants: release 2's image replaced by theirs (new hashes, length).
fn swap_in_evil_image(release: &mut Targets) {
    let evil = test_image("evil", 1 << 20);
    let target = release
        .targets
        .iter_mut()
        .find(|(path, _)| path.contains("system"))
        .map(|(_, t)| t)
        .expect("release 2's image is a target");
    target.hashes = BTreeMap::from([(
        "sha256".to_string(),
        ota_core::digest::Sha256Hash::of(&evil).to_hex(),
    )]);
}

#[test]
fn attack_stolen_timestamp_key_alone_cannot_install_anything() {
    let scene = Scene::new("ts-key", &[]);
    let thief = stolen_key(&scene.fixture, "timestamp");
    // The thief has the timestamp key only: every document below it is signed with that key.
    forge_chain(&scene, swap_in_evil_image, &thief, &thief, 1);
    scene.offer(2);
    let done = scene.device.update_refused(
        &[],
        "snapshot: 0 valid signature(s) from distinct keys, 1 needed",
    );
    assert_eq!(done["error_class"], "metadata", "{done}");

    // Control of the forging: the same chain signed by the keys root names for each role
    // installs release 2 (the refusal above is the signature's, not a broken forgery).
    let snapshot_key = stolen_key(&scene.fixture, "snapshot");
    forge_chain(
        &scene,
        |_| {},
        &scene.fixture.authorities.release,
        &snapshot_key,
        2,
    );
    scene.control_installs_release_2();
}

#[test]
fn attack_stolen_online_keys_with_release_metadata_signed_by_the_manifest_key_is_refused() {
    let scene = Scene::new("authority", &[]);
    let snapshot_key = stolen_key(&scene.fixture, "snapshot");
    // Signing-authority confusion: every online key stolen, and the release role's metadata
    // signed by the manifest (targets) authority instead of the release authority.
    forge_chain(
        &scene,
        swap_in_evil_image,
        &scene.fixture.authorities.targets,
        &snapshot_key,
        1,
    );
    scene.offer(2);
    let refusal = "release: 0 valid signature(s) from distinct keys, 1 needed";
    let done = scene.device.update_refused(&[], refusal);
    assert_eq!(done["error_class"], "offer-mismatch", "{done}");

    // The same with a release key of the thief's own.
    let own = InMemoryKey::ed25519_from_seed([77; 32]);
    forge_chain(&scene, swap_in_evil_image, &own, &snapshot_key, 2);
    scene.device.update_refused(&[], refusal);

    // Control of the forging itself: the same chain with the content unchanged and signed by
    // the real release authority is accepted and installs (the refusals above are the
    // signatures', not a broken forgery).
    let release_key = &scene.fixture.authorities.release;
    forge_chain(&scene, |_| {}, release_key, &snapshot_key, 3);
    let report = scene.device.update_ok(&[]);
    assert_eq!(report["release"], 2);
    assert_eq!(scene.device.image("A", "system").unwrap(), scene.v2);
}

/// A hostile LAN peer serving the origin's blobs in one of the ways below.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Hostile {
    /// Every blob followed by 4 MiB of garbage (more bytes than the chunk's signed length).
    Endless,
    /// Each blob only after a long pause (a trickle at chunk granularity).
    Trickle,
    /// Every request answered with the bytes of another chunk it does hold.
    Lying,
}

struct HostileHandler {
    blobs: PathBuf,
    mode: Hostile,
    served: Arc<AtomicUsize>,
}

impl Handler for HostileHandler {
    async fn challenge(&self, _conn: &ConnInfo) -> Result<Nonce, Refusal> {
        Err(Refusal::new(Refusal::NOT_SUPPORTED, "not a relay"))
    }

    async fn signed(
        &self,
        _conn: &ConnInfo,
        _kind: SignedKind,
        _request: SignedRequest,
    ) -> Result<Vec<u8>, Refusal> {
        Err(Refusal::new(Refusal::NOT_SUPPORTED, "not a relay"))
    }

    async fn metadata(&self, _conn: &ConnInfo, _name: &str) -> Option<Bytes> {
        None
    }

    async fn blob(&self, _conn: &ConnInfo, id: &ChunkId) -> Option<Bytes> {
        let bytes = std::fs::read(blob_path(&self.blobs, id)).ok()?;
        self.served.fetch_add(1, Ordering::SeqCst);
        match self.mode {
            Hostile::Endless => {
                let mut long = bytes;
                long.resize(long.len() + (4 << 20), 0x5a);
                Some(Bytes::from(long))
            }
            Hostile::Trickle => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Some(Bytes::from(bytes))
            }
            Hostile::Lying => {
                // Another chunk it holds, whose bytes hash to something else.
                let other = std::fs::read_dir(self.blobs.join("chunks"))
                    .ok()?
                    .flatten()
                    .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
                    .map(|e| e.path())
                    .find(|p| !p.ends_with(id.to_hex()))?;
                Some(Bytes::from(std::fs::read(other).ok()?))
            }
        }
    }
}

/// A hostile peer on loopback; stops when dropped.
struct HostilePeer {
    server: Option<Server>,
    runtime: Option<tokio::runtime::Runtime>,
    addr: std::net::SocketAddr,
    pin: String,
    served: Arc<AtomicUsize>,
}

impl HostilePeer {
    fn start(blobs: &Path, mode: Hostile) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let served = Arc::new(AtomicUsize::new(0));
        let identity = Identity::from_node_key(&NodeKey::generate()).unwrap();
        let server = {
            let _guard = runtime.enter();
            Server::bind(
                "127.0.0.1:0".parse().unwrap(),
                &identity,
                ServerConfig::default(),
                HostileHandler {
                    blobs: blobs.to_path_buf(),
                    mode,
                    served: served.clone(),
                },
            )
            .unwrap()
        };
        Self {
            addr: server.local_addr(),
            pin: server.pin().to_string(),
            server: Some(server),
            runtime: Some(runtime),
            served,
        }
    }

    fn arg(&self) -> String {
        format!("{}={}", self.addr, self.pin)
    }
}

impl Drop for HostilePeer {
    fn drop(&mut self) {
        drop(self.server.take());
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_millis(100));
        }
    }
}

/// Release 2 offered, a hostile peer given to the device: the device still installs release
/// 2 bit for bit, the peer named in the report; returns the report.
fn install_past_hostile_peer(scene: &Scene, peer: &HostilePeer) -> Value {
    scene.offer(2);
    let report = scene.device.update_ok(&["--peer", &peer.arg()]);
    assert_eq!(report["release"], 2);
    assert_eq!(scene.device.image("A", "system").unwrap(), scene.v2);
    assert!(
        peer.served.load(Ordering::SeqCst) > 0,
        "the device asked the hostile peer"
    );
    report
}

#[test]
fn attack_endless_data_from_a_peer_is_cut_and_the_origin_takes_over() {
    let scene = Scene::new("endless", &[]);
    let peer = HostilePeer::start(&scene.fixture.data.join("blobs"), Hostile::Endless);
    let report = install_past_hostile_peer(&scene, &peer);
    // Each over-long blob is cut by the transport (a blob longer than the chunk's signed
    // length is a protocol violation) and the request fails over to the origin.
    assert_eq!(
        kind_bytes(&report, "lan_peer"),
        0,
        "nothing from it was used: {report}"
    );
    assert_eq!(
        kind_bytes(&report, "origin"),
        scene.v2.len() as u64,
        "{report}"
    );
}

#[test]
fn attack_slow_retrieval_by_a_trickling_peer_the_device_switches_to_the_origin() {
    let scene = Scene::new("trickle", &[]);
    let peer = HostilePeer::start(&scene.fixture.data.join("blobs"), Hostile::Trickle);
    let start = Instant::now();
    let report = install_past_hostile_peer(&scene, &peer);
    let took = start.elapsed();
    // A 1 MiB image is ~16 chunks: waiting on the trickle would take 5 s each. The device
    // moved the work to the origin instead.
    assert!(
        kind_bytes(&report, "origin") >= scene.v2.len() as u64 / 2,
        "the origin served the bulk: {report}"
    );
    assert!(
        took < Duration::from_secs(40),
        "the device waited on the trickle ({took:?}): {report}"
    );
}

#[test]
fn attack_peer_lying_about_what_it_holds_is_banned_and_named() {
    let scene = Scene::new("lying", &[]);
    let peer = HostilePeer::start(&scene.fixture.data.join("blobs"), Hostile::Lying);
    let report = install_past_hostile_peer(&scene, &peer);
    let name = format!("peer {}", peer.addr);
    let reason = report["banned"][&name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} not banned: {report}"));
    // Its lie is caught at the first check of the chunk: the length the index signs, or the
    // hash (whichever the substituted chunk fails first).
    assert!(
        reason.starts_with("chunk ")
            && (reason.contains("should hash to") || reason.contains("bytes long, got")),
        "{reason}"
    );
}

#[test]
fn attack_over_long_blobs_from_a_peer_ban_it_and_name_it() {
    // Two ways to send a blob longer than it may be: more bytes than its frame announced, and
    // a frame announcing more than the maximum chunk length the device asked for. Either is a
    // corrupt source: banned for the update with the breach named, nothing it sent used, the
    // image installed from the origin.
    let max = ota_core::chunk::ChunkingParams::DEFAULT.max();
    for (tag, breach) in [
        ("oversend", Breach::MoreThanAnnounced),
        ("overmax", Breach::LongerThanMax),
    ] {
        let scene = Scene::new(tag, &[]);
        let blobs = scene.fixture.data.join("blobs");
        let peer = RawPeer::start(&blobs, breach);
        scene.offer(2);
        let report = scene.device.update_ok(&["--peer", &peer.peer_arg()]);
        assert_eq!(report["release"], 2, "{report}");
        assert_eq!(scene.device.image("A", "system").unwrap(), scene.v2);
        let name = format!("peer {}", peer.addr);
        let reason = report["banned"][&name]
            .as_str()
            .unwrap_or_else(|| panic!("{tag}: {name} not banned: {report}"));
        match breach {
            Breach::MoreThanAnnounced => assert_eq!(
                reason, OVERSEND_REASON,
                "{tag}: the 100 bytes past the blob read as a frame"
            ),
            Breach::LongerThanMax => {
                // `announced N+1 bytes for blob ID, over the N asked for`: ID a blob of the
                // release (the chunk index is the first asked for), N what the device asked.
                let rest = reason
                    .strip_prefix("broke the protocol: announced ")
                    .unwrap_or_else(|| panic!("{tag}: {reason}"));
                let (announced, rest) = rest.split_once(" bytes for blob ").unwrap();
                let (id, rest) = rest.split_once(", over the ").unwrap();
                let asked = rest.strip_suffix(" asked for").unwrap();
                let (announced, asked): (u32, u32) =
                    (announced.parse().unwrap(), asked.parse().unwrap());
                assert_eq!(announced, asked + 1, "{tag}: {reason}");
                assert!(asked <= max, "{tag}: {reason}");
                let id: ChunkId = id.parse().unwrap();
                assert!(blob_path(&blobs, &id).exists(), "{tag}: {id}");
            }
        }
        let source = report["sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap();
        assert_eq!(source["bytes"], 0, "{tag}: nothing it sent used: {source}");
        assert_eq!(kind_bytes(&report, "lan_peer"), 0, "{tag}: {report}");
        assert_eq!(
            kind_bytes(&report, "origin"),
            scene.v2.len() as u64,
            "{tag}: {report}"
        );
    }
}

/// Why a peer that sends bytes past an announced blob is banned: the 100 bytes of `0x5a`
/// after the blob are read as the next frame's header.
const OVERSEND_REASON: &str = "broke the protocol: bad frame: response header of 1515870810 bytes \
     is over the bound of 65536 bytes";

#[test]
fn attack_eligibility_bypass_through_a_peer_cannot_forge_or_transplant_an_offer() {
    // The device's origin is a hostile peer (the fake director plays it): it wants the
    // device, enrolled on a channel that has no release, to install release 2 of `stable`.
    let scene = Scene::new("eligibility", &[]);
    let temp = tempfile::tempdir().unwrap();
    let ineligible = Dev::new(
        temp.path(),
        "beta-device",
        &scene.fixture,
        &scene.director.addr.to_string(),
        &scene.director.pin,
        "beta",
    );
    // 1. An offer in the peer's own name (its key is not the director's).
    let (data, handle) = (scene.fixture.data.clone(), ineligible.handle.clone());
    scene.director.set_offer(move |nonce: &[u8; 32]| {
        let peer_key = InMemoryKey::ed25519_from_seed([99; 32]);
        Some(honest_offer(&data, 2, &handle, nonce).sign(&[&peer_key]))
    });
    ineligible.update_refused(&[], "offer: ");
    // 2. A genuine director-signed offer the peer saw for an eligible device, relayed to
    //    this one (as captured: the other device's handle).
    let (data, key, eligible) = (
        scene.fixture.data.clone(),
        scene.director_key.clone(),
        scene.device.handle.clone(),
    );
    scene.director.set_offer(move |nonce: &[u8; 32]| {
        Some(honest_offer(&data, 2, &eligible, nonce).sign(&[&key]))
    });
    ineligible.update_refused(
        &[],
        &format!("offer is for device {}", &scene.device.handle[..10]),
    );
    assert!(ineligible.image("B", "system").is_none());
    // The real origin gives the ineligible device nothing: through the honest origin it has
    // no offer.
    let direct = Dev::new(
        temp.path(),
        "beta-direct",
        &scene.fixture,
        &scene.served.quic.to_string(),
        &scene.served.pin,
        "beta",
    );
    let (code, lines, stderr) = direct.update(&[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(lines.last().unwrap()["outcome"], "no_offer");
}

/// A running `ota-peer serve` whose log goes to a file.
pub(crate) struct PeerProc {
    pub(crate) proc: Proc,
    pub(crate) quic: String,
    pub(crate) pin: String,
}

impl PeerProc {
    /// Enrolls the peer at the origin as a relay and starts it in front of `origin`
    /// (`listen`: its QUIC address, `127.0.0.1:0` for any).
    pub(crate) fn start(
        dir: &Path,
        name: &str,
        fixture: &OriginFixture,
        origin: (&str, &str),
        listen: &str,
        log: &Path,
    ) -> Self {
        let data = dir.join(name);
        let printed = run_ok(&bin("ota-peer"), &["pin", "--data", data.to_str().unwrap()]);
        let public = printed
            .lines()
            .find_map(|l| l.strip_prefix("public_key "))
            .unwrap()
            .to_string();
        let enrolled = run(
            &bin("ota-origin"),
            &[
                "peer",
                "enroll",
                "--data",
                fixture.data_str(),
                "--public-key",
                &public,
                "--name",
                name,
            ],
        );
        let _ = enrolled; // Already enrolled on a restart.
        Self::spawn(&data, name, origin, listen, log)
    }

    /// Starts (or restarts) the peer on `data` without enrolling it.
    pub(crate) fn spawn(
        data: &Path,
        name: &str,
        origin: (&str, &str),
        listen: &str,
        log: &Path,
    ) -> Self {
        let ready = data.with_extension("ready.json");
        let _ = std::fs::remove_file(&ready);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut command = Command::new(bin("ota-peer"));
        command
            .args(["serve", "--listen", listen, "--metrics", "127.0.0.1:0"])
            // Mutable metadata (timestamp.json) refreshed every second, so that a release
            // the director offers is soon in what the peer serves.
            .args(["--metadata-ttl-secs", "1"])
            .args(["--data", data.to_str().unwrap()])
            .args(["--origin", origin.0, "--origin-pin", origin.1])
            .args(["--ready-file", ready.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(log);
        let mut proc = Proc::spawn(name, &mut command);
        let ready = wait_ready(&mut proc, &ready);
        Self {
            proc,
            quic: ready["quic"].as_str().unwrap().to_string(),
            pin: ready["pin"].as_str().unwrap().to_string(),
        }
    }
}

#[test]
fn attack_device_identity_exposure_logs_hold_the_handle_never_the_key() {
    let temp = tempfile::tempdir().unwrap();
    let fixture = OriginFixture::new(temp.path());
    let image = test_image("identity", 1 << 20);
    let path = published(temp.path(), "v1.img", &image);
    fixture.release("stable", 1, &[("system", &path)], &[]);
    fixture.promote("stable", 1, &["--stable"]);
    let mut served = fixture.serve();
    let origin_log = served.proc.child().stderr.take().unwrap();
    let origin_log = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut std::io::BufReader::new(origin_log), &mut text);
        text
    });
    let peer_log = temp.path().join("peer.log");
    let (quic, pin) = (served.quic.to_string(), served.pin.clone());
    let mut peer = PeerProc::start(
        temp.path(),
        "site",
        &fixture,
        (&quic, &pin),
        "127.0.0.1:0",
        &peer_log,
    );
    let device = Dev::new(
        temp.path(),
        "device",
        &fixture,
        &peer.quic,
        &peer.pin,
        "stable",
    );
    let report = device.update_ok(&[]);
    assert_eq!(report["release"], 1);
    assert_eq!(device.image("B", "system").unwrap(), image);
    peer.proc.kill();
    served.kill();
    let origin_log = origin_log.join().unwrap();
    let peer_log = std::fs::read_to_string(&peer_log).unwrap();
    assert!(
        !origin_log.is_empty() && !peer_log.is_empty(),
        "both programs logged"
    );
    // The device key, in any spelling a log might use (hex, either case, base64).
    let public_bytes = hex::decode(&device.public).unwrap();
    let spellings = [
        device.public.to_lowercase(),
        device.public.to_uppercase(),
        device.public[..16].to_lowercase(),
        base64_of(&public_bytes),
    ];
    for (program, log) in [("ota-origin", &origin_log), ("ota-peer", &peer_log)] {
        for spelling in &spellings {
            assert!(
                !log.contains(spelling.as_str()),
                "{program}'s log holds the device's public key ({spelling}):\n{log}"
            );
        }
    }
    // What identifies the device in the origin's records is its handle (a keyed hash of the
    // key): check-ins are recorded under it.
    assert!(
        origin_log.contains(&device.handle) || origin_log.contains(&device.handle[..16]),
        "the origin names devices by handle:\n{origin_log}"
    );
}

/// Standard base64 with padding (to look for a key a log might have printed that way).
fn base64_of(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn attack_partial_bundle_offer_of_some_artifacts_of_a_release_is_refused() {
    let temp = tempfile::tempdir().unwrap();
    let fixture = OriginFixture::new(temp.path());
    let system = published(
        temp.path(),
        "system.img",
        &test_image("bundle system", 1 << 20),
    );
    let boot = published(
        temp.path(),
        "boot.img",
        &test_image("bundle boot", 256 << 10),
    );
    fixture.release("stable", 1, &[("system", &system), ("boot", &boot)], &[]);
    let served = fixture.serve();
    let director = FakeDirector::start(served.quic, &served.pin);
    let device = Dev::new(
        temp.path(),
        "device",
        &fixture,
        &director.addr.to_string(),
        &director.pin,
        "stable",
    );
    let key = Arc::new(stolen_key(&fixture, "director"));
    let offer_keeping = |keep: usize| {
        let (data, handle, key) = (fixture.data.clone(), device.handle.clone(), key.clone());
        move |nonce: &[u8; 32]| {
            let mut offer = honest_offer(&data, 1, &handle, nonce);
            offer.artifacts.truncate(keep);
            Some(offer.sign(&[&key]))
        }
    };
    // The director (or whoever holds its key) offers the release's first artifact only:
    // every artifact is signed, but the signed release manifest lists both.
    director.set_offer(offer_keeping(1));
    let done = device.update_refused(&[], "(a release installs all or nothing)");
    assert_eq!(done["error_class"], "offer-mismatch", "{done}");
    assert!(device.image("B", "system").is_none() && device.image("B", "boot").is_none());
    // Control: the whole bundle installs.
    director.set_offer(offer_keeping(2));
    let report = device.update_ok(&[]);
    assert_eq!(report["release"], 1);
    assert!(device.image("B", "system").is_some() && device.image("B", "boot").is_some());
}
