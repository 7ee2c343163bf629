//! What the operator is shown before signing, and the policy checks that come with it.
//!
//! [`review`] refuses a request the station must not sign:
//!
//! - **version**: below the last version this station signed for the role, or equal to it
//!   with other content (two documents under one version); a root that is not the next version
//!   of the installed root;
//! - **expiry**: not in the future, or beyond the policy's maximum for the role;
//! - **release numbers** (`targets`): a release manifest this station has not signed before
//!   must be numbered above the last release signed for its channel; a manifest signed before
//!   must not change;
//! - **consistency**: `targets` must delegate `release` exactly as the trusted root pins the
//!   release authority (same keys, at least its threshold, terminating, `artifacts/*`) and list
//!   only release manifests `releases/CHANNEL/NUMBER.json`; `release` must list only artifacts
//!   under `artifacts/*` whose `custom.enigm` fields agree with their length; a root must pin
//!   the release authority, use consistent snapshots and list no operator's approval key;
//!   manifest files given for review must be listed in the request under their own channel and
//!   number;
//! - **signatures already present** must be valid signatures of keys allowed for the role.
//!
//! The review lists the role, version, expiry, channels and release numbers, artifacts with
//! lengths and hashes, and the signatures so far.

use std::collections::BTreeSet;

use ota_core::chunk::ArtifactChunks;
use ota_core::time::UnixTime;
use ota_core::tuf::enigm::{MAX_MANIFEST_LEN, ReleaseManifest, artifact_chunks};
use ota_core::tuf::metadata::{Root, Snapshot, Targets, Timestamp};
use ota_core::tuf::{Key, KeyId};
use sha2::Digest as _;

use crate::error::Error;
use crate::refusal::Refusal;
use crate::request::{Document, Request};
use crate::roles::{RoleKeySet, SignRole, key_identity, role_keys, roles_of};
use crate::station::Station;

/// The review of a request: what to show, and what signing it changes in the station state.
#[derive(Debug, Clone, Default)]
pub struct Review {
    /// Lines to show the operator.
    pub lines: Vec<String>,
    /// Release manifests new to this station.
    pub new_manifests: Vec<NewManifest>,
}

/// A release manifest signed for the first time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewManifest {
    /// Its target path.
    pub path: String,
    /// Its channel.
    pub channel: String,
    /// Its release number.
    pub release: u64,
    /// Its SHA-256, hex.
    pub sha256: String,
}

