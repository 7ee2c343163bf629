//! A full disk under the peer's store: it keeps serving what it holds, refuses to store (and
//! says so, in its log and `store_errors`), and stores again once space returns.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ota_core::digest::ChunkId;

use crate::support::{Peer, Upstream, chunks, fetch_all, runtime};

/// A size-capped tmpfs mounted for the test, unmounted on drop; `None` where this process may
/// not mount (not root).
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(path: &Path, bytes: u64) -> Option<Self> {
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}")])
            .arg("tmpfs")
            .arg(path)
            .stderr(Stdio::null())
            .status()
            .ok()?;
        status.success().then(|| Self(path.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros to `path` until the file system says it is full.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 64 * 1024];
    loop {
        if file.write_all(&block).is_err() {
            break;
        }
    }
    let _ = file.sync_all();
}

#[test]
fn full_disk_peer_serves_what_it_holds_refuses_to_store_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(&dir.path().join("disk"), 16 << 20) else {
        eprintln!(
            "full_disk_peer: this machine does not let the test mount a tmpfs (needs root); \
             the full-disk case was NOT exercised"
        );
        return;
    };
    let rt = runtime();
    let blobs = chunks(12, 12, 256 * 1024);
    let ids: Vec<ChunkId> = blobs.iter().map(|(id, _)| *id).collect();
    let (held, later) = ids.split_at(4);
    let _guard = rt.enter();
    let up = Upstream::start(12, &blobs);
    let log_path = dir.path().join("peer.log");
    let peer = Peer::start_with(
        &disk.0.join("peer"),
        &up,
        "127.0.0.1:0",
        &["--no-prefetch"],
        Some(std::fs::File::create(&log_path).unwrap()),
    );
    rt.block_on(async {
        let client = peer.client().await;
        let (got, missing) = fetch_all(&client, held).await;
        assert!(missing.is_empty());
        assert_eq!(got.len(), held.len());
    });
    assert_eq!(peer.stat("store_errors"), 0);
    let stored = peer.stat("stored_bytes");

    // The disk fills.
    let filler = disk.0.join("filler");
    fill(&filler);
    rt.block_on(async {
        let client = peer.client().await;
        // What it holds is served.
        let (got, missing) = fetch_all(&client, held).await;
        assert!(
            missing.is_empty(),
            "the chunks held are served on a full disk"
        );
        assert_eq!(got.len(), held.len());
        // New chunks cannot be stored: refused, counted, logged.
        let (_, missing) = fetch_all(&client, &later[..4]).await;
        assert!(
            !missing.is_empty(),
            "a chunk that cannot be stored is not served"
        );
    });
    assert!(peer.stat("store_errors") >= 1);
    assert_eq!(peer.stat("stored_bytes"), stored, "nothing new is stored");
    assert_eq!(peer.stat("verification_failures"), 0);
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(
        text.matches("the chunk store refuses writes").count(),
        1,
        "said once, not per chunk: {text}"
    );

    // Space returns: the next requests are fetched, stored and served.
    std::fs::remove_file(&filler).unwrap();
    rt.block_on(async {
        let client = peer.client().await;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (got, missing) = fetch_all(&client, later).await;
            if missing.is_empty() {
                for (id, bytes) in &blobs {
                    if let Some(g) = got.get(id) {
                        assert_eq!(g, bytes);
                    }
                }
                break;
            }
            assert!(Instant::now() < deadline, "the peer never stored again");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    assert_eq!(
        peer.stat("stored_bytes"),
        stored + 8 * 256 * 1024,
        "the new chunks are stored"
    );
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        text.contains("the chunk store takes writes again"),
        "{text}"
    );
    drop(peer);
}
