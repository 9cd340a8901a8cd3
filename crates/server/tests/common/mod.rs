//! Test fixtures: a line protocol handler, certificates, a running server.

#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bulwark_config::{ListenerConfig, Protocol};
use bulwark_server::{BoundServer, Connection, ConnectionHandler, Server, ServerOptions};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Generous bound for anything that should happen "soon".
pub const SOON: Duration = Duration::from_secs(10);

pub fn options() -> ServerOptions {
    ServerOptions {
        max_connections: 100,
        max_connections_per_ip: 100,
        idle_timeout: Duration::from_secs(30),
        tls_handshake_timeout: Duration::from_secs(5),
        shutdown_grace: Duration::from_secs(10),
    }
}

pub fn listener(protocol: Protocol) -> ListenerConfig {
    ListenerConfig {
        protocol,
        bind: "127.0.0.1:0".parse().unwrap(),
    }
}

/// A self-signed certificate for `localhost`, on disk and as configs.
pub struct TestCert {
    pub dir: tempfile::TempDir,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub server: Arc<rustls::ServerConfig>,
    pub client: Arc<rustls::ClientConfig>,
}

pub fn test_cert() -> TestCert {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, generated.cert.pem()).unwrap();
    std::fs::write(&key_path, generated.key_pair.serialize_pem()).unwrap();
    let server = bulwark_server::tls::load_server_config(&cert_path, &key_path).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(generated.cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    TestCert {
        dir,
        cert_path,
        key_path,
        server,
        client: Arc::new(client),
    }
}

pub async fn tls_connect<S: AsyncRead + AsyncWrite + Unpin>(
    client: &Arc<rustls::ClientConfig>,
    stream: S,
) -> io::Result<tokio_rustls::client::TlsStream<S>> {
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(client));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, stream).await
}

/// The test protocol. The server greets with `HELLO <protocol> tls=<bool>`,
/// then answers one line per command:
///
/// * `PING` → `PONG`
/// * `STARTTLS` → `GO`, then a TLS handshake and a new greeting; or `NOTLS`
/// * `SLOW <ms>` → `WORKING`, then after `<ms>` (ignoring shutdown) `DONE`
/// * `PANIC` → the handler panics
/// * `QUIT` → `BYE`, close
///
/// While waiting for a command it watches the shutdown signal and says
/// `SHUTDOWN` before closing. A read error (idle timeout) closes silently.
pub struct LineHandler;

pub const BUSY: &[u8] = b"BUSY try later\r\n";

impl ConnectionHandler for LineHandler {
    fn handle(&self, conn: Connection) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        Box::pin(line_session(conn))
    }

    fn busy_reply(&self) -> Option<&'static [u8]> {
        Some(BUSY)
    }
}

/// Reads one line byte by byte, so nothing is buffered past it.
async fn read_line<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    loop {
        let mut byte = [0u8];
        if stream.read(&mut byte).await? == 0 {
            return Ok(None);
        }
        if byte[0] == b'\n' {
            let text = String::from_utf8_lossy(&line)
                .trim_end_matches('\r')
                .to_owned();
            return Ok(Some(text));
        }
        line.push(byte[0]);
    }
}

async fn greet(conn: &mut Connection) -> io::Result<()> {
    let hello = format!(
        "HELLO {} tls={}\r\n",
        conn.info.protocol.name(),
        conn.info.tls
    );
    conn.stream.write_all(hello.as_bytes()).await
}

