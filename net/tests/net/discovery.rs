//! libp2p discovery on 127.0.0.1 (and mDNS inside a network namespace of the test's own):
//! caches found by bootstrap address, by Kademlia through a parent, and by mDNS; release
//! announcements; and hostile nodes whose records are refused.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, gossipsub, identify, noise, request_response, tcp, yamux,
};
use ota_core::digest::Sha256Hash;
use ota_core::tuf::enigm::{Channel, ReleaseNumber};
use ota_net::discovery::{
    ADVERTISEMENT_PROTOCOL, ANNOUNCEMENT_TOPIC, Advertisement, Announcement, CacheVia, Discovery,
    DiscoveryConfig, DiscoveryError, DiscoveryEvent, DiscoveryEvents, DiscoveryHandle, FoundCache,
    MAX_ADVERTISEMENT_LEN, MAX_ANNOUNCEMENT_LEN, RecordError, Role,
};
use ota_net::quic::{CertPin, Identity, NodeKey};

/// Long enough for a loaded 2-core CI machine; the happy path takes milliseconds.
const WAIT: Duration = Duration::from_secs(20);

const LOOPBACK: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

fn pin(byte: u8) -> CertPin {
    CertPin(Sha256Hash([byte; 32]))
}

fn advertisement(port: u16, pin_byte: u8, role: Role) -> Advertisement {
    Advertisement {
        quic: vec![SocketAddr::from((Ipv4Addr::LOCALHOST, port))],
        pin: pin(pin_byte),
        role,
    }
}

/// A cache node on 127.0.0.1, without mDNS (multicast would leave the machine).
async fn cache(ad: Advertisement, bootstrap: Vec<Multiaddr>) -> (DiscoveryHandle, DiscoveryEvents) {
    let mut config = DiscoveryConfig::cache(LOOPBACK, ad);
    config.mdns = false;
    config.bootstrap = bootstrap;
    Discovery::spawn(config).await.unwrap()
}

async fn device(bootstrap: Vec<Multiaddr>) -> (DiscoveryHandle, DiscoveryEvents) {
    let mut config = DiscoveryConfig::device();
    config.mdns = false;
    config.bootstrap = bootstrap;
    Discovery::spawn(config).await.unwrap()
}

/// Waits for the first event that `pick` maps to `Some`, failing with what was seen.
async fn wait_for<T>(
    events: &mut DiscoveryEvents,
    what: &str,
    mut pick: impl FnMut(&DiscoveryEvent) -> Option<T>,
) -> T {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(event)) => {
                if let Some(found) = pick(&event) {
                    return found;
                }
                seen.push(event);
            }
            Ok(None) => panic!("node stopped while waiting for {what}; saw {seen:#?}"),
            Err(_) => panic!("no {what} within {WAIT:?}; saw {seen:#?}"),
        }
    }
}

fn found(peer: PeerId) -> impl FnMut(&DiscoveryEvent) -> Option<FoundCache> {
    move |event| match event {
        DiscoveryEvent::CacheFound(cache) if cache.peer == peer => Some(cache.clone()),
        _ => None,
    }
}

#[tokio::test]
async fn device_finds_cache_through_a_bootstrap_address_and_sees_it_go() {
    // The cache's QUIC server is bound to 0.0.0.0: the device must turn that into the IP it
    // reached the cache on.
    let ad = Advertisement {
        quic: vec![
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, 4433)),
            SocketAddr::from((Ipv4Addr::new(192, 0, 2, 9), 4434)),
        ],
        pin: pin(1),
        role: Role::SiteCache,
    };
    let (cache, _cache_events) = cache(ad, vec![]).await;
    let addrs = cache.listen_addrs();
    assert!(!addrs.is_empty());
    assert!(
        addrs
            .iter()
            .all(|a| a.iter().last() == Some(Protocol::P2p(cache.peer_id())))
    );

    let (device, mut events) = device(addrs).await;
    let found = wait_for(&mut events, "the cache", found(cache.peer_id())).await;
    let expected = FoundCache {
        peer: cache.peer_id(),
        quic: vec![
            SocketAddr::from((Ipv4Addr::LOCALHOST, 4433)),
            SocketAddr::from((Ipv4Addr::new(192, 0, 2, 9), 4434)),
        ],
        pin: pin(1),
        role: Role::SiteCache,
        via: CacheVia::Bootstrap,
    };
    assert_eq!(found, expected);
    assert_eq!(device.caches(), vec![expected]);

    let gone = cache.peer_id();
    cache.shutdown().await;
    wait_for(&mut events, "the cache to go", |e| {
        matches!(e, DiscoveryEvent::CacheGone { peer } if *peer == gone).then_some(())
    })
    .await;
    assert_eq!(device.caches(), vec![]);
    device.shutdown().await;
}

