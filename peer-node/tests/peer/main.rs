//! `ota-peer` as a process, in front of an in-process upstream served over real QUIC by
//! `ota_net::server` (so that a test can count what the upstream sends, and make it lie).
//! The cross-program tests with a real origin are in `tests/tests/fleet/peer.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod bad_input;
mod crash;
mod discovery;
mod disk_full;
mod private;
mod restart;
mod upstream;
