//! The whole-artifact check split between two threads that are fed the same bytes in the same
//! order (see [`ArtifactCheck::split`](super::ArtifactCheck::split)).
//!
//! SHA-256 is one sequential pass, so one half does it all. BLAKE3 is a tree: the artifact is
//! cut into aligned blocks of a power-of-two number of BLAKE3 chunks, each block is a complete
//! subtree of the artifact's BLAKE3 tree (the last one may be short), and each half hashes the
//! blocks that [`BlockShare`] gives it into their chaining values
//! ([`blake3::hazmat`]). `finish_split` joins the two halves' chaining values in artifact
//! order into the root with the tree's own rule (the left subtree of `n` bytes holds the
//! largest power of two of chunks less than `n`), which gives the plain BLAKE3 of the whole.

use blake3::hazmat::{
    ChainingValue, HasherExt as _, Mode, left_subtree_len, merge_subtrees_non_root,
    merge_subtrees_root,
};

use super::verify::{ArtifactError, within};
use crate::digest::{Blake3Hash, Sha256Hash};

/// Which half of a split check hashes which BLAKE3 block: block `i` (bytes
/// `i × block_len ..`) is the first half's when `i % every < first`, the second's otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockShare {
    block_len: u64,
    first: u64,
    every: u64,
}

impl BlockShare {
    /// `block_len` must be a power of two and at least one BLAKE3 chunk (1 KiB), `every` at
    /// least 1 and `first` at most `every`.
    pub const fn new(block_len: u64, first: u64, every: u64) -> Option<Self> {
        if !block_len.is_power_of_two()
            || block_len < blake3::CHUNK_LEN as u64
            || every == 0
            || first > every
        {
            return None;
        }
        Some(Self {
            block_len,
            first,
            every,
        })
    }

    fn first_owns(&self, block: u64) -> bool {
        block % self.every < self.first
    }

    fn blocks(&self, length: u64) -> u64 {
        length.div_ceil(self.block_len)
    }
}

/// One half of a split [`ArtifactCheck`](super::ArtifactCheck): fed every byte of the
/// artifact in order, it hashes its share (SHA-256 of every byte for the first half; its
/// BLAKE3 blocks). The artifact matches only if
/// [`ArtifactCheck::finish_split`](super::ArtifactCheck::finish_split) says so, given both
/// halves.
pub struct CheckHalf {
    sha256: Option<sha2::Sha256>,
    blake3: Share,
    len: u64,
    length: u64,
    signed: (Sha256Hash, Blake3Hash),
}

/// A half's share of the whole artifact's BLAKE3.
enum Share {
    /// Every byte, into one hasher whose root is the artifact's BLAKE3: the artifact is one
    /// block long or less, or the check had been fed before it was split.
    Whole(blake3::Hasher),
    /// No byte: the other half has it [`Share::Whole`].
    Nothing,
    /// The blocks of the share that are this half's.
    Blocks {
        share: BlockShare,
        first: bool,
        /// The block being hashed, if it is this half's.
        current: Option<blake3::Hasher>,
        /// The chaining value of each of this half's blocks hashed so far, by block number.
        done: Vec<(u64, ChainingValue)>,
    },
}

impl std::fmt::Debug for CheckHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckHalf")
            .field("sha256", &self.sha256.is_some())
            .field("checked", &self.len)
            .field("length", &self.length)
            .finish_non_exhaustive()
    }
}

/// How many bytes a half hashes at a time with one hash before the other: small enough that
/// the bytes that the first read from memory are still in the core's cache for the second.
const INTERLEAVE: usize = 64 << 10;

