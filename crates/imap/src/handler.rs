//! The connection loop and command execution: the only part of the crate
//! that touches sockets, tokio and the store.
//!
//! Implementation notes:
//! * Store calls are blocking and run through [`Store::run`]; Argon2 runs
//!   on a blocking thread too.
//! * Every store write passes the session's [`Actor`].
//! * Mailbox names are resolved by `Conn::reach`, which gives the mailbox
//!   with the user's rights on it (all of them for their own; for another
//!   account's, those of a full-access grant and the mailbox's ACL,
//!   RFC 4314). Nothing else looks up mailboxes, so no command reaches
//!   another account's data without its rights checked, and every use of
//!   another account's mailbox is audited (reads here, writes by the store).
//! * After every command the selected view is refreshed when the account's
//!   change notifier reported a write; expunges are held back during
//!   FETCH, STORE and SEARCH (see `view.rs`).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bulwark_audit::Actor;
use bulwark_core::{
    ChangeNotice, EmailAddress, MailboxId, MailboxRole, ModSeq, PrincipalId, Right,
};
use bulwark_directory::{AuthError, Directory};
use bulwark_server::{Connection, ConnectionHandler};
use bulwark_store::{
    BatchItem, Delivery, Error as StoreError, KeywordUpdate, Mailbox, MessageEntry, Store,
};
use imap_codec::imap_types::command::{
    Command, CommandBody, FetchModifier, SelectParameter, StoreModifier,
};
use imap_codec::imap_types::core::{Charset, Vec1};
use imap_codec::imap_types::extensions::sort::{SortCriterion, SortKey};
use imap_codec::imap_types::extensions::thread::ThreadingAlgorithm;
use imap_codec::imap_types::fetch::MacroOrMessageDataItemNames;
use imap_codec::imap_types::flag::{Flag, StoreResponse, StoreType};
use imap_codec::imap_types::mailbox::{ListMailbox, Mailbox as WireMailbox};
use imap_codec::imap_types::search::SearchKey;
use imap_codec::imap_types::sequence::SequenceSet;
use imap_codec::imap_types::status::StatusDataItemName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::broadcast;

use crate::acl::{self, Rights};
use crate::envelopes::Envelopes;
use crate::fetch;
use crate::flags;
use crate::limits::Limits;
use crate::listext::{AppendItem, ExtendedList, ListOptions, SearchReturn};
use crate::listing::{Entry, Listings};
use crate::names::{self, NameError};
use crate::objectid;
use crate::out;
use crate::quota;
use crate::search;
use crate::session::{self, Input, Session, State};
use crate::sort;
use crate::view::{Ext, ResolveError, Unsolicited, View};

/// The IMAP front end, for [`bulwark_server::Server::register`] on
/// `Protocol::Imap` and `Protocol::Imaps`.
#[derive(Clone)]
pub struct ImapHandler {
    shared: Arc<Shared>,
}

struct Shared {
    directory: Directory,
    store: Store,
    limits: Limits,
    sessions: Arc<std::sync::Mutex<HashMap<PrincipalId, usize>>>,
    /// The newest listing of each selected mailbox, shared by its sessions.
    listings: Listings,
    /// ENVELOPEs already rendered, by message content.
    envelopes: Arc<Envelopes>,
}

/// One logged-in session counted against its account's limit; released
/// when the session ends, however it ends.
struct SessionSlot {
    account: PrincipalId,
    sessions: Arc<std::sync::Mutex<HashMap<PrincipalId, usize>>>,
}

impl SessionSlot {
    fn take(shared: &Shared, account: PrincipalId) -> Option<SessionSlot> {
        let mut sessions = shared.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let count = sessions.entry(account).or_insert(0);
        if *count >= shared.limits.max_sessions_per_account {
            return None;
        }
        *count += 1;
        Some(SessionSlot {
            account,
            sessions: Arc::clone(&shared.sessions),
        })
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = sessions.get_mut(&self.account) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                sessions.remove(&self.account);
            }
        }
    }
}

impl std::fmt::Debug for ImapHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImapHandler")
            .field("limits", &self.shared.limits)
            .finish_non_exhaustive()
    }
}

impl ImapHandler {
    /// A handler authenticating against `directory` and serving mail from
    /// its store.
    pub fn new(directory: Directory, limits: Limits) -> ImapHandler {
        let store = directory.store().clone();
        ImapHandler {
            shared: Arc::new(Shared {
                directory,
                store,
                limits,
                sessions: Arc::default(),
                listings: Listings::default(),
                envelopes: Arc::default(),
            }),
        }
    }
}

impl ConnectionHandler for ImapHandler {
    fn handle(&self, conn: Connection) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        Box::pin(serve(Arc::clone(&self.shared), conn))
    }

    fn busy_reply(&self) -> Option<&'static [u8]> {
        Some(b"* BYE too many connections\r\n")
    }
}

/// The logged-in user.
struct User {
    account: PrincipalId,
    actor: Actor,
    _slot: SessionSlot,
}

/// The selected mailbox.
struct Selected {
    mailbox: Mailbox,
    read_only: bool,
    /// The user's rights on it.
    rights: Rights,
    /// The owner's address, when it is another account's mailbox.
    owner: Option<String>,
    view: View,
}

/// A mailbox as the logged-in user reaches it.
#[derive(Debug, Clone)]
struct Reached {
    mailbox: Mailbox,
    /// The name the user knows it by: the stored name, or the namespace
    /// form for another account's mailbox.
    name: String,
    rights: Rights,
    /// The owner's address, when it is another account's mailbox.
    owner: Option<String>,
}

impl Reached {
    /// Refuses unless the user holds `letter` (RFC 4314 section 4).
    fn require(&self, letter: u8, what: &str) -> Result<(), Refusal> {
        if self.rights.has(letter) {
            Ok(())
        } else {
            Err(Refusal::no(
                Some("NOPERM"),
                format!("You have no right to {what} in this mailbox"),
            ))
        }
    }
}

/// What `user` may do in `owner`'s `mailbox`: a full-access grant plus the
/// mailbox's own entry for the user.
fn effective_rights(
    b: &dyn bulwark_store::Backend,
    user: PrincipalId,
    owner: PrincipalId,
    mailbox: MailboxId,
) -> Result<Rights, StoreError> {
    if user == owner {
        return Ok(Rights::all());
    }
    let mut rights = Rights::default();
    if b.grants(Some(owner), Some(user))?
        .iter()
        .any(|g| g.right == Right::FullAccess)
    {
        rights = rights.union(Rights::full_access());
    }
    for (grantee, letters) in b.mailbox_rights(owner, mailbox)? {
        if grantee == user {
            rights = rights.union(Rights::parse(&letters).unwrap_or_default());
        }
    }
    Ok(rights)
}

/// Every mailbox `user` can see: their own, and other accounts' where they
/// hold the `l` right, named in the shared namespaces.
fn visible(b: &dyn bulwark_store::Backend, user: PrincipalId) -> Result<Vec<Reached>, StoreError> {
    let mut out: Vec<Reached> = b
        .mailboxes(user)?
        .into_iter()
        .map(|m| Reached {
            name: m.name.clone(),
            mailbox: m,
            rights: Rights::all(),
            owner: None,
        })
        .collect();
    let mut owners: Vec<PrincipalId> = b
        .grants(None, Some(user))?
        .into_iter()
        .filter(|g| g.right == Right::FullAccess && g.grantor != user)
        .map(|g| g.grantor)
        .collect();
    owners.extend(
        b.rights_granted_to(user)?
            .into_iter()
            .map(|(owner, _, _)| owner),
    );
    owners.sort_unstable();
    owners.dedup();
    for owner in owners {
        let Some(principal) = b.principal(owner)? else {
            continue;
        };
        let namespace = acl::namespace_of(principal.kind);
        let address = principal.address.to_string();
        for m in b.mailboxes(owner)? {
            let rights = effective_rights(b, user, owner, m.id)?;
            if !rights.has(b'l') {
                continue;
            }
            out.push(Reached {
                name: acl::foreign_name(namespace, &address, &m.name),
                mailbox: m,
                rights,
                owner: Some(address.clone()),
            });
        }
    }
    Ok(out)
}

/// How the loop goes on after a command.
enum Flow {
    Continue,
    Close,
}

/// Everything one connection keeps.
struct Conn {
    shared: Arc<Shared>,
    session: Session,
    user: Option<User>,
    selected: Option<Selected>,
    changes: Option<broadcast::Receiver<ChangeNotice>>,
    /// Change notices of the selected mailbox's account, when it is not
    /// the user's own.
    foreign_changes: Option<broadcast::Receiver<ChangeNotice>>,
    /// The store reported writes the view has not caught up with.
    dirty: bool,
    /// The account's own mailbox rows, kept until a notice of the account
    /// is taken off `changes`; see `own_mailboxes`.
    own_rows: std::sync::Mutex<Option<Arc<Vec<Mailbox>>>>,
}

/// A failed command: its answer.
struct Refusal {
    kind: &'static str,
    code: Option<String>,
    text: String,
}

impl Refusal {
    fn no(code: Option<&str>, text: impl Into<String>) -> Refusal {
        Refusal {
            kind: "NO",
            code: code.map(str::to_string),
            text: text.into(),
        }
    }

    fn bad(text: impl Into<String>) -> Refusal {
        Refusal {
            kind: "BAD",
            code: None,
            text: text.into(),
        }
    }
}

impl From<StoreError> for Refusal {
    /// User errors become NO with their text; server faults are logged and
    /// answered without detail (mox's split, STYLE.md).
    fn from(e: StoreError) -> Refusal {
        match &e {
            StoreError::NotFound { .. } => Refusal::no(Some("NONEXISTENT"), e.to_string()),
            StoreError::AlreadyExists { .. } => Refusal::no(Some("ALREADYEXISTS"), e.to_string()),
            StoreError::QuotaExceeded { .. } => Refusal::no(Some("OVERQUOTA"), e.to_string()),
            _ if e.is_user_error() => Refusal::no(Some("CANNOT"), e.to_string()),
            _ => {
                tracing::error!(error = %e, "storage failure in IMAP command");
                Refusal::no(Some("SERVERBUG"), "Internal error; try again later")
            }
        }
    }
}

impl From<NameError> for Refusal {
    fn from(e: NameError) -> Refusal {
        Refusal::no(Some("CANNOT"), e.text())
    }
}

type CmdResult = Result<(Vec<u8>, String), Refusal>;

/// The account, `(sequence number, entry)` pairs and scope a search runs over.
type Candidates = (PrincipalId, Vec<(u32, Entry)>, search::Scope);

/// Message bytes in the first chunk of a FETCH that reads messages.
const FIRST_FETCH_CHUNK_BYTES: u64 = 256 * 1024;

/// Reads and renders one chunk of a FETCH: the responses, whether a
/// message's bytes were gone, and whether a part has an encoding BINARY
/// cannot decode (the rendering then stops there).
fn render_fetch_chunk(
    b: &dyn bulwark_store::Backend,
    account: PrincipalId,
    plan: &fetch::Plan,
    envelopes: &Envelopes,
    chunk: &[(u32, Entry, bool, bool)],
) -> Result<(Vec<u8>, bool, bool), StoreError> {
    let mut bytes = Vec::new();
    let mut missing = false;
    for (msn, entry, with_flags, gone) in chunk {
        let thread = if plan.asks_thread() {
            b.email(account, entry.email)?.map(|r| r.thread)
        } else {
            None
        };
        let known_envelope = if plan.asks_envelope() {
            envelopes.get(&entry.blob)
        } else {
            None
        };
        let skip_bytes = known_envelope.is_some() && plan.envelope_suffices();
        let raw = if plan.needs_body && !skip_bytes {
            match b.read_blob(&entry.blob) {
                Ok(raw) => Some(raw),
                Err(e) => {
                    if !gone {
                        tracing::warn!(error = %e, uid = entry.uid, "message bytes unreadable");
                    }
                    missing = true;
                    continue;
                }
            }
        } else {
            None
        };
        if let Some(raw) = &raw
            && plan.unknown_cte(raw)
        {
            // RFC 3516 section 4.3: the whole command fails.
            return Ok((bytes, missing, true));
        }
        let envelope = match (known_envelope, &raw) {
            (Some(known), _) => Some(known),
            (None, Some(raw)) if plan.asks_envelope() => {
                let made: Arc<[u8]> = fetch::envelope_of(raw).into();
                envelopes.insert(entry.blob, made.clone());
                Some(made)
            }
            _ => None,
        };
        let source = fetch::Source {
            raw: raw.as_deref(),
            envelope: envelope.as_deref(),
            thread,
        };
        fetch::render_into(&mut bytes, *msn, entry, plan, *with_flags, &source);
    }
    Ok((bytes, missing, false))
}

async fn send(conn: &mut Connection, bytes: &[u8]) -> bool {
    if bytes.is_empty() {
        return true;
    }
    conn.stream.write_all(bytes).await.is_ok() && conn.stream.flush().await.is_ok()
}

