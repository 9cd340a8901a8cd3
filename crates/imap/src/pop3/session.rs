//! The POP3 session state machine, sans-I/O.
//!
//! States (RFC 1939 section 3): AUTHORIZATION (section 4) until USER/PASS
//! or AUTH succeeds, TRANSACTION (section 5) on the snapshot of the Inbox,
//! UPDATE (section 6) when QUIT commits the deletions, then closed.
//!
//! Bytes go in through [`Session::feed`]. [`Session::poll`] processes
//! buffered lines, appends replies to the output (taken with
//! [`Session::take_output`]) and returns the first [`Event`] that needs
//! the driver: a TLS handshake, a credential check, a message read, the
//! durable expunge or the end. While the driver works the session waits;
//! the driver hands the result back with the matching method
//! ([`Session::tls_started`], [`Session::authenticated`],
//! [`Session::message`], [`Session::committed`]) and polls again. No
//! clock, no sockets, no storage: the tests below replay transcripts.

use base64::Engine as _;

use super::Pop3Limits;
use super::command::{self, Command, ParseError, Secret};
use super::line::{Line, LineReader};
use super::render;

/// The greeting (RFC 1939 section 4). No APOP timestamp: APOP is not
/// offered.
const GREETING: &[u8] = b"+OK Bulwark POP3 ready\r\n";

/// Refusal of credentials on a plaintext connection (RFC 2595 section 4,
/// RFC 3206 section 5).
const NEED_TLS: &[u8] =
    b"-ERR [AUTH] Plaintext authentication disallowed on non-secure connections; use STLS first\r\n";

/// One message of the maildrop snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    /// UID in the Inbox.
    pub(crate) uid: u32,
    /// Size in octets.
    pub(crate) size: u64,
    /// Marked by DELE (RFC 1939 section 5).
    deleted: bool,
    /// Found expunged by another session.
    vanished: bool,
}

/// The Inbox as it was at login: numbers are fixed for the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Maildrop {
    uid_validity: u32,
    messages: Vec<Message>,
}

impl Maildrop {
    /// A snapshot from `(uid, size)` pairs in UID order.
    pub(crate) fn new(uid_validity: u32, messages: impl IntoIterator<Item = (u32, u64)>) -> Self {
        Maildrop {
            uid_validity,
            messages: messages
                .into_iter()
                .map(|(uid, size)| Message {
                    uid,
                    size,
                    deleted: false,
                    vanished: false,
                })
                .collect(),
        }
    }

    /// Messages not marked deleted, and their octets.
    fn stat(&self) -> (usize, u64) {
        self.messages
            .iter()
            .filter(|m| !m.deleted)
            .fold((0, 0), |(n, octets), m| (n + 1, octets + m.size))
    }

    /// RFC 1939 section 7: "unique-id" is 1 to 70 characters in 0x21 to
    /// 0x7E, the same for the same message in every session.
    fn unique_id(&self, message: &Message) -> String {
        format!("{}-{}", self.uid_validity, message.uid)
    }

    /// The message a command names: a 1-based number, not marked deleted.
    /// `Ok` holds an index that is in bounds of `messages` (it was just
    /// looked up), so callers may index with it; `Err` holds the reply.
    fn lookup(&self, msg: u32) -> Result<usize, Vec<u8>> {
        let index = (msg as usize).wrapping_sub(1);
        match self.messages.get(index) {
            None => Err(format!(
                "-ERR no such message, only {} messages in maildrop\r\n",
                self.messages.len()
            )
            .into_bytes()),
            Some(m) if m.deleted => {
                Err(format!("-ERR message {msg} already deleted\r\n").into_bytes())
            }
            Some(_) => Ok(index),
        }
    }
}

/// Outcome of a credential check plus opening the maildrop.
#[derive(Debug)]
pub(crate) enum AuthOutcome {
    /// Logged in; the Inbox snapshot.
    LoggedIn(Maildrop),
    /// Wrong credentials, or no such user: never told apart.
    Failed,
    /// The directory has banned the login or the address for a while.
    Blocked,
    /// The directory or the store could not answer.
    Unavailable,
}

/// Why a message could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FetchError {
    /// Expunged by another session meanwhile.
    Vanished,
    /// The store failed.
    Unavailable,
}

/// What the driver must do next.
#[derive(Debug)]
pub(crate) enum Event {
    /// Write the output (it holds the `+OK` to STLS), run the TLS
    /// handshake, then call [`Session::tls_started`].
    StartTls,
    /// Check credentials with the directory, open the Inbox on success,
    /// then call [`Session::authenticated`].
    Authenticate {
        /// The login as sent.
        login: String,
        /// The password.
        secret: Secret,
    },
    /// A malformed SASL PLAIN message: count it as a failure from the
    /// client's address. The reply is already in the output.
    RecordFailure,
    /// Read message `index` (0-based in the snapshot) with `uid`, then call
    /// [`Session::message`].
    Fetch {
        /// Position in the snapshot.
        index: usize,
        /// Its UID.
        uid: u32,
    },
    /// QUIT in TRANSACTION: expunge these UIDs from the Inbox durably,
    /// then call [`Session::committed`] (RFC 1939 section 6).
    Commit {
        /// The UIDs marked by DELE.
        uids: Vec<u32>,
    },
    /// Write the output and close the connection.
    Close,
}

#[derive(Debug)]
enum State {
    /// RFC 1939 section 4; `user` is the name from a USER command.
    Authorization { user: Option<String> },
    /// `AUTH PLAIN` without an initial response: the next line is the
    /// client's response (RFC 5034 section 4).
    SaslResponse,
    /// RFC 1939 section 5.
    Transaction(Maildrop),
    /// After QUIT (and UPDATE), or closed for a limit: nothing more is read.
    Closed,
}

