//! POP3 end to end: Python's `poplib` as an independent client, and a raw
//! client for hostile input, STLS injection, rate limits, durability of
//! QUIT and sessions running next to IMAP on the same Inbox.
//!
//! The IMAP fixture from `common` provides the store, users and
//! certificate; a second server on the same directory runs the POP3
//! handler on `pop3` and `pop3s`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bulwark_core::{MailboxRole, PrincipalId};
use bulwark_imap::{Pop3Handler, Pop3Limits};
use bulwark_server::{ListenerConfig, Metrics, Protocol, Server, ServerOptions};
use common::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

struct Pop3 {
    fx: Fixture,
    plain: SocketAddr,
    tls: SocketAddr,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

async fn start_pop3(limits: Pop3Limits) -> Pop3 {
    start_pop3_with(limits, 100).await
}

async fn start_pop3_with(limits: Pop3Limits, max_connections_per_ip: u32) -> Pop3 {
    let fx = start().await;
    let dir = fx.dir.path();
    let server_tls =
        bulwark_server::tls::load_server_config(&dir.join("cert.pem"), &dir.join("key.pem"))
            .unwrap();
    let options = ServerOptions {
        max_connections: 100,
        max_connections_per_ip,
        idle_timeout: Duration::from_secs(30),
        tls_handshake_timeout: Duration::from_secs(5),
        shutdown_grace: Duration::from_secs(2),
    };
    let mut server = Server::new(options, Some(server_tls), Arc::new(Metrics::new()));
    let handler = Arc::new(Pop3Handler::new(fx.directory.clone(), limits));
    server.register(Protocol::Pop3, handler.clone());
    server.register(Protocol::Pop3s, handler);
    let listeners = [Protocol::Pop3, Protocol::Pop3s].map(|protocol| ListenerConfig {
        protocol,
        bind: "127.0.0.1:0".parse().unwrap(),
    });
    let bound = server.bind(&listeners).await.unwrap();
    let addrs = bound.local_addrs();
    let find = |p: Protocol| addrs.iter().find(|(q, _)| *q == p).unwrap().1;
    let (plain, tls) = (find(Protocol::Pop3), find(Protocol::Pop3s));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(bound.serve(async move {
        let _ = rx.await;
    }));
    Pop3 {
        fx,
        plain,
        tls,
        _shutdown: tx,
    }
}

/// A raw POP3 client.
struct Pop {
    io: BufReader<Box<dyn Io>>,
}

impl Pop {
    fn new(io: Box<dyn Io>) -> Pop {
        Pop {
            io: BufReader::new(io),
        }
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.unwrap();
        self.io.get_mut().flush().await.unwrap();
    }

    /// One line without CRLF; "<EOF>" when the server closed.
    async fn line(&mut self) -> String {
        let mut line = Vec::new();
        let n = tokio::time::timeout(SOON, self.io.read_until(b'\n', &mut line))
            .await
            .expect("no reply in time")
            .unwrap_or(0);
        if n == 0 {
            return "<EOF>".into();
        }
        assert!(line.ends_with(b"\r\n"), "{line:?}");
        line.truncate(line.len() - 2);
        String::from_utf8(line).unwrap()
    }

    async fn cmd(&mut self, command: &str) -> String {
        self.write(format!("{command}\r\n").as_bytes()).await;
        self.line().await
    }

    /// The lines of a multi-line body after its status line, undoing
    /// byte-stuffing; stops at the terminating ".".
    async fn body(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self.line().await;
            assert_ne!(line, "<EOF>");
            if line == "." {
                return lines;
            }
            lines.push(line.strip_prefix('.').map_or(line.clone(), str::to_string));
        }
    }

    /// Reads until the server closes the connection.
    async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        matches!(
            tokio::time::timeout(SOON, self.io.read_to_end(&mut rest)).await,
            Ok(Ok(_)) | Ok(Err(_))
        )
    }

    fn into_inner(self) -> Box<dyn Io> {
        self.io.into_inner()
    }
}

impl Pop3 {
    async fn plain(&self) -> Pop {
        let tcp = TcpStream::connect(self.plain).await.unwrap();
        let mut c = Pop::new(Box::new(tcp));
        assert_eq!(c.line().await, "+OK Bulwark POP3 ready");
        c
    }

