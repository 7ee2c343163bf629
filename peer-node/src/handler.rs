//! The peer's answer to `enigm-ota/1`: metadata and blobs from the cache, challenges and signed
//! requests relayed to the origin (directly, or through the upstream peer when the origin is
//! not among the data upstreams), and requests relayed by a peer below passed on as
//! `RelayedVia` with that peer as one more hop (docs/PROTOCOL.md, "Relaying through several
//! peers").

use std::sync::Arc;

use bytes::Bytes;
use ota_core::digest::ChunkId;
use ota_core::time::UnixTime;
use ota_net::client::Answer;
use ota_net::proto::{
    ChannelBinding, MAX_RELAY_HOPS, Nonce, Refusal, RelayHop, Relayed, RelayedVia, SignedKind,
    SignedRequest,
};
use ota_net::quic::NodeKey;
use ota_net::server::{ConnInfo, Handler};
use tracing::{debug, info, warn};

use crate::access::{Access, SETTLE_WAIT, device_signature_ok, relay_signature_ok};
use crate::cache::Cache;
use crate::metadata::MetadataCache;
use crate::metrics::Metrics;
use crate::prefetch::Walker;
use crate::upstream::Upstreams;

/// The peer's handler.
#[derive(Debug)]
pub struct PeerHandler {
    /// The chunk cache.
    pub cache: Arc<Cache>,
    /// The metadata cache.
    pub metadata: Arc<MetadataCache>,
    /// Private content.
    pub access: Arc<Access>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Where signed requests go (the origin).
    pub origin: Arc<Upstreams>,
    /// Walks a release offered before the peer has walked it.
    pub walker: Arc<Walker>,
    /// Whether `origin` is a connection of its own, apart from the data upstreams (the origin
    /// is one data upstream among others): the grants the origin makes on relayed check-ins
    /// are then on that connection, so private chunks are asked for there.
    pub relays_apart: bool,
    /// The key the peer signs relayed requests with (its node key).
    pub node_key: NodeKey,
}

/// The time now, in Unix seconds.
pub fn unix_now() -> UnixTime {
    UnixTime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    )
}

fn unavailable(what: &str, error: &dyn std::fmt::Display) -> Refusal {
    Refusal::new(
        Refusal::UNAVAILABLE,
        format!("the peer cannot reach the origin to {what}: {error}"),
    )
}

/// Only check-ins and reports are relayed (enrollment is done by an operator at the origin).
fn relayable(kind: SignedKind) -> Result<(), Refusal> {
    if matches!(kind, SignedKind::CheckIn | SignedKind::Report) {
        Ok(())
    } else {
        Err(Refusal::new(
            Refusal::NOT_SUPPORTED,
            format!("a peer relays CheckIn and Report only, not {}", kind.name()),
        ))
    }
}

impl PeerHandler {
    /// A request relayed by the peer below on connection `conn`: the sender's relay signature
    /// (over `signed`, the bytes it signs for this connection) and the device's signature over
    /// the device's binding must verify here, so that this peer forwards nothing forged and
    /// knows the sender holds its key on this very connection. It goes upstream with the
    /// sender added as the last hop; an offer in the answer grants `conn` (the connection the
    /// peer below fetches the release's private chunks on).
    async fn relay_from_below(
        &self,
        conn: &ConnInfo,
        relayed: Relayed,
        mut via: Vec<RelayHop>,
        signed: &[u8],
    ) -> Result<Vec<u8>, Refusal> {
        relayable(relayed.kind)?;
        let forbidden = |what: &str| {
            Metrics::inc(&self.metrics.relay_refused);
            info!(remote = %conn.remote, kind = relayed.kind.name(), relay = %hex::encode(relayed.relay_key.0), "relayed request refused: {what}");
            Err(Refusal::new(Refusal::FORBIDDEN, what.to_string()))
        };
        if !relay_signature_ok(&relayed.relay_key, &relayed.relay_signature, signed) {
            return forbidden("the relay's signature does not verify over this connection");
        }
        if !device_signature_ok(relayed.kind, &relayed.request, &relayed.device_binding) {
            return forbidden("the device's signature does not verify over its binding");
        }
        if via.len() >= MAX_RELAY_HOPS {
            return Err(Refusal::new(
                Refusal::BAD_REQUEST,
                format!("more than {MAX_RELAY_HOPS} relays before the origin"),
            ));
        }
        via.push(RelayHop {
            relay_key: relayed.relay_key,
            binding: conn.binding,
            relay_signature: relayed.relay_signature,
        });
        self.relay(
            conn,
            relayed.kind,
            relayed.device_binding,
            relayed.request,
            via,
        )
        .await
    }

