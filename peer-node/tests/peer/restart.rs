//! A peer killed and restarted on the same address resets the connections it lost at once
//! (QUIC stateless reset with the secret kept in its data directory), so its clients reconnect
//! instead of waiting out their idle timeout.

use std::net::SocketAddr;
use std::time::Duration;

use ota_core::digest::ChunkId;
use ota_net::client::{Client, ClientConfig, ClientError, Connector};
use ota_net::proto::MAX_CHUNK_BLOB_LEN;

use crate::support::{Peer, Upstream, chunks, fetch_all, runtime};

/// A client whose idle timeout is short, so that the control case (no reset) ends soon.
async fn client(peer: &Peer) -> Client {
    let mut config = ClientConfig::default();
    config.transport.idle_timeout = Duration::from_secs(3);
    config.transport.keep_alive_interval = Some(Duration::from_secs(1));
    config.stall_timeout = Duration::from_secs(20);
    let connector = Connector::bind(SocketAddr::from(([127, 0, 0, 1], 0)), config).unwrap();
    connector.connect(peer.quic, peer.pin).await.unwrap()
}

/// What a request on `client`'s old connection ends with once the peer is gone.
async fn request_after_restart(client: &Client, id: ChunkId) -> ClientError {
    let result = async {
        let mut stream = client.blobs(vec![id], MAX_CHUNK_BLOB_LEN).await?;
        while let Some(item) = stream.next().await {
            item?;
        }
        Ok::<(), ClientError>(())
    }
    .await;
    result.expect_err("the old connection cannot serve after a restart")
}

#[test]
fn restarted_peer_resets_the_connections_it_lost() {
    let rt = runtime();
    let blobs = chunks(9, 2, 16 * 1024);
    let (id, good) = blobs[0].clone();
    let _guard = rt.enter();
    let up = Upstream::start(9, &blobs);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("peer");
    let mut peer = Peer::start(&data, &up, &["--no-prefetch"]);
    let listen = peer.quic.to_string();
    let secret = data.join("quic-reset.key");
    assert_eq!(std::fs::read(&secret).unwrap().len(), 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the reset secret is private");
    }
    let kept = std::fs::read(&secret).unwrap();

    // 1. Killed and restarted with its secret: the old connection ends with a stateless reset.
    let old = rt.block_on(async {
        let old = client(&peer).await;
        let (got, _) = fetch_all(&old, &[id]).await;
        assert_eq!(got[&id], good);
        old
    });
    peer.kill();
    let peer = Peer::start_with(&data, &up, &listen, &["--no-prefetch"], None);
    assert_eq!(std::fs::read(&secret).unwrap(), kept, "the secret is kept");
    rt.block_on(async {
        match request_after_restart(&old, id).await {
            ClientError::Connection {
                source: quinn::ConnectionError::Reset,
                ..
            } => {}
            other => panic!("expected a stateless reset, got {other}"),
        }
        // A new connection to the restarted peer is served.
        let fresh = client(&peer).await;
        let (got, _) = fetch_all(&fresh, &[id]).await;
        assert_eq!(got[&id], good);
    });

    // 2. The control: restarted without its secret (a new one is made), the peer cannot
    //    reset what it lost, and the old connection ends only at the client's idle timeout.
    let old = rt.block_on(client(&peer));
    let mut peer = peer;
    peer.kill();
    std::fs::remove_file(&secret).unwrap();
    let _peer = Peer::start_with(&data, &up, &listen, &["--no-prefetch"], None);
    assert_ne!(std::fs::read(&secret).unwrap(), kept);
    rt.block_on(async {
        match request_after_restart(&old, id).await {
            ClientError::Connection {
                source: quinn::ConnectionError::TimedOut,
                ..
            } => {}
            other => panic!("expected the idle timeout without the secret, got {other}"),
        }
    });
}
