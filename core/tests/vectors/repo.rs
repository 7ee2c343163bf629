//! A small, deterministic TUF repository for tests: every key comes from a fixed seed and
//! signatures are deterministic (Ed25519, and ECDSA with RFC 6979), so the same calls always
//! produce the same bytes.

use std::collections::BTreeMap;

use ota_core::time::UnixTime;
use ota_core::tuf::InMemoryKey;
use ota_core::tuf::metadata::{
    Common, DelegatedRole, Delegations, MetaFile, ReleaseAuthority, Role, RoleKeys, Root, Snapshot,
    TargetFile, Targets, Timestamp, sign_role,
};
use sha2::Digest as _;

/// Keys are derived from names, so a scenario reads as "signed by timestamp-2".
pub fn key(name: &str) -> InMemoryKey {
    InMemoryKey::ed25519_from_seed(*blake3::hash(name.as_bytes()).as_bytes())
}

/// A P-256 key derived from a name.
pub fn p256_key(name: &str) -> InMemoryKey {
    InMemoryKey::p256_from_scalar(*blake3::hash(name.as_bytes()).as_bytes())
        .expect("a BLAKE3 output is a valid P-256 scalar with overwhelming probability")
}

/// 2030-01-01T00:00:00Z: metadata is fresh until then.
pub const EXPIRES: UnixTime = UnixTime(1_893_456_000);
/// The time scenarios run at unless they say otherwise: 2026-11-23T00:00:00Z.
pub const NOW: UnixTime = UnixTime(1_795_392_000);

/// The artifact every standard repository carries.
pub const ARTIFACT: &str = "artifacts/system-1.img";
/// Its bytes.
pub fn artifact_bytes() -> Vec<u8> {
    let mut out = vec![0u8; 300_000];
    blake3::Hasher::new()
        .update(b"artifact")
        .finalize_xof()
        .fill(&mut out);
    out
}

pub fn role_keys(keys: &[&InMemoryKey], threshold: u64) -> RoleKeys {
    RoleKeys {
        keyids: keys.iter().map(|k| k.public().key_id()).collect(),
        threshold,
        extra: BTreeMap::new(),
    }
}

pub fn target_file(bytes: &[u8], custom: Option<serde_json::Value>) -> TargetFile {
    TargetFile {
        length: bytes.len() as u64,
        hashes: BTreeMap::from([(
            "sha256".to_string(),
            hex::encode(sha2::Sha256::digest(bytes)),
        )]),
        custom,
        extra: BTreeMap::new(),
    }
}

/// A repository under construction: typed role documents, their signers, and the published
/// files.
pub struct Repo {
    pub root: Root,
    pub root_signers: Vec<InMemoryKey>,
    pub timestamp: Timestamp,
    pub timestamp_signers: Vec<InMemoryKey>,
    pub snapshot: Snapshot,
    pub snapshot_signers: Vec<InMemoryKey>,
    pub targets: Targets,
    pub targets_signers: Vec<InMemoryKey>,
    pub release: Targets,
    pub release_signers: Vec<InMemoryKey>,
    /// Pin the lengths and hashes of targets and release in snapshot.
    pub snapshot_pins_hashes: bool,
    /// Published metadata, by file name.
    pub metadata: BTreeMap<String, Vec<u8>>,
    /// Published target files, by download path.
    pub targets_dir: BTreeMap<String, Vec<u8>>,
}

impl Repo {
    /// The standard layout of DESIGN.md §2: root 2-of-3, `targets` on a P-256 key, `release`
    /// delegated (terminating, `artifacts/*`) to an Ed25519 key pinned in root,
    /// snapshot and timestamp online. Version 1 of everything, published.
    pub fn standard() -> Self {
        let roots = [key("root-1"), key("root-2"), key("root-3")];
        let (timestamp, snapshot) = (key("timestamp-1"), key("snapshot-1"));
        let (targets, release) = (p256_key("targets-1"), key("release-1"));
        let mut keys = BTreeMap::new();
        for k in roots.iter().chain([&timestamp, &snapshot, &targets]) {
            keys.insert(k.public().key_id(), k.public());
        }
        let root = Root {
            common: Common::new("root", 1, EXPIRES),
            consistent_snapshot: true,
            keys,
            roles: BTreeMap::from([
                (
                    "root".into(),
                    role_keys(&[&roots[0], &roots[1], &roots[2]], 2),
                ),
                ("timestamp".into(), role_keys(&[&timestamp], 1)),
                ("snapshot".into(), role_keys(&[&snapshot], 1)),
                ("targets".into(), role_keys(&[&targets], 1)),
            ]),
            release_authority: Some(ReleaseAuthority {
                keys: BTreeMap::from([(release.public().key_id(), release.public())]),
                keyids: vec![release.public().key_id()],
                threshold: 1,
            }),
            extra: BTreeMap::new(),
        };
        let manifest = br#"{"channel":"stable","release":1}"#;
        let targets_doc = Targets {
            common: Common::new("targets", 1, EXPIRES),
            targets: BTreeMap::from([(
                "releases/stable/1.json".to_string(),
                target_file(manifest, None),
            )]),
            delegations: Some(Delegations {
                keys: BTreeMap::from([(release.public().key_id(), release.public())]),
                roles: vec![DelegatedRole {
                    name: "release".into(),
                    keyids: vec![release.public().key_id()],
                    threshold: 1,
                    terminating: true,
                    paths: Some(vec!["artifacts/*".into()]),
                    path_hash_prefixes: None,
                    extra: BTreeMap::new(),
                }],
                extra: BTreeMap::new(),
            }),
            extra: BTreeMap::new(),
        };
        let artifact = artifact_bytes();
        let release_doc = Targets {
            common: Common::new("targets", 1, EXPIRES),
            targets: BTreeMap::from([(
                ARTIFACT.to_string(),
                target_file(&artifact, Some(artifact_custom(&artifact))),
            )]),
            delegations: None,
            extra: BTreeMap::new(),
        };
        let mut repo = Self {
            root,
            root_signers: vec![roots[0].clone(), roots[1].clone()],
            timestamp: Timestamp {
                common: Common::new("timestamp", 1, EXPIRES),
                meta: BTreeMap::from([("snapshot.json".into(), MetaFile::version(1))]),
                extra: BTreeMap::new(),
            },
            timestamp_signers: vec![timestamp],
            snapshot: Snapshot {
                common: Common::new("snapshot", 1, EXPIRES),
                meta: BTreeMap::new(),
                extra: BTreeMap::new(),
            },
            snapshot_signers: vec![snapshot],
            targets: targets_doc,
            targets_signers: vec![targets],
            release: release_doc,
            release_signers: vec![release],
            snapshot_pins_hashes: false,
            metadata: BTreeMap::new(),
            targets_dir: BTreeMap::new(),
        };
        repo.publish_root();
        repo.publish();
        repo.targets_dir.insert(
            format!(
                "artifacts/{}.system-1.img",
                hex::encode(sha2::Sha256::digest(&artifact))
            ),
            artifact,
        );
        repo
    }

