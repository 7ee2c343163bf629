//! `simnet live`: the whole system as real processes on loopback.
//!
//! It makes the authorities' keys and the root with `ota-sign`, initialises an `ota-origin`,
//! publishes a release (two operators approve, the release and manifest authorities sign),
//! starts one `ota-peer` per site (its uplink limited to `--uplink` bytes per second) and
//! `--devices` `ota-device`s per site, rolls the release out, then publishes a delta release
//! and rolls it out in two waves (half the fleet, then everyone). Site 1 also has a
//! deliberately corrupting peer (in this process): it flips a byte in every tenth chunk it
//! serves; devices must ban it, name it, and still install the signed image.
//!
//! It ends with a table (per device: bytes by source, verified, installed; per site: uplink
//! bytes) and exits 0 only if every device runs the signed image of each release: the
//! active slot's bytes are compared with the build here, not taken from the device's word.

pub mod calibrate;
mod ceremony;

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use ota_tests::fake_peer::{FakePeer, Mode};
use ota_tests::{Proc, http_get, metric, test_image, wait_ready};
use sha2::{Digest as _, Sha256};

use ceremony::{Authorities, Bins, run, s};

/// The demo's shape.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// Sites, each with one cache.
    pub sites: usize,
    /// Devices per site.
    pub devices: usize,
    /// Size of the system image in MiB.
    pub image_mib: usize,
    /// Each site's uplink (its cache's upstream budget), bytes per second.
    pub uplink: u64,
    /// Where to keep everything (default: a temporary directory, removed at the end).
    pub dir: Option<PathBuf>,
    /// After release 1, print what `simnet run` predicts for this topology beside what the
    /// programs did ([`calibrate`]).
    pub calibrate: bool,
}

const CHANNEL: &str = "stable";
const MODEL: &str = "enigm-one";
const ADMIN_TOKEN: &str = "simnet-live-admin";

