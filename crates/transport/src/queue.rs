//! The outbound queue: putting mail in ([`OutboundQueue`]) and delivering
//! it ([`QueueRunner`]).
//!
//! Each recipient is tracked on its own (RFC 5321 section 4.5.4.1): a
//! temporary failure is retried with exponential backoff until the
//! message's lifetime ends, a permanent one ends that recipient. The
//! sender hears of failures, and of long delays, through a delivery status
//! notification, unless the recipient's `NOTIFY` says otherwise or the
//! message is itself a notification (null sender).

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bulwark_audit::Actor;
use bulwark_core::DomainName;
use bulwark_mail::{LocalDelivery, Resolution};
use bulwark_store::{
    Error as StoreError, NewQueueRecipient, NewQueuedMessage, QueueId, QueueRecipient,
    QueuedMessage, RecipientUpdate, Store,
};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::client::{self, ClientSettings, Envelope, RecipientOutcome, SessionError, TlsPolicy};
use crate::dkim;
use crate::dns::{Dns, LookupError};
use crate::dsn::{self, Notice, NoticeKind, RecipientReport};
use crate::mta_sts::{self, MtaSts};
use crate::route::{NextHop, Route, Routing};

/// Messages fetched per look at the queue.
const BATCH: usize = 64;
/// The runner looks at the queue at least this often, so a change made by
/// another process (an administrator's `queue retry`) is noticed.
const MAX_IDLE: Duration = Duration::from_secs(30);

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// How the queue behaves.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// Our name: EHLO, notices, `Reporting-MTA`.
    pub hostname: String,
    /// How long a message is tried before its recipients fail.
    pub lifetime: Duration,
    /// The wait after the first failed attempt; doubled after each one.
    pub retry_initial: Duration,
    /// The longest wait between attempts.
    pub retry_max: Duration,
    /// After this long undelivered, the sender is told once (none: never).
    pub delay_notice_after: Option<Duration>,
    /// Messages delivered at the same time.
    pub max_parallel: usize,
    /// Timeout for connecting to a next hop.
    pub connect_timeout: Duration,
    /// Timeout for each reply of a next hop.
    pub command_timeout: Duration,
    /// Timeout for the reply after the message data.
    pub data_timeout: Duration,
    /// Whether outgoing mail is DKIM-signed with the sender domain's key.
    pub dkim_sign: bool,
    /// The port MX hosts are contacted on: 25 (RFC 5321 section 4.5.4);
    /// tests point it elsewhere. Not a configuration key.
    pub mx_port: u16,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            hostname: "localhost".into(),
            lifetime: Duration::from_secs(5 * 86_400),
            retry_initial: Duration::from_secs(300),
            retry_max: Duration::from_secs(4 * 3600),
            delay_notice_after: Some(Duration::from_secs(4 * 3600)),
            max_parallel: 16,
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            dkim_sign: true,
            mx_port: 25,
        }
    }
}

/// The envelope of a message to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundEnvelope {
    /// The envelope sender; empty for a notification.
    pub return_path: String,
    /// The DSN envelope id.
    pub envelope_id: Option<String>,
    /// Whether failure notices return the whole message.
    pub return_full: bool,
    /// The recipients.
    pub recipients: Vec<NewQueueRecipient>,
}

/// Puts mail in the queue and wakes the runner. Cloning is cheap.
#[derive(Clone)]
pub struct OutboundQueue {
    store: Store,
    wake: Arc<Notify>,
    settings: Arc<QueueSettings>,
    stats: Arc<QueueStats>,
}

/// What delivery attempts came to, per recipient, since start (for
/// `/metrics`).
#[derive(Debug, Default)]
pub struct QueueStats {
    /// Accepted by the next hop or stored in a local mailbox.
    pub delivered: AtomicU64,
    /// Failed for now; tried again later.
    pub deferred: AtomicU64,
    /// Failed for good (refused, or queued too long); the sender is told.
    pub failed: AtomicU64,
}

impl std::fmt::Debug for OutboundQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundQueue")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// `message` without a leading `Return-Path` field: that field is added at
/// final delivery (RFC 5321 section 4.4), never carried onwards.
fn without_return_path(message: &[u8]) -> &[u8] {
    let starts = message.len() >= 12 && message[..12].eq_ignore_ascii_case(b"Return-Path:");
    if !starts {
        return message;
    }
    match message.windows(2).position(|w| w == b"\r\n") {
        Some(end) => &message[end + 2..],
        None => message,
    }
}

