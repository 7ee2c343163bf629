//! Keys on PKCS#11 tokens, through `cryptoki`.
//!
//! Opening a key: load the module, find the one initialised token the URI selects, check the
//! user PIN is not locked, log in, find the one private key the URI selects (`object=` label
//! and/or `id=`), and read its public twin's `CKA_EC_POINT` (SoftHSM and most modules wrap it
//! in a DER OCTET STRING; a raw point is accepted too) and `CKA_EC_PARAMS` (Ed25519:
//! OID 1.3.101.112 or the PrintableString `edwards25519`; P-256: OID 1.2.840.10045.3.1.7).
//!
//! Generating a key: `CKM_EC_EDWARDS_KEY_PAIR_GEN` or `CKM_EC_KEY_PAIR_GEN` on the token, the
//! private key `CKA_TOKEN`, `CKA_PRIVATE`, `CKA_SENSITIVE`, not `CKA_EXTRACTABLE`, sign only.
//! The attributes are read back after generation; a token that ignored the template gets its
//! key destroyed and the generation refused.

use std::path::Path;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::object::{
    Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass, ObjectHandle,
};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use ota_core::tuf::Key;
use sha2::Digest as _;

use super::{BackendError, PinSource, Scheme, SigningKey, checked};
use crate::keyref::{KeyRef, Pkcs11Uri};

/// DER of OID 1.3.101.112 (Ed25519).
const OID_ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
/// DER PrintableString "edwards25519" (the PKCS#11 3.0 alternative form).
const NAME_ED25519: &[u8] = b"\x13\x0cedwards25519";
/// DER of OID 1.2.840.10045.3.1.7 (P-256).
const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// A private key on a token, with a logged-in session.
#[derive(Debug)]
pub struct Pkcs11Key {
    session: Session,
    handle: ObjectHandle,
    scheme: Scheme,
    public: Key,
    reference: KeyRef,
    token: String,
}

/// What the token says about a private key's protection (`ota-sign key show`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Protection {
    /// `CKA_SENSITIVE`.
    pub sensitive: bool,
    /// `CKA_EXTRACTABLE`.
    pub extractable: bool,
    /// `CKA_ALWAYS_SENSITIVE`: sensitive since it was created.
    pub always_sensitive: bool,
    /// `CKA_NEVER_EXTRACTABLE`: never extractable since it was created.
    pub never_extractable: bool,
    /// `CKA_LOCAL`: generated on the token.
    pub local: bool,
    /// Whether the token refuses to reveal `CKA_VALUE` (the private scalar).
    pub value_unreadable: bool,
}

impl Pkcs11Key {
    /// Open the key `uri` names, logging in with a PIN from `pins`.
    pub fn open(uri: &Pkcs11Uri, pins: &PinSource) -> Result<Self, BackendError> {
        let ctx = load_module(uri)?;
        let (slot, token) = find_token(&ctx, uri)?;
        let session = login(&ctx, slot, &token, pins, false)?;
        let object = object_description(uri);
        let mut template = vec![Attribute::Class(ObjectClass::PRIVATE_KEY)];
        template.extend(object_template(uri));
        let handles = session
            .find_objects(&template)
            .map_err(|e| ck("C_FindObjects", &e))?;
        let handle = match handles.as_slice() {
            [h] => *h,
            [] => {
                return Err(BackendError::KeyNotFound { token, object });
            }
            many => {
                return Err(BackendError::KeyAmbiguous {
                    token,
                    object,
                    count: many.len(),
                });
            }
        };
        let (scheme, public) = public_key(&session, handle, uri)?;
        Ok(Self {
            session,
            handle,
            scheme,
            public,
            reference: KeyRef::Pkcs11(uri.clone()),
            token,
        })
    }

