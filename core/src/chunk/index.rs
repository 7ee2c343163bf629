//! The binary chunk index.

use super::params::{ChunkingParams, ParamsError};
use super::tree::ChunkTree;
use crate::digest::{Blake3Hash, ChunkId};
use crate::tuf::VerifiedArtifact;

/// The first 8 bytes of every chunk index.
pub const INDEX_MAGIC: [u8; 8] = *b"ENGMCIDX";
/// The only index format version defined.
pub const INDEX_VERSION: u16 = 1;
/// The algorithm number of `fastcdc-2020` in the index header.
pub const INDEX_ALGORITHM_FASTCDC_2020: u16 = 1;
/// The length of the index header in bytes.
pub const INDEX_HEADER_LEN: usize = 40;
/// The length of one index entry in bytes: id (32) and length (u32 LE).
pub const INDEX_ENTRY_LEN: usize = 36;

/// A parsed chunk index: the chunking parameters, the total length, and per chunk (in artifact
/// order) its id, length and offset.
///
/// Layout (all integers little-endian):
///
/// | offset | size | field |
/// |---:|---:|---|
/// | 0 | 8 | magic `ENGMCIDX` |
/// | 8 | 2 | format version, `1` |
/// | 10 | 2 | algorithm, `1` = `fastcdc-2020` |
/// | 12 | 4 | `min` |
/// | 16 | 4 | `avg` |
/// | 20 | 4 | `max` |
/// | 24 | 8 | chunk count `n` |
/// | 32 | 8 | total length of the artifact |
/// | 40 + 36 i | 32 | id of chunk `i` |
/// | 72 + 36 i | 4 | length of chunk `i` |
///
/// An index holds exactly `40 + 36 n` bytes. Every chunk is `1..=max` bytes long, and at least
/// `min` bytes unless it is the last; the lengths add up to the total length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkIndex {
    params: ChunkingParams,
    total_length: u64,
    entries: Vec<IndexEntry>,
}

/// One chunk of an index: its id, its length and where it starts in the artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IndexEntry {
    id: ChunkId,
    offset: u64,
    len: u32,
}

/// Bounds applied while parsing an index, before anything is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexLimits {
    /// The most chunks the index may list.
    pub max_chunks: u64,
    /// The longest total length the index may declare.
    pub max_length: u64,
}

