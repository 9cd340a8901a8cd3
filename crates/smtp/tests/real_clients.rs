//! Independent SMTP clients against a running server: the `lettre` crate,
//! Python's `smtplib` and `swaks`. After each send the store is checked:
//! the message is in the right Inbox(es), exactly once, byte for byte after
//! the trace fields we add.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bulwark_server::Protocol;
use common::{
    ALICE_PW, Fixture, HOSTNAME, Setup, peer_available, run, run_with_input, split_stored,
};
use lettre::address::Envelope;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::{Value, json};

// ---------------------------------------------------------------- lettre

fn tls_params(fx: &Fixture) -> TlsParameters {
    TlsParameters::builder("localhost".into())
        .add_root_certificate(Certificate::from_pem(&fx.cert_pem).unwrap())
        .build_rustls()
        .unwrap()
}

/// A lettre client for the `submission` (STARTTLS) or `submissions`
/// (implicit TLS) listener.
fn mailer(
    fx: &Fixture,
    protocol: Protocol,
    login: &str,
    password: &str,
    mechanism: Mechanism,
) -> AsyncSmtpTransport<Tokio1Executor> {
    let tls = match protocol {
        Protocol::Submissions => Tls::Wrapper(tls_params(fx)),
        _ => Tls::Required(tls_params(fx)),
    };
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(fx.port(protocol))
        .tls(tls)
        .credentials(Credentials::new(login.into(), password.into()))
        .authentication(vec![mechanism])
        .timeout(Some(common::SOON))
        .build()
}

/// What lettre sends as message data: the formatted message and then
/// `CRLF . CRLF`, whose first CRLF the server must keep as data (RFC 5321
/// section 4.1.1.4), so the stored message ends with an extra empty line.
/// lettre adds a Date but no Message-ID; the server adds that.
fn lettre_data(formatted: &[u8]) -> Vec<u8> {
    [formatted, b"\r\n"].concat()
}

