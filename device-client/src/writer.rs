//! The slot writer: verified chunks are written into the slot on a thread of their own; a
//! second thread syncs the slot and then journals each batch written before the sync (so the
//! writes go on while a sync runs); a third hashes the whole artifact (SHA-256 and BLAKE3) in
//! order as its contiguous prefix is written (pieces of 1 MiB or more with SHA-256 and BLAKE3
//! on two threads at once, see `ArtifactCheck::new_parallel`: smaller pieces are gathered
//! until they are that long).
//!
//! The download loop verifies each chunk against its id and hands the bytes over, a chunk at
//! a time or a run of verified chunks at consecutive positions (one buffer, one write); the
//! writer writes them at every position of the chunk, then passes the same bytes (the ones
//! written, not a copy) to the hasher once every position before them is written too. Bytes that arrive far ahead
//! of that frontier are not kept in memory: the hasher reads them back from the slot when the
//! frontier reaches them, as it does for positions written by an earlier, interrupted run
//! (their journal records were re-verified, but the whole check always covers every byte of
//! the slot, whichever run wrote it). The slot is marked pending only after
//! [`SlotWriter::finish`] says the whole artifact matches its signed hashes.
//!
//! Memory: at most [`COMMANDS`] chunks waiting to be written, [`RETAINED`] bytes kept ahead
//! of the frontier and [`PIECES`] pieces waiting to be hashed.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::mpsc as sync_mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ota_core::chunk::{ArtifactCheck, ArtifactError, ChunkVerifier};
use ota_core::digest::ChunkId;
use ota_core::journal::JournalBinding;
use tokio::sync::mpsc;

use crate::download::{DownloadError, JournalFile};
use crate::source::{read_exact_at, write_all_at};

/// Chunks (or runs of at most about `source::LOCAL_RUN` bytes) waiting for the writer.
const COMMANDS: usize = 8;
/// Bytes kept in memory ahead of the hashing frontier (beyond, they are read back; little in
/// unit tests, so that both paths run).
const RETAINED: usize = if cfg!(test) { 4 << 10 } else { 8 << 20 };
/// Pieces (chunks, runs or read-back pieces) waiting for the hasher.
const PIECES: usize = 8;
/// The hasher hands pieces this long or longer to the check at once (hashed on two threads);
/// shorter ones are gathered first.
const HASH_PIECE: usize = 1 << 20;
/// Read-back pieces are at most this long (long ones are hashed on two threads).
const READ_BACK: u64 = 1 << 20;

/// When the writer syncs the slot and journals what it wrote.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FlushPolicy {
    /// At most this many bytes written apart…
    pub(crate) bytes: u64,
    /// … or this long apart.
    pub(crate) interval: Duration,
}

enum Command {
    /// Write the verified `bytes` at each of `positions`.
    Chunk { positions: Vec<u64>, bytes: Bytes },
    /// Write the verified chunks at positions `first..first + count`, laid end to end in
    /// `bytes`.
    Run {
        first: u64,
        count: u64,
        bytes: Bytes,
    },
    /// Sync and journal what was written so far.
    Flush,
}

enum Piece {
    /// The next bytes of the artifact, as written.
    Bytes(Bytes),
    /// The next `len` bytes, read back from the slot at `offset`.
    ReadBack { offset: u64, len: u64 },
}

/// The whole check's result, if every byte was hashed.
type Checked = Option<Result<(), ArtifactError>>;
/// What the writer thread ends with.
type WriterEnd = Result<Checked, DownloadError>;

/// Writes into one slot file; see the module documentation.
pub(crate) struct SlotWriter {
    tx: Option<mpsc::Sender<Command>>,
    thread: Option<JoinHandle<WriterEnd>>,
}

