//! `ota-origin`: the repository and director of the Enigm OTA system.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use ota_core::director::DeviceHandle;
use ota_core::rollout::{Command as StageCommand, HealthPolicy};
use ota_core::time::UnixTime;
use ota_core::tuf::enigm::{Channel, ReleaseNumber};
use ota_core::tuf::metadata::{Envelope, Root};
use ota_net::quic::{Identity, NodeKey};
use ota_net::server::{Server, ServerConfig};
use ota_origin::commands::{self, CreateRelease, Refused};
use ota_origin::lifecycle::{self, LifecycleError};
use ota_origin::repository::RegisterError;
use ota_origin::serve::{OriginHandler, timestamp_task};
use ota_origin::service::Origin;
use ota_origin::state::{DataDir, OriginConfig};
use ota_origin::store::{CatalogError, MetadataFile, NewDevice};

/// The repository and director of the Enigm OTA system.
///
/// The origin ingests builds into draft releases and writes signing requests for the two
/// signing authorities (it holds no offline key); imports their signatures, checking the result
/// as a device would; runs the validation gates; governs rollouts; and serves the repository
/// over QUIC (`enigm-ota/1`) and HTTP. Exit codes: 0 ok, 1 refusal (with the reason),
/// 2 usage or environment error.
#[derive(Debug, Parser)]
#[command(name = "ota-origin", version)]
struct Cli {
    #[command(subcommand)]
    command: Top,
    /// Log format.
    #[arg(long, global = true, value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
}

#[derive(Debug, Subcommand)]
enum Top {
    /// Create the origin's online keys (snapshot, timestamp, director, fleet handle, QUIC node)
    /// and print their public halves: the root ceremony lists them in root and director root.
    Keys(KeysArgs),
    /// Initialise a data directory with the trusted root and director root from the ceremony.
    Init(InitArgs),
    /// Release lifecycle: create, register, validate, promote, halt, resume, revoke, list.
    #[command(subcommand)]
    Release(ReleaseCmd),
    /// Device enrollment: enroll, list, revoke.
    #[command(subcommand)]
    Device(DeviceCmd),
    /// Site peers allowed to relay devices' check-ins and reports: enroll, list, revoke.
    #[command(subcommand)]
    Peer(PeerCmd),
    /// Serve the repository and director over QUIC, the TUF mirror over HTTP and the admin API.
    Serve(ServeArgs),
    /// Verify the origin's audit log (hash chain, order, completeness, signatures).
    #[command(subcommand)]
    Audit(AuditCmd),
}

#[derive(Debug, Subcommand)]
enum AuditCmd {
    /// Check every entry of DATA/audit.jsonl; exit 1 naming each problem.
    Verify(DataArg),
}

#[derive(Debug, Args)]
struct DataArg {
    /// The origin's data directory.
    #[arg(long)]
    data: PathBuf,
}

#[derive(Debug, Args)]
struct InitArgs {
    #[command(flatten)]
    data: DataArg,
    /// The image repository's root (signed by its root threshold), listing this origin's
    /// snapshot and timestamp keys.
    #[arg(long)]
    root: PathBuf,
    /// The director's root, whose targets role is this origin's director key.
    #[arg(long)]
    director_root: PathBuf,
    /// Catalog: a SQLite path inside the data dir (default) or a postgres:// URL.
    #[arg(long, default_value = "catalog.sqlite")]
    catalog: String,
    /// Blobs: a directory inside the data dir (default) or an s3://bucket/prefix URL.
    #[arg(long, default_value = "blobs")]
    blobs: String,
}

#[derive(Debug, Args)]
struct ReleaseId {
    #[command(flatten)]
    data: DataArg,
    /// The release channel, e.g. stable.
    #[arg(long)]
    channel: String,
    /// The release number (rises per channel).
    #[arg(long)]
    release: u64,
}

#[derive(Debug, Subcommand)]
enum ReleaseCmd {
    /// Ingest a build into a draft release and write its signing requests (requests/C/N/) for
    /// the release authority (release.request.json) and the manifest authority
    /// (targets.request.json).
    Create(CreateArgs),
    /// Import the signed release and targets metadata, verify them as a device would, and
    /// publish them with a new snapshot and timestamp.
    Register(RegisterArgs),
    /// Run the validation gates (every chunk re-hashed, metadata checked from a device's point
    /// of view, compatibility and policy) and move the release to validation.
    Validate(ValidateArgs),
    /// Widen a rollout: a percentage of the fleet, stable (everyone), or security (everyone at
    /// once; the manifest must say security).
    Promote(PromoteArgs),
    /// Stop offering the release to anyone new.
    Halt(HaltArgs),
    /// Resume a halted release where it stopped.
    Resume(ReleaseId),
    /// Withdraw the release for good.
    Revoke(HaltArgs),
    /// List releases with their stage and install reports.
    List(ListArgs),
}

