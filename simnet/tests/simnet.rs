//! simnet's integration tests: small scenarios with exact (unaggregated) chunks, run in
//! virtual time in well under a second each.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use simnet::{Scenario, ScenarioError, simulate};

/// `sites` ships on 2 Mbit/s uplinks, `devices` devices and one cache each, `mib` MiB.
fn ships(sites: u32, devices: u32, mib: u32, extra: &str) -> String {
    format!(
        r#"
name = "test-ships"
[origin]
egress_mbps = 1000
[release]
size_mib = {mib}
{extra}
[device]
checkin_interval_s = 30
[[site]]
name = "ship"
count = {sites}
cohort = "fleet"
devices = {devices}
uplink_mbps = 2
uplink_latency_ms = 300
[[site.peer]]
name = "cache"
[[wave]]
cohort = "fleet"
at_s = 0
percent = 100
"#
    )
}

fn parse(text: &str) -> Scenario {
    Scenario::parse("test.toml", text).unwrap()
}

fn parse_err(text: &str) -> ScenarioError {
    Scenario::parse("bad.toml", text).unwrap_err()
}

#[test]
fn same_seed_same_report_byte_for_byte() {
    // Faults and churn exercise bans, timeouts and restarts, where order matters most.
    let text = format!(
        "{}\n[faults]\ncorrupt_peers = 0.5\nchurn_devices = 0.3\nchurn_within_s = 60\nchurn_offline_s = 30\n",
        ships(4, 6, 8, "")
    );
    let sc = parse(&text);
    let (a, _) = simulate(&sc, 7);
    let (b, _) = simulate(&sc, 7);
    assert_eq!(a.to_json(), b.to_json());
    let (c, _) = simulate(&sc, 8);
    assert_ne!(a.to_json(), c.to_json(), "the seed must matter");
}

#[test]
fn ship_fleet_meets_egress_and_fluid_bounds() {
    let sc = parse(&ships(3, 8, 16, ""));
    let (r, _) = simulate(&sc, 1);
    assert_eq!(r.devices.installed, 24);
    assert_eq!(r.integrity.wrong_installs, 0);
    assert_eq!(r.aggregation.chunk_group, 1);
    // Each ship's uplink carries the release once.
    assert_eq!(r.origin_egress.lower_bound_bytes, 3 * (16 << 20));
    let egress = r.origin_egress.ratio.unwrap();
    assert!((1.0..=1.05).contains(&egress), "egress ratio {egress}");
    let time = r.completion.ratio.unwrap();
    assert!((1.0..=1.3).contains(&time), "completion ratio {time}");
    assert_eq!(
        r.sources.origin_bytes, 0,
        "devices fetch from their cache only"
    );
}

#[test]
fn hostile_caches_are_caught_and_nothing_wrong_is_installed() {
    let text = r#"
name = "test-hostile"
[origin]
egress_mbps = 1000
[release]
size_mib = 8
[device]
checkin_interval_s = 0
[[site]]
name = "site"
count = 6
cohort = "fleet"
devices = 5
uplink_mbps = 20
[[site.peer]]
name = "a"
[[site.peer]]
name = "b"
parent = "a"
[[wave]]
cohort = "fleet"
at_s = 0
percent = 100
[faults]
corrupt_peers = 0.3
"#;
    let sc = parse(text);
    let (r, _) = simulate(&sc, 3);
    let i = &r.integrity;
    assert!(
        r.faults.corrupt_peers > 0,
        "the seed must pick some corrupt caches"
    );
    assert!(i.corrupt_chunks_offered > 0);
    assert_eq!(
        i.rejected_by_devices + i.rejected_by_caches + i.dropped_unverified,
        i.corrupt_chunks_offered
    );
    assert!(i.rejected_by_devices > 0);
    assert_eq!(i.wrong_installs, 0);
    assert_eq!(r.devices.installed, 30);
    assert!(r.sources.bans > 0);
    // The report gives the delay against the same fleet without faults: caches that corrupt
    // still use the uplink, and devices at a site whose caches all corrupt use the origin.
    let baseline = r.baseline.as_ref().unwrap();
    assert!(baseline.delay_s.unwrap() > 1.0, "{baseline:?}");
    assert!(r.sources.origin_bytes > 0);
    // Given which caches lie, the egress and the completion are close to what any scheduler
    // could do, and those bounds are still bounds (never above what was measured).
    let egress = r.origin_egress.fault_aware_ratio.unwrap();
    assert!(
        (1.0..=1.05).contains(&egress),
        "fault-aware egress ratio {egress}"
    );
    assert!(
        r.origin_egress.fault_aware_lower_bound_bytes.unwrap() > r.origin_egress.lower_bound_bytes
    );
    let time = r.completion.fault_aware_ratio.unwrap();
    assert!(
        (1.0..=1.3).contains(&time),
        "fault-aware completion ratio {time}"
    );
}

#[test]
fn delta_release_fetches_only_the_changed_share() {
    let sc = parse(&ships(2, 5, 16, "changed_share = 0.1"));
    let (r, _) = simulate(&sc, 1);
    assert_eq!(r.devices.installed, 10);
    assert_eq!(r.integrity.wrong_installs, 0);
    let share = r.release.changed_share;
    assert!((0.05..=0.15).contains(&share), "changed share {share}");
    // The origin sends about the changed bytes once per ship.
    let egress = r.origin_egress.bytes as f64 / (2.0 * r.release.unique_bytes as f64);
    assert!(
        (1.0..=1.05).contains(&egress),
        "egress / changed bytes {egress}"
    );
    // Devices copy the rest from their active slot.
    assert_eq!(
        r.sources.local_slot_bytes,
        10 * (r.release.bytes - r.release.unique_bytes)
    );
}

