//! A raw quinn server that answers with scripted bytes, to show that the client refuses each
//! way of breaking the protocol and names the server.

use std::net::SocketAddr;
use std::sync::Arc;

use ota_core::digest::ChunkId;
use ota_net::client::{Client, ClientError, Misbehaviour};
use ota_net::proto::{
    MAX_BLOB_LEN, MAX_REQUEST_LEN, MAX_RESPONSE_HEADER_LEN, MessageKind, Nonce, Request, Response,
    WireError,
};
use ota_net::quic::{self, CertPin, TransportLimits};

use crate::support::{blob, identity, loopback};

/// A server that answers every request with `script(request)`, written raw.
struct Scripted {
    addr: SocketAddr,
    pin: CertPin,
    _task: tokio::task::JoinHandle<()>,
}

fn scripted(script: impl Fn(&Request) -> Vec<u8> + Send + Sync + 'static) -> Scripted {
    let identity = identity(7);
    let config = quic::server_config(&identity, &TransportLimits::default()).unwrap();
    let endpoint = quinn::Endpoint::server(config, loopback()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let script = Arc::new(script);
    let task = tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let script = script.clone();
            tokio::spawn(async move {
                let Ok(connection) = incoming.await else {
                    return;
                };
                while let Ok((mut send, mut recv)) = connection.accept_bi().await {
                    let raw = recv
                        .read_to_end(4 + MAX_REQUEST_LEN as usize)
                        .await
                        .unwrap();
                    let (request, _) = Request::decode_frame(&raw).unwrap();
                    let answer = script(&request);
                    send.write_all(&answer).await.unwrap();
                    send.finish().unwrap();
                    // Keep the stream until the client is done with it.
                    let _ = send.stopped().await;
                }
            });
        }
    });
    Scripted {
        addr,
        pin: identity.pin(),
        _task: task,
    }
}

/// A header frame written without the encoder's bound checks, as a hostile server would.
fn raw_frame(response: &Response) -> Vec<u8> {
    let message = postcard::to_allocvec(response).unwrap();
    let mut out = (message.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&message);
    out
}

fn ids_of(request: &Request) -> Vec<ChunkId> {
    match request {
        Request::GetBlobs { ids, .. } => ids.clone(),
        other => panic!("unexpected {other:?}"),
    }
}

async fn first_error(server: &Scripted, ids: Vec<ChunkId>, max_len: u32) -> (usize, ClientError) {
    let client = Client::connect(server.addr, server.pin).await.unwrap();
    let mut stream = client.blobs(ids, max_len).await.unwrap();
    let mut good = 0;
    while let Some(item) = stream.next().await {
        match item {
            Ok(_) => good += 1,
            Err(e) => {
                assert!(stream.next().await.is_none(), "nothing after an error");
                return (good, e);
            }
        }
    }
    panic!("the stream ended without an error after {good} items");
}

fn misbehaviour(server: &Scripted, error: ClientError) -> Misbehaviour {
    assert_eq!(error.blamed_peer(), Some(server.addr));
    match error {
        ClientError::PeerMisbehaved { peer, misbehaviour } => {
            assert_eq!(peer, server.addr, "the error names the server");
            misbehaviour
        }
        other => panic!("expected PeerMisbehaved, got {other:?}"),
    }
}