#[tokio::test]
async fn bootstrap_address_without_peer_id_is_enough() {
    let (cache, _cache_events) = cache(advertisement(5000, 2, Role::RegionalCache), vec![]).await;
    let mut plain = cache.listen_addrs()[0].clone();
    assert!(matches!(plain.pop(), Some(Protocol::P2p(_))));
    let (device, mut events) = device(vec![plain]).await;
    let found = wait_for(&mut events, "the cache", found(cache.peer_id())).await;
    assert_eq!(found.via, CacheVia::Bootstrap);
    assert_eq!(found.role, Role::RegionalCache);
    assert_eq!(found.pin, pin(2));
    device.shutdown().await;
    cache.shutdown().await;
}

#[tokio::test]
async fn a_parent_that_starts_late_or_restarts_is_found_again() {
    // A free port for the regional cache, which is not running yet.
    let port = std::net::TcpListener::bind(LOOPBACK)
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let parent_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut config = DiscoveryConfig::cache(LOOPBACK, advertisement(6100, 13, Role::SiteCache));
    config.mdns = false;
    config.bootstrap = vec![format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()];
    config.bootstrap_interval = Duration::from_millis(100);
    let (site, mut events) = Discovery::spawn(config).await.unwrap();
    // Let the first dials fail.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let regional_config = || {
        let mut config =
            DiscoveryConfig::cache(parent_addr, advertisement(6101, 14, Role::RegionalCache));
        config.mdns = false;
        config
    };
    let (regional, _e) = Discovery::spawn(regional_config()).await.unwrap();
    let first = wait_for(&mut events, "the late parent", found(regional.peer_id())).await;
    assert_eq!(first.via, CacheVia::Bootstrap);

    // Restarted with a new key on the same address: gone, then found again.
    let old = regional.peer_id();
    regional.shutdown().await;
    wait_for(&mut events, "the parent to go", |e| {
        matches!(e, DiscoveryEvent::CacheGone { peer } if *peer == old).then_some(())
    })
    .await;
    let (restarted, _e) = Discovery::spawn(regional_config()).await.unwrap();
    assert_ne!(restarted.peer_id(), old);
    let again = wait_for(
        &mut events,
        "the restarted parent",
        found(restarted.peer_id()),
    )
    .await;
    assert_eq!(again.via, CacheVia::Bootstrap);
    assert_eq!(site.caches(), vec![again]);
    site.shutdown().await;
    restarted.shutdown().await;
}

#[tokio::test]
async fn the_node_key_is_the_libp2p_identity() {
    // A cache that passes its QUIC node key keeps its peer id across restarts, and the peer
    // id is that key's Ed25519 public key.
    let key = NodeKey::from_seed([9; 32]);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let mut config = DiscoveryConfig::cache(LOOPBACK, advertisement(5100, 4, Role::SiteCache));
        config.mdns = false;
        config.node_key = Some(key.clone());
        let (node, _events) = Discovery::spawn(config).await.unwrap();
        ids.push(node.peer_id());
        node.shutdown().await;
    }
    assert_eq!(ids[0], ids[1]);
    let public = Identity::from_node_key(&key).unwrap().public_key();
    let expected = PeerId::from_public_key(
        &libp2p::identity::ed25519::PublicKey::try_from_bytes(&public)
            .unwrap()
            .into(),
    );
    assert_eq!(ids[0], expected);
    let (fresh, _events) = device(vec![]).await;
    assert_ne!(fresh.peer_id(), ids[0]);
    fresh.shutdown().await;
}

