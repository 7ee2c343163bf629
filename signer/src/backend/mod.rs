//! Key backends: one trait, two implementations.
//!
//! - [`pkcs11`]: the production path. Keys live on a PKCS#11 token (an HSM, or a PIV card
//!   through its PKCS#11 module such as YubiKey's `ykcs11`); the private part never leaves it.
//!   Ed25519 signs with `CKM_EDDSA` over the message; P-256 with `CKM_ECDSA` over a SHA-256
//!   digest computed here (SoftHSM2 2.6 refuses `CKM_ECDSA_SHA256`), and the raw `r‖s` the
//!   token returns is re-encoded as the DER `ECDSA-Sig-Value` TUF expects.
//! - [`file`]: development keys in a JSON file. The signing flow refuses them for `root`,
//!   `targets` and `release` (and for approvals of those roles) unless the operator passes
//!   `--insecure-file-keys`.
//!
//! Every signature a backend returns has been verified against the key's public half before
//! it is handed out, so a token that answers with another key's signature (or garbage) is
//! caught at the source.

pub mod file;
pub mod pkcs11;

use std::fmt;
use std::io::IsTerminal as _;

use ota_core::tuf::Key;

use crate::keyref::KeyRef;

/// Signature schemes the tool generates and signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scheme {
    /// Ed25519 (TUF `ed25519`).
    Ed25519,
    /// ECDSA over P-256 with SHA-256 (TUF `ecdsa-sha2-nistp256`).
    P256,
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ed25519 => "ed25519",
            Self::P256 => "ecdsa-sha2-nistp256",
        })
    }
}

/// A private key the tool can sign with.
pub trait SigningKey: fmt::Debug {
    /// The public half, in TUF form.
    fn public(&self) -> &Key;

    /// How the operator referred to the key.
    fn reference(&self) -> &KeyRef;

    /// Sign `msg`; returns the signature bytes TUF hex-encodes (Ed25519: R‖S; ECDSA: DER).
    /// The signature has been verified against [`Self::public`].
    fn sign(&mut self, msg: &[u8]) -> Result<Vec<u8>, BackendError>;
}

/// Where a token PIN comes from: an environment variable, else a prompt on the terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinSource {
    /// The environment variable to read.
    pub env: String,
}

/// The default PIN variable.
pub const PIN_ENV: &str = "OTA_PKCS11_PIN";

impl Default for PinSource {
    fn default() -> Self {
        Self {
            env: PIN_ENV.into(),
        }
    }
}

impl PinSource {
    /// The PIN for `token`: from the environment, else asked for on the terminal.
    pub fn pin(&self, token: &str) -> Result<String, BackendError> {
        if let Ok(pin) = std::env::var(&self.env) {
            return Ok(pin);
        }
        if std::io::stdin().is_terminal() {
            return rpassword::prompt_password(format!("PIN for token {token}: ")).map_err(|e| {
                BackendError::NoPin {
                    env: self.env.clone(),
                    reason: e.to_string(),
                }
            });
        }
        Err(BackendError::NoPin {
            env: self.env.clone(),
            reason: "it is not set and there is no terminal to ask on".into(),
        })
    }
}

/// Open the key `reference` names, unlocking a token with a PIN from `pins`.
pub fn open_key(reference: &KeyRef, pins: &PinSource) -> Result<Box<dyn SigningKey>, BackendError> {
    match reference {
        KeyRef::File(path) => Ok(Box::new(file::FileKey::load(path)?)),
        KeyRef::Pkcs11(uri) => Ok(Box::new(pkcs11::Pkcs11Key::open(uri, pins)?)),
    }
}

/// Check a backend's signature before handing it out.
pub(crate) fn checked(public: &Key, msg: &[u8], sig: Vec<u8>) -> Result<Vec<u8>, BackendError> {
    if public.verify(msg, &sig) {
        Ok(sig)
    } else {
        Err(BackendError::BadSignature {
            keyid: public.key_id().to_string(),
        })
    }
}

