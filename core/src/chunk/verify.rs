//! The device's side: accept the signed index, then check every chunk and the whole artifact.

use std::fmt;

use super::index::{ChunkIndex, IndexError, IndexLimits};
use super::split::{self, BlockShare, CheckHalf};
use super::whole::WholeHash;
use crate::digest::{Blake3Hash, ChunkId, Sha256Hash};
use crate::tuf::VerifiedArtifact;

/// Checks chunks against a chunk index that matches a verified artifact target.
///
/// Made only by [`ChunkVerifier::new`], which accepts the index blob only if it is the signed
/// one and agrees with every signed field.
#[derive(Clone)]
pub struct ChunkVerifier {
    index: ChunkIndex,
    /// Every position, sorted by the id there (then by position).
    by_id: Vec<u64>,
    length: u64,
    sha256: Sha256Hash,
    blake3: Blake3Hash,
}

/// A chunk whose bytes are the ones the release signed at its position.
#[derive(Clone, Copy)]
pub struct VerifiedChunk<'a> {
    position: u64,
    offset: u64,
    id: ChunkId,
    bytes: &'a [u8],
}

/// A chunk was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkError {
    /// There is no chunk at this position: the caller asked for something the index does not
    /// list.
    #[error("no chunk at position {position}; the index lists {count}")]
    PositionOutOfRange {
        /// The position asked for.
        position: u64,
        /// The number of chunks in the index.
        count: u64,
    },
    /// The bytes are not as long as the chunk at this position: the source that served them is
    /// at fault.
    #[error("chunk {position} should be {expected} bytes long, got {actual}")]
    LengthMismatch {
        /// The chunk's position.
        position: u64,
        /// Its length in the index.
        expected: u32,
        /// The length of the bytes served.
        actual: u64,
    },
    /// The bytes do not hash to the chunk's id: the source that served them is at fault.
    #[error("chunk {position} should hash to {expected}, got {actual}")]
    HashMismatch {
        /// The chunk's position.
        position: u64,
        /// Its id in the index.
        expected: ChunkId,
        /// The BLAKE3 of the bytes served.
        actual: ChunkId,
    },
}

/// Checks a whole artifact, streamed in order, against the signed length, SHA-256 and BLAKE3.
///
/// Feed it the artifact's bytes with [`ArtifactCheck::update`] (for instance read back from the
/// slot it was written to), or verified chunks in order with [`ArtifactCheck::push`], then call
/// [`ArtifactCheck::finish`].
#[derive(Clone)]
pub struct ArtifactCheck {
    whole: WholeHash,
    length: u64,
    sha256: Sha256Hash,
    blake3: Blake3Hash,
}

/// A whole artifact did not match its signed values. Its chunks were verified one by one, so
/// this points at the assembly (bytes lost or corrupted between verification and here) or at
/// signed metadata that contradicts itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArtifactError {
    /// A chunk was pushed out of order: the caller is at fault.
    #[error("chunk {position} starts at offset {found}, but {expected} bytes were checked so far")]
    OutOfOrder {
        /// The chunk's position.
        position: u64,
        /// The number of bytes checked so far.
        expected: u64,
        /// The chunk's offset.
        found: u64,
    },
    /// More bytes were fed than the signed length.
    #[error("the artifact is longer than its signed length {signed}")]
    TooLong {
        /// The target's `length`.
        signed: u64,
    },
    /// Fewer bytes were fed than the signed length.
    #[error("the artifact is {actual} bytes long, its signed length is {signed}")]
    TooShort {
        /// The target's `length`.
        signed: u64,
        /// The number of bytes fed.
        actual: u64,
    },
    /// The SHA-256 differs from `hashes.sha256`.
    #[error("artifact SHA-256 {actual} does not match the signed {signed}")]
    Sha256Mismatch {
        /// The target's `hashes.sha256`.
        signed: Sha256Hash,
        /// The SHA-256 of the bytes fed.
        actual: Sha256Hash,
    },
    /// The BLAKE3 differs from `custom.enigm.blake3`.
    #[error("artifact BLAKE3 {actual} does not match the signed {signed}")]
    Blake3Mismatch {
        /// The target's `custom.enigm.blake3`.
        signed: Blake3Hash,
        /// The BLAKE3 of the bytes fed.
        actual: Blake3Hash,
    },
    /// The two halves given to [`ArtifactCheck::finish_split`] are not the two halves of one
    /// split check: the caller is at fault.
    #[error("the two halves are not the two halves of one split check")]
    NotAPair,
}

