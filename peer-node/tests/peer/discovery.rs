//! Devices find the peer with no configuration: by mDNS where the host has multicast, and by
//! a static bootstrap address everywhere; what they find (QUIC address and certificate pin)
//! is enough to fetch from it.

use std::time::{Duration, Instant};

use ota_net::client::Client;
use ota_net::discovery::{CacheVia, Discovery, DiscoveryConfig, FoundCache, Role};

use crate::support::{Peer, Upstream, chunks, fetch_all, runtime};

async fn wait_for_cache(
    handle: &ota_net::discovery::DiscoveryHandle,
    within: Duration,
) -> Option<FoundCache> {
    let start = Instant::now();
    while start.elapsed() < within {
        if let Some(found) = handle.caches().into_iter().next() {
            return Some(found);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[test]
fn a_device_finds_the_peer_and_fetches_from_what_it_found() {
    let rt = runtime();
    let blobs = chunks(7, 3, 16 * 1024);
    let _guard = rt.enter();
    let up = Upstream::start(7, &blobs);
    let dir = tempfile::tempdir().unwrap();
    let peer = Peer::start(
        &dir.path().join("peer"),
        &up,
        &[
            "--no-prefetch",
            "--discovery",
            "127.0.0.1:0",
            "--discovery-role",
            "site",
        ],
    );
    assert!(
        !peer.discovery.is_empty(),
        "the ready file names the discovery addresses"
    );
    rt.block_on(async {
        // mDNS: multicast on the host's non-loopback interfaces, if it has any that carry it.
        let (mdns_node, _events) = Discovery::spawn(DiscoveryConfig::device()).await.unwrap();
        match wait_for_cache(&mdns_node, Duration::from_secs(5)).await {
            Some(found) => {
                assert_eq!(found.via, CacheVia::Mdns);
                assert_eq!(found.pin, peer.pin);
                println!("found the peer by mDNS at {:?}", found.quic);
            }
            None => println!(
                "mDNS found nothing within 5 s: this host has no multicast-capable interface \
                 the test can use; checking static discovery instead"
            ),
        }
        mdns_node.shutdown().await;

        // Static: the device is given the peer's discovery address.
        let mut config = DiscoveryConfig::device();
        config.mdns = false;
        config.bootstrap = vec![peer.discovery[0].parse().unwrap()];
        let (node, _events) = Discovery::spawn(config).await.unwrap();
        let found = wait_for_cache(&node, Duration::from_secs(20))
            .await
            .expect("the peer is found from its bootstrap address");
        assert_eq!(found.via, CacheVia::Bootstrap);
        assert_eq!(found.pin, peer.pin);
        assert_eq!(found.role, Role::SiteCache);
        assert!(
            found.quic.contains(&peer.quic),
            "{:?} vs {}",
            found.quic,
            peer.quic
        );

        let client = Client::connect(found.quic[0], found.pin).await.unwrap();
        let ids: Vec<_> = blobs.iter().map(|(id, _)| *id).collect();
        let (got, missing) = fetch_all(&client, &ids).await;
        assert!(missing.is_empty());
        assert_eq!(got.len(), 3);
        node.shutdown().await;
    });
}
