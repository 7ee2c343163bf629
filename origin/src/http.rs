//! The origin's two HTTP faces: the read-only mirror (DESIGN.md §4, last paragraph) and the
//! operators' admin API (DESIGN.md §6).
//!
//! # The mirror ([`mirror`])
//!
//! The image repository in the standard TUF layout with consistent snapshots, so that a CDN,
//! a plain mirror or a stock TUF client (python-tuf's `ngclient`) can use it, and a device may
//! use it as one more source. Read-only, no authentication: everything it serves is public and
//! verified by whoever reads it.
//!
//! | route | what |
//! |---|---|
//! | `GET /metadata/NAME` | a published file: `N.root.json`, `timestamp.json`, `N.ROLE.json` |
//! | `GET /targets/releases/C/SHA256.N.json` | a release manifest (or unprefixed) |
//! | `GET /targets/artifacts/SHA256.NAME` | an artifact, streamed (unprefixed: the newest) |
//! | `GET /chunks/ID` | a blob (chunk or chunk index) by its BLAKE3 id |
//!
//! Private content (`release create --private`) is never served here: a private chunk or a
//! private artifact is answered 404 like one the origin does not hold, and counted
//! (`ota_origin_private_refused_total`). Its metadata is served (TUF metadata is public); its
//! bytes go only over QUIC, to a connection granted them (see [`crate::access`]).
//!
//! Every blob is read with [`BlobStore::get_verified`](crate::store::BlobStore::get_verified):
//! a damaged copy is logged and answered with a 500, never served. An artifact is not
//! buffered: its chunk index is read and checked, then the chunks are read a few at a time,
//! in order, each checked against its id, and written out as they come; `Content-Length` is the
//! artifact's length. A chunk found damaged half-way cuts the connection, so the client sees a
//! short body and refuses it (the status line has gone already). HEAD is answered for every
//! route. Hash-prefixed and versioned files never change and say so (`Cache-Control:
//! immutable`); `timestamp.json` and unprefixed targets are `no-cache`.
//!
//! # The admin API ([`admin`])
//!
//! For operators, on a separate listener. Every route needs `Authorization: Bearer TOKEN`
//! (compared in constant time), except `GET /metrics` (Prometheus text), as is usual for a
//! scrape endpoint on an admin port.
//!
//! | route | what |
//! |---|---|
//! | `GET /api/health` | `{"ok": true}` |
//! | `GET /api/releases[?channel=C]` | releases with stage, report counts and health |
//! | `GET /api/releases/C/N` | one release, with its artifacts |
//! | `POST /api/releases/C/N/promote` | widen the rollout (below) |
//! | `POST /api/releases/C/N/halt` | optional `{"reason": "…"}` |
//! | `POST /api/releases/C/N/resume`, `…/revoke` | no body |
//! | `GET /api/devices[?channel=C&after=HANDLE&limit=N]` | enrolled devices, a page at a time |
//!
//! `promote` takes `{"percent": 12.5}` (a limited wave, in steps of 0.01%), `{"stable": true}`
//! or `{"security": true}`. Stage changes go through [`lifecycle::apply`], like the command
//! line's: a move the lifecycle forbids is a 409 with the lifecycle's reason, an unknown
//! release a 404. Every error is JSON, `{"error": "…"}`.

use std::fmt;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use subtle::ConstantTimeEq as _;
use tracing::Instrument as _;

use ota_core::chunk::{ChunkIndex, INDEX_ENTRY_LEN, INDEX_HEADER_LEN, IndexLimits};
use ota_core::digest::{Blake3Hash, ChunkId, Sha256Hash};
use ota_core::director::{AttestationOutcome, DeviceHandle};
use ota_core::rollout::{self, Command, Health, HealthPolicy, Stage};
use ota_core::time::UnixTime;
use ota_core::tuf::enigm::{Channel, ReleaseNumber};
use ota_core::tuf::path::check_target_path;