impl ChunkVerifier {
    /// Accept `index_bytes` as the chunk index of `artifact`, in this order:
    ///
    /// 1. its length is the signed `chunk_index_length` and its BLAKE3 the signed
    ///    `chunk_index` (otherwise the source served another blob:
    ///    [`IndexError::BlobLengthMismatch`], [`IndexError::BlobHashMismatch`]);
    /// 2. it parses ([`IndexError::SignedIndexMalformed`]);
    /// 3. its parameters, count and total length equal the signed `chunking`, `chunks` and
    ///    `length`, and its tree root the signed `chunk_tree`.
    ///
    /// Failures after step 1 mean the release contradicts itself.
    pub fn new(artifact: &VerifiedArtifact, index_bytes: &[u8]) -> Result<Self, IndexError> {
        let signed = artifact.chunks();
        let actual_len = index_bytes.len() as u64;
        if actual_len != signed.chunk_index_length {
            return Err(IndexError::BlobLengthMismatch {
                signed: signed.chunk_index_length,
                actual: actual_len,
            });
        }
        let actual_id = ChunkId::of(index_bytes);
        if actual_id != signed.chunk_index {
            return Err(IndexError::BlobHashMismatch {
                signed: signed.chunk_index,
                actual: actual_id,
            });
        }
        // The blob is the signed one and its length is signed: parsing cannot be made to
        // allocate more than that. Compare the counts exactly below rather than as limits.
        let index = ChunkIndex::parse(index_bytes, IndexLimits::UNBOUNDED).map_err(|source| {
            IndexError::SignedIndexMalformed {
                source: Box::new(source),
            }
        })?;
        if index.params() != signed.chunking {
            return Err(IndexError::ParamsMismatch {
                signed: signed.chunking,
                index: index.params(),
            });
        }
        if index.len() != signed.chunks {
            return Err(IndexError::CountMismatch {
                signed: signed.chunks,
                index: index.len(),
            });
        }
        if index.total_length() != artifact.length() {
            return Err(IndexError::ArtifactLengthMismatch {
                signed: artifact.length(),
                index: index.total_length(),
            });
        }
        let computed = index.tree_root();
        if computed != signed.chunk_tree {
            return Err(IndexError::TreeRootMismatch {
                signed: signed.chunk_tree,
                computed,
            });
        }

        let entries = index.entries();
        let mut by_id: Vec<u64> = (0..index.len()).collect();
        by_id.sort_by_key(|&position| (entries[position as usize].id(), position));
        Ok(Self {
            index,
            by_id,
            length: artifact.length(),
            sha256: *artifact.sha256(),
            blake3: signed.blake3,
        })
    }

    /// Check that `bytes` are the chunk at `position`.
    pub fn verify<'a>(
        &self,
        position: u64,
        bytes: &'a [u8],
    ) -> Result<VerifiedChunk<'a>, ChunkError> {
        let Some(entry) = self.index.entry(position) else {
            return Err(ChunkError::PositionOutOfRange {
                position,
                count: self.index.len(),
            });
        };
        if bytes.len() as u64 != u64::from(entry.len()) {
            return Err(ChunkError::LengthMismatch {
                position,
                expected: entry.len(),
                actual: bytes.len() as u64,
            });
        }
        let actual = ChunkId::of(bytes);
        if actual != *entry.id() {
            return Err(ChunkError::HashMismatch {
                position,
                expected: *entry.id(),
                actual,
            });
        }
        Ok(VerifiedChunk {
            position,
            offset: entry.offset(),
            id: actual,
            bytes,
        })
    }

    /// Every position where the chunk `id` occurs, in increasing order (empty if none).
    pub fn positions_of(&self, id: &ChunkId) -> &[u64] {
        let entries = self.index.entries();
        let id_at = |position: &u64| entries[*position as usize].id();
        let start = self.by_id.partition_point(|p| id_at(p) < id);
        let len = self.by_id[start..].partition_point(|p| id_at(p) == id);
        &self.by_id[start..start + len]
    }

    /// The accepted index.
    pub fn index(&self) -> &ChunkIndex {
        &self.index
    }

    /// A whole-artifact check against the same signed target.
    pub fn artifact_check(&self) -> ArtifactCheck {
        ArtifactCheck {
            whole: WholeHash::default(),
            length: self.length,
            sha256: self.sha256,
            blake3: self.blake3,
        }
    }
}

