//! `ota-device`: the update agent of the Enigm OTA system (see DESIGN.md §1, §7).
//!
//! - [`update`]: one update, check-in to report (DESIGN.md §7); [`download`]: one artifact
//!   into the inactive slot through the fetch scheduler, resumable; [`source`]: the origin,
//!   LAN peers, the HTTP mirror and the active slot as chunk sources.
//! - [`state`]: the state directory; [`boot`]: `boot-check` and `status`; [`progress`]: bars
//!   and JSON lines.
//! - [`conformance`]: the TUF client conformance adapter behind `ota-tuf-client`.
//! - [`http_fetch`]: bounded HTTP GET.
//! - [`attest`]: attestation evidence providers (the Android Keystore plug-in point and the
//!   tests' software provider).
//! - [`verify`]: `ota-device verify`, offline verification of a file for auditors.

pub mod attest;
pub mod boot;
pub mod conformance;
pub mod download;
pub mod http_fetch;
pub mod progress;
pub mod source;
pub mod state;
pub mod update;
pub mod verify;
mod writer;
