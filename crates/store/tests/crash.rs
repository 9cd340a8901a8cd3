//! Crash safety of the embedded backend: a process killed with SIGKILL in the
//! middle of concurrent deliveries leaves no half-written message, no
//! reference to a missing blob, and every write it acknowledged is present
//! after reopening.
//!
//! The test binary runs itself as the writing child: `crash_child` does the
//! child's work when `BULWARK_CRASH_CHILD_DIR` is set and nothing otherwise.
//! The child prints `ACK <uid> <blob> <marker>` after each delivery returns;
//! the parent kills it after enough acknowledgements, reopens the store and
//! checks it, three times over the same directory.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use bulwark_core::{
    BlobId, ChangeKind, DomainName, EmailAddress, MailboxId, MailboxRole, ModSeq, ObjectType,
    PrincipalId, PrincipalKind,
};
use bulwark_store::{
    Actor, Backend, Delivery, EmailMeta, NewPrincipal, SqliteBackend, SqliteOptions,
};
use sha2::{Digest, Sha256};

const CHILD_DIR_ENV: &str = "BULWARK_CRASH_CHILD_DIR";
const CHILD_RUN_ENV: &str = "BULWARK_CRASH_CHILD_RUN";
const ADDRESS: &str = "crash@example.com";
const WRITERS: usize = 16;
/// How long the whole test may take before it is declared hung.
const DEADLINE: Duration = Duration::from_secs(120);
/// A child never outlives this, even if its parent lost track of it.
const CHILD_LIFETIME: Duration = Duration::from_secs(150);

fn blob_of(bytes: &[u8]) -> BlobId {
    BlobId(Sha256::digest(bytes).into())
}

/// A message unique to `marker`: its headers and first and last body lines
/// name it, so a truncated or mixed-up message is recognisable.
fn message(marker: &str, size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: writer@example.com\r\nSubject: {marker}\r\nMessage-ID: <{marker}@crash.test>\r\n\r\nBEGIN {marker}\r\n"
    )
    .into_bytes();
    let end = format!("END {marker}\r\n");
    while m.len() + end.len() < size {
        m.extend_from_slice(format!("{marker} filler line of the message body\r\n").as_bytes());
    }
    m.extend_from_slice(end.as_bytes());
    m
}

/// The marker of a well-formed message, or why it is not one.
fn marker_of(bytes: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    let marker = text
        .lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .ok_or("no Subject")?
        .to_string();
    let head = format!("Message-ID: <{marker}@crash.test>\r\n\r\nBEGIN {marker}\r\n");
    if !text.contains(&head) {
        return Err(format!("{marker}: header or first body line damaged"));
    }
    if !text.ends_with(&format!("\r\nEND {marker}\r\n")) {
        return Err(format!("{marker}: truncated"));
    }
    Ok(marker)
}

/// Message size for a marker: most are small enough to live inline in the
/// database, every fifth goes to a blob file.
fn size_for(marker: &str, n: u64) -> usize {
    let digest = Sha256::digest(marker.as_bytes());
    let noise = u64::from_le_bytes(digest[..8].try_into().unwrap()) as usize;
    if n % 5 == 4 {
        50 * 1024 + noise % (150 * 1024)
    } else {
        1024 + noise % (3 * 1024)
    }
}

fn admin() -> Actor {
    Actor::local_admin("crash-test")
}

// ---------------------------------------------------------------- child ---

/// One line to the parent, whole and flushed; a parent that went away ends
/// the child.
fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        std::process::exit(2);
    }
}

