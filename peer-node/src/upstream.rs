//! Connections to the peer's upstreams (the origin, or a parent peer), kept open and
//! re-established when they fail. An upstream caught sending corrupt bytes is set aside for a
//! while and the next one is used.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ota_net::client::{BlobStream, Client, ClientConfig, ClientError, Connector};
use ota_net::quic::CertPin;

/// One upstream server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamAddr {
    /// Its QUIC address.
    pub addr: SocketAddr,
    /// Its certificate pin.
    pub pin: CertPin,
}

#[derive(Debug)]
struct Slot {
    target: UpstreamAddr,
    client: tokio::sync::Mutex<Option<Client>>,
    benched_until: Mutex<Option<Instant>>,
}

/// The upstreams, in order of preference.
#[derive(Debug)]
pub struct Upstreams {
    connector: Connector,
    slots: Vec<Slot>,
    bench: Duration,
}

impl Upstreams {
    /// Upstreams in order of preference; a corrupt one is set aside for `bench`; a read or
    /// write that makes no progress for `stall` fails (an upstream that stalls).
    pub fn new(
        targets: &[UpstreamAddr],
        bench: Duration,
        stall: Duration,
    ) -> Result<Self, ClientError> {
        let local = SocketAddr::from(([0, 0, 0, 0], 0));
        let mut config = ClientConfig::default();
        config.stall_timeout = stall;
        let connector = Connector::bind(local, config)?;
        Ok(Self {
            connector,
            slots: targets
                .iter()
                .map(|t| Slot {
                    target: *t,
                    client: tokio::sync::Mutex::new(None),
                    benched_until: Mutex::new(None),
                })
                .collect(),
            bench,
        })
    }

    fn pick(&self) -> Option<&Slot> {
        let now = Instant::now();
        let available = |s: &&Slot| {
            s.benched_until
                .lock()
                .map(|b| b.is_none_or(|until| until <= now))
                .unwrap_or(true)
        };
        self.slots
            .iter()
            .find(available)
            .or_else(|| self.slots.first())
    }

    /// Whether an upstream other than `addr` is usable now (not set aside).
    pub fn usable_besides(&self, addr: SocketAddr) -> bool {
        let now = Instant::now();
        self.slots.iter().any(|s| {
            s.target.addr != addr
                && s.benched_until
                    .lock()
                    .map(|b| b.is_none_or(|until| until <= now))
                    .unwrap_or(true)
        })
    }

    /// Sets an upstream aside (it sent corrupt bytes or broke the protocol).
    pub fn blame(&self, addr: SocketAddr) {
        for slot in &self.slots {
            if slot.target.addr == addr
                && let Ok(mut until) = slot.benched_until.lock()
            {
                *until = Some(Instant::now() + self.bench);
            }
        }
    }

    async fn client_of(&self, slot: &Slot) -> Result<Client, ClientError> {
        let mut guard = slot.client.lock().await;
        if let Some(client) = guard.as_ref() {
            return Ok(client.clone());
        }
        let client = self
            .connector
            .connect(slot.target.addr, slot.target.pin)
            .await?;
        *guard = Some(client.clone());
        Ok(client)
    }

    async fn forget(&self, slot: &Slot) {
        *slot.client.lock().await = None;
    }

    /// Drops the kept connections (after a connection-level failure), so the next request
    /// connects afresh.
    pub async fn reconnect_later(&self, error: &ClientError) {
        if matches!(
            error,
            ClientError::Connection { .. }
                | ClientError::StreamClosed { .. }
                | ClientError::Timeout { .. }
        ) {
            for slot in &self.slots {
                self.forget(slot).await;
            }
        }
    }

    /// Closes the kept connections (whatever grants the upstream bound to them end with
    /// them); the next request connects afresh.
    pub async fn close_all(&self) {
        for slot in &self.slots {
            if let Some(client) = slot.client.lock().await.take() {
                client.close();
            }
        }
    }

    /// A connection to the preferred available upstream.
    pub async fn client(&self) -> Result<Client, ClientError> {
        let slot = self.pick().ok_or_else(|| ClientError::StreamClosed {
            peer: SocketAddr::from(([0, 0, 0, 0], 0)),
        })?;
        self.client_of(slot).await
    }

    /// Runs `op` on the preferred upstream; on a connection-level failure, reconnects once.
    async fn with_retry<T, F, Fut>(&self, op: F) -> Result<T, ClientError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let slot = self.pick().ok_or_else(|| ClientError::StreamClosed {
            peer: SocketAddr::from(([0, 0, 0, 0], 0)),
        })?;
        let client = self.client_of(slot).await?;
        match op(client).await {
            Err(ClientError::Connection { .. } | ClientError::StreamClosed { .. }) => {
                self.forget(slot).await;
                let client = self.client_of(slot).await?;
                op(client).await
            }
            other => other,
        }
    }

    /// Asks for blobs.
    pub async fn blobs(
        &self,
        ids: Vec<ota_core::digest::ChunkId>,
        max_len: u32,
    ) -> Result<BlobStream, ClientError> {
        self.with_retry(|c| {
            let ids = ids.clone();
            async move { c.blobs(ids, max_len).await }
        })
        .await
    }

    /// A challenge from the preferred upstream (the origin, for relays); a connection that
    /// died (a restarted origin resets it) is replaced once.
    pub async fn challenge(&self) -> Result<ota_net::proto::Nonce, ClientError> {
        self.with_retry(|c| async move { c.challenge().await })
            .await
    }

    /// Relays a device's signed request, naming the relays `via` before this peer (empty: the
    /// device spoke to this peer); a connection found dead is replaced once. A request the
    /// origin did get before the connection died is refused on the retry (its nonce is spent),
    /// so nothing is done twice.
    pub async fn relayed_via(
        &self,
        relay: &ota_net::quic::NodeKey,
        kind: ota_net::proto::SignedKind,
        device_binding: ota_net::proto::ChannelBinding,
        request: ota_net::proto::SignedRequest,
        via: Vec<ota_net::proto::RelayHop>,
    ) -> Result<ota_net::client::Answer, ClientError> {
        self.with_retry(|c| {
            let (request, via) = (request.clone(), via.clone());
            async move {
                c.relayed_via(relay, kind, device_binding, request, via)
                    .await
            }
        })
        .await
    }

    /// Fetches a metadata file.
    pub async fn metadata(&self, name: &str, max_len: u32) -> Result<Option<Bytes>, ClientError> {
        self.with_retry(|c| async move { c.metadata(name, max_len).await })
            .await
    }
}
