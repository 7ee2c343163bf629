//! The site cache's policy (DESIGN.md §1, §4; the peer node issue), as a sans-IO state
//! machine that `ota-peer` and `simnet` drive alike.
//!
//! - **Single flight**: however many devices want a chunk, the cache asks upstream once and
//!   answers them all when it arrives.
//! - **Verify before store**: the driver checks every chunk from upstream against its id and
//!   reports [`UpstreamOutcome::Verified`] only after it stored good bytes; a corrupt chunk is
//!   never stored or served, and is counted.
//! - **Capacity**: a byte cap with least-recently-used eviction that never evicts a chunk of a
//!   release still rolling out ([`CachePolicy::pin_release`]).
//! - **Prefetch**: when a release appears, its chunks are fetched ahead of the devices, within
//!   the upstream budget and, optionally, only inside time windows (nights, say).
//! - **Upstream budget**: a token bucket in bytes per second bounds everything the cache pulls,
//!   demand first, prefetch with what is left.
//!
//! Time is Unix milliseconds passed in by the driver ([`crate::fetch::Millis`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::digest::ChunkId;
use crate::fetch::Millis;

/// How far back a time passed to a [`TokenBucket`] must be from the last one to be taken as
/// the clock set back (the bucket then goes on from it) rather than calls out of order.
const CLOCK_SET_BACK_MS: u64 = 1_000;

/// A token bucket over bytes. Credit is kept in milli-bytes so that no refill is lost to
/// rounding, however often it is polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    /// Bytes per second.
    rate: u64,
    /// Most bytes held.
    burst: u64,
    /// Credit in milli-bytes.
    credit: u128,
    last: Millis,
}

impl TokenBucket {
    /// A bucket refilling at `rate` bytes per second, holding at most `burst` bytes, full.
    pub fn new(rate: u64, burst: u64, now: Millis) -> Self {
        let burst = burst.max(1);
        Self {
            rate: rate.max(1),
            burst,
            credit: u128::from(burst) * 1000,
            last: now,
        }
    }

    fn refill(&mut self, now: Millis) {
        let elapsed = now.0.saturating_sub(self.last.0);
        // Times a little out of order (read by several threads) count no time twice. A clock
        // set further back (the peer passes the wall clock, for its daily windows) is taken
        // as no time passed and the bucket goes on from the new time: otherwise it would not
        // refill until the clock came back to where it was, days perhaps.
        self.last = if now.0.saturating_add(CLOCK_SET_BACK_MS) < self.last.0 {
            now
        } else {
            self.last.max(now)
        };
        self.credit = (self.credit + u128::from(elapsed) * u128::from(self.rate))
            .min(u128::from(self.burst) * 1000);
    }

    /// Take `bytes` if the bucket holds them. A request larger than the burst goes once the
    /// bucket is full, and leaves it empty.
    pub fn try_take(&mut self, now: Millis, bytes: u64) -> bool {
        self.refill(now);
        let want = u128::from(bytes.min(self.burst)) * 1000;
        if self.credit >= want {
            self.credit -= want;
            true
        } else {
            false
        }
    }

    /// Give back `bytes` taken earlier and not used (a fetch budgeted at a guessed length
    /// turned out shorter, or brought nothing), up to the burst.
    pub fn refund(&mut self, bytes: u64) {
        self.credit = (self.credit + u128::from(bytes) * 1000).min(u128::from(self.burst) * 1000);
    }

    /// When `bytes` will be available (refills are computed from the last call's time).
    pub fn ready_at(&self, bytes: u64) -> Millis {
        let want = u128::from(bytes.min(self.burst)) * 1000;
        let missing = want.saturating_sub(self.credit);
        let wait = missing.div_ceil(u128::from(self.rate));
        Millis(self.last.0 + wait as u64)
    }
}

/// A daily window, in seconds since midnight UTC (`start > end` wraps past midnight).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Opens at this second of the day.
    pub start: u32,
    /// Closes at this second of the day.
    pub end: u32,
}

