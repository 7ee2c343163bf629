//! The operator commands of `ota-origin` that do more than one catalog call: ingesting a build
//! into a draft release with its signing requests, registering the signed metadata, and the
//! validation gates.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, ensure};
use bytes::Bytes;
use ota_core::chunk::{ArtifactChunks, ChunkingParams, Ingest, IngestError};
use ota_core::digest::{ChunkId, Sha256Hash};
use ota_core::rollout::{Command, HealthPolicy};
use ota_core::time::UnixTime;
use ota_core::tuf::client::{Action, Fetched, Limits, TrustedFiles, Updater};
use ota_core::tuf::enigm::{Channel, ManifestArtifact, ReleaseManifest, ReleaseNumber};
use serde::{Deserialize, Serialize};

use crate::lifecycle;
use crate::repository::{IngestedArtifact, Registration};
use crate::serve::{load_repository, timestamp_version};
use crate::service::Origin;
use crate::store::{ArtifactRecord, BlobRecord, MetadataFile, NewRelease, PrivateMarks};

/// A refusal of an operator command: verification or policy said no (exit code 1), as
/// opposed to an environment failure (exit code 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// What `release create` is asked to do.
#[derive(Debug, Clone)]
pub struct CreateRelease {
    /// The channel.
    pub channel: Channel,
    /// The release number (must rise per channel).
    pub number: ReleaseNumber,
    /// The display version.
    pub version: String,
    /// Artifacts: install slot and file.
    pub artifacts: Vec<(String, PathBuf)>,
    /// Models it is built for.
    pub models: Vec<String>,
    /// Whether it is a security release.
    pub security: bool,
    /// Lowest installed release it upgrades from.
    pub min_installed: Option<ReleaseNumber>,
    /// Health gate.
    pub health: HealthPolicy,
    /// Expiry of the `release` and `targets` metadata requested.
    pub expires: UnixTime,
    /// Slots whose artifacts are private (`--private SLOT`): their signed targets say
    /// `custom.enigm.private: true` and their chunks are served only to devices offered
    /// this release, on the connection they checked in on.
    pub private: Vec<String>,
}

/// The ingested artifacts of a release, kept beside its signing requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestedFile {
    /// Target path.
    pub target: String,
    /// Install slot.
    pub slot: String,
    /// Length.
    pub length: u64,
    /// SHA-256.
    pub sha256: Sha256Hash,
    /// The `custom.enigm` fields.
    pub chunks: ArtifactChunks,
    /// Whether the artifact is private.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub private: bool,
}

impl IngestedFile {
    fn ingested(&self) -> IngestedArtifact {
        IngestedArtifact {
            target: self.target.clone(),
            length: self.length,
            sha256: self.sha256,
            chunks: self.chunks.clone(),
            private: self.private,
        }
    }
}

/// Where a release's requests live: `requests/CHANNEL/NUMBER/`.
pub fn request_dir(origin: &Origin, channel: &Channel, number: ReleaseNumber) -> PathBuf {
    origin
        .dir
        .file("requests")
        .join(&channel.0)
        .join(number.0.to_string())
}

/// Where a long command is: reported as it goes (`release create` while it ingests,
/// `release validate` while it re-hashes). `ota-origin` prints it on a terminal, or as JSON
/// lines with `--json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step<'a> {
    /// `ingest` (create), `rehash` or `metadata` (validate).
    pub phase: &'static str,
    /// The artifact's target path (ingest), or the release (`CHANNEL/N`).
    pub target: &'a str,
    /// Bytes done so far in this phase.
    pub bytes: u64,
    /// Bytes in all, when known.
    pub total_bytes: Option<u64>,
    /// Chunks (blobs) done so far: stored once each (ingest) or re-hashed (rehash).
    pub chunks: u64,
    /// Chunks in all, when known.
    pub total_chunks: Option<u64>,
}