/// A chunk index was refused.
///
/// Who is at fault: for the variants up to [`IndexError::LengthMismatch`], whoever produced the
/// blob (when the blob came from [`ChunkVerifier::new`](super::ChunkVerifier::new), they are
/// wrapped in [`IndexError::SignedIndexMalformed`]: see there). [`IndexError::BlobLengthMismatch`]
/// and [`IndexError::BlobHashMismatch`] blame the source that served the blob: it is not the
/// signed index. The remaining variants blame the release: the blob is the signed one, but the
/// signed target contradicts it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// The blob ends before the header or an entry does.
    #[error("chunk index truncated: {expected} bytes expected, {found} found")]
    Truncated {
        /// The length the header calls for (saturated at `u64::MAX`).
        expected: u64,
        /// The length of the blob.
        found: u64,
    },
    /// The blob does not start with `ENGMCIDX`.
    #[error("not a chunk index: bad magic {found:02x?}")]
    BadMagic {
        /// The first 8 bytes of the blob.
        found: [u8; 8],
    },
    /// The format version is not 1.
    #[error("unsupported chunk index version {found}")]
    UnsupportedVersion {
        /// The version in the header.
        found: u16,
    },
    /// The algorithm number is not 1 (`fastcdc-2020`).
    #[error("unsupported chunking algorithm number {found} in chunk index")]
    UnsupportedAlgorithm {
        /// The algorithm number in the header.
        found: u16,
    },
    /// The header's chunking parameters are invalid.
    #[error("invalid chunking parameters in chunk index")]
    InvalidParams {
        /// Why they are invalid.
        #[source]
        source: ParamsError,
    },
    /// The header lists more chunks than allowed.
    #[error("chunk index lists {count} chunks, at most {max} allowed")]
    TooManyChunks {
        /// The count in the header.
        count: u64,
        /// The limit.
        max: u64,
    },
    /// The header declares a longer artifact than allowed.
    #[error("chunk index declares a {declared}-byte artifact, at most {max} allowed")]
    LengthOverLimit {
        /// The total length in the header.
        declared: u64,
        /// The limit.
        max: u64,
    },
    /// Bytes follow the last entry.
    #[error("chunk index has trailing bytes: {expected} bytes expected, {found} found")]
    TrailingBytes {
        /// The length the header calls for.
        expected: u64,
        /// The length of the blob.
        found: u64,
    },
    /// An entry has length 0.
    #[error("chunk {position} in the index is empty")]
    EmptyChunk {
        /// Its position (0-based).
        position: u64,
    },
    /// An entry is longer than the maximum chunk length.
    #[error("chunk {position} in the index is {len} bytes long, longer than the maximum {max}")]
    ChunkTooLong {
        /// Its position (0-based).
        position: u64,
        /// Its length.
        len: u32,
        /// The maximum chunk length of the parameters.
        max: u32,
    },
    /// An entry other than the last is shorter than the minimum chunk length.
    #[error("chunk {position} in the index is {len} bytes long, shorter than the minimum {min}")]
    ChunkTooShort {
        /// Its position (0-based).
        position: u64,
        /// Its length.
        len: u32,
        /// The minimum chunk length of the parameters.
        min: u32,
    },
    /// The chunks up to this one are already longer than the declared total length.
    #[error("chunk {position} ends beyond the declared total length {declared}")]
    ChunksExceedLength {
        /// The position (0-based) of the first chunk that does not fit.
        position: u64,
        /// The total length in the header.
        declared: u64,
    },
    /// The chunk lengths add up to less than the declared total length.
    #[error("chunk lengths add up to {sum}, the header declares {declared}")]
    LengthMismatch {
        /// The total length in the header.
        declared: u64,
        /// The sum of the chunk lengths.
        sum: u64,
    },
    /// The blob's length is not the signed `chunk_index_length`: the source served another
    /// blob.
    #[error("chunk index is {actual} bytes long, the signed length is {signed}")]
    BlobLengthMismatch {
        /// `custom.enigm.chunk_index_length`.
        signed: u64,
        /// The length of the blob served.
        actual: u64,
    },
    /// The blob's BLAKE3 is not the signed `chunk_index`: the source served another blob.
    #[error("chunk index hash {actual} does not match the signed {signed}")]
    BlobHashMismatch {
        /// `custom.enigm.chunk_index`.
        signed: ChunkId,
        /// The hash of the blob served.
        actual: ChunkId,
    },
    /// The blob is the signed one (length and hash match) but does not parse: the release is
    /// bad, not the source that served the blob.
    #[error("the signed chunk index is malformed")]
    SignedIndexMalformed {
        /// Why it does not parse.
        #[source]
        source: Box<Self>,
    },
    /// The index's chunking parameters are not the signed `chunking`: the release is bad.
    #[error("chunk index parameters {index:?} differ from the signed {signed:?}")]
    ParamsMismatch {
        /// `custom.enigm.chunking`.
        signed: ChunkingParams,
        /// The parameters in the index header.
        index: ChunkingParams,
    },
    /// The index's chunk count is not the signed `chunks`: the release is bad.
    #[error("chunk index lists {index} chunks, the signed count is {signed}")]
    CountMismatch {
        /// `custom.enigm.chunks`.
        signed: u64,
        /// The count in the index.
        index: u64,
    },
    /// The index's total length is not the signed artifact length: the release is bad.
    #[error("chunk index covers {index} bytes, the signed artifact length is {signed}")]
    ArtifactLengthMismatch {
        /// The target's `length`.
        signed: u64,
        /// The total length in the index.
        index: u64,
    },
    /// The tree root recomputed from the index is not the signed `chunk_tree`: the release is
    /// bad.
    #[error("chunk tree root {computed} does not match the signed {signed}")]
    TreeRootMismatch {
        /// `custom.enigm.chunk_tree`.
        signed: Blake3Hash,
        /// The root recomputed from the index.
        computed: Blake3Hash,
    },
}

impl IndexError {
    /// Whether the source that served the blob is to blame (it served something other than
    /// the signed index), as opposed to the release or a caller.
    pub fn source_at_fault(&self) -> bool {
        matches!(
            self,
            Self::BlobLengthMismatch { .. } | Self::BlobHashMismatch { .. }
        )
    }
}

