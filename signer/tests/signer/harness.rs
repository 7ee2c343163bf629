//! Test harness: runs the real `ota-sign` binary as processes, against a per-test SoftHSM2
//! token directory or development file keys, and checks the results with `ota-core`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ota_core::time::UnixTime;
use ota_core::tuf::client::{Action, Fetched, Limits, TrustedFiles, Updater};
use ota_core::tuf::metadata::{
    Common, DelegatedRole, Delegations, Envelope, MetaFile, Role, Root, Snapshot, TargetFile,
    Targets, Timestamp, sign_role,
};
use sha2::Digest as _;
use tempfile::TempDir;

/// The time every test runs at: 2026-11-23T00:00:00Z.
pub(crate) const NOW: &str = "2026-11-23T00:00:00Z";
pub(crate) const NOW_TIME: UnixTime = UnixTime(1_795_392_000);
pub(crate) const PIN: &str = "314159";
pub(crate) const DAY: i64 = 86_400;

/// What a run of the binary did.
#[derive(Debug)]
pub(crate) struct Out {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Out {
    /// Assert success and return stdout.
    #[track_caller]
    pub(crate) fn ok(&self) -> &str {
        assert_eq!(
            self.code, 0,
            "expected success:\n{}\n{}",
            self.stdout, self.stderr
        );
        &self.stdout
    }

    /// Assert exit code `code` with a one-line reason containing `reason`.
    #[track_caller]
    pub(crate) fn fails(&self, code: i32, reason: &str) {
        assert_eq!(
            self.code, code,
            "expected exit {code} ({reason}):\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        let last = self.stderr.lines().last().unwrap_or("");
        assert!(
            last.contains(reason),
            "expected the reason {reason:?}, got: {last}"
        );
        assert!(last.starts_with("ota-sign: "), "one-line reason: {last}");
    }
}

/// A SoftHSM2 installation with a token directory of its own.
#[derive(Debug)]
pub(crate) struct SoftHsm {
    pub(crate) module: PathBuf,
    pub(crate) conf: PathBuf,
    pub(crate) tokens: PathBuf,
}

const MODULE_PATHS: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
];

impl SoftHsm {
    /// A fresh token directory under `dir`; `None` (test skipped) when SoftHSM2 is not
    /// installed, unless `OTA_REQUIRE_SOFTHSM` is set, in which case the test fails.
    pub(crate) fn new(dir: &Path) -> Option<Self> {
        let module = MODULE_PATHS.iter().map(PathBuf::from).find(|p| p.exists());
        let util = Command::new("softhsm2-util")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        let Some(module) = module.filter(|_| util) else {
            assert!(
                std::env::var_os("OTA_REQUIRE_SOFTHSM").is_none(),
                "OTA_REQUIRE_SOFTHSM is set but SoftHSM2 (module and softhsm2-util) is missing; \
                 install the Debian package softhsm2"
            );
            eprintln!("skipped: SoftHSM2 is not installed (Debian package softhsm2)");
            return None;
        };
        let tokens = dir.join("softhsm-tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        Some(Self {
            module,
            conf,
            tokens,
        })
    }

    /// Initialise a token with a user PIN.
    pub(crate) fn init_token(&self, label: &str, pin: &str) {
        let out = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &self.conf)
            .args(["--init-token", "--free", "--label", label, "--pin", pin])
            .args(["--so-pin", &format!("so{pin}")])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }

    /// The URI of key `object` on token `token`.
    pub(crate) fn uri(&self, token: &str, object: &str) -> String {
        format!(
            "pkcs11:token={token};object={object}?module-path={}",
            self.module.display()
        )
    }

    /// Mark the user PIN of token `label` locked, the way a token reports it after too many
    /// wrong PINs. SoftHSM2 itself never locks a PIN, so the flag is set in its token file
    /// (attribute 0x8000534b, CKA_OS_TOKENFLAGS, holds the token flags; 0x40000 is
    /// CKF_USER_PIN_LOCKED).
    pub(crate) fn lock_user_pin(&self, label: &str) {
        let padded = format!("{label:<32}");
        for dir in std::fs::read_dir(&self.tokens).unwrap() {
            let path = dir.unwrap().path().join("token.object");
            let Ok(mut bytes) = std::fs::read(&path) else {
                continue;
            };
            if !bytes.windows(padded.len()).any(|w| w == padded.as_bytes()) {
                continue;
            }
            let tag = [0, 0, 0, 0, 0x80, 0, 0x53, 0x4b, 0, 0, 0, 0, 0, 0, 0, 2];
            let at = bytes
                .windows(tag.len())
                .position(|w| w == tag)
                .expect("token flags attribute")
                + tag.len();
            let mut flags = u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap());
            flags |= 0x40000;
            bytes[at..at + 8].copy_from_slice(&flags.to_be_bytes());
            std::fs::write(&path, bytes).unwrap();
            return;
        }
        panic!("no token labelled {label}");
    }
}

