//! The catalog: what the origin knows, in SQLite or PostgreSQL.
//!
//! One query layer for both: [`Catalog`] holds a pool of one backend or the other, and every
//! operation is written once (the `on_backend!` and `on_tx!` macros expand the same code for
//! each backend). Queries are plain `sqlx::query` strings checked at run time, with `$N`
//! placeholders, which both SQLite and PostgreSQL read; the schema lives in
//! `origin/migrations/{sqlite,postgres}/` and is applied on [`Catalog::open`].
//!
//! The catalog never reads the clock: every operation that records or judges a time takes
//! `now` from its caller, like the state machines of `ota-core`.
//!
//! Tables (see the migration for the exact columns and constraints):
//!
//! | table | key | what |
//! |---|---|---|
//! | `releases` | channel, number | a release and its stage, rollout share and health gate |
//! | `artifacts` | channel, number, target | the artifacts of a release, as signed |
//! | `blobs` | id | every stored blob, once |
//! | `release_blobs` | channel, number, blob | which releases use which blobs |
//! | `metadata` | name | the files the origin serves (`N.root.json`, `timestamp.json`, …) |
//! | `devices` | handle | enrolled devices: key, channel, model, revocation, release, attestation |
//! | `nonces` | nonce | single-use request nonces bound to a connection |
//! | `relays` | public key | site peers allowed to relay devices' signed requests |
//! | `reports` | channel, number, handle | each device's latest install outcome per release |
//! | `catalog_generation` | (one row) | moves with every release created and stage change |
//!
//! `artifacts.private` and `release_blobs.private` mark private content (see
//! [`Catalog::private_content`]).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ota_core::digest::{Blake3Hash, ChunkId, Sha256Hash};
use ota_core::director::{AttestationOutcome, DeviceFacts, DeviceHandle};
use ota_core::rollout::{Active, HealthPolicy, Stage};
use ota_core::time::UnixTime;
use ota_core::tuf::enigm::{Channel, ReleaseNumber};
use sqlx::error::{BoxDynError, ErrorKind};
use sqlx::migrate::{MigrateError, Migration, MigrationSource, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Postgres, QueryBuilder, Sqlite, Transaction};

/// How long a SQLite connection waits for another writer before giving up.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections per pool.
const SQLITE_MAX_CONNECTIONS: u32 = 4;
const POSTGRES_MAX_CONNECTIONS: u32 = 8;
/// How long an operation waits for a free pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
/// Rows per multi-row `INSERT`: well under SQLite's 32 766 and PostgreSQL's 65 535 bound
/// parameters per statement.
const INSERT_BATCH_ROWS: usize = 500;

/// The migrations, one set per backend (the SQL differs only in the blob column type).
const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "catalog",
        include_str!("../../migrations/sqlite/0001_catalog.sql"),
    ),
    (
        2,
        "relays",
        include_str!("../../migrations/sqlite/0002_relays.sql"),
    ),
    (
        3,
        "private",
        include_str!("../../migrations/sqlite/0003_private.sql"),
    ),
    (
        4,
        "generation",
        include_str!("../../migrations/sqlite/0004_generation.sql"),
    ),
];
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "catalog",
        include_str!("../../migrations/postgres/0001_catalog.sql"),
    ),
    (
        2,
        "relays",
        include_str!("../../migrations/postgres/0002_relays.sql"),
    ),
    (
        3,
        "private",
        include_str!("../../migrations/postgres/0003_private.sql"),
    ),
    (
        4,
        "generation",
        include_str!("../../migrations/postgres/0004_generation.sql"),
    ),
];

/// Adds one to the release generation (see `migrations/*/0004_generation.sql`): run in the
/// transaction of every write that creates a release or changes its stage.
const BUMP_GENERATION: &str =
    "UPDATE catalog_generation SET generation = generation + 1 WHERE id = 1";

/// The artifacts of each release read so far (see [`Catalog::artifacts`]).
type ArtifactsCache = Arc<Mutex<HashMap<(Channel, ReleaseNumber), Vec<ArtifactRecord>>>>;

/// The origin's catalog (see the module documentation). Cheap to clone: clones share the
/// connection pool.
#[derive(Clone)]
pub struct Catalog {
    backend: Backend,
    /// Where request nonces are issued and used: for a SQLite file, one connection of its own
    /// that commits without waiting for the disk (see [`Catalog::open`]); otherwise `backend`.
    nonces: Backend,
    /// The artifacts of each release, once read: they never change after
    /// [`Catalog::insert_release`], and every offer lists them.
    artifacts: ArtifactsCache,
    /// Where it lives, for messages (a PostgreSQL URL without its credentials).
    location: String,
    /// Nonce uses waiting to be recorded (see [`Catalog::use_nonce`]).
    nonce_uses: tokio::sync::mpsc::UnboundedSender<PendingUse>,
}

/// A catalog transaction for changes that must become visible together: the TUF files of a
/// `register` and the stage change that goes with them. Nothing is visible to anyone else
/// until [`CatalogTx::commit`]; dropping it (or a crash) discards everything.
pub struct CatalogTx {
    inner: TxInner,
}

/// What `release create --private` marks in [`Catalog::insert_release_marked`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrivateMarks {
    /// Target paths of the private artifacts.
    pub targets: Vec<String>,
    /// Blobs of the release that only its private artifacts use (never a chunk index).
    pub blobs: Vec<ChunkId>,
}

/// The private content recorded (see [`Catalog::private_content`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrivateContent {
    /// Each private blob with a release that uses it (one row per release).
    pub blobs: Vec<(ChunkId, Channel, ReleaseNumber)>,
    /// Target paths of private artifacts.
    pub targets: Vec<String>,
}

/// A release as `release create` records it: always a draft.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRelease {
    /// Its channel.
    pub channel: Channel,
    /// Its number in the channel.
    pub number: ReleaseNumber,
    /// The version shown to people, e.g. `2026.11.2`.
    pub version: String,
    /// Whether it is a security release.
    pub security: bool,
    /// The device models it is built for.
    pub models: Vec<String>,
    /// The lowest installed release it upgrades from.
    pub min_installed: Option<ReleaseNumber>,
    /// The target path of its release manifest, e.g. `releases/stable/2026.11.2.json`.
    pub manifest_target: String,
    /// When install reports halt its rollout.
    pub health: HealthPolicy,
}

/// A release as the catalog holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseRecord {
    /// Its channel.
    pub channel: Channel,
    /// Its number in the channel.
    pub number: ReleaseNumber,
    /// The version shown to people.
    pub version: String,
    /// Where it is in its lifecycle.
    pub stage: Stage,
    /// Whether it is a security release.
    pub security: bool,
    /// The device models it is built for.
    pub models: Vec<String>,
    /// The lowest installed release it upgrades from.
    pub min_installed: Option<ReleaseNumber>,
    /// The target path of its release manifest.
    pub manifest_target: String,
    /// When install reports halt its rollout.
    pub health: HealthPolicy,
    /// When it was created.
    pub created_at: UnixTime,
    /// When its stage last changed.
    pub updated_at: UnixTime,
    /// Why it was halted, when it was.
    pub halted_reason: Option<String>,
}

/// One artifact of a release, as the `release` role signs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactRecord {
    /// Its target path, e.g. `artifacts/system-2026.11.2.img`.
    pub target: String,
    /// The install slot, e.g. `system`.
    pub slot: String,
    /// Its length in bytes.
    pub length: u64,
    /// SHA-256 of the whole artifact.
    pub sha256: Sha256Hash,
    /// BLAKE3 of the whole artifact.
    pub blake3: Blake3Hash,
    /// The blob id of its chunk index.
    pub chunk_index: ChunkId,
    /// The root of its chunk tree.
    pub chunk_tree: Blake3Hash,
    /// How many chunks it has.
    pub chunk_count: u64,
}

/// A blob the blob store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlobRecord {
    /// Its id: the BLAKE3 hash of its bytes.
    pub id: ChunkId,
    /// Its length in bytes.
    pub length: u64,
}

/// A file the origin serves (TUF metadata and other published files).
#[derive(Clone, PartialEq, Eq)]
pub struct MetadataFile {
    /// Its name, e.g. `3.root.json` or `timestamp.json`.
    pub name: String,
    /// The TUF role it belongs to, e.g. `root`.
    pub role: String,
    /// Its version: never goes down for a name, and one version has one content.
    pub version: u64,
    /// Its bytes, exactly as served.
    pub bytes: Vec<u8>,
}

/// A published file without its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataEntry {
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: String,
    /// Its version.
    pub version: u64,
    /// Its length in bytes.
    pub length: u64,
}

/// A device to enroll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDevice {
    /// Its handle (derived from its key with the fleet's handle key).
    pub handle: DeviceHandle,
    /// Its Ed25519 public key.
    pub public_key: [u8; 32],
    /// The channel it follows.
    pub channel: Channel,
    /// Its model.
    pub model: String,
    /// Whether it is in the validation cohort.
    pub validation_cohort: bool,
}

/// An enrolled device: everything the origin stores about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// Its handle.
    pub handle: DeviceHandle,
    /// Its Ed25519 public key.
    pub public_key: [u8; 32],
    /// The channel it follows.
    pub channel: Channel,
    /// Its model.
    pub model: String,
    /// When it was enrolled.
    pub enrolled_at: UnixTime,
    /// When its enrollment was revoked, if it was.
    pub revoked_at: Option<UnixTime>,
    /// Whether it is in the validation cohort.
    pub validation_cohort: bool,
    /// The release it last said it runs.
    pub installed: Option<ReleaseNumber>,
    /// Its latest attestation outcome.
    pub attestation: Option<AttestationRecord>,
}

/// A stored attestation outcome: the policy's verdict, never the evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationRecord {
    /// The verdict.
    pub outcome: AttestationOutcome,
    /// The policy's reasons, for operators.
    pub reasons: Vec<String>,
    /// When it was judged.
    pub at: UnixTime,
}

/// A site peer enrolled to relay devices' signed requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayRecord {
    /// Its Ed25519 node public key.
    pub public_key: [u8; 32],
    /// The operator's name for it.
    pub name: String,
    /// When it was enrolled.
    pub enrolled_at: UnixTime,
    /// When it was revoked, if it was.
    pub revoked_at: Option<UnixTime>,
}

