//! Prefetch: the peer polls `timestamp.json` upstream; when it changes, it walks the image
//! repository (timestamp → snapshot → targets → the newest release manifest of each channel it
//! carries → the `release` role's artifact targets → their chunk indexes) and pins each such
//! release in the cache policy, which fetches its chunks ahead of the devices within the
//! upstream budget and prefetch windows. The previous release of a channel is unpinned when a
//! newer one appears (it may then be evicted, least recently used first).
//!
//! The peer verifies no signature (it is trusted for nothing and devices check everything), but
//! it does check that each chunk index hashes to the id the metadata names and that its chunk
//! tree matches the `chunk_tree` root, so a lying upstream can at worst waste the peer's own
//! budget on chunks nobody will ask for. Artifacts whose `custom.enigm.private` is `true` are
//! recorded as private (see `access.rs`), in **every** channel's newest release, carried or
//! not: a chunk the peer does not know to be private would be served to anyone once held (a
//! device of an uncarried channel may check in through the peer and have it fetched).
//!
//! Private chunks are pinned with their release like the others, and prefetch asks for them
//! once; an upstream that gates them (the origin, or a parent peer) answers `Missing` because no
//! device has checked in through this peer yet: not retried, not an error (the policy drops a
//! `Missing` prefetch). They are fetched on demand once a device's check-in relayed on the
//! upstream connection has earned the grant (`handler.rs` asks once more for a private chunk
//! whose joined fetch came back `Missing` before the grant).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ota_core::cache::ReleaseKey;
use ota_core::chunk::{ChunkIndex, IndexLimits};
use ota_core::digest::ChunkId;
use ota_core::tuf::enigm::{ReleaseManifest, artifact_chunks};
use ota_core::tuf::metadata::{Envelope, Snapshot, Targets, Timestamp};
use ota_net::proto::MAX_BLOB_LEN;
use tracing::{debug, info, warn};

use crate::access::Access;
use crate::cache::Cache;
use crate::metadata::MetadataCache;
use crate::metrics::Metrics;
use crate::upstream::Upstreams;

/// Largest metadata file the walk parses.
const MAX_FILE: u64 = 16 * 1024 * 1024;

/// What prefetch carries.
#[derive(Debug, Clone)]
pub struct PrefetchConfig {
    /// How often to poll `timestamp.json`.
    pub poll: Duration,
    /// Whether to pin and fetch releases at all (when off, the walk still records private
    /// artifacts).
    pub enabled: bool,
}

/// A release found by the walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundRelease {
    /// `channel/number`.
    pub key: ReleaseKey,
    /// The channel.
    pub channel: String,
    /// Its chunks (and its chunk indexes), with lengths.
    pub chunks: Vec<(ChunkId, u32)>,
    /// Chunks of artifacts marked private.
    pub private: Vec<ChunkId>,
    /// The release number.
    pub number: u64,
    /// Whether its channel is one this peer carries (prefetches); the private chunks of the
    /// others are recorded all the same.
    pub carried: bool,
}

/// Walks the repository upstream: every channel's newest release for the poll, or one
/// offered release on demand (`access.rs`, "Releases offered before the peer has walked
/// them"). Shared by the prefetch task and the handler.
#[derive(Debug)]
pub struct Walker {
    cache: Arc<Cache>,
    metadata: Arc<MetadataCache>,
    upstreams: Arc<Upstreams>,
    metrics: Arc<Metrics>,
    access: Arc<Access>,
    /// Channels the peer carries: prefetches (empty: every channel).
    channels: Vec<String>,
}

/// The prefetch task's state.
#[derive(Debug)]
pub struct Prefetcher {
    config: PrefetchConfig,
    cache: Arc<Cache>,
    metadata: Arc<MetadataCache>,
    metrics: Arc<Metrics>,
    walker: Arc<Walker>,
    /// Pinned release per channel.
    pinned: HashMap<String, ReleaseKey>,
    last_snapshot: Option<u64>,
    /// Woken by a release announcement heard on discovery: poll now.
    wake: Arc<tokio::sync::Notify>,
    /// Where to announce the releases this peer pins (caches below it prefetch too).
    announcer: Option<ota_net::discovery::DiscoveryHandle>,
}

