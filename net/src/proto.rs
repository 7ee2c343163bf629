//! The messages of `enigm-ota/1` and their framing.
//!
//! # Participants
//!
//! A *server* (the origin, or a site peer) answers requests; a *client* (a device, or a peer
//! fetching from its parent) asks. Both speak QUIC with TLS 1.3 and ALPN [`ALPN`]; the client
//! pins the server's certificate (see [`crate::quic`]).
//!
//! # Goals
//!
//! One request per bidirectional stream, so requests never block each other and a lost packet
//! delays one request only. Every length on the wire is bounded before anything is allocated
//! for it, so a hostile peer cannot make the other side allocate more than the bounds below,
//! whatever it sends. Blobs flow as raw bytes after a small header, so serving a chunk copies
//! nothing beyond what QUIC itself does. Signed requests are bound to the connection they
//! travel on ([`signing_bytes`]).
//!
//! # Non-goals
//!
//! This layer does not decide whether bytes are *good*: it never hashes a blob (callers check
//! each chunk with `ota_core::chunk::ChunkVerifier`), never verifies a request signature (the
//! origin does), and never interprets a signed body. It does not resume a partial blob: a blob
//! is the unit of retry, and blobs are small. It has no notion of authorisation beyond what a
//! handler decides.
//!
//! # Framing
//!
//! A request is one bidirectional stream. The client writes a frame (`u32` little-endian
//! length, then that many bytes of a postcard-encoded [`Request`]) and finishes its send side.
//! The server answers with a frame holding a [`Response`] header; `Metadata { len }` is followed
//! by `len` raw bytes, and a `GetBlobs` answer is a sequence of frames, one per requested id in
//! order (`Blob { id, len }` followed by `len` raw bytes, or `Missing { id }`), closed by `End`.
//! Bounds: [`MAX_REQUEST_LEN`], [`MAX_RESPONSE_HEADER_LEN`], [`MAX_IDS_PER_REQUEST`],
//! [`MAX_CHUNK_BLOB_LEN`], [`MAX_BLOB_LEN`], [`MAX_METADATA_LEN`]. Protocol errors close a
//! stream with an [`ErrorCode`]. The long form is `docs/PROTOCOL.md`.

use std::fmt;

use ota_core::digest::ChunkId;
use ota_core::time::UnixTime;
use serde::{Deserialize, Serialize};

/// The ALPN protocol id of this protocol.
pub const ALPN: &[u8] = b"enigm-ota/1";

/// The largest encoded [`Request`], without its 4-byte length prefix.
pub const MAX_REQUEST_LEN: u32 = 64 * 1024;

/// The largest encoded [`Response`] header, without its 4-byte length prefix.
pub const MAX_RESPONSE_HEADER_LEN: u32 = 64 * 1024;

/// The most ids one `GetBlobs` may ask for.
///
/// 1024 ids take 32 KiB, so the largest `GetBlobs` fits [`MAX_REQUEST_LEN`] with room to
/// spare (4096 would not: 128 KiB of ids).
pub const MAX_IDS_PER_REQUEST: usize = 1024;

/// The largest `max_len` of a `GetBlobs` that asks for several ids: the largest chunk.
pub const MAX_CHUNK_BLOB_LEN: u32 = ota_core::chunk::MAX_CHUNK_LEN;

/// The largest `max_len` of any `GetBlobs`, allowed only for a single id: a chunk index blob.
pub const MAX_BLOB_LEN: u32 = 64 * 1024 * 1024;

/// The largest `max_len` of a `GetMetadata`, and so the largest metadata file served.
pub const MAX_METADATA_LEN: u32 = 16 * 1024 * 1024;

/// The longest metadata name, in bytes.
pub const MAX_NAME_LEN: usize = 1024;

/// The longest refusal reason, in bytes.
pub const MAX_REASON_LEN: usize = 1024;

/// The domain-separation prefix of [`signing_bytes`].
pub const SIGNING_DOMAIN: &[u8] = b"enigm-ota/1 signed request\0";

/// The domain-separation prefix of [`relay_signing_bytes`].
pub const RELAY_SIGNING_DOMAIN: &[u8] = b"enigm-ota/1 relayed request\0";

/// The domain-separation prefix of [`relay_via_signing_bytes`].
pub const RELAY_VIA_SIGNING_DOMAIN: &[u8] = b"enigm-ota/1 relayed via\0";

/// Most relays a [`RelayedVia`] names besides the one sending it (a site peer under a regional
/// peer under … the origin: a chain of at most this many plus one relays).
pub const MAX_RELAY_HOPS: usize = 4;

/// A request: the first and only frame a client writes on a stream.
///
/// The postcard variant index is the wire tag: the order of the variants is part of the
/// protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Ask for a fresh nonce for a signed request. Answer: `Nonce` or `Refused`.
    Challenge,
    /// A device checks in. Answer: `Signed` (an offer, or "nothing for you") or `Refused`.
    CheckIn(SignedRequest),
    /// A device reports an outcome. Answer: `Signed` or `Refused`.
    Report(SignedRequest),
    /// A device enrolls. Answer: `Signed` or `Refused`.
    Enroll(SignedRequest),
    /// Ask for a metadata file of at most `max_len` bytes (at most [`MAX_METADATA_LEN`]).
    /// Answer: `Metadata { len }` and `len` bytes, `NotFound`, or `Refused`.
    GetMetadata {
        /// The file's name, as the repository names it (e.g. `timestamp.json`).
        name: String,
        /// The most bytes the client accepts.
        max_len: u32,
    },
    /// Ask for blobs of at most `max_len` bytes each. `max_len` is at most
    /// [`MAX_CHUNK_BLOB_LEN`], or up to [`MAX_BLOB_LEN`] when exactly one id is asked for.
    /// Answer: per id, in order, `Blob` + bytes or `Missing`; then `End`. Or `Refused` first.
    GetBlobs {
        /// The most bytes the client accepts for any one blob.
        max_len: u32,
        /// The ids, 1 to [`MAX_IDS_PER_REQUEST`] of them.
        #[serde(with = "wire_ids")]
        ids: Vec<ChunkId>,
    },
    /// A site peer forwards a device's `CheckIn` or `Report` that arrived on the device's
    /// connection to the peer. Answer: as for the request relayed (`Signed` or `Refused`);
    /// servers that take no relayed requests answer `Refused` (501).
    Relayed(Relayed),
    /// A peer forwards a relayed request that reached it from a peer further from the origin
    /// (a regional peer re-relaying a site peer's `Relayed`). Answer: as for `Relayed`.
    RelayedVia(RelayedVia),
}

