//! The async driver: reads bytes into the [`Session`], writes its output
//! and does what its events ask (TLS, the directory, the store). No
//! protocol decisions are made here.
//!
//! Implementation notes:
//! * Argon2 and every store call run on blocking threads
//!   (`spawn_blocking`, [`Store::run`]).
//! * The only mailbox resolved is the logged-in user's Inbox
//!   ([`LocalDelivery::inbox`], which creates it when missing).
//! * Writes pass the session's [`Actor`] with protocol `pop3`.
//! * Expunges by other sessions are learnt from the account's change
//!   notices; the Inbox is re-listed before a RETR or TOP only when one
//!   arrived since the last look.
//! * Output is written before every event and before every read, so
//!   pipelined simple commands share one write and a large RETR is never
//!   held together with the next one.

use std::collections::HashSet;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulwark_audit::Actor;
use bulwark_core::{BlobId, ChangeNotice, MailboxId, PrincipalId};
use bulwark_directory::{AuthError, Directory};
use bulwark_mail::LocalDelivery;
use bulwark_server::{Connection, ConnectionHandler};
use bulwark_store::{Error as StoreError, Mailbox, MessageEntry, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::broadcast;

use super::Pop3Limits;
use super::command::Secret;
use super::session::{AuthOutcome, Event, FetchError, Maildrop, Session};

/// The POP3 front end, for [`bulwark_server::Server::register`] on
/// `Protocol::Pop3` (STLS) and `Protocol::Pop3s` (implicit TLS). Whether a
/// connection is encrypted comes from [`bulwark_server::ConnInfo::tls`].
#[derive(Clone)]
pub struct Pop3Handler {
    shared: Arc<Shared>,
}

struct Shared {
    directory: Directory,
    store: Store,
    delivery: LocalDelivery,
    limits: Pop3Limits,
}

impl std::fmt::Debug for Pop3Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pop3Handler")
            .field("limits", &self.shared.limits)
            .finish_non_exhaustive()
    }
}

impl Pop3Handler {
    /// A handler authenticating against `directory` and serving each
    /// user's Inbox from the directory's store.
    pub fn new(directory: Directory, limits: Pop3Limits) -> Pop3Handler {
        let store = directory.store().clone();
        let delivery = LocalDelivery::new(directory.clone());
        Pop3Handler {
            shared: Arc::new(Shared {
                directory,
                store,
                delivery,
                limits,
            }),
        }
    }
}

impl ConnectionHandler for Pop3Handler {
    fn handle(&self, conn: Connection) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        Box::pin(serve(Arc::clone(&self.shared), conn))
    }

    fn busy_reply(&self) -> Option<&'static [u8]> {
        Some(b"-ERR [SYS/TEMP] too many connections\r\n")
    }
}

/// The logged-in user and what the driver keeps about the maildrop.
struct Login {
    account: PrincipalId,
    actor: Actor,
    inbox: MailboxId,
    /// The blob of each snapshot message, by index.
    blobs: Vec<BlobId>,
    changes: broadcast::Receiver<ChangeNotice>,
    /// UIDs still in the Inbox at the last re-listing; `None` until a
    /// change notice made one necessary.
    present: Option<HashSet<u32>>,
}

async fn flush(conn: &mut Connection, session: &mut Session) -> bool {
    let out = session.take_output();
    if out.is_empty() {
        return true;
    }
    conn.stream.write_all(&out).await.is_ok() && conn.stream.flush().await.is_ok()
}

async fn serve(shared: Arc<Shared>, mut conn: Connection) {
    let mut session = Session::new(shared.limits.clone(), conn.info.tls, conn.tls_available());
    let ip = conn.info.peer.ip();
    let mut login: Option<Login> = None;
    let mut buf = vec![0u8; 8 * 1024];
    loop {
        while let Some(event) = session.poll() {
            if matches!(event, Event::Close) {
                // The client may reconnect as soon as it reads the goodbye.
                conn.release_slot();
            }
            if !flush(&mut conn, &mut session).await {
                return;
            }
            match event {
                Event::Close => {
                    close(&mut conn, &mut buf).await;
                    return;
                }
                Event::StartTls => {
                    // The session has dropped every buffered plaintext
                    // byte (RFC 2595 section 4); `buf` holds none unread.
                    conn = match conn.start_tls().await {
                        Ok(upgraded) => upgraded,
                        Err(_) => return,
                    };
                    session.tls_started();
                }
                Event::Authenticate {
                    login: name,
                    secret,
                } => {
                    let (outcome, opened) = authenticate(&shared, ip, name, secret).await;
                    login = opened;
                    session.authenticated(outcome);
                }
                Event::RecordFailure => {
                    shared
                        .directory
                        .limiter()
                        .record_failure("", ip, Instant::now());
                }
                Event::Fetch { index, uid } => {
                    let result = match login.as_mut() {
                        Some(login) => fetch(&shared.store, login, index, uid).await,
                        None => Err(FetchError::Unavailable),
                    };
                    session.message(result);
                }
                Event::Commit { uids } => {
                    let ok = match login.as_ref() {
                        Some(login) => commit(&shared.store, login, uids).await,
                        None => false,
                    };
                    session.committed(ok);
                }
            }
        }
        if !flush(&mut conn, &mut session).await {
            return;
        }
        tokio::select! {
            read = conn.stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => session.feed(&buf[..n]),
            },
            () = conn.shutdown.wait() => {
                session.shutdown();
                let _ = flush(&mut conn, &mut session).await;
                return;
            }
        }
    }
}

