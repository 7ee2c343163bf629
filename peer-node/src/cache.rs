//! The driver of `ota_core::cache::CachePolicy`: it turns the policy's actions into upstream
//! fetches, disk writes and answers to waiting clients.
//!
//! - Every chunk request goes through the policy (hits, misses, recency, single flight).
//! - Fetches the policy asks for in one go are sent upstream as one `GetBlobs`; each chunk
//!   that arrives is checked against its id **before** it is stored, and reported to the
//!   policy only after it is on disk. A chunk whose bytes do not match is never stored or
//!   served; the upstream that sent it is logged, counted and set aside.
//! - Bytes served come from a small in-memory cache of recently used chunks (one shared
//!   buffer for every client) or from disk, where they are checked against their id again:
//!   a chunk damaged on disk is dropped, never served.
//! - A timer task wakes the policy when its upstream budget refills or a prefetch window
//!   opens.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ota_core::cache::{
    CacheAction, CacheConfig, CachePolicy, ReleaseKey, Requester, UpstreamOutcome,
};
use ota_core::digest::ChunkId;
use ota_core::fetch::Millis;
use ota_net::proto::MAX_CHUNK_BLOB_LEN;
use tokio::sync::{Notify, oneshot};
use tracing::{debug, info, warn};

use crate::access::Access;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::upstream::Upstreams;

/// The time the policy sees: Unix milliseconds (its prefetch windows are times of day, UTC).
pub fn now_millis() -> Millis {
    Millis(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    )
}

/// Recently used chunks in memory, shared by every client that reads them.
#[derive(Debug, Default)]
struct Hot {
    cap: u64,
    bytes: u64,
    clock: u64,
    map: HashMap<ChunkId, (Bytes, u64)>,
    order: BTreeMap<u64, ChunkId>,
}

impl Hot {
    fn get(&mut self, id: &ChunkId) -> Option<Bytes> {
        let (bytes, used) = self.map.get_mut(id)?;
        self.order.remove(used);
        self.clock += 1;
        *used = self.clock;
        self.order.insert(self.clock, *id);
        Some(bytes.clone())
    }

    fn insert(&mut self, id: ChunkId, bytes: Bytes) {
        if bytes.len() as u64 > self.cap / 4 || self.map.contains_key(&id) {
            return;
        }
        self.clock += 1;
        self.bytes += bytes.len() as u64;
        self.map.insert(id, (bytes, self.clock));
        self.order.insert(self.clock, id);
        while self.bytes > self.cap {
            let Some((_, victim)) = self.order.pop_first() else {
                break;
            };
            if let Some((b, _)) = self.map.remove(&victim) {
                self.bytes -= b.len() as u64;
            }
        }
    }

    fn remove(&mut self, id: &ChunkId) {
        if let Some((b, used)) = self.map.remove(id) {
            self.bytes -= b.len() as u64;
            self.order.remove(&used);
        }
    }
}

#[derive(Debug)]
struct State {
    policy: CachePolicy,
    waiters: HashMap<u64, oneshot::Sender<bool>>,
    next: u64,
}

/// Settings of the driver.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The policy's configuration.
    pub policy: CacheConfig,
    /// Bytes of recently used chunks kept in memory.
    pub hot_bytes: u64,
    /// Longest a client waits for a chunk from upstream before it is answered `Missing`.
    pub wait: Duration,
}

