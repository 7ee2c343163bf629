//! `ota-tuf-client` (the real binary) against python-tuf repositories served over HTTP by the
//! test, in the style of the TUF conformance suite: `init`, `refresh`, `download`, and the
//! refusals (a substituted target, a rolled-back timestamp, expired metadata, an endless
//! body, an unsigned initial root), each asserting the exit code, the reason, and what the
//! client kept on disk.
//!
//! Two repositories: the committed interop fixture (`core/testdata/interop/python-tuf-repo`,
//! written by python-tuf, with our root extension, a root rotation and a delegation), which
//! needs no Python; and a plain TUF repository written at test time by python-tuf
//! (`make_tuf_repo.py`, with the interpreter in `OTA_PYTHON`; `scripts/test` sets it and
//! `OTA_REQUIRE_INTEROP`, so in CI those tests cannot silently skip).

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

/// The interop fixture written by python-tuf.
pub fn interop_repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/testdata/interop/python-tuf-repo")
}

/// `artifacts/hello.img` of the interop fixture, as served (hash-prefixed).
pub const HELLO_SERVED: &str =
    "targets/artifacts/28221b77d579c8d9b4f8f4fec6bc0bd47dc6bb4ca036680eaa1534750160f759.hello.img";

/// A static HTTP/1.1 server for a directory, on 127.0.0.1 port 0. It logs every request path,
/// can be told to answer one path with an endless body, and stops on drop.
pub struct RepoServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<String>>>,
    endless: Arc<Mutex<BTreeSet<String>>>,
    accept: Option<JoinHandle<()>>,
}

impl RepoServer {
    pub fn serve(root: &Path) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let endless = Arc::new(Mutex::new(BTreeSet::new()));
        let root = root.to_path_buf();
        let accept = {
            let (stop, log, endless) = (stop.clone(), log.clone(), endless.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (root, stop, log, endless) =
                        (root.clone(), stop.clone(), log.clone(), endless.clone());
                    std::thread::spawn(move || {
                        let _ = handle(stream, &root, &stop, &log, &endless);
                    });
                }
            })
        };
        Self {
            addr,
            stop,
            log,
            endless,
            accept: Some(accept),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    /// Request paths (decoded) received so far.
    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub fn clear_log(&self) {
        self.log.lock().unwrap().clear();
    }

    /// Answer `path` (e.g. `metadata/timestamp.json`) with a body that never ends.
    pub fn send_endless(&self, path: &str) {
        self.endless.lock().unwrap().insert(format!("/{path}"));
    }
}

impl Drop for RepoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// Serve one request, then close.
fn handle(
    stream: TcpStream,
    root: &Path,
    stop: &AtomicBool,
    log: &Mutex<Vec<String>>,
    endless: &Mutex<BTreeSet<String>>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?.take(16 * 1024));
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" {
            break;
        }
    }
    let mut stream = stream;
    let raw = request_line.split(' ').nth(1).unwrap_or("/");
    let path = percent_decode(raw);
    log.lock().unwrap().push(path.clone());
    if endless.lock().unwrap().contains(&path) {
        stream.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")?;
        let block = vec![b'{'; 64 * 1024];
        // Stops when the client hangs up (or, as a backstop, after 1 GiB).
        for _ in 0..16 * 1024 {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            stream.write_all(&block)?;
        }
        return Ok(());
    }
    let file = path
        .strip_prefix('/')
        .filter(|p| !p.split('/').any(|s| s == ".." || s.is_empty()))
        .map(|p| root.join(p));
    match file.and_then(|f| std::fs::read(f).ok()) {
        Some(body) => {
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            stream.write_all(&body)?;
        }
        None => {
            stream.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )?;
        }
    }
    stream.flush()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        if bytes[i] == b'%'
            && let Some(Ok(b)) = hex.map(|h| u8::from_str_radix(h, 16))
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The outcome of one run of a binary.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(binary: &str, args: &[&str]) -> Run {
    let output = Command::new(binary).args(args).output().unwrap();
    Run {
        code: output.status.code().expect("exited, not killed"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A client under test: its metadata and target directories.
struct Client {
    _dir: tempfile::TempDir,
    metadata: PathBuf,
    targets: PathBuf,
}

impl Client {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (metadata, targets) = (dir.path().join("metadata"), dir.path().join("targets"));
        std::fs::create_dir(&metadata).unwrap();
        std::fs::create_dir(&targets).unwrap();
        Self {
            _dir: dir,
            metadata,
            targets,
        }
    }

    fn run(&self, args: &[&str]) -> Run {
        let mut all = vec!["--metadata-dir", self.metadata.to_str().unwrap()];
        all.extend_from_slice(args);
        run(env!("CARGO_BIN_EXE_ota-tuf-client"), &all)
    }

    fn init(&self, root: &Path) -> Run {
        self.run(&["init", root.to_str().unwrap()])
    }

    fn refresh(&self, server: &RepoServer) -> Run {
        self.run(&["--metadata-url", &server.url("metadata"), "refresh"])
    }

    fn download(&self, server: &RepoServer, target: &str) -> Run {
        let (metadata, targets) = (server.url("metadata"), server.url("targets"));
        self.run(&[
            "--metadata-url",
            &metadata,
            "--target-name",
            target,
            "--target-base-url",
            &targets,
            "--target-dir",
            self.targets.to_str().unwrap(),
            "download",
        ])
    }

    /// The version inside a stored metadata file.
    fn version(&self, role: &str) -> u64 {
        let bytes = std::fs::read(self.metadata.join(format!("{role}.json"))).unwrap();
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        value["signed"]["version"].as_u64().unwrap()
    }

    fn stored(&self) -> BTreeSet<String> {
        names(&self.metadata)
    }

    fn downloaded(&self) -> BTreeSet<String> {
        names(&self.targets)
    }
}

fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_string()).collect()
}

