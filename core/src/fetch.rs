//! The fetch scheduler (DESIGN.md §5, §7): which chunk to ask of which source, as a sans-IO
//! state machine that the device client and `simnet` drive alike.
//!
//! **Sources** have a kind, in order of preference: the device's own active slot (delta: a chunk
//! the installed image already holds is copied, not fetched), LAN peers, plain HTTP mirrors,
//! then the origin. A chunk goes to the most preferred tier where some healthy source may hold
//! it; it spills to the next tier only when every source of that tier has said it does not hold
//! the chunk, has been banned, or has turned out slow. So a site's devices pull from their
//! cache, and the uplink carries only what the cache lacks.
//!
//! **Inputs** (the driver verifies every chunk with `ChunkVerifier` before reporting it):
//! [`Scheduler::handle_chunk`] with [`ChunkOutcome::Verified`], `Corrupt` or `Missing`,
//! [`Scheduler::handle_source_lost`], and [`Scheduler::handle_timeout`] at
//! [`Scheduler::poll_timeout`]. **Outputs** ([`Scheduler::poll_action`]): batched requests,
//! cancellations of duplicates, and the end ([`Action::Complete`] or [`Action::Stuck`]).
//!
//! **Policies.** Per-source concurrency (chunks in flight). Throughput measured per source.
//! A request that takes longer than `slow_factor` times its expected time (at the source's
//! measured throughput, never less than `timeout_floor`) is *overdue*: the request stays open
//! (the bytes may still come) and the chunk is also asked elsewhere. The expected time counts
//! the bytes queued ahead of the chunk at that source when it was asked: a source sends its
//! requests in order, so a deep queue at a busy cache is not a slow cache.
//!
//! - **Patience with a LAN source that still delivers.** A LAN peer usually fills its cache
//!   through the site's uplink, one upstream fetch per chunk for all its devices; when that
//!   uplink is the bottleneck, its requests run late however deep the queue was, and a
//!   mirror or the origin would be reached over the same uplink, at best as fast. So a
//!   request past its deadline at a healthy LAN source is *held*, not overdue, while that
//!   source has delivered verified bytes (on any request) within `timeout_floor`, when
//!   the chunk's only other sources are mirrors or the origin, unless one of them is
//!   measured `faster_factor` times faster than the LAN source. With none measured yet, a
//!   chunk held for `timeout_floor` past its deadline is also asked of the best mirror or
//!   origin (one copy, only while no mirror or origin has a measured rate or a request in
//!   flight, at most one per `slow_factor × timeout_floor`), whose answer measures it even
//!   when the LAN copy won. A held
//!   request strikes nothing. The LAN source still loses its chunks when it fails (`Missing`,
//!   lost, corrupt) or truly stalls (nothing delivered for `timeout_floor`), and a slow LAN
//!   source (one that goes overdue while a faster mirror or origin is measured) strikes as
//!   below. Where another LAN source (or the local slot) may provide the chunk, switching
//!   costs no uplink and the deadline alone rules.
//! - **Stalls strike once.** The requests that go overdue at one source in one stall count as
//!   one strike, however many there are. A stall that goes on (nothing delivered) strikes
//!   again every `timeout_floor`, so a silent source still loses its tier.
//! - **Strikes decay**: each chunk a source delivers on time takes one strike off.
//! - **Slow is temporary.** At `max_strikes` the source is demoted below every healthy tier for
//!   `slow_factor × timeout_floor`, doubling with each demotion (at most 16×), or until it
//!   delivers a chunk again; afterwards it is back at its tier on probation (one more stall
//!   demotes it again).
//! - **Lost is temporary.** A source whose connection was lost ([`Scheduler::handle_source_lost`],
//!   e.g. an outage) is not asked for `timeout_floor`, doubling with each loss without a
//!   delivery in between (at most 64×); then it is probed with one chunk at a time until it
//!   delivers. Chunks that only such a source may provide wait for it rather than failing,
//!   also those that went overdue there before the loss was reported (the loss explains the
//!   lateness; a chunk the source answered `Missing` stays passed over).
//!   [`Scheduler::remove_source`] drops a source for good.
//! - **Bans are permanent.** A source that sends a chunk whose hash does not match is banned
//!   for the rest of the update and named in the [`Report`].
//!
//! In the endgame (nothing left to hand out, sources idle) chunks still in flight are
//! duplicated to idle sources of the same or a better tier, and the first verified copy wins:
//! a chunk held at a LAN source goes to a mirror or the origin only once that source is
//! measured faster (above).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::digest::ChunkId;

/// Monotonic time in milliseconds, from the driver (virtual time in `simnet`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Millis(pub u64);

/// A source, numbered by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SourceId(pub u32);

/// What kind of place bytes come from, in order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// The device's active slot (delta by deduplication).
    LocalSlot,
    /// A cache or sibling device on the LAN.
    LanPeer,
    /// A plain HTTP mirror of the origin.
    HttpMirror,
    /// The origin itself.
    Origin,
}

/// Which chunks a source may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holdings {
    /// Unknown: ask, and learn from `Missing` answers.
    Any,
    /// Exactly these (the local slot's installed index).
    Only(HashSet<ChunkId>),
}

/// Tuning of the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Most chunks in one request.
    pub batch_max_chunks: usize,
    /// Most bytes in one request.
    pub batch_max_bytes: u64,
    /// Never judge a request slow before this long.
    pub timeout_floor: u64,
    /// A request is slow beyond this multiple of its expected time.
    pub slow_factor: u64,
    /// Strikes before a source counts as slow.
    pub max_strikes: u32,
    /// Most sources asked for one chunk at once (endgame and timeouts).
    pub max_copies: usize,
    /// A chunk leaves a LAN source that is still delivering for a mirror or the origin only
    /// when that source is measured at least this many times faster (see the module docs).
    pub faster_factor: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            batch_max_chunks: 32,
            batch_max_bytes: 8 << 20,
            timeout_floor: 5_000,
            slow_factor: 4,
            max_strikes: 3,
            max_copies: 2,
            faster_factor: 2,
        }
    }
}

/// A chunk to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    /// Its id.
    pub id: ChunkId,
    /// Its length.
    pub len: u32,
}

/// What a source sent for one chunk, as judged by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkOutcome {
    /// The bytes matched the chunk's id and were stored.
    Verified,
    /// The bytes did not match the chunk's id.
    Corrupt,
    /// The source does not hold the chunk.
    Missing,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Ask `source` for these chunks (one `GetBlobs`, or local copies for the local slot).
    Request {
        /// The source.
        source: SourceId,
        /// The chunks, in order.
        ids: Vec<ChunkId>,
    },
    /// Another source delivered this chunk first: stop waiting for it here.
    Cancel {
        /// The source.
        source: SourceId,
        /// The chunk.
        id: ChunkId,
    },
    /// Every chunk is verified.
    Complete,
    /// A chunk cannot be had from any source still usable.
    Stuck {
        /// The chunk.
        id: ChunkId,
    },
}

/// Why a source was banned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BanReason {
    /// It sent bytes whose hash did not match the chunk id.
    CorruptChunk {
        /// The chunk it corrupted.
        id: ChunkId,
    },
}

/// What each source did in this update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceReport {
    /// The source.
    pub source: SourceId,
    /// Its kind.
    pub kind: SourceKind,
    /// Verified bytes it delivered first.
    pub bytes: u64,
    /// Verified chunks it delivered first.
    pub chunks: u64,
    /// Why it was banned, if it was.
    pub banned: Option<BanReason>,
    /// Whether it turned out slow.
    pub slow: bool,
}

/// The outcome of an update's fetching.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Report {
    /// Verified bytes by source kind.
    pub bytes_by_kind: BTreeMap<SourceKind, u64>,
    /// Per source.
    pub sources: Vec<SourceReport>,
    /// Bytes that arrived after another copy was already verified.
    pub duplicate_bytes: u64,
}

#[derive(Debug)]
struct Source {
    id: SourceId,
    kind: SourceKind,
    max_in_flight: usize,
    holdings: Holdings,
    /// In-flight chunk indices, when they were asked and what the source had to send first.
    in_flight: HashMap<usize, Asked>,
    banned: Option<BanReason>,
    /// Dropped for good by the driver.
    removed: bool,
    /// Unreachable (connection lost) until then; retried afterwards.
    backoff_until: Option<Millis>,
    /// Losses without a delivery in between (sets the backoff).
    losses: u32,
    /// Back from a backoff: one chunk at a time until it delivers.
    probing: bool,
    strikes: u32,
    /// When the current stall was last counted (a delivery ends the stall).
    stall: Option<Millis>,
    /// Demoted as slow until then.
    demoted_until: Option<Millis>,
    /// Demotions so far (sets the next one's length).
    demotions: u32,
    /// Whether it was ever demoted in this update.
    ever_slow: bool,
    /// Measured throughput in bytes per second (0 until measured): `window_bytes` over
    /// `window_ms`.
    rate: u64,
    /// Bytes and milliseconds of recent deliveries, each decayed by 7/8 per delivery. The
    /// rate is their ratio, not an average of per-chunk rates: a cache sends in bursts (what
    /// it holds at once, what it fetches at its uplink's pace), and an average of rates is
    /// ruled by the bursts, overrating the source many times over.
    window_bytes: u64,
    window_ms: u64,
    last_arrival: Option<Millis>,
    /// When it last sent verified bytes (also a copy another source sent first): a LAN
    /// source is still delivering within `timeout_floor` of it.
    last_delivery: Option<Millis>,
    bytes: u64,
    chunks: u64,
    /// Chunks that list this source in `passed_over` (they only grow, but for the chunks that
    /// went overdue at a source then lost: see `handle_source_lost`).
    passed: usize,
}

impl Source {
    fn usable(&self) -> bool {
        self.banned.is_none() && !self.removed && self.backoff_until.is_none()
    }

    /// Unreachable for now, but to be retried.
    fn backing_off(&self) -> bool {
        self.banned.is_none() && !self.removed && self.backoff_until.is_some()
    }

