//! The outbound SMTP client against scripted servers (each plays a
//! transcript on 127.0.0.1 and records what the client sent) and against
//! Postfix's `smtp-sink`, an independent implementation.
//!
//! The `smtp-sink` tests skip with a note when it is not installed, except
//! under `BULWARK_REQUIRE_PEERS=1`, where they fail.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulwark_transport::client::{
    ClientSettings, Credentials, Envelope, RecipientOutcome, SessionError, TlsPolicy, deliver,
    root_store,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------------
// The scripted server.

/// One step of a server transcript.
enum Step {
    /// Write these bytes.
    Send(&'static str),
    /// Write these bytes (built at run time).
    SendOwned(String),
    /// Read one line; it must start with this prefix, or the script stops.
    Expect(&'static str),
    /// Read message data up to and including the `.` line.
    Data,
    /// Become the TLS server side of the connection.
    Tls(Arc<rustls::ServerConfig>),
    /// Write an endless line until the client goes away.
    Flood,
    /// Say nothing; wait for the client to go away.
    Silence,
    /// Close the connection.
    Close,
    /// Read QUIT and answer it.
    Quit,
}
use Step::*;

/// What the server saw.
#[derive(Debug, Default)]
struct Transcript {
    /// Every command line, without its CRLF.
    commands: Vec<String>,
    /// Each message's data as sent, terminator included.
    data: Vec<Vec<u8>>,
    /// Every byte read, decrypted: for checks that something was never
    /// sent.
    raw: Vec<u8>,
    /// Where the script went wrong, if it did.
    error: Option<String>,
    /// Bytes written by `Flood` before the client went away.
    flooded: usize,
}

enum ServerStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    Gone,
}

impl ServerStream {
    async fn read_byte(&mut self) -> Option<u8> {
        let mut byte = [0u8; 1];
        let n = match self {
            Self::Plain(s) => s.read(&mut byte).await,
            Self::Tls(s) => s.read(&mut byte).await,
            Self::Gone => return None,
        };
        match n {
            Ok(1) => Some(byte[0]),
            _ => None,
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> bool {
        let result = match self {
            Self::Plain(s) => s.write_all(bytes).await,
            Self::Tls(s) => match s.write_all(bytes).await {
                Ok(()) => s.flush().await,
                Err(e) => Err(e),
            },
            Self::Gone => return false,
        };
        result.is_ok()
    }
}

struct Server {
    stream: ServerStream,
    transcript: Transcript,
}

impl Server {
    /// One line including its LF, or `None` at the end of the stream.
    async fn line(&mut self) -> Option<Vec<u8>> {
        let mut line = Vec::new();
        while line.len() < 100_000 {
            let byte = self.stream.read_byte().await?;
            self.transcript.raw.push(byte);
            line.push(byte);
            if byte == b'\n' {
                return Some(line);
            }
        }
        Some(line)
    }

    async fn run(mut self, script: Vec<Step>) -> Transcript {
        for step in script {
            match step {
                Send(text) => {
                    self.stream.write(text.as_bytes()).await;
                }
                SendOwned(text) => {
                    self.stream.write(text.as_bytes()).await;
                }
                Expect(prefix) => {
                    let Some(line) = self.line().await else {
                        self.transcript.error = Some(format!("EOF where {prefix:?} expected"));
                        return self.transcript;
                    };
                    let text = String::from_utf8_lossy(&line).trim_end().to_string();
                    let matches = text.starts_with(prefix);
                    self.transcript.commands.push(text.clone());
                    if !matches {
                        self.transcript.error = Some(format!("{text:?} where {prefix:?} expected"));
                        break;
                    }
                }
                Data => {
                    let mut data = Vec::new();
                    loop {
                        let Some(line) = self.line().await else {
                            self.transcript.error = Some("EOF in data".into());
                            return self.transcript;
                        };
                        data.extend_from_slice(&line);
                        if line == b".\r\n" {
                            break;
                        }
                    }
                    self.transcript.data.push(data);
                }
                Tls(config) => {
                    let ServerStream::Plain(tcp) =
                        std::mem::replace(&mut self.stream, ServerStream::Gone)
                    else {
                        panic!("TLS twice in a script");
                    };
                    match tokio_rustls::TlsAcceptor::from(config).accept(tcp).await {
                        Ok(tls) => self.stream = ServerStream::Tls(Box::new(tls)),
                        Err(e) => {
                            self.transcript.error = Some(format!("TLS accept: {e}"));
                            return self.transcript;
                        }
                    }
                }
                Flood => {
                    let chunk = [b'x'; 8192];
                    // Bounded so a client that keeps reading cannot keep
                    // the test running.
                    while self.transcript.flooded < 64 << 20 && self.stream.write(&chunk).await {
                        self.transcript.flooded += chunk.len();
                    }
                    return self.transcript;
                }
                Silence => {
                    while self.line().await.is_some() {}
                    return self.transcript;
                }
                Close => return self.transcript,
                Quit => {
                    let Some(line) = self.line().await else {
                        self.transcript.error = Some("EOF where QUIT expected".into());
                        return self.transcript;
                    };
                    let text = String::from_utf8_lossy(&line).trim_end().to_string();
                    if text != "QUIT" {
                        self.transcript.error = Some(format!("{text:?} where QUIT expected"));
                    }
                    self.transcript.commands.push(text);
                    self.stream.write(b"221 2.0.0 bye\r\n").await;
                }
            }
        }
        // Whatever the client sends after the script is recorded too, so
        // a test sees a command it did not expect.
        while let Ok(Some(line)) = tokio::time::timeout(Duration::from_secs(5), self.line()).await {
            let text = String::from_utf8_lossy(&line).trim_end().to_string();
            if text.starts_with("QUIT") {
                self.stream.write(b"221 2.0.0 bye\r\n").await;
            }
            self.transcript.commands.push(text);
        }
        self.transcript
    }
}

/// Starts a server that plays `script` on one connection.
async fn serve(script: Vec<Step>) -> (SocketAddr, tokio::task::JoinHandle<Transcript>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let server = Server {
            stream: ServerStream::Plain(tcp),
            transcript: Transcript::default(),
        };
        server.run(script).await
    });
    (addr, handle)
}

async fn transcript(handle: tokio::task::JoinHandle<Transcript>) -> Transcript {
    let transcript = tokio::time::timeout(Duration::from_secs(20), handle)
        .await
        .expect("server still running")
        .unwrap();
    assert_eq!(transcript.error, None, "{transcript:#?}");
    transcript
}

// ---------------------------------------------------------------------
// Helpers.

const HELO: &str = "client.bulwark.test";

fn settings(tls: TlsPolicy) -> ClientSettings {
    ClientSettings {
        connect_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(5),
        data_timeout: Duration::from_secs(5),
        tls,
        ..ClientSettings::new(HELO)
    }
}

fn recipients(list: &[&str]) -> Vec<String> {
    list.iter().map(|r| r.to_string()).collect()
}

fn envelope<'a>(recipients: &'a [String], message: &'a [u8]) -> Envelope<'a> {
    Envelope {
        mail_from: "sender@bulwark.test",
        recipients,
        message,
        envelope_id: None,
        smtputf8: false,
    }
}

const MESSAGE: &[u8] = b"From: sender@bulwark.test\r\nSubject: hi\r\n\r\nHello.\r\n";

fn delivered(reply: &str) -> RecipientOutcome {
    RecipientOutcome::Delivered {
        reply: reply.into(),
    }
}

fn temporary(reply: &str) -> RecipientOutcome {
    RecipientOutcome::Temporary {
        reply: reply.into(),
    }
}

fn permanent(reply: &str) -> RecipientOutcome {
    RecipientOutcome::Permanent {
        reply: reply.into(),
    }
}

/// The opening every plaintext script shares: greeting and EHLO with the
/// given extension lines.
fn opening(extensions: &[&str]) -> Vec<Step> {
    let mut ehlo = String::from("250-mx.peer.test hello\r\n");
    for e in extensions {
        ehlo.push_str(&format!("250-{e}\r\n"));
    }
    ehlo.push_str("250 ENHANCEDSTATUSCODES\r\n");
    vec![
        Send("220 mx.peer.test ESMTP ready\r\n"),
        Expect("EHLO client.bulwark.test"),
        SendOwned(ehlo),
    ]
}

fn with(mut steps: Vec<Step>, more: Vec<Step>) -> Vec<Step> {
    steps.extend(more);
    steps
}

/// A self-signed certificate for `mx.peer.test` and the server config
/// that presents it.
struct TestCert {
    pem: String,
    server: Arc<rustls::ServerConfig>,
}

fn test_cert() -> TestCert {
    let generated = rcgen::generate_simple_self_signed(vec!["mx.peer.test".into()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(generated.key_pair.serialize_der()));
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(generated.cert.der().to_vec())],
        key,
    )
    .unwrap();
    TestCert {
        pem: generated.cert.pem(),
        server: Arc::new(server),
    }
}

