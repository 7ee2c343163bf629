//! Journal parsing: a journal file damaged in any way ends in a typed error or a prefix of
//! valid records, never a panic or an allocation beyond the artifact's chunk count.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ota_core::digest::{Blake3Hash, Sha256Hash};
use ota_core::journal::{JournalBinding, parse};

fuzz_target!(|data: &[u8]| {
    let binding = JournalBinding::new("artifacts/x", &Sha256Hash::of(b"x"), &Blake3Hash::of(b"x"));
    if let Ok((records, valid)) = parse(data, &binding, 1 << 16) {
        assert!(valid <= data.len());
        assert!(records.iter().all(|r| r.position < 1 << 16));
    }
});