use crate::lifecycle::{self, LifecycleError};
use crate::metrics::Metrics;
use crate::service::Origin;
use crate::store::{ArtifactRecord, CatalogError, DeviceRecord, ReleaseRecord};

/// The role under which `release create` publishes release manifests in the catalog.
const MANIFEST_ROLE: &str = "manifest";
/// Chunks of an artifact read ahead of the one being sent (at most 1 MiB each).
const ARTIFACT_READ_AHEAD: usize = 4;
/// Longest request body the admin API reads.
const MAX_ADMIN_BODY: usize = 64 * 1024;
/// Longest halt reason kept.
const MAX_REASON_LEN: usize = 1024;
/// Devices per page, unless asked otherwise, and at most.
const DEFAULT_DEVICE_PAGE: u32 = 100;
const MAX_DEVICE_PAGE: u32 = 1000;

const CACHE_IMMUTABLE: &str = "public, max-age=31536000, immutable";
const CACHE_REVALIDATE: &str = "no-cache";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The read-only HTTP mirror (see the module documentation).
pub fn mirror(origin: Arc<Origin>) -> Router {
    Router::new()
        .route("/metadata/{name}", get(metadata))
        .route("/targets/{*path}", get(target))
        .route("/chunks/{id}", get(chunk))
        .fallback(not_found)
        .with_state(origin)
}

/// The admin API, every route behind `Authorization: Bearer TOKEN` but `GET /metrics` (see
/// the module documentation). An empty token matches nothing.
pub fn admin(origin: Arc<Origin>, token: String) -> Router {
    let token = Arc::new(AdminToken::new(&token));
    let api = Router::new()
        .route("/api/health", get(health))
        .route("/api/releases", get(list_releases))
        .route("/api/releases/{channel}/{number}", get(show_release))
        .route("/api/releases/{channel}/{number}/promote", post(promote))
        .route("/api/releases/{channel}/{number}/halt", post(halt))
        .route("/api/releases/{channel}/{number}/resume", post(resume))
        .route("/api/releases/{channel}/{number}/revoke", post(revoke))
        .route("/api/devices", get(list_devices))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_ADMIN_BODY))
        .layer(middleware::from_fn_with_state(token, require_token));
    Router::new()
        .route("/metrics", get(metrics))
        .merge(api)
        .with_state(origin)
}

// --- errors ------------------------------------------------------------------------------

/// An error answer: a status and `{"error": message}`.
#[derive(Debug)]
struct HttpError {
    status: StatusCode,
    message: String,
}

impl HttpError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// A failure of the origin itself: logged in full, answered without detail.
    fn internal(what: &str, error: &dyn fmt::Display) -> Self {
        tracing::error!(error = %error, "{what}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{what}; see the origin's log"),
        )
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

impl From<CatalogError> for HttpError {
    fn from(error: CatalogError) -> Self {
        Self::internal("catalog failure", &error)
    }
}

impl From<LifecycleError> for HttpError {
    fn from(error: LifecycleError) -> Self {
        match error {
            LifecycleError::NotFound { .. } => Self::not_found(error.to_string()),
            LifecycleError::Illegal(illegal) => Self::new(StatusCode::CONFLICT, illegal.reason),
            LifecycleError::NotSecurity(_)
            | LifecycleError::Catalog(CatalogError::StaleStage { .. }) => {
                Self::new(StatusCode::CONFLICT, error.to_string())
            }
            LifecycleError::Catalog(error) => error.into(),
            LifecycleError::Audit(_) => Self::internal("audit log failure", &error),
        }
    }
}

impl From<PathRejection> for HttpError {
    fn from(rejection: PathRejection) -> Self {
        Self::bad_request(rejection.body_text())
    }
}

impl From<QueryRejection> for HttpError {
    fn from(rejection: QueryRejection) -> Self {
        Self::bad_request(rejection.body_text())
    }
}

async fn not_found() -> HttpError {
    HttpError::not_found("no such route")
}

// --- the mirror --------------------------------------------------------------------------

