//! The crate's error: every layer's error, and the exit code each maps to.

use crate::backend::BackendError;
use crate::keyref::KeyRefError;
use crate::policy::PolicyError;
use crate::refusal::Refusal;
use crate::request::RequestError;
use crate::station::StationError;

/// Exit code of a refusal (policy or verification said no).
pub const EXIT_REFUSAL: u8 = 1;
/// Exit code of a usage or environment error.
pub const EXIT_ENVIRONMENT: u8 = 2;

/// Any failure of an `ota-sign` operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A key reference could not be parsed.
    #[error(transparent)]
    KeyRef(#[from] KeyRefError),
    /// A key could not be opened or used.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A request was refused as malformed or not ours.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The station's policy is unusable.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The station directory is unusable.
    #[error(transparent)]
    Station(#[from] StationError),
    /// Policy refused.
    #[error(transparent)]
    Refusal(#[from] Refusal),
}

impl Error {
    /// The process exit code for this error: 1 for refusals, 2 for usage and environment.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Request(_) | Self::Refusal(_) => EXIT_REFUSAL,
            Self::Backend(e) if e.is_refusal() => EXIT_REFUSAL,
            Self::KeyRef(_) | Self::Backend(_) | Self::Policy(_) | Self::Station(_) => {
                EXIT_ENVIRONMENT
            }
        }
    }
}
