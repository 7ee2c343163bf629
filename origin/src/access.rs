//! Private content at the origin (docs/PROTOCOL.md, "Private content"): chunks of artifacts
//! created with `release create --private SLOT` are served over QUIC only on a connection
//! holding a **grant** for a release that contains them, and never by the HTTP mirror.
//!
//! A connection earns a grant by a check-in made on it (directly, or relayed by a site peer
//! on the peer's connection) that the director answered with an offer: the check-in is signed
//! by the device key over the nonce, the timestamp and the connection's TLS exporter value,
//! and checked like every check-in (`director::verify_request` / `verify_relayed`). Where the
//! channel's attestation policy for `private_content` is `required`, the check-in must also
//! carry evidence that passed; `preferred` grants and counts the miss; `off` ignores it. A
//! grant lasts until the offer expires, or until the device is revoked or the release is
//! revoked, whichever comes first: with grants held, the catalog is asked at most once per
//! [`REFRESH_EVERY`] (on the next blob request) for devices revoked since the last look and,
//! when the release generation moved, for revoked releases, and those grants are dropped. A
//! halted release keeps its grants (halting stops new offers; a device already offered may
//! finish). A grant on a peer's connection names the last device that checked in through it:
//! revoking that device drops the peer connection's grant (its other devices check in again);
//! the peer's own grants to its devices last until their offers expire (docs/THREAT-MODEL.md).
//! Grants are keyed by the connection's channel binding
//! (the TLS exporter value, unique to one TLS session), so no other connection can use one.
//!
//! Which chunks are private comes from the catalog ([`Catalog::private_content`]): read on
//! first use, then again whenever the number of releases changes (checked at most once per
//! [`REFRESH_EVERY`]), since private content only changes when a release is created. Until it
//! has been read once, every blob is refused (fail closed).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ota_core::digest::ChunkId;
use ota_core::director::DeviceHandle;
use ota_core::rollout::Stage;
use ota_core::time::UnixTime;
use ota_core::tuf::enigm::{Channel, ReleaseNumber};

use crate::store::{Catalog, CatalogError};

/// How often the catalog is asked whether releases were created.
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// Most connections holding grants at once (a few dozen bytes each); beyond it the oldest
/// grants are dropped and those devices check in again.
const MAX_GRANTED_CONNECTIONS: usize = 100_000;

/// A release, by channel and number.
pub type ReleaseKey = (Channel, ReleaseNumber);

#[derive(Debug, Default)]
struct Known {
    /// Releases recorded when this was read (`None`: never read).
    releases: Option<u64>,
    /// Private blob → the releases that use it.
    blobs: HashMap<ChunkId, Vec<ReleaseKey>>,
    /// Releases with private content.
    private_releases: HashSet<ReleaseKey>,
    /// Every release when this was read: an offer for another one (created since) makes the
    /// grant decision read the catalog again first.
    all_releases: HashSet<ReleaseKey>,
    /// Target paths of private artifacts.
    targets: HashSet<String>,
}

/// The device that checked in on a connection, and the releases granted until when.
type Held = (DeviceHandle, Vec<(ReleaseKey, UnixTime)>);

#[derive(Debug, Default)]
struct Grants {
    /// Channel binding → what that connection holds.
    by_binding: HashMap<[u8; 32], Held>,
    order: VecDeque<[u8; 32]>,
}

/// How far back a look for revoked devices reaches before the previous look, for the clocks
/// of the processes that revoke (the revocation time is theirs).
const REVOCATION_MARGIN_SECS: i64 = 300;

/// What the origin has seen of withdrawals (revoked devices and releases) since it started.
#[derive(Debug, Default)]
struct Watch {
    /// When devices revoked were last asked for (seconds, this process's clock).
    revocations_seen: Option<UnixTime>,
    /// The release generation revoked releases were last read at.
    generation: Option<i64>,
}