/// A response header: one frame, possibly followed by raw bytes.
///
/// The postcard variant index is the wire tag: the order of the variants is part of the
/// protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The answer to `Challenge`.
    Nonce(Nonce),
    /// The answer to a signed request: an opaque body (e.g. a director-signed offer).
    Signed(#[serde(with = "byte_vec")] Vec<u8>),
    /// The server will not answer this request.
    Refused(Refusal),
    /// A metadata file of `len` bytes follows.
    Metadata {
        /// Exactly this many raw bytes follow the header.
        len: u32,
    },
    /// The server has no metadata file of that name.
    NotFound,
    /// A blob of `len` bytes follows.
    Blob {
        /// The blob's id: the one the client asked for at this position.
        #[serde(with = "wire_id")]
        id: ChunkId,
        /// Exactly this many raw bytes follow the header.
        len: u32,
    },
    /// The server does not hold this blob (or not within the client's `max_len`).
    Missing {
        /// The blob's id: the one the client asked for at this position.
        #[serde(with = "wire_id")]
        id: ChunkId,
    },
    /// The last frame of a `GetBlobs` answer.
    End,
}

/// The signed requests, as named in [`signing_bytes`]. On the wire (in [`Relayed`]) a kind is
/// its postcard variant index: 0 `CheckIn`, 1 `Report`, 2 `Enroll`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SignedKind {
    /// [`Request::CheckIn`].
    CheckIn,
    /// [`Request::Report`].
    Report,
    /// [`Request::Enroll`].
    Enroll,
}

/// A request signed by a device key. The net layer carries it and computes what is signed
/// ([`SignedRequest::signing_bytes`]); the origin verifies it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRequest {
    /// The device's Ed25519 public key.
    pub device_key: DeviceKey,
    /// The nonce the server issued in answer to `Challenge`.
    pub nonce: Nonce,
    /// When the device signed, in Unix seconds.
    #[serde(with = "unix_time")]
    pub timestamp: UnixTime,
    /// The request body, opaque to this layer.
    #[serde(with = "byte_vec")]
    pub body: Vec<u8>,
    /// Ed25519 signature over [`SignedRequest::signing_bytes`].
    pub signature: Signature,
}

/// A device's signed request, forwarded by a site peer (a *relay*) over the peer's own
/// connection to the origin.
///
/// The device signed `request` over the channel binding of **its** connection to the peer
/// (`device_binding`), with a nonce the peer obtained from the origin by a `Challenge` on the
/// peer's connection to the origin (the peer relays challenges too). The origin cannot see the
/// device↔peer connection, so it trusts the enrolled relay for one thing only: that
/// `device_binding` is the binding of the connection the request arrived on. The relay proves
/// who it is, and that it speaks on this very connection, by `relay_signature`: its node key
/// signs [`relay_signing_bytes`], which cover the binding of the relay↔origin connection.
/// Everything else is checked as for a direct request: the device's signature (over
/// `device_binding`), the timestamp window, the device's enrollment, and the nonce (issued on
/// the relay↔origin connection, unexpired, single use).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relayed {
    /// `CheckIn` or `Report`.
    pub kind: SignedKind,
    /// The channel binding of the device↔peer connection the request arrived on.
    #[serde(with = "binding")]
    pub device_binding: ChannelBinding,
    /// The device's request, unchanged.
    pub request: SignedRequest,
    /// The relay's node key (Ed25519 public key; `Identity::public_key` in [`crate::quic`]).
    pub relay_key: RelayKey,
    /// The relay's Ed25519 signature over [`relay_signing_bytes`] for the relay↔origin
    /// connection this message travels on.
    pub relay_signature: Signature,
}

/// A relay further from the origin than the one sending a [`RelayedVia`]: its key, the channel
/// binding of the connection on which it sent the request on (as the next relay measured it),
/// and its relay signature made for that connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayHop {
    /// The relay's node key.
    pub relay_key: RelayKey,
    /// The channel binding of the connection this relay sent the request on.
    #[serde(with = "binding")]
    pub binding: ChannelBinding,
    /// Its signature: over [`relay_signing_bytes`] for the first hop (the relay the device
    /// spoke to), over [`relay_via_signing_bytes`] with the hops before it for the others.
    pub relay_signature: Signature,
}

/// A device's signed request that went through several relays (site peer → regional peer →
/// … → the origin).
///
/// `via` names the relays before the sender, the one the device spoke to first, each with the
/// binding of the connection it sent on and its signature for that connection. The sender
/// (`relayed.relay_key`) signs [`RelayedVia::signing_bytes`] over the connection this message
/// travels on. Each relay vouches for one thing: the binding of the connection it received
/// the request on (the device's for the first hop, the previous relay's for the others); the
/// origin requires every relay named to be enrolled and every signature to verify, the
/// device's signature over `relayed.device_binding` and the nonce issued on **its own**
/// connection with the sender (every relay relays challenges upstream on the connection it
/// relays requests on, so the nonce the device signed was issued there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayedVia {
    /// The request, the device's binding, and the sender's key and signature (over
    /// [`RelayedVia::signing_bytes`], not [`Relayed::signing_bytes`]).
    pub relayed: Relayed,
    /// The relays before the sender, nearest the device first: 1 to [`MAX_RELAY_HOPS`].
    pub via: Vec<RelayHop>,
}

/// A relay's (site peer's) Ed25519 node public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RelayKey(#[serde(with = "fixed")] pub [u8; 32]);

/// A refusal: the server understood the request and will not serve it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// A machine-readable code; HTTP-like values by convention (see the constants).
    pub code: u16,
    /// A short human-readable reason, at most [`MAX_REASON_LEN`] bytes.
    pub reason: String,
}

/// A server-issued nonce.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Nonce(#[serde(with = "fixed")] pub [u8; 32]);

/// A device's Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeviceKey(#[serde(with = "fixed")] pub [u8; 32]);

/// An Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Signature(#[serde(with = "fixed")] pub [u8; 64]);

/// The TLS exporter value of one connection (RFC 5705 / RFC 9266 "tls-exporter"), equal on
/// both ends of that connection and unpredictable for any other. See
/// [`crate::quic::channel_binding`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelBinding(pub [u8; 32]);

/// A QUIC application error code of this protocol, sent in `RESET_STREAM`, `STOP_SENDING`
/// and `CONNECTION_CLOSE`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub u32);

