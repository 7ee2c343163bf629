//! Test sources speaking `enigm-ota/1` in the test process, on loopback: a LAN peer that
//! serves chunks from the origin's blob directory honestly or as an attacker would, and a
//! dishonest director that answers check-ins with offers the test makes (signed with the
//! origin's real director key, so that only the device's own checks stand between them and
//! an install).
//!
//! Each runs its own tokio runtime and stops when dropped. Both count what they serve, so a
//! test can assert which chunks a device fetched.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ota_core::digest::ChunkId;
use ota_net::client::Client;
use ota_net::proto::{Nonce, Refusal, SignedKind, SignedRequest};
use ota_net::quic::{Identity, NodeKey};
use ota_net::server::{ConnInfo, Handler, Server, ServerConfig};

/// How a fake peer behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Serves every blob it holds, as stored.
    Honest,
    /// Flips a byte in every tenth chunk it serves.
    CorruptEveryTenth,
    /// Answers `Missing` for every blob.
    Withhold,
    /// Never answers a `GetBlobs` (holds the stream open).
    Stall,
    /// Stalls its first `n` `GetBlobs` requests, then serves honestly.
    StallFirst(usize),
    /// Serves, for every chunk index it holds, a forged index whose header claims a billion
    /// chunks; chunks honestly.
    BillionChunkIndex,
}

/// What a fake peer served.
#[derive(Debug, Default)]
pub struct Served {
    /// Every blob id it sent bytes for, in order.
    pub blobs: Mutex<Vec<ChunkId>>,
    /// `GetBlobs` requests seen.
    pub requests: AtomicUsize,
}

/// A fake LAN peer serving the origin's blobs.
#[derive(Debug)]
pub struct FakePeer {
    server: Option<Server>,
    discovery: Option<(
        ota_net::discovery::DiscoveryHandle,
        ota_net::discovery::DiscoveryEvents,
    )>,
    runtime: Option<tokio::runtime::Runtime>,
    /// Its QUIC address.
    pub addr: SocketAddr,
    /// Its certificate pin (hex), as `--peer ADDR=PIN` takes it.
    pub pin: String,
    /// What it served.
    pub served: Arc<Served>,
}

impl FakePeer {
    /// A peer serving blobs from `blob_dir` (the origin's `blobs/` directory) in `mode`.
    pub fn start(blob_dir: &Path, mode: Mode) -> Self {
        let served = Arc::new(Served::default());
        let handler = PeerHandler {
            blobs: blob_dir.to_path_buf(),
            mode,
            served: served.clone(),
            counter: AtomicUsize::new(0),
        };
        let (runtime, server) = serve(handler);
        Self {
            addr: server.local_addr(),
            pin: server.pin().to_string(),
            server: Some(server),
            discovery: None,
            runtime: Some(runtime),
            served,
        }
    }

    /// `ADDR=PIN` for `ota-device update --peer`.
    pub fn peer_arg(&self) -> String {
        format!("{}={}", self.addr, self.pin)
    }

    /// The chunk ids served so far.
    pub fn served_blobs(&self) -> Vec<ChunkId> {
        lock(&self.served.blobs).clone()
    }

    /// Start a libp2p discovery node advertising this peer as a site cache (listening on
    /// loopback TCP, without mDNS); returns its multiaddr for `ota-device update --bootstrap`.
    /// The node runs as long as the peer.
    pub fn advertise(&mut self) -> String {
        use ota_net::discovery::{Advertisement, Discovery, DiscoveryConfig, Role};
        let mut config = DiscoveryConfig::cache(
            "127.0.0.1:0".parse().expect("an address"),
            Advertisement {
                quic: vec![self.addr],
                pin: self.pin.parse().expect("a pin"),
                role: Role::SiteCache,
            },
        );
        config.mdns = false;
        let runtime = self.runtime.as_ref().expect("running");
        let (handle, events) = runtime
            .block_on(Discovery::spawn(config))
            .expect("start the discovery node");
        let addr = handle
            .listen_addrs()
            .first()
            .expect("it listens")
            .to_string();
        self.discovery = Some((handle, events));
        addr
    }
}

impl Drop for FakePeer {
    fn drop(&mut self) {
        drop(self.discovery.take());
        drop(self.server.take());
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_millis(100));
        }
    }
}

fn serve<H: Handler>(handler: H) -> (tokio::runtime::Runtime, Server) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let identity = Identity::from_node_key(&NodeKey::generate()).expect("an identity");
    let server = {
        let _guard = runtime.enter();
        Server::bind(
            "127.0.0.1:0".parse().expect("an address"),
            &identity,
            ServerConfig::default(),
            handler,
        )
        .expect("bind the fake server")
    };
    (runtime, server)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Where the origin's local blob store keeps blob `id`.
