//! What a serving origin keeps in memory to answer check-ins without asking the catalog
//! (`docs`: ARCHITECTURE.md, "Performance").
//!
//! A check-in makes **one** catalog statement: [`Catalog::use_nonce`], which records the
//! nonce's use and reads, in the same statement, whether the device is revoked and the
//! release generation. Everything else comes from here:
//!
//! - **Devices**, read from the catalog on first use and kept (at most
//!   [`MAX_CACHED_DEVICES`]). What is kept never goes stale in a way that matters: a device's
//!   key, channel, model and cohort never change once enrolled; revocation is final, and the
//!   nonce statement reads it afresh for every request, so a `device revoke` by any process
//!   refuses the device's next request; the installed release is written through by this
//!   process. The attestation on record is not kept: with an attestation policy configured,
//!   every request reads its device from the catalog, as before.
//! - **Releases**, with the generation they were read at. The catalog adds one to the
//!   generation in the transaction of every release created and every stage change (by any
//!   process); when a request's nonce statement returns a generation above the one kept, the
//!   releases are read again before the check-in is answered, so a halt or a promotion is
//!   seen by the next check-in.
//! - **The director key's id**, which every offer names.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use ota_core::director::DeviceHandle;
use ota_core::time::UnixTime;
use ota_core::tuf::KeyId;
use ota_core::tuf::enigm::{Channel, ReleaseNumber};

use crate::store::{Catalog, CatalogError, DeviceRecord, ReleaseRecord};

/// Most devices kept in memory (a few hundred bytes each); past it, devices not yet kept are
/// read from the catalog at each request.
pub const MAX_CACHED_DEVICES: usize = 200_000;
/// How long a used nonce's row is kept after it expired before a purge deletes it. An expired
/// nonce is refused by its own expiry time; the margin keeps a replay refused even if the
/// clock is set back by less than this.
pub const NONCE_PURGE_MARGIN_SECS: i64 = 3_600;
/// How often (at most) a check-in starts a purge of old nonce rows.
const PURGE_EVERY_SECS: i64 = 60;

/// The releases of every channel at one generation, each channel's newest first.
#[derive(Debug, Default)]
struct Releases {
    generation: Option<i64>,
    by_channel: HashMap<Channel, Arc<Vec<ReleaseRecord>>>,
}

/// The serving origin's memory of devices and releases (see the module documentation).
#[derive(Debug)]
pub struct CheckInCache {
    devices: RwLock<HashMap<DeviceHandle, DeviceRecord>>,
    releases: RwLock<Releases>,
    /// One reader of the releases at a time.
    reading: tokio::sync::Mutex<()>,
    /// The highest release generation a nonce statement returned.
    seen: AtomicI64,
    /// When a purge of old nonces last started.
    purged_at: AtomicI64,
    /// The time nonces are minted, opened and purged by.
    nonce_clock: crate::nonce::NonceClock,
    director_key_id: OnceLock<KeyId>,
}

