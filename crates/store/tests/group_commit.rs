//! Concurrent writers share transactions (and so fsyncs) in the embedded
//! backend, and every write is still individually acknowledged.

#![allow(clippy::unwrap_used)]

use bulwark_audit::Actor;
use bulwark_core::{MailboxRole, PrincipalKind};
use bulwark_store::{Backend, Delivery, EmailMeta, NewPrincipal, SqliteBackend, SqliteOptions};

#[test]
fn concurrent_writers_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteBackend::open(dir.path(), SqliteOptions::default()).unwrap();
    let admin = Actor::local_admin("test");
    store
        .create_domain(&admin, &"example.com".parse().unwrap())
        .unwrap();
    let writers = 32;
    let each = 25;
    let places: Vec<_> = (0..writers)
        .map(|w| {
            let account = store
                .create_principal(
                    &admin,
                    &NewPrincipal {
                        kind: PrincipalKind::Individual,
                        address: format!("u{w}@example.com").parse().unwrap(),
                        display_name: String::new(),
                        password_hash: None,
                        quota_bytes: 0,
                    },
                )
                .unwrap();
            let inbox = store
                .create_mailbox(&admin, account, "INBOX", Some(MailboxRole::Inbox), None)
                .unwrap();
            (account, inbox.id)
        })
        .collect();
    let (batches_before, writes_before) = store.commit_stats();
    let barrier = std::sync::Barrier::new(writers);
    std::thread::scope(|s| {
        for (w, (account, mailbox)) in places.iter().enumerate() {
            let (store, barrier) = (&store, &barrier);
            s.spawn(move || {
                barrier.wait();
                for n in 0..each {
                    let raw = format!("Subject: {w}-{n}\r\n\r\nbody {w} {n}\r\n");
                    let target = [Delivery {
                        account: *account,
                        mailbox: *mailbox,
                        keywords: vec![],
                    }];
                    store
                        .deliver(
                            &Actor::system("test"),
                            raw.as_bytes(),
                            &EmailMeta::default(),
                            &target,
                        )
                        .unwrap();
                }
            });
        }
    });
    let (batches, writes) = store.commit_stats();
    let (batches, writes) = (batches - batches_before, writes - writes_before);
    assert_eq!(writes, (writers * each) as u64);
    assert!(
        batches < writes,
        "{writes} writes took {batches} commits: no batching happened"
    );
    for (account, mailbox) in &places {
        assert_eq!(store.messages(*account, *mailbox).unwrap().len(), each);
    }
}
