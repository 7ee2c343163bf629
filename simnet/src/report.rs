//! What a run measured, beside the lower bounds it cannot beat, as `report.json`,
//! `completion.csv` and two SVG plots.
//!
//! **Origin egress bound.** Each site the release reaches needs the release's unique bytes
//! `U` (the chunks new since the previous release) from outside at least once: a site with
//! caches once, a site without caches once per device. Sites whose caches hang under another
//! site's cache (peering across sites) are fed by that site, so the origin owes `U` once per
//! *root* site, not per site.
//!
//! **Fluid bound on completion.** The network as a fluid (no chunking, no latency, perfect
//! pipelining): completion is at least the slowest of
//! - the source's upload: the origin sending the egress bound through its egress link, and a
//!   root site's cache sending `U` to every site under it through that site's WAN uplink;
//! - each site's intake: `U` through its WAN downlink, and all of the site's device demand
//!   (`devices × U`) through its LAN, and through the sum of its upload capacity (its caches'
//!   uploads plus the WAN downlink that also brings bytes in);
//! - each device's own download: from its offer, `U` through its access link (and the
//!   unchanged rest copied from its active slot).
//!
//! Each term counts from when its bytes can first move (the release announcement for sites
//! whose caches prefetch, else the first offer there). Devices' offers come from the check-in
//! schedule and the waves, so waiting for a wave is not counted against the network.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use plotters::prelude::*;
use serde::Serialize;

use crate::scenario::{OutageLink, Parent, Scenario};
use crate::sim::Outcome;

/// The whole report, as written to `report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The scenario's name.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// What was simulated as one unit.
    pub aggregation: Aggregation,
    /// The release.
    pub release: ReleaseFigures,
    /// Device counts.
    pub devices: DeviceFigures,
    /// Completion time against the fluid bound.
    pub completion: Completion,
    /// Origin egress against its bound.
    pub origin_egress: Egress,
    /// Corrupt chunks and installs.
    pub integrity: Integrity,
    /// Where the devices' bytes came from.
    pub sources: Sources,
    /// Cache counters, summed over peers.
    pub caches: Caches,
    /// Injected faults.
    pub faults: FaultFigures,
    /// The same scenario without faults and outages, when it has any.
    pub baseline: Option<Baseline>,
    /// Simulator work (deterministic: no wall time here).
    pub simulation: SimulationFigures,
    /// Per site.
    pub sites: Vec<SiteFigures>,
}

/// Aggregation in force.
#[derive(Debug, Clone, Serialize)]
pub struct Aggregation {
    /// Real chunks per simulated block (1: none).
    pub chunk_group: u32,
    /// Real chunks in the release.
    pub real_chunks: u64,
    /// Blocks the state machines saw.
    pub simulated_blocks: u64,
    /// What it means.
    pub note: String,
}

/// The release.
#[derive(Debug, Clone, Serialize)]
pub struct ReleaseFigures {
    /// Total bytes.
    pub bytes: u64,
    /// Bytes new since the previous release.
    pub unique_bytes: u64,
    /// `unique_bytes / bytes`.
    pub changed_share: f64,
}

/// Devices.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceFigures {
    /// All devices.
    pub total: u64,
    /// Offered the release.
    pub offered: u64,
    /// Installed it.
    pub installed: u64,
    /// Offered but not installed when the run ended.
    pub incomplete: u64,
    /// Schedulers that got stuck.
    pub stuck: u64,
}

/// Completion.
#[derive(Debug, Clone, Serialize)]
pub struct Completion {
    /// When the last offered device installed, seconds (none if some never did).
    pub time_s: Option<f64>,
    /// The fluid lower bound, seconds.
    pub fluid_bound_s: f64,
    /// Which term binds.
    pub bound_by: String,
    /// `time_s / fluid_bound_s`.
    pub ratio: Option<f64>,
    /// With faulty caches: the fluid bound given which caches lie or are slow (see
    /// `Bounds::compute`), seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault_aware_bound_s: Option<f64>,
    /// Its binding term.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault_aware_bound_by: Option<String>,
    /// `time_s / fault_aware_bound_s`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault_aware_ratio: Option<f64>,
    /// Median install time, seconds.
    pub p50_s: Option<f64>,
    /// 90th percentile.
    pub p90_s: Option<f64>,
    /// 99th percentile.
    pub p99_s: Option<f64>,
}

