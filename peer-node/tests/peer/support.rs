//! A test upstream (in-process, real QUIC), the peer process under a kill-on-drop guard, and a
//! client that fetches and checks blobs.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ota_core::digest::ChunkId;
use ota_net::client::Client;
use ota_net::proto::{MAX_CHUNK_BLOB_LEN, Nonce, Refusal, SignedKind, SignedRequest};
use ota_net::quic::{CertPin, Identity, NodeKey};
use ota_net::server::{ConnInfo, Handler, Server, ServerConfig};

/// What the test upstream holds and how it behaves.
#[derive(Default)]
pub(crate) struct UpstreamState {
    pub(crate) blobs: HashMap<ChunkId, Bytes>,
    /// Chunks sent with one byte flipped.
    pub(crate) corrupt: HashSet<ChunkId>,
    /// Times each blob was sent.
    pub(crate) sent: HashMap<ChunkId, u32>,
    /// Bytes sent.
    pub(crate) bytes: u64,
    /// Metadata files by name.
    pub(crate) metadata: HashMap<String, Bytes>,
    /// The director: the answer to a relayed check-in with this nonce.
    pub(crate) offer: Option<OfferFn>,
    /// Chunks asked for and never answered (the request is accepted, then nothing is sent).
    pub(crate) stall: HashSet<ChunkId>,
    /// Requests stalled so far.
    pub(crate) stalled: u32,
    /// The hops named by each request relayed through several relays (`RelayedVia`).
    pub(crate) relayed_via: Vec<Vec<ota_net::proto::RelayHop>>,
    /// Private chunks, served as the origin does: only on a connection whose relayed check-in
    /// was answered with an offer (`granted`).
    pub(crate) gated: HashSet<ChunkId>,
    /// Connections (channel bindings) granted by an offer.
    pub(crate) granted: HashSet<[u8; 32]>,
    /// How long the director takes to answer, after it has granted the connection.
    pub(crate) answer_delay: Duration,
    nonces: u64,
}

impl UpstreamState {
    /// The director's answer to a relayed check-in on `conn`: an offer grants the connection
    /// (at once, as the origin does before its answer is on the wire).
    fn answer(&mut self, conn: &ConnInfo, nonce: [u8; 32]) -> Result<(Vec<u8>, Duration), Refusal> {
        let offer = self
            .offer
            .as_ref()
            .ok_or_else(|| Refusal::new(Refusal::NOT_SUPPORTED, "test upstream"))?;
        let answer = offer(nonce);
        self.granted.insert(conn.binding.0);
        Ok((answer, self.answer_delay))
    }
}

/// Makes a director's answer for a nonce.
pub(crate) type OfferFn = Box<dyn Fn([u8; 32]) -> Vec<u8> + Send>;

impl std::fmt::Debug for UpstreamState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamState").finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct TestUpstream(pub(crate) Arc<Mutex<UpstreamState>>);

impl Handler for TestUpstream {
    async fn challenge(&self, _conn: &ConnInfo) -> Result<Nonce, Refusal> {
        let mut state = self.0.lock().unwrap();
        state.nonces += 1;
        let mut nonce = [0u8; 32];
        nonce[..8].copy_from_slice(&state.nonces.to_le_bytes());
        Ok(Nonce(nonce))
    }

    async fn relayed(
        &self,
        conn: &ConnInfo,
        relayed: ota_net::proto::Relayed,
    ) -> Result<Vec<u8>, Refusal> {
        let (answer, delay) = self
            .0
            .lock()
            .unwrap()
            .answer(conn, relayed.request.nonce.0)?;
        tokio::time::sleep(delay).await;
        Ok(answer)
    }

    async fn relayed_via(
        &self,
        conn: &ConnInfo,
        message: ota_net::proto::RelayedVia,
    ) -> Result<Vec<u8>, Refusal> {
        let (answer, delay) = {
            let mut state = self.0.lock().unwrap();
            state.relayed_via.push(message.via.clone());
            state.answer(conn, message.relayed.request.nonce.0)?
        };
        tokio::time::sleep(delay).await;
        Ok(answer)
    }

