//! `boot-check` (the simulated bootloader and health check) and `status`.
//!
//! The bootloader boots a pending slot, spending one of its tries; the health check then marks
//! it good (the slot becomes active and the anti-rollback floor rises to its release) or
//! fails, and once the tries are spent the old slot is active again. Each transition is
//! persisted atomically (`ota_core::install` decides, this module writes).

use std::collections::BTreeMap;
use std::path::Path;

use ota_core::director::InstallReport;
use ota_core::fetch::SourceKind;
use ota_core::install::BootOutcome;
use serde_json::json;

use crate::state::{StateDir, read_json, write_json};
use crate::update::{PendingReport, UpdateReport, now};

/// Run the boot check; returns the exit code (0 good or nothing pending, 1 failed).
pub fn boot_check(path: &Path, healthy: bool, as_json: bool) -> anyhow::Result<u8> {
    let state = StateDir::open(path)?;
    let slots = state.slots()?;
    let pending = slots.pending;
    let (booted, slot) = slots.boot();
    // The try is spent before the check runs: a crash in the check still counts.
    state.save_slots(&booted)?;
    let (after, outcome) = booted.boot_check(healthy);
    state.save_slots(&after)?;
    let contents = state.slot_contents(after.active)?;
    state.log(&json!({
        "event": "boot_check", "at": now().0, "booted": slot, "healthy": healthy,
        "outcome": outcome, "active": after.active, "floor": after.floor,
    }))?;
    if let (BootOutcome::Reverted, Some(p)) = (outcome, pending) {
        // The origin learns of the failure at the next check-in.
        let channel = state
            .slot_contents(p.slot)?
            .map(|c| c.channel)
            .unwrap_or_else(|| ota_core::tuf::enigm::Channel(String::new()));
        write_json(
            &state.file("pending-report.json"),
            &PendingReport {
                report: InstallReport {
                    channel,
                    release: p.release,
                    success: false,
                    error_class: Some("boot-check".into()),
                },
            },
        )?;
    }
    if as_json {
        println!(
            "{}",
            json!({
                "outcome": outcome, "booted": slot, "active": after.active,
                "active_release": after.active_release, "floor": after.floor,
                "pending": after.pending, "contents": contents,
            })
        );
    } else {
        match outcome {
            BootOutcome::NothingPending => {
                println!("nothing pending; slot {:?} active", after.active)
            }
            BootOutcome::MarkedGood => println!(
                "slot {:?} marked good: release {} active, rollback floor {}",
                after.active,
                after.active_release.map_or(0, |r| r.0),
                after.floor.0
            ),
            BootOutcome::WillRetry { tries_left } => {
                println!("health check failed on slot {slot:?}; {tries_left} tries left")
            }
            BootOutcome::Reverted => println!(
                "health check failed on slot {slot:?}, no tries left: reverted to slot {:?}",
                after.active
            ),
        }
    }
    Ok(match outcome {
        BootOutcome::NothingPending | BootOutcome::MarkedGood => 0,
        BootOutcome::WillRetry { .. } | BootOutcome::Reverted => 1,
    })
}

/// Print the device's status.
pub fn status(path: &Path, as_json: bool) -> anyhow::Result<()> {
    let state = StateDir::open(path)?;
    let slots = state.slots()?;
    let active = state.slot_contents(slots.active)?;
    let last_path = state.file("last-update.json");
    let last: Option<UpdateReport> = if last_path.exists() {
        Some(read_json(&last_path)?)
    } else {
        None
    };
    if as_json {
        println!(
            "{}",
            json!({
                "active": slots.active, "active_release": slots.active_release,
                "floor": slots.floor, "pending": slots.pending, "contents": active,
                "handle": state.config.handle, "origin": state.config.origin,
                "attestation": state.config.attestation, "last_update": last,
            })
        );
        return Ok(());
    }
    println!(
        "active slot {:?}, release {}, rollback floor {}",
        slots.active,
        slots
            .active_release
            .map_or_else(|| "none".to_string(), |r| r.0.to_string()),
        slots.floor.0
    );
    if let crate::attest::ProviderConfig::Software { ca } = &state.config.attestation {
        println!(
            "attestation: software provider, CA {} (tests and demos only)",
            ca.display()
        );
    }
    if let Some(p) = slots.pending {
        println!(
            "pending: release {} in slot {:?}, {} tries left",
            p.release.0, p.slot, p.tries_left
        );
    }
    match last {
        None => println!("last update: none"),
        Some(last) => {
            println!(
                "last update: {}{}{}",
                last.outcome,
                last.release
                    .map(|r| format!(" (release {})", r.0))
                    .unwrap_or_default(),
                last.reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            );
            if !last.bytes_by_kind.is_empty() {
                println!("  {}", bytes_summary(&last.bytes_by_kind));
            }
            for (name, reason) in &last.banned {
                println!("  banned {name}: {reason}");
            }
        }
    }
    Ok(())
}

/// `local slot 1.0 MiB, lan peer 2.0 MiB, …`.
pub fn bytes_summary(by_kind: &BTreeMap<SourceKind, u64>) -> String {
    let parts: Vec<String> = by_kind
        .iter()
        .map(|(kind, bytes)| {
            let name = match kind {
                SourceKind::LocalSlot => "local slot",
                SourceKind::LanPeer => "LAN peers",
                SourceKind::HttpMirror => "HTTP mirror",
                SourceKind::Origin => "origin",
            };
            format!("{name} {:.1} MiB", *bytes as f64 / (1 << 20) as f64)
        })
        .collect();
    if parts.is_empty() {
        "nothing fetched".into()
    } else {
        parts.join(", ")
    }
}
