//! The chunk store on disk: one file per chunk plus a `redb` index, crash-safe.
//!
//! ```text
//! DATA/chunks/ab/abcdef…   one file per chunk, named by its id (BLAKE3, hex)
//! DATA/tmp/                chunks being written
//! DATA/index.redb          id → length, and cached metadata files by name
//! ```
//!
//! A chunk is written to `tmp/`, fsynced, renamed into place and its directory fsynced; only
//! then is it entered in the index. A file in `chunks/` is therefore always whole. On start-up
//! the store reconciles: `tmp/` is emptied, index entries whose file is missing or of the wrong
//! length are dropped, and chunk files the index does not know (a crash between the rename and
//! the index update) are adopted if their bytes hash to their name, deleted otherwise. Reads
//! are verified by the caller (a chunk damaged on disk is never served: see `cache.rs`).
//!
//! Everything here is blocking; the async code calls it through `spawn_blocking`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ota_core::digest::ChunkId;
use redb::{Database, ReadableDatabase as _, ReadableTable as _, TableDefinition};

const CHUNKS: TableDefinition<'_, &[u8; 32], u32> = TableDefinition::new("chunks");
const METADATA: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("metadata");
/// Chunks known to be private, with each release that marks them (`ReleaseKey`): kept so that
/// a restarted peer gates them from its first request, before it has walked the releases again.
const PRIVATE: TableDefinition<'_, (&[u8; 32], &str), ()> = TableDefinition::new("private");

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file system.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// The index database.
    #[error("chunk index: {0}")]
    Index(String),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Index(e.to_string())
}

/// What reconciliation found at start-up.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reconciled {
    /// Chunks in the index with a whole file.
    pub kept: u64,
    /// Index entries dropped (file missing or of the wrong length).
    pub dropped: u64,
    /// Files not in the index whose bytes matched their name, now indexed.
    pub adopted: u64,
    /// Files deleted (temporary, or not matching their name).
    pub deleted: u64,
}

/// An opened store, the chunks it holds (with lengths) and what reconciliation did.
pub type Opened = (Store, Vec<(ChunkId, u32)>, Reconciled);

/// The chunk store.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    db: Database,
    tmp_counter: AtomicU64,
}

