//! The socket side: drives a [`Session`] over a [`Connection`] and answers
//! its questions from the directory and the store.
//!
//! Implementation notes:
//!
//! * Every directory or store call runs on a blocking thread
//!   (`spawn_blocking`), except handing a local-only message to the store's
//!   writer, which queues without blocking and wakes the task when the
//!   message is durable; no reply is written while one is running, and
//!   none holds a lock across a write.
//! * Bytes read are handed to the session at once, never buffered here, so
//!   when STARTTLS discards the plaintext that followed it nothing is left
//!   behind in this layer either.
//! * Delegated sends are audited before the message is stored: a send that
//!   cannot be audited is not made (`451 4.3.0`).

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bulwark_audit::{Actor, Outcome};
use bulwark_core::{PrincipalId, Right};
use bulwark_directory::{AuthError, Directory};
use bulwark_mail::{LocalDelivery, Resolution};
use bulwark_server::{Connection, ConnectionHandler};
use bulwark_store::{Error as StoreError, NewQueueRecipient};
use bulwark_transport::dns::{Dns, Listing};
use bulwark_transport::dsn::{self, Notice, NoticeKind, RecipientReport};
use bulwark_transport::queue::{OutboundEnvelope, OutboundQueue, notify_wants};
use bulwark_transport::verify::{self, Inbound};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::limits::SmtpLimits;
use crate::send_limit::SendLimit;
use crate::sender::{Delegation, Identity};
use crate::session::{
    Action, AuthOutcome, ClientInfo, Credentials, DeliveryOutcome, Mode, RcptOutcome, Session,
    SessionConfig, Timeout, Transaction,
};

/// Bytes read from the socket at a time (one TLS record's worth; every
/// open connection holds a buffer of this size).
const READ_CHUNK: usize = 16 * 1024;

/// The reply to a connection refused because the server is full
/// (RFC 5321 section 3.8).
const BUSY: &[u8] = b"421 4.3.2 Too many connections, try again later\r\n";

/// Serves SMTP on the listeners of one [`Mode`]: register it for
/// `Protocol::Smtp` (inbound) or for both `Protocol::Submission` and
/// `Protocol::Submissions` (submission; TLS is told apart per connection).
#[derive(Clone)]
pub struct SmtpHandler {
    config: Arc<SessionConfig>,
    delivery: LocalDelivery,
    services: Services,
}

/// Told about messages stored for local accounts, after the client got
/// its reply: for work that must neither hold up nor fail a delivery, such
/// as applying calendar invitations to calendars.
pub trait AfterDelivery: Send + Sync + 'static {
    /// Whether a message interests this hook (a cheap look at the bytes,
    /// so others are not copied).
    fn wants(&self, message: &[u8]) -> bool;
    /// `message` was stored for `accounts`.
    fn delivered(&self, accounts: Vec<bulwark_core::PrincipalId>, message: Vec<u8>);
}

/// The transport services a handler uses besides local delivery.
#[derive(Clone, Default)]
struct Services {
    /// Where submitted mail for other domains goes.
    queue: Option<OutboundQueue>,
    /// The resolver inbound checks (SPF, DKIM, DMARC) use.
    verifier: Option<Dns>,
    /// Follow-up work on stored messages.
    after_delivery: Option<Arc<dyn AfterDelivery>>,
    /// Recipients per hour for each authenticated user.
    send_limit: Option<Arc<SendLimit>>,
    /// DNS blocklists asked about each client on the MX.
    blocklists: Option<(Dns, Arc<[String]>)>,
    /// What this handler's sessions came to, for `/metrics`.
    stats: Arc<SmtpStats>,
}

/// Counts over every session of one handler since start.
#[derive(Debug, Default)]
pub struct SmtpStats {
    /// Messages answered 250: stored, or queued for remote recipients.
    pub messages: AtomicU64,
    /// Replies 4xx and 5xx, whatever they refused.
    pub refusals: AtomicU64,
}

