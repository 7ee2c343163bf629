//! Every request against an honest server, and the bounds the client enforces on itself.

use std::sync::Arc;

use bytes::Bytes;
use ota_core::digest::ChunkId;
use ota_net::client::{Answer, Client, ClientError};
use ota_net::proto::{
    MAX_BLOB_LEN, MAX_CHUNK_BLOB_LEN, MAX_IDS_PER_REQUEST, Refusal, SignedKind, WireError,
};

use crate::support::{REFUSE_ME, TestHandler, blob, connect, signed_request, start};

#[tokio::test]
async fn challenge_gives_fresh_nonces() {
    let handler = Arc::new(TestHandler::default());
    let server = start(&handler);
    let client = connect(&server).await;
    let a = client.challenge().await.unwrap();
    let b = client.challenge().await.unwrap();
    assert_ne!(a, b);
}

#[tokio::test]
async fn signed_requests_reach_the_handler_bound_to_the_connection() {
    let handler = Arc::new(TestHandler::default());
    let server = start(&handler);
    let client = connect(&server).await;
    for kind in SignedKind::ALL {
        let request = signed_request(b"hello");
        // The handler answers with what it would verify: the same bytes the device signs
        // with its own view of the channel binding, and the right kind.
        let expected = request.signing_bytes(kind, &client.channel_binding());
        let answer = client.signed(kind, request).await.unwrap();
        assert_eq!(answer, Answer::Signed(expected), "{kind:?}");
    }
    let answer = client
        .signed(SignedKind::CheckIn, signed_request(REFUSE_ME))
        .await
        .unwrap();
    assert_eq!(
        answer,
        Answer::Refused(Refusal::new(Refusal::FORBIDDEN, "not enrolled"))
    );
}

#[tokio::test]
async fn channel_bindings_match_per_connection_and_differ_across_connections() {
    let handler = Arc::new(TestHandler::default());
    let server = start(&handler);
    let first = connect(&server).await;
    let second = connect(&server).await;
    first.challenge().await.unwrap();
    second.challenge().await.unwrap();
    let seen = handler.bindings.lock().unwrap().clone();
    assert_eq!(seen, [first.channel_binding(), second.channel_binding()]);
    assert_ne!(first.channel_binding(), second.channel_binding());
    // Another connection from the same client socket gets yet another binding.
    let third = connect(&server).await;
    assert_ne!(third.channel_binding(), first.channel_binding());
    assert_ne!(third.channel_binding(), second.channel_binding());
}

#[tokio::test]
async fn metadata_found_missing_and_over_the_client_bound() {
    let mut handler = TestHandler::default();
    let root = blob(5000, 1);
    handler.metadata.insert("1.root.json".into(), root.clone());
    handler.metadata.insert("empty.json".into(), Bytes::new());
    let handler = Arc::new(handler);
    let server = start(&handler);
    let client = connect(&server).await;

    assert_eq!(
        client.metadata("1.root.json", 5000).await.unwrap(),
        Some(root)
    );
    assert_eq!(
        client.metadata("empty.json", 1).await.unwrap(),
        Some(Bytes::new())
    );
    assert_eq!(client.metadata("2.root.json", 5000).await.unwrap(), None);
    // One byte over what the client accepts: the server refuses rather than sends.
    match client.metadata("1.root.json", 4999).await {
        Err(ClientError::Refused { peer, refusal }) => {
            assert_eq!(peer, server.local_addr());
            assert_eq!(refusal.code, Refusal::TOO_LARGE);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn get_blobs_in_order_with_present_and_missing_ids() {
    // The boundary table of blob sizes: empty, tiny, around the server's write piece, the
    // largest chunk.
    let sizes = [
        0,
        1,
        256 * 1024 - 1,
        256 * 1024,
        256 * 1024 + 1,
        MAX_CHUNK_BLOB_LEN as usize,
    ];
    let blobs: Vec<Bytes> = sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| blob(len, i as u8))
        .collect();
    let handler = Arc::new(TestHandler::with_blobs(blobs.clone()));
    let server = start(&handler);
    let client = connect(&server).await;

    let absent = ChunkId::of(b"nobody has this");
    let mut ids = Vec::new();
    let mut expected = Vec::new();
    for b in &blobs {
        ids.push(ChunkId::of(b));
        expected.push((ChunkId::of(b), Some(b.clone())));
        ids.push(absent);
        expected.push((absent, None));
    }
    let mut stream = client.blobs(ids, MAX_CHUNK_BLOB_LEN).await.unwrap();
    let mut got = Vec::new();
    while let Some(item) = stream.next().await {
        got.push(item.unwrap());
    }
    assert_eq!(got.len(), expected.len());
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!(g.0, e.0);
        assert_eq!(g.1.as_ref().map(Bytes::len), e.1.as_ref().map(Bytes::len));
        assert!(g.1 == e.1, "bytes of {}", g.0);
    }
    assert_eq!(stream.remaining(), 0);
    assert!(stream.next().await.is_none(), "nothing after the end");
}

#[tokio::test]
async fn a_blob_over_the_client_bound_is_missing_and_an_index_blob_is_asked_alone() {
    let chunk = blob(1000, 1);
    let index = blob(3 * 1024 * 1024, 2);
    let handler = Arc::new(TestHandler::with_blobs([chunk.clone(), index.clone()]));
    let server = start(&handler);
    let client = connect(&server).await;
    let (chunk_id, index_id) = (ChunkId::of(&chunk), ChunkId::of(&index));

    // Asked with a bound below its size, a blob is not sent.
    let mut stream = client.blobs(vec![chunk_id], 999).await.unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap(), (chunk_id, None));
    assert!(stream.next().await.is_none());

    // A chunk index larger than any chunk: asked alone with its exact signed length.
    let mut stream = client
        .blobs(vec![index_id], index.len() as u32)
        .await
        .unwrap();
    assert_eq!(
        stream.next().await.unwrap().unwrap(),
        (index_id, Some(index))
    );
    assert!(stream.next().await.is_none());

    // A large bound with several ids is refused before it is sent.
    match client
        .blobs(vec![index_id, chunk_id], MAX_CHUNK_BLOB_LEN + 1)
        .await
    {
        Err(ClientError::InvalidRequest(WireError::OutOfBounds { field: "ids", .. })) => {}
        other => panic!("expected an invalid request, got {other:?}"),
    }
    match client.blobs(vec![index_id], MAX_BLOB_LEN + 1).await {
        Err(ClientError::InvalidRequest(WireError::OutOfBounds {
            field: "max_len", ..
        })) => {}
        other => panic!("expected an invalid request, got {other:?}"),
    }
}

