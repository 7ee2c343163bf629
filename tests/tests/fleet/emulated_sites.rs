//! Emulated sites: the origin and each site in its own network namespace, each site joined to
//! a router namespace (joined in turn to the origin's) by a veth pair whose two directions are
//! shaped with a token bucket (`tc tbf`),
//! a real `ota-peer` and real `ota-device`s per site. The release goes out; per site the test
//! measures what crossed the site's link and how long the site took, and checks both against
//! what `simnet run` predicts for the same topology.
//!
//! Skipped, saying so, where namespaces are unusable; failed there when `OTA_REQUIRE_NETNS`
//! is set (see `ota_tests::netns`).

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ota_tests::netns::{self, Netns};
use ota_tests::{ADMIN_TOKEN, OriginFixture, Proc, bin, run_ok, test_image, wait_ready};

/// Each site's link to the origin, Mbit/s in each direction.
const SITE_MBPS: [u64; 3] = [16, 24, 40];
/// Devices per site.
const DEVICES: usize = 3;
/// The system image, MiB (pseudo-random: every chunk is unique, so the release's unique
/// bytes are its size).
const IMAGE_MIB: usize = 16;

/// What one site did.
#[derive(Debug)]
struct SiteRun {
    /// Bytes that left the router's end of the site's veth (IP packets: chunks, chunk
    /// indexes, metadata, check-ins, QUIC and UDP/IP framing).
    wire_bytes: u64,
    /// The IP packets those bytes came in.
    wire_packets: u64,
    /// Verified chunk bytes the site's devices took from the origin directly.
    direct_bytes: u64,
    /// Verified chunk bytes the site's devices took from the site's peer.
    peer_bytes: u64,
    /// From the start of the rollout until the site's last device installed, seconds.
    completion_s: f64,
}

/// IPv4 and UDP headers: 28 bytes in every packet on the link.
const IP_UDP_HEADERS: u64 = 28;

impl SiteRun {
    /// What the link carried in UDP payloads (QUIC packets): the wire bytes less the IP and
    /// UDP headers of each packet.
    fn udp_payload(&self) -> u64 {
        self.wire_bytes
            .saturating_sub(self.wire_packets * IP_UDP_HEADERS)
    }
}

/// One device's `ota-device update --json`, as it ended.
#[derive(Debug)]
struct Done {
    site: usize,
    name: String,
    at: Instant,
    outcome: String,
    line: String,
    bytes_by_kind: BTreeMap<String, u64>,
}