impl std::fmt::Debug for SmtpHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpHandler")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl SmtpHandler {
    /// A handler for `mode`, delivering through `delivery`, calling itself
    /// `hostname` in greetings and `Received` fields.
    pub fn new(
        mode: Mode,
        delivery: LocalDelivery,
        hostname: impl Into<String>,
        limits: SmtpLimits,
    ) -> SmtpHandler {
        SmtpHandler {
            config: Arc::new(SessionConfig {
                mode,
                hostname: hostname.into(),
                limits,
                relay: false,
                notices: false,
            }),
            delivery,
            services: Services::default(),
        }
    }

    /// Sends delivery status notifications through `queue` (and offers
    /// DSN); on submission, also lets users send to other domains.
    pub fn with_queue(mut self, queue: OutboundQueue) -> SmtpHandler {
        let mut config = (*self.config).clone();
        config.relay = config.mode == Mode::Submission;
        config.notices = true;
        self.config = Arc::new(config);
        self.services.queue = Some(queue);
        self
    }

    /// On the MX, checks SPF, DKIM, ARC and DMARC through `dns`.
    pub fn with_verification(mut self, dns: Dns) -> SmtpHandler {
        self.services.verifier = Some(dns);
        self
    }

    /// Runs `hook` on messages once they are stored.
    pub fn with_after_delivery(mut self, hook: Arc<dyn AfterDelivery>) -> SmtpHandler {
        self.services.after_delivery = Some(hook);
        self
    }

    /// On the MX, refuses the recipients (but postmaster) of clients that
    /// one of `zones` lists (RFC 5782), asked through `dns`.
    pub fn with_blocklists(mut self, dns: Dns, zones: Vec<String>) -> SmtpHandler {
        if !zones.is_empty() {
            self.services.blocklists = Some((dns, zones.into()));
        }
        self
    }

    /// Holds each authenticated user to `limit`'s recipients per hour.
    pub fn with_send_limit(mut self, limit: Arc<SendLimit>) -> SmtpHandler {
        self.services.send_limit = Some(limit);
        self
    }

    /// Counts of what this handler's sessions did.
    pub fn stats(&self) -> &Arc<SmtpStats> {
        &self.services.stats
    }

    /// The settings every session of this handler uses.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }
}

impl ConnectionHandler for SmtpHandler {
    fn handle(&self, conn: Connection) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        let config = Arc::clone(&self.config);
        let delivery = self.delivery.clone();
        let services = self.services.clone();
        Box::pin(serve(config, delivery, services, conn))
    }

    fn busy_reply(&self) -> Option<&'static [u8]> {
        Some(BUSY)
    }
}

/// Unix time in milliseconds.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A fresh, unpredictable session id: 64 random bits from the standard
/// library's per-process random hash keys, plus a counter so two sessions
/// of one process never share an id.
fn session_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(n);
    format!("{:016x}{n:x}", hasher.finish())
}