#[test]
fn outage_delays_completion_but_everything_installs() {
    // The uplinks go down 5 s in, for a minute; the outage table belongs to the site.
    let text = ships(2, 4, 4, "").replace(
        "[[wave]]",
        "[[site.outage]]\nlink = \"uplink\"\nstart_s = 5\nduration_s = 60\n[[wave]]",
    );
    let sc = parse(&text);
    assert!(sc.has_disturbances());
    let (r, _) = simulate(&sc, 1);
    assert_eq!(r.devices.installed, 8);
    assert_eq!(r.integrity.wrong_installs, 0);
    let b = r.baseline.as_ref().unwrap();
    assert!(r.completion.time_s.unwrap() > b.completion_s.unwrap() + 30.0);
    // The bound knows the outage too: still a lower bound.
    assert!(r.completion.fluid_bound_s >= 60.0);
    assert!(r.completion.ratio.unwrap() >= 1.0);
    // Devices lost their connections to the origin across the cut uplink, backed off and
    // stayed with their cache: the origin sent the release about once per ship, not once per
    // device.
    assert!(r.simulation.lost_connections > 0);
    assert_eq!(r.sources.bans, 0, "an outage bans nobody");
    let egress = r.origin_egress.ratio.unwrap();
    assert!((1.0..=1.05).contains(&egress), "egress ratio {egress}");
}

#[test]
fn report_files_are_written() {
    let dir = std::env::temp_dir().join(format!("simnet-test-{}", std::process::id()));
    let sc = parse(&ships(1, 3, 2, ""));
    simnet::run_to_dir(&sc, 1, &dir).unwrap();
    let json = std::fs::read_to_string(dir.join("report.json")).unwrap();
    assert!(json.contains("\"fluid_bound_s\""));
    let csv = std::fs::read_to_string(dir.join("completion.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 3);
    for svg in ["completion.svg", "egress.svg"] {
        let text = std::fs::read_to_string(dir.join(svg)).unwrap();
        assert!(text.starts_with("<svg"), "{svg}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

mod bad_input {
    use super::*;

    #[test]
    fn missing_field_names_line_and_field() {
        let text = ships(1, 1, 1, "").replace("devices = 1\n", "");
        let e = parse_err(&text);
        assert_eq!(e.to_string(), "bad.toml:10: missing field `devices`");
    }

    #[test]
    fn negative_capacity_names_line_and_field() {
        let text = ships(1, 1, 1, "").replace("uplink_mbps = 2", "uplink_mbps = -2");
        let e = parse_err(&text);
        assert_eq!(
            e.to_string(),
            "bad.toml:15: site[0].uplink_mbps: capacity must be positive, got -2 (negative)"
        );
    }

    #[test]
    fn site_without_route_to_the_origin() {
        let text = ships(1, 1, 1, "").replace("uplink_mbps = 2", "uplink_mbps = 0");
        let e = parse_err(&text);
        assert_eq!(
            e.to_string(),
            "bad.toml:15: site[0].uplink_mbps: site \"ship\" has no route to the origin (its uplink carries 0 Mbit/s)"
        );
        // Caches whose parents form a loop never reach the origin either.
        let text = ships(1, 1, 1, "").replace(
            "name = \"cache\"\n",
            "name = \"cache\"\nparent = \"other\"\n[[site.peer]]\nname = \"other\"\nparent = \"cache\"\n",
        );
        let e = parse_err(&text);
        assert_eq!(
            e.to_string(),
            "bad.toml:19: site[0].peer[0].parent: peer \"cache\" of site \"ship\" has no route to the origin (its parents form a loop)"
        );
    }

    #[test]
    fn wave_naming_a_missing_cohort() {
        let text =
            ships(1, 1, 1, "").replace("cohort = \"fleet\"\nat_s", "cohort = \"fleeet\"\nat_s");
        let e = parse_err(&text);
        assert_eq!(
            e.to_string(),
            "bad.toml:20: wave[0].cohort: no site belongs to cohort \"fleeet\" (cohorts: fleet)"
        );
    }

    #[test]
    fn unknown_field_is_refused() {
        let text =
            ships(1, 1, 1, "").replace("egress_mbps = 1000", "egress_mbps = 1000\negres = 1");
        let e = parse_err(&text);
        assert_eq!(
            e.to_string(),
            "bad.toml:5: unknown field `egres`, expected `egress_mbps` or `latency_ms`"
        );
    }

    #[test]
    fn the_command_line_refuses_before_simulating() {
        let dir = std::env::temp_dir().join(format!("simnet-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.toml");
        std::fs::write(
            &path,
            ships(1, 1, 1, "").replace("uplink_mbps = 2", "uplink_mbps = -2"),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_simnet"))
            .args(["run", path.to_str().unwrap(), "--out"])
            .arg(dir.join("out"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            stderr.contains("bad.toml:15: site[0].uplink_mbps: capacity must be positive"),
            "{stderr}"
        );
        assert!(!dir.join("out").exists(), "nothing simulated");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