#[track_caller]
fn assert_ok(run: &Run) {
    assert_eq!(run.code, 0, "expected success:\n{run:?}");
}

#[track_caller]
fn assert_refused(run: &Run, reason: &str) {
    assert_eq!(run.code, 1, "expected exit 1:\n{run:?}");
    assert!(
        run.stderr.contains(reason),
        "expected the reason {reason:?}:\n{run:?}"
    );
}

/// The interpreter with python-tuf, or `None` to skip (unless CI requires it).
pub fn python() -> Option<String> {
    match std::env::var("OTA_PYTHON") {
        Ok(p) => Some(p),
        Err(_) if std::env::var_os("OTA_REQUIRE_INTEROP").is_some() => {
            panic!("OTA_REQUIRE_INTEROP is set but OTA_PYTHON is not")
        }
        Err(_) => {
            eprintln!("skipping: OTA_PYTHON is not set (scripts/test sets it)");
            None
        }
    }
}

/// Run `make_tuf_repo.py` with `args`.
pub fn make_repo(python: &str, args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/device/make_tuf_repo.py");
    let output = Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "make_tuf_repo.py {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A plain TUF repository written by python-tuf in a temporary directory.
fn plain_repo(python: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    make_repo(python, &["new", dir.path().to_str().unwrap()]);
    dir
}

fn set_timestamp(python: &str, repo: &Path, version: u64, expires: &str) {
    let version = version.to_string();
    make_repo(
        python,
        &["timestamp", repo.to_str().unwrap(), &version, expires],
    );
}

#[test]
fn interop_repository_init_refresh_download() {
    let repo = interop_repo();
    let server = RepoServer::serve(&repo);
    let client = Client::new();

    let init = client.init(&repo.join("metadata/1.root.json"));
    assert_ok(&init);
    assert!(server.requests().is_empty(), "init makes no request");
    assert_eq!(client.stored(), set(&["root.json"]));

    let refresh = client.refresh(&server);
    assert_ok(&refresh);
    assert!(
        refresh
            .stdout
            .contains("root v2, timestamp v1, snapshot v1, targets v1"),
        "{refresh:?}"
    );
    assert_eq!(
        server.requests(),
        [
            "/metadata/2.root.json",
            "/metadata/3.root.json",
            "/metadata/timestamp.json",
            "/metadata/1.snapshot.json",
            "/metadata/1.targets.json",
        ],
        "the specification's order, with consistent-snapshot names"
    );
    assert_eq!(
        client.stored(),
        set(&[
            "root.json",
            "timestamp.json",
            "snapshot.json",
            "targets.json"
        ])
    );
    assert_eq!(
        std::fs::read(client.metadata.join("root.json")).unwrap(),
        std::fs::read(repo.join("metadata/2.root.json")).unwrap(),
        "the rotated root is the trusted one now"
    );

    // Nothing new: the stored files are re-verified and reused, only the next root and the
    // timestamp are asked for.
    server.clear_log();
    assert_ok(&client.refresh(&server));
    assert_eq!(
        server.requests(),
        ["/metadata/3.root.json", "/metadata/timestamp.json"]
    );

    // A target listed by the delegated role `release`.
    server.clear_log();
    let download = client.download(&server, "artifacts/hello.img");
    assert_ok(&download);
    assert!(
        download.stdout.contains("listed by release"),
        "{download:?}"
    );
    assert_eq!(client.downloaded(), set(&["artifacts%2Fhello.img"]));
    assert_eq!(
        std::fs::read(client.targets.join("artifacts%2Fhello.img")).unwrap(),
        std::fs::read(repo.join(HELLO_SERVED)).unwrap()
    );
    assert!(client.stored().contains("release.json"));
    assert!(server.requests().contains(&format!("/{HELLO_SERVED}")));

    // Downloaded again: the verified copy is kept, the target is not fetched twice.
    server.clear_log();
    let again = client.download(&server, "artifacts/hello.img");
    assert_ok(&again);
    assert!(again.stdout.contains("already present and verified"));
    assert!(
        !server.requests().iter().any(|r| r.starts_with("/targets/")),
        "{:?}",
        server.requests()
    );

    // A target of the top-level targets role.
    let manifest = client.download(&server, "releases/stable/1.json");
    assert_ok(&manifest);
    assert_eq!(
        client.downloaded(),
        set(&["artifacts%2Fhello.img", "releases%2Fstable%2F1.json"])
    );

    // A target nobody lists.
    let missing = client.download(&server, "artifacts/none.img");
    assert_refused(
        &missing,
        "target \"artifacts/none.img\" not found in any trusted role",
    );
}

#[test]
fn plain_tuf_repository_with_delegation_and_quoted_paths() {
    let Some(python) = python() else { return };
    let repo = plain_repo(&python);
    let server = RepoServer::serve(repo.path());
    let client = Client::new();
    assert_ok(&client.init(&repo.path().join("metadata/1.root.json")));
    let refresh = client.refresh(&server);
    assert_ok(&refresh);
    assert_eq!(client.version("root"), 2, "rotation v1 -> v2 followed");

    for (target, local) in [
        ("file1.txt", "file1.txt"),
        ("a dir/file 2.txt", "a%20dir%2Ffile%202.txt"),
        ("delegated/file3.txt", "delegated%2Ffile3.txt"),
    ] {
        let download = client.download(&server, target);
        assert_ok(&download);
        assert!(
            client.downloaded().contains(local),
            "{target}: {download:?}"
        );
    }
    assert_eq!(
        std::fs::read(client.targets.join("file1.txt")).unwrap(),
        b"conformance target one\n"
    );
    assert_eq!(
        std::fs::read(client.targets.join("delegated%2Ffile3.txt")).unwrap(),
        b"listed by the delegated role\n"
    );
    assert!(client.stored().contains("delegated.json"));
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.starts_with("/targets/a dir/") && r.ends_with(".file 2.txt")),
        "quoted path requested: {:?}",
        server.requests()
    );
}

