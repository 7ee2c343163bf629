//! A source's connection is dialled again after it is lost, and the pin is checked at every
//! dial: a server that took the address with another certificate is refused each time (and
//! the source is not banned for it: the scheduler backs off and dials again), and the pinned
//! server, once back at the address, is used again.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ota_core::digest::ChunkId;
use ota_core::fetch::{SourceId, SourceKind};
use ota_device::source::{Event, QuicLink, Source, Transport};
use ota_net::client::Client;
use ota_net::proto::{MAX_CHUNK_BLOB_LEN, Nonce, Refusal, SignedKind, SignedRequest};
use ota_net::quic::{Identity, NodeKey};
use ota_net::server::{ConnInfo, Handler, Server, ServerConfig};

/// Serves one blob; refuses everything else.
#[derive(Debug, Clone)]
struct OneBlob(Bytes);

impl Handler for OneBlob {
    async fn challenge(&self, _conn: &ConnInfo) -> Result<Nonce, Refusal> {
        Err(Refusal::new(Refusal::NOT_SUPPORTED, "test server"))
    }

    async fn signed(
        &self,
        _conn: &ConnInfo,
        _kind: SignedKind,
        _request: SignedRequest,
    ) -> Result<Vec<u8>, Refusal> {
        Err(Refusal::new(Refusal::NOT_SUPPORTED, "test server"))
    }

    async fn metadata(&self, _conn: &ConnInfo, _name: &str) -> Option<Bytes> {
        None
    }

    async fn blob(&self, _conn: &ConnInfo, id: &ChunkId) -> Option<Bytes> {
        (ChunkId::of(&self.0) == *id).then(|| self.0.clone())
    }
}

/// A server with the key made from `seed`, on `addr` (retried while the port is still held by
/// the server just dropped).
async fn serve(seed: u8, addr: SocketAddr, blob: &Bytes) -> Server {
    let identity = Identity::from_node_key(&NodeKey::from_seed([seed; 32])).unwrap();
    let start = Instant::now();
    loop {
        match Server::bind(
            addr,
            &identity,
            ServerConfig::default(),
            OneBlob(blob.clone()),
        ) {
            Ok(server) => return server,
            Err(error) if start.elapsed() < Duration::from_secs(10) => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("cannot bind {addr}: {error}"),
        }
    }
}

/// Asks `source` for `id` and waits for what becomes of it: the events, last the outcome.
async fn ask(source: &Source, id: ChunkId) -> Vec<Event> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    source.spawn_request(vec![id], MAX_CHUNK_BLOB_LEN, tx);
    let mut events = Vec::new();
    while let Some(event) = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("the request neither delivered nor failed within 20 s")
    {
        let done = !matches!(event, Event::Redialled { .. });
        events.push(event);
        if done {
            break;
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_another_certificate_at_the_address_is_refused_at_every_dial() {
    let blob = Bytes::from_static(b"a chunk of the release");
    let id = ChunkId::of(&blob);
    let pinned = serve(1, "127.0.0.1:0".parse().unwrap(), &blob).await;
    let (addr, pin) = (pinned.local_addr(), pinned.pin());
    let client = Client::connect(addr, pin).await.unwrap();
    let source = Source {
        id: SourceId(7),
        kind: SourceKind::LanPeer,
        name: format!("peer {addr}"),
        transport: Transport::Quic(QuicLink::new(client, pin)),
    };
    let delivered = |events: &[Event]| matches!(events.last(), Some(Event::Blob { id: got, bytes, .. }) if *got == id && *bytes == blob);
    assert!(delivered(&ask(&source, id).await));

    // The pinned server goes; the request on its closed connection fails, and marks it lost.
    drop(pinned);
    let events = ask(&source, id).await;
    assert!(
        matches!(
            events.last(),
            Some(Event::Failed {
                misbehaved: false,
                ..
            })
        ),
        "{events:?}"
    );

    // Another server takes the address, with a certificate of its own: refused at each dial,
    // as a source that cannot be reached now (not banned), and nothing is asked of it.
    let impostor = serve(2, addr, &blob).await;
    for _ in 0..3 {
        let events = ask(&source, id).await;
        match events.last() {
            Some(Event::Failed {
                reason,
                misbehaved: false,
                ..
            }) => assert!(
                reason.contains(&format!(
                    "presented certificate {}, but {pin} is pinned",
                    impostor.pin()
                )),
                "{reason}"
            ),
            other => panic!("the impostor was not refused: {other:?} ({events:?})"),
        }
        assert!(
            !events.iter().any(|e| matches!(e, Event::Redialled { .. })),
            "{events:?}"
        );
    }

    // The pinned server is back at the address: dialled again, and it delivers.
    drop(impostor);
    let _pinned = serve(1, addr, &blob).await;
    let events = ask(&source, id).await;
    assert!(
        matches!(events.first(), Some(Event::Redialled { source }) if *source == SourceId(7)),
        "{events:?}"
    );
    assert!(delivered(&events), "{events:?}");
}
