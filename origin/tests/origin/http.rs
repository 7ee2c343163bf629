//! The HTTP mirror and the admin API, over real HTTP on 127.0.0.1.
//!
//! Every test builds an origin in a temporary data directory with one release (`stable` 1)
//! whose artifact was ingested, chunked and stored in the blob store, and whose TUF metadata
//! was signed (root, manifest and release keys from fixed seeds; snapshot and timestamp by the
//! origin's own online keys), registered as a device would check it, and published in the
//! catalog: the mirror serves a real signed repository. The servers listen on ports the OS
//! picks.
//!
//! The python-tuf test needs `OTA_PYTHON` (set by `scripts/test`); it is skipped without it,
//! or fails when `OTA_REQUIRE_INTEROP=1`.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ota_core::chunk::{ChunkingParams, CutChunk, Ingest};
use ota_core::digest::{ChunkId, Sha256Hash};
use ota_core::director::{AttestationOutcome, DeviceHandle};
use ota_core::rollout::{Command, HealthPolicy};
use ota_core::time::UnixTime;
use ota_core::tuf::InMemoryKey;
use ota_core::tuf::enigm::{Channel, ManifestArtifact, ReleaseManifest, ReleaseNumber};
use ota_core::tuf::metadata::{
    Common, Envelope, ReleaseAuthority, RoleKeys, Root, Signature, sign_role,
};
use ota_origin::lifecycle;
use ota_origin::repository::{IngestedArtifact, Registration, Repository};
use ota_origin::service::Origin;
use ota_origin::state::{DataDir, OriginConfig};
use ota_origin::store::{
    ArtifactRecord, BlobRecord, BlobStore, MetadataFile, NewDevice, NewRelease, Report,
    ReportOutcome,
};
use reqwest::StatusCode;
use serde_json::Value;

const TOKEN: &str = "correct horse battery staple";
const ARTIFACT: &str = "artifacts/system-1.img";
const MANIFEST: &str = "releases/stable/1.json";
const ARTIFACT_LEN: usize = 700_000;
/// How many chunks the mirror reads ahead (`ARTIFACT_READ_AHEAD` in `http.rs`): the artifact
/// has more, so that streaming goes through several rounds.
const READ_AHEAD: usize = 4;

// --- the mirror ------------------------------------------------------------------------------

