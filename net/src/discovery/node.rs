//! The discovery node: a libp2p swarm (TCP + noise + yamux; mDNS, identify, Kademlia,
//! gossipsub and the advertisement protocol) run by one tokio task, and the handle and event
//! stream that the programs use.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use libp2p::core::ConnectedPoint;
use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Stream, StreamExt};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, connection_limits, gossipsub, identify, identity,
    kad, mdns, noise, request_response, tcp, yamux,
};
use ota_core::digest::Sha256Hash;
use tokio::sync::{mpsc, oneshot};

use super::record::{Advertisement, Announcement, MAX_ADVERTISEMENT_LEN, RecordError, Role};
use super::{
    ADVERTISEMENT_PROTOCOL, ANNOUNCEMENT_TOPIC, EVENT_CAPACITY, IDENTIFY_PROTOCOL,
    KADEMLIA_PROTOCOL, MAX_CACHES, MAX_GOSSIP_FRAME,
};
use crate::quic::{CertPin, NodeKey};

/// How a discovery node is set up. Start from [`DiscoveryConfig::device`] or
/// [`DiscoveryConfig::cache`] and change fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DiscoveryConfig {
    /// The TCP address the node listens on (port 0: the OS picks one; see
    /// [`DiscoveryHandle::listen_addrs`]). `None`: the node only dials out, as a device does;
    /// it can still find caches, but nobody can find it.
    pub listen: Option<SocketAddr>,
    /// Find and be found on the LAN by mDNS (multicast on every non-loopback interface).
    pub mdns: bool,
    /// How often mDNS asks the LAN again (it also asks at start and answers at once).
    pub mdns_query_interval: Duration,
    /// Other discovery nodes to dial at start, as TCP multiaddrs
    /// (`/ip4/192.0.2.7/tcp/4001`, optionally ending in `/p2p/<peer id>`). They seed
    /// Kademlia; whatever they advertise is found `via` [`CacheVia::Bootstrap`].
    pub bootstrap: Vec<Multiaddr>,
    /// How often bootstrap addresses that are not connected are dialled again (a parent
    /// that was down at start, or restarted, is found again within this).
    pub bootstrap_interval: Duration,
    /// What this node serves, if it is a cache. Only nodes with an advertisement answer
    /// the advertisement protocol.
    pub advertise: Option<Advertisement>,
    /// Subscribe to release announcements (caches do; devices need not).
    pub announcements: bool,
    /// The libp2p identity. `None`: a fresh random one. A cache may pass its QUIC node key,
    /// so that its peer id stays the same across restarts.
    pub node_key: Option<NodeKey>,
    /// The most libp2p connections at once, in and out together (and two per peer).
    pub max_connections: u32,
}

/// A cache that this node found: where to connect and what certificate to pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundCache {
    /// The cache's libp2p peer id (not trusted: it names the discovery node, nothing more).
    pub peer: PeerId,
    /// Its QUIC server's addresses, unspecified IPs already replaced by the IP this node
    /// reached it on. Never empty.
    pub quic: Vec<SocketAddr>,
    /// The certificate pin to use for those addresses.
    pub pin: CertPin,
    /// What it serves.
    pub role: Role,
    /// How this node came to talk to it.
    pub via: CacheVia,
}

/// How a discovery node came to talk to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CacheVia {
    /// mDNS on the LAN.
    Mdns,
    /// A configured bootstrap address.
    Bootstrap,
    /// Kademlia: another node knew it.
    Kademlia,
    /// It connected to this node.
    Inbound,
}

/// What a discovery node reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiscoveryEvent {
    /// A cache answered with a valid advertisement (again, if it changed).
    CacheFound(FoundCache),
    /// The last connection to a found cache closed.
    CacheGone {
        /// The cache's peer id.
        peer: PeerId,
    },
    /// A release announcement arrived (a hint: verify through TUF before acting on it).
    Announcement {
        /// The libp2p key that signed the gossipsub message (not trusted).
        from: PeerId,
        /// The announcement.
        announcement: Announcement,
    },
    /// A peer sent a record that was refused; nothing from it was used.
    Refused {
        /// The peer that sent it (for an announcement, the one that forwarded it to us).
        peer: PeerId,
        /// Which record and why.
        error: RecordError,
    },
}

