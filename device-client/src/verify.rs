//! `ota-device verify`: offline verification of a file against signed metadata, for auditors.
//!
//! From a trusted root and a directory of metadata (the repository's files, versioned names
//! such as `2.root.json`, `1.snapshot.json`, or a device's non-versioned copies), the TUF
//! client workflow runs exactly as on a device, reading local files instead of the network:
//! root rotations one version at a time, timestamp, snapshot, targets, the delegation search.
//! Then the file is streamed once and its length, every signed hash it has an algorithm for
//! (`sha256`, `sha512`) and, for an artifact with `custom.enigm`, its BLAKE3 are compared with
//! the signed values. Every check is printed. Expiry is judged now, or at `--at`.
//!
//! Exit codes: 0 the file is the signed target, 1 refused (with the reason), 2 usage or
//! environment (a file that cannot be read).

use std::fs::File;
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use sha2::Digest as _;

use ota_core::time::UnixTime;
use ota_core::tuf::client::{Fetched, Limits, TargetInfo, TrustedFiles, Updater};
use ota_core::tuf::enigm::artifact_chunks;

use crate::conformance::{self, ClientError, MetadataSource, read_capped};

/// Arguments of `ota-device verify`.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// The trusted root (e.g. `1.root.json` from the root ceremony).
    #[arg(long)]
    pub root: PathBuf,
    /// The target path, e.g. `artifacts/system-2026.11.2.img`.
    #[arg(long)]
    pub target: String,
    /// The file to check.
    #[arg(long)]
    pub file: PathBuf,
    /// Directory with the timestamp, snapshot, targets and delegated metadata, and any newer
    /// roots as `N.root.json` (default: the root file's directory).
    #[arg(long)]
    pub metadata: Option<PathBuf>,
    /// Judge expiry at this time (`YYYY-MM-DDTHH:MM:SSZ`) instead of now.
    #[arg(long)]
    pub at: Option<UnixTime>,
    /// One JSON object per line (`{"check", "detail"}`, then `{"verdict", "reason"}`) instead
    /// of text.
    #[arg(long)]
    pub json: bool,
}

/// Why verification failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The metadata or the file was refused.
    #[error("{0}")]
    Refused(String),
    /// A local file could not be read.
    #[error("{0}")]
    Environment(String),
}

impl From<ClientError> for VerifyError {
    fn from(error: ClientError) -> Self {
        match error {
            ClientError::Refused(e) => Self::Refused(e.to_string()),
            ClientError::LocalTooLarge { .. } => Self::Refused(error.to_string()),
            other => Self::Environment(other.to_string()),
        }
    }
}

/// One check and its outcome, as printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked.
    pub what: String,
    /// The detail (versions, values).
    pub detail: String,
}

/// Run `ota-device verify`: print each check, then the verdict.
pub fn run(args: &VerifyArgs) -> ExitCode {
    let mut checks = Vec::new();
    let result = verify(args, &mut checks);
    for check in &checks {
        if args.json {
            println!(
                "{}",
                serde_json::json!({ "check": check.what, "detail": check.detail })
            );
        } else {
            println!("ok  {}: {}", check.what, check.detail);
        }
    }
    let (verdict, reason, code) = match &result {
        Ok(()) => ("verified", None, ExitCode::SUCCESS),
        Err(VerifyError::Refused(reason)) => ("refused", Some(reason), ExitCode::from(1)),
        Err(VerifyError::Environment(reason)) => ("error", Some(reason), ExitCode::from(2)),
    };
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "verdict": verdict, "reason": reason })
        );
    } else if let Some(reason) = reason {
        if code == ExitCode::from(1) {
            println!("REFUSED: {reason}");
        }
    } else {
        println!(
            "VERIFIED: {} is the signed target {}",
            args.file.display(),
            args.target
        );
    }
    if let Some(reason) = reason {
        eprintln!("ota-device verify: {verdict}: {reason}");
    }
    code
}

