//! Release lifecycle commands on a running origin: stage transitions through
//! `ota_core::rollout::transition`, applied with a compare-and-set on the catalog so that two
//! operators cannot race, and health gating from install reports.

use ota_core::rollout::{self, Command, Health, IllegalTransition, Stage};
use ota_core::time::UnixTime;
use ota_core::tuf::enigm::{Channel, ReleaseNumber};

use crate::service::Origin;
use crate::store::CatalogError;

/// Why a lifecycle command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LifecycleError {
    /// No such release.
    #[error("no release {number} on channel {channel}", channel = .channel.0, number = .number.0)]
    NotFound {
        /// The channel.
        channel: Channel,
        /// The number.
        number: ReleaseNumber,
    },
    /// The lifecycle does not allow the move.
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    /// A security promotion of a release whose manifest does not say security.
    #[error("release {0} is not marked as a security release in its manifest")]
    NotSecurity(u64),
    /// The audit log could not be written (the stage did change).
    #[error("audit log: {0}")]
    Audit(String),
    /// The catalog failed (or another operator moved the release first).
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// Apply `command` to a release on behalf of `actor` (`operator`, `admin-api`, `health-gate`);
/// returns the new stage. The step is appended to the audit log.
pub async fn apply(
    origin: &Origin,
    channel: &Channel,
    number: ReleaseNumber,
    command: Command,
    reason: Option<&str>,
    actor: &str,
    now: UnixTime,
) -> Result<Stage, LifecycleError> {
    let release = origin
        .catalog
        .release(channel, number)
        .await?
        .ok_or_else(|| LifecycleError::NotFound {
            channel: channel.clone(),
            number,
        })?;
    if command == Command::PromoteSecurity && !release.security {
        return Err(LifecycleError::NotSecurity(number.0));
    }
    let next = rollout::transition(release.stage, command)?;
    let halted_reason =
        matches!(next, Stage::Halted { .. }).then_some(reason.unwrap_or("halted by an operator"));
    origin
        .catalog
        .update_stage(channel, number, release.stage, next, halted_reason, now)
        .await?;
    let details = serde_json::json!({
        "step": "stage",
        "actor": actor,
        "channel": channel.0,
        "release": number.0,
        "command": command,
        "from": release.stage,
        "to": next,
        "reason": halted_reason,
    });
    crate::audit::record(origin, ota_sign::audit::Action::Transition, details, now)
        .map_err(|e| LifecycleError::Audit(format!("{e:#}")))?;
    tracing::info!(
        target: "origin.lifecycle",
        channel = %channel.0,
        release = number.0,
        from = %release.stage,
        to = %next,
        "stage changed"
    );
    Ok(next)
}

/// Judge a release's install reports; halt it when an active wave is failing. Returns the
/// health and whether it halted the release.
pub async fn health_gate(
    origin: &Origin,
    channel: &Channel,
    number: ReleaseNumber,
    now: UnixTime,
) -> Result<(Health, bool), LifecycleError> {
    let release = origin
        .catalog
        .release(channel, number)
        .await?
        .ok_or_else(|| LifecycleError::NotFound {
            channel: channel.clone(),
            number,
        })?;
    let counts = origin.catalog.report_counts(channel, number).await?;
    let health = rollout::health(release.health, counts.successes, counts.failures);
    let Some(command) = rollout::auto_halt(release.stage, health) else {
        return Ok((health, false));
    };
    let reason = match health {
        Health::Failing {
            failure_basis_points,
        } => format!(
            "health gate: {}.{:02}% of {} reports failed, threshold {}.{:02}%",
            failure_basis_points / 100,
            failure_basis_points % 100,
            counts.successes + counts.failures,
            release.health.max_failure_basis_points / 100,
            release.health.max_failure_basis_points % 100
        ),
        _ => "health gate".to_string(),
    };
    match apply(
        origin,
        channel,
        number,
        command,
        Some(&reason),
        "health-gate",
        now,
    )
    .await
    {
        Ok(_) => Ok((health, true)),
        // Another report halted it first: the gate's work is done.
        Err(LifecycleError::Catalog(CatalogError::StaleStage { .. })) => Ok((health, false)),
        Err(e) => Err(e),
    }
}
