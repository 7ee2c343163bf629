//! Writing one artifact into the inactive slot: resume from the journal, then drive
//! `ota_core::fetch::Scheduler` over every source, verifying each chunk before it is written,
//! then check the whole artifact against its signed hashes.
//!
//! The active slot is read ahead by a `source::LocalReader`, in runs of adjacent chunks, each
//! chunk checked against its id on the reader's thread (its verdict comes with the bytes, and
//! a chunk that failed is handled as any corrupt chunk: the source banned, the chunk asked
//! elsewhere); a run's verified chunks that go to consecutive positions are written with one
//! write. Chunks from the network are checked here.
//!
//! Crash safety: a chunk's journal record is appended only after its bytes are written and
//! the slot file synced; on resume every journalled chunk is read back and verified again
//! before it counts (the journal saves downloads, it is never trusted for content). A chunk
//! that occurs at several positions is copied locally to those not written yet.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ota_core::chunk::{ArtifactError, ChunkVerifier};
use ota_core::digest::ChunkId;
use ota_core::fetch::{
    Action, ChunkOutcome, Config, Holdings, Millis, Need, Scheduler, SourceId, SourceKind,
};
use ota_core::journal::{self, JournalBinding, JournalRecord};
use ota_core::tuf::VerifiedArtifact;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc;

use crate::progress::Progress;
use crate::source::{Event, LocalReader, RunChunk, Source, Transport, read_exact_at, write_all_at};
use crate::writer::{FlushPolicy, SlotWriter};

/// The slot is synced and the chunks written since journalled (the sync policy of the
/// device's writes) once this many bytes were written since the last sync…
pub const JOURNAL_BYTES: u64 = 4 << 20;
/// … or this long after it, whichever comes first.
pub const JOURNAL_INTERVAL: Duration = Duration::from_millis(250);
/// Chunks in flight per network source.
const NETWORK_IN_FLIGHT: usize = 64;
/// Chunks in flight from the local slot (read ahead and verified by its `LocalReader`, in
/// runs of about `source::LOCAL_RUN` bytes).
const LOCAL_IN_FLIGHT: usize = 64;
/// Events buffered between request tasks and the download loop.
const EVENT_QUEUE: usize = 64;
/// An update that verifies no chunk for this long gives up (sources that back off may come
/// back, but not forever).
const NO_PROGRESS_LIMIT: Duration = Duration::from_secs(120);

/// Why an artifact could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DownloadError {
    /// The slot or journal file failed (a full disk, a missing directory…).
    #[error("{path}: {source}")]
    Disk {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// No usable source holds a chunk.
    #[error("chunk {id} cannot be had from any source still usable")]
    Stuck {
        /// The chunk.
        id: ChunkId,
    },
    /// No chunk was verified for too long (every source gone, stalled or backing off).
    #[error("no chunk verified for {secs} s: every source is gone, stalled or backing off")]
    NoProgress {
        /// How long.
        secs: u64,
    },
    /// The written artifact does not match its signed hashes.
    #[error("artifact {target}: {source}")]
    Artifact {
        /// The target path.
        target: String,
        /// What differs.
        source: ArtifactError,
    },
}

impl DownloadError {
    /// Whether the disk ran full.
    pub fn disk_full(&self) -> bool {
        matches!(self, Self::Disk { source, .. } if source.raw_os_error() == Some(28))
    }
}

/// What one source did, as the device reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceUse {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: SourceKind,
    /// Verified bytes it delivered first.
    pub bytes: u64,
    /// Verified chunks it delivered first.
    pub chunks: u64,
    /// Chunk ids it was asked for (and answered with bytes).
    pub fetched_chunks: u64,
    /// Why it was banned for this update, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub banned: Option<String>,
    /// Why it was dropped for the update (refused at the start: another certificate than the
    /// one pinned, or no connection could be started; unreachable ones are lost, not dropped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<String>,
    /// Times its requests failed for the network (it was asked again after a backoff).
    #[serde(default)]
    pub lost: u32,
    /// Times its lost connection was dialled again.
    #[serde(default)]
    pub redials: u32,
    /// The last such failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Whether the scheduler judged it slow.
    pub slow: bool,
}