/// What [`Catalog::consume_nonce`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// The nonce was fresh, unused and issued on this connection; it is now used.
    Accept,
    /// No such nonce was issued (or it expired and was purged).
    Unknown,
    /// The nonce was already used.
    AlreadyUsed,
    /// The nonce expired.
    Expired,
    /// The nonce was issued on another connection.
    OtherConnection,
}

/// What [`Catalog::use_nonce`] read when it recorded a nonce's use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonceUse {
    /// The requesting device's enrollment at that moment.
    pub device: DeviceState,
    /// The release generation at that moment.
    pub generation: i64,
}

/// A device's enrollment, as [`Catalog::use_nonce`] read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceState {
    /// Enrolled and not revoked.
    Enrolled,
    /// Enrolled, then revoked.
    Revoked,
    /// Not enrolled.
    Unknown,
}

/// An install report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The release's channel.
    pub channel: Channel,
    /// The release's number.
    pub number: ReleaseNumber,
    /// The reporting device.
    pub handle: DeviceHandle,
    /// What happened.
    pub outcome: ReportOutcome,
    /// The error class of a failure, e.g. `boot-check`.
    pub error_class: Option<String>,
    /// When it was reported.
    pub at: UnixTime,
}

/// The outcome of an install.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportOutcome {
    /// Installed and booted.
    Success,
    /// Failed, and the device runs its old release.
    Failure,
}

/// Install outcomes of one release, one per device (its latest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportCounts {
    /// Devices whose latest report is a success.
    pub successes: u64,
    /// Devices whose latest report is a failure.
    pub failures: u64,
}

/// A catalog operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// The location is neither a SQLite path nor a `sqlite:` or `postgres://` URL.
    #[error(
        "catalog location {location:?} is not a SQLite path, a sqlite: URL or a postgres:// URL"
    )]
    Location {
        /// The location, without credentials.
        location: String,
    },
    /// The database could not be opened or reached.
    #[error("cannot open the catalog at {location}: {source}")]
    Open {
        /// The location, without credentials.
        location: String,
        /// What the driver said.
        #[source]
        source: sqlx::Error,
    },
    /// The schema could not be brought up to date.
    #[error("cannot migrate the catalog at {location}: {source}")]
    Migrate {
        /// The location, without credentials.
        location: String,
        /// What the migrator said.
        #[source]
        source: MigrateError,
    },
    /// The database refused or failed an operation.
    #[error("catalog: {op}: {source}")]
    Database {
        /// The operation.
        op: &'static str,
        /// What the driver said.
        #[source]
        source: sqlx::Error,
    },
    /// A stored row breaks the catalog's rules (a damaged or hand-edited database).
    #[error("catalog: {op}: stored {column} is invalid: {detail}")]
    Corrupt {
        /// The operation that read it.
        op: &'static str,
        /// The column.
        column: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// A value given to the catalog is outside what it can store.
    #[error("catalog: {op}: {what} is out of range")]
    OutOfRange {
        /// The operation.
        op: &'static str,
        /// Which value.
        what: &'static str,
    },
    /// A release with this channel and number already exists.
    #[error("release {} {} already exists", .channel.0, .number.0)]
    ReleaseExists {
        /// Its channel.
        channel: Channel,
        /// Its number.
        number: ReleaseNumber,
    },
    /// No release with this channel and number.
    #[error("release {} {} not found", .channel.0, .number.0)]
    ReleaseNotFound {
        /// The channel asked for.
        channel: Channel,
        /// The number asked for.
        number: ReleaseNumber,
    },
    /// A stage change lost a race: the release is no longer at the stage its caller saw.
    #[error(
        "release {} {} is at stage {found}, not {expected}: someone else changed it",
        .channel.0, .number.0
    )]
    StaleStage {
        /// Its channel.
        channel: Channel,
        /// Its number.
        number: ReleaseNumber,
        /// The stage the caller expected.
        expected: Stage,
        /// The stage it is at.
        found: Stage,
    },
    /// A published file would go back to an older version.
    #[error("published file {name} is at version {stored}; refusing version {offered}")]
    MetadataRollback {
        /// The file name.
        name: String,
        /// The version published.
        stored: u64,
        /// The version offered.
        offered: u64,
    },
    /// A published file's version already exists with other bytes.
    #[error("published file {name} version {version} already exists with other content")]
    MetadataConflict {
        /// The file name.
        name: String,
        /// The version.
        version: u64,
    },
    /// A device with this handle is already enrolled.
    #[error("device {handle} is already enrolled")]
    DeviceExists {
        /// Its handle.
        handle: DeviceHandle,
    },
    /// No device with this handle.
    #[error("device {handle} is not enrolled")]
    DeviceNotFound {
        /// The handle asked for.
        handle: DeviceHandle,
    },
    /// A relay with this key is already enrolled.
    #[error("relay {} is already enrolled", hex::encode(.public_key))]
    RelayExists {
        /// Its key.
        public_key: [u8; 32],
    },
    /// No relay with this key.
    #[error("relay {} is not enrolled", hex::encode(.public_key))]
    RelayNotFound {
        /// The key asked for.
        public_key: [u8; 32],
    },
    /// A nonce with this value was already issued.
    #[error("nonce already issued")]
    NonceExists,
    /// A report names a release or device the catalog does not hold.
    #[error("catalog: {op}: the release or device it names is not in the catalog")]
    UnknownReference {
        /// The operation.
        op: &'static str,
    },
}

impl Catalog {
    /// Opens the catalog at `location` and brings its schema up to date:
    ///
    /// - `postgres://…` or `postgresql://…`: a PostgreSQL database (plaintext connection:
    ///   keep it on loopback, a unix socket or a private network);
    /// - `sqlite:PATH`, `sqlite://PATH` or a plain path: a SQLite file, created if missing,
    ///   in WAL mode with foreign keys on, synchronous commits and a busy timeout.
    ///
    /// Request nonces are the exception to synchronous commits, and the only writes of a
    /// check-in: on a SQLite file, one connection of their own records them, and its
    /// commits do not wait for the disk (WAL with `synchronous = NORMAL`: a process crash
    /// loses none of them, a power loss or kernel crash may lose the last ones). A lost nonce
    /// cannot let a replay through: a nonce is only accepted on the connection it was issued
    /// on (the request's signature covers that connection's channel binding too), and every
    /// connection ends with the process that held it. Waiting for the disk at every check-in
    /// would cap a SQLite origin at a few hundred check-ins per second; one connection keeps
    /// nonce writes from queueing on SQLite's lock, where they would sleep and retry.
    pub async fn open(location: &str) -> Result<Self, CatalogError> {
        if location.starts_with("postgres://") || location.starts_with("postgresql://") {
            Self::open_postgres(location).await
        } else if location.starts_with("sqlite:") || !location.contains("://") {
            Self::open_sqlite(location).await
        } else {
            Err(CatalogError::Location {
                location: redact(location),
            })
        }
    }

    async fn open_sqlite(location: &str) -> Result<Self, CatalogError> {
        let shown = location.to_string();
        let open_error = |source| CatalogError::Open {
            location: shown.clone(),
            source,
        };
        let options = if location.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(location).map_err(open_error)?
        } else {
            SqliteConnectOptions::new().filename(location)
        };
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(SQLITE_BUSY_TIMEOUT);
        // No liveness test when a connection is taken from the pool: a connection to a local
        // file does not hang up, and the test is one more trip to the connection's thread.
        let pool = SqlitePoolOptions::new()
            .max_connections(SQLITE_MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await
            .map_err(open_error)?;
        let migrator = Migrator::new(Embedded(SQLITE_MIGRATIONS))
            .await
            .map_err(|source| CatalogError::Migrate {
                location: shown.clone(),
                source,
            })?;
        migrator
            .run(&pool)
            .await
            .map_err(|source| CatalogError::Migrate {
                location: shown.clone(),
                source,
            })?;
        // An in-memory database exists once per connection: its nonces stay on the pool.
        let in_memory = location.contains(":memory:") || location.contains("mode=memory");
        let nonces = if in_memory {
            pool.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(1)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .test_before_acquire(false)
                .connect_with(options.synchronous(SqliteSynchronous::Normal))
                .await
                .map_err(open_error)?
        };
        Ok(Self::new(
            Backend::Sqlite(pool),
            Backend::Sqlite(nonces),
            shown,
        ))
    }

    fn new(backend: Backend, nonces: Backend, location: String) -> Self {
        let (nonce_uses, pending) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(record_nonce_uses(nonces.clone(), pending));
        Self {
            backend,
            nonces,
            artifacts: Arc::default(),
            location,
            nonce_uses,
        }
    }

