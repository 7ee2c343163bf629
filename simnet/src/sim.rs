//! The discrete-event driver: devices running [`Scheduler`], site caches running
//! [`CachePolicy`], an origin that serves everything, and the director's [`decide`] and
//! rollout buckets opening waves, all over the flow-level [`Network`] in virtual time.
//!
//! The state machines are `ota-core`'s, unchanged; this module is only their driver, doing
//! what `device-client` and `peer-node` do with sockets and disks:
//!
//! - A device checks in at its own phase of the check-in period; when the director offers the
//!   release it builds a [`Scheduler`] over the chunks it lacks, with its sources: its active
//!   slot (`LocalSlot`, holding the chunks unchanged since the previous release), its site's
//!   peers (`LanPeer`) and the origin. `Request` actions become requests that reach the source
//!   one round trip later; `Cancel` drops the chunk from the connection. Every chunk that
//!   arrives is "verified": the sender decided whether it sent the true bytes, and a chunk a
//!   corrupting peer mangled is reported `Corrupt` (what `ChunkVerifier` would say) and never
//!   stored. On `Complete` the device installs what it stored; an install whose content
//!   differs from the release (count or fingerprint of stored chunks) is a wrong install.
//! - A peer feeds device requests into [`CachePolicy::handle_request`] and carries out its
//!   actions: `Serve` sends the chunk to the requester, `Missing` answers so, `Fetch` asks the
//!   upstream (the origin or a parent peer). A chunk from upstream is verified the same way;
//!   a parent that sent a corrupt chunk is dropped for the origin (what `peer-node` does).
//! - Faults are driver-level: a corrupting peer mangles a share of what it sends, a
//!   withholding peer answers `Missing` for a share of chunks it could serve, a slow peer has
//!   its upload divided, churning devices drop off once and resume later without the chunks
//!   they verified, and outages cut a link to zero capacity for a window.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use ota_core::cache::{
    CacheAction, CacheConfig, CachePolicy, ReleaseKey, Requester, UpstreamOutcome,
};
use ota_core::digest::ChunkId;
use ota_core::director::{
    AttestationPolicy, Decision, DeviceFacts, DeviceHandle, HandleKey, ReleaseFacts, decide,
};
use ota_core::fetch::{
    Action, ChunkOutcome, Config, Holdings, Millis, Need, Scheduler, SourceId, SourceKind,
};
use ota_core::rollout::Stage;
use ota_core::tuf::enigm::{Channel, ReleaseNumber};

use crate::net::{FlowId, Item, LinkId, Network};
use crate::rng::{SplitMix, mix};
use crate::scenario::{OutageLink, Parent, Scenario};

/// Everything measured in one run, for the report.
#[derive(Debug)]
pub struct Outcome {
    /// The release as simulated.
    pub release: ReleaseSummary,
    /// Per device.
    pub devices: Vec<DeviceOutcome>,
    /// Per site.
    pub sites: Vec<SiteOutcome>,
    /// Bytes the origin sent.
    pub origin_egress: f64,
    /// Bytes the origin sent, per one-second bin.
    pub egress_bins: Vec<f64>,
    /// Events processed.
    pub events: u64,
    /// Rate recomputations of network components.
    pub recomputes: u64,
    /// Timers a state machine asked for in the past, re-armed 1 ms later.
    pub past_timers: u64,
    /// Device connections lost to a cut link (idle timeout).
    pub lost_connections: u64,
    /// Virtual time when the run ended, microseconds.
    pub end_us: u64,
    /// Whether the run hit the scenario's time limit.
    pub time_limit_hit: bool,
    /// Peers' cache counters, summed.
    pub cache: CacheTotals,
    /// Faulty peers by kind.
    pub faulty_peers: FaultyPeers,
}

/// The synthesized release.
#[derive(Debug, Clone)]
pub struct ReleaseSummary {
    /// Total bytes.
    pub bytes: u64,
    /// Bytes in chunks new since the previous release.
    pub unique_bytes: u64,
    /// Real chunks (before grouping).
    pub real_chunks: u64,
    /// Simulated blocks (chunks when the group is 1).
    pub blocks: u64,
    /// Real chunks per block.
    pub chunk_group: u32,
    /// The longest block, bytes.
    pub max_block: u32,
}

/// One device.
#[derive(Debug, Clone)]
pub struct DeviceOutcome {
    /// Its site.
    pub site: u32,
    /// When the director offered the release, microseconds.
    pub offered_at: Option<u64>,
    /// When it installed, microseconds.
    pub installed_at: Option<u64>,
    /// Whether its install differed from the release.
    pub wrong_install: bool,
    /// Whether its scheduler got stuck.
    pub stuck: bool,
}

/// One site.
#[derive(Debug, Clone, Default)]
pub struct SiteOutcome {
    /// `CLASS-INDEX`.
    pub name: String,
    /// Index of its class.
    pub class: usize,
    /// Index within its class.
    pub index: u32,
    /// Verified bytes devices got, by source kind.
    pub bytes_by_kind: [u64; 4],
    /// Bytes that arrived after another copy was verified.
    pub duplicate_bytes: u64,
    /// Sources banned by devices here.
    pub bans: u64,
    /// Sources marked slow by devices here.
    pub slow_marks: u64,
    /// Bytes the site's WAN carried towards it.
    pub wan_down_bytes: f64,
    /// Corrupt chunks the site's peers sent.
    pub corrupt_sent: u64,
    /// Corrupt chunks devices here rejected.
    pub corrupt_rejected_by_devices: u64,
    /// Corrupt chunks the site's peers rejected from upstream.
    pub corrupt_rejected_by_peers: u64,
    /// Chunks withheld by the site's peers.
    pub withheld: u64,
    /// Its caches that corrupt what they send (indices in the class's `peer` list).
    pub corrupt_caches: Vec<usize>,
    /// Its caches whose upload is divided by `slow_factor`.
    pub slow_caches: Vec<usize>,
}

/// Cache counters over all peers.
#[derive(Debug, Clone, Copy, Default)]
pub struct CacheTotals {
    /// Served from the store.
    pub hits: u64,
    /// Needed upstream.
    pub misses: u64,
    /// Verified bytes pulled from upstream.
    pub bytes_up: u64,
    /// Chunks upstream sent corrupt.
    pub corrupt_upstream: u64,
    /// Chunks evicted.
    pub evictions: u64,
    /// Chunks fetched by prefetch alone.
    pub prefetched: u64,
}