/// What writing one artifact did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactReport {
    /// The target path.
    pub target: String,
    /// Chunks in the artifact (positions).
    pub chunks: u64,
    /// Its length.
    pub bytes: u64,
    /// Positions found verified in the slot from an earlier, interrupted run.
    pub resumed_chunks: u64,
    /// Their bytes.
    pub resumed_bytes: u64,
    /// Verified bytes by source kind (the local slot included).
    pub bytes_by_kind: BTreeMap<SourceKind, u64>,
    /// Bytes that arrived after another copy was verified.
    pub duplicate_bytes: u64,
}

/// One artifact to write.
#[derive(Debug)]
pub struct Job<'a> {
    /// The signed target.
    pub artifact: &'a VerifiedArtifact,
    /// The verified chunk index.
    pub verifier: &'a ChunkVerifier,
    /// The slot file (`slots/X/NAME.img`).
    pub slot_file: PathBuf,
    /// The journal (`journal/NAME.journal`).
    pub journal_file: PathBuf,
}

/// The sources of an update and what each did so far (across artifacts).
#[derive(Debug)]
pub struct Sources {
    /// The sources.
    pub list: Vec<Source>,
    /// Per source: what it did.
    pub uses: Vec<SourceUse>,
    /// Chunk ids of the installed image (what the local slot may give).
    pub local_holdings: HashSet<ChunkId>,
}

impl Sources {
    /// Sources with nothing done yet.
    pub fn new(list: Vec<Source>, local_holdings: HashSet<ChunkId>) -> Self {
        let uses = list
            .iter()
            .map(|s| SourceUse {
                name: s.name.clone(),
                kind: s.kind,
                bytes: 0,
                chunks: 0,
                fetched_chunks: 0,
                banned: None,
                dropped: None,
                lost: 0,
                redials: 0,
                last_error: None,
                slow: false,
            })
            .collect();
        Self {
            list,
            uses,
            local_holdings,
        }
    }

    fn index(&self, id: SourceId) -> Option<usize> {
        self.list.iter().position(|s| s.id == id)
    }

    /// Whether a source may still be used (not banned or dropped).
    pub fn usable(&self, i: usize) -> bool {
        self.uses[i].banned.is_none() && self.uses[i].dropped.is_none()
    }

    /// Ban a source for the rest of the update.
    pub fn ban(&mut self, id: SourceId, reason: String) {
        if let Some(i) = self.index(id) {
            self.uses[i].banned.get_or_insert(reason);
        }
    }
}

