//! Scale benchmark: 100 000 devices across 1 000 sites finish a 1 GiB release.
//!
//! Prints wall time, events processed, peak memory (VmHWM), the simulated figures, and PASS or
//! MISS against 60 s of wall time. `SIMNET_CHUNK_GROUP=N` overrides the aggregation (real
//! chunks per simulated block) to measure its cost.

use std::time::Instant;

const SCENARIO: &str = r#"
name = "scale-100k"
description = "100 000 devices, 1 000 sites, 1 GiB"
seed = 1

[origin]
egress_mbps = 40000
latency_ms = 10

[release]
size_mib = 1024
chunk_group = CHUNK_GROUP

[device]
checkin_interval_s = 60

[[site]]
name = "office"
count = 1000
cohort = "all"
devices = 100
uplink_mbps = 20
uplink_latency_ms = 25
lan_mbps = 1000
device_mbps = 100

[[site.peer]]
name = "cache"
upload_mbps = 1000

[[wave]]
cohort = "all"
at_s = 0
percent = 100
"#;

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() -> anyhow::Result<()> {
    let group = std::env::var("SIMNET_CHUNK_GROUP").unwrap_or_else(|_| "512".to_owned());
    let text = SCENARIO.replace("CHUNK_GROUP", &group);
    let sc = simnet::Scenario::parse("scale.toml", &text)?;
    let started = Instant::now();
    let outcome = simnet::sim::run(&sc, 1);
    let wall = started.elapsed().as_secs_f64();
    let report = simnet::report::build(&sc, 1, &outcome, None);
    print!("{}", report.summary());
    println!(
        "scale: {} devices, {} sites, {} MiB, chunk_group {} ({} simulated blocks of ~{:.1} MiB)",
        sc.device_count(),
        sc.site_count(),
        outcome.release.bytes >> 20,
        outcome.release.chunk_group,
        outcome.release.blocks,
        outcome.release.bytes as f64 / outcome.release.blocks as f64 / 1048576.0
    );
    println!(
        "scale: wall {wall:.2} s, {} events ({:.2} M events/s), {} rate recomputations, peak RSS {} MiB",
        outcome.events,
        outcome.events as f64 / wall / 1e6,
        outcome.recomputes,
        peak_rss_kib().map_or("n/a".to_owned(), |k| (k / 1024).to_string())
    );
    println!(
        "scale: {} against 60 s of wall time",
        if wall < 60.0 && report.devices.installed == sc.device_count() {
            "PASS"
        } else {
            "MISS"
        }
    );
    Ok(())
}
