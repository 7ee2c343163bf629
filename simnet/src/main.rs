//! `simnet run SCENARIO.toml [--seed N] [--out DIR]`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};

/// Fleet-scale OTA simulator: runs ota-core's fetch scheduler, cache policy and director
/// unchanged, in virtual time, over a flow-level network model.
#[derive(Debug, Parser)]
#[command(name = "simnet", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Simulate a scenario and write report.json, completion.csv, completion.svg and
    /// egress.svg.
    ///
    /// The scenario (TOML; see simnet/README.md and simnet/scenarios/) describes the origin,
    /// the release (size, share changed since the previous release), site classes (count,
    /// devices, WAN/LAN/device link capacities and latencies, caches and their parents,
    /// outage windows), rollout waves per cohort, and faults (corrupting, withholding or slow
    /// caches, device churn). It is checked before the run; errors name the line and field.
    ///
    /// The same scenario and seed give a byte-identical report.json. Exit codes: 0 ok (also
    /// when the report shows failures), 2 bad scenario or I/O error.
    Run {
        /// The scenario file.
        scenario: PathBuf,
        /// Seed for every random draw (default: the scenario's `seed`, else 1).
        #[arg(long)]
        seed: Option<u64>,
        /// Where to write the report (default: ./simnet-out/NAME).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The whole system as real processes on loopback: the live demo.
    ///
    /// Makes the authorities' keys (on SoftHSM2 tokens when SoftHSM2 is installed, as
    /// development key files otherwise, and says which), holds the root ceremony with
    /// ota-sign, starts an ota-origin, one ota-peer per site and the devices (ota-device),
    /// publishes a release (two operators approve, the authorities sign), rolls it out, then
    /// a delta release in two waves. Site 1 also has a deliberately corrupting peer. Ends with
    /// a table per device and per site; exit 0 only if every device runs the signed image.
    /// The programs must be built next to simnet (cargo build --release --workspace --bins).
    Live {
        /// Sites, each with one site cache.
        #[arg(long, default_value_t = 2)]
        sites: usize,
        /// Devices per site.
        #[arg(long, default_value_t = 3)]
        devices: usize,
        /// Size of the system image in MiB.
        #[arg(long, default_value_t = 24)]
        image_mib: usize,
        /// Each site's uplink, bytes per second (its cache's upstream budget).
        #[arg(long, default_value_t = 8_000_000)]
        uplink: u64,
        /// Keep every file here instead of a temporary directory.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// After release 1, print simnet's prediction for this topology (completion time,
        /// origin egress) beside the live figures, with their ratio.
        #[arg(long)]
        calibrate: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Live {
            sites,
            devices,
            image_mib,
            uplink,
            dir,
            calibrate,
        } => {
            let options = simnet::live::LiveOptions {
                sites,
                devices,
                image_mib,
                uplink,
                dir,
                calibrate,
            };
            match simnet::live::run_live(&options) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Run {
            scenario,
            seed,
            out,
        } => {
            let sc = match simnet::Scenario::load(&scenario) {
                Ok(sc) => sc,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let seed = seed.unwrap_or(sc.seed);
            let out = out.unwrap_or_else(|| PathBuf::from("simnet-out").join(&sc.name));
            let started = Instant::now();
            match simnet::run_to_dir(&sc, seed, &out) {
                Ok(report) => {
                    print!("{}", report.summary());
                    println!(
                        "wall time {:.2} s; report in {}",
                        started.elapsed().as_secs_f64(),
                        out.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
    }
}
