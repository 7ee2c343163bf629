//! The integration tests of `ota-origin`: one test binary (one link step) for the crate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod attest;
mod checkins;
mod e2e;
mod http;
mod pkcs11;
mod private;
mod relay;
mod serving;
mod store;