/// A discovery node could not start or do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// Our own advertisement or announcement is not valid (our configuration's fault).
    #[error("invalid local record: {0}")]
    LocalRecord(#[source] RecordError),
    /// The libp2p stack could not be built (environment).
    #[error("building the libp2p node: {0}")]
    Setup(String),
    /// The listening address could not be bound (environment: in use, not ours).
    #[error("listening on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The reason.
        reason: String,
    },
    /// A bootstrap address is not a TCP multiaddr this node can dial.
    #[error("bootstrap address {addr} is not /ip4|ip6/…/tcp/…[/p2p/…]: {reason}")]
    Bootstrap {
        /// The address as given.
        addr: Multiaddr,
        /// The reason.
        reason: String,
    },
    /// No connected peer listens to announcements: nothing was sent.
    #[error("no peer subscribed to release announcements is connected")]
    NoSubscribers,
    /// gossipsub refused to publish.
    #[error("publishing the announcement: {0}")]
    Publish(String),
    /// The node has stopped.
    #[error("the discovery node has stopped")]
    Stopped,
}

/// The entry point: [`Discovery::spawn`].
#[derive(Debug)]
pub struct Discovery;

/// A cheap, cloneable handle to a running discovery node. The node stops when the last
/// handle is dropped (or at [`DiscoveryHandle::shutdown`]).
#[derive(Debug, Clone)]
pub struct DiscoveryHandle {
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

/// The events of one discovery node, in order. A [`Stream`], and [`DiscoveryEvents::next`]
/// for callers without `StreamExt`. If the reader falls [`EVENT_CAPACITY`] events behind,
/// newer events are dropped (and logged); [`DiscoveryHandle::caches`] stays exact.
#[derive(Debug)]
pub struct DiscoveryEvents {
    receiver: mpsc::Receiver<DiscoveryEvent>,
}

impl DiscoveryConfig {
    /// A device: no listening, mDNS on, no bootstrap, no advertisement, no announcements.
    pub fn device() -> Self {
        Self {
            listen: None,
            mdns: true,
            mdns_query_interval: Duration::from_secs(60),
            bootstrap: Vec::new(),
            bootstrap_interval: Duration::from_secs(30),
            advertise: None,
            announcements: false,
            node_key: None,
            max_connections: 64,
        }
    }