/// The writer thread's state.
struct Inner {
    slot: File,
    slot_path: PathBuf,
    /// Batches (position, id) written, to sync then journal; `None` once the syncer stopped.
    syncs: Option<sync_mpsc::SyncSender<Vec<(u64, ChunkId)>>>,
    syncer: Option<JoinHandle<Result<(), DownloadError>>>,
    verifier: ChunkVerifier,
    policy: FlushPolicy,
    pending: Vec<u64>,
    pending_bytes: u64,
    last_flush: Instant,
    /// Per position: written (by this run or a verified earlier one).
    written: Vec<bool>,
    /// The first position not yet handed to the hasher.
    frontier: u64,
    /// Bytes written ahead of the frontier, kept for the hasher: by first position, the
    /// number of positions they cover and the bytes.
    retained: HashMap<u64, (u64, Bytes)>,
    retained_len: usize,
    /// `None` once the hasher stopped (its error is had by joining it).
    pieces: Option<sync_mpsc::SyncSender<Piece>>,
    hasher: Option<JoinHandle<WriterEnd>>,
}

impl SlotWriter {
    /// Start writing into `slot` (already `length` bytes long); `done` marks the positions
    /// already verified in it.
    pub(crate) fn start(
        slot: File,
        slot_path: PathBuf,
        (journal, binding): (JournalFile, JournalBinding),
        verifier: &ChunkVerifier,
        check: ArtifactCheck,
        done: Vec<bool>,
        policy: FlushPolicy,
    ) -> Result<Self, DownloadError> {
        let disk = |source| DownloadError::Disk {
            path: slot_path.clone(),
            source,
        };
        let reader = slot.try_clone().map_err(disk)?;
        let (pieces_tx, pieces_rx) = sync_mpsc::sync_channel(PIECES);
        let hasher_path = slot_path.clone();
        let hasher = std::thread::Builder::new()
            .name("ota-slot-hash".into())
            .spawn(move || hash(reader, hasher_path, check, pieces_rx))
            .map_err(disk)?;
        // One batch waits while another is synced; beyond that, the writer waits.
        let (syncs_tx, syncs_rx) = sync_mpsc::sync_channel(1);
        let synced = slot.try_clone().map_err(disk)?;
        let syncer_path = slot_path.clone();
        let syncer = std::thread::Builder::new()
            .name("ota-slot-sync".into())
            .spawn(move || sync_and_journal(synced, syncer_path, journal, binding, syncs_rx))
            .map_err(disk)?;
        let mut inner = Inner {
            slot,
            slot_path: slot_path.clone(),
            syncs: Some(syncs_tx),
            syncer: Some(syncer),
            verifier: verifier.clone(),
            policy,
            pending: Vec::new(),
            pending_bytes: 0,
            last_flush: Instant::now(),
            written: done,
            frontier: 0,
            retained: HashMap::new(),
            retained_len: 0,
            pieces: Some(pieces_tx),
            hasher: Some(hasher),
        };
        let (tx, mut rx) = mpsc::channel::<Command>(COMMANDS);
        let thread = std::thread::Builder::new()
            .name("ota-slot-write".into())
            .spawn(move || {
                inner.advance();
                while let Some(command) = rx.blocking_recv() {
                    inner.handle(command)?;
                }
                inner.end()
            })
            .map_err(disk)?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Write the verified `bytes` at each of `positions` (none written before). An error
    /// means the writer stopped: [`SlotWriter::finish`] says why.
    pub(crate) async fn write(&self, positions: Vec<u64>, bytes: Bytes) -> Result<(), ()> {
        match &self.tx {
            Some(tx) => tx
                .send(Command::Chunk { positions, bytes })
                .await
                .map_err(|_| ()),
            None => Err(()),
        }
    }

    /// Write the verified chunks at positions `first..first + count` (none written before),
    /// laid end to end in `bytes`, with one write. An error means the writer stopped.
    pub(crate) async fn write_run(&self, first: u64, count: u64, bytes: Bytes) -> Result<(), ()> {
        match &self.tx {
            Some(tx) => tx
                .send(Command::Run {
                    first,
                    count,
                    bytes,
                })
                .await
                .map_err(|_| ()),
            None => Err(()),
        }
    }

    /// Sync the slot and journal what was written so far (the writer also does so by itself
    /// every [`FlushPolicy`]).
    pub(crate) async fn flush(&self) -> Result<(), ()> {
        match &self.tx {
            Some(tx) => tx.send(Command::Flush).await.map_err(|_| ()),
            None => Err(()),
        }
    }

    /// Write and journal everything handed over, sync the slot; then, if every position is
    /// written, the whole artifact's check (`Some`), else `None`.
    pub(crate) async fn finish(mut self) -> WriterEnd {
        drop(self.tx.take());
        let Some(thread) = self.thread.take() else {
            return Ok(None);
        };
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|joined| joined.map_err(|_| std::io::Error::other("the writer panicked")))
            .map_err(|source| DownloadError::Disk {
                path: PathBuf::from("(slot writer)"),
                source,
            })?
    }
}

