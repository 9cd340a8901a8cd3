//! Two-way sync with an independent client: `mbsync` (Debian `isync`)
//! against a running server, syncing every folder to a local Maildir
//! (`Patterns *`, `Create Both`, `Expunge Both`, `CopyArrivalDate yes`).
//! Covers the first download (bytes and arrival dates), flags, deletions,
//! new messages and folders made in the Maildir reaching the server, flags,
//! deliveries, expunges and folders made on the server reaching the
//! Maildir, and a last sync that transfers nothing (checked on both sides
//! and on the wire, from mbsync's `-Dn` protocol trace). Both `imaps` with
//! SASL PLAIN and `imap` with STARTTLS and LOGIN.
//!
//! `BULWARK_MBSYNC_TRACE=1` prints every run's protocol trace.
//!
//! Without `mbsync` on the PATH the test prints a note and passes, unless
//! `BULWARK_REQUIRE_PEERS=1` (set by `scripts/test`), where it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bulwark_audit::Actor;
use bulwark_core::PrincipalId;
use bulwark_store::{KeywordUpdate, MessageEntry, Store};
use common::*;

/// How long one `mbsync` run may take before the test gives up on it.
const RUN_LIMIT: Duration = Duration::from_secs(90);

/// Whether `mbsync` can run here; fails instead when peers are required.
fn mbsync_available() -> bool {
    let found = Command::new("mbsync")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var("BULWARK_REQUIRE_PEERS").as_deref() != Ok("1"),
            "mbsync (Debian package isync) is required: BULWARK_REQUIRE_PEERS=1"
        );
        eprintln!("note: mbsync not installed (apt-get install isync); skipping the mbsync test");
    }
    found
}

/// The outcome of one `mbsync` run.
struct Run {
    stdout: String,
    stderr: String,
}

impl Run {
    fn text(&self) -> String {
        format!("--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr)
    }
}

/// Runs `mbsync -c <rc> <args>` off the async executor, with a time limit;
/// panics with its output unless it exits 0.
async fn mbsync(home: &Path, rc: &Path, args: &[&str]) -> Run {
    let home = home.to_path_buf();
    let rc = rc.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| (*s).to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out_path = home.join("mbsync.out");
        let err_path = home.join("mbsync.err");
        let mut child = Command::new("mbsync")
            .arg("-c")
            .arg(&rc)
            .args(&args)
            .env("HOME", &home)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .spawn()
            .expect("mbsync starts");
        let deadline = Instant::now() + RUN_LIMIT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "mbsync did not finish in {RUN_LIMIT:?}\n{}",
                    std::fs::read_to_string(&err_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let run = Run {
            stdout: std::fs::read_to_string(&out_path).unwrap(),
            stderr: std::fs::read_to_string(&err_path).unwrap(),
        };
        if std::env::var_os("BULWARK_MBSYNC_TRACE").is_some() {
            eprintln!("=== mbsync {args:?}\n{}", run.text());
        }
        assert!(
            status.success(),
            "mbsync {args:?} failed: {status}\n{}",
            run.text()
        );
        run
    })
    .await
    .unwrap()
}

/// How mbsync reaches the server.
struct Access {
    port: u16,
    /// `IMAPS` (implicit TLS) or `STARTTLS`.
    ssl_type: &'static str,
    /// `PLAIN` (SASL, with SASL-IR) or `LOGIN` (the IMAP LOGIN command).
    auth: &'static str,
}

/// The `.mbsyncrc`: every server folder to a Maildir tree, both ways.
fn write_rc(home: &Path, access: &Access, cert: &Path, maildir: &Path) -> PathBuf {
    let rc = home.join("mbsyncrc");
    let text = format!(
        "IMAPAccount bulwark\n\
         Host 127.0.0.1\n\
         Port {port}\n\
         User {ALICE}\n\
         Pass \"{PASSWORD}\"\n\
         SSLType {ssl_type}\n\
         AuthMechs {auth}\n\
         CertificateFile {cert}\n\
         Timeout 20\n\
         \n\
         IMAPStore bulwark-remote\n\
         Account bulwark\n\
         MaxSize 10m\n\
         \n\
         MaildirStore bulwark-local\n\
         Path {maildir}/\n\
         Inbox {maildir}/INBOX\n\
         SubFolders Verbatim\n\
         MaxSize 10m\n\
         \n\
         Channel bulwark\n\
         Far :bulwark-remote:\n\
         Near :bulwark-local:\n\
         Patterns *\n\
         Create Both\n\
         Expunge Both\n\
         SyncState *\n\
         CopyArrivalDate yes\n",
        port = access.port,
        ssl_type = access.ssl_type,
        auth = access.auth,
        cert = cert.display(),
        maildir = maildir.display(),
    );
    std::fs::write(&rc, text).unwrap();
    rc
}

