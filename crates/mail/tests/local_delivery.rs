#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use bulwark_audit::Actor;
use bulwark_core::{EmailAddress, PrincipalId, PrincipalKind};
use bulwark_directory::{Directory, LimitPolicy};
use bulwark_mail::{LocalDelivery, Resolution};
use bulwark_store::{NewPrincipal, SqliteBackend, SqliteOptions, Store};

fn setup() -> (tempfile::TempDir, LocalDelivery) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(Arc::new(
        SqliteBackend::open(dir.path(), SqliteOptions::default()).unwrap(),
    ));
    let directory = Directory::new(store, LimitPolicy::default());
    directory
        .store()
        .create_domain(&Actor::local_admin("t"), &"example.com".parse().unwrap())
        .unwrap();
    (dir, LocalDelivery::new(directory))
}

fn add(d: &LocalDelivery, address: &str, kind: PrincipalKind, quota: u64) -> PrincipalId {
    d.directory()
        .store()
        .create_principal(
            &Actor::local_admin("t"),
            &NewPrincipal {
                kind,
                address: address.parse().unwrap(),
                display_name: String::new(),
                password_hash: None,
                quota_bytes: quota,
            },
        )
        .unwrap()
}

fn addr(text: &str) -> EmailAddress {
    text.parse().unwrap()
}

#[test]
fn resolves_users_aliases_groups_and_subaddresses() {
    let (_dir, d) = setup();
    let alice = add(&d, "alice@example.com", PrincipalKind::Individual, 0);
    let bob = add(&d, "bob@example.com", PrincipalKind::Individual, 0);
    let room = add(&d, "room@example.com", PrincipalKind::Room, 0);
    let team = add(&d, "team@example.com", PrincipalKind::Group, 0);
    let empty = add(&d, "empty@example.com", PrincipalKind::Group, 0);
    let admin = Actor::local_admin("t");
    d.directory().add_member(&admin, team, alice).unwrap();
    d.directory().add_member(&admin, team, bob).unwrap();
    d.directory()
        .store()
        .add_alias(&admin, alice, &addr("a@example.com"))
        .unwrap();
    let _ = empty;

    assert_eq!(
        d.resolve(&addr("alice@example.com")).unwrap(),
        Resolution::Deliver(vec![alice])
    );
    assert_eq!(
        d.resolve(&addr("A@Example.com")).unwrap(),
        Resolution::Deliver(vec![alice])
    );
    assert_eq!(
        d.resolve(&addr("alice+news@example.com")).unwrap(),
        Resolution::Deliver(vec![alice])
    );
    assert_eq!(
        d.resolve(&addr("room@example.com")).unwrap(),
        Resolution::Deliver(vec![room])
    );
    let Resolution::Deliver(mut members) = d.resolve(&addr("team@example.com")).unwrap() else {
        panic!()
    };
    members.sort();
    assert_eq!(members, vec![alice, bob]);
    assert_eq!(
        d.resolve(&addr("nobody@example.com")).unwrap(),
        Resolution::UnknownLocal
    );
    assert_eq!(
        d.resolve(&addr("empty@example.com")).unwrap(),
        Resolution::UnknownLocal
    );
    assert_eq!(
        d.resolve(&addr("alice@elsewhere.test")).unwrap(),
        Resolution::NotLocal
    );
}