/// What the session is waiting for from the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    Tls,
    Auth,
    Message { index: usize, top: Option<u32> },
    Commit,
}

/// The sans-I/O session.
#[derive(Debug)]
pub(crate) struct Session {
    limits: Pop3Limits,
    lines: LineReader,
    out: Vec<u8>,
    tls: bool,
    stls_available: bool,
    state: State,
    waiting: Option<Waiting>,
    bad_commands: u32,
    auth_failures: u32,
}

impl Session {
    /// A new session with the greeting in its output. `tls` for implicit
    /// TLS; `stls_available` when STLS can be offered.
    pub(crate) fn new(limits: Pop3Limits, tls: bool, stls_available: bool) -> Session {
        Session {
            lines: LineReader::new(limits.max_line_bytes),
            limits,
            out: GREETING.to_vec(),
            tls,
            stls_available: stls_available && !tls,
            state: State::Authorization { user: None },
            waiting: None,
            bad_commands: 0,
            auth_failures: 0,
        }
    }

    /// Bytes received from the client.
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        self.lines.feed(bytes);
    }

    /// Replies to write, in order.
    pub(crate) fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Whether the session is logged in.
    pub(crate) fn is_transaction(&self) -> bool {
        matches!(self.state, State::Transaction(_))
    }

    /// Processes buffered input until the driver must act; `None` when
    /// more input is needed (or a driver result is still outstanding).
    pub(crate) fn poll(&mut self) -> Option<Event> {
        loop {
            if self.waiting.is_some() {
                return None;
            }
            if matches!(self.state, State::Closed) {
                return Some(Event::Close);
            }
            let event = match self.lines.next_line()? {
                Line::TooLong => {
                    self.bad(b"-ERR line too long\r\n");
                    None
                }
                Line::Overflow => {
                    self.bad(b"");
                    None
                }
                Line::Complete(line) => self.line(&line),
            };
            if event.is_some() {
                return event;
            }
        }
    }

    /// The server is shutting down: say so and close, without UPDATE
    /// (RFC 1939 section 6: deletions happen only on QUIT).
    pub(crate) fn shutdown(&mut self) {
        self.out
            .extend_from_slice(b"-ERR [SYS/TEMP] server shutting down\r\n");
        self.state = State::Closed;
    }

    /// The TLS handshake after STLS succeeded (RFC 2595 section 4).
    pub(crate) fn tls_started(&mut self) {
        self.waiting = None;
        self.tls = true;
        self.stls_available = false;
        // Nothing received before the handshake counts.
        self.lines.clear();
        self.state = State::Authorization { user: None };
    }

    /// The result of [`Event::Authenticate`].
    pub(crate) fn authenticated(&mut self, outcome: AuthOutcome) {
        if self.waiting != Some(Waiting::Auth) {
            return;
        }
        self.waiting = None;
        match outcome {
            AuthOutcome::LoggedIn(maildrop) => {
                let (count, octets) = maildrop.stat();
                self.reply(format!(
                    "+OK maildrop has {count} messages ({octets} octets)"
                ));
                self.state = State::Transaction(maildrop);
            }
            AuthOutcome::Failed => {
                self.auth_failed(b"-ERR [AUTH] authentication failed\r\n");
            }
            AuthOutcome::Blocked => {
                // RFC 3206 section 4: a temporary condition; the same for
                // right and wrong passwords, so it reveals nothing.
                self.auth_failed(b"-ERR [SYS/TEMP] too many failed attempts; try again later\r\n");
            }
            AuthOutcome::Unavailable => {
                self.state = State::Authorization { user: None };
                self.out.extend_from_slice(
                    b"-ERR [SYS/TEMP] authentication temporarily unavailable\r\n",
                );
            }
        }
    }

    /// The result of [`Event::Fetch`].
    pub(crate) fn message(&mut self, result: Result<Vec<u8>, FetchError>) {
        let Some(Waiting::Message { index, top }) = self.waiting else {
            return;
        };
        self.waiting = None;
        let State::Transaction(maildrop) = &mut self.state else {
            return;
        };
        let Some(entry) = maildrop.messages.get_mut(index) else {
            self.out.extend_from_slice(b"-ERR no such message\r\n");
            return;
        };
        match result {
            Ok(raw) => {
                match top {
                    None => self
                        .out
                        .extend_from_slice(format!("+OK {} octets\r\n", entry.size).as_bytes()),
                    Some(_) => self
                        .out
                        .extend_from_slice(b"+OK top of message follows\r\n"),
                }
                render::multiline(&raw, top, &mut self.out);
            }
            Err(FetchError::Vanished) => {
                entry.vanished = true;
                self.out.extend_from_slice(b"-ERR no such message\r\n");
            }
            Err(FetchError::Unavailable) => {
                self.out.extend_from_slice(
                    b"-ERR [SYS/TEMP] cannot read the message now; try again later\r\n",
                );
            }
        }
    }

    /// The result of [`Event::Commit`] (RFC 1939 section 6).
    pub(crate) fn committed(&mut self, ok: bool) {
        if self.waiting != Some(Waiting::Commit) {
            return;
        }
        self.waiting = None;
        if ok {
            let left = match &self.state {
                State::Transaction(maildrop) => maildrop.stat().0,
                _ => 0,
            };
            self.signing_off(left);
        } else {
            self.out
                .extend_from_slice(b"-ERR [SYS/TEMP] some deleted messages not removed\r\n");
        }
        self.state = State::Closed;
    }

    fn reply(&mut self, text: String) {
        self.out.extend_from_slice(text.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    fn signing_off(&mut self, left: usize) {
        if left == 0 {
            self.reply("+OK Bulwark POP3 server signing off (maildrop empty)".into());
        } else {
            self.reply(format!(
                "+OK Bulwark POP3 server signing off ({left} messages left)"
            ));
        }
    }

    /// A bad command: answered (unless `reply` is empty), counted, and
    /// the session closed at the limit.
    fn bad(&mut self, reply: &[u8]) {
        self.out.extend_from_slice(reply);
        self.bad_commands += 1;
        if self.bad_commands >= self.limits.max_bad_commands {
            if reply.is_empty() {
                self.out
                    .extend_from_slice(b"-ERR too many bad commands\r\n");
            }
            self.state = State::Closed;
        }
    }

    fn auth_failed(&mut self, reply: &[u8]) {
        self.out.extend_from_slice(reply);
        self.auth_failures += 1;
        self.state = if self.auth_failures >= self.limits.max_auth_failures {
            State::Closed
        } else {
            State::Authorization { user: None }
        };
    }

    fn line(&mut self, line: &[u8]) -> Option<Event> {
        if matches!(self.state, State::SaslResponse) {
            return self.sasl_response(line);
        }
        let command = match command::parse(line) {
            Ok(command) => command,
            Err(ParseError::Unknown) => {
                self.bad(b"-ERR unknown command\r\n");
                return None;
            }
            Err(ParseError::Syntax(text)) => {
                self.bad(format!("-ERR {text}\r\n").as_bytes());
                return None;
            }
        };
        match command {
            Command::Capa => {
                self.capa();
                None
            }
            Command::Quit => self.quit(),
            _ if self.is_transaction() => self.transaction(command),
            command => self.authorization(command),
        }
    }

    /// RFC 2449 section 5 and 6.
    fn capa(&mut self) {
        let mut caps = String::from("+OK Capability list follows\r\n");
        caps.push_str("TOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n");
        if self.tls {
            caps.push_str("USER\r\nSASL PLAIN\r\n");
        }
        if self.stls_available && !self.is_transaction() {
            caps.push_str("STLS\r\n");
        }
        caps.push_str("IMPLEMENTATION Bulwark\r\n.\r\n");
        self.out.extend_from_slice(caps.as_bytes());
    }

    fn quit(&mut self) -> Option<Event> {
        match &self.state {
            State::Transaction(maildrop) => {
                let uids: Vec<u32> = maildrop
                    .messages
                    .iter()
                    .filter(|m| m.deleted)
                    .map(|m| m.uid)
                    .collect();
                if uids.is_empty() {
                    let left = maildrop.stat().0;
                    self.signing_off(left);
                    self.state = State::Closed;
                    return None;
                }
                self.waiting = Some(Waiting::Commit);
                Some(Event::Commit { uids })
            }
            _ => {
                // RFC 1939 section 4: QUIT in AUTHORIZATION does no UPDATE.
                self.reply("+OK Bulwark POP3 server signing off".into());
                self.state = State::Closed;
                None
            }
        }
    }

    fn authorization(&mut self, command: Command) -> Option<Event> {
        match command {
            Command::Stls => {
                if self.tls {
                    self.bad(b"-ERR TLS already active\r\n");
                    return None;
                }
                if !self.stls_available {
                    self.bad(b"-ERR STLS not available\r\n");
                    return None;
                }
                self.out.extend_from_slice(b"+OK Begin TLS negotiation\r\n");
                // RFC 2595 section 4: discard what came after STLS in
                // plaintext, and forget any USER given before.
                self.lines.clear();
                self.state = State::Authorization { user: None };
                self.waiting = Some(Waiting::Tls);
                Some(Event::StartTls)
            }
            Command::User(name) => {
                if !self.tls {
                    self.bad(NEED_TLS);
                    return None;
                }
                // RFC 1939 section 7 allows "-ERR no mailbox"; answering
                // +OK for every name reveals nothing about who exists.
                self.state = State::Authorization { user: Some(name) };
                self.out.extend_from_slice(b"+OK send PASS\r\n");
                None
            }
            Command::Pass(secret) => {
                if !self.tls {
                    self.bad(NEED_TLS);
                    return None;
                }
                let user = match &mut self.state {
                    State::Authorization { user } => user.take(),
                    _ => None,
                };
                let Some(login) = user else {
                    self.bad(b"-ERR send USER first\r\n");
                    return None;
                };
                self.waiting = Some(Waiting::Auth);
                Some(Event::Authenticate { login, secret })
            }
            Command::Auth { mechanism, initial } => self.auth(mechanism, initial),
            Command::Stat
            | Command::List(_)
            | Command::Retr(_)
            | Command::Dele(_)
            | Command::Noop
            | Command::Rset
            | Command::Top { .. }
            | Command::Uidl(_) => {
                self.bad(b"-ERR command not valid before authentication\r\n");
                None
            }
            Command::Capa | Command::Quit => None,
        }
    }

    /// RFC 5034 section 4.
    fn auth(&mut self, mechanism: Option<String>, initial: Option<Secret>) -> Option<Event> {
        let Some(mechanism) = mechanism else {
            // `AUTH` alone: the mechanism list many clients still ask for
            // (the pre-CAPA convention).
            if self.tls {
                self.out.extend_from_slice(b"+OK\r\nPLAIN\r\n.\r\n");
            } else {
                self.out.extend_from_slice(b"+OK\r\n.\r\n");
            }
            return None;
        };
        if !mechanism.eq_ignore_ascii_case("PLAIN") {
            self.bad(b"-ERR unsupported SASL mechanism\r\n");
            return None;
        }
        if !self.tls {
            self.bad(NEED_TLS);
            return None;
        }
        self.state = State::Authorization { user: None };
        match initial {
            Some(response) => self.sasl_plain(response.expose().as_bytes()),
            None => {
                // An empty server challenge: "+" and a space.
                self.out.extend_from_slice(b"+ \r\n");
                self.state = State::SaslResponse;
                None
            }
        }
    }

    fn sasl_response(&mut self, line: &[u8]) -> Option<Event> {
        self.state = State::Authorization { user: None };
        if line == b"*" {
            // RFC 5034 section 4: the client cancelled.
            self.bad(b"-ERR [AUTH] authentication cancelled\r\n");
            return None;
        }
        self.sasl_plain(line)
    }

    /// A base64 PLAIN response (RFC 4616 section 2): `=` is empty.
    fn sasl_plain(&mut self, encoded: &[u8]) -> Option<Event> {
        let encoded = if encoded == b"=" { &b""[..] } else { encoded };
        let Ok(message) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
            // RFC 5034 section 4: undecodable responses are rejected.
            self.auth_failed(b"-ERR [AUTH] invalid base64 in SASL response\r\n");
            return None;
        };
        match sasl_plain(&message) {
            Some((login, secret)) => {
                self.waiting = Some(Waiting::Auth);
                Some(Event::Authenticate { login, secret })
            }
            None => {
                self.auth_failed(b"-ERR [AUTH] authentication failed\r\n");
                Some(Event::RecordFailure)
            }
        }
    }

    fn transaction(&mut self, command: Command) -> Option<Event> {
        let State::Transaction(maildrop) = &mut self.state else {
            return None;
        };
        let reply: Vec<u8> = match command {
            Command::Stat => {
                let (count, octets) = maildrop.stat();
                format!("+OK {count} {octets}\r\n").into_bytes()
            }
            Command::List(None) => {
                let (count, octets) = maildrop.stat();
                let mut out = format!("+OK {count} messages ({octets} octets)\r\n");
                for (i, m) in maildrop.messages.iter().enumerate() {
                    if !m.deleted {
                        out.push_str(&format!("{} {}\r\n", i + 1, m.size));
                    }
                }
                out.push_str(".\r\n");
                out.into_bytes()
            }
            Command::List(Some(msg)) => match maildrop.lookup(msg) {
                Ok(i) => format!("+OK {msg} {}\r\n", maildrop.messages[i].size).into_bytes(),
                Err(e) => e,
            },
            Command::Uidl(None) => {
                let mut out = String::from("+OK unique-id listing follows\r\n");
                for (i, m) in maildrop.messages.iter().enumerate() {
                    if !m.deleted {
                        out.push_str(&format!("{} {}\r\n", i + 1, maildrop.unique_id(m)));
                    }
                }
                out.push_str(".\r\n");
                out.into_bytes()
            }
            Command::Uidl(Some(msg)) => match maildrop.lookup(msg) {
                Ok(i) => format!(
                    "+OK {msg} {}\r\n",
                    maildrop.unique_id(&maildrop.messages[i])
                )
                .into_bytes(),
                Err(e) => e,
            },
            Command::Retr(msg) => return self.fetch(msg, None),
            Command::Top { msg, lines } => return self.fetch(msg, Some(lines)),
            Command::Dele(msg) => match maildrop.lookup(msg) {
                Ok(i) => {
                    maildrop.messages[i].deleted = true;
                    format!("+OK message {msg} deleted\r\n").into_bytes()
                }
                Err(e) => e,
            },
            Command::Noop => b"+OK\r\n".to_vec(),
            Command::Rset => {
                for m in &mut maildrop.messages {
                    m.deleted = false;
                }
                let (count, octets) = maildrop.stat();
                format!("+OK maildrop has {count} messages ({octets} octets)\r\n").into_bytes()
            }
            Command::Stls | Command::User(_) | Command::Pass(_) | Command::Auth { .. } => {
                self.bad(b"-ERR already authenticated\r\n");
                return None;
            }
            Command::Capa | Command::Quit => return None,
        };
        self.out.extend_from_slice(&reply);
        None
    }

    fn fetch(&mut self, msg: u32, top: Option<u32>) -> Option<Event> {
        let State::Transaction(maildrop) = &self.state else {
            return None;
        };
        let index = match maildrop.lookup(msg) {
            Ok(index) => index,
            Err(reply) => {
                self.out.extend_from_slice(&reply);
                return None;
            }
        };
        let message = &maildrop.messages[index];
        if message.vanished {
            self.out.extend_from_slice(b"-ERR no such message\r\n");
            return None;
        }
        let uid = message.uid;
        self.waiting = Some(Waiting::Message { index, top });
        Some(Event::Fetch { index, uid })
    }
}