    async fn open_postgres(location: &str) -> Result<Self, CatalogError> {
        let shown = redact(location);
        let open_error = |source| CatalogError::Open {
            location: shown.clone(),
            source,
        };
        let options = PgConnectOptions::from_str(location).map_err(open_error)?;
        let pool = PgPoolOptions::new()
            .max_connections(POSTGRES_MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(open_error)?;
        let migrator = Migrator::new(Embedded(POSTGRES_MIGRATIONS))
            .await
            .map_err(|source| CatalogError::Migrate {
                location: shown.clone(),
                source,
            })?;
        // The migrator holds an advisory lock, so replicas starting together migrate once.
        migrator
            .run(&pool)
            .await
            .map_err(|source| CatalogError::Migrate {
                location: shown.clone(),
                source,
            })?;
        Ok(Self::new(
            Backend::Postgres(pool.clone()),
            Backend::Postgres(pool),
            shown,
        ))
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Where the catalog lives (a PostgreSQL URL without its credentials).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Closes every connection (SQLite checkpoints its WAL into the database file).
    pub async fn close(&self) {
        on_backend!(&self.nonces, |pool, _Db| pool.close().await);
        on_backend!(&self.backend, |pool, _Db| pool.close().await);
    }

    /// Begins a transaction (see [`CatalogTx`]).
    pub async fn begin(&self) -> Result<CatalogTx, CatalogError> {
        const OP: &str = "begin transaction";
        let inner = match &self.backend {
            Backend::Sqlite(pool) => TxInner::Sqlite(pool.begin_write().await.map_err(db(OP))?),
            Backend::Postgres(pool) => TxInner::Postgres(pool.begin_write().await.map_err(db(OP))?),
        };
        Ok(CatalogTx { inner })
    }

    // --- releases ----------------------------------------------------------------------

    /// Records a new draft release with its artifacts and the blobs it uses, in one
    /// transaction. A blob that another release already recorded is recorded once.
    pub async fn insert_release(
        &self,
        release: &NewRelease,
        artifacts: &[ArtifactRecord],
        blobs: &[BlobRecord],
        now: UnixTime,
    ) -> Result<(), CatalogError> {
        self.insert_release_marked(release, artifacts, blobs, &PrivateMarks::default(), now)
            .await
    }

    /// [`Catalog::insert_release`], marking in the same transaction the artifacts and blobs
    /// of `private` (see [`PrivateMarks`]): a release is never visible with its private
    /// content unmarked.
    pub async fn insert_release_marked(
        &self,
        release: &NewRelease,
        artifacts: &[ArtifactRecord],
        blobs: &[BlobRecord],
        private: &PrivateMarks,
        now: UnixTime,
    ) -> Result<(), CatalogError> {
        const OP: &str = "insert release";
        let mut private_blobs: Vec<String> = private.blobs.iter().map(ChunkId::to_hex).collect();
        private_blobs.sort_unstable();
        private_blobs.dedup();
        let number = to_i64(release.number.0, OP, "release number")?;
        let min_installed = release
            .min_installed
            .map(|n| to_i64(n.0, OP, "minimum installed release"))
            .transpose()?;
        if release.health.max_failure_basis_points > 10_000 {
            return Err(CatalogError::OutOfRange {
                op: OP,
                what: "failure threshold",
            });
        }
        let min_sample = to_i64(release.health.min_sample, OP, "minimum sample")?;
        let models =
            serde_json::to_string(&release.models).map_err(|_| CatalogError::OutOfRange {
                op: OP,
                what: "models",
            })?;
        let artifact_rows = artifacts
            .iter()
            .map(|a| {
                Ok((
                    a,
                    to_i64(a.length, OP, "artifact length")?,
                    to_i64(a.chunk_count, OP, "chunk count")?,
                ))
            })
            .collect::<Result<Vec<_>, CatalogError>>()?;
        let mut blob_rows = blobs
            .iter()
            .map(|b| Ok((b.id.to_hex(), to_i64(b.length, OP, "blob length")?)))
            .collect::<Result<Vec<_>, CatalogError>>()?;
        blob_rows.sort_unstable();
        blob_rows.dedup_by(|a, b| a.0 == b.0);
        let channel = release.channel.0.as_str();

        on_backend!(&self.backend, |pool, Db| {
            let mut tx = pool.begin_write().await.map_err(db(OP))?;
            let inserted = sqlx::query(
                "INSERT INTO releases (channel, number, version, stage, resume_stage, \
                 basis_points, security, models, min_installed, manifest_target, \
                 failure_threshold_bp, min_sample, created_at, updated_at, halted_reason) \
                 VALUES ($1, $2, $3, 'draft', NULL, NULL, $4, $5, $6, $7, $8, $9, $10, $10, NULL) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(channel)
            .bind(number)
            .bind(&release.version)
            .bind(release.security)
            .bind(&models)
            .bind(min_installed)
            .bind(&release.manifest_target)
            .bind(i64::from(release.health.max_failure_basis_points))
            .bind(min_sample)
            .bind(now.0)
            .execute(&mut *tx)
            .await
            .map_err(db(OP))?;
            if inserted.rows_affected() == 0 {
                return Err(CatalogError::ReleaseExists {
                    channel: release.channel.clone(),
                    number: release.number,
                });
            }
            for batch in artifact_rows.chunks(INSERT_BATCH_ROWS) {
                let mut query = QueryBuilder::<Db>::new(
                    "INSERT INTO artifacts (channel, number, target, slot, length, sha256, \
                     blake3, chunk_index, chunk_tree, chunk_count) ",
                );
                query.push_values(batch, |mut row, (a, length, count)| {
                    row.push_bind(channel)
                        .push_bind(number)
                        .push_bind(a.target.as_str())
                        .push_bind(a.slot.as_str())
                        .push_bind(*length)
                        .push_bind(a.sha256.to_hex())
                        .push_bind(a.blake3.to_hex())
                        .push_bind(a.chunk_index.to_hex())
                        .push_bind(a.chunk_tree.to_hex())
                        .push_bind(*count);
                });
                query.build().execute(&mut *tx).await.map_err(db(OP))?;
            }
            for batch in blob_rows.chunks(INSERT_BATCH_ROWS) {
                let mut query =
                    QueryBuilder::<Db>::new("INSERT INTO blobs (id, length, created_at) ");
                query.push_values(batch, |mut row, (id, length)| {
                    row.push_bind(id.as_str())
                        .push_bind(*length)
                        .push_bind(now.0);
                });
                query.push(" ON CONFLICT DO NOTHING");
                query.build().execute(&mut *tx).await.map_err(db(OP))?;

                let mut query =
                    QueryBuilder::<Db>::new("INSERT INTO release_blobs (channel, number, blob) ");
                query.push_values(batch, |mut row, (id, _)| {
                    row.push_bind(channel)
                        .push_bind(number)
                        .push_bind(id.as_str());
                });
                query.push(" ON CONFLICT DO NOTHING");
                query.build().execute(&mut *tx).await.map_err(db(OP))?;
            }
            for target in &private.targets {
                sqlx::query(
                    "UPDATE artifacts SET private = TRUE \
                     WHERE channel = $1 AND number = $2 AND target = $3",
                )
                .bind(channel)
                .bind(number)
                .bind(target.as_str())
                .execute(&mut *tx)
                .await
                .map_err(db(OP))?;
            }
            for batch in private_blobs.chunks(INSERT_BATCH_ROWS) {
                let mut query = QueryBuilder::<Db>::new(
                    "UPDATE release_blobs SET private = TRUE WHERE channel = ",
                );
                query.push_bind(channel);
                query.push(" AND number = ").push_bind(number);
                query.push(" AND blob IN (");
                let mut ids = query.separated(", ");
                for id in batch {
                    ids.push_bind(id.as_str());
                }
                query.push(")");
                query.build().execute(&mut *tx).await.map_err(db(OP))?;
            }
            sqlx::query(BUMP_GENERATION)
                .execute(&mut *tx)
                .await
                .map_err(db(OP))?;
            tx.commit().await.map_err(db(OP))
        })
    }

    /// The private content the catalog records: every private blob (one no public artifact
    /// uses) with the releases that use it, and the private artifacts' target paths.
    pub async fn private_content(&self) -> Result<PrivateContent, CatalogError> {
        const OP: &str = "list private content";
        type Rows = (Vec<(String, String, i64)>, Vec<(String,)>);
        let (blob_rows, target_rows): Rows = on_backend!(&self.backend, |pool, _Db| {
            let blobs = sqlx::query_as(
                "SELECT r.blob, r.channel, r.number FROM release_blobs r WHERE r.private \
                     AND NOT EXISTS (SELECT 1 FROM release_blobs p \
                                     WHERE p.blob = r.blob AND NOT p.private) \
                     ORDER BY r.blob, r.channel, r.number",
            )
            .fetch_all(pool)
            .await
            .map_err(db(OP))?;
            let targets = sqlx::query_as(
                "SELECT DISTINCT target FROM artifacts WHERE private ORDER BY target",
            )
            .fetch_all(pool)
            .await
            .map_err(db(OP))?;
            (blobs, targets)
        });
        let mut content = PrivateContent::default();
        for (blob, channel, number) in blob_rows {
            content.blobs.push((
                digest(&blob, OP, "release_blobs.blob")?,
                Channel(channel),
                release_number(number, OP, "release_blobs.number")?,
            ));
        }
        content.targets = target_rows.into_iter().map(|(t,)| t).collect();
        Ok(content)
    }

    /// How many releases the catalog records (they are never deleted): private content
    /// changes only when this does.
    pub async fn release_count(&self) -> Result<u64, CatalogError> {
        const OP: &str = "count releases";
        let (count,): (i64,) = on_backend!(&self.backend, |pool, _Db| {
            sqlx::query_as("SELECT COUNT(*) FROM releases")
                .fetch_one(pool)
                .await
                .map_err(db(OP))?
        });
        to_u64(count, OP, "count")
    }

    /// The release `number` of `channel`.
    pub async fn release(
        &self,
        channel: &Channel,
        number: ReleaseNumber,
    ) -> Result<Option<ReleaseRecord>, CatalogError> {
        const OP: &str = "get release";
        let Ok(key) = i64::try_from(number.0) else {
            return Ok(None);
        };
        let row = on_backend!(&self.backend, |pool, _Db| {
            sqlx::query_as::<_, ReleaseRow>(&format!(
                "SELECT {RELEASE_COLUMNS} FROM releases WHERE channel = $1 AND number = $2"
            ))
            .bind(channel.0.as_str())
            .bind(key)
            .fetch_optional(pool)
            .await
            .map_err(db(OP))?
        });
        row.map(|row| release_from_row(row, OP)).transpose()
    }

    /// Every release, of one channel or of all, by channel and number.
    pub async fn releases(
        &self,
        channel: Option<&Channel>,
    ) -> Result<Vec<ReleaseRecord>, CatalogError> {
        const OP: &str = "list releases";
        let rows = on_backend!(&self.backend, |pool, _Db| {
            sqlx::query_as::<_, ReleaseRow>(&format!(
                "SELECT {RELEASE_COLUMNS} FROM releases \
                 WHERE $1 IS NULL OR channel = $1 ORDER BY channel, number"
            ))
            .bind(channel.map(|c| c.0.as_str()))
            .fetch_all(pool)
            .await
            .map_err(db(OP))?
        });
        rows.into_iter()
            .map(|row| release_from_row(row, OP))
            .collect()
    }

    /// The highest release number of `channel`, if it has any release.
    pub async fn latest_release_number(
        &self,
        channel: &Channel,
    ) -> Result<Option<ReleaseNumber>, CatalogError> {
        const OP: &str = "latest release number";
        let number: Option<(i64,)> = on_backend!(&self.backend, |pool, _Db| {
            sqlx::query_as(
                "SELECT number FROM releases WHERE channel = $1 ORDER BY number DESC LIMIT 1",
            )
            .bind(channel.0.as_str())
            .fetch_optional(pool)
            .await
            .map_err(db(OP))?
        });
        number
            .map(|(n,)| release_number(n, OP, "number"))
            .transpose()
    }

    /// The artifacts of a release, by target path.
    pub async fn artifacts(
        &self,
        channel: &Channel,
        number: ReleaseNumber,
    ) -> Result<Vec<ArtifactRecord>, CatalogError> {
        const OP: &str = "list artifacts";
        let Ok(key) = i64::try_from(number.0) else {
            return Ok(Vec::new());
        };
        let cache_key = (channel.clone(), number);
        if let Some(cached) = self
            .artifacts
            .lock()
            .ok()
            .and_then(|cache| cache.get(&cache_key).cloned())
        {
            return Ok(cached);
        }
        let rows: Vec<ArtifactRow> = on_backend!(&self.backend, |pool, _Db| {
            sqlx::query_as(
                "SELECT target, slot, length, sha256, blake3, chunk_index, chunk_tree, \
                 chunk_count FROM artifacts WHERE channel = $1 AND number = $2 ORDER BY target",
            )
            .bind(channel.0.as_str())
            .bind(key)
            .fetch_all(pool)
            .await
            .map_err(db(OP))?
        });
        let artifacts = rows
            .into_iter()
            .map(|row| artifact_from_row(row, OP))
            .collect::<Result<Vec<_>, _>>()?;
        // A release and its artifacts are inserted in one transaction and never change, so
        // a non-empty list is final. An empty one may be a release not yet created.
        if !artifacts.is_empty()
            && let Ok(mut cache) = self.artifacts.lock()
        {
            cache.insert(cache_key, artifacts.clone());
        }
        Ok(artifacts)
    }

    /// The artifact with target path `target` and, when given, SHA-256 `sha256`, of any
    /// release (the HTTP mirror serves `artifacts/SHA256.NAME` this way). Releases that list
    /// the same path and hash list the same bytes, so any of them serves; without a hash, the
    /// artifact of the newest release that lists the path.
    pub async fn artifact_by_target(
        &self,
        target: &str,
        sha256: Option<&Sha256Hash>,
    ) -> Result<Option<ArtifactRecord>, CatalogError> {
        const OP: &str = "find artifact by target";
        let row: Option<ArtifactRow> = on_backend!(&self.backend, |pool, _Db| {
            sqlx::query_as(
                "SELECT a.target, a.slot, a.length, a.sha256, a.blake3, a.chunk_index, \
                 a.chunk_tree, a.chunk_count FROM artifacts a JOIN releases r \
                 ON r.channel = a.channel AND r.number = a.number \
                 WHERE a.target = $1 AND ($2 IS NULL OR a.sha256 = $2) \
                 ORDER BY r.created_at DESC, a.number DESC, a.channel LIMIT 1",
            )
            .bind(target)
            .bind(sha256.map(Sha256Hash::to_hex))
            .fetch_optional(pool)
            .await
            .map_err(db(OP))?
        });
        row.map(|row| artifact_from_row(row, OP)).transpose()
    }

    /// Moves a release from `expected` to `new` (compare-and-set, see
    /// [`CatalogTx::update_stage`]), in a transaction of its own.
    pub async fn update_stage(
        &self,
        channel: &Channel,
        number: ReleaseNumber,
        expected: Stage,
        new: Stage,
        halted_reason: Option<&str>,
        now: UnixTime,
    ) -> Result<(), CatalogError> {
        let mut tx = self.begin().await?;
        tx.update_stage(channel, number, expected, new, halted_reason, now)
            .await?;
        tx.commit().await
    }

    // --- blobs -------------------------------------------------------------------------

    /// The record of blob `id`, if a release recorded it.
    pub async fn blob(&self, id: &ChunkId) -> Result<Option<BlobRecord>, CatalogError> {
        const OP: &str = "get blob";
        let row: Option<(String, i64)> = on_backend!(&self.backend, |pool, _Db| {
            sqlx::query_as("SELECT id, length FROM blobs WHERE id = $1")
                .bind(id.to_hex())
                .fetch_optional(pool)
                .await
                .map_err(db(OP))?
        });
        row.map(|(id, length)| {
            Ok(BlobRecord {
                id: digest(&id, OP, "blobs.id")?,
                length: to_u64(length, OP, "blobs.length")?,
            })
        })
        .transpose()
    }

    /// The ids of the blobs a release uses, in id order.
    pub async fn release_blobs(
        &self,
        channel: &Channel,
        number: ReleaseNumber,
    ) -> Result<Vec<ChunkId>, CatalogError> {
        const OP: &str = "list release blobs";
        let Ok(key) = i64::try_from(number.0) else {
            return Ok(Vec::new());
        };
        let rows: Vec<(String,)> = on_backend!(&self.backend, |pool, _Db| {
            sqlx::query_as(
                "SELECT blob FROM release_blobs WHERE channel = $1 AND number = $2 ORDER BY blob",
            )
            .bind(channel.0.as_str())
            .bind(key)
            .fetch_all(pool)
            .await
            .map_err(db(OP))?
        });
        rows.into_iter()
            .map(|(id,)| digest(&id, OP, "release_blobs.blob"))
            .collect()
    }

    /// The releases that use blob `id`, by channel and number (empty: nothing uses it).
    pub async fn blob_releases(
        &self,
        id: &ChunkId,
    ) -> Result<Vec<(Channel, ReleaseNumber)>, CatalogError> {
        const OP: &str = "list blob releases";
        let rows: Vec<(String, i64)> = on_backend!(&self.backend, |pool, _Db| {
            sqlx::query_as(
                "SELECT channel, number FROM release_blobs WHERE blob = $1 \
                 ORDER BY channel, number",
            )
            .bind(id.to_hex())
            .fetch_all(pool)
            .await
            .map_err(db(OP))?
        });
        rows.into_iter()
            .map(|(channel, number)| {
                Ok((
                    Channel(channel),
                    release_number(number, OP, "release_blobs.number")?,
                ))
            })
            .collect()
    }

    // --- published files ---------------------------------------------------------------

    /// Publishes `files` together, in one transaction (see [`CatalogTx::publish`]).
    pub async fn publish(&self, files: &[MetadataFile], now: UnixTime) -> Result<(), CatalogError> {
        let mut tx = self.begin().await?;
        for file in files {
            tx.publish(file, now).await?;
        }
        tx.commit().await
    }

    /// The published file `name`.
    pub async fn metadata(&self, name: &str) -> Result<Option<MetadataFile>, CatalogError> {
        const OP: &str = "get published file";
        let row: Option<MetadataRow> = on_backend!(&self.backend, |pool, _Db| {
            sqlx::query_as("SELECT name, role, version, bytes FROM metadata WHERE name = $1")
                .bind(name)
                .fetch_optional(pool)
                .await
                .map_err(db(OP))?
        });
        row.map(|row| metadata_from_row(row, OP)).transpose()
    }

    /// The published file of `role` with the highest version (e.g. the newest root).
    pub async fn latest_metadata(&self, role: &str) -> Result<Option<MetadataFile>, CatalogError> {
        const OP: &str = "get latest published file";
        let row: Option<MetadataRow> = on_backend!(&self.backend, |pool, _Db| {
            sqlx::query_as(
                "SELECT name, role, version, bytes FROM metadata WHERE role = $1 \
                 ORDER BY version DESC, name LIMIT 1",
            )
            .bind(role)
            .fetch_optional(pool)
            .await
            .map_err(db(OP))?
        });
        row.map(|row| metadata_from_row(row, OP)).transpose()
    }

    /// Every published file, by name, without its bytes.
    pub async fn list_metadata(&self) -> Result<Vec<MetadataEntry>, CatalogError> {
        const OP: &str = "list published files";
        let rows: Vec<(String, String, i64, i64)> = on_backend!(&self.backend, |pool, _Db| {
            sqlx::query_as(
                "SELECT name, role, version, CAST(length(bytes) AS BIGINT) FROM metadata \
                 ORDER BY name",
            )
            .fetch_all(pool)
            .await
            .map_err(db(OP))?
        });
        rows.into_iter()
            .map(|(name, role, version, length)| {
                Ok(MetadataEntry {
                    name,
                    role,
                    version: to_u64(version, OP, "metadata.version")?,
                    length: to_u64(length, OP, "length(metadata.bytes)")?,
                })
            })
            .collect()
    }

    // --- devices -----------------------------------------------------------------------

    /// Enrolls a device; refuses a handle already enrolled (revoked or not).
    pub async fn enroll(&self, device: &NewDevice, now: UnixTime) -> Result<(), CatalogError> {
        const OP: &str = "enroll device";
        let inserted = on_backend!(&self.backend, |pool, _Db| {
            sqlx::query(
                "INSERT INTO devices (handle, public_key, channel, model, enrolled_at, \
                 validation_cohort) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            )
            .bind(device.handle.to_hex())
            .bind(hex::encode(device.public_key))
            .bind(device.channel.0.as_str())
            .bind(device.model.as_str())
            .bind(now.0)
            .bind(device.validation_cohort)
            .execute(pool)
            .await
            .map_err(db(OP))?
            .rows_affected()
        });
        if inserted == 0 {
            return Err(CatalogError::DeviceExists {
                handle: device.handle,
            });
        }
        Ok(())
    }

    /// The device `handle`.
    pub async fn device(
        &self,
        handle: &DeviceHandle,
    ) -> Result<Option<DeviceRecord>, CatalogError> {
        const OP: &str = "get device";
        let row: Option<DeviceRow> = on_backend!(&self.backend, |pool, _Db| {
            sqlx::query_as(&format!(
                "SELECT {DEVICE_COLUMNS} FROM devices WHERE handle = $1"
            ))
            .bind(handle.to_hex())
            .fetch_optional(pool)
            .await
            .map_err(db(OP))?
        });
        row.map(|row| device_from_row(row, OP)).transpose()
    }

    /// Enrolled devices in handle order, of one channel or of all: at most `limit` of them,
    /// starting after handle `after` (pass the last handle of a page to get the next).
    pub async fn devices(
        &self,
        channel: Option<&Channel>,
        after: Option<&DeviceHandle>,
        limit: u32,
    ) -> Result<Vec<DeviceRecord>, CatalogError> {
        const OP: &str = "list devices";
        let rows: Vec<DeviceRow> = on_backend!(&self.backend, |pool, _Db| {
            sqlx::query_as(&format!(
                "SELECT {DEVICE_COLUMNS} FROM devices \
                 WHERE ($1 IS NULL OR channel = $1) AND ($2 IS NULL OR handle > $2) \
                 ORDER BY handle LIMIT $3"
            ))
            .bind(channel.map(|c| c.0.as_str()))
            .bind(after.map(DeviceHandle::to_hex))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .map_err(db(OP))?
        });
        rows.into_iter()
            .map(|row| device_from_row(row, OP))
            .collect()
    }

    /// Revokes a device's enrollment (again: no change, and the first time is kept).
    pub async fn revoke_device(
        &self,
        handle: &DeviceHandle,
        now: UnixTime,
    ) -> Result<(), CatalogError> {
        const OP: &str = "revoke device";
        let updated = on_backend!(&self.backend, |pool, _Db| {
            sqlx::query(
                "UPDATE devices SET revoked = TRUE, revoked_at = COALESCE(revoked_at, $2) \
                 WHERE handle = $1",
            )
            .bind(handle.to_hex())
            .bind(now.0)
            .execute(pool)
            .await
            .map_err(db(OP))?
            .rows_affected()
        });
        found_device(updated, handle)
    }

    /// Devices revoked at or after `since` (by the revoking process's clock), in handle order.
    pub async fn revoked_devices_since(
        &self,
        since: UnixTime,
    ) -> Result<Vec<DeviceHandle>, CatalogError> {
        const OP: &str = "list revoked devices";
        let rows: Vec<(String,)> = on_backend!(&self.backend, |pool, _Db| {
            sqlx::query_as(
                "SELECT handle FROM devices WHERE revoked AND revoked_at >= $1 ORDER BY handle",
            )
            .bind(since.0)
            .fetch_all(pool)
            .await
            .map_err(db(OP))?
        });
        rows.into_iter()
            .map(|(hex,)| Ok(DeviceHandle(hex32(&hex, OP, "devices.handle")?)))
            .collect()
    }

    // --- relays ------------------------------------------------------------------------

    /// Enrolls a relay (a site peer) by its node key; refuses a key already enrolled (revoked
    /// or not).
    pub async fn enroll_relay(
        &self,
        public_key: &[u8; 32],
        name: &str,
        now: UnixTime,
    ) -> Result<(), CatalogError> {
        const OP: &str = "enroll relay";
        let inserted = on_backend!(&self.backend, |pool, _Db| {
            sqlx::query(
                "INSERT INTO relays (public_key, name, enrolled_at) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(hex::encode(public_key))
            .bind(name)
            .bind(now.0)
            .execute(pool)
            .await
            .map_err(db(OP))?
            .rows_affected()
        });
        if inserted == 0 {
            return Err(CatalogError::RelayExists {
                public_key: *public_key,
            });
        }
        Ok(())
    }

    /// The relay with node key `public_key`, revoked or not.
    pub async fn relay(&self, public_key: &[u8; 32]) -> Result<Option<RelayRecord>, CatalogError> {
        const OP: &str = "get relay";
        let row: Option<RelayRow> = on_backend!(&self.backend, |pool, _Db| {
            sqlx::query_as(
                "SELECT public_key, name, enrolled_at, revoked_at FROM relays \
                 WHERE public_key = $1",
            )
            .bind(hex::encode(public_key))
            .fetch_optional(pool)
            .await
            .map_err(db(OP))?
        });
        row.map(|row| relay_from_row(row, OP)).transpose()
    }

    /// Every relay, revoked or not, in key order.
    pub async fn relays(&self) -> Result<Vec<RelayRecord>, CatalogError> {
        const OP: &str = "list relays";
        let rows: Vec<RelayRow> = on_backend!(&self.backend, |pool, _Db| {
            sqlx::query_as(
                "SELECT public_key, name, enrolled_at, revoked_at FROM relays \
                 ORDER BY public_key",
            )
            .fetch_all(pool)
            .await
            .map_err(db(OP))?
        });
        rows.into_iter()
            .map(|row| relay_from_row(row, OP))
            .collect()
    }

    /// Revokes a relay (again: no change, and the first time is kept).
    pub async fn revoke_relay(
        &self,
        public_key: &[u8; 32],
        now: UnixTime,
    ) -> Result<(), CatalogError> {
        const OP: &str = "revoke relay";
        let updated = on_backend!(&self.backend, |pool, _Db| {
            sqlx::query(
                "UPDATE relays SET revoked_at = COALESCE(revoked_at, $2) WHERE public_key = $1",
            )
            .bind(hex::encode(public_key))
            .bind(now.0)
            .execute(pool)
            .await
            .map_err(db(OP))?
            .rows_affected()
        });
        if updated == 0 {
            return Err(CatalogError::RelayNotFound {
                public_key: *public_key,
            });
        }
        Ok(())
    }

    /// Records the release a device says it runs.
    pub async fn set_installed(
        &self,
        handle: &DeviceHandle,
        installed: Option<ReleaseNumber>,
    ) -> Result<(), CatalogError> {
        const OP: &str = "set installed release";
        let installed = installed
            .map(|n| to_i64(n.0, OP, "installed release"))
            .transpose()?;
        let updated = on_backend!(&self.backend, |pool, _Db| {
            sqlx::query("UPDATE devices SET installed = $2 WHERE handle = $1")
                .bind(handle.to_hex())
                .bind(installed)
                .execute(pool)
                .await
                .map_err(db(OP))?
                .rows_affected()
        });
        found_device(updated, handle)
    }

    /// Records the outcome of a device's latest attestation (never the evidence).
    pub async fn record_attestation(
        &self,
        handle: &DeviceHandle,
        outcome: AttestationOutcome,
        reasons: &[String],
        now: UnixTime,
    ) -> Result<(), CatalogError> {
        const OP: &str = "record attestation";
        let reasons = serde_json::to_string(reasons).map_err(|_| CatalogError::OutOfRange {
            op: OP,
            what: "attestation reasons",
        })?;
        let updated = on_backend!(&self.backend, |pool, _Db| {
            sqlx::query(
                "UPDATE devices SET attestation = $2, attestation_reasons = $3, attested_at = $4 \
                 WHERE handle = $1",
            )
            .bind(handle.to_hex())
            .bind(attestation_name(outcome))
            .bind(&reasons)
            .bind(now.0)
            .execute(pool)
            .await
            .map_err(db(OP))?
            .rows_affected()
        });
        found_device(updated, handle)
    }

    // --- nonces ------------------------------------------------------------------------

    /// Records a nonce issued on the connection whose TLS exporter value is `exporter`
    /// (stored as its SHA-256), valid until `expires_at` (exclusive).
    pub async fn issue_nonce(
        &self,
        nonce: &[u8; 32],
        exporter: &[u8; 32],
        now: UnixTime,
        expires_at: UnixTime,
    ) -> Result<(), CatalogError> {
        const OP: &str = "issue nonce";
        let inserted = on_backend!(&self.nonces, |pool, _Db| {
            sqlx::query(
                "INSERT INTO nonces (nonce, binding, issued_at, expires_at, used) \
                 VALUES ($1, $2, $3, $4, FALSE) ON CONFLICT DO NOTHING",
            )
            .bind(hex::encode(nonce))
            .bind(binding(exporter))
            .bind(now.0)
            .bind(expires_at.0)
            .execute(pool)
            .await
            .map_err(db(OP))?
            .rows_affected()
        });
        if inserted == 0 {
            return Err(CatalogError::NonceExists);
        }
        Ok(())
    }

    /// Uses a nonce for a request that arrived on the connection whose TLS exporter value is
    /// `exporter`. Exactly one caller gets [`NonceCheck::Accept`] for a nonce, however many
    /// race for it: the nonce is marked used by one conditional `UPDATE`.
    pub async fn consume_nonce(
        &self,
        nonce: &[u8; 32],
        exporter: &[u8; 32],
        now: UnixTime,
    ) -> Result<NonceCheck, CatalogError> {
        const OP: &str = "consume nonce";
        let nonce_hex = hex::encode(nonce);
        let binding_hex = binding(exporter);
        let updated = on_backend!(&self.nonces, |pool, _Db| {
            sqlx::query(
                "UPDATE nonces SET used = TRUE \
                 WHERE nonce = $1 AND binding = $2 AND used = FALSE AND expires_at > $3",
            )
            .bind(nonce_hex.as_str())
            .bind(binding_hex.as_str())
            .bind(now.0)
            .execute(pool)
            .await
            .map_err(db(OP))?
            .rows_affected()
        });
        if updated == 1 {
            return Ok(NonceCheck::Accept);
        }
        let row: Option<(String, i64, bool)> = on_backend!(&self.nonces, |pool, _Db| {
            sqlx::query_as("SELECT binding, expires_at, used FROM nonces WHERE nonce = $1")
                .bind(nonce_hex.as_str())
                .fetch_optional(pool)
                .await
                .map_err(db(OP))?
        });
        Ok(match row {
            None => NonceCheck::Unknown,
            Some((_, _, true)) => NonceCheck::AlreadyUsed,
            Some((_, expires_at, false)) if expires_at <= now.0 => NonceCheck::Expired,
            Some((stored, _, false)) if stored != binding_hex => NonceCheck::OtherConnection,
            // Unused, fresh and of this connection, yet the UPDATE matched nothing: it can
            // only have been used in between. Refuse.
            Some(_) => NonceCheck::AlreadyUsed,
        })
    }

    /// Deletes the nonces that expired by `now` (used or not: an expired nonce is refused
    /// as unknown). Returns how many.
    pub async fn purge_nonces(&self, now: UnixTime) -> Result<u64, CatalogError> {
        const OP: &str = "purge nonces";
        let deleted = on_backend!(&self.nonces, |pool, _Db| {
            sqlx::query("DELETE FROM nonces WHERE expires_at <= $1")
                .bind(now.0)
                .execute(pool)
                .await
                .map_err(db(OP))?
                .rows_affected()
        });
        Ok(deleted)
    }

    /// Records the use of a nonce the origin minted itself (see `crate::nonce`: it carries
    /// its issue and expiry times, and the caller has checked that it is the origin's, fresh
    /// and bound to `exporter`'s connection) by the request of device `handle`: the one
    /// catalog statement of a check-in. Inserted as used; a nonce already recorded is a
    /// replay, refused with `None` (exactly one of many racing callers gets `Some`: the
    /// nonce is the table's key). The statement also reads, at that moment, whether `handle`
    /// is revoked and the release generation, so that a revocation or a stage change made
    /// before it (by any process) is never missed by what answers the request.
    ///
    /// Uses that arrive while others are being recorded are recorded together, in one
    /// multi-row statement and one commit (see `record_nonce_uses`).
    pub async fn use_nonce(
        &self,
        nonce: &[u8; 32],
        exporter: &[u8; 32],
        issued_at: UnixTime,
        expires_at: UnixTime,
        handle: &DeviceHandle,
    ) -> Result<Option<NonceUse>, CatalogError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let pending = PendingUse {
            nonce: hex::encode(nonce),
            binding: binding(exporter),
            issued_at: issued_at.0,
            expires_at: expires_at.0,
            handle: handle.to_hex(),
            reply,
        };
        match self.nonce_uses.send(pending) {
            Ok(()) => answer.await.unwrap_or_else(|_| Err(nonce_recorder_gone())),
            // The recorder's runtime ended (a catalog used from another runtime): alone.
            Err(tokio::sync::mpsc::error::SendError(pending)) => {
                let mut one = use_nonces(&self.nonces, std::slice::from_ref(&pending)).await?;
                Ok(one.pop().flatten())
            }
        }
    }

    /// The release generation (see [`Catalog::use_nonce`]): it moves with every release
    /// created and every stage change.
    pub async fn release_generation(&self) -> Result<i64, CatalogError> {
        const OP: &str = "get release generation";
        let (generation,): (i64,) = on_backend!(&self.backend, |pool, _Db| {
            sqlx::query_as("SELECT generation FROM catalog_generation WHERE id = 1")
                .fetch_one(pool)
                .await
                .map_err(db(OP))?
        });
        Ok(generation)
    }

    // --- reports -----------------------------------------------------------------------

    /// Records an install report. Each device counts once per release: a later report
    /// replaces an earlier one, an older one is ignored.
    pub async fn record_report(&self, report: &Report) -> Result<(), CatalogError> {
        const OP: &str = "record report";
        let number = to_i64(report.number.0, OP, "release number")?;
        let result = on_backend!(&self.backend, |pool, _Db| {
            sqlx::query(
                "INSERT INTO reports (channel, number, handle, outcome, error_class, reported_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (channel, number, handle) DO UPDATE \
                 SET outcome = excluded.outcome, error_class = excluded.error_class, \
                 reported_at = excluded.reported_at \
                 WHERE reports.reported_at <= excluded.reported_at",
            )
            .bind(report.channel.0.as_str())
            .bind(number)
            .bind(report.handle.to_hex())
            .bind(outcome_name(report.outcome))
            .bind(report.error_class.as_deref())
            .bind(report.at.0)
            .execute(pool)
            .await
            .map(|_| ())
        });
        match result {
            Ok(()) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.kind() == ErrorKind::ForeignKeyViolation => {
                Err(CatalogError::UnknownReference { op: OP })
            }
            Err(source) => Err(CatalogError::Database { op: OP, source }),
        }
    }

    /// How many devices' latest report on a release is a success, and how many a failure.
    pub async fn report_counts(
        &self,
        channel: &Channel,
        number: ReleaseNumber,
    ) -> Result<ReportCounts, CatalogError> {
        const OP: &str = "count reports";
        let Ok(key) = i64::try_from(number.0) else {
            return Ok(ReportCounts::default());
        };
        let rows: Vec<(String, i64)> = on_backend!(&self.backend, |pool, _Db| {
            sqlx::query_as(
                "SELECT outcome, COUNT(*) FROM reports WHERE channel = $1 AND number = $2 \
                 GROUP BY outcome",
            )
            .bind(channel.0.as_str())
            .bind(key)
            .fetch_all(pool)
            .await
            .map_err(db(OP))?
        });
        let mut counts = ReportCounts::default();
        for (outcome, count) in rows {
            let count = to_u64(count, OP, "count")?;
            match outcome.as_str() {
                "success" => counts.successes = count,
                "failure" => counts.failures = count,
                other => return Err(corrupt(OP, "reports.outcome", other)),
            }
        }
        Ok(counts)
    }
}

impl CatalogTx {
    /// Publishes one file, visible to others at commit. A name keeps one content per
    /// version and its version never goes down: the same version with the same bytes is a
    /// no-op (a retried register), a higher version replaces the file, a lower version or
    /// other bytes under the same version is refused.
    pub async fn publish(
        &mut self,
        file: &MetadataFile,
        now: UnixTime,
    ) -> Result<(), CatalogError> {
        const OP: &str = "publish file";
        let version = to_i64(file.version, OP, "version")?;
        on_tx!(&mut self.inner, |tx| {
            // Write first, so that SQLite takes the write lock at once.
            let inserted = sqlx::query(
                "INSERT INTO metadata (name, role, version, bytes, published_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(file.name.as_str())
            .bind(file.role.as_str())
            .bind(version)
            .bind(file.bytes.as_slice())
            .bind(now.0)
            .execute(&mut **tx)
            .await
            .map_err(db(OP))?;
            if inserted.rows_affected() == 1 {
                return Ok(());
            }
            let replaced = sqlx::query(
                "UPDATE metadata SET role = $2, version = $3, bytes = $4, published_at = $5 \
                 WHERE name = $1 AND version < $3",
            )
            .bind(file.name.as_str())
            .bind(file.role.as_str())
            .bind(version)
            .bind(file.bytes.as_slice())
            .bind(now.0)
            .execute(&mut **tx)
            .await
            .map_err(db(OP))?;
            if replaced.rows_affected() == 1 {
                return Ok(());
            }
            let (stored_version, stored_bytes): (i64, Vec<u8>) =
                sqlx::query_as("SELECT version, bytes FROM metadata WHERE name = $1")
                    .bind(file.name.as_str())
                    .fetch_one(&mut **tx)
                    .await
                    .map_err(db(OP))?;
            let stored = to_u64(stored_version, OP, "metadata.version")?;
            if stored > file.version {
                Err(CatalogError::MetadataRollback {
                    name: file.name.clone(),
                    stored,
                    offered: file.version,
                })
            } else if stored_bytes != file.bytes {
                Err(CatalogError::MetadataConflict {
                    name: file.name.clone(),
                    version: file.version,
                })
            } else {
                Ok(())
            }
        })
    }

    /// Moves a release from stage `expected` to `new`, if it is still at `expected`
    /// (including the share of a limited rollout): two operators racing a transition
    /// cannot both win, the loser gets [`CatalogError::StaleStage`]. `halted_reason` is
    /// stored as given (pass `None` to clear it).
    pub async fn update_stage(
        &mut self,
        channel: &Channel,
        number: ReleaseNumber,
        expected: Stage,
        new: Stage,
        halted_reason: Option<&str>,
        now: UnixTime,
    ) -> Result<(), CatalogError> {
        const OP: &str = "update stage";
        let not_found = || CatalogError::ReleaseNotFound {
            channel: channel.clone(),
            number,
        };
        let Ok(key) = i64::try_from(number.0) else {
            return Err(not_found());
        };
        let (expected_name, expected_resume, expected_bp) = stage_columns(expected, OP)?;
        let (new_name, new_resume, new_bp) = stage_columns(new, OP)?;
        let found = on_tx!(&mut self.inner, |tx| {
            let updated = sqlx::query(
                "UPDATE releases SET stage = $3, resume_stage = $4, basis_points = $5, \
                 halted_reason = $6, updated_at = $7 \
                 WHERE channel = $1 AND number = $2 AND stage = $8 \
                 AND resume_stage IS NOT DISTINCT FROM $9 \
                 AND basis_points IS NOT DISTINCT FROM $10",
            )
            .bind(channel.0.as_str())
            .bind(key)
            .bind(new_name)
            .bind(new_resume)
            .bind(new_bp)
            .bind(halted_reason)
            .bind(now.0)
            .bind(expected_name)
            .bind(expected_resume)
            .bind(expected_bp)
            .execute(&mut **tx)
            .await
            .map_err(db(OP))?;
            if updated.rows_affected() == 1 {
                sqlx::query(BUMP_GENERATION)
                    .execute(&mut **tx)
                    .await
                    .map_err(db(OP))?;
                return Ok(());
            }
            let found: Option<(String, Option<String>, Option<i64>)> = sqlx::query_as(
                "SELECT stage, resume_stage, basis_points FROM releases \
                 WHERE channel = $1 AND number = $2",
            )
            .bind(channel.0.as_str())
            .bind(key)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db(OP))?;
            found
        });
        let (stage, resume, basis_points) = found.ok_or_else(not_found)?;
        Err(CatalogError::StaleStage {
            channel: channel.clone(),
            number,
            expected,
            found: stage_from_columns(&stage, resume.as_deref(), basis_points, OP)?,
        })
    }

    /// Makes every change of the transaction visible at once.
    pub async fn commit(self) -> Result<(), CatalogError> {
        const OP: &str = "commit";
        match self.inner {
            TxInner::Sqlite(tx) => tx.commit().await.map_err(db(OP)),
            TxInner::Postgres(tx) => tx.commit().await.map_err(db(OP)),
        }
    }

    /// Discards every change of the transaction (as dropping it does).
    pub async fn rollback(self) -> Result<(), CatalogError> {
        const OP: &str = "rollback";
        match self.inner {
            TxInner::Sqlite(tx) => tx.rollback().await.map_err(db(OP)),
            TxInner::Postgres(tx) => tx.rollback().await.map_err(db(OP)),
        }
    }
}

impl DeviceRecord {
    /// Whether its enrollment was revoked.
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }

    /// What the director needs to decide on this device.
    pub fn facts(&self) -> DeviceFacts {
        DeviceFacts {
            handle: self.handle,
            revoked: self.is_revoked(),
            model: self.model.clone(),
            channel: self.channel.clone(),
            installed: self.installed,
            validation_cohort: self.validation_cohort,
            attestation: self.attestation.as_ref().map(|a| a.outcome),
        }
    }
}

impl fmt::Debug for Catalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Catalog")
            .field("backend", &self.backend_name())
            .field("location", &self.location)
            .finish()
    }
}

impl fmt::Debug for CatalogTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let backend = match self.inner {
            TxInner::Sqlite(_) => "sqlite",
            TxInner::Postgres(_) => "postgres",
        };
        f.debug_struct("CatalogTx")
            .field("backend", &backend)
            .finish()
    }
}