/// Runs the demo; `Ok(true)` when every device installed every signed image.
pub fn run_live(options: &LiveOptions) -> Result<bool> {
    ensure!(options.sites >= 1, "--sites must be at least 1");
    ensure!(options.devices >= 1, "--devices must be at least 1");
    ensure!(options.image_mib >= 1, "--image-mib must be at least 1");
    let started = Instant::now();
    let bins = Bins::beside_me()?;
    let temp;
    let dir = match &options.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            dir.clone()
        }
        None => {
            temp = tempdir()?;
            temp.path.clone()
        }
    };
    let say = |step: &str| println!("[{:6.1}s] {step}", started.elapsed().as_secs_f64());

    say("ceremony: keys, signing station, root, origin init");
    let expires = ota_core::time::UnixTime(now_secs() + 300 * 86_400);
    let auth = Authorities::ceremony(&dir.join("authorities"), &bins, expires)?;
    say(&format!("  {}", auth.store().describe()));
    say(
        "  director root signed in-process by a director-root key (ota-sign has no director-root ceremony)",
    );

    let image_len = options.image_mib << 20;
    let build1 = dir.join("build-1.img");
    let image1 = test_image("simnet live release 1", image_len);
    std::fs::write(&build1, &image1)?;
    say(&format!(
        "release 1: ingest {} MiB, approvals by alice and bob, sign, register, validate",
        options.image_mib
    ));
    auth.publish(CHANNEL, 1, MODEL, &[("system", &build1)])?;
    promote(&bins, &auth, 1, &["--stable"])?;

    let origin = Origin::serve(&bins, &auth)?;
    say(&format!(
        "origin serving: QUIC {}, mirror {}",
        origin.quic, origin.http
    ));
    // Caches start prefetching as soon as they are up: count egress from here.
    let egress0 = origin.egress()?;

    // Sites: one cache each, then the devices.
    let sites_started = Instant::now();
    let mut sites = Vec::new();
    for site in 0..options.sites {
        sites.push(Site::start(&bins, &dir, site, &origin, options.uplink)?);
    }
    say(&format!(
        "{} site cache(s) up, uplink {:.1} MB/s each",
        sites.len(),
        options.uplink as f64 / 1e6
    ));
    let hostile = FakePeer::start(&auth.data.join("blobs"), Mode::CorruptEveryTenth);
    say(&format!(
        "hostile peer at site 1 ({}) corrupts every tenth chunk it serves",
        hostile.peer_arg()
    ));

    let mut devices = Vec::new();
    for (site_index, site) in sites.iter().enumerate() {
        for n in 0..options.devices {
            let name = format!("s{}-d{}", site_index + 1, n + 1);
            let mut peers = vec![site.peer_arg.clone()];
            if site_index == 0 {
                peers.push(hostile.peer_arg());
            }
            devices.push(Device::init(
                &bins, &dir, &name, site_index, peers, &auth, &origin,
            )?);
        }
    }
    say(&format!(
        "{} devices initialised and enrolled",
        devices.len()
    ));

    let mut ok = true;
    say("release 1: rollout to every device");
    let devices_at = sites_started.elapsed();
    let round1 = update_round(&bins, &devices, started)?;
    // Until the last device said it was done (not until the demo noticed its exit: it looks
    // every 200 ms).
    let round1_done = round1.values().filter_map(|o| o.done_at).max().map_or_else(
        || sites_started.elapsed(),
        |at| at.saturating_duration_since(sites_started),
    );
    boot_all(&bins, &devices)?;
    let egress1 = origin.egress()? - egress0;
    ok &= check_installed(&bins, &devices, 1, &image1, &round1)?;
    let unique1 = new_chunk_bytes(&[], &image1)?;
    print_table(
        "release 1",
        &devices,
        &round1,
        &sites,
        egress1,
        unique1,
        &origin,
    )?;
    if options.calibrate {
        let live = calibrate::Figures {
            completion_s: round1_done.as_secs_f64(),
            origin_egress: egress1,
        };
        let devices_at = devices_at.as_secs_f64();
        calibrate::print(live, calibrate::predict(options, devices_at)?, devices_at);
    }

    // The delta release: 5% of the image changed, in a few places.
    let mut image2 = image1.clone();
    let changed = test_image("simnet live release 2", image_len / 20);
    let piece = changed.len() / 8;
    for (i, part) in changed.chunks(piece.max(1)).enumerate().take(8) {
        let at = (i * image_len / 8 + image_len / 32).min(image_len - part.len());
        image2[at..at + part.len()].copy_from_slice(part);
    }
    let build2 = dir.join("build-2.img");
    std::fs::write(&build2, &image2)?;
    say("release 2 (delta, 5% changed): ingest, approvals, sign, register, validate");
    auth.publish(CHANNEL, 2, MODEL, &[("system", &build2)])?;
    for site in &sites {
        site.reset_counters()?;
    }
    let egress_before = origin.egress()?;
    promote(&bins, &auth, 2, &["--percent", "50"])?;
    say("release 2: wave 1, 50% of the fleet");
    let wave1 = update_round(&bins, &devices, started)?;
    boot_all(&bins, &devices)?;
    let offered = wave1.values().filter(|r| r.outcome == "installed").count();
    say(&format!(
        "  wave 1: {offered} of {} devices were offered release 2",
        devices.len()
    ));
    promote(&bins, &auth, 2, &["--stable"])?;
    say("release 2: wave 2, everyone");
    let wave2 = update_round(&bins, &devices, started)?;
    boot_all(&bins, &devices)?;
    let egress2 = origin.egress()? - egress_before;
    let mut round2 = wave1;
    for (name, report) in wave2 {
        if report.outcome != "no_offer" || !round2.contains_key(&name) {
            round2.insert(name, report);
        }
    }
    ok &= check_installed(&bins, &devices, 2, &image2, &round2)?;
    let changed_bytes = new_chunk_bytes(&image1, &image2)?;
    print_table(
        "release 2 (delta)",
        &devices,
        &round2,
        &sites,
        egress2,
        changed_bytes,
        &origin,
    )?;

    drop(hostile);
    say(if ok {
        "every device runs the signed image of release 2"
    } else {
        "FAILED: some device does not run the signed image (see above)"
    });
    Ok(ok)
}

