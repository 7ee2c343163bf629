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

#[test]
fn private_chunks_only_on_a_connection_with_an_offer() {
    let rt = runtime();
    let _guard = rt.enter();

    // The artifact, cut and indexed as the origin would.
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

    // The repository (signatures are not the peer's business: it verifies none).
    let expires = "2099-01-01T00:00:00Z";
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
    let files: Vec<(&str, Bytes)> = vec![
        (
            "timestamp.json",
            envelope(
                json!({"_type": "timestamp", "spec_version": "1.0.31", "version": 1, "expires": expires, "meta": {"snapshot.json": {"version": 1}}}),
            ),
        ),
        (
            "1.snapshot.json",
            envelope(
                json!({"_type": "snapshot", "spec_version": "1.0.31", "version": 1, "expires": expires, "meta": {"targets.json": {"version": 1}, "release.json": {"version": 1}}}),
            ),
        ),
        (
            "1.targets.json",
            envelope(
                json!({"_type": "targets", "spec_version": "1.0.31", "version": 1, "expires": expires, "targets": {"releases/stable/7.json": target(manifest.len())}}),
            ),
        ),
        (
            "1.release.json",
            envelope(
                json!({"_type": "targets", "spec_version": "1.0.31", "version": 1, "expires": expires, "targets": {"artifacts/secret.img": {
                    "length": image.len(), "hashes": { "sha256": done.sha256.to_hex() }, "custom": { "enigm": enigm }
                }}}),
            ),
        ),
        ("releases/stable/7.json", manifest),
    ];
    let up = Upstream::start(9, &blobs);
    let (director_key, director_root) = director();
    {
        let mut state = up.handler.0.lock().unwrap();
        for (name, bytes) in files {
            state.metadata.insert(name.to_string(), bytes);
        }
        state.offer = Some(Box::new(move |nonce: [u8; 32]| {
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
        }));
    }
    let dir = tempfile::tempdir().unwrap();
    let root_path = dir.path().join("director-root.json");
    std::fs::write(&root_path, &director_root).unwrap();
    let peer = Peer::start(
        &dir.path().join("peer"),
        &up,
        &[
            "--poll-secs",
            "1",
            "--director-root",
            root_path.to_str().unwrap(),
        ],
    );
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
    let peer = Peer::start(
        &dir.path().join("peer"),
        &up,
        &[
            "--poll-secs",
            "1",
            "--director-root",
            root_path.to_str().unwrap(),
        ],
    );
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
