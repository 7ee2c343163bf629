//! The places chunks come from, as the device drives them: the origin and LAN peers over QUIC
//! (`GetBlobs`), a plain HTTP mirror (`GET /chunks/ID`), and the active slot (a local copy).
//!
//! A source only moves bytes; every byte is verified before use: by the download loop, or for
//! the active slot by its [`LocalReader`] on a thread of its own, before the loop sees the
//! chunk. Each network request runs as its own task and reports chunk by chunk over a bounded
//! channel, so at most a few chunks per source wait in memory.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::sync::mpsc as sync_mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use ota_core::chunk::{ChunkError, ChunkVerifier};
use ota_core::digest::ChunkId;
use ota_core::fetch::{SourceId, SourceKind};
use ota_net::client::{Client, ClientError};
use ota_net::quic::CertPin;
use tokio::sync::mpsc;

use crate::writer::LocalWrites;

/// One source of an update.
#[derive(Debug, Clone)]
pub struct Source {
    /// The scheduler's id.
    pub id: SourceId,
    /// Its kind.
    pub kind: SourceKind,
    /// How it is named in reports, e.g. `peer 127.0.0.1:4433`.
    pub name: String,
    /// How to reach it.
    pub transport: Transport,
}

/// How a source is reached.
#[derive(Debug, Clone)]
pub enum Transport {
    /// QUIC `GetBlobs` on a connection to a pinned server (redialled when it is lost).
    Quic(QuicLink),
    /// `GET {base}/chunks/{id}` on an HTTP mirror.
    Http {
        /// The HTTP client.
        client: reqwest::Client,
        /// e.g. `http://127.0.0.1:8080`.
        base: String,
    },
    /// Chunks of the installed image, read from the active slot's files.
    Local(Arc<LocalChunks>),
}

/// A connection to a pinned QUIC server that is replaced by a new one once it is lost.
///
/// A request that fails because the connection closed, timed out or stalled marks the
/// connection lost; the scheduler then backs the source off (`handle_source_lost`), and the
/// next request it makes of the source dials the server again first. Requests already in
/// flight on an older connection do not mark the new one. A server unreachable when the
/// update starts is a link without a connection, dialled at its first request.
#[derive(Debug, Clone)]
pub struct QuicLink {
    addr: SocketAddr,
    pin: CertPin,
    state: Arc<tokio::sync::Mutex<LinkState>>,
}

#[derive(Debug)]
struct LinkState {
    /// `None` until a first connection.
    client: Option<Client>,
    /// Bumped at every redial.
    generation: u64,
    lost: bool,
}

impl QuicLink {
    /// A link over `client`, whose server's certificate is pinned by `pin`.
    pub fn new(client: Client, pin: CertPin) -> Self {
        Self {
            addr: client.peer(),
            pin,
            state: Arc::new(tokio::sync::Mutex::new(LinkState {
                client: Some(client),
                generation: 0,
                lost: false,
            })),
        }
    }

    /// A link to the server at `addr` (pinned by `pin`) that could not be reached yet: its
    /// first request dials it.
    pub fn unconnected(addr: SocketAddr, pin: CertPin) -> Self {
        Self {
            addr,
            pin,
            state: Arc::new(tokio::sync::Mutex::new(LinkState {
                client: None,
                generation: 0,
                lost: true,
            })),
        }
    }

    /// The current connection, dialled (again) first if it was lost or never made; and
    /// whether it was dialled.
    async fn client(&self) -> Result<(Client, u64, bool), ClientError> {
        let mut state = self.state.lock().await;
        match (&state.client, state.lost) {
            (Some(client), false) => Ok((client.clone(), state.generation, false)),
            _ => {
                let client = Client::connect(self.addr, self.pin).await?;
                state.client = Some(client.clone());
                state.generation += 1;
                state.lost = false;
                Ok((client, state.generation, true))
            }
        }
    }