fn promote(bins: &Bins, auth: &Authorities, number: u64, how: &[&str]) -> Result<()> {
    let number = number.to_string();
    let mut args = vec![
        "release",
        "promote",
        "--data",
        s(&auth.data),
        "--channel",
        CHANNEL,
        "--release",
        &number,
    ];
    args.extend(how);
    run(&bins.origin, &args, &[])?;
    Ok(())
}

/// The running origin.
struct Origin {
    quic: SocketAddr,
    pin: String,
    http: String,
    admin: String,
    _proc: Proc,
}

impl Origin {
    fn serve(bins: &Bins, auth: &Authorities) -> Result<Self> {
        let ready = auth.data.join("ready.json");
        let _ = std::fs::remove_file(&ready);
        let mut command = Command::new(&bins.origin);
        command
            .args(["serve", "--data", s(&auth.data)])
            .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .args(["--admin", "127.0.0.1:0", "--ready-file", s(&ready)])
            .env("OTA_ADMIN_TOKEN", ADMIN_TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut proc = Proc::spawn("ota-origin serve", &mut command);
        let v = wait_ready(&mut proc, &ready);
        let field = |name: &str| -> Result<String> {
            Ok(v[name]
                .as_str()
                .with_context(|| format!("ready file without {name}"))?
                .to_string())
        };
        Ok(Self {
            quic: field("quic")?.parse()?,
            pin: field("pin")?,
            http: format!("http://{}", field("http")?),
            admin: format!("http://{}", field("admin")?),
            _proc: proc,
        })
    }

    /// Blob bytes the origin has sent so far (QUIC and the HTTP mirror).
    fn egress(&self) -> Result<u64> {
        let (status, body) = http_get(&self.admin, "/metrics", &[])?;
        ensure!(status == 200, "origin /metrics answered {status}");
        let text = String::from_utf8_lossy(&body);
        Ok(metric(&text, "ota_origin_blob_bytes_served_total").unwrap_or(0.0) as u64)
    }
}

/// A site: its cache.
struct Site {
    peer_arg: String,
    metrics: String,
    data: PathBuf,
    base_up: Mutex<u64>,
    _proc: Proc,
}

impl Site {
    fn start(bins: &Bins, dir: &Path, index: usize, origin: &Origin, uplink: u64) -> Result<Self> {
        let data = dir.join(format!("site-{}", index + 1)).join("cache");
        std::fs::create_dir_all(&data)?;
        let ready = data.join("ready.json");
        let _ = std::fs::remove_file(&ready);
        let origin_addr = origin.quic.to_string();
        let rate = uplink.to_string();
        let mut command = Command::new(&bins.peer);
        command
            .args(["serve", "--data", s(&data), "--listen", "127.0.0.1:0"])
            .args(["--origin", &origin_addr, "--origin-pin", &origin.pin])
            .args(["--upstream-rate", &rate, "--metrics", "127.0.0.1:0"])
            .args(["--ready-file", s(&ready)])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut proc = Proc::spawn("ota-peer serve", &mut command);
        let v = wait_ready(&mut proc, &ready);
        let quic = v["quic"].as_str().context("peer ready file: quic")?;
        let pin = v["pin"].as_str().context("peer ready file: pin")?;
        let metrics = v["metrics"].as_str().context("peer ready file: metrics")?;
        Ok(Self {
            peer_arg: format!("{quic}={pin}"),
            metrics: format!("http://{metrics}"),
            data,
            base_up: Mutex::new(0),
            _proc: proc,
        })
    }

