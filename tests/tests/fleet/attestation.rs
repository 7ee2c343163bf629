//! Remote attestation across programs: a real `ota-origin serve` whose channel requires a
//! passed attestation at check-in (`attestation` in origin.json, anchored at a test root the
//! test makes with `ota-device software-ca`), and real `ota-device` processes: one whose
//! software provider issues under that root installs the release; one without a provider and
//! one whose CA is not the configured root get no offer, each with the exact reason in
//! `update --json` and in `status --json`, their slots untouched.

use std::path::{Path, PathBuf};

use ota_tests::{OriginFixture, Served, bin, run, run_ok, test_image};
use serde_json::{Value, json};

/// A device's state directory, enrolled on `stable`.
struct Device {
    state: PathBuf,
}

impl Device {
    fn new(dir: &Path, name: &str, fixture: &OriginFixture, served: &Served) -> Self {
        let state = dir.join(name);
        let quic = served.quic.to_string();
        let public = run_ok(
            &bin("ota-device"),
            &[
                "init",
                "--state",
                state.to_str().unwrap(),
                "--root",
                fixture.root.to_str().unwrap(),
                "--director-root",
                fixture.director_root.to_str().unwrap(),
                "--origin",
                &quic,
                "--origin-pin",
                &served.pin,
            ],
        );
        let handle = fixture.enroll(public.trim(), "stable");
        run_ok(
            &bin("ota-device"),
            &[
                "enrolled",
                "--state",
                state.to_str().unwrap(),
                "--handle",
                &handle,
            ],
        );
        Self { state }
    }

    fn state_str(&self) -> &str {
        self.state.to_str().unwrap()
    }

    /// `ota-device attestation --provider software --software-ca CA`.
    fn attest_with(&self, ca: &Path) {
        let out = run_ok(
            &bin("ota-device"),
            &[
                "attestation",
                "--state",
                self.state_str(),
                "--provider",
                "software",
                "--software-ca",
                ca.to_str().unwrap(),
            ],
        );
        let recorded: Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(recorded["provider"], "software", "{out}");
    }