    /// Mark connection `generation` lost (if it is still the current one).
    async fn lost(&self, generation: u64) {
        let mut state = self.state.lock().await;
        if state.generation == generation && !state.lost {
            state.lost = true;
            if let Some(client) = &state.client {
                client.close();
            }
        }
    }
}

/// Whether a request's failure means the connection is gone (closed, timed out, stalled): the
/// server may be back later.
pub fn connection_lost(error: &ClientError) -> bool {
    matches!(
        error,
        ClientError::Connection { .. }
            | ClientError::Timeout { .. }
            | ClientError::StreamClosed { .. }
    )
}

/// Where each chunk of the installed image lies.
#[derive(Debug, Default)]
pub struct LocalChunks {
    /// The slot's files.
    pub files: Vec<File>,
    /// Chunk id → (file, offset, length).
    pub chunks: HashMap<ChunkId, (usize, u64, u32)>,
}

/// What a request task reports.
#[derive(Debug)]
pub enum Event {
    /// Bytes for a chunk (not yet verified).
    Blob {
        /// The source.
        source: SourceId,
        /// The chunk asked for.
        id: ChunkId,
        /// The bytes it sent.
        bytes: Bytes,
    },
    /// Adjacent chunks read from the active slot with one read, each already checked against
    /// its id by the [`LocalReader`] (the download loop writes only those that passed).
    Run {
        /// The source.
        source: SourceId,
        /// The bytes read.
        bytes: Bytes,
        /// The chunks, in order.
        chunks: Vec<RunChunk>,
        /// Whether the reader wrote the chunks that passed into the slot itself (at each of
        /// their positions not written before): the download loop then only takes note.
        written: bool,
    },
    /// The source's lost connection was dialled again.
    Redialled {
        /// The source.
        source: SourceId,
    },
    /// The source does not hold the chunk.
    Missing {
        /// The source.
        source: SourceId,
        /// The chunk.
        id: ChunkId,
    },
    /// The request failed: a source that misbehaved is banned for the update, one that is
    /// unreachable is asked again after a backoff.
    Failed {
        /// The source.
        source: SourceId,
        /// Why.
        reason: String,
        /// Whether the source broke the protocol (sent more than announced, a chunk over the
        /// maximum, another blob than asked for…), as opposed to being unreachable.
        misbehaved: bool,
    },
}

impl Source {
    /// Dial a QUIC source that is not connected (a peer unreachable at the start) in the
    /// background, with the full connect timeout: a peer that comes up meanwhile answers one
    /// of the dial's retransmitted handshake packets, and [`Event::Redialled`] says it is
    /// reachable, so that the scheduler need not wait out its backoff. A dial that fails
    /// leaves the source lost, dialled again by its next request. `None` for a source that is
    /// connected or not reached over QUIC.
    pub fn spawn_dial(&self, events: mpsc::Sender<Event>) -> Option<tokio::task::JoinHandle<()>> {
        let Transport::Quic(link) = &self.transport else {
            return None;
        };
        if self.connected() {
            return None;
        }
        let (link, source) = (link.clone(), self.id);
        Some(tokio::spawn(async move {
            if let Ok((_, _, true)) = link.client().await {
                let _ = events.send(Event::Redialled { source }).await;
            }
        }))
    }

