//! `ota-sign`: the signing authorities' tool (DESIGN.md §2, §6, §8).
//!
//! Two authorities sign with this tool, each with keys that never leave their tokens: the
//! manifest signing authority (TUF role `targets`, an offline PIV key) and the release-signing
//! authority (delegated role `release`, an HSM under dual control). Root ceremonies create and
//! rotate the root of trust. Systems outside the signing boundary (build, CI, the origin) only
//! hand in requests and take signed metadata back.
//!
//! - [`keyref`] and [`backend`]: keys by reference (`pkcs11:` URIs, development `file:` keys)
//!   behind one [`backend::SigningKey`] trait.
//! - [`request`]: signing requests (TUF metadata with zero or more signatures), parsed
//!   strictly.
//! - [`policy`], [`station`]: the station's policy, state and trusted roots.
//! - [`review`]: the policy checks and what the operator is shown before signing.
//! - [`approval`]: operator approvals (dual control).
//! - [`audit`]: the hash-chained, signed audit log and its verification.
//! - [`ceremony`]: the operations (sign, approve, root create, rotate, install).
//!
//! The binary (`src/main.rs`) only parses arguments, reads files, asks the operator and writes
//! outputs atomically. `docs/SIGNING.md` is the operators' runbook.

pub mod approval;
pub mod audit;
pub mod backend;
pub mod ceremony;
mod error;
pub mod fsutil;
pub mod keyref;
pub mod policy;
pub mod refusal;
pub mod request;
pub mod review;
pub mod roles;
pub mod station;

pub use error::{EXIT_ENVIRONMENT, EXIT_REFUSAL, Error};
