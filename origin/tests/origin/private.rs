//! Private content at the origin (`release create --private SLOT`), each attack asserting the
//! exact refusal: over QUIC a private chunk is answered `Missing` (as a chunk the origin does
//! not hold) unless the connection made a check-in that earned an offer for a release
//! containing it, and, where the channel requires it, a passed attestation; the HTTP mirror
//! never serves one (404) but serves the metadata saying it is private.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::path::Path;

use ota_core::chunk::{ChunkingParams, CutChunk, Ingest};
use ota_core::digest::ChunkId;
use ota_core::director::{CheckInAnswer, DeviceHandle};
use ota_core::tuf::InMemoryKey;
use ota_device::attest::check_in_with_evidence;
use ota_net::client::{Answer, Client};
use ota_net::proto::{ChannelBinding, SignedKind};
use ota_net::quic::{Identity, NodeKey};

use crate::e2e::{Device, Served, ceremony, check_in_body, cosign, init, now, ok, serve};

/// The chunk ids of `bytes` as `release create` cuts them.
fn chunk_ids(bytes: &[u8]) -> (BTreeSet<ChunkId>, ChunkId) {
    let mut ids = BTreeSet::new();
    let mut ingest = Ingest::new(ChunkingParams::DEFAULT);
    let mut sink = |c: CutChunk<'_>| {
        ids.insert(*c.id());
        Ok::<(), Infallible>(())
    };
    ingest.update(bytes, &mut sink).unwrap();
    let done = ingest.finish(&mut sink).unwrap();
    (ids, done.chunks.chunk_index)
}

pub(crate) fn image(seed: &str, len: usize) -> Vec<u8> {
    ota_tests::test_image(seed, len)
}

/// Creates, signs, registers, validates and promotes release 1 of `channel` with `artifacts`
/// (slot, file) and `extra` create options.
pub(crate) fn publish(
    data: &Path,
    temp: &Path,
    (channel, version): (&str, &str),
    artifacts: &[(&str, &Path)],
    extra: &[&str],
) {
    let data_s = data.to_str().unwrap();
    let specs: Vec<String> = artifacts
        .iter()
        .map(|(slot, path)| format!("{slot}={}", path.display()))
        .collect();
    let mut args = vec![
        "release",
        "create",
        "--data",
        data_s,
        "--channel",
        channel,
        "--release",
        "1",
        "--version",
        version,
        "--model",
        "enigm-one",
    ];
    for spec in &specs {
        args.extend(["--artifact", spec]);
    }
    args.extend(extra);
    ok(&args);
    let requests = data.join("requests").join(channel).join("1");
    let (release, targets) = (
        temp.join(format!("{channel}.release.signed")),
        temp.join(format!("{channel}.targets.signed")),
    );
    cosign(
        &requests.join("release.request.json"),
        "release",
        &InMemoryKey::ed25519_from_seed([3; 32]),
        &release,
    );
    cosign(
        &requests.join("targets.request.json"),
        "targets",
        &InMemoryKey::p256_from_scalar([2; 32]).unwrap(),
        &targets,
    );
    let id = ["--data", data_s, "--channel", channel, "--release", "1"];
    ok(&[
        &["release", "register"][..],
        &id,
        &[
            "--signed-release",
            release.to_str().unwrap(),
            "--signed-targets",
            targets.to_str().unwrap(),
        ],
    ]
    .concat());
    ok(&[&["release", "validate"][..], &id].concat());
    ok(&[&["release", "promote"][..], &id, &["--stable"]].concat());
}

pub(crate) fn enroll(data: &Path, device: &Device, channel: &str) -> DeviceHandle {
    let handle = ok(&[
        "device",
        "enroll",
        "--data",
        data.to_str().unwrap(),
        "--public-key",
        &device.public_hex(),
        "--channel",
        channel,
        "--model",
        "enigm-one",
    ]);
    DeviceHandle(hex::decode(handle.trim()).unwrap().try_into().unwrap())
}

/// A check-in of `device` on `client`'s connection with `body`; true when offered.
async fn check_in_on(client: &Client, device: &Device, body: Vec<u8>) -> bool {
    let nonce = client.challenge().await.unwrap();
    let request = device.sign(client, SignedKind::CheckIn, nonce, now(), body);
    match client.signed(SignedKind::CheckIn, request).await.unwrap() {
        Answer::Signed(body) => matches!(
            serde_json::from_slice::<CheckInAnswer>(&body).unwrap(),
            CheckInAnswer::Offer(_)
        ),
        Answer::Refused(refusal) => panic!("check-in refused: {refusal}"),
    }
}

