//! The operations of the signing authorities: sign, approve, and the root ceremonies.
//!
//! Each operation records what happens in the station's audit log, signed by the key the
//! operator unlocked: a `request` entry when a request is presented, then exactly one of
//! `signature`, `approval` or `refusal`. Ceremony steps (`root create`, `root rotate`, a root
//! installed, a key generated) add a `ceremony` entry. An output leaves the tool only after it
//! is in the log; the caller writes it atomically.
//!
//! The order of a signature: the file-key gate (before anything is unlocked or logged), the
//! request entry, parsing, the policy review ([`crate::review`]), the key check (the key must
//! be one the trusted root lists for this role: the manifest key never signs `release`, the
//! release key never signs `targets`, an approval key never signs metadata), the approvals
//! (for a role under dual control), the operator's confirmation, the signature (verified
//! against the key before use), the log, the state, and, for a root whose thresholds are now
//! all met, its installation as the station's trusted root.

use std::collections::BTreeMap;

use ota_core::time::UnixTime;
use ota_core::tuf::Key;
use ota_core::tuf::metadata::{
    Common, Envelope, ReleaseAuthority, RoleKeys, Root, Signature, sign_role,
};
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::approval::{self, Approval};
use crate::audit::Action;
use crate::backend::SigningKey;
use crate::error::Error;
use crate::refusal::Refusal;
use crate::request::{Document, Request};
use crate::review::{Review, check_key, review, signer_sets, threshold_status};
use crate::roles::{SignRole, role_keys};
use crate::station::{Station, verify_root_step};

/// What an operation produced.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The file to write (signed metadata or an approval).
    pub output: Vec<u8>,
    /// What to tell the operator.
    pub messages: Vec<String>,
}

/// A signature to make.
#[derive(Debug, Clone, Copy)]
pub struct SignInput<'a> {
    /// The role signed for.
    pub role: SignRole,
    /// The request file's bytes.
    pub request: &'a [u8],
    /// The request file's name, for the log.
    pub request_name: &'a str,
    /// Approval files.
    pub approvals: &'a [Vec<u8>],
    /// Release manifest files to check and show (targets only).
    pub manifests: &'a [Vec<u8>],
    /// Allow a development file key for an offline role.
    pub insecure_file_keys: bool,
    /// Now.
    pub now: UnixTime,
}

/// The operator's confirmation: shown the review, answers whether to go on.
pub type Confirm<'a> = &'a mut dyn FnMut(&Review) -> bool;

/// Refuse a development file key for an offline role (nothing is logged: see [`crate::audit`]).
pub fn file_key_gate(
    key: &dyn SigningKey,
    role: SignRole,
    insecure_file_keys: bool,
) -> Result<(), Error> {
    if key.reference().is_file() && role.is_offline() && !insecure_file_keys {
        return Err(Refusal::FileKeyForOfflineRole { role }.into());
    }
    Ok(())
}

