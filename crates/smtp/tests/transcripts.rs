//! `C:`/`S:` transcripts replayed against the sans-I/O session, with a fake
//! directory and store answering its questions. Several are the examples
//! printed in RFC 5321 Appendix D, RFC 2920 and RFC 3030, adapted to the
//! replies Bulwark gives.
//!
//! Consecutive `C:` lines are sent in one piece (as a pipelining client
//! would), then the session runs until it needs input, and everything it
//! wrote must match the `S:` lines that follow. An `S:` line ending in `*`
//! matches by prefix.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;

use bulwark_core::{PrincipalId, Right};
use bulwark_smtp::{
    Action, AuthOutcome, ClientInfo, Delegation, DeliveryOutcome, Identity, Mode, RcptOutcome,
    Session, SessionConfig, SmtpLimits, Timeout, Transaction,
};

/// 2025-07-01 10:00:00 UTC.
const NOW: i64 = 1_751_364_000_000;
const PASSWORD: &str = "correct horse battery staple";

/// Stands in for the driver: answers questions and records what happened.
struct World {
    recipients: HashMap<String, RcptOutcome>,
    local_domains: Vec<String>,
    delivery_outcome: DeliveryOutcome,
    delivered: Vec<Transaction>,
    auth_attempts: Vec<(String, String)>,
    writes: Vec<Vec<u8>>,
    tls_starts: usize,
    closed: bool,
}

fn alice() -> Identity {
    Identity {
        login: "alice@example.com".into(),
        principal: PrincipalId(1),
        auth_method: "password".into(),
        addresses: vec![
            "alice@example.com".parse().unwrap(),
            "a@example.com".parse().unwrap(),
        ],
        delegations: vec![
            Delegation {
                grantor: PrincipalId(3),
                address: "shared@example.com".parse().unwrap(),
                right: Right::SendAs,
            },
            Delegation {
                grantor: PrincipalId(4),
                address: "boss@example.com".parse().unwrap(),
                right: Right::SendOnBehalf,
            },
        ],
    }
}

impl World {
    fn new() -> World {
        let mut recipients = HashMap::new();
        for (address, accounts) in [
            ("alice@example.com", vec![1]),
            ("bob@example.com", vec![2]),
            ("team@example.com", vec![1, 2]),
            ("shared@example.com", vec![3]),
            ("jones@foo.com", vec![10]),
            ("brown@foo.com", vec![11]),
            ("postmaster@mx.example.com", vec![1]),
        ] {
            recipients.insert(
                address.to_string(),
                RcptOutcome::Local(accounts.into_iter().map(PrincipalId).collect()),
            );
        }
        recipients.insert(
            "slow@example.com".to_string(),
            RcptOutcome::TemporaryFailure,
        );
        World {
            recipients,
            local_domains: vec!["example.com".into(), "foo.com".into()],
            delivery_outcome: DeliveryOutcome::Stored,
            delivered: Vec::new(),
            auth_attempts: Vec::new(),
            writes: Vec::new(),
            tls_starts: 0,
            closed: false,
        }
    }