/// A message broke the framing or a bound. Who is at fault depends on who sent it: the
/// client and server wrap this in errors that say so.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A frame's length prefix is over the bound for its kind.
    #[error("{what} of {len} bytes is over the bound of {max} bytes")]
    FrameTooLong {
        /// Which message.
        what: MessageKind,
        /// The announced length.
        len: u32,
        /// The bound.
        max: u32,
    },
    /// The input ended inside a frame.
    #[error("{what} frame truncated: {have} of {need} bytes")]
    Truncated {
        /// Which message.
        what: MessageKind,
        /// Bytes present.
        have: usize,
        /// Bytes needed.
        need: usize,
    },
    /// The frame's bytes are not a postcard encoding of the message.
    #[error("malformed {what}: {source}")]
    Malformed {
        /// Which message.
        what: MessageKind,
        /// Postcard's complaint.
        source: postcard::Error,
    },
    /// The message ended before its frame did.
    #[error("{what} has {extra} bytes after the message")]
    TrailingBytes {
        /// Which message.
        what: MessageKind,
        /// How many bytes were left.
        extra: usize,
    },
    /// A field is outside its bound.
    #[error("{what} field {field} is {value}, outside {min}..={max}")]
    OutOfBounds {
        /// Which message.
        what: MessageKind,
        /// Which field.
        field: &'static str,
        /// Its value (a length or count).
        value: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
}

/// Which kind of message a [`WireError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// A [`Request`].
    Request,
    /// A [`Response`] header.
    ResponseHeader,
}

impl Request {
    /// The request's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Challenge => "Challenge",
            Self::CheckIn(_) => "CheckIn",
            Self::Report(_) => "Report",
            Self::Enroll(_) => "Enroll",
            Self::GetMetadata { .. } => "GetMetadata",
            Self::GetBlobs { .. } => "GetBlobs",
            Self::Relayed(_) => "Relayed",
            Self::RelayedVia(_) => "RelayedVia",
        }
    }

    /// The signed request of a signed kind, wrapped in its variant.
    pub fn signed(kind: SignedKind, request: SignedRequest) -> Self {
        match kind {
            SignedKind::CheckIn => Self::CheckIn(request),
            SignedKind::Report => Self::Report(request),
            SignedKind::Enroll => Self::Enroll(request),
        }
    }

    /// Encodes the whole frame (length prefix and message), refusing a request that breaks a
    /// bound: what this crate will not decode, it does not send.
    pub fn encode_frame(&self) -> Result<Vec<u8>, WireError> {
        self.check_bounds()?;
        encode_frame(self, MessageKind::Request, MAX_REQUEST_LEN)
    }

    /// Decodes a message (the bytes after the length prefix, whose length the caller has
    /// already checked against [`MAX_REQUEST_LEN`]) and checks every field bound.
    pub fn decode(message: &[u8]) -> Result<Self, WireError> {
        let request: Self = decode_message(message, MessageKind::Request, MAX_REQUEST_LEN)?;
        request.check_bounds()?;
        Ok(request)
    }

    /// Decodes one whole frame from the start of `input`; returns the request and how many
    /// bytes it took.
    pub fn decode_frame(input: &[u8]) -> Result<(Self, usize), WireError> {
        let (message, used) = split_frame(input, MessageKind::Request, MAX_REQUEST_LEN)?;
        Ok((Self::decode(message)?, used))
    }

    fn check_bounds(&self) -> Result<(), WireError> {
        let what = MessageKind::Request;
        match self {
            Self::Challenge
            | Self::CheckIn(_)
            | Self::Report(_)
            | Self::Enroll(_)
            | Self::Relayed(_) => Ok(()),
            Self::RelayedVia(relayed) => bound(
                what,
                "relay hops",
                relayed.via.len() as u64,
                1,
                MAX_RELAY_HOPS as u64,
            ),
            Self::GetMetadata { name, max_len } => {
                bound(
                    what,
                    "name length",
                    name.len() as u64,
                    1,
                    MAX_NAME_LEN as u64,
                )?;
                bound(
                    what,
                    "max_len",
                    (*max_len).into(),
                    1,
                    MAX_METADATA_LEN.into(),
                )
            }
            Self::GetBlobs { max_len, ids } => {
                bound(what, "max_len", (*max_len).into(), 1, MAX_BLOB_LEN.into())?;
                let most_ids = if *max_len > MAX_CHUNK_BLOB_LEN {
                    1
                } else {
                    MAX_IDS_PER_REQUEST
                };
                bound(what, "ids", ids.len() as u64, 1, most_ids as u64)
            }
        }
    }
}

impl Response {
    /// The response's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Nonce(_) => "Nonce",
            Self::Signed(_) => "Signed",
            Self::Refused(_) => "Refused",
            Self::Metadata { .. } => "Metadata",
            Self::NotFound => "NotFound",
            Self::Blob { .. } => "Blob",
            Self::Missing { .. } => "Missing",
            Self::End => "End",
        }
    }

    /// Encodes the whole frame (length prefix and header), refusing a header that breaks a
    /// bound.
    pub fn encode_frame(&self) -> Result<Vec<u8>, WireError> {
        self.check_bounds()?;
        encode_frame(self, MessageKind::ResponseHeader, MAX_RESPONSE_HEADER_LEN)
    }

    /// Decodes a header (the bytes after the length prefix, whose length the caller has
    /// already checked against [`MAX_RESPONSE_HEADER_LEN`]) and checks every field bound.
    ///
    /// This checks the protocol-wide bounds only; whether `len` fits what the client asked
    /// for is the client's check.
    pub fn decode(message: &[u8]) -> Result<Self, WireError> {
        let response: Self = decode_message(
            message,
            MessageKind::ResponseHeader,
            MAX_RESPONSE_HEADER_LEN,
        )?;
        response.check_bounds()?;
        Ok(response)
    }

    /// Decodes one whole header frame from the start of `input`; returns the header and how
    /// many bytes it took (raw bytes after it are not read).
    pub fn decode_frame(input: &[u8]) -> Result<(Self, usize), WireError> {
        let (message, used) =
            split_frame(input, MessageKind::ResponseHeader, MAX_RESPONSE_HEADER_LEN)?;
        Ok((Self::decode(message)?, used))
    }

    fn check_bounds(&self) -> Result<(), WireError> {
        let what = MessageKind::ResponseHeader;
        match self {
            Self::Refused(refusal) => bound(
                what,
                "reason length",
                refusal.reason.len() as u64,
                0,
                MAX_REASON_LEN as u64,
            ),
            Self::Metadata { len } => bound(what, "len", (*len).into(), 0, MAX_METADATA_LEN.into()),
            Self::Blob { len, .. } => bound(what, "len", (*len).into(), 0, MAX_BLOB_LEN.into()),
            Self::Nonce(_)
            | Self::Signed(_)
            | Self::NotFound
            | Self::Missing { .. }
            | Self::End => Ok(()),
        }
    }
}

impl SignedKind {
    /// Every signed kind.
    pub const ALL: [Self; 3] = [Self::CheckIn, Self::Report, Self::Enroll];

    /// The byte that names this kind in [`signing_bytes`].
    pub fn tag(self) -> u8 {
        match self {
            Self::CheckIn => 1,
            Self::Report => 2,
            Self::Enroll => 3,
        }
    }

