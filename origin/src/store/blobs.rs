//! The blob store: chunks and chunk indexes, named by their BLAKE3 id.
//!
//! One interface over two stores, both through `object_store`:
//!
//! - a local directory (the default): `DIR/chunks/ab/abcdef…` for the blob whose id is
//!   `abcdef…`. `object_store`'s local store writes each blob to a new temporary file beside
//!   its destination (`…#N`, created exclusively) and renames it into place, so a reader sees
//!   the whole blob or none, and a writer killed half-way leaves only a temporary file that no
//!   id names. It does not fsync: after a power loss a blob may be short or empty, which
//!   [`BlobStore::get_verified`] reports as damaged.
//! - an S3-compatible bucket, for `s3://bucket/prefix`: the same keys under the prefix. One
//!   `PUT` per blob, which S3 makes visible whole or not at all.
//!
//! The store does not check what callers put (they hash as they ingest, with `ota-core`),
//! and [`BlobStore::get`] returns what it finds, bounded in length. Whatever is about to be
//! served or trusted is read with [`BlobStore::get_verified`], which checks the bytes against
//! the id, so a damaged disk or bucket cannot serve a wrong chunk.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{GetOptions, ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload};
use ota_core::digest::ChunkId;

/// The blob store (see the module documentation). Cheap to clone: clones share the store.
#[derive(Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    /// The directory of a local store: [`BlobStore::get`] and [`BlobStore::get_verified`]
    /// read its files directly, opening, reading and (for the latter) hashing in one trip to
    /// a blocking thread (rather than `object_store`'s two, then hashing on the async
    /// threads that drive the connections), on the serving path.
    local: Option<PathBuf>,
    /// Where it lives, for messages.
    location: String,
}

/// How to reach an S3-compatible store, for [`BlobStore::open_with`].
/// [`BlobStore::open`] takes the same settings from the usual `AWS_*` environment variables.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Settings {
    /// The endpoint URL, e.g. `http://127.0.0.1:9000` (AWS itself when absent).
    pub endpoint: Option<String>,
    /// The region, e.g. `us-east-1`.
    pub region: Option<String>,
    /// The access key id.
    pub access_key_id: Option<String>,
    /// The secret access key.
    pub secret_access_key: Option<String>,
    /// A session token, for temporary credentials.
    pub session_token: Option<String>,
    /// Whether plain `http://` endpoints are allowed (tests and trusted networks only).
    pub allow_http: bool,
}

/// What [`BlobStore::put`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredBlob {
    /// The blob was written.
    Written,
    /// A blob with this id was already there; nothing was written.
    AlreadyPresent,
}

/// A blob store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    /// The location is neither a directory path nor an `s3://` URL.
    #[error(
        "blob store location {location:?} is not a directory path or an s3://bucket/prefix URL"
    )]
    Location {
        /// The location given.
        location: String,
    },
    /// The local blob directory could not be created.
    #[error("cannot create the blob directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The store could not be set up.
    #[error("cannot open the blob store at {location}: {source}")]
    Open {
        /// The location given.
        location: String,
        /// What `object_store` said.
        #[source]
        source: object_store::Error,
    },
    /// The store failed an operation.
    #[error("blob store: {op} blob {id}: {source}")]
    Store {
        /// The operation.
        op: &'static str,
        /// The blob.
        id: ChunkId,
        /// What `object_store` said.
        #[source]
        source: object_store::Error,
    },
    /// The stored blob is longer than the caller accepts (nothing was read).
    #[error("blob {id} is {length} bytes, over the bound of {max} bytes")]
    TooLarge {
        /// The blob.
        id: ChunkId,
        /// Its stored length.
        length: u64,
        /// The bound.
        max: u64,
    },
    /// The store returned another number of bytes than it said the blob has.
    #[error("blob {id}: the store said {expected} bytes and returned {read}")]
    LengthMismatch {
        /// The blob.
        id: ChunkId,
        /// The length the store announced.
        expected: u64,
        /// The length it returned.
        read: u64,
    },
    /// The stored bytes do not hash to the blob's id: the copy is damaged.
    #[error("blob {id} is damaged: its stored bytes hash to {found}")]
    Damaged {
        /// The blob asked for.
        id: ChunkId,
        /// What the stored bytes hash to.
        found: ChunkId,
    },
}

impl BlobStore {
    /// Opens the blob store at `location`: `s3://bucket/prefix` for an S3-compatible bucket,
    /// configured from the environment (`AWS_ENDPOINT_URL`, `AWS_REGION`,
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_ALLOW_HTTP`,
    /// …); a directory path (or `file://` URL) otherwise, created if missing.
    pub fn open(location: &str) -> Result<Self, BlobError> {
        if is_s3(location) {
            Self::open_s3(location, AmazonS3Builder::from_env())
        } else {
            Self::open_local(location)
        }
    }

