//! Clients that send too much, too little or never read: the server refuses them with the
//! documented error codes and keeps serving everyone else.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ota_core::digest::ChunkId;
use ota_net::client::{BlobStream, Client, ClientConfig, ClientError, Connector};
use ota_net::proto::{ErrorCode, MAX_CHUNK_BLOB_LEN, MAX_REQUEST_LEN};
use ota_net::quic::{self, SERVER_NAME, TransportLimits};
use ota_net::server::{Server, ServerConfig};
use quinn::{ReadError, ReadToEndError};

use crate::support::{TestHandler, blob, connect, loopback, start, start_with};

/// A raw quinn connection to `server`, for writing what our client never would.
async fn raw_connection(server: &Server) -> (quinn::Endpoint, quinn::Connection) {
    let endpoint = quinn::Endpoint::client(loopback()).unwrap();
    let config = quic::client_config(server.pin(), &TransportLimits::default()).unwrap();
    let connection = endpoint
        .connect_with(config, server.local_addr(), SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    (endpoint, connection)
}

/// Sends `bytes` on a new stream (finishing it if asked) and returns the code the server
/// reset its answer with.
async fn reset_code(connection: &quinn::Connection, bytes: &[u8], finish: bool) -> ErrorCode {
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    if finish {
        send.finish().unwrap();
    }
    match recv.read_to_end(1 << 20).await {
        Err(ReadToEndError::Read(ReadError::Reset(code))) => ErrorCode::from_varint(code),
        other => panic!("expected a reset, got {other:?}"),
    }
}

fn quick_server_config() -> ServerConfig {
    let mut config = ServerConfig::default();
    config.request_timeout = Duration::from_secs(1);
    config.stall_timeout = Duration::from_secs(1);
    config
}

#[tokio::test]
async fn bad_requests_are_reset_with_their_codes() {
    let handler = Arc::new(TestHandler::default());
    let server = start_with(&handler, quick_server_config());
    let (_endpoint, raw) = raw_connection(&server).await;

    // A length prefix one byte over the bound: refused from the prefix alone.
    let prefix = (MAX_REQUEST_LEN + 1).to_le_bytes();
    assert_eq!(
        reset_code(&raw, &prefix, false).await,
        ErrorCode::REQUEST_TOO_LARGE
    );
    // An unknown request tag.
    assert_eq!(
        reset_code(&raw, &[1, 0, 0, 0, 99], true).await,
        ErrorCode::MALFORMED
    );
    // A valid Challenge followed by a stray byte before the end of the stream.
    assert_eq!(
        reset_code(&raw, &[1, 0, 0, 0, 0, 0], true).await,
        ErrorCode::MALFORMED
    );
    // A frame cut short by the end of the stream.
    assert_eq!(
        reset_code(&raw, &[9, 0, 0, 0, 4], true).await,
        ErrorCode::MALFORMED
    );
    // A GetBlobs whose field breaks a bound: max_len 0.
    assert_eq!(
        reset_code(&raw, &[4, 0, 0, 0, 5, 0, 1, 7], true).await,
        ErrorCode::MALFORMED
    );
    // Half a prefix, then silence: the request deadline runs out.
    assert_eq!(reset_code(&raw, &[1, 0], false).await, ErrorCode::TIMEOUT);
    // A whole request but no end of stream: also the deadline.
    assert_eq!(
        reset_code(&raw, &[1, 0, 0, 0, 0], false).await,
        ErrorCode::TIMEOUT
    );

    // The same connection still gets answers to good requests.
    let (mut send, mut recv) = raw.open_bi().await.unwrap();
    send.write_all(&[1, 0, 0, 0, 0]).await.unwrap();
    send.finish().unwrap();
    let answer = recv.read_to_end(1024).await.unwrap();
    assert_eq!(&answer[..5], &[33, 0, 0, 0, 0], "a Nonce header");
}

#[tokio::test]
async fn a_client_that_never_reads_does_not_stop_another() {
    // Large blobs, so that the greedy client's unread answers fill every window.
    let blobs: Vec<Bytes> = (0..8)
        .map(|i| blob(MAX_CHUNK_BLOB_LEN as usize, i))
        .collect();
    let ids: Vec<ChunkId> = blobs.iter().map(|b| ChunkId::of(b)).collect();
    let handler = Arc::new(TestHandler::with_blobs(blobs.clone()));
    let server = start_with(&handler, quick_server_config());

    // The greedy client opens every stream the server allows and reads none of them.
    let greedy = connect(&server).await;
    let streams = TransportLimits::default().max_concurrent_streams;
    let mut unread: Vec<BlobStream> = Vec::new();
    for _ in 0..streams {
        unread.push(greedy.blobs(ids.clone(), MAX_CHUNK_BLOB_LEN).await.unwrap());
    }

    // Meanwhile another client is served in full.
    let polite = connect(&server).await;
    let served = tokio::time::timeout(Duration::from_secs(5), async {
        polite.challenge().await.unwrap();
        let mut stream = polite.blobs(ids.clone(), MAX_CHUNK_BLOB_LEN).await.unwrap();
        let mut n = 0;
        while let Some(item) = stream.next().await {
            assert!(item.unwrap().1.is_some());
            n += 1;
        }
        n
    })
    .await
    .expect("the polite client is served while the greedy one sits");
    assert_eq!(served, ids.len());

    // The server gave up on the greedy streams after its stall timeout: reading them now
    // ends in a reset with TIMEOUT, not in the whole answer.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut stream = unread.pop().unwrap();
    let error = loop {
        match stream.next().await {
            Some(Ok(_)) => continue,
            Some(Err(e)) => break e,
            None => panic!("the unread stream was served to the end"),
        }
    };
    assert!(
        matches!(
            error,
            ClientError::StreamReset {
                code: ErrorCode::TIMEOUT,
                ..
            }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_flood_of_silent_streams_is_timed_out_and_others_are_served() {
    let handler = Arc::new(TestHandler::with_blobs([blob(1000, 1)]));
    let server = start_with(&handler, quick_server_config());
    let (_endpoint, raw) = raw_connection(&server).await;

    // Three times the stream limit of silent streams: each waits for credit that the server
    // returns only by timing out earlier ones.
    let flood = tokio::spawn(async move {
        let mut codes = Vec::new();
        let mut pending = tokio::task::JoinSet::new();
        for _ in 0..3 * TransportLimits::default().max_concurrent_streams {
            let (mut send, mut recv) = raw.open_bi().await.unwrap();
            send.write_all(&[1]).await.unwrap();
            pending.spawn(async move {
                let _keep = send;
                match recv.read_to_end(1024).await {
                    Err(ReadToEndError::Read(ReadError::Reset(code))) => {
                        ErrorCode::from_varint(code)
                    }
                    other => panic!("expected a reset, got {other:?}"),
                }
            });
        }
        while let Some(code) = pending.join_next().await {
            codes.push(code.unwrap());
        }
        codes
    });

    let polite = connect(&server).await;
    for _ in 0..5 {
        polite.challenge().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let codes = flood.await.unwrap();
    assert_eq!(codes.len(), 96);
    assert!(codes.iter().all(|c| *c == ErrorCode::TIMEOUT), "{codes:?}");
}

#[tokio::test]
async fn connections_over_the_cap_are_refused() {
    let handler = Arc::new(TestHandler::default());
    let mut config = ServerConfig::default();
    config.max_connections = 1;
    let server = start_with(&handler, config);
    let first = connect(&server).await;
    first.challenge().await.unwrap();
    match Client::connect(server.local_addr(), server.pin()).await {
        Err(ClientError::Connection { peer, .. }) => assert_eq!(peer, server.local_addr()),
        other => panic!("expected a refused connection, got {other:?}"),
    }
    first.challenge().await.unwrap();
    // When the first leaves, its slot is free again.
    first.close();
    drop(first);
    let mut admitted = false;
    for _ in 0..50 {
        if let Ok(client) = Client::connect(server.local_addr(), server.pin()).await {
            client.challenge().await.unwrap();
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(admitted, "a freed slot admits a new connection");
}

#[tokio::test]
async fn graceful_shutdown_finishes_requests_in_flight() {
    let blobs: Vec<Bytes> = (0..4)
        .map(|i| blob(MAX_CHUNK_BLOB_LEN as usize, i))
        .collect();
    let ids: Vec<ChunkId> = blobs.iter().map(|b| ChunkId::of(b)).collect();
    let handler = Arc::new(TestHandler::with_blobs(blobs));
    let server = start(&handler);
    let addr = server.local_addr();
    let pin = server.pin();
    let mut config = ClientConfig::default();
    config.connect_timeout = Duration::from_secs(1);
    let connector = Connector::bind(loopback(), config).unwrap();
    let client = connector.connect(addr, pin).await.unwrap();

    // A request is in flight (its first blob read) when shutdown starts.
    let mut stream = client.blobs(ids.clone(), MAX_CHUNK_BLOB_LEN).await.unwrap();
    assert!(stream.next().await.unwrap().unwrap().1.is_some());
    let shutdown = tokio::spawn(server.shutdown(Duration::from_secs(5)));
    let mut rest = 0;
    while let Some(item) = stream.next().await {
        assert!(item.unwrap().1.is_some());
        rest += 1;
    }
    assert_eq!(rest, ids.len() - 1, "the request in flight completes");
    shutdown.await.unwrap();

    // The connection was closed with SHUTDOWN, and nobody new gets in.
    match client.challenge().await {
        Err(ClientError::Connection {
            source: quinn::ConnectionError::ApplicationClosed(close),
            ..
        }) => assert_eq!(
            ErrorCode::from_varint(close.error_code),
            ErrorCode::SHUTDOWN
        ),
        other => panic!("expected a closed connection, got {other:?}"),
    }
    assert!(connector.connect(addr, pin).await.is_err());
}
