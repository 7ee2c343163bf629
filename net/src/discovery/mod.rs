//! Discovery: how devices find site caches and caches find their parents, over libp2p.
//!
//! The long version is the "Discovery" section of `docs/PROTOCOL.md`; this is the summary.
//!
//! # Participants
//!
//! A **cache** (`ota-peer`: a site cache or a regional cache) runs a discovery node that
//! listens on TCP and *advertises* where its `enigm-ota/1` QUIC server is and which
//! certificate it presents ([`Advertisement`]). A **device** (`ota-device`) runs a discovery
//! node that usually does not listen: it only finds caches. Any node may publish and hear
//! release [`Announcement`]s; caches listen to them to prefetch.
//!
//! # Goals
//!
//! - A device on a site's LAN finds the site cache with no configuration (mDNS), and learns
//!   the `(QUIC address, certificate pin)` pair it needs to connect.
//! - Static configuration works too: bootstrap addresses (TCP multiaddrs of other discovery
//!   nodes) are dialled at start, and Kademlia (our own DHT, protocol `/enigm-ota/kad/1.0.0`)
//!   spreads the nodes they know, so a site cache configured with its regional cache finds
//!   the regional cache and, through it, its siblings.
//! - Release announcements reach every cache over gossipsub (topic [`ANNOUNCEMENT_TOPIC`]),
//!   so caches prefetch before the devices ask.
//!
//! # Non-goals
//!
//! - **Trust.** Nothing learnt here is trusted. A found cache is only a source of bytes, and
//!   every byte is verified anyway (TUF metadata, the signed chunk tree, chunk ids). An
//!   advertisement's pin makes the QUIC handshake reach the node that sent it, not a good node:
//!   a lying advertisement costs at most a connection attempt and, if it serves bad chunks, a
//!   ban for that update. An announcement is a hint: a cache that hears one fetches
//!   `timestamp.json` from its upstream and verifies it as it would on a poll; a false
//!   announcement costs that fetch. libp2p's own authentication (noise, gossipsub signatures)
//!   only says which libp2p key sent a record, and no key is trusted.
//! - **Data.** Data always flows over `enigm-ota/1` (QUIC). libp2p here runs over TCP with
//!   noise and yamux only: no libp2p QUIC, relay, websocket or DNS.
//! - Wide-area discovery across NATs, and privacy of which nodes exist on a LAN.
//!
//! # How an advertisement travels
//!
//! By a tiny request-response protocol, [`ADVERTISEMENT_PROTOCOL`]: a node asks a peer
//! "what do you serve?" right after identify tells that the peer speaks the protocol, and the
//! peer answers with its encoded [`Advertisement`] (at most [`MAX_ADVERTISEMENT_LEN`] bytes).
//! Only nodes that advertise accept the protocol, so identify's protocol list says who is a
//! cache before anything is asked. Why not the others: identify's agent and protocol strings
//! are free text with no bound of their own and no structure; a Kademlia record needs a DHT
//! query and a store to agree before a device on a one-cache LAN learns anything, and its
//! records outlive the node; a gossipsub topic is push-only, so a device that joins waits for
//! the next periodic re-publication, and every cache's record would be flooded to every node.
//! Asking over the connection that just found the peer is immediate, costs one stream per
//! peer, and the answer is tied to the noise-authenticated peer id that sent it.
//!
//! A cache is *found* when its advertisement arrives and *gone* when the last libp2p connection
//! to it closes. The snapshot [`DiscoveryHandle::caches`] is the truth; the event stream is a
//! convenience that drops events if its reader falls [`EVENT_CAPACITY`] behind.
//!
//! # Bounds
//!
//! Every record is bounded before it is parsed ([`record`]); gossipsub frames are at most
//! [`MAX_GOSSIP_FRAME`] bytes; connections are capped ([`DiscoveryConfig::max_connections`],
//! two per peer); at most [`MAX_CACHES`] caches are remembered; libp2p bounds identify and
//! Kademlia messages itself (4 KiB and 16 KiB).
//!
//! # Use
//!
//! ```no_run
//! # async fn example(
//! #     identity: ota_net::quic::Identity,
//! #     quic_addr: std::net::SocketAddr,
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! use ota_net::discovery::{Advertisement, Discovery, DiscoveryConfig, DiscoveryEvent, Role};
//!
//! // A site cache: listen on every interface, advertise the QUIC server.
//! let advertisement = Advertisement {
//!     quic: vec![quic_addr], // 0.0.0.0:port is fine: receivers fill in the IP
//!     pin: identity.pin(),
//!     role: Role::SiteCache,
//! };
//! let config = DiscoveryConfig::cache("0.0.0.0:4001".parse()?, advertisement);
//! let (cache, _cache_events) = Discovery::spawn(config).await?;
//!
//! // A device: no configuration needed on a LAN (mDNS); add bootstrap addresses otherwise.
//! let (device, mut events) = Discovery::spawn(DiscoveryConfig::device()).await?;
//! while let Some(event) = events.next().await {
//!     if let DiscoveryEvent::CacheFound(found) = event {
//!         // Connect with ota_net::client to found.quic, pinning found.pin.
//!         println!("{:?} at {:?} pin {}", found.role, found.quic, found.pin);
//!     }
//! }
//! # let _ = (cache, device);
//! # Ok(())
//! # }
//! ```
//!
//! # Tests on this host
//!
//! mDNS sends multicast on every non-loopback interface. Tests on a shared machine must set
//! [`DiscoveryConfig::mdns`] to `false` and use bootstrap addresses on 127.0.0.1, unless they
//! run inside a network namespace of their own (as `ota-net`'s discovery tests do).

pub mod record;

#[cfg(feature = "discovery")]
mod node;

pub use record::{
    Advertisement, Announcement, MAX_ADVERTISEMENT_LEN, MAX_ANNOUNCEMENT_LEN, MAX_CHANNEL_LEN,
    MAX_QUIC_ADDRS, RecordError, Role,
};

#[cfg(feature = "discovery")]
pub use self::node::{
    CacheVia, Discovery, DiscoveryConfig, DiscoveryError, DiscoveryEvent, DiscoveryEvents,
    DiscoveryHandle, FoundCache,
};

/// libp2p itself, for the types in this API ([`libp2p::Multiaddr`], [`libp2p::PeerId`]) and
/// for tests that play a hostile node.
#[cfg(feature = "discovery")]
pub use libp2p;

/// The request-response protocol that carries advertisements.
pub const ADVERTISEMENT_PROTOCOL: &str = "/enigm-ota/advertisement/1";

/// Our Kademlia DHT's protocol name: not the public IPFS DHT.
pub const KADEMLIA_PROTOCOL: &str = "/enigm-ota/kad/1.0.0";

/// identify's protocol version string.
pub const IDENTIFY_PROTOCOL: &str = "/enigm-ota/id/1.0.0";

/// The gossipsub topic of release announcements.
pub const ANNOUNCEMENT_TOPIC: &str = "enigm-ota/releases/1";

/// The largest gossipsub frame (one RPC: a message with its signature, or control data)
/// accepted or sent, in bytes.
pub const MAX_GOSSIP_FRAME: usize = 4096;

/// The most caches a node remembers at once; advertisements beyond are refused.
pub const MAX_CACHES: usize = 256;

/// How many events wait for the reader of [`DiscoveryEvents`] before new ones are dropped.
pub const EVENT_CAPACITY: usize = 1024;