    /// Like [`BlobStore::open`], with S3 settings given rather than read from the
    /// environment.
    pub fn open_with(location: &str, s3: &S3Settings) -> Result<Self, BlobError> {
        if !is_s3(location) {
            return Self::open_local(location);
        }
        let mut builder = AmazonS3Builder::new().with_allow_http(s3.allow_http);
        if let Some(endpoint) = &s3.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(region) = &s3.region {
            builder = builder.with_region(region);
        }
        if let Some(key) = &s3.access_key_id {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &s3.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        if let Some(token) = &s3.session_token {
            builder = builder.with_token(token);
        }
        Self::open_s3(location, builder)
    }

    fn open_local(location: &str) -> Result<Self, BlobError> {
        let dir = match location.strip_prefix("file://") {
            Some(path) => Path::new(path),
            None if location.contains("://") => {
                return Err(BlobError::Location {
                    location: location.to_string(),
                });
            }
            None => Path::new(location),
        };
        std::fs::create_dir_all(dir).map_err(|source| BlobError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let store = LocalFileSystem::new_with_prefix(dir).map_err(|source| BlobError::Open {
            location: location.to_string(),
            source,
        })?;
        Ok(Self {
            store: Arc::new(store),
            local: Some(dir.to_path_buf()),
            location: dir.display().to_string(),
        })
    }

    fn open_s3(location: &str, builder: AmazonS3Builder) -> Result<Self, BlobError> {
        let open_error = |source| BlobError::Open {
            location: location.to_string(),
            source,
        };
        let s3 = builder.with_url(location).build().map_err(open_error)?;
        // The builder takes the bucket from the URL; the rest of its path is our prefix.
        let prefix = location
            .trim_start_matches("s3://")
            .split_once('/')
            .map_or("", |(_, prefix)| prefix.trim_matches('/'));
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(PrefixStore::new(s3, prefix))
        };
        Ok(Self {
            store,
            local: None,
            location: location.to_string(),
        })
    }

    /// Where the store lives.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The key of blob `id` in the store: `chunks/ab/abcdef…`, below the directory or the
    /// bucket prefix.
    pub fn key(id: &ChunkId) -> String {
        let hex = id.to_hex();
        format!("chunks/{}/{hex}", &hex[..2])
    }

    /// Stores `bytes` as blob `id`, atomically (see the module documentation). Idempotent: if
    /// a blob with this id is already stored, nothing is written. The caller vouches that
    /// `id` is the BLAKE3 hash of `bytes`.
    pub async fn put(&self, id: &ChunkId, bytes: Bytes) -> Result<StoredBlob, BlobError> {
        const OP: &str = "put";
        if self.exists(id).await? {
            return Ok(StoredBlob::AlreadyPresent);
        }
        // Overwrite, not create: two writers racing on one id write the same bytes, and each
        // write replaces the blob whole.
        let options = PutOptions {
            mode: PutMode::Overwrite,
            ..PutOptions::default()
        };
        self.store
            .put_opts(&path(id), PutPayload::from_bytes(bytes), options)
            .await
            .map_err(store_error(OP, id))?;
        Ok(StoredBlob::Written)
    }

    /// Blob `id`, if stored and at most `max_len` bytes long (a longer one is refused before
    /// its body is read). Its bytes are not checked: see [`BlobStore::get_verified`].
    pub async fn get(&self, id: &ChunkId, max_len: u64) -> Result<Option<Bytes>, BlobError> {
        const OP: &str = "get";
        if let Some(dir) = &self.local {
            let (file, id) = (dir.join(Self::key(id)), *id);
            return tokio::task::spawn_blocking(move || read_local(&file, &id, max_len, false))
                .await
                .map_err(|e| local_error(OP, &id, e))?;
        }
        let result = match self.store.get_opts(&path(id), GetOptions::default()).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(source) => return Err(store_error(OP, id)(source)),
        };
        // The length comes with the response, before the body: check it first.
        let expected = result.meta.size;
        if expected > max_len {
            return Err(BlobError::TooLarge {
                id: *id,
                length: expected,
                max: max_len,
            });
        }
        let bytes = result.bytes().await.map_err(store_error(OP, id))?;
        let read = bytes.len() as u64;
        if read != expected {
            return Err(BlobError::LengthMismatch {
                id: *id,
                expected,
                read,
            });
        }
        Ok(Some(bytes))
    }

