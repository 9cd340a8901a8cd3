//! The outbound SMTP client: one attempt to hand one message to one host.
//!
//! # What this module owns
//!
//! * [`deliver`]: connect to the address the caller chose, speak ESMTP
//!   (RFC 5321) through one mail transaction, and say what became of each
//!   recipient ([`RecipientOutcome`]) or why the whole attempt failed
//!   ([`SessionError`]), each sorted into temporary or permanent by the
//!   reply classes of RFC 5321 section 4.2.1. It uses EHLO (falling back
//!   to HELO), STARTTLS (RFC 3207), AUTH PLAIN or LOGIN (RFC 4954, RFC
//!   4616), SIZE (RFC 1870), 8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531) and
//!   DSN's `ENVID` (RFC 3461).
//! * Reading replies within fixed bounds (`reply`): 512 bytes a line,
//!   100 lines a reply, codes as the RFC 5321 grammar has them, and a
//!   timeout on every reply, so a hostile or broken server can cost us
//!   neither memory nor an unbounded wait.
//! * The message data on the wire (`data`): CRLF line ends, dot-stuffing,
//!   the terminating `.` line, written in bounded pieces.
//! * TLS per [`TlsPolicy`]: opportunistic with any certificate, or
//!   verified against [`ClientSettings::roots`] ([`root_store`] builds
//!   them).
//!
//! # What it must not do
//!
//! * Decide where mail goes: no DNS, no MX order, no retry, no second
//!   host. The queue runner chooses the address and acts on the outcomes.
//!   Whatever the server says is read for its class only: a 251 or 551
//!   naming another mailbox or host is never followed.
//! * Send credentials except over TLS whose certificate was verified:
//!   over plaintext, or over opportunistic TLS that anyone in the path
//!   could have terminated, the attempt fails before AUTH is sent.
//! * Let caller data reshape the command stream: the EHLO name and every
//!   address are checked for line ends, controls and angle brackets before
//!   anything is sent.
//! * Read bytes that arrived in plaintext as if they came over TLS (the
//!   server half of CVE-2011-0411).
//! * Log passwords or message content.
//!
//! # Choices worth knowing
//!
//! * Commands go one at a time even when the server offers PIPELINING:
//!   simpler to reason about, and never a deadlock of both sides writing.
//! * In the verified modes every TLS problem (STARTTLS not offered or
//!   refused, a certificate that does not verify) is temporary, as a
//!   misconfiguration is more likely than a message that can never go,
//!   and bouncing over it loses mail. In opportunistic mode a refused
//!   STARTTLS means plaintext; a failed handshake is temporary (the
//!   connection is gone by then).
//! * A message with 8-bit bytes goes as is to a server that does not offer
//!   8BITMIME, as most MTAs do in practice; one that needs SMTPUTF8 (the
//!   caller says so, or an address is not ASCII) is refused permanently.
//! * Any transport failure (I/O error, timeout, malformed reply) fails the
//!   whole attempt as temporary, even after some recipients were refused:
//!   those are refused again next time, which costs little. A failure
//!   reported by a reply to DATA or to the end of data becomes the outcome
//!   of each accepted recipient, and refused recipients keep their own.
//! * A connection lost after the final `.` is temporary although the
//!   server may have taken the message: a possible duplicate is better
//!   than a possible loss (RFC 1047).
//!
//! Not yet here: PIPELINING, CHUNKING, DSN `NOTIFY`/`ORCPT`/`RET`,
//! REQUIRETLS, several transactions on one connection. MTA-STS and DANE
//! belong to the caller, which picks the [`TlsPolicy`].

mod command;
mod data;
mod ehlo;
mod reply;
mod tls;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use self::command::MailParameters;
use self::data::DataEncoder;
use self::ehlo::Extensions;
use self::reply::{Reply, ReplyParser};
pub use self::tls::{RootStoreError, root_store};

/// How TLS is used with one next hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsPolicy {
    /// STARTTLS when the server offers it, any certificate accepted (RFC
    /// 3207 used opportunistically, RFC 7435: what MX delivery does without
    /// MTA-STS or DANE); plaintext when it is not offered or is refused. A
    /// failed handshake is a temporary failure of this host.
    Opportunistic,
    /// STARTTLS required, and the certificate verified against
    /// [`ClientSettings::roots`] for the server name (smarthosts, MTA-STS
    /// in enforce mode).
    RequireVerified,
    /// TLS from the first byte (RFC 8314, port 465), verified like
    /// [`RequireVerified`](Self::RequireVerified).
    ImplicitVerified,
    /// Never TLS: tests, and relays on loopback only.
    Disabled,
}

