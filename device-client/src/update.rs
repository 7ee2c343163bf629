//! One update, as DESIGN.md §7 orders it: check-in → offer (director-signed, bound to this
//! device, this check-in's nonce and a short expiry) → TUF refresh of the image repository →
//! the release manifest and every artifact found in the repository with exactly the offered
//! hashes (the Uptane rule) → chunk index verified against the signed chunk-tree root → plan
//! (chunks the active slot holds are copied locally) → fetch from every source in parallel,
//! each chunk verified before it is written to the inactive slot → whole-artifact SHA-256 and
//! BLAKE3 → slot marked pending atomically → report to the origin.
//!
//! Every refusal is a typed [`UpdateError`]; every outcome, good or bad, is written to
//! `last-update.json` and `install.log` and, once an offer was verified, reported to the origin.
//! The active slot is never written.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use ed25519_dalek::Signer as _;
use ota_core::chunk::{ChunkIndex, ChunkVerifier, IndexError, IndexLimits};
use ota_core::digest::ChunkId;
use ota_core::director::{
    CheckIn, CheckInAnswer, DeviceHandle, InstallReport, Offer, OfferError, OfferExpectation,
};
use ota_core::fetch::{Config, SourceId, SourceKind};
use ota_core::install::{InstallError, Slot, Slots};
use ota_core::time::UnixTime;
use ota_core::tuf::client::{Action, Fetched, FileRequest, Limits, TargetInfo, Updater};
use ota_core::tuf::enigm::{Channel, MAX_MANIFEST_LEN, ReleaseManifest, ReleaseNumber};
use ota_core::tuf::metadata::{Envelope, Root};
use ota_core::tuf::{self, VerifiedArtifact};
use ota_net::client::{Answer, Client, ClientConfig, ClientError, Connector};
use ota_net::proto::{DeviceKey, MAX_METADATA_LEN, Refusal, SignedKind, SignedRequest};
use ota_net::quic::CertPin;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::download::{self, ArtifactReport, DownloadError, Job, SourceUse, Sources};
use crate::progress::Progress;
use crate::source::{
    LocalChunks, QuicLink, Source, Transport, connection_lost, http_get, peer_name,
};
use crate::state::{
    SlotArtifact, SlotContents, StateDir, StateError, read_bounded, read_json, sync_dir,
    write_atomic, write_json,
};

/// Largest chunk index a device accepts (about 1.9 million chunks: a 120 GiB artifact at the
/// default 64 KiB average). Checked against the signed length before anything is fetched.
pub const MAX_INDEX_LEN: u64 = 64 << 20;
/// How long the update waits at the start for the peers' connections (all dialled at once)
/// before it starts downloading without those not made yet; the download goes on dialling
/// them in the background. A LAN peer that is up answers within a round trip or two.
const START_DIAL: Duration = Duration::from_secs(1);

/// A peer given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerSpec {
    /// Its QUIC address.
    pub addr: SocketAddr,
    /// The pin of its certificate.
    pub pin: CertPin,
}

/// How to run an update.
#[derive(Debug, Clone, Default)]
pub struct UpdateOptions {
    /// LAN peers to use.
    pub peers: Vec<PeerSpec>,
    /// Find site caches by libp2p discovery (mDNS on the LAN, and `bootstrap`).
    pub discover: bool,
    /// Discovery nodes to dial (TCP multiaddrs, e.g. `/ip4/192.0.2.7/tcp/4001`).
    pub bootstrap: Vec<ota_net::discovery::libp2p::Multiaddr>,
    /// How long to wait for discovery to find a cache before the download starts.
    pub discover_wait: Duration,
    /// The fetch scheduler's tuning.
    pub scheduler: Config,
}

