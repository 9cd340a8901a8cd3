//! Test fixtures: a store with two users, a running server with the IMAP
//! handler on `imap` and `imaps`, and a small raw IMAP client.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bulwark_audit::Actor;
use bulwark_core::{DomainName, EmailAddress, PrincipalId};
use bulwark_directory::{Directory, LimitPolicy};
use bulwark_imap::{ImapHandler, Limits};
use bulwark_mail::LocalDelivery;
use bulwark_server::{ListenerConfig, Metrics, Protocol, Server, ServerOptions};
use bulwark_store::{SqliteBackend, SqliteOptions, Store};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Generous bound for anything that should happen "soon".
pub const SOON: Duration = Duration::from_secs(10);

pub const ALICE: &str = "alice@example.com";
pub const BOB: &str = "bob@example.com";
pub const PASSWORD: &str = "correct horse battery";

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub store: Store,
    pub directory: Directory,
    pub delivery: LocalDelivery,
    pub alice: PrincipalId,
    pub bob: PrincipalId,
    pub imap: SocketAddr,
    pub imaps: SocketAddr,
    pub cert_path: PathBuf,
    pub client_tls: Arc<rustls::ClientConfig>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

pub async fn start() -> Fixture {
    start_with(Duration::from_secs(30), Limits::default()).await
}

pub async fn start_with(idle_timeout: Duration, limits: Limits) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let backend = SqliteBackend::open(&dir.path().join("data"), SqliteOptions::default()).unwrap();
    let store = Store::new(Arc::new(backend));
    let directory = Directory::new(store.clone(), LimitPolicy::default());
    let admin = Actor::local_admin("test");
    let domain: DomainName = "example.com".parse().unwrap();
    store.create_domain(&admin, &domain).unwrap();
    let alice = directory
        .add_user(
            &admin,
            &ALICE.parse::<EmailAddress>().unwrap(),
            "Alice",
            PASSWORD,
            0,
        )
        .unwrap();
    let bob = directory
        .add_user(
            &admin,
            &BOB.parse::<EmailAddress>().unwrap(),
            "Bob",
            PASSWORD,
            0,
        )
        .unwrap();
    let delivery = LocalDelivery::new(directory.clone());

    let generated = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, generated.cert.pem()).unwrap();
    std::fs::write(&key_path, generated.key_pair.serialize_pem()).unwrap();
    let server_tls = bulwark_server::tls::load_server_config(&cert_path, &key_path).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(generated.cert.der().clone()).unwrap();
    let client_tls = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );

    let options = ServerOptions {
        max_connections: 100,
        max_connections_per_ip: 100,
        idle_timeout,
        tls_handshake_timeout: Duration::from_secs(5),
        shutdown_grace: Duration::from_secs(2),
    };
    let mut server = Server::new(options, Some(server_tls), Arc::new(Metrics::new()));
    let handler = Arc::new(ImapHandler::new(directory.clone(), limits));
    server.register(Protocol::Imap, handler.clone());
    server.register(Protocol::Imaps, handler);
    let listeners = [
        ListenerConfig {
            protocol: Protocol::Imap,
            bind: "127.0.0.1:0".parse().unwrap(),
        },
        ListenerConfig {
            protocol: Protocol::Imaps,
            bind: "127.0.0.1:0".parse().unwrap(),
        },
    ];
    let bound = server.bind(&listeners).await.unwrap();
    let addrs = bound.local_addrs();
    let find = |p: Protocol| addrs.iter().find(|(q, _)| *q == p).unwrap().1;
    let (imap, imaps) = (find(Protocol::Imap), find(Protocol::Imaps));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(bound.serve(async move {
        let _ = rx.await;
    }));
    Fixture {
        dir,
        store,
        directory,
        delivery,
        alice,
        bob,
        imap,
        imaps,
        cert_path,
        client_tls,
        _shutdown: tx,
    }
}

impl Fixture {
    /// Delivers a message to an account's Inbox as SMTP would.
    pub async fn deliver(&self, account: PrincipalId, raw: &[u8]) {
        let delivery = self.delivery.clone();
        let raw = raw.to_vec();
        tokio::task::spawn_blocking(move || {
            let report = delivery
                .deliver(&raw, &[account], 1_751_364_000_000)
                .unwrap();
            assert_eq!(report.delivered.len(), 1);
        })
        .await
        .unwrap();
    }