    /// Bytes pulled over the uplink since the last reset (chunks and chunk indexes).
    fn uplink_bytes(&self) -> Result<u64> {
        let (status, body) = http_get(&self.metrics, "/metrics", &[])?;
        ensure!(
            status == 200,
            "peer /metrics answered {status} ({})",
            self.data.display()
        );
        let text = String::from_utf8_lossy(&body);
        let total = metric(&text, "ota_peer_bytes_up_total").unwrap_or(0.0)
            + metric(&text, "ota_peer_index_bytes_up_total").unwrap_or(0.0);
        let base = *self
            .base_up
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        Ok(total as u64 - base.min(total as u64))
    }

    fn reset_counters(&self) -> Result<()> {
        let now = self.uplink_bytes()?
            + *self
                .base_up
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?;
        *self
            .base_up
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))? = now;
        Ok(())
    }
}

/// A device: its state directory and where it looks for bytes.
struct Device {
    name: String,
    site: usize,
    state: PathBuf,
    peers: Vec<String>,
}

impl Device {
    fn init(
        bins: &Bins,
        dir: &Path,
        name: &str,
        site: usize,
        peers: Vec<String>,
        auth: &Authorities,
        origin: &Origin,
    ) -> Result<Self> {
        let state = dir.join(format!("site-{}", site + 1)).join(name);
        let quic = origin.quic.to_string();
        let out = run(
            &bins.device,
            &[
                "init",
                "--state",
                s(&state),
                "--root",
                s(&auth.root),
                "--director-root",
                s(&auth.director_root),
                "--origin",
                &quic,
                "--origin-pin",
                &origin.pin,
                "--http",
                &origin.http,
            ],
            &[],
        )?;
        let public = out
            .lines()
            .rev()
            .find(|l| l.trim().len() == 64)
            .context("ota-device init printed no public key")?
            .trim()
            .to_string();
        let handle = run(
            &bins.origin,
            &[
                "device",
                "enroll",
                "--data",
                s(&auth.data),
                "--public-key",
                &public,
                "--channel",
                CHANNEL,
                "--model",
                MODEL,
            ],
            &[],
        )?;
        run(
            &bins.device,
            &["enrolled", "--state", s(&state), "--handle", handle.trim()],
            &[],
        )?;
        Ok(Self {
            name: name.to_string(),
            site,
            state,
            peers,
        })
    }
}

/// What one `ota-device update` said at the end.
#[derive(Debug, Clone, Default)]
struct Outcome {
    outcome: String,
    reason: Option<String>,
    bytes_by_kind: BTreeMap<String, u64>,
    banned: Vec<String>,
    exit: Option<i32>,
    /// When the device printed its `done` event (it had installed, or given up).
    done_at: Option<Instant>,
}