    fn slow(&self) -> bool {
        self.demoted_until.is_some()
    }

    /// Chunks it may have in flight now.
    fn capacity(&self) -> usize {
        if self.probing { 1 } else { self.max_in_flight }
    }

    /// Preference tier: kind order, with slow sources after every healthy one.
    fn tier(&self) -> u8 {
        let base = match self.kind {
            SourceKind::LocalSlot => 0,
            SourceKind::LanPeer => 1,
            SourceKind::HttpMirror => 2,
            SourceKind::Origin => 3,
        };
        if self.slow() { base + 4 } else { base }
    }

    /// A mirror or the origin: reached over the site's uplink.
    fn wan(&self) -> bool {
        matches!(self.kind, SourceKind::HttpMirror | SourceKind::Origin)
    }

    fn may_hold(&self, id: &ChunkId) -> bool {
        match &self.holdings {
            Holdings::Any => true,
            Holdings::Only(set) => set.contains(id),
        }
    }

    /// When a chunk asked as `asked` is overdue: `slow_factor` times the time the source
    /// needs, at its measured rate, to send the chunk and everything queued ahead of it then,
    /// and never before `timeout_floor`. Counting the queue matters: a source that answers
    /// its requests in order sends the last of 64 queued chunks 64 chunk-times after it was
    /// asked, however fast it is; judged by its own length alone that chunk would go overdue
    /// at any link slower than 64 chunks per floor, and be fetched a second time elsewhere.
    fn deadline(&self, asked: Asked, len: u32, config: &Config) -> Millis {
        // Unmeasured (rate 0): only the floor applies.
        let expected = ((asked.ahead + u64::from(len)) * 1000)
            .checked_div(self.rate)
            .unwrap_or(0);
        Millis(
            asked.at.0.saturating_add(
                expected
                    .saturating_mul(config.slow_factor)
                    .max(config.timeout_floor),
            ),
        )
    }

    /// Bytes asked of this source and not yet delivered.
    fn queued_bytes(&self, chunks: &[Chunk]) -> u64 {
        self.in_flight
            .keys()
            .map(|&c| u64::from(chunks[c].need.len))
            .sum()
    }
}

/// When a chunk was asked of a source, and the bytes in flight at that source before it
/// (which the source sends first).
#[derive(Debug, Clone, Copy)]
struct Asked {
    at: Millis,
    ahead: u64,
}

#[derive(Debug)]
struct Chunk {
    need: Need,
    done: bool,
    /// Sources that said they do not hold it, or were too slow with it.
    passed_over: Vec<SourceId>,
    /// Sources it is in flight at.
    holders: Vec<SourceId>,
}

/// A lost source's backoff doubles at most this many times (`timeout_floor` × 64).
const MAX_BACKOFF_DOUBLINGS: u32 = 6;

/// A slow source's demotion doubles at most this many times (`slow_factor × timeout_floor`
/// × 16).
const MAX_DEMOTION_DOUBLINGS: u32 = 4;

/// Tiers are below 8 (`Source::tier`); the last slot counts chunks no usable source may
/// provide.
const TIER_SLOTS: usize = 9;

fn tier_slot(tier: Option<u8>) -> usize {
    tier.map_or(TIER_SLOTS - 1, usize::from)
}

/// The fetch scheduler for one update.
#[derive(Debug)]
pub struct Scheduler {
    config: Config,
    chunks: Vec<Chunk>,
    by_id: HashMap<ChunkId, usize>,
    /// Chunks waiting for a source, in artifact order (entries whose `queued` flag is off
    /// are stale and skipped).
    pending: VecDeque<usize>,
    queued: Vec<bool>,
    queued_count: usize,
    /// Each chunk's best tier (`best_tier`), cached: it only changes when a source's
    /// usability or tier changes (then all are recomputed, see `refresh_tiers`) or when the
    /// chunk's `passed_over` grows (then that chunk's, see `retier`).
    best: Vec<Option<u8>>,
    /// Queued chunks by best tier (index `tier_slot`): a source whose tier counts none would
    /// scan the whole queue for nothing, and is skipped.
    queued_by_tier: [usize; TIER_SLOTS],
    /// The sources' usability and tier when `best` was computed.
    tiers_seen: Vec<(bool, u8)>,
    sources: Vec<Source>,
    actions: VecDeque<Action>,
    remaining: usize,
    duplicate_bytes: u64,
    /// The last copy asked of a mirror or the origin to measure it (`probe_target`): the
    /// source, the chunk and when. Its answer measures the source even when it comes after
    /// another copy was verified (the request was cancelled).
    probe: Option<(usize, usize, Millis)>,
    /// No new measuring copy before this.
    next_probe: Millis,
    started: bool,
    finished: bool,
}

impl Scheduler {
    /// A scheduler for `needs` (duplicate ids are fetched once).
    pub fn new(config: Config, needs: impl IntoIterator<Item = Need>) -> Self {
        let mut chunks = Vec::new();
        let mut by_id = HashMap::new();
        for need in needs {
            by_id.entry(need.id).or_insert_with(|| {
                chunks.push(Chunk {
                    need,
                    done: false,
                    passed_over: Vec::new(),
                    holders: Vec::new(),
                });
                chunks.len() - 1
            });
        }
        let remaining = chunks.len();
        Self {
            config,
            pending: (0..chunks.len()).collect(),
            queued: vec![true; chunks.len()],
            queued_count: chunks.len(),
            // No source yet: nothing may provide any chunk.
            best: vec![None; chunks.len()],
            queued_by_tier: {
                let mut counts = [0; TIER_SLOTS];
                counts[tier_slot(None)] = chunks.len();
                counts
            },
            tiers_seen: Vec::new(),
            chunks,
            by_id,
            sources: Vec::new(),
            actions: VecDeque::new(),
            remaining,
            duplicate_bytes: 0,
            probe: None,
            next_probe: Millis(0),
            started: false,
            finished: false,
        }
    }

    /// Hand out work to the sources added so far. Sources known at the start should all be
    /// added before this, so that the first one added does not take chunks a better one holds.
    pub fn start(&mut self, now: Millis) {
        self.started = true;
        self.schedule(now);
    }

    /// Add a source (also in the middle of an update, e.g. a peer just discovered).
    /// `max_in_flight` bounds the chunks asked of it at once.
    pub fn add_source(
        &mut self,
        now: Millis,
        id: SourceId,
        kind: SourceKind,
        max_in_flight: usize,
        holdings: Holdings,
    ) {
        self.sources.push(Source {
            id,
            kind,
            max_in_flight: max_in_flight.max(1),
            holdings,
            in_flight: HashMap::new(),
            banned: None,
            removed: false,
            backoff_until: None,
            losses: 0,
            probing: false,
            strikes: 0,
            stall: None,
            demoted_until: None,
            demotions: 0,
            ever_slow: false,
            rate: 0,
            window_bytes: 0,
            window_ms: 0,
            last_arrival: None,
            last_delivery: None,
            bytes: 0,
            chunks: 0,
            passed: 0,
        });
        self.schedule(now);
    }

    /// Chunks still to verify.
    pub fn remaining(&self) -> usize {
        self.remaining
    }

    /// The next thing to do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The earliest time [`Self::handle_timeout`] has work to do: a request's deadline, a
    /// stall going on, the end of a backoff or of a demotion.
    pub fn poll_timeout(&self) -> Option<Millis> {
        if self.finished {
            return None;
        }
        let period = self.stall_period();
        let requests = self
            .sources
            .iter()
            .enumerate()
            .filter(|(_, s)| s.usable())
            .flat_map(|(i, s)| {
                s.in_flight
                    .iter()
                    // A request already judged overdue has no deadline left.
                    .filter(|(c, _)| !self.chunks[**c].passed_over.contains(&s.id))
                    .map(move |(&c, &asked)| self.wake_at(i, c, asked))
            })
            .min();
        let sources = self
            .sources
            .iter()
            .filter(|s| s.banned.is_none() && !s.removed)
            .flat_map(|s| {
                let stall = s
                    .stall
                    .filter(|_| s.usable() && !s.in_flight.is_empty())
                    .map(|t| Millis(t.0.saturating_add(period)));
                [stall, s.backoff_until, s.demoted_until]
            })
            .flatten()
            .min();
        requests.into_iter().chain(sources).min()
    }

    /// A source answered for one chunk.
    pub fn handle_chunk(
        &mut self,
        now: Millis,
        source: SourceId,
        id: &ChunkId,
        outcome: ChunkOutcome,
    ) {
        let (Some(&c), Some(s)) = (self.by_id.get(id), self.source_index(source)) else {
            return;
        };
        if self.sources[s].banned.is_some() || self.sources[s].removed {
            // A banned or removed source's late answers count for nothing.
            return;
        }
        let asked = self.sources[s].in_flight.remove(&c);
        // The answer to a measuring copy measures its source, cancelled or not.
        let probed = match self.probe {
            Some((ps, pc, at)) if ps == s && pc == c => {
                self.probe = None;
                Some(at)
            }
            _ => None,
        };
        self.chunks[c].holders.retain(|h| *h != source);
        let len = u64::from(self.chunks[c].need.len);
        match outcome {
            ChunkOutcome::Verified => {
                let on_time = asked.is_some() && !self.chunks[c].passed_over.contains(&source);
                let src = &mut self.sources[s];
                // It delivers: any stall is over, it is reachable, and on time it earns a
                // strike back.
                src.stall = None;
                src.last_delivery = Some(now);
                src.losses = 0;
                src.probing = false;
                src.backoff_until = None;
                if on_time {
                    src.strikes = src.strikes.saturating_sub(1);
                }
                if src.demoted_until.take().is_some() {
                    // Demoted while it stalled, and delivering again (an outage at its
                    // upstream is over): back at its tier on probation.
                    src.strikes = src.strikes.min(self.config.max_strikes.saturating_sub(1));
                }
                if let Some(asked) = asked.map(|a| a.at).or(probed) {
                    let start = src.last_arrival.map_or(asked, |l| l.max(asked));
                    let elapsed = now.0.saturating_sub(start.0).max(1);
                    src.window_bytes = src.window_bytes - src.window_bytes / 8 + len;
                    src.window_ms = src.window_ms - src.window_ms / 8 + elapsed;
                    src.rate = src.window_bytes * 1000 / src.window_ms.max(1);
                    src.last_arrival = Some(now);
                }
                if self.chunks[c].done {
                    self.duplicate_bytes += len;
                } else {
                    src.bytes += len;
                    src.chunks += 1;
                    self.chunks[c].done = true;
                    self.remaining -= 1;
                    self.unqueue(c);
                    for holder in std::mem::take(&mut self.chunks[c].holders) {
                        if let Some(h) = self.source_index(holder) {
                            self.sources[h].in_flight.remove(&c);
                        }
                        self.actions.push_back(Action::Cancel {
                            source: holder,
                            id: *id,
                        });
                    }
                }
            }
            ChunkOutcome::Corrupt => {
                self.ban(s, BanReason::CorruptChunk { id: *id });
                self.requeue(c);
            }
            ChunkOutcome::Missing => {
                self.chunks[c].passed_over.push(source);
                self.sources[s].passed += 1;
                self.retier(c);
                self.requeue(c);
            }
        }
        self.schedule(now);
    }