/// Check `request` against the station's policy and state at `now`, and describe it.
/// `manifests` are release manifest files the operator wants checked against a `targets`
/// request and shown.
pub fn review(
    station: &Station,
    request: &Request,
    manifests: &[Vec<u8>],
    now: UnixTime,
) -> Result<Review, Error> {
    let role = request.role();
    let rules = station
        .policy()
        .roles
        .get(&role)
        .ok_or(Refusal::NoPolicyForRole { role })?;
    let trusted = station.root().map(|t| &t.root);
    let mut out = Review::default();
    out.lines.push(format!("role:      {role}"));
    out.lines
        .push(format!("request:   sha256 {}", request.digest()));

    // Version.
    let version = request.version();
    if role == SignRole::Root {
        let trusted_version = trusted.map_or(0, |r| r.common.version);
        if version <= trusted_version {
            return Err(Refusal::VersionNotRising {
                role,
                version,
                last: trusted_version,
            }
            .into());
        }
        if version != trusted_version + 1 {
            return Err(Refusal::RootNotNext {
                version,
                trusted: trusted_version,
            }
            .into());
        }
        out.lines.push(format!(
            "version:   {version} (installed root: {})",
            if trusted_version == 0 {
                "none".to_string()
            } else {
                format!("version {trusted_version}")
            }
        ));
    } else {
        match station.state().roles.get(&role) {
            Some(last) if version < last.version => {
                return Err(Refusal::VersionNotRising {
                    role,
                    version,
                    last: last.version,
                }
                .into());
            }
            Some(last) if version == last.version && last.request != request.digest() => {
                return Err(Refusal::VersionReused {
                    role,
                    version,
                    signed: last.request,
                }
                .into());
            }
            Some(last) if version == last.version => out.lines.push(format!(
                "version:   {version} (co-signing: signed here before)"
            )),
            Some(last) => out.lines.push(format!(
                "version:   {version} (last signed here: {})",
                last.version
            )),
            None => out
                .lines
                .push(format!("version:   {version} (first signed here)")),
        }
    }

    // Expiry.
    let expires = request.expires();
    if expires <= now {
        return Err(Refusal::Expired { role, expires, now }.into());
    }
    let max_secs = i64::try_from(rules.max_expiry_days)
        .unwrap_or(i64::MAX)
        .saturating_mul(86_400);
    let latest = now.plus_secs(max_secs);
    if expires > latest {
        return Err(Refusal::ExpiryTooFar {
            role,
            expires,
            max_days: rules.max_expiry_days,
            latest,
        }
        .into());
    }
    out.lines.push(format!(
        "expires:   {expires} (in {} days; the policy allows {})",
        (expires.0 - now.0) / 86_400,
        rules.max_expiry_days
    ));

    // What the role's metadata says.
    match request.document() {
        Document::Root(root) => review_root(station, trusted, root, &mut out)?,
        Document::Targets(targets) if role == SignRole::Targets => {
            let trusted = station.require_root()?;
            review_targets(station, &trusted.root, targets, manifests, &mut out)?;
        }
        Document::Targets(release) => review_release(release, &mut out)?,
        Document::Snapshot(snapshot) => review_snapshot(snapshot, &mut out),
        Document::Timestamp(timestamp) => review_timestamp(timestamp, &mut out),
    }
    if role != SignRole::Targets && !manifests.is_empty() {
        return Err(Refusal::Inconsistent {
            role,
            reason: "release manifests are reviewed with targets requests only".into(),
        }
        .into());
    }

    // Signatures already present.
    let sets = signer_sets(station, request)?;
    for signature in request.envelope().signatures() {
        let key = sets
            .iter()
            .find_map(|(_, set)| set.keys.get(&signature.keyid))
            .ok_or_else(|| Refusal::ForeignSignature {
                keyid: signature.keyid.to_string(),
                reason: "is not a key of the role",
            })?;
        let valid = hex::decode(&signature.sig).is_ok_and(|s| key.verify(request.canonical(), &s));
        if !valid {
            return Err(Refusal::ForeignSignature {
                keyid: signature.keyid.to_string(),
                reason: "does not verify",
            }
            .into());
        }
    }
    out.lines.extend(threshold_status(request, &sets).0);
    Ok(out)
}

/// The key sets whose thresholds a request must meet, with a label each: the role's keys in
/// the trusted root; for a root, the new root's root keys and, when rotating, the installed
/// root's.
pub fn signer_sets(
    station: &Station,
    request: &Request,
) -> Result<Vec<(String, RoleKeySet)>, Error> {
    let role = request.role();
    if let Document::Root(new) = request.document() {
        let mut sets = Vec::new();
        if let Some(set) = role_keys(new, SignRole::Root) {
            sets.push((format!("new root (version {})", new.common.version), set));
        }
        if let Some(trusted) = station.root()
            && let Some(set) = role_keys(&trusted.root, SignRole::Root)
        {
            sets.push((
                format!("trusted root (version {})", trusted.root.common.version),
                set,
            ));
        }
        return Ok(sets);
    }
    let trusted = station.require_root()?;
    let set = role_keys(&trusted.root, role).ok_or_else(|| Refusal::Inconsistent {
        role,
        reason: "the trusted root lists no keys for this role".into(),
    })?;
    Ok(vec![(role.to_string(), set)])
}

