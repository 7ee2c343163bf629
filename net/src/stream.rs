//! Bounded reads and progress-timed writes on quinn streams, shared by client and server.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quinn::{ReadError, RecvStream, SendStream, WriteError};

use crate::proto::{ErrorCode, MessageKind, WireError, check_frame_len, frame_len};

/// Large bodies are written in pieces of this size, each under the stall timeout, so that a
/// slow but live reader is not mistaken for a stalled one (a 64 MiB index blob is 256 pieces).
pub(crate) const WRITE_PIECE: usize = 256 * 1024;

/// Why a read failed. Whose fault it is depends on which side reads.
#[derive(Debug)]
pub(crate) enum ReadFailure {
    /// The sender broke the framing or a bound.
    Wire(WireError),
    /// The stream ended before the frame or body did: `have` of `need` bytes.
    Truncated { have: usize, need: usize },
    /// Bytes came after the last frame.
    TrailingBytes,
    /// The sender reset the stream.
    Reset(ErrorCode),
    /// The connection is gone.
    Connection(quinn::ConnectionError),
    /// The stream was already closed locally (a local bug, or a 0-RTT rejection).
    Closed,
    /// No progress within the stall timeout.
    Stalled,
}

/// Why a write failed.
#[derive(Debug)]
pub(crate) enum WriteFailure {
    /// The reader asked us to stop (`STOP_SENDING`).
    Stopped(ErrorCode),
    /// The connection is gone.
    Connection(quinn::ConnectionError),
    /// The stream was already closed locally.
    Closed,
    /// The reader made no room within the stall timeout.
    Stalled,
    /// The message would break a bound (a local bug, e.g. a handler's oversized answer).
    Encode(WireError),
}

/// Reads one frame whose length is bounded by `max`; nothing is allocated for a frame over
/// the bound.
pub(crate) async fn read_frame(
    recv: &mut RecvStream,
    what: MessageKind,
    max: u32,
    stall: Duration,
) -> Result<Vec<u8>, ReadFailure> {
    let mut prefix = [0u8; 4];
    read_exact(recv, &mut prefix, stall).await?;
    let len = check_frame_len(what, frame_len(prefix), max).map_err(ReadFailure::Wire)?;
    let mut message = vec![0u8; len];
    read_exact(recv, &mut message, stall).await?;
    Ok(message)
}

/// Reads exactly `len` bytes (already checked against its bound by the caller) into one
/// buffer; a body that arrives in one QUIC chunk is returned without a copy.
pub(crate) async fn read_body(
    recv: &mut RecvStream,
    len: usize,
    stall: Duration,
) -> Result<Bytes, ReadFailure> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    let first = read_chunk(recv, len, 0, len, stall).await?;
    if first.len() == len {
        return Ok(first);
    }
    let mut body = BytesMut::with_capacity(len);
    body.extend_from_slice(&first);
    while body.len() < len {
        let chunk = read_chunk(recv, len - body.len(), body.len(), len, stall).await?;
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Waits for the end of the stream; any byte before it is [`ReadFailure::TrailingBytes`].
pub(crate) async fn read_end(recv: &mut RecvStream, stall: Duration) -> Result<(), ReadFailure> {
    match stalled(stall, recv.read_chunk(1, true)).await? {
        Ok(None) => Ok(()),
        Ok(Some(_)) => Err(ReadFailure::TrailingBytes),
        Err(e) => Err(read_error(e)),
    }
}

/// Writes `chunks` (no copy), failing if the reader makes no room within `stall`.
pub(crate) async fn write_chunks(
    send: &mut SendStream,
    chunks: &mut [Bytes],
    stall: Duration,
) -> Result<(), WriteFailure> {
    match tokio::time::timeout(stall, send.write_all_chunks(chunks)).await {
        Err(_) => Err(WriteFailure::Stalled),
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(write_error(e)),
    }
}

/// Writes a header frame and then `body` in pieces of [`WRITE_PIECE`], each under `stall`.
pub(crate) async fn write_with_body(
    send: &mut SendStream,
    header: Vec<u8>,
    mut body: Bytes,
    stall: Duration,
) -> Result<(), WriteFailure> {
    let first = body.split_to(body.len().min(WRITE_PIECE));
    write_chunks(send, &mut [Bytes::from(header), first], stall).await?;
    while !body.is_empty() {
        let piece = body.split_to(body.len().min(WRITE_PIECE));
        write_chunks(send, &mut [piece], stall).await?;
    }
    Ok(())
}

async fn read_exact(
    recv: &mut RecvStream,
    buf: &mut [u8],
    stall: Duration,
) -> Result<(), ReadFailure> {
    // `read_exact` as one future would time the whole buffer; time each step instead.
    let need = buf.len();
    let mut have = 0;
    while have < need {
        match stalled(stall, recv.read(&mut buf[have..])).await? {
            Ok(Some(n)) => have += n,
            Ok(None) => return Err(ReadFailure::Truncated { have, need }),
            Err(e) => return Err(read_error(e)),
        }
    }
    Ok(())
}

async fn read_chunk(
    recv: &mut RecvStream,
    max: usize,
    have: usize,
    need: usize,
    stall: Duration,
) -> Result<Bytes, ReadFailure> {
    match stalled(stall, recv.read_chunk(max, true)).await? {
        Ok(Some(chunk)) => Ok(chunk.bytes),
        Ok(None) => Err(ReadFailure::Truncated { have, need }),
        Err(e) => Err(read_error(e)),
    }
}

async fn stalled<T>(stall: Duration, fut: impl Future<Output = T>) -> Result<T, ReadFailure> {
    tokio::time::timeout(stall, fut)
        .await
        .map_err(|_| ReadFailure::Stalled)
}

fn read_error(e: ReadError) -> ReadFailure {
    match e {
        ReadError::Reset(code) => ReadFailure::Reset(ErrorCode::from_varint(code)),
        ReadError::ConnectionLost(e) => ReadFailure::Connection(e),
        _ => ReadFailure::Closed,
    }
}

fn write_error(e: WriteError) -> WriteFailure {
    match e {
        WriteError::Stopped(code) => WriteFailure::Stopped(ErrorCode::from_varint(code)),
        WriteError::ConnectionLost(e) => WriteFailure::Connection(e),
        _ => WriteFailure::Closed,
    }
}