async fn line_session(mut conn: Connection) {
    if greet(&mut conn).await.is_err() {
        return;
    }
    loop {
        let line = tokio::select! {
            line = read_line(&mut conn.stream) => line,
            () = conn.shutdown.wait() => {
                let _ = conn.stream.write_all(b"SHUTDOWN\r\n").await;
                return;
            }
        };
        let Ok(Some(line)) = line else { return };
        let reply: String = match line.as_str() {
            "PING" => "PONG".into(),
            "QUIT" => {
                let _ = conn.stream.write_all(b"BYE\r\n").await;
                return;
            }
            "PANIC" => panic!("test handler asked to panic"),
            "LINGER" => {
                // Ends the session but keeps the socket a while, as a
                // server still closing does.
                conn.release_slot();
                let _ = conn.stream.write_all(b"BYE\r\n").await;
                tokio::time::sleep(Duration::from_millis(1500)).await;
                return;
            }
            "STARTTLS" => {
                if !conn.tls_available() {
                    "NOTLS".into()
                } else {
                    if conn.stream.write_all(b"GO\r\n").await.is_err() {
                        return;
                    }
                    conn = match conn.start_tls().await {
                        Ok(conn) => conn,
                        Err(_) => return,
                    };
                    if greet(&mut conn).await.is_err() {
                        return;
                    }
                    continue;
                }
            }
            other => match other
                .strip_prefix("SLOW ")
                .and_then(|ms| ms.parse::<u64>().ok())
            {
                Some(ms) => {
                    if conn.stream.write_all(b"WORKING\r\n").await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    "DONE".into()
                }
                None => "ERR".into(),
            },
        };
        if conn
            .stream
            .write_all(format!("{reply}\r\n").as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// A server serving in a task, with its shutdown trigger.
pub struct Running {
    pub addrs: Vec<(Protocol, SocketAddr)>,
    trigger: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<()>,
}

impl Running {
    pub fn addr(&self, protocol: Protocol) -> SocketAddr {
        self.addrs
            .iter()
            .find(|(p, _)| *p == protocol)
            .map(|(_, a)| *a)
            .unwrap()
    }

    pub fn shutdown(&mut self) {
        if let Some(trigger) = self.trigger.take() {
            let _ = trigger.send(());
        }
    }

    /// Triggers shutdown and waits for `serve` to return.
    pub async fn stop(mut self) {
        self.shutdown();
        tokio::time::timeout(SOON * 3, self.task)
            .await
            .expect("serve returns")
            .unwrap();
    }
}

pub async fn start(server: Server, listeners: &[ListenerConfig]) -> Running {
    let bound: BoundServer = server.bind(listeners).await.unwrap();
    let addrs = bound.local_addrs();
    let (trigger, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(bound.serve(async move {
        let _ = rx.await;
    }));
    Running {
        addrs,
        trigger: Some(trigger),
        task,
    }
}

/// A plain test-protocol client.
pub struct Client<S> {
    pub stream: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    pub fn new(stream: S) -> Self {
        Client {
            stream: BufReader::new(stream),
        }
    }

    /// The next line without its CRLF, or `None` at EOF (or on a reset,
    /// which is how a closed connection with unread data ends).
    pub async fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        match tokio::time::timeout(SOON, self.stream.read_line(&mut line))
            .await
            .expect("line within bound")
        {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line.trim_end_matches(['\r', '\n']).to_owned()),
        }
    }

    pub async fn send(&mut self, line: &str) {
        self.stream
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
    }

    pub async fn command(&mut self, line: &str) -> Option<String> {
        self.send(line).await;
        self.line().await
    }
}

pub async fn connect(addr: SocketAddr) -> Client<TcpStream> {
    Client::new(TcpStream::connect(addr).await.unwrap())
}

/// Polls `check` until it holds or the bound passes.
pub async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + SOON;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    check()
}

/// Sends `raw` as-is and returns everything the server sends until it
/// closes the connection.
pub async fn http_raw(addr: SocketAddr, raw: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(SOON, stream.read_to_end(&mut response))
        .await
        .expect("response within bound");
    String::from_utf8_lossy(&response).into_owned()
}

pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    http_raw(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// The body of an HTTP/1.1 response read to EOF.
pub fn body(response: &str) -> &str {
    response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("")
}

/// A header's value, by case-insensitive name.
pub fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    let head = response
        .split_once("\r\n\r\n")
        .map(|(h, _)| h)
        .unwrap_or(response);
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}
