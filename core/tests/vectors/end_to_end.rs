//! From signed metadata to verified bytes: the client workflow yields a `VerifiedArtifact`, the
//! chunk index is accepted only against it, and every chunk is checked before use. A source
//! that corrupts one chunk is caught at that chunk.

use std::collections::BTreeMap;
use std::convert::Infallible;

use ota_core::chunk::{ChunkError, ChunkVerifier, ChunkingParams, CutChunk, IndexError, Ingest};
use ota_core::digest::ChunkId;
use ota_core::tuf::VerifiedArtifact;
use ota_core::tuf::client::{Action, Fetched, Limits, TrustedFiles, Updater};

use super::repo::{ARTIFACT, NOW, Repo, artifact_bytes};

/// Run the client workflow over the standard repository and return the artifact it verifies.
fn verified_artifact(repo: &Repo) -> VerifiedArtifact {
    let mut updater =
        Updater::new(Limits::default(), &repo.root_v1(), TrustedFiles::default()).unwrap();
    updater.refresh().unwrap();
    loop {
        match updater.poll_action().expect("an outcome") {
            Action::Fetch(request) => {
                let fetched = repo
                    .metadata
                    .get(&request.file)
                    .cloned()
                    .map_or(Fetched::NotFound, Fetched::Bytes);
                updater.handle_fetched(NOW, &request, fetched).unwrap();
            }
            Action::Refreshed => updater.find_target(NOW, ARTIFACT).unwrap(),
            Action::Found(info) => return info.into_artifact().unwrap(),
            _ => {}
        }
    }
}

/// The origin's side: cut the artifact, keep the chunks by id, return the index blob.
fn ingest(bytes: &[u8]) -> (Vec<u8>, BTreeMap<ChunkId, Vec<u8>>) {
    let mut store = BTreeMap::new();
    let mut sink = |chunk: CutChunk<'_>| {
        store.insert(*chunk.id(), chunk.bytes().to_vec());
        Ok::<(), Infallible>(())
    };
    let mut ingest = Ingest::new(ChunkingParams::DEFAULT);
    ingest.update(bytes, &mut sink).unwrap();
    let ingested = ingest.finish(&mut sink).unwrap();
    (ingested.index, store)
}

#[test]
fn signed_metadata_to_verified_bytes() {
    let repo = Repo::standard();
    let artifact = verified_artifact(&repo);
    let bytes = artifact_bytes();
    let (index, store) = ingest(&bytes);
    let verifier = ChunkVerifier::new(&artifact, &index).unwrap();
    assert!(
        verifier.index().len() > 1,
        "the artifact spans several chunks"
    );

    let mut check = verifier.artifact_check();
    let mut assembled = Vec::new();
    for entry in verifier.index().entries() {
        let position = verifier.positions_of(entry.id())[0];
        let chunk = verifier.verify(position, &store[entry.id()]).unwrap();
        check.push(&chunk).unwrap();
        assembled.extend_from_slice(chunk.bytes());
    }
    check.finish().unwrap();
    assert_eq!(assembled, bytes);
}

#[test]
fn corrupt_chunk_from_a_source_is_refused_by_position() {
    let repo = Repo::standard();
    let artifact = verified_artifact(&repo);
    let (index, store) = ingest(&artifact_bytes());
    let verifier = ChunkVerifier::new(&artifact, &index).unwrap();
    let entry = verifier.index().entries()[1];
    let mut corrupt = store[entry.id()].clone();
    corrupt[100] ^= 0x01;
    let err = verifier.verify(1, &corrupt).unwrap_err();
    assert_eq!(
        err,
        ChunkError::HashMismatch {
            position: 1,
            expected: *entry.id(),
            actual: ChunkId::of(&corrupt),
        }
    );
}

#[test]
fn index_of_another_artifact_is_refused() {
    let repo = Repo::standard();
    let artifact = verified_artifact(&repo);
    let (other_index, _) = ingest(&artifact_bytes()[..200_000]);
    assert!(matches!(
        ChunkVerifier::new(&artifact, &other_index),
        Err(IndexError::BlobLengthMismatch { .. })
    ));
}