pub fn blob_path(blob_dir: &Path, id: &ChunkId) -> PathBuf {
    let hex = id.to_hex();
    blob_dir.join("chunks").join(&hex[..2]).join(hex)
}

struct PeerHandler {
    blobs: PathBuf,
    mode: Mode,
    served: Arc<Served>,
    counter: AtomicUsize,
}

impl Handler for PeerHandler {
    async fn challenge(&self, _conn: &ConnInfo) -> Result<Nonce, Refusal> {
        Err(Refusal::new(
            Refusal::NOT_SUPPORTED,
            "a test peer relays nothing",
        ))
    }

    async fn signed(
        &self,
        _conn: &ConnInfo,
        _kind: SignedKind,
        _request: SignedRequest,
    ) -> Result<Vec<u8>, Refusal> {
        Err(Refusal::new(
            Refusal::NOT_SUPPORTED,
            "a test peer relays nothing",
        ))
    }

    async fn metadata(&self, _conn: &ConnInfo, _name: &str) -> Option<Bytes> {
        None
    }

    async fn blob(&self, _conn: &ConnInfo, id: &ChunkId) -> Option<Bytes> {
        // One `blob` call per id: the first id of a request counts the request.
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        match self.mode {
            Mode::Withhold => return None,
            Mode::Stall => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return None;
            }
            Mode::StallFirst(k) if self.served.requests.load(Ordering::SeqCst) < k => {
                self.served.requests.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return None;
            }
            _ => {}
        }
        let mut bytes = std::fs::read(blob_path(&self.blobs, id)).ok()?;
        if self.mode == Mode::CorruptEveryTenth && n % 10 == 9 && !bytes.is_empty() {
            bytes[0] ^= 0xff;
        }
        if self.mode == Mode::BillionChunkIndex && bytes.starts_with(b"ENGMCIDX") {
            // Keep the real header's parameters, claim a billion chunks.
            bytes[24..32].copy_from_slice(&1_000_000_000u64.to_le_bytes());
        }
        lock(&self.served.blobs).push(*id);
        Some(Bytes::from(bytes))
    }
}

/// How the dishonest director answers a check-in: given the check-in's nonce, the offer
/// envelope to send (already signed), or `None` for "no offer".
pub type OfferMaker = dyn Fn(&[u8; 32]) -> Option<Vec<u8>> + Send + Sync;

/// A director the test controls: it issues nonces, answers every check-in with the test's
/// offer, accepts reports, and proxies metadata and blobs to the real origin (metadata files
/// can be replaced by the test).
pub struct FakeDirector {
    server: Option<Server>,
    runtime: Option<tokio::runtime::Runtime>,
    /// Its QUIC address.
    pub addr: SocketAddr,
    /// Its certificate pin (hex).
    pub pin: String,
    state: Arc<DirectorState>,
}

impl std::fmt::Debug for FakeDirector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeDirector")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

struct DirectorState {
    offer: Mutex<Arc<OfferMaker>>,
    overrides: Mutex<HashMap<String, Vec<u8>>>,
    upstream: Client,
}

impl FakeDirector {
    /// A director in front of the real origin at `origin` (pinned by `pin`, hex).
    pub fn start(origin: SocketAddr, pin: &str) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let upstream = runtime
            .block_on(Client::connect(origin, pin.parse().expect("a pin")))
            .expect("connect to the origin");
        let state = Arc::new(DirectorState {
            offer: Mutex::new(Arc::new(|_: &[u8; 32]| None)),
            overrides: Mutex::new(HashMap::new()),
            upstream,
        });
        let identity = Identity::from_node_key(&NodeKey::generate()).expect("an identity");
        let server = {
            let _guard = runtime.enter();
            Server::bind(
                "127.0.0.1:0".parse().expect("an address"),
                &identity,
                ServerConfig::default(),
                DirectorHandler(state.clone()),
            )
            .expect("bind the fake director")
        };
        Self {
            addr: server.local_addr(),
            pin: server.pin().to_string(),
            server: Some(server),
            runtime: Some(runtime),
            state,
        }
    }

    /// Answer check-ins with `maker`'s offers from now on.
    pub fn set_offer(&self, maker: impl Fn(&[u8; 32]) -> Option<Vec<u8>> + Send + Sync + 'static) {
        *lock(&self.state.offer) = Arc::new(maker);
    }

    /// Serve `bytes` for the metadata file `name` instead of the origin's.
    pub fn override_metadata(&self, name: &str, bytes: Vec<u8>) {
        lock(&self.state.overrides).insert(name.to_string(), bytes);
    }
}

impl Drop for FakeDirector {
    fn drop(&mut self) {
        drop(self.server.take());
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_millis(100));
        }
    }
}

struct DirectorHandler(Arc<DirectorState>);