#[tokio::test]
async fn a_site_cache_finds_its_sibling_through_the_regional_cache() {
    let (regional, mut regional_events) =
        cache(advertisement(6000, 10, Role::RegionalCache), vec![]).await;
    let (site_a, _a_events) = cache(
        advertisement(6001, 11, Role::SiteCache),
        regional.listen_addrs(),
    )
    .await;
    // The regional cache learns of site A when A connects and answers its question.
    let a = wait_for(&mut regional_events, "site A", found(site_a.peer_id())).await;
    assert_eq!(a.via, CacheVia::Inbound);
    assert_eq!(a.role, Role::SiteCache);

    // Site B knows only the regional cache; Kademlia brings it to site A.
    let (site_b, mut b_events) = cache(
        advertisement(6002, 12, Role::SiteCache),
        regional.listen_addrs(),
    )
    .await;
    let mut seen = std::collections::HashMap::new();
    while seen.len() < 2 {
        let cache = wait_for(
            &mut b_events,
            "the regional cache and site A",
            |e| match e {
                DiscoveryEvent::CacheFound(c) => Some(c.clone()),
                _ => None,
            },
        )
        .await;
        seen.insert(cache.peer, cache);
    }
    assert_eq!(seen[&regional.peer_id()].via, CacheVia::Bootstrap);
    assert_eq!(seen[&regional.peer_id()].role, Role::RegionalCache);
    // B's Kademlia lookup reaches A, or A's reaches B first: either way nobody configured it.
    let via_a = seen[&site_a.peer_id()].via;
    assert!(
        matches!(via_a, CacheVia::Kademlia | CacheVia::Inbound),
        "{via_a:?}"
    );
    assert_eq!(seen[&site_a.peer_id()].pin, pin(11));
    for node in [site_b, site_a, regional] {
        node.shutdown().await;
    }
}

/// Publishes until a subscriber is connected (gossipsub learns subscriptions just after
/// the connection), then no more.
async fn announce(node: &DiscoveryHandle, announcement: &Announcement) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match node.announce(announcement.clone()).await {
            Ok(()) => return,
            Err(DiscoveryError::NoSubscribers) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("announcing: {e}"),
        }
    }
}

#[tokio::test]
async fn an_announcement_reaches_the_other_caches() {
    let (regional, mut regional_events) =
        cache(advertisement(7000, 20, Role::RegionalCache), vec![]).await;
    let (site, mut site_events) = cache(
        advertisement(7001, 21, Role::SiteCache),
        regional.listen_addrs(),
    )
    .await;
    wait_for(
        &mut site_events,
        "the regional cache",
        found(regional.peer_id()),
    )
    .await;

    let announcement = Announcement {
        channel: Channel("stable".into()),
        release: ReleaseNumber(42),
        timestamp_version: 7,
    };
    announce(&regional, &announcement).await;
    let (from, heard) = wait_for(&mut site_events, "the announcement", |e| match e {
        DiscoveryEvent::Announcement { from, announcement } => Some((*from, announcement.clone())),
        _ => None,
    })
    .await;
    assert_eq!(from, regional.peer_id());
    assert_eq!(heard, announcement);

    // The other way round too, and a bad local announcement is refused before sending.
    let reply = Announcement {
        channel: Channel("beta".into()),
        release: ReleaseNumber(3),
        timestamp_version: 9,
    };
    announce(&site, &reply).await;
    let heard = wait_for(&mut regional_events, "the reply", |e| match e {
        DiscoveryEvent::Announcement { announcement, .. } => Some(announcement.clone()),
        _ => None,
    })
    .await;
    assert_eq!(heard, reply);
    let bad = Announcement {
        channel: Channel(String::new()),
        ..reply
    };
    assert!(matches!(
        site.announce(bad).await,
        Err(DiscoveryError::LocalRecord(RecordError::BadChannel {
            len: 0,
            ..
        }))
    ));
    site.shutdown().await;
    regional.shutdown().await;
}