impl fmt::Debug for ChunkVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkVerifier")
            .field("chunks", &self.index.len())
            .field("length", &self.length)
            .field("params", &self.index.params())
            .finish_non_exhaustive()
    }
}

impl<'a> VerifiedChunk<'a> {
    /// The chunk's position in the artifact's chunk list.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Where the chunk starts in the artifact.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The chunk id.
    pub fn id(&self) -> &ChunkId {
        &self.id
    }

    /// The verified bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

impl fmt::Debug for VerifiedChunk<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedChunk")
            .field("position", &self.position)
            .field("offset", &self.offset)
            .field("id", &self.id)
            .field("len", &self.bytes.len())
            .finish()
    }
}

impl ArtifactCheck {
    /// A check of `artifact` that hashes on the caller's thread.
    pub fn new(artifact: &VerifiedArtifact) -> Self {
        Self {
            whole: WholeHash::default(),
            length: artifact.length(),
            sha256: *artifact.sha256(),
            blake3: artifact.chunks().blake3,
        }
    }

    /// Feed the next bytes of the artifact.
    pub fn update(&mut self, bytes: &[u8]) -> Result<(), ArtifactError> {
        within(self.length, self.whole.len, bytes)?;
        self.whole.update(bytes);
        Ok(())
    }

    /// Feed the next verified chunk; it must start where the bytes checked so far end.
    pub fn push(&mut self, chunk: &VerifiedChunk<'_>) -> Result<(), ArtifactError> {
        if chunk.offset != self.whole.len {
            return Err(ArtifactError::OutOfOrder {
                position: chunk.position,
                expected: self.whole.len,
                found: chunk.offset,
            });
        }
        self.update(chunk.bytes)
    }

    /// Bytes checked so far.
    pub fn len(&self) -> u64 {
        self.whole.len
    }

    /// Whether nothing was fed yet.
    pub fn is_empty(&self) -> bool {
        self.whole.len == 0
    }

    /// Compare the length, SHA-256 and BLAKE3 with the signed values.
    pub fn finish(self) -> Result<(), ArtifactError> {
        let (blake3, sha256, length) = self.whole.finalize();
        if length != self.length {
            return Err(ArtifactError::TooShort {
                signed: self.length,
                actual: length,
            });
        }
        if sha256 != self.sha256 {
            return Err(ArtifactError::Sha256Mismatch {
                signed: self.sha256,
                actual: sha256,
            });
        }
        if blake3 != self.blake3 {
            return Err(ArtifactError::Blake3Mismatch {
                signed: self.blake3,
                actual: blake3,
            });
        }
        Ok(())
    }
}

/// `bytes` fit in a `length`-byte artifact of which `fed` bytes were checked already.
pub(super) fn within(length: u64, fed: u64, bytes: &[u8]) -> Result<(), ArtifactError> {
    if bytes.len() as u64 > length - fed {
        return Err(ArtifactError::TooLong { signed: length });
    }
    Ok(())
}

impl ArtifactCheck {
    /// Split the check into two halves, to be fed the same bytes in the same order on two
    /// threads: the first hashes SHA-256 and the BLAKE3 blocks that `share` gives it, the
    /// second the other blocks (see [`CheckHalf`]). The artifact matches only if
    /// [`ArtifactCheck::finish_split`] says so, given both halves.
    pub fn split(self, share: BlockShare) -> (CheckHalf, CheckHalf) {
        let WholeHash {
            blake3,
            sha256,
            len,
        } = self.whole;
        CheckHalf::pair(
            blake3,
            sha256,
            len,
            self.length,
            (self.sha256, self.blake3),
            share,
        )
    }