/// Why an update did not install. Each variant says whose fault it is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpdateError {
    /// The device's state directory (missing, unreadable, full).
    #[error(transparent)]
    State(#[from] StateError),
    /// The device has no handle yet.
    #[error("the device's handle is unknown: run `ota-device enrolled --state DIR --handle HEX`")]
    NotEnrolled,
    /// A release waits for its boot check.
    #[error("release {pending} is pending its boot check; run `ota-device boot-check` first")]
    PendingBootCheck {
        /// The pending release.
        pending: u64,
    },
    /// The origin cannot be reached or broke the protocol.
    #[error("origin: {0}")]
    Origin(#[source] ClientError),
    /// The origin refused the check-in.
    #[error("origin refused the check-in: {0}")]
    CheckInRefused(Refusal),
    /// The origin's answer does not parse.
    #[error("origin's check-in answer is malformed: {0}")]
    MalformedAnswer(String),
    /// The offer was refused (signature, device, nonce, expiry, rollback).
    #[error("offer refused: {0}")]
    Offer(#[from] OfferError),
    /// The release is not above the installed release or the anti-rollback floor.
    #[error("offer refused: {0}")]
    Rollback(InstallError),
    /// The image repository's metadata was refused (expired, rolled back, bad signatures…).
    #[error("image repository: {0}")]
    Metadata(#[source] tuf::Error),
    /// The image repository does not sign what was offered.
    #[error("offer refused: the image repository does not sign {target}: {reason}")]
    NotSigned {
        /// The target path offered.
        target: String,
        /// What the repository said.
        reason: String,
    },
    /// The offer and the image repository disagree (the Uptane rule).
    #[error(
        "offer refused: {target}: offered {field} {offered}, the image repository signs {signed}"
    )]
    OfferMismatch {
        /// The target path.
        target: String,
        /// Which field.
        field: &'static str,
        /// The offer's value.
        offered: String,
        /// The repository's value.
        signed: String,
    },
    /// The release manifest does not match the offer.
    #[error("offer refused: release manifest {manifest}: {reason}")]
    ManifestMismatch {
        /// The manifest's target path.
        manifest: String,
        /// What differs.
        reason: String,
    },
    /// The signed chunk index is over the device's bound.
    #[error("artifact {target}: chunk index of {len} bytes is over the {max}-byte bound")]
    IndexTooLarge {
        /// The target.
        target: String,
        /// The signed index length.
        len: u64,
        /// The bound.
        max: u64,
    },
    /// The signed chunk index contradicts the signed target (the release is broken).
    #[error("artifact {target}: {source}")]
    Index {
        /// The target.
        target: String,
        /// What is wrong.
        source: IndexError,
    },
    /// No source served the signed chunk index.
    #[error("artifact {target}: no source served its chunk index")]
    NoIndex {
        /// The target.
        target: String,
    },
    /// Downloading or checking an artifact failed.
    #[error(transparent)]
    Download(#[from] DownloadError),
}

impl UpdateError {
    /// The error class reported to the origin and in `status`.
    pub fn class(&self) -> &'static str {
        match self {
            Self::State(e) if e.disk_full() => "disk-full",
            Self::Download(e) if e.disk_full() => "disk-full",
            Self::State(_) | Self::NotEnrolled => "state",
            Self::PendingBootCheck { .. } => "pending-boot-check",
            Self::Origin(_) | Self::CheckInRefused(_) | Self::MalformedAnswer(_) => "check-in",
            Self::Offer(_) => "offer",
            Self::Rollback(_) => "rollback",
            Self::Metadata(_) => "metadata",
            Self::NotSigned { .. } | Self::OfferMismatch { .. } | Self::ManifestMismatch { .. } => {
                "offer-mismatch"
            }
            Self::IndexTooLarge { .. } | Self::Index { .. } => "index",
            Self::NoIndex { .. } => "download",
            Self::Download(DownloadError::Artifact { .. }) => "verify",
            Self::Download(_) => "download",
        }
    }

    /// Exit code: 1 for a verification or policy refusal, 2 for the environment.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::State(_)
            | Self::NotEnrolled
            | Self::Origin(_)
            | Self::NoIndex { .. }
            | Self::PendingBootCheck { .. } => 2,
            Self::Download(
                DownloadError::Disk { .. }
                | DownloadError::Stuck { .. }
                | DownloadError::NoProgress { .. },
            ) => 2,
            _ => 1,
        }
    }
}

/// What an update did (`last-update.json`, the last JSON line of `update --json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateReport {
    /// `installed` (pending its boot check), `no_offer`, or `failed`.
    pub outcome: String,
    /// When (seconds since the epoch).
    pub at: i64,
    /// The channel offered, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
    /// The release offered, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseNumber>,
    /// The slot written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<Slot>,
    /// Why there was no offer, or why the update failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The failure's class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<String>,
    /// Verified bytes by source kind, the local slot included.
    pub bytes_by_kind: BTreeMap<SourceKind, u64>,
    /// What each source did.
    pub sources: Vec<SourceUse>,
    /// Banned sources by name, with the reason.
    pub banned: BTreeMap<String, String>,
    /// Per artifact.
    pub artifacts: Vec<ArtifactReport>,
    /// Whether the origin was told.
    pub reported: bool,
    /// Peak resident memory of the process, where the system says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_bytes: Option<u64>,
    /// Wall time in milliseconds.
    pub millis: u64,
}

/// An outcome the origin has not been told yet (`pending-report.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingReport {
    /// The report body.
    pub report: InstallReport,
}

/// Run one update. The report is written to the state directory whatever the outcome (when
/// the directory exists).
pub async fn run(
    state: &StateDir,
    options: &UpdateOptions,
    progress: &Progress,
) -> (UpdateReport, Result<(), UpdateError>) {
    let started = Instant::now();
    let mut report = UpdateReport {
        at: now().0,
        ..UpdateReport::default()
    };
    let mut session = Session {
        state,
        options,
        progress,
        origin: None,
        offer: None,
    };
    let result = session.update(&mut report).await;
    match &result {
        Ok(()) => {}
        Err(error) => {
            report.outcome = "failed".into();
            report.reason = Some(error.to_string());
            report.error_class = Some(error.class().into());
        }
    }
    // Tell the origin how an offered update ended.
    if let Some(offer) = &session.offer {
        let body = InstallReport {
            channel: offer.channel.clone(),
            release: offer.release,
            success: result.is_ok(),
            error_class: result.as_ref().err().map(|e| e.class().to_string()),
        };
        report.reported = session.report(&body).await;
    }
    report.millis = started.elapsed().as_millis() as u64;
    report.peak_rss_bytes = peak_rss();
    let _ = write_json(&state.file("last-update.json"), &report);
    let _ = state.log(&json!({ "event": "update", "report": &report }));
    (report, result)
}

