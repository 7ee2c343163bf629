//! `ota-core`: the formats, verification rules and sans-IO state machines of the Enigm OTA
//! system.
//!
//! Everything a device trusts is decided here. The crate does no I/O: it never opens a socket
//! or a file, never reads the clock and never sleeps. Drivers (the device client, the peer
//! node, the origin and the simulator) pass bytes and the current time in, and act on what
//! comes out.
//!
//! - [`tuf`]: TUF 1.0 metadata (the four top-level roles and delegations), canonical JSON,
//!   keys and signatures, and the TUF client workflow as a state machine.
//! - [`chunk`]: content-defined chunking, the binary chunk index, the Merkle chunk tree and
//!   the per-chunk verifier.
//! - [`director`]: eligibility, rollout buckets, device handles and signed offers;
//!   [`rollout`]: the release lifecycle and health gating.
//! - [`fetch`]: the fetch scheduler (which chunk from which source); [`cache`]: the site
//!   cache's policy (single flight, eviction, prefetch, upstream budget).
//! - [`journal`] and [`install`]: the device's download journal and A/B slot transitions.
//! - [`attest`]: Android Key Attestation evidence: chain verification, the challenge binding
//!   and the policy's judgement (remote attestation, an eligibility signal).
//! - [`digest`] and [`time`]: the newtypes the others build on.

pub mod attest;
pub mod cache;
pub mod chunk;
pub mod digest;
pub mod director;
pub mod fetch;
pub mod install;
pub mod journal;
pub mod rollout;
pub mod time;
pub mod tuf;