    /// The kind's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::CheckIn => "CheckIn",
            Self::Report => "Report",
            Self::Enroll => "Enroll",
        }
    }
}

impl SignedRequest {
    /// The exact bytes the device signs and the origin verifies for this request sent as
    /// `kind` on the connection whose channel binding is `binding`. See [`signing_bytes`].
    pub fn signing_bytes(&self, kind: SignedKind, binding: &ChannelBinding) -> Vec<u8> {
        signing_bytes(
            kind,
            &self.device_key,
            &self.nonce,
            self.timestamp,
            binding,
            &self.body,
        )
    }
}

/// The bytes a signed request's signature covers:
///
/// ```text
/// SIGNING_DOMAIN        27 bytes  "enigm-ota/1 signed request" followed by one 0x00 byte
/// kind                   1 byte   SignedKind::tag: 1 CheckIn, 2 Report, 3 Enroll
/// device_key            32 bytes  the signer's Ed25519 public key
/// nonce                 32 bytes  from the server's answer to Challenge
/// timestamp              8 bytes  i64 little-endian, Unix seconds
/// channel binding       32 bytes  TLS exporter of the connection the request travels on
/// body length            4 bytes  u32 little-endian
/// body                  n bytes
/// ```
///
/// Every field but the body has a fixed width and the body is last and length-prefixed, so
/// two different tuples never give the same bytes.
pub fn signing_bytes(
    kind: SignedKind,
    device_key: &DeviceKey,
    nonce: &Nonce,
    timestamp: UnixTime,
    binding: &ChannelBinding,
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(SIGNING_DOMAIN.len() + 1 + 32 * 3 + 8 + 4 + body.len());
    out.extend_from_slice(SIGNING_DOMAIN);
    out.push(kind.tag());
    out.extend_from_slice(&device_key.0);
    out.extend_from_slice(&nonce.0);
    out.extend_from_slice(&timestamp.0.to_le_bytes());
    out.extend_from_slice(&binding.0);
    // Bodies fit in a request frame (64 KiB), so the length fits in a u32; saturate rather
    // than wrap for a caller that signs something it could never send.
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(body);
    out
}

impl Relayed {
    /// The exact bytes the relay signs for this message sent on the relay↔origin connection
    /// whose channel binding is `relay_binding`. See [`relay_signing_bytes`].
    pub fn signing_bytes(&self, relay_binding: &ChannelBinding) -> Vec<u8> {
        relay_signing_bytes(
            self.kind,
            &self.relay_key,
            relay_binding,
            &self.device_binding,
            &self.request,
        )
    }
}

impl RelayedVia {
    /// The exact bytes the sender signs for this message sent on the connection whose channel
    /// binding is `relay_binding`. See [`relay_via_signing_bytes`].
    pub fn signing_bytes(&self, relay_binding: &ChannelBinding) -> Vec<u8> {
        relay_via_signing_bytes(
            self.relayed.kind,
            &self.relayed.relay_key,
            relay_binding,
            &self.relayed.device_binding,
            &self.relayed.request,
            &self.via,
        )
    }

    /// The bytes relay hop `i` of `via` signed: [`relay_signing_bytes`] for the first, or
    /// [`relay_via_signing_bytes`] with the hops before it. `None` past the end.
    pub fn hop_signing_bytes(&self, i: usize) -> Option<Vec<u8>> {
        let hop = self.via.get(i)?;
        let r = &self.relayed;
        Some(if i == 0 {
            relay_signing_bytes(
                r.kind,
                &hop.relay_key,
                &hop.binding,
                &r.device_binding,
                &r.request,
            )
        } else {
            relay_via_signing_bytes(
                r.kind,
                &hop.relay_key,
                &hop.binding,
                &r.device_binding,
                &r.request,
                &self.via[..i],
            )
        })
    }
}

/// The bytes a relay's signature covers in a [`RelayedVia`]:
///
/// ```text
/// RELAY_VIA_SIGNING_DOMAIN  24 bytes  "enigm-ota/1 relayed via" followed by one 0x00 byte
/// relay_signing_bytes      253 bytes  for this relay, the binding it sends on, the request
/// hop count                  1 byte   the number of hops before this relay
/// per hop                  128 bytes  relay_key (32), binding (32), relay_signature (64)
/// ```
///
/// Every field has a fixed width and the hops are counted, so two different chains never give
/// the same bytes, nor the bytes of a single [`Relayed`] (another domain).
pub fn relay_via_signing_bytes(
    kind: SignedKind,
    relay_key: &RelayKey,
    relay_binding: &ChannelBinding,
    device_binding: &ChannelBinding,
    request: &SignedRequest,
    via: &[RelayHop],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(RELAY_VIA_SIGNING_DOMAIN.len() + 256 + 1 + 128 * via.len());
    out.extend_from_slice(RELAY_VIA_SIGNING_DOMAIN);
    out.extend_from_slice(&relay_signing_bytes(
        kind,
        relay_key,
        relay_binding,
        device_binding,
        request,
    ));
    out.push(u8::try_from(via.len()).unwrap_or(u8::MAX));
    for hop in via {
        out.extend_from_slice(&hop.relay_key.0);
        out.extend_from_slice(&hop.binding.0);
        out.extend_from_slice(&hop.relay_signature.0);
    }
    out
}

/// The bytes a relay's signature covers:
///
/// ```text
/// RELAY_SIGNING_DOMAIN  28 bytes  "enigm-ota/1 relayed request" followed by one 0x00 byte
/// kind                   1 byte   SignedKind::tag: 1 CheckIn, 2 Report, 3 Enroll
/// relay_key             32 bytes  the relay's Ed25519 node public key
/// relay binding         32 bytes  TLS exporter of the relay↔origin connection
/// device binding        32 bytes  TLS exporter of the device↔relay connection
/// device_key            32 bytes  the device's Ed25519 public key
/// nonce                 32 bytes  the request's nonce
/// device signature      64 bytes  the request's signature (which covers its body)
/// ```
///
/// All fields have a fixed width. The relay binding ties the message to the connection it
/// travels on, as [`signing_bytes`] does for a direct request.
pub fn relay_signing_bytes(
    kind: SignedKind,
    relay_key: &RelayKey,
    relay_binding: &ChannelBinding,
    device_binding: &ChannelBinding,
    request: &SignedRequest,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(RELAY_SIGNING_DOMAIN.len() + 1 + 32 * 5 + 64);
    out.extend_from_slice(RELAY_SIGNING_DOMAIN);
    out.push(kind.tag());
    out.extend_from_slice(&relay_key.0);
    out.extend_from_slice(&relay_binding.0);
    out.extend_from_slice(&device_binding.0);
    out.extend_from_slice(&request.device_key.0);
    out.extend_from_slice(&request.nonce.0);
    out.extend_from_slice(&request.signature.0);
    out
}