/// Verify `args.file` as `args.target`; each passed check is appended to `checks`.
pub fn verify(args: &VerifyArgs, checks: &mut Vec<Check>) -> Result<(), VerifyError> {
    let now = args.at.unwrap_or_else(conformance::now);
    let limits = Limits::default();
    let root = read_capped(&args.root, limits.root_max_len)?.ok_or_else(|| {
        VerifyError::Environment(format!("{}: no such file", args.root.display()))
    })?;
    let dir = match &args.metadata {
        Some(dir) => dir.clone(),
        None => args
            .root
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
    };
    let mut updater = Updater::new(limits, &root, TrustedFiles::default())
        .map_err(|e| VerifyError::Refused(format!("trusted root: {e}")))?;
    let first = updater.root().common.version;
    checks.push(Check {
        what: "trusted root".into(),
        detail: format!(
            "version {first}, signed by its own threshold ({})",
            args.root.display()
        ),
    });
    updater
        .refresh()
        .map_err(|e| VerifyError::Refused(e.to_string()))?;
    let mut source = LocalMetadata { dir: dir.clone() };
    conformance::drive(&mut updater, now, &mut source, None)?;
    let root = &updater.root().common;
    checks.push(Check {
        what: "root".into(),
        detail: format!(
            "version {} ({} rotation(s) from {first}), expires {}",
            root.version,
            root.version - first,
            root.expires
        ),
    });
    for (role, common) in [
        ("timestamp", updater.timestamp().map(|t| &t.common)),
        ("snapshot", updater.snapshot().map(|s| &s.common)),
        ("targets", updater.targets().map(|t| &t.common)),
    ] {
        if let Some(common) = common {
            checks.push(Check {
                what: role.into(),
                detail: format!(
                    "version {}, expires {}, threshold of signatures met",
                    common.version, common.expires
                ),
            });
        }
    }
    updater
        .find_target(now, &args.target)
        .map_err(|e| VerifyError::Refused(e.to_string()))?;
    let info = conformance::drive(&mut updater, now, &mut source, None)?.ok_or_else(|| {
        VerifyError::Refused(format!(
            "target {:?} not found in any trusted role",
            args.target
        ))
    })?;
    checks.push(Check {
        what: "target".into(),
        detail: format!(
            "{} listed by role {} (metadata from {})",
            info.path(),
            info.role(),
            dir.display()
        ),
    });
    check_file(&info, &args.file, checks)
}

/// Reads the workflow's files from a directory: the versioned name first, then the
/// non-versioned one a device keeps. For a root, `root.json` stands in for `N.root.json` only
/// when it holds version N (a device keeps its newest root there).
#[derive(Debug)]
struct LocalMetadata {
    dir: PathBuf,
}

impl MetadataSource for LocalMetadata {
    fn fetch(&mut self, role: &str, file: &str, max_len: u64) -> Result<Fetched, ClientError> {
        if let Some(bytes) = self.read(file, max_len)? {
            return Ok(Fetched::Bytes(bytes));
        }
        let plain = format!("{role}.json");
        if plain == file {
            return Ok(Fetched::NotFound);
        }
        let Some(bytes) = self.read(&plain, max_len)? else {
            return Ok(Fetched::NotFound);
        };
        if role == "root" {
            let wanted = file
                .strip_suffix(".root.json")
                .and_then(|v| v.parse::<u64>().ok());
            let held = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v["signed"]["version"].as_u64());
            if wanted.is_none() || held != wanted {
                return Ok(Fetched::NotFound);
            }
        }
        Ok(Fetched::Bytes(bytes))
    }
}

