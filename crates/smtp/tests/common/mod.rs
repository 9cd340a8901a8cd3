//! A running Bulwark SMTP server over a temporary store, for tests with
//! real clients (lettre, Python smtplib, swaks, raw sockets).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bulwark_audit::Actor;
use bulwark_core::{EmailAddress, MailboxRole, PrincipalId, PrincipalKind, Right};
use bulwark_directory::{Directory, LimitPolicy};
use bulwark_mail::LocalDelivery;
use bulwark_server::{ListenerConfig, Metrics, Protocol, Server, ServerOptions};
use bulwark_smtp::{Mode, SmtpHandler, SmtpLimits};
use bulwark_store::{Grant, NewPrincipal, SqliteBackend, SqliteOptions, Store};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Generous bound for anything that should happen "soon".
pub const SOON: Duration = Duration::from_secs(20);
pub const HOSTNAME: &str = "mx.example.com";
pub const ALICE_PW: &str = "alice's long password";
pub const BOB_PW: &str = "bob's long password!";

/// Options a test may change before the server starts.
pub struct Setup {
    pub options: ServerOptions,
    pub limits: SmtpLimits,
    pub policy: LimitPolicy,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            options: ServerOptions {
                max_connections: 100,
                max_connections_per_ip: 100,
                idle_timeout: Duration::from_secs(30),
                tls_handshake_timeout: Duration::from_secs(10),
                shutdown_grace: Duration::from_secs(10),
            },
            limits: SmtpLimits {
                max_message_size: 256 * 1024,
                max_recipients: 5,
                ..SmtpLimits::default()
            },
            policy: LimitPolicy::default(),
        }
    }
}

/// The principals the fixture creates.
#[derive(Debug, Clone, Copy)]
pub struct People {
    /// alice@example.com, alias a.smith@example.com.
    pub alice: PrincipalId,
    /// bob@example.com.
    pub bob: PrincipalId,
    /// carol@example.com.
    pub carol: PrincipalId,
    /// team@example.com: a group of alice, bob and the nested group
    /// leads@example.com (carol and bob).
    pub team: PrincipalId,
    /// shared@example.com: a shared mailbox that granted alice send-as.
    pub shared: PrincipalId,
    /// boss@example.com: granted alice send-on-behalf.
    pub boss: PrincipalId,
    /// full@example.com: a 1-byte quota.
    pub full: PrincipalId,
}

pub struct Fixture {
    pub store_dir: tempfile::TempDir,
    pub cert_dir: tempfile::TempDir,
    pub cert_path: PathBuf,
    pub cert_pem: Vec<u8>,
    pub store: Store,
    pub directory: Directory,
    pub people: People,
    pub addrs: HashMap<Protocol, SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

fn address(text: &str) -> EmailAddress {
    text.parse().unwrap()
}

impl Fixture {
    pub async fn start() -> Fixture {
        Fixture::start_with(Setup::default()).await
    }