/// A key could not be opened, generated or used. Most variants are faults of the environment
/// (module, token, configuration: exit code 2); [`Self::is_refusal`] names the ones that are
/// refusals of the operator (exit code 1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// No module named.
    #[error(
        "no PKCS#11 module: add ?module-path=… to the URI or set {}",
        crate::keyref::MODULE_ENV
    )]
    NoModule,
    /// The module file does not exist.
    #[error("PKCS#11 module {path} does not exist")]
    ModuleMissing {
        /// The path tried.
        path: String,
    },
    /// The module could not be loaded or initialised.
    #[error("PKCS#11 module {path} could not be loaded: {reason}")]
    ModuleLoad {
        /// The module.
        path: String,
        /// Why.
        reason: String,
    },
    /// No initialised token matches; some slots hold uninitialised tokens.
    #[error(
        "no initialised token matches {selection}; {uninitialised} slot(s) hold a token that \
         is not initialised (initialise it first)"
    )]
    TokenNotInitialised {
        /// The URI's token selection.
        selection: String,
        /// Slots with an uninitialised token.
        uninitialised: usize,
    },
    /// No token matches.
    #[error("no token matches {selection} (tokens present: {available})")]
    TokenNotFound {
        /// The URI's token selection.
        selection: String,
        /// Labels of the initialised tokens present.
        available: String,
    },
    /// More than one token matches.
    #[error("{count} tokens match {selection}: name one with token=, serial= or slot-id=")]
    TokenAmbiguous {
        /// The URI's token selection.
        selection: String,
        /// How many match.
        count: usize,
    },
    /// The token refused the PIN.
    #[error("token {token} refused the PIN (incorrect PIN){}", if *final_try { "; one more wrong PIN locks it" } else { "" })]
    PinIncorrect {
        /// The token label.
        token: String,
        /// Whether the token says the next wrong PIN locks it.
        final_try: bool,
    },
    /// The user PIN is locked: the security officer must unlock it.
    #[error("token {token}: the user PIN is locked; the security officer must reset it")]
    PinLocked {
        /// The token label.
        token: String,
    },
    /// No PIN could be had.
    #[error("no PIN: ${env} {reason}")]
    NoPin {
        /// The variable tried.
        env: String,
        /// Why there is no PIN.
        reason: String,
    },
    /// No key object matches.
    #[error("token {token}: no private key matches {object}")]
    KeyNotFound {
        /// The token label.
        token: String,
        /// The object selection.
        object: String,
    },
    /// More than one key object matches.
    #[error("token {token}: {count} private keys match {object}; name one by id=")]
    KeyAmbiguous {
        /// The token label.
        token: String,
        /// The object selection.
        object: String,
        /// How many.
        count: usize,
    },
    /// Generation would shadow an existing key.
    #[error("token {token} already holds an object labelled {label}")]
    KeyExists {
        /// The token label.
        token: String,
        /// The key label.
        label: String,
    },
    /// The key is of a type or curve we do not sign with.
    #[error("unsupported key: {reason}")]
    UnsupportedKey {
        /// What it is.
        reason: String,
    },
    /// A generated key is not protected as asked (the token ignored the template).
    #[error("token {token}: generated key is not protected ({reason}); it was destroyed")]
    KeyNotProtected {
        /// The token label.
        token: String,
        /// Which attribute was wrong.
        reason: String,
    },
    /// Another PKCS#11 failure.
    #[error("PKCS#11 {operation} failed: {reason}")]
    Pkcs11 {
        /// What we were doing.
        operation: &'static str,
        /// The module's error.
        reason: String,
    },
    /// The backend returned a signature its own public key does not verify.
    #[error("key {keyid} returned a signature that does not verify under its public key")]
    BadSignature {
        /// The key.
        keyid: String,
    },
    /// A development key file is unusable.
    #[error("key file {path}: {reason}")]
    FileKey {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

impl BackendError {
    /// Whether this is a refusal (exit code 1) rather than an environment error (exit code 2).
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::PinIncorrect { .. } | Self::BadSignature { .. })
    }
}