    /// Generate a key pair on the token `token_label` of `module`, labelled `label`; the
    /// private key is sensitive and not extractable. Returns the opened key.
    pub fn generate(
        module: &Path,
        token_label: &str,
        label: &str,
        scheme: Scheme,
        pins: &PinSource,
    ) -> Result<Self, BackendError> {
        let uri = Pkcs11Uri::for_key(module.to_path_buf(), token_label, label);
        let ctx = load_module(&uri)?;
        let (slot, token) = find_token(&ctx, &uri)?;
        let session = login(&ctx, slot, &token, pins, true)?;
        let existing = session
            .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
            .map_err(|e| ck("C_FindObjects", &e))?;
        if !existing.is_empty() {
            return Err(BackendError::KeyExists {
                token,
                label: label.into(),
            });
        }
        let (mechanism, params) = match scheme {
            Scheme::Ed25519 => (Mechanism::EccEdwardsKeyPairGen, OID_ED25519),
            Scheme::P256 => (Mechanism::EccKeyPairGen, OID_P256),
        };
        // The key's CKA_ID: a hash of the label, so the pair is found by either.
        let id = sha2::Sha256::digest(label.as_bytes())[..16].to_vec();
        let public_template = [
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::EcParams(params.to_vec()),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.clone()),
        ];
        let private_template = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Decrypt(false),
            Attribute::Derive(false),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id),
        ];
        let (public_handle, private_handle) = session
            .generate_key_pair(&mechanism, &public_template, &private_template)
            .map_err(|e| ck("C_GenerateKeyPair", &e))?;
        let protection = protection(&session, private_handle)?;
        if !protection.sensitive || protection.extractable || !protection.value_unreadable {
            let _ = session.destroy_object(private_handle);
            let _ = session.destroy_object(public_handle);
            return Err(BackendError::KeyNotProtected {
                token,
                reason: format!("{protection:?}"),
            });
        }
        drop(session);
        Self::open(&uri, pins)
    }

    /// The private key's protection attributes as the token reports them.
    pub fn protection(&self) -> Result<Protection, BackendError> {
        protection(&self.session, self.handle)
    }

    /// The token's label.
    pub fn token(&self) -> &str {
        &self.token
    }
}

impl SigningKey for Pkcs11Key {
    fn public(&self) -> &Key {
        &self.public
    }

    fn reference(&self) -> &KeyRef {
        &self.reference
    }

    fn sign(&mut self, msg: &[u8]) -> Result<Vec<u8>, BackendError> {
        let sig = match self.scheme {
            Scheme::Ed25519 => {
                let mechanism = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
                self.session
                    .sign(&mechanism, self.handle, msg)
                    .map_err(|e| ck("C_Sign (CKM_EDDSA)", &e))?
            }
            Scheme::P256 => {
                let digest = sha2::Sha256::digest(msg);
                let raw = self
                    .session
                    .sign(&Mechanism::Ecdsa, self.handle, &digest)
                    .map_err(|e| ck("C_Sign (CKM_ECDSA)", &e))?;
                let sig =
                    p256::ecdsa::Signature::from_slice(&raw).map_err(|_| BackendError::Pkcs11 {
                        operation: "C_Sign (CKM_ECDSA)",
                        reason: format!("{} bytes is not an r||s P-256 signature", raw.len()),
                    })?;
                sig.to_der().as_bytes().to_vec()
            }
        };
        checked(&self.public, msg, sig)
    }
}

fn ck(operation: &'static str, e: &CkError) -> BackendError {
    BackendError::Pkcs11 {
        operation,
        reason: e.to_string(),
    }
}

