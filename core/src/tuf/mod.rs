//! TUF 1.0 metadata and the TUF client workflow.
//!
//! - [`metadata`]: the envelope, the four top-level roles and delegations, with their static
//!   rules; [`key`]: public keys and signatures as securesystemslib writes them;
//!   [`canonical`]: the canonical JSON signatures cover.
//! - [`client`]: the TUF client workflow (specification §5) as a sans-IO state machine.
//! - [`enigm`]: our `custom.enigm` fields and the release manifest.

mod artifact;
pub mod canonical;
pub mod client;
pub mod enigm;
mod error;
pub mod key;
pub mod metadata;
pub mod path;
pub mod testkit;

pub use artifact::VerifiedArtifact;
pub use error::Error;
pub use key::{InMemoryKey, Key, KeyError, KeyId};
