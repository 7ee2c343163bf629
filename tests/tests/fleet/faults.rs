//! Fault injection against the real programs: `ota-device`, `ota-peer` and `ota-origin`
//! killed (SIGKILL, as a power cut stops them) at random points across repeated update runs,
//! a device whose disk fills mid-download, a device whose clock jumps. After every fault each
//! device is on its old signed image or has the new signed image pending, never anything
//! else; the verified chunks its journal holds are never lost; and a following update
//! completes.
//!
//! The kill runs are seeded (`OTA_FAULT_SEED`, default fixed) and counted by `OTA_FAULT_RUNS`
//! (default [`DEFAULT_RUNS`]); the test prints how many kills landed on a running program.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ota_core::digest::ChunkId;
use ota_core::journal::{self, JournalBinding};
use ota_tests::{OriginFixture, Proc, bin, test_image, wait_ready};
use serde_json::Value;

use crate::attacks::{Dev, PeerProc, kind_bytes, published, two_releases};

/// Kill runs when `OTA_FAULT_RUNS` is not set: what fits in about three minutes on two cores
/// (a run whose server was killed waits out the clients' 30 s QUIC idle timeout).
const DEFAULT_RUNS: usize = 24;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small xorshift generator: the kill points are random but the run is repeatable.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn below(&mut self, max: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % max
    }
}

/// A free loopback UDP port (QUIC), so that a restarted server comes back where its clients
/// look for it.
pub(crate) fn free_udp_port() -> SocketAddr {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap()
}

/// `ota-origin serve` on a fixed QUIC address, restartable.
pub(crate) struct OriginProc {
    pub(crate) proc: Proc,
    pub(crate) pin: String,
}

impl OriginProc {
    pub(crate) fn start(fixture: &OriginFixture, quic: SocketAddr, log: &Path) -> Self {
        let ready = fixture.data.join("fault-ready.json");
        let _ = std::fs::remove_file(&ready);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut command = Command::new(bin("ota-origin"));
        command
            .args(["serve", "--data", fixture.data_str()])
            .args(["--listen", &quic.to_string(), "--http", "127.0.0.1:0"])
            .arg("--ready-file")
            .arg(&ready)
            .stdout(Stdio::null())
            .stderr(log);
        let mut proc = Proc::spawn("ota-origin serve", &mut command);
        let ready = wait_ready(&mut proc, &ready);
        Self {
            proc,
            pin: ready["pin"].as_str().unwrap().to_string(),
        }
    }
}

/// The journal binding of release `number`'s system image, from what the release signs.
pub(crate) fn binding(fixture: &OriginFixture, number: u64) -> (JournalBinding, u64) {
    let artifacts: Value = serde_json::from_slice(
        &std::fs::read(
            fixture
                .data
                .join(format!("requests/stable/{number}/artifacts.json")),
        )
        .unwrap(),
    )
    .unwrap();
    let a = &artifacts[0];
    (
        JournalBinding::new(
            a["target"].as_str().unwrap(),
            &a["sha256"].as_str().unwrap().parse().unwrap(),
            &a["chunks"]["chunk_tree"].as_str().unwrap().parse().unwrap(),
        ),
        a["chunks"]["chunks"].as_u64().unwrap(),
    )
}

/// The chunks a device's journal records as verified for `binding`.
pub(crate) fn journalled(device: &Dev, binding: &(JournalBinding, u64)) -> HashSet<ChunkId> {
    match std::fs::read(device.state.join("journal/system.journal")) {
        Ok(bytes) => journal::parse(&bytes, &binding.0, binding.1)
            .map(|(records, _)| records.into_iter().map(|r| r.id).collect())
            .unwrap_or_default(),
        Err(_) => HashSet::new(),
    }
}

/// A release and the image a slot holds for it.
type Held = (u64, Option<Vec<u8>>);

/// What a device holds: its active release and image, the pending ones if any.
fn holding(device: &Dev) -> (u64, Option<Vec<u8>>, Option<Held>) {
    let status = device.status();
    let active = status["active"].as_str().unwrap().to_string();
    let other = if active == "A" { "B" } else { "A" };
    let pending = status["pending"]["release"]
        .as_u64()
        .map(|r| (r, device.image(other, "system")));
    (
        status["active_release"].as_u64().unwrap_or(0),
        device.image(&active, "system"),
        pending,
    )
}