#[derive(Debug, Args)]
struct CreateArgs {
    #[command(flatten)]
    id: ReleaseId,
    /// The version shown to people, e.g. 2026.11.2.
    #[arg(long)]
    version: String,
    /// An artifact as SLOT=PATH (e.g. system=build/system.img); repeat for several slots,
    /// installed all or nothing.
    #[arg(long = "artifact", required = true)]
    artifacts: Vec<String>,
    /// A device model the release is built for; repeat for several.
    #[arg(long = "model", required = true)]
    models: Vec<String>,
    /// Progress and the result as JSON lines on stdout.
    #[arg(long)]
    json: bool,
    /// Mark as a security release.
    #[arg(long)]
    security: bool,
    /// The lowest installed release this one upgrades from.
    #[arg(long)]
    min_installed: Option<u64>,
    /// Halt the rollout when more than this percentage of install reports fail.
    #[arg(long, default_value_t = 5.0)]
    failure_threshold: f64,
    /// Reports needed before the failure rate counts.
    #[arg(long, default_value_t = 20)]
    min_sample: u64,
    /// Days the release and targets metadata stay valid.
    #[arg(long, default_value_t = 90)]
    expires_days: i64,
    /// Mark the artifact of this slot private (its signed target says
    /// `custom.enigm.private: true`; its chunks go only to devices offered the release, on
    /// the connection they checked in on); repeat for several.
    #[arg(long = "private", value_name = "SLOT")]
    private: Vec<String>,
}

#[derive(Debug, Args)]
struct RegisterArgs {
    #[command(flatten)]
    id: ReleaseId,
    /// The release metadata signed by the release authority.
    #[arg(long)]
    signed_release: PathBuf,
    /// The targets metadata signed by the manifest authority.
    #[arg(long)]
    signed_targets: PathBuf,
}

#[derive(Debug, Args)]
struct PromoteArgs {
    #[command(flatten)]
    id: ReleaseId,
    /// Offer to this percentage of the fleet (0.01 to 99.99).
    #[arg(long, conflicts_with_all = ["stable", "security"])]
    percent: Option<f64>,
    /// Offer to every eligible device.
    #[arg(long, conflicts_with = "security")]
    stable: bool,
    /// Offer to every eligible device at once, as a security release.
    #[arg(long)]
    security: bool,
}

#[derive(Debug, Args)]
struct HaltArgs {
    #[command(flatten)]
    id: ReleaseId,
    /// Why, for the audit trail and the admin API.
    #[arg(long)]
    reason: Option<String>,
}

