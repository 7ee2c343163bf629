//! `ota-origin serve`: the QUIC protocol (`enigm-ota/1`) for devices and caches, the HTTP
//! mirror and admin API, and the timestamp refresher.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ota_core::digest::ChunkId;
use ota_core::time::UnixTime;
use ota_net::proto::{
    ChannelBinding, MAX_BLOB_LEN, Nonce, Refusal, Relayed, RelayedVia, SignedKind, SignedRequest,
};
use ota_net::server::{ConnInfo, Handler};

use crate::access::{BlobAccess, ReleaseKey};
use crate::director::{self, RequestRefusal};
use crate::metrics::Metrics;
use crate::repository::Repository;
use crate::service::Origin;
use crate::store::{DeviceRecord, MetadataFile};
use ota_core::attest::{Action, Gate};
use ota_core::director::{AttestationOutcome, AttestationPolicy};

/// The origin's answer to the wire protocol.
#[derive(Debug)]
pub struct OriginHandler {
    origin: Arc<Origin>,
    clock: fn() -> UnixTime,
}

impl OriginHandler {
    /// A handler that reads the time from `clock`.
    pub fn new(origin: Arc<Origin>, clock: fn() -> UnixTime) -> Self {
        Self { origin, clock }
    }
}

impl Handler for OriginHandler {
    async fn challenge(&self, conn: &ConnInfo) -> Result<Nonce, Refusal> {
        // Minted, not stored: only its use is recorded (see `crate::nonce`).
        let mut random = [0u8; 8];
        rand_core::RngCore::try_fill_bytes(&mut rand_core::OsRng, &mut random)
            .map_err(|_| RequestRefusal::Unavailable.to_wire())?;
        // Nonce time, which never goes back (see `crate::nonce::NonceClock`).
        let now = self.origin.cache.nonce_time((self.clock)());
        let nonce = self
            .origin
            .keys
            .nonce
            .mint(
                &conn.binding.0,
                now,
                self.origin.dir.config.nonce_expiry_secs,
                random,
            )
            .ok_or_else(|| {
                tracing::error!(target: "origin.serve", %now, "clock outside the nonce format");
                RequestRefusal::Unavailable.to_wire()
            })?;
        Metrics::inc(&self.origin.metrics.challenges);
        Ok(Nonce(nonce))
    }

    async fn signed(
        &self,
        conn: &ConnInfo,
        kind: SignedKind,
        request: SignedRequest,
    ) -> Result<Vec<u8>, Refusal> {
        let now = (self.clock)();
        let origin = &self.origin;
        let refused = |refusal: RequestRefusal| {
            Metrics::inc(&origin.metrics.requests_refused);
            tracing::info!(target: "origin.serve", remote = %conn.remote, ?kind, %refusal, "request refused");
            refusal.to_wire()
        };
        if kind == SignedKind::Enroll {
            return Err(refused(RequestRefusal::NotSupported(
                "enrollment is done by an operator (ota-origin device enroll)",
            )));
        }
        let device = director::verify_request(origin, conn, kind, &request, now)
            .await
            .map_err(refused)?;
        self.answer(conn, kind, &device, &request, &conn.binding, now)
            .await
    }

    async fn relayed(&self, conn: &ConnInfo, relayed: Relayed) -> Result<Vec<u8>, Refusal> {
        let now = (self.clock)();
        let origin = &self.origin;
        let kind = relayed.kind;
        let refused = |refusal: RequestRefusal| {
            Metrics::inc(&origin.metrics.requests_refused);
            tracing::info!(target: "origin.serve", remote = %conn.remote, ?kind, relay = %hex::encode(relayed.relay_key.0), %refusal, "relayed request refused");
            refusal.to_wire()
        };
        if !matches!(kind, SignedKind::CheckIn | SignedKind::Report) {
            return Err(refused(RequestRefusal::NotSupported(
                "only check-ins and reports are relayed",
            )));
        }
        let device = director::verify_relayed(origin, conn, &relayed, now)
            .await
            .map_err(refused)?;
        // The device signed over its connection to the relay: its evidence is bound to that.
        self.answer(
            conn,
            kind,
            &device,
            &relayed.request,
            &relayed.device_binding,
            now,
        )
        .await
    }