/// The account and inbox, created on the first run and found on later ones.
fn account_and_inbox(b: &dyn Backend) -> (PrincipalId, MailboxId) {
    let domain: DomainName = "example.com".parse().unwrap();
    if b.domain(&domain).unwrap().is_none() {
        b.create_domain(&admin(), &domain).unwrap();
    }
    let address: EmailAddress = ADDRESS.parse().unwrap();
    let account = match b.principal_by_address(&address).unwrap() {
        Some(p) => p.id,
        None => b
            .create_principal(
                &admin(),
                &NewPrincipal {
                    kind: PrincipalKind::Individual,
                    address,
                    display_name: "Crash".into(),
                    password_hash: None,
                    quota_bytes: 0,
                },
            )
            .unwrap(),
    };
    let existing = b
        .mailboxes(account)
        .unwrap()
        .into_iter()
        .find(|m| m.role == Some(MailboxRole::Inbox));
    let inbox = match existing {
        Some(m) => m.id,
        None => {
            b.create_mailbox(&admin(), account, "INBOX", Some(MailboxRole::Inbox), None)
                .unwrap()
                .id
        }
    };
    (account, inbox)
}

fn child_main(dir: &Path, run: u32) -> ! {
    std::thread::spawn(|| {
        std::thread::sleep(CHILD_LIFETIME);
        std::process::exit(3);
    });
    let b = Arc::new(SqliteBackend::open(dir, SqliteOptions::default()).unwrap());
    let (account, inbox) = account_and_inbox(b.as_ref());
    emit("READY");
    for writer in 0..WRITERS {
        let b = Arc::clone(&b);
        std::thread::spawn(move || {
            for n in 0u64.. {
                let marker = format!("r{run}-w{writer}-n{n}");
                let raw = message(&marker, size_for(&marker, n));
                let meta = EmailMeta {
                    received_at: 1_700_000_000_000,
                    message_id: Some(format!("{marker}@crash.test")),
                    subject: Some(marker.clone()),
                    ..EmailMeta::default()
                };
                let target = Delivery {
                    account,
                    mailbox: inbox,
                    keywords: vec![],
                };
                match b.deliver(&Actor::system("lmtp"), &raw, &meta, &[target]) {
                    Ok(delivered) if delivered.len() == 1 => {
                        emit(&format!(
                            "ACK {} {} {marker}",
                            delivered[0].uid,
                            blob_of(&raw)
                        ));
                    }
                    Ok(delivered) => {
                        emit(&format!(
                            "ERR {marker}: {} deliveries for one target",
                            delivered.len()
                        ));
                        std::process::exit(1);
                    }
                    Err(e) => {
                        emit(&format!("ERR {marker}: {e}"));
                        std::process::exit(1);
                    }
                }
            }
        });
    }
    loop {
        std::thread::park();
    }
}

/// The child's entry point; a no-op in a normal test run.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let run = std::env::var(CHILD_RUN_ENV)
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    child_main(Path::new(&dir), run);
}

// --------------------------------------------------------------- parent ---

/// An acknowledged delivery.
#[derive(Debug, Clone)]
struct Ack {
    blob: BlobId,
    marker: String,
}

/// Kills the child if the parent gives up early, so no writer outlives a
/// failed test.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn parse_ack(line: &str) -> Option<(u32, Ack)> {
    let rest = &line[line.find("ACK ")? + 4..];
    let mut fields = rest.split_whitespace();
    let uid = fields.next()?.parse().ok()?;
    let blob = fields.next()?.parse().ok()?;
    let marker = fields.next()?.to_string();
    Some((uid, Ack { blob, marker }))
}