/// Ends the connection after the last reply: sends the TLS close_notify
/// and FIN, then reads and drops what the client still sends for a short
/// while, so that unread input does not make the kernel reset the
/// connection and discard the last reply before it leaves.
async fn close(conn: &mut Connection, buf: &mut [u8]) {
    const LINGER: Duration = Duration::from_millis(500);
    const MAX_DRAIN: usize = 1024 * 1024;
    if conn.stream.shutdown().await.is_err() {
        return;
    }
    let mut drained = 0;
    let _ = tokio::time::timeout(LINGER, async {
        while drained < MAX_DRAIN {
            match conn.stream.read(buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}

/// Checks credentials, then opens the maildrop.
async fn authenticate(
    shared: &Shared,
    ip: IpAddr,
    login: String,
    secret: Secret,
) -> (AuthOutcome, Option<Login>) {
    let directory = shared.directory.clone();
    let span = tracing::Span::current();
    let check = tokio::task::spawn_blocking(move || {
        let _connection = span.enter();
        directory.authenticate(&login, secret.expose(), ip, Instant::now())
    })
    .await;
    let authenticated = match check {
        Ok(Ok(ok)) => ok,
        Ok(Err(AuthError::Failed)) => return (AuthOutcome::Failed, None),
        Ok(Err(AuthError::TemporarilyBlocked)) => return (AuthOutcome::Blocked, None),
        Ok(Err(e @ AuthError::Unavailable(_))) => {
            tracing::error!(error = %e, "POP3 authentication unavailable");
            return (AuthOutcome::Unavailable, None);
        }
        Err(e) => {
            tracing::error!(error = %e, "POP3 authentication task failed");
            return (AuthOutcome::Unavailable, None);
        }
    };
    let principal = authenticated.principal;
    let account = principal.id;
    let actor = Actor::user(
        principal.address.as_str(),
        account.0,
        authenticated.method.name(),
        Some(ip.to_string()),
        "pop3",
    );
    // Subscribed before listing, so no expunge falls between the two.
    let changes = shared.store.subscribe(account);
    let delivery = shared.delivery.clone();
    let opened = tokio::task::spawn_blocking(
        move || -> Result<(Mailbox, Vec<MessageEntry>), StoreError> {
            let inbox = delivery.inbox(account)?;
            let store = delivery.directory().store();
            let mailbox = store
                .mailboxes(account)?
                .into_iter()
                .find(|m| m.id == inbox)
                .ok_or_else(|| StoreError::Conflict("Inbox vanished".into()))?;
            let messages = store.messages(account, inbox)?;
            Ok((mailbox, messages))
        },
    )
    .await;
    let (mailbox, mut messages) = match opened {
        Ok(Ok(opened)) => opened,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot open the POP3 maildrop");
            return (AuthOutcome::Unavailable, None);
        }
        Err(e) => {
            tracing::error!(error = %e, "POP3 maildrop task failed");
            return (AuthOutcome::Unavailable, None);
        }
    };
    messages.sort_by_key(|m| m.uid);
    let maildrop = Maildrop::new(
        mailbox.uid_validity,
        messages.iter().map(|m| (m.uid, m.size)),
    );
    let login = Login {
        account,
        actor,
        inbox: mailbox.id,
        blobs: messages.into_iter().map(|m| m.blob).collect(),
        changes,
        present: None,
    };
    (AuthOutcome::LoggedIn(maildrop), Some(login))
}

/// Reads one snapshot message, unless another session expunged it.
async fn fetch(
    store: &Store,
    login: &mut Login,
    index: usize,
    uid: u32,
) -> Result<Vec<u8>, FetchError> {
    let mut changed = false;
    while let Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) = login.changes.try_recv() {
        changed = true;
    }
    if changed {
        let (account, inbox) = (login.account, login.inbox);
        match store.run(move |b| b.messages(account, inbox)).await {
            Ok(listing) => login.present = Some(listing.into_iter().map(|m| m.uid).collect()),
            Err(StoreError::NotFound { .. }) => login.present = Some(HashSet::new()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot re-list the POP3 maildrop");
                return Err(FetchError::Unavailable);
            }
        }
    }
    if login
        .present
        .as_ref()
        .is_some_and(|present| !present.contains(&uid))
    {
        return Err(FetchError::Vanished);
    }
    let Some(blob) = login.blobs.get(index).cloned() else {
        return Err(FetchError::Vanished);
    };
    match store.run(move |b| b.read_blob(&blob)).await {
        Ok(raw) => Ok(raw),
        Err(StoreError::NotFound { .. }) => Err(FetchError::Vanished),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read a message for POP3");
            Err(FetchError::Unavailable)
        }
    }
}

/// The UPDATE state (RFC 1939 section 6): expunges the deleted messages,
/// durably, before QUIT is answered.
async fn commit(store: &Store, login: &Login, uids: Vec<u32>) -> bool {
    let (actor, account, inbox) = (login.actor.clone(), login.account, login.inbox);
    match store
        .run(move |b| b.expunge(&actor, account, inbox, &uids))
        .await
    {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, "POP3 QUIT could not remove deleted messages");
            false
        }
    }
}