/// The PLAIN message (RFC 4616 section 2): authzid NUL authcid NUL passwd.
/// Acting as someone else needs delegation, which is not offered, so an
/// authzid other than the authcid is refused.
fn sasl_plain(message: &[u8]) -> Option<(String, Secret)> {
    let mut parts = message.split(|&b| b == 0);
    let authz = parts.next()?;
    let authc = std::str::from_utf8(parts.next()?).ok()?;
    let password = std::str::from_utf8(parts.next()?).ok()?;
    if parts.next().is_some() || authc.is_empty() || password.is_empty() {
        return None;
    }
    if !authz.is_empty() && authz != authc.as_bytes() {
        return None;
    }
    Some((authc.to_string(), Secret::new(password)))
}

#[cfg(test)]
mod tests {
    //! `C:`/`S:` transcripts, most taken from the examples in RFC 1939,
    //! RFC 2449, RFC 2595 and RFC 5034 (adapted where this server's
    //! policy differs: USER/PASS instead of APOP, TLS before passwords).

    use std::collections::HashSet;

    use super::*;

    /// A stand-in for the driver: a directory with two users and an Inbox.
    struct Fake {
        messages: Vec<Vec<u8>>,
        vanished: HashSet<u32>,
        commit_ok: bool,
        commits: Vec<Vec<u32>>,
        recorded_failures: u32,
        closed: bool,
        handshakes: u32,
    }