impl IndexLimits {
    /// No bounds beyond the blob's own length. Use only for a blob whose length is already
    /// bounded and whose origin is trusted (for instance one whose hash matched signed
    /// metadata).
    pub const UNBOUNDED: Self = Self {
        max_chunks: u64::MAX,
        max_length: u64::MAX,
    };

    /// Bounds from signed metadata: at most `chunks` chunks and `length` bytes.
    pub fn for_artifact(artifact: &VerifiedArtifact) -> Self {
        Self {
            max_chunks: artifact.chunks().chunks,
            max_length: artifact.length(),
        }
    }
}

impl ChunkIndex {
    /// Parse an index blob. Every length is bounded (by `limits` and by the blob's own length)
    /// before anything is allocated.
    pub fn parse(bytes: &[u8], limits: IndexLimits) -> Result<Self, IndexError> {
        let found = bytes.len() as u64;
        let truncated = |expected: u64| IndexError::Truncated { expected, found };

        let Some(magic) = bytes.first_chunk::<8>() else {
            return Err(truncated(INDEX_HEADER_LEN as u64));
        };
        if *magic != INDEX_MAGIC {
            return Err(IndexError::BadMagic { found: *magic });
        }
        let Some((header, body)) = bytes.split_first_chunk::<INDEX_HEADER_LEN>() else {
            return Err(truncated(INDEX_HEADER_LEN as u64));
        };
        let header = Header::decode(header);
        if header.version != INDEX_VERSION {
            return Err(IndexError::UnsupportedVersion {
                found: header.version,
            });
        }
        if header.algorithm != INDEX_ALGORITHM_FASTCDC_2020 {
            return Err(IndexError::UnsupportedAlgorithm {
                found: header.algorithm,
            });
        }
        let params = ChunkingParams::new(header.min, header.avg, header.max)
            .map_err(|source| IndexError::InvalidParams { source })?;
        if header.count > limits.max_chunks {
            return Err(IndexError::TooManyChunks {
                count: header.count,
                max: limits.max_chunks,
            });
        }
        if header.total_length > limits.max_length {
            return Err(IndexError::LengthOverLimit {
                declared: header.total_length,
                max: limits.max_length,
            });
        }
        let expected = header
            .count
            .checked_mul(INDEX_ENTRY_LEN as u64)
            .and_then(|body| body.checked_add(INDEX_HEADER_LEN as u64))
            .unwrap_or(u64::MAX);
        if found < expected {
            return Err(truncated(expected));
        }
        if found > expected {
            return Err(IndexError::TrailingBytes { expected, found });
        }

        // `count * 36` bytes are present, so this allocation is bounded by the blob.
        let mut entries = Entries::new(params, Some(header.total_length), body.len());
        for entry in body.chunks_exact(INDEX_ENTRY_LEN) {
            let Some((id, len)) = entry.split_first_chunk::<32>() else {
                return Err(truncated(expected));
            };
            let Some(len) = len.first_chunk::<4>() else {
                return Err(truncated(expected));
            };
            entries.push(ChunkId(*id), u32::from_le_bytes(*len))?;
        }
        entries.finish()
    }

    /// Build an index from chunk ids and lengths in artifact order, with the same checks as
    /// [`ChunkIndex::parse`].
    pub fn new(
        params: ChunkingParams,
        chunks: impl IntoIterator<Item = (ChunkId, u32)>,
    ) -> Result<Self, IndexError> {
        let mut entries = Entries::new(params, None, 0);
        for (id, len) in chunks {
            entries.push(id, len)?;
        }
        entries.finish()
    }

    /// The index blob.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(INDEX_HEADER_LEN + INDEX_ENTRY_LEN * self.entries.len());
        out.extend_from_slice(&encode_header(
            self.params,
            self.entries.len() as u64,
            self.total_length,
        ));
        for entry in &self.entries {
            out.extend_from_slice(&encode_entry(&entry.id, entry.len));
        }
        out
    }

    /// The chunking parameters in the header.
    pub fn params(&self) -> ChunkingParams {
        self.params
    }

    /// The total length of the artifact.
    pub fn total_length(&self) -> u64 {
        self.total_length
    }

    /// The number of chunks.
    pub fn len(&self) -> u64 {
        self.entries.len() as u64
    }

    /// Whether the artifact is empty (no chunks).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// All entries in artifact order.
    pub fn entries(&self) -> &[IndexEntry] {
        &self.entries
    }

    /// The entry at `position`, if there is one.
    pub fn entry(&self, position: u64) -> Option<&IndexEntry> {
        usize::try_from(position)
            .ok()
            .and_then(|position| self.entries.get(position))
    }

    /// The root of the chunk tree over the entries.
    pub fn tree_root(&self) -> Blake3Hash {
        let mut tree = ChunkTree::new();
        for entry in &self.entries {
            tree.push(&entry.id, entry.len);
        }
        tree.root()
    }
}