/// Origin egress.
#[derive(Debug, Clone, Serialize)]
pub struct Egress {
    /// Bytes the origin sent (corrupt, duplicate and cancelled parts included).
    pub bytes: u64,
    /// The lower bound.
    pub lower_bound_bytes: u64,
    /// `bytes / lower_bound_bytes`.
    pub ratio: Option<f64>,
    /// With faulty caches: the least the origin must send given which caches lie.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault_aware_lower_bound_bytes: Option<u64>,
    /// `bytes / fault_aware_lower_bound_bytes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault_aware_ratio: Option<f64>,
    /// Sites the release reached (an offered device or a prefetching cache).
    pub sites_reached: u64,
    /// Root sites: reached sites fed by the origin rather than by another site.
    pub root_sites: u64,
}

/// Integrity.
#[derive(Debug, Clone, Serialize)]
pub struct Integrity {
    /// Corrupt chunks peers sent.
    pub corrupt_chunks_offered: u64,
    /// Rejected by devices' verification.
    pub rejected_by_devices: u64,
    /// Rejected by caches' verification.
    pub rejected_by_caches: u64,
    /// Dropped before verification (cancelled, connection closed, device gone).
    pub dropped_unverified: u64,
    /// Installs whose content differed from the release. Must be 0.
    pub wrong_installs: u64,
}

/// Bytes by source kind.
#[derive(Debug, Clone, Serialize)]
pub struct Sources {
    /// From the active slot.
    pub local_slot_bytes: u64,
    /// From LAN peers.
    pub lan_peer_bytes: u64,
    /// From the origin.
    pub origin_bytes: u64,
    /// Verified after another copy already was.
    pub duplicate_bytes: u64,
    /// Sources banned (corrupt chunks).
    pub bans: u64,
    /// Sources marked slow.
    pub slow_marks: u64,
}

/// Cache counters.
#[derive(Debug, Clone, Serialize)]
pub struct Caches {
    /// Hits.
    pub hits: u64,
    /// Misses.
    pub misses: u64,
    /// Verified bytes pulled.
    pub bytes_up: u64,
    /// Corrupt chunks from upstream.
    pub corrupt_upstream: u64,
    /// Evictions.
    pub evictions: u64,
    /// Chunks only prefetch asked for.
    pub prefetched: u64,
}

/// Faults.
#[derive(Debug, Clone, Serialize)]
pub struct FaultFigures {
    /// Corrupting peers.
    pub corrupt_peers: u64,
    /// Withholding peers.
    pub withholding_peers: u64,
    /// Slow peers.
    pub slow_peers: u64,
    /// Chunks withheld.
    pub chunks_withheld: u64,
    /// Devices that dropped off once.
    pub churning_devices: u64,
    /// Outage windows (site × window).
    pub outage_windows: u64,
}

/// The undisturbed run.
#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    /// Its completion, seconds.
    pub completion_s: Option<f64>,
    /// Its origin egress, bytes.
    pub origin_egress_bytes: u64,
    /// How much later the disturbed run completed, seconds.
    pub delay_s: Option<f64>,
}

/// Simulator work.
#[derive(Debug, Clone, Serialize)]
pub struct SimulationFigures {
    /// Events processed.
    pub events: u64,
    /// Network component recomputations.
    pub rate_recomputations: u64,
    /// Timers asked for in the past (re-armed a millisecond later).
    pub past_timers: u64,
    /// Device connections lost to a cut link (the scheduler backs off and retries).
    pub lost_connections: u64,
    /// Virtual time at the end, seconds.
    pub end_s: f64,
    /// Whether the scenario's time limit stopped the run.
    pub time_limit_hit: bool,
}

