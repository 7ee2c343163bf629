//! Single flight, the upstream budget, and an upstream that lies.

use std::time::Instant;

use ota_core::digest::ChunkId;

use crate::support::{Peer, Upstream, chunks, fetch_all, runtime};

/// 20 clients want the same 160 chunks (10 MiB) at once, through a peer whose upstream budget is
/// 4 MB/s: each chunk crosses the uplink once, every client gets every byte right.
#[test]
fn twenty_clients_one_upstream_fetch_per_chunk() {
    let rt = runtime();
    let blobs = chunks(1, 160, 64 * 1024);
    let ids: Vec<ChunkId> = blobs.iter().map(|(id, _)| *id).collect();
    let unique: u64 = blobs.iter().map(|(_, b)| b.len() as u64).sum();
    let _guard = rt.enter();
    let up = Upstream::start(1, &blobs);
    let dir = tempfile::tempdir().unwrap();
    let rate = 4_000_000u64;
    let burst = 1_048_576u64;
    let peer = Peer::start(
        &dir.path().join("peer"),
        &up,
        &[
            "--upstream-rate",
            &rate.to_string(),
            "--upstream-burst",
            &burst.to_string(),
            "--no-prefetch",
        ],
    );
    let started = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..20 {
            let client = peer.client().await;
            let mut order = ids.clone();
            order.rotate_left(i * 8);
            tasks.push(tokio::spawn(
                async move { fetch_all(&client, &order).await },
            ));
        }
        for task in tasks {
            let (got, missing) = task.await.unwrap();
            assert!(missing.is_empty(), "{} chunks missing", missing.len());
            assert_eq!(got.len(), blobs.len());
            for (id, bytes) in &blobs {
                assert_eq!(&got[id], bytes);
            }
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    for id in &ids {
        assert_eq!(
            up.sent(id),
            1,
            "chunk {id} crossed the uplink more than once"
        );
    }
    assert_eq!(up.bytes(), unique);
    assert_eq!(peer.stat("bytes_up"), unique);
    assert_eq!(peer.stat("bytes_served"), 20 * unique);
    // `ota-peer status` reports the same, from the stats file the peer rewrites every second.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ota-peer"))
        .args(["status", "--json", "--data"])
        .arg(&peer.data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["bytes_up"], unique);
    assert_eq!(status["bytes_served"], 20 * unique);
    let text = std::process::Command::new(env!("CARGO_BIN_EXE_ota-peer"))
        .args(["status", "--data"])
        .arg(&peer.data)
        .output()
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains(&format!("pulled:   {unique} bytes")),
        "{text}"
    );
    // Unknown lengths are budgeted as the largest default chunk (256 KiB), so the budget is
    // never exceeded: bytes pulled <= burst + rate x time.
    let allowed = burst as f64 + rate as f64 * elapsed;
    assert!(
        (up.bytes() as f64) <= allowed,
        "pulled {} bytes in {elapsed:.2} s, budget allows {allowed:.0}",
        up.bytes()
    );
}

/// The first upstream flips a byte of one chunk: the peer never stores or serves it, counts and
/// logs it, sets that upstream aside, and the next request is served from the second upstream.
#[test]
fn corrupt_upstream_chunk_is_never_served_and_another_upstream_is_used() {
    let rt = runtime();
    let blobs = chunks(2, 4, 32 * 1024);
    let bad = blobs[1].0;
    let _guard = rt.enter();
    let liar = Upstream::start(2, &blobs);
    liar.handler.0.lock().unwrap().corrupt.insert(bad);
    let honest = Upstream::start(3, &blobs);
    let dir = tempfile::tempdir().unwrap();
    let peer = Peer::start(
        &dir.path().join("peer"),
        &liar,
        &[
            "--upstream",
            &liar.arg(),
            "--upstream",
            &honest.arg(),
            "--no-prefetch",
        ],
    );
    rt.block_on(async {
        let client = peer.client().await;
        let ids: Vec<ChunkId> = blobs.iter().map(|(id, _)| *id).collect();
        // The liar's copy is caught and never stored; the liar is set aside and the honest
        // upstream asked for the chunk within the same request, so the client gets it.
        let (got, missing) = fetch_all(&client, &ids).await;
        assert!(
            missing.is_empty(),
            "the corrupt chunk is fetched again elsewhere"
        );
        assert_eq!(got.len(), 4);
        assert_eq!(got[&bad], blobs[1].1);
        assert_eq!(peer.stat("verification_failures"), 1);
        assert_eq!(honest.sent(&bad), 1);
        assert_eq!(liar.sent(&bad), 1);
        // Asked again: served from the store, from neither upstream.
        let (got, missing) = fetch_all(&client, &[bad]).await;
        assert!(missing.is_empty());
        assert_eq!(got[&bad], blobs[1].1);
        assert_eq!(honest.sent(&bad), 1);
        assert_eq!(liar.sent(&bad), 1);
    });
}
