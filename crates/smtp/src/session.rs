//! The SMTP session: a deterministic state machine with no I/O.
//!
//! Bytes from the client go in with [`Session::feed`]; the driver then calls
//! [`Session::poll`] until it returns `None` (the session needs more input)
//! and carries out each [`Action`]: write bytes, start TLS, close, or answer
//! a question (authenticate, check a recipient, deliver a message) through
//! [`Session::auth_result`], [`Session::rcpt_result`] or
//! [`Session::delivery_result`]. While a question is open the session
//! processes nothing else, so replies stay in command order.
//!
//! The session has no clock: `poll` takes the current time, which is used
//! only for the `Received` and `Date` fields.
//!
//! Replies to pipelined commands (RFC 2920) are collected and handed out in
//! one [`Action::Write`] when the session runs out of input, and before any
//! action that may take long (TLS, authentication, delivery, closing).

use std::fmt::Display;
use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bulwark_core::{EmailAddress, PrincipalId};
use smtp_proto::{
    AUTH_LOGIN, AUTH_PLAIN, Error as ProtoError, MAIL_BODY_7BIT, MAIL_BODY_8BITMIME, MAIL_RET_FULL,
    MAIL_RET_HDRS, MAIL_SMTPUTF8, MailFrom, RCPT_NOTIFY_DELAY, RCPT_NOTIFY_FAILURE,
    RCPT_NOTIFY_NEVER, RCPT_NOTIFY_SUCCESS, RcptTo, Request, Response,
};

use crate::data::{DataDecoder, MessageScanner, Problem, ScannedMessage};
use crate::limits::{MAX_AUTH_LINE, SmtpLimits};
use crate::sender::{Delegation, Identity, check_headers};
use crate::trace;

/// Which service a listener offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Mail from the Internet for local recipients (listener `smtp`, port
    /// 25): no AUTH, no relaying.
    Inbound,
    /// Mail from our own users (listeners `submission` 587 and
    /// `submissions` 465, RFC 6409 and RFC 8314): AUTH required, over TLS
    /// only.
    Submission,
}

/// What every session of a listener shares.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Inbound or submission.
    pub mode: Mode,
    /// The name the server gives itself in the greeting, EHLO reply and
    /// `Received` fields.
    pub hostname: String,
    /// The limits.
    pub limits: SmtpLimits,
    /// On submission, whether recipients outside our domains are accepted
    /// (for the outbound queue). Inbound never relays, whatever this says.
    pub relay: bool,
    /// Whether delivery status notifications can be sent (an outbound
    /// queue carries them): the DSN extension (RFC 3461) is offered then.
    pub notices: bool,
}

/// What the session knows of its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientInfo {
    /// The client's address.
    pub ip: IpAddr,
    /// Whether the connection is already encrypted (implicit TLS).
    pub tls: bool,
    /// Whether STARTTLS can be offered (plain connection, certificate
    /// configured).
    pub tls_available: bool,
}

/// A login and password from AUTH PLAIN or LOGIN. The password is kept out
/// of `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The authentication identity as the client typed it.
    pub login: String,
    password: String,
}

impl Credentials {
    /// The password (or app password).
    pub fn password(&self) -> &str {
        &self.password
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("login", &self.login)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// One accepted envelope recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The address as given in RCPT TO (validated, lower-case).
    pub address: EmailAddress,
    /// The accounts it resolved to (groups expanded); empty for a remote
    /// recipient, which goes to the outbound queue.
    pub accounts: Vec<PrincipalId>,
    /// The DSN `NOTIFY` parameter (RFC 3461 section 4.1), as a
    /// comma-separated list, when the client gave one.
    pub notify: Option<String>,
    /// The DSN `ORCPT` parameter (RFC 3461 section 4.2).
    pub original_recipient: Option<String>,
}

impl Recipient {
    /// Whether it is outside our domains.
    pub fn is_remote(&self) -> bool {
        self.accounts.is_empty()
    }
}

/// A complete message ready for local delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// Identifier used in the `Received` field, replies and logs.
    pub id: String,
    /// The envelope sender (`MAIL FROM`); empty for the null reverse-path.
    pub reverse_path: String,
    /// The accepted recipients, in RCPT order.
    pub recipients: Vec<Recipient>,
    /// The message exactly as it must be stored: `Return-Path`,
    /// `Received`, on submission any added `Date`/`Message-ID`, then the
    /// client's data.
    pub message: Vec<u8>,
    /// When the data was complete, Unix milliseconds.
    pub received_at: i64,
    /// The authenticated user, on submission.
    pub submitter: Option<Identity>,
    /// The name the client gave in EHLO/HELO.
    pub helo: String,
    /// Whether the client asked for SMTPUTF8.
    pub smtputf8: bool,
    /// The DSN envelope id (`ENVID`).
    pub envelope_id: Option<String>,
    /// Whether a failure notice should return the whole message (`RET=FULL`).
    pub return_full: bool,
    /// The other principals' addresses this message uses (envelope,
    /// `From:`, `Sender:`), each to be audited as `mail.send-as` or
    /// `mail.send-on-behalf` before it is delivered.
    pub delegations: Vec<Delegation>,
}

impl Transaction {
    /// Every account that receives the message, each once.
    pub fn accounts(&self) -> Vec<PrincipalId> {
        let mut all: Vec<PrincipalId> = self
            .recipients
            .iter()
            .flat_map(|r| r.accounts.iter().copied())
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }
}

/// What the driver must do next.
#[derive(Debug)]
pub enum Action {
    /// Send these bytes to the client (and flush them).
    Write(Vec<u8>),
    /// Run the TLS handshake, then call [`Session::tls_started`]. If it
    /// fails, drop the connection. The session has already discarded any
    /// plaintext the client sent after STARTTLS (CVE-2011-0411).
    StartTls,
    /// Check these credentials; answer with [`Session::auth_result`].
    Authenticate(Credentials),
    /// Resolve this local recipient; answer with [`Session::rcpt_result`].
    CheckRecipient(EmailAddress),
    /// Audit the delegations, store the message durably, then answer with
    /// [`Session::delivery_result`].
    Deliver(Box<Transaction>),
    /// Close the connection; the session is over.
    Close,
}

