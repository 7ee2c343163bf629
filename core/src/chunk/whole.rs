//! Whole-artifact hashes: BLAKE3 and SHA-256 over the same stream of bytes.

use sha2::Digest as _;

use crate::digest::{Blake3Hash, Sha256Hash};

/// BLAKE3, SHA-256 and the length of a stream of bytes.
#[derive(Debug, Clone, Default)]
pub(crate) struct WholeHash {
    pub(crate) blake3: blake3::Hasher,
    pub(crate) sha256: sha2::Sha256,
    pub(crate) len: u64,
}

impl WholeHash {
    /// Hash `data` on this thread.
    pub(crate) fn update(&mut self, data: &[u8]) {
        self.blake3.update(data);
        self.sha256.update(data);
        self.len += data.len() as u64;
    }

    pub(crate) fn finalize(&self) -> (Blake3Hash, Sha256Hash, u64) {
        let blake3 = Blake3Hash(*self.blake3.finalize().as_bytes());
        let sha256 = Sha256Hash(self.sha256.clone().finalize().into());
        (blake3, sha256, self.len)
    }
}