    /// A source is unreachable (its connection was lost): its chunks go elsewhere, and it is
    /// asked again after a backoff (`timeout_floor`, doubling with each loss without a
    /// delivery in between), one chunk at a time until it delivers. Further losses reported
    /// while it backs off change nothing. Not a ban: see [`Self::remove_source`].
    pub fn handle_source_lost(&mut self, now: Millis, source: SourceId) {
        if let Some(s) = self.source_index(source) {
            let floor = self.config.timeout_floor.max(1);
            let src = &mut self.sources[s];
            if src.banned.is_none() && !src.removed && src.backoff_until.is_none() {
                let wait = floor << src.losses.min(MAX_BACKOFF_DOUBLINGS);
                src.losses += 1;
                src.backoff_until = Some(Millis(now.0.saturating_add(wait)));
                src.stall = None;
                src.probing = false;
            }
            // The chunks that went overdue here were late because the link was going: the
            // loss explains them, so once back the source may be asked for them again.
            // Otherwise a chunk that only this source may provide would be stuck, though the
            // source is only backing off. (A chunk it answered `Missing` stays passed over.)
            let late: Vec<usize> = self.sources[s]
                .in_flight
                .keys()
                .copied()
                .filter(|&c| self.chunks[c].passed_over.contains(&source))
                .collect();
            for c in late {
                self.chunks[c].passed_over.retain(|p| *p != source);
                self.sources[s].passed -= 1;
            }
            self.release_all(s);
        }
        self.schedule(now);
    }

    /// A source is gone for good (it left, or broke the protocol): its chunks go elsewhere
    /// and it is never asked again in this update.
    pub fn remove_source(&mut self, now: Millis, source: SourceId) {
        if let Some(s) = self.source_index(source) {
            self.sources[s].removed = true;
            self.release_all(s);
        }
        self.schedule(now);
    }

    /// A source in backoff is reachable again (its connection was just made, for instance a
    /// LAN peer that came up during the update): its backoff ends now, and it is asked one
    /// chunk at a time until it delivers, as at the end of a backoff. Nothing changes for a
    /// source not backing off; a banned or removed one is never asked, reachable or not.
    pub fn handle_source_reachable(&mut self, now: Millis, source: SourceId) {
        if let Some(s) = self.source_index(source) {
            let src = &mut self.sources[s];
            if src.backoff_until.take().is_some() {
                src.probing = true;
            }
        }
        self.schedule(now);
    }

    /// Time has passed: judge overdue requests and stalls, end backoffs and demotions.
    pub fn handle_timeout(&mut self, now: Millis) {
        let keep = self.config.max_strikes.saturating_sub(1);
        for src in &mut self.sources {
            if src.backoff_until.is_some_and(|t| t <= now) {
                src.backoff_until = None;
                src.probing = true;
            }
            if src.demoted_until.is_some_and(|t| t <= now) {
                // On probation: one more stall demotes it again.
                src.demoted_until = None;
                src.strikes = src.strikes.min(keep);
            }
        }
        let mut overdue = Vec::new();
        // Past their deadline, but waiting for a LAN source that still delivers.
        let mut held = Vec::new();
        for (s, source) in self.sources.iter().enumerate() {
            if !source.usable() {
                continue;
            }
            for (&c, &asked) in &source.in_flight {
                let chunk = &self.chunks[c];
                let deadline = source.deadline(asked, chunk.need.len, &self.config);
                if chunk.passed_over.contains(&source.id) || now < deadline {
                    continue;
                }
                if now >= self.overdue_at(s, c, asked) {
                    overdue.push((s, c));
                } else {
                    held.push((deadline, c));
                }
            }
        }
        // In_flight is a HashMap: sort, so that the order (and so the run) does not depend on
        // the hasher's seed.
        overdue.sort_unstable();
        held.sort_unstable();
        let mut stalled = vec![false; self.sources.len()];
        for (s, c) in overdue {
            // The request stays open (the bytes may still come), but the chunk is also asked
            // elsewhere.
            stalled[s] = true;
            let source = &mut self.sources[s];
            source.passed += 1;
            let id = source.id;
            self.chunks[c].passed_over.push(id);
            self.retier(c);
            if self.chunks[c].holders.len() < self.config.max_copies {
                self.enqueue(c);
            }
        }
        // One strike per stall: for the requests that went overdue now, unless this stall was
        // counted less than a period ago; and again for each period of silence after it.
        let period = self.stall_period();
        for (s, stalled) in stalled.into_iter().enumerate() {
            let src = &self.sources[s];
            let silent = src.usable()
                && !src.in_flight.is_empty()
                && src
                    .stall
                    .is_some_and(|t| now.0 >= t.0.saturating_add(period));
            let counted = src
                .stall
                .is_some_and(|t| now.0 < t.0.saturating_add(period));
            if (stalled && !counted) || silent {
                self.strike(s, now);
            }
        }
        // Held chunks wait for their LAN source unless a mirror or the origin is measured
        // faster: with none measured yet, one copy of a chunk held for `timeout_floor` past
        // its deadline measures it.
        if let Some(&(deadline, c)) = held.first()
            && now.0 >= deadline.0.saturating_add(self.stall_period())
            && now >= self.next_probe
            && !self.chunks[c].done
            && let Some(w) = self.probe_target(c)
        {
            self.probe = Some((w, c, now));
            self.next_probe = Millis(now.0.saturating_add(self.probe_interval()));
            self.request(w, vec![c], now);
        }
        self.schedule(now);
    }

    /// What happened, by source.
    pub fn report(&self) -> Report {
        let mut report = Report {
            duplicate_bytes: self.duplicate_bytes,
            ..Report::default()
        };
        for s in &self.sources {
            *report.bytes_by_kind.entry(s.kind).or_default() += s.bytes;
            report.sources.push(SourceReport {
                source: s.id,
                kind: s.kind,
                bytes: s.bytes,
                chunks: s.chunks,
                banned: s.banned.clone(),
                slow: s.ever_slow,
            });
        }
        report
    }

    /// How long a stall lasts before it counts again.
    fn stall_period(&self) -> u64 {
        self.config.timeout_floor.max(1)
    }

    /// A stall at source `s`: a strike, and at `max_strikes` a demotion.
    fn strike(&mut self, s: usize, now: Millis) {
        let (max, floor, factor) = (
            self.config.max_strikes,
            self.config.timeout_floor.max(1),
            self.config.slow_factor.max(1),
        );
        let src = &mut self.sources[s];
        src.strikes += 1;
        src.stall = Some(now);
        if src.strikes >= max && src.demoted_until.is_none() {
            let wait = floor.saturating_mul(factor) << src.demotions.min(MAX_DEMOTION_DOUBLINGS);
            src.demoted_until = Some(Millis(now.0.saturating_add(wait)));
            src.demotions += 1;
            src.ever_slow = true;
        }
    }

    /// Whether a source now backing off may later provide chunk `c`.
    fn may_return(&self, c: usize) -> bool {
        let chunk = &self.chunks[c];
        self.sources.iter().any(|s| {
            s.backing_off() && s.may_hold(&chunk.need.id) && !chunk.passed_over.contains(&s.id)
        })
    }

    fn source_index(&self, id: SourceId) -> Option<usize> {
        self.sources.iter().position(|s| s.id == id)
    }

    fn ban(&mut self, s: usize, reason: BanReason) {
        if self.sources[s].banned.is_none() {
            self.sources[s].banned = Some(reason);
        }
        self.release_all(s);
    }

    fn release_all(&mut self, s: usize) {
        let id = self.sources[s].id;
        let mut chunks: Vec<usize> = self.sources[s].in_flight.drain().map(|(c, _)| c).collect();
        chunks.sort_unstable();
        for c in chunks {
            self.chunks[c].holders.retain(|h| *h != id);
            self.requeue(c);
        }
    }

    fn requeue(&mut self, c: usize) {
        let chunk = &self.chunks[c];
        if !chunk.done && chunk.holders.is_empty() {
            self.enqueue(c);
        }
    }

    fn enqueue(&mut self, c: usize) {
        if !self.queued[c] {
            self.queued[c] = true;
            self.queued_count += 1;
            self.queued_by_tier[tier_slot(self.best[c])] += 1;
            self.pending.push_front(c);
        }
    }

    fn unqueue(&mut self, c: usize) {
        if self.queued[c] {
            self.queued[c] = false;
            self.queued_count -= 1;
            self.queued_by_tier[tier_slot(self.best[c])] -= 1;
        }
    }

