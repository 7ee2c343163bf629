//! The image repository the origin publishes (DESIGN.md §6 steps 1–3).
//!
//! The origin holds no offline key. For a new release it writes two **signing requests** —
//! the next `release` metadata (the artifacts, for the release authority's HSM) and the next
//! `targets` metadata (the release manifest, for the manifest authority's PIV token) — as
//! TUF envelopes with no signatures. `register` takes them back signed, checks them, signs a new
//! `snapshot` and `timestamp` with the origin's online keys, and then verifies the whole
//! would-be repository **as a device would** (the `ota-core` client workflow, from the trusted
//! root) before anything is published. The result is a [`PublishSet`]: every file to publish,
//! written together in one catalog transaction by the caller.

use std::collections::BTreeMap;

use ota_core::chunk::ArtifactChunks;
use ota_core::digest::Sha256Hash;
use ota_core::time::UnixTime;
use ota_core::tuf::VerifiedArtifact;
use ota_core::tuf::client::{Action, Fetched, Limits, TrustedFiles, Updater};
use ota_core::tuf::enigm::ReleaseManifest;
use ota_core::tuf::metadata::{
    Common, DelegatedRole, Delegations, Envelope, MetaFile, RELEASE_ROLE, Root, Snapshot,
    TargetFile, Targets, Timestamp, sign_role,
};
use sha2::Digest as _;

use crate::keys::OnlineKey;

/// Cap on metadata files the origin reads back from operators.
const MAX_METADATA_LEN: u64 = 16 * 1024 * 1024;

/// An artifact as the origin ingested it: what the signed metadata must say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestedArtifact {
    /// Target path, `artifacts/NAME`.
    pub target: String,
    /// Length in bytes.
    pub length: u64,
    /// SHA-256 of the whole artifact.
    pub sha256: Sha256Hash,
    /// The `custom.enigm` fields.
    pub chunks: ArtifactChunks,
    /// Private content: the target says `custom.enigm.private: true`, and its chunks are
    /// served only to devices offered a release containing it (docs/PROTOCOL.md).
    pub private: bool,
}

/// The origin's online keys.
#[derive(Debug)]
pub struct OnlineKeys {
    /// Signs `snapshot.json`.
    pub snapshot: OnlineKey,
    /// Signs `timestamp.json`.
    pub timestamp: OnlineKey,
}

/// How long the online roles stay valid when the origin signs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnlineExpiry {
    /// Seconds a snapshot stays valid.
    pub snapshot_secs: i64,
    /// Seconds a timestamp stays valid.
    pub timestamp_secs: i64,
}

impl Default for OnlineExpiry {
    fn default() -> Self {
        Self {
            snapshot_secs: 7 * 86_400,
            timestamp_secs: 86_400,
        }
    }
}

/// What `register` checks: the requests the origin wrote, what came back signed, and what the
/// origin ingested.
#[derive(Debug, Clone, Copy)]
pub struct Registration<'a> {
    /// The `release` signing request the origin wrote.
    pub release_request: &'a [u8],
    /// The same, signed by the release authority.
    pub signed_release: &'a [u8],
    /// The `targets` signing request the origin wrote.
    pub targets_request: &'a [u8],
    /// The same, signed by the manifest authority.
    pub signed_targets: &'a [u8],
    /// The release manifest.
    pub manifest: &'a ReleaseManifest,
    /// Its bytes, as published under `releases/`.
    pub manifest_bytes: &'a [u8],
    /// The artifacts as ingested.
    pub expected: &'a [IngestedArtifact],
}

/// Files to publish together, by repository file name (`3.targets.json`, `timestamp.json`, …).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishSet {
    /// File name → bytes.
    pub files: BTreeMap<String, Vec<u8>>,
}

