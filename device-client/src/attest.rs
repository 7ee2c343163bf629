//! Attestation evidence on the device (DESIGN.md §2 layer 6; the verifier is
//! `ota_core::attest`).
//!
//! The device asks an [`EvidenceProvider`] for an attestation chain over the challenge
//! [`AttestationChallenge::bind`] makes from the check-in's nonce, its own handle and the TLS
//! exporter of the connection the check-in travels on, and sends it in the check-in's optional
//! `attestation` field ([`check_in_with_evidence`]). A provider never sees anything but the
//! challenge; the origin keeps the verdict, never the chain.
//!
//! # Where Android Keystore plugs in
//!
//! A production provider implements [`EvidenceProvider`] on top of the platform keystore:
//! generate (or re-generate) a signing key under a fixed alias with
//! `KeyGenParameterSpec.Builder(alias, PURPOSE_SIGN).setAttestationChallenge(challenge.0)`
//! (and `setDevicePropertiesAttestationIncluded(true)` on Android 12+, so the model is
//! attested), then return `KeyStore.getCertificateChain(alias)` as DER, leaf first. On
//! Enigm OS the update agent is a system service and reaches KeyMint through the keystore2
//! binder (`IKeystoreSecurityLevel::generateKey` with `Tag::ATTESTATION_CHALLENGE`); either
//! path ends in the same chain. The provider is chosen where the device client builds its
//! check-in; nothing else changes.
//!
//! [`SoftwareProvider`] is the tests' provider: a CA made by the test issues a leaf carrying
//! the KeyDescription extension over the challenge, with whatever device properties the test
//! sets. Its root is trusted only by a configuration that names it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ota_core::attest::key_description::{AuthorizationList, RootOfTrust};
use ota_core::attest::{
    AttestationChallenge, Evidence, KEY_DESCRIPTION_OID, KeyDescription, SecurityLevel,
    VerifiedBootState,
};
use ota_core::director::{AttestedCheckIn, DeviceHandle};
use ota_core::tuf::enigm::ReleaseNumber;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, CustomExtension, DistinguishedName,
    DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber, date_time_ymd,
};
use serde::{Deserialize, Serialize};

use crate::state::{StateError, read_bounded, write_atomic, write_json};

/// Makes attestation evidence over a challenge.
pub trait EvidenceProvider: Send + Sync {
    /// An attestation chain (DER, leaf first) whose leaf attests `challenge`.
    fn evidence(&self, challenge: &AttestationChallenge) -> Result<Evidence, ProviderError>;
}

/// Why a provider could not attest.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// The keystore refused or failed.
    #[error("keystore: {0}")]
    Keystore(String),
}

/// A check-in body carrying evidence for the request with `nonce`, sent by `handle` on the
/// connection whose TLS exporter value is `exporter`.
pub fn check_in_with_evidence(
    provider: &dyn EvidenceProvider,
    installed: Option<ReleaseNumber>,
    nonce: &[u8; 32],
    handle: &DeviceHandle,
    exporter: &[u8; 32],
) -> Result<AttestedCheckIn, ProviderError> {
    let challenge = AttestationChallenge::bind(nonce, handle, exporter);
    Ok(AttestedCheckIn {
        installed,
        attestation: Some(provider.evidence(&challenge)?),
    })
}

/// The evidence provider `device.json` names (`ota-device attestation`).
///
/// - `none` (the default): check-ins carry no evidence.
/// - `software`: a [`SoftwareCa`] directory made by `ota-device software-ca`. **For tests and
///   demos only**: its keys are files on the device's disk.
///
/// A production provider is one more variant here (e.g. `android_keystore { alias }`), whose
/// [`ProviderConfig::provider`] arm returns a keystore-backed [`EvidenceProvider`] (see the
/// module documentation); the check-in code does not change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProviderConfig {
    /// No evidence.
    #[default]
    None,
    /// The software provider over the CA in `ca` (tests and demos only).
    Software {
        /// The CA directory.
        ca: PathBuf,
    },
}

impl ProviderConfig {
    /// Whether no provider is configured (the default, left out of `device.json`).
    pub fn is_none(&self) -> bool {
        *self == Self::None
    }