    /// The best tier at which some usable source may still provide chunk `c`.
    fn best_tier(&self, c: usize) -> Option<u8> {
        let chunk = &self.chunks[c];
        self.sources
            .iter()
            .filter(|s| {
                s.usable() && s.may_hold(&chunk.need.id) && !chunk.passed_over.contains(&s.id)
            })
            .map(Source::tier)
            .min()
    }

    /// Recompute chunk `c`'s cached best tier (its `passed_over` grew).
    fn retier(&mut self, c: usize) {
        // First the others, should the sources have changed since: every cached tier then
        // reflects the sources as they are now, and a later change back is seen as one.
        self.refresh_tiers();
        let best = self.best_tier(c);
        if self.queued[c] {
            self.queued_by_tier[tier_slot(self.best[c])] -= 1;
            self.queued_by_tier[tier_slot(best)] += 1;
        }
        self.best[c] = best;
    }

    /// Bring the cached best tiers up to date when some source's usability or tier changed
    /// since they were computed (a source added, lost, back, banned, removed, demoted or
    /// back at its tier): rare events, each costing one pass over the chunks. Detected by
    /// comparison, so that no such change can be missed.
    fn refresh_tiers(&mut self) {
        if self.tiers_seen.len() == self.sources.len()
            && self
                .tiers_seen
                .iter()
                .zip(&self.sources)
                .all(|(&seen, s)| seen == (s.usable(), s.tier()))
        {
            return;
        }
        self.tiers_seen = self
            .sources
            .iter()
            .map(|s| (s.usable(), s.tier()))
            .collect();
        self.queued_by_tier = [0; TIER_SLOTS];
        for c in 0..self.chunks.len() {
            self.best[c] = self.best_tier(c);
            if self.queued[c] {
                self.queued_by_tier[tier_slot(self.best[c])] += 1;
            }
        }
    }

    /// Hand out queued chunks, each to a source of its best tier (the fastest first), and
    /// detect a chunk nobody may provide. Amortised cost: a source whose tier is no queued
    /// chunk's best is skipped without scanning, and a stale queue entry is dropped once; the
    /// scan only walks past chunks of the source's own tier that it cannot take (not held,
    /// passed over, already asked).
    fn schedule(&mut self, now: Millis) {
        if !self.started || self.finished {
            return;
        }
        if self.remaining == 0 {
            self.finished = true;
            self.actions.push_back(Action::Complete);
            return;
        }
        self.refresh_tiers();
        let mut order: Vec<usize> = (0..self.sources.len())
            .filter(|&s| self.sources[s].usable())
            .collect();
        order.sort_by_key(|&s| {
            (
                self.sources[s].tier(),
                std::cmp::Reverse(self.sources[s].rate),
            )
        });
        for s in order {
            let mut batch = Vec::new();
            let mut bytes = 0u64;
            let tier = self.sources[s].tier();
            if self.covered_below(tier) {
                // Every chunk's best tier is better than this source's: nothing for it, and
                // no need to scan the queue to find that out.
                continue;
            }
            // No queued chunk has this tier as its best: the scan would take nothing.
            let mut i = if self.queued_by_tier[tier_slot(Some(tier))] == 0 {
                self.pending.len()
            } else {
                0
            };
            while i < self.pending.len() {
                let source = &self.sources[s];
                if source.in_flight.len() + batch.len() >= source.capacity()
                    || batch.len() >= self.config.batch_max_chunks
                    || bytes >= self.config.batch_max_bytes
                {
                    break;
                }
                let c = self.pending[i];
                let chunk = &self.chunks[c];
                if !self.queued[c] || chunk.done {
                    self.unqueue(c);
                    self.pending.remove(i);
                    continue;
                }
                let eligible = source.may_hold(&chunk.need.id)
                    && !chunk.passed_over.contains(&source.id)
                    && !chunk.holders.contains(&source.id)
                    && self.best[c] == Some(tier);
                if eligible {
                    bytes += u64::from(chunk.need.len);
                    self.pending.remove(i);
                    self.unqueue(c);
                    batch.push(c);
                } else {
                    i += 1;
                }
            }
            if self.queued_count == 0 {
                self.endgame(s, tier, &mut batch);
            }
            if batch.is_empty() {
                continue;
            }
            self.request(s, batch, now);
        }
        // A chunk nobody usable may provide, with nothing in flight: the update cannot finish.
        // (Impossible while some usable source may hold anything and passed over nothing.)
        // Equally impossible when no queued chunk lacks a source.
        if self.covered_below(u8::MAX) || self.queued_by_tier[tier_slot(None)] == 0 {
            return;
        }
        // A source backing off may still provide it: wait for it.
        if let Some(&c) = self.pending.iter().find(|&&c| {
            self.queued[c]
                && self.chunks[c].holders.is_empty()
                && self.best[c].is_none()
                && !self.may_return(c)
        }) {
            self.finished = true;
            self.actions.push_back(Action::Stuck {
                id: self.chunks[c].need.id,
            });
        }
    }

    /// Ask source `s` for chunks `batch`, in order.
    fn request(&mut self, s: usize, batch: Vec<usize>, now: Millis) {
        let source_id = self.sources[s].id;
        let mut ahead = self.sources[s].queued_bytes(&self.chunks);
        let ids = batch
            .iter()
            .map(|&c| {
                self.chunks[c].holders.push(source_id);
                self.sources[s]
                    .in_flight
                    .insert(c, Asked { at: now, ahead });
                ahead += u64::from(self.chunks[c].need.len);
                self.chunks[c].need.id
            })
            .collect();
        self.actions.push_back(Action::Request {
            source: source_id,
            ids,
        });
    }

    /// Whether a request for chunk `c` at source `s` that is past its deadline waits for `s`
    /// while `s` still delivers: `s` is a healthy LAN source, no other source of its tier or
    /// a better one may provide `c` (so the chunk would leave for a mirror or the origin,
    /// over the uplink `s` itself fetches through), and no such source is measured
    /// `faster_factor` times faster than `s`.
    fn patient(&self, s: usize, c: usize) -> bool {
        let src = &self.sources[s];
        if src.kind != SourceKind::LanPeer || src.slow() {
            return false;
        }
        let chunk = &self.chunks[c];
        let mut wan_rate = 0;
        for (o, other) in self.sources.iter().enumerate() {
            if o == s
                || !other.usable()
                || !other.may_hold(&chunk.need.id)
                || chunk.passed_over.contains(&other.id)
            {
                continue;
            }
            if other.tier() <= src.tier() {
                // Switching to it costs no uplink: the deadline rules.
                return false;
            }
            if other.wan() && !other.slow() {
                wan_rate = wan_rate.max(other.rate);
            }
        }
        src.rate == 0 || wan_rate < src.rate.saturating_mul(self.config.faster_factor.max(1))
    }

    /// When the request for chunk `c` at source `s`, asked as `asked`, goes overdue: at its
    /// deadline, or, where the source is owed patience (`patient`), not before it has
    /// delivered nothing for `timeout_floor`.
    fn overdue_at(&self, s: usize, c: usize, asked: Asked) -> Millis {
        let src = &self.sources[s];
        let deadline = src.deadline(asked, self.chunks[c].need.len, &self.config);
        if !self.patient(s, c) {
            return deadline;
        }
        let delivering_until = src.last_delivery.map_or(Millis(0), |t| {
            Millis(t.0.saturating_add(self.stall_period()))
        });
        deadline.max(delivering_until)
    }

    /// When `handle_timeout` next has something to do for this request: it goes overdue,
    /// or, held past its deadline with no mirror or origin measured yet, it is the moment
    /// to measure one (`probe_target`).
    fn wake_at(&self, s: usize, c: usize, asked: Asked) -> Millis {
        let overdue = self.overdue_at(s, c, asked);
        let deadline = self.sources[s].deadline(asked, self.chunks[c].need.len, &self.config);
        if overdue > deadline && self.probe_target(c).is_some() {
            Millis(deadline.0.saturating_add(self.stall_period()))
                .max(self.next_probe)
                .min(overdue)
        } else {
            overdue
        }
    }

    /// Measuring copies are at least this far apart: `slow_factor × timeout_floor`.
    fn probe_interval(&self) -> u64 {
        self.config
            .slow_factor
            .max(1)
            .saturating_mul(self.config.timeout_floor.max(1))
    }

