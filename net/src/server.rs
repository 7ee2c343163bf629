//! The server side of `enigm-ota/1`: an accept loop that answers each request stream through
//! a [`Handler`] (the origin and the site peers implement it).
//!
//! Limits that keep a hostile client from stopping others: a cap on connections (more are
//! refused), a cap on concurrent requests per connection (QUIC stream credit), a deadline
//! to receive a whole request, and a stall timeout on every response write, so a client that
//! opens streams and never reads holds at most its own streams, each for at most the stall
//! timeout.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ota_core::digest::ChunkId;
use quinn::{Endpoint, Incoming, RecvStream, SendStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{Instrument as _, debug, debug_span, info, info_span, warn};

use crate::proto::{
    ChannelBinding, ErrorCode, MAX_REQUEST_LEN, MessageKind, Nonce, Refusal, Relayed, RelayedVia,
    Request, Response, SignedKind, SignedRequest, WireError,
};
use crate::quic::{self, CertPin, ConfigError, Identity, ResetSecret, TransportLimits};
use crate::stream::{self, ReadFailure, WriteFailure};

/// What a server does with each request. The origin and the site peers implement it.
///
/// Methods are called concurrently from many connections and streams. Bounds are checked
/// before a method is called (the request fits its bounds) and after (an answer over the
/// client's `max_len` is not sent).
pub trait Handler: Send + Sync + 'static {
    /// A fresh nonce for a signed request on this connection, or a refusal.
    fn challenge(&self, conn: &ConnInfo) -> impl Future<Output = Result<Nonce, Refusal>> + Send;

    /// Answers a signed request. The handler verifies the signature over
    /// [`SignedRequest::signing_bytes`]`(kind, &conn.binding)`; the net layer does not.
    fn signed(
        &self,
        conn: &ConnInfo,
        kind: SignedKind,
        request: SignedRequest,
    ) -> impl Future<Output = Result<Vec<u8>, Refusal>> + Send;

    /// The metadata file `name`, or `None`.
    fn metadata(&self, conn: &ConnInfo, name: &str) -> impl Future<Output = Option<Bytes>> + Send;

    /// The blob `id`, or `None`. The server does not hash it: serving a blob whose bytes do
    /// not match its id is the handler's bug, and every client checks.
    fn blob(&self, conn: &ConnInfo, id: &ChunkId) -> impl Future<Output = Option<Bytes>> + Send;

    /// Answers a device's request forwarded by a site peer ([`Relayed`]): the handler checks
    /// that the relay is one it trusts, the relay's signature over
    /// [`Relayed::signing_bytes`]`(&conn.binding)`, and the device's signature over
    /// `relayed.device_binding`; the net layer checks none of them. By default a server takes
    /// no relayed requests and refuses them with [`Refusal::NOT_SUPPORTED`].
    fn relayed(
        &self,
        conn: &ConnInfo,
        relayed: Relayed,
    ) -> impl Future<Output = Result<Vec<u8>, Refusal>> + Send {
        let _ = (conn, relayed);
        async {
            Err(Refusal::new(
                Refusal::NOT_SUPPORTED,
                "this server takes no relayed requests",
            ))
        }
    }

    /// Answers a device's request forwarded through several relays ([`RelayedVia`]): the
    /// handler checks the sender's signature over [`RelayedVia::signing_bytes`]`(&conn.binding)`
    /// and whatever else it relies on (the origin: every relay enrolled, every hop's signature,
    /// the device's signature, the nonce); the net layer checks none of them. By default
    /// refused with [`Refusal::NOT_SUPPORTED`].
    fn relayed_via(
        &self,
        conn: &ConnInfo,
        relayed: RelayedVia,
    ) -> impl Future<Output = Result<Vec<u8>, Refusal>> + Send {
        let _ = (conn, relayed);
        async {
            Err(Refusal::new(
                Refusal::NOT_SUPPORTED,
                "this server takes no requests relayed through several relays",
            ))
        }
    }
}