/// Where a fixture's offline keys live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keys {
    /// Development file keys (with --insecure-file-keys).
    Files,
    /// SoftHSM2 tokens, one per key.
    Tokens,
}

/// A signing station with keys, a policy and an installed root (2-of-3 root keys, `targets`
/// on a P-256 key, `release` on an Ed25519 key, three P-256 operator keys, `release` needing 2
/// approvals; snapshot and timestamp on file keys, as the origin's online keys).
#[derive(Debug)]
pub(crate) struct Fixture {
    pub(crate) tmp: TempDir,
    pub(crate) station: PathBuf,
    pub(crate) hsm: Option<SoftHsm>,
    pub(crate) keys: Keys,
    /// Key name → KEYREF.
    pub(crate) refs: BTreeMap<String, String>,
}

/// Names of the fixture's keys and their schemes.
pub(crate) const KEY_NAMES: &[(&str, &str)] = &[
    ("root-1", "ed25519"),
    ("root-2", "p256"),
    ("root-3", "ed25519"),
    ("targets", "p256"),
    ("release", "ed25519"),
    ("alice", "p256"),
    ("bob", "p256"),
    ("carol", "p256"),
];

impl Fixture {
    /// A station with keys but no root yet. `None` if tokens are asked for and SoftHSM2 is
    /// missing (and not required).
    pub(crate) fn keys_only(keys: Keys) -> Option<Self> {
        let tmp = tempfile::tempdir().unwrap();
        let hsm = match keys {
            Keys::Tokens => Some(SoftHsm::new(tmp.path())?),
            Keys::Files => None,
        };
        let station = tmp.path().join("station");
        std::fs::create_dir_all(tmp.path().join("pub")).unwrap();
        std::fs::create_dir_all(tmp.path().join("keys")).unwrap();
        let mut fixture = Self {
            tmp,
            station,
            hsm,
            keys,
            refs: BTreeMap::new(),
        };
        // Operators bring their keys; the policy lists them; then the role keys are made at
        // the station, each signing its own key-generated entry in the audit log.
        std::fs::create_dir_all(&fixture.station).unwrap();
        for (name, scheme) in &KEY_NAMES[5..] {
            fixture.generate(name, scheme, keys);
        }
        fixture.write_policy(&[]);
        for (name, scheme) in &KEY_NAMES[..5] {
            fixture.generate(name, scheme, keys);
        }
        fixture.generate("snapshot", "ed25519", Keys::Files);
        fixture.generate("timestamp", "p256", Keys::Files);
        Some(fixture)
    }