impl fmt::Debug for MetadataFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetadataFile")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("version", &self.version)
            .field("bytes", &format_args!("{} bytes", self.bytes.len()))
            .finish()
    }
}

// --- the two backends --------------------------------------------------------------------

#[derive(Clone)]
enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

enum TxInner {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

/// Runs `$body` with `$pool` bound to the backend's pool and `$db` naming its database type.
/// The body is the same text for both backends, compiled once for each.
macro_rules! on_backend {
    ($backend:expr, |$pool:ident, $db:ident| $body:expr) => {
        match $backend {
            Backend::Sqlite($pool) => {
                #[allow(dead_code)]
                type $db = Sqlite;
                $body
            }
            Backend::Postgres($pool) => {
                #[allow(dead_code)]
                type $db = Postgres;
                $body
            }
        }
    };
}
use on_backend;

/// Runs `$body` with `$tx` bound to the backend's transaction.
macro_rules! on_tx {
    ($inner:expr, |$tx:ident| $body:expr) => {
        match $inner {
            TxInner::Sqlite($tx) => $body,
            TxInner::Postgres($tx) => $body,
        }
    };
}
use on_tx;

/// Beginning a transaction that will write.
trait BeginWrite {
    type Db: sqlx::Database;

    async fn begin_write(&self) -> Result<Transaction<'static, Self::Db>, sqlx::Error>;
}

impl BeginWrite for SqlitePool {
    type Db = Sqlite;