/// Settings that trust `cert` (and the public roots).
fn trusting(tls: TlsPolicy, cert: &TestCert) -> ClientSettings {
    ClientSettings {
        roots: Arc::new(root_store(Some(cert.pem.as_bytes())).unwrap()),
        ..settings(tls)
    }
}

/// Delivers [`MESSAGE`] to `to` at `addr` under `tls`.
async fn simple(
    addr: SocketAddr,
    tls: TlsPolicy,
    to: &[String],
) -> Result<Vec<RecipientOutcome>, SessionError> {
    deliver(addr, "mx.peer.test", &settings(tls), &envelope(to, MESSAGE)).await
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------
// Plain transactions.

#[tokio::test]
async fn plain_delivery() {
    let script = with(
        opening(&["PIPELINING", "SIZE 100000", "8BITMIME", "DSN"]),
        vec![
            Expect("MAIL FROM:"),
            Send("250 2.1.0 ok\r\n"),
            Expect("RCPT TO:"),
            Send("250 2.1.5 ok\r\n"),
            Expect("DATA"),
            Send("354 go ahead\r\n"),
            Data,
            Send("250 2.0.0 queued as 4B2\r\n"),
            Quit,
        ],
    );
    let (addr, server) = serve(script).await;
    let to = recipients(&["rcpt@peer.test"]);
    let mut envelope = envelope(&to, MESSAGE);
    envelope.envelope_id = Some("id+1");
    let outcomes = deliver(
        addr,
        "mx.peer.test",
        &settings(TlsPolicy::Disabled),
        &envelope,
    )
    .await
    .unwrap();
    assert_eq!(outcomes, [delivered("250 2.0.0 queued as 4B2")]);

    let t = transcript(server).await;
    assert_eq!(
        t.commands,
        [
            "EHLO client.bulwark.test",
            &format!(
                "MAIL FROM:<sender@bulwark.test> SIZE={} ENVID=id+2B1",
                MESSAGE.len()
            ),
            "RCPT TO:<rcpt@peer.test>",
            "DATA",
            "QUIT",
        ]
    );
    let mut expected = MESSAGE.to_vec();
    expected.extend_from_slice(b".\r\n");
    assert_eq!(t.data, [expected]);
}

#[tokio::test]
async fn lines_starting_with_a_dot_are_stuffed() {
    let script = with(
        opening(&[]),
        vec![
            Expect("MAIL FROM:<sender@bulwark.test>"),
            Send("250 ok\r\n"),
            Expect("RCPT TO:<rcpt@peer.test>"),
            Send("250 ok\r\n"),
            Expect("DATA"),
            Send("354 go ahead\r\n"),
            Data,
            Send("250 ok\r\n"),
            Quit,
        ],
    );
    let (addr, server) = serve(script).await;
    let to = recipients(&["rcpt@peer.test"]);
    let message = b"Subject: dots\r\n\r\n.\r\n..two\r\n.leading\r\nmid.dle\r\n.\r\nend\r\n";
    let outcomes = deliver(
        addr,
        "mx.peer.test",
        &settings(TlsPolicy::Disabled),
        &envelope(&to, message),
    )
    .await
    .unwrap();
    assert_eq!(outcomes, [delivered("250 ok")]);
    let t = transcript(server).await;
    assert_eq!(
        t.data,
        [
            b"Subject: dots\r\n\r\n..\r\n...two\r\n..leading\r\nmid.dle\r\n..\r\nend\r\n.\r\n"
                .to_vec()
        ]
    );
}

#[tokio::test]
async fn message_without_final_line_end_gets_one() {
    let script = with(
        opening(&[]),
        vec![
            Expect("MAIL FROM:"),
            Send("250 ok\r\n"),
            Expect("RCPT TO:"),
            Send("250 ok\r\n"),
            Expect("DATA"),
            Send("354 go ahead\r\n"),
            Data,
            Send("250 ok\r\n"),
        ],
    );
    let (addr, server) = serve(script).await;
    let to = recipients(&["rcpt@peer.test"]);
    deliver(
        addr,
        "mx.peer.test",
        &settings(TlsPolicy::Disabled),
        &envelope(&to, b"Subject: x\r\n\r\nno line end"),
    )
    .await
    .unwrap();
    let t = transcript(server).await;
    assert_eq!(t.data, [b"Subject: x\r\n\r\nno line end\r\n.\r\n".to_vec()]);
}

#[tokio::test]
async fn each_recipient_keeps_its_own_outcome() {
    let script = with(
        opening(&[]),
        vec![
            Expect("MAIL FROM:"),
            Send("250 ok\r\n"),
            Expect("RCPT TO:<gone@peer.test>"),
            Send("550 5.1.1 no such user\r\n"),
            Expect("RCPT TO:<here@peer.test>"),
            Send("250 2.1.5 ok\r\n"),
            Expect("RCPT TO:<busy@peer.test>"),
            Send("452 4.2.2 mailbox full\r\n"),
            // A forwarding hint is read for its class only.
            Expect("RCPT TO:<moved@peer.test>"),
            Send("251 2.1.5 user not local; will forward to <moved@elsewhere.test>\r\n"),
            Expect("DATA"),
            Send("354 go ahead\r\n"),
            Data,
            Send("250 2.0.0 accepted\r\n"),
            Quit,
        ],
    );
    let (addr, server) = serve(script).await;
    let to = recipients(&[
        "gone@peer.test",
        "here@peer.test",
        "busy@peer.test",
        "moved@peer.test",
    ]);
    let outcomes = simple(addr, TlsPolicy::Disabled, &to).await.unwrap();
    assert_eq!(
        outcomes,
        [
            permanent("550 5.1.1 no such user"),
            delivered("250 2.0.0 accepted"),
            temporary("452 4.2.2 mailbox full"),
            delivered("250 2.0.0 accepted"),
        ]
    );
    transcript(server).await;
}

#[tokio::test]
async fn no_data_when_every_recipient_is_refused() {
    let script = with(
        opening(&[]),
        vec![
            Expect("MAIL FROM:"),
            Send("250 ok\r\n"),
            Expect("RCPT TO:<a@peer.test>"),
            Send("550 5.1.1 no\r\n"),
            Expect("RCPT TO:<b@peer.test>"),
            Send("451 4.3.0 later\r\n"),
        ],
    );
    let (addr, server) = serve(script).await;
    let to = recipients(&["a@peer.test", "b@peer.test"]);
    let outcomes = simple(addr, TlsPolicy::Disabled, &to).await.unwrap();
    assert_eq!(
        outcomes,
        [permanent("550 5.1.1 no"), temporary("451 4.3.0 later")]
    );
    let t = transcript(server).await;
    // Only QUIT follows the last RCPT.
    assert_eq!(t.commands.last().unwrap(), "QUIT");
    assert!(!t.commands.iter().any(|c| c == "DATA"), "{t:?}");
    assert!(t.data.is_empty());
}

#[tokio::test]
async fn invalid_recipient_is_refused_without_being_sent() {
    let script = with(
        opening(&[]),
        vec![
            Expect("MAIL FROM:"),
            Send("250 ok\r\n"),
            Expect("RCPT TO:<ok@peer.test>"),
            Send("250 ok\r\n"),
            Expect("DATA"),
            Send("354 go ahead\r\n"),
            Data,
            Send("250 ok\r\n"),
            Quit,
        ],
    );
    let (addr, server) = serve(script).await;
    let to = recipients(&[
        "evil@peer.test>\r\nRCPT TO:<other@peer.test",
        "ok@peer.test",
    ]);
    let outcomes = simple(addr, TlsPolicy::Disabled, &to).await.unwrap();
    assert!(matches!(outcomes[0], RecipientOutcome::Permanent { .. }));
    assert_eq!(outcomes[1], delivered("250 ok"));
    let t = transcript(server).await;
    assert!(!contains(&t.raw, b"other@peer.test"));
}

#[tokio::test]
async fn bad_sender_fails_before_connecting() {
    // Nothing listens here: an attempt to connect would be a temporary
    // failure, not the permanent one expected.
    let addr = unused_addr().await;
    let to = recipients(&["a@peer.test"]);
    let mut envelope = envelope(&to, MESSAGE);
    envelope.mail_from = "a@b.test> SIZE=1";
    let error = deliver(
        addr,
        "mx.peer.test",
        &settings(TlsPolicy::Disabled),
        &envelope,
    )
    .await
    .unwrap_err();
    assert!(error.is_permanent(), "{error}");
}

#[tokio::test]
async fn empty_recipient_list_does_not_connect() {
    let addr = unused_addr().await;
    let none: Vec<String> = Vec::new();
    let outcomes = deliver(
        addr,
        "mx.peer.test",
        &settings(TlsPolicy::Disabled),
        &envelope(&none, MESSAGE),
    )
    .await
    .unwrap();
    assert!(outcomes.is_empty());
}

#[tokio::test]
async fn bounce_with_null_sender() {
    let script = with(
        opening(&[]),
        vec![
            Expect("MAIL FROM:<>"),
            Send("250 ok\r\n"),
            Expect("RCPT TO:"),
            Send("250 ok\r\n"),
            Expect("DATA"),
            Send("354 go ahead\r\n"),
            Data,
            Send("250 ok\r\n"),
        ],
    );
    let (addr, server) = serve(script).await;
    let to = recipients(&["rcpt@peer.test"]);
    let mut envelope = envelope(&to, MESSAGE);
    envelope.mail_from = "";
    let outcomes = deliver(
        addr,
        "mx.peer.test",
        &settings(TlsPolicy::Disabled),
        &envelope,
    )
    .await
    .unwrap();
    assert_eq!(outcomes, [delivered("250 ok")]);
    assert_eq!(transcript(server).await.commands[1], "MAIL FROM:<>");
}

// ---------------------------------------------------------------------
// Failures of the whole session.

#[tokio::test]
async fn greeting_421_is_temporary() {
    let (addr, server) = serve(vec![Send("421 4.3.2 too busy\r\n")]).await;
    let to = recipients(&["rcpt@peer.test"]);
    let error = simple(addr, TlsPolicy::Disabled, &to).await.unwrap_err();
    assert_eq!(
        error,
        SessionError::Temporary("greeting: 421 4.3.2 too busy".into())
    );
    let t = transcript(server).await;
    assert!(!t.commands.iter().any(|c| c.starts_with("EHLO")));
}

#[tokio::test]
async fn greeting_554_is_permanent_and_polite() {
    let (addr, server) = serve(vec![Send("554 5.7.1 no service for you\r\n")]).await;
    let to = recipients(&["rcpt@peer.test"]);
    let error = simple(addr, TlsPolicy::Disabled, &to).await.unwrap_err();
    assert_eq!(
        error,
        SessionError::Permanent("greeting: 554 5.7.1 no service for you".into())
    );
    assert_eq!(transcript(server).await.commands, ["QUIT"]);
}

#[tokio::test]
async fn mail_from_4xx_is_temporary_and_5xx_permanent() {
    for (reply, permanent) in [
        ("451 4.7.1 greylisted\r\n", false),
        ("553 5.7.1 sender refused\r\n", true),
    ] {
        let script = with(opening(&[]), vec![Expect("MAIL FROM:"), Send(reply)]);
        let (addr, server) = serve(script).await;
        let to = recipients(&["rcpt@peer.test"]);
        let error = simple(addr, TlsPolicy::Disabled, &to).await.unwrap_err();
        assert_eq!(error.is_permanent(), permanent, "{error}");
        assert_eq!(error.message(), format!("MAIL FROM: {}", reply.trim_end()));
        let t = transcript(server).await;
        assert_eq!(t.commands.last().unwrap(), "QUIT");
        assert!(!t.commands.iter().any(|c| c.starts_with("RCPT")));
    }
}

#[tokio::test]
async fn refusal_after_data_applies_to_accepted_recipients() {
    let script = with(
        opening(&[]),
        vec![
            Expect("MAIL FROM:"),
            Send("250 ok\r\n"),
            Expect("RCPT TO:<a@peer.test>"),
            Send("250 ok\r\n"),
            Expect("RCPT TO:<b@peer.test>"),
            Send("450 4.2.1 try later\r\n"),
            Expect("RCPT TO:<c@peer.test>"),
            Send("250 ok\r\n"),
            Expect("DATA"),
            Send("354 go ahead\r\n"),
            Data,
            Send("554 5.7.1 message looks like spam\r\n"),
            Quit,
        ],
    );
    let (addr, server) = serve(script).await;
    let to = recipients(&["a@peer.test", "b@peer.test", "c@peer.test"]);
    let outcomes = simple(addr, TlsPolicy::Disabled, &to).await.unwrap();
    assert_eq!(
        outcomes,
        [
            permanent("554 5.7.1 message looks like spam"),
            temporary("450 4.2.1 try later"),
            permanent("554 5.7.1 message looks like spam"),
        ]
    );
    transcript(server).await;
}

#[tokio::test]
async fn refusal_of_data_command_sends_no_data() {
    let script = with(
        opening(&[]),
        vec![
            Expect("MAIL FROM:"),
            Send("250 ok\r\n"),
            Expect("RCPT TO:"),
            Send("250 ok\r\n"),
            Expect("DATA"),
            Send("451 4.3.0 not now\r\n"),
            Quit,
        ],
    );
    let (addr, server) = serve(script).await;
    let to = recipients(&["a@peer.test"]);
    let outcomes = simple(addr, TlsPolicy::Disabled, &to).await.unwrap();
    assert_eq!(outcomes, [temporary("451 4.3.0 not now")]);
    let t = transcript(server).await;
    assert!(!contains(&t.raw, b"Subject"));
}

#[tokio::test]
async fn ehlo_refused_falls_back_to_helo() {
    let script = vec![
        Send("220 old.peer.test\r\n"),
        Expect("EHLO client.bulwark.test"),
        Send("502 5.5.1 command not recognized\r\n"),
        Expect("HELO client.bulwark.test"),
        Send("250 old.peer.test\r\n"),
        // No SIZE and no other parameter: HELO offers no extensions.
        Expect("MAIL FROM:<sender@bulwark.test>"),
        Send("250 ok\r\n"),
        Expect("RCPT TO:"),
        Send("250 ok\r\n"),
        Expect("DATA"),
        Send("354 go ahead\r\n"),
        Data,
        Send("250 ok\r\n"),
    ];
    let (addr, server) = serve(script).await;
    let to = recipients(&["a@peer.test"]);
    let outcomes = simple(addr, TlsPolicy::Opportunistic, &to).await.unwrap();
    assert_eq!(outcomes, [delivered("250 ok")]);
    assert_eq!(
        transcript(server).await.commands[2],
        "MAIL FROM:<sender@bulwark.test>"
    );
}

#[tokio::test]
async fn multi_line_ehlo_is_read_whole() {
    // Keywords in any case, the old AUTH= form, and a SIZE on a line far
    // down the reply.
    let script = with(
        opening(&[
            "8bitmime",
            "AUTH=LOGIN",
            "X-EXPERIMENTAL with params",
            "DSN",
            "SMTPUTF8",
            "VRFY",
            "ETRN",
            "CHUNKING",
            "size 2000",
        ]),
        vec![
            Expect("MAIL FROM:"),
            Send("250 ok\r\n"),
            Expect("RCPT TO:"),
            Send("250 ok\r\n"),
            Expect("DATA"),
            Send("354 go ahead\r\n"),
            Data,
            Send("250 ok\r\n"),
        ],
    );
    let (addr, server) = serve(script).await;
    let to = recipients(&["jörg@peer.test"]);
    let message = "Subject: Grüße\r\n\r\nÄ\r\n".as_bytes();
    let mut envelope = envelope(&to, message);
    envelope.envelope_id = Some("q1");
    deliver(
        addr,
        "mx.peer.test",
        &settings(TlsPolicy::Disabled),
        &envelope,
    )
    .await
    .unwrap();
    let t = transcript(server).await;
    assert_eq!(
        t.commands[1],
        format!(
            "MAIL FROM:<sender@bulwark.test> SIZE={} BODY=8BITMIME SMTPUTF8 ENVID=q1",
            message.len()
        )
    );
    assert_eq!(t.commands[2], "RCPT TO:<jörg@peer.test>");
}

#[tokio::test]
async fn eight_bit_without_8bitmime_goes_without_body_parameter() {
    let script = with(
        opening(&[]),
        vec![
            Expect("MAIL FROM:"),
            Send("250 ok\r\n"),
            Expect("RCPT TO:"),
            Send("250 ok\r\n"),
            Expect("DATA"),
            Send("354 go ahead\r\n"),
            Data,
            Send("250 ok\r\n"),
        ],
    );
    let (addr, server) = serve(script).await;
    let to = recipients(&["a@peer.test"]);
    deliver(
        addr,
        "mx.peer.test",
        &settings(TlsPolicy::Disabled),
        &envelope(&to, "Subject: é\r\n\r\n".as_bytes()),
    )
    .await
    .unwrap();
    assert_eq!(
        transcript(server).await.commands[1],
        "MAIL FROM:<sender@bulwark.test>"
    );
}

#[tokio::test]
async fn smtputf8_needed_but_not_offered_is_permanent() {
    let (addr, server) = serve(opening(&["8BITMIME"])).await;
    let to = recipients(&["jörg@peer.test"]);
    let error = simple(addr, TlsPolicy::Disabled, &to).await.unwrap_err();
    assert!(error.is_permanent(), "{error}");
    assert!(error.message().contains("SMTPUTF8"), "{error}");
    let t = transcript(server).await;
    assert_eq!(t.commands, ["EHLO client.bulwark.test", "QUIT"]);
}

#[tokio::test]
async fn message_larger_than_size_is_refused_before_sending() {
    let (addr, server) = serve(opening(&["SIZE 20"])).await;
    let to = recipients(&["a@peer.test"]);
    let error = simple(addr, TlsPolicy::Disabled, &to).await.unwrap_err();
    assert!(error.is_permanent(), "{error}");
    assert!(error.message().contains("limit of 20 bytes"), "{error}");
    let t = transcript(server).await;
    assert_eq!(t.commands, ["EHLO client.bulwark.test", "QUIT"]);
    assert!(!contains(&t.raw, b"Subject"));
}

#[tokio::test]
async fn unexpected_reply_class_is_a_protocol_error() {
    let script = with(
        opening(&[]),
        vec![
            Expect("MAIL FROM:"),
            Send("250 ok\r\n"),
            Expect("RCPT TO:"),
            Send("354 what?\r\n"),
        ],
    );
    let (addr, server) = serve(script).await;
    let to = recipients(&["a@peer.test"]);
    let error = simple(addr, TlsPolicy::Disabled, &to).await.unwrap_err();
    assert!(matches!(error, SessionError::Temporary(_)), "{error}");
    // The dialogue is out of step: no QUIT.
    let t = transcript(server).await;
    assert!(!t.commands.iter().any(|c| c == "QUIT"), "{t:?}");
}

// ---------------------------------------------------------------------
// Hostile and broken servers.

#[tokio::test]
async fn overlong_reply_line_is_an_error() {
    let long = format!("220 {}\r\n", "x".repeat(600));
    let (addr, server) = serve(vec![SendOwned(long), Silence]).await;
    let to = recipients(&["a@peer.test"]);
    let error = simple(addr, TlsPolicy::Disabled, &to).await.unwrap_err();
    assert_eq!(
        error,
        SessionError::Temporary("greeting: reply line longer than 512 bytes".into())
    );
    assert!(transcript(server).await.commands.is_empty());
}

#[tokio::test]
async fn endless_reply_line_is_cut_off_early() {
    let (addr, server) = serve(vec![Send("220-"), Flood]).await;
    let to = recipients(&["a@peer.test"]);
    let started = Instant::now();
    let error = simple(addr, TlsPolicy::Disabled, &to).await.unwrap_err();
    assert_eq!(
        error,
        SessionError::Temporary("greeting: reply line longer than 512 bytes".into())
    );
    // Refused on the first kilobyte, not at the timeout.
    assert!(started.elapsed() < Duration::from_secs(3));
    let t = transcript(server).await;
    // The server stopped when the client closed, long before its own cap.
    assert!(t.flooded < 64 << 20, "{}", t.flooded);
}

#[tokio::test]
async fn reply_with_too_many_lines_is_an_error() {
    let mut ehlo = String::new();
    for i in 0..150 {
        ehlo.push_str(&format!("250-X-LINE-{i}\r\n"));
    }
    ehlo.push_str("250 END\r\n");
    let script = vec![
        Send("220 ready\r\n"),
        Expect("EHLO"),
        SendOwned(ehlo),
        Silence,
    ];
    let (addr, server) = serve(script).await;
    let to = recipients(&["a@peer.test"]);
    let error = simple(addr, TlsPolicy::Disabled, &to).await.unwrap_err();
    assert_eq!(
        error,
        SessionError::Temporary("EHLO: reply longer than 100 lines".into())
    );
    transcript(server).await;
}

#[tokio::test]
async fn malformed_reply_codes_are_errors() {
    for greeting in [
        "hello there\r\n",
        "199 early\r\n",
        "620 what\r\n",
        "22 short\r\n",
        "220_x\r\n",
    ] {
        let (addr, server) = serve(vec![Send(greeting), Silence]).await;
        let to = recipients(&["a@peer.test"]);
        let error = simple(addr, TlsPolicy::Disabled, &to).await.unwrap_err();
        assert!(
            matches!(&error, SessionError::Temporary(m) if m.contains("malformed reply line")),
            "{greeting:?}: {error}"
        );
        transcript(server).await;
    }
}

#[tokio::test]
async fn silent_server_times_out() {
    let (addr, server) = serve(vec![Silence]).await;
    let to = recipients(&["a@peer.test"]);
    let settings = ClientSettings {
        command_timeout: Duration::from_millis(300),
        ..settings(TlsPolicy::Disabled)
    };
    let started = Instant::now();
    let error = deliver(addr, "mx.peer.test", &settings, &envelope(&to, MESSAGE))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(
        error,
        SessionError::Temporary("greeting: no reply within 300ms".into())
    );
    assert!(elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(3));
    transcript(server).await;
}

#[tokio::test]
async fn trickling_server_times_out_per_reply() {
    // A byte every 100 ms keeps every read short, but the reply as a whole
    // takes longer than the 300 ms limit.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        for _ in 0..50 {
            if tcp.write_all(b"2").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let to = recipients(&["a@peer.test"]);
    let settings = ClientSettings {
        command_timeout: Duration::from_millis(300),
        ..settings(TlsPolicy::Disabled)
    };
    let started = Instant::now();
    let error = deliver(addr, "mx.peer.test", &settings, &envelope(&to, MESSAGE))
        .await
        .unwrap_err();
    assert_eq!(
        error,
        SessionError::Temporary("greeting: no reply within 300ms".into())
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    server.abort();
}

#[tokio::test]
async fn slow_final_reply_hits_the_data_timeout() {
    let script = with(
        opening(&[]),
        vec![
            Expect("MAIL FROM:"),
            Send("250 ok\r\n"),
            Expect("RCPT TO:"),
            Send("250 ok\r\n"),
            Expect("DATA"),
            Send("354 go ahead\r\n"),
            Data,
            Silence,
        ],
    );
    let (addr, server) = serve(script).await;
    let to = recipients(&["a@peer.test"]);
    let settings = ClientSettings {
        data_timeout: Duration::from_millis(300),
        ..settings(TlsPolicy::Disabled)
    };
    let error = deliver(addr, "mx.peer.test", &settings, &envelope(&to, MESSAGE))
        .await
        .unwrap_err();
    assert_eq!(
        error,
        SessionError::Temporary("end of data: no reply within 300ms".into())
    );
    transcript(server).await;
}

#[tokio::test]
async fn connection_refused_is_temporary() {
    let addr = unused_addr().await;
    let to = recipients(&["a@peer.test"]);
    let error = simple(addr, TlsPolicy::Disabled, &to).await.unwrap_err();
    assert!(
        matches!(&error, SessionError::Temporary(m) if m.starts_with("connect to")),
        "{error}"
    );
}

#[tokio::test]
async fn server_closing_mid_session_is_temporary() {
    let script = with(opening(&[]), vec![Expect("MAIL FROM:"), Close]);
    let (addr, server) = serve(script).await;
    let to = recipients(&["a@peer.test"]);
    let error = simple(addr, TlsPolicy::Disabled, &to).await.unwrap_err();
    transcript(server).await;
    assert_eq!(
        error,
        SessionError::Temporary("MAIL FROM: connection closed by the server".into())
    );
}

// ---------------------------------------------------------------------
// AUTH.

#[tokio::test]
async fn auth_is_never_sent_over_plaintext() {
    for policy in [TlsPolicy::Disabled, TlsPolicy::Opportunistic] {
        // The server offers AUTH but not STARTTLS.
        let (addr, server) = serve(opening(&["AUTH PLAIN LOGIN"])).await;
        let to = recipients(&["a@peer.test"]);
        let settings = ClientSettings {
            auth: Some(Credentials {
                username: "user".into(),
                password: "hunter2-secret".into(),
            }),
            ..settings(policy)
        };
        let error = deliver(addr, "mx.peer.test", &settings, &envelope(&to, MESSAGE))
            .await
            .unwrap_err();
        assert!(error.is_permanent(), "{error}");
        let t = transcript(server).await;
        assert_eq!(t.commands, ["EHLO client.bulwark.test", "QUIT"]);
        assert!(!contains(&t.raw, b"hunter2"));
        assert!(!contains(&t.raw, b"AUTH"));
    }
}

#[tokio::test]
async fn auth_is_not_sent_over_unverified_tls() {
    let cert = test_cert();
    let script = with(
        opening(&["STARTTLS", "AUTH PLAIN"]),
        vec![
            Expect("STARTTLS"),
            Send("220 go ahead\r\n"),
            Tls(Arc::clone(&cert.server)),
            Expect("EHLO client.bulwark.test"),
            Send("250-mx.peer.test\r\n250 AUTH PLAIN\r\n"),
        ],
    );
    let (addr, server) = serve(script).await;
    let to = recipients(&["a@peer.test"]);
    let settings = ClientSettings {
        auth: Some(Credentials {
            username: "user".into(),
            password: "hunter2-secret".into(),
        }),
        ..settings(TlsPolicy::Opportunistic)
    };
    let error = deliver(addr, "mx.peer.test", &settings, &envelope(&to, MESSAGE))
        .await
        .unwrap_err();
    assert!(error.is_permanent(), "{error}");
    let t = transcript(server).await;
    assert_eq!(t.commands.last().unwrap(), "QUIT");
    assert!(!contains(&t.raw, b"AUTH"));
}

#[tokio::test]
async fn auth_plain_over_verified_tls() {
    let cert = test_cert();
    let script = with(
        opening(&["STARTTLS"]),
        vec![
            Expect("STARTTLS"),
            Send("220 go ahead\r\n"),
            Tls(Arc::clone(&cert.server)),
            Expect("EHLO client.bulwark.test"),
            Send("250-mx.peer.test\r\n250 AUTH LOGIN PLAIN\r\n"),
            // "\0user\0secret" in base64.
            Expect("AUTH PLAIN AHVzZXIAc2VjcmV0"),
            Send("235 2.7.0 ok\r\n"),
            Expect("MAIL FROM:"),
            Send("250 ok\r\n"),
            Expect("RCPT TO:"),
            Send("250 ok\r\n"),
            Expect("DATA"),
            Send("354 go ahead\r\n"),
            Data,
            Send("250 ok\r\n"),
        ],
    );
    let (addr, server) = serve(script).await;
    let to = recipients(&["a@peer.test"]);
    let settings = ClientSettings {
        auth: Some(Credentials {
            username: "user".into(),
            password: "secret".into(),
        }),
        ..trusting(TlsPolicy::RequireVerified, &cert)
    };
    let outcomes = deliver(addr, "mx.peer.test", &settings, &envelope(&to, MESSAGE))
        .await
        .unwrap();
    assert_eq!(outcomes, [delivered("250 ok")]);
    transcript(server).await;
}

#[tokio::test]
async fn auth_login_when_plain_is_not_offered() {
    let cert = test_cert();
    let script = vec![
        Tls(Arc::clone(&cert.server)),
        Send("220 mx.peer.test ready\r\n"),
        Expect("EHLO client.bulwark.test"),
        Send("250-mx.peer.test\r\n250 AUTH LOGIN CRAM-MD5\r\n"),
        Expect("AUTH LOGIN"),
        Send("334 VXNlcm5hbWU6\r\n"),
        Expect("dXNlcg=="),
        Send("334 UGFzc3dvcmQ6\r\n"),
        Expect("c2VjcmV0"),
        Send("535 5.7.8 authentication failed\r\n"),
        Quit,
    ];
    let (addr, server) = serve(script).await;
    let to = recipients(&["a@peer.test"]);
    let settings = ClientSettings {
        auth: Some(Credentials {
            username: "user".into(),
            password: "secret".into(),
        }),
        ..trusting(TlsPolicy::ImplicitVerified, &cert)
    };
    let error = deliver(addr, "mx.peer.test", &settings, &envelope(&to, MESSAGE))
        .await
        .unwrap_err();
    assert_eq!(
        error,
        SessionError::Permanent("AUTH: 535 5.7.8 authentication failed".into())
    );
    transcript(server).await;
}

#[test]
fn credentials_debug_hides_the_password() {
    let credentials = Credentials {
        username: "user".into(),
        password: "hunter2".into(),
    };
    let shown = format!(
        "{credentials:?} {:?}",
        ClientSettings {
            auth: Some(credentials.clone()),
            ..ClientSettings::new(HELO)
        }
    );
    assert!(!shown.contains("hunter2"));
    assert!(shown.contains("user"));
}

// ---------------------------------------------------------------------
// STARTTLS and implicit TLS.

/// The transaction after TLS is up: EHLO again, then one message.
fn after_tls(cert: &TestCert) -> Vec<Step> {
    vec![
        Expect("STARTTLS"),
        Send("220 2.0.0 ready to start TLS\r\n"),
        Tls(Arc::clone(&cert.server)),
        Expect("EHLO client.bulwark.test"),
        Send("250-mx.peer.test\r\n250 8BITMIME\r\n"),
        Expect("MAIL FROM:<sender@bulwark.test>"),
        Send("250 ok\r\n"),
        Expect("RCPT TO:<a@peer.test>"),
        Send("250 ok\r\n"),
        Expect("DATA"),
        Send("354 go ahead\r\n"),
        Data,
        Send("250 2.0.0 over TLS\r\n"),
        Quit,
    ]
}

#[tokio::test]
async fn opportunistic_starttls_accepts_a_self_signed_certificate() {
    let cert = test_cert();
    // The EHLO before TLS offers SIZE 10; the one after it does not, and
    // only the second counts (RFC 3207 section 4.2).
    let script = with(opening(&["STARTTLS", "SIZE 10"]), after_tls(&cert));
    let (addr, server) = serve(script).await;
    let to = recipients(&["a@peer.test"]);
    let outcomes = simple(addr, TlsPolicy::Opportunistic, &to).await.unwrap();
    assert_eq!(outcomes, [delivered("250 2.0.0 over TLS")]);
    let t = transcript(server).await;
    assert_eq!(t.data.len(), 1);
}

/// Presents one certificate but signs the handshake with another key,
/// as someone replaying a real server's certificate would.
#[derive(Debug)]
struct WrongKey(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for WrongKey {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

#[tokio::test]
async fn opportunistic_tls_still_checks_the_handshake_signature() {
    let shown = rcgen::generate_simple_self_signed(vec!["mx.peer.test".into()]).unwrap();
    let other = rcgen::KeyPair::generate().unwrap();
    let key = rustls::crypto::ring::sign::any_supported_type(&PrivateKeyDer::Pkcs8(
        PrivatePkcs8KeyDer::from(other.serialize_der()),
    ))
    .unwrap();
    let certified =
        rustls::sign::CertifiedKey::new(vec![CertificateDer::from(shown.cert.der().to_vec())], key);
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_cert_resolver(Arc::new(WrongKey(Arc::new(certified))));
    let script = with(
        opening(&["STARTTLS"]),
        vec![
            Expect("STARTTLS"),
            Send("220 go ahead\r\n"),
            Tls(Arc::new(server)),
        ],
    );
    let (addr, server) = serve(script).await;
    let to = recipients(&["a@peer.test"]);
    let error = simple(addr, TlsPolicy::Opportunistic, &to)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, SessionError::Temporary(m) if m.starts_with("TLS handshake")),
        "{error}"
    );
    let t = tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .unwrap()
        .unwrap();
    assert!(!contains(&t.raw, b"MAIL"));
}

#[tokio::test]
async fn opportunistic_without_starttls_offered_is_plaintext() {
    let script = with(
        opening(&[]),
        vec![
            Expect("MAIL FROM:"),
            Send("250 ok\r\n"),
            Expect("RCPT TO:"),
            Send("250 ok\r\n"),
            Expect("DATA"),
            Send("354 go ahead\r\n"),
            Data,
            Send("250 ok\r\n"),
        ],
    );
    let (addr, server) = serve(script).await;
    let to = recipients(&["a@peer.test"]);
    let outcomes = simple(addr, TlsPolicy::Opportunistic, &to).await.unwrap();
    assert_eq!(outcomes, [delivered("250 ok")]);
    transcript(server).await;
}

#[tokio::test]
async fn opportunistic_starttls_refused_continues_in_plaintext() {
    let script = with(
        opening(&["STARTTLS"]),
        vec![
            Expect("STARTTLS"),
            Send("454 4.7.0 TLS not available\r\n"),
            Expect("MAIL FROM:"),
            Send("250 ok\r\n"),
            Expect("RCPT TO:"),
            Send("250 ok\r\n"),
            Expect("DATA"),
            Send("354 go ahead\r\n"),
            Data,
            Send("250 ok\r\n"),
        ],
    );
    let (addr, server) = serve(script).await;
    let to = recipients(&["a@peer.test"]);
    let outcomes = simple(addr, TlsPolicy::Opportunistic, &to).await.unwrap();
    assert_eq!(outcomes, [delivered("250 ok")]);
    transcript(server).await;
}

#[tokio::test]
async fn opportunistic_failed_handshake_is_temporary() {
    let script = with(
        opening(&["STARTTLS"]),
        vec![
            Expect("STARTTLS"),
            Send("220 go ahead\r\n"),
            // Not a TLS server hello.
            Send("this is not TLS at all\r\n"),
            Silence,
        ],
    );
    let (addr, server) = serve(script).await;
    let to = recipients(&["a@peer.test"]);
    let error = simple(addr, TlsPolicy::Opportunistic, &to)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, SessionError::Temporary(m) if m.starts_with("TLS handshake")),
        "{error}"
    );
    transcript(server).await;
}