/// `GET /metadata/{name}`.
async fn metadata(
    State(origin): State<Arc<Origin>>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, HttpError> {
    let Path(name) = name?;
    let span = tracing::info_span!("origin.http.metadata", name = %name);
    async move {
        if name.is_empty() || name.contains('/') || name.contains('\\') || name.contains("..") {
            return Err(HttpError::bad_request("not a metadata file name"));
        }
        let file = origin
            .catalog
            .metadata(&name)
            .await?
            .filter(|file| file.role != MANIFEST_ROLE)
            .ok_or_else(|| HttpError::not_found(format!("no metadata file {name}")))?;
        Metrics::inc(&origin.metrics.metadata_served);
        tracing::debug!(bytes = file.bytes.len(), "served");
        // `N.role.json` never changes once published; `timestamp.json` (and any other
        // unversioned name) does.
        let versioned = name
            .split_once('.')
            .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        Ok(json_file(file.bytes, versioned))
    }
    .instrument(span)
    .await
}

/// `GET /targets/{*path}`: release manifests and artifacts, with or without the SHA-256
/// prefix of consistent snapshots.
async fn target(
    State(origin): State<Arc<Origin>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, HttpError> {
    let Path(path) = path?;
    let span = tracing::info_span!("origin.http.target", path = %path);
    async move {
        check_target_path("mirror", &path).map_err(|e| HttpError::bad_request(e.to_string()))?;
        let (dir, file) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
        // `HASH.NAME` with a well-formed SHA-256 is a prefixed path; anything else is a name.
        let (hash, name) = match file.split_once('.') {
            Some((prefix, rest)) if !rest.is_empty() => match Sha256Hash::from_str(prefix) {
                Ok(hash) => (Some(hash), rest),
                Err(_) => (None, file),
            },
            _ => (None, file),
        };
        let target = if dir.is_empty() {
            name.to_string()
        } else {
            format!("{dir}/{name}")
        };
        if target.starts_with("releases/") {
            manifest(&origin, &target, hash).await
        } else if target.starts_with("artifacts/") {
            artifact(origin, &target, hash).await
        } else {
            Err(HttpError::not_found(format!("no target {target}")))
        }
    }
    .instrument(span)
    .await
}

/// A release manifest, published in the catalog under its target path.
async fn manifest(
    origin: &Origin,
    target: &str,
    hash: Option<Sha256Hash>,
) -> Result<Response, HttpError> {
    let file = origin
        .catalog
        .metadata(target)
        .await?
        .filter(|file| file.role == MANIFEST_ROLE)
        .filter(|file| hash.is_none_or(|hash| Sha256Hash::of(&file.bytes) == hash))
        .ok_or_else(|| HttpError::not_found(format!("no target {target} with that hash")))?;
    Metrics::inc(&origin.metrics.metadata_served);
    tracing::debug!(bytes = file.bytes.len(), "served manifest");
    Ok(json_file(file.bytes, hash.is_some()))
}

/// An artifact, streamed from its chunks.
async fn artifact(
    origin: Arc<Origin>,
    target: &str,
    hash: Option<Sha256Hash>,
) -> Result<Response, HttpError> {
    if origin
        .access
        .is_private_target(&origin.catalog, target)
        .await?
    {
        Metrics::inc(&origin.metrics.private_refused);
        tracing::info!("private artifact refused: the mirror serves no private content");
        return Err(HttpError::not_found(format!(
            "no target {target} with that hash"
        )));
    }
    let record = origin
        .catalog
        .artifact_by_target(target, hash.as_ref())
        .await?
        .ok_or_else(|| HttpError::not_found(format!("no target {target} with that hash")))?;
    let chunks = chunk_list(&origin, &record).await?;
    let span = tracing::Span::current();
    let body = futures_util::stream::iter(chunks)
        .map(move |(id, len)| {
            let origin = Arc::clone(&origin);
            async move { stream_chunk(&origin, id, len).await }.instrument(span.clone())
        })
        .buffered(ARTIFACT_READ_AHEAD);
    tracing::debug!(length = record.length, "streaming artifact");
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(record.length));
    headers.insert(header::CACHE_CONTROL, cache_control(hash.is_some()));
    Ok(response)
}

/// The chunks of an artifact in order, from its chunk index, checked against the record.
async fn chunk_list(
    origin: &Origin,
    record: &ArtifactRecord,
) -> Result<Vec<(ChunkId, u32)>, HttpError> {
    let index_len = record
        .chunk_count
        .checked_mul(INDEX_ENTRY_LEN as u64)
        .and_then(|n| n.checked_add(INDEX_HEADER_LEN as u64))
        .ok_or_else(|| {
            HttpError::internal(
                "artifact record out of range",
                &format_args!("{}: {} chunks", record.target, record.chunk_count),
            )
        })?;
    let bytes = origin
        .blobs
        .get_verified(&record.chunk_index, index_len)
        .await
        .map_err(|e| HttpError::internal("chunk index unreadable", &e))?
        .ok_or_else(|| {
            HttpError::internal(
                "chunk index missing from the blob store",
                &format_args!("{}: index {}", record.target, record.chunk_index),
            )
        })?;
    let limits = IndexLimits {
        max_chunks: record.chunk_count,
        max_length: record.length,
    };
    let index = ChunkIndex::parse(&bytes, limits)
        .map_err(|e| HttpError::internal("chunk index invalid", &e))?;
    if index.len() != record.chunk_count || index.total_length() != record.length {
        return Err(HttpError::internal(
            "chunk index disagrees with the catalog",
            &format_args!(
                "{}: index lists {} chunks, {} bytes; catalog {} chunks, {} bytes",
                record.target,
                index.len(),
                index.total_length(),
                record.chunk_count,
                record.length
            ),
        ));
    }
    Ok(index.entries().iter().map(|e| (*e.id(), e.len())).collect())
}

/// One chunk of a streamed artifact: read, checked, counted. An error ends the body early.
async fn stream_chunk(origin: &Origin, id: ChunkId, len: u32) -> Result<Bytes, std::io::Error> {
    match origin.blobs.get_verified(&id, u64::from(len)).await {
        Ok(Some(bytes)) if bytes.len() as u64 == u64::from(len) => {
            Metrics::inc(&origin.metrics.blobs_served);
            Metrics::add(&origin.metrics.blob_bytes_served, u64::from(len));
            Ok(bytes)
        }
        Ok(Some(bytes)) => {
            let error = format!("chunk {id} is {} bytes, the index says {len}", bytes.len());
            tracing::error!(chunk = %id, "{error}; artifact cut short");
            Err(std::io::Error::other(error))
        }
        Ok(None) => {
            tracing::error!(chunk = %id, "chunk missing from the blob store; artifact cut short");
            Err(std::io::Error::other(format!("chunk {id} missing")))
        }
        Err(e) => {
            tracing::error!(chunk = %id, error = %e, "chunk unreadable; artifact cut short");
            Err(std::io::Error::other(e))
        }
    }
}

/// `GET /chunks/{id}`: a blob the catalog records, checked against its id.
async fn chunk(
    State(origin): State<Arc<Origin>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, HttpError> {
    let Path(id) = id?;
    let span = tracing::info_span!("origin.http.chunk", id = %id);
    async move {
        let id = ChunkId::from_str(&id).map_err(|e| HttpError::bad_request(e.to_string()))?;
        if origin.access.is_private_blob(&origin.catalog, &id).await? {
            Metrics::inc(&origin.metrics.private_refused);
            tracing::info!("private chunk refused: the mirror serves no private content");
            return Err(HttpError::not_found(format!("no blob {id}")));
        }
        let record = origin
            .catalog
            .blob(&id)
            .await?
            .ok_or_else(|| HttpError::not_found(format!("no blob {id}")))?;
        let bytes = match origin.blobs.get_verified(&id, record.length).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                tracing::warn!("the catalog records the blob, the blob store does not hold it");
                return Err(HttpError::not_found(format!("no blob {id}")));
            }
            Err(e) => return Err(HttpError::internal("blob unreadable or damaged", &e)),
        };
        Metrics::inc(&origin.metrics.blobs_served);
        Metrics::add(&origin.metrics.blob_bytes_served, bytes.len() as u64);
        tracing::debug!(bytes = bytes.len(), "served");
        Ok((
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                ),
                (header::CACHE_CONTROL, cache_control(true)),
            ],
            bytes,
        )
            .into_response())
    }
    .instrument(span)
    .await
}

