//! Integration tests of `ota-device` and `ota-tuf-client`, with the real binaries. One
//! integration binary for the crate.

// Helpers are shared between the modules of this one binary.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

mod conformance;
mod redial;
mod verify;