#[test]
fn repository_without_consistent_snapshots() {
    let Some(python) = python() else { return };
    let repo = tempfile::tempdir().unwrap();
    let dir = repo.path().to_str().unwrap();
    make_repo(&python, &["new", dir, "--no-consistent-snapshot"]);
    let server = RepoServer::serve(repo.path());
    let client = Client::new();
    assert_ok(&client.init(&repo.path().join("metadata/1.root.json")));
    let download = client.download(&server, "delegated/file3.txt");
    assert_ok(&download);
    assert_eq!(
        server.requests(),
        [
            "/metadata/2.root.json",
            "/metadata/3.root.json",
            "/metadata/timestamp.json",
            "/metadata/snapshot.json",
            "/metadata/targets.json",
            "/metadata/delegated.json",
            "/targets/delegated/file3.txt",
        ],
        "non-versioned metadata names, target under its own name"
    );
    assert_eq!(
        std::fs::read(client.targets.join("delegated%2Ffile3.txt")).unwrap(),
        b"listed by the delegated role\n"
    );
}

#[test]
fn substituted_target_is_refused_and_nothing_is_written() {
    let repo = tempfile::tempdir().unwrap();
    copy_dir(&interop_repo(), repo.path());
    let served = repo.path().join(HELLO_SERVED);
    let mut bytes = std::fs::read(&served).unwrap();
    bytes[100] ^= 0x01;
    std::fs::write(&served, &bytes).unwrap();

    let server = RepoServer::serve(repo.path());
    let client = Client::new();
    assert_ok(&client.init(&repo.path().join("metadata/1.root.json")));
    let download = client.download(&server, "artifacts/hello.img");
    assert_refused(&download, "artifacts/hello.img: sha256 hash mismatch");
    assert!(client.downloaded().is_empty(), "{:?}", client.downloaded());

    // Longer than signed: cut at the signed length, refused, nothing written.
    bytes.push(0);
    std::fs::write(&served, &bytes).unwrap();
    let download = client.download(&server, "artifacts/hello.img");
    assert_refused(&download, "over the cap of 6144 bytes");
    assert!(client.downloaded().is_empty());
}