/// Write `job`'s artifact into its slot file from `sources`.
pub async fn download(
    job: &Job<'_>,
    sources: &mut Sources,
    config: Config,
    progress: &Progress,
) -> Result<ArtifactReport, DownloadError> {
    let started = Instant::now();
    let now = || Millis(started.elapsed().as_millis() as u64);
    let index = job.verifier.index();
    let entries = index.entries();
    let mut report = ArtifactReport {
        target: job.artifact.path().to_string(),
        chunks: index.len(),
        bytes: index.total_length(),
        ..ArtifactReport::default()
    };

    let disk = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DownloadError::Disk { path, source }
    };
    let slot = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&job.slot_file)
        .map_err(disk(&job.slot_file))?;
    let length = job.artifact.length();
    if slot.metadata().map_err(disk(&job.slot_file))?.len() != length {
        slot.set_len(length).map_err(disk(&job.slot_file))?;
    }

    // Resume: journalled positions, each re-verified from the slot.
    let binding = JournalBinding::new(
        job.artifact.path(),
        job.artifact.sha256(),
        &job.artifact.chunks().chunk_tree,
    );
    let mut done = vec![false; entries.len()];
    let mut journal = open_journal(&job.journal_file, &binding, index.len())?;
    let mut scratch = Vec::new();
    for record in journal.records.drain(..) {
        let p = record.position as usize;
        if done[p] || entries[p].id() != &record.id {
            continue;
        }
        if read_verified(&slot, job.verifier, record.position, &mut scratch) {
            done[p] = true;
        }
    }
    // A chunk verified at one position and not yet at another is copied locally.
    let mut verified_at: HashMap<ChunkId, u64> = HashMap::new();
    for (p, entry) in entries.iter().enumerate() {
        if done[p] {
            verified_at.entry(*entry.id()).or_insert(p as u64);
        }
    }
    let mut copied = Vec::new();
    for (p, entry) in entries.iter().enumerate() {
        if done[p] {
            continue;
        }
        if let Some(&from) = verified_at.get(entry.id())
            && read_verified(&slot, job.verifier, from, &mut scratch)
        {
            write_all_at(&slot, &scratch, entry.offset()).map_err(disk(&job.slot_file))?;
            copied.push(p as u64);
        }
    }
    if !copied.is_empty() {
        slot.sync_data().map_err(disk(&job.slot_file))?;
        for &p in &copied {
            done[p as usize] = true;
            journal.append(&binding, p, entries[p as usize].id())?;
        }
        journal.sync()?;
    }
    for (p, entry) in entries.iter().enumerate() {
        if done[p] {
            report.resumed_chunks += 1;
            report.resumed_bytes += u64::from(entry.len());
        }
    }
    let mut verified_bytes = report.resumed_bytes;
    let writer = SlotWriter::start(
        slot,
        job.slot_file.clone(),
        (journal, binding),
        job.verifier,
        ota_core::chunk::ArtifactCheck::new(job.artifact),
        done.clone(),
        FlushPolicy {
            bytes: JOURNAL_BYTES,
            interval: JOURNAL_INTERVAL,
        },
    )?;
    progress.start_bytes(job.artifact.path(), length);
    progress.bytes(verified_bytes, length, &json!({}));

    // What is left: each chunk id once.
    let mut needs = Vec::new();
    let mut seen = HashSet::new();
    for (p, entry) in entries.iter().enumerate() {
        if !done[p] && seen.insert(*entry.id()) {
            needs.push(Need {
                id: *entry.id(),
                len: entry.len(),
            });
        }
    }
    if !needs.is_empty() {
        let max_len = index.params().max();
        let mut scheduler = Scheduler::new(config, needs.iter().copied());
        for (i, source) in sources.list.iter().enumerate() {
            if !sources.usable(i) {
                continue;
            }
            let (in_flight, holdings) = match &source.transport {
                Transport::Local(_) => {
                    let held: HashSet<ChunkId> = needs
                        .iter()
                        .map(|n| n.id)
                        .filter(|id| sources.local_holdings.contains(id))
                        .collect();
                    if held.is_empty() {
                        continue;
                    }
                    (LOCAL_IN_FLIGHT, Holdings::Only(held))
                }
                _ => (NETWORK_IN_FLIGHT, Holdings::Any),
            };
            scheduler.add_source(now(), source.id, source.kind, in_flight, holdings);
            if !source.connected() {
                // Unreachable so far: asked (and dialled) after the lost-source backoff.
                scheduler.handle_source_lost(now(), source.id);
            }
        }
        scheduler.start(now());

        // Declared before the channel, so that they are dropped (and joined) after the
        // receiver: a reader waiting to hand over an event then stops.
        let mut readers: HashMap<SourceId, LocalReader> = HashMap::new();
        let mut local_asks: HashMap<SourceId, Vec<ChunkId>> = HashMap::new();
        let (tx, mut rx) = mpsc::channel::<Event>(EVENT_QUEUE);
        let shared_verifier = Arc::new(job.verifier.clone());
        for (i, source) in sources.list.iter().enumerate() {
            if let Transport::Local(local) = &source.transport
                && sources.usable(i)
            {
                let reader = LocalReader::start(
                    source.id,
                    local.clone(),
                    shared_verifier.clone(),
                    tx.clone(),
                    Some(writer.local_writes()),
                )
                .map_err(disk(&job.slot_file))?;
                readers.insert(source.id, reader);
            }
        }
        // Sources unreachable at the start, dialled in the background (stopped at the end).
        let _dials = AbortOnDrop(
            sources
                .list
                .iter()
                .filter_map(|source| source.spawn_dial(tx.clone()))
                .collect(),
        );
        let mut fetch_counts: HashMap<SourceId, u64> = HashMap::new();
        let mut last_progress = Instant::now();
        'run: loop {
            if last_progress.elapsed() >= NO_PROGRESS_LIMIT {
                writer.finish().await?;
                finish_uses(sources, &scheduler.report(), &fetch_counts);
                return Err(DownloadError::NoProgress {
                    secs: NO_PROGRESS_LIMIT.as_secs(),
                });
            }
            while let Some(action) = scheduler.poll_action() {
                match action {
                    Action::Request { source, ids } => {
                        if readers.contains_key(&source) {
                            // Asked of its reader at once, after this round of actions.
                            local_asks.entry(source).or_default().extend(ids);
                        } else if let Some(i) = sources.index(source) {
                            sources.list[i].spawn_request(ids, max_len, tx.clone());
                        }
                    }
                    Action::Complete => break 'run,
                    Action::Stuck { id } => {
                        writer.finish().await?;
                        finish_uses(sources, &scheduler.report(), &fetch_counts);
                        return Err(DownloadError::Stuck { id });
                    }
                    // Cancel: the request's remaining answers arrive and count as duplicates.
                    _ => {}
                }
            }
            for (source, ids) in local_asks.drain() {
                if let Some(reader) = readers.get(&source) {
                    reader.request(ids);
                }
            }
            let deadline = scheduler.poll_timeout();
            let event = match deadline {
                Some(at) => {
                    let wait = Duration::from_millis(at.0.saturating_sub(now().0));
                    match tokio::time::timeout(wait, rx.recv()).await {
                        Ok(event) => event,
                        Err(_) => {
                            scheduler.handle_timeout(now());
                            continue;
                        }
                    }
                }
                None => {
                    // Nothing in flight has a deadline: wait for answers, but wake up to flush.
                    match tokio::time::timeout(JOURNAL_INTERVAL, rx.recv()).await {
                        Ok(event) => event,
                        Err(_) => {
                            if writer.flush().await.is_err() {
                                return Err(stopped(writer).await);
                            }
                            scheduler.handle_timeout(now());
                            continue;
                        }
                    }
                }
            };
            // The loop holds a sender, so the channel never closes.
            let Some(event) = event else { continue };
            match event {
                Event::Blob { source, id, bytes } => {
                    *fetch_counts.entry(source).or_default() += 1;
                    let positions = job.verifier.positions_of(&id);
                    let Some(&first) = positions.first() else {
                        // Not a chunk of this artifact: the scheduler ignores unknown ids.
                        continue;
                    };
                    match job.verifier.verify(first, &bytes) {
                        Ok(_) => {
                            let fresh: Vec<u64> = positions
                                .iter()
                                .copied()
                                .filter(|&p| !done[p as usize])
                                .collect();
                            for &p in &fresh {
                                done[p as usize] = true;
                                verified_bytes += u64::from(entries[p as usize].len());
                            }
                            let fresh = !fresh.is_empty()
                                && match writer.write(fresh, bytes).await {
                                    Ok(()) => true,
                                    Err(()) => return Err(stopped(writer).await),
                                };
                            scheduler.handle_chunk(now(), source, &id, ChunkOutcome::Verified);
                            if fresh {
                                last_progress = Instant::now();
                                let by_kind =
                                    serde_json::to_value(&scheduler.report().bytes_by_kind)
                                        .unwrap_or_default();
                                progress.bytes(verified_bytes, length, &by_kind);
                            }
                        }
                        Err(error) => {
                            ban_for_chunk(sources, progress, source, &error.to_string());
                            scheduler.handle_chunk(now(), source, &id, ChunkOutcome::Corrupt);
                        }
                    }
                }
                Event::Run {
                    source,
                    bytes,
                    chunks,
                    written,
                } => {
                    *fetch_counts.entry(source).or_default() += chunks.len() as u64;
                    let mut writes = Vec::new();
                    let mut fresh_any = false;
                    for RunChunk {
                        id,
                        range,
                        mut positions,
                        verdict,
                    } in chunks
                    {
                        if positions.is_empty() {
                            // Not a chunk of this artifact: the scheduler ignores unknown ids.
                            continue;
                        }
                        match verdict {
                            Ok(()) => {
                                positions.retain(|&p| !done[p as usize]);
                                let fresh = positions;
                                for &p in &fresh {
                                    done[p as usize] = true;
                                    verified_bytes += u64::from(entries[p as usize].len());
                                }
                                fresh_any |= !fresh.is_empty();
                                // Written by the reader already, or to write now.
                                if !written {
                                    writes.push((fresh, range));
                                }
                                scheduler.handle_chunk(now(), source, &id, ChunkOutcome::Verified);
                            }
                            Err(error) => {
                                ban_for_chunk(sources, progress, source, &error.to_string());
                                scheduler.handle_chunk(now(), source, &id, ChunkOutcome::Corrupt);
                            }
                        }
                    }
                    if !writes.is_empty() && writer.write_chunks(&bytes, writes).await.is_err() {
                        return Err(stopped(writer).await);
                    }
                    if fresh_any {
                        last_progress = Instant::now();
                        let by_kind = serde_json::to_value(&scheduler.report().bytes_by_kind)
                            .unwrap_or_default();
                        progress.bytes(verified_bytes, length, &by_kind);
                    }
                }
                Event::Redialled { source } => {
                    // Reachable: if it was backing off (unreachable at the start), it is
                    // asked now.
                    scheduler.handle_source_reachable(now(), source);
                    if let Some(i) = sources.index(source) {
                        sources.uses[i].redials += 1;
                        progress.event(
                            "source_redialled",
                            json!({ "source": sources.list[i].name }),
                        );
                    }
                }
                Event::Missing { source, id } => {
                    scheduler.handle_chunk(now(), source, &id, ChunkOutcome::Missing);
                }
                Event::Failed {
                    source,
                    reason,
                    misbehaved,
                } => {
                    if let Some(i) = sources.index(source) {
                        let name = sources.list[i].name.clone();
                        if misbehaved {
                            // A corrupt source (a blob longer than announced or than the
                            // maximum, another blob than asked for…): banned for the update
                            // and named, like one that sends a chunk whose hash differs.
                            let reason = format!("broke the protocol: {reason}");
                            progress.event(
                                "source_banned",
                                json!({ "source": name, "reason": reason }),
                            );
                            sources.uses[i].banned.get_or_insert(reason);
                            scheduler.remove_source(now(), source);
                        } else {
                            // Unreachable for now: asked again after a backoff.
                            progress
                                .event("source_lost", json!({ "source": name, "reason": reason }));
                            sources.uses[i].lost += 1;
                            sources.uses[i].last_error = Some(reason);
                            scheduler.handle_source_lost(now(), source);
                        }
                    }
                }
            }
        }
        let fetch_report = scheduler.report();
        report.bytes_by_kind = fetch_report.bytes_by_kind.clone();
        report.bytes_by_kind.retain(|_, b| *b > 0);
        report.duplicate_bytes = fetch_report.duplicate_bytes;
        finish_uses(sources, &fetch_report, &fetch_counts);
    }
    // The whole artifact, hashed as it was written (and read back where it was not in
    // memory), against its signed hashes.
    progress.event(
        "verify_artifact",
        json!({ "artifact": job.artifact.path() }),
    );
    let artifact_error = |source| DownloadError::Artifact {
        target: job.artifact.path().into(),
        source,
    };
    match writer.finish().await? {
        Some(checked) => checked.map_err(artifact_error)?,
        None => {
            // Every position was verified, so the writer saw them all: a bug if not.
            return Err(artifact_error(ArtifactError::TooShort {
                signed: length,
                actual: 0,
            }));
        }
    }
    Ok(report)
}

