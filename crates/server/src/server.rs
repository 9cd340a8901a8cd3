//! Listeners, the accept loops and the connection life cycle.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bulwark_config::{Config, LimitsSection, ListenerConfig, Protocol};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinError, JoinSet};
use tracing::Instrument as _;

use crate::admin::AdminHandler;
use crate::limits::{Limiter, Slot};
use crate::metrics::Metrics;
use crate::shutdown::ShutdownSignal;
use crate::stream::{IdleTimeout, Stream};
use crate::tls::TlsAcceptor;

/// A readiness check for `/health`: `Err` carries the reason shown to the
/// monitor. It runs on a blocking thread, so it may touch the database, but
/// it should answer within a few seconds.
pub type HealthCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Where a connection comes from and how it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// The server address the client connected to.
    pub local: SocketAddr,
    /// The protocol of the listener that accepted it.
    pub protocol: Protocol,
    /// Whether the stream is TLS (implicit TLS, or after STARTTLS).
    pub tls: bool,
}

/// One accepted client connection, handed to a [`ConnectionHandler`].
pub struct Connection {
    /// Where it comes from.
    pub info: ConnInfo,
    /// The bytes, behind the configured idle timeout.
    pub stream: IdleTimeout<Stream>,
    /// Fires when the server starts shutting down.
    pub shutdown: ShutdownSignal,
    acceptor: Option<TlsAcceptor>,
    handshake_timeout: Duration,
    metrics: Arc<Metrics>,
    /// The place this connection takes in the connection limits.
    slot: Option<Slot>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Whether [`Connection::start_tls`] can succeed: the connection is
    /// plain and a certificate is configured. Front ends advertise STARTTLS
    /// (or STLS) only when this is true.
    pub fn tls_available(&self) -> bool {
        !self.info.tls
            && matches!(self.stream.get_ref(), Stream::Plain(_))
            && self.acceptor.is_some()
    }

    /// Upgrades a plain connection to TLS (SMTP STARTTLS, IMAP STARTTLS,
    /// POP3 STLS), after the front end has sent its "go ahead" reply.
    ///
    /// The caller must discard any bytes it buffered from the plaintext
    /// phase before calling this: data pipelined after the STARTTLS command
    /// must never be read as if it came over TLS (the "STARTTLS command
    /// injection" flaw, RFC 3207 section 4.2 / CVE-2011-0411).
    ///
    /// Fails with [`io::ErrorKind::InvalidInput`] if the connection already
    /// uses TLS and [`io::ErrorKind::Unsupported`] if no certificate is
    /// configured; both leave nothing to recover, so the connection is
    /// dropped. A handshake that fails or takes longer than the handshake
    /// timeout is counted in the metrics and closes the connection.
    /// Gives back this connection's place in the connection limits once
    /// its session has ended (after QUIT or LOGOUT was answered): a client
    /// that reconnects as soon as it reads the goodbye must not find the
    /// closing connection still counted against it.
    pub fn release_slot(&mut self) {
        self.slot = None;
    }

    pub async fn start_tls(self) -> io::Result<Connection> {
        let Connection {
            mut info,
            stream,
            shutdown,
            acceptor,
            handshake_timeout,
            metrics,
            slot,
        } = self;
        if info.tls {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "connection already uses TLS",
            ));
        }
        let Some(acceptor) = acceptor else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "no TLS certificate is configured",
            ));
        };
        let idle_timeout = stream.timeout();
        let tcp = match stream.into_inner() {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "connection already uses TLS",
                ));
            }
        };
        let tls = handshake(&acceptor, tcp, handshake_timeout, &metrics, info.protocol).await?;
        info.tls = true;
        Ok(Connection {
            info,
            stream: IdleTimeout::new(tls, idle_timeout),
            shutdown,
            acceptor: Some(acceptor),
            handshake_timeout,
            metrics,
            slot,
        })
    }
}

/// Runs the TLS handshake with a deadline, counting failures.
async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    timeout: Duration,
    metrics: &Metrics,
    protocol: Protocol,
) -> io::Result<Stream> {
    let result = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "TLS handshake timed out",
        )),
    };
    match result {
        Ok(tls) => Ok(Stream::Tls(Box::new(tls))),
        Err(e) => {
            metrics.tls_handshake_failed(protocol);
            tracing::debug!(error = %e, "TLS handshake failed");
            Err(e)
        }
    }
}