    /// Sign and publish the current root as `N.root.json`.
    pub fn publish_root(&mut self) -> Vec<u8> {
        let signers: Vec<&InMemoryKey> = self.root_signers.iter().collect();
        let bytes = sign_role(&self.root, &signers);
        self.metadata.insert(
            format!("{}.root.json", self.root.common.version),
            bytes.clone(),
        );
        bytes
    }

    /// Sign and publish release, targets, snapshot and timestamp at their current versions,
    /// with snapshot and timestamp pinning what was just signed.
    pub fn publish(&mut self) {
        let release = sign(&self.release, &self.release_signers);
        let targets = sign(&self.targets, &self.targets_signers);
        let pin = |version: u64, bytes: &[u8], hashes: bool| {
            let mut meta = MetaFile::version(version);
            if hashes {
                meta.length = Some(bytes.len() as u64);
                meta.hashes = Some(BTreeMap::from([(
                    "sha256".to_string(),
                    hex::encode(sha2::Sha256::digest(bytes)),
                )]));
            }
            meta
        };
        self.snapshot.meta = BTreeMap::from([
            (
                "targets.json".to_string(),
                pin(
                    self.targets.common.version,
                    &targets,
                    self.snapshot_pins_hashes,
                ),
            ),
            (
                "release.json".to_string(),
                pin(
                    self.release.common.version,
                    &release,
                    self.snapshot_pins_hashes,
                ),
            ),
        ]);
        let snapshot = sign(&self.snapshot, &self.snapshot_signers);
        self.timestamp.meta = BTreeMap::from([(
            "snapshot.json".to_string(),
            pin(self.snapshot.common.version, &snapshot, true),
        )]);
        let timestamp = sign(&self.timestamp, &self.timestamp_signers);
        self.metadata.insert(
            format!("{}.release.json", self.release.common.version),
            release,
        );
        self.metadata.insert(
            format!("{}.targets.json", self.targets.common.version),
            targets,
        );
        self.metadata.insert(
            format!("{}.snapshot.json", self.snapshot.common.version),
            snapshot,
        );
        self.metadata.insert("timestamp.json".into(), timestamp);
    }

    /// Raise every non-root version by one and publish.
    pub fn bump_and_publish(&mut self) {
        self.release.common.version += 1;
        self.targets.common.version += 1;
        self.snapshot.common.version += 1;
        self.timestamp.common.version += 1;
        self.publish();
    }

    /// The root file of version 1.
    pub fn root_v1(&self) -> Vec<u8> {
        self.metadata["1.root.json"].clone()
    }
}

pub fn sign<R: Role>(role: &R, signers: &[InMemoryKey]) -> Vec<u8> {
    let signers: Vec<&InMemoryKey> = signers.iter().collect();
    sign_role(role, &signers)
}

/// The `custom.enigm` object of an artifact, computed by the real ingest.
pub fn artifact_custom(bytes: &[u8]) -> serde_json::Value {
    use ota_core::chunk::{ChunkingParams, Ingest, IngestError};
    let no_sink = |_: ota_core::chunk::CutChunk<'_>| Ok::<(), std::convert::Infallible>(());
    let mut ingest = Ingest::new(ChunkingParams::DEFAULT);
    let ingested = ingest
        .update(bytes, no_sink)
        .and_then(|()| ingest.finish(no_sink))
        .unwrap_or_else(|e: IngestError<std::convert::Infallible>| panic!("ingest: {e}"));
    serde_json::json!({ "enigm": ingested.chunks })
}