/// One line per key set with the signatures so far, and whether every threshold is met.
pub fn threshold_status(request: &Request, sets: &[(String, RoleKeySet)]) -> (Vec<String>, bool) {
    let mut complete = true;
    let lines = sets
        .iter()
        .map(|(label, set)| {
            match request
                .envelope()
                .verify_threshold(label, &set.keys, &set.keyids, set.threshold)
            {
                Ok(()) => format!("threshold: {label}: {} needed, met", set.threshold),
                Err(ota_core::tuf::Error::ThresholdNotMet { valid, needed, .. }) => {
                    complete = false;
                    format!("threshold: {label}: {valid} of {needed} signatures")
                }
                Err(e) => {
                    complete = false;
                    format!("threshold: {label}: {e}")
                }
            }
        })
        .collect();
    (lines, complete)
}

/// The key id under which the role lists `key`, refusing any other key.
pub fn check_key(station: &Station, request: &Request, key: &Key) -> Result<KeyId, Error> {
    let role = request.role();
    if let Some((operator, _)) = station.policy().operator_by_key(key) {
        return Err(Refusal::OperatorKeyAsRoleKey {
            keyid: key.key_id().to_string(),
            operator: operator.into(),
        }
        .into());
    }
    let sets = signer_sets(station, request)?;
    if let Some(id) = sets.iter().find_map(|(_, set)| set.find(key)) {
        return Ok(id.clone());
    }
    let listed_for = match (request.document(), station.root()) {
        (Document::Root(new), _) => roles_of(new, key),
        (_, Some(trusted)) => roles_of(&trusted.root, key),
        (_, None) => Vec::new(),
    };
    Err(Refusal::KeyNotForRole {
        keyid: key.key_id().to_string(),
        role,
        listed_for,
    }
    .into())
}

fn inconsistent(role: SignRole, reason: String) -> Refusal {
    Refusal::Inconsistent { role, reason }
}

fn short(id: &KeyId) -> &str {
    id.0.get(..16).unwrap_or(&id.0)
}

fn describe_set(set: &RoleKeySet) -> String {
    let keys: Vec<String> = set
        .keyids
        .iter()
        .map(|id| {
            let scheme = set.keys.get(id).map_or("?", |k| k.scheme());
            format!("{} ({scheme})", short(id))
        })
        .collect();
    format!(
        "{} of {} keys: {}",
        set.threshold,
        set.keyids.len(),
        keys.join(", ")
    )
}

fn review_root(
    station: &Station,
    trusted: Option<&Root>,
    root: &Root,
    out: &mut Review,
) -> Result<(), Refusal> {
    let role = SignRole::Root;
    if root.release_authority.is_none() {
        return Err(inconsistent(
            role,
            "it pins no release authority (x-enigm-release-authority): the manifest key alone \
             could swap the release keys"
                .into(),
        ));
    }
    if !root.consistent_snapshot {
        return Err(inconsistent(
            role,
            "consistent_snapshot is false; our repositories publish consistent snapshots".into(),
        ));
    }
    if let Some(other) = root
        .roles
        .keys()
        .find(|r| !ota_core::tuf::metadata::TOP_LEVEL_ROLES.contains(&r.as_str()))
    {
        return Err(inconsistent(
            role,
            format!("it lists an unknown role {other:?}"),
        ));
    }
    for (name, operator) in &station.policy().operators {
        let listed = roles_of(root, &operator.key);
        if !listed.is_empty() {
            let names: Vec<&str> = listed.iter().map(|r| r.name()).collect();
            return Err(inconsistent(
                role,
                format!(
                    "operator {name}'s approval key is listed for {}; approval keys and role \
                     keys must differ",
                    names.join(", ")
                ),
            ));
        }
    }
    for r in [
        SignRole::Root,
        SignRole::Targets,
        SignRole::Release,
        SignRole::Snapshot,
        SignRole::Timestamp,
    ] {
        let Some(set) = role_keys(root, r) else {
            continue;
        };
        let label = if r == SignRole::Release {
            "release (pinned)".to_string()
        } else {
            r.to_string()
        };
        out.lines
            .push(format!("  {label:<17} {}", describe_set(&set)));
        if let Some(old) = trusted.and_then(|t| role_keys(t, r)) {
            let ids = |s: &RoleKeySet| -> BTreeSet<Vec<u8>> {
                s.keys.values().filter_map(key_identity).collect()
            };
            let (before, after) = (ids(&old), ids(&set));
            let added = after.difference(&before).count();
            let removed = before.difference(&after).count();
            if added + removed > 0 || old.threshold != set.threshold {
                out.lines.push(format!(
                    "  {:<17} changed: {added} key(s) added, {removed} removed, threshold {} -> {}",
                    "", old.threshold, set.threshold
                ));
            }
        }
    }
    Ok(())
}