/// A protocol front end: takes over a connection once it is accepted,
/// admitted by the limits and, for implicit-TLS protocols, encrypted.
pub trait ConnectionHandler: Send + Sync + 'static {
    /// Serves one connection until it ends. The runtime drops the connection
    /// (closing the socket) when the returned future completes.
    fn handle(&self, conn: Connection) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

    /// Bytes written before closing a connection refused for load (e.g. SMTP "421 ..."); None = just close.
    ///
    /// Written with one non-blocking write, so it should be short. Never
    /// sent on implicit-TLS listeners, where the client expects a handshake.
    fn busy_reply(&self) -> Option<&'static [u8]> {
        None
    }
}

/// Runtime settings, usually from the `[limits]` and `[server]` sections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOptions {
    /// Concurrent connections across all listeners except `admin`, which
    /// has its own allowance of the same size.
    pub max_connections: u32,
    /// Concurrent connections from one client address (IPv6: one /64).
    pub max_connections_per_ip: u32,
    /// A read that receives nothing for this long fails; see [`IdleTimeout`].
    pub idle_timeout: Duration,
    /// How long a TLS handshake may take.
    pub tls_handshake_timeout: Duration,
    /// How long shutdown waits for sessions before closing them.
    pub shutdown_grace: Duration,
}

impl ServerOptions {
    /// The options a configuration asks for.
    pub fn from_config(cfg: &Config) -> Self {
        ServerOptions {
            max_connections: cfg.limits.max_connections,
            max_connections_per_ip: cfg.limits.max_connections_per_ip,
            idle_timeout: Duration::from_secs(cfg.limits.idle_timeout_secs),
            tls_handshake_timeout: Duration::from_secs(cfg.limits.tls_handshake_timeout_secs),
            shutdown_grace: Duration::from_secs(cfg.server.shutdown_grace_secs),
        }
    }
}

impl Default for ServerOptions {
    /// The configuration file's defaults.
    fn default() -> Self {
        let limits = LimitsSection::default();
        ServerOptions {
            max_connections: limits.max_connections,
            max_connections_per_ip: limits.max_connections_per_ip,
            idle_timeout: Duration::from_secs(limits.idle_timeout_secs),
            tls_handshake_timeout: Duration::from_secs(limits.tls_handshake_timeout_secs),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// The listener runtime, before binding.
pub struct Server {
    options: ServerOptions,
    tls: Option<TlsAcceptor>,
    web_tls: Option<TlsAcceptor>,
    metrics: Arc<Metrics>,
    handlers: HashMap<Protocol, Arc<dyn ConnectionHandler>>,
    health: Option<HealthCheck>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut protocols: Vec<_> = self.handlers.keys().map(|p| p.name()).collect();
        protocols.sort_unstable();
        f.debug_struct("Server")
            .field("options", &self.options)
            .field("tls", &self.tls.is_some())
            .field("handlers", &protocols)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server with no protocol handlers yet. `tls` is the certificate for
    /// every TLS listener (see [`crate::tls::load_server_config`]); without
    /// it, implicit-TLS listeners cannot be bound and STARTTLS is
    /// unavailable.
    pub fn new(
        options: ServerOptions,
        tls: Option<Arc<rustls::ServerConfig>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let web_tls = tls.as_ref().map(|config| {
            let mut web = (**config).clone();
            web.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            TlsAcceptor::from(Arc::new(web))
        });
        Server {
            options,
            web_tls,
            tls: tls.map(TlsAcceptor::from),
            metrics,
            handlers: HashMap::new(),
            health: None,
        }
    }

    /// Sets the front end for `protocol`, replacing any earlier one.
    /// Registering [`Protocol::Admin`] replaces the built-in admin endpoint
    /// (use [`AdminHandler`] inside yours to keep `/health` and `/metrics`).
    pub fn register(&mut self, protocol: Protocol, handler: Arc<dyn ConnectionHandler>) {
        self.handlers.insert(protocol, handler);
    }

    /// Sets the check behind the built-in admin endpoint's `/health`;
    /// without one, `/health` reports ok whenever the server answers.
    pub fn set_health_check(&mut self, check: Arc<dyn Fn() -> Result<(), String> + Send + Sync>) {
        self.health = Some(check);
    }

    /// Binds every listener that has a handler. Fails, naming the protocol
    /// and address, if a bind fails or an implicit-TLS listener has no
    /// certificate; nothing is served in that case.
    ///
    /// Listeners whose protocol has no handler (other than `admin`, which is
    /// built in) are skipped with a warning.
    pub async fn bind(self, listeners: &[ListenerConfig]) -> io::Result<BoundServer> {
        let admin: Arc<dyn ConnectionHandler> = match self.handlers.get(&Protocol::Admin) {
            Some(handler) => Arc::clone(handler),
            None => Arc::new(AdminHandler::new(
                Arc::clone(&self.metrics),
                self.health.clone(),
            )),
        };
        let mut bound = Vec::with_capacity(listeners.len());
        for cfg in listeners {
            let protocol = cfg.protocol;
            let handler = match self.handlers.get(&protocol) {
                _ if protocol == Protocol::Admin => Arc::clone(&admin),
                Some(handler) => Arc::clone(handler),
                None => {
                    tracing::warn!(
                        protocol = protocol.name(),
                        bind = %cfg.bind,
                        "protocol {} is not available in this build; listener not bound",
                        protocol.name()
                    );
                    continue;
                }
            };
            if self.tls.is_none() && protocol.implicit_tls() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{} listener on {} needs a TLS certificate and none is configured",
                        protocol.name(),
                        cfg.bind
                    ),
                ));
            }
            if self.tls.is_none() && protocol.needs_certificate() {
                tracing::warn!(
                    protocol = protocol.name(),
                    bind = %cfg.bind,
                    "no TLS certificate configured: STARTTLS will not be offered"
                );
            }
            let listener = TcpListener::bind(cfg.bind).await.map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot bind {} listener on {}: {e}",
                        protocol.name(),
                        cfg.bind
                    ),
                )
            })?;
            let local = listener.local_addr()?;
            tracing::info!(protocol = protocol.name(), addr = %local, "listening");
            bound.push(BoundListener {
                protocol,
                listener,
                local,
                handler,
            });
        }
        let shared = Arc::new(Shared {
            user_limits: Limiter::new(
                self.options.max_connections,
                self.options.max_connections_per_ip,
            ),
            admin_limits: Limiter::new(
                self.options.max_connections,
                self.options.max_connections_per_ip,
            ),
            options: self.options,
            tls: self.tls,
            web_tls: self.web_tls,
            metrics: self.metrics,
        });
        Ok(BoundServer {
            listeners: bound,
            shared,
        })
    }

    /// Binds every listener (returns an error naming the address if a bind fails, before serving anything), then serves until `shutdown` resolves; then stops accepting, signals sessions, waits up to shutdown_grace for them to finish, and returns.
    pub async fn run(
        self,
        listeners: &[ListenerConfig],
        shutdown: impl Future<Output = ()> + Send,
    ) -> io::Result<()> {
        self.bind(listeners).await?.serve(shutdown).await;
        Ok(())
    }
}