impl Refusal {
    /// The request is malformed or not allowed in this context.
    pub const BAD_REQUEST: u16 = 400;
    /// The device is not allowed this (not enrolled, revoked, bad signature).
    pub const FORBIDDEN: u16 = 403;
    /// The answer would be larger than the client's `max_len`.
    pub const TOO_LARGE: u16 = 413;
    /// This server does not serve this kind of request (e.g. a peer asked to enroll).
    pub const NOT_SUPPORTED: u16 = 501;
    /// The server cannot answer now; try later or elsewhere.
    pub const UNAVAILABLE: u16 = 503;

    /// A refusal; the reason is cut to [`MAX_REASON_LEN`] bytes on a character boundary.
    pub fn new(code: u16, reason: impl Into<String>) -> Self {
        let mut reason = reason.into();
        if reason.len() > MAX_REASON_LEN {
            let mut cut = MAX_REASON_LEN;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        Self { code, reason }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "refused ({}): {}", self.code, self.reason)
    }
}

impl ErrorCode {
    /// Normal close.
    pub const NO_ERROR: Self = Self(0);
    /// The request frame was longer than [`MAX_REQUEST_LEN`].
    pub const REQUEST_TOO_LARGE: Self = Self(1);
    /// The request was not a valid frame, message or field (sent by the server), or the
    /// response was not (sent by the client).
    pub const MALFORMED: Self = Self(2);
    /// The peer made no progress within the timeout (request not received, response not read).
    pub const TIMEOUT: Self = Self(3);
    /// The server failed while answering.
    pub const INTERNAL: Self = Self(4);
    /// The server is shutting down.
    pub const SHUTDOWN: Self = Self(5);
    /// The client no longer wants the answer.
    pub const CANCELLED: Self = Self(6);
    /// The server's answer broke the protocol (wrong id, over a bound, bytes after `End`);
    /// sent by the client.
    pub const PROTOCOL_VIOLATION: Self = Self(7);

    /// The code as a QUIC varint.
    pub fn varint(self) -> quinn::VarInt {
        quinn::VarInt::from_u32(self.0)
    }

    /// The code carried by a QUIC varint (codes above `u32::MAX` are not ours).
    pub fn from_varint(code: quinn::VarInt) -> Self {
        Self(u32::try_from(code.into_inner()).unwrap_or(u32::MAX))
    }

    /// The code's name, or `None` for a code this version does not define.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::NO_ERROR => "NO_ERROR",
            Self::REQUEST_TOO_LARGE => "REQUEST_TOO_LARGE",
            Self::MALFORMED => "MALFORMED",
            Self::TIMEOUT => "TIMEOUT",
            Self::INTERNAL => "INTERNAL",
            Self::SHUTDOWN => "SHUTDOWN",
            Self::CANCELLED => "CANCELLED",
            Self::PROTOCOL_VIOLATION => "PROTOCOL_VIOLATION",
            _ => return None,
        })
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({})", self.0),
            None => write!(f, "unknown error code {}", self.0),
        }
    }
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Request => "request",
            Self::ResponseHeader => "response header",
        })
    }
}

macro_rules! hex_debug {
    ($($name:ident),*) => {$(
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), hex::encode(self.0))
            }
        }
    )*};
}
hex_debug!(Nonce, DeviceKey, Signature, ChannelBinding, RelayKey);

/// Reads a frame's length prefix.
pub(crate) fn frame_len(prefix: [u8; 4]) -> u32 {
    u32::from_le_bytes(prefix)
}

/// Checks a frame length against its bound: called before any buffer is made for it.
pub(crate) fn check_frame_len(what: MessageKind, len: u32, max: u32) -> Result<usize, WireError> {
    if len > max {
        return Err(WireError::FrameTooLong { what, len, max });
    }
    // u32 always fits in usize on the platforms quinn supports (32 and 64 bit).
    Ok(len as usize)
}

fn split_frame(input: &[u8], what: MessageKind, max: u32) -> Result<(&[u8], usize), WireError> {
    let Some((prefix, rest)) = input.split_first_chunk::<4>() else {
        return Err(WireError::Truncated {
            what,
            have: input.len(),
            need: 4,
        });
    };
    let len = check_frame_len(what, frame_len(*prefix), max)?;
    match rest.get(..len) {
        Some(message) => Ok((message, 4 + len)),
        None => Err(WireError::Truncated {
            what,
            have: input.len(),
            need: 4 + len,
        }),
    }
}

fn encode_frame<T: Serialize>(
    value: &T,
    what: MessageKind,
    max: u32,
) -> Result<Vec<u8>, WireError> {
    let mut out = postcard::to_extend(value, vec![0u8; 4])
        .map_err(|source| WireError::Malformed { what, source })?;
    let len = u32::try_from(out.len() - 4).unwrap_or(u32::MAX);
    check_frame_len(what, len, max)?;
    out[..4].copy_from_slice(&len.to_le_bytes());
    Ok(out)
}

fn decode_message<'a, T: Deserialize<'a>>(
    message: &'a [u8],
    what: MessageKind,
    max: u32,
) -> Result<T, WireError> {
    check_frame_len(what, u32::try_from(message.len()).unwrap_or(u32::MAX), max)?;
    let (value, rest) = postcard::take_from_bytes::<T>(message)
        .map_err(|source| WireError::Malformed { what, source })?;
    if !rest.is_empty() {
        return Err(WireError::TrailingBytes {
            what,
            extra: rest.len(),
        });
    }
    Ok(value)
}

fn bound(
    what: MessageKind,
    field: &'static str,
    value: u64,
    min: u64,
    max: u64,
) -> Result<(), WireError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(WireError::OutOfBounds {
            what,
            field,
            value,
            min,
            max,
        })
    }
}

/// A [`ChannelBinding`] as 32 raw bytes.
mod binding {
    use serde::{Deserializer, Serializer};

    use super::ChannelBinding;