/// The cache.
#[derive(Debug)]
pub struct Cache {
    state: Mutex<State>,
    hot: Mutex<Hot>,
    store: Arc<Store>,
    upstreams: Arc<Upstreams>,
    metrics: Arc<Metrics>,
    /// Told of every chunk that arrives from upstream, before anyone is served it (a chunk
    /// that arrives while an offered release is not yet walked is tainted: `access.rs`).
    access: Arc<Access>,
    wake: Arc<Notify>,
    wait: Duration,
    /// Whether the last write to the store failed (e.g. a full disk): logged once when it
    /// starts and once when writes succeed again, not for every chunk.
    store_failing: std::sync::atomic::AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Cache {
    /// The chunk store under the cache (also where the peer keeps what it knows of private
    /// chunks).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// A cache over `store` (whose chunks are `stored`), fetching from `upstreams`. Starts the
    /// timer task; must be called within a tokio runtime.
    pub fn start(
        settings: Settings,
        store: Arc<Store>,
        stored: Vec<(ChunkId, u32)>,
        upstreams: Arc<Upstreams>,
        metrics: Arc<Metrics>,
        access: Arc<Access>,
    ) -> Arc<Self> {
        let mut policy = CachePolicy::new(settings.policy, now_millis());
        for (id, len) in stored {
            policy.restore(id, len);
        }
        let cache = Arc::new(Self {
            state: Mutex::new(State {
                policy,
                waiters: HashMap::new(),
                next: 0,
            }),
            hot: Mutex::new(Hot {
                cap: settings.hot_bytes,
                ..Hot::default()
            }),
            store,
            upstreams,
            metrics,
            access,
            wake: Arc::new(Notify::new()),
            wait: settings.wait,
            store_failing: std::sync::atomic::AtomicBool::new(false),
        });
        // Restored chunks may be over a smaller cap: let the policy evict now.
        cache.step(|p, now| p.handle_timeout(now));
        tokio::spawn(timer(Arc::downgrade(&cache), cache.wake.clone()));
        cache
    }

    /// Bytes stored, and whether `id` is stored.
    pub fn stored_bytes(&self) -> u64 {
        lock(&self.state).policy.stored_bytes()
    }

    /// Whether a chunk is stored.
    pub fn holds(&self, id: &ChunkId) -> bool {
        lock(&self.state).policy.holds(id)
    }

    /// The policy's counters.
    pub fn policy_stats(&self) -> ota_core::cache::CacheStats {
        lock(&self.state).policy.stats()
    }

    /// Pins a release (its chunks are never evicted while pinned) and prefetches it.
    pub fn pin_release(self: &Arc<Self>, release: ReleaseKey, chunks: Vec<(ChunkId, u32)>) {
        self.step(|p, now| p.pin_release(now, release, chunks));
    }

    /// Unpins a release.
    pub fn unpin_release(self: &Arc<Self>, release: &ReleaseKey) {
        self.step(|p, _| p.unpin_release(release));
    }

    /// Stores a blob verified by the caller outside the policy's fetches (a chunk index
    /// fetched by prefetch) and records it.
    pub async fn store_verified(self: &Arc<Self>, id: ChunkId, bytes: Bytes) -> anyhow::Result<()> {
        let store = self.store.clone();
        let b = bytes.clone();
        tokio::task::spawn_blocking(move || store.put(&id, &b)).await??;
        let len = bytes.len() as u32;
        lock(&self.hot).insert(id, bytes);
        self.step(|p, _| p.restore(id, len));
        Ok(())
    }

    /// Runs `f` on the policy, then carries out what it asks.
    fn step(self: &Arc<Self>, f: impl FnOnce(&mut CachePolicy, Millis)) {
        let mut answers = Vec::new();
        let mut fetches = Vec::new();
        let mut evictions = Vec::new();
        {
            let mut state = lock(&self.state);
            f(&mut state.policy, now_millis());
            while let Some(action) = state.policy.poll_action() {
                match action {
                    CacheAction::Serve { requester, .. } => {
                        if let Some(tx) = state.waiters.remove(&requester.0) {
                            answers.push((tx, true));
                        }
                    }
                    CacheAction::Missing { requester, .. } => {
                        if let Some(tx) = state.waiters.remove(&requester.0) {
                            answers.push((tx, false));
                        }
                    }
                    CacheAction::Fetch { id, len } => fetches.push((id, len)),
                    CacheAction::Evict { id } => evictions.push(id),
                    _ => {}
                }
            }
        }
        for (tx, ok) in answers {
            let _ = tx.send(ok);
        }
        if !evictions.is_empty() {
            Metrics::add(&self.metrics.evictions, evictions.len() as u64);
            let mut hot = lock(&self.hot);
            for id in &evictions {
                hot.remove(id);
            }
            drop(hot);
            let store = self.store.clone();
            tokio::task::spawn_blocking(move || {
                for id in evictions {
                    if let Err(error) = store.remove(&id) {
                        warn!(%id, %error, "evicting a chunk");
                    }
                }
            });
        }
        // A blob known to be larger than any chunk (a chunk index of a pinned release) goes
        // alone, with its exact length as the bound; the rest in batches.
        let (large, chunks): (Vec<_>, Vec<_>) = fetches
            .into_iter()
            .partition(|(_, len)| len.is_some_and(|l| l > MAX_CHUNK_BLOB_LEN));
        for (id, len) in large {
            let max_len = len
                .unwrap_or(MAX_CHUNK_BLOB_LEN)
                .min(ota_net::proto::MAX_BLOB_LEN);
            tokio::spawn(fetch(self.clone(), vec![id], max_len));
        }
        for batch in chunks.chunks(ota_net::proto::MAX_IDS_PER_REQUEST) {
            let ids: Vec<ChunkId> = batch.iter().map(|(id, _)| *id).collect();
            tokio::spawn(fetch(self.clone(), ids, MAX_CHUNK_BLOB_LEN));
        }
        self.wake.notify_one();
    }

    /// A client wants the blob `id`: its bytes, or `None` if the cache cannot provide it now.
    pub async fn get(self: &Arc<Self>, id: ChunkId) -> Option<Bytes> {
        let (tx, rx) = oneshot::channel();
        let requester = {
            let mut state = lock(&self.state);
            state.next += 1;
            let requester = state.next;
            state.waiters.insert(requester, tx);
            requester
        };
        self.step(|p, now| p.handle_request(now, Requester(requester), id));
        let served = match tokio::time::timeout(self.wait, rx).await {
            Ok(Ok(served)) => served,
            Ok(Err(_)) => false,
            Err(_) => {
                lock(&self.state).waiters.remove(&requester);
                debug!(%id, "gave up waiting for upstream");
                false
            }
        };
        if !served {
            return None;
        }
        self.read(id).await
    }

    /// The bytes of a stored chunk: from memory, or from disk checked against its id.
    async fn read(self: &Arc<Self>, id: ChunkId) -> Option<Bytes> {
        if let Some(bytes) = lock(&self.hot).get(&id) {
            return Some(bytes);
        }
        let store = self.store.clone();
        let read = tokio::task::spawn_blocking(move || {
            store
                .get(&id)
                .map(|bytes| bytes.map(|b| (ChunkId::of(&b) == id, Bytes::from(b))))
        })
        .await;
        match read {
            Ok(Ok(Some((true, bytes)))) => {
                lock(&self.hot).insert(id, bytes.clone());
                Some(bytes)
            }
            Ok(Ok(Some((false, _)))) | Ok(Ok(None)) => {
                Metrics::inc(&self.metrics.store_damaged);
                warn!(%id, "stored chunk damaged or gone; dropped, not served");
                self.drop_damaged(id);
                None
            }
            Ok(Err(error)) => {
                warn!(%id, %error, "reading a stored chunk");
                None
            }
            Err(_) => None,
        }
    }

    /// Forgets a chunk found damaged on disk: the policy is told it is gone (an eviction
    /// outside its choice is modelled as an upstream failure for nobody, then a removal).
    fn drop_damaged(self: &Arc<Self>, id: ChunkId) {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let _ = store.remove(&id);
        });
        self.step(|p, _| p.forget(&id));
    }
}