    /// Runs the session until it needs input; returns what it wrote.
    fn run(&mut self, session: &mut Session) -> String {
        let mut out = Vec::new();
        while let Some(action) = session.poll(NOW) {
            match action {
                Action::Write(bytes) => {
                    out.extend_from_slice(&bytes);
                    self.writes.push(bytes);
                }
                Action::StartTls => {
                    self.tls_starts += 1;
                    session.tls_started();
                }
                Action::Authenticate(credentials) => {
                    self.auth_attempts.push((
                        credentials.login.clone(),
                        credentials.password().to_string(),
                    ));
                    let outcome = match (credentials.login.as_str(), credentials.password()) {
                        ("alice@example.com", PASSWORD) => AuthOutcome::Success(alice()),
                        ("banned@example.com", _) => AuthOutcome::Blocked,
                        _ => AuthOutcome::Failed,
                    };
                    session.auth_result(outcome);
                }
                Action::CheckRecipient(address) => {
                    let outcome = match self.recipients.get(address.as_str()) {
                        Some(outcome) => outcome.clone(),
                        None if self
                            .local_domains
                            .iter()
                            .any(|d| d == address.domain().as_str()) =>
                        {
                            RcptOutcome::UnknownLocal
                        }
                        None => RcptOutcome::NotLocal,
                    };
                    session.rcpt_result(outcome);
                }
                Action::Deliver(transaction) => {
                    self.delivered.push(*transaction);
                    session.delivery_result(self.delivery_outcome.clone());
                }
                Action::Close => {
                    self.closed = true;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

fn config(mode: Mode, hostname: &str, limits: SmtpLimits) -> Arc<SessionConfig> {
    Arc::new(SessionConfig {
        mode,
        hostname: hostname.into(),
        limits,
        relay: false,
        notices: false,
    })
}

fn client(tls: bool, tls_available: bool) -> ClientInfo {
    ClientInfo {
        ip: "192.0.2.1".parse().unwrap(),
        tls,
        tls_available,
    }
}

fn inbound(hostname: &str) -> Session {
    Session::new(
        config(Mode::Inbound, hostname, SmtpLimits::default()),
        client(false, true),
        "s1".into(),
    )
}

fn submission_tls() -> Session {
    Session::new(
        config(Mode::Submission, "mx.example.com", SmtpLimits::default()),
        client(true, false),
        "s1".into(),
    )
}

fn matches(expected: &str, actual: &str) -> bool {
    match expected.strip_suffix('*') {
        Some(prefix) => actual.starts_with(prefix),
        None => expected == actual,
    }
}

/// Replays `script` against `session`, panicking at the first mismatch.
fn replay(session: &mut Session, world: &mut World, script: &str) {
    let lines: Vec<&str> = script
        .lines()
        .map(str::trim_start)
        .filter(|l| !l.is_empty())
        .collect();
    let mut i = 0;
    // The greeting comes before any input.
    let mut pending_output = world.run(session);
    while i <= lines.len() {
        let mut expected = Vec::new();
        while i < lines.len() && lines[i].starts_with("S:") {
            expected.push(lines[i][2..].trim_start().to_string());
            i += 1;
        }
        let actual: Vec<String> = pending_output
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        assert_eq!(
            actual.len(),
            expected.len(),
            "reply count differs before line {i}:\nexpected {expected:#?}\nactual {actual:#?}"
        );
        for (e, a) in expected.iter().zip(&actual) {
            assert!(matches(e, a), "expected {e:?}, got {a:?} (before line {i})");
        }
        if i >= lines.len() {
            break;
        }
        let mut input = String::new();
        while i < lines.len() && lines[i].starts_with("C:") {
            let text = lines[i][2..].strip_prefix(' ').unwrap_or(&lines[i][2..]);
            input.push_str(text);
            input.push_str("\r\n");
            i += 1;
        }
        assert!(!input.is_empty(), "script line {i} is neither C: nor S:");
        session.feed(input.as_bytes());
        pending_output = world.run(session);
    }
}

fn text(transaction: &Transaction) -> String {
    String::from_utf8(transaction.message.clone()).unwrap()
}

/// The client's part of a stored message (after our Return-Path and
/// Received fields).
fn client_part(transaction: &Transaction) -> String {
    let all = text(transaction);
    // The Received field ends at the first line that is not a
    // continuation line.
    let mut pos = all.find("Received: ").unwrap();
    loop {
        let end = all[pos..].find("\r\n").unwrap() + pos + 2;
        if !all[end..].starts_with('\t') {
            return all[end..].to_string();
        }
        pos = end;
    }
}

/// The RFC's "...etc. etc. etc." line reaches the wire dot-stuffed
/// (RFC 5321 section 4.5.2), so the client sends four dots.
#[test]
fn rfc5321_d1_typical_transaction() {
    let mut world = World::new();
    let mut session = inbound("foo.com");
    replay(
        &mut session,
        &mut world,
        "
        S: 220 foo.com ESMTP Bulwark
        C: EHLO bar.com
        S: 250-foo.com
        S: 250-PIPELINING
        S: 250-SIZE 52428800
        S: 250-8BITMIME
        S: 250-SMTPUTF8
        S: 250-ENHANCEDSTATUSCODES
        S: 250-CHUNKING
        S: 250 STARTTLS
        C: MAIL FROM:<Smith@bar.com>
        S: 250 2.1.0 Sender OK
        C: RCPT TO:<Jones@foo.com>
        S: 250 2.1.5 <jones@foo.com> Recipient OK
        C: RCPT TO:<Green@foo.com>
        S: 550 5.1.1 <green@foo.com> Recipient address rejected: no such mailbox here
        C: RCPT TO:<Brown@foo.com>
        S: 250 2.1.5 <brown@foo.com> Recipient OK
        C: DATA
        S: 354 Start mail input; end with <CRLF>.<CRLF>
        C: Blah blah blah...
        C: ....etc. etc. etc.
        C: .
        S: 250 2.0.0 OK id=s1-1 message stored
        C: QUIT
        S: 221 2.0.0 foo.com closing connection
        ",
    );
    assert!(world.closed);
    assert_eq!(world.delivered.len(), 1);
    let t = &world.delivered[0];
    assert_eq!(t.reverse_path, "Smith@bar.com");
    assert_eq!(
        t.recipients
            .iter()
            .map(|r| r.address.as_str())
            .collect::<Vec<_>>(),
        ["jones@foo.com", "brown@foo.com"]
    );
    assert_eq!(t.accounts(), [PrincipalId(10), PrincipalId(11)]);
    assert_eq!(t.received_at, NOW);
    // Two recipients: the Received field names neither (Bcc privacy).
    assert_eq!(
        text(t),
        "Return-Path: <Smith@bar.com>\r\n\
         Received: from bar.com ([192.0.2.1])\r\n\tby foo.com (Bulwark) with ESMTP id s1-1;\r\n\
         \tTue, 01 Jul 2025 10:00:00 +0000\r\n\
         Blah blah blah...\r\n...etc. etc. etc.\r\n"
    );
    assert!(t.submitter.is_none());
    assert!(t.delegations.is_empty());
}

#[test]
fn rfc5321_d2_aborted_transaction() {
    let mut world = World::new();
    let mut session = inbound("foo.com");
    replay(
        &mut session,
        &mut world,
        "
        S: 220 *
        C: HELO bar.com
        S: 250 foo.com
        C: MAIL FROM:<Smith@bar.com>
        S: 250 2.1.0 Sender OK
        C: RCPT TO:<Jones@foo.com>
        S: 250 2.1.5 *
        C: RSET
        S: 250 2.0.0 OK
        C: DATA
        S: 503 5.5.1 Need MAIL command first
        C: QUIT
        S: 221 *
        ",
    );
    assert!(world.delivered.is_empty());
}

/// RFC 5321 D.3 shows relaying; Bulwark is not a relay, whatever the
/// route syntax (the source route is ignored, RFC 5321 section 4.1.1.3).
#[test]
fn rfc5321_d3_relay_is_refused() {
    let mut world = World::new();
    let mut session = inbound("foo.com");
    replay(
        &mut session,
        &mut world,
        "
        S: 220 *
        C: EHLO bar.com
        S: 250-foo.com
        S: 250-*
        S: 250-*
        S: 250-*
        S: 250-*
        S: 250-*
        S: 250-*
        S: 250 STARTTLS
        C: MAIL FROM:<JQP@bar.com>
        C: RCPT TO:<@foo.com:Jones@XYZ.COM>
        C: RCPT TO:<victim@gmail.example>
        C: RCPT TO:<alice@example.com@evil.example>
        C: DATA
        S: 250 2.1.0 Sender OK
        S: 550 5.7.1 <jones@xyz.com> Relaying denied: not a local domain
        S: 550 5.7.1 <victim@gmail.example> Relaying denied: not a local domain
        S: 501 5.1.3 Bad recipient address syntax
        S: 554 5.5.1 No valid recipients
        ",
    );
    assert!(world.delivered.is_empty());
}

/// RFC 2920 section 3.2, first example: everything up to DATA in one
/// packet, every reply in one write.
#[test]
fn rfc2920_pipelining() {
    let mut world = World::new();
    let mut session = inbound("mx.example.com");
    replay(
        &mut session,
        &mut world,
        "
        S: 220 mx.example.com ESMTP Bulwark
        C: EHLO dbc.mtview.ca.us
        S: 250-mx.example.com
        S: 250-*
        S: 250-*
        S: 250-*
        S: 250-*
        S: 250-*
        S: 250-*
        S: 250 STARTTLS
        C: MAIL FROM:<mrose@dbc.mtview.ca.us>
        C: RCPT TO:<alice@example.com>
        C: RCPT TO:<bob@example.com>
        C: RCPT TO:<nobody@example.com>
        C: DATA
        S: 250 2.1.0 Sender OK
        S: 250 2.1.5 <alice@example.com> Recipient OK
        S: 250 2.1.5 <bob@example.com> Recipient OK
        S: 550 5.1.1 <nobody@example.com> *
        S: 354 Start mail input; end with <CRLF>.<CRLF>
        C: Subject: pipelined
        C:
        C: Hello.
        C: .
        C: MAIL FROM:<mrose@dbc.mtview.ca.us>
        C: RCPT TO:<team@example.com>
        C: DATA
        S: 250 2.0.0 OK id=s1-1 message stored
        S: 250 2.1.0 Sender OK
        S: 250 2.1.5 <team@example.com> Recipient OK
        S: 354 *
        C: Subject: second
        C:
        C: ..leading dot
        C: .
        C: QUIT
        S: 250 2.0.0 OK id=s1-2 message stored
        S: 221 *
        ",
    );
    // Greeting, EHLO reply, then one write for the whole first batch.
    assert!(
        world
            .writes
            .iter()
            .any(|w| w.starts_with(b"250 2.1.0") && w.ends_with(b"<CRLF>.<CRLF>\r\n")),
        "pipelined replies were not batched: {:?}",
        world.writes
    );
    assert_eq!(world.delivered.len(), 2);
    assert_eq!(
        client_part(&world.delivered[0]),
        "Subject: pipelined\r\n\r\nHello.\r\n"
    );
    assert_eq!(
        client_part(&world.delivered[1]),
        "Subject: second\r\n\r\n.leading dot\r\n"
    );
    assert_eq!(
        world.delivered[1].accounts(),
        [PrincipalId(1), PrincipalId(2)]
    );
    // A single recipient is named in the Received field.
    assert!(text(&world.delivered[1]).contains("\tfor <team@example.com>;\r\n"));
}

/// RFC 3030 section 4.1's example, and BDAT rules.
#[test]
fn rfc3030_chunking() {
    let mut world = World::new();
    let mut session = inbound("mx.example.com");
    let part1 = "To: alice@example.com\r\nFrom: sender@other.example\r\nSubject: chunked\r\n\r\n";
    let part2 = "Hi Alice,\r\n.this line starts with a dot and is not stuffed\r\n";
    let script = format!(
        "
        S: 220 *
        C: EHLO client.example
        S: 250-mx.example.com
        S: 250-*
        S: 250-*
        S: 250-*
        S: 250-*
        S: 250-*
        S: 250-CHUNKING
        S: 250 STARTTLS
        C: MAIL FROM:<sender@other.example>
        C: RCPT TO:<alice@example.com>
        S: 250 2.1.0 Sender OK
        S: 250 2.1.5 *
        C: BDAT {}
        ",
        part1.len()
    );
    replay(&mut session, &mut world, &script);
    session.feed(part1.as_bytes());
    assert_eq!(
        world.run(&mut session),
        format!("250 2.0.0 {} octets received\r\n", part1.len())
    );
    session.feed(format!("DATA\r\nBDAT {} LAST\r\n{part2}", part2.len()).as_bytes());
    assert_eq!(
        world.run(&mut session),
        "503 5.5.1 DATA is not allowed after BDAT\r\n250 2.0.0 OK id=s1-1 message stored\r\n"
    );
    assert_eq!(world.delivered.len(), 1);
    assert_eq!(client_part(&world.delivered[0]), format!("{part1}{part2}"));

    // BDAT without a transaction: the chunk is read and thrown away, never
    // taken for commands, even when it looks like them.
    session.feed(b"BDAT 29 LAST\r\nMAIL FROM:<x@y>\r\nRSET\r\nQUIT\r\nNOOP\r\n");
    assert_eq!(
        world.run(&mut session),
        "503 5.5.1 Need MAIL command first\r\n250 2.0.0 OK\r\n"
    );
    // A refused chunk fails the transaction: the pipelined chunks after it
    // get 503 too, and nothing is delivered.
    session.feed(
        b"MAIL FROM:<a@b.example>\r\nRCPT TO:<nobody@example.com>\r\nBDAT 5\r\nHELLOBDAT 3 LAST\r\nbye",
    );
    assert_eq!(
        world.run(&mut session),
        "250 2.1.0 Sender OK\r\n550 5.1.1 <nobody@example.com> Recipient address rejected: no such mailbox here\r\n\
         554 5.5.1 No valid recipients\r\n503 5.5.1 Need MAIL command first\r\n"
    );
    assert_eq!(world.delivered.len(), 1);
    // BDAT 0 LAST ends a message that is complete already; an empty first
    // chunk is fine too.
    session.feed(b"MAIL FROM:<>\r\nRCPT TO:<bob@example.com>\r\nBDAT 0\r\nBDAT 8\r\nA: b\r\n\r\nBDAT 0 LAST\r\n");
    assert_eq!(
        world.run(&mut session),
        "250 2.1.0 Sender OK\r\n250 2.1.5 <bob@example.com> Recipient OK\r\n\
         250 2.0.0 0 octets received\r\n250 2.0.0 8 octets received\r\n250 2.0.0 OK id=s1-3 message stored\r\n"
    );
    assert_eq!(client_part(&world.delivered[1]), "A: b\r\n\r\n");
    assert!(text(&world.delivered[1]).starts_with("Return-Path: <>\r\n"));
}

#[test]
fn bdat_over_the_size_limit_is_refused_at_the_chunk() {
    let mut world = World::new();
    let limits = SmtpLimits {
        max_message_size: 100,
        ..SmtpLimits::default()
    };
    let mut session = Session::new(
        config(Mode::Inbound, "mx.example.com", limits),
        client(false, false),
        "s1".into(),
    );
    world.run(&mut session);
    let chunk = "x".repeat(60);
    session.feed(
        format!(
            "EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<alice@example.com>\r\nBDAT 60\r\n{chunk}BDAT 60 LAST\r\n{chunk}NOOP\r\n"
        )
        .as_bytes(),
    );
    let out = world.run(&mut session);
    assert!(out.ends_with("250 2.0.0 60 octets received\r\n552 5.3.4 Message size exceeds fixed maximum message size\r\n250 2.0.0 OK\r\n"), "{out}");
    assert!(world.delivered.is_empty());
}

/// RFC 3207 section 4.2 and CVE-2011-0411: commands pipelined after
/// STARTTLS are discarded, and the session starts over after the
/// handshake.
#[test]
fn starttls_discards_injected_plaintext_and_resets() {
    let mut world = World::new();
    let mut session = inbound("mx.example.com");
    world.run(&mut session);
    session.feed(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nSTARTTLS\r\nMAIL FROM:<evil@x.example>\r\nRCPT TO:<alice@example.com>\r\n");
    let out = world.run(&mut session);
    assert!(
        out.ends_with("250 2.1.0 Sender OK\r\n220 2.0.0 Ready to start TLS\r\n"),
        "{out}"
    );
    assert_eq!(world.tls_starts, 1);
    // The injected MAIL and RCPT got no reply and left no state; the old
    // EHLO and transaction are forgotten.
    replay(
        &mut session,
        &mut world,
        "
        C: RCPT TO:<alice@example.com>
        C: MAIL FROM:<a@b.example>
        S: 503 5.5.1 Need MAIL command first
        S: 503 5.5.1 Send EHLO or HELO first
        C: EHLO c
        S: 250-mx.example.com
        S: 250-PIPELINING
        S: 250-SIZE 52428800
        S: 250-8BITMIME
        S: 250-SMTPUTF8
        S: 250-ENHANCEDSTATUSCODES
        S: 250 CHUNKING
        C: STARTTLS
        S: 503 5.5.1 TLS is already active
        C: MAIL FROM:<a@b.example>
        C: RCPT TO:<alice@example.com>
        C: DATA
        S: 250 2.1.0 Sender OK
        S: 250 2.1.5 *
        S: 354 *
        C: Subject: t
        C:
        C: x
        C: .
        S: 250 2.0.0 OK id=s1-2 message stored
        ",
    );
    assert!(text(&world.delivered[0]).contains(" with ESMTPS id s1-2\r\n"));
}

#[test]
fn starttls_unavailable() {
    let mut world = World::new();
    let mut session = Session::new(
        config(Mode::Inbound, "mx.example.com", SmtpLimits::default()),
        client(false, false),
        "s1".into(),
    );
    replay(
        &mut session,
        &mut world,
        "
        S: 220 *
        C: EHLO c
        S: 250-mx.example.com
        S: 250-PIPELINING
        S: 250-SIZE 52428800
        S: 250-8BITMIME
        S: 250-SMTPUTF8
        S: 250-ENHANCEDSTATUSCODES
        S: 250 CHUNKING
        C: STARTTLS
        S: 454 4.7.0 TLS not available
        ",
    );
}

#[test]
fn inbound_offers_no_auth() {
    let mut world = World::new();
    let mut session = Session::new(
        config(Mode::Inbound, "mx.example.com", SmtpLimits::default()),
        client(true, false),
        "s1".into(),
    );
    replay(
        &mut session,
        &mut world,
        "
        S: 220 *
        C: EHLO c
        S: 250-mx.example.com
        S: 250-*
        S: 250-*
        S: 250-*
        S: 250-*
        S: 250-*
        S: 250 CHUNKING
        C: AUTH PLAIN AGFsaWNlQGV4YW1wbGUuY29tAGNvcnJlY3QgaG9yc2UgYmF0dGVyeSBzdGFwbGU=
        S: 502 5.5.1 AUTH is not available on this port; use the submission port
        ",
    );
    assert!(world.auth_attempts.is_empty());
}

#[test]
fn submission_requires_tls_then_auth() {
    let mut world = World::new();
    let mut session = Session::new(
        config(Mode::Submission, "mx.example.com", SmtpLimits::default()),
        client(false, true),
        "s1".into(),
    );
    replay(
        &mut session,
        &mut world,
        "
        S: 220 mx.example.com ESMTP Bulwark
        C: EHLO laptop
        S: 250-mx.example.com
        S: 250-PIPELINING
        S: 250-SIZE 52428800
        S: 250-8BITMIME
        S: 250-SMTPUTF8
        S: 250-ENHANCEDSTATUSCODES
        S: 250-CHUNKING
        S: 250 STARTTLS
        C: AUTH PLAIN AGFsaWNlQGV4YW1wbGUuY29tAGNvcnJlY3QgaG9yc2UgYmF0dGVyeSBzdGFwbGU=
        S: 538 5.7.11 Encryption required for requested authentication mechanism: use STARTTLS first
        C: AUTH LOGIN
        S: 538 5.7.11 *
        C: MAIL FROM:<alice@example.com>
        S: 530 5.7.0 Authentication required
        C: STARTTLS
        S: 220 2.0.0 Ready to start TLS
        C: EHLO laptop
        S: 250-mx.example.com
        S: 250-PIPELINING
        S: 250-SIZE 52428800
        S: 250-8BITMIME
        S: 250-SMTPUTF8
        S: 250-ENHANCEDSTATUSCODES
        S: 250-CHUNKING
        S: 250 AUTH PLAIN LOGIN
        C: MAIL FROM:<alice@example.com>
        S: 530 5.7.0 Authentication required
        C: AUTH PLAIN AGFsaWNlQGV4YW1wbGUuY29tAGNvcnJlY3QgaG9yc2UgYmF0dGVyeSBzdGFwbGU=
        S: 235 2.7.0 Authentication successful
        C: AUTH PLAIN AGFsaWNlQGV4YW1wbGUuY29tAGNvcnJlY3QgaG9yc2UgYmF0dGVyeSBzdGFwbGU=
        S: 503 5.5.1 Already authenticated
        C: MAIL FROM:<alice@example.com>
        C: RCPT TO:<bob@example.com>
        C: DATA
        S: 250 2.1.0 Sender OK
        S: 250 2.1.5 <bob@example.com> Recipient OK
        S: 354 *
        C: From: Alice <alice@example.com>
        C: To: bob@example.com
        C: Subject: hi
        C:
        C: Hello Bob
        C: .
        S: 250 2.0.0 OK id=s1-1 message stored
        ",
    );
    // Only the AUTH after TLS reached the directory.
    assert_eq!(
        world.auth_attempts,
        [("alice@example.com".to_string(), PASSWORD.to_string())]
    );
    let t = &world.delivered[0];
    let stored = text(t);
    assert!(stored.contains(" with ESMTPSA id s1-1\r\n"), "{stored}");
    // Date and Message-ID were missing and are added after Received.
    assert!(
        stored.contains("\tTue, 01 Jul 2025 10:00:00 +0000\r\nDate: Tue, 01 Jul 2025 10:00:00 +0000\r\nMessage-ID: <s1-1@mx.example.com>\r\nFrom: Alice"),
        "{stored}"
    );
    assert_eq!(
        t.submitter.as_ref().map(|i| i.principal),
        Some(PrincipalId(1))
    );
    assert!(t.delegations.is_empty());
}

#[test]
fn sasl_exchanges() {
    let mut world = World::new();
    let mut session = submission_tls();
    replay(
        &mut session,
        &mut world,
        "
        S: 220 *
        C: EHLO laptop
        S: 250-*
        S: 250-*
        S: 250-*
        S: 250-*
        S: 250-*
        S: 250-*
        S: 250-*
        S: 250 AUTH PLAIN LOGIN
        C: AUTH CRAM-MD5
        S: 504 5.5.4 Unrecognized authentication type
        C: AUTH PLAIN
        S: 334 *
        C: *
        S: 501 5.0.0 Authentication cancelled
        C: AUTH PLAIN
        S: 334 *
        C: not base64!
        S: 501 5.5.2 Invalid base64 data
        C: AUTH PLAIN AG1hbGxvcnlAZXhhbXBsZS5jb20Ad3JvbmcgcGFzc3dvcmQgaGVyZQ==
        S: 535 5.7.8 Authentication credentials invalid
        C: AUTH PLAIN AGJhbm5lZEBleGFtcGxlLmNvbQB3aGF0ZXZlciB3aGF0ZXZlcg==
        S: 454 4.7.0 Temporary authentication failure: too many failed attempts, try again later
        C: AUTH PLAIN Ym9zc0BleGFtcGxlLmNvbQBhbGljZUBleGFtcGxlLmNvbQBjb3JyZWN0IGhvcnNlIGJhdHRlcnkgc3RhcGxl
        S: 535 5.7.8 Authentication credentials invalid
        C: AUTH LOGIN
        S: 334 VXNlcm5hbWU6
        C: YWxpY2VAZXhhbXBsZS5jb20=
        S: 334 UGFzc3dvcmQ6
        C: Y29ycmVjdCBob3JzZSBiYXR0ZXJ5IHN0YXBsZQ==
        S: 235 2.7.0 Authentication successful
        ",
    );
    // The authzid-proxy attempt (boss as alice) never reached the directory.
    assert_eq!(world.auth_attempts.len(), 3);
    assert_eq!(
        session.identity().map(|i| i.principal),
        Some(PrincipalId(1))
    );

    // SASL-IR with LOGIN: the user name in the command.
    let mut world = World::new();
    let mut session = submission_tls();
    replay(
        &mut session,
        &mut world,
        "
        S: 220 *
        C: EHLO laptop
        S: 250-*
        S: 250-*
        S: 250-*
        S: 250-*
        S: 250-*
        S: 250-*
        S: 250-*
        S: 250 *
        C: AUTH LOGIN YWxpY2VAZXhhbXBsZS5jb20=
        S: 334 UGFzc3dvcmQ6
        C: Y29ycmVjdCBob3JzZSBiYXR0ZXJ5IHN0YXBsZQ==
        S: 235 2.7.0 Authentication successful
        ",
    );
}

fn authenticated_submission() -> (Session, World) {
    let mut world = World::new();
    let mut session = submission_tls();
    world.run(&mut session);
    session.feed(b"EHLO laptop\r\nAUTH PLAIN AGFsaWNlQGV4YW1wbGUuY29tAGNvcnJlY3QgaG9yc2UgYmF0dGVyeSBzdGFwbGU=\r\n");
    let out = world.run(&mut session);
    assert!(
        out.ends_with("235 2.7.0 Authentication successful\r\n"),
        "{out}"
    );
    (session, world)
}

#[test]
fn submission_sender_rules() {
    let (mut session, mut world) = authenticated_submission();
    replay(
        &mut session,
        &mut world,
        "
        C: MAIL FROM:<ceo@example.com>
        S: 550 5.7.1 <ceo@example.com> Sender address rejected: not one of your addresses, and you hold no send-as or send-on-behalf right for it
        C: MAIL FROM:<alice@example.com>
        C: RCPT TO:<someone@gmail.example>
        S: 250 2.1.0 Sender OK
        S: 550 5.7.1 <someone@gmail.example> Relaying to external domains is turned off on this server; only local recipients are accepted
        C: RCPT TO:<bob@example.com>
        C: DATA
        S: 250 2.1.5 *
        S: 354 *
        C: From: The CEO <ceo@example.com>
        C: Subject: wire the money
        C:
        C: now
        C: .
        S: 550 5.7.1 From: <ceo@example.com> is not one of your addresses and you hold no send-as or send-on-behalf right for it
        C: MAIL FROM:<a@example.com>
        C: RCPT TO:<bob@example.com>
        C: DATA
        S: 250 2.1.0 Sender OK
        S: 250 2.1.5 *
        S: 354 *
        C: From: boss@example.com
        C: Subject: on behalf without Sender
        C:
        C: x
        C: .
        S: 550 5.7.1 sending on behalf of <boss@example.com> needs a Sender: field with your own address
        C: MAIL FROM:<shared@example.com>
        C: RCPT TO:<bob@example.com>
        C: DATA
        S: 250 2.1.0 Sender OK
        S: 250 2.1.5 *
        S: 354 *
        C: From: Shared Desk <shared@example.com>
        C: Date: Tue, 1 Jul 2025 09:00:00 +0000
        C: Message-ID: <given@laptop>
        C: Subject: send-as
        C:
        C: x
        C: .
        S: 250 2.0.0 OK id=s1-3 message stored
        C: MAIL FROM:<alice@example.com>
        C: RCPT TO:<bob@example.com>
        C: DATA
        S: 250 2.1.0 Sender OK
        S: 250 2.1.5 *
        S: 354 *
        C: From: The Boss <boss@example.com>
        C: Sender: alice@example.com
        C: Subject: on behalf
        C:
        C: x
        C: .
        S: 250 2.0.0 OK id=s1-4 message stored
        C: MAIL FROM:<>
        C: RCPT TO:<bob@example.com>
        C: DATA
        S: 250 2.1.0 Sender OK
        S: 250 2.1.5 *
        S: 354 *
        C: Subject: no From at all
        C:
        C: x
        C: .
        S: 550 5.6.0 the message has no From: header field (RFC 5322 section 3.6)
        ",
    );
    assert_eq!(world.delivered.len(), 2);
    let send_as = &world.delivered[0];
    assert_eq!(send_as.delegations.len(), 1);
    assert_eq!(send_as.delegations[0].right, Right::SendAs);
    assert_eq!(send_as.delegations[0].grantor, PrincipalId(3));
    // Date and Message-ID were given, so none is added.
    let stored = text(send_as);
    assert_eq!(stored.matches("Date:").count(), 1, "{stored}");
    assert_eq!(stored.matches("Message-ID:").count(), 1, "{stored}");
    let on_behalf = &world.delivered[1];
    assert_eq!(on_behalf.delegations.len(), 1);
    assert_eq!(on_behalf.delegations[0].right, Right::SendOnBehalf);
    assert_eq!(on_behalf.delegations[0].grantor, PrincipalId(4));
}

#[test]
fn limits_on_recipients_size_and_lines() {
    let limits = SmtpLimits {
        max_recipients: 2,
        max_message_size: 200,
        max_command_line: 100,
        ..SmtpLimits::default()
    };
    let mut world = World::new();
    let mut session = Session::new(
        config(Mode::Inbound, "mx.example.com", limits),
        client(false, false),
        "s1".into(),
    );
    world.run(&mut session);
    let long = format!("NOOP {}", "a".repeat(200));
    replay(
        &mut session,
        &mut world,
        &format!(
            "
        C: EHLO c
        S: 250-mx.example.com
        S: 250-PIPELINING
        S: 250-SIZE 200
        S: *
        S: *
        S: *
        S: *
        C: MAIL FROM:<a@b.example> SIZE=201
        S: 552 5.3.4 Message size exceeds fixed maximum message size
        C: MAIL FROM:<a@b.example> SIZE=150 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=abc
        C: RCPT TO:<alice@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;alice@example.com
        C: RCPT TO:<bob@example.com>
        C: RCPT TO:<team@example.com>
        C: RCPT TO:<alice@example.com>
        S: 250 2.1.0 Sender OK
        S: 250 2.1.5 <alice@example.com> Recipient OK
        S: 250 2.1.5 <bob@example.com> Recipient OK
        S: 452 4.5.3 Too many recipients
        S: 250 2.1.5 <alice@example.com> Recipient OK
        C: {long}
        S: 500 5.5.2 Line too long
        C: DATA
        S: 354 *
        C: Subject: big
        C:
        C: {body}
        C: .
        S: 552 5.3.4 Message size exceeds fixed maximum message size
        C: MAIL FROM:<a@b.example> BODY=BINARYMIME
        S: 555 5.5.4 Unsupported MAIL FROM parameter
        C: MAIL FROM:<a@b.example> HOLDFOR=100
        S: 555 5.5.4 Unsupported MAIL FROM parameter
        C: MAIL FROM:<a@b.example> XFOO=1
        S: 555 5.5.4 Unsupported parameter XFOO=1
        ",
            body = "b".repeat(250)
        ),
    );
    assert!(world.delivered.is_empty());
}

#[test]
fn too_many_errors_end_the_session() {
    let mut world = World::new();
    let mut session = inbound("mx.example.com");
    world.run(&mut session);
    let mut input = String::from("EHLO c\r\n");
    for _ in 0..12 {
        input.push_str("BOGUS\r\n");
    }
    session.feed(input.as_bytes());
    let out = world.run(&mut session);
    assert_eq!(
        out.matches("500 5.5.1 Unrecognized command").count(),
        10,
        "{out}"
    );
    assert!(out.ends_with("421 4.7.0 mx.example.com Too many errors, closing connection\r\n"));
    assert!(world.closed);
    assert!(session.is_closed());
    session.feed(b"NOOP\r\n");
    assert_eq!(world.run(&mut session), "");
}

#[test]
fn four_hundreds_do_not_count_as_errors() {
    let limits = SmtpLimits {
        max_recipients: 1,
        max_errors: 3,
        ..SmtpLimits::default()
    };
    let mut world = World::new();
    let mut session = Session::new(
        config(Mode::Inbound, "mx.example.com", limits),
        client(false, false),
        "s1".into(),
    );
    world.run(&mut session);
    let mut input =
        String::from("EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<alice@example.com>\r\n");
    for _ in 0..10 {
        input.push_str("RCPT TO:<bob@example.com>\r\n");
    }
    input.push_str("RCPT TO:<slow@example.com>\r\nNOOP\r\n");
    session.feed(input.as_bytes());
    let out = world.run(&mut session);
    assert_eq!(out.matches("452 4.5.3").count(), 11);
    assert!(out.ends_with("250 2.0.0 OK\r\n"), "{out}");
    assert!(!world.closed);
}

#[test]
fn bare_line_endings_never_end_data_and_are_refused() {
    for smuggle in ["\n.\n", "\r\n.\n", "\n.\r\n", "\r\n.\r\r\n"] {
        let mut world = World::new();
        let mut session = inbound("mx.example.com");
        world.run(&mut session);
        session
            .feed(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n");
        world.run(&mut session);
        session.feed(format!("Subject: x\r\n\r\nhello{smuggle}MAIL FROM:<evil@b.example>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\nforged\r\n").as_bytes());
        // Nothing: the data has not ended.
        assert_eq!(world.run(&mut session), "", "{smuggle:?}");
        session.feed(b".\r\nNOOP\r\n");
        assert_eq!(
            world.run(&mut session),
            "554 5.6.0 Message contains a bare LF or CR; lines must end with CRLF (RFC 5322 section 2.3)\r\n250 2.0.0 OK\r\n",
            "{smuggle:?}"
        );
        assert!(world.delivered.is_empty(), "{smuggle:?}");
    }
}

/// An inbound session under `limits`, inside DATA of one transaction.
fn inbound_in_data(limits: SmtpLimits) -> (World, Session) {
    let mut world = World::new();
    let mut session = Session::new(
        config(Mode::Inbound, "mx.example.com", limits),
        client(false, false),
        "s1".into(),
    );
    world.run(&mut session);
    session.feed(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n");
    world.run(&mut session);
    (world, session)
}

#[test]
fn header_flood_is_refused() {
    let (mut world, mut session) = inbound_in_data(SmtpLimits {
        max_headers: 50,
        ..SmtpLimits::default()
    });
    let headers: String = (0..51).map(|i| format!("X-H{i}: v\r\n")).collect();
    session.feed(format!("{headers}\r\nbody\r\n.\r\n").as_bytes());
    assert_eq!(
        world.run(&mut session),
        "552 5.3.4 Message has too many header fields\r\n"
    );
    assert!(world.delivered.is_empty());
}

#[test]
fn a_looping_message_is_refused() {
    let (mut world, mut session) = inbound_in_data(SmtpLimits {
        max_received: 2,
        ..SmtpLimits::default()
    });
    let trace = "Received: from a by b\r\nreceived: from b by c\r\nRECEIVED: from c by d\r\n";
    session.feed(format!("{trace}Subject: s\r\n\r\nbody\r\n.\r\n").as_bytes());
    assert_eq!(
        world.run(&mut session),
        "554 5.4.6 Too many Received fields: the message is looping\r\n"
    );
    assert!(world.delivered.is_empty());
}

#[test]
fn shutdown_between_and_inside_transactions() {
    // Idle between transactions: 421 at once.
    let mut world = World::new();
    let mut session = inbound("mx.example.com");
    world.run(&mut session);
    session.feed(b"EHLO c\r\n");
    world.run(&mut session);
    session.shutdown();
    assert_eq!(
        world.run(&mut session),
        "421 4.3.2 mx.example.com Service shutting down, closing connection\r\n"
    );
    assert!(world.closed);

    // Inside a transaction: it finishes, then the next command gets 421.
    let mut world = World::new();
    let mut session = inbound("mx.example.com");
    world.run(&mut session);
    session.feed(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\n");
    world.run(&mut session);
    session.shutdown();
    assert_eq!(world.run(&mut session), "");
    session.feed(b"RCPT TO:<alice@example.com>\r\nDATA\r\n");
    assert!(
        world
            .run(&mut session)
            .ends_with("354 Start mail input; end with <CRLF>.<CRLF>\r\n")
    );
    session.feed(b"Subject: last\r\n\r\nx\r\n.\r\nMAIL FROM:<a@b.example>\r\n");
    assert_eq!(
        world.run(&mut session),
        "250 2.0.0 OK id=s1-1 message stored\r\n421 4.3.2 mx.example.com Service shutting down, closing connection\r\n"
    );
    assert_eq!(world.delivered.len(), 1);
    assert!(world.closed);
}

#[test]
fn timeouts() {
    let mut world = World::new();
    let mut session = inbound("mx.example.com");
    world.run(&mut session);
    session.timed_out(Timeout::Idle);
    assert_eq!(
        world.run(&mut session),
        "421 4.4.2 mx.example.com Idle timeout, closing connection\r\n"
    );
    assert!(world.closed);
}

#[test]
fn odds_and_ends() {
    let mut world = World::new();
    let mut session = inbound("mx.example.com");
    replay(
        &mut session,
        &mut world,
        "
        S: 220 *
        C: MAIL FROM:<a@b.example>
        S: 503 5.5.1 Send EHLO or HELO first
        C: EHLO c
        S: 250-*
        S: 250-*
        S: 250-*
        S: 250-*
        S: 250-*
        S: 250-*
        S: 250-*
        S: 250 *
        C: VRFY alice
        S: 252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery
        C: EXPN staff
        S: 502 5.5.1 EXPN is not available
        C: HELP
        S: 214 2.0.0 *
        C: NOOP
        S: 250 2.0.0 OK
        C: ETRN example.com
        S: 502 5.5.1 Command not implemented
        C: MAIL FROM:<a@b.example>
        C: MAIL FROM:<a@b.example>
        S: 250 2.1.0 Sender OK
        S: 503 5.5.1 Nested MAIL command
        C: RCPT TO:<slow@example.com>
        S: 451 4.3.0 <slow@example.com> Temporary lookup failure, try again later
        C: RCPT TO:<postmaster>
        S: 250 2.1.5 <postmaster@mx.example.com> Recipient OK
        C: RCPT TO:alice@example.com
        S: 501 5.5.4 Syntax: RCPT TO:<forward-path> [parameters]
        C: DATA
        S: 354 *
        C: .
        S: 250 2.0.0 OK id=s1-1 message stored
        C: GET / HTTP/1.1
        S: 421 4.7.0 This is an SMTP server; closing connection
        ",
    );
    assert!(world.closed);
    // An empty message is stored as just our trace fields.
    assert_eq!(client_part(&world.delivered[0]), "");
}

#[test]
fn quota_outcomes() {
    let mut world = World::new();
    world.delivery_outcome = DeliveryOutcome::MailboxFull;
    let mut session = inbound("mx.example.com");
    world.run(&mut session);
    session.feed(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n");
    world.run(&mut session);
    session.feed(b"Subject: x\r\n\r\nx\r\n.\r\n");
    assert_eq!(
        world.run(&mut session),
        "552 5.2.2 Mailbox full: the recipient is over quota\r\n"
    );
    world.delivery_outcome = DeliveryOutcome::PartiallyStored;
    session.feed(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<team@example.com>\r\nDATA\r\n");
    world.run(&mut session);
    session.feed(b"Subject: x\r\n\r\nx\r\n.\r\n");
    assert_eq!(
        world.run(&mut session),
        "250 2.0.0 OK id=s1-2 message stored\r\n"
    );
    world.delivery_outcome = DeliveryOutcome::TemporaryFailure;
    session.feed(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<team@example.com>\r\nDATA\r\n");
    world.run(&mut session);
    session.feed(b"Subject: x\r\n\r\nx\r\n.\r\n");
    assert_eq!(
        world.run(&mut session),
        "451 4.3.0 Temporary failure storing the message, try again later\r\n"
    );
}

/// Regression: a HELO name that tries to add a header line.
#[test]
fn helo_name_cannot_forge_headers() {
    let mut world = World::new();
    let mut session = inbound("mx.example.com");
    world.run(&mut session);
    session.feed(b"EHLO evil\rX-Injected:yes\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n");
    world.run(&mut session);
    session.feed(b"Subject: x\r\n\r\nx\r\n.\r\n");
    world.run(&mut session);
    let stored = text(&world.delivered[0]);
    // smtp-proto drops the lone CR, so the name is odd but harmless: it
    // cannot start a header line of its own.
    assert!(!stored.contains("\nX-Injected"), "{stored}");
    assert!(
        stored.contains("Received: from evilX-Injected:yes ([192.0.2.1])"),
        "{stored}"
    );

    session.feed(
        b"EHLO bad;name(x)\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n",
    );
    world.run(&mut session);
    session.feed(b"Subject: x\r\n\r\nx\r\n.\r\n");
    world.run(&mut session);
    let stored = text(&world.delivered[1]);
    assert!(
        stored.contains("Received: from invalid ([192.0.2.1])"),
        "{stored}"
    );
}

#[test]
fn input_in_any_cuts_gives_the_same_replies() {
    let wire = "EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\nSubject: x\r\n\r\n..hi\r\n.\r\nBDAT 3\r\nabcRSET\r\nQUIT\r\n";
    let reference = {
        let mut world = World::new();
        let mut session = inbound("mx.example.com");
        session.feed(wire.as_bytes());
        let out = world.run(&mut session);
        (out, world.delivered)
    };
    for size in [1, 2, 3, 7, 13] {
        let mut world = World::new();
        let mut session = inbound("mx.example.com");
        let mut out = String::new();
        for piece in wire.as_bytes().chunks(size) {
            session.feed(piece);
            out.push_str(&world.run(&mut session));
        }
        assert_eq!(out, reference.0, "pieces of {size}");
        assert_eq!(world.delivered, reference.1, "pieces of {size}");
    }
}

#[test]
fn fuzz_entry_point_survives_hostile_input() {
    let mut inputs: Vec<Vec<u8>> = vec![
        b"EHLO x\r\nAUTH PLAIN AGFAZXhhbXBsZS5jb20AeA==\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nBDAT 18446744073709551615 LAST\r\n".to_vec(),
        b"EHLO x\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n\r\n.\r\n".to_vec(),
        b"STARTTLS\r\nSTARTTLS\r\nAUTH LOGIN\r\n\r\n\r\n".to_vec(),
        vec![b'\n'; 5000],
        vec![b'A'; 20_000],
    ];
    // A deterministic pseudo-random stream over SMTP-ish tokens.
    let tokens: [&[u8]; 14] = [
        b"EHLO x\r\n",
        b"MAIL FROM:<a@example.com>\r\n",
        b"RCPT TO:<b@example.com>\r\n",
        b"DATA\r\n",
        b"BDAT 5\r\n",
        b"BDAT 2 LAST\r\n",
        b".\r\n",
        b"\r\n",
        b"\n",
        b"\r",
        b"AUTH PLAIN\r\n",
        b"RSET\r\n",
        b"From: a@example.com\r\n",
        b"STARTTLS\r\n",
    ];
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..200 {
        let mut input = Vec::new();
        for _ in 0..40 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            input.extend_from_slice(tokens[(state % tokens.len() as u64) as usize]);
        }
        inputs.push(input);
    }
    for input in inputs {
        bulwark_smtp::fuzz_session(&input);
    }
}

/// RFC 6531: UTF-8 envelope addresses and headers pass through, and the
/// Received field says UTF8SMTP. Recipients must still be addresses our
/// directory can hold (ASCII for now).
#[test]
fn smtputf8_is_recorded() {
    let mut world = World::new();
    let mut session = inbound("mx.example.com");
    replay(
        &mut session,
        &mut world,
        "
        S: 220 *
        C: EHLO client.example
        S: 250-*
        S: 250-*
        S: 250-*
        S: 250-*
        S: 250-SMTPUTF8
        S: 250-*
        S: 250-*
        S: 250 *
        C: MAIL FROM:<josé@other.example> SMTPUTF8 BODY=8BITMIME
        C: RCPT TO:<jösé@example.com>
        C: RCPT TO:<alice@example.com>
        C: DATA
        S: 250 2.1.0 Sender OK
        S: 501 5.1.3 Bad recipient address syntax
        S: 250 2.1.5 <alice@example.com> Recipient OK
        S: 354 *
        C: From: José <josé@other.example>
        C: Subject: café
        C:
        C: ¡Hola!
        C: .
        S: 250 2.0.0 OK id=s1-1 message stored
        ",
    );
    let stored = text(&world.delivered[0]);
    assert!(
        stored.starts_with("Return-Path: <josé@other.example>\r\n"),
        "{stored}"
    );
    assert!(stored.contains(" with UTF8SMTP id s1-1\r\n"), "{stored}");
    assert!(
        stored.ends_with("Subject: café\r\n\r\n¡Hola!\r\n"),
        "{stored}"
    );
}

/// A Sender: field naming someone else is a spoof too.
#[test]
fn submission_sender_field_must_be_the_user() {
    let (mut session, mut world) = authenticated_submission();
    replay(
        &mut session,
        &mut world,
        "
        C: MAIL FROM:<alice@example.com>
        C: RCPT TO:<bob@example.com>
        C: DATA
        S: 250 2.1.0 Sender OK
        S: 250 2.1.5 *
        S: 354 *
        C: From: alice@example.com
        C: Sender: ceo@example.com
        C:
        C: x
        C: .
        S: 550 5.7.1 Sender: <ceo@example.com> is not one of your addresses
        ",
    );
    assert!(world.delivered.is_empty());
}
