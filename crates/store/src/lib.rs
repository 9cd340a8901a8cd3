//! The storage API every Bulwark protocol and service writes through, and
//! its embedded backend: SQLite in WAL mode for metadata plus a
//! content-addressed blob directory.
//!
//! What this crate owns:
//! * the [`Backend`] trait — the whole storage contract, small and typed, so a
//!   PostgreSQL backend can be added without touching protocol code;
//! * durability: a write returns only after it is on stable storage, and
//!   concurrent writes share one fsync (group commit);
//! * the per-account change log and the in-process change notifier;
//! * blob deduplication and reference counting;
//! * appending audit records in the same transaction as the action.
//!
//! What it must not do: decide who may do what (the directory and protocol
//! layers check rights; the store only records who did it), parse
//! protocols, or expose SQL to callers.

mod blobs;
pub mod conformance;
mod error;
mod notify;
mod schema;
mod sqlite;
mod types;

use std::future::Future;
use std::sync::Arc;

pub use bulwark_audit::{Actor, AuditEvent, AuditRecord, ChainHash};
pub use error::{Error, Result};
pub use notify::Notifier;
pub use sqlite::{SqliteBackend, SqliteOptions};
pub use types::*;

use bulwark_core::{
    BlobId, Change, ChangeNotice, DomainId, DomainName, EmailAddress, MailboxId, MailboxRole,
    ModSeq, PrincipalId, PrincipalKind,
};