/// Runs `ota-device update --json` on every device at once, showing progress.
fn update_round(
    bins: &Bins,
    devices: &[Device],
    started: Instant,
) -> Result<BTreeMap<String, Outcome>> {
    let progress: Arc<Mutex<BTreeMap<String, (u64, u64)>>> = Arc::default();
    let outcomes: Arc<Mutex<BTreeMap<String, Outcome>>> = Arc::default();
    let mut threads = Vec::new();
    for device in devices {
        let mut command = Command::new(&bins.device);
        command.args(["update", "--state", s(&device.state), "--json"]);
        for peer in &device.peers {
            command.args(["--peer", peer]);
        }
        command.stdout(Stdio::piped()).stderr(Stdio::null());
        let mut proc = Proc::spawn(
            &format!("ota-device update ({})", device.name),
            &mut command,
        );
        let stdout = proc.child().stdout.take().context("piped stdout")?;
        let (name, progress, outcomes) = (device.name.clone(), progress.clone(), outcomes.clone());
        threads.push(std::thread::spawn(move || {
            let mut last = Outcome::default();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                match v["event"].as_str() {
                    Some("progress") => {
                        let done = v["done"].as_u64().unwrap_or(0);
                        let total = v["total"].as_u64().unwrap_or(0);
                        if let Ok(mut p) = progress.lock() {
                            p.insert(name.clone(), (done, total));
                        }
                    }
                    Some("done") => {
                        last.done_at = Some(Instant::now());
                        last.outcome = v["outcome"].as_str().unwrap_or("?").to_string();
                        last.reason = v["reason"].as_str().map(str::to_string);
                        if let Some(map) = v["bytes_by_kind"].as_object() {
                            for (k, n) in map {
                                last.bytes_by_kind
                                    .insert(k.clone(), n.as_u64().unwrap_or(0));
                            }
                        }
                        if let Some(map) = v["banned"].as_object() {
                            last.banned = map
                                .iter()
                                .map(|(k, why)| {
                                    let why: String =
                                        why.as_str().unwrap_or("").chars().take(40).collect();
                                    format!("{k}: {why}…")
                                })
                                .collect();
                        }
                    }
                    _ => {}
                }
            }
            let status = proc.wait_for(Duration::from_secs(600));
            last.exit = status.code();
            if last.outcome.is_empty() {
                last.outcome = "failed".into();
                last.reason = Some(format!("exited with {status} without a report"));
            }
            if let Ok(mut o) = outcomes.lock() {
                o.insert(name, last);
            }
        }));
    }
    let terminal = std::io::stdout().is_terminal();
    let mut last_print = Instant::now();
    while threads.iter().any(|t| !t.is_finished()) {
        std::thread::sleep(Duration::from_millis(200));
        if last_print.elapsed() >= Duration::from_secs(if terminal { 1 } else { 5 }) {
            last_print = Instant::now();
            let (done, total) = progress
                .lock()
                .map(|p| p.values().fold((0, 0), |(d, t), (a, b)| (d + a, t + b)))
                .unwrap_or((0, 0));
            let finished = outcomes.lock().map(|o| o.len()).unwrap_or(0);
            let line = format!(
                "[{:6.1}s]   {finished}/{} devices finished, {:.1} of {:.1} MiB verified",
                started.elapsed().as_secs_f64(),
                devices.len(),
                done as f64 / 1048576.0,
                total as f64 / 1048576.0
            );
            if terminal {
                print!("\r{line}   ");
                let _ = std::io::stdout().flush();
            } else {
                println!("{line}");
            }
        }
    }
    if terminal {
        println!();
    }
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("a device thread panicked"))?;
    }
    let outcomes = outcomes
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    Ok(outcomes)
}

/// The simulated bootloader: every device with a pending slot boots it and marks it good.
fn boot_all(bins: &Bins, devices: &[Device]) -> Result<()> {
    for device in devices {
        run(
            &bins.device,
            &["boot-check", "--state", s(&device.state)],
            &[],
        )?;
    }
    Ok(())
}

/// Whether every device's active slot holds exactly `image` as release `number`; prints the
/// devices that do not.
fn check_installed(
    bins: &Bins,
    devices: &[Device],
    number: u64,
    image: &[u8],
    outcomes: &BTreeMap<String, Outcome>,
) -> Result<bool> {
    let want = Sha256::digest(image);
    let mut ok = true;
    for device in devices {
        let status: serde_json::Value = serde_json::from_str(&run(
            &bins.device,
            &["status", "--state", s(&device.state), "--json"],
            &[],
        )?)
        .context("ota-device status --json")?;
        let release = status["active_release"].as_u64();
        let slot = status["active"].as_str().unwrap_or("?").to_string();
        let file = device.state.join("slots").join(&slot).join("system.img");
        let same = std::fs::read(&file).is_ok_and(|bytes| Sha256::digest(&bytes) == want);
        if release != Some(number) || !same {
            ok = false;
            let why = outcomes
                .get(&device.name)
                .map(|o| format!("{} {}", o.outcome, o.reason.clone().unwrap_or_default()))
                .unwrap_or_default();
            println!(
                "  {}: active release {release:?}, slot {slot}, image {} — {why}",
                device.name,
                if same { "matches" } else { "DOES NOT MATCH" }
            );
        }
    }
    Ok(ok)
}

