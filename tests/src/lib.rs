//! The harness of the cross-program tests (`tests/tests/fleet/`): it finds the workspace's
//! programs, runs an origin through its whole ceremony with fixed test authorities, and keeps
//! every process it starts under a guard that kills it when the test ends.
//!
//! The authorities' keys here are test keys held in memory: what `ota-sign` does at the
//! authorities' stations (one signature over the canonical `signed` of a signing request) is
//! done in-process, so that tests about devices and caches need no signing station.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ota_core::time::UnixTime;
use ota_core::tuf::metadata::{
    Common, Envelope, ReleaseAuthority, RoleKeys, Root, Signature, sign_role,
};
use ota_core::tuf::{InMemoryKey, Key};

pub mod fake_clock;
pub mod fake_peer;
pub mod netns;
pub mod softhsm;
pub mod udp_relay;

/// A program of the workspace, as built next to the running test (`target/<profile>/NAME`).
///
/// The test binary lives in `target/<profile>/deps/`; the programs one level up. Build them
/// first: `cargo build --workspace --bins` (`cargo test --workspace` does). `OTA_BIN_DIR`
/// overrides the directory.
///
/// # Panics
/// When the program is not there, naming the command that builds it.
pub fn bin(name: &str) -> PathBuf {
    let dir = match std::env::var_os("OTA_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().expect("the test binary's path");
            let mut dir = exe.parent().expect("a directory").to_path_buf();
            if dir.file_name().is_some_and(|n| n == "deps") {
                dir.pop();
            }
            dir
        }
    };
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the programs first (cargo build --workspace --bins)",
        path.display()
    );
    path
}

/// The current time as the formats count it.
pub fn now() -> UnixTime {
    UnixTime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_secs() as i64,
    )
}

/// `len` deterministic pseudo-random bytes named by `seed` (incompressible, so that chunking
/// behaves as on a real image).
pub fn test_image(seed: &str, len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    blake3::Hasher::new()
        .update(seed.as_bytes())
        .finalize_xof()
        .fill(&mut bytes);
    bytes
}

/// A child process killed (and reaped) when the guard is dropped, so that a failing test
/// leaves nothing running.
#[derive(Debug)]
pub struct Proc {
    child: Option<Child>,
    name: String,
}

impl Proc {
    /// Starts `command` with stdin closed; stdout and stderr as the command says.
    pub fn spawn(name: &str, command: &mut Command) -> Self {
        let child = command
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self {
            child: Some(child),
            name: name.to_string(),
        }
    }