#[tokio::test]
async fn plaintext_sent_after_starttls_reply_is_refused() {
    // The 220 and a forged reply arrive together, before any TLS: reading
    // the second as if it came over TLS is the injection of CVE-2011-0411.
    let script = with(
        opening(&["STARTTLS"]),
        vec![
            Expect("STARTTLS"),
            Send("220 go ahead\r\n250-injected\r\n250 AUTH PLAIN\r\n"),
            Silence,
        ],
    );
    let (addr, server) = serve(script).await;
    let to = recipients(&["a@peer.test"]);
    let error = simple(addr, TlsPolicy::Opportunistic, &to)
        .await
        .unwrap_err();
    assert_eq!(
        error,
        SessionError::Temporary("STARTTLS: the server sent more after its 220 reply".into())
    );
    transcript(server).await;
}

#[tokio::test]
async fn required_tls_verifies_the_right_name() {
    let cert = test_cert();
    let script = with(opening(&["STARTTLS"]), after_tls(&cert));
    let (addr, server) = serve(script).await;
    let to = recipients(&["a@peer.test"]);
    let outcomes = deliver(
        addr,
        "mx.peer.test",
        &trusting(TlsPolicy::RequireVerified, &cert),
        &envelope(&to, MESSAGE),
    )
    .await
    .unwrap();
    assert_eq!(outcomes, [delivered("250 2.0.0 over TLS")]);
    transcript(server).await;
}

