//! The audit log: hash-chained JSON lines, each entry signed by its actor's key.
//!
//! One entry per line (`audit.jsonl` in the station directory):
//!
//! ```json
//! {"seq":7,"time":"2026-11-23T10:04:00Z","actor":"<key id>","actor_key":{TUF key},
//!  "action":"signature","details":{…},"prev":"<hash of entry 6>","hash":"<hash>","sig":"<hex>"}
//! ```
//!
//! - `seq` counts from 1 with no gap; `prev` is the `hash` of the entry before (64 zeros for
//!   the first);
//! - the *message* of an entry is `"ota-sign audit entry v1\n"` followed by the canonical JSON
//!   of `{seq, time, actor, actor_key, action, details, prev}`; `hash` is its SHA-256 and `sig`
//!   the actor key's signature over it. The prefix can never begin canonical JSON, so an
//!   audit signature can never pass for a metadata signature, whatever key made it;
//! - `action` is `request`, `approval`, `signature`, `refusal` or `ceremony` (the signing
//!   station), or `transition` (the origin's release lifecycle: the origin writes its own
//!   log in the same format, signed by its audit key).
//!
//! [`verify`] names each problem: an entry changed (content no longer matches its hash),
//! changed and re-hashed (its signature fails, and the next entry's `prev` no longer matches),
//! removed (a gap in `seq`; at the end, the station's recorded head is missing), reordered
//! (`seq` goes down), or appended by someone else (a valid entry signed by a key that is
//! neither an operator in the policy nor a key of an installed root, or by an operator after
//! their revocation).
//!
//! Only an unlocked key can sign an entry: failures before a key is unlocked (wrong PIN,
//! missing token, a file key refused for an offline role) are reported to the operator and not
//! logged; an unsigned entry would be indistinguishable from a forgery. The token's own retry
//! counter bounds PIN guessing.

use std::fmt;
use std::io::Write as _;
use std::path::Path;

use ota_core::time::UnixTime;
use ota_core::tuf::canonical::to_canonical;
use ota_core::tuf::{Key, KeyId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Digest as _;

use crate::backend::{BackendError, SigningKey};
use crate::roles::key_identity;

/// The domain-separation prefix of an entry's message.
pub const ENTRY_CONTEXT: &[u8] = b"ota-sign audit entry v1\n";

/// `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Largest log read.
pub const MAX_LOG_LEN: u64 = 1 << 30;

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// A signing request was presented.
    Request,
    /// An operator approved a request.
    Approval,
    /// A key signed metadata.
    Signature,
    /// The tool refused a request, an approval or a ceremony step.
    Refusal,
    /// A ceremony step: root created, rotated or installed, key generated.
    Ceremony,
    /// A release lifecycle step at the origin: created, registered, validated, promoted,
    /// halted (by an operator or the health gate), resumed, revoked.
    Transition,
}

/// The last entry of the log: its sequence number and hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Head {
    /// `seq` of the last entry.
    pub seq: u64,
    /// `hash` of the last entry.
    pub hash: String,
}

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Position, from 1.
    pub seq: u64,
    /// When it was written.
    pub time: UnixTime,
    /// The actor's key id.
    pub actor: KeyId,
    /// The actor's public key.
    pub actor_key: Key,
    /// What happened.
    pub action: Action,
    /// Action-specific details.
    pub details: Value,
    /// The hash of the entry before.
    pub prev: String,
    /// SHA-256 of the entry's message.
    pub hash: String,
    /// The actor's signature over the message, hex.
    pub sig: String,
}

impl Entry {
    /// Make and sign entry `seq` after `prev`.
    pub fn seal(
        seq: u64,
        time: UnixTime,
        key: &mut dyn SigningKey,
        action: Action,
        details: Value,
        prev: &str,
    ) -> Result<Self, BackendError> {
        let mut entry = Self {
            seq,
            time,
            actor: key.public().key_id(),
            actor_key: key.public().clone(),
            action,
            details,
            prev: prev.into(),
            hash: String::new(),
            sig: String::new(),
        };
        let message = entry.message();
        entry.hash = hex::encode(sha2::Sha256::digest(&message));
        entry.sig = hex::encode(key.sign(&message)?);
        Ok(entry)
    }

    /// The bytes hashed and signed.
    pub fn message(&self) -> Vec<u8> {
        let body = serde_json::json!({
            "seq": self.seq,
            "time": self.time,
            "actor": self.actor,
            "actor_key": self.actor_key,
            "action": self.action,
            "details": self.details,
            "prev": self.prev,
        });
        let canonical = to_canonical(&body).unwrap_or_default();
        [ENTRY_CONTEXT, &canonical].concat()
    }

