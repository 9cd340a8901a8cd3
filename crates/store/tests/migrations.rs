//! Schema migrations of the embedded backend: a fresh directory gets the
//! latest schema, an old database is upgraded in place without losing data,
//! reopening is a no-op, and a database newer than this binary is refused
//! without being touched.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use bulwark_core::{DomainName, MailboxId, MailboxRole, PrincipalId, PrincipalKind};
use bulwark_store::{
    Actor, Backend, BlobCheck, Delivery, EmailMeta, NewPrincipal, SqliteBackend, SqliteOptions,
};

const DB_FILE: &str = "bulwark.sqlite3";
const ADDRESS: &str = "alice@example.com";

fn admin() -> Actor {
    Actor::local_admin("tester")
}

/// A message of about `size` bytes whose body names `tag`.
fn message(tag: &str, size: usize) -> Vec<u8> {
    let mut m =
        format!("From: a@example.com\r\nSubject: {tag}\r\nMessage-ID: <{tag}@example.com>\r\n\r\n")
            .into_bytes();
    while m.len() < size {
        m.extend_from_slice(format!("{tag}: filler line of the message body\r\n").as_bytes());
    }
    m
}

fn deliver(
    b: &dyn Backend,
    account: PrincipalId,
    mailbox: MailboxId,
    raw: &[u8],
    tag: &str,
) -> u32 {
    let meta = EmailMeta {
        received_at: 1_700_000_000_000,
        message_id: Some(format!("{tag}@example.com")),
        subject: Some(tag.to_string()),
        ..EmailMeta::default()
    };
    let target = Delivery {
        account,
        mailbox,
        keywords: vec!["$seen".into()],
    };
    let delivered = b
        .deliver(&Actor::system("test"), raw, &meta, &[target])
        .unwrap();
    assert_eq!(delivered.len(), 1);
    delivered[0].uid
}

/// Creates a domain, a user and its inbox.
fn populate(b: &dyn Backend) -> (PrincipalId, MailboxId) {
    let domain: DomainName = "example.com".parse().unwrap();
    b.create_domain(&admin(), &domain).unwrap();
    let alice = b
        .create_principal(
            &admin(),
            &NewPrincipal {
                kind: PrincipalKind::Individual,
                address: ADDRESS.parse().unwrap(),
                display_name: "Alice".into(),
                password_hash: Some("$argon2id$placeholder".into()),
                quota_bytes: 0,
            },
        )
        .unwrap();
    let inbox = b
        .create_mailbox(&admin(), alice, "INBOX", Some(MailboxRole::Inbox), None)
        .unwrap();
    (alice, inbox.id)
}

fn assert_clean(check: &BlobCheck) {
    assert!(
        check.missing.is_empty(),
        "missing blobs: {:?}",
        check.missing
    );
    assert!(
        check.corrupt.is_empty(),
        "corrupt blobs: {:?}",
        check.corrupt
    );
    assert!(
        check.miscounted.is_empty(),
        "miscounted blobs: {:?}",
        check.miscounted
    );
    assert_eq!(check.orphans, 0, "orphan blob files");
}

/// The user, its inbox and the bytes of every message in it, in UID order.
fn snapshot(b: &dyn Backend) -> (PrincipalId, u32, Vec<(u32, Vec<u8>)>) {
    let alice = b
        .principal_by_address(&ADDRESS.parse().unwrap())
        .unwrap()
        .expect("the user survives");
    assert_eq!(alice.kind, PrincipalKind::Individual);
    assert_eq!(alice.display_name, "Alice");
    let mailboxes = b.mailboxes(alice.id).unwrap();
    assert_eq!(mailboxes.len(), 1);
    let inbox = &mailboxes[0];
    assert_eq!(inbox.name, "INBOX");
    assert_eq!(inbox.role, Some(MailboxRole::Inbox));
    let messages = b
        .messages(alice.id, inbox.id)
        .unwrap()
        .into_iter()
        .map(|m| {
            assert_eq!(m.keywords, ["$seen"]);
            let bytes = b.read_blob(&m.blob).unwrap();
            assert_eq!(bytes.len() as u64, m.size);
            (m.uid, bytes)
        })
        .collect();
    (alice.id, inbox.uid_validity, messages)
}