async fn serve(
    config: Arc<SessionConfig>,
    delivery: LocalDelivery,
    services: Services,
    mut conn: Connection,
) {
    let ip = conn.info.peer.ip();
    let protocol = conn.info.protocol.name();
    let client = ClientInfo {
        ip,
        tls: conn.info.tls,
        tls_available: conn.tls_available(),
    };
    let max_duration = config.limits.max_session_duration;
    let mode = config.mode;
    let hostname = config.hostname.clone();
    let mut session = Session::new(config, client, session_id());
    // The blocklist whose listing of this client refuses its recipients;
    // asked at the first recipient that needs it.
    let mut listed: Option<Option<String>> = None;
    // One timer for the whole session, registered once: a fresh sleep per
    // read would be put into and taken out of the timer wheel every command.
    let session_deadline = tokio::time::sleep(max_duration);
    tokio::pin!(session_deadline);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut shutdown_seen = false;
    let mut deadline_seen = false;
    loop {
        let Some(action) = session.poll(now_ms()) else {
            if session.is_closed() {
                return;
            }
            tokio::select! {
                // The session's end comes first, so a client that never stops
                // sending still meets it; once registered, the timer costs
                // nothing to look at.
                biased;
                () = &mut session_deadline, if !deadline_seen => {
                    deadline_seen = true;
                    session.timed_out(Timeout::Session);
                }
                () = conn.shutdown.wait(), if !shutdown_seen => {
                    shutdown_seen = true;
                    session.shutdown();
                }
                read = conn.stream.read(&mut buf) => match read {
                    Ok(0) => return,
                    Ok(n) => session.feed(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                        tracing::debug!("idle timeout");
                        session.timed_out(Timeout::Idle);
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "read failed");
                        return;
                    }
                },
            }
            continue;
        };
        match action {
            Action::Write(bytes) => {
                if session.is_closing() {
                    // The client may reconnect as soon as it reads this.
                    conn.release_slot();
                }
                for reply in refusals(&bytes) {
                    services.stats.refusals.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%reply, "refused");
                }
                let written = async {
                    conn.stream.write_all(&bytes).await?;
                    conn.stream.flush().await
                };
                if let Err(e) = written.await {
                    tracing::debug!(error = %e, "write failed");
                    return;
                }
            }
            Action::StartTls => match conn.start_tls().await {
                Ok(upgraded) => {
                    conn = upgraded;
                    session.tls_started();
                }
                Err(e) => {
                    tracing::debug!(error = %e, "STARTTLS handshake failed");
                    return;
                }
            },
            Action::Authenticate(credentials) => {
                let outcome = authenticate(delivery.directory().clone(), credentials, ip).await;
                session.auth_result(outcome);
            }
            Action::CheckRecipient(address) => {
                if mode == Mode::Inbound
                    && let Some((dns, zones)) = &services.blocklists
                    && !address.local_part().eq_ignore_ascii_case("postmaster")
                {
                    if listed.is_none() {
                        listed = Some(first_listing(dns, zones, ip).await);
                    }
                    if let Some(Some(zone)) = &listed {
                        session.rcpt_result(RcptOutcome::ClientListed(zone.clone()));
                        continue;
                    }
                }
                if let Some(limit) = &services.send_limit
                    && let Some(identity) = session.identity()
                    && !limit.allows(
                        identity.principal,
                        session.recipient_count() + 1,
                        Instant::now(),
                    )
                {
                    tracing::warn!(
                        user = %identity.login,
                        per_hour = limit.per_hour(),
                        "recipient refused: the user's hourly limit of recipients is reached"
                    );
                    session.rcpt_result(RcptOutcome::SendLimitReached);
                    continue;
                }
                // A recent answer is reused on the task; only a miss costs
                // a blocking-pool hop and a read of the directory.
                let resolved = match delivery.resolve_cached(&address) {
                    Some(resolution) => Ok(Ok(resolution)),
                    None => {
                        let delivery = delivery.clone();
                        tokio::task::spawn_blocking(move || delivery.resolve(&address)).await
                    }
                };
                let outcome = match resolved {
                    Ok(Ok(Resolution::Deliver(accounts))) => RcptOutcome::Local(accounts),
                    Ok(Ok(Resolution::UnknownLocal)) => RcptOutcome::UnknownLocal,
                    Ok(Ok(Resolution::MailboxFull)) => RcptOutcome::MailboxFull,
                    Ok(Ok(Resolution::NotLocal)) => RcptOutcome::NotLocal,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "recipient lookup failed");
                        RcptOutcome::TemporaryFailure
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "recipient lookup task failed");
                        RcptOutcome::TemporaryFailure
                    }
                };
                session.rcpt_result(outcome);
            }
            Action::Deliver(mut transaction) => {
                if mode == Mode::Inbound
                    && let Some(dns) = &services.verifier
                {
                    let verdict = verify::verify(
                        dns,
                        Inbound {
                            ip,
                            helo: &transaction.helo,
                            mail_from: &transaction.reverse_path,
                            hostname: &hostname,
                        },
                        &transaction.message,
                    )
                    .await;
                    if let Some(text) = verdict.reject {
                        tracing::info!(id = %transaction.id, %ip, reason = %text, "message refused by DMARC policy");
                        session.delivery_result(DeliveryOutcome::Rejected(text));
                        continue;
                    }
                    verify::strip_forged_results(&mut transaction.message, &hostname);
                    insert_after_return_path(&mut transaction.message, verdict.header.as_bytes());
                }
                let follow_up = services
                    .after_delivery
                    .as_ref()
                    .filter(|hook| hook.wants(&transaction.message))
                    .map(|hook| {
                        (
                            Arc::clone(hook),
                            transaction.accounts(),
                            transaction.message.clone(),
                        )
                    });
                // Charged once the mail is accepted, to whom it was sent.
                let sent = match (&services.send_limit, &transaction.submitter) {
                    (Some(limit), Some(identity)) => Some((
                        Arc::clone(limit),
                        identity.principal,
                        transaction.recipients.len(),
                    )),
                    _ => None,
                };
                let outcome = if only_local(&transaction) {
                    let report = delivery
                        .deliver_async(
                            Arc::from(&transaction.message[..]),
                            transaction.accounts(),
                            transaction.received_at,
                        )
                        .await;
                    let outcome = local_outcome(&transaction.id, &report);
                    log_outcome(&transaction, &outcome);
                    let refused = refused_accounts(&report);
                    if outcome.is_stored() && !refused.is_empty() {
                        let queue = services.queue.clone();
                        let queued = tokio::task::spawn_blocking(move || {
                            notify_local_failures(queue.as_ref(), &transaction, &refused);
                        })
                        .await;
                        if let Err(e) = queued {
                            tracing::error!(error = %e, "failure notice task failed");
                        }
                    }
                    outcome
                } else {
                    let delivery = delivery.clone();
                    let queue = services.queue.clone();
                    let done = tokio::task::spawn_blocking(move || {
                        deliver(&delivery, queue.as_ref(), &transaction, ip, protocol)
                    })
                    .await;
                    done.unwrap_or_else(|e| {
                        tracing::error!(error = %e, "delivery task failed");
                        DeliveryOutcome::TemporaryFailure
                    })
                };
                let stored = outcome.is_stored();
                if stored {
                    services.stats.messages.fetch_add(1, Ordering::Relaxed);
                }
                if stored && let Some((limit, who, recipients)) = sent {
                    limit.charge(who, recipients, Instant::now());
                }
                session.delivery_result(outcome);
                if stored
                    && let Some((hook, accounts, message)) = follow_up
                    && !accounts.is_empty()
                {
                    hook.delivered(accounts, message);
                }
            }
            Action::Close => {
                let _ = conn.stream.shutdown().await;
                return;
            }
        }
    }
}