impl Handler for DirectorHandler {
    async fn challenge(&self, _conn: &ConnInfo) -> Result<Nonce, Refusal> {
        let mut nonce = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
        Ok(Nonce(nonce))
    }

    async fn signed(
        &self,
        _conn: &ConnInfo,
        kind: SignedKind,
        request: SignedRequest,
    ) -> Result<Vec<u8>, Refusal> {
        match kind {
            SignedKind::CheckIn => {
                let maker = lock(&self.0.offer).clone();
                let answer = match maker(&request.nonce.0) {
                    Some(envelope) => ota_core::director::CheckInAnswer::Offer(
                        serde_json::from_slice(&envelope).expect("the test's offer is JSON"),
                    ),
                    None => ota_core::director::CheckInAnswer::NoOffer {
                        reason: "no release on this channel".into(),
                    },
                };
                Ok(serde_json::to_vec(&answer).expect("JSON"))
            }
            _ => Ok(b"{}".to_vec()),
        }
    }

    async fn metadata(&self, _conn: &ConnInfo, name: &str) -> Option<Bytes> {
        if let Some(bytes) = lock(&self.0.overrides).get(name) {
            return Some(Bytes::from(bytes.clone()));
        }
        self.0
            .upstream
            .metadata(name, ota_net::proto::MAX_METADATA_LEN)
            .await
            .ok()
            .flatten()
    }

    async fn blob(&self, _conn: &ConnInfo, id: &ChunkId) -> Option<Bytes> {
        let mut blobs = self
            .0
            .upstream
            .blobs(vec![*id], ota_net::proto::MAX_BLOB_LEN)
            .await
            .ok()?;
        let (_, bytes) = blobs.next().await?.ok()?;
        bytes
    }
}

/// A proxy in front of the real origin that corrupts blobs: it forwards metadata and blobs
/// (one `GetBlobs` per blob) and flips a byte of the first copy it serves of every `every`-th
/// distinct blob; later copies of the same blob are honest. A site peer configured with it as
/// its upstream must never store or serve what it corrupted.
pub struct CorruptingProxy {
    server: Option<Server>,
    runtime: Option<tokio::runtime::Runtime>,
    /// Its QUIC address.
    pub addr: SocketAddr,
    /// Its certificate pin (hex).
    pub pin: String,
    state: Arc<ProxyState>,
}

impl std::fmt::Debug for CorruptingProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CorruptingProxy")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

struct ProxyState {
    upstream: Client,
    every: usize,
    seen: Mutex<std::collections::HashSet<ChunkId>>,
    corrupted: Mutex<Vec<ChunkId>>,
}

impl CorruptingProxy {
    /// A proxy in front of the origin at `origin` (pinned by `pin`, hex) corrupting the first
    /// copy of every `every`-th distinct blob.
    pub fn start(origin: SocketAddr, pin: &str, every: usize) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let upstream = runtime
            .block_on(Client::connect(origin, pin.parse().expect("a pin")))
            .expect("connect to the origin");
        let state = Arc::new(ProxyState {
            upstream,
            every: every.max(1),
            seen: Mutex::new(std::collections::HashSet::new()),
            corrupted: Mutex::new(Vec::new()),
        });
        let identity = Identity::from_node_key(&NodeKey::generate()).expect("an identity");
        let server = {
            let _guard = runtime.enter();
            Server::bind(
                "127.0.0.1:0".parse().expect("an address"),
                &identity,
                ServerConfig::default(),
                ProxyHandler(state.clone()),
            )
            .expect("bind the corrupting proxy")
        };
        Self {
            addr: server.local_addr(),
            pin: server.pin().to_string(),
            server: Some(server),
            runtime: Some(runtime),
            state,
        }
    }

    /// `ADDR=PIN`, as `ota-peer serve --upstream` takes it.
    pub fn upstream_arg(&self) -> String {
        format!("{}={}", self.addr, self.pin)
    }

    /// The blobs it sent corrupted, in order.
    pub fn corrupted(&self) -> Vec<ChunkId> {
        lock(&self.state.corrupted).clone()
    }
}

impl Drop for CorruptingProxy {
    fn drop(&mut self) {
        drop(self.server.take());
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_millis(100));
        }
    }
}

struct ProxyHandler(Arc<ProxyState>);

impl Handler for ProxyHandler {
    async fn challenge(&self, _conn: &ConnInfo) -> Result<Nonce, Refusal> {
        Err(Refusal::new(
            Refusal::NOT_SUPPORTED,
            "a test proxy relays nothing",
        ))
    }

    async fn signed(
        &self,
        _conn: &ConnInfo,
        _kind: SignedKind,
        _request: SignedRequest,
    ) -> Result<Vec<u8>, Refusal> {
        Err(Refusal::new(
            Refusal::NOT_SUPPORTED,
            "a test proxy relays nothing",
        ))
    }

