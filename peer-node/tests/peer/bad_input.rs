//! Hostile clients: one asks for as many unknown chunks as the protocol lets it, one never
//! reads its answers, one sends garbage. Meanwhile an honest client is served in full, and
//! each offender is logged with its address and the reason, once per kind of offence.
//! A stalling upstream: the peer fails the stalled requests after its stall bound and keeps
//! serving the rest.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ota_core::digest::ChunkId;
use ota_net::client::{Client, ClientConfig, Connector};
use ota_net::proto::MAX_CHUNK_BLOB_LEN;
use ota_net::quic::{TransportLimits, client_config};

use crate::support::{Peer, Upstream, chunks, fetch_all, runtime};

/// A client from its own socket on 127.0.0.1, so the test knows the address the peer sees.
async fn client_at(peer: &Peer) -> (Client, SocketAddr) {
    let connector = Connector::bind(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        ClientConfig::default(),
    )
    .unwrap();
    let addr = connector.local_addr().unwrap();
    (connector.connect(peer.quic, peer.pin).await.unwrap(), addr)
}

/// The lines of `log` that name `addr` as an offender for `reason`.
fn offender_lines(log: &str, addr: SocketAddr, reason: &str) -> usize {
    let needle = format!("offending client: {addr}: {reason}");
    log.lines().filter(|l| l.contains(&needle)).count()
}

#[test]
fn hostile_clients_do_not_stop_an_honest_one() {
    let rt = runtime();
    let blobs = chunks(6, 64, 64 * 1024);
    let ids: Vec<ChunkId> = blobs.iter().map(|(id, _)| *id).collect();
    let _guard = rt.enter();
    let up = Upstream::start(6, &blobs);
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("peer.log");
    let log = std::fs::File::create(&log_path).unwrap();
    // A short stall bound, so the client that never reads is caught soon.
    let peer = Peer::start_with(
        &dir.path().join("peer"),
        &up,
        "127.0.0.1:0",
        &["--no-prefetch", "--stall-timeout-secs", "3"],
        Some(log),
    );
    let (flood_addr, sleeper_addr, garbage_addr) = rt.block_on(async {
        // 1. Floods: 32 streams of 1024 ids nobody holds (the protocol's most per request and
        //    per connection), over and over.
        let (flooder, flood_addr) = client_at(&peer).await;
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
        let (sleeper, sleeper_addr) = client_at(&peer).await;
        let mut held = Vec::new();
        for _ in 0..32 {
            if let Ok(s) = sleeper.blobs(ids.clone(), MAX_CHUNK_BLOB_LEN).await {
                held.push(s);
            }
        }
        // 3. Garbage: raw QUIC streams with bytes that are no request.
        let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let garbage_addr = endpoint.local_addr().unwrap();
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
        // Each offender is logged, with its address and reason, once the peer has seen it.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&log_path).unwrap();
            let seen = [
                offender_lines(&text, flood_addr, "asks for many blobs nobody holds"),
                offender_lines(&text, sleeper_addr, "does not read its answers"),
                offender_lines(&text, garbage_addr, "malformed request"),
                offender_lines(&text, garbage_addr, "request over the size bound"),
            ];
            if seen.iter().all(|n| *n > 0) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "offenders not all logged: {seen:?}\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        flood.abort();
        drop(held);
        drop(conn);
        (flood_addr, sleeper_addr, garbage_addr)
    });
    // The peer is still up and answering.
    let stats = peer.stats();
    assert!(stats["blobs_missing"].as_u64().unwrap() > 0, "{stats}");
    // Once per connection and kind: the garbage client sent about five streams of each kind of
    // garbage and the flooder tens of thousands of unknown ids, each logged once.
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(
        offender_lines(&text, garbage_addr, "malformed request"),
        1,
        "{text}"
    );
    assert_eq!(
        offender_lines(&text, garbage_addr, "request over the size bound"),
        1
    );
    assert_eq!(
        offender_lines(&text, flood_addr, "asks for many blobs nobody holds"),
        1
    );
    assert_eq!(
        offender_lines(&text, sleeper_addr, "does not read its answers"),
        1
    );
    // The honest client and the others are never named.
    for addr in [flood_addr, sleeper_addr] {
        assert_eq!(offender_lines(&text, addr, "malformed request"), 0);
    }
}

