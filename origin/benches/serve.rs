//! The origin under load, in one run on loopback (the origin issue's performance evidence).
//!
//! Setup: a real origin in a temporary directory, built through the library as an operator
//! would build it: online keys, a root and a director root listing them, `release create`
//! of one artifact (`OTA_BENCH_MIB`, default 256 MiB of incompressible bytes), the release
//! and targets requests co-signed with in-memory authority keys, `register`, `validate`,
//! `promote --stable`, and enrolled devices. SQLite catalog and local blob store in the
//! temporary directory, on the machine's disk (`TMPDIR`).
//!
//! 1. **Check-ins per second**: `OTA_BENCH_CONNS` (32) persistent connections to an
//!    in-process `Server` + `OriginHandler`, each looping challenge → signed check-in with a
//!    different enrolled device each time, for `OTA_BENCH_SECS` (10). Each check-in counts
//!    its challenge round trip. Every check-in gets a signed offer (the heaviest path).
//!    Beside it, the same loop against a handler that answers at once: what the transport
//!    and the clients allow on this machine. Target 2 000/s.
//! 2. **`GetBlobs` from the blob store**: every blob of the release (chunks and chunk index)
//!    through `OriginHandler::blob`, i.e. read from disk and re-hashed (`get_verified`) with
//!    the page cache warm (validation and a warm-up round read them all), next to raw quinn
//!    on the same loopback (one stream of bytes from memory, same TLS, windows and UDP
//!    socket buffers: `ota_net::raw`). Target at least 0.7× raw quinn. Both servers run on
//!    a runtime of their own (threads `bench-server`), the clients on the main one, as
//!    separate processes would; each round's CPU time is split between the two, and printed
//!    per GiB moved. `OTA_BENCH_ONE_RUNTIME` puts the servers on the clients' runtime (as
//!    before); `OTA_BENCH_ONLY=raw|getblobs` runs one kind of round (for profiling, no
//!    ratio); `OTA_BENCH_BLOB_ROUNDS` (5) sets the rounds.
//! 3. **Memory of a separate `ota-origin serve`** with `OTA_BENCH_MEMORY_CONNS` (1 000)
//!    device connections: each connects, checks in (challenge + signed check-in, answered
//!    with a signed offer) and stays open; then all of them loop check-ins for 5 s (the
//!    check-in rate of the real server process on held connections); then one in four
//!    then loops check-in + `GetBlobs` of 16 chunks for `OTA_BENCH_BUSY_SECS` (6). The
//!    server's VmRSS is sampled from `/proc` throughout; VmHWM is its peak. Target 512 MiB.
//!
//! Clients and servers share this machine's cores, so every rate is a lower bound of what
//! the origin alone would do. Run with `cargo bench -p ota-origin --bench serve`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use bytes::Bytes;
use ed25519_dalek::{Signer as _, SigningKey};
use ota_core::digest::ChunkId;
use ota_core::director::{CheckIn, CheckInAnswer, DeviceHandle};
use ota_core::rollout::{Command as StageCommand, HealthPolicy};
use ota_core::time::UnixTime;
use ota_core::tuf::enigm::{Channel, ReleaseNumber};
use ota_core::tuf::metadata::{Common, Envelope, ReleaseAuthority, RoleKeys, Root, sign_role};
use ota_core::tuf::{InMemoryKey, Key};
use ota_net::client::{Answer, Client, ClientConfig, Connector};
use ota_net::proto::{
    DeviceKey, MAX_CHUNK_BLOB_LEN, Nonce, Refusal, SignedKind, SignedRequest, signing_bytes,
};
use ota_net::quic::{CertPin, Identity, NodeKey, TransportLimits};
use ota_net::server::{ConnInfo, Handler, Server, ServerConfig};
use ota_origin::commands::{self, CreateRelease};
use ota_origin::lifecycle;
use ota_origin::serve::OriginHandler;
use ota_origin::service::Origin;
use ota_origin::state::{DataDir, OriginConfig};
use ota_origin::store::{MetadataFile, NewDevice};
use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinSet;

const CHECKINS_TARGET: f64 = 2_000.0;
const BLOBS_TARGET: f64 = 0.7;
const MEMORY_TARGET_MIB: f64 = 512.0;
/// `GetBlobs` shape, as in `net/benches/loopback.rs`: ids per request, requests in flight.
const BATCH: usize = 64;
const STREAMS: usize = 4;
/// `GetBlobs` rounds (each beside a raw quinn round): `OTA_BENCH_BLOB_ROUNDS`, default 5.
fn blob_rounds() -> usize {
    env_or("OTA_BENCH_BLOB_ROUNDS", 5)
}
/// Memory phase: connections per client socket, connects in flight, chunks per busy fetch.
const CONNS_PER_SOCKET: usize = 50;
const CONNECTS_IN_FLIGHT: usize = 64;
const BUSY_CHUNKS: usize = 16;
/// Seconds every held connection loops check-ins against the separate server.
const HELD_CHECKIN_SECS: u64 = 5;

