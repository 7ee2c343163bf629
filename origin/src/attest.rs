//! Remote attestation in the director (DESIGN.md §2 layer 6): the policy's configuration in
//! `origin.json`, the trust anchors and status list it names, and the verdict on one
//! check-in's evidence. The verification itself is `ota_core::attest` (pure); this module
//! loads files and records outcomes.
//!
//! ```json
//! "attestation": {
//!   "roots": "attestation/roots.json",          // PEM or Google's roots.json, data-dir relative
//!   "status_list": "attestation/status.json",   // optional, Android status list format
//!   "enrollment": "off",                         // off | preferred | required
//!   "channels": { "private": { "check_in": "required", "private_content": "required" } },
//!   "requirements": { "hardware": true, "verified_boot": true, "locked": true,
//!                     "min_os_version": 140000, "min_patch_level": 202501,
//!                     "models": ["enigm-one"], "max_age_secs": 600 }
//! }
//! ```
//!
//! Privacy: the origin stores the outcome, the reason names and the time (catalog
//! `devices.attestation*`), never the chain; logs carry the handle and the reason only.

use std::collections::BTreeMap;

use ota_core::attest::{
    Action, AttestError, AttestationChallenge, Attested, Evidence, Requirements, StatusList,
    TrustAnchors, Verifier,
};
use ota_core::director::{AttestationPolicy, DeviceHandle};
use ota_core::time::UnixTime;
use ota_core::tuf::enigm::Channel;
use serde::{Deserialize, Serialize};

use crate::state::{DataDir, StateError};

/// The `attestation` section of `origin.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationConfig {
    /// Trust anchors: a PEM file or a JSON array of PEM strings, relative to the data dir.
    pub roots: String,
    /// The status list (revocations), relative to the data dir, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_list: Option<String>,
    /// Policy for enrollment: with `required`, a device gets no offer on any channel until
    /// a check-in of its carried evidence that passed.
    #[serde(default = "off")]
    pub enrollment: AttestationPolicy,
    /// Policy per channel.
    #[serde(default)]
    pub channels: BTreeMap<String, ChannelAttestation>,
    /// What attested devices must show.
    #[serde(default)]
    pub requirements: Requirements,
}

/// A channel's attestation policy per action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelAttestation {
    /// Check-ins on the channel: with `required`, no offer without evidence in that check-in
    /// that passed.
    #[serde(default = "off")]
    pub check_in: AttestationPolicy,
    /// Access to the channel's private content.
    #[serde(default = "off")]
    pub private_content: AttestationPolicy,
}

fn off() -> AttestationPolicy {
    AttestationPolicy::Off
}

/// The loaded policy: configuration, anchors and status list.
#[derive(Debug)]
pub struct Attestation {
    /// The configuration.
    pub config: AttestationConfig,
    anchors: TrustAnchors,
    status: StatusList,
}

impl Attestation {
    /// Load the policy `origin.json` names, if any.
    pub fn load(dir: &DataDir) -> Result<Option<Self>, StateError> {
        let Some(config) = dir.config.attestation.clone() else {
            return Ok(None);
        };
        let invalid = |path: &str, reason: String| StateError::Invalid {
            path: dir.file(path),
            reason,
        };
        let anchors = TrustAnchors::from_pem_or_json(&dir.read(&config.roots)?)
            .map_err(|e| invalid(&config.roots, e.to_string()))?;
        let status = match &config.status_list {
            Some(path) => {
                StatusList::from_json(&dir.read(path)?).map_err(|e| invalid(path, e.to_string()))?
            }
            None => StatusList::default(),
        };
        Ok(Some(Self {
            config,
            anchors,
            status,
        }))
    }

    /// The policy mode for `action` on `channel`.
    pub fn mode(&self, action: Action, channel: &Channel) -> AttestationPolicy {
        let per_channel = self.config.channels.get(&channel.0);
        match action {
            Action::Enrollment => self.config.enrollment,
            Action::CheckIn => per_channel.map_or(AttestationPolicy::Off, |c| c.check_in),
            Action::PrivateContent => {
                per_channel.map_or(AttestationPolicy::Off, |c| c.private_content)
            }
        }
    }

    /// Verify evidence sent by `handle` with the request of `nonce` on the connection whose
    /// signed binding is `exporter`.
    pub fn verify(
        &self,
        evidence: &Evidence,
        nonce: &[u8; 32],
        handle: &DeviceHandle,
        exporter: &[u8; 32],
        now: UnixTime,
    ) -> Result<Attested, AttestError> {
        let verifier = Verifier {
            anchors: &self.anchors,
            status: &self.status,
            requirements: &self.config.requirements,
        };
        verifier.verify(
            evidence,
            &AttestationChallenge::bind(nonce, handle, exporter),
            now,
        )
    }
}