    /// A cache: listens on `listen`, advertises `advertisement`, mDNS on, announcements on.
    pub fn cache(listen: SocketAddr, advertisement: Advertisement) -> Self {
        Self {
            listen: Some(listen),
            advertise: Some(advertisement),
            announcements: true,
            max_connections: 1024,
            ..Self::device()
        }
    }
}

impl Discovery {
    /// Starts a discovery node on the current tokio runtime. Returns once the node listens
    /// (if it listens at all) and has dialled its bootstrap addresses.
    pub async fn spawn(
        config: DiscoveryConfig,
    ) -> Result<(DiscoveryHandle, DiscoveryEvents), DiscoveryError> {
        let advertisement = match &config.advertise {
            Some(ad) => Some(ad.encode().map_err(DiscoveryError::LocalRecord)?),
            None => None,
        };
        let keypair = match &config.node_key {
            Some(key) => identity::Keypair::ed25519_from_bytes(*key.seed())
                .map_err(|e| DiscoveryError::Setup(e.to_string()))?,
            None => identity::Keypair::generate_ed25519(),
        };
        let peer_id = keypair.public().to_peer_id();
        let mut swarm = build_swarm(&keypair, &config, advertisement.is_some())?;

        let topic = gossipsub::IdentTopic::new(ANNOUNCEMENT_TOPIC);
        if config.announcements {
            swarm
                .behaviour_mut()
                .gossipsub
                .subscribe(&topic)
                .map_err(|e| DiscoveryError::Setup(e.to_string()))?;
        }
        let listening = match config.listen {
            Some(addr) => {
                swarm
                    .listen_on(tcp_multiaddr(addr))
                    .map_err(|e| DiscoveryError::Listen {
                        addr,
                        reason: e.to_string(),
                    })?;
                true
            }
            None => false,
        };

        let (commands, command_rx) = mpsc::channel(16);
        let (event_tx, receiver) = mpsc::channel(EVENT_CAPACITY);
        let shared = Arc::new(Shared {
            peer_id,
            caches: Mutex::new(HashMap::new()),
            listen_addrs: Mutex::new(Vec::new()),
        });
        let mut node = Node {
            swarm,
            advertisement,
            topic,
            shared: shared.clone(),
            events: event_tx,
            peers: HashMap::new(),
            bootstrap: config
                .bootstrap
                .iter()
                .map(BootstrapAddr::parse)
                .collect::<Result<_, _>>()?,
            pending_bootstrap: HashMap::new(),
            ready: None,
        };
        node.dial_bootstrap();
        let (ready_tx, ready_rx) = oneshot::channel();
        if listening {
            node.ready = Some(ready_tx);
        } else {
            let _ = ready_tx.send(Ok(()));
        }
        tokio::spawn(node.run(command_rx, config.bootstrap_interval));
        match tokio::time::timeout(Duration::from_secs(10), ready_rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(reason))) => {
                return Err(DiscoveryError::Listen {
                    addr: config
                        .listen
                        .unwrap_or_else(|| SocketAddr::from(([0; 4], 0))),
                    reason,
                });
            }
            Ok(Err(_)) => return Err(DiscoveryError::Stopped),
            Err(_) => {
                return Err(DiscoveryError::Listen {
                    addr: config
                        .listen
                        .unwrap_or_else(|| SocketAddr::from(([0; 4], 0))),
                    reason: "no listening address after 10 s".into(),
                });
            }
        }
        Ok((
            DiscoveryHandle { commands, shared },
            DiscoveryEvents { receiver },
        ))
    }
}

impl DiscoveryHandle {
    /// This node's libp2p peer id.
    pub fn peer_id(&self) -> PeerId {
        self.shared.peer_id
    }

    /// The addresses this node listens on, each ending in `/p2p/<peer id>`: what another
    /// node puts in its [`DiscoveryConfig::bootstrap`]. Empty for a node that does not listen.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        lock(&self.shared.listen_addrs).clone()
    }

    /// The caches found and still connected, at this moment.
    pub fn caches(&self) -> Vec<FoundCache> {
        let mut caches: Vec<FoundCache> = lock(&self.shared.caches).values().cloned().collect();
        caches.sort_by_key(|c| c.peer);
        caches
    }

    /// Publishes a release announcement to every connected subscriber (and gossipsub spreads
    /// it further). Publishing the same announcement again within a minute is a no-op.
    pub async fn announce(&self, announcement: Announcement) -> Result<(), DiscoveryError> {
        let bytes = announcement.encode().map_err(DiscoveryError::LocalRecord)?;
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Announce { bytes, reply })
            .await
            .map_err(|_| DiscoveryError::Stopped)?;
        answer.await.map_err(|_| DiscoveryError::Stopped)?
    }

    /// Stops the node (closing its connections and listeners) and waits until it has.
    /// Other clones of this handle get [`DiscoveryError::Stopped`] afterwards.
    pub async fn shutdown(self) {
        let (reply, done) = oneshot::channel();
        if self
            .commands
            .send(Command::Shutdown { reply })
            .await
            .is_ok()
        {
            let _ = done.await;
        }
    }
}

impl DiscoveryEvents {
    /// The next event; `None` once the node has stopped.
    pub async fn next(&mut self) -> Option<DiscoveryEvent> {
        self.receiver.recv().await
    }
}

impl Stream for DiscoveryEvents {
    type Item = DiscoveryEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.receiver.poll_recv(cx)
    }
}