/// What a blob request may get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobAccess {
    /// Not private: anyone.
    Public,
    /// Private, and this connection holds a live grant for a release using it.
    Granted,
    /// Private, without a grant on this connection (the handle that checked in on it, if any).
    Refused(Option<DeviceHandle>),
}

/// The private content and the grants of the running origin.
#[derive(Debug, Default)]
pub struct PrivateAccess {
    known: RwLock<Known>,
    /// When the catalog was last asked, in milliseconds since the Unix epoch (0: never); an
    /// atomic, so that the check on every blob served takes no lock.
    checked_ms: AtomicU64,
    /// Held while the catalog is asked; what was seen of revocations.
    refreshing: tokio::sync::Mutex<Watch>,
    grants: Mutex<Grants>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_millis().max(1) as u64)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl PrivateAccess {
    /// Reads the private content again if releases were created since it was last read.
    /// With `force`, reads it again now whatever the time and the count say.
    async fn refresh(&self, catalog: &Catalog, force: bool) -> Result<(), CatalogError> {
        let every = REFRESH_EVERY.as_millis() as u64;
        // Due when never asked, a refresh period ago, or when the clock went back.
        let due = || {
            let (checked, now) = (self.checked_ms.load(Ordering::Acquire), now_ms());
            force || checked == 0 || now < checked || now - checked >= every
        };
        if !due() {
            return Ok(());
        }
        let mut watch = self.refreshing.lock().await;
        if !due() {
            return Ok(());
        }
        let releases = catalog.release_count().await?;
        let current = self
            .known
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .releases;
        if force || current != Some(releases) {
            let content = catalog.private_content().await?;
            let all_releases = catalog
                .releases(None)
                .await?
                .into_iter()
                .map(|r| (r.channel, r.number))
                .collect();
            let mut known = Known {
                releases: Some(releases),
                targets: content.targets.into_iter().collect(),
                all_releases,
                ..Known::default()
            };
            for (id, channel, number) in content.blobs {
                known.private_releases.insert((channel.clone(), number));
                known.blobs.entry(id).or_default().push((channel, number));
            }
            tracing::info!(target: "origin.access", releases, private_blobs = known.blobs.len(), "private content read");
            *self
                .known
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = known;
        }
        if !lock(&self.grants).by_binding.is_empty() {
            self.drop_withdrawn(catalog, &mut watch).await?;
        }
        self.checked_ms.store(now_ms(), Ordering::Release);
        Ok(())
    }

    /// Drops the grants of devices revoked since the last look and of releases revoked.
    async fn drop_withdrawn(
        &self,
        catalog: &Catalog,
        watch: &mut Watch,
    ) -> Result<(), CatalogError> {
        let now = UnixTime((now_ms() / 1000) as i64);
        let since = watch
            .revocations_seen
            .map_or(UnixTime(0), |t| UnixTime(t.0 - REVOCATION_MARGIN_SECS));
        let devices: HashSet<DeviceHandle> = catalog
            .revoked_devices_since(since)
            .await?
            .into_iter()
            .collect();
        watch.revocations_seen = Some(now);
        let generation = catalog.release_generation().await?;
        let mut releases = HashSet::new();
        if watch.generation != Some(generation) {
            for release in catalog.releases(None).await? {
                if release.stage == Stage::Revoked {
                    releases.insert((release.channel, release.number));
                }
            }
            watch.generation = Some(generation);
        }
        if devices.is_empty() && releases.is_empty() {
            return Ok(());
        }
        let mut grants = lock(&self.grants);
        let before = grants.by_binding.len();
        grants.by_binding.retain(|_, (handle, held)| {
            held.retain(|(release, _)| !releases.contains(release));
            !held.is_empty() && !devices.contains(handle)
        });
        let dropped = before - grants.by_binding.len();
        if dropped > 0 {
            let Grants { by_binding, order } = &mut *grants;
            order.retain(|binding| by_binding.contains_key(binding));
            tracing::info!(
                target: "origin.access",
                connections = dropped,
                "grants withdrawn: device or release revoked"
            );
        }
        Ok(())
    }

    /// Whether blob `id` may be served on the connection whose channel binding is `binding`.
    /// A catalog failure before private content was ever read is an error (refuse).
    pub async fn blob(
        &self,
        catalog: &Catalog,
        binding: &[u8; 32],
        id: &ChunkId,
        now: UnixTime,
    ) -> Result<BlobAccess, CatalogError> {
        self.read(catalog, |known| {
            let Some(releases) = known.blobs.get(id) else {
                return BlobAccess::Public;
            };
            let grants = lock(&self.grants);
            let held = grants.by_binding.get(binding);
            let granted = held.is_some_and(|(_, held)| {
                held.iter()
                    .any(|(release, until)| now < *until && releases.contains(release))
            });
            if granted {
                BlobAccess::Granted
            } else {
                BlobAccess::Refused(held.map(|(handle, _)| *handle))
            }
        })
        .await
    }

    /// Whether the HTTP mirror must refuse blob `id` (private) or target `target`.
    pub async fn is_private_blob(
        &self,
        catalog: &Catalog,
        id: &ChunkId,
    ) -> Result<bool, CatalogError> {
        self.read(catalog, |known| known.blobs.contains_key(id))
            .await
    }

    /// Whether `target` is a private artifact.
    pub async fn is_private_target(
        &self,
        catalog: &Catalog,
        target: &str,
    ) -> Result<bool, CatalogError> {
        self.read(catalog, |known| known.targets.contains(target))
            .await
    }

    /// Whether `release` has private content. A release created since the catalog was last
    /// read (offered within [`REFRESH_EVERY`] of its creation) has the catalog read again
    /// first: else its check-ins would earn no grant, and its chunks would be refused on the
    /// very connections it was offered on once the next read saw them private.
    pub async fn has_private_content(
        &self,
        catalog: &Catalog,
        release: &ReleaseKey,
    ) -> Result<bool, CatalogError> {
        let (private, seen) = self
            .read(catalog, |known| {
                (
                    known.private_releases.contains(release),
                    known.all_releases.contains(release),
                )
            })
            .await?;
        if seen {
            return Ok(private);
        }
        self.refresh(catalog, true).await?;
        Ok(self
            .known
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .private_releases
            .contains(release))
    }

    /// `look` over the private content, read again first if due.
    async fn read<T>(
        &self,
        catalog: &Catalog,
        look: impl FnOnce(&Known) -> T,
    ) -> Result<T, CatalogError> {
        self.refresh_or_stale(catalog).await?;
        Ok(look(
            &self
                .known
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        ))
    }

    /// Refreshes; on a catalog failure, goes on with what was read before, if anything.
    async fn refresh_or_stale(&self, catalog: &Catalog) -> Result<(), CatalogError> {
        match self.refresh(catalog, false).await {
            Ok(()) => Ok(()),
            Err(error) => {
                let read_once = self
                    .known
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .releases
                    .is_some();
                if read_once {
                    tracing::warn!(target: "origin.access", %error, "private content not re-read; using the last read");
                    Ok(())
                } else {
                    Err(error)
                }
            }
        }
    }

    /// Grants the connection whose channel binding is `binding` release `release` until
    /// `until`, for the device `handle` that checked in on it.
    pub fn grant(
        &self,
        binding: [u8; 32],
        handle: DeviceHandle,
        release: ReleaseKey,
        until: UnixTime,
    ) {
        let mut grants = lock(&self.grants);
        if !grants.by_binding.contains_key(&binding) {
            grants.order.push_back(binding);
            while grants.order.len() > MAX_GRANTED_CONNECTIONS {
                if let Some(old) = grants.order.pop_front() {
                    grants.by_binding.remove(&old);
                }
            }
        }
        let entry = grants
            .by_binding
            .entry(binding)
            .or_insert_with(|| (handle, Vec::new()));
        entry.0 = handle;
        entry.1.retain(|(r, _)| *r != release);
        entry.1.push((release, until));
    }
}
