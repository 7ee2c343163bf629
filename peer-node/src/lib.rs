//! `ota-peer`: a site cache that carries each chunk across the uplink once (DESIGN.md §1, §4).
//!
//! It speaks `enigm-ota/1` to devices like the origin does, serving metadata and blobs from its
//! cache and relaying challenges and signed requests to the origin (through its upstream peer,
//! if its upstreams are peers, so every hop sees the offers that grant private content; and
//! those a peer below relays to it, naming that peer as a hop); it fetches what it lacks
//! from its upstream (the origin or a parent peer), one fetch per chunk however many devices
//! want it, checking every chunk against its id before storing it. The decisions (single
//! flight, capacity and pinned LRU, budgeted prefetch) are `ota_core::cache::CachePolicy`,
//! driven here by `cache.rs`.
//!
//! ```text
//! config.rs    TOML file and flags
//! store.rs     chunk files + redb index, crash-safe, reconciled at start-up
//! upstream.rs  connections to the upstreams, set aside when they lie
//! cache.rs     the policy's driver: fetch, verify, store, serve
//! metadata.rs  metadata files cached from upstream
//! prefetch.rs  polls timestamp.json, pins new releases of the carried channels
//! access.rs    private content: grants earned by a check-in relayed on the connection
//! handler.rs   the ota-net Handler
//! http.rs      Prometheus metrics and JSON stats
//! ```

pub mod access;
pub mod cache;
pub mod config;
pub mod handler;
pub mod http;
pub mod metadata;
pub mod metrics;
pub mod prefetch;
pub mod store;
pub mod upstream;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ota_core::cache::CacheConfig;
use ota_net::quic::{CertPin, Identity, NodeKey};
use ota_net::server::{Server, ServerConfig};
use tracing::info;

use crate::access::Access;
use crate::cache::{Cache, Settings};
use crate::config::Config;
use crate::handler::PeerHandler;
use crate::metadata::MetadataCache;
use crate::metrics::Metrics;
use crate::prefetch::{PrefetchConfig, Prefetcher, Walker};
use crate::store::Store;
use crate::upstream::Upstreams;

/// How long an upstream that sent corrupt bytes is set aside.
const BENCH: Duration = Duration::from_secs(60);

/// A running peer.
#[derive(Debug)]
pub struct Running {
    /// The QUIC server.
    pub server: Server,
    /// The metrics/stats HTTP address, if serving.
    pub metrics_addr: Option<SocketAddr>,
    /// The cache.
    pub cache: Arc<Cache>,
    /// The counters.
    pub metrics: Arc<Metrics>,
    /// The node's public key (what the origin enrolls as a relay).
    pub public_key: [u8; 32],
    /// The discovery node, if on.
    pub discovery: Option<ota_net::discovery::DiscoveryHandle>,
    tasks: Tasks,
}

impl Running {
    /// The certificate pin devices use.
    pub fn pin(&self) -> CertPin {
        self.server.pin()
    }
}

impl Running {
    /// Stops serving: requests in flight get up to `grace` to finish.
    pub async fn shutdown(self, grace: Duration) {
        drop(self.tasks);
        if let Some(discovery) = self.discovery {
            discovery.shutdown().await;
        }
        self.server.shutdown(grace).await;
    }
}

/// Background tasks, stopped when dropped.
#[derive(Debug, Default)]
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Tasks {
    fn push(&mut self, task: tokio::task::JoinHandle<()>) {
        self.0.push(task);
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Loads the node key from `DATA/node.key` (hex seed), creating it if missing.
pub fn node_key(data: &Path) -> anyhow::Result<NodeKey> {
    let path = data.join("node.key");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let bytes = hex::decode(text.trim()).context("node.key is not hex")?;
        let seed: [u8; 32] = bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("node.key is not 32 bytes"))?;
        return Ok(NodeKey::from_seed(seed));
    }
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    let key = NodeKey::generate();
    write_private(&path, hex::encode(key.seed()).as_bytes())?;
    Ok(key)
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_private(path, bytes)
}