/// Ingest a build: store every chunk once, record the draft release, and write the signing
/// requests. Returns the request directory. `progress` hears of each chunk stored.
pub async fn create_release(
    origin: &Origin,
    create: &CreateRelease,
    now: UnixTime,
    progress: &(dyn Fn(&Step<'_>) + Sync),
) -> anyhow::Result<PathBuf> {
    check_name("channel", &create.channel.0)?;
    ensure!(
        !create.artifacts.is_empty(),
        Refused("a release needs at least one --artifact".to_string())
    );
    ensure!(
        !create.models.is_empty(),
        Refused("a release needs at least one --model".to_string())
    );
    if let Some(latest) = origin
        .catalog
        .latest_release_number(&create.channel)
        .await?
    {
        ensure!(
            create.number > latest,
            Refused(format!(
                "release number {} does not rise: channel {} is at {}",
                create.number.0, create.channel.0, latest.0
            ))
        );
    }
    let mut slots = BTreeSet::new();
    for (slot, _) in &create.artifacts {
        check_name("slot", slot)?;
        ensure!(
            slots.insert(slot.clone()),
            Refused(format!("slot {slot} named twice"))
        );
    }
    for slot in &create.private {
        ensure!(
            slots.contains(slot),
            Refused(format!(
                "--private {slot} names no --artifact slot of this release"
            ))
        );
    }
    let mut files = Vec::new();
    let mut blobs: BTreeMap<ChunkId, u64> = BTreeMap::new();
    // Blobs of private artifacts, and blobs of public ones (chunk indexes count as public).
    let (mut private_blobs, mut public_blobs) = (BTreeSet::new(), BTreeSet::new());
    for (slot, path) in &create.artifacts {
        let target = format!("artifacts/{slot}-{}.img", create.version);
        let (mut file, file_blobs) = ingest_file(origin, path, &target, slot, progress).await?;
        file.private = create.private.contains(slot);
        public_blobs.insert(file.chunks.chunk_index);
        for id in file_blobs
            .keys()
            .filter(|id| **id != file.chunks.chunk_index)
        {
            if file.private {
                private_blobs.insert(*id);
            } else {
                public_blobs.insert(*id);
            }
        }
        blobs.extend(file_blobs);
        files.push(file);
    }
    // A chunk a public artifact also uses is public: its bytes are public already.
    let private_marks = PrivateMarks {
        targets: files
            .iter()
            .filter(|f| f.private)
            .map(|f| f.target.clone())
            .collect(),
        blobs: private_blobs.difference(&public_blobs).copied().collect(),
    };

    let manifest = ReleaseManifest {
        channel: create.channel.clone(),
        release: create.number,
        version: create.version.clone(),
        security: create.security,
        models: create.models.clone(),
        min_installed_release: create.min_installed,
        artifacts: files
            .iter()
            .map(|f| ManifestArtifact {
                target: f.target.clone(),
                slot: f.slot.clone(),
            })
            .collect(),
    };
    let manifest_bytes = serde_json::to_vec_pretty(&manifest)?;
    ReleaseManifest::parse(&manifest_bytes).map_err(|e| anyhow!(e))?;
    let repo = load_repository(origin).await?;
    let ingested: Vec<IngestedArtifact> = files.iter().map(IngestedFile::ingested).collect();
    let release_request = repo.release_request(&ingested, create.expires);
    let targets_request = repo.targets_request(&manifest, &manifest_bytes, create.expires)?;

    // Requests first, then the catalog in one transaction: a create killed before the commit
    // leaves no release (its blobs and request files are inert and are reused by a retry).
    let dir = request_dir(origin, &create.channel, create.number);
    let rel = |name: &str| format!("requests/{}/{}/{name}", create.channel.0, create.number.0);
    origin
        .dir
        .write(&rel("release.request.json"), &release_request)?;
    origin
        .dir
        .write(&rel("targets.request.json"), &targets_request)?;
    origin.dir.write(&rel("manifest.json"), &manifest_bytes)?;
    origin
        .dir
        .write(&rel("artifacts.json"), &serde_json::to_vec_pretty(&files)?)?;

    let record = NewRelease {
        channel: create.channel.clone(),
        number: create.number,
        version: create.version.clone(),
        security: create.security,
        models: create.models.clone(),
        min_installed: create.min_installed,
        manifest_target: manifest.target_path(),
        health: create.health,
    };
    let artifacts: Vec<ArtifactRecord> = files
        .iter()
        .map(|f| ArtifactRecord {
            target: f.target.clone(),
            slot: f.slot.clone(),
            length: f.length,
            sha256: f.sha256,
            blake3: f.chunks.blake3,
            chunk_index: f.chunks.chunk_index,
            chunk_tree: f.chunks.chunk_tree,
            chunk_count: f.chunks.chunks,
        })
        .collect();
    let blob_records: Vec<BlobRecord> = blobs
        .into_iter()
        .map(|(id, length)| BlobRecord { id, length })
        .collect();
    origin
        .catalog
        .insert_release_marked(&record, &artifacts, &blob_records, &private_marks, now)
        .await?;
    crate::audit::record(
        origin,
        ota_sign::audit::Action::Transition,
        serde_json::json!({
            "step": "created",
            "actor": "operator",
            "channel": create.channel.0,
            "release": create.number.0,
            "version": create.version,
            "artifacts": files.iter().map(|f| serde_json::json!({
                "target": f.target, "length": f.length, "sha256": f.sha256,
                "private": f.private,
            })).collect::<Vec<_>>(),
        }),
        now,
    )?;
    Ok(dir)
}

fn check_name(what: &str, name: &str) -> anyhow::Result<()> {
    ensure!(
        !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            && !name.starts_with('.'),
        Refused(format!(
            "{what} {name:?} must be 1-64 characters of A-Z a-z 0-9 . _ - (not starting with .)"
        ))
    );
    Ok(())
}

/// Cut one file into chunks, storing each chunk once (bounded memory: chunks flow to the store
/// through a bounded channel while the file is read in 8 MiB pieces).
async fn ingest_file(
    origin: &Origin,
    path: &Path,
    target: &str,
    slot: &str,
    progress: &(dyn Fn(&Step<'_>) + Sync),
) -> anyhow::Result<(IngestedFile, BTreeMap<ChunkId, u64>)> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("artifact {}: cannot open", path.display()))?;
    let total = file.metadata()?.len();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(ChunkId, Bytes)>(64);
    let path_owned = path.to_path_buf();
    let reader = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let mut file = file;
        let mut ingest = Ingest::new_parallel(ChunkingParams::DEFAULT);
        let mut buffer = vec![0u8; 8 << 20];
        let mut seen = BTreeSet::new();
        let mut sink = |chunk: ota_core::chunk::CutChunk<'_>| {
            if seen.insert(*chunk.id()) {
                tx.blocking_send((*chunk.id(), Bytes::copy_from_slice(chunk.bytes())))
                    .map_err(|_| anyhow!("the blob store stopped"))?;
            }
            Ok::<(), anyhow::Error>(())
        };
        loop {
            let n = file
                .read(&mut buffer)
                .with_context(|| format!("artifact {}: read failed", path_owned.display()))?;
            if n == 0 {
                break;
            }
            ingest.update(&buffer[..n], &mut sink).map_err(flatten)?;
        }
        let done = ingest.finish(&mut sink).map_err(flatten)?;
        Ok(done)
    });
    let mut blobs = BTreeMap::new();
    let mut stored = 0u64;
    let step = |bytes: u64, chunks: usize| Step {
        phase: "ingest",
        target,
        bytes,
        total_bytes: Some(total),
        chunks: chunks as u64,
        total_chunks: None,
    };
    while let Some((id, bytes)) = rx.recv().await {
        stored += bytes.len() as u64;
        blobs.insert(id, bytes.len() as u64);
        origin.blobs.put(&id, bytes).await?;
        progress(&step(stored.min(total), blobs.len()));
    }
    let done = reader.await??;
    let index_id = done.chunks.chunk_index;
    blobs.insert(index_id, done.index.len() as u64);
    origin.blobs.put(&index_id, Bytes::from(done.index)).await?;
    progress(&Step {
        total_chunks: Some(blobs.len() as u64),
        ..step(total, blobs.len())
    });
    Ok((
        IngestedFile {
            target: target.to_string(),
            slot: slot.to_string(),
            length: done.length,
            sha256: done.sha256,
            chunks: done.chunks,
            private: false,
        },
        blobs,
    ))
}