/// A log file for a server's standard error (a pipe nobody drains would stall the server
/// once full).
fn log_file(path: &Path) -> Stdio {
    Stdio::from(std::fs::File::create(path).unwrap())
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// What the emulation measured, beside what simnet predicts.
struct Measured {
    /// The release's unique bytes.
    unique: u64,
    runs: Vec<SiteRun>,
    /// Per site: simnet's completion (s) and the bytes it sends over the site's link.
    predicted: Vec<(f64, u64)>,
}

#[test]
fn emulated_sites_every_device_installs_through_its_shaped_uplink() {
    let Some(m) = emulate("emulated_sites_every_device_installs_through_its_shaped_uplink") else {
        return;
    };
    for (i, run) in m.runs.iter().enumerate() {
        let site = i + 1;
        // The counters saw the release cross the link (the measurement is of this link) ...
        assert!(
            run.wire_bytes >= m.unique,
            "site {site}: only {} bytes crossed the link for a {}-byte release",
            run.wire_bytes,
            m.unique
        );
        // ... and the site's cache served its devices at least a whole release's worth ...
        assert!(
            run.peer_bytes >= m.unique,
            "site {site}: the peer served its devices only {} bytes of a {}-byte release",
            run.peer_bytes,
            m.unique
        );
        // ... and the devices waited for their cache instead of fetching over the same link
        // again: all three together took at most 5% of the release from the origin directly
        // (before the scheduler's patience rule: 60% and more at the 16 Mbit/s site).
        assert!(
            run.direct_bytes as f64 <= 0.05 * m.unique as f64,
            "site {site}: the devices took {} bytes from the origin directly, for a {}-byte \
             release their cache was fetching",
            run.direct_bytes,
            m.unique
        );
    }
}

/// The targets: each link carries <= 1.05x the unique bytes (counted in UDP payloads:
/// the IP and UDP headers, 28 bytes in each ~1.5 kB packet, add 2% no scheduler can save, and
/// simnet counts neither) and each site completes within +-25% of simnet. simnet predicts the
/// programs as deployed, so this runs them built for release: `scripts/test` builds them and
/// runs it with `OTA_BIN_DIR=target/release -- --ignored`. With debug programs the links wait
/// on unoptimised QUIC and TLS (the 40 Mbit/s site takes 2-3x the prediction), which is why it
/// is ignored in the plain `cargo test` run.
#[test]
#[ignore = "needs release programs: scripts/test runs it with OTA_BIN_DIR=target/release"]
fn emulated_sites_uplink_bytes_and_completion_match_simnet() {
    let Some(m) = emulate("emulated_sites_uplink_bytes_and_completion_match_simnet") else {
        return;
    };
    let unique = m.unique;
    for (i, (run, (sim_s, sim_uplink))) in m.runs.iter().zip(&m.predicted).enumerate() {
        let site = i + 1;
        assert!(
            run.udp_payload() as f64 <= 1.05 * unique as f64,
            "site {site}: {} bytes of UDP payload ({} on the wire) crossed the link for \
             {unique} unique bytes (> 1.05x)",
            run.udp_payload(),
            run.wire_bytes
        );
        assert!(
            *sim_uplink as f64 <= 1.05 * unique as f64,
            "site {site}: simnet moved {sim_uplink} bytes for {unique} unique bytes"
        );
        let ratio = run.completion_s / sim_s;
        assert!(
            (0.75..=1.25).contains(&ratio),
            "site {site}: completed in {:.2} s, simnet predicts {sim_s:.2} s (ratio {ratio:.2})",
            run.completion_s
        );
    }
}

/// Sets up the namespaces, the origin, a peer and the devices per site, rolls the release out
/// and measures each site; `None` (said plainly) when namespaces are unusable here.
fn emulate(test: &str) -> Option<Measured> {
    if !netns::usable(test) {
        return None;
    }
    let mut temp = tempfile::tempdir().unwrap();
    if std::env::var_os("OTA_EMULATED_KEEP").is_some() {
        // The logs and the devices' events stay for a look afterwards.
        temp.disable_cleanup(true);
        println!("emulated sites: keeping {}", temp.path().display());
    }
    let dir = temp.path();
    let fixture = OriginFixture::new(dir);
    let image = test_image("emulated sites", IMAGE_MIB << 20);
    let image_path = dir.join("system.img");
    std::fs::write(&image_path, &image).unwrap();
    fixture.release("stable", 1, &[("system", &image_path)], &[]);
    fixture.promote("stable", 1, &["--stable"]);
    let unique = image.len() as u64;

    // The network: the origin's namespace, a router's (the far end of every site's link, as an
    // ISP's or a satellite operator's equipment is), one per site, and a shaped veth pair
    // between the router and each site. The shapers sit in the router, not in the origin's
    // namespace: a packet queued in a shaper counts against the socket that sent it until it
    // leaves, so shapers on the origin's own interfaces would make its one UDP socket's send
    // buffer a limit that all sites share (the slow sites' queues stalling the fast one),
    // which a real origin, whose interface drains at its own speed, does not have.
    let origin_ns = Netns::new("origin").unwrap();
    let router = Netns::new("router").unwrap();
    router.sysctl("net.ipv4.ip_forward=1").unwrap();
    netns::veth(
        &origin_ns,
        "core",
        "10.66.0.1/24",
        &router,
        "core",
        "10.66.0.2/24",
    )
    .unwrap();
    origin_ns
        .ip(&["route", "add", "10.66.0.0/16", "via", "10.66.0.2"])
        .unwrap();
    let mut site_ns = Vec::new();
    for (i, mbps) in SITE_MBPS.iter().enumerate() {
        let ns = Netns::new(&format!("site{}", i + 1)).unwrap();
        let n = i + 1;
        netns::veth(
            &router,
            &format!("site{n}"),
            &format!("10.66.{n}.1/24"),
            &ns,
            "wan",
            &format!("10.66.{n}.2/24"),
        )
        .unwrap();
        ns.ip(&["route", "add", "default", "via", &format!("10.66.{n}.1")])
            .unwrap();
        // Origin to site (the site's download), and site to origin.
        netns::shape(&router, &format!("site{n}"), mbps * 1_000_000).unwrap();
        netns::shape(&ns, "wan", mbps * 1_000_000).unwrap();
        site_ns.push(ns);
    }

    // The origin, listening on every address of its namespace.
    let ready = dir.join("origin-ready.json");
    let mut command = origin_ns.command(&bin("ota-origin"));
    command
        .args([
            "serve",
            "--data",
            fixture.data_str(),
            "--listen",
            "0.0.0.0:0",
        ])
        .args(["--ready-file", s(&ready)])
        .env("OTA_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdout(Stdio::null())
        .stderr(log_file(&dir.join("origin.log")));
    let mut origin = Proc::spawn("ota-origin serve (origin namespace)", &mut command);
    let served = wait_ready(&mut origin, &ready);
    let port: u16 = served["quic"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let pin = served["pin"].as_str().unwrap().to_string();
    let origin_at = format!("10.66.0.1:{port}");

    // Devices, made and enrolled before the clock starts.
    let device_bin = bin("ota-device");
    let mut devices = Vec::new();
    for site in 0..SITE_MBPS.len() {
        for d in 0..DEVICES {
            let name = format!("s{}-d{}", site + 1, d + 1);
            let state = dir.join(&name);
            let out = run_ok(
                &device_bin,
                &[
                    "init",
                    "--state",
                    s(&state),
                    "--root",
                    s(&fixture.root),
                    "--director-root",
                    s(&fixture.director_root),
                    "--origin",
                    &origin_at,
                    "--origin-pin",
                    &pin,
                ],
            );
            let public = out
                .lines()
                .map(str::trim)
                .rfind(|l| l.len() == 64)
                .expect("ota-device init prints the public key")
                .to_string();
            let handle = fixture.enroll(&public, "stable");
            run_ok(
                &device_bin,
                &["enrolled", "--state", s(&state), "--handle", &handle],
            );
            devices.push((site, name, state));
        }
    }

    let before: Vec<(u64, u64)> = (0..SITE_MBPS.len())
        .map(|i| netns::sent(&router, &format!("site{}", i + 1)).unwrap())
        .collect();

    // The rollout: every site's peer starts (and prefetches the promoted release), then
    // every device updates through its site's peer.
    let started = Instant::now();
    let mut peers = Vec::new();
    for (i, ns) in site_ns.iter().enumerate() {
        let data = dir.join(format!("peer-{}", i + 1));
        std::fs::create_dir_all(&data).unwrap();
        let ready = data.join("ready.json");
        let mut command = ns.command(&bin("ota-peer"));
        command
            .args(["serve", "--data", s(&data)])
            .args(["--listen", &format!("10.66.{}.2:0", i + 1)])
            .args(["--origin", &origin_at, "--origin-pin", &pin])
            .args(["--ready-file", s(&ready)])
            .stdout(Stdio::null())
            .stderr(log_file(&data.join("peer.log")));
        peers.push((
            Proc::spawn(&format!("ota-peer serve (site {})", i + 1), &mut command),
            ready,
        ));
    }
    let peer_args: Vec<String> = peers
        .iter_mut()
        .map(|(proc, ready)| {
            let v = wait_ready(proc, ready);
            format!(
                "{}={}",
                v["quic"].as_str().unwrap(),
                v["pin"].as_str().unwrap()
            )
        })
        .collect();

    let (tx, rx) = mpsc::channel();
    let mut updates = Vec::new();
    for (site, name, state) in &devices {
        let mut command = site_ns[*site].command(&device_bin);
        command
            .args(["update", "--state", s(state), "--json"])
            .args(["--peer", &peer_args[*site]])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut proc = Proc::spawn(&format!("ota-device update ({name})"), &mut command);
        let stdout = proc.child().stdout.take().unwrap();
        let (tx, site, name) = (tx.clone(), *site, name.clone());
        let log = dir.join(format!("{name}.jsonl"));
        std::thread::spawn(move || {
            let mut done = None;
            // Every event the device printed, for a look afterwards (`OTA_EMULATED_KEEP`).
            let mut log = std::fs::File::create(log).ok();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(log) = log.as_mut() {
                    let _ = writeln!(log, "{} {line}", started.elapsed().as_millis());
                }
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if v["event"] == "done" {
                    let bytes_by_kind = v["bytes_by_kind"]
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
                                .collect()
                        })
                        .unwrap_or_default();
                    done = Some(Done {
                        site,
                        name: name.clone(),
                        at: Instant::now(),
                        outcome: v["outcome"].as_str().unwrap_or("?").to_string(),
                        line: line.clone(),
                        bytes_by_kind,
                    });
                }
            }
            let _ = tx.send(done.ok_or(name));
        });
        updates.push(proc);
    }
    drop(tx);
    let mut dones = Vec::new();
    for _ in &devices {
        match rx.recv_timeout(Duration::from_secs(180)) {
            Ok(Ok(done)) => dones.push(done),
            Ok(Err(name)) => panic!("{name}: ota-device update ended without a done event"),
            Err(e) => panic!("the rollout did not finish within 180 s: {e}"),
        }
    }
    for done in &dones {
        println!(
            "  {} {} after {:.2} s, bytes by source {:?}",
            done.name,
            done.outcome,
            done.at.duration_since(started).as_secs_f64(),
            done.bytes_by_kind
        );
        assert_eq!(done.outcome, "installed", "{}: {}", done.name, done.line);
    }

    // What each site took.
    let mut runs = Vec::new();
    for (site, sent_before) in before.iter().enumerate().take(SITE_MBPS.len()) {
        let mine = || dones.iter().filter(move |d| d.site == site);
        let last = mine().map(|d| d.at).max().unwrap();
        let kind = |k: &str| -> u64 {
            mine()
                .map(|d| d.bytes_by_kind.get(k).copied().unwrap_or(0))
                .sum()
        };
        let (bytes, packets) = netns::sent(&router, &format!("site{}", site + 1)).unwrap();
        runs.push(SiteRun {
            wire_bytes: bytes - sent_before.0,
            wire_packets: packets - sent_before.1,
            direct_bytes: kind("origin") + kind("http_mirror"),
            peer_bytes: kind("lan_peer"),
            completion_s: last.duration_since(started).as_secs_f64(),
        });
    }
    drop(updates);
    if std::env::var_os("OTA_EMULATED_KEEP").is_some() {
        // The shapers' own counters (drops, overlimits, backlog) for a look afterwards.
        for (i, ns) in site_ns.iter().enumerate() {
            let site = format!("site{}", i + 1);
            let down = router.tc(&["-s", "qdisc", "show", "dev", &site]).unwrap();
            let up = ns.tc(&["-s", "qdisc", "show", "dev", "wan"]).unwrap();
            std::fs::write(
                dir.join(format!("{site}-qdisc.txt")),
                format!("{down}\n{up}"),
            )
            .unwrap();
        }
    }

    // Every device runs the signed image.
    for (_, name, state) in &devices {
        run_ok(&device_bin, &["boot-check", "--state", s(state)]);
        let status: serde_json::Value = serde_json::from_str(&run_ok(
            &device_bin,
            &["status", "--state", s(state), "--json"],
        ))
        .unwrap();
        assert_eq!(status["active_release"], 1, "{name}: {status}");
        let slot = status["active"].as_str().unwrap();
        let installed = std::fs::read(state.join("slots").join(slot).join("system.img")).unwrap();
        assert!(
            installed == image,
            "{name}: the active slot is not the signed image"
        );
    }

    // What simnet predicts for the same topology.
    let predicted = simulate(dir);
    println!(
        "emulated sites: {} MiB release, {DEVICES} devices and one peer per site",
        IMAGE_MIB
    );
    println!(
        "  {:<6} {:>5} {:>11} {:>10} {:>9} {:>10} {:>10} {:>9} {:>8} {:>8} {:>6}",
        "site",
        "Mbit",
        "wire MiB",
        "x unique",
        "packets",
        "UDP x uniq",
        "direct MiB",
        "peer MiB",
        "live s",
        "sim s",
        "ratio"
    );
    let mib = |b: u64| b as f64 / 1_048_576.0;
    for (i, (run, (sim_s, _))) in runs.iter().zip(&predicted).enumerate() {
        println!(
            "  {:<6} {:>5} {:>11.2} {:>10.3} {:>9} {:>10.3} {:>10.2} {:>9.2} {:>8.2} {:>8.2} {:>6.2}",
            format!("site{}", i + 1),
            SITE_MBPS[i],
            mib(run.wire_bytes),
            run.wire_bytes as f64 / unique as f64,
            run.wire_packets,
            run.udp_payload() as f64 / unique as f64,
            mib(run.direct_bytes),
            mib(run.peer_bytes),
            run.completion_s,
            sim_s,
            run.completion_s / sim_s
        );
    }
    Some(Measured {
        unique,
        runs,
        predicted,
    })
}