/// One site.
#[derive(Debug, Clone, Serialize)]
pub struct SiteFigures {
    /// `CLASS-INDEX`.
    pub name: String,
    /// Devices.
    pub devices: u64,
    /// Offered.
    pub offered: u64,
    /// Installed.
    pub installed: u64,
    /// Last install, seconds.
    pub completion_s: Option<f64>,
    /// The site's fluid bound, seconds.
    pub fluid_bound_s: f64,
    /// `completion_s / fluid_bound_s`.
    pub completion_ratio: Option<f64>,
    /// Bytes its WAN downlink carried.
    pub uplink_bytes: u64,
    /// The least it had to carry.
    pub uplink_lower_bound_bytes: u64,
    /// `uplink_bytes / uplink_lower_bound_bytes`.
    pub uplink_ratio: Option<f64>,
    /// Verified bytes from LAN peers.
    pub lan_peer_bytes: u64,
    /// Verified bytes from the origin.
    pub origin_bytes: u64,
    /// Corrupt chunks its peers sent.
    pub corrupt_sent: u64,
    /// Corrupt chunks its devices rejected.
    pub corrupt_rejected: u64,
    /// Sources its devices banned.
    pub bans: u64,
    /// Sources its devices marked slow.
    pub slow_marks: u64,
}