/// Fetches `ids` upstream in one `GetBlobs` of blobs up to `max_len` bytes, verifying, storing
/// and reporting each. A blob that does not match its id sets its upstream aside (in
/// `settle`), as does a stall or a protocol breach; with `retry`, and another upstream usable,
/// what that upstream did not give is asked of that one before the policy hears of it, so that
/// the devices waiting for it are served rather than told it is missing.
async fn fetch(cache: Arc<Cache>, ids: Vec<ChunkId>, max_len: u32) {
    let again = fetch_once(&cache, ids, max_len, true).await;
    if !again.is_empty() {
        info!(
            chunks = again.len(),
            "asking another upstream for the chunks a lying or stalling upstream did not give"
        );
        fetch_once(&cache, again, max_len, false).await;
    }
}

/// One `GetBlobs` of [`fetch`]; returns the blobs to ask another upstream for.
async fn fetch_once(
    cache: &Arc<Cache>,
    ids: Vec<ChunkId>,
    max_len: u32,
    retry: bool,
) -> Vec<ChunkId> {
    let mut pending: std::collections::VecDeque<ChunkId> = ids.iter().copied().collect();
    let mut again = Vec::new();
    let result = async {
        let mut stream = cache.upstreams.blobs(ids, max_len).await?;
        let peer = stream.peer();
        while let Some(item) = stream.next().await {
            let (id, bytes) = item?;
            pending.pop_front();
            let outcome = match bytes {
                None => (UpstreamOutcome::Missing, 0),
                Some(bytes) => settle(cache, peer, id, bytes).await,
            };
            if retry
                && outcome.0 == UpstreamOutcome::Corrupt
                && cache.upstreams.usable_besides(peer)
            {
                again.push(id);
                continue;
            }
            cache.step(|p, now| p.handle_upstream(now, id, outcome.0, outcome.1));
        }
        Ok::<(), ota_net::client::ClientError>(())
    }
    .await;
    if let Err(error) = result {
        Metrics::inc(&cache.metrics.upstream_failures);
        let blamed = error.blamed_peer();
        if let Some(peer) = blamed {
            cache.upstreams.blame(peer);
        }
        warn!(%error, unanswered = pending.len(), "upstream fetch failed");
        // An upstream that stalled or broke the protocol is set aside; what it left unanswered
        // is asked of the next usable one, once.
        if retry && blamed.is_some_and(|peer| cache.upstreams.usable_besides(peer)) {
            again.extend(pending);
        } else {
            cache.step(|p, now| {
                for id in pending {
                    p.handle_upstream(now, id, UpstreamOutcome::Failed, 0);
                }
            });
        }
    }
    again
}

