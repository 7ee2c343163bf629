//! The slot writer: verified chunks are written into the slot on a thread of their own; a
//! second thread syncs the slot and then journals each batch written before the sync (so the
//! writes go on while a sync runs); the whole artifact is hashed in order as its contiguous
//! prefix is written, by two threads fed the same pieces (see `ArtifactCheck::split`): the one
//! that wrote them hashes half of the artifact's BLAKE3 (every other 1 MiB block, a subtree of
//! its BLAKE3 tree) right after the write, and a third thread hashes SHA-256 (one sequential
//! pass, the slowest of the hashes) and the other half of the BLAKE3 blocks, each 64 KiB with
//! both hashes in turn while it is in the core's cache. Sharing BLAKE3 so evens out the two
//! threads' work.
//!
//! The download loop verifies each chunk against its id and hands the bytes over, a chunk at
//! a time or a run of verified chunks at consecutive positions (one buffer, one write); the
//! writer writes them at every position of the chunk not written yet, then passes the same
//! bytes (the ones written, not a copy) to the hashes once every position before them is
//! written too. Bytes that arrive far ahead of that frontier are not kept in memory: they are
//! read back from the slot when the frontier reaches them, as are positions written by an
//! earlier, interrupted run (their journal records were re-verified, but the whole check
//! always covers every byte of the slot, whichever run wrote it). The slot is marked pending
//! only after [`SlotWriter::finish`] says the whole artifact matches its signed hashes.
//!
//! The local slot's reader writes the runs it read and checked itself, on its own thread,
//! through a [`LocalWrites`] handle on the same state (behind a lock): the write, the journal
//! and BLAKE3 then run where the bytes were just read and hashed, with no hand-over to the
//! writer's thread. A position is written once, whichever thread gets to it first.
//!
//! Memory: at most [`COMMANDS`] chunks waiting to be written, [`RETAINED`] bytes kept ahead
//! of the frontier and [`SHA256_PIECES`] pieces waiting for SHA-256.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, mpsc as sync_mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ota_core::chunk::{ArtifactCheck, ArtifactError, BlockShare, CheckHalf, ChunkVerifier};
use ota_core::digest::ChunkId;
use ota_core::journal::JournalBinding;
use tokio::sync::mpsc;

use crate::download::{DownloadError, JournalFile};
use crate::source::{RunChunk, read_exact_at, write_all_at};

/// Chunks (or runs of at most about `source::LOCAL_RUN` bytes) waiting for the writer.
const COMMANDS: usize = 8;
/// Bytes kept in memory ahead of the hashing frontier (beyond, they are read back; little in
/// unit tests, so that both paths run).
const RETAINED: usize = if cfg!(test) { 4 << 10 } else { 8 << 20 };
/// Pieces waiting for the SHA-256 thread.
const SHA256_PIECES: usize = 4;
/// How the whole artifact's BLAKE3 is shared between the SHA-256 thread (every other block of
/// 1 MiB, from the first) and the thread that writes (the others); see `ArtifactCheck::split`.
/// Measured with `cargo bench -p ota-device --bench update` against every block on the
/// writing thread and one block in three on the SHA-256 thread: see ARCHITECTURE.md.
/// (Blocks of 4 KiB in unit tests, whose artifacts are small, so that the blocks are shared.)
const SHARE: BlockShare = match BlockShare::new(if cfg!(test) { 4 << 10 } else { 1 << 20 }, 1, 2) {
    Some(share) => share,
    None => panic!("a share of whole BLAKE3 subtrees"),
};
/// Read-back pieces are at most this long.
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
    /// The writer's state, also used by the [`LocalWrites`] of the local slot's reader;
    /// taken (`None`) when the writer ends.
    shared: Arc<Mutex<Option<Inner>>>,
}