impl Window {
    fn contains(&self, now: Millis) -> bool {
        let second = ((now.0 / 1000) % 86_400) as u32;
        if self.start <= self.end {
            self.start <= second && second < self.end
        } else {
            second >= self.start || second < self.end
        }
    }

    fn next_open(&self, now: Millis) -> Millis {
        let day_ms = 86_400_000;
        let ms_of_day = now.0 % day_ms;
        let start_ms = u64::from(self.start) * 1000;
        let wait = if start_ms >= ms_of_day {
            start_ms - ms_of_day
        } else {
            day_ms - ms_of_day + start_ms
        };
        Millis(now.0 + wait)
    }
}

/// Configuration of the cache policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Bytes the cache may hold.
    pub capacity: u64,
    /// Upstream budget, bytes per second.
    pub upstream_rate: u64,
    /// Upstream burst, bytes.
    pub upstream_burst: u64,
    /// Most upstream fetches at once.
    pub max_upstream_in_flight: usize,
    /// Prefetch only inside these windows (always, if empty).
    pub prefetch_windows: Vec<Window>,
}

/// Someone waiting for a chunk (a device's request on some connection), numbered by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Requester(pub u64);

/// A release the cache carries, named by the driver (e.g. `stable/12`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReleaseKey(pub String);

/// What upstream sent for a chunk, as the driver judged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamOutcome {
    /// The bytes matched the id and are stored.
    Verified,
    /// The bytes did not match the id; nothing was stored.
    Corrupt,
    /// Upstream does not hold it.
    Missing,
    /// The fetch failed (connection, timeout).
    Failed,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheAction {
    /// Fetch a chunk from upstream (verify, then store, then report).
    Fetch {
        /// The chunk.
        id: ChunkId,
        /// Its length, if known (from a release's index).
        len: Option<u32>,
    },
    /// Serve a stored chunk to a requester.
    Serve {
        /// Who asked.
        requester: Requester,
        /// The chunk.
        id: ChunkId,
    },
    /// Tell a requester the cache cannot provide the chunk now.
    Missing {
        /// Who asked.
        requester: Requester,
        /// The chunk.
        id: ChunkId,
    },
    /// Delete a stored chunk.
    Evict {
        /// The chunk.
        id: ChunkId,
    },
}

/// Counters for metrics and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CacheStats {
    /// Requests served from the store.
    pub hits: u64,
    /// Requests that needed upstream.
    pub misses: u64,
    /// Bytes pulled from upstream (verified).
    pub bytes_up: u64,
    /// Chunks upstream sent corrupt.
    pub corrupt_upstream: u64,
    /// Chunks evicted.
    pub evictions: u64,
    /// Chunks fetched by prefetch.
    pub prefetched: u64,
}

#[derive(Debug)]
struct Entry {
    len: u32,
    used: u64,
}

#[derive(Debug, Default)]
struct Flight {
    waiters: Vec<Requester>,
    prefetch: bool,
    queued: bool,
    started: bool,
    len: Option<u32>,
}

/// The cache policy.
#[derive(Debug)]
pub struct CachePolicy {
    config: CacheConfig,
    stored: HashMap<ChunkId, Entry>,
    stored_bytes: u64,
    /// Recency order: use counter → id.
    recency: BTreeMap<u64, ChunkId>,
    clock: u64,
    /// Chunk → number of pinning releases.
    pins: HashMap<ChunkId, u32>,
    releases: BTreeMap<ReleaseKey, Vec<(ChunkId, u32)>>,
    /// Lengths of chunks named by pinned releases.
    lens: HashMap<ChunkId, u32>,
    flights: HashMap<ChunkId, Flight>,
    /// Demand fetches waiting for budget, in arrival order.
    demand_queue: VecDeque<ChunkId>,
    /// Prefetch candidates, in release order.
    prefetch_queue: VecDeque<(ChunkId, u32)>,
    in_flight: usize,
    bucket: TokenBucket,
    actions: VecDeque<CacheAction>,
    stats: CacheStats,
}

/// Length assumed for budgeting a chunk whose length is unknown (the largest default chunk).
const UNKNOWN_LEN: u64 = 256 * 1024;

