//! `ota-device`: the update agent of the Enigm OTA system.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ota_device::boot;
use ota_device::progress::Progress;
use ota_device::state::{DeviceConfig, StateDir};
use ota_device::update::{self, PeerSpec, UpdateOptions};
use ota_device::verify::{self, VerifyArgs};
use serde_json::json;

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
    /// Create the device's state: its key (printed as hex for `ota-origin device enroll
    /// --public-key`), the pinned roots, empty slots.
    Init {
        /// The state directory (created).
        #[arg(long)]
        state: PathBuf,
        /// The image repository's trusted root.
        #[arg(long)]
        root: PathBuf,
        /// The director's root (pins the offer-signing key).
        #[arg(long)]
        director_root: PathBuf,
        /// The origin's QUIC address.
        #[arg(long)]
        origin: SocketAddr,
        /// The SHA-256 pin of the origin's certificate (hex).
        #[arg(long)]
        origin_pin: ota_net::quic::CertPin,
        /// The origin's HTTP mirror, e.g. http://127.0.0.1:8080 (one more chunk source).
        #[arg(long)]
        http: Option<String>,
        /// The handle enrollment gave (can be set later with `enrolled`).
        #[arg(long)]
        handle: Option<String>,
        /// Boots a new slot gets before it is reverted.
        #[arg(long, default_value_t = 3)]
        boot_tries: u8,
    },
    /// Record the handle `ota-origin device enroll` printed for this device.
    Enrolled {
        /// The state directory.
        #[arg(long)]
        state: PathBuf,
        /// The handle (64 hex characters).
        #[arg(long)]
        handle: String,
    },
    /// Check in and, if offered a release, verify, download and install it into the
    /// inactive slot (pending its boot check).
    Update {
        /// The state directory.
        #[arg(long)]
        state: PathBuf,
        /// A LAN peer as ADDR=PIN (repeatable).
        #[arg(long = "peer", value_parser = parse_peer)]
        peers: Vec<PeerSpec>,
        /// Find site caches on the LAN by libp2p mDNS (and `--bootstrap` nodes).
        #[arg(long)]
        discover: bool,
        /// A discovery node to dial, as a TCP multiaddr (repeatable; implies discovery
        /// through it, without mDNS unless `--discover`).
        #[arg(long)]
        bootstrap: Vec<ota_net::discovery::libp2p::Multiaddr>,
        /// Milliseconds to wait for discovery to find a cache before the download starts.
        #[arg(long, default_value_t = 2000)]
        discover_wait_ms: u64,
        /// Check in once and exit (the default; kept for scripts that say so).
        #[arg(long)]
        once: bool,
        /// JSON lines on stdout.
        #[arg(long)]
        json: bool,
    },
    /// The slot state, the installed release and what the last update did and why.
    Status {
        /// The state directory.
        #[arg(long)]
        state: PathBuf,
        /// JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// The simulated bootloader and health check: boots a pending slot (spending a try) and
    /// marks it good, or with `--fail` records a failed check (reverting once the tries are
    /// spent).
    BootCheck {
        /// The state directory.
        #[arg(long)]
        state: PathBuf,
        /// The health check fails.
        #[arg(long)]
        fail: bool,
        /// JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Choose the attestation evidence provider (kept in device.json): with one, every
    /// check-in carries evidence bound to its nonce, the handle and the connection. An Android
    /// Keystore provider plugs in at `ota_device::attest::ProviderConfig`.
    Attestation {
        /// The state directory.
        #[arg(long)]
        state: PathBuf,
        /// `none` (no evidence; the default) or `software` (FOR TESTS AND DEMOS ONLY: its CA
        /// keys are plain files, so it proves nothing about the hardware).
        #[arg(long, value_parser = ["none", "software"])]
        provider: String,
        /// The CA directory `ota-device software-ca` made (with `--provider software`).
        #[arg(long)]
        software_ca: Option<PathBuf>,
    },
    /// Make a software attestation CA directory, FOR TESTS AND DEMOS ONLY; prints the path
    /// of its root.pem (for the origin's `attestation.roots`).
    SoftwareCa {
        /// The directory (created).
        #[arg(long)]
        out: PathBuf,
        /// The CA's name (in its certificates' subjects).
        #[arg(long, default_value = "enigm-ota test attestation")]
        name: String,
    },
    /// Verify a file against signed metadata, offline (for auditors).
    Verify(VerifyArgs),
}

fn parse_peer(text: &str) -> Result<PeerSpec, String> {
    let (addr, pin) = text
        .split_once('=')
        .ok_or("expected ADDR=PIN, e.g. 127.0.0.1:4433=<64 hex>")?;
    Ok(PeerSpec {
        addr: addr.parse().map_err(|e| format!("{addr}: {e}"))?,
        pin: pin.parse().map_err(|e| format!("{pin}: {e}"))?,
    })
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Verify(args) => verify::run(&args),
        Command::Init {
            state,
            root,
            director_root,
            origin,
            origin_pin,
            http,
            handle,
            boot_tries,
        } => report(init(
            state,
            root,
            director_root,
            origin,
            origin_pin,
            http,
            handle,
            boot_tries,
        )),
        Command::Enrolled { state, handle } => report((|| {
            let mut dir = StateDir::open(&state)?;
            dir.config.handle = Some(parse_handle(&handle)?);
            dir.save_config()?;
            println!("{handle}");
            Ok(())
        })()),
        Command::Update {
            state,
            peers,
            discover,
            bootstrap,
            discover_wait_ms,
            once: _,
            json,
        } => run_update(
            state,
            UpdateOptions {
                peers,
                discover,
                bootstrap,
                discover_wait: std::time::Duration::from_millis(discover_wait_ms),
                ..UpdateOptions::default()
            },
            json,
        ),
        Command::Status { state, json } => report(boot::status(&state, json)),
        Command::Attestation {
            state,
            provider,
            software_ca,
        } => report(ota_device::attest::configure(
            &state,
            &provider,
            software_ca.as_deref(),
        )),
        Command::SoftwareCa { out, name } => {
            report(ota_device::attest::make_software_ca(&out, &name))
        }
        Command::BootCheck { state, fail, json } => match boot::boot_check(&state, !fail, json) {
            Ok(code) => ExitCode::from(code),
            Err(error) => {
                eprintln!("ota-device: {error:#}");
                ExitCode::from(2)
            }
        },
    }
}