/// The answer to [`Action::Authenticate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The credentials are good; here is who it is and what it may send as.
    Success(Identity),
    /// Wrong credentials (or no such account: never told apart).
    Failed,
    /// Too many failures from this client or for this account.
    Blocked,
    /// The directory could not be read.
    Unavailable,
}

/// The answer to [`Action::CheckRecipient`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptOutcome {
    /// A local address; these accounts receive the message.
    Local(Vec<PrincipalId>),
    /// Our domain, but nobody has this address.
    UnknownLocal,
    /// A local account whose mailbox is already full.
    MailboxFull,
    /// Not one of our domains.
    NotLocal,
    /// The directory could not be read.
    TemporaryFailure,
    /// The authenticated user has used up its recipients for now
    /// ([`crate::SendLimit`]).
    SendLimitReached,
    /// A DNS blocklist, this zone, lists the client.
    ClientListed(String),
}

/// The answer to [`Action::Deliver`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Every account stored it durably.
    Stored,
    /// Some accounts stored it durably and others refused it (over quota,
    /// removed meanwhile). The message is accepted: refusing it would make
    /// the client send it again to those who have it. The driver logs the
    /// others and, before the reply, queues a failure notice (RFC 3464)
    /// about them to the sender.
    PartiallyStored,
    /// No account could take it because they are over quota.
    MailboxFull,
    /// No account could take it for another reason (removed meanwhile).
    Unavailable,
    /// Storage failed (or the audit record could not be written); nothing
    /// was stored.
    TemporaryFailure,
    /// Refused by policy (DMARC `p=reject`); the text starts with the
    /// enhanced status code.
    Rejected(String),
}

impl DeliveryOutcome {
    /// Whether the message was accepted (stored for at least one account),
    /// so the client got a 250.
    pub fn is_stored(&self) -> bool {
        matches!(
            self,
            DeliveryOutcome::Stored | DeliveryOutcome::PartiallyStored
        )
    }
}

/// Why the driver ends a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// The client sent nothing for the server's idle timeout.
    Idle,
    /// The session reached [`SmtpLimits::max_session_duration`].
    Session,
}

#[derive(Debug)]
enum Sasl {
    /// AUTH PLAIN without initial response: waiting for it.
    Plain,
    /// AUTH LOGIN: waiting for the user name.
    LoginUser,
    /// AUTH LOGIN: waiting for the password.
    LoginPassword { login: String },
}

#[derive(Debug)]
enum Phase {
    /// Reading command lines.
    Command,
    /// Skipping the rest of an overlong line; `500 5.5.2` at its end.
    SkipLine,
    /// Reading a SASL response line.
    Sasl(Sasl),
    /// Reading message text after DATA.
    Data {
        decoder: DataDecoder,
        scanner: Box<MessageScanner>,
    },
    /// Reading a BDAT chunk. `refusal` is the reply for a chunk that is
    /// read only to be thrown away.
    Bdat {
        left: usize,
        last: bool,
        refusal: Option<Reply>,
    },
}