/// Add `key`'s signature to a request, after the policy checks and the operator's
/// confirmation.
pub fn sign(
    station: &mut Station,
    key: &mut dyn SigningKey,
    input: &SignInput<'_>,
    confirm: Confirm<'_>,
) -> Result<Outcome, Error> {
    let role = input.role;
    file_key_gate(key, role, input.insecure_file_keys)?;
    let now = input.now;
    let details = json!({
        "purpose": "signature",
        "role": role,
        "file": input.request_name,
        "file_sha256": hex::encode(sha2::Sha256::digest(input.request)),
        "key": key.reference().to_string(),
        "insecure_file_key": key.reference().is_file() && role.is_offline(),
    });
    station.record(key, Action::Request, details, now)?;
    let checked = (|| {
        let request = Request::parse(role, input.request)?;
        let review = review(station, &request, input.manifests, now)?;
        let keyid = check_key(station, &request, key.public())?;
        let approvals = input
            .approvals
            .iter()
            .map(|bytes| Approval::parse(bytes))
            .collect::<Result<Vec<_>, _>>()?;
        let counted = approval::check(station.policy(), role, request.digest(), &approvals, now)?;
        Ok::<_, Error>((request, review, keyid, counted))
    })();
    let (mut request, mut review, keyid, counted) = match checked {
        Ok(c) => c,
        Err(e) => return Err(refuse(station, key, role, None, e, now)),
    };
    if !counted.is_empty() {
        let names: Vec<&str> = counted.iter().map(|c| c.operator.as_str()).collect();
        review.lines.push(format!(
            "approvals: {} ({})",
            counted.len(),
            names.join(", ")
        ));
    }
    review
        .lines
        .push(format!("key:       {keyid} ({})", key.reference()));
    if !confirm(&review) {
        return Err(refuse(
            station,
            key,
            role,
            Some(&request),
            Refusal::Declined.into(),
            now,
        ));
    }
    let sig = match key.sign(request.canonical()) {
        Ok(sig) => sig,
        Err(e) => return Err(refuse(station, key, role, Some(&request), e.into(), now)),
    };
    let sig_hex = hex::encode(&sig);
    request.add_signature(Signature {
        keyid: keyid.clone(),
        sig: sig_hex.clone(),
    });
    let sets = signer_sets(station, &request)?;
    let (status, complete) = threshold_status(&request, &sets);
    station.record(
        key,
        Action::Signature,
        json!({
            "role": role,
            "request": request.digest(),
            "version": request.version(),
            "expires": request.expires(),
            "keyid": keyid,
            "sig": sig_hex,
            "approvals": counted,
            "policy": station.policy_digest(),
            "thresholds": status,
        }),
        now,
    )?;
    let digest = request.digest();
    let version = request.version();
    let new_manifests = review.new_manifests;
    station.update_state(|s| {
        s.roles.insert(
            role,
            crate::station::SignedVersion {
                version,
                request: digest,
            },
        );
        for m in &new_manifests {
            let last = s.channels.entry(m.channel.clone()).or_insert(0);
            *last = (*last).max(m.release);
            s.manifests.insert(m.path.clone(), m.sha256.clone());
        }
    })?;
    let output = request.to_bytes();
    let mut messages = status;
    if role == SignRole::Root && complete {
        let envelope = Envelope::parse("root", "root request", &output, u64::MAX)
            .map_err(|source| crate::request::RequestError::Metadata { role, source })?;
        let Document::Root(root) = request.document() else {
            unreachable!("a root request holds a root")
        };
        let previous = station.root().map(|t| t.root.clone());
        verify_root_step(previous.as_ref(), &envelope, root)
            .map_err(|source| crate::request::RequestError::Metadata { role, source })?;
        station.install_root(&output, root.clone())?;
        station.record(
            key,
            Action::Ceremony,
            json!({ "step": "root-installed", "version": version, "request": digest }),
            now,
        )?;
        messages.push(format!(
            "every threshold is met: root version {version} is now this station's trusted root"
        ));
    } else if complete {
        messages.push(format!("{role}: every threshold is met"));
    }
    Ok(Outcome { output, messages })
}

/// Record a refusal (best effort: the original error is returned either way).
fn refuse(
    station: &mut Station,
    key: &mut dyn SigningKey,
    role: SignRole,
    request: Option<&Request>,
    error: Error,
    now: UnixTime,
) -> Error {
    let _ = station.record(
        key,
        Action::Refusal,
        json!({
            "role": role,
            "request": request.map(Request::digest),
            "reason": error.to_string(),
            "exit_code": error.exit_code(),
        }),
        now,
    );
    error
}

/// An approval to give.
#[derive(Debug, Clone, Copy)]
pub struct ApproveInput<'a> {
    /// The role whose key will sign.
    pub role: SignRole,
    /// The request file's bytes.
    pub request: &'a [u8],
    /// The request file's name, for the log.
    pub request_name: &'a str,
    /// Release manifest files to check and show (targets only).
    pub manifests: &'a [Vec<u8>],
    /// How long the approval counts.
    pub valid_secs: i64,
    /// Allow a development file key as the operator's key.
    pub insecure_file_keys: bool,
    /// Now.
    pub now: UnixTime,
}