struct Session<'a> {
    state: &'a StateDir,
    options: &'a UpdateOptions,
    progress: &'a Progress,
    origin: Option<Client>,
    offer: Option<Offer>,
}

impl Session<'_> {
    async fn update(&mut self, report: &mut UpdateReport) -> Result<(), UpdateError> {
        let state = self.state;
        let handle = state.config.handle.ok_or(UpdateError::NotEnrolled)?;
        let key = state.key()?;
        let slots = state.slots()?;
        if let Some(p) = slots.pending {
            return Err(UpdateError::PendingBootCheck {
                pending: p.release.0,
            });
        }
        let director_root: Root = {
            let bytes = state.director_root()?;
            Envelope::parse("root", "director-root.json", &bytes, 1 << 20)
                .and_then(|e| e.role())
                .map_err(UpdateError::Metadata)?
        };

        // Discovery runs while the device checks in and refreshes its metadata.
        let discovery = if self.options.discover || !self.options.bootstrap.is_empty() {
            let mut config = ota_net::discovery::DiscoveryConfig::device();
            config.mdns = self.options.discover;
            config.bootstrap = self.options.bootstrap.clone();
            match ota_net::discovery::Discovery::spawn(config).await {
                Ok((handle, _events)) => Some(handle),
                Err(error) => {
                    // Discovery is an optimisation: the update goes on without it.
                    self.progress
                        .event("discovery_failed", json!({ "reason": error.to_string() }));
                    None
                }
            }
        } else {
            None
        };

        // Check-in.
        self.progress
            .event("check_in", json!({ "origin": state.config.origin }));
        let origin = Client::connect(state.config.origin, state.config.pin())
            .await
            .map_err(UpdateError::Origin)?;
        self.origin = Some(origin.clone());
        self.send_pending_report(&origin, &key).await;
        let nonce = origin.challenge().await.map_err(UpdateError::Origin)?;
        // With a provider configured, evidence bound to this nonce, handle and connection.
        let body = crate::attest::check_in_body(
            &state.config.attestation,
            CheckIn {
                installed: slots.active_release,
            },
            &nonce.0,
            &handle,
            &origin.channel_binding().0,
        )?;
        let request = sign(&key, &origin, SignedKind::CheckIn, nonce, body);
        let answer = match origin
            .signed(SignedKind::CheckIn, request)
            .await
            .map_err(UpdateError::Origin)?
        {
            Answer::Signed(body) => body,
            Answer::Refused(refusal) => return Err(UpdateError::CheckInRefused(refusal)),
        };
        if answer.len() > 64 * 1024 {
            return Err(UpdateError::MalformedAnswer("over 64 KiB".into()));
        }
        let answer: CheckInAnswer = serde_json::from_slice(&answer)
            .map_err(|e| UpdateError::MalformedAnswer(e.to_string()))?;
        let offer_json = match answer {
            CheckInAnswer::Offer(offer) => offer,
            CheckInAnswer::NoOffer { reason } => {
                self.progress.event("no_offer", json!({ "reason": reason }));
                report.outcome = "no_offer".into();
                report.reason = Some(reason);
                return Ok(());
            }
        };

        // The offer: director-signed, for this device, this check-in, not expired, newer.
        let offer_bytes = serde_json::to_vec(&offer_json)
            .map_err(|e| UpdateError::MalformedAnswer(e.to_string()))?;
        let offer = Offer::verify(
            &offer_bytes,
            &director_root,
            OfferExpectation {
                handle: &handle,
                nonce: &nonce.0,
                installed: slots.active_release,
                now: now(),
            },
        )?;
        report.channel = Some(offer.channel.clone());
        report.release = Some(offer.release);
        self.progress.event(
            "offer",
            json!({ "channel": offer.channel, "release": offer.release, "artifacts": offer.artifacts.len() }),
        );
        self.offer = Some(offer.clone());
        let target_slot = slots
            .target_for(offer.release)
            .map_err(UpdateError::Rollback)?;
        report.slot = Some(target_slot);

        // The image repository, refreshed and searched.
        self.progress.event("refresh", json!({}));
        let mut repo = Repository::new(state, &origin)?;
        repo.refresh().await?;
        let manifest_info = repo
            .find(&offer.manifest)
            .await
            .map_err(|e| not_signed(&offer.manifest, e))?;
        let manifest = repo.manifest(&manifest_info).await?;
        check_manifest(&offer, &manifest)?;
        let mut artifacts = Vec::new();
        for offered in &offer.artifacts {
            let info = repo
                .find(&offered.target)
                .await
                .map_err(|e| not_signed(&offered.target, e))?;
            let artifact = info
                .into_artifact()
                .map_err(|e| not_signed(&offered.target, e))?;
            let mismatch = |field, offered: String, signed: String| UpdateError::OfferMismatch {
                target: offered_target(&artifact),
                field,
                offered,
                signed,
            };
            if offered.length != artifact.length() {
                return Err(mismatch(
                    "length",
                    offered.length.to_string(),
                    artifact.length().to_string(),
                ));
            }
            if offered.sha256 != *artifact.sha256() {
                return Err(mismatch(
                    "sha256",
                    offered.sha256.to_string(),
                    artifact.sha256().to_string(),
                ));
            }
            if offered.blake3 != artifact.chunks().blake3 {
                return Err(mismatch(
                    "blake3",
                    offered.blake3.to_string(),
                    artifact.chunks().blake3.to_string(),
                ));
            }
            artifacts.push((offered.slot.clone(), artifact));
        }

        // Sources: the active slot, LAN peers, the HTTP mirror, the origin.
        let found = match &discovery {
            Some(handle) => self.found_caches(handle).await,
            None => Vec::new(),
        };
        let mut sources = self.sources(&slots, &origin, &found).await?;

        // The chunk indexes, each verified against the signed chunk tree.
        let mut verifiers = Vec::new();
        for (_, artifact) in &artifacts {
            verifiers.push(self.chunk_index(artifact, &mut sources).await?);
        }

        // The inactive slot no longer describes a complete image while it is written.
        let slot_dir = state.slot_dir(target_slot);
        std::fs::create_dir_all(&slot_dir).map_err(|source| StateError::Io {
            path: slot_dir.clone(),
            source,
        })?;
        remove_synced(&slot_dir.join("contents.json"))?;
        let journal_dir = state.file("journal");
        std::fs::create_dir_all(&journal_dir).map_err(|source| StateError::Io {
            path: journal_dir.clone(),
            source,
        })?;

        let result = self
            .download_all(&artifacts, &verifiers, &slot_dir, &mut sources, report)
            .await;
        report.sources = sources.uses.clone();
        for used in &sources.uses {
            if let Some(reason) = &used.banned {
                report.banned.insert(used.name.clone(), reason.clone());
            }
        }
        result?;

        // Install: the indexes and what the slot holds, then the pending mark (atomic).
        self.progress
            .event("install", json!({ "slot": target_slot }));
        for ((name, _), verifier) in artifacts.iter().zip(&verifiers) {
            write_atomic(
                &slot_dir.join(format!("{name}.index")),
                &verifier.index().encode(),
            )?;
        }
        write_json(
            &slot_dir.join("contents.json"),
            &SlotContents {
                channel: offer.channel.clone(),
                release: offer.release,
                artifacts: artifacts
                    .iter()
                    .map(|(name, a)| SlotArtifact {
                        slot: name.clone(),
                        target: a.path().to_string(),
                        length: a.length(),
                    })
                    .collect(),
            },
        )?;
        let pending = slots
            .mark_pending(offer.release, state.config.boot_tries)
            .map_err(UpdateError::Rollback)?;
        state.save_slots(&pending)?;
        for (name, _) in &artifacts {
            let _ = std::fs::remove_file(journal_dir.join(format!("{name}.journal")));
        }
        report.outcome = "installed".into();
        Ok(())
    }

    async fn download_all(
        &self,
        artifacts: &[(String, VerifiedArtifact)],
        verifiers: &[ChunkVerifier],
        slot_dir: &std::path::Path,
        sources: &mut Sources,
        report: &mut UpdateReport,
    ) -> Result<(), UpdateError> {
        for ((name, artifact), verifier) in artifacts.iter().zip(verifiers) {
            let job = Job {
                artifact,
                verifier,
                slot_file: slot_dir.join(format!("{name}.img")),
                journal_file: self.state.file("journal").join(format!("{name}.journal")),
            };
            let done =
                download::download(&job, sources, self.options.scheduler, self.progress).await;
            let done = done?;
            for (kind, bytes) in &done.bytes_by_kind {
                *report.bytes_by_kind.entry(*kind).or_default() += bytes;
            }
            report.artifacts.push(done);
        }
        self.progress.finish();
        Ok(())
    }

    /// The caches discovery found, waiting up to the configured time for the first one.
    async fn found_caches(&self, handle: &ota_net::discovery::DiscoveryHandle) -> Vec<PeerSpec> {
        let deadline = Instant::now() + self.options.discover_wait;
        loop {
            let caches = handle.caches();
            if !caches.is_empty() || Instant::now() >= deadline {
                let found: Vec<PeerSpec> = caches
                    .iter()
                    .filter_map(|c| {
                        c.quic.first().map(|addr| PeerSpec {
                            addr: *addr,
                            pin: c.pin,
                        })
                    })
                    .filter(|p| !self.options.peers.iter().any(|q| q.addr == p.addr))
                    .collect();
                self.progress.event(
                    "discovered",
                    json!({ "caches": found.iter().map(|p| p.addr.to_string()).collect::<Vec<_>>() }),
                );
                return found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn sources(
        &self,
        slots: &Slots,
        origin: &Client,
        found: &[PeerSpec],
    ) -> Result<Sources, UpdateError> {
        let mut list = Vec::new();
        let mut next = 0u32;
        let mut id = || {
            next += 1;
            SourceId(next - 1)
        };
        // The active slot's chunks, from its installed indexes.
        let (local, holdings) = self.local_chunks(slots.active)?;
        if !holdings.is_empty() {
            list.push(Source {
                id: id(),
                kind: SourceKind::LocalSlot,
                name: format!("local slot {:?}", slots.active),
                transport: Transport::Local(std::sync::Arc::new(local)),
            });
        }
        let mut dropped = Vec::new();
        let mut unreachable = Vec::new();
        let peers: Vec<(PeerSpec, String)> = self
            .options
            .peers
            .iter()
            .map(|p| (*p, peer_name(p.addr)))
            .chain(
                found
                    .iter()
                    .map(|p| (*p, format!("{} (discovered)", peer_name(p.addr)))),
            )
            .collect();
        if !peers.is_empty() {
            let connector = Connector::bind(
                SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
                ClientConfig::default(),
            )
            .map_err(UpdateError::Origin)?;
            // All at once, each for at most `START_DIAL`: a peer that is up answers within
            // a round trip, and one that is not is left to the download, which dials it
            // again in the background (it may come up during the update).
            let dials: Vec<_> = peers
                .iter()
                .map(|(peer, _)| {
                    let (connector, peer) = (connector.clone(), *peer);
                    tokio::spawn(async move {
                        tokio::time::timeout(START_DIAL, connector.connect(peer.addr, peer.pin))
                            .await
                    })
                })
                .collect();
            for ((peer, name), dial) in peers.into_iter().zip(dials) {
                let sid = id();
                let dialled = match dial.await {
                    Ok(Ok(result)) => result,
                    Ok(Err(_)) => Err(ClientError::Timeout {
                        peer: peer.addr,
                        during: "connecting at the start",
                        waited: START_DIAL,
                    }),
                    Err(joined) => std::panic::resume_unwind(joined.into_panic()),
                };
                match dialled {
                    Ok(client) => list.push(Source {
                        id: sid,
                        kind: SourceKind::LanPeer,
                        name,
                        transport: Transport::Quic(QuicLink::new(client, peer.pin)),
                    }),
                    // Not there yet (or gone for now): a source dialled again at its
                    // requests, after the scheduler's backoff once a dial fails.
                    Err(error) if connection_lost(&error) => {
                        self.progress.event(
                            "source_lost",
                            json!({ "source": name, "reason": error.to_string() }),
                        );
                        unreachable.push((sid, error.to_string()));
                        list.push(Source {
                            id: sid,
                            kind: SourceKind::LanPeer,
                            name,
                            transport: Transport::Quic(QuicLink::unconnected(peer.addr, peer.pin)),
                        });
                    }
                    Err(error) => {
                        self.progress.event(
                            "source_dropped",
                            json!({ "source": name, "reason": error.to_string() }),
                        );
                        dropped.push((name, error.to_string()));
                    }
                }
            }
        }
        if let Some(base) = &self.state.config.http {
            let client =
                reqwest::Client::builder()
                    .no_proxy()
                    .build()
                    .map_err(|e| StateError::Invalid {
                        path: self.state.file("device.json"),
                        reason: format!("HTTP client: {e}"),
                    })?;
            list.push(Source {
                id: id(),
                kind: SourceKind::HttpMirror,
                name: format!("http {base}"),
                transport: Transport::Http {
                    client,
                    base: base.clone(),
                },
            });
        }
        list.push(Source {
            id: id(),
            kind: SourceKind::Origin,
            name: format!("origin {}", self.state.config.origin),
            transport: Transport::Quic(QuicLink::new(origin.clone(), self.state.config.pin())),
        });
        let mut sources = Sources::new(list, holdings);
        for (sid, reason) in unreachable {
            if let Some(used) = sources.list.iter().position(|s| s.id == sid) {
                sources.uses[used].lost += 1;
                sources.uses[used].last_error = Some(reason);
            }
        }
        for (name, reason) in dropped {
            sources.uses.push(SourceUse {
                name,
                kind: SourceKind::LanPeer,
                bytes: 0,
                chunks: 0,
                fetched_chunks: 0,
                banned: None,
                dropped: Some(reason),
                lost: 0,
                redials: 0,
                last_error: None,
                slow: false,
            });
        }
        Ok(sources)
    }

    /// Where each chunk of the active slot lies, from the indexes verified when it was
    /// installed. A slot file that changed since is caught by the per-chunk check.
    fn local_chunks(&self, active: Slot) -> Result<(LocalChunks, HashSet<ChunkId>), UpdateError> {
        let mut local = LocalChunks::default();
        let mut holdings = HashSet::new();
        let Some(contents) = self.state.slot_contents(active)? else {
            return Ok((local, holdings));
        };
        let dir = self.state.slot_dir(active);
        for artifact in &contents.artifacts {
            let index_path = dir.join(format!("{}.index", artifact.slot));
            let Ok(bytes) = read_bounded(&index_path, MAX_INDEX_LEN) else {
                continue;
            };
            let Ok(index) = ChunkIndex::parse(&bytes, IndexLimits::UNBOUNDED) else {
                continue;
            };
            let Ok(file) = File::open(dir.join(format!("{}.img", artifact.slot))) else {
                continue;
            };
            let f = local.files.len();
            local.files.push(file);
            for entry in index.entries() {
                local
                    .chunks
                    .entry(*entry.id())
                    .or_insert((f, entry.offset(), entry.len()));
                holdings.insert(*entry.id());
            }
        }
        Ok((local, holdings))
    }

    /// The artifact's chunk index, from the first source that serves the signed one. A source
    /// that serves another blob under its id is banned for the update.
    async fn chunk_index(
        &self,
        artifact: &VerifiedArtifact,
        sources: &mut Sources,
    ) -> Result<ChunkVerifier, UpdateError> {
        let signed = artifact.chunks();
        if signed.chunk_index_length > MAX_INDEX_LEN {
            return Err(UpdateError::IndexTooLarge {
                target: artifact.path().into(),
                len: signed.chunk_index_length,
                max: MAX_INDEX_LEN,
            });
        }
        let max_len = signed.chunk_index_length as u32;
        for i in 0..sources.list.len() {
            if !sources.usable(i)
                || matches!(sources.list[i].transport, Transport::Local(_))
                || !sources.list[i].connected()
            {
                continue;
            }
            let source = sources.list[i].clone();
            match source.fetch_blob(signed.chunk_index, max_len).await {
                Ok(Some(bytes)) => match ChunkVerifier::new(artifact, &bytes) {
                    Ok(verifier) => return Ok(verifier),
                    Err(e) if e.source_at_fault() => {
                        let reason = format!("served a bad chunk index: {e}");
                        self.progress.event(
                            "source_banned",
                            json!({ "source": source.name, "reason": reason }),
                        );
                        sources.ban(source.id, reason);
                    }
                    Err(source) => {
                        return Err(UpdateError::Index {
                            target: artifact.path().into(),
                            source,
                        });
                    }
                },
                Ok(None) => {}
                Err(error) if error.misbehaved => {
                    // Like a corrupt chunk: banned for the update and named.
                    let reason = format!("broke the protocol: {}", error.reason);
                    self.progress.event(
                        "source_banned",
                        json!({ "source": source.name, "reason": reason }),
                    );
                    sources.ban(source.id, reason);
                }
                Err(error) => {
                    let reason = error.reason;
                    self.progress.event(
                        "source_dropped",
                        json!({ "source": source.name, "reason": reason }),
                    );
                    sources.uses[i].dropped.get_or_insert(reason);
                }
            }
        }
        Err(UpdateError::NoIndex {
            target: artifact.path().into(),
        })
    }

    /// Send a signed install report; `false` if the origin could not be told (it is kept in
    /// `pending-report.json` and sent at the next check-in).
    async fn report(&self, body: &InstallReport) -> bool {
        let sent = match (&self.origin, self.state.key()) {
            (Some(origin), Ok(key)) => send_report(origin, &key, body).await,
            _ => false,
        };
        if !sent {
            let _ = write_json(
                &self.state.file("pending-report.json"),
                &PendingReport {
                    report: body.clone(),
                },
            );
        }
        sent
    }

    async fn send_pending_report(&self, origin: &Client, key: &ed25519_dalek::SigningKey) {
        let path = self.state.file("pending-report.json");
        if !path.exists() {
            return;
        }
        if let Ok(pending) = read_json::<PendingReport>(&path)
            && send_report(origin, key, &pending.report).await
        {
            let _ = remove_synced(&path);
        }
    }
}

async fn send_report(
    origin: &Client,
    key: &ed25519_dalek::SigningKey,
    body: &InstallReport,
) -> bool {
    let Ok(bytes) = serde_json::to_vec(body) else {
        return false;
    };
    let Ok(nonce) = origin.challenge().await else {
        return false;
    };
    let request = sign(key, origin, SignedKind::Report, nonce, bytes);
    matches!(
        origin.signed(SignedKind::Report, request).await,
        Ok(Answer::Signed(_))
    )
}

/// The image repository as this update sees it: the TUF client workflow over the origin's
/// `GetMetadata`, falling back to the HTTP mirror.
struct Repository<'a> {
    state: &'a StateDir,
    origin: &'a Client,
    http: Option<(reqwest::Client, String)>,
    updater: Updater,
}

impl<'a> Repository<'a> {
    fn new(state: &'a StateDir, origin: &'a Client) -> Result<Self, UpdateError> {
        let updater = Updater::new(
            Limits::default(),
            &state.trusted_root()?,
            state.trusted_files()?,
        )
        .map_err(UpdateError::Metadata)?;
        let http = state.config.http.as_ref().and_then(|base| {
            reqwest::Client::builder()
                .no_proxy()
                .build()
                .ok()
                .map(|c| (c, base.trim_end_matches('/').to_string()))
        });
        Ok(Self {
            state,
            origin,
            http,
            updater,
        })
    }

    async fn refresh(&mut self) -> Result<(), UpdateError> {
        self.updater.refresh().map_err(UpdateError::Metadata)?;
        self.drive().await.map(|_| ())
    }

    async fn find(&mut self, path: &str) -> Result<TargetInfo, tuf::Error> {
        self.updater.find_target(now(), path)?;
        match self.drive().await {
            Ok(Some(info)) => Ok(info),
            Ok(None) => Err(tuf::Error::Unexpected(
                "target search ended without a result".into(),
            )),
            Err(UpdateError::Metadata(e)) => Err(e),
            Err(other) => Err(tuf::Error::Unexpected(other.to_string())),
        }
    }

    async fn drive(&mut self) -> Result<Option<TargetInfo>, UpdateError> {
        while let Some(action) = self.updater.poll_action() {
            match action {
                Action::Fetch(request) => {
                    let fetched = self.fetch(&request).await;
                    self.updater
                        .handle_fetched(now(), &request, fetched)
                        .map_err(UpdateError::Metadata)?;
                }
                Action::Persist { file, bytes } => self.state.persist_trusted(&file, &bytes)?,
                Action::Remove { file } => self.state.remove_trusted(&file)?,
                Action::Refreshed => return Ok(None),
                Action::Found(info) => return Ok(Some(info)),
                _ => {}
            }
        }
        Ok(None)
    }

    async fn fetch(&self, request: &FileRequest) -> Fetched {
        let max = request.max_len.min(u64::from(MAX_METADATA_LEN)) as u32;
        match self.origin.metadata(&request.file, max).await {
            Ok(Some(bytes)) => return Fetched::Bytes(bytes.to_vec()),
            Ok(None) => return Fetched::NotFound,
            Err(_) => {}
        }
        if let Some((client, base)) = &self.http {
            let url = format!("{base}/metadata/{}", request.file);
            if let Ok(Some(bytes)) = http_get(client, &url, u64::from(max)).await {
                return Fetched::Bytes(bytes);
            }
        }
        Fetched::NotFound
    }

    /// The release manifest's bytes, checked against its signed target.
    async fn manifest(&self, info: &TargetInfo) -> Result<ReleaseManifest, UpdateError> {
        let max = info.file().length.min(MAX_MANIFEST_LEN);
        let mut bytes = self
            .origin
            .metadata(info.path(), max as u32)
            .await
            .ok()
            .flatten()
            .map(|b| b.to_vec());
        if bytes.is_none()
            && let Some((client, base)) = &self.http
        {
            let url = format!("{base}/targets/{}", info.download_path());
            bytes = http_get(client, &url, max).await.ok().flatten();
        }
        let bytes = bytes.ok_or_else(|| UpdateError::NotSigned {
            target: info.path().into(),
            reason: "no source served the release manifest".into(),
        })?;
        info.verify_bytes(&bytes)
            .map_err(|e| not_signed(info.path(), e))?;
        ReleaseManifest::parse(&bytes).map_err(|reason| UpdateError::ManifestMismatch {
            manifest: info.path().into(),
            reason,
        })
    }
}

fn check_manifest(offer: &Offer, manifest: &ReleaseManifest) -> Result<(), UpdateError> {
    let fail = |reason: String| UpdateError::ManifestMismatch {
        manifest: offer.manifest.clone(),
        reason,
    };
    if manifest.channel != offer.channel || manifest.release != offer.release {
        return Err(fail(format!(
            "signs release {} of channel {}, the offer is for release {} of channel {}",
            manifest.release.0, manifest.channel.0, offer.release.0, offer.channel.0
        )));
    }
    let signed: BTreeSet<(&str, &str)> = manifest
        .artifacts
        .iter()
        .map(|a| (a.target.as_str(), a.slot.as_str()))
        .collect();
    let offered: BTreeSet<(&str, &str)> = offer
        .artifacts
        .iter()
        .map(|a| (a.target.as_str(), a.slot.as_str()))
        .collect();
    if signed != offered {
        return Err(fail(format!(
            "lists artifacts {signed:?}, the offer {offered:?} (a release installs all or nothing)"
        )));
    }
    for a in &offer.artifacts {
        if a.slot.is_empty()
            || a.slot.len() > 64
            || !a
                .slot
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(fail(format!(
                "install slot name {:?} is not allowed",
                a.slot
            )));
        }
    }
    Ok(())
}