/// The first of `zones` that lists `ip`. A lookup that fails is logged
/// and counts as not listed: DNS trouble never refuses mail.
async fn first_listing(dns: &Dns, zones: &[String], ip: IpAddr) -> Option<String> {
    for zone in zones {
        match dns.blocklist(ip, zone).await {
            Ok(Listing::Clear) => {}
            Ok(Listing::Listed(code)) => {
                tracing::info!(%ip, %zone, %code, "client is on a DNS blocklist; its recipients are refused");
                return Some(zone.clone());
            }
            Err(e) => tracing::warn!(%ip, %zone, error = %e, "blocklist lookup failed"),
        }
    }
    None
}

/// Checks credentials, then loads what the user may send as.
async fn authenticate(directory: Directory, credentials: Credentials, ip: IpAddr) -> AuthOutcome {
    let span = tracing::Span::current();
    let checked = tokio::task::spawn_blocking(move || {
        let _connection = span.enter();
        match directory.authenticate(
            &credentials.login,
            credentials.password(),
            ip,
            Instant::now(),
        ) {
            Ok(auth) => match load_identity(&directory, auth) {
                Ok(identity) => AuthOutcome::Success(identity),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot load the sender rights of a user");
                    AuthOutcome::Unavailable
                }
            },
            // The directory logs failures and bans.
            Err(AuthError::Failed) => AuthOutcome::Failed,
            Err(AuthError::TemporarilyBlocked) => AuthOutcome::Blocked,
            Err(AuthError::Unavailable(e)) => {
                tracing::warn!(error = %e, "directory unavailable for authentication");
                AuthOutcome::Unavailable
            }
        }
    })
    .await;
    checked.unwrap_or_else(|e| {
        tracing::error!(error = %e, "authentication task failed");
        AuthOutcome::Unavailable
    })
}