/// A message file in a Maildir folder: its path and the flags of its
/// `:2,` suffix.
#[derive(Debug, Clone)]
struct LocalMessage {
    path: PathBuf,
    flags: String,
    bytes: Vec<u8>,
}

/// Every message file of one Maildir folder (`cur` and `new`).
fn maildir_messages(folder: &Path) -> Vec<LocalMessage> {
    let mut out = Vec::new();
    for sub in ["cur", "new"] {
        let Ok(entries) = std::fs::read_dir(folder.join(sub)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let flags = name
                .rsplit_once(":2,")
                .map(|(_, f)| f.to_string())
                .unwrap_or_default();
            let bytes = std::fs::read(&path).unwrap();
            out.push(LocalMessage { path, flags, bytes });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// Names of every file below `dir`, with their sizes: a snapshot to
/// compare before and after a sync.
fn tree(dir: &Path) -> BTreeMap<PathBuf, u64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                out.insert(entry.path(), meta.len());
            }
        }
    }
    out
}

/// A message as the Maildir holds it: mbsync stores LF line ends (the
/// server CRLF); nothing else may differ.
fn normalise(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for line in bytes.split_inclusive(|b| *b == b'\n') {
        match line.strip_suffix(b"\r\n") {
            Some(l) => {
                out.extend_from_slice(l);
                out.push(b'\n');
            }
            None => out.extend_from_slice(line),
        }
    }
    out
}

/// A message without the one `X-TUID:` header mbsync 1.4 adds to every
/// message it copies, either way (its transaction id, at the end of the
/// header block); everything else must be the message.
fn without_tuid(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut in_header = true;
    let mut seen = false;
    for line in bytes.split_inclusive(|b| *b == b'\n') {
        if line == b"\n" || line == b"\r\n" {
            in_header = false;
        }
        if in_header && !seen && line.starts_with(b"X-TUID: ") {
            seen = true;
            continue;
        }
        out.extend_from_slice(line);
    }
    out
}

/// Bytes as text, for readable assertion failures (lossless for this
/// test's messages, which are UTF-8).
fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8 message")
}

/// The server's view of one mailbox: entries with their bytes.
async fn server_messages(
    store: &Store,
    account: PrincipalId,
    name: &str,
) -> Vec<(MessageEntry, Vec<u8>)> {
    let name = name.to_string();
    store
        .run(move |b| {
            let mailbox = b
                .mailboxes(account)?
                .into_iter()
                .find(|m| m.name == name)
                .expect("mailbox exists");
            let mut out = Vec::new();
            for entry in b.messages(account, mailbox.id)? {
                let bytes = b.read_blob(&entry.blob)?;
                out.push((entry, bytes));
            }
            Ok(out)
        })
        .await
        .unwrap()
}

/// `(name, uid_next, highest_modseq, message count)` of every mailbox.
async fn server_state(store: &Store, account: PrincipalId) -> Vec<(String, u32, String, usize)> {
    store
        .run(move |b| {
            let mut out = Vec::new();
            for m in b.mailboxes(account)? {
                let count = b.messages(account, m.id)?.len();
                out.push((m.name, m.uid_next, format!("{:?}", m.highest_modseq), count));
            }
            Ok(out)
        })
        .await
        .unwrap()
}

/// Renames a Maildir file so its `:2,` suffix holds `flags` (sorted, as
/// the Maildir convention requires).
fn set_local_flags(message: &LocalMessage, flags: &str) -> PathBuf {
    let mut sorted: Vec<char> = flags.chars().collect();
    sorted.sort_unstable();
    let flags: String = sorted.into_iter().collect();
    let name = message
        .path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let base = name.rsplit_once(":2,").map_or(name.as_str(), |(b, _)| b);
    let folder = message.path.parent().unwrap().parent().unwrap();
    let new = folder.join("cur").join(format!("{base}:2,{flags}"));
    std::fs::rename(&message.path, &new).unwrap();
    new
}

fn subject_of(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .unwrap_or("")
        .trim_end()
        .to_string()
}