/// An operator approves a request with their key, after the same review a signer sees.
pub fn approve(
    station: &mut Station,
    key: &mut dyn SigningKey,
    input: &ApproveInput<'_>,
    confirm: Confirm<'_>,
) -> Result<Outcome, Error> {
    let role = input.role;
    file_key_gate(key, role, input.insecure_file_keys)?;
    let now = input.now;
    let details = json!({
        "purpose": "approval",
        "role": role,
        "file": input.request_name,
        "file_sha256": hex::encode(sha2::Sha256::digest(input.request)),
        "key": key.reference().to_string(),
    });
    station.record(key, Action::Request, details, now)?;
    let checked = (|| {
        let policy = station.policy();
        let (name, operator) =
            policy
                .operator_by_key(key.public())
                .ok_or_else(|| Refusal::NotAnOperator {
                    keyid: key.public().key_id().to_string(),
                })?;
        if let Some(revoked) = operator.revoked
            && now >= revoked
        {
            return Err(Refusal::OperatorRevoked {
                operator: name.into(),
                revoked,
            }
            .into());
        }
        let max_hours = policy.approval_max_hours;
        let max_secs = i64::try_from(max_hours)
            .unwrap_or(i64::MAX)
            .saturating_mul(3600);
        if input.valid_secs <= 0 || input.valid_secs > max_secs {
            return Err(Refusal::ApprovalLifetime { max_hours }.into());
        }
        let name = name.to_string();
        let request = Request::parse(role, input.request)?;
        let review = review(station, &request, input.manifests, now)?;
        Ok::<_, Error>((name, request, review))
    })();
    let (operator, request, mut review) = match checked {
        Ok(c) => c,
        Err(e) => return Err(refuse(station, key, role, None, e, now)),
    };
    review.lines.push(format!(
        "approval:  by operator {operator}, valid until {}",
        now.plus_secs(input.valid_secs)
    ));
    if !confirm(&review) {
        return Err(refuse(
            station,
            key,
            role,
            Some(&request),
            Refusal::Declined.into(),
            now,
        ));
    }
    let approval = match Approval::create(
        key,
        role,
        request.digest(),
        request.version(),
        now,
        input.valid_secs,
    ) {
        Ok(a) => a,
        Err(e) => return Err(refuse(station, key, role, Some(&request), e.into(), now)),
    };
    station.record(
        key,
        Action::Approval,
        json!({
            "role": role,
            "request": request.digest(),
            "version": request.version(),
            "operator": operator,
            "expires": approval.signed.expires,
            "approval": approval.digest(),
            "policy": station.policy_digest(),
        }),
        now,
    )?;
    Ok(Outcome {
        output: approval.to_bytes(),
        messages: vec![format!(
            "operator {operator} approved {role} request {} until {}",
            request.digest(),
            approval.signed.expires
        )],
    })
}

/// Keys and a threshold for one role of a root.
#[derive(Debug, Clone)]
pub struct KeyList {
    /// The keys.
    pub keys: Vec<Key>,
    /// Distinct keys needed.
    pub threshold: u64,
}

/// What a new root lists. In a rotation, `None` keeps the installed root's entry.
#[derive(Debug, Clone)]
pub struct RootSpec {
    /// The root's expiry.
    pub expires: UnixTime,
    /// Root keys.
    pub root: Option<KeyList>,
    /// Manifest authority keys.
    pub targets: Option<KeyList>,
    /// Snapshot keys (online).
    pub snapshot: Option<KeyList>,
    /// Timestamp keys (online).
    pub timestamp: Option<KeyList>,
    /// Release authority keys (pinned).
    pub release: Option<KeyList>,
}

fn role_entry(keys: &mut BTreeMap<ota_core::tuf::KeyId, Key>, list: &KeyList) -> RoleKeys {
    let mut keyids = Vec::new();
    for key in &list.keys {
        let id = key.key_id();
        keys.insert(id.clone(), key.clone());
        if !keyids.contains(&id) {
            keyids.push(id);
        }
    }
    RoleKeys {
        keyids,
        threshold: list.threshold,
        extra: BTreeMap::new(),
    }
}