/// The storage contract. Every method is blocking; async callers go through
/// [`Store::run`]. Every method that changes data takes the [`Actor`] doing
/// it, and writes an audit record in the same transaction when the actor is
/// an administrator or is not the owner of the account touched.
pub trait Backend: Send + Sync + 'static {
    // ---- domains ----

    /// Adds a mail domain.
    fn create_domain(&self, actor: &Actor, name: &DomainName) -> Result<DomainId>;
    /// Removes a domain that no longer has principals.
    fn remove_domain(&self, actor: &Actor, name: &DomainName) -> Result<()>;
    /// Every domain, by name.
    fn domains(&self) -> Result<Vec<Domain>>;
    /// One domain by name.
    fn domain(&self, name: &DomainName) -> Result<Option<Domain>>;

    // ---- principals ----

    /// Adds a principal; its address's domain must exist and the address be free.
    fn create_principal(&self, actor: &Actor, new: &NewPrincipal) -> Result<PrincipalId>;
    /// Removes a principal with all its data, aliases, memberships and grants.
    fn remove_principal(&self, actor: &Actor, id: PrincipalId) -> Result<()>;
    /// One principal by id.
    fn principal(&self, id: PrincipalId) -> Result<Option<Principal>>;
    /// The principal an address (primary or alias) belongs to.
    fn principal_by_address(&self, address: &EmailAddress) -> Result<Option<Principal>>;
    /// Principals, optionally of one domain and kind, by address.
    fn principals(
        &self,
        domain: Option<DomainId>,
        kind: Option<PrincipalKind>,
    ) -> Result<Vec<Principal>>;
    /// The stored password hash (PHC string), if the principal has one.
    fn password_hash(&self, id: PrincipalId) -> Result<Option<String>>;
    /// Replaces the password hash.
    fn set_password_hash(&self, actor: &Actor, id: PrincipalId, hash: &str) -> Result<()>;

    /// Sets the mail quota in bytes (0: none). Mail already stored stays;
    /// new deliveries are refused while usage is above it.
    fn set_quota(&self, actor: &Actor, id: PrincipalId, quota_bytes: u64) -> Result<()>;

    // ---- addresses ----

    /// Adds an alias address to a principal.
    fn add_alias(&self, actor: &Actor, id: PrincipalId, address: &EmailAddress) -> Result<()>;
    /// Removes an alias (never a primary address).
    fn remove_alias(&self, actor: &Actor, address: &EmailAddress) -> Result<()>;
    /// A principal's addresses, primary first.
    fn addresses(&self, id: PrincipalId) -> Result<Vec<EmailAddress>>;

    // ---- groups ----

    /// Makes `member` a direct member of `group`.
    fn add_member(&self, actor: &Actor, group: PrincipalId, member: PrincipalId) -> Result<()>;
    /// Removes a direct membership.
    fn remove_member(&self, actor: &Actor, group: PrincipalId, member: PrincipalId) -> Result<()>;
    /// Direct members of a group.
    fn members(&self, group: PrincipalId) -> Result<Vec<PrincipalId>>;

    // ---- grants ----

    /// Grants `grant.right` over the grantor's data to the grantee.
    fn add_grant(&self, actor: &Actor, grant: &Grant) -> Result<()>;
    /// Withdraws a grant.
    fn remove_grant(&self, actor: &Actor, grant: &Grant) -> Result<()>;
    /// Grants, filtered by grantor and/or grantee.
    fn grants(
        &self,
        grantor: Option<PrincipalId>,
        grantee: Option<PrincipalId>,
    ) -> Result<Vec<Grant>>;

    // ---- app passwords ----

    /// Stores a new app password's hash; returns its id.
    fn add_app_password(
        &self,
        actor: &Actor,
        id: PrincipalId,
        label: &str,
        hash: &str,
    ) -> Result<i64>;
    /// App passwords of a principal, without their hashes.
    fn app_passwords(&self, id: PrincipalId) -> Result<Vec<AppPassword>>;
    /// `(app password id, hash)` pairs, for authentication only.
    fn app_password_hashes(&self, id: PrincipalId) -> Result<Vec<(i64, String)>>;
    /// Deletes one app password.
    fn revoke_app_password(&self, actor: &Actor, id: PrincipalId, app_password: i64) -> Result<()>;

    // ---- mailboxes ----

    /// Creates a mailbox in `account`.
    fn create_mailbox(
        &self,
        actor: &Actor,
        account: PrincipalId,
        name: &str,
        role: Option<MailboxRole>,
        parent: Option<MailboxId>,
    ) -> Result<Mailbox>;
    /// Mailboxes of an account, by name.
    fn mailboxes(&self, account: PrincipalId) -> Result<Vec<Mailbox>>;
    /// Deletes a mailbox without children; its messages leave it (and are
    /// destroyed when they were in no other mailbox).
    fn delete_mailbox(&self, actor: &Actor, account: PrincipalId, mailbox: MailboxId)
    -> Result<()>;

    // ---- messages ----

    /// Stores one message for every target, keeping one copy of its bytes.
    /// Returns only once the message and every mailbox entry are durable.
    fn deliver(
        &self,
        actor: &Actor,
        raw: &[u8],
        meta: &EmailMeta,
        targets: &[Delivery],
    ) -> Result<Vec<Delivered>>;
    /// Files `raw` in the Inbox of each account (creating an Inbox that is
    /// missing), each account on its own: one that refuses the message
    /// (over quota, removed meanwhile) does not stop the others. `done`
    /// gets the outcome once every entry is durable, possibly on another
    /// thread, so it must only hand the outcome on. Whether the call itself
    /// may block on storage: see [`Backend::delivers_without_blocking`].
    fn deliver_to_inboxes(
        &self,
        actor: &Actor,
        raw: Arc<[u8]>,
        meta: EmailMeta,
        accounts: Vec<PrincipalId>,
        done: InboxDone,
    );
    /// `(transactions, writes)` this process has committed so far; writes
    /// per transaction is the group-commit factor.
    fn commit_stats(&self) -> (u64, u64);
    /// A number that moves (after the change is durable) whenever this
    /// process adds or removes a domain, principal, alias or group
    /// membership, so callers may cache what an address reaches and know
    /// when to look again. Changes made by other processes do not move it.
    fn directory_version(&self) -> u64;
    /// Whether [`Backend::deliver_to_inboxes`] of a message of `size` bytes
    /// returns at once (queues the write and reads nothing), so an async
    /// task may call it directly.
    fn delivers_without_blocking(&self, size: usize) -> bool;
    /// Stores several messages in one write: every one or none (IMAP
    /// MULTIAPPEND, RFC 3502). Returns where each landed, in order.
    fn deliver_batch(&self, actor: &Actor, items: &[BatchItem]) -> Result<Vec<Vec<Delivered>>>;
    /// Messages of a mailbox in UID order.
    fn messages(&self, account: PrincipalId, mailbox: MailboxId) -> Result<Vec<MessageEntry>>;
    /// The entries of a mailbox changed (added, or flags changed) after
    /// `since`, in UID order, with the mailbox's highest modification
    /// sequence read in the same snapshot. Removed entries are in the
    /// change log (`changes_since`).
    fn messages_changed_since(
        &self,
        account: PrincipalId,
        mailbox: MailboxId,
        since: ModSeq,
    ) -> Result<(Vec<MessageEntry>, ModSeq)>;
    /// One email's stored data.
    fn email(
        &self,
        account: PrincipalId,
        email: bulwark_core::EmailId,
    ) -> Result<Option<EmailRecord>>;
    /// Changes keywords (flags) of messages; returns those whose keywords changed.
    fn update_keywords(
        &self,
        actor: &Actor,
        account: PrincipalId,
        mailbox: MailboxId,
        uids: &[u32],
        update: &KeywordUpdate,
    ) -> Result<Vec<(u32, ModSeq)>>;
    /// Like `update_keywords`, but entries whose modification sequence is
    /// above `unchanged_since` are left alone and returned in `modified`
    /// (IMAP CONDSTORE's UNCHANGEDSINCE, RFC 7162 section 3.1.3), decided
    /// inside the same write so no concurrent change slips between.
    fn update_keywords_if_unchanged(
        &self,
        actor: &Actor,
        account: PrincipalId,
        mailbox: MailboxId,
        uids: &[u32],
        update: &KeywordUpdate,
        unchanged_since: ModSeq,
    ) -> Result<KeywordChanges>;
    /// Files messages of `from` into `to` as the same emails (no new copy
    /// of the bytes, no quota charge), keeping their keywords. With
    /// `remove_source` it is a move: both sides change in one transaction.
    /// Returns `(source UID, new UID)` pairs for the messages that existed.
    fn copy_messages(
        &self,
        actor: &Actor,
        account: PrincipalId,
        from: MailboxId,
        uids: &[u32],
        to: MailboxId,
        remove_source: bool,
    ) -> Result<Vec<(u32, u32)>>;
    /// Renames a mailbox and, with it, every mailbox below it in the
    /// `/`-separated hierarchy. UIDs and UIDVALIDITY are kept.
    fn rename_mailbox(
        &self,
        actor: &Actor,
        account: PrincipalId,
        mailbox: MailboxId,
        new_name: &str,
    ) -> Result<()>;
    /// Removes messages from a mailbox; returns the UIDs removed.
    fn expunge(
        &self,
        actor: &Actor,
        account: PrincipalId,
        mailbox: MailboxId,
        uids: &[u32],
    ) -> Result<Vec<u32>>;
    /// The bytes of a blob.
    fn read_blob(&self, id: &BlobId) -> Result<Vec<u8>>;

    // ---- outbound queue ----

    /// Puts a message in the outbound queue for its recipients. Returns
    /// only once the message is durable.
    fn enqueue(&self, actor: &Actor, raw: &[u8], message: &NewQueuedMessage) -> Result<QueueId>;
    /// One queued message.
    fn queued(&self, id: QueueId) -> Result<Option<QueuedMessage>>;
    /// Queued messages, oldest first, at most `limit`.
    fn queue(&self, limit: usize) -> Result<Vec<QueuedMessage>>;
    /// Messages with a pending recipient due at `now` or before, oldest
    /// first, at most `limit`; only the due recipients are listed.
    fn queue_due(&self, now: i64, limit: usize) -> Result<Vec<QueuedMessage>>;
    /// When the earliest pending recipient is due, if any is.
    fn next_queue_attempt(&self) -> Result<Option<i64>>;
    /// How many messages and recipients wait in the queue.
    fn queue_size(&self) -> Result<QueueSize>;
    /// Records attempt results per recipient address. A message with no
    /// pending recipient left leaves the queue (and drops its blob
    /// reference) in the same write.
    fn update_queued(
        &self,
        actor: &Actor,
        id: QueueId,
        updates: &[(String, RecipientUpdate)],
    ) -> Result<()>;
    /// Makes every pending recipient of a message due at `now`.
    fn retry_queued(&self, actor: &Actor, id: QueueId, now: i64) -> Result<()>;
    /// Takes a message out of the queue without delivering it.
    fn remove_queued(&self, actor: &Actor, id: QueueId) -> Result<()>;

    // ---- mailbox rights ----

    /// Sets what `grantee` may do in one of `account`'s mailboxes, as
    /// RFC 4314 right letters; empty rights remove the entry. The store
    /// keeps the letters; the protocol layer decides what they allow.
    fn set_mailbox_rights(
        &self,
        actor: &Actor,
        account: PrincipalId,
        mailbox: MailboxId,
        grantee: PrincipalId,
        rights: &str,
    ) -> Result<()>;
    /// The rights entries of one mailbox.
    fn mailbox_rights(
        &self,
        account: PrincipalId,
        mailbox: MailboxId,
    ) -> Result<Vec<(PrincipalId, String)>>;
    /// Every mailbox of another account with a rights entry for `grantee`:
    /// `(owner, mailbox, rights)`.
    fn rights_granted_to(
        &self,
        grantee: PrincipalId,
    ) -> Result<Vec<(PrincipalId, MailboxId, String)>>;

    // ---- DKIM keys ----

    /// Stores a signing key for a domain.
    fn add_dkim_key(&self, actor: &Actor, domain: DomainId, key: &DkimKey) -> Result<()>;
    /// A domain's signing keys, newest first.
    fn dkim_keys(&self, domain: DomainId) -> Result<Vec<DkimKey>>;

    // ---- DAV collections and objects (calendars, address books) ----

    /// The account's collections of `kind`, by name.
    fn dav_collections(&self, account: PrincipalId, kind: DavKind) -> Result<Vec<DavCollection>>;
    /// One collection by name.
    fn dav_collection(
        &self,
        account: PrincipalId,
        kind: DavKind,
        name: &str,
    ) -> Result<Option<DavCollection>>;
    /// Creates a collection; `AlreadyExists` if the name is taken.
    fn create_dav_collection(
        &self,
        actor: &Actor,
        account: PrincipalId,
        kind: DavKind,
        name: &str,
        props: &DavCollectionProps,
        components: &str,
    ) -> Result<DavCollection>;
    /// Replaces a collection's client-settable properties.
    fn update_dav_collection(
        &self,
        actor: &Actor,
        account: PrincipalId,
        collection: DavCollectionId,
        props: &DavCollectionProps,
    ) -> Result<ModSeq>;
    /// Deletes a collection and everything in it.
    fn delete_dav_collection(
        &self,
        actor: &Actor,
        account: PrincipalId,
        collection: DavCollectionId,
    ) -> Result<()>;
    /// The live objects of a collection, by name.
    fn dav_objects(&self, collection: DavCollectionId) -> Result<Vec<DavObjectMeta>>;
    /// Live objects with their data, for the names given that exist.
    fn dav_objects_named(
        &self,
        collection: DavCollectionId,
        names: &[String],
    ) -> Result<Vec<DavObject>>;
    /// Every live object with its data.
    fn dav_objects_all(&self, collection: DavCollectionId) -> Result<Vec<DavObject>>;
    /// The account's live objects with this UID, in every collection of
    /// `kind`, with their collections.
    fn dav_objects_by_uid(
        &self,
        account: PrincipalId,
        kind: DavKind,
        uid: &str,
    ) -> Result<Vec<(DavCollection, DavObject)>>;
    /// Live calendar objects that may occur in `[start, end)`: those with a
    /// stored instance overlapping it, plus open-ended ones whose stored
    /// instances stop before `end` without one in the range (returned with
    /// `open_ended` set: the caller expands those to decide). In no
    /// particular order.
    fn dav_objects_in_range(
        &self,
        collection: DavCollectionId,
        start: i64,
        end: i64,
    ) -> Result<Vec<DavObject>>;
    /// Creates or replaces an object if `precondition` holds
    /// (`Conflict` when it does not, or when another live object has the UID).
    fn put_dav_object(
        &self,
        actor: &Actor,
        account: PrincipalId,
        collection: DavCollectionId,
        object: &NewDavObject,
        precondition: DavPrecondition,
    ) -> Result<DavPut>;
    /// Deletes an object, leaving a tombstone; `NotFound` if there is none.
    fn delete_dav_object(
        &self,
        actor: &Actor,
        account: PrincipalId,
        collection: DavCollectionId,
        name: &str,
        precondition: DavPrecondition,
    ) -> Result<()>;
    /// Replaces who else may read (and, with `true`, write) one collection.
    fn set_dav_rights(
        &self,
        actor: &Actor,
        account: PrincipalId,
        collection: DavCollectionId,
        rights: &[(PrincipalId, bool)],
    ) -> Result<()>;
    /// Who else may read (`false`) or also write (`true`) a collection.
    fn dav_rights(&self, collection: DavCollectionId) -> Result<Vec<(PrincipalId, bool)>>;
    /// Collections of `kind` shared with `grantee` one by one, with
    /// whether they may write.
    fn dav_rights_granted_to(
        &self,
        grantee: PrincipalId,
        kind: DavKind,
    ) -> Result<Vec<(DavCollection, bool)>>;
    /// Objects changed or deleted after `since`, at most `limit` (cut at a
    /// modseq boundary).
    fn dav_changes_since(
        &self,
        collection: DavCollectionId,
        since: ModSeq,
        limit: usize,
    ) -> Result<DavChanges>;

    // ---- change log ----

    /// The account's current modification sequence.
    fn current_modseq(&self, account: PrincipalId) -> Result<ModSeq>;
    /// Changes after `after`, oldest first, at most `limit`.
    fn changes_since(
        &self,
        account: PrincipalId,
        after: ModSeq,
        limit: usize,
    ) -> Result<Vec<Change>>;
    /// Subscribes to durable changes of one account.
    fn subscribe(&self, account: PrincipalId) -> tokio::sync::broadcast::Receiver<ChangeNotice>;

    // ---- audit ----

    /// Appends an audit record on its own (for reads and refusals).
    fn append_audit(&self, event: AuditEvent) -> Result<u64>;
    /// Records after sequence `after`, oldest first, at most `limit`.
    fn audit_records(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>>;
    /// The most recent `count` records, oldest first.
    fn audit_tail(&self, count: usize) -> Result<Vec<AuditRecord>>;
    /// The last record's sequence and hash as recorded beside the log.
    fn audit_head(&self) -> Result<Option<(u64, ChainHash)>>;

    // ---- maintenance ----

    /// Checks that every referenced blob exists with the right content and
    /// counts unreferenced blob files.
    fn check_blobs(&self) -> Result<BlobCheck>;
    /// Deletes blob files no row references, older than `min_age`
    /// (leftovers of writes that crashed before commit).
    fn collect_orphan_blobs(&self, min_age: std::time::Duration) -> Result<u64>;
}