impl LocalMetadata {
    /// `name` in the directory, if present; one over the cap is refused by name.
    fn read(&self, name: &str, max_len: u64) -> Result<Option<Vec<u8>>, ClientError> {
        // The workflow only asks for plain file names; never leave the directory.
        if name.contains(['/', '\\']) || name.starts_with('.') {
            return Ok(None);
        }
        match read_capped(&self.dir.join(name), max_len) {
            Err(ClientError::LocalTooLarge { len, max, .. }) => {
                Err(ClientError::Refused(ota_core::tuf::Error::TooLarge {
                    file: name.into(),
                    len,
                    max,
                }))
            }
            other => other,
        }
    }
}

/// Stream `path` once; compare its length, signed hashes and (for artifacts) BLAKE3.
fn check_file(info: &TargetInfo, path: &Path, checks: &mut Vec<Check>) -> Result<(), VerifyError> {
    let signed = info.file();
    let env = |e: io::Error| VerifyError::Environment(format!("{}: {e}", path.display()));
    let file = File::open(path).map_err(env)?;
    let len = file.metadata().map_err(env)?.len();
    if len != signed.length {
        return Err(VerifyError::Refused(format!(
            "{}: length {len} differs from the signed length {}",
            info.path(),
            signed.length
        )));
    }
    let enigm = signed
        .custom
        .as_ref()
        .and_then(|c| c.get("enigm"))
        .map(|_| artifact_chunks(signed))
        .transpose()
        .map_err(|e| VerifyError::Refused(format!("{}: {e}", info.path())))?;
    let mut sha256 = sha2::Sha256::new();
    let mut sha512 = signed.hashes.contains_key("sha512").then(sha2::Sha512::new);
    let mut blake3 = enigm.as_ref().map(|_| blake3::Hasher::new());
    let mut reader = file.take(signed.length.saturating_add(1));
    let mut buffer = vec![0u8; 1 << 20];
    let mut read = 0u64;
    loop {
        let n = reader.read(&mut buffer).map_err(env)?;
        if n == 0 {
            break;
        }
        let bytes = &buffer[..n];
        read += n as u64;
        sha256.update(bytes);
        if let Some(h) = sha512.as_mut() {
            h.update(bytes);
        }
        if let Some(h) = blake3.as_mut() {
            h.update(bytes);
        }
    }
    if read != signed.length {
        return Err(VerifyError::Refused(format!(
            "{}: length {read} differs from the signed length {} (the file changed while read)",
            info.path(),
            signed.length
        )));
    }
    checks.push(Check {
        what: "length".into(),
        detail: format!("{read} bytes, as signed"),
    });
    let mut computed = vec![("sha256", hex::encode(sha256.finalize()))];
    if let Some(h) = sha512 {
        computed.push(("sha512", hex::encode(h.finalize())));
    }
    let mut matched = 0;
    for (algorithm, actual) in computed {
        let Some(expected) = signed.hashes.get(algorithm) else {
            continue;
        };
        if !actual.eq_ignore_ascii_case(expected) {
            return Err(VerifyError::Refused(format!(
                "{}: {algorithm} hash mismatch: signed {expected}, file has {actual}",
                info.path()
            )));
        }
        matched += 1;
        checks.push(Check {
            what: algorithm.into(),
            detail: format!("{actual}, as signed"),
        });
    }
    if matched == 0 {
        return Err(VerifyError::Refused(format!(
            "{}: no signed hash in an algorithm we compute (sha256, sha512) among {:?}",
            info.path(),
            signed.hashes.keys().take(8).collect::<Vec<_>>()
        )));
    }
    if let (Some(chunks), Some(h)) = (enigm, blake3) {
        let actual = h.finalize();
        if actual.as_bytes() != chunks.blake3.as_bytes() {
            return Err(VerifyError::Refused(format!(
                "{}: blake3 mismatch: signed {}, file has {}",
                info.path(),
                chunks.blake3,
                actual.to_hex()
            )));
        }
        checks.push(Check {
            what: "blake3".into(),
            detail: format!("{}, as signed in custom.enigm", actual.to_hex()),
        });
    }
    Ok(())
}
