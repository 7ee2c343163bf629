//! The peer's counters: Prometheus text on the metrics port, JSON in `stats.json` and
//! `/stats` (what `ota-peer status` prints).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

macro_rules! counters {
    ($($field:ident, $name:literal, $help:literal;)*) => {
        /// The peer's counters.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $(#[doc = $help] pub $field: AtomicU64,)*
        }

        /// A snapshot of [`Metrics`], as JSON.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
        pub struct Stats {
            $(#[doc = $help] pub $field: u64,)*
        }

        impl Metrics {
            /// The counters now.
            pub fn snapshot(&self) -> Stats {
                Stats { $($field: self.$field.load(Ordering::Relaxed),)* }
            }

            /// The Prometheus text exposition format.
            pub fn render(&self) -> String {
                let mut out = String::new();
                $(
                    let _ = writeln!(out, "# HELP {} {}", $name, $help);
                    let _ = writeln!(out, "# TYPE {} counter", $name);
                    let _ = writeln!(out, "{} {}", $name, self.$field.load(Ordering::Relaxed));
                )*
                out
            }
        }
    };
}

counters! {
    hits, "ota_peer_hits_total", "Chunk requests answered from the store.";
    misses, "ota_peer_misses_total", "Chunk requests that needed upstream.";
    blobs_served, "ota_peer_blobs_served_total", "Blobs sent to clients.";
    bytes_served, "ota_peer_bytes_served_total", "Blob bytes sent to clients (down the LAN).";
    blobs_missing, "ota_peer_blobs_missing_total", "Blob requests answered Missing.";
    bytes_up, "ota_peer_bytes_up_total", "Verified chunk bytes pulled from upstream.";
    chunks_up, "ota_peer_chunks_up_total", "Verified chunks pulled from upstream.";
    prefetched, "ota_peer_prefetched_total", "Chunks pulled by prefetch before any client asked.";
    index_bytes_up, "ota_peer_index_bytes_up_total", "Chunk index bytes pulled from upstream by prefetch.";
    verification_failures, "ota_peer_verification_failures_total", "Chunks from upstream whose bytes did not match their id (never stored).";
    store_damaged, "ota_peer_store_damaged_total", "Stored chunks found damaged on disk (never served; dropped).";
    store_errors, "ota_peer_store_errors_total", "Chunks that could not be written (e.g. disk full).";
    upstream_failures, "ota_peer_upstream_failures_total", "Upstream fetches that failed (connection, timeout, protocol).";
    evictions, "ota_peer_evictions_total", "Chunks evicted to stay under the size cap.";
    metadata_served, "ota_peer_metadata_served_total", "Metadata files sent to clients.";
    metadata_up, "ota_peer_metadata_up_total", "Metadata files fetched from upstream.";
    relayed, "ota_peer_relayed_total", "Signed requests and challenges relayed to the origin.";
    relay_failures, "ota_peer_relay_failures_total", "Relays that failed to reach the origin.";
    relay_refused, "ota_peer_relay_refused_total", "Requests relayed by a peer below refused here (bad relay or device signature).";
    private_refused, "ota_peer_private_refused_total", "Private chunks refused to a connection without a grant.";
    offer_walks, "ota_peer_offer_walks_total", "Releases walked because an offer named one the peer had not walked.";
    unsettled_refused, "ota_peer_unsettled_refused_total", "Chunks fetched while an offered release was not yet walked, refused after waiting for the walk.";
    access_granted, "ota_peer_access_granted_total", "Private-content grants given to connections.";
    releases_pinned, "ota_peer_releases_pinned_total", "Releases pinned for prefetch.";
}

impl Metrics {
    /// Add `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Add one to a counter.
    pub fn inc(counter: &AtomicU64) {
        Self::add(counter, 1);
    }
}
