//! `simnet`: a deterministic discrete-event simulator of whole fleets (DESIGN.md §1, §5).
//!
//! It runs `ota-core`'s own state machines — the device's fetch [`Scheduler`], the site
//! cache's [`CachePolicy`], the director's [`decide`] and rollout buckets — unchanged, in
//! virtual time, over a flow-level network model:
//!
//! - [`scenario`]: the TOML scenario format, checked before anything runs (errors name the
//!   line and the field).
//! - [`net`]: links with capacity and latency, connections carrying queues of items, max-min
//!   fair sharing by progressive filling, recomputed per affected component.
//! - [`sim`]: the driver: check-ins, waves, devices, peers, the origin, faults.
//! - [`report`]: what was measured beside its lower bounds; `report.json`, `completion.csv`,
//!   SVG plots.
//!
//! Same scenario and seed, same `report.json`, byte for byte: the only randomness is a seeded
//! [`rng::SplitMix`], events are ordered by (time, insertion), and no hash-map iteration order
//! reaches the output.
//!
//! [`Scheduler`]: ota_core::fetch::Scheduler
//! [`CachePolicy`]: ota_core::cache::CachePolicy
//! [`decide`]: ota_core::director::decide

pub mod live;
pub mod net;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod sim;

use std::path::Path;

pub use report::Report;
pub use scenario::{Scenario, ScenarioError};

/// Run a scenario (and, if it has faults or outages, the same scenario without them, for the
/// delay they cause) and build the report.
pub fn simulate(sc: &Scenario, seed: u64) -> (Report, sim::Outcome) {
    let outcome = sim::run(sc, seed);
    let baseline = sc
        .has_disturbances()
        .then(|| sim::run(&sc.undisturbed(), seed));
    let report = report::build(sc, seed, &outcome, baseline.as_ref());
    (report, outcome)
}

/// Run a scenario and write the report files into `out`.
pub fn run_to_dir(sc: &Scenario, seed: u64, out: &Path) -> anyhow::Result<Report> {
    let (report, outcome) = simulate(sc, seed);
    report::write(out, &report, &outcome)?;
    Ok(report)
}