/// The domain of the first `From:` address.
fn from_domain(message: &[u8]) -> Option<String> {
    let parsed = mail_parser::MessageParser::new().parse_headers(message)?;
    let address = parsed.from()?.first()?.address()?.to_string();
    let (_, domain) = address.rsplit_once('@')?;
    Some(domain.to_ascii_lowercase())
}

impl OutboundQueue {
    /// A queue over `store`.
    pub fn new(store: Store, settings: QueueSettings) -> OutboundQueue {
        OutboundQueue {
            store,
            wake: Arc::new(Notify::new()),
            settings: Arc::new(settings),
            stats: Arc::default(),
        }
    }

    /// Counts of attempt results so far.
    pub fn stats(&self) -> &Arc<QueueStats> {
        &self.stats
    }

    /// The settings.
    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    /// The store the queue lives in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Makes the runner look at the queue now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The message as it leaves: without `Return-Path`, with a
    /// `DKIM-Signature` of its `From:` domain when that is one of ours and
    /// has a key. Blocking.
    pub fn prepare(&self, message: &[u8]) -> Vec<u8> {
        let message = without_return_path(message);
        if !self.settings.dkim_sign {
            return message.to_vec();
        }
        let signature = from_domain(message).and_then(|domain| {
            let name: DomainName = domain.parse().ok()?;
            let record = self.store.domain(&name).ok()??;
            let key = self.store.dkim_keys(record.id).ok()?.into_iter().next()?;
            match dkim::sign(message, &domain, &key) {
                Ok(header) => Some(header),
                Err(e) => {
                    tracing::warn!(%domain, error = %e, "cannot DKIM-sign; sending unsigned");
                    None
                }
            }
        });
        let mut out = Vec::with_capacity(message.len() + 600);
        if let Some(header) = signature {
            out.extend_from_slice(header.as_bytes());
        }
        out.extend_from_slice(message);
        out
    }

    /// Signs and queues `message` for `envelope`'s recipients; returns once
    /// it is durable. Blocking.
    pub fn submit(
        &self,
        actor: &Actor,
        message: &[u8],
        envelope: &OutboundEnvelope,
    ) -> Result<QueueId, StoreError> {
        let prepared = self.prepare(message);
        let id = self.enqueue_prepared(actor, &prepared, envelope)?;
        Ok(id)
    }

    /// Queues a delivery status notification (built with [`dsn::build`])
    /// for `to`, with the null sender so it is never bounced. Blocking.
    pub fn send_notice(&self, notice: &[u8], to: &str) -> Result<QueueId, StoreError> {
        let envelope = OutboundEnvelope {
            return_path: String::new(),
            envelope_id: None,
            return_full: false,
            recipients: vec![NewQueueRecipient {
                address: to.to_string(),
                notify: Some("NEVER".into()),
                original_recipient: None,
            }],
        };
        self.enqueue_prepared(&Actor::system("queue"), notice, &envelope)
    }

    fn enqueue_prepared(
        &self,
        actor: &Actor,
        message: &[u8],
        envelope: &OutboundEnvelope,
    ) -> Result<QueueId, StoreError> {
        let now = now_ms();
        let id = self.store.enqueue(
            actor,
            message,
            &NewQueuedMessage {
                return_path: envelope.return_path.clone(),
                envelope_id: envelope.envelope_id.clone(),
                return_full: envelope.return_full,
                recipients: envelope.recipients.clone(),
                first_attempt_at: now,
                expires_at: now.saturating_add(ms(self.settings.lifetime)),
            },
        )?;
        self.wake();
        Ok(id)
    }
}

/// The wait before attempt `attempts + 1`, after `attempts` failures.
pub fn backoff(settings: &QueueSettings, attempts: u32) -> Duration {
    let factor = 1u32
        .checked_shl(attempts.saturating_sub(1))
        .unwrap_or(u32::MAX);
    settings
        .retry_initial
        .checked_mul(factor)
        .unwrap_or(settings.retry_max)
        .min(settings.retry_max)
}