#[derive(Debug, Args)]
struct ValidateArgs {
    #[command(flatten)]
    id: ReleaseId,
    /// Progress and the result as JSON lines on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ListArgs {
    #[command(flatten)]
    data: DataArg,
    /// Only this channel.
    #[arg(long)]
    channel: Option<String>,
    /// JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum DeviceCmd {
    /// Enroll a device by its Ed25519 public key; prints its handle.
    Enroll(EnrollArgs),
    /// List enrolled devices.
    List(ListArgs),
    /// Revoke a device's enrollment (by handle or public key).
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
struct KeysArgs {
    #[command(flatten)]
    data: DataArg,
    /// Generate the snapshot, timestamp, director and audit keys on a PKCS#11 token through
    /// this module (e.g. /usr/lib/softhsm/libsofthsm2.so) instead of seed files, and record
    /// their `pkcs11:` URIs in DATA/keys/online.json. The PIN comes from OTA_PKCS11_PIN, or
    /// a prompt on a terminal.
    #[arg(long, requires = "token")]
    pkcs11: Option<PathBuf>,
    /// The label of the token to generate the keys on (with --pkcs11).
    #[arg(long, requires = "pkcs11")]
    token: Option<String>,
}

#[derive(Debug, Subcommand)]
enum PeerCmd {
    /// Allow a site peer to relay devices' signed requests, by its node public key.
    Enroll(PeerEnrollArgs),
    /// List relays, enrolled and revoked.
    List(DataArg),
    /// Stop taking relayed requests from a site peer.
    Revoke(PeerKeyArgs),
}

#[derive(Debug, Args)]
struct PeerEnrollArgs {
    #[command(flatten)]
    key: PeerKeyArgs,
    /// A name for operators (e.g. the site), shown by `peer list`.
    #[arg(long, default_value = "")]
    name: String,
}

#[derive(Debug, Args)]
struct PeerKeyArgs {
    #[command(flatten)]
    data: DataArg,
    /// The peer's Ed25519 node public key, 64 hex characters (its QUIC identity's key: the
    /// peer proves it holds it by signing each relayed request over its connection).
    #[arg(long)]
    public_key: String,
}

#[derive(Debug, Args)]
struct EnrollArgs {
    #[command(flatten)]
    data: DataArg,
    /// The device's Ed25519 public key, 64 hex characters.
    #[arg(long)]
    public_key: String,
    /// The channel it follows.
    #[arg(long)]
    channel: String,
    /// Its model.
    #[arg(long)]
    model: String,
    /// Put it in the validation cohort.
    #[arg(long)]
    cohort: bool,
}

#[derive(Debug, Args)]
struct RevokeArgs {
    #[command(flatten)]
    data: DataArg,
    /// The device's handle, 64 hex characters.
    #[arg(
        long,
        conflicts_with = "public_key",
        required_unless_present = "public_key"
    )]
    handle: Option<String>,
    /// Or its public key.
    #[arg(long)]
    public_key: Option<String>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    data: DataArg,
    /// QUIC address for devices and caches, e.g. 127.0.0.1:7443.
    #[arg(long)]
    listen: SocketAddr,
    /// HTTP address of the read-only TUF mirror.
    #[arg(long)]
    http: Option<SocketAddr>,
    /// HTTP address of the admin API and /metrics; the token comes from OTA_ADMIN_TOKEN.
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// Write the QUIC address, certificate pin and HTTP addresses as JSON to this file once
    /// listening (for scripts and tests).
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// QUIC connections served at once; more are refused until one closes. All share one UDP
    /// socket; each costs memory: its QUIC state and what it has in flight, which the send
    /// window bounds.
    #[arg(long, default_value_t = 4096)]
    max_connections: usize,
}

fn main() {
    let cli = Cli::parse();
    init_logs(&cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ota-origin: cannot start the async runtime: {e}");
            std::process::exit(2);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => {}
        Err(error) => {
            let code = exit_code(&error);
            eprintln!("ota-origin: {error:#}");
            std::process::exit(code);
        }
    }
}

fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("OTA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// 1 for a refusal (verification or policy), 2 for everything else.
fn exit_code(error: &anyhow::Error) -> i32 {
    for cause in error.chain() {
        if cause.is::<Refused>()
            || cause.is::<LifecycleError>()
            || cause.is::<RegisterError>()
            || cause.is::<ota_core::tuf::Error>()
            || matches!(
                cause.downcast_ref::<CatalogError>(),
                Some(
                    CatalogError::ReleaseExists { .. }
                        | CatalogError::DeviceExists { .. }
                        | CatalogError::RelayExists { .. }
                        | CatalogError::StaleStage { .. }
                )
            )
        {
            return 1;
        }
    }
    2
}

fn now() -> UnixTime {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    UnixTime(secs as i64)
}

async fn run(command: Top) -> anyhow::Result<()> {
    match command {
        Top::Keys(args) => keys(&args),
        Top::Init(args) => init(args).await,
        Top::Release(cmd) => release(cmd).await,
        Top::Device(cmd) => device(cmd).await,
        Top::Peer(cmd) => peer(cmd).await,
        Top::Serve(args) => serve(args).await,
        Top::Audit(AuditCmd::Verify(args)) => match ota_origin::audit::verify(&args.data)? {
            Ok(entries) => {
                println!("audit log intact: {entries} entries");
                Ok(())
            }
            Err(problems) => Err(Refused(problems.join("; ")).into()),
        },
    }
}

fn node_key(dir: &Path) -> anyhow::Result<NodeKey> {
    let path = dir.join("keys").join("node.key");
    if !path.exists() {
        let key = NodeKey::generate();
        write_secret(&path, hex::encode(key.seed()).as_bytes())?;
    }
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    let mut seed = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut seed)
        .with_context(|| format!("{}: not a hex seed", path.display()))?;
    Ok(NodeKey::from_seed(seed))
}

