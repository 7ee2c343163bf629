//! The command line: help texts that explain each ceremony step, usage and environment errors
//! with one-line reasons and exit code 2.

use std::process::{Command, Stdio};

use crate::harness::*;

fn bare(args: &[&str]) -> Out {
    let out = Command::new(env!("CARGO_BIN_EXE_ota-sign"))
        .env_remove("OTA_SIGN_STATION")
        .env_remove("OTA_PKCS11_PIN")
        .env_remove("OTA_PKCS11_MODULE")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn help_explains_each_ceremony_step() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--help"],
            &[
                "manifest signing authority",
                "dual control",
                "pkcs11: URI (RFC 7512)",
                "Exit codes: 0 done; 1 refused",
                "docs/SIGNING.md",
            ],
        ),
        (
            &["key", "generate", "--help"],
            &["Key ceremony step", "not extractable", "--public-out"],
        ),
        (&["key", "show", "--help"], &["protection attributes"]),
        (
            &["root", "create", "--help"],
            &[
                "Root ceremony, step 1",
                "x-enigm-release-authority",
                "until the\nthreshold is met",
            ],
        ),
        (
            &["root", "sign", "--help"],
            &["Root ceremony, co-signing", "both thresholds"],
        ),
        (
            &["root", "rotate", "--help"],
            &["Root ceremony, rotation", "old root AND"],
        ),
        (&["root", "install", "--help"], &["another station"]),
        (
            &["sign", "--help"],
            &[
                "refuses a version that does not rise",
                "--approval",
                "Co-signers sign in turn",
            ],
        ),
        (&["approve", "--help"], &["exact request", "--valid-for"]),
        (&["review", "--help"], &["policy checks"]),
        (&["verify", "--help"], &["thresholds"]),
        (
            &["audit", "verify", "--help"],
            &["appended by someone", "reordered", "removed"],
        ),
    ];
    for (args, wanted) in cases {
        let out = bare(args);
        let text = out.ok();
        for w in *wanted {
            assert!(
                text.contains(w),
                "`ota-sign {}` lacks {w:?}:\n{text}",
                args.join(" ")
            );
        }
        assert!(!text.contains("--now"), "the test-only --now stays hidden");
    }
}

#[test]
fn usage_and_environment_errors_exit_2() {
    // No station.
    bare(&["review", "--role", "targets", "--in", "x.json"]).fails(
        2,
        "no signing station: pass --station DIR or set OTA_SIGN_STATION",
    );
    // Unknown arguments: clap's own usage error, exit 2.
    assert_eq!(bare(&["sign", "--rol", "targets"]).code, 2);
    // A PIN in the key reference.
    let f = Fixture::ready(Keys::Files).unwrap();
    let req = f.request("t.json", &targets_doc(&f.root(), 1, &[]));
    let args = |key: &str| {
        f.run(&[
            "sign",
            "--role",
            "targets",
            "--key",
            key,
            "--in",
            req.to_str().unwrap(),
            "--out",
            f.path("o.json").to_str().unwrap(),
            "--yes",
        ])
    };
    args("pkcs11:token=t;object=k?pin-value=1234").fails(
        2,
        "pkcs11 URI attribute pin-value is refused: PINs come from the environment",
    );
    args("pkcs11:token=t;object=k").fails(2, "no PKCS#11 module");
    args("pkcs11:token=t;object=k?module-path=/nonexistent/module.so")
        .fails(2, "PKCS#11 module /nonexistent/module.so does not exist");
    args("file:/nonexistent/key.json").fails(2, "key file /nonexistent/key.json");
    // A request file that is missing.
    let out = f.run(&[
        "sign",
        "--role",
        "targets",
        "--key",
        &f.refs["targets"],
        "--in",
        "/nonexistent.json",
        "--out",
        f.path("o.json").to_str().unwrap(),
        "--yes",
        "--insecure-file-keys",
    ]);
    out.fails(2, "request /nonexistent.json: cannot open");
    // No terminal to confirm on and no --yes: stop before any key is touched.
    let out = f.run(&[
        "sign",
        "--role",
        "targets",
        "--key",
        &f.refs["targets"],
        "--in",
        req.to_str().unwrap(),
        "--out",
        f.path("o.json").to_str().unwrap(),
        "--insecure-file-keys",
    ]);
    out.fails(2, "no terminal to confirm on");
    assert!(!f.path("o.json").exists());
    // A broken policy.
    std::fs::write(f.station.join("policy.json"), b"{\"operators\": {}}").unwrap();
    f.run(&["review", "--role", "targets", "--in", req.to_str().unwrap()])
        .fails(2, "policy: missing field `roles`");
}

#[test]
fn review_shows_without_signing() {
    let f = Fixture::ready(Keys::Files).unwrap();
    let artifact = artifact_bytes(5, 70_000);
    let req = f.request(
        "r.json",
        &release_doc(3, 10 * DAY, &[("artifacts/boot.img", &artifact)]),
    );
    let before = f.audit_lines();
    let out = f.run(&["review", "--role", "release", "--in", req.to_str().unwrap()]);
    let text = out.ok();
    for shown in [
        "role:      release",
        "version:   3 (first signed here)",
        &format!(
            "expires:   {} (in 10 days; the policy allows 90)",
            at(10 * DAY)
        ),
        "artifacts/boot.img",
        "length      70000",
        "threshold: release: 0 of 1 signatures",
        "policy checks passed",
    ] {
        assert!(text.contains(shown), "review lacks {shown:?}:\n{text}");
    }
    assert_eq!(f.audit_lines(), before, "a review logs nothing");
}