    /// SQLite transactions that write take the write lock when they begin, so that a
    /// transaction never has to upgrade a read lock (which fails at once instead of waiting
    /// for the busy timeout).
    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

impl BeginWrite for PgPool {
    type Db = Postgres;

    async fn begin_write(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.begin().await
    }
}

/// The embedded migrations of one backend, as sqlx's migrator takes them.
#[derive(Debug)]
struct Embedded(&'static [(i64, &'static str, &'static str)]);

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 's>> {
        let migrations = self
            .0
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    Cow::Borrowed(sql),
                    false,
                )
            })
            .collect();
        Box::pin(async move { Ok(migrations) })
    }
}

/// Most nonce uses recorded by one statement.
const NONCE_BATCH_MAX: usize = 64;

/// A nonce use waiting to be recorded, in its stored form, and who waits for the outcome.
struct PendingUse {
    nonce: String,
    binding: String,
    issued_at: i64,
    expires_at: i64,
    handle: String,
    reply: tokio::sync::oneshot::Sender<Result<Option<NonceUse>, CatalogError>>,
}

fn nonce_recorder_gone() -> CatalogError {
    CatalogError::Database {
        op: "use nonce",
        source: sqlx::Error::PoolClosed,
    }
}

/// Records nonce uses until every [`Catalog`] clone is gone: the first waiting use and all
/// that queued behind it (up to [`NONCE_BATCH_MAX`]) together, so that under load many
/// check-ins share one statement and one commit, and alone none waits for another.
async fn record_nonce_uses(
    nonces: Backend,
    mut pending: tokio::sync::mpsc::UnboundedReceiver<PendingUse>,
) {
    let mut batch = Vec::with_capacity(NONCE_BATCH_MAX);
    while pending.recv_many(&mut batch, NONCE_BATCH_MAX).await > 0 {
        match use_nonces(&nonces, &batch).await {
            Ok(outcomes) => {
                for (use_, outcome) in batch.drain(..).zip(outcomes) {
                    let _ = use_.reply.send(Ok(outcome));
                }
            }
            Err(error) => {
                let text = error.to_string();
                for use_ in batch.drain(..) {
                    let _ = use_.reply.send(Err(CatalogError::Database {
                        op: "use nonce",
                        source: sqlx::Error::Protocol(text.clone()),
                    }));
                }
            }
        }
    }
}