/// A login for AUTH PLAIN or LOGIN. The password stays out of `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The authentication identity.
    pub username: String,
    /// The password.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// How the client behaves towards one next hop.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Our host name, sent with EHLO: a domain or an address literal.
    pub helo_name: String,
    /// Limit on establishing the TCP connection.
    pub connect_timeout: Duration,
    /// Limit on each reply (including the greeting), on each write, and
    /// on the TLS handshake. RFC 5321 section 4.5.3.2 suggests minutes.
    pub command_timeout: Duration,
    /// Limit on the reply after the end of data, when the server may be
    /// filtering the message (RFC 5321 section 4.5.3.2.6: 10 minutes).
    pub data_timeout: Duration,
    /// Whether and how TLS is used.
    pub tls: TlsPolicy,
    /// Trust anchors for the verified modes (see [`root_store`]).
    pub roots: Arc<RootCertStore>,
    /// Log in with AUTH PLAIN (or LOGIN when only that is offered), only
    /// over verified TLS.
    pub auth: Option<Credentials>,
}

impl ClientSettings {
    /// Settings with the timeouts RFC 5321 section 4.5.3.2 suggests (five
    /// minutes a reply, ten for the end of data; 30 seconds to connect),
    /// opportunistic TLS, the `webpki-roots` trust anchors and no AUTH.
    pub fn new(helo_name: impl Into<String>) -> Self {
        Self {
            helo_name: helo_name.into(),
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(5 * 60),
            data_timeout: Duration::from_secs(10 * 60),
            tls: TlsPolicy::Opportunistic,
            roots: Arc::new(tls::webpki_roots()),
            auth: None,
        }
    }
}

/// One message and its envelope.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// The reverse path without angle brackets; empty for a bounce.
    pub mail_from: &'a str,
    /// The forward paths without angle brackets.
    pub recipients: &'a [String],
    /// The message, header and body, with CRLF line ends.
    pub message: &'a [u8],
    /// The DSN envelope identifier (RFC 3461 section 4.4), sent when the
    /// server offers DSN.
    pub envelope_id: Option<&'a str>,
    /// The message needs SMTPUTF8 (RFC 6531): UTF-8 in its header. It is
    /// also needed, whatever this says, when an address is not ASCII.
    pub smtputf8: bool,
}

/// What became of one recipient. The reply text is the server's, made
/// printable and cut to 512 characters; it is meant for DSNs and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientOutcome {
    /// The server took responsibility for the message (2xx after the end
    /// of data).
    Delivered {
        /// The reply to the end of data.
        reply: String,
    },
    /// Try again later (4xx to RCPT, DATA or the end of data).
    Temporary {
        /// The reply, or our reason when the recipient was not attempted.
        reply: String,
    },
    /// Give up and bounce (5xx to RCPT, DATA or the end of data, or an
    /// address that cannot be sent at all).
    Permanent {
        /// The reply, or our reason when the address was refused before
        /// sending.
        reply: String,
    },
}

impl RecipientOutcome {
    /// The reply text, whatever the outcome.
    pub fn reply(&self) -> &str {
        match self {
            Self::Delivered { reply } | Self::Temporary { reply } | Self::Permanent { reply } => {
                reply
            }
        }
    }
}

/// A failure of the whole attempt: no recipient was delivered by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionError {
    /// Worth trying again later or on another host: connection refused or
    /// lost, a timeout, a malformed reply, a 4xx reply, a TLS failure.
    Temporary(String),
    /// Trying again will not help with this host: a 5xx reply to the
    /// greeting, HELO, AUTH or MAIL; a message larger than the server's
    /// SIZE or needing SMTPUTF8 it lacks; AUTH configured where it cannot
    /// be done safely.
    Permanent(String),
}

impl SessionError {
    /// Whether this is [`SessionError::Permanent`].
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Permanent(_))
    }

    /// The description: the stage, then the server's reply or our reason.
    pub fn message(&self) -> &str {
        match self {
            Self::Temporary(message) | Self::Permanent(message) => message,
        }
    }
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Temporary(message) => write!(f, "temporary failure: {message}"),
            Self::Permanent(message) => write!(f, "permanent failure: {message}"),
        }
    }
}

impl std::error::Error for SessionError {}

