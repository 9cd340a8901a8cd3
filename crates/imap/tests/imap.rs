//! End-to-end tests over real sockets with a raw client: TLS and login
//! rules, authorization between accounts, hostile input, multi-session
//! visibility and IDLE.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::AsyncReadExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_needs_tls_and_starttls_drops_pipelined_plaintext() {
    let fx = start().await;
    let (mut c, greeting) = fx.plain().await;
    assert!(
        greeting.contains("STARTTLS") && greeting.contains("LOGINDISABLED"),
        "{greeting}"
    );
    assert!(!greeting.contains("AUTH=PLAIN"));
    let r = c.run(&format!("LOGIN {ALICE} \"{PASSWORD}\"")).await;
    assert!(r.last().unwrap().contains("NO [PRIVACYREQUIRED]"), "{r:?}");
    let r = c.run("AUTHENTICATE PLAIN AGFsaWNlAHg=").await;
    assert!(r.last().unwrap().contains("NO"), "{r:?}");
    let r = c.run("SELECT INBOX").await;
    assert!(r.last().unwrap().contains("BAD"), "{r:?}");

    // STARTTLS with a command pipelined behind it in the same packet: the
    // injected LOGIN must never run (RFC 9051 section 6.2.1).
    c.write(format!("s1 STARTTLS\r\nevil LOGIN {ALICE} \"{PASSWORD}\"\r\n").as_bytes())
        .await;
    let reply = c.line().await;
    assert!(reply.starts_with("s1 OK"), "{reply}");
    let tcp = c.into_inner();
    let connector = tokio_rustls::TlsConnector::from(fx.client_tls.clone());
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let mut c = Client::new(Box::new(tls));
    let r = c.run("CAPABILITY").await;
    let caps = joined(&r);
    assert!(
        caps.contains("AUTH=PLAIN") && !caps.contains("LOGINDISABLED"),
        "{caps}"
    );
    assert!(!caps.contains("evil"), "{caps}");
    let r = c.run("SELECT INBOX").await;
    assert!(
        r.last().unwrap().contains("BAD"),
        "injected LOGIN ran: {r:?}"
    );
    // AUTHENTICATE PLAIN with SASL-IR.
    use base64::Engine as _;
    let ir = base64::engine::general_purpose::STANDARD.encode(format!("\0{ALICE}\0{PASSWORD}"));
    let r = c.run(&format!("AUTHENTICATE PLAIN {ir}")).await;
    assert!(ok(&r), "{r:?}");
    let r = c.run("LIST \"\" *").await;
    let list = joined(&r);
    for want in [
        "(\\HasNoChildren) \"/\" INBOX",
        "(\\HasNoChildren \\Sent) \"/\" Sent",
        "(\\HasNoChildren \\Drafts) \"/\" Drafts",
        "(\\HasNoChildren \\Junk) \"/\" Junk",
        "(\\HasNoChildren \\Trash) \"/\" Trash",
        "(\\HasNoChildren \\Archive) \"/\" Archive",
    ] {
        assert!(list.contains(want), "{want} missing in {list}");
    }
    let r = c.run("LOGOUT").await;
    assert!(joined(&r).contains("* BYE") && ok(&r), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticate_without_initial_response() {
    let fx = start().await;
    let mut c = fx.tls().await;
    c.write(b"a AUTHENTICATE PLAIN\r\n").await;
    assert_eq!(c.line().await.trim_end(), "+");
    use base64::Engine as _;
    let msg = base64::engine::general_purpose::STANDARD.encode(format!("{BOB}\0{BOB}\0{PASSWORD}"));
    c.write(format!("{msg}\r\n").as_bytes()).await;
    let r = c.until("a").await;
    assert!(ok(&r), "{r:?}");
    // Acting as someone else is refused.
    let mut c = fx.tls().await;
    let msg =
        base64::engine::general_purpose::STANDARD.encode(format!("{ALICE}\0{BOB}\0{PASSWORD}"));
    let r = c.run(&format!("AUTHENTICATE PLAIN {msg}")).await;
    assert!(
        r.last().unwrap().contains("NO [AUTHENTICATIONFAILED]"),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_feed_the_rate_limit() {
    let fx = start().await;
    let mut failures = 0;
    while failures < 5 {
        let mut c = fx.tls().await;
        for _ in 0..3 {
            if failures == 5 {
                break;
            }
            let r = c.run(&format!("LOGIN {ALICE} \"wrong password!\"")).await;
            assert!(joined(&r).contains("NO [AUTHENTICATIONFAILED]"), "{r:?}");
            failures += 1;
            if joined(&r).contains("* BYE") {
                break;
            }
        }
    }
    // The account is now banned: even the right password is refused.
    let mut c = fx.tls().await;
    let r = c.run(&format!("LOGIN {ALICE} \"{PASSWORD}\"")).await;
    assert!(r.last().unwrap().contains("NO"), "{r:?}");
    assert!(joined(&r).contains("try again later"), "{r:?}");
    // Bob is not affected.
    let mut c = fx.tls().await;
    let r = c.run(&format!("LOGIN {BOB} \"{PASSWORD}\"")).await;
    assert!(ok(&r), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_never_sees_another_users_mailboxes() {
    let fx = start().await;
    fx.deliver(fx.alice, &message("for alice only")).await;
    let mut alice = fx.login(ALICE).await;
    assert!(ok(&alice.run("CREATE Private/Plans").await));
    alice.write(b"ap APPEND Private {9}\r\n").await;
    let cont = alice.line().await;
    assert!(cont.starts_with("+"), "{cont}");
    alice.write(b"secret!\r\n\r\n").await;
    let r = alice.until("ap").await;
    assert!(ok(&r), "{r:?}");

    let mut bob = fx.login(BOB).await;
    for pattern in [
        "\"\" *",
        "\"\" %",
        "\"../\" *",
        "\"\" ../*",
        "\"\" *Private*",
        "\"/\" *",
        "\"~alice\" *",
    ] {
        let r = bob.run(&format!("LIST {pattern}")).await;
        let text = joined(&r);
        assert!(ok(&r), "{pattern}: {r:?}");
        assert!(!text.contains("Private"), "{pattern} leaked: {text}");
    }
    for command in [
        "SELECT Private",
        "EXAMINE Private/Plans",
        "STATUS Private (MESSAGES)",
        "DELETE Private/Plans",
    ] {
        let r = bob.run(command).await;
        assert!(r.last().unwrap().contains(" NO "), "{command}: {r:?}");
        assert!(!joined(&r).contains("* STATUS"), "{command}: {r:?}");
    }
    let r = bob.run("APPEND Private {3+}\r\nabc").await;
    assert!(r.last().unwrap().contains("NO [TRYCREATE]"), "{r:?}");
    // Bob's INBOX is his own: Alice's message is not there.
    let r = bob.run("SELECT INBOX").await;
    assert!(joined(&r).contains("* 0 EXISTS"), "{r:?}");
    fx.deliver(fx.bob, &message("for bob")).await;
    let r = bob.run("NOOP").await;
    assert!(joined(&r).contains("* 1 EXISTS"), "{r:?}");
    for command in [
        "COPY 1 Private",
        "MOVE 1 Private/Plans",
        "UID COPY 1:* Private",
    ] {
        let r = bob.run(command).await;
        assert!(
            r.last().unwrap().contains("NO [TRYCREATE]"),
            "{command}: {r:?}"
        );
    }
    let r = bob
        .run("FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        .await;
    let text = joined(&r);
    assert!(
        text.contains("for bob") && !text.contains("alice only"),
        "{text}"
    );
    let r = bob.run("STATUS INBOX (MESSAGES)").await;
    assert!(joined(&r).contains("MESSAGES 1"), "{r:?}");
    // Alice's data is intact.
    let r = alice.run("STATUS Private (MESSAGES)").await;
    assert!(joined(&r).contains("MESSAGES 1"), "{r:?}");
    let r = alice.run("STATUS INBOX (MESSAGES)").await;
    assert!(joined(&r).contains("MESSAGES 1"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_answered_and_the_session_goes_on() {
    let fx = start().await;
    let mut c = fx.login(ALICE).await;
    // A 100 MB literal announced beyond APPENDLIMIT: refused unread.
    let r = c.run("APPEND INBOX {100000000}").await;
    assert!(r.last().unwrap().contains("NO [TOOBIG]"), "{r:?}");
    // The same as LITERAL+: the bytes come anyway and are thrown away.
    c.write(b"x1 LOGIN {70000+}\r\n").await;
    c.write(&vec![b'a'; 70_000]).await;
    c.write(b"\r\n").await;
    let r = c.until("x1").await;
    assert!(r.last().unwrap().contains("BAD"), "{r:?}");
    assert!(ok(&c.run("NOOP").await));
    // Deeply nested parentheses.
    let deep = format!("SEARCH {}ALL{}", "(".repeat(500), ")".repeat(500));
    let r = c.run(&deep).await;
    assert!(r.last().unwrap().contains("BAD"), "{r:?}");
    // Commands in the wrong state.
    let r = c.run("FETCH 1 FLAGS").await;
    assert!(r.last().unwrap().contains("BAD"), "{r:?}");
    let r = c.run(&format!("LOGIN {ALICE} x")).await;
    assert!(r.last().unwrap().contains("BAD"), "{r:?}");
    // Invalid mailbox names.
    for name in ["\"&Jjo\"", "\"&AGE-\"", "\"a//b\"", "\"..\"", "\"&2D0-\""] {
        let r = c.run(&format!("CREATE {name}")).await;
        assert!(r.last().unwrap().contains(" NO "), "{name}: {r:?}");
    }
    let r = c.run("SELECT \"&Jjo\"").await;
    assert!(r.last().unwrap().contains(" NO "), "{r:?}");
    // A 10k-element sequence set is answered correctly.
    for i in 0..3 {
        fx.deliver(fx.alice, &message(&format!("m{i}"))).await;
    }
    assert!(ok(&c.run("SELECT INBOX").await));
    let set: Vec<String> = (0..10_000).map(|i| (i % 3 + 1).to_string()).collect();
    let r = c.run(&format!("FETCH {} (FLAGS)", set.join(","))).await;
    assert!(ok(&r), "{:?}", r.last());
    assert_eq!(r.iter().filter(|l| l.starts_with("* ")).count(), 3);
    let r = c.run(&format!("UID SEARCH UID {}", set.join(","))).await;
    assert!(
        ok(&r) && joined(&r).contains("* SEARCH 1 2 3"),
        "{:?}",
        r.first()
    );
    // Beyond the limit: BAD, and the session goes on.
    let set: Vec<String> = (0..20_000).map(|i| (i % 3 + 1).to_string()).collect();
    let r = c.run(&format!("FETCH {} (FLAGS)", set.join(","))).await;
    assert!(r.last().unwrap().contains("BAD"), "{:?}", r.last());
    let r = c.run("FETCH 99 FLAGS").await;
    assert!(r.last().unwrap().contains("BAD"), "{r:?}");
    assert!(ok(&c.run("NOOP").await));
    // An overlong line ends the session with BYE.
    c.write(&vec![b'a'; 70 * 1024]).await;
    let line = c.line().await;
    assert!(line.starts_with("* BYE"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_literal_that_never_finishes_times_out() {
    let fx = start_with(Duration::from_secs(1), bulwark_imap::Limits::default()).await;
    let mut c = fx.login(ALICE).await;
    c.write(b"a APPEND INBOX {1000}\r\n").await;
    assert!(c.line().await.starts_with("+"));
    c.write(b"only a little").await;
    let started = Instant::now();
    let mut io = c.into_inner();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(SOON, io.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(
        n,
        0,
        "connection must close: {:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sees_delivery_flags_and_expunge_within_a_second() {
    let fx = start().await;
    fx.deliver(fx.alice, &message("first")).await;
    let mut idler = fx.login(ALICE).await;
    let r = idler.run("SELECT INBOX").await;
    assert!(joined(&r).contains("* 1 EXISTS"), "{r:?}");
    idler.write(b"i1 IDLE\r\n").await;
    assert!(idler.line().await.starts_with("+"));

    // New mail, delivered as SMTP would.
    let t = Instant::now();
    fx.deliver(fx.alice, &message("second")).await;
    let line = idler.line_within(Duration::from_secs(1)).await;
    assert_eq!(line.as_deref().map(str::trim_end), Some("* 2 EXISTS"));
    assert!(t.elapsed() < Duration::from_secs(1));

    // A flag changed in another session.
    let mut other = fx.login(ALICE).await;
    assert!(ok(&other.run("SELECT INBOX").await));
    let t = Instant::now();
    assert!(ok(&other.run("STORE 1 +FLAGS (\\Flagged)").await));
    let line = idler.line_within(Duration::from_secs(1)).await;
    assert_eq!(
        line.as_deref().map(str::trim_end),
        Some("* 1 FETCH (FLAGS (\\Flagged))")
    );
    assert!(t.elapsed() < Duration::from_secs(1));

    // An expunge in another session.
    let t = Instant::now();
    assert!(ok(&other.run("STORE 1 +FLAGS.SILENT (\\Deleted)").await));
    let line = idler.line_within(Duration::from_secs(1)).await;
    assert_eq!(
        line.as_deref().map(str::trim_end),
        Some("* 1 FETCH (FLAGS (\\Deleted \\Flagged))")
    );
    let r = other.run("EXPUNGE").await;
    assert!(ok(&r) && joined(&r).contains("* 1 EXPUNGE"), "{r:?}");
    let line = idler.line_within(Duration::from_secs(1)).await;
    assert_eq!(line.as_deref().map(str::trim_end), Some("* 1 EXPUNGE"));
    assert!(t.elapsed() < Duration::from_secs(2));

    idler.write(b"DONE\r\n").await;
    let r = idler.until("i1").await;
    assert!(ok(&r), "{r:?}");
    let r = idler.run("FETCH 1:* (UID)").await;
    assert!(joined(&r).contains("* 1 FETCH (UID 2)"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expunges_by_others_wait_for_an_allowed_moment() {
    let fx = start().await;
    for i in 0..3 {
        fx.deliver(fx.alice, &message(&format!("m{i}"))).await;
    }
    let mut a = fx.login(ALICE).await;
    let mut b = fx.login(ALICE).await;
    assert!(ok(&a.run("SELECT INBOX").await));
    assert!(ok(&b.run("SELECT INBOX").await));
    assert!(ok(&b.run("STORE 2 +FLAGS.SILENT (\\Deleted)").await));
    assert!(ok(&b.run("EXPUNGE").await));
    fx.deliver(fx.alice, &message("m3")).await;

    // FETCH, STORE and SEARCH by sequence number: no EXPUNGE, the numbers
    // the client knows stay valid.
    let r = a.run("FETCH 1:* (UID)").await;
    let text = joined(&r);
    assert!(!text.contains("EXPUNGE"), "{text}");
    assert!(text.contains("* 3 FETCH (UID 3)"), "{text}");
    assert!(text.contains("* 4 EXISTS"), "{text}");
    let r = a.run("SEARCH ALL").await;
    assert!(!joined(&r).contains("EXPUNGE"), "{r:?}");
    let r = a.run("STORE 3 +FLAGS (\\Seen)").await;
    let text = joined(&r);
    assert!(
        !text.contains("EXPUNGE") && text.contains("* 3 FETCH (FLAGS (\\Seen))"),
        "{text}"
    );
    // NOOP is an allowed moment.
    let r = a.run("NOOP").await;
    let text = joined(&r);
    assert!(text.contains("* 2 EXPUNGE"), "{text}");
    let r = a.run("FETCH 1:* (UID)").await;
    let text = joined(&r);
    assert!(
        text.contains("* 2 FETCH (UID 3)") && text.contains("* 3 FETCH (UID 4)"),
        "{text}"
    );
    // UID commands may announce expunges.
    assert!(ok(&b.run("UID STORE 1 +FLAGS.SILENT (\\Deleted)").await));
    assert!(ok(&b.run("UID EXPUNGE 1").await));
    let r = a.run("UID FETCH 1:* (FLAGS)").await;
    assert!(joined(&r).contains("* 1 EXPUNGE"), "{r:?}");
}

/// SELECT keeps the account's mailbox rows between commands; every change
/// made elsewhere (another session, delivery) must still show at the next
/// SELECT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_sees_changes_made_elsewhere() {
    let fx = start().await;
    fx.deliver(fx.alice, &message("m0")).await;
    let mut a = fx.login(ALICE).await;
    let mut b = fx.login(ALICE).await;
    let text = joined(&a.run("SELECT INBOX").await);
    assert!(
        text.contains("* 1 EXISTS") && text.contains("[UIDNEXT 2]"),
        "{text}"
    );
    assert!(ok(&a.run("SELECT INBOX").await));

    fx.deliver(fx.alice, &message("m1")).await;
    let text = joined(&a.run("SELECT INBOX").await);
    assert!(
        text.contains("* 2 EXISTS") && text.contains("[UIDNEXT 3]"),
        "{text}"
    );

    assert!(ok(&b.run("CREATE Projects").await));
    let r = a.run("SELECT Projects").await;
    assert!(ok(&r), "{r:?}");
    assert!(ok(&b.run("RENAME Projects Done").await));
    let r = a.run("SELECT Projects").await;
    assert!(joined(&r).contains("NO [NONEXISTENT]"), "{r:?}");
    assert!(ok(&a.run("SELECT Done").await));
    assert!(ok(&b.run("DELETE Done").await));
    let r = a.run("SELECT Done").await;
    assert!(joined(&r).contains("NO [NONEXISTENT]"), "{r:?}");

    // The session's own changes too, and while it idles.
    assert!(ok(&a.run("CREATE Mine").await));
    assert!(ok(&a.run("SELECT Mine").await));
    a.write(b"i1 IDLE\r\n").await;
    assert!(a.line().await.starts_with('+'));
    assert!(ok(&b.run("APPEND Mine {5+}\r\nhello").await));
    let pushed = a.line_within(Duration::from_secs(2)).await;
    assert!(pushed.is_some_and(|l| l.contains("EXISTS")));
    a.write(b"DONE\r\n").await;
    assert!(ok(&a.until("i1").await));
    let text = joined(&a.run("SELECT Mine").await);
    assert!(
        text.contains("* 1 EXISTS") && text.contains("[UIDNEXT 2]"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_store_search_copy_move_append() {
    let fx = start().await;
    fx.deliver(fx.alice, MESSAGE).await;
    let mut c = fx.login(ALICE).await;
    let r = c.run("SELECT INBOX").await;
    let text = joined(&r);
    for want in [
        "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
        "* 1 EXISTS",
        "* OK [UIDNEXT 2]",
        "* OK [UIDVALIDITY ",
        "* OK [HIGHESTMODSEQ ",
        "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)]",
        "[READ-WRITE] SELECT completed",
    ] {
        assert!(text.contains(want), "{want} missing in {text}");
    }
    let r = c.run("FETCH 1 (BODY.PEEK[] RFC822.SIZE)").await;
    let text = joined(&r);
    let body = String::from_utf8_lossy(MESSAGE);
    assert!(
        text.contains(&format!("BODY[] {{{}}}\r\n{body}", MESSAGE.len())),
        "{text}"
    );
    assert!(
        text.contains(&format!("RFC822.SIZE {}", MESSAGE.len())),
        "{text}"
    );
    let r = c
        .run("FETCH 1 (BODY[1] BODY.PEEK[2.MIME] ENVELOPE BODYSTRUCTURE)")
        .await;
    let text = joined(&r);
    assert!(text.contains("BODY[1] {15}\r\nNumbers are up."), "{text}");
    assert!(text.contains("BODY[2.MIME] {"), "{text}");
    assert!(text.contains("\"Quarterly report\""), "{text}");
    assert!(
        text.contains("(\"attachment\" (\"filename\" \"q.csv\"))"),
        "{text}"
    );
    assert!(
        text.contains("FLAGS (\\Seen)"),
        "BODY[1] sets \\Seen: {text}"
    );
    // The first ENVELOPE was rendered from the message; a second one
    // (alone, and with other items) comes from the shared cache and must
    // read the same.
    let envelope_of = |text: &str| {
        let start = text.find("ENVELOPE (").expect("an ENVELOPE");
        let rest = &text[start..];
        rest[..rest.find(" BODYSTRUCTURE").unwrap_or(rest.len())].to_string()
    };
    let first = envelope_of(&text);
    let again = joined(&c.run("FETCH 1 (ENVELOPE BODYSTRUCTURE)").await);
    assert_eq!(envelope_of(&again), first);
    let alone = joined(&c.run("FETCH 1 ENVELOPE").await);
    assert!(
        alone.contains(&format!("{first})\r\n")),
        "{alone} vs {first}"
    );
    let r = c.run("SEARCH UNSEEN").await;
    assert!(joined(&r).contains("* SEARCH\r\n"), "{r:?}");
    let r = c.run("SEARCH SUBJECT quarterly FROM carol").await;
    assert!(joined(&r).contains("* SEARCH 1\r\n"), "{r:?}");
    let r = c.run("STORE 1 FLAGS ($Forwarded \\Answered)").await;
    assert!(
        joined(&r).contains("* 1 FETCH (FLAGS (\\Answered $Forwarded))"),
        "{r:?}"
    );
    let r = c.run("UID STORE 1 -FLAGS.SILENT ($forwarded)").await;
    assert!(!joined(&r).contains("FETCH"), "{r:?}");

    let r = c.run("APPEND Drafts (\\Draft \\Seen) \"01-Feb-2024 10:00:00 +0100\" {14+}\r\nSubject: x\r\n\r\n").await;
    assert!(joined(&r).contains("[APPENDUID "), "{r:?}");
    let r = c.run("COPY 1 Archive").await;
    let text = joined(&r);
    assert!(
        text.contains("[COPYUID ") && text.contains(" 1 1] COPY completed"),
        "{text}"
    );
    let r = c.run("STATUS Archive (MESSAGES UNSEEN UIDNEXT)").await;
    assert!(
        joined(&r).contains("(MESSAGES 1 UNSEEN 1 UIDNEXT 2)"),
        "{r:?}"
    );
    let r = c.run("UID MOVE 1 Trash").await;
    let text = joined(&r);
    assert!(text.contains("* OK [COPYUID "), "{text}");
    assert!(text.contains("* 1 EXPUNGE"), "{text}");
    assert!(ok(&r));
    let r = c.run("EXAMINE Drafts").await;
    assert!(joined(&r).contains("[READ-ONLY]"), "{r:?}");
    let r = c.run("FETCH 1 (FLAGS INTERNALDATE)").await;
    assert!(
        joined(&r).contains("FLAGS (\\Draft \\Seen) INTERNALDATE \"01-Feb-2024 09:00:00 +0000\""),
        "{r:?}"
    );
    let r = c.run("STORE 1 +FLAGS (\\Deleted)").await;
    assert!(r.last().unwrap().contains(" NO "), "{r:?}");
    let r = c.run("FETCH 1 BODY[]").await;
    assert!(
        !joined(&r).contains("FLAGS"),
        "EXAMINE never sets \\Seen: {r:?}"
    );
    // ESEARCH after ENABLE IMAP4rev2.
    let r = c.run("UNSELECT").await;
    assert!(ok(&r));
    let r = c.run("ENABLE IMAP4rev2").await;
    assert!(joined(&r).contains("* ENABLED IMAP4rev2"), "{r:?}");
    assert!(ok(&c.run("SELECT Trash").await));
    let r = c.run("UID SEARCH ALL").await;
    assert!(joined(&r).contains("* ESEARCH (TAG \"t"), "{r:?}");
    assert!(joined(&r).contains(" UID ALL 1"), "{r:?}");
    assert!(ok(&c.run("STORE 1 +FLAGS (\\Deleted)").await));
    let r = c.run("CLOSE").await;
    assert!(ok(&r) && !joined(&r).contains("EXPUNGE"), "{r:?}");
    let r = c.run("STATUS Trash (MESSAGES)").await;
    assert!(joined(&r).contains("MESSAGES 0"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc_9051_mailbox_examples() {
    // Adapted from RFC 9051 sections 6.3.4, 6.3.5, 6.3.9 and 6.3.11.
    let fx = start().await;
    let mut c = fx.login(ALICE).await;
    assert!(ok(&c.run("CREATE owatagusiam/").await));
    assert!(ok(&c.run("CREATE owatagusiam/blurdybloop").await));
    let r = c.run("CREATE owatagusiam").await;
    assert!(r.last().unwrap().contains("NO [ALREADYEXISTS]"), "{r:?}");
    let r = c.run("LIST \"\" \"\"").await;
    assert_eq!(r[0], "* LIST (\\Noselect) \"/\" \"\"\r\n");
    let r = c.run("LIST \"\" %").await;
    assert!(
        joined(&r).contains("* LIST (\\HasChildren) \"/\" owatagusiam\r\n"),
        "{r:?}"
    );
    let r = c.run("LIST owatagusiam/ %").await;
    assert_eq!(
        r[0],
        "* LIST (\\HasNoChildren) \"/\" owatagusiam/blurdybloop\r\n"
    );
    let r = c.run("DELETE owatagusiam").await;
    assert!(r.last().unwrap().contains(" NO "), "{r:?}");
    assert!(ok(&c.run("DELETE owatagusiam/blurdybloop").await));
    assert!(ok(&c.run("DELETE owatagusiam").await));
    let r = c.run("STATUS blurdybloop (UIDNEXT MESSAGES)").await;
    assert!(r.last().unwrap().contains("NO [NONEXISTENT]"), "{r:?}");
    // Modified UTF-7 round trip (RFC 3501 section 5.1.3).
    assert!(ok(&c.run("CREATE \"Entw&APw-rfe\"").await));
    let r = c.run("LIST \"\" Entw*").await;
    assert!(joined(&r).contains("\"/\" Entw&APw-rfe"), "{r:?}");
    // RENAME (RFC 9051 section 6.3.6): children follow, superiors are created.
    assert!(ok(&c.run("CREATE \"Entw&APw-rfe/sub\"").await));
    assert!(ok(&c.run("RENAME Entw&APw-rfe Other/Drafts2").await));
    let r = c.run("LIST \"\" *").await;
    let listed = joined(&r);
    assert!(listed.contains("\"/\" Other/Drafts2\r\n"), "{r:?}");
    assert!(listed.contains("\"/\" Other/Drafts2/sub\r\n"), "{r:?}");
    assert!(listed.contains("\"/\" Other\r\n"), "{r:?}");
    assert!(!listed.contains("Entw"), "{r:?}");
    let r = c.run("RENAME Other/Drafts2 Trash").await;
    assert!(r.last().unwrap().contains("NO [ALREADYEXISTS]"), "{r:?}");
    let r = c.run("RENAME nosuch Elsewhere").await;
    assert!(r.last().unwrap().contains("NO [NONEXISTENT]"), "{r:?}");
    // Renaming INBOX moves its messages and leaves an empty INBOX.
    assert!(ok(&c.run("RENAME INBOX \"Old Inbox\"").await));
    let r = c.run("LIST \"\" *").await;
    assert!(joined(&r).contains("INBOX"), "{r:?}");
    assert!(joined(&r).contains("\"Old Inbox\""), "{r:?}");
    let r = c.run("DELETE INBOX").await;
    assert!(r.last().unwrap().contains("NO"), "{r:?}");
    let r = c.run("NAMESPACE").await;
    assert_eq!(
        r[0],
        "* NAMESPACE ((\"\" \"/\")) ((\"Other Users/\" \"/\")) ((\"Shared Folders/\" \"/\"))\r\n"
    );
    let r = c.run("ID (\"name\" \"test\")").await;
    assert!(joined(&r).contains("* ID (\"name\" \"Bulwark\")"), "{r:?}");
    let r = c.run("LSUB \"\" *").await;
    assert!(
        joined(&r).contains("* LSUB (\\HasNoChildren) \"/\" INBOX"),
        "{r:?}"
    );
}

/// A FETCH over more message bytes than one chunk is read, rendered and
/// written chunk by chunk (the next read while the last is written): every
/// response arrives once, in order, with its own bytes, and ENVELOPE and
/// FLAGS from the shared caches agree with the messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_fetches_arrive_whole_and_in_order() {
    let limits = bulwark_imap::Limits {
        max_fetch_chunk_bytes: 300,
        ..bulwark_imap::Limits::default()
    };
    let fx = start_with(Duration::from_secs(30), limits).await;
    for n in 1..=40 {
        fx.deliver(fx.alice, &message(&format!("number {n}"))).await;
    }
    let mut c = fx.login(ALICE).await;
    assert!(ok(&c.run("SELECT INBOX").await));
    for items in [
        "(UID BODY.PEEK[])",
        "(UID ENVELOPE BODY.PEEK[])",
        "(UID ENVELOPE)",
    ] {
        let r = c.run(&format!("FETCH 1:* {items}")).await;
        assert!(ok(&r), "{r:?}");
        let fetches: Vec<&String> = r.iter().filter(|l| l.contains(" FETCH (")).collect();
        assert_eq!(fetches.len(), 40, "{items}: {r:?}");
        for (i, line) in fetches.iter().enumerate() {
            let n = i + 1;
            assert!(
                line.starts_with(&format!("* {n} FETCH (UID {n} ")),
                "{line}"
            );
            if items.contains("BODY") {
                let body = String::from_utf8(message(&format!("number {n}"))).unwrap();
                assert!(line.contains(&body), "{line}");
            }
            if items.contains("ENVELOPE") {
                assert!(line.contains(&format!("\"number {n}\"")), "{line}");
            }
        }
    }
    let r = c.run("UID FETCH 1:* (FLAGS)").await;
    assert_eq!(r.iter().filter(|l| l.contains("FLAGS (")).count(), 40);
}