/// What every accept loop shares.
struct Shared {
    options: ServerOptions,
    tls: Option<TlsAcceptor>,
    /// The same certificate offering HTTP/2 and HTTP/1.1 by ALPN.
    web_tls: Option<TlsAcceptor>,
    metrics: Arc<Metrics>,
    /// Limits for every listener but `admin`.
    user_limits: Arc<Limiter>,
    /// Limits for `admin` listeners, so a flood elsewhere cannot lock the
    /// administrator out.
    admin_limits: Arc<Limiter>,
}

struct BoundListener {
    protocol: Protocol,
    listener: TcpListener,
    local: SocketAddr,
    handler: Arc<dyn ConnectionHandler>,
}

/// A server whose listeners are bound but not yet accepting.
pub struct BoundServer {
    listeners: Vec<BoundListener>,
    shared: Arc<Shared>,
}

impl fmt::Debug for BoundServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundServer")
            .field("listeners", &self.local_addrs())
            .finish_non_exhaustive()
    }
}

impl BoundServer {
    /// The bound listeners and their actual addresses (useful when a
    /// listener asked for port 0).
    pub fn local_addrs(&self) -> Vec<(Protocol, SocketAddr)> {
        self.listeners
            .iter()
            .map(|l| (l.protocol, l.local))
            .collect()
    }

    /// Serves until `shutdown` resolves; then closes the listeners, signals
    /// every session, waits up to the shutdown grace period for them to
    /// finish, closes those still open, and returns.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) {
        let (trigger, signal) = ShutdownSignal::channel();
        let mut loops = JoinSet::new();
        for listener in self.listeners {
            loops.spawn(accept_loop(
                listener,
                Arc::clone(&self.shared),
                signal.clone(),
            ));
        }
        shutdown.await;
        tracing::info!("shutting down: no longer accepting connections");
        // Fails only if nobody listens, which needs no telling.
        let _ = trigger.send(true);
        while let Some(done) = loops.join_next().await {
            if let Err(e) = done {
                tracing::error!(error = %e, "accept loop failed");
            }
        }
        tracing::info!("shutdown complete");
    }
}