    /// The configured provider, if any, claiming a key created `now_ms` (ms since the epoch).
    pub fn provider(
        &self,
        now_ms: u64,
    ) -> Result<Option<Box<dyn EvidenceProvider>>, ProviderError> {
        match self {
            Self::None => Ok(None),
            Self::Software { ca } => {
                let ca = Arc::new(SoftwareCa::load(ca)?);
                let properties = DeviceProperties {
                    created_ms: now_ms,
                    ..DeviceProperties::default()
                };
                Ok(Some(Box::new(SoftwareProvider::new(ca, properties))))
            }
        }
    }
}

/// The JSON body of a check-in: `check_in` as it is without a provider, or with evidence
/// from the configured one over this request's `nonce`, the device's `handle` and the TLS
/// `exporter` of the connection the signed request covers. A provider that fails is the
/// device's environment at fault (a [`StateError`], exit code 2): the device does not
/// silently check in without the evidence it was configured to send.
pub fn check_in_body(
    config: &ProviderConfig,
    check_in: ota_core::director::CheckIn,
    nonce: &[u8; 32],
    handle: &DeviceHandle,
    exporter: &[u8; 32],
) -> Result<Vec<u8>, StateError> {
    let failed = |reason: String| StateError::Invalid {
        path: match config {
            ProviderConfig::Software { ca } => ca.clone(),
            ProviderConfig::None => PathBuf::from("device.json"),
        },
        reason: format!("attestation provider: {reason}"),
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let body = match config.provider(now_ms).map_err(|e| failed(e.to_string()))? {
        None => serde_json::to_vec(&check_in),
        Some(provider) => serde_json::to_vec(
            &check_in_with_evidence(&*provider, check_in.installed, nonce, handle, exporter)
                .map_err(|e| failed(e.to_string()))?,
        ),
    };
    body.map_err(|e| failed(e.to_string()))
}

/// `ota-device attestation --state D --provider none|software [--software-ca DIR]`: choose
/// the provider and record it in `device.json`. A software CA must load now (and is recorded
/// by its absolute path), so a typo is refused here rather than at the next check-in.
pub fn configure(state: &Path, provider: &str, software_ca: Option<&Path>) -> anyhow::Result<()> {
    let mut dir = crate::state::StateDir::open(state)?;
    dir.config.attestation = match (provider, software_ca) {
        ("none", None) => ProviderConfig::None,
        ("software", Some(ca)) => {
            let ca =
                std::fs::canonicalize(ca).map_err(|e| anyhow::anyhow!("{}: {e}", ca.display()))?;
            SoftwareCa::load(&ca)?;
            ProviderConfig::Software { ca }
        }
        ("software", None) => anyhow::bail!("--provider software needs --software-ca DIR"),
        ("none", Some(_)) => anyhow::bail!("--software-ca goes with --provider software"),
        (other, _) => anyhow::bail!("unknown provider {other:?} (none or software)"),
    };
    dir.save_config()?;
    println!("{}", serde_json::to_string(&dir.config.attestation)?);
    Ok(())
}

/// `ota-device software-ca --out DIR`: make a software CA directory (tests and demos only);
/// prints the path of its `root.pem`, which an origin's `attestation.roots` names.
pub fn make_software_ca(out: &Path, name: &str) -> anyhow::Result<()> {
    if out.join("ca.json").exists() {
        anyhow::bail!("{}: already holds a CA", out.display());
    }
    SoftwareCa::generate(name, 2000, 2100)?.save(out)?;
    println!("{}", out.join("root.pem").display());
    Ok(())
}

/// A test certificate authority: a self-signed root and an intermediate it signs.
///
/// For tests and demos only: its keys are ordinary files, so anyone who reads them can attest
/// anything. It is trusted only by an origin whose `attestation.roots` names its root.
#[derive(Debug)]
pub struct SoftwareCa {
    name: String,
    root_der: Vec<u8>,
    intermediate: Issuer<'static, KeyPair>,
    intermediate_der: Vec<u8>,
    intermediate_serial: u64,
}

/// Largest file of a software CA directory read back.
const MAX_CA_FILE: u64 = 64 * 1024;

/// `ca.json` of a software CA directory: what rebuilds the intermediate's issuer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaFile {
    name: String,
    intermediate_serial: u64,
}