    impl Fake {
        fn new(messages: Vec<Vec<u8>>) -> Fake {
            Fake {
                messages,
                vanished: HashSet::new(),
                commit_ok: true,
                commits: Vec::new(),
                recorded_failures: 0,
                closed: false,
                handshakes: 0,
            }
        }

        fn maildrop(&self) -> Maildrop {
            Maildrop::new(
                1_700_000_000,
                self.messages
                    .iter()
                    .enumerate()
                    .map(|(i, m)| (i as u32 + 10, m.len() as u64)),
            )
        }

        fn outcome(&self, login: &str, secret: &str) -> AuthOutcome {
            match (login, secret) {
                ("mrose", "tanstaaf") | ("test", "test") => AuthOutcome::LoggedIn(self.maildrop()),
                ("banned", _) => AuthOutcome::Blocked,
                ("broken", _) => AuthOutcome::Unavailable,
                _ => AuthOutcome::Failed,
            }
        }

        /// Runs the session until it needs input; returns what it wrote.
        fn drive(&mut self, s: &mut Session) -> String {
            let mut out = s.take_output();
            while let Some(event) = s.poll() {
                out.extend(s.take_output());
                match event {
                    Event::Close => {
                        self.closed = true;
                        break;
                    }
                    Event::StartTls => {
                        self.handshakes += 1;
                        s.tls_started();
                    }
                    Event::Authenticate { login, secret } => {
                        s.authenticated(self.outcome(&login, secret.expose()));
                    }
                    Event::RecordFailure => self.recorded_failures += 1,
                    Event::Fetch { index, uid } => {
                        let result = if self.vanished.contains(&uid) {
                            Err(FetchError::Vanished)
                        } else {
                            Ok(self.messages[index].clone())
                        };
                        s.message(result);
                    }
                    Event::Commit { uids } => {
                        self.commits.push(uids);
                        s.committed(self.commit_ok);
                    }
                }
            }
            out.extend(s.take_output());
            String::from_utf8(out).expect("replies are UTF-8 here")
        }