#[tokio::test]
async fn required_tls_refuses_a_wrong_name() {
    let cert = test_cert();
    let script = with(
        opening(&["STARTTLS"]),
        vec![
            Expect("STARTTLS"),
            Send("220 go ahead\r\n"),
            Tls(Arc::clone(&cert.server)),
        ],
    );
    let (addr, server) = serve(script).await;
    let to = recipients(&["a@peer.test"]);
    let error = deliver(
        addr,
        "other.peer.test",
        &trusting(TlsPolicy::RequireVerified, &cert),
        &envelope(&to, MESSAGE),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&error, SessionError::Temporary(m) if m.starts_with("TLS handshake")),
        "{error}"
    );
    // The server's accept fails when the client aborts; nothing more was
    // sent.
    let t = tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .unwrap()
        .unwrap();
    assert!(
        t.error.as_deref().unwrap_or("").starts_with("TLS accept"),
        "{t:?}"
    );
    assert!(!contains(&t.raw, b"MAIL"));
}

#[tokio::test]
async fn required_tls_refuses_an_untrusted_certificate() {
    let cert = test_cert();
    let script = with(
        opening(&["STARTTLS"]),
        vec![
            Expect("STARTTLS"),
            Send("220 go ahead\r\n"),
            Tls(Arc::clone(&cert.server)),
        ],
    );
    let (addr, server) = serve(script).await;
    let to = recipients(&["a@peer.test"]);
    // Public roots only: the self-signed certificate is not among them.
    let error = simple(addr, TlsPolicy::RequireVerified, &to)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, SessionError::Temporary(m) if m.starts_with("TLS handshake")),
        "{error}"
    );
    let _ = server.await;
}

