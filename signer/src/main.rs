//! `ota-sign`: the signing authorities' tool. A thin driver over the `ota_sign` library: it
//! parses arguments, reads files, shows the operator what they are about to sign, asks them,
//! and writes outputs atomically. See `docs/SIGNING.md` for the runbooks.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use ota_core::time::UnixTime;
use ota_core::tuf::Key;
use ota_core::tuf::metadata::{Envelope, Root};
use ota_sign::backend::file::FileKey;
use ota_sign::backend::pkcs11::Pkcs11Key;
use ota_sign::backend::{PinSource, Scheme, SigningKey, open_key};
use ota_sign::ceremony::{self, ApproveInput, KeyList, RootSpec, SignInput};
use ota_sign::fsutil::{read_capped, write_atomic};
use ota_sign::keyref::KeyRef;
use ota_sign::request::{MAX_REQUEST_LEN, Request};
use ota_sign::review::Review;
use ota_sign::roles::SignRole;
use ota_sign::station::{STATION_ENV, Station, StationError};
use ota_sign::{EXIT_ENVIRONMENT, EXIT_REFUSAL};

const ABOUT: &str = "The signing authorities' tool: keys on PKCS#11 tokens, root ceremonies, \
                     thresholds, dual control and a verifiable audit log";

const LONG_ABOUT: &str = "\
The signing authorities' tool for Enigm OTA repositories (TUF 1.0).

Two authorities sign with it, each with keys that never leave their tokens:
  - the manifest signing authority, TUF role `targets`: an offline PIV key (ECDSA P-256);
  - the release-signing authority, delegated role `release`: an HSM key (Ed25519 or P-256)
    under dual control: it signs only after M distinct operators approved the exact request.
The root of trust (`root`, a threshold of offline keys) is made and changed at key ceremonies.
Build systems, CI and the origin only hand in signing requests (unsigned TUF metadata) and
take signed metadata back.

Everything happens at a signing station: a directory (--station or $OTA_SIGN_STATION) with
policy.json (operators, approvals, maximum expiry per role), state.json (what was signed
last), audit.jsonl (the hash-chained audit log) and roots/ (the trusted roots).

Keys (KEYREF): a pkcs11: URI (RFC 7512), e.g.
  pkcs11:token=release-hsm;object=release-1?module-path=/usr/lib/softhsm/libsofthsm2.so
with the PIN from $OTA_PKCS11_PIN (or the variable named by --pin-env) or a prompt; or
file:PATH, a development key, refused for root, targets and release unless
--insecure-file-keys.

Exit codes: 0 done; 1 refused (the reason is printed); 2 usage or environment error.
The runbooks for each ceremony are in docs/SIGNING.md.";

#[derive(Debug, Parser)]
#[command(name = "ota-sign", version, about = ABOUT, long_about = LONG_ABOUT)]
struct Cli {
    /// The signing station directory (policy.json, state.json, audit.jsonl, roots/).
    #[arg(long, global = true, env = STATION_ENV, value_name = "DIR")]
    station: Option<PathBuf>,
    /// The environment variable that holds the token PIN (never pass a PIN as an argument).
    #[arg(
        long,
        global = true,
        default_value = "OTA_PKCS11_PIN",
        value_name = "VAR"
    )]
    pin_env: String,
    /// For tests only: use this time (YYYY-MM-DDTHH:MM:SSZ) instead of the clock.
    #[arg(long, global = true, hide = true, value_name = "TIME")]
    now: Option<UnixTime>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate a key on a token (or a development key file) and show public keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Root ceremonies: create the first root, co-sign, rotate, install at another station.
    #[command(subcommand)]
    Root(RootCommand),
    /// Add one signature to a signing request, after the policy checks and your confirmation.
    #[command(long_about = "\
Add one signature to a signing request (TUF metadata with zero or more signatures).

Before anything is signed the tool checks the station's policy and shows you what you are
about to sign: role, version, expiry, channels and release numbers, artifact names, lengths
and hashes, and the signatures so far. It refuses a version that does not rise above the last
one signed here, an expiry beyond the role's maximum, a new release not numbered above the
last one signed for its channel, metadata inconsistent with itself or the trusted root, and a
key the trusted root does not list for the role (the manifest key never signs `release`, the
release key never signs `targets`).

