//! The release lifecycle (DESIGN.md §6) as a pure transition function, and health gating.
//!
//! ```text
//! draft ──validated──▶ validation ──promote N%──▶ limited(N%) ──promote N'% (N' > N)──▶ limited(N'%)
//!                          │                          │
//!                          └──────promote stable──────┴──▶ stable
//!           validation, limited, stable ──promote security──▶ security
//!           validation, limited, stable, security ──halt──▶ halted ──resume──▶ (the stage it left)
//!           any stage but revoked ──revoke──▶ revoked
//! ```
//!
//! Exposure only grows: a percentage never goes down and stable never goes back to limited
//! (that would withdraw offers already made; halt instead). A wave whose failure rate passes
//! its threshold, over at least a minimum sample of install reports, halts itself
//! ([`auto_halt`]).

use serde::{Deserialize, Serialize};

use crate::director::BUCKETS;

/// Where a release is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "stage", rename_all = "snake_case")]
pub enum Stage {
    /// Ingested, maybe signed and registered, not yet validated: offered to nobody.
    Draft,
    /// Validated: offered to the validation cohort only.
    Validation,
    /// Rolling out to a share of the fleet, in basis points (1..10 000).
    Limited {
        /// Share of devices offered, in hundredths of a percent.
        basis_points: u16,
    },
    /// Offered to every eligible device.
    Stable,
    /// A security release: offered to every eligible device at once.
    Security,
    /// Stopped: offered to no one new; `resume` returns to the stage it left.
    Halted {
        /// The stage it left.
        resume: Active,
    },
    /// Withdrawn: offered to no one, for good.
    Revoked,
}

/// A stage that offers the release to someone, and can be halted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "stage", rename_all = "snake_case")]
pub enum Active {
    /// See [`Stage::Validation`].
    Validation,
    /// See [`Stage::Limited`].
    Limited {
        /// Share of devices offered, in basis points.
        basis_points: u16,
    },
    /// See [`Stage::Stable`].
    Stable,
    /// See [`Stage::Security`].
    Security,
}

impl From<Active> for Stage {
    fn from(active: Active) -> Self {
        match active {
            Active::Validation => Self::Validation,
            Active::Limited { basis_points } => Self::Limited { basis_points },
            Active::Stable => Self::Stable,
            Active::Security => Self::Security,
        }
    }
}

impl Stage {
    /// The stage as an active one, if it offers the release to anyone.
    pub fn active(self) -> Option<Active> {
        match self {
            Self::Validation => Some(Active::Validation),
            Self::Limited { basis_points } => Some(Active::Limited { basis_points }),
            Self::Stable => Some(Active::Stable),
            Self::Security => Some(Active::Security),
            Self::Draft | Self::Halted { .. } | Self::Revoked => None,
        }
    }

    /// A short name: `draft`, `validation`, `limited`, `stable`, `security`, `halted`,
    /// `revoked`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Validation => "validation",
            Self::Limited { .. } => "limited",
            Self::Stable => "stable",
            Self::Security => "security",
            Self::Halted { .. } => "halted",
            Self::Revoked => "revoked",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Limited { basis_points } => write!(
                f,
                "limited ({}.{:02}%)",
                basis_points / 100,
                basis_points % 100
            ),
            Self::Halted { resume } => write!(f, "halted (from {})", Self::from(*resume)),
            other => f.write_str(other.name()),
        }
    }
}

/// An operator's (or the health gate's) request to move a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// The validation gates passed.
    Validated,
    /// Open the release to a share of the fleet.
    PromoteLimited {
        /// The new share, in basis points.
        basis_points: u16,
    },
    /// Open the release to every eligible device.
    PromoteStable,
    /// Offer the release to every eligible device at once, as a security release.
    PromoteSecurity,
    /// Stop offering it to anyone new.
    Halt,
    /// Return to the stage it was halted from.
    Resume,
    /// Withdraw it for good.
    Revoke,
}