    /// A station whose root (version 1) is installed, signed by root-1 and root-2.
    pub(crate) fn ready(keys: Keys) -> Option<Self> {
        let fixture = Self::keys_only(keys)?;
        let root = fixture.path("root.json");
        fixture
            .root_create(&fixture.key_args("targets", "release"), &root)
            .ok();
        fixture.sign("root", "root-2", &root, &root, &[]).ok();
        Some(fixture)
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    pub(crate) fn public(&self, name: &str) -> PathBuf {
        self.tmp.path().join("pub").join(format!("{name}.json"))
    }

    /// Generate key `name` with the real binary.
    pub(crate) fn generate(&mut self, name: &str, scheme: &str, keys: Keys) {
        let public = self.public(name);
        let public = public.to_str().unwrap();
        let reference = match (keys, &self.hsm) {
            (Keys::Tokens, Some(hsm)) => {
                hsm.init_token(name, PIN);
                let module = hsm.module.to_str().unwrap().to_string();
                self.run_pin(
                    &[
                        "key",
                        "generate",
                        "--scheme",
                        scheme,
                        "--pkcs11",
                        &module,
                        "--token",
                        name,
                        "--label",
                        name,
                        "--public-out",
                        public,
                    ],
                    PIN,
                )
                .ok();
                hsm.uri(name, name)
            }
            _ => {
                let file = self.tmp.path().join("keys").join(format!("{name}.json"));
                let file = file.to_str().unwrap();
                self.run(&[
                    "key",
                    "generate",
                    "--scheme",
                    scheme,
                    "--out",
                    file,
                    "--public-out",
                    public,
                ])
                .ok();
                format!("file:{file}")
            }
        };
        self.refs.insert(name.into(), reference);
    }

    /// Write the station policy; `revoked` operators get a revocation time.
    pub(crate) fn write_policy(&self, revoked: &[(&str, &str)]) {
        let mut operators = serde_json::Map::new();
        for name in ["alice", "bob", "carol"] {
            let key: serde_json::Value =
                serde_json::from_slice(&std::fs::read(self.public(name)).unwrap()).unwrap();
            let mut op = serde_json::json!({ "key": key });
            if let Some((_, at)) = revoked.iter().find(|(n, _)| *n == name) {
                op["revoked"] = (*at).into();
            }
            operators.insert(name.into(), op);
        }
        let policy = serde_json::json!({
            "operators": operators,
            "roles": {
                "root": { "max_expiry_days": 365 },
                "targets": { "max_expiry_days": 90 },
                "release": { "max_expiry_days": 90, "approvals": 2 },
                "snapshot": { "max_expiry_days": 7 },
                "timestamp": { "max_expiry_days": 2 }
            },
            "approval_max_hours": 24
        });
        std::fs::write(
            self.station.join("policy.json"),
            serde_json::to_vec_pretty(&policy).unwrap(),
        )
        .unwrap();
    }

    /// Run the binary with the station, the fixed time and the token configuration.
    pub(crate) fn run(&self, args: &[&str]) -> Out {
        self.run_env(args, &[])
    }

    /// Run with a PIN in the environment.
    pub(crate) fn run_pin(&self, args: &[&str], pin: &str) -> Out {
        self.run_env(args, &[("OTA_PKCS11_PIN", pin)])
    }

    pub(crate) fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ota-sign"));
        for var in [
            "OTA_PKCS11_PIN",
            "OTA_PKCS11_MODULE",
            "OTA_SIGN_STATION",
            "SOFTHSM2_CONF",
        ] {
            cmd.env_remove(var);
        }
        if let Some(hsm) = &self.hsm {
            cmd.env("SOFTHSM2_CONF", &hsm.conf);
        }
        // A directory is a station once it has a policy.
        if self.station.join("policy.json").exists() {
            cmd.env("OTA_SIGN_STATION", &self.station);
        }
        if !args.contains(&"--now") {
            cmd.args(["--now", NOW]);
        }
        cmd.args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null());
        let out = cmd.output().unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `--insecure-file-keys` when the fixture uses file keys.
    fn insecure(&self) -> Vec<&'static str> {
        match self.keys {
            Keys::Files => vec!["--insecure-file-keys"],
            Keys::Tokens => vec![],
        }
    }

    /// The root-role key arguments of the standard root, with the given targets and release
    /// key names (to build bad roots).
    pub(crate) fn key_args(&self, targets: &str, release: &str) -> Vec<String> {
        let p = |n: &str| self.public(n).to_str().unwrap().to_string();
        let mut args = Vec::new();
        for n in ["root-1", "root-2", "root-3"] {
            args.extend(["--root-key".to_string(), p(n)]);
        }
        args.extend(["--root-threshold".into(), "2".into()]);
        args.extend(["--targets-key".into(), p(targets)]);
        args.extend(["--release-key".into(), p(release)]);
        args.extend(["--snapshot-key".into(), p("snapshot")]);
        args.extend(["--timestamp-key".into(), p("timestamp")]);
        args
    }

    /// `root create` opened by root-1.
    pub(crate) fn root_create(&self, key_args: &[String], out: &Path) -> Out {
        let mut args = vec![
            "root".to_string(),
            "create".into(),
            "--key".into(),
            self.refs["root-1"].clone(),
            "--out".into(),
            out.to_str().unwrap().into(),
            "--expires".into(),
            at(300 * DAY),
            "--yes".into(),
        ];
        args.extend(key_args.iter().cloned());
        args.extend(self.insecure().iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run_pin(&args, PIN)
    }

    /// `sign --role ROLE --key NAME --in IN --out OUT [extra…] --yes`.
    pub(crate) fn sign(
        &self,
        role: &str,
        key: &str,
        input: &Path,
        out: &Path,
        extra: &[&str],
    ) -> Out {
        let mut args = vec![
            "sign",
            "--role",
            role,
            "--key",
            &self.refs[key],
            "--in",
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--yes",
        ];
        args.extend(extra);
        let insecure = self.insecure();
        if !["snapshot", "timestamp"].contains(&role) {
            args.extend(insecure);
        }
        self.run_pin(&args, PIN)
    }

    /// `approve --role release --key OPERATOR --in IN --out OUT [extra…] --yes`.
    pub(crate) fn approve(&self, operator: &str, input: &Path, out: &Path, extra: &[&str]) -> Out {
        let mut args = vec![
            "approve",
            "--role",
            "release",
            "--key",
            &self.refs[operator],
            "--in",
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--yes",
        ];
        args.extend(extra);
        args.extend(self.insecure());
        self.run_pin(&args, PIN)
    }

    /// The installed root.
    pub(crate) fn root(&self) -> Root {
        let bytes = std::fs::read(self.station.join("root.json")).unwrap();
        Envelope::parse("root", "root.json", &bytes, 1 << 20)
            .unwrap()
            .role()
            .unwrap()
    }

    /// Write a request file.
    pub(crate) fn request<R: Role>(&self, name: &str, doc: &R) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, sign_role(doc, &[])).unwrap();
        path
    }

    /// The audit log's lines.
    pub(crate) fn audit_lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.station.join("audit.jsonl"))
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }

    pub(crate) fn write_audit(&self, lines: &[String]) {
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(self.station.join("audit.jsonl"), text).unwrap();
    }
}