fn main() -> Result<()> {
    let settings = Settings {
        mib: env_or("OTA_BENCH_MIB", 256),
        conns: env_or("OTA_BENCH_CONNS", 32),
        secs: env_or("OTA_BENCH_SECS", 10),
        memory_conns: env_or("OTA_BENCH_MEMORY_CONNS", 1_000),
        busy_secs: env_or("OTA_BENCH_BUSY_SECS", 6),
        phases: std::env::var("OTA_BENCH_PHASES")
            .unwrap_or_else(|_| "checkins,blobs,memory".into()),
        only: std::env::var("OTA_BENCH_ONLY").ok(),
        one_runtime: std::env::var_os("OTA_BENCH_ONE_RUNTIME").is_some(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // The servers of the `GetBlobs` phase run on their own threads, so that their CPU time
    // can be told from the clients'.
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name(SERVER_THREADS)
        .enable_all()
        .build()?;
    let servers = if settings.one_runtime {
        runtime.handle()
    } else {
        server_runtime.handle()
    };
    runtime.block_on(run(settings, servers))
}

#[derive(Debug, Clone)]
struct Settings {
    mib: usize,
    conns: usize,
    secs: usize,
    memory_conns: usize,
    busy_secs: usize,
    /// Which phases to run (`OTA_BENCH_PHASES`, comma-separated; all by default).
    phases: String,
    /// `OTA_BENCH_ONLY=raw` or `=getblobs`: the `GetBlobs` phase runs only those rounds, and
    /// prints no ratio (to profile one path alone).
    only: Option<String>,
    /// `OTA_BENCH_ONE_RUNTIME` set: the `GetBlobs` phase's servers share the clients'
    /// runtime (and threads), as they did before; their CPU is then not told apart.
    one_runtime: bool,
}

impl Settings {
    fn runs(&self, phase: &str) -> bool {
        self.phases.split(',').any(|p| p.trim() == phase)
    }
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|v| *v > 0)
        .unwrap_or(default)
}

async fn run(settings: Settings, servers: &tokio::runtime::Handle) -> Result<()> {
    let started = Instant::now();
    let temp = tempfile::Builder::new()
        .prefix("ota-origin-bench")
        .tempdir()?;
    let devices = settings.memory_conns.max(settings.conns * 64);
    let fixture = Fixture::build(temp.path(), settings.mib, devices).await?;
    println!(
        "setup: origin in {} (SQLite catalog, local blobs), release of {} MiB in {} blobs, {} \
         devices enrolled, in {:.1} s",
        temp.path().display(),
        fixture.blob_bytes >> 20,
        fixture.blobs.len(),
        fixture.devices.len(),
        started.elapsed().as_secs_f64()
    );
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!("machine: {cores} cores shared by clients and servers; loopback; tokio multi-thread");
    println!();

    let identity = Identity::from_node_key(&NodeKey::from_seed([42; 32]))?;
    let handler = OriginHandler::new(fixture.origin.clone(), now);
    let server = Server::bind(
        "127.0.0.1:0".parse()?,
        &identity,
        ServerConfig::default(),
        handler,
    )?;
    if settings.runs("checkins") {
        check_ins_phase(&server, &identity, &fixture, &settings).await?;
    }
    if settings.runs("blobs") {
        blobs_phase(
            servers,
            &identity,
            &fixture,
            settings.only.as_deref(),
            settings.one_runtime,
        )
        .await?;
    }
    server.shutdown(Duration::from_secs(1)).await;
    if settings.runs("memory") {
        memory_phase(&fixture, temp.path(), &settings).await?;
    }
    println!("total {:.1} s", started.elapsed().as_secs_f64());
    fixture.origin.catalog.close().await;
    Ok(())
}

/// 1. Check-ins per second, and the same loop against a handler that answers at once.
async fn check_ins_phase(
    server: &Server,
    identity: &Identity,
    fixture: &Fixture,
    settings: &Settings,
) -> Result<()> {
    let duration = Duration::from_secs(settings.secs as u64);
    let at_once = Server::bind(
        "127.0.0.1:0".parse()?,
        identity,
        ServerConfig::default(),
        AtOnce,
    )?;
    let ceiling = check_ins(
        at_once.local_addr(),
        at_once.pin(),
        &fixture.devices,
        settings.conns,
        duration / 3,
    )
    .await?;
    at_once.shutdown(Duration::from_secs(1)).await;
    let origin = check_ins(
        server.local_addr(),
        server.pin(),
        &fixture.devices,
        settings.conns,
        duration,
    )
    .await?;
    println!(
        "check-ins: {} persistent connections, each looping challenge + signed check-in (one \
         device per check-in, {} devices), every answer a signed offer; {} s",
        settings.conns,
        fixture.devices.len().min(settings.conns * 64),
        settings.secs
    );
    println!(
        "  origin                 {:8.0} check-ins/s  (p50 {:.2} ms, p99 {:.2} ms per \
         challenge + check-in)",
        origin.per_sec(),
        origin.percentile(0.50),
        origin.percentile(0.99)
    );
    println!(
        "  transport ceiling      {:8.0} /s            (same loop, handler answers at once)",
        ceiling.per_sec()
    );
    let handling = origin.cpu_micros() - ceiling.cpu_micros();
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    println!(
        "  CPU per check-in (clients + server in this process): origin {:.0} us, ceiling loop \
         {:.0} us; the origin's own handling ~{handling:.0} us, i.e. ~{:.0}/s per core, and \
         {:.0}/s if the clients' share ran elsewhere on {cores:.0} cores",
        origin.cpu_micros(),
        ceiling.cpu_micros(),
        1e6 / handling,
        cores * 1e6 / handling
    );
    println!(
        "  target {CHECKINS_TARGET:.0}/s: {}",
        pass(origin.per_sec() >= CHECKINS_TARGET)
    );
    println!();
    Ok(())
}

/// 2. `GetBlobs` from the blob store next to raw quinn.
///
/// Both servers (the origin's and the raw quinn one) run on the `servers` runtime, the
/// clients on this one.
async fn blobs_phase(
    servers: &tokio::runtime::Handle,
    identity: &Identity,
    fixture: &Fixture,
    only: Option<&str>,
    one_runtime: bool,
) -> Result<()> {
    let server = {
        let _on_servers = servers.enter();
        Server::bind(
            "127.0.0.1:0".parse()?,
            identity,
            ServerConfig::default(),
            OriginHandler::new(fixture.origin.clone(), now),
        )?
    };
    let throughput = blob_throughput(servers, &server, identity, fixture, only).await;
    server.shutdown(Duration::from_secs(1)).await;
    let Throughput { raw, blobs } = throughput?;
    println!(
        "GetBlobs: {} blobs ({} MiB) of the release through OriginHandler::blob (read from disk, \
         re-hashed; page cache warm), {BATCH} ids/request, {STREAMS} requests in flight, best of \
         {}",
        fixture.blobs.len(),
        fixture.blob_bytes >> 20,
        blob_rounds()
    );
    for (what, rounds) in [
        ("raw quinn (1 stream, from memory)", &raw),
        ("GetBlobs from the origin         ", &blobs),
    ] {
        println!(
            "  {what}  {:8.1} MiB/s   CPU per GiB: server {:.2} s + client {:.2} s = {:.2} s",
            rounds.best,
            rounds.server_cpu_per_gib(),
            rounds.client_cpu_per_gib(),
            rounds.server_cpu_per_gib() + rounds.client_cpu_per_gib()
        );
    }
    println!(
        "  (CPU: all rounds', per GiB moved; server = the threads of the servers' runtime, \
         client = the rest of this process{})",
        if one_runtime {
            "; OTA_BENCH_ONE_RUNTIME: one runtime for both, all counted as client"
        } else {
            ""
        }
    );
    if let Some(only) = only {
        println!("  OTA_BENCH_ONLY={only}: no ratio");
    } else {
        let ratio = blobs.best / raw.best;
        println!(
            "  ratio {ratio:.2} (target {BLOBS_TARGET:.1}x): {}",
            pass(ratio >= BLOBS_TARGET)
        );
    }
    println!();
    Ok(())
}

/// 3. Memory of a separate server process.
async fn memory_phase(fixture: &Fixture, dir: &Path, settings: &Settings) -> Result<()> {
    let memory = memory(fixture, dir, settings).await?;
    println!(
        "memory: `ota-origin serve --max-connections 4096` as its own process; {} device \
         connections opened (each a challenge + signed check-in, all kept open), then one in four loops \
         check-in + GetBlobs of {BUSY_CHUNKS} chunks for {} s",
        settings.memory_conns, settings.busy_secs
    );
    println!(
        "  connected {}/{} ({} failed{}); busy loops: {} check-ins, {} MiB of blobs",
        memory.connected,
        settings.memory_conns,
        memory.failed,
        memory
            .first_error
            .as_ref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default(),
        memory.check_ins,
        memory.blob_bytes >> 20
    );
    let held_rate = memory.held_check_ins as f64 / memory.held_elapsed.as_secs_f64();
    println!(
        "  check-ins on all {} held connections at once, {HELD_CHECKIN_SECS} s: {held_rate:.0}/s \
         against the separate process (target {CHECKINS_TARGET:.0}/s: {})",
        memory.connected,
        pass(held_rate >= CHECKINS_TARGET)
    );
    let per = |cpu: f64| cpu * 1e6 / memory.held_check_ins.max(1) as f64;
    println!(
        "    CPU per check-in: server process {:.0} us, clients (this process) {:.0} us",
        per(memory.held_cpu.0),
        per(memory.held_cpu.1)
    );
    println!(
        "  server RSS: ready {:.1} MiB, {} connections idle {:.1} MiB, busy max {:.1} MiB; peak \
         (VmHWM) {:.1} MiB",
        mib(memory.ready_kib),
        memory.connected,
        mib(memory.connected_kib),
        mib(memory.busy_max_kib),
        mib(memory.peak_kib)
    );
    let all = memory.connected == settings.memory_conns;
    println!(
        "  target peak < {MEMORY_TARGET_MIB:.0} MiB with all connected: {}",
        pass(mib(memory.peak_kib) < MEMORY_TARGET_MIB && all)
    );
    println!();
    Ok(())
}

fn pass(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn now() -> UnixTime {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    UnixTime(secs as i64)
}

/// The origin with one stable release and enrolled devices.
#[derive(Debug)]
struct Fixture {
    data: PathBuf,
    origin: Arc<Origin>,
    devices: Arc<Vec<SigningKey>>,
    /// Every blob of the release: its chunks and its chunk index.
    blobs: Vec<ChunkId>,
    blob_bytes: u64,
}

/// The offline authorities of the ceremony.
#[derive(Debug)]
struct Authorities {
    root: InMemoryKey,
    targets: InMemoryKey,
    release: InMemoryKey,
}

impl Fixture {
    async fn build(dir: &Path, mib: usize, devices: usize) -> Result<Self> {
        let data = dir.join("origin");
        let authorities = Authorities {
            root: InMemoryKey::ed25519_from_seed([1; 32]),
            targets: InMemoryKey::p256_from_scalar([2; 32]).context("P-256 key")?,
            release: InMemoryKey::ed25519_from_seed([3; 32]),
        };
        {
            // `ota-origin keys` and `init`: the roots list the origin's online keys.
            let data_dir = DataDir::create(&data, OriginConfig::default())?;
            let keys = data_dir.keys()?;
            let online = [
                keys.online.snapshot.public(),
                keys.online.timestamp.public(),
                keys.director.public(),
            ];
            let (root, director_root) = roots(&authorities, &online);
            data_dir.write("root.json", &root)?;
            data_dir.write("director-root.json", &director_root)?;
        }
        let origin = Origin::open(&data).await?;
        let root = origin.dir.read("root.json")?;
        origin
            .catalog
            .publish(
                &[MetadataFile {
                    name: "1.root.json".into(),
                    role: "root".into(),
                    version: 1,
                    bytes: root,
                }],
                now(),
            )
            .await?;

        // `release create`, the authorities' signatures, `register`, `validate`, `promote`.
        let image = dir.join("system.img");
        let mut bytes = vec![0u8; mib << 20];
        blake3::Hasher::new()
            .update(b"system image")
            .finalize_xof()
            .fill(&mut bytes);
        std::fs::write(&image, &bytes)?;
        drop(bytes);
        let channel = Channel("stable".into());
        let number = ReleaseNumber(1);
        let create = CreateRelease {
            channel: channel.clone(),
            number,
            version: "2026.11.1".into(),
            artifacts: vec![("system".into(), image.clone())],
            models: vec!["enigm-one".into()],
            security: false,
            min_installed: None,
            health: HealthPolicy {
                max_failure_basis_points: 500,
                min_sample: 20,
            },
            expires: now().plus_secs(90 * 86_400),
            private: Vec::new(),
        };
        let requests = commands::create_release(&origin, &create, now(), &|_| {}).await?;
        std::fs::remove_file(&image)?;
        let signed_release = cosign(
            &requests.join("release.request.json"),
            "release",
            &authorities.release,
        )?;
        let signed_targets = cosign(
            &requests.join("targets.request.json"),
            "targets",
            &authorities.targets,
        )?;
        commands::register_release(
            &origin,
            &channel,
            number,
            &signed_release,
            &signed_targets,
            now(),
        )
        .await?;
        let validation = commands::validate_release(&origin, &channel, number, now()).await?;
        lifecycle::apply(
            &origin,
            &channel,
            number,
            StageCommand::PromoteStable,
            None,
            "operator",
            now(),
        )
        .await?;

        // `device enroll`, once per device.
        let keys: Vec<SigningKey> = (0..devices).map(device_key).collect();
        for key in &keys {
            let public_key = key.verifying_key().to_bytes();
            origin
                .catalog
                .enroll(
                    &NewDevice {
                        handle: DeviceHandle::derive(&origin.keys.handle, &public_key),
                        public_key,
                        channel: channel.clone(),
                        model: "enigm-one".into(),
                        validation_cohort: false,
                    },
                    now(),
                )
                .await?;
        }
        let blobs = origin.catalog.release_blobs(&channel, number).await?;
        ensure!(blobs.len() as u64 == validation.chunks);
        Ok(Self {
            data,
            origin,
            devices: Arc::new(keys),
            blobs,
            blob_bytes: validation.bytes,
        })
    }
}

fn device_key(index: usize) -> SigningKey {
    let mut seed = [0x5a; 32];
    seed[..8].copy_from_slice(&(index as u64).to_le_bytes());
    SigningKey::from_bytes(&seed)
}

/// Root and director root, as in `tests/origin/e2e.rs`: `online` is the origin's snapshot,
/// timestamp and director key.
fn roots(a: &Authorities, online: &[Key; 3]) -> (Vec<u8>, Vec<u8>) {
    let [snapshot, timestamp, director] = online;
    let expires = now().plus_secs(365 * 86_400);
    let role = |keys: &[&Key]| RoleKeys {
        keyids: keys.iter().map(|k| k.key_id()).collect(),
        threshold: 1,
        extra: BTreeMap::new(),
    };
    let keys = |list: &[&Key]| list.iter().map(|k| (k.key_id(), (*k).clone())).collect();
    let (root_pub, targets_pub, release_pub) =
        (a.root.public(), a.targets.public(), a.release.public());
    let root = Root {
        common: Common::new("root", 1, expires),
        consistent_snapshot: true,
        keys: keys(&[&root_pub, &targets_pub, snapshot, timestamp]),
        roles: BTreeMap::from([
            ("root".into(), role(&[&root_pub])),
            ("targets".into(), role(&[&targets_pub])),
            ("snapshot".into(), role(&[snapshot])),
            ("timestamp".into(), role(&[timestamp])),
        ]),
        release_authority: Some(ReleaseAuthority {
            keys: keys(&[&release_pub]),
            keyids: vec![release_pub.key_id()],
            threshold: 1,
        }),
        extra: BTreeMap::new(),
    };
    let director_root = Root {
        common: Common::new("root", 1, expires),
        consistent_snapshot: true,
        keys: keys(&[&root_pub, director]),
        roles: BTreeMap::from([
            ("root".into(), role(&[&root_pub])),
            ("targets".into(), role(&[director])),
            ("snapshot".into(), role(&[director])),
            ("timestamp".into(), role(&[director])),
        ]),
        release_authority: None,
        extra: BTreeMap::new(),
    };
    (
        sign_role(&root, &[&a.root]),
        sign_role(&director_root, &[&a.root]),
    )
}

/// What `ota-sign sign` does to a request: one signature over the canonical `signed`.
fn cosign(request: &Path, role: &str, key: &InMemoryKey) -> Result<Vec<u8>> {
    let bytes = std::fs::read(request)?;
    let mut envelope = Envelope::parse(role, "request", &bytes, 1 << 24)?;
    let sig = key.sign(envelope.canonical_signed());
    envelope.add_signature(ota_core::tuf::metadata::Signature {
        keyid: key.public().key_id(),
        sig: hex::encode(sig),
    });
    Ok(envelope.to_bytes())
}

/// A check-in by device `key` on `client`'s connection, with the client's channel binding.
fn signed_check_in(key: &SigningKey, client: &Client, nonce: Nonce) -> SignedRequest {
    let device_key = DeviceKey(key.verifying_key().to_bytes());
    let body = serde_json::to_vec(&CheckIn { installed: None }).unwrap();
    let timestamp = now();
    let message = signing_bytes(
        SignedKind::CheckIn,
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
        signature: ota_net::proto::Signature(key.sign(&message).to_bytes()),
    }
}

/// One challenge and one signed check-in; `Ok(true)` for a signed offer.
async fn check_in(client: &Client, key: &SigningKey) -> Result<bool> {
    let nonce = client.challenge().await?;
    match client
        .signed(SignedKind::CheckIn, signed_check_in(key, client, nonce))
        .await?
    {
        Answer::Signed(body) => Ok(matches!(
            serde_json::from_slice(&body)?,
            CheckInAnswer::Offer(_)
        )),
        Answer::Refused(refusal) => bail!("check-in refused: {}", refusal.reason),
    }
}

#[derive(Debug)]
struct Rate {
    count: usize,
    elapsed: Duration,
    /// Milliseconds per challenge + check-in, sorted.
    latencies: Vec<f64>,
    /// CPU seconds this process (clients and server) used meanwhile.
    cpu: f64,
}

impl Rate {
    fn per_sec(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64()
    }

    /// CPU microseconds per check-in, clients and server together.
    fn cpu_micros(&self) -> f64 {
        self.cpu * 1e6 / self.count as f64
    }

    fn percentile(&self, p: f64) -> f64 {
        let last = self.latencies.len().saturating_sub(1);
        self.latencies
            .get((last as f64 * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    }
}

/// `conns` connections loop challenge + check-in for `duration`; connection `c` signs with
/// devices `c`, `c + conns`, `c + 2 conns`, … in turn.
async fn check_ins(
    addr: SocketAddr,
    pin: CertPin,
    devices: &Arc<Vec<SigningKey>>,
    conns: usize,
    duration: Duration,
) -> Result<Rate> {
    let connector = Connector::bind("127.0.0.1:0".parse()?, ClientConfig::default())?;
    let mut clients = Vec::new();
    for _ in 0..conns {
        clients.push(connector.connect(addr, pin).await?);
    }
    let per_conn = (devices.len() / conns).clamp(1, 64);
    let warm_up = Instant::now() + Duration::from_millis(500);
    let end = warm_up + duration;
    let mut tasks = JoinSet::new();
    for (c, client) in clients.into_iter().enumerate() {
        let devices = devices.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            for turn in 0.. {
                let key = &devices[(c + (turn % per_conn) * conns) % devices.len()];
                let start = Instant::now();
                if start >= end {
                    break;
                }
                let offered = check_in(&client, key).await?;
                if turn == 0 {
                    ensure!(offered, "no offer to device {c}");
                }
                if start >= warm_up {
                    latencies.push(start.elapsed().as_secs_f64() * 1e3);
                }
            }
            client.close();
            Ok::<_, anyhow::Error>(latencies)
        });
    }
    tokio::time::sleep_until(warm_up.into()).await;
    let cpu_start = process_cpu()?;
    tokio::time::sleep_until(end.into()).await;
    let cpu = process_cpu()? - cpu_start;
    let mut latencies = Vec::new();
    while let Some(result) = tasks.join_next().await {
        latencies.extend(result??);
    }
    latencies.sort_by(f64::total_cmp);
    Ok(Rate {
        count: latencies.len(),
        elapsed: duration,
        latencies,
        cpu,
    })
}

/// CPU seconds (user and system, every thread) this process has used.
fn process_cpu() -> Result<f64> {
    cpu_of("/proc/self/stat")
}

/// CPU seconds (user and system, every thread) of the process whose `stat` file is `stat`.
fn cpu_of(stat: &str) -> Result<f64> {
    /// Linux reports these times in USER_HZ ticks, 100 per second.
    const TICKS_PER_SEC: f64 = 100.0;
    let stat = std::fs::read_to_string(stat)?;
    // Fields after the command name (which may hold spaces): state is 3, utime 14, stime 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("/proc/self/stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks = |field: usize| -> Result<f64> {
        Ok(fields
            .get(field - 3)
            .context("/proc/self/stat is short")?
            .parse::<u64>()? as f64)
    };
    Ok((ticks(14)? + ticks(15)?) / TICKS_PER_SEC)
}

/// A handler that answers at once: the ceiling that transport and clients leave.
#[derive(Debug)]
struct AtOnce;

impl Handler for AtOnce {
    async fn challenge(&self, _conn: &ConnInfo) -> Result<Nonce, Refusal> {
        Ok(Nonce([7; 32]))
    }

    async fn signed(
        &self,
        _conn: &ConnInfo,
        _kind: SignedKind,
        _request: SignedRequest,
    ) -> Result<Vec<u8>, Refusal> {
        Ok(br#"{"offer":{}}"#.to_vec())
    }

    async fn metadata(&self, _conn: &ConnInfo, _name: &str) -> Option<Bytes> {
        None
    }

    async fn blob(&self, _conn: &ConnInfo, _id: &ChunkId) -> Option<Bytes> {
        None
    }
}

/// Threads of the runtime the `GetBlobs` phase's servers run on.
const SERVER_THREADS: &str = "bench-server";

/// Rounds of one kind of transfer: the best rate, and the bytes, time and CPU of all rounds.
#[derive(Debug, Default)]
struct Rounds {
    best: f64,
    bytes: u64,
    server_cpu: f64,
    client_cpu: f64,
}

impl Rounds {
    /// Adds a round of `bytes` in `elapsed`, with the CPU seconds `cpu` used meanwhile.
    fn add(&mut self, bytes: usize, elapsed: Duration, cpu: Cpu) -> f64 {
        let rate = rate(bytes, elapsed);
        self.best = self.best.max(rate);
        self.bytes += bytes as u64;
        self.server_cpu += cpu.server;
        self.client_cpu += cpu.client;
        rate
    }

    fn per_gib(&self, cpu: f64) -> f64 {
        cpu * f64::from(1u32 << 30) / self.bytes.max(1) as f64
    }

    fn server_cpu_per_gib(&self) -> f64 {
        self.per_gib(self.server_cpu)
    }

    fn client_cpu_per_gib(&self) -> f64 {
        self.per_gib(self.client_cpu)
    }
}

#[derive(Debug)]
struct Throughput {
    raw: Rounds,
    blobs: Rounds,
}

/// CPU seconds used between two [`CpuClock::lap`]s.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    /// By the threads of the servers' runtime.
    server: f64,
    /// By the rest of this process (the clients).
    client: f64,
}

/// CPU seconds of this process and of its server threads, thread by thread (threads of the
/// blocking pool come and go).
#[derive(Debug)]
struct CpuClock {
    process: f64,
    server_threads: std::collections::HashMap<u64, f64>,
}

impl CpuClock {
    fn now() -> Result<Self> {
        let mut server_threads = std::collections::HashMap::new();
        for entry in std::fs::read_dir("/proc/self/task")? {
            let path = entry?.path();
            let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
                continue; // The thread has ended.
            };
            if comm.trim_end() != SERVER_THREADS {
                continue;
            }
            let Ok(cpu) = cpu_of(&path.join("stat").to_string_lossy()) else {
                continue;
            };
            let tid = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse().ok())
                .context("thread id")?;
            server_threads.insert(tid, cpu);
        }
        Ok(Self {
            process: process_cpu()?,
            server_threads,
        })
    }

    /// The CPU used since `self`; `self` becomes now.
    fn lap(&mut self) -> Result<Cpu> {
        let now = Self::now()?;
        let server: f64 = now
            .server_threads
            .iter()
            .map(|(tid, cpu)| cpu - self.server_threads.get(tid).copied().unwrap_or(0.0))
            .sum();
        let process = now.process - self.process;
        *self = now;
        Ok(Cpu {
            server,
            client: (process - server).max(0.0),
        })
    }
}

