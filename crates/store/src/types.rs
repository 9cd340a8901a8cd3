//! Records the storage API takes and returns.

use bulwark_core::{
    BlobId, DomainId, DomainName, EmailAddress, EmailId, MailboxId, MailboxRole, ModSeq,
    PrincipalId, PrincipalKind, Right, ThreadId,
};

/// A mail domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    /// Row id.
    pub id: DomainId,
    /// The domain name.
    pub name: DomainName,
    /// Creation time, Unix milliseconds.
    pub created_at: i64,
}

/// A principal as stored (without credentials).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Row id; also the account id.
    pub id: PrincipalId,
    /// What it is.
    pub kind: PrincipalKind,
    /// Primary address; also the login name of individuals.
    pub address: EmailAddress,
    /// Its domain.
    pub domain: DomainId,
    /// Name shown to people.
    pub display_name: String,
    /// Quota in bytes; 0 means none.
    pub quota_bytes: u64,
    /// Bytes of mail stored.
    pub used_bytes: u64,
    /// Creation time, Unix milliseconds.
    pub created_at: i64,
}

/// What `create_principal` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPrincipal {
    /// What it is.
    pub kind: PrincipalKind,
    /// Primary address.
    pub address: EmailAddress,
    /// Name shown to people.
    pub display_name: String,
    /// Argon2id PHC string, for principals that log in.
    pub password_hash: Option<String>,
    /// Quota in bytes; 0 means none.
    pub quota_bytes: u64,
}

/// A delegation grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Grant {
    /// Whose data.
    pub grantor: PrincipalId,
    /// Who receives the right.
    pub grantee: PrincipalId,
    /// Which right.
    pub right: Right,
}

/// An app password's public part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppPassword {
    /// Id used to revoke it.
    pub id: i64,
    /// Its owner.
    pub principal: PrincipalId,
    /// The device or purpose the user named.
    pub label: String,
    /// Creation time, Unix milliseconds.
    pub created_at: i64,
}

/// A mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// Row id.
    pub id: MailboxId,
    /// Owning account.
    pub account: PrincipalId,
    /// Full name, hierarchy separated by `/`.
    pub name: String,
    /// Parent mailbox.
    pub parent: Option<MailboxId>,
    /// Special use.
    pub role: Option<MailboxRole>,
    /// IMAP UIDVALIDITY; never changes for the life of the mailbox.
    pub uid_validity: u32,
    /// The UID the next message will get.
    pub uid_next: u32,
    /// Highest modification sequence of anything in the mailbox.
    pub highest_modseq: ModSeq,
}

/// Facts about a message that the mail service extracts before storing it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmailMeta {
    /// Arrival time, Unix milliseconds.
    pub received_at: i64,
    /// `Message-ID`, without angle brackets.
    pub message_id: Option<String>,
    /// `In-Reply-To` and `References` ids, used to place it in a thread.
    pub references: Vec<String>,
    /// Decoded `Subject`.
    pub subject: Option<String>,
    /// Decoded `From`.
    pub from: Option<String>,
    /// Decoded `To`.
    pub to: Option<String>,
    /// `Date`, Unix milliseconds.
    pub sent_at: Option<i64>,
}

/// One place a message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The account.
    pub account: PrincipalId,
    /// The mailbox in that account.
    pub mailbox: MailboxId,
    /// Initial keywords (flags), such as `$seen`.
    pub keywords: Vec<String>,
}

/// The outcome of [`crate::Backend::deliver_to_inboxes`].
#[derive(Debug, Default)]
pub struct InboxReport {
    /// Where the message landed.
    pub delivered: Vec<Delivered>,
    /// Accounts that refused it (over quota, removed meanwhile), with why.
    pub refused: Vec<(PrincipalId, crate::Error)>,
}

/// Receives the outcome of [`crate::Backend::deliver_to_inboxes`].
pub type InboxDone = Box<dyn FnOnce(crate::Result<InboxReport>) + Send>;

/// Where a message landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The account.
    pub account: PrincipalId,
    /// The email created there.
    pub email: EmailId,
    /// The mailbox.
    pub mailbox: MailboxId,
    /// Its UID in that mailbox.
    pub uid: u32,
    /// The account's modification sequence after the delivery.
    pub modseq: ModSeq,
}

/// A message as listed in a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageEntry {
    /// UID in the mailbox.
    pub uid: u32,
    /// The email.
    pub email: EmailId,
    /// Modification sequence of the last change to this entry.
    pub modseq: ModSeq,
    /// Keywords, sorted.
    pub keywords: Vec<String>,
    /// Size in bytes.
    pub size: u64,
    /// Arrival time, Unix milliseconds.
    pub received_at: i64,
    /// Content address of the raw message.
    pub blob: BlobId,
}

/// An email's stored data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailRecord {
    /// Row id.
    pub id: EmailId,
    /// Owning account.
    pub account: PrincipalId,
    /// Content address of the raw message.
    pub blob: BlobId,
    /// Thread.
    pub thread: ThreadId,
    /// Size in bytes.
    pub size: u64,
    /// Cached header facts.
    pub meta: EmailMeta,
}