#[tokio::test]
async fn a_device_does_not_answer_and_announcing_alone_says_so() {
    let (lonely, _events) = cache(advertisement(7100, 30, Role::SiteCache), vec![]).await;
    let announcement = Announcement {
        channel: Channel("stable".into()),
        release: ReleaseNumber(1),
        timestamp_version: 1,
    };
    assert!(matches!(
        lonely.announce(announcement).await,
        Err(DiscoveryError::NoSubscribers)
    ));
    // A node without an advertisement is never reported as a cache, even when it listens
    // and speaks Kademlia: a device bootstrapped to it and to a cache finds the cache only.
    let mut config = DiscoveryConfig::device();
    config.mdns = false;
    config.listen = Some(LOOPBACK);
    let (listening_device, _device_events) = Discovery::spawn(config).await.unwrap();
    let mut bootstrap = listening_device.listen_addrs();
    bootstrap.extend(lonely.listen_addrs());
    let (other, mut other_events) = device(bootstrap).await;
    let found = wait_for(&mut other_events, "the lonely cache", |e| match e {
        DiscoveryEvent::CacheFound(c) => Some(c.clone()),
        _ => None,
    })
    .await;
    assert_eq!(found.peer, lonely.peer_id());
    assert_eq!(other.caches(), vec![found]);
    for node in [other, listening_device, lonely] {
        node.shutdown().await;
    }
}

// ---- hostile nodes ----

/// A libp2p node that speaks our protocols but sends what the test says: an advertisement
/// answer of any bytes, and announcements of any bytes.
#[derive(NetworkBehaviour)]
struct HostileBehaviour {
    identify: identify::Behaviour,
    advertisement: request_response::Behaviour<RawCodec>,
    gossipsub: gossipsub::Behaviour,
}

/// The advertisement protocol as the spec says it (one request byte, the answer's bytes),
/// with no check on what is sent.
#[derive(Debug, Clone, Default)]
struct RawCodec;

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = ();
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<()>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut buf = Vec::new();
        io.take(2).read_to_end(&mut buf).await?;
        Ok(())
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut buf = Vec::new();
        io.take(1 << 20).read_to_end(&mut buf).await?;
        Ok(buf)
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, (): ()) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&[1]).await?;
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
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

/// The hostile node's task, aborted on drop.
struct Hostile {
    addr: Multiaddr,
    peer: PeerId,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn hostile(answer: Vec<u8>, gossip: Option<Vec<u8>>) -> Hostile {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|key| HostileBehaviour {
            identify: identify::Behaviour::new(identify::Config::new(
                "/hostile/1".into(),
                key.public(),
            )),
            advertisement: request_response::Behaviour::new(
                [(
                    StreamProtocol::new(ADVERTISEMENT_PROTOCOL),
                    request_response::ProtocolSupport::Full,
                )],
                request_response::Config::default(),
            ),
            gossipsub: gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                gossipsub::Config::default(),
            )
            .unwrap(),
        })
        .unwrap()
        .build();
    let topic = gossipsub::IdentTopic::new(ANNOUNCEMENT_TOPIC);
    swarm.behaviour_mut().gossipsub.subscribe(&topic).unwrap();
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    let peer = *swarm.local_peer_id();
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        // Gossip only once an advertisement was asked for and answered, so the asker has
        // taken it (or refused it) first.
        let mut answered = false;
        let mut sent: u64 = 0;
        loop {
            tokio::select! {
                event = swarm.select_next_some() => {
                    if let SwarmEvent::Behaviour(HostileBehaviourEvent::Advertisement(
                        request_response::Event::Message {
                            message: request_response::Message::Request { channel, .. },
                            ..
                        },
                    )) = event
                    {
                        let _ = swarm
                            .behaviour_mut()
                            .advertisement
                            .send_response(channel, answer.clone());
                        answered = true;
                    }
                }
                _ = tick.tick() => {
                    if let Some(bytes) = gossip.as_ref().filter(|_| answered) {
                        // A different message each time (ids are content hashes, and a
                        // repeated message is only a duplicate).
                        sent += 1;
                        let mut bytes = bytes.clone();
                        let n = bytes.len().min(8);
                        bytes[..n].copy_from_slice(&sent.to_le_bytes()[..n]);
                        let _ = swarm.behaviour_mut().gossipsub.publish(topic.clone(), bytes);
                    }
                }
            }
        }
    });
    Hostile { addr, peer, task }
}

