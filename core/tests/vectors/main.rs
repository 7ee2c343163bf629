//! Test vectors of `ota-core`: TUF scenario folders, Ed25519 edge cases, interop with
//! python-tuf. One integration binary for the crate.

// Helpers are shared between the modules of this one binary.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

mod attest;
mod ed25519;
mod end_to_end;
mod interop;
mod repo;
mod tuf_scenarios;
