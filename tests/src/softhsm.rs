//! SoftHSM2, the PKCS#11 module that stands in for the HSM and the PIV tokens: a private token
//! directory, tokens made with `softhsm2-util`, and RFC 7512 URIs for keys on them.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where Debian and other distributions put the module.
const MODULE_PATHS: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
];

/// A SoftHSM2 installation with a token directory of its own.
#[derive(Debug, Clone)]
pub struct SoftHsm {
    /// The PKCS#11 module.
    pub module: PathBuf,
    /// The configuration file (pass it as `SOFTHSM2_CONF`).
    pub conf: PathBuf,
}

impl SoftHsm {
    /// A fresh token directory under `dir`, or `None` when SoftHSM2 (the module and
    /// `softhsm2-util`, Debian package `softhsm2`) is not installed.
    pub fn find(dir: &Path) -> Option<Self> {
        let module = MODULE_PATHS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())?;
        let util = Command::new("softhsm2-util")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !util {
            return None;
        }
        let tokens = dir.join("softhsm-tokens");
        std::fs::create_dir_all(&tokens).ok()?;
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .ok()?;
        Some(Self { module, conf })
    }

    /// Initialises a token labelled `label` with the user PIN `pin`.
    ///
    /// # Errors
    /// When `softhsm2-util` fails, with its output.
    pub fn init_token(&self, label: &str, pin: &str) -> Result<(), String> {
        let out = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &self.conf)
            .args(["--init-token", "--free", "--label", label, "--pin", pin])
            .args(["--so-pin", &format!("so-{pin}")])
            .output()
            .map_err(|e| format!("softhsm2-util: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "softhsm2-util --init-token {label}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// The RFC 7512 URI of key `object` on token `token`.
    pub fn uri(&self, token: &str, object: &str) -> String {
        format!(
            "pkcs11:token={token};object={object}?module-path={}",
            self.module.display()
        )
    }
}