        /// Replays a transcript: `C:` lines are sent (CRLF added), `S:`
        /// lines must be exactly what the server wrote in between.
        fn replay(&mut self, s: &mut Session, script: &str) {
            let mut expected = String::new();
            let mut actual = self.drive(s);
            for line in script
                .lines()
                .map(str::trim_start)
                .filter(|l| !l.is_empty())
            {
                let command = if line == "C:" {
                    Some("")
                } else {
                    line.strip_prefix("C: ")
                };
                if let Some(c) = command {
                    assert_eq!(actual, expected, "before C: {c}");
                    expected.clear();
                    s.feed(format!("{c}\r\n").as_bytes());
                    actual = self.drive(s);
                } else if let Some(reply) = line.strip_prefix("S: ") {
                    expected.push_str(reply);
                    expected.push_str("\r\n");
                } else if line == "S:" {
                    expected.push_str("\r\n");
                } else {
                    panic!("bad transcript line {line:?}");
                }
            }
            assert_eq!(actual, expected, "at the end");
        }
    }

    /// A CRLF message of exactly `len` octets.
    fn sized(len: usize, subject: &str) -> Vec<u8> {
        let head = format!("Subject: {subject}\r\n\r\n");
        let body = len - head.len() - 2;
        let mut m = head.into_bytes();
        m.extend(std::iter::repeat_n(b'a', body));
        m.extend_from_slice(b"\r\n");
        assert_eq!(m.len(), len);
        m
    }

    fn tls_session() -> Session {
        Session::new(Pop3Limits::default(), true, false)
    }

    fn body(len: usize, subject: &str) -> String {
        format!(
            "S: Subject: {subject}\nS:\nS: {}",
            "a".repeat(len - subject.len() - 15)
        )
    }

    /// RFC 1939 section 10, with USER/PASS in place of APOP.
    #[test]
    fn rfc1939_example_pop3_session() {
        let mut fake = Fake::new(vec![sized(120, "one"), sized(200, "two")]);
        let mut s = tls_session();
        let script = format!(
            "S: +OK Bulwark POP3 ready
             C: USER mrose
             S: +OK send PASS
             C: PASS tanstaaf
             S: +OK maildrop has 2 messages (320 octets)
             C: STAT
             S: +OK 2 320
             C: LIST
             S: +OK 2 messages (320 octets)
             S: 1 120
             S: 2 200
             S: .
             C: RETR 1
             S: +OK 120 octets
             {}
             S: .
             C: DELE 1
             S: +OK message 1 deleted
             C: RETR 2
             S: +OK 200 octets
             {}
             S: .
             C: DELE 2
             S: +OK message 2 deleted
             C: QUIT
             S: +OK Bulwark POP3 server signing off (maildrop empty)",
            body(120, "one"),
            body(200, "two"),
        );
        fake.replay(&mut s, &script);
        assert_eq!(fake.commits, vec![vec![10, 11]]);
        assert!(fake.closed);
    }