    async fn relayed_via(&self, conn: &ConnInfo, message: RelayedVia) -> Result<Vec<u8>, Refusal> {
        let now = (self.clock)();
        let origin = &self.origin;
        let kind = message.relayed.kind;
        let refused = |refusal: RequestRefusal| {
            Metrics::inc(&origin.metrics.requests_refused);
            tracing::info!(target: "origin.serve", remote = %conn.remote, ?kind, relay = %hex::encode(message.relayed.relay_key.0), hops = message.via.len(), %refusal, "request relayed via relays refused");
            refusal.to_wire()
        };
        if !matches!(kind, SignedKind::CheckIn | SignedKind::Report) {
            return Err(refused(RequestRefusal::NotSupported(
                "only check-ins and reports are relayed",
            )));
        }
        let device = director::verify_relayed_via(origin, conn, &message, now)
            .await
            .map_err(refused)?;
        // The device signed over its connection to the first relay; this connection (the
        // sender's) is the one granted, as for a single relay.
        self.answer(
            conn,
            kind,
            &device,
            &message.relayed.request,
            &message.relayed.device_binding,
            now,
        )
        .await
    }

    async fn metadata(&self, _conn: &ConnInfo, name: &str) -> Option<Bytes> {
        let file = self.origin.catalog.metadata(name).await.ok()??;
        Metrics::inc(&self.origin.metrics.metadata_served);
        Some(Bytes::from(file.bytes))
    }

    async fn blob(&self, conn: &ConnInfo, id: &ChunkId) -> Option<Bytes> {
        let origin = &self.origin;
        let now = (self.clock)();
        match origin
            .access
            .blob(&origin.catalog, &conn.binding.0, id, now)
            .await
        {
            Ok(BlobAccess::Public | BlobAccess::Granted) => {}
            Ok(BlobAccess::Refused(handle)) => {
                // Answered like a chunk the origin does not hold; the handle only in the log.
                Metrics::inc(&origin.metrics.private_refused);
                let handle = handle.map_or_else(|| "none".to_string(), |h| h.to_string());
                tracing::info!(target: "origin.serve", %handle, %id, "private chunk refused: no grant on this connection");
                return None;
            }
            Err(error) => {
                tracing::error!(target: "origin.serve", %id, %error, "private content unknown; blob refused");
                return None;
            }
        }
        match self
            .origin
            .blobs
            .get_verified(id, u64::from(MAX_BLOB_LEN))
            .await
        {
            Ok(Some(bytes)) => {
                Metrics::inc(&self.origin.metrics.blobs_served);
                Metrics::add(&self.origin.metrics.blob_bytes_served, bytes.len() as u64);
                Some(bytes)
            }
            Ok(None) => None,
            Err(error) => {
                // A damaged blob is never served; the device asks elsewhere.
                tracing::error!(target: "origin.serve", %id, %error, "blob not served");
                None
            }
        }
    }
}

impl OriginHandler {
    /// Answers a verified check-in or report of `device`.
    async fn answer(
        &self,
        conn: &ConnInfo,
        kind: SignedKind,
        device: &DeviceRecord,
        request: &SignedRequest,
        binding: &ChannelBinding,
        now: UnixTime,
    ) -> Result<Vec<u8>, Refusal> {
        let origin = &self.origin;
        let refused = |refusal: RequestRefusal| {
            Metrics::inc(&origin.metrics.requests_refused);
            tracing::info!(target: "origin.serve", remote = %conn.remote, ?kind, %refusal, "request refused");
            refusal.to_wire()
        };
        match kind {
            SignedKind::CheckIn => {
                Metrics::inc(&origin.metrics.checkins);
                let mut checked = director::check_in(
                    origin,
                    device,
                    request.nonce.0,
                    binding,
                    &request.body,
                    now,
                )
                .await
                .map_err(refused)?;
                tracing::info!(target: "origin.serve", handle = %device.handle, offer = checked.offered.is_some(), "check-in");
                if let Some((channel, number, until)) = &checked.offered
                    && let Err(reason) = self
                        .grant_private(
                            conn,
                            device,
                            (channel.clone(), *number),
                            *until,
                            checked.attestation,
                        )
                        .await
                {
                    // The release has private content the device may not have: no offer (a
                    // peer would grant on the offer, and could not tell).
                    origin
                        .metrics
                        .offers
                        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                    checked.answer = ota_core::director::CheckInAnswer::NoOffer { reason };
                }
                serde_json::to_vec(&checked.answer)
                    .map_err(|_| refused(RequestRefusal::Unavailable))
            }
            SignedKind::Report => {
                director::report(origin, device, &request.body, now)
                    .await
                    .map_err(refused)?;
                Ok(b"{}".to_vec())
            }
            _ => Err(refused(RequestRefusal::NotSupported(
                "unknown request kind",
            ))),
        }
    }
}