impl CheckHalf {
    /// The two halves of a check whose whole hash state is `blake3` and `sha256` after `len`
    /// bytes of a `length`-byte artifact.
    pub(super) fn pair(
        blake3: blake3::Hasher,
        sha256: sha2::Sha256,
        len: u64,
        length: u64,
        signed: (Sha256Hash, Blake3Hash),
        share: BlockShare,
    ) -> (Self, Self) {
        let (first, second) = if len > 0 || length <= share.block_len {
            // One block, or blocks already begun: the whole BLAKE3 in one half, the one that
            // would own block 0 (a share that gives the first half nothing gives it nothing).
            if share.first_owns(0) {
                (Share::Whole(blake3), Share::Nothing)
            } else {
                (Share::Nothing, Share::Whole(blake3))
            }
        } else {
            let blocks = |first| Share::Blocks {
                share,
                first,
                current: None,
                done: Vec::new(),
            };
            (blocks(true), blocks(false))
        };
        (
            Self {
                sha256: Some(sha256),
                blake3: first,
                len,
                length,
                signed,
            },
            Self {
                sha256: None,
                blake3: second,
                len,
                length,
                signed,
            },
        )
    }

    /// Feed the next bytes of the artifact.
    pub fn update(&mut self, bytes: &[u8]) -> Result<(), ArtifactError> {
        within(self.length, self.len, bytes)?;
        for piece in bytes.chunks(INTERLEAVE) {
            if let Some(sha256) = &mut self.sha256 {
                sha2::Digest::update(sha256, piece);
            }
            self.blake3.update(self.len, self.length, piece);
            self.len += piece.len() as u64;
        }
        Ok(())
    }

    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was fed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Share {
    /// Hash `bytes`, found at `offset` in a `length`-byte artifact, where they are this share's.
    fn update(&mut self, mut offset: u64, length: u64, mut bytes: &[u8]) {
        let (share, first, current, done) = match self {
            Self::Whole(hasher) => {
                hasher.update(bytes);
                return;
            }
            Self::Nothing => return,
            Self::Blocks {
                share,
                first,
                current,
                done,
            } => (share, first, current, done),
        };
        while !bytes.is_empty() {
            let block = offset / share.block_len;
            let within = offset % share.block_len;
            let take = bytes
                .len()
                .min(usize::try_from(share.block_len - within).unwrap_or(usize::MAX));
            if share.first_owns(block) == *first {
                let hasher = current.get_or_insert_with(|| {
                    let mut hasher = blake3::Hasher::new();
                    hasher.set_input_offset(block * share.block_len);
                    hasher
                });
                hasher.update(&bytes[..take]);
                let end = offset + take as u64;
                if end.is_multiple_of(share.block_len) || end == length {
                    done.push((block, hasher.finalize_non_root()));
                    *current = None;
                }
            }
            offset += take as u64;
            bytes = &bytes[take..];
        }
    }
}

/// The result of a split check: the length that each half was fed, then SHA-256 and BLAKE3,
/// against the signed values (the same errors as
/// [`ArtifactCheck::finish`](super::ArtifactCheck::finish)).
pub(super) fn finish_split(a: CheckHalf, b: CheckHalf) -> Result<(), ArtifactError> {
    if a.signed != b.signed || a.length != b.length {
        return Err(ArtifactError::NotAPair);
    }
    for half in [&a, &b] {
        if half.len != half.length {
            return Err(ArtifactError::TooShort {
                signed: half.length,
                actual: half.len,
            });
        }
    }
    let ((sha256, blake3), length) = (a.signed, a.length);
    let (hasher, a_blake3, b_blake3) = match (a.sha256, b.sha256) {
        (Some(hasher), None) => (hasher, a.blake3, b.blake3),
        (None, Some(hasher)) => (hasher, b.blake3, a.blake3),
        _ => return Err(ArtifactError::NotAPair),
    };
    let actual = Sha256Hash(sha2::Digest::finalize(hasher).into());
    if actual != sha256 {
        return Err(ArtifactError::Sha256Mismatch {
            signed: sha256,
            actual,
        });
    }
    let actual = match (a_blake3, b_blake3) {
        (Share::Whole(hasher), Share::Nothing) | (Share::Nothing, Share::Whole(hasher)) => {
            Blake3Hash(*hasher.finalize().as_bytes())
        }
        (
            Share::Blocks {
                share, done: mine, ..
            },
            Share::Blocks { done: theirs, .. },
        ) => {
            let mut cvs: Vec<(u64, ChainingValue)> = mine.into_iter().chain(theirs).collect();
            cvs.sort_unstable_by_key(|(block, _)| *block);
            // Both fed every byte: each block was hashed once, by its owner, unless the two
            // halves were split with different shares.
            if cvs.len() as u64 != share.blocks(length)
                || cvs
                    .iter()
                    .enumerate()
                    .any(|(i, (block, _))| i as u64 != *block)
            {
                return Err(ArtifactError::NotAPair);
            }
            let cvs: Vec<ChainingValue> = cvs.into_iter().map(|(_, cv)| cv).collect();
            root(&cvs, length, share.block_len)
        }
        _ => return Err(ArtifactError::NotAPair),
    };
    if actual != blake3 {
        return Err(ArtifactError::Blake3Mismatch {
            signed: blake3,
            actual,
        });
    }
    Ok(())
}

/// The BLAKE3 root of a `length`-byte input (more than one block) whose blocks of
/// `block_len` bytes have the chaining values `cvs`, in order.
fn root(cvs: &[ChainingValue], length: u64, block_len: u64) -> Blake3Hash {
    let (left, right) = children(cvs, length, block_len);
    Blake3Hash(*merge_subtrees_root(&left, &right, Mode::Hash).as_bytes())
}

/// The chaining values of the two children of the node over `length` bytes (more than one
/// block) made of the blocks of `cvs`: the left one holds the largest power of two of chunks
/// less than `length` bytes.
fn children(cvs: &[ChainingValue], length: u64, block_len: u64) -> (ChainingValue, ChainingValue) {
    let split = left_subtree_len(length);
    let blocks = usize::try_from(split / block_len).unwrap_or(usize::MAX);
    (
        subtree(&cvs[..blocks], split, block_len),
        subtree(&cvs[blocks..], length - split, block_len),
    )
}

/// The chaining value of a subtree of `length` bytes made of the blocks of `cvs`.
fn subtree(cvs: &[ChainingValue], length: u64, block_len: u64) -> ChainingValue {
    if length <= block_len {
        return cvs[0];
    }
    let (left, right) = children(cvs, length, block_len);
    merge_subtrees_non_root(&left, &right, Mode::Hash)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;
    use crate::chunk::testutil::pseudo_random;

    fn data(len: usize) -> Vec<u8> {
        pseudo_random(7, len)
    }

    /// The two halves of a fresh check of an artifact whose signed bytes are `signed`.
    fn halves(signed: &[u8], share: BlockShare) -> (CheckHalf, CheckHalf) {
        CheckHalf::pair(
            blake3::Hasher::new(),
            sha2::Sha256::default(),
            0,
            signed.len() as u64,
            (Sha256Hash::of(signed), Blake3Hash::of(signed)),
            share,
        )
    }

    /// Feed `data` to both halves of a check of `signed` in pieces of `piece` bytes.
    fn check(
        data: &[u8],
        signed: &[u8],
        share: BlockShare,
        piece: usize,
    ) -> Result<(), ArtifactError> {
        let (mut a, mut b) = halves(signed, share);
        for piece in data.chunks(piece.max(1)) {
            a.update(piece)?;
            b.update(piece)?;
        }
        finish_split(a, b)
    }

    #[test]
    fn the_joined_halves_give_the_plain_blake3_at_every_block_boundary() {
        for (block_len, first, every) in [(1024, 1, 2), (2048, 3, 5), (4096, 0, 1), (1024, 1, 1)] {
            let share = BlockShare::new(block_len, first, every).unwrap();
            let block = block_len as usize;
            for len in [
                0,
                1,
                block - 1,
                block,
                block + 1,
                2 * block,
                3 * block - 1,
                7 * block + 5,
                8 * block,
                33 * block + 1,
            ] {
                let data = data(len);
                for piece in [1000, block, 3 * block + 17] {
                    check(&data, &data, share, piece)
                        .unwrap_or_else(|e| panic!("{share:?} len {len} piece {piece}: {e}"));
                }
            }
        }
    }

    #[test]
    fn a_changed_byte_in_either_halfs_blocks_is_found() {
        let share = BlockShare::new(1024, 1, 2).unwrap();
        let signed = data(10 * 1024 + 3);
        // Block 0 is the first half's, block 4 the second's, the last (10) the first's.
        for at in [0, 1500, 4 * 1024 + 7, 10 * 1024 + 2] {
            let mut data = signed.clone();
            data[at] ^= 1;
            assert!(
                matches!(
                    check(&data, &signed, share, 4096),
                    Err(ArtifactError::Sha256Mismatch { .. })
                ),
                "byte {at}"
            );
            // A SHA-256 that matches and a BLAKE3 that does not cannot be had from one set of
            // bytes: BLAKE3's own refusal is shown against bytes whose SHA-256 was signed.
            let (mut a, mut b) = halves(&signed, share);
            a.signed.0 = Sha256Hash::of(&data);
            b.signed.0 = a.signed.0;
            a.update(&data).unwrap();
            b.update(&data).unwrap();
            assert!(
                matches!(
                    finish_split(a, b),
                    Err(ArtifactError::Blake3Mismatch { signed: s, .. })
                        if s == Blake3Hash::of(&signed)
                ),
                "byte {at}"
            );
        }
    }

    #[test]
    fn short_and_long_input_are_refused() {
        let share = BlockShare::new(1024, 1, 2).unwrap();
        let data = data(5000);
        let (mut a, mut b) = halves(&data[..4999], share);
        assert_eq!(
            a.update(&data),
            Err(ArtifactError::TooLong { signed: 4999 })
        );
        a.update(&data[..4000]).unwrap();
        b.update(&data[..4999]).unwrap();
        assert_eq!(
            finish_split(a, b),
            Err(ArtifactError::TooShort {
                signed: 4999,
                actual: 4000
            })
        );
    }

    #[test]
    fn halves_of_different_checks_are_refused() {
        let data = data(5000);
        let share = BlockShare::new(1024, 1, 2).unwrap();
        let other = BlockShare::new(1024, 1, 3).unwrap();
        let fed = |(mut a, mut b): (CheckHalf, CheckHalf), len: usize| {
            a.update(&data[..len]).unwrap();
            b.update(&data[..len]).unwrap();
            (a, b)
        };
        let (a, b) = fed(halves(&data, share), 5000);
        let (c, d) = fed(halves(&data, other), 5000);
        let (e, _) = fed(halves(&data[..4000], share), 4000);
        assert_eq!(finish_split(a, d), Err(ArtifactError::NotAPair));
        assert_eq!(finish_split(c, e), Err(ArtifactError::NotAPair));
        // Two first halves (two SHA-256s, the same blocks twice) or two second halves.
        let (a, _) = fed(halves(&data, share), 5000);
        let (f, g) = fed(halves(&data, share), 5000);
        assert_eq!(finish_split(a, f), Err(ArtifactError::NotAPair));
        assert_eq!(finish_split(b, g), Err(ArtifactError::NotAPair));
    }

    #[test]
    fn shares_that_cannot_be_a_subtree_are_refused() {
        assert_eq!(BlockShare::new(512, 1, 2), None);
        assert_eq!(BlockShare::new(3072, 1, 2), None);
        assert_eq!(BlockShare::new(1024, 1, 0), None);
        assert_eq!(BlockShare::new(1024, 3, 2), None);
    }

    proptest! {
        #[test]
        fn any_length_share_and_pieces_give_the_plain_hashes(
            len in 0usize..40_000,
            block_log in 10u32..13,
            every in 1u64..5,
            first in 0u64..5,
            piece in 1usize..9000,
        ) {
            let share = BlockShare::new(1 << block_log, first.min(every), every).unwrap();
            let data = data(len);
            prop_assert_eq!(check(&data, &data, share, piece), Ok(()));
        }
    }
}