/// How to change keywords.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeywordUpdate {
    /// Replace them all.
    Set(Vec<String>),
    /// Add these.
    Add(Vec<String>),
    /// Remove these.
    Remove(Vec<String>),
}

/// What a conditional keyword change did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeywordChanges {
    /// UIDs whose keywords changed, with their new modification sequence.
    pub changed: Vec<(u32, ModSeq)>,
    /// UIDs left alone because they changed after the given point.
    pub modified: Vec<u32>,
}

/// Result of [`crate::Backend::check_blobs`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlobCheck {
    /// Blobs referenced by rows.
    pub referenced: u64,
    /// Referenced blobs whose bytes are gone.
    pub missing: Vec<BlobId>,
    /// Referenced blobs whose bytes do not hash to their id.
    pub corrupt: Vec<BlobId>,
    /// Blob files no row references.
    pub orphans: u64,
    /// Rows whose reference count disagrees with the references found.
    pub miscounted: Vec<BlobId>,
}

/// A message in the outbound queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueId(pub i64);

impl std::fmt::Display for QueueId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What [`crate::Backend::enqueue`] needs besides the message bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewQueuedMessage {
    /// The envelope sender; empty for a bounce (which is never bounced).
    pub return_path: String,
    /// The DSN envelope id (RFC 3461 `ENVID`), if the submitter gave one.
    pub envelope_id: Option<String>,
    /// Whether a failure notice returns the whole message (`RET=FULL`)
    /// rather than its header.
    pub return_full: bool,
    /// Recipients, each delivered and tracked on its own.
    pub recipients: Vec<NewQueueRecipient>,
    /// When the first attempt is due, Unix milliseconds.
    pub first_attempt_at: i64,
    /// After this time, undelivered recipients fail, Unix milliseconds.
    pub expires_at: i64,
}

/// One recipient of a queued message, as enqueued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewQueueRecipient {
    /// The address (as the submitter gave it).
    pub address: String,
    /// The DSN `NOTIFY` parameter (`NEVER`, or a list of `SUCCESS`,
    /// `FAILURE`, `DELAY`); `None` means the default (failure and delay).
    pub notify: Option<String>,
    /// The DSN `ORCPT` parameter, if given.
    pub original_recipient: Option<String>,
}

/// Where a queued recipient stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipientStatus {
    /// Still to be delivered.
    Pending,
    /// Accepted by the next hop (or stored locally).
    Delivered,
    /// Refused for good, or expired.
    Failed,
}

impl RecipientStatus {
    /// The stored name.
    pub fn name(self) -> &'static str {
        match self {
            RecipientStatus::Pending => "pending",
            RecipientStatus::Delivered => "delivered",
            RecipientStatus::Failed => "failed",
        }
    }

    /// Parses a stored name.
    pub fn from_name(name: &str) -> Option<RecipientStatus> {
        match name {
            "pending" => Some(RecipientStatus::Pending),
            "delivered" => Some(RecipientStatus::Delivered),
            "failed" => Some(RecipientStatus::Failed),
            _ => None,
        }
    }
}

/// One recipient of a queued message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRecipient {
    /// The address.
    pub address: String,
    /// Where it stands.
    pub status: RecipientStatus,
    /// Delivery attempts made.
    pub attempts: u32,
    /// When the next attempt is due, Unix milliseconds.
    pub next_attempt_at: i64,
    /// The last failure, as the next hop (or the lookup) reported it.
    pub last_error: Option<String>,
    /// The DSN `NOTIFY` parameter.
    pub notify: Option<String>,
    /// The DSN `ORCPT` parameter.
    pub original_recipient: Option<String>,
    /// Whether the sender was told of a delay already.
    pub delay_notified: bool,
}

/// How much the outbound queue holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueSize {
    /// Messages with a recipient still to deliver.
    pub messages: u64,
    /// Recipients still to deliver, over all messages.
    pub pending_recipients: u64,
}

/// A message in the outbound queue with its recipients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    /// Queue id.
    pub id: QueueId,
    /// The message bytes.
    pub blob: BlobId,
    /// Size in bytes.
    pub size: u64,
    /// The envelope sender; empty for a bounce.
    pub return_path: String,
    /// The DSN envelope id.
    pub envelope_id: Option<String>,
    /// Whether failure notices return the whole message.
    pub return_full: bool,
    /// When it was queued, Unix milliseconds.
    pub created_at: i64,
    /// When undelivered recipients expire, Unix milliseconds.
    pub expires_at: i64,
    /// Recipients still in the queue (pending ones and those settled in
    /// the same message, until the message leaves the queue).
    pub recipients: Vec<QueueRecipient>,
}

/// The result of one delivery attempt for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientUpdate {
    /// Delivered; the recipient leaves the queue.
    Delivered,
    /// Try again at `next_attempt_at`.
    Retry {
        /// When, Unix milliseconds.
        next_attempt_at: i64,
        /// Why this attempt failed.
        error: String,
        /// Whether a delay notice has now been sent.
        delay_notified: bool,
    },
    /// Failed for good.
    Failed {
        /// Why.
        error: String,
    },
}