/// Starts the peer. Must be called within a tokio runtime.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    std::fs::create_dir_all(&config.data)
        .with_context(|| format!("creating {}", config.data.display()))?;
    let key = node_key(&config.data)?;
    let identity = Identity::from_node_key(&key)?;
    let metrics = Arc::new(Metrics::default());
    let (store, stored, reconciled) =
        Store::open(&config.data).context("opening the chunk store")?;
    // What the peer knew to be private before it stopped: gated from the first request.
    let private_marks = store
        .all_private()
        .context("reading the private chunks kept")?;
    let store = Arc::new(store);
    let bytes: u64 = stored.iter().map(|(_, l)| u64::from(*l)).sum();
    info!(
        chunks = stored.len(),
        bytes,
        ?reconciled,
        "chunk store opened"
    );
    let upstreams = Arc::new(Upstreams::new(
        &config.upstreams,
        BENCH,
        config.stall_timeout,
    )?);
    // Relays (challenges, check-ins, reports) follow the blob path, so that every hop that
    // gates private chunks sees the offer that grants them:
    // - the origin is the only data upstream: one connection carries both, and a device's
    //   relayed check-in grants the very connection that fetches the release's private
    //   chunks (the origin serves them only there);
    // - the origin is not among the data upstreams (a site peer under a regional peer): relays
    //   go through the upstream peers, each re-relaying to its own upstream (`RelayedVia`) and
    //   granting the connection below on the offer;
    // - the origin is one data upstream among others (e.g. a fallback): relays go to the
    //   origin itself on a connection of their own, where its grants are; private chunks the
    //   data upstreams refuse are asked for on that connection (`handler.rs`).
    let relays_apart =
        config.upstreams != [config.origin] && config.upstreams.contains(&config.origin);
    let origin = if !relays_apart {
        upstreams.clone()
    } else {
        Arc::new(Upstreams::new(
            &[config.origin],
            BENCH,
            config.stall_timeout,
        )?)
    };
    let access = Arc::new(Access::new(config.director_root.as_deref())?);
    for (id, release) in private_marks {
        access.mark_private(&ota_core::cache::ReleaseKey(release), &[id]);
    }
    let cache = Cache::start(
        Settings {
            policy: CacheConfig {
                capacity: config.capacity,
                upstream_rate: config.upstream_rate,
                upstream_burst: config.upstream_burst,
                max_upstream_in_flight: config.max_upstream_in_flight,
                prefetch_windows: config.prefetch_windows.clone(),
            },
            hot_bytes: config.hot_bytes,
            wait: Duration::from_secs(120),
        },
        store.clone(),
        stored,
        upstreams.clone(),
        metrics.clone(),
        access.clone(),
    );
    let metadata = Arc::new(MetadataCache::new(
        upstreams.clone(),
        store,
        metrics.clone(),
        config.metadata_ttl,
    ));
    let walker = Arc::new(Walker::new(
        cache.clone(),
        metadata.clone(),
        upstreams,
        metrics.clone(),
        access.clone(),
        config.channels.clone(),
    ));
    let handler = PeerHandler {
        cache: cache.clone(),
        metadata: metadata.clone(),
        access: access.clone(),
        metrics: metrics.clone(),
        origin,
        walker: walker.clone(),
        relays_apart,
        node_key: key,
    };
    let mut server_config = ServerConfig::default();
    server_config.max_connections = config.max_connections;
    server_config.stall_timeout = config.stall_timeout;
    // Kept across restarts so that clients of a crashed peer get a stateless reset at once.
    server_config.reset_secret = Some(
        ota_net::quic::ResetSecret::load_or_create(&config.data.join("quic-reset.key"))
            .context("the QUIC stateless-reset secret")?,
    );
    let server = Server::bind(config.listen, &identity, server_config, handler)
        .context("binding the QUIC listener")?;
    let mut tasks = Tasks::default();
    let mut prefetcher = Prefetcher::new(
        PrefetchConfig {
            poll: config.poll,
            enabled: config.prefetch,
        },
        walker,
    );
    let discovery = match &config.discovery {
        None => None,
        Some(settings) => {
            let advertisement = ota_net::discovery::Advertisement {
                quic: vec![server.local_addr()],
                pin: identity.pin(),
                role: settings.role,
            };
            let mut dc = ota_net::discovery::DiscoveryConfig::cache(settings.listen, advertisement);
            dc.mdns = settings.mdns;
            dc.bootstrap = settings.bootstrap.clone();
            dc.node_key = Some(node_key(&config.data)?);
            let (handle, mut events) = ota_net::discovery::Discovery::spawn(dc)
                .await
                .context("starting discovery")?;
            info!(listen = ?handle.listen_addrs(), "discovery: advertising the QUIC server");
            let wake = prefetcher.waker();
            tasks.push(tokio::spawn(async move {
                while let Some(event) = events.next().await {
                    match event {
                        ota_net::discovery::DiscoveryEvent::Announcement { from, announcement } => {
                            info!(%from, channel = %announcement.channel.0, release = announcement.release.0, "discovery: release announced; polling upstream");
                            wake.notify_one();
                        }
                        ota_net::discovery::DiscoveryEvent::Refused { peer, error } => {
                            info!(%peer, %error, "discovery: record refused");
                        }
                        other => tracing::debug!(?other, "discovery"),
                    }
                }
            }));
            prefetcher.announce_with(handle.clone());
            Some(handle)
        }
    };
    tasks.push(tokio::spawn(prefetcher.run()));
    let metrics_addr = match config.metrics {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the metrics listener {addr}"))?;
            let local = listener.local_addr()?;
            tasks.push(tokio::spawn(http::serve(
                listener,
                metrics.clone(),
                cache.clone(),
            )));
            Some(local)
        }
        None => None,
    };
    tasks.push(tokio::spawn(http::stats_file_task(
        config.data.join("stats.json"),
        metrics.clone(),
        cache.clone(),
    )));
    info!(listen = %server.local_addr(), pin = %server.pin(), "peer serving");
    Ok(Running {
        server,
        metrics_addr,
        cache,
        metrics,
        public_key: identity.public_key(),
        discovery,
        tasks,
    })
}