fn write_secret(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| path.display().to_string())?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

fn keys(args: &KeysArgs) -> anyhow::Result<()> {
    let data = &args.data;
    std::fs::create_dir_all(data.data.join("keys"))
        .with_context(|| data.data.display().to_string())?;
    if let (Some(module), Some(token)) = (&args.pkcs11, &args.token) {
        let file = data
            .data
            .join("keys")
            .join(ota_origin::keys::ONLINE_KEYS_FILE);
        if file.exists() {
            return Err(Refused(format!(
                "{} exists: this origin's online keys are on a token already",
                file.display()
            ))
            .into());
        }
        let on_token = ota_origin::keys::TokenKeys::generate(
            module,
            token,
            &ota_sign::backend::PinSource::default(),
        )?;
        let mut bytes = serde_json::to_vec_pretty(&on_token)?;
        bytes.push(b'\n');
        ota_origin::state::write_atomic(&file, &bytes)?;
    }
    let dir = DataDir {
        path: data.data.clone(),
        config: OriginConfig::default(),
    };
    let keys = dir.keys()?;
    let identity = Identity::from_node_key(&node_key(&data.data)?)?;
    let out = serde_json::json!({
        "snapshot": keys.online.snapshot.public(),
        "timestamp": keys.online.timestamp.public(),
        "director": keys.director.public(),
        "quic_pin": identity.pin().to_string(),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

fn read_root(path: &Path) -> anyhow::Result<(Vec<u8>, Root)> {
    let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
    let envelope = Envelope::parse("root", "root.json", &bytes, 512 * 1024)?;
    let root: Root = envelope.role()?;
    root.verify_role("root", "root", &envelope)?;
    Ok((bytes, root))
}

fn role_has_key(root: &Root, role: &str, key: &ota_core::tuf::Key) -> bool {
    root.role_keys(role)
        .keyids
        .iter()
        .any(|id| root.keys.get(id).is_some_and(|k| k == key))
}

async fn init(args: InitArgs) -> anyhow::Result<()> {
    let (root_bytes, root) = read_root(&args.root)?;
    let (director_bytes, director_root) = read_root(&args.director_root)?;
    let probe = DataDir {
        path: args.data.data.clone(),
        config: OriginConfig::default(),
    };
    std::fs::create_dir_all(args.data.data.join("keys"))?;
    let keys = probe.keys()?;
    for (role, key) in [
        ("snapshot", keys.online.snapshot.public()),
        ("timestamp", keys.online.timestamp.public()),
    ] {
        if !role_has_key(&root, role, &key) {
            return Err(Refused(format!(
                "the root does not list this origin's {role} key {} (run `ota-origin keys`)",
                key.key_id()
            ))
            .into());
        }
    }
    if !role_has_key(&director_root, "targets", &keys.director.public()) {
        return Err(Refused(
            "the director root's targets role does not list this origin's director key".into(),
        )
        .into());
    }
    let dir = DataDir::create(
        &args.data.data,
        OriginConfig {
            catalog: args.catalog,
            blobs: args.blobs,
            ..OriginConfig::default()
        },
    )?;
    dir.write("root.json", &root_bytes)?;
    dir.write("director-root.json", &director_bytes)?;
    let origin = Origin::open(&args.data.data).await?;
    let version = root.common.version;
    origin
        .catalog
        .publish(
            &[MetadataFile {
                name: format!("{version}.root.json"),
                role: "root".into(),
                version,
                bytes: root_bytes,
            }],
            now(),
        )
        .await?;
    println!(
        "initialised {} with root v{version}",
        args.data.data.display()
    );
    Ok(())
}

/// Progress of a long command: JSON lines on stdout with `--json`; otherwise one line kept
/// up to date on stderr when it is a terminal (at most ten times a second), and nothing when
/// it is not.
struct Progress {
    json: bool,
    terminal: bool,
    last: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Progress {
    fn new(json: bool) -> Self {
        use std::io::IsTerminal as _;
        Self {
            json,
            terminal: std::io::stderr().is_terminal(),
            last: std::sync::Mutex::new(None),
        }
    }

    /// One JSON line on stdout.
    fn line(&self, value: &serde_json::Value) {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{value}");
        let _ = out.flush();
    }

    fn step(&self, step: &commands::Step<'_>) {
        // The last step of a phase knows both totals and has reached them.
        let finished = step.total_chunks.is_some_and(|n| n == step.chunks)
            && step.total_bytes == Some(step.bytes);
        if self.json {
            let mut value = serde_json::to_value(step).unwrap_or_default();
            value["event"] = "progress".into();
            self.line(&value);
            return;
        }
        if !self.terminal {
            return;
        }
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        if !finished && last.is_some_and(|t| now.duration_since(t).as_millis() < 100) {
            return;
        }
        *last = Some(now);
        let of =
            |n: Option<u64>, shift: u32| n.map_or(String::new(), |n| format!(" / {}", n >> shift));
        eprint!(
            "\r{} {}: {}{} MiB, {}{} chunks\x1b[K",
            step.phase,
            step.target,
            step.bytes >> 20,
            of(step.total_bytes, 20),
            step.chunks,
            of(step.total_chunks, 0),
        );
        if finished {
            eprintln!();
        }
    }
}

fn release_id(id: &ReleaseId) -> (Channel, ReleaseNumber) {
    (Channel(id.channel.clone()), ReleaseNumber(id.release))
}

async fn release(cmd: ReleaseCmd) -> anyhow::Result<()> {
    match cmd {
        ReleaseCmd::Create(args) => {
            let origin = Origin::open(&args.id.data.data).await?;
            let (channel, number) = release_id(&args.id);
            let mut artifacts = Vec::new();
            for spec in &args.artifacts {
                let (slot, path) = spec
                    .split_once('=')
                    .ok_or_else(|| anyhow!("--artifact {spec:?} is not SLOT=PATH"))?;
                artifacts.push((slot.to_string(), PathBuf::from(path)));
            }
            if !(0.0..100.0).contains(&args.failure_threshold) {
                bail!("--failure-threshold must be between 0 and 100");
            }
            let create = CreateRelease {
                channel,
                number,
                version: args.version,
                artifacts,
                models: args.models,
                security: args.security,
                min_installed: args.min_installed.map(ReleaseNumber),
                health: HealthPolicy {
                    max_failure_basis_points: (args.failure_threshold * 100.0).round() as u16,
                    min_sample: args.min_sample,
                },
                expires: now().plus_secs(args.expires_days * 86_400),
                private: args.private,
            };
            let progress = Progress::new(args.json);
            let dir =
                commands::create_release(&origin, &create, now(), &|s| progress.step(s)).await?;
            if args.json {
                progress.line(&serde_json::json!({
                    "event": "created",
                    "release": create.number.0,
                    "requests": dir,
                }));
            } else {
                println!(
                    "draft release {} created; signing requests in {}",
                    create.number.0,
                    dir.display()
                );
            }
            Ok(())
        }
        ReleaseCmd::Register(args) => {
            let origin = Origin::open(&args.id.data.data).await?;
            let (channel, number) = release_id(&args.id);
            let read = |p: &Path| std::fs::read(p).with_context(|| p.display().to_string());
            let names = commands::register_release(
                &origin,
                &channel,
                number,
                &read(&args.signed_release)?,
                &read(&args.signed_targets)?,
                now(),
            )
            .await?;
            println!(
                "registered release {}: published {}",
                number.0,
                names.join(", ")
            );
            Ok(())
        }
        ReleaseCmd::Validate(args) => {
            let origin = Origin::open(&args.id.data.data).await?;
            let (channel, number) = release_id(&args.id);
            let progress = Progress::new(args.json);
            let report =
                commands::validate_release_with_progress(&origin, &channel, number, now(), &|s| {
                    progress.step(s)
                })
                .await?;
            if args.json {
                progress.line(&serde_json::json!({
                    "event": "validated",
                    "release": number.0,
                    "chunks": report.chunks,
                    "bytes": report.bytes,
                }));
                return Ok(());
            }
            println!(
                "release {} validated: {} blobs ({} MiB) re-hashed, metadata verified as a device would",
                number.0,
                report.chunks,
                report.bytes >> 20
            );
            Ok(())
        }
        ReleaseCmd::Promote(args) => {
            let command = match (args.percent, args.stable, args.security) {
                (Some(p), _, _) => {
                    if !(0.0..100.0).contains(&p) {
                        bail!("--percent must be between 0.01 and 99.99");
                    }
                    StageCommand::PromoteLimited {
                        basis_points: (p * 100.0).round() as u16,
                    }
                }
                (None, true, _) => StageCommand::PromoteStable,
                (None, false, true) => StageCommand::PromoteSecurity,
                _ => bail!("say --percent P, --stable or --security"),
            };
            transition(&args.id, command, None).await
        }
        ReleaseCmd::Halt(args) => {
            transition(&args.id, StageCommand::Halt, args.reason.as_deref()).await
        }
        ReleaseCmd::Resume(id) => transition(&id, StageCommand::Resume, None).await,
        ReleaseCmd::Revoke(args) => {
            transition(&args.id, StageCommand::Revoke, args.reason.as_deref()).await
        }
        ReleaseCmd::List(args) => {
            let origin = Origin::open(&args.data.data).await?;
            let channel = args.channel.map(Channel);
            for release in origin.catalog.releases(channel.as_ref()).await? {
                let counts = origin
                    .catalog
                    .report_counts(&release.channel, release.number)
                    .await?;
                if args.json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "channel": release.channel.0,
                            "release": release.number.0,
                            "version": release.version,
                            "stage": release.stage,
                            "security": release.security,
                            "successes": counts.successes,
                            "failures": counts.failures,
                            "halted_reason": release.halted_reason,
                        })
                    );
                } else {
                    println!(
                        "{:<10} {:>6}  {:<14} {:<24} ok {:>5}  failed {:>5}{}",
                        release.channel.0,
                        release.number.0,
                        release.version,
                        release.stage.to_string(),
                        counts.successes,
                        counts.failures,
                        release
                            .halted_reason
                            .map(|r| format!("  ({r})"))
                            .unwrap_or_default()
                    );
                }
            }
            Ok(())
        }
    }
}