/// The database's `user_version`, read from the file header (offset 60,
/// big-endian). Valid when no write-ahead log is pending, which holds once
/// every connection is closed.
fn header_user_version(dir: &Path) -> u32 {
    let bytes = std::fs::read(dir.join(DB_FILE)).unwrap();
    u32::from_be_bytes(bytes[60..64].try_into().unwrap())
}

fn no_pending_wal(dir: &Path) -> bool {
    std::fs::metadata(dir.join(format!("{DB_FILE}-wal")))
        .map(|m| m.len() == 0)
        .unwrap_or(true)
}

/// Sets `PRAGMA user_version` with a real SQLite client: the `sqlite3`
/// shell, else Python's `sqlite3` module, else (neither installed) by
/// patching the header field directly, which is what both of them do.
fn set_user_version(dir: &Path, version: u32) {
    let path = dir.join(DB_FILE);
    let pragma = format!("PRAGMA user_version = {version};");
    let shell = std::process::Command::new("sqlite3")
        .arg(&path)
        .arg(&pragma)
        .status();
    if shell.is_ok_and(|s| s.success()) {
        return;
    }
    let script = "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\nc.execute(sys.argv[2])\nc.commit()\nc.close()";
    let python = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&path)
        .arg(&pragma)
        .status();
    if python.is_ok_and(|s| s.success()) {
        return;
    }
    assert!(
        no_pending_wal(dir),
        "cannot patch the header while a WAL is pending"
    );
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[60..64].copy_from_slice(&version.to_be_bytes());
    std::fs::write(&path, bytes).unwrap();
}

#[test]
fn empty_directory_gets_the_latest_schema() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let b = SqliteBackend::open(&data, SqliteOptions::default()).unwrap();
    let latest = SqliteBackend::latest_schema_version();
    assert!(latest >= 2, "this test expects at least two migrations");
    assert_eq!(b.schema_version().unwrap(), latest);
    assert!(data.join(DB_FILE).is_file());
    assert_clean(&b.check_blobs().unwrap());
    drop(b);
    assert_eq!(header_user_version(&data), latest);
}