impl Prefetcher {
    /// A prefetcher walking with `walker`.
    pub fn new(config: PrefetchConfig, walker: Arc<Walker>) -> Self {
        Self {
            config,
            cache: walker.cache.clone(),
            metadata: walker.metadata.clone(),
            metrics: walker.metrics.clone(),
            walker,
            pinned: HashMap::new(),
            last_snapshot: None,
            wake: Arc::new(tokio::sync::Notify::new()),
            announcer: None,
        }
    }

    /// Wakes the poll loop early (an announcement was heard).
    pub fn waker(&self) -> Arc<tokio::sync::Notify> {
        self.wake.clone()
    }

    /// Announce pinned releases on discovery.
    pub fn announce_with(&mut self, handle: ota_net::discovery::DiscoveryHandle) {
        self.announcer = Some(handle);
    }

    /// Polls until the task is dropped.
    pub async fn run(mut self) {
        loop {
            if let Err(error) = self.poll_once().await {
                warn!(%error, "prefetch: walking the repository failed");
            }
            tokio::select! {
                () = tokio::time::sleep(self.config.poll) => {}
                () = self.wake.notified() => debug!("prefetch: polling on an announcement"),
            }
        }
    }

    /// One poll: if the snapshot changed, walk and pin.
    pub async fn poll_once(&mut self) -> anyhow::Result<()> {
        let Some(ts) = self.metadata.get("timestamp.json").await else {
            debug!("prefetch: no timestamp.json upstream yet");
            return Ok(());
        };
        let ts: Timestamp =
            Envelope::parse("timestamp", "timestamp.json", &ts, MAX_FILE)?.role()?;
        let snapshot_version = ts
            .meta
            .get("snapshot.json")
            .map(|m| m.version)
            .ok_or_else(|| anyhow::anyhow!("timestamp names no snapshot.json"))?;
        if self.last_snapshot == Some(snapshot_version) {
            return Ok(());
        }
        let releases = self.walker.newest(snapshot_version).await?;
        for release in releases {
            self.walker.record(&release).await;
            if !self.config.enabled || !release.carried {
                continue;
            }
            if self.pinned.get(&release.channel) == Some(&release.key) {
                continue;
            }
            info!(release = %release.key.0, chunks = release.chunks.len(), "prefetch: pinning release");
            if let Some(announcer) = &self.announcer {
                let announcement = ota_net::discovery::Announcement {
                    channel: ota_core::tuf::enigm::Channel(release.channel.clone()),
                    release: ota_core::tuf::enigm::ReleaseNumber(release.number),
                    timestamp_version: ts.common.version,
                };
                if let Err(error) = announcer.announce(announcement).await {
                    debug!(%error, "announcing a release");
                }
            }
            Metrics::inc(&self.metrics.releases_pinned);
            self.cache.pin_release(release.key.clone(), release.chunks);
            if let Some(old) = self.pinned.insert(release.channel, release.key) {
                info!(release = %old.0, "prefetch: unpinning superseded release");
                self.cache.unpin_release(&old);
            }
        }
        self.last_snapshot = Some(snapshot_version);
        Ok(())
    }
}

impl Walker {
    /// A walker over the peer's caches and upstreams, recording private chunks in `access`.
    pub fn new(
        cache: Arc<Cache>,
        metadata: Arc<MetadataCache>,
        upstreams: Arc<Upstreams>,
        metrics: Arc<Metrics>,
        access: Arc<Access>,
        channels: Vec<String>,
    ) -> Self {
        Self {
            cache,
            metadata,
            upstreams,
            metrics,
            access,
            channels,
        }
    }

    /// Marks a walked release's private chunks (kept on disk, so that a restarted peer gates
    /// them before it walks again) and notes the release as walked.
    pub async fn record(&self, release: &FoundRelease) {
        let new = self.access.mark_private(&release.key, &release.private);
        if !new.is_empty() {
            let store = self.cache.store().clone();
            let key = release.key.0.clone();
            let kept = tokio::task::spawn_blocking(move || store.put_private(&key, &new)).await;
            if !matches!(kept, Ok(Ok(()))) {
                warn!(release = %release.key.0, "cannot keep the release's private chunks on disk; they are gated while the peer runs");
            }
        }
        self.access.walked(&release.key);
    }

