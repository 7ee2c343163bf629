//! A/B installation and the boot check (DESIGN.md §7), as pure transitions over the device's
//! slot state.
//!
//! A new release is written to the inactive slot; after its whole-artifact hashes verify, the
//! slot is marked **pending** with a number of boot tries. The (simulated) bootloader boots a
//! pending slot, spending a try; `boot-check` marks it **good** when the health check passes —
//! only then does the anti-rollback floor rise — and reverts to the old slot when the tries are
//! spent. The driver persists [`Slots`] atomically (write, fsync, rename, fsync the directory)
//! after every transition, so a power cut leaves either the old state or the new one.

use serde::{Deserialize, Serialize};

use crate::tuf::enigm::ReleaseNumber;

/// One of the two slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Slot {
    /// Slot A.
    A,
    /// Slot B.
    B,
}

impl Slot {
    /// The other slot.
    pub fn other(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }
}

/// A slot waiting for its boot check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pending {
    /// The slot.
    pub slot: Slot,
    /// The release in it.
    pub release: ReleaseNumber,
    /// Boots left before reverting.
    pub tries_left: u8,
    /// Whether the slot is the one booted now (a try was spent on it).
    pub booted: bool,
}

/// The device's slot state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slots {
    /// The slot known good and booted by default.
    pub active: Slot,
    /// The release in the active slot, if any.
    pub active_release: Option<ReleaseNumber>,
    /// The new slot waiting for its boot check.
    pub pending: Option<Pending>,
    /// The anti-rollback floor: no release below it is installed again.
    pub floor: ReleaseNumber,
}

/// What the boot check did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BootOutcome {
    /// Nothing was pending.
    NothingPending,
    /// The pending slot passed and is now active; the floor rose.
    MarkedGood,
    /// The pending slot failed; it will be tried again.
    WillRetry {
        /// Tries left.
        tries_left: u8,
    },
    /// The pending slot failed its last try; the old slot is active again.
    Reverted,
}

/// An install that may not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    /// The release is not above the anti-rollback floor or the installed release.
    #[error("release {offered} is not above the installed release or rollback floor {floor}")]
    Rollback {
        /// The release offered.
        offered: u64,
        /// The floor (or installed release).
        floor: u64,
    },
    /// Another release is pending its boot check.
    #[error("release {pending} is pending its boot check; run boot-check first")]
    PendingBootCheck {
        /// The pending release.
        pending: u64,
    },
}

impl Slots {
    /// A fresh device: slot A active with `release` (if known), floor at it.
    pub fn new(release: Option<ReleaseNumber>) -> Self {
        Self {
            active: Slot::A,
            active_release: release,
            pending: None,
            floor: release.unwrap_or(ReleaseNumber(0)),
        }
    }

    /// The slot to write `release` into, if it may be installed.
    pub fn target_for(&self, release: ReleaseNumber) -> Result<Slot, InstallError> {
        if let Some(p) = self.pending {
            return Err(InstallError::PendingBootCheck {
                pending: p.release.0,
            });
        }
        let floor = self
            .active_release
            .map_or(self.floor, |a| a.max(self.floor));
        if release <= floor {
            return Err(InstallError::Rollback {
                offered: release.0,
                floor: floor.0,
            });
        }
        Ok(self.active.other())
    }

    /// The inactive slot is written and verified: mark it pending.
    pub fn mark_pending(self, release: ReleaseNumber, tries: u8) -> Result<Self, InstallError> {
        let slot = self.target_for(release)?;
        Ok(Self {
            pending: Some(Pending {
                slot,
                release,
                tries_left: tries.max(1),
                booted: false,
            }),
            ..self
        })
    }

    /// The bootloader chooses the slot to boot: a pending slot spends a try.
    pub fn boot(self) -> (Self, Slot) {
        match self.pending {
            Some(p) if p.tries_left > 0 => (
                Self {
                    pending: Some(Pending {
                        tries_left: p.tries_left - 1,
                        booted: true,
                        ..p
                    }),
                    ..self
                },
                p.slot,
            ),
            _ => (self, self.active),
        }
    }

    /// The health check of the booted system ran: `healthy` or not.
    pub fn boot_check(self, healthy: bool) -> (Self, BootOutcome) {
        let Some(p) = self.pending else {
            return (self, BootOutcome::NothingPending);
        };
        if healthy && p.booted {
            return (
                Self {
                    active: p.slot,
                    active_release: Some(p.release),
                    pending: None,
                    floor: self.floor.max(p.release),
                },
                BootOutcome::MarkedGood,
            );
        }
        if p.tries_left == 0 {
            return (
                Self {
                    pending: None,
                    ..self
                },
                BootOutcome::Reverted,
            );
        }
        (
            Self {
                pending: Some(Pending { booted: false, ..p }),
                ..self
            },
            BootOutcome::WillRetry {
                tries_left: p.tries_left,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_boot_switches_and_raises_the_floor() {
        let slots = Slots::new(Some(ReleaseNumber(1)));
        let slots = slots.mark_pending(ReleaseNumber(2), 3).unwrap();
        assert_eq!(
            slots.floor,
            ReleaseNumber(1),
            "the floor rises only when marked good"
        );
        let (slots, booted) = slots.boot();
        assert_eq!(booted, Slot::B);
        let (slots, outcome) = slots.boot_check(true);
        assert_eq!(outcome, BootOutcome::MarkedGood);
        assert_eq!((slots.active, slots.floor), (Slot::B, ReleaseNumber(2)));
        assert_eq!(
            slots.target_for(ReleaseNumber(1)),
            Err(InstallError::Rollback {
                offered: 1,
                floor: 2
            })
        );
    }

    #[test]
    fn failing_boots_revert_after_the_tries() {
        let mut slots = Slots::new(Some(ReleaseNumber(4)))
            .mark_pending(ReleaseNumber(5), 2)
            .unwrap();
        let mut outcomes = Vec::new();
        for _ in 0..2 {
            let (s, booted) = slots.boot();
            assert_eq!(booted, Slot::B);
            let (s, outcome) = s.boot_check(false);
            outcomes.push(outcome);
            slots = s;
        }
        assert_eq!(
            outcomes,
            [
                BootOutcome::WillRetry { tries_left: 1 },
                BootOutcome::Reverted
            ]
        );
        assert_eq!(slots.active, Slot::A);
        assert_eq!(slots.active_release, Some(ReleaseNumber(4)));
        assert_eq!(
            slots.floor,
            ReleaseNumber(4),
            "a reverted release never raised the floor"
        );
        assert_eq!(slots.boot().1, Slot::A);
    }

    #[test]
    fn pending_blocks_another_install_and_rollback_is_refused() {
        let slots = Slots::new(Some(ReleaseNumber(3)));
        assert_eq!(
            slots.target_for(ReleaseNumber(3)),
            Err(InstallError::Rollback {
                offered: 3,
                floor: 3
            })
        );
        let pending = slots.mark_pending(ReleaseNumber(4), 1).unwrap();
        assert_eq!(
            pending.target_for(ReleaseNumber(5)),
            Err(InstallError::PendingBootCheck { pending: 4 })
        );
    }

    #[test]
    fn health_check_before_booting_the_new_slot_does_not_mark_it_good() {
        let slots = Slots::new(Some(ReleaseNumber(1)))
            .mark_pending(ReleaseNumber(2), 3)
            .unwrap();
        // The check ran on the old system (the new slot was never booted): not a pass.
        let (slots, outcome) = slots.boot_check(true);
        assert_eq!(outcome, BootOutcome::WillRetry { tries_left: 3 });
        assert_eq!(slots.active, Slot::A);
    }
}
