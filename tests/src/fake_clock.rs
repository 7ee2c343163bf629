//! A wall clock that a test moves while the program runs, without root and without a seam in
//! the programs: libfaketime (`LD_PRELOAD`, Debian package `faketime`, which `scripts/test`
//! installs) answers the program's `clock_gettime(CLOCK_REALTIME)` and `time()` with the
//! real time plus the offset written in a file, which it reads at every call
//! (`FAKETIME_TIMESTAMP_FILE`, `FAKETIME_NO_CACHE=1`: with a cache, a multi-threaded
//! program was seen to keep the old offset for seconds). The monotonic clock is left
//! alone (`FAKETIME_DONT_FAKE_MONOTONIC=1`), so timers, QUIC's loss recovery and idle
//! timeouts behave: only what the program reads as the date jumps, as when an operator or a
//! broken NTP server sets it.
//!
//! The programs read the date through `std::time::SystemTime::now()` (the origin's and the
//! peer's `now` functions), which is that system call; nothing in them is test-only.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where Debian puts the multi-threaded preload library, per architecture.
const LIBRARY: &str = "faketime/libfaketimeMT.so.1";

/// A clock offset shared by the processes started with [`FakeClock::apply`].
#[derive(Debug)]
pub struct FakeClock {
    file: PathBuf,
    library: PathBuf,
}

impl FakeClock {
    /// A clock at the real time, its offset kept in `dir`.
    ///
    /// # Panics
    /// When libfaketime is not installed (naming the package).
    pub fn new(dir: &Path, name: &str) -> Self {
        let library = [
            "/usr/lib/x86_64-linux-gnu",
            "/usr/lib/aarch64-linux-gnu",
            "/usr/lib",
        ]
        .iter()
        .map(|d| Path::new(d).join(LIBRARY))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "libfaketime is not installed (scripts/test installs it: apt-get install faketime)"
            )
        });
        let clock = Self {
            file: dir.join(format!("{name}.faketime")),
            library,
        };
        clock.write(0);
        clock
    }

    /// Runs `command` under this clock.
    pub fn apply(&self, command: &mut Command) {
        command
            .env("LD_PRELOAD", &self.library)
            .env("FAKETIME_TIMESTAMP_FILE", &self.file)
            .env("FAKETIME_NO_CACHE", "1")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .env_remove("FAKETIME");
    }

    fn write(&self, offset_secs: i64) {
        let next = self.file.with_extension("next");
        std::fs::write(&next, format!("{offset_secs:+}\n")).expect("write the clock file");
        std::fs::rename(&next, &self.file).expect("replace the clock file");
    }

    /// Moves the clock to the real time plus `offset_secs` (the processes under it read it
    /// at their next call; the file is replaced whole, so no reader sees half of it).
    pub fn jump(&self, offset_secs: i64) {
        self.write(offset_secs);
    }
}
