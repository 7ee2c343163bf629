//! Operator approvals: the dual control of the release authority.
//!
//! An approval is one operator's signature, with their own key (on their own token), over the
//! role, the request's digest (SHA-256 of its canonical signed bytes, [`RequestDigest`]), the
//! request's version (for the reader; the digest already fixes it), when it was given and when
//! it expires:
//!
//! ```json
//! { "signed": { "_type": "x-enigm-approval", "role": "release",
//!               "request": "<sha256 hex>", "version": 7,
//!               "approved": "2026-11-23T10:00:00Z", "expires": "2026-11-23T18:00:00Z" },
//!   "signature": { "keyid": "<operator key id>", "sig": "<hex>" } }
//! ```
//!
//! The signature covers `"ota-sign approval v1\n"` followed by the canonical JSON of `signed`:
//! the prefix keeps approval signatures apart from metadata and audit signatures. Before a role
//! key under dual control signs, [`check`] requires at least the policy's number of approvals,
//! each by a distinct, unrevoked operator of the policy, each valid, unexpired, no longer-lived
//! than the policy allows, for this role and this exact request. An approval for another
//! request (even another version of the same metadata) is refused, never skipped, so a mix-up
//! is visible.

use ota_core::time::UnixTime;
use ota_core::tuf::canonical::to_canonical;
use ota_core::tuf::metadata::Signature;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::backend::{BackendError, SigningKey};
use crate::policy::Policy;
use crate::refusal::Refusal;
use crate::request::RequestDigest;
use crate::roles::SignRole;

/// `_type` of an approval.
pub const APPROVAL_TYPE: &str = "x-enigm-approval";
/// Domain-separation prefix of the signed message.
pub const APPROVAL_CONTEXT: &[u8] = b"ota-sign approval v1\n";
/// Largest approval file read.
pub const MAX_APPROVAL_LEN: u64 = 64 * 1024;
/// Clock skew tolerated between the approving and the signing station.
pub const MAX_SKEW_SECS: i64 = 300;

/// What an operator approves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalBody {
    /// Always [`APPROVAL_TYPE`].
    #[serde(rename = "_type")]
    pub type_: String,
    /// The role whose key may sign.
    pub role: SignRole,
    /// The request approved.
    pub request: RequestDigest,
    /// The request's metadata version, for people.
    pub version: u64,
    /// When it was given.
    pub approved: UnixTime,
    /// When it stops counting.
    pub expires: UnixTime,
}

/// An approval file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// What was approved.
    pub signed: ApprovalBody,
    /// The operator's signature.
    pub signature: Signature,
}

/// An approval that counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Counted {
    /// The operator's name in the policy.
    pub operator: String,
    /// When it expires.
    pub expires: UnixTime,
    /// SHA-256 of the approval's message, to find it in the log.
    pub digest: String,
}

impl Approval {
    /// Approve `request` for `role` with the operator's `key`, valid for `valid_secs`.
    pub fn create(
        key: &mut dyn SigningKey,
        role: SignRole,
        request: RequestDigest,
        version: u64,
        now: UnixTime,
        valid_secs: i64,
    ) -> Result<Self, BackendError> {
        let signed = ApprovalBody {
            type_: APPROVAL_TYPE.into(),
            role,
            request,
            version,
            approved: now,
            expires: now.plus_secs(valid_secs),
        };
        let sig = key.sign(&message(&signed))?;
        Ok(Self {
            signed,
            signature: Signature {
                keyid: key.public().key_id(),
                sig: hex::encode(sig),
            },
        })
    }

    /// Parse an approval file.
    pub fn parse(bytes: &[u8]) -> Result<Self, Refusal> {
        let bad = |reason: String| Refusal::BadApproval { reason };
        if bytes.len() as u64 > MAX_APPROVAL_LEN {
            return Err(bad(format!("larger than {MAX_APPROVAL_LEN} bytes")));
        }
        let approval: Self = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if approval.signed.type_ != APPROVAL_TYPE {
            return Err(bad(format!("_type is not {APPROVAL_TYPE}")));
        }
        Ok(approval)
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self)
            .unwrap_or_else(|_| unreachable!("an approval serialises"));
        out.push(b'\n');
        out
    }

    /// SHA-256 of the signed message.
    pub fn digest(&self) -> String {
        hex::encode(sha2::Sha256::digest(message(&self.signed)))
    }
}

