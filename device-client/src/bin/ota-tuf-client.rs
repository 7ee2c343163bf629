//! `ota-tuf-client`: the TUF client conformance command line over `ota-core`'s client
//! workflow (see `ota_device::conformance`).
//!
//! ```text
//! ota-tuf-client --metadata-dir DIR init TRUSTED_ROOT
//! ota-tuf-client --metadata-dir DIR --metadata-url URL refresh
//! ota-tuf-client --metadata-dir DIR --metadata-url URL --target-name NAME \
//!     --target-base-url URL --target-dir DIR download
//! ```
//!
//! Exit codes: 0 success, 1 failure (the reason on stderr), 2 usage.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ota_device::conformance;

/// A TUF client speaking the TUF conformance suite's client command line, built on the Enigm
/// OTA client workflow. Exit codes: 0 success, 1 failure, 2 usage.
#[derive(Debug, Parser)]
#[command(name = "ota-tuf-client", version)]
struct Cli {
    /// Directory of trusted metadata (non-versioned names).
    #[arg(long, global = true)]
    metadata_dir: Option<PathBuf>,
    /// Base URL of the repository's metadata.
    #[arg(long, global = true)]
    metadata_url: Option<String>,
    /// Target path to download.
    #[arg(long, global = true)]
    target_name: Option<String>,
    /// Base URL of the repository's targets.
    #[arg(long, global = true)]
    target_base_url: Option<String>,
    /// Directory to store verified targets in.
    #[arg(long, global = true)]
    target_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Store the trusted root (no request is made).
    Init {
        /// The initial trusted root.json.
        trusted_root: PathBuf,
    },
    /// Update the top-level metadata by the TUF client workflow.
    Refresh,
    /// Refresh, then download and verify one target into the target directory.
    Download,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let missing = |option: &str| {
        eprintln!("ota-tuf-client: {option} is required for this command");
        ExitCode::from(2)
    };
    let Some(metadata_dir) = cli.metadata_dir.as_deref() else {
        return missing("--metadata-dir");
    };
    let result = match &cli.command {
        Command::Init { trusted_root } => {
            conformance::init(metadata_dir, trusted_root).map(|version| {
                println!(
                    "initialised {} with trusted root version {version}",
                    metadata_dir.display()
                );
            })
        }
        Command::Refresh => {
            let Some(url) = cli.metadata_url.as_deref() else {
                return missing("--metadata-url");
            };
            conformance::refresh(metadata_dir, url).map(|report| {
                let [root, timestamp, snapshot, targets] = report.versions;
                println!(
                    "refreshed: root v{root}, timestamp v{timestamp}, snapshot v{snapshot}, \
                     targets v{targets}"
                );
            })
        }
        Command::Download => {
            let (Some(url), Some(name), Some(base), Some(dir)) = (
                cli.metadata_url.as_deref(),
                cli.target_name.as_deref(),
                cli.target_base_url.as_deref(),
                cli.target_dir.as_deref(),
            ) else {
                return missing(
                    "each of --metadata-url, --target-name, --target-base-url and --target-dir",
                );
            };
            conformance::download(metadata_dir, url, name, base, dir).map(|done| {
                let how = if done.cached {
                    "already present and verified"
                } else {
                    "downloaded and verified"
                };
                println!(
                    "{name}: {} bytes listed by {}, {how}: {}",
                    done.length,
                    done.role,
                    done.path.display()
                );
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ota-tuf-client: {error}");
            ExitCode::FAILURE
        }
    }
}