/// Records `batch` (see [`Catalog::use_nonce`]); one outcome per use, in order. A nonce named
/// twice in the batch is used by its first use only.
async fn use_nonces(
    nonces: &Backend,
    batch: &[PendingUse],
) -> Result<Vec<Option<NonceUse>>, CatalogError> {
    const OP: &str = "use nonce";
    if let [one] = batch {
        // Alone: one statement records the use and reads the device and the generation.
        let row: Option<(Option<bool>, Option<i64>)> = on_backend!(nonces, |pool, _Db| {
            sqlx::query_as(
                "INSERT INTO nonces (nonce, binding, issued_at, expires_at, used) \
                 VALUES ($1, $2, $3, $4, TRUE) ON CONFLICT DO NOTHING \
                 RETURNING (SELECT revoked FROM devices WHERE handle = $5), \
                 (SELECT generation FROM catalog_generation WHERE id = 1)",
            )
            .bind(one.nonce.as_str())
            .bind(one.binding.as_str())
            .bind(one.issued_at)
            .bind(one.expires_at)
            .bind(one.handle.as_str())
            .fetch_optional(pool)
            .await
            .map_err(db(OP))?
        });
        let outcome = row
            .map(|(revoked, generation)| {
                Ok(NonceUse {
                    device: device_state(revoked),
                    generation: generation
                        .ok_or_else(|| corrupt(OP, "catalog_generation", "no row"))?,
                })
            })
            .transpose()?;
        return Ok(vec![outcome]);
    }
    let mut first = HashMap::new();
    for (i, use_) in batch.iter().enumerate() {
        first.entry(use_.nonce.as_str()).or_insert(i);
    }
    let unique: Vec<&PendingUse> = batch
        .iter()
        .enumerate()
        .filter(|(i, use_)| first.get(use_.nonce.as_str()) == Some(i))
        .map(|(_, use_)| use_)
        .collect();
    // The uses first, then (after their commit) the devices and the generation: what is read
    // is as recent as each use or more.
    let inserted: Vec<(String,)> = on_backend!(nonces, |pool, Db| {
        let mut query = QueryBuilder::<Db>::new(
            "INSERT INTO nonces (nonce, binding, issued_at, expires_at, used) ",
        );
        query.push_values(&unique, |mut row, use_| {
            row.push_bind(use_.nonce.as_str())
                .push_bind(use_.binding.as_str())
                .push_bind(use_.issued_at)
                .push_bind(use_.expires_at)
                .push_bind(true);
        });
        query.push(" ON CONFLICT DO NOTHING RETURNING nonce");
        query
            .build_query_as()
            .fetch_all(pool)
            .await
            .map_err(db(OP))?
    });
    let inserted: std::collections::HashSet<String> = inserted.into_iter().map(|(n,)| n).collect();
    let mut handles: Vec<&str> = unique
        .iter()
        .filter(|use_| inserted.contains(&use_.nonce))
        .map(|use_| use_.handle.as_str())
        .collect();
    handles.sort_unstable();
    handles.dedup();
    let rows: Vec<(i64, Option<String>, Option<bool>)> = on_backend!(nonces, |pool, Db| {
        let mut query = QueryBuilder::<Db>::new(
            "SELECT g.generation, d.handle, d.revoked FROM catalog_generation g \
             LEFT JOIN devices d ON d.handle IN (",
        );
        let mut list = query.separated(", ");
        // `IN ()` is not SQL: an empty list names a handle that cannot exist.
        list.push_bind("");
        for handle in &handles {
            list.push_bind(*handle);
        }
        query.push(") WHERE g.id = 1");
        query
            .build_query_as()
            .fetch_all(pool)
            .await
            .map_err(db(OP))?
    });
    let generation = rows
        .first()
        .map(|(generation, _, _)| *generation)
        .ok_or_else(|| corrupt(OP, "catalog_generation", "no row"))?;
    let revoked: HashMap<String, bool> = rows
        .into_iter()
        .filter_map(|(_, handle, revoked)| Some((handle?, revoked?)))
        .collect();
    Ok(batch
        .iter()
        .enumerate()
        .map(|(i, use_)| {
            (first.get(use_.nonce.as_str()) == Some(&i) && inserted.contains(&use_.nonce)).then(
                || NonceUse {
                    device: device_state(revoked.get(&use_.handle).copied()),
                    generation,
                },
            )
        })
        .collect())
}