    /// The result of a split check: the length that each half was fed, then SHA-256 and
    /// BLAKE3, against the signed values (the same errors as [`ArtifactCheck::finish`]).
    pub fn finish_split(a: CheckHalf, b: CheckHalf) -> Result<(), ArtifactError> {
        split::finish_split(a, b)
    }
}

impl fmt::Debug for ArtifactCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArtifactCheck")
            .field("checked", &self.whole.len)
            .field("length", &self.length)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::chunk::testutil::{chunk_ranges, ingest_all, pseudo_random, verified_artifact};
    use crate::chunk::{ArtifactChunks, ChunkingParams, Ingested};

    fn small() -> ChunkingParams {
        ChunkingParams::new(64, 256, 1024).unwrap()
    }

    fn setup(data: &[u8]) -> (Ingested, VerifiedArtifact) {
        let out = ingest_all(small(), data);
        let artifact = verified_artifact(&out);
        (out, artifact)
    }

    #[test]
    fn accepts_and_verifies_every_chunk() {
        let data = pseudo_random(3, 20_000);
        let (out, artifact) = setup(&data);
        let verifier = ChunkVerifier::new(&artifact, &out.index).unwrap();
        let mut check = verifier.artifact_check();
        for (position, range) in chunk_ranges(verifier.index()).enumerate() {
            let chunk = verifier
                .verify(position as u64, &data[range.clone()])
                .unwrap();
            assert_eq!(chunk.offset(), range.start as u64);
            assert_eq!(chunk.bytes(), &data[range.clone()]);
            assert!(
                verifier
                    .positions_of(chunk.id())
                    .contains(&(position as u64))
            );
            check.push(&chunk).unwrap();
        }
        check.finish().unwrap();
    }

    #[test]
    fn chunk_errors() {
        let data = pseudo_random(4, 5_000);
        let (out, artifact) = setup(&data);
        let verifier = ChunkVerifier::new(&artifact, &out.index).unwrap();
        let entry = *verifier.index().entry(1).unwrap();
        let range = entry.offset() as usize..entry.end() as usize;
        let count = verifier.index().len();
        assert_eq!(
            verifier.verify(count, &data[range.clone()]).unwrap_err(),
            ChunkError::PositionOutOfRange {
                position: count,
                count
            }
        );
        assert_eq!(
            verifier
                .verify(1, &data[range.start..range.end - 1])
                .unwrap_err(),
            ChunkError::LengthMismatch {
                position: 1,
                expected: entry.len(),
                actual: u64::from(entry.len()) - 1
            }
        );
        let mut tampered = data[range.clone()].to_vec();
        tampered[10] ^= 0x80;
        assert_eq!(
            verifier.verify(1, &tampered).unwrap_err(),
            ChunkError::HashMismatch {
                position: 1,
                expected: *entry.id(),
                actual: ChunkId::of(&tampered)
            }
        );
        // The right bytes at the wrong position are refused too.
        let other = *verifier.index().entry(2).unwrap();
        if other.id() != entry.id() && other.len() == entry.len() {
            assert!(matches!(
                verifier.verify(2, &data[range]),
                Err(ChunkError::HashMismatch { position: 2, .. })
            ));
        }
    }

    #[test]
    fn repeated_chunks_have_several_positions() {
        // All-zero data cuts into identical `max`-long chunks.
        let data = vec![0u8; 1024 * 5 + 7];
        let (out, artifact) = setup(&data);
        let verifier = ChunkVerifier::new(&artifact, &out.index).unwrap();
        assert_eq!(verifier.index().len(), 6);
        let full = ChunkId::of(&[0u8; 1024]);
        let tail = ChunkId::of(&[0u8; 7]);
        assert_eq!(verifier.positions_of(&full), &[0, 1, 2, 3, 4]);
        assert_eq!(verifier.positions_of(&tail), &[5]);
        assert_eq!(verifier.positions_of(&ChunkId([0; 32])), &[] as &[u64]);
        for position in 0..5 {
            verifier.verify(position, &data[..1024]).unwrap();
        }
    }

    #[test]
    fn index_checks_against_the_signed_target() {
        let data = pseudo_random(5, 9_000);
        let (out, artifact) = setup(&data);
        let with = |edit: &dyn Fn(&mut ArtifactChunks, &mut u64)| {
            let mut chunks = out.chunks.clone();
            let mut length = out.length;
            edit(&mut chunks, &mut length);
            crate::tuf::testkit::assume_verified("artifacts/t.img", length, out.sha256, chunks)
        };
        // The blob itself.
        assert_eq!(
            ChunkVerifier::new(&artifact, &out.index[..out.index.len() - 1]).unwrap_err(),
            IndexError::BlobLengthMismatch {
                signed: out.index.len() as u64,
                actual: out.index.len() as u64 - 1
            }
        );
        let mut flipped = out.index.clone();
        flipped[50] ^= 1;
        assert_eq!(
            ChunkVerifier::new(&artifact, &flipped).unwrap_err(),
            IndexError::BlobHashMismatch {
                signed: out.chunks.chunk_index,
                actual: ChunkId::of(&flipped)
            }
        );
        assert!(
            ChunkVerifier::new(&artifact, &flipped)
                .unwrap_err()
                .source_at_fault()
        );
        // The signed fields around it.
        let other = ChunkingParams::new(64, 512, 1024).unwrap();
        assert_eq!(
            ChunkVerifier::new(&with(&|c, _| c.chunking = other), &out.index).unwrap_err(),
            IndexError::ParamsMismatch {
                signed: other,
                index: small()
            }
        );
        assert_eq!(
            ChunkVerifier::new(&with(&|c, _| c.chunks += 1), &out.index).unwrap_err(),
            IndexError::CountMismatch {
                signed: out.chunks.chunks + 1,
                index: out.chunks.chunks
            }
        );
        assert_eq!(
            ChunkVerifier::new(&with(&|_, l| *l -= 1), &out.index).unwrap_err(),
            IndexError::ArtifactLengthMismatch {
                signed: out.length - 1,
                index: out.length
            }
        );
        let wrong_root = Blake3Hash([7; 32]);
        let err =
            ChunkVerifier::new(&with(&|c, _| c.chunk_tree = wrong_root), &out.index).unwrap_err();
        assert_eq!(
            err,
            IndexError::TreeRootMismatch {
                signed: wrong_root,
                computed: out.chunks.chunk_tree
            }
        );
        assert!(!err.source_at_fault());
    }

    #[test]
    fn whole_artifact_check_errors() {
        let data = pseudo_random(6, 3_000);
        let (out, artifact) = setup(&data);
        let verifier = ChunkVerifier::new(&artifact, &out.index).unwrap();

        let mut check = ArtifactCheck::new(&artifact);
        check.update(&data[..100]).unwrap();
        assert_eq!(
            check.clone().finish(),
            Err(ArtifactError::TooShort {
                signed: 3000,
                actual: 100
            })
        );
        assert_eq!(
            check.update(&data),
            Err(ArtifactError::TooLong { signed: 3000 })
        );

        let entry = *verifier.index().entry(1).unwrap();
        let second = verifier
            .verify(1, &data[entry.offset() as usize..entry.end() as usize])
            .unwrap();
        assert_eq!(
            verifier.artifact_check().push(&second),
            Err(ArtifactError::OutOfOrder {
                position: 1,
                expected: 0,
                found: entry.offset()
            })
        );

        let mut corrupted = data.clone();
        corrupted[2000] ^= 1;
        let mut check = ArtifactCheck::new(&artifact);
        check.update(&corrupted).unwrap();
        assert_eq!(
            check.finish(),
            Err(ArtifactError::Sha256Mismatch {
                signed: out.sha256,
                actual: Sha256Hash::of(&corrupted)
            })
        );

        let bad_blake3 = crate::tuf::testkit::assume_verified(
            "artifacts/t.img",
            out.length,
            out.sha256,
            ArtifactChunks {
                blake3: Blake3Hash([1; 32]),
                ..out.chunks.clone()
            },
        );
        let mut check = ArtifactCheck::new(&bad_blake3);
        check.update(&data).unwrap();
        assert_eq!(
            check.finish(),
            Err(ArtifactError::Blake3Mismatch {
                signed: Blake3Hash([1; 32]),
                actual: out.chunks.blake3
            })
        );
    }

    #[test]
    fn split_check_agrees_and_refuses_as_the_whole() {
        let data = pseudo_random(9, 50_000);
        let (out, artifact) = setup(&data);
        // Blocks of 4 KiB, every other one to each half: a byte changed at 40 000 (block 9)
        // is in the second half's share.
        let share = BlockShare::new(4096, 1, 2).unwrap();
        // Fed in different pieces on each half, the same bytes: accepted.
        let (mut sha256, mut blake3) = ArtifactCheck::new(&artifact).split(share);
        sha256.update(&data[..7]).unwrap();
        sha256.update(&data[7..]).unwrap();
        blake3.update(&data[..30_000]).unwrap();
        blake3.update(&data[30_000..]).unwrap();
        assert_eq!(sha256.len(), data.len() as u64);
        ArtifactCheck::finish_split(sha256, blake3).unwrap();
        // Split after some bytes: the halves carry them.
        let mut check = ArtifactCheck::new(&artifact);
        check.update(&data[..100]).unwrap();
        let (mut sha256, mut blake3) = check.split(share);
        sha256.update(&data[100..]).unwrap();
        blake3.update(&data[100..]).unwrap();
        ArtifactCheck::finish_split(sha256, blake3).unwrap();

        // One half short: refused, whichever.
        let (mut sha256, mut blake3) = ArtifactCheck::new(&artifact).split(share);
        sha256.update(&data).unwrap();
        blake3.update(&data[..100]).unwrap();
        assert_eq!(
            ArtifactCheck::finish_split(sha256, blake3),
            Err(ArtifactError::TooShort {
                signed: 50_000,
                actual: 100
            })
        );
        // Too long.
        let (mut sha256, mut blake3) = ArtifactCheck::new(&artifact).split(share);
        sha256.update(&data[..10]).unwrap();
        assert_eq!(
            sha256.update(&data),
            Err(ArtifactError::TooLong { signed: 50_000 })
        );
        blake3.update(&data[..10]).unwrap();
        assert_eq!(
            blake3.update(&data),
            Err(ArtifactError::TooLong { signed: 50_000 })
        );
        // A byte changed in what one half saw: that half's hash refuses it.
        let mut corrupted = data.clone();
        corrupted[40_000] ^= 1;
        let (mut sha256, mut blake3) = ArtifactCheck::new(&artifact).split(share);
        sha256.update(&corrupted).unwrap();
        blake3.update(&data).unwrap();
        assert_eq!(
            ArtifactCheck::finish_split(sha256, blake3),
            Err(ArtifactError::Sha256Mismatch {
                signed: out.sha256,
                actual: Sha256Hash::of(&corrupted)
            })
        );
        let (mut sha256, mut blake3) = ArtifactCheck::new(&artifact).split(share);
        sha256.update(&data).unwrap();
        blake3.update(&corrupted).unwrap();
        assert_eq!(
            ArtifactCheck::finish_split(sha256, blake3),
            Err(ArtifactError::Blake3Mismatch {
                signed: out.chunks.blake3,
                actual: Blake3Hash(*blake3::hash(&corrupted).as_bytes())
            })
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        #[test]
        fn ingest_then_verify(seed in any::<u64>(), len in 0usize..12_000, flip in any::<prop::sample::Index>()) {
            let data = pseudo_random(seed, len);
            let (out, artifact) = setup(&data);
            let verifier = ChunkVerifier::new(&artifact, &out.index).unwrap();
            let mut check = verifier.artifact_check();
            for (position, range) in chunk_ranges(verifier.index()).enumerate() {
                let chunk = verifier.verify(position as u64, &data[range]).unwrap();
                check.push(&chunk).unwrap();
            }
            check.finish().unwrap();
            if len > 0 {
                // One flipped bit anywhere is caught by the chunk that holds it.
                let at = flip.index(len);
                let mut bad = data.clone();
                bad[at] ^= 1;
                let entry = verifier.index().entries().iter().find(|e| e.end() > at as u64).unwrap();
                let position = verifier.index().entries().iter().position(|e| e == entry).unwrap() as u64;
                let range = entry.offset() as usize..entry.end() as usize;
                let is_hash_mismatch = matches!(verifier.verify(position, &bad[range]), Err(ChunkError::HashMismatch { .. }));
                prop_assert!(is_hash_mismatch);
            }
        }
    }
}