    /// A TLS session on `imaps`, greeting read.
    pub async fn tls(&self) -> Client {
        let tcp = TcpStream::connect(self.imaps).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&self.client_tls));
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        let mut client = Client::new(Box::new(tls));
        let greeting = client.line().await;
        assert!(greeting.starts_with("* OK"), "{greeting}");
        client
    }

    /// A plaintext session on `imap`, greeting returned.
    pub async fn plain(&self) -> (Client, String) {
        let tcp = TcpStream::connect(self.imap).await.unwrap();
        let mut client = Client::new(Box::new(tcp));
        let greeting = client.line().await;
        (client, greeting)
    }

    /// A logged-in TLS session.
    pub async fn login(&self, user: &str) -> Client {
        let mut client = self.tls().await;
        let reply = client.run(&format!("LOGIN {user} \"{PASSWORD}\"")).await;
        assert!(reply.last().unwrap().contains("OK"), "{reply:?}");
        client
    }
}

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A minimal IMAP client: sends lines, reads responses with literals.
pub struct Client {
    io: BufReader<Box<dyn Io>>,
    next_tag: u32,
}

impl Client {
    pub fn new(io: Box<dyn Io>) -> Client {
        Client {
            io: BufReader::new(io),
            next_tag: 1,
        }
    }

    pub fn into_inner(self) -> Box<dyn Io> {
        self.io.into_inner()
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.unwrap();
        self.io.get_mut().flush().await.unwrap();
    }

    /// One response line with any literals inlined; "" at EOF.
    pub async fn line(&mut self) -> String {
        tokio::time::timeout(SOON, self.line_inner())
            .await
            .expect("no response in time")
    }

    /// Like `line` but `None` if nothing arrives within `wait`.
    pub async fn line_within(&mut self, wait: Duration) -> Option<String> {
        tokio::time::timeout(wait, self.line_inner()).await.ok()
    }

    async fn line_inner(&mut self) -> String {
        let mut out = Vec::new();
        loop {
            let mut line = Vec::new();
            if self.io.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
                return String::from_utf8_lossy(&out).into_owned();
            }
            out.extend_from_slice(&line);
            let text = String::from_utf8_lossy(&line).into_owned();
            let trimmed = text.trim_end();
            let literal = trimmed
                .strip_suffix('}')
                .and_then(|t| t.rsplit_once('{'))
                .and_then(|(_, n)| n.parse::<usize>().ok());
            match literal {
                Some(n) => {
                    let mut data = vec![0; n];
                    self.io.read_exact(&mut data).await.unwrap();
                    out.extend_from_slice(&data);
                }
                None => return String::from_utf8_lossy(&out).into_owned(),
            }
        }
    }

    /// Sends `tag command` and returns every line up to the tagged one.
    pub async fn run(&mut self, command: &str) -> Vec<String> {
        let tag = format!("t{}", self.next_tag);
        self.next_tag += 1;
        self.write(format!("{tag} {command}\r\n").as_bytes()).await;
        self.until(&tag).await
    }

    /// Reads lines until the one tagged `tag`.
    pub async fn until(&mut self, tag: &str) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self.line().await;
            if line.is_empty() {
                lines.push("<EOF>".into());
                return lines;
            }
            let done = line.starts_with(&format!("{tag} "));
            lines.push(line);
            if done {
                return lines;
            }
        }
    }
}

/// Whether the last line is a tagged OK.
pub fn ok(lines: &[String]) -> bool {
    lines
        .last()
        .is_some_and(|l| l.split(' ').nth(1) == Some("OK"))
}

pub fn joined(lines: &[String]) -> String {
    lines.concat()
}

pub const MESSAGE: &[u8] = b"From: Carol <carol@example.org>\r\nTo: alice@example.com\r\nSubject: Quarterly report\r\nDate: Tue, 1 Jul 2025 10:00:00 +0000\r\nMessage-ID: <q1@example.org>\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nNumbers are up.\r\n--b1\r\nContent-Type: text/csv; name=\"q.csv\"\r\nContent-Disposition: attachment; filename=\"q.csv\"\r\n\r\na,b\r\n1,2\r\n--b1--\r\n";

pub fn message(subject: &str) -> Vec<u8> {
    format!("From: Dave <dave@example.org>\r\nTo: alice@example.com\r\nSubject: {subject}\r\n\r\nHello {subject}\r\n").into_bytes()
}
