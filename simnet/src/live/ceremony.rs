//! The demo's authorities and origin, made with the real tools: `ota-sign` generates the
//! offline keys (on SoftHSM2 tokens when SoftHSM2 is installed, as development key files
//! otherwise), opens a signing station, holds the root ceremony, and signs each release after
//! two operators approved it; `ota-origin` makes its online keys, is initialised with the
//! roots, ingests each build, and imports the signed metadata.
//!
//! One departure, said plainly in the demo's output: the director's root (the Uptane
//! director repository's own root, which pins the origin's offer-signing key) is signed by a
//! director-root key held in this process, because `ota-sign` has no director-root ceremony.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, anyhow, bail};
use ota_core::time::UnixTime;
use ota_core::tuf::metadata::{Common, RoleKeys, Root, sign_role};
use ota_core::tuf::{InMemoryKey, Key};
use ota_tests::softhsm::SoftHsm;

/// The PIN of every demo token (development only).
const PIN: &str = "demo-pin-1234";

/// Where the offline keys live.
#[derive(Debug)]
pub(crate) enum KeyStore {
    /// SoftHSM2 tokens, one per key, standing in for the HSM and the PIV tokens.
    Tokens(SoftHsm),
    /// Development key files (`--insecure-file-keys`).
    Files,
}

impl KeyStore {
    /// One line saying which, for the demo's output.
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Tokens(hsm) => format!(
                "offline keys on SoftHSM2 tokens ({}), one token per key",
                hsm.module.display()
            ),
            Self::Files => "offline keys in development key FILES: SoftHSM2 is not installed \
                            (Debian package softhsm2); ota-sign runs with --insecure-file-keys"
                .to_string(),
        }
    }
}

/// The signing station and the origin's data directory, after the root ceremony and
/// `ota-origin init`.
#[derive(Debug)]
pub(crate) struct Authorities {
    dir: PathBuf,
    station: PathBuf,
    store: KeyStore,
    /// Key name → KEYREF.
    refs: BTreeMap<String, String>,
    sign: PathBuf,
    origin: PathBuf,
    /// The origin's data directory.
    pub(crate) data: PathBuf,
    /// The image repository's root (for devices).
    pub(crate) root: PathBuf,
    /// The director's root (for devices).
    pub(crate) director_root: PathBuf,
}

/// The offline keys: name, scheme. `alice` and `bob` approve releases (dual control).
const KEYS: &[(&str, &str)] = &[
    ("alice", "p256"),
    ("bob", "p256"),
    ("root", "ed25519"),
    ("targets", "p256"),
    ("release", "ed25519"),
];