/// Writes verified runs read from the local slot from the reader's own thread, through the
/// same state as the writer's thread (written positions, journal, in-order hashes), so that
/// a local run is read, checked, written and hashed by one thread without a hand-over.
#[derive(Clone)]
pub(crate) struct LocalWrites {
    shared: Arc<Mutex<Option<Inner>>>,
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl LocalWrites {
    /// Write the verified chunks of `chunks` (ranges of `bytes`) at their positions not
    /// written yet (by this reader, another or the writer's thread). `false` if the writer
    /// ended, or if a write failed (the writer's thread then ends with that error, and writes
    /// nothing more): the caller hands the run over as if it had not tried.
    pub(crate) fn write_run(&self, bytes: &Bytes, chunks: &[RunChunk]) -> bool {
        match locked(&self.shared).as_mut() {
            Some(inner) => inner.write_local(bytes, chunks),
            None => false,
        }
    }
}

impl std::fmt::Debug for LocalWrites {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalWrites").finish_non_exhaustive()
    }
}

/// The writes for one run's chunks, each given as the positions to write it at and its range
/// of `bytes`: chunks that go to one position each, at consecutive positions and laid end to
/// end in `bytes`, make one [`Command::Run`]; the others one [`Command::Chunk`] each.
fn run_commands(
    bytes: &Bytes,
    chunks: impl IntoIterator<Item = (Vec<u64>, Range<usize>)>,
) -> Vec<Command> {
    let gathered_command = |(first, count, range): (u64, u64, Range<usize>)| {
        if count == 1 {
            Command::Chunk {
                positions: vec![first],
                bytes: bytes.slice(range),
            }
        } else {
            Command::Run {
                first,
                count,
                bytes: bytes.slice(range),
            }
        }
    };
    let mut commands = Vec::new();
    let mut gathered: Option<(u64, u64, Range<usize>)> = None;
    for (positions, range) in chunks {
        if let [p] = positions[..]
            && let Some((first, count, run)) = &mut gathered
            && *first + *count == p
            && run.end == range.start
        {
            *count += 1;
            run.end = range.end;
            continue;
        }
        commands.extend(gathered.take().map(gathered_command));
        match positions[..] {
            [] => {}
            [p] => gathered = Some((p, 1, range)),
            _ => commands.push(Command::Chunk {
                positions,
                bytes: bytes.slice(range),
            }),
        }
    }
    commands.extend(gathered.take().map(gathered_command));
    commands
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
    /// The first position not yet hashed.
    frontier: u64,
    /// Bytes written ahead of the frontier, kept for the hashes: by first position, the
    /// number of positions they cover and the bytes.
    retained: HashMap<u64, (u64, Bytes)>,
    retained_len: usize,
    hasher: Hasher,
    /// An error met writing for the local reader, for the writer's thread to end with.
    deferred: Option<DownloadError>,
    /// Set once a write failed: nothing more is written.
    stopped: bool,
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
        let hasher = Hasher::start(slot.try_clone().map_err(disk)?, slot_path.clone(), check)?;
        // One batch waits while another is synced; beyond that, the writer waits.
        let (syncs_tx, syncs_rx) = sync_mpsc::sync_channel(1);
        let synced = slot.try_clone().map_err(disk)?;
        let syncer_path = slot_path.clone();
        let syncer = std::thread::Builder::new()
            .name("ota-slot-sync".into())
            .spawn(move || sync_and_journal(synced, syncer_path, journal, binding, syncs_rx))
            .map_err(disk)?;
        let inner = Inner {
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
            hasher,
            deferred: None,
            stopped: false,
        };
        let shared = Arc::new(Mutex::new(Some(inner)));
        let state = Arc::clone(&shared);
        let (tx, mut rx) = mpsc::channel::<Command>(COMMANDS);
        let thread = std::thread::Builder::new()
            .name("ota-slot-write".into())
            .spawn(move || {
                // Positions resumed from an earlier run are read back and hashed here, not on
                // the caller's (the download loop's) thread.
                if let Some(inner) = locked(&state).as_mut() {
                    inner.advance();
                }
                while let Some(command) = rx.blocking_recv() {
                    if let Some(inner) = locked(&state).as_mut() {
                        inner.handle_checked(command)?;
                    }
                }
                let inner = locked(&state).take();
                match inner {
                    Some(inner) => inner.end(),
                    None => Ok(None),
                }
            })
            .map_err(disk)?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
            shared,
        })
    }

    /// A handle for the local slot's reader to write its verified runs itself.
    pub(crate) fn local_writes(&self) -> LocalWrites {
        LocalWrites {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Write the verified `bytes` at each of `positions` (those the local reader wrote
    /// already are skipped). An error means the writer stopped: [`SlotWriter::finish`] says
    /// why.
    pub(crate) async fn write(&self, positions: Vec<u64>, bytes: Bytes) -> Result<(), ()> {
        match &self.tx {
            Some(tx) => tx
                .send(Command::Chunk { positions, bytes })
                .await
                .map_err(|_| ()),
            None => Err(()),
        }
    }

    /// Write the verified chunks of one run: for each, the positions to write it at (those
    /// the local reader wrote already are skipped) and its range of `bytes`. Chunks that go to
    /// one position each, at consecutive positions and laid end to end, make one write. An
    /// error means the writer stopped.
    pub(crate) async fn write_chunks(
        &self,
        bytes: &Bytes,
        chunks: Vec<(Vec<u64>, Range<usize>)>,
    ) -> Result<(), ()> {
        let Some(tx) = &self.tx else {
            return Err(());
        };
        for command in run_commands(bytes, chunks) {
            tx.send(command).await.map_err(|_| ())?;
        }
        Ok(())
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

    /// [`Inner::handle`], unless a write failed before (its error, once).
    fn handle_checked(&mut self, command: Command) -> Result<(), DownloadError> {
        if let Some(error) = self.deferred.take() {
            return Err(error);
        }
        if self.stopped {
            return Err(self.disk(std::io::Error::other("an earlier write failed")));
        }
        self.handle(command).inspect_err(|_| self.stopped = true)
    }

    /// See [`LocalWrites::write_run`].
    fn write_local(&mut self, bytes: &Bytes, chunks: &[RunChunk]) -> bool {
        if self.stopped {
            return false;
        }
        let written = &self.written;
        let fresh = chunks.iter().filter(|c| c.verdict.is_ok()).map(|c| {
            let positions = c.positions.iter().copied();
            let fresh = positions.filter(|&p| !written[p as usize]).collect();
            (fresh, c.range.clone())
        });
        for command in run_commands(bytes, fresh) {
            if let Err(error) = self.handle(command) {
                self.stopped = true;
                self.deferred = Some(error);
                return false;
            }
        }
        true
    }

    fn handle(&mut self, command: Command) -> Result<(), DownloadError> {
        match command {
            Command::Chunk {
                mut positions,
                bytes,
            } => {
                // Positions the local reader wrote meanwhile are not written again.
                positions.retain(|&p| !self.written[p as usize]);
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
            } if (first..first + count).any(|p| self.written[p as usize]) => {
                // Some were written meanwhile by the local reader: the others one by one.
                let entries = self.verifier.index().entries();
                let base = entries[first as usize].offset();
                let pieces: Vec<(u64, Bytes)> = (first..first + count)
                    .map(|p| {
                        let entry = &entries[p as usize];
                        let start = (entry.offset() - base) as usize;
                        (p, bytes.slice(start..start + entry.len() as usize))
                    })
                    .collect();
                for (p, chunk) in pieces {
                    self.handle(Command::Chunk {
                        positions: vec![p],
                        bytes: chunk,
                    })?;
                }
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
                        self.hasher.feed(Piece::ReadBack { offset, len });
                    }
                    self.hasher.feed(Piece::Bytes(bytes));
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
                            self.hasher.feed(Piece::ReadBack {
                                offset,
                                len: run_len,
                            });
                            Some((entry.offset(), len))
                        }
                        None => Some((entry.offset(), len)),
                    };
                }
            }
            self.frontier += 1;
        }
        if let Some((offset, len)) = run {
            self.hasher.feed(Piece::ReadBack { offset, len });
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
        if let Some(error) = self.deferred.take() {
            return Err(error);
        }
        self.send_batch(true)?;
        self.join_syncer()?;
        self.slot.sync_all().map_err(|e| self.disk(e))?;
        self.advance();
        let complete = self.frontier as usize == self.written.len();
        let hashed = self.hasher.finish()?;
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

/// The whole check, fed in order by the thread that wrote the bytes (the writer's, or the
/// local reader's): its half of the BLAKE3 blocks there, after each write, and SHA-256 with the
/// other half on a thread of its own that lives as long as the writer, handed the same pieces
/// (no copy) so that both run at once.
struct Hasher {
    /// The slot, for pieces read back.
    slot: File,
    slot_path: PathBuf,
    /// This thread's half of the check: the BLAKE3 blocks that are not the SHA-256 thread's.
    blake3: CheckHalf,
    /// `None` once the SHA-256 thread stopped (its error is had by joining it).
    sha256: Option<sync_mpsc::SyncSender<Bytes>>,
    sha256_thread: Option<JoinHandle<Result<CheckHalf, ArtifactError>>>,
    /// The first failure (a piece that could not be read back, bytes beyond the signed
    /// length): nothing more is hashed.
    failed: Option<WriterEnd>,
}

impl Hasher {
    fn start(slot: File, slot_path: PathBuf, check: ArtifactCheck) -> Result<Self, DownloadError> {
        let (mut sha256, blake3) = check.split(SHARE);
        let (to_sha256, pieces) = sync_mpsc::sync_channel::<Bytes>(SHA256_PIECES);
        let sha256_thread = std::thread::Builder::new()
            .name("ota-slot-sha256".into())
            .spawn(move || {
                for piece in pieces {
                    sha256.update(&piece)?;
                }
                Ok(sha256)
            })
            .map_err(|source| DownloadError::Disk {
                path: slot_path.clone(),
                source,
            })?;
        Ok(Self {
            slot,
            slot_path,
            blake3,
            sha256: Some(to_sha256),
            sha256_thread: Some(sha256_thread),
            failed: None,
        })
    }

    /// Hash the next piece of the artifact.
    fn feed(&mut self, piece: Piece) {
        if self.failed.is_some() {
            return;
        }
        let bytes = match piece {
            Piece::Bytes(bytes) => bytes,
            Piece::ReadBack { offset, len } => {
                // A buffer of its own: the SHA-256 thread may still hash the one before.
                let mut buf = vec![0u8; len as usize];
                if let Err(source) = read_exact_at(&self.slot, &mut buf, offset) {
                    self.failed = Some(Err(DownloadError::Disk {
                        path: self.slot_path.clone(),
                        source,
                    }));
                    return;
                }
                Bytes::from(buf)
            }
        };
        if let Some(tx) = &self.sha256
            && tx.send(bytes.clone()).is_err()
        {
            self.sha256 = None;
        }
        if let Err(error) = self.blake3.update(&bytes) {
            self.failed = Some(Ok(Some(Err(error))));
        }
    }

    /// The check's result (`Some`; short if not every byte was fed: the writer then ignores
    /// it), or why hashing failed.
    fn finish(mut self) -> WriterEnd {
        drop(self.sha256.take());
        let sha256 = self.sha256_thread.take().map(JoinHandle::join);
        if let Some(failed) = self.failed {
            return failed;
        }
        match sha256 {
            Some(Ok(Ok(sha256))) => Ok(Some(ArtifactCheck::finish_split(sha256, self.blake3))),
            Some(Ok(Err(error))) => Ok(Some(Err(error))),
            _ => Err(DownloadError::Disk {
                path: self.slot_path,
                source: std::io::Error::other("the SHA-256 thread panicked"),
            }),
        }
    }
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

    fn binding(target: &ota_core::tuf::VerifiedArtifact) -> JournalBinding {
        JournalBinding::new(target.path(), target.sha256(), &target.chunks().chunk_tree)
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// A writer into `slot` at `path`, journalling into a new journal at `journal_path`.
    fn start(
        slot: File,
        path: &std::path::Path,
        journal_path: &std::path::Path,
        (target, verifier): (&ota_core::tuf::VerifiedArtifact, &ChunkVerifier),
        done: Vec<bool>,
    ) -> SlotWriter {
        let binding = binding(target);
        let count = verifier.index().len();
        let journal = open_journal(journal_path, &binding, count).unwrap();
        SlotWriter::start(
            slot,
            path.to_path_buf(),
            (journal, binding),
            verifier,
            ArtifactCheck::new(target),
            done,
            FlushPolicy {
                bytes: 8 << 10,
                interval: Duration::from_secs(60),
            },
        )
        .unwrap()
    }

    /// An artifact of `len` pseudo-random bytes cut in small chunks: (bytes, target, verifier).
    fn artifact(len: usize) -> (Vec<u8>, ota_core::tuf::VerifiedArtifact, ChunkVerifier) {
        artifact_cut(len, ChunkingParams::new(64, 256, 1024).unwrap())
    }

    fn artifact_cut(
        len: usize,
        params: ChunkingParams,
    ) -> (Vec<u8>, ota_core::tuf::VerifiedArtifact, ChunkVerifier) {
        let mut data = vec![0u8; len];
        blake3::Hasher::new()
            .update(b"writer test")
            .finalize_xof()
            .fill(&mut data);
        let mut ingest = Ingest::new(params);
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
    ///
    /// With `local`, each group is also handed to the local reader's
    /// [`LocalWrites`] as a run: before the loop's write for even groups, after it for odd
    /// ones, and in place of it for every fourth group (where the loop writes only a chunk
    /// whose verdict, every fifth, says it failed its check).
    fn run(
        data: &[u8],
        target: &ota_core::tuf::VerifiedArtifact,
        verifier: &ChunkVerifier,
        (resumed, resumed_bytes): (&[u64], &[u8]),
        group: usize,
        local: bool,
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
        let (journal_path, binding) = (dir.path().join("t.journal"), binding(target));
        let runtime = runtime();
        let checked = runtime.block_on(async {
            let writer = start(slot, &path, &journal_path, (target, verifier), done.clone());
            let mut groups: Vec<Vec<u64>> = Vec::new();
            for p in (0..entries.len() as u64).filter(|&p| !done[p as usize]) {
                match groups.last_mut() {
                    Some(g) if g.len() < group && g.last() == Some(&(p - 1)) => g.push(p),
                    _ => groups.push(vec![p]),
                }
            }
            let local_writes = writer.local_writes();
            for (n, g) in groups.iter().enumerate().rev() {
                let (first, last) = (&entries[g[0] as usize], &entries[g[g.len() - 1] as usize]);
                let range =
                    first.offset() as usize..(last.offset() + u64::from(last.len())) as usize;
                let bytes = Bytes::copy_from_slice(&data[range]);
                let chunks: Vec<RunChunk> = g
                    .iter()
                    .map(|&p| {
                        let e = &entries[p as usize];
                        let start = (e.offset() - first.offset()) as usize;
                        RunChunk {
                            id: *e.id(),
                            range: start..start + e.len() as usize,
                            positions: vec![p],
                            verdict: if p % 5 == 0 {
                                Err(ota_core::chunk::ChunkError::PositionOutOfRange {
                                    position: p,
                                    count: 0,
                                })
                            } else {
                                Ok(())
                            },
                        }
                    })
                    .collect();
                if local && n % 2 == 0 {
                    assert!(local_writes.write_run(&bytes, &chunks));
                }
                if local && n % 4 == 0 {
                    // The loop writes only what the reader did not.
                    for c in chunks.iter().filter(|c| c.verdict.is_err()) {
                        writer
                            .write(c.positions.clone(), bytes.slice(c.range.clone()))
                            .await
                            .unwrap();
                    }
                } else {
                    // One chunk, or a run of them (one write).
                    let each = chunks
                        .iter()
                        .map(|c| (c.positions.clone(), c.range.clone()));
                    writer.write_chunks(&bytes, each.collect()).await.unwrap();
                }
                if local && n % 2 == 1 {
                    assert!(local_writes.write_run(&bytes, &chunks));
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
        let (checked, mut journalled) =
            run(&data, &target, &verifier, (&[0, 1, 2], &data), 1, false);
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
        let (checked, mut journalled) = run(&data, &target, &verifier, (&[0], &data), 5, false);
        assert_eq!(checked, Some(Ok(())));
        journalled.sort_unstable();
        assert_eq!(journalled, (1..count).collect::<Vec<_>>());
        // A run that holds other bytes than the chunks verified (the writer trusts its
        // caller's verification; the whole check does not): refused.
        let mut changed = data.clone();
        changed[data.len() / 2] ^= 1;
        let (checked, _) = run(&changed, &target, &verifier, (&[0], &data), 5, false);
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
        let (checked, _) = run(&data, &target, &verifier, (&[0, 1], &stale), 1, false);
        assert!(
            matches!(checked, Some(Err(ArtifactError::Sha256Mismatch { .. }))),
            "{checked:?}"
        );
    }

    #[test]
    fn runs_written_by_the_local_reader_and_the_loop_are_written_and_journalled_once() {
        let (data, target, verifier) = artifact_cut(
            (1 << 20) + 300_000,
            ChunkingParams::new(1024, 4096, 16_384).unwrap(),
        );
        let count = verifier.index().len();
        let (checked, mut journalled) = run(&data, &target, &verifier, (&[0, 5], &data), 3, true);
        assert_eq!(checked, Some(Ok(())));
        journalled.sort_unstable();
        let expected: Vec<u64> = (0..count).filter(|p| ![0, 5].contains(p)).collect();
        assert_eq!(journalled, expected, "each position journalled once");
    }

    #[test]
    fn a_write_that_fails_on_the_readers_thread_ends_the_writer_with_its_error() {
        let (data, target, verifier) = artifact(16 << 10);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slot.img");
        std::fs::write(&path, vec![0u8; data.len()]).unwrap();
        // Opened for reading only: every write into it fails (EBADF).
        let slot = File::open(&path).unwrap();
        let entries = verifier.index().entries();
        let writer = start(
            slot,
            &path,
            &dir.path().join("t.journal"),
            (&target, &verifier),
            vec![false; entries.len()],
        );
        let local_writes = writer.local_writes();
        let (e0, e1) = (&entries[0], &entries[1]);
        let bytes = Bytes::copy_from_slice(&data[..(e1.offset() + u64::from(e1.len())) as usize]);
        let chunk = |p: u64, e: &ota_core::chunk::IndexEntry| RunChunk {
            id: *e.id(),
            range: e.offset() as usize..(e.offset() + u64::from(e.len())) as usize,
            positions: vec![p],
            verdict: Ok(()),
        };
        let chunks = [chunk(0, e0), chunk(1, e1)];
        // Refused, then refused at once: the reader hands such runs to the loop.
        assert!(!local_writes.write_run(&bytes, &chunks));
        assert!(!local_writes.write_run(&bytes, &chunks));
        // The writer ends with the reader's error (not a later one of its own).
        let ended = runtime().block_on(writer.finish());
        match ended {
            Err(DownloadError::Disk { path: p, source }) => {
                assert_eq!(p, path);
                assert_eq!(source.raw_os_error(), Some(9), "{source}");
            }
            other => panic!("{other:?}"),
        }
        // After the end, the handle writes nothing.
        assert!(!local_writes.write_run(&bytes, &chunks));
    }
}