/// A shared handler serves as well, so its owner can keep a handle on its state.
impl<H: Handler> Handler for Arc<H> {
    fn challenge(&self, conn: &ConnInfo) -> impl Future<Output = Result<Nonce, Refusal>> + Send {
        (**self).challenge(conn)
    }

    fn signed(
        &self,
        conn: &ConnInfo,
        kind: SignedKind,
        request: SignedRequest,
    ) -> impl Future<Output = Result<Vec<u8>, Refusal>> + Send {
        (**self).signed(conn, kind, request)
    }

    fn metadata(&self, conn: &ConnInfo, name: &str) -> impl Future<Output = Option<Bytes>> + Send {
        (**self).metadata(conn, name)
    }

    fn blob(&self, conn: &ConnInfo, id: &ChunkId) -> impl Future<Output = Option<Bytes>> + Send {
        (**self).blob(conn, id)
    }

    fn relayed(
        &self,
        conn: &ConnInfo,
        relayed: Relayed,
    ) -> impl Future<Output = Result<Vec<u8>, Refusal>> + Send {
        (**self).relayed(conn, relayed)
    }

    fn relayed_via(
        &self,
        conn: &ConnInfo,
        relayed: RelayedVia,
    ) -> impl Future<Output = Result<Vec<u8>, Refusal>> + Send {
        (**self).relayed_via(conn, relayed)
    }
}

/// What a handler knows about the connection a request came on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnInfo {
    /// The client's address.
    pub remote: SocketAddr,
    /// The connection's channel binding, which signed requests must cover.
    pub binding: ChannelBinding,
    /// quinn's stable id of the connection, for logs.
    pub id: usize,
}

/// Server limits and timeouts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerConfig {
    /// QUIC transport limits (streams per connection, windows, idle timeout).
    pub transport: TransportLimits,
    /// Connections served at once; more are refused at the QUIC level.
    pub max_connections: usize,
    /// Time allowed for the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time allowed to receive a whole request once its stream is accepted.
    pub request_timeout: Duration,
    /// Time allowed for any one response write to make progress.
    pub stall_timeout: Duration,
    /// The secret behind the endpoint's stateless resets. A server that keeps it across
    /// restarts ([`ResetSecret::load_or_create`] in its data directory) resets the
    /// connections it lost at once; `None` draws a new one, so clients of a crashed server
    /// notice only at their idle timeout.
    pub reset_secret: Option<ResetSecret>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            transport: TransportLimits {
                keep_alive_interval: None,
                ..TransportLimits::default()
            },
            max_connections: 256,
            handshake_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(30),
            reset_secret: None,
        }
    }
}

/// The server could not start (our side's fault).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The TLS or QUIC configuration could not be built.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The UDP socket could not be bound (or no tokio runtime is running).
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's error.
        source: std::io::Error,
    },
}