/// MiB/s and CPU of raw quinn and of `GetBlobs` from `server`, alternating rounds (raw quinn
/// `only` those of `raw` or `getblobs`). The raw server is started on `servers`.
async fn blob_throughput(
    servers: &tokio::runtime::Handle,
    server: &Server,
    identity: &Identity,
    fixture: &Fixture,
    only: Option<&str>,
) -> Result<Throughput> {
    let limits = TransportLimits::default();
    let total = fixture.blob_bytes as usize;
    let raw_addr = {
        let _on_servers = servers.enter();
        ota_net::raw::serve(identity, &limits, total)?
    };
    let raw = ota_net::raw::connect(raw_addr, identity.pin(), &limits).await?;
    let client = Connector::bind("127.0.0.1:0".parse()?, ClientConfig::default())?
        .connect(server.local_addr(), server.pin())
        .await?;
    // Warm-up: every blob once, checked against its id (and into the page cache).
    ota_net::raw::round(&raw).await?;
    let (bytes, _) = blobs_round(&client, &fixture.blobs, true).await?;
    ensure!(
        bytes as u64 == fixture.blob_bytes,
        "warm-up got {bytes} bytes"
    );
    let mut report = Throughput {
        raw: Rounds::default(),
        blobs: Rounds::default(),
    };
    let mut clock = CpuClock::now()?;
    for round in 1..=blob_rounds() {
        let (mut raw_rate, mut blobs_rate) = (f64::NAN, f64::NAN);
        if only != Some("getblobs") {
            clock.lap()?;
            let (bytes, elapsed) = ota_net::raw::round(&raw).await?;
            raw_rate = report.raw.add(bytes, elapsed, clock.lap()?);
        }
        if only != Some("raw") {
            clock.lap()?;
            let (bytes, elapsed) = blobs_round(&client, &fixture.blobs, false).await?;
            ensure!(bytes == total, "round {round}: {bytes} of {total} bytes");
            blobs_rate = report.blobs.add(bytes, elapsed, clock.lap()?);
        }
        println!(
            "  round {round}: raw quinn {raw_rate:8.1} MiB/s   GetBlobs {blobs_rate:8.1} MiB/s"
        );
    }
    client.close();
    raw.close(0u32.into(), b"done");
    Ok(report)
}