    async fn metadata(&self, _conn: &ConnInfo, name: &str) -> Option<Bytes> {
        self.0
            .upstream
            .metadata(name, ota_net::proto::MAX_METADATA_LEN)
            .await
            .ok()
            .flatten()
    }

    async fn blob(&self, _conn: &ConnInfo, id: &ChunkId) -> Option<Bytes> {
        let mut blobs = self
            .0
            .upstream
            .blobs(vec![*id], ota_net::proto::MAX_BLOB_LEN)
            .await
            .ok()?;
        let (_, bytes) = blobs.next().await?.ok()?;
        let bytes = bytes?;
        let corrupt = {
            let mut seen = lock(&self.0.seen);
            let first = seen.insert(*id);
            first && seen.len().is_multiple_of(self.0.every) && !bytes.is_empty()
        };
        if !corrupt {
            return Some(bytes);
        }
        lock(&self.0.corrupted).push(*id);
        let mut bad = bytes.to_vec();
        bad[0] ^= 0xff;
        Some(Bytes::from(bad))
    }
}

/// How a [`RawPeer`] breaks the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breach {
    /// Announces each blob's true length, then sends 100 bytes more than announced.
    MoreThanAnnounced,
    /// Announces every blob one byte longer than the client's `max_len`.
    LongerThanMax,
}

/// A peer that speaks `enigm-ota/1` framing by hand (below the `Handler` layer, which would
/// not let it misbehave) and breaks the protocol in one way.
#[derive(Debug)]
pub struct RawPeer {
    endpoint: Option<quinn::Endpoint>,
    runtime: Option<tokio::runtime::Runtime>,
    /// Its QUIC address.
    pub addr: SocketAddr,
    /// Its certificate pin (hex).
    pub pin: String,
}

impl RawPeer {
    /// A peer serving blobs from `blob_dir` with `breach`.
    pub fn start(blob_dir: &Path, breach: Breach) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let identity = Identity::from_node_key(&NodeKey::generate()).expect("an identity");
        let config = ota_net::quic::server_config(&identity, &Default::default())
            .expect("a server configuration");
        let endpoint = {
            let _guard = runtime.enter();
            quinn::Endpoint::server(config, "127.0.0.1:0".parse().expect("an address"))
                .expect("bind the raw peer")
        };
        let addr = endpoint.local_addr().expect("its address");
        let blobs = blob_dir.to_path_buf();
        let accept = endpoint.clone();
        runtime.spawn(async move {
            while let Some(incoming) = accept.accept().await {
                let blobs = blobs.clone();
                tokio::spawn(async move {
                    let Ok(connection) = incoming.await else {
                        return;
                    };
                    while let Ok((send, recv)) = connection.accept_bi().await {
                        tokio::spawn(raw_answer(send, recv, blobs.clone(), breach));
                    }
                });
            }
        });
        Self {
            endpoint: Some(endpoint),
            runtime: Some(runtime),
            addr,
            pin: identity.pin().to_string(),
        }
    }

    /// `ADDR=PIN` for `ota-device update --peer`.
    pub fn peer_arg(&self) -> String {
        format!("{}={}", self.addr, self.pin)
    }
}

impl Drop for RawPeer {
    fn drop(&mut self) {
        if let Some(endpoint) = self.endpoint.take() {
            endpoint.close(0u32.into(), b"done");
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_millis(100));
        }
    }
}

async fn raw_answer(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    blobs: PathBuf,
    breach: Breach,
) {
    use ota_net::proto::{Request, Response};
    let Ok(bytes) = recv.read_to_end(64 * 1024).await else {
        return;
    };
    let Ok((request, _)) = Request::decode_frame(&bytes) else {
        return;
    };
    let frame = |r: &Response| r.encode_frame().expect("a response frame");
    let out = match request {
        Request::GetBlobs { ids, max_len } => {
            let mut out = Vec::new();
            for id in ids {
                let Ok(blob) = std::fs::read(blob_path(&blobs, &id)) else {
                    out.extend(frame(&Response::Missing { id }));
                    continue;
                };
                match breach {
                    Breach::MoreThanAnnounced => {
                        out.extend(frame(&Response::Blob {
                            id,
                            len: blob.len() as u32,
                        }));
                        out.extend(&blob);
                        out.extend([0x5a; 100]);
                    }
                    Breach::LongerThanMax => {
                        out.extend(frame(&Response::Blob {
                            id,
                            len: max_len.saturating_add(1),
                        }));
                        out.extend(&blob);
                    }
                }
            }
            out.extend(frame(&Response::End));
            out
        }
        _ => frame(&Response::NotFound),
    };
    let _ = send.write_all(&out).await;
    let _ = send.finish();
    let _ = send.stopped().await;
}
