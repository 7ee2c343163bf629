//! Raw quinn throughput: the physical limit the serving benchmarks (`net/benches/loopback.rs`,
//! `origin/benches/serve.rs`, `peer-node/benches/serve.rs`) print their figures next to.
//!
//! One connection with the protocol's TLS and transport settings and UDP socket buffers, no
//! protocol on top: on each stream the client sends two bytes and the server answers with
//! `total` bytes from memory, written in 1 MiB pieces without copying; the client counts them
//! without copying.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::quic::{self, CertPin, ConfigError, Identity, SERVER_NAME, TransportLimits};

/// What can go wrong in a raw transfer (the benchmarks report it and stop).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RawError {
    /// The TLS or QUIC configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The UDP socket.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// Starting the connection.
    #[error("connecting: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The connection.
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// Writing the request.
    #[error("writing: {0}")]
    Write(#[from] quinn::WriteError),
    /// Finishing the request stream.
    #[error("finishing: {0}")]
    Closed(#[from] quinn::ClosedStream),
    /// Reading the answer.
    #[error("reading: {0}")]
    Read(#[from] quinn::ReadError),
}

/// Starts a raw server on `127.0.0.1`, port chosen by the OS, serving `total` bytes on every
/// stream. Runs until the runtime stops; must be called within a tokio runtime.
pub fn serve(
    identity: &Identity,
    limits: &TransportLimits,
    total: usize,
) -> Result<SocketAddr, RawError> {
    let config = quic::server_config(identity, limits)?;
    let endpoint = endpoint(Some(config))?;
    let addr = endpoint.local_addr()?;
    let piece = Bytes::from(vec![0xa5u8; 1024 * 1024]);
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let piece = piece.clone();
            tokio::spawn(async move {
                let Ok(connection) = incoming.await else {
                    return;
                };
                while let Ok((mut send, mut recv)) = connection.accept_bi().await {
                    let piece = piece.clone();
                    tokio::spawn(async move {
                        if recv.read_to_end(16).await.is_err() {
                            return;
                        }
                        let mut left = total;
                        while left > 0 {
                            let n = left.min(piece.len());
                            if send.write_chunk(piece.slice(..n)).await.is_err() {
                                return;
                            }
                            left -= n;
                        }
                        let _ = send.finish();
                        let _ = send.stopped().await;
                    });
                }
            });
        }
    });
    Ok(addr)
}

/// A connection to a raw server from a fresh local socket, trusting `pin`.
pub async fn connect(
    addr: SocketAddr,
    pin: CertPin,
    limits: &TransportLimits,
) -> Result<quinn::Connection, RawError> {
    let endpoint = endpoint(None)?;
    let config = quic::client_config(pin, limits)?;
    Ok(endpoint.connect_with(config, addr, SERVER_NAME)?.await?)
}

/// An endpoint on `127.0.0.1`, port chosen by the OS, on a socket made as the protocol's
/// servers and clients make theirs ([`quic::bind_udp`]: the same socket buffers).
fn endpoint(server: Option<quinn::ServerConfig>) -> Result<quinn::Endpoint, RawError> {
    let socket = quic::bind_udp(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let runtime =
        quinn::default_runtime().ok_or_else(|| std::io::Error::other("no async runtime found"))?;
    Ok(quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        server,
        socket,
        runtime,
    )?)
}

/// One transfer on a new stream: the bytes received and the time from the request to the
/// last byte.
pub async fn round(connection: &quinn::Connection) -> Result<(usize, Duration), RawError> {
    let start = Instant::now();
    let (mut send, mut recv) = connection.open_bi().await?;
    send.write_all(b"go").await?;
    send.finish()?;
    let mut bytes = 0;
    while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
        bytes += chunk.bytes.len();
    }
    Ok((bytes, start.elapsed()))
}
