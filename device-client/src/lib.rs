//! `ota-device`: the update agent of the Enigm OTA system (see DESIGN.md §1, §7).
//!
//! - [`conformance`]: the TUF client conformance adapter behind `ota-tuf-client`.
//! - [`http_fetch`]: bounded HTTP GET.
//! - [`attest`]: attestation evidence providers (the Android Keystore plug-in point and the
//!   tests' software provider).
//! - [`verify`]: `ota-device verify`, offline verification of a file for auditors.

pub mod attest;
pub mod conformance;
pub mod http_fetch;
pub mod verify;