/// Ban `source` for a chunk that did not match its id, and say so.
fn ban_for_chunk(sources: &mut Sources, progress: &Progress, source: SourceId, reason: &str) {
    if let Some(i) = sources.index(source) {
        sources.uses[i].banned.get_or_insert(reason.to_string());
    }
    progress.event(
        "source_banned",
        json!({
            "source": sources.index(source).map(|i| sources.list[i].name.clone()),
            "reason": reason,
        }),
    );
}

/// Why the slot writer stopped (it stops only on an error).
async fn stopped(writer: SlotWriter) -> DownloadError {
    match writer.finish().await {
        Err(error) => error,
        Ok(_) => DownloadError::Disk {
            path: PathBuf::from("(slot writer)"),
            source: std::io::Error::other("the slot writer stopped"),
        },
    }
}

fn finish_uses(
    sources: &mut Sources,
    report: &ota_core::fetch::Report,
    fetch_counts: &HashMap<SourceId, u64>,
) {
    for s in &report.sources {
        if let Some(i) = sources.index(s.source) {
            let used = &mut sources.uses[i];
            used.bytes += s.bytes;
            used.chunks += s.chunks;
            used.slow |= s.slow;
            if let Some(ota_core::fetch::BanReason::CorruptChunk { id }) = &s.banned {
                used.banned
                    .get_or_insert_with(|| format!("sent a corrupt chunk {id}"));
            }
        }
    }
    for (source, n) in fetch_counts {
        if let Some(i) = sources.index(*source) {
            sources.uses[i].fetched_chunks += n;
        }
    }
}

