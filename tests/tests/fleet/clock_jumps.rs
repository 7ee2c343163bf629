//! Clocks that jump while the origin or a site peer runs ([`FakeClock`]: libfaketime moves
//! the process's date, not its monotonic clock; the programs are unchanged). The device's
//! own clock jumping is `faults::fault_clock_jumps_on_the_device_refuse_without_touching_the_slots`.
//!
//! - The origin's clock jumps two days ahead (past its timestamp's expiry): it re-signs the
//!   timestamp at its new time; devices with the right time are refused for the request
//!   window (`timestamp … outside the window around …`) and install nothing; a check-in
//!   captured before the jump and replayed after the clock came back stays refused (nonces
//!   single use across the jump); back on time, the origin re-signs the timestamp it signed
//!   ahead (it would have stayed valid two days) and the device installs the new signed image.
//! - The origin's clock jumps a day back: the same refusal; a nonce used at the wrong time is
//!   refused when replayed; the offer it makes then expires by its clock, so a device with the
//!   right time refuses it (`offer expired at …`).
//! - A site peer's clock jumps two days ahead, then a day back: it keeps verifying and
//!   serving, and relays check-ins; devices behind it install each new release.

use std::time::{Duration, Instant};

use ota_core::director::{CheckIn, CheckInAnswer, DeviceHandle, Offer, OfferExpectation};
use ota_core::time::UnixTime;
use ota_core::tuf::InMemoryKey;
use ota_core::tuf::enigm::ReleaseNumber;
use ota_core::tuf::metadata::{Envelope, Root};
use ota_net::client::{Answer, Client};
use ota_net::proto::{DeviceKey, SignedKind, SignedRequest, signing_bytes};
use ota_tests::fake_clock::FakeClock;
use ota_tests::{OriginFixture, Served, http_get, now, test_image};
use serde_json::Value;

use crate::attacks::{Dev, published, two_releases};
use crate::silent_link::SitePeer;

const DAY: i64 = 86_400;

/// The timestamp the origin's mirror serves: (version, expiry).
fn served_timestamp(served: &Served) -> (u64, UnixTime) {
    let (status, body) = http_get(
        served.http.as_deref().unwrap(),
        "/metadata/timestamp.json",
        &[],
    )
    .unwrap();
    assert_eq!(status, 200);
    let timestamp: Value = serde_json::from_slice(&body).unwrap();
    (
        timestamp["signed"]["version"].as_u64().unwrap(),
        timestamp["signed"]["expires"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap(),
    )
}

/// A device of the test's own, speaking to the origin over one connection and signing its
/// check-ins with whatever time the test says (a device whose clock agrees with a wrong
/// origin clock, or an attacker replaying what it captured).
struct RawDevice {
    handle: DeviceHandle,
    key: InMemoryKey,
    device_key: DeviceKey,
    client: Client,
}

impl RawDevice {
    /// Enrolls a fresh key on `stable` and connects.
    fn connect(
        runtime: &tokio::runtime::Runtime,
        fixture: &OriginFixture,
        served: &Served,
    ) -> Self {
        let key = InMemoryKey::ed25519_from_seed([0x5a; 32]);
        let public = serde_json::to_value(key.public()).unwrap()["keyval"]["public"]
            .as_str()
            .unwrap()
            .to_string();
        let mut handle = [0u8; 32];
        hex::decode_to_slice(fixture.enroll(&public, "stable"), &mut handle).unwrap();
        let mut raw = [0u8; 32];
        hex::decode_to_slice(&public, &mut raw).unwrap();
        let client = runtime
            .block_on(Client::connect(served.quic, served.pin.parse().unwrap()))
            .unwrap();
        Self {
            handle: DeviceHandle(handle),
            key,
            device_key: DeviceKey(raw),
            client,
        }
    }

    /// A check-in signed over this connection with a fresh nonce and `timestamp`.
    fn check_in(&self, runtime: &tokio::runtime::Runtime, timestamp: UnixTime) -> SignedRequest {
        let nonce = runtime.block_on(self.client.challenge()).unwrap();
        let body = serde_json::to_vec(&CheckIn {
            installed: Some(ReleaseNumber(1)),
        })
        .unwrap();
        let message = signing_bytes(
            SignedKind::CheckIn,
            &self.device_key,
            &nonce,
            timestamp,
            &self.client.channel_binding(),
            &body,
        );
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&self.key.sign(&message));
        SignedRequest {
            device_key: self.device_key,
            nonce,
            timestamp,
            body,
            signature: ota_net::proto::Signature(signature),
        }
    }

    /// Sends `request`: Ok(the answer) or Err(the refusal's reason).
    fn send(
        &self,
        runtime: &tokio::runtime::Runtime,
        request: SignedRequest,
    ) -> Result<CheckInAnswer, String> {
        match runtime
            .block_on(self.client.signed(SignedKind::CheckIn, request))
            .unwrap()
        {
            Answer::Signed(body) => Ok(serde_json::from_slice(&body).unwrap()),
            Answer::Refused(refusal) => Err(refusal.reason),
        }
    }
}