#[tokio::test]
async fn blob_length_over_the_requested_bound() {
    let server = scripted(|request| {
        let id = ids_of(request)[0];
        let mut out = raw_frame(&Response::Blob { id, len: 1001 });
        out.extend_from_slice(&[0; 1001]);
        out
    });
    let (good, error) = first_error(&server, vec![ChunkId::of(b"a")], 1000).await;
    assert_eq!(good, 0);
    match misbehaviour(&server, error) {
        Misbehaviour::OverBound {
            len: 1001,
            max: 1000,
            ..
        } => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn blob_length_over_the_protocol_bound_is_refused_at_decoding() {
    let server = scripted(|request| {
        let id = ids_of(request)[0];
        // Announces 4 GiB and sends nothing: the client must refuse before allocating.
        raw_frame(&Response::Blob { id, len: u32::MAX })
    });
    let (_, error) = first_error(&server, vec![ChunkId::of(b"a")], MAX_BLOB_LEN).await;
    match misbehaviour(&server, error) {
        Misbehaviour::Wire(WireError::OutOfBounds { field: "len", .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn header_frame_over_its_bound() {
    let server = scripted(|_| (MAX_RESPONSE_HEADER_LEN + 1).to_le_bytes().to_vec());
    let (_, error) = first_error(&server, vec![ChunkId::of(b"a")], 1000).await;
    assert_eq!(
        misbehaviour(&server, error),
        Misbehaviour::Wire(WireError::FrameTooLong {
            what: MessageKind::ResponseHeader,
            len: MAX_RESPONSE_HEADER_LEN + 1,
            max: MAX_RESPONSE_HEADER_LEN,
        })
    );
}

#[tokio::test]
async fn more_bytes_than_announced() {
    let server = scripted(|request| {
        let ids = ids_of(request);
        let mut out = raw_frame(&Response::Blob {
            id: ids[0],
            len: 10,
        });
        out.extend_from_slice(&blob(30, 1)); // 20 bytes too many
        out.extend_from_slice(&raw_frame(&Response::Missing { id: ids[1] }));
        out.extend_from_slice(&raw_frame(&Response::End));
        out
    });
    let ids = vec![ChunkId::of(b"a"), ChunkId::of(b"b")];
    let (good, error) = first_error(&server, ids, 1000).await;
    // The first blob is exactly the 10 bytes announced; the surplus is read as the next
    // frame, which is garbage.
    assert_eq!(good, 1);
    assert!(matches!(
        misbehaviour(&server, error),
        Misbehaviour::Wire(_) | Misbehaviour::Truncated { .. }
    ));
}

#[tokio::test]
async fn more_bytes_after_the_end() {
    let server = scripted(|request| {
        let id = ids_of(request)[0];
        let mut out = raw_frame(&Response::Missing { id });
        out.extend_from_slice(&raw_frame(&Response::End));
        out.push(0);
        out
    });
    let (good, error) = first_error(&server, vec![ChunkId::of(b"a")], 1000).await;
    assert_eq!(good, 1);
    assert_eq!(misbehaviour(&server, error), Misbehaviour::TrailingBytes);
}

#[tokio::test]
async fn fewer_bytes_than_announced() {
    let server = scripted(|request| {
        let id = ids_of(request)[0];
        let mut out = raw_frame(&Response::Blob { id, len: 100 });
        out.extend_from_slice(&[1; 50]);
        out
    });
    let (_, error) = first_error(&server, vec![ChunkId::of(b"a")], 1000).await;
    assert_eq!(
        misbehaviour(&server, error),
        Misbehaviour::Truncated {
            have: 50,
            need: 100
        }
    );
}

#[tokio::test]
async fn blobs_out_of_order_or_ending_early() {
    let server = scripted(|request| {
        let ids = ids_of(request);
        let mut out = raw_frame(&Response::Missing { id: ids[1] });
        out.extend_from_slice(&raw_frame(&Response::End));
        out
    });
    let (a, b) = (ChunkId::of(b"a"), ChunkId::of(b"b"));
    let (_, error) = first_error(&server, vec![a, b], 1000).await;
    assert_eq!(
        misbehaviour(&server, error),
        Misbehaviour::WrongId {
            expected: a,
            got: b
        }
    );

    let server = scripted(|request| {
        let ids = ids_of(request);
        let mut out = raw_frame(&Response::Missing { id: ids[0] });
        out.extend_from_slice(&raw_frame(&Response::End));
        out
    });
    let (good, error) = first_error(&server, vec![a, b], 1000).await;
    assert_eq!(good, 1);
    assert_eq!(
        misbehaviour(&server, error),
        Misbehaviour::EndedEarly { unanswered: 1 }
    );
}

#[tokio::test]
async fn metadata_over_the_requested_bound_and_wrong_answers() {
    let server = scripted(|request| match request {
        Request::GetMetadata { max_len, .. } => {
            let mut out = raw_frame(&Response::Metadata { len: max_len + 1 });
            out.extend_from_slice(&vec![b'x'; *max_len as usize + 1]);
            out
        }
        Request::Challenge => raw_frame(&Response::End),
        _ => raw_frame(&Response::Nonce(Nonce([0; 32]))),
    });
    let client = Client::connect(server.addr, server.pin).await.unwrap();
    let error = client.metadata("timestamp.json", 100).await.unwrap_err();
    assert!(matches!(
        misbehaviour(&server, error),
        Misbehaviour::OverBound {
            len: 101,
            max: 100,
            ..
        }
    ));
    let error = client.challenge().await.unwrap_err();
    assert_eq!(
        misbehaviour(&server, error),
        Misbehaviour::UnexpectedResponse {
            request: "Challenge",
            response: "End"
        }
    );
    // The connection survives a stream-level violation.
    let ids = vec![ChunkId::of(b"a")];
    let mut stream = client.blobs(ids, 10).await.unwrap();
    let error = stream.next().await.unwrap().unwrap_err();
    assert!(matches!(
        misbehaviour(&server, error),
        Misbehaviour::UnexpectedResponse {
            request: "GetBlobs",
            ..
        }
    ));
}

#[tokio::test]
async fn a_server_with_another_certificate_is_refused() {
    let server = scripted(|_| raw_frame(&Response::End));
    let pinned = identity(8).pin();
    match Client::connect(server.addr, pinned).await {
        Err(e @ ClientError::PinMismatch { .. }) => {
            assert_eq!(e.blamed_peer(), Some(server.addr));
        }
        other => panic!("expected a pin mismatch, got {other:?}"),
    }
}