impl SoftwareCa {
    /// A new CA named `name`, whose intermediate is valid from January 1st of `from_year` to
    /// January 1st of `to_year` (the root for 100 years from 2000).
    pub fn generate(name: &str, from_year: i32, to_year: i32) -> Result<Self, ProviderError> {
        let root_params = ca_params(&format!("{name} root"), (2000, 2100), 1)?;
        let root = CertifiedIssuer::self_signed(root_params, key()?).map_err(keystore)?;
        let intermediate_serial = 0x1000 + u64::from(name.len() as u32);
        let inter_params = ca_params(
            &format!("{name} intermediate"),
            (from_year, to_year),
            intermediate_serial,
        )?;
        let inter_key = key()?;
        let intermediate_der = inter_params
            .signed_by(&inter_key, &root)
            .map_err(keystore)?
            .der()
            .to_vec();
        Ok(Self {
            name: name.to_string(),
            root_der: root.der().to_vec(),
            intermediate: Issuer::new(inter_params, inter_key),
            intermediate_der,
            intermediate_serial,
        })
    }

    /// Write the CA to `dir` (created): `root.pem` (for an origin's `attestation.roots`),
    /// `root.der`, `intermediate.der`, `intermediate.key` (PKCS#8, mode 0600) and `ca.json`.
    /// The root's key is not kept: the CA only issues leaves from now on.
    pub fn save(&self, dir: &Path) -> Result<(), ProviderError> {
        let io = |e: std::io::Error| ProviderError::Keystore(format!("{}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(io)?;
        let state = |e: StateError| ProviderError::Keystore(e.to_string());
        write_atomic(&dir.join("root.der"), &self.root_der).map_err(state)?;
        write_atomic(&dir.join("root.pem"), self.root_pem().as_bytes()).map_err(state)?;
        write_atomic(&dir.join("intermediate.der"), &self.intermediate_der).map_err(state)?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(dir.join("intermediate.key")).map_err(io)?;
        std::io::Write::write_all(&mut file, self.intermediate.key().serialized_der())
            .map_err(io)?;
        file.sync_all().map_err(io)?;
        let ca = CaFile {
            name: self.name.clone(),
            intermediate_serial: self.intermediate_serial,
        };
        write_json(&dir.join("ca.json"), &ca).map_err(state)
    }

    /// Read a CA [`Self::save`] wrote (every file size-capped before it is read).
    pub fn load(dir: &Path) -> Result<Self, ProviderError> {
        let read = |name: &str| {
            read_bounded(&dir.join(name), MAX_CA_FILE)
                .map_err(|e| ProviderError::Keystore(e.to_string()))
        };
        let ca: CaFile = serde_json::from_slice(&read("ca.json")?).map_err(|e| {
            ProviderError::Keystore(format!("{}: {e}", dir.join("ca.json").display()))
        })?;
        let inter_key = KeyPair::try_from(read("intermediate.key")?).map_err(|e| {
            ProviderError::Keystore(format!("{}: {e}", dir.join("intermediate.key").display()))
        })?;
        // Only the name, key usages and key identifier method make an issuer; the validity
        // given here is not used.
        let inter_params = ca_params(
            &format!("{} intermediate", ca.name),
            (2000, 2100),
            ca.intermediate_serial,
        )?;
        Ok(Self {
            root_der: read("root.der")?,
            intermediate_der: read("intermediate.der")?,
            intermediate: Issuer::new(inter_params, inter_key),
            intermediate_serial: ca.intermediate_serial,
            name: ca.name,
        })
    }

    /// The root certificate, DER: what a test configures as its trust anchor.
    pub fn root_der(&self) -> Vec<u8> {
        self.root_der.clone()
    }

    /// The root as PEM text (for an origin's anchors file).
    pub fn root_pem(&self) -> String {
        let b64 = data_encoding::BASE64.encode(&self.root_der);
        let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
        out
    }

    /// The intermediate's serial number, as the status list writes it (lowercase hex).
    pub fn intermediate_serial_hex(&self) -> String {
        format!("{:x}", self.intermediate_serial)
    }
}

/// What a [`SoftwareProvider`] claims about the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceProperties {
    /// The keystore's claimed security level.
    pub security_level: SecurityLevel,
    /// The claimed verified boot state.
    pub boot_state: VerifiedBootState,
    /// Whether the bootloader is claimed locked.
    pub locked: bool,
    /// Claimed OS version.
    pub os_version: u64,
    /// Claimed OS patch level (YYYYMM).
    pub os_patch_level: u64,
    /// Claimed model (`attestationIdModel`), if any.
    pub model: Option<String>,
    /// Claimed key creation time, ms since the epoch.
    pub created_ms: u64,
}

impl Default for DeviceProperties {
    fn default() -> Self {
        Self {
            security_level: SecurityLevel::TrustedEnvironment,
            boot_state: VerifiedBootState::Verified,
            locked: true,
            os_version: 150_000,
            os_patch_level: 202_511,
            model: Some("enigm-one".into()),
            created_ms: 0,
        }
    }
}

/// The tests' evidence provider: issues a leaf under a [`SoftwareCa`].
#[derive(Debug, Clone)]
pub struct SoftwareProvider {
    ca: Arc<SoftwareCa>,
    /// What the leaf will claim.
    pub properties: DeviceProperties,
    /// The leaf's serial number.
    pub leaf_serial: u64,
}

impl SoftwareProvider {
    /// A provider issuing under `ca`, claiming `properties`.
    pub fn new(ca: Arc<SoftwareCa>, properties: DeviceProperties) -> Self {
        Self {
            ca,
            properties,
            leaf_serial: 0x2000,
        }
    }

