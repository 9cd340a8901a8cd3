//! The audit log's record format, its hash chain and its verification.
//!
//! Every access to a mailbox by anyone but its owner, and every admin action,
//! becomes an [`AuditEvent`]. The store appends it as an [`AuditRecord`]
//! inside the same transaction as the action it describes, chaining each
//! record to the previous one with SHA-256, so an edited, removed or
//! reordered record breaks the chain that [`verify`] walks.
//!
//! This crate owns the format and the arithmetic only. It must not do I/O:
//! persistence belongs to the store, so that an action and its audit record
//! commit or fail together and no record is ever dropped silently.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// How the actor is related to the account it touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogonType {
    /// The account's own user (recorded only for admin-visible events).
    Owner,
    /// Another user acting through a grant (delegation, shared mailbox).
    Delegate,
    /// An administrator.
    Admin,
    /// The server itself (delivery, maintenance).
    System,
}

impl LogonType {
    /// Stable name used in storage and output.
    pub fn name(self) -> &'static str {
        match self {
            LogonType::Owner => "owner",
            LogonType::Delegate => "delegate",
            LogonType::Admin => "admin",
            LogonType::System => "system",
        }
    }
}

impl FromStr for LogonType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "owner" => LogonType::Owner,
            "delegate" => LogonType::Delegate,
            "admin" => LogonType::Admin,
            "system" => LogonType::System,
            other => return Err(format!("unknown logon type {other:?}")),
        })
    }
}

/// How the action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// It was carried out.
    Success,
    /// It was refused for lack of rights.
    Denied,
    /// It was attempted and failed.
    Failed,
}

impl Outcome {
    /// Stable name used in storage and output.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
            Outcome::Failed => "failed",
        }
    }
}

impl FromStr for Outcome {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "success" => Outcome::Success,
            "denied" => Outcome::Denied,
            "failed" => Outcome::Failed,
            other => return Err(format!("unknown outcome {other:?}")),
        })
    }
}

/// Who is acting, as known at the protocol boundary. Passed to every write
/// so the store can decide whether the write must be audited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Login name, or the operating-system user for local admin commands.
    pub name: String,
    /// The principal behind the login, if it is one of ours.
    pub principal: Option<i64>,
    /// `password`, `app-password`, `local-cli`, `none` ...
    pub auth_method: String,
    /// Administrator, system or user; for users the logon type is decided
    /// per target account (owner or delegate).
    pub role: ActorRole,
    /// Client address, when the action came over the network.
    pub client_ip: Option<String>,
    /// `imap`, `smtp`, `cli`, `admin-http` ...
    pub protocol: String,
}

/// The capacity in which an actor acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorRole {
    /// A user of the mail system.
    User,
    /// An administrator: everything is audited.
    Admin,
    /// The server itself.
    System,
}

impl Actor {
    /// An administrator using the local command line.
    pub fn local_admin(os_user: &str) -> Actor {
        Actor {
            name: os_user.to_string(),
            principal: None,
            auth_method: "local-cli".into(),
            role: ActorRole::Admin,
            client_ip: None,
            protocol: "cli".into(),
        }
    }

    /// The server acting on its own (delivery, maintenance).
    pub fn system(protocol: &str) -> Actor {
        Actor {
            name: "system".into(),
            principal: None,
            auth_method: "none".into(),
            role: ActorRole::System,
            client_ip: None,
            protocol: protocol.into(),
        }
    }

    /// An authenticated user.
    pub fn user(
        name: &str,
        principal: i64,
        auth_method: &str,
        client_ip: Option<String>,
        protocol: &str,
    ) -> Actor {
        Actor {
            name: name.into(),
            principal: Some(principal),
            auth_method: auth_method.into(),
            role: ActorRole::User,
            client_ip,
            protocol: protocol.into(),
        }
    }

    /// The logon type of this actor on `target_account` (None: not about an account).
    pub fn logon_on(&self, target_account: Option<i64>) -> LogonType {
        match self.role {
            ActorRole::Admin => LogonType::Admin,
            ActorRole::System => LogonType::System,
            ActorRole::User => match (self.principal, target_account) {
                (Some(me), Some(target)) if me == target => LogonType::Owner,
                (_, None) => LogonType::Owner,
                _ => LogonType::Delegate,
            },
        }
    }

    /// Whether an action by this actor on `target_account` must be audited:
    /// admin actions always, user actions on someone else's account always,
    /// a user's own actions and the server's routine work never.
    pub fn must_audit(&self, target_account: Option<i64>) -> bool {
        matches!(
            self.logon_on(target_account),
            LogonType::Admin | LogonType::Delegate
        )
    }