/// Build the report of a run (and of its undisturbed baseline, if any).
pub fn build(sc: &Scenario, seed: u64, out: &Outcome, baseline: Option<&Outcome>) -> Report {
    let bounds = Bounds::compute(sc, out, false);
    let faulty = out.sites.iter().any(|s| {
        !s.slow_caches.is_empty()
            || (!s.corrupt_caches.is_empty() && sc.faults.corrupt_share >= 1.0)
    });
    let aware = faulty.then(|| Bounds::compute(sc, out, true));
    let secs = |us: u64| round3(us as f64 / 1e6);
    let offered: Vec<&crate::sim::DeviceOutcome> = out
        .devices
        .iter()
        .filter(|d| d.offered_at.is_some())
        .collect();
    let mut times: Vec<u64> = offered.iter().filter_map(|d| d.installed_at).collect();
    times.sort_unstable();
    let all_installed = times.len() == offered.len() && !offered.is_empty();
    let completion_us = if all_installed {
        times.last().copied()
    } else {
        None
    };
    let pct = |p: f64| -> Option<f64> {
        if times.is_empty() {
            return None;
        }
        let i = ((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1;
        Some(secs(times[i]))
    };
    let completion_s = completion_us.map(secs);
    let ratio = |a: f64, b: f64| if b > 0.0 { Some(round4(a / b)) } else { None };

    let mut site_figs = Vec::new();
    let (mut local, mut lan, mut origin, mut dup, mut bans, mut slow) = (0, 0, 0, 0, 0, 0);
    let (mut sent, mut rej_dev, mut rej_peer, mut withheld) = (0, 0, 0, 0);
    for (s, site) in out.sites.iter().enumerate() {
        local += site.bytes_by_kind[0];
        lan += site.bytes_by_kind[1];
        origin += site.bytes_by_kind[3];
        dup += site.duplicate_bytes;
        bans += site.bans;
        slow += site.slow_marks;
        sent += site.corrupt_sent;
        rej_dev += site.corrupt_rejected_by_devices;
        rej_peer += site.corrupt_rejected_by_peers;
        withheld += site.withheld;
        let devs: Vec<_> = out
            .devices
            .iter()
            .filter(|d| d.site as usize == s)
            .collect();
        let offered_here = devs.iter().filter(|d| d.offered_at.is_some()).count() as u64;
        let installed_here = devs.iter().filter(|d| d.installed_at.is_some()).count() as u64;
        let done = (installed_here == offered_here && offered_here > 0)
            .then(|| devs.iter().filter_map(|d| d.installed_at).max())
            .flatten()
            .map(secs);
        let b = &bounds.sites[s];
        site_figs.push(SiteFigures {
            name: site.name.clone(),
            devices: devs.len() as u64,
            offered: offered_here,
            installed: installed_here,
            completion_s: done,
            fluid_bound_s: round3(b.time_s),
            completion_ratio: done.and_then(|t| ratio(t, b.time_s)),
            uplink_bytes: site.wan_down_bytes.round() as u64,
            uplink_lower_bound_bytes: b.intake_bytes,
            uplink_ratio: ratio(site.wan_down_bytes, b.intake_bytes as f64),
            lan_peer_bytes: site.bytes_by_kind[1],
            origin_bytes: site.bytes_by_kind[3],
            corrupt_sent: site.corrupt_sent,
            corrupt_rejected: site.corrupt_rejected_by_devices,
            bans: site.bans,
            slow_marks: site.slow_marks,
        });
    }
    let baseline = baseline.map(|base| {
        let base_done = Report::completion_us(base).map(secs);
        Baseline {
            completion_s: base_done,
            origin_egress_bytes: base.origin_egress.round() as u64,
            delay_s: match (completion_s, base_done) {
                (Some(a), Some(b)) => Some(round3(a - b)),
                _ => None,
            },
        }
    });
    let k = out.release.chunk_group;
    Report {
        scenario: sc.name.clone(),
        seed,
        aggregation: Aggregation {
            chunk_group: k,
            real_chunks: out.release.real_chunks,
            simulated_blocks: out.release.blocks,
            note: if k == 1 {
                "none: every chunk is simulated".to_owned()
            } else {
                format!(
                    "each simulated block is {k} consecutive real chunks (lengths summed); the \
                     scheduler's batch_max_chunks is divided by {k}, its timeout_floor and the \
                     per-source in-flight counts scaled to blocks; changed_share is drawn per block"
                )
            },
        },
        release: ReleaseFigures {
            bytes: out.release.bytes,
            unique_bytes: out.release.unique_bytes,
            changed_share: round4(out.release.unique_bytes as f64 / out.release.bytes as f64),
        },
        devices: DeviceFigures {
            total: out.devices.len() as u64,
            offered: offered.len() as u64,
            installed: times.len() as u64,
            incomplete: (offered.len() - times.len()) as u64,
            stuck: out.devices.iter().filter(|d| d.stuck).count() as u64,
        },
        completion: Completion {
            time_s: completion_s,
            fluid_bound_s: round3(bounds.time_s),
            bound_by: bounds.bound_by.clone(),
            ratio: completion_s.and_then(|t| ratio(t, bounds.time_s)),
            fault_aware_bound_s: aware.as_ref().map(|a| round3(a.time_s)),
            fault_aware_bound_by: aware.as_ref().map(|a| a.bound_by.clone()),
            fault_aware_ratio: aware
                .as_ref()
                .and_then(|a| completion_s.and_then(|t| ratio(t, a.time_s))),
            p50_s: pct(0.5),
            p90_s: pct(0.9),
            p99_s: pct(0.99),
        },
        origin_egress: Egress {
            bytes: out.origin_egress.round() as u64,
            lower_bound_bytes: bounds.egress_bytes,
            ratio: ratio(out.origin_egress, bounds.egress_bytes as f64),
            fault_aware_lower_bound_bytes: aware.as_ref().map(|a| a.egress_bytes),
            fault_aware_ratio: aware
                .as_ref()
                .and_then(|a| ratio(out.origin_egress, a.egress_bytes as f64)),
            sites_reached: bounds.sites_reached,
            root_sites: bounds.root_sites,
        },
        integrity: Integrity {
            corrupt_chunks_offered: sent,
            rejected_by_devices: rej_dev,
            rejected_by_caches: rej_peer,
            dropped_unverified: sent.saturating_sub(rej_dev + rej_peer),
            wrong_installs: out.devices.iter().filter(|d| d.wrong_install).count() as u64,
        },
        sources: Sources {
            local_slot_bytes: local,
            lan_peer_bytes: lan,
            origin_bytes: origin,
            duplicate_bytes: dup,
            bans,
            slow_marks: slow,
        },
        caches: Caches {
            hits: out.cache.hits,
            misses: out.cache.misses,
            bytes_up: out.cache.bytes_up,
            corrupt_upstream: out.cache.corrupt_upstream,
            evictions: out.cache.evictions,
            prefetched: out.cache.prefetched,
        },
        faults: FaultFigures {
            corrupt_peers: out.faulty_peers.corrupt,
            withholding_peers: out.faulty_peers.withhold,
            slow_peers: out.faulty_peers.slow,
            chunks_withheld: withheld,
            churning_devices: out.faulty_peers.churning_devices,
            outage_windows: sc
                .sites
                .iter()
                .flat_map(|c| {
                    c.outages
                        .iter()
                        .map(|o| (o.share * f64::from(c.count)).ceil() as u64)
                })
                .sum(),
        },
        baseline,
        simulation: SimulationFigures {
            events: out.events,
            rate_recomputations: out.recomputes,
            past_timers: out.past_timers,
            lost_connections: out.lost_connections,
            end_s: secs(out.end_us),
            time_limit_hit: out.time_limit_hit,
        },
        sites: site_figs,
    }
}

impl Report {
    /// When the last offered device installed, if all did.
    fn completion_us(out: &Outcome) -> Option<u64> {
        let mut last = 0;
        let mut any = false;
        for d in out.devices.iter().filter(|d| d.offered_at.is_some()) {
            last = last.max(d.installed_at?);
            any = true;
        }
        any.then_some(last)
    }

    /// `report.json`: pretty JSON, byte-identical for the same scenario and seed.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// A few lines for the terminal.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let c = &self.completion;
        let e = &self.origin_egress;
        let opt = |x: Option<f64>| x.map_or("n/a".to_owned(), |v| format!("{v:.1}"));
        let optr = |x: Option<f64>| x.map_or("n/a".to_owned(), |v| format!("{v:.3}"));
        let _ = writeln!(
            s,
            "{}: {} devices, {} offered, {} installed, {} incomplete, {} wrong installs",
            self.scenario,
            self.devices.total,
            self.devices.offered,
            self.devices.installed,
            self.devices.incomplete,
            self.integrity.wrong_installs
        );
        let _ = writeln!(
            s,
            "completion {} s, fluid bound {:.1} s ({}), ratio {}",
            opt(c.time_s),
            c.fluid_bound_s,
            c.bound_by,
            optr(c.ratio)
        );
        if let Some(b) = c.fault_aware_bound_s {
            let _ = writeln!(
                s,
                "  given the faulty caches: fluid bound {b:.1} s ({}), ratio {}",
                c.fault_aware_bound_by.as_deref().unwrap_or(""),
                optr(c.fault_aware_ratio)
            );
        }
        let _ = writeln!(
            s,
            "origin egress {:.1} MiB, lower bound {:.1} MiB, ratio {}",
            e.bytes as f64 / 1048576.0,
            e.lower_bound_bytes as f64 / 1048576.0,
            optr(e.ratio)
        );
        if let Some(b) = e.fault_aware_lower_bound_bytes {
            let _ = writeln!(
                s,
                "  given the faulty caches: lower bound {:.1} MiB, ratio {}",
                b as f64 / 1048576.0,
                optr(e.fault_aware_ratio)
            );
        }
        let i = &self.integrity;
        let _ = writeln!(
            s,
            "corrupt chunks offered {}, rejected by devices {}, by caches {}, dropped unverified {}",
            i.corrupt_chunks_offered,
            i.rejected_by_devices,
            i.rejected_by_caches,
            i.dropped_unverified
        );
        if let Some(b) = &self.baseline {
            let _ = writeln!(
                s,
                "without faults/outages: completion {} s, egress {:.1} MiB, delay {} s",
                opt(b.completion_s),
                b.origin_egress_bytes as f64 / 1048576.0,
                opt(b.delay_s)
            );
        }
        let _ = writeln!(
            s,
            "{} events, {} lost connections, {} rate recomputations, aggregation: {} real chunks per block",
            self.simulation.events,
            self.simulation.lost_connections,
            self.simulation.rate_recomputations,
            self.aggregation.chunk_group
        );
        s
    }
}

/// Write `report.json`, `completion.csv`, `completion.svg` and `egress.svg` into `dir`.
pub fn write(dir: &Path, report: &Report, out: &Outcome) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = dir.join("report.json");
    std::fs::write(&json, report.to_json())
        .with_context(|| format!("writing {}", json.display()))?;
    let mut times: Vec<u64> = out.devices.iter().filter_map(|d| d.installed_at).collect();
    times.sort_unstable();
    let offered = report.devices.offered.max(1) as f64;
    let mut csv = String::from("time_s,installed,installed_share\n");
    for (i, t) in times.iter().enumerate() {
        let _ = writeln!(
            csv,
            "{:.3},{},{:.6}",
            *t as f64 / 1e6,
            i + 1,
            (i + 1) as f64 / offered
        );
    }
    let path = dir.join("completion.csv");
    std::fs::write(&path, csv).with_context(|| format!("writing {}", path.display()))?;
    plot_completion(&dir.join("completion.svg"), report, &times, offered)
        .context("plotting completion.svg")?;
    plot_egress(&dir.join("egress.svg"), report, &out.egress_bins)
        .context("plotting egress.svg")?;
    Ok(())
}