/// How long QUIT and the TLS close may take: nothing depends on them, so
/// they are not worth the full command timeout.
const QUIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Message data is written in pieces of about this size, so a large
/// message is never copied whole and each write has its own timeout (RFC
/// 5321 section 4.5.3.2.5 times each data block).
const DATA_PIECE: usize = 64 * 1024;

/// Delivers one message to the SMTP server at `addr`, known as
/// `server_name` (the name checked against its certificate in the
/// verified TLS modes, and sent as SNI).
///
/// Returns one outcome per recipient, in the order of
/// `envelope.recipients`, or the failure of the whole attempt. An empty
/// recipient list returns at once without connecting.
pub async fn deliver(
    addr: SocketAddr,
    server_name: &str,
    settings: &ClientSettings,
    envelope: &Envelope<'_>,
) -> Result<Vec<RecipientOutcome>, SessionError> {
    // Problems that need no connection to see: they are the same on
    // every host, so they are permanent.
    command::check_helo_name(&settings.helo_name).map_err(SessionError::Permanent)?;
    command::check_address(envelope.mail_from, true)
        .map_err(|e| SessionError::Permanent(format!("sender <{}>: {e}", envelope.mail_from)))?;
    let mut outcomes: Vec<RecipientOutcome> = envelope
        .recipients
        .iter()
        .map(|to| match command::check_address(to, false) {
            Ok(()) => RecipientOutcome::Temporary {
                reply: "not attempted".into(),
            },
            Err(e) => RecipientOutcome::Permanent {
                reply: format!("recipient refused before sending: {e}"),
            },
        })
        .collect();
    let sendable: Vec<usize> = (0..outcomes.len())
        .filter(|&i| !matches!(outcomes[i], RecipientOutcome::Permanent { .. }))
        .collect();
    if sendable.is_empty() {
        return Ok(outcomes);
    }
    let tls_name = match settings.tls {
        TlsPolicy::RequireVerified | TlsPolicy::ImplicitVerified => {
            ServerName::try_from(server_name.to_owned()).map_err(|_| {
                SessionError::Permanent(format!("{server_name:?} is not a host name"))
            })?
        }
        // Only SNI: an IP address (which sends none) will do.
        TlsPolicy::Opportunistic | TlsPolicy::Disabled => {
            ServerName::try_from(server_name.to_owned())
                .unwrap_or_else(|_| ServerName::IpAddress(addr.ip().into()))
        }
    };

    let mut connection = Connection::open(addr, settings, &tls_name).await?;
    let transaction = Transaction {
        settings,
        envelope,
        tls_name,
        sendable,
    };
    let result = transaction.run(&mut connection, &mut outcomes).await;
    if !connection.broken {
        connection.quit().await;
    }
    match &result {
        Ok(()) => {
            tracing::debug!(%addr, server_name, tls = ?connection.tls, "delivery attempt done")
        }
        Err(e) => {
            tracing::debug!(%addr, server_name, tls = ?connection.tls, error = %e, "delivery attempt failed")
        }
    }
    result.map(|()| outcomes)
}

/// What the session needs besides the connection.
struct Transaction<'s, 'e> {
    settings: &'s ClientSettings,
    envelope: &'s Envelope<'e>,
    tls_name: ServerName<'static>,
    /// Indexes of the recipients whose address can be sent.
    sendable: Vec<usize>,
}