    /// The KeyDescription this provider puts in its leaf for `challenge`.
    pub fn key_description(&self, challenge: &[u8]) -> KeyDescription {
        let p = &self.properties;
        KeyDescription {
            attestation_version: 300,
            attestation_security_level: p.security_level,
            keymint_version: 300,
            keymint_security_level: p.security_level,
            attestation_challenge: challenge.to_vec(),
            unique_id: Vec::new(),
            software_enforced: AuthorizationList {
                creation_date_time: Some(p.created_ms),
                ..AuthorizationList::default()
            },
            hardware_enforced: AuthorizationList {
                origin: Some(0),
                root_of_trust: Some(RootOfTrust {
                    verified_boot_key: vec![0x5a; 32],
                    device_locked: p.locked,
                    verified_boot_state: p.boot_state,
                    verified_boot_hash: Some(vec![0xa5; 32]),
                }),
                os_version: Some(p.os_version),
                os_patch_level: Some(p.os_patch_level),
                id_model: p.model.as_ref().map(|m| m.as_bytes().to_vec()),
                ..AuthorizationList::default()
            },
        }
    }

    /// Evidence over raw challenge bytes (tests use this to mount malformed challenges).
    pub fn evidence_over(&self, challenge: &[u8]) -> Result<Evidence, ProviderError> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(keystore)?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "Android Keystore Key");
        params.distinguished_name = name;
        params.not_before = date_time_ymd(1970, 1, 1);
        params.not_after = date_time_ymd(2048, 1, 1);
        params.serial_number = Some(SerialNumber::from(self.leaf_serial));
        let oid: Vec<u64> = KEY_DESCRIPTION_OID
            .split('.')
            .map(|arc| arc.parse().unwrap_or(0))
            .collect();
        params
            .custom_extensions
            .push(CustomExtension::from_oid_content(
                &oid,
                self.key_description(challenge).to_der(),
            ));
        let leaf = params
            .signed_by(&key()?, &self.ca.intermediate)
            .map_err(keystore)?;
        Ok(Evidence {
            chain: vec![
                leaf.der().to_vec(),
                self.ca.intermediate_der.clone(),
                self.ca.root_der.clone(),
            ],
        })
    }
}

impl EvidenceProvider for SoftwareProvider {
    fn evidence(&self, challenge: &AttestationChallenge) -> Result<Evidence, ProviderError> {
        self.evidence_over(&challenge.0)
    }
}

