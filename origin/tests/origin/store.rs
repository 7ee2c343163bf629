//! The storage layer against real backends: every catalog test runs on SQLite and on a real
//! PostgreSQL server, every blob store test on a local directory and on an S3-compatible
//! server.
//!
//! **PostgreSQL.** The first PostgreSQL test starts one private server for the whole test
//! binary: `initdb` into a temporary directory, `postgres` listening on 127.0.0.1 only, on a
//! port picked free, with its unix socket in that directory; as the `postgres` system user
//! (through `runuser`) when the tests run as root, since PostgreSQL refuses to run as root.
//! Each test gets a database of its own. The server runs under a small shell watchdog whose
//! stdin is a pipe from this process: when the test binary exits, however it exits (even
//! killed), the pipe closes, and the watchdog stops the server (immediate shutdown) and
//! deletes its directory. `OTA_TEST_POSTGRES_URL=postgres://user@host:port` uses an existing
//! server instead (its test databases are left there). Without a PostgreSQL installation the
//! PostgreSQL variants are skipped, or fail when `OTA_REQUIRE_POSTGRES=1` (as `scripts/test`
//! sets).
//!
//! **S3.** The same way, the first S3 test starts `moto_server` (PyPI `moto`, found through
//! `OTA_PYTHON`) on a free loopback port under a watchdog, and creates a bucket; each test
//! uses a prefix of its own. Skipped without moto, failed when `OTA_REQUIRE_S3=1`.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use ota_core::digest::{Blake3Hash, ChunkId, Sha256Hash};
use ota_core::director::{AttestationOutcome, DeviceHandle, HandleKey};
use ota_core::rollout::{Active, HealthPolicy, Stage};
use ota_core::time::UnixTime;
use ota_core::tuf::enigm::{Channel, ReleaseNumber};
use ota_origin::store::{
    ArtifactRecord, BlobError, BlobRecord, BlobStore, Catalog, CatalogError, DeviceState,
    MetadataEntry, MetadataFile, NewDevice, NewRelease, NonceCheck, PrivateContent, PrivateMarks,
    Report, ReportCounts, ReportOutcome, S3Settings, StoredBlob,
};
use sqlx::{Connection as _, Executor as _};

const T0: UnixTime = UnixTime(1_800_000_000);

// --- catalog tests, each on SQLite and on PostgreSQL ------------------------------------------

macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::Db::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(super::Db::Postgres).await;
            }
        }
    )*};
}

on_both_databases!(
    releases_round_trip,
    stage_change_is_compare_and_set,
    racing_stage_changes_have_one_winner,
    blobs_are_recorded_once_across_releases,
    publish_set_dropped_before_commit_publishes_nothing,
    published_files_never_go_back,
    devices_enroll_revoke_and_update,
    nonce_is_single_use_fresh_and_bound,
    nonce_is_single_use_under_concurrency,
    nonce_use_reads_revocation_and_release_generation,
    state_survives_a_reopen,
    reports_count_each_device_once,
    private_content_is_what_no_public_artifact_uses,
);

async fn releases_round_trip(db: Db) {
    let Some(test) = TestCatalog::new(db).await else {
        return;
    };
    let catalog = test.open().await;
    assert_eq!(catalog.backend_name(), db.name());
    assert_eq!(
        catalog.latest_release_number(&stable()).await.unwrap(),
        None
    );

    let release = new_release(&stable(), 5);
    let artifacts = vec![
        artifact("artifacts/system-5.img", "system", 1),
        artifact("artifacts/boot-5.img", "boot", 2),
    ];
    // More blobs than one multi-row INSERT takes.
    let blobs: Vec<BlobRecord> = (0..1_201).map(blob).collect();
    catalog
        .insert_release(&release, &artifacts, &blobs, T0)
        .await
        .unwrap();

    let got = catalog
        .release(&stable(), ReleaseNumber(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.channel, release.channel);
    assert_eq!(got.number, release.number);
    assert_eq!(got.version, release.version);
    assert_eq!(got.stage, Stage::Draft);
    assert_eq!(got.security, release.security);
    assert_eq!(got.models, release.models);
    assert_eq!(got.min_installed, release.min_installed);
    assert_eq!(got.manifest_target, release.manifest_target);
    assert_eq!(got.health, release.health);
    assert_eq!((got.created_at, got.updated_at), (T0, T0));
    assert_eq!(got.halted_reason, None);

    let mut by_target = artifacts.clone();
    by_target.sort_by(|a, b| a.target.cmp(&b.target));
    assert_eq!(
        catalog
            .artifacts(&stable(), ReleaseNumber(5))
            .await
            .unwrap(),
        by_target
    );
    assert_eq!(
        catalog
            .release_blobs(&stable(), ReleaseNumber(5))
            .await
            .unwrap()
            .len(),
        blobs.len()
    );

    // The same release again is refused, and nothing of the refused call is recorded.
    let err = catalog
        .insert_release(
            &release,
            &[artifact("artifacts/other.img", "system", 3)],
            &[blob(99_999)],
            T0,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, CatalogError::ReleaseExists { .. }), "{err}");
    assert_eq!(catalog.blob(&blob(99_999).id).await.unwrap(), None);
    assert_eq!(
        catalog
            .artifacts(&stable(), ReleaseNumber(5))
            .await
            .unwrap(),
        by_target
    );

    catalog
        .insert_release(&new_release(&stable(), 7), &[], &[], T0.plus_secs(1))
        .await
        .unwrap();
    catalog
        .insert_release(&new_release(&beta(), 1), &[], &[], T0.plus_secs(2))
        .await
        .unwrap();
    assert_eq!(
        catalog.latest_release_number(&stable()).await.unwrap(),
        Some(ReleaseNumber(7))
    );
    assert_eq!(
        catalog.latest_release_number(&beta()).await.unwrap(),
        Some(ReleaseNumber(1))
    );
    let keys = |releases: Vec<ota_origin::store::ReleaseRecord>| {
        releases
            .into_iter()
            .map(|r| (r.channel.0, r.number.0))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(catalog.releases(Some(&stable())).await.unwrap()),
        [("stable".to_string(), 5), ("stable".to_string(), 7)]
    );
    assert_eq!(
        keys(catalog.releases(None).await.unwrap()),
        [
            ("beta".to_string(), 1),
            ("stable".to_string(), 5),
            ("stable".to_string(), 7)
        ]
    );
    assert_eq!(
        catalog.release(&stable(), ReleaseNumber(6)).await.unwrap(),
        None
    );

    // What the catalog cannot hold is refused, not truncated.
    let err = catalog
        .insert_release(&new_release(&stable(), u64::MAX), &[], &[], T0)
        .await
        .unwrap_err();
    assert!(matches!(err, CatalogError::OutOfRange { .. }), "{err}");
}