/// NOW plus `secs`, as TUF writes it.
pub(crate) fn at(secs: i64) -> String {
    NOW_TIME.plus_secs(secs).to_string()
}

/// Deterministic artifact bytes.
pub(crate) fn artifact_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub(crate) fn target_file(bytes: &[u8], custom: Option<serde_json::Value>) -> TargetFile {
    TargetFile {
        length: bytes.len() as u64,
        hashes: BTreeMap::from([(
            "sha256".to_string(),
            hex::encode(sha2::Sha256::digest(bytes)),
        )]),
        custom,
        extra: BTreeMap::new(),
    }
}

/// The `custom` object of an artifact, computed by the real ingest.
pub(crate) fn artifact_custom(bytes: &[u8]) -> serde_json::Value {
    use ota_core::chunk::{ChunkingParams, Ingest, IngestError};
    let no_sink = |_: ota_core::chunk::CutChunk<'_>| Ok::<(), std::convert::Infallible>(());
    let mut ingest = Ingest::new(ChunkingParams::DEFAULT);
    let ingested = ingest
        .update(bytes, no_sink)
        .and_then(|()| ingest.finish(no_sink))
        .unwrap_or_else(|e: IngestError<std::convert::Infallible>| panic!("ingest: {e}"));
    serde_json::json!({ "enigm": ingested.chunks })
}

/// A `release` request listing `artifacts` (path, bytes).
pub(crate) fn release_doc(version: u64, expires: i64, artifacts: &[(&str, &[u8])]) -> Targets {
    Targets {
        common: Common::new("targets", version, NOW_TIME.plus_secs(expires)),
        targets: artifacts
            .iter()
            .map(|(p, b)| (p.to_string(), target_file(b, Some(artifact_custom(b)))))
            .collect(),
        delegations: None,
        extra: BTreeMap::new(),
    }
}

/// A release manifest.
pub(crate) fn manifest(channel: &str, release: u64, artifact: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "channel": channel, "release": release, "version": format!("2026.11.{release}"),
        "security": false, "models": ["enigm-one"],
        "artifacts": [ { "target": artifact, "slot": "system" } ]
    }))
    .unwrap()
}

