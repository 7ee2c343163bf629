//! The origin's storage (DESIGN.md §6 "Storage"): the catalog and the blob store.
//!
//! - [`Catalog`]: releases, their artifacts and blobs, the published TUF files, enrolled
//!   devices, request nonces and install reports. SQLite by default (one file in the data dir,
//!   WAL), PostgreSQL when given a `postgres://` URL so that several origin replicas share one
//!   catalog. Both go through one query layer: sqlx with queries checked at run time, the same
//!   SQL text for both, and one migration set per backend (`origin/migrations/`), applied on
//!   open.
//! - [`BlobStore`]: content-addressed blobs (chunks and chunk indexes) named by their BLAKE3
//!   id. A local directory by default, an S3-compatible bucket for an `s3://bucket/prefix`
//!   URL, both through `object_store`.
//!
//! # Crash safety
//!
//! Whatever a command writes that a device may see is written in one catalog transaction: a
//! release with its artifacts and blob records ([`Catalog::insert_release`]), a set of TUF
//! files together with the stage change that goes with them ([`CatalogTx`]). A command killed
//! before the commit leaves the catalog as it was. Blobs are stored before the catalog
//! transaction that names them, each with an atomic write (temporary file and rename, or one
//! S3 `PUT`), so a killed command leaves at most blobs that nothing names yet, never a
//! half-written blob under its id.
//!
//! # What the store trusts
//!
//! Nothing it reads back. The catalog parses every row into typed values and reports a row
//! that breaks the schema's rules as [`CatalogError::Corrupt`]; the blob store bounds every
//! read and [`BlobStore::get_verified`] checks a blob's bytes against its id, so a damaged disk
//! cannot serve a wrong chunk.

mod blobs;
mod catalog;

pub use blobs::{BlobError, BlobStore, S3Settings, StoredBlob};
pub use catalog::{
    ArtifactRecord, AttestationRecord, BlobRecord, Catalog, CatalogError, CatalogTx, DeviceRecord,
    DeviceState, MetadataEntry, MetadataFile, NewDevice, NewRelease, NonceCheck, NonceUse,
    PrivateContent, PrivateMarks, RelayRecord, ReleaseRecord, Report, ReportCounts, ReportOutcome,
};