/// `releases/CHANNEL/NUMBER.json` → (channel, number).
fn manifest_path(path: &str) -> Option<(&str, u64)> {
    let rest = path.strip_prefix("releases/")?;
    let (channel, file) = rest.split_once('/')?;
    let number = file.strip_suffix(".json")?;
    let channel_ok = !channel.is_empty()
        && channel.len() <= 64
        && channel
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !channel.starts_with('.');
    let number_ok = !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
        && (number == "0" || !number.starts_with('0'));
    if !channel_ok || !number_ok {
        return None;
    }
    Some((channel, number.parse().ok()?))
}

fn sha256_of(
    role: SignRole,
    path: &str,
    file: &ota_core::tuf::metadata::TargetFile,
) -> Result<String, Refusal> {
    let sha = file
        .hashes
        .get("sha256")
        .ok_or_else(|| inconsistent(role, format!("{path} has no sha256 hash")))?;
    if sha.len() != 64
        || !sha
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(inconsistent(
            role,
            format!("{path}: sha256 is not 64 lowercase hex digits"),
        ));
    }
    if let Some(other) = file
        .hashes
        .keys()
        .find(|a| !["sha256", "sha512"].contains(&a.as_str()))
    {
        return Err(inconsistent(
            role,
            format!("{path}: hash algorithm {other:?} is not one stock TUF clients know"),
        ));
    }
    Ok(sha.clone())
}

