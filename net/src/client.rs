//! The client side of `enigm-ota/1`: devices and peers connect to a pinned server and send
//! requests, one stream each.
//!
//! The client enforces the protocol: every length is checked against what was asked for
//! before anything is allocated for it, blobs must come in the order asked for, and nothing
//! may follow the end of an answer. It does **not** check that a blob's bytes hash to its id:
//! callers verify each chunk (`ota_core::chunk::ChunkVerifier`) before using it, and ban a
//! source whose bytes do not match.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ota_core::digest::ChunkId;
use quinn::{Endpoint, RecvStream};
use tracing::debug;

use crate::proto::{
    ChannelBinding, ErrorCode, MAX_RESPONSE_HEADER_LEN, MessageKind, Nonce, Refusal, RelayHop,
    RelayKey, Relayed, RelayedVia, Request, Response, Signature, SignedKind, SignedRequest,
    WireError,
};
use crate::quic::{self, CertPin, ConfigError, NodeKey, SERVER_NAME, TransportLimits};
use crate::stream::{self, ReadFailure, WriteFailure};

/// Client limits and timeouts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientConfig {
    /// QUIC transport limits (windows, idle timeout, keep-alive).
    pub transport: TransportLimits,
    /// Time allowed to establish a connection.
    pub connect_timeout: Duration,
    /// Time allowed for any one read or write of a request to make progress.
    pub stall_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            transport: TransportLimits::default(),
            connect_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(30),
        }
    }
}

/// A local QUIC endpoint (one UDP socket) from which a node connects to many servers.
#[derive(Debug, Clone)]
pub struct Connector {
    endpoint: Endpoint,
    config: Arc<ClientConfig>,
}

/// A connection to one server.
#[derive(Debug, Clone)]
pub struct Client {
    connection: quinn::Connection,
    peer: SocketAddr,
    binding: ChannelBinding,
    config: Arc<ClientConfig>,
    // Keeps the socket alive as long as a client made by `Client::connect` exists.
    _endpoint: Endpoint,
}

/// The answer to a signed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The server's opaque signed body (e.g. an offer).
    Signed(Vec<u8>),
    /// The server refused the request.
    Refused(Refusal),
}

/// The answer to `GetBlobs`, one blob at a time: `(id, Some(bytes))` for a blob the server
/// sent, `(id, None)` for one it does not hold, in the order the ids were asked for.
///
/// ```no_run
/// # async fn f(client: ota_net::client::Client, ids: Vec<ota_core::digest::ChunkId>)
/// #     -> Result<(), ota_net::client::ClientError> {
/// let mut blobs = client.blobs(ids, ota_net::proto::MAX_CHUNK_BLOB_LEN).await?;
/// while let Some(item) = blobs.next().await {
///     let (id, bytes) = item?;
///     // Verify `bytes` against `id` before using them.
/// }
/// # Ok(()) }
/// ```
///
/// Dropping it before the end cancels the rest of the answer.
#[derive(Debug)]
pub struct BlobStream {
    peer: SocketAddr,
    recv: RecvStream,
    ids: std::vec::IntoIter<ChunkId>,
    max_len: u32,
    stall: Duration,
    first: bool,
    done: bool,
}