fn flatten(error: IngestError<anyhow::Error>) -> anyhow::Error {
    match error {
        IngestError::Sink { source, .. } => source,
        other => anyhow!(other.to_string()),
    }
}

/// Import signed `release` and `targets` metadata: verified as a device would, then published
/// with a new snapshot and timestamp in one transaction.
pub async fn register_release(
    origin: &Origin,
    channel: &Channel,
    number: ReleaseNumber,
    signed_release: &[u8],
    signed_targets: &[u8],
    now: UnixTime,
) -> anyhow::Result<Vec<String>> {
    origin
        .catalog
        .release(channel, number)
        .await?
        .ok_or_else(|| anyhow!("no release {} on channel {}", number.0, channel.0))?;
    let rel = |name: &str| format!("requests/{}/{}/{name}", channel.0, number.0);
    let release_request = origin.dir.read(&rel("release.request.json"))?;
    let targets_request = origin.dir.read(&rel("targets.request.json"))?;
    let manifest_bytes = origin.dir.read(&rel("manifest.json"))?;
    let files: Vec<IngestedFile> =
        serde_json::from_slice(&origin.dir.read(&rel("artifacts.json"))?)?;
    let manifest = ReleaseManifest::parse(&manifest_bytes).map_err(|e| anyhow!(e))?;
    let expected: Vec<IngestedArtifact> = files.iter().map(IngestedFile::ingested).collect();
    let repo = load_repository(origin).await?;
    let (set, _) = repo.register(
        &Registration {
            release_request: &release_request,
            signed_release,
            targets_request: &targets_request,
            signed_targets,
            manifest: &manifest,
            manifest_bytes: &manifest_bytes,
            expected: &expected,
        },
        &origin.keys.online,
        origin.dir.config.online_expiry(),
        now,
    )?;
    let mut published = vec![MetadataFile {
        name: manifest.target_path(),
        role: "manifest".into(),
        version: 1,
        bytes: manifest_bytes,
    }];
    for (name, bytes) in set.files {
        let (role, version) = if name == "timestamp.json" {
            ("timestamp".to_string(), timestamp_version(&bytes)?)
        } else {
            let (version, rest) = name
                .split_once('.')
                .ok_or_else(|| anyhow!("unexpected file {name}"))?;
            (rest.trim_end_matches(".json").to_string(), version.parse()?)
        };
        published.push(MetadataFile {
            name,
            role,
            version,
            bytes,
        });
    }
    let names: Vec<String> = published.iter().map(|f| f.name.clone()).collect();
    origin.catalog.publish(&published, now).await?;
    crate::audit::record(
        origin,
        ota_sign::audit::Action::Transition,
        serde_json::json!({
            "step": "registered",
            "actor": "operator",
            "channel": channel.0,
            "release": number.0,
            "published": names,
        }),
        now,
    )?;
    Ok(names)
}

