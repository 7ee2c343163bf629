//! Blobs served over QUIC (`GetBlobs`) are read from the blob store and checked against their
//! id on every request: a chunk damaged on disk after publication is never served.

use std::convert::Infallible;

use ota_core::chunk::{ChunkingParams, CutChunk, Ingest};
use ota_core::digest::ChunkId;
use ota_net::client::Client;
use ota_origin::store::BlobStore;

use crate::e2e::{ceremony, init, serve};
use crate::private::{image, publish};

/// The chunk ids of `bytes` in the order `release create` cuts them, and its chunk index.
fn chunk_ids(bytes: &[u8]) -> (Vec<ChunkId>, ChunkId) {
    let mut ids = Vec::new();
    let mut ingest = Ingest::new(ChunkingParams::DEFAULT);
    let mut sink = |c: CutChunk<'_>| {
        ids.push(*c.id());
        Ok::<(), Infallible>(())
    };
    ingest.update(bytes, &mut sink).unwrap();
    let done = ingest.finish(&mut sink).unwrap();
    (ids, done.chunks.chunk_index)
}

/// Asks for `ids` in one `GetBlobs`: each answer in order, `None` for `Missing`. Every blob
/// served must hash to its id.
async fn get_blobs(client: &Client, ids: &[ChunkId]) -> Vec<(ChunkId, Option<usize>)> {
    let mut stream = client.blobs(ids.to_vec(), 1 << 20).await.unwrap();
    let mut answers = Vec::new();
    while let Some(item) = stream.next().await {
        let (id, blob) = item.unwrap();
        if let Some(bytes) = &blob {
            assert_eq!(ChunkId::of(bytes), id, "a blob served under another id");
        }
        answers.push((id, blob.map(|b| b.len())));
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_damaged_on_disk_is_answered_missing_over_quic() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("origin");
    let (_, root, director_root) = ceremony(&data, temp.path());
    init(&data, &root, &director_root);
    let bytes = image("served", 1 << 20);
    let path = temp.path().join("system.img");
    std::fs::write(&path, &bytes).unwrap();
    publish(
        &data,
        temp.path(),
        ("stable", "2026.11.1"),
        &[("system", &path)],
        &[],
    );
    let (ids, index) = chunk_ids(&bytes);
    assert!(ids.len() >= 3, "{} chunks", ids.len());
    let served = serve(&data);
    let client = Client::connect(served.quic, served.pin).await.unwrap();

    // Before: every chunk and the index are served.
    let all: Vec<ChunkId> = ids.iter().copied().chain([index]).collect();
    let answers = get_blobs(&client, &all).await;
    assert_eq!(answers.len(), all.len());
    assert!(
        answers.iter().all(|(_, blob)| blob.is_some()),
        "{answers:?}"
    );

    // One bit flipped in the middle chunk's file, and the next chunk's file cut short (as a
    // power loss may leave a file that was never synced).
    let file = |id: &ChunkId| data.join("blobs").join(BlobStore::key(id));
    let (flipped, cut) = (ids[ids.len() / 2], ids[ids.len() / 2 + 1]);
    let original = std::fs::read(file(&flipped)).unwrap();
    let mut damaged = original.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x01;
    std::fs::write(file(&flipped), &damaged).unwrap();
    let whole = std::fs::read(file(&cut)).unwrap();
    std::fs::write(file(&cut), &whole[..whole.len() / 2]).unwrap();

    // After: both are answered `Missing`, as chunks the origin does not hold, on the same
    // stream as the rest, which is still served whole.
    let answers = get_blobs(&client, &all).await;
    assert_eq!(answers.len(), all.len());
    for (id, blob) in &answers {
        if *id == flipped || *id == cut {
            assert_eq!(*blob, None, "damaged chunk {id} was served");
        } else {
            assert!(blob.is_some(), "sound chunk {id} was not served");
        }
    }

    // Stored again whole, it is served again.
    std::fs::write(file(&flipped), &original).unwrap();
    let answers = get_blobs(&client, &[flipped]).await;
    assert_eq!(answers, vec![(flipped, Some(original.len()))]);
}
