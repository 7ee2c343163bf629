//! Cross-program tests: real `ota-origin`, `ota-peer` and `ota-device` processes on loopback.
//! Build the programs first (`cargo build --workspace --bins`; `cargo test --workspace` does).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod attacks;
mod attestation;
mod clock_jumps;
mod device;
mod emulated_sites;
mod faults;
mod harness;
mod live;
mod peer;
mod private;
mod silent_link;
