//! Request nonces the origin mints instead of storing them when it issues them.
//!
//! A `Challenge` is answered with 32 bytes that carry their own proof of origin, so that
//! issuing one writes nothing: only its **use** is recorded, once, in the catalog
//! ([`crate::store::Catalog::use_nonce`]), which refuses a second use. The layout:
//!
//! ```text
//! offset size
//! 0      4    issued at, Unix seconds, big-endian
//! 4      4    expires at, Unix seconds, big-endian
//! 8      8    random
//! 16     4    issue tag:   keyed BLAKE3 (issue key) of bytes 0..16, first 4 bytes
//! 20     12   binding tag: keyed BLAKE3 (binding key) of bytes 0..20 and the TLS exporter
//!             value of the connection it was issued on, first 12 bytes
//! ```
//!
//! Both keys are derived from `keys/nonce.key` (a 32-byte seed in the data directory, made
//! once), so a nonce issued before a restart is still recognised after it, and its recorded
//! use still refuses a replay. The binding tag is what makes a nonce good for one connection
//! only: forging one means guessing 96 bits online, one request per guess, and would gain
//! nothing a `Challenge` on the forger's own connection does not give. The issue tag only
//! tells the refusals apart: a nonce the origin never issued ("unknown nonce") from one
//! issued on another connection.

use subtle::ConstantTimeEq as _;

use ota_core::time::UnixTime;

/// Length of the issue tag.
const ISSUE_TAG: usize = 4;
/// Length of the binding tag.
const BINDING_TAG: usize = 12;

/// Why a nonce is refused before its use is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceRefusal {
    /// The origin did not issue it.
    Unknown,
    /// It expired.
    Expired,
    /// It was issued on another connection.
    OtherConnection,
}

/// A nonce this origin issued, with its times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Minted {
    /// When it was issued.
    pub issued_at: UnixTime,
    /// When it stops being valid (exclusive).
    pub expires_at: UnixTime,
}

/// The keys that mint and recognise nonces (derived from one seed).
pub struct NonceKey {
    issue: [u8; 32],
    binding: [u8; 32],
}

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceKey(..)")
    }
}

impl NonceKey {
    /// The keys derived from `seed` (the content of `keys/nonce.key`).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self {
            issue: blake3::derive_key("enigm-ota origin nonce issue v1", seed),
            binding: blake3::derive_key("enigm-ota origin nonce binding v1", seed),
        }
    }

    /// A nonce for the connection whose TLS exporter value is `exporter`, issued at `now`
    /// and valid for `lifetime_secs`, with `random` as its unpredictable part. `None` when a
    /// time does not fit the format (before 1970 or after 2106).
    pub fn mint(
        &self,
        exporter: &[u8; 32],
        now: UnixTime,
        lifetime_secs: i64,
        random: [u8; 8],
    ) -> Option<[u8; 32]> {
        let issued = u32::try_from(now.0).ok()?;
        let expires = u32::try_from(now.0.checked_add(lifetime_secs)?).ok()?;
        let mut nonce = [0u8; 32];
        nonce[0..4].copy_from_slice(&issued.to_be_bytes());
        nonce[4..8].copy_from_slice(&expires.to_be_bytes());
        nonce[8..16].copy_from_slice(&random);
        let tag = self.issue_tag(&nonce);
        nonce[16..20].copy_from_slice(&tag);
        let tag = self.binding_tag(&nonce, exporter);
        nonce[20..32].copy_from_slice(&tag);
        Some(nonce)
    }

    /// Checks that `nonce` is one this origin issued, unexpired at `now`, on the connection
    /// whose TLS exporter value is `exporter`. Whether it was used already is the catalog's
    /// to say ([`crate::store::Catalog::use_nonce`]).
    pub fn open(
        &self,
        nonce: &[u8; 32],
        exporter: &[u8; 32],
        now: UnixTime,
    ) -> Result<Minted, NonceRefusal> {
        if !bool::from(self.issue_tag(nonce).ct_eq(&nonce[16..20])) {
            return Err(NonceRefusal::Unknown);
        }
        let time = |at: usize| {
            let mut bytes = [0u8; 4];
            bytes.copy_from_slice(&nonce[at..at + 4]);
            UnixTime(i64::from(u32::from_be_bytes(bytes)))
        };
        let minted = Minted {
            issued_at: time(0),
            expires_at: time(4),
        };
        if minted.expires_at.0 <= now.0 {
            return Err(NonceRefusal::Expired);
        }
        if !bool::from(self.binding_tag(nonce, exporter).ct_eq(&nonce[20..32])) {
            return Err(NonceRefusal::OtherConnection);
        }
        Ok(minted)
    }

    fn issue_tag(&self, nonce: &[u8; 32]) -> [u8; ISSUE_TAG] {
        let hash = blake3::keyed_hash(&self.issue, &nonce[..16]);
        let mut tag = [0u8; ISSUE_TAG];
        tag.copy_from_slice(&hash.as_bytes()[..ISSUE_TAG]);
        tag
    }

    fn binding_tag(&self, nonce: &[u8; 32], exporter: &[u8; 32]) -> [u8; BINDING_TAG] {
        let mut hasher = blake3::Hasher::new_keyed(&self.binding);
        hasher.update(&nonce[..16 + ISSUE_TAG]);
        hasher.update(exporter);
        let mut tag = [0u8; BINDING_TAG];
        tag.copy_from_slice(&hasher.finalize().as_bytes()[..BINDING_TAG]);
        tag
    }
}