For a role under dual control (`release`), pass the operators' approvals (ota-sign approve):
at least the policy's number, from distinct operators, unexpired, for this exact request.

Co-signers sign in turn: each runs `sign` on the file the one before wrote. The request, the
signature or the refusal are written to the audit log, signed by your key.")]
    Sign(SignArgs),
    /// An operator approves a request for a key under dual control (the release HSM key).
    #[command(long_about = "\
An operator approves a signing request for a role under dual control (`release`).

The approval is your signature, with your own operator key, over the role, the SHA-256 of the
request's canonical signed bytes and an expiry. It counts only for that exact request, only
until it expires, and only once per operator. You are shown the same review a signer sees,
and the policy checks run before you approve. The approval is written to the audit log.")]
    Approve(ApproveArgs),
    /// Show what a request holds and run the policy checks, without any key (nothing logged).
    Review(ReviewArgs),
    /// Check signed metadata against the trusted root: are all thresholds met?
    Verify(VerifyArgs),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Key ceremony step: generate a key pair on a token (sensitive, never extractable), or a
    /// development key file.
    #[command(long_about = "\
Key ceremony step: generate a key pair.

With --pkcs11 MODULE --token LABEL --label KEY the pair is generated on the token: the private
key is sensitive and not extractable (the tool reads the attributes back and destroys a key
the token did not protect). The PIN comes from the environment or a prompt. With --out FILE a
development key file is written instead (mode 0600), usable for online roles and tests only.

The public key is printed in TUF form with its key id; --public-out writes it to a file for
`root create` and the policy. With a station, the new key signs a `key-generated` entry in the
audit log (proof that the key exists and works).")]
    Generate(GenerateArgs),
    /// Show a key's id, public key and, on a token, its protection attributes.
    Show(ShowArgs),
}

#[derive(Debug, Subcommand)]
enum RootCommand {
    /// Root ceremony, step 1: write the first root (version 1) and sign it with your root key.
    #[command(long_about = "\
Root ceremony, step 1: create the first root of trust (version 1).

Lists the keys and thresholds of every role from public key files (TUF key JSON, as
`key generate --public-out` writes them): root, targets (the manifest authority), snapshot,
timestamp, and the release authority, pinned in root's `x-enigm-release-authority`. One key
may never serve both targets and the release authority. The root key holder who opens the
ceremony (--key) signs first; the others add their signatures with `root sign` until the
threshold is met, at which point the station installs the root as its trusted root.")]
    Create(CreateArgs),
    /// Root ceremony, co-signing: add your root key's signature to a root.
    #[command(long_about = "\
Root ceremony, co-signing: add your root key's signature to a root (new or rotated).

Each root key holder signs in turn. For a rotation, keys of both the installed root (version N)
and the new root (N+1) sign: the new root needs both thresholds. When every threshold is met
the station installs the root. Same checks as `sign --role root`.")]
    Sign(RootSignArgs),
    /// Root ceremony, rotation: write version N+1 of the installed root and sign it.
    #[command(long_about = "\
Root ceremony, rotation: write version N+1 of the station's root, replacing the roles you
name (list every key the new root should hold for that role; unnamed roles keep their keys),
and sign it with your root key. It must then be signed by the threshold of the old root AND
of the new one (`root sign`). Use it to replace or revoke a root key, to change the manifest
or release authority, or to renew the root's expiry.")]
    Rotate(RotateArgs),
    /// Install a fully signed root at this station (another station's ceremony result).
    Install(InstallArgs),
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Verify the audit log: chain, hashes, signatures, known actors, recorded head.
    #[command(long_about = "\
Verify the station's audit log offline.

Detects and names: an entry changed (its content no longer matches its hash), changed and
re-hashed (its signature fails and the next entry no longer chains to it), removed (a gap;
at the end, the head recorded in state.json is missing), reordered, and appended by someone
else (signed by a key that is neither an operator of the policy nor a key of an installed
root, or by an operator after their revocation). Exit code 1 if anything is wrong.")]
    Verify(AuditVerifyArgs),
}

