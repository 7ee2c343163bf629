//! Streaming ingest: cut an artifact into chunks and compute everything the release signs.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;

use super::ArtifactChunks;
use super::index::{INDEX_HEADER_LEN, encode_entry, encode_header};
use super::params::{ChunkingParams, Cutter};
use super::tree::ChunkTree;
use super::whole::WholeHash;
use crate::digest::{ChunkId, Sha256Hash};

/// Pieces at least this long are processed on two threads by [`Ingest::new_parallel`].
const PARALLEL_MIN_PIECE: usize = 1 << 20;

/// Cuts an artifact into chunks as its bytes stream past, and computes the chunk index, the
/// chunk tree and the whole-artifact hashes.
///
/// Feed the artifact in pieces of any size with [`Ingest::update`], then call
/// [`Ingest::finish`]. Each chunk goes to the sink (a closure) as soon as it is cut, with its
/// id, position, offset and bytes. The chunk boundaries are exactly those of FastCDC 2020 run
/// over the whole artifact at once, whatever the piece sizes.
///
/// Memory: at most about two maximum chunk lengths of look-ahead, the growing index (36 bytes a
/// chunk) and O(log n) for the tree. Pieces are not copied except for that look-ahead.
///
/// [`Ingest::new_parallel`] splits the work of every piece of 1 MiB or more across this thread
/// and one scoped helper thread (SHA-256 on the helper; cutting and the whole-artifact BLAKE3
/// here; chunk hashing shared). The output is identical; the sink is still called on the
/// caller's thread, in order.
///
/// After an error the ingest is unusable: every later call returns [`IngestError::Poisoned`].
pub struct Ingest {
    params: ChunkingParams,
    cutter: Cutter,
    /// Bytes not cut yet, fewer than `max` once `update` returns.
    carry: Vec<u8>,
    whole: WholeHash,
    list: ChunkList,
    parallel_from: Option<usize>,
    poisoned: bool,
}

/// A chunk just cut by [`Ingest`], as handed to its sink.
#[derive(Clone, Copy)]
pub struct CutChunk<'a> {
    position: u64,
    offset: u64,
    id: ChunkId,
    bytes: &'a [u8],
}

/// What [`Ingest::finish`] produces: the index blob and the signed fields of the artifact
/// target.
#[derive(Clone, PartialEq, Eq)]
pub struct Ingested {
    /// The chunk index blob; its id is `chunks.chunk_index`.
    pub index: Vec<u8>,
    /// The `custom.enigm` fields of the artifact target.
    pub chunks: ArtifactChunks,
    /// The artifact's length: the target's `length`.
    pub length: u64,
    /// SHA-256 of the whole artifact: the target's `hashes.sha256`.
    pub sha256: Sha256Hash,
}

/// An ingest failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError<E> {
    /// The sink refused a chunk: the sink (the caller's storage) is at fault.
    #[error("the chunk sink failed on chunk {position}")]
    Sink {
        /// The position of the chunk the sink refused.
        position: u64,
        /// The sink's error.
        #[source]
        source: E,
    },
    /// An earlier call on this ingest failed, so its state is incomplete: the caller is at
    /// fault for using it again.
    #[error("this ingest failed earlier and cannot be used again")]
    Poisoned,
}

impl Ingest {
    /// An ingest that does all its work on the caller's thread.
    pub fn new(params: ChunkingParams) -> Self {
        Self {
            params,
            cutter: Cutter::new(params),
            carry: Vec::with_capacity(2 * params.max() as usize),
            whole: WholeHash::default(),
            list: ChunkList::new(),
            parallel_from: None,
            poisoned: false,
        }
    }

    /// An ingest that processes every piece of 1 MiB or more on two threads (this one and a
    /// scoped helper that lives for the duration of the call). Pieces of several MiB give the
    /// best throughput. The output is the same as [`Ingest::new`]'s.
    pub fn new_parallel(params: ChunkingParams) -> Self {
        Self {
            parallel_from: Some(PARALLEL_MIN_PIECE),
            ..Self::new(params)
        }
    }

    #[cfg(test)]
    pub(crate) fn with_parallel_from(params: ChunkingParams, from: usize) -> Self {
        Self {
            parallel_from: Some(from),
            ..Self::new(params)
        }
    }