/// The time nonces are minted, opened and purged by: the wall clock, except that it never
/// goes back. When the wall clock is set back (by an operator, a broken time server), this
/// clock goes on from where it was at the monotonic clock's rate until the wall clock
/// catches up.
///
/// Why: a purge deletes the rows of nonces that expired by its time (less
/// [`crate::cache::NONCE_PURGE_MARGIN_SECS`]). Were the wall clock to run days ahead, purge,
/// and come back, a nonce used before the jump would have lost its row while its own
/// expiry, read against the wall clock, said it was still valid: a captured request could
/// be replayed. By this clock it expired, and is refused as such. (The request window and
/// offers keep the wall clock: they are about the device's time, not the nonce table's.)
#[derive(Debug, Default)]
pub struct NonceClock {
    /// The last wall-clock time this clock took, and when (monotonic).
    base: std::sync::Mutex<Option<(UnixTime, std::time::Instant)>>,
}

impl NonceClock {
    /// The nonce time when the wall clock reads `wall`.
    pub fn now(&self, wall: UnixTime) -> UnixTime {
        self.at(wall, std::time::Instant::now())
    }

    fn at(&self, wall: UnixTime, instant: std::time::Instant) -> UnixTime {
        let mut base = self.base.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, when)) = *base {
            let carried = at.plus_secs(
                i64::try_from(instant.saturating_duration_since(when).as_secs())
                    .unwrap_or(i64::MAX / 2),
            );
            if carried.0 > wall.0 {
                return carried;
            }
        }
        *base = Some((wall, instant));
        wall
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nonce_clock_follows_the_wall_clock_forward_and_never_goes_back() {
        let clock = NonceClock::default();
        let start = std::time::Instant::now();
        let later = |secs| start + std::time::Duration::from_secs(secs);
        assert_eq!(clock.at(NOW, start), NOW);
        // Forward: followed, even by two days at once.
        assert_eq!(clock.at(NOW.plus_secs(10), later(10)), NOW.plus_secs(10));
        let ahead = NOW.plus_secs(2 * 86_400);
        assert_eq!(clock.at(ahead, later(20)), ahead);
        // Set back to the right time: it goes on from the jump at the monotonic rate.
        assert_eq!(clock.at(NOW.plus_secs(30), later(30)), ahead.plus_secs(10));
        assert_eq!(clock.at(NOW.plus_secs(90), later(90)), ahead.plus_secs(70));
        // The wall clock catches up: followed again.
        let caught = ahead.plus_secs(500);
        assert_eq!(clock.at(caught, later(100)), caught);
    }

    const NOW: UnixTime = UnixTime(1_800_000_000);

    #[test]
    fn a_minted_nonce_opens_on_its_connection_only_and_until_it_expires() {
        let key = NonceKey::from_seed(&[9; 32]);
        let (here, there) = ([1u8; 32], [2u8; 32]);
        let nonce = key.mint(&here, NOW, 120, [7; 8]).unwrap();
        let minted = Minted {
            issued_at: NOW,
            expires_at: NOW.plus_secs(120),
        };
        assert_eq!(key.open(&nonce, &here, NOW.plus_secs(119)), Ok(minted));
        assert_eq!(
            key.open(&nonce, &there, NOW),
            Err(NonceRefusal::OtherConnection)
        );
        assert_eq!(
            key.open(&nonce, &here, NOW.plus_secs(120)),
            Err(NonceRefusal::Expired)
        );
        // The same seed (a restarted origin) recognises it; another seed does not.
        let again = NonceKey::from_seed(&[9; 32]);
        assert_eq!(again.open(&nonce, &here, NOW), Ok(minted));
        let other = NonceKey::from_seed(&[8; 32]);
        assert_eq!(other.open(&nonce, &here, NOW), Err(NonceRefusal::Unknown));
    }

    #[test]
    fn every_changed_byte_is_refused() {
        let key = NonceKey::from_seed(&[9; 32]);
        let exporter = [1u8; 32];
        let nonce = key.mint(&exporter, NOW, 120, [7; 8]).unwrap();
        for i in 0..32 {
            let mut changed = nonce;
            changed[i] ^= 0x01;
            let refusal = key.open(&changed, &exporter, NOW).unwrap_err();
            // A change in the binding tag is the only one the issue tag does not see.
            let expected = if i >= 20 {
                NonceRefusal::OtherConnection
            } else {
                NonceRefusal::Unknown
            };
            assert_eq!(refusal, expected, "byte {i}");
        }
        assert_eq!(
            key.open(&[0; 32], &exporter, NOW),
            Err(NonceRefusal::Unknown)
        );
    }

    #[test]
    fn times_outside_the_format_mint_nothing() {
        let key = NonceKey::from_seed(&[9; 32]);
        assert_eq!(key.mint(&[0; 32], UnixTime(-1), 120, [0; 8]), None);
        assert_eq!(
            key.mint(&[0; 32], UnixTime(i64::from(u32::MAX)), 1, [0; 8]),
            None
        );
    }
}