/// The user's own addresses and those it holds send-as or send-on-behalf
/// rights for (grants to the user directly).
fn load_identity(
    directory: &Directory,
    auth: bulwark_directory::Authenticated,
) -> Result<Identity, StoreError> {
    let store = directory.store();
    let principal = auth.principal.id;
    let addresses = store.addresses(principal)?;
    let mut delegations = Vec::new();
    for grant in store.grants(None, Some(principal))? {
        if !matches!(grant.right, Right::SendAs | Right::SendOnBehalf) {
            continue;
        }
        for address in store.addresses(grant.grantor)? {
            delegations.push(Delegation {
                grantor: grant.grantor,
                address,
                right: grant.right,
            });
        }
    }
    Ok(Identity {
        // The primary address, however the client capitalised it, so audit
        // records name the account the same way everywhere.
        login: auth.principal.address.to_string(),
        principal,
        auth_method: auth.method.name().to_string(),
        addresses,
        delegations,
    })
}

/// Puts `field` (a complete header field with its CRLF) right after the
/// leading `Return-Path` field, or at the top when there is none.
fn insert_after_return_path(message: &mut Vec<u8>, field: &[u8]) {
    let at = if message.len() >= 12 && message[..12].eq_ignore_ascii_case(b"Return-Path:") {
        message
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(0, |p| p + 2)
    } else {
        0
    };
    message.splice(at..at, field.iter().copied());
}

/// Reports local deliveries to senders who asked (`NOTIFY=SUCCESS`,
/// RFC 3461 section 4.1). Blocking.
fn notify_local_success(queue: Option<&OutboundQueue>, transaction: &Transaction) {
    let reports: Vec<RecipientReport> = transaction
        .recipients
        .iter()
        .filter(|r| !r.is_remote())
        .filter(|r| notify_wants(r.notify.as_deref(), NoticeKind::Delivered))
        .map(|r| RecipientReport {
            address: r.address.to_string(),
            original_recipient: r.original_recipient.clone(),
            status: "2.0.0".into(),
            diagnostic: "250 2.0.0 delivered to the mailbox".into(),
            remote_mta: None,
        })
        .collect();
    send_local_notice(queue, transaction, NoticeKind::Delivered, &reports);
}

/// The accounts a local delivery could not store into, each with whether
/// it was for lack of quota.
fn refused_accounts(
    result: &Result<bulwark_mail::DeliveryReport, StoreError>,
) -> Vec<(PrincipalId, bool)> {
    result.as_ref().map_or_else(
        |_| Vec::new(),
        |report| {
            report
                .failed
                .iter()
                .map(|(account, e)| (*account, matches!(e, StoreError::QuotaExceeded { .. })))
                .collect()
        },
    )
}

/// Reports the recipients none of whose accounts took a message that was
/// answered 250 because others did (or because it was queued for remote
/// ones): without a notice their copy would vanish unseen. A group
/// recipient counts as delivered if any member took the message. Blocking.
fn notify_local_failures(
    queue: Option<&OutboundQueue>,
    transaction: &Transaction,
    refused: &[(PrincipalId, bool)],
) {
    if refused.is_empty() {
        return;
    }
    let reports: Vec<RecipientReport> = transaction
        .recipients
        .iter()
        .filter(|r| !r.is_remote())
        .filter(|r| notify_wants(r.notify.as_deref(), NoticeKind::Failed))
        .filter_map(|r| {
            let quota: Vec<bool> = r
                .accounts
                .iter()
                .map(|a| refused.iter().find(|(id, _)| id == a).map(|(_, q)| *q))
                .collect::<Option<_>>()?;
            let (status, diagnostic) = if quota.contains(&true) {
                ("5.2.2", "552 5.2.2 the mailbox is full")
            } else {
                ("5.1.1", "550 5.1.1 the mailbox is no longer available")
            };
            Some(RecipientReport {
                address: r.address.to_string(),
                original_recipient: r.original_recipient.clone(),
                status: status.into(),
                diagnostic: diagnostic.into(),
                remote_mta: None,
            })
        })
        .collect();
    send_local_notice(queue, transaction, NoticeKind::Failed, &reports);
}