/// Runs child number `run` until it has acknowledged at least `kill_after`
/// deliveries, kills it with SIGKILL and returns every acknowledgement it
/// managed to print.
fn run_and_kill(dir: &Path, run: u32, kill_after: usize, deadline: Instant) -> Vec<(u32, Ack)> {
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_RUN_ENV, run.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().unwrap();
    let (lines_tx, lines) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        loop {
            let mut line = String::new();
            match stdout.read_line(&mut line) {
                // A line cut short by the kill was never a complete ACK.
                Ok(n) if n > 0 && line.ends_with('\n') => {
                    if lines_tx.send(line).is_err() {
                        return;
                    }
                }
                _ => return,
            }
        }
    });

    let mut ready = false;
    let mut acks = Vec::new();
    let take = |line: &str, ready: &mut bool, acks: &mut Vec<(u32, Ack)>| {
        assert!(
            !line.contains("ERR "),
            "run {run}: the child failed a delivery: {line}"
        );
        if line.contains("READY") {
            *ready = true;
        }
        if let Some(ack) = parse_ack(line) {
            acks.push(ack);
        }
    };
    while acks.len() < kill_after {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => take(&line, &mut ready, &mut acks),
            Err(RecvTimeoutError::Timeout) => {
                panic!(
                    "run {run}: deadline reached with {} of {kill_after} acknowledgements",
                    acks.len()
                )
            }
            Err(RecvTimeoutError::Disconnected) => {
                panic!(
                    "run {run}: the child exited after {} acknowledgements: {:?}",
                    acks.len(),
                    child.0.try_wait()
                )
            }
        }
    }
    child.0.kill().unwrap();
    let status = child.0.wait().unwrap();
    // Lines already in the pipe were printed after their write returned:
    // they are acknowledged too.
    reader.join().unwrap();
    for line in lines.try_iter() {
        take(&line, &mut ready, &mut acks);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(9),
            "run {run}: the child was not killed by SIGKILL: {status}"
        );
    }
    #[cfg(not(unix))]
    assert!(!status.success());
    assert!(ready, "run {run}: the child never reported READY");
    acks
}