    /// Sends a verified request upstream (to the origin, or through the peer above: see
    /// `lib.rs`), naming the relays `via` before this peer; on an offer, grants `conn`.
    async fn relay(
        &self,
        conn: &ConnInfo,
        kind: SignedKind,
        device_binding: ChannelBinding,
        request: SignedRequest,
        via: Vec<RelayHop>,
    ) -> Result<Vec<u8>, Refusal> {
        let hops = via.len();
        // A check-in may earn this peer's upstream connection a grant: unsettled until its
        // answer's offer, if any, is noted (access.rs).
        let in_flight = (kind == SignedKind::CheckIn).then(|| self.access.relay_started());
        let answer = match self
            .origin
            .relayed_via(&self.node_key, kind, device_binding, request.clone(), via)
            .await
        {
            Ok(answer) => answer,
            Err(e) => {
                Metrics::inc(&self.metrics.relay_failures);
                warn!(error = %e, "relaying a signed request");
                if in_flight.is_some() {
                    // The origin may have answered with an offer this peer never saw, granting
                    // a release it cannot walk: the grant ends with the connection.
                    self.origin.close_all().await;
                } else {
                    self.origin.reconnect_later(&e).await;
                }
                return Err(unavailable("relay a request", &e));
            }
        };
        Metrics::inc(&self.metrics.relayed);
        match answer {
            Answer::Signed(body) => {
                if kind == SignedKind::CheckIn {
                    if let Some((release, until)) = Access::offer_in_answer(&body, unix_now())
                        && self.access.offered(&release, until)
                    {
                        debug!(release = %release.0, "offered release not walked yet: walking it");
                        // The device reads the repository next, through this peer: make it as
                        // new as the offer (a cached timestamp may predate the release).
                        let _ = self.metadata.refresh("timestamp.json").await;
                        tokio::spawn(self.walker.clone().walk_offered(release));
                    }
                    drop(in_flight);
                    match self
                        .access
                        .grant_from_answer(conn.binding.0, &request, &body, unix_now())
                    {
                        Ok(release) => {
                            Metrics::inc(&self.metrics.access_granted);
                            debug!(remote = %conn.remote, hops, release = %release.0, "access granted");
                        }
                        Err(reason) => {
                            debug!(remote = %conn.remote, hops, %reason, "no access grant")
                        }
                    }
                }
                Ok(body)
            }
            Answer::Refused(refusal) => Err(refusal),
        }
    }
}

impl PeerHandler {
    /// Whether connection `conn` may be served chunk `id` now; a refusal is counted and
    /// logged (`why` adds to the log line), and answered like a chunk the peer does not hold.
    fn gate(&self, conn: &ConnInfo, id: &ChunkId, why: &str) -> bool {
        match self.access.gate(&conn.binding.0, id, unix_now()) {
            Ok(()) => true,
            Err(handle) => {
                Metrics::inc(&self.metrics.private_refused);
                let handle = handle.map_or_else(|| "none".to_string(), |h| h.to_string());
                info!(%handle, %id, "private chunk refused: no grant on this connection{why}");
                false
            }
        }
    }

    /// A private chunk asked of the origin on the relay connection (the one its grants are
    /// on), checked against its id, then stored as any chunk from upstream.
    async fn private_from_origin(&self, id: &ChunkId) -> Option<Bytes> {
        let fetched = async {
            let mut stream = self
                .origin
                .blobs(vec![*id], ota_net::proto::MAX_CHUNK_BLOB_LEN)
                .await?;
            let peer = stream.peer();
            let item = stream.next().await.transpose()?;
            Ok::<_, ota_net::client::ClientError>((peer, item.and_then(|(_, bytes)| bytes)))
        };
        let (peer, bytes) = match fetched.await {
            Ok((peer, Some(bytes))) => (peer, bytes),
            Ok((_, None)) => return None,
            Err(error) => {
                Metrics::inc(&self.metrics.upstream_failures);
                debug!(%id, %error, "asking the origin for a private chunk on the relay connection");
                return None;
            }
        };
        if ChunkId::of(&bytes) != *id {
            Metrics::inc(&self.metrics.verification_failures);
            warn!(upstream = %peer, %id, "the origin sent a private chunk that does not match its id; not stored");
            return None;
        }
        Metrics::inc(&self.metrics.chunks_up);
        Metrics::add(&self.metrics.bytes_up, bytes.len() as u64);
        if let Err(error) = self.cache.store_verified(*id, bytes.clone()).await {
            debug!(%id, %error, "storing a private chunk");
        }
        Some(bytes)
    }
}

