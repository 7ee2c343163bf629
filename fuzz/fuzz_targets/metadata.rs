//! Metadata parsing: any bytes, as any role, end in a typed error or a role, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ota_core::tuf::metadata::{Envelope, Root, Snapshot, Targets, Timestamp};

fuzz_target!(|data: &[u8]| {
    let Ok(envelope) = Envelope::parse("fuzz", "fuzz.json", data, 1 << 20) else {
        return;
    };
    let _ = envelope.role::<Root>();
    let _ = envelope.role::<Timestamp>();
    let _ = envelope.role::<Snapshot>();
    if let Ok(targets) = envelope.role::<Targets>()
        && let Some(delegations) = &targets.delegations
    {
        for role in &delegations.roles {
            let _ = envelope.verify_threshold(
                &role.name,
                &delegations.keys,
                &role.keyids,
                role.threshold,
            );
        }
    }
});
