//! `ota-peer` between a real `ota-origin serve` and real `ota-device` processes: each chunk
//! crosses the uplink once however many devices want it (one peer, and a regional peer above
//! two site peers), prefetch ahead of the devices within the upstream budget, and check-ins
//! relayed to the origin. The origin's egress is read from its own Prometheus counter
//! (`ota_origin_blob_bytes_served_total`), not from the peer.
//!
//! The devices are configured with the peer as their origin (address and pin), so every byte
//! they get comes through it and every check-in is relayed by it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ota_core::chunk::{ChunkingParams, CutChunk, Ingest};
use ota_tests::netns::{self, Netns};
use ota_tests::{
    OriginFixture, Proc, Served, bin, http_get, metric, run, run_ok, test_image, wait_ready,
};
use serde_json::Value;

/// Bytes the origin must send at least once for `image`: its distinct chunks and its index.
fn unique_bytes(image: &[u8]) -> u64 {
    let mut ids = HashSet::new();
    let mut total = 0u64;
    let mut sink = |c: CutChunk<'_>| -> Result<(), std::convert::Infallible> {
        if ids.insert(*c.id()) {
            total += c.bytes().len() as u64;
        }
        Ok(())
    };
    let mut ingest = Ingest::new(ChunkingParams::DEFAULT);
    ingest.update(image, &mut sink).unwrap();
    let done = ingest.finish(&mut sink).unwrap();
    total + done.index.len() as u64
}

/// A running `ota-peer serve`.
struct PeerProc {
    _proc: Proc,
    quic: String,
    pin: String,
    metrics: String,
    data: PathBuf,
}

impl PeerProc {
    /// Enrolls the peer's node key at the origin as a relay, then starts it with its origin,
    /// `upstream` parents (if any) and `extra` flags.
    fn start(
        dir: &Path,
        name: &str,
        fixture: &OriginFixture,
        origin: &Served,
        upstream: Option<&Self>,
        extra: &[&str],
    ) -> Self {
        Self::start_in(None, dir, name, fixture, origin, upstream, extra)
    }

    /// [`Self::start`] inside the network namespace `netns` when given (its metrics are then
    /// out of the test's reach).
    fn start_in(
        netns: Option<&Netns>,
        dir: &Path,
        name: &str,
        fixture: &OriginFixture,
        origin: &Served,
        upstream: Option<&Self>,
        extra: &[&str],
    ) -> Self {
        let data = dir.join(name);
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
            name,
        ]);
        let ready = dir.join(format!("{name}.ready.json"));
        let mut command = match netns {
            Some(ns) => ns.command(&bin("ota-peer")),
            None => Command::new(bin("ota-peer")),
        };
        // In a namespace, on every interface: the LAN's devices reach it there.
        let listen = if netns.is_some() {
            "0.0.0.0:0"
        } else {
            "127.0.0.1:0"
        };
        command
            .args(["serve", "--listen", listen, "--metrics", "127.0.0.1:0"])
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
            .stderr(Stdio::piped());
        if let Some(parent) = upstream {
            command.args(["--upstream", &format!("{}={}", parent.quic, parent.pin)]);
        }
        let mut proc = Proc::spawn(name, &mut command);
        let ready = wait_ready(&mut proc, &ready);
        Self {
            quic: ready["quic"].as_str().unwrap().to_string(),
            pin: ready["pin"].as_str().unwrap().to_string(),
            metrics: format!("http://{}", ready["metrics"].as_str().unwrap()),
            data,
            _proc: proc,
        }
    }

    fn stats(&self) -> Value {
        let (status, body) = http_get(&self.metrics, "/stats", &[]).unwrap();
        assert_eq!(status, 200);
        serde_json::from_slice(&body).unwrap()
    }

    fn stat(&self, name: &str) -> u64 {
        self.stats()[name].as_u64().unwrap()
    }
}