fn print_table(
    title: &str,
    devices: &[Device],
    outcomes: &BTreeMap<String, Outcome>,
    sites: &[Site],
    egress: u64,
    unique: u64,
    origin: &Origin,
) -> Result<()> {
    let mib = |b: u64| b as f64 / 1048576.0;
    println!("\n{title}: per device (MiB by source)");
    println!(
        "  {:<8} {:>8} {:>8} {:>8} {:>8} {:>8}  {:<10} banned",
        "device", "peer", "origin", "mirror", "local", "verified", "outcome"
    );
    for device in devices {
        let Some(o) = outcomes.get(&device.name) else {
            continue;
        };
        let by = |k: &str| o.bytes_by_kind.get(k).copied().unwrap_or(0);
        let verified: u64 = o.bytes_by_kind.values().sum();
        println!(
            "  {:<8} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}  {:<10} {}",
            device.name,
            mib(by("lan_peer")),
            mib(by("origin")),
            mib(by("http_mirror")),
            mib(by("local_slot")),
            mib(verified),
            o.outcome,
            o.banned.join("; ")
        );
    }
    println!("{title}: per site");
    for (i, site) in sites.iter().enumerate() {
        let direct: u64 = devices
            .iter()
            .filter(|d| d.site == i)
            .filter_map(|d| outcomes.get(&d.name))
            .map(|o| {
                o.bytes_by_kind.get("origin").copied().unwrap_or(0)
                    + o.bytes_by_kind.get("http_mirror").copied().unwrap_or(0)
            })
            .sum();
        println!(
            "  site {}: uplink {:.2} MiB through the cache + {:.2} MiB fetched by devices from the origin directly",
            i + 1,
            mib(site.uplink_bytes()?),
            mib(direct)
        );
    }
    println!(
        "{title}: origin egress {:.2} MiB for {:.2} MiB of new bytes ({} sites); origin {}\n",
        mib(egress),
        mib(unique),
        sites.len(),
        origin.quic
    );
    Ok(())
}

/// Bytes of the chunks of `new` that `old` does not have (what a delta update must move),
/// cut as the origin cuts them.
fn new_chunk_bytes(old: &[u8], new: &[u8]) -> Result<u64> {
    use ota_core::chunk::{ChunkingParams, CutChunk, Ingest};
    use ota_core::digest::ChunkId;
    fn cut(bytes: &[u8]) -> Result<Vec<(ChunkId, u64)>> {
        let mut ingest = Ingest::new(ChunkingParams::DEFAULT);
        let mut chunks = Vec::new();
        let mut sink = |c: CutChunk<'_>| {
            chunks.push((*c.id(), c.bytes().len() as u64));
            Ok::<(), std::convert::Infallible>(())
        };
        ingest
            .update(bytes, &mut sink)
            .map_err(|e| anyhow::anyhow!("chunking: {e:?}"))?;
        ingest
            .finish(&mut sink)
            .map_err(|e| anyhow::anyhow!("chunking: {e:?}"))?;
        Ok(chunks)
    }
    let have: std::collections::BTreeSet<ChunkId> =
        cut(old)?.into_iter().map(|(id, _)| id).collect();
    let mut seen = std::collections::BTreeSet::new();
    Ok(cut(new)?
        .into_iter()
        .filter(|(id, _)| !have.contains(id) && seen.insert(*id))
        .map(|(_, len)| len)
        .sum())
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A directory removed when dropped.
struct TempDir {
    path: PathBuf,
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn tempdir() -> Result<TempDir> {
    let path = std::env::temp_dir().join(format!("simnet-live-{}", std::process::id()));
    if path.exists() {
        std::fs::remove_dir_all(&path)?;
    }
    std::fs::create_dir_all(&path)?;
    if !path.is_dir() {
        bail!("cannot make {}", path.display());
    }
    Ok(TempDir { path })
}