    /// The examples under each command in RFC 1939 sections 5 to 7.
    #[test]
    fn rfc1939_command_examples() {
        let mut fake = Fake::new(vec![sized(120, "one"), sized(200, "two")]);
        let mut s = tls_session();
        let script = format!(
            "S: +OK Bulwark POP3 ready
             C: USER mrose
             S: +OK send PASS
             C: PASS tanstaaf
             S: +OK maildrop has 2 messages (320 octets)
             C: LIST 2
             S: +OK 2 200
             C: LIST 3
             S: -ERR no such message, only 2 messages in maildrop
             C: UIDL
             S: +OK unique-id listing follows
             S: 1 1700000000-10
             S: 2 1700000000-11
             S: .
             C: UIDL 2
             S: +OK 2 1700000000-11
             C: UIDL 3
             S: -ERR no such message, only 2 messages in maildrop
             C: TOP 1 0
             S: +OK top of message follows
             S: Subject: one
             S:
             S: .
             C: TOP 1 10
             S: +OK top of message follows
             {}
             S: .
             C: TOP 100 3
             S: -ERR no such message, only 2 messages in maildrop
             C: NOOP
             S: +OK
             C: DELE 1
             S: +OK message 1 deleted
             C: DELE 1
             S: -ERR message 1 already deleted
             C: RETR 1
             S: -ERR message 1 already deleted
             C: LIST 1
             S: -ERR message 1 already deleted
             C: STAT
             S: +OK 1 200
             C: LIST
             S: +OK 1 messages (200 octets)
             S: 2 200
             S: .
             C: UIDL
             S: +OK unique-id listing follows
             S: 2 1700000000-11
             S: .
             C: RSET
             S: +OK maildrop has 2 messages (320 octets)
             C: RETR 0
             S: -ERR no such message, only 2 messages in maildrop
             C: QUIT
             S: +OK Bulwark POP3 server signing off (2 messages left)",
            body(120, "one"),
        );
        fake.replay(&mut s, &script);
        // RSET unmarked everything: QUIT wrote nothing.
        assert!(fake.commits.is_empty());
        assert!(fake.closed);
    }

    /// RFC 1939 section 4: QUIT in AUTHORIZATION does not enter UPDATE.
    #[test]
    fn quit_before_login_and_dropped_sessions_delete_nothing() {
        let mut fake = Fake::new(vec![sized(120, "one")]);
        let mut s = tls_session();
        fake.replay(
            &mut s,
            "S: +OK Bulwark POP3 ready
             C: QUIT
             S: +OK Bulwark POP3 server signing off",
        );
        assert!(fake.closed && fake.commits.is_empty());

        // DELE, then the connection drops: no UPDATE.
        let mut fake = Fake::new(vec![sized(120, "one")]);
        let mut s = tls_session();
        fake.replay(
            &mut s,
            "S: +OK Bulwark POP3 ready
             C: USER mrose
             S: +OK send PASS
             C: PASS tanstaaf
             S: +OK maildrop has 1 messages (120 octets)
             C: DELE 1
             S: +OK message 1 deleted",
        );
        s.shutdown();
        assert_eq!(
            fake.drive(&mut s),
            "-ERR [SYS/TEMP] server shutting down\r\n"
        );
        assert!(fake.closed && fake.commits.is_empty());
    }

    #[test]
    fn failed_update_is_reported() {
        let mut fake = Fake::new(vec![sized(120, "one")]);
        fake.commit_ok = false;
        let mut s = tls_session();
        fake.replay(
            &mut s,
            "S: +OK Bulwark POP3 ready
             C: USER mrose
             S: +OK send PASS
             C: PASS tanstaaf
             S: +OK maildrop has 1 messages (120 octets)
             C: DELE 1
             S: +OK message 1 deleted
             C: QUIT
             S: -ERR [SYS/TEMP] some deleted messages not removed",
        );
        assert!(fake.closed);
    }

    /// RFC 2449 section 5; USER and SASL only over TLS, STLS only before.
    #[test]
    fn capa_depends_on_tls() {
        let mut fake = Fake::new(Vec::new());
        let mut s = Session::new(Pop3Limits::default(), false, true);
        fake.replay(
            &mut s,
            "S: +OK Bulwark POP3 ready
             C: CAPA
             S: +OK Capability list follows
             S: TOP
             S: UIDL
             S: RESP-CODES
             S: AUTH-RESP-CODE
             S: PIPELINING
             S: STLS
             S: IMPLEMENTATION Bulwark
             S: .
             C: STLS
             S: +OK Begin TLS negotiation
             C: CAPA
             S: +OK Capability list follows
             S: TOP
             S: UIDL
             S: RESP-CODES
             S: AUTH-RESP-CODE
             S: PIPELINING
             S: USER
             S: SASL PLAIN
             S: IMPLEMENTATION Bulwark
             S: .
             C: STLS
             S: -ERR TLS already active",
        );
        assert_eq!(fake.handshakes, 1);
        // Without a certificate STLS is neither offered nor accepted.
        let mut s = Session::new(Pop3Limits::default(), false, false);
        fake.replay(
            &mut s,
            "S: +OK Bulwark POP3 ready
             C: CAPA
             S: +OK Capability list follows
             S: TOP
             S: UIDL
             S: RESP-CODES
             S: AUTH-RESP-CODE
             S: PIPELINING
             S: IMPLEMENTATION Bulwark
             S: .
             C: STLS
             S: -ERR STLS not available",
        );
    }