/// A request failed. Each variant says whose fault it is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Ours: the local TLS or QUIC configuration could not be built.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Ours: the local UDP socket could not be bound (or no tokio runtime is running).
    #[error("binding the local endpoint {addr}: {source}")]
    Bind {
        /// The local address asked for.
        addr: SocketAddr,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The caller's: the request breaks a protocol bound, so it was not sent.
    #[error("request not sent: {0}")]
    InvalidRequest(#[source] WireError),
    /// Ours: quinn could not start a connection to this address.
    #[error("connecting to {peer}: {source}")]
    Connect {
        /// The server's address.
        peer: SocketAddr,
        /// quinn's error.
        source: quinn::ConnectError,
    },
    /// The server's (or a wrong pin): it presented a certificate other than the pinned one.
    #[error("{peer} presented certificate {presented}, but {expected} is pinned")]
    PinMismatch {
        /// The server's address.
        peer: SocketAddr,
        /// The pin configured.
        expected: CertPin,
        /// The pin of the certificate presented.
        presented: CertPin,
    },
    /// The connection failed or was closed, by either side or the network.
    #[error("connection to {peer}: {source}")]
    Connection {
        /// The server's address.
        peer: SocketAddr,
        /// quinn's error (a `ConnectionClosed` carries the server's code and reason).
        source: quinn::ConnectionError,
    },
    /// The server's or the network's: no progress within the stall timeout.
    #[error("{peer} made no progress for {waited:?} while {during}")]
    Timeout {
        /// The server's address.
        peer: SocketAddr,
        /// What was being waited for.
        during: &'static str,
        /// How long.
        waited: Duration,
    },
    /// The server's: it reset the request stream with a protocol error code (e.g. it
    /// found the request malformed, or is shutting down).
    #[error("{peer} reset the request: {code}")]
    StreamReset {
        /// The server's address.
        peer: SocketAddr,
        /// The code it gave.
        code: ErrorCode,
    },
    /// Nobody's: the server understood the request and refused it.
    #[error("{peer} {refusal}")]
    Refused {
        /// The server's address.
        peer: SocketAddr,
        /// Its refusal.
        refusal: Refusal,
    },
    /// The server's: it broke the protocol. Stop using it for this update.
    #[error("{peer} broke the protocol: {misbehaviour}")]
    PeerMisbehaved {
        /// The server's address.
        peer: SocketAddr,
        /// What it did.
        misbehaviour: Misbehaviour,
    },
    /// Ours: the request stream was already closed locally.
    #[error("request stream to {peer} closed locally")]
    StreamClosed {
        /// The server's address.
        peer: SocketAddr,
    },
}

/// How a server broke the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Misbehaviour {
    /// A frame broke the framing or a protocol bound. After a blob, this is also what
    /// sending more bytes than announced looks like: the extra bytes are read as the next
    /// frame.
    #[error("bad frame: {0}")]
    Wire(#[source] WireError),
    /// The answer does not fit the request.
    #[error("answered {request} with {response}")]
    UnexpectedResponse {
        /// The request sent.
        request: &'static str,
        /// The response header received.
        response: &'static str,
    },
    /// A length over what the client asked for.
    #[error("announced {len} bytes for {what}, over the {max} asked for")]
    OverBound {
        /// `"metadata"` or `"blob <id>"`.
        what: String,
        /// The announced length.
        len: u32,
        /// The client's `max_len`.
        max: u32,
    },
    /// A blob or `Missing` for an id other than the one due at that position.
    #[error("answered for blob {got} where {expected} was due")]
    WrongId {
        /// The id due.
        expected: ChunkId,
        /// The id received.
        got: ChunkId,
    },
    /// `End` before every id was answered.
    #[error("ended the answer with {unanswered} ids unanswered")]
    EndedEarly {
        /// How many ids were left.
        unanswered: usize,
    },
    /// The stream ended inside a frame or body.
    #[error("stream ended after {have} of {need} bytes")]
    Truncated {
        /// Bytes received.
        have: usize,
        /// Bytes announced.
        need: usize,
    },
    /// Bytes after the end of the answer.
    #[error("sent bytes after the end of the answer")]
    TrailingBytes,
}

impl ClientError {
    /// The peer this error blames, if it blames one: a caller stops using that source.
    pub fn blamed_peer(&self) -> Option<SocketAddr> {
        match self {
            Self::PinMismatch { peer, .. }
            | Self::PeerMisbehaved { peer, .. }
            | Self::Timeout { peer, .. } => Some(*peer),
            _ => None,
        }
    }
}

impl Connector {
    /// Binds a local UDP socket (`0.0.0.0:0` or `[::]:0` for any). Must be called within a
    /// tokio runtime.
    pub fn bind(local: SocketAddr, config: ClientConfig) -> Result<Self, ClientError> {
        let endpoint = quic::bind_udp(local)
            .and_then(|socket| {
                let runtime = quinn::default_runtime()
                    .ok_or_else(|| std::io::Error::other("no async runtime found"))?;
                Endpoint::new(quinn::EndpointConfig::default(), None, socket, runtime)
            })
            .map_err(|source| ClientError::Bind {
                addr: local,
                source,
            })?;
        Ok(Self {
            endpoint,
            config: Arc::new(config),
        })
    }

    /// Connects to the server at `addr` whose certificate is pinned by `pin`.
    #[tracing::instrument(name = "net.connect", skip_all, fields(peer = %addr))]
    pub async fn connect(&self, addr: SocketAddr, pin: CertPin) -> Result<Client, ClientError> {
        let (quinn_config, mismatch) = quic::pinned_client_config(pin, &self.config.transport)?;
        let connecting = self
            .endpoint
            .connect_with(quinn_config, addr, SERVER_NAME)
            .map_err(|source| ClientError::Connect { peer: addr, source })?;
        let waited = self.config.connect_timeout;
        let connection = match tokio::time::timeout(waited, connecting).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(source)) => {
                let presented = mismatch.lock().ok().and_then(|mut slot| slot.take());
                return Err(match presented {
                    Some(presented) => ClientError::PinMismatch {
                        peer: addr,
                        expected: pin,
                        presented,
                    },
                    None => ClientError::Connection { peer: addr, source },
                });
            }
            Err(_) => {
                return Err(ClientError::Timeout {
                    peer: addr,
                    during: "connecting",
                    waited,
                });
            }
        };
        let Some(binding) = quic::channel_binding(&connection) else {
            // Unreachable for an established connection; report it as a closed connection.
            let source = connection
                .close_reason()
                .unwrap_or(quinn::ConnectionError::LocallyClosed);
            return Err(ClientError::Connection { peer: addr, source });
        };
        debug!("connected");
        Ok(Client {
            connection,
            peer: addr,
            binding,
            config: self.config.clone(),
            _endpoint: self.endpoint.clone(),
        })
    }

    /// The local address of the socket.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }
}

