//! Helpers for tests, benchmarks and the simulator.
//!
//! Nothing here is used on a verification path: a device only ever gets a
//! [`VerifiedArtifact`] from the client workflow.

use super::VerifiedArtifact;
use crate::chunk::ArtifactChunks;
use crate::digest::Sha256Hash;

/// Vouch for an artifact target without signatures. For tests, benchmarks and `simnet`,
/// which model verified metadata without signing it.
pub fn assume_verified(
    path: &str,
    length: u64,
    sha256: Sha256Hash,
    chunks: ArtifactChunks,
) -> VerifiedArtifact {
    VerifiedArtifact::from_verified_parts(path.to_owned(), length, sha256, chunks)
}
