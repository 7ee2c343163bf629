//! `simnet live --calibrate`: what `simnet run` predicts for the demo's first rollout, beside
//! what the real programs did.
//!
//! The scenario is the demo's topology: `--sites` sites of `--devices` devices and one cache
//! each, the cache's upstream budget `--uplink` bytes per second (a token bucket, as
//! `ota-peer --upstream-rate` has), loopback everywhere else (no link of the machine limits
//! anything), the release `--image-mib` MiB all new, the device's and the cache's real
//! settings (64 chunks in flight at each source and upstream), caches prefetching from the
//! moment they start, devices checking in together when the demo starts them (after their
//! initialisation, which the caches spend prefetching). Both sides count from the caches'
//! start. The demo's corrupting peer at site 1 is not
//! in the scenario (simnet picks corrupting caches at random, not by site).

use anyhow::{Context as _, Result};

use super::LiveOptions;

/// What one side measured for the first rollout.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    /// From the start of the rollout until the last device installed, seconds.
    pub completion_s: f64,
    /// Blob bytes the origin sent.
    pub origin_egress: u64,
}

/// The scenario for the demo's topology (see the module's documentation).
pub fn scenario(options: &LiveOptions, devices_at_s: f64) -> String {
    let budget_mbps = options.uplink as f64 * 8.0 / 1e6;
    format!(
        "name = \"live-calibration\"\n\
         description = \"simnet live's topology: {sites} sites, {devices} devices and a cache each\"\n\
         seed = 1\n\
         [origin]\negress_mbps = 10000\nlatency_ms = 0.05\n\
         [release]\nsize_mib = {mib}\nchanged_share = 1.0\nchunk_group = 1\nannounce_s = 0\n\
         [device]\ncheckin_interval_s = 0\npeer_in_flight = 64\norigin_in_flight = 64\n\
         [[site]]\nname = \"site\"\ncount = {sites}\ncohort = \"fleet\"\ndevices = {devices}\n\
         uplink_mbps = 10000\nuplink_latency_ms = 0.05\nlan_mbps = 10000\nlan_latency_ms = 0.05\n\
         device_mbps = 10000\n\
         [[site.peer]]\nname = \"cache\"\nprefetch = true\nparent = \"origin\"\n\
         upstream_in_flight = 64\nupstream_mbps = {budget_mbps}\n\
         [[wave]]\ncohort = \"fleet\"\nat_s = {devices_at_s:.3}\npercent = 100\n",
        sites = options.sites,
        devices = options.devices,
        mib = options.image_mib,
    )
}

/// Runs the simulator on the demo's topology, the devices starting `devices_at_s` after the
/// caches.
///
/// # Errors
/// When the scenario is refused or nothing completes.
pub fn predict(options: &LiveOptions, devices_at_s: f64) -> Result<Figures> {
    let sc = crate::Scenario::parse("live-calibration.toml", &scenario(options, devices_at_s))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (report, _) = crate::simulate(&sc, 1);
    Ok(Figures {
        completion_s: report
            .completion
            .time_s
            .context("the simulated rollout did not complete")?,
        origin_egress: report.origin_egress.bytes,
    })
}

/// Prints the two side by side with their ratio.
pub fn print(live: Figures, simulated: Figures, devices_at_s: f64) {
    let mib = |b: u64| b as f64 / 1_048_576.0;
    println!(
        "calibration, release 1 (simnet run on this topology vs the real programs; from the \
         caches' start, devices started {devices_at_s:.2} s later):"
    );
    println!(
        "  {:<22} {:>10} {:>10} {:>12}",
        "", "simulated", "live", "live/sim"
    );
    println!(
        "  {:<22} {:>10.2} {:>10.2} {:>12.2}",
        "completion (s)",
        simulated.completion_s,
        live.completion_s,
        live.completion_s / simulated.completion_s
    );
    println!(
        "  {:<22} {:>10.2} {:>10.2} {:>12.2}",
        "origin egress (MiB)",
        mib(simulated.origin_egress),
        mib(live.origin_egress),
        live.origin_egress as f64 / simulated.origin_egress.max(1) as f64
    );
    let within = |r: f64| (0.75..=1.25).contains(&r);
    println!(
        "  target +-25%: completion {}, origin egress {}",
        if within(live.completion_s / simulated.completion_s) {
            "met"
        } else {
            "MISSED"
        },
        if within(live.origin_egress as f64 / simulated.origin_egress.max(1) as f64) {
            "met"
        } else {
            "MISSED"
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_topology_is_a_valid_scenario_and_its_prediction_is_bounded_by_the_budget() {
        let options = LiveOptions {
            sites: 2,
            devices: 3,
            image_mib: 4,
            uplink: 2_000_000,
            dir: None,
            calibrate: true,
        };
        let predicted = predict(&options, 1.5).expect("a prediction");
        // Each cache takes the release once (no device goes to the origin), through its
        // 2 MB/s budget (less its burst), prefetching before the devices start at 1.5 s.
        let unique = 4u64 << 20;
        assert_eq!(predicted.origin_egress, 2 * unique);
        let budget_s = unique as f64 / 2e6;
        assert!(
            predicted.completion_s > 1.5 && predicted.completion_s < budget_s + 1.5,
            "{predicted:?}"
        );
    }
}