/// How many peers misbehave, by kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct FaultyPeers {
    /// Corrupting.
    pub corrupt: u64,
    /// Withholding.
    pub withhold: u64,
    /// Slow.
    pub slow: u64,
    /// Devices that churn.
    pub churning_devices: u64,
}

/// Run a scenario with a seed.
pub fn run(sc: &Scenario, seed: u64) -> Outcome {
    Sim::new(sc, seed).run()
}

/// The index of a source kind in `bytes_by_kind`.
pub fn kind_index(kind: SourceKind) -> usize {
    match kind {
        SourceKind::LocalSlot => 0,
        SourceKind::LanPeer => 1,
        SourceKind::HttpMirror => 2,
        SourceKind::Origin => 3,
    }
}

const NONE: u64 = u64::MAX;
const CORRUPT_BIT: u64 = 1 << 32;
const CHILD_BIT: u64 = 1 << 63;
const MODEL: &str = "enigm-m1";
const RELEASE_NUMBER: ReleaseNumber = ReleaseNumber(2);

struct Release {
    ids: Vec<ChunkId>,
    lens: Vec<u32>,
    index: HashMap<ChunkId, u32>,
    changed: Vec<bool>,
    tags: Vec<u64>,
    fingerprint: u64,
    summary: ReleaseSummary,
}