    pub(super) fn serialize<S: Serializer>(
        binding: &ChannelBinding,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        super::fixed::serialize(&binding.0, serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<ChannelBinding, D::Error> {
        super::fixed::deserialize(deserializer).map(ChannelBinding)
    }
}

/// `[u8; N]` as a postcard tuple: N raw bytes, no length.
mod fixed {
    use std::fmt;

    use serde::de::{self, SeqAccess, Visitor};
    use serde::ser::SerializeTuple;
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer, const N: usize>(
        bytes: &[u8; N],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(N)?;
        for byte in bytes {
            tuple.serialize_element(byte)?;
        }
        tuple.end()
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        deserializer: D,
    ) -> Result<[u8; N], D::Error> {
        struct Fixed<const N: usize>;

        impl<'de, const N: usize> Visitor<'de> for Fixed<N> {
            type Value = [u8; N];

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{N} bytes")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[u8; N], A::Error> {
                let mut out = [0u8; N];
                for (i, byte) in out.iter_mut().enumerate() {
                    *byte = seq
                        .next_element()?
                        .ok_or_else(|| de::Error::invalid_length(i, &self))?;
                }
                Ok(out)
            }
        }

        deserializer.deserialize_tuple(N, Fixed::<N>)
    }
}

/// A `ChunkId` as 32 raw bytes (its `Serialize` is hex, for JSON).
mod wire_id {
    use ota_core::digest::ChunkId;
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(id: &ChunkId, serializer: S) -> Result<S::Ok, S::Error> {
        super::fixed::serialize(&id.0, serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<ChunkId, D::Error> {
        super::fixed::deserialize(deserializer).map(ChunkId)
    }
}

/// A list of `ChunkId`s: a varint count, then 32 raw bytes each. Decoding preallocates at
/// most what a maximal request frame can hold, whatever count the input claims.
mod wire_ids {
    use std::fmt;

    use ota_core::digest::ChunkId;
    use serde::de::{SeqAccess, Visitor};
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Id(#[serde(with = "super::wire_id")] ChunkId);

    pub(super) fn serialize<S: Serializer>(
        ids: &[ChunkId],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(ids.len()))?;
        for id in ids {
            seq.serialize_element(&Id(*id))?;
        }
        seq.end()
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<ChunkId>, D::Error> {
        struct Ids;

        impl<'de> Visitor<'de> for Ids {
            type Value = Vec<ChunkId>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of 32-byte ids")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<ChunkId>, A::Error> {
                let most = super::MAX_REQUEST_LEN as usize / 32;
                let mut ids = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(most));
                while let Some(Id(id)) = seq.next_element()? {
                    ids.push(id);
                }
                Ok(ids)
            }
        }

        deserializer.deserialize_seq(Ids)
    }
}

/// `Vec<u8>` as postcard bytes (varint length, raw bytes) rather than a sequence of u8.
mod byte_vec {
    use std::fmt;

    use serde::de::Visitor;
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        struct ByteVec;

        impl Visitor<'_> for ByteVec {
            type Value = Vec<u8>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes")
            }

            fn visit_bytes<E>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
                Ok(bytes.to_vec())
            }

            fn visit_byte_buf<E>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(bytes)
            }
        }

        deserializer.deserialize_byte_buf(ByteVec)
    }
}

