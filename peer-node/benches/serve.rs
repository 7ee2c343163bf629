//! The peer serving a LAN, measured against raw quinn on the same loopback in the same run,
//! and its peak memory with 1000 device connections at once.
//!
//! - upstream: an in-process `ota-net` server holding the blobs (64–256 KiB each);
//! - the peer: the `ota-peer` program (bench profile) as its own process, warmed by one pass
//!   over the blobs so that the measured passes are LAN serving, not uplink;
//! - raw quinn: one connection, one stream, a server in this process writing the same volume
//!   from memory, the client counting bytes without copying: the physical limit here;
//! - the peer: `GetBlobs` of 64 ids over 4 concurrent streams of one connection (as a device
//!   fetches); blobs are checked against their ids in the warm-up pass and not in the
//!   measured ones (raw quinn hashes nothing either);
//! - memory: 1000 connections opened at once, each fetching 4 blobs and staying open until all
//!   are served; the figure is the peer process's `VmHWM` (peak resident set) from `/proc`.
//!
//! Targets: throughput at least 0.7x raw quinn; peak RSS under 256 MiB. Run with
//! `cargo bench -p ota-peer`; `OTA_BENCH_MIB` sets the volume (default 48, under the peer's
//! 64 MiB in-memory cache), `OTA_BENCH_CONNECTIONS` the connection count (default 1000),
//! `OTA_BENCH_ROUNDS` the throughput rounds (default 7; the verdict is best/best).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use bytes::Bytes;
use ota_core::digest::ChunkId;
use ota_net::client::{Client, ClientConfig, Connector};
use ota_net::proto::{MAX_CHUNK_BLOB_LEN, Nonce, Refusal, SignedKind, SignedRequest};
use ota_net::quic::{CertPin, Identity, NodeKey, TransportLimits};
use ota_net::server::{ConnInfo, Handler, Server, ServerConfig};

const THROUGHPUT_TARGET: f64 = 0.7;
const RSS_TARGET_MIB: f64 = 256.0;
/// Paired rounds (`OTA_BENCH_ROUNDS`).
const ROUNDS: usize = 7;
const BATCH: usize = 64;
const STREAMS: usize = 4;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|v| *v > 0)
        .unwrap_or(default)
}

fn main() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

struct PeerProcess(Child);

impl Drop for PeerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl PeerProcess {
    fn peak_rss_mib(&self) -> Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id()))?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .context("no VmHWM in /proc/PID/status")?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()?;
        Ok(kib / 1024.0)
    }
}

