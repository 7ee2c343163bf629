//! `ota-net`: the transports of the Enigm OTA system.
//!
//! This crate holds the QUIC protocol `enigm-ota/1` that the origin, the site peers and the
//! devices speak (DESIGN.md §4; the long specification is `docs/PROTOCOL.md`):
//!
//! - [`proto`]: the messages, their framing and bounds, the signed-request binding and the
//!   error codes. No I/O.
//! - [`quic`]: TLS 1.3 with rustls/ring, node identities, certificate pins, transport limits
//!   and the channel binding (the TLS exporter value).
//! - [`server`]: the accept loop and the [`server::Handler`] trait the origin and peers
//!   implement.
//! - [`client`]: connections to a pinned server and the requests, with streamed blobs.
//!
//! The HTTP mirror client and libp2p discovery will join it (device and peer issues).

pub mod client;
pub mod proto;
pub mod quic;
pub mod server;

mod stream;