impl Client {
    /// Connects to `addr` with default limits from a fresh local socket.
    pub async fn connect(addr: SocketAddr, pin: CertPin) -> Result<Self, ClientError> {
        let local = match addr {
            SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
        };
        Connector::bind(local, ClientConfig::default())?
            .connect(addr, pin)
            .await
    }

    /// The server's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The connection's channel binding: what a signed request sent on it must cover.
    pub fn channel_binding(&self) -> ChannelBinding {
        self.binding
    }

    /// Asks for a nonce to sign a request with.
    #[tracing::instrument(name = "net.challenge", skip_all, fields(peer = %self.peer))]
    pub async fn challenge(&self) -> Result<Nonce, ClientError> {
        let mut recv = self.send(&Request::Challenge).await?;
        match self.header(&mut recv).await? {
            Response::Nonce(nonce) => {
                self.end(&mut recv).await?;
                Ok(nonce)
            }
            Response::Refused(refusal) => Err(self.refused(&mut recv, refusal).await),
            other => Err(self.unexpected(&mut recv, "Challenge", &other)),
        }
    }

    /// Sends a signed request of `kind`. The signature must cover
    /// `request.signing_bytes(kind, &self.channel_binding())`.
    #[tracing::instrument(name = "net.signed", skip_all, fields(peer = %self.peer, kind = kind.name()))]
    pub async fn signed(
        &self,
        kind: SignedKind,
        request: SignedRequest,
    ) -> Result<Answer, ClientError> {
        let mut recv = self.send(&Request::signed(kind, request)).await?;
        let answer = match self.header(&mut recv).await? {
            Response::Signed(body) => Answer::Signed(body),
            Response::Refused(refusal) => Answer::Refused(refusal),
            other => return Err(self.unexpected(&mut recv, kind.name(), &other)),
        };
        self.end(&mut recv).await?;
        Ok(answer)
    }

    /// Forwards a device's signed request to this server (the origin) as relay `relay`: what
    /// a site peer does with a `CheckIn` or `Report` a device sent it.
    ///
    /// The flow, for a peer between a device and the origin:
    /// 1. the device asks the peer for a `Challenge`; the peer asks the origin on this
    ///    connection ([`Client::challenge`]) and hands the origin's nonce to the device;
    /// 2. the device signs its request with that nonce over the channel binding of **its**
    ///    connection to the peer (`device_binding`: on the peer's side,
    ///    `ConnInfo::binding` of the device's connection), and sends it to the peer;
    /// 3. the peer calls this, on the same connection to the origin that got the nonce.
    ///
    /// `relay` is the peer's node key; its public key must be enrolled at the origin
    /// (`ota-origin peer enroll --public-key HEX`). This signs [`Relayed::signing_bytes`] over
    /// this connection's binding with it, so the message is good on this connection only.
    /// The request and `device_binding` are sent unchanged: the origin checks the device's
    /// signature over `device_binding`, the nonce (issued on this connection, single use), the
    /// timestamp window and the device's enrollment, exactly as for a direct request.
    ///
    /// Returns the origin's answer ([`Answer::Signed`]: the body to hand back to the device
    /// as it is; [`Answer::Refused`]: a refusal to pass on, e.g. 403 for an unenrolled relay
    /// or a bad device signature, 501 from a server that takes no relayed requests).
    #[tracing::instrument(name = "net.relayed", skip_all, fields(peer = %self.peer, kind = kind.name()))]
    pub async fn relayed(
        &self,
        relay: &NodeKey,
        kind: SignedKind,
        device_binding: ChannelBinding,
        request: SignedRequest,
    ) -> Result<Answer, ClientError> {
        use ed25519_dalek::Signer as _;
        let key = ed25519_dalek::SigningKey::from_bytes(relay.seed());
        let mut relayed = Relayed {
            kind,
            device_binding,
            request,
            relay_key: RelayKey(key.verifying_key().to_bytes()),
            relay_signature: Signature([0; 64]),
        };
        relayed.relay_signature =
            Signature(key.sign(&relayed.signing_bytes(&self.binding)).to_bytes());
        self.relay_request(&Request::Relayed(relayed), "Relayed")
            .await
    }

