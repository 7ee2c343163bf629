//! `ota-origin` (see DESIGN.md §1): the repository and director.
//!
//! - [`store`]: the catalog (SQLite or PostgreSQL) and the blob store (local directory or
//!   S3-compatible bucket).
//! - [`repository`]: the image repository the origin publishes.
//! - [`state`]: the data directory (configuration, online keys, catalog, blobs).

pub mod access;
pub mod attest;
pub mod audit;
pub mod cache;
pub mod commands;
pub mod director;
pub mod http;
pub mod keys;
pub mod lifecycle;
pub mod metrics;
pub mod nonce;
pub mod repository;
pub mod serve;
pub mod service;
pub mod state;
pub mod store;