fn ca_params(
    common_name: &str,
    (from_year, to_year): (i32, i32),
    serial: u64,
) -> Result<CertificateParams, ProviderError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(keystore)?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = date_time_ymd(from_year, 1, 1);
    params.not_after = date_time_ymd(to_year, 1, 1);
    params.serial_number = Some(SerialNumber::from(serial));
    Ok(params)
}

fn key() -> Result<KeyPair, ProviderError> {
    KeyPair::generate().map_err(keystore)
}

fn keystore(error: rcgen::Error) -> ProviderError {
    ProviderError::Keystore(error.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use ota_core::attest::{AttestError, Requirements, StatusList, TrustAnchors, Verifier};
    use ota_core::director::CheckIn;
    use ota_core::time::UnixTime;

    use super::*;

    const NONCE: [u8; 32] = [7; 32];
    const EXPORTER: [u8; 32] = [9; 32];

    fn verify(root_der: &[u8], body: &[u8]) -> Result<(), AttestError> {
        let check_in: AttestedCheckIn = serde_json::from_slice(body).unwrap();
        let anchors = TrustAnchors::from_der(&[root_der]).unwrap();
        let now = UnixTime(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64,
        );
        Verifier {
            anchors: &anchors,
            status: &StatusList::default(),
            requirements: &Requirements::default(),
        }
        .verify(
            check_in.attestation.as_ref().unwrap(),
            &AttestationChallenge::bind(&NONCE, &DeviceHandle([1; 32]), &EXPORTER),
            now,
        )
        .map(|_| ())
    }

    #[test]
    fn a_saved_ca_issues_evidence_that_verifies_under_its_saved_root() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("ca");
        SoftwareCa::generate("fleet", 2000, 2100)
            .unwrap()
            .save(&dir)
            .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.join("intermediate.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let loaded = SoftwareCa::load(&dir).unwrap();
        assert_eq!(
            loaded.root_der(),
            std::fs::read(dir.join("root.der")).unwrap()
        );
        assert_eq!(
            loaded.root_pem(),
            std::fs::read_to_string(dir.join("root.pem")).unwrap()
        );

        let config = ProviderConfig::Software { ca: dir.clone() };
        let check_in = CheckIn {
            installed: Some(ReleaseNumber(2)),
        };
        let body =
            check_in_body(&config, check_in, &NONCE, &DeviceHandle([1; 32]), &EXPORTER).unwrap();
        verify(&loaded.root_der(), &body).unwrap();

        // Another CA's root does not anchor it.
        let other = SoftwareCa::generate("other", 2000, 2100).unwrap();
        assert_eq!(
            verify(&other.root_der(), &body).unwrap_err(),
            AttestError::UnknownRoot
        );

        // A CA directory that lost a file is the environment's fault, naming the directory.
        std::fs::remove_file(dir.join("intermediate.key")).unwrap();
        let err = check_in_body(
            &config,
            CheckIn { installed: None },
            &NONCE,
            &DeviceHandle([1; 32]),
            &EXPORTER,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("attestation provider:")
                && err.to_string().contains("intermediate.key"),
            "{err}"
        );
    }

    #[test]
    fn without_a_provider_the_body_is_the_plain_check_in() {
        let check_in = CheckIn {
            installed: Some(ReleaseNumber(5)),
        };
        let body = check_in_body(
            &ProviderConfig::None,
            check_in.clone(),
            &NONCE,
            &DeviceHandle([1; 32]),
            &EXPORTER,
        )
        .unwrap();
        assert_eq!(body, serde_json::to_vec(&check_in).unwrap());
    }

    #[test]
    fn the_provider_reads_back_from_device_json_fields() {
        let none: ProviderConfig = serde_json::from_str(r#"{"provider":"none"}"#).unwrap();
        assert!(none.is_none());
        let software: ProviderConfig =
            serde_json::from_str(r#"{"provider":"software","ca":"/x"}"#).unwrap();
        assert_eq!(software, ProviderConfig::Software { ca: "/x".into() });
        assert!(serde_json::from_str::<ProviderConfig>(r#"{"provider":"tpm"}"#).is_err());
    }
}