/// A running server. Dropping it stops it abruptly; [`Server::shutdown`] stops it gracefully.
#[derive(Debug)]
pub struct Server {
    endpoint: Endpoint,
    local_addr: SocketAddr,
    pin: CertPin,
    shutdown: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Binds `addr` (port 0: the OS picks) and starts serving with `handler`. Must be called
    /// within a tokio runtime.
    pub fn bind<H: Handler>(
        addr: SocketAddr,
        identity: &Identity,
        config: ServerConfig,
        handler: H,
    ) -> Result<Self, ServerError> {
        let quinn_config = quic::server_config(identity, &config.transport)?;
        let endpoint_config = config
            .reset_secret
            .clone()
            .unwrap_or_else(ResetSecret::generate)
            .endpoint_config();
        let endpoint = quic::bind_udp(addr)
            .and_then(|socket| {
                let runtime = quinn::default_runtime()
                    .ok_or_else(|| std::io::Error::other("no async runtime found"))?;
                Endpoint::new(endpoint_config, Some(quinn_config), socket, runtime)
            })
            .map_err(|source| ServerError::Bind { addr, source })?;
        let local_addr = endpoint
            .local_addr()
            .map_err(|source| ServerError::Bind { addr, source })?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let span = info_span!("net.serve", %local_addr);
        let task = tokio::spawn(
            accept_loop(
                endpoint.clone(),
                Arc::new(handler),
                Arc::new(config),
                shutdown_rx,
            )
            .instrument(span),
        );
        Ok(Self {
            endpoint,
            local_addr,
            pin: identity.pin(),
            shutdown,
            task: Some(task),
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The pin of the server's certificate.
    pub fn pin(&self) -> CertPin {
        self.pin
    }

    /// Stops accepting connections and requests, lets requests in flight finish for up to
    /// `grace`, then closes every connection with [`ErrorCode::SHUTDOWN`].
    pub async fn shutdown(mut self, grace: Duration) {
        self.shutdown.send_replace(true);
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(grace, &mut task).await.is_err()
        {
            info!(local_addr = %self.local_addr, "grace period over; closing connections");
            task.abort();
        }
        self.endpoint
            .close(ErrorCode::SHUTDOWN.varint(), b"server shutting down");
        self.endpoint.wait_idle().await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
        self.endpoint
            .close(ErrorCode::SHUTDOWN.varint(), b"server shutting down");
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// What a client did that no honest client does. Each kind is logged once per connection
/// (at `warn`, with the connection's remote address and the reason), and the offender lines
/// of a whole server are rate-limited, so a flood of offenders cannot flood the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Offence {
    /// A request that does not decode (garbage, an unknown tag, truncated, trailing bytes).
    Malformed,
    /// A request frame over the protocol's bound.
    TooLarge,
    /// A request not sent whole within the request timeout.
    SlowRequest,
    /// An answer the client did not read within the stall timeout.
    NeverReads,
    /// More than [`MISSING_OFFENCE`] blobs asked for that the server does not hold.
    UnknownChunks,
}

/// Blobs a connection may ask for and be answered `Missing` before it is logged as an offender
/// (a device behind a healthy cache asks for blobs the cache can get).
const MISSING_OFFENCE: u64 = 4096;

/// Offender lines a server writes per second, at most; the rest are counted and the count is
/// given with the next line written.
const OFFENDER_LINES_PER_SECOND: u32 = 20;

impl Offence {
    fn name(self) -> &'static str {
        match self {
            Self::Malformed => "malformed request",
            Self::TooLarge => "request over the size bound",
            Self::SlowRequest => "request not sent within the request timeout",
            Self::NeverReads => "does not read its answers",
            Self::UnknownChunks => "asks for many blobs nobody holds",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The server-wide limit on offender lines.
#[derive(Debug)]
struct OffenderLog {
    window: Mutex<(Instant, u32, u64)>,
}

impl OffenderLog {
    fn new() -> Self {
        Self {
            window: Mutex::new((Instant::now(), 0, 0)),
        }
    }

    /// Whether a line may be written now, and how many were suppressed before it.
    fn admit(&self) -> Option<u64> {
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if now.duration_since(window.0) >= Duration::from_secs(1) {
            window.0 = now;
            window.1 = 0;
        }
        if window.1 >= OFFENDER_LINES_PER_SECOND {
            window.2 += 1;
            return None;
        }
        window.1 += 1;
        Some(std::mem::take(&mut window.2))
    }
}

/// What one connection has done wrong so far.
#[derive(Debug)]
struct Offences {
    remote: SocketAddr,
    id: usize,
    logged: AtomicU8,
    missing: AtomicU64,
    log: Arc<OffenderLog>,
}

impl Offences {
    fn new(remote: SocketAddr, id: usize, log: Arc<OffenderLog>) -> Self {
        Self {
            remote,
            id,
            logged: AtomicU8::new(0),
            missing: AtomicU64::new(0),
            log,
        }
    }

    /// Records an offence: the first of its kind on this connection is logged, if the
    /// server-wide limit allows.
    fn record(&self, offence: Offence, detail: &dyn std::fmt::Display) {
        let bit = offence.bit();
        if self.logged.fetch_or(bit, Ordering::Relaxed) & bit != 0 {
            return;
        }
        if let Some(suppressed) = self.log.admit() {
            warn!(
                remote = %self.remote,
                connection = self.id,
                offence = offence.name(),
                %detail,
                suppressed,
                "offending client: {}: {}",
                self.remote,
                offence.name(),
            );
        }
    }

    /// Counts a blob answered `Missing`; past [`MISSING_OFFENCE`] the connection is an
    /// offender.
    fn missing(&self) {
        let n = self.missing.fetch_add(1, Ordering::Relaxed) + 1;
        if n == MISSING_OFFENCE + 1 {
            self.record(
                Offence::UnknownChunks,
                &format_args!("{n} blobs asked for are not held"),
            );
        }
    }
}

async fn accept_loop<H: Handler>(
    endpoint: Endpoint,
    handler: Arc<H>,
    config: Arc<ServerConfig>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let offender_log = Arc::new(OffenderLog::new());
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let remote = incoming.remote_address();
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    info!(%remote, max = config.max_connections, "connection refused: at the cap");
                    incoming.refuse();
                    continue;
                };
                connections.spawn(
                    serve_connection(
                        incoming,
                        handler.clone(),
                        config.clone(),
                        shutdown.clone(),
                        permit,
                        offender_log.clone(),
                    )
                    .instrument(info_span!("net.connection", %remote)),
                );
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    // Draining: refuse newcomers while the open connections finish their requests.
    loop {
        tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming.refuse(),
                None => break,
            },
            joined = connections.join_next() => if joined.is_none() { break },
        }
    }
}

async fn serve_connection<H: Handler>(
    incoming: Incoming,
    handler: Arc<H>,
    config: Arc<ServerConfig>,
    mut shutdown: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
    offender_log: Arc<OffenderLog>,
) {
    let connecting = match incoming.accept() {
        Ok(connecting) => connecting,
        Err(e) => {
            debug!(error = %e, "incoming connection failed");
            return;
        }
    };
    let connection = match tokio::time::timeout(config.handshake_timeout, connecting).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(e)) => {
            debug!(error = %e, "handshake failed");
            return;
        }
        Err(_) => {
            debug!("handshake timed out");
            return;
        }
    };
    let Some(binding) = quic::channel_binding(&connection) else {
        warn!("no channel binding on an established connection");
        connection.close(ErrorCode::INTERNAL.varint(), b"no channel binding");
        return;
    };
    let info = Arc::new(ConnInfo {
        remote: connection.remote_address(),
        binding,
        id: connection.stable_id(),
    });
    debug!(id = info.id, "connection established");
    let offences = Arc::new(Offences::new(info.remote, info.id, offender_log));
    let mut streams = JoinSet::new();
    let shutting_down = loop {
        tokio::select! {
            accepted = connection.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    let span = debug_span!(
                        "net.request",
                        stream = %send.id(),
                        kind = tracing::field::Empty,
                    );
                    streams.spawn(
                        serve_stream(
                            handler.clone(),
                            info.clone(),
                            config.clone(),
                            offences.clone(),
                            send,
                            recv,
                        )
                        .instrument(span),
                    );
                }
                Err(e) => {
                    debug!(reason = %e, "connection closed");
                    break false;
                }
            },
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
            _ = shutdown.changed() => break true,
        }
    };
    while streams.join_next().await.is_some() {}
    if shutting_down {
        connection.close(ErrorCode::SHUTDOWN.varint(), b"server shutting down");
    }
}