fn rate(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64()
}

/// Fetches `ids` in batches of [`BATCH`] over [`STREAMS`] concurrent requests; returns the
/// bytes received and the time taken. `verify`: check every blob against its id.
async fn blobs_round(client: &Client, ids: &[ChunkId], verify: bool) -> Result<(usize, Duration)> {
    let batches: Vec<Vec<ChunkId>> = ids.chunks(BATCH).map(<[ChunkId]>::to_vec).collect();
    let queue = Arc::new(Mutex::new(batches.into_iter()));
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..STREAMS {
        let (client, queue) = (client.clone(), queue.clone());
        tasks.spawn(async move {
            let mut bytes = 0;
            loop {
                let Some(batch) = queue.lock().await.next() else {
                    return Ok::<_, anyhow::Error>(bytes);
                };
                bytes += fetch(&client, batch, verify).await?;
            }
        });
    }
    let mut bytes = 0;
    while let Some(result) = tasks.join_next().await {
        bytes += result??;
    }
    Ok((bytes, start.elapsed()))
}

/// One `GetBlobs`; every blob must be served. Returns the bytes received.
async fn fetch(client: &Client, ids: Vec<ChunkId>, verify: bool) -> Result<usize> {
    let mut stream = client.blobs(ids, MAX_CHUNK_BLOB_LEN).await?;
    let mut bytes = 0;
    while let Some(item) = stream.next().await {
        let (id, blob) = item?;
        let blob = blob.with_context(|| format!("blob {id} missing"))?;
        ensure!(!verify || ChunkId::of(&blob) == id, "blob {id} damaged");
        bytes += blob.len();
    }
    Ok(bytes)
}