    /// Forwards a request that reached this peer relayed by another ([`RelayedVia`]): `via`
    /// names the relays before this one, nearest the device first (the last one is the peer
    /// that sent it here, with the binding of its connection to this peer and its signature
    /// for that connection). Empty, it is [`Client::relayed`]. This peer signs
    /// [`RelayedVia::signing_bytes`] over this connection's binding with `relay`; the
    /// upstream answers as for [`Client::relayed`] (a regional peer re-relays it to the origin
    /// in turn, adding this peer as a hop).
    #[tracing::instrument(name = "net.relayed_via", skip_all, fields(peer = %self.peer, kind = kind.name(), hops = via.len()))]
    pub async fn relayed_via(
        &self,
        relay: &NodeKey,
        kind: SignedKind,
        device_binding: ChannelBinding,
        request: SignedRequest,
        via: Vec<RelayHop>,
    ) -> Result<Answer, ClientError> {
        if via.is_empty() {
            return self.relayed(relay, kind, device_binding, request).await;
        }
        use ed25519_dalek::Signer as _;
        let key = ed25519_dalek::SigningKey::from_bytes(relay.seed());
        let mut message = RelayedVia {
            relayed: Relayed {
                kind,
                device_binding,
                request,
                relay_key: RelayKey(key.verifying_key().to_bytes()),
                relay_signature: Signature([0; 64]),
            },
            via,
        };
        message.relayed.relay_signature =
            Signature(key.sign(&message.signing_bytes(&self.binding)).to_bytes());
        self.relay_request(&Request::RelayedVia(message), "RelayedVia")
            .await
    }

    async fn relay_request(
        &self,
        request: &Request,
        name: &'static str,
    ) -> Result<Answer, ClientError> {
        let mut recv = self.send(request).await?;
        let answer = match self.header(&mut recv).await? {
            Response::Signed(body) => Answer::Signed(body),
            Response::Refused(refusal) => Answer::Refused(refusal),
            other => return Err(self.unexpected(&mut recv, name, &other)),
        };
        self.end(&mut recv).await?;
        Ok(answer)
    }

    /// Fetches the metadata file `name` if it is at most `max_len` bytes; `None` if the
    /// server does not have it.
    #[tracing::instrument(name = "net.metadata", skip_all, fields(peer = %self.peer, name))]
    pub async fn metadata(&self, name: &str, max_len: u32) -> Result<Option<Bytes>, ClientError> {
        let request = Request::GetMetadata {
            name: name.to_owned(),
            max_len,
        };
        let mut recv = self.send(&request).await?;
        match self.header(&mut recv).await? {
            Response::Metadata { len } if len > max_len => Err(self.violation(
                &mut recv,
                Misbehaviour::OverBound {
                    what: "metadata".into(),
                    len,
                    max: max_len,
                },
            )),
            Response::Metadata { len } => {
                let body = stream::read_body(&mut recv, len as usize, self.config.stall_timeout)
                    .await
                    .map_err(|f| self.read_failed(&mut recv, f, "reading metadata"))?;
                self.end(&mut recv).await?;
                Ok(Some(body))
            }
            Response::NotFound => {
                self.end(&mut recv).await?;
                Ok(None)
            }
            Response::Refused(refusal) => Err(self.refused(&mut recv, refusal).await),
            other => Err(self.unexpected(&mut recv, "GetMetadata", &other)),
        }
    }

