//! `ota-sign` end to end: the real binary as processes, keys on SoftHSM2 tokens (a token
//! directory per test) or development files, results checked with `ota-core`'s client
//! workflow.
//!
//! Tests that need SoftHSM2 skip when it is not installed, and fail instead when
//! `OTA_REQUIRE_SOFTHSM` is set (as `scripts/test` does).

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

#[path = "signer/audit.rs"]
mod audit;
#[path = "signer/cli.rs"]
mod cli;
#[path = "signer/harness.rs"]
mod harness;
#[path = "signer/pkcs11.rs"]
mod pkcs11;
#[path = "signer/refusals.rs"]
mod refusals;
#[path = "signer/walkthrough.rs"]
mod walkthrough;