/// Asserts that `device` is on `old` (release, image) with at most `new` pending, bit for
/// bit: never on anything else. Returns whether `new` is pending.
fn assert_old_or_new(
    device: &Dev,
    old: (u64, Option<&[u8]>),
    new: (u64, &[u8]),
    when: &str,
) -> bool {
    let (active, image, pending) = holding(device);
    assert_eq!(active, old.0, "{when}: the active release changed");
    assert_eq!(
        image.as_deref(),
        old.1,
        "{when}: the active image is not the old signed one"
    );
    match pending {
        None => false,
        Some((release, image)) => {
            assert_eq!(
                release, new.0,
                "{when}: a release other than the new one is pending"
            );
            assert!(
                image.as_deref() == Some(new.1),
                "{when}: the pending slot is not the new signed image"
            );
            true
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Device(usize),
    Peer,
    Origin,
}

#[test]
fn fault_kills_of_device_peer_and_origin_leave_old_or_new_image_and_lose_no_chunk() {
    let runs: usize = env_or("OTA_FAULT_RUNS", DEFAULT_RUNS);
    let mut rng = Rng(env_or("OTA_FAULT_SEED", 0x2545_f491_4f6c_dd1d_u64) | 1);
    let temp = tempfile::tempdir().unwrap();
    let fixture = OriginFixture::new(temp.path());
    let logs = temp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let size = 3 << 20;
    let image = |n: u64| test_image(&format!("fault release {n}"), size);
    let publish = |n: u64| {
        let path = published(temp.path(), &format!("r{n}.img"), &image(n));
        fixture.release("stable", n, &[("system", &path)], &[]);
        fixture.promote("stable", n, &["--stable"]);
    };
    publish(1);

    let origin_addr = free_udp_port();
    let mut origin = OriginProc::start(&fixture, origin_addr, &logs.join("origin.log"));
    let pin = origin.pin.clone();
    let peer_addr = free_udp_port();
    let origin_arg = (origin_addr.to_string(), pin.clone());
    let peer_data = temp.path().join("site");
    let mut peer = PeerProc::start(
        temp.path(),
        "site",
        &fixture,
        (&origin_arg.0, &origin_arg.1),
        &peer_addr.to_string(),
        &logs.join("peer.log"),
    );
    let peer_pin = peer.pin.clone();
    let devices: Vec<Dev> = (0..3)
        .map(|i| {
            Dev::new(
                temp.path(),
                &format!("device{i}"),
                &fixture,
                &peer.quic,
                &peer.pin,
                "stable",
            )
        })
        .collect();

    let mut current = 1u64; // the release being rolled out
    let mut installed = vec![0u64; devices.len()]; // each device's active release
    let mut landed = [0usize; 3]; // kills that hit a running device, peer, origin
    let mut pending_seen = 0usize;
    let started = Instant::now();
    for run in 0..runs {
        // Everyone has the new release pending: boot it, roll out the next.
        if devices
            .iter()
            .all(|d| d.status()["pending"]["release"].as_u64() == Some(current))
        {
            for (i, d) in devices.iter().enumerate() {
                d.boot_good();
                installed[i] = current;
            }
            current += 1;
            publish(current);
        }
        let new_image = image(current);
        let old_images: Vec<Option<Vec<u8>>> = installed
            .iter()
            .map(|&r| (r > 0).then(|| image(r)))
            .collect();
        let bind = binding(&fixture, current);
        let before: Vec<HashSet<ChunkId>> = devices.iter().map(|d| journalled(d, &bind)).collect();

        let log_of = |i: usize| logs.join(format!("run{run}-device{i}.log"));
        let mut children: Vec<Option<Proc>> = devices
            .iter()
            .enumerate()
            .map(|(i, d)| {
                if d.status()["pending"]["release"].as_u64() == Some(current) {
                    return None;
                }
                let log = std::fs::File::create(log_of(i)).unwrap();
                Some(Proc::spawn(
                    "ota-device update",
                    Command::new(bin("ota-device"))
                        .args(["update", "--state", d.state_str(), "--json"])
                        .stdout(log.try_clone().unwrap())
                        .stderr(log),
                ))
            })
            .collect();
        // One kill in ten on each server: a killed server costs the run its clients' QUIC
        // idle timeout (30 s) before they notice and reconnect, a device kill costs nothing.
        let target = match rng.below(10) {
            0..=7 => Target::Device(rng.below(devices.len() as u64) as usize),
            8 => Target::Peer,
            _ => Target::Origin,
        };
        let delay = Duration::from_millis(rng.below(700));
        let t0 = Instant::now();
        while t0.elapsed() < delay {
            std::thread::sleep(Duration::from_millis(2));
        }
        match target {
            Target::Device(first) => {
                // The first device from `first` on whose update is still running.
                let n = devices.len();
                if let Some(i) = (0..n).map(|k| (first + k) % n).find(|&i| {
                    children[i]
                        .as_mut()
                        .is_some_and(|child| child.try_wait().is_none())
                }) {
                    if let Some(mut child) = children[i].take() {
                        child.kill();
                    }
                    landed[0] += 1;
                }
            }
            Target::Peer => {
                if peer.proc.try_wait().is_none() {
                    landed[1] += 1;
                }
                peer.proc.kill();
                peer = PeerProc::spawn(
                    &peer_data,
                    "site",
                    (&origin_arg.0, &origin_arg.1),
                    &peer_addr.to_string(),
                    &logs.join("peer.log"),
                );
                assert_eq!(peer.pin, peer_pin, "the peer keeps its identity");
            }
            Target::Origin => {
                if origin.proc.try_wait().is_none() {
                    landed[2] += 1;
                }
                origin.proc.kill();
                origin = OriginProc::start(&fixture, origin_addr, &logs.join("origin.log"));
                assert_eq!(origin.pin, pin, "the origin keeps its identity");
            }
        }
        // Updates that lost their source end with an error; none may hang.
        for (i, child) in children.iter_mut().enumerate() {
            let Some(child) = child else { continue };
            let t0 = Instant::now();
            while child.try_wait().is_none() {
                if t0.elapsed() > Duration::from_secs(90) {
                    child.kill();
                    panic!(
                        "run {run} ({target:?} killed after {delay:?}): device {i}'s update hung:\n{}",
                        std::fs::read_to_string(log_of(i)).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let outcomes: Vec<String> = (0..devices.len())
            .map(|i| {
                let log = std::fs::read_to_string(log_of(i)).unwrap_or_default();
                let done = log
                    .lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .find(|v| v["event"] == "done");
                match done {
                    Some(v) => format!("{}", v["outcome"]),
                    None => "-".into(),
                }
            })
            .collect();
        eprintln!(
            "run {run}: release {current}, {target:?} killed after {delay:?}, outcomes {outcomes:?}, at {:.1} s",
            started.elapsed().as_secs_f64()
        );
        for (i, d) in devices.iter().enumerate() {
            let when = format!("run {run} ({target:?} killed after {delay:?}), device {i}");
            let pending = assert_old_or_new(
                d,
                (installed[i], old_images[i].as_deref()),
                (current, &new_image),
                &when,
            );
            if pending {
                pending_seen += 1;
            } else {
                let after = journalled(d, &bind);
                let lost: Vec<&ChunkId> = before[i].difference(&after).collect();
                assert!(
                    lost.is_empty(),
                    "{when}: verified chunks lost from the journal: {lost:?}"
                );
            }
        }
    }

    // Resumable: with every program up, each device finishes the release in one update
    // (after the peer's metadata TTL, so that its timestamp lists the release: see the soak).
    std::thread::sleep(Duration::from_secs(2));
    for (i, d) in devices.iter().enumerate() {
        if d.status()["pending"]["release"].as_u64() != Some(current) {
            let report = d.update_ok(&[]);
            assert_eq!(report["release"], current, "device {i}");
        }
        assert!(assert_old_or_new(
            d,
            (
                installed[i],
                (installed[i] > 0).then(|| image(installed[i])).as_deref()
            ),
            (current, &image(current)),
            "the last update",
        ));
    }
    eprintln!(
        "fault injection: {runs} runs in {:.0} s, {current} releases; kills that landed on a running \
         program: device {}, peer {}, origin {} (total {}); {pending_seen} device-runs ended \
         with the new image pending; zero devices on a wrong image, zero verified chunks lost",
        started.elapsed().as_secs_f64(),
        landed[0],
        landed[1],
        landed[2],
        landed.iter().sum::<usize>()
    );
    // A kill drawn after its target already finished tests nothing; at least a third must
    // land (how many do depends on the machine's speed; 16 of 24 on an idle 2-core machine).
    assert!(
        landed.iter().sum::<usize>() >= runs / 3,
        "too few kills landed on a running program: {landed:?} of {runs}"
    );
    assert!(current >= 2, "the fleet moved through releases");
}

/// A size-capped tmpfs mounted for the test, unmounted on drop. `None` when the machine does
/// not let this process mount (not root, or no mount namespace rights).
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(path: &Path, bytes: u64) -> Option<Self> {
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}")])
            .arg("tmpfs")
            .arg(path)
            .stderr(Stdio::null())
            .status()
            .ok()?;
        status.success().then(|| Self(path.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn fault_disk_full_mid_download_keeps_the_old_image_and_resumes() {
    let temp = tempfile::tempdir().unwrap();
    let fixture = OriginFixture::new(temp.path());
    let (_, v2) = two_releases(temp.path(), &fixture, "disk full", (1 << 20, 16 << 20));
    let served = fixture.serve();
    let Some(disk) = SmallDisk::mount(&temp.path().join("disk"), 32 << 20) else {
        eprintln!(
            "fault_disk_full: this machine does not let the test mount a tmpfs (needs root); \
             the disk-full fault was NOT exercised"
        );
        return;
    };
    let device = Dev::new(
        &disk.0,
        "device",
        &fixture,
        &served.quic.to_string(),
        &served.pin,
        "stable",
    );
    device.update_ok(&[]);
    device.boot_good();
    fixture.promote("stable", 2, &["--stable"]);

    // Fill the disk, leaving 10 MiB: release 2's 16 MiB image cannot be written, but more
    // than one journal batch (64 chunks) is verified and journalled before the disk fills.
    let filler = disk.0.join("filler");
    let free = {
        let out = Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(&disk.0)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    std::fs::write(&filler, vec![0u8; (free - (10 << 20)) as usize]).unwrap();
    let before = device.active_slot();
    let bind = binding(&fixture, 2);
    let (code, lines, stderr) = device.update(&[]);
    let done = lines.last().cloned().unwrap_or(Value::Null);
    assert_eq!(
        code, 2,
        "a full disk is an environment error: {stderr}\n{done}"
    );
    assert_eq!(done["outcome"], "failed", "{done}");
    assert!(
        stderr.contains("No space left on device") || stderr.contains("os error 28"),
        "the reason names the full disk: {stderr}"
    );
    assert_eq!(device.active_slot(), before, "the active slot is untouched");
    assert!(
        device.status()["pending"].is_null(),
        "nothing half-written is pending"
    );
    let verified = journalled(&device, &bind);
    assert!(
        !verified.is_empty(),
        "chunks were journalled before the disk filled"
    );

    // Space again: the update completes, reusing what was verified before the disk filled.
    std::fs::remove_file(&filler).unwrap();
    let report = device.update_ok(&[]);
    assert_eq!(report["release"], 2);
    let resumed = report["artifacts"][0]["resumed_chunks"]
        .as_u64()
        .unwrap_or(0);
    assert_eq!(
        resumed,
        verified.len() as u64,
        "every chunk verified before the disk filled is reused: {report}"
    );
    assert_eq!(device.image("A", "system").unwrap(), v2);
    eprintln!(
        "disk full: refused with exit 2, {} verified chunks kept and reused, {} bytes fetched after",
        verified.len(),
        kind_bytes(&report, "origin")
    );
}

/// `ota-device update` with its clock moved by `offset` (libfaketime's `-f` syntax, e.g.
/// `+30d`); the monotonic clock is left alone so that timeouts behave.
fn update_at(device: &Dev, offset: &str) -> (i32, Value, String) {
    let out = Command::new("faketime")
        .args(["-f", offset])
        .arg(bin("ota-device"))
        .args(["update", "--state", device.state_str(), "--json"])
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let done = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .next_back()
        .unwrap_or(Value::Null);
    (
        out.status.code().unwrap_or(-1),
        done,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn fault_clock_jumps_on_the_device_refuse_without_touching_the_slots() {
    if Command::new("faketime").arg("--help").output().is_err() {
        panic!("faketime is not installed (scripts/test installs it: apt-get install faketime)");
    }
    let temp = tempfile::tempdir().unwrap();
    let fixture = OriginFixture::new(temp.path());
    let (_, v2) = two_releases(temp.path(), &fixture, "clock", (1 << 20, 1 << 20));
    let served = fixture.serve();
    let device = Dev::new(
        temp.path(),
        "device",
        &fixture,
        &served.quic.to_string(),
        &served.pin,
        "stable",
    );
    device.update_ok(&[]);
    device.boot_good();
    fixture.promote("stable", 2, &["--stable"]);
    let before = device.active_slot();

    // The clock jumps 30 days ahead: the origin's signed timestamp (one day) and its offer
    // look expired, and the check-in's time is outside the origin's window.
    let (code, done, stderr) = update_at(&device, "+30d");
    assert_ne!(code, 0, "{stderr}\n{done}");
    assert_eq!(done["outcome"], "failed", "{done}");
    assert_eq!(device.active_slot(), before, "{done}");
    assert!(device.status()["pending"].is_null());
    let ahead = done["reason"].as_str().unwrap_or_default().to_string();

    // The clock jumps 30 days back: the check-in is outside the window again.
    let (code, done, stderr) = update_at(&device, "-30d");
    assert_ne!(code, 0, "{stderr}\n{done}");
    assert_eq!(done["outcome"], "failed", "{done}");
    assert_eq!(device.active_slot(), before, "{done}");
    let behind = done["reason"].as_str().unwrap_or_default().to_string();
    for reason in [&ahead, &behind] {
        assert!(
            reason.contains("outside the window") || reason.contains("expired"),
            "a clock jump is refused for the time: {reason}"
        );
    }

    // The clock is right again: the update completes.
    let report = device.update_ok(&[]);
    assert_eq!(report["release"], 2);
    assert_eq!(device.image("A", "system").unwrap(), v2);
    eprintln!("clock jumps: +30 d refused with {ahead:?}; -30 d refused with {behind:?}");
}

/// (release, origin's (RSS, fds), peer's (RSS, fds)) after a release.
type Sample = (u64, (u64, usize), (u64, usize));

/// An update's (exit code, JSON lines, stderr).
type Outcome = (i32, Vec<Value>, String);

/// Resident set size (bytes) and open file descriptors of a running process, from /proc.
fn rss_and_fds(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
    (rss_kib * 1024, fds)
}

/// The soak run (ignored by default; README, "Soak run"): a small fleet on loopback — an
/// origin, a site peer, devices behind the peer and devices straight at the origin — updating
/// through one release after another for `OTA_SOAK_SECS` seconds (default 120). Reports
/// update errors and the resident memory and file descriptors of the long-running origin and
/// peer after every release; fails on any error, on a device not on the latest image, or on
/// descriptors that keep growing.
#[test]
#[ignore = "long: run with `cargo test -p ota-tests --test fleet -- --ignored soak --nocapture`"]
fn soak_fleet_updates_through_releases_without_errors_or_leaks() {
    let secs: u64 = env_or("OTA_SOAK_SECS", 120);
    let temp = tempfile::tempdir().unwrap();
    let fixture = OriginFixture::new(temp.path());
    let logs = temp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let image = |n: u64| test_image(&format!("soak release {n}"), 4 << 20);
    let publish = |n: u64| {
        let path = published(temp.path(), &format!("r{n}.img"), &image(n));
        fixture.release("stable", n, &[("system", &path)], &[]);
        fixture.promote("stable", n, &["--stable"]);
        std::fs::remove_file(path).unwrap();
    };
    publish(1);
    let origin = OriginProc::start(&fixture, free_udp_port(), &logs.join("origin.log"));
    let origin_addr = {
        let ready: Value =
            serde_json::from_slice(&std::fs::read(fixture.data.join("fault-ready.json")).unwrap())
                .unwrap();
        ready["quic"].as_str().unwrap().to_string()
    };
    let peer = PeerProc::start(
        temp.path(),
        "site",
        &fixture,
        (&origin_addr, &origin.pin),
        "127.0.0.1:0",
        &logs.join("peer.log"),
    );
    let mut devices: Vec<Dev> = (0..4)
        .map(|i| {
            Dev::new(
                temp.path(),
                &format!("site{i}"),
                &fixture,
                &peer.quic,
                &peer.pin,
                "stable",
            )
        })
        .collect();
    devices.extend((0..2).map(|i| {
        Dev::new(
            temp.path(),
            &format!("direct{i}"),
            &fixture,
            &origin_addr,
            &origin.pin,
            "stable",
        )
    }));
    let origin_pid = origin.proc.id().unwrap();
    let peer_pid = peer.proc.id().unwrap();
    let mut samples: Vec<Sample> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    let mut stale_refusals = 0usize;
    let started = Instant::now();
    let mut release = 1u64;
    loop {
        let children: Vec<(usize, std::thread::JoinHandle<Outcome>)> = devices
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let state = d.state.clone();
                let handle = std::thread::spawn(move || {
                    let out = Command::new(bin("ota-device"))
                        .args(["update", "--state", state.to_str().unwrap(), "--json"])
                        .stdin(Stdio::null())
                        .output()
                        .unwrap();
                    let lines = String::from_utf8_lossy(&out.stdout)
                        .lines()
                        .filter_map(|l| serde_json::from_str(l).ok())
                        .collect();
                    (
                        out.status.code().unwrap_or(-1),
                        lines,
                        String::from_utf8_lossy(&out.stderr).into_owned(),
                    )
                });
                (i, handle)
            })
            .collect();
        for (i, handle) in children {
            let (code, lines, stderr) = handle.join().unwrap();
            let mut done = lines.last().cloned().unwrap_or(Value::Null);
            let stale = format!("does not sign releases/stable/{release}.json");
            if code == 1 && done["reason"].as_str().is_some_and(|r| r.contains(&stale)) {
                // The site peer still serves the timestamp from before this release (it
                // refreshes mutable metadata every `--metadata-ttl-secs`, 1 s here): the device
                // refuses the offer (docs/THREAT-MODEL.md, gaps). Counted, and retried once
                // after the TTL.
                stale_refusals += 1;
                std::thread::sleep(Duration::from_secs(2));
                done = devices[i]
                    .update(&[])
                    .1
                    .last()
                    .cloned()
                    .unwrap_or(Value::Null);
            } else if code != 0 {
                done = serde_json::json!({ "exit": code, "report": done, "stderr": stderr });
            }
            if done["outcome"] != "installed" || done["release"] != release {
                errors.push(format!("release {release}, device {i}: {done}"));
                continue;
            }
            devices[i].boot_good();
        }
        let sample = (release, rss_and_fds(origin_pid), rss_and_fds(peer_pid));
        eprintln!(
            "soak: release {release} at {:.0} s: origin RSS {:.1} MiB, {} fds; peer RSS {:.1} MiB, {} fds; errors so far {}",
            started.elapsed().as_secs_f64(),
            sample.1.0 as f64 / 1048576.0,
            sample.1.1,
            sample.2.0 as f64 / 1048576.0,
            sample.2.1,
            errors.len()
        );
        samples.push(sample);
        if started.elapsed() >= Duration::from_secs(secs) {
            break;
        }
        release += 1;
        publish(release);
    }
    let (first, last) = (samples[0], samples[samples.len() - 1]);
    let max_rss = |pick: fn(&Sample) -> u64| samples.iter().map(pick).max().unwrap_or(0);
    eprintln!(
        "soak: {} releases in {:.0} s, {} device updates, {} errors, {stale_refusals} offers \
         refused for the peer's stale timestamp (retried); origin RSS {:.1} -> {:.1} MiB \
         (max {:.1}), fds {} -> {}; peer RSS {:.1} -> {:.1} MiB (max {:.1}), fds {} -> {}",
        release,
        started.elapsed().as_secs_f64(),
        release as usize * devices.len(),
        errors.len(),
        first.1.0 as f64 / 1048576.0,
        last.1.0 as f64 / 1048576.0,
        max_rss(|s| s.1.0) as f64 / 1048576.0,
        first.1.1,
        last.1.1,
        first.2.0 as f64 / 1048576.0,
        last.2.0 as f64 / 1048576.0,
        max_rss(|s| s.2.0) as f64 / 1048576.0,
        first.2.1,
        last.2.1,
    );
    assert!(errors.is_empty(), "update errors:\n{}", errors.join("\n"));
    for d in &devices {
        let status = d.status();
        assert_eq!(status["active_release"], release, "{status}");
    }
    // Descriptors: connections come and go, but a leak grows with every release.
    assert!(
        last.1.1 <= first.1.1 + 16 && last.2.1 <= first.2.1 + 16,
        "file descriptors grew: origin {} -> {}, peer {} -> {}",
        first.1.1,
        last.1.1,
        first.2.1,
        last.2.1
    );
}