impl Inner {
    fn disk(&self, source: std::io::Error) -> DownloadError {
        DownloadError::Disk {
            path: self.slot_path.clone(),
            source,
        }
    }

    fn handle(&mut self, command: Command) -> Result<(), DownloadError> {
        match command {
            Command::Chunk { positions, bytes } => {
                for &p in &positions {
                    let offset = self.verifier.index().entries()[p as usize].offset();
                    write_all_at(&self.slot, &bytes, offset).map_err(|e| self.disk(e))?;
                    self.written[p as usize] = true;
                    self.pending.push(p);
                    self.pending_bytes += bytes.len() as u64;
                    self.retain(p, 1, &bytes);
                }
                self.advance();
                self.flush_if_due()?;
            }
            Command::Run {
                first,
                count,
                bytes,
            } => {
                let entries = self.verifier.index().entries();
                let offset = entries[first as usize].offset();
                write_all_at(&self.slot, &bytes, offset).map_err(|e| self.disk(e))?;
                for p in first..first + count {
                    self.written[p as usize] = true;
                    self.pending.push(p);
                }
                self.pending_bytes += bytes.len() as u64;
                self.retain(first, count, &bytes);
                self.advance();
                self.flush_if_due()?;
            }
            Command::Flush => self.flush()?,
        }
        Ok(())
    }

    /// Keep `bytes` (positions `first..first + count`, just written) for the hasher if they
    /// are next or there is room.
    fn retain(&mut self, first: u64, count: u64, bytes: &Bytes) {
        if first == self.frontier || self.retained_len + bytes.len() <= RETAINED {
            self.retained_len += bytes.len();
            self.retained.insert(first, (count, bytes.clone()));
        }
    }

    fn flush_if_due(&mut self) -> Result<(), DownloadError> {
        if self.pending_bytes >= self.policy.bytes
            || self.last_flush.elapsed() >= self.policy.interval
        {
            self.flush()?;
        }
        Ok(())
    }

    /// Hand the written prefix past the frontier to the hasher.
    fn advance(&mut self) {
        let entries = self.verifier.index().entries();
        let mut run: Option<(u64, u64)> = None;
        while (self.frontier as usize) < entries.len() && self.written[self.frontier as usize] {
            let entry = &entries[self.frontier as usize];
            match self.retained.remove(&self.frontier) {
                Some((count, bytes)) => {
                    self.retained_len -= bytes.len();
                    if let Some((offset, len)) = run.take() {
                        send(&mut self.pieces, Piece::ReadBack { offset, len });
                    }
                    send(&mut self.pieces, Piece::Bytes(bytes));
                    // Every position of a run was written with it (none before it).
                    self.frontier += count;
                    continue;
                }
                None => {
                    let len = u64::from(entry.len());
                    run = match run {
                        Some((offset, run_len)) if run_len + len <= READ_BACK => {
                            Some((offset, run_len + len))
                        }
                        Some((offset, run_len)) => {
                            send(
                                &mut self.pieces,
                                Piece::ReadBack {
                                    offset,
                                    len: run_len,
                                },
                            );
                            Some((entry.offset(), len))
                        }
                        None => Some((entry.offset(), len)),
                    };
                }
            }
            self.frontier += 1;
        }
        if let Some((offset, len)) = run {
            send(&mut self.pieces, Piece::ReadBack { offset, len });
        }
    }