/// When `bytes` have crossed a link of `capacity` from `start`, given windows in which it
/// carries nothing.
fn finish(start: f64, bytes: f64, capacity: f64, windows: &[(f64, f64)]) -> f64 {
    let (mut t, mut left) = (start, bytes);
    for &(from, to) in windows {
        if to <= t {
            continue;
        }
        if from > t {
            let can = (from - t) * capacity;
            if can >= left {
                return t + left / capacity;
            }
            left -= can;
        }
        t = t.max(to);
    }
    t + left / capacity
}

fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

/// Time axis unit for a run of `end_s` seconds.
fn unit(end_s: f64) -> (f64, &'static str) {
    if end_s > 3.0 * 3600.0 {
        (3600.0, "hours")
    } else if end_s > 180.0 {
        (60.0, "minutes")
    } else {
        (1.0, "seconds")
    }
}

fn plot_completion(
    path: &Path,
    report: &Report,
    times: &[u64],
    offered: f64,
) -> anyhow::Result<()> {
    let end = times.last().map_or(1.0, |&t| t as f64 / 1e6);
    let x_end = end.max(report.completion.fluid_bound_s) * 1.05;
    let (div, label) = unit(x_end);
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{}: devices installed over time", report.scenario),
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..(x_end / div).max(1e-9), 0.0..100.0)?;
    chart
        .configure_mesh()
        .x_desc(format!("time ({label})"))
        .y_desc("installed (% of offered)")
        .draw()?;
    let mut points = vec![(0.0, 0.0)];
    for (i, t) in times.iter().enumerate() {
        let x = *t as f64 / 1e6 / div;
        points.push((x, i as f64 / offered * 100.0));
        points.push((x, (i + 1) as f64 / offered * 100.0));
    }
    chart
        .draw_series(LineSeries::new(points, &BLUE))?
        .label("installed")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    let bound = report.completion.fluid_bound_s / div;
    chart
        .draw_series(LineSeries::new(vec![(bound, 0.0), (bound, 100.0)], &RED))?
        .label("fluid bound")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}

