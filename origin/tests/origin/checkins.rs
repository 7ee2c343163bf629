//! The check-in path's memory (`ota_origin::cache`) against changes made by another process
//! while `serve` runs, and minted nonces across a restart: each asserting the exact refusal.

use ota_core::director::{CheckInAnswer, DeviceHandle};
use ota_net::client::{Answer, Client};
use ota_net::proto::SignedKind;
use ota_origin::service::Origin;
use ota_origin::state::{DataDir, OriginConfig};
use ota_origin::store::{DeviceState, NewDevice};

use crate::e2e::{Device, ceremony, check_in_body, init, now, ok, serve};
use crate::private::{enroll, image, publish};

/// A check-in of `device` on `client`'s connection: `Ok(true)` offered, `Ok(false)` not
/// offered, `Err(reason)` refused.
async fn check_in(client: &Client, device: &Device) -> Result<bool, String> {
    let nonce = client.challenge().await.unwrap();
    let request = device.sign(
        client,
        SignedKind::CheckIn,
        nonce,
        now(),
        check_in_body(None),
    );
    match client.signed(SignedKind::CheckIn, request).await.unwrap() {
        Answer::Signed(body) => Ok(matches!(
            serde_json::from_slice::<CheckInAnswer>(&body).unwrap(),
            CheckInAnswer::Offer(_)
        )),
        Answer::Refused(refusal) => Err(refusal.reason),
    }
}

/// The running server keeps devices and releases in memory; `device revoke`, `release halt`
/// and `release resume`, each run as its own process while it serves, reach the very next
/// check-in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_and_halt_by_another_process_reach_the_next_check_in() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("origin");
    let data_s = data.to_str().unwrap();
    let (_, root, director_root) = ceremony(&data, temp.path());
    init(&data, &root, &director_root);
    let system = temp.path().join("system.img");
    std::fs::write(&system, image("checkins", 1 << 20)).unwrap();
    publish(
        &data,
        temp.path(),
        ("stable", "2026.11.1"),
        &[("system", &system)],
        &[],
    );
    let (kept, revoked) = (Device::new(40), Device::new(41));
    enroll(&data, &kept, "stable");
    enroll(&data, &revoked, "stable");

    let served = serve(&data);
    let client = Client::connect(served.quic, served.pin).await.unwrap();
    // Both are offered the release, twice: the server now holds both devices and the release.
    for _ in 0..2 {
        assert_eq!(check_in(&client, &kept).await, Ok(true));
        assert_eq!(check_in(&client, &revoked).await, Ok(true));
    }

    ok(&[
        "device",
        "revoke",
        "--data",
        data_s,
        "--public-key",
        &revoked.public_hex(),
    ]);
    assert_eq!(
        check_in(&client, &revoked).await,
        Err("revoked device".to_string())
    );
    assert_eq!(
        check_in(&client, &revoked).await,
        Err("revoked device".to_string())
    );
    assert_eq!(check_in(&client, &kept).await, Ok(true));

    let id = ["--data", data_s, "--channel", "stable", "--release", "1"];
    ok(&[&["release", "halt"][..], &id, &["--reason", "test"]].concat());
    assert_eq!(check_in(&client, &kept).await, Ok(false));
    ok(&[&["release", "resume"][..], &id].concat());
    assert_eq!(check_in(&client, &kept).await, Ok(true));
    // A device enrolled while serving is known at once.
    let late = Device::new(42);
    enroll(&data, &late, "stable");
    assert_eq!(check_in(&client, &late).await, Ok(true));
}

/// A nonce is minted, not stored, when issued: the key that recognises it and the record of
/// its use are both on disk, so a nonce issued before a restart is still recognised after it,
/// and still single use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nonce_issued_before_a_restart_is_single_use_after_it() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("origin");
    DataDir::create(&data, OriginConfig::default()).unwrap();
    let exporter = [9u8; 32];
    let key = [7u8; 32];
    let (used, unused, handle) = {
        let origin = Origin::open(&data).await.unwrap();
        let handle = DeviceHandle::derive(&origin.keys.handle, &key);
        origin
            .catalog
            .enroll(
                &NewDevice {
                    handle,
                    public_key: key,
                    channel: ota_core::tuf::enigm::Channel("stable".into()),
                    model: "enigm-one".into(),
                    validation_cohort: false,
                },
                now(),
            )
            .await
            .unwrap();
        let mint = |random| {
            origin
                .keys
                .nonce
                .mint(&exporter, now(), 120, random)
                .unwrap()
        };
        let (used, unused) = (mint([1; 8]), mint([2; 8]));
        let minted = origin.keys.nonce.open(&used, &exporter, now()).unwrap();
        let first = origin
            .catalog
            .use_nonce(
                &used,
                &exporter,
                minted.issued_at,
                minted.expires_at,
                &handle,
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.device, DeviceState::Enrolled);
        origin.catalog.close().await;
        (used, unused, handle)
    };

    let origin = Origin::open(&data).await.unwrap();
    let mut uses = Vec::new();
    for nonce in [used, unused, unused] {
        let minted = origin.keys.nonce.open(&nonce, &exporter, now()).unwrap();
        uses.push(
            origin
                .catalog
                .use_nonce(
                    &nonce,
                    &exporter,
                    minted.issued_at,
                    minted.expires_at,
                    &handle,
                )
                .await
                .unwrap()
                .map(|u| u.device),
        );
    }
    assert_eq!(uses, [None, Some(DeviceState::Enrolled), None]);
    // The key is the data directory's own: another origin's does not recognise the nonce.
    let other = temp.path().join("other");
    DataDir::create(&other, OriginConfig::default()).unwrap();
    let stranger = Origin::open(&other).await.unwrap();
    assert_eq!(
        stranger.keys.nonce.open(&unused, &exporter, now()),
        Err(ota_origin::nonce::NonceRefusal::Unknown)
    );
}

/// Processes (here threads) opening a data directory that lacks its secrets at the same time
/// all get the same ones: each secret is written whole to a temporary file and linked to its
/// name once.
#[test]
fn secrets_made_at_once_by_several_openers_agree() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("origin");
    DataDir::create(&data, OriginConfig::default()).unwrap();
    let openers: Vec<_> = (0..8)
        .map(|_| {
            let data = data.clone();
            std::thread::spawn(move || DataDir::open(&data).unwrap().keys().unwrap())
        })
        .collect();
    let keys: Vec<_> = openers.into_iter().map(|t| t.join().unwrap()).collect();
    let exporter = [5u8; 32];
    let nonce = keys[0].nonce.mint(&exporter, now(), 60, [3; 8]).unwrap();
    for other in &keys {
        assert_eq!(other.handle.0, keys[0].handle.0);
        assert!(other.nonce.open(&nonce, &exporter, now()).is_ok());
    }
    let leftovers: Vec<_> = std::fs::read_dir(data.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