    pub async fn start_with(setup: Setup) -> Fixture {
        let store_dir = tempfile::tempdir().unwrap();
        let store = Store::new(Arc::new(
            SqliteBackend::open(store_dir.path(), SqliteOptions::default()).unwrap(),
        ));
        let directory = Directory::new(store.clone(), setup.policy);
        let people = tokio::task::spawn_blocking({
            let directory = directory.clone();
            move || populate(&directory)
        })
        .await
        .unwrap();

        // A certificate for localhost and 127.0.0.1, so clients can verify
        // it whichever name they connect by.
        let generated =
            rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
                .unwrap();
        let cert_dir = tempfile::tempdir().unwrap();
        let cert_path = cert_dir.path().join("cert.pem");
        let key_path = cert_dir.path().join("key.pem");
        let cert_pem = generated.cert.pem().into_bytes();
        std::fs::write(&cert_path, &cert_pem).unwrap();
        std::fs::write(&key_path, generated.key_pair.serialize_pem()).unwrap();
        let tls = bulwark_server::tls::load_server_config(&cert_path, &key_path).unwrap();

        let delivery = LocalDelivery::new(directory.clone());
        let mut server = Server::new(setup.options, Some(tls), Arc::new(Metrics::new()));
        let inbound = SmtpHandler::new(
            Mode::Inbound,
            delivery.clone(),
            HOSTNAME,
            setup.limits.clone(),
        );
        let submission = Arc::new(SmtpHandler::new(
            Mode::Submission,
            delivery,
            HOSTNAME,
            setup.limits,
        ));
        server.register(Protocol::Smtp, Arc::new(inbound));
        server.register(Protocol::Submission, submission.clone());
        server.register(Protocol::Submissions, submission);
        let listeners: Vec<ListenerConfig> =
            [Protocol::Smtp, Protocol::Submission, Protocol::Submissions]
                .into_iter()
                .map(|protocol| ListenerConfig {
                    protocol,
                    bind: "127.0.0.1:0".parse().unwrap(),
                })
                .collect();
        let bound = server.bind(&listeners).await.unwrap();
        let addrs = bound.local_addrs().into_iter().collect();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(bound.serve(async move {
            let _ = stopped.await;
        }));
        Fixture {
            store_dir,
            cert_dir,
            cert_path,
            cert_pem,
            store,
            directory,
            people,
            addrs,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn port(&self, protocol: Protocol) -> u16 {
        self.addrs[&protocol].port()
    }

    pub fn addr(&self, protocol: Protocol) -> SocketAddr {
        self.addrs[&protocol]
    }

    /// Starts the server's shutdown (the task keeps running until the
    /// sessions end); returns the serve task.
    pub fn begin_shutdown(&mut self) -> JoinHandle<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.take().unwrap()
    }

    /// The raw messages in an account's Inbox, in UID order.
    pub fn inbox(&self, account: PrincipalId) -> Vec<Vec<u8>> {
        let Some(inbox) = self
            .store
            .mailboxes(account)
            .unwrap()
            .into_iter()
            .find(|m| m.role == Some(MailboxRole::Inbox))
        else {
            return Vec::new();
        };
        self.store
            .messages(account, inbox.id)
            .unwrap()
            .into_iter()
            .map(|m| self.store.read_blob(&m.blob).unwrap())
            .collect()
    }

    /// Messages stored in every account together.
    pub fn total_messages(&self) -> usize {
        let p = self.people;
        [p.alice, p.bob, p.carol, p.shared, p.boss, p.full]
            .into_iter()
            .map(|a| self.inbox(a).len())
            .sum()
    }

    /// Audit records with this operation.
    pub fn audit(&self, operation: &str) -> Vec<bulwark_audit::AuditRecord> {
        self.store
            .audit_tail(1000)
            .unwrap()
            .into_iter()
            .filter(|r| r.event.operation == operation)
            .collect()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn populate(directory: &Directory) -> People {
    let admin = Actor::local_admin("test");
    let store = directory.store();
    store
        .create_domain(&admin, &"example.com".parse().unwrap())
        .unwrap();
    let user = |addr: &str, pw: &str| {
        directory
            .add_user(&admin, &address(addr), addr, pw, 0)
            .unwrap()
    };
    let other = |addr: &str, kind: PrincipalKind, quota: u64| {
        store
            .create_principal(
                &admin,
                &NewPrincipal {
                    kind,
                    address: address(addr),
                    display_name: addr.to_string(),
                    password_hash: None,
                    quota_bytes: quota,
                },
            )
            .unwrap()
    };
    let alice = user("alice@example.com", ALICE_PW);
    let bob = user("bob@example.com", BOB_PW);
    let carol = user("carol@example.com", "carol's long password");
    let boss = user("boss@example.com", "the boss's long password");
    store
        .add_alias(&admin, alice, &address("a.smith@example.com"))
        .unwrap();
    let team = other("team@example.com", PrincipalKind::Group, 0);
    let leads = other("leads@example.com", PrincipalKind::Group, 0);
    directory.add_member(&admin, team, alice).unwrap();
    directory.add_member(&admin, team, bob).unwrap();
    directory.add_member(&admin, team, leads).unwrap();
    directory.add_member(&admin, leads, carol).unwrap();
    directory.add_member(&admin, leads, bob).unwrap();
    let shared = other("shared@example.com", PrincipalKind::Shared, 0);
    let full = other("full@example.com", PrincipalKind::Individual, 1);
    store
        .add_grant(
            &admin,
            &Grant {
                grantor: shared,
                grantee: alice,
                right: Right::SendAs,
            },
        )
        .unwrap();
    store
        .add_grant(
            &admin,
            &Grant {
                grantor: boss,
                grantee: alice,
                right: Right::SendOnBehalf,
            },
        )
        .unwrap();
    People {
        alice,
        bob,
        carol,
        team,
        shared,
        boss,
        full,
    }
}

/// Splits a stored message into the trace fields we added (Return-Path,
/// Received and, on submission, Date/Message-ID) and the client's bytes.
/// `added` names the extra fields expected after Received.
pub fn split_stored<'a>(stored: &'a [u8], added: &[&str]) -> (String, &'a [u8]) {
    let text = String::from_utf8_lossy(stored);
    assert!(text.starts_with("Return-Path: <"), "{text}");
    let mut pos = text.find("\r\n").unwrap() + 2;
    assert!(text[pos..].starts_with("Received: from "), "{text}");
    loop {
        let end = text[pos..].find("\r\n").unwrap() + pos + 2;
        pos = end;
        if !text[pos..].starts_with('\t') {
            break;
        }
    }
    for name in added {
        assert!(
            text[pos..].starts_with(&format!("{name}: ")),
            "expected an added {name} field at {pos}: {text}"
        );
        pos = text[pos..].find("\r\n").unwrap() + pos + 2;
    }
    (text[..pos].to_string(), &stored[pos..])
}

/// A line-oriented SMTP client for hostile sessions.
pub struct Raw {
    pub reader: BufReader<TcpStream>,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).await.unwrap();
        Raw {
            reader: BufReader::new(stream),
        }
    }

