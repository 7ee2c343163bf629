//! Our additions to TUF: the `custom.enigm` fields of artifact targets and the release
//! manifest (DESIGN.md §3).
//!
//! An artifact target lives in the `release` role under `artifacts/`; its `custom.enigm`
//! object is [`ArtifactChunks`]. A release manifest is a small JSON target under `releases/`
//! in `targets`, signed by the manifest authority.

use serde::{Deserialize, Serialize};

use crate::chunk::ArtifactChunks;

use super::metadata::TargetFile;

/// Largest release manifest we parse.
pub const MAX_MANIFEST_LEN: u64 = 64 * 1024;

/// Read the `custom.enigm` object of an artifact target.
pub fn artifact_chunks(target: &TargetFile) -> Result<ArtifactChunks, String> {
    let enigm = target
        .custom
        .as_ref()
        .and_then(|c| c.get("enigm"))
        .ok_or_else(|| "no custom.enigm object".to_string())?;
    serde_json::from_value(enigm.clone()).map_err(|e| format!("custom.enigm: {e}"))
}

/// A release channel's name, e.g. `stable`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Channel(pub String);

/// A release number: rises monotonically per channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReleaseNumber(pub u64);

/// One artifact of a release and the slot it installs into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestArtifact {
    /// The artifact's target path (in the `release` role).
    pub target: String,
    /// The install slot, e.g. `system`.
    pub slot: String,
}

/// A release manifest (`releases/CHANNEL/NUMBER.json`), signed by the manifest authority.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseManifest {
    /// The channel.
    pub channel: Channel,
    /// The release number, rising per channel.
    pub release: ReleaseNumber,
    /// The version shown to people, e.g. `2026.11.2`.
    pub version: String,
    /// Whether this is a security release (offered to every eligible device at once).
    #[serde(default)]
    pub security: bool,
    /// Device models it is built for.
    pub models: Vec<String>,
    /// The lowest installed release it upgrades from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_installed_release: Option<ReleaseNumber>,
    /// The artifacts, installed all or nothing.
    pub artifacts: Vec<ManifestArtifact>,
}

impl ReleaseManifest {
    /// The manifest's target path.
    pub fn target_path(&self) -> String {
        format!("releases/{}/{}.json", self.channel.0, self.release.0)
    }

    /// Parse a manifest, bounding its size before parsing.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() as u64 > MAX_MANIFEST_LEN {
            return Err(format!(
                "release manifest of {} bytes is over the cap of {MAX_MANIFEST_LEN}",
                bytes.len()
            ));
        }
        let manifest: Self =
            serde_json::from_slice(bytes).map_err(|e| format!("release manifest: {e}"))?;
        if manifest.artifacts.is_empty() {
            return Err("release manifest lists no artifacts".into());
        }
        for artifact in &manifest.artifacts {
            super::path::check_target_path("release manifest", &artifact.target)
                .map_err(|e| e.to_string())?;
            if !artifact.target.starts_with("artifacts/") {
                return Err(format!(
                    "artifact {:?} is not under artifacts/",
                    artifact.target
                ));
            }
        }
        Ok(manifest)
    }
}
