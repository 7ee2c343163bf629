//! Cross-program tests of the Enigm OTA system live in `tests/tests/`, one integration binary.
//!
//! This library will hold the harness (process spawning, free ports, attacker roles) once
//! there are programs to test.