    /// Walks an offered release until it is recorded, or until its offer has expired (then the
    /// upstream's grant for it has ended too); retried with a growing pause while upstream
    /// cannot show it (a parent peer's metadata is a few seconds stale, or upstream is away).
    pub async fn walk_offered(self: Arc<Self>, release: ReleaseKey) {
        let mut pause = Duration::from_millis(500);
        let mut tries = 0u32;
        while self
            .access
            .still_unwalked(&release, crate::handler::unix_now())
        {
            tries += 1;
            // The handler asked for `timestamp.json` afresh before it spawned this walk; a retry
            // asks again.
            match self.offered(&release, tries > 1).await {
                Ok(found) => {
                    info!(release = %release.0, private = found.private.len(), tries, "offered release walked");
                    Metrics::inc(&self.metrics.offer_walks);
                    self.record(&found).await;
                    return;
                }
                Err(error) => {
                    let level_warn = tries >= 3;
                    if level_warn {
                        warn!(release = %release.0, %error, tries, "cannot walk an offered release yet: chunks fetched meanwhile are not served until it is walked or its offer expires");
                    } else {
                        debug!(release = %release.0, %error, tries, "walking an offered release");
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
            }
        }
        if !self.access.is_walked(&release) {
            warn!(release = %release.0, "offered release never walked; its offer has expired");
        }
    }

    /// One offered release (`channel/number`), from the metadata upstream: `timestamp.json`
    /// asked for again first when `refresh`, else as cached (within its TTL).
    async fn offered(&self, release: &ReleaseKey, refresh: bool) -> anyhow::Result<FoundRelease> {
        let (channel, number) = release
            .0
            .split_once('/')
            .and_then(|(c, n)| Some((c.to_owned(), n.parse::<u64>().ok()?)))
            .ok_or_else(|| anyhow::anyhow!("offer names release {:?}", release.0))?;
        let ts = if refresh {
            self.metadata.refresh("timestamp.json").await
        } else {
            self.metadata.get("timestamp.json").await
        };
        let ts = ts.ok_or_else(|| anyhow::anyhow!("no timestamp.json upstream"))?;
        let ts: Timestamp =
            Envelope::parse("timestamp", "timestamp.json", &ts, MAX_FILE)?.role()?;
        let snapshot_version = ts
            .meta
            .get("snapshot.json")
            .map(|m| m.version)
            .ok_or_else(|| anyhow::anyhow!("timestamp names no snapshot.json"))?;
        let (targets, release_role) = self.roles(snapshot_version).await?;
        let path = format!("releases/{channel}/{number}.json");
        if !targets.targets.contains_key(&path) {
            anyhow::bail!("{path} is not in targets at snapshot {snapshot_version}");
        }
        let release_role = release_role
            .ok_or_else(|| anyhow::anyhow!("snapshot {snapshot_version} has no release role"))?;
        self.release(&release_role, channel, number, &path).await
    }

    /// The newest release of each channel at this snapshot (carried or not).
    pub async fn newest(&self, snapshot_version: u64) -> anyhow::Result<Vec<FoundRelease>> {
        let (targets, release_role) = self.roles(snapshot_version).await?;
        let Some(release_role) = release_role else {
            return Ok(Vec::new());
        };
        // Newest release number per channel, from the manifest target paths.
        let mut newest: BTreeMap<String, (u64, String)> = BTreeMap::new();
        for path in targets.targets.keys() {
            let Some(rest) = path.strip_prefix("releases/") else {
                continue;
            };
            let Some((channel, file)) = rest.split_once('/') else {
                continue;
            };
            let Some(number) = file
                .strip_suffix(".json")
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let slot = newest
                .entry(channel.to_owned())
                .or_insert((number, path.clone()));
            if number > slot.0 {
                *slot = (number, path.clone());
            }
        }
        let mut found = Vec::new();
        for (channel, (number, path)) in newest {
            found.push(self.release(&release_role, channel, number, &path).await?);
        }
        Ok(found)
    }

    async fn file(&self, name: &str) -> anyhow::Result<Bytes> {
        self.metadata
            .get(name)
            .await
            .ok_or_else(|| anyhow::anyhow!("upstream has no {name}"))
    }

    /// The `targets` role and the `release` role (if the snapshot names one) at a snapshot.
    async fn roles(&self, snapshot_version: u64) -> anyhow::Result<(Targets, Option<Targets>)> {
        let name = format!("{snapshot_version}.snapshot.json");
        let snapshot: Snapshot =
            Envelope::parse("snapshot", &name, &self.file(&name).await?, MAX_FILE)?.role()?;
        let version_of = |file: &str| {
            snapshot
                .meta
                .get(file)
                .map(|m| m.version)
                .ok_or_else(|| anyhow::anyhow!("snapshot names no {file}"))
        };
        let name = format!("{}.targets.json", version_of("targets.json")?);
        let targets: Targets =
            Envelope::parse("targets", &name, &self.file(&name).await?, MAX_FILE)?.role()?;
        let Ok(release_version) = version_of("release.json") else {
            return Ok((targets, None));
        };
        let name = format!("{release_version}.release.json");
        let release_role: Targets =
            Envelope::parse("release", &name, &self.file(&name).await?, MAX_FILE)?.role()?;
        Ok((targets, Some(release_role)))
    }

    /// One release: its manifest at `path`, its artifacts' targets in the `release` role, and
    /// their chunk indexes (checked against the signed chunk trees).
    async fn release(
        &self,
        release_role: &Targets,
        channel: String,
        number: u64,
        path: &str,
    ) -> anyhow::Result<FoundRelease> {
        let manifest = ReleaseManifest::parse(&self.file(path).await?)
            .map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
        let mut chunks = Vec::new();
        let mut private = Vec::new();
        for artifact in &manifest.artifacts {
            let target = release_role.targets.get(&artifact.target).ok_or_else(|| {
                anyhow::anyhow!("{path} names {}, not in release", artifact.target)
            })?;
            let fields = artifact_chunks(target).map_err(|e| anyhow::anyhow!(e))?;
            let is_private = target
                .custom
                .as_ref()
                .and_then(|c| c.get("enigm"))
                .and_then(|e| e.get("private"))
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false);
            let index_bytes = self.index(&fields).await?;
            let index = ChunkIndex::parse(
                &index_bytes,
                IndexLimits {
                    max_chunks: fields.chunks,
                    max_length: target.length,
                },
            )?;
            if index.tree_root() != fields.chunk_tree || index.len() != fields.chunks {
                anyhow::bail!(
                    "chunk index of {} does not match its signed tree",
                    artifact.target
                );
            }
            chunks.push((fields.chunk_index, index_bytes.len() as u32));
            for entry in index.entries() {
                chunks.push((*entry.id(), entry.len()));
                if is_private {
                    private.push(*entry.id());
                }
            }
        }
        let carried = self.channels.is_empty() || self.channels.contains(&channel);
        Ok(FoundRelease {
            carried,
            number,
            key: ReleaseKey(format!("{channel}/{number}")),
            channel,
            chunks,
            private,
        })
    }

    /// A chunk index blob: from the cache, or fetched whole from upstream and checked against
    /// its id before it is stored.
    async fn index(&self, fields: &ota_core::chunk::ArtifactChunks) -> anyhow::Result<Bytes> {
        let id = fields.chunk_index;
        if self.cache.holds(&id)
            && let Some(bytes) = self.cache.get(id).await
        {
            return Ok(bytes);
        }
        let len = u32::try_from(fields.chunk_index_length)
            .ok()
            .filter(|l| *l <= MAX_BLOB_LEN)
            .ok_or_else(|| anyhow::anyhow!("chunk index of {} bytes", fields.chunk_index_length))?;
        let mut stream = self.upstreams.blobs(vec![id], len.max(1)).await?;
        let peer = stream.peer();
        let bytes = match stream.next().await {
            Some(Ok((_, Some(bytes)))) => bytes,
            Some(Ok((_, None))) => anyhow::bail!("upstream does not hold chunk index {id}"),
            Some(Err(e)) => return Err(e.into()),
            None => anyhow::bail!("upstream ended the answer early"),
        };
        drop(stream);
        if ChunkId::of(&bytes) != id {
            Metrics::inc(&self.metrics.verification_failures);
            self.upstreams.blame(peer);
            anyhow::bail!("upstream {peer} sent a chunk index that does not match its id {id}");
        }
        Metrics::add(&self.metrics.index_bytes_up, bytes.len() as u64);
        self.cache.store_verified(id, bytes.clone()).await?;
        Ok(bytes)
    }
}