#[derive(Debug)]
enum Waiting {
    Tls,
    Auth,
    Rcpt(EmailAddress, Option<String>, Option<String>),
    Delivery { id: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Reply {
    code: u16,
    status: [u8; 3],
    text: String,
}

#[derive(Debug)]
struct Helo {
    name: String,
    esmtp: bool,
}

#[derive(Debug)]
struct Envelope {
    id: String,
    reverse_path: String,
    envelope_delegation: Option<Delegation>,
    smtputf8: bool,
    envelope_id: Option<String>,
    return_full: bool,
    recipients: Vec<Recipient>,
    /// The message so far, once a first BDAT chunk arrived.
    bdat: Option<Box<MessageScanner>>,
}

enum Step {
    Continue,
    NeedInput,
    Act(Action),
}

/// MAIL FROM parameters we implement: BODY (RFC 6152), SMTPUTF8
/// (RFC 6531), SIZE (RFC 1870, a separate field), RET and ENVID (RFC 3461,
/// accepted ahead of DSN generation), AUTH (RFC 4954 section 5, ignored as
/// the RFC allows for an untrusted client).
const MAIL_FLAGS: u64 =
    MAIL_BODY_7BIT | MAIL_BODY_8BITMIME | MAIL_SMTPUTF8 | MAIL_RET_FULL | MAIL_RET_HDRS;
/// RCPT TO parameters we implement: NOTIFY (and ORCPT, a separate field).
const RCPT_FLAGS: u64 =
    RCPT_NOTIFY_SUCCESS | RCPT_NOTIFY_FAILURE | RCPT_NOTIFY_DELAY | RCPT_NOTIFY_NEVER;

/// One SMTP session from greeting to close.
#[derive(Debug)]
pub struct Session {
    config: Arc<SessionConfig>,
    client: ClientInfo,
    id: String,
    input: Vec<u8>,
    output: Vec<u8>,
    phase: Phase,
    waiting: Option<Waiting>,
    ready: Option<Action>,
    helo: Option<Helo>,
    identity: Option<Identity>,
    envelope: Option<Envelope>,
    transactions: u64,
    errors: u32,
    shutting_down: bool,
    closing: bool,
    done: bool,
}

impl Session {
    /// A new session; its greeting is the first thing [`Session::poll`]
    /// hands out. `id` names the session in `Received` fields and message
    /// ids; it must be unique (the driver uses random hex).
    pub fn new(config: Arc<SessionConfig>, client: ClientInfo, id: String) -> Session {
        // RFC 5321 section 4.2: the greeting carries no enhanced code.
        let greeting = format!("220 {} ESMTP Bulwark\r\n", config.hostname);
        Session {
            config,
            client,
            id,
            input: Vec::new(),
            output: greeting.into_bytes(),
            phase: Phase::Command,
            waiting: None,
            ready: None,
            helo: None,
            identity: None,
            envelope: None,
            transactions: 0,
            errors: 0,
            shutting_down: false,
            closing: false,
            done: false,
        }
    }

    /// Bytes received from the client.
    pub fn feed(&mut self, bytes: &[u8]) {
        if !self.done && !self.closing {
            self.input.extend_from_slice(bytes);
        }
    }

    /// Whether the session has ended (after [`Action::Close`]).
    pub fn is_closed(&self) -> bool {
        self.done
    }

    /// Whether the session has ended and only its last reply (such as the
    /// `221` to QUIT) remains to be written.
    pub fn is_closing(&self) -> bool {
        self.closing || self.done
    }

    /// The authenticated user, if any.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// Recipients accepted so far in the open transaction.
    pub fn recipient_count(&self) -> usize {
        self.envelope.as_ref().map_or(0, |e| e.recipients.len())
    }

    /// The next thing to do; `None` when the session needs more input (or
    /// waits for an answer, or is over). `now` is Unix milliseconds.
    pub fn poll(&mut self, now: i64) -> Option<Action> {
        if let Some(action) = self.ready.take() {
            return Some(action);
        }
        if self.done {
            return None;
        }
        loop {
            if self.closing {
                if !self.output.is_empty() {
                    return self.flush();
                }
                self.done = true;
                self.input.clear();
                return Some(Action::Close);
            }
            if self.waiting.is_some() {
                return self.flush();
            }
            match self.step(now) {
                Step::Continue => {}
                Step::NeedInput => return self.flush(),
                Step::Act(action) => {
                    let urgent = !matches!(action, Action::CheckRecipient(_));
                    if urgent && !self.output.is_empty() {
                        self.ready = Some(action);
                        return self.flush();
                    }
                    return Some(action);
                }
            }
        }
    }

    fn flush(&mut self) -> Option<Action> {
        if self.output.is_empty() {
            None
        } else {
            Some(Action::Write(std::mem::take(&mut self.output)))
        }
    }

    /// The server is shutting down: a session between transactions says
    /// `421 4.3.2` and closes now; one inside a transaction finishes it and
    /// gets the `421` at its next command.
    pub fn shutdown(&mut self) {
        if self.shutting_down || self.done || self.closing {
            return;
        }
        self.shutting_down = true;
        if self.envelope.is_none()
            && self.waiting.is_none()
            && matches!(self.phase, Phase::Command | Phase::SkipLine)
        {
            self.shutdown_now();
        }
    }

    fn shutdown_now(&mut self) {
        let text = format!(
            "{} Service shutting down, closing connection",
            self.config.hostname
        );
        self.reply(421, [4, 3, 2], text);
        self.closing = true;
    }

    /// The driver gave up waiting for the client: say `421 4.4.2` and close.
    pub fn timed_out(&mut self, why: Timeout) {
        if self.done || self.closing {
            return;
        }
        let text = match why {
            Timeout::Idle => format!("{} Idle timeout, closing connection", self.config.hostname),
            Timeout::Session => format!(
                "{} Session time limit reached, closing connection",
                self.config.hostname
            ),
        };
        self.reply(421, [4, 4, 2], text);
        self.closing = true;
    }

    /// The TLS handshake after STARTTLS succeeded. RFC 3207 section 4.2:
    /// the server forgets everything the client told it before (EHLO, any
    /// authentication, the transaction) and waits for a new EHLO; no new
    /// greeting is sent.
    pub fn tls_started(&mut self) {
        if !matches!(self.waiting, Some(Waiting::Tls)) {
            return;
        }
        self.waiting = None;
        self.client.tls = true;
        self.client.tls_available = false;
        self.input.clear();
        self.phase = Phase::Command;
        self.helo = None;
        self.identity = None;
        self.envelope = None;
    }

    /// The answer to [`Action::Authenticate`].
    pub fn auth_result(&mut self, outcome: AuthOutcome) {
        if !matches!(self.waiting, Some(Waiting::Auth)) {
            return;
        }
        self.waiting = None;
        match outcome {
            AuthOutcome::Success(identity) => {
                self.identity = Some(identity);
                self.reply(235, [2, 7, 0], "Authentication successful");
            }
            // RFC 4954 section 6: 535 5.7.8 for bad credentials; the text
            // never says whether the account exists.
            AuthOutcome::Failed => self.reply(535, [5, 7, 8], "Authentication credentials invalid"),
            AuthOutcome::Blocked => self.reply(
                454,
                [4, 7, 0],
                "Temporary authentication failure: too many failed attempts, try again later",
            ),
            AuthOutcome::Unavailable => {
                self.reply(454, [4, 7, 0], "Temporary authentication failure")
            }
        }
    }

    /// The answer to [`Action::CheckRecipient`].
    pub fn rcpt_result(&mut self, outcome: RcptOutcome) {
        let Some(Waiting::Rcpt(address, notify, original_recipient)) = self.waiting.take() else {
            return;
        };
        let outcome = match outcome {
            RcptOutcome::NotLocal if self.config.mode == Mode::Submission && self.config.relay => {
                RcptOutcome::Local(Vec::new())
            }
            other => other,
        };
        match outcome {
            RcptOutcome::Local(accounts) => match self.envelope.as_mut() {
                Some(envelope) => {
                    envelope.recipients.push(Recipient {
                        address: address.clone(),
                        accounts,
                        notify,
                        original_recipient,
                    });
                    self.reply(250, [2, 1, 5], format!("<{address}> Recipient OK"));
                }
                None => self.reply(503, [5, 5, 1], "Need MAIL command first"),
            },
            RcptOutcome::UnknownLocal => self.reply(
                550,
                [5, 1, 1],
                format!("<{address}> Recipient address rejected: no such mailbox here"),
            ),
            RcptOutcome::NotLocal => match self.config.mode {
                // RFC 5321 section 3.6.2: no open relay.
                Mode::Inbound => self.reply(
                    550,
                    [5, 7, 1],
                    format!("<{address}> Relaying denied: not a local domain"),
                ),
                Mode::Submission => self.reply(
                    550,
                    [5, 7, 1],
                    format!(
                        "<{address}> Relaying to external domains is turned off on this server; only local recipients are accepted"
                    ),
                ),
            },
            RcptOutcome::TemporaryFailure => self.reply(
                451,
                [4, 3, 0],
                format!("<{address}> Temporary lookup failure, try again later"),
            ),
            RcptOutcome::MailboxFull => self.reply(
                552,
                [5, 2, 2],
                format!("<{address}> Mailbox full: it is at its quota"),
            ),
            RcptOutcome::ClientListed(zone) => self.reply(
                554,
                [5, 7, 1],
                format!(
                    "<{address}> Service unavailable; client [{}] is listed at {zone}",
                    self.client.ip
                ),
            ),
            RcptOutcome::SendLimitReached => self.reply(
                450,
                [4, 7, 1],
                format!(
                    "<{address}> This account has reached its hourly limit of recipients; try again later"
                ),
            ),
        }
    }

    /// The answer to [`Action::Deliver`]; `250` only now that the message
    /// is durable (DESIGN.md "Durability").
    pub fn delivery_result(&mut self, outcome: DeliveryOutcome) {
        let Some(Waiting::Delivery { id }) = self.waiting.take() else {
            return;
        };
        match outcome {
            DeliveryOutcome::Stored | DeliveryOutcome::PartiallyStored => {
                self.reply(250, [2, 0, 0], format!("OK id={id} message stored"))
            }
            DeliveryOutcome::MailboxFull => {
                self.reply(552, [5, 2, 2], "Mailbox full: the recipient is over quota")
            }
            DeliveryOutcome::Unavailable => self.reply(
                450,
                [4, 2, 0],
                "Mailbox temporarily unavailable, try again later",
            ),
            DeliveryOutcome::TemporaryFailure => self.reply(
                451,
                [4, 3, 0],
                "Temporary failure storing the message, try again later",
            ),
            DeliveryOutcome::Rejected(text) => {
                let text = text.strip_prefix("5.7.1 ").unwrap_or(&text).to_string();
                self.reply(550, [5, 7, 1], text)
            }
        }
    }

    /// Writes a reply; RFC 5321 codes with RFC 3463 enhanced codes
    /// (RFC 2034). Every 5xx counts against `max_errors`.
    fn reply(&mut self, code: u16, status: [u8; 3], text: impl Display) {
        let _ = Response::new(code, status[0], status[1], status[2], text).write(&mut self.output);
        if code >= 500 {
            self.errors = self.errors.saturating_add(1);
        }
    }

    fn send(&mut self, reply: Reply) {
        self.reply(reply.code, reply.status, reply.text);
    }

    fn step(&mut self, now: i64) -> Step {
        if self.errors >= self.config.limits.max_errors {
            let text = format!(
                "{} Too many errors, closing connection",
                self.config.hostname
            );
            self.reply(421, [4, 7, 0], text);
            self.closing = true;
            return Step::Continue;
        }
        match std::mem::replace(&mut self.phase, Phase::Command) {
            Phase::Command => self.command_step(),
            Phase::SkipLine => match self.input.iter().position(|&b| b == b'\n') {
                Some(lf) => {
                    self.input.drain(..=lf);
                    self.reply(500, [5, 5, 2], "Line too long");
                    Step::Continue
                }
                None => {
                    self.input.clear();
                    self.phase = Phase::SkipLine;
                    Step::NeedInput
                }
            },
            Phase::Sasl(sasl) => self.sasl_step(sasl),
            Phase::Data {
                mut decoder,
                mut scanner,
            } => {
                let (used, done) = decoder.decode(&self.input, &mut scanner);
                self.input.drain(..used);
                if done {
                    self.finish_message(*scanner, now)
                } else {
                    self.phase = Phase::Data { decoder, scanner };
                    Step::NeedInput
                }
            }
            Phase::Bdat {
                mut left,
                last,
                refusal,
            } => {
                let take = left.min(self.input.len());
                if refusal.is_none()
                    && let Some(scanner) = self.envelope.as_mut().and_then(|e| e.bdat.as_mut())
                {
                    scanner.push(&self.input[..take]);
                }
                self.input.drain(..take);
                left -= take;
                if left > 0 {
                    self.phase = Phase::Bdat {
                        left,
                        last,
                        refusal,
                    };
                    return Step::NeedInput;
                }
                self.end_chunk(last, refusal, now)
            }
        }
    }

    /// Takes one line (LF included) off the input if there is a whole one
    /// within `limit` bytes; switches to skipping when the line is longer.
    fn take_line(&mut self, limit: usize) -> Option<Vec<u8>> {
        let window = &self.input[..self.input.len().min(limit)];
        match window.iter().position(|&b| b == b'\n') {
            Some(lf) => Some(self.input.drain(..=lf).collect()),
            None => {
                if self.input.len() >= limit {
                    // Drop what was seen of the line; the rest of it (up
                    // to its LF) is skipped, and what follows is kept.
                    self.input.drain(..limit);
                    self.phase = Phase::SkipLine;
                }
                None
            }
        }
    }

    fn command_step(&mut self) -> Step {
        let limit = if self.input.len() >= 5 && self.input[..5].eq_ignore_ascii_case(b"AUTH ") {
            MAX_AUTH_LINE
        } else {
            self.config.limits.max_command_line
        };
        match self.take_line(limit) {
            Some(line) => self.command(&line),
            None if matches!(self.phase, Phase::SkipLine) => Step::Continue,
            None => Step::NeedInput,
        }
    }

    fn command(&mut self, line: &[u8]) -> Step {
        // Cross-protocol requests (a browser tricked into posting to port
        // 25) end the session at once, as Postfix does.
        for verb in [&b"GET "[..], b"POST ", b"HEAD ", b"PUT ", b"CONNECT "] {
            if line.starts_with(verb) {
                self.reply(421, [4, 7, 0], "This is an SMTP server; closing connection");
                self.closing = true;
                return Step::Continue;
            }
        }
        let request = Request::parse(&mut line.iter());
        if self.shutting_down && self.envelope.is_none() && !matches!(request, Ok(Request::Quit)) {
            self.shutdown_now();
            return Step::Continue;
        }
        let request = match request {
            Ok(request) => request,
            Err(e) => {
                self.syntax_error(e);
                return Step::Continue;
            }
        };
        match request {
            Request::Ehlo { host } => self.ehlo(&host, true),
            Request::Helo { host } => self.ehlo(&host, false),
            Request::Mail { from } => self.mail(from),
            Request::Rcpt { to } => return self.rcpt(to),
            Request::Data => self.data(),
            Request::Bdat {
                chunk_size,
                is_last,
            } => self.bdat(chunk_size, is_last),
            Request::Auth {
                mechanism,
                initial_response,
            } => return self.auth(mechanism, &initial_response),
            Request::StartTls => return self.starttls(),
            Request::Rset => {
                self.envelope = None;
                self.reply(250, [2, 0, 0], "OK");
            }
            Request::Noop { .. } => self.reply(250, [2, 0, 0], "OK"),
            Request::Quit => {
                let text = format!("{} closing connection", self.config.hostname);
                self.reply(221, [2, 0, 0], text);
                self.closing = true;
            }
            // RFC 5321 section 3.5.3: 252 without revealing whether the
            // mailbox exists (no address harvesting).
            Request::Vrfy { .. } => self.reply(
                252,
                [2, 0, 0],
                "Cannot VRFY user, but will accept message and attempt delivery",
            ),
            Request::Expn { .. } => self.reply(502, [5, 5, 1], "EXPN is not available"),
            Request::Help { .. } => self.reply(
                214,
                [2, 0, 0],
                "Bulwark SMTP: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH",
            ),
            Request::Lhlo { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => self.reply(502, [5, 5, 1], "Command not implemented"),
        }
        Step::Continue
    }

    fn syntax_error(&mut self, error: ProtoError) {
        match error {
            ProtoError::UnknownCommand => self.reply(500, [5, 5, 1], "Unrecognized command"),
            ProtoError::SyntaxError { syntax } => {
                self.reply(501, [5, 5, 4], format!("Syntax: {syntax}"))
            }
            ProtoError::InvalidSenderAddress => {
                self.reply(501, [5, 1, 7], "Bad sender address syntax")
            }
            ProtoError::InvalidRecipientAddress => {
                self.reply(501, [5, 1, 3], "Bad recipient address syntax")
            }
            ProtoError::InvalidParameter { param } => {
                self.reply(501, [5, 5, 4], format!("Invalid {param} parameter"))
            }
            ProtoError::UnsupportedParameter { param } => {
                let param: String = param
                    .chars()
                    .filter(|c| c.is_ascii_graphic())
                    .take(32)
                    .collect();
                self.reply(555, [5, 5, 4], format!("Unsupported parameter {param}"))
            }
            _ => self.reply(500, [5, 5, 2], "Syntax error"),
        }
    }

    /// EHLO/HELO (RFC 5321 section 4.1.1.1); like RSET it ends any
    /// transaction. The extensions offered depend on TLS and mode.
    fn ehlo(&mut self, host: &str, esmtp: bool) {
        self.envelope = None;
        self.helo = Some(Helo {
            name: trace::clean_helo(host),
            esmtp,
        });
        let hostname = &self.config.hostname;
        if !esmtp {
            // RFC 5321 section 4.1.1.1: HELO is answered with the domain.
            self.output
                .extend_from_slice(format!("250 {hostname}\r\n").as_bytes());
            return;
        }
        let mut lines = vec![
            hostname.clone(),
            "PIPELINING".to_string(),
            format!("SIZE {}", self.config.limits.max_message_size),
            "8BITMIME".to_string(),
            "SMTPUTF8".to_string(),
            "ENHANCEDSTATUSCODES".to_string(),
            "CHUNKING".to_string(),
        ];
        if self.config.notices {
            lines.push("DSN".to_string());
        }
        if self.client.tls_available && !self.client.tls {
            lines.push("STARTTLS".to_string());
        }
        // RFC 8314 section 3 / DESIGN.md rule 6: no AUTH without TLS.
        if self.config.mode == Mode::Submission && self.client.tls {
            lines.push("AUTH PLAIN LOGIN".to_string());
        }
        let count = lines.len();
        for (n, line) in lines.into_iter().enumerate() {
            let sep = if n + 1 == count { ' ' } else { '-' };
            self.output
                .extend_from_slice(format!("250{sep}{line}\r\n").as_bytes());
        }
    }

    fn starttls(&mut self) -> Step {
        if self.client.tls {
            self.reply(503, [5, 5, 1], "TLS is already active");
            return Step::Continue;
        }
        if !self.client.tls_available {
            self.reply(454, [4, 7, 0], "TLS not available");
            return Step::Continue;
        }
        // RFC 2034 gives 220 an enhanced code here (as Postfix does).
        self.reply(220, [2, 0, 0], "Ready to start TLS");
        if !self.input.is_empty() {
            // CVE-2011-0411: commands pipelined after STARTTLS were sent in
            // plaintext and must not be executed after the upgrade.
            tracing::info!(
                bytes = self.input.len(),
                "discarding plaintext sent after STARTTLS"
            );
            self.input.clear();
        }
        self.waiting = Some(Waiting::Tls);
        Step::Act(Action::StartTls)
    }

    fn auth(&mut self, mechanism: u64, initial: &str) -> Step {
        if self.config.mode == Mode::Inbound {
            self.reply(
                502,
                [5, 5, 1],
                "AUTH is not available on this port; use the submission port",
            );
            return Step::Continue;
        }
        if self.helo.is_none() {
            self.reply(503, [5, 5, 1], "Send EHLO first");
            return Step::Continue;
        }
        if !self.client.tls {
            // RFC 4954 section 6.
            self.reply(
                538,
                [5, 7, 11],
                "Encryption required for requested authentication mechanism: use STARTTLS first",
            );
            return Step::Continue;
        }
        if self.identity.is_some() {
            self.reply(503, [5, 5, 1], "Already authenticated");
            return Step::Continue;
        }
        if self.envelope.is_some() {
            self.reply(
                503,
                [5, 5, 1],
                "AUTH is not allowed during a mail transaction",
            );
            return Step::Continue;
        }
        match mechanism {
            AUTH_PLAIN if initial.is_empty() => {
                self.output.extend_from_slice(b"334 \r\n");
                self.phase = Phase::Sasl(Sasl::Plain);
                Step::Continue
            }
            AUTH_PLAIN => self.sasl_plain(initial),
            AUTH_LOGIN if initial.is_empty() => {
                // "Username:"
                self.output.extend_from_slice(b"334 VXNlcm5hbWU6\r\n");
                self.phase = Phase::Sasl(Sasl::LoginUser);
                Step::Continue
            }
            AUTH_LOGIN => self.sasl_step_login_user(initial),
            _ => {
                self.reply(504, [5, 5, 4], "Unrecognized authentication type");
                Step::Continue
            }
        }
    }

    fn sasl_step(&mut self, sasl: Sasl) -> Step {
        let Some(line) = self.take_line(MAX_AUTH_LINE) else {
            if matches!(self.phase, Phase::SkipLine) {
                return Step::Continue;
            }
            self.phase = Phase::Sasl(sasl);
            return Step::NeedInput;
        };
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        if text == "*" {
            // RFC 4954 section 4: the client cancels.
            self.reply(501, [5, 0, 0], "Authentication cancelled");
            return Step::Continue;
        }
        match sasl {
            Sasl::Plain => self.sasl_plain(text),
            Sasl::LoginUser => self.sasl_step_login_user(text),
            Sasl::LoginPassword { login } => match decode64(text) {
                Some(password) => self.authenticate(login, password),
                None => self.bad_base64(),
            },
        }
    }

    fn sasl_step_login_user(&mut self, encoded: &str) -> Step {
        match decode64(encoded) {
            Some(login) => {
                // "Password:"
                self.output.extend_from_slice(b"334 UGFzc3dvcmQ6\r\n");
                self.phase = Phase::Sasl(Sasl::LoginPassword { login });
                Step::Continue
            }
            None => self.bad_base64(),
        }
    }

    /// RFC 4616: `[authzid] NUL authcid NUL passwd`.
    fn sasl_plain(&mut self, encoded: &str) -> Step {
        let Some(decoded) = decode64(encoded) else {
            return self.bad_base64();
        };
        let mut parts = decoded.split('\0');
        let (Some(authzid), Some(authcid), Some(password), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            self.reply(501, [5, 5, 2], "Malformed PLAIN response");
            return Step::Continue;
        };
        if !authzid.is_empty() && authzid != authcid {
            // Acting as another user is done with grants, not SASL proxying.
            self.reply(535, [5, 7, 8], "Authentication credentials invalid");
            return Step::Continue;
        }
        self.authenticate(authcid.to_string(), password.to_string())
    }

    fn bad_base64(&mut self) -> Step {
        self.reply(501, [5, 5, 2], "Invalid base64 data");
        Step::Continue
    }

    fn authenticate(&mut self, login: String, password: String) -> Step {
        self.waiting = Some(Waiting::Auth);
        Step::Act(Action::Authenticate(Credentials { login, password }))
    }

    fn mail(&mut self, from: MailFrom<std::borrow::Cow<'_, str>>) {
        if self.helo.is_none() {
            self.reply(503, [5, 5, 1], "Send EHLO or HELO first");
            return;
        }
        if self.config.mode == Mode::Submission && self.identity.is_none() {
            self.reply(530, [5, 7, 0], "Authentication required");
            return;
        }
        if self.envelope.is_some() {
            self.reply(503, [5, 5, 1], "Nested MAIL command");
            return;
        }
        let unsupported = from.flags & !MAIL_FLAGS != 0
            || from.by != 0
            || from.hold_for != 0
            || from.hold_until != 0
            || from.mt_priority != 0
            || from.mtrk.is_some()
            || from.solicit.is_some()
            || from.trans_id.is_some();
        if unsupported {
            self.reply(555, [5, 5, 4], "Unsupported MAIL FROM parameter");
            return;
        }
        // RFC 1870 section 6.1.
        if from.size > self.config.limits.max_message_size {
            self.reply(
                552,
                [5, 3, 4],
                "Message size exceeds fixed maximum message size",
            );
            return;
        }
        let address = from.address.as_ref();
        let mut envelope_delegation = None;
        match self.config.mode {
            Mode::Inbound => {
                if address.chars().any(char::is_control) {
                    self.reply(501, [5, 1, 7], "Bad sender address syntax");
                    return;
                }
            }
            Mode::Submission if address.is_empty() => {}
            Mode::Submission => {
                let Ok(parsed) = address.parse::<EmailAddress>() else {
                    self.reply(553, [5, 1, 7], "Sender address not valid here");
                    return;
                };
                let allowed = self
                    .identity
                    .as_ref()
                    .and_then(|id| id.envelope_sender(&parsed));
                match allowed {
                    Some(delegation) => envelope_delegation = delegation,
                    None => {
                        self.reply(
                            550,
                            [5, 7, 1],
                            format!(
                                "<{parsed}> Sender address rejected: not one of your addresses, and you hold no send-as or send-on-behalf right for it"
                            ),
                        );
                        return;
                    }
                }
            }
        }
        self.transactions += 1;
        self.envelope = Some(Envelope {
            // An RFC 5322 atom (no dots), as the Received field's `id`
            // clause requires (RFC 5321 section 4.4).
            id: format!("{}-{}", self.id, self.transactions),
            reverse_path: address.to_string(),
            envelope_delegation,
            smtputf8: from.flags & MAIL_SMTPUTF8 != 0,
            envelope_id: from
                .env_id
                .as_ref()
                .map(|e| e.chars().filter(|c| !c.is_control()).take(100).collect()),
            return_full: from.flags & smtp_proto::MAIL_RET_FULL != 0,
            recipients: Vec::new(),
            bdat: None,
        });
        self.reply(250, [2, 1, 0], "Sender OK");
    }

    fn rcpt(&mut self, to: RcptTo<std::borrow::Cow<'_, str>>) -> Step {
        let Some(envelope) = self.envelope.as_ref() else {
            self.reply(503, [5, 5, 1], "Need MAIL command first");
            return Step::Continue;
        };
        if envelope.bdat.is_some() {
            self.reply(503, [5, 5, 1], "RCPT is not allowed during BDAT");
            return Step::Continue;
        }
        if to.flags & !RCPT_FLAGS != 0 || to.rrvs != 0 {
            self.reply(555, [5, 5, 4], "Unsupported RCPT TO parameter");
            return Step::Continue;
        }
        let text = if to.address.is_empty() {
            // RFC 5321 section 4.5.1: <postmaster> without a domain.
            format!("postmaster@{}", self.config.hostname)
        } else {
            to.address.to_string()
        };
        let Ok(address) = text.parse::<EmailAddress>() else {
            self.reply(501, [5, 1, 3], "Bad recipient address syntax");
            return Step::Continue;
        };
        if envelope.recipients.iter().any(|r| r.address == address) {
            self.reply(250, [2, 1, 5], format!("<{address}> Recipient OK"));
            return Step::Continue;
        }
        if envelope.recipients.len() >= self.config.limits.max_recipients {
            self.reply(452, [4, 5, 3], "Too many recipients");
            return Step::Continue;
        }
        let notify = notify_list(to.flags);
        let original_recipient = to
            .orcpt
            .as_ref()
            .map(|o| o.chars().filter(|c| !c.is_control()).take(500).collect());
        self.waiting = Some(Waiting::Rcpt(address.clone(), notify, original_recipient));
        Step::Act(Action::CheckRecipient(address))
    }

    fn data(&mut self) {
        let Some(envelope) = self.envelope.as_ref() else {
            self.reply(503, [5, 5, 1], "Need MAIL command first");
            return;
        };
        if envelope.bdat.is_some() {
            // RFC 3030 section 2: DATA and BDAT do not mix.
            self.reply(503, [5, 5, 1], "DATA is not allowed after BDAT");
            return;
        }
        if envelope.recipients.is_empty() {
            // RFC 2920 section 3.1 / RFC 5321 section 3.3.
            self.reply(554, [5, 5, 1], "No valid recipients");
            return;
        }
        self.output
            .extend_from_slice(b"354 Start mail input; end with <CRLF>.<CRLF>\r\n");
        self.phase = Phase::Data {
            decoder: DataDecoder::new(),
            scanner: Box::new(MessageScanner::new(&self.config.limits)),
        };
    }

    /// BDAT (RFC 3030). The chunk is always read, even when the command is
    /// refused, so its bytes are never taken for commands.
    fn bdat(&mut self, size: usize, last: bool) {
        let refusal = self.bdat_refusal(size);
        if refusal.is_none()
            && let Some(envelope) = self.envelope.as_mut()
            && envelope.bdat.is_none()
        {
            envelope.bdat = Some(Box::new(MessageScanner::new(&self.config.limits)));
        }
        self.phase = Phase::Bdat {
            left: size,
            last,
            refusal,
        };
    }

    fn bdat_refusal(&self, size: usize) -> Option<Reply> {
        let refuse = |code, status, text: &str| {
            Some(Reply {
                code,
                status,
                text: text.to_string(),
            })
        };
        if self.helo.is_none() {
            return refuse(503, [5, 5, 1], "Send EHLO first");
        }
        let Some(envelope) = self.envelope.as_ref() else {
            return refuse(503, [5, 5, 1], "Need MAIL command first");
        };
        if envelope.recipients.is_empty() {
            return refuse(554, [5, 5, 1], "No valid recipients");
        }
        let so_far = envelope.bdat.as_ref().map_or(0, |s| s.size());
        if so_far.saturating_add(size) > self.config.limits.max_message_size {
            return refuse(
                552,
                [5, 3, 4],
                "Message size exceeds fixed maximum message size",
            );
        }
        None
    }

    fn end_chunk(&mut self, last: bool, refusal: Option<Reply>, now: i64) -> Step {
        if let Some(reply) = refusal {
            // RFC 3030 section 4.2: a refused chunk fails the transaction.
            self.envelope = None;
            self.send(reply);
            return Step::Continue;
        }
        if !last {
            let size = self
                .envelope
                .as_ref()
                .and_then(|e| e.bdat.as_ref())
                .map_or(0, |s| s.size());
            self.reply(250, [2, 0, 0], format!("{size} octets received"));
            return Step::Continue;
        }
        let scanner = self.envelope.as_mut().and_then(|e| e.bdat.take());
        match scanner {
            Some(scanner) => self.finish_message(*scanner, now),
            None => {
                self.reply(503, [5, 5, 1], "Need MAIL command first");
                Step::Continue
            }
        }
    }

    /// The data is complete: check it, add our header fields and hand it
    /// to the driver for delivery.
    fn finish_message(&mut self, scanner: MessageScanner, now: i64) -> Step {
        let Some(envelope) = self.envelope.take() else {
            self.reply(503, [5, 5, 1], "Need MAIL command first");
            return Step::Continue;
        };
        let message = match scanner.finish() {
            Ok(message) => message,
            Err(problem) => {
                self.refuse_content(problem);
                return Step::Continue;
            }
        };
        let mut delegations: Vec<Delegation> =
            envelope.envelope_delegation.iter().cloned().collect();
        let mut added = String::new();
        if self.config.mode == Mode::Submission {
            let Some(identity) = self.identity.as_ref() else {
                self.reply(530, [5, 7, 0], "Authentication required");
                return Step::Continue;
            };
            match check_headers(identity, &message.bytes[..message.header_end]) {
                Ok(facts) => {
                    for d in facts.delegations {
                        if !delegations
                            .iter()
                            .any(|e| e.grantor == d.grantor && e.right == d.right)
                        {
                            delegations.push(d);
                        }
                    }
                    // RFC 6409 section 8.2 and 8.3.
                    if !facts.has_date {
                        added.push_str(&format!("Date: {}\r\n", trace::rfc5322_date(now)));
                    }
                    if !facts.has_message_id {
                        added.push_str(&format!(
                            "Message-ID: <{}@{}>\r\n",
                            envelope.id, self.config.hostname
                        ));
                    }
                }
                Err(refusal) => {
                    self.reply(refusal.code, refusal.status, refusal.text);
                    return Step::Continue;
                }
            }
        }
        let ScannedMessage { bytes, .. } = message;
        let single = match envelope.recipients.as_slice() {
            [one] => Some(one.address.as_str()),
            _ => None,
        };
        let helo = self.helo.as_ref();
        let helo_name = helo.map_or(String::new(), |h| h.name.clone());
        let protocol = self.protocol_name(envelope.smtputf8);
        let mut prefix = trace::return_path(&quote_path(&envelope.reverse_path));
        prefix.push_str(&trace::received(&trace::ReceivedFields {
            helo: helo.map_or("unknown", |h| h.name.as_str()),
            ip: self.client.ip,
            hostname: &self.config.hostname,
            protocol: &protocol,
            id: &envelope.id,
            single_recipient: single,
            date_ms: now,
        }));
        prefix.push_str(&added);
        let mut stored = Vec::with_capacity(prefix.len() + bytes.len());
        stored.extend_from_slice(prefix.as_bytes());
        stored.extend_from_slice(&bytes);
        drop(bytes);

        self.waiting = Some(Waiting::Delivery {
            id: envelope.id.clone(),
        });
        Step::Act(Action::Deliver(Box::new(Transaction {
            id: envelope.id,
            reverse_path: envelope.reverse_path,
            recipients: envelope.recipients,
            message: stored,
            received_at: now,
            submitter: self.identity.clone(),
            delegations,
            helo: helo_name,
            smtputf8: envelope.smtputf8,
            envelope_id: envelope.envelope_id,
            return_full: envelope.return_full,
        })))
    }

    fn refuse_content(&mut self, problem: Problem) {
        match problem {
            Problem::TooBig => self.reply(
                552,
                [5, 3, 4],
                "Message size exceeds fixed maximum message size",
            ),
            Problem::HeaderTooLarge => {
                self.reply(552, [5, 3, 4], "Message header block is too large")
            }
            Problem::TooManyHeaders => {
                self.reply(552, [5, 3, 4], "Message has too many header fields")
            }
            Problem::TooManyHops => self.reply(
                554,
                [5, 4, 6],
                "Too many Received fields: the message is looping",
            ),
            Problem::LineTooLong => {
                self.reply(554, [5, 6, 0], "Message has a line that is too long")
            }
            Problem::BareLineEnding => self.reply(
                554,
                [5, 6, 0],
                "Message contains a bare LF or CR; lines must end with CRLF (RFC 5322 section 2.3)",
            ),
        }
    }

    /// The `with` keyword of the Received field (RFC 3848, RFC 6531
    /// section 3.7.3).
    fn protocol_name(&self, smtputf8: bool) -> String {
        let esmtp = self.helo.as_ref().is_some_and(|h| h.esmtp);
        if !esmtp {
            return "SMTP".to_string();
        }
        let mut name = if smtputf8 { "UTF8SMTP" } else { "ESMTP" }.to_string();
        if self.client.tls {
            name.push('S');
        }
        if self.identity.is_some() {
            name.push('A');
        }
        name
    }
}

fn decode64(text: &str) -> Option<String> {
    // RFC 4954 section 4: "=" is an empty initial response.
    if text == "=" {
        return Some(String::new());
    }
    let bytes = BASE64.decode(text.trim()).ok()?;
    String::from_utf8(bytes).ok()
}

/// A reverse-path as written in Return-Path: smtp-proto hands over a quoted
/// local part unquoted, so quote it again when it needs quoting.
fn quote_path(path: &str) -> String {
    let Some((local, domain)) = path.rsplit_once('@') else {
        return path.to_string();
    };
    let plain =
        |b: u8| b.is_ascii_alphanumeric() || b >= 0x80 || b"!#$%&'*+-/=?^_`{|}~.".contains(&b);
    if local.bytes().all(plain) {
        return path.to_string();
    }
    let escaped: String = local
        .chars()
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            _ => vec![c],
        })
        .collect();
    format!("\"{escaped}\"@{domain}")
}

/// The RCPT `NOTIFY` flags as RFC 3461 writes them.
fn notify_list(flags: u64) -> Option<String> {
    if flags & smtp_proto::RCPT_NOTIFY_NEVER != 0 {
        return Some("NEVER".into());
    }
    let named = [
        (smtp_proto::RCPT_NOTIFY_SUCCESS, "SUCCESS"),
        (smtp_proto::RCPT_NOTIFY_FAILURE, "FAILURE"),
        (smtp_proto::RCPT_NOTIFY_DELAY, "DELAY"),
    ];
    let list: Vec<&str> = named
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, name)| *name)
        .collect();
    (!list.is_empty()).then(|| list.join(","))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_requoted() {
        assert_eq!(quote_path("a.b@example.com"), "a.b@example.com");
        assert_eq!(quote_path(""), "");
        assert_eq!(
            quote_path("john doe@example.com"),
            "\"john doe\"@example.com"
        );
        assert_eq!(quote_path("a\"b@example.com"), "\"a\\\"b\"@example.com");
    }

    #[test]
    fn base64_responses() {
        assert_eq!(decode64("="), Some(String::new()));
        assert_eq!(decode64("YWJj"), Some("abc".into()));
        assert_eq!(decode64("!!!"), None);
    }
}
