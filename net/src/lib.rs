//! `ota-net`: the transports of the Enigm OTA system.
//!
//! This crate will hold the QUIC protocol `enigm-ota/1` (quinn + rustls), the HTTP mirror
//! client and libp2p discovery (DESIGN.md §4). Nothing is implemented yet: the origin issue
//! builds the QUIC protocol, the device and peer issues the discovery.