/// The root request `spec` describes: version `version`, starting from `base` (the installed
/// root in a rotation), with no signatures.
pub fn root_request(version: u64, spec: &RootSpec, base: Option<&Root>) -> Result<Vec<u8>, Error> {
    let missing = |what: &str| {
        Error::from(Refusal::Inconsistent {
            role: SignRole::Root,
            reason: format!("no {what} keys given"),
        })
    };
    let keep = |role: SignRole| -> Option<KeyList> {
        let set = role_keys(base?, role)?;
        Some(KeyList {
            keys: set
                .keyids
                .iter()
                .filter_map(|id| set.keys.get(id).cloned())
                .collect(),
            threshold: set.threshold,
        })
    };
    let pick = |given: &Option<KeyList>, role: SignRole| given.clone().or_else(|| keep(role));
    let mut keys = BTreeMap::new();
    let mut roles = BTreeMap::new();
    for (name, role, given) in [
        ("root", SignRole::Root, &spec.root),
        ("targets", SignRole::Targets, &spec.targets),
        ("snapshot", SignRole::Snapshot, &spec.snapshot),
        ("timestamp", SignRole::Timestamp, &spec.timestamp),
    ] {
        let list = pick(given, role).ok_or_else(|| missing(name))?;
        roles.insert(name.to_string(), role_entry(&mut keys, &list));
    }
    let release = pick(&spec.release, SignRole::Release).ok_or_else(|| missing("release"))?;
    let mut release_keys = BTreeMap::new();
    let release_role = role_entry(&mut release_keys, &release);
    let root = Root {
        common: Common::new("root", version, spec.expires),
        consistent_snapshot: true,
        keys,
        roles,
        release_authority: Some(ReleaseAuthority {
            keys: release_keys,
            keyids: release_role.keyids,
            threshold: release_role.threshold,
        }),
        extra: BTreeMap::new(),
    };
    Ok(sign_role(&root, &[]))
}

fn spec_details(step: &str, version: u64, bytes: &[u8]) -> Value {
    let summary: Value = serde_json::from_slice::<Value>(bytes)
        .ok()
        .and_then(|v| v.get("signed").cloned())
        .map(|signed| {
            json!({
                "roles": signed.get("roles"),
                "release_authority": signed.get(ota_core::tuf::metadata::RELEASE_AUTHORITY_FIELD)
                    .map(|a| json!({"keyids": a.get("keyids"), "threshold": a.get("threshold")})),
                "expires": signed.get("expires"),
            })
        })
        .unwrap_or(Value::Null);
    json!({ "step": step, "version": version, "root": summary })
}

/// `root create`: the first root of a station, opened and signed by one of its root keys.
pub fn root_create(
    station: &mut Station,
    key: &mut dyn SigningKey,
    spec: &RootSpec,
    insecure_file_keys: bool,
    now: UnixTime,
    confirm: Confirm<'_>,
) -> Result<Outcome, Error> {
    file_key_gate(key, SignRole::Root, insecure_file_keys)?;
    let bytes = root_request(1, spec, None)?;
    station.record(
        key,
        Action::Ceremony,
        spec_details("root-create", 1, &bytes),
        now,
    )?;
    let input = SignInput {
        role: SignRole::Root,
        request: &bytes,
        request_name: "root create",
        approvals: &[],
        manifests: &[],
        insecure_file_keys,
        now,
    };
    sign(station, key, &input, confirm)
}

/// `root rotate`: version N+1 of the installed root with the roles `spec` replaces, opened
/// and signed by `key` (a root key of version N or N+1).
pub fn root_rotate(
    station: &mut Station,
    key: &mut dyn SigningKey,
    spec: &RootSpec,
    insecure_file_keys: bool,
    now: UnixTime,
    confirm: Confirm<'_>,
) -> Result<Outcome, Error> {
    file_key_gate(key, SignRole::Root, insecure_file_keys)?;
    let trusted = station.require_root()?.root.clone();
    let version = trusted.common.version + 1;
    let bytes = root_request(version, spec, Some(&trusted))?;
    station.record(
        key,
        Action::Ceremony,
        spec_details("root-rotate", version, &bytes),
        now,
    )?;
    let input = SignInput {
        role: SignRole::Root,
        request: &bytes,
        request_name: "root rotate",
        approvals: &[],
        manifests: &[],
        insecure_file_keys,
        now,
    };
    sign(station, key, &input, confirm)
}