/// Queues a notice of `kind` about `reports` to the message's sender;
/// nothing for the null sender (a notice never causes another) or without
/// reports. Blocking; a notice that cannot be queued is logged, the
/// delivery stands.
fn send_local_notice(
    queue: Option<&OutboundQueue>,
    transaction: &Transaction,
    kind: NoticeKind,
    reports: &[RecipientReport],
) {
    let Some(queue) = queue else { return };
    if transaction.reverse_path.is_empty() || reports.is_empty() {
        return;
    }
    let now = bulwark_transport::queue::now_ms();
    let token = format!(
        "{}.{}",
        transaction.id,
        kind.notify_keyword().to_ascii_lowercase()
    );
    let notice = dsn::build(&Notice {
        kind,
        hostname: &queue.settings().hostname,
        to: &transaction.reverse_path,
        envelope_id: transaction.envelope_id.as_deref(),
        arrival_ms: transaction.received_at,
        retry_until_ms: None,
        recipients: reports,
        original: &transaction.message,
        return_full: kind == NoticeKind::Failed && transaction.return_full,
        token: &token,
        now_ms: now,
    });
    match queue.send_notice(&notice, &transaction.reverse_path) {
        Ok(_) => tracing::info!(
            id = %transaction.id,
            to = %EnvelopePath(&transaction.reverse_path),
            recipients = %EnvelopeList(reports.iter().map(|r| r.address.as_str())),
            kind = kind.notify_keyword(),
            "delivery notice queued"
        ),
        Err(e) => {
            tracing::warn!(id = %transaction.id, error = %e, "cannot queue a delivery notice")
        }
    }
}

/// Queues the message for its remote recipients. Blocking.
fn enqueue_remote(queue: Option<&OutboundQueue>, transaction: &Transaction) -> bool {
    let recipients: Vec<NewQueueRecipient> = transaction
        .recipients
        .iter()
        .filter(|r| r.is_remote())
        .map(|r| NewQueueRecipient {
            address: r.address.to_string(),
            notify: r.notify.clone(),
            original_recipient: r.original_recipient.clone(),
        })
        .collect();
    if recipients.is_empty() {
        return true;
    }
    let Some(queue) = queue else {
        tracing::error!(id = %transaction.id, "remote recipients accepted without an outbound queue");
        return false;
    };
    let envelope = OutboundEnvelope {
        return_path: transaction.reverse_path.clone(),
        envelope_id: transaction.envelope_id.clone(),
        return_full: transaction.return_full,
        recipients,
    };
    match queue.submit(
        &Actor::system("submission"),
        &transaction.message,
        &envelope,
    ) {
        Ok(queue_id) => {
            tracing::info!(
                id = %transaction.id,
                %queue_id,
                from = %EnvelopePath(&transaction.reverse_path),
                to = %EnvelopeList(envelope.recipients.iter().map(|r| r.address.as_str())),
                "message queued"
            );
            true
        }
        Err(e) => {
            tracing::error!(id = %transaction.id, error = %e, "cannot queue the message");
            false
        }
    }
}