/// Verifies a chunk from upstream and stores it; the outcome for the policy.
async fn settle(
    cache: &Arc<Cache>,
    peer: std::net::SocketAddr,
    id: ChunkId,
    bytes: Bytes,
) -> (UpstreamOutcome, u32) {
    let len = bytes.len() as u32;
    let store = cache.store.clone();
    let checked = bytes.clone();
    let stored = tokio::task::spawn_blocking(move || {
        if ChunkId::of(&checked) != id {
            return Ok(false);
        }
        store.put(&id, &checked).map(|()| true)
    })
    .await;
    match stored {
        Ok(Ok(true)) => {
            if cache.store_failing.swap(false, Ordering::Relaxed) {
                info!(%id, "the chunk store takes writes again; storing chunks");
            }
            Metrics::inc(&cache.metrics.chunks_up);
            Metrics::add(&cache.metrics.bytes_up, u64::from(len));
            cache.access.arrived(id);
            lock(&cache.hot).insert(id, bytes);
            (UpstreamOutcome::Verified, len)
        }
        Ok(Ok(false)) => {
            Metrics::inc(&cache.metrics.verification_failures);
            cache.upstreams.blame(peer);
            warn!(upstream = %peer, %id, len, "upstream sent a chunk that does not match its id; not stored, upstream set aside");
            (UpstreamOutcome::Corrupt, len)
        }
        Ok(Err(error)) => {
            Metrics::inc(&cache.metrics.store_errors);
            if cache.store_failing.swap(true, Ordering::Relaxed) {
                debug!(%id, %error, "cannot store a chunk");
            } else {
                warn!(%id, %error, "the chunk store refuses writes (disk full?): serving what it holds, storing nothing new until writes succeed again (ota_peer_store_errors_total counts the chunks refused)");
            }
            (UpstreamOutcome::Failed, len)
        }
        Err(_) => (UpstreamOutcome::Failed, len),
    }
}

async fn timer(cache: std::sync::Weak<Cache>, wake: Arc<Notify>) {
    loop {
        let next = {
            let Some(strong) = cache.upgrade() else {
                return;
            };
            let now = now_millis();
            let next = lock(&strong.state).policy.poll_timeout(now);
            next.map(|t| Duration::from_millis(t.0.saturating_sub(now.0).max(1)))
        };
        let sleep = async {
            match next {
                Some(d) => tokio::time::sleep(d).await,
                // Re-check now and then, so the task ends soon after the cache is dropped.
                None => tokio::time::sleep(Duration::from_secs(5)).await,
            }
        };
        let woken = tokio::select! {
            () = sleep => false,
            () = wake.notified() => true,
        };
        if !woken && let Some(strong) = cache.upgrade() {
            strong.step(|p, now| p.handle_timeout(now));
        }
    }
}

/// Logs a summary of what the cache holds (at start-up).
pub fn log_restored(chunks: usize, bytes: u64) {
    info!(chunks, bytes, "cache restored from disk");
}