    async fn signed(
        &self,
        _conn: &ConnInfo,
        _kind: SignedKind,
        _request: SignedRequest,
    ) -> Result<Vec<u8>, Refusal> {
        Err(Refusal::new(Refusal::NOT_SUPPORTED, "test upstream"))
    }

    async fn metadata(&self, _conn: &ConnInfo, name: &str) -> Option<Bytes> {
        self.0.lock().unwrap().metadata.get(name).cloned()
    }

    async fn blob(&self, conn: &ConnInfo, id: &ChunkId) -> Option<Bytes> {
        let stall = {
            let mut state = self.0.lock().unwrap();
            let stall = state.stall.contains(id);
            state.stalled += u32::from(stall);
            stall
        };
        if stall {
            return std::future::pending().await;
        }
        let mut state = self.0.lock().unwrap();
        if state.gated.contains(id) && !state.granted.contains(&conn.binding.0) {
            return None;
        }
        let bytes = state.blobs.get(id)?.clone();
        *state.sent.entry(*id).or_default() += 1;
        state.bytes += bytes.len() as u64;
        if state.corrupt.contains(id) {
            let mut v = bytes.to_vec();
            v[0] ^= 0xff;
            return Some(Bytes::from(v));
        }
        Some(bytes)
    }
}

/// Deterministic chunks of `len` bytes.
pub(crate) fn chunks(seed: u64, count: usize, len: usize) -> Vec<(ChunkId, Bytes)> {
    (0..count)
        .map(|i| {
            let mut bytes = vec![0u8; len];
            let mut h = blake3::Hasher::new();
            h.update(&seed.to_le_bytes());
            h.update(&(i as u64).to_le_bytes());
            h.finalize_xof().fill(&mut bytes);
            (ChunkId::of(&bytes), Bytes::from(bytes))
        })
        .collect()
}

pub(crate) struct Upstream {
    pub(crate) server: Server,
    pub(crate) handler: TestUpstream,
}

impl Upstream {
    pub(crate) fn start(seed: u8, blobs: &[(ChunkId, Bytes)]) -> Self {
        let handler = TestUpstream::default();
        handler
            .0
            .lock()
            .unwrap()
            .blobs
            .extend(blobs.iter().cloned());
        let identity = Identity::from_node_key(&NodeKey::from_seed([seed; 32])).unwrap();
        let server = Server::bind(
            "127.0.0.1:0".parse().unwrap(),
            &identity,
            ServerConfig::default(),
            handler.clone(),
        )
        .unwrap();
        Self { server, handler }
    }

    pub(crate) fn arg(&self) -> String {
        format!("{}={}", self.server.local_addr(), self.server.pin())
    }

    pub(crate) fn sent(&self, id: &ChunkId) -> u32 {
        self.handler
            .0
            .lock()
            .unwrap()
            .sent
            .get(id)
            .copied()
            .unwrap_or(0)
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.handler.0.lock().unwrap().bytes
    }
}

