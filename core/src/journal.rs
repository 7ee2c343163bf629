//! The device's download journal: which chunks of which artifact are already verified and
//! written to the inactive slot, so that an update resumes after a crash or power loss without
//! fetching them again (DESIGN.md §7).
//!
//! The journal is append-only. A 64-byte header binds it to one artifact (target path hash,
//! signed SHA-256 and chunk-tree root); each 48-byte record names a chunk position and id and
//! carries a check value, so a record torn by power loss is recognised and everything from it on
//! is ignored. A record is appended only after the chunk's bytes are written and synced, and on
//! resume the driver still re-hashes each journalled chunk from the slot before it counts it:
//! the journal saves downloads, it is never trusted for content.
//!
//! ```text
//! header : magic "ENGMJRNL" | version u16 LE = 1 | reserved [u8; 6] | binding [u8; 32] | check [u8; 16]
//! record : position u64 LE | chunk id [u8; 32] | check [u8; 8]
//! ```
//! `binding` = BLAKE3("enigm-ota journal binding v1" ‖ target path ‖ 0 ‖ sha256 ‖ chunk tree);
//! `check` of the header = first 16 bytes of BLAKE3(the header's first 48 bytes); `check` of a
//! record = first 8 bytes of BLAKE3(binding ‖ the record's first 40 bytes).

use crate::digest::{Blake3Hash, ChunkId, Sha256Hash};

/// Journal magic.
pub const JOURNAL_MAGIC: [u8; 8] = *b"ENGMJRNL";
/// Header length.
pub const HEADER_LEN: usize = 64;
/// Record length.
pub const RECORD_LEN: usize = 48;

/// Which artifact a journal belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalBinding([u8; 32]);

impl JournalBinding {
    /// The binding of an artifact target.
    pub fn new(target: &str, sha256: &Sha256Hash, chunk_tree: &Blake3Hash) -> Self {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"enigm-ota journal binding v1");
        hasher.update(target.as_bytes());
        hasher.update(&[0]);
        hasher.update(sha256.as_bytes());
        hasher.update(chunk_tree.as_bytes());
        Self(*hasher.finalize().as_bytes())
    }
}

/// One journalled chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalRecord {
    /// Position in the chunk index.
    pub position: u64,
    /// The chunk's id.
    pub id: ChunkId,
}

/// Why a journal file cannot be used at all (the driver starts a fresh one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// Shorter than a header.
    #[error("journal is {len} bytes, shorter than its 64-byte header")]
    Truncated {
        /// The file's length.
        len: usize,
    },
    /// Not a journal.
    #[error("not a journal (bad magic or version)")]
    NotAJournal,
    /// The header's check value is wrong.
    #[error("journal header is damaged")]
    DamagedHeader,
    /// The journal belongs to another artifact.
    #[error("journal belongs to another artifact")]
    OtherArtifact,
    /// The journal names more records than the artifact has chunks.
    #[error("journal holds {records} records, the artifact has {chunks} chunks")]
    TooManyRecords {
        /// Records in the file.
        records: u64,
        /// Chunks in the artifact.
        chunks: u64,
    },
}

/// The header that starts a fresh journal.
pub fn encode_header(binding: &JournalBinding) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[..8].copy_from_slice(&JOURNAL_MAGIC);
    out[8..10].copy_from_slice(&1u16.to_le_bytes());
    out[16..48].copy_from_slice(&binding.0);
    let check = blake3::hash(&out[..48]);
    out[48..].copy_from_slice(&check.as_bytes()[..16]);
    out
}

/// One record to append.
pub fn encode_record(binding: &JournalBinding, record: &JournalRecord) -> [u8; RECORD_LEN] {
    let mut out = [0u8; RECORD_LEN];
    out[..8].copy_from_slice(&record.position.to_le_bytes());
    out[8..40].copy_from_slice(record.id.as_bytes());
    let check = record_check(binding, &out[..40]);
    out[40..].copy_from_slice(&check);
    out
}

fn record_check(binding: &JournalBinding, body: &[u8]) -> [u8; 8] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&binding.0);
    hasher.update(body);
    let mut out = [0u8; 8];
    out.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
    out
}