#[tokio::test]
async fn required_tls_not_offered_is_temporary() {
    let (addr, server) = serve(opening(&["8BITMIME"])).await;
    let to = recipients(&["a@peer.test"]);
    let cert = test_cert();
    let error = deliver(
        addr,
        "mx.peer.test",
        &trusting(TlsPolicy::RequireVerified, &cert),
        &envelope(&to, MESSAGE),
    )
    .await
    .unwrap_err();
    assert_eq!(
        error,
        SessionError::Temporary("STARTTLS required but not offered".into())
    );
    let t = transcript(server).await;
    assert_eq!(t.commands, ["EHLO client.bulwark.test", "QUIT"]);
}

#[tokio::test]
async fn implicit_tls_delivery() {
    let cert = test_cert();
    let script = vec![
        Tls(Arc::clone(&cert.server)),
        Send("220 mx.peer.test ready\r\n"),
        Expect("EHLO client.bulwark.test"),
        // STARTTLS offered over TLS is ignored.
        Send("250-mx.peer.test\r\n250 STARTTLS\r\n"),
        Expect("MAIL FROM:"),
        Send("250 ok\r\n"),
        Expect("RCPT TO:"),
        Send("250 ok\r\n"),
        Expect("DATA"),
        Send("354 go ahead\r\n"),
        Data,
        Send("250 2.0.0 implicit\r\n"),
        Quit,
    ];
    let (addr, server) = serve(script).await;
    let to = recipients(&["a@peer.test"]);
    let outcomes = deliver(
        addr,
        "mx.peer.test",
        &trusting(TlsPolicy::ImplicitVerified, &cert),
        &envelope(&to, MESSAGE),
    )
    .await
    .unwrap();
    assert_eq!(outcomes, [delivered("250 2.0.0 implicit")]);
    transcript(server).await;
}

