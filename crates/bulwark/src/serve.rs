//! `bulwark serve`: start every configured listener and run until told to stop.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bulwark_config::RouteTls;
use bulwark_config::{Config, LogFormat, Protocol};
use bulwark_core::{DomainName, EmailAddress};
use bulwark_directory::Directory;
use bulwark_http::{ClientSettings, Dav, HttpHandler, MailOut};
use bulwark_imap::{ImapHandler, Pop3Handler, Pop3Limits};
use bulwark_mail::{LocalDelivery, Resolution};
use bulwark_server::{InvalidMetricName, Metrics, Server, ServerOptions};
use bulwark_smtp::{AfterDelivery, Mode, SendLimit, SmtpHandler, SmtpLimits, SmtpStats};
use bulwark_store::QueueSize;
use bulwark_transport::client::{Credentials, TlsPolicy, root_store};
use bulwark_transport::dns::Dns;
use bulwark_transport::mta_sts::MtaSts;
use bulwark_transport::queue::{OutboundQueue, QueueRunner, QueueSettings};
use bulwark_transport::route::{NextHop, Routing};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

use crate::CmdResult;
use crate::admin::open_directory;

fn init_logging(config: &Config) {
    let filter = EnvFilter::try_new(&config.log.level).unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour codes only for a person at a terminal; in a log file or a
    // journal they are noise, and formatting them costs on every line.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // A second subscriber (tests calling serve twice) is not an error worth failing for.
    let _ = match config.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The resolver of `[dns]`, or the system's; none when neither works (MX
/// delivery and inbound checks are then off, and the log says so).
fn resolver(config: &Config) -> Option<Dns> {
    let made = if config.dns.servers.is_empty() {
        Dns::system()
    } else {
        Dns::with_servers(&config.dns.servers)
    };
    made.map_err(|e| tracing::warn!(error = %e, "no DNS resolver: MX delivery and SPF/DKIM/DMARC checks are off"))
        .ok()
}

fn next_hop(host: &str, port: u16, tls: RouteTls, auth: Option<Credentials>) -> NextHop {
    NextHop {
        host: host.to_string(),
        port,
        tls: match tls {
            RouteTls::Opportunistic => TlsPolicy::Opportunistic,
            RouteTls::Required => TlsPolicy::RequireVerified,
            RouteTls::Implicit => TlsPolicy::ImplicitVerified,
            RouteTls::None => TlsPolicy::Disabled,
        },
        auth,
    }
}

fn routing(config: &Config) -> Routing {
    let routes = config
        .smtp
        .routes
        .iter()
        .map(|r| {
            (
                r.domain.to_ascii_lowercase(),
                next_hop(&r.host, r.port, r.tls, None),
            )
        })
        .collect();
    let smarthost = config.smtp.smarthost.as_ref().map(|s| {
        let auth = match (&s.username, &s.password) {
            (Some(username), Some(password)) => Some(Credentials {
                username: username.clone(),
                password: password.clone(),
            }),
            _ => None,
        };
        next_hop(&s.host, s.port, s.tls, auth)
    });
    Routing { routes, smarthost }
}

fn queue_settings(config: &Config) -> QueueSettings {
    let q = &config.queue;
    let secs = std::time::Duration::from_secs;
    QueueSettings {
        hostname: config.server.hostname.clone(),
        lifetime: secs(q.lifetime_secs),
        retry_initial: secs(q.retry_initial_secs),
        retry_max: secs(q.retry_max_secs),
        delay_notice_after: (q.delay_notice_secs > 0).then(|| secs(q.delay_notice_secs)),
        max_parallel: q.max_parallel as usize,
        connect_timeout: secs(q.connect_timeout_secs),
        command_timeout: secs(q.command_timeout_secs),
        data_timeout: secs(q.command_timeout_secs.saturating_mul(2)),
        dkim_sign: q.dkim_sign,
        ..QueueSettings::default()
    }
}

/// Local delivery with `smtp.postmaster` applied.
pub(crate) fn local_delivery(
    config: &Config,
    directory: &Directory,
) -> Result<LocalDelivery, Box<dyn std::error::Error>> {
    let delivery = LocalDelivery::new(directory.clone());
    Ok(match &config.smtp.postmaster {
        Some(text) => {
            let mailbox: EmailAddress =
                text.parse().map_err(|e| format!("smtp.postmaster: {e}"))?;
            delivery.with_postmaster(mailbox, &config.server.hostname)
        }
        None => delivery,
    })
}

/// Those of `domains` whose `postmaster@` reaches nobody, so that mail the
/// standards promise a reader (DMARC and TLS reports among it) is refused.
pub(crate) fn unreached_postmasters(
    delivery: &LocalDelivery,
    domains: impl IntoIterator<Item = DomainName>,
) -> Result<Vec<DomainName>, Box<dyn std::error::Error>> {
    let mut unreached = Vec::new();
    for domain in domains {
        let postmaster = EmailAddress::new("postmaster", &domain)?;
        if !matches!(
            delivery.resolve(&postmaster)?,
            Resolution::Deliver(_) | Resolution::MailboxFull
        ) {
            unreached.push(domain);
        }
    }
    Ok(unreached)
}

/// Plugs every protocol front end of this build into the listener runtime.
fn register_protocols(
    server: &mut Server,
    config: &Config,
    delivery: &LocalDelivery,
    queue: &OutboundQueue,
    dns: Option<&Dns>,
    metrics: &Metrics,
) {
    let directory = delivery.directory();
    let imap_limits = bulwark_imap::Limits {
        max_append_bytes: config.imap.max_append_bytes,
        max_line_bytes: config.imap.max_line_bytes as usize,
        max_sessions_per_account: config.imap.max_sessions_per_account as usize,
        ..bulwark_imap::Limits::default()
    };
    let imap = Arc::new(ImapHandler::new(directory.clone(), imap_limits));
    server.register(Protocol::Imap, imap.clone());
    server.register(Protocol::Imaps, imap);

    let pop3 = Arc::new(Pop3Handler::new(directory.clone(), Pop3Limits::default()));
    server.register(Protocol::Pop3, pop3.clone());
    server.register(Protocol::Pop3s, pop3);

    let smtp_limits = SmtpLimits {
        max_message_size: usize::try_from(config.smtp.max_message_bytes).unwrap_or(usize::MAX),
        max_recipients: config.smtp.max_recipients as usize,
        max_errors: config.smtp.max_errors,
        ..SmtpLimits::default()
    };
    let mail_out: Arc<dyn MailOut> = Arc::new(QueueMailOut(queue.clone()));
    let dav = Dav::new(directory.store().clone()).with_mail_out(mail_out);
    let calendar_mail: Arc<dyn AfterDelivery> = Arc::new(ApplyCalendarMail(dav.clone()));
    let hostname = config.server.hostname.clone();
    let mut inbound = SmtpHandler::new(
        Mode::Inbound,
        delivery.clone(),
        hostname.clone(),
        smtp_limits.clone(),
    );
    if config.smtp.verify_inbound
        && let Some(dns) = dns
    {
        inbound = inbound.with_verification(dns.clone());
    }
    if let Some(dns) = dns {
        inbound = inbound.with_blocklists(dns.clone(), config.smtp.dnsbl.clone());
    } else if !config.smtp.dnsbl.is_empty() {
        tracing::warn!("no DNS resolver: the blocklists in smtp.dnsbl are not asked");
    }
    inbound = inbound
        .with_queue(queue.clone())
        .with_after_delivery(calendar_mail.clone());
    register_smtp_metrics(
        metrics,
        inbound.stats(),
        [
            (
                "bulwark_smtp_inbound_messages_total",
                "Messages the MX listener accepted (answered 250).",
            ),
            (
                "bulwark_smtp_inbound_refusals_total",
                "Replies 4xx and 5xx the MX listener sent.",
            ),
        ],
    );
    server.register(Protocol::Smtp, Arc::new(inbound));
    let send_limit = Arc::new(SendLimit::new(config.smtp.max_recipients_per_hour));
    let mut submission =
        SmtpHandler::new(Mode::Submission, delivery.clone(), hostname, smtp_limits)
            .with_after_delivery(calendar_mail)
            .with_send_limit(send_limit);
    if config.smtp.relay {
        submission = submission.with_queue(queue.clone());
    }
    register_smtp_metrics(
        metrics,
        submission.stats(),
        [
            (
                "bulwark_smtp_submission_messages_total",
                "Messages the submission listeners accepted (answered 250).",
            ),
            (
                "bulwark_smtp_submission_refusals_total",
                "Replies 4xx and 5xx the submission listeners sent.",
            ),
        ],
    );
    let submission = Arc::new(submission);
    server.register(Protocol::Submission, submission.clone());
    server.register(Protocol::Submissions, submission);

    // Clients are told the ports this configuration really listens on.
    let port = |protocol: Protocol| {
        config
            .listeners
            .iter()
            .find(|l| l.protocol == protocol)
            .map(|l| l.bind.port())
    };
    let settings = ClientSettings {
        hostname: config.server.hostname.clone(),
        imaps_port: port(Protocol::Imaps),
        imap_port: port(Protocol::Imap),
        pop3s_port: port(Protocol::Pop3s),
        submissions_port: port(Protocol::Submissions),
        submission_port: port(Protocol::Submission),
        https_port: port(Protocol::Https),
    };
    server.register(
        Protocol::Https,
        Arc::new(HttpHandler::new(directory.clone(), settings, dav.clone())),
    );
}

/// Calendar messages that arrive by mail are applied to the recipients'
/// calendars once the mail is stored.
struct ApplyCalendarMail(Dav);

impl AfterDelivery for ApplyCalendarMail {
    fn wants(&self, message: &[u8]) -> bool {
        // Runs on every delivered message: jump from one `t`/`T` to the next.
        const WANTED: &[u8] = b"text/calendar";
        memchr::memchr2_iter(b't', b'T', message).any(|at| {
            message
                .get(at..at + WANTED.len())
                .is_some_and(|w| w.eq_ignore_ascii_case(WANTED))
        })
    }

    fn delivered(&self, accounts: Vec<bulwark_core::PrincipalId>, message: Vec<u8>) {
        let dav = self.0.clone();
        tokio::spawn(async move {
            for account in accounts {
                dav.apply_imip(account, &message).await;
            }
        });
    }
}

/// Calendar invitations and replies for people elsewhere leave through the
/// outbound queue, DKIM-signed like any other mail of ours.
struct QueueMailOut(OutboundQueue);

impl MailOut for QueueMailOut {
    fn send(&self, from: &str, to: &str, message: &[u8]) -> Result<(), String> {
        let envelope = bulwark_transport::queue::OutboundEnvelope {
            return_path: from.to_string(),
            envelope_id: None,
            return_full: false,
            recipients: vec![bulwark_store::NewQueueRecipient {
                address: to.to_string(),
                notify: None,
                original_recipient: None,
            }],
        };
        self.0
            .submit(&bulwark_audit::Actor::system("caldav"), message, &envelope)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Logs the metrics that could not be registered; the server runs on
/// without them.
fn warn_unexported(outcomes: impl IntoIterator<Item = Result<(), InvalidMetricName>>) {
    for outcome in outcomes {
        if let Err(e) = outcome {
            tracing::warn!(error = %e, "cannot export a metric");
        }
    }
}

/// One SMTP handler's counts on `/metrics`: `names` are the names and
/// help texts of its messages and its refusals.
fn register_smtp_metrics(
    metrics: &Metrics,
    stats: &Arc<SmtpStats>,
    names: [(&'static str, &'static str); 2],
) {
    let [(messages, messages_help), (refusals, refusals_help)] = names;
    let (m, r) = (Arc::clone(stats), Arc::clone(stats));
    let registered = [
        metrics.counter_from(messages, messages_help, move || {
            m.messages.load(Ordering::Relaxed)
        }),
        metrics.counter_from(refusals, refusals_help, move || {
            r.refusals.load(Ordering::Relaxed)
        }),
    ];
    warn_unexported(registered);
}

/// The outbound queue on `/metrics`: what it holds now (read from the
/// store at each scrape) and what delivery attempts came to.
fn register_queue_metrics(metrics: &Metrics, queue: &OutboundQueue) {
    let size = |queue: &OutboundQueue| {
        queue.store().queue_size().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the queue's size");
            QueueSize::default()
        })
    };
    let (q1, q2) = (queue.clone(), queue.clone());
    let (s1, s2, s3) = (
        Arc::clone(queue.stats()),
        Arc::clone(queue.stats()),
        Arc::clone(queue.stats()),
    );
    let registered = [
        metrics.gauge_from(
            "bulwark_queue_messages",
            "Messages in the outbound queue with a recipient still to deliver.",
            move || size(&q1).messages,
        ),
        metrics.gauge_from(
            "bulwark_queue_recipients",
            "Recipients in the outbound queue still to deliver.",
            move || size(&q2).pending_recipients,
        ),
        metrics.counter_from(
            "bulwark_queue_delivered_total",
            "Queued recipients delivered (to the next hop or a local mailbox).",
            move || s1.delivered.load(Ordering::Relaxed),
        ),
        metrics.counter_from(
            "bulwark_queue_deferred_total",
            "Delivery attempts that failed for now and will be retried.",
            move || s2.deferred.load(Ordering::Relaxed),
        ),
        metrics.counter_from(
            "bulwark_queue_failed_total",
            "Queued recipients given up on (refused, or queued too long); the sender is told.",
            move || s3.failed.load(Ordering::Relaxed),
        ),
    ];
    warn_unexported(registered);
}

/// The store's group commit on `/metrics`: how many transactions, and how
/// many writes they carried.
fn register_store_metrics(metrics: &Metrics, store: &bulwark_store::Store) {
    let (commits, writes) = (store.clone(), store.clone());
    let registered = [
        metrics.counter_from(
            "bulwark_store_commits_total",
            "Transactions the store's writer committed (each one WAL sync).",
            move || commits.commit_stats().0,
        ),
        metrics.counter_from(
            "bulwark_store_writes_total",
            "Writes those transactions carried; divided by commits, the group-commit factor.",
            move || writes.commit_stats().1,
        ),
    ];
    warn_unexported(registered);
}

pub fn serve(config_path: &Path) -> CmdResult {
    let config = Config::load(config_path)?;
    init_logging(&config);
    let directory = open_directory(&config)?;
    let delivery = local_delivery(&config, &directory)?;
    let domains = directory.store().domains()?.into_iter().map(|d| d.name);
    let unreached = unreached_postmasters(&delivery, domains)?;
    if !unreached.is_empty() {
        let names: Vec<String> = unreached.iter().map(DomainName::to_string).collect();
        tracing::warn!(
            domains = %names.join(", "),
            "mail for postmaster@ these domains reaches nobody and is refused; \
             set smtp.postmaster or add the address"
        );
    }
    let tls = match (&config.tls.certificate, &config.tls.private_key) {
        (Some(cert), Some(key)) => Some(bulwark_server::tls::load_server_config(cert, key)?),
        _ => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // The resolver binds to the runtime it is made in.
    let _entered = runtime.enter();
    let dns = resolver(&config);
    let queue = OutboundQueue::new(directory.store().clone(), queue_settings(&config));
    let roots = Arc::new(root_store(None)?);
    let mut runner = QueueRunner::new(
        queue.clone(),
        delivery.clone(),
        dns.clone(),
        routing(&config),
        Arc::clone(&roots),
    );
    if let Some(dns) = &dns {
        runner = runner.with_mta_sts(MtaSts::new(dns.clone(), roots, 443));
    }
    let metrics = Arc::new(Metrics::new());
    register_store_metrics(&metrics, directory.store());
    let mut server = Server::new(
        ServerOptions::from_config(&config),
        tls,
        Arc::clone(&metrics),
    );
    register_protocols(
        &mut server,
        &config,
        &delivery,
        &queue,
        dns.as_ref(),
        &metrics,
    );
    register_queue_metrics(&metrics, &queue);
    let store = directory.store().clone();
    server.set_health_check(Arc::new(move || {
        store.domains().map(|_| ()).map_err(|e| e.to_string())
    }));
    let grace = std::time::Duration::from_secs(config.server.shutdown_grace_secs);

    runtime.block_on(async move {
        // Handlers are installed before the banner, so a SIGTERM sent as soon
        // as the banner appears already means "shut down gracefully".
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let (stopping, mut stop_seen) = tokio::sync::watch::channel(false);
        let stop = async move {
            tokio::select! {
                _ = terminate.recv() => tracing::info!("SIGTERM received, shutting down"),
                _ = interrupt.recv() => tracing::info!("SIGINT received, shutting down"),
            }
            let _ = stopping.send(true);
        };
        let runner = runner.spawn(async move {
            let _ = stop_seen.changed().await;
        });
        let bound = server.bind(&config.listeners).await?;
        let addrs = bound.local_addrs();
        println!(
            "Bulwark {} serving {}",
            env!("CARGO_PKG_VERSION"),
            config.server.hostname
        );
        for (protocol, addr) in &addrs {
            let what = match protocol {
                Protocol::Admin => "admin (GET /health, /metrics)",
                other => other.name(),
            };
            println!("  {what:<32} {addr}");
        }
        let unserved: Vec<&str> = config
            .listeners
            .iter()
            .filter(|l| !addrs.iter().any(|(p, _)| *p == l.protocol))
            .map(|l| l.protocol.name())
            .collect();
        if !unserved.is_empty() {
            println!("  not available in this build yet: {}", unserved.join(", "));
        }
        println!("Stop with Ctrl-C or SIGTERM.");
        tracing::info!(listeners = addrs.len(), "serving");
        bound.serve(stop).await;
        // Deliveries in progress finish (each is bounded by its timeouts);
        // one cut short is simply tried again after the restart.
        if tokio::time::timeout(grace, runner).await.is_err() {
            tracing::warn!("queue deliveries still running at shutdown; they will be retried");
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    // Dropping the directory closes the store: the writer finishes every
    // queued write before the process exits.
    drop(directory);
    tracing::info!("stopped");
    Ok(())
}