fn plot_egress(path: &Path, report: &Report, bins: &[f64]) -> anyhow::Result<()> {
    let n = bins.len().max(1);
    let width = n.div_ceil(400).max(1);
    let (div, label) = unit(n as f64);
    let series: Vec<(f64, f64)> = bins
        .chunks(width)
        .enumerate()
        .map(|(i, c)| {
            let mbps = c.iter().sum::<f64>() * 8.0 / 1e6 / width as f64;
            ((i * width) as f64 / div, mbps)
        })
        .collect();
    let top = series.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-3) * 1.1;
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "{}: origin egress (total {:.1} MiB, bound {:.1} MiB)",
                report.scenario,
                report.origin_egress.bytes as f64 / 1048576.0,
                report.origin_egress.lower_bound_bytes as f64 / 1048576.0
            ),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..(n as f64 / div).max(1e-9), 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc(format!("time ({label})"))
        .y_desc("Mbit/s")
        .draw()?;
    chart.draw_series(LineSeries::new(series, &BLUE))?;
    root.present()?;
    Ok(())
}

/// The lower bounds of a run.
#[derive(Debug, Clone)]
pub struct Bounds {
    /// Completion, seconds.
    pub time_s: f64,
    /// The binding term.
    pub bound_by: String,
    /// Origin egress, bytes.
    pub egress_bytes: u64,
    /// Sites reached.
    pub sites_reached: u64,
    /// Root sites.
    pub root_sites: u64,
    /// Per site.
    pub sites: Vec<SiteBound>,
}

