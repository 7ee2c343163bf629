//! Scenario files: TOML, parsed strictly (unknown keys are errors) and checked before any
//! simulation starts. Every error names the file, the line and the field.
//!
//! Units are in the key names: `_mbps` is megabits per second (10^6 bits), `_ms` and `_s`
//! are milliseconds and seconds, `_mib` and `_gib` are binary megabytes and gigabytes.
//! See `simnet/README.md` for every key and its default.

use std::fmt;
use std::ops::Range;

use ota_core::fetch::Config;
use serde::Deserialize;
use toml::Spanned;

/// A checked scenario, in simulator units: bytes, bytes per second, microseconds.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Its name.
    pub name: String,
    /// What it shows.
    pub description: String,
    /// The seed used when the command line gives none.
    pub seed: u64,
    /// The simulation stops here, finished or not.
    pub max_time_us: u64,
    /// The origin.
    pub origin: Origin,
    /// The release.
    pub release: ReleaseSpec,
    /// Device driver settings.
    pub device: DeviceSettings,
    /// The fetch scheduler's tuning, per real 64 KiB-class chunk (scaled for chunk groups).
    pub scheduler: Config,
    /// Site classes.
    pub sites: Vec<SiteClass>,
    /// Cohort names (site classes name them; waves open them).
    pub cohorts: Vec<String>,
    /// Rollout waves, in time order.
    pub waves: Vec<Wave>,
    /// Faults.
    pub faults: Faults,
}

/// The origin's network side.
#[derive(Debug, Clone)]
pub struct Origin {
    /// Egress capacity, bytes per second.
    pub egress: f64,
    /// One-way latency of its link, microseconds.
    pub latency_us: u64,
}

/// The release to roll out.
#[derive(Debug, Clone)]
pub struct ReleaseSpec {
    /// Total artifact bytes.
    pub bytes: u64,
    /// Share of chunks new since the previous release (1.0: a full release).
    pub changed_share: f64,
    /// Real chunks simulated as one block (1: every chunk on its own).
    pub chunk_group: u32,
    /// When peers learn of the release (pin and prefetch).
    pub announce_us: u64,
}

/// How devices drive their scheduler.
#[derive(Debug, Clone)]
pub struct DeviceSettings {
    /// Check-in period; each device has a random phase in it.
    pub checkin_interval_us: u64,
    /// Chunks in flight per LAN peer.
    pub peer_in_flight: usize,
    /// Chunks in flight at the origin.
    pub origin_in_flight: usize,
    /// Local copy speed from the active slot, bytes per second.
    pub slot_copy: f64,
    /// A connection whose path is cut (a link at zero capacity) this long with requests
    /// outstanding is lost (QUIC's idle timeout), microseconds.
    pub idle_timeout_us: u64,
}

/// A class of identical sites.
#[derive(Debug, Clone)]
pub struct SiteClass {
    /// Its name (sites are named `NAME-INDEX`).
    pub name: String,
    /// How many.
    pub count: u32,
    /// Index into [`Scenario::cohorts`].
    pub cohort: usize,
    /// Devices per site.
    pub devices: u32,
    /// WAN capacity towards the site, bytes per second.
    pub uplink_down: f64,
    /// WAN capacity from the site, bytes per second.
    pub uplink_up: f64,
    /// WAN one-way latency, microseconds.
    pub uplink_latency_us: u64,
    /// LAN capacity, bytes per second.
    pub lan: f64,
    /// LAN one-way latency, microseconds.
    pub lan_latency_us: u64,
    /// Each device's access link, bytes per second.
    pub device_access: f64,
    /// The site's peers (caches).
    pub peers: Vec<PeerSpec>,
    /// Outage windows.
    pub outages: Vec<Outage>,
}

/// A site cache.
#[derive(Debug, Clone)]
pub struct PeerSpec {
    /// Its name within the site.
    pub name: String,
    /// Upload capacity of its access link, bytes per second.
    pub upload: f64,
    /// Download capacity of its access link, bytes per second.
    pub download: f64,
    /// Where it fetches from.
    pub parent: Parent,
    /// Cache capacity, bytes.
    pub cache_bytes: u64,
    /// Whether it prefetches a release when announced.
    pub prefetch: bool,
    /// Most upstream fetches at once.
    pub upstream_in_flight: usize,
    /// Upstream budget, bytes per second (none: unlimited).
    pub upstream_budget: Option<f64>,
    /// Whether it still holds the previous release's chunks.
    pub holds_previous: bool,
}