impl OriginHandler {
    /// Grants this connection (the device's own, or the relaying peer's) the private content
    /// of the release just offered, when the channel's attestation policy for private content
    /// allows (see `crate::access`). When it does not, the reason the offer must be withdrawn.
    async fn grant_private(
        &self,
        conn: &ConnInfo,
        device: &DeviceRecord,
        release: ReleaseKey,
        until: UnixTime,
        attestation: Option<AttestationOutcome>,
    ) -> Result<(), String> {
        let origin = &self.origin;
        match origin
            .access
            .has_private_content(&origin.catalog, &release)
            .await
        {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(error) => {
                // No grant: the private chunks stay refused (fail closed).
                tracing::error!(target: "origin.serve", %error, "private content unknown; no grant");
                return Ok(());
            }
        }
        let mode = origin
            .attestation
            .as_ref()
            .map_or(AttestationPolicy::Off, |a| {
                a.mode(Action::PrivateContent, &release.0)
            });
        match ota_core::attest::outcome_gate(mode, attestation) {
            Gate::Refuse(reason) => {
                Metrics::inc(&origin.metrics.private_grants_refused);
                tracing::info!(target: "origin.serve", handle = %device.handle, "no offer: private content requires a passed attestation");
                let failed = if attestation == Some(AttestationOutcome::Failed) {
                    "the attestation in this check-in failed"
                } else {
                    reason.name()
                };
                return Err(format!(
                    "private content requires a passed attestation: {failed}"
                ));
            }
            Gate::PassCounted(_) => {
                Metrics::inc(&origin.metrics.attestations_preferred_missed);
            }
            Gate::Pass => {}
        }
        origin
            .access
            .grant(conn.binding.0, device.handle, release, until);
        Ok(())
    }
}

/// Load the published image repository from the catalog.
pub async fn load_repository(origin: &Origin) -> anyhow::Result<Repository> {
    let root = origin.dir.read("root.json")?;
    let mut files = std::collections::BTreeMap::new();
    if let Some(timestamp) = origin.catalog.metadata("timestamp.json").await? {
        for role in ["snapshot", "targets", "release"] {
            if let Some(file) = origin.catalog.latest_metadata(role).await? {
                files.insert(file.name.clone(), file.bytes);
            }
        }
        files.insert("timestamp.json".to_string(), timestamp.bytes);
    }
    Ok(Repository::load(&root, |name| files.get(name).cloned())?)
}

/// How much later than a fresh one's a timestamp may expire before the refresher takes it as
/// signed by a clock that was ahead (and re-signs it).
const TIMESTAMP_AHEAD_SLACK_SECS: i64 = 60;

/// Re-sign the timestamp when less than half its lifetime is left, or when it expires later
/// than one signed now would (by more than [`TIMESTAMP_AHEAD_SLACK_SECS`]): it was signed
/// while the clock was ahead, and would otherwise stay valid, for devices, that much longer
/// than the configured lifetime. Returns whether it did.
pub async fn refresh_timestamp(origin: &Origin, now: UnixTime) -> anyhow::Result<bool> {
    let repo = load_repository(origin).await?;
    let Some(expires) = repo.timestamp_expires() else {
        return Ok(false);
    };
    let lifetime = origin.dir.config.timestamp_expiry_secs;
    let left = expires.0 - now.0;
    if left > lifetime / 2 && left <= lifetime + TIMESTAMP_AHEAD_SLACK_SECS {
        return Ok(false);
    }
    let Some(snapshot) = origin.catalog.latest_metadata("snapshot").await? else {
        return Ok(false);
    };
    let (set, next) = repo.refresh_timestamp(
        &origin.keys.online,
        origin.dir.config.online_expiry(),
        now,
        &snapshot.bytes,
    )?;
    let bytes = set
        .files
        .get("timestamp.json")
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("refresh produced no timestamp"))?;
    let version = timestamp_version(&bytes)?;
    origin
        .catalog
        .publish(
            &[MetadataFile {
                name: "timestamp.json".into(),
                role: "timestamp".into(),
                version,
                bytes,
            }],
            now,
        )
        .await?;
    tracing::info!(target: "origin.serve", version, expires = %next.timestamp_expires().unwrap_or(now), "timestamp refreshed");
    Ok(true)
}

/// The version inside a timestamp file.
pub fn timestamp_version(bytes: &[u8]) -> anyhow::Result<u64> {
    let envelope =
        ota_core::tuf::metadata::Envelope::parse("timestamp", "timestamp.json", bytes, 16 * 1024)?;
    let timestamp: ota_core::tuf::metadata::Timestamp = envelope.role()?;
    Ok(timestamp.common.version)
}

/// Run the timestamp refresher until the task is dropped.
pub async fn timestamp_task(origin: Arc<Origin>, clock: fn() -> UnixTime, every: Duration) {
    loop {
        if let Err(error) = refresh_timestamp(&origin, clock()).await {
            tracing::warn!(target: "origin.serve", %error, "timestamp refresh failed");
        }
        tokio::time::sleep(every).await;
    }
}
