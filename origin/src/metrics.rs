//! Prometheus metrics of the origin, as plain atomic counters rendered in the text exposition
//! format (no registry dependency).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// The origin's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Challenges answered.
    pub challenges: AtomicU64,
    /// Check-ins accepted (signature, nonce, device all good).
    pub checkins: AtomicU64,
    /// Offers made.
    pub offers: AtomicU64,
    /// Signed requests refused, any reason.
    pub requests_refused: AtomicU64,
    /// Install reports recorded.
    pub reports: AtomicU64,
    /// Metadata files served (QUIC and HTTP).
    pub metadata_served: AtomicU64,
    /// Blobs served (QUIC and HTTP).
    pub blobs_served: AtomicU64,
    /// Blob bytes served.
    pub blob_bytes_served: AtomicU64,
    /// Releases halted by the health gate.
    pub health_halts: AtomicU64,
    /// Attestation evidence that passed.
    pub attestations_passed: AtomicU64,
    /// Attestation evidence refused (any reason).
    pub attestations_failed: AtomicU64,
    /// Check-ins where a `preferred` policy found no passing attestation (counted, not
    /// enforced).
    pub attestations_preferred_missed: AtomicU64,
    /// Private chunks refused over QUIC (no grant on the connection) or by the HTTP mirror.
    pub private_refused: AtomicU64,
    /// Offers of a release with private content that earned no grant (the channel requires
    /// a passed attestation for private content).
    pub private_grants_refused: AtomicU64,
}

impl Metrics {
    /// Add one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Add `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, counter) in [
            (
                "ota_origin_challenges_total",
                "Challenges answered.",
                &self.challenges,
            ),
            (
                "ota_origin_checkins_total",
                "Check-ins accepted.",
                &self.checkins,
            ),
            ("ota_origin_offers_total", "Offers made.", &self.offers),
            (
                "ota_origin_requests_refused_total",
                "Signed requests refused.",
                &self.requests_refused,
            ),
            (
                "ota_origin_reports_total",
                "Install reports recorded.",
                &self.reports,
            ),
            (
                "ota_origin_metadata_served_total",
                "Metadata files served.",
                &self.metadata_served,
            ),
            (
                "ota_origin_blobs_served_total",
                "Blobs served.",
                &self.blobs_served,
            ),
            (
                "ota_origin_attestations_passed_total",
                "Attestation evidence that passed.",
                &self.attestations_passed,
            ),
            (
                "ota_origin_attestations_failed_total",
                "Attestation evidence refused.",
                &self.attestations_failed,
            ),
            (
                "ota_origin_attestations_preferred_missed_total",
                "Check-ins without a passing attestation where it is preferred.",
                &self.attestations_preferred_missed,
            ),
            (
                "ota_origin_private_refused_total",
                "Private chunks or artifacts refused (no grant on the connection, or the HTTP mirror).",
                &self.private_refused,
            ),
            (
                "ota_origin_private_grants_refused_total",
                "Offers with private content that earned no grant (attestation required).",
                &self.private_grants_refused,
            ),
            (
                "ota_origin_blob_bytes_served_total",
                "Blob bytes served.",
                &self.blob_bytes_served,
            ),
            (
                "ota_origin_health_halts_total",
                "Releases halted by the health gate.",
                &self.health_halts,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", counter.load(Ordering::Relaxed));
        }
        out
    }
}