async fn transition(
    id: &ReleaseId,
    command: StageCommand,
    reason: Option<&str>,
) -> anyhow::Result<()> {
    let origin = Origin::open(&id.data.data).await?;
    let (channel, number) = release_id(id);
    let stage = lifecycle::apply(
        &origin,
        &channel,
        number,
        command,
        reason,
        "operator",
        now(),
    )
    .await?;
    println!("release {} of {} is now {stage}", number.0, channel.0);
    Ok(())
}

fn parse_key(hex_key: &str) -> anyhow::Result<[u8; 32]> {
    let mut key = [0u8; 32];
    hex::decode_to_slice(hex_key.trim(), &mut key)
        .map_err(|e| anyhow!("public key {hex_key:?} is not 64 hex characters: {e}"))?;
    Ok(key)
}

async fn device(cmd: DeviceCmd) -> anyhow::Result<()> {
    match cmd {
        DeviceCmd::Enroll(args) => {
            let origin = Origin::open(&args.data.data).await?;
            let key = parse_key(&args.public_key)?;
            let verifying = ed25519_dalek::VerifyingKey::from_bytes(&key)
                .map_err(|e| Refused(format!("not an Ed25519 public key: {e}")))?;
            if verifying.is_weak() {
                return Err(Refused("a small-order key cannot be a device key".into()).into());
            }
            let handle = DeviceHandle::derive(&origin.keys.handle, &key);
            origin
                .catalog
                .enroll(
                    &NewDevice {
                        handle,
                        public_key: key,
                        channel: Channel(args.channel),
                        model: args.model,
                        validation_cohort: args.cohort,
                    },
                    now(),
                )
                .await?;
            println!("{handle}");
            Ok(())
        }
        DeviceCmd::List(args) => {
            let origin = Origin::open(&args.data.data).await?;
            let channel = args.channel.map(Channel);
            let mut after: Option<DeviceHandle> = None;
            loop {
                let page = origin
                    .catalog
                    .devices(channel.as_ref(), after.as_ref(), 500)
                    .await?;
                let Some(last) = page.last() else { break };
                after = Some(last.handle);
                for d in &page {
                    println!(
                        "{}  {:<10} {:<14} installed {:>6}  {}{}",
                        d.handle,
                        d.channel.0,
                        d.model,
                        d.installed.map_or("-".into(), |r| r.0.to_string()),
                        if d.revoked_at.is_some() {
                            "revoked"
                        } else {
                            "enrolled"
                        },
                        if d.validation_cohort { " (cohort)" } else { "" },
                    );
                }
            }
            Ok(())
        }
        DeviceCmd::Revoke(args) => {
            let origin = Origin::open(&args.data.data).await?;
            let handle = match (&args.handle, &args.public_key) {
                (Some(h), _) => DeviceHandle(parse_key(h)?),
                (None, Some(k)) => DeviceHandle::derive(&origin.keys.handle, &parse_key(k)?),
                (None, None) => bail!("say --handle or --public-key"),
            };
            origin.catalog.revoke_device(&handle, now()).await?;
            println!("revoked {handle}");
            Ok(())
        }
    }
}