async fn refusal_from(hostile: &Hostile) -> RecordError {
    let (node, mut events) = device(vec![hostile.addr.clone()]).await;
    let error = wait_for(&mut events, "the refusal", |e| match e {
        DiscoveryEvent::Refused { peer, error } if *peer == hostile.peer => Some(error.clone()),
        DiscoveryEvent::CacheFound(c) => panic!("a hostile advertisement was taken: {c:?}"),
        _ => None,
    })
    .await;
    assert_eq!(node.caches(), vec![]);
    node.shutdown().await;
    error
}

#[tokio::test]
async fn oversized_and_garbage_advertisements_are_refused() {
    // An endless answer: the reader stops one byte past the bound.
    let oversized = hostile(vec![1; 100 * MAX_ADVERTISEMENT_LEN], None).await;
    assert_eq!(
        refusal_from(&oversized).await,
        RecordError::TooLong {
            len: MAX_ADVERTISEMENT_LEN + 1,
            max: MAX_ADVERTISEMENT_LEN
        }
    );

    // A well-formed advertisement of a version this node does not speak.
    let mut future = advertisement(4433, 3, Role::SiteCache).encode().unwrap();
    future[0] = 9;
    let from_the_future = hostile(future, None).await;
    assert_eq!(
        refusal_from(&from_the_future).await,
        RecordError::UnsupportedVersion(9)
    );

    // Garbage, and an advertisement with nothing to connect to.
    let garbage = hostile(vec![1, 0, 0xff], None).await;
    assert!(matches!(
        refusal_from(&garbage).await,
        RecordError::Malformed(_)
    ));
    let mut empty = advertisement(4433, 3, Role::SiteCache).encode().unwrap();
    // version, role, 32 pin bytes, then the address count.
    let count = 2 + 32;
    empty.truncate(count);
    empty.push(0);
    let nowhere = hostile(empty, None).await;
    assert_eq!(refusal_from(&nowhere).await, RecordError::NoAddress);
}

#[tokio::test]
async fn a_garbage_announcement_is_refused_and_not_passed_on() {
    let junk = vec![0xa5; MAX_ANNOUNCEMENT_LEN + 44];
    // Its advertisement is valid: the only refusal can be the announcement's.
    let valid = advertisement(7201, 41, Role::SiteCache).encode().unwrap();
    let sender = hostile(valid, Some(junk)).await;
    let (cache_node, mut events) = cache(
        advertisement(7200, 40, Role::SiteCache),
        vec![sender.addr.clone()],
    )
    .await;
    wait_for(
        &mut events,
        "the sender's advertisement",
        found(sender.peer),
    )
    .await;
    let error = wait_for(&mut events, "the refusal", |e| match e {
        DiscoveryEvent::Refused { peer, error } if *peer == sender.peer => Some(error.clone()),
        DiscoveryEvent::Announcement { announcement, .. } => {
            panic!("garbage taken as {announcement:?}")
        }
        _ => None,
    })
    .await;
    assert_eq!(
        error,
        RecordError::TooLong {
            len: MAX_ANNOUNCEMENT_LEN + 44,
            max: MAX_ANNOUNCEMENT_LEN
        }
    );
    // It keeps sending: after the third refusal its connection is closed, and the cache it
    // claimed to be is gone with it.
    let gone = sender.peer;
    wait_for(&mut events, "the sender to be dropped", |e| match e {
        DiscoveryEvent::CacheGone { peer } if *peer == gone => Some(()),
        DiscoveryEvent::Announcement { announcement, .. } => {
            panic!("garbage taken as {announcement:?}")
        }
        _ => None,
    })
    .await;
    assert!(cache_node.caches().iter().all(|c| c.peer != gone));
    cache_node.shutdown().await;
}

