//! Hostile clients: one asks for as many unknown chunks as the protocol lets it, one never
//! reads its answers, one sends garbage. Meanwhile an honest client is served in full.

use std::time::Duration;

use ota_core::digest::ChunkId;
use ota_net::proto::MAX_CHUNK_BLOB_LEN;
use ota_net::quic::{TransportLimits, client_config};

use crate::support::{Peer, Upstream, chunks, fetch_all, runtime};

#[test]
fn hostile_clients_do_not_stop_an_honest_one() {
    let rt = runtime();
    let blobs = chunks(6, 64, 64 * 1024);
    let ids: Vec<ChunkId> = blobs.iter().map(|(id, _)| *id).collect();
    let _guard = rt.enter();
    let up = Upstream::start(6, &blobs);
    let dir = tempfile::tempdir().unwrap();
    let peer = Peer::start(&dir.path().join("peer"), &up, &["--no-prefetch"]);
    rt.block_on(async {
        // 1. Floods: 32 streams of 1024 ids nobody holds (the protocol's most per request and
        //    per connection), over and over.
        let flooder = peer.client().await;
        let flood = tokio::spawn(async move {
            let mut n = 0u64;
            loop {
                let mut set = Vec::new();
                for _ in 0..32 {
                    let ids: Vec<ChunkId> = (0..1024)
                        .map(|_| {
                            n += 1;
                            ChunkId::of(&n.to_le_bytes())
                        })
                        .collect();
                    let c = flooder.clone();
                    set.push(tokio::spawn(async move {
                        if let Ok(mut s) = c.blobs(ids, MAX_CHUNK_BLOB_LEN).await {
                            while let Some(Ok(_)) = s.next().await {}
                        }
                    }));
                }
                for t in set {
                    let _ = t.await;
                }
            }
        });
        // 2. Never reads: asks for every real chunk on 32 streams and holds them.
        let sleeper = peer.client().await;
        let mut held = Vec::new();
        for _ in 0..32 {
            if let Ok(s) = sleeper.blobs(ids.clone(), MAX_CHUNK_BLOB_LEN).await {
                held.push(s);
            }
        }
        // 3. Garbage: raw QUIC streams with bytes that are no request.
        let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let config = client_config(peer.pin, &TransportLimits::default()).unwrap();
        let conn = endpoint
            .connect_with(config, peer.quic, ota_net::quic::SERVER_NAME)
            .unwrap()
            .await
            .unwrap();
        for i in 0..16u8 {
            let (mut send, _recv) = conn.open_bi().await.unwrap();
            let garbage: Vec<u8> = match i % 3 {
                0 => vec![0xff; 64],                                // a 4 GiB length prefix
                1 => [&8u32.to_le_bytes()[..], &[9u8; 8]].concat(), // no such request tag
                _ => vec![1, 2, 3],                                 // truncated
            };
            let _ = send.write_all(&garbage).await;
            let _ = send.finish();
        }

        // The honest client is served in full while all that goes on.
        let honest = peer.client().await;
        let (got, missing) =
            tokio::time::timeout(Duration::from_secs(60), fetch_all(&honest, &ids))
                .await
                .expect("the honest client is served");
        assert!(missing.is_empty());
        for (id, bytes) in &blobs {
            assert_eq!(&got[id], bytes);
        }
        flood.abort();
        drop(held);
    });
    // The peer is still up and answering.
    let stats = peer.stats();
    assert!(stats["blobs_missing"].as_u64().unwrap() > 0, "{stats}");
}