#[tokio::test]
async fn the_largest_batch_round_trips_and_one_more_is_refused_locally() {
    let blobs: Vec<Bytes> = (0..4).map(|i| blob(100, i)).collect();
    let handler = Arc::new(TestHandler::with_blobs(blobs.clone()));
    let server = start(&handler);
    let client = connect(&server).await;
    let ids: Vec<ChunkId> = (0..MAX_IDS_PER_REQUEST)
        .map(|i| ChunkId::of(&blobs[i % blobs.len()]))
        .collect();
    let mut stream = client.blobs(ids.clone(), 100).await.unwrap();
    let mut count = 0;
    while let Some(item) = stream.next().await {
        let (id, bytes) = item.unwrap();
        assert_eq!(id, ids[count]);
        assert!(bytes.is_some());
        count += 1;
    }
    assert_eq!(count, MAX_IDS_PER_REQUEST);

    let mut too_many = ids;
    too_many.push(ChunkId::of(b"one more"));
    assert!(matches!(
        client.blobs(too_many, 100).await,
        Err(ClientError::InvalidRequest(WireError::OutOfBounds {
            field: "ids",
            ..
        }))
    ));
    // The connection is still good.
    client.challenge().await.unwrap();
}

#[tokio::test]
async fn concurrent_requests_share_one_connection() {
    let blobs: Vec<Bytes> = (0..32).map(|i| blob(64 * 1024, i)).collect();
    let handler = Arc::new(TestHandler::with_blobs(blobs.clone()));
    let server = start(&handler);
    let client = connect(&server).await;
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in blobs.chunks(4) {
        let client: Client = client.clone();
        let ids: Vec<ChunkId> = chunk.iter().map(|b| ChunkId::of(b)).collect();
        tasks.spawn(async move {
            let mut stream = client.blobs(ids, MAX_CHUNK_BLOB_LEN).await.unwrap();
            let mut n = 0;
            while let Some(item) = stream.next().await {
                let (id, bytes) = item.unwrap();
                assert_eq!(ChunkId::of(&bytes.unwrap()), id);
                n += 1;
            }
            n
        });
    }
    let mut total = 0;
    while let Some(n) = tasks.join_next().await {
        total += n.unwrap();
    }
    assert_eq!(total, blobs.len());
}

#[tokio::test]
async fn wrong_pin_is_refused_with_both_pins_named() {
    let handler = Arc::new(TestHandler::default());
    let server = start(&handler);
    let wrong = crate::support::identity(2).pin();
    match Client::connect(server.local_addr(), wrong).await {
        Err(ClientError::PinMismatch {
            peer,
            expected,
            presented,
        }) => {
            assert_eq!(peer, server.local_addr());
            assert_eq!(expected, wrong);
            assert_eq!(presented, server.pin());
        }
        other => panic!("expected a pin mismatch, got {other:?}"),
    }
    // The right pin still works.
    connect(&server).await.challenge().await.unwrap();
}