impl IndexEntry {
    /// The chunk id: BLAKE3-256 of the chunk's bytes.
    pub fn id(&self) -> &ChunkId {
        &self.id
    }

    /// Where the chunk starts in the artifact.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The chunk's length in bytes.
    #[allow(clippy::len_without_is_empty, reason = "an index entry is never empty")]
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Where the chunk ends in the artifact (exclusive).
    pub fn end(&self) -> u64 {
        self.offset + u64::from(self.len)
    }
}

/// The header fields, decoded but not yet checked.
struct Header {
    version: u16,
    algorithm: u16,
    min: u32,
    avg: u32,
    max: u32,
    count: u64,
    total_length: u64,
}

impl Header {
    fn decode(header: &[u8; INDEX_HEADER_LEN]) -> Self {
        let u16_at = |at: usize| u16::from_le_bytes([header[at], header[at + 1]]);
        let u32_at = |at: usize| u32::from_le_bytes(std::array::from_fn(|i| header[at + i]));
        let u64_at = |at: usize| u64::from_le_bytes(std::array::from_fn(|i| header[at + i]));
        Self {
            version: u16_at(8),
            algorithm: u16_at(10),
            min: u32_at(12),
            avg: u32_at(16),
            max: u32_at(20),
            count: u64_at(24),
            total_length: u64_at(32),
        }
    }
}

pub(crate) fn encode_header(
    params: ChunkingParams,
    count: u64,
    total_length: u64,
) -> [u8; INDEX_HEADER_LEN] {
    let mut out = [0u8; INDEX_HEADER_LEN];
    out[0..8].copy_from_slice(&INDEX_MAGIC);
    out[8..10].copy_from_slice(&INDEX_VERSION.to_le_bytes());
    out[10..12].copy_from_slice(&INDEX_ALGORITHM_FASTCDC_2020.to_le_bytes());
    out[12..16].copy_from_slice(&params.min().to_le_bytes());
    out[16..20].copy_from_slice(&params.avg().to_le_bytes());
    out[20..24].copy_from_slice(&params.max().to_le_bytes());
    out[24..32].copy_from_slice(&count.to_le_bytes());
    out[32..40].copy_from_slice(&total_length.to_le_bytes());
    out
}

pub(crate) fn encode_entry(id: &ChunkId, len: u32) -> [u8; INDEX_ENTRY_LEN] {
    let mut out = [0u8; INDEX_ENTRY_LEN];
    out[..32].copy_from_slice(id.as_bytes());
    out[32..].copy_from_slice(&len.to_le_bytes());
    out
}

/// Checks entries one by one and accumulates them.
struct Entries {
    params: ChunkingParams,
    declared: Option<u64>,
    entries: Vec<IndexEntry>,
    sum: u64,
}

impl Entries {
    fn new(params: ChunkingParams, declared: Option<u64>, body_len: usize) -> Self {
        Self {
            params,
            declared,
            entries: Vec::with_capacity(body_len / INDEX_ENTRY_LEN),
            sum: 0,
        }
    }

    fn push(&mut self, id: ChunkId, len: u32) -> Result<(), IndexError> {
        let position = self.entries.len() as u64;
        if len == 0 {
            return Err(IndexError::EmptyChunk { position });
        }
        if len > self.params.max() {
            return Err(IndexError::ChunkTooLong {
                position,
                len,
                max: self.params.max(),
            });
        }
        // Only the last chunk may be shorter than `min`: now that another follows, check the
        // previous one.
        if let Some(previous) = self.entries.last()
            && previous.len < self.params.min()
        {
            return Err(IndexError::ChunkTooShort {
                position: position - 1,
                len: previous.len,
                min: self.params.min(),
            });
        }
        let limit = self.declared.unwrap_or(u64::MAX);
        let offset = self.sum;
        let Some(sum) = offset
            .checked_add(u64::from(len))
            .filter(|&sum| sum <= limit)
        else {
            return Err(IndexError::ChunksExceedLength {
                position,
                declared: limit,
            });
        };
        self.sum = sum;
        self.entries.push(IndexEntry { id, offset, len });
        Ok(())
    }