/// Audits delegated use, then stores the message for local recipients and
/// queues it for remote ones. Blocking.
fn deliver(
    delivery: &LocalDelivery,
    queue: Option<&OutboundQueue>,
    transaction: &Transaction,
    ip: IpAddr,
    protocol: &str,
) -> DeliveryOutcome {
    let store = delivery.directory().store();
    let audit = |d: &Delegation, outcome: Outcome| -> Result<u64, StoreError> {
        let Some(user) = &transaction.submitter else {
            return Ok(0);
        };
        let actor = Actor::user(
            &user.login,
            user.principal.0,
            &user.auth_method,
            Some(ip.to_string()),
            protocol,
        );
        let operation = match d.right {
            Right::SendOnBehalf => "mail.send-on-behalf",
            _ => "mail.send-as",
        };
        let mut event = actor.event(operation, Some((d.address.as_str(), Some(d.grantor.0))));
        event.object_ids = vec![transaction.id.clone()];
        event.item_count = 1;
        event.outcome = outcome;
        store.append_audit(event)
    };
    for (n, d) in transaction.delegations.iter().enumerate() {
        if let Err(e) = audit(d, Outcome::Success) {
            tracing::error!(error = %e, id = %transaction.id, "cannot audit a delegated send; refusing it");
            // Best effort: the records already written must not claim a
            // send that did not happen.
            for earlier in &transaction.delegations[..n] {
                let _ = audit(earlier, Outcome::Failed);
            }
            return DeliveryOutcome::TemporaryFailure;
        }
    }
    let accounts = transaction.accounts();
    let result = if accounts.is_empty() {
        Ok(bulwark_mail::DeliveryReport::default())
    } else {
        delivery.deliver(&transaction.message, &accounts, transaction.received_at)
    };
    let has_remote = transaction.recipients.iter().any(|r| r.is_remote());
    let mut outcome = local_outcome(&transaction.id, &result);
    let refused = refused_accounts(&result);
    // Remote recipients are queued once local delivery did not fail
    // temporarily (the client will send again, and must not find the
    // remote copy queued already).
    if has_remote
        && !matches!(
            outcome,
            DeliveryOutcome::TemporaryFailure | DeliveryOutcome::Unavailable
        )
    {
        outcome = if !enqueue_remote(queue, transaction) {
            DeliveryOutcome::TemporaryFailure
        } else if outcome == DeliveryOutcome::Stored {
            DeliveryOutcome::Stored
        } else {
            DeliveryOutcome::PartiallyStored
        };
    }
    if outcome.is_stored() {
        notify_local_success(queue, transaction);
        notify_local_failures(queue, transaction, &refused);
    }
    log_outcome(transaction, &outcome);
    if !outcome.is_stored() {
        for d in &transaction.delegations {
            if let Err(e) = audit(d, Outcome::Failed) {
                tracing::warn!(error = %e, "cannot audit a failed delegated send");
            }
        }
    }
    outcome
}

/// Whether the message only goes to local mailboxes with nothing else to
/// write: no delegated send to audit, no remote recipient to queue, no
/// success notice to send. Such a delivery is handed to the store from the
/// session's task (`LocalDelivery::deliver_async`); the rest goes through
/// the blocking pool.
fn only_local(transaction: &Transaction) -> bool {
    transaction.delegations.is_empty()
        && transaction.recipients.iter().all(|r| {
            !r.is_remote()
                && !bulwark_transport::queue::notify_wants(
                    r.notify.as_deref(),
                    bulwark_transport::dsn::NoticeKind::Delivered,
                )
        })
}

/// The reply a local delivery's outcome earns.
fn local_outcome(
    id: &str,
    result: &Result<bulwark_mail::DeliveryReport, StoreError>,
) -> DeliveryOutcome {
    match result {
        Ok(report) => {
            for (account, e) in &report.failed {
                tracing::warn!(%id, account = account.0, error = %e, "an account refused the message");
            }
            if report.failed.is_empty() {
                DeliveryOutcome::Stored
            } else if !report.delivered.is_empty() {
                DeliveryOutcome::PartiallyStored
            } else if report
                .failed
                .iter()
                .any(|(_, e)| matches!(e, StoreError::QuotaExceeded { .. }))
            {
                DeliveryOutcome::MailboxFull
            } else {
                DeliveryOutcome::Unavailable
            }
        }
        Err(e) => {
            tracing::error!(%id, error = %e, "delivery failed");
            DeliveryOutcome::TemporaryFailure
        }
    }
}