async fn peer(cmd: PeerCmd) -> anyhow::Result<()> {
    match cmd {
        PeerCmd::Enroll(args) => {
            let origin = Origin::open(&args.key.data.data).await?;
            let key = parse_key(&args.key.public_key)?;
            let verifying = ed25519_dalek::VerifyingKey::from_bytes(&key)
                .map_err(|e| Refused(format!("not an Ed25519 public key: {e}")))?;
            if verifying.is_weak() {
                return Err(Refused("a small-order key cannot be a relay key".into()).into());
            }
            origin.catalog.enroll_relay(&key, &args.name, now()).await?;
            println!("enrolled relay {}", hex::encode(key));
            Ok(())
        }
        PeerCmd::List(data) => {
            let origin = Origin::open(&data.data).await?;
            for relay in origin.catalog.relays().await? {
                println!(
                    "{}  {:<8} enrolled {}  {}",
                    hex::encode(relay.public_key),
                    if relay.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "enrolled"
                    },
                    relay.enrolled_at,
                    relay.name,
                );
            }
            Ok(())
        }
        PeerCmd::Revoke(args) => {
            let origin = Origin::open(&args.data.data).await?;
            let key = parse_key(&args.public_key)?;
            origin.catalog.revoke_relay(&key, now()).await?;
            println!("revoked relay {}", hex::encode(key));
            Ok(())
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let origin = Origin::open(&args.data.data).await?;
    let identity = Identity::from_node_key(&node_key(&args.data.data)?)?;
    let handler = Arc::new(OriginHandler::new(origin.clone(), now));
    let mut config = ServerConfig::default();
    config.max_connections = args.max_connections;
    // Kept across restarts so that clients of a crashed origin get a stateless reset at once.
    config.reset_secret = Some(ota_net::quic::ResetSecret::load_or_create(
        &args.data.data.join("keys").join("quic-reset.key"),
    )?);
    let server = Server::bind(args.listen, &identity, config, handler)?;
    let quic = server.local_addr();
    let mut http_addr = None;
    if let Some(addr) = args.http {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("HTTP mirror on {addr}"))?;
        http_addr = Some(listener.local_addr()?);
        let router = ota_origin::http::mirror(origin.clone());
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                tracing::error!(%error, "HTTP mirror stopped");
            }
        });
    }
    let mut admin_addr = None;
    if let Some(addr) = args.admin {
        let token = std::env::var("OTA_ADMIN_TOKEN")
            .map_err(|_| anyhow!("--admin needs the admin token in OTA_ADMIN_TOKEN"))?;
        if token.len() < 16 {
            bail!("OTA_ADMIN_TOKEN must be at least 16 characters");
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("admin API on {addr}"))?;
        admin_addr = Some(listener.local_addr()?);
        let router = ota_origin::http::admin(origin.clone(), token);
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                tracing::error!(%error, "admin API stopped");
            }
        });
    }
    // Check the timestamp's lifetime often enough to re-sign it at half-life.
    let every = (origin.dir.config.timestamp_expiry_secs / 4).clamp(1, 60) as u64;
    tokio::spawn(timestamp_task(
        origin.clone(),
        now,
        Duration::from_secs(every),
    ));
    let ready = serde_json::json!({
        "quic": quic.to_string(),
        "pin": identity.pin().to_string(),
        "http": http_addr.map(|a| a.to_string()),
        "admin": admin_addr.map(|a| a.to_string()),
    });
    tracing::info!(%quic, pin = %identity.pin(), ?http_addr, ?admin_addr, "serving");
    if let Some(path) = &args.ready_file {
        ota_origin::state::write_atomic(path, ready.to_string().as_bytes())?;
    }
    println!("{ready}");
    tokio::signal::ctrl_c().await?;
    tracing::info!("shutting down");
    server.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