async fn serve_stream<H: Handler>(
    handler: Arc<H>,
    info: Arc<ConnInfo>,
    config: Arc<ServerConfig>,
    offences: Arc<Offences>,
    mut send: SendStream,
    mut recv: RecvStream,
) {
    let request = match read_request(&mut recv, &config).await {
        Ok(request) => request,
        Err(failure) => {
            let code = match &failure {
                ReadFailure::Wire(WireError::FrameTooLong { .. }) => ErrorCode::REQUEST_TOO_LARGE,
                ReadFailure::Wire(_)
                | ReadFailure::Truncated { .. }
                | ReadFailure::TrailingBytes => ErrorCode::MALFORMED,
                ReadFailure::Stalled => ErrorCode::TIMEOUT,
                ReadFailure::Reset(_) | ReadFailure::Connection(_) | ReadFailure::Closed => {
                    debug!(?failure, "request stream ended by the client");
                    return;
                }
            };
            debug!(?failure, %code, "bad request from the client");
            let offence = match &failure {
                ReadFailure::Wire(WireError::FrameTooLong { .. }) => Offence::TooLarge,
                ReadFailure::Stalled => Offence::SlowRequest,
                _ => Offence::Malformed,
            };
            offences.record(offence, &format_args!("{failure:?}"));
            let _ = recv.stop(code.varint());
            let _ = send.reset(code.varint());
            return;
        }
    };
    tracing::Span::current().record("kind", request.name());
    debug!(kind = request.name(), "request");
    drop(recv);
    match respond(&*handler, &info, &config, &offences, &mut send, request).await {
        Ok(()) => {
            let _ = send.finish();
            // Stay until the client has acknowledged the whole answer, so that a graceful
            // shutdown closes the connection only after every answer has arrived.
            let _ = tokio::time::timeout(config.stall_timeout, send.stopped()).await;
        }
        Err(failure) => {
            let code = match &failure {
                WriteFailure::Stalled => {
                    offences.record(
                        Offence::NeverReads,
                        &format_args!(
                            "no progress writing an answer for {:?}",
                            config.stall_timeout
                        ),
                    );
                    Some(ErrorCode::TIMEOUT)
                }
                WriteFailure::Encode(e) => {
                    warn!(error = %e, "handler answer breaks a bound");
                    Some(ErrorCode::INTERNAL)
                }
                WriteFailure::Stopped(_) | WriteFailure::Connection(_) | WriteFailure::Closed => {
                    None
                }
            };
            debug!(?failure, "response not completed");
            if let Some(code) = code {
                let _ = send.reset(code.varint());
            }
        }
    }
}