impl CachePolicy {
    /// A policy with nothing stored.
    pub fn new(config: CacheConfig, now: Millis) -> Self {
        let bucket = TokenBucket::new(config.upstream_rate, config.upstream_burst, now);
        Self {
            config,
            stored: HashMap::new(),
            stored_bytes: 0,
            recency: BTreeMap::new(),
            clock: 0,
            pins: HashMap::new(),
            releases: BTreeMap::new(),
            lens: HashMap::new(),
            flights: HashMap::new(),
            demand_queue: VecDeque::new(),
            prefetch_queue: VecDeque::new(),
            in_flight: 0,
            bucket,
            actions: VecDeque::new(),
            stats: CacheStats::default(),
        }
    }

    /// Record a chunk already on disk (at start-up, from the store's index).
    pub fn restore(&mut self, id: ChunkId, len: u32) {
        self.insert(id, len);
    }

    /// Counters so far.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// Bytes stored.
    pub fn stored_bytes(&self) -> u64 {
        self.stored_bytes
    }

    /// Whether a chunk is stored.
    pub fn holds(&self, id: &ChunkId) -> bool {
        self.stored.contains_key(id)
    }

    /// The next thing to do.
    pub fn poll_action(&mut self) -> Option<CacheAction> {
        self.actions.pop_front()
    }

    /// When to call [`Self::handle_timeout`] next (the budget refills, a window opens).
    pub fn poll_timeout(&self, now: Millis) -> Option<Millis> {
        if self.in_flight >= self.config.max_upstream_in_flight {
            return None;
        }
        let next_len = self
            .demand_queue
            .front()
            .map(|id| {
                self.flights
                    .get(id)
                    .and_then(|f| f.len)
                    .map_or(UNKNOWN_LEN, u64::from)
            })
            .or_else(|| self.prefetch_queue.front().map(|(_, len)| u64::from(*len)))?;
        let budget = self.bucket.ready_at(next_len);
        if self.demand_queue.is_empty() && !self.prefetch_open(now) {
            let window = self
                .config
                .prefetch_windows
                .iter()
                .map(|w| w.next_open(now))
                .min()?;
            return Some(window.max(budget));
        }
        Some(budget.max(now))
    }

    /// Time has passed.
    pub fn handle_timeout(&mut self, now: Millis) {
        self.pump(now);
    }

    /// A requester wants a chunk.
    pub fn handle_request(&mut self, now: Millis, requester: Requester, id: ChunkId) {
        if self.stored.contains_key(&id) {
            self.stats.hits += 1;
            self.touch(&id);
            self.actions.push_back(CacheAction::Serve { requester, id });
            return;
        }
        self.stats.misses += 1;
        let len = self.known_len(&id);
        let flight = self.flights.entry(id).or_default();
        flight.waiters.push(requester);
        flight.len = flight.len.or(len);
        if !flight.started && !flight.queued {
            // Demand goes ahead of prefetch.
            flight.queued = true;
            self.demand_queue.push_back(id);
        }
        self.pump(now);
    }

    /// Upstream answered a fetch.
    pub fn handle_upstream(
        &mut self,
        now: Millis,
        id: ChunkId,
        outcome: UpstreamOutcome,
        len: u32,
    ) {
        let flight = self.flights.remove(&id).unwrap_or_default();
        if flight.started {
            self.in_flight = self.in_flight.saturating_sub(1);
            // A fetch of unknown length was budgeted at the largest default chunk: give back
            // what it did not bring.
            if flight.len.is_none() {
                let brought = match outcome {
                    UpstreamOutcome::Verified | UpstreamOutcome::Corrupt => u64::from(len),
                    UpstreamOutcome::Missing | UpstreamOutcome::Failed => 0,
                };
                self.bucket.refund(UNKNOWN_LEN.saturating_sub(brought));
            }
        }
        match outcome {
            UpstreamOutcome::Verified => {
                self.stats.bytes_up += u64::from(len);
                if flight.prefetch && flight.waiters.is_empty() {
                    self.stats.prefetched += 1;
                }
                self.insert(id, len);
                for requester in flight.waiters {
                    self.actions.push_back(CacheAction::Serve { requester, id });
                }
                self.evict_to_capacity();
            }
            UpstreamOutcome::Corrupt | UpstreamOutcome::Missing | UpstreamOutcome::Failed => {
                if outcome == UpstreamOutcome::Corrupt {
                    self.stats.corrupt_upstream += 1;
                }
                for requester in flight.waiters {
                    self.actions
                        .push_back(CacheAction::Missing { requester, id });
                }
            }
        }
        self.pump(now);
    }