/// Why the origin refuses to register metadata.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// A file is not valid metadata, or its signatures do not meet the threshold.
    #[error("{0}")]
    Metadata(#[from] ota_core::tuf::Error),
    /// The signed metadata is not the request the origin wrote (its content changed).
    #[error("{role}: the signed metadata differs from the signing request")]
    NotTheRequest {
        /// The role.
        role: &'static str,
    },
    /// A device would not accept the result.
    #[error("a device would refuse the result: {0}")]
    DeviceView(String),
    /// A device would see an artifact other than the one ingested.
    #[error("{target}: the repository would serve {found}, the origin ingested {expected}")]
    ArtifactMismatch {
        /// The artifact.
        target: String,
        /// What was ingested.
        expected: String,
        /// What a device would verify.
        found: String,
    },
    /// The repository has no root to publish under.
    #[error("the repository has no {0} yet")]
    Missing(&'static str),
    /// An online key (on a token) failed to sign.
    #[error("signing {role}: {source}")]
    Sign {
        /// The role being signed.
        role: &'static str,
        /// What the key's backend said.
        #[source]
        source: ota_sign::backend::BackendError,
    },
}

/// The repository's current published state.
#[derive(Debug, Clone)]
pub struct Repository {
    root: Root,
    root_bytes: Vec<u8>,
    targets: Option<Targets>,
    release: Option<Targets>,
    snapshot: Option<Snapshot>,
    timestamp: Option<Timestamp>,
}

impl Repository {
    /// A repository with only its root: a root signed by its own threshold.
    pub fn new(root_bytes: &[u8]) -> Result<Self, RegisterError> {
        let envelope = Envelope::parse("root", "root.json", root_bytes, MAX_METADATA_LEN)?;
        let root: Root = envelope.role()?;
        root.verify_role("root", "root", &envelope)?;
        Ok(Self {
            root,
            root_bytes: root_bytes.to_vec(),
            targets: None,
            release: None,
            snapshot: None,
            timestamp: None,
        })
    }

    /// Rebuild the state from published files (signatures were checked when they were
    /// registered; here they are parsed again, not trusted blindly: a bad file fails).
    pub fn load(
        root_bytes: &[u8],
        file: impl Fn(&str) -> Option<Vec<u8>>,
    ) -> Result<Self, RegisterError> {
        let mut repo = Self::new(root_bytes)?;
        let Some(timestamp) = file("timestamp.json") else {
            return Ok(repo);
        };
        let timestamp: Timestamp =
            Envelope::parse("timestamp", "timestamp.json", &timestamp, MAX_METADATA_LEN)?.role()?;
        let snapshot_name = format!("{}.snapshot.json", timestamp.snapshot_meta().version);
        let snapshot: Snapshot = parse_file(&file, "snapshot", &snapshot_name)?;
        let version = |role: &str| {
            snapshot
                .meta
                .get(&format!("{role}.json"))
                .map(|m| m.version)
        };
        if let Some(v) = version("targets") {
            repo.targets = Some(parse_file(&file, "targets", &format!("{v}.targets.json"))?);
        }
        if let Some(v) = version(RELEASE_ROLE) {
            repo.release = Some(parse_file(
                &file,
                RELEASE_ROLE,
                &format!("{v}.release.json"),
            )?);
        }
        repo.snapshot = Some(snapshot);
        repo.timestamp = Some(timestamp);
        Ok(repo)
    }

    /// The trusted root.
    pub fn root(&self) -> &Root {
        &self.root
    }

    /// The signing request for the next `release` metadata: the current artifacts plus
    /// `artifacts`, version raised by one.
    pub fn release_request(&self, artifacts: &[IngestedArtifact], expires: UnixTime) -> Vec<u8> {
        let mut doc = self
            .release
            .clone()
            .unwrap_or_else(|| empty_targets(expires));
        doc.common.version = self.release.as_ref().map_or(1, |r| r.common.version + 1);
        doc.common.expires = expires;
        for artifact in artifacts {
            let mut enigm = serde_json::json!(artifact.chunks);
            if artifact.private
                && let Some(fields) = enigm.as_object_mut()
            {
                fields.insert("private".into(), serde_json::Value::Bool(true));
            }
            let custom = serde_json::json!({ "enigm": enigm });
            doc.targets.insert(
                artifact.target.clone(),
                TargetFile {
                    length: artifact.length,
                    hashes: BTreeMap::from([("sha256".into(), artifact.sha256.to_hex())]),
                    custom: Some(custom),
                    extra: BTreeMap::new(),
                },
            );
        }
        sign_role(&doc, &[])
    }

    /// The signing request for the next `targets` metadata: the current targets plus the
    /// release manifest, and the `release` delegation naming the authority root pins.
    pub fn targets_request(
        &self,
        manifest: &ReleaseManifest,
        manifest_bytes: &[u8],
        expires: UnixTime,
    ) -> Result<Vec<u8>, RegisterError> {
        let authority = self
            .root
            .release_authority
            .as_ref()
            .ok_or(RegisterError::Missing("release authority pinned in root"))?;
        let mut doc = self
            .targets
            .clone()
            .unwrap_or_else(|| empty_targets(expires));
        doc.common.version = self.targets.as_ref().map_or(1, |t| t.common.version + 1);
        doc.common.expires = expires;
        doc.targets.insert(
            manifest.target_path(),
            TargetFile {
                length: manifest_bytes.len() as u64,
                hashes: BTreeMap::from([(
                    "sha256".into(),
                    hex::encode(sha2::Sha256::digest(manifest_bytes)),
                )]),
                custom: None,
                extra: BTreeMap::new(),
            },
        );
        doc.delegations = Some(Delegations {
            keys: authority.keys.clone(),
            roles: vec![DelegatedRole {
                name: RELEASE_ROLE.into(),
                keyids: authority.keyids.clone(),
                threshold: authority.threshold,
                terminating: true,
                paths: Some(vec!["artifacts/*".into()]),
                path_hash_prefixes: None,
                extra: BTreeMap::new(),
            }],
            extra: BTreeMap::new(),
        });
        Ok(sign_role(&doc, &[]))
    }

    /// Import the signed `release` and `targets`, sign a new snapshot and timestamp, and check
    /// the result from a device's point of view: the manifest and every ingested artifact must
    /// verify, with the ingested hashes.
    pub fn register(
        &self,
        registration: &Registration<'_>,
        keys: &OnlineKeys,
        expiry: OnlineExpiry,
        now: UnixTime,
    ) -> Result<(PublishSet, Self), RegisterError> {
        let Registration {
            release_request,
            signed_release,
            targets_request,
            signed_targets,
            manifest,
            manifest_bytes,
            expected,
        } = *registration;
        let release_version = self.release.as_ref().map_or(1, |r| r.common.version + 1);
        let targets_version = self.targets.as_ref().map_or(1, |t| t.common.version + 1);
        let release_file = format!("{release_version}.release.json");
        let targets_file = format!("{targets_version}.targets.json");
        let release_env = Envelope::parse(
            RELEASE_ROLE,
            &release_file,
            signed_release,
            MAX_METADATA_LEN,
        )?;
        let targets_env =
            Envelope::parse("targets", &targets_file, signed_targets, MAX_METADATA_LEN)?;
        // The signers must have signed exactly what the origin asked for.
        for (role, request, signed) in [
            (RELEASE_ROLE, release_request, &release_env),
            ("targets", targets_request, &targets_env),
        ] {
            let request = Envelope::parse(role, "request", request, MAX_METADATA_LEN)?;
            if request.canonical_signed() != signed.canonical_signed() {
                return Err(RegisterError::NotTheRequest { role });
            }
        }
        let release: Targets = release_env.role()?;
        let targets: Targets = targets_env.role()?;
        if release.common.version != release_version {
            return Err(RegisterError::NotTheRequest { role: RELEASE_ROLE });
        }
        if targets.common.version != targets_version {
            return Err(RegisterError::NotTheRequest { role: "targets" });
        }
        self.root.verify_role("targets", "targets", &targets_env)?;
        let authority = self
            .root
            .release_authority
            .as_ref()
            .ok_or(RegisterError::Missing("release authority pinned in root"))?;
        release_env.verify_threshold(
            RELEASE_ROLE,
            &authority.keys,
            &authority.keyids,
            authority.threshold,
        )?;

        let mut snapshot = self.snapshot.clone().unwrap_or_else(|| Snapshot {
            common: Common::new("snapshot", 0, now),
            meta: BTreeMap::new(),
            extra: BTreeMap::new(),
        });
        snapshot.common.version += 1;
        snapshot.common.expires = now.plus_secs(expiry.snapshot_secs);
        snapshot
            .meta
            .insert("targets.json".into(), pin(targets_version, signed_targets));
        snapshot
            .meta
            .insert("release.json".into(), pin(release_version, signed_release));
        let snapshot_bytes =
            keys.snapshot
                .sign_document(&snapshot)
                .map_err(|source| RegisterError::Sign {
                    role: "snapshot",
                    source,
                })?;

        let mut set = PublishSet::default();
        set.files.insert(release_file, signed_release.to_vec());
        set.files.insert(targets_file, signed_targets.to_vec());
        set.files.insert(
            format!("{}.snapshot.json", snapshot.common.version),
            snapshot_bytes.clone(),
        );
        let mut next = self.clone();
        next.release = Some(release);
        next.targets = Some(targets);
        next.snapshot = Some(snapshot);
        let (timestamp_bytes, timestamp) =
            next.next_timestamp(&snapshot_bytes, keys, expiry, now)?;
        next.timestamp = Some(timestamp);
        set.files.insert("timestamp.json".into(), timestamp_bytes);

        next.check_as_device(&set, manifest, manifest_bytes, expected, now)?;
        Ok((set, next))
    }

    /// A fresh timestamp over the current snapshot (run before the current one expires).
    pub fn refresh_timestamp(
        &self,
        keys: &OnlineKeys,
        expiry: OnlineExpiry,
        now: UnixTime,
        snapshot_bytes: &[u8],
    ) -> Result<(PublishSet, Self), RegisterError> {
        if self.snapshot.is_none() {
            return Err(RegisterError::Missing("snapshot"));
        }
        let mut next = self.clone();
        let (bytes, timestamp) = next.next_timestamp(snapshot_bytes, keys, expiry, now)?;
        next.timestamp = Some(timestamp);
        let mut set = PublishSet::default();
        set.files.insert("timestamp.json".into(), bytes);
        Ok((set, next))
    }

    /// When the current timestamp expires, if there is one.
    pub fn timestamp_expires(&self) -> Option<UnixTime> {
        self.timestamp.as_ref().map(|t| t.common.expires)
    }

    fn next_timestamp(
        &self,
        snapshot_bytes: &[u8],
        keys: &OnlineKeys,
        expiry: OnlineExpiry,
        now: UnixTime,
    ) -> Result<(Vec<u8>, Timestamp), RegisterError> {
        let version = self.timestamp.as_ref().map_or(1, |t| t.common.version + 1);
        let snapshot_version = self.snapshot.as_ref().map_or(1, |s| s.common.version);
        let timestamp = Timestamp {
            common: Common::new("timestamp", version, now.plus_secs(expiry.timestamp_secs)),
            meta: BTreeMap::from([(
                "snapshot.json".into(),
                pin(snapshot_version, snapshot_bytes),
            )]),
            extra: BTreeMap::new(),
        };
        let bytes =
            keys.timestamp
                .sign_document(&timestamp)
                .map_err(|source| RegisterError::Sign {
                    role: "timestamp",
                    source,
                })?;
        Ok((bytes, timestamp))
    }

    /// Run the device's client workflow over the files to publish (falling back to nothing
    /// else: every file a device needs for this release is in the set or is the root).
    fn check_as_device(
        &self,
        set: &PublishSet,
        manifest: &ReleaseManifest,
        manifest_bytes: &[u8],
        expected: &[IngestedArtifact],
        now: UnixTime,
    ) -> Result<(), RegisterError> {
        let device = |e: ota_core::tuf::Error| RegisterError::DeviceView(e.to_string());
        let mut updater =
            Updater::new(Limits::default(), &self.root_bytes, TrustedFiles::default())
                .map_err(device)?;
        updater.refresh().map_err(device)?;
        let mut wanted: Vec<String> = expected.iter().map(|a| a.target.clone()).collect();
        wanted.push(manifest.target_path());
        let mut found: BTreeMap<String, VerifiedArtifactOrManifest> = BTreeMap::new();
        loop {
            match updater.poll_action() {
                Some(Action::Fetch(request)) => {
                    let fetched = set
                        .files
                        .get(&request.file)
                        .cloned()
                        .map_or(Fetched::NotFound, Fetched::Bytes);
                    updater
                        .handle_fetched(now, &request, fetched)
                        .map_err(device)?;
                }
                Some(Action::Refreshed) => {
                    let Some(next) = wanted.pop() else { break };
                    updater.find_target(now, &next).map_err(device)?;
                }
                Some(Action::Found(info)) => {
                    let path = info.path().to_string();
                    let entry = if path.starts_with("artifacts/") {
                        VerifiedArtifactOrManifest::Artifact(info.into_artifact().map_err(device)?)
                    } else {
                        info.verify_bytes(manifest_bytes).map_err(device)?;
                        VerifiedArtifactOrManifest::Manifest
                    };
                    found.insert(path, entry);
                    let Some(next) = wanted.pop() else { break };
                    updater.find_target(now, &next).map_err(device)?;
                }
                Some(_) => {}
                None => break,
            }
        }
        for artifact in expected {
            let Some(VerifiedArtifactOrManifest::Artifact(seen)) = found.get(&artifact.target)
            else {
                return Err(RegisterError::DeviceView(format!(
                    "{} not found",
                    artifact.target
                )));
            };
            let ingested = (artifact.length, artifact.sha256, &artifact.chunks);
            let signed = (seen.length(), *seen.sha256(), seen.chunks());
            if ingested != signed {
                return Err(RegisterError::ArtifactMismatch {
                    target: artifact.target.clone(),
                    expected: format!("{} bytes, sha256 {}", artifact.length, artifact.sha256),
                    found: format!("{} bytes, sha256 {}", seen.length(), seen.sha256()),
                });
            }
        }
        if !matches!(
            found.get(&manifest.target_path()),
            Some(VerifiedArtifactOrManifest::Manifest)
        ) {
            return Err(RegisterError::DeviceView(format!(
                "{} not found",
                manifest.target_path()
            )));
        }
        Ok(())
    }
}

#[derive(Debug)]
enum VerifiedArtifactOrManifest {
    Artifact(VerifiedArtifact),
    Manifest,
}

fn empty_targets(expires: UnixTime) -> Targets {
    Targets {
        common: Common::new("targets", 0, expires),
        targets: BTreeMap::new(),
        delegations: None,
        extra: BTreeMap::new(),
    }
}

fn pin(version: u64, bytes: &[u8]) -> MetaFile {
    let mut meta = MetaFile::version(version);
    meta.length = Some(bytes.len() as u64);
    meta.hashes = Some(BTreeMap::from([(
        "sha256".into(),
        hex::encode(sha2::Sha256::digest(bytes)),
    )]));
    meta
}

fn parse_file<R: ota_core::tuf::metadata::Role>(
    file: &impl Fn(&str) -> Option<Vec<u8>>,
    role: &str,
    name: &str,
) -> Result<R, RegisterError> {
    let bytes = file(name).ok_or_else(|| {
        RegisterError::Metadata(ota_core::tuf::Error::FileNotFound { file: name.into() })
    })?;
    Ok(Envelope::parse(role, name, &bytes, MAX_METADATA_LEN)?.role()?)
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use ota_core::chunk::{ChunkingParams, CutChunk, Ingest};
    use ota_core::tuf::enigm::{Channel, ManifestArtifact, ReleaseNumber};
    use ota_core::tuf::metadata::{ReleaseAuthority, RoleKeys, Signature};
    use ota_core::tuf::{InMemoryKey, Key};

    use super::*;

    const NOW: UnixTime = UnixTime(1_795_392_000);
    const LATER: UnixTime = UnixTime(1_893_456_000);

    struct Keys {
        root: InMemoryKey,
        targets: InMemoryKey,
        release: InMemoryKey,
        online: OnlineKeys,
    }

    fn keys() -> Keys {
        let k = |n: u8| InMemoryKey::ed25519_from_seed([n; 32]);
        Keys {
            root: k(1),
            targets: InMemoryKey::p256_from_scalar([2; 32]).unwrap(),
            release: k(3),
            online: OnlineKeys {
                snapshot: k(4).into(),
                timestamp: k(5).into(),
            },
        }
    }

    fn root(keys: &Keys) -> Vec<u8> {
        let role = |k: &Key| RoleKeys {
            keyids: vec![k.key_id()],
            threshold: 1,
            extra: BTreeMap::new(),
        };
        let all = [
            keys.root.public(),
            keys.targets.public(),
            keys.online.snapshot.public(),
            keys.online.timestamp.public(),
        ];
        let root = Root {
            common: Common::new("root", 1, LATER),
            consistent_snapshot: true,
            keys: all.iter().map(|k| (k.key_id(), k.clone())).collect(),
            roles: BTreeMap::from([
                ("root".into(), role(&all[0])),
                ("targets".into(), role(&all[1])),
                ("snapshot".into(), role(&all[2])),
                ("timestamp".into(), role(&all[3])),
            ]),
            release_authority: Some(ReleaseAuthority {
                keys: BTreeMap::from([(keys.release.public().key_id(), keys.release.public())]),
                keyids: vec![keys.release.public().key_id()],
                threshold: 1,
            }),
            extra: BTreeMap::new(),
        };
        sign_role(&root, &[&keys.root])
    }

    fn ingest(name: &str, bytes: &[u8]) -> IngestedArtifact {
        let sink = |_: CutChunk<'_>| Ok::<(), Infallible>(());
        let mut ingest = Ingest::new(ChunkingParams::DEFAULT);
        ingest.update(bytes, sink).unwrap();
        let done = ingest.finish(sink).unwrap();
        IngestedArtifact {
            target: format!("artifacts/{name}"),
            length: done.length,
            sha256: done.sha256,
            chunks: done.chunks,
            private: false,
        }
    }

    /// What `ota-sign sign` does: one more signature over the canonical `signed`.
    fn cosign(request: &[u8], role: &str, key: &InMemoryKey) -> Vec<u8> {
        let mut envelope = Envelope::parse(role, "request", request, MAX_METADATA_LEN).unwrap();
        let sig = key.sign(envelope.canonical_signed());
        envelope.add_signature(Signature {
            keyid: key.public().key_id(),
            sig: hex::encode(sig),
        });
        envelope.to_bytes()
    }

    fn manifest(number: u64, artifact: &IngestedArtifact) -> (ReleaseManifest, Vec<u8>) {
        let manifest = ReleaseManifest {
            channel: Channel("stable".into()),
            release: ReleaseNumber(number),
            version: format!("2026.11.{number}"),
            security: false,
            models: vec!["enigm-one".into()],
            min_installed_release: None,
            artifacts: vec![ManifestArtifact {
                target: artifact.target.clone(),
                slot: "system".into(),
            }],
        };
        let bytes = serde_json::to_vec(&manifest).unwrap();
        (manifest, bytes)
    }

    struct Release {
        artifact: IngestedArtifact,
        manifest: ReleaseManifest,
        manifest_bytes: Vec<u8>,
        release_request: Vec<u8>,
        targets_request: Vec<u8>,
    }

    fn prepare(repo: &Repository, number: u64) -> Release {
        let artifact = ingest(
            &format!("system-{number}.img"),
            &vec![number as u8; 300_000],
        );
        let (manifest, manifest_bytes) = manifest(number, &artifact);
        Release {
            release_request: repo.release_request(std::slice::from_ref(&artifact), LATER),
            targets_request: repo
                .targets_request(&manifest, &manifest_bytes, LATER)
                .unwrap(),
            artifact,
            manifest,
            manifest_bytes,
        }
    }

    fn register(
        repo: &Repository,
        r: &Release,
        signed_release: &[u8],
        signed_targets: &[u8],
        keys: &Keys,
    ) -> Result<(PublishSet, Repository), RegisterError> {
        repo.register(
            &Registration {
                release_request: &r.release_request,
                signed_release,
                targets_request: &r.targets_request,
                signed_targets,
                manifest: &r.manifest,
                manifest_bytes: &r.manifest_bytes,
                expected: std::slice::from_ref(&r.artifact),
            },
            &keys.online,
            OnlineExpiry::default(),
            NOW,
        )
    }

    #[test]
    fn two_releases_register_and_reload() {
        let keys = keys();
        let root = root(&keys);
        let repo = Repository::new(&root).unwrap();
        let r1 = prepare(&repo, 1);
        let (set, repo) = register(
            &repo,
            &r1,
            &cosign(&r1.release_request, "release", &keys.release),
            &cosign(&r1.targets_request, "targets", &keys.targets),
            &keys,
        )
        .unwrap();
        let names: Vec<&str> = set.files.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "1.release.json",
                "1.snapshot.json",
                "1.targets.json",
                "timestamp.json"
            ]
        );

        let r2 = prepare(&repo, 2);
        let (set2, repo2) = register(
            &repo,
            &r2,
            &cosign(&r2.release_request, "release", &keys.release),
            &cosign(&r2.targets_request, "targets", &keys.targets),
            &keys,
        )
        .unwrap();
        assert!(set2.files.contains_key("2.release.json"));
        let mut all = set.files.clone();
        all.extend(set2.files.clone());
        let reloaded = Repository::load(&root, |name| all.get(name).cloned()).unwrap();
        assert_eq!(
            reloaded.timestamp_expires(),
            repo2.timestamp_expires(),
            "the reloaded state is the registered one"
        );
        // Release 2's metadata still lists release 1's artifact: older stages keep working.
        let release: Targets = Envelope::parse(
            "release",
            "r",
            &set2.files["2.release.json"],
            MAX_METADATA_LEN,
        )
        .unwrap()
        .role()
        .unwrap();
        assert!(release.targets.contains_key("artifacts/system-1.img"));
    }

    #[test]
    fn a_private_artifact_says_so_in_its_signed_target_and_still_parses() {
        let keys = keys();
        let repo = Repository::new(&root(&keys)).unwrap();
        let public = ingest("public-1.img", b"public bytes");
        let private = IngestedArtifact {
            private: true,
            ..ingest("private-1.img", b"private bytes")
        };
        let request = repo.release_request(&[public, private.clone()], NOW.plus_secs(86_400));
        let release: Targets = Envelope::parse("release", "r", &request, MAX_METADATA_LEN)
            .unwrap()
            .role()
            .unwrap();
        let flag = |target: &str| {
            release.targets[target].custom.as_ref().unwrap()["enigm"]
                .get("private")
                .cloned()
        };
        assert_eq!(
            flag("artifacts/private-1.img"),
            Some(serde_json::json!(true))
        );
        assert_eq!(flag("artifacts/public-1.img"), None);
        // Devices read the chunk fields as before (unknown fields are ignored).
        let chunks =
            ota_core::tuf::enigm::artifact_chunks(&release.targets["artifacts/private-1.img"])
                .unwrap();
        assert_eq!(chunks, private.chunks);
    }

    #[test]
    fn release_signed_by_the_manifest_key_is_refused() {
        let keys = keys();
        let repo = Repository::new(&root(&keys)).unwrap();
        let r = prepare(&repo, 1);
        let err = register(
            &repo,
            &r,
            &cosign(&r.release_request, "release", &keys.targets),
            &cosign(&r.targets_request, "targets", &keys.targets),
            &keys,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "release: 0 valid signature(s) from distinct keys, 1 needed"
        );
    }

    #[test]
    fn signed_metadata_that_is_not_the_request_is_refused() {
        let keys = keys();
        let repo = Repository::new(&root(&keys)).unwrap();
        let r = prepare(&repo, 1);
        // The signer was handed a request whose artifact length was changed.
        let mut altered: serde_json::Value = serde_json::from_slice(&r.release_request).unwrap();
        altered["signed"]["targets"]["artifacts/system-1.img"]["length"] = 1.into();
        let altered = serde_json::to_vec(&altered).unwrap();
        let err = register(
            &repo,
            &r,
            &cosign(&altered, "release", &keys.release),
            &cosign(&r.targets_request, "targets", &keys.targets),
            &keys,
        )
        .unwrap_err();
        assert!(matches!(
            err,
            RegisterError::NotTheRequest { role: "release" }
        ));
    }

    #[test]
    fn unsigned_targets_is_refused() {
        let keys = keys();
        let repo = Repository::new(&root(&keys)).unwrap();
        let r = prepare(&repo, 1);
        let err = register(
            &repo,
            &r,
            &cosign(&r.release_request, "release", &keys.release),
            &r.targets_request,
            &keys,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "targets: 0 valid signature(s) from distinct keys, 1 needed"
        );
    }

    #[test]
    fn artifact_other_than_ingested_is_refused() {
        let keys = keys();
        let repo = Repository::new(&root(&keys)).unwrap();
        let mut r = prepare(&repo, 1);
        let signed_release = cosign(&r.release_request, "release", &keys.release);
        let signed_targets = cosign(&r.targets_request, "targets", &keys.targets);
        r.artifact.sha256 = Sha256Hash::of(b"another build");
        let err = register(&repo, &r, &signed_release, &signed_targets, &keys).unwrap_err();
        assert!(
            matches!(err, RegisterError::ArtifactMismatch { .. }),
            "{err}"
        );
    }
}