    /// The parameters chunks are cut with.
    pub fn params(&self) -> ChunkingParams {
        self.params
    }

    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.whole.len
    }

    /// Whether nothing was fed yet.
    pub fn is_empty(&self) -> bool {
        self.whole.len == 0
    }

    /// Feed the next piece of the artifact. Every chunk that can be cut for sure is passed to
    /// `sink` before this returns.
    pub fn update<E, S>(&mut self, data: &[u8], mut sink: S) -> Result<(), IngestError<E>>
    where
        S: FnMut(CutChunk<'_>) -> Result<(), E>,
    {
        if self.poisoned {
            return Err(IngestError::Poisoned);
        }
        self.poisoned = true;
        if self.parallel_from.is_some_and(|from| data.len() >= from) {
            self.update_parallel(data, &mut sink)?;
        } else {
            self.update_sequential(data, &mut sink)?;
        }
        self.poisoned = false;
        Ok(())
    }

    /// Cut the last chunks and return the index and the signed fields.
    pub fn finish<E, S>(self, mut sink: S) -> Result<Ingested, IngestError<E>>
    where
        S: FnMut(CutChunk<'_>) -> Result<(), E>,
    {
        let Self {
            params,
            cutter,
            carry,
            whole,
            mut list,
            poisoned,
            ..
        } = self;
        if poisoned {
            return Err(IngestError::Poisoned);
        }
        // The end of the artifact is known now: cut what is left as FastCDC does at the end.
        let mut pos = 0;
        while pos < carry.len() {
            let len = cutter.next_len(&carry[pos..]);
            let bytes = &carry[pos..pos + len];
            list.emit(ChunkId::of(bytes), bytes, &mut sink)?;
            pos += len;
        }
        let (blake3, sha256, length) = whole.finalize();
        debug_assert_eq!(length, list.offset);
        let mut index = list.index;
        index[..INDEX_HEADER_LEN].copy_from_slice(&encode_header(params, list.count, length));
        let chunks = ArtifactChunks {
            blake3,
            chunking: params,
            chunks: list.count,
            chunk_tree: list.tree.root(),
            chunk_index: ChunkId::of(&index),
            chunk_index_length: index.len() as u64,
        };
        Ok(Ingested {
            index,
            chunks,
            length,
            sha256,
        })
    }

    fn update_sequential<E, S>(&mut self, data: &[u8], sink: &mut S) -> Result<(), IngestError<E>>
    where
        S: FnMut(CutChunk<'_>) -> Result<(), E>,
    {
        self.whole.update(data);
        let mut pos = cut_carry(&self.cutter, &mut self.carry, &mut self.list, data, sink)?;
        while data.len() - pos >= self.cutter.max() {
            let len = self.cutter.next_len(&data[pos..]);
            let bytes = &data[pos..pos + len];
            self.list.emit(ChunkId::of(bytes), bytes, sink)?;
            pos += len;
        }
        self.carry.extend_from_slice(&data[pos..]);
        Ok(())
    }

    /// The helper thread hashes `data` with SHA-256, then helps hash chunks. This thread cuts,
    /// hashes `data` with BLAKE3, then helps hash chunks, and finally passes the chunks to the
    /// sink in order. Chunk hashing is shared through an atomic counter, so whichever thread
    /// is free takes the next chunk; the result does not depend on who hashed what.
    fn update_parallel<E, S>(&mut self, data: &[u8], sink: &mut S) -> Result<(), IngestError<E>>
    where
        S: FnMut(CutChunk<'_>) -> Result<(), E>,
    {
        let Self {
            cutter,
            carry,
            whole,
            list,
            ..
        } = self;
        let WholeHash {
            blake3,
            sha256,
            len: hashed_len,
        } = whole;
        let next_counter = AtomicUsize::new(0);
        let next = &next_counter;
        let (cuts_tx, cuts_rx) = mpsc::sync_channel::<Arc<Vec<Range<usize>>>>(1);

        let (end, cuts, ids) = thread::scope(|scope| {
            let helper = scope.spawn(move || {
                sha2::Digest::update(sha256, data);
                // The sender is dropped without sending if this thread's caller failed.
                match cuts_rx.recv() {
                    Ok(cuts) => hash_claimed(data, &cuts, next),
                    Err(mpsc::RecvError) => Vec::new(),
                }
            });
            let mine = (|| {
                let cuts_tx = cuts_tx;
                let mut pos = cut_carry(cutter, &mut *carry, &mut *list, data, &mut *sink)?;
                let mut cuts = Vec::with_capacity(data.len() / cutter.max() * 4 + 1);
                while data.len() - pos >= cutter.max() {
                    let len = cutter.next_len(&data[pos..]);
                    cuts.push(pos..pos + len);
                    pos += len;
                }
                let cuts = Arc::new(cuts);
                // Fails only if the helper panicked; joining it below re-raises that panic.
                let _ = cuts_tx.send(Arc::clone(&cuts));
                drop(cuts_tx);
                blake3.update(data);
                let ids = hash_claimed(data, &cuts, next);
                Ok((pos, cuts, ids))
            })();
            let theirs = match helper.join() {
                Ok(theirs) => theirs,
                Err(panic) => std::panic::resume_unwind(panic),
            };
            mine.map(|(pos, cuts, mut ids)| {
                ids.extend(theirs);
                (pos, cuts, ids)
            })
        })?;

        let mut by_position: Vec<Option<ChunkId>> = vec![None; cuts.len()];
        for (position, id) in ids {
            if let Some(slot) = by_position.get_mut(position) {
                *slot = Some(id);
            }
        }
        for (range, id) in cuts.iter().zip(by_position) {
            let bytes = &data[range.clone()];
            // Every chunk was claimed by one of the threads; hash here should one be missing.
            let id = id.unwrap_or_else(|| ChunkId::of(bytes));
            list.emit(id, bytes, sink)?;
        }
        carry.extend_from_slice(&data[end..]);
        *hashed_len += data.len() as u64;
        Ok(())
    }
}

impl fmt::Debug for Ingest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ingest")
            .field("params", &self.params)
            .field("fed", &self.whole.len)
            .field("chunks", &self.list.count)
            .field("carry", &self.carry.len())
            .field("parallel_from", &self.parallel_from)
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

impl<'a> CutChunk<'a> {
    /// The chunk's position in the artifact's chunk list (0-based).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Where the chunk starts in the artifact.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The chunk id: BLAKE3-256 of the bytes.
    pub fn id(&self) -> &ChunkId {
        &self.id
    }

    /// The chunk's bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

impl fmt::Debug for CutChunk<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CutChunk")
            .field("position", &self.position)
            .field("offset", &self.offset)
            .field("id", &self.id)
            .field("len", &self.bytes.len())
            .finish()
    }
}

impl fmt::Debug for Ingested {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ingested")
            .field("index_len", &self.index.len())
            .field("chunks", &self.chunks)
            .field("length", &self.length)
            .field("sha256", &self.sha256)
            .finish()
    }
}

/// The chunks cut so far: the index being built and the tree.
struct ChunkList {
    /// The index blob, its header left zero until the end.
    index: Vec<u8>,
    tree: ChunkTree,
    count: u64,
    offset: u64,
}

impl ChunkList {
    fn new() -> Self {
        Self {
            index: vec![0; INDEX_HEADER_LEN],
            tree: ChunkTree::new(),
            count: 0,
            offset: 0,
        }
    }

    fn emit<E, S>(&mut self, id: ChunkId, bytes: &[u8], sink: &mut S) -> Result<(), IngestError<E>>
    where
        S: FnMut(CutChunk<'_>) -> Result<(), E>,
    {
        let position = self.count;
        sink(CutChunk {
            position,
            offset: self.offset,
            id,
            bytes,
        })
        .map_err(|source| IngestError::Sink { position, source })?;
        // A chunk is at most `max` <= 1 MiB long.
        let len = bytes.len() as u32;
        self.index.extend_from_slice(&encode_entry(&id, len));
        self.tree.push(&id, len);
        self.count += 1;
        self.offset += u64::from(len);
        Ok(())
    }
}

/// Cut the chunks that start in `carry` (the look-ahead kept from earlier pieces), topping it
/// up from `data`. Returns where in `data` the next chunk starts; when that is `data.len()`
/// everything left is in `carry`. Otherwise `carry` is left empty.
fn cut_carry<E, S>(
    cutter: &Cutter,
    carry: &mut Vec<u8>,
    list: &mut ChunkList,
    data: &[u8],
    sink: &mut S,
) -> Result<usize, IngestError<E>>
where
    S: FnMut(CutChunk<'_>) -> Result<(), E>,
{
    if carry.is_empty() {
        return Ok(0);
    }
    let max = cutter.max();
    let kept = carry.len();
    let take = data.len().min(max);
    carry.extend_from_slice(&data[..take]);
    // While a chunk starts inside the old carry and `max` bytes follow it, cut it here.
    let mut pos = 0;
    while pos < kept && carry.len() - pos >= max {
        let len = cutter.next_len(&carry[pos..]);
        let bytes = &carry[pos..pos + len];
        list.emit(ChunkId::of(bytes), bytes, sink)?;
        pos += len;
    }
    if pos >= kept {
        // The next chunk starts inside `data`: continue there without copying.
        carry.clear();
        Ok(pos - kept)
    } else {
        // Fewer than `max` bytes follow: `take` was all of `data`, and it waits in `carry`.
        carry.drain(..pos);
        Ok(data.len())
    }
}

/// Hash the chunks whose numbers this thread claims from `next`.
fn hash_claimed(data: &[u8], cuts: &[Range<usize>], next: &AtomicUsize) -> Vec<(usize, ChunkId)> {
    let mut ids = Vec::new();
    loop {
        let position = next.fetch_add(1, Ordering::Relaxed);
        let Some(range) = cuts.get(position) else {
            return ids;
        };
        ids.push((position, ChunkId::of(&data[range.clone()])));
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use proptest::prelude::*;

    use super::*;
    use crate::chunk::testutil::{arb_params, feed, pseudo_random, reference_lengths};

    fn ok(_: CutChunk<'_>) -> Result<(), Infallible> {
        Ok(())
    }

    /// Ingest `data` in pieces of the given sizes (cycled), collecting the chunks.
    fn run(
        ingest: Ingest,
        data: &[u8],
        pieces: &[usize],
    ) -> (Ingested, Vec<(u64, u64, ChunkId, usize)>) {
        let mut seen = Vec::new();
        let out = feed(ingest, data, pieces, |c| {
            seen.push((c.position(), c.offset(), *c.id(), c.bytes().len()));
            assert_eq!(*c.id(), ChunkId::of(c.bytes()));
        });
        (out, seen)
    }

    fn check_against_fastcdc(
        params: ChunkingParams,
        data: &[u8],
        pieces: &[usize],
        parallel_from: Option<usize>,
    ) -> Result<(), TestCaseError> {
        let ingest = match parallel_from {
            Some(from) => Ingest::with_parallel_from(params, from),
            None => Ingest::new(params),
        };
        let (out, seen) = run(ingest, data, pieces);
        let lengths: Vec<usize> = seen.iter().map(|s| s.3).collect();
        prop_assert_eq!(&lengths, &reference_lengths(params, data));
        let mut offset = 0;
        for (i, (position, off, id, len)) in seen.iter().enumerate() {
            prop_assert_eq!(*position, i as u64);
            prop_assert_eq!(*off, offset);
            prop_assert_eq!(
                *id,
                ChunkId::of(&data[offset as usize..offset as usize + len])
            );
            offset += *len as u64;
        }
        prop_assert_eq!(out.length, data.len() as u64);
        prop_assert_eq!(out.sha256, Sha256Hash::of(data));
        prop_assert_eq!(out.chunks.blake3.0, *blake3::hash(data).as_bytes());
        prop_assert_eq!(out.chunks.chunks, seen.len() as u64);
        let one_shot = run(Ingest::new(params), data, &[data.len().max(1)]).0;
        prop_assert_eq!(out, one_shot);
        Ok(())
    }

    #[test]
    fn empty_artifact() {
        let out = Ingest::new(ChunkingParams::DEFAULT).finish(ok).unwrap();
        assert_eq!(out.length, 0);
        assert_eq!(out.chunks.chunks, 0);
        assert_eq!(out.index.len(), INDEX_HEADER_LEN);
        assert_eq!(out.chunks.chunk_index_length, 40);
        assert_eq!(out.chunks.chunk_tree, ChunkTree::empty_root());
        assert_eq!(out.sha256, Sha256Hash::of(b""));
    }

    #[test]
    fn default_params_in_odd_pieces_and_in_parallel() {
        let data = pseudo_random(7, 3 * 1024 * 1024 + 12_345);
        let params = ChunkingParams::DEFAULT;
        check_against_fastcdc(
            params,
            &data,
            &[1, 4095, 65536, 262143, 262145, 1 << 20],
            None,
        )
        .unwrap();
        check_against_fastcdc(params, &data, &[1 << 20, 3, 2 << 20], Some(1 << 20)).unwrap();
        check_against_fastcdc(params, &data, &[data.len()], Some(1)).unwrap();
        let zeros = vec![0u8; 1024 * 1024 + 1];
        check_against_fastcdc(params, &zeros, &[100_000], Some(300_000)).unwrap();
    }

    #[test]
    fn sink_errors_poison_the_ingest() {
        let data = pseudo_random(1, 100_000);
        let params = ChunkingParams::new(64, 256, 1024).unwrap();
        for parallel_from in [None, Some(1)] {
            let mut ingest = match parallel_from {
                Some(from) => Ingest::with_parallel_from(params, from),
                None => Ingest::new(params),
            };
            let err = ingest
                .update(&data, |c| {
                    if c.position() == 3 {
                        Err("disk full")
                    } else {
                        Ok(())
                    }
                })
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    IngestError::Sink {
                        position: 3,
                        source: "disk full"
                    }
                ),
                "{err:?}"
            );
            assert!(matches!(
                ingest.update(b"x", ok),
                Err(IngestError::Poisoned)
            ));
            assert!(matches!(ingest.finish(ok), Err(IngestError::Poisoned)));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn boundaries_match_fastcdc_over_the_whole_artifact(
            params in arb_params(),
            len in 0usize..40_000,
            seed in any::<u64>(),
            pieces in proptest::collection::vec(1usize..5000, 1..8),
            zeros in any::<bool>(),
            parallel_from in proptest::option::of(256usize..8000),
        ) {
            let data = if zeros { vec![0; len] } else { pseudo_random(seed, len) };
            check_against_fastcdc(params, &data, &pieces, parallel_from)?;
        }
    }
}
