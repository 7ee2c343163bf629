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
    DnType, IsCa, KeyPair, KeyUsagePurpose, SerialNumber, date_time_ymd,
};

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

/// A test certificate authority: a self-signed root and an intermediate it signs.
#[derive(Debug)]
pub struct SoftwareCa {
    root: CertifiedIssuer<'static, KeyPair>,
    intermediate: CertifiedIssuer<'static, KeyPair>,
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
        let intermediate =
            CertifiedIssuer::signed_by(inter_params, key()?, &root).map_err(keystore)?;
        Ok(Self {
            root,
            intermediate,
            intermediate_serial,
        })
    }

    /// The root certificate, DER: what a test configures as its trust anchor.
    pub fn root_der(&self) -> Vec<u8> {
        self.root.der().to_vec()
    }

    /// The root as PEM text (for an origin's anchors file).
    pub fn root_pem(&self) -> String {
        let b64 = data_encoding::BASE64.encode(self.root.der());
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
                self.ca.intermediate.der().to_vec(),
                self.ca.root.der().to_vec(),
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
