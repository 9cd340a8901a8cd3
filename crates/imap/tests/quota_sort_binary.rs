//! QUOTA (RFC 9208), OBJECTID (RFC 8474), SORT and THREAD (RFC 5256) and
//! BINARY (RFC 3516) over a socket, against the test fixture.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bulwark_audit::Actor;
use common::*;

fn mail(id: &str, date: &str, subject: &str, from: &str, extra: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: alice@example.com\r\nSubject: {subject}\r\nDate: {date}\r\nMessage-ID: <{id}>\r\n{extra}\r\nbody of {id}\r\n"
    )
    .into_bytes()
}

/// The value of `NAME (value)` in a response line.
fn paren_value(line: &str, name: &str) -> String {
    let at = line.find(&format!("{name} (")).expect(name) + name.len() + 2;
    line[at..].split(')').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_advertise_the_extensions() {
    let fx = start().await;
    let mut c = fx.login(ALICE).await;
    let caps = joined(&c.run("CAPABILITY").await);
    for cap in [
        " QUOTA ",
        " QUOTA=RES-STORAGE ",
        " OBJECTID ",
        " SORT ",
        " THREAD=ORDEREDSUBJECT ",
        " THREAD=REFERENCES ",
        " BINARY",
    ] {
        assert!(caps.contains(cap), "{cap}: {caps}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_roots_usage_and_overquota_append() {
    let fx = start().await;
    let mut c = fx.login(ALICE).await;
    // No quota: no quota root (RFC 9208 section 4.3.2).
    let r = c.run("GETQUOTAROOT INBOX").await;
    assert!(ok(&r), "{r:?}");
    assert_eq!(r[0], "* QUOTAROOT INBOX\r\n");
    assert!(!joined(&r).contains("* QUOTA "), "{r:?}");
    let r = c.run("GETQUOTA \"\"").await;
    assert!(r.last().unwrap().contains("NO [NONEXISTENT]"), "{r:?}");

    fx.store
        .set_quota(&Actor::local_admin("test"), fx.alice, 8 * 1024)
        .unwrap();
    fx.deliver(fx.alice, MESSAGE).await;
    let used_kib = (MESSAGE.len() as u64).div_ceil(1024);
    let r = c.run("GETQUOTAROOT INBOX").await;
    assert!(ok(&r), "{r:?}");
    assert_eq!(r[0], "* QUOTAROOT INBOX \"\"\r\n");
    assert_eq!(r[1], format!("* QUOTA \"\" (STORAGE {used_kib} 8)\r\n"));
    let r = c.run("GETQUOTA \"\"").await;
    assert!(ok(&r), "{r:?}");
    assert_eq!(r[0], format!("* QUOTA \"\" (STORAGE {used_kib} 8)\r\n"));
    let r = c.run("GETQUOTA \"other\"").await;
    assert!(r.last().unwrap().contains("NO [NONEXISTENT]"), "{r:?}");
    let r = c.run("GETQUOTAROOT Nope").await;
    assert!(r.last().unwrap().contains("NO [NONEXISTENT]"), "{r:?}");
    let r = c.run("SETQUOTA \"\" (STORAGE 100000)").await;
    assert!(r.last().unwrap().contains("NO [NOPERM]"), "{r:?}");

    // An APPEND past the quota fails with OVERQUOTA (RFC 9208 section 4.2).
    let mut big = b"Subject: big\r\n\r\n".to_vec();
    big.extend_from_slice(&[b'x'; 10 * 1024]);
    big.extend_from_slice(b"\r\n");
    c.write(format!("a1 APPEND Drafts {{{}+}}\r\n", big.len()).as_bytes())
        .await;
    c.write(&big).await;
    c.write(b"\r\n").await;
    let r = c.until("a1").await;
    assert!(r.last().unwrap().contains("NO [OVERQUOTA]"), "{r:?}");
    // A small one still fits.
    let small = b"Subject: small\r\n\r\nhi\r\n";
    c.write(format!("a2 APPEND Drafts {{{}+}}\r\n", small.len()).as_bytes())
        .await;
    c.write(small).await;
    c.write(b"\r\n").await;
    let r = c.until("a2").await;
    assert!(ok(&r), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_ids_are_stable_and_shared() {
    let fx = start().await;
    fx.deliver(
        fx.alice,
        &mail("p1@x", "Tue, 1 Jul 2025 10:00:00 +0000", "plan", "a@x", ""),
    )
    .await;
    fx.deliver(
        fx.alice,
        &mail(
            "p2@x",
            "Tue, 1 Jul 2025 11:00:00 +0000",
            "Re: plan",
            "b@x",
            "In-Reply-To: <p1@x>\r\nReferences: <p1@x>\r\n",
        ),
    )
    .await;
    fx.deliver(
        fx.alice,
        &mail("o1@x", "Tue, 1 Jul 2025 12:00:00 +0000", "other", "c@x", ""),
    )
    .await;
    let mut c = fx.login(ALICE).await;
    let r = c.run("SELECT INBOX").await;
    assert!(ok(&r), "{r:?}");
    let select = joined(&r);
    let mailbox_id = paren_value(&select, "[MAILBOXID");
    assert!(mailbox_id.starts_with('M'), "{select}");
    let r = c.run("STATUS INBOX (MAILBOXID UIDNEXT)").await;
    assert!(ok(&r), "{r:?}");
    assert_eq!(
        r[0],
        format!("* STATUS INBOX (UIDNEXT 4 MAILBOXID ({mailbox_id}))\r\n")
    );
    let r = c.run("STATUS Archive (MAILBOXID)").await;
    assert!(ok(&r), "{r:?}");
    assert!(
        r[0].starts_with("* STATUS Archive (MAILBOXID (M") && !r[0].contains(&mailbox_id),
        "{r:?}"
    );

    let r = c.run("FETCH 1:3 (EMAILID THREADID)").await;
    assert!(ok(&r), "{r:?}");
    let emails: Vec<String> = r[..3].iter().map(|l| paren_value(l, "EMAILID")).collect();
    let threads: Vec<String> = r[..3].iter().map(|l| paren_value(l, "THREADID")).collect();
    assert!(r[0].starts_with("* 1 FETCH (EMAILID (E"), "{r:?}");
    assert!(!r[0].contains("UID"), "placeholder leaked: {r:?}");
    assert_ne!(emails[0], emails[1]);
    assert_eq!(threads[0], threads[1], "a reply shares its thread");
    assert_ne!(threads[0], threads[2]);
    let r = c.run("UID FETCH 2 (FLAGS EMAILID)").await;
    assert_eq!(
        r[0],
        format!("* 2 FETCH (UID 2 FLAGS () EMAILID ({}))\r\n", emails[1])
    );

    // A copy is the same email (RFC 8474 section 5.1).
    assert!(ok(&c.run("COPY 2 Archive").await));
    let r = c.run("SELECT Archive").await;
    assert!(ok(&r), "{r:?}");
    let r = c.run("FETCH 1 EMAILID").await;
    assert_eq!(r[0], format!("* 1 FETCH (EMAILID ({}))\r\n", emails[1]));
    // Unknown items are still refused.
    let r = c.run("FETCH 1 (EMAILID FROB)").await;
    assert!(r.last().unwrap().contains("BAD"), "{r:?}");
}

/// Five messages: (msn, Date, Subject, From, Message-ID, references).
async fn sort_fixture(fx: &Fixture) {
    for raw in [
        mail(
            "a@x",
            "Tue, 1 Jul 2025 09:00:00 +0000",
            "Lunch",
            "Zed <zed@x>",
            "Cc: mo@x\r\n",
        ),
        mail(
            "b@x",
            "Tue, 1 Jul 2025 08:00:00 +0000",
            "Budget",
            "amy@x",
            "Cc: al@x\r\n",
        ),
        mail(
            "c@x",
            "Tue, 1 Jul 2025 10:00:00 +0000",
            "Re: Lunch",
            "bob@x",
            "In-Reply-To: <a@x>\r\nReferences: <a@x>\r\n",
        ),
        mail(
            "d@x",
            "Tue, 1 Jul 2025 11:00:00 +0000",
            "[team] Re: lunch",
            "Cy <cy@x>",
            "In-Reply-To: <c@x>\r\nReferences: <a@x> <c@x>\r\n",
        ),
        mail(
            "e@x",
            "Tue, 1 Jul 2025 07:00:00 +0000",
            "Re: budget",
            "dan@x",
            "",
        ),
    ] {
        fx.deliver(fx.alice, &raw).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sort_and_thread_over_the_socket() {
    let fx = start().await;
    sort_fixture(&fx).await;
    let mut c = fx.login(ALICE).await;
    assert!(ok(&c.run("SELECT INBOX").await));
    let sorted = |r: &[String]| {
        assert!(ok(r), "{r:?}");
        r[0].clone()
    };
    assert_eq!(
        sorted(&c.run("SORT (DATE) UTF-8 ALL").await),
        "* SORT 5 2 1 3 4\r\n"
    );
    assert_eq!(
        sorted(&c.run("SORT (REVERSE DATE) UTF-8 ALL").await),
        "* SORT 4 3 1 2 5\r\n"
    );
    // Base subjects: budget (2, 5), lunch (1, 3, 4); ties by number.
    assert_eq!(
        sorted(&c.run("SORT (SUBJECT) UTF-8 ALL").await),
        "* SORT 2 5 1 3 4\r\n"
    );
    assert_eq!(
        sorted(&c.run("SORT (SUBJECT REVERSE DATE) UTF-8 ALL").await),
        "* SORT 2 5 4 3 1\r\n"
    );
    assert_eq!(
        sorted(&c.run("SORT (FROM) UTF-8 ALL").await),
        "* SORT 2 3 4 5 1\r\n"
    );
    assert_eq!(
        sorted(&c.run("SORT (CC ARRIVAL) UTF-8 ALL").await),
        "* SORT 3 4 5 2 1\r\n"
    );
    assert_eq!(
        sorted(&c.run("SORT (ARRIVAL) US-ASCII SUBJECT lunch").await),
        "* SORT 1 3 4\r\n"
    );
    assert!(
        sorted(&c.run("SORT (SIZE) UTF-8 ALL").await).starts_with("* SORT "),
        "size"
    );
    // UID SORT reports UIDs: expunge the first message so they differ.
    assert!(ok(&c.run("STORE 1 +FLAGS.SILENT (\\Deleted)").await));
    assert!(ok(&c.run("EXPUNGE").await));
    assert_eq!(
        sorted(&c.run("UID SORT (DATE) UTF-8 ALL").await),
        "* SORT 5 2 3 4\r\n"
    );
    assert_eq!(
        sorted(&c.run("SORT (DATE) UTF-8 ALL").await),
        "* SORT 4 1 2 3\r\n"
    );
    // REFERENCES: 3 answers the expunged 1 (a dummy, pruned); 4 answers 3;
    // "Re: budget" has no references but joins "Budget" by subject.
    assert_eq!(
        sorted(&c.run("UID THREAD REFERENCES UTF-8 ALL").await),
        "* THREAD (2 5)(3 4)\r\n"
    );
    assert_eq!(
        sorted(&c.run("THREAD ORDEREDSUBJECT UTF-8 ALL").await),
        "* THREAD (4 1)(2 3)\r\n"
    );
    let r = c.run("THREAD REFERENCES UTF-8 FROM cy").await;
    assert_eq!(sorted(&r), "* THREAD (3)\r\n");
    let r = c.run("SORT (DATE) KOI8-R ALL").await;
    assert!(r.last().unwrap().contains("NO [BADCHARSET"), "{r:?}");
    let r = c.run("THREAD SUBJECTS UTF-8 ALL").await;
    assert!(r.last().unwrap().contains("BAD"), "{r:?}");
    let r = c.run("SORT (DISPLAYFROM) UTF-8 ALL").await;
    assert!(r.last().unwrap().contains("BAD"), "{r:?}");
    assert!(ok(&c.run("CLOSE").await));
    let r = c.run("SORT (DATE) UTF-8 ALL").await;
    assert!(r.last().unwrap().contains("BAD"), "{r:?}");
}

const ENCODED: &[u8] = b"From: a@x\r\nSubject: parts\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9\r\n--B\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECAw==\r\n--B\r\nContent-Type: application/x-thing\r\nContent-Transfer-Encoding: x-custom\r\n\r\nzzz\r\n--B--\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_fetch_and_literal8_append() {
    let fx = start().await;
    fx.deliver(fx.alice, ENCODED).await;
    let mut c = fx.login(ALICE).await;
    assert!(ok(&c.run("SELECT INBOX").await));
    let r = c
        .run("FETCH 1 (BINARY.PEEK[1] BINARY.SIZE[2] BINARY.PEEK[2])")
        .await;
    assert!(ok(&r), "{r:?}");
    let line = &r[0];
    assert!(line.contains("BINARY[1] {5}\r\ncafé"), "{line:?}");
    assert!(line.contains("BINARY.SIZE[2] 4"), "{line:?}");
    assert!(
        line.contains("BINARY[2] ~{4}\r\n\u{0}\u{1}\u{2}\u{3}"),
        "{line:?}"
    );
    let r = c.run("FETCH 1 FLAGS").await;
    assert!(r[0].contains("FLAGS ()"), "PEEK must not set \\Seen: {r:?}");
    let r = c.run("FETCH 1 (BINARY.PEEK[3])").await;
    assert!(r.last().unwrap().contains("NO [UNKNOWN-CTE]"), "{r:?}");
    let r = c.run("FETCH 1 (BINARY[1]<1.3>)").await;
    assert!(ok(&r), "{r:?}");
    assert!(r[0].contains("BINARY[1]<1> {3}\r\naf"), "{r:?}");
    assert!(r[0].contains("\\Seen"), "BINARY sets \\Seen: {r:?}");

    // APPEND with a literal8 (RFC 3516 section 4.4): NUL bytes kept.
    let body = b"Subject: nul\r\n\r\na\x00b\r\n";
    c.write(format!("a1 APPEND INBOX ~{{{}+}}\r\n", body.len()).as_bytes())
        .await;
    c.write(body).await;
    c.write(b"\r\n").await;
    let r = c.until("a1").await;
    assert!(ok(&r), "{r:?}");
    let r = c.run("FETCH 2 (BINARY.PEEK[] BINARY.SIZE[])").await;
    assert!(ok(&r), "{r:?}");
    assert!(
        r[0].contains(&format!("BINARY[] ~{{{}}}", body.len())),
        "{r:?}"
    );
    assert!(
        r[0].contains(&format!("BINARY.SIZE[] {}", body.len())),
        "{r:?}"
    );
}
