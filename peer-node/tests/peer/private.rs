//! Private content end to end: an upstream whose repository marks an artifact private and whose
//! director answers relayed check-ins with offers. The peer prefetches the release, refuses its
//! chunks to a connection without a grant, refuses a check-in signed over another connection,
//! and serves the chunks on the connection whose relayed check-in got an offer.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ed25519_dalek::Signer as _;
use ota_core::chunk::{ChunkingParams, CutChunk, Ingest};
use ota_core::digest::{Blake3Hash, ChunkId, Sha256Hash};
use ota_core::director::{CheckInAnswer, DeviceHandle, Offer, OfferedArtifact};
use ota_core::rollout::Stage;
use ota_core::time::UnixTime;
use ota_core::tuf::InMemoryKey;
use ota_core::tuf::enigm::{Channel, ReleaseNumber};
use ota_core::tuf::metadata::{Common, RoleKeys, Root, sign_document};
use ota_net::client::Answer;
use ota_net::proto::{
    ChannelBinding, DeviceKey, Refusal, RelayKey, Relayed, Request, Response, SignedKind,
    SignedRequest,
};
use serde_json::json;

use crate::support::{Peer, Upstream, fetch_all, raw_request, runtime};

fn now() -> UnixTime {
    UnixTime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
    )
}

fn envelope(signed: serde_json::Value) -> Bytes {
    Bytes::from(serde_json::to_vec(&json!({ "signatures": [], "signed": signed })).unwrap())
}