/// A shared handle on a backend. Cloning is cheap.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
}

impl Store {
    /// Wraps a backend.
    pub fn new(backend: Arc<dyn Backend>) -> Store {
        Store { backend }
    }

    /// [`Backend::deliver_to_inboxes`], awaited: on the calling task when
    /// the backend can queue the write without blocking, else through the
    /// blocking pool.
    pub async fn deliver_to_inboxes_async(
        &self,
        actor: Actor,
        raw: Arc<[u8]>,
        meta: EmailMeta,
        accounts: Vec<PrincipalId>,
    ) -> Result<InboxReport> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let done: InboxDone = Box::new(move |outcome| {
            let _ = tx.send(outcome);
        });
        if self.backend.delivers_without_blocking(raw.len()) {
            self.backend
                .deliver_to_inboxes(&actor, raw, meta, accounts, done);
        } else {
            let backend = Arc::clone(&self.backend);
            tokio::task::spawn_blocking(move || {
                backend.deliver_to_inboxes(&actor, raw, meta, accounts, done);
            });
        }
        rx.await
            .map_err(|_| Error::Unavailable("delivery dropped before answering".into()))?
    }

    /// Runs blocking storage work off the async executor.
    pub fn run<T, F>(&self, work: F) -> impl Future<Output = Result<T>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&dyn Backend) -> Result<T> + Send + 'static,
    {
        let backend = Arc::clone(&self.backend);
        async move {
            tokio::task::spawn_blocking(move || work(backend.as_ref()))
                .await
                .map_err(|e| Error::Unavailable(format!("storage task failed: {e}")))?
        }
    }
}

impl std::ops::Deref for Store {
    type Target = dyn Backend;

    fn deref(&self) -> &Self::Target {
        self.backend.as_ref()
    }
}