async fn stage_change_is_compare_and_set(db: Db) {
    let Some(test) = TestCatalog::new(db).await else {
        return;
    };
    let catalog = test.open().await;
    let n = ReleaseNumber(1);
    catalog
        .insert_release(&new_release(&stable(), 1), &[], &[], T0)
        .await
        .unwrap();

    let at = T0.plus_secs(10);
    catalog
        .update_stage(&stable(), n, Stage::Draft, Stage::Validation, None, at)
        .await
        .unwrap();
    let release = catalog.release(&stable(), n).await.unwrap().unwrap();
    assert_eq!(release.stage, Stage::Validation);
    assert_eq!((release.created_at, release.updated_at), (T0, at));

    // A caller that saw the old stage loses.
    let err = catalog
        .update_stage(&stable(), n, Stage::Draft, Stage::Validation, None, at)
        .await
        .unwrap_err();
    match err {
        CatalogError::StaleStage {
            expected, found, ..
        } => {
            assert_eq!(expected, Stage::Draft);
            assert_eq!(found, Stage::Validation);
        }
        other => panic!("expected a stale stage, got {other}"),
    }

    let wave = |basis_points| Stage::Limited { basis_points };
    catalog
        .update_stage(&stable(), n, Stage::Validation, wave(100), None, at)
        .await
        .unwrap();
    // The share of a wave is part of the stage: a caller that saw another share loses too.
    let err = catalog
        .update_stage(&stable(), n, wave(1_000), wave(2_000), None, at)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CatalogError::StaleStage { found, .. } if found == wave(100)),
        "{err}"
    );

    // Halted keeps the stage it left and the reason; resuming clears the reason.
    let halted = Stage::Halted {
        resume: Active::Limited { basis_points: 100 },
    };
    let reason = "health gate: 9.00% failures over 5.00%";
    catalog
        .update_stage(&stable(), n, wave(100), halted, Some(reason), at)
        .await
        .unwrap();
    let release = catalog.release(&stable(), n).await.unwrap().unwrap();
    assert_eq!(release.stage, halted);
    assert_eq!(release.halted_reason.as_deref(), Some(reason));
    let err = catalog
        .update_stage(
            &stable(),
            n,
            Stage::Halted {
                resume: Active::Stable,
            },
            Stage::Stable,
            None,
            at,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, CatalogError::StaleStage { .. }), "{err}");
    catalog
        .update_stage(&stable(), n, halted, wave(100), None, at)
        .await
        .unwrap();
    let release = catalog.release(&stable(), n).await.unwrap().unwrap();
    assert_eq!(release.stage, wave(100));
    assert_eq!(release.halted_reason, None);

    let err = catalog
        .update_stage(
            &stable(),
            ReleaseNumber(2),
            Stage::Draft,
            Stage::Validation,
            None,
            at,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, CatalogError::ReleaseNotFound { .. }), "{err}");
}

async fn racing_stage_changes_have_one_winner(db: Db) {
    let Some(test) = TestCatalog::new(db).await else {
        return;
    };
    let catalog = test.open().await;
    for number in 1..=8 {
        let n = ReleaseNumber(number);
        catalog
            .insert_release(&new_release(&stable(), number), &[], &[], T0)
            .await
            .unwrap();
        catalog
            .update_stage(&stable(), n, Stage::Draft, Stage::Validation, None, T0)
            .await
            .unwrap();
        let change = |to: Stage| {
            let catalog = catalog.clone();
            tokio::spawn(async move {
                catalog
                    .update_stage(&stable(), n, Stage::Validation, to, None, T0)
                    .await
                    .map(|()| to)
            })
        };
        let a = change(Stage::Limited { basis_points: 500 });
        let b = change(Stage::Stable);
        let outcomes = [a.await.unwrap(), b.await.unwrap()];
        let winners: Vec<Stage> = outcomes
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .copied()
            .collect();
        assert_eq!(winners.len(), 1, "release {number}: {outcomes:?}");
        let loser = outcomes.iter().find_map(|r| r.as_ref().err()).unwrap();
        assert!(
            matches!(loser, CatalogError::StaleStage { found, .. } if *found == winners[0]),
            "{loser}"
        );
        let stored = catalog.release(&stable(), n).await.unwrap().unwrap();
        assert_eq!(stored.stage, winners[0]);
    }
}

/// `release create --private`: a blob is private when only private artifacts use it, in every
/// release that uses it; the release count moves with every release (the origin re-reads the
/// private content when it does).
async fn private_content_is_what_no_public_artifact_uses(db: Db) {
    let Some(test) = TestCatalog::new(db).await else {
        return;
    };
    let catalog = test.open().await;
    assert_eq!(catalog.release_count().await.unwrap(), 0);
    assert_eq!(
        catalog.private_content().await.unwrap(),
        PrivateContent::default()
    );
    let secret: Vec<BlobRecord> = (0..600).map(blob).collect();
    let public: Vec<BlobRecord> = (600..700).map(blob).collect();
    let blobs_1: Vec<BlobRecord> = secret.iter().chain(&public).copied().collect();
    let marks = PrivateMarks {
        targets: vec!["artifacts/secret-1.img".into()],
        // More than one UPDATE batch.
        blobs: secret.iter().map(|b| b.id).collect(),
    };
    catalog
        .insert_release_marked(
            &new_release(&stable(), 1),
            &[
                artifact("artifacts/secret-1.img", "secret", 1),
                artifact("artifacts/public-1.img", "public", 2),
            ],
            &blobs_1,
            &marks,
            T0,
        )
        .await
        .unwrap();
    assert_eq!(catalog.release_count().await.unwrap(), 1);
    let content = catalog.private_content().await.unwrap();
    assert_eq!(content.targets, ["artifacts/secret-1.img"]);
    let mut expected: Vec<(ChunkId, Channel, ReleaseNumber)> = secret
        .iter()
        .map(|b| (b.id, stable(), ReleaseNumber(1)))
        .collect();
    expected.sort();
    assert_eq!(content.blobs, expected);

    // beta/1 is private too and shares secret[0]: both releases are listed for it. stable/2
    // is public and shares secret[1]: that blob's bytes are public now.
    catalog
        .insert_release_marked(
            &new_release(&beta(), 1),
            &[artifact("artifacts/secret-b1.img", "secret", 3)],
            &[secret[0]],
            &PrivateMarks {
                targets: vec!["artifacts/secret-b1.img".into()],
                blobs: vec![secret[0].id],
            },
            T0,
        )
        .await
        .unwrap();
    catalog
        .insert_release(
            &new_release(&stable(), 2),
            &[artifact("artifacts/public-2.img", "public", 4)],
            &[secret[1]],
            T0,
        )
        .await
        .unwrap();
    assert_eq!(catalog.release_count().await.unwrap(), 3);
    let content = catalog.private_content().await.unwrap();
    assert_eq!(
        content.targets,
        ["artifacts/secret-1.img", "artifacts/secret-b1.img"]
    );
    let of = |id: ChunkId| -> Vec<(Channel, ReleaseNumber)> {
        content
            .blobs
            .iter()
            .filter(|(b, _, _)| *b == id)
            .map(|(_, c, n)| (c.clone(), *n))
            .collect()
    };
    let mut both = vec![(stable(), ReleaseNumber(1)), (beta(), ReleaseNumber(1))];
    both.sort();
    assert_eq!(of(secret[0].id), both);
    assert_eq!(of(secret[1].id), [], "shared with a public release");
    assert_eq!(of(secret[2].id), [(stable(), ReleaseNumber(1))]);
    assert_eq!(of(public[0].id), []);
    assert_eq!(content.blobs.len(), 600);
}