/// Runs `simnet run` on the test's topology; per site, the predicted completion (s) and the
/// bytes its link carried.
fn simulate(dir: &Path) -> Vec<(f64, u64)> {
    let scenario: PathBuf = dir.join("emulated-sites.toml");
    let mut text = format!(
        "name = \"emulated-sites\"\n\
         description = \"the emulated-sites test's topology\"\n\
         seed = 1\n\
         [origin]\negress_mbps = 10000\nlatency_ms = 0.05\n\
         [release]\nsize_mib = {IMAGE_MIB}\nchanged_share = 1.0\nchunk_group = 1\nannounce_s = 0\n\
         [device]\ncheckin_interval_s = 0\npeer_in_flight = 64\norigin_in_flight = 64\n"
    );
    for (i, mbps) in SITE_MBPS.iter().enumerate() {
        text.push_str(&format!(
            "[[site]]\nname = \"site{}\"\ncount = 1\ncohort = \"fleet\"\ndevices = {DEVICES}\n\
             uplink_mbps = {mbps}\nuplink_latency_ms = 0.05\nlan_mbps = 1000\n\
             lan_latency_ms = 0.05\ndevice_mbps = 1000\n\
             [[site.peer]]\nname = \"cache\"\nprefetch = true\nparent = \"origin\"\n\
             upstream_in_flight = 64\n",
            i + 1
        ));
    }
    text.push_str("[[wave]]\ncohort = \"fleet\"\nat_s = 0\npercent = 100\n");
    std::fs::write(&scenario, text).unwrap();
    let out = dir.join("simnet-out");
    run_ok(
        &bin("simnet"),
        &["run", s(&scenario), "--out", s(&out), "--seed", "1"],
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let sites = report["sites"].as_array().unwrap();
    assert_eq!(sites.len(), SITE_MBPS.len(), "{report}");
    sites
        .iter()
        .map(|site| {
            (
                site["completion_s"]
                    .as_f64()
                    .expect("every simulated site completes"),
                site["uplink_bytes"].as_u64().unwrap(),
            )
        })
        .collect()
}
