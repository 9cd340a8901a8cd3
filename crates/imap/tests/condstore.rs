//! CONDSTORE and QRESYNC (RFC 7162) over real sockets: transcripts after
//! the RFC's examples, and multi-session resynchronisation from the
//! account change log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

/// The number in `[CODE n]` (or `(CODE n)`) somewhere in `lines`.
fn number_after(lines: &[String], code: &str) -> u64 {
    let text = joined(lines);
    let at = text
        .find(code)
        .unwrap_or_else(|| panic!("{code} in {text}"))
        + code.len();
    text[at..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("number after {code} in {text}"))
}

fn fetches(lines: &[String]) -> Vec<&String> {
    lines
        .iter()
        .filter(|l| l.starts_with("* ") && l.contains(" FETCH ("))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn condstore_transcript() {
    let fx = start().await;
    for i in 0..3 {
        fx.deliver(fx.alice, &message(&format!("m{i}"))).await;
    }
    let mut c = fx.login(ALICE).await;
    let r = c.run("CAPABILITY").await;
    assert!(joined(&r).contains(" CONDSTORE QRESYNC"), "{r:?}");

    // RFC 7162 section 3.1.8: SELECT (CONDSTORE) enables it.
    let r = c.run("SELECT INBOX (CONDSTORE)").await;
    assert!(ok(&r), "{r:?}");
    let highest = number_after(&r, "[HIGHESTMODSEQ");
    assert!(highest > 0);

    // Section 3.1.4.1: the MODSEQ item.
    let r = c.run("FETCH 1:* (FLAGS MODSEQ)").await;
    assert_eq!(fetches(&r).len(), 3, "{r:?}");
    assert!(fetches(&r).iter().all(|l| l.contains("MODSEQ (")), "{r:?}");

    // STORE answers carry MODSEQ once CONDSTORE is on.
    let r = c.run("STORE 1 +FLAGS (\\Flagged)").await;
    assert!(ok(&r), "{r:?}");
    assert!(
        r[0].starts_with("* 1 FETCH (FLAGS (\\Flagged) MODSEQ ("),
        "{r:?}"
    );
    let first = number_after(&r, "MODSEQ (");
    assert!(first > highest, "{first} > {highest}");

    // Section 3.1.4.2: CHANGEDSINCE, with and without UID.
    let r = c
        .run(&format!("FETCH 1:* (FLAGS) (CHANGEDSINCE {highest})"))
        .await;
    assert!(ok(&r), "{r:?}");
    assert_eq!(
        fetches(&r),
        vec![&format!(
            "* 1 FETCH (FLAGS (\\Flagged) MODSEQ ({first}))\r\n"
        )],
        "{r:?}"
    );
    let r = c
        .run(&format!("UID FETCH 1:* (FLAGS) (CHANGEDSINCE {first})"))
        .await;
    assert!(ok(&r) && fetches(&r).is_empty(), "{r:?}");
    let r = c
        .run(&format!("UID FETCH 1:* (FLAGS) (CHANGEDSINCE {highest})"))
        .await;
    assert_eq!(
        fetches(&r),
        vec![&format!(
            "* 1 FETCH (UID 1 FLAGS (\\Flagged) MODSEQ ({first}))\r\n"
        )],
        "{r:?}"
    );

    // Section 3.1.3: UNCHANGEDSINCE; message 1 changed after `highest`.
    let r = c
        .run(&format!(
            "STORE 1:2 (UNCHANGEDSINCE {highest}) +FLAGS.SILENT (\\Seen)"
        ))
        .await;
    assert!(
        r.last().unwrap().contains("OK [MODIFIED 1]"),
        "conditional store: {r:?}"
    );
    assert_eq!(fetches(&r).len(), 1, "{r:?}");
    assert!(r[0].starts_with("* 2 FETCH (MODSEQ ("), "{r:?}");
    let second = number_after(&r, "MODSEQ (");
    let r = c.run("FETCH 1:2 (FLAGS)").await;
    assert!(
        joined(&r).contains("* 1 FETCH (FLAGS (\\Flagged) MODSEQ"),
        "{r:?}"
    );
    assert!(
        joined(&r).contains("* 2 FETCH (FLAGS (\\Seen) MODSEQ"),
        "{r:?}"
    );
    let r = c
        .run("UID STORE 3 (UNCHANGEDSINCE 0) +FLAGS.SILENT (\\Seen)")
        .await;
    assert!(r.last().unwrap().contains("OK [MODIFIED 3]"), "{r:?}");

    // Section 3.1.5: SEARCH MODSEQ with the highest mod-sequence found.
    let r = c.run(&format!("SEARCH MODSEQ {first}")).await;
    assert_eq!(r[0], format!("* SEARCH 1 2 (MODSEQ {second})\r\n"), "{r:?}");
    let r = c.run(&format!("UID SEARCH MODSEQ {}", second + 1)).await;
    assert_eq!(r[0], "* SEARCH\r\n", "{r:?}");

    // Section 3.1.6: STATUS HIGHESTMODSEQ.
    let r = c.run("STATUS INBOX (HIGHESTMODSEQ)").await;
    assert_eq!(number_after(&r, "(HIGHESTMODSEQ"), second, "{r:?}");

    // VANISHED needs QRESYNC (RFC 7162 section 3.2.6).
    let r = c
        .run("UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)")
        .await;
    assert!(r.last().unwrap().contains(" BAD "), "{r:?}");
    c.run("LOGOUT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enable_and_qresync_rules() {
    let fx = start().await;
    let mut c = fx.login(ALICE).await;
    // Section 3.2.5: QRESYNC parameters need ENABLE QRESYNC first.
    let r = c.run("SELECT INBOX (QRESYNC (1 1))").await;
    assert!(r.last().unwrap().contains(" BAD "), "{r:?}");
    let r = c.run("ENABLE CONDSTORE QRESYNC").await;
    assert_eq!(r[0], "* ENABLED CONDSTORE QRESYNC\r\n", "{r:?}");
    let r = c.run("SELECT INBOX (QRESYNC (1 1))").await;
    assert!(ok(&r), "{r:?}");
    // A foreign UIDVALIDITY: an ordinary SELECT, nothing resynchronised.
    assert!(!joined(&r).contains("VANISHED"), "{r:?}");
    // VANISHED needs CHANGEDSINCE and UID FETCH.
    let r = c.run("UID FETCH 1:* (FLAGS) (VANISHED)").await;
    assert!(r.last().unwrap().contains(" BAD "), "{r:?}");
    let r = c.run("FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)").await;
    assert!(r.last().unwrap().contains(" BAD "), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_by_another_session_are_resynchronised() {
    let fx = start().await;
    for i in 0..4 {
        fx.deliver(fx.alice, &message(&format!("m{i}"))).await;
    }
    // Session A learns the state, then goes away.
    let mut a = fx.login(ALICE).await;
    let r = a.run("SELECT INBOX").await;
    let validity = number_after(&r, "[UIDVALIDITY");
    let highest = number_after(&r, "[HIGHESTMODSEQ");
    a.run("LOGOUT").await;

    // Session B flags UID 2 and expunges UID 3.
    let mut b = fx.login(ALICE).await;
    assert!(ok(&b.run("SELECT INBOX").await));
    assert!(ok(&b.run("UID STORE 2 +FLAGS (\\Flagged)").await));
    assert!(ok(&b.run("UID STORE 3 +FLAGS (\\Deleted)").await));
    assert!(ok(&b.run("EXPUNGE").await));

    // A with CONDSTORE only: CHANGEDSINCE shows the flag change.
    let mut a = fx.login(ALICE).await;
    assert!(ok(&a.run("SELECT INBOX (CONDSTORE)").await));
    let r = a
        .run(&format!("UID FETCH 1:* (FLAGS) (CHANGEDSINCE {highest})"))
        .await;
    let f = fetches(&r);
    assert_eq!(f.len(), 1, "{r:?}");
    assert!(
        f[0].starts_with("* 2 FETCH (UID 2 FLAGS (\\Flagged) MODSEQ ("),
        "{r:?}"
    );
    a.run("LOGOUT").await;

    // A with QRESYNC (RFC 7162 section 3.2.5.1).
    let mut a = fx.login(ALICE).await;
    assert!(ok(&a.run("ENABLE QRESYNC").await));
    let r = a
        .run(&format!("SELECT INBOX (QRESYNC ({validity} {highest}))"))
        .await;
    assert!(ok(&r), "{r:?}");
    let vanished_at = r
        .iter()
        .position(|l| l == "* VANISHED (EARLIER) 3\r\n")
        .unwrap_or_else(|| panic!("VANISHED in {r:?}"));
    let f = fetches(&r);
    assert_eq!(f.len(), 1, "{r:?}");
    assert!(
        f[0].starts_with("* 2 FETCH (UID 2 FLAGS (\\Flagged) MODSEQ ("),
        "{r:?}"
    );
    let fetch_at = r.iter().position(|l| l == f[0]).unwrap();
    assert!(vanished_at < fetch_at, "VANISHED comes first: {r:?}");

    // Known UIDs narrow both answers.
    let r = a
        .run(&format!(
            "SELECT INBOX (QRESYNC ({validity} {highest} 1,4))"
        ))
        .await;
    assert!(ok(&r), "{r:?}");
    assert!(!joined(&r).contains("VANISHED"), "{r:?}");
    assert!(fetches(&r).is_empty(), "{r:?}");

    // UID FETCH ... (CHANGEDSINCE n VANISHED), section 3.2.6.
    let r = a
        .run(&format!(
            "UID FETCH 1:* (FLAGS) (CHANGEDSINCE {highest} VANISHED)"
        ))
        .await;
    assert!(ok(&r), "{r:?}");
    assert_eq!(r[0], "* VANISHED (EARLIER) 3\r\n", "{r:?}");
    assert_eq!(fetches(&r).len(), 1, "{r:?}");
    let r = a
        .run(&format!(
            "UID FETCH 4 (FLAGS) (CHANGEDSINCE {highest} VANISHED)"
        ))
        .await;
    assert!(ok(&r) && r.len() == 1, "{r:?}");

    // Live changes under QRESYNC: VANISHED instead of EXPUNGE (section
    // 3.2.10), FETCH with UID and MODSEQ for flags.
    assert!(ok(&b.run("UID STORE 1 +FLAGS (\\Seen)").await));
    assert!(ok(&b.run("UID STORE 4 +FLAGS (\\Deleted)").await));
    assert!(ok(&b.run("EXPUNGE").await));
    let r = a.run("NOOP").await;
    assert!(ok(&r), "{r:?}");
    assert!(r.contains(&"* VANISHED 4\r\n".to_string()), "{r:?}");
    assert!(!joined(&r).contains("EXPUNGE"), "{r:?}");
    assert!(
        r.iter()
            .any(|l| l.starts_with("* 1 FETCH (UID 1 FLAGS (\\Seen) MODSEQ (")),
        "{r:?}"
    );
    // B, without QRESYNC, was told with EXPUNGE.
    let r = b.run("NOOP").await;
    assert!(ok(&r), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_expunge_under_qresync_is_vanished() {
    let fx = start().await;
    for i in 0..3 {
        fx.deliver(fx.alice, &message(&format!("m{i}"))).await;
    }
    let mut c = fx.login(ALICE).await;
    assert!(ok(&c.run("ENABLE QRESYNC").await));
    assert!(ok(&c.run("SELECT INBOX").await));
    let r = c.run("STORE 1,3 +FLAGS.SILENT (\\Deleted)").await;
    // .SILENT still reports the new mod-sequence under CONDSTORE.
    assert!(r[0].starts_with("* 1 FETCH (UID 1 MODSEQ ("), "{r:?}");
    assert!(r[1].starts_with("* 3 FETCH (UID 3 MODSEQ ("), "{r:?}");
    let r = c.run("EXPUNGE").await;
    assert!(ok(&r), "{r:?}");
    // One VANISHED for all of them (RFC 7162 section 3.2.10).
    assert_eq!(r[0], "* VANISHED 1,3\r\n", "{r:?}");
    assert_eq!(r.len(), 2, "{r:?}");
    let r = c.run("FETCH 1 (UID)").await;
    assert_eq!(r[0], "* 1 FETCH (UID 2)\r\n", "{r:?}");
}