impl Transaction<'_, '_> {
    async fn run(
        self,
        connection: &mut Connection,
        outcomes: &mut [RecipientOutcome],
    ) -> Result<(), SessionError> {
        let settings = self.settings;
        let envelope = self.envelope;

        // RFC 5321 section 3.1: 220 is the greeting; 554 (or any 5xx)
        // means no service here, 4xx (usually 421) not now.
        let greeting = connection
            .read_reply(settings.command_timeout, "greeting")
            .await?;
        if greeting.code != 220 {
            return Err(connection.refused("greeting", &greeting));
        }

        let mut extensions = connection.hello(&settings.helo_name).await?;
        match settings.tls {
            TlsPolicy::Opportunistic if extensions.starttls => {
                let reply = connection.command("STARTTLS\r\n", "STARTTLS").await?;
                if reply.code == 220 {
                    let config = tls::opportunistic_config().map_err(tls_config_error)?;
                    connection
                        .start_tls(config, self.tls_name.clone(), TlsState::Unverified)
                        .await?;
                    // RFC 3207 section 4.2: forget what was said before.
                    extensions = connection.hello(&settings.helo_name).await?;
                } else if reply.code == 421 {
                    return Err(connection.refused("STARTTLS", &reply));
                } else {
                    // Opportunistic means plaintext is acceptable, and the
                    // session is still valid after a refused STARTTLS.
                    tracing::warn!(reply = %reply.text(), "STARTTLS refused; continuing without TLS");
                }
            }
            TlsPolicy::RequireVerified => {
                if !extensions.starttls {
                    return Err(SessionError::Temporary(
                        "STARTTLS required but not offered".into(),
                    ));
                }
                let reply = connection.command("STARTTLS\r\n", "STARTTLS").await?;
                if reply.code != 220 {
                    return Err(SessionError::Temporary(format!(
                        "STARTTLS required but refused: {}",
                        reply.text()
                    )));
                }
                let config = tls::verified_config(&settings.roots).map_err(tls_config_error)?;
                connection
                    .start_tls(config, self.tls_name.clone(), TlsState::Verified)
                    .await?;
                extensions = connection.hello(&settings.helo_name).await?;
            }
            TlsPolicy::Opportunistic | TlsPolicy::ImplicitVerified | TlsPolicy::Disabled => {}
        }

        if let Some(credentials) = &settings.auth {
            connection.authenticate(credentials, &extensions).await?;
        }

        // Refusals that depend on what the server offers, made before MAIL
        // so no data is sent that cannot go.
        let smtputf8 = envelope.smtputf8
            || !envelope.mail_from.is_ascii()
            || self
                .sendable
                .iter()
                .any(|&i| !envelope.recipients[i].is_ascii());
        if smtputf8 && !extensions.smtputf8 {
            // RFC 6531 section 3.2 allows no other way to send it.
            return Err(SessionError::Permanent(
                "the message needs SMTPUTF8, which the server does not offer".into(),
            ));
        }
        let size = data::message_size(envelope.message);
        if let Some(limit) = extensions.size
            && limit > 0
            && size > limit
        {
            // RFC 1870 section 6.
            return Err(SessionError::Permanent(format!(
                "message of {size} bytes exceeds the server's limit of {limit} bytes"
            )));
        }

        let parameters = MailParameters {
            size,
            eight_bit: data::is_8bit(envelope.message),
            smtputf8,
            envelope_id: envelope.envelope_id,
        };
        let line = command::mail_from(envelope.mail_from, &parameters, &extensions);
        let reply = connection.command(&line, "MAIL FROM").await?;
        if reply.class() != 2 {
            return Err(connection.refused("MAIL FROM", &reply));
        }

        let mut accepted = Vec::with_capacity(self.sendable.len());
        for &i in &self.sendable {
            let to = &envelope.recipients[i];
            let reply = connection.command(&command::rcpt_to(to), "RCPT TO").await?;
            // 250 and 251 alike: the server takes the recipient, and where
            // it forwards is its business. 551 is a refusal like any 5xx.
            outcomes[i] = match reply.class() {
                2 => {
                    accepted.push(i);
                    continue;
                }
                4 => RecipientOutcome::Temporary {
                    reply: reply.text(),
                },
                5 => RecipientOutcome::Permanent {
                    reply: reply.text(),
                },
                _ => return Err(connection.unexpected("RCPT TO", &reply)),
            };
        }
        // RFC 5321 section 3.3: no DATA without a recipient.
        if accepted.is_empty() {
            return Ok(());
        }

        let reply = connection.command("DATA\r\n", "DATA").await?;
        match reply.class() {
            3 if reply.code == 354 => {}
            4 | 5 => {
                settle(outcomes, &accepted, &reply);
                return Ok(());
            }
            _ => return Err(connection.unexpected("DATA", &reply)),
        }
        connection.send_data(envelope.message).await?;
        let reply = connection
            .read_reply(settings.data_timeout, "end of data")
            .await?;
        match reply.class() {
            2 | 4 | 5 => settle(outcomes, &accepted, &reply),
            _ => return Err(connection.unexpected("end of data", &reply)),
        }
        Ok(())
    }
}

/// Gives every accepted recipient the outcome of `reply`, a reply of class
/// 2, 4 or 5.
fn settle(outcomes: &mut [RecipientOutcome], accepted: &[usize], reply: &Reply) {
    let text = reply.text();
    for &i in accepted {
        outcomes[i] = match reply.class() {
            2 => RecipientOutcome::Delivered {
                reply: text.clone(),
            },
            4 => RecipientOutcome::Temporary {
                reply: text.clone(),
            },
            _ => RecipientOutcome::Permanent {
                reply: text.clone(),
            },
        };
    }
}

