//! Private content: chunks of artifacts whose signed target says `custom.enigm.private: true`
//! are served only on a connection that holds a **grant** for a release containing them.
//!
//! A connection earns a grant by a check-in relayed through this peer on that very connection
//! (docs/PROTOCOL.md, "Private content at a peer"):
//!
//! 1. the device's `CheckIn` arrives on the device↔peer connection, signed by the device key
//!    over that connection's channel binding: the peer checks the signature itself (strict
//!    Ed25519 over `signing_bytes(CheckIn, binding)`), which proves possession of the key on
//!    this connection;
//! 2. the peer relays it to the origin, which checks it again (enrollment, nonce, freshness) and
//!    answers with a director-signed offer, or no offer;
//! 3. the peer accepts the offer only if it answers this request's nonce, has not expired, and
//!    (when a director root is configured) carries the director's signatures; the connection is
//!    then granted the offered release until the offer expires or the connection ends.
//!
//! A private chunk requested without a grant is answered `Missing` (and counted): the device
//! learns nothing beyond what a missing chunk tells it.
//!
//! ## Releases offered before the peer has walked them
//!
//! The peer learns which chunks are private by walking a release's metadata (`prefetch.rs`);
//! the upstream learns to serve them to the peer's connection from the offers it answers. A
//! release can be offered before the peer's poll has walked it (it was just created, or it is
//! not its channel's newest), and from the moment the upstream answers, it serves that
//! release's private chunks on the peer's connection. A chunk fetched for anyone in that window
//! would be stored as public and served to anyone. So the peer **settles** every grant it helps
//! make upstream:
//!
//! - while a relayed check-in is in flight, or an offered release is not yet walked, the peer is
//!   *unsettled*, and every chunk that arrives from upstream in that time is **tainted**;
//! - an offer for a release the peer has not walked starts a walk of that very release
//!   (`Walker::offered`); the release is *walked* once its private chunks are marked;
//! - a tainted chunk is served only once the peer is settled again (then the marks say whether
//!   it is private, and the gate decides); if that does not happen within [`SETTLE_WAIT`], it
//!   is answered `Missing`;
//! - a release whose walk keeps failing holds the peer unsettled until its offer expires (the
//!   upstream's grant ends then too), failing closed: chunks fetched meanwhile are refused.
//!
//! A chunk served by the upstream before the peer heard of the offer was served under a grant
//! the upstream made for a check-in the peer relayed, which was in flight until the peer heard
//! the answer: so it arrived while the peer was unsettled, or after the walk had marked it.
//! A relayed check-in that fails without an answer may still have earned a grant upstream for a
//! release the peer cannot name: the peer then closes that upstream connection (the grant is
//! bound to it) before it settles.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use ota_core::cache::ReleaseKey;
use ota_core::digest::ChunkId;
use ota_core::director::{CheckInAnswer, DeviceHandle, Offer};
use ota_core::time::UnixTime;
use ota_core::tuf::metadata::{Envelope, Root};
use ota_net::proto::{ChannelBinding, RelayKey, Signature, SignedKind, SignedRequest};

/// A connection, named by its channel binding (the TLS exporter value): unique to one TLS
/// session, so a grant cannot pass to a later connection (quinn's connection ids may be
/// reused once a connection is gone).
pub type ConnKey = [u8; 32];

/// Longest a request for a tainted chunk waits for the peer to settle before it is answered
/// `Missing`.
pub const SETTLE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Most tainted chunks remembered one by one; beyond it, every chunk counts as tainted until the
/// peer settles.
const MAX_TAINTED: usize = 1 << 20;

/// Most releases remembered as walked (beyond it, the set is cleared: a release offered again
/// is walked again, which costs a few metadata reads).
const MAX_WALKED: usize = 65_536;

/// Most grants held at once (each is a few dozen bytes; beyond it, the oldest connections'
/// grants are dropped and those devices check in again).
const MAX_GRANTS: usize = 100_000;