#[derive(Debug, Default)]
struct Memory {
    connected: usize,
    failed: usize,
    first_error: Option<String>,
    check_ins: usize,
    blob_bytes: u64,
    /// Check-ins on every held connection at once, and how long they ran.
    held_check_ins: usize,
    held_elapsed: Duration,
    /// CPU seconds the server process and this (client) process used meanwhile.
    held_cpu: (f64, f64),
    ready_kib: u64,
    connected_kib: u64,
    busy_max_kib: u64,
    peak_kib: u64,
}

/// The server process, killed when dropped.
#[derive(Debug)]
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn memory(fixture: &Fixture, dir: &Path, settings: &Settings) -> Result<Memory> {
    let ready = dir.join("ready.json");
    let log = dir.join("serve.log");
    let mut served = Served(
        Command::new(env!("CARGO_BIN_EXE_ota-origin"))
            .args(["serve", "--data"])
            .arg(&fixture.data)
            .args(["--listen", "127.0.0.1:0", "--max-connections", "4096"])
            .arg("--ready-file")
            .arg(&ready)
            .env("OTA_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?,
    );
    let pid = served.0.id();
    let (addr, pin) = wait_ready(&mut served.0, &ready, &log).await?;
    let mut report = Memory {
        ready_kib: vm_kib(pid, "VmRSS")?,
        ..Memory::default()
    };

    // Every device connects and checks in; connections stay open.
    let local: SocketAddr = "127.0.0.1:0".parse()?;
    let connectors = (0..settings.memory_conns.div_ceil(CONNS_PER_SOCKET))
        .map(|_| Connector::bind(local, ClientConfig::default()))
        .collect::<Result<Vec<_>, _>>()?;
    let gate = Arc::new(Semaphore::new(CONNECTS_IN_FLIGHT));
    let mut tasks = JoinSet::new();
    for i in 0..settings.memory_conns {
        let connector = connectors[i / CONNS_PER_SOCKET].clone();
        let gate = gate.clone();
        let key = fixture.devices[i].clone();
        tasks.spawn(async move {
            let _permit = gate.acquire().await?;
            let client = connector.connect(addr, pin).await?;
            ensure!(check_in(&client, &key).await?, "no offer to device {i}");
            Ok::<_, anyhow::Error>((i, client))
        });
    }
    let mut clients = Vec::new();
    while let Some(result) = tasks.join_next().await {
        match result? {
            Ok(client) => clients.push(client),
            Err(error) => {
                report.failed += 1;
                report
                    .first_error
                    .get_or_insert_with(|| format!("{error:#}"));
            }
        }
    }
    report.connected = clients.len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    report.connected_kib = vm_kib(pid, "VmRSS")?;

    // Every held connection loops challenge + signed check-in, each with its own device.
    let cpu_start = (cpu_of(&format!("/proc/{pid}/stat"))?, process_cpu()?);
    let start = Instant::now();
    let end = start + Duration::from_secs(HELD_CHECKIN_SECS);
    let mut loops = JoinSet::new();
    for (i, client) in &clients {
        let (i, client) = (*i, client.clone());
        let key = fixture.devices[i].clone();
        loops.spawn(async move {
            let mut done = 0usize;
            while Instant::now() < end {
                ensure!(check_in(&client, &key).await?, "no offer to device {i}");
                done += 1;
            }
            Ok::<_, anyhow::Error>(done)
        });
    }
    while let Some(result) = loops.join_next().await {
        report.held_check_ins += result??;
    }
    report.held_elapsed = start.elapsed();
    report.held_cpu = (
        cpu_of(&format!("/proc/{pid}/stat"))? - cpu_start.0,
        process_cpu()? - cpu_start.1,
    );

    // One in four: check-ins and chunk fetches, while the rest stay connected.
    let end = Instant::now() + Duration::from_secs(settings.busy_secs as u64);
    let blobs = Arc::new(fixture.blobs.clone());
    let mut busy = JoinSet::new();
    for (i, client) in clients.iter().filter(|(i, _)| i % 4 == 0) {
        let (i, client, blobs) = (*i, client.clone(), blobs.clone());
        let key = fixture.devices[i].clone();
        busy.spawn(async move {
            let (mut check_ins, mut bytes) = (0usize, 0u64);
            let mut turn = 0;
            while Instant::now() < end {
                ensure!(check_in(&client, &key).await?, "no offer to device {i}");
                check_ins += 1;
                let ids = (0..BUSY_CHUNKS)
                    .map(|k| blobs[(i * 7919 + turn * BUSY_CHUNKS + k) % blobs.len()])
                    .collect();
                bytes += fetch(&client, ids, false).await? as u64;
                turn += 1;
            }
            Ok::<_, anyhow::Error>((check_ins, bytes))
        });
    }
    while !busy.is_empty() {
        tokio::select! {
            joined = busy.join_next() => {
                let Some(result) = joined else { break };
                let (check_ins, bytes) = result??;
                report.check_ins += check_ins;
                report.blob_bytes += bytes;
            }
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                report.busy_max_kib = report.busy_max_kib.max(vm_kib(pid, "VmRSS")?);
            }
        }
    }
    // The kernel updates VmHWM lazily (RSS counters are synced in batches): a sample of
    // VmRSS can read a little above it. Report the larger.
    report.peak_kib = vm_kib(pid, "VmHWM")?.max(report.busy_max_kib);
    if let Some(status) = served.0.try_wait()? {
        bail!("ota-origin serve exited: {status}");
    }
    for (_, client) in &clients {
        client.close();
    }
    drop(served);
    Ok(report)
}

async fn wait_ready(child: &mut Child, ready: &Path, log: &Path) -> Result<(SocketAddr, CertPin)> {
    for _ in 0..400 {
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            bail!("ota-origin serve exited: {status}\n{log}");
        }
        if let Ok(text) = std::fs::read_to_string(ready) {
            let v: serde_json::Value = serde_json::from_str(&text)?;
            let addr = v["quic"].as_str().context("no quic address")?.parse()?;
            let pin = v["pin"].as_str().context("no pin")?.parse()?;
            return Ok((addr, pin));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    bail!("ota-origin serve did not become ready in 10 s")
}

/// A `kB` line of `/proc/PID/status`, e.g. `VmRSS` or `VmHWM`.
fn vm_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix(field)?.strip_prefix(':')?;
            rest.trim().strip_suffix("kB")?.trim().parse().ok()
        })
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}