fn device_state(revoked: Option<bool>) -> DeviceState {
    match revoked {
        None => DeviceState::Unknown,
        Some(true) => DeviceState::Revoked,
        Some(false) => DeviceState::Enrolled,
    }
}

// --- rows --------------------------------------------------------------------------------

const RELEASE_COLUMNS: &str = "channel, number, version, stage, resume_stage, basis_points, \
     security, models, min_installed, manifest_target, failure_threshold_bp, min_sample, \
     created_at, updated_at, halted_reason";

type ReleaseRow = (
    String,
    i64,
    String,
    String,
    Option<String>,
    Option<i64>,
    bool,
    String,
    Option<i64>,
    String,
    i64,
    i64,
    i64,
    i64,
    Option<String>,
);

fn release_from_row(row: ReleaseRow, op: &'static str) -> Result<ReleaseRecord, CatalogError> {
    let (
        channel,
        number,
        version,
        stage,
        resume_stage,
        basis_points,
        security,
        models,
        min_installed,
        manifest_target,
        failure_threshold_bp,
        min_sample,
        created_at,
        updated_at,
        halted_reason,
    ) = row;
    Ok(ReleaseRecord {
        channel: Channel(channel),
        number: release_number(number, op, "releases.number")?,
        version,
        stage: stage_from_columns(&stage, resume_stage.as_deref(), basis_points, op)?,
        security,
        models: serde_json::from_str(&models).map_err(|e| corrupt(op, "releases.models", e))?,
        min_installed: min_installed
            .map(|n| release_number(n, op, "releases.min_installed"))
            .transpose()?,
        manifest_target,
        health: HealthPolicy {
            max_failure_basis_points: u16::try_from(failure_threshold_bp)
                .ok()
                .filter(|bp| *bp <= 10_000)
                .ok_or_else(|| {
                    corrupt(op, "releases.failure_threshold_bp", failure_threshold_bp)
                })?,
            min_sample: to_u64(min_sample, op, "releases.min_sample")?,
        },
        created_at: UnixTime(created_at),
        updated_at: UnixTime(updated_at),
        halted_reason,
    })
}

type ArtifactRow = (String, String, i64, String, String, String, String, i64);

fn artifact_from_row(row: ArtifactRow, op: &'static str) -> Result<ArtifactRecord, CatalogError> {
    let (target, slot, length, sha256, blake3, chunk_index, chunk_tree, chunk_count) = row;
    Ok(ArtifactRecord {
        target,
        slot,
        length: to_u64(length, op, "artifacts.length")?,
        sha256: digest(&sha256, op, "artifacts.sha256")?,
        blake3: digest(&blake3, op, "artifacts.blake3")?,
        chunk_index: digest(&chunk_index, op, "artifacts.chunk_index")?,
        chunk_tree: digest(&chunk_tree, op, "artifacts.chunk_tree")?,
        chunk_count: to_u64(chunk_count, op, "artifacts.chunk_count")?,
    })
}

type MetadataRow = (String, String, i64, Vec<u8>);