impl Default for CheckInCache {
    fn default() -> Self {
        Self {
            devices: RwLock::default(),
            releases: RwLock::default(),
            reading: tokio::sync::Mutex::new(()),
            seen: AtomicI64::new(i64::MIN),
            purged_at: AtomicI64::new(i64::MIN),
            nonce_clock: crate::nonce::NonceClock::default(),
            director_key_id: OnceLock::new(),
        }
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl CheckInCache {
    /// The device `handle`: kept, or read from the catalog (and kept when enrolled).
    pub async fn device(
        &self,
        catalog: &Catalog,
        handle: &DeviceHandle,
    ) -> Result<Option<DeviceRecord>, CatalogError> {
        if let Some(device) = read(&self.devices).get(handle) {
            return Ok(Some(device.clone()));
        }
        let device = catalog.device(handle).await?;
        if let Some(device) = &device {
            let mut devices = write(&self.devices);
            if devices.len() < MAX_CACHED_DEVICES {
                devices.insert(*handle, device.clone());
            }
        }
        Ok(device)
    }

    /// Notes that device `handle` is revoked, as of `now` (a catalog statement said so).
    pub fn revoked(&self, handle: &DeviceHandle, now: UnixTime) {
        if let Some(device) = write(&self.devices).get_mut(handle) {
            device.revoked_at.get_or_insert(now);
        }
    }

    /// Notes the release device `handle` runs, just written to the catalog.
    pub fn installed(&self, handle: &DeviceHandle, installed: Option<ReleaseNumber>) {
        if let Some(device) = write(&self.devices).get_mut(handle) {
            device.installed = installed;
        }
    }

    /// Notes a release generation a nonce statement returned.
    pub fn saw_generation(&self, generation: i64) {
        self.seen.fetch_max(generation, Ordering::AcqRel);
    }

    /// The releases of `channel`, newest first, at least as recent as every generation
    /// [`CheckInCache::saw_generation`] was given before this call.
    pub async fn releases(
        &self,
        catalog: &Catalog,
        channel: &Channel,
    ) -> Result<Arc<Vec<ReleaseRecord>>, CatalogError> {
        let wanted = self.seen.load(Ordering::Acquire);
        if let Some(releases) = self.releases_at(channel, wanted) {
            return Ok(releases);
        }
        let _one_reader = self.reading.lock().await;
        if let Some(releases) = self.releases_at(channel, wanted) {
            return Ok(releases);
        }
        // The generation first, then the releases: what is read is at least as recent as the
        // generation it is kept under.
        let generation = catalog.release_generation().await?;
        let mut by_channel: HashMap<Channel, Vec<ReleaseRecord>> = HashMap::new();
        for release in catalog.releases(None).await? {
            by_channel
                .entry(release.channel.clone())
                .or_default()
                .push(release);
        }
        let by_channel: HashMap<Channel, Arc<Vec<ReleaseRecord>>> = by_channel
            .into_iter()
            .map(|(channel, mut releases)| {
                releases.sort_by_key(|r| std::cmp::Reverse(r.number));
                (channel, Arc::new(releases))
            })
            .collect();
        let found = by_channel.get(channel).cloned().unwrap_or_default();
        tracing::debug!(target: "origin.cache", generation, "releases read");
        *write(&self.releases) = Releases {
            generation: Some(generation),
            by_channel,
        };
        self.saw_generation(generation);
        Ok(found)
    }

    fn releases_at(&self, channel: &Channel, wanted: i64) -> Option<Arc<Vec<ReleaseRecord>>> {
        let releases = read(&self.releases);
        let generation = releases.generation?;
        (generation >= wanted).then(|| {
            releases
                .by_channel
                .get(channel)
                .cloned()
                .unwrap_or_default()
        })
    }

    /// The director key's id, computed once.
    pub fn director_key_id(&self, compute: impl FnOnce() -> KeyId) -> &KeyId {
        self.director_key_id.get_or_init(compute)
    }

    /// The nonce time when the wall clock reads `wall` (see [`crate::nonce::NonceClock`]:
    /// it never goes back).
    pub fn nonce_time(&self, wall: UnixTime) -> UnixTime {
        self.nonce_clock.now(wall)
    }

    /// Deletes, in the background, the nonce rows that expired more than
    /// [`NONCE_PURGE_MARGIN_SECS`] before `now` (the wall clock; purged by its nonce time),
    /// at most once per minute.
    pub fn purge_nonces(&self, catalog: &Catalog, now: UnixTime) {
        let now = self.nonce_time(now);
        let last = self.purged_at.load(Ordering::Acquire);
        if last != i64::MIN && now.0 - last < PURGE_EVERY_SECS {
            return;
        }
        if self
            .purged_at
            .compare_exchange(last, now.0, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let catalog = catalog.clone();
        tokio::spawn(async move {
            match catalog
                .purge_nonces(now.plus_secs(-NONCE_PURGE_MARGIN_SECS))
                .await
            {
                Ok(deleted) => {
                    tracing::debug!(target: "origin.cache", deleted, "old nonces purged");
                }
                Err(error) => tracing::warn!(target: "origin.cache", %error, "nonce purge failed"),
            }
        });
    }
}