    /// Hand the chunks written since the last flush to the syncer (sync, then journal). If
    /// a batch already waits for it (the disk is slower than the policy), they stay pending
    /// and go with the next try: the batches grow rather than the writes wait.
    fn flush(&mut self) -> Result<(), DownloadError> {
        self.send_batch(false)
    }

    fn send_batch(&mut self, wait: bool) -> Result<(), DownloadError> {
        if self.pending.is_empty() {
            self.last_flush = Instant::now();
            self.pending_bytes = 0;
            return Ok(());
        }
        let entries = self.verifier.index().entries();
        let batch: Vec<(u64, ChunkId)> = self
            .pending
            .iter()
            .map(|&p| (p, *entries[p as usize].id()))
            .collect();
        let sent = match &self.syncs {
            Some(syncs) if wait => syncs.send(batch).map_err(|_| ()),
            Some(syncs) => match syncs.try_send(batch) {
                Ok(()) => Ok(()),
                Err(sync_mpsc::TrySendError::Full(_)) => return Ok(()),
                Err(sync_mpsc::TrySendError::Disconnected(_)) => Err(()),
            },
            None => Err(()),
        };
        match sent {
            Ok(()) => {
                self.pending.clear();
                self.last_flush = Instant::now();
                self.pending_bytes = 0;
                Ok(())
            }
            Err(()) => {
                // The syncer stopped on an error: its error.
                self.join_syncer()
                    .and_then(|()| Err(self.disk(std::io::Error::other("the syncer stopped"))))
            }
        }
    }

    /// Wait for the syncer to sync and journal every batch handed over.
    fn join_syncer(&mut self) -> Result<(), DownloadError> {
        drop(self.syncs.take());
        match self.syncer.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(self.disk(std::io::Error::other("the syncer panicked"))),
            None => Ok(()),
        }
    }

    fn end(mut self) -> WriterEnd {
        self.send_batch(true)?;
        self.join_syncer()?;
        self.slot.sync_all().map_err(|e| self.disk(e))?;
        self.advance();
        let complete = self.frontier as usize == self.written.len();
        drop(self.pieces.take());
        let hashed = match self.hasher.take().map(JoinHandle::join) {
            Some(Ok(result)) => result?,
            _ => return Err(self.disk(std::io::Error::other("the hasher panicked"))),
        };
        Ok(if complete { hashed } else { None })
    }
}

/// The syncer thread: for each batch, sync the slot (which covers every write made before),
/// then journal the batch's chunks and sync the journal.
fn sync_and_journal(
    slot: File,
    slot_path: PathBuf,
    mut journal: JournalFile,
    binding: JournalBinding,
    batches: sync_mpsc::Receiver<Vec<(u64, ChunkId)>>,
) -> Result<(), DownloadError> {
    for batch in batches {
        slot.sync_data().map_err(|source| DownloadError::Disk {
            path: slot_path.clone(),
            source,
        })?;
        journal.append_all(&binding, &batch)?;
        journal.sync()?;
    }
    Ok(())
}

/// Hand `piece` to the hasher, unless it stopped (on an error, which joining it gives).
fn send(pieces: &mut Option<sync_mpsc::SyncSender<Piece>>, piece: Piece) {
    if let Some(tx) = pieces
        && tx.send(piece).is_err()
    {
        *pieces = None;
    }
}