impl Authorities {
    /// Generates every key, writes the station's policy, holds the root ceremony, makes the
    /// director root and initialises the origin in `dir/origin`.
    pub(crate) fn ceremony(dir: &Path, bins: &Bins, expires: UnixTime) -> Result<Self> {
        let store = match SoftHsm::find(dir) {
            Some(hsm) => KeyStore::Tokens(hsm),
            None => KeyStore::Files,
        };
        let station = dir.join("station");
        for sub in ["pub", "keys"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        std::fs::create_dir_all(&station)?;
        let mut this = Self {
            dir: dir.to_path_buf(),
            station,
            store,
            refs: BTreeMap::new(),
            sign: bins.sign.clone(),
            origin: bins.origin.clone(),
            data: dir.join("origin"),
            root: dir.join("root.json"),
            director_root: dir.join("director-root.json"),
        };
        // Operators' keys first: the policy names them; then the role keys at the station.
        for (name, scheme) in &KEYS[..2] {
            this.generate(name, scheme)?;
        }
        this.write_policy()?;
        for (name, scheme) in &KEYS[2..] {
            this.generate(name, scheme)?;
        }

        // The origin's online keys (snapshot, timestamp, director), as public key files.
        let online: serde_json::Value =
            serde_json::from_str(&run(&this.origin, &["keys", "--data", s(&this.data)], &[])?)
                .context("ota-origin keys prints JSON")?;
        for role in ["snapshot", "timestamp", "director"] {
            std::fs::write(
                this.public(role),
                serde_json::to_vec_pretty(&online[role]).context("JSON")?,
            )?;
        }

        // The root ceremony: one root key (threshold 1 in the demo).
        let expires_s = expires.to_string();
        let (root_ref, root_out) = (this.refs["root"].clone(), this.root.clone());
        let mut args = vec![
            "root",
            "create",
            "--key",
            &root_ref,
            "--out",
            s(&root_out),
            "--expires",
            &expires_s,
            "--root-threshold",
            "1",
            "--yes",
        ];
        let pubs: Vec<(String, String)> = ["root", "targets", "release", "snapshot", "timestamp"]
            .iter()
            .map(|n| (format!("--{n}-key"), s(&this.public(n)).to_string()))
            .collect();
        for (flag, path) in &pubs {
            args.extend([flag.as_str(), path.as_str()]);
        }
        this.sign_tool(&args)?;

        this.director_root(&online, expires)?;
        run(
            &this.origin,
            &[
                "init",
                "--data",
                s(&this.data),
                "--root",
                s(&this.root),
                "--director-root",
                s(&this.director_root),
            ],
            &[],
        )?;
        Ok(this)
    }

    /// Which key store the ceremony used.
    pub(crate) fn store(&self) -> &KeyStore {
        &self.store
    }

    fn public(&self, name: &str) -> PathBuf {
        self.dir.join("pub").join(format!("{name}.pub.json"))
    }

    fn generate(&mut self, name: &str, scheme: &str) -> Result<()> {
        let public = self.public(name);
        let reference = match &self.store {
            KeyStore::Tokens(hsm) => {
                hsm.init_token(name, PIN).map_err(|e| anyhow!(e))?;
                let module = hsm.module.display().to_string();
                self.sign_tool(&[
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
                    s(&public),
                ])?;
                hsm.uri(name, name)
            }
            KeyStore::Files => {
                let file = self.dir.join("keys").join(format!("{name}.key.json"));
                self.sign_tool(&[
                    "key",
                    "generate",
                    "--scheme",
                    scheme,
                    "--out",
                    s(&file),
                    "--public-out",
                    s(&public),
                ])?;
                format!("file:{}", file.display())
            }
        };
        self.refs.insert(name.to_string(), reference);
        Ok(())
    }

    fn write_policy(&self) -> Result<()> {
        let mut operators = serde_json::Map::new();
        for name in ["alice", "bob"] {
            let key: serde_json::Value =
                serde_json::from_slice(&std::fs::read(self.public(name))?)?;
            operators.insert(name.into(), serde_json::json!({ "key": key }));
        }
        let policy = serde_json::json!({
            "operators": operators,
            "roles": {
                "root": { "max_expiry_days": 365 },
                "targets": { "max_expiry_days": 90 },
                "release": { "max_expiry_days": 90, "approvals": 2 },
            },
            "approval_max_hours": 24
        });
        std::fs::write(
            self.station.join("policy.json"),
            serde_json::to_vec_pretty(&policy)?,
        )?;
        Ok(())
    }

    /// The director's root: targets, snapshot and timestamp on the origin's director key,
    /// signed by a director-root key made here (see the module's note).
    fn director_root(&self, online: &serde_json::Value, expires: UnixTime) -> Result<()> {
        let mut seed = [0u8; 32];
        getrandom(&mut seed)?;
        let root_key = InMemoryKey::ed25519_from_seed(seed);
        let director: Key =
            serde_json::from_value(online["director"].clone()).context("the director key")?;
        let root_pub = root_key.public();
        let one = |key: &Key| RoleKeys {
            keyids: vec![key.key_id()],
            threshold: 1,
            extra: BTreeMap::new(),
        };
        let root = Root {
            common: Common::new("root", 1, expires),
            consistent_snapshot: true,
            keys: [&root_pub, &director]
                .iter()
                .map(|k| (k.key_id(), (*k).clone()))
                .collect(),
            roles: BTreeMap::from([
                ("root".into(), one(&root_pub)),
                ("targets".into(), one(&director)),
                ("snapshot".into(), one(&director)),
                ("timestamp".into(), one(&director)),
            ]),
            release_authority: None,
            extra: BTreeMap::new(),
        };
        std::fs::write(&self.director_root, sign_role(&root, &[&root_key]))?;
        Ok(())
    }

    /// Runs `ota-sign` at the station, with the PIN and token configuration in its
    /// environment and `--insecure-file-keys` when the keys are files.
    fn sign_tool(&self, args: &[&str]) -> Result<String> {
        let mut env: Vec<(&str, String)> = vec![("OTA_PKCS11_PIN", PIN.to_string())];
        // A directory is a station once it has a policy; operators' keys come before it.
        if self.station.join("policy.json").exists() {
            env.push(("OTA_SIGN_STATION", self.station.display().to_string()));
        }
        let mut args = args.to_vec();
        match &self.store {
            KeyStore::Tokens(hsm) => env.push(("SOFTHSM2_CONF", hsm.conf.display().to_string())),
            KeyStore::Files => {
                if args.first() != Some(&"key") {
                    args.push("--insecure-file-keys");
                }
            }
        }
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        run(&self.sign, &args, &env)
    }

    /// Publishes release `number` of `channel`: `release create`, two operators approve the
    /// release request, the release authority and the manifest authority sign, `register`,
    /// `validate`.
    pub(crate) fn publish(
        &self,
        channel: &str,
        number: u64,
        model: &str,
        artifacts: &[(&str, &Path)],
    ) -> Result<()> {
        let number_s = number.to_string();
        let version = format!("2026.11.{number}");
        let id = [
            "--data",
            s(&self.data),
            "--channel",
            channel,
            "--release",
            &number_s,
        ];
        let specs: Vec<String> = artifacts
            .iter()
            .map(|(name, path)| format!("{name}={}", path.display()))
            .collect();
        let mut create = vec!["release", "create"];
        create.extend(id);
        create.extend(["--version", &version, "--model", model]);
        for spec in &specs {
            create.extend(["--artifact", spec]);
        }
        run(&self.origin, &create, &[])?;

        let requests = self.data.join("requests").join(channel).join(&number_s);
        let release_req = requests.join("release.request.json");
        let targets_req = requests.join("targets.request.json");
        let manifest = requests.join("manifest.json");
        let signed_release = requests.join("release.signed.json");
        let signed_targets = requests.join("targets.signed.json");
        let mut approvals = Vec::new();
        for operator in ["alice", "bob"] {
            let out = requests.join(format!("{operator}.approval.json"));
            self.sign_tool(&[
                "approve",
                "--role",
                "release",
                "--key",
                &self.refs[operator],
                "--in",
                s(&release_req),
                "--out",
                s(&out),
                "--valid-for",
                "1h",
                "--yes",
            ])?;
            approvals.push(out);
        }
        self.sign_tool(&[
            "sign",
            "--role",
            "release",
            "--key",
            &self.refs["release"],
            "--in",
            s(&release_req),
            "--out",
            s(&signed_release),
            "--approval",
            s(&approvals[0]),
            "--approval",
            s(&approvals[1]),
            "--yes",
        ])?;
        self.sign_tool(&[
            "sign",
            "--role",
            "targets",
            "--key",
            &self.refs["targets"],
            "--in",
            s(&targets_req),
            "--out",
            s(&signed_targets),
            "--manifest",
            s(&manifest),
            "--yes",
        ])?;
        let mut register = vec!["release", "register"];
        register.extend(id);
        register.extend([
            "--signed-release",
            s(&signed_release),
            "--signed-targets",
            s(&signed_targets),
        ]);
        run(&self.origin, &register, &[])?;
        let mut validate = vec!["release", "validate"];
        validate.extend(id);
        run(&self.origin, &validate, &[])?;
        Ok(())
    }
}

/// The programs the demo runs.
#[derive(Debug, Clone)]
pub(crate) struct Bins {
    pub(crate) sign: PathBuf,
    pub(crate) origin: PathBuf,
    pub(crate) peer: PathBuf,
    pub(crate) device: PathBuf,
}

impl Bins {
    /// The programs next to this one (`cargo build --workspace --bins` puts them there).
    pub(crate) fn beside_me() -> Result<Self> {
        let exe = std::env::current_exe().context("this program's path")?;
        let dir = exe.parent().context("this program's directory")?;
        let find = |name: &str| -> Result<PathBuf> {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                bail!(
                    "{} is missing: build every program first (cargo build --release --workspace --bins)",
                    path.display()
                )
            }
        };
        Ok(Self {
            sign: find("ota-sign")?,
            origin: find("ota-origin")?,
            peer: find("ota-peer")?,
            device: find("ota-device")?,
        })
    }
}

/// Runs a program to completion; its standard output, or an error with its standard error.
pub(crate) fn run(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<String> {
    let name = program.file_name().map_or_else(
        || program.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let out = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", program.display()))?;
    if !out.status.success() {
        bail!(
            "{name} {} failed ({}):\n{}",
            args.first().copied().unwrap_or_default(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).context("output is UTF-8")
}

/// A path as a command-line argument.
pub(crate) fn s(path: &Path) -> &str {
    path.to_str().unwrap_or_default()
}

fn getrandom(buf: &mut [u8]) -> Result<()> {
    use std::io::Read as _;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .context("read /dev/urandom")
}
