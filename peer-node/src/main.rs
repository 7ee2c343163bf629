//! `ota-peer`: the site cache's command line.
//!
//! ```text
//! ota-peer serve [--config peer.toml] [--data DIR] [--listen ADDR] [--origin ADDR --origin-pin PIN]
//!                [--upstream ADDR=PIN]… [--upstream-rate BYTES/s] [--capacity BYTES]
//!                [--channel C]… [--no-prefetch] [--poll-secs N] [--prefetch-window HH:MM-HH:MM]…
//!                [--metrics ADDR] [--director-root FILE] [--ready-file F] [--json]
//! ota-peer status --data DIR [--json]
//! ota-peer pin --data DIR
//! ```
//!
//! Exit codes: 0 ok, 1 refusal, 2 usage or environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ota_peer::config::{Config, FileConfig, UpstreamEntry};

#[derive(Debug, Parser)]
#[command(name = "ota-peer", version, about = "Enigm OTA site cache")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve devices on the LAN from the cache.
    Serve(Box<ServeArgs>),
    /// Print what the peer has pulled and served (from DATA/stats.json).
    Status {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the peer's certificate pin and node public key (creating the key if needed).
    Pin {
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// TOML configuration file (flags override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory (chunks, index, node key).
    #[arg(long)]
    data: Option<PathBuf>,
    /// QUIC listen address.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// The origin's QUIC address (relays; data too unless --upstream is given).
    #[arg(long)]
    origin: Option<SocketAddr>,
    /// The origin's certificate pin.
    #[arg(long)]
    origin_pin: Option<String>,
    /// A parent to fetch data from, `ADDR=PIN` (repeat, in order of preference).
    #[arg(long = "upstream")]
    upstreams: Vec<String>,
    /// Upstream budget in bytes per second.
    #[arg(long)]
    upstream_rate: Option<u64>,
    /// Upstream burst in bytes (default: one second of budget, at least 1 MiB).
    #[arg(long)]
    upstream_burst: Option<u64>,
    /// Bytes the cache may hold on disk.
    #[arg(long)]
    capacity: Option<u64>,
    /// A channel to prefetch (repeat; default all).
    #[arg(long = "channel")]
    channels: Vec<String>,
    /// Do not prefetch releases.
    #[arg(long)]
    no_prefetch: bool,
    /// Seconds between polls of timestamp.json.
    #[arg(long)]
    poll_secs: Option<u64>,
    /// Prefetch only in this UTC window, `HH:MM-HH:MM` (repeat).
    #[arg(long = "prefetch-window")]
    prefetch_windows: Vec<String>,
    /// Seconds a mutable metadata file is served before refreshing it.
    #[arg(long)]
    metadata_ttl_secs: Option<u64>,
    /// Metrics and stats HTTP address.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// The director's root.json (offers are checked against it before private access).
    #[arg(long)]
    director_root: Option<PathBuf>,
    /// Connections served at once.
    #[arg(long)]
    max_connections: Option<usize>,
    /// Seconds a read or write with a device or an upstream may make no progress (default 30).
    #[arg(long)]
    stall_timeout_secs: Option<u64>,
    /// Run a libp2p discovery node on this TCP address, advertising the QUIC address and pin
    /// (mDNS on the LAN, Kademlia, release announcements).
    #[arg(long)]
    discovery: Option<SocketAddr>,
    /// `site` or `regional`: what the advertisement says this cache serves.
    #[arg(long)]
    discovery_role: Option<String>,
    /// A discovery node to dial at start, as a TCP multiaddr (repeat).
    #[arg(long)]
    bootstrap: Vec<String>,
    /// No mDNS (static bootstrap only).
    #[arg(long)]
    no_mdns: bool,
    /// Write `{"quic","pin","metrics","public_key","discovery"}` here once serving.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Logs as JSON lines.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Status { data, json } => status(&data, json),
        Command::Pin { data } => pin(&data),
    }
}

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("ota-peer: {message}");
    ExitCode::from(code)
}