async fn run() -> Result<()> {
    let mib = env_or("OTA_BENCH_MIB", 48);
    let connections = env_or("OTA_BENCH_CONNECTIONS", 1000);
    let total = mib * 1024 * 1024;
    let limits = TransportLimits::default();
    let identity = Identity::from_node_key(&NodeKey::from_seed([42; 32]))?;

    // The upstream.
    let blobs = make_blobs(total);
    let blob_bytes: usize = blobs.iter().map(Bytes::len).sum();
    let ids: Vec<ChunkId> = blobs.iter().map(|b| ChunkId::of(b)).collect();
    let upstream = Server::bind(
        "127.0.0.1:0".parse()?,
        &identity,
        ServerConfig::default(),
        Store {
            blobs: ids.iter().copied().zip(blobs).collect(),
        },
    )?;

    // The peer.
    let dir = tempfile::tempdir()?;
    let ready = dir.path().join("ready.json");
    let child = Command::new(env!("CARGO_BIN_EXE_ota-peer"))
        .args(["serve", "--listen", "127.0.0.1:0", "--no-prefetch"])
        .arg("--data")
        .arg(dir.path().join("peer"))
        .args(["--origin", &upstream.local_addr().to_string()])
        .args(["--origin-pin", &upstream.pin().to_string()])
        .args(["--max-connections", &(connections + 64).to_string()])
        .arg("--ready-file")
        .arg(&ready)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let peer = PeerProcess(child);
    let start = Instant::now();
    let (peer_addr, peer_pin) = loop {
        if let Ok(text) = std::fs::read_to_string(&ready)
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        {
            let addr: SocketAddr = v["quic"].as_str().context("quic")?.parse()?;
            let pin: CertPin = v["pin"].as_str().context("pin")?.parse()?;
            break (addr, pin);
        }
        ensure!(start.elapsed() < Duration::from_secs(20), "peer not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let raw_addr = ota_net::raw::serve(&identity, &limits, blob_bytes)?;
    let raw = ota_net::raw::connect(raw_addr, identity.pin(), &limits).await?;
    let mut client_config = ClientConfig::default();
    client_config.transport = limits.clone();
    let connector = Connector::bind("127.0.0.1:0".parse()?, client_config)?;
    let client = connector.connect(peer_addr, peer_pin).await?;

    println!(
        "peer serving on loopback: {} blobs, {:.1} MiB per round",
        ids.len(),
        blob_bytes as f64 / 1048576.0
    );
    // Warm-up: the peer pulls everything from upstream once; quinn's congestion windows grow.
    let (warm, warm_time) = blobs_round(&client, &ids, true).await?;
    ensure!(
        warm == blob_bytes,
        "warm-up got {warm} of {blob_bytes} bytes"
    );
    println!(
        "  warm-up (through the uplink): {:8.1} MiB/s",
        rate(warm, warm_time)
    );
    ota_net::raw::round(&raw).await?;

    // Each round measures raw quinn and the peer back to back. Other work on the machine only
    // ever slows a pass down, so the best of several rounds of each is the steadiest estimate
    // of what each can do: the verdict is on best/best, over 7 rounds by default (3 gave
    // 0.65-0.86 from run to run). The rounds' own ratios and their median are printed too, to
    // show how disturbed the run was.
    let rounds = env_or("OTA_BENCH_ROUNDS", ROUNDS);
    let mut raw_best = 0f64;
    let mut peer_best = 0f64;
    let mut ratios = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        let (bytes, elapsed) = ota_net::raw::round(&raw).await?;
        let r = rate(bytes, elapsed);
        let (bytes, elapsed) = blobs_round(&client, &ids, false).await?;
        ensure!(
            bytes == blob_bytes,
            "received {bytes} of {blob_bytes} bytes"
        );
        let p = rate(bytes, elapsed);
        println!(
            "  round {round}: raw quinn {r:8.1} MiB/s   peer GetBlobs {p:8.1} MiB/s   ratio {:.2}",
            p / r
        );
        raw_best = raw_best.max(r);
        peer_best = peer_best.max(p);
        ratios.push(p / r);
    }
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    let ratio = peer_best / raw_best;
    println!("raw quinn (1 stream), best                             {raw_best:8.1} MiB/s");
    println!(
        "peer GetBlobs ({BATCH} ids/request, {STREAMS} streams), best      {peer_best:8.1} MiB/s"
    );
    println!(
        "throughput ratio, best of {rounds} rounds each {ratio:.2} (rounds' own ratios: median {median:.2}, lowest {:.2}, highest {:.2}; target {THROUGHPUT_TARGET:.1}x): {}",
        ratios[0],
        ratios[ratios.len() - 1],
        if ratio >= THROUGHPUT_TARGET {
            "PASS"
        } else {
            "MISS"
        }
    );

    // 1000 connections at once.
    let rss_before = peer.peak_rss_mib()?;
    let started = Instant::now();
    let mut open = Vec::with_capacity(connections);
    for _ in 0..connections {
        open.push(connector.connect(peer_addr, peer_pin).await?);
    }
    let connect_time = started.elapsed();
    let ids = Arc::new(ids);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, c) in open.iter().enumerate() {
        let c = c.clone();
        let ids = ids.clone();
        tasks.spawn(async move {
            let wanted: Vec<ChunkId> = (0..4).map(|k| ids[(i * 4 + k) % ids.len()]).collect();
            let mut stream = c.blobs(wanted, MAX_CHUNK_BLOB_LEN).await?;
            let mut n = 0;
            while let Some(item) = stream.next().await {
                let (id, blob) = item?;
                let blob = blob.with_context(|| format!("blob {id} missing"))?;
                ensure!(ChunkId::of(&blob) == id, "corrupt blob {id}");
                n += blob.len();
            }
            Ok::<_, anyhow::Error>(n)
        });
    }
    let mut served = 0usize;
    while let Some(result) = tasks.join_next().await {
        served += result??;
    }
    let rss = peer.peak_rss_mib()?;
    println!(
        "{connections} connections open at once ({:.1} s to connect), {:.1} MiB served to them",
        connect_time.as_secs_f64(),
        served as f64 / 1048576.0
    );
    println!(
        "peer peak RSS {rss:.1} MiB (before the connections: {rss_before:.1} MiB; target < {RSS_TARGET_MIB:.0} MiB): {}",
        if rss < RSS_TARGET_MIB { "PASS" } else { "MISS" }
    );
    for c in &open {
        c.close();
    }
    Ok(())
}