fn json_file(bytes: Vec<u8>, immutable: bool) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, cache_control(immutable)),
        ],
        bytes,
    )
        .into_response()
}

fn cache_control(immutable: bool) -> HeaderValue {
    HeaderValue::from_static(if immutable {
        CACHE_IMMUTABLE
    } else {
        CACHE_REVALIDATE
    })
}

// --- the admin API: authentication -------------------------------------------------------

/// The admin token, kept as its SHA-256 so that comparing takes the same time whatever the
/// presented token's length and content.
struct AdminToken {
    digest: Option<[u8; 32]>,
}

impl AdminToken {
    fn new(token: &str) -> Self {
        Self {
            digest: (!token.is_empty()).then(|| sha2::Sha256::digest(token.as_bytes()).into()),
        }
    }

    fn accepts(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = &self.digest else {
            return false;
        };
        let Some((scheme, presented)) = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split_once(' '))
        else {
            return false;
        };
        let presented: [u8; 32] = sha2::Sha256::digest(presented.trim().as_bytes()).into();
        scheme.eq_ignore_ascii_case("bearer") && bool::from(presented.ct_eq(expected))
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

async fn require_token(
    State(token): State<Arc<AdminToken>>,
    request: Request,
    next: Next,
) -> Response {
    if token.accepts(request.headers()) {
        return next.run(request).await;
    }
    tracing::warn!(
        target: "origin.http.admin",
        method = %request.method(),
        path = %request.uri().path(),
        "refused: no valid bearer token"
    );
    let mut response =
        HttpError::new(StatusCode::UNAUTHORIZED, "a valid bearer token is needed").into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

// --- the admin API: routes ---------------------------------------------------------------

/// `GET /metrics`.
async fn metrics(State(origin): State<Arc<Origin>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROMETHEUS_TEXT),
        )],
        origin.metrics.render(),
    )
        .into_response()
}