    async fn tls(&self) -> Pop {
        let tcp = TcpStream::connect(self.tls).await.unwrap();
        let mut c = Pop::new(upgrade(&self.fx, Box::new(tcp)).await);
        assert_eq!(c.line().await, "+OK Bulwark POP3 ready");
        c
    }

    async fn login(&self, user: &str) -> Pop {
        let mut c = self.tls().await;
        assert_eq!(c.cmd(&format!("USER {user}")).await, "+OK send PASS");
        let reply = c.cmd(&format!("PASS {PASSWORD}")).await;
        assert!(reply.starts_with("+OK maildrop has"), "{reply}");
        c
    }

    async fn inbox(&self, account: PrincipalId) -> Vec<bulwark_store::MessageEntry> {
        let store = self.fx.store.clone();
        tokio::task::spawn_blocking(move || {
            let inbox = store
                .mailboxes(account)
                .unwrap()
                .into_iter()
                .find(|m| m.role == Some(MailboxRole::Inbox))
                .unwrap();
            store.messages(account, inbox.id).unwrap()
        })
        .await
        .unwrap()
    }
}

async fn upgrade(fx: &Fixture, io: Box<dyn Io>) -> Box<dyn Io> {
    let connector = tokio_rustls::TlsConnector::from(fx.client_tls.clone());
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    Box::new(connector.connect(name, io).await.unwrap())
}