/// A `targets` request listing `manifests` and delegating `release` as `root` pins it.
pub(crate) fn targets_doc(root: &Root, version: u64, manifests: &[(&str, &[u8])]) -> Targets {
    let authority = root.release_authority.clone().unwrap();
    Targets {
        common: Common::new("targets", version, NOW_TIME.plus_secs(30 * DAY)),
        targets: manifests
            .iter()
            .map(|(p, b)| (p.to_string(), target_file(b, None)))
            .collect(),
        delegations: Some(Delegations {
            keys: authority.keys.clone(),
            roles: vec![DelegatedRole {
                name: "release".into(),
                keyids: authority.keyids.clone(),
                threshold: authority.threshold,
                terminating: true,
                paths: Some(vec!["artifacts/*".into()]),
                path_hash_prefixes: None,
                extra: BTreeMap::new(),
            }],
            extra: BTreeMap::new(),
        }),
        extra: BTreeMap::new(),
    }
}

fn pin(bytes: &[u8], version: u64) -> MetaFile {
    let mut meta = MetaFile::version(version);
    meta.length = Some(bytes.len() as u64);
    meta.hashes = Some(BTreeMap::from([(
        "sha256".to_string(),
        hex::encode(sha2::Sha256::digest(bytes)),
    )]));
    meta
}

pub(crate) fn snapshot_doc(version: u64, targets: (&[u8], u64), release: (&[u8], u64)) -> Snapshot {
    Snapshot {
        common: Common::new("snapshot", version, NOW_TIME.plus_secs(7 * DAY)),
        meta: BTreeMap::from([
            ("targets.json".into(), pin(targets.0, targets.1)),
            ("release.json".into(), pin(release.0, release.1)),
        ]),
        extra: BTreeMap::new(),
    }
}

pub(crate) fn timestamp_doc(version: u64, snapshot: (&[u8], u64)) -> Timestamp {
    Timestamp {
        common: Common::new("timestamp", version, NOW_TIME.plus_secs(DAY)),
        meta: BTreeMap::from([("snapshot.json".into(), pin(snapshot.0, snapshot.1))]),
        extra: BTreeMap::new(),
    }
}

/// Drive `ota-core`'s client workflow over a repository and look every name up; each found
/// target's bytes are checked, and artifacts must come out as verified artifacts.
pub(crate) fn client_accepts(
    root: &[u8],
    metadata: &BTreeMap<String, Vec<u8>>,
    targets: &BTreeMap<String, Vec<u8>>,
    names: &[&str],
) -> Result<Vec<String>, String> {
    let mut updater = Updater::new(Limits::default(), root, TrustedFiles::default())
        .map_err(|e| e.to_string())?;
    updater.refresh().map_err(|e| e.to_string())?;
    let mut found = Vec::new();
    let mut pending: Vec<&str> = names.iter().rev().copied().collect();
    loop {
        match updater.poll_action() {
            Some(Action::Fetch(request)) => {
                let fetched = metadata
                    .get(&request.file)
                    .cloned()
                    .map_or(Fetched::NotFound, Fetched::Bytes);
                updater
                    .handle_fetched(NOW_TIME, &request, fetched)
                    .map_err(|e| e.to_string())?;
            }
            Some(Action::Found(info)) => {
                let bytes = targets
                    .get(info.path())
                    .ok_or_else(|| format!("{} missing", info.path()))?;
                info.verify_bytes(bytes).map_err(|e| e.to_string())?;
                let line = format!("{} in {}", info.path(), info.role());
                if info.path().starts_with("artifacts/") {
                    info.into_artifact().map_err(|e| e.to_string())?;
                }
                found.push(line);
                let Some(next) = pending.pop() else { break };
                updater
                    .find_target(NOW_TIME, next)
                    .map_err(|e| e.to_string())?;
            }
            Some(Action::Refreshed) => {
                let Some(next) = pending.pop() else { break };
                updater
                    .find_target(NOW_TIME, next)
                    .map_err(|e| e.to_string())?;
            }
            Some(_) => {}
            None => return Err("the updater stopped without an outcome".into()),
        }
    }
    Ok(found)
}

/// Files in a directory, to check that nothing partial was left behind.
pub(crate) fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