/// Asks for `ids` on `client`'s connection: which came back with bytes, which `Missing`.
async fn fetch(client: &Client, ids: &BTreeSet<ChunkId>) -> (usize, usize) {
    let mut stream = client
        .blobs(ids.iter().copied().collect(), 1 << 20)
        .await
        .unwrap();
    let (mut served, mut missing) = (0, 0);
    while let Some(item) = stream.next().await {
        match item.unwrap() {
            (id, Some(bytes)) => {
                assert_eq!(ChunkId::of(&bytes), id);
                served += 1;
            }
            (_, None) => missing += 1,
        }
    }
    (served, missing)
}

async fn connect(served: &Served) -> Client {
    Client::connect(served.quic, served.pin).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_chunks_only_on_the_connection_that_earned_an_offer() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("origin");
    let (_, root, director_root) = ceremony(&data, temp.path());
    init(&data, &root, &director_root);

    // Channel `secret`: a private `system` sharing its first MiB with a public `data`.
    let shared = image("shared", 1 << 20);
    let secret_bytes = [shared.clone(), image("secret", 1 << 20)].concat();
    let public_bytes = [shared, image("public", 512 << 10)].concat();
    let (secret_path, public_path) = (temp.path().join("system.img"), temp.path().join("data.img"));
    std::fs::write(&secret_path, &secret_bytes).unwrap();
    std::fs::write(&public_path, &public_bytes).unwrap();
    let (secret_ids, secret_index) = chunk_ids(&secret_bytes);
    let (public_ids, _) = chunk_ids(&public_bytes);
    let only_private: BTreeSet<ChunkId> = secret_ids.difference(&public_ids).copied().collect();
    let shared_ids: BTreeSet<ChunkId> = secret_ids.intersection(&public_ids).copied().collect();
    assert!(!only_private.is_empty() && !shared_ids.is_empty());

    // --private must name a slot of the release.
    let refused = crate::e2e::refused(&[
        "release",
        "create",
        "--data",
        data.to_str().unwrap(),
        "--channel",
        "secret",
        "--release",
        "1",
        "--version",
        "2026.11.1",
        "--model",
        "enigm-one",
        "--artifact",
        &format!("system={}", secret_path.display()),
        "--private",
        "kernel",
    ]);
    assert!(
        refused.contains("--private kernel names no --artifact slot of this release"),
        "{refused}"
    );
    publish(
        &data,
        temp.path(),
        ("secret", "2026.11.1"),
        &[("system", &secret_path), ("data", &public_path)],
        &["--private", "system"],
    );
    // Channel `stable`: another release, all public.
    let stable_path = temp.path().join("stable.img");
    std::fs::write(&stable_path, image("stable", 300_000)).unwrap();
    publish(
        &data,
        temp.path(),
        ("stable", "2026.11.2"),
        &[("system", &stable_path)],
        &[],
    );

    // The policy: channel `vault` requires a passed attestation for private content only.
    let fleet = crate::attest::ca("fleet");
    std::fs::create_dir_all(data.join("attestation")).unwrap();
    std::fs::write(data.join("attestation/roots.pem"), fleet.root_pem()).unwrap();
    let config_path = data.join("origin.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    config["attestation"] = serde_json::json!({
        "roots": "attestation/roots.pem",
        "channels": { "vault": { "private_content": "required" } },
        "requirements": { "models": ["enigm-one"] }
    });
    std::fs::write(&config_path, serde_json::to_vec(&config).unwrap()).unwrap();
    let vault_path = temp.path().join("vault.img");
    let vault_bytes = image("vault", 600_000);
    std::fs::write(&vault_path, &vault_bytes).unwrap();
    publish(
        &data,
        temp.path(),
        ("vault", "2026.11.3"),
        &[("system", &vault_path)],
        &["--private", "system"],
    );
    let (vault_ids, _) = chunk_ids(&vault_bytes);

    let (insider, outsider, plain, attested) = (
        Device::new(60),
        Device::new(61),
        Device::new(62),
        Device::new(63),
    );
    enroll(&data, &insider, "secret");
    enroll(&data, &outsider, "stable");
    enroll(&data, &plain, "vault");
    let attested_handle = enroll(&data, &attested, "vault");
    let served = serve(&data);

    // No check-in: every private-only chunk is Missing; shared and public ones are served.
    let stranger = connect(&served).await;
    assert_eq!(
        fetch(&stranger, &only_private).await,
        (0, only_private.len()),
        "private chunks without a check-in"
    );
    assert_eq!(
        fetch(&stranger, &shared_ids).await,
        (shared_ids.len(), 0),
        "a chunk a public artifact shares is public"
    );
    let index = BTreeSet::from([secret_index]);
    assert_eq!(
        fetch(&stranger, &index).await,
        (1, 0),
        "chunk indexes are public"
    );

    // The insider checks in on connection A: served on A, Missing on its connection B.
    let a = connect(&served).await;
    let b = connect(&served).await;
    assert!(check_in_on(&a, &insider, check_in_body(None)).await);
    assert_eq!(fetch(&a, &only_private).await, (only_private.len(), 0));
    assert_eq!(
        fetch(&b, &only_private).await,
        (0, only_private.len()),
        "another connection than the check-in's"
    );
    assert_eq!(
        fetch(&stranger, &only_private).await,
        (0, only_private.len())
    );

    // A device offered another release (stable/1) on its connection gets none of them.
    let other = connect(&served).await;
    assert!(check_in_on(&other, &outsider, check_in_body(None)).await);
    assert_eq!(
        fetch(&other, &only_private).await,
        (0, only_private.len()),
        "a device offered a different release"
    );

    // vault requires a passed attestation for private content: without one, no offer of a
    // release with private content (its check-in policy is off, so the reason is this one)
    // and the chunks stay Missing; with one, offered and served.
    let unattested = connect(&served).await;
    let nonce = unattested.challenge().await.unwrap();
    let request = plain.sign(
        &unattested,
        SignedKind::CheckIn,
        nonce,
        now(),
        check_in_body(None),
    );
    match unattested
        .signed(SignedKind::CheckIn, request)
        .await
        .unwrap()
    {
        Answer::Signed(body) => assert_eq!(
            serde_json::from_slice::<CheckInAnswer>(&body).unwrap(),
            CheckInAnswer::NoOffer {
                reason: "private content requires a passed attestation: eligibility_failure".into()
            }
        ),
        Answer::Refused(refusal) => panic!("check-in refused: {refusal}"),
    }
    assert_eq!(
        fetch(&unattested, &vault_ids).await,
        (0, vault_ids.len()),
        "a device lacking the attestation the policy requires"
    );
    let hardware = crate::attest::provider(&fleet, now());
    let with_evidence = connect(&served).await;
    let exporter = with_evidence.channel_binding().0;
    let nonce_holder = with_evidence.challenge().await.unwrap();
    let body = check_in_with_evidence(
        &hardware,
        None,
        &nonce_holder.0,
        &attested_handle,
        &exporter,
    )
    .unwrap();
    let request = attested.sign(
        &with_evidence,
        SignedKind::CheckIn,
        nonce_holder,
        now(),
        serde_json::to_vec(&body).unwrap(),
    );
    match with_evidence
        .signed(SignedKind::CheckIn, request)
        .await
        .unwrap()
    {
        Answer::Signed(body) => assert!(matches!(
            serde_json::from_slice::<CheckInAnswer>(&body).unwrap(),
            CheckInAnswer::Offer(_)
        )),
        Answer::Refused(refusal) => panic!("attested check-in refused: {refusal}"),
    }
    assert_eq!(
        fetch(&with_evidence, &vault_ids).await,
        (vault_ids.len(), 0)
    );

    // A site peer's connection earns the grant by the check-in it relays on it (the device's
    // signature over its own connection to the peer); another of the peer's connections
    // does not.
    let peer_key = NodeKey::from_seed([70; 32]);
    let peer_hex = hex::encode(Identity::from_node_key(&peer_key).unwrap().public_key());
    ok(&[
        "peer",
        "enroll",
        "--data",
        data.to_str().unwrap(),
        "--public-key",
        &peer_hex,
    ]);
    let upstream = connect(&served).await;
    let elsewhere = connect(&served).await;
    let device_binding = ChannelBinding([0x55; 32]);
    let nonce = upstream.challenge().await.unwrap();
    let request = crate::attest::sign_over(60, nonce, &device_binding, check_in_body(None));
    match upstream
        .relayed(&peer_key, SignedKind::CheckIn, device_binding, request)
        .await
        .unwrap()
    {
        Answer::Signed(body) => assert!(matches!(
            serde_json::from_slice::<CheckInAnswer>(&body).unwrap(),
            CheckInAnswer::Offer(_)
        )),
        Answer::Refused(refusal) => panic!("relayed check-in refused: {refusal}"),
    }
    assert_eq!(
        fetch(&upstream, &only_private).await,
        (only_private.len(), 0)
    );
    assert_eq!(
        fetch(&elsewhere, &only_private).await,
        (0, only_private.len())
    );

    // The HTTP mirror: never a private chunk or artifact (404), the metadata yes.
    let http = format!("http://{}", served.http);
    let get = |path: String| ota_tests::http_get(&http, &path, &[]).unwrap();
    for id in only_private.iter().take(3) {
        let (status, body) = get(format!("/chunks/{id}"));
        assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
        assert_eq!(
            String::from_utf8_lossy(&body),
            format!("{{\"error\":\"no blob {id}\"}}")
        );
    }
    let shared_id = shared_ids.iter().next().unwrap();
    assert_eq!(get(format!("/chunks/{shared_id}")).0, 200);
    assert_eq!(get(format!("/chunks/{secret_index}")).0, 200);
    let (status, body) = get("/targets/artifacts/system-2026.11.1.img".into());
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        String::from_utf8_lossy(&body),
        "{\"error\":\"no target artifacts/system-2026.11.1.img with that hash\"}"
    );
    let (status, body) = get("/targets/artifacts/data-2026.11.1.img".into());
    assert_eq!(status, 200);
    assert_eq!(body, public_bytes);
    let (status, release) = get("/metadata/3.release.json".into());
    assert_eq!(status, 200);
    let release: serde_json::Value = serde_json::from_slice(&release).unwrap();
    let targets = &release["signed"]["targets"];
    assert_eq!(
        targets["artifacts/system-2026.11.1.img"]["custom"]["enigm"]["private"],
        true
    );
    assert!(targets["artifacts/data-2026.11.1.img"]["custom"]["enigm"]["private"].is_null());
    drop(served);

    // The catalog: private-only chunks of secret/1 and all of vault/1, never a shared chunk
    // or a chunk index.
    let origin = ota_origin::service::Origin::open(&data).await.unwrap();
    let content = origin.catalog.private_content().await.unwrap();
    let recorded: BTreeSet<ChunkId> = content.blobs.iter().map(|(id, _, _)| *id).collect();
    let expected: BTreeSet<ChunkId> = only_private.union(&vault_ids).copied().collect();
    assert_eq!(recorded, expected);
    assert_eq!(
        content.targets,
        [
            "artifacts/system-2026.11.1.img".to_string(),
            "artifacts/system-2026.11.3.img".to_string(),
        ]
    );
}