impl Handler for PeerHandler {
    async fn challenge(&self, conn: &ConnInfo) -> Result<Nonce, Refusal> {
        let nonce = match self.origin.challenge().await {
            Ok(nonce) => nonce,
            Err(e) => {
                Metrics::inc(&self.metrics.relay_failures);
                self.origin.reconnect_later(&e).await;
                return Err(unavailable("relay a challenge", &e));
            }
        };
        Metrics::inc(&self.metrics.relayed);
        debug!(remote = %conn.remote, "challenge relayed");
        Ok(nonce)
    }

    async fn signed(
        &self,
        conn: &ConnInfo,
        kind: SignedKind,
        request: SignedRequest,
    ) -> Result<Vec<u8>, Refusal> {
        relayable(kind)?;
        // The origin checks everything again; the peer checks the signature itself so that it
        // relays nothing forged and knows the device holds its key on this connection.
        if !device_signature_ok(kind, &request, &conn.binding) {
            info!(remote = %conn.remote, kind = kind.name(), "signed request refused: bad signature over this connection");
            return Err(Refusal::new(
                Refusal::FORBIDDEN,
                "the signature does not verify over this connection",
            ));
        }
        self.relay(conn, kind, conn.binding, request, Vec::new())
            .await
    }

    async fn relayed(&self, conn: &ConnInfo, relayed: Relayed) -> Result<Vec<u8>, Refusal> {
        // A peer below this one relays a device's request: this peer forwards it upstream,
        // naming that peer as a hop (the origin checks that it is enrolled).
        let signed = relayed.signing_bytes(&conn.binding);
        self.relay_from_below(conn, relayed, Vec::new(), &signed)
            .await
    }

    async fn relayed_via(&self, conn: &ConnInfo, message: RelayedVia) -> Result<Vec<u8>, Refusal> {
        let signed = message.signing_bytes(&conn.binding);
        self.relay_from_below(conn, message.relayed, message.via, &signed)
            .await
    }

    async fn metadata(&self, _conn: &ConnInfo, name: &str) -> Option<Bytes> {
        let bytes = self.metadata.get(name).await?;
        Metrics::inc(&self.metrics.metadata_served);
        Some(bytes)
    }

    async fn blob(&self, conn: &ConnInfo, id: &ChunkId) -> Option<Bytes> {
        if !self.gate(conn, id, "") {
            return None;
        }
        let mut found = self.cache.get(*id).await;
        if found.is_none() && self.access.is_private(id) {
            // The upstream fetch this request joined may have left before the check-in that
            // granted this connection also granted the peer's upstream connection (a
            // prefetch, answered Missing by an origin that gates private chunks): once more.
            found = self.cache.get(*id).await;
        }
        if found.is_none() && self.relays_apart {
            // The data upstreams hold no grant; the relay connection to the origin may. Whether
            // the chunk is private is known once the offered releases are walked.
            if !self.access.is_settled() {
                self.access.settle(SETTLE_WAIT).await;
            }
            if self.access.is_private(id) {
                found = self.private_from_origin(id).await;
            }
        }
        if found.is_some() && self.access.tainted(id) {
            // It came from upstream while a grant the peer helped make there was for a release
            // not yet walked: whether it is private is known once that release is walked.
            if !self.access.settle(SETTLE_WAIT).await {
                Metrics::inc(&self.metrics.unsettled_refused);
                info!(%id, "chunk fetched while an offered release is not yet walked: answered missing until it is");
                return None;
            }
        }
        // Judged again: a walk since the first look may have found it private.
        if found.is_some() && !self.gate(conn, id, " (known private since it was asked for)") {
            return None;
        }
        match found {
            Some(bytes) => {
                Metrics::inc(&self.metrics.blobs_served);
                Metrics::add(&self.metrics.bytes_served, bytes.len() as u64);
                Some(bytes)
            }
            None => {
                Metrics::inc(&self.metrics.blobs_missing);
                None
            }
        }
    }
}