/// `UnixTime` as an i64 (postcard: zigzag varint) rather than its TUF date string.
mod unix_time {
    use ota_core::time::UnixTime;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(
        time: &UnixTime,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        time.0.serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<UnixTime, D::Error> {
        i64::deserialize(deserializer).map(UnixTime)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn id(n: u8) -> ChunkId {
        ChunkId([n; 32])
    }

    fn signed_request() -> SignedRequest {
        SignedRequest {
            device_key: DeviceKey([1; 32]),
            nonce: Nonce([2; 32]),
            timestamp: UnixTime(1_790_000_000),
            body: b"body".to_vec(),
            signature: Signature([3; 64]),
        }
    }

    #[test]
    fn relay_signature_covers_both_bindings_and_the_device_signature() {
        let relayed = Relayed {
            kind: SignedKind::Report,
            device_binding: ChannelBinding([4; 32]),
            request: signed_request(),
            relay_key: RelayKey([5; 32]),
            relay_signature: Signature([6; 64]),
        };
        let bytes = relayed.signing_bytes(&ChannelBinding([7; 32]));
        let mut expected = RELAY_SIGNING_DOMAIN.to_vec();
        expected.push(2);
        for part in [[5u8; 32], [7; 32], [4; 32], [1; 32], [2; 32]] {
            expected.extend_from_slice(&part);
        }
        expected.extend_from_slice(&[3; 64]);
        assert_eq!(bytes, expected);
        // Another connection, another message.
        assert_ne!(relayed.signing_bytes(&ChannelBinding([8; 32])), bytes);
        // The relay tag is the last variant: the order of variants is the wire tag.
        let frame = Request::Relayed(relayed).encode_frame().unwrap();
        assert_eq!(frame[4], 6);
    }

    #[test]
    fn relayed_via_names_one_to_max_hops_and_its_signature_covers_them() {
        let hop = |n: u8| RelayHop {
            relay_key: RelayKey([n; 32]),
            binding: ChannelBinding([n + 1; 32]),
            relay_signature: Signature([n + 2; 64]),
        };
        let mut message = RelayedVia {
            relayed: Relayed {
                kind: SignedKind::CheckIn,
                device_binding: ChannelBinding([4; 32]),
                request: signed_request(),
                relay_key: RelayKey([5; 32]),
                relay_signature: Signature([6; 64]),
            },
            via: vec![hop(10)],
        };
        let frame = Request::RelayedVia(message.clone()).encode_frame().unwrap();
        assert_eq!(frame[4], 7, "the variant after Relayed");
        let (decoded, used) = Request::decode_frame(&frame).unwrap();
        assert_eq!(used, frame.len());
        assert_eq!(decoded, Request::RelayedVia(message.clone()));

        let here = ChannelBinding([7; 32]);
        let bytes = message.signing_bytes(&here);
        let mut expected = RELAY_VIA_SIGNING_DOMAIN.to_vec();
        expected.extend_from_slice(&message.relayed.signing_bytes(&here));
        expected.push(1);
        expected.extend_from_slice(&[10; 32]);
        expected.extend_from_slice(&[11; 32]);
        expected.extend_from_slice(&[12; 64]);
        assert_eq!(bytes, expected);
        assert_ne!(message.signing_bytes(&ChannelBinding([8; 32])), bytes);
        // The first hop signed as a plain relay over its own connection.
        let first = RelayedVia {
            via: vec![],
            ..message.clone()
        };
        assert_eq!(
            message.hop_signing_bytes(0).unwrap(),
            Relayed {
                relay_key: RelayKey([10; 32]),
                ..first.relayed.clone()
            }
            .signing_bytes(&ChannelBinding([11; 32]))
        );
        assert_eq!(message.hop_signing_bytes(1), None);

        for hops in [0, MAX_RELAY_HOPS + 1] {
            message.via = (0..hops as u8).map(hop).collect();
            assert!(
                Request::RelayedVia(message.clone()).encode_frame().is_err(),
                "{hops} hops"
            );
            let mut frame = Request::RelayedVia(RelayedVia {
                via: vec![hop(1)],
                ..message.clone()
            })
            .encode_frame()
            .unwrap();
            // Rewrite the hop count in place (it is the varint right before the hops).
            let count_at = frame.len() - 128 - 1;
            assert_eq!(frame[count_at], 1);
            frame[count_at] = hops as u8;
            let frame = &frame[..frame.len() - 128];
            let mut frame = frame.to_vec();
            for _ in 0..hops {
                frame.extend_from_slice(&[1; 32]);
                frame.extend_from_slice(&[2; 32]);
                frame.extend_from_slice(&[3; 64]);
            }
            let len = (frame.len() - 4) as u32;
            frame[..4].copy_from_slice(&len.to_le_bytes());
            assert!(
                matches!(
                    Request::decode_frame(&frame),
                    Err(WireError::OutOfBounds { .. })
                ),
                "{hops} hops decoded"
            );
        }
    }

    #[test]
    fn frame_is_le_length_then_postcard() {
        let frame = Request::Challenge.encode_frame().unwrap();
        assert_eq!(frame, [1, 0, 0, 0, 0], "length 1, variant 0");
        let frame = Request::GetBlobs {
            max_len: 300,
            ids: vec![id(7)],
        }
        .encode_frame()
        .unwrap();
        // variant 5, max_len varint(300) = ac 02, count 1, 32 raw bytes.
        assert_eq!(&frame[..4], &36u32.to_le_bytes());
        assert_eq!(&frame[4..8], &[5, 0xac, 0x02, 1]);
        assert_eq!(&frame[8..], &[7; 32]);
        let frame = Response::Blob { id: id(9), len: 5 }.encode_frame().unwrap();
        assert_eq!(&frame[4..5], &[5]);
        assert_eq!(&frame[5..37], &[9; 32]);
        assert_eq!(&frame[37..], &[5]);
        assert_eq!(Response::End.encode_frame().unwrap(), [1, 0, 0, 0, 7]);
    }

    #[test]
    fn frame_lengths_are_checked_before_the_body() {
        // A prefix announcing one byte over the bound is refused with no body present.
        let prefix = (MAX_REQUEST_LEN + 1).to_le_bytes();
        assert_eq!(
            Request::decode_frame(&prefix),
            Err(WireError::FrameTooLong {
                what: MessageKind::Request,
                len: MAX_REQUEST_LEN + 1,
                max: MAX_REQUEST_LEN
            })
        );
        let prefix = u32::MAX.to_le_bytes();
        assert!(matches!(
            Response::decode_frame(&prefix),
            Err(WireError::FrameTooLong { .. })
        ));
        assert_eq!(
            Request::decode_frame(&[3, 0]),
            Err(WireError::Truncated {
                what: MessageKind::Request,
                have: 2,
                need: 4
            })
        );
        assert_eq!(
            Request::decode_frame(&[3, 0, 0, 0, 0]),
            Err(WireError::Truncated {
                what: MessageKind::Request,
                have: 5,
                need: 7
            })
        );
    }

    #[test]
    fn trailing_and_malformed_bytes_are_refused() {
        assert_eq!(
            Request::decode(&[0, 0]),
            Err(WireError::TrailingBytes {
                what: MessageKind::Request,
                extra: 1
            })
        );
        assert!(matches!(
            Request::decode(&[6]),
            Err(WireError::Malformed { .. })
        ));
        assert!(matches!(
            Response::decode(&[]),
            Err(WireError::Malformed { .. })
        ));
        // A GetBlobs claiming a billion ids with none present fails without allocating them.
        assert!(matches!(
            Request::decode(&[5, 1, 0x80, 0x94, 0xeb, 0xdc, 0x03]),
            Err(WireError::Malformed { .. })
        ));
    }

    #[test]
    fn field_bounds() {
        let ids = |n: usize| (0..n).map(|i| id(i as u8)).collect::<Vec<_>>();
        let blobs = |max_len, n| Request::GetBlobs {
            max_len,
            ids: ids(n),
        };
        // The boundary table: each row is (request, accepted).
        let table = [
            (blobs(MAX_CHUNK_BLOB_LEN, MAX_IDS_PER_REQUEST), true),
            (blobs(MAX_CHUNK_BLOB_LEN, MAX_IDS_PER_REQUEST + 1), false),
            (blobs(MAX_CHUNK_BLOB_LEN, 0), false),
            (blobs(0, 1), false),
            (blobs(MAX_CHUNK_BLOB_LEN + 1, 1), true),
            (blobs(MAX_CHUNK_BLOB_LEN + 1, 2), false),
            (blobs(MAX_BLOB_LEN, 1), true),
            (blobs(MAX_BLOB_LEN + 1, 1), false),
            (
                Request::GetMetadata {
                    name: "x".repeat(MAX_NAME_LEN),
                    max_len: MAX_METADATA_LEN,
                },
                true,
            ),
            (
                Request::GetMetadata {
                    name: "x".repeat(MAX_NAME_LEN + 1),
                    max_len: 1,
                },
                false,
            ),
            (
                Request::GetMetadata {
                    name: String::new(),
                    max_len: 1,
                },
                false,
            ),
            (
                Request::GetMetadata {
                    name: "timestamp.json".into(),
                    max_len: MAX_METADATA_LEN + 1,
                },
                false,
            ),
        ];
        for (request, accepted) in table {
            let encoded = request.encode_frame();
            assert_eq!(encoded.is_ok(), accepted, "{request:?}");
            // The decoder refuses what the encoder refuses, even from a peer that skips the
            // encoder's check.
            let raw = postcard::to_allocvec(&request).unwrap();
            if raw.len() <= MAX_REQUEST_LEN as usize {
                assert_eq!(Request::decode(&raw).is_ok(), accepted, "{request:?}");
            }
        }
        let over = Response::Blob {
            id: id(1),
            len: MAX_BLOB_LEN + 1,
        };
        assert!(over.encode_frame().is_err());
        assert!(matches!(
            Response::decode(&postcard::to_allocvec(&over).unwrap()),
            Err(WireError::OutOfBounds { field: "len", .. })
        ));
        let over = Response::Metadata {
            len: MAX_METADATA_LEN + 1,
        };
        assert!(Response::decode(&postcard::to_allocvec(&over).unwrap()).is_err());
        let refusal = Refusal::new(Refusal::FORBIDDEN, "é".repeat(MAX_REASON_LEN));
        assert!(refusal.reason.len() <= MAX_REASON_LEN);
        assert!(Response::Refused(refusal).encode_frame().is_ok());
    }

    #[test]
    fn the_largest_getblobs_fits_a_request_frame() {
        let request = Request::GetBlobs {
            max_len: MAX_CHUNK_BLOB_LEN,
            ids: vec![id(0xff); MAX_IDS_PER_REQUEST],
        };
        let frame = request.encode_frame().unwrap();
        assert!(frame.len() - 4 <= MAX_REQUEST_LEN as usize);
    }

    #[test]
    fn signing_bytes_layout_and_vector() {
        let request = signed_request();
        let binding = ChannelBinding([4; 32]);
        let bytes = request.signing_bytes(SignedKind::Report, &binding);
        assert_eq!(SIGNING_DOMAIN.len(), 27);
        let mut expected = b"enigm-ota/1 signed request\0".to_vec();
        expected.push(2);
        expected.extend_from_slice(&[1; 32]);
        expected.extend_from_slice(&[2; 32]);
        expected.extend_from_slice(&1_790_000_000i64.to_le_bytes());
        expected.extend_from_slice(&[4; 32]);
        expected.extend_from_slice(&4u32.to_le_bytes());
        expected.extend_from_slice(b"body");
        assert_eq!(bytes, expected);
        // The vector in docs/PROTOCOL.md: BLAKE3 of these bytes.
        assert_eq!(
            blake3::hash(&bytes).to_hex().as_str(),
            SIGNING_VECTOR_BLAKE3,
            "update docs/PROTOCOL.md if this changes"
        );
        // Every input changes the bytes.
        for kind in SignedKind::ALL {
            let other = request.signing_bytes(kind, &binding);
            assert_eq!(other == bytes, kind == SignedKind::Report);
        }
        assert_ne!(
            request.signing_bytes(SignedKind::Report, &ChannelBinding([5; 32])),
            bytes
        );
        let mut moved = request.clone();
        moved.body = b"bod".to_vec();
        assert_ne!(moved.signing_bytes(SignedKind::Report, &binding), bytes);
        let mut moved = request;
        moved.timestamp = UnixTime(1_790_000_001);
        assert_ne!(moved.signing_bytes(SignedKind::Report, &binding), bytes);
    }

    const SIGNING_VECTOR_BLAKE3: &str =
        "00c947f0f9cfb451d2927edc17ca2b02f0a24d7c0acb4e17b36a7542766c4af4";

    #[test]
    fn error_codes_have_names() {
        assert_eq!(ErrorCode::TIMEOUT.to_string(), "TIMEOUT (3)");
        assert_eq!(ErrorCode(99).to_string(), "unknown error code 99");
        assert_eq!(
            ErrorCode::from_varint(ErrorCode::PROTOCOL_VIOLATION.varint()),
            ErrorCode::PROTOCOL_VIOLATION
        );
    }

    fn chunk_id() -> impl Strategy<Value = ChunkId> {
        any::<[u8; 32]>().prop_map(ChunkId)
    }

    fn signed() -> impl Strategy<Value = SignedRequest> {
        (
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
            any::<i64>(),
            proptest::collection::vec(any::<u8>(), 0..2048),
            proptest::collection::vec(any::<u8>(), 64),
        )
            .prop_map(|(key, nonce, t, body, sig)| SignedRequest {
                device_key: DeviceKey(key),
                nonce: Nonce(nonce),
                timestamp: UnixTime(t),
                body,
                signature: Signature(sig.try_into().unwrap()),
            })
    }

    fn request() -> impl Strategy<Value = Request> {
        prop_oneof![
            Just(Request::Challenge),
            signed().prop_map(Request::CheckIn),
            signed().prop_map(Request::Report),
            signed().prop_map(Request::Enroll),
            ("[a-z0-9./-]{1,64}", 1..=MAX_METADATA_LEN)
                .prop_map(|(name, max_len)| Request::GetMetadata { name, max_len }),
            (
                1..=MAX_CHUNK_BLOB_LEN,
                proptest::collection::vec(chunk_id(), 1..64)
            )
                .prop_map(|(max_len, ids)| Request::GetBlobs { max_len, ids }),
            (MAX_CHUNK_BLOB_LEN + 1..=MAX_BLOB_LEN, chunk_id()).prop_map(|(max_len, id)| {
                Request::GetBlobs {
                    max_len,
                    ids: vec![id],
                }
            }),
            (
                prop_oneof![Just(SignedKind::CheckIn), Just(SignedKind::Report)],
                any::<[u8; 32]>(),
                signed(),
                any::<[u8; 32]>(),
                proptest::collection::vec(any::<u8>(), 64),
            )
                .prop_map(|(kind, binding, request, key, sig)| {
                    Request::Relayed(Relayed {
                        kind,
                        device_binding: ChannelBinding(binding),
                        request,
                        relay_key: RelayKey(key),
                        relay_signature: Signature(sig.try_into().unwrap()),
                    })
                }),
            (
                signed(),
                any::<[u8; 32]>(),
                proptest::collection::vec(
                    (any::<[u8; 32]>(), any::<[u8; 32]>(), any::<u8>()),
                    1..=MAX_RELAY_HOPS
                ),
            )
                .prop_map(|(request, binding, hops)| {
                    Request::RelayedVia(RelayedVia {
                        relayed: Relayed {
                            kind: SignedKind::CheckIn,
                            device_binding: ChannelBinding(binding),
                            request,
                            relay_key: RelayKey(binding),
                            relay_signature: Signature([7; 64]),
                        },
                        via: hops
                            .into_iter()
                            .map(|(key, binding, sig)| RelayHop {
                                relay_key: RelayKey(key),
                                binding: ChannelBinding(binding),
                                relay_signature: Signature([sig; 64]),
                            })
                            .collect(),
                    })
                }),
        ]
    }

    fn response() -> impl Strategy<Value = Response> {
        prop_oneof![
            any::<[u8; 32]>().prop_map(|n| Response::Nonce(Nonce(n))),
            proptest::collection::vec(any::<u8>(), 0..4096).prop_map(Response::Signed),
            (any::<u16>(), ".{0,100}")
                .prop_map(|(code, reason)| Response::Refused(Refusal::new(code, reason))),
            (0..=MAX_METADATA_LEN).prop_map(|len| Response::Metadata { len }),
            Just(Response::NotFound),
            (chunk_id(), 0..=MAX_BLOB_LEN).prop_map(|(id, len)| Response::Blob { id, len }),
            chunk_id().prop_map(|id| Response::Missing { id }),
            Just(Response::End),
        ]
    }

    proptest! {
        #[test]
        fn requests_round_trip(request in request()) {
            let frame = request.encode_frame().unwrap();
            let (decoded, used) = Request::decode_frame(&frame).unwrap();
            prop_assert_eq!(used, frame.len());
            prop_assert_eq!(decoded, request);
        }

        #[test]
        fn responses_round_trip(response in response()) {
            let frame = response.encode_frame().unwrap();
            let (decoded, used) = Response::decode_frame(&frame).unwrap();
            prop_assert_eq!(used, frame.len());
            prop_assert_eq!(decoded, response);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok((request, _)) = Request::decode_frame(&bytes) {
                prop_assert!(request.encode_frame().is_ok());
            }
            if let Ok((response, _)) = Response::decode_frame(&bytes) {
                prop_assert!(response.encode_frame().is_ok());
            }
        }
    }
}