/// The project's virtualenv when there is one, else the system Python.
fn python() -> PathBuf {
    if let Ok(p) = std::env::var("BULWARK_PYTHON") {
        return p.into();
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    if venv.exists() {
        venv
    } else {
        "python3".into()
    }
}

/// A message with lines that need byte-stuffing.
const DOTTED: &[u8] = b"From: Carol <carol@example.org>\r\nTo: alice@example.com\r\nSubject: Dots\r\nMessage-ID: <dots@example.org>\r\n\r\nFirst line\r\n.leading dot\r\n..two dots\r\n.\r\nafter a lone dot\r\n-- \r\n.sig\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_poplib_full_session() {
    let pop = start_pop3(Pop3Limits::default()).await;
    let fx = &pop.fx;
    fx.deliver(fx.alice, DOTTED).await;
    fx.deliver(fx.alice, MESSAGE).await;
    let m1 = fx.dir.path().join("m1.eml");
    let m2 = fx.dir.path().join("m2.eml");
    std::fs::write(&m1, DOTTED).unwrap();
    std::fs::write(&m2, MESSAGE).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/poplib_client.py");
    let args: Vec<String> = vec![
        script.display().to_string(),
        pop.plain.port().to_string(),
        pop.tls.port().to_string(),
        fx.cert_path.display().to_string(),
        ALICE.into(),
        PASSWORD.into(),
        m1.display().to_string(),
        m2.display().to_string(),
    ];
    let python = python();
    let output = tokio::task::spawn_blocking(move || Command::new(&python).args(&args).output())
        .await
        .unwrap()
        .expect("python3 must be installed to run the interoperability tests");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "poplib failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
    // DELE + QUIT removed message 1 from the store; RSET kept it before.
    let left = pop.inbox(fx.alice).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].size, MESSAGE.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stls_refuses_plaintext_passwords_and_drops_injected_commands() {
    let pop = start_pop3(Pop3Limits::default()).await;
    pop.fx.deliver(pop.fx.alice, MESSAGE).await;
    let mut c = pop.plain().await;
    let reply = c.cmd(&format!("USER {ALICE}")).await;
    assert!(reply.starts_with("-ERR [AUTH]"), "{reply}");
    let reply = c.cmd(&format!("PASS {PASSWORD}")).await;
    assert!(reply.starts_with("-ERR [AUTH]"), "{reply}");
    let ir = base64::engine::general_purpose::STANDARD.encode(format!("\0{ALICE}\0{PASSWORD}"));
    let reply = c.cmd(&format!("AUTH PLAIN {ir}")).await;
    assert!(reply.starts_with("-ERR [AUTH]"), "{reply}");
    assert!(c.cmd("STAT").await.starts_with("-ERR"));

    // STLS with a login pipelined behind it in the same packet: the
    // injected USER must not survive the handshake (RFC 2595 section 4).
    c.write(format!("STLS\r\nUSER {ALICE}\r\n").as_bytes())
        .await;
    assert_eq!(c.line().await, "+OK Begin TLS negotiation");
    let io = upgrade(&pop.fx, c.into_inner()).await;
    let mut c = Pop::new(io);
    assert_eq!(
        c.cmd(&format!("PASS {PASSWORD}")).await,
        "-ERR send USER first"
    );
    assert_eq!(c.cmd("STLS").await, "-ERR TLS already active");
    assert_eq!(c.cmd(&format!("USER {ALICE}")).await, "+OK send PASS");
    let reply = c.cmd(&format!("PASS {PASSWORD}")).await;
    assert_eq!(
        reply,
        format!("+OK maildrop has 1 messages ({} octets)", MESSAGE.len())
    );
    assert_eq!(
        c.cmd("QUIT").await,
        "+OK Bulwark POP3 server signing off (1 messages left)"
    );
    assert!(c.closed().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_plain_both_forms_and_bad_base64() {
    let pop = start_pop3(Pop3Limits::default()).await;
    let mut c = pop.tls().await;
    assert_eq!(
        c.cmd("AUTH PLAIN ***").await,
        "-ERR [AUTH] invalid base64 in SASL response"
    );
    assert_eq!(c.cmd("AUTH PLAIN").await, "+ ");
    assert_eq!(
        c.cmd("not base64!").await,
        "-ERR [AUTH] invalid base64 in SASL response"
    );
    // Acting as someone else is refused.
    let foreign =
        base64::engine::general_purpose::STANDARD.encode(format!("{BOB}\0{ALICE}\0{PASSWORD}"));
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {foreign}")).await,
        "-ERR [AUTH] authentication failed"
    );
    // Three failures: the session is closed.
    assert!(c.closed().await);

    let mut c = pop.tls().await;
    assert_eq!(c.cmd("AUTH PLAIN").await, "+ ");
    let msg = base64::engine::general_purpose::STANDARD.encode(format!("\0{BOB}\0{PASSWORD}"));
    assert_eq!(c.cmd(&msg).await, "+OK maildrop has 0 messages (0 octets)");
    assert_eq!(c.cmd("STAT").await, "+OK 0 0");

    let mut c = pop.tls().await;
    let msg =
        base64::engine::general_purpose::STANDARD.encode(format!("{ALICE}\0{ALICE}\0{PASSWORD}"));
    assert!(
        c.cmd(&format!("AUTH PLAIN {msg}"))
            .await
            .starts_with("+OK maildrop")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_feed_the_directory_ban_without_revealing_users() {
    let pop = start_pop3(Pop3Limits::default()).await;
    let mut replies = Vec::new();
    // The directory bans an account after five failures (LimitPolicy
    // default); each session allows three.
    for user in [ALICE, "nobody@example.com", ALICE, ALICE, ALICE, ALICE] {
        let mut c = pop.tls().await;
        assert_eq!(c.cmd(&format!("USER {user}")).await, "+OK send PASS");
        replies.push(c.cmd("PASS wrong password").await);
    }
    assert_eq!(replies[0], "-ERR [AUTH] authentication failed");
    assert_eq!(replies[1], replies[0], "unknown users look the same");
    // ALICE's fifth failure was the fifth reply for her account: banned now.
    let mut c = pop.tls().await;
    c.cmd(&format!("USER {ALICE}")).await;
    let reply = c.cmd(&format!("PASS {PASSWORD}")).await;
    assert!(reply.starts_with("-ERR [SYS/TEMP]"), "{reply}");
    // Bob is not affected.
    pop.login(BOB).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_answered_and_bounded() {
    let pop = start_pop3(Pop3Limits::default()).await;
    pop.fx.deliver(pop.fx.alice, MESSAGE).await;
    let mut c = pop.tls().await;
    // Commands in the wrong state.
    assert_eq!(
        c.cmd("RETR 1").await,
        "-ERR command not valid before authentication"
    );
    assert_eq!(
        c.cmd("DELE 1").await,
        "-ERR command not valid before authentication"
    );
    assert_eq!(c.cmd("PASS x").await, "-ERR send USER first");
    assert_eq!(c.cmd("XYZZY").await, "-ERR unknown command");
    // A line over the cap is refused; the session goes on.
    let long = format!("USER {}", "a".repeat(10_000));
    assert_eq!(c.cmd(&long).await, "-ERR line too long");
    assert_eq!(c.cmd(&format!("USER {ALICE}")).await, "+OK send PASS");
    assert!(c.cmd(&format!("PASS {PASSWORD}")).await.starts_with("+OK"));
    assert_eq!(c.cmd("USER x").await, "-ERR already authenticated");
    assert_eq!(
        c.cmd("RETR 999999999999999999").await,
        "-ERR no such message, only 1 messages in maildrop"
    );
    assert_eq!(c.cmd("TOP 1").await, "-ERR usage: TOP msg lines");
    assert_eq!(c.cmd("RETR \u{00e9}").await, "-ERR invalid message number");
    // An endless line: memory stays bounded and the session ends at the
    // bad-command limit (10), with nothing deleted.
    assert_eq!(c.cmd("DELE 1").await, "+OK message 1 deleted");
    let chunk = vec![b'x'; 64 * 1024];
    let mut writes = 0;
    while writes < 64 {
        if c.io.get_mut().write_all(&chunk).await.is_err() {
            break;
        }
        writes += 1;
    }
    let mut replies = Vec::new();
    loop {
        let line = c.line().await;
        if line == "<EOF>" {
            break;
        }
        replies.push(line);
    }
    assert_eq!(
        replies,
        ["-ERR line too long", "-ERR too many bad commands"]
    );
    assert_eq!(
        pop.inbox(pop.fx.alice).await.len(),
        1,
        "no UPDATE without QUIT"
    );
    // The server still serves everyone else.
    let mut c = pop.login(ALICE).await;
    assert_eq!(c.cmd("STAT").await, format!("+OK 1 {}", MESSAGE.len()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_commands_are_answered_in_order() {
    let pop = start_pop3(Pop3Limits::default()).await;
    pop.fx.deliver(pop.fx.alice, &message("one")).await;
    pop.fx.deliver(pop.fx.alice, &message("two")).await;
    let mut c = pop.tls().await;
    c.write(
        format!("CAPA\r\nUSER {ALICE}\r\nPASS {PASSWORD}\r\nSTAT\r\nLIST\r\nRETR 2\r\nTOP 1 0\r\nDELE 1\r\nUIDL\r\nQUIT\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(c.line().await, "+OK Capability list follows");
    let caps = c.body().await;
    assert!(caps.contains(&"PIPELINING".to_string()), "{caps:?}");
    assert_eq!(c.line().await, "+OK send PASS");
    assert!(c.line().await.starts_with("+OK maildrop has 2 messages"));
    let (one, two) = (message("one"), message("two"));
    assert_eq!(c.line().await, format!("+OK 2 {}", one.len() + two.len()));
    assert!(c.line().await.starts_with("+OK 2 messages"));
    assert_eq!(
        c.body().await,
        vec![format!("1 {}", one.len()), format!("2 {}", two.len())]
    );
    assert_eq!(c.line().await, format!("+OK {} octets", two.len()));
    let body = c.body().await;
    assert_eq!(body.join("\r\n") + "\r\n", String::from_utf8(two).unwrap());
    assert_eq!(c.line().await, "+OK top of message follows");
    let top = c.body().await;
    assert_eq!(top.last().map(String::as_str), Some(""), "{top:?}");
    assert!(top.contains(&"Subject: one".to_string()));
    assert_eq!(c.line().await, "+OK message 1 deleted");
    assert_eq!(c.line().await, "+OK unique-id listing follows");
    assert_eq!(c.body().await.len(), 1);
    assert_eq!(
        c.line().await,
        "+OK Bulwark POP3 server signing off (1 messages left)"
    );
    assert!(c.closed().await);
    let left = pop.inbox(pop.fx.alice).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].size, message("two").len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expunged_by_imap_while_a_pop3_session_holds_it() {
    let pop = start_pop3(Pop3Limits::default()).await;
    let fx = &pop.fx;
    fx.deliver(fx.alice, &message("one")).await;
    fx.deliver(fx.alice, &message("two")).await;
    fx.deliver(fx.alice, &message("three")).await;
    let mut p = pop.login(ALICE).await;
    assert_eq!(p.cmd("STAT").await.split(' ').nth(1), Some("3"));

    // Another session, over IMAP, expunges message 1 and 3 meanwhile.
    let mut imap = fx.login(ALICE).await;
    assert!(ok(&imap.run("SELECT INBOX").await));
    assert!(ok(&imap.run("STORE 1,3 +FLAGS (\\Deleted)").await));
    assert!(ok(&imap.run("EXPUNGE").await));

    // Numbers stay fixed; the vanished ones are refused, the rest served.
    assert_eq!(p.cmd("RETR 1").await, "-ERR no such message");
    assert_eq!(p.cmd("TOP 3 0").await, "-ERR no such message");
    assert!(p.cmd("RETR 2").await.starts_with("+OK"));
    let body = p.body().await;
    assert!(body.contains(&"Subject: two".to_string()), "{body:?}");
    // DELE of a vanished message and QUIT: fine, nothing else removed.
    assert_eq!(p.cmd("DELE 1").await, "+OK message 1 deleted");
    assert_eq!(
        p.cmd("QUIT").await,
        "+OK Bulwark POP3 server signing off (2 messages left)"
    );
    let left = pop.inbox(fx.alice).await;
    assert_eq!(left.len(), 1);

    // A message delivered during a session is not in its snapshot.
    let mut p = pop.login(ALICE).await;
    fx.deliver(fx.alice, &message("four")).await;
    assert_eq!(
        p.cmd("STAT").await,
        format!("+OK 1 {}", message("two").len())
    );
    assert!(p.cmd("RETR 2").await.starts_with("-ERR no such message"));
    // Two POP3 sessions deleting the same message: both QUITs succeed.
    let mut q = pop.login(ALICE).await;
    assert_eq!(p.cmd("DELE 1").await, "+OK message 1 deleted");
    assert_eq!(q.cmd("DELE 1").await, "+OK message 1 deleted");
    assert!(p.cmd("QUIT").await.starts_with("+OK"));
    assert!(q.cmd("QUIT").await.starts_with("+OK"));
    let left = pop.inbox(fx.alice).await;
    assert_eq!(left.len(), 1, "only the new message stays");
    assert_eq!(left[0].size, message("four").len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_see_only_their_own_inbox() {
    let pop = start_pop3(Pop3Limits::default()).await;
    pop.fx.deliver(pop.fx.alice, MESSAGE).await;
    let mut c = pop.login(BOB).await;
    assert_eq!(c.cmd("STAT").await, "+OK 0 0");
    assert!(c.cmd("RETR 1").await.starts_with("-ERR no such message"));
    assert_eq!(
        c.cmd("QUIT").await,
        "+OK Bulwark POP3 server signing off (maildrop empty)"
    );
    assert_eq!(pop.inbox(pop.fx.alice).await.len(), 1);
}

/// A session that ended with QUIT gives its connection slot back before
/// the goodbye, so a client at the per-address limit can reconnect as soon
/// as it reads it (as SMTP QUIT and IMAP LOGOUT do).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quit_frees_the_connection_slot_before_the_goodbye() {
    let pop = start_pop3_with(Pop3Limits::default(), 1).await;
    for _ in 0..5 {
        let mut c = pop.login(ALICE).await;
        let bye = c.cmd("QUIT").await;
        assert!(bye.starts_with("+OK"), "{bye}");
        // Still connected here; the next session must be let in at once.
    }
    let _held = pop.plain().await;
    let tcp = TcpStream::connect(pop.plain).await.unwrap();
    let mut refused = Pop::new(Box::new(tcp));
    let reply = refused.line().await;
    assert!(reply.starts_with("-ERR"), "the limit still holds: {reply}");
}
