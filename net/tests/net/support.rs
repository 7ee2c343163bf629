//! A test handler with in-memory content, and helpers to start servers and clients.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use ota_core::digest::ChunkId;
use ota_core::time::UnixTime;
use ota_net::client::Client;
use ota_net::proto::{
    ChannelBinding, DeviceKey, Nonce, Refusal, Signature, SignedKind, SignedRequest,
};
use ota_net::quic::{Identity, NodeKey};
use ota_net::server::{ConnInfo, Handler, Server, ServerConfig};

/// Serves fixed metadata and blobs; answers a signed request with the bytes it would verify,
/// so a test can compare them with what the client signed.
#[derive(Debug, Default)]
pub(crate) struct TestHandler {
    pub(crate) metadata: HashMap<String, Bytes>,
    pub(crate) blobs: HashMap<ChunkId, Bytes>,
    /// The channel binding of every connection a challenge came on.
    pub(crate) bindings: Mutex<Vec<ChannelBinding>>,
    nonces: AtomicU8,
}

/// A signed body that the handler refuses.
pub(crate) const REFUSE_ME: &[u8] = b"refuse me";

impl Handler for TestHandler {
    async fn challenge(&self, conn: &ConnInfo) -> Result<Nonce, Refusal> {
        self.bindings.lock().unwrap().push(conn.binding);
        Ok(Nonce([self.nonces.fetch_add(1, Ordering::Relaxed); 32]))
    }

    async fn signed(
        &self,
        conn: &ConnInfo,
        kind: SignedKind,
        request: SignedRequest,
    ) -> Result<Vec<u8>, Refusal> {
        if request.body == REFUSE_ME {
            return Err(Refusal::new(Refusal::FORBIDDEN, "not enrolled"));
        }
        Ok(request.signing_bytes(kind, &conn.binding))
    }

    async fn metadata(&self, _conn: &ConnInfo, name: &str) -> Option<Bytes> {
        self.metadata.get(name).cloned()
    }

    async fn blob(&self, _conn: &ConnInfo, id: &ChunkId) -> Option<Bytes> {
        self.blobs.get(id).cloned()
    }
}

impl TestHandler {
    pub(crate) fn with_blobs(blobs: impl IntoIterator<Item = Bytes>) -> Self {
        Self {
            blobs: blobs.into_iter().map(|b| (ChunkId::of(&b), b)).collect(),
            ..Self::default()
        }
    }
}

/// Deterministic bytes of a given length (distinct per seed).
pub(crate) fn blob(len: usize, seed: u8) -> Bytes {
    let mut state = u32::from(seed).wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

pub(crate) fn identity(seed: u8) -> Identity {
    Identity::from_node_key(&NodeKey::from_seed([seed; 32])).unwrap()
}

pub(crate) fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

pub(crate) fn start(handler: &Arc<TestHandler>) -> Server {
    start_with(handler, ServerConfig::default())
}

pub(crate) fn start_with(handler: &Arc<TestHandler>, config: ServerConfig) -> Server {
    Server::bind(loopback(), &identity(1), config, Arc::clone(handler)).unwrap()
}

pub(crate) async fn connect(server: &Server) -> Client {
    Client::connect(server.local_addr(), server.pin())
        .await
        .unwrap()
}

pub(crate) fn signed_request(body: &[u8]) -> SignedRequest {
    SignedRequest {
        device_key: DeviceKey([0xd0; 32]),
        nonce: Nonce([0x11; 32]),
        timestamp: UnixTime(1_800_000_000),
        body: body.to_vec(),
        signature: Signature([0x5a; 64]),
    }
}