fn tls_config_error(e: rustls::Error) -> SessionError {
    // Cannot happen with the ring provider's defaults; temporary, so a
    // bug of ours never bounces mail.
    SessionError::Temporary(format!("TLS configuration: {e}"))
}

/// What TLS the connection has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsState {
    None,
    /// Encrypted, the certificate not checked.
    Unverified,
    /// Encrypted to a certificate that verified for the server name.
    Verified,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Only while STARTTLS moves the socket into TLS, and after a failed
    /// handshake.
    Closed,
}

impl Stream {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.read(buf).await,
            Self::Tls(s) => s.read(buf).await,
            Self::Closed => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Self::Plain(s) => s.write_all(bytes).await,
            Self::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Self::Closed => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(s) => s.shutdown().await,
            Self::Tls(s) => s.shutdown().await,
            Self::Closed => Ok(()),
        }
    }
}

/// One connection to the server: the socket, the reply parser and the
/// per-command timeout.
struct Connection {
    stream: Stream,
    replies: ReplyParser,
    command_timeout: Duration,
    tls: TlsState,
    /// Set by any transport failure: the connection can carry nothing
    /// more, not even QUIT.
    broken: bool,
}

impl Connection {
    /// Connects, and for implicit TLS completes the handshake.
    async fn open(
        addr: SocketAddr,
        settings: &ClientSettings,
        tls_name: &ServerName<'static>,
    ) -> Result<Self, SessionError> {
        let tcp = match timeout(settings.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => return Err(SessionError::Temporary(format!("connect to {addr}: {e}"))),
            Err(_) => {
                return Err(SessionError::Temporary(format!(
                    "connect to {addr}: no answer within {:?}",
                    settings.connect_timeout
                )));
            }
        };
        // Commands and replies are small and answered one by one.
        let _ = tcp.set_nodelay(true);
        let mut connection = Self {
            stream: Stream::Plain(tcp),
            replies: ReplyParser::new(),
            command_timeout: settings.command_timeout,
            tls: TlsState::None,
            broken: false,
        };
        if settings.tls == TlsPolicy::ImplicitVerified {
            let config = tls::verified_config(&settings.roots).map_err(tls_config_error)?;
            connection
                .start_tls(config, tls_name.clone(), TlsState::Verified)
                .await?;
        }
        Ok(connection)
    }

    /// A transport failure: temporary, and the connection is done.
    fn fail(&mut self, message: String) -> SessionError {
        self.broken = true;
        SessionError::Temporary(message)
    }

    /// A reply of a class the command cannot have, such as 3xx to RCPT.
    /// The dialogue is out of step, so the connection is done.
    fn unexpected(&mut self, stage: &str, reply: &Reply) -> SessionError {
        self.fail(format!("{stage}: unexpected reply {}", reply.text()))
    }

    /// The session error for a refusal by `reply`: 4xx temporary, 5xx
    /// permanent, anything else unexpected.
    fn refused(&mut self, stage: &str, reply: &Reply) -> SessionError {
        match reply.class() {
            4 => SessionError::Temporary(format!("{stage}: {}", reply.text())),
            5 => SessionError::Permanent(format!("{stage}: {}", reply.text())),
            _ => self.unexpected(stage, reply),
        }
    }