fn rate(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64()
}

/// Blobs of 64–256 KiB adding up to about `total` bytes, each distinct.
fn make_blobs(total: usize) -> Vec<Bytes> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut blobs = Vec::new();
    let mut sum = 0;
    while sum < total {
        let len = 64 * 1024 + (next() as usize % (192 * 1024 + 1));
        let mut blob = vec![0u8; len];
        for word in blob.chunks_mut(8) {
            let v = next().to_le_bytes();
            word.copy_from_slice(&v[..word.len()]);
        }
        sum += len;
        blobs.push(Bytes::from(blob));
    }
    blobs
}

/// Fetches every id from the peer in batches over concurrent streams, checking each blob.
async fn blobs_round(client: &Client, ids: &[ChunkId], verify: bool) -> Result<(usize, Duration)> {
    let batches: Vec<Vec<ChunkId>> = ids.chunks(BATCH).map(<[ChunkId]>::to_vec).collect();
    let queue = Arc::new(tokio::sync::Mutex::new(batches.into_iter()));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..STREAMS {
        let client = client.clone();
        let queue = queue.clone();
        tasks.spawn(async move {
            let mut bytes = 0;
            loop {
                let Some(batch) = queue.lock().await.next() else {
                    return Ok::<_, anyhow::Error>(bytes);
                };
                let mut stream = client.blobs(batch, MAX_CHUNK_BLOB_LEN).await?;
                while let Some(item) = stream.next().await {
                    let (id, blob) = item?;
                    let blob = blob.with_context(|| format!("blob {id} missing"))?;
                    ensure!(!verify || ChunkId::of(&blob) == id, "corrupt blob {id}");
                    bytes += blob.len();
                }
            }
        });
    }
    let mut bytes = 0;
    while let Some(result) = tasks.join_next().await {
        bytes += result??;
    }
    Ok((bytes, start.elapsed()))
}

#[derive(Debug)]
struct Store {
    blobs: HashMap<ChunkId, Bytes>,
}

impl Handler for Store {
    async fn challenge(&self, _conn: &ConnInfo) -> Result<Nonce, Refusal> {
        Err(Refusal::new(Refusal::NOT_SUPPORTED, "benchmark"))
    }

    async fn signed(
        &self,
        _conn: &ConnInfo,
        _kind: SignedKind,
        _request: SignedRequest,
    ) -> Result<Vec<u8>, Refusal> {
        Err(Refusal::new(Refusal::NOT_SUPPORTED, "benchmark"))
    }

    async fn metadata(&self, _conn: &ConnInfo, _name: &str) -> Option<Bytes> {
        None
    }

    async fn blob(&self, _conn: &ConnInfo, id: &ChunkId) -> Option<Bytes> {
        self.blobs.get(id).cloned()
    }
}