// ---- mDNS ----

const NAMESPACE_MARKER: &str = "ENIGM_OTA_DISCOVERY_NETNS";

/// mDNS is multicast: on a shared machine it would leave through the real interface. So
/// the test runs its two nodes inside a network namespace of its own, joined by a veth
/// pair. Where no namespace can be made, it says so and checks a static address instead.
#[tokio::test]
async fn a_device_finds_a_cache_by_mdns() {
    let test_binary = std::env::current_exe().unwrap();
    let script = "ip link set lo up \
        && ip link add ota-v0 type veth peer name ota-v1 \
        && ip addr add 10.203.0.1/24 dev ota-v0 \
        && ip addr add 10.203.0.2/24 dev ota-v1 \
        && ip link set ota-v0 up && ip link set ota-v1 up \
        && exec \"$0\" discovery::mdns_inside_own_namespace --exact --ignored --nocapture";
    let probe = Command::new("unshare")
        .args(["--net", "--", "sh", "-c", "ip link set lo up"])
        .output();
    let can_namespace = matches!(&probe, Ok(out) if out.status.success());
    if !can_namespace {
        let why = match &probe {
            Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
            Err(e) => e.to_string(),
        };
        eprintln!(
            "mDNS NOT TESTED on this host: cannot make a network namespace for multicast \
             ({why}); checking discovery through a static bootstrap address instead"
        );
        let (cache, _e) = cache(advertisement(8000, 50, Role::SiteCache), vec![]).await;
        let (device, mut events) = device(cache.listen_addrs()).await;
        let found = wait_for(&mut events, "the cache", found(cache.peer_id())).await;
        assert_eq!(found.via, CacheVia::Bootstrap);
        device.shutdown().await;
        cache.shutdown().await;
        return;
    }
    let output = tokio::process::Command::new("unshare")
        .args(["--net", "--", "sh", "-c", script])
        .arg(&test_binary)
        .env(NAMESPACE_MARKER, "1")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "mDNS test inside the namespace failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("mdns: cache found"))
        .unwrap_or_else(|| panic!("no mDNS result in the namespace's output:\n{stdout}"));
    eprintln!("mDNS tested inside a network namespace of this test: {line}");
}

/// Run by [`a_device_finds_a_cache_by_mdns`] inside its network namespace; refuses to run
/// anywhere else (its multicast would leave the machine).
#[tokio::test]
#[ignore = "run by a_device_finds_a_cache_by_mdns inside its own network namespace"]
async fn mdns_inside_own_namespace() {
    assert!(
        std::env::var_os(NAMESPACE_MARKER).is_some(),
        "this test sends multicast: run a_device_finds_a_cache_by_mdns instead"
    );
    let mut config = DiscoveryConfig::cache(
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        Advertisement {
            quic: vec![SocketAddr::from((Ipv4Addr::UNSPECIFIED, 4433))],
            pin: pin(60),
            role: Role::SiteCache,
        },
    );
    config.mdns_query_interval = Duration::from_secs(1);
    let (cache, _cache_events) = Discovery::spawn(config).await.unwrap();
    // A device with no configuration at all.
    let mut config = DiscoveryConfig::device();
    config.mdns_query_interval = Duration::from_secs(1);
    let (device, mut events) = Discovery::spawn(config).await.unwrap();
    let found = wait_for(&mut events, "the cache by mDNS", found(cache.peer_id())).await;
    assert_eq!(found.via, CacheVia::Mdns);
    assert_eq!(found.pin, pin(60));
    assert_eq!(found.quic.len(), 1);
    assert_eq!(found.quic[0].port(), 4433);
    assert!(!found.quic[0].ip().is_unspecified());
    println!("mdns: cache found at {:?}", found.quic);
    device.shutdown().await;
    cache.shutdown().await;
}