    /// Start fetching `ids` (each at most `max_len` bytes); results go to `events`.
    pub fn spawn_request(&self, ids: Vec<ChunkId>, max_len: u32, events: mpsc::Sender<Event>) {
        let source = self.id;
        match &self.transport {
            Transport::Quic(link) => {
                let link = link.clone();
                tokio::spawn(async move {
                    let result = match link.client().await {
                        Ok((client, generation, redialled)) => {
                            if redialled {
                                let _ = events.send(Event::Redialled { source }).await;
                            }
                            let result = quic_request(&client, source, ids, max_len, &events).await;
                            if let Err(error) = &result
                                && connection_lost(error)
                            {
                                link.lost(generation).await;
                            }
                            result
                        }
                        // Dialling again failed: still lost; the scheduler backs off again.
                        Err(error) => Err(error),
                    };
                    if let Err(error) = result {
                        let HttpError { reason, misbehaved } = quic_error(error);
                        let _ = events
                            .send(Event::Failed {
                                source,
                                reason,
                                misbehaved,
                            })
                            .await;
                    }
                });
            }
            Transport::Http { client, base } => {
                let (client, base) = (client.clone(), base.clone());
                tokio::spawn(async move {
                    for id in ids {
                        let url = format!("{}/chunks/{id}", base.trim_end_matches('/'));
                        let event = match http_get(&client, &url, u64::from(max_len)).await {
                            Ok(Some(bytes)) => Event::Blob {
                                source,
                                id,
                                bytes: Bytes::from(bytes),
                            },
                            Ok(None) => Event::Missing { source, id },
                            Err(HttpError { reason, misbehaved }) => Event::Failed {
                                source,
                                reason,
                                misbehaved,
                            },
                        };
                        let stop = matches!(event, Event::Failed { .. });
                        if events.send(event).await.is_err() || stop {
                            return;
                        }
                    }
                });
            }
            Transport::Local(local) => {
                let local = local.clone();
                tokio::task::spawn_blocking(move || {
                    for id in ids {
                        let event = match local.read(&id) {
                            Some(bytes) => Event::Blob {
                                source,
                                id,
                                bytes: Bytes::from(bytes),
                            },
                            None => Event::Missing { source, id },
                        };
                        if events.blocking_send(event).is_err() {
                            return;
                        }
                    }
                });
            }
        }
    }

    /// Whether the source is reachable as far as is known (a QUIC link lost or never
    /// connected is not).
    pub fn connected(&self) -> bool {
        match &self.transport {
            Transport::Quic(link) => link
                .state
                .try_lock()
                .map_or(true, |state| state.client.is_some() && !state.lost),
            _ => true,
        }
    }

    /// Fetch one whole blob (the chunk index) of at most `max_len` bytes.
    pub async fn fetch_blob(&self, id: ChunkId, max_len: u32) -> Result<Option<Bytes>, HttpError> {
        match &self.transport {
            Transport::Quic(link) => {
                let (client, _, _) = link.client().await.map_err(quic_error)?;
                let mut blobs = client.blobs(vec![id], max_len).await.map_err(quic_error)?;
                let item = blobs.next().await.ok_or_else(|| HttpError {
                    reason: "answer ended early".into(),
                    misbehaved: false,
                })?;
                let (_, bytes) = item.map_err(quic_error)?;
                // Read the end of the answer, so that trailing bytes are noticed.
                if let Some(Err(e)) = blobs.next().await {
                    return Err(quic_error(e));
                }
                Ok(bytes)
            }
            Transport::Http { client, base } => {
                let url = format!("{}/chunks/{id}", base.trim_end_matches('/'));
                http_get(client, &url, u64::from(max_len))
                    .await
                    .map(|b| b.map(Bytes::from))
            }
            Transport::Local(_) => Ok(None),
        }
    }
}

/// One chunk of an [`Event::Run`].
#[derive(Debug)]
pub struct RunChunk {
    /// The chunk asked for.
    pub id: ChunkId,
    /// Where its bytes lie in the run's bytes.
    pub range: Range<usize>,
    /// Every position of the chunk in the artifact (`ChunkVerifier::positions_of`; none if
    /// the artifact has no such chunk).
    pub positions: Vec<u64>,
    /// Its bytes checked against its id at its first position (as the download loop checks
    /// every other source's); meaningless if it has no position.
    pub verdict: Result<(), ChunkError>,
}

/// Local reads are grouped into runs of chunks adjacent in the slot file, read with one call,
/// until a run holds this many bytes (when that many are asked for at once).
pub(crate) const LOCAL_RUN: u64 = 1 << 20;