/// `GET /api/health`.
async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "ok": true }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleasesQuery {
    channel: Option<String>,
}

/// `GET /api/releases[?channel=C]`.
async fn list_releases(
    State(origin): State<Arc<Origin>>,
    query: Result<Query<ReleasesQuery>, QueryRejection>,
) -> Result<Json<Vec<ReleaseView>>, HttpError> {
    let Query(query) = query?;
    let span = tracing::info_span!("origin.http.admin", action = "list releases");
    async move {
        let channel = query.channel.map(Channel);
        let releases = origin.catalog.releases(channel.as_ref()).await?;
        let mut views = Vec::with_capacity(releases.len());
        for release in releases {
            views.push(release_view(&origin, release, false).await?);
        }
        Ok(Json(views))
    }
    .instrument(span)
    .await
}

/// `GET /api/releases/{channel}/{number}`.
async fn show_release(
    State(origin): State<Arc<Origin>>,
    key: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<ReleaseView>, HttpError> {
    let (channel, number) = release_key(key)?;
    let span = tracing::info_span!(
        "origin.http.admin",
        action = "show release",
        channel = %channel.0,
        release = number.0
    );
    async move {
        let release = find_release(&origin, &channel, number).await?;
        Ok(Json(release_view(&origin, release, true).await?))
    }
    .instrument(span)
    .await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PromoteBody {
    percent: Option<f64>,
    stable: Option<bool>,
    security: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HaltBody {
    reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmptyBody {}

/// `POST /api/releases/{channel}/{number}/promote`.
async fn promote(
    State(origin): State<Arc<Origin>>,
    key: Result<Path<(String, String)>, PathRejection>,
    body: Bytes,
) -> Result<Json<ReleaseView>, HttpError> {
    let key = release_key(key)?;
    let body: PromoteBody = json_body(&body)?;
    let command = match body {
        PromoteBody {
            percent: Some(percent),
            stable: None,
            security: None,
        } => Command::PromoteLimited {
            basis_points: basis_points(percent)?,
        },
        PromoteBody {
            percent: None,
            stable: Some(true),
            security: None,
        } => Command::PromoteStable,
        PromoteBody {
            percent: None,
            stable: None,
            security: Some(true),
        } => Command::PromoteSecurity,
        _ => {
            return Err(HttpError::bad_request(
                "give exactly one of {\"percent\": P}, {\"stable\": true} or {\"security\": true}",
            ));
        }
    };
    command_release(origin, key, command, None).await
}

/// `POST /api/releases/{channel}/{number}/halt`.
async fn halt(
    State(origin): State<Arc<Origin>>,
    key: Result<Path<(String, String)>, PathRejection>,
    body: Bytes,
) -> Result<Json<ReleaseView>, HttpError> {
    let key = release_key(key)?;
    let body: HaltBody = json_body(&body)?;
    let reason = body.reason.filter(|r| !r.trim().is_empty());
    if reason.as_ref().is_some_and(|r| r.len() > MAX_REASON_LEN) {
        return Err(HttpError::bad_request(format!(
            "a reason is at most {MAX_REASON_LEN} bytes"
        )));
    }
    command_release(origin, key, Command::Halt, reason).await
}

/// `POST /api/releases/{channel}/{number}/resume`.
async fn resume(
    State(origin): State<Arc<Origin>>,
    key: Result<Path<(String, String)>, PathRejection>,
    body: Bytes,
) -> Result<Json<ReleaseView>, HttpError> {
    let key = release_key(key)?;
    let EmptyBody {} = json_body(&body)?;
    command_release(origin, key, Command::Resume, None).await
}

/// `POST /api/releases/{channel}/{number}/revoke`.
async fn revoke(
    State(origin): State<Arc<Origin>>,
    key: Result<Path<(String, String)>, PathRejection>,
    body: Bytes,
) -> Result<Json<ReleaseView>, HttpError> {
    let key = release_key(key)?;
    let EmptyBody {} = json_body(&body)?;
    command_release(origin, key, Command::Revoke, None).await
}

/// Apply a lifecycle command and answer with the release as it now is.
async fn command_release(
    origin: Arc<Origin>,
    (channel, number): (Channel, ReleaseNumber),
    command: Command,
    reason: Option<String>,
) -> Result<Json<ReleaseView>, HttpError> {
    let span = tracing::info_span!(
        "origin.http.admin",
        action = ?command,
        channel = %channel.0,
        release = number.0
    );
    async move {
        let stage = lifecycle::apply(
            &origin,
            &channel,
            number,
            command,
            reason.as_deref(),
            "admin-api",
            now(),
        )
        .await
        .inspect_err(|e| tracing::info!(error = %e, "refused"))?;
        tracing::info!(stage = %stage, actor = "admin-api", "applied");
        let release = find_release(&origin, &channel, number).await?;
        Ok(Json(release_view(&origin, release, false).await?))
    }
    .instrument(span)
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DevicesQuery {
    channel: Option<String>,
    after: Option<String>,
    limit: Option<u32>,
}

#[derive(Debug, Serialize)]
struct DevicePage {
    devices: Vec<DeviceView>,
    /// The handle to pass as `after` for the next page; absent on the last page.
    next: Option<String>,
}

/// `GET /api/devices[?channel=C&after=HANDLE&limit=N]`.
async fn list_devices(
    State(origin): State<Arc<Origin>>,
    query: Result<Query<DevicesQuery>, QueryRejection>,
) -> Result<Json<DevicePage>, HttpError> {
    let Query(query) = query?;
    let span = tracing::info_span!("origin.http.admin", action = "list devices");
    async move {
        let limit = query.limit.unwrap_or(DEFAULT_DEVICE_PAGE);
        if limit == 0 || limit > MAX_DEVICE_PAGE {
            return Err(HttpError::bad_request(format!(
                "limit is between 1 and {MAX_DEVICE_PAGE}"
            )));
        }
        let after = query
            .after
            .as_deref()
            .map(parse_handle)
            .transpose()
            .map_err(|_| HttpError::bad_request("after is a device handle: 64 lowercase hex"))?;
        let channel = query.channel.map(Channel);
        // One more than asked for tells whether there is a next page.
        let mut devices = origin
            .catalog
            .devices(channel.as_ref(), after.as_ref(), limit + 1)
            .await?;
        let more = devices.len() > limit as usize;
        devices.truncate(limit as usize);
        let next = more
            .then(|| devices.last().map(|d| d.handle.to_hex()))
            .flatten();
        Ok(Json(DevicePage {
            devices: devices.into_iter().map(DeviceView::from).collect(),
            next,
        }))
    }
    .instrument(span)
    .await
}

// --- the admin API: views ----------------------------------------------------------------

/// A release as the admin API shows it.
#[derive(Debug, Serialize)]
struct ReleaseView {
    channel: String,
    number: u64,
    version: String,
    /// `stage` and, for a limited or halted release, `basis_points` or `resume`.
    #[serde(flatten)]
    stage: Stage,
    /// The stage for people, e.g. `limited (12.50%)`.
    stage_text: String,
    security: bool,
    models: Vec<String>,
    min_installed: Option<u64>,
    manifest_target: String,
    created_at: UnixTime,
    updated_at: UnixTime,
    halted_reason: Option<String>,
    health_policy: HealthPolicy,
    reports: Reports,
    health: Health,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifacts: Option<Vec<ArtifactView>>,
}

#[derive(Debug, Serialize)]
struct Reports {
    successes: u64,
    failures: u64,
}

#[derive(Debug, Serialize)]
struct ArtifactView {
    target: String,
    slot: String,
    length: u64,
    sha256: Sha256Hash,
    blake3: Blake3Hash,
    chunk_index: ChunkId,
    chunk_tree: Blake3Hash,
    chunk_count: u64,
}

/// A device as the admin API shows it: no key, no evidence.
#[derive(Debug, Serialize)]
struct DeviceView {
    handle: String,
    channel: String,
    model: String,
    enrolled_at: UnixTime,
    revoked: bool,
    revoked_at: Option<UnixTime>,
    installed: Option<u64>,
    attestation: Option<AttestationView>,
}

#[derive(Debug, Serialize)]
struct AttestationView {
    outcome: AttestationOutcome,
    at: UnixTime,
}

impl From<DeviceRecord> for DeviceView {
    fn from(device: DeviceRecord) -> Self {
        Self {
            handle: device.handle.to_hex(),
            revoked: device.is_revoked(),
            channel: device.channel.0,
            model: device.model,
            enrolled_at: device.enrolled_at,
            revoked_at: device.revoked_at,
            installed: device.installed.map(|n| n.0),
            attestation: device.attestation.map(|a| AttestationView {
                outcome: a.outcome,
                at: a.at,
            }),
        }
    }
}

impl From<ArtifactRecord> for ArtifactView {
    fn from(a: ArtifactRecord) -> Self {
        Self {
            target: a.target,
            slot: a.slot,
            length: a.length,
            sha256: a.sha256,
            blake3: a.blake3,
            chunk_index: a.chunk_index,
            chunk_tree: a.chunk_tree,
            chunk_count: a.chunk_count,
        }
    }
}

async fn release_view(
    origin: &Origin,
    release: ReleaseRecord,
    with_artifacts: bool,
) -> Result<ReleaseView, HttpError> {
    let counts = origin
        .catalog
        .report_counts(&release.channel, release.number)
        .await?;
    let artifacts = if with_artifacts {
        let artifacts = origin
            .catalog
            .artifacts(&release.channel, release.number)
            .await?;
        Some(artifacts.into_iter().map(ArtifactView::from).collect())
    } else {
        None
    };
    Ok(ReleaseView {
        stage_text: release.stage.to_string(),
        health: rollout::health(release.health, counts.successes, counts.failures),
        reports: Reports {
            successes: counts.successes,
            failures: counts.failures,
        },
        channel: release.channel.0,
        number: release.number.0,
        version: release.version,
        stage: release.stage,
        security: release.security,
        models: release.models,
        min_installed: release.min_installed.map(|n| n.0),
        manifest_target: release.manifest_target,
        created_at: release.created_at,
        updated_at: release.updated_at,
        halted_reason: release.halted_reason,
        health_policy: release.health,
        artifacts,
    })
}

// --- helpers -----------------------------------------------------------------------------

fn release_key(
    key: Result<Path<(String, String)>, PathRejection>,
) -> Result<(Channel, ReleaseNumber), HttpError> {
    let Path((channel, number)) = key?;
    let number = number
        .parse::<u64>()
        .map_err(|_| HttpError::bad_request(format!("{number:?} is not a release number")))?;
    Ok((Channel(channel), ReleaseNumber(number)))
}

async fn find_release(
    origin: &Origin,
    channel: &Channel,
    number: ReleaseNumber,
) -> Result<ReleaseRecord, HttpError> {
    origin
        .catalog
        .release(channel, number)
        .await?
        .ok_or_else(|| {
            HttpError::not_found(format!("no release {} on channel {}", number.0, channel.0))
        })
}

/// A JSON request body; an empty body is the type's default.
fn json_body<T: Default + serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, HttpError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| HttpError::bad_request(format!("invalid request body: {e}")))
}

/// A percentage with at most two decimals, as basis points. The lifecycle judges the range
/// (0% and 100% are not waves).
fn basis_points(percent: f64) -> Result<u16, HttpError> {
    if !percent.is_finite() || !(0.0..=100.0).contains(&percent) {
        return Err(HttpError::bad_request("percent is between 0 and 100"));
    }
    let scaled = percent * 100.0;
    let rounded = scaled.round();
    if (scaled - rounded).abs() > 1e-6 {
        return Err(HttpError::bad_request(
            "percent has at most two decimals (a wave is counted in 0.01% steps)",
        ));
    }
    // In 0..=10 000 by the checks above.
    Ok(rounded as u16)
}

fn parse_handle(text: &str) -> Result<DeviceHandle, ()> {
    let id = ChunkId::from_str(text).map_err(|_| ())?;
    Ok(DeviceHandle(id.0))
}

fn now() -> UnixTime {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    UnixTime(i64::try_from(secs).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_to_basis_points() {
        assert_eq!(basis_points(12.5).unwrap(), 1250);
        assert_eq!(basis_points(0.01).unwrap(), 1);
        assert_eq!(basis_points(99.99).unwrap(), 9999);
        assert_eq!(basis_points(100.0).unwrap(), 10_000);
        assert_eq!(basis_points(0.0).unwrap(), 0);
        for bad in [12.345, -1.0, 100.5, f64::NAN, f64::INFINITY] {
            assert!(basis_points(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn token_is_checked() {
        let token = AdminToken::new("s3cret");
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            headers
        };
        assert!(token.accepts(&with("Bearer s3cret")));
        assert!(token.accepts(&with("bearer s3cret")));
        assert!(!token.accepts(&with("Bearer s3cre")));
        assert!(!token.accepts(&with("Bearer s3cret2")));
        assert!(!token.accepts(&with("Basic s3cret")));
        assert!(!token.accepts(&with("s3cret")));
        assert!(!token.accepts(&HeaderMap::new()));
        let empty = AdminToken::new("");
        assert!(!empty.accepts(&with("Bearer ")));
        assert!(!empty.accepts(&with("Bearer x")));
    }
}
