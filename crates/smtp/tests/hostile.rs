//! Hostile and broken clients over raw sockets. Each case checks the reply
//! code and that nothing was stored.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bulwark_server::{Protocol, ServerOptions};
use bulwark_smtp::SmtpLimits;
use common::{Fixture, Raw, Setup};

/// The reply code and enhanced status code: `550 5.7.1`.
fn code(reply: &str) -> String {
    reply.split(' ').take(2).collect::<Vec<_>>().join(" ")
}

/// Opens an inbound session with EHLO done.
async fn inbound(fx: &Fixture) -> Raw {
    let mut raw = Raw::open(fx.addr(Protocol::Smtp)).await;
    let ehlo = raw.cmd("EHLO hostile.test").await;
    assert!(ehlo.contains("250-PIPELINING"), "{ehlo}");
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_relay_and_unknown_recipients() {
    let fx = Fixture::start().await;
    let mut c = inbound(&fx).await;
    assert_eq!(
        code(&c.cmd("MAIL FROM:<spam@other.example>").await),
        "250 2.1.0"
    );
    for rcpt in [
        "<victim@gmail.example>",
        "<@example.com:victim@gmail.example>",
        "<victim%gmail.example@example.com>",
        "<\"victim@gmail.example\"@example.com>",
    ] {
        let reply = c.cmd(&format!("RCPT TO:{rcpt}")).await;
        assert!(
            reply.starts_with("550 5.7.1")
                || reply.starts_with("550 5.1.1")
                || reply.starts_with("501 5.1.3"),
            "{rcpt}: {reply}"
        );
    }
    assert_eq!(
        code(&c.cmd("RCPT TO:<ghost@example.com>").await),
        "550 5.1.1"
    );
    assert_eq!(code(&c.cmd("DATA").await), "554 5.5.1");
    assert_eq!(code(&c.cmd("QUIT").await), "221 2.0.0");
    assert_eq!(fx.total_messages(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submission_without_tls_or_auth() {
    let fx = Fixture::start().await;
    let mut c = Raw::open(fx.addr(Protocol::Submission)).await;
    let ehlo = c.cmd("EHLO laptop").await;
    assert!(
        ehlo.contains("250-STARTTLS") || ehlo.contains("250 STARTTLS"),
        "{ehlo}"
    );
    assert!(!ehlo.contains("AUTH"), "AUTH offered without TLS: {ehlo}");
    // alice's real password, in the clear: refused before any check.
    let reply = c
        .cmd("AUTH PLAIN AGFsaWNlQGV4YW1wbGUuY29tAGFsaWNlJ3MgbG9uZyBwYXNzd29yZA==")
        .await;
    assert_eq!(code(&reply), "538 5.7.11", "{reply}");
    assert_eq!(code(&c.cmd("AUTH LOGIN").await), "538 5.7.11");
    assert_eq!(
        code(&c.cmd("MAIL FROM:<alice@example.com>").await),
        "530 5.7.0"
    );
    assert_eq!(code(&c.cmd("RCPT TO:<bob@example.com>").await), "503 5.5.1");
    // A chunk without a transaction is read and thrown away.
    c.send(b"BDAT 4 LAST\r\nabcd").await;
    assert_eq!(code(&c.reply().await), "503 5.5.1");
    assert_eq!(code(&c.cmd("NOOP").await), "250 2.0.0");
    assert_eq!(fx.total_messages(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages() {
    let fx = Fixture::start().await;
    let mut c = inbound(&fx).await;
    // Announced too big.
    assert_eq!(
        code(&c.cmd("MAIL FROM:<x@other.example> SIZE=262145").await),
        "552 5.3.4"
    );
    // Announced small, sent big: read to the end, then 552.
    assert_eq!(
        code(&c.cmd("MAIL FROM:<x@other.example> SIZE=100").await),
        "250 2.1.0"
    );
    assert_eq!(
        code(&c.cmd("RCPT TO:<alice@example.com>").await),
        "250 2.1.5"
    );
    assert_eq!(&c.cmd("DATA").await[..3], "354");
    c.send(b"Subject: big\r\n\r\n").await;
    let line = format!("{}\r\n", "z".repeat(998));
    for _ in 0..300 {
        c.send(line.as_bytes()).await;
    }
    c.send(b".\r\n").await;
    assert_eq!(code(&c.reply().await), "552 5.3.4");
    // The session goes on.
    assert_eq!(code(&c.cmd("NOOP").await), "250 2.0.0");
    // BDAT past the limit.
    assert_eq!(
        code(&c.cmd("MAIL FROM:<x@other.example>").await),
        "250 2.1.0"
    );
    assert_eq!(
        code(&c.cmd("RCPT TO:<alice@example.com>").await),
        "250 2.1.5"
    );
    let chunk = "q".repeat(200 * 1024);
    c.send(format!("BDAT {}\r\n{chunk}", chunk.len()).as_bytes())
        .await;
    assert_eq!(code(&c.reply().await), "250 2.0.0");
    c.send(format!("BDAT {} LAST\r\n{chunk}", chunk.len()).as_bytes())
        .await;
    assert_eq!(code(&c.reply().await), "552 5.3.4");
    assert_eq!(code(&c.cmd("RSET").await), "250 2.0.0");
    assert_eq!(fx.total_messages(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlong_command_line() {
    let fx = Fixture::start().await;
    let mut c = inbound(&fx).await;
    let long = format!("MAIL FROM:<{}@other.example>", "a".repeat(5000));
    assert_eq!(code(&c.cmd(&long).await), "500 5.5.2");
    // Exactly at the limit (1000 with CRLF) is still a command.
    let noop = format!("NOOP {}", "n".repeat(1000 - 5 - 2));
    assert_eq!(code(&c.cmd(&noop).await), "250 2.0.0");
    let over = format!("NOOP {}", "n".repeat(1000 - 5 - 1));
    assert_eq!(code(&c.cmd(&over).await), "500 5.5.2");
    // Pipelined after an overlong line: still answered, in order.
    c.send(format!("{long}\r\nNOOP\r\n").as_bytes()).await;
    assert_eq!(code(&c.reply().await), "500 5.5.2");
    assert_eq!(code(&c.reply().await), "250 2.0.0");
    assert_eq!(fx.total_messages(), 0);
}

/// SMTP smuggling: `\n.\n` and `\r\n.\n` inside the data must not end it,
/// and the message holding them is refused after the real end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_sequences_are_neither_ends_nor_stored() {
    let fx = Fixture::start().await;
    for smuggle in ["\n.\n", "\r\n.\n", "\n.\r\n", "\r.\r\n"] {
        let mut c = inbound(&fx).await;
        assert_eq!(
            code(&c.cmd("MAIL FROM:<x@other.example>").await),
            "250 2.1.0"
        );
        assert_eq!(
            code(&c.cmd("RCPT TO:<alice@example.com>").await),
            "250 2.1.5"
        );
        assert_eq!(&c.cmd("DATA").await[..3], "354");
        c.send(
            format!(
                "From: x@other.example\r\nSubject: innocent\r\n\r\nhello{smuggle}\
                 MAIL FROM:<ceo@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n\
                 From: ceo@example.com\r\nSubject: smuggled\r\n\r\npay now\r\n"
            )
            .as_bytes(),
        )
        .await;
        assert!(
            c.silent_for(Duration::from_millis(300)).await,
            "{smuggle:?} ended the data"
        );
        c.send(b".\r\n").await;
        assert_eq!(code(&c.reply().await), "554 5.6.0", "{smuggle:?}");
        assert_eq!(code(&c.cmd("QUIT").await), "221 2.0.0");
    }
    assert_eq!(fx.total_messages(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_flood() {
    let fx = Fixture::start().await;
    let mut c = inbound(&fx).await;
    assert_eq!(
        code(&c.cmd("MAIL FROM:<x@other.example>").await),
        "250 2.1.0"
    );
    assert_eq!(
        code(&c.cmd("RCPT TO:<alice@example.com>").await),
        "250 2.1.5"
    );
    assert_eq!(&c.cmd("DATA").await[..3], "354");
    let mut flood = String::new();
    for i in 0..6000 {
        flood.push_str(&format!("X-F{i}: x\r\n"));
    }
    c.send(flood.as_bytes()).await;
    c.send(b"\r\nbody\r\n.\r\n").await;
    let reply = c.reply().await;
    assert_eq!(code(&reply), "552 5.3.4", "{reply}");
    assert!(reply.contains("too many header fields"), "{reply}");
    assert_eq!(fx.total_messages(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_recipients() {
    let fx = Fixture::start().await;
    let mut c = inbound(&fx).await;
    let mut batch = String::from("MAIL FROM:<x@other.example>\r\n");
    for _ in 0..7 {
        batch.push_str("RCPT TO:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\nRCPT TO:<carol@example.com>\r\n");
    }
    // Distinct addresses beyond the limit of 5.
    for who in ["a.smith", "boss", "shared", "team", "leads", "full"] {
        batch.push_str(&format!("RCPT TO:<{who}@example.com>\r\n"));
    }
    c.send(batch.as_bytes()).await;
    let mut replies = Vec::new();
    for _ in 0..(1 + 21 + 6) {
        replies.push(code(&c.reply().await));
    }
    assert_eq!(
        replies.iter().filter(|r| *r == "452 4.5.3").count(),
        4,
        "{replies:?}"
    );
    assert_eq!(code(&c.cmd("NOOP").await), "250 2.0.0");
    assert_eq!(fx.total_messages(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_errors_disconnect() {
    let fx = Fixture::start().await;
    let mut c = inbound(&fx).await;
    for _ in 0..9 {
        assert_eq!(code(&c.cmd("XYZZY").await), "500 5.5.1");
    }
    c.send(b"XYZZY\r\n").await;
    assert_eq!(code(&c.reply().await), "500 5.5.1");
    let last = c.reply().await;
    assert_eq!(code(&last), "421 4.7.0", "{last}");
    assert_eq!(c.until_closed().await, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bdat_with_too_few_bytes_then_a_command() {
    let fx = Fixture::start_with(Setup {
        options: ServerOptions {
            idle_timeout: Duration::from_secs(1),
            ..Setup::default().options
        },
        ..Setup::default()
    })
    .await;
    let mut c = inbound(&fx).await;
    assert_eq!(
        code(&c.cmd("MAIL FROM:<x@other.example>").await),
        "250 2.1.0"
    );
    assert_eq!(
        code(&c.cmd("RCPT TO:<alice@example.com>").await),
        "250 2.1.5"
    );
    // 100 announced, 30 sent, then a command the server must take as data.
    c.send(format!("BDAT 100 LAST\r\n{}QUIT\r\n", "d".repeat(30)).as_bytes())
        .await;
    let reply = c.reply().await;
    assert_eq!(code(&reply), "421 4.4.2", "{reply}");
    assert_eq!(c.until_closed().await, "");
    assert_eq!(fx.total_messages(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_time_out() {
    let fx = Fixture::start_with(Setup {
        options: ServerOptions {
            idle_timeout: Duration::from_millis(700),
            ..Setup::default().options
        },
        limits: SmtpLimits {
            max_session_duration: Duration::from_secs(3),
            ..Setup::default().limits
        },
        ..Setup::default()
    })
    .await;
    // Silent after the greeting.
    let mut c = Raw::open(fx.addr(Protocol::Smtp)).await;
    let reply = c.reply().await;
    assert_eq!(code(&reply), "421 4.4.2", "{reply}");
    assert!(reply.contains("Idle timeout"), "{reply}");
    assert_eq!(c.until_closed().await, "");

    // Silent in the middle of DATA: nothing is stored.
    let mut c = inbound(&fx).await;
    assert_eq!(
        code(&c.cmd("MAIL FROM:<x@other.example>").await),
        "250 2.1.0"
    );
    assert_eq!(
        code(&c.cmd("RCPT TO:<alice@example.com>").await),
        "250 2.1.5"
    );
    assert_eq!(&c.cmd("DATA").await[..3], "354");
    c.send(b"Subject: half\r\n\r\nhalf a message\r\n").await;
    assert_eq!(code(&c.reply().await), "421 4.4.2");

    // Busy but slow: a NOOP every 400 ms never idles out, but the session
    // ends at its time limit.
    let mut c = inbound(&fx).await;
    let started = std::time::Instant::now();
    loop {
        let reply = c.cmd("NOOP").await;
        if reply.starts_with("421 4.4.2") {
            assert!(reply.contains("Session time limit"), "{reply}");
            break;
        }
        assert_eq!(code(&reply), "250 2.0.0");
        assert!(started.elapsed() < Duration::from_secs(10), "never cut off");
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_eq!(fx.total_messages(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_server_says_421() {
    let fx = Fixture::start_with(Setup {
        options: ServerOptions {
            max_connections_per_ip: 1,
            ..Setup::default().options
        },
        ..Setup::default()
    })
    .await;
    let _first = Raw::open(fx.addr(Protocol::Smtp)).await;
    let mut second = Raw::connect(fx.addr(Protocol::Smtp)).await;
    let reply = second.reply().await;
    assert_eq!(code(&reply), "421 4.3.2", "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_transaction_first() {
    let mut fx = Fixture::start().await;
    let p = fx.people;
    let mut idle = inbound(&fx).await;
    let mut busy = inbound(&fx).await;
    assert_eq!(
        code(&busy.cmd("MAIL FROM:<x@other.example>").await),
        "250 2.1.0"
    );
    assert_eq!(
        code(&busy.cmd("RCPT TO:<bob@example.com>").await),
        "250 2.1.5"
    );

    let server = fx.begin_shutdown();
    // The idle session is told at once.
    let reply = idle.reply().await;
    assert_eq!(code(&reply), "421 4.3.2", "{reply}");
    // The busy one completes its message, then gets 421.
    assert_eq!(&busy.cmd("DATA").await[..3], "354");
    busy.send(b"Subject: last one\r\n\r\nbefore the restart\r\n.\r\n")
        .await;
    assert_eq!(code(&busy.reply().await), "250 2.0.0");
    assert_eq!(
        code(&busy.cmd("MAIL FROM:<x@other.example>").await),
        "421 4.3.2"
    );
    tokio::time::timeout(common::SOON, server)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fx.inbox(p.bob).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_injection_is_discarded() {
    // Plaintext commands pipelined after STARTTLS must not run after the
    // handshake (CVE-2011-0411). With no TLS client here the server waits
    // for a handshake that never comes: the injected transaction must get
    // no reply and store nothing.
    let fx = Fixture::start().await;
    let mut c = inbound(&fx).await;
    c.send(
        b"STARTTLS\r\nMAIL FROM:<x@other.example>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n\
          Subject: injected\r\n\r\nx\r\n.\r\n",
    )
    .await;
    assert_eq!(code(&c.reply().await), "220 2.0.0");
    assert!(
        c.silent_for(Duration::from_millis(500)).await,
        "injected commands were answered"
    );
    assert_eq!(fx.total_messages(), 0);
}

/// One account over quota among several: the message is accepted for the
/// others (the refusal is logged).
/// Alone, the same account gets 552 5.2.2 and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_refusals() {
    let fx = Fixture::start().await;
    let p = fx.people;
    let mut c = inbound(&fx).await;
    assert_eq!(
        code(&c.cmd("MAIL FROM:<x@other.example>").await),
        "250 2.1.0"
    );
    assert_eq!(
        code(&c.cmd("RCPT TO:<full@example.com>").await),
        "250 2.1.5"
    );
    assert_eq!(&c.cmd("DATA").await[..3], "354");
    c.send(b"Subject: too much\r\n\r\nx\r\n.\r\n").await;
    assert_eq!(code(&c.reply().await), "552 5.2.2");
    assert_eq!(fx.total_messages(), 0);

    assert_eq!(
        code(&c.cmd("MAIL FROM:<x@other.example>").await),
        "250 2.1.0"
    );
    assert_eq!(
        code(&c.cmd("RCPT TO:<full@example.com>").await),
        "250 2.1.5"
    );
    assert_eq!(
        code(&c.cmd("RCPT TO:<alice@example.com>").await),
        "250 2.1.5"
    );
    assert_eq!(&c.cmd("DATA").await[..3], "354");
    c.send(b"Subject: partly\r\n\r\nx\r\n.\r\n").await;
    assert_eq!(code(&c.reply().await), "250 2.0.0");
    assert_eq!(fx.inbox(p.alice).len(), 1);
    assert_eq!(fx.inbox(p.full).len(), 0);
    assert_eq!(fx.total_messages(), 1);
}