fn director() -> (InMemoryKey, Vec<u8>) {
    let key = InMemoryKey::ed25519_from_seed([42; 32]);
    let id = key.public().key_id();
    let role = RoleKeys {
        keyids: vec![id.clone()],
        threshold: 1,
        extra: BTreeMap::new(),
    };
    let root = Root {
        common: Common::new("root", 1, UnixTime(4_000_000_000)),
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

/// A device's signed check-in over `binding` with the nonce the peer relayed.
fn check_in(client_binding: ChannelBinding, nonce: ota_net::proto::Nonce) -> SignedRequest {
    let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
    let mut request = SignedRequest {
        device_key: DeviceKey(key.verifying_key().to_bytes()),
        nonce,
        timestamp: now(),
        body: br#"{"installed":null}"#.to_vec(),
        signature: ota_net::proto::Signature([0; 64]),
    };
    request.signature = ota_net::proto::Signature(
        key.sign(&request.signing_bytes(SignedKind::CheckIn, &client_binding))
            .to_bytes(),
    );
    request
}

/// A private release `stable/7` as the origin publishes it: the artifact's chunks (then its
/// public chunk index, last), and the repository's files at metadata version `version`
/// (timestamp → snapshot → targets → release role; signatures are not the peer's business: it
/// verifies none).
struct PrivateRelease {
    blobs: Vec<(ChunkId, Bytes)>,
    chunk_ids: Vec<ChunkId>,
    files: Vec<(String, Bytes)>,
}

const EXPIRES: &str = "2099-01-01T00:00:00Z";

fn private_release(version: u64) -> PrivateRelease {
    let image: Vec<u8> = crate::support::chunks(9, 1, 600 * 1024)[0].1.to_vec();
    let mut blobs = Vec::new();
    let mut sink = |c: CutChunk<'_>| -> Result<(), std::convert::Infallible> {
        blobs.push((*c.id(), Bytes::copy_from_slice(c.bytes())));
        Ok(())
    };
    let mut ingest = Ingest::new(ChunkingParams::DEFAULT);
    ingest.update(&image, &mut sink).unwrap();
    let done = ingest.finish(&mut sink).unwrap();
    let index_id = done.chunks.chunk_index;
    blobs.push((index_id, Bytes::from(done.index.clone())));
    let chunk_ids: Vec<ChunkId> = blobs[..blobs.len() - 1].iter().map(|(id, _)| *id).collect();

    let mut enigm = serde_json::to_value(&done.chunks).unwrap();
    enigm["private"] = json!(true);
    let manifest = Bytes::from(
        serde_json::to_vec(&json!({
            "channel": "stable", "release": 7, "version": "2026.11.7", "models": ["enigm-one"],
            "artifacts": [{ "target": "artifacts/secret.img", "slot": "system" }]
        }))
        .unwrap(),
    );
    let target = |len: usize| json!({ "length": len, "hashes": { "sha256": Sha256Hash::of(b"x").to_hex() } });
    let files = vec![
        (
            "timestamp.json".to_string(),
            envelope(
                json!({"_type": "timestamp", "spec_version": "1.0.31", "version": version, "expires": EXPIRES, "meta": {"snapshot.json": {"version": version}}}),
            ),
        ),
        (
            format!("{version}.snapshot.json"),
            envelope(
                json!({"_type": "snapshot", "spec_version": "1.0.31", "version": version, "expires": EXPIRES, "meta": {"targets.json": {"version": version}, "release.json": {"version": version}}}),
            ),
        ),
        (
            format!("{version}.targets.json"),
            envelope(
                json!({"_type": "targets", "spec_version": "1.0.31", "version": version, "expires": EXPIRES, "targets": {"releases/stable/7.json": target(manifest.len())}}),
            ),
        ),
        (
            format!("{version}.release.json"),
            envelope(
                json!({"_type": "targets", "spec_version": "1.0.31", "version": version, "expires": EXPIRES, "targets": {"artifacts/secret.img": {
                    "length": image.len(), "hashes": { "sha256": done.sha256.to_hex() }, "custom": { "enigm": enigm }
                }}}),
            ),
        ),
        ("releases/stable/7.json".to_string(), manifest),
    ];
    PrivateRelease {
        blobs,
        chunk_ids,
        files,
    }
}

/// A repository at version 1 with no release yet.
fn empty_repository() -> Vec<(String, Bytes)> {
    vec![
        (
            "timestamp.json".to_string(),
            envelope(
                json!({"_type": "timestamp", "spec_version": "1.0.31", "version": 1, "expires": EXPIRES, "meta": {"snapshot.json": {"version": 1}}}),
            ),
        ),
        (
            "1.snapshot.json".to_string(),
            envelope(
                json!({"_type": "snapshot", "spec_version": "1.0.31", "version": 1, "expires": EXPIRES, "meta": {"targets.json": {"version": 1}}}),
            ),
        ),
        (
            "1.targets.json".to_string(),
            envelope(
                json!({"_type": "targets", "spec_version": "1.0.31", "version": 1, "expires": EXPIRES, "targets": {}}),
            ),
        ),
    ]
}

/// The director's answer to every check-in: an offer of `stable/7` for the request's nonce.
fn offers_stable_7(director_key: InMemoryKey) -> crate::support::OfferFn {
    Box::new(move |nonce: [u8; 32]| {
        let offer = Offer {
            type_: "offer".into(),
            handle: DeviceHandle([1; 32]),
            nonce,
            issued_at: now(),
            expires: now().plus_secs(600),
            channel: Channel("stable".into()),
            release: ReleaseNumber(7),
            manifest: "releases/stable/7.json".into(),
            artifacts: vec![OfferedArtifact {
                target: "artifacts/secret.img".into(),
                length: 1,
                sha256: Sha256Hash::of(b"x"),
                blake3: Blake3Hash::of(b"x"),
                slot: "system".into(),
            }],
            stage: Stage::Stable,
        };
        let signed: serde_json::Value =
            serde_json::from_slice(&offer.sign(&[&director_key])).unwrap();
        serde_json::to_vec(&CheckInAnswer::Offer(signed)).unwrap()
    })
}

/// The peer under test in `dir` (its data in `dir/peer`), with `extra` options, checking offers
/// against the director root `director_root` (written to `dir/director-root.json`).
fn peer_with_director(
    dir: &std::path::Path,
    up: &Upstream,
    director_root: &[u8],
    extra: &[&str],
) -> Peer {
    let root = dir.join("director-root.json");
    std::fs::write(&root, director_root).unwrap();
    let options = [extra, &["--director-root", root.to_str().unwrap()]].concat();
    Peer::start(&dir.join("peer"), up, &options)
}

#[test]
fn private_chunks_only_on_a_connection_with_an_offer() {
    let rt = runtime();
    let _guard = rt.enter();

    let PrivateRelease {
        blobs,
        chunk_ids,
        files,
    } = private_release(1);
    let up = Upstream::start(9, &blobs);
    let (director_key, director_root) = director();
    {
        let mut state = up.handler.0.lock().unwrap();
        state.metadata.extend(files);
        state.offer = Some(offers_stable_7(director_key));
    }
    let dir = tempfile::tempdir().unwrap();
    let peer = peer_with_director(dir.path(), &up, &director_root, &["--poll-secs", "1"]);
    let total: u64 = blobs.iter().map(|(_, b)| b.len() as u64).sum();
    let start = Instant::now();
    while peer.stat("stored_bytes") < total {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "not prefetched: {}",
            peer.stats()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    rt.block_on(async {
        // No grant: every private chunk is Missing; the public index is served.
        let stranger = peer.client().await;
        let (got, missing) = fetch_all(&stranger, &chunk_ids).await;
        assert!(got.is_empty());
        assert_eq!(missing.len(), chunk_ids.len());
        assert_eq!(peer.stat("private_refused"), chunk_ids.len() as u64);

        // A check-in signed over another connection's binding is refused by the peer itself.
        let device = peer.client().await;
        let nonce = device.challenge().await.unwrap();
        let forged = check_in(stranger.channel_binding(), nonce);
        match device.signed(SignedKind::CheckIn, forged).await {
            Ok(Answer::Refused(refusal)) => {
                assert_eq!(refusal.code, Refusal::FORBIDDEN);
                assert!(
                    refusal
                        .reason
                        .contains("does not verify over this connection"),
                    "{refusal}"
                );
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        let (got, _) = fetch_all(&device, &chunk_ids[..1]).await;
        assert!(got.is_empty(), "no grant from a refused check-in");

        // A good check-in on this connection, answered with an offer: the chunks are served,
        // on this connection only.
        let nonce = device.challenge().await.unwrap();
        let request = check_in(device.channel_binding(), nonce);
        let answer = device.signed(SignedKind::CheckIn, request).await.unwrap();
        assert!(matches!(answer, Answer::Signed(_)), "{answer:?}");
        let (got, missing) = fetch_all(&device, &chunk_ids).await;
        assert!(missing.is_empty());
        for (id, bytes) in &blobs[..blobs.len() - 1] {
            assert_eq!(&got[id], bytes);
        }
        assert_eq!(peer.stat("access_granted"), 1);
        let (got, _) = fetch_all(&stranger, &chunk_ids[..1]).await;
        assert!(got.is_empty(), "the grant is not the stranger's");

        // This peer as a regional peer: a site peer below relays a device's check-in. The
        // device signed over its own connection to the site peer; the site peer signs for its
        // connection to this one.
        let site_key = ota_net::quic::NodeKey::from_seed([60; 32]);
        let site_public = RelayKey(
            ota_net::quic::Identity::from_node_key(&site_key)
                .unwrap()
                .public_key(),
        );
        let below = peer.client().await;
        let device_binding = ChannelBinding([0x21; 32]);
        let request = check_in(device_binding, below.challenge().await.unwrap());

        // Attack: the site peer's message, made for its own connection, sent on another.
        let mut stolen = Relayed {
            kind: SignedKind::CheckIn,
            device_binding,
            request: request.clone(),
            relay_key: site_public,
            relay_signature: ota_net::proto::Signature([0; 64]),
        };
        stolen.relay_signature = ota_net::proto::Signature(
            ed25519_dalek::SigningKey::from_bytes(site_key.seed())
                .sign(&stolen.signing_bytes(&below.channel_binding()))
                .to_bytes(),
        );
        match raw_request(peer.quic, peer.pin, &Request::Relayed(stolen)).await {
            Response::Refused(refusal) => assert_eq!(
                (refusal.code, refusal.reason.as_str()),
                (
                    Refusal::FORBIDDEN,
                    "the relay's signature does not verify over this connection"
                )
            ),
            other => panic!("a relayed request signed for another connection: {other:?}"),
        }
        // Attack: the device's request passed off as another device connection's.
        match below
            .relayed(
                &site_key,
                SignedKind::CheckIn,
                ChannelBinding([0x22; 32]),
                request.clone(),
            )
            .await
            .unwrap()
        {
            Answer::Refused(refusal) => assert_eq!(
                (refusal.code, refusal.reason.as_str()),
                (
                    Refusal::FORBIDDEN,
                    "the device's signature does not verify over its binding"
                )
            ),
            other => panic!("a device signature over another binding: {other:?}"),
        }
        // A chain already as long as allowed is not made longer.
        let hops = (0..ota_net::proto::MAX_RELAY_HOPS as u8)
            .map(|n| ota_net::proto::RelayHop {
                relay_key: RelayKey([n; 32]),
                binding: ChannelBinding([n; 32]),
                relay_signature: ota_net::proto::Signature([n; 64]),
            })
            .collect();
        match below
            .relayed_via(
                &site_key,
                SignedKind::CheckIn,
                device_binding,
                request.clone(),
                hops,
            )
            .await
            .unwrap()
        {
            Answer::Refused(refusal) => assert_eq!(
                (refusal.code, refusal.reason.as_str()),
                (Refusal::BAD_REQUEST, "more than 4 relays before the origin")
            ),
            other => panic!("a fifth hop: {other:?}"),
        }
        assert_eq!(peer.stat("relay_refused"), 2);
        assert!(up.handler.0.lock().unwrap().relayed_via.is_empty());
        let (got, _) = fetch_all(&below, &chunk_ids[..1]).await;
        assert!(got.is_empty(), "no grant from a refused relay");

        // The good one: forwarded upstream naming the site peer as a hop, with the binding of
        // its connection here; the offer grants that connection.
        let answer = below
            .relayed(&site_key, SignedKind::CheckIn, device_binding, request)
            .await
            .unwrap();
        assert!(matches!(answer, Answer::Signed(_)), "{answer:?}");
        {
            let state = up.handler.0.lock().unwrap();
            assert_eq!(state.relayed_via.len(), 1);
            let hops = &state.relayed_via[0];
            assert_eq!(hops.len(), 1);
            assert_eq!(hops[0].relay_key, site_public);
            assert_eq!(hops[0].binding, below.channel_binding());
        }
        let (got, missing) = fetch_all(&below, &chunk_ids).await;
        assert!(missing.is_empty());
        assert_eq!(got.len(), chunk_ids.len());
        assert_eq!(peer.stat("access_granted"), 2);
        let (got, _) = fetch_all(&stranger, &chunk_ids[..1]).await;
        assert!(
            got.is_empty(),
            "the site peer's grant is not the stranger's"
        );
        below.close();
        stranger.close();
    });

    // Attack: restart the peer and ask at once, before it has walked the releases again (the
    // repository is out of its reach now: it cannot walk them at all). It still knows which
    // chunks it holds are private (kept on disk), so a stranger gets every one `Missing`.
    drop(peer);
    up.handler.0.lock().unwrap().metadata.clear();
    let peer = peer_with_director(dir.path(), &up, &director_root, &["--poll-secs", "1"]);
    assert!(peer.stat("stored_bytes") >= total, "{}", peer.stats());
    rt.block_on(async {
        let stranger = peer.client().await;
        let (got, missing) = fetch_all(&stranger, &chunk_ids).await;
        assert!(
            got.is_empty(),
            "a restarted peer served {} private chunks to a stranger",
            got.len()
        );
        assert_eq!(missing.len(), chunk_ids.len());
        stranger.close();
    });
}

/// Attack: a private release offered before the peer has walked it (created after the peer's
/// last poll; the next one is an hour away). The upstream gates its chunks as the origin does:
/// it serves them on the peer's connection from the moment it answers a check-in relayed there
/// with an offer, here a second before that answer reaches the peer. A stranger on the LAN who
/// read the chunk ids in the public chunk index asks for them during that second, and again
/// once the device holding the offer has fetched them: each time `Missing`. Without the walk on
/// offer and the taint of chunks fetched while a check-in is in flight, the peer fetched them
/// on the stranger's request, stored them as public and served them.
#[test]
fn a_release_offered_before_the_peer_walked_it_is_not_served_to_strangers() {
    let rt = runtime();
    let _guard = rt.enter();

    let release = private_release(2);
    let up = Upstream::start(9, &release.blobs);
    let (director_key, director_root) = director();
    up.handler
        .0
        .lock()
        .unwrap()
        .metadata
        .extend(empty_repository());
    let dir = tempfile::tempdir().unwrap();
    let peer = peer_with_director(dir.path(), &up, &director_root, &["--poll-secs", "3600"]);
    // The peer's one poll has walked the empty repository.
    let start = Instant::now();
    while peer.stat("metadata_up") < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{}",
            peer.stats()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The release is published and offered.
    {
        let mut state = up.handler.0.lock().unwrap();
        state.metadata.extend(release.files.clone());
        state.gated.extend(release.chunk_ids.iter().copied());
        state.offer = Some(offers_stable_7(director_key));
        state.answer_delay = Duration::from_secs(1);
    }
    let ids = release.chunk_ids.clone();
    rt.block_on(async {
        let stranger = peer.client().await;
        // Before any check-in, the upstream refuses the peer too.
        let (got, _) = fetch_all(&stranger, &ids).await;
        assert!(got.is_empty(), "served before any offer");

        let device = peer.client().await;
        let nonce = device.challenge().await.unwrap();
        let request = check_in(device.channel_binding(), nonce);
        let checking_in = {
            let device = device.clone();
            tokio::spawn(async move { device.signed(SignedKind::CheckIn, request).await })
        };
        // The upstream has granted the peer's connection; its answer is on the way.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(peer.stat("offer_walks"), 0, "walked before the answer");
        let (got, missing) = fetch_all(&stranger, &ids).await;
        assert!(
            got.is_empty(),
            "{} private chunks served to a stranger while the offer was in flight",
            got.len()
        );
        assert_eq!(missing.len(), ids.len());
        assert!(
            up.sent(&ids[0]) >= 1,
            "the attack did not reach the upstream's grant: the peer fetched nothing"
        );

        let answer = checking_in.await.unwrap().unwrap();
        assert!(matches!(answer, Answer::Signed(_)), "{answer:?}");
        let (got, missing) = fetch_all(&device, &ids).await;
        assert!(
            missing.is_empty(),
            "{} missing to the device",
            missing.len()
        );
        for (id, bytes) in &release.blobs[..release.blobs.len() - 1] {
            assert_eq!(&got[id], bytes);
        }

        // Held now, and known private: still nothing for the stranger.
        let (got, _) = fetch_all(&stranger, &ids).await;
        assert!(got.is_empty(), "served to a stranger after the offer");
        assert_eq!(peer.stat("offer_walks"), 1);
        assert!(peer.stat("private_refused") >= 2 * ids.len() as u64);
        stranger.close();
        device.close();
    });
}

/// A peer whose data upstreams are a parent peer first and the origin second relays check-ins
/// to the origin on a connection of its own, where the origin's grants are. Neither data
/// connection holds a grant, so the private chunks come on the relay connection: once each,
/// to the device that checked in, never to a stranger.
#[test]
fn private_chunks_come_on_the_relay_connection_when_data_upstreams_are_mixed() {
    let rt = runtime();
    let _guard = rt.enter();

    let release = private_release(1);
    let (director_key, director_root) = director();
    let origin = Upstream::start(9, &release.blobs);
    let parent = Upstream::start(10, &release.blobs);
    for (upstream, offers) in [(&origin, true), (&parent, false)] {
        let mut state = upstream.handler.0.lock().unwrap();
        state.metadata.extend(release.files.clone());
        state.gated.extend(release.chunk_ids.iter().copied());
        if offers {
            state.offer = Some(offers_stable_7(director_key.clone()));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let peer = peer_with_director(
        dir.path(),
        &origin,
        &director_root,
        &["--upstream", &parent.arg(), "--upstream", &origin.arg()],
    );
    // The release is walked (its private chunks known) once the index has been fetched.
    let start = Instant::now();
    while peer.stat("index_bytes_up") == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{}",
            peer.stats()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let ids = release.chunk_ids.clone();
    rt.block_on(async {
        let device = peer.client().await;
        let nonce = device.challenge().await.unwrap();
        let request = check_in(device.channel_binding(), nonce);
        let answer = device.signed(SignedKind::CheckIn, request).await.unwrap();
        assert!(matches!(answer, Answer::Signed(_)), "{answer:?}");
        let (got, missing) = fetch_all(&device, &ids).await;
        assert!(
            missing.is_empty(),
            "{} missing to the device",
            missing.len()
        );
        for (id, bytes) in &release.blobs[..release.blobs.len() - 1] {
            assert_eq!(&got[id], bytes);
        }
        let stranger = peer.client().await;
        let (got, _) = fetch_all(&stranger, &ids).await;
        assert!(got.is_empty(), "served to a stranger");
        stranger.close();
        device.close();
    });
    for id in &ids {
        assert_eq!(parent.sent(id), 0, "the parent has no grant");
        assert_eq!(
            origin.sent(id),
            1,
            "chunk {id} crossed the uplink more than once"
        );
    }
}