    /// The head this entry makes.
    pub fn head(&self) -> Head {
        Head {
            seq: self.seq,
            hash: self.hash.clone(),
        }
    }

    /// The entry as one line (no newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| unreachable!("an entry serialises"))
    }
}

/// Append `entry` to the log at `path` as one line, synced before returning.
pub fn append(path: &Path, entry: &Entry) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut line = entry.to_line().into_bytes();
    line.push(b'\n');
    file.write_all(&line)?;
    file.sync_data()
}

/// The keys allowed to write entries, for [`verify`].
#[derive(Debug, Clone, Default)]
pub struct KnownActors {
    actors: Vec<Actor>,
}

#[derive(Debug, Clone)]
struct Actor {
    identity: Vec<u8>,
    name: String,
    revoked: Option<UnixTime>,
}

impl KnownActors {
    /// Allow `key` (described as `name`), until `revoked` if given.
    pub fn add(&mut self, key: &Key, name: &str, revoked: Option<UnixTime>) {
        if let Some(identity) = key_identity(key) {
            self.actors.push(Actor {
                identity,
                name: name.into(),
                revoked,
            });
        }
    }

    fn find(&self, key: &Key) -> Vec<&Actor> {
        let Some(identity) = key_identity(key) else {
            return Vec::new();
        };
        self.actors
            .iter()
            .filter(|a| a.identity == identity)
            .collect()
    }
}

/// One thing wrong with a log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// A line is not an entry.
    Unreadable {
        /// 1-based line number.
        line: usize,
        /// The parser's reason.
        reason: String,
    },
    /// Entries are missing between two present ones (or before the first).
    Removed {
        /// First missing seq.
        first: u64,
        /// Last missing seq.
        last: u64,
    },
    /// An entry appears after one with a higher seq.
    Reordered {
        /// The entry out of place.
        seq: u64,
        /// The higher seq it follows.
        after: u64,
    },
    /// Two entries claim one seq.
    Duplicated {
        /// The seq.
        seq: u64,
    },
    /// An entry's `prev` does not match the entry before it.
    ChainBroken {
        /// The entry.
        seq: u64,
    },
    /// An entry's content does not match its hash.
    Changed {
        /// The entry.
        seq: u64,
    },
    /// An entry's signature does not verify under its key.
    BadSignature {
        /// The entry.
        seq: u64,
    },
    /// An entry's actor id is not its key's id.
    ActorMismatch {
        /// The entry.
        seq: u64,
    },
    /// A well-formed entry signed by a key no one knows.
    UnknownActor {
        /// The entry.
        seq: u64,
        /// The key.
        keyid: KeyId,
    },
    /// An operator's entry from after their revocation.
    RevokedActor {
        /// The entry.
        seq: u64,
        /// The operator.
        name: String,
        /// When they were revoked.
        revoked: UnixTime,
    },
    /// The log ends before the head the station recorded.
    Truncated {
        /// The last seq present (0 for an empty log).
        last: u64,
        /// The head recorded.
        recorded: u64,
    },
    /// The entry at the recorded head differs from it.
    HeadMismatch {
        /// The head's seq.
        seq: u64,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreadable { line, reason } => {
                write!(
                    f,
                    "line {line} is not an audit entry (changed or truncated): {reason}"
                )
            }
            Self::Removed { first, last } if first == last => {
                write!(f, "entry {first} was removed")
            }
            Self::Removed { first, last } => write!(f, "entries {first} to {last} were removed"),
            Self::Reordered { seq, after } => write!(
                f,
                "entry {seq} appears after entry {after}: entries were reordered"
            ),
            Self::Duplicated { seq } => write!(f, "entry {seq} appears twice"),
            Self::ChainBroken { seq } => write!(
                f,
                "entry {seq} does not chain to the entry before it: that entry was changed"
            ),
            Self::Changed { seq } => {
                write!(
                    f,
                    "entry {seq} was changed: its content does not match its hash"
                )
            }
            Self::BadSignature { seq } => write!(
                f,
                "entry {seq} was changed or forged: its signature does not verify"
            ),
            Self::ActorMismatch { seq } => {
                write!(f, "entry {seq}: its actor id is not the id of its key")
            }
            Self::UnknownActor { seq, keyid } => write!(
                f,
                "entry {seq} was appended by someone else: key {keyid} is neither an operator \
                 nor a key of an installed root"
            ),
            Self::RevokedActor { seq, name, revoked } => write!(
                f,
                "entry {seq} was appended by operator {name} after their revocation at {revoked}"
            ),
            Self::Truncated { last, recorded } => write!(
                f,
                "the log ends at entry {last} but the station recorded entry {recorded}: \
                 entries were removed from the end"
            ),
            Self::HeadMismatch { seq } => write!(
                f,
                "entry {seq} differs from the head the station recorded: it was changed"
            ),
        }
    }
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Entries read.
    pub entries: u64,
    /// The last entry in file order, if any.
    pub head: Option<Head>,
    /// Everything wrong, in the order found.
    pub problems: Vec<Problem>,
}

