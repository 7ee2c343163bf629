//! An artifact target whose metadata the client workflow has verified.

use crate::chunk::ArtifactChunks;
use crate::digest::Sha256Hash;

/// An artifact target (`artifacts/…` in the `release` role) that the TUF client workflow
/// found and verified: its path, length and hashes come from signed, fresh, consistent
/// metadata. Only the client workflow (and [`super::testkit`]) make one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedArtifact {
    path: String,
    length: u64,
    sha256: Sha256Hash,
    chunks: ArtifactChunks,
}

impl VerifiedArtifact {
    pub(crate) fn from_verified_parts(
        path: String,
        length: u64,
        sha256: Sha256Hash,
        chunks: ArtifactChunks,
    ) -> Self {
        Self {
            path,
            length,
            sha256,
            chunks,
        }
    }

    /// The target path, e.g. `artifacts/system-2026.11.2.img`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The signed length in bytes.
    pub fn length(&self) -> u64 {
        self.length
    }

    /// The signed SHA-256 of the whole artifact.
    pub fn sha256(&self) -> &Sha256Hash {
        &self.sha256
    }

    /// The signed `custom.enigm` fields: BLAKE3, chunking, chunk tree and index.
    pub fn chunks(&self) -> &ArtifactChunks {
        &self.chunks
    }
}