    /// Starts an event for `operation` on `target` by this actor.
    pub fn event(&self, operation: &str, target: Option<(&str, Option<i64>)>) -> AuditEvent {
        AuditEvent {
            actor: self.name.clone(),
            auth_method: self.auth_method.clone(),
            logon_type: self.logon_on(target.and_then(|t| t.1)),
            target: target.map(|t| t.0.to_string()),
            operation: operation.into(),
            object_ids: Vec::new(),
            item_count: 0,
            client_ip: self.client_ip.clone(),
            protocol: self.protocol.clone(),
            outcome: Outcome::Success,
        }
    }
}

/// What happened, before the store gives it a place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Who acted (login or OS user name).
    pub actor: String,
    /// How they authenticated.
    pub auth_method: String,
    /// Their relation to the target.
    pub logon_type: LogonType,
    /// The account or object acted on (an address, a domain, ...).
    pub target: Option<String>,
    /// Dotted operation name, such as `user.add` or `mailbox.fetch`.
    pub operation: String,
    /// Ids of the objects touched (bounded by the caller).
    pub object_ids: Vec<String>,
    /// Number of items read or changed.
    pub item_count: u64,
    /// Client address.
    pub client_ip: Option<String>,
    /// Protocol or interface used.
    pub protocol: String,
    /// How it ended.
    pub outcome: Outcome,
}

/// Object ids kept per record; the item count still tells the full size.
pub const MAX_OBJECT_IDS: usize = 1000;

/// A hash in the chain.
pub type ChainHash = [u8; 32];

/// The hash that precedes the first record.
pub const GENESIS: ChainHash = [0; 32];

/// An event with its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Position, starting at 1, without gaps.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// The event.
    pub event: AuditEvent,
    /// Hash of the previous record (GENESIS for the first).
    pub prev_hash: ChainHash,
    /// Hash of this record, covering `prev_hash` and every field.
    pub hash: ChainHash,
}

impl AuditRecord {
    /// Seals `event` as record `seq` following `prev_hash`.
    pub fn seal(
        seq: u64,
        time_ms: i64,
        mut event: AuditEvent,
        prev_hash: ChainHash,
    ) -> AuditRecord {
        event.object_ids.truncate(MAX_OBJECT_IDS);
        let hash = chain_hash(seq, time_ms, &event, &prev_hash);
        AuditRecord {
            seq,
            time_ms,
            event,
            prev_hash,
            hash,
        }
    }
}

/// SHA-256 over an unambiguous encoding: every field is length-prefixed,
/// so no two different records encode to the same bytes.
pub fn chain_hash(seq: u64, time_ms: i64, event: &AuditEvent, prev_hash: &ChainHash) -> ChainHash {
    fn field(h: &mut Sha256, bytes: &[u8]) {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    }
    fn opt(h: &mut Sha256, value: &Option<String>) {
        match value {
            Some(v) => {
                h.update([1]);
                field(h, v.as_bytes());
            }
            None => h.update([0]),
        }
    }
    let mut h = Sha256::new();
    h.update(b"bulwark-audit-v1");
    h.update(prev_hash);
    h.update(seq.to_be_bytes());
    h.update(time_ms.to_be_bytes());
    field(&mut h, event.actor.as_bytes());
    field(&mut h, event.auth_method.as_bytes());
    field(&mut h, event.logon_type.name().as_bytes());
    opt(&mut h, &event.target);
    field(&mut h, event.operation.as_bytes());
    h.update((event.object_ids.len() as u64).to_be_bytes());
    for id in &event.object_ids {
        field(&mut h, id.as_bytes());
    }
    h.update(event.item_count.to_be_bytes());
    opt(&mut h, &event.client_ip);
    field(&mut h, event.protocol.as_bytes());
    field(&mut h, event.outcome.name().as_bytes());
    h.finalize().into()
}

/// Where and how the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainBreak {
    /// The record's content no longer matches its hash: it was edited.
    Edited {
        /// The record's sequence number.
        seq: u64,
    },
    /// The sequence skips numbers or goes backwards: records were removed
    /// or reordered.
    Gap {
        /// The number expected.
        expected: u64,
        /// The number found.
        found: u64,
    },
    /// The record does not follow the previous record's hash.
    Unlinked {
        /// The record's sequence number.
        seq: u64,
    },
    /// The chain ends before the recorded head: trailing records were removed.
    Truncated {
        /// Last sequence number present.
        last_seq: u64,
        /// Sequence number of the recorded head.
        head_seq: u64,
    },
    /// The last record differs from the recorded head.
    HeadMismatch {
        /// The head's sequence number.
        seq: u64,
    },
}

impl fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainBreak::Edited { seq } => write!(f, "record {seq} was modified (hash mismatch)"),
            ChainBreak::Gap { expected, found } => {
                write!(
                    f,
                    "expected record {expected}, found {found}: records removed or reordered"
                )
            }
            ChainBreak::Unlinked { seq } => {
                write!(f, "record {seq} does not follow the previous record")
            }
            ChainBreak::Truncated { last_seq, head_seq } => {
                write!(
                    f,
                    "log ends at record {last_seq} but the head says {head_seq}: records removed"
                )
            }
            ChainBreak::HeadMismatch { seq } => {
                write!(f, "record {seq} differs from the recorded head")
            }
        }
    }
}