/// Check a log: chain, hashes, signatures, the recorded head, and, when `actors` is given,
/// that every entry was written by a known actor.
pub fn verify(bytes: &[u8], actors: Option<&KnownActors>, recorded: Option<&Head>) -> Report {
    let mut problems = Vec::new();
    let mut entries: Vec<Entry> = Vec::new();
    let mut lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    for (i, line) in lines.into_iter().enumerate() {
        match serde_json::from_slice::<Entry>(line) {
            Ok(entry) => entries.push(entry),
            Err(e) => problems.push(Problem::Unreadable {
                line: i + 1,
                reason: e.to_string(),
            }),
        }
    }
    // Order: a seq lower than the highest before it is out of place.
    let mut highest = 0;
    for entry in &entries {
        if entry.seq < highest {
            problems.push(Problem::Reordered {
                seq: entry.seq,
                after: highest,
            });
        }
        highest = highest.max(entry.seq);
    }
    // Gaps and duplicates.
    let mut seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
    seqs.sort_unstable();
    let mut expected = 1;
    for (i, seq) in seqs.iter().enumerate() {
        if i > 0 && seqs[i - 1] == *seq {
            problems.push(Problem::Duplicated { seq: *seq });
            continue;
        }
        if *seq > expected {
            problems.push(Problem::Removed {
                first: expected,
                last: seq - 1,
            });
        }
        expected = seq.saturating_add(1);
    }
    // The chain, between neighbours in file order that are consecutive.
    for (i, entry) in entries.iter().enumerate() {
        let prev_hash = match i.checked_sub(1).map(|p| &entries[p]) {
            None if entry.seq == 1 => Some(GENESIS),
            Some(prev) if prev.seq + 1 == entry.seq => Some(prev.hash.as_str()),
            _ => None,
        };
        if prev_hash.is_some_and(|h| h != entry.prev) {
            problems.push(Problem::ChainBroken { seq: entry.seq });
        }
        let message = entry.message();
        if hex::encode(sha2::Sha256::digest(&message)) != entry.hash {
            problems.push(Problem::Changed { seq: entry.seq });
            continue;
        }
        let sig_ok = hex::decode(&entry.sig).is_ok_and(|s| entry.actor_key.verify(&message, &s));
        if !sig_ok {
            problems.push(Problem::BadSignature { seq: entry.seq });
            continue;
        }
        if entry.actor_key.key_id() != entry.actor {
            problems.push(Problem::ActorMismatch { seq: entry.seq });
            continue;
        }
        if let Some(actors) = actors {
            let found = actors.find(&entry.actor_key);
            if found.is_empty() {
                problems.push(Problem::UnknownActor {
                    seq: entry.seq,
                    keyid: entry.actor.clone(),
                });
            } else if found
                .iter()
                .all(|a| a.revoked.is_some_and(|r| entry.time >= r))
            {
                let actor = found[0];
                problems.push(Problem::RevokedActor {
                    seq: entry.seq,
                    name: actor.name.clone(),
                    revoked: actor.revoked.unwrap_or(UnixTime(0)),
                });
            }
        }
    }
    if let Some(recorded) = recorded {
        match entries.iter().find(|e| e.seq == recorded.seq) {
            None => problems.push(Problem::Truncated {
                last: entries.iter().map(|e| e.seq).max().unwrap_or(0),
                recorded: recorded.seq,
            }),
            Some(e) if e.hash != recorded.hash => {
                problems.push(Problem::HeadMismatch { seq: recorded.seq });
            }
            Some(_) => {}
        }
    }
    Report {
        entries: entries.len() as u64,
        head: entries.last().map(Entry::head),
        problems,
    }
}

#[cfg(test)]
mod tests {
    use ota_core::tuf::InMemoryKey;

    use super::*;
    use crate::backend::file::FileKey;

    #[derive(Debug)]
    struct TestKey(InMemoryKey, Key, crate::keyref::KeyRef);

    impl SigningKey for TestKey {
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

    fn key(seed: u8) -> TestKey {
        let k = InMemoryKey::ed25519_from_seed([seed; 32]);
        let public = k.public();
        TestKey(k, public, crate::keyref::KeyRef::File("test".into()))
    }