/// The hasher thread: feeds the pieces to the check, in order; at the end, the check's result
/// if every byte was fed.
fn hash(
    slot: File,
    slot_path: PathBuf,
    mut check: ArtifactCheck,
    pieces: sync_mpsc::Receiver<Piece>,
) -> WriterEnd {
    let mut buf = Vec::new();
    // Short pieces gathered, in order, until they are `HASH_PIECE` long.
    let mut gathered = Vec::new();
    for piece in pieces {
        let fed = match piece {
            Piece::Bytes(bytes) => feed(&mut check, &mut gathered, &bytes),
            Piece::ReadBack { offset, len } => {
                buf.resize(len as usize, 0);
                read_exact_at(&slot, &mut buf, offset).map_err(|source| DownloadError::Disk {
                    path: slot_path.clone(),
                    source,
                })?;
                feed(&mut check, &mut gathered, &buf)
            }
        };
        if let Err(error) = fed {
            return Ok(Some(Err(error)));
        }
    }
    if !gathered.is_empty()
        && let Err(error) = check.update(&gathered)
    {
        return Ok(Some(Err(error)));
    }
    // Short if the writer stopped early: it then ignores this.
    Ok(Some(check.finish()))
}

/// Feed the next `bytes` to `check`: at once if they are long and nothing is gathered,
/// else after the bytes gathered before them (once all are long enough together).
fn feed(
    check: &mut ArtifactCheck,
    gathered: &mut Vec<u8>,
    bytes: &[u8],
) -> Result<(), ArtifactError> {
    if bytes.len() >= HASH_PIECE {
        if !gathered.is_empty() {
            check.update(gathered)?;
            gathered.clear();
        }
        return check.update(bytes);
    }
    gathered.extend_from_slice(bytes);
    if gathered.len() >= HASH_PIECE {
        check.update(gathered)?;
        gathered.clear();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::fs::OpenOptions;

    use ota_core::chunk::{ChunkingParams, Ingest};
    use ota_core::journal;
    use ota_core::tuf::testkit::assume_verified;

    use super::*;
    use crate::download::open_journal;

    /// An artifact of `len` pseudo-random bytes cut in small chunks: (bytes, target, verifier).
    fn artifact(len: usize) -> (Vec<u8>, ota_core::tuf::VerifiedArtifact, ChunkVerifier) {
        let mut data = vec![0u8; len];
        blake3::Hasher::new()
            .update(b"writer test")
            .finalize_xof()
            .fill(&mut data);
        let mut ingest = Ingest::new(ChunkingParams::new(64, 256, 1024).unwrap());
        let ok = |_: ota_core::chunk::CutChunk<'_>| Ok::<(), std::convert::Infallible>(());
        ingest.update(&data, ok).unwrap();
        let out = ingest.finish(ok).unwrap();
        let target = assume_verified("artifacts/t.img", out.length, out.sha256, out.chunks);
        let verifier = ChunkVerifier::new(&target, &out.index).unwrap();
        (data, target, verifier)
    }

    /// Writes every position not in `resumed` (in reverse order: far ahead of the frontier
    /// first), in runs of up to `group` consecutive positions (one chunk at a time if 1), the
    /// resumed ones put in the slot beforehand from `resumed_bytes`; returns the check and the
    /// positions journalled.
    fn run(
        data: &[u8],
        target: &ota_core::tuf::VerifiedArtifact,
        verifier: &ChunkVerifier,
        (resumed, resumed_bytes): (&[u64], &[u8]),
        group: usize,
    ) -> (Checked, Vec<u64>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slot.img");
        let slot = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .unwrap();
        slot.set_len(data.len() as u64).unwrap();
        let entries = verifier.index().entries();
        let mut done = vec![false; entries.len()];
        for &p in resumed {
            let e = &entries[p as usize];
            let range = e.offset() as usize..e.offset() as usize + e.len() as usize;
            write_all_at(&slot, &resumed_bytes[range], e.offset()).unwrap();
            done[p as usize] = true;
        }
        let binding =
            JournalBinding::new(target.path(), target.sha256(), &target.chunks().chunk_tree);
        let journal_path = dir.path().join("t.journal");
        let journal = open_journal(&journal_path, &binding, entries.len() as u64).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let checked = runtime.block_on(async {
            let writer = SlotWriter::start(
                slot,
                path.clone(),
                (journal, binding),
                verifier,
                ArtifactCheck::new(target),
                done.clone(),
                FlushPolicy {
                    bytes: 8 << 10,
                    interval: Duration::from_secs(60),
                },
            )
            .unwrap();
            let mut groups: Vec<Vec<u64>> = Vec::new();
            for p in (0..entries.len() as u64).filter(|&p| !done[p as usize]) {
                match groups.last_mut() {
                    Some(g) if g.len() < group && g.last() == Some(&(p - 1)) => g.push(p),
                    _ => groups.push(vec![p]),
                }
            }
            for g in groups.iter().rev() {
                let (first, last) = (&entries[g[0] as usize], &entries[g[g.len() - 1] as usize]);
                let range =
                    first.offset() as usize..(last.offset() + u64::from(last.len())) as usize;
                let bytes = Bytes::copy_from_slice(&data[range]);
                if g.len() == 1 {
                    writer.write(vec![g[0]], bytes).await.unwrap();
                } else {
                    writer.write_run(g[0], g.len() as u64, bytes).await.unwrap();
                }
            }
            writer.finish().await.unwrap()
        });
        assert_eq!(std::fs::read(&path).unwrap().len(), data.len());
        let (records, _) = journal::parse(
            &std::fs::read(&journal_path).unwrap(),
            &binding,
            entries.len() as u64,
        )
        .unwrap();
        (checked, records.iter().map(|r| r.position).collect())
    }

    #[test]
    fn hashes_chunks_as_written_out_of_order_and_reads_back_the_rest() {
        let (data, target, verifier) = artifact(64 << 10);
        let count = verifier.index().len();
        assert!(count > 20, "{count} chunks");
        // The first three positions come from an earlier run (read back for the check); the
        // others arrive last first, mostly beyond what is kept in memory (read back too).
        let (checked, mut journalled) = run(&data, &target, &verifier, (&[0, 1, 2], &data), 1);
        assert_eq!(checked, Some(Ok(())));
        journalled.sort_unstable();
        assert_eq!(
            journalled,
            (3..count).collect::<Vec<_>>(),
            "every write journalled"
        );
    }

    #[test]
    fn runs_of_consecutive_chunks_are_written_journalled_and_hashed() {
        let (data, target, verifier) = artifact(64 << 10);
        let count = verifier.index().len();
        // Runs of five chunks written with one write each, last first: those far ahead of
        // the frontier are read back, the others hashed as written; every position of a
        // run is journalled.
        let (checked, mut journalled) = run(&data, &target, &verifier, (&[0], &data), 5);
        assert_eq!(checked, Some(Ok(())));
        journalled.sort_unstable();
        assert_eq!(journalled, (1..count).collect::<Vec<_>>());
        // A run that holds other bytes than the chunks verified (the writer trusts its
        // caller's verification; the whole check does not): refused.
        let mut changed = data.clone();
        changed[data.len() / 2] ^= 1;
        let (checked, _) = run(&changed, &target, &verifier, (&[0], &data), 5);
        assert!(
            matches!(checked, Some(Err(ArtifactError::Sha256Mismatch { .. }))),
            "{checked:?}"
        );
    }

    #[test]
    fn a_byte_changed_in_a_resumed_chunk_fails_the_whole_check() {
        let (data, target, verifier) = artifact(64 << 10);
        // The slot holds another byte in a chunk of the earlier run: the whole check, which
        // reads resumed chunks back, refuses the artifact.
        let mut stale = data.clone();
        stale[10] ^= 1;
        let (checked, _) = run(&data, &target, &verifier, (&[0, 1], &stale), 1);
        assert!(
            matches!(checked, Some(Err(ArtifactError::Sha256Mismatch { .. }))),
            "{checked:?}"
        );
    }
}