#[derive(Debug, Args)]
struct GenerateArgs {
    /// Signature scheme.
    #[arg(long, value_enum)]
    scheme: Scheme,
    /// Write a development key file (mode 0600) instead of using a token.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["pkcs11", "token", "label"], required_unless_present = "pkcs11")]
    out: Option<PathBuf>,
    /// The PKCS#11 module of the token.
    #[arg(long, value_name = "MODULE", requires_all = ["token", "label"])]
    pkcs11: Option<PathBuf>,
    /// The token's label.
    #[arg(long, value_name = "LABEL")]
    token: Option<String>,
    /// The new key's label on the token.
    #[arg(long, value_name = "KEY")]
    label: Option<String>,
    /// Write the public key (TUF JSON) to this file.
    #[arg(long, value_name = "FILE")]
    public_out: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ShowArgs {
    /// The key.
    #[arg(value_name = "KEYREF")]
    key: String,
    /// Write the public key (TUF JSON) to this file.
    #[arg(long, value_name = "FILE")]
    public_out: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct Confirmation {
    /// Sign without asking (only after reviewing the same request with `ota-sign review`).
    #[arg(long)]
    yes: bool,
    /// Allow a development file key for root, targets or release.
    #[arg(long)]
    insecure_file_keys: bool,
}

#[derive(Debug, Args)]
struct RoleKeyArgs {
    /// A root key (public key file); repeat for each.
    #[arg(long = "root-key", value_name = "PUBFILE")]
    root: Vec<PathBuf>,
    /// Root keys needed to sign a root.
    #[arg(long, value_name = "N")]
    root_threshold: Option<u64>,
    /// A targets (manifest authority) key.
    #[arg(long = "targets-key", value_name = "PUBFILE")]
    targets: Vec<PathBuf>,
    /// Targets keys needed.
    #[arg(long, value_name = "N")]
    targets_threshold: Option<u64>,
    /// A snapshot key (the origin's online key).
    #[arg(long = "snapshot-key", value_name = "PUBFILE")]
    snapshot: Vec<PathBuf>,
    /// Snapshot keys needed.
    #[arg(long, value_name = "N")]
    snapshot_threshold: Option<u64>,
    /// A timestamp key (the origin's online key).
    #[arg(long = "timestamp-key", value_name = "PUBFILE")]
    timestamp: Vec<PathBuf>,
    /// Timestamp keys needed.
    #[arg(long, value_name = "N")]
    timestamp_threshold: Option<u64>,
    /// A release authority key (HSM), pinned in root.
    #[arg(long = "release-key", value_name = "PUBFILE")]
    release: Vec<PathBuf>,
    /// Release keys needed.
    #[arg(long, value_name = "N")]
    release_threshold: Option<u64>,
}

#[derive(Debug, Args)]
struct CreateArgs {
    /// Your root key: it opens the ceremony and signs first.
    #[arg(long, value_name = "KEYREF")]
    key: String,
    /// Where to write the root (with your signature).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// The root's expiry (YYYY-MM-DDTHH:MM:SSZ), within the policy's maximum for root.
    #[arg(long, value_name = "TIME")]
    expires: UnixTime,
    #[command(flatten)]
    keys: RoleKeyArgs,
    #[command(flatten)]
    confirm: Confirmation,
}

#[derive(Debug, Args)]
struct RotateArgs {
    /// Your root key (of the installed root or the new one).
    #[arg(long, value_name = "KEYREF")]
    key: String,
    /// Where to write the new root (with your signature).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// The new root's expiry.
    #[arg(long, value_name = "TIME")]
    expires: UnixTime,
    #[command(flatten)]
    keys: RoleKeyArgs,
    #[command(flatten)]
    confirm: Confirmation,
}

#[derive(Debug, Args)]
struct RootSignArgs {
    /// Your root key.
    #[arg(long, value_name = "KEYREF")]
    key: String,
    /// The root to sign.
    #[arg(long = "in", value_name = "FILE")]
    input: PathBuf,
    /// Where to write it with your signature added (may be the same file).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    #[command(flatten)]
    confirm: Confirmation,
}

#[derive(Debug, Args)]
struct InstallArgs {
    /// A key the new root lists, or an operator's key: it signs the log entry.
    #[arg(long, value_name = "KEYREF")]
    key: String,
    /// The fully signed root.
    #[arg(long = "in", value_name = "FILE")]
    input: PathBuf,
}

#[derive(Debug, Args)]
struct SignArgs {
    /// The role to sign for.
    #[arg(long, value_enum)]
    role: SignRole,
    /// Your key for that role.
    #[arg(long, value_name = "KEYREF")]
    key: String,
    /// The signing request.
    #[arg(long = "in", value_name = "FILE")]
    input: PathBuf,
    /// Where to write it with your signature added (may be the same file).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// An operator's approval (ota-sign approve); repeat for each.
    #[arg(long, value_name = "FILE")]
    approval: Vec<PathBuf>,
    /// A release manifest listed by a targets request, to check and show; repeat for each.
    #[arg(long, value_name = "FILE")]
    manifest: Vec<PathBuf>,
    #[command(flatten)]
    confirm: Confirmation,
}

#[derive(Debug, Args)]
struct ApproveArgs {
    /// The role whose key will sign the request.
    #[arg(long, value_enum)]
    role: SignRole,
    /// Your operator key.
    #[arg(long, value_name = "KEYREF")]
    key: String,
    /// The signing request.
    #[arg(long = "in", value_name = "FILE")]
    input: PathBuf,
    /// Where to write your approval.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// How long the approval counts: e.g. 30m, 8h, 1d (at most the policy's maximum).
    #[arg(long, value_name = "DURATION", default_value = "8h", value_parser = parse_duration)]
    valid_for: i64,
    /// A release manifest listed by a targets request, to check and show; repeat for each.
    #[arg(long, value_name = "FILE")]
    manifest: Vec<PathBuf>,
    #[command(flatten)]
    confirm: Confirmation,
}

#[derive(Debug, Args)]
struct ReviewArgs {
    /// The role the request is for.
    #[arg(long, value_enum)]
    role: SignRole,
    /// The signing request.
    #[arg(long = "in", value_name = "FILE")]
    input: PathBuf,
    /// A release manifest listed by a targets request, to check and show; repeat for each.
    #[arg(long, value_name = "FILE")]
    manifest: Vec<PathBuf>,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// The role of the metadata.
    #[arg(long, value_enum)]
    role: SignRole,
    /// The signed metadata.
    #[arg(long = "in", value_name = "FILE")]
    input: PathBuf,
    /// The trusted root to check against (default: the station's).
    #[arg(long, value_name = "FILE")]
    root: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct AuditVerifyArgs {
    /// Also accept entries signed by this public key (e.g. of an abandoned ceremony).
    #[arg(long, value_name = "PUBFILE")]
    known_key: Vec<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = e
                .downcast_ref::<ota_sign::Error>()
                .map_or(EXIT_ENVIRONMENT, ota_sign::Error::exit_code);
            let text = format!("{e:#}").replace('\n', " ");
            if code == EXIT_REFUSAL {
                eprintln!("ota-sign: refused: {text}");
            } else {
                eprintln!("ota-sign: {text}");
            }
            ExitCode::from(code)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let now = cli.now.unwrap_or_else(clock);
    let pins = PinSource {
        env: cli.pin_env.clone(),
    };
    let clock_overridden = cli.now.is_some();
    if clock_overridden {
        eprintln!("ota-sign: warning: the clock is overridden with --now (for tests only)");
    }
    let station = || -> Result<Station> {
        let dir = cli.station.as_ref().ok_or(StationError::NotGiven)?;
        let mut station = Station::open(dir)?;
        if clock_overridden {
            station.note_clock_override();
        }
        Ok(station)
    };
    match cli.command {
        Command::Key(KeyCommand::Generate(args)) => {
            key_generate(&cli.station, &pins, (now, clock_overridden), args)
        }
        Command::Key(KeyCommand::Show(args)) => key_show(&pins, args),
        Command::Root(RootCommand::Create(args)) => {
            need_confirmation(&args.confirm)?;
            let mut station = station()?;
            let spec = role_spec(&args.keys, args.expires, None)?;
            let mut key = open(&args.key, &pins)?;
            let outcome = ceremony::root_create(
                &mut station,
                key.as_mut(),
                &spec,
                args.confirm.insecure_file_keys,
                now,
                &mut confirmer(&args.confirm, "Sign this root"),
            )?;
            finish(&args.out, &outcome)
        }
        Command::Root(RootCommand::Rotate(args)) => {
            need_confirmation(&args.confirm)?;
            let mut station = station()?;
            let base = station.require_root()?.root.clone();
            let spec = role_spec(&args.keys, args.expires, Some(&base))?;
            let mut key = open(&args.key, &pins)?;
            let outcome = ceremony::root_rotate(
                &mut station,
                key.as_mut(),
                &spec,
                args.confirm.insecure_file_keys,
                now,
                &mut confirmer(&args.confirm, "Sign this root"),
            )?;
            finish(&args.out, &outcome)
        }
        Command::Root(RootCommand::Sign(args)) => sign(
            station()?,
            &pins,
            now,
            SignArgs {
                role: SignRole::Root,
                key: args.key,
                input: args.input,
                out: args.out,
                approval: Vec::new(),
                manifest: Vec::new(),
                confirm: args.confirm,
            },
        ),
        Command::Root(RootCommand::Install(args)) => {
            let mut station = station()?;
            let bytes = read_file(&args.input, "root", 512 * 1024)?;
            let mut key = open(&args.key, &pins)?;
            let outcome = ceremony::root_install(&mut station, key.as_mut(), &bytes, now)?;
            for m in &outcome.messages {
                println!("{m}");
            }
            Ok(())
        }
        Command::Sign(args) => sign(station()?, &pins, now, args),
        Command::Approve(args) => {
            need_confirmation(&args.confirm)?;
            let mut station = station()?;
            let request = read_file(&args.input, "request", MAX_REQUEST_LEN)?;
            let manifests = read_all(&args.manifest, "manifest")?;
            let mut key = open(&args.key, &pins)?;
            let name = args.input.display().to_string();
            let input = ApproveInput {
                role: args.role,
                request: &request,
                request_name: &name,
                manifests: &manifests,
                valid_secs: args.valid_for,
                insecure_file_keys: args.confirm.insecure_file_keys,
                now,
            };
            let outcome = ceremony::approve(
                &mut station,
                key.as_mut(),
                &input,
                &mut confirmer(&args.confirm, "Approve this request"),
            )?;
            finish(&args.out, &outcome)
        }
        Command::Review(args) => {
            let station = station()?;
            let bytes = read_file(&args.input, "request", MAX_REQUEST_LEN)?;
            let manifests = read_all(&args.manifest, "manifest")?;
            let request = Request::parse(args.role, &bytes).map_err(ota_sign::Error::from)?;
            let review = ota_sign::review::review(&station, &request, &manifests, now)?;
            for line in &review.lines {
                println!("{line}");
            }
            println!("policy checks passed");
            Ok(())
        }
        Command::Verify(args) => {
            let bytes = read_file(&args.input, "metadata", MAX_REQUEST_LEN)?;
            let roots = match &args.root {
                Some(path) => vec![read_root(path)?],
                None => station()?.roots().iter().map(|t| t.root.clone()).collect(),
            };
            let lines = ceremony::verify_signed(&roots, args.role, &bytes)?;
            for line in lines {
                println!("{line}");
            }
            println!("{}: every threshold is met", args.role);
            Ok(())
        }
        Command::Audit(AuditCommand::Verify(args)) => {
            let station = station()?;
            let extra = args
                .known_key
                .iter()
                .map(|p| read_public_key(p))
                .collect::<Result<Vec<_>>>()?;
            let report = station.verify_log(Some(&station.known_actors(&extra)))?;
            if report.problems.is_empty() {
                println!(
                    "audit log intact: {} entries, head {}",
                    report.entries,
                    report
                        .head
                        .map_or_else(|| "none".into(), |h| format!("{} {}", h.seq, h.hash))
                );
                return Ok(());
            }
            for problem in &report.problems {
                println!("{problem}");
            }
            Err(
                ota_sign::Error::from(ota_sign::refusal::Refusal::AuditDamaged {
                    problem: format!(
                        "{} problem(s), the first: {}",
                        report.problems.len(),
                        report.problems[0]
                    ),
                })
                .into(),
            )
        }
    }
}

fn sign(mut station: Station, pins: &PinSource, now: UnixTime, args: SignArgs) -> Result<()> {
    need_confirmation(&args.confirm)?;
    let request = read_file(&args.input, "request", MAX_REQUEST_LEN)?;
    let approvals = read_all(&args.approval, "approval")?;
    let manifests = read_all(&args.manifest, "manifest")?;
    let mut key = open(&args.key, pins)?;
    let name = args.input.display().to_string();
    let input = SignInput {
        role: args.role,
        request: &request,
        request_name: &name,
        approvals: &approvals,
        manifests: &manifests,
        insecure_file_keys: args.confirm.insecure_file_keys,
        now,
    };
    let outcome = ceremony::sign(
        &mut station,
        key.as_mut(),
        &input,
        &mut confirmer(&args.confirm, "Sign this request"),
    )?;
    finish(&args.out, &outcome)
}

fn key_generate(
    station_dir: &Option<PathBuf>,
    pins: &PinSource,
    (now, clock_overridden): (UnixTime, bool),
    args: GenerateArgs,
) -> Result<()> {
    let mut station = station_dir.as_deref().map(Station::open).transpose()?;
    if let Some(station) = station.as_mut()
        && clock_overridden
    {
        station.note_clock_override();
    }
    let (mut key, protection): (Box<dyn SigningKey>, Option<_>) = match (&args.out, &args.pkcs11) {
        (Some(out), _) => (
            Box::new(FileKey::generate(out, args.scheme).map_err(ota_sign::Error::from)?),
            None,
        ),
        (None, Some(module)) => {
            let (token, label) = (
                args.token.as_deref().unwrap_or_default(),
                args.label.as_deref().unwrap_or_default(),
            );
            let key = Pkcs11Key::generate(module, token, label, args.scheme, pins)
                .map_err(ota_sign::Error::from)?;
            let protection = key.protection().map_err(ota_sign::Error::from)?;
            (Box::new(key), Some(protection))
        }
        (None, None) => bail!("give --out FILE or --pkcs11 MODULE --token LABEL --label KEY"),
    };
    if let Some(station) = station.as_mut() {
        let details = serde_json::json!({
            "step": "key-generated",
            "scheme": args.scheme.to_string(),
            "key": key.reference().to_string(),
            "keyid": key.public().key_id(),
            "protection": protection,
        });
        station.record(
            key.as_mut(),
            ota_sign::audit::Action::Ceremony,
            details,
            now,
        )?;
    }
    print_key(
        key.as_ref(),
        protection.as_ref(),
        args.public_out.as_deref(),
    )
}

fn key_show(pins: &PinSource, args: ShowArgs) -> Result<()> {
    let reference = KeyRef::parse(&args.key).map_err(ota_sign::Error::from)?;
    match &reference {
        KeyRef::Pkcs11(uri) => {
            let key = Pkcs11Key::open(uri, pins).map_err(ota_sign::Error::from)?;
            let protection = key.protection().map_err(ota_sign::Error::from)?;
            print_key(&key, Some(&protection), args.public_out.as_deref())
        }
        KeyRef::File(_) => {
            let key = open_key(&reference, pins).map_err(ota_sign::Error::from)?;
            print_key(key.as_ref(), None, args.public_out.as_deref())
        }
    }
}

fn print_key(
    key: &dyn SigningKey,
    protection: Option<&ota_sign::backend::pkcs11::Protection>,
    public_out: Option<&Path>,
) -> Result<()> {
    let mut public = serde_json::to_vec_pretty(key.public())?;
    public.push(b'\n');
    println!("keyid:  {}", key.public().key_id());
    println!("scheme: {}", key.public().scheme());
    println!("keyref: {}", key.reference());
    if let Some(p) = protection {
        println!(
            "token:  sensitive={} extractable={} always_sensitive={} never_extractable={} \
             generated_on_token={} private_value_readable={}",
            p.sensitive,
            p.extractable,
            p.always_sensitive,
            p.never_extractable,
            p.local,
            !p.value_unreadable
        );
    }
    print!("{}", String::from_utf8_lossy(&public));
    if let Some(path) = public_out {
        write_atomic(path, &public)
            .map_err(|e| anyhow!(e))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Build the keys of a new root from the arguments; in a rotation, unnamed roles keep theirs.
fn role_spec(args: &RoleKeyArgs, expires: UnixTime, base: Option<&Root>) -> Result<RootSpec> {
    let list =
        |files: &[PathBuf], threshold: Option<u64>, role: SignRole| -> Result<Option<KeyList>> {
            let existing = base.and_then(|b| ota_sign::roles::role_keys(b, role));
            if files.is_empty() {
                return Ok(match (threshold, existing) {
                    (None, _) => None,
                    (Some(threshold), Some(set)) => Some(KeyList {
                        keys: set
                            .keyids
                            .iter()
                            .filter_map(|id| set.keys.get(id).cloned())
                            .collect(),
                        threshold,
                    }),
                    (Some(_), None) => bail!("--{role}-threshold without --{role}-key"),
                });
            }
            let keys = files
                .iter()
                .map(|p| read_public_key(p))
                .collect::<Result<Vec<_>>>()?;
            let threshold = match (threshold, existing, role) {
                (Some(t), _, _) => t,
                (None, _, SignRole::Root) => bail!("--root-threshold is required with --root-key"),
                (None, Some(set), _) => set.threshold.min(keys.len() as u64),
                (None, None, _) => 1,
            };
            Ok(Some(KeyList { keys, threshold }))
        };
    Ok(RootSpec {
        expires,
        root: list(&args.root, args.root_threshold, SignRole::Root)?,
        targets: list(&args.targets, args.targets_threshold, SignRole::Targets)?,
        snapshot: list(&args.snapshot, args.snapshot_threshold, SignRole::Snapshot)?,
        timestamp: list(
            &args.timestamp,
            args.timestamp_threshold,
            SignRole::Timestamp,
        )?,
        release: list(&args.release, args.release_threshold, SignRole::Release)?,
    })
}

fn open(reference: &str, pins: &PinSource) -> Result<Box<dyn SigningKey>> {
    let reference = KeyRef::parse(reference).map_err(ota_sign::Error::from)?;
    Ok(open_key(&reference, pins).map_err(ota_sign::Error::from)?)
}

fn read_file(path: &Path, what: &str, max: u64) -> Result<Vec<u8>> {
    read_capped(path, max)
        .map_err(|e| anyhow!(e))
        .with_context(|| format!("{what} {}", path.display()))
}

fn read_all(paths: &[PathBuf], what: &str) -> Result<Vec<Vec<u8>>> {
    paths
        .iter()
        .map(|p| read_file(p, what, MAX_REQUEST_LEN))
        .collect()
}

fn read_public_key(path: &Path) -> Result<Key> {
    let bytes = read_file(path, "public key", 64 * 1024)?;
    let key: Key = serde_json::from_slice(&bytes)
        .with_context(|| format!("public key {}: not a TUF key", path.display()))?;
    if let Some(e) = key.unusable() {
        bail!("public key {}: {e}", path.display());
    }
    Ok(key)
}

fn read_root(path: &Path) -> Result<Root> {
    let bytes = read_file(path, "root", 512 * 1024)?;
    let envelope = Envelope::parse("root", &path.display().to_string(), &bytes, 512 * 1024)
        .with_context(|| format!("root {}", path.display()))?;
    let root: Root = envelope
        .role()
        .with_context(|| format!("root {}", path.display()))?;
    root.verify_role("root", "root", &envelope)
        .with_context(|| format!("root {}", path.display()))?;
    Ok(root)
}

/// Refuse to start a signing command that could not ask for confirmation.
fn need_confirmation(confirm: &Confirmation) -> Result<()> {
    if !confirm.yes && !std::io::stdin().is_terminal() {
        bail!(
            "no terminal to confirm on: review the request with `ota-sign review`, then pass --yes"
        );
    }
    Ok(())
}

fn confirmer(confirm: &Confirmation, question: &'static str) -> impl FnMut(&Review) -> bool {
    let yes = confirm.yes;
    move |review: &Review| {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "You are about to sign:");
        for line in &review.lines {
            let _ = writeln!(err, "  {line}");
        }
        if yes {
            let _ = writeln!(err, "(confirmed with --yes)");
            return true;
        }
        let _ = write!(err, "{question}? Type 'yes' to go on: ");
        let _ = err.flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        answer.trim() == "yes"
    }
}

fn finish(out: &Path, outcome: &ceremony::Outcome) -> Result<()> {
    write_atomic(out, &outcome.output)
        .map_err(|e| anyhow!(e))
        .with_context(|| format!("writing {}", out.display()))?;
    for m in &outcome.messages {
        println!("{m}");
    }
    println!("wrote {}", out.display());
    Ok(())
}

fn parse_duration(s: &str) -> Result<i64, String> {
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = number
        .parse()
        .map_err(|_| format!("{s:?}: expected a number and a unit, e.g. 8h"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: the unit is s, m, h or d")),
    };
    n.checked_mul(secs)
        .ok_or_else(|| format!("{s:?} is too long"))
}

fn clock() -> UnixTime {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    UnixTime(i64::try_from(secs).unwrap_or(i64::MAX))
}