    async fn read_reply(&mut self, limit: Duration, stage: &str) -> Result<Reply, SessionError> {
        // One limit for the whole reply, not for each read: a server
        // trickling a byte at a time gets no longer than a silent one.
        match timeout(limit, self.next_reply()).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(self.fail(format!("{stage}: {e}"))),
            Err(_) => Err(self.fail(format!("{stage}: no reply within {limit:?}"))),
        }
    }

    async fn next_reply(&mut self) -> Result<Reply, String> {
        let mut chunk = [0u8; 1024];
        loop {
            if let Some(reply) = self.replies.next_reply().map_err(|e| e.to_string())? {
                return Ok(reply);
            }
            let room = self.replies.room().min(chunk.len());
            let n = self
                .stream
                .read(&mut chunk[..room])
                .await
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed by the server".into());
            }
            self.replies.push(&chunk[..n]).map_err(|e| e.to_string())?;
        }
    }

    /// Writes bytes within the command timeout. Never logs them: they may
    /// be credentials or message content.
    async fn send(&mut self, bytes: &[u8], stage: &str) -> Result<(), SessionError> {
        match timeout(self.command_timeout, self.stream.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.fail(format!("{stage}: {e}"))),
            Err(_) => Err(self.fail(format!(
                "{stage}: could not send within {:?}",
                self.command_timeout
            ))),
        }
    }

    async fn command(&mut self, line: &str, stage: &str) -> Result<Reply, SessionError> {
        self.send(line.as_bytes(), stage).await?;
        self.read_reply(self.command_timeout, stage).await
    }

    /// EHLO, or HELO when the server does not know EHLO (RFC 5321 section
    /// 3.2: a 5xx to EHLO from an old server).
    async fn hello(&mut self, helo_name: &str) -> Result<Extensions, SessionError> {
        let reply = self
            .command(&format!("EHLO {helo_name}\r\n"), "EHLO")
            .await?;
        match reply.class() {
            2 => return Ok(Extensions::from_ehlo(&reply)),
            5 => {}
            _ => return Err(self.refused("EHLO", &reply)),
        }
        let reply = self
            .command(&format!("HELO {helo_name}\r\n"), "HELO")
            .await?;
        match reply.class() {
            2 => Ok(Extensions::default()),
            _ => Err(self.refused("HELO", &reply)),
        }
    }

    /// Moves the connection into TLS: after the 220 to STARTTLS, or right
    /// after connecting for implicit TLS.
    async fn start_tls(
        &mut self,
        config: rustls::ClientConfig,
        name: ServerName<'static>,
        state: TlsState,
    ) -> Result<(), SessionError> {
        if self.replies.has_pending() {
            return Err(self.fail("STARTTLS: the server sent more after its 220 reply".into()));
        }
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Closed) else {
            return Err(self.fail("STARTTLS: the connection is not plaintext".into()));
        };
        let connector = TlsConnector::from(Arc::new(config));
        match timeout(self.command_timeout, connector.connect(name, tcp)).await {
            Ok(Ok(tls)) => {
                self.stream = Stream::Tls(Box::new(tls));
                self.tls = state;
                Ok(())
            }
            Ok(Err(e)) => Err(self.fail(format!("TLS handshake: {e}"))),
            Err(_) => Err(self.fail(format!(
                "TLS handshake: not done within {:?}",
                self.command_timeout
            ))),
        }
    }

    /// AUTH PLAIN, or LOGIN when only that is offered (RFC 4954).
    async fn authenticate(
        &mut self,
        credentials: &Credentials,
        extensions: &Extensions,
    ) -> Result<(), SessionError> {
        if self.tls != TlsState::Verified {
            return Err(SessionError::Permanent(
                "AUTH is configured but the connection has no verified TLS; credentials not sent"
                    .into(),
            ));
        }
        let reply = if extensions.auth_plain {
            let line = command::auth_plain(&credentials.username, &credentials.password)
                .map_err(SessionError::Permanent)?;
            self.command(&line, "AUTH").await?
        } else if extensions.auth_login {
            // Each step: a 334 challenge, then one base64 line. The
            // challenges ("Username:", "Password:") are not read: the
            // order is fixed.
            let mut reply = self.command("AUTH LOGIN\r\n", "AUTH").await?;
            for value in [&credentials.username, &credentials.password] {
                if reply.code != 334 {
                    break;
                }
                reply = self.command(&command::base64_line(value), "AUTH").await?;
            }
            reply
        } else {
            return Err(SessionError::Permanent(
                "AUTH is configured but the server offers neither PLAIN nor LOGIN".into(),
            ));
        };
        match reply.class() {
            2 => Ok(()),
            // A challenge after the last step: the dialogue is out of
            // step, and the connection is dropped rather than cancelled.
            3 => Err(self.unexpected("AUTH", &reply)),
            _ => Err(self.refused("AUTH", &reply)),
        }
    }

    /// Sends the message data and its terminator in bounded pieces.
    async fn send_data(&mut self, message: &[u8]) -> Result<(), SessionError> {
        let mut encoder = DataEncoder::new(message);
        let mut piece = Vec::with_capacity(DATA_PIECE + 8);
        loop {
            piece.clear();
            let done = encoder.fill(&mut piece, DATA_PIECE);
            self.send(&piece, "message data").await?;
            if done {
                return Ok(());
            }
        }
    }

    /// QUIT (RFC 5321 section 4.1.1.10) and the TLS close; errors do not
    /// matter any more.
    async fn quit(&mut self) {
        let limit = self.command_timeout.min(QUIT_TIMEOUT);
        let _ = timeout(limit, async {
            if self.stream.write_all(b"QUIT\r\n").await.is_ok() {
                let _ = self.next_reply().await;
            }
        })
        .await;
        let _ = timeout(limit, self.stream.shutdown()).await;
    }
}