fn message(body: &ApprovalBody) -> Vec<u8> {
    let canonical =
        to_canonical(body).unwrap_or_else(|_| unreachable!("an approval holds no floats"));
    [APPROVAL_CONTEXT, &canonical].concat()
}

/// Check `approvals` for signing `request` as `role` at `now` under `policy`.
pub fn check(
    policy: &Policy,
    role: SignRole,
    request: RequestDigest,
    approvals: &[Approval],
    now: UnixTime,
) -> Result<Vec<Counted>, Refusal> {
    let needed = policy.roles.get(&role).map_or(0, |r| r.approvals);
    let mut counted: Vec<Counted> = Vec::new();
    for approval in approvals {
        let keyid = &approval.signature.keyid;
        let (name, operator) = policy
            .operators
            .iter()
            .find(|(_, op)| op.key.key_id() == *keyid)
            .ok_or_else(|| Refusal::UnknownOperator {
                keyid: keyid.to_string(),
            })?;
        let valid = hex::decode(&approval.signature.sig)
            .is_ok_and(|sig| operator.key.verify(&message(&approval.signed), &sig));
        if !valid {
            return Err(Refusal::BadApproval {
                reason: format!("the signature of operator {name}'s approval does not verify"),
            });
        }
        if let Some(revoked) = operator.revoked
            && now >= revoked
        {
            return Err(Refusal::OperatorRevoked {
                operator: name.clone(),
                revoked,
            });
        }
        let body = &approval.signed;
        if body.role != role {
            return Err(Refusal::ApprovalForAnotherRole {
                operator: name.clone(),
                approved: body.role,
                role,
            });
        }
        if body.request != request {
            return Err(Refusal::ApprovalForAnotherRequest {
                operator: name.clone(),
                approved: body.request,
                request,
            });
        }
        if now >= body.expires {
            return Err(Refusal::ApprovalExpired {
                operator: name.clone(),
                expires: body.expires,
                now,
            });
        }
        if body.approved > now.plus_secs(MAX_SKEW_SECS) {
            return Err(Refusal::BadApproval {
                reason: format!(
                    "operator {name}'s approval is dated {}, in the future",
                    body.approved
                ),
            });
        }
        let lifetime = body.expires.0.saturating_sub(body.approved.0);
        let max = i64::try_from(policy.approval_max_hours)
            .unwrap_or(i64::MAX)
            .saturating_mul(3600);
        if lifetime > max {
            return Err(Refusal::ApprovalTooLong {
                operator: name.clone(),
                hours: lifetime / 3600,
                max_hours: policy.approval_max_hours,
            });
        }
        if counted.iter().any(|c| c.operator == *name) {
            return Err(Refusal::DuplicateApproval {
                operator: name.clone(),
            });
        }
        counted.push(Counted {
            operator: name.clone(),
            expires: body.expires,
            digest: approval.digest(),
        });
    }
    if (counted.len() as u64) < needed {
        return Err(Refusal::TooFewApprovals {
            role,
            have: counted.len() as u64,
            needed,
        });
    }
    Ok(counted)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ota_core::tuf::{InMemoryKey, Key};

    use super::*;
    use crate::policy::{Operator, RolePolicy};

    #[derive(Debug)]
    struct K(InMemoryKey, Key, crate::keyref::KeyRef);
    impl SigningKey for K {
        fn public(&self) -> &Key {
            &self.1
        }
        fn reference(&self) -> &crate::keyref::KeyRef {
            &self.2
        }
        fn sign(&mut self, msg: &[u8]) -> Result<Vec<u8>, BackendError> {
            Ok(self.0.sign(msg))
        }
    }

    fn operator(seed: u8) -> K {
        let k = InMemoryKey::p256_from_scalar([seed; 32]).unwrap();
        let p = k.public();
        K(k, p, crate::keyref::KeyRef::File("t".into()))
    }

    const NOW: UnixTime = UnixTime(1_800_000_000);
    const REQ: RequestDigest = RequestDigest([7; 32]);

    fn policy(ops: &[(&str, &K)]) -> Policy {
        Policy {
            operators: ops
                .iter()
                .map(|(n, k)| {
                    (
                        n.to_string(),
                        Operator {
                            key: k.1.clone(),
                            revoked: None,
                        },
                    )
                })
                .collect(),
            roles: BTreeMap::from([(
                SignRole::Release,
                RolePolicy {
                    max_expiry_days: 30,
                    approvals: 2,
                },
            )]),
            approval_max_hours: 8,
        }
    }

    fn approve(k: &mut K, request: RequestDigest, at: UnixTime, secs: i64) -> Approval {
        Approval::create(k, SignRole::Release, request, 3, at, secs).unwrap()
    }

    #[test]
    fn two_distinct_fresh_approvals_count() {
        let (mut a, mut b) = (operator(1), operator(2));
        let p = policy(&[("alice", &a), ("bob", &b)]);
        let approvals = [
            approve(&mut a, REQ, NOW, 3600),
            approve(&mut b, REQ, NOW, 3600),
        ];
        let counted = check(&p, SignRole::Release, REQ, &approvals, NOW.plus_secs(10)).unwrap();
        assert_eq!(
            counted
                .iter()
                .map(|c| c.operator.as_str())
                .collect::<Vec<_>>(),
            ["alice", "bob"]
        );
        // Round trip through the file form.
        let back = Approval::parse(&approvals[0].to_bytes()).unwrap();
        assert_eq!(back, approvals[0]);
    }

    #[test]
    fn each_refusal_names_its_reason() {
        let (mut a, mut b, mut c) = (operator(1), operator(2), operator(3));
        let p = policy(&[("alice", &a), ("bob", &b)]);
        let run = |approvals: &[Approval], now| check(&p, SignRole::Release, REQ, approvals, now);

        let other = RequestDigest([8; 32]);
        let err = run(
            &[
                approve(&mut a, other, NOW, 60),
                approve(&mut b, REQ, NOW, 60),
            ],
            NOW,
        )
        .unwrap_err();
        assert!(
            matches!(err, Refusal::ApprovalForAnotherRequest { ref operator, .. } if operator == "alice")
        );

        let err = run(
            &[approve(&mut a, REQ, NOW, 60), approve(&mut b, REQ, NOW, 60)],
            NOW.plus_secs(60),
        )
        .unwrap_err();
        assert!(matches!(err, Refusal::ApprovalExpired { .. }), "{err}");

        let err = run(
            &[
                approve(&mut a, REQ, NOW, 60),
                approve(&mut a, REQ, NOW, 120),
            ],
            NOW,
        )
        .unwrap_err();
        assert_eq!(
            err,
            Refusal::DuplicateApproval {
                operator: "alice".into()
            }
        );

        let err = run(&[approve(&mut a, REQ, NOW, 60)], NOW).unwrap_err();
        assert_eq!(
            err,
            Refusal::TooFewApprovals {
                role: SignRole::Release,
                have: 1,
                needed: 2
            }
        );

        let err = run(&[approve(&mut c, REQ, NOW, 60)], NOW).unwrap_err();
        assert!(matches!(err, Refusal::UnknownOperator { .. }), "{err}");

        let err = run(&[approve(&mut a, REQ, NOW, 9 * 3600)], NOW).unwrap_err();
        assert!(matches!(err, Refusal::ApprovalTooLong { .. }), "{err}");

        let mut forged = approve(&mut a, REQ, NOW, 60);
        forged.signed.expires = NOW.plus_secs(7200);
        let err = run(&[forged], NOW).unwrap_err();
        assert!(matches!(err, Refusal::BadApproval { .. }), "{err}");

        let mut revoked = policy(&[("alice", &a), ("bob", &b)]);
        revoked.operators.get_mut("alice").unwrap().revoked = Some(NOW);
        let err = check(
            &revoked,
            SignRole::Release,
            REQ,
            &[approve(&mut a, REQ, NOW, 60)],
            NOW,
        )
        .unwrap_err();
        assert!(matches!(err, Refusal::OperatorRevoked { .. }), "{err}");
    }
}
