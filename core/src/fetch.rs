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
//! measured throughput, never less than `timeout_floor`) is a strike, and the chunk is also
//! asked elsewhere; after `max_strikes` the source counts as slow and loses its tier. In the
//! endgame (nothing left to hand out, sources idle) chunks still in flight are duplicated to
//! idle sources of the same or a better tier, and the first verified copy wins. A source that
//! sends a chunk whose hash does not match is banned for the rest of the update and named in
//! the [`Report`].

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
    /// In-flight chunk indices and when they were asked.
    in_flight: HashMap<usize, Millis>,
    banned: Option<BanReason>,
    lost: bool,
    strikes: u32,
    /// Measured throughput in bytes per second (0 until measured).
    rate: u64,
    last_arrival: Option<Millis>,
    bytes: u64,
    chunks: u64,
    /// Chunks that list this source in `passed_over` (they only ever grow).
    passed: usize,
}

impl Source {
    fn usable(&self) -> bool {
        self.banned.is_none() && !self.lost
    }

    fn slow(&self, config: &Config) -> bool {
        self.strikes >= config.max_strikes
    }

    /// Preference tier: kind order, with slow sources after every healthy one.
    fn tier(&self, config: &Config) -> u8 {
        let base = match self.kind {
            SourceKind::LocalSlot => 0,
            SourceKind::LanPeer => 1,
            SourceKind::HttpMirror => 2,
            SourceKind::Origin => 3,
        };
        if self.slow(config) { base + 4 } else { base }
    }

    fn may_hold(&self, id: &ChunkId) -> bool {
        match &self.holdings {
            Holdings::Any => true,
            Holdings::Only(set) => set.contains(id),
        }
    }

    fn deadline(&self, asked: Millis, len: u32, config: &Config) -> Millis {
        // Unmeasured (rate 0): only the floor applies.
        let expected = (u64::from(len) * 1000).checked_div(self.rate).unwrap_or(0);
        Millis(asked.0 + (expected * config.slow_factor).max(config.timeout_floor))
    }
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
    sources: Vec<Source>,
    actions: VecDeque<Action>,
    remaining: usize,
    duplicate_bytes: u64,
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
            chunks,
            by_id,
            sources: Vec::new(),
            actions: VecDeque::new(),
            remaining,
            duplicate_bytes: 0,
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
            lost: false,
            strikes: 0,
            rate: 0,
            last_arrival: None,
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

    /// The earliest time [`Self::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<Millis> {
        self.sources
            .iter()
            .filter(|s| s.usable())
            .flat_map(|s| {
                s.in_flight
                    .iter()
                    // A request already judged overdue has no deadline left.
                    .filter(|(c, _)| !self.chunks[**c].passed_over.contains(&s.id))
                    .map(|(&c, &asked)| s.deadline(asked, self.chunks[c].need.len, &self.config))
            })
            .min()
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
        if !self.sources[s].usable() {
            // A banned or lost source's late answers count for nothing.
            return;
        }
        let asked = self.sources[s].in_flight.remove(&c);
        self.chunks[c].holders.retain(|h| *h != source);
        let len = u64::from(self.chunks[c].need.len);
        match outcome {
            ChunkOutcome::Verified => {
                let src = &mut self.sources[s];
                if let Some(asked) = asked {
                    let start = src.last_arrival.map_or(asked, |l| l.max(asked));
                    let elapsed = now.0.saturating_sub(start.0).max(1);
                    let sample = len * 1000 / elapsed;
                    src.rate = if src.rate == 0 {
                        sample
                    } else {
                        (src.rate * 7 + sample) / 8
                    };
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
                self.requeue(c);
            }
        }
        self.schedule(now);
    }

    /// A source is gone (connection lost): its chunks go elsewhere.
    pub fn handle_source_lost(&mut self, now: Millis, source: SourceId) {
        if let Some(s) = self.source_index(source) {
            self.sources[s].lost = true;
            self.release_all(s);
        }
        self.schedule(now);
    }