/// The grant store itself, over a real catalog: a grant ends when the offer expires, holds on
/// its own connection only, for the release it names; private content recorded after the
/// origin first read it is gated within `REFRESH_EVERY`; a grant is withdrawn within
/// `REFRESH_EVERY` when its device or its release is revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_expire_and_new_private_releases_are_seen() {
    use ota_core::rollout::HealthPolicy;
    use ota_core::time::UnixTime;
    use ota_core::tuf::enigm::{Channel, ReleaseNumber};
    use ota_origin::access::{BlobAccess, PrivateAccess, REFRESH_EVERY};
    use ota_origin::store::{BlobRecord, Catalog, NewRelease, PrivateMarks};

    let temp = tempfile::tempdir().unwrap();
    let catalog = Catalog::open(temp.path().join("catalog.sqlite").to_str().unwrap())
        .await
        .unwrap();
    let release = |number: u64| NewRelease {
        channel: Channel("stable".into()),
        number: ReleaseNumber(number),
        version: format!("2026.11.{number}"),
        security: false,
        models: vec!["enigm-one".into()],
        min_installed: None,
        manifest_target: format!("releases/stable/{number}.json"),
        health: HealthPolicy {
            max_failure_basis_points: 500,
            min_sample: 20,
        },
    };
    let secret = ChunkId::of(b"secret chunk");
    let later = ChunkId::of(b"later secret chunk");
    let record = |id: ChunkId| BlobRecord { id, length: 12 };
    catalog
        .insert_release_marked(
            &release(1),
            &[],
            &[record(secret)],
            &PrivateMarks {
                targets: vec![],
                blobs: vec![secret],
            },
            UnixTime(1_000),
        )
        .await
        .unwrap();
    let access = PrivateAccess::default();
    let (mine, other) = ([1u8; 32], [2u8; 32]);
    let at = UnixTime(2_000);
    let key = |n: u64| (Channel("stable".into()), ReleaseNumber(n));
    assert_eq!(
        access.blob(&catalog, &mine, &secret, at).await.unwrap(),
        BlobAccess::Refused(None)
    );
    let handle = DeviceHandle([9; 32]);
    access.grant(mine, handle, key(1), UnixTime(2_900));
    assert_eq!(
        access.blob(&catalog, &mine, &secret, at).await.unwrap(),
        BlobAccess::Granted
    );
    assert_eq!(
        access.blob(&catalog, &other, &secret, at).await.unwrap(),
        BlobAccess::Refused(None),
        "another connection"
    );
    assert_eq!(
        access
            .blob(&catalog, &mine, &secret, UnixTime(2_900))
            .await
            .unwrap(),
        BlobAccess::Refused(Some(handle)),
        "the offer expired"
    );
    // Release 2 marks another chunk private while the origin serves: gated once re-read.
    catalog
        .insert_release_marked(
            &release(2),
            &[],
            &[record(later)],
            &PrivateMarks {
                targets: vec![],
                blobs: vec![later],
            },
            UnixTime(1_000),
        )
        .await
        .unwrap();
    tokio::time::sleep(REFRESH_EVERY + std::time::Duration::from_millis(50)).await;
    assert_eq!(
        access.blob(&catalog, &mine, &later, at).await.unwrap(),
        BlobAccess::Refused(Some(handle)),
        "a grant for release 1 does not open release 2"
    );
    access.grant(mine, handle, key(2), UnixTime(2_900));
    assert_eq!(
        access.blob(&catalog, &mine, &later, at).await.unwrap(),
        BlobAccess::Granted
    );
    assert!(access.has_private_content(&catalog, &key(2)).await.unwrap());
    assert!(!access.has_private_content(&catalog, &key(3)).await.unwrap());

    // The attack: a device revoked while it holds a grant goes on fetching private chunks on
    // its connection until the offer expires. Refused once the origin looks again (within
    // REFRESH_EVERY); another device's grant holds until its release is revoked.
    use ota_core::rollout::Stage;
    use ota_origin::store::NewDevice;
    let wall = UnixTime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
    );
    let enroll = |handle: DeviceHandle| NewDevice {
        handle,
        public_key: handle.0,
        channel: Channel("stable".into()),
        model: "enigm-one".into(),
        validation_cohort: false,
    };
    let second = DeviceHandle([8; 32]);
    let theirs = [3u8; 32];
    catalog.enroll(&enroll(handle), wall).await.unwrap();
    catalog.enroll(&enroll(second), wall).await.unwrap();
    access.grant(theirs, second, key(2), UnixTime(2_900));
    let refreshed = || tokio::time::sleep(REFRESH_EVERY + std::time::Duration::from_millis(50));
    refreshed().await;
    assert_eq!(
        access.blob(&catalog, &mine, &later, at).await.unwrap(),
        BlobAccess::Granted,
        "nothing revoked yet"
    );
    catalog.revoke_device(&handle, wall).await.unwrap();
    refreshed().await;
    assert_eq!(
        access.blob(&catalog, &mine, &later, at).await.unwrap(),
        BlobAccess::Refused(None),
        "the device was revoked"
    );
    assert_eq!(
        access.blob(&catalog, &theirs, &later, at).await.unwrap(),
        BlobAccess::Granted,
        "another device's grant holds"
    );
    let stage = catalog
        .release(&Channel("stable".into()), ReleaseNumber(2))
        .await
        .unwrap()
        .unwrap()
        .stage;
    catalog
        .update_stage(
            &Channel("stable".into()),
            ReleaseNumber(2),
            stage,
            Stage::Revoked,
            None,
            wall,
        )
        .await
        .unwrap();
    refreshed().await;
    assert_eq!(
        access.blob(&catalog, &theirs, &later, at).await.unwrap(),
        BlobAccess::Refused(None),
        "the release was revoked"
    );
}