/// Why an access grant was not given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// The device's signature over this connection does not verify.
    #[error("the device's signature does not verify over this connection")]
    BadSignature,
    /// The origin's answer is not an offer (or not parseable).
    #[error("no offer: {0}")]
    NoOffer(String),
    /// The offer does not answer this request.
    #[error("the offer answers another check-in")]
    NonceMismatch,
    /// The offer has expired.
    #[error("the offer expired")]
    Expired,
    /// The offer's signatures do not meet the director root.
    #[error("the offer is not signed by the director: {0}")]
    Unsigned(String),
}

/// The device handle of the last offer seen on a connection, and the releases granted until
/// when.
type Held = (Option<DeviceHandle>, Vec<(ReleaseKey, UnixTime)>);

#[derive(Debug, Default)]
struct Grants {
    /// Connection id → what it holds.
    by_conn: HashMap<ConnKey, Held>,
    order: std::collections::VecDeque<ConnKey>,
}

/// Whether every grant the peer helped make upstream is for a walked release (module docs).
#[derive(Debug, Default)]
struct Settling {
    /// Relayed check-ins whose answer has not been judged yet.
    relays: usize,
    /// Offered releases not walked yet, each until its offer expires.
    unwalked: HashMap<ReleaseKey, UnixTime>,
    /// Releases whose private chunks are marked.
    walked: HashSet<ReleaseKey>,
    /// Chunks that arrived from upstream while unsettled.
    tainted: HashSet<ChunkId>,
    /// More chunks arrived while unsettled than `tainted` keeps: all count as tainted.
    overflow: bool,
}

impl Settling {
    fn settled(&self) -> bool {
        self.relays == 0 && self.unwalked.is_empty()
    }
}

/// A relayed check-in in flight: the peer is unsettled until it is dropped (after the answer's
/// offer, if any, has been noted with [`Access::offered`]).
#[derive(Debug)]
pub struct RelayInFlight<'a>(&'a Access);

impl Drop for RelayInFlight<'_> {
    fn drop(&mut self) {
        let mut settling = lock(&self.0.settling);
        settling.relays -= 1;
        self.0.settle_if_done(&mut settling);
    }
}

/// The private chunks and the grants.
#[derive(Debug)]
pub struct Access {
    director_root: Option<Root>,
    private: Mutex<HashMap<ChunkId, HashSet<ReleaseKey>>>,
    grants: Mutex<Grants>,
    settling: Mutex<Settling>,
    /// Woken when the peer settles.
    settled: tokio::sync::Notify,
}

/// Checks a device's signature over the connection it arrived on (strict Ed25519).
pub fn device_signature_ok(
    kind: SignedKind,
    request: &SignedRequest,
    binding: &ChannelBinding,
) -> bool {
    let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&request.device_key.0) else {
        return false;
    };
    let signature = ed25519_dalek::Signature::from_bytes(&request.signature.0);
    key.verify_strict(&request.signing_bytes(kind, binding), &signature)
        .is_ok()
}

