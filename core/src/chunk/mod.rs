//! Content-defined chunks, the binary chunk index, the Merkle chunk tree and the verifiers.
//!
//! # The short spec (the long one is `docs/FORMATS.md`, section "Chunks")
//!
//! **Participants.** The origin cuts a build into chunks ([`Ingest`]) and publishes every chunk
//! and the chunk index as blobs named by their BLAKE3 hash. The release signer signs, in the
//! artifact target's `custom.enigm` object ([`ArtifactChunks`]), the whole artifact's BLAKE3,
//! the chunking parameters, the chunk count, the chunk-tree root and the index's id and length.
//! Peers and mirrors serve blobs and are trusted for nothing. The device checks the index
//! against the signed target ([`ChunkVerifier::new`]), then every chunk against the index
//! ([`ChunkVerifier::verify`]), then the assembled artifact against the signed hashes
//! ([`ArtifactCheck`]).
//!
//! **Chunking.** FastCDC as published in 2020 (`fastcdc-2020`: the `fastcdc` crate's `v2020`
//! module, normalization level 1, the standard gear table), with the parameters of
//! [`ChunkingParams`]. Every chunk is `min..=max` bytes long except the last, which may be
//! shorter than `min`. An empty artifact has no chunks.
//!
//! **Chunk id.** BLAKE3-256 of the chunk's bytes. Chunks are position independent: one id may
//! occur at several positions of one artifact and in many artifacts.
//!
//! **Index.** A 40-byte header — magic `ENGMCIDX`, format version `1` (u16 LE), algorithm `1`
//! = `fastcdc-2020` (u16 LE), `min`, `avg`, `max` (u32 LE each), chunk count (u64 LE), total
//! length (u64 LE) — then per chunk, in artifact order, its id (32 bytes) and length (u32 LE).
//! See [`ChunkIndex`].
//!
//! **Tree.** leaf = BLAKE3(`0x00` ‖ id ‖ len u32 LE), node = BLAKE3(`0x01` ‖ left ‖ right);
//! leaves are paired level by level from the left, an odd node at the end of a level is
//! promoted unchanged to the next level, and the last remaining node is the root. The root of
//! an index with no chunks is BLAKE3(`0x02`). See [`ChunkTree`].
//!
//! **Goals.** A device accepts a chunk only if it is exactly the one the release signed at
//! that position, whoever served it; it can check each chunk alone, as soon as it arrives; the
//! index is accepted only if it is the signed one; and every length read from a blob is
//! bounded before anything is allocated for it.
//!
//! **Non-goals.** Hiding which chunks a device holds or asks for; proving anything about a
//! chunk without the index (there are no per-chunk inclusion proofs on the wire: the index is
//! small, about 0.05 % of the artifact with the default parameters).

mod index;
mod ingest;
mod params;
mod split;
mod tree;
mod verify;
mod whole;

#[cfg(test)]
mod blake3_vectors;
#[cfg(test)]
mod testutil;
#[cfg(test)]
mod vectors;

use serde::{Deserialize, Serialize};

use crate::digest::{Blake3Hash, ChunkId};

pub use index::{
    ChunkIndex, INDEX_ALGORITHM_FASTCDC_2020, INDEX_ENTRY_LEN, INDEX_HEADER_LEN, INDEX_MAGIC,
    INDEX_VERSION, IndexEntry, IndexError, IndexLimits,
};
pub use ingest::{CutChunk, Ingest, IngestError, Ingested};
pub use params::{ALGORITHM_FASTCDC_2020, ChunkingParams, MAX_CHUNK_LEN, ParamsError};
pub use split::{BlockShare, CheckHalf};
pub use tree::ChunkTree;
pub use verify::{ArtifactCheck, ArtifactError, ChunkError, ChunkVerifier, VerifiedChunk};

/// The `custom.enigm` object of an artifact target: what the release signer vouches for
/// beyond TUF's `length` and `hashes.sha256`.
///
/// ```json
/// { "blake3": "…", "chunking": { "algorithm": "fastcdc-2020", "min": 16384, "avg": 65536,
///   "max": 262144 }, "chunks": 32768, "chunk_tree": "…", "chunk_index": "…",
///   "chunk_index_length": 1179688 }
/// ```
///
/// Unknown fields are ignored when parsing (a later format may add some). Only the TUF client
/// workflow turns one of these into something trusted, as part of a
/// [`VerifiedArtifact`](crate::tuf::VerifiedArtifact).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactChunks {
    /// BLAKE3-256 of the whole artifact.
    pub blake3: Blake3Hash,
    /// How the artifact was cut.
    pub chunking: ChunkingParams,
    /// The number of chunks (0 for an empty artifact).
    pub chunks: u64,
    /// The root of the chunk tree over the index entries.
    pub chunk_tree: Blake3Hash,
    /// BLAKE3-256 of the chunk index blob, which is also its blob id.
    pub chunk_index: ChunkId,
    /// The length of the chunk index blob in bytes: `40 + 36 * chunks`.
    pub chunk_index_length: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_chunks_json_shape() {
        let json = r#"{
            "blake3": "0000000000000000000000000000000000000000000000000000000000000001",
            "chunking": {"algorithm": "fastcdc-2020", "min": 16384, "avg": 65536, "max": 262144},
            "chunks": 2,
            "chunk_tree": "0000000000000000000000000000000000000000000000000000000000000002",
            "chunk_index": "0000000000000000000000000000000000000000000000000000000000000003",
            "chunk_index_length": 112,
            "x-later-field": {"ignored": true}
        }"#;
        let parsed: ArtifactChunks = serde_json::from_str(json).unwrap();
        assert_eq!(parsed.chunking, ChunkingParams::DEFAULT);
        assert_eq!(parsed.chunks, 2);
        assert_eq!(parsed.chunk_index_length, 112);
        assert_eq!(parsed.chunk_index.0[31], 3);

        let back = serde_json::to_value(&parsed).unwrap();
        let keys: Vec<&str> = back
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = vec![
            "blake3",
            "chunk_index",
            "chunk_index_length",
            "chunk_tree",
            "chunking",
            "chunks",
        ];
        expected.sort_unstable();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, expected, "exactly the six signed fields are written");
    }

    #[test]
    fn artifact_chunks_rejects_a_bad_algorithm_inside() {
        let json = r#"{
            "blake3": "0000000000000000000000000000000000000000000000000000000000000001",
            "chunking": {"algorithm": "fastcdc-2016", "min": 16384, "avg": 65536, "max": 262144},
            "chunks": 0,
            "chunk_tree": "0000000000000000000000000000000000000000000000000000000000000002",
            "chunk_index": "0000000000000000000000000000000000000000000000000000000000000003",
            "chunk_index_length": 40
        }"#;
        let err = serde_json::from_str::<ArtifactChunks>(json).unwrap_err();
        assert!(err.to_string().contains("fastcdc-2016"), "{err}");
    }
}