async fn serve(shared: Arc<Shared>, mut conn: Connection) {
    let session = Session::new(shared.limits.clone(), conn.info.tls, conn.tls_available());
    let mut c = Conn {
        shared,
        session,
        user: None,
        selected: None,
        changes: None,
        foreign_changes: None,
        dirty: false,
        own_rows: std::sync::Mutex::new(None),
    };
    if !send(&mut conn, &c.session.greeting()).await {
        return;
    }
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while let Some(input) = c.session.next_input() {
            match input {
                Input::Write(bytes) => {
                    if !send(&mut conn, &bytes).await {
                        return;
                    }
                }
                Input::Close(bytes) => {
                    let _ = send(&mut conn, &bytes).await;
                    return;
                }
                Input::StartTls(tag) => {
                    if c.session.tls || !conn.tls_available() {
                        let reply = out::status(&tag, "BAD", None, "STARTTLS not available");
                        if !send(&mut conn, &reply).await {
                            return;
                        }
                        continue;
                    }
                    if c.session.state != State::NotAuthenticated {
                        let reply = out::status(&tag, "BAD", None, "Already authenticated");
                        if !send(&mut conn, &reply).await {
                            return;
                        }
                        continue;
                    }
                    let reply = out::status(&tag, "OK", None, "Begin TLS negotiation now");
                    if !send(&mut conn, &reply).await {
                        return;
                    }
                    // RFC 9051 section 6.2.1: nothing sent before the
                    // handshake counts.
                    c.session.start_tls();
                    conn = match conn.start_tls().await {
                        Ok(upgraded) => upgraded,
                        Err(_) => return,
                    };
                }
                Input::Command(command) => match c.execute(&mut conn, command).await {
                    Flow::Continue => {}
                    Flow::Close => return,
                },
                Input::MultiAppend(tag, mailbox, items) => {
                    let result = c.multiappend(&mailbox, items).await;
                    match c.finish(&mut conn, &tag, result, true, false).await {
                        Flow::Continue => {}
                        Flow::Close => return,
                    }
                }
                Input::List(tag, list) => {
                    let result = c.list_extended(list).await;
                    match c.finish(&mut conn, &tag, result, true, false).await {
                        Flow::Continue => {}
                        Flow::Close => return,
                    }
                }
                Input::Acl(tag, command) => {
                    let result = c.acl(command).await;
                    match c.finish(&mut conn, &tag, result, true, false).await {
                        Flow::Continue => {}
                        Flow::Close => return,
                    }
                }
            }
        }
        tokio::select! {
            read = conn.stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => c.session.feed(&buf[..n]),
            },
            () = conn.shutdown.wait() => {
                let _ = send(&mut conn, &session::bye("Server shutting down")).await;
                return;
            }
        }
    }
}

/// A SEARCH/SORT/THREAD charset name.
fn charset_name(charset: &Charset<'_>) -> String {
    match charset {
        Charset::Atom(a) => a.inner().to_string(),
        Charset::Quoted(q) => q.inner().to_string(),
    }
}

/// Refused unless UTF-8 or US-ASCII (RFC 9051 section 6.4.4, RFC 5256
/// section 3).
fn check_charset(charset: &str) -> Result<(), Refusal> {
    if charset.eq_ignore_ascii_case("UTF-8") || charset.eq_ignore_ascii_case("US-ASCII") {
        Ok(())
    } else {
        Err(Refusal::no(
            Some("BADCHARSET (UTF-8 US-ASCII)"),
            "Unsupported charset",
        ))
    }
}

/// The mailbox part of the first Cc address, lower case (RFC 5256
/// section 3, CC).
fn first_cc(raw: &[u8]) -> String {
    let end = crate::mime::header_end(raw, 0, raw.len());
    mail_parser::MessageParser::default()
        .parse_headers(&raw[..end])
        .and_then(|m| {
            m.cc()
                .and_then(|a| a.first())
                .and_then(|a| a.address())
                .map(|a| {
                    a.rsplit_once('@')
                        .map_or(a, |(mailbox, _)| mailbox)
                        .to_lowercase()
                })
        })
        .unwrap_or_default()
}

/// What SORT or THREAD does with the matching messages.
enum Arrangement {
    /// SORT with these criteria.
    Sort(Vec<SortCriterion>),
    /// THREAD=ORDEREDSUBJECT.
    OrderedSubject,
    /// THREAD=REFERENCES.
    References,
}

/// Mailbox bytes from the wire.
fn wire_name(mailbox: &WireMailbox<'_>) -> Vec<u8> {
    match mailbox {
        WireMailbox::Inbox => b"INBOX".to_vec(),
        WireMailbox::Other(other) => other.as_ref().to_vec(),
    }
}

/// Finds `name` (stored form, possibly in a shared namespace) for `user`,
/// with the user's rights. `None` when it does not exist or the user holds
/// no right on it: the two are never told apart.
fn reach_foreign_blocking(
    b: &dyn bulwark_store::Backend,
    user: PrincipalId,
    name: &str,
) -> Result<Option<Reached>, StoreError> {
    match acl::place(name) {
        acl::Place::Own(_) | acl::Place::Virtual => Ok(None),
        acl::Place::Foreign {
            namespace,
            owner,
            path,
        } => {
            let Ok(address) = owner.parse::<EmailAddress>() else {
                return Ok(None);
            };
            let Some(principal) = b.principal_by_address(&address)? else {
                return Ok(None);
            };
            // Only the primary address names an account here, and only in
            // its own namespace; one's own mailboxes have no second name.
            if principal.address != address
                || acl::namespace_of(principal.kind) != namespace
                || principal.id == user
            {
                return Ok(None);
            }
            let Some(mailbox) = b
                .mailboxes(principal.id)?
                .into_iter()
                .find(|m| m.name == path)
            else {
                return Ok(None);
            };
            let rights = effective_rights(b, user, principal.id, mailbox.id)?;
            if rights.is_empty() {
                return Ok(None);
            }
            Ok(Some(Reached {
                name: acl::foreign_name(namespace, principal.address.as_str(), &mailbox.name),
                mailbox,
                rights,
                owner: Some(principal.address.to_string()),
            }))
        }
    }
}

/// UIDs removed from `mailbox` after `since`, ascending, from the account
/// change log (RFC 7162 section 3.2.5.1 and 3.2.6: VANISHED (EARLIER)).
pub(crate) fn destroyed_since(
    b: &dyn bulwark_store::Backend,
    account: PrincipalId,
    mailbox: MailboxId,
    since: u64,
) -> Result<Vec<u32>, StoreError> {
    const PAGE: usize = 1000;
    let mut after = ModSeq(since);
    let mut uids = Vec::new();
    loop {
        let page = b.changes_since(account, after, PAGE)?;
        let Some(last) = page.last().map(|c| c.modseq) else {
            break;
        };
        for c in &page {
            if c.object_type == bulwark_core::ObjectType::Email
                && c.kind == bulwark_core::ChangeKind::Destroyed
                && c.mailbox_id == Some(mailbox.0)
                && let Some(uid) = c.uid
            {
                uids.push(uid);
            }
        }
        if page.len() < PAGE || last <= after {
            break;
        }
        after = last;
    }
    uids.sort_unstable();
    uids.dedup();
    Ok(uids)
}

/// The standard mailboxes (RFC 6154 special use), created on first login.
const STANDARD: [(&str, MailboxRole); 6] = [
    ("INBOX", MailboxRole::Inbox),
    ("Drafts", MailboxRole::Drafts),
    ("Sent", MailboxRole::Sent),
    ("Junk", MailboxRole::Junk),
    ("Trash", MailboxRole::Trash),
    ("Archive", MailboxRole::Archive),
];

fn role_attribute(role: Option<MailboxRole>) -> Option<&'static str> {
    match role? {
        MailboxRole::Inbox => None,
        MailboxRole::Drafts => Some("\\Drafts"),
        MailboxRole::Sent => Some("\\Sent"),
        MailboxRole::Junk => Some("\\Junk"),
        MailboxRole::Trash => Some("\\Trash"),
        MailboxRole::Archive => Some("\\Archive"),
    }
}