/// Whether the recipient's `NOTIFY` asks for notices of `kind` (RFC 3461
/// section 4.1: without the parameter, failures and delays are reported).
fn wants(recipient: &QueueRecipient, kind: NoticeKind) -> bool {
    notify_wants(recipient.notify.as_deref(), kind)
}

/// Whether a `NOTIFY` value asks for notices of `kind` (RFC 3461 section
/// 4.1: without the parameter, failures and delays are reported, success
/// is not).
pub fn notify_wants(notify: Option<&str>, kind: NoticeKind) -> bool {
    let word = kind.notify_keyword();
    match notify {
        None => matches!(kind, NoticeKind::Failed | NoticeKind::Delayed),
        Some(list) => list.split(',').any(|w| w.trim().eq_ignore_ascii_case(word)),
    }
}

/// One attempt's result for one recipient.
#[derive(Debug, Clone)]
enum Attempt {
    /// Accepted; `remote` names the next hop (none: a local mailbox).
    Delivered { remote: Option<String> },
    Temporary {
        reply: String,
        remote: Option<String>,
    },
    Permanent {
        reply: String,
        remote: Option<String>,
    },
}

/// Delivers the queue. Start one per process with [`QueueRunner::spawn`].
pub struct QueueRunner {
    queue: OutboundQueue,
    delivery: LocalDelivery,
    dns: Option<Dns>,
    routing: Arc<Routing>,
    roots: Arc<rustls::RootCertStore>,
    mta_sts: Option<MtaSts>,
    in_flight: Arc<Mutex<HashSet<QueueId>>>,
}