/// A DKIM signing key of a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimKey {
    /// The selector (`s=` tag; the DNS name is `SELECTOR._domainkey.DOMAIN`).
    pub selector: String,
    /// `rsa-sha256` or `ed25519-sha256`.
    pub algorithm: String,
    /// The private key, PKCS#8 DER.
    pub private_key: Vec<u8>,
    /// The public key as published in DNS (`p=` tag), base64.
    pub public_key: String,
    /// Creation time, Unix milliseconds.
    pub created_at: i64,
}

/// One message of [`crate::Backend::deliver_batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchItem {
    /// The message bytes.
    pub raw: Vec<u8>,
    /// Its header facts.
    pub meta: EmailMeta,
    /// Where it goes.
    pub targets: Vec<Delivery>,
}

/// What a DAV collection holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DavKind {
    /// iCalendar objects (CalDAV).
    Calendar,
    /// vCards (CardDAV).
    AddressBook,
}

impl DavKind {
    /// Stored name.
    pub fn name(self) -> &'static str {
        match self {
            DavKind::Calendar => "calendar",
            DavKind::AddressBook => "addressbook",
        }
    }

    /// Parses a stored name.
    pub fn from_name(name: &str) -> Option<DavKind> {
        match name {
            "calendar" => Some(DavKind::Calendar),
            "addressbook" => Some(DavKind::AddressBook),
            _ => None,
        }
    }
}

/// Row id of a DAV collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DavCollectionId(pub i64);

/// A calendar or address book.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DavCollection {
    /// Row id.
    pub id: DavCollectionId,
    /// Owner.
    pub account: PrincipalId,
    /// Calendar or address book.
    pub kind: DavKind,
    /// Last path segment; unique per account and kind.
    pub name: String,
    /// Properties clients set.
    pub props: DavCollectionProps,
    /// For calendars: the component types it accepts, e.g. `VEVENT,VTODO`.
    pub components: String,
    /// The account modseq of the last change to the collection or any of
    /// its objects: its sync token and collection tag.
    pub modseq: ModSeq,
}

/// The client-settable properties of a collection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DavCollectionProps {
    /// `DAV:displayname`.
    pub display_name: String,
    /// `calendar-description` / `addressbook-description`.
    pub description: String,
    /// Calendar colour as clients send it (`#RRGGBB[AA]`).
    pub color: Option<String>,
}

/// One object (event, task, card) as listed, without its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DavObjectMeta {
    /// Last path segment, e.g. `abc.ics`.
    pub name: String,
    /// The iCalendar/vCard UID.
    pub uid: String,
    /// `VEVENT`, `VTODO`, `VJOURNAL` or `VCARD`.
    pub component: String,
    /// Modseq of its last change; the ETag is derived from it.
    pub modseq: ModSeq,
    /// Size of the data, bytes.
    pub size: u64,
    /// A tombstone left by a delete (only [`Backend::dav_changes_since`] returns these).
    ///
    /// [`Backend::dav_changes_since`]: crate::Backend::dav_changes_since
    pub deleted: bool,
}

/// One object with its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DavObject {
    /// What listing shows.
    pub meta: DavObjectMeta,
    /// The iCalendar or vCard text.
    pub data: String,
    /// Whether its recurrence goes on past the stored instances, so a time
    /// range beyond them must be checked by expanding the data.
    pub open_ended: bool,
}

/// Where an object occurs in time, for calendar time-range queries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimeSpans {
    /// `[start, end)` Unix seconds of each stored instance.
    pub instances: Vec<(i64, i64)>,
    /// Start of the last stored instance when the recurrence continues past
    /// it; `None` when `instances` is complete.
    pub expanded_until: Option<i64>,
}

/// An object to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDavObject {
    /// Last path segment.
    pub name: String,
    /// Its UID (unique among the collection's live objects).
    pub uid: String,
    /// Main component type.
    pub component: String,
    /// The text, already validated by the caller.
    pub data: String,
    /// For calendar objects: where it occurs in time.
    pub spans: Option<TimeSpans>,
}

/// A write's condition on the object's current state (HTTP `If-Match` /
/// `If-None-Match: *`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DavPrecondition {
    /// Write whatever is there.
    None,
    /// Only if the object exists with this modseq.
    Matches(ModSeq),
    /// Only if the object exists.
    Exists,
    /// Only if no object has the name.
    Absent,
}

/// What [`Backend::put_dav_object`] did.
///
/// [`Backend::put_dav_object`]: crate::Backend::put_dav_object
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DavPut {
    /// Whether the object is new.
    pub created: bool,
    /// Its modseq now.
    pub modseq: ModSeq,
}

/// Objects changed in a collection since a modseq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DavChanges {
    /// Changed and deleted objects (tombstones have `deleted`), oldest change first.
    pub objects: Vec<DavObjectMeta>,
    /// The collection's modseq: the token to continue from.
    pub modseq: ModSeq,
    /// More changes exist beyond `objects`; continue from the last one's modseq.
    pub truncated: bool,
}
