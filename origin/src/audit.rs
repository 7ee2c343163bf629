//! The origin's audit log: every release lifecycle step, hash-chained and signed, in the same
//! format as `ota-sign`'s (`ota_sign::audit`), so `ota-sign audit verify --log DATA/audit.jsonl
//! --known-key …` checks it too.
//!
//! Entries are signed by the origin's audit key (`keys/audit.key`, created on first use). An
//! exclusive lock on `audit.lock` keeps the chain linear when the CLI and `serve` (the health
//! gate) append at the same time.

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::Path;

use anyhow::{Context as _, anyhow};
use ota_core::time::UnixTime;
use ota_sign::audit::{Action, Entry, GENESIS, append};
use ota_sign::backend::file::FileKey;
use ota_sign::backend::pkcs11::Pkcs11Key;
use ota_sign::backend::{PinSource, Scheme, SigningKey};
use ota_sign::keyref::Pkcs11Uri;
use serde_json::Value;

use crate::keys::TokenKeys;
use crate::service::Origin;

/// Append one entry to the origin's audit log.
pub fn record(
    origin: &Origin,
    action: Action,
    details: Value,
    now: UnixTime,
) -> anyhow::Result<()> {
    record_in(&origin.dir.path, action, details, now)
}

/// Append one entry to the audit log of the data directory `dir`.
pub fn record_in(dir: &Path, action: Action, details: Value, now: UnixTime) -> anyhow::Result<()> {
    let lock_path = dir.join("audit.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| lock_path.display().to_string())?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;
    let mut key = audit_key(dir)?;
    let log = dir.join("audit.jsonl");
    let (seq, prev) = match last_line(&log)? {
        None => (1, GENESIS.to_string()),
        Some(line) => {
            let last: Entry = serde_json::from_str(&line)
                .with_context(|| format!("{}: the last entry does not parse", log.display()))?;
            (last.seq + 1, last.hash)
        }
    };
    let entry = Entry::seal(seq, now, key.as_mut(), action, details, &prev)
        .map_err(|e| anyhow!("signing the audit entry: {e}"))?;
    append(&log, &entry).with_context(|| log.display().to_string())?;
    drop(lock);
    Ok(())
}

/// The last line of a file, read from its end.
/// The origin's audit key: on a token when `keys/online.json` names one (see
/// [`crate::keys`]), else `keys/audit.key`, created on first use.
fn audit_key(dir: &Path) -> anyhow::Result<Box<dyn SigningKey>> {
    if let Some(uri) = TokenKeys::read(dir)?.audit {
        let uri = Pkcs11Uri::parse(&uri).map_err(|e| anyhow!("the audit key's URI: {e}"))?;
        let key = Pkcs11Key::open(&uri, &PinSource::default())
            .map_err(|e| anyhow!("the audit key: {e}"))?;
        return Ok(Box::new(key));
    }
    let key_path = dir.join("keys").join("audit.key");
    Ok(Box::new(if key_path.exists() {
        FileKey::load(&key_path)?
    } else {
        FileKey::generate(&key_path, Scheme::Ed25519)?
    }))
}

fn last_line(path: &Path) -> anyhow::Result<Option<String>> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| path.display().to_string()),
    };
    let len = file.metadata()?.len();
    let tail = len.min(256 * 1024);
    file.seek(SeekFrom::Start(len - tail))?;
    let mut buffer = Vec::with_capacity(tail as usize);
    file.read_to_end(&mut buffer)?;
    let text = String::from_utf8_lossy(&buffer);
    Ok(text
        .trim_end_matches('\n')
        .rsplit('\n')
        .next()
        .filter(|l| !l.is_empty())
        .map(str::to_string))
}

/// Verify the data directory's audit log: chained, complete, and every entry signed by the
/// origin's audit key. Returns the number of entries, or the problems found.
pub fn verify(dir: &Path) -> anyhow::Result<Result<u64, Vec<String>>> {
    let key = audit_key(dir)?;
    let mut actors = ota_sign::audit::KnownActors::default();
    actors.add(key.public(), "origin", None);
    let log = dir.join("audit.jsonl");
    let bytes = std::fs::read(&log).with_context(|| log.display().to_string())?;
    let report = ota_sign::audit::verify(&bytes, Some(&actors), None);
    if report.problems.is_empty() {
        Ok(Ok(report.entries))
    } else {
        Ok(Err(report
            .problems
            .iter()
            .map(ToString::to_string)
            .collect()))
    }
}