impl QueueRunner {
    /// A runner delivering `queue`: local domains through `delivery`,
    /// others by `routing`, MX lookups through `dns` (without it, only
    /// static routes and the smarthost work). `roots` verify next hops that
    /// require verified TLS.
    pub fn new(
        queue: OutboundQueue,
        delivery: LocalDelivery,
        dns: Option<Dns>,
        routing: Routing,
        roots: Arc<rustls::RootCertStore>,
    ) -> QueueRunner {
        QueueRunner {
            queue,
            delivery,
            dns,
            routing: Arc::new(routing),
            roots,
            mta_sts: None,
            in_flight: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// Honours the MTA-STS policies of recipient domains (RFC 8461) for
    /// MX delivery.
    pub fn with_mta_sts(mut self, mta_sts: MtaSts) -> QueueRunner {
        self.mta_sts = Some(mta_sts);
        self
    }

    /// Runs until `shutdown` completes, then lets deliveries in progress
    /// finish (each is bounded by the client's timeouts).
    pub fn spawn(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run(shutdown))
    }

    async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let this = Arc::new(self);
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            while tasks.try_join_next().is_some() {}
            let now = now_ms();
            let room = this.queue.settings.max_parallel.saturating_sub(tasks.len());
            // Due work that is all being delivered already: wait for those
            // deliveries rather than asking the store again and again.
            let mut only_in_flight = false;
            if room > 0 {
                let store = this.queue.store.clone();
                match store.run(move |s| s.queue_due(now, BATCH)).await {
                    Ok(due) => {
                        let (mut started, mut busy) = (0, 0);
                        for message in due {
                            if started >= room {
                                break;
                            }
                            let fresh = this
                                .in_flight
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .insert(message.id);
                            if fresh {
                                let runner = Arc::clone(&this);
                                tasks.spawn(async move { runner.attempt(message).await });
                                started += 1;
                            } else {
                                busy += 1;
                            }
                        }
                        only_in_flight = started == 0 && busy > 0;
                    }
                    Err(e) => tracing::error!(error = %e, "cannot read the queue"),
                }
            }
            let store = this.queue.store.clone();
            let next = store.run(|s| s.next_queue_attempt()).await.ok().flatten();
            let wait = next.map_or(MAX_IDLE, |at| {
                Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)).min(MAX_IDLE)
            });
            // A full pipeline waits for a slot rather than spinning.
            let full = tasks.len() >= this.queue.settings.max_parallel;
            let wait = if full || (only_in_flight && !tasks.is_empty()) {
                MAX_IDLE
            } else {
                wait.max(Duration::from_millis(50))
            };
            tokio::select! {
                () = &mut shutdown => break,
                () = this.queue.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        while tasks.join_next().await.is_some() {}
    }

    /// One delivery attempt for the due recipients of `message`.
    async fn attempt(&self, message: QueuedMessage) {
        let id = message.id;
        if let Err(e) = self.attempt_inner(message).await {
            tracing::warn!(queue_id = %id, error = %e, "queue attempt failed; will retry");
        }
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    async fn attempt_inner(&self, message: QueuedMessage) -> Result<(), StoreError> {
        let store = self.queue.store.clone();
        let blob = message.blob;
        let raw = Arc::new(store.run(move |s| s.read_blob(&blob)).await?);
        let mut by_domain: BTreeMap<String, Vec<&QueueRecipient>> = BTreeMap::new();
        for r in &message.recipients {
            let domain = r
                .address
                .rsplit_once('@')
                .map_or("", |(_, d)| d)
                .to_ascii_lowercase();
            by_domain.entry(domain).or_default().push(r);
        }
        let mut results: Vec<(&QueueRecipient, Attempt)> = Vec::new();
        for (domain, recipients) in &by_domain {
            let outcomes = self
                .deliver_domain(&message, &raw, domain, recipients)
                .await;
            results.extend(recipients.iter().copied().zip(outcomes));
        }
        self.settle(&message, &raw, results).await
    }

    /// Turns attempt results into store updates and notices.
    async fn settle(
        &self,
        message: &QueuedMessage,
        raw: &[u8],
        results: Vec<(&QueueRecipient, Attempt)>,
    ) -> Result<(), StoreError> {
        let settings = &self.queue.settings;
        let now = now_ms();
        let mut updates = Vec::new();
        let mut failed = Vec::new();
        let mut delayed = Vec::new();
        let mut relayed = Vec::new();
        let mut delivered = Vec::new();
        for (recipient, result) in results {
            // Every line below is about this recipient of this message.
            let _recipient = tracing::info_span!(
                "recipient",
                queue_id = %message.id,
                from = %format_args!("<{}>", message.return_path),
                to = %format_args!("<{}>", recipient.address),
            )
            .entered();
            let report = |reply: &str, remote: &Option<String>, permanent: bool| RecipientReport {
                address: recipient.address.clone(),
                original_recipient: recipient.original_recipient.clone(),
                status: dsn::status_of(reply, permanent),
                diagnostic: reply.to_string(),
                remote_mta: remote.clone(),
            };
            let update = match result {
                Attempt::Delivered { remote } => {
                    tracing::info!(
                        relay = %remote.as_deref().unwrap_or("local mailbox"),
                        "delivered"
                    );
                    let kind = if remote.is_some() {
                        NoticeKind::Relayed
                    } else {
                        NoticeKind::Delivered
                    };
                    if wants(recipient, kind) {
                        let text = match &remote {
                            Some(host) => format!("250 2.0.0 accepted by {host}"),
                            None => "250 2.0.0 delivered to the mailbox".to_string(),
                        };
                        let list = if remote.is_some() {
                            &mut relayed
                        } else {
                            &mut delivered
                        };
                        list.push(report(&text, &remote, false));
                    }
                    self.queue.stats.delivered.fetch_add(1, Ordering::Relaxed);
                    RecipientUpdate::Delivered
                }
                Attempt::Permanent { reply, remote } => {
                    tracing::info!(
                        relay = %remote.as_deref().unwrap_or("-"),
                        %reply,
                        "delivery failed"
                    );
                    if wants(recipient, NoticeKind::Failed) {
                        failed.push(report(&reply, &remote, true));
                    }
                    self.queue.stats.failed.fetch_add(1, Ordering::Relaxed);
                    RecipientUpdate::Failed { error: reply }
                }
                Attempt::Temporary { reply, remote } => {
                    let attempts = recipient.attempts.saturating_add(1);
                    let next = now.saturating_add(ms(backoff(settings, attempts)));
                    if now >= message.expires_at {
                        let error = format!("{reply} (gave up: the message was queued too long)");
                        tracing::info!(
                            %error,
                            "delivery expired"
                        );
                        if wants(recipient, NoticeKind::Failed) {
                            failed.push(report(&error, &remote, true));
                        }
                        self.queue.stats.failed.fetch_add(1, Ordering::Relaxed);
                        RecipientUpdate::Failed { error }
                    } else {
                        let late = settings.delay_notice_after.is_some_and(|after| {
                            now >= message.created_at.saturating_add(ms(after))
                        });
                        let notify_delay = late
                            && !recipient.delay_notified
                            && wants(recipient, NoticeKind::Delayed);
                        if notify_delay {
                            delayed.push(report(&reply, &remote, false));
                        }
                        tracing::info!(
                            relay = %remote.as_deref().unwrap_or("-"),
                            %reply,
                            "delivery deferred"
                        );
                        self.queue.stats.deferred.fetch_add(1, Ordering::Relaxed);
                        RecipientUpdate::Retry {
                            next_attempt_at: next.min(message.expires_at.max(now)),
                            error: reply,
                            delay_notified: recipient.delay_notified || notify_delay,
                        }
                    }
                }
            };
            updates.push((recipient.address.clone(), update));
        }
        // Notices are queued before the results are recorded: a crash in
        // between repeats a notice rather than losing it.
        if !message.return_path.is_empty() {
            let notices = [
                (NoticeKind::Failed, &failed),
                (NoticeKind::Delayed, &delayed),
                (NoticeKind::Relayed, &relayed),
                (NoticeKind::Delivered, &delivered),
            ];
            for (kind, reports) in notices {
                if reports.is_empty() {
                    continue;
                }
                let token = format!("{}.{}.{}", message.id, now, kind as u8);
                let notice = dsn::build(&Notice {
                    kind,
                    hostname: &settings.hostname,
                    to: &message.return_path,
                    envelope_id: message.envelope_id.as_deref(),
                    arrival_ms: message.created_at,
                    retry_until_ms: Some(message.expires_at),
                    recipients: reports,
                    original: raw,
                    return_full: message.return_full && kind == NoticeKind::Failed,
                    token: &token,
                    now_ms: now,
                });
                let queue = self.queue.clone();
                let to = message.return_path.clone();
                tokio::task::spawn_blocking(move || queue.send_notice(&notice, &to))
                    .await
                    .map_err(|e| StoreError::Unavailable(format!("queue task failed: {e}")))??;
            }
        }
        let store = self.queue.store.clone();
        let id = message.id;
        store
            .run(move |s| s.update_queued(&Actor::system("queue"), id, &updates))
            .await
    }

    /// Delivers to the recipients of one domain; one result per recipient,
    /// in order.
    async fn deliver_domain(
        &self,
        message: &QueuedMessage,
        raw: &Arc<Vec<u8>>,
        domain: &str,
        recipients: &[&QueueRecipient],
    ) -> Vec<Attempt> {
        let all = |a: Attempt| vec![a; recipients.len()];
        let local = match domain.parse::<DomainName>() {
            Ok(name) => {
                let store = self.queue.store.clone();
                store.run(move |s| s.domain(&name)).await
            }
            Err(_) => {
                return all(Attempt::Permanent {
                    reply: format!("550 5.1.2 Bad destination domain {domain:?}"),
                    remote: None,
                });
            }
        };
        match local {
            Ok(Some(_)) => return self.deliver_local(message, raw, recipients).await,
            Ok(None) => {}
            Err(e) => {
                return all(Attempt::Temporary {
                    reply: format!("451 4.3.0 Local lookup failed: {e}"),
                    remote: None,
                });
            }
        }
        let addresses: Vec<String> = recipients.iter().map(|r| r.address.clone()).collect();
        match self.routing.route(domain) {
            Route::Fixed(hop) => {
                let hop = hop.clone();
                let hosts = vec![(hop.host.clone(), hop.port)];
                self.try_hosts(message, raw, &addresses, &hosts, &hop).await
            }
            Route::Mx => {
                let Some(dns) = &self.dns else {
                    return all(Attempt::Temporary {
                        reply: "451 4.4.3 No DNS resolver configured for MX delivery".into(),
                        remote: None,
                    });
                };
                match dns.mail_exchangers(domain).await {
                    Ok(hosts) => {
                        let port = self.queue.settings.mx_port;
                        let policy = match &self.mta_sts {
                            Some(sts) => sts.policy(domain).await,
                            None => None,
                        };
                        let enforce = policy.filter(|p| p.mode == mta_sts::Mode::Enforce);
                        let hosts: Vec<(String, u16)> = hosts
                            .into_iter()
                            .filter(|h| enforce.as_ref().is_none_or(|p| p.allows(h)))
                            .map(|h| (h, port))
                            .collect();
                        if enforce.is_some() && hosts.is_empty() {
                            return all(Attempt::Temporary {
                                reply: format!(
                                    "451 4.7.5 No MX host of {domain} matches its MTA-STS policy"
                                ),
                                remote: None,
                            });
                        }
                        // RFC 8461 section 5: under enforce, only verified TLS.
                        let tls = if enforce.is_some() {
                            TlsPolicy::RequireVerified
                        } else {
                            TlsPolicy::Opportunistic
                        };
                        let hop = NextHop {
                            host: String::new(),
                            port,
                            tls,
                            auth: None,
                        };
                        self.try_hosts(message, raw, &addresses, &hosts, &hop).await
                    }
                    Err(LookupError::Temporary(why)) => all(Attempt::Temporary {
                        reply: format!("451 4.4.3 {why}"),
                        remote: None,
                    }),
                    Err(e) => all(Attempt::Permanent {
                        reply: format!("550 5.1.2 {e}"),
                        remote: None,
                    }),
                }
            }
        }
    }

    /// Tries each host (and each of its addresses) in order until one
    /// gives final answers.
    async fn try_hosts(
        &self,
        message: &QueuedMessage,
        raw: &Arc<Vec<u8>>,
        recipients: &[String],
        hosts: &[(String, u16)],
        hop: &NextHop,
    ) -> Vec<Attempt> {
        let settings = &self.queue.settings;
        let client_settings = ClientSettings {
            helo_name: settings.hostname.clone(),
            connect_timeout: settings.connect_timeout,
            command_timeout: settings.command_timeout,
            data_timeout: settings.data_timeout,
            tls: hop.tls.clone(),
            roots: Arc::clone(&self.roots),
            auth: hop.auth.clone(),
        };
        let smtputf8 = !message.return_path.is_ascii() || recipients.iter().any(|r| !r.is_ascii());
        let envelope = Envelope {
            mail_from: &message.return_path,
            recipients,
            message: raw,
            envelope_id: message.envelope_id.as_deref(),
            smtputf8,
        };
        let mut last = String::from("451 4.4.1 No next hop could be reached");
        let mut last_host = None;
        for (host, port) in hosts {
            let addresses = match &self.dns {
                Some(dns) => match dns.addresses(host).await {
                    Ok(a) => a,
                    Err(e) => {
                        last = format!("451 4.4.3 {e}");
                        continue;
                    }
                },
                None => match host.parse() {
                    Ok(ip) => vec![ip],
                    Err(_) => match tokio::net::lookup_host((host.as_str(), *port)).await {
                        Ok(found) => found.map(|a| a.ip()).collect(),
                        Err(e) => {
                            last = format!("451 4.4.3 Cannot resolve {host}: {e}");
                            continue;
                        }
                    },
                },
            };
            for ip in addresses {
                let addr = SocketAddr::new(ip, *port);
                match client::deliver(addr, host, &client_settings, &envelope).await {
                    Ok(outcomes) => {
                        let remote = Some(host.clone());
                        return outcomes
                            .into_iter()
                            .map(|o| match o {
                                RecipientOutcome::Delivered { .. } => Attempt::Delivered {
                                    remote: remote.clone(),
                                },
                                RecipientOutcome::Temporary { reply } => Attempt::Temporary {
                                    reply,
                                    remote: remote.clone(),
                                },
                                RecipientOutcome::Permanent { reply } => Attempt::Permanent {
                                    reply,
                                    remote: remote.clone(),
                                },
                            })
                            .collect();
                    }
                    Err(SessionError::Permanent(reply)) => {
                        return vec![
                            Attempt::Permanent {
                                reply,
                                remote: Some(host.clone())
                            };
                            recipients.len()
                        ];
                    }
                    Err(SessionError::Temporary(reply)) => {
                        tracing::debug!(%addr, %reply, "next hop failed; trying the next");
                        last = reply;
                        last_host = Some(host.clone());
                    }
                }
            }
        }
        vec![
            Attempt::Temporary {
                reply: last,
                remote: last_host
            };
            recipients.len()
        ]
    }

    /// Mail for our own domains (notices to our users, mostly) goes
    /// straight into mailboxes.
    async fn deliver_local(
        &self,
        message: &QueuedMessage,
        raw: &Arc<Vec<u8>>,
        recipients: &[&QueueRecipient],
    ) -> Vec<Attempt> {
        let delivery = self.delivery.clone();
        let raw = Arc::clone(raw);
        let return_path = message.return_path.clone();
        let addresses: Vec<String> = recipients.iter().map(|r| r.address.clone()).collect();
        let done = tokio::task::spawn_blocking(move || {
            let mut stored = Vec::with_capacity(raw.len() + 64);
            stored.extend_from_slice(format!("Return-Path: <{return_path}>\r\n").as_bytes());
            stored.extend_from_slice(&raw);
            addresses
                .iter()
                .map(|address| {
                    let Ok(parsed) = address.parse() else {
                        return Attempt::Permanent {
                            reply: "550 5.1.3 Bad recipient address syntax".into(),
                            remote: None,
                        };
                    };
                    match delivery.resolve(&parsed) {
                        Ok(Resolution::Deliver(accounts)) => {
                            match delivery.deliver(&stored, &accounts, now_ms()) {
                                Ok(report)
                                    if report.failed.is_empty() || !report.delivered.is_empty() =>
                                {
                                    Attempt::Delivered { remote: None }
                                }
                                Ok(report) => Attempt::Temporary {
                                    reply: format!(
                                        "452 4.2.2 {}",
                                        report
                                            .failed
                                            .first()
                                            .map_or(String::new(), |(_, e)| e.to_string())
                                    ),
                                    remote: None,
                                },
                                Err(e) => Attempt::Temporary {
                                    reply: format!("451 4.3.0 {e}"),
                                    remote: None,
                                },
                            }
                        }
                        // Room may be made before the message expires.
                        Ok(Resolution::MailboxFull) => Attempt::Temporary {
                            reply: "452 4.2.2 Mailbox full".into(),
                            remote: None,
                        },
                        Ok(_) => Attempt::Permanent {
                            reply: "550 5.1.1 No such mailbox here".into(),
                            remote: None,
                        },
                        Err(e) => Attempt::Temporary {
                            reply: format!("451 4.3.0 {e}"),
                            remote: None,
                        },
                    }
                })
                .collect::<Vec<_>>()
        })
        .await;
        done.unwrap_or_else(|e| {
            vec![
                Attempt::Temporary {
                    reply: format!("451 4.3.0 local delivery task failed: {e}"),
                    remote: None
                };
                recipients.len()
            ]
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let settings = QueueSettings {
            retry_initial: Duration::from_secs(60),
            retry_max: Duration::from_secs(600),
            ..QueueSettings::default()
        };
        assert_eq!(backoff(&settings, 1), Duration::from_secs(60));
        assert_eq!(backoff(&settings, 2), Duration::from_secs(120));
        assert_eq!(backoff(&settings, 4), Duration::from_secs(480));
        assert_eq!(backoff(&settings, 5), Duration::from_secs(600));
        assert_eq!(backoff(&settings, 200), Duration::from_secs(600));
    }

    #[test]
    fn return_path_is_not_carried_onwards() {
        assert_eq!(
            without_return_path(b"Return-Path: <a@b.c>\r\nFrom: x\r\n\r\nbody"),
            b"From: x\r\n\r\nbody"
        );
        assert_eq!(without_return_path(b"From: x\r\n\r\n"), b"From: x\r\n\r\n");
    }

    #[test]
    fn from_domains() {
        assert_eq!(
            from_domain(b"From: Alice <Alice@Example.COM>\r\n\r\n").as_deref(),
            Some("example.com")
        );
        assert_eq!(from_domain(b"Subject: none\r\n\r\n"), None);
    }

    #[test]
    fn notify_parameters() {
        let mut r = QueueRecipient {
            address: "a@b.c".into(),
            status: bulwark_store::RecipientStatus::Pending,
            attempts: 0,
            next_attempt_at: 0,
            last_error: None,
            notify: None,
            original_recipient: None,
            delay_notified: false,
        };
        assert!(wants(&r, NoticeKind::Failed) && wants(&r, NoticeKind::Delayed));
        r.notify = Some("NEVER".into());
        assert!(!wants(&r, NoticeKind::Failed) && !wants(&r, NoticeKind::Delayed));
        r.notify = Some("SUCCESS,FAILURE".into());
        assert!(wants(&r, NoticeKind::Failed) && !wants(&r, NoticeKind::Delayed));
    }
}