/// `root install`: adopt a fully signed root at another station. Version 1 is accepted on
/// the operator's word (they compare its digest with the ceremony record); version N+1 only
/// when signed by the thresholds of N and N+1. `key` must be a key the new root lists or an
/// operator's.
pub fn root_install(
    station: &mut Station,
    key: &mut dyn SigningKey,
    bytes: &[u8],
    now: UnixTime,
) -> Result<Outcome, Error> {
    let checked = (|| {
        let request = Request::parse(SignRole::Root, bytes)?;
        let Document::Root(root) = request.document() else {
            unreachable!("a root request holds a root")
        };
        let known = !crate::roles::roles_of(root, key.public()).is_empty()
            || station.policy().operator_by_key(key.public()).is_some();
        if !known {
            return Err(Refusal::KeyNotForRole {
                keyid: key.public().key_id().to_string(),
                role: SignRole::Root,
                listed_for: Vec::new(),
            }
            .into());
        }
        let trusted_version = station.root().map_or(0, |t| t.root.common.version);
        if root.common.version != trusted_version + 1 {
            return Err(Refusal::RootNotNext {
                version: root.common.version,
                trusted: trusted_version,
            }
            .into());
        }
        let previous = station.root().map(|t| t.root.clone());
        verify_root_step(previous.as_ref(), request.envelope(), root).map_err(|source| {
            crate::request::RequestError::Metadata {
                role: SignRole::Root,
                source,
            }
        })?;
        Ok::<_, Error>((request.digest(), root.clone()))
    })();
    let (digest, root) = match checked {
        Ok(c) => c,
        Err(e) => return Err(refuse(station, key, SignRole::Root, None, e, now)),
    };
    let version = root.common.version;
    station.install_root(bytes, root)?;
    station.record(
        key,
        Action::Ceremony,
        json!({ "step": "root-installed", "version": version, "request": digest }),
        now,
    )?;
    Ok(Outcome {
        output: Vec::new(),
        messages: vec![format!(
            "root version {version} (sha256 {digest}) is now this station's trusted root"
        )],
    })
}