    /// RFC 2595 section 4: no password in plaintext, and nothing
    /// pipelined after STLS survives the handshake.
    #[test]
    fn passwords_need_tls_and_stls_drops_pipelined_plaintext() {
        let mut fake = Fake::new(vec![sized(120, "one")]);
        let mut s = Session::new(Pop3Limits::default(), false, true);
        fake.replay(
            &mut s,
            "S: +OK Bulwark POP3 ready
             C: USER mrose
             S: -ERR [AUTH] Plaintext authentication disallowed on non-secure connections; use STLS first
             C: PASS tanstaaf
             S: -ERR [AUTH] Plaintext authentication disallowed on non-secure connections; use STLS first
             C: AUTH PLAIN AG1yb3NlAHRhbnN0YWFm
             S: -ERR [AUTH] Plaintext authentication disallowed on non-secure connections; use STLS first
             C: AUTH
             S: +OK
             S: .
             C: STAT
             S: -ERR command not valid before authentication",
        );
        s.feed(b"STLS\r\nUSER mrose\r\nPASS tanstaaf\r\n");
        assert_eq!(fake.drive(&mut s), "+OK Begin TLS negotiation\r\n");
        // The injected commands are gone: STAT is still refused.
        s.feed(b"STAT\r\n");
        assert_eq!(
            fake.drive(&mut s),
            "-ERR command not valid before authentication\r\n"
        );
    }

    /// RFC 5034 section 4's example, and the initial-response form.
    #[test]
    fn auth_plain() {
        let mut fake = Fake::new(vec![sized(120, "one")]);
        let mut s = tls_session();
        fake.replay(
            &mut s,
            "S: +OK Bulwark POP3 ready
             C: AUTH
             S: +OK
             S: PLAIN
             S: .
             C: AUTH PLAIN
             S: + 
             C: dGVzdAB0ZXN0AHRlc3Q=
             S: +OK maildrop has 1 messages (120 octets)
             C: AUTH PLAIN dGVzdAB0ZXN0AHRlc3Q=
             S: -ERR already authenticated",
        );
        let mut s = tls_session();
        fake.replay(
            &mut s,
            "S: +OK Bulwark POP3 ready
             C: auth plain AG1yb3NlAHRhbnN0YWFm
             S: +OK maildrop has 1 messages (120 octets)",
        );
    }

    #[test]
    fn auth_plain_refusals() {
        let mut fake = Fake::new(Vec::new());
        let mut s = Session::new(
            Pop3Limits {
                max_auth_failures: 10,
                ..Pop3Limits::default()
            },
            true,
            false,
        );
        fake.replay(
            &mut s,
            "S: +OK Bulwark POP3 ready
             C: AUTH CRAM-MD5
             S: -ERR unsupported SASL mechanism
             C: AUTH PLAIN
             S: + 
             C: *
             S: -ERR [AUTH] authentication cancelled
             C: AUTH PLAIN !!!not-base64!!!
             S: -ERR [AUTH] invalid base64 in SASL response
             C: AUTH PLAIN
             S: + 
             C: %%%%
             S: -ERR [AUTH] invalid base64 in SASL response
             C: AUTH PLAIN =
             S: -ERR [AUTH] authentication failed
             C: AUTH PLAIN bW9ub2xpdGg=
             S: -ERR [AUTH] authentication failed
             C: AUTH PLAIN bWFsbG9yeQBtcm9zZQB0YW5zdGFhZg==
             S: -ERR [AUTH] authentication failed
             C: AUTH PLAIN AG1yb3NlAHdyb25n
             S: -ERR [AUTH] authentication failed
             C: AUTH PLAIN AGJhbm5lZAB4
             S: -ERR [SYS/TEMP] too many failed attempts; try again later
             C: AUTH PLAIN AGJyb2tlbgB4
             S: -ERR [SYS/TEMP] authentication temporarily unavailable",
        );
        // Empty, NUL-less and foreign-authzid messages ("mallory" acting
        // as "mrose") are counted against the address by the driver.
        assert_eq!(fake.recorded_failures, 3);
        assert!(!fake.closed);
    }

    /// The reply to a wrong password never depends on whether the user
    /// exists, and repeated failures end the session.
    #[test]
    fn failed_logins_are_uniform_and_limited() {
        let mut fake = Fake::new(Vec::new());
        let mut s = tls_session();
        fake.replay(
            &mut s,
            "S: +OK Bulwark POP3 ready
             C: USER nobody
             S: +OK send PASS
             C: PASS x
             S: -ERR [AUTH] authentication failed
             C: PASS tanstaaf
             S: -ERR send USER first
             C: USER mrose
             S: +OK send PASS
             C: PASS wrong
             S: -ERR [AUTH] authentication failed
             C: USER banned
             S: +OK send PASS
             C: PASS whatever
             S: -ERR [SYS/TEMP] too many failed attempts; try again later",
        );
        assert!(fake.closed, "three failures close the session");
        s.feed(b"USER mrose\r\nPASS tanstaaf\r\n");
        assert_eq!(fake.drive(&mut s), "");
    }