/// Connections without streams are closed after this long. identify asks every five
/// minutes, so a connection to a live peer never idles out; one to a dead peer fails.
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// The most peers whose origin (mDNS, bootstrap, …) is remembered at once.
const MAX_TRACKED_PEERS: usize = 1024;

/// The most addresses taken from one peer's identify or mDNS answer.
const MAX_ADDRS_PER_PEER: usize = 8;

/// Refused records after which a peer's connections are closed.
const MAX_REFUSALS: u32 = 3;

/// The advertisement request: one version byte.
const ADVERTISEMENT_REQUEST: u8 = 1;

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    gossipsub: gossipsub::Behaviour,
    advertisement: request_response::Behaviour<AdvertisementCodec>,
    mdns: Toggle<mdns::tokio::Behaviour>,
}

/// The advertisement protocol's codec: the request is one byte, the response is the
/// encoded advertisement. Reading stops one byte past each bound, so a peer cannot make
/// this node buffer more; the bytes are parsed by [`Advertisement::decode`] afterwards.
#[derive(Debug, Clone, Copy, Default)]
struct AdvertisementCodec;

impl request_response::Codec for AdvertisementCodec {
    type Protocol = StreamProtocol;
    type Request = ();
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &Self::Protocol, io: &mut T) -> io::Result<()>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut buf = Vec::with_capacity(2);
        io.take(2).read_to_end(&mut buf).await?;
        if buf != [ADVERTISEMENT_REQUEST] {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "advertisement request is not the single byte 1",
            ));
        }
        Ok(())
    }

    async fn read_response<T>(&mut self, _: &Self::Protocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut buf = Vec::new();
        io.take(MAX_ADVERTISEMENT_LEN as u64 + 1)
            .read_to_end(&mut buf)
            .await?;
        Ok(buf)
    }

    async fn write_request<T>(&mut self, _: &Self::Protocol, io: &mut T, (): ()) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&[ADVERTISEMENT_REQUEST]).await?;
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        _: &Self::Protocol,
        io: &mut T,
        response: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&response).await?;
        io.close().await
    }
}

#[derive(Debug)]
struct Shared {
    peer_id: PeerId,
    caches: Mutex<HashMap<PeerId, FoundCache>>,
    listen_addrs: Mutex<Vec<Multiaddr>>,
}

