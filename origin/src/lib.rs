//! `ota-origin` (see DESIGN.md §1): the repository and director.
//!
//! - [`store`]: the catalog (SQLite or PostgreSQL) and the blob store (local directory or
//!   S3-compatible bucket).
//! - [`repository`]: the image repository the origin publishes.

pub mod repository;
pub mod store;