#[test]
fn cached_resolutions_follow_directory_changes() {
    let (_dir, d) = setup();
    let admin = Actor::local_admin("t");
    let store = d.directory().store().clone();
    let alice = add(&d, "alice@example.com", PrincipalKind::Individual, 0);
    let bob = add(&d, "bob@example.com", PrincipalKind::Individual, 0);
    let team = add(&d, "team@example.com", PrincipalKind::Group, 0);
    d.directory().add_member(&admin, team, alice).unwrap();
    store
        .add_alias(&admin, bob, &addr("b@example.com"))
        .unwrap();

    // Nothing is known before the first lookup; unknown addresses are
    // never kept, so one added later is found at once.
    assert_eq!(d.resolve_cached(&addr("alice@example.com")), None);
    assert_eq!(
        d.resolve(&addr("carol@example.com")).unwrap(),
        Resolution::UnknownLocal
    );
    assert_eq!(d.resolve_cached(&addr("carol@example.com")), None);
    let carol = add(&d, "carol@example.com", PrincipalKind::Individual, 0);
    assert_eq!(
        d.resolve(&addr("carol@example.com")).unwrap(),
        Resolution::Deliver(vec![carol])
    );

    for address in ["alice@example.com", "team@example.com", "b@example.com"] {
        d.resolve(&addr(address)).unwrap();
    }
    assert_eq!(
        d.resolve_cached(&addr("b@example.com")),
        Some(Resolution::Deliver(vec![bob]))
    );
    assert_eq!(
        d.resolve_cached(&addr("team@example.com")),
        Some(Resolution::Deliver(vec![alice]))
    );

    // Each kind of directory change drops what was kept.
    store.remove_alias(&admin, &addr("b@example.com")).unwrap();
    assert_eq!(d.resolve_cached(&addr("b@example.com")), None);
    assert_eq!(
        d.resolve(&addr("b@example.com")).unwrap(),
        Resolution::UnknownLocal
    );

    d.resolve(&addr("team@example.com")).unwrap();
    d.directory().add_member(&admin, team, bob).unwrap();
    assert_eq!(d.resolve_cached(&addr("team@example.com")), None);
    let Resolution::Deliver(mut members) = d.resolve(&addr("team@example.com")).unwrap() else {
        panic!("the group resolves")
    };
    members.sort();
    assert_eq!(members, vec![alice, bob]);

    d.resolve(&addr("alice@example.com")).unwrap();
    store.remove_principal(&admin, alice).unwrap();
    assert_eq!(d.resolve_cached(&addr("alice@example.com")), None);
    assert_eq!(
        d.resolve(&addr("alice@example.com")).unwrap(),
        Resolution::UnknownLocal
    );
}

#[test]
fn delivers_once_per_account_into_the_inbox() {
    let (_dir, d) = setup();
    let alice = add(&d, "alice@example.com", PrincipalKind::Individual, 0);
    let shared = add(&d, "support@example.com", PrincipalKind::Shared, 0);
    let raw = b"From: x@elsewhere.test\r\nSubject: hi\r\nMessage-ID: <1@x>\r\n\r\nhello\r\n";
    let mut rx = d.directory().store().subscribe(alice);
    let report = d
        .deliver(raw, &[alice, shared, alice], 1_700_000_000_000)
        .unwrap();
    assert_eq!(report.delivered.len(), 2, "alice listed twice gets it once");
    assert!(report.failed.is_empty());
    assert!(rx.try_recv().is_ok(), "push subscribers are woken");
    let store = d.directory().store();
    let inbox = d.inbox(alice).unwrap();
    let list = store.messages(alice, inbox).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(store.read_blob(&list[0].blob).unwrap(), raw);
    assert_eq!(
        store
            .email(alice, list[0].email)
            .unwrap()
            .unwrap()
            .meta
            .subject
            .as_deref(),
        Some("hi")
    );
    assert_eq!(
        store.check_blobs().unwrap().referenced,
        1,
        "one stored copy"
    );
    // The Inbox is created once and reused.
    assert_eq!(d.inbox(alice).unwrap(), inbox);
    assert_eq!(store.mailboxes(alice).unwrap().len(), 1);
}

#[test]
fn one_full_mailbox_does_not_block_the_others() {
    let (_dir, d) = setup();
    let alice = add(&d, "alice@example.com", PrincipalKind::Individual, 0);
    let full = add(&d, "full@example.com", PrincipalKind::Individual, 10);
    let raw = b"Subject: big enough\r\n\r\nmore than ten bytes\r\n";
    let report = d.deliver(raw, &[alice, full], 1).unwrap();
    assert_eq!(report.delivered.len(), 1);
    assert_eq!(report.delivered[0].account, alice);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].0, full);
    assert!(matches!(
        report.failed[0].1,
        bulwark_store::Error::QuotaExceeded { .. }
    ));
}