/// An upstream that accepts a request for one chunk and never answers it: the device asking
/// for that chunk gets `Missing` once the peer's stall bound has passed, while another device
/// is served the cached chunks and a chunk the upstream does answer, meanwhile.
#[test]
fn stalled_upstream_fails_its_requests_and_the_peer_serves_the_rest() {
    let rt = runtime();
    let blobs = chunks(11, 3, 64 * 1024);
    let (cached, cached_bytes) = blobs[0].clone();
    let (stalled, _) = blobs[1].clone();
    let (fresh, fresh_bytes) = blobs[2].clone();
    let _guard = rt.enter();
    let up = Upstream::start(11, &blobs);
    up.handler.0.lock().unwrap().stall.insert(stalled);
    let dir = tempfile::tempdir().unwrap();
    let peer = Peer::start(
        &dir.path().join("peer"),
        &up,
        &["--no-prefetch", "--stall-timeout-secs", "2"],
    );
    rt.block_on(async {
        let warm = peer.client().await;
        let (got, _) = fetch_all(&warm, &[cached]).await;
        assert_eq!(got[&cached], cached_bytes);

        let victim = peer.client().await;
        let waiting = tokio::spawn(async move { fetch_all(&victim, &[stalled]).await });
        // Wait until the upstream has the stalled request, then ask for the rest.
        let deadline = Instant::now() + Duration::from_secs(20);
        while up.handler.0.lock().unwrap().stalled == 0 {
            assert!(
                Instant::now() < deadline,
                "the stalled request never reached upstream"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let other = peer.client().await;
        let (got, missing) = fetch_all(&other, &[cached, fresh]).await;
        assert!(missing.is_empty());
        assert_eq!(got[&cached], cached_bytes);
        assert_eq!(got[&fresh], fresh_bytes);
        assert!(
            !waiting.is_finished(),
            "the other device was served while the stalled request still waited"
        );
        // The stalled request fails after the bound (2 s, well within this generous limit).
        let (got, missing) = tokio::time::timeout(Duration::from_secs(60), waiting)
            .await
            .expect("the stalled request is failed after the peer's bound")
            .unwrap();
        assert!(got.is_empty());
        assert_eq!(missing, [stalled]);
    });
    assert!(peer.stat("upstream_failures") >= 1);
    assert_eq!(peer.stat("verification_failures"), 0);
}

/// Two upstreams, the first of which stalls on a chunk: after the stall bound the peer sets it
/// aside and asks the second, and the device waiting for that chunk is served it.
#[test]
fn stalled_upstream_is_set_aside_and_the_next_one_serves_the_chunk() {
    let rt = runtime();
    let blobs = chunks(13, 2, 64 * 1024);
    let (stalled, good) = blobs[0].clone();
    let _guard = rt.enter();
    let staller = Upstream::start(13, &blobs);
    staller.handler.0.lock().unwrap().stall.insert(stalled);
    let honest = Upstream::start(14, &blobs);
    let dir = tempfile::tempdir().unwrap();
    let peer = Peer::start(
        &dir.path().join("peer"),
        &staller,
        &[
            "--no-prefetch",
            "--stall-timeout-secs",
            "2",
            "--upstream",
            &staller.arg(),
            "--upstream",
            &honest.arg(),
        ],
    );
    rt.block_on(async {
        let client = peer.client().await;
        let (got, missing) =
            tokio::time::timeout(Duration::from_secs(60), fetch_all(&client, &[stalled]))
                .await
                .expect("served after the stall bound");
        assert!(
            missing.is_empty(),
            "the next upstream serves the stalled chunk"
        );
        assert_eq!(got[&stalled], good);
    });
    assert_eq!(staller.handler.0.lock().unwrap().stalled, 1);
    assert_eq!(staller.sent(&stalled), 0);
    assert_eq!(honest.sent(&stalled), 1);
    assert_eq!(peer.stat("upstream_failures"), 1);
}
