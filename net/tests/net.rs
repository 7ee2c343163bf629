//! Integration tests of `enigm-ota/1` on loopback with real QUIC: one binary, submodules by
//! theme in `tests/net/`. Every server binds 127.0.0.1 with an OS-picked port.

// Helpers outside `#[test]` functions panic on failure too: this is a test binary.
#![allow(clippy::unwrap_used)]

#[path = "net/discovery.rs"]
mod discovery;
#[path = "net/hostile_clients.rs"]
mod hostile_clients;
#[path = "net/malicious_servers.rs"]
mod malicious_servers;
#[path = "net/round_trips.rs"]
mod round_trips;
#[path = "net/support.rs"]
mod support;