/// When the server-side deliveries of this test arrived (fixture time).
const DELIVERED_AT: i64 = 1_751_364_000; // Tue, 1 Jul 2025 10:00:00 UTC
/// When the messages written in the Maildir "arrived" (their mtime).
const WRITTEN_AT: i64 = 1_751_446_800; // Wed, 2 Jul 2025 09:00:00 UTC

/// Writes a new message file into a Maildir folder, as a mail client
/// would, with its arrival time as mtime.
fn write_local(folder: &Path, name: &str, bytes: &[u8]) {
    let path = folder.join("cur").join(name);
    std::fs::write(&path, bytes).unwrap();
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(WRITTEN_AT as u64))
        .unwrap();
}

fn mtime(path: &Path) -> i64 {
    let modified = std::fs::metadata(path).unwrap().modified().unwrap();
    modified
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The IMAP commands a `-Dn` run sent (`>>> tag COMMAND ...`), upper-cased
/// command words only.
fn commands_sent(run: &Run) -> Vec<String> {
    run.stdout
        .lines()
        .filter_map(|l| l.split_once(">>> ").map(|(_, c)| c))
        .map(|c| {
            let mut words = c.split(' ').skip(1);
            let first = words.next().unwrap_or("").to_ascii_uppercase();
            if first == "UID" {
                format!("UID {}", words.next().unwrap_or("").to_ascii_uppercase())
            } else {
                first
            }
        })
        .collect()
}

async fn deliver_to(
    store: &Store,
    actor: &Actor,
    account: PrincipalId,
    mailbox: &str,
    raw: Vec<u8>,
    keywords: &[&str],
) {
    let actor = actor.clone();
    let mailbox = mailbox.to_string();
    let keywords: Vec<String> = keywords.iter().map(|k| (*k).to_string()).collect();
    store
        .run(move |b| {
            let id = b
                .mailboxes(account)?
                .into_iter()
                .find(|m| m.name == mailbox)
                .expect("mailbox exists")
                .id;
            b.deliver(
                &actor,
                &raw,
                &bulwark_store::EmailMeta {
                    received_at: DELIVERED_AT * 1000,
                    ..Default::default()
                },
                &[bulwark_store::Delivery {
                    account,
                    mailbox: id,
                    keywords,
                }],
            )
        })
        .await
        .unwrap();
}

async fn mailbox_id(store: &Store, account: PrincipalId, name: &str) -> bulwark_core::MailboxId {
    let name = name.to_string();
    store
        .run(move |b| {
            Ok(b.mailboxes(account)?
                .into_iter()
                .find(|m| m.name == name)
                .expect("mailbox")
                .id)
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mbsync_two_way_sync() {
    if !mbsync_available() {
        return;
    }
    let fx = start().await;
    let alice = fx.alice;
    let actor = Actor::user(ALICE, alice.0, "password", None, "test");

    for subject in ["one", "two", "three", "four"] {
        fx.deliver(alice, &message(subject)).await;
    }
    fx.deliver(alice, MESSAGE).await;
    // A second folder with a flagged message, created on the server.
    {
        let actor = actor.clone();
        fx.store
            .run(move |b| b.create_mailbox(&actor, alice, "Projects", None, None))
            .await
            .unwrap();
    }
    deliver_to(
        &fx.store,
        &actor,
        alice,
        "Projects",
        message("in projects"),
        &["$flagged"],
    )
    .await;

    let home = tempfile::tempdir().unwrap();
    let maildir = home.path().join("Mail");
    std::fs::create_dir_all(&maildir).unwrap();
    let rc = write_rc(
        home.path(),
        &Access {
            port: fx.imaps.port(),
            ssl_type: "IMAPS",
            auth: "PLAIN",
        },
        &fx.cert_path,
        &maildir,
    );
    let inbox = maildir.join("INBOX");
    let by_subject = |folder: &Path, subject: &str| {
        maildir_messages(folder)
            .into_iter()
            .find(|m| subject_of(&m.bytes) == subject)
            .unwrap_or_else(|| panic!("no local message {subject} in {}", folder.display()))
    };

    // (1) First sync: everything arrives, byte for byte (modulo LF line
    // ends), with its arrival date.
    let first = mbsync(home.path(), &rc, &["-Dn", "-a"]).await;
    let local = maildir_messages(&inbox);
    let server = server_messages(&fx.store, alice, "INBOX").await;
    assert_eq!(local.len(), server.len(), "{}", first.text());
    let mut local_bodies: Vec<String> = local
        .iter()
        .map(|m| text(&without_tuid(&m.bytes)))
        .collect();
    let mut server_bodies: Vec<String> = server.iter().map(|(_, b)| text(&normalise(b))).collect();
    local_bodies.sort();
    server_bodies.sort();
    assert_eq!(local_bodies, server_bodies, "{}", first.text());
    for m in &local {
        assert!(m.flags.is_empty(), "unexpected flags on {m:?}");
        assert_eq!(mtime(&m.path), DELIVERED_AT, "arrival date of {m:?}");
    }
    // Every server folder exists locally (Create Both); Projects with its
    // flagged message.
    for (name, ..) in server_state(&fx.store, alice).await {
        let folder = if name == "INBOX" {
            inbox.clone()
        } else {
            maildir.join(&name)
        };
        assert!(
            folder.join("cur").is_dir(),
            "{name} not created locally\n{}",
            first.text()
        );
    }
    let local_projects = maildir_messages(&maildir.join("Projects"));
    assert_eq!(local_projects.len(), 1, "{}", first.text());
    assert_eq!(local_projects[0].flags, "F");
    assert_eq!(
        text(&without_tuid(&local_projects[0].bytes)),
        text(&normalise(&message("in projects")))
    );

    // (2) Changes in the Maildir reach the server: flags, a deletion, a
    // trashed message, new messages (one large, one 8-bit) and a folder.
    set_local_flags(&by_subject(&inbox, "one"), "S");
    set_local_flags(&by_subject(&inbox, "two"), "FS");
    set_local_flags(&by_subject(&inbox, "Quarterly report"), "DPR");
    std::fs::remove_file(by_subject(&inbox, "three").path).unwrap();
    set_local_flags(&by_subject(&inbox, "four"), "T");
    let offline: &[u8] = b"From: Alice <alice@example.com>\nTo: bob@example.com\nSubject: written offline\nDate: Wed, 2 Jul 2025 09:00:00 +0000\nMessage-ID: <offline@example.com>\n\nDraft body\n";
    let mut large = b"From: Alice <alice@example.com>\nTo: bob@example.com\nSubject: large\nMessage-ID: <large@example.com>\n\n".to_vec();
    for i in 0..4000 {
        large.extend_from_slice(format!("{i:06} {}\n", "x".repeat(72)).as_bytes());
    }
    let eight_bit = "From: Alice <alice@example.com>\nTo: bob@example.com\nSubject: umlauts\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nGr\u{fc}\u{df}e aus K\u{f6}ln \u{2014} \u{1f600}\n".as_bytes().to_vec();
    write_local(&inbox, "1751446800.42_1.testhost:2,S", offline);
    write_local(&inbox, "1751446800.42_2.testhost:2,", &large);
    write_local(&inbox, "1751446800.42_3.testhost:2,F", &eight_bit);
    // A folder made locally is created on the server too, with a message.
    let notes = maildir.join("Local Notes");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(notes.join(sub)).unwrap();
    }
    write_local(
        &notes,
        "1751446800.42_4.testhost:2,S",
        b"Subject: a note\n\nremember\n",
    );
    let second = mbsync(home.path(), &rc, &["-Dn", "-a"]).await;
    let server = server_messages(&fx.store, alice, "INBOX").await;
    let on_server = |subject: &str| {
        server
            .iter()
            .find(|(_, b)| subject_of(b) == subject)
            .cloned()
    };
    let keywords_of = |subject: &str| on_server(subject).map(|(e, _)| e.keywords);
    let kw = |k: &[&str]| Some(k.iter().map(|s| (*s).to_string()).collect::<Vec<_>>());
    assert_eq!(keywords_of("one"), kw(&["$seen"]), "{}", second.text());
    assert_eq!(
        keywords_of("two"),
        kw(&["$flagged", "$seen"]),
        "{}",
        second.text()
    );
    assert_eq!(
        keywords_of("Quarterly report"),
        kw(&["$answered", "$draft", "$forwarded"]),
        "{}",
        second.text()
    );
    assert_eq!(
        keywords_of("three"),
        None,
        "deleted locally, still on the server\n{}",
        second.text()
    );
    assert_eq!(
        keywords_of("four"),
        None,
        "trashed locally, still on the server\n{}",
        second.text()
    );
    for (subject, bytes, keywords) in [
        ("written offline", offline, kw(&["$seen"])),
        ("large", &large[..], kw(&[])),
        ("umlauts", &eight_bit[..], kw(&["$flagged"])),
    ] {
        let (entry, stored) = on_server(subject)
            .unwrap_or_else(|| panic!("local message {subject} not appended\n{}", second.text()));
        assert_eq!(Some(entry.keywords.clone()), keywords, "{subject}");
        // mbsync 1.4 adds its X-TUID header to what it uploads, too.
        assert_eq!(
            text(&without_tuid(&normalise(&stored))),
            text(bytes),
            "{subject}"
        );
        assert!(
            stored.windows(2).all(|w| w[1] != b'\n' || w[0] == b'\r'),
            "{subject} must be stored with CRLF line ends"
        );
        assert_eq!(
            entry.received_at,
            WRITTEN_AT * 1000,
            "{subject}: APPEND date lost"
        );
    }
    let notes_on_server = server_messages(&fx.store, alice, "Local Notes").await;
    assert_eq!(notes_on_server.len(), 1, "{}", second.text());
    assert_eq!(notes_on_server[0].0.keywords, vec!["$seen".to_string()]);
    // The Maildir matches: the trashed message is gone there too.
    assert_eq!(
        maildir_messages(&inbox).len(),
        server.len(),
        "{}",
        second.text()
    );

    // (3) Changes on the server reach the Maildir: flags added and
    // removed, a new delivery, an expunge, a message marked \Deleted, a new
    // child folder.
    let uid = |subject: &str| on_server(subject).unwrap().0.uid;
    let (uid_one, uid_two, uid_report, uid_offline) = (
        uid("one"),
        uid("two"),
        uid("Quarterly report"),
        uid("written offline"),
    );
    let inbox_id = mailbox_id(&fx.store, alice, "INBOX").await;
    {
        let actor = actor.clone();
        fx.store
            .run(move |b| {
                b.update_keywords(
                    &actor,
                    alice,
                    inbox_id,
                    &[uid_one],
                    &KeywordUpdate::Add(vec!["$flagged".into(), "$answered".into()]),
                )?;
                b.update_keywords(
                    &actor,
                    alice,
                    inbox_id,
                    &[uid_report],
                    &KeywordUpdate::Remove(vec!["$draft".into()]),
                )?;
                b.update_keywords(
                    &actor,
                    alice,
                    inbox_id,
                    &[uid_offline],
                    &KeywordUpdate::Add(vec!["$deleted".into()]),
                )?;
                b.expunge(&actor, alice, inbox_id, &[uid_two])
            })
            .await
            .unwrap();
    }
    fx.deliver(alice, &message("five")).await;
    {
        let actor = actor.clone();
        fx.store
            .run(move |b| {
                let parent = b
                    .mailboxes(alice)?
                    .into_iter()
                    .find(|m| m.name == "Projects")
                    .unwrap()
                    .id;
                b.create_mailbox(&actor, alice, "Projects/2025", None, Some(parent))
            })
            .await
            .unwrap();
    }
    deliver_to(
        &fx.store,
        &actor,
        alice,
        "Projects/2025",
        message("nested"),
        &["$seen"],
    )
    .await;
    let third = mbsync(home.path(), &rc, &["-Dn", "-a"]).await;
    assert_eq!(by_subject(&inbox, "one").flags, "FRS", "{}", third.text());
    assert_eq!(
        by_subject(&inbox, "Quarterly report").flags,
        "PR",
        "{}",
        third.text()
    );
    let five = by_subject(&inbox, "five");
    assert_eq!(five.flags, "");
    assert_eq!(
        text(&without_tuid(&five.bytes)),
        text(&normalise(&message("five")))
    );
    let server = server_messages(&fx.store, alice, "INBOX").await;
    assert!(
        server
            .iter()
            .all(|(_, b)| subject_of(b) != "written offline"),
        "\\Deleted message not expunged on the server (Expunge Both)\n{}",
        third.text()
    );
    let local = maildir_messages(&inbox);
    for gone in ["two", "written offline"] {
        assert!(
            local.iter().all(|m| subject_of(&m.bytes) != gone),
            "{gone} still in the Maildir\n{}",
            third.text()
        );
    }
    assert_eq!(local.len(), server.len(), "{}", third.text());
    let nested = maildir_messages(&maildir.join("Projects/2025"));
    assert_eq!(nested.len(), 1, "{}", third.text());
    assert_eq!(nested[0].flags, "S");

    // (4) Nothing changed on either side: a sync transfers nothing.
    let before_local = tree(&maildir);
    let before_server = server_state(&fx.store, alice).await;
    let fourth = mbsync(home.path(), &rc, &["-Dn", "-a"]).await;
    let after_local = tree(&maildir);
    let after_server = server_state(&fx.store, alice).await;
    assert_eq!(
        before_server,
        after_server,
        "server changed\n{}",
        fourth.text()
    );
    // Sync state files may be rewritten; message files may not change.
    let messages_only = |t: &BTreeMap<PathBuf, u64>| -> BTreeMap<PathBuf, u64> {
        t.iter()
            .filter(|(p, _)| {
                p.parent()
                    .and_then(|d| d.file_name())
                    .is_some_and(|d| d == "cur" || d == "new")
            })
            .map(|(p, s)| (p.clone(), *s))
            .collect()
    };
    assert_eq!(
        messages_only(&before_local),
        messages_only(&after_local),
        "Maildir changed\n{}",
        fourth.text()
    );
    assert_nothing_sent(&fourth);
}

/// On the wire, a run that found nothing to do only looked: no message
/// or flag went either way.
fn assert_nothing_sent(fourth: &Run) {
    let sent = commands_sent(fourth);
    assert!(
        sent.iter().any(|c| c == "UID FETCH"),
        "{sent:?}\n{}",
        fourth.text()
    );
    for c in &sent {
        assert!(
            [
                "STARTTLS",
                "AUTHENTICATE",
                "LOGIN",
                "CAPABILITY",
                "NAMESPACE",
                "LIST",
                "SELECT",
                "EXAMINE",
                "UID FETCH",
                "CLOSE",
                "LOGOUT"
            ]
            .contains(&c.as_str()),
            "a sync with nothing to do sent {c}\n{}",
            fourth.text()
        );
    }
    assert!(
        !fourth.stdout.contains("BODY.PEEK[]") && !fourth.stdout.contains("BODY[]"),
        "a sync with nothing to do downloaded a message\n{}",
        fourth.text()
    );
}

/// The `imap` listener with STARTTLS and the LOGIN command; a folder with
/// a non-ASCII name made in the Maildir under its modified UTF-7 name
/// (mbsync 1.4 does not convert names); a second sync that does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mbsync_over_starttls_with_login() {
    if !mbsync_available() {
        return;
    }
    let fx = start().await;
    let alice = fx.alice;
    fx.deliver(alice, MESSAGE).await;
    fx.deliver(alice, &message("second")).await;
    let home = tempfile::tempdir().unwrap();
    let maildir = home.path().join("Mail");
    std::fs::create_dir_all(&maildir).unwrap();
    let rc = write_rc(
        home.path(),
        &Access {
            port: fx.imap.port(),
            ssl_type: "STARTTLS",
            auth: "LOGIN",
        },
        &fx.cert_path,
        &maildir,
    );
    let drafts = maildir.join("Entw&APw-rfe");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(drafts.join(sub)).unwrap();
    }
    write_local(
        &drafts,
        "1751446800.7_1.testhost:2,D",
        b"Subject: draft\n\nunfinished\n",
    );
    let first = mbsync(home.path(), &rc, &["-Dn", "-a"]).await;
    assert!(first.stdout.contains(">>> 1 STARTTLS"), "{}", first.text());
    assert!(
        first.stdout.contains("LOGIN <user> <pass>"),
        "{}",
        first.text()
    );
    let local = maildir_messages(&maildir.join("INBOX"));
    let server = server_messages(&fx.store, alice, "INBOX").await;
    let mut local_bodies: Vec<String> = local
        .iter()
        .map(|m| text(&without_tuid(&m.bytes)))
        .collect();
    let mut server_bodies: Vec<String> = server.iter().map(|(_, b)| text(&normalise(b))).collect();
    local_bodies.sort();
    server_bodies.sort();
    assert_eq!(local_bodies, server_bodies, "{}", first.text());
    let on_server = server_messages(&fx.store, alice, "Entw\u{fc}rfe").await;
    assert_eq!(on_server.len(), 1, "{}", first.text());
    assert_eq!(on_server[0].0.keywords, vec!["$draft".to_string()]);

    let before = server_state(&fx.store, alice).await;
    let second = mbsync(home.path(), &rc, &["-Dn", "-a"]).await;
    assert_eq!(
        before,
        server_state(&fx.store, alice).await,
        "{}",
        second.text()
    );
    assert_nothing_sent(&second);
}