#[test]
fn version_1_database_is_upgraded_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let small = message("small", 2_000);
    let large = message("large", 100 * 1024); // above the inline limit: a blob file
    {
        let b = SqliteBackend::open_at_version(dir.path(), SqliteOptions::default(), 1).unwrap();
        assert_eq!(b.schema_version().unwrap(), 1);
        // Migration 2 has not run: its queue table, which the blob check
        // reads, does not exist yet.
        assert!(
            b.check_blobs().is_err(),
            "version 1 has no queue_messages table"
        );
        let (alice, inbox) = populate(&b);
        assert_eq!(deliver(&b, alice, inbox, &small, "small"), 1);
        assert_eq!(deliver(&b, alice, inbox, &large, "large"), 2);
    }
    assert_eq!(header_user_version(dir.path()), 1);

    let b = SqliteBackend::open(dir.path(), SqliteOptions::default()).unwrap();
    assert_eq!(
        b.schema_version().unwrap(),
        SqliteBackend::latest_schema_version()
    );
    let (alice, uid_validity, messages) = snapshot(&b);
    assert_eq!(messages, vec![(1, small.clone()), (2, large.clone())]);
    let domain: DomainName = "example.com".parse().unwrap();
    assert!(b.domain(&domain).unwrap().is_some());
    assert!(b.current_modseq(alice).unwrap().0 > 0);
    assert!(
        !b.audit_tail(10).unwrap().is_empty(),
        "admin actions before the upgrade stay audited"
    );

    // The tables of later migrations work, and so does writing.
    let check = b.check_blobs().unwrap();
    assert_clean(&check);
    assert_eq!(check.referenced, 2);
    let inbox = b.mailboxes(alice).unwrap()[0].id;
    let after = message("after-upgrade", 3_000);
    assert_eq!(deliver(&b, alice, inbox, &after, "after-upgrade"), 3);
    let (_, validity_now, messages) = snapshot(&b);
    assert_eq!(validity_now, uid_validity);
    assert_eq!(messages.len(), 3);
    assert_eq!(messages[2], (3, after));
    assert_clean(&b.check_blobs().unwrap());
    // The same message again shares its stored bytes (the upsert by hash
    // works on the rebuilt table).
    assert_eq!(deliver(&b, alice, inbox, &small, "small-again"), 4);
    assert_eq!(b.check_blobs().unwrap().referenced, 3);
    drop(b);
    assert_eq!(
        header_user_version(dir.path()),
        SqliteBackend::latest_schema_version()
    );
    // Version 9 rebuilt `blobs` as a rowid table; every reference to it
    // still resolves.
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    let rows: i64 = conn
        .query_row("SELECT count(rowid) FROM blobs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 3);
    let broken: Option<String> = conn
        .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
        .ok();
    assert_eq!(broken, None);
    // Version 10 indexes emails by thread and no longer by blob.
    let plan: String = conn
        .query_row(
            "EXPLAIN QUERY PLAN SELECT 1 FROM emails WHERE thread_id = 1",
            [],
            |r| r.get(3),
        )
        .unwrap();
    assert!(plan.contains("emails_thread"), "{plan}");
    let blob_keys: i64 = conn
        .query_row(
            "SELECT count(*) FROM pragma_foreign_key_list('emails') WHERE \"table\" = 'blobs'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(blob_keys, 0);
}

#[test]
fn reopening_the_latest_schema_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let raw = message("kept", 60 * 1024);
    let before = {
        let b = SqliteBackend::open(dir.path(), SqliteOptions::default()).unwrap();
        let (alice, inbox) = populate(&b);
        deliver(&b, alice, inbox, &raw, "kept");
        snapshot(&b)
    };
    for _ in 0..2 {
        let b = SqliteBackend::open(dir.path(), SqliteOptions::default()).unwrap();
        assert_eq!(
            b.schema_version().unwrap(),
            SqliteBackend::latest_schema_version()
        );
        assert_eq!(snapshot(&b), before);
        assert_eq!(before.2, vec![(1, raw.clone())]);
        assert_clean(&b.check_blobs().unwrap());
    }
    assert_eq!(
        header_user_version(dir.path()),
        SqliteBackend::latest_schema_version()
    );
}

#[test]
fn newer_database_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    {
        let b = SqliteBackend::open(dir.path(), SqliteOptions::default()).unwrap();
        populate(&b);
    }
    let future = SqliteBackend::latest_schema_version() + 97;
    set_user_version(dir.path(), future);
    assert!(no_pending_wal(dir.path()));
    assert_eq!(header_user_version(dir.path()), future);
    let bytes_before = std::fs::read(dir.path().join(DB_FILE)).unwrap();

    for _ in 0..2 {
        let error = match SqliteBackend::open(dir.path(), SqliteOptions::default()) {
            Ok(_) => panic!("a database at schema version {future} must be refused"),
            Err(e) => e.to_string(),
        };
        assert!(
            error.contains(&future.to_string()),
            "the error names the database's version: {error}"
        );
        assert!(
            error.contains(&SqliteBackend::latest_schema_version().to_string()),
            "the error names the supported version: {error}"
        );
        assert_eq!(
            std::fs::read(dir.path().join(DB_FILE)).unwrap(),
            bytes_before,
            "the database file changed"
        );
        assert!(
            no_pending_wal(dir.path()),
            "the refused open left writes in the WAL"
        );
    }
    // Stopping at an older version is no way around the check either.
    assert!(SqliteBackend::open_at_version(dir.path(), SqliteOptions::default(), 1).is_err());
    assert_eq!(
        std::fs::read(dir.path().join(DB_FILE)).unwrap(),
        bytes_before
    );
}