/// Checks a relay's signature (strict Ed25519, no weak key) over `message`: the bytes it signs
/// for the connection the request arrived on.
pub fn relay_signature_ok(key: &RelayKey, signature: &Signature, message: &[u8]) -> bool {
    let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&key.0) else {
        return false;
    };
    let signature = ed25519_dalek::Signature::from_bytes(&signature.0);
    !key.is_weak() && key.verify_strict(message, &signature).is_ok()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Access {
    /// Access control with an optional director root (the director's `root.json`) against
    /// which offers are checked.
    pub fn new(director_root: Option<&[u8]>) -> anyhow::Result<Self> {
        let director_root = director_root
            .map(|bytes| {
                Envelope::parse("root", "director root.json", bytes, 1024 * 1024)?.role::<Root>()
            })
            .transpose()?;
        Ok(Self {
            director_root,
            private: Mutex::new(HashMap::new()),
            grants: Mutex::new(Grants::default()),
            settling: Mutex::new(Settling::default()),
            settled: tokio::sync::Notify::new(),
        })
    }

    /// A relayed check-in is about to go upstream.
    pub fn relay_started(&self) -> RelayInFlight<'_> {
        lock(&self.settling).relays += 1;
        RelayInFlight(self)
    }

    /// An upstream answer offered `release` until `until`: returns whether the peer must walk
    /// it (not walked, and no walk under way).
    pub fn offered(&self, release: &ReleaseKey, until: UnixTime) -> bool {
        let mut settling = lock(&self.settling);
        if settling.walked.contains(release) {
            return false;
        }
        match settling.unwalked.get_mut(release) {
            Some(held) => {
                *held = (*held).max(until);
                false
            }
            None => {
                settling.unwalked.insert(release.clone(), until);
                true
            }
        }
    }

    /// `release`'s private chunks are marked (by the poll's walk or an offer's).
    pub fn walked(&self, release: &ReleaseKey) {
        let mut settling = lock(&self.settling);
        if settling.walked.len() >= MAX_WALKED {
            settling.walked.clear();
        }
        settling.walked.insert(release.clone());
        settling.unwalked.remove(release);
        self.settle_if_done(&mut settling);
    }

    /// Whether `release`'s private chunks are marked.
    pub fn is_walked(&self, release: &ReleaseKey) -> bool {
        lock(&self.settling).walked.contains(release)
    }

    /// Gives up on walking `release` if its offer has expired at `now` (the upstream's grant
    /// with it); returns whether it is still to be walked.
    pub fn still_unwalked(&self, release: &ReleaseKey, now: UnixTime) -> bool {
        let mut settling = lock(&self.settling);
        match settling.unwalked.get(release) {
            Some(until) if now >= *until => {
                settling.unwalked.remove(release);
                self.settle_if_done(&mut settling);
                false
            }
            Some(_) => true,
            None => false,
        }
    }

    /// A chunk arrived from upstream (before anyone is served it): tainted if unsettled.
    pub fn arrived(&self, id: ChunkId) {
        let mut settling = lock(&self.settling);
        if settling.settled() {
            return;
        }
        if settling.tainted.len() < MAX_TAINTED {
            settling.tainted.insert(id);
        } else {
            settling.overflow = true;
        }
    }

    /// Whether a chunk arrived while unsettled, and the peer has not settled since.
    pub fn tainted(&self, id: &ChunkId) -> bool {
        let settling = lock(&self.settling);
        settling.overflow || settling.tainted.contains(id)
    }

    /// Whether the peer is settled now.
    pub fn is_settled(&self) -> bool {
        lock(&self.settling).settled()
    }

    /// Waits until the peer is settled, at most `within`; whether it is.
    pub async fn settle(&self, within: std::time::Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.settled.notified();
                if self.is_settled() {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(within, wait).await.is_ok()
    }

    fn settle_if_done(&self, settling: &mut Settling) {
        if settling.settled() {
            settling.tainted.clear();
            settling.overflow = false;
            self.settled.notify_waiters();
        }
    }

    /// Records the private chunks of a release; returns those not recorded for it before.
    pub fn mark_private(&self, release: &ReleaseKey, chunks: &[ChunkId]) -> Vec<ChunkId> {
        let mut private = lock(&self.private);
        chunks
            .iter()
            .filter(|id| private.entry(**id).or_default().insert(release.clone()))
            .copied()
            .collect()
    }

    /// Whether a chunk is private (of an artifact marked private in a walked release).
    pub fn is_private(&self, id: &ChunkId) -> bool {
        lock(&self.private).contains_key(id)
    }

    /// Whether a chunk may be served on connection `conn` at `now`.
    pub fn allowed(&self, conn: &ConnKey, id: &ChunkId, now: UnixTime) -> bool {
        self.gate(conn, id, now).is_ok()
    }

    /// [`Self::allowed`], saying on a refusal which device's offer the connection holds
    /// (`None`: no check-in was relayed on it), for the log.
    pub fn gate(
        &self,
        conn: &ConnKey,
        id: &ChunkId,
        now: UnixTime,
    ) -> Result<(), Option<DeviceHandle>> {
        let private = lock(&self.private);
        let Some(releases) = private.get(id) else {
            return Ok(());
        };
        let grants = lock(&self.grants);
        let held = grants.by_conn.get(conn);
        let granted = held.is_some_and(|(_, held)| {
            held.iter()
                .any(|(release, until)| now < *until && releases.contains(release))
        });
        if granted {
            Ok(())
        } else {
            Err(held.and_then(|(handle, _)| *handle))
        }
    }

    /// The release an upstream answer offers, and until when (at most an hour from `now`),
    /// whether or not its signatures and nonce would earn a grant here: the upstream may have
    /// granted its connection to this peer on it all the same.
    pub fn offer_in_answer(answer: &[u8], now: UnixTime) -> Option<(ReleaseKey, UnixTime)> {
        let CheckInAnswer::Offer(envelope) = serde_json::from_slice(answer).ok()? else {
            return None;
        };
        let signed = envelope.get("signed")?;
        let offer: Offer = serde_json::from_value(signed.clone()).ok()?;
        let release = ReleaseKey(format!("{}/{}", offer.channel.0, offer.release.0));
        Some((release, offer.expires.min(now.plus_secs(3600))))
    }

    /// Judges the origin's answer to a check-in relayed for connection `conn`: grants the
    /// offered release if the offer is good for this request. Returns the release granted.
    pub fn grant_from_answer(
        &self,
        conn: ConnKey,
        request: &SignedRequest,
        answer: &[u8],
        now: UnixTime,
    ) -> Result<ReleaseKey, AccessError> {
        let answer: CheckInAnswer =
            serde_json::from_slice(answer).map_err(|e| AccessError::NoOffer(e.to_string()))?;
        let CheckInAnswer::Offer(envelope) = answer else {
            return Err(AccessError::NoOffer("the director made no offer".into()));
        };
        let bytes =
            serde_json::to_vec(&envelope).map_err(|e| AccessError::NoOffer(e.to_string()))?;
        let envelope = Envelope::parse("offer", "offer.json", &bytes, 64 * 1024)
            .map_err(|e| AccessError::NoOffer(e.to_string()))?;
        if let Some(root) = &self.director_root {
            root.verify_role("targets", "offer", &envelope)
                .map_err(|e| AccessError::Unsigned(e.to_string()))?;
        }
        let offer: Offer = serde_json::from_value(envelope.signed().clone())
            .map_err(|e| AccessError::NoOffer(e.to_string()))?;
        if offer.nonce != request.nonce.0 {
            return Err(AccessError::NonceMismatch);
        }
        if now >= offer.expires {
            return Err(AccessError::Expired);
        }
        let release = ReleaseKey(format!("{}/{}", offer.channel.0, offer.release.0));
        self.grant(conn, release.clone(), offer.expires);
        if let Some(held) = lock(&self.grants).by_conn.get_mut(&conn) {
            held.0 = Some(offer.handle);
        }
        Ok(release)
    }

    /// Grants connection `conn` a release until `until`.
    pub fn grant(&self, conn: ConnKey, release: ReleaseKey, until: UnixTime) {
        let mut grants = lock(&self.grants);
        if !grants.by_conn.contains_key(&conn) {
            grants.order.push_back(conn);
            while grants.order.len() > MAX_GRANTS {
                if let Some(old) = grants.order.pop_front() {
                    grants.by_conn.remove(&old);
                }
            }
        }
        let (_, held) = grants.by_conn.entry(conn).or_default();
        held.retain(|(r, _)| *r != release);
        held.push((release, until));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn private_chunks_need_a_live_grant_on_the_same_connection() {
        let access = Access::new(None).unwrap();
        let public = ChunkId::of(b"public");
        let secret = ChunkId::of(b"secret");
        let release = ReleaseKey("stable/7".into());
        access.mark_private(&release, &[secret]);
        let now = UnixTime(1_000);
        assert!(access.allowed(&[1; 32], &public, now));
        assert!(!access.allowed(&[1; 32], &secret, now));
        access.grant([1; 32], ReleaseKey("stable/6".into()), UnixTime(2_000));
        assert!(
            !access.allowed(&[1; 32], &secret, now),
            "a grant for another release"
        );
        access.grant([1; 32], release.clone(), UnixTime(2_000));
        assert!(access.allowed(&[1; 32], &secret, now));
        assert!(
            !access.allowed(&[2; 32], &secret, now),
            "another connection"
        );
        assert!(
            !access.allowed(&[1; 32], &secret, UnixTime(2_000)),
            "expired"
        );
    }

    /// A chunk that arrives while a check-in is in flight, or while an offered release is not
    /// walked, waits for the walk; one that arrives settled does not. A walk that never
    /// succeeds holds the peer unsettled until the offer expires (fail closed).
    #[tokio::test]
    async fn chunks_fetched_while_an_offer_is_unwalked_wait_for_the_walk() {
        use std::time::Duration;
        let access = std::sync::Arc::new(Access::new(None).unwrap());
        let (early, late, before) = (ChunkId::of(b"1"), ChunkId::of(b"2"), ChunkId::of(b"3"));
        let release = ReleaseKey("stable/7".into());
        access.arrived(before);
        assert!(!access.tainted(&before), "nothing in flight");

        let in_flight = access.relay_started();
        access.arrived(early);
        assert!(access.tainted(&early));
        assert!(access.offered(&release, UnixTime(2_000)), "walk it");
        assert!(
            !access.offered(&release, UnixTime(2_100)),
            "one walk at a time"
        );
        drop(in_flight);
        access.arrived(late);
        assert!(access.tainted(&early) && access.tainted(&late));
        assert!(!access.tainted(&before));
        assert!(!access.settle(Duration::from_millis(50)).await, "unwalked");

        // The walk marks the release's private chunk, and wakes whoever waits.
        let waiter = tokio::spawn({
            let access = access.clone();
            async move { access.settle(Duration::from_secs(60)).await }
        });
        tokio::task::yield_now().await;
        access.mark_private(&release, &[early]);
        access.walked(&release);
        assert!(waiter.await.unwrap());
        assert!(!access.tainted(&early) && !access.tainted(&late));
        assert!(
            !access.allowed(&[1; 32], &early, UnixTime(1_000)),
            "private"
        );
        assert!(access.allowed(&[1; 32], &late, UnixTime(1_000)), "public");

        // A walked release offered again needs no walk.
        let in_flight = access.relay_started();
        assert!(!access.offered(&release, UnixTime(3_000)));
        drop(in_flight);
        assert!(access.is_settled());

        // A release whose walk never succeeds: unsettled until its offer expires.
        let other = ReleaseKey("beta/2".into());
        assert!(access.offered(&other, UnixTime(2_000)));
        access.arrived(late);
        assert!(access.still_unwalked(&other, UnixTime(1_999)));
        assert!(access.tainted(&late));
        assert!(!access.still_unwalked(&other, UnixTime(2_000)));
        assert!(access.is_settled() && !access.tainted(&late));
    }

    fn director() -> (ota_core::tuf::InMemoryKey, Vec<u8>) {
        use ota_core::tuf::metadata::{Common, RoleKeys, sign_document};
        use std::collections::BTreeMap;
        let key = ota_core::tuf::InMemoryKey::ed25519_from_seed([42; 32]);
        let id = key.public().key_id();
        let role = RoleKeys {
            keyids: vec![id.clone()],
            threshold: 1,
            extra: BTreeMap::new(),
        };
        let root = Root {
            common: Common::new("root", 1, UnixTime(2_000_000_000)),
            consistent_snapshot: true,
            keys: BTreeMap::from([(id, key.public())]),
            roles: ["root", "timestamp", "snapshot", "targets"]
                .into_iter()
                .map(|r| (r.to_string(), role.clone()))
                .collect(),
            release_authority: None,
            extra: BTreeMap::new(),
        };
        let bytes = sign_document(&root, &[&key]);
        (key, bytes)
    }

    fn offer(nonce: [u8; 32]) -> Offer {
        use ota_core::director::{DeviceHandle, OfferedArtifact};
        use ota_core::tuf::enigm::{Channel, ReleaseNumber};
        Offer {
            type_: "offer".into(),
            handle: DeviceHandle([1; 32]),
            nonce,
            issued_at: UnixTime(1_000),
            expires: UnixTime(1_600),
            channel: Channel("stable".into()),
            release: ReleaseNumber(7),
            manifest: "releases/stable/7.json".into(),
            artifacts: vec![OfferedArtifact {
                target: "artifacts/system-7.img".into(),
                length: 10,
                sha256: ota_core::digest::Sha256Hash::of(b"x"),
                blake3: ota_core::digest::Blake3Hash::of(b"x"),
                slot: "system".into(),
            }],
            stage: ota_core::rollout::Stage::Stable,
        }
    }

    fn answer(signed: &[u8]) -> Vec<u8> {
        serde_json::to_vec(&CheckInAnswer::Offer(
            serde_json::from_slice(signed).unwrap(),
        ))
        .unwrap()
    }

    /// A device key signs a check-in over connection binding `binding`.
    fn request(binding: &ChannelBinding, nonce: [u8; 32]) -> SignedRequest {
        use ed25519_dalek::Signer as _;
        use ota_net::proto::{DeviceKey, Nonce, Signature};
        let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
        let mut request = SignedRequest {
            device_key: DeviceKey(key.verifying_key().to_bytes()),
            nonce: Nonce(nonce),
            timestamp: UnixTime(1_050),
            body: b"{}".to_vec(),
            signature: Signature([0; 64]),
        };
        request.signature = Signature(
            key.sign(&request.signing_bytes(SignedKind::CheckIn, binding))
                .to_bytes(),
        );
        request
    }

    #[test]
    fn the_device_signature_must_cover_this_connection() {
        let here = ChannelBinding([3; 32]);
        let request = request(&here, [7; 32]);
        assert!(device_signature_ok(SignedKind::CheckIn, &request, &here));
        assert!(!device_signature_ok(
            SignedKind::CheckIn,
            &request,
            &ChannelBinding([4; 32])
        ));
        assert!(!device_signature_ok(SignedKind::Report, &request, &here));
    }

    #[test]
    fn a_grant_needs_a_director_signed_offer_for_this_nonce_unexpired() {
        let (key, root) = director();
        let access = Access::new(Some(&root)).unwrap();
        let secret = ChunkId::of(b"secret");
        access.mark_private(&ReleaseKey("stable/7".into()), &[secret]);
        let here = ChannelBinding([3; 32]);
        let now = UnixTime(1_100);

        let forged =
            offer([7; 32]).sign(&[&ota_core::tuf::InMemoryKey::ed25519_from_seed([1; 32])]);
        assert!(matches!(
            access.grant_from_answer([9; 32], &request(&here, [7; 32]), &answer(&forged), now),
            Err(AccessError::Unsigned(_))
        ));
        let other_nonce = offer([8; 32]).sign(&[&key]);
        assert_eq!(
            access.grant_from_answer(
                [9; 32],
                &request(&here, [7; 32]),
                &answer(&other_nonce),
                now
            ),
            Err(AccessError::NonceMismatch)
        );
        let good = offer([7; 32]).sign(&[&key]);
        assert_eq!(
            access.grant_from_answer(
                [9; 32],
                &request(&here, [7; 32]),
                &answer(&good),
                UnixTime(1_600)
            ),
            Err(AccessError::Expired)
        );
        let none = serde_json::to_vec(&CheckInAnswer::NoOffer {
            reason: "not yet".into(),
        })
        .unwrap();
        assert!(matches!(
            access.grant_from_answer([9; 32], &request(&here, [7; 32]), &none, now),
            Err(AccessError::NoOffer(_))
        ));
        assert!(
            !access.allowed(&[9; 32], &secret, now),
            "no grant from any of those"
        );
        assert_eq!(
            access.grant_from_answer([9; 32], &request(&here, [7; 32]), &answer(&good), now),
            Ok(ReleaseKey("stable/7".into()))
        );
        assert!(access.allowed(&[9; 32], &secret, now));
        assert!(
            !access.allowed(&[10; 32], &secret, now),
            "only on the connection that checked in"
        );
        // A refusal names the handle of the offer seen on the connection, if any.
        access.mark_private(&ReleaseKey("stable/8".into()), &[ChunkId::of(b"other")]);
        assert_eq!(
            access.gate(&[9; 32], &ChunkId::of(b"other"), now),
            Err(Some(DeviceHandle([1; 32])))
        );
        assert_eq!(access.gate(&[10; 32], &secret, now), Err(None));
    }
}