    fn log(n: u64, key: &mut TestKey) -> Vec<Entry> {
        let mut out: Vec<Entry> = Vec::new();
        for seq in 1..=n {
            let prev = out.last().map_or(GENESIS.to_string(), |e| e.hash.clone());
            let details = serde_json::json!({ "n": seq });
            out.push(
                Entry::seal(
                    seq,
                    UnixTime(1000 + seq as i64),
                    key,
                    Action::Request,
                    details,
                    &prev,
                )
                .unwrap(),
            );
        }
        out
    }

    fn bytes(entries: &[Entry]) -> Vec<u8> {
        entries
            .iter()
            .map(|e| e.to_line() + "\n")
            .collect::<String>()
            .into_bytes()
    }

    fn actors(key: &TestKey) -> KnownActors {
        let mut a = KnownActors::default();
        a.add(&key.1, "alice", None);
        a
    }

    #[test]
    fn an_intact_log_verifies() {
        let mut k = key(1);
        let entries = log(4, &mut k);
        let report = verify(
            &bytes(&entries),
            Some(&actors(&k)),
            Some(&entries[3].head()),
        );
        assert_eq!(report.problems, []);
        assert_eq!(report.entries, 4);
        assert_eq!(report.head, Some(entries[3].head()));
        assert_eq!(verify(b"", None, None).problems, []);
    }

    #[test]
    fn each_kind_of_tampering_is_named() {
        let mut k = key(1);
        let entries = log(5, &mut k);
        let a = actors(&k);
        let head = entries[4].head();
        let check = |entries: &[Entry]| verify(&bytes(entries), Some(&a), Some(&head)).problems;

        let mut changed = entries.clone();
        changed[2].details = serde_json::json!({ "n": 99 });
        assert_eq!(check(&changed), [Problem::Changed { seq: 3 }]);

        let mut rehashed = entries.clone();
        rehashed[2].details = serde_json::json!({ "n": 99 });
        rehashed[2].hash = hex::encode(sha2::Sha256::digest(rehashed[2].message()));
        assert_eq!(
            check(&rehashed),
            [
                Problem::BadSignature { seq: 3 },
                Problem::ChainBroken { seq: 4 }
            ]
        );

        let mut removed = entries.clone();
        removed.remove(2);
        assert_eq!(check(&removed), [Problem::Removed { first: 3, last: 3 }]);

        let truncated = &entries[..4];
        assert_eq!(
            check(truncated),
            [Problem::Truncated {
                last: 4,
                recorded: 5
            }]
        );

        let mut reordered = entries.clone();
        reordered.swap(2, 3);
        assert_eq!(check(&reordered), [Problem::Reordered { seq: 3, after: 4 }]);

        let mut appended = entries.clone();
        let mut mallory = key(66);
        let last = appended.last().unwrap().hash.clone();
        appended.push(
            Entry::seal(
                6,
                UnixTime(2000),
                &mut mallory,
                Action::Signature,
                Value::Null,
                &last,
            )
            .unwrap(),
        );
        assert_eq!(
            check(&appended),
            [Problem::UnknownActor {
                seq: 6,
                keyid: mallory.1.key_id()
            }]
        );

        let mut bad_line = bytes(&entries);
        bad_line.extend_from_slice(b"{\"seq\": 6\n");
        assert!(matches!(
            verify(&bad_line, Some(&a), None).problems.as_slice(),
            [Problem::Unreadable { line: 6, .. }]
        ));
    }

    #[test]
    fn revoked_operators_may_not_write_after_revocation() {
        let mut k = key(1);
        let entries = log(3, &mut k);
        let mut a = KnownActors::default();
        a.add(&k.1, "alice", Some(UnixTime(1002)));
        assert_eq!(
            verify(&bytes(&entries), Some(&a), None).problems,
            [
                Problem::RevokedActor {
                    seq: 2,
                    name: "alice".into(),
                    revoked: UnixTime(1002)
                },
                Problem::RevokedActor {
                    seq: 3,
                    name: "alice".into(),
                    revoked: UnixTime(1002)
                }
            ]
        );
    }

    #[test]
    fn entries_from_file_keys_append_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut k =
            FileKey::generate(&dir.path().join("k.json"), crate::backend::Scheme::P256).unwrap();
        let path = dir.path().join("audit.jsonl");
        let e1 = Entry::seal(
            1,
            UnixTime(5),
            &mut k,
            Action::Ceremony,
            Value::Null,
            GENESIS,
        )
        .unwrap();
        append(&path, &e1).unwrap();
        let e2 = Entry::seal(
            2,
            UnixTime(6),
            &mut k,
            Action::Ceremony,
            Value::Null,
            &e1.hash,
        )
        .unwrap();
        append(&path, &e2).unwrap();
        let report = verify(&std::fs::read(&path).unwrap(), None, Some(&e2.head()));
        assert_eq!(report.problems, []);
    }
}