    /// Asks for blobs of at most `max_len` bytes each (at most
    /// [`crate::proto::MAX_CHUNK_BLOB_LEN`] for several ids, up to
    /// [`crate::proto::MAX_BLOB_LEN`] for a single id such as a chunk index, whose exact
    /// length the signed metadata gives). The blobs are **not** checked against their ids.
    #[tracing::instrument(name = "net.blobs", skip_all, fields(peer = %self.peer, count = ids.len()))]
    pub async fn blobs(&self, ids: Vec<ChunkId>, max_len: u32) -> Result<BlobStream, ClientError> {
        let request = Request::GetBlobs {
            max_len,
            ids: ids.clone(),
        };
        let recv = self.send(&request).await?;
        Ok(BlobStream {
            peer: self.peer,
            recv,
            ids: ids.into_iter(),
            max_len,
            stall: self.config.stall_timeout,
            first: true,
            done: false,
        })
    }

    /// Closes the connection (requests in flight fail).
    pub fn close(&self) {
        self.connection
            .close(ErrorCode::NO_ERROR.varint(), b"client done");
    }

    /// Opens a stream, writes the request frame and finishes the send side.
    async fn send(&self, request: &Request) -> Result<RecvStream, ClientError> {
        let frame = request
            .encode_frame()
            .map_err(ClientError::InvalidRequest)?;
        let (mut send, recv) =
            self.connection
                .open_bi()
                .await
                .map_err(|source| ClientError::Connection {
                    peer: self.peer,
                    source,
                })?;
        let stall = self.config.stall_timeout;
        stream::write_chunks(&mut send, &mut [Bytes::from(frame)], stall)
            .await
            .map_err(|failure| match failure {
                WriteFailure::Stalled => ClientError::Timeout {
                    peer: self.peer,
                    during: "sending the request",
                    waited: stall,
                },
                WriteFailure::Stopped(code) => ClientError::StreamReset {
                    peer: self.peer,
                    code,
                },
                WriteFailure::Connection(source) => ClientError::Connection {
                    peer: self.peer,
                    source,
                },
                WriteFailure::Closed | WriteFailure::Encode(_) => {
                    ClientError::StreamClosed { peer: self.peer }
                }
            })?;
        // Finishing fails only if the server already stopped the stream; its reset then
        // shows up on the read side.
        let _ = send.finish();
        Ok(recv)
    }

    async fn header(&self, recv: &mut RecvStream) -> Result<Response, ClientError> {
        read_header(self.peer, recv, self.config.stall_timeout).await
    }

    async fn end(&self, recv: &mut RecvStream) -> Result<(), ClientError> {
        stream::read_end(recv, self.config.stall_timeout)
            .await
            .map_err(|f| self.read_failed(recv, f, "waiting for the end of the answer"))
    }

    async fn refused(&self, recv: &mut RecvStream, refusal: Refusal) -> ClientError {
        match self.end(recv).await {
            Ok(()) => ClientError::Refused {
                peer: self.peer,
                refusal,
            },
            Err(e) => e,
        }
    }

    fn unexpected(
        &self,
        recv: &mut RecvStream,
        request: &'static str,
        got: &Response,
    ) -> ClientError {
        self.violation(
            recv,
            Misbehaviour::UnexpectedResponse {
                request,
                response: got.name(),
            },
        )
    }

    fn violation(&self, recv: &mut RecvStream, misbehaviour: Misbehaviour) -> ClientError {
        violation(self.peer, recv, misbehaviour)
    }

    fn read_failed(
        &self,
        recv: &mut RecvStream,
        failure: ReadFailure,
        during: &'static str,
    ) -> ClientError {
        read_failed(self.peer, recv, failure, during, self.config.stall_timeout)
    }
}