fn load_module(uri: &Pkcs11Uri) -> Result<Pkcs11, BackendError> {
    let path = uri.module().ok_or(BackendError::NoModule)?;
    let shown = path.display().to_string();
    if !path.exists() {
        return Err(BackendError::ModuleMissing { path: shown });
    }
    let ctx = Pkcs11::new(&path).map_err(|e| BackendError::ModuleLoad {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(ctx),
        Err(e) => Err(BackendError::ModuleLoad {
            path: shown,
            reason: e.to_string(),
        }),
    }
}

fn find_token(ctx: &Pkcs11, uri: &Pkcs11Uri) -> Result<(Slot, String), BackendError> {
    let selection = uri.token_description();
    let slots = ctx
        .get_slots_with_token()
        .map_err(|e| ck("C_GetSlotList", &e))?;
    let mut matches = Vec::new();
    let mut labels = Vec::new();
    let mut uninitialised = 0;
    for slot in slots {
        let info = ctx
            .get_token_info(slot)
            .map_err(|e| ck("C_GetTokenInfo", &e))?;
        if !info.token_initialized() {
            uninitialised += 1;
            continue;
        }
        let label = info.label().trim_end().to_string();
        labels.push(label.clone());
        let fits = |want: &Option<String>, have: &str| {
            want.as_ref()
                .is_none_or(|w| w.trim_end() == have.trim_end())
        };
        if fits(&uri.token, &label)
            && fits(&uri.serial, info.serial_number())
            && fits(&uri.manufacturer, info.manufacturer_id())
            && fits(&uri.model, info.model())
            && uri.slot_id.is_none_or(|s| s == slot.id())
        {
            matches.push((slot, label));
        }
    }
    match matches.len() {
        1 => Ok(matches.remove(0)),
        0 if labels.is_empty() && uninitialised > 0 => Err(BackendError::TokenNotInitialised {
            selection,
            uninitialised,
        }),
        0 => Err(BackendError::TokenNotFound {
            selection,
            available: if labels.is_empty() {
                "none".into()
            } else {
                labels.join(", ")
            },
        }),
        count => Err(BackendError::TokenAmbiguous { selection, count }),
    }
}

fn login(
    ctx: &Pkcs11,
    slot: Slot,
    token: &str,
    pins: &PinSource,
    read_write: bool,
) -> Result<Session, BackendError> {
    let info = ctx
        .get_token_info(slot)
        .map_err(|e| ck("C_GetTokenInfo", &e))?;
    if info.user_pin_locked() {
        return Err(BackendError::PinLocked {
            token: token.into(),
        });
    }
    if !info.user_pin_initialized() {
        return Err(BackendError::TokenNotInitialised {
            selection: format!("token={token} (no user PIN set)"),
            uninitialised: 1,
        });
    }
    let session = if read_write {
        ctx.open_rw_session(slot)
    } else {
        ctx.open_ro_session(slot)
    }
    .map_err(|e| ck("C_OpenSession", &e))?;
    let pin = AuthPin::from(pins.pin(token)?);
    match session.login(UserType::User, Some(&pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
        Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinLenRange, _)) => {
            let after = ctx.get_token_info(slot).ok();
            if after.as_ref().is_some_and(|i| i.user_pin_locked()) {
                return Err(BackendError::PinLocked {
                    token: token.into(),
                });
            }
            Err(BackendError::PinIncorrect {
                token: token.into(),
                final_try: after.is_some_and(|i| i.user_pin_final_try()),
            })
        }
        Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(BackendError::PinLocked {
            token: token.into(),
        }),
        Err(CkError::Pkcs11(RvError::UserPinNotInitialized, _)) => {
            Err(BackendError::TokenNotInitialised {
                selection: format!("token={token} (no user PIN set)"),
                uninitialised: 1,
            })
        }
        Err(e) => Err(ck("C_Login", &e)),
    }
}

fn object_template(uri: &Pkcs11Uri) -> Vec<Attribute> {
    let mut template = Vec::new();
    if let Some(label) = &uri.object {
        template.push(Attribute::Label(label.as_bytes().to_vec()));
    }
    if let Some(id) = &uri.id {
        template.push(Attribute::Id(id.clone()));
    }
    template
}

fn object_description(uri: &Pkcs11Uri) -> String {
    match (&uri.object, &uri.id) {
        (Some(l), Some(id)) => format!("object={l};id={}", hex::encode(id)),
        (Some(l), None) => format!("object={l}"),
        (None, Some(id)) => format!("id={}", hex::encode(id)),
        (None, None) => "any object".into(),
    }
}

/// The scheme and TUF public key of the private key `handle`, from its public twin.
fn public_key(
    session: &Session,
    handle: ObjectHandle,
    uri: &Pkcs11Uri,
) -> Result<(Scheme, Key), BackendError> {
    let attrs = session
        .get_attributes(
            handle,
            &[
                AttributeType::KeyType,
                AttributeType::EcParams,
                AttributeType::Id,
            ],
        )
        .map_err(|e| ck("C_GetAttributeValue", &e))?;
    let mut key_type = None;
    let mut params = None;
    let mut id = None;
    for attr in attrs {
        match attr {
            Attribute::KeyType(t) => key_type = Some(t),
            Attribute::EcParams(p) => params = Some(p),
            Attribute::Id(i) if !i.is_empty() => id = Some(i),
            _ => {}
        }
    }
    let scheme = match (key_type, params.as_deref()) {
        (Some(t), Some(p))
            if t == KeyType::EC_EDWARDS && (p == OID_ED25519 || p == NAME_ED25519) =>
        {
            Scheme::Ed25519
        }
        (Some(t), Some(OID_P256)) if t == KeyType::EC => Scheme::P256,
        (t, p) => {
            return Err(BackendError::UnsupportedKey {
                reason: format!(
                    "key type {t:?} with EC parameters {}: only Ed25519 and P-256 sign",
                    p.map_or_else(|| "none".into(), hex::encode)
                ),
            });
        }
    };
    // The public twin: same CKA_ID if the private key has one, else the same label.
    let mut template = vec![Attribute::Class(ObjectClass::PUBLIC_KEY)];
    match (&id, &uri.object) {
        (Some(id), _) => template.push(Attribute::Id(id.clone())),
        (None, Some(label)) => template.push(Attribute::Label(label.as_bytes().to_vec())),
        (None, None) => template.extend(object_template(uri)),
    }
    let handles = session
        .find_objects(&template)
        .map_err(|e| ck("C_FindObjects", &e))?;
    let [public] = handles.as_slice() else {
        return Err(BackendError::UnsupportedKey {
            reason: format!(
                "{} public key objects match the private key; exactly one is needed to read \
                 its public value",
                handles.len()
            ),
        });
    };
    let point = session
        .get_attributes(*public, &[AttributeType::EcPoint])
        .map_err(|e| ck("C_GetAttributeValue", &e))?
        .into_iter()
        .find_map(|a| match a {
            Attribute::EcPoint(p) => Some(p),
            _ => None,
        })
        .ok_or_else(|| BackendError::UnsupportedKey {
            reason: "public key has no CKA_EC_POINT".into(),
        })?;
    let key = tuf_key(scheme, &point)?;
    Ok((scheme, key))
}