fn offered_target(artifact: &VerifiedArtifact) -> String {
    artifact.path().to_string()
}

fn not_signed(target: &str, error: tuf::Error) -> UpdateError {
    match error {
        // Expired or rolled-back metadata met during the search is a metadata refusal.
        tuf::Error::TargetNotFound { .. } | tuf::Error::NotAnArtifact { .. } => {
            UpdateError::NotSigned {
                target: target.into(),
                reason: error.to_string(),
            }
        }
        other => UpdateError::NotSigned {
            target: target.into(),
            reason: other.to_string(),
        },
    }
}

/// Sign a request over this connection's channel binding.
fn sign(
    key: &ed25519_dalek::SigningKey,
    client: &Client,
    kind: SignedKind,
    nonce: ota_net::proto::Nonce,
    body: Vec<u8>,
) -> SignedRequest {
    let device_key = DeviceKey(key.verifying_key().to_bytes());
    let timestamp = now();
    let message = ota_net::proto::signing_bytes(
        kind,
        &device_key,
        &nonce,
        timestamp,
        &client.channel_binding(),
        &body,
    );
    SignedRequest {
        device_key,
        nonce,
        timestamp,
        body,
        signature: ota_net::proto::Signature(key.sign(&message).to_bytes()),
    }
}

fn remove_synced(path: &std::path::Path) -> Result<(), StateError> {
    match std::fs::remove_file(path) {
        Ok(()) => sync_dir(path.parent().unwrap_or(std::path::Path::new("."))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StateError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The wall clock as the formats count it.
pub fn now() -> UnixTime {
    UnixTime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    )
}

/// Peak resident set size of this process (Linux: `VmHWM`).
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The device's handle type, re-exported for the command line.
pub type Handle = DeviceHandle;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use ota_core::digest::{Blake3Hash, Sha256Hash};
    use ota_core::director::OfferedArtifact;
    use ota_core::rollout::Stage;
    use ota_core::tuf::enigm::ManifestArtifact;

    use super::*;

    fn offer() -> Offer {
        Offer {
            type_: "offer".into(),
            handle: DeviceHandle([1; 32]),
            nonce: [2; 32],
            issued_at: UnixTime(0),
            expires: UnixTime(600),
            channel: Channel("stable".into()),
            release: ReleaseNumber(3),
            manifest: "releases/stable/3.json".into(),
            artifacts: vec![OfferedArtifact {
                target: "artifacts/system.img".into(),
                length: 10,
                sha256: Sha256Hash::of(b"x"),
                blake3: Blake3Hash::of(b"x"),
                slot: "system".into(),
            }],
            stage: Stage::Stable,
        }
    }

    fn manifest() -> ReleaseManifest {
        ReleaseManifest {
            channel: Channel("stable".into()),
            release: ReleaseNumber(3),
            version: "2026.11.3".into(),
            security: false,
            models: vec!["enigm-one".into()],
            min_installed_release: None,
            artifacts: vec![ManifestArtifact {
                target: "artifacts/system.img".into(),
                slot: "system".into(),
            }],
        }
    }

    #[test]
    fn the_manifest_must_match_the_offer() {
        check_manifest(&offer(), &manifest()).unwrap();

        let mut other = manifest();
        other.release = ReleaseNumber(4);
        let err = check_manifest(&offer(), &other).unwrap_err();
        assert!(err.to_string().contains("signs release 4"), "{err}");

        // An artifact the offer leaves out: all or nothing.
        let mut more = manifest();
        more.artifacts.push(ManifestArtifact {
            target: "artifacts/boot.img".into(),
            slot: "boot".into(),
        });
        let err = check_manifest(&offer(), &more).unwrap_err();
        assert!(err.to_string().contains("all or nothing"), "{err}");

        // A slot name that would leave the slot directory.
        let mut sneaky_offer = offer();
        sneaky_offer.artifacts[0].slot = "../A/system".into();
        let mut sneaky = manifest();
        sneaky.artifacts[0].slot = "../A/system".into();
        let err = check_manifest(&sneaky_offer, &sneaky).unwrap_err();
        assert!(err.to_string().contains("is not allowed"), "{err}");
    }

    #[test]
    fn refusals_exit_1_and_the_environment_exits_2() {
        let refusal = UpdateError::Offer(OfferError::NonceMismatch);
        assert_eq!((refusal.exit_code(), refusal.class()), (1, "offer"));
        let rollback = UpdateError::Rollback(InstallError::Rollback {
            offered: 1,
            floor: 2,
        });
        assert_eq!((rollback.exit_code(), rollback.class()), (1, "rollback"));
        let full = UpdateError::Download(DownloadError::Disk {
            path: "slot".into(),
            source: std::io::Error::from_raw_os_error(28),
        });
        assert_eq!((full.exit_code(), full.class()), (2, "disk-full"));
        let pending = UpdateError::PendingBootCheck { pending: 3 };
        assert_eq!(pending.exit_code(), 2);
    }
}