async fn blobs_are_recorded_once_across_releases(db: Db) {
    let Some(test) = TestCatalog::new(db).await else {
        return;
    };
    let catalog = test.open().await;
    let shared: Vec<BlobRecord> = (0..100).map(blob).collect();
    let only_1: Vec<BlobRecord> = (100..150).map(blob).collect();
    let only_2: Vec<BlobRecord> = (150..200).map(blob).collect();
    // A chunk may repeat inside one release (a zero-filled region): recorded once too.
    let blobs_1: Vec<BlobRecord> = shared
        .iter()
        .chain(&only_1)
        .chain(&shared[..10])
        .copied()
        .collect();
    let blobs_2: Vec<BlobRecord> = shared.iter().chain(&only_2).copied().collect();
    catalog
        .insert_release(&new_release(&stable(), 1), &[], &blobs_1, T0)
        .await
        .unwrap();
    catalog
        .insert_release(&new_release(&stable(), 2), &[], &blobs_2, T0)
        .await
        .unwrap();

    let ids = |blobs: &[BlobRecord]| -> Vec<ChunkId> {
        blobs
            .iter()
            .map(|b| b.id)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    assert_eq!(
        catalog
            .release_blobs(&stable(), ReleaseNumber(1))
            .await
            .unwrap(),
        ids(&blobs_1)
    );
    assert_eq!(
        catalog
            .release_blobs(&stable(), ReleaseNumber(2))
            .await
            .unwrap(),
        ids(&blobs_2)
    );
    for b in shared.iter().chain(&only_1).chain(&only_2) {
        assert_eq!(catalog.blob(&b.id).await.unwrap(), Some(*b));
    }
    assert_eq!(
        catalog.blob_releases(&shared[0].id).await.unwrap(),
        [(stable(), ReleaseNumber(1)), (stable(), ReleaseNumber(2))]
    );
    assert_eq!(
        catalog.blob_releases(&only_2[0].id).await.unwrap(),
        [(stable(), ReleaseNumber(2))]
    );
    assert_eq!(catalog.blob_releases(&blob(1_000).id).await.unwrap(), []);
    assert_eq!(catalog.blob(&blob(1_000).id).await.unwrap(), None);
}

async fn publish_set_dropped_before_commit_publishes_nothing(db: Db) {
    let Some(test) = TestCatalog::new(db).await else {
        return;
    };
    let catalog = test.open().await;
    let n = ReleaseNumber(1);
    catalog
        .insert_release(&new_release(&stable(), 1), &[], &[], T0)
        .await
        .unwrap();
    let first = [
        file("1.root.json", "root", 1),
        file("1.targets.json", "targets", 1),
        file("1.snapshot.json", "snapshot", 1),
        file("timestamp.json", "timestamp", 1),
    ];
    catalog.publish(&first, T0).await.unwrap();
    let listing_before = catalog.list_metadata().await.unwrap();
    assert_eq!(listing_before, entries(&first));

    // A register that dies before its commit: every file and the stage change are in the
    // transaction, which is dropped.
    let second = [
        file("2.targets.json", "targets", 2),
        file("2.snapshot.json", "snapshot", 2),
        file("timestamp.json", "timestamp", 2),
    ];
    let mut tx = catalog.begin().await.unwrap();
    for f in &second {
        tx.publish(f, T0.plus_secs(1)).await.unwrap();
    }
    tx.update_stage(
        &stable(),
        n,
        Stage::Draft,
        Stage::Validation,
        None,
        T0.plus_secs(1),
    )
    .await
    .unwrap();
    // Until it commits, nobody else sees any of it.
    assert_eq!(catalog.list_metadata().await.unwrap(), listing_before);
    drop(tx);

    assert_eq!(catalog.list_metadata().await.unwrap(), listing_before);
    for f in &first {
        assert_eq!(catalog.metadata(&f.name).await.unwrap().as_ref(), Some(f));
    }
    assert_eq!(catalog.metadata("2.snapshot.json").await.unwrap(), None);
    assert_eq!(
        catalog.latest_metadata("snapshot").await.unwrap().as_ref(),
        Some(&first[2])
    );
    let release = catalog.release(&stable(), n).await.unwrap().unwrap();
    assert_eq!(release.stage, Stage::Draft);

    // A set that fails half-way (its last file would roll timestamp.json back) publishes
    // none of its files either.
    let mut tx = catalog.begin().await.unwrap();
    tx.publish(&file("2.targets.json", "targets", 2), T0)
        .await
        .unwrap();
    let err = tx
        .publish(&file("timestamp.json", "timestamp", 0), T0)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CatalogError::MetadataRollback { .. }),
        "{err}"
    );
    drop(tx);
    assert_eq!(catalog.list_metadata().await.unwrap(), listing_before);

    // The same set, committed, is all there, with the stage change.
    let mut tx = catalog.begin().await.unwrap();
    for f in &second {
        tx.publish(f, T0.plus_secs(2)).await.unwrap();
    }
    tx.update_stage(
        &stable(),
        n,
        Stage::Draft,
        Stage::Validation,
        None,
        T0.plus_secs(2),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    for f in &second {
        assert_eq!(catalog.metadata(&f.name).await.unwrap().as_ref(), Some(f));
    }
    assert_eq!(
        catalog.metadata("1.snapshot.json").await.unwrap().as_ref(),
        Some(&first[2])
    );
    assert_eq!(
        catalog.latest_metadata("snapshot").await.unwrap().as_ref(),
        Some(&second[1])
    );
    let release = catalog.release(&stable(), n).await.unwrap().unwrap();
    assert_eq!(release.stage, Stage::Validation);
}