async fn read_request(
    recv: &mut RecvStream,
    config: &ServerConfig,
) -> Result<Request, ReadFailure> {
    let read = async {
        let message = stream::read_frame(
            recv,
            MessageKind::Request,
            MAX_REQUEST_LEN,
            config.stall_timeout,
        )
        .await?;
        let request = Request::decode(&message).map_err(ReadFailure::Wire)?;
        stream::read_end(recv, config.stall_timeout).await?;
        Ok(request)
    };
    tokio::time::timeout(config.request_timeout, read)
        .await
        .unwrap_or(Err(ReadFailure::Stalled))
}

async fn respond<H: Handler>(
    handler: &H,
    info: &ConnInfo,
    config: &ServerConfig,
    offences: &Offences,
    send: &mut SendStream,
    request: Request,
) -> Result<(), WriteFailure> {
    let stall = config.stall_timeout;
    match request {
        Request::Challenge => {
            let answer = match handler.challenge(info).await {
                Ok(nonce) => Response::Nonce(nonce),
                Err(refusal) => Response::Refused(refusal),
            };
            write_header(send, &answer, stall).await
        }
        Request::CheckIn(signed) => {
            answer_signed(handler, info, SignedKind::CheckIn, signed, send, stall).await
        }
        Request::Report(signed) => {
            answer_signed(handler, info, SignedKind::Report, signed, send, stall).await
        }
        Request::Enroll(signed) => {
            answer_signed(handler, info, SignedKind::Enroll, signed, send, stall).await
        }
        Request::GetMetadata { name, max_len } => match handler.metadata(info, &name).await {
            None => write_header(send, &Response::NotFound, stall).await,
            Some(bytes) => match u32::try_from(bytes.len()) {
                Ok(len) if len <= max_len => {
                    let header = encode(&Response::Metadata { len })?;
                    stream::write_with_body(send, header, bytes, stall).await
                }
                _ => {
                    let refusal = Refusal::new(
                        Refusal::TOO_LARGE,
                        format!("{name} is {} bytes, over max_len {max_len}", bytes.len()),
                    );
                    write_header(send, &Response::Refused(refusal), stall).await
                }
            },
        },
        Request::GetBlobs { max_len, ids } => {
            for id in ids {
                let blob = handler.blob(info, &id).await;
                match blob.and_then(|b| Some((u32::try_from(b.len()).ok()?, b))) {
                    Some((len, bytes)) if len <= max_len => {
                        let header = encode(&Response::Blob { id, len })?;
                        stream::write_with_body(send, header, bytes, stall).await?;
                    }
                    _ => {
                        offences.missing();
                        write_header(send, &Response::Missing { id }, stall).await?;
                    }
                }
            }
            write_header(send, &Response::End, stall).await
        }
        Request::Relayed(relayed) => {
            let answer = match handler.relayed(info, relayed).await {
                Ok(body) => Response::Signed(body),
                Err(refusal) => Response::Refused(refusal),
            };
            write_header(send, &answer, stall).await
        }
        Request::RelayedVia(relayed) => {
            let answer = match handler.relayed_via(info, relayed).await {
                Ok(body) => Response::Signed(body),
                Err(refusal) => Response::Refused(refusal),
            };
            write_header(send, &answer, stall).await
        }
    }
}