/// Check signed metadata against the trusted roots (oldest first; the newest is the trusted
/// one): every threshold must be met, for a root its own and that of the root before it.
/// Returns the status lines.
pub fn verify_signed(roots: &[Root], role: SignRole, bytes: &[u8]) -> Result<Vec<String>, Error> {
    let trusted = roots
        .last()
        .ok_or(crate::station::StationError::NoTrustedRoot)?;
    let request = Request::parse(role, bytes)?;
    let mut sets = Vec::new();
    if let Document::Root(new) = request.document() {
        if let Some(set) = role_keys(new, SignRole::Root) {
            sets.push((format!("root (version {})", new.common.version), set));
        }
        if let Some(prev) = roots
            .iter()
            .find(|r| r.common.version + 1 == new.common.version)
            && let Some(set) = role_keys(prev, SignRole::Root)
        {
            sets.push((format!("root (version {})", prev.common.version), set));
        }
    } else {
        let set = role_keys(trusted, role).ok_or_else(|| Refusal::Inconsistent {
            role,
            reason: "the trusted root lists no keys for this role".into(),
        })?;
        sets.push((role.to_string(), set));
    }
    let (lines, complete) = threshold_status(&request, &sets);
    if !complete {
        return Err(Refusal::Incomplete {
            role,
            status: lines.join("; "),
        }
        .into());
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use ota_core::tuf::metadata::Targets;

    use super::*;
    use crate::backend::Scheme;
    use crate::backend::file::FileKey;

    const NOW: UnixTime = UnixTime(1_795_392_000);

    struct Bench {
        dir: tempfile::TempDir,
        keys: BTreeMap<&'static str, FileKey>,
    }

    impl Bench {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let mut keys = BTreeMap::new();
            for (name, scheme) in [
                ("root-1", Scheme::Ed25519),
                ("root-2", Scheme::P256),
                ("root-3", Scheme::Ed25519),
                ("root-4", Scheme::Ed25519),
                ("targets", Scheme::P256),
                ("release", Scheme::Ed25519),
                ("online", Scheme::Ed25519),
                ("alice", Scheme::P256),
                ("bob", Scheme::P256),
            ] {
                let path = dir.path().join(format!("{name}.key"));
                keys.insert(name, FileKey::generate(&path, scheme).unwrap());
            }
            let op = |n: &str| json!({ "key": keys[n].public() });
            let policy = json!({
                "operators": { "alice": op("alice"), "bob": op("bob") },
                "roles": {
                    "root": { "max_expiry_days": 365 },
                    "targets": { "max_expiry_days": 90 },
                    "release": { "max_expiry_days": 90, "approvals": 2 }
                }
            });
            std::fs::write(
                dir.path().join("policy.json"),
                serde_json::to_vec(&policy).unwrap(),
            )
            .unwrap();
            Self { dir, keys }
        }

        fn station(&self) -> Station {
            Station::open(self.dir.path()).unwrap()
        }

        fn list(&self, names: &[&str], threshold: u64) -> Option<KeyList> {
            Some(KeyList {
                keys: names
                    .iter()
                    .map(|n| self.keys[n].public().clone())
                    .collect(),
                threshold,
            })
        }

        fn spec(&self) -> RootSpec {
            RootSpec {
                expires: NOW.plus_secs(300 * 86_400),
                root: self.list(&["root-1", "root-2", "root-3"], 2),
                targets: self.list(&["targets"], 1),
                snapshot: self.list(&["online"], 1),
                timestamp: self.list(&["online"], 1),
                release: self.list(&["release"], 1),
            }
        }

        fn key(&mut self, name: &str) -> &mut FileKey {
            self.keys.get_mut(name).unwrap()
        }

        fn sign(
            &mut self,
            role: SignRole,
            key: &str,
            request: &[u8],
            approvals: &[Vec<u8>],
        ) -> Result<Outcome, Error> {
            let mut station = self.station();
            let input = SignInput {
                role,
                request,
                request_name: "test",
                approvals,
                manifests: &[],
                insecure_file_keys: true,
                now: NOW,
            };
            sign(&mut station, self.key(key), &input, &mut |_| true)
        }

        fn approve(&mut self, operator: &str, request: &[u8]) -> Result<Vec<u8>, Error> {
            let mut station = self.station();
            let input = ApproveInput {
                role: SignRole::Release,
                request,
                request_name: "test",
                manifests: &[],
                valid_secs: 3600,
                insecure_file_keys: true,
                now: NOW,
            };
            approve(&mut station, self.key(operator), &input, &mut |_| true).map(|o| o.output)
        }

        fn installed_version(&self) -> Option<u64> {
            self.station().root().map(|t| t.root.common.version)
        }
    }

    fn release_request(version: u64) -> Vec<u8> {
        let doc = Targets {
            common: Common::new("targets", version, NOW.plus_secs(86_400)),
            targets: BTreeMap::new(),
            delegations: None,
            extra: BTreeMap::new(),
        };
        sign_role(&doc, &[])
    }

    fn log_actions(dir: &Path) -> Vec<String> {
        std::fs::read_to_string(dir.join("audit.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["action"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn root_ceremony_installs_at_the_threshold_and_rotation_needs_both() {
        let mut b = Bench::new();
        let spec = b.spec();
        let mut station = b.station();
        let created = root_create(&mut station, b.key("root-1"), &spec, true, NOW, &mut |_| {
            true
        })
        .unwrap();
        drop(station);
        assert_eq!(b.installed_version(), None, "1 of 2 signatures");
        b.sign(SignRole::Root, "root-2", &created.output, &[])
            .unwrap();
        assert_eq!(b.installed_version(), Some(1));

        // Rotation: root-3 retired, root-4 added.
        let mut rotated_spec = spec.clone();
        rotated_spec.root = b.list(&["root-1", "root-2", "root-4"], 2);
        let mut station = b.station();
        let rotated = root_rotate(
            &mut station,
            b.key("root-4"),
            &rotated_spec,
            true,
            NOW,
            &mut |_| true,
        )
        .unwrap();
        drop(station);
        // root-4 counts for the new root only, root-1 for both: the old threshold still lacks
        // one; root-3 (old root only) completes it and the station installs version 2.
        let half = b
            .sign(SignRole::Root, "root-1", &rotated.output, &[])
            .unwrap();
        assert!(
            half.messages
                .iter()
                .any(|m| m.contains("trusted root (version 1): 1 of 2")),
            "{:?}",
            half.messages
        );
        assert_eq!(b.installed_version(), Some(1));
        let done = b.sign(SignRole::Root, "root-3", &half.output, &[]).unwrap();
        assert!(
            done.messages.iter().any(|m| m.contains("root version 2")),
            "{:?}",
            done.messages
        );
        assert_eq!(b.installed_version(), Some(2));
        // Version 2 is installed: signing it again is not a rising version.
        let err = b
            .sign(SignRole::Root, "root-3", &done.output, &[])
            .unwrap_err();
        assert!(
            matches!(err, Error::Refusal(Refusal::VersionNotRising { .. })),
            "{err}"
        );
    }

    #[test]
    fn dual_control_then_rising_versions() {
        let mut b = Bench::new();
        let spec = b.spec();
        let mut station = b.station();
        let created = root_create(&mut station, b.key("root-1"), &spec, true, NOW, &mut |_| {
            true
        })
        .unwrap();
        drop(station);
        b.sign(SignRole::Root, "root-2", &created.output, &[])
            .unwrap();

        let request = release_request(3);
        let err = b
            .sign(SignRole::Release, "release", &request, &[])
            .unwrap_err();
        assert_eq!(
            err,
            Error::Refusal(Refusal::TooFewApprovals {
                role: SignRole::Release,
                have: 0,
                needed: 2
            })
        );
        let approvals = vec![
            b.approve("alice", &request).unwrap(),
            b.approve("bob", &request).unwrap(),
        ];
        b.sign(SignRole::Release, "release", &request, &approvals)
            .unwrap();
        let state = b.station().state().clone();
        assert_eq!(state.roles[&SignRole::Release].version, 3);

        let older = release_request(2);
        // An operator is shown the same checks: a version below the last is not approved.
        let err = b.approve("alice", &older).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Refusal(Refusal::VersionNotRising { last: 3, .. })
            ),
            "{err}"
        );
        // Nor signed, whatever approvals come with it.
        let err = b
            .sign(SignRole::Release, "release", &older, &approvals)
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Refusal(Refusal::VersionNotRising { last: 3, .. })
            ),
            "{err}"
        );

        let actions = log_actions(b.dir.path());
        assert_eq!(actions.iter().filter(|a| *a == "approval").count(), 2);
        assert_eq!(actions.iter().filter(|a| *a == "refusal").count(), 3);
        assert_eq!(actions.last().map(String::as_str), Some("refusal"));
        let station = b.station();
        let report = station
            .verify_log(Some(&station.known_actors(&[])))
            .unwrap();
        assert_eq!(report.problems, []);
    }

    #[test]
    fn a_declined_confirmation_signs_nothing_and_is_logged() {
        let mut b = Bench::new();
        let spec = b.spec();
        let mut station = b.station();
        let err = root_create(&mut station, b.key("root-1"), &spec, true, NOW, &mut |_| {
            false
        })
        .unwrap_err();
        assert_eq!(err, Error::Refusal(Refusal::Declined));
        drop(station);
        assert_eq!(
            log_actions(b.dir.path()),
            ["ceremony", "request", "refusal"]
        );
        assert!(b.station().state().roles.is_empty());
    }
}