async fn published_files_never_go_back(db: Db) {
    let Some(test) = TestCatalog::new(db).await else {
        return;
    };
    let catalog = test.open().await;
    // Bytes are stored exactly, whatever they are, and large files too.
    let mut big = file("2.targets.json", "targets", 2);
    big.bytes = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    big.bytes[..4].copy_from_slice(&[0x00, 0xff, 0xfe, 0x00]);
    let timestamp = |version| file("timestamp.json", "timestamp", version);
    catalog
        .publish(&[big.clone(), timestamp(5)], T0)
        .await
        .unwrap();
    assert_eq!(
        catalog.metadata("2.targets.json").await.unwrap().as_ref(),
        Some(&big)
    );

    // The same version with the same bytes again: a retried register, a no-op.
    catalog.publish(&[timestamp(5)], T0).await.unwrap();
    // The same version with other bytes: refused.
    let mut forged = timestamp(5);
    forged.bytes.extend_from_slice(b" forged");
    let err = catalog.publish(&[forged], T0).await.unwrap_err();
    assert!(
        matches!(
            &err,
            CatalogError::MetadataConflict { name, version: 5 } if name == "timestamp.json"
        ),
        "{err}"
    );
    // An older version: refused.
    let err = catalog.publish(&[timestamp(4)], T0).await.unwrap_err();
    assert!(
        matches!(
            err,
            CatalogError::MetadataRollback {
                stored: 5,
                offered: 4,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        catalog.metadata("timestamp.json").await.unwrap(),
        Some(timestamp(5))
    );
    // A newer version replaces it.
    catalog.publish(&[timestamp(6)], T0).await.unwrap();
    assert_eq!(
        catalog.metadata("timestamp.json").await.unwrap(),
        Some(timestamp(6))
    );
    assert_eq!(
        catalog.list_metadata().await.unwrap(),
        entries(&[big, timestamp(6)])
    );
}

async fn devices_enroll_revoke_and_update(db: Db) {
    let Some(test) = TestCatalog::new(db).await else {
        return;
    };
    let catalog = test.open().await;
    let devices: Vec<NewDevice> = (0..10)
        .map(|i| device(i, if i % 2 == 0 { stable() } else { beta() }))
        .collect();
    for d in &devices {
        catalog.enroll(d, T0).await.unwrap();
    }
    let err = catalog.enroll(&devices[3], T0).await.unwrap_err();
    assert!(
        matches!(err, CatalogError::DeviceExists { handle } if handle == devices[3].handle),
        "{err}"
    );

    let got = catalog.device(&devices[0].handle).await.unwrap().unwrap();
    assert_eq!(got.handle, devices[0].handle);
    assert_eq!(got.public_key, devices[0].public_key);
    assert_eq!(got.channel, stable());
    assert_eq!(got.model, devices[0].model);
    assert_eq!(got.enrolled_at, T0);
    assert_eq!(got.revoked_at, None);
    assert!(got.validation_cohort);
    assert_eq!(got.installed, None);
    assert_eq!(got.attestation, None);

    // Paged listing, by handle, of one channel or all.
    let mut stable_handles: Vec<DeviceHandle> = devices
        .iter()
        .filter(|d| d.channel == stable())
        .map(|d| d.handle)
        .collect();
    stable_handles.sort();
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let page = catalog
            .devices(Some(&stable()), after.as_ref(), 2)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        after = page.last().map(|d| d.handle);
        listed.extend(page.into_iter().map(|d| d.handle));
    }
    assert_eq!(listed, stable_handles);
    assert_eq!(catalog.devices(None, None, 100).await.unwrap().len(), 10);

    // Revocation is kept with its first time.
    let handle = devices[0].handle;
    catalog
        .revoke_device(&handle, T0.plus_secs(5))
        .await
        .unwrap();
    catalog
        .revoke_device(&handle, T0.plus_secs(9))
        .await
        .unwrap();
    // What a serving origin asks to withdraw grants: revoked at or after a time (the first).
    assert_eq!(
        catalog
            .revoked_devices_since(T0.plus_secs(5))
            .await
            .unwrap(),
        vec![handle]
    );
    assert!(
        catalog
            .revoked_devices_since(T0.plus_secs(6))
            .await
            .unwrap()
            .is_empty()
    );
    catalog
        .set_installed(&handle, Some(ReleaseNumber(4)))
        .await
        .unwrap();
    let reasons = vec![
        "verified boot: green".to_string(),
        "patch level 2026-10".to_string(),
    ];
    catalog
        .record_attestation(
            &handle,
            AttestationOutcome::Passed,
            &reasons,
            T0.plus_secs(6),
        )
        .await
        .unwrap();
    let got = catalog.device(&handle).await.unwrap().unwrap();
    assert_eq!(got.revoked_at, Some(T0.plus_secs(5)));
    assert!(got.is_revoked());
    assert_eq!(got.installed, Some(ReleaseNumber(4)));
    let attestation = got.attestation.clone().unwrap();
    assert_eq!(attestation.outcome, AttestationOutcome::Passed);
    assert_eq!(attestation.reasons, reasons);
    assert_eq!(attestation.at, T0.plus_secs(6));
    let facts = got.facts();
    assert!(facts.revoked);
    assert_eq!(facts.installed, Some(ReleaseNumber(4)));
    assert_eq!(facts.attestation, Some(AttestationOutcome::Passed));
    assert_eq!(facts.channel, stable());

    catalog.set_installed(&handle, None).await.unwrap();
    assert_eq!(
        catalog.device(&handle).await.unwrap().unwrap().installed,
        None
    );

    let stranger = device(200, stable()).handle;
    assert_eq!(catalog.device(&stranger).await.unwrap(), None);
    for err in [
        catalog.revoke_device(&stranger, T0).await.unwrap_err(),
        catalog.set_installed(&stranger, None).await.unwrap_err(),
        catalog
            .record_attestation(&stranger, AttestationOutcome::Failed, &[], T0)
            .await
            .unwrap_err(),
    ] {
        assert!(
            matches!(err, CatalogError::DeviceNotFound { handle } if handle == stranger),
            "{err}"
        );
    }
}

async fn nonce_is_single_use_fresh_and_bound(db: Db) {
    let Some(test) = TestCatalog::new(db).await else {
        return;
    };
    let catalog = test.open().await;
    let connection = [1u8; 32];
    let other_connection = [2u8; 32];
    let expires = T0.plus_secs(60);
    for i in 0..4 {
        catalog
            .issue_nonce(&nonce(i), &connection, T0, expires)
            .await
            .unwrap();
    }
    assert!(matches!(
        catalog
            .issue_nonce(&nonce(0), &connection, T0, expires)
            .await,
        Err(CatalogError::NonceExists)
    ));

    let now = T0.plus_secs(1);
    assert_eq!(
        catalog
            .consume_nonce(&nonce(0), &connection, now)
            .await
            .unwrap(),
        NonceCheck::Accept
    );
    assert_eq!(
        catalog
            .consume_nonce(&nonce(0), &connection, now)
            .await
            .unwrap(),
        NonceCheck::AlreadyUsed
    );
    // Carried over another connection: refused, and the nonce stays usable where it belongs.
    assert_eq!(
        catalog
            .consume_nonce(&nonce(1), &other_connection, now)
            .await
            .unwrap(),
        NonceCheck::OtherConnection
    );
    assert_eq!(
        catalog
            .consume_nonce(&nonce(1), &connection, now)
            .await
            .unwrap(),
        NonceCheck::Accept
    );
    // Expired: at its expiry time and after.
    assert_eq!(
        catalog
            .consume_nonce(&nonce(2), &connection, expires)
            .await
            .unwrap(),
        NonceCheck::Expired
    );
    assert_eq!(
        catalog
            .consume_nonce(&nonce(99), &connection, now)
            .await
            .unwrap(),
        NonceCheck::Unknown
    );

    // Purging drops the expired nonces only; a purged nonce is unknown, still refused.
    catalog
        .issue_nonce(&nonce(10), &connection, T0, T0.plus_secs(600))
        .await
        .unwrap();
    assert_eq!(catalog.purge_nonces(expires).await.unwrap(), 4);
    assert_eq!(
        catalog
            .consume_nonce(&nonce(0), &connection, expires)
            .await
            .unwrap(),
        NonceCheck::Unknown
    );
    assert_eq!(
        catalog
            .consume_nonce(&nonce(10), &connection, expires)
            .await
            .unwrap(),
        NonceCheck::Accept
    );
}

async fn nonce_is_single_use_under_concurrency(db: Db) {
    let Some(test) = TestCatalog::new(db).await else {
        return;
    };
    let catalog = test.open().await;
    let connection = [7u8; 32];
    for i in 0..16 {
        catalog
            .issue_nonce(&nonce(i), &connection, T0, T0.plus_secs(60))
            .await
            .unwrap();
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let catalog = catalog.clone();
                tokio::spawn(async move {
                    catalog
                        .consume_nonce(&nonce(i), &connection, T0.plus_secs(1))
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut checks = Vec::new();
        for task in tasks {
            checks.push(task.await.unwrap());
        }
        let accepted = checks.iter().filter(|c| **c == NonceCheck::Accept).count();
        assert_eq!(accepted, 1, "nonce {i}: {checks:?}");
        assert!(
            checks
                .iter()
                .all(|c| matches!(c, NonceCheck::Accept | NonceCheck::AlreadyUsed)),
            "nonce {i}: {checks:?}"
        );
    }
}

/// `use_nonce`, the one catalog statement of a check-in: single use (also across a reopen and
/// under a race), and it reads the device's revocation and the release generation of that
/// moment, which every release created and every stage change moves (a generation read
/// before a change is always below one read after it).
async fn nonce_use_reads_revocation_and_release_generation(db: Db) {
    let Some(test) = TestCatalog::new(db).await else {
        return;
    };
    let connection = [4u8; 32];
    let (issued, expires) = (T0, T0.plus_secs(60));
    let enrolled = device(1, stable());
    let stranger = device(2, stable()).handle;
    let used = |catalog: Catalog, i: u8, handle: DeviceHandle| async move {
        catalog
            .use_nonce(&nonce(i), &connection, issued, expires, &handle)
            .await
            .unwrap()
    };
    let generation = {
        let catalog = test.open().await;
        catalog.enroll(&enrolled, T0).await.unwrap();
        let first = used(catalog.clone(), 0, enrolled.handle).await.unwrap();
        assert_eq!(first.device, DeviceState::Enrolled);
        assert_eq!(
            first.generation,
            catalog.release_generation().await.unwrap()
        );
        // A replay: no second use.
        assert_eq!(used(catalog.clone(), 0, enrolled.handle).await, None);
        // The device as the statement reads it.
        let unknown = used(catalog.clone(), 1, stranger).await.unwrap();
        assert_eq!(unknown.device, DeviceState::Unknown);

        // Every release created and every stage change moves the generation.
        catalog
            .insert_release(&new_release(&stable(), 1), &[], &[], T0)
            .await
            .unwrap();
        let created = used(catalog.clone(), 2, enrolled.handle).await.unwrap();
        assert!(created.generation > first.generation, "{created:?}");
        catalog
            .update_stage(
                &stable(),
                ReleaseNumber(1),
                Stage::Draft,
                Stage::Validation,
                None,
                T0,
            )
            .await
            .unwrap();
        let promoted = used(catalog.clone(), 3, enrolled.handle).await.unwrap();
        assert!(promoted.generation > created.generation, "{promoted:?}");
        // A stage change that loses its compare-and-set changes nothing.
        assert!(
            catalog
                .update_stage(
                    &stable(),
                    ReleaseNumber(1),
                    Stage::Draft,
                    Stage::Validation,
                    None,
                    T0,
                )
                .await
                .is_err()
        );
        assert_eq!(
            catalog.release_generation().await.unwrap(),
            promoted.generation
        );

        catalog.revoke_device(&enrolled.handle, T0).await.unwrap();
        let revoked = used(catalog.clone(), 4, enrolled.handle).await.unwrap();
        assert_eq!(revoked.device, DeviceState::Revoked);

        // Many uses at once (recorded together): each gets its own outcome.
        let other = device(3, stable());
        catalog.enroll(&other, T0).await.unwrap();
        let handles = [enrolled.handle, stranger, other.handle];
        let states = [
            DeviceState::Revoked,
            DeviceState::Unknown,
            DeviceState::Enrolled,
        ];
        let many: Vec<_> = (10..74u8)
            .map(|i| tokio::spawn(used(catalog.clone(), i, handles[usize::from(i % 3)])))
            .collect();
        for (i, task) in (10..74u8).zip(many) {
            let outcome = task.await.unwrap().unwrap();
            assert_eq!(outcome.device, states[usize::from(i % 3)], "{i}");
            assert_eq!(outcome.generation, promoted.generation, "{i}");
        }
        let again: Vec<_> = (10..74u8)
            .map(|i| tokio::spawn(used(catalog.clone(), i, other.handle)))
            .collect();
        for task in again {
            assert_eq!(task.await.unwrap(), None);
        }

        // Racing uses of one nonce: exactly one wins.
        let racers: Vec<_> = (0..6)
            .map(|_| tokio::spawn(used(catalog.clone(), 5, stranger)))
            .collect();
        let mut winners = 0;
        for racer in racers {
            winners += usize::from(racer.await.unwrap().is_some());
        }
        assert_eq!(winners, 1);
        catalog.close().await;
        promoted.generation
    };
    // A restarted origin: used nonces stay used, an unused one is usable once, and the
    // generation is where it was.
    let catalog = test.open().await;
    for i in [0, 2, 5] {
        assert_eq!(used(catalog.clone(), i, enrolled.handle).await, None, "{i}");
    }
    let fresh = used(catalog.clone(), 6, enrolled.handle).await.unwrap();
    assert_eq!(fresh.generation, generation);
    assert_eq!(fresh.device, DeviceState::Revoked);
}

async fn state_survives_a_reopen(db: Db) {
    let Some(test) = TestCatalog::new(db).await else {
        return;
    };
    let connection = [3u8; 32];
    {
        let catalog = test.open().await;
        for i in 0..2 {
            catalog
                .issue_nonce(&nonce(i), &connection, T0, T0.plus_secs(60))
                .await
                .unwrap();
        }
        assert_eq!(
            catalog
                .consume_nonce(&nonce(0), &connection, T0)
                .await
                .unwrap(),
            NonceCheck::Accept
        );
        catalog.enroll(&device(1, stable()), T0).await.unwrap();
        catalog
            .publish(&[file("1.root.json", "root", 1)], T0)
            .await
            .unwrap();
        catalog.close().await;
    }
    // A restarted origin (migrations run again, as a no-op) refuses the used nonce and
    // accepts the unused one.
    let catalog = test.open().await;
    assert_eq!(
        catalog
            .consume_nonce(&nonce(0), &connection, T0.plus_secs(1))
            .await
            .unwrap(),
        NonceCheck::AlreadyUsed
    );
    assert_eq!(
        catalog
            .consume_nonce(&nonce(1), &connection, T0.plus_secs(1))
            .await
            .unwrap(),
        NonceCheck::Accept
    );
    assert!(
        catalog
            .device(&device(1, stable()).handle)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        catalog.metadata("1.root.json").await.unwrap(),
        Some(file("1.root.json", "root", 1))
    );
}

async fn reports_count_each_device_once(db: Db) {
    let Some(test) = TestCatalog::new(db).await else {
        return;
    };
    let catalog = test.open().await;
    let n = ReleaseNumber(3);
    catalog
        .insert_release(&new_release(&stable(), 3), &[], &[], T0)
        .await
        .unwrap();
    let devices: Vec<NewDevice> = (0..5).map(|i| device(i, stable())).collect();
    for d in &devices {
        catalog.enroll(d, T0).await.unwrap();
    }
    let report = |i: usize, outcome, at| Report {
        channel: stable(),
        number: n,
        handle: devices[i].handle,
        outcome,
        error_class: (outcome == ReportOutcome::Failure).then(|| "boot-check".to_string()),
        at,
    };
    assert_eq!(
        catalog.report_counts(&stable(), n).await.unwrap(),
        ReportCounts::default()
    );
    for i in 0..3 {
        catalog
            .record_report(&report(i, ReportOutcome::Success, T0.plus_secs(10)))
            .await
            .unwrap();
    }
    // One device reporting failure again and again counts once.
    for _ in 0..5 {
        catalog
            .record_report(&report(3, ReportOutcome::Failure, T0.plus_secs(10)))
            .await
            .unwrap();
    }
    assert_eq!(
        catalog.report_counts(&stable(), n).await.unwrap(),
        ReportCounts {
            successes: 3,
            failures: 1
        }
    );
    // A later report replaces a device's earlier one; an older one does not.
    catalog
        .record_report(&report(3, ReportOutcome::Success, T0.plus_secs(20)))
        .await
        .unwrap();
    catalog
        .record_report(&report(0, ReportOutcome::Failure, T0.plus_secs(5)))
        .await
        .unwrap();
    assert_eq!(
        catalog.report_counts(&stable(), n).await.unwrap(),
        ReportCounts {
            successes: 4,
            failures: 0
        }
    );
    assert_eq!(
        catalog
            .report_counts(&stable(), ReleaseNumber(4))
            .await
            .unwrap(),
        ReportCounts::default()
    );

    // A report about a device or release the catalog does not hold is refused (foreign
    // keys are enforced, on SQLite too).
    let mut stranger = report(0, ReportOutcome::Success, T0);
    stranger.handle = device(200, stable()).handle;
    let err = catalog.record_report(&stranger).await.unwrap_err();
    assert!(
        matches!(err, CatalogError::UnknownReference { .. }),
        "{err}"
    );
    let mut unknown_release = report(0, ReportOutcome::Success, T0);
    unknown_release.number = ReleaseNumber(9);
    let err = catalog.record_report(&unknown_release).await.unwrap_err();
    assert!(
        matches!(err, CatalogError::UnknownReference { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn sqlite_catalog_is_a_wal_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.db");
    let catalog = Catalog::open(path.to_str().unwrap()).await.unwrap();
    catalog
        .publish(&[file("1.root.json", "root", 1)], T0)
        .await
        .unwrap();
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    // A sqlite: URL names the same file.
    let again = Catalog::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    assert!(again.metadata("1.root.json").await.unwrap().is_some());
}

#[tokio::test]
async fn other_locations_are_refused_without_leaking_credentials() {
    let err = Catalog::open("mysql://ota:hunter2@db.example/ota")
        .await
        .unwrap_err();
    assert!(matches!(err, CatalogError::Location { .. }), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

// --- blob store tests, each on a local directory and on S3 ---------------------------------

macro_rules! on_both_blob_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn local() {
                super::$name(super::Blobs::Local).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn s3() {
                super::$name(super::Blobs::S3).await;
            }
        }
    )*};
}

on_both_blob_stores!(blobs_put_get_delete, damaged_blob_is_not_served);

async fn blobs_put_get_delete(kind: Blobs) {
    let Some(test) = TestBlobs::new(kind) else {
        return;
    };
    let store = &test.store;
    let bytes = Bytes::from(vec![0x5a; 100_000]);
    let id = ChunkId::of(&bytes);
    assert!(!store.exists(&id).await.unwrap());
    assert_eq!(store.get(&id, 1 << 20).await.unwrap(), None);
    assert_eq!(store.get_verified(&id, 1 << 20).await.unwrap(), None);

    assert_eq!(
        store.put(&id, bytes.clone()).await.unwrap(),
        StoredBlob::Written
    );
    assert_eq!(
        store.put(&id, bytes.clone()).await.unwrap(),
        StoredBlob::AlreadyPresent
    );
    assert!(store.exists(&id).await.unwrap());
    assert_eq!(store.length(&id).await.unwrap(), Some(100_000));
    assert_eq!(store.get(&id, 100_000).await.unwrap(), Some(bytes.clone()));
    assert_eq!(
        store.get_verified(&id, 100_000).await.unwrap(),
        Some(bytes.clone())
    );
    // One byte over the caller's bound: refused before the body is read.
    let err = store.get(&id, 99_999).await.unwrap_err();
    assert!(
        matches!(
            err,
            BlobError::TooLarge {
                length: 100_000,
                max: 99_999,
                ..
            }
        ),
        "{err}"
    );

    // The empty blob is a blob like any other.
    let empty = ChunkId::of(b"");
    store.put(&empty, Bytes::new()).await.unwrap();
    assert_eq!(
        store.get_verified(&empty, 0).await.unwrap(),
        Some(Bytes::new())
    );

    store.delete(&id).await.unwrap();
    assert!(!store.exists(&id).await.unwrap());
    assert_eq!(store.get(&id, 1 << 20).await.unwrap(), None);
    store.delete(&id).await.unwrap();
}

async fn damaged_blob_is_not_served(kind: Blobs) {
    let Some(test) = TestBlobs::new(kind) else {
        return;
    };
    let store = &test.store;
    // The store does not check what it is given; what it serves is checked.
    let id = ChunkId::of(b"the chunk the index names");
    let wrong = Bytes::from_static(b"other bytes under its name");
    store.put(&id, wrong.clone()).await.unwrap();
    assert_eq!(store.get(&id, 1024).await.unwrap(), Some(wrong.clone()));
    let err = store.get_verified(&id, 1024).await.unwrap_err();
    assert!(
        matches!(
            err,
            BlobError::Damaged { id: asked, found } if asked == id && found == ChunkId::of(&wrong)
        ),
        "{err}"
    );
}

#[tokio::test]
async fn damaged_file_on_disk_is_caught() {
    let test = TestBlobs::new(Blobs::Local).unwrap();
    let bytes = Bytes::from((0..65_536u32).map(|i| (i * 7) as u8).collect::<Vec<u8>>());
    let id = ChunkId::of(&bytes);
    test.store.put(&id, bytes.clone()).await.unwrap();
    let file = test.dir().join(BlobStore::key(&id));

    // One flipped bit.
    let mut damaged = std::fs::read(&file).unwrap();
    damaged[40_000] ^= 0x01;
    std::fs::write(&file, &damaged).unwrap();
    let err = test.store.get_verified(&id, 1 << 20).await.unwrap_err();
    assert!(matches!(err, BlobError::Damaged { .. }), "{err}");
    assert_eq!(
        test.store.get(&id, 1 << 20).await.unwrap(),
        Some(Bytes::from(damaged))
    );

    // Cut short, as a power loss may leave a file that was never synced.
    std::fs::write(&file, &bytes[..1000]).unwrap();
    let err = test.store.get_verified(&id, 1 << 20).await.unwrap_err();
    assert!(matches!(err, BlobError::Damaged { .. }), "{err}");

    // Deleting and storing again repairs it.
    test.store.delete(&id).await.unwrap();
    test.store.put(&id, bytes.clone()).await.unwrap();
    assert_eq!(
        test.store.get_verified(&id, 1 << 20).await.unwrap(),
        Some(bytes)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_put_is_atomic() {
    let test = TestBlobs::new(Blobs::Local).unwrap();
    let store = test.store.clone();

    // A reader racing a writer sees no blob or the whole blob, never a part.
    let bytes = Bytes::from(vec![0xa5; 16 << 20]);
    let id = ChunkId::of(&bytes);
    let writer = tokio::spawn({
        let store = store.clone();
        async move { store.put(&id, bytes).await.unwrap() }
    });
    let mut misses = 0u32;
    let seen = loop {
        match store.get_verified(&id, 16 << 20).await.unwrap() {
            Some(seen) => break seen,
            None => misses += 1,
        }
        assert!(misses < 1_000_000, "the blob never appeared");
        tokio::task::yield_now().await;
    };
    assert_eq!(seen.len(), 16 << 20);
    assert_eq!(writer.await.unwrap(), StoredBlob::Written);

    // A writer killed half-way leaves only its temporary file, which no id names: the blob
    // is not there, and storing it again writes it whole.
    let bytes = Bytes::from_static(b"a blob whose first writer was killed");
    let id = ChunkId::of(&bytes);
    let file = test.dir().join(BlobStore::key(&id));
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let mut staging = file.clone().into_os_string();
    staging.push("#1");
    std::fs::write(&staging, &bytes[..10]).unwrap();
    assert!(!store.exists(&id).await.unwrap());
    assert_eq!(store.get(&id, 1024).await.unwrap(), None);
    assert_eq!(
        store.put(&id, bytes.clone()).await.unwrap(),
        StoredBlob::Written
    );
    assert_eq!(store.get_verified(&id, 1024).await.unwrap(), Some(bytes));

    // A completed put leaves exactly the blobs, under their keys, and no temporary file.
    let mut files = Vec::new();
    collect_files(&test.dir(), &mut files);
    let mut names: Vec<String> = files
        .iter()
        .map(|f| f.strip_prefix(test.dir()).unwrap().display().to_string())
        .collect();
    names.sort();
    let mut expected = vec![
        BlobStore::key(&ChunkId::of(&vec![0xa5; 16 << 20])),
        BlobStore::key(&id),
        PathBuf::from(staging)
            .strip_prefix(test.dir())
            .unwrap()
            .display()
            .to_string(),
    ];
    expected.sort();
    assert_eq!(names, expected);
}

// --- fixtures ------------------------------------------------------------------------------

fn stable() -> Channel {
    Channel("stable".to_string())
}

fn beta() -> Channel {
    Channel("beta".to_string())
}

fn new_release(channel: &Channel, number: u64) -> NewRelease {
    NewRelease {
        channel: channel.clone(),
        number: ReleaseNumber(number),
        version: format!("2026.11.{number}"),
        security: number.is_multiple_of(2),
        models: vec!["enigm-a1".to_string(), "enigm-b2".to_string()],
        min_installed: number.checked_sub(2).map(ReleaseNumber),
        manifest_target: format!("releases/{}/2026.11.{number}.json", channel.0),
        health: HealthPolicy {
            max_failure_basis_points: 500,
            min_sample: 20,
        },
    }
}

fn artifact(target: &str, slot: &str, seed: u8) -> ArtifactRecord {
    ArtifactRecord {
        target: target.to_string(),
        slot: slot.to_string(),
        length: 2_147_483_648 + u64::from(seed),
        sha256: Sha256Hash::of(&[seed, 1]),
        blake3: Blake3Hash::of(&[seed, 2]),
        chunk_index: ChunkId::of(&[seed, 3]),
        chunk_tree: Blake3Hash::of(&[seed, 4]),
        chunk_count: 32_768,
    }
}

fn blob(seed: u64) -> BlobRecord {
    BlobRecord {
        id: ChunkId::of(&seed.to_le_bytes()),
        length: 16_384 + seed,
    }
}

fn file(name: &str, role: &str, version: u64) -> MetadataFile {
    MetadataFile {
        name: name.to_string(),
        role: role.to_string(),
        version,
        bytes: format!("{{\"signed\":{{\"_type\":\"{role}\",\"version\":{version}}}}}")
            .into_bytes(),
    }
}

fn entries(files: &[MetadataFile]) -> Vec<MetadataEntry> {
    let mut entries: Vec<MetadataEntry> = files
        .iter()
        .map(|f| MetadataEntry {
            name: f.name.clone(),
            role: f.role.clone(),
            version: f.version,
            length: f.bytes.len() as u64,
        })
        .collect();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    entries
}

fn device(seed: u8, channel: Channel) -> NewDevice {
    let public_key = [seed; 32];
    NewDevice {
        handle: DeviceHandle::derive(&HandleKey([0x42; 32]), &public_key),
        public_key,
        channel,
        model: "enigm-a1".to_string(),
        validation_cohort: seed.is_multiple_of(3),
    }
}

fn nonce(seed: u8) -> [u8; 32] {
    *Blake3Hash::of(&[seed, 0x6e]).as_bytes()
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

// --- the backends --------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Db {
    Sqlite,
    Postgres,
}

impl Db {
    fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// A fresh catalog location: a SQLite file in a temporary directory, or a new database on the
/// test PostgreSQL server.
struct TestCatalog {
    location: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestCatalog {
    /// `None` when the backend is not available here (and not required).
    async fn new(db: Db) -> Option<Self> {
        match db {
            Db::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let location = dir.path().join("catalog.db").display().to_string();
                Some(Self {
                    location,
                    _dir: Some(dir),
                })
            }
            Db::Postgres => {
                let server = postgres()?;
                Some(Self {
                    location: server.create_database().await.unwrap(),
                    _dir: None,
                })
            }
        }
    }

    async fn open(&self) -> Catalog {
        Catalog::open(&self.location).await.unwrap()
    }
}

#[derive(Debug, Clone, Copy)]
enum Blobs {
    Local,
    S3,
}

/// A fresh blob store: a temporary directory, or a prefix of its own in the test bucket.
struct TestBlobs {
    store: BlobStore,
    dir: Option<tempfile::TempDir>,
}

impl TestBlobs {
    fn new(kind: Blobs) -> Option<Self> {
        match kind {
            Blobs::Local => {
                let dir = tempfile::tempdir().unwrap();
                let store =
                    BlobStore::open(&dir.path().join("blobs").display().to_string()).unwrap();
                Some(Self {
                    store,
                    dir: Some(dir),
                })
            }
            Blobs::S3 => {
                let server = s3()?;
                static NEXT: AtomicU32 = AtomicU32::new(0);
                let prefix = format!(
                    "run-{}/t{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                );
                let store =
                    BlobStore::open_with(&format!("s3://{S3_BUCKET}/{prefix}"), &server.settings())
                        .unwrap();
                Some(Self { store, dir: None })
            }
        }
    }

    /// The directory of a local store.
    fn dir(&self) -> PathBuf {
        self.dir.as_ref().unwrap().path().join("blobs")
    }
}

fn required(variable: &str) -> bool {
    std::env::var(variable).is_ok_and(|value| value == "1")
}

/// A backend that could not be had: fail if the run requires it, skip otherwise.
fn unavailable(what: &str, variable: &str, why: &str) {
    assert!(
        !required(variable),
        "{what} is required ({variable}=1) but unavailable: {why}"
    );
    eprintln!("skipping a {what} test: {why}");
}

// --- PostgreSQL ----------------------------------------------------------------------------

enum PgServer {
    /// Our own server, stopped by its watchdog when this process exits.
    Private { port: u16, _watchdog: Watchdog },
    /// A server given by `OTA_TEST_POSTGRES_URL` (`postgres://user[:password]@host:port`).
    External { url: String },
}

static POSTGRES: OnceLock<Result<PgServer, String>> = OnceLock::new();

fn postgres() -> Option<&'static PgServer> {
    match POSTGRES.get_or_init(|| start_postgres().map_err(|e| format!("{e:#}"))) {
        Ok(server) => Some(server),
        Err(why) => {
            unavailable("PostgreSQL", "OTA_REQUIRE_POSTGRES", why);
            None
        }
    }
}

impl PgServer {
    /// The URL of database `name` on the server.
    fn url(&self, name: &str) -> String {
        match self {
            Self::Private { port, .. } => format!("postgres://ota@127.0.0.1:{port}/{name}"),
            Self::External { url } => {
                let (base, query) = url.split_once('?').unwrap_or((url, ""));
                let authority_end = base
                    .find("://")
                    .and_then(|s| base[s + 3..].find('/').map(|p| s + 3 + p))
                    .unwrap_or(base.len());
                let query = if query.is_empty() {
                    String::new()
                } else {
                    format!("?{query}")
                };
                format!("{}/{name}{query}", &base[..authority_end])
            }
        }
    }

    /// Creates a database of its own for one test; returns its URL.
    async fn create_database(&self) -> anyhow::Result<String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "ota_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .context("connecting to the test PostgreSQL server")?;
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .with_context(|| format!("creating database {name}"))?;
        admin.close().await?;
        Ok(self.url(&name))
    }
}

/// Runs initdb and postgres as `$1`'s owner, then waits for stdin to close (this process
/// exiting, however it exits) and stops the server (immediate shutdown) and deletes its
/// directory. Arguments: directory, port, bin directory.
const POSTGRES_WATCHDOG: &str = r#"
dir=$1 port=$2 bin=$3
if ! "$bin/initdb" -D "$dir/data" -U ota -A trust -E UTF8 --locale=C --no-sync \
    >"$dir/initdb.log" 2>&1; then
  cat "$dir/initdb.log" >&2
  rm -rf "$dir"
  exit 1
fi
"$bin/postgres" -D "$dir/data" -h 127.0.0.1 -p "$port" -k "$dir" \
  -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
  </dev/null >"$dir/postgres.log" 2>&1 &
pid=$!
read -r _ || true
kill -QUIT "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
rm -rf "$dir"
"#;

fn start_postgres() -> anyhow::Result<PgServer> {
    if let Ok(url) = std::env::var("OTA_TEST_POSTGRES_URL") {
        return Ok(PgServer::External { url });
    }
    let bin = postgres_bindir()?;
    let port = free_port()?;
    let as_root = running_as_root()?;
    // As root, in /tmp, which the postgres user can reach whatever TMPDIR says. (A short path
    // too: the unix socket's path must fit in 107 bytes.)
    let parent = if as_root {
        PathBuf::from("/tmp")
    } else {
        std::env::temp_dir()
    };
    let dir = tempfile::Builder::new()
        .prefix("ota-pg-")
        .tempdir_in(&parent)
        .context("creating the PostgreSQL directory")?
        .keep();
    let mut command = if as_root {
        // PostgreSQL refuses to run as root.
        let uid = id_of("-u", "postgres")?;
        let gid = id_of("-g", "postgres")?;
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
            .with_context(|| format!("giving {} to the postgres user", dir.display()))?;
        let runuser = ["/usr/sbin/runuser", "/sbin/runuser"]
            .into_iter()
            .find(|path| Path::new(path).is_file())
            .unwrap_or("runuser");
        let mut command = Command::new(runuser);
        command.args(["-u", "postgres", "--"]);
        command.arg("sh");
        command
    } else {
        Command::new("sh")
    };
    command
        .args(["-c", POSTGRES_WATCHDOG, "sh"])
        .arg(&dir)
        .arg(port.to_string())
        .arg(&bin);
    let mut watchdog = Watchdog::spawn(command).context("starting PostgreSQL")?;

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = watchdog.exited()? {
            bail!("PostgreSQL's watchdog exited ({status}): initdb failed, see its output above");
        }
        let log = std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default();
        // (A connection attempt while it starts is refused with a FATAL line of its own.)
        let failed = log
            .lines()
            .any(|line| line.contains("FATAL") && !line.contains("is starting up"));
        if failed {
            bail!("PostgreSQL did not start:\n{log}");
        }
        let ready = Command::new(bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-U", "ota", "-d", "postgres", "-p"])
            .arg(port.to_string())
            .status()
            .context("running pg_isready")?;
        if ready.success() {
            return Ok(PgServer::Private {
                port,
                _watchdog: watchdog,
            });
        }
        if Instant::now() > deadline {
            bail!("PostgreSQL did not accept connections within 60 s:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The directory of `initdb` and `postgres`: `OTA_PG_BINDIR`, the newest
/// `/usr/lib/postgresql/*/bin` (Debian), or where `initdb` is on the `PATH`.
fn postgres_bindir() -> anyhow::Result<PathBuf> {
    let has_server = |dir: &Path| {
        ["initdb", "postgres", "pg_isready"]
            .iter()
            .all(|program| dir.join(program).is_file())
    };
    if let Ok(dir) = std::env::var("OTA_PG_BINDIR") {
        let dir = PathBuf::from(dir);
        if !has_server(&dir) {
            bail!("OTA_PG_BINDIR={} holds no PostgreSQL server", dir.display());
        }
        return Ok(dir);
    }
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| has_server(bin))
        .collect();
    debian.sort();
    if let Some((_, bin)) = debian.pop() {
        return Ok(bin);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .find(|dir| has_server(dir))
        .context("no PostgreSQL server installed (Debian package `postgresql`)")
}

fn running_as_root() -> anyhow::Result<bool> {
    Ok(std::fs::metadata("/proc/self")
        .context("reading /proc/self")?
        .uid()
        == 0)
}

fn id_of(flag: &str, user: &str) -> anyhow::Result<u32> {
    let output = Command::new("id")
        .args([flag, user])
        .output()
        .context("running id")?;
    if !output.status.success() {
        bail!("no `{user}` system user to run PostgreSQL as (it refuses to run as root)");
    }
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .with_context(|| format!("parsing `id {flag} {user}`"))
}

// --- S3 (moto) -----------------------------------------------------------------------------

const S3_BUCKET: &str = "ota-test";

struct S3Server {
    port: u16,
    _watchdog: Watchdog,
}

static S3: OnceLock<Result<S3Server, String>> = OnceLock::new();

fn s3() -> Option<&'static S3Server> {
    match S3.get_or_init(|| start_s3().map_err(|e| format!("{e:#}"))) {
        Ok(server) => Some(server),
        Err(why) => {
            unavailable("S3", "OTA_REQUIRE_S3", why);
            None
        }
    }
}

impl S3Server {
    fn settings(&self) -> S3Settings {
        S3Settings {
            endpoint: Some(format!("http://127.0.0.1:{}", self.port)),
            region: Some("us-east-1".to_string()),
            access_key_id: Some("ota-test".to_string()),
            secret_access_key: Some("ota-test-secret".to_string()),
            session_token: None,
            allow_http: true,
        }
    }
}

/// Runs moto's S3 server until stdin closes. Arguments: python, port.
const MOTO_WATCHDOG: &str = r#"
"$1" -m moto.server -H 127.0.0.1 -p "$2" </dev/null >/dev/null 2>&1 &
pid=$!
read -r _ || true
kill "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
"#;

fn start_s3() -> anyhow::Result<S3Server> {
    let python = std::env::var("OTA_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let probe = Command::new(&python)
        .args(["-c", "import moto.server, flask, flask_cors"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !probe.is_ok_and(|status| status.success()) {
        bail!(
            "moto's server is not installed for {python} \
             (pip install -r origin/tests/requirements-s3.txt; OTA_PYTHON names the python)"
        );
    }
    let port = free_port()?;
    let mut command = Command::new("sh");
    command
        .args(["-c", MOTO_WATCHDOG, "sh", &python])
        .arg(port.to_string());
    let watchdog = Watchdog::spawn(command).context("starting moto")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while http(port, "GET / HTTP/1.1").is_err() {
        if Instant::now() > deadline {
            bail!("moto did not answer on port {port} within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = http(port, &format!("PUT /{S3_BUCKET} HTTP/1.1"))?;
    if !status.contains(" 200 ") {
        bail!("creating bucket {S3_BUCKET}: {status}");
    }
    Ok(S3Server {
        port,
        _watchdog: watchdog,
    })
}

/// Sends one bodiless HTTP request to 127.0.0.1:`port`; returns the status line.
fn http(port: u16, request_line: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{request_line}\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response);
    let status = response.lines().next().unwrap_or_default().to_string();
    if !status.starts_with("HTTP/1.") {
        bail!("not an HTTP response: {status:?}");
    }
    Ok(status)
}

// --- helpers -------------------------------------------------------------------------------

/// A child process that lives while the write end of its stdin is open, i.e. while this
/// process lives: the kernel closes it when this process exits, even when killed, and the
/// child then cleans up after itself. (Statics are never dropped, so no destructor could.)
struct Watchdog {
    child: Child,
}

impl Watchdog {
    fn spawn(mut command: Command) -> std::io::Result<Self> {
        let child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()?;
        Ok(Self { child })
    }

    fn exited(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.child.try_wait()
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
