//! `ota-device`: the update agent of the Enigm OTA system.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ota_device::verify::{self, VerifyArgs};

/// The update agent of the Enigm OTA system. Exit codes: 0 ok, 1 verification or policy
/// refusal (with the reason), 2 usage or environment error.
#[derive(Debug, Parser)]
#[command(name = "ota-device", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Verify a file against signed metadata, offline (for auditors).
    Verify(VerifyArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Verify(args) => verify::run(&args),
    }
}