/// Reads the chunks asked of the local slot on a thread of its own, ahead of the download
/// loop: chunks adjacent in the slot file are read in runs with one call, every chunk is
/// checked against its id there and, given the slot writer's [`LocalWrites`], written into the
/// slot there too. Each run goes to the download loop as one [`Event::Run`] (a chunk that
/// cannot be read as one [`Event::Missing`]). Memory: the chunks asked for (the scheduler
/// bounds them) and the events waiting in the loop's bounded queue (without their bytes once
/// written).
pub(crate) struct LocalReader {
    requests: Option<sync_mpsc::Sender<Vec<ChunkId>>>,
    thread: Option<JoinHandle<()>>,
}

impl LocalReader {
    /// Start the reader of source `source`; its events go to `events`. With `writes`, it
    /// writes the chunks that pass their check into the slot itself (see [`LocalWrites`]).
    /// The thread ends when the reader is dropped or `events` is closed.
    pub(crate) fn start(
        source: SourceId,
        local: Arc<LocalChunks>,
        verifier: Arc<ChunkVerifier>,
        events: mpsc::Sender<Event>,
        writes: Option<LocalWrites>,
    ) -> std::io::Result<Self> {
        let (requests, asked) = sync_mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("ota-local-read".into())
            .spawn(move || {
                read_runs(
                    source,
                    (&local, writes.as_ref()),
                    &verifier,
                    &asked,
                    &events,
                );
            })?;
        Ok(Self {
            requests: Some(requests),
            thread: Some(thread),
        })
    }

    /// Ask for `ids` (after those asked before).
    pub(crate) fn request(&self, ids: Vec<ChunkId>) {
        if let Some(requests) = &self.requests {
            // Gone only if the events channel closed: the download is over.
            let _ = requests.send(ids);
        }
    }
}