#[tokio::test]
async fn disabled_tls_never_starts_it() {
    let script = with(
        opening(&["STARTTLS"]),
        vec![
            Expect("MAIL FROM:"),
            Send("250 ok\r\n"),
            Expect("RCPT TO:"),
            Send("250 ok\r\n"),
            Expect("DATA"),
            Send("354 go ahead\r\n"),
            Data,
            Send("250 ok\r\n"),
        ],
    );
    let (addr, server) = serve(script).await;
    let to = recipients(&["a@peer.test"]);
    simple(addr, TlsPolicy::Disabled, &to).await.unwrap();
    transcript(server).await;
}

async fn unused_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

// ---------------------------------------------------------------------
// Postfix smtp-sink, an independent server.

/// The smtp-sink binary, or `None` (after a note, or a failure when
/// `BULWARK_REQUIRE_PEERS=1`) when it is not installed.
fn smtp_sink() -> Option<String> {
    let found = ["/usr/sbin/smtp-sink", "/usr/bin/smtp-sink"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .map(str::to_string);
    if found.is_none() {
        assert!(
            std::env::var("BULWARK_REQUIRE_PEERS").as_deref() != Ok("1"),
            "smtp-sink (Debian package postfix) is required: BULWARK_REQUIRE_PEERS=1"
        );
        eprintln!("note: smtp-sink (Debian package postfix) is not installed; skipping");
    }
    found
}

/// A running smtp-sink, stopped by its process id when dropped.
struct Sink {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sink {
    async fn start(program: &str, options: &[&str]) -> Sink {
        let addr = unused_addr().await;
        let mut command = std::process::Command::new(program);
        // smtp-sink refuses to run as root without dropping privileges.
        let root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout.trim_ascii() == b"0")
            .unwrap_or(false);
        if root {
            command.args(["-u", "nobody"]);
        }
        command
            .args(options)
            .arg(addr.to_string())
            .arg("10")
            .stdin(std::process::Stdio::null());
        let child = command.spawn().unwrap();
        let mut sink = Sink { child, addr };
        // Wait until it listens.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect(addr).await.is_ok() {
                // That probe was a session of its own; smtp-sink counts it
                // only towards -n, which the tests leave alone.
                return sink;
            }
            if let Ok(Some(status)) = sink.child.try_wait() {
                panic!("smtp-sink exited early: {status}");
            }
            assert!(Instant::now() < deadline, "smtp-sink did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn smtp_sink_takes_a_message() {
    let Some(program) = smtp_sink() else {
        return;
    };
    let dump = tempfile::tempdir().unwrap();
    // smtp-sink writes as nobody when started as root.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dump.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let template = format!("{}/msg.", dump.path().display());
    let sink = Sink::start(&program, &["-d", &template, "-h", "sink.peer.test"]).await;

    let to = recipients(&["one@peer.test", "two@peer.test"]);
    let message = "From: sender@bulwark.test\r\nSubject: interop\r\n\r\n\
                   .a line with a leading dot\r\n..two dots\r\n.\r\n8-bit: café\r\nlast line"
        .as_bytes();
    let envelope = Envelope {
        envelope_id: Some("interop-1"),
        ..envelope(&to, message)
    };
    let outcomes = deliver(
        sink.addr,
        "sink.peer.test",
        &settings(TlsPolicy::Opportunistic),
        &envelope,
    )
    .await
    .unwrap();
    assert_eq!(outcomes.len(), 2);
    for outcome in &outcomes {
        assert!(
            matches!(outcome, RecipientOutcome::Delivered { reply } if reply.starts_with("250")),
            "{outcomes:?}"
        );
    }

    // The dump is written when smtp-sink sees the end of data; give it a
    // moment to close the file.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let files: Vec<_> = std::fs::read_dir(dump.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        if let [file] = files.as_slice() {
            let text = std::fs::read_to_string(file).unwrap();
            if text.contains("last line") {
                break text;
            }
        }
        assert!(Instant::now() < deadline, "no dump from smtp-sink");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    drop(sink);

    assert!(
        text.contains("X-Helo-Args: client.bulwark.test\n"),
        "{text}"
    );
    assert!(
        text.contains("X-Mail-Args: <sender@bulwark.test> BODY=8BITMIME ENVID=interop-1\n"),
        "{text}"
    );
    assert!(
        text.contains("X-Rcpt-Args: <one@peer.test>\nX-Rcpt-Args: <two@peer.test>\n"),
        "{text}"
    );
    // smtp-sink stores lines with LF and undoes the dot-stuffing: what it
    // kept is the message as given, with the final line end added.
    let expected = String::from_utf8(message.to_vec())
        .unwrap()
        .replace("\r\n", "\n")
        + "\n";
    assert!(text.contains(&expected), "{text}");
}

#[tokio::test]
async fn smtp_sink_refusals() {
    let Some(program) = smtp_sink() else {
        return;
    };
    // Every RCPT refused with smtp-sink's hard error: no DATA follows.
    let sink = Sink::start(&program, &["-f", "RCPT"]).await;
    let to = recipients(&["one@peer.test"]);
    let outcomes = deliver(
        sink.addr,
        "sink.peer.test",
        &settings(TlsPolicy::Opportunistic),
        &envelope(&to, MESSAGE),
    )
    .await
    .unwrap();
    assert!(
        matches!(&outcomes[..], [RecipientOutcome::Permanent { reply }] if reply.starts_with("5")),
        "{outcomes:?}"
    );
    drop(sink);

    // MAIL refused with its soft error: temporary for the whole attempt.
    let sink = Sink::start(&program, &["-r", "MAIL"]).await;
    let error = deliver(
        sink.addr,
        "sink.peer.test",
        &settings(TlsPolicy::Opportunistic),
        &envelope(&to, MESSAGE),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&error, SessionError::Temporary(m) if m.starts_with("MAIL FROM: 4")),
        "{error}"
    );
}