fn review_targets(
    station: &Station,
    root: &Root,
    targets: &Targets,
    manifests: &[Vec<u8>],
    out: &mut Review,
) -> Result<(), Refusal> {
    let role = SignRole::Targets;
    // The delegation must be the release authority pinned in root.
    let delegations = targets.delegations.as_ref().ok_or_else(|| {
        inconsistent(
            role,
            "it delegates no release role: devices would find no artifacts".into(),
        )
    })?;
    let [delegated] = delegations.roles.as_slice() else {
        let names: Vec<&str> = delegations.roles.iter().map(|r| r.name.as_str()).collect();
        return Err(inconsistent(
            role,
            format!("it must delegate exactly the role release, it delegates {names:?}"),
        ));
    };
    if delegated.name != SignRole::Release.name() {
        return Err(inconsistent(
            role,
            format!("it delegates {:?} instead of release", delegated.name),
        ));
    }
    let pin = role_keys(root, SignRole::Release)
        .ok_or_else(|| inconsistent(role, "the trusted root pins no release authority".into()))?;
    let pinned: BTreeSet<Vec<u8>> = pin.keys.values().filter_map(key_identity).collect();
    let named: BTreeSet<Vec<u8>> = delegated
        .keyids
        .iter()
        .filter_map(|id| delegations.keys.get(id))
        .filter_map(key_identity)
        .collect();
    if named != pinned {
        return Err(inconsistent(
            role,
            "the release delegation names other keys than the release authority pinned in the \
             trusted root"
                .into(),
        ));
    }
    if delegated.threshold < pin.threshold {
        return Err(inconsistent(
            role,
            format!(
                "the release delegation's threshold {} is below the pinned threshold {}",
                delegated.threshold, pin.threshold
            ),
        ));
    }
    if !delegated.terminating
        || delegated.path_hash_prefixes.is_some()
        || delegated.paths.as_deref() != Some(&["artifacts/*".to_string()][..])
    {
        return Err(inconsistent(
            role,
            "the release delegation must be terminating with paths [\"artifacts/*\"]".into(),
        ));
    }
    out.lines.push(format!(
        "delegates: release, {} key(s) as pinned in root, threshold {}, terminating, artifacts/*",
        named.len(),
        delegated.threshold
    ));

    // Release manifests.
    out.lines.push("releases:".into());
    if targets.targets.is_empty() {
        out.lines.push("  (none)".into());
    }
    let state = station.state();
    for (path, file) in &targets.targets {
        let (channel, release) = manifest_path(path).ok_or_else(|| {
            inconsistent(
                role,
                format!(
                    "it lists {path}, which is not a release manifest \
                     (releases/CHANNEL/NUMBER.json); artifacts belong to the release role"
                ),
            )
        })?;
        let sha = sha256_of(role, path, file)?;
        if file.custom.is_some() {
            return Err(inconsistent(role, format!("{path} carries custom fields")));
        }
        if file.length > MAX_MANIFEST_LEN {
            return Err(inconsistent(
                role,
                format!("{path} is {} bytes, over the manifest cap", file.length),
            ));
        }
        let status = match state.manifests.get(path) {
            Some(signed) if *signed == sha => "signed before",
            Some(_) => return Err(Refusal::ManifestChanged { path: path.clone() }),
            None => {
                if let Some(last) = state.channels.get(channel)
                    && release <= *last
                {
                    return Err(Refusal::ReleaseNotRising {
                        path: path.clone(),
                        channel: channel.into(),
                        release,
                        last: *last,
                    });
                }
                out.new_manifests.push(NewManifest {
                    path: path.clone(),
                    channel: channel.into(),
                    release,
                    sha256: sha.clone(),
                });
                "NEW"
            }
        };
        out.lines.push(format!(
            "  channel {channel} release {release} [{status}]: {path}, {} bytes, sha256 {sha}",
            file.length
        ));
    }
    for bytes in manifests {
        let sha = hex::encode(sha2::Sha256::digest(bytes));
        let (path, _) = targets
            .targets
            .iter()
            .find(|(_, f)| f.hashes.get("sha256") == Some(&sha) && f.length == bytes.len() as u64)
            .ok_or_else(|| {
                inconsistent(
                    role,
                    format!(
                        "a manifest given for review (sha256 {sha}) is not listed in the request"
                    ),
                )
            })?;
        let manifest = ReleaseManifest::parse(bytes).map_err(|e| inconsistent(role, e))?;
        if manifest.target_path() != *path {
            return Err(inconsistent(
                role,
                format!(
                    "{path} holds the manifest of channel {} release {}",
                    manifest.channel.0, manifest.release.0
                ),
            ));
        }
        out.lines.push(format!(
            "  {path}: version {}, security {}, models {}, upgrades from release {}",
            manifest.version,
            manifest.security,
            manifest.models.join(", "),
            manifest
                .min_installed_release
                .map_or_else(|| "any".to_string(), |r| r.0.to_string())
        ));
        for artifact in &manifest.artifacts {
            out.lines.push(format!(
                "    artifact {} -> slot {}",
                artifact.target, artifact.slot
            ));
        }
    }
    Ok(())
}

fn review_release(release: &Targets, out: &mut Review) -> Result<(), Refusal> {
    let role = SignRole::Release;
    if release.delegations.is_some() {
        return Err(inconsistent(
            role,
            "it delegates further; release is a terminating leaf role".into(),
        ));
    }
    out.lines.push("artifacts:".into());
    if release.targets.is_empty() {
        out.lines.push("  (none)".into());
    }
    for (path, file) in &release.targets {
        let name = path.strip_prefix("artifacts/").unwrap_or("");
        if name.is_empty() || name.contains('/') {
            return Err(inconsistent(
                role,
                format!("{path} is outside artifacts/*, the only paths the release role signs"),
            ));
        }
        let sha = sha256_of(role, path, file)?;
        let chunks =
            artifact_chunks(file).map_err(|e| inconsistent(role, format!("{path}: {e}")))?;
        let ours = serde_json::json!({ "enigm": chunks });
        if file.custom.as_ref() != Some(&ours) {
            return Err(inconsistent(
                role,
                format!("{path}: custom holds fields our tools do not write"),
            ));
        }
        check_chunk_fields(path, file.length, &chunks).map_err(|e| inconsistent(role, e))?;
        out.lines.push(format!("  {path}"));
        out.lines.push(format!("    length      {}", file.length));
        out.lines.push(format!("    sha256      {sha}"));
        out.lines.push(format!("    blake3      {}", chunks.blake3));
        out.lines.push(format!(
            "    chunks      {} (fastcdc {}/{}/{}), tree {}",
            chunks.chunks,
            chunks.chunking.min(),
            chunks.chunking.avg(),
            chunks.chunking.max(),
            chunks.chunk_tree
        ));
    }
    Ok(())
}

