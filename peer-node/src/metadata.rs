//! Metadata files, cached from upstream. The peer signs nothing and checks no signature here:
//! devices verify every file against their trusted root, so a file the peer serves is at worst
//! stale or refused, never trusted on the peer's word.
//!
//! Names with a version prefix (`3.snapshot.json`, `2.root.json`) and release manifests
//! (`releases/…`) never change once published: they are kept on disk and served without asking
//! upstream again. Other names (`timestamp.json`) are refreshed from upstream when older than
//! the TTL, one refresh at a time per name; when upstream cannot be reached, the last copy is
//! served (devices judge its freshness by its signed expiry).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ota_net::proto::MAX_METADATA_LEN;
use tracing::{debug, warn};

use crate::metrics::Metrics;
use crate::store::Store;
use crate::upstream::Upstreams;

/// Most names remembered (found or not found); beyond it, unknown names are passed through
/// without being remembered, so a client asking for a billion names cannot grow the map.
const MAX_NAMES: usize = 4096;

#[derive(Debug, Default)]
struct Entry {
    /// The bytes (`None`: upstream said not found) and when they were fetched.
    value: Option<(Option<Bytes>, Instant)>,
}

/// The metadata cache.
#[derive(Debug)]
pub struct MetadataCache {
    entries: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Entry>>>>,
    upstreams: Arc<Upstreams>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    ttl: Duration,
}

/// Whether a metadata name never changes once published.
pub fn immutable(name: &str) -> bool {
    name.starts_with("releases/")
        || name
            .split_once('.')
            .is_some_and(|(v, _)| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
}

impl MetadataCache {
    /// A cache over `store`'s kept files.
    pub fn new(
        upstreams: Arc<Upstreams>,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        ttl: Duration,
    ) -> Self {
        let mut map = HashMap::new();
        match store.all_metadata() {
            Ok(files) => {
                // Mutable files kept on disk count as old: they are refreshed on first use,
                // and served if upstream is away.
                let old = Instant::now()
                    .checked_sub(ttl * 2)
                    .unwrap_or_else(Instant::now);
                for (name, bytes) in files {
                    let fetched = if immutable(&name) {
                        Instant::now()
                    } else {
                        old
                    };
                    map.insert(
                        name,
                        Arc::new(tokio::sync::Mutex::new(Entry {
                            value: Some((Some(Bytes::from(bytes)), fetched)),
                        })),
                    );
                }
            }
            Err(error) => warn!(%error, "reading kept metadata"),
        }
        Self {
            entries: Mutex::new(map),
            upstreams,
            store,
            metrics,
            ttl,
        }
    }

    /// The file `name` (fresh within the TTL, or the last copy if upstream is away).
    pub async fn get(&self, name: &str) -> Option<Bytes> {
        self.get_within(name, self.ttl).await
    }

    /// The file `name` asked of upstream now, whatever the TTL (the last copy if upstream is
    /// away): for a walk that must see a release just offered.
    pub async fn refresh(&self, name: &str) -> Option<Bytes> {
        self.get_within(name, Duration::ZERO).await
    }

    async fn get_within(&self, name: &str, max_age: Duration) -> Option<Bytes> {
        let entry = {
            let mut map = self
                .entries
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match map.get(name) {
                Some(e) => Some(e.clone()),
                None if map.len() < MAX_NAMES => {
                    let e = Arc::new(tokio::sync::Mutex::new(Entry::default()));
                    map.insert(name.to_owned(), e.clone());
                    Some(e)
                }
                None => None,
            }
        };
        let Some(entry) = entry else {
            return self.fetch(name).await.ok().flatten();
        };
        let mut entry = entry.lock().await;
        if let Some((value, at)) = &entry.value {
            let fresh = at.elapsed() < max_age;
            if (value.is_some() && immutable(name)) || fresh {
                return value.clone();
            }
        }
        match self.fetch(name).await {
            Ok(value) => {
                if let Some(bytes) = &value {
                    let store = self.store.clone();
                    let (n, b) = (name.to_owned(), bytes.clone());
                    let _ = tokio::task::spawn_blocking(move || store.put_metadata(&n, &b)).await;
                }
                entry.value = Some((value.clone(), Instant::now()));
                value
            }
            Err(error) => {
                debug!(name, %error, "metadata refresh failed; serving the last copy");
                entry.value.as_ref().and_then(|(v, _)| v.clone())
            }
        }
    }

    async fn fetch(&self, name: &str) -> Result<Option<Bytes>, ota_net::client::ClientError> {
        let result = self.upstreams.metadata(name, MAX_METADATA_LEN).await;
        match &result {
            Ok(Some(_)) => Metrics::inc(&self.metrics.metadata_up),
            Ok(None) => {}
            Err(_) => Metrics::inc(&self.metrics.upstream_failures),
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::immutable;

    #[test]
    fn versioned_names_and_manifests_are_immutable() {
        assert!(immutable("3.snapshot.json"));
        assert!(immutable("12.root.json"));
        assert!(immutable("releases/stable/4.json"));
        assert!(!immutable("timestamp.json"));
        assert!(!immutable("root.json"));
        assert!(!immutable(".json"));
    }
}