    /// A release is rolling out: pin its chunks (never evicted while pinned) and prefetch the
    /// ones not stored.
    pub fn pin_release(&mut self, now: Millis, release: ReleaseKey, chunks: Vec<(ChunkId, u32)>) {
        if self.releases.contains_key(&release) {
            return;
        }
        let mut seen = BTreeSet::new();
        for (id, len) in &chunks {
            if !seen.insert(*id) {
                continue;
            }
            *self.pins.entry(*id).or_default() += 1;
            self.lens.insert(*id, *len);
            if !self.stored.contains_key(id) && !self.flights.contains_key(id) {
                self.prefetch_queue.push_back((*id, *len));
            }
        }
        self.releases.insert(release, chunks);
        self.pump(now);
    }

    /// A release no longer rolls out (stable everywhere, revoked): its chunks may be evicted.
    pub fn unpin_release(&mut self, release: &ReleaseKey) {
        let Some(chunks) = self.releases.remove(release) else {
            return;
        };
        let mut seen = BTreeSet::new();
        for (id, _) in chunks {
            if !seen.insert(id) {
                continue;
            }
            if let Some(count) = self.pins.get_mut(&id) {
                *count -= 1;
                if *count == 0 {
                    self.pins.remove(&id);
                    self.lens.remove(&id);
                }
            }
        }
        self.evict_to_capacity();
    }

    /// A stored chunk is gone outside the policy's choice (the driver found it damaged on
    /// disk): forget it without counting an eviction, so that the next request fetches it
    /// again.
    pub fn forget(&mut self, id: &ChunkId) {
        if let Some(entry) = self.stored.remove(id) {
            self.recency.remove(&entry.used);
            self.stored_bytes -= u64::from(entry.len);
        }
    }

    fn known_len(&self, id: &ChunkId) -> Option<u32> {
        self.lens.get(id).copied()
    }

    fn prefetch_open(&self, now: Millis) -> bool {
        self.config.prefetch_windows.is_empty()
            || self.config.prefetch_windows.iter().any(|w| w.contains(now))
    }

    /// Start upstream fetches while the budget and the in-flight cap allow: demand first.
    fn pump(&mut self, now: Millis) {
        while self.in_flight < self.config.max_upstream_in_flight {
            if let Some(&id) = self.demand_queue.front() {
                let len = self.flights.get(&id).and_then(|f| f.len);
                if !self
                    .bucket
                    .try_take(now, len.map_or(UNKNOWN_LEN, u64::from))
                {
                    return;
                }
                self.demand_queue.pop_front();
                let flight = self.flights.entry(id).or_default();
                flight.started = true;
                self.in_flight += 1;
                self.actions.push_back(CacheAction::Fetch { id, len });
                continue;
            }
            if !self.prefetch_open(now) {
                return;
            }
            let Some(&(id, len)) = self.prefetch_queue.front() else {
                return;
            };
            if self.stored.contains_key(&id) || self.flights.contains_key(&id) {
                self.prefetch_queue.pop_front();
                continue;
            }
            if !self.bucket.try_take(now, u64::from(len)) {
                return;
            }
            self.prefetch_queue.pop_front();
            self.flights.insert(
                id,
                Flight {
                    waiters: Vec::new(),
                    prefetch: true,
                    queued: false,
                    started: true,
                    len: Some(len),
                },
            );
            self.in_flight += 1;
            self.actions
                .push_back(CacheAction::Fetch { id, len: Some(len) });
        }
    }