#[allow(clippy::too_many_arguments)]
fn init(
    state: PathBuf,
    root: PathBuf,
    director_root: PathBuf,
    origin: SocketAddr,
    origin_pin: ota_net::quic::CertPin,
    http: Option<String>,
    handle: Option<String>,
    boot_tries: u8,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let root = std::fs::read(&root).with_context(|| format!("{}", root.display()))?;
    let director =
        std::fs::read(&director_root).with_context(|| format!("{}", director_root.display()))?;
    // Refuse roots that do not verify against themselves before keeping them.
    ota_core::tuf::client::Updater::new(Default::default(), &root, Default::default())
        .context("the image repository root")?;
    let director_env =
        ota_core::tuf::metadata::Envelope::parse("root", "director-root.json", &director, 1 << 20)
            .context("the director root")?;
    let director_role: ota_core::tuf::metadata::Root =
        director_env.role().context("the director root")?;
    director_role
        .verify_role("root", "root", &director_env)
        .context("the director root")?;
    let handle = handle.as_deref().map(parse_handle).transpose()?;
    let config = DeviceConfig {
        origin,
        origin_pin: origin_pin.0,
        http,
        handle,
        boot_tries: boot_tries.max(1),
        attestation: Default::default(),
    };
    let (_, public) = StateDir::init(&state, &root, &director, config)?;
    println!("{}", hex::encode(public));
    Ok(())
}

fn parse_handle(text: &str) -> anyhow::Result<ota_core::director::DeviceHandle> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut bytes)
        .map_err(|e| anyhow::anyhow!("handle {text:?}: {e}"))?;
    Ok(ota_core::director::DeviceHandle(bytes))
}

fn run_update(state: PathBuf, options: UpdateOptions, json: bool) -> ExitCode {
    let progress = if json {
        Progress::json()
    } else {
        Progress::terminal()
    };
    let dir = match StateDir::open(&state) {
        Ok(dir) => dir,
        Err(error) => {
            // No state directory: nothing to record into; the report goes to stdout.
            if json {
                println!(
                    "{}",
                    json!({ "event": "done", "outcome": "failed", "error_class": "state",
                            "reason": error.to_string() })
                );
            }
            eprintln!("ota-device: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ota-device: cannot start the runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let (report, result) = runtime.block_on(update::run(&dir, &options, &progress));
    progress.finish();
    if json {
        let mut line = serde_json::to_value(&report).unwrap_or_default();
        if let Some(obj) = line.as_object_mut() {
            obj.insert("event".into(), "done".into());
        }
        println!("{line}");
    }
    match result {
        Ok(()) => {
            if !json {
                match report.outcome.as_str() {
                    "no_offer" => println!(
                        "no update: {}",
                        report.reason.as_deref().unwrap_or("no offer")
                    ),
                    _ => println!(
                        "release {} installed in slot {:?}, pending its boot check ({})",
                        report.release.map_or(0, |r| r.0),
                        report.slot.unwrap_or(ota_core::install::Slot::B),
                        boot::bytes_summary(&report.bytes_by_kind)
                    ),
                }
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("ota-device: {error}");
            for (name, reason) in &report.banned {
                eprintln!("ota-device: banned {name}: {reason}");
            }
            ExitCode::from(error.exit_code())
        }
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ota-device: {error:#}");
            ExitCode::from(2)
        }
    }
}
