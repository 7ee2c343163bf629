//! Storage: a peer killed mid-transfer restarts consistent; a chunk damaged on disk is never
//! served.

use ota_core::digest::ChunkId;

use crate::support::{Peer, Upstream, chunks, fetch_all, runtime};

/// SIGKILL while chunks are being written, restart: every chunk served afterwards is right, and
/// what the restarted peer holds is what its files hold.
#[test]
fn killed_mid_transfer_restarts_with_a_consistent_store() {
    let rt = runtime();
    let blobs = chunks(4, 96, 64 * 1024);
    let ids: Vec<ChunkId> = blobs.iter().map(|(id, _)| *id).collect();
    let _guard = rt.enter();
    let up = Upstream::start(4, &blobs);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("peer");
    // A slow budget so the kill lands mid-transfer.
    let flags = [
        "--upstream-rate",
        "1000000",
        "--upstream-burst",
        "262144",
        "--no-prefetch",
    ];
    let mut peer = Peer::start(&data, &up, &flags);
    rt.block_on(async {
        let client = peer.client().await;
        let ids = ids.clone();
        let fetch = tokio::spawn(async move { fetch_all(&client, &ids).await });
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        peer.kill();
        let _ = fetch.await;
    });
    let before = up.bytes();
    assert!(before > 0, "something was pulled before the kill");
    assert!(
        before < 96 * 64 * 1024,
        "the kill landed before the transfer ended"
    );
    let peer = Peer::start(&data, &up, &["--no-prefetch"]);
    let held = peer.stat("stored_bytes");
    assert!(held > 0, "the restarted peer kept what it had stored");
    rt.block_on(async {
        let client = peer.client().await;
        let (got, missing) = fetch_all(&client, &ids).await;
        assert!(missing.is_empty());
        for (id, bytes) in &blobs {
            assert_eq!(&got[id], bytes);
        }
    });
    // What it held was not fetched again.
    assert_eq!(peer.stat("hits"), held / (64 * 1024));
    assert_eq!(peer.stat("store_damaged"), 0);
}

/// A chunk whose file is overwritten on disk (same length, other bytes) is detected when
/// read, never served, dropped, and fetched again on the next request.
#[test]
fn chunk_damaged_on_disk_is_never_served() {
    let rt = runtime();
    let blobs = chunks(5, 2, 64 * 1024);
    let (id, good) = blobs[0].clone();
    let _guard = rt.enter();
    let up = Upstream::start(5, &blobs);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("peer");
    let mut peer = Peer::start(&data, &up, &["--no-prefetch"]);
    rt.block_on(async {
        let client = peer.client().await;
        let (got, _) = fetch_all(&client, &[id]).await;
        assert_eq!(got[&id], good);
    });
    peer.kill();
    let file = ota_peer::store::Store::chunk_file(&data, &id);
    let mut damaged = std::fs::read(&file).unwrap();
    damaged[100] ^= 0x55;
    std::fs::write(&file, &damaged).unwrap();

    let peer = Peer::start(&data, &up, &["--no-prefetch"]);
    rt.block_on(async {
        let client = peer.client().await;
        let (got, missing) = fetch_all(&client, &[id]).await;
        assert_eq!(missing, [id], "damaged bytes are not served");
        assert!(got.is_empty());
        assert_eq!(peer.stat("store_damaged"), 1);
        let (got, missing) = fetch_all(&client, &[id]).await;
        assert!(missing.is_empty());
        assert_eq!(got[&id], good);
    });
    assert_eq!(up.sent(&id), 2, "fetched again after the damage");
}