async fn answer_signed<H: Handler>(
    handler: &H,
    info: &ConnInfo,
    kind: SignedKind,
    request: SignedRequest,
    send: &mut SendStream,
    stall: Duration,
) -> Result<(), WriteFailure> {
    let answer = match handler.signed(info, kind, request).await {
        Ok(body) => Response::Signed(body),
        Err(refusal) => Response::Refused(refusal),
    };
    write_header(send, &answer, stall).await
}

async fn write_header(
    send: &mut SendStream,
    response: &Response,
    stall: Duration,
) -> Result<(), WriteFailure> {
    let frame = encode(response)?;
    stream::write_chunks(send, &mut [Bytes::from(frame)], stall).await
}

fn encode(response: &Response) -> Result<Vec<u8>, WriteFailure> {
    response.encode_frame().map_err(WriteFailure::Encode)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn offender_lines_are_rate_limited_and_the_held_back_are_counted() {
        let log = OffenderLog::new();
        for _ in 0..OFFENDER_LINES_PER_SECOND {
            assert_eq!(log.admit(), Some(0));
        }
        assert_eq!(log.admit(), None);
        assert_eq!(log.admit(), None);
        // A second later the next line is written, with the two held back.
        log.window.lock().unwrap().0 -= Duration::from_secs(1);
        assert_eq!(log.admit(), Some(2));
        assert_eq!(log.admit(), Some(0));
    }

    #[test]
    fn each_offence_is_recorded_once_per_connection() {
        let log = Arc::new(OffenderLog::new());
        let offences = Offences::new("127.0.0.1:9".parse().unwrap(), 1, log.clone());
        offences.record(Offence::Malformed, &"x");
        offences.record(Offence::Malformed, &"y");
        offences.record(Offence::NeverReads, &"z");
        // Two lines admitted: one per kind.
        assert_eq!(log.window.lock().unwrap().1, 2);
        for _ in 0..MISSING_OFFENCE {
            offences.missing();
        }
        assert_eq!(log.window.lock().unwrap().1, 2, "not yet past the bound");
        offences.missing();
        offences.missing();
        assert_eq!(
            log.window.lock().unwrap().1,
            3,
            "logged once past the bound"
        );
    }
}