fn message(from: &str, to: &[&str], subject: &str) -> Message {
    let mut builder = Message::builder()
        .from(from.parse::<Mailbox>().unwrap())
        .subject(subject);
    for rcpt in to {
        builder = builder.to(rcpt.parse::<Mailbox>().unwrap());
    }
    builder
        .body(format!(
            "Hello from lettre.\r\n.A line starting with a dot.\r\n{subject}\r\n"
        ))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lettre_submission_starttls_delivers_once() {
    let fx = Fixture::start().await;
    let p = fx.people;
    let mailer = mailer(
        &fx,
        Protocol::Submission,
        "alice@example.com",
        ALICE_PW,
        Mechanism::Plain,
    );
    let email = message(
        "Alice <alice@example.com>",
        &["Bob <bob@example.com>"],
        "starttls",
    );
    let sent = email.formatted();
    let response = mailer.send(email).await.unwrap();
    assert_eq!(response.code().to_string(), "250");

    let inbox = fx.inbox(p.bob);
    assert_eq!(inbox.len(), 1);
    let (trace, client) = split_stored(&inbox[0], &["Message-ID"]);
    assert_eq!(client, lettre_data(&sent));
    assert!(
        trace.starts_with("Return-Path: <alice@example.com>\r\n"),
        "{trace}"
    );
    assert!(
        trace.contains(&format!("by {HOSTNAME} (Bulwark) with ESMTPSA id ")),
        "{trace}"
    );
    assert!(trace.contains("\tfor <bob@example.com>;"), "{trace}");
    assert_eq!(fx.total_messages(), 1);
    // No delegation, no send-as audit.
    assert!(fx.audit("mail.send-as").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lettre_submissions_implicit_tls_group_expanded_once_per_member() {
    let fx = Fixture::start().await;
    let p = fx.people;
    let mailer = mailer(
        &fx,
        Protocol::Submissions,
        "alice@example.com",
        ALICE_PW,
        Mechanism::Login,
    );
    // team = alice, bob, leads(carol, bob); bob is also named directly.
    let email = message(
        "alice@example.com",
        &["team@example.com", "bob@example.com"],
        "group",
    );
    let sent = email.formatted();
    mailer.send(email).await.unwrap();
    for account in [p.alice, p.bob, p.carol] {
        let inbox = fx.inbox(account);
        assert_eq!(inbox.len(), 1, "account {account:?}");
        let (trace, client) = split_stored(&inbox[0], &["Message-ID"]);
        assert_eq!(client, lettre_data(&sent));
        // Two envelope recipients: none named in Received.
        assert!(!trace.contains("\tfor <"), "{trace}");
    }
    assert_eq!(fx.total_messages(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lettre_send_as_with_grant_is_delivered_and_audited() {
    let fx = Fixture::start().await;
    let p = fx.people;
    let mailer = mailer(
        &fx,
        Protocol::Submission,
        "alice@example.com",
        ALICE_PW,
        Mechanism::Plain,
    );
    let email = message(
        "Shared Desk <shared@example.com>",
        &["carol@example.com"],
        "send-as",
    );
    let sent = email.formatted();
    mailer.send(email).await.unwrap();
    let inbox = fx.inbox(p.carol);
    assert_eq!(inbox.len(), 1);
    assert_eq!(
        split_stored(&inbox[0], &["Message-ID"]).1,
        lettre_data(&sent)
    );

    let records = fx.audit("mail.send-as");
    assert_eq!(records.len(), 1, "{records:?}");
    let event = &records[0].event;
    assert_eq!(event.actor, "alice@example.com");
    assert_eq!(event.logon_type, bulwark_audit::LogonType::Delegate);
    assert_eq!(event.target.as_deref(), Some("shared@example.com"));
    assert_eq!(event.outcome, bulwark_audit::Outcome::Success);
    assert_eq!(event.protocol, "submission");
    assert_eq!(event.client_ip.as_deref(), Some("127.0.0.1"));

    // Send on behalf: From the boss, Sender alice.
    let email = Message::builder()
        .from("The Boss <boss@example.com>".parse::<Mailbox>().unwrap())
        .sender("Alice <alice@example.com>".parse::<Mailbox>().unwrap())
        .to("carol@example.com".parse::<Mailbox>().unwrap())
        .subject("on behalf")
        .body(String::from("Signed for the boss.\r\n"))
        .unwrap();
    mailer.send(email).await.unwrap();
    assert_eq!(fx.inbox(p.carol).len(), 2);
    let records = fx.audit("mail.send-on-behalf");
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].event.target.as_deref(), Some("boss@example.com"));
    // The verified chain still holds.
    let all = fx.store.audit_records(0, 10_000).unwrap();
    let head = fx.store.audit_head().unwrap();
    assert_eq!(bulwark_audit::verify(&all, head), Ok(all.len() as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lettre_spoofing_is_refused_and_nothing_stored() {
    let fx = Fixture::start().await;
    let mailer = mailer(
        &fx,
        Protocol::Submission,
        "alice@example.com",
        ALICE_PW,
        Mechanism::Plain,
    );

    // From: someone else, no grant.
    let err = mailer
        .send(message(
            "Bob <bob@example.com>",
            &["carol@example.com"],
            "spoof",
        ))
        .await
        .unwrap_err();
    assert_eq!(
        err.status().map(|c| c.to_string()).as_deref(),
        Some("550"),
        "{err}"
    );
    assert!(
        err.to_string().contains("not one of your addresses"),
        "{err}"
    );

    // Envelope sender of someone else, with an honest From:.
    let email = message(
        "alice@example.com",
        &["carol@example.com"],
        "envelope spoof",
    );
    let envelope = Envelope::new(
        Some("bob@example.com".parse().unwrap()),
        vec!["carol@example.com".parse().unwrap()],
    )
    .unwrap();
    let err = mailer
        .send_raw(&envelope, &email.formatted())
        .await
        .unwrap_err();
    assert_eq!(
        err.status().map(|c| c.to_string()).as_deref(),
        Some("550"),
        "{err}"
    );

    // Send-on-behalf without the Sender field.
    let err = mailer
        .send(message(
            "boss@example.com",
            &["carol@example.com"],
            "no sender",
        ))
        .await
        .unwrap_err();
    assert_eq!(
        err.status().map(|c| c.to_string()).as_deref(),
        Some("550"),
        "{err}"
    );

    // Without an outbound queue, a recipient outside our domains is
    // refused, never accepted and dropped.
    let err = mailer
        .send(message(
            "alice@example.com",
            &["friend@gmail.example"],
            "remote",
        ))
        .await
        .unwrap_err();
    assert_eq!(
        err.status().map(|c| c.to_string()).as_deref(),
        Some("550"),
        "{err}"
    );
    assert!(err.to_string().contains("turned off"), "{err}");

    assert_eq!(fx.total_messages(), 0);
    assert!(fx.audit("mail.send-as").is_empty());
    assert!(fx.audit("mail.send-on-behalf").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lettre_app_password_and_bad_credentials() {
    let fx = Fixture::start_with(Setup {
        policy: bulwark_directory::LimitPolicy {
            max_failures_per_account: 2,
            ..bulwark_directory::LimitPolicy::default()
        },
        ..Setup::default()
    })
    .await;
    let p = fx.people;
    let (_, secret) = fx
        .directory
        .add_app_password(&bulwark_audit::Actor::local_admin("t"), p.bob, "phone")
        .unwrap();
    let mailer_app = mailer(
        &fx,
        Protocol::Submissions,
        "bob@example.com",
        secret.expose(),
        Mechanism::Plain,
    );
    mailer_app
        .send(message(
            "bob@example.com",
            &["alice@example.com"],
            "app password",
        ))
        .await
        .unwrap();
    assert_eq!(fx.inbox(p.alice).len(), 1);

    let wrong = mailer(
        &fx,
        Protocol::Submission,
        "alice@example.com",
        "not the password",
        Mechanism::Plain,
    );
    for _ in 0..2 {
        let err = wrong
            .send(message("alice@example.com", &["bob@example.com"], "x"))
            .await
            .unwrap_err();
        assert_eq!(
            err.status().map(|c| c.to_string()).as_deref(),
            Some("535"),
            "{err}"
        );
    }
    // Now banned: even the right password gets 454, and an unknown user
    // gets the same 535 as a wrong password.
    let right = mailer(
        &fx,
        Protocol::Submission,
        "alice@example.com",
        ALICE_PW,
        Mechanism::Plain,
    );
    let err = right
        .send(message("alice@example.com", &["bob@example.com"], "x"))
        .await
        .unwrap_err();
    assert_eq!(
        err.status().map(|c| c.to_string()).as_deref(),
        Some("454"),
        "{err}"
    );
    let nobody = mailer(
        &fx,
        Protocol::Submission,
        "nobody@example.com",
        "whatever it is",
        Mechanism::Plain,
    );
    let err = nobody
        .send(message("nobody@example.com", &["bob@example.com"], "x"))
        .await
        .unwrap_err();
    assert_eq!(
        err.status().map(|c| c.to_string()).as_deref(),
        Some("535"),
        "{err}"
    );
    assert_eq!(fx.inbox(p.bob).len(), 0);
}

// ---------------------------------------------------------------- smtplib

async fn smtplib(args: Value) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/smtplib_send.py");
    // The arguments go through stdin: a big message would not fit argv.
    let out = run_with_input("python3", vec![script.to_string()], args.to_string()).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "smtplib script output is not JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn inbound_message(subject: &str) -> String {
    format!(
        "From: Sender <sender@other.example>\r\nTo: alice@example.com\r\nSubject: {subject}\r\n\
         Date: Tue, 1 Jul 2025 10:00:00 +0000\r\nMessage-ID: <{subject}@other.example>\r\n\r\n\
         Hello.\r\n.leading dot\r\n\r\nBye.\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtplib_inbound_plain_to_alias() {
    if !peer_available("python3") {
        return;
    }
    let fx = Fixture::start().await;
    let p = fx.people;
    let msg = inbound_message("alias");
    let out = smtplib(json!({
        "host": "127.0.0.1", "port": fx.port(Protocol::Smtp), "mode": "plain",
        "sender": "sender@other.example", "to": ["A.Smith@example.com"], "message": msg,
    }))
    .await;
    assert_eq!(out["ok"], true, "{out}");
    // STARTTLS offered, AUTH not.
    assert!(out["features"].get("starttls").is_some(), "{out}");
    assert!(out["features"].get("auth").is_none(), "{out}");
    assert!(out["features"]["size"].as_str() == Some("262144"), "{out}");
    let inbox = fx.inbox(p.alice);
    assert_eq!(inbox.len(), 1);
    let (trace, client) = split_stored(&inbox[0], &[]);
    assert_eq!(client, msg.as_bytes());
    assert!(
        trace.starts_with("Return-Path: <sender@other.example>\r\n"),
        "{trace}"
    );
    assert!(
        trace.contains("Received: from python.test ([127.0.0.1])"),
        "{trace}"
    );
    assert!(trace.contains(" with ESMTP id "), "{trace}");
    assert!(trace.contains("\tfor <a.smith@example.com>;"), "{trace}");
    assert_eq!(fx.total_messages(), 1);
}

/// RCPT reuses what an address reached a moment ago, and a directory
/// change made through the server's store is seen by the very next RCPT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtplib_inbound_follows_alias_changes_at_once() {
    if !peer_available("python3") {
        return;
    }
    let fx = Fixture::start().await;
    let p = fx.people;
    let admin = bulwark_audit::Actor::local_admin("t");
    let send = |subject: &str| {
        json!({
            "host": "127.0.0.1", "port": fx.port(Protocol::Smtp), "mode": "plain",
            "sender": "sender@other.example", "to": ["a.smith@example.com"],
            "message": inbound_message(subject),
        })
    };
    for subject in ["first", "second"] {
        let out = smtplib(send(subject)).await;
        assert_eq!(out["ok"], true, "{out}");
    }
    assert_eq!(fx.inbox(p.alice).len(), 2);

    let alias: bulwark_core::EmailAddress = "a.smith@example.com".parse().unwrap();
    fx.store.remove_alias(&admin, &alias).unwrap();
    let out = smtplib(send("after-removal")).await;
    assert_eq!(out["ok"], false, "{out}");
    assert_eq!(out["refused"]["a.smith@example.com"][0], 550, "{out}");

    fx.store.add_alias(&admin, p.bob, &alias).unwrap();
    let out = smtplib(send("moved")).await;
    assert_eq!(out["ok"], true, "{out}");
    assert_eq!(fx.inbox(p.alice).len(), 2);
    assert_eq!(fx.inbox(p.bob).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtplib_inbound_starttls_mixed_recipients() {
    if !peer_available("python3") {
        return;
    }
    let fx = Fixture::start().await;
    let p = fx.people;
    let msg = inbound_message("mixed");
    let out = smtplib(json!({
        "host": "127.0.0.1", "port": fx.port(Protocol::Smtp), "mode": "starttls",
        "cafile": fx.cert_path, "sender": "sender@other.example",
        "to": ["bob@example.com", "ghost@example.com", "victim@elsewhere.example", "carol+news@example.com"],
        "message": msg,
    }))
    .await;
    assert_eq!(out["ok"], true, "{out}");
    assert_eq!(out["refused"]["ghost@example.com"][0], 550, "{out}");
    assert!(
        out["refused"]["ghost@example.com"][1]
            .as_str()
            .unwrap()
            .starts_with("5.1.1"),
        "{out}"
    );
    assert_eq!(out["refused"]["victim@elsewhere.example"][0], 550, "{out}");
    assert!(
        out["refused"]["victim@elsewhere.example"][1]
            .as_str()
            .unwrap()
            .starts_with("5.7.1"),
        "{out}"
    );
    for account in [p.bob, p.carol] {
        let inbox = fx.inbox(account);
        assert_eq!(inbox.len(), 1);
        let (trace, client) = split_stored(&inbox[0], &[]);
        assert_eq!(client, msg.as_bytes());
        assert!(trace.contains(" with ESMTPS id "), "{trace}");
    }
    assert_eq!(fx.total_messages(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtplib_submission_adds_date_and_message_id() {
    if !peer_available("python3") {
        return;
    }
    let fx = Fixture::start().await;
    let p = fx.people;
    let msg = "From: Alice <a.smith@example.com>\r\nTo: bob@example.com\r\nSubject: bare\r\n\r\nNo Date, no Message-ID.\r\n";
    // submissions (implicit TLS), AUTH LOGIN without initial response.
    let out = smtplib(json!({
        "host": "127.0.0.1", "port": fx.port(Protocol::Submissions), "mode": "ssl",
        "cafile": fx.cert_path, "user": "alice@example.com", "password": ALICE_PW,
        "mechanism": "LOGIN", "initial_response": false,
        "sender": "alice@example.com", "to": ["bob@example.com"], "message": msg,
    }))
    .await;
    assert_eq!(out["ok"], true, "{out}");
    let inbox = fx.inbox(p.bob);
    assert_eq!(inbox.len(), 1);
    let (trace, client) = split_stored(&inbox[0], &["Date", "Message-ID"]);
    assert_eq!(client, msg.as_bytes());
    assert!(trace.contains(&format!("@{HOSTNAME}>\r\n")), "{trace}");

    // submission with STARTTLS, AUTH PLAIN with initial response.
    let out = smtplib(json!({
        "host": "127.0.0.1", "port": fx.port(Protocol::Submission), "mode": "starttls",
        "cafile": fx.cert_path, "user": "alice@example.com", "password": ALICE_PW,
        "sender": "a.smith@example.com", "to": ["team@example.com"],
        "message": inbound_message("to-team").replace("sender@other.example", "alice@example.com"),
    }))
    .await;
    assert_eq!(out["ok"], true, "{out}");
    assert!(
        out["features"]["auth"].as_str().unwrap().contains("PLAIN"),
        "{out}"
    );
    assert_eq!(fx.inbox(p.bob).len(), 2);
    assert_eq!(fx.inbox(p.alice).len(), 1);
    assert_eq!(fx.inbox(p.carol).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtplib_refusals() {
    if !peer_available("python3") {
        return;
    }
    let fx = Fixture::start().await;
    // AUTH is not offered before STARTTLS, and refused when tried anyway.
    let out = smtplib(json!({
        "host": "127.0.0.1", "port": fx.port(Protocol::Submission), "mode": "plain",
        "user": "alice@example.com", "password": ALICE_PW,
        "sender": "alice@example.com", "to": ["bob@example.com"], "message": "From: alice@example.com\r\n\r\nx\r\n",
    }))
    .await;
    assert!(out["features"].get("auth").is_none(), "{out}");
    assert_eq!(out["code"], 538, "{out}");
    assert_eq!(out["stage"], "auth", "{out}");

    // Without logging in: 530 at MAIL.
    let out = smtplib(json!({
        "host": "127.0.0.1", "port": fx.port(Protocol::Submission), "mode": "starttls",
        "cafile": fx.cert_path,
        "sender": "alice@example.com", "to": ["bob@example.com"], "message": "From: alice@example.com\r\n\r\nx\r\n",
    }))
    .await;
    assert_eq!(out["code"], 530, "{out}");

    // smtplib sends SIZE= when offered: too big is refused at MAIL (552).
    let big = format!(
        "From: x@other.example\r\n\r\n{}\r\n",
        "y".repeat(300 * 1024)
    );
    let out = smtplib(json!({
        "host": "127.0.0.1", "port": fx.port(Protocol::Smtp), "mode": "plain",
        "sender": "x@other.example", "to": ["alice@example.com"], "message": big,
    }))
    .await;
    assert_eq!(out["code"], 552, "{out}");
    assert!(
        out["message"].as_str().unwrap().starts_with("5.3.4"),
        "{out}"
    );

    // A spoofed From: on submission.
    let out = smtplib(json!({
        "host": "127.0.0.1", "port": fx.port(Protocol::Submissions), "mode": "ssl",
        "cafile": fx.cert_path, "user": "alice@example.com", "password": ALICE_PW,
        "sender": "alice@example.com", "to": ["bob@example.com"],
        "message": "From: Carol <carol@example.com>\r\nSubject: spoof\r\n\r\nx\r\n",
    }))
    .await;
    assert_eq!(out["code"], 550, "{out}");
    assert!(
        out["message"].as_str().unwrap().starts_with("5.7.1"),
        "{out}"
    );

    // Over quota, single recipient: 552 5.2.2.
    let out = smtplib(json!({
        "host": "127.0.0.1", "port": fx.port(Protocol::Smtp), "mode": "plain",
        "sender": "x@other.example", "to": ["full@example.com"], "message": inbound_message("quota"),
    }))
    .await;
    assert_eq!(out["code"], 552, "{out}");
    assert!(
        out["message"].as_str().unwrap().starts_with("5.2.2"),
        "{out}"
    );
    assert_eq!(fx.total_messages(), 0);
}

// ---------------------------------------------------------------- swaks

fn swaks_args(fx: &Fixture, protocol: Protocol, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--server".into(),
        "127.0.0.1".into(),
        "--port".into(),
        fx.port(protocol).to_string(),
        "--helo".into(),
        "swaks.test".into(),
        "--timeout".into(),
        "20".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

async fn swaks(fx: &Fixture, protocol: Protocol, extra: &[&str]) -> (bool, String) {
    let out = run("swaks", swaks_args(fx, protocol, extra)).await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_inbound_group_and_pipelining() {
    if !peer_available("swaks") {
        return;
    }
    let fx = Fixture::start().await;
    let p = fx.people;
    let (ok, out) = swaks(
        &fx,
        Protocol::Smtp,
        &[
            "--pipeline",
            "--from",
            "news@other.example",
            "--to",
            "team@example.com,leads@example.com",
            "--header",
            "Subject: swaks group",
            "--body",
            "Hello team.",
        ],
    )
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("250 2.0.0 OK id="), "{out}");
    // team and leads overlap (bob, carol): each member once.
    for account in [p.alice, p.bob, p.carol] {
        let inbox = fx.inbox(account);
        assert_eq!(inbox.len(), 1, "{account:?}");
        let text = String::from_utf8_lossy(&inbox[0]).into_owned();
        assert!(text.contains("Subject: swaks group\r\n"), "{text}");
        assert!(
            text.contains("Received: from swaks.test ([127.0.0.1])"),
            "{text}"
        );
    }
    assert_eq!(fx.total_messages(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_submission_starttls_and_implicit_tls() {
    if !peer_available("swaks") {
        return;
    }
    let fx = Fixture::start().await;
    let p = fx.people;
    let cert = fx.cert_path.to_string_lossy().into_owned();
    let (ok, out) = swaks(
        &fx,
        Protocol::Submission,
        &[
            "--tls",
            "--tls-verify",
            "--tls-ca-path",
            &cert,
            "--auth",
            "LOGIN",
            "--auth-user",
            "alice@example.com",
            "--auth-password",
            ALICE_PW,
            "--from",
            "alice@example.com",
            "--to",
            "bob@example.com",
            "--header",
            "From: alice@example.com",
            "--header",
            "Subject: swaks starttls",
        ],
    )
    .await;
    assert!(ok, "{out}");
    let (ok, out) = swaks(
        &fx,
        Protocol::Submissions,
        &[
            "--tls-on-connect",
            "--tls-verify",
            "--tls-ca-path",
            &cert,
            "--auth",
            "PLAIN",
            "--auth-user",
            "alice@example.com",
            "--auth-password",
            ALICE_PW,
            "--from",
            "alice@example.com",
            "--to",
            "bob@example.com",
            "--header",
            "From: alice@example.com",
            "--header",
            "Subject: swaks tls-on-connect",
        ],
    )
    .await;
    assert!(ok, "{out}");
    let inbox = fx.inbox(p.bob);
    assert_eq!(inbox.len(), 2);
    for stored in &inbox {
        let text = String::from_utf8_lossy(stored);
        assert!(text.contains(" with ESMTPSA id "), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_hostile_sessions() {
    if !peer_available("swaks") {
        return;
    }
    let fx = Fixture::start().await;
    // Open relay attempt.
    let (ok, out) = swaks(
        &fx,
        Protocol::Smtp,
        &[
            "--from",
            "spammer@other.example",
            "--to",
            "victim@elsewhere.example",
        ],
    )
    .await;
    assert!(!ok, "{out}");
    assert!(out.contains("550 5.7.1"), "{out}");
    // Unknown local recipient.
    let (ok, out) = swaks(
        &fx,
        Protocol::Smtp,
        &["--from", "x@other.example", "--to", "ghost@example.com"],
    )
    .await;
    assert!(!ok, "{out}");
    assert!(out.contains("550 5.1.1"), "{out}");
    // AUTH on the plaintext submission port: not advertised, and refused
    // when forced.
    let (ok, out) = swaks(
        &fx,
        Protocol::Submission,
        &[
            "--auth",
            "PLAIN",
            "--auth-user",
            "alice@example.com",
            "--auth-password",
            ALICE_PW,
            "--from",
            "alice@example.com",
            "--to",
            "bob@example.com",
        ],
    )
    .await;
    assert!(!ok, "{out}");
    assert!(!out.contains("235 2.7.0"), "{out}");
    // Spoofed From: on submission.
    let cert = fx.cert_path.to_string_lossy().into_owned();
    let (ok, out) = swaks(
        &fx,
        Protocol::Submission,
        &[
            "--tls",
            "--tls-verify",
            "--tls-ca-path",
            &cert,
            "--auth",
            "PLAIN",
            "--auth-user",
            "alice@example.com",
            "--auth-password",
            ALICE_PW,
            "--from",
            "alice@example.com",
            "--to",
            "bob@example.com",
            "--header",
            "From: ceo@example.com",
        ],
    )
    .await;
    assert!(!ok, "{out}");
    assert!(out.contains("550 5.7.1"), "{out}");
    assert_eq!(fx.total_messages(), 0);
}