/// A peer's upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parent {
    /// The origin.
    Origin,
    /// Another peer at the same site.
    Local(usize),
    /// A peer of another site class: site `i` of this class uses site `i mod count` there.
    Remote {
        /// The site class.
        class: usize,
        /// The peer within it.
        peer: usize,
    },
}

/// Which link an outage cuts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutageLink {
    /// The WAN, both ways.
    Uplink,
    /// The LAN.
    Lan,
}

/// A window in which a link carries nothing.
#[derive(Debug, Clone)]
pub struct Outage {
    /// The link.
    pub link: OutageLink,
    /// Start, microseconds.
    pub start_us: u64,
    /// Length, microseconds.
    pub duration_us: u64,
    /// Share of the class's sites affected (the first ones, by index).
    pub share: f64,
}

/// A rollout wave: from `at_us`, the cohort's stage offers the release to this share.
#[derive(Debug, Clone)]
pub struct Wave {
    /// Index into [`Scenario::cohorts`].
    pub cohort: usize,
    /// When it opens.
    pub at_us: u64,
    /// Share of the cohort, basis points (10 000: stable).
    pub basis_points: u16,
}

/// Misbehaviour to inject.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Share of peers that corrupt.
    pub corrupt_peers: f64,
    /// Share of the chunks a corrupting peer sends that are corrupt.
    pub corrupt_share: f64,
    /// Share of peers that withhold (answer `Missing` though they hold the chunk).
    pub withhold_peers: f64,
    /// Share of the chunks a withholding peer withholds.
    pub withhold_share: f64,
    /// Share of peers whose upload is slowed.
    pub slow_peers: f64,
    /// How much slower.
    pub slow_factor: f64,
    /// Share of devices that drop off once mid-update.
    pub churn_devices: f64,
    /// How long they stay away, microseconds.
    pub churn_offline_us: u64,
    /// They drop within this long after their offer, microseconds.
    pub churn_within_us: u64,
}

impl Faults {
    /// Whether any fault is configured.
    pub fn any(&self) -> bool {
        self.corrupt_peers > 0.0
            || self.withhold_peers > 0.0
            || self.slow_peers > 0.0
            || self.churn_devices > 0.0
    }
}

impl Scenario {
    /// Read and check a scenario file.
    pub fn load(path: &std::path::Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: path.display().to_string(),
            line: 0,
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&path.display().to_string(), &text)
    }

    /// Parse and check scenario text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, ScenarioError> {
        let ctx = Ctx { file, text };
        let raw: RawScenario = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |s| ctx.line(s.start));
            ScenarioError {
                file: file.to_owned(),
                line,
                message: e.message().to_owned(),
            }
        })?;
        ctx.check(raw)
    }

    /// Whether faults or outages are configured (the report then compares with a clean run).
    pub fn has_disturbances(&self) -> bool {
        self.faults.any() || self.sites.iter().any(|s| !s.outages.is_empty())
    }

    /// The same scenario without faults and outages.
    pub fn undisturbed(&self) -> Self {
        let mut clean = self.clone();
        clean.faults = Faults {
            corrupt_share: self.faults.corrupt_share,
            withhold_share: self.faults.withhold_share,
            slow_factor: self.faults.slow_factor,
            ..Faults::default()
        };
        for site in &mut clean.sites {
            site.outages.clear();
        }
        clean
    }

    /// Total devices.
    pub fn device_count(&self) -> u64 {
        self.sites
            .iter()
            .map(|s| u64::from(s.count) * u64::from(s.devices))
            .sum()
    }

    /// Total sites.
    pub fn site_count(&self) -> u64 {
        self.sites.iter().map(|s| u64::from(s.count)).sum()
    }
}