    fn insert(&mut self, id: ChunkId, len: u32) {
        if self.stored.contains_key(&id) {
            self.touch(&id);
            return;
        }
        self.clock += 1;
        self.stored.insert(
            id,
            Entry {
                len,
                used: self.clock,
            },
        );
        self.recency.insert(self.clock, id);
        self.stored_bytes += u64::from(len);
    }

    fn touch(&mut self, id: &ChunkId) {
        if let Some(entry) = self.stored.get_mut(id) {
            self.recency.remove(&entry.used);
            self.clock += 1;
            entry.used = self.clock;
            self.recency.insert(self.clock, *id);
        }
    }

    /// Evict least recently used, unpinned chunks until under capacity (pinned chunks may keep
    /// the cache above it: a rolling release is never cut short).
    fn evict_to_capacity(&mut self) {
        if self.stored_bytes <= self.config.capacity {
            return;
        }
        let mut excess = self.stored_bytes - self.config.capacity;
        let mut victims = Vec::new();
        for (&used, id) in &self.recency {
            if excess == 0 {
                break;
            }
            if self.pins.contains_key(id) {
                continue;
            }
            let len = self.stored.get(id).map_or(0, |e| u64::from(e.len));
            excess = excess.saturating_sub(len);
            victims.push((used, *id));
        }
        for (used, id) in victims {
            if let Some(entry) = self.stored.remove(&id) {
                self.recency.remove(&used);
                self.stored_bytes -= u64::from(entry.len);
                self.stats.evictions += 1;
                self.actions.push_back(CacheAction::Evict { id });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_set_back_does_not_stop_the_bucket_refilling() {
        let day = 86_400_000;
        let mut bucket = TokenBucket::new(1000, 1000, Millis(10 * day));
        assert!(bucket.try_take(Millis(10 * day), 1000));
        // Calls a little out of order: no time counted twice.
        assert!(!bucket.try_take(Millis(10 * day - 500), 1));
        assert!(bucket.try_take(Millis(10 * day + 500), 500));
        assert!(!bucket.try_take(Millis(10 * day + 500), 1));
        // The clock set back a day: the bucket refills from the new time at its rate.
        assert!(!bucket.try_take(Millis(9 * day), 1));
        assert!(bucket.try_take(Millis(9 * day + 1000), 1000));
        assert_eq!(bucket.ready_at(1000), Millis(9 * day + 2000));
    }

    const MB: u64 = 1 << 20;

    fn id(i: u64) -> ChunkId {
        ChunkId::of(&i.to_le_bytes())
    }

    fn config(capacity: u64) -> CacheConfig {
        CacheConfig {
            capacity,
            upstream_rate: 100 * MB,
            upstream_burst: 100 * MB,
            max_upstream_in_flight: 8,
            prefetch_windows: Vec::new(),
        }
    }

    fn drain(c: &mut CachePolicy) -> Vec<CacheAction> {
        std::iter::from_fn(|| c.poll_action()).collect()
    }

    #[test]
    fn single_flight_serves_every_waiter_from_one_fetch() {
        let mut c = CachePolicy::new(config(100 * MB), Millis(0));
        for r in 0..300 {
            c.handle_request(Millis(0), Requester(r), id(1));
        }
        let actions = drain(&mut c);
        assert_eq!(
            actions,
            [CacheAction::Fetch {
                id: id(1),
                len: None
            }]
        );
        c.handle_upstream(Millis(5), id(1), UpstreamOutcome::Verified, 65_536);
        let served = drain(&mut c);
        assert_eq!(served.len(), 300);
        assert!(
            served
                .iter()
                .all(|a| matches!(a, CacheAction::Serve { id: i, .. } if *i == id(1)))
        );
        c.handle_request(Millis(6), Requester(301), id(1));
        assert_eq!(
            drain(&mut c),
            [CacheAction::Serve {
                requester: Requester(301),
                id: id(1)
            }]
        );
        assert_eq!(c.stats().bytes_up, 65_536);
        assert_eq!((c.stats().hits, c.stats().misses), (1, 300));
    }

    #[test]
    fn corrupt_upstream_chunk_is_never_stored_or_served() {
        let mut c = CachePolicy::new(config(100 * MB), Millis(0));
        c.handle_request(Millis(0), Requester(1), id(1));
        drain(&mut c);
        c.handle_upstream(Millis(1), id(1), UpstreamOutcome::Corrupt, 65_536);
        assert_eq!(
            drain(&mut c),
            [CacheAction::Missing {
                requester: Requester(1),
                id: id(1)
            }]
        );
        assert!(!c.holds(&id(1)));
        assert_eq!(c.stats().corrupt_upstream, 1);
        // The next request tries upstream again.
        c.handle_request(Millis(2), Requester(2), id(1));
        assert_eq!(
            drain(&mut c),
            [CacheAction::Fetch {
                id: id(1),
                len: None
            }]
        );
    }

    #[test]
    fn lru_eviction_spares_recent_and_pinned_chunks() {
        let mut c = CachePolicy::new(config(3 * 65_536), Millis(0));
        for i in 0..3 {
            c.restore(id(i), 65_536);
        }
        c.pin_release(
            Millis(0),
            ReleaseKey("stable/2".into()),
            vec![(id(0), 65_536)],
        );
        // Touch chunk 1: chunk 2 is now the least recently used unpinned chunk.
        c.handle_request(Millis(0), Requester(1), id(1));
        drain(&mut c);
        c.handle_request(Millis(0), Requester(2), id(9));
        drain(&mut c);
        c.handle_upstream(Millis(1), id(9), UpstreamOutcome::Verified, 65_536);
        let actions = drain(&mut c);
        assert!(
            actions.contains(&CacheAction::Evict { id: id(2) }),
            "{actions:?}"
        );
        assert!(c.holds(&id(0)) && c.holds(&id(1)) && c.holds(&id(9)));
        assert_eq!(c.stored_bytes(), 3 * 65_536);
    }

    #[test]
    fn pinned_chunks_stay_even_above_capacity_until_unpinned() {
        let mut c = CachePolicy::new(config(2 * 65_536), Millis(0));
        let release: Vec<(ChunkId, u32)> = (0..4).map(|i| (id(i), 65_536)).collect();
        c.pin_release(Millis(0), ReleaseKey("stable/3".into()), release);
        let fetches = drain(&mut c);
        assert_eq!(fetches.len(), 4, "prefetch asks for every chunk");
        for i in 0..4 {
            c.handle_upstream(Millis(1), id(i), UpstreamOutcome::Verified, 65_536);
        }
        assert!(
            drain(&mut c)
                .iter()
                .all(|a| !matches!(a, CacheAction::Evict { .. }))
        );
        assert_eq!(c.stored_bytes(), 4 * 65_536);
        assert_eq!(c.stats().prefetched, 4);
        c.unpin_release(&ReleaseKey("stable/3".into()));
        let evicted = drain(&mut c)
            .into_iter()
            .filter(|a| matches!(a, CacheAction::Evict { .. }))
            .count();
        assert_eq!(evicted, 2);
        assert_eq!(c.stored_bytes(), 2 * 65_536);
    }

    /// Drive prefetch of `chunks` chunks with upstream answering at once; return the largest
    /// excess of bytes pulled over what the budget allows at any instant.
    fn prefetch_run(rate: u64, burst: u64, chunks: u64) -> (u64, Millis) {
        let mut cfg = config(u64::MAX);
        cfg.upstream_rate = rate;
        cfg.upstream_burst = burst;
        let mut c = CachePolicy::new(cfg, Millis(0));
        let release: Vec<(ChunkId, u32)> = (0..chunks).map(|i| (id(i), 65_536)).collect();
        let mut now = Millis(0);
        c.pin_release(now, ReleaseKey("r".into()), release);
        let mut pulled = 0u64;
        let mut worst = 0u64;
        loop {
            for action in drain(&mut c) {
                if let CacheAction::Fetch { id, len } = action {
                    pulled += u64::from(len.unwrap());
                    let allowed = burst + rate * now.0 / 1000;
                    worst = worst.max(pulled.saturating_sub(allowed));
                    c.handle_upstream(now, id, UpstreamOutcome::Verified, 65_536);
                }
            }
            if c.stored_bytes() == chunks * 65_536 {
                return (worst, now);
            }
            now = c.poll_timeout(now).expect("prefetch still has work");
            c.handle_timeout(now);
        }
    }

    #[test]
    fn prefetch_stays_within_the_upstream_budget() {
        // 2 Mbit/s uplink, 256 KiB burst, 8 MiB release.
        let rate = 250_000;
        let (worst, done) = prefetch_run(rate, 256 * 1024, 128);
        assert_eq!(worst, 0, "never above burst + rate x time");
        // And it does not dawdle: done within 1% of the budget's own limit.
        let ideal_ms = (128 * 65_536 - 256 * 1024) * 1000 / rate;
        assert!(
            done.0 <= ideal_ms * 101 / 100,
            "{} ms vs {ideal_ms} ms",
            done.0
        );
    }

    #[test]
    fn prefetch_waits_for_its_window_but_demand_does_not() {
        let mut cfg = config(u64::MAX);
        // 01:00–05:00 UTC.
        cfg.prefetch_windows = vec![Window {
            start: 3600,
            end: 5 * 3600,
        }];
        let noon = Millis(12 * 3_600_000);
        let mut c = CachePolicy::new(cfg, noon);
        c.pin_release(
            noon,
            ReleaseKey("r".into()),
            vec![(id(1), 65_536), (id(2), 65_536)],
        );
        assert!(drain(&mut c).is_empty(), "no prefetch at noon");
        assert_eq!(c.poll_timeout(noon), Some(Millis(25 * 3_600_000)));
        c.handle_request(noon, Requester(1), id(2));
        assert_eq!(
            drain(&mut c),
            [CacheAction::Fetch {
                id: id(2),
                len: Some(65_536)
            }]
        );
        c.handle_upstream(noon, id(2), UpstreamOutcome::Verified, 65_536);
        drain(&mut c);
        let one_am = Millis(25 * 3_600_000);
        c.handle_timeout(one_am);
        assert_eq!(
            drain(&mut c),
            [CacheAction::Fetch {
                id: id(1),
                len: Some(65_536)
            }]
        );
    }

    #[test]
    fn unknown_lengths_are_refunded_what_they_did_not_bring() {
        let mut cfg = config(u64::MAX);
        // The burst holds one unknown-length fetch (256 KiB) and 64 KiB more; the rate
        // refills next to nothing.
        cfg.upstream_rate = 1;
        cfg.upstream_burst = 320 * 1024;
        let mut c = CachePolicy::new(cfg, Millis(0));
        c.handle_request(Millis(0), Requester(1), id(1));
        c.handle_request(Millis(0), Requester(2), id(2));
        assert_eq!(drain(&mut c).len(), 1, "the second fetch waits for budget");
        c.handle_upstream(Millis(1), id(1), UpstreamOutcome::Verified, 65_536);
        let actions = drain(&mut c);
        assert!(
            actions.contains(&CacheAction::Fetch {
                id: id(2),
                len: None
            }),
            "the unused 192 KiB paid for the next fetch: {actions:?}"
        );
    }

    #[test]
    fn demand_goes_before_prefetch() {
        let mut cfg = config(u64::MAX);
        cfg.max_upstream_in_flight = 1;
        let mut c = CachePolicy::new(cfg, Millis(0));
        let release: Vec<(ChunkId, u32)> = (0..10).map(|i| (id(i), 65_536)).collect();
        c.pin_release(Millis(0), ReleaseKey("r".into()), release);
        assert_eq!(drain(&mut c).len(), 1, "one prefetch in flight");
        c.handle_request(Millis(0), Requester(1), id(7));
        c.handle_upstream(Millis(1), id(0), UpstreamOutcome::Verified, 65_536);
        assert_eq!(
            drain(&mut c),
            [CacheAction::Fetch {
                id: id(7),
                len: Some(65_536)
            }]
        );
    }
}