fn metadata_from_row(row: MetadataRow, op: &'static str) -> Result<MetadataFile, CatalogError> {
    let (name, role, version, bytes) = row;
    Ok(MetadataFile {
        name,
        role,
        version: to_u64(version, op, "metadata.version")?,
        bytes,
    })
}

const DEVICE_COLUMNS: &str = "handle, public_key, channel, model, enrolled_at, revoked, \
     revoked_at, validation_cohort, installed, attestation, attestation_reasons, attested_at";

type DeviceRow = (
    String,
    String,
    String,
    String,
    i64,
    bool,
    Option<i64>,
    bool,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<i64>,
);

fn device_from_row(row: DeviceRow, op: &'static str) -> Result<DeviceRecord, CatalogError> {
    let (
        handle,
        public_key,
        channel,
        model,
        enrolled_at,
        revoked,
        revoked_at,
        validation_cohort,
        installed,
        attestation,
        reasons,
        attested_at,
    ) = row;
    let revoked_at = match (revoked, revoked_at) {
        (true, Some(at)) => Some(UnixTime(at)),
        (false, None) => None,
        _ => {
            return Err(corrupt(
                op,
                "devices.revoked_at",
                "disagrees with devices.revoked",
            ));
        }
    };
    let attestation = match (attestation, reasons, attested_at) {
        (None, None, None) => None,
        (Some(outcome), Some(reasons), Some(at)) => Some(AttestationRecord {
            outcome: match outcome.as_str() {
                "passed" => AttestationOutcome::Passed,
                "failed" => AttestationOutcome::Failed,
                other => return Err(corrupt(op, "devices.attestation", other)),
            },
            reasons: serde_json::from_str(&reasons)
                .map_err(|e| corrupt(op, "devices.attestation_reasons", e))?,
            at: UnixTime(at),
        }),
        _ => return Err(corrupt(op, "devices.attestation", "partly recorded")),
    };
    Ok(DeviceRecord {
        handle: DeviceHandle(hex32(&handle, op, "devices.handle")?),
        public_key: hex32(&public_key, op, "devices.public_key")?,
        channel: Channel(channel),
        model,
        enrolled_at: UnixTime(enrolled_at),
        revoked_at,
        validation_cohort,
        installed: installed
            .map(|n| release_number(n, op, "devices.installed"))
            .transpose()?,
        attestation,
    })
}

// --- conversions -------------------------------------------------------------------------

/// A stage as its three columns: `stage`, `resume_stage` and `basis_points`.
type StageColumns = (&'static str, Option<&'static str>, Option<i64>);

fn stage_columns(stage: Stage, op: &'static str) -> Result<StageColumns, CatalogError> {
    let share = |basis_points: u16| {
        if basis_points > 10_000 {
            Err(CatalogError::OutOfRange {
                op,
                what: "rollout basis points",
            })
        } else {
            Ok(Some(i64::from(basis_points)))
        }
    };
    Ok(match stage {
        Stage::Draft => ("draft", None, None),
        Stage::Validation => ("validation", None, None),
        Stage::Limited { basis_points } => ("limited", None, share(basis_points)?),
        Stage::Stable => ("stable", None, None),
        Stage::Security => ("security", None, None),
        Stage::Halted { resume } => {
            let (resume, basis_points) = match resume {
                Active::Validation => ("validation", None),
                Active::Limited { basis_points } => ("limited", share(basis_points)?),
                Active::Stable => ("stable", None),
                Active::Security => ("security", None),
            };
            ("halted", Some(resume), basis_points)
        }
        Stage::Revoked => ("revoked", None, None),
    })
}

fn stage_from_columns(
    name: &str,
    resume: Option<&str>,
    basis_points: Option<i64>,
    op: &'static str,
) -> Result<Stage, CatalogError> {
    let bad = || {
        corrupt(
            op,
            "releases.stage",
            format!("{name} (resume {resume:?}, basis points {basis_points:?})"),
        )
    };
    let share = |bp: i64| {
        u16::try_from(bp)
            .ok()
            .filter(|bp| *bp <= 10_000)
            .ok_or_else(|| corrupt(op, "releases.basis_points", bp))
    };
    let stage = match (name, resume, basis_points) {
        ("draft", None, None) => Stage::Draft,
        ("validation", None, None) => Stage::Validation,
        ("limited", None, Some(bp)) => Stage::Limited {
            basis_points: share(bp)?,
        },
        ("stable", None, None) => Stage::Stable,
        ("security", None, None) => Stage::Security,
        ("halted", Some(resume), bp) => Stage::Halted {
            resume: match (resume, bp) {
                ("validation", None) => Active::Validation,
                ("limited", Some(bp)) => Active::Limited {
                    basis_points: share(bp)?,
                },
                ("stable", None) => Active::Stable,
                ("security", None) => Active::Security,
                _ => return Err(bad()),
            },
        },
        ("revoked", None, None) => Stage::Revoked,
        _ => return Err(bad()),
    };
    Ok(stage)
}

fn attestation_name(outcome: AttestationOutcome) -> &'static str {
    match outcome {
        AttestationOutcome::Passed => "passed",
        AttestationOutcome::Failed => "failed",
    }
}

fn outcome_name(outcome: ReportOutcome) -> &'static str {
    match outcome {
        ReportOutcome::Success => "success",
        ReportOutcome::Failure => "failure",
    }
}

/// The stored form of a connection binding: hex SHA-256 of its TLS exporter value.
fn binding(exporter: &[u8; 32]) -> String {
    Sha256Hash::of(exporter).to_hex()
}

type RelayRow = (String, String, i64, Option<i64>);

fn relay_from_row(row: RelayRow, op: &'static str) -> Result<RelayRecord, CatalogError> {
    let (public_key, name, enrolled_at, revoked_at) = row;
    Ok(RelayRecord {
        public_key: hex32(&public_key, op, "relays.public_key")?,
        name,
        enrolled_at: UnixTime(enrolled_at),
        revoked_at: revoked_at.map(UnixTime),
    })
}

fn found_device(rows: u64, handle: &DeviceHandle) -> Result<(), CatalogError> {
    if rows == 0 {
        Err(CatalogError::DeviceNotFound { handle: *handle })
    } else {
        Ok(())
    }
}

fn db(op: &'static str) -> impl FnOnce(sqlx::Error) -> CatalogError {
    move |source| CatalogError::Database { op, source }
}

fn corrupt(op: &'static str, column: &'static str, detail: impl fmt::Display) -> CatalogError {
    CatalogError::Corrupt {
        op,
        column,
        detail: detail.to_string(),
    }
}

fn to_i64(value: u64, op: &'static str, what: &'static str) -> Result<i64, CatalogError> {
    i64::try_from(value).map_err(|_| CatalogError::OutOfRange { op, what })
}

fn to_u64(value: i64, op: &'static str, column: &'static str) -> Result<u64, CatalogError> {
    u64::try_from(value).map_err(|_| corrupt(op, column, value))
}

fn release_number(
    value: i64,
    op: &'static str,
    column: &'static str,
) -> Result<ReleaseNumber, CatalogError> {
    to_u64(value, op, column).map(ReleaseNumber)
}

fn digest<T: FromStr>(hex: &str, op: &'static str, column: &'static str) -> Result<T, CatalogError>
where
    T::Err: fmt::Display,
{
    hex.parse().map_err(|e| corrupt(op, column, e))
}

fn hex32(text: &str, op: &'static str, column: &'static str) -> Result<[u8; 32], CatalogError> {
    let mut out = [0u8; 32];
    if text.len() != 64 || text.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(corrupt(op, column, "not 64 lowercase hex characters"));
    }
    hex::decode_to_slice(text, &mut out).map_err(|e| corrupt(op, column, e))?;
    Ok(out)
}

/// A location fit for messages: a URL's credentials replaced by `***`.
fn redact(location: &str) -> String {
    let Some(scheme_end) = location.find("://") else {
        return location.to_string();
    };
    let rest = &location[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}://***@{}", &location[..scheme_end], &rest[at + 1..]),
        None => location.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_credentials_only() {
        assert_eq!(
            redact("postgres://ota:secret@db.example:5432/ota?sslmode=disable"),
            "postgres://***@db.example:5432/ota?sslmode=disable"
        );
        assert_eq!(redact("postgres://db/ota"), "postgres://db/ota");
        assert_eq!(redact("/var/lib/ota/catalog.db"), "/var/lib/ota/catalog.db");
    }

    #[test]
    fn stage_columns_round_trip() {
        let actives = [
            Active::Validation,
            Active::Limited { basis_points: 1 },
            Active::Limited {
                basis_points: 10_000,
            },
            Active::Stable,
            Active::Security,
        ];
        let stages = [Stage::Draft, Stage::Revoked]
            .into_iter()
            .chain(actives.map(Stage::from))
            .chain(actives.map(|resume| Stage::Halted { resume }));
        for stage in stages {
            let (name, resume, bp) = stage_columns(stage, "test").unwrap();
            assert_eq!(stage_from_columns(name, resume, bp, "test").unwrap(), stage);
        }
        let too_wide = Stage::Limited {
            basis_points: 10_001,
        };
        assert!(stage_columns(too_wide, "test").is_err());
        for (name, resume, bp) in [
            ("limited", None, None),
            ("stable", None, Some(5)),
            ("limited", None, Some(-1)),
            ("halted", None, None),
            ("halted", Some("limited"), None),
            ("halted", Some("draft"), None),
            ("stable", Some("stable"), None),
            ("paused", None, None),
        ] {
            assert!(
                stage_from_columns(name, resume, bp, "test").is_err(),
                "{name} {resume:?} {bp:?}"
            );
        }
    }

    /// The two migration sets say the same thing: they differ only in the blob column type
    /// and in the comment that names the other file.
    #[test]
    fn migrations_agree() {
        let strip = |sql: &str| -> Vec<String> {
            sql.lines()
                .filter(|line| !line.trim_start().starts_with("--"))
                .map(|line| line.replace("BYTEA", "BLOB "))
                .collect()
        };
        assert_eq!(SQLITE_MIGRATIONS.len(), POSTGRES_MIGRATIONS.len());
        for (sqlite, postgres) in SQLITE_MIGRATIONS.iter().zip(POSTGRES_MIGRATIONS) {
            assert_eq!((sqlite.0, sqlite.1), (postgres.0, postgres.1));
            assert_eq!(strip(sqlite.2), strip(postgres.2));
        }
    }
}