/// The refusals (4xx and 5xx replies) among bytes about to be written, one
/// per reply (a multi-line reply by its last line), for the mail log: a
/// site finds why a message was turned away, with the client's address
/// from the connection's span. Control characters are replaced, so what a
/// reply echoes cannot forge log lines; each is cut at 200 characters.
fn refusals(bytes: &[u8]) -> impl Iterator<Item = String> + '_ {
    bytes
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter(|line| line.len() >= 4 && matches!(line[0], b'4' | b'5') && line[3] == b' ')
        .map(|line| {
            String::from_utf8_lossy(line)
                .chars()
                .take(200)
                .map(|c| if c.is_control() { '?' } else { c })
                .collect()
        })
}

/// The mail log's line for a message stored in local mailboxes: who sent
/// it to whom, so a site can trace a message by its envelope as with any
/// MTA's log. Recipients in other domains are on the `message queued` line.
fn log_outcome(transaction: &Transaction, outcome: &DeliveryOutcome) {
    let local = transaction.recipients.iter().filter(|r| !r.is_remote());
    if local.clone().next().is_none() || !outcome.is_stored() {
        return;
    }
    tracing::info!(
        id = %transaction.id,
        from = %EnvelopePath(&transaction.reverse_path),
        to = %EnvelopeList(local.map(|r| r.address.as_str())),
        size = transaction.message.len(),
        "message delivered"
    );
}

/// An envelope address as the log shows it: in angle brackets, `<>` for
/// the null reverse-path of a bounce.
struct EnvelopePath<'a>(&'a str);

impl std::fmt::Display for EnvelopePath<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{}>", self.0)
    }
}

/// Envelope addresses for the log, comma-separated, written straight into
/// the line (no string is built per message).
struct EnvelopeList<I>(I);

impl<'a, I> std::fmt::Display for EnvelopeList<I>
where
    I: Iterator<Item = &'a str> + Clone,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (n, address) in self.0.clone().enumerate() {
            if n > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}", EnvelopePath(address))?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_picked_out_of_pipelined_replies() {
        let replies = b"250 2.1.0 Sender OK\r\n\
550 5.1.1 <x@example.org> Recipient address rejected: no such mailbox here\r\n\
451-4.3.0 first line\r\n451 4.3.0 last line\r\n\
354 Go ahead\r\n";
        let found: Vec<String> = refusals(replies).collect();
        assert_eq!(
            found,
            [
                "550 5.1.1 <x@example.org> Recipient address rejected: no such mailbox here",
                "451 4.3.0 last line",
            ]
        );
        assert_eq!(refusals(b"250-mx\r\n250 SIZE 1000\r\n").count(), 0);
        let sneaky: Vec<String> = refusals(b"500 5.5.2 bad \x1b[31m\tthing\r\n").collect();
        assert_eq!(sneaky, ["500 5.5.2 bad ?[31m?thing"]);
        let long = format!("554 {}\r\n", "y".repeat(1000));
        assert_eq!(refusals(long.as_bytes()).next().map(|l| l.len()), Some(200));
    }

    #[test]
    fn the_log_shows_envelope_addresses_in_brackets() {
        assert_eq!(EnvelopePath("").to_string(), "<>");
        assert_eq!(EnvelopePath("a@example.org").to_string(), "<a@example.org>");
        let to = ["a@example.org", "b@example.net"];
        assert_eq!(
            EnvelopeList(to.iter().copied()).to_string(),
            "<a@example.org>,<b@example.net>"
        );
        assert_eq!(EnvelopeList(std::iter::empty::<&str>()).to_string(), "");
    }

    #[test]
    fn session_ids_differ() {
        let a = session_id();
        let b = session_id();
        assert_ne!(a, b);
        assert!(a.len() >= 17);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
