//! `GetBlobs` throughput next to raw quinn throughput, in one run on loopback.
//!
//! - raw quinn: one connection, one stream, the server writes N MiB from memory as fast as it
//!   can and the client counts bytes without copying them. Same TLS and transport settings as
//!   the protocol (`TransportLimits::default()`): this is the physical limit of quinn here.
//! - `GetBlobs`: the same volume as in-memory blobs of 64–256 KiB served through `Server` and
//!   a `Handler`, fetched by `Client::blobs` in batches over several concurrent streams of one
//!   connection, every blob assembled into one `Bytes` as a device receives it.
//!
//! Target: `GetBlobs` at least 0.7× raw quinn. Run with `cargo bench -p ota-net`; set
//! `OTA_BENCH_MIB` to change the volume (default 256).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use ota_core::digest::ChunkId;
use ota_net::client::{Client, ClientConfig, Connector};
use ota_net::proto::{MAX_CHUNK_BLOB_LEN, Nonce, Refusal, SignedKind, SignedRequest};
use ota_net::quic::{Identity, NodeKey, TransportLimits};
use ota_net::server::{ConnInfo, Handler, Server, ServerConfig};
use tokio::sync::Mutex;

const TARGET: f64 = 0.7;
const ROUNDS: usize = 3;
/// Ids per `GetBlobs` and requests in flight at once (`OTA_BENCH_BATCH`,
/// `OTA_BENCH_STREAMS`).
const BATCH: usize = 64;
const STREAMS: usize = 4;

fn main() -> Result<()> {
    let shape = Shape {
        mib: env_or("OTA_BENCH_MIB", 256),
        batch: env_or("OTA_BENCH_BATCH", BATCH),
        streams: env_or("OTA_BENCH_STREAMS", STREAMS),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(shape))
}

#[derive(Debug, Clone, Copy)]
struct Shape {
    mib: usize,
    batch: usize,
    streams: usize,
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|v| *v > 0)
        .unwrap_or(default)
}

async fn run(shape: Shape) -> Result<()> {
    let Shape {
        mib,
        batch,
        streams,
    } = shape;
    let total = mib * 1024 * 1024;
    let identity = Identity::from_node_key(&NodeKey::from_seed([42; 32]))?;
    // `OTA_BENCH_STREAM_WINDOW_KIB` overrides the stream receive window on both paths, to see
    // what the tuning buys.
    let mut limits = TransportLimits::default();
    if let Ok(kib) = std::env::var("OTA_BENCH_STREAM_WINDOW_KIB") {
        limits.stream_receive_window = kib.parse::<u32>()? * 1024;
    }
    println!(
        "loopback, {mib} MiB per round, best of {ROUNDS}; windows: stream {} KiB, connection {} KiB, send {} KiB",
        limits.stream_receive_window / 1024,
        limits.receive_window / 1024,
        limits.send_window / 1024,
    );

    let raw_addr = ota_net::raw::serve(&identity, &limits, total)?;
    let blobs = make_blobs(total);
    let blob_bytes: usize = blobs.iter().map(Bytes::len).sum();
    let ids: Vec<ChunkId> = blobs.iter().map(|b| ChunkId::of(b)).collect();
    let store = Store {
        blobs: ids.iter().copied().zip(blobs).collect(),
    };
    let mut server_config = ServerConfig::default();
    server_config.transport = limits.clone();
    server_config.transport.keep_alive_interval = None;
    let server = Server::bind("127.0.0.1:0".parse()?, &identity, server_config, store)?;
    let mut client_config = ClientConfig::default();
    client_config.transport = limits.clone();
    let client = Connector::bind("127.0.0.1:0".parse()?, client_config)?
        .connect(server.local_addr(), server.pin())
        .await?;
    let raw = ota_net::raw::connect(raw_addr, identity.pin(), &limits).await?;

    // Warm up both connections once (connection set-up, congestion window, allocator).
    ota_net::raw::round(&raw).await?;
    blobs_round(&client, &ids[..ids.len().min(256)], batch, streams).await?;

    let mut raw_best = 0f64;
    let mut blobs_best = 0f64;
    for round in 1..=ROUNDS {
        let (bytes, elapsed) = ota_net::raw::round(&raw).await?;
        let raw = rate(bytes, elapsed);
        let (bytes, elapsed) = blobs_round(&client, &ids, batch, streams).await?;
        anyhow::ensure!(
            bytes == blob_bytes,
            "received {bytes} of {blob_bytes} blob bytes"
        );
        let got = rate(bytes, elapsed);
        println!("  round {round}: raw quinn {raw:8.1} MiB/s   GetBlobs {got:8.1} MiB/s");
        raw_best = raw_best.max(raw);
        blobs_best = blobs_best.max(got);
    }
    let ratio = blobs_best / raw_best;
    println!("raw quinn (1 stream)                  {raw_best:8.1} MiB/s");
    println!(
        "GetBlobs ({} blobs of 64-256 KiB, {batch} ids/request, {streams} streams) {blobs_best:8.1} MiB/s",
        ids.len()
    );
    println!(
        "ratio {ratio:.2} (target {TARGET:.1}x): {}",
        if ratio >= TARGET { "PASS" } else { "MISS" }
    );
    server.shutdown(Duration::from_secs(1)).await;
    Ok(())
}

fn rate(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64()
}

/// Blobs of 64–256 KiB adding up to about `total` bytes, each distinct.
fn make_blobs(total: usize) -> Vec<Bytes> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
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

/// Fetches every id in batches of `batch` over `streams` concurrent requests; returns the
/// blob bytes received and the time taken.
async fn blobs_round(
    client: &Client,
    ids: &[ChunkId],
    batch: usize,
    streams: usize,
) -> Result<(usize, Duration)> {
    let batches: Vec<Vec<ChunkId>> = ids.chunks(batch).map(<[ChunkId]>::to_vec).collect();
    let queue = Arc::new(Mutex::new(batches.into_iter()));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..streams {
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
                    bytes += blob.with_context(|| format!("blob {id} missing"))?.len();
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