/// What the validation gates found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Validation {
    /// Chunks re-hashed.
    pub chunks: u64,
    /// Bytes re-hashed.
    pub bytes: u64,
}

/// Run the validation gates; on success move the release from draft to validation.
pub async fn validate_release(
    origin: &Origin,
    channel: &Channel,
    number: ReleaseNumber,
    now: UnixTime,
) -> anyhow::Result<Validation> {
    validate_release_with_progress(origin, channel, number, now, &|_| {}).await
}

/// [`validate_release`], telling `progress` of each blob re-hashed and of the metadata check.
pub async fn validate_release_with_progress(
    origin: &Origin,
    channel: &Channel,
    number: ReleaseNumber,
    now: UnixTime,
    progress: &(dyn Fn(&Step<'_>) + Sync),
) -> anyhow::Result<Validation> {
    let name = format!("{}/{}", channel.0, number.0);
    let release = origin
        .catalog
        .release(channel, number)
        .await?
        .ok_or_else(|| anyhow!("no release {} on channel {}", number.0, channel.0))?;
    // Gate 1: every stored blob of the release re-hashed.
    let mut report = Validation::default();
    let ids = origin.catalog.release_blobs(channel, number).await?;
    let total_chunks = Some(ids.len() as u64);
    for id in ids {
        let bytes = origin
            .blobs
            .get_verified(&id, u64::from(ota_net::proto::MAX_BLOB_LEN))
            .await?
            .ok_or_else(|| anyhow!("blob {id} of the release is missing from the store"))?;
        report.chunks += 1;
        report.bytes += bytes.len() as u64;
        progress(&Step {
            phase: "rehash",
            target: &name,
            bytes: report.bytes,
            total_bytes: None,
            chunks: report.chunks,
            total_chunks,
        });
    }
    progress(&Step {
        phase: "metadata",
        target: &name,
        bytes: report.bytes,
        total_bytes: Some(report.bytes),
        chunks: report.chunks,
        total_chunks,
    });
    // Gate 2: the published metadata, from a device's point of view.
    let root = origin.dir.read("root.json")?;
    let mut updater = Updater::new(Limits::default(), &root, TrustedFiles::default())?;
    updater.refresh()?;
    let artifacts = origin.catalog.artifacts(channel, number).await?;
    let mut wanted: Vec<String> = artifacts.iter().map(|a| a.target.clone()).collect();
    wanted.push(release.manifest_target.clone());
    let mut seen = BTreeMap::new();
    loop {
        match updater.poll_action() {
            Some(Action::Fetch(request)) => {
                let fetched = origin
                    .catalog
                    .metadata(&request.file)
                    .await?
                    .map_or(Fetched::NotFound, |f| Fetched::Bytes(f.bytes));
                updater.handle_fetched(now, &request, fetched)?;
            }
            Some(Action::Found(info)) => {
                seen.insert(info.path().to_string(), info);
                let Some(next) = wanted.pop() else { break };
                updater.find_target(now, &next)?;
            }
            Some(Action::Refreshed) => {
                let Some(next) = wanted.pop() else { break };
                updater.find_target(now, &next)?;
            }
            Some(_) => {}
            None => {
                return Err(Refused(
                    "the client workflow stopped before finding every target".into(),
                )
                .into());
            }
        }
    }
    for artifact in &artifacts {
        let info = seen
            .remove(&artifact.target)
            .ok_or_else(|| anyhow!("{} is not in the published metadata", artifact.target))?;
        let verified = info.into_artifact()?;
        ensure!(
            verified.sha256() == &artifact.sha256
                && verified.length() == artifact.length
                && verified.chunks().chunk_tree == artifact.chunk_tree,
            Refused(format!(
                "{}: published metadata differs from the ingested artifact",
                artifact.target
            ))
        );
    }
    let manifest = seen.remove(&release.manifest_target).ok_or_else(|| {
        anyhow!(
            "{} is not in the published metadata",
            release.manifest_target
        )
    })?;
    let manifest_file = origin
        .catalog
        .metadata(&release.manifest_target)
        .await?
        .ok_or_else(|| anyhow!("{} is not published", release.manifest_target))?;
    manifest.verify_bytes(&manifest_file.bytes)?;
    // Gate 3: compatibility and rollout policy.
    let parsed = ReleaseManifest::parse(&manifest_file.bytes).map_err(|e| anyhow!(e))?;
    ensure!(
        parsed.channel == *channel && parsed.release == number,
        Refused(format!(
            "the manifest names release {} of {}",
            parsed.release.0, parsed.channel.0
        ))
    );
    ensure!(
        !parsed.models.is_empty(),
        Refused("the manifest names no model".to_string())
    );
    if let Some(floor) = parsed.min_installed_release {
        ensure!(
            floor < number,
            Refused(format!(
                "the upgrade floor {} is not below the release",
                floor.0
            ))
        );
    }
    ensure!(
        release.health.min_sample > 0 && release.health.max_failure_basis_points < 10_000,
        Refused("the health gate would never halt this release".to_string())
    );
    lifecycle::apply(
        origin,
        channel,
        number,
        Command::Validated,
        None,
        "operator",
        now,
    )
    .await?;
    Ok(report)
}