/// The origin's blob egress so far, from its metrics.
fn origin_egress(served: &Served) -> u64 {
    let admin = format!("http://{}", served.ready["admin"].as_str().unwrap());
    let (status, text) = http_get(&admin, "/metrics", &[]).unwrap();
    assert_eq!(status, 200);
    metric(
        &String::from_utf8(text).unwrap(),
        "ota_origin_blob_bytes_served_total",
    )
    .unwrap_or(0.0) as u64
}

/// A device whose origin is `peer` (all its traffic goes through the peer).
fn device(dir: &Path, name: &str, fixture: &OriginFixture, peer: &PeerProc) -> PathBuf {
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
            &peer.quic,
            "--origin-pin",
            &peer.pin,
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

/// Runs `ota-device update` on every state directory at once; asserts each installed `image`.
fn update_all(states: &[PathBuf], image: &[u8]) {
    let children: Vec<_> = states
        .iter()
        .map(|state| {
            let out = state.with_extension("out");
            let err = state.with_extension("err");
            let mut command = Command::new(bin("ota-device"));
            command
                .args(["update", "--state", state.to_str().unwrap(), "--json"])
                .stdout(std::fs::File::create(&out).unwrap())
                .stderr(std::fs::File::create(&err).unwrap());
            (
                state.clone(),
                out,
                err,
                Proc::spawn("ota-device update", &mut command),
            )
        })
        .collect();
    for (state, out, err, mut proc) in children {
        let status = proc.wait_for(Duration::from_secs(240));
        let out = std::fs::read_to_string(out).unwrap();
        let err = std::fs::read_to_string(err).unwrap();
        assert!(
            status.success(),
            "{}: {status}\n{err}\n{out}",
            state.display()
        );
        let done: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        assert_eq!(done["outcome"], "installed", "{done}");
        let installed = std::fs::read(state.join("slots").join("B").join("system.img")).unwrap();
        assert!(installed == image, "{}: wrong image", state.display());
    }
}

fn publish(dir: &Path, fixture: &OriginFixture, seed: &str, len: usize) -> Vec<u8> {
    let image = test_image(seed, len);
    let path = dir.join(format!("{seed}.img"));
    std::fs::write(&path, &image).unwrap();
    fixture.release("stable", 1, &[("system", &path)], &[]);
    fixture.promote("stable", 1, &["--stable"]);
    image
}

/// One origin, one peer limited to 4 MB/s upstream, 20 devices updating at once through it:
/// the origin sends each unique chunk once (egress within 5% of the unique bytes), every device
/// installs the right image, every check-in relayed.
#[test]
fn twenty_devices_through_one_peer_cross_the_uplink_once() {
    let temp = tempfile::tempdir().unwrap();
    let fixture = OriginFixture::new(temp.path());
    let image = publish(temp.path(), &fixture, "peer twenty", 6 << 20);
    let unique = unique_bytes(&image);
    let served = fixture.serve_with(&["--admin", "127.0.0.1:0"]);
    let before = origin_egress(&served);
    let peer = PeerProc::start(
        temp.path(),
        "site",
        &fixture,
        &served,
        None,
        &["--upstream-rate", "4000000", "--no-prefetch"],
    );
    let states: Vec<PathBuf> = (0..20)
        .map(|i| device(temp.path(), &format!("device{i}"), &fixture, &peer))
        .collect();
    update_all(&states, &image);
    let egress = origin_egress(&served) - before;
    println!("20 devices, one peer: origin egress {egress} bytes for {unique} unique bytes");
    assert!(
        egress as f64 <= 1.05 * unique as f64,
        "origin sent {egress} bytes for {unique} unique bytes"
    );
    assert!(
        egress >= unique,
        "the devices' bytes came from the origin once: {egress} of {unique}"
    );
    let stats = peer.stats();
    assert!(
        stats["bytes_served"].as_u64().unwrap() >= 20 * image.len() as u64,
        "{stats}"
    );
    assert!(
        stats["relayed"].as_u64().unwrap() >= 40,
        "challenges and check-ins relayed: {stats}"
    );
    assert_eq!(stats["verification_failures"], 0);
}

/// Origin → regional peer → two site peers → three devices each: the origin sends each chunk
/// once in total.
#[test]
fn two_levels_of_peers_the_origin_sends_each_chunk_once() {
    let temp = tempfile::tempdir().unwrap();
    let fixture = OriginFixture::new(temp.path());
    let image = publish(temp.path(), &fixture, "peer two levels", 4 << 20);
    let unique = unique_bytes(&image);
    let served = fixture.serve_with(&["--admin", "127.0.0.1:0"]);
    let before = origin_egress(&served);
    let regional = PeerProc::start(
        temp.path(),
        "regional",
        &fixture,
        &served,
        None,
        &["--no-prefetch"],
    );
    let sites: Vec<PeerProc> = ["site-a", "site-b"]
        .iter()
        .map(|name| {
            PeerProc::start(
                temp.path(),
                name,
                &fixture,
                &served,
                Some(&regional),
                &["--no-prefetch"],
            )
        })
        .collect();
    let mut states = Vec::new();
    for (s, site) in sites.iter().enumerate() {
        for d in 0..3 {
            states.push(device(
                temp.path(),
                &format!("device{s}-{d}"),
                &fixture,
                site,
            ));
        }
    }
    update_all(&states, &image);
    let egress = origin_egress(&served) - before;
    println!("two levels, six devices: origin egress {egress} bytes for {unique} unique bytes");
    assert!(
        egress as f64 <= 1.05 * unique as f64,
        "origin sent {egress} bytes for {unique} unique bytes"
    );
    // Each site pulled the release from the regional peer, not the origin.
    for site in &sites {
        assert!(site.stat("bytes_up") >= image.len() as u64 * 9 / 10);
    }
    assert!(regional.stat("bytes_served") >= 2 * image.len() as u64 * 9 / 10);
}

/// A release promoted before the peer starts is prefetched in full before any device asks,
/// within the upstream budget measured over the transfer; then devices are served from the
/// peer with no more egress at the origin.
#[test]
fn prefetch_holds_the_release_before_devices_ask_within_budget() {
    let temp = tempfile::tempdir().unwrap();
    let fixture = OriginFixture::new(temp.path());
    let image = publish(temp.path(), &fixture, "peer prefetch", 6 << 20);
    let unique = unique_bytes(&image);
    let served = fixture.serve_with(&["--admin", "127.0.0.1:0"]);
    let rate = 2_000_000u64;
    let burst = 1_048_576u64;
    let before = origin_egress(&served);
    let started = Instant::now();
    let peer = PeerProc::start(
        temp.path(),
        "prefetcher",
        &fixture,
        &served,
        None,
        &[
            "--upstream-rate",
            &rate.to_string(),
            "--upstream-burst",
            &burst.to_string(),
            "--channel",
            "stable",
            "--poll-secs",
            "1",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while peer.stat("stored_bytes") < unique {
        assert!(
            Instant::now() < deadline,
            "prefetch did not finish: {}",
            peer.stats()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let stats = peer.stats();
    assert_eq!(stats["hits"], 0, "no device asked yet");
    assert_eq!(stats["misses"], 0);
    let pulled = stats["bytes_up"].as_u64().unwrap();
    assert!(pulled >= image.len() as u64, "{stats}");
    // The chunk index is fetched outside the budget (it is 0.06% of the release).
    assert!(
        pulled as f64 <= burst as f64 + rate as f64 * elapsed,
        "pulled {pulled} bytes in {elapsed:.2} s; the budget allows {} bytes",
        burst as f64 + rate as f64 * elapsed
    );
    let prefetch_egress = origin_egress(&served) - before;
    println!(
        "prefetch: {pulled} chunk bytes in {elapsed:.2} s (budget {rate} B/s + {burst} B burst \
         allows {:.0}); origin egress {prefetch_egress} for {unique} unique bytes",
        burst as f64 + rate as f64 * elapsed
    );
    assert!(
        prefetch_egress as f64 <= 1.05 * unique as f64,
        "{prefetch_egress} for {unique}"
    );

    let states: Vec<PathBuf> = (0..3)
        .map(|i| device(temp.path(), &format!("device{i}"), &fixture, &peer))
        .collect();
    update_all(&states, &image);
    assert_eq!(
        origin_egress(&served) - before,
        prefetch_egress,
        "devices were served by the peer alone"
    );
    let stats = peer.stats();
    assert_eq!(stats["misses"], 0, "every chunk was a hit: {stats}");
    assert!(stats["prefetched"].as_u64().unwrap() > 0);
    let _ = &peer.data;
}

/// Origin → a proxy that corrupts the first copy of every fourth blob → site peer (the proxy
/// first among its upstreams, the origin second) → three devices: the peer stores and serves
/// none of the corrupted blobs (each one counted in `verification_failures`), sets the proxy
/// aside and takes the blobs from the origin, and every device installs the right image
/// without banning its source (it never received a bad chunk).
#[test]
fn corrupt_upstream_between_peer_and_origin_never_reaches_the_devices() {
    use ota_tests::fake_peer::CorruptingProxy;
    let temp = tempfile::tempdir().unwrap();
    let fixture = OriginFixture::new(temp.path());
    let image = publish(temp.path(), &fixture, "peer corrupt upstream", 4 << 20);
    let served = fixture.serve();
    let proxy = CorruptingProxy::start(served.quic, &served.pin, 4);
    let origin = format!("{}={}", served.quic, served.pin);
    let peer = PeerProc::start(
        temp.path(),
        "site",
        &fixture,
        &served,
        None,
        &[
            "--no-prefetch",
            "--upstream",
            &proxy.upstream_arg(),
            "--upstream",
            &origin,
        ],
    );
    let states: Vec<PathBuf> = (0..3)
        .map(|i| device(temp.path(), &format!("device{i}"), &fixture, &peer))
        .collect();
    update_all(&states, &image);
    for state in &states {
        let out = std::fs::read_to_string(state.with_extension("out")).unwrap();
        let done: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        assert!(
            done["banned"].as_object().is_none_or(|b| b.is_empty()),
            "the device received a bad chunk from the peer: {done}"
        );
    }
    let corrupted = proxy.corrupted();
    assert!(!corrupted.is_empty(), "the proxy corrupted something");
    let stats = peer.stats();
    assert_eq!(
        stats["verification_failures"].as_u64().unwrap(),
        corrupted.len() as u64,
        "each corrupted blob is caught and counted: {stats}"
    );
    // What the peer holds is what the origin signed: every stored chunk file hashes to its id.
    let chunks = peer.data.join("chunks");
    let mut checked = 0;
    for sub in std::fs::read_dir(&chunks).unwrap() {
        for file in std::fs::read_dir(sub.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(
                ota_core::digest::ChunkId::of(&bytes).to_hex(),
                name,
                "a corrupt chunk was stored"
            );
            checked += 1;
        }
    }
    assert!(checked > 0);
}

/// `ota-origin serve` inside `ns` (on the namespace's loopback).
fn origin_in(ns: &Netns, fixture: &OriginFixture) -> Served {
    origin_at(Some(ns), fixture, "127.0.0.1:0")
}

/// `ota-origin serve` listening on `listen`, inside `ns` when given.
fn origin_at(ns: Option<&Netns>, fixture: &OriginFixture, listen: &str) -> Served {
    let ready = fixture.data.join("ready.json");
    let _ = std::fs::remove_file(&ready);
    let mut command = match ns {
        Some(ns) => ns.command(&bin("ota-origin")),
        None => Command::new(bin("ota-origin")),
    };
    command
        .args(["serve", "--data", fixture.data_str()])
        .args(["--listen", listen])
        .arg("--ready-file")
        .arg(&ready)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut proc = Proc::spawn("ota-origin serve", &mut command);
    let ready = wait_ready(&mut proc, &ready);
    Served {
        quic: ready["quic"].as_str().unwrap().parse().unwrap(),
        pin: ready["pin"].as_str().unwrap().to_string(),
        http: None,
        ready,
        proc,
    }
}

/// A device whose origin is the origin itself (no peer configured), enrolled on `stable`.
fn plain_device(dir: &Path, fixture: &OriginFixture, origin: &Served) -> PathBuf {
    let state = dir.join("device");
    let out = run_ok(
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
            &origin.quic.to_string(),
            "--origin-pin",
            &origin.pin,
        ],
    );
    let handle = fixture.enroll(out.trim(), "stable");
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

/// Runs `ota-device update --json ARGS` (inside `ns` when given); the final report.
fn update_report(ns: Option<&Netns>, state: &Path, args: &[&str]) -> Value {
    let mut command = match ns {
        Some(ns) => ns.command(&bin("ota-device")),
        None => Command::new(bin("ota-device")),
    };
    command
        .args(["update", "--state", state.to_str().unwrap(), "--json"])
        .args(args)
        .stdout(std::fs::File::create(state.with_extension("out")).unwrap())
        .stderr(std::fs::File::create(state.with_extension("err")).unwrap());
    let status = Proc::spawn("ota-device update", &mut command).wait_for(Duration::from_secs(240));
    let out = std::fs::read_to_string(state.with_extension("out")).unwrap();
    let err = std::fs::read_to_string(state.with_extension("err")).unwrap();
    assert!(status.success(), "{status}\n{err}\n{out}");
    serde_json::from_str(out.lines().last().unwrap()).unwrap()
}

/// The bytes a device's report says came from discovered LAN caches.
fn discovered_bytes(report: &Value) -> u64 {
    report["sources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            s["kind"] == "lan_peer" && s["name"].as_str().unwrap_or("").ends_with("(discovered)")
        })
        .map(|s| s["bytes"].as_u64().unwrap_or(0))
        .sum()
}

/// A device with no peer configured finds the site's `ota-peer` by libp2p mDNS and takes the
/// release from it. mDNS is multicast, so the origin, the peer and the device run inside a
/// network namespace of the test's own with a veth pair for a LAN; where namespaces cannot be
/// made, the test says so and checks static discovery (a bootstrap address) instead.
#[test]
fn devices_find_the_peer_by_mdns_with_no_configuration() {
    let test = "devices_find_the_peer_by_mdns_with_no_configuration";
    let temp = tempfile::tempdir().unwrap();
    let fixture = OriginFixture::new(temp.path());
    let image = publish(temp.path(), &fixture, "peer mdns", 3 << 20);
    if let Some(why) = netns::unavailable() {
        assert!(
            std::env::var_os("OTA_REQUIRE_NETNS").is_none(),
            "{test}: OTA_REQUIRE_NETNS is set but network namespaces are unusable: {why}"
        );
        eprintln!(
            "{test}: mDNS NOT TESTED on this host: network namespaces are unusable ({why}); \
             checking static discovery (a bootstrap address) instead"
        );
        let served = fixture.serve();
        let peer = PeerProc::start_in(
            None,
            temp.path(),
            "site",
            &fixture,
            &served,
            None,
            &["--no-prefetch", "--discovery", "127.0.0.1:0", "--no-mdns"],
        );
        let ready: Value = serde_json::from_str(
            &std::fs::read_to_string(temp.path().join("site.ready.json")).unwrap(),
        )
        .unwrap();
        let node = ready["discovery"][0].as_str().unwrap().to_string();
        let state = plain_device(temp.path(), &fixture, &served);
        let report = update_report(
            None,
            &state,
            &["--bootstrap", &node, "--discover-wait-ms", "15000"],
        );
        assert_eq!(report["outcome"], "installed", "{report}");
        assert!(discovered_bytes(&report) > 0, "{report}");
        drop(peer);
        return;
    }
    let ns = Netns::new("mdns").unwrap();
    // A LAN: a veth pair whose two ends are both in the namespace (multicast goes out of one
    // and in at the other, and never leaves the namespace).
    ns.ip(&[
        "link", "add", "lan0", "type", "veth", "peer", "name", "lan1",
    ])
    .unwrap();
    ns.ip(&["addr", "add", "10.204.0.1/24", "dev", "lan0"])
        .unwrap();
    ns.ip(&["addr", "add", "10.204.0.2/24", "dev", "lan1"])
        .unwrap();
    ns.ip(&["link", "set", "lan0", "up"]).unwrap();
    ns.ip(&["link", "set", "lan1", "up"]).unwrap();
    let served = origin_in(&ns, &fixture);
    let peer = PeerProc::start_in(
        Some(&ns),
        temp.path(),
        "site",
        &fixture,
        &served,
        None,
        &["--no-prefetch", "--discovery", "0.0.0.0:0"],
    );
    let state = plain_device(temp.path(), &fixture, &served);
    // No --peer, no --bootstrap: mDNS only.
    let report = update_report(
        Some(&ns),
        &state,
        &["--discover", "--discover-wait-ms", "15000"],
    );
    assert_eq!(report["outcome"], "installed", "{report}");
    let installed = std::fs::read(state.join("slots").join("B").join("system.img")).unwrap();
    assert!(installed == image, "wrong image");
    let from_peer = discovered_bytes(&report);
    println!("mDNS: the device found the peer and took {from_peer} bytes from it: {report}");
    assert!(
        from_peer > image.len() as u64 / 2,
        "most bytes came from the peer found by mDNS: {report}"
    );
    drop(peer);
    drop(served);
}

/// `ota-origin` killed and restarted on its address answers the connections it lost with a
/// stateless reset (its secret kept in `keys/quic-reset.key`), so a client's open connection
/// fails at once with `Reset` and a new one is served; a site peer whose upstream connection
/// died that way serves the next device from the restarted origin.
#[test]
fn restarted_origin_resets_the_connections_it_lost() {
    use ota_net::client::{ClientError, Connector};
    let temp = tempfile::tempdir().unwrap();
    let fixture = OriginFixture::new(temp.path());
    let image = publish(temp.path(), &fixture, "origin restart", 1 << 20);
    let mut served = origin_at(None, &fixture, "127.0.0.1:0");
    let secret = fixture.data.join("keys").join("quic-reset.key");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let meta = std::fs::metadata(&secret).unwrap();
        assert_eq!(meta.len(), 32);
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
    let kept = std::fs::read(&secret).unwrap();
    let peer = PeerProc::start(
        temp.path(),
        "site",
        &fixture,
        &served,
        None,
        &["--no-prefetch"],
    );
    let first = device(temp.path(), "device0", &fixture, &peer);
    update_all(std::slice::from_ref(&first), &image);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let pin = served.pin.parse().unwrap();
    let addr = served.quic;
    let old = rt.block_on(async {
        let connector =
            Connector::bind("127.0.0.1:0".parse().unwrap(), Default::default()).unwrap();
        let client = connector.connect(addr, pin).await.unwrap();
        client
            .metadata("timestamp.json", 1 << 20)
            .await
            .unwrap()
            .unwrap();
        client
    });
    served.proc.kill();
    let served = origin_at(None, &fixture, &addr.to_string());
    assert_eq!(served.quic, addr);
    assert_eq!(std::fs::read(&secret).unwrap(), kept, "the secret is kept");
    rt.block_on(async {
        match old.metadata("timestamp.json", 1 << 20).await {
            Err(ClientError::Connection {
                source: quinn::ConnectionError::Reset,
                ..
            }) => {}
            other => panic!("expected a stateless reset, got {other:?}"),
        }
    });
    // The peer's upstream connection died with the origin: the next device is served through
    // it from the restarted origin.
    let second = device(temp.path(), "device1", &fixture, &peer);
    update_all(std::slice::from_ref(&second), &image);
    drop(peer);
    drop(served);
}
