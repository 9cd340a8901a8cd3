//! LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819), SPECIAL-USE selection
//! (RFC 6154) and SEARCH RETURN options (RFC 4731) over a socket.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{joined, message, ok};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_list_with_status_and_special_use() {
    let fx = common::start().await;
    fx.deliver(fx.alice, &message("one")).await;
    fx.deliver(fx.alice, &message("two")).await;
    let mut c = fx.login("alice@example.com").await;
    let caps = joined(&c.run("CAPABILITY").await);
    for cap in ["LIST-EXTENDED", "LIST-STATUS", "ESEARCH", "ACL"] {
        assert!(caps.contains(cap), "{cap}: {caps}");
    }
    assert!(
        !ok(&c.run("STORE 1 +FLAGS (\\Seen)").await),
        "nothing selected yet"
    );

    // RFC 5819 section 2: STATUS for each listed mailbox.
    let r = c
        .run("LIST \"\" (\"INBOX\" \"Drafts\") RETURN (STATUS (MESSAGES UNSEEN))")
        .await;
    assert!(ok(&r), "{r:?}");
    let text = joined(&r);
    assert!(
        text.contains("* LIST (\\HasNoChildren) \"/\" INBOX"),
        "{r:?}"
    );
    assert!(
        text.contains("* STATUS INBOX (MESSAGES 2 UNSEEN 2)"),
        "{r:?}"
    );
    assert!(
        text.contains("* STATUS Drafts (MESSAGES 0 UNSEEN 0)"),
        "{r:?}"
    );
    // RFC 8474 section 4.2 through LIST-STATUS.
    let r = c
        .run("LIST \"\" \"INBOX\" RETURN (STATUS (MESSAGES MAILBOXID))")
        .await;
    assert!(
        joined(&r).contains("* STATUS INBOX (MESSAGES 2 MAILBOXID (M"),
        "{r:?}"
    );
    assert!(!text.contains("Sent"), "only the two patterns: {r:?}");

    // RFC 6154 section 3: only special-use mailboxes.
    let r = c
        .run("LIST (SPECIAL-USE) \"\" \"*\" RETURN (SPECIAL-USE)")
        .await;
    let text = joined(&r);
    assert!(text.contains("\\Sent") && text.contains("\\Trash"), "{r:?}");
    assert!(
        !text.contains(" INBOX\r\n"),
        "INBOX has no special use: {r:?}"
    );

    // RFC 5258 section 5, example 2 shape: subscribed mailboxes.
    let r = c.run("LIST (SUBSCRIBED) \"\" \"*\"").await;
    assert!(joined(&r).contains("\\Subscribed"), "{r:?}");

    // Malformed options are refused, not guessed at.
    let r = c.run("LIST (NONSENSE) \"\" \"*\"").await;
    assert!(r.last().unwrap().contains("BAD"), "{r:?}");
    let r = c.run("LIST () \"\" * RETURN (STATUS (FOO))").await;
    assert!(r.last().unwrap().contains("BAD"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_return_options() {
    let fx = common::start().await;
    for n in 0..5 {
        fx.deliver(fx.alice, &message(&format!("m{n}"))).await;
    }
    let mut c = fx.login("alice@example.com").await;
    assert!(ok(&c.run("SELECT INBOX").await));
    assert!(ok(&c.run("STORE 2,4 +FLAGS (\\Flagged)").await));
    // RFC 4731 section 3.1 examples.
    let r = c.run("SEARCH RETURN (MIN COUNT) FLAGGED").await;
    assert!(ok(&r), "{r:?}");
    assert!(joined(&r).contains(") MIN 2 COUNT 2\r\n"), "{r:?}");
    let r = c.run("UID SEARCH RETURN (MAX ALL) FLAGGED").await;
    assert!(joined(&r).contains("UID MAX 4 ALL 2,4"), "{r:?}");
    let r = c.run("SEARCH RETURN () ALL").await;
    assert!(joined(&r).contains("ALL 1:5"), "{r:?}");
    let r = c.run("SEARCH RETURN (COUNT MIN) DELETED").await;
    assert!(
        joined(&r).contains(") COUNT 0\r\n"),
        "no MIN without matches: {r:?}"
    );
    let r = c.run("SEARCH RETURN (SAVE) ALL").await;
    assert!(ok(&r) && r.len() == 1, "SAVE alone answers nothing: {r:?}");
    let r = c.run("SEARCH RETURN (BOGUS) ALL").await;
    assert!(r.last().unwrap().contains("BAD"), "{r:?}");
    // The plain form keeps the IMAP4rev1 answer.
    let r = c.run("SEARCH FLAGGED").await;
    assert!(joined(&r).contains("* SEARCH 2 4\r\n"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn utf8_accept_names() {
    let fx = common::start().await;
    let mut c = fx.login("alice@example.com").await;
    assert!(joined(&c.run("CAPABILITY").await).contains("UTF8=ACCEPT"));
    // Before ENABLE, a raw UTF-8 name is not valid modified UTF-7.
    let r = c.run("CREATE \"Entwürfe\"").await;
    assert!(!ok(&r), "{r:?}");
    // The IMAP4rev1 form of the same name works and is stored as UTF-8.
    assert!(ok(&c.run("CREATE \"Entw&APw-rfe\"").await));
    let r = c.run("ENABLE UTF8=ACCEPT").await;
    assert!(joined(&r).contains("* ENABLED UTF8=ACCEPT"), "{r:?}");
    let r = c.run("LIST \"\" \"Entw*\"").await;
    // UTF-8 on the wire (as a literal, which every client reads).
    assert!(
        joined(&r).contains("Entwürfe\r\n"),
        "names are UTF-8 now: {r:?}"
    );
    assert!(!joined(&r).contains("&APw-"), "{r:?}");
    assert!(ok(&c.run("CREATE \"Почта/Входящие\"").await));
    let r = c.run("SELECT \"Почта/Входящие\"").await;
    assert!(ok(&r), "{r:?}");
    let r = c.run("STATUS \"Entwürfe\" (MESSAGES)").await;
    assert!(joined(&r).contains("Entwürfe (MESSAGES 0)"), "{r:?}");
    // RFC 6855 section 4: APPEND with the UTF8 data item; the message with
    // its raw UTF-8 header is stored as sent.
    let raw = "From: Zoë <zoe@example.com>\r\nSubject: Grüße\r\n\r\nHallo\r\n";
    c.write(
        format!(
            "U1 APPEND \"Entwürfe\" UTF8 (~{{{}+}}\r\n{raw})\r\n",
            raw.len()
        )
        .as_bytes(),
    )
    .await;
    let r = c.until("U1").await;
    assert!(r.last().unwrap().contains("OK [APPENDUID"), "{r:?}");
    assert!(ok(&c.run("SELECT \"Entwürfe\"").await));
    let r = c.run("FETCH 1 (BODY.PEEK[] ENVELOPE)").await;
    assert!(joined(&r).contains(raw), "{r:?}");
    assert!(joined(&r).contains("Grüße"), "{r:?}");
    // Without the closing parenthesis the command is refused, nothing stored.
    c.write(b"U2 APPEND \"Entw\xc3\xbcrfe\" UTF8 (~{1+}\r\nx\r\n")
        .await;
    let r = c.until("U2").await;
    assert!(r.last().unwrap().contains("U2 BAD"), "{r:?}");
    let r = c.run("STATUS \"Entwürfe\" (MESSAGES)").await;
    assert!(joined(&r).contains("(MESSAGES 1)"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searchres_saves_a_result_for_dollar() {
    let fx = common::start().await;
    for n in 0..6 {
        fx.deliver(fx.alice, &message(&format!("r{n}"))).await;
    }
    let mut c = fx.login("alice@example.com").await;
    assert!(joined(&c.run("CAPABILITY").await).contains("SEARCHRES"));
    assert!(ok(&c.run("SELECT INBOX").await));
    assert!(ok(&c.run("STORE 2,3,5 +FLAGS (\\Flagged)").await));
    // RFC 5182 section 2.4: SAVE alone answers nothing but OK.
    let r = c.run("SEARCH RETURN (SAVE) FLAGGED").await;
    assert_eq!(r.len(), 1, "{r:?}");
    assert!(ok(&r));
    let r = c.run("FETCH $ (FLAGS)").await;
    let text = joined(&r);
    assert!(
        text.contains("* 2 FETCH") && text.contains("* 3 FETCH") && text.contains("* 5 FETCH"),
        "{r:?}"
    );
    assert!(
        !text.contains("* 1 FETCH") && !text.contains("* 4 FETCH"),
        "{r:?}"
    );
    // `$` stays on the same messages after an expunge renumbers them.
    assert!(ok(&c.run("STORE 1 +FLAGS (\\Deleted)").await));
    assert!(ok(&c.run("EXPUNGE").await));
    let r = c.run("SEARCH $ NOT FLAGGED").await;
    assert!(joined(&r).contains("* SEARCH\r\n"), "{r:?}");
    let r = c.run("SEARCH $").await;
    assert!(
        joined(&r).contains("* SEARCH 1 2 4\r\n"),
        "renumbered: {r:?}"
    );
    assert!(ok(&c.run("STORE $ -FLAGS (\\Flagged)").await));
    let r = c.run("SEARCH FLAGGED").await;
    assert!(joined(&r).contains("* SEARCH\r\n"), "{r:?}");
    // MIN and MAX with SAVE keep only those.
    let r = c.run("SEARCH RETURN (SAVE MIN MAX) ALL").await;
    assert!(joined(&r).contains("MIN 1 MAX 5"), "{r:?}");
    let r = c.run("UID SEARCH $").await;
    assert!(joined(&r).contains("* SEARCH 2 6\r\n"), "{r:?}");
    // Selecting again empties it.
    assert!(ok(&c.run("SELECT INBOX").await));
    let r = c.run("FETCH $ (FLAGS)").await;
    assert!(ok(&r) && !joined(&r).contains("FETCH ("), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiappend_stores_all_or_nothing() {
    let fx = common::start().await;
    let mut c = fx.login("alice@example.com").await;
    assert!(joined(&c.run("CAPABILITY").await).contains("MULTIAPPEND"));
    let r = c
        .run("APPEND Drafts (\\Seen) \"15-Nov-1997 10:01:32 +0100\" {14+}\r\nSubject: one\r\n (\\Flagged) {14+}\r\nSubject: two\r\n {16+}\r\nSubject: three\r\n")
        .await;
    assert!(ok(&r), "{r:?}");
    assert!(joined(&r).contains("[APPENDUID "), "{r:?}");
    assert!(joined(&r).contains(" 1:3] APPEND completed"), "{r:?}");
    assert!(ok(&c.run("SELECT Drafts").await));
    let r = c
        .run("FETCH 1:3 (FLAGS INTERNALDATE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        .await;
    let text = joined(&r);
    assert!(
        text.contains("FLAGS (\\Seen)") && text.contains("15-Nov-1997 09:01:32 +0000"),
        "{r:?}"
    );
    assert!(
        text.contains("FLAGS (\\Flagged)") && text.contains("Subject: three"),
        "{r:?}"
    );

    // A bad flag in the second message: nothing at all is stored.
    let r = c
        .run("APPEND Drafts {14+}\r\nSubject: four\r\n (\\Recent) {14+}\r\nSubject: five\r\n")
        .await;
    assert!(r.last().unwrap().contains("BAD"), "{r:?}");
    let r = c.run("APPEND Nowhere {1+}\r\na {1+}\r\nb\r\n").await;
    assert!(r.last().unwrap().contains("NO [TRYCREATE]"), "{r:?}");
    let r = c.run("STATUS Drafts (MESSAGES)").await;
    assert!(joined(&r).contains("MESSAGES 3"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_by_object_id() {
    let fx = common::start().await;
    fx.deliver(fx.alice, &message("alpha")).await;
    fx.deliver(fx.alice, &message("beta")).await;
    let mut c = fx.login("alice@example.com").await;
    assert!(ok(&c.run("SELECT INBOX").await));
    let r = c.run("FETCH 2 (EMAILID THREADID)").await;
    let text = joined(&r);
    let field = |name: &str| {
        let start = text.find(&format!("{name} (")).unwrap() + name.len() + 2;
        text[start..].split(')').next().unwrap().to_string()
    };
    let (email, thread) = (field("EMAILID"), field("THREADID"));
    let r = c.run(&format!("SEARCH EMAILID {email}")).await;
    assert!(joined(&r).contains("* SEARCH 2\r\n"), "{r:?}");
    let r = c.run(&format!("SEARCH THREADID {thread} UNSEEN")).await;
    assert!(joined(&r).contains("* SEARCH 2\r\n"), "{r:?}");
    let r = c.run(&format!("UID SEARCH EMAILID {email} SEEN")).await;
    assert!(joined(&r).contains("* SEARCH\r\n"), "{r:?}");
    let r = c.run("SEARCH EMAILID E999999").await;
    assert!(joined(&r).contains("* SEARCH\r\n"), "{r:?}");
    let r = c.run(&format!("SEARCH OR EMAILID {email} SEEN")).await;
    assert!(r.last().unwrap().contains("BAD"), "{r:?}");
}