/// The TUF key for a `CKA_EC_POINT` value (raw, or wrapped in a DER OCTET STRING).
fn tuf_key(scheme: Scheme, point: &[u8]) -> Result<Key, BackendError> {
    let bad = |why: &str| BackendError::UnsupportedKey {
        reason: format!("CKA_EC_POINT of {} bytes: {why}", point.len()),
    };
    match scheme {
        Scheme::Ed25519 => {
            let raw = match point {
                [0x04, 0x20, rest @ ..] if rest.len() == 32 => rest,
                raw if raw.len() == 32 => raw,
                _ => return Err(bad("not a 32-byte Ed25519 key")),
            };
            let mut bytes = [0u8; 32];
            bytes.copy_from_slice(raw);
            let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                .map_err(|_| bad("not a valid Ed25519 point"))?;
            Ok(Key::ed25519(key))
        }
        Scheme::P256 => {
            let sec1 = match point {
                [0x04, len, rest @ ..]
                    if usize::from(*len) == rest.len()
                        && (rest.len() == 65 || rest.len() == 33) =>
                {
                    rest
                }
                raw if raw.len() == 65 || raw.len() == 33 => raw,
                _ => return Err(bad("not a P-256 point")),
            };
            let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(sec1)
                .map_err(|_| bad("not a valid P-256 point"))?;
            Ok(Key::ecdsa_p256(key))
        }
    }
}

fn protection(session: &Session, handle: ObjectHandle) -> Result<Protection, BackendError> {
    let attrs = session
        .get_attributes(
            handle,
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::AlwaysSensitive,
                AttributeType::NeverExtractable,
                AttributeType::Local,
            ],
        )
        .map_err(|e| ck("C_GetAttributeValue", &e))?;
    let mut p = Protection {
        sensitive: false,
        extractable: true,
        always_sensitive: false,
        never_extractable: false,
        local: false,
        value_unreadable: false,
    };
    for attr in attrs {
        match attr {
            Attribute::Sensitive(v) => p.sensitive = v,
            Attribute::Extractable(v) => p.extractable = v,
            Attribute::AlwaysSensitive(v) => p.always_sensitive = v,
            Attribute::NeverExtractable(v) => p.never_extractable = v,
            Attribute::Local(v) => p.local = v,
            _ => {}
        }
    }
    let value = session
        .get_attribute_info(handle, &[AttributeType::Value])
        .map_err(|e| ck("C_GetAttributeValue", &e))?;
    p.value_unreadable = matches!(
        value.as_slice(),
        [AttributeInfo::Sensitive | AttributeInfo::Unavailable | AttributeInfo::TypeInvalid]
    );
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_points_wrapped_or_raw() {
        let ed = ed25519_dalek::SigningKey::from_bytes(&[3; 32]).verifying_key();
        let raw = ed.as_bytes().to_vec();
        let wrapped = [&[0x04, 0x20][..], &raw].concat();
        let want = Key::ed25519(ed).key_id();
        assert_eq!(tuf_key(Scheme::Ed25519, &raw).unwrap().key_id(), want);
        assert_eq!(tuf_key(Scheme::Ed25519, &wrapped).unwrap().key_id(), want);
        assert!(tuf_key(Scheme::Ed25519, &raw[..31]).is_err());

        let p = p256::ecdsa::SigningKey::from_bytes(&[5u8; 32].into()).unwrap();
        let point = p
            .verifying_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec();
        let wrapped = [&[0x04, 0x41][..], &point].concat();
        let want = Key::ecdsa_p256(*p.verifying_key()).key_id();
        assert_eq!(tuf_key(Scheme::P256, &point).unwrap().key_id(), want);
        assert_eq!(tuf_key(Scheme::P256, &wrapped).unwrap().key_id(), want);
        assert!(tuf_key(Scheme::P256, &wrapped[..40]).is_err());
    }
}