    /// Time has passed: judge overdue requests.
    pub fn handle_timeout(&mut self, now: Millis) {
        let mut overdue = Vec::new();
        for (s, source) in self.sources.iter().enumerate() {
            if !source.usable() {
                continue;
            }
            for (&c, &asked) in &source.in_flight {
                let chunk = &self.chunks[c];
                if now >= source.deadline(asked, chunk.need.len, &self.config)
                    && !chunk.passed_over.contains(&source.id)
                {
                    overdue.push((s, c));
                }
            }
        }
        // In_flight is a HashMap: sort, so that the order (and so the run) does not depend on
        // the hasher's seed.
        overdue.sort_unstable();
        for (s, c) in overdue {
            // The request stays open (the bytes may still come), but the chunk is also asked
            // elsewhere, and the source gets a strike.
            let source = &mut self.sources[s];
            source.strikes += 1;
            source.passed += 1;
            let id = source.id;
            self.chunks[c].passed_over.push(id);
            if self.chunks[c].holders.len() < self.config.max_copies {
                self.enqueue(c);
            }
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
                slow: s.slow(&self.config),
            });
        }
        report
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
            self.pending.push_front(c);
        }
    }

    fn unqueue(&mut self, c: usize) {
        if self.queued[c] {
            self.queued[c] = false;
            self.queued_count -= 1;
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
            .map(|s| s.tier(&self.config))
            .min()
    }

    fn schedule(&mut self, now: Millis) {
        if !self.started || self.finished {
            return;
        }
        if self.remaining == 0 {
            self.finished = true;
            self.actions.push_back(Action::Complete);
            return;
        }
        let mut order: Vec<usize> = (0..self.sources.len())
            .filter(|&s| self.sources[s].usable())
            .collect();
        order.sort_by_key(|&s| {
            (
                self.sources[s].tier(&self.config),
                std::cmp::Reverse(self.sources[s].rate),
            )
        });
        for s in order {
            let mut batch = Vec::new();
            let mut bytes = 0u64;
            let tier = self.sources[s].tier(&self.config);
            if self.covered_below(tier) {
                // Every chunk's best tier is better than this source's: nothing for it, and
                // no need to scan the queue to find that out.
                continue;
            }
            let mut i = 0;
            while i < self.pending.len() {
                let source = &self.sources[s];
                if source.in_flight.len() + batch.len() >= source.max_in_flight
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
                    && self.best_tier(c) == Some(tier);
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
            let source_id = self.sources[s].id;
            let ids = batch
                .iter()
                .map(|&c| {
                    self.chunks[c].holders.push(source_id);
                    self.sources[s].in_flight.insert(c, now);
                    self.chunks[c].need.id
                })
                .collect();
            self.actions.push_back(Action::Request {
                source: source_id,
                ids,
            });
        }
        // A chunk nobody usable may provide, with nothing in flight: the update cannot finish.
        // (Impossible while some usable source may hold anything and passed over nothing.)
        if self.covered_below(u8::MAX) {
            return;
        }
        if let Some(&c) = self.pending.iter().find(|&&c| {
            self.queued[c] && self.chunks[c].holders.is_empty() && self.best_tier(c).is_none()
        }) {
            self.finished = true;
            self.actions.push_back(Action::Stuck {
                id: self.chunks[c].need.id,
            });
        }
    }

    /// Whether some usable source of a tier better than `tier` may provide every chunk (it
    /// may hold anything and has passed over none), so that every chunk's best tier is better
    /// than `tier`. Lets `schedule` skip scanning the queue for sources that would get
    /// nothing from it, which keeps a chunk's handling independent of the release's size.
    fn covered_below(&self, tier: u8) -> bool {
        self.sources.iter().any(|s| {
            s.usable()
                && s.passed == 0
                && matches!(s.holdings, Holdings::Any)
                && s.tier(&self.config) < tier
        })
    }

    /// Nothing left to hand out: duplicate chunks in flight elsewhere onto idle source `s`,
    /// when `s` is as preferred as the chunk's best tier (the uplink is not spent on a copy a
    /// LAN source is already fetching at a healthy pace).
    fn endgame(&self, s: usize, tier: u8, batch: &mut Vec<usize>) {
        let source = &self.sources[s];
        for (c, chunk) in self.chunks.iter().enumerate() {
            if source.in_flight.len() + batch.len() >= source.max_in_flight
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
                || self.best_tier(c).is_none_or(|best| tier > best)
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
    }
}
