//! Shared helpers for the chunk tests.

use std::convert::Infallible;
use std::ops::Range;

use proptest::prelude::*;

use super::{ChunkIndex, ChunkingParams, CutChunk, Ingest, Ingested};
use crate::digest::ChunkId;
use crate::tuf::VerifiedArtifact;

/// The BLAKE3 key-derivation context of the test-vector generator.
pub(crate) const GENERATOR_CONTEXT: &str = "enigm-ota chunk-tree test vectors 2026 v1";

/// `len` bytes of the test-vector generator: the BLAKE3 XOF in key-derivation mode with
/// [`GENERATOR_CONTEXT`], over the seed as 8 bytes little-endian.
pub(crate) fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new_derive_key(GENERATOR_CONTEXT)
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

/// Chunk lengths from the `fastcdc` crate's own v2020 iterator over the whole input.
pub(crate) fn reference_lengths(params: ChunkingParams, data: &[u8]) -> Vec<usize> {
    fastcdc::v2020::FastCDC::new(data, params.min(), params.avg(), params.max())
        .map(|chunk| chunk.length)
        .collect()
}

/// Ingest `data` in pieces of the given sizes (cycled; 0 is taken as 1).
pub(crate) fn feed(
    mut ingest: Ingest,
    data: &[u8],
    pieces: &[usize],
    mut on_chunk: impl FnMut(CutChunk<'_>),
) -> Ingested {
    let mut sink = |chunk: CutChunk<'_>| -> Result<(), Infallible> {
        on_chunk(chunk);
        Ok(())
    };
    let mut rest = data;
    let mut sizes = pieces.iter().cycle();
    while !rest.is_empty() {
        let size = sizes
            .next()
            .copied()
            .unwrap_or(usize::MAX)
            .clamp(1, rest.len());
        let (piece, tail) = rest.split_at(size);
        ingest.update(piece, &mut sink).unwrap();
        rest = tail;
    }
    ingest.finish(&mut sink).unwrap()
}

/// Ingest `data` in one piece.
pub(crate) fn ingest_all(params: ChunkingParams, data: &[u8]) -> Ingested {
    feed(Ingest::new(params), data, &[data.len().max(1)], |_| {})
}

/// The verified target an ingest describes.
pub(crate) fn verified_artifact(out: &Ingested) -> VerifiedArtifact {
    crate::tuf::testkit::assume_verified(
        "artifacts/test.img",
        out.length,
        out.sha256,
        out.chunks.clone(),
    )
}

/// The byte range of every chunk of an index.
pub(crate) fn chunk_ranges(index: &ChunkIndex) -> impl Iterator<Item = Range<usize>> + '_ {
    index
        .entries()
        .iter()
        .map(|entry| entry.offset() as usize..entry.end() as usize)
}

/// Small valid chunking parameters (many chunks in little data).
pub(crate) fn arb_params() -> impl Strategy<Value = ChunkingParams> {
    (32u32..=1024)
        .prop_flat_map(|half| {
            let min = 2 * half;
            (Just(min), min.max(256)..=4096)
        })
        .prop_flat_map(|(min, avg)| (Just(min), Just(avg), avg.max(1024)..=8192))
        .prop_map(|(min, avg, max)| {
            ChunkingParams::new(min, avg, max).expect("the strategy makes valid parameters")
        })
}

/// A valid index: every chunk `min..=max` long except the last, `1..=max`; ids random or
/// repeated.
pub(crate) fn arb_index() -> impl Strategy<Value = ChunkIndex> {
    (
        arb_params(),
        proptest::collection::vec((any::<[u8; 32]>(), any::<u32>(), any::<bool>()), 0..40),
    )
        .prop_map(|(params, raw)| {
            let n = raw.len();
            let entries = raw.into_iter().enumerate().map(|(i, (id, r, repeat))| {
                let len = if i + 1 == n {
                    1 + r % params.max()
                } else {
                    params.min() + r % (params.max() - params.min() + 1)
                };
                let id = if repeat {
                    ChunkId([0x5a; 32])
                } else {
                    ChunkId(id)
                };
                (id, len)
            });
            ChunkIndex::new(params, entries).expect("the strategy makes valid indexes")
        })
}