/// The chunk fields must agree with the artifact's length.
fn check_chunk_fields(path: &str, length: u64, chunks: &ArtifactChunks) -> Result<(), String> {
    let count = u128::from(chunks.chunks);
    let len = u128::from(length);
    let (min, max) = (
        u128::from(chunks.chunking.min()),
        u128::from(chunks.chunking.max()),
    );
    let index_len = 40 + 36 * count;
    if u128::from(chunks.chunk_index_length) != index_len {
        return Err(format!(
            "{path}: chunk_index_length {} is not 40 + 36 x {} chunks",
            chunks.chunk_index_length, chunks.chunks
        ));
    }
    if (count == 0) != (len == 0) {
        return Err(format!("{path}: {count} chunks for {length} bytes"));
    }
    if count > 0 && (len > count * max || len < (count - 1) * min + 1) {
        return Err(format!(
            "{path}: {length} bytes cannot be cut into {count} chunks of {min} to {max} bytes"
        ));
    }
    Ok(())
}

fn review_snapshot(snapshot: &Snapshot, out: &mut Review) {
    out.lines.push("meta:".into());
    for (name, meta) in &snapshot.meta {
        out.lines.push(format!(
            "  {name}: version {}{}",
            meta.version,
            meta.length
                .map_or_else(String::new, |l| format!(", {l} bytes"))
        ));
    }
}

fn review_timestamp(timestamp: &Timestamp, out: &mut Review) {
    let meta = timestamp.snapshot_meta();
    out.lines.push(format!(
        "meta:      snapshot.json version {}{}",
        meta.version,
        meta.length
            .map_or_else(String::new, |l| format!(", {l} bytes"))
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_paths() {
        assert_eq!(
            manifest_path("releases/stable/12.json"),
            Some(("stable", 12))
        );
        for bad in [
            "releases/stable/012.json",
            "releases/stable/x.json",
            "releases//1.json",
            "releases/a/b/1.json",
            "artifacts/stable/1.json",
            "releases/stable/1.img",
            "releases/.hidden/1.json",
        ] {
            assert_eq!(manifest_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn chunk_fields_must_fit_the_length() {
        let chunks = |n: u64, index: u64| -> ArtifactChunks {
            serde_json::from_value(serde_json::json!({
                "blake3": "00".repeat(32),
                "chunking": {"algorithm": "fastcdc-2020", "min": 16384, "avg": 65536, "max": 262144},
                "chunks": n, "chunk_tree": "00".repeat(32), "chunk_index": "00".repeat(32),
                "chunk_index_length": index
            }))
            .unwrap()
        };
        assert!(check_chunk_fields("a", 300_000, &chunks(2, 112)).is_ok());
        assert!(check_chunk_fields("a", 300_000, &chunks(2, 113)).is_err());
        assert!(check_chunk_fields("a", 0, &chunks(0, 40)).is_ok());
        assert!(check_chunk_fields("a", 1, &chunks(0, 40)).is_err());
        assert!(
            check_chunk_fields("a", 300_000, &chunks(1, 76)).is_err(),
            "over max"
        );
        assert!(
            check_chunk_fields("a", 20_000, &chunks(3, 148)).is_err(),
            "under min"
        );
    }
}