    #[test]
    fn bad_commands_are_answered_then_limited() {
        let mut fake = Fake::new(vec![sized(120, "one")]);
        let mut s = Session::new(
            Pop3Limits {
                max_bad_commands: 5,
                ..Pop3Limits::default()
            },
            true,
            false,
        );
        fake.replay(
            &mut s,
            "S: +OK Bulwark POP3 ready
             C: APOP mrose c4c9334bac560ecc979e58001b3e22fb
             S: -ERR unknown command
             C: RETR 1
             S: -ERR command not valid before authentication
             C: USER mrose
             S: +OK send PASS
             C: PASS tanstaaf
             S: +OK maildrop has 1 messages (120 octets)
             C: RETR x
             S: -ERR invalid message number
             C: USER mrose
             S: -ERR already authenticated
             C:
             S: -ERR unknown command",
        );
        assert!(fake.closed);
        assert!(fake.commits.is_empty());
    }

    #[test]
    fn long_lines_are_refused_and_bounded() {
        let mut fake = Fake::new(Vec::new());
        let mut s = Session::new(
            Pop3Limits {
                max_line_bytes: 1024,
                max_bad_commands: 4,
                ..Pop3Limits::default()
            },
            true,
            false,
        );
        fake.drive(&mut s);
        let mut line = vec![b'A'; 2000];
        line.extend_from_slice(b"\r\nNOOP\r\n");
        s.feed(&line);
        assert_eq!(
            fake.drive(&mut s),
            "-ERR line too long\r\n-ERR command not valid before authentication\r\n"
        );
        // A line that never ends: answered once, counted per cap, then
        // the session ends.
        let mut replies = String::new();
        for _ in 0..10 {
            s.feed(&[b'B'; 700]);
            replies.push_str(&fake.drive(&mut s));
        }
        assert!(fake.closed);
        assert_eq!(
            replies,
            "-ERR line too long\r\n-ERR too many bad commands\r\n"
        );
    }

    #[test]
    fn pipelined_commands_are_answered_in_order() {
        let mut fake = Fake::new(vec![sized(120, "one"), sized(200, "two")]);
        let mut s = tls_session();
        fake.drive(&mut s);
        s.feed(b"USER mrose\r\nPASS tanstaaf\r\nSTAT\r\nLIST 1\r\nUIDL 2\r\nDELE 2\r\nSTAT\r\nQUIT\r\n");
        assert_eq!(
            fake.drive(&mut s),
            "+OK send PASS\r\n\
             +OK maildrop has 2 messages (320 octets)\r\n\
             +OK 2 320\r\n\
             +OK 1 120\r\n\
             +OK 2 1700000000-11\r\n\
             +OK message 2 deleted\r\n\
             +OK 1 120\r\n\
             +OK Bulwark POP3 server signing off (1 messages left)\r\n"
        );
        assert_eq!(fake.commits, vec![vec![11]]);
    }

    #[test]
    fn messages_expunged_elsewhere_answer_no_such_message() {
        let mut fake = Fake::new(vec![sized(120, "one"), sized(200, "two")]);
        fake.vanished.insert(10);
        let mut s = tls_session();
        let script = format!(
            "S: +OK Bulwark POP3 ready
             C: USER mrose
             S: +OK send PASS
             C: PASS tanstaaf
             S: +OK maildrop has 2 messages (320 octets)
             C: RETR 1
             S: -ERR no such message
             C: TOP 1 0
             S: -ERR no such message
             C: RETR 2
             S: +OK 200 octets
             {}
             S: .
             C: DELE 1
             S: +OK message 1 deleted
             C: QUIT
             S: +OK Bulwark POP3 server signing off (1 messages left)",
            body(200, "two"),
        );
        fake.replay(&mut s, &script);
        assert_eq!(fake.commits, vec![vec![10]]);
    }

    #[test]
    fn retr_stuffs_dots_and_fixes_line_ends() {
        let raw = b"Subject: dots\n\n.hidden\n..two\nend".to_vec();
        let mut fake = Fake::new(vec![raw]);
        let mut s = tls_session();
        fake.replay(
            &mut s,
            "S: +OK Bulwark POP3 ready
             C: USER mrose
             S: +OK send PASS
             C: PASS tanstaaf
             S: +OK maildrop has 1 messages (32 octets)
             C: RETR 1
             S: +OK 32 octets
             S: Subject: dots
             S:
             S: ..hidden
             S: ...two
             S: end
             S: .",
        );
    }

    #[test]
    fn hostile_bytes_never_panic() {
        // Deterministic pseudo-random input in every state.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let words: [&[u8]; 16] = [
            b"USER mrose\r\n",
            b"PASS tanstaaf\r\n",
            b"RETR 1\r\n",
            b"TOP 2 1\r\n",
            b"DELE 1\r\n",
            b"LIST 99999999999\r\n",
            b"AUTH PLAIN\r\n",
            b"*\r\n",
            b"\r\n",
            b"\xff\x00\r\n",
            b"UIDL\r\n",
            b"RSET\r\n",
            b"STLS\r\n",
            b"CAPA\r\n",
            b"AUTH PLAIN AG1yb3NlAHRhbnN0YWFm\r\n",
            b"\n",
        ];
        for round in 0..200 {
            let mut fake = Fake::new(vec![sized(120, "one"), b".\r\n".to_vec()]);
            let mut s = Session::new(Pop3Limits::default(), round % 2 == 0, round % 3 == 0);
            for _ in 0..50 {
                let pick = next();
                if pick % 7 == 0 {
                    let noise: Vec<u8> = (0..(pick % 300)).map(|_| next() as u8).collect();
                    s.feed(&noise);
                } else {
                    s.feed(words[(pick % 16) as usize]);
                }
                fake.drive(&mut s);
                if fake.closed {
                    break;
                }
            }
        }
    }
}
