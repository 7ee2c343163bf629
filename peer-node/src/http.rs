//! Prometheus metrics (`GET /metrics`) and JSON stats (`GET /stats`) on the metrics port, and
//! `DATA/stats.json`, rewritten every second, which `ota-peer status` reads.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use serde::{Deserialize, Serialize};

use crate::cache::Cache;
use crate::metrics::{Metrics, Stats};

/// What `/stats` and `stats.json` hold.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The counters.
    #[serde(flatten)]
    pub counters: Stats,
    /// Bytes stored on disk.
    pub stored_bytes: u64,
    /// When written, Unix seconds.
    pub at: i64,
}

/// The report now (policy counters folded into the metrics first).
pub fn report(metrics: &Metrics, cache: &Cache) -> Report {
    let policy = cache.policy_stats();
    metrics
        .hits
        .store(policy.hits, std::sync::atomic::Ordering::Relaxed);
    metrics
        .misses
        .store(policy.misses, std::sync::atomic::Ordering::Relaxed);
    metrics
        .prefetched
        .store(policy.prefetched, std::sync::atomic::Ordering::Relaxed);
    Report {
        counters: metrics.snapshot(),
        stored_bytes: cache.stored_bytes(),
        at: crate::handler::unix_now().0,
    }
}

/// Serves the metrics port until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>, cache: Arc<Cache>) {
    let m = metrics.clone();
    let c = cache.clone();
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let (m, c) = (m.clone(), c.clone());
                async move {
                    let _ = report(&m, &c);
                    let mut text = m.render();
                    text.push_str(&format!(
                        "# HELP ota_peer_stored_bytes Bytes stored on disk.\n# TYPE ota_peer_stored_bytes gauge\nota_peer_stored_bytes {}\n",
                        c.stored_bytes()
                    ));
                    text
                }
            }),
        )
        .route(
            "/stats",
            get(move || {
                let (m, c) = (metrics.clone(), cache.clone());
                async move { axum::Json(report(&m, &c)) }
            }),
        );
    if let Err(error) = axum::serve(listener, app).await {
        tracing::warn!(%error, "metrics server stopped");
    }
}

/// Rewrites `path` with the report every second.
pub async fn stats_file_task(path: PathBuf, metrics: Arc<Metrics>, cache: Arc<Cache>) {
    loop {
        let json = serde_json::to_vec_pretty(&report(&metrics, &cache)).unwrap_or_default();
        let (p, j) = (path.clone(), json);
        let _ = tokio::task::spawn_blocking(move || crate::write_atomic(&p, &j)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