    /// Connects and reads the greeting.
    pub async fn open(addr: SocketAddr) -> Raw {
        let mut raw = Raw::connect(addr).await;
        let greeting = raw.reply().await;
        assert!(greeting.starts_with("220 "), "{greeting}");
        raw
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).await.unwrap();
    }

    /// Reads one reply (all its lines); "" on EOF.
    pub async fn reply(&mut self) -> String {
        tokio::time::timeout(SOON, self.read_reply())
            .await
            .expect("no reply in time")
    }

    async fn read_reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line).await {
                Ok(0) | Err(_) => return all,
                Ok(_) => {}
            }
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return all;
            }
        }
    }

    /// Sends a command and returns the reply.
    pub async fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// Waits for the server to close the connection; returns what it sent
    /// before.
    pub async fn until_closed(&mut self) -> String {
        let mut rest = String::new();
        tokio::time::timeout(SOON, self.reader.read_to_string(&mut rest))
            .await
            .expect("connection not closed in time")
            .ok();
        rest
    }

    /// Whether no reply byte arrives for `wait` (the connection closing
    /// without a word counts as silence).
    pub async fn silent_for(&mut self, wait: Duration) -> bool {
        let mut byte = [0u8; 1];
        match tokio::time::timeout(wait, self.reader.read(&mut byte)).await {
            Err(_) => true,
            Ok(Ok(n)) => n == 0,
            Ok(Err(_)) => true,
        }
    }
}

/// Whether a peer program is present. If it is not: fail when the
/// environment demands the peers (CI sets `BULWARK_REQUIRE_PEERS=1`),
/// otherwise print a note and let the test skip.
pub fn peer_available(program: &str) -> bool {
    let found = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        if std::env::var("BULWARK_REQUIRE_PEERS").as_deref() == Ok("1") {
            panic!("{program} is required (BULWARK_REQUIRE_PEERS=1) but not installed");
        }
        eprintln!("note: {program} is not installed; skipping this peer test");
    }
    found
}

/// Runs a program to completion on a blocking thread.
pub async fn run(program: &str, args: Vec<String>) -> std::process::Output {
    let program = program.to_string();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(&program)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// Runs a program with `input` on its standard input.
pub async fn run_with_input(
    program: &str,
    args: Vec<String>,
    input: String,
) -> std::process::Output {
    use std::io::Write as _;
    let program = program.to_string();
    tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new(&program)
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        // A child that exits without reading all of it is its own failure,
        // reported through its output.
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        });
        let output = child.wait_with_output().unwrap();
        writer.join().unwrap();
        output
    })
    .await
    .unwrap()
}