/// Read the chunk at `position` from the slot into `buf` and verify it.
fn read_verified(slot: &File, verifier: &ChunkVerifier, position: u64, buf: &mut Vec<u8>) -> bool {
    let Some(entry) = verifier.index().entry(position) else {
        return false;
    };
    buf.resize(entry.len() as usize, 0);
    read_exact_at(slot, buf, entry.offset()).is_ok() && verifier.verify(position, buf).is_ok()
}

/// An open journal: the records read at open, and the file to append to.
pub(crate) struct JournalFile {
    path: PathBuf,
    file: File,
    records: Vec<JournalRecord>,
}

pub(crate) fn open_journal(
    path: &Path,
    binding: &JournalBinding,
    chunks: u64,
) -> Result<JournalFile, DownloadError> {
    let disk = |source| DownloadError::Disk {
        path: path.to_path_buf(),
        source,
    };
    // Bound the read: a header and two records per chunk at most (parse refuses more).
    let max = journal::HEADER_LEN as u64 + chunks.saturating_mul(2 * journal::RECORD_LEN as u64);
    let existing = match File::open(path) {
        Ok(file) => {
            let len = file.metadata().map_err(disk)?.len();
            if len <= max {
                let mut bytes = Vec::with_capacity(len as usize);
                std::io::Read::read_to_end(&mut std::io::Read::take(file, max), &mut bytes)
                    .map_err(disk)?;
                Some(bytes)
            } else {
                None
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(disk(e)),
    };
    if let Some(bytes) = existing
        && let Ok((records, valid)) = journal::parse(&bytes, binding, chunks)
    {
        let file = OpenOptions::new().write(true).open(path).map_err(disk)?;
        // Cut a torn tail before appending.
        file.set_len(valid as u64).map_err(disk)?;
        let mut file = file;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0)).map_err(disk)?;
        return Ok(JournalFile {
            path: path.to_path_buf(),
            file,
            records,
        });
    }
    // No journal, or one for another artifact: start afresh.
    let mut file = File::create(path).map_err(disk)?;
    file.write_all(&journal::encode_header(binding))
        .map_err(disk)?;
    file.sync_all().map_err(disk)?;
    if let Some(dir) = path.parent() {
        crate::state::sync_dir(dir).map_err(|e| match e {
            crate::state::StateError::Io { source, .. } => disk(source),
            other => disk(std::io::Error::other(other.to_string())),
        })?;
    }
    Ok(JournalFile {
        path: path.to_path_buf(),
        file,
        records: Vec::new(),
    })
}