#[test]
fn rolled_back_timestamp_is_refused_and_the_trusted_one_kept() {
    let Some(python) = python() else { return };
    let repo = plain_repo(&python);
    let server = RepoServer::serve(repo.path());
    let client = Client::new();
    assert_ok(&client.init(&repo.path().join("metadata/1.root.json")));
    assert_ok(&client.refresh(&server));
    assert_eq!(client.version("timestamp"), 1);

    set_timestamp(&python, repo.path(), 2, "2099-01-01T00:00:00Z");
    assert_ok(&client.refresh(&server));
    assert_eq!(client.version("timestamp"), 2);
    let trusted = std::fs::read(client.metadata.join("timestamp.json")).unwrap();

    // Same version, other content: the trusted copy is kept, not replaced.
    set_timestamp(&python, repo.path(), 2, "2098-01-01T00:00:00Z");
    assert_ok(&client.refresh(&server));
    assert_eq!(
        std::fs::read(client.metadata.join("timestamp.json")).unwrap(),
        trusted
    );

    set_timestamp(&python, repo.path(), 1, "2099-01-01T00:00:00Z");
    let refresh = client.refresh(&server);
    assert_refused(&refresh, "timestamp: rollback from trusted version 2 to 1");
    assert_eq!(
        std::fs::read(client.metadata.join("timestamp.json")).unwrap(),
        trusted
    );
    // A download needs a refresh first, so it is refused too.
    let download = client.download(&server, "file1.txt");
    assert_refused(&download, "rollback from trusted version 2 to 1");
    assert!(client.downloaded().is_empty());
}

#[test]
fn expired_timestamp_is_refused_and_not_stored() {
    let Some(python) = python() else { return };
    let repo = plain_repo(&python);
    let server = RepoServer::serve(repo.path());

    // A client that trusts timestamp v1 is offered an expired v2.
    let client = Client::new();
    assert_ok(&client.init(&repo.path().join("metadata/1.root.json")));
    assert_ok(&client.refresh(&server));
    set_timestamp(&python, repo.path(), 2, "2000-01-01T00:00:00Z");
    let refresh = client.refresh(&server);
    assert_refused(&refresh, "timestamp: expired at 2000-01-01T00:00:00Z");
    assert_eq!(
        client.version("timestamp"),
        1,
        "the expired one is not stored"
    );

    // A new client is offered only the expired one.
    let fresh = Client::new();
    assert_ok(&fresh.init(&repo.path().join("metadata/1.root.json")));
    let refresh = fresh.refresh(&server);
    assert_refused(&refresh, "timestamp: expired at 2000-01-01T00:00:00Z");
    assert_eq!(fresh.stored(), set(&["root.json"]));
    let download = fresh.download(&server, "file1.txt");
    assert_refused(&download, "expired");
    assert!(fresh.downloaded().is_empty());
}

#[test]
fn endless_bodies_are_cut_at_the_cap() {
    let repo = interop_repo();
    let server = RepoServer::serve(&repo);
    let client = Client::new();
    assert_ok(&client.init(&repo.join("metadata/1.root.json")));

    server.send_endless("metadata/timestamp.json");
    let refresh = client.refresh(&server);
    assert_refused(&refresh, "over the cap of 16384 bytes");
    assert!(!client.stored().contains("timestamp.json"));

    // A target body that does not stop at its signed length.
    let server = RepoServer::serve(&repo);
    server.send_endless(HELLO_SERVED);
    let download = client.download(&server, "artifacts/hello.img");
    assert_refused(&download, "over the cap of 6144 bytes");
    assert!(client.downloaded().is_empty());
}

#[test]
fn unsigned_initial_root_is_refused_before_any_request() {
    let repo = interop_repo();
    let server = RepoServer::serve(&repo);
    let client = Client::new();
    let mut root: Value =
        serde_json::from_slice(&std::fs::read(repo.join("metadata/1.root.json")).unwrap()).unwrap();
    root["signed"]["version"] = Value::from(7);
    let bad = client.metadata.parent().unwrap().join("bad-root.json");
    std::fs::write(&bad, serde_json::to_vec(&root).unwrap()).unwrap();

    let init = client.init(&bad);
    assert_refused(
        &init,
        "root: 0 valid signature(s) from distinct keys, 2 needed",
    );
    assert!(client.stored().is_empty());

    // Planted directly in the metadata directory: refresh refuses it without a request.
    std::fs::copy(&bad, client.metadata.join("root.json")).unwrap();
    let refresh = client.refresh(&server);
    assert_refused(
        &refresh,
        "0 valid signature(s) from distinct keys, 2 needed",
    );
    assert!(server.requests().is_empty(), "{:?}", server.requests());
}

#[test]
fn usage_errors_exit_2() {
    let client = Client::new();
    let refresh = client.run(&["refresh"]);
    assert_eq!(refresh.code, 2, "{refresh:?}");
    assert!(refresh.stderr.contains("--metadata-url is required"));
    let unknown = client.run(&["frobnicate"]);
    assert_eq!(unknown.code, 2, "{unknown:?}");
    let refresh = client.run(&["--metadata-url", "http://127.0.0.1:9/metadata", "refresh"]);
    assert_refused(&refresh, "no trusted root; run init first");
}

/// Copy a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