impl std::error::Error for ChainBreak {}

/// Walks records in storage order and checks the chain.
#[derive(Debug)]
pub struct Verifier {
    expected_seq: u64,
    prev_hash: ChainHash,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier {
            expected_seq: 1,
            prev_hash: GENESIS,
        }
    }
}

impl Verifier {
    /// Checks the next record.
    pub fn push(&mut self, record: &AuditRecord) -> Result<(), ChainBreak> {
        if record.seq != self.expected_seq {
            return Err(ChainBreak::Gap {
                expected: self.expected_seq,
                found: record.seq,
            });
        }
        if record.prev_hash != self.prev_hash {
            return Err(ChainBreak::Unlinked { seq: record.seq });
        }
        if chain_hash(record.seq, record.time_ms, &record.event, &record.prev_hash) != record.hash {
            return Err(ChainBreak::Edited { seq: record.seq });
        }
        self.expected_seq += 1;
        self.prev_hash = record.hash;
        Ok(())
    }

    /// Checks the end of the chain against the head the store keeps beside
    /// it; returns the number of records verified.
    pub fn finish(self, head: Option<(u64, ChainHash)>) -> Result<u64, ChainBreak> {
        let last_seq = self.expected_seq - 1;
        if let Some((head_seq, head_hash)) = head {
            if last_seq < head_seq {
                return Err(ChainBreak::Truncated { last_seq, head_seq });
            }
            if last_seq > head_seq || head_hash != self.prev_hash {
                return Err(ChainBreak::HeadMismatch { seq: head_seq });
            }
        } else if last_seq > 0 {
            return Err(ChainBreak::HeadMismatch { seq: 0 });
        }
        Ok(last_seq)
    }
}

/// Checks a whole chain held in memory.
pub fn verify<'a>(
    records: impl IntoIterator<Item = &'a AuditRecord>,
    head: Option<(u64, ChainHash)>,
) -> Result<u64, ChainBreak> {
    let mut verifier = Verifier::default();
    for record in records {
        verifier.push(record)?;
    }
    verifier.finish(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<AuditRecord> {
        let admin = Actor::local_admin("root");
        let mut prev = GENESIS;
        (1..=n)
            .map(|seq| {
                let mut event = admin.event("user.add", Some(("u@example.com", Some(7))));
                event.object_ids = vec![seq.to_string()];
                let record = AuditRecord::seal(seq, 1_700_000_000_000 + seq as i64, event, prev);
                prev = record.hash;
                record
            })
            .collect()
    }

    fn head(records: &[AuditRecord]) -> Option<(u64, ChainHash)> {
        records.last().map(|r| (r.seq, r.hash))
    }

    #[test]
    fn intact_chain_verifies() {
        let records = chain(5);
        assert_eq!(verify(&records, head(&records)), Ok(5));
        assert_eq!(verify(&[], None), Ok(0));
    }

    #[test]
    fn edited_record_is_caught() {
        let mut records = chain(5);
        let h = head(&records);
        records[2].event.actor = "mallory".into();
        assert_eq!(verify(&records, h), Err(ChainBreak::Edited { seq: 3 }));
    }

    #[test]
    fn rehashed_edit_breaks_the_next_link() {
        let mut records = chain(5);
        let h = head(&records);
        records[2].event.item_count = 99;
        records[2].hash = chain_hash(
            3,
            records[2].time_ms,
            &records[2].event,
            &records[2].prev_hash,
        );
        assert_eq!(verify(&records, h), Err(ChainBreak::Unlinked { seq: 4 }));
    }

    #[test]
    fn deleted_and_reordered_records_are_caught() {
        let records = chain(5);
        let h = head(&records);
        let mut deleted = records.clone();
        deleted.remove(1);
        assert_eq!(
            verify(&deleted, h),
            Err(ChainBreak::Gap {
                expected: 2,
                found: 3
            })
        );
        let mut swapped = records.clone();
        swapped.swap(1, 2);
        assert!(matches!(verify(&swapped, h), Err(ChainBreak::Gap { .. })));
        let truncated = &records[..3];
        assert_eq!(
            verify(truncated, h),
            Err(ChainBreak::Truncated {
                last_seq: 3,
                head_seq: 5
            })
        );
    }

    #[test]
    fn audit_policy() {
        let user = Actor::user("a@x.com", 1, "password", None, "imap");
        assert!(!user.must_audit(Some(1)));
        assert!(user.must_audit(Some(2)));
        assert!(Actor::local_admin("root").must_audit(None));
        assert!(!Actor::system("smtp").must_audit(Some(2)));
    }
}