    /// Blob `id` as [`BlobStore::get`] reads it, checked: its bytes must hash to `id`, or
    /// the copy is reported as [`BlobError::Damaged`].
    pub async fn get_verified(
        &self,
        id: &ChunkId,
        max_len: u64,
    ) -> Result<Option<Bytes>, BlobError> {
        if let Some(dir) = &self.local {
            // Read and hashed in one blocking call, while the bytes are in the CPU's cache.
            let (file, id) = (dir.join(Self::key(id)), *id);
            return tokio::task::spawn_blocking(move || read_local(&file, &id, max_len, true))
                .await
                .map_err(|e| local_error("get", &id, e))?;
        }
        let Some(bytes) = self.get(id, max_len).await? else {
            return Ok(None);
        };
        check(id, &bytes)?;
        Ok(Some(bytes))
    }

    /// The stored length of blob `id`, if stored.
    pub async fn length(&self, id: &ChunkId) -> Result<Option<u64>, BlobError> {
        match self.store.head(&path(id)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(store_error("head", id)(source)),
        }
    }

    /// Whether blob `id` is stored.
    pub async fn exists(&self, id: &ChunkId) -> Result<bool, BlobError> {
        Ok(self.length(id).await?.is_some())
    }

    /// Deletes blob `id`; deleting a blob that is not stored is not an error.
    pub async fn delete(&self, id: &ChunkId) -> Result<(), BlobError> {
        match self.store.delete(&path(id)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(store_error("delete", id)(source)),
        }
    }
}

impl fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobStore")
            .field("location", &self.location)
            .finish()
    }
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |secret: &Option<String>| secret.as_ref().map(|_| "***");
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redacted(&self.secret_access_key))
            .field("session_token", &redacted(&self.session_token))
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

fn is_s3(location: &str) -> bool {
    location.starts_with("s3://")
}

fn path(id: &ChunkId) -> ObjectPath {
    ObjectPath::from(BlobStore::key(id))
}

/// The stored `bytes` of blob `id` must hash to `id`.
fn check(id: &ChunkId, bytes: &[u8]) -> Result<(), BlobError> {
    let found = ChunkId::of(bytes);
    if found != *id {
        return Err(BlobError::Damaged { id: *id, found });
    }
    Ok(())
}

/// [`BlobStore::get`] of a local store: the same checks, in one blocking call; with `verify`,
/// also [`BlobStore::get_verified`]'s check of the bytes against `id`.
fn read_local(
    file: &Path,
    id: &ChunkId,
    max_len: u64,
    verify: bool,
) -> Result<Option<Bytes>, BlobError> {
    use std::io::Read as _;
    const OP: &str = "get";
    let opened = std::fs::File::open(file).and_then(|f| Ok((f.metadata()?, f)));
    let (meta, file) = match opened {
        // A directory is no blob, as `object_store` has it.
        Ok((meta, _)) if meta.is_dir() => return Ok(None),
        Ok(opened) => opened,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(local_error(OP, id, e)),
    };
    // The length comes with the file, before the body: check it first.
    let expected = meta.len();
    if expected > max_len {
        return Err(BlobError::TooLarge {
            id: *id,
            length: expected,
            max: max_len,
        });
    }
    // `expected` is at most the caller's bound; one byte more shows a file that grew.
    let mut bytes = Vec::with_capacity(usize::try_from(expected).unwrap_or(0));
    file.take(expected.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| local_error(OP, id, e))?;
    let read = bytes.len() as u64;
    if read != expected {
        return Err(BlobError::LengthMismatch {
            id: *id,
            expected,
            read,
        });
    }
    if verify {
        check(id, &bytes)?;
    }
    Ok(Some(Bytes::from(bytes)))
}

fn local_error(
    op: &'static str,
    id: &ChunkId,
    source: impl std::error::Error + Send + Sync + 'static,
) -> BlobError {
    store_error(op, id)(object_store::Error::Generic {
        store: "LocalFileSystem",
        source: Box::new(source),
    })
}

fn store_error(op: &'static str, id: &ChunkId) -> impl FnOnce(object_store::Error) -> BlobError {
    let id = *id;
    move |source| BlobError::Store { op, id, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_fans_out_by_the_first_byte() {
        let id = ChunkId::of(b"abc");
        let hex = id.to_hex();
        assert_eq!(BlobStore::key(&id), format!("chunks/{}/{hex}", &hex[..2]));
    }

    #[test]
    fn other_schemes_are_refused() {
        assert!(matches!(
            BlobStore::open("gs://bucket/prefix"),
            Err(BlobError::Location { .. })
        ));
    }

    #[test]
    fn settings_debug_hides_secrets() {
        let settings = S3Settings {
            secret_access_key: Some("hunter2".into()),
            session_token: Some("tok".into()),
            ..S3Settings::default()
        };
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("tok\""),
            "{shown}"
        );
    }
}