impl Release {
    fn synthesize(sc: &Scenario, seed: u64) -> Self {
        let spec = &sc.release;
        let k = u64::from(spec.chunk_group);
        let mut rng = SplitMix::derive(seed, "release", 0);
        let (mut lens, mut total, mut real, mut group, mut in_group) = (Vec::new(), 0u64, 0, 0, 0);
        // FastCDC-like lengths: at least 16 KiB, exponential above, at most 256 KiB, 64 KiB
        // on average.
        while total < spec.bytes {
            let tail = -(1.0 - rng.unit()).ln() * 48.0 * 1024.0;
            let len = ((16 * 1024) as f64 + tail).min((256 * 1024) as f64) as u64;
            let len = len.min(spec.bytes - total).max(1);
            total += len;
            real += 1;
            group += len;
            in_group += 1;
            if in_group == k {
                lens.push(group as u32);
                (group, in_group) = (0, 0);
            }
        }
        if in_group > 0 {
            lens.push(group as u32);
        }
        let mut changed = Vec::with_capacity(lens.len());
        let mut ids = Vec::with_capacity(lens.len());
        let mut index = HashMap::with_capacity(lens.len());
        let mut tags = Vec::with_capacity(lens.len());
        let mut unique = 0;
        let mut fingerprint = 0;
        for (i, &len) in lens.iter().enumerate() {
            let new = rng.unit() < spec.changed_share;
            changed.push(new);
            let mut name = if new {
                b"new:".to_vec()
            } else {
                b"old:".to_vec()
            };
            name.extend_from_slice(&(i as u64).to_le_bytes());
            let id = ChunkId::of(&name);
            ids.push(id);
            index.insert(id, i as u32);
            if new {
                unique += u64::from(len);
            }
            let tag = mix(seed ^ 0x7a67_0000_0000_0000 ^ i as u64);
            tags.push(tag);
            fingerprint ^= tag;
        }
        let blocks = lens.len() as u64;
        let max_block = lens.iter().copied().max().unwrap_or(0);
        Self {
            ids,
            lens,
            index,
            changed,
            tags,
            fingerprint,
            summary: ReleaseSummary {
                bytes: total,
                unique_bytes: unique,
                real_chunks: real,
                blocks,
                chunk_group: spec.chunk_group,
                max_block,
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Local,
    Peer(u32),
    Origin,
}

#[derive(Debug)]
struct Conn {
    endpoint: Endpoint,
    flow: Option<FlowId>,
    outstanding: Vec<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DevState {
    Idle,
    CheckInScheduled,
    Downloading,
    Offline,
    Done,
}

#[derive(Debug)]
struct Device {
    site: u32,
    access: LinkId,
    disk: LinkId,
    handle: DeviceHandle,
    phase: u64,
    churns: bool,
    state: DevState,
    sched: Option<Box<Scheduler>>,
    conns: Vec<Conn>,
    have: Vec<u64>,
    have_count: u64,
    fingerprint: u64,
    timer_at: u64,
    epoch: u32,
    offered_at: Option<u64>,
    installed_at: Option<u64>,
    wrong_install: bool,
    stuck: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    Corrupt,
    Withhold,
    Slow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upstream {
    Origin,
    Peer(u32),
}

#[derive(Debug)]
struct Peer {
    site: u32,
    up: LinkId,
    down: LinkId,
    cache: CachePolicy,
    upstream: Upstream,
    up_flows: Vec<(Upstream, FlowId)>,
    fault: Fault,
    timer_at: u64,
    prefetch: bool,
    holds_previous: bool,
}

#[derive(Debug)]
struct Site {
    class: usize,
    wan_down: LinkId,
    wan_up: LinkId,
    lan: LinkId,
    devices: std::ops::Range<u32>,
    peers: std::ops::Range<u32>,
    out: SiteOutcome,
}

#[derive(Debug, Clone, Copy)]
enum Owner {
    Device { dev: u32, slot: u32 },
    Peer(u32),
}

#[derive(Debug)]
enum Receiver {
    Device { dev: u32, slot: u32, epoch: u32 },
    Peer(u32),
}

#[derive(Debug)]
enum Ev {
    AtPeer {
        peer: u32,
        from: u64,
        ids: Vec<u32>,
        epoch: u32,
    },
    AtOrigin {
        to: Receiver,
        ids: Vec<u32>,
    },
    DevTimer(u32),
    PeerTimer(u32),
    CheckIn(u32),
    Wave(u32),
    Announce,
    Capacity {
        link: LinkId,
        capacity: f64,
    },
    ChurnOff(u32),
    ChurnOn(u32),
    /// A device's connection may have been cut for the idle timeout.
    ConnCheck {
        dev: u32,
        slot: u32,
        epoch: u32,
    },
}

#[derive(Debug)]
struct Entry {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

struct Sim<'a> {
    sc: &'a Scenario,
    seed: u64,
    rel: Release,
    net: Network,
    origin: LinkId,
    sites: Vec<Site>,
    peers: Vec<Peer>,
    devices: Vec<Device>,
    owners: Vec<Owner>,
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
    now: u64,
    events: u64,
    past_timers: u64,
    lost_conns: u64,
    config: Config,
    peer_in_flight: usize,
    origin_in_flight: usize,
    stages: Vec<Stage>,
    faulty: FaultyPeers,
}

impl<'a> Sim<'a> {
    fn new(sc: &'a Scenario, seed: u64) -> Self {
        let rel = Release::synthesize(sc, seed);
        let k = sc.release.chunk_group as usize;
        let mut config = sc.scheduler;
        if k > 1 {
            // Per-chunk limits become per-block ones, but a batch always holds two blocks, so
            // that a source keeps one block queued behind the one it sends.
            let largest = u64::from(rel.lens.iter().copied().max().unwrap_or(1));
            config.batch_max_chunks = (config.batch_max_chunks / k).max(2);
            config.batch_max_bytes = config.batch_max_bytes.max(2 * largest);
            config.timeout_floor = config.timeout_floor.saturating_mul(k as u64);
        }
        let mut net = Network::new();
        let origin = net.add_link(sc.origin.egress, sc.origin.latency_us);
        net.watch(origin);
        let mut sites = Vec::new();
        let mut peers = Vec::new();
        let mut devices = Vec::new();
        let handle_key = HandleKey([0x5e; 32]);
        let mut fault_rng = SplitMix::derive(seed, "faults", 0);
        let mut faulty = FaultyPeers::default();
        let f = &sc.faults;
        // Peer indices of each class's sites, to resolve parents.
        let mut first_peer_of: Vec<Vec<u32>> = Vec::new();
        for (c, class) in sc.sites.iter().enumerate() {
            let mut firsts = Vec::new();
            for i in 0..class.count {
                let site = sites.len() as u32;
                let wan_down = net.add_link(class.uplink_down, class.uplink_latency_us);
                let wan_up = net.add_link(class.uplink_up, class.uplink_latency_us);
                let lan = net.add_link(class.lan, class.lan_latency_us);
                let p0 = peers.len() as u32;
                firsts.push(p0);
                let (mut corrupt_caches, mut slow_caches) = (Vec::new(), Vec::new());
                for (j, spec) in class.peers.iter().enumerate() {
                    let draw = fault_rng.unit();
                    let fault = if draw < f.corrupt_peers {
                        faulty.corrupt += 1;
                        Fault::Corrupt
                    } else if draw < f.corrupt_peers + f.withhold_peers {
                        faulty.withhold += 1;
                        Fault::Withhold
                    } else if draw < f.corrupt_peers + f.withhold_peers + f.slow_peers {
                        faulty.slow += 1;
                        Fault::Slow
                    } else {
                        Fault::None
                    };
                    match fault {
                        Fault::Corrupt => corrupt_caches.push(j),
                        Fault::Slow => slow_caches.push(j),
                        Fault::None | Fault::Withhold => {}
                    }
                    let upload = if fault == Fault::Slow {
                        spec.upload / f.slow_factor
                    } else {
                        spec.upload
                    };
                    let cache = CachePolicy::new(
                        CacheConfig {
                            capacity: spec.cache_bytes,
                            upstream_rate: spec
                                .upstream_budget
                                .map_or(u64::MAX / 4000, |b| b as u64),
                            upstream_burst: spec.upstream_budget.map_or(u64::MAX / 4000, |b| {
                                (b as u64).max(u64::from(*rel.lens.iter().max().unwrap_or(&1)))
                            }),
                            max_upstream_in_flight: spec.upstream_in_flight,
                            prefetch_windows: Vec::new(),
                        },
                        Millis(0),
                    );
                    peers.push(Peer {
                        site,
                        up: net.add_link(upload, 0),
                        down: net.add_link(spec.download, 0),
                        cache,
                        upstream: Upstream::Origin,
                        up_flows: Vec::new(),
                        fault,
                        timer_at: NONE,
                        prefetch: spec.prefetch,
                        holds_previous: spec.holds_previous,
                    });
                }
                let d0 = devices.len() as u32;
                for _ in 0..class.devices {
                    let n = devices.len() as u64;
                    let mut rng = SplitMix::derive(seed, "device", n);
                    let handle =
                        DeviceHandle::derive(&handle_key, &ChunkId::of(&n.to_le_bytes()).0);
                    let phase = if sc.device.checkin_interval_us == 0 {
                        0
                    } else {
                        rng.below(sc.device.checkin_interval_us)
                    };
                    let churns = rng.unit() < f.churn_devices;
                    faulty.churning_devices += u64::from(churns);
                    devices.push(Device {
                        site,
                        access: net.add_link(class.device_access, 0),
                        disk: net.add_link(sc.device.slot_copy, 0),
                        handle,
                        phase,
                        churns,
                        state: DevState::Idle,
                        sched: None,
                        conns: Vec::new(),
                        have: vec![0; (rel.lens.len()).div_ceil(64)],
                        have_count: 0,
                        fingerprint: 0,
                        timer_at: NONE,
                        epoch: 0,
                        offered_at: None,
                        installed_at: None,
                        wrong_install: false,
                        stuck: false,
                    });
                }
                sites.push(Site {
                    class: c,
                    wan_down,
                    wan_up,
                    lan,
                    devices: d0..devices.len() as u32,
                    peers: p0..peers.len() as u32,
                    out: SiteOutcome {
                        name: format!("{}-{i}", class.name),
                        class: c,
                        index: i,
                        corrupt_caches,
                        slow_caches,
                        ..SiteOutcome::default()
                    },
                });
            }
            first_peer_of.push(firsts);
        }
        // Parents.
        for site in &sites {
            let class = &sc.sites[site.class];
            for (j, spec) in class.peers.iter().enumerate() {
                let p = site.peers.start as usize + j;
                peers[p].upstream = match spec.parent {
                    Parent::Origin => Upstream::Origin,
                    Parent::Local(q) => Upstream::Peer(site.peers.start + q as u32),
                    Parent::Remote { class: c, peer } => {
                        let firsts = &first_peer_of[c];
                        let idx = site.out.index as usize % firsts.len();
                        Upstream::Peer(firsts[idx] + peer as u32)
                    }
                };
            }
        }
        Self {
            stages: vec![Stage::Validation; sc.cohorts.len()],
            sc,
            seed,
            rel,
            net,
            origin,
            sites,
            peers,
            devices,
            owners: Vec::new(),
            heap: BinaryHeap::new(),
            seq: 0,
            now: 0,
            events: 0,
            past_timers: 0,
            lost_conns: 0,
            config,
            // In blocks; with aggregation, at least two so that a connection never runs dry
            // between one block and the next request (as a pipelining device's would not).
            peer_in_flight: if k == 1 {
                sc.device.peer_in_flight
            } else {
                sc.device.peer_in_flight.div_ceil(k).max(2)
            },
            origin_in_flight: if k == 1 {
                sc.device.origin_in_flight
            } else {
                sc.device.origin_in_flight.div_ceil(k).max(2)
            },
            faulty,
        }
    }

    fn at(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.heap.push(Reverse(Entry {
            at,
            seq: self.seq,
            ev,
        }));
    }

    fn now_ms(&self) -> Millis {
        Millis(self.now / 1000)
    }

    fn run(mut self) -> Outcome {
        // Previous release in caches that keep it.
        for p in 0..self.peers.len() {
            if self.peers[p].holds_previous {
                for c in 0..self.rel.ids.len() {
                    if !self.rel.changed[c] {
                        self.peers[p]
                            .cache
                            .restore(self.rel.ids[c], self.rel.lens[c]);
                    }
                }
            }
        }
        self.at(self.sc.release.announce_us, Ev::Announce);
        for (i, w) in self.sc.waves.iter().enumerate() {
            self.at(w.at_us, Ev::Wave(i as u32));
        }
        let mut cuts = Vec::new();
        for site in &self.sites {
            let class = &self.sc.sites[site.class];
            for o in &class.outages {
                if f64::from(site.out.index) >= o.share * f64::from(class.count) {
                    continue;
                }
                let links: Vec<(LinkId, f64)> = match o.link {
                    OutageLink::Uplink => vec![
                        (site.wan_down, class.uplink_down),
                        (site.wan_up, class.uplink_up),
                    ],
                    OutageLink::Lan => vec![(site.lan, class.lan)],
                };
                for (link, capacity) in links {
                    cuts.push((o.start_us, link, 0.0));
                    cuts.push((o.start_us + o.duration_us, link, capacity));
                }
            }
        }
        for (at, link, capacity) in cuts {
            self.at(at, Ev::Capacity { link, capacity });
        }

        let mut time_limit_hit = false;
        loop {
            // The next moment: an event, or an item that a connection finishes sending.
            let next_event = self.heap.peek().map(|Reverse(e)| e.at);
            let Some(t) = next_event.into_iter().chain(self.net.next_due()).min() else {
                break;
            };
            if t > self.sc.max_time_us {
                time_limit_hit = true;
                break;
            }
            self.now = t;
            loop {
                if let Some((flow, item)) = self.net.pop_due(t) {
                    self.events += 1;
                    match self.owners[flow.0 as usize] {
                        Owner::Device { dev, slot } => self.device_receives(dev, slot, item),
                        Owner::Peer(p) => self.peer_receives(p, item),
                    }
                } else if self.heap.peek().is_some_and(|Reverse(e)| e.at == t) {
                    let Some(Reverse(entry)) = self.heap.pop() else {
                        break;
                    };
                    self.events += 1;
                    self.handle(entry.ev);
                } else {
                    break;
                }
            }
            self.net.settle(t);
        }
        self.finish(time_limit_hit)
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::AtPeer {
                peer,
                from,
                ids,
                epoch,
            } => self.peer_request(peer, from, &ids, epoch),
            Ev::AtOrigin { to, ids } => self.origin_request(to, &ids),
            Ev::DevTimer(d) => {
                let now = self.now_ms();
                let dev = &mut self.devices[d as usize];
                if dev.timer_at != self.now {
                    return;
                }
                dev.timer_at = NONE;
                if let Some(s) = dev.sched.as_mut() {
                    s.handle_timeout(now);
                }
                self.device_actions(d);
            }
            Ev::PeerTimer(p) => {
                let now = self.now_ms();
                let peer = &mut self.peers[p as usize];
                if peer.timer_at != self.now {
                    return;
                }
                peer.timer_at = NONE;
                peer.cache.handle_timeout(now);
                self.peer_actions(p);
            }
            Ev::CheckIn(d) => self.check_in(d),
            Ev::Wave(w) => self.open_wave(w as usize),
            Ev::Announce => self.announce(),
            Ev::Capacity { link, capacity } => {
                self.net.set_capacity(link, capacity);
                if capacity <= 0.0 {
                    self.link_cut(link);
                }
            }
            Ev::ConnCheck { dev, slot, epoch } => self.conn_check(dev, slot, epoch),
            Ev::ChurnOff(d) => self.churn_off(d),
            Ev::ChurnOn(d) => {
                if self.devices[d as usize].state == DevState::Offline {
                    self.start_update(d);
                }
            }
        }
    }

    // ---- rollout ------------------------------------------------------------------------

    fn release_facts(&self, cohort: usize) -> ReleaseFacts {
        ReleaseFacts {
            channel: Channel(self.sc.cohorts[cohort].clone()),
            number: RELEASE_NUMBER,
            models: vec![MODEL.to_owned()],
            min_installed: None,
            stage: self.stages[cohort],
            attestation: AttestationPolicy::Off,
        }
    }

    fn offered(&self, d: u32, release: &ReleaseFacts) -> bool {
        let dev = &self.devices[d as usize];
        let facts = DeviceFacts {
            handle: dev.handle,
            revoked: false,
            model: MODEL.to_owned(),
            channel: release.channel.clone(),
            installed: Some(ReleaseNumber(1)),
            validation_cohort: false,
            attestation: None,
        };
        decide(&facts, release) == Decision::Offer
    }

    fn open_wave(&mut self, w: usize) {
        let wave = self.sc.waves[w].clone();
        self.stages[wave.cohort] = if wave.basis_points >= 10_000 {
            Stage::Stable
        } else {
            Stage::Limited {
                basis_points: wave.basis_points,
            }
        };
        let release = self.release_facts(wave.cohort);
        let interval = self.sc.device.checkin_interval_us;
        for s in 0..self.sites.len() {
            if self.sc.sites[self.sites[s].class].cohort != wave.cohort {
                continue;
            }
            for d in self.sites[s].devices.clone() {
                if self.devices[d as usize].state != DevState::Idle || !self.offered(d, &release) {
                    continue;
                }
                // The device's next check-in at its phase of the period.
                let phase = self.devices[d as usize].phase;
                let at = if interval == 0 || self.now <= phase {
                    self.now.max(phase)
                } else {
                    phase + (self.now - phase).div_ceil(interval) * interval
                };
                self.devices[d as usize].state = DevState::CheckInScheduled;
                self.at(at, Ev::CheckIn(d));
            }
        }
    }

    fn check_in(&mut self, d: u32) {
        let site = self.devices[d as usize].site as usize;
        let cohort = self.sc.sites[self.sites[site].class].cohort;
        let release = self.release_facts(cohort);
        if !self.offered(d, &release) {
            self.devices[d as usize].state = DevState::Idle;
            return;
        }
        self.devices[d as usize].offered_at = Some(self.now);
        if self.devices[d as usize].churns && self.sc.faults.churn_within_us > 0 {
            let mut rng = SplitMix::derive(self.seed, "churn", u64::from(d));
            let at = self.now + rng.below(self.sc.faults.churn_within_us);
            self.at(at, Ev::ChurnOff(d));
        }
        self.start_update(d);
    }

    fn announce(&mut self) {
        let chunks: Vec<(ChunkId, u32)> = self
            .rel
            .ids
            .iter()
            .copied()
            .zip(self.rel.lens.iter().copied())
            .collect();
        let now = self.now_ms();
        for p in 0..self.peers.len() {
            if self.peers[p].prefetch {
                self.peers[p]
                    .cache
                    .pin_release(now, ReleaseKey("stable/2".into()), chunks.clone());
                self.peer_actions(p as u32);
            }
        }
    }

    // ---- devices ------------------------------------------------------------------------

    fn start_update(&mut self, d: u32) {
        let rel = &self.rel;
        let dev = &mut self.devices[d as usize];
        dev.state = DevState::Downloading;
        dev.epoch += 1;
        let has = |c: usize| dev.have[c / 64] >> (c % 64) & 1 == 1;
        let needs: Vec<Need> = (0..rel.ids.len())
            .filter(|&c| !has(c))
            .map(|c| Need {
                id: rel.ids[c],
                len: rel.lens[c],
            })
            .collect();
        let local: HashSet<ChunkId> = (0..rel.ids.len())
            .filter(|&c| !rel.changed[c] && !has(c))
            .map(|c| rel.ids[c])
            .collect();
        let now = Millis(self.now / 1000);
        let mut sched = Scheduler::new(self.config, needs);
        let mut conns = Vec::new();
        if !local.is_empty() {
            sched.add_source(
                now,
                SourceId(conns.len() as u32),
                SourceKind::LocalSlot,
                self.peer_in_flight.max(self.origin_in_flight),
                Holdings::Only(local),
            );
            conns.push(Conn {
                endpoint: Endpoint::Local,
                flow: None,
                outstanding: Vec::new(),
            });
        }
        for p in self.sites[dev.site as usize].peers.clone() {
            sched.add_source(
                now,
                SourceId(conns.len() as u32),
                SourceKind::LanPeer,
                self.peer_in_flight,
                Holdings::Any,
            );
            conns.push(Conn {
                endpoint: Endpoint::Peer(p),
                flow: None,
                outstanding: Vec::new(),
            });
        }
        sched.add_source(
            now,
            SourceId(conns.len() as u32),
            SourceKind::Origin,
            self.origin_in_flight,
            Holdings::Any,
        );
        conns.push(Conn {
            endpoint: Endpoint::Origin,
            flow: None,
            outstanding: Vec::new(),
        });
        sched.start(now);
        dev.sched = Some(Box::new(sched));
        dev.conns = conns;
        self.device_actions(d);
    }

    fn device_actions(&mut self, d: u32) {
        while let Some(action) = self.devices[d as usize]
            .sched
            .as_mut()
            .and_then(|s| s.poll_action())
        {
            match action {
                Action::Request { source, ids } => self.device_request(d, source.0, &ids),
                Action::Cancel { source, id } => {
                    let c = self.rel.index[&id];
                    let dev = &mut self.devices[d as usize];
                    let conn = &mut dev.conns[source.0 as usize];
                    if let Some(pos) = conn.outstanding.iter().position(|&x| x == c) {
                        conn.outstanding.swap_remove(pos);
                    }
                    if let Some(flow) = conn.flow {
                        self.net.cancel(self.now, flow, |tag| tag as u32 == c);
                    }
                }
                Action::Complete => {
                    self.install(d);
                    return;
                }
                Action::Stuck { .. } => {
                    self.devices[d as usize].stuck = true;
                    self.retire(d);
                    return;
                }
                _ => {}
            }
        }
        self.arm_device(d);
    }

    fn arm_device(&mut self, d: u32) {
        let dev = &mut self.devices[d as usize];
        let Some(sched) = dev.sched.as_ref() else {
            return;
        };
        let Some(t) = sched.poll_timeout() else {
            return;
        };
        let mut at = t.0.saturating_mul(1000);
        if at <= self.now {
            // A deadline already judged: look again a millisecond later rather than spin.
            self.past_timers += 1;
            at = (self.now / 1000 + 1) * 1000;
        }
        if dev.timer_at == NONE || at < dev.timer_at {
            dev.timer_at = at;
            self.at(at, Ev::DevTimer(d));
        }
    }

    /// The links a device's connection crosses (none for its local slot).
    fn conn_path(&self, d: u32, slot: u32) -> Vec<LinkId> {
        match self.devices[d as usize].conns[slot as usize].endpoint {
            Endpoint::Local => Vec::new(),
            Endpoint::Peer(p) => self.peer_to_device(p, d),
            Endpoint::Origin => self.origin_to_device(d),
        }
    }

    fn path_cut(&self, path: &[LinkId]) -> bool {
        path.iter().any(|&l| self.net.capacity(l) <= 0.0)
    }

    /// A link went down: every device connection across it with requests outstanding is lost
    /// if it is still down after the idle timeout.
    fn link_cut(&mut self, link: LinkId) {
        let Some(site) = self
            .sites
            .iter()
            .position(|s| s.wan_down == link || s.lan == link)
        else {
            return;
        };
        let at = self.now + self.sc.device.idle_timeout_us;
        for d in self.sites[site].devices.clone() {
            let dev = &self.devices[d as usize];
            if dev.state != DevState::Downloading {
                continue;
            }
            let epoch = dev.epoch;
            for slot in 0..dev.conns.len() as u32 {
                if !self.devices[d as usize].conns[slot as usize]
                    .outstanding
                    .is_empty()
                    && self.conn_path(d, slot).contains(&link)
                {
                    self.at(
                        at,
                        Ev::ConnCheck {
                            dev: d,
                            slot,
                            epoch,
                        },
                    );
                }
            }
        }
    }

    /// The idle timeout of a connection that was cut: if it still is, with requests
    /// outstanding, the device loses it and tells its scheduler (which backs off).
    fn conn_check(&mut self, d: u32, slot: u32, epoch: u32) {
        let dev = &self.devices[d as usize];
        if dev.epoch != epoch
            || dev.state != DevState::Downloading
            || dev.conns[slot as usize].outstanding.is_empty()
            || !self.path_cut(&self.conn_path(d, slot))
        {
            return;
        }
        let now = self.now_ms();
        let dev = &mut self.devices[d as usize];
        let conn = &mut dev.conns[slot as usize];
        conn.outstanding.clear();
        if let Some(flow) = conn.flow.take() {
            self.net.close(self.now, flow);
        }
        self.lost_conns += 1;
        if let Some(s) = dev.sched.as_mut() {
            s.handle_source_lost(now, SourceId(slot));
        }
        self.device_actions(d);
    }

    fn device_request(&mut self, d: u32, slot: u32, ids: &[ChunkId]) {
        let idx: Vec<u32> = ids.iter().map(|id| self.rel.index[id]).collect();
        if self.path_cut(&self.conn_path(d, slot)) {
            // Asked across a cut link: nothing comes back before the idle timeout.
            let epoch = self.devices[d as usize].epoch;
            let at = self.now + self.sc.device.idle_timeout_us;
            self.at(
                at,
                Ev::ConnCheck {
                    dev: d,
                    slot,
                    epoch,
                },
            );
        }
        let dev = &mut self.devices[d as usize];
        let epoch = dev.epoch;
        let conn = &mut dev.conns[slot as usize];
        conn.outstanding.extend_from_slice(&idx);
        match conn.endpoint {
            Endpoint::Local => {
                let flow = self.device_flow(d, slot);
                for c in idx {
                    let bytes = u64::from(self.rel.lens[c as usize]);
                    self.net.push(
                        self.now,
                        flow,
                        Item {
                            bytes,
                            tag: u64::from(c),
                        },
                    );
                }
            }
            Endpoint::Peer(p) => {
                let rtt = 2 * self.net.latency_us(&self.peer_to_device(p, d));
                self.at(
                    self.now + rtt,
                    Ev::AtPeer {
                        peer: p,
                        from: (u64::from(d) << 8) | u64::from(slot),
                        ids: idx,
                        epoch,
                    },
                );
            }
            Endpoint::Origin => {
                let rtt = 2 * self.net.latency_us(&self.origin_to_device(d));
                self.at(
                    self.now + rtt,
                    Ev::AtOrigin {
                        to: Receiver::Device {
                            dev: d,
                            slot,
                            epoch,
                        },
                        ids: idx,
                    },
                );
            }
        }
    }

    fn peer_to_device(&self, p: u32, d: u32) -> Vec<LinkId> {
        let peer = &self.peers[p as usize];
        let dev = &self.devices[d as usize];
        vec![peer.up, self.sites[dev.site as usize].lan, dev.access]
    }

    fn origin_to_device(&self, d: u32) -> Vec<LinkId> {
        let dev = &self.devices[d as usize];
        let site = &self.sites[dev.site as usize];
        vec![self.origin, site.wan_down, site.lan, dev.access]
    }

    fn upstream_path(&self, p: u32, upstream: Upstream) -> Vec<LinkId> {
        let peer = &self.peers[p as usize];
        let site = &self.sites[peer.site as usize];
        match upstream {
            Upstream::Origin => vec![self.origin, site.wan_down, site.lan, peer.down],
            Upstream::Peer(q) => {
                let parent = &self.peers[q as usize];
                let psite = &self.sites[parent.site as usize];
                if parent.site == peer.site {
                    vec![parent.up, site.lan, peer.down]
                } else {
                    vec![
                        parent.up,
                        psite.lan,
                        psite.wan_up,
                        site.wan_down,
                        site.lan,
                        peer.down,
                    ]
                }
            }
        }
    }

    fn set_owner(&mut self, flow: FlowId, owner: Owner) {
        let i = flow.0 as usize;
        if self.owners.len() <= i {
            self.owners.resize(i + 1, Owner::Peer(u32::MAX));
        }
        self.owners[i] = owner;
    }

    /// The device's connection for a source, opened on first use.
    fn device_flow(&mut self, d: u32, slot: u32) -> FlowId {
        if let Some(flow) = self.devices[d as usize].conns[slot as usize].flow {
            return flow;
        }
        let path = match self.devices[d as usize].conns[slot as usize].endpoint {
            Endpoint::Local => vec![self.devices[d as usize].disk],
            Endpoint::Peer(p) => self.peer_to_device(p, d),
            Endpoint::Origin => self.origin_to_device(d),
        };
        let flow = self.net.open(&path);
        self.set_owner(flow, Owner::Device { dev: d, slot });
        self.devices[d as usize].conns[slot as usize].flow = Some(flow);
        flow
    }

    fn device_receives(&mut self, d: u32, slot: u32, item: Item) {
        let c = item.tag as u32;
        let corrupt = item.tag & CORRUPT_BIT != 0;
        let dev = &mut self.devices[d as usize];
        if dev.state != DevState::Downloading {
            return;
        }
        let conn = &mut dev.conns[slot as usize];
        let Some(pos) = conn.outstanding.iter().position(|&x| x == c) else {
            return; // cancelled while in transit
        };
        conn.outstanding.swap_remove(pos);
        let id = self.rel.ids[c as usize];
        let now = Millis(self.now / 1000);
        let site = dev.site as usize;
        // Verification: the bytes match the id unless the sender corrupted them.
        if corrupt {
            self.sites[site].out.corrupt_rejected_by_devices += 1;
            if let Some(s) = dev.sched.as_mut() {
                s.handle_chunk(now, SourceId(slot), &id, ChunkOutcome::Corrupt);
            }
            // The scheduler bans the source; the device drops its connection.
            let conn = &mut dev.conns[slot as usize];
            conn.outstanding.clear();
            if let Some(flow) = conn.flow.take() {
                self.net.close(self.now, flow);
            }
        } else {
            let word = &mut dev.have[c as usize / 64];
            let bit = 1u64 << (c % 64);
            if *word & bit == 0 {
                *word |= bit;
                dev.have_count += 1;
                dev.fingerprint ^= self.rel.tags[c as usize];
            }
            if let Some(s) = dev.sched.as_mut() {
                s.handle_chunk(now, SourceId(slot), &id, ChunkOutcome::Verified);
            }
        }
        self.device_actions(d);
    }

    fn device_missing(&mut self, d: u32, slot: u32, c: u32) {
        let dev = &mut self.devices[d as usize];
        if dev.state != DevState::Downloading {
            return;
        }
        let conn = &mut dev.conns[slot as usize];
        let Some(pos) = conn.outstanding.iter().position(|&x| x == c) else {
            return;
        };
        conn.outstanding.swap_remove(pos);
        let now = Millis(self.now / 1000);
        if let Some(s) = dev.sched.as_mut() {
            s.handle_chunk(
                now,
                SourceId(slot),
                &self.rel.ids[c as usize],
                ChunkOutcome::Missing,
            );
        }
        self.device_actions(d);
    }

    fn install(&mut self, d: u32) {
        let total = self.rel.ids.len() as u64;
        let dev = &mut self.devices[d as usize];
        dev.wrong_install = dev.have_count != total || dev.fingerprint != self.rel.fingerprint;
        dev.installed_at = Some(self.now);
        self.retire(d);
    }

    /// Fold the scheduler's report into the site, close connections, free the scheduler.
    fn retire(&mut self, d: u32) {
        let dev = &mut self.devices[d as usize];
        if let Some(sched) = dev.sched.take() {
            let report = sched.report();
            let out = &mut self.sites[dev.site as usize].out;
            for (kind, bytes) in &report.bytes_by_kind {
                out.bytes_by_kind[kind_index(*kind)] += bytes;
            }
            out.duplicate_bytes += report.duplicate_bytes;
            out.bans += report.sources.iter().filter(|s| s.banned.is_some()).count() as u64;
            out.slow_marks += report.sources.iter().filter(|s| s.slow).count() as u64;
        }
        for conn in std::mem::take(&mut dev.conns) {
            if let Some(flow) = conn.flow {
                self.net.close(self.now, flow);
            }
        }
        dev.timer_at = NONE;
        dev.state = if dev.installed_at.is_some() || dev.stuck {
            DevState::Done
        } else {
            DevState::Offline
        };
    }

    fn churn_off(&mut self, d: u32) {
        if self.devices[d as usize].state != DevState::Downloading {
            return;
        }
        self.retire(d);
        let dev = &mut self.devices[d as usize];
        dev.epoch += 1;
        let back = self.now + self.sc.faults.churn_offline_us;
        self.at(back, Ev::ChurnOn(d));
    }

    // ---- peers and origin ----------------------------------------------------------------

    fn fault_draw(&self, p: u32, c: u32, purpose: u64) -> f64 {
        let x = mix(self.seed ^ mix(u64::from(p) << 32 | u64::from(c)) ^ purpose);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    fn peer_request(&mut self, p: u32, from: u64, ids: &[u32], epoch: u32) {
        if from & CHILD_BIT == 0 {
            let dev = &self.devices[(from >> 8) as usize];
            if dev.epoch != epoch || dev.state != DevState::Downloading {
                return;
            }
        }
        let now = self.now_ms();
        for &c in ids {
            if self.peers[p as usize].fault == Fault::Withhold
                && self.fault_draw(p, c, 1) < self.sc.faults.withhold_share
            {
                let site = self.peers[p as usize].site as usize;
                self.sites[site].out.withheld += 1;
                self.answer_missing(from, c);
                continue;
            }
            let id = self.rel.ids[c as usize];
            self.peers[p as usize]
                .cache
                .handle_request(now, Requester(from), id);
        }
        self.peer_actions(p);
    }

    fn answer_missing(&mut self, to: u64, c: u32) {
        if to & CHILD_BIT != 0 {
            let q = (to & !CHILD_BIT) as u32;
            let now = self.now_ms();
            let (id, len) = (self.rel.ids[c as usize], self.rel.lens[c as usize]);
            self.peers[q as usize]
                .cache
                .handle_upstream(now, id, UpstreamOutcome::Missing, len);
            self.peer_actions(q);
        } else {
            self.device_missing((to >> 8) as u32, (to & 0xff) as u32, c);
        }
    }

    fn peer_actions(&mut self, p: u32) {
        while let Some(action) = self.peers[p as usize].cache.poll_action() {
            self.cache_action(p, action);
        }
        self.arm_peer(p);
    }

    fn cache_action(&mut self, p: u32, action: CacheAction) {
        {
            match action {
                CacheAction::Serve { requester, id } => {
                    let c = self.rel.index[&id];
                    self.peer_serves(p, requester.0, c);
                }
                CacheAction::Missing { requester, id } => {
                    let c = self.rel.index[&id];
                    self.answer_missing(requester.0, c);
                }
                CacheAction::Fetch { id, .. } => {
                    let c = self.rel.index[&id];
                    let upstream = self.peers[p as usize].upstream;
                    let rtt = 2 * self.net.latency_us(&self.upstream_path(p, upstream));
                    let ev = match upstream {
                        Upstream::Origin => Ev::AtOrigin {
                            to: Receiver::Peer(p),
                            ids: vec![c],
                        },
                        Upstream::Peer(q) => Ev::AtPeer {
                            peer: q,
                            from: CHILD_BIT | u64::from(p),
                            ids: vec![c],
                            epoch: 0,
                        },
                    };
                    self.at(self.now + rtt, ev);
                }
                _ => {}
            }
        }
    }

    fn arm_peer(&mut self, p: u32) {
        let now = self.now_ms();
        let peer = &mut self.peers[p as usize];
        let Some(t) = peer.cache.poll_timeout(now) else {
            return;
        };
        let mut at = t.0.saturating_mul(1000);
        if at <= self.now {
            self.past_timers += 1;
            at = (self.now / 1000 + 1) * 1000;
        }
        if peer.timer_at == NONE || at < peer.timer_at {
            peer.timer_at = at;
            self.at(at, Ev::PeerTimer(p));
        }
    }

    /// Peer `p` sends chunk `c` to a requester (a device connection or a child peer).
    fn peer_serves(&mut self, p: u32, to: u64, c: u32) {
        let corrupt = self.peers[p as usize].fault == Fault::Corrupt
            && self.fault_draw(p, c, 2) < self.sc.faults.corrupt_share;
        let flow = if to & CHILD_BIT != 0 {
            let q = (to & !CHILD_BIT) as u32;
            self.peer_flow(q, Upstream::Peer(p))
        } else {
            let (d, slot) = ((to >> 8) as u32, (to & 0xff) as u32);
            let dev = &self.devices[d as usize];
            if dev.state != DevState::Downloading
                || !dev.conns[slot as usize].outstanding.contains(&c)
            {
                return; // the device went away or no longer wants it
            }
            self.device_flow(d, slot)
        };
        if corrupt {
            let site = self.peers[p as usize].site as usize;
            self.sites[site].out.corrupt_sent += 1;
        }
        let bytes = u64::from(self.rel.lens[c as usize]);
        let tag = u64::from(c) | if corrupt { CORRUPT_BIT } else { 0 };
        self.net.push(self.now, flow, Item { bytes, tag });
    }

    fn peer_flow(&mut self, p: u32, upstream: Upstream) -> FlowId {
        if let Some(&(_, flow)) = self.peers[p as usize]
            .up_flows
            .iter()
            .find(|(u, _)| *u == upstream)
        {
            return flow;
        }
        let path = self.upstream_path(p, upstream);
        let flow = self.net.open(&path);
        self.set_owner(flow, Owner::Peer(p));
        self.peers[p as usize].up_flows.push((upstream, flow));
        flow
    }

    fn origin_request(&mut self, to: Receiver, ids: &[u32]) {
        let flow = match to {
            Receiver::Peer(p) => self.peer_flow(p, Upstream::Origin),
            Receiver::Device { dev, slot, epoch } => {
                let device = &self.devices[dev as usize];
                if device.epoch != epoch || device.state != DevState::Downloading {
                    return;
                }
                self.device_flow(dev, slot)
            }
        };
        for &c in ids {
            if let Receiver::Device { dev, slot, .. } = to
                && !self.devices[dev as usize].conns[slot as usize]
                    .outstanding
                    .contains(&c)
            {
                continue; // cancelled on the way
            }
            let bytes = u64::from(self.rel.lens[c as usize]);
            self.net.push(
                self.now,
                flow,
                Item {
                    bytes,
                    tag: u64::from(c),
                },
            );
        }
    }

    fn peer_receives(&mut self, p: u32, item: Item) {
        let c = item.tag as u32;
        let (id, len) = (self.rel.ids[c as usize], self.rel.lens[c as usize]);
        let now = self.now_ms();
        let outcome = if item.tag & CORRUPT_BIT != 0 {
            let site = self.peers[p as usize].site as usize;
            self.sites[site].out.corrupt_rejected_by_peers += 1;
            // Verify before store: refused, and this parent is dropped for the origin.
            self.peers[p as usize].upstream = Upstream::Origin;
            UpstreamOutcome::Corrupt
        } else {
            UpstreamOutcome::Verified
        };
        self.peers[p as usize]
            .cache
            .handle_upstream(now, id, outcome, len);
        if outcome == UpstreamOutcome::Corrupt {
            // What peer-node does with the requests that waited on the refused chunk: ask
            // again, now of the origin, rather than tell them the cache lacks it.
            let mut retry = Vec::new();
            while let Some(action) = self.peers[p as usize].cache.poll_action() {
                match action {
                    CacheAction::Missing { requester, id: i } if i == id => retry.push(requester),
                    other => self.cache_action(p, other),
                }
            }
            for requester in retry {
                self.peers[p as usize]
                    .cache
                    .handle_request(now, requester, id);
            }
        }
        self.peer_actions(p);
    }

    // ---- the end -------------------------------------------------------------------------

    fn finish(mut self, time_limit_hit: bool) -> Outcome {
        let mut cache = CacheTotals::default();
        for peer in &self.peers {
            let s = peer.cache.stats();
            cache.hits += s.hits;
            cache.misses += s.misses;
            cache.bytes_up += s.bytes_up;
            cache.corrupt_upstream += s.corrupt_upstream;
            cache.evictions += s.evictions;
            cache.prefetched += s.prefetched;
        }
        // Devices still downloading: fold in what they fetched so far.
        for d in 0..self.devices.len() {
            if self.devices[d].sched.is_some() {
                self.retire(d as u32);
            }
        }
        for site in &mut self.sites {
            site.out.wan_down_bytes = self.net.carried(site.wan_down);
        }
        Outcome {
            release: self.rel.summary.clone(),
            devices: self
                .devices
                .iter()
                .map(|d| DeviceOutcome {
                    site: d.site,
                    offered_at: d.offered_at,
                    installed_at: d.installed_at,
                    wrong_install: d.wrong_install,
                    stuck: d.stuck,
                })
                .collect(),
            sites: self.sites.into_iter().map(|s| s.out).collect(),
            origin_egress: self.net.carried(self.origin),
            egress_bins: self.net.watched_bins().to_vec(),
            events: self.events,
            recomputes: self.net.recomputes(),
            past_timers: self.past_timers,
            lost_connections: self.lost_conns,
            end_us: self.now,
            time_limit_hit,
            cache,
            faulty_peers: self.faulty,
        }
    }
}