impl BlobStream {
    /// The next blob, `None` after the last one (or after an error). A server that breaks
    /// the protocol ends the stream with [`ClientError::PeerMisbehaved`].
    pub async fn next(&mut self) -> Option<Result<(ChunkId, Option<Bytes>), ClientError>> {
        if self.done {
            return None;
        }
        match self.advance().await {
            Ok(Some(item)) => Some(Ok(item)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }

    /// How many ids have not been answered yet.
    pub fn remaining(&self) -> usize {
        self.ids.len()
    }

    /// The server's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    async fn advance(&mut self) -> Result<Option<(ChunkId, Option<Bytes>)>, ClientError> {
        let header = read_header(self.peer, &mut self.recv, self.stall).await?;
        let first = std::mem::replace(&mut self.first, false);
        let due = self.ids.as_slice().first().copied();
        match (header, due) {
            (Response::Blob { id, len }, Some(expected)) => {
                self.check_id(expected, id)?;
                if len > self.max_len {
                    return Err(violation(
                        self.peer,
                        &mut self.recv,
                        Misbehaviour::OverBound {
                            what: format!("blob {id}"),
                            len,
                            max: self.max_len,
                        },
                    ));
                }
                let body = stream::read_body(&mut self.recv, len as usize, self.stall)
                    .await
                    .map_err(|f| {
                        read_failed(self.peer, &mut self.recv, f, "reading a blob", self.stall)
                    })?;
                self.ids.next();
                Ok(Some((id, Some(body))))
            }
            (Response::Missing { id }, Some(expected)) => {
                self.check_id(expected, id)?;
                self.ids.next();
                Ok(Some((id, None)))
            }
            (Response::End, None) => {
                stream::read_end(&mut self.recv, self.stall)
                    .await
                    .map_err(|f| {
                        read_failed(
                            self.peer,
                            &mut self.recv,
                            f,
                            "waiting for the end",
                            self.stall,
                        )
                    })?;
                Ok(None)
            }
            (Response::End, Some(_)) => Err(violation(
                self.peer,
                &mut self.recv,
                Misbehaviour::EndedEarly {
                    unanswered: self.ids.len(),
                },
            )),
            (Response::Refused(refusal), _) if first => {
                let peer = self.peer;
                match stream::read_end(&mut self.recv, self.stall).await {
                    Ok(()) => Err(ClientError::Refused { peer, refusal }),
                    Err(f) => Err(read_failed(
                        peer,
                        &mut self.recv,
                        f,
                        "waiting for the end",
                        self.stall,
                    )),
                }
            }
            (other, _) => Err(violation(
                self.peer,
                &mut self.recv,
                Misbehaviour::UnexpectedResponse {
                    request: "GetBlobs",
                    response: other.name(),
                },
            )),
        }
    }

    fn check_id(&mut self, expected: ChunkId, got: ChunkId) -> Result<(), ClientError> {
        if expected == got {
            Ok(())
        } else {
            Err(violation(
                self.peer,
                &mut self.recv,
                Misbehaviour::WrongId { expected, got },
            ))
        }
    }
}

impl Drop for BlobStream {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.recv.stop(ErrorCode::CANCELLED.varint());
        }
    }
}

async fn read_header(
    peer: SocketAddr,
    recv: &mut RecvStream,
    stall: Duration,
) -> Result<Response, ClientError> {
    let message = stream::read_frame(
        recv,
        MessageKind::ResponseHeader,
        MAX_RESPONSE_HEADER_LEN,
        stall,
    )
    .await
    .map_err(|f| read_failed(peer, recv, f, "reading a response header", stall))?;
    Response::decode(&message).map_err(|e| violation(peer, recv, Misbehaviour::Wire(e)))
}

/// Stops the stream (the server learns why) and blames the peer.
fn violation(peer: SocketAddr, recv: &mut RecvStream, misbehaviour: Misbehaviour) -> ClientError {
    let _ = recv.stop(ErrorCode::PROTOCOL_VIOLATION.varint());
    debug!(%peer, %misbehaviour, "server broke the protocol");
    ClientError::PeerMisbehaved { peer, misbehaviour }
}

fn read_failed(
    peer: SocketAddr,
    recv: &mut RecvStream,
    failure: ReadFailure,
    during: &'static str,
    stall: Duration,
) -> ClientError {
    match failure {
        ReadFailure::Wire(e) => violation(peer, recv, Misbehaviour::Wire(e)),
        ReadFailure::Truncated { have, need } => {
            violation(peer, recv, Misbehaviour::Truncated { have, need })
        }
        ReadFailure::TrailingBytes => violation(peer, recv, Misbehaviour::TrailingBytes),
        ReadFailure::Reset(code) => ClientError::StreamReset { peer, code },
        ReadFailure::Connection(source) => ClientError::Connection { peer, source },
        ReadFailure::Closed => ClientError::StreamClosed { peer },
        ReadFailure::Stalled => {
            let _ = recv.stop(ErrorCode::TIMEOUT.varint());
            ClientError::Timeout {
                peer,
                during,
                waited: stall,
            }
        }
    }
}