impl Store {
    /// Opens (creating if needed) the store in `dir`, reconciles it, and returns the chunks it
    /// holds with their lengths.
    pub fn open(dir: &Path) -> Result<Opened, StoreError> {
        for sub in ["chunks", "tmp"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).map_err(io_err("creating", &path))?;
        }
        let db_path = dir.join("index.redb");
        let db = Database::create(&db_path).map_err(db_err)?;
        {
            let tx = db.begin_write().map_err(db_err)?;
            tx.open_table(CHUNKS).map_err(db_err)?;
            tx.open_table(METADATA).map_err(db_err)?;
            tx.open_table(PRIVATE).map_err(db_err)?;
            tx.commit().map_err(db_err)?;
        }
        let store = Self {
            dir: dir.to_owned(),
            db,
            tmp_counter: AtomicU64::new(0),
        };
        let (chunks, report) = store.reconcile()?;
        Ok((store, chunks, report))
    }

    fn chunk_path(&self, id: &ChunkId) -> PathBuf {
        let hex = id.to_hex();
        self.dir.join("chunks").join(&hex[..2]).join(hex)
    }

    fn reconcile(&self) -> Result<(Vec<(ChunkId, u32)>, Reconciled), StoreError> {
        let mut report = Reconciled::default();
        let tmp = self.dir.join("tmp");
        for entry in fs::read_dir(&tmp).map_err(io_err("listing", &tmp))? {
            let entry = entry.map_err(io_err("listing", &tmp))?;
            let _ = fs::remove_file(entry.path());
            report.deleted += 1;
        }
        let indexed: Vec<(ChunkId, u32)> = {
            let tx = self.db.begin_read().map_err(db_err)?;
            let table = tx.open_table(CHUNKS).map_err(db_err)?;
            let mut out = Vec::new();
            for row in table.iter().map_err(db_err)? {
                let (k, v) = row.map_err(db_err)?;
                out.push((ChunkId(*k.value()), v.value()));
            }
            out
        };
        let mut known = std::collections::HashSet::new();
        let mut kept = Vec::new();
        let mut dropped = Vec::new();
        for (id, len) in indexed {
            let ok = fs::metadata(self.chunk_path(&id)).is_ok_and(|m| m.len() == u64::from(len));
            if ok {
                known.insert(id);
                kept.push((id, len));
            } else {
                dropped.push(id);
            }
        }
        // Files the index does not know: a crash after the rename, before the index update.
        let mut adopted = Vec::new();
        let chunks_dir = self.dir.join("chunks");
        for sub in fs::read_dir(&chunks_dir).map_err(io_err("listing", &chunks_dir))? {
            let sub = sub.map_err(io_err("listing", &chunks_dir))?.path();
            let Ok(files) = fs::read_dir(&sub) else {
                continue;
            };
            for file in files.flatten() {
                let path = file.path();
                let name = file.file_name();
                let parsed = name.to_str().and_then(|n| n.parse::<ChunkId>().ok());
                match parsed {
                    Some(id) if known.contains(&id) => {}
                    Some(id) => match fs::read(&path) {
                        Ok(bytes)
                            if ChunkId::of(&bytes) == id && bytes.len() <= u32::MAX as usize =>
                        {
                            adopted.push((id, bytes.len() as u32));
                        }
                        _ => {
                            let _ = fs::remove_file(&path);
                            report.deleted += 1;
                        }
                    },
                    None => {
                        let _ = fs::remove_file(&path);
                        report.deleted += 1;
                    }
                }
            }
        }
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut table = tx.open_table(CHUNKS).map_err(db_err)?;
            for id in &dropped {
                table.remove(&id.0).map_err(db_err)?;
            }
            for (id, len) in &adopted {
                table.insert(&id.0, *len).map_err(db_err)?;
            }
        }
        tx.commit().map_err(db_err)?;
        report.kept = kept.len() as u64;
        report.dropped = dropped.len() as u64;
        report.adopted = adopted.len() as u64;
        kept.extend(adopted);
        Ok((kept, report))
    }

    /// Stores a chunk whose bytes the caller has verified: temporary file, fsync, rename,
    /// directory fsync, then the index.
    pub fn put(&self, id: &ChunkId, bytes: &[u8]) -> Result<(), StoreError> {
        let len = u32::try_from(bytes.len())
            .map_err(|_| StoreError::Index(format!("chunk {id} is over 4 GiB")))?;
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self.dir.join("tmp").join(format!("{}.{n}", id.to_hex()));
        let dest = self.chunk_path(id);
        let parent = dest.parent().unwrap_or(&self.dir).to_owned();
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(io_err("creating", &tmp))?;
            file.write_all(bytes).map_err(io_err("writing", &tmp))?;
            file.sync_all().map_err(io_err("syncing", &tmp))?;
            drop(file);
            fs::create_dir_all(&parent).map_err(io_err("creating", &parent))?;
            fs::rename(&tmp, &dest).map_err(io_err("renaming into", &dest))?;
            File::open(&parent)
                .and_then(|d| d.sync_all())
                .map_err(io_err("syncing", &parent))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
            return result;
        }
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut table = tx.open_table(CHUNKS).map_err(db_err)?;
            table.insert(&id.0, len).map_err(db_err)?;
        }
        tx.commit().map_err(db_err)
    }

    /// The bytes of a stored chunk (unverified), or `None` if it has no file.
    pub fn get(&self, id: &ChunkId) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.chunk_path(id);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("reading", &path)(e)),
        }
    }

    /// Removes a chunk: index first, then the file (a crash in between leaves an orphan file
    /// that the next start-up adopts or deletes).
    pub fn remove(&self, id: &ChunkId) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut table = tx.open_table(CHUNKS).map_err(db_err)?;
            table.remove(&id.0).map_err(db_err)?;
        }
        tx.commit().map_err(db_err)?;
        let path = self.chunk_path(id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("removing", &path)(e)),
        }
    }

    /// Keeps a metadata file (by its repository name).
    /// Records, durably, that `chunks` are private chunks of release `release`.
    pub fn put_private(&self, release: &str, chunks: &[ChunkId]) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut table = tx.open_table(PRIVATE).map_err(db_err)?;
            for id in chunks {
                table.insert((&id.0, release), ()).map_err(db_err)?;
            }
        }
        tx.commit().map_err(db_err)
    }

    /// Every private chunk recorded, with the release that marks it.
    pub fn all_private(&self) -> Result<Vec<(ChunkId, String)>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let table = tx.open_table(PRIVATE).map_err(db_err)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(db_err)? {
            let (k, _) = row.map_err(db_err)?;
            let (id, release) = k.value();
            out.push((ChunkId(*id), release.to_owned()));
        }
        Ok(out)
    }

    pub fn put_metadata(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut table = tx.open_table(METADATA).map_err(db_err)?;
            table.insert(name, bytes).map_err(db_err)?;
        }
        tx.commit().map_err(db_err)
    }

    /// Every metadata file kept.
    pub fn all_metadata(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let table = tx.open_table(METADATA).map_err(db_err)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            out.push((k.value().to_owned(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// The directory of a chunk file (for tests that damage the store).
    pub fn chunk_file(dir: &Path, id: &ChunkId) -> PathBuf {
        let hex = id.to_hex();
        dir.join("chunks").join(&hex[..2]).join(hex)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// What the peer knows to be private outlives a restart (a restarted peer gates those
    /// chunks from its first request, before it walks the releases again).
    #[test]
    fn private_marks_are_kept_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (x, y) = (ChunkId::of(b"x"), ChunkId::of(b"y"));
        {
            let (store, _, _) = Store::open(dir.path()).unwrap();
            assert!(store.all_private().unwrap().is_empty());
            store.put_private("stable/1", &[x, y]).unwrap();
            store.put_private("stable/2", &[x]).unwrap();
            store.put_private("stable/2", &[x]).unwrap();
        }
        let (store, _, _) = Store::open(dir.path()).unwrap();
        let mut kept = store.all_private().unwrap();
        kept.sort();
        let mut expected = vec![
            (x, "stable/1".to_string()),
            (y, "stable/1".to_string()),
            (x, "stable/2".to_string()),
        ];
        expected.sort();
        assert_eq!(kept, expected);
    }

    #[test]
    fn put_get_remove_and_reconcile() {
        let dir = tempfile::tempdir().unwrap();
        let a = b"chunk a".to_vec();
        let b = b"chunk b".to_vec();
        let (ia, ib) = (ChunkId::of(&a), ChunkId::of(&b));
        {
            let (store, chunks, _) = Store::open(dir.path()).unwrap();
            assert!(chunks.is_empty());
            store.put(&ia, &a).unwrap();
            store.put(&ib, &b).unwrap();
            assert_eq!(store.get(&ia).unwrap().unwrap(), a);
            store.remove(&ib).unwrap();
            assert!(store.get(&ib).unwrap().is_none());
            store.put_metadata("timestamp.json", b"{}").unwrap();
        }
        // A crash mid-write leaves a temporary file; one after the rename an unindexed file;
        // a damaged orphan does not match its name; an indexed file may vanish.
        fs::write(dir.path().join("tmp").join("half"), b"half").unwrap();
        let orphan = b"orphan".to_vec();
        let io = ChunkId::of(&orphan);
        let path = Store::chunk_file(dir.path(), &io);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, &orphan).unwrap();
        let bad = ChunkId::of(b"bad");
        let bad_path = Store::chunk_file(dir.path(), &bad);
        fs::create_dir_all(bad_path.parent().unwrap()).unwrap();
        fs::write(&bad_path, b"not bad").unwrap();

        let (store, mut chunks, report) = Store::open(dir.path()).unwrap();
        chunks.sort();
        let mut want = vec![(ia, 7), (io, 6)];
        want.sort();
        assert_eq!(chunks, want);
        assert_eq!(report.adopted, 1);
        assert_eq!(
            report.deleted, 2,
            "the temporary file and the damaged orphan"
        );
        assert!(!bad_path.exists());
        assert_eq!(
            store.all_metadata().unwrap(),
            [("timestamp.json".to_string(), b"{}".to_vec())]
        );

        fs::remove_file(Store::chunk_file(dir.path(), &ia)).unwrap();
        drop(store);
        let (_, chunks, report) = Store::open(dir.path()).unwrap();
        assert_eq!(chunks, [(io, 6)]);
        assert_eq!(report.dropped, 1);
    }
}