/// A scenario that cannot be run, with where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    /// The file.
    pub file: String,
    /// The line (1-based; 0 when not tied to a line).
    pub line: usize,
    /// What is wrong, naming the field.
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        }
    }
}

impl std::error::Error for ScenarioError {}

const MBPS: f64 = 125_000.0;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default = "one")]
    seed: u64,
    #[serde(default = "default_max_hours")]
    max_hours: Spanned<f64>,
    origin: RawOrigin,
    release: RawRelease,
    #[serde(default)]
    device: RawDevice,
    #[serde(default)]
    scheduler: RawScheduler,
    site: Vec<RawSite>,
    wave: Vec<RawWave>,
    #[serde(default)]
    faults: RawFaults,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOrigin {
    egress_mbps: Spanned<f64>,
    #[serde(default = "ten")]
    latency_ms: Spanned<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelease {
    size_mib: Spanned<f64>,
    #[serde(default = "unit")]
    changed_share: Spanned<f64>,
    #[serde(default = "one_u32")]
    chunk_group: Spanned<u32>,
    #[serde(default = "zero")]
    announce_s: Spanned<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    #[serde(default = "default_checkin")]
    checkin_interval_s: Spanned<f64>,
    #[serde(default = "default_peer_in_flight")]
    peer_in_flight: Spanned<u32>,
    #[serde(default = "default_origin_in_flight")]
    origin_in_flight: Spanned<u32>,
    #[serde(default = "default_slot_copy")]
    slot_copy_mbps: Spanned<f64>,
    #[serde(default = "default_idle_timeout")]
    idle_timeout_s: Spanned<f64>,
}

impl Default for RawDevice {
    fn default() -> Self {
        Self {
            checkin_interval_s: default_checkin(),
            peer_in_flight: default_peer_in_flight(),
            origin_in_flight: default_origin_in_flight(),
            slot_copy_mbps: default_slot_copy(),
            idle_timeout_s: default_idle_timeout(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScheduler {
    batch_max_chunks: Option<Spanned<u32>>,
    batch_max_bytes: Option<u64>,
    timeout_floor_ms: Option<u64>,
    slow_factor: Option<Spanned<u64>>,
    max_strikes: Option<Spanned<u32>>,
    max_copies: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSite {
    name: Spanned<String>,
    #[serde(default = "one_spanned_u32")]
    count: Spanned<u32>,
    cohort: String,
    devices: u32,
    uplink_mbps: Spanned<f64>,
    uplink_up_mbps: Option<Spanned<f64>>,
    #[serde(default = "twenty")]
    uplink_latency_ms: Spanned<f64>,
    #[serde(default = "gigabit")]
    lan_mbps: Spanned<f64>,
    #[serde(default = "half")]
    lan_latency_ms: Spanned<f64>,
    #[serde(default = "hundred")]
    device_mbps: Spanned<f64>,
    #[serde(default)]
    peer: Vec<RawPeer>,
    #[serde(default)]
    outage: Vec<RawOutage>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    name: Spanned<String>,
    #[serde(default = "gigabit")]
    upload_mbps: Spanned<f64>,
    #[serde(default = "gigabit")]
    download_mbps: Spanned<f64>,
    #[serde(default = "origin_name")]
    parent: Spanned<String>,
    #[serde(default = "default_cache_gib")]
    cache_gib: Spanned<f64>,
    #[serde(default = "yes")]
    prefetch: bool,
    #[serde(default = "default_upstream_in_flight")]
    upstream_in_flight: Spanned<u32>,
    upstream_mbps: Option<Spanned<f64>>,
    #[serde(default = "yes")]
    holds_previous: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutage {
    link: Spanned<String>,
    start_s: Spanned<f64>,
    duration_s: Spanned<f64>,
    #[serde(default = "unit")]
    share: Spanned<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWave {
    cohort: Spanned<String>,
    at_s: Spanned<f64>,
    percent: Spanned<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFaults {
    #[serde(default = "zero")]
    corrupt_peers: Spanned<f64>,
    #[serde(default = "unit")]
    corrupt_share: Spanned<f64>,
    #[serde(default = "zero")]
    withhold_peers: Spanned<f64>,
    #[serde(default = "unit")]
    withhold_share: Spanned<f64>,
    #[serde(default = "zero")]
    slow_peers: Spanned<f64>,
    #[serde(default = "ten")]
    slow_factor: Spanned<f64>,
    #[serde(default = "zero")]
    churn_devices: Spanned<f64>,
    #[serde(default = "default_churn_offline")]
    churn_offline_s: Spanned<f64>,
    #[serde(default = "default_churn_within")]
    churn_within_s: Spanned<f64>,
}

impl Default for RawFaults {
    fn default() -> Self {
        Self {
            corrupt_peers: zero(),
            corrupt_share: unit(),
            withhold_peers: zero(),
            withhold_share: unit(),
            slow_peers: zero(),
            slow_factor: ten(),
            churn_devices: zero(),
            churn_offline_s: default_churn_offline(),
            churn_within_s: default_churn_within(),
        }
    }
}

fn s<T>(value: T) -> Spanned<T> {
    Spanned::new(0..0, value)
}
fn one() -> u64 {
    1
}
fn one_u32() -> Spanned<u32> {
    s(1)
}
fn one_spanned_u32() -> Spanned<u32> {
    s(1)
}
fn yes() -> bool {
    true
}
fn zero() -> Spanned<f64> {
    s(0.0)
}
fn unit() -> Spanned<f64> {
    s(1.0)
}
fn half() -> Spanned<f64> {
    s(0.5)
}
fn ten() -> Spanned<f64> {
    s(10.0)
}
fn twenty() -> Spanned<f64> {
    s(20.0)
}
fn hundred() -> Spanned<f64> {
    s(100.0)
}
fn gigabit() -> Spanned<f64> {
    s(1000.0)
}
fn default_max_hours() -> Spanned<f64> {
    s(72.0)
}
fn default_checkin() -> Spanned<f64> {
    s(300.0)
}
fn default_peer_in_flight() -> Spanned<u32> {
    s(3)
}
fn default_origin_in_flight() -> Spanned<u32> {
    s(16)
}
fn default_slot_copy() -> Spanned<f64> {
    s(800.0)
}
fn default_idle_timeout() -> Spanned<f64> {
    s(30.0)
}
fn default_cache_gib() -> Spanned<f64> {
    s(64.0)
}
fn default_upstream_in_flight() -> Spanned<u32> {
    s(8)
}
fn default_churn_offline() -> Spanned<f64> {
    s(600.0)
}
fn default_churn_within() -> Spanned<f64> {
    s(1800.0)
}
fn origin_name() -> Spanned<String> {
    s("origin".to_owned())
}

struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
}

impl Ctx<'_> {
    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn err(&self, span: Range<usize>, message: String) -> ScenarioError {
        ScenarioError {
            file: self.file.to_owned(),
            line: if span == (0..0) {
                0
            } else {
                self.line(span.start)
            },
            message,
        }
    }

    /// A capacity in Mbit/s: positive, finite.
    fn capacity(&self, field: &str, v: &Spanned<f64>) -> Result<f64, ScenarioError> {
        let x = *v.get_ref();
        if !x.is_finite() || x <= 0.0 {
            let what = if x < 0.0 { "negative" } else { "not positive" };
            return Err(self.err(
                v.span(),
                format!("{field}: capacity must be positive, got {x} ({what})"),
            ));
        }
        Ok(x * MBPS)
    }

    /// A duration or time in the given unit, non-negative, to microseconds.
    fn time(&self, field: &str, v: &Spanned<f64>, unit_us: f64) -> Result<u64, ScenarioError> {
        let x = *v.get_ref();
        if !x.is_finite() || x < 0.0 {
            return Err(self.err(v.span(), format!("{field}: must not be negative, got {x}")));
        }
        Ok((x * unit_us).round() as u64)
    }

    fn share(&self, field: &str, v: &Spanned<f64>) -> Result<f64, ScenarioError> {
        let x = *v.get_ref();
        if !(0.0..=1.0).contains(&x) {
            return Err(self.err(
                v.span(),
                format!("{field}: a share between 0 and 1, got {x}"),
            ));
        }
        Ok(x)
    }

    fn at_least_one(&self, field: &str, v: &Spanned<u32>) -> Result<u32, ScenarioError> {
        if *v.get_ref() == 0 {
            return Err(self.err(v.span(), format!("{field}: must be at least 1")));
        }
        Ok(*v.get_ref())
    }

    fn check(&self, raw: RawScenario) -> Result<Scenario, ScenarioError> {
        let origin = Origin {
            egress: self.capacity("origin.egress_mbps", &raw.origin.egress_mbps)?,
            latency_us: self.time("origin.latency_ms", &raw.origin.latency_ms, 1e3)?,
        };
        let size = *raw.release.size_mib.get_ref();
        if !size.is_finite() || size <= 0.0 {
            return Err(self.err(
                raw.release.size_mib.span(),
                format!("release.size_mib: must be positive, got {size}"),
            ));
        }
        let release = ReleaseSpec {
            bytes: (size * 1024.0 * 1024.0).round() as u64,
            changed_share: self.share("release.changed_share", &raw.release.changed_share)?,
            chunk_group: self.at_least_one("release.chunk_group", &raw.release.chunk_group)?,
            announce_us: self.time("release.announce_s", &raw.release.announce_s, 1e6)?,
        };
        let device = DeviceSettings {
            checkin_interval_us: self.time(
                "device.checkin_interval_s",
                &raw.device.checkin_interval_s,
                1e6,
            )?,
            peer_in_flight: self
                .at_least_one("device.peer_in_flight", &raw.device.peer_in_flight)?
                as usize,
            origin_in_flight: self
                .at_least_one("device.origin_in_flight", &raw.device.origin_in_flight)?
                as usize,
            slot_copy: self.capacity("device.slot_copy_mbps", &raw.device.slot_copy_mbps)?,
            idle_timeout_us: self.time("device.idle_timeout_s", &raw.device.idle_timeout_s, 1e6)?,
        };
        let mut scheduler = Config::default();
        let sch = &raw.scheduler;
        if let Some(v) = &sch.batch_max_chunks {
            scheduler.batch_max_chunks =
                self.at_least_one("scheduler.batch_max_chunks", v)? as usize;
        }
        if let Some(v) = sch.batch_max_bytes {
            scheduler.batch_max_bytes = v;
        }
        if let Some(v) = sch.timeout_floor_ms {
            scheduler.timeout_floor = v;
        }
        if let Some(v) = &sch.slow_factor {
            if *v.get_ref() == 0 {
                return Err(self.err(v.span(), "scheduler.slow_factor: must be at least 1".into()));
            }
            scheduler.slow_factor = *v.get_ref();
        }
        if let Some(v) = &sch.max_strikes {
            scheduler.max_strikes = self.at_least_one("scheduler.max_strikes", v)?;
        }
        if let Some(v) = &sch.max_copies {
            scheduler.max_copies = self.at_least_one("scheduler.max_copies", v)? as usize;
        }

        // Site classes: names, cohorts, links.
        let mut cohorts: Vec<String> = Vec::new();
        let mut sites = Vec::new();
        for (i, site) in raw.site.iter().enumerate() {
            let f = |name: &str| format!("site[{i}].{name}");
            let name = site.name.get_ref().clone();
            if raw.site[..i].iter().any(|o| o.name.get_ref() == &name) {
                return Err(self.err(
                    site.name.span(),
                    format!("{}: duplicate site name \"{name}\"", f("name")),
                ));
            }
            let cohort = match cohorts.iter().position(|c| c == &site.cohort) {
                Some(c) => c,
                None => {
                    cohorts.push(site.cohort.clone());
                    cohorts.len() - 1
                }
            };
            let up = *site.uplink_mbps.get_ref();
            if up == 0.0 {
                return Err(self.err(
                    site.uplink_mbps.span(),
                    format!(
                        "{}: site \"{name}\" has no route to the origin (its uplink carries 0 Mbit/s)",
                        f("uplink_mbps")
                    ),
                ));
            }
            let uplink_down = self.capacity(&f("uplink_mbps"), &site.uplink_mbps)?;
            let uplink_up = match &site.uplink_up_mbps {
                Some(v) => self.capacity(&f("uplink_up_mbps"), v)?,
                None => uplink_down,
            };
            let mut outages = Vec::new();
            for (j, o) in site.outage.iter().enumerate() {
                let g = |name: &str| format!("site[{i}].outage[{j}].{name}");
                let link = match o.link.get_ref().as_str() {
                    "uplink" => OutageLink::Uplink,
                    "lan" => OutageLink::Lan,
                    other => {
                        return Err(self.err(
                            o.link.span(),
                            format!("{}: \"uplink\" or \"lan\", got \"{other}\"", g("link")),
                        ));
                    }
                };
                let duration_us = self.time(&g("duration_s"), &o.duration_s, 1e6)?;
                if duration_us == 0 {
                    return Err(self.err(
                        o.duration_s.span(),
                        format!("{}: must be positive", g("duration_s")),
                    ));
                }
                outages.push(Outage {
                    link,
                    start_us: self.time(&g("start_s"), &o.start_s, 1e6)?,
                    duration_us,
                    share: self.share(&g("share"), &o.share)?,
                });
            }
            sites.push(SiteClass {
                name,
                count: self.at_least_one(&f("count"), &site.count)?,
                cohort,
                devices: site.devices,
                uplink_down,
                uplink_up,
                uplink_latency_us: self.time(
                    &f("uplink_latency_ms"),
                    &site.uplink_latency_ms,
                    1e3,
                )?,
                lan: self.capacity(&f("lan_mbps"), &site.lan_mbps)?,
                lan_latency_us: self.time(&f("lan_latency_ms"), &site.lan_latency_ms, 1e3)?,
                device_access: self.capacity(&f("device_mbps"), &site.device_mbps)?,
                peers: Vec::new(),
                outages,
            });
        }
        // Peers, once every site class is known (parents may name another class).
        for (i, site) in raw.site.iter().enumerate() {
            let mut peers = Vec::new();
            for (j, p) in site.peer.iter().enumerate() {
                let f = |name: &str| format!("site[{i}].peer[{j}].{name}");
                let pname = p.name.get_ref().clone();
                if site.peer[..j].iter().any(|o| o.name.get_ref() == &pname) {
                    return Err(self.err(
                        p.name.span(),
                        format!("{}: duplicate peer name \"{pname}\"", f("name")),
                    ));
                }
                let parent = self.parent(&raw.site, i, &f("parent"), &p.parent)?;
                let cache = *p.cache_gib.get_ref();
                if !cache.is_finite() || cache <= 0.0 {
                    return Err(self.err(
                        p.cache_gib.span(),
                        format!("{}: must be positive, got {cache}", f("cache_gib")),
                    ));
                }
                peers.push(PeerSpec {
                    name: pname,
                    upload: self.capacity(&f("upload_mbps"), &p.upload_mbps)?,
                    download: self.capacity(&f("download_mbps"), &p.download_mbps)?,
                    parent,
                    cache_bytes: (cache * (1u64 << 30) as f64) as u64,
                    prefetch: p.prefetch,
                    upstream_in_flight: self
                        .at_least_one(&f("upstream_in_flight"), &p.upstream_in_flight)?
                        as usize,
                    upstream_budget: match &p.upstream_mbps {
                        Some(v) => Some(self.capacity(&f("upstream_mbps"), v)?),
                        None => None,
                    },
                    holds_previous: p.holds_previous,
                });
            }
            sites[i].peers = peers;
        }
        // Every peer's chain of parents must end at the origin.
        for (i, site) in sites.iter().enumerate() {
            for (j, _) in site.peers.iter().enumerate() {
                let (mut c, mut p) = (i, j);
                for _ in 0..=raw.site.iter().map(|s| s.peer.len()).sum::<usize>() {
                    match sites[c].peers[p].parent {
                        Parent::Origin => break,
                        Parent::Local(q) => p = q,
                        Parent::Remote { class, peer } => (c, p) = (class, peer),
                    }
                }
                if sites[c].peers[p].parent != Parent::Origin {
                    let span = raw.site[i].peer[j].parent.span();
                    return Err(self.err(
                        span,
                        format!(
                            "site[{i}].peer[{j}].parent: peer \"{}\" of site \"{}\" has no route to the origin (its parents form a loop)",
                            site.peers[j].name, site.name
                        ),
                    ));
                }
            }
        }

        let mut waves = Vec::new();
        for (i, w) in raw.wave.iter().enumerate() {
            let f = |name: &str| format!("wave[{i}].{name}");
            let Some(cohort) = cohorts.iter().position(|c| c == w.cohort.get_ref()) else {
                return Err(self.err(
                    w.cohort.span(),
                    format!(
                        "{}: no site belongs to cohort \"{}\" (cohorts: {})",
                        f("cohort"),
                        w.cohort.get_ref(),
                        cohorts.join(", ")
                    ),
                ));
            };
            let pct = *w.percent.get_ref();
            if !(pct > 0.0 && pct <= 100.0) {
                return Err(self.err(
                    w.percent.span(),
                    format!("{}: between 0 (excluded) and 100, got {pct}", f("percent")),
                ));
            }
            waves.push(Wave {
                cohort,
                at_us: self.time(&f("at_s"), &w.at_s, 1e6)?,
                basis_points: ((pct * 100.0).round() as u16).clamp(1, 10_000),
            });
        }
        waves.sort_by_key(|w| w.at_us);

        let fa = &raw.faults;
        let slow_factor = *fa.slow_factor.get_ref();
        if !slow_factor.is_finite() || slow_factor < 1.0 {
            return Err(self.err(
                fa.slow_factor.span(),
                format!("faults.slow_factor: must be at least 1, got {slow_factor}"),
            ));
        }
        let faults = Faults {
            corrupt_peers: self.share("faults.corrupt_peers", &fa.corrupt_peers)?,
            corrupt_share: self.share("faults.corrupt_share", &fa.corrupt_share)?,
            withhold_peers: self.share("faults.withhold_peers", &fa.withhold_peers)?,
            withhold_share: self.share("faults.withhold_share", &fa.withhold_share)?,
            slow_peers: self.share("faults.slow_peers", &fa.slow_peers)?,
            slow_factor,
            churn_devices: self.share("faults.churn_devices", &fa.churn_devices)?,
            churn_offline_us: self.time("faults.churn_offline_s", &fa.churn_offline_s, 1e6)?,
            churn_within_us: self.time("faults.churn_within_s", &fa.churn_within_s, 1e6)?,
        };
        let max_hours = *raw.max_hours.get_ref();
        if !max_hours.is_finite() || max_hours <= 0.0 {
            return Err(self.err(
                raw.max_hours.span(),
                format!("max_hours: must be positive, got {max_hours}"),
            ));
        }
        Ok(Scenario {
            name: raw.name,
            description: raw.description,
            seed: raw.seed,
            max_time_us: (max_hours * 3600e6) as u64,
            origin,
            release,
            device,
            scheduler,
            sites,
            cohorts,
            waves,
            faults,
        })
    }

    fn parent(
        &self,
        sites: &[RawSite],
        class: usize,
        field: &str,
        v: &Spanned<String>,
    ) -> Result<Parent, ScenarioError> {
        let name = v.get_ref();
        if name == "origin" {
            return Ok(Parent::Origin);
        }
        let found = match name.split_once('/') {
            None => sites[class]
                .peer
                .iter()
                .position(|p| p.name.get_ref() == name)
                .map(Parent::Local),
            Some((site, peer)) => sites
                .iter()
                .position(|s| s.name.get_ref() == site)
                .and_then(|c| {
                    let p = sites[c]
                        .peer
                        .iter()
                        .position(|p| p.name.get_ref() == peer)?;
                    Some(if c == class {
                        Parent::Local(p)
                    } else {
                        Parent::Remote { class: c, peer: p }
                    })
                }),
        };
        found.ok_or_else(|| {
            self.err(
                v.span(),
                format!(
                    "{field}: no peer \"{name}\" (use \"origin\", a peer of this site, or \"SITE/PEER\")"
                ),
            )
        })
    }
}