/// Read a journal for the artifact with `binding` and `chunks` chunks. Records after the first
/// torn or damaged one are ignored (returned count says how many bytes are valid, so the driver
/// can truncate the file there before appending). Records with a position beyond the artifact
/// are ignored the same way.
pub fn parse(
    bytes: &[u8],
    binding: &JournalBinding,
    chunks: u64,
) -> Result<(Vec<JournalRecord>, usize), JournalError> {
    let Some(header) = bytes.first_chunk::<HEADER_LEN>() else {
        return Err(JournalError::Truncated { len: bytes.len() });
    };
    if header[..8] != JOURNAL_MAGIC || header[8..10] != 1u16.to_le_bytes() {
        return Err(JournalError::NotAJournal);
    }
    if blake3::hash(&header[..48]).as_bytes()[..16] != header[48..] {
        return Err(JournalError::DamagedHeader);
    }
    if header[16..48] != binding.0 {
        return Err(JournalError::OtherArtifact);
    }
    let body = &bytes[HEADER_LEN..];
    let whole = (body.len() / RECORD_LEN) as u64;
    // Bound the allocation by the artifact before reading records.
    if whole > chunks.saturating_mul(2) {
        return Err(JournalError::TooManyRecords {
            records: whole,
            chunks,
        });
    }
    let mut records = Vec::with_capacity(whole as usize);
    let mut valid = HEADER_LEN;
    for raw in body.chunks_exact(RECORD_LEN) {
        if record_check(binding, &raw[..40]) != raw[40..] {
            break;
        }
        let mut position = [0u8; 8];
        position.copy_from_slice(&raw[..8]);
        let position = u64::from_le_bytes(position);
        if position >= chunks {
            break;
        }
        let mut id = [0u8; 32];
        id.copy_from_slice(&raw[8..40]);
        records.push(JournalRecord {
            position,
            id: ChunkId(id),
        });
        valid += RECORD_LEN;
    }
    Ok((records, valid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding() -> JournalBinding {
        JournalBinding::new(
            "artifacts/system.img",
            &Sha256Hash::of(b"a"),
            &Blake3Hash::of(b"t"),
        )
    }

    fn journal(n: u64) -> Vec<u8> {
        let b = binding();
        let mut out = encode_header(&b).to_vec();
        for i in 0..n {
            out.extend_from_slice(&encode_record(
                &b,
                &JournalRecord {
                    position: i,
                    id: ChunkId::of(&i.to_le_bytes()),
                },
            ));
        }
        out
    }

    #[test]
    fn round_trip() {
        let (records, valid) = parse(&journal(5), &binding(), 10).unwrap();
        assert_eq!(records.len(), 5);
        assert_eq!(records[3].id, ChunkId::of(&3u64.to_le_bytes()));
        assert_eq!(valid, HEADER_LEN + 5 * RECORD_LEN);
    }

    #[test]
    fn torn_tail_is_ignored_at_every_cut() {
        let full = journal(4);
        for cut in HEADER_LEN..full.len() {
            let (records, valid) = parse(&full[..cut], &binding(), 10).unwrap();
            assert_eq!(records.len(), (cut - HEADER_LEN) / RECORD_LEN);
            assert_eq!(valid, HEADER_LEN + records.len() * RECORD_LEN);
        }
    }

    #[test]
    fn damaged_record_ends_the_journal() {
        let mut bytes = journal(4);
        bytes[HEADER_LEN + RECORD_LEN + 10] ^= 1;
        let (records, _) = parse(&bytes, &binding(), 10).unwrap();
        assert_eq!(records.len(), 1);
    }

    #[test]
    fn refusals() {
        assert_eq!(
            parse(&journal(0)[..10], &binding(), 1),
            Err(JournalError::Truncated { len: 10 })
        );
        let other =
            JournalBinding::new("artifacts/x", &Sha256Hash::of(b"a"), &Blake3Hash::of(b"t"));
        assert_eq!(
            parse(&journal(1), &other, 10),
            Err(JournalError::OtherArtifact)
        );
        let mut bad = journal(1);
        bad[20] ^= 1;
        assert_eq!(
            parse(&bad, &binding(), 10),
            Err(JournalError::DamagedHeader)
        );
        assert_eq!(
            parse(&journal(9), &binding(), 4),
            Err(JournalError::TooManyRecords {
                records: 9,
                chunks: 4
            })
        );
        // A record past the artifact's end stops the journal there.
        let (records, _) = parse(&journal(6), &binding(), 5).unwrap();
        assert_eq!(records.len(), 5);
    }
}