fn ensure_standard(
    b: &dyn bulwark_store::Backend,
    actor: &Actor,
    account: PrincipalId,
) -> Result<(), StoreError> {
    let existing = b.mailboxes(account)?;
    for (name, role) in STANDARD {
        let taken = existing
            .iter()
            .any(|m| m.role == Some(role) || m.name == name);
        if taken {
            continue;
        }
        match b.create_mailbox(actor, account, name, Some(role), None) {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `AUTHENTICATE PLAIN` message (RFC 4616): authzid NUL authcid NUL passwd.
fn sasl_plain(message: &[u8]) -> Option<(String, String)> {
    let mut parts = message.split(|&b| b == 0);
    let authz = parts.next()?;
    let authc = std::str::from_utf8(parts.next()?).ok()?;
    let password = std::str::from_utf8(parts.next()?).ok()?;
    if parts.next().is_some() {
        return None;
    }
    // Acting as someone else needs delegation, which is not offered yet.
    if !authz.is_empty() && authz != authc.as_bytes() {
        return None;
    }
    Some((authc.to_string(), password.to_string()))
}

impl Conn {
    fn utf8(&self) -> bool {
        self.session.rev2 || self.session.utf8_accept
    }

    fn ext(&self) -> Ext {
        Ext {
            condstore: self.session.condstore,
            qresync: self.session.qresync,
        }
    }

    fn account(&self) -> Result<PrincipalId, Refusal> {
        self.user
            .as_ref()
            .map(|u| u.account)
            .ok_or_else(|| Refusal::bad("Log in first"))
    }

    fn actor(&self) -> Result<Actor, Refusal> {
        self.user
            .as_ref()
            .map(|u| u.actor.clone())
            .ok_or_else(|| Refusal::bad("Log in first"))
    }

    fn name(&self, mailbox: &WireMailbox<'_>) -> Result<String, Refusal> {
        Ok(names::from_client(&wire_name(mailbox), self.utf8())?)
    }

    /// The mailbox `name` as this user reaches it, if it exists for them.
    async fn reach(&self, name: &str) -> Result<Option<Reached>, Refusal> {
        let user = self.account()?;
        if let acl::Place::Own(own) = acl::place(name) {
            let rows = self.own_mailboxes(user).await?;
            return Ok(rows.iter().find(|m| m.name == own).map(|m| Reached {
                name: m.name.clone(),
                mailbox: m.clone(),
                rights: Rights::all(),
                owner: None,
            }));
        }
        let name = name.to_string();
        Ok(self
            .shared
            .store
            .run(move |b| reach_foreign_blocking(b, user, &name))
            .await?)
    }

    /// The user's own mailbox rows. They are kept between commands while
    /// no notice of the account has arrived since they were read: every
    /// write publishes its notice before it is acknowledged, so a change
    /// acknowledged to anyone before this call is either in the kept rows
    /// or waiting on `changes`, and then the rows are read again. Taking a
    /// notice off the channel drops the kept rows (`forget_own_rows`).
    async fn own_mailboxes(&self, user: PrincipalId) -> Result<Arc<Vec<Mailbox>>, Refusal> {
        let quiet = self.changes.as_ref().is_some_and(|rx| rx.is_empty());
        if quiet && let Some(rows) = self.own_rows.lock().expect("own rows").as_ref() {
            return Ok(rows.clone());
        }
        let rows = Arc::new(self.shared.store.run(move |b| b.mailboxes(user)).await?);
        if quiet {
            *self.own_rows.lock().expect("own rows") = Some(rows.clone());
        }
        Ok(rows)
    }

    fn forget_own_rows(&mut self) {
        *self.own_rows.get_mut().expect("own rows") = None;
    }

    /// One of the user's own mailboxes, for commands that change the
    /// mailbox tree (CREATE, RENAME, DELETE): other accounts' trees are
    /// their owners' to change.
    async fn own_mailbox(&self, name: &str) -> Result<Mailbox, Refusal> {
        let reached = self.mailbox(name).await?;
        if reached.owner.is_some() {
            return Err(Refusal::no(
                Some("NOPERM"),
                "Only the owner can rename or delete this mailbox",
            ));
        }
        Ok(reached.mailbox)
    }

    /// Like `reach`, refusing a mailbox that does not exist for the user.
    async fn mailbox(&self, name: &str) -> Result<Reached, Refusal> {
        self.reach(name)
            .await?
            .ok_or_else(|| Refusal::no(Some("NONEXISTENT"), "No such mailbox"))
    }

    /// Records a read of another account's mailbox in the audit log; the
    /// read is refused when it cannot be recorded.
    async fn audit_foreign(
        &self,
        operation: &str,
        owner: &Option<String>,
        mailbox: &Mailbox,
        items: u64,
    ) -> Result<(), Refusal> {
        let Some(owner) = owner else {
            return Ok(());
        };
        let actor = self.actor()?;
        let mut event = actor.event(operation, Some((owner, Some(mailbox.account.0))));
        event.object_ids = vec![mailbox.id.to_string()];
        event.item_count = items;
        self.shared
            .store
            .run(move |b| b.append_audit(event))
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "cannot audit a delegated read; refusing it");
                Refusal::no(
                    Some("UNAVAILABLE"),
                    "Cannot record this access; try again later",
                )
            })?;
        Ok(())
    }

    /// Takes notices off the channels, marking the view dirty when any
    /// arrived.
    fn drain_notices(&mut self) {
        let mut own_changed = false;
        if let Some(rx) = self.changes.as_mut() {
            while let Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) = rx.try_recv() {
                own_changed = true;
            }
        }
        if own_changed {
            self.dirty = true;
            self.forget_own_rows();
        }
        if let Some(rx) = self.foreign_changes.as_mut() {
            while let Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) = rx.try_recv() {
                self.dirty = true;
            }
        }
    }

    /// Brings the selected view up to date and returns the untagged
    /// responses; `Err` carries a BYE when the mailbox vanished.
    async fn refresh(&mut self, allow_expunge: bool, uid: bool) -> Result<Vec<u8>, Vec<u8>> {
        self.drain_notices();
        let ext = self.ext();
        let Some(selected) = self.selected.as_mut() else {
            self.dirty = false;
            return Ok(Vec::new());
        };
        if !self.dirty {
            return Ok(Vec::new());
        }
        let (account, mailbox) = (selected.mailbox.account, selected.mailbox.id);
        // The shared listing is brought up to date with only what changed
        // since; the view compares itself with it chunk by chunk.
        let latest = match self
            .shared
            .listings
            .latest(&self.shared.store, account, mailbox)
            .await
        {
            Ok(latest) => latest,
            Err(StoreError::NotFound { .. }) => {
                return Err(session::bye("The selected mailbox was deleted"));
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot refresh the selected mailbox");
                return Ok(Vec::new());
            }
        };
        let mut out = Vec::new();
        let updates = selected.view.catch_up(latest, allow_expunge);
        if ext.qresync {
            // RFC 7162 section 3.2.10: one VANISHED for all the expunges.
            let mut gone: Vec<u32> = updates
                .iter()
                .filter_map(|u| match u {
                    Unsolicited::Expunge { uid, .. } => Some(*uid),
                    _ => None,
                })
                .collect();
            if !gone.is_empty() {
                gone.sort_unstable();
                out.extend_from_slice(
                    format!("* VANISHED {}\r\n", out::compact_set(&gone)).as_bytes(),
                );
            }
        }
        for u in updates {
            if ext.qresync && matches!(u, Unsolicited::Expunge { .. }) {
                continue;
            }
            out.extend_from_slice(u.render(uid, ext).as_bytes());
        }
        self.dirty = selected.view.has_ghosts();
        Ok(out)
    }

    async fn execute(&mut self, conn: &mut Connection, command: Command<'static>) -> Flow {
        let tag = command.tag.inner().to_string();
        // RFC 9051 section 7.5.1: no EXPUNGE while answering FETCH, STORE
        // or SEARCH by sequence number.
        let (allow_expunge, uid) = match &command.body {
            CommandBody::Fetch { uid, .. }
            | CommandBody::Store { uid, .. }
            | CommandBody::Search { uid, .. }
            | CommandBody::Sort { uid, .. }
            | CommandBody::Thread { uid, .. } => (*uid, *uid),
            CommandBody::Copy { uid, .. } | CommandBody::Move { uid, .. } => (true, *uid),
            _ => (true, false),
        };
        let search_return = self.session.search_return.take();
        let search_ids = self.session.search_ids.take();
        let result = match command.body {
            CommandBody::Capability => Ok((
                format!("* CAPABILITY {}\r\n", self.session.capabilities()).into_bytes(),
                "CAPABILITY completed".into(),
            )),
            CommandBody::Noop => Ok((Vec::new(), "NOOP completed".into())),
            // Every write is durable when it returns, so a checkpoint has
            // nothing left to do (RFC 3501 section 6.4.1).
            CommandBody::Check => Ok((Vec::new(), "CHECK completed".into())),
            CommandBody::Logout => {
                self.session.state = State::Logout;
                let mut bytes = session::bye("Logging out");
                bytes.extend_from_slice(&out::status(&tag, "OK", None, "LOGOUT completed"));
                // The client may reconnect as soon as it reads this.
                conn.release_slot();
                let _ = send(conn, &bytes).await;
                return Flow::Close;
            }
            CommandBody::Id { .. } => Ok((
                b"* ID (\"name\" \"Bulwark\")\r\n".to_vec(),
                "ID completed".into(),
            )),
            CommandBody::Namespace => Ok((
                b"* NAMESPACE ((\"\" \"/\")) ((\"Other Users/\" \"/\")) ((\"Shared Folders/\" \"/\"))\r\n"
                    .to_vec(),
                "NAMESPACE completed".into(),
            )),
            CommandBody::Enable { capabilities } => {
                let mut enabled = Vec::new();
                for cap in capabilities.as_ref() {
                    let text = cap.to_string();
                    if text.eq_ignore_ascii_case("IMAP4rev2") {
                        self.session.rev2 = true;
                        enabled.push("IMAP4rev2");
                    } else if text.eq_ignore_ascii_case("CONDSTORE") {
                        // RFC 7162 section 3.1.
                        self.session.condstore = true;
                        enabled.push("CONDSTORE");
                    } else if text.eq_ignore_ascii_case("UTF8=ACCEPT") {
                        // RFC 6855 section 3.
                        self.session.utf8_accept = true;
                        enabled.push("UTF8=ACCEPT");
                    } else if text.eq_ignore_ascii_case("QRESYNC") {
                        // RFC 7162 section 3.2.3: QRESYNC implies CONDSTORE.
                        self.session.condstore = true;
                        self.session.qresync = true;
                        enabled.push("QRESYNC");
                    }
                }
                Ok((
                    format!("* ENABLED {}\r\n", enabled.join(" "))
                        .replace(" \r\n", "\r\n")
                        .into_bytes(),
                    "ENABLE completed".into(),
                ))
            }
            CommandBody::Login { username, password } => {
                let login = String::from_utf8_lossy(username.as_ref()).into_owned();
                let secret = String::from_utf8_lossy(password.declassify().as_ref()).into_owned();
                return self.login(conn, &tag, login, secret).await;
            }
            CommandBody::Authenticate {
                mechanism,
                initial_response,
            } => {
                return self
                    .authenticate(
                        conn,
                        &tag,
                        mechanism.to_string(),
                        initial_response.map(|r| r.declassify().to_vec()),
                    )
                    .await;
            }
            CommandBody::Select {
                mailbox,
                parameters,
            } => self.select(&mailbox, false, &parameters).await,
            CommandBody::Examine {
                mailbox,
                parameters,
            } => self.select(&mailbox, true, &parameters).await,
            CommandBody::Create { mailbox } => self.create(&mailbox).await,
            CommandBody::Delete { mailbox } => self.delete(&mailbox).await,
            CommandBody::Rename { from, to } => self.rename(&from, &to).await,
            CommandBody::Subscribe { .. } | CommandBody::Unsubscribe { .. } => {
                // Every mailbox counts as subscribed (LSUB lists them all).
                Ok((Vec::new(), "Done".into()))
            }
            CommandBody::List {
                reference,
                mailbox_wildcard,
            } => self.list(&reference, &mailbox_wildcard, false).await,
            CommandBody::Lsub {
                reference,
                mailbox_wildcard,
            } => self.list(&reference, &mailbox_wildcard, true).await,
            CommandBody::Status {
                mailbox,
                item_names,
            } => self.status(&mailbox, &item_names).await,
            CommandBody::Append {
                mailbox,
                flags,
                date,
                message,
            } => {
                let received_at = date.map(|d| d.as_ref().timestamp_millis());
                let raw = match message {
                    imap_codec::imap_types::extensions::binary::LiteralOrLiteral8::Literal(l) => {
                        l.into_inner().into_owned()
                    }
                    imap_codec::imap_types::extensions::binary::LiteralOrLiteral8::Literal8(l) => {
                        l.data.into_owned()
                    }
                };
                self.append(&mailbox, &flags, received_at, raw).await
            }
            CommandBody::Idle => return self.idle(conn, &tag).await,
            CommandBody::Close => self.close(true).await,
            CommandBody::Unselect => self.close(false).await,
            CommandBody::Expunge => self.expunge(None).await,
            CommandBody::ExpungeUid { sequence_set } => self.expunge(Some(sequence_set)).await,
            CommandBody::Search {
                charset,
                criteria,
                uid,
            } => {
                self.search(
                    &tag,
                    charset.as_ref().map(charset_name),
                    criteria,
                    uid,
                    search_return,
                    search_ids,
                )
                .await
            }
            CommandBody::Fetch {
                sequence_set,
                macro_or_item_names,
                uid,
                modifiers,
            } => {
                return self
                    .fetch(
                        conn,
                        &tag,
                        &sequence_set,
                        &macro_or_item_names,
                        uid,
                        &modifiers,
                    )
                    .await;
            }
            CommandBody::Store {
                sequence_set,
                kind,
                response,
                flags,
                uid,
                modifiers,
            } => {
                self.store(&sequence_set, kind, response, &flags, uid, &modifiers)
                    .await
            }
            CommandBody::Copy {
                sequence_set,
                mailbox,
                uid,
            } => self.copy(&sequence_set, &mailbox, uid, false).await,
            CommandBody::Move {
                sequence_set,
                mailbox,
                uid,
            } => self.copy(&sequence_set, &mailbox, uid, true).await,
            CommandBody::Sort {
                sort_criteria,
                charset,
                search_criteria,
                uid,
            } => {
                self.sort(
                    Arrangement::Sort(sort_criteria.into_iter().collect()),
                    &charset_name(&charset),
                    search_criteria,
                    uid,
                )
                .await
            }
            CommandBody::Thread {
                algorithm,
                charset,
                search_criteria,
                uid,
            } => {
                let ordering = match algorithm {
                    ThreadingAlgorithm::OrderedSubject => Arrangement::OrderedSubject,
                    ThreadingAlgorithm::References => Arrangement::References,
                    ThreadingAlgorithm::Other(_) => {
                        return self
                            .finish(
                                conn,
                                &tag,
                                Err(Refusal::bad("Unknown threading algorithm")),
                                allow_expunge,
                                uid,
                            )
                            .await;
                    }
                };
                self.sort(ordering, &charset_name(&charset), search_criteria, uid)
                    .await
            }
            CommandBody::GetQuotaRoot { mailbox } => self.get_quota_root(&mailbox).await,
            CommandBody::GetQuota { root } => self.get_quota(root.as_ref()).await,
            // RFC 9208 section 4.3.3: quotas are an administrator's
            // business here (`bulwark user quota`).
            CommandBody::SetQuota { .. } => Err(Refusal::no(
                Some("NOPERM"),
                "Quotas are set by the administrator",
            )),
            _ => Err(Refusal::bad("Command not supported")),
        };
        self.finish(conn, &tag, result, allow_expunge, uid).await
    }

    /// Writes a command's data, the view's updates and the tagged answer.
    async fn finish(
        &mut self,
        conn: &mut Connection,
        tag: &str,
        result: CmdResult,
        allow_expunge: bool,
        uid: bool,
    ) -> Flow {
        let mut bytes = Vec::new();
        let mut bye = None;
        match result {
            Ok((data, text)) => {
                self.session.good();
                bytes.extend_from_slice(&data);
                match self.refresh(allow_expunge, uid).await {
                    Ok(updates) => bytes.extend_from_slice(&updates),
                    Err(b) => bye = Some(b),
                }
                bytes.extend_from_slice(&out::status(tag, "OK", None, &text));
            }
            Err(refusal) => {
                if refusal.kind == "BAD" {
                    bye = self.session.bad();
                } else {
                    self.session.good();
                    match self.refresh(allow_expunge, uid).await {
                        Ok(updates) => bytes.extend_from_slice(&updates),
                        Err(b) => bye = Some(b),
                    }
                }
                bytes.extend_from_slice(&out::status(
                    tag,
                    refusal.kind,
                    refusal.code.as_deref(),
                    &refusal.text,
                ));
            }
        }
        if let Some(b) = &bye {
            bytes.extend_from_slice(b);
        }
        if !send(conn, &bytes).await || bye.is_some() {
            return Flow::Close;
        }
        Flow::Continue
    }

    async fn login(
        &mut self,
        conn: &mut Connection,
        tag: &str,
        login: String,
        secret: String,
    ) -> Flow {
        if !self.session.tls {
            // RFC 9051 section 6.2.3 with LOGINDISABLED.
            let reply = out::status(
                tag,
                "NO",
                Some("PRIVACYREQUIRED"),
                "Log in over TLS (STARTTLS first)",
            );
            return if send(conn, &reply).await {
                Flow::Continue
            } else {
                Flow::Close
            };
        }
        self.check_credentials(conn, tag, login, secret).await
    }

    async fn authenticate(
        &mut self,
        conn: &mut Connection,
        tag: &str,
        mechanism: String,
        initial: Option<Vec<u8>>,
    ) -> Flow {
        if !mechanism.eq_ignore_ascii_case("PLAIN") {
            let reply = out::status(tag, "NO", Some("CANNOT"), "Unsupported mechanism");
            return if send(conn, &reply).await {
                Flow::Continue
            } else {
                Flow::Close
            };
        }
        if !self.session.tls {
            let reply = out::status(tag, "NO", Some("PRIVACYREQUIRED"), "Authenticate over TLS");
            return if send(conn, &reply).await {
                Flow::Continue
            } else {
                Flow::Close
            };
        }
        let message = match initial {
            // SASL-IR (RFC 4959).
            Some(message) => message,
            None => {
                if !send(conn, b"+ \r\n").await {
                    return Flow::Close;
                }
                let line = match self.read_line(conn).await {
                    Some(Ok(line)) => line,
                    Some(Err(bye)) => {
                        let _ = send(conn, &bye).await;
                        return Flow::Close;
                    }
                    None => return Flow::Close,
                };
                if line == b"*" {
                    let reply = out::status(tag, "BAD", None, "Authentication cancelled");
                    return if send(conn, &reply).await {
                        Flow::Continue
                    } else {
                        Flow::Close
                    };
                }
                use base64::Engine as _;
                match base64::engine::general_purpose::STANDARD.decode(&line) {
                    Ok(message) => message,
                    Err(_) => {
                        let reply = out::status(tag, "BAD", None, "Invalid base64");
                        return if send(conn, &reply).await {
                            Flow::Continue
                        } else {
                            Flow::Close
                        };
                    }
                }
            }
        };
        match sasl_plain(&message) {
            Some((login, secret)) => self.check_credentials(conn, tag, login, secret).await,
            None => {
                // Malformed or a foreign authorization identity: counted
                // like a wrong password.
                self.shared.directory.limiter().record_failure(
                    "",
                    conn.info.peer.ip(),
                    Instant::now(),
                );
                self.auth_failed(conn, tag, "Authentication failed").await
            }
        }
    }

    async fn read_line(&mut self, conn: &mut Connection) -> Option<Result<Vec<u8>, Vec<u8>>> {
        let mut buf = vec![0u8; 4096];
        loop {
            if let Some(line) = self.session.next_line() {
                return Some(line);
            }
            match conn.stream.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.session.feed(&buf[..n]),
            }
        }
    }

    async fn auth_failed(&mut self, conn: &mut Connection, tag: &str, text: &str) -> Flow {
        self.session.auth_failures += 1;
        let mut reply = out::status(tag, "NO", Some("AUTHENTICATIONFAILED"), text);
        let over = self.session.auth_failures >= self.session.limits().max_auth_failures;
        if over {
            reply.extend_from_slice(&session::bye("Too many failed authentications"));
        }
        if !send(conn, &reply).await || over {
            return Flow::Close;
        }
        Flow::Continue
    }

    async fn check_credentials(
        &mut self,
        conn: &mut Connection,
        tag: &str,
        login: String,
        secret: String,
    ) -> Flow {
        let directory = self.shared.directory.clone();
        let ip = conn.info.peer.ip();
        let span = tracing::Span::current();
        let check = tokio::task::spawn_blocking(move || {
            let _connection = span.enter();
            directory.authenticate(&login, &secret, ip, Instant::now())
        })
        .await;
        let authenticated = match check {
            Ok(Ok(ok)) => ok,
            Ok(Err(e @ (AuthError::Failed | AuthError::TemporarilyBlocked))) => {
                return self.auth_failed(conn, tag, &e.to_string()).await;
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "authentication unavailable");
                let reply = out::status(tag, "NO", Some("UNAVAILABLE"), &e.to_string());
                return if send(conn, &reply).await {
                    Flow::Continue
                } else {
                    Flow::Close
                };
            }
            Err(e) => {
                tracing::error!(error = %e, "authentication task failed");
                let reply = out::status(tag, "NO", Some("UNAVAILABLE"), "Try again later");
                return if send(conn, &reply).await {
                    Flow::Continue
                } else {
                    Flow::Close
                };
            }
        };
        let principal = authenticated.principal;
        let actor = Actor::user(
            principal.address.as_str(),
            principal.id.0,
            authenticated.method.name(),
            Some(ip.to_string()),
            "imap",
        );
        let account = principal.id;
        let Some(slot) = SessionSlot::take(&self.shared, account) else {
            let reply = out::status(
                tag,
                "NO",
                Some("LIMIT"),
                "Too many sessions for this account",
            );
            return if send(conn, &reply).await {
                Flow::Continue
            } else {
                Flow::Close
            };
        };
        let setup_actor = actor.clone();
        if let Err(e) = self
            .shared
            .store
            .run(move |b| ensure_standard(b, &setup_actor, account))
            .await
        {
            let refusal = Refusal::from(e);
            let reply = out::status(tag, "NO", refusal.code.as_deref(), &refusal.text);
            return if send(conn, &reply).await {
                Flow::Continue
            } else {
                Flow::Close
            };
        }
        self.changes = Some(self.shared.store.subscribe(account));
        self.user = Some(User {
            account,
            actor,
            _slot: slot,
        });
        self.session.state = State::Authenticated;
        let code = format!("CAPABILITY {}", self.session.capabilities());
        let reply = out::status(tag, "OK", Some(&code), "Logged in");
        if send(conn, &reply).await {
            Flow::Continue
        } else {
            Flow::Close
        }
    }

    async fn select(
        &mut self,
        mailbox: &WireMailbox<'_>,
        read_only: bool,
        parameters: &[SelectParameter],
    ) -> CmdResult {
        // RFC 7162 sections 3.1.8 (CONDSTORE) and 3.2.5 (QRESYNC).
        let mut resync = None;
        for parameter in parameters {
            match parameter {
                SelectParameter::CondStore => self.session.condstore = true,
                SelectParameter::QResync {
                    uid_validity,
                    mod_sequence_value,
                    known_uids,
                    ..
                } => {
                    if !self.session.qresync {
                        return Err(Refusal::bad("Enable QRESYNC first"));
                    }
                    resync = Some((
                        uid_validity.get(),
                        mod_sequence_value.get(),
                        known_uids.clone(),
                    ));
                }
            }
        }
        // RFC 5182 section 2.1: a new mailbox starts with no saved result.
        self.session.saved = None;
        let mut data = Vec::new();
        if self.selected.take().is_some() {
            // RFC 9051 section 6.3.2: the previous mailbox is closed first.
            data.extend_from_slice(b"* OK [CLOSED] Previous mailbox closed\r\n");
            self.session.state = State::Authenticated;
        }
        let name = self.name(mailbox)?;
        // Notices of the user's own account are drained before the mailbox
        // row is read: a change after this point raises a new notice, one
        // before it is in the row's highest modification sequence, which
        // the listing below reflects at least.
        self.drain_notices();
        let reached = self.mailbox(&name).await?;
        reached.require(b'r', "read")?;
        // RFC 4314 section 4: without a right that changes the mailbox it
        // opens read-only.
        let read_only = read_only || !reached.rights.writes();
        let Reached {
            mailbox,
            name: shown_name,
            rights,
            owner,
        } = reached;
        let account = mailbox.account;
        self.foreign_changes = owner.as_ref().map(|_| self.shared.store.subscribe(account));
        let id = mailbox.id;
        // Another account's notices are only heard from now on, after its
        // row was read: its listing is brought up to date from the store.
        let known = owner.is_none().then_some(mailbox.highest_modseq);
        let listing = self
            .shared
            .listings
            .at_least(&self.shared.store, account, id, known)
            .await?;
        let first_unseen = listing.first_unseen().map(|i| i + 1);
        let mut flag_list = flags::SYSTEM_FLAGS.to_string();
        for k in listing.keywords() {
            flag_list.push(' ');
            flag_list.push_str(flags::to_imap(k));
        }
        let exists = listing.len();
        let mut text = format!("* FLAGS ({flag_list})\r\n");
        if read_only {
            text.push_str("* OK [PERMANENTFLAGS ()] Read-only mailbox\r\n");
        } else {
            text.push_str(&format!(
                "* OK [PERMANENTFLAGS ({flag_list} \\*)] Flags permitted\r\n"
            ));
        }
        text.push_str(&format!("* {exists} EXISTS\r\n"));
        if !self.session.rev2 {
            text.push_str("* 0 RECENT\r\n");
            if let Some(n) = first_unseen {
                text.push_str(&format!("* OK [UNSEEN {n}] First unseen\r\n"));
            }
        }
        text.push_str(&format!(
            "* OK [UIDVALIDITY {}] UIDs valid\r\n* OK [UIDNEXT {}] Predicted next UID\r\n* OK [HIGHESTMODSEQ {}] Highest\r\n",
            mailbox.uid_validity,
            mailbox.uid_next,
            mailbox.highest_modseq.0.max(1)
        ));
        // RFC 8474 section 4.1.
        text.push_str(&format!(
            "* OK [MAILBOXID ({})] Ok\r\n",
            objectid::mailbox_id(mailbox.id.0)
        ));
        data.extend_from_slice(text.as_bytes());
        if self.session.rev2 {
            data.extend_from_slice(b"* LIST () \"/\" ");
            out::astring(&mut data, names::to_client(&shown_name, true).as_bytes());
            data.extend_from_slice(b"\r\n");
        }
        self.audit_foreign("mailbox.select", &owner, &mailbox, listing.len() as u64)
            .await?;
        if let Some((validity, since, known)) = resync
            && validity == mailbox.uid_validity
        {
            // RFC 7162 section 3.2.5.1: what vanished and what changed
            // since the client's mod-sequence, within its known UIDs.
            let last = mailbox.uid_next.saturating_sub(1);
            let known_has = |u: u32| {
                known
                    .as_ref()
                    .is_none_or(|set| search::in_set(set, u, last))
            };
            let present = |u: u32| listing.position(u).is_ok();
            let mailbox_id = mailbox.id;
            let vanished: Vec<u32> = self
                .shared
                .store
                .run(move |b| destroyed_since(b, account, mailbox_id, since))
                .await?
                .into_iter()
                .filter(|&u| known_has(u) && !present(u))
                .collect();
            if !vanished.is_empty() {
                data.extend_from_slice(
                    format!("* VANISHED (EARLIER) {}\r\n", out::compact_set(&vanished)).as_bytes(),
                );
            }
            for (i, m) in listing.iter().enumerate() {
                if m.modseq.0 > since && known_has(m.uid) {
                    data.extend_from_slice(
                        format!(
                            "* {} FETCH (UID {} FLAGS {} MODSEQ ({}))\r\n",
                            i + 1,
                            m.uid,
                            flags::flag_list(&m.keywords),
                            m.modseq.0
                        )
                        .as_bytes(),
                    );
                }
            }
        }
        self.selected = Some(Selected {
            mailbox,
            read_only,
            rights,
            owner,
            view: View::new(listing),
        });
        self.dirty = false;
        self.session.state = State::Selected;
        let done = if read_only {
            "[READ-ONLY] EXAMINE completed"
        } else {
            "[READ-WRITE] SELECT completed"
        };
        Ok((data, done.into()))
    }

    /// The ACL commands (RFC 4314 section 3).
    async fn acl(&mut self, command: acl::AclCommand) -> CmdResult {
        use acl::AclCommand as A;
        let utf8 = self.utf8();
        let (raw, verb) = match &command {
            A::SetAcl { mailbox, .. } => (mailbox, "SETACL"),
            A::DeleteAcl { mailbox, .. } => (mailbox, "DELETEACL"),
            A::GetAcl { mailbox } => (mailbox, "GETACL"),
            A::ListRights { mailbox, .. } => (mailbox, "LISTRIGHTS"),
            A::MyRights { mailbox } => (mailbox, "MYRIGHTS"),
        };
        let name = names::from_client(raw, utf8)?;
        let reached = self.mailbox(&name).await?;
        let mut shown = Vec::new();
        out::astring(&mut shown, names::to_client(&reached.name, utf8).as_bytes());
        let shown = String::from_utf8_lossy(&shown).into_owned();
        if let A::MyRights { .. } = command {
            return Ok((
                format!("* MYRIGHTS {shown} {}\r\n", reached.rights).into_bytes(),
                "MYRIGHTS completed".into(),
            ));
        }
        // Everything else administers the mailbox (section 4: `a`).
        reached.require(b'a', "administer access")?;
        let owner = reached.mailbox.account;
        let mailbox_id = reached.mailbox.id;
        let identifier = |id: &str| -> Result<EmailAddress, Refusal> {
            if id.starts_with('-') {
                return Err(Refusal::no(
                    Some("CANNOT"),
                    "Negative rights are not supported",
                ));
            }
            id.parse::<EmailAddress>()
                .map_err(|_| Refusal::no(Some("CANNOT"), "Identifiers are account addresses"))
        };
        match command {
            A::GetAcl { .. } => {
                let entries = self
                    .shared
                    .store
                    .run(move |b| {
                        let mut out = Vec::new();
                        if let Some(p) = b.principal(owner)? {
                            out.push((p.address.to_string(), Rights::all().to_string()));
                        }
                        for (grantee, letters) in b.mailbox_rights(owner, mailbox_id)? {
                            if let Some(p) = b.principal(grantee)? {
                                out.push((p.address.to_string(), letters));
                            }
                        }
                        Ok(out)
                    })
                    .await?;
                let mut line = format!("* ACL {shown}");
                for (who, letters) in entries {
                    line.push_str(&format!(" {who} {letters}"));
                }
                line.push_str("\r\n");
                Ok((line.into_bytes(), format!("{verb} completed")))
            }
            A::ListRights { identifier: id, .. } => {
                identifier(&id)?;
                let mut line = Vec::from(format!("* LISTRIGHTS {shown} ").as_bytes());
                out::astring(&mut line, id.as_bytes());
                // Section 3.7: nothing is always granted; each right stands alone.
                line.extend_from_slice(b" \"\" l r s w i p k x t e a\r\n");
                Ok((line, format!("{verb} completed")))
            }
            A::SetAcl { .. } | A::DeleteAcl { .. } => {
                let (id, spec) = match command {
                    A::SetAcl {
                        identifier, rights, ..
                    } => (identifier, rights),
                    A::DeleteAcl { identifier, .. } => (identifier, String::new()),
                    _ => return Err(Refusal::bad("Unexpected ACL command")),
                };
                let address = identifier(&id)?;
                let actor = self.actor()?;
                let audit_actor = actor.clone();
                let owner_name = reached.owner.clone();
                let stored = self
                    .shared
                    .store
                    .run(move |b| {
                        let Some(grantee) = b.principal_by_address(&address)? else {
                            return Ok(Err("No such account"));
                        };
                        if grantee.id == owner {
                            return Ok(Err("The owner's rights cannot be changed"));
                        }
                        let current = b
                            .mailbox_rights(owner, mailbox_id)?
                            .into_iter()
                            .find(|(g, _)| *g == grantee.id)
                            .map(|(_, r)| Rights::parse(&r).unwrap_or_default())
                            .unwrap_or_default();
                        let new = if spec.is_empty() {
                            Rights::default()
                        } else {
                            match acl::apply_modification(current, &spec) {
                                Ok(r) => r,
                                Err(_) => return Ok(Err("Unknown right")),
                            }
                        };
                        b.set_mailbox_rights(
                            &actor,
                            owner,
                            mailbox_id,
                            grantee.id,
                            &new.to_string(),
                        )?;
                        // Sharing is a security decision: recorded even when
                        // the owner makes it.
                        let target = owner_name
                            .clone()
                            .unwrap_or_else(|| audit_actor.name.clone());
                        let mut event =
                            audit_actor.event("mailbox.rights.set", Some((&target, Some(owner.0))));
                        event.object_ids = vec![format!("{mailbox_id}:{}:{new}", grantee.address)];
                        b.append_audit(event)?;
                        Ok(Ok(()))
                    })
                    .await?;
                match stored {
                    Ok(()) => Ok((Vec::new(), format!("{verb} completed"))),
                    Err(why) => Err(Refusal::no(Some("CANNOT"), why)),
                }
            }
            A::MyRights { .. } => Err(Refusal::bad("Unexpected ACL command")),
        }
    }

    async fn create(&mut self, mailbox: &WireMailbox<'_>) -> CmdResult {
        let raw = wire_name(mailbox);
        // RFC 9051 section 6.3.4: a trailing delimiter only says the name
        // will have children.
        let trimmed = raw.strip_suffix(b"/").unwrap_or(&raw);
        let name = names::from_client(trimmed, self.utf8())?;
        if acl::reserved(&name) {
            return Err(Refusal::no(
                Some("CANNOT"),
                "That name belongs to the shared namespaces",
            ));
        }
        let account = self.account()?;
        let actor = self.actor()?;
        self.shared
            .store
            .run(move |b| {
                let existing = b.mailboxes(account)?;
                if existing.iter().any(|m| m.name == name) {
                    return Err(StoreError::AlreadyExists {
                        what: "mailbox",
                        name: name.clone(),
                    });
                }
                let mut parent: Option<MailboxId> = None;
                for level in names::parents(&name) {
                    parent = Some(match existing.iter().find(|m| m.name == level) {
                        Some(m) => m.id,
                        None => b.create_mailbox(&actor, account, level, None, parent)?.id,
                    });
                }
                b.create_mailbox(&actor, account, &name, None, parent)?;
                Ok(())
            })
            .await?;
        Ok((Vec::new(), "CREATE completed".into()))
    }

    /// RFC 9051 section 6.3.6. Renaming INBOX moves its messages to a new
    /// mailbox and leaves an empty INBOX; any other rename takes the
    /// mailbox's children along and keeps UIDs and UIDVALIDITY.
    async fn rename(&mut self, from: &WireMailbox<'_>, to: &WireMailbox<'_>) -> CmdResult {
        let source = self.name(from)?;
        let raw = wire_name(to);
        let trimmed = raw.strip_suffix(b"/").unwrap_or(&raw);
        let target = names::from_client(trimmed, self.utf8())?;
        if target == "INBOX" {
            return Err(Refusal::no(Some("ALREADYEXISTS"), "INBOX always exists"));
        }
        if acl::reserved(&target) {
            return Err(Refusal::no(
                Some("CANNOT"),
                "That name belongs to the shared namespaces",
            ));
        }
        let source_box = self.own_mailbox(&source).await?;
        let account = self.account()?;
        let actor = self.actor()?;
        self.shared
            .store
            .run(move |b| {
                let existing = b.mailboxes(account)?;
                if existing.iter().any(|m| m.name == target) {
                    return Err(StoreError::AlreadyExists {
                        what: "mailbox",
                        name: target.clone(),
                    });
                }
                // Superior names the new name needs are created (section 6.3.6).
                let mut parent: Option<MailboxId> = None;
                for level in names::parents(&target) {
                    parent = Some(match existing.iter().find(|m| m.name == level) {
                        Some(m) => m.id,
                        None => b.create_mailbox(&actor, account, level, None, parent)?.id,
                    });
                }
                if source == "INBOX" {
                    let created = b.create_mailbox(&actor, account, &target, None, parent)?;
                    let uids: Vec<u32> = b
                        .messages(account, source_box.id)?
                        .iter()
                        .map(|m| m.uid)
                        .collect();
                    b.copy_messages(&actor, account, source_box.id, &uids, created.id, true)?;
                } else {
                    b.rename_mailbox(&actor, account, source_box.id, &target)?;
                }
                Ok(())
            })
            .await?;
        if source_box.role == Some(bulwark_core::MailboxRole::Inbox) {
            // Messages left the selected INBOX: the next command reports them.
            self.dirty = true;
        }
        Ok((Vec::new(), "RENAME completed".into()))
    }

    async fn delete(&mut self, mailbox: &WireMailbox<'_>) -> CmdResult {
        let name = self.name(mailbox)?;
        if name == "INBOX" {
            return Err(Refusal::no(Some("CANNOT"), "The Inbox cannot be deleted"));
        }
        let target = self.own_mailbox(&name).await?;
        if self
            .selected
            .as_ref()
            .is_some_and(|s| s.mailbox.id == target.id)
        {
            self.selected = None;
            self.session.state = State::Authenticated;
        }
        let account = self.account()?;
        let actor = self.actor()?;
        match self
            .shared
            .store
            .run(move |b| b.delete_mailbox(&actor, account, target.id))
            .await
        {
            Ok(()) => Ok((Vec::new(), "DELETE completed".into())),
            Err(StoreError::Conflict(_)) => Err(Refusal::no(
                Some("INUSE"),
                "The mailbox has child mailboxes; delete them first",
            )),
            Err(e) => Err(e.into()),
        }
    }

    async fn list(
        &mut self,
        reference: &WireMailbox<'_>,
        pattern: &ListMailbox<'_>,
        lsub: bool,
    ) -> CmdResult {
        let utf8 = self.utf8();
        let reference = match reference {
            WireMailbox::Inbox => "INBOX".to_string(),
            other => names::decode_wire(&wire_name(other), utf8)?,
        };
        let pattern_bytes: Vec<u8> = match pattern {
            ListMailbox::Token(t) => t.as_ref().to_vec(),
            ListMailbox::String(s) => s.as_ref().to_vec(),
        };
        let pattern = names::decode_wire(&pattern_bytes, utf8)?;
        let verb = if lsub { "LSUB" } else { "LIST" };
        self.list_names(reference, vec![pattern], ListOptions::default(), verb)
            .await
    }

    /// LIST with LIST-EXTENDED options (RFC 5258, 5819, 6154).
    async fn list_extended(&mut self, list: ExtendedList) -> CmdResult {
        // The STATUS answers below read this like a STATUS command's own.
        self.session.extras.mailbox_id = list.options.status_mailbox_id;
        let utf8 = self.utf8();
        let reference = names::decode_wire(&list.reference, utf8)?;
        let patterns = list
            .patterns
            .iter()
            .map(|p| names::decode_wire(p, utf8))
            .collect::<Result<Vec<_>, _>>()?;
        self.list_names(reference, patterns, list.options, "LIST")
            .await
    }

    async fn list_names(
        &mut self,
        reference: String,
        patterns: Vec<String>,
        options: ListOptions,
        verb: &str,
    ) -> CmdResult {
        let utf8 = self.utf8();
        if patterns.len() == 1 && patterns[0].is_empty() {
            // RFC 9051 section 6.3.9: the delimiter and root.
            return Ok((
                format!("* {verb} (\\Noselect) \"/\" \"\"\r\n").into_bytes(),
                format!("{verb} completed"),
            ));
        }
        let limits = self.session.limits();
        let mut matchers = Vec::with_capacity(patterns.len());
        for pattern in &patterns {
            let matcher = names::Pattern::new(&reference, pattern);
            if reference.len() + pattern.len() > limits.max_list_pattern_bytes
                || matcher.wildcards() > limits.max_list_wildcards
            {
                return Err(Refusal::bad("LIST pattern too complex"));
            }
            matchers.push(matcher);
        }
        let user = self.account()?;
        let reachable = self.shared.store.run(move |b| visible(b, user)).await?;
        // The namespace roots and owner levels above other accounts'
        // mailboxes are listed as \Noselect so clients can show the tree.
        let mut entries: Vec<(String, Option<MailboxRole>, bool)> = reachable
            .iter()
            .map(|r| (r.name.clone(), r.mailbox.role, true))
            .collect();
        let mut levels: Vec<String> = Vec::new();
        for r in reachable.iter().filter(|r| r.owner.is_some()) {
            let mut parts = r.name.splitn(3, '/');
            if let (Some(root), Some(owner)) = (parts.next(), parts.next()) {
                levels.push(root.to_string());
                levels.push(format!("{root}/{owner}"));
            }
        }
        levels.sort();
        levels.dedup();
        for level in levels {
            if !entries.iter().any(|(n, _, _)| *n == level) {
                entries.push((level, None, false));
            }
        }
        let mut data = Vec::new();
        let mut status_for = Vec::new();
        for (name, role, selectable) in &entries {
            if !matchers.iter().any(|m| m.matches(name)) {
                continue;
            }
            // RFC 6154 section 3: the SPECIAL-USE selection option.
            if options.special_use_only && role_attribute(*role).is_none() {
                continue;
            }
            let prefix = format!("{name}/");
            let children = entries.iter().any(|(o, _, _)| o.starts_with(&prefix));
            let mut attrs = vec![if children {
                "\\HasChildren"
            } else {
                "\\HasNoChildren"
            }];
            if !selectable {
                attrs.insert(0, "\\Noselect");
            } else {
                status_for.push(name.clone());
            }
            // Every mailbox counts as subscribed (SUBSCRIBE is a no-op).
            if (options.subscribed || options.return_subscribed) && *selectable {
                attrs.push("\\Subscribed");
            }
            attrs.extend(role_attribute(*role));
            data.extend_from_slice(format!("* {verb} ({}) \"/\" ", attrs.join(" ")).as_bytes());
            out::astring(&mut data, names::to_client(name, utf8).as_bytes());
            data.extend_from_slice(b"\r\n");
        }
        // RFC 5819: a STATUS response after each selectable mailbox's LIST
        // (here grouped after the LIST responses, which section 2 allows).
        if let Some(items) = &options.status {
            for name in status_for {
                if let Some(reached) = self.reach(&name).await?
                    && reached.rights.has(b'r')
                {
                    data.extend_from_slice(&self.status_of(reached, items).await?);
                }
            }
        }
        Ok((data, format!("{verb} completed")))
    }

    async fn status(
        &mut self,
        mailbox: &WireMailbox<'_>,
        items: &[StatusDataItemName],
    ) -> CmdResult {
        let name = self.name(mailbox)?;
        let reached = self.mailbox(&name).await?;
        let data = self.status_of(reached, items).await?;
        Ok((data, "STATUS completed".into()))
    }

    /// The `* STATUS` response for a mailbox the user reached.
    async fn status_of(
        &self,
        reached: Reached,
        items: &[StatusDataItemName],
    ) -> Result<Vec<u8>, Refusal> {
        reached.require(b'r', "read")?;
        let Reached {
            mailbox,
            name: shown_name,
            owner,
            ..
        } = reached;
        let account = mailbox.account;
        let id = mailbox.id;
        let listing = self
            .shared
            .store
            .run(move |b| b.messages(account, id))
            .await?;
        let mut parts = Vec::new();
        let extras = self.session.extras;
        for item in items {
            let has = |m: &MessageEntry, k: &str| m.keywords.iter().any(|x| x == k);
            parts.push(match item {
                // Only held the place of MAILBOXID (`objectid.rs`).
                StatusDataItemName::Messages if extras.placeholder => continue,
                StatusDataItemName::Messages => format!("MESSAGES {}", listing.len()),
                StatusDataItemName::Recent => "RECENT 0".into(),
                StatusDataItemName::UidNext => format!("UIDNEXT {}", mailbox.uid_next),
                StatusDataItemName::UidValidity => format!("UIDVALIDITY {}", mailbox.uid_validity),
                StatusDataItemName::Unseen => format!(
                    "UNSEEN {}",
                    listing.iter().filter(|m| !has(m, flags::SEEN)).count()
                ),
                StatusDataItemName::Deleted => format!(
                    "DELETED {}",
                    listing.iter().filter(|m| has(m, flags::DELETED)).count()
                ),
                StatusDataItemName::Size => {
                    format!("SIZE {}", listing.iter().map(|m| m.size).sum::<u64>())
                }
                StatusDataItemName::HighestModSeq => {
                    format!("HIGHESTMODSEQ {}", mailbox.highest_modseq.0)
                }
                #[allow(unreachable_patterns)]
                _ => return Err(Refusal::bad("STATUS item not supported")),
            });
        }
        self.audit_foreign("mailbox.status", &owner, &mailbox, listing.len() as u64)
            .await?;
        if extras.mailbox_id {
            // RFC 8474 section 4.2.
            parts.push(format!(
                "MAILBOXID ({})",
                objectid::mailbox_id(mailbox.id.0)
            ));
        }
        let mut data = b"* STATUS ".to_vec();
        out::astring(
            &mut data,
            names::to_client(&shown_name, self.utf8()).as_bytes(),
        );
        data.extend_from_slice(format!(" ({})\r\n", parts.join(" ")).as_bytes());
        Ok(data)
    }

    async fn append(
        &mut self,
        mailbox: &WireMailbox<'_>,
        flag_list: &[Flag<'_>],
        received_at: Option<i64>,
        raw: Vec<u8>,
    ) -> CmdResult {
        let name = self.name(mailbox)?;
        let target = match self.reach(&name).await? {
            Some(reached) => {
                reached.require(b'i', "add messages")?;
                reached.mailbox
            }
            // RFC 9051 section 6.3.12.
            None => return Err(Refusal::no(Some("TRYCREATE"), "No such mailbox")),
        };
        let mut keywords = Vec::new();
        for flag in flag_list {
            keywords
                .push(flags::to_keyword(flag).ok_or_else(|| Refusal::bad("Unknown system flag"))?);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let received_at = received_at.unwrap_or(now);
        let account = target.account;
        let actor = self.actor()?;
        let delivered = self
            .shared
            .store
            .run(move |b| {
                let meta = bulwark_mail::parse_meta(&raw, received_at);
                b.deliver(
                    &actor,
                    &raw,
                    &meta,
                    &[Delivery {
                        account,
                        mailbox: target.id,
                        keywords,
                    }],
                )
            })
            .await?;
        let uid = delivered.first().map_or(0, |d| d.uid);
        Ok((
            Vec::new(),
            format!("[APPENDUID {} {uid}] APPEND completed", target.uid_validity),
        ))
    }

    /// MULTIAPPEND (RFC 3502): every message or none, in one store write.
    async fn multiappend(&mut self, mailbox: &[u8], items: Vec<AppendItem>) -> CmdResult {
        let name = names::from_client(mailbox, self.utf8())?;
        let target = match self.reach(&name).await? {
            Some(reached) => {
                reached.require(b'i', "add messages")?;
                reached.mailbox
            }
            // RFC 3502 section 6.3.11 with RFC 9051 section 6.3.12.
            None => return Err(Refusal::no(Some("TRYCREATE"), "No such mailbox")),
        };
        let limit = self.session.limits().max_append_bytes;
        if items.iter().any(|i| i.message.len() as u64 > limit) {
            return Err(Refusal::no(
                Some("TOOBIG"),
                "Message larger than APPENDLIMIT",
            ));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let actor = self.actor()?;
        let (account, mailbox_id) = (target.account, target.id);
        let batch: Vec<BatchItem> = items
            .into_iter()
            .map(|item| {
                let received_at = item.received_at.unwrap_or(now);
                BatchItem {
                    meta: bulwark_mail::parse_meta(&item.message, received_at),
                    raw: item.message,
                    targets: vec![Delivery {
                        account,
                        mailbox: mailbox_id,
                        keywords: item.keywords,
                    }],
                }
            })
            .collect();
        let delivered = self
            .shared
            .store
            .run(move |b| b.deliver_batch(&actor, &batch))
            .await?;
        let uids: Vec<u32> = delivered
            .iter()
            .filter_map(|d| d.first().map(|x| x.uid))
            .collect();
        Ok((
            Vec::new(),
            format!(
                "[APPENDUID {} {}] APPEND completed",
                target.uid_validity,
                out::compact_set(&uids)
            ),
        ))
    }

    async fn close(&mut self, expunge: bool) -> CmdResult {
        let Some(selected) = self.selected.take() else {
            return Err(Refusal::bad("No mailbox selected"));
        };
        self.session.state = State::Authenticated;
        self.foreign_changes = None;
        self.session.saved = None;
        // RFC 4314 section 4: without `e`, CLOSE just closes.
        if expunge && !selected.read_only && selected.rights.has(b'e') {
            // RFC 9051 section 6.4.1: silently expunge.
            let (account, id) = (selected.mailbox.account, selected.mailbox.id);
            let actor = self.actor()?;
            let deleted = self.deleted_now(account, id, None).await?;
            if !deleted.is_empty() {
                self.shared
                    .store
                    .run(move |b| b.expunge(&actor, account, id, &deleted))
                    .await?;
            }
        }
        self.drain_notices();
        self.dirty = false;
        Ok((
            Vec::new(),
            if expunge {
                "CLOSE completed"
            } else {
                "UNSELECT completed"
            }
            .into(),
        ))
    }

    fn selected(&self) -> Result<&Selected, Refusal> {
        self.selected
            .as_ref()
            .ok_or_else(|| Refusal::bad("No mailbox selected"))
    }

    fn writable(&self) -> Result<&Selected, Refusal> {
        let selected = self.selected()?;
        if selected.read_only {
            return Err(Refusal::no(
                Some("READ-ONLY"),
                "The mailbox is open read-only",
            ));
        }
        Ok(selected)
    }

    /// What SEARCH, SORT and THREAD look at: the selected mailbox's
    /// account, its messages with their sequence numbers (messages already
    /// expunged by others only when `need` is the listing alone), and the
    /// scope `*` refers to.
    fn candidates(&self, need: search::Need) -> Result<Candidates, Refusal> {
        let selected = self.selected()?;
        let entries = selected
            .view
            .messages()
            .enumerate()
            .filter(|(_, m)| need == search::Need::Listing || !m.gone)
            .map(|(i, m)| (i as u32 + 1, m.entry.clone()))
            .collect();
        let scope = search::Scope {
            exists: selected.view.exists(),
            last_uid: selected.view.last_uid(),
        };
        Ok((selected.mailbox.account, entries, scope))
    }

    fn resolve_set(&self, set: &SequenceSet, uid: bool) -> Result<Vec<usize>, Refusal> {
        let selected = self.selected()?;
        selected
            .view
            .resolve(set, uid, self.session.limits().max_sequence_items)
            .map_err(|e| match e {
                ResolveError::NoSuchMessage => Refusal::bad("Invalid message sequence number"),
                ResolveError::TooMany => Refusal::bad("Too many elements in the sequence set"),
            })
    }

    /// UIDs of the mailbox's messages flagged `\Deleted` now (within
    /// `only`), from the shared listing brought up to date.
    async fn deleted_now(
        &self,
        account: PrincipalId,
        mailbox: MailboxId,
        only: Option<&SequenceSet>,
    ) -> Result<Vec<u32>, Refusal> {
        let listing = self
            .shared
            .listings
            .latest(&self.shared.store, account, mailbox)
            .await?;
        Ok(listing
            .iter()
            .filter(|m| m.has(flags::DELETED))
            .filter(|m| only.is_none_or(|set| search::in_set(set, m.uid, u32::MAX)))
            .map(|m| m.uid)
            .collect())
    }

    async fn expunge(&mut self, only: Option<SequenceSet>) -> CmdResult {
        let selected = self.writable()?;
        if !selected.rights.has(b'e') {
            return Err(Refusal::no(
                Some("NOPERM"),
                "You have no right to expunge this mailbox",
            ));
        }
        let (account, id) = (selected.mailbox.account, selected.mailbox.id);
        let actor = self.actor()?;
        let deleted = self.deleted_now(account, id, only.as_ref()).await?;
        if !deleted.is_empty() {
            self.shared
                .store
                .run(move |b| b.expunge(&actor, account, id, &deleted))
                .await?;
        }
        // The notice marks the view dirty; the refresh in `finish` sends
        // the EXPUNGE responses (RFC 9051 section 6.4.3).
        self.dirty = true;
        Ok((Vec::new(), "EXPUNGE completed".into()))
    }

    async fn search(
        &mut self,
        tag: &str,
        charset: Option<String>,
        criteria: Vec1<SearchKey<'static>>,
        uid: bool,
        options: Option<SearchReturn>,
        ids: Option<objectid::IdFilter>,
    ) -> CmdResult {
        if options.is_some_and(|o| o.save) {
            // RFC 5182 section 2.1: a failed SEARCH leaves `$` empty.
            self.session.saved = Some(Vec::new());
        }
        if let Some(charset) = charset {
            check_charset(&charset)?;
        }
        let key = SearchKey::And(criteria);
        let need = search::needs(&key);
        let with_modseq = search::uses_modseq(&key);
        if with_modseq {
            // A CONDSTORE enabling command (RFC 7162 section 3.1).
            self.session.condstore = true;
        }
        let (account, entries, scope) = self.candidates(need)?;
        let mut highest = 0u64;
        let found: Vec<(u32, u64, u32)> = self
            .shared
            .store
            .run(move |b| {
                let mut hits = Vec::new();
                for (msn, entry) in &entries {
                    // RFC 8474 section 6: the object-id keys AND with the rest.
                    if let Some(ids) = &ids
                        && !ids.emails.iter().all(|&e| e == entry.email.0)
                    {
                        continue;
                    }
                    let wants_thread = ids.as_ref().is_some_and(|i| !i.threads.is_empty());
                    let record = if wants_thread {
                        b.email(account, entry.email)?
                    } else {
                        None
                    };
                    if let Some(ids) = &ids
                        && !ids
                            .threads
                            .iter()
                            .all(|&t| record.as_ref().is_some_and(|r| r.thread.0 == t))
                    {
                        continue;
                    }
                    // The listing's keys first; header facts, then bytes,
                    // are read only while they could change the answer.
                    let mut candidate = search::Candidate {
                        msn: *msn,
                        entry,
                        meta: None,
                        raw: None,
                        loaded: search::Need::Listing,
                    };
                    let mut verdict = search::decide(&key, &candidate, &scope);
                    let record = match record {
                        Some(r) => Some(r),
                        None if verdict.is_none() && need >= search::Need::Meta => {
                            b.email(account, entry.email)?
                        }
                        None => None,
                    };
                    if verdict.is_none() && need >= search::Need::Meta {
                        candidate.meta = record.as_ref().map(|r| &r.meta);
                        candidate.loaded = search::Need::Meta;
                        verdict = search::decide(&key, &candidate, &scope);
                    }
                    let raw = if verdict.is_none() && need >= search::Need::Raw {
                        b.read_blob(&entry.blob).ok()
                    } else {
                        None
                    };
                    if verdict.is_none() {
                        candidate.raw = raw.as_deref();
                        candidate.loaded = search::Need::Raw;
                        verdict = search::decide(&key, &candidate, &scope);
                    }
                    if verdict == Some(true) {
                        hits.push((
                            if uid { entry.uid } else { *msn },
                            entry.modseq.0,
                            entry.uid,
                        ));
                    }
                }
                Ok(hits)
            })
            .await?;
        if let Some(options) = options
            && options.save
        {
            // RFC 5182 section 2.4: with MIN or MAX alone, only those are kept.
            let mut uids: Vec<u32> = found.iter().map(|f| f.2).collect();
            uids.sort_unstable();
            if (options.min || options.max) && !options.all && !options.count {
                let (first, last) = (uids.first().copied(), uids.last().copied());
                uids = [options.min.then_some(first), options.max.then_some(last)]
                    .into_iter()
                    .flatten()
                    .flatten()
                    .collect();
                uids.dedup();
            }
            self.session.saved = Some(uids);
        }
        let hits: Vec<u32> = found
            .iter()
            .map(|&(n, modseq, _)| {
                highest = highest.max(modseq);
                n
            })
            .collect();
        let data = if options.is_some_and(|o| !o.answers()) {
            // SAVE alone: nothing to report (RFC 5182 section 2.4).
            String::new()
        } else if self.session.rev2 || options.is_some() {
            // RFC 9051 section 7.3.4: ESEARCH replaces SEARCH; RFC 4731
            // section 3.1 for the RETURN options (default: ALL).
            let options = options.unwrap_or(SearchReturn {
                all: true,
                ..SearchReturn::default()
            });
            let mut line = format!("* ESEARCH (TAG \"{tag}\")");
            if uid {
                line.push_str(" UID");
            }
            let mut sorted = hits.clone();
            sorted.sort_unstable();
            if let (true, Some(min)) = (options.min, sorted.first()) {
                line.push_str(&format!(" MIN {min}"));
            }
            if let (true, Some(max)) = (options.max, sorted.last()) {
                line.push_str(&format!(" MAX {max}"));
            }
            if options.count {
                line.push_str(&format!(" COUNT {}", sorted.len()));
            }
            if !sorted.is_empty() {
                if options.all {
                    line.push_str(" ALL ");
                    line.push_str(&out::compact_set(&sorted));
                }
                // RFC 7162 section 3.1.5 with RFC 4731.
                if with_modseq {
                    line.push_str(&format!(" MODSEQ {highest}"));
                }
            }
            line.push_str("\r\n");
            line
        } else {
            let mut line = String::from("* SEARCH");
            for h in &hits {
                line.push(' ');
                line.push_str(&h.to_string());
            }
            // RFC 7162 section 3.1.5: the highest mod-sequence of the hits.
            if with_modseq && !hits.is_empty() {
                line.push_str(&format!(" (MODSEQ {highest})"));
            }
            line.push_str("\r\n");
            line
        };
        Ok((data.into_bytes(), "SEARCH completed".into()))
    }

    /// SORT and THREAD (RFC 5256 section 3): the matching messages by the
    /// same evaluator as SEARCH, then ordered or threaded by `sort.rs`
    /// from the cached header facts (the message bytes only for CC).
    async fn sort(
        &mut self,
        arrangement: Arrangement,
        charset: &str,
        criteria: Vec1<SearchKey<'static>>,
        uid: bool,
    ) -> CmdResult {
        check_charset(charset)?;
        if let Arrangement::Sort(keys) = &arrangement
            && keys
                .iter()
                .any(|k| matches!(k.key, SortKey::DisplayFrom | SortKey::DisplayTo))
        {
            // SORT=DISPLAY (RFC 5957) is not advertised.
            return Err(Refusal::bad("SORT=DISPLAY is not supported"));
        }
        let key = SearchKey::And(criteria);
        let need = search::needs(&key);
        if search::uses_modseq(&key) {
            // A CONDSTORE enabling command (RFC 7162 section 3.1).
            self.session.condstore = true;
        }
        let (need_meta, need_raw) = match &arrangement {
            Arrangement::Sort(keys) => (
                keys.iter().any(|k| {
                    matches!(
                        k.key,
                        SortKey::Date | SortKey::From | SortKey::To | SortKey::Subject
                    )
                }),
                keys.iter().any(|k| k.key == SortKey::Cc),
            ),
            _ => (true, false),
        };
        let (account, entries, scope) = self.candidates(need)?;
        let facts: Vec<sort::Facts> = self
            .shared
            .store
            .run(move |b| {
                let mut hits = Vec::new();
                for (msn, entry) in &entries {
                    let meta = if need >= search::Need::Meta || need_meta {
                        b.email(account, entry.email)?.map(|r| r.meta)
                    } else {
                        None
                    };
                    let raw = if need >= search::Need::Raw || need_raw {
                        b.read_blob(&entry.blob).ok()
                    } else {
                        None
                    };
                    let candidate = search::Candidate {
                        msn: *msn,
                        entry,
                        meta: meta.as_ref(),
                        raw: raw.as_deref(),
                        loaded: search::Need::Raw,
                    };
                    if !search::matches(&key, &candidate, &scope) {
                        continue;
                    }
                    let cc = if need_raw {
                        raw.as_deref().map(first_cc).unwrap_or_default()
                    } else {
                        String::new()
                    };
                    let meta = meta.unwrap_or_default();
                    hits.push(sort::Facts {
                        number: if uid { entry.uid } else { *msn },
                        seq: *msn,
                        arrival: entry.received_at,
                        size: entry.size,
                        // RFC 5256 section 2.2: no usable Date, the
                        // internal date.
                        sent: meta.sent_at.unwrap_or(entry.received_at),
                        subject: meta.subject.unwrap_or_default(),
                        from: sort::first_mailbox(meta.from.as_deref().unwrap_or_default()),
                        to: sort::first_mailbox(meta.to.as_deref().unwrap_or_default()),
                        cc,
                        message_id: meta.message_id,
                        references: meta.references,
                    });
                }
                Ok(hits)
            })
            .await?;
        let (data, text) = match arrangement {
            Arrangement::Sort(keys) => (
                sort::sort_response(&sort::sort(&facts, &keys)),
                "SORT completed",
            ),
            Arrangement::OrderedSubject => (
                sort::thread_response(&sort::ordered_subject(&facts)),
                "THREAD completed",
            ),
            Arrangement::References => (
                sort::thread_response(&sort::references(&facts)),
                "THREAD completed",
            ),
        };
        Ok((data.into_bytes(), text.into()))
    }

    /// GETQUOTAROOT (RFC 9208 section 4.3.2).
    async fn get_quota_root(&mut self, mailbox: &WireMailbox<'_>) -> CmdResult {
        let name = self.name(mailbox)?;
        let found = self.mailbox(&name).await?;
        let account = self.account()?;
        let principal = self
            .shared
            .store
            .run(move |b| b.principal(account))
            .await?
            .ok_or_else(|| Refusal::no(Some("NONEXISTENT"), "No such account"))?;
        let shown = names::to_client(&found.name, self.utf8());
        // The user's own root "" does not cover another account's mailbox,
        // and the owner's usage is not the delegate's to see.
        let (quota, used) = if found.owner.is_some() {
            (0, 0)
        } else {
            (principal.quota_bytes, principal.used_bytes)
        };
        Ok((
            quota::quota_root(&shown, quota, used),
            "GETQUOTAROOT completed".into(),
        ))
    }

    /// GETQUOTA (RFC 9208 section 4.3.1): "" is the only root, and only
    /// for an account with a quota.
    async fn get_quota(&mut self, root: &[u8]) -> CmdResult {
        let account = self.account()?;
        let principal = self
            .shared
            .store
            .run(move |b| b.principal(account))
            .await?
            .ok_or_else(|| Refusal::no(Some("NONEXISTENT"), "No such account"))?;
        if !root.is_empty() || principal.quota_bytes == 0 {
            return Err(Refusal::no(Some("NONEXISTENT"), "No such quota root"));
        }
        Ok((
            quota::quota(principal.used_bytes, principal.quota_bytes),
            "GETQUOTA completed".into(),
        ))
    }

    async fn fetch(
        &mut self,
        conn: &mut Connection,
        tag: &str,
        set: &SequenceSet,
        names: &MacroOrMessageDataItemNames<'_>,
        uid: bool,
        modifiers: &[FetchModifier],
    ) -> Flow {
        // RFC 7162 sections 3.1.4.2 (CHANGEDSINCE) and 3.2.6 (VANISHED).
        let mut changed_since = None;
        let mut want_vanished = false;
        for modifier in modifiers {
            match modifier {
                FetchModifier::ChangedSince(n) => changed_since = Some(n.get()),
                FetchModifier::Vanished => want_vanished = true,
            }
        }
        let prepared = (|| {
            if want_vanished && !(uid && self.session.qresync && changed_since.is_some()) {
                return Err(Refusal::bad(
                    "VANISHED needs UID FETCH, CHANGEDSINCE and ENABLE QRESYNC",
                ));
            }
            let mut indices = self.resolve_set(set, uid)?;
            let mut plan = fetch::plan(names, uid).map_err(Refusal::bad)?;
            plan.add_object_ids(self.session.extras, uid);
            if changed_since.is_some() || plan.asks_modseq() {
                // CONDSTORE enabling uses (RFC 7162 section 3.1).
                self.session.condstore = true;
            }
            if changed_since.is_some()
                || (self.session.condstore && (plan.asks_flags() || plan.sets_seen))
            {
                plan.add_modseq();
            }
            if let (Some(since), Some(selected)) = (changed_since, self.selected.as_ref()) {
                indices.retain(|&i| {
                    selected
                        .view
                        .get(i)
                        .is_some_and(|m| m.entry.modseq.0 > since)
                });
            }
            Ok::<_, Refusal>((indices, plan))
        })();
        let (indices, plan) = match prepared {
            Ok(p) => p,
            Err(r) => return self.finish(conn, tag, Err(r), uid, uid).await,
        };
        if let Some(selected) = self.selected.as_ref()
            && selected.owner.is_some()
        {
            let (owner, mailbox) = (selected.owner.clone(), selected.mailbox.clone());
            if let Err(r) = self
                .audit_foreign("mail.fetch", &owner, &mailbox, indices.len() as u64)
                .await
            {
                return self.finish(conn, tag, Err(r), uid, uid).await;
            }
        }
        if want_vanished
            && let (Some(since), Some(selected)) = (changed_since, self.selected.as_ref())
        {
            let (account, id) = (selected.mailbox.account, selected.mailbox.id);
            let last = selected
                .mailbox
                .uid_next
                .saturating_sub(1)
                .max(selected.view.last_uid());
            let set = set.clone();
            let vanished = self
                .shared
                .store
                .run(move |b| destroyed_since(b, account, id, since))
                .await
                .map(|uids| {
                    uids.into_iter()
                        .filter(|&u| {
                            // Messages still in the view (not yet announced
                            // as gone) are left to the live VANISHED that
                            // follows.
                            search::in_set(&set, u, last) && selected.view.position(u).is_none()
                        })
                        .collect::<Vec<u32>>()
                });
            match vanished {
                Ok(uids) if uids.is_empty() => {}
                Ok(uids) => {
                    let line = format!("* VANISHED (EARLIER) {}\r\n", out::compact_set(&uids));
                    if !send(conn, line.as_bytes()).await {
                        return Flow::Close;
                    }
                }
                Err(e) => return self.finish(conn, tag, Err(e.into()), uid, uid).await,
            }
        }
        // Implicit \Seen (RFC 9051 section 6.4.5), not in EXAMINE.
        let mut flagged_now: Vec<u32> = Vec::new();
        if plan.sets_seen
            && let Some(selected) = self.selected.as_ref()
            && !selected.read_only
            && selected.rights.has(b's')
        {
            let unseen: Vec<u32> = indices
                .iter()
                .filter_map(|&i| selected.view.get(i))
                .filter(|m| !m.gone && !m.entry.keywords.iter().any(|k| k == flags::SEEN))
                .map(|m| m.entry.uid)
                .collect();
            if !unseen.is_empty() {
                let (account, id) = (selected.mailbox.account, selected.mailbox.id);
                let actor = match self.actor() {
                    Ok(a) => a,
                    Err(r) => return self.finish(conn, tag, Err(r), uid, uid).await,
                };
                let uids = unseen.clone();
                let stored = self
                    .shared
                    .store
                    .run(move |b| {
                        b.update_keywords(
                            &actor,
                            account,
                            id,
                            &uids,
                            &KeywordUpdate::Add(vec![flags::SEEN.into()]),
                        )
                    })
                    .await;
                match stored {
                    Ok(changed) => {
                        if let Some(selected) = self.selected.as_mut() {
                            let mut stored = Vec::with_capacity(changed.len());
                            for (u, modseq) in changed {
                                let mut keywords: Vec<String> = selected
                                    .view
                                    .position(u)
                                    .and_then(|i| selected.view.get(i))
                                    .map(|m| m.entry.keywords.to_vec())
                                    .unwrap_or_default();
                                keywords.push(flags::SEEN.into());
                                keywords.sort();
                                keywords.dedup();
                                stored.push((u, keywords.into(), Some(modseq.0)));
                                flagged_now.push(u);
                            }
                            selected.view.set_keywords(stored);
                            flagged_now.sort_unstable();
                        }
                    }
                    Err(e) => return self.finish(conn, tag, Err(e.into()), uid, uid).await,
                }
            }
        }
        let Some(selected) = self.selected.as_ref() else {
            return self
                .finish(
                    conn,
                    tag,
                    Err(Refusal::bad("No mailbox selected")),
                    uid,
                    uid,
                )
                .await;
        };
        if !plan.needs_body && !plan.asks_thread() {
            // Everything asked for is in the listing: rendered here and
            // sent in pieces, without the store.
            const PIECE: usize = 256 * 1024;
            let mut piece = 16 * 1024;
            let mut bytes = Vec::with_capacity(PIECE.min(indices.len() * 64));
            for &i in &indices {
                let Some(m) = selected.view.get(i) else {
                    continue;
                };
                let with_flags = flagged_now.binary_search(&m.entry.uid).is_ok();
                let source = fetch::Source::default();
                fetch::render_into(
                    &mut bytes,
                    i as u32 + 1,
                    m.entry,
                    &plan,
                    with_flags,
                    &source,
                );
                if bytes.len() >= piece {
                    if !send(conn, &bytes).await {
                        return Flow::Close;
                    }
                    bytes.clear();
                    // The first piece is small so the client starts early.
                    piece = PIECE;
                }
            }
            if !bytes.is_empty() && !send(conn, &bytes).await {
                return Flow::Close;
            }
            let done = Ok((Vec::new(), "FETCH completed".into()));
            return self.finish(conn, tag, done, uid, uid).await;
        }
        let jobs: Vec<(u32, Entry, bool, bool)> = indices
            .iter()
            .filter_map(|&i| {
                selected.view.get(i).map(|m| {
                    (
                        i as u32 + 1,
                        m.entry.clone(),
                        flagged_now.binary_search(&m.entry.uid).is_ok(),
                        m.gone,
                    )
                })
            })
            .collect();
        let chunk_budget = self.session.limits().max_fetch_chunk_bytes as u64;
        let account = selected.mailbox.account;
        let mut missing = false;
        let mut unknown_cte = false;
        // Chunks are read and rendered on the blocking pool while the one
        // before is written out; the first is small so the client starts
        // reading early.
        let mut start = 0;
        let mut next_chunk = |first: bool| {
            if start >= jobs.len() {
                return None;
            }
            let budget_for = if first {
                chunk_budget.min(FIRST_FETCH_CHUNK_BYTES)
            } else {
                chunk_budget
            };
            let mut end = start;
            let mut budget = 0u64;
            while end < jobs.len() && (end == start || budget < budget_for) {
                if plan.needs_body {
                    budget += jobs[end].1.size;
                }
                end += 1;
            }
            let chunk: Vec<_> = jobs[start..end].to_vec();
            start = end;
            let plan = plan.clone();
            let envelopes = self.shared.envelopes.clone();
            Some(
                self.shared
                    .store
                    .run(move |b| render_fetch_chunk(b, account, &plan, &envelopes, &chunk)),
            )
        };
        let mut current = match next_chunk(true) {
            Some(work) => Some(work.await),
            None => None,
        };
        while let Some(rendered) = current.take() {
            match rendered {
                Ok((bytes, m, cte)) => {
                    missing |= m;
                    if cte {
                        unknown_cte = true;
                        if !send(conn, &bytes).await {
                            return Flow::Close;
                        }
                        break;
                    }
                    let (sent, following) = match next_chunk(false) {
                        Some(work) => {
                            let (sent, following) = tokio::join!(send(conn, &bytes), work);
                            (sent, Some(following))
                        }
                        None => (send(conn, &bytes).await, None),
                    };
                    if !sent {
                        return Flow::Close;
                    }
                    current = following;
                }
                Err(e) => return self.finish(conn, tag, Err(e.into()), uid, uid).await,
            }
        }
        let result = if unknown_cte {
            Err(Refusal::no(
                Some("UNKNOWN-CTE"),
                "A part has a content transfer encoding this server cannot decode",
            ))
        } else if missing {
            Err(Refusal::no(
                Some("EXPUNGEISSUED"),
                "Some messages were expunged meanwhile",
            ))
        } else {
            Ok((Vec::new(), "FETCH completed".into()))
        };
        self.finish(conn, tag, result, uid, uid).await
    }

    async fn store(
        &mut self,
        set: &SequenceSet,
        kind: StoreType,
        response: StoreResponse,
        flag_list: &[Flag<'_>],
        uid: bool,
        modifiers: &[StoreModifier],
    ) -> CmdResult {
        // RFC 7162 section 3.1.3: UNCHANGEDSINCE.
        let unchanged_since = modifiers
            .iter()
            .map(|m| match m {
                StoreModifier::UnchangedSince(n) => *n,
            })
            .min();
        let indices = self.resolve_set(set, uid)?;
        self.writable()?;
        if unchanged_since.is_some() {
            // A CONDSTORE enabling use (RFC 7162 section 3.1).
            self.session.condstore = true;
        }
        let ext = self.ext();
        let selected = self.writable()?;
        let mut keywords = Vec::new();
        for flag in flag_list {
            keywords
                .push(flags::to_keyword(flag).ok_or_else(|| Refusal::bad("Unknown system flag"))?);
        }
        let uids: Vec<u32> = indices
            .iter()
            .filter_map(|&i| selected.view.get(i))
            .filter(|m| !m.gone)
            .map(|m| m.entry.uid)
            .collect();
        // RFC 4314 section 4: \Seen needs `s`, \Deleted `t`, other flags `w`;
        // replacing the whole set touches all three.
        let needs = |k: &str| match k {
            flags::SEEN => b's',
            flags::DELETED => b't',
            _ => b'w',
        };
        let needed: Vec<u8> = match kind {
            StoreType::Replace => vec![b's', b't', b'w'],
            _ => keywords.iter().map(|k| needs(k)).collect(),
        };
        if let Some(missing) = needed.iter().find(|&&l| !selected.rights.has(l)) {
            return Err(Refusal::no(
                Some("NOPERM"),
                format!(
                    "You have no right to change these flags here (missing right {})",
                    char::from(*missing)
                ),
            ));
        }
        let (account, id) = (selected.mailbox.account, selected.mailbox.id);
        let actor = self.actor()?;
        let update = match kind {
            StoreType::Replace => KeywordUpdate::Set(keywords),
            StoreType::Add => KeywordUpdate::Add(keywords),
            StoreType::Remove => KeywordUpdate::Remove(keywords),
        };
        let (updated, modified) = self
            .shared
            .store
            .run(move |b| {
                // UNCHANGEDSINCE is decided by the store inside the same
                // write as the change, so no other session's change can
                // slip in between (RFC 7162 section 3.1.3).
                let (updated, modified) = match unchanged_since {
                    Some(since) => {
                        let outcome = b.update_keywords_if_unchanged(
                            &actor,
                            account,
                            id,
                            &uids,
                            &update,
                            ModSeq(since),
                        )?;
                        (outcome.changed, outcome.modified)
                    }
                    None if uids.is_empty() => (Vec::new(), Vec::new()),
                    None => (
                        b.update_keywords(&actor, account, id, &uids, &update)?,
                        Vec::new(),
                    ),
                };
                Ok((updated, modified))
            })
            .await?;
        // The flags as they are now, through the shared listing (only the
        // change is read from the store).
        let listing = self
            .shared
            .listings
            .latest(&self.shared.store, account, id)
            .await?;
        let mut failed = Vec::new();
        let mut data = Vec::new();
        if let Some(selected) = self.selected.as_mut() {
            let mut stored = Vec::new();
            for &i in &indices {
                let Some(m) = selected.view.get(i) else {
                    continue;
                };
                if m.gone {
                    continue;
                }
                let current = m.entry.uid;
                let Some(now) = listing.position(current).ok().and_then(|p| listing.get(p)) else {
                    continue;
                };
                let fresh = now.keywords.clone();
                let modseq = now.modseq.0;
                if modified.contains(&current) {
                    // Left for the refresh to announce as someone else's
                    // change.
                    failed.push(if uid { current } else { i as u32 + 1 });
                    continue;
                }
                stored.push((current, fresh.clone(), Some(modseq)));
                if response == StoreResponse::Answer {
                    let line = crate::view::Unsolicited::Flags {
                        msn: i as u32 + 1,
                        uid: current,
                        keywords: fresh,
                        modseq,
                    }
                    .render(uid, ext);
                    data.extend_from_slice(line.as_bytes());
                } else if ext.condstore && updated.iter().any(|(u, _)| *u == current) {
                    // RFC 7162 section 3.1.3: with .SILENT, the new
                    // mod-sequence is still reported.
                    let uid_part = if uid || ext.qresync {
                        format!("UID {current} ")
                    } else {
                        String::new()
                    };
                    data.extend_from_slice(
                        format!("* {} FETCH ({uid_part}MODSEQ ({modseq}))\r\n", i + 1).as_bytes(),
                    );
                }
            }
            selected.view.set_keywords(stored);
        }
        if !failed.is_empty() {
            failed.sort_unstable();
            return Ok((
                data,
                format!(
                    "[MODIFIED {}] Conditional STORE failed",
                    out::compact_set(&failed)
                ),
            ));
        }
        Ok((data, "STORE completed".into()))
    }

    async fn copy(
        &mut self,
        set: &SequenceSet,
        mailbox: &WireMailbox<'_>,
        uid: bool,
        is_move: bool,
    ) -> CmdResult {
        let indices = self.resolve_set(set, uid)?;
        if is_move {
            let selected = self.writable()?;
            // RFC 6851 section 3.3 with RFC 4314: a move deletes and expunges.
            if !(selected.rights.has(b't') && selected.rights.has(b'e')) {
                return Err(Refusal::no(
                    Some("NOPERM"),
                    "You have no right to remove messages from this mailbox",
                ));
            }
        }
        let name = self.name(mailbox)?;
        let target = match self.reach(&name).await? {
            Some(reached) => {
                reached.require(b'i', "add messages")?;
                reached.mailbox
            }
            None => return Err(Refusal::no(Some("TRYCREATE"), "No such mailbox")),
        };
        let selected = self.selected()?;
        let mut sources = Vec::new();
        for &i in &indices {
            if let Some(m) = selected.view.get(i) {
                if m.gone {
                    return Err(Refusal::no(
                        Some("EXPUNGEISSUED"),
                        "Some messages were expunged meanwhile",
                    ));
                }
                sources.push(m.entry.clone());
            }
        }
        if sources.is_empty() {
            return Ok((
                Vec::new(),
                if is_move {
                    "MOVE completed"
                } else {
                    "COPY completed"
                }
                .into(),
            ));
        }
        let (account, source_id) = (selected.mailbox.account, selected.mailbox.id);
        let owner = selected.owner.clone();
        let source_mailbox = selected.mailbox.clone();
        let actor = self.actor()?;
        let target_id = target.id;
        let target_account = target.account;
        self.audit_foreign(
            if is_move {
                "mail.move-out"
            } else {
                "mail.copy-out"
            },
            &owner,
            &source_mailbox,
            sources.len() as u64,
        )
        .await?;
        let uids: Vec<u32> = sources.iter().map(|entry| entry.uid).collect();
        let pairs: Vec<(u32, u32)> = if target_account == account {
            // The same email is filed in the target mailbox with its flags
            // and internal date (RFC 9051 section 6.4.7); MOVE removes the
            // source entries in the same write, so a crash cannot leave both
            // or neither (RFC 6851 section 3.3).
            self.shared
                .store
                .run(move |b| {
                    b.copy_messages(&actor, account, source_id, &uids, target_id, is_move)
                })
                .await?
        } else {
            // Between accounts the target gets its own email (each account
            // owns its data and quota); a move then expunges the source.
            self.shared
                .store
                .run(move |b| {
                    let mut pairs = Vec::with_capacity(sources.len());
                    for entry in &sources {
                        let Some(record) = b.email(account, entry.email)? else {
                            continue;
                        };
                        let raw = b.read_blob(&record.blob)?;
                        let delivered = b.deliver(
                            &actor,
                            &raw,
                            &record.meta,
                            &[Delivery {
                                account: target_account,
                                mailbox: target_id,
                                keywords: entry.keywords.to_vec(),
                            }],
                        )?;
                        if let Some(d) = delivered.first() {
                            pairs.push((entry.uid, d.uid));
                        }
                    }
                    if is_move && !pairs.is_empty() {
                        let moved: Vec<u32> = pairs.iter().map(|p| p.0).collect();
                        b.expunge(&actor, account, source_id, &moved)?;
                    }
                    Ok(pairs)
                })
                .await?
        };
        let src: Vec<u32> = pairs.iter().map(|p| p.0).collect();
        let dst: Vec<u32> = pairs.iter().map(|p| p.1).collect();
        let code = format!(
            "COPYUID {} {} {}",
            target.uid_validity,
            out::compact_set(&src),
            out::compact_set(&dst)
        );
        if is_move {
            // RFC 6851 section 4.3: COPYUID in an untagged OK before the
            // EXPUNGE responses.
            self.dirty = true;
            let data = out::status("*", "OK", Some(&code), "Moved");
            Ok((data, "MOVE completed".into()))
        } else {
            Ok((Vec::new(), format!("[{code}] COPY completed")))
        }
    }

    async fn idle(&mut self, conn: &mut Connection, tag: &str) -> Flow {
        // RFC 2177 / RFC 9051 section 6.3.13.
        if !send(conn, b"+ idling\r\n").await {
            return Flow::Close;
        }
        let normal = conn.stream.timeout();
        conn.stream.set_timeout(self.session.limits().idle_timeout);
        let flow = self.idle_loop(conn, tag).await;
        conn.stream.set_timeout(normal);
        flow
    }

    async fn idle_loop(&mut self, conn: &mut Connection, tag: &str) -> Flow {
        let mut buf = vec![0u8; 4096];
        loop {
            match self.refresh(true, false).await {
                Ok(updates) => {
                    if !send(conn, &updates).await {
                        return Flow::Close;
                    }
                }
                Err(bye) => {
                    let _ = send(conn, &bye).await;
                    return Flow::Close;
                }
            }
            if self.session.has_buffered() {
                match self.session.next_line() {
                    Some(Ok(line)) => {
                        let reply = if line.eq_ignore_ascii_case(b"DONE") {
                            out::status(tag, "OK", None, "IDLE terminated")
                        } else {
                            out::status(tag, "BAD", None, "Expected DONE")
                        };
                        return if send(conn, &reply).await {
                            Flow::Continue
                        } else {
                            Flow::Close
                        };
                    }
                    Some(Err(bye)) => {
                        let _ = send(conn, &bye).await;
                        return Flow::Close;
                    }
                    None => {}
                }
            }
            let (changes, foreign) = (&mut self.changes, &mut self.foreign_changes);
            let notice = async move {
                // The user's own account, and the selected mailbox's when it
                // belongs to someone else.
                let own = async {
                    match changes.as_mut() {
                        Some(rx) => {
                            let _ = rx.recv().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                let other = async {
                    match foreign.as_mut() {
                        Some(rx) => {
                            let _ = rx.recv().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    () = own => {}
                    () = other => {}
                }
            };
            let mut noticed = false;
            let mut received = None;
            tokio::select! {
                () = notice => noticed = true,
                read = conn.stream.read(&mut buf) => received = Some(read),
                () = conn.shutdown.wait() => {
                    let _ = send(conn, &session::bye("Server shutting down")).await;
                    return Flow::Close;
                }
            }
            if noticed {
                // It may have been the own account's: the kept rows go.
                self.dirty = true;
                self.forget_own_rows();
            }
            match received {
                None => {}
                Some(Ok(0)) | Some(Err(_)) => return Flow::Close,
                Some(Ok(n)) => self.session.feed(&buf[..n]),
            }
        }
    }
}