fn serve(args: ServeArgs) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if args.json {
        builder.json().init();
    } else {
        builder.init();
    }
    let file = match &args.config {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => match toml::from_str::<FileConfig>(&text) {
                Ok(file) => file,
                Err(e) => return fail(2, format!("{}: {e}", path.display())),
            },
            Err(e) => return fail(2, format!("reading {}: {e}", path.display())),
        },
        None => FileConfig::default(),
    };
    let mut upstream = Vec::new();
    for entry in &args.upstreams {
        let Some((addr, pin)) = entry.split_once('=') else {
            return fail(2, format!("--upstream {entry:?} is not ADDR=PIN"));
        };
        let Ok(addr) = addr.parse() else {
            return fail(2, format!("--upstream {entry:?}: bad address"));
        };
        upstream.push(UpstreamEntry {
            addr,
            pin: pin.to_owned(),
        });
    }
    let overrides = FileConfig {
        data: args.data,
        listen: args.listen,
        metrics: args.metrics,
        origin: args.origin,
        origin_pin: args.origin_pin,
        upstream,
        capacity: args.capacity,
        upstream_rate: args.upstream_rate,
        upstream_burst: args.upstream_burst,
        max_upstream_in_flight: None,
        channels: args.channels,
        prefetch: args.no_prefetch.then_some(false),
        poll_secs: args.poll_secs,
        prefetch_windows: args.prefetch_windows,
        metadata_ttl_secs: args.metadata_ttl_secs,
        hot_bytes: None,
        stall_timeout_secs: args.stall_timeout_secs,
        max_connections: args.max_connections,
        director_root: args.director_root,
        discovery: args.discovery,
        discovery_role: args.discovery_role,
        bootstrap: args.bootstrap,
        mdns: args.no_mdns.then_some(false),
    };
    let config = match Config::resolve(file, overrides) {
        Ok(config) => config,
        Err(e) => return fail(2, e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(2, format!("starting the runtime: {e}")),
    };
    runtime.block_on(async move {
        let running = match ota_peer::start(config).await {
            Ok(running) => running,
            Err(e) => return fail(2, format!("{e:#}")),
        };
        let ready = serde_json::json!({
            "quic": running.server.local_addr().to_string(),
            "pin": running.pin().to_string(),
            "metrics": running.metrics_addr.map(|a| a.to_string()),
            "public_key": hex::encode(running.public_key),
            "discovery": running.discovery.as_ref().map(|d| d.listen_addrs().iter().map(ToString::to_string).collect::<Vec<_>>()),
        });
        if let Some(path) = &args.ready_file
            && let Err(e) = ota_peer::write_atomic(path, ready.to_string().as_bytes())
        {
            return fail(2, format!("{e:#}"));
        }
        println!("{ready}");
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => return fail(2, format!("installing the signal handler: {e}")),
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        running.shutdown(std::time::Duration::from_secs(5)).await;
        ExitCode::SUCCESS
    })
}

fn status(data: &std::path::Path, json: bool) -> ExitCode {
    let path = data.join("stats.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => {
            return fail(
                2,
                format!("reading {} (is the peer running?): {e}", path.display()),
            );
        }
    };
    let report: ota_peer::http::Report = match serde_json::from_str(&text) {
        Ok(r) => r,
        Err(e) => return fail(2, format!("{}: {e}", path.display())),
    };
    if json {
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    let c = &report.counters;
    println!("stored:   {} bytes", report.stored_bytes);
    println!(
        "pulled:   {} bytes in {} chunks (+{} index bytes), {} prefetched",
        c.bytes_up, c.chunks_up, c.index_bytes_up, c.prefetched
    );
    println!(
        "served:   {} bytes in {} blobs; {} missing",
        c.bytes_served, c.blobs_served, c.blobs_missing
    );
    println!("requests: {} hits, {} misses", c.hits, c.misses);
    println!(
        "refused:  {} corrupt from upstream, {} damaged on disk, {} private without grant",
        c.verification_failures, c.store_damaged, c.private_refused
    );
    println!("evicted:  {} chunks", c.evictions);
    println!("relayed:  {} ({} failed)", c.relayed, c.relay_failures);
    println!("as of:    {} (Unix seconds)", report.at);
    ExitCode::SUCCESS
}

fn pin(data: &std::path::Path) -> ExitCode {
    let key = match ota_peer::node_key(data) {
        Ok(key) => key,
        Err(e) => return fail(2, format!("{e:#}")),
    };
    match ota_net::quic::Identity::from_node_key(&key) {
        Ok(identity) => {
            println!("pin {}", identity.pin());
            println!("public_key {}", hex::encode(identity.public_key()));
            ExitCode::SUCCESS
        }
        Err(e) => fail(2, e),
    }
}