/// A transition that the lifecycle does not allow, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {command:?} a release that is {from}: {reason}")]
pub struct IllegalTransition {
    /// The stage the release is in.
    pub from: Stage,
    /// What was asked.
    pub command: Command,
    /// Why not.
    pub reason: &'static str,
}

/// The stage `command` moves a release in stage `from` to.
pub fn transition(from: Stage, command: Command) -> Result<Stage, IllegalTransition> {
    let illegal = |reason| {
        Err(IllegalTransition {
            from,
            command,
            reason,
        })
    };
    match (from, command) {
        (Stage::Revoked, _) => illegal("a revoked release stays revoked"),
        (_, Command::Revoke) => Ok(Stage::Revoked),
        (Stage::Draft, Command::Validated) => Ok(Stage::Validation),
        (_, Command::Validated) => illegal("only a draft is validated"),
        (Stage::Draft, _) => illegal("a draft must pass validation first"),
        (Stage::Halted { resume }, Command::Resume) => Ok(resume.into()),
        (Stage::Halted { .. }, Command::Halt) => illegal("the release is already halted"),
        (Stage::Halted { .. }, _) => illegal("resume the release before promoting it"),
        (_, Command::Resume) => illegal("only a halted release resumes"),
        (_, Command::Halt) => match from.active() {
            Some(resume) => Ok(Stage::Halted { resume }),
            None => illegal("the release offers nothing to halt"),
        },
        (_, Command::PromoteLimited { basis_points }) => {
            if basis_points == 0 || basis_points >= BUCKETS {
                return illegal("a limited wave is between 0.01% and 99.99%; use stable for 100%");
            }
            match from {
                Stage::Validation => Ok(Stage::Limited { basis_points }),
                Stage::Limited { basis_points: now } if basis_points > now => {
                    Ok(Stage::Limited { basis_points })
                }
                Stage::Limited { .. } => {
                    illegal("a wave only grows; halt the release to stop offers")
                }
                _ => illegal("stable and security releases are already offered to everyone"),
            }
        }
        (Stage::Validation | Stage::Limited { .. }, Command::PromoteStable) => Ok(Stage::Stable),
        (_, Command::PromoteStable) => illegal("the release is already offered to everyone"),
        (Stage::Validation | Stage::Limited { .. } | Stage::Stable, Command::PromoteSecurity) => {
            Ok(Stage::Security)
        }
        (_, Command::PromoteSecurity) => illegal("the release is already a security release"),
    }
}

/// When install reports halt a wave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthPolicy {
    /// The failure rate, in basis points, above which the wave halts.
    pub max_failure_basis_points: u16,
    /// The number of reports needed before the rate is trusted.
    pub min_sample: u64,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            max_failure_basis_points: 500,
            min_sample: 20,
        }
    }
}

/// What the install reports say about a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "health", rename_all = "snake_case")]
pub enum Health {
    /// Fewer reports than the minimum sample.
    TooFewReports {
        /// Reports so far.
        reports: u64,
    },
    /// The failure rate is at or below the threshold.
    Healthy {
        /// Failure rate in basis points.
        failure_basis_points: u16,
    },
    /// The failure rate is above the threshold.
    Failing {
        /// Failure rate in basis points.
        failure_basis_points: u16,
    },
}

/// Judge install reports against a policy.
pub fn health(policy: HealthPolicy, successes: u64, failures: u64) -> Health {
    let reports = successes.saturating_add(failures);
    if reports < policy.min_sample.max(1) {
        return Health::TooFewReports { reports };
    }
    let rate = (u128::from(failures) * u128::from(BUCKETS) / u128::from(reports)) as u16;
    if rate > policy.max_failure_basis_points {
        Health::Failing {
            failure_basis_points: rate,
        }
    } else {
        Health::Healthy {
            failure_basis_points: rate,
        }
    }
}