/// Reopens the store and checks it against everything acknowledged so far.
/// Returns the number of messages in the inbox.
fn verify(dir: &Path, acked: &BTreeMap<u32, Ack>, run: u32) -> usize {
    let b = SqliteBackend::open(dir, SqliteOptions::default()).unwrap();
    let user = b
        .principal_by_address(&ADDRESS.parse().unwrap())
        .unwrap()
        .expect("the account exists");
    let mailboxes = b.mailboxes(user.id).unwrap();
    assert_eq!(
        mailboxes.len(),
        1,
        "run {run}: exactly one mailbox, found {mailboxes:?}"
    );
    let inbox = &mailboxes[0];
    assert_eq!(inbox.role, Some(MailboxRole::Inbox));
    let messages = b.messages(user.id, inbox.id).unwrap();

    // No UID twice, and none at or above uid_next.
    for pair in messages.windows(2) {
        assert!(
            pair[0].uid < pair[1].uid,
            "run {run}: UIDs out of order or duplicated: {} then {}",
            pair[0].uid,
            pair[1].uid
        );
    }
    if let Some(last) = messages.last() {
        assert!(
            inbox.uid_next > last.uid,
            "run {run}: uid_next {} is not above UID {}",
            inbox.uid_next,
            last.uid
        );
    }

    // Every listed message is whole, matches its content address, and was
    // stored once.
    let mut markers = HashSet::new();
    let mut by_uid = BTreeMap::new();
    let mut used = 0;
    for m in &messages {
        let bytes = b
            .read_blob(&m.blob)
            .unwrap_or_else(|e| panic!("run {run}: UID {}: {e}", m.uid));
        assert_eq!(
            bytes.len() as u64,
            m.size,
            "run {run}: UID {} has the wrong size",
            m.uid
        );
        assert_eq!(
            blob_of(&bytes),
            m.blob,
            "run {run}: UID {} does not hash to its blob id",
            m.uid
        );
        let marker = marker_of(&bytes)
            .unwrap_or_else(|e| panic!("run {run}: UID {} is half-written: {e}", m.uid));
        assert!(
            markers.insert(marker.clone()),
            "run {run}: message {marker} is stored twice"
        );
        let email = b
            .email(user.id, m.email)
            .unwrap()
            .expect("a listed message has its email row");
        assert_eq!(email.blob, m.blob);
        assert_eq!(email.meta.subject.as_deref(), Some(marker.as_str()));
        used += m.size;
        by_uid.insert(m.uid, (m.blob, marker));
    }
    assert_eq!(
        user.used_bytes, used,
        "run {run}: quota usage disagrees with the stored messages"
    );

    // The change log holds exactly the stored messages' creations, at their
    // modification sequences.
    let modseq = b.current_modseq(user.id).unwrap();
    let created: BTreeMap<u32, ModSeq> = b
        .changes_since(user.id, ModSeq(0), 1_000_000)
        .unwrap()
        .into_iter()
        .filter(|c| c.object_type == ObjectType::Email && c.kind == ChangeKind::Created)
        .map(|c| {
            assert_eq!(c.mailbox_id, Some(inbox.id.0));
            (c.uid.expect("an email creation names its UID"), c.modseq)
        })
        .collect();
    let listed: BTreeMap<u32, ModSeq> = messages.iter().map(|m| (m.uid, m.modseq)).collect();
    assert_eq!(
        created, listed,
        "run {run}: change log and mailbox disagree"
    );
    assert!(inbox.highest_modseq <= modseq && listed.values().all(|m| *m <= inbox.highest_modseq));

    // Every acknowledged write survived, as acknowledged.
    for (uid, ack) in acked {
        let (blob, marker) = by_uid.get(uid).unwrap_or_else(|| {
            panic!("run {run}: acknowledged UID {uid} ({}) is lost", ack.marker)
        });
        assert_eq!(
            *blob, ack.blob,
            "run {run}: UID {uid} holds another message"
        );
        assert_eq!(
            *marker, ack.marker,
            "run {run}: UID {uid} holds another message"
        );
    }

    let check = b.check_blobs().unwrap();
    assert!(
        check.missing.is_empty(),
        "run {run}: referenced blobs missing: {:?}",
        check.missing
    );
    assert!(
        check.corrupt.is_empty(),
        "run {run}: corrupt blobs: {:?}",
        check.corrupt
    );
    assert!(
        check.miscounted.is_empty(),
        "run {run}: miscounted blobs: {:?}",
        check.miscounted
    );
    assert_eq!(
        check.referenced,
        messages.len() as u64,
        "run {run}: one blob per message"
    );

    // Files of writes the kill cut short are orphans; collecting them must
    // leave every referenced blob alone.
    let removed = b.collect_orphan_blobs(Duration::ZERO).unwrap();
    println!(
        "run {run}: {} acknowledged, {} stored, {} orphan blob files collected",
        acked.len(),
        messages.len(),
        removed
    );
    assert_eq!(
        removed, check.orphans,
        "run {run}: orphan files counted and removed differ"
    );
    let after = b.check_blobs().unwrap();
    assert_eq!(after.orphans, 0, "run {run}: orphans left after collection");
    assert!(
        after.missing.is_empty() && after.corrupt.is_empty() && after.miscounted.is_empty(),
        "{after:?}"
    );
    assert_eq!(after.referenced, check.referenced);
    for m in &messages {
        let bytes = b
            .read_blob(&m.blob)
            .unwrap_or_else(|e| panic!("run {run}: UID {} after collection: {e}", m.uid));
        assert_eq!(blob_of(&bytes), m.blob);
    }
    messages.len()
}

#[test]
fn sigkill_during_concurrent_deliveries_loses_nothing_acknowledged() {
    if std::env::var_os(CHILD_DIR_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let deadline = Instant::now() + DEADLINE;
    let mut acked: BTreeMap<u32, Ack> = BTreeMap::new();
    for (run, kill_after) in [(1, 300), (2, 100), (3, 500)] {
        let acks = run_and_kill(dir.path(), run, kill_after, deadline);
        assert!(acks.len() >= kill_after);
        for (uid, ack) in acks {
            if let Some(earlier) = acked.insert(uid, ack.clone()) {
                panic!(
                    "run {run}: UID {uid} acknowledged twice: {} and {}",
                    earlier.marker, ack.marker
                );
            }
        }
        let stored = verify(dir.path(), &acked, run);
        assert!(stored >= acked.len());
    }
}