    /// The mirror or origin to ask for one copy of held chunk `c`, so that it is measured:
    /// only while no usable mirror or origin has a measured rate or a request in flight
    /// (so at most one such copy is out at a time, and none once one is measured; copies
    /// are also `probe_interval` apart, see `handle_timeout`).
    fn probe_target(&self, c: usize) -> Option<usize> {
        let chunk = &self.chunks[c];
        if chunk.holders.len() >= self.config.max_copies
            || self
                .sources
                .iter()
                .any(|s| s.wan() && s.usable() && (s.rate > 0 || !s.in_flight.is_empty()))
        {
            return None;
        }
        self.sources
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                s.wan()
                    && s.usable()
                    && !s.slow()
                    && s.may_hold(&chunk.need.id)
                    && !chunk.passed_over.contains(&s.id)
                    && !chunk.holders.contains(&s.id)
            })
            .min_by_key(|(i, s)| (s.tier(), *i))
            .map(|(i, _)| i)
    }

    /// Whether some usable source of a tier better than `tier` may provide every chunk (it
    /// may hold anything and has passed over none), so that every chunk's best tier is better
    /// than `tier`. Lets `schedule` skip scanning the queue for sources that would get
    /// nothing from it, which keeps a chunk's handling independent of the release's size.
    fn covered_below(&self, tier: u8) -> bool {
        self.sources.iter().any(|s| {
            s.usable() && s.passed == 0 && matches!(s.holdings, Holdings::Any) && s.tier() < tier
        })
    }

    /// Nothing left to hand out: duplicate chunks in flight elsewhere onto idle source `s`,
    /// when `s` is as preferred as the chunk's best tier (the uplink is not spent on a copy a
    /// LAN source is already fetching at a healthy pace).
    fn endgame(&self, s: usize, tier: u8, batch: &mut Vec<usize>) {
        let source = &self.sources[s];
        for (c, chunk) in self.chunks.iter().enumerate() {
            if source.in_flight.len() + batch.len() >= source.capacity()
                || batch.len() >= self.config.batch_max_chunks
            {
                return;
            }
            if chunk.done
                || chunk.holders.is_empty()
                || chunk.holders.len() >= self.config.max_copies
                || chunk.holders.contains(&source.id)
                || batch.contains(&c)
                || !source.may_hold(&chunk.need.id)
                || chunk.passed_over.contains(&source.id)
                || self.best[c].is_none_or(|best| tier > best)
            {
                continue;
            }
            batch.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: SourceId = SourceId(1);
    const PEER_B: SourceId = SourceId(2);
    const ORIGIN: SourceId = SourceId(9);
    const LOCAL: SourceId = SourceId(0);

    fn needs(n: u64) -> Vec<Need> {
        (0..n)
            .map(|i| Need {
                id: ChunkId::of(&i.to_le_bytes()),
                len: 65_536,
            })
            .collect()
    }

    /// Drain actions; returns (source, id) requests in order, and whether it completed.
    fn drain(s: &mut Scheduler) -> (Vec<(SourceId, ChunkId)>, Vec<Action>) {
        let mut requests = Vec::new();
        let mut other = Vec::new();
        while let Some(action) = s.poll_action() {
            match action {
                Action::Request { source, ids } => {
                    requests.extend(ids.into_iter().map(|id| (source, id)));
                }
                a => other.push(a),
            }
        }
        (requests, other)
    }

    /// Answer every request with `answer(source, id)` until nothing is asked; returns the
    /// non-request actions seen.
    fn run(
        s: &mut Scheduler,
        mut now: u64,
        answer: impl Fn(SourceId, &ChunkId) -> Option<ChunkOutcome>,
    ) -> Vec<Action> {
        let mut seen = Vec::new();
        loop {
            let (requests, other) = drain(s);
            seen.extend(other);
            if requests.is_empty() {
                return seen;
            }
            for (source, id) in requests {
                now += 10;
                if let Some(outcome) = answer(source, &id) {
                    s.handle_chunk(Millis(now), source, &id, outcome);
                }
            }
        }
    }

    #[test]
    fn origin_alone_delivers_everything() {
        let mut s = Scheduler::new(Config::default(), needs(100));
        s.add_source(Millis(0), ORIGIN, SourceKind::Origin, 64, Holdings::Any);
        s.start(Millis(0));
        let seen = run(&mut s, 0, |_, _| Some(ChunkOutcome::Verified));
        assert_eq!(seen, [Action::Complete]);
        assert_eq!(s.report().bytes_by_kind[&SourceKind::Origin], 100 * 65_536);
    }

    #[test]
    fn lan_peer_is_preferred_and_the_origin_fills_only_its_gaps() {
        let all = needs(100);
        let lacking: HashSet<ChunkId> = all.iter().step_by(10).map(|n| n.id).collect();
        let mut s = Scheduler::new(Config::default(), all);
        s.add_source(Millis(0), ORIGIN, SourceKind::Origin, 64, Holdings::Any);
        s.add_source(Millis(0), PEER, SourceKind::LanPeer, 16, Holdings::Any);
        s.start(Millis(0));
        let seen = run(&mut s, 0, |source, id| {
            Some(if source == PEER && lacking.contains(id) {
                ChunkOutcome::Missing
            } else {
                ChunkOutcome::Verified
            })
        });
        assert_eq!(seen, [Action::Complete]);
        let report = s.report();
        assert_eq!(report.bytes_by_kind[&SourceKind::LanPeer], 90 * 65_536);
        assert_eq!(report.bytes_by_kind[&SourceKind::Origin], 10 * 65_536);
    }

    #[test]
    fn corrupting_peer_is_banned_and_named() {
        let all = needs(50);
        let bad = all[7].id;
        let mut s = Scheduler::new(Config::default(), all);
        s.add_source(Millis(0), PEER, SourceKind::LanPeer, 8, Holdings::Any);
        s.add_source(Millis(0), ORIGIN, SourceKind::Origin, 8, Holdings::Any);
        s.start(Millis(0));
        let seen = run(&mut s, 0, |source, id| {
            Some(if source == PEER && *id == bad {
                ChunkOutcome::Corrupt
            } else {
                ChunkOutcome::Verified
            })
        });
        assert_eq!(seen, [Action::Complete]);
        let report = s.report();
        let peer = report.sources.iter().find(|r| r.source == PEER).unwrap();
        assert_eq!(peer.banned, Some(BanReason::CorruptChunk { id: bad }));
        // Everything after the ban came from the origin.
        assert!(report.bytes_by_kind[&SourceKind::Origin] >= 65_536);
        assert_eq!(
            report.bytes_by_kind.values().sum::<u64>(),
            50 * 65_536,
            "each chunk counted once"
        );
    }

    #[test]
    fn local_slot_serves_what_it_holds() {
        let all = needs(40);
        let held: HashSet<ChunkId> = all[..38].iter().map(|n| n.id).collect();
        let mut s = Scheduler::new(Config::default(), all);
        s.add_source(Millis(0), ORIGIN, SourceKind::Origin, 8, Holdings::Any);
        s.add_source(
            Millis(0),
            LOCAL,
            SourceKind::LocalSlot,
            64,
            Holdings::Only(held),
        );
        s.start(Millis(0));
        run(&mut s, 0, |_, _| Some(ChunkOutcome::Verified));
        let report = s.report();
        assert_eq!(report.bytes_by_kind[&SourceKind::LocalSlot], 38 * 65_536);
        assert_eq!(report.bytes_by_kind[&SourceKind::Origin], 2 * 65_536);
    }

    #[test]
    fn silent_peer_times_out_and_the_origin_takes_over() {
        let mut s = Scheduler::new(Config::default(), needs(20));
        s.add_source(Millis(0), PEER, SourceKind::LanPeer, 4, Holdings::Any);
        s.add_source(Millis(0), ORIGIN, SourceKind::Origin, 4, Holdings::Any);
        s.start(Millis(0));
        let (first, _) = drain(&mut s);
        assert!(
            first.iter().all(|(src, _)| *src == PEER),
            "the peer is asked first"
        );
        // The peer never answers. At its deadline, its chunks are asked of the origin.
        let deadline = s.poll_timeout().unwrap();
        assert_eq!(deadline, Millis(Config::default().timeout_floor));
        let mut now = deadline.0;
        let mut done = false;
        for _ in 0..100 {
            s.handle_timeout(Millis(now));
            let (requests, other) = drain(&mut s);
            if other.contains(&Action::Complete) {
                done = true;
                break;
            }
            for (source, id) in requests {
                if source == ORIGIN {
                    s.handle_chunk(Millis(now), source, &id, ChunkOutcome::Verified);
                }
            }
            if let Some(Action::Complete) = s.poll_action() {
                done = true;
                break;
            }
            now = s.poll_timeout().map_or(now + 1, |t| t.0.max(now + 1));
        }
        assert!(done, "the update completes without the peer");
        let report = s.report();
        assert!(report.sources.iter().any(|r| r.source == PEER && r.slow));
        assert_eq!(report.bytes_by_kind[&SourceKind::Origin], 20 * 65_536);
    }

    #[test]
    fn endgame_duplicates_within_the_tier_and_cancels_the_loser() {
        let all = needs(1);
        let id = all[0].id;
        let mut s = Scheduler::new(Config::default(), all);
        s.add_source(Millis(0), PEER, SourceKind::LanPeer, 4, Holdings::Any);
        s.add_source(Millis(0), PEER_B, SourceKind::LanPeer, 4, Holdings::Any);
        s.add_source(Millis(0), ORIGIN, SourceKind::Origin, 4, Holdings::Any);
        s.start(Millis(0));
        let (requests, _) = drain(&mut s);
        let asked: Vec<SourceId> = requests.iter().map(|(src, _)| *src).collect();
        assert_eq!(
            asked,
            [PEER, PEER_B],
            "duplicated to the idle peer, not the origin"
        );
        s.handle_chunk(Millis(5), PEER_B, &id, ChunkOutcome::Verified);
        let (_, other) = drain(&mut s);
        assert_eq!(
            other,
            [Action::Cancel { source: PEER, id }, Action::Complete]
        );
    }

    #[test]
    fn a_chunk_nobody_holds_is_stuck() {
        let all = needs(3);
        let mut s = Scheduler::new(Config::default(), all);
        s.add_source(Millis(0), PEER, SourceKind::LanPeer, 4, Holdings::Any);
        s.start(Millis(0));
        let seen = run(&mut s, 0, |_, _| Some(ChunkOutcome::Missing));
        assert!(matches!(seen.last(), Some(Action::Stuck { .. })));
    }

    #[test]
    fn lost_source_hands_its_chunks_on() {
        let mut s = Scheduler::new(Config::default(), needs(10));
        s.add_source(Millis(0), PEER, SourceKind::LanPeer, 16, Holdings::Any);
        s.add_source(Millis(0), ORIGIN, SourceKind::Origin, 16, Holdings::Any);
        s.start(Millis(0));
        let (requests, _) = drain(&mut s);
        assert!(requests.iter().all(|(src, _)| *src == PEER));
        s.handle_source_lost(Millis(1), PEER);
        let seen = run(&mut s, 1, |_, _| Some(ChunkOutcome::Verified));
        assert_eq!(seen, [Action::Complete]);
        assert_eq!(s.report().bytes_by_kind[&SourceKind::Origin], 10 * 65_536);
    }

    #[test]
    fn duplicate_ids_are_fetched_once() {
        let mut all = needs(5);
        all.extend(needs(5));
        let mut s = Scheduler::new(Config::default(), all);
        assert_eq!(s.remaining(), 5);
        s.add_source(Millis(0), ORIGIN, SourceKind::Origin, 64, Holdings::Any);
        s.start(Millis(0));
        run(&mut s, 0, |_, _| Some(ChunkOutcome::Verified));
        assert_eq!(s.report().bytes_by_kind[&SourceKind::Origin], 5 * 65_536);
    }

    /// The strike state of a source, for the tests below.
    fn source(s: &Scheduler, id: SourceId) -> &Source {
        &s.sources[s.source_index(id).unwrap()]
    }

    #[test]
    fn a_stall_strikes_once_however_many_chunks_are_in_flight() {
        let mut s = Scheduler::new(Config::default(), needs(40));
        s.add_source(Millis(0), PEER, SourceKind::LanPeer, 16, Holdings::Any);
        s.add_source(Millis(0), ORIGIN, SourceKind::Origin, 16, Holdings::Any);
        s.start(Millis(0));
        let (first, _) = drain(&mut s);
        assert_eq!(first.len(), 16);
        // Sixteen requests go overdue together: one stall, one strike, not sixteen.
        s.handle_timeout(Millis(5_000));
        assert_eq!(source(&s, PEER).strikes, 1);
        assert!(!source(&s, PEER).slow());
        // Asked again within the same period: still the same stall.
        s.handle_timeout(Millis(7_000));
        assert_eq!(source(&s, PEER).strikes, 1);
        // The overdue chunks were asked of the origin meanwhile.
        let (hedged, _) = drain(&mut s);
        assert!(!hedged.is_empty() && hedged.iter().all(|(src, _)| *src == ORIGIN));
    }

    #[test]
    fn a_deep_queue_at_a_steady_peer_is_not_overdue() {
        // 64 chunks of 64 KiB queued at a peer that sends 512 KiB/s, in order and in bursts
        // (four chunks at once every half second, as a cache passes on what its uplink
        // brought): each chunk arrives 8 s after it was asked (63 ahead of it), past the 5 s
        // floor, while the peer delivers steadily. Not overdue, so nothing is fetched a second
        // time at the origin (over the same uplink the cache fills through).
        let mut s = Scheduler::new(Config::default(), needs(400));
        s.add_source(Millis(0), PEER, SourceKind::LanPeer, 64, Holdings::Any);
        s.add_source(Millis(0), ORIGIN, SourceKind::Origin, 64, Holdings::Any);
        s.start(Millis(0));
        let mut queue: VecDeque<(SourceId, ChunkId)> = VecDeque::new();
        let mut now = 0u64;
        let mut seen = Vec::new();
        loop {
            let (requests, other) = drain(&mut s);
            seen.extend(other);
            assert!(
                requests.iter().all(|(src, _)| *src == PEER),
                "at {now} ms a chunk was asked of the origin"
            );
            queue.extend(requests);
            if queue.is_empty() {
                break;
            }
            let next = now + 500;
            while let Some(t) = s.poll_timeout().filter(|t| t.0 <= next) {
                s.handle_timeout(t);
                now = t.0;
                let (requests, _) = drain(&mut s);
                assert!(
                    requests.iter().all(|(src, _)| *src == PEER),
                    "at {now} ms a chunk went overdue at the steady peer"
                );
                queue.extend(requests);
            }
            now = next;
            for _ in 0..4 {
                if let Some((src, id)) = queue.pop_front() {
                    s.handle_chunk(Millis(now), src, &id, ChunkOutcome::Verified);
                }
            }
        }
        assert_eq!(seen, [Action::Complete]);
        let report = s.report();
        assert_eq!(report.bytes_by_kind[&SourceKind::LanPeer], 400 * 65_536);
        assert_eq!(report.duplicate_bytes, 0);
        assert!(!source(&s, PEER).ever_slow);
        // The measured rate is the delivery rate, not the bursts' (four chunks in 1 ms).
        let rate = source(&s, PEER).rate;
        assert!(
            (400_000..=700_000).contains(&rate),
            "measured {rate} B/s for 524 288 B/s"
        );
    }

    #[test]
    fn a_silent_source_strikes_again_each_period_and_is_demoted() {
        let c = Config::default();
        let mut s = Scheduler::new(c, needs(20));
        s.add_source(Millis(0), PEER, SourceKind::LanPeer, 4, Holdings::Any);
        s.add_source(Millis(0), ORIGIN, SourceKind::Origin, 4, Holdings::Any);
        s.start(Millis(0));
        drain(&mut s);
        let mut at = Vec::new();
        while !source(&s, PEER).slow() {
            let t = s.poll_timeout().unwrap();
            s.handle_timeout(t);
            at.push((t.0, source(&s, PEER).strikes));
            assert!(at.len() < 10, "never demoted: {at:?}");
        }
        // Strikes at 5 s, 10 s, 15 s of silence: demoted at the third.
        assert_eq!(at, [(5_000, 1), (10_000, 2), (15_000, 3)]);
        assert_eq!(
            source(&s, PEER).demoted_until,
            Some(Millis(15_000 + c.slow_factor * c.timeout_floor))
        );
    }

    #[test]
    fn strikes_decay_with_deliveries_on_time() {
        let mut s = Scheduler::new(Config::default(), needs(200));
        s.add_source(Millis(0), PEER, SourceKind::LanPeer, 2, Holdings::Any);
        s.add_source(Millis(0), ORIGIN, SourceKind::Origin, 2, Holdings::Any);
        s.start(Millis(0));
        let mut now = 0;
        // Ten times: the peer stalls once (both requests overdue), then delivers on time.
        // Without decay that is ten strikes; with it, the peer never reaches three.
        for round in 0..10 {
            let (requests, _) = drain(&mut s);
            let at_peer: Vec<ChunkId> = requests
                .iter()
                .filter(|(src, _)| *src == PEER)
                .map(|(_, id)| *id)
                .collect();
            for (src, id) in &requests {
                if *src == ORIGIN {
                    s.handle_chunk(Millis(now), *src, id, ChunkOutcome::Verified);
                }
            }
            if round % 2 == 0 {
                now = s.poll_timeout().unwrap().0;
                s.handle_timeout(Millis(now));
                // The overdue ones arrive late, the next ones on time.
                for id in &at_peer {
                    now += 10;
                    s.handle_chunk(Millis(now), PEER, id, ChunkOutcome::Verified);
                }
            } else {
                for id in &at_peer {
                    now += 10;
                    s.handle_chunk(Millis(now), PEER, id, ChunkOutcome::Verified);
                }
            }
            assert!(source(&s, PEER).strikes <= 1, "round {round}");
            assert!(!source(&s, PEER).ever_slow);
        }
    }

    #[test]
    fn a_late_delivery_does_not_decay_strikes() {
        let mut s = Scheduler::new(Config::default(), needs(20));
        s.add_source(Millis(0), PEER, SourceKind::LanPeer, 2, Holdings::Any);
        s.add_source(Millis(0), ORIGIN, SourceKind::Origin, 2, Holdings::Any);
        s.start(Millis(0));
        let (requests, _) = drain(&mut s);
        s.handle_timeout(Millis(5_000));
        assert_eq!(source(&s, PEER).strikes, 1);
        let (_, id) = requests[0];
        s.handle_chunk(Millis(6_000), PEER, &id, ChunkOutcome::Verified);
        assert_eq!(source(&s, PEER).strikes, 1, "late: no decay");
        assert_eq!(source(&s, PEER).stall, None, "but the stall is over");
    }

    #[test]
    fn a_lost_source_is_retried_after_a_backoff_that_doubles() {
        let floor = Config::default().timeout_floor;
        let mut s = Scheduler::new(Config::default(), needs(50));
        s.add_source(Millis(0), ORIGIN, SourceKind::Origin, 8, Holdings::Any);
        s.start(Millis(0));
        let (first, _) = drain(&mut s);
        assert_eq!(first.len(), 8);
        // Outage: the connection is lost. Not a ban, and nothing is stuck.
        s.handle_source_lost(Millis(100), ORIGIN);
        let (requests, other) = drain(&mut s);
        assert!(requests.is_empty() && other.is_empty(), "{other:?}");
        assert_eq!(s.poll_timeout(), Some(Millis(100 + floor)));
        // More losses reported during the backoff change nothing.
        s.handle_source_lost(Millis(200), ORIGIN);
        assert_eq!(s.poll_timeout(), Some(Millis(100 + floor)));
        // Back: probed with one chunk.
        s.handle_timeout(Millis(100 + floor));
        let (probe, _) = drain(&mut s);
        assert_eq!(probe.len(), 1);
        // Lost again without delivering: twice the wait.
        let t = 100 + floor + 50;
        s.handle_source_lost(Millis(t), ORIGIN);
        assert_eq!(s.poll_timeout(), Some(Millis(t + 2 * floor)));
        s.handle_timeout(Millis(t + 2 * floor));
        let (probe, _) = drain(&mut s);
        assert_eq!(probe.len(), 1);
        // It delivers: full concurrency again, and the backoff starts over.
        let now = t + 2 * floor + 10;
        s.handle_chunk(Millis(now), ORIGIN, &probe[0].1, ChunkOutcome::Verified);
        let (more, _) = drain(&mut s);
        assert_eq!(more.len(), 8);
        s.handle_source_lost(Millis(now + 1), ORIGIN);
        assert_eq!(s.poll_timeout(), Some(Millis(now + 1 + floor)));
        // And the update completes.
        s.handle_timeout(Millis(now + 1 + floor));
        let seen = run(&mut s, now + 1 + floor, |_, _| Some(ChunkOutcome::Verified));
        assert_eq!(seen, [Action::Complete]);
        assert_eq!(s.report().bytes_by_kind[&SourceKind::Origin], 50 * 65_536);
        assert!(s.report().sources[0].banned.is_none());
    }

    /// A source unreachable at the start (a LAN peer not up yet) is in backoff; once its
    /// connection is made, the scheduler is told and asks it at once, one chunk first, then
    /// at full concurrency when that arrives. A banned source stays banned.
    #[test]
    fn a_source_reachable_again_ends_its_backoff_at_once() {
        let floor = Config::default().timeout_floor;
        let mut s = Scheduler::new(Config::default(), needs(50));
        s.add_source(Millis(0), ORIGIN, SourceKind::Origin, 4, Holdings::Any);
        s.add_source(Millis(0), PEER, SourceKind::LanPeer, 8, Holdings::Any);
        s.handle_source_lost(Millis(0), PEER);
        s.start(Millis(0));
        let (first, _) = drain(&mut s);
        assert!(first.iter().all(|(src, _)| *src == ORIGIN), "{first:?}");
        assert_eq!(first.len(), 4);
        // Reachable long before the backoff's end: asked at once, one chunk.
        assert!(floor > 200);
        s.handle_source_reachable(Millis(200), PEER);
        let (probe, _) = drain(&mut s);
        assert_eq!(probe.len(), 1);
        assert_eq!(probe[0].0, PEER);
        s.handle_chunk(Millis(210), PEER, &probe[0].1, ChunkOutcome::Verified);
        let (more, _) = drain(&mut s);
        assert_eq!(more.len(), 8);
        assert!(more.iter().all(|(src, _)| *src == PEER), "{more:?}");
        // Reachable while not backing off: nothing changes.
        s.handle_source_reachable(Millis(220), PEER);
        assert!(drain(&mut s).0.is_empty());
        // Lost, then banned by a corrupt chunk from a request still in flight: reachable
        // again, it is still not asked.
        s.handle_source_lost(Millis(230), PEER);
        s.handle_chunk(Millis(240), PEER, &more[0].1, ChunkOutcome::Corrupt);
        assert!(s.report().sources.iter().any(|r| r.banned.is_some()));
        drain(&mut s);
        s.handle_source_reachable(Millis(250), PEER);
        let (after, _) = drain(&mut s);
        assert!(after.iter().all(|(src, _)| *src != PEER), "{after:?}");
    }

    /// The only source goes silent: its requests go overdue (passed over), then its
    /// connection is declared lost. Its chunks wait for it, and once back it is asked for
    /// them again; without that the update was stuck the moment the loss was reported.
    #[test]
    fn chunks_overdue_at_a_source_then_lost_wait_for_it_and_are_asked_again() {
        let floor = Config::default().timeout_floor;
        let mut s = Scheduler::new(Config::default(), needs(20));
        s.add_source(Millis(0), ORIGIN, SourceKind::Origin, 8, Holdings::Any);
        s.start(Millis(0));
        let (first, _) = drain(&mut s);
        assert_eq!(first.len(), 8);
        // Silence: past every deadline, several periods long.
        for t in 1..=6 {
            s.handle_timeout(Millis(t * floor));
        }
        let (_, other) = drain(&mut s);
        assert!(
            !other.iter().any(|a| matches!(a, Action::Stuck { .. })),
            "{other:?}"
        );
        // The link is declared lost: nothing is stuck, the source backs off.
        let lost_at = 6 * floor + 1;
        s.handle_source_lost(Millis(lost_at), ORIGIN);
        let (requests, other) = drain(&mut s);
        assert!(requests.is_empty(), "{requests:?}");
        assert!(
            !other.iter().any(|a| matches!(a, Action::Stuck { .. })),
            "{other:?}"
        );
        // Back after the backoff: probed, it delivers, and every chunk (the overdue ones too)
        // is asked of it again and verified.
        // (Its backoff ends `timeout_floor` after the loss; a demotion for the stall may end
        // before.)
        while let Some(at) = s.poll_timeout().filter(|at| at.0 <= lost_at + floor) {
            s.handle_timeout(at);
        }
        let back = Millis(lost_at + floor);
        let seen = run(&mut s, back.0, |_, _| Some(ChunkOutcome::Verified));
        assert_eq!(seen, [Action::Complete]);
        assert_eq!(s.report().bytes_by_kind[&SourceKind::Origin], 20 * 65_536);
    }

    #[test]
    fn a_removed_source_is_never_asked_again() {
        let mut s = Scheduler::new(Config::default(), needs(10));
        s.add_source(Millis(0), PEER, SourceKind::LanPeer, 16, Holdings::Any);
        s.add_source(Millis(0), ORIGIN, SourceKind::Origin, 16, Holdings::Any);
        s.start(Millis(0));
        drain(&mut s);
        s.remove_source(Millis(1), PEER);
        s.handle_timeout(Millis(1_000_000));
        let seen = run(&mut s, 1_000_000, |src, _| {
            assert_ne!(src, PEER);
            Some(ChunkOutcome::Verified)
        });
        assert_eq!(seen, [Action::Complete]);
    }

    #[test]
    fn a_ban_outlives_every_backoff_and_demotion() {
        let all = needs(30);
        let bad = all[0].id;
        let mut s = Scheduler::new(Config::default(), all);
        s.add_source(Millis(0), PEER, SourceKind::LanPeer, 4, Holdings::Any);
        s.add_source(Millis(0), ORIGIN, SourceKind::Origin, 4, Holdings::Any);
        s.start(Millis(0));
        drain(&mut s);
        s.handle_chunk(Millis(1), PEER, &bad, ChunkOutcome::Corrupt);
        // A loss report and a long time later, the banned peer still gets nothing.
        s.handle_source_lost(Millis(2), PEER);
        for t in [10_000, 1_000_000, 100_000_000] {
            s.handle_timeout(Millis(t));
        }
        let seen = run(&mut s, 100_000_000, |src, _| {
            assert_ne!(src, PEER, "asked a banned source");
            Some(ChunkOutcome::Verified)
        });
        assert_eq!(seen, [Action::Complete]);
        let report = s.report();
        let peer = report.sources.iter().find(|r| r.source == PEER).unwrap();
        assert_eq!(peer.banned, Some(BanReason::CorruptChunk { id: bad }));
    }

    #[test]
    fn a_demoted_source_that_delivers_again_is_back_on_probation() {
        let c = Config::default();
        let mut s = Scheduler::new(c, needs(40));
        s.add_source(Millis(0), PEER, SourceKind::LanPeer, 2, Holdings::Any);
        s.add_source(Millis(0), ORIGIN, SourceKind::Origin, 2, Holdings::Any);
        s.start(Millis(0));
        let (first, _) = drain(&mut s);
        let origin_lost_at = 1;
        // The origin is unreachable too (the site's uplink is down).
        s.handle_source_lost(Millis(origin_lost_at), ORIGIN);
        while !source(&s, PEER).slow() {
            let t = s.poll_timeout().unwrap();
            s.handle_timeout(t);
            drain(&mut s);
        }
        // The peer's upstream comes back: its overdue chunks arrive.
        let t = 16_000;
        s.handle_chunk(Millis(t), PEER, &first[0].1, ChunkOutcome::Verified);
        let peer = source(&s, PEER);
        assert!(!peer.slow(), "delivering again ends the demotion");
        assert_eq!(peer.strikes, c.max_strikes - 1, "on probation");
        assert_eq!(peer.tier(), 1);
        assert!(
            s.report().sources[0].slow,
            "the report still says it was slow"
        );
    }

    /// A peer that sends a chunk a second, the last asked first (what it holds before what
    /// its uplink must still bring): the first chunks asked, with little queued ahead of
    /// them, go past their deadlines while the peer delivers. The origin answers each chunk
    /// `origin_ms` after it is asked. Returns the scheduler when done and the number of
    /// chunks asked of the origin.
    fn uplink_bound_peer(origin_ms: u64) -> (Scheduler, usize) {
        let mut s = Scheduler::new(Config::default(), needs(100));
        s.add_source(Millis(0), PEER, SourceKind::LanPeer, 64, Holdings::Any);
        s.add_source(Millis(0), ORIGIN, SourceKind::Origin, 64, Holdings::Any);
        s.start(Millis(0));
        let mut queue: VecDeque<ChunkId> = VecDeque::new();
        let mut at_origin: Vec<(u64, ChunkId)> = Vec::new();
        let (mut now, mut next_burst, mut asked_of_origin) = (0u64, 1_000u64, 0usize);
        for _ in 0..100_000 {
            while let Some(action) = s.poll_action() {
                match action {
                    Action::Request { source, ids } if source == PEER => queue.extend(ids),
                    Action::Request { ids, .. } => {
                        asked_of_origin += ids.len();
                        at_origin.extend(ids.into_iter().map(|id| (now + origin_ms, id)));
                    }
                    Action::Complete => return (s, asked_of_origin),
                    _ => {}
                }
            }
            let next_peer = next_burst;
            let next_origin = at_origin.iter().map(|a| a.0).min().unwrap_or(u64::MAX);
            let next_timeout = s.poll_timeout().map_or(u64::MAX, |t| t.0);
            now = next_peer.min(next_origin).min(next_timeout);
            if next_timeout == now {
                s.handle_timeout(Millis(now));
            } else if next_origin == now {
                let pos = at_origin.iter().position(|a| a.0 == now).unwrap();
                let (_, id) = at_origin.swap_remove(pos);
                s.handle_chunk(Millis(now), ORIGIN, &id, ChunkOutcome::Verified);
            } else {
                next_burst += 1_000;
                if let Some(id) = queue.pop_back() {
                    s.handle_chunk(Millis(now), PEER, &id, ChunkOutcome::Verified);
                }
            }
        }
        panic!("did not complete");
    }

    #[test]
    fn a_lan_peer_waiting_on_its_uplink_keeps_its_chunks() {
        // The requests queued behind go past their deadlines, but the peer still delivers,
        // and the origin (measured with one copy: over the same uplink, no faster) is not
        // asked for more.
        let (s, asked_of_origin) = uplink_bound_peer(3_000);
        assert_eq!(asked_of_origin, 1, "one copy measures the origin");
        let peer = source(&s, PEER);
        assert_eq!(peer.strikes, 0);
        assert!(!peer.ever_slow);
        let report = s.report();
        assert!(report.bytes_by_kind[&SourceKind::LanPeer] >= 99 * 65_536);
    }

    #[test]
    fn a_lan_peer_slower_than_the_measured_origin_loses_its_late_chunks() {
        // The same peer, but the origin answers in 20 ms: measured many times faster than
        // the peer, it takes the chunks that go past their deadline.
        let (s, asked_of_origin) = uplink_bound_peer(20);
        assert!(
            asked_of_origin > 1,
            "only the measuring copy was asked of the origin"
        );
        assert!(s.report().bytes_by_kind[&SourceKind::Origin] > 65_536);
    }

    #[test]
    fn patience_is_only_for_a_lan_source_that_still_delivers() {
        // Delivering, then silent: a timeout_floor after its last delivery its late requests
        // go overdue and strike, as a stall.
        let c = Config::default();
        let mut s = Scheduler::new(c, needs(100));
        s.add_source(Millis(0), PEER, SourceKind::LanPeer, 64, Holdings::Any);
        s.add_source(Millis(0), ORIGIN, SourceKind::Origin, 64, Holdings::Any);
        s.start(Millis(0));
        let (first, _) = drain(&mut s);
        // Ten chunks fast, then nothing.
        for (i, (_, id)) in first.iter().take(10).enumerate() {
            s.handle_chunk(Millis(10 * i as u64 + 10), PEER, id, ChunkOutcome::Verified);
        }
        drain(&mut s);
        let last = 100;
        let mut now = last;
        while source(&s, PEER).strikes == 0 {
            now = s.poll_timeout().unwrap().0;
            assert!(now <= last + c.timeout_floor, "still waiting at {now} ms");
            s.handle_timeout(Millis(now));
        }
        assert_eq!(now, last + c.timeout_floor);
        let (hedged, _) = drain(&mut s);
        assert!(hedged.iter().filter(|(src, _)| *src == ORIGIN).count() > 10);
    }

    #[test]
    fn another_lan_source_takes_late_chunks_without_patience() {
        // Two peers: a late chunk moves to the other peer at its deadline (no uplink spent),
        // even though the first still delivers.
        let mut s = Scheduler::new(Config::default(), needs(200));
        s.add_source(Millis(0), PEER, SourceKind::LanPeer, 64, Holdings::Any);
        s.add_source(Millis(0), PEER_B, SourceKind::LanPeer, 64, Holdings::Any);
        s.add_source(Millis(0), ORIGIN, SourceKind::Origin, 64, Holdings::Any);
        s.start(Millis(0));
        let (first, _) = drain(&mut s);
        let at_a: Vec<ChunkId> = first
            .iter()
            .filter(|(src, _)| *src == PEER)
            .map(|(_, id)| *id)
            .collect();
        // B answers everything at once; A one chunk every 2 s.
        fn serve_b(
            s: &mut Scheduler,
            now: u64,
            requests: Vec<(SourceId, ChunkId)>,
        ) -> Vec<ChunkId> {
            let mut to_b = Vec::new();
            let mut requests = requests;
            while !requests.is_empty() {
                for (src, id) in std::mem::take(&mut requests) {
                    assert_ne!(src, ORIGIN, "a late chunk left for the origin");
                    if src == PEER_B {
                        to_b.push(id);
                        s.handle_chunk(Millis(now), PEER_B, &id, ChunkOutcome::Verified);
                    }
                }
                requests = drain(s).0;
            }
            to_b
        }
        let mut to_b = serve_b(&mut s, 5, first);
        let mut now = 5;
        for id in at_a.iter().take(4) {
            now += 2_000;
            while let Some(t) = s.poll_timeout().filter(|t| t.0 <= now) {
                s.handle_timeout(t);
                let requests = drain(&mut s).0;
                to_b.extend(serve_b(&mut s, t.0, requests));
            }
            s.handle_chunk(Millis(now), PEER, id, ChunkOutcome::Verified);
            let requests = drain(&mut s).0;
            to_b.extend(serve_b(&mut s, now, requests));
        }
        assert!(
            at_a.iter().any(|id| to_b.contains(id)),
            "late chunks at A went to B"
        );
    }

    proptest::proptest! {
        /// Whatever peers do (deliver, lack, corrupt), with an honest origin every update
        /// completes, each chunk is counted once, and nothing is taken from a banned peer.
        #[test]
        fn honest_origin_always_completes(
            behaviour in proptest::collection::vec(0u8..4, 1..200),
            peers in 1u32..4,
        ) {
            let all = needs(behaviour.len() as u64);
            let mut s = Scheduler::new(Config::default(), all.clone());
            for p in 0..peers {
                s.add_source(Millis(0), SourceId(p + 1), SourceKind::LanPeer, 8, Holdings::Any);
            }
            s.add_source(Millis(0), ORIGIN, SourceKind::Origin, 8, Holdings::Any);
            s.start(Millis(0));
            let index: HashMap<ChunkId, usize> =
                all.iter().enumerate().map(|(i, n)| (n.id, i)).collect();
            let seen = run(&mut s, 0, |source, id| {
                let b = behaviour[index[id]];
                Some(if source == ORIGIN {
                    ChunkOutcome::Verified
                } else if b == 1 && source.0 == 1 {
                    ChunkOutcome::Corrupt
                } else if b == 2 {
                    ChunkOutcome::Missing
                } else {
                    ChunkOutcome::Verified
                })
            });
            proptest::prop_assert_eq!(seen.last(), Some(&Action::Complete));
            let report = s.report();
            let total: u64 = report.bytes_by_kind.values().sum();
            proptest::prop_assert_eq!(total, behaviour.len() as u64 * 65_536);
            // Only the peer that corrupted is banned, for a chunk it corrupted.
            for r in &report.sources {
                if let Some(BanReason::CorruptChunk { id }) = &r.banned {
                    proptest::prop_assert_eq!(r.source, SourceId(1));
                    proptest::prop_assert_eq!(behaviour[index[id]], 1);
                }
            }
        }

        /// With time passing: peers that deliver, stall (answer late or never), get lost,
        /// corrupt; an origin that is lost now and then but otherwise honest. The update
        /// always completes, each chunk counted once; no banned source is asked again; only
        /// corruption bans; a stall of many requests strikes at most once per period.
        #[test]
        fn completes_through_stalls_losses_and_bans(
            behaviour in proptest::collection::vec(0u8..6, 1..120),
            losses in proptest::collection::vec(0u64..200_000, 0..6),
            peers in 1u32..4,
            in_flight in 1usize..8,
        ) {
            let all = needs(behaviour.len() as u64);
            let config = Config::default();
            let mut s = Scheduler::new(config, all.clone());
            for p in 0..peers {
                s.add_source(Millis(0), SourceId(p + 1), SourceKind::LanPeer, in_flight, Holdings::Any);
            }
            s.add_source(Millis(0), ORIGIN, SourceKind::Origin, in_flight, Holdings::Any);
            s.start(Millis(0));
            let index: HashMap<ChunkId, usize> =
                all.iter().enumerate().map(|(i, n)| (n.id, i)).collect();
            let mut losses = losses;
            losses.sort_unstable();
            let mut losses: VecDeque<u64> = losses.into();
            // Answers due: (time, source, id, outcome).
            let mut due: Vec<(u64, SourceId, ChunkId, ChunkOutcome)> = Vec::new();
            let mut banned: HashSet<SourceId> = HashSet::new();
            let mut now = 0u64;
            let mut done = false;
            for _ in 0..100_000 {
                while let Some(action) = s.poll_action() {
                    match action {
                        Action::Request { source, ids } => {
                            proptest::prop_assert!(!banned.contains(&source), "asked banned {source:?}");
                            for (k, id) in ids.into_iter().enumerate() {
                                let b = behaviour[index[&id]];
                                let t = now + 10 * (k as u64 + 1);
                                let answer = if source == ORIGIN {
                                    Some((t, ChunkOutcome::Verified))
                                } else {
                                    match (b, source.0) {
                                        (1, 1) => Some((t, ChunkOutcome::Corrupt)),
                                        (2, _) => Some((t, ChunkOutcome::Missing)),
                                        (3, _) => Some((t + 60_000, ChunkOutcome::Verified)),
                                        (4, 1) => None,
                                        _ => Some((t, ChunkOutcome::Verified)),
                                    }
                                };
                                if let Some((t, outcome)) = answer {
                                    due.push((t, source, id, outcome));
                                }
                            }
                        }
                        Action::Complete => done = true,
                        Action::Stuck { id } => proptest::prop_assert!(false, "stuck on {id:?}"),
                        _ => {}
                    }
                }
                if done {
                    break;
                }
                let next_answer = due.iter().map(|d| d.0).min();
                let next = [next_answer, s.poll_timeout().map(|t| t.0), losses.front().copied()]
                    .into_iter()
                    .flatten()
                    .min();
                let Some(next) = next else {
                    proptest::prop_assert!(false, "nothing left to wait for");
                    break;
                };
                now = now.max(next);
                if losses.front() == Some(&now) {
                    losses.pop_front();
                    // The origin's connection drops: its answers in transit are gone.
                    due.retain(|d| d.1 != ORIGIN);
                    s.handle_source_lost(Millis(now), ORIGIN);
                    continue;
                }
                if let Some(pos) = due.iter().position(|d| d.0 == now) {
                    let (_, source, id, outcome) = due.swap_remove(pos);
                    if outcome == ChunkOutcome::Corrupt {
                        banned.insert(source);
                    }
                    s.handle_chunk(Millis(now), source, &id, outcome);
                } else {
                    s.handle_timeout(Millis(now));
                }
                for src in &s.sources {
                    proptest::prop_assert!(src.strikes <= 1 + (now / config.timeout_floor) as u32);
                }
            }
            proptest::prop_assert!(done, "did not complete");
            let report = s.report();
            let total: u64 = report.bytes_by_kind.values().sum();
            proptest::prop_assert_eq!(total, behaviour.len() as u64 * 65_536);
            for r in &report.sources {
                if let Some(BanReason::CorruptChunk { id }) = &r.banned {
                    proptest::prop_assert_eq!(r.source, SourceId(1));
                    proptest::prop_assert_eq!(behaviour[index[id]], 1);
                } else {
                    proptest::prop_assert!(!banned.contains(&r.source));
                }
            }
        }
    }
}