fn log_session_end(result: Result<(), JoinError>) {
    if let Err(e) = result
        && e.is_panic()
    {
        tracing::error!(error = %e, "connection handler panicked");
    }
}

/// Whether an accept error concerns only the connection being accepted.
fn per_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

async fn accept_loop(l: BoundListener, shared: Arc<Shared>, mut shutdown: ShutdownSignal) {
    let span = tracing::info_span!("listener", protocol = l.protocol.name(), addr = %l.local);
    async {
        let mut sessions = JoinSet::new();
        loop {
            tokio::select! {
                biased;
                () = shutdown.wait() => break,
                Some(done) = sessions.join_next(), if !sessions.is_empty() => log_session_end(done),
                accepted = l.listener.accept() => match accepted {
                    Ok((tcp, peer)) => admit(&l, &shared, &shutdown, &mut sessions, tcp, peer),
                    Err(e) if per_connection_error(&e) => tracing::debug!(error = %e, "accept failed"),
                    Err(e) => {
                        // Out of file descriptors or memory: back off instead
                        // of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        // Closing the socket makes new connections fail at once.
        drop(l.listener);
        drain(&mut sessions, shared.options.shutdown_grace).await;
    }
    .instrument(span)
    .await;
}

/// Waits for the sessions to end, up to `grace`, then aborts the rest.
async fn drain(sessions: &mut JoinSet<()>, grace: Duration) {
    if sessions.is_empty() {
        return;
    }
    tracing::info!(sessions = sessions.len(), "waiting for sessions to finish");
    let deadline = tokio::time::sleep(grace);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            next = sessions.join_next() => match next {
                Some(done) => log_session_end(done),
                None => return,
            },
            () = &mut deadline => {
                tracing::warn!(sessions = sessions.len(), "shutdown grace period over, closing remaining sessions");
                sessions.shutdown().await;
                return;
            }
        }
    }
}

/// Applies the limits to a new connection and starts its session.
fn admit(
    l: &BoundListener,
    shared: &Arc<Shared>,
    shutdown: &ShutdownSignal,
    sessions: &mut JoinSet<()>,
    tcp: TcpStream,
    peer: SocketAddr,
) {
    let protocol = l.protocol;
    let limits = if protocol == Protocol::Admin {
        &shared.admin_limits
    } else {
        &shared.user_limits
    };
    let slot = match limits.acquire(peer.ip()) {
        Ok(slot) => slot,
        Err(why) => {
            shared.metrics.connection_refused(protocol, why);
            tracing::debug!(%peer, limit = ?why, "connection refused: limit reached");
            if !protocol.implicit_tls()
                && let Some(reply) = l.handler.busy_reply()
            {
                // One non-blocking write into an empty send buffer; if it
                // does not fit, the client just sees the close.
                let _ = tcp.try_write(reply);
            }
            return;
        }
    };
    let active = shared.metrics.connection_opened(protocol);
    // Line protocols write short replies and wait for the client.
    let _ = tcp.set_nodelay(true);
    let local = tcp.local_addr().unwrap_or(l.local);
    let handler = Arc::clone(&l.handler);
    let shared = Arc::clone(shared);
    let shutdown = shutdown.clone();
    let span = tracing::info_span!("connection", protocol = protocol.name(), %peer);
    sessions.spawn(
        async move {
            let _active = active;
            tracing::debug!("connection accepted");
            let stream = if protocol.implicit_tls() {
                // Only the web listener offers HTTP/2 (ALPN "h2"); a mail
                // client never sees it.
                let acceptor = if protocol == Protocol::Https {
                    shared.web_tls.as_ref()
                } else {
                    shared.tls.as_ref()
                };
                let Some(acceptor) = acceptor else {
                    // bind() refuses implicit-TLS listeners without a
                    // certificate, so this is not reached.
                    return;
                };
                match handshake(
                    acceptor,
                    tcp,
                    shared.options.tls_handshake_timeout,
                    &shared.metrics,
                    protocol,
                )
                .await
                {
                    Ok(stream) => stream,
                    Err(_) => return,
                }
            } else {
                Stream::Plain(tcp)
            };
            let conn = Connection {
                info: ConnInfo {
                    peer,
                    local,
                    protocol,
                    tls: stream.is_tls(),
                },
                stream: IdleTimeout::new(stream, shared.options.idle_timeout),
                shutdown,
                acceptor: shared.tls.clone(),
                handshake_timeout: shared.options.tls_handshake_timeout,
                metrics: Arc::clone(&shared.metrics),
                slot: Some(slot),
            };
            handler.handle(conn).await;
            tracing::debug!("connection closed");
        }
        .instrument(span),
    );
}
