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
//! - [`raw`]: raw quinn throughput on loopback, the limit the serving benchmarks compare with.
//! - [`discovery`]: how devices find site caches and caches find their parents (libp2p:
//!   mDNS, Kademlia, identify; gossipsub for release announcements). Discovery only: data
//!   always flows over `enigm-ota/1`.
//!
//! The HTTP mirror client will join it (device issue).

pub mod client;
pub mod discovery;
pub mod proto;
pub mod quic;
pub mod raw;
pub mod server;

mod stream;