impl JournalFile {
    pub(crate) fn append(
        &mut self,
        binding: &JournalBinding,
        position: u64,
        id: &ChunkId,
    ) -> Result<(), DownloadError> {
        let record = journal::encode_record(binding, &JournalRecord { position, id: *id });
        self.file
            .write_all(&record)
            .map_err(|source| DownloadError::Disk {
                path: self.path.clone(),
                source,
            })
    }

    /// Append the records of `batch` (position, id) with one write.
    pub(crate) fn append_all(
        &mut self,
        binding: &JournalBinding,
        batch: &[(u64, ChunkId)],
    ) -> Result<(), DownloadError> {
        let mut records = Vec::with_capacity(batch.len() * journal::RECORD_LEN);
        for &(position, id) in batch {
            records.extend_from_slice(&journal::encode_record(
                binding,
                &JournalRecord { position, id },
            ));
        }
        self.file
            .write_all(&records)
            .map_err(|source| DownloadError::Disk {
                path: self.path.clone(),
                source,
            })
    }

    pub(crate) fn sync(&mut self) -> Result<(), DownloadError> {
        self.file.sync_data().map_err(|source| DownloadError::Disk {
            path: self.path.clone(),
            source,
        })
    }
}

/// Tasks stopped when the download ends, however it ends.
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use ota_core::chunk::{ChunkingParams, Ingest};
    use ota_core::tuf::testkit::assume_verified;

    use super::*;
    use crate::source::LocalChunks;

    /// Two local copies of the old image, the first with a byte changed in every tenth chunk:
    /// the reader's check refuses the first changed chunk, the copy is banned and named, the
    /// chunks come from the other copy, and the slot ends up holding the signed artifact.
    #[test]
    fn a_changed_local_copy_is_banned_and_the_artifact_written_from_the_other() {
        let mut data = vec![0u8; 2 << 20];
        blake3::Hasher::new()
            .update(b"download test")
            .finalize_xof()
            .fill(&mut data);
        let mut ingest = Ingest::new(ChunkingParams::new(1024, 4096, 16384).unwrap());
        let ok = |_: ota_core::chunk::CutChunk<'_>| Ok::<(), std::convert::Infallible>(());
        ingest.update(&data, ok).unwrap();
        let out = ingest.finish(ok).unwrap();
        let artifact = assume_verified("artifacts/t.img", out.length, out.sha256, out.chunks);
        let verifier = ChunkVerifier::new(&artifact, &out.index).unwrap();
        let entries = verifier.index().entries();

        let dir = tempfile::tempdir().unwrap();
        let mut changed = data.clone();
        for e in entries.iter().step_by(10) {
            changed[e.offset() as usize] ^= 1;
        }
        let mut list = Vec::new();
        for (i, bytes) in [&changed, &data].into_iter().enumerate() {
            let path = dir.path().join(format!("old{i}.img"));
            std::fs::write(&path, bytes).unwrap();
            let mut local = LocalChunks::default();
            local.files.push(File::open(&path).unwrap());
            for e in entries {
                local.chunks.insert(*e.id(), (0, e.offset(), e.len()));
            }
            list.push(Source {
                id: SourceId(i as _),
                kind: SourceKind::LocalSlot,
                name: format!("copy {i}"),
                transport: Transport::Local(Arc::new(local)),
            });
        }
        let mut sources = Sources::new(list, entries.iter().map(|e| *e.id()).collect());
        let job = Job {
            artifact: &artifact,
            verifier: &verifier,
            slot_file: dir.path().join("new.img"),
            journal_file: dir.path().join("new.journal"),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let report = runtime
            .block_on(download(
                &job,
                &mut sources,
                Config::default(),
                &Progress::quiet(),
            ))
            .unwrap();
        assert_eq!(std::fs::read(&job.slot_file).unwrap(), data);
        let banned = sources.uses[0].banned.clone().unwrap_or_default();
        assert!(banned.contains("should hash to"), "{:?}", sources.uses);
        assert_eq!(sources.uses[1].banned, None);
        assert_eq!(
            report.bytes_by_kind.get(&SourceKind::LocalSlot),
            Some(&(data.len() as u64))
        );
    }
}
