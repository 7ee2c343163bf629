//! The running origin: what every command and every server task shares.

use std::sync::Arc;

use crate::metrics::Metrics;
use crate::state::{DataDir, Keys, StateError};
use crate::store::{BlobStore, Catalog};

/// An opened origin: data directory, catalog, blob store and online keys.
#[derive(Debug)]
pub struct Origin {
    /// The data directory and its configuration.
    pub dir: DataDir,
    /// The catalog.
    pub catalog: Catalog,
    /// The blob store.
    pub blobs: BlobStore,
    /// The online keys.
    pub keys: Keys,
    /// Counters for `/metrics`.
    pub metrics: Metrics,
    /// The remote attestation policy, when `origin.json` configures one.
    pub attestation: Option<crate::attest::Attestation>,
    /// Private content and the connections granted it.
    pub access: crate::access::PrivateAccess,
    /// Devices and releases kept in memory for check-ins.
    pub cache: crate::cache::CheckInCache,
}

impl Origin {
    /// Open an initialised data directory.
    pub async fn open(path: &std::path::Path) -> Result<Arc<Self>, StateError> {
        let dir = DataDir::open(path)?;
        let catalog = dir.catalog().await?;
        let blobs = dir.blobs()?;
        let keys = dir.keys()?;
        let attestation = crate::attest::Attestation::load(&dir)?;
        Ok(Arc::new(Self {
            dir,
            catalog,
            blobs,
            keys,
            metrics: Metrics::default(),
            attestation,
            access: crate::access::PrivateAccess::default(),
            cache: crate::cache::CheckInCache::default(),
        }))
    }
}