impl Drop for LocalReader {
    /// Stops the thread and waits for it (it ends at once unless it is blocked handing an
    /// event to a loop that still receives).
    fn drop(&mut self) {
        drop(self.requests.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The reader thread: the chunks asked for, in the order asked, in runs.
fn read_runs(
    source: SourceId,
    (local, writes): (&LocalChunks, Option<&LocalWrites>),
    verifier: &ChunkVerifier,
    asked: &sync_mpsc::Receiver<Vec<ChunkId>>,
    events: &mpsc::Sender<Event>,
) {
    // Each chunk's first position, and whether it has others (a hash look-up per chunk
    // instead of the verifier's binary search).
    let mut first_positions: HashMap<ChunkId, (u64, bool)> =
        HashMap::with_capacity(verifier.index().entries().len());
    for (p, entry) in verifier.index().entries().iter().enumerate() {
        first_positions
            .entry(*entry.id())
            .and_modify(|(_, several)| *several = true)
            .or_insert((p as u64, false));
    }
    let positions = |id: &ChunkId| match first_positions.get(id) {
        None => Vec::new(),
        Some(&(first, false)) => vec![first],
        Some(&(_, true)) => verifier.positions_of(id).to_vec(),
    };
    let mut queue: VecDeque<ChunkId> = VecDeque::new();
    let mut run: Vec<(ChunkId, u64, u32)> = Vec::new();
    let pool = RunBuffers::default();
    loop {
        if queue.is_empty() {
            match asked.recv() {
                Ok(ids) => queue.extend(ids),
                Err(_) => return,
            }
        }
        while let Ok(ids) = asked.try_recv() {
            queue.extend(ids);
        }
        // The next run: chunks that follow each other in one file.
        run.clear();
        let Some(first) = queue.pop_front() else {
            continue;
        };
        let Some(&(file, offset, len)) = local.chunks.get(&first) else {
            if events
                .blocking_send(Event::Missing { source, id: first })
                .is_err()
            {
                return;
            }
            continue;
        };
        run.push((first, offset, len));
        let mut end = offset + u64::from(len);
        while end - offset < LOCAL_RUN
            && let Some(next) = queue.front()
            && let Some(&(f, o, l)) = local.chunks.get(next)
            && f == file
            && o == end
        {
            run.push((*next, o, l));
            end += u64::from(l);
            queue.pop_front();
        }
        let sent = match local.read_run(file, offset, end, &pool) {
            Some(bytes) => events.blocking_send(write(
                writes,
                checked_run(source, verifier, &positions, bytes, &run),
            )),
            // A run that cannot be read whole: each of its chunks alone.
            None => run.iter().try_for_each(|&(id, _, _)| {
                let event = match local.read(&id) {
                    Some(bytes) => write(
                        writes,
                        checked_run(
                            source,
                            verifier,
                            &positions,
                            Bytes::from(bytes),
                            &[(id, 0, 0)],
                        ),
                    ),
                    None => Event::Missing { source, id },
                };
                events.blocking_send(event)
            }),
        };
        if sent.is_err() {
            return;
        }
    }
}

/// `event` after the reader wrote its verified chunks into the slot, if it has the means.
fn write(writes: Option<&LocalWrites>, mut event: Event) -> Event {
    if let (
        Some(writes),
        Event::Run {
            bytes,
            chunks,
            written,
            ..
        },
    ) = (writes, &mut event)
    {
        *written = writes.write_run(bytes, chunks);
        if *written {
            // The loop only takes note: the buffer goes back to the reader's pool as soon as
            // the writer's hashes are done with it, not when the loop gets to the event.
            *bytes = Bytes::new();
        }
    }
    event
}

/// The event for `bytes` read for the chunks of `run` (a run of one chunk: the whole bytes),
/// each checked against its id.
fn checked_run(
    source: SourceId,
    verifier: &ChunkVerifier,
    positions_of: &dyn Fn(&ChunkId) -> Vec<u64>,
    bytes: Bytes,
    run: &[(ChunkId, u64, u32)],
) -> Event {
    let base = run.first().map_or(0, |&(_, offset, _)| offset);
    let chunks = run
        .iter()
        .map(|&(id, offset, len)| {
            let range = if run.len() == 1 {
                0..bytes.len()
            } else {
                let start = (offset - base) as usize;
                start..start + len as usize
            };
            let positions = positions_of(&id);
            let verdict = match positions.first() {
                Some(&position) => verifier.verify(position, &bytes[range.clone()]).map(|_| ()),
                None => Ok(()),
            };
            RunChunk {
                id,
                range,
                positions,
                verdict,
            }
        })
        .collect();
    Event::Run {
        source,
        bytes,
        chunks,
        written: false,
    }
}

/// Buffers of runs read earlier, handed back once the last holder of their bytes (the slot
/// writer, its SHA-256 thread) drops them: a run is read into memory already mapped, instead
/// of a fresh allocation that the kernel faults in and zeroes page by page, then unmaps at
/// the free.
#[derive(Clone, Default)]
struct RunBuffers(Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

/// Free buffers kept at most (beyond, dropped).
const RUN_BUFFERS: usize = 16;

impl RunBuffers {
    fn take(&self, len: usize) -> Vec<u8> {
        let mut buf = self
            .0
            .lock()
            .ok()
            .and_then(|mut free| free.pop())
            .unwrap_or_default();
        // Zeroes only bytes beyond what the buffer held before (none for runs of equal size);
        // grown to the length asked for, not beyond.
        buf.reserve_exact(len.saturating_sub(buf.len()));
        buf.resize(len, 0);
        buf
    }
}

/// A run's bytes, back to their pool when dropped.
struct PooledRun {
    buf: Vec<u8>,
    pool: RunBuffers,
}

impl AsRef<[u8]> for PooledRun {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for PooledRun {
    fn drop(&mut self) {
        if let Ok(mut free) = self.pool.0.lock()
            && free.len() < RUN_BUFFERS
        {
            free.push(std::mem::take(&mut self.buf));
        }
    }
}

impl LocalChunks {
    /// Read the bytes from `start` to `end` of file `file` (unverified), into a buffer of
    /// `pool`.
    fn read_run(&self, file: usize, start: u64, end: u64, pool: &RunBuffers) -> Option<Bytes> {
        let mut buf = pool.take(usize::try_from(end - start).ok()?);
        read_exact_at(self.files.get(file)?, &mut buf, start).ok()?;
        Some(Bytes::from_owner(PooledRun {
            buf,
            pool: pool.clone(),
        }))
    }

    /// Read chunk `id` from the slot (unverified: the caller checks it like any other).
    pub fn read(&self, id: &ChunkId) -> Option<Vec<u8>> {
        let &(file, offset, len) = self.chunks.get(id)?;
        let mut buf = vec![0u8; len as usize];
        read_exact_at(self.files.get(file)?, &mut buf, offset).ok()?;
        Some(buf)
    }
}

/// Read exactly `buf.len()` bytes at `offset`.
#[cfg(unix)]
pub fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

/// Write all of `buf` at `offset`.
#[cfg(unix)]
pub fn write_all_at(file: &File, buf: &[u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
}

async fn quic_request(
    client: &Client,
    source: SourceId,
    ids: Vec<ChunkId>,
    max_len: u32,
    events: &mpsc::Sender<Event>,
) -> Result<(), ClientError> {
    let mut blobs = client.blobs(ids, max_len).await?;
    while let Some(item) = blobs.next().await {
        let (id, bytes) = item?;
        let event = match bytes {
            Some(bytes) => Event::Blob { source, id, bytes },
            None => Event::Missing { source, id },
        };
        if events.send(event).await.is_err() {
            // The download ended (or was cancelled): dropping the stream stops the rest.
            return Ok(());
        }
    }
    Ok(())
}

/// A request to a source failed (over QUIC or HTTP).
#[derive(Debug)]
pub struct HttpError {
    /// Why.
    pub reason: String,
    /// Whether the source broke the rules (a blob longer than announced or asked for, a body
    /// over the cap…): it is banned for the update.
    pub misbehaved: bool,
}

/// A QUIC request's failure; a breach of the protocol is named alone (the report names the
/// source).
fn quic_error(error: ClientError) -> HttpError {
    match error {
        ClientError::PeerMisbehaved { misbehaviour, .. } => HttpError {
            reason: misbehaviour.to_string(),
            misbehaved: true,
        },
        other => HttpError {
            reason: other.to_string(),
            misbehaved: false,
        },
    }
}

/// Time allowed between two reads of an HTTP body.
const HTTP_STALL: Duration = Duration::from_secs(30);

/// `GET url`, reading at most `max` bytes: `None` for 404/403.
pub async fn http_get(
    client: &reqwest::Client,
    url: &str,
    max: u64,
) -> Result<Option<Vec<u8>>, HttpError> {
    let failed = |reason: String| HttpError {
        reason: format!("{url}: {reason}"),
        misbehaved: false,
    };
    let over = |len: u64| HttpError {
        reason: format!("{url}: body of {len} bytes or more over the {max}-byte cap"),
        misbehaved: true,
    };
    let mut response = tokio::time::timeout(HTTP_STALL, client.get(url).send())
        .await
        .map_err(|_| failed("no answer".into()))?
        .map_err(|e| failed(e.to_string()))?;
    let status = response.status();
    if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::FORBIDDEN {
        return Ok(None);
    }
    if !status.is_success() {
        return Err(failed(format!("HTTP status {status}")));
    }
    if let Some(len) = response.content_length()
        && len > max
    {
        return Err(over(len));
    }
    let reserve = response.content_length().unwrap_or(0).min(max).min(1 << 20);
    let mut body = Vec::with_capacity(reserve as usize);
    loop {
        let chunk = tokio::time::timeout(HTTP_STALL, response.chunk())
            .await
            .map_err(|_| failed("body stalled".into()))?
            .map_err(|e| failed(e.to_string()))?;
        let Some(chunk) = chunk else { break };
        if body.len() as u64 + chunk.len() as u64 > max {
            return Err(over(body.len() as u64 + chunk.len() as u64));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// A source's address as named in reports.
pub fn peer_name(addr: SocketAddr) -> String {
    format!("peer {addr}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::HashMap;

    use ota_core::chunk::{ChunkingParams, Ingest};
    use ota_core::tuf::testkit::assume_verified;

    use super::*;

    #[test]
    fn the_local_reader_reads_runs_and_checks_every_chunk() {
        // 3 MiB in chunks of 4 KiB on average: several runs of about LOCAL_RUN bytes. The
        // second half repeats the first: chunks at two positions.
        let mut data = vec![0u8; 3 << 20];
        blake3::Hasher::new()
            .update(b"local reader test")
            .finalize_xof()
            .fill(&mut data[..3 << 19]);
        data.copy_within(..3 << 19, 3 << 19);
        let params = ChunkingParams::new(1024, 4096, 16384).unwrap();
        let mut ingest = Ingest::new(params);
        let ok = |_: ota_core::chunk::CutChunk<'_>| Ok::<(), std::convert::Infallible>(());
        ingest.update(&data, ok).unwrap();
        let out = ingest.finish(ok).unwrap();
        let target = assume_verified("artifacts/t.img", out.length, out.sha256, out.chunks);
        let verifier = Arc::new(ChunkVerifier::new(&target, &out.index).unwrap());
        let entries = verifier.index().entries().to_vec();

        // The slot file, with one byte of chunk 5 changed (a slot that changed since it was
        // installed, or a bad disk).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("active.img");
        let mut on_disk = data.clone();
        on_disk[entries[5].offset() as usize + 1] ^= 1;
        std::fs::write(&path, &on_disk).unwrap();
        let mut local = LocalChunks::default();
        local.files.push(File::open(&path).unwrap());
        for e in &entries {
            local
                .chunks
                .entry(*e.id())
                .or_insert((0, e.offset(), e.len()));
        }
        // Asked for: every chunk, then one the slot does not hold, in two requests.
        let unheld = ChunkId::of(b"not in the slot");
        let (tx, mut rx) = mpsc::channel(4);
        let reader =
            LocalReader::start(SourceId(7), Arc::new(local), verifier.clone(), tx, None).unwrap();
        let ids: Vec<ChunkId> = entries.iter().map(|e| *e.id()).collect();
        let (first, rest) = ids.split_at(ids.len() / 3);
        reader.request(first.to_vec());
        reader.request(rest.iter().copied().chain([unheld]).collect());

        let mut verdicts: HashMap<ChunkId, bool> = HashMap::new();
        let (mut runs, mut answered, mut several) = (0, 0, 0);
        let mut missing = Vec::new();
        while answered < ids.len() + 1 {
            match rx.blocking_recv().unwrap() {
                Event::Run {
                    source,
                    bytes,
                    chunks,
                    written,
                } => {
                    assert!(!written, "no writer: nothing written");
                    assert_eq!(source, SourceId(7));
                    assert!(bytes.len() as u64 <= LOCAL_RUN + 16384, "{}", bytes.len());
                    runs += 1;
                    for c in chunks {
                        answered += 1;
                        let p = verifier.positions_of(&c.id);
                        assert_eq!(c.positions, p);
                        several += usize::from(p.len() > 1);
                        let e = &entries[p[0] as usize];
                        // The bytes handed over are the slot's at the chunk's place.
                        let at = e.offset() as usize..e.offset() as usize + e.len() as usize;
                        assert_eq!(&bytes[c.range.clone()], &on_disk[at]);
                        verdicts.insert(c.id, c.verdict.is_ok());
                    }
                }
                Event::Missing { id, .. } => {
                    answered += 1;
                    missing.push(id);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(missing, vec![unheld]);
        assert!(runs >= 3 && runs < ids.len() / 10, "{runs} runs");
        assert!(several > 100, "{several} chunks at two positions");
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(verdicts[id], *id != ids[5], "chunk {i}");
        }
        drop(reader);
    }
}