/// The command the health gate issues for a release, if any: a halt when an active wave is
/// failing.
pub fn auto_halt(stage: Stage, health: Health) -> Option<Command> {
    match (stage.active(), health) {
        (Some(_), Health::Failing { .. }) => Some(Command::Halt),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_COMMANDS: [Command; 8] = [
        Command::Validated,
        Command::PromoteLimited { basis_points: 1000 },
        Command::PromoteLimited { basis_points: 100 },
        Command::PromoteStable,
        Command::PromoteSecurity,
        Command::Halt,
        Command::Resume,
        Command::Revoke,
    ];

    #[test]
    fn the_happy_path() {
        let mut stage = Stage::Draft;
        for command in [
            Command::Validated,
            Command::PromoteLimited { basis_points: 100 },
            Command::PromoteLimited { basis_points: 1000 },
            Command::Halt,
            Command::Resume,
            Command::PromoteStable,
        ] {
            stage = transition(stage, command).unwrap();
        }
        assert_eq!(stage, Stage::Stable);
    }

    #[test]
    fn illegal_transitions_say_why() {
        let err = transition(Stage::Draft, Command::PromoteStable).unwrap_err();
        assert_eq!(err.reason, "a draft must pass validation first");
        let err = transition(
            Stage::Limited { basis_points: 1000 },
            Command::PromoteLimited { basis_points: 500 },
        )
        .unwrap_err();
        assert_eq!(
            err.reason,
            "a wave only grows; halt the release to stop offers"
        );
        let err =
            transition(Stage::Stable, Command::PromoteLimited { basis_points: 500 }).unwrap_err();
        assert_eq!(
            err.reason,
            "stable and security releases are already offered to everyone"
        );
        assert_eq!(
            transition(Stage::Revoked, Command::Resume)
                .unwrap_err()
                .reason,
            "a revoked release stays revoked"
        );
        assert_eq!(
            transition(Stage::Draft, Command::Halt).unwrap_err().reason,
            "a draft must pass validation first"
        );
    }

    #[test]
    fn resume_returns_to_the_halted_stage() {
        for active in [
            Active::Validation,
            Active::Limited { basis_points: 42 },
            Active::Stable,
            Active::Security,
        ] {
            let halted = transition(active.into(), Command::Halt).unwrap();
            assert_eq!(halted, Stage::Halted { resume: active });
            assert_eq!(transition(halted, Command::Resume).unwrap(), active.into());
        }
    }

    #[test]
    fn exposure_never_shrinks_and_revoked_is_final() {
        let stages = [
            Stage::Draft,
            Stage::Validation,
            Stage::Limited { basis_points: 500 },
            Stage::Stable,
            Stage::Security,
            Stage::Halted {
                resume: Active::Stable,
            },
            Stage::Revoked,
        ];
        let exposure = |s: Stage| match s {
            Stage::Limited { basis_points } => u32::from(basis_points),
            Stage::Stable | Stage::Security => u32::from(BUCKETS),
            _ => 0,
        };
        for from in stages {
            for command in ALL_COMMANDS {
                let Ok(to) = transition(from, command) else {
                    continue;
                };
                assert_ne!(from, Stage::Revoked);
                if from.active().is_some() && to.active().is_some() {
                    assert!(exposure(to) >= exposure(from), "{from} -> {to}");
                }
            }
        }
    }

    #[test]
    fn health_gate() {
        let policy = HealthPolicy {
            max_failure_basis_points: 500,
            min_sample: 20,
        };
        assert_eq!(health(policy, 5, 5), Health::TooFewReports { reports: 10 });
        assert_eq!(
            health(policy, 95, 5),
            Health::Healthy {
                failure_basis_points: 500
            }
        );
        let failing = health(policy, 94, 6);
        assert_eq!(
            failing,
            Health::Failing {
                failure_basis_points: 600
            }
        );
        assert_eq!(
            auto_halt(Stage::Limited { basis_points: 100 }, failing),
            Some(Command::Halt)
        );
        assert_eq!(auto_halt(Stage::Draft, failing), None);
        assert_eq!(
            auto_halt(
                Stage::Halted {
                    resume: Active::Stable
                },
                failing
            ),
            None
        );
    }
}