    fn finish(self) -> Result<ChunkIndex, IndexError> {
        if let Some(declared) = self.declared
            && declared != self.sum
        {
            return Err(IndexError::LengthMismatch {
                declared,
                sum: self.sum,
            });
        }
        Ok(ChunkIndex {
            params: self.params,
            total_length: self.sum,
            entries: self.entries,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::chunk::testutil::arb_index;

    fn small() -> ChunkingParams {
        ChunkingParams::new(64, 256, 1024).unwrap()
    }

    fn sample() -> ChunkIndex {
        ChunkIndex::new(
            small(),
            [
                (ChunkId::of(b"a"), 1024),
                (ChunkId::of(b"b"), 64),
                (ChunkId::of(b"a"), 1024),
                (ChunkId::of(b"c"), 1),
            ],
        )
        .unwrap()
    }

    #[test]
    fn layout_is_the_documented_one() {
        let index = sample();
        let bytes = index.encode();
        assert_eq!(bytes.len(), 40 + 4 * 36);
        assert_eq!(&bytes[..8], b"ENGMCIDX");
        assert_eq!(&bytes[8..12], &[1, 0, 1, 0]);
        assert_eq!(&bytes[12..24], &[64, 0, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0]);
        assert_eq!(&bytes[24..32], &4u64.to_le_bytes());
        assert_eq!(&bytes[32..40], &2113u64.to_le_bytes());
        assert_eq!(&bytes[40..72], ChunkId::of(b"a").as_bytes());
        assert_eq!(&bytes[72..76], &1024u32.to_le_bytes());
        assert_eq!(&bytes[76..108], ChunkId::of(b"b").as_bytes());
        assert_eq!(&bytes[112..144], ChunkId::of(b"a").as_bytes());
        let offsets: Vec<u64> = index.entries().iter().map(IndexEntry::offset).collect();
        assert_eq!(offsets, [0, 1024, 1088, 2112]);
        assert_eq!(index.entry(3).map(IndexEntry::end), Some(2113));
        assert_eq!(index.entry(4), None);
        assert_eq!(index.entry(u64::MAX), None);
        assert_eq!(ChunkIndex::parse(&bytes, IndexLimits::UNBOUNDED), Ok(index));
    }

    #[test]
    fn empty_index() {
        let index = ChunkIndex::new(ChunkingParams::DEFAULT, []).unwrap();
        let bytes = index.encode();
        assert_eq!(bytes.len(), INDEX_HEADER_LEN);
        let parsed = ChunkIndex::parse(
            &bytes,
            IndexLimits {
                max_chunks: 0,
                max_length: 0,
            },
        )
        .unwrap();
        assert!(parsed.is_empty());
        assert_eq!(parsed.tree_root(), ChunkTree::empty_root());
    }

    #[test]
    fn header_errors() {
        let good = sample().encode();
        let parse = |bytes: &[u8]| ChunkIndex::parse(bytes, IndexLimits::UNBOUNDED);
        assert_eq!(
            parse(&good[..7]),
            Err(IndexError::Truncated {
                expected: 40,
                found: 7
            })
        );
        assert_eq!(
            parse(&good[..39]),
            Err(IndexError::Truncated {
                expected: 40,
                found: 39
            })
        );
        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(
            parse(&bad),
            Err(IndexError::BadMagic {
                found: *b"XNGMCIDX"
            })
        );
        let mut bad = good.clone();
        bad[8] = 2;
        assert_eq!(
            parse(&bad),
            Err(IndexError::UnsupportedVersion { found: 2 })
        );
        let mut bad = good.clone();
        bad[11] = 1;
        assert_eq!(
            parse(&bad),
            Err(IndexError::UnsupportedAlgorithm { found: 257 })
        );
        let mut bad = good.clone();
        bad[12] = 65;
        assert_eq!(
            parse(&bad),
            Err(IndexError::InvalidParams {
                source: ParamsError::OddMin { min: 65 }
            })
        );
    }

    #[test]
    fn count_is_bounded_before_allocation() {
        let mut bad = sample().encode();
        bad[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(
            ChunkIndex::parse(&bad, IndexLimits::UNBOUNDED),
            Err(IndexError::Truncated {
                expected: u64::MAX,
                found: 184
            })
        );
        let limits = IndexLimits {
            max_chunks: 4,
            max_length: 2113,
        };
        assert_eq!(
            ChunkIndex::parse(&bad, limits),
            Err(IndexError::TooManyChunks {
                count: u64::MAX,
                max: 4
            })
        );
        bad[24..32].copy_from_slice(&3u64.to_le_bytes());
        assert_eq!(
            ChunkIndex::parse(&bad, limits),
            Err(IndexError::TrailingBytes {
                expected: 148,
                found: 184
            })
        );
        bad[24..32].copy_from_slice(&5u64.to_le_bytes());
        assert_eq!(
            ChunkIndex::parse(&bad, IndexLimits::UNBOUNDED),
            Err(IndexError::Truncated {
                expected: 220,
                found: 184
            })
        );
        let good = sample().encode();
        assert_eq!(
            ChunkIndex::parse(
                &good,
                IndexLimits {
                    max_chunks: 4,
                    max_length: 2112
                }
            ),
            Err(IndexError::LengthOverLimit {
                declared: 2113,
                max: 2112
            })
        );
    }

    #[test]
    fn entry_errors() {
        let entry_len_at = |i: usize| 40 + 36 * i + 32;
        let with_len = |i: usize, len: u32| {
            let mut bytes = sample().encode();
            bytes[entry_len_at(i)..entry_len_at(i) + 4].copy_from_slice(&len.to_le_bytes());
            ChunkIndex::parse(&bytes, IndexLimits::UNBOUNDED)
        };
        assert_eq!(with_len(1, 0), Err(IndexError::EmptyChunk { position: 1 }));
        assert_eq!(
            with_len(0, 1025),
            Err(IndexError::ChunkTooLong {
                position: 0,
                len: 1025,
                max: 1024
            })
        );
        assert_eq!(
            with_len(1, 63),
            Err(IndexError::ChunkTooShort {
                position: 1,
                len: 63,
                min: 64
            })
        );
        assert_eq!(
            with_len(3, 2),
            Err(IndexError::ChunksExceedLength {
                position: 3,
                declared: 2113
            })
        );
        assert_eq!(
            with_len(2, 1000),
            Err(IndexError::LengthMismatch {
                declared: 2113,
                sum: 2089
            })
        );
        // A short last chunk is fine; a short chunk anywhere else is not.
        assert!(with_len(3, 1).is_ok());
        assert!(ChunkIndex::new(small(), [(ChunkId([0; 32]), 5), (ChunkId([0; 32]), 5)]).is_err());
    }

    proptest! {
        #[test]
        fn encode_parse_round_trip(index in arb_index()) {
            let bytes = index.encode();
            prop_assert_eq!(bytes.len(), INDEX_HEADER_LEN + INDEX_ENTRY_LEN * index.entries().len());
            let exact = IndexLimits { max_chunks: index.len(), max_length: index.total_length() };
            let parsed = ChunkIndex::parse(&bytes, exact).unwrap();
            prop_assert_eq!(&parsed, &index);
            prop_assert_eq!(parsed.encode(), bytes);
            let rebuilt = ChunkIndex::new(
                index.params(),
                index.entries().iter().map(|e| (*e.id(), e.len())),
            );
            prop_assert_eq!(rebuilt.as_ref(), Ok(&index));
            let mut end = 0;
            for entry in index.entries() {
                prop_assert_eq!(entry.offset(), end);
                end = entry.end();
            }
            prop_assert_eq!(end, index.total_length());
        }

        #[test]
        fn every_cut_is_refused(index in arb_index(), cut in any::<prop::sample::Index>()) {
            let bytes = index.encode();
            let at = cut.index(bytes.len());
            prop_assert!(ChunkIndex::parse(&bytes[..at], IndexLimits::UNBOUNDED).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = ChunkIndex::parse(&bytes, IndexLimits::UNBOUNDED);
            let mut with_magic = INDEX_MAGIC.to_vec();
            with_magic.extend_from_slice(&bytes);
            let _ = ChunkIndex::parse(&with_magic, IndexLimits::UNBOUNDED);
        }
    }
}