    /// `ota-device update --json`: must exit 0; returns the last JSON line.
    fn update(&self) -> Value {
        let out = run(
            &bin("ota-device"),
            &["update", "--state", self.state_str(), "--json"],
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "update: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        let done: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        assert_eq!(done["event"], "done");
        done
    }

    fn status_json(&self) -> Value {
        let out = run_ok(
            &bin("ota-device"),
            &["status", "--state", self.state_str(), "--json"],
        );
        serde_json::from_str(&out).unwrap()
    }

    fn status_text(&self) -> String {
        run_ok(&bin("ota-device"), &["status", "--state", self.state_str()])
    }

    /// An update that gets no offer because of attestation, with exactly `reason` in its
    /// report, `last-update.json`, `status --json` and `status`; the slots untouched.
    fn refused_offer(&self, reason: &str) {
        let slots_before = std::fs::read(self.state.join("slots.json")).unwrap();
        let done = self.update();
        assert_eq!(done["outcome"], "no_offer", "{done}");
        assert_eq!(done["reason"], reason, "{done}");
        let last: Value =
            serde_json::from_slice(&std::fs::read(self.state.join("last-update.json")).unwrap())
                .unwrap();
        assert_eq!(last["reason"], reason);
        let status = self.status_json();
        assert_eq!(status["last_update"]["outcome"], "no_offer", "{status}");
        assert_eq!(status["last_update"]["reason"], reason, "{status}");
        assert_eq!(status["pending"], Value::Null, "{status}");
        assert_eq!(status["active_release"], Value::Null, "{status}");
        let text = self.status_text();
        assert!(
            text.contains(&format!("last update: no_offer: {reason}")),
            "{text}"
        );
        assert_eq!(
            std::fs::read(self.state.join("slots.json")).unwrap(),
            slots_before,
            "a refused offer leaves the slots as they were"
        );
    }
}

/// `ota-device software-ca --out DIR --name NAME`; returns the root PEM's path it prints.
fn software_ca(dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(name);
    let printed = run_ok(
        &bin("ota-device"),
        &[
            "software-ca",
            "--out",
            out.to_str().unwrap(),
            "--name",
            name,
        ],
    );
    let root = PathBuf::from(printed.trim());
    assert_eq!(root, out.join("root.pem"));
    out
}

#[test]
fn a_channel_requiring_attestation_installs_on_the_attested_device_only() {
    let temp = tempfile::tempdir().unwrap();
    let fixture = OriginFixture::new(temp.path());
    let image = test_image("attested v1", 2 << 20);
    let image_path = temp.path().join("v1.img");
    std::fs::write(&image_path, &image).unwrap();
    fixture.release("stable", 1, &[("system", &image_path)], &[]);
    fixture.promote("stable", 1, &["--stable"]);

    // The fleet's test root is the only anchor; `rogue` is a CA the origin does not know.
    let fleet = software_ca(temp.path(), "fleet-ca");
    let rogue = software_ca(temp.path(), "rogue-ca");
    std::fs::create_dir_all(fixture.data.join("attestation")).unwrap();
    std::fs::copy(
        fleet.join("root.pem"),
        fixture.data.join("attestation/roots.pem"),
    )
    .unwrap();
    fixture.set_config(
        "attestation",
        json!({
            "roots": "attestation/roots.pem",
            "channels": { "stable": { "check_in": "required" } },
            "requirements": { "models": ["enigm-one"], "min_patch_level": 202501,
                              "max_age_secs": 600 }
        }),
    );
    let served = fixture.serve();

    let attested = Device::new(temp.path(), "attested", &fixture, &served);
    attested.attest_with(&fleet);
    let plain = Device::new(temp.path(), "plain", &fixture, &served);
    let impostor = Device::new(temp.path(), "impostor", &fixture, &served);
    impostor.attest_with(&rogue);

    // The provider is recorded in device.json (and shown by status); none is the default.
    let config: Value =
        serde_json::from_slice(&std::fs::read(attested.state.join("device.json")).unwrap())
            .unwrap();
    assert_eq!(config["attestation"]["provider"], "software");
    assert_eq!(
        PathBuf::from(config["attestation"]["ca"].as_str().unwrap()),
        std::fs::canonicalize(&fleet).unwrap()
    );
    assert_eq!(
        attested.status_json()["attestation"]["provider"],
        "software"
    );
    assert_eq!(plain.status_json()["attestation"]["provider"], "none");

    // Attested under the configured root: offered, downloaded, installed.
    let done = attested.update();
    assert_eq!(done["outcome"], "installed", "{done}");
    assert_eq!(done["release"], 1);
    assert_eq!(
        std::fs::read(attested.state.join("slots/B/system.img")).unwrap(),
        image
    );
    assert_eq!(attested.status_json()["pending"]["release"], 1);

    // No provider: no evidence, no offer, and the device says why.
    plain.refused_offer("channel requires a passed attestation: eligibility_failure");

    // Evidence from a CA the origin does not trust.
    impostor.refused_offer(
        "channel requires a passed attestation: invalid_chain \
         (chain does not lead to a configured trust anchor)",
    );

    // The same device with the fleet's provider: offered and installed, attestation the only
    // difference.
    plain.attest_with(&fleet);
    let done = plain.update();
    assert_eq!(done["outcome"], "installed", "{done}");
    assert_eq!(done["release"], 1);

    // A software CA directory that is not one is refused when configured (exit 2), and the
    // recorded provider stays.
    let out = run(
        &bin("ota-device"),
        &[
            "attestation",
            "--state",
            plain.state_str(),
            "--provider",
            "software",
            "--software-ca",
            temp.path().to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ca.json"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(plain.status_json()["attestation"]["provider"], "software");
}