/// Every kind of file, with and without hash prefixes; names that try to climb out are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_serves_metadata_targets_and_chunks() {
    let f = Fixture::new().await;
    let client = client();

    // Metadata, byte for byte as published.
    for name in [
        "1.root.json",
        "timestamp.json",
        "1.snapshot.json",
        "1.targets.json",
        "1.release.json",
    ] {
        let response = client
            .get(f.mirror(&format!("metadata/{name}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{name}");
        assert_eq!(header(&response, "content-type"), "application/json");
        let cache = header(&response, "cache-control");
        if name == "timestamp.json" {
            assert_eq!(cache, "no-cache");
        } else {
            assert!(cache.contains("immutable"), "{name}: {cache}");
        }
        let published = f.origin.catalog.metadata(name).await.unwrap().unwrap();
        assert_eq!(response.bytes().await.unwrap(), published.bytes, "{name}");
    }
    assert_eq!(
        client
            .get(f.mirror("metadata/1.root.json"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
        f.root
    );
    // The next root does not exist yet: a TUF client stops its rotation on this 404.
    assert_eq!(
        fetch_status(&client, &f.mirror("metadata/2.root.json")).await,
        404
    );
    // Names that are not plain file names, and manifests (they live under targets/).
    for name in ["..%2Fcatalog.sqlite", "releases%2Fstable%2F1.json"] {
        let response = client
            .get(f.mirror(&format!("metadata/{name}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{name}");
        let body: Value = json(response).await;
        assert_eq!(body["error"], "not a metadata file name");
    }

    // The release manifest, under its hash-prefixed name and its plain one.
    let manifest_hash = Sha256Hash::of(&f.manifest);
    for path in [
        format!("targets/releases/stable/{manifest_hash}.1.json"),
        format!("targets/{MANIFEST}"),
    ] {
        let response = client.get(f.mirror(&path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(response.bytes().await.unwrap(), f.manifest, "{path}");
    }

    // A wrong hash prefix is not found, for manifests and artifacts alike.
    let wrong = Sha256Hash::of(b"something else");
    for path in [
        format!("targets/releases/stable/{wrong}.1.json"),
        format!("targets/artifacts/{wrong}.system-1.img"),
        "targets/artifacts/system-2.img".to_string(),
        "targets/elsewhere/file".to_string(),
    ] {
        assert_eq!(fetch_status(&client, &f.mirror(&path)).await, 404, "{path}");
    }
    // Paths that climb out are refused before any lookup (sent raw: HTTP clients resolve
    // `..` themselves); one that does not fit a route is not found.
    for (path, code) in [
        ("/targets/artifacts/../../catalog.sqlite", 400),
        ("/targets/artifacts/%2E%2E/x", 400),
        ("/targets/artifacts/a%5Cb", 400),
        ("/metadata/..", 400),
        ("/metadata/../catalog.sqlite", 404),
        ("/catalog.sqlite", 404),
    ] {
        assert_eq!(raw_get_status(&f.mirror_base, path).await, code, "{path}");
    }

    // Every chunk and the chunk index, by id.
    for (id, bytes) in f.chunks.iter().chain([&f.index]) {
        let response = client
            .get(f.mirror(&format!("chunks/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{id}");
        assert_eq!(
            header(&response, "content-type"),
            "application/octet-stream"
        );
        assert_eq!(response.bytes().await.unwrap(), bytes[..], "{id}");
    }
    assert_eq!(
        fetch_status(
            &client,
            &f.mirror(&format!("chunks/{}", ChunkId::of(b"nothing")))
        )
        .await,
        404
    );
    assert_eq!(
        fetch_status(&client, &f.mirror("chunks/not-hex")).await,
        400
    );

    // What was served is counted.
    let metrics = f.origin.metrics.render();
    assert_eq!(
        metric(&metrics, "ota_origin_metadata_served_total"),
        8,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "ota_origin_blobs_served_total"),
        f.chunks.len() as u64 + 1
    );
    let blob_bytes: usize = f.chunks.iter().map(|(_, b)| b.len()).sum::<usize>() + f.index.1.len();
    assert_eq!(
        metric(&metrics, "ota_origin_blob_bytes_served_total"),
        blob_bytes as u64
    );
}

/// An artifact is streamed from its chunks: the body is the original, with its length
/// announced up front.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifact_streams_as_the_original_bytes() {
    let f = Fixture::new().await;
    let client = client();
    assert!(
        f.chunks.len() > READ_AHEAD,
        "more chunks than the read-ahead"
    );
    let hash = Sha256Hash::of(&f.artifact);
    for (path, cache) in [
        (
            format!("targets/artifacts/{hash}.system-1.img"),
            "immutable",
        ),
        (format!("targets/{ARTIFACT}"), "no-cache"),
    ] {
        let response = client.get(f.mirror(&path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(
            response.content_length(),
            Some(ARTIFACT_LEN as u64),
            "{path}"
        );
        assert!(header(&response, "cache-control").contains(cache), "{path}");
        let body = response.bytes().await.unwrap();
        assert!(
            body[..] == f.artifact[..],
            "{path}: the streamed bytes differ"
        );
    }
    // HEAD announces the same without a body.
    let response = client
        .head(f.mirror(&format!("targets/artifacts/{hash}.system-1.img")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, "content-length"),
        ARTIFACT_LEN.to_string()
    );
}

/// A chunk damaged on disk is never served: alone it is a 500, inside an artifact it cuts the
/// body short, so no client takes it for the artifact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_chunk_is_not_served() {
    let f = Fixture::new().await;
    let client = client();
    let (id, bytes) = &f.chunks[f.chunks.len() / 2];
    let file = f.blob_file(id);
    let mut damaged = bytes.clone();
    damaged[100] ^= 0x01;
    std::fs::write(&file, &damaged).unwrap();

    let response = client
        .get(f.mirror(&format!("chunks/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = json(response).await;
    assert_eq!(
        body["error"],
        "blob unreadable or damaged; see the origin's log"
    );

    let hash = Sha256Hash::of(&f.artifact);
    let result = async {
        client
            .get(f.mirror(&format!("targets/artifacts/{hash}.system-1.img")))
            .send()
            .await?
            .bytes()
            .await
    }
    .await;
    match result {
        Err(_) => {}
        Ok(body) => panic!(
            "a {}-byte body was delivered whole over a damaged chunk",
            body.len()
        ),
    }

    // A chunk cut short (as a power loss may leave it) is refused the same way.
    std::fs::write(&file, &bytes[..10]).unwrap();
    assert_eq!(
        fetch_status(&client, &f.mirror(&format!("chunks/{id}"))).await,
        500
    );
    // The index, and so every other chunk, still serve.
    assert_eq!(
        fetch_status(&client, &f.mirror(&format!("chunks/{}", f.index.0))).await,
        200
    );
}

/// python-tuf's reference client refreshes from the mirror and downloads and verifies the
/// artifact and the release manifest through their hash-prefixed paths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ngclient_refreshes_and_downloads_from_the_mirror() {
    let Some(python) = python() else {
        return;
    };
    let f = Fixture::new().await;
    let root_file = f.dir.path().join("1.root.json");
    std::fs::write(&root_file, &f.root).unwrap();
    let script = workspace_root().join("core/testdata/interop/check_with_ngclient.py");
    let args = [
        script.display().to_string(),
        root_file.display().to_string(),
        f.mirror("metadata/"),
        f.mirror("targets/"),
        ARTIFACT.to_string(),
        MANIFEST.to_string(),
    ];
    let output =
        tokio::task::spawn_blocking(move || std::process::Command::new(python).args(args).output())
            .await
            .unwrap()
            .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "ngclient failed:\n{stdout}\n{stderr}"
    );
    let artifact_hash = Sha256Hash::of(&f.artifact);
    assert!(
        stdout.contains(&format!(
            "ok: {ARTIFACT} ({ARTIFACT_LEN} bytes, sha256 {artifact_hash})"
        )),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("ok: {MANIFEST} (")), "{stdout}");
    assert!(stdout.contains("all 2 target(s) verified"), "{stdout}");
}

// --- the admin API ---------------------------------------------------------------------------

/// Only the token opens the API; /metrics is open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_needs_the_token() {
    let f = Fixture::new().await;
    let client = client();
    for path in [
        "api/releases",
        "api/health",
        "api/devices",
        "api/nothing-here",
    ] {
        let url = f.admin(path);
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("Basic Y29ycmVjdA=="),
            Some("Bearer "),
        ] {
            let mut request = client.get(&url);
            if let Some(auth) = auth {
                request = request.header("authorization", auth);
            }
            let response = request.send().await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{path} {auth:?}"
            );
            assert_eq!(header(&response, "www-authenticate"), "Bearer");
            let body: Value = json(response).await;
            assert_eq!(body["error"], "a valid bearer token is needed");
        }
    }
    let refused = client
        .post(f.admin("api/releases/stable/1/revoke"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        f.release_stage().await,
        "draft",
        "a refused request changes nothing"
    );

    let (status, body) = f.get("api/health").await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, serde_json::json!({ "ok": true }))
    );
    let (status, body) = f.get("api/nothing-here").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("no such route"))
    );

    // Something served, then scraped without a token.
    assert_eq!(
        fetch_status(&client, &f.mirror("metadata/timestamp.json")).await,
        200
    );
    let response = client.get(f.admin("metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(header(&response, "content-type").starts_with("text/plain; version=0.0.4"));
    let text = response.text().await.unwrap();
    assert!(
        text.contains("# TYPE ota_origin_metadata_served_total counter"),
        "{text}"
    );
    assert_eq!(metric(&text, "ota_origin_metadata_served_total"), 1);
    assert_eq!(metric(&text, "ota_origin_health_halts_total"), 0);
}

/// A release moves through its lifecycle over the API; illegal moves are refused with the
/// lifecycle's reason and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_moves_a_release_through_its_lifecycle() {
    let f = Fixture::new().await;

    let (status, list) = f.get("api/releases").await;
    assert_eq!(status, StatusCode::OK);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1);
    let release = &list[0];
    assert_eq!(release["channel"], "stable");
    assert_eq!(release["number"], 1);
    assert_eq!(release["version"], "2026.11.1");
    assert_eq!(release["stage"], "draft");
    assert_eq!(release["stage_text"], "draft");
    assert_eq!(release["security"], false);
    assert_eq!(release["models"], serde_json::json!(["enigm-one"]));
    assert_eq!(release["manifest_target"], MANIFEST);
    assert_eq!(release["halted_reason"], Value::Null);
    assert_eq!(
        release["reports"],
        serde_json::json!({ "successes": 0, "failures": 0 })
    );
    assert_eq!(
        release["health"],
        serde_json::json!({ "health": "too_few_reports", "reports": 0 })
    );
    assert!(release["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(
        release.get("artifacts").is_none(),
        "the list leaves artifacts out"
    );
    assert_eq!(
        f.get("api/releases?channel=beta").await.1,
        serde_json::json!([])
    );
    assert_eq!(
        f.get("api/releases?channel=stable")
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // One release, with its artifacts.
    let (status, one) = f.get("api/releases/stable/1").await;
    assert_eq!(status, StatusCode::OK);
    let artifacts = one["artifacts"].as_array().unwrap();
    assert_eq!(artifacts.len(), 1);
    assert_eq!(artifacts[0]["target"], ARTIFACT);
    assert_eq!(artifacts[0]["length"], ARTIFACT_LEN);
    assert_eq!(artifacts[0]["sha256"], Sha256Hash::of(&f.artifact).to_hex());
    assert_eq!(artifacts[0]["chunk_count"], f.chunks.len());
    assert_eq!(artifacts[0]["chunk_index"], f.index.0.to_hex());

    // A draft is promoted nowhere.
    f.refused(
        "promote",
        r#"{"stable": true}"#,
        409,
        "a draft must pass validation first",
    )
    .await;
    f.refused("halt", "", 409, "a draft must pass validation first")
        .await;
    assert_eq!(f.release_stage().await, "draft");

    // Validation is the command line's (it runs the gates); then the API takes over.
    lifecycle::apply(
        &f.origin,
        &stable(),
        ReleaseNumber(1),
        Command::Validated,
        None,
        "test",
        now(),
    )
    .await
    .unwrap();
    let body = f.ok("promote", r#"{"percent": 12.5}"#).await;
    assert_eq!(body["stage"], "limited");
    assert_eq!(body["basis_points"], 1250);
    assert_eq!(body["stage_text"], "limited (12.50%)");
    f.refused(
        "promote",
        r#"{"percent": 5}"#,
        409,
        "a wave only grows; halt the release to stop offers",
    )
    .await;
    f.refused(
        "promote",
        r#"{"percent": 100}"#,
        409,
        "a limited wave is between 0.01% and 99.99%; use stable for 100%",
    )
    .await;
    f.refused(
        "promote",
        r#"{"security": true}"#,
        409,
        "release 1 is not marked as a security release in its manifest",
    )
    .await;
    // Requests that say nothing sensible.
    for bad in [
        r#"{"percent": 12.345}"#,
        r#"{"percent": -3}"#,
        r#"{"percent": 20, "stable": true}"#,
        r#"{"stable": false}"#,
        r#"{"percentage": 20}"#,
        "",
        "not json",
    ] {
        let (status, body) = f.post("api/releases/stable/1/promote", bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(body["error"].is_string(), "{bad}");
    }

    let body = f.ok("halt", r#"{"reason": "bad batch of eMMC"}"#).await;
    assert_eq!(body["stage"], "halted");
    assert_eq!(
        body["resume"],
        serde_json::json!({ "stage": "limited", "basis_points": 1250 })
    );
    assert_eq!(body["stage_text"], "halted (from limited (12.50%))");
    assert_eq!(body["halted_reason"], "bad batch of eMMC");
    f.refused("halt", "", 409, "the release is already halted")
        .await;
    f.refused(
        "promote",
        r#"{"stable": true}"#,
        409,
        "resume the release before promoting it",
    )
    .await;
    let body = f.ok("resume", "").await;
    assert_eq!(body["stage_text"], "limited (12.50%)");
    assert_eq!(body["halted_reason"], Value::Null);
    f.refused("resume", "", 409, "only a halted release resumes")
        .await;

    // A halt without a reason says who halted it.
    assert_eq!(
        f.ok("halt", "").await["halted_reason"],
        "halted by an operator"
    );
    f.ok("resume", "").await;
    assert_eq!(
        f.ok("promote", r#"{"stable": true}"#).await["stage"],
        "stable"
    );
    assert_eq!(f.ok("revoke", "").await["stage"], "revoked");
    f.refused("resume", "", 409, "a revoked release stays revoked")
        .await;
    f.refused("revoke", "", 409, "a revoked release stays revoked")
        .await;

    // Unknown releases and malformed keys.
    let (status, body) = f.post("api/releases/stable/2/halt", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "no release 2 on channel stable");
    assert_eq!(f.get("api/releases/beta/1").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        f.get("api/releases/stable/one").await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        f.get("api/releases?colour=red").await.0,
        StatusCode::BAD_REQUEST
    );
    let (status, _) = f
        .post("api/releases/stable/1/revoke", r#"{"why": "x"}"#)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// A failing wave halts itself through the health gate, and the API says so and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_gate_halt_shows_in_the_admin_api() {
    let f = Fixture::new().await;
    let (channel, number) = (stable(), ReleaseNumber(1));
    lifecycle::apply(
        &f.origin,
        &channel,
        number,
        Command::Validated,
        None,
        "test",
        now(),
    )
    .await
    .unwrap();
    f.ok("promote", r#"{"percent": 10}"#).await;

    // The fixture's policy: halt above 20% failures over at least 5 reports. 2 of 6 fail.
    for seed in 0..6u8 {
        let device = device(seed, &channel);
        f.origin.catalog.enroll(&device, now()).await.unwrap();
        let outcome = if seed < 2 {
            ReportOutcome::Failure
        } else {
            ReportOutcome::Success
        };
        let report = Report {
            channel: channel.clone(),
            number,
            handle: device.handle,
            outcome,
            error_class: (seed < 2).then(|| "boot-check".to_string()),
            at: now(),
        };
        f.origin.catalog.record_report(&report).await.unwrap();
    }
    let (health, halted) = lifecycle::health_gate(&f.origin, &channel, number, now())
        .await
        .unwrap();
    assert!(halted, "{health:?}");

    let (status, body) = f.get("api/releases/stable/1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["stage"], "halted");
    assert_eq!(
        body["resume"],
        serde_json::json!({ "stage": "limited", "basis_points": 1000 })
    );
    assert_eq!(
        body["halted_reason"],
        "health gate: 33.33% of 6 reports failed, threshold 20.00%"
    );
    assert_eq!(
        body["reports"],
        serde_json::json!({ "successes": 4, "failures": 2 })
    );
    assert_eq!(
        body["health"],
        serde_json::json!({ "health": "failing", "failure_basis_points": 3333 })
    );
    assert_eq!(
        body["health_policy"],
        serde_json::json!({ "max_failure_basis_points": 2000, "min_sample": 5 })
    );
    // An operator may resume it after looking.
    assert_eq!(f.ok("resume", "").await["stage"], "limited");
}

/// Devices page by handle; the listing shows what the director knows, and no key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_lists_devices_a_page_at_a_time() {
    let f = Fixture::new().await;
    let catalog = &f.origin.catalog;
    let mut stable_handles = Vec::new();
    for seed in 0..5u8 {
        let channel = if seed == 4 {
            Channel("beta".into())
        } else {
            stable()
        };
        let device = device(seed, &channel);
        catalog
            .enroll(&device, UnixTime(1_800_000_000))
            .await
            .unwrap();
        if seed != 4 {
            stable_handles.push(device.handle.to_hex());
        }
    }
    stable_handles.sort();
    let first = device(0, &stable()).handle;
    catalog
        .set_installed(&first, Some(ReleaseNumber(1)))
        .await
        .unwrap();
    catalog
        .record_attestation(
            &first,
            AttestationOutcome::Passed,
            &["chain ok".into()],
            UnixTime(1_800_000_100),
        )
        .await
        .unwrap();
    catalog
        .revoke_device(&device(1, &stable()).handle, UnixTime(1_800_000_200))
        .await
        .unwrap();

    let (status, page) = f.get("api/devices?channel=stable&limit=2").await;
    assert_eq!(status, StatusCode::OK);
    let handles = |page: &Value| -> Vec<String> {
        page["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["handle"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(handles(&page), stable_handles[..2]);
    let next = page["next"].as_str().unwrap().to_string();
    assert_eq!(next, stable_handles[1]);
    let (_, page2) = f
        .get(&format!("api/devices?channel=stable&limit=2&after={next}"))
        .await;
    assert_eq!(handles(&page2), stable_handles[2..]);
    assert_eq!(page2["next"], Value::Null, "the last page says so");
    assert_eq!(handles(&f.get("api/devices").await.1).len(), 5);
    assert_eq!(handles(&f.get("api/devices?channel=beta").await.1).len(), 1);

    let (_, all) = f.get("api/devices?channel=stable").await;
    let shown = all["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["handle"] == first.to_hex())
        .unwrap()
        .clone();
    assert_eq!(
        shown,
        serde_json::json!({
            "handle": first.to_hex(),
            "channel": "stable",
            "model": "enigm-one",
            "enrolled_at": "2027-01-15T08:00:00Z",
            "revoked": false,
            "revoked_at": null,
            "installed": 1,
            "attestation": { "outcome": "passed", "at": "2027-01-15T08:01:40Z" },
        })
    );
    let revoked = all["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["handle"] == device(1, &stable()).handle.to_hex())
        .unwrap();
    assert_eq!(revoked["revoked"], true);
    assert_eq!(revoked["revoked_at"], "2027-01-15T08:03:20Z");
    let text = all.to_string();
    let key = hex::encode(device(0, &stable()).public_key);
    assert!(!text.contains(&key), "no public key in the listing");

    for bad in [
        "api/devices?limit=0",
        "api/devices?limit=1001",
        "api/devices?after=xyz",
        "api/devices?limit=two",
    ] {
        let (status, body) = f.get(bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(body["error"].is_string(), "{bad}");
    }
}

// --- the fixture -----------------------------------------------------------------------------

/// An origin with one signed, published release, and both routers serving it.
struct Fixture {
    dir: tempfile::TempDir,
    origin: Arc<Origin>,
    mirror_base: String,
    admin_base: String,
    /// The published `1.root.json`.
    root: Vec<u8>,
    /// The artifact as built.
    artifact: Vec<u8>,
    /// Its chunks, in order (ids may repeat).
    chunks: Vec<(ChunkId, Vec<u8>)>,
    /// Its chunk index.
    index: (ChunkId, Vec<u8>),
    /// The release manifest as published.
    manifest: Vec<u8>,
}

impl Fixture {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("origin");
        DataDir::create(&data, OriginConfig::default()).unwrap();
        let origin = Origin::open(&data).await.unwrap();
        let now = now();

        // The build: pseudo-random bytes with one region repeated, so that one chunk id
        // occurs twice.
        let mut artifact = pseudo_random(ARTIFACT_LEN - 200_000, 7);
        let repeated = artifact[100_000..300_000].to_vec();
        artifact.extend_from_slice(&repeated);
        let mut chunks = Vec::new();
        let mut ingest = Ingest::new(ChunkingParams::DEFAULT);
        let mut sink = |chunk: CutChunk<'_>| {
            chunks.push((*chunk.id(), chunk.bytes().to_vec()));
            Ok::<(), Infallible>(())
        };
        ingest.update(&artifact, &mut sink).unwrap();
        let ingested = ingest.finish(&mut sink).unwrap();
        let index = (ingested.chunks.chunk_index, ingested.index.clone());
        let mut blobs: Vec<BlobRecord> = Vec::new();
        for (id, bytes) in chunks.iter().chain([&index]) {
            origin.blobs.put(id, bytes.clone().into()).await.unwrap();
            blobs.push(BlobRecord {
                id: *id,
                length: bytes.len() as u64,
            });
        }

        // The signed repository.
        let keys = SigningKeys::new();
        let root = keys.root(&origin);
        let expires = now.plus_secs(365 * 86_400);
        let repo = Repository::new(&root).unwrap();
        let ingested_artifact = IngestedArtifact {
            target: ARTIFACT.into(),
            length: ingested.length,
            sha256: ingested.sha256,
            chunks: ingested.chunks.clone(),
            private: false,
        };
        let manifest = ReleaseManifest {
            channel: stable(),
            release: ReleaseNumber(1),
            version: "2026.11.1".into(),
            security: false,
            models: vec!["enigm-one".into()],
            min_installed_release: None,
            artifacts: vec![ManifestArtifact {
                target: ARTIFACT.into(),
                slot: "system".into(),
            }],
        };
        let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
        let release_request =
            repo.release_request(std::slice::from_ref(&ingested_artifact), expires);
        let targets_request = repo
            .targets_request(&manifest, &manifest_bytes, expires)
            .unwrap();
        let (set, _) = repo
            .register(
                &Registration {
                    release_request: &release_request,
                    signed_release: &cosign(&release_request, "release", &keys.release),
                    targets_request: &targets_request,
                    signed_targets: &cosign(&targets_request, "targets", &keys.targets),
                    manifest: &manifest,
                    manifest_bytes: &manifest_bytes,
                    expected: std::slice::from_ref(&ingested_artifact),
                },
                &origin.keys.online,
                origin.dir.config.online_expiry(),
                now,
            )
            .unwrap();

        // The catalog, as `release create` and `register` leave it.
        origin
            .catalog
            .insert_release(
                &NewRelease {
                    channel: stable(),
                    number: ReleaseNumber(1),
                    version: manifest.version.clone(),
                    security: false,
                    models: manifest.models.clone(),
                    min_installed: None,
                    manifest_target: MANIFEST.into(),
                    health: HealthPolicy {
                        max_failure_basis_points: 2000,
                        min_sample: 5,
                    },
                },
                &[ArtifactRecord {
                    target: ARTIFACT.into(),
                    slot: "system".into(),
                    length: ingested.length,
                    sha256: ingested.sha256,
                    blake3: ingested.chunks.blake3,
                    chunk_index: ingested.chunks.chunk_index,
                    chunk_tree: ingested.chunks.chunk_tree,
                    chunk_count: ingested.chunks.chunks,
                }],
                &blobs,
                now,
            )
            .await
            .unwrap();
        let mut files = vec![
            MetadataFile {
                name: "1.root.json".into(),
                role: "root".into(),
                version: 1,
                bytes: root.clone(),
            },
            MetadataFile {
                name: MANIFEST.into(),
                role: "manifest".into(),
                version: 1,
                bytes: manifest_bytes.clone(),
            },
        ];
        for (name, bytes) in set.files {
            let parts: Vec<&str> = name.split('.').collect();
            let (role, version) = match parts[..] {
                [version, role, "json"] => (role.to_string(), version.parse().unwrap()),
                _ => {
                    let signed: Value = serde_json::from_slice(&bytes).unwrap();
                    (
                        parts[0].to_string(),
                        signed["signed"]["version"].as_u64().unwrap(),
                    )
                }
            };
            files.push(MetadataFile {
                name,
                role,
                version,
                bytes,
            });
        }
        origin.catalog.publish(&files, now).await.unwrap();

        let mirror_base = serve(ota_origin::http::mirror(Arc::clone(&origin))).await;
        let admin_base = serve(ota_origin::http::admin(Arc::clone(&origin), TOKEN.into())).await;
        Self {
            dir,
            origin,
            mirror_base,
            admin_base,
            root,
            artifact,
            chunks,
            index,
            manifest: manifest_bytes,
        }
    }

    fn mirror(&self, path: &str) -> String {
        format!("{}/{path}", self.mirror_base)
    }

    fn admin(&self, path: &str) -> String {
        format!("{}/{path}", self.admin_base)
    }

    fn blob_file(&self, id: &ChunkId) -> PathBuf {
        self.dir
            .path()
            .join("origin/blobs")
            .join(BlobStore::key(id))
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = client()
            .get(self.admin(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, json(response).await)
    }

    async fn post(&self, path: &str, body: &str) -> (StatusCode, Value) {
        let response = client()
            .post(self.admin(path))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, json(response).await)
    }

    /// A command on release `stable` 1 that must succeed; the release as it now is.
    async fn ok(&self, command: &str, body: &str) -> Value {
        let (status, answer) = self
            .post(&format!("api/releases/stable/1/{command}"), body)
            .await;
        assert_eq!(status, StatusCode::OK, "{command} {body}: {answer}");
        answer
    }

    /// A command on release `stable` 1 that must be refused, with exactly `error`.
    async fn refused(&self, command: &str, body: &str, code: u16, error: &str) {
        let before = self.release_stage().await;
        let (status, answer) = self
            .post(&format!("api/releases/stable/1/{command}"), body)
            .await;
        assert_eq!(status.as_u16(), code, "{command} {body}: {answer}");
        assert_eq!(
            answer,
            serde_json::json!({ "error": error }),
            "{command} {body}"
        );
        assert_eq!(
            self.release_stage().await,
            before,
            "a refusal changes nothing"
        );
    }

    async fn release_stage(&self) -> String {
        let (_, body) = self.get("api/releases/stable/1").await;
        body["stage_text"].as_str().unwrap().to_string()
    }
}

/// The keys of the signing authorities (fixed seeds, as `ota-sign` would hold them on tokens).
struct SigningKeys {
    root: InMemoryKey,
    targets: InMemoryKey,
    release: InMemoryKey,
}

impl SigningKeys {
    fn new() -> Self {
        Self {
            root: InMemoryKey::ed25519_from_seed([1; 32]),
            targets: InMemoryKey::p256_from_scalar([2; 32]).unwrap(),
            release: InMemoryKey::ed25519_from_seed([3; 32]),
        }
    }

    /// Root version 1, naming the origin's own snapshot and timestamp keys.
    fn root(&self, origin: &Origin) -> Vec<u8> {
        let online = &origin.keys.online;
        let role = |key: &ota_core::tuf::Key| RoleKeys {
            keyids: vec![key.key_id()],
            threshold: 1,
            extra: Default::default(),
        };
        let all = [
            self.root.public(),
            self.targets.public(),
            online.snapshot.public(),
            online.timestamp.public(),
        ];
        let root = Root {
            common: Common::new("root", 1, now().plus_secs(365 * 86_400)),
            consistent_snapshot: true,
            keys: all.iter().map(|key| (key.key_id(), key.clone())).collect(),
            roles: [
                ("root".to_string(), role(&all[0])),
                ("targets".to_string(), role(&all[1])),
                ("snapshot".to_string(), role(&all[2])),
                ("timestamp".to_string(), role(&all[3])),
            ]
            .into(),
            release_authority: Some(ReleaseAuthority {
                keys: [(self.release.public().key_id(), self.release.public())].into(),
                keyids: vec![self.release.public().key_id()],
                threshold: 1,
            }),
            extra: Default::default(),
        };
        sign_role(&root, &[&self.root])
    }
}

/// What `ota-sign sign` does: one more signature over the canonical `signed`.
fn cosign(request: &[u8], role: &str, key: &InMemoryKey) -> Vec<u8> {
    let mut envelope = Envelope::parse(role, "request", request, 16 << 20).unwrap();
    let sig = key.sign(envelope.canonical_signed());
    envelope.add_signature(Signature {
        keyid: key.public().key_id(),
        sig: hex::encode(sig),
    });
    envelope.to_bytes()
}

/// Serve `router` on 127.0.0.1 at a port the OS picks; returns its base URL.
async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{address}")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn fetch_status(client: &reqwest::Client, url: &str) -> u16 {
    client.get(url).send().await.unwrap().status().as_u16()
}

/// The status of `GET path` sent byte for byte as given, without a client's path cleaning.
async fn raw_get_status(base: &str, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let address = base.strip_prefix("http://").unwrap();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    let status_line = answer.lines().next().unwrap_or_default();
    status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"))
}

async fn json(response: reqwest::Response) -> Value {
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// The value of an unlabelled counter in Prometheus text.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
        .parse()
        .unwrap()
}

fn stable() -> Channel {
    Channel("stable".into())
}

fn device(seed: u8, channel: &Channel) -> NewDevice {
    NewDevice {
        handle: DeviceHandle([seed.wrapping_mul(37).wrapping_add(11); 32]),
        public_key: [seed.wrapping_add(100); 32],
        channel: channel.clone(),
        model: "enigm-one".into(),
        validation_cohort: false,
    }
}

fn now() -> UnixTime {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    UnixTime(secs as i64)
}

/// Deterministic bytes that FastCDC cuts into many distinct chunks (xorshift64).
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// The Python with python-tuf, or `None` to skip (failing when interop is required).
fn python() -> Option<String> {
    match std::env::var("OTA_PYTHON") {
        Ok(python) if !python.is_empty() => Some(python),
        _ => {
            assert!(
                std::env::var("OTA_REQUIRE_INTEROP").map_or(true, |v| v != "1"),
                "OTA_REQUIRE_INTEROP=1 but OTA_PYTHON is not set"
            );
            eprintln!("skipping: OTA_PYTHON is not set (scripts/test sets it)");
            None
        }
    }
}

fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}