/// RFC 5321 section 4.5.1: every domain must take mail for `postmaster`.
#[test]
fn postmaster_of_every_domain_reaches_the_configured_mailbox() {
    let (_dir, d) = setup();
    let admin = Actor::local_admin("t");
    d.directory()
        .store()
        .create_domain(&admin, &"example.org".parse().unwrap())
        .unwrap();
    let alice = add(&d, "alice@example.com", PrincipalKind::Individual, 0);
    let bob = add(&d, "bob@example.com", PrincipalKind::Individual, 0);
    let carol = add(&d, "carol@example.org", PrincipalKind::Individual, 0);
    let ops = add(&d, "ops@example.com", PrincipalKind::Group, 0);
    d.directory().add_member(&admin, ops, alice).unwrap();
    d.directory().add_member(&admin, ops, bob).unwrap();

    // Without a postmaster set nothing changes: the address is unknown.
    assert_eq!(
        d.resolve(&addr("postmaster@example.com")).unwrap(),
        Resolution::UnknownLocal
    );
    assert_eq!(
        d.resolve(&addr("postmaster@mx.example.net")).unwrap(),
        Resolution::NotLocal
    );

    let d = d.with_postmaster(addr("ops@example.com"), "MX.example.net");
    for postmaster in [
        "postmaster@example.com",
        "PostMaster@example.org",
        "postmaster@mx.example.net",
    ] {
        let Resolution::Deliver(mut reached) = d.resolve(&addr(postmaster)).unwrap() else {
            panic!("{postmaster} reached nobody")
        };
        reached.sort();
        assert_eq!(reached, [alice, bob], "{postmaster}");
    }
    // Only the local part postmaster, and only at our domains or our name.
    assert_eq!(
        d.resolve(&addr("postmasters@example.com")).unwrap(),
        Resolution::UnknownLocal
    );
    assert_eq!(
        d.resolve(&addr("postmaster@elsewhere.example")).unwrap(),
        Resolution::NotLocal
    );
    // A domain's own postmaster address wins over the fallback.
    d.directory()
        .store()
        .add_alias(&admin, carol, &addr("postmaster@example.org"))
        .unwrap();
    assert_eq!(
        d.resolve(&addr("postmaster@example.org")).unwrap(),
        Resolution::Deliver(vec![carol])
    );

    // A postmaster address that reaches nobody leaves postmaster unknown
    // rather than looping or failing.
    let d = d.with_postmaster(addr("postmaster@example.com"), "mx.example.net");
    assert_eq!(
        d.resolve(&addr("postmaster@example.com")).unwrap(),
        Resolution::UnknownLocal
    );
}

#[test]
fn a_mailbox_at_its_quota_is_full_before_the_message_comes() {
    let (_dir, d) = setup();
    let admin = Actor::local_admin("t");
    let carol = add(&d, "carol@example.com", PrincipalKind::Individual, 0);
    let team = add(&d, "team@example.com", PrincipalKind::Group, 0);
    d.directory().add_member(&admin, team, carol).unwrap();
    let raw = b"Subject: fills it\r\n\r\nforty bytes or so of a message body\r\n";
    assert_eq!(d.deliver(raw, &[carol], 1).unwrap().delivered.len(), 1);
    // Below the quota: still taken at RCPT (the size is known only later).
    d.directory()
        .store()
        .set_quota(&admin, carol, raw.len() as u64 + 1)
        .unwrap();
    assert_eq!(
        d.resolve(&addr("carol@example.com")).unwrap(),
        Resolution::Deliver(vec![carol])
    );
    // At it: full.
    d.directory()
        .store()
        .set_quota(&admin, carol, raw.len() as u64)
        .unwrap();
    assert_eq!(
        d.resolve(&addr("carol@example.com")).unwrap(),
        Resolution::MailboxFull
    );
    // A group still takes it; its full member is reported after delivery.
    assert_eq!(
        d.resolve(&addr("team@example.com")).unwrap(),
        Resolution::Deliver(vec![carol])
    );
}