#[derive(Debug)]
enum Command {
    Announce {
        bytes: Vec<u8>,
        reply: oneshot::Sender<Result<(), DiscoveryError>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// What this node knows of one peer it talks to or is about to.
#[derive(Debug)]
struct PeerState {
    via: CacheVia,
    /// The IP of the last connection to it (for unspecified advertised addresses).
    remote_ip: Option<IpAddr>,
    /// An advertisement request was sent on the current connections.
    asked: bool,
    /// Kademlia was bootstrapped from it.
    bootstrapped: bool,
    /// Records from it refused on the current connections.
    refusals: u32,
}

struct Node {
    swarm: Swarm<Behaviour>,
    advertisement: Option<Vec<u8>>,
    topic: gossipsub::IdentTopic,
    shared: Arc<Shared>,
    events: mpsc::Sender<DiscoveryEvent>,
    peers: HashMap<PeerId, PeerState>,
    bootstrap: Vec<BootstrapAddr>,
    /// Dials to bootstrap addresses in flight: connection to index in `bootstrap`.
    pending_bootstrap: HashMap<ConnectionId, usize>,
    ready: Option<oneshot::Sender<Result<(), String>>>,
}

impl Node {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>, bootstrap_interval: Duration) {
        let start = tokio::time::Instant::now() + bootstrap_interval;
        let mut redial = tokio::time::interval_at(start, bootstrap_interval);
        redial.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = redial.tick(), if !self.bootstrap.is_empty() => self.dial_bootstrap(),
                command = commands.recv() => match command {
                    Some(Command::Announce { bytes, reply }) => {
                        let _ = reply.send(self.publish(bytes));
                    }
                    Some(Command::Shutdown { reply }) => {
                        self.stop();
                        let _ = reply.send(());
                        return;
                    }
                    None => {
                        self.stop();
                        return;
                    }
                },
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
            }
        }
    }

    fn stop(&mut self) {
        lock(&self.shared.caches).clear();
        lock(&self.shared.listen_addrs).clear();
        tracing::debug!(peer = %self.shared.peer_id, "discovery.stop");
    }

    fn publish(&mut self, bytes: Vec<u8>) -> Result<(), DiscoveryError> {
        match self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(self.topic.clone(), bytes)
        {
            Ok(_) | Err(gossipsub::PublishError::Duplicate) => Ok(()),
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {
                Err(DiscoveryError::NoSubscribers)
            }
            Err(e) => Err(DiscoveryError::Publish(e.to_string())),
        }
    }

    /// Dials every bootstrap address that is neither connected nor being dialled.
    fn dial_bootstrap(&mut self) {
        for index in 0..self.bootstrap.len() {
            let entry = &self.bootstrap[index];
            let known = entry.configured_peer.or(entry.learned_peer);
            if known.is_some_and(|p| p == self.shared.peer_id || self.swarm.is_connected(&p))
                || self.pending_bootstrap.values().any(|i| *i == index)
            {
                continue;
            }
            let tcp = entry.tcp.clone();
            let opts = match entry.configured_peer {
                Some(peer) => {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer, tcp.clone());
                    self.track(peer, CacheVia::Bootstrap);
                    DialOpts::peer_id(peer)
                        .addresses(vec![tcp.clone()])
                        .condition(PeerCondition::DisconnectedAndNotDialing)
                        .build()
                }
                // Whoever answers there (its key may change across re-installs).
                None => DialOpts::unknown_peer_id().address(tcp.clone()).build(),
            };
            let connection = opts.connection_id();
            self.pending_bootstrap.insert(connection, index);
            if let Err(e) = self.swarm.dial(opts) {
                self.pending_bootstrap.remove(&connection);
                tracing::debug!(addr = %tcp, error = %e, "discovery.bootstrap dial");
            }
        }
    }

    /// Remembers how this node came to a peer (the first way wins), within the bound.
    fn track(&mut self, peer: PeerId, via: CacheVia) -> bool {
        if self.peers.contains_key(&peer) {
            return true;
        }
        if self.peers.len() >= MAX_TRACKED_PEERS {
            return false;
        }
        self.peers.insert(
            peer,
            PeerState {
                via,
                remote_ip: None,
                asked: false,
                bootstrapped: false,
                refusals: 0,
            },
        );
        true
    }

    fn dial_found(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, via: CacheVia) {
        if peer == self.shared.peer_id || self.swarm.is_connected(&peer) {
            return;
        }
        if !self.track(peer, via) {
            tracing::debug!(%peer, "discovery.dial skipped: too many peers");
            return;
        }
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        if let Err(e) = self.swarm.dial(opts) {
            tracing::debug!(%peer, error = %e, "discovery.dial failed");
        }
    }

    fn emit(&self, event: DiscoveryEvent) {
        if let Err(mpsc::error::TrySendError::Full(event)) = self.events.try_send(event) {
            tracing::warn!(?event, "discovery.event dropped: the reader is behind");
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                let full = address.with(Protocol::P2p(self.shared.peer_id));
                tracing::info!(address = %full, "discovery.listen");
                lock(&self.shared.listen_addrs).push(full);
                if let Some(ready) = self.ready.take() {
                    let _ = ready.send(Ok(()));
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                let full = address.with(Protocol::P2p(self.shared.peer_id));
                lock(&self.shared.listen_addrs).retain(|a| *a != full);
            }
            SwarmEvent::ListenerError { error, .. } => {
                tracing::warn!(%error, "discovery.listen error");
                if let Some(ready) = self.ready.take() {
                    let _ = ready.send(Err(error.to_string()));
                }
            }
            SwarmEvent::ListenerClosed { reason, .. } => {
                if let Some(ready) = self.ready.take() {
                    let _ = ready.send(Err(format!("listener closed: {reason:?}")));
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => self.on_connected(peer_id, connection_id, &endpoint),
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => self.on_disconnected(peer_id),
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                if let Some(index) = self.pending_bootstrap.remove(&connection_id) {
                    let addr = &self.bootstrap[index].tcp;
                    tracing::warn!(%addr, %error, "discovery.bootstrap unreachable");
                } else {
                    tracing::debug!(?peer_id, %error, "discovery.dial error");
                }
                if let Some(peer) = peer_id
                    && !self.swarm.is_connected(&peer)
                {
                    self.peers.remove(&peer);
                }
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    fn on_connected(&mut self, peer: PeerId, connection: ConnectionId, endpoint: &ConnectedPoint) {
        let via = if let Some(index) = self.pending_bootstrap.remove(&connection) {
            self.bootstrap[index].learned_peer = Some(peer);
            CacheVia::Bootstrap
        } else if endpoint.is_listener() {
            CacheVia::Inbound
        } else {
            CacheVia::Kademlia
        };
        if !self.track(peer, via) {
            tracing::debug!(%peer, "discovery.connection closed: too many peers");
            let _ = self.swarm.disconnect_peer_id(peer);
            return;
        }
        if let Some(state) = self.peers.get_mut(&peer) {
            state.remote_ip = ip_of(endpoint.get_remote_address());
        }
    }

    fn on_disconnected(&mut self, peer: PeerId) {
        self.peers.remove(&peer);
        if lock(&self.shared.caches).remove(&peer).is_some() {
            tracing::info!(%peer, "discovery.cache gone");
            self.emit(DiscoveryEvent::CacheGone { peer });
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                self.on_identified(peer_id, info);
            }
            BehaviourEvent::Advertisement(request_response::Event::Message {
                peer,
                message,
                ..
            }) => match message {
                request_response::Message::Request { channel, .. } => {
                    if let Some(bytes) = &self.advertisement {
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .advertisement
                            .send_response(channel, bytes.clone());
                    }
                }
                request_response::Message::Response { response, .. } => {
                    self.on_advertisement(peer, &response);
                }
            },
            BehaviourEvent::Advertisement(request_response::Event::OutboundFailure {
                peer,
                error,
                ..
            }) => {
                tracing::debug!(%peer, %error, "discovery.advertisement request failed");
                if let Some(state) = self.peers.get_mut(&peer) {
                    state.asked = false;
                }
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                let mut by_peer: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
                for (peer, addr) in found {
                    let addrs = by_peer.entry(peer).or_default();
                    if addrs.len() < MAX_ADDRS_PER_PEER {
                        addrs.push(addr);
                    }
                }
                for (peer, addrs) in by_peer {
                    tracing::debug!(%peer, ?addrs, "discovery.mdns discovered");
                    self.dial_found(peer, addrs, CacheVia::Mdns);
                }
            }
            BehaviourEvent::Kad(kad::Event::RoutingUpdated {
                peer,
                is_new_peer: true,
                addresses,
                ..
            }) => {
                let addrs: Vec<Multiaddr> = addresses
                    .into_vec()
                    .into_iter()
                    .take(MAX_ADDRS_PER_PEER)
                    .collect();
                self.dial_found(peer, addrs, CacheVia::Kademlia);
            }
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => self.on_gossip(propagation_source, &message_id, &message),
            _ => {}
        }
    }

    fn on_identified(&mut self, peer: PeerId, info: identify::Info) {
        let speaks = |name: &str| info.protocols.iter().any(|p| p.as_ref() == name);
        let kademlia = speaks(KADEMLIA_PROTOCOL);
        let advertises = speaks(ADVERTISEMENT_PROTOCOL);
        if !kademlia && !advertises {
            // Not one of ours (another libp2p program on the LAN, or a device).
            tracing::debug!(%peer, agent = %bounded(&info.agent_version), "discovery.peer not ours");
            if self
                .peers
                .get(&peer)
                .is_some_and(|s| s.via != CacheVia::Inbound)
            {
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            return;
        }
        if kademlia {
            for addr in info.listen_addrs.iter().take(MAX_ADDRS_PER_PEER) {
                self.swarm
                    .behaviour_mut()
                    .kad
                    .add_address(&peer, addr.clone());
            }
        }
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        if kademlia && state.via == CacheVia::Bootstrap && !state.bootstrapped {
            state.bootstrapped = true;
            if let Err(e) = self.swarm.behaviour_mut().kad.bootstrap() {
                tracing::debug!(error = %e, "discovery.kademlia bootstrap");
            }
        }
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        if advertises && !state.asked {
            state.asked = true;
            self.swarm
                .behaviour_mut()
                .advertisement
                .send_request(&peer, ());
        }
    }

    fn on_advertisement(&mut self, peer: PeerId, bytes: &[u8]) {
        let (via, remote_ip) = match self.peers.get(&peer) {
            Some(state) => (state.via, state.remote_ip),
            None => return, // disconnected meanwhile
        };
        let advertisement = match Advertisement::decode(bytes) {
            Ok(ad) => ad,
            Err(error) => {
                self.refuse(peer, error, "advertisement");
                return;
            }
        };
        let quic: Vec<SocketAddr> = advertisement
            .quic
            .iter()
            .filter_map(|addr| {
                if addr.ip().is_unspecified() {
                    remote_ip.map(|ip| SocketAddr::new(ip, addr.port()))
                } else {
                    Some(*addr)
                }
            })
            .collect();
        if quic.is_empty() {
            self.refuse(peer, RecordError::NoAddress, "advertisement");
            return;
        }
        let found = FoundCache {
            peer,
            quic,
            pin: advertisement.pin,
            role: advertisement.role,
            via,
        };
        {
            let mut caches = lock(&self.shared.caches);
            if caches.get(&peer) == Some(&found) {
                return;
            }
            if !caches.contains_key(&peer) && caches.len() >= MAX_CACHES {
                tracing::warn!(%peer, "discovery.advertisement ignored: {MAX_CACHES} caches known");
                return;
            }
            caches.insert(peer, found.clone());
        }
        tracing::info!(%peer, quic = ?found.quic, pin = %found.pin, role = ?found.role, via = ?found.via, "discovery.cache found");
        self.emit(DiscoveryEvent::CacheFound(found));
    }

    fn on_gossip(
        &mut self,
        forwarder: PeerId,
        id: &gossipsub::MessageId,
        message: &gossipsub::Message,
    ) {
        let verdict = match Announcement::decode(&message.data) {
            Ok(announcement) => {
                let from = message.source.unwrap_or(forwarder);
                tracing::info!(%from, ?announcement, "discovery.announcement");
                self.emit(DiscoveryEvent::Announcement { from, announcement });
                gossipsub::MessageAcceptance::Accept
            }
            Err(error) => {
                self.refuse(forwarder, error, "announcement");
                gossipsub::MessageAcceptance::Reject
            }
        };
        // Only valid announcements are forwarded to others.
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(id, &forwarder, verdict);
    }

    /// Reports a refused record and drops the peer's connections once it has sent
    /// [`MAX_REFUSALS`]: nodes of this version validate before they forward, so a peer that
    /// keeps sending bad records is broken or hostile.
    fn refuse(&mut self, peer: PeerId, error: RecordError, what: &str) {
        tracing::warn!(%peer, %error, record = what, "discovery.record refused");
        self.emit(DiscoveryEvent::Refused { peer, error });
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        state.refusals += 1;
        if state.refusals >= MAX_REFUSALS {
            tracing::warn!(%peer, refusals = state.refusals, "discovery.peer dropped");
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }
}

/// A configured bootstrap address: IP and TCP port, and the peer id if it was given.
#[derive(Debug)]
struct BootstrapAddr {
    tcp: Multiaddr,
    configured_peer: Option<PeerId>,
    /// Who answered there last (for an address given without a peer id).
    learned_peer: Option<PeerId>,
}

impl BootstrapAddr {
    fn parse(addr: &Multiaddr) -> Result<Self, DiscoveryError> {
        let mut tcp = addr.clone();
        let configured_peer = match tcp.iter().last() {
            Some(Protocol::P2p(peer)) => {
                tcp.pop();
                Some(peer)
            }
            _ => None,
        };
        let mut parts = tcp.iter();
        let is_tcp = matches!(
            (parts.next(), parts.next(), parts.next()),
            (
                Some(Protocol::Ip4(_) | Protocol::Ip6(_)),
                Some(Protocol::Tcp(_)),
                None
            )
        );
        if !is_tcp {
            return Err(DiscoveryError::Bootstrap {
                addr: addr.clone(),
                reason: "only an IP address and a TCP port are supported".into(),
            });
        }
        Ok(Self {
            tcp,
            configured_peer,
            learned_peer: None,
        })
    }
}

fn build_swarm(
    keypair: &identity::Keypair,
    config: &DiscoveryConfig,
    advertises: bool,
) -> Result<Swarm<Behaviour>, DiscoveryError> {
    let setup = |e: &dyn std::fmt::Display| DiscoveryError::Setup(e.to_string());
    let peer_id = keypair.public().to_peer_id();
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established(Some(config.max_connections))
        .with_max_established_per_peer(Some(2))
        .with_max_pending_incoming(Some(64))
        .with_max_pending_outgoing(Some(64));

    let mut kad_config = kad::Config::new(StreamProtocol::new(KADEMLIA_PROTOCOL));
    kad_config.set_query_timeout(Duration::from_secs(30));
    let mut kad =
        kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);
    // A node that listens answers Kademlia queries; one that does not is a client only.
    kad.set_mode(Some(if config.listen.is_some() {
        kad::Mode::Server
    } else {
        kad::Mode::Client
    }));

    let gossip_config = gossipsub::ConfigBuilder::default()
        .max_transmit_size(MAX_GOSSIP_FRAME)
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        // Content-addressed: the same announcement from two publishers is one message.
        .message_id_fn(|m: &gossipsub::Message| {
            gossipsub::MessageId::from(Sha256Hash::of(&m.data).as_bytes().to_vec())
        })
        .build()
        .map_err(|e| setup(&e))?;
    let gossipsub = gossipsub::Behaviour::new(
        gossipsub::MessageAuthenticity::Signed(keypair.clone()),
        gossip_config,
    )
    .map_err(|e| setup(&e))?;

    let support = if advertises {
        request_response::ProtocolSupport::Full
    } else {
        request_response::ProtocolSupport::Outbound
    };
    let advertisement = request_response::Behaviour::with_codec(
        AdvertisementCodec,
        [(StreamProtocol::new(ADVERTISEMENT_PROTOCOL), support)],
        request_response::Config::default()
            .with_request_timeout(Duration::from_secs(10))
            .with_max_concurrent_streams(16),
    );

    let mdns = if config.mdns {
        let mdns_config = mdns::Config {
            query_interval: config.mdns_query_interval,
            ..mdns::Config::default()
        };
        Some(mdns::tokio::Behaviour::new(mdns_config, peer_id).map_err(|e| setup(&e))?)
    } else {
        None
    };

    let identify = identify::Behaviour::new(
        identify::Config::new(IDENTIFY_PROTOCOL.into(), keypair.public())
            .with_agent_version(format!("enigm-ota/{}", env!("CARGO_PKG_VERSION"))),
    );

    let behaviour = Behaviour {
        limits: connection_limits::Behaviour::new(limits),
        identify,
        kad,
        gossipsub,
        advertisement,
        mdns: Toggle::from(mdns),
    };
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| setup(&e))?
        .with_behaviour(|_| behaviour)
        .map_err(|e| setup(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_TIMEOUT))
        .build();
    Ok(swarm)
}

fn tcp_multiaddr(addr: SocketAddr) -> Multiaddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) => Protocol::Ip4(ip),
        IpAddr::V6(ip) => Protocol::Ip6(ip),
    };
    Multiaddr::empty().with(ip).with(Protocol::Tcp(addr.port()))
}

fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

/// A peer-supplied string, cut for a log line.
fn bounded(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
