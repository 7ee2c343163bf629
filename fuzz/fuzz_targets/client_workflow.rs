//! The client workflow fed with attacker-chosen files: starting from a fixed trusted root, the
//! input is split into the successive responses the updater asks for. Nothing may panic and
//! nothing may be accepted beyond what the signatures allow.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ota_core::time::UnixTime;
use ota_core::tuf::client::{Action, Fetched, Limits, TrustedFiles, Updater};

const ROOT: &[u8] = include_bytes!("../../core/testdata/tuf/valid-repository/trusted/root.json");

fuzz_target!(|data: &[u8]| {
    let Ok(mut updater) = Updater::new(Limits::default(), ROOT, TrustedFiles::default()) else {
        return;
    };
    if updater.refresh().is_err() {
        return;
    }
    // Responses are separated by 0xFF bytes (never valid in UTF-8 JSON); an empty piece
    // means "not found".
    let mut responses = data.split(|&b| b == 0xff);
    let now = UnixTime(1_795_392_000);
    let mut searched = false;
    while let Some(action) = updater.poll_action() {
        match action {
            Action::Fetch(request) => {
                let fetched = match responses.next() {
                    None => return,
                    Some([]) => Fetched::NotFound,
                    Some(bytes) => Fetched::Bytes(bytes.to_vec()),
                };
                if updater.handle_fetched(now, &request, fetched).is_err() {
                    return;
                }
            }
            Action::Refreshed if !searched => {
                searched = true;
                if updater.find_target(now, "artifacts/system-1.img").is_err() {
                    return;
                }
            }
            Action::Found(info) => {
                let _ = info.into_artifact();
                return;
            }
            _ => {}
        }
    }
});