/// An update refused because the origin's clock is not the device's: exit code, the exact
/// reason, the active slot and the pending state as they were.
fn refused_for_the_window(device: &Dev) -> String {
    let before = device.active_slot();
    let (code, lines, stderr) = device.update(&[]);
    let done = lines.last().cloned().unwrap_or(Value::Null);
    assert_ne!(code, 0, "{stderr}\n{done}");
    assert_eq!(done["outcome"], "failed", "{done}");
    let reason = done["reason"].as_str().unwrap_or_default().to_string();
    assert!(
        reason.contains("timestamp ") && reason.contains(" outside the window around "),
        "{done}"
    );
    assert_eq!(device.active_slot(), before, "{done}");
    assert!(device.status()["pending"].is_null(), "{done}");
    reason
}

#[test]
fn fault_clock_jumps_on_the_origin_resign_refuse_and_keep_nonces_single_use() {
    let temp = tempfile::tempdir().unwrap();
    let fixture = OriginFixture::new(temp.path());
    // A 20 s timestamp: the origin looks at it every 5 s and re-signs it with 10 s left.
    fixture.set_config("timestamp_expiry_secs", 20.into());
    let (_, v2) = two_releases(temp.path(), &fixture, "origin clock", (1 << 20, 1 << 20));
    let clock = FakeClock::new(temp.path(), "origin");
    let log = temp.path().join("origin.log");
    let served = fixture.serve_configured(&[], |command| {
        clock.apply(command);
        command.stderr(std::fs::File::create(&log).unwrap());
    });
    let device = Dev::new(
        temp.path(),
        "device",
        &fixture,
        &served.quic.to_string(),
        &served.pin,
        "stable",
    );
    device.update_ok(&[]);
    device.boot_good();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let raw = RawDevice::connect(&runtime, &fixture, &served);

    // Clocks agree: a check-in is answered, and its replay refused.
    let captured = raw.check_in(&runtime, now());
    assert!(raw.send(&runtime, captured.clone()).is_ok());
    assert_eq!(
        raw.send(&runtime, captured.clone()).unwrap_err(),
        "nonce already used"
    );
    fixture.promote("stable", 2, &["--stable"]);

    // Two days ahead, past the timestamp's expiry: the origin re-signs it at its new time.
    let (version, _) = served_timestamp(&served);
    clock.jump(2 * DAY);
    let deadline = Instant::now() + Duration::from_secs(15);
    let (resigned, expires) = loop {
        let (v, expires) = served_timestamp(&served);
        if v > version && expires.0 > now().0 + DAY {
            break (v, expires);
        }
        assert!(
            Instant::now() < deadline,
            "the origin did not re-sign its timestamp at its new time (version {v}, expires {expires})"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    // Devices with the right time are refused for the request window; nothing installed.
    let ahead = refused_for_the_window(&device);
    // A device whose clock agrees with the origin's is answered (and the origin, at its
    // time, forgets the nonces that expired more than an hour before: the captured one).
    let agreeing = raw.check_in(&runtime, now().plus_secs(2 * DAY));
    assert!(raw.send(&runtime, agreeing).is_ok());
    std::thread::sleep(Duration::from_millis(500));

    // Back on time: the check-in captured before the jump is still refused. The purge at
    // the origin's time two days ahead deleted its nonce's row; the origin's nonce clock,
    // which never goes back, says that nonce expired.
    clock.jump(0);
    let replayed = raw.send(&runtime, captured).map(|_| "accepted".to_string());
    assert_eq!(
        replayed,
        Err("nonce expired".to_string()),
        "a check-in captured before the clock jumped, replayed after it came back"
    );
    // New nonces are good meanwhile: a device with the right time is served.
    let fresh = raw.check_in(&runtime, now());
    assert!(raw.send(&runtime, fresh.clone()).is_ok());
    assert_eq!(raw.send(&runtime, fresh).unwrap_err(), "nonce already used");
    // The timestamp signed two days ahead would stay valid for two days: on time again, the
    // origin re-signs it with an expiry a fresh one has.
    let deadline = Instant::now() + Duration::from_secs(15);
    let (corrected, corrected_expires) = loop {
        let (v, expires) = served_timestamp(&served);
        if v > resigned && expires.0 <= now().0 + 20 {
            break (v, expires);
        }
        assert!(
            Instant::now() < deadline,
            "the timestamp signed ahead is still served: version {v}, expires {expires}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };

    // A day back: the same refusal for the devices; a nonce used at that time is single-use.
    clock.jump(-DAY);
    let behind = refused_for_the_window(&device);
    let at_its_time = raw.check_in(&runtime, now().plus_secs(-DAY));
    let Ok(CheckInAnswer::Offer(offer)) = raw.send(&runtime, at_its_time.clone()) else {
        panic!("no offer at the origin's time")
    };
    // Its offer expires by the origin's clock: good at that time, refused at the right one.
    let director: Root = Envelope::parse(
        "root",
        "director-root.json",
        &std::fs::read(&fixture.director_root).unwrap(),
        1 << 20,
    )
    .unwrap()
    .role()
    .unwrap();
    let offer = serde_json::to_vec(&offer).unwrap();
    let expect = |at: UnixTime| OfferExpectation {
        handle: &raw.handle,
        nonce: &at_its_time.nonce.0,
        installed: Some(ReleaseNumber(1)),
        now: at,
    };
    assert!(Offer::verify(&offer, &director, expect(now().plus_secs(-DAY))).is_ok());
    let expired = Offer::verify(&offer, &director, expect(now()))
        .unwrap_err()
        .to_string();
    assert!(expired.starts_with("offer expired at "), "{expired}");
    assert_eq!(
        raw.send(&runtime, at_its_time).unwrap_err(),
        "nonce already used"
    );

    // Back on time: the device installs the new signed image.
    clock.jump(0);
    let report = device.update_ok(&[]);
    assert_eq!(report["release"], 2, "{report}");
    let status = device.status();
    let other = if status["active"] == "A" { "B" } else { "A" };
    assert!(device.image(other, "system").as_deref() == Some(&v2[..]));
    eprintln!(
        "origin clock: +2 d re-signed timestamp version {resigned} (expires {expires}); devices \
         refused {ahead:?} (+2 d) and {behind:?} (-1 d); captured check-in replayed after the \
         jump back: {replayed:?}; back on time, timestamp version {corrected} (expires \
         {corrected_expires}); an offer made at -1 d, at the right time: {expired:?}"
    );
}

#[test]
fn fault_clock_jumps_on_a_peer_it_keeps_verifying_serving_and_relaying() {
    let temp = tempfile::tempdir().unwrap();
    let fixture = OriginFixture::new(temp.path());
    let images: Vec<Vec<u8>> = (1..=3)
        .map(|n| test_image(&format!("peer clock v{n}"), 3 << 20))
        .collect();
    for (n, image) in images.iter().enumerate() {
        let path = published(temp.path(), &format!("v{}.img", n + 1), image);
        fixture.release("stable", n as u64 + 1, &[("system", &path)], &[]);
    }
    fixture.promote("stable", 1, &["--stable"]);
    let served = fixture.serve();
    let clock = FakeClock::new(temp.path(), "peer");
    // An uplink budget of 2 MB/s with a 2 MB burst: each 3 MiB release needs the token
    // bucket refilled as the peer fetches it, by the peer's clock.
    let peer = SitePeer::start(
        temp.path(),
        &fixture,
        (&served.quic.to_string(), &served.pin),
        &["--no-prefetch", "--upstream-rate", "2000000"],
        |command| clock.apply(command),
    );
    let device = Dev::new(
        temp.path(),
        "device",
        &fixture,
        &peer.quic,
        &peer.pin,
        "stable",
    );
    let mut installed = Vec::new();
    for (release, offset) in [(1u64, 0), (2, 2 * DAY), (3, -DAY)] {
        if release > 1 {
            fixture.promote("stable", release, &["--stable"]);
        }
        clock.jump(offset);
        let before = device.active_slot();
        let (code, lines, stderr) = device.update(&[]);
        let done = lines.last().cloned().unwrap_or(Value::Null);
        assert_eq!(
            code,
            0,
            "peer clock {offset:+} s: release {release}: {stderr}\n{done}\n{}",
            std::fs::read_to_string(&peer.log).unwrap_or_default()
        );
        assert_eq!(done["outcome"], "installed", "{done}");
        assert_eq!(done["release"], release, "{done}");
        assert!(
            done["banned"].as_object().is_none_or(|b| b.is_empty()),
            "{done}"
        );
        let status = device.status();
        let other = if status["active"] == "A" { "B" } else { "A" };
        assert!(
            device.image(other, "system").as_deref() == Some(&images[release as usize - 1][..]),
            "release {release}: the pending slot is not the new signed image"
        );
        assert_ne!(device.active_slot(), before);
        device.boot_good();
        installed.push((offset, done["millis"].as_u64().unwrap_or(0)));
    }
    assert_eq!(peer.stat("verification_failures"), 0);
    eprintln!("peer clock jumps (offset s, update ms): {installed:?}");
}