    /// The process id, while it runs.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The child, for its pipes.
    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("the process was not killed")
    }

    /// Whether it has exited (and with what), without waiting.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("poll the child"))
    }

    /// Kills the process with SIGKILL (as a power cut would stop it) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the process to exit on its own, at most `limit`; kills it and panics after.
    pub fn wait_for(&mut self, limit: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.try_wait() {
                self.child = None;
                return status;
            }
            if start.elapsed() > limit {
                self.kill();
                panic!("{} did not exit within {limit:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs a program to completion and returns its output.
pub fn run(program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
}

/// Runs a program that must succeed; returns its standard output.
///
/// # Panics
/// When it fails, with its standard error.
pub fn run_ok(program: &Path, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{} {args:?} failed ({}): {}",
        program.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// The offline authorities of the test ceremony: one root key, the manifest (targets) key
/// and the release authority's key.
#[derive(Debug)]
pub struct Authorities {
    /// Signs root and director root.
    pub root: InMemoryKey,
    /// The manifest authority (targets), ECDSA P-256 as a PIV token holds it.
    pub targets: InMemoryKey,
    /// The release authority.
    pub release: InMemoryKey,
}

impl Authorities {
    /// Fixed test keys, the same in every test.
    pub fn fixed() -> Self {
        Self {
            root: InMemoryKey::ed25519_from_seed([1; 32]),
            targets: InMemoryKey::p256_from_scalar([2; 32]).expect("a valid scalar"),
            release: InMemoryKey::ed25519_from_seed([3; 32]),
        }
    }
}

/// What `ota-sign sign` does to a signing request: one signature over the canonical `signed`,
/// written to `out`.
pub fn cosign(request: &Path, role: &str, key: &InMemoryKey, out: &Path) {
    let bytes = std::fs::read(request).expect("read the signing request");
    let mut envelope = Envelope::parse(role, "request", &bytes, 1 << 24).expect("a request");
    let sig = key.sign(envelope.canonical_signed());
    envelope.add_signature(Signature {
        keyid: key.public().key_id(),
        sig: hex::encode(sig),
    });
    std::fs::write(out, envelope.to_bytes()).expect("write the signed metadata");
}

/// An origin data directory taken through the ceremony: online keys made by `ota-origin
/// keys`, root and director root signed by the test authorities, `ota-origin init` done.
#[derive(Debug)]
pub struct OriginFixture {
    /// The data directory.
    pub data: PathBuf,
    /// The image repository's root (give it to devices).
    pub root: PathBuf,
    /// The director's root (give it to devices).
    pub director_root: PathBuf,
    /// The test authorities.
    pub authorities: Authorities,
    /// The model releases are built for and devices are enrolled as.
    pub model: String,
}

const MODEL: &str = "enigm-one";

/// The admin API token of origins the fixture serves (`Authorization: Bearer …`).
pub const ADMIN_TOKEN: &str = "fleet-test-admin-token";

impl OriginFixture {
    /// Makes `dir/origin` and the two roots in `dir`.
    pub fn new(dir: &Path) -> Self {
        let data = dir.join("origin");
        let origin = bin("ota-origin");
        let online: serde_json::Value =
            serde_json::from_str(&run_ok(&origin, &["keys", "--data", path_str(&data)]))
                .expect("ota-origin keys prints JSON");
        let authorities = Authorities::fixed();
        let (root, director_root) = make_roots(&authorities, &online, dir);
        run_ok(
            &origin,
            &[
                "init",
                "--data",
                path_str(&data),
                "--root",
                path_str(&root),
                "--director-root",
                path_str(&director_root),
            ],
        );
        Self {
            data,
            root,
            director_root,
            authorities,
            model: MODEL.to_string(),
        }
    }

    /// Runs `ota-origin ARGS --data DATA …`-style commands: `args` must already carry
    /// `--data` where the command wants it (see [`Self::data_str`]).
    pub fn origin(&self, args: &[&str]) -> String {
        run_ok(&bin("ota-origin"), args)
    }

    /// The data directory as a string, for command lines.
    pub fn data_str(&self) -> &str {
        path_str(&self.data)
    }

    /// Sets one field of `origin.json` (e.g. `timestamp_expiry_secs`).
    pub fn set_config(&self, key: &str, value: serde_json::Value) {
        let path = self.data.join("origin.json");
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read origin.json"))
                .expect("origin.json is JSON");
        config[key] = value;
        std::fs::write(&path, serde_json::to_vec_pretty(&config).expect("JSON"))
            .expect("write origin.json");
    }

    /// Publishes a release: `release create` with `artifacts` (slot name, file) and `extra`
    /// create options, the authorities co-sign both requests, `register`, `validate`. The
    /// release is validated, not yet offered: [`Self::promote`] it.
    pub fn release(&self, channel: &str, number: u64, artifacts: &[(&str, &Path)], extra: &[&str]) {
        let number_s = number.to_string();
        let version = format!("2026.11.{number}");
        let mut args = vec![
            "release",
            "create",
            "--data",
            self.data_str(),
            "--channel",
            channel,
            "--release",
            &number_s,
            "--version",
            &version,
            "--model",
            &self.model,
        ];
        let specs: Vec<String> = artifacts
            .iter()
            .map(|(name, path)| format!("{name}={}", path.display()))
            .collect();
        for spec in &specs {
            args.extend(["--artifact", spec]);
        }
        args.extend(extra);
        self.origin(&args);

        let requests = self.data.join("requests").join(channel).join(&number_s);
        let signed_release = requests.join("release.signed.json");
        let signed_targets = requests.join("targets.signed.json");
        cosign(
            &requests.join("release.request.json"),
            "release",
            &self.authorities.release,
            &signed_release,
        );
        cosign(
            &requests.join("targets.request.json"),
            "targets",
            &self.authorities.targets,
            &signed_targets,
        );
        let id = [
            "--data",
            self.data_str(),
            "--channel",
            channel,
            "--release",
            &number_s,
        ];
        self.origin(
            &[
                &["release", "register"][..],
                &id,
                &[
                    "--signed-release",
                    path_str(&signed_release),
                    "--signed-targets",
                    path_str(&signed_targets),
                ],
            ]
            .concat(),
        );
        self.origin(&[&["release", "validate"][..], &id].concat());
    }

    /// `release promote` with `how` (`["--stable"]`, `["--percent", "50"]`, `["--security"]`).
    pub fn promote(&self, channel: &str, number: u64, how: &[&str]) {
        let number_s = number.to_string();
        self.origin(
            &[
                &[
                    "release",
                    "promote",
                    "--data",
                    self.data_str(),
                    "--channel",
                    channel,
                    "--release",
                    &number_s,
                ][..],
                how,
            ]
            .concat(),
        );
    }

    /// Enrolls a device by its public key (64 hex characters) on `channel` as the fixture's
    /// model; returns its handle (hex).
    pub fn enroll(&self, public_hex: &str, channel: &str) -> String {
        self.origin(&[
            "device",
            "enroll",
            "--data",
            self.data_str(),
            "--public-key",
            public_hex,
            "--channel",
            channel,
            "--model",
            &self.model,
        ])
        .trim()
        .to_string()
    }

    /// Starts `ota-origin serve` on loopback ports the OS picks and waits until it listens.
    pub fn serve(&self) -> Served {
        self.serve_with(&[])
    }

    /// [`Self::serve`] with extra options (e.g. `["--admin", "127.0.0.1:0"]`).
    pub fn serve_with(&self, extra: &[&str]) -> Served {
        self.serve_configured(extra, |_| {})
    }

    /// [`Self::serve_with`], the command first given to `configure` (e.g. a
    /// [`fake_clock::FakeClock`], or its standard error sent to a file).
    pub fn serve_configured(&self, extra: &[&str], configure: impl FnOnce(&mut Command)) -> Served {
        let ready = self.data.join("ready.json");
        let _ = std::fs::remove_file(&ready);
        let mut command = Command::new(bin("ota-origin"));
        command
            .args(["serve", "--data", self.data_str()])
            .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .arg("--ready-file")
            .arg(&ready)
            .args(extra)
            .env("OTA_ADMIN_TOKEN", ADMIN_TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        configure(&mut command);
        let mut proc = Proc::spawn("ota-origin serve", &mut command);
        let ready = wait_ready(&mut proc, &ready);
        Served {
            quic: ready["quic"]
                .as_str()
                .expect("quic address")
                .parse()
                .expect("a socket address"),
            pin: ready["pin"].as_str().expect("pin").to_string(),
            http: ready["http"].as_str().map(|addr| format!("http://{addr}")),
            ready,
            proc,
        }
    }
}

/// Waits for a server to write its ready file (JSON), at most 20 s.
///
/// # Panics
/// When the process exits first (with its standard error, if piped) or the time runs out.
pub fn wait_ready(proc: &mut Proc, ready: &Path) -> serde_json::Value {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if let Some(status) = proc.try_wait() {
            let mut err = String::new();
            if let Some(mut stderr) = proc.child().stderr.take() {
                use std::io::Read as _;
                let _ = stderr.read_to_string(&mut err);
            }
            panic!("{} exited before it was ready: {status}\n{err}", proc.name);
        }
        if let Ok(text) = std::fs::read_to_string(ready)
            && let Ok(value) = serde_json::from_str(&text)
        {
            return value;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    proc.kill();
    panic!("{} did not become ready", proc.name);
}

/// A running `ota-origin serve`.
#[derive(Debug)]
pub struct Served {
    /// QUIC address.
    pub quic: SocketAddr,
    /// Certificate pin, as `--origin-pin` takes it.
    pub pin: String,
    /// `http://ADDR` of the TUF mirror.
    pub http: Option<String>,
    /// The whole ready file (admin address and the like).
    pub ready: serde_json::Value,
    /// The process.
    pub proc: Proc,
}

impl Served {
    /// Kills the server (SIGKILL).
    pub fn kill(&mut self) {
        self.proc.kill();
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

fn role(keys: &[&Key], threshold: u64) -> RoleKeys {
    RoleKeys {
        keyids: keys.iter().map(|k| k.key_id()).collect(),
        threshold,
        extra: BTreeMap::new(),
    }
}

fn key_of(json: &serde_json::Value) -> Key {
    serde_json::from_value(json.clone()).expect("a public key as ota-origin keys prints it")
}

/// Root and director root signed by `a.root`, listing the origin's online keys (`online`, as
/// `ota-origin keys` prints them), written to `dir/root.json` and `dir/director-root.json`.
pub fn make_roots(a: &Authorities, online: &serde_json::Value, dir: &Path) -> (PathBuf, PathBuf) {
    let expires = now().plus_secs(365 * 86_400);
    let (snapshot, timestamp, director) = (
        key_of(&online["snapshot"]),
        key_of(&online["timestamp"]),
        key_of(&online["director"]),
    );
    let root_pub = a.root.public();
    let targets_pub = a.targets.public();
    let release_pub = a.release.public();
    let keys = |list: &[&Key]| list.iter().map(|k| (k.key_id(), (*k).clone())).collect();
    let root = Root {
        common: Common::new("root", 1, expires),
        consistent_snapshot: true,
        keys: keys(&[&root_pub, &targets_pub, &snapshot, &timestamp]),
        roles: BTreeMap::from([
            ("root".into(), role(&[&root_pub], 1)),
            ("targets".into(), role(&[&targets_pub], 1)),
            ("snapshot".into(), role(&[&snapshot], 1)),
            ("timestamp".into(), role(&[&timestamp], 1)),
        ]),
        release_authority: Some(ReleaseAuthority {
            keys: keys(&[&release_pub]),
            keyids: vec![release_pub.key_id()],
            threshold: 1,
        }),
        extra: BTreeMap::new(),
    };
    let director_root = Root {
        common: Common::new("root", 1, expires),
        consistent_snapshot: true,
        keys: keys(&[&root_pub, &director]),
        roles: BTreeMap::from([
            ("root".into(), role(&[&root_pub], 1)),
            ("targets".into(), role(&[&director], 1)),
            ("snapshot".into(), role(&[&director], 1)),
            ("timestamp".into(), role(&[&director], 1)),
        ]),
        release_authority: None,
        extra: BTreeMap::new(),
    };
    let root_path = dir.join("root.json");
    let director_path = dir.join("director-root.json");
    std::fs::write(&root_path, sign_role(&root, &[&a.root])).expect("write root.json");
    std::fs::write(&director_path, sign_role(&director_root, &[&a.root]))
        .expect("write director-root.json");
    (root_path, director_path)
}

/// A plain HTTP/1.0 `GET` of `path` from `base` (`http://ADDR`) with optional extra header
/// lines; returns the status code and the body. For loopback servers in tests and the demo.
///
/// # Errors
/// When the connection or the response fails.
pub fn http_get(base: &str, path: &str, headers: &[&str]) -> std::io::Result<(u16, Vec<u8>)> {
    use std::io::{Read as _, Write as _};
    let addr = base.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response");
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(bad)?;
    let head = String::from_utf8_lossy(&response[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, response[split + 4..].to_vec()))
}

/// The value of a Prometheus counter or gauge `name` (without labels) in a `/metrics` text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == name).then(|| value.trim().parse().ok())?
        })
}