/// The peer process, killed on drop.
pub(crate) struct Peer {
    pub(crate) child: Child,
    pub(crate) quic: SocketAddr,
    pub(crate) pin: CertPin,
    pub(crate) metrics: SocketAddr,
    pub(crate) data: PathBuf,
    /// The discovery node's listen addresses (multiaddrs), if discovery is on.
    pub(crate) discovery: Vec<String>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Peer {
    /// Starts `ota-peer serve` with `data`, the origin at `origin` and `extra` flags.
    pub(crate) fn start(data: &Path, origin: &Upstream, extra: &[&str]) -> Self {
        Self::start_with(data, origin, "127.0.0.1:0", extra, None)
    }

    /// Starts `ota-peer serve` listening on `listen`; its standard error goes to `stderr`
    /// when given (a file the test reads), else as [`Peer::start`] sends it.
    pub(crate) fn start_with(
        data: &Path,
        origin: &Upstream,
        listen: &str,
        extra: &[&str],
        stderr: Option<std::fs::File>,
    ) -> Self {
        let ready = data.with_extension("ready.json");
        let _ = std::fs::remove_file(&ready);
        let stderr = match stderr {
            Some(file) => Stdio::from(file),
            None if std::env::var_os("OTA_TEST_LOGS").is_some() => Stdio::inherit(),
            None => Stdio::null(),
        };
        let child = Command::new(env!("CARGO_BIN_EXE_ota-peer"))
            .args(["serve", "--listen", listen, "--metrics", "127.0.0.1:0"])
            .arg("--data")
            .arg(data)
            .args(["--origin", &origin.server.local_addr().to_string()])
            .args(["--origin-pin", &origin.server.pin().to_string()])
            .arg("--ready-file")
            .arg(&ready)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut peer = Self {
            child,
            quic: "0.0.0.0:0".parse().unwrap(),
            pin: CertPin(ota_core::digest::Sha256Hash([0; 32])),
            metrics: "0.0.0.0:0".parse().unwrap(),
            data: data.to_owned(),
            discovery: Vec::new(),
        };
        let start = Instant::now();
        loop {
            if let Some(status) = peer.child.try_wait().unwrap() {
                panic!("ota-peer exited before it was ready: {status}");
            }
            if let Ok(text) = std::fs::read_to_string(&ready)
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
            {
                peer.quic = v["quic"].as_str().unwrap().parse().unwrap();
                peer.pin = v["pin"].as_str().unwrap().parse().unwrap();
                peer.metrics = v["metrics"].as_str().unwrap().parse().unwrap();
                peer.discovery = v["discovery"]
                    .as_array()
                    .map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect())
                    .unwrap_or_default();
                return peer;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "peer not ready");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the peer with SIGKILL (a crash).
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The peer's `/stats`.
    pub(crate) fn stats(&self) -> serde_json::Value {
        use std::io::{Read as _, Write as _};
        let mut stream = std::net::TcpStream::connect(self.metrics).unwrap();
        write!(
            stream,
            "GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        let body = text.split_once("\r\n\r\n").unwrap().1;
        serde_json::from_str(body).unwrap()
    }

    pub(crate) fn stat(&self, name: &str) -> u64 {
        self.stats()[name].as_u64().unwrap()
    }

    pub(crate) async fn client(&self) -> Client {
        Client::connect(self.quic, self.pin).await.unwrap()
    }
}

/// Fetches `ids` through `client` in batches of 64, checking each blob against its id; returns
/// the blobs that came (by id) and the ids answered `Missing`.
pub(crate) async fn fetch_all(
    client: &Client,
    ids: &[ChunkId],
) -> (HashMap<ChunkId, Bytes>, Vec<ChunkId>) {
    let mut got = HashMap::new();
    let mut missing = Vec::new();
    for batch in ids.chunks(64) {
        let mut stream = client
            .blobs(batch.to_vec(), MAX_CHUNK_BLOB_LEN)
            .await
            .unwrap();
        while let Some(item) = stream.next().await {
            let (id, bytes) = item.unwrap();
            match bytes {
                Some(bytes) => {
                    assert_eq!(ChunkId::of(&bytes), id, "the peer served a corrupt chunk");
                    got.insert(id, bytes);
                }
                None => missing.push(id),
            }
        }
    }
    (got, missing)
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Sends `request` as one raw stream on a new connection to `addr` and returns the answer
/// header (for requests [`Client`] would not make, e.g. signed for another connection).
pub(crate) async fn raw_request(
    addr: SocketAddr,
    pin: CertPin,
    request: &ota_net::proto::Request,
) -> ota_net::proto::Response {
    use ota_net::quic::{self, SERVER_NAME, TransportLimits};
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let config = quic::client_config(pin, &TransportLimits::default()).unwrap();
    let connection = endpoint
        .connect_with(config, addr, SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(&request.encode_frame().unwrap())
        .await
        .unwrap();
    send.finish().unwrap();
    let answer = recv.read_to_end(64 * 1024).await.unwrap();
    let (response, _) = ota_net::proto::Response::decode_frame(&answer).unwrap();
    connection.close(0u32.into(), b"done");
    response
}