/// A site's bounds.
#[derive(Debug, Clone, Default)]
pub struct SiteBound {
    /// Completion, seconds.
    pub time_s: f64,
    /// Bytes that must come in over its WAN.
    pub intake_bytes: u64,
}

impl Bounds {
    /// The bounds for what the run offered to whom, and when.
    ///
    /// With `fault_aware`, the bounds also take the run's faulty caches into account, as any
    /// scheduler would have to: a cache that corrupts every chunk it sends (a
    /// `corrupt_share` of 1) provides nothing and uploads nothing useful, but still pulls the
    /// release in if it prefetches (the scenario's fault model: it fetches honestly and mangles what it
    /// sends), and an honest cache under it falls back to the origin; a site without an honest
    /// cache needs the release once per device over its WAN; a slow cache uploads at its
    /// reduced speed. (Corruption below a share of 1, withholding and churn are not counted:
    /// the bound stays a valid, weaker one.)
    pub fn compute(sc: &Scenario, out: &Outcome, fault_aware: bool) -> Self {
        let u = out.release.unique_bytes as f64;
        let max_block = f64::from(out.release.max_block);
        let local = (out.release.bytes - out.release.unique_bytes) as f64;
        let announce = sc.release.announce_us as f64 / 1e6;
        // Site index of the first site of each class.
        let mut first_site = Vec::new();
        let mut n = 0;
        for class in &sc.sites {
            first_site.push(n);
            n += class.count as usize;
        }
        let mut best = (0.0f64, String::from("nothing offered"));
        let mut consider = |t: f64, why: String| {
            if t > best.0 {
                best = (t, why);
            }
        };
        let mut sites = vec![SiteBound::default(); out.sites.len()];
        let mut reached = vec![false; out.sites.len()];
        let mut start = vec![f64::INFINITY; out.sites.len()];
        let mut offered = vec![0u64; out.sites.len()];
        for d in &out.devices {
            if let Some(at) = d.offered_at {
                let s = d.site as usize;
                offered[s] += 1;
                reached[s] = true;
                start[s] = start[s].min(at as f64 / 1e6);
            }
        }
        // The root site that feeds each site (itself unless its first peer hangs under
        // another site's peer).
        let mut root = (0..out.sites.len()).collect::<Vec<_>>();
        for (s, site) in out.sites.iter().enumerate() {
            let class = &sc.sites[site.class];
            if class.peers.iter().any(|p| p.prefetch) {
                reached[s] = true;
                start[s] = start[s].min(announce);
            }
            let (mut c, mut p, mut idx) = (site.class, 0usize, site.index as usize);
            if class.peers.is_empty() {
                continue;
            }
            for _ in 0..64 {
                match sc.sites[c].peers[p].parent {
                    Parent::Origin => break,
                    Parent::Local(q) => p = q,
                    Parent::Remote { class, peer } => {
                        idx %= sc.sites[class].count as usize;
                        (c, p) = (class, peer);
                    }
                }
            }
            root[s] = first_site[c] + idx;
        }
        let mut roots = std::collections::BTreeSet::new();
        let mut fed_by = vec![0u64; out.sites.len()];
        let mut egress = 0.0;
        let mut earliest = f64::INFINITY;
        for (s, site) in out.sites.iter().enumerate() {
            if !reached[s] {
                continue;
            }
            earliest = earliest.min(start[s]);
            let class = &sc.sites[site.class];
            let devices = offered[s] as f64;
            let corrupt = |j: usize| {
                fault_aware && sc.faults.corrupt_share >= 1.0 && site.corrupt_caches.contains(&j)
            };
            let honest = (0..class.peers.len()).any(|j| !corrupt(j));
            // Prefetching caches that pull the release from the origin themselves (a cache
            // under a corrupting one falls back to the origin).
            let from_origin = class
                .peers
                .iter()
                .enumerate()
                .filter(|(j, p)| {
                    p.prefetch
                        && match p.parent {
                            Parent::Origin => true,
                            // A cache under a corrupting one refetches from the origin.
                            Parent::Local(q) => corrupt(q) && !corrupt(*j),
                            Parent::Remote { .. } => false,
                        }
                })
                .count() as f64;
            // A corrupting cache under another one falls back to the origin too, but the
            // prefetches it had in flight when it did are dropped: at least the rest.
            let lossy: f64 = class
                .peers
                .iter()
                .enumerate()
                .filter(|(j, p)| {
                    p.prefetch && matches!(p.parent, Parent::Local(q) if corrupt(q) && corrupt(*j))
                })
                .map(|(_, p)| (u - p.upstream_in_flight as f64 * max_block).max(0.0))
                .sum();
            let first = !class.peers.is_empty() && roots.insert(root[s]);
            let intake = if class.peers.is_empty() {
                devices * u
            } else if fault_aware {
                let remote = class
                    .peers
                    .iter()
                    .filter(|p| p.prefetch && matches!(p.parent, Parent::Remote { .. }))
                    .count() as f64;
                let copies = (from_origin + remote).max(if honest { 1.0 } else { 0.0 });
                copies * u + lossy + if honest { 0.0 } else { devices * u }
            } else {
                u
            };
            sites[s].intake_bytes = intake.round() as u64;
            if class.peers.is_empty() {
                egress += intake;
            } else if fault_aware {
                let cached = if from_origin > 0.0 {
                    from_origin * u
                } else if first {
                    u
                } else {
                    0.0
                };
                egress += cached + lossy + if honest { 0.0 } else { devices * u };
            } else if first {
                egress += u;
            }
            if root[s] != s {
                fed_by[root[s]] += 1;
            }
            let upload: f64 = class
                .peers
                .iter()
                .enumerate()
                .map(|(j, p)| {
                    if corrupt(j) {
                        0.0
                    } else if fault_aware && site.slow_caches.contains(&j) {
                        p.upload / sc.faults.slow_factor
                    } else {
                        p.upload
                    }
                })
                .sum::<f64>()
                + class.uplink_down;
            // Outage windows of this site, by link: nothing crosses a link while it is down.
            let windows = |link: OutageLink| -> Vec<(f64, f64)> {
                let mut w: Vec<(f64, f64)> = class
                    .outages
                    .iter()
                    .filter(|o| {
                        o.link == link && f64::from(site.index) < o.share * f64::from(class.count)
                    })
                    .map(|o| {
                        let a = o.start_us as f64 / 1e6;
                        (a, a + o.duration_us as f64 / 1e6)
                    })
                    .collect();
                w.sort_by(|x, y| x.0.total_cmp(&y.0));
                w
            };
            let (wan_down, lan_down) = (windows(OutageLink::Uplink), windows(OutageLink::Lan));
            let mut why = format!("{}: WAN downlink", site.name);
            let mut t = finish(start[s], intake, class.uplink_down, &wan_down);
            let lan = finish(start[s], devices * u, class.lan, &lan_down);
            if lan > t {
                (t, why) = (lan, format!("{}: LAN", site.name));
            }
            let supply = start[s] + devices * u / upload;
            if supply > t {
                (t, why) = (supply, format!("{}: upload capacity", site.name));
            }
            for d in out.devices.iter().filter(|d| d.site as usize == s) {
                if let Some(at) = d.offered_at {
                    let own = at as f64 / 1e6
                        + (u / class.device_access).max(local / sc.device.slot_copy);
                    if own > t {
                        t = own;
                        why = format!("{}: device download", site.name);
                    }
                }
            }
            sites[s].time_s = t;
            consider(t, why);
        }
        for (r, &count) in fed_by.iter().enumerate() {
            if count > 0 {
                let class = &sc.sites[out.sites[r].class];
                consider(
                    start[r].min(earliest) + count as f64 * u / class.uplink_up,
                    format!("{}: WAN uplink to the sites it feeds", out.sites[r].name),
                );
            }
        }
        if earliest.is_finite() {
            consider(
                earliest + egress / sc.origin.egress,
                "origin egress".to_owned(),
            );
        }
        Self {
            time_s: best.0,
            bound_by: best.1,
            egress_bytes: egress.round() as u64,
            sites_reached: reached.iter().filter(|&&r| r).count() as u64,
            root_sites: roots.len() as u64,
            sites,
        }
    }
}
