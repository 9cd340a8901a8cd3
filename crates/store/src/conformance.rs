//! The storage conformance suite: one set of checks every backend must
//! pass. Each check takes a fresh, empty backend and panics on the first
//! deviation. `tests/conformance.rs` runs them against the backend chosen
//! by `BULWARK_TEST_BACKEND`; a new backend adds itself there.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;

use bulwark_audit::{Actor, LogonType, Outcome, verify};
use bulwark_core::{
    ChangeKind, DomainName, EmailAddress, MailboxRole, ModSeq, ObjectType, PrincipalId,
    PrincipalKind, Right,
};

use crate::{
    Backend, DavCollectionProps, DavKind, DavPrecondition, Delivery, DkimKey, EmailMeta, Error,
    Grant, KeywordUpdate, NewDavObject, NewPrincipal, NewQueueRecipient, NewQueuedMessage,
    QueueSize, RecipientStatus, RecipientUpdate, TimeSpans,
};

/// A named check.
pub type Check = (&'static str, fn(&dyn Backend));

/// Every check, by name.
pub const CHECKS: &[Check] = &[
    ("domains", domains),
    ("principals_and_aliases", principals_and_aliases),
    (
        "directory_version_moves_with_the_directory",
        directory_version,
    ),
    ("groups_grants_app_passwords", groups_grants_app_passwords),
    ("mailboxes", mailboxes),
    ("delivery_and_dedup", delivery_and_dedup),
    ("large_blobs_live_outside_the_database", large_blobs),
    ("inbox_delivery_per_account", inbox_delivery),
    ("keywords_and_modseq", keywords_and_modseq),
    ("change_log_order", change_log_order),
    ("notifications_follow_commits", notifications),
    ("quota", quota),
    ("threads", threads),
    ("accounts_are_isolated", accounts_are_isolated),
    ("audit_policy_and_chain", audit_policy_and_chain),
    ("remove_principal_releases_everything", remove_principal),
    ("concurrent_writers", concurrent_writers),
    ("copy_and_move_keep_one_email", copy_and_move),
    ("rename_moves_the_subtree", rename),
    ("queue_tracks_each_recipient", queue),
    ("queue_shares_blobs_with_mail", queue_blobs),
    ("dkim_keys_per_domain", dkim_keys),
    ("mailbox_rights", mailbox_rights),
    ("batch_delivery_is_all_or_nothing", batch_delivery),
    ("changed_entries_since_a_modseq", changed_since),
    ("dav_collections_and_objects", dav_objects),
    ("dav_sync_reports_changes_and_tombstones", dav_sync),
    ("dav_time_ranges", dav_time_ranges),
    ("dav_rights_per_collection", dav_rights),
];

fn admin() -> Actor {
    Actor::local_admin("tester")
}

fn domain(b: &dyn Backend, name: &str) -> DomainName {
    let d: DomainName = name.parse().unwrap();
    b.create_domain(&admin(), &d).unwrap();
    d
}

fn user(b: &dyn Backend, address: &str) -> PrincipalId {
    principal(b, address, PrincipalKind::Individual)
}

fn principal(b: &dyn Backend, address: &str, kind: PrincipalKind) -> PrincipalId {
    b.create_principal(
        &admin(),
        &NewPrincipal {
            kind,
            address: address.parse().unwrap(),
            display_name: address.into(),
            password_hash: kind
                .can_log_in()
                .then(|| "$argon2id$placeholder".to_string()),
            quota_bytes: 0,
        },
    )
    .unwrap()
}

fn inbox(b: &dyn Backend, account: PrincipalId) -> bulwark_core::MailboxId {
    b.create_mailbox(&admin(), account, "INBOX", Some(MailboxRole::Inbox), None)
        .unwrap()
        .id
}

fn message(n: usize, size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: a@example.com\r\nSubject: test {n}\r\nMessage-ID: <{n}@example.com>\r\n\r\n"
    )
    .into_bytes();
    while m.len() < size {
        m.extend_from_slice(format!("line {n} of filler text for the body\r\n").as_bytes());
    }
    m
}

fn meta(n: usize) -> EmailMeta {
    EmailMeta {
        received_at: 1_700_000_000_000,
        message_id: Some(format!("{n}@example.com")),
        subject: Some(format!("test {n}")),
        ..EmailMeta::default()
    }
}

fn deliver_to(
    b: &dyn Backend,
    raw: &[u8],
    meta: &EmailMeta,
    places: &[(PrincipalId, bulwark_core::MailboxId)],
) -> Vec<crate::Delivered> {
    let targets: Vec<Delivery> = places
        .iter()
        .map(|(account, mailbox)| Delivery {
            account: *account,
            mailbox: *mailbox,
            keywords: vec![],
        })
        .collect();
    b.deliver(&Actor::system("test"), raw, meta, &targets)
        .unwrap()
}

fn domains(b: &dyn Backend) {
    let d = domain(b, "example.com");
    assert!(matches!(
        b.create_domain(&admin(), &d),
        Err(Error::AlreadyExists { .. })
    ));
    domain(b, "example.org");
    let names: Vec<String> = b
        .domains()
        .unwrap()
        .into_iter()
        .map(|d| d.name.to_string())
        .collect();
    assert_eq!(names, ["example.com", "example.org"]);
    let u = user(b, "alice@example.com");
    assert!(matches!(
        b.remove_domain(&admin(), &d),
        Err(Error::Conflict(_))
    ));
    b.remove_principal(&admin(), u).unwrap();
    b.remove_domain(&admin(), &d).unwrap();
    assert!(b.domain(&d).unwrap().is_none());
    assert!(matches!(
        b.remove_domain(&admin(), &d),
        Err(Error::NotFound { .. })
    ));
}

fn directory_version(b: &dyn Backend) {
    let mut seen = b.directory_version();
    let mut moved = |what: &str| {
        let now = b.directory_version();
        assert_ne!(now, seen, "{what} left the directory version alone");
        seen = now;
    };
    let d = domain(b, "example.com");
    moved("adding a domain");
    let alice = user(b, "alice@example.com");
    moved("adding a principal");
    let team = principal(b, "team@example.com", PrincipalKind::Group);
    moved("adding a group");
    let alias: EmailAddress = "a@example.com".parse().unwrap();
    b.add_alias(&admin(), alice, &alias).unwrap();
    moved("adding an alias");
    b.add_member(&admin(), team, alice).unwrap();
    moved("adding a member");
    b.remove_member(&admin(), team, alice).unwrap();
    moved("removing a member");
    b.remove_alias(&admin(), &alias).unwrap();
    moved("removing an alias");
    b.remove_principal(&admin(), team).unwrap();
    moved("removing a principal");
    // Mail does not change what an address reaches.
    let before = b.directory_version();
    let mailbox = inbox(b, alice);
    deliver_to(b, &message(1, 200), &meta(1), &[(alice, mailbox)]);
    assert_eq!(b.directory_version(), before, "a delivery moved it");
    b.remove_principal(&admin(), alice).unwrap();
    b.remove_domain(&admin(), &d).unwrap();
    assert_ne!(
        b.directory_version(),
        before,
        "removing a domain left it alone"
    );
}

fn principals_and_aliases(b: &dyn Backend) {
    domain(b, "example.com");
    let alice = user(b, "Alice@Example.com");
    let p = b.principal(alice).unwrap().unwrap();
    assert_eq!(p.address.as_str(), "alice@example.com");
    assert_eq!(p.kind, PrincipalKind::Individual);
    let unknown_domain = NewPrincipal {
        kind: PrincipalKind::Individual,
        address: "bob@nowhere.test".parse().unwrap(),
        display_name: String::new(),
        password_hash: None,
        quota_bytes: 0,
    };
    assert!(matches!(
        b.create_principal(&admin(), &unknown_domain),
        Err(Error::NotFound { .. })
    ));
    let dup = NewPrincipal {
        address: "alice@example.com".parse().unwrap(),
        ..unknown_domain.clone()
    };
    assert!(matches!(
        b.create_principal(&admin(), &dup),
        Err(Error::AlreadyExists { .. })
    ));

    let alias: EmailAddress = "a.smith@example.com".parse().unwrap();
    b.add_alias(&admin(), alice, &alias).unwrap();
    assert_eq!(b.principal_by_address(&alias).unwrap().unwrap().id, alice);
    assert_eq!(b.addresses(alice).unwrap()[0].as_str(), "alice@example.com");
    assert!(matches!(
        b.add_alias(&admin(), alice, &alias),
        Err(Error::AlreadyExists { .. })
    ));
    assert!(matches!(
        b.remove_alias(&admin(), &p.address),
        Err(Error::Conflict(_))
    ));
    b.remove_alias(&admin(), &alias).unwrap();
    assert!(b.principal_by_address(&alias).unwrap().is_none());

    b.set_password_hash(&admin(), alice, "$argon2id$new")
        .unwrap();
    assert_eq!(
        b.password_hash(alice).unwrap().as_deref(),
        Some("$argon2id$new")
    );

    let room = principal(b, "room1@example.com", PrincipalKind::Room);
    principal(b, "sales@example.com", PrincipalKind::Group);
    let rooms = b.principals(None, Some(PrincipalKind::Room)).unwrap();
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0].id, room);
    assert_eq!(b.principals(Some(p.domain), None).unwrap().len(), 3);
}

fn groups_grants_app_passwords(b: &dyn Backend) {
    domain(b, "example.com");
    let alice = user(b, "alice@example.com");
    let bob = user(b, "bob@example.com");
    let group = principal(b, "team@example.com", PrincipalKind::Group);
    b.add_member(&admin(), group, alice).unwrap();
    b.add_member(&admin(), group, bob).unwrap();
    assert!(b.add_member(&admin(), group, bob).is_err());
    assert!(
        b.add_member(&admin(), alice, bob).is_err(),
        "only groups have members"
    );
    assert_eq!(b.members(group).unwrap(), vec![alice, bob]);
    b.remove_member(&admin(), group, alice).unwrap();
    assert_eq!(b.members(group).unwrap(), vec![bob]);

    let shared = principal(b, "support@example.com", PrincipalKind::Shared);
    let grant = Grant {
        grantor: shared,
        grantee: alice,
        right: Right::FullAccess,
    };
    b.add_grant(&admin(), &grant).unwrap();
    b.add_grant(
        &admin(),
        &Grant {
            right: Right::SendAs,
            ..grant
        },
    )
    .unwrap();
    assert!(matches!(
        b.add_grant(&admin(), &grant),
        Err(Error::AlreadyExists { .. })
    ));
    assert_eq!(b.grants(None, Some(alice)).unwrap().len(), 2);
    assert_eq!(b.grants(Some(shared), None).unwrap().len(), 2);
    b.remove_grant(&admin(), &grant).unwrap();
    assert_eq!(
        b.grants(Some(shared), Some(alice)).unwrap(),
        vec![Grant {
            right: Right::SendAs,
            ..grant
        }]
    );
    assert!(
        b.add_grant(
            &admin(),
            &Grant {
                grantor: alice,
                grantee: alice,
                right: Right::SendAs
            }
        )
        .is_err()
    );

    let app = b
        .add_app_password(&admin(), alice, "phone", "digest")
        .unwrap();
    assert_eq!(b.app_passwords(alice).unwrap()[0].label, "phone");
    assert_eq!(
        b.app_password_hashes(alice).unwrap(),
        vec![(app, "digest".to_string())]
    );
    assert!(
        b.revoke_app_password(&admin(), bob, app).is_err(),
        "bob cannot revoke alice's password"
    );
    b.revoke_app_password(&admin(), alice, app).unwrap();
    assert!(b.app_passwords(alice).unwrap().is_empty());
    assert!(
        b.add_app_password(&admin(), shared, "x", "y").is_err(),
        "shared mailboxes do not log in"
    );
}

fn mailboxes(b: &dyn Backend) {
    domain(b, "example.com");
    let alice = user(b, "alice@example.com");
    let inbox = b
        .create_mailbox(&admin(), alice, "INBOX", Some(MailboxRole::Inbox), None)
        .unwrap();
    assert_eq!(inbox.uid_next, 1);
    assert_ne!(inbox.uid_validity, 0);
    assert!(matches!(
        b.create_mailbox(&admin(), alice, "Other", Some(MailboxRole::Inbox), None),
        Err(Error::AlreadyExists { .. })
    ));
    assert!(matches!(
        b.create_mailbox(&admin(), alice, "INBOX", None, None),
        Err(Error::AlreadyExists { .. })
    ));
    let parent = b
        .create_mailbox(&admin(), alice, "Projects", None, None)
        .unwrap();
    let child = b
        .create_mailbox(&admin(), alice, "Projects/X", None, Some(parent.id))
        .unwrap();
    assert!(
        b.create_mailbox(&admin(), alice, "bad\nname", None, None)
            .is_err()
    );
    let names: Vec<String> = b
        .mailboxes(alice)
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["INBOX", "Projects", "Projects/X"]);
    assert!(matches!(
        b.delete_mailbox(&admin(), alice, parent.id),
        Err(Error::Conflict(_))
    ));
    b.delete_mailbox(&admin(), alice, child.id).unwrap();
    b.delete_mailbox(&admin(), alice, parent.id).unwrap();
    assert_eq!(b.mailboxes(alice).unwrap().len(), 1);
}

fn delivery_and_dedup(b: &dyn Backend) {
    domain(b, "example.com");
    let users: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|u| user(b, &format!("{u}@example.com")))
        .collect();
    let places: Vec<_> = users.iter().map(|u| (*u, inbox(b, *u))).collect();
    let raw = message(1, 2000);
    let delivered = deliver_to(b, &raw, &meta(1), &places);
    assert_eq!(delivered.len(), 3);
    assert!(delivered.iter().all(|d| d.uid == 1));
    let check = b.check_blobs().unwrap();
    assert_eq!(check.referenced, 1, "one stored copy for three recipients");
    assert!(check.miscounted.is_empty() && check.missing.is_empty() && check.corrupt.is_empty());

    let second = deliver_to(b, &message(2, 100), &meta(2), &places[..1]);
    assert_eq!(second[0].uid, 2);
    let list = b.messages(places[0].0, places[0].1).unwrap();
    assert_eq!(list.iter().map(|m| m.uid).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(b.read_blob(&list[0].blob).unwrap(), raw);
    assert_eq!(list[0].size, raw.len() as u64);
    let mailbox = &b.mailboxes(places[0].0).unwrap()[0];
    assert_eq!(mailbox.uid_next, 3);
    assert_eq!(mailbox.highest_modseq, second[0].modseq);

    // References drop one by one; the last one deletes the blob.
    for (account, mailbox) in &places[..2] {
        assert_eq!(
            b.expunge(&admin(), *account, *mailbox, &[1]).unwrap(),
            vec![1]
        );
        assert_eq!(b.read_blob(&list[0].blob).unwrap(), raw);
    }
    b.expunge(&admin(), places[2].0, places[2].1, &[1]).unwrap();
    assert!(matches!(
        b.read_blob(&list[0].blob),
        Err(Error::NotFound { .. })
    ));
    assert_eq!(
        b.expunge(&admin(), places[2].0, places[2].1, &[1]).unwrap(),
        Vec::<u32>::new()
    );
    // UIDs are never reused.
    let again = deliver_to(b, &raw, &meta(1), &places[2..]);
    assert_eq!(again[0].uid, 2);
}

/// `deliver_to_inboxes`, waited for.
fn deliver_to_inboxes(
    b: &dyn Backend,
    raw: &[u8],
    n: usize,
    accounts: &[PrincipalId],
) -> crate::Result<crate::InboxReport> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    b.deliver_to_inboxes(
        &Actor::system("test"),
        std::sync::Arc::from(raw),
        meta(n),
        accounts.to_vec(),
        Box::new(move |outcome| tx.send(outcome).unwrap()),
    );
    rx.recv().unwrap()
}

fn inbox_delivery(b: &dyn Backend) {
    domain(b, "example.com");
    let with_inbox = user(b, "a@example.com");
    let ia = inbox(b, with_inbox);
    let without_inbox = user(b, "b@example.com");
    let full = b
        .create_principal(
            &admin(),
            &NewPrincipal {
                kind: PrincipalKind::Individual,
                address: "full@example.com".parse().unwrap(),
                display_name: "full".into(),
                password_hash: None,
                quota_bytes: 1000,
            },
        )
        .unwrap();
    let group = principal(b, "team@example.com", PrincipalKind::Group);
    for (n, size) in [(1, 2000), (2, 300_000)] {
        let raw = message(n, size);
        let accounts = [with_inbox, full, without_inbox, with_inbox, group];
        let report = deliver_to_inboxes(b, &raw, n, &accounts).unwrap();
        let mut landed: Vec<_> = report.delivered.iter().map(|d| d.account).collect();
        landed.sort();
        assert_eq!(landed, [with_inbox, without_inbox], "each account once");
        let mut refused: Vec<_> = report.refused.iter().map(|(a, _)| *a).collect();
        refused.sort();
        assert_eq!(refused, [full, group]);
        assert!(
            report
                .refused
                .iter()
                .any(|(a, e)| *a == full && matches!(e, Error::QuotaExceeded { .. }))
        );
        // The Inbox was created on the first delivery, and only then.
        let boxes = b.mailboxes(without_inbox).unwrap();
        assert_eq!(boxes.len(), 1);
        assert_eq!(boxes[0].role, Some(MailboxRole::Inbox));
        let entries = b.messages(without_inbox, boxes[0].id).unwrap();
        assert_eq!(entries.len(), n);
        assert_eq!(b.read_blob(&entries[n - 1].blob).unwrap(), raw);
        assert_eq!(b.messages(with_inbox, ia).unwrap().len(), n);
        assert!(b.mailboxes(full).unwrap().is_empty(), "nothing left behind");
    }
    let check = b.check_blobs().unwrap();
    assert_eq!(check.referenced, 2);
    assert!(check.miscounted.is_empty() && check.missing.is_empty());
    assert_eq!(b.principal(full).unwrap().unwrap().used_bytes, 0);
    // No account at all: nothing to do, and said so.
    let empty = deliver_to_inboxes(b, &message(3, 100), 3, &[]).unwrap();
    assert!(empty.delivered.is_empty() && empty.refused.is_empty());
}

fn large_blobs(b: &dyn Backend) {
    domain(b, "example.com");
    let a = user(b, "a@example.com");
    let c = user(b, "c@example.com");
    let (ia, ic) = (inbox(b, a), inbox(b, c));
    let raw = message(7, 300_000);
    deliver_to(b, &raw, &meta(7), &[(a, ia)]);
    deliver_to(b, &raw, &meta(7), &[(c, ic)]);
    let entry = b.messages(a, ia).unwrap().remove(0);
    assert_eq!(b.read_blob(&entry.blob).unwrap(), raw);
    let check = b.check_blobs().unwrap();
    assert_eq!((check.referenced, check.orphans), (1, 0));
    assert!(check.miscounted.is_empty());
    b.expunge(&admin(), a, ia, &[1]).unwrap();
    assert_eq!(b.read_blob(&entry.blob).unwrap(), raw);
    b.expunge(&admin(), c, ic, &[1]).unwrap();
    assert!(b.read_blob(&entry.blob).is_err());
    let check = b.check_blobs().unwrap();
    assert_eq!(
        (check.referenced, check.orphans),
        (0, 0),
        "the file went with the last reference"
    );
}

fn keywords_and_modseq(b: &dyn Backend) {
    domain(b, "example.com");
    let a = user(b, "a@example.com");
    let ia = inbox(b, a);
    for n in 0..3 {
        deliver_to(b, &message(n, 100), &meta(n), &[(a, ia)]);
    }
    let me = Actor::user("a@example.com", a.0, "password", None, "test");
    let changed = b
        .update_keywords(
            &me,
            a,
            ia,
            &[1, 2],
            &KeywordUpdate::Add(vec!["$Seen".into()]),
        )
        .unwrap();
    assert_eq!(changed.len(), 2);
    assert_eq!(changed[0].1, changed[1].1, "one write, one modseq");
    let again = b
        .update_keywords(
            &me,
            a,
            ia,
            &[1, 2],
            &KeywordUpdate::Add(vec!["$seen".into()]),
        )
        .unwrap();
    assert!(again.is_empty(), "no change, no new modseq");
    let flagged = b
        .update_keywords(
            &me,
            a,
            ia,
            &[2, 3, 99],
            &KeywordUpdate::Set(vec!["$flagged".into()]),
        )
        .unwrap();
    assert_eq!(flagged.iter().map(|c| c.0).collect::<Vec<_>>(), [2, 3]);
    assert!(flagged[0].1 > changed[0].1);
    let list = b.messages(a, ia).unwrap();
    assert_eq!(list[0].keywords, ["$seen"]);
    assert_eq!(list[1].keywords, ["$flagged"]);
    assert_eq!(list[1].modseq, flagged[0].1);
    b.update_keywords(
        &me,
        a,
        ia,
        &[1],
        &KeywordUpdate::Remove(vec!["$SEEN".into()]),
    )
    .unwrap();
    assert!(b.messages(a, ia).unwrap()[0].keywords.is_empty());
    assert!(
        b.update_keywords(
            &me,
            a,
            ia,
            &[1],
            &KeywordUpdate::Add(vec!["bad word".into()])
        )
        .is_err()
    );
    assert!(
        b.update_keywords(&me, a, ia, &[1], &KeywordUpdate::Add(vec![String::new()]))
            .is_err()
    );
    // A conditional change skips entries changed after the given point:
    // UID 1 changed last (its $seen went), UID 3 before that.
    let list = b.messages(a, ia).unwrap();
    let since = list[2].modseq;
    assert!(list[0].modseq > since);
    let outcome = b
        .update_keywords_if_unchanged(
            &me,
            a,
            ia,
            &[1, 3],
            &KeywordUpdate::Add(vec!["$junk".into()]),
            since,
        )
        .unwrap();
    assert_eq!(outcome.modified, vec![1], "UID 1 changed after {since}");
    assert_eq!(outcome.changed.iter().map(|c| c.0).collect::<Vec<_>>(), [3]);
    let list = b.messages(a, ia).unwrap();
    assert!(!list[0].keywords.contains(&"$junk".to_string()));
    assert!(list[2].keywords.contains(&"$junk".to_string()));
    // IMAP system flags are mapped to JMAP keywords by the front end.
    assert!(
        b.update_keywords(&me, a, ia, &[1], &KeywordUpdate::Add(vec!["\\Seen".into()]))
            .is_err()
    );
}

fn change_log_order(b: &dyn Backend) {
    domain(b, "example.com");
    let a = user(b, "a@example.com");
    let start = b.current_modseq(a).unwrap();
    let ia = inbox(b, a);
    let d1 = deliver_to(b, &message(1, 100), &meta(1), &[(a, ia)]);
    let d2 = deliver_to(b, &message(2, 100), &meta(2), &[(a, ia)]);
    b.expunge(&admin(), a, ia, &[1]).unwrap();
    let all = b.changes_since(a, start, 1000).unwrap();
    assert!(
        all.windows(2).all(|w| w[0].modseq <= w[1].modseq),
        "ordered by modseq"
    );
    assert_eq!(all.last().unwrap().modseq, b.current_modseq(a).unwrap());
    let kinds: Vec<(ObjectType, ChangeKind)> =
        all.iter().map(|c| (c.object_type, c.kind)).collect();
    assert_eq!(kinds[0], (ObjectType::Mailbox, ChangeKind::Created));
    let email_changes: Vec<_> = all
        .iter()
        .filter(|c| c.object_type == ObjectType::Email)
        .collect();
    assert_eq!(email_changes.len(), 3);
    assert_eq!(
        (email_changes[2].kind, email_changes[2].uid),
        (ChangeKind::Destroyed, Some(1))
    );
    assert_eq!(email_changes[2].mailbox_id, Some(ia.0));
    let after = b.changes_since(a, d1[0].modseq, 1000).unwrap();
    assert!(after.iter().all(|c| c.modseq > d1[0].modseq));
    assert!(after.iter().any(|c| c.modseq == d2[0].modseq));
    // A page never splits one write's changes.
    let first_page = b.changes_since(a, d1[0].modseq, 1).unwrap();
    let same_write = after
        .iter()
        .filter(|c| c.modseq == first_page[0].modseq)
        .count();
    assert_eq!(first_page.len(), same_write);
    assert!(
        b.changes_since(a, b.current_modseq(a).unwrap(), 10)
            .unwrap()
            .is_empty()
    );
}

fn notifications(b: &dyn Backend) {
    domain(b, "example.com");
    let a = user(b, "a@example.com");
    let other = user(b, "o@example.com");
    let ia = inbox(b, a);
    let io = inbox(b, other);
    let mut rx = b.subscribe(a);
    assert!(rx.try_recv().is_err());
    deliver_to(b, &message(1, 100), &meta(1), &[(other, io)]);
    assert!(rx.try_recv().is_err(), "other accounts do not wake us");
    let d = deliver_to(b, &message(2, 100), &meta(2), &[(a, ia)]);
    // The notice is published before the writer answers, so it is here now.
    let notice = rx.try_recv().expect("a notice after the write returned");
    assert_eq!(notice.account, a);
    assert_eq!(notice.modseq, d[0].modseq);
    assert!(notice.types.contains(&ObjectType::Email));
    // A failed write publishes nothing.
    assert!(b.expunge(&admin(), a, io, &[1]).is_err());
    assert!(rx.try_recv().is_err());
}

fn quota(b: &dyn Backend) {
    domain(b, "example.com");
    let a = b
        .create_principal(
            &admin(),
            &NewPrincipal {
                kind: PrincipalKind::Individual,
                address: "q@example.com".parse().unwrap(),
                display_name: String::new(),
                password_hash: None,
                quota_bytes: 1000,
            },
        )
        .unwrap();
    let ia = inbox(b, a);
    deliver_to(b, &message(1, 600), &meta(1), &[(a, ia)]);
    let big = message(2, 600);
    let target = [Delivery {
        account: a,
        mailbox: ia,
        keywords: vec![],
    }];
    assert!(matches!(
        b.deliver(&Actor::system("test"), &big, &meta(2), &target),
        Err(Error::QuotaExceeded { limit: 1000, .. })
    ));
    assert_eq!(
        b.messages(a, ia).unwrap().len(),
        1,
        "nothing stored on refusal"
    );
    let used = b.principal(a).unwrap().unwrap().used_bytes;
    b.expunge(&admin(), a, ia, &[1]).unwrap();
    assert!(used >= 600);
    assert_eq!(b.principal(a).unwrap().unwrap().used_bytes, 0);
    b.deliver(&Actor::system("test"), &big, &meta(2), &target)
        .unwrap();
}

fn threads(b: &dyn Backend) {
    domain(b, "example.com");
    let a = user(b, "a@example.com");
    let ia = inbox(b, a);
    let first = deliver_to(b, &message(1, 100), &meta(1), &[(a, ia)]);
    let reply_meta = EmailMeta {
        references: vec!["1@example.com".into()],
        ..meta(2)
    };
    let reply = deliver_to(b, &message(2, 100), &reply_meta, &[(a, ia)]);
    let other = deliver_to(b, &message(3, 100), &meta(3), &[(a, ia)]);
    let thread = |d: &crate::Delivered| b.email(a, d.email).unwrap().unwrap().thread;
    assert_eq!(thread(&first[0]), thread(&reply[0]));
    assert_ne!(thread(&first[0]), thread(&other[0]));
}

fn accounts_are_isolated(b: &dyn Backend) {
    domain(b, "example.com");
    let a = user(b, "a@example.com");
    let m = user(b, "mallory@example.com");
    let ia = inbox(b, a);
    inbox(b, m);
    let d = deliver_to(b, &message(1, 100), &meta(1), &[(a, ia)]);
    let mallory = Actor::user("mallory@example.com", m.0, "password", None, "test");
    // Naming another account's mailbox under one's own account finds nothing.
    assert!(matches!(b.messages(m, ia), Err(Error::NotFound { .. })));
    assert!(
        b.update_keywords(&mallory, m, ia, &[1], &KeywordUpdate::Add(vec!["x".into()]))
            .is_err()
    );
    assert!(b.expunge(&mallory, m, ia, &[1]).is_err());
    assert!(b.email(m, d[0].email).unwrap().is_none());
    let target = [Delivery {
        account: m,
        mailbox: ia,
        keywords: vec![],
    }];
    assert!(b.deliver(&mallory, b"x", &meta(9), &target).is_err());
    assert!(b.delete_mailbox(&mallory, m, ia).is_err());
    assert_eq!(b.messages(a, ia).unwrap().len(), 1);
    assert!(b.mailboxes(m).unwrap().iter().all(|mb| mb.id != ia));
}

fn audit_policy_and_chain(b: &dyn Backend) {
    let before = b.audit_tail(1000).unwrap().len();
    domain(b, "example.com");
    let a = user(b, "a@example.com");
    let d = user(b, "delegate@example.com");
    let ia = inbox(b, a);
    let after_admin = b.audit_tail(1000).unwrap();
    assert_eq!(
        after_admin.len(),
        before + 4,
        "domain, two users and a mailbox by an admin"
    );
    assert!(
        after_admin
            .iter()
            .skip(before)
            .all(|r| r.event.logon_type == LogonType::Admin)
    );

    deliver_to(b, &message(1, 100), &meta(1), &[(a, ia)]);
    let owner = Actor::user(
        "a@example.com",
        a.0,
        "password",
        Some("192.0.2.1".into()),
        "imap",
    );
    b.update_keywords(
        &owner,
        a,
        ia,
        &[1],
        &KeywordUpdate::Add(vec!["$seen".into()]),
    )
    .unwrap();
    assert_eq!(
        b.audit_tail(1000).unwrap().len(),
        before + 4,
        "delivery and owner access are not audited"
    );

    let delegate = Actor::user(
        "delegate@example.com",
        d.0,
        "app-password",
        Some("192.0.2.7".into()),
        "imap",
    );
    b.update_keywords(
        &delegate,
        a,
        ia,
        &[1],
        &KeywordUpdate::Add(vec!["$flagged".into()]),
    )
    .unwrap();
    let last = b.audit_tail(1).unwrap().remove(0);
    assert_eq!(last.event.logon_type, LogonType::Delegate);
    assert_eq!(last.event.operation, "email.store");
    assert_eq!(last.event.target.as_deref(), Some("a@example.com"));
    assert_eq!(last.event.client_ip.as_deref(), Some("192.0.2.7"));
    assert_eq!(last.event.item_count, 1);

    // A refused admin action is recorded as such.
    assert!(
        b.create_domain(&admin(), &"example.com".parse().unwrap())
            .is_err()
    );
    let refused = b.audit_tail(1).unwrap().remove(0);
    assert_eq!(
        (refused.event.operation.as_str(), refused.event.outcome),
        ("domain.add", Outcome::Denied)
    );

    let mut event = delegate.event("mailbox.fetch", Some(("a@example.com", Some(a.0))));
    event.item_count = 5;
    let seq = b.append_audit(event).unwrap();
    let records = b.audit_records(0, 10_000).unwrap();
    assert_eq!(records.last().unwrap().seq, seq);
    assert_eq!(verify(&records, b.audit_head().unwrap()), Ok(seq));
    let page = b.audit_records(seq - 2, 1).unwrap();
    assert_eq!(page[0].seq, seq - 1);
}

fn remove_principal(b: &dyn Backend) {
    domain(b, "example.com");
    let a = user(b, "a@example.com");
    let keep = user(b, "keep@example.com");
    let group = principal(b, "g@example.com", PrincipalKind::Group);
    b.add_member(&admin(), group, a).unwrap();
    b.add_grant(
        &admin(),
        &Grant {
            grantor: keep,
            grantee: a,
            right: Right::CalendarRead,
        },
    )
    .unwrap();
    b.add_alias(&admin(), a, &"alias@example.com".parse().unwrap())
        .unwrap();
    b.add_app_password(&admin(), a, "phone", "h").unwrap();
    let (ia, ik) = (inbox(b, a), inbox(b, keep));
    let shared = message(1, 100);
    deliver_to(b, &shared, &meta(1), &[(a, ia), (keep, ik)]);
    deliver_to(b, &message(2, 200_000), &meta(2), &[(a, ia)]);
    b.remove_principal(&admin(), a).unwrap();
    assert!(b.principal(a).unwrap().is_none());
    assert!(
        b.principal_by_address(&"alias@example.com".parse().unwrap())
            .unwrap()
            .is_none()
    );
    assert!(b.members(group).unwrap().is_empty());
    assert!(b.grants(None, Some(a)).unwrap().is_empty());
    let check = b.check_blobs().unwrap();
    assert_eq!(
        check.referenced, 1,
        "only the blob still used by keep remains"
    );
    assert_eq!(check.orphans, 0);
    assert!(check.miscounted.is_empty());
    let kept = b.messages(keep, ik).unwrap();
    assert_eq!(b.read_blob(&kept[0].blob).unwrap(), shared);
    // The address is free again.
    user(b, "a@example.com");
}

fn concurrent_writers(b: &dyn Backend) {
    domain(b, "example.com");
    let a = user(b, "a@example.com");
    let ia = inbox(b, a);
    let start = b.current_modseq(a).unwrap();
    let (threads, each) = (16, 20);
    let uids: Vec<u32> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (0..each)
                        .map(|i| {
                            let n = t * 1000 + i;
                            // Every third message is large enough to be a file.
                            let size = if n % 3 == 0 { 40_000 } else { 500 };
                            deliver_to(b, &message(n, size), &meta(n), &[(a, ia)])[0].uid
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let unique: HashSet<u32> = uids.iter().copied().collect();
    assert_eq!(unique.len(), threads * each, "every writer got its own UID");
    assert_eq!(
        *unique.iter().max().unwrap() as usize,
        threads * each,
        "UIDs are dense"
    );
    assert_eq!(b.messages(a, ia).unwrap().len(), threads * each);
    let end = b.current_modseq(a).unwrap();
    assert_eq!(
        end,
        ModSeq(start.0 + (threads * each) as u64),
        "one modseq per write"
    );
    let check = b.check_blobs().unwrap();
    assert!(check.missing.is_empty() && check.corrupt.is_empty() && check.miscounted.is_empty());
}

fn copy_and_move(b: &dyn Backend) {
    domain(b, "example.com");
    let a = user(b, "a@example.com");
    let other = user(b, "o@example.com");
    let ia = inbox(b, a);
    let archive = b
        .create_mailbox(&admin(), a, "Archive", Some(MailboxRole::Archive), None)
        .unwrap()
        .id;
    let trash = b
        .create_mailbox(&admin(), a, "Trash", Some(MailboxRole::Trash), None)
        .unwrap()
        .id;
    deliver_to(b, &message(1, 100), &meta(1), &[(a, ia)]);
    deliver_to(b, &message(2, 100_000), &meta(2), &[(a, ia)]);
    let me = Actor::user("a@example.com", a.0, "password", None, "test");
    b.update_keywords(&me, a, ia, &[1], &KeywordUpdate::Add(vec!["$seen".into()]))
        .unwrap();
    let used = b.principal(a).unwrap().unwrap().used_bytes;

    let pairs = b
        .copy_messages(&me, a, ia, &[1, 2, 99], archive, false)
        .unwrap();
    assert_eq!(pairs, vec![(1, 1), (2, 2)], "missing UIDs are skipped");
    let copied = b.messages(a, archive).unwrap();
    assert_eq!(
        copied[0].keywords,
        ["$seen"],
        "keywords travel with the copy"
    );
    let originals = b.messages(a, ia).unwrap();
    assert_eq!(
        copied[0].email, originals[0].email,
        "the same email, not a new one"
    );
    assert_eq!(
        b.principal(a).unwrap().unwrap().used_bytes,
        used,
        "no second quota charge"
    );
    assert_eq!(b.check_blobs().unwrap().referenced, 2);

    // Leaving one mailbox keeps the email alive in the other.
    b.expunge(&me, a, ia, &[1]).unwrap();
    assert_eq!(b.read_blob(&copied[0].blob).unwrap(), message(1, 100));

    let before = b.current_modseq(a).unwrap();
    let moved = b.copy_messages(&me, a, archive, &[2], trash, true).unwrap();
    assert_eq!(moved, vec![(2, 1)]);
    assert!(b.messages(a, archive).unwrap().iter().all(|m| m.uid != 2));
    assert_eq!(b.messages(a, trash).unwrap().len(), 1);
    let changes = b.changes_since(a, before, 100).unwrap();
    assert!(
        changes.iter().all(|c| c.modseq == changes[0].modseq),
        "a move is one write"
    );
    let kinds: Vec<_> = changes.iter().map(|c| (c.kind, c.mailbox_id)).collect();
    assert!(kinds.contains(&(ChangeKind::Created, Some(trash.0))));
    assert!(kinds.contains(&(ChangeKind::Destroyed, Some(archive.0))));

    // Another account's mailbox is not found, whichever side it is on.
    let io = inbox(b, other);
    assert!(matches!(
        b.copy_messages(&me, a, io, &[1], trash, false),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        b.copy_messages(&me, a, trash, &[1], io, false),
        Err(Error::NotFound { .. })
    ));
    assert!(b.messages(other, io).unwrap().is_empty());
}

fn rename(b: &dyn Backend) {
    domain(b, "example.com");
    let a = user(b, "a@example.com");
    let projects = b
        .create_mailbox(&admin(), a, "Projects", None, None)
        .unwrap();
    let child = b
        .create_mailbox(&admin(), a, "Projects/A", None, Some(projects.id))
        .unwrap();
    b.create_mailbox(&admin(), a, "Projects/A/deep", None, Some(child.id))
        .unwrap();
    b.create_mailbox(&admin(), a, "ProjectsOld", None, None)
        .unwrap();
    b.create_mailbox(&admin(), a, "Taken", None, None).unwrap();
    b.rename_mailbox(&admin(), a, projects.id, "Work").unwrap();
    let names: Vec<String> = b
        .mailboxes(a)
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(
        names,
        ["ProjectsOld", "Taken", "Work", "Work/A", "Work/A/deep"]
    );
    let work = b
        .mailboxes(a)
        .unwrap()
        .into_iter()
        .find(|m| m.name == "Work")
        .unwrap();
    assert_eq!(
        work.uid_validity, projects.uid_validity,
        "UIDVALIDITY survives a rename"
    );
    assert!(matches!(
        b.rename_mailbox(&admin(), a, projects.id, "Taken"),
        Err(Error::AlreadyExists { .. })
    ));
    assert!(matches!(
        b.rename_mailbox(&admin(), a, projects.id, "Work/A/x"),
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        b.rename_mailbox(&admin(), a, projects.id, "bad\nname"),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        b.rename_mailbox(&admin(), a, projects.id, ""),
        Err(Error::Invalid(_))
    ));
    // A top-level name again; the subtree follows.
    b.rename_mailbox(&admin(), a, projects.id, "Archive 2025")
        .unwrap();
    let names: Vec<String> = b
        .mailboxes(a)
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(
        names,
        [
            "Archive 2025",
            "Archive 2025/A",
            "Archive 2025/A/deep",
            "ProjectsOld",
            "Taken"
        ]
    );
}

fn queued_message(recipients: &[&str], first_attempt_at: i64) -> NewQueuedMessage {
    NewQueuedMessage {
        return_path: "alice@example.com".into(),
        envelope_id: Some("env-1".into()),
        return_full: false,
        recipients: recipients
            .iter()
            .map(|r| NewQueueRecipient {
                address: (*r).into(),
                notify: None,
                original_recipient: None,
            })
            .collect(),
        first_attempt_at,
        expires_at: first_attempt_at + 5 * 86_400_000,
    }
}

fn queue(b: &dyn Backend) {
    let system = Actor::system("queue");
    let raw = message(1, 100);
    let id = b
        .enqueue(
            &system,
            &raw,
            &queued_message(&["x@remote.test", "y@remote.test", "x@remote.test"], 1000),
        )
        .unwrap();
    let m = b.queued(id).unwrap().unwrap();
    assert_eq!(
        m.recipients.len(),
        2,
        "the same address twice is one delivery"
    );
    assert_eq!(m.size, raw.len() as u64);
    assert_eq!(m.envelope_id.as_deref(), Some("env-1"));
    assert_eq!(b.read_blob(&m.blob).unwrap(), raw);
    assert!(b.enqueue(&system, &raw, &queued_message(&[], 0)).is_err());
    assert_eq!(
        b.queue_size().unwrap(),
        QueueSize {
            messages: 1,
            pending_recipients: 2
        }
    );

    // Due only once their time has come.
    assert!(b.queue_due(999, 10).unwrap().is_empty());
    assert_eq!(b.next_queue_attempt().unwrap(), Some(1000));
    let due = b.queue_due(1000, 10).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].recipients.len(), 2);

    // One delivered, one retried later: only the retried one is due then.
    b.update_queued(
        &system,
        id,
        &[
            ("x@remote.test".into(), RecipientUpdate::Delivered),
            (
                "y@remote.test".into(),
                RecipientUpdate::Retry {
                    next_attempt_at: 5000,
                    error: "451 try later".into(),
                    delay_notified: false,
                },
            ),
        ],
    )
    .unwrap();
    assert!(b.queue_due(4999, 10).unwrap().is_empty());
    let due = b.queue_due(5000, 10).unwrap();
    assert_eq!(due[0].recipients.len(), 1);
    assert_eq!(due[0].recipients[0].address, "y@remote.test");
    assert_eq!(due[0].recipients[0].attempts, 1);
    assert_eq!(
        due[0].recipients[0].last_error.as_deref(),
        Some("451 try later")
    );
    let shown = b.queued(id).unwrap().unwrap();
    let x = shown
        .recipients
        .iter()
        .find(|r| r.address == "x@remote.test")
        .unwrap();
    assert_eq!(x.status, RecipientStatus::Delivered);

    // A late result for a settled recipient changes nothing.
    b.update_queued(
        &system,
        id,
        &[(
            "x@remote.test".into(),
            RecipientUpdate::Failed {
                error: "late".into(),
            },
        )],
    )
    .unwrap();
    let x = b
        .queued(id)
        .unwrap()
        .unwrap()
        .recipients
        .into_iter()
        .find(|r| r.address == "x@remote.test")
        .unwrap();
    assert_eq!(x.status, RecipientStatus::Delivered);

    // Retry makes it due now; the last settlement removes the message and its blob.
    b.retry_queued(&admin(), id, 2000).unwrap();
    assert_eq!(b.queue_due(2000, 10).unwrap().len(), 1);
    b.update_queued(
        &system,
        id,
        &[(
            "y@remote.test".into(),
            RecipientUpdate::Failed {
                error: "550 no such user".into(),
            },
        )],
    )
    .unwrap();
    assert!(b.queued(id).unwrap().is_none());
    assert!(b.queue(10).unwrap().is_empty());
    assert_eq!(b.next_queue_attempt().unwrap(), None);
    assert_eq!(b.queue_size().unwrap(), QueueSize::default());
    let check = b.check_blobs().unwrap();
    assert_eq!(check.referenced, 0, "the blob left with the message");

    // Removal by an administrator is audited and drops the message.
    let id = b
        .enqueue(&system, &raw, &queued_message(&["z@remote.test"], 0))
        .unwrap();
    let before = b.audit_tail(1).unwrap().last().map_or(0, |r| r.seq);
    b.remove_queued(&admin(), id).unwrap();
    let records = b.audit_records(before, 10).unwrap();
    assert!(records.iter().any(|r| r.event.operation == "queue.remove"));
    assert!(b.queued(id).unwrap().is_none());
    assert!(matches!(
        b.remove_queued(&admin(), id),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        b.update_queued(&system, id, &[]),
        Err(Error::NotFound { .. })
    ));
}

fn queue_blobs(b: &dyn Backend) {
    domain(b, "example.com");
    let alice = user(b, "alice@example.com");
    let inbox = inbox(b, alice);
    let system = Actor::system("queue");
    let raw = message(7, 64 * 1024);
    deliver_to(b, &raw, &meta(7), &[(alice, inbox)]);
    let id = b
        .enqueue(&system, &raw, &queued_message(&["r@remote.test"], 0))
        .unwrap();
    let check = b.check_blobs().unwrap();
    assert_eq!(
        check.referenced, 1,
        "one copy for the mailbox and the queue"
    );
    assert!(check.miscounted.is_empty() && check.missing.is_empty());
    b.update_queued(
        &system,
        id,
        &[("r@remote.test".into(), RecipientUpdate::Delivered)],
    )
    .unwrap();
    let check = b.check_blobs().unwrap();
    assert_eq!(check.referenced, 1, "the mailbox still holds it");
    assert!(check.miscounted.is_empty());
    let entry = &b.messages(alice, inbox).unwrap()[0];
    let email = b.email(alice, entry.email).unwrap().unwrap();
    assert_eq!(b.read_blob(&email.blob).unwrap(), raw);
}

fn dkim_keys(b: &dyn Backend) {
    domain(b, "example.com");
    let d = b.domain(&"example.com".parse().unwrap()).unwrap().unwrap();
    let key = DkimKey {
        selector: "s1".into(),
        algorithm: "rsa-sha256".into(),
        private_key: vec![1, 2, 3],
        public_key: "AAAA".into(),
        created_at: 0,
    };
    b.add_dkim_key(&admin(), d.id, &key).unwrap();
    assert!(matches!(
        b.add_dkim_key(&admin(), d.id, &key),
        Err(Error::AlreadyExists { .. })
    ));
    let bad = DkimKey {
        selector: "a.b".into(),
        ..key.clone()
    };
    assert!(matches!(
        b.add_dkim_key(&admin(), d.id, &bad),
        Err(Error::Invalid(_))
    ));
    let bad = DkimKey {
        algorithm: "rsa-sha1".into(),
        ..key.clone()
    };
    assert!(matches!(
        b.add_dkim_key(&admin(), d.id, &bad),
        Err(Error::Invalid(_))
    ));
    let keys = b.dkim_keys(d.id).unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].private_key, vec![1, 2, 3]);
    assert_eq!(keys[0].selector, "s1");
    b.remove_domain(&admin(), &d.name).unwrap();
    assert!(
        b.dkim_keys(d.id).unwrap().is_empty(),
        "keys go with their domain"
    );
}

fn mailbox_rights(b: &dyn Backend) {
    domain(b, "example.com");
    let alice = user(b, "alice@example.com");
    let bob = user(b, "bob@example.com");
    let inbox = inbox(b, alice);
    let alice_actor = Actor::user("alice@example.com", alice.0, "password", None, "imap");
    b.set_mailbox_rights(&alice_actor, alice, inbox, bob, "lr")
        .unwrap();
    assert_eq!(
        b.mailbox_rights(alice, inbox).unwrap(),
        vec![(bob, "lr".to_string())]
    );
    assert_eq!(
        b.rights_granted_to(bob).unwrap(),
        vec![(alice, inbox, "lr".to_string())]
    );
    assert!(b.rights_granted_to(alice).unwrap().is_empty());
    b.set_mailbox_rights(&alice_actor, alice, inbox, bob, "lrsw")
        .unwrap();
    assert_eq!(b.mailbox_rights(alice, inbox).unwrap()[0].1, "lrsw");
    // Bad input and other accounts' mailboxes are refused.
    assert!(matches!(
        b.set_mailbox_rights(&alice_actor, alice, inbox, bob, "L R"),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        b.set_mailbox_rights(&alice_actor, alice, inbox, alice, "l"),
        Err(Error::Invalid(_))
    ));
    let bob_inbox = self::inbox(b, bob);
    assert!(
        b.set_mailbox_rights(&alice_actor, alice, bob_inbox, bob, "l")
            .is_err()
    );
    assert!(b.mailbox_rights(alice, bob_inbox).is_err());
    // Removal, and cleanup with the mailbox.
    b.set_mailbox_rights(&alice_actor, alice, inbox, bob, "")
        .unwrap();
    assert!(b.rights_granted_to(bob).unwrap().is_empty());
    let other = b
        .create_mailbox(&admin(), alice, "Projects", None, None)
        .unwrap();
    b.set_mailbox_rights(&alice_actor, alice, other.id, bob, "lr")
        .unwrap();
    b.delete_mailbox(&admin(), alice, other.id).unwrap();
    assert!(b.rights_granted_to(bob).unwrap().is_empty());
}

fn batch_delivery(b: &dyn Backend) {
    domain(b, "example.com");
    let alice = user(b, "alice@example.com");
    let inbox = inbox(b, alice);
    let item = |n: usize, size: usize, keywords: Vec<String>| crate::BatchItem {
        raw: message(n, size),
        meta: meta(n),
        targets: vec![Delivery {
            account: alice,
            mailbox: inbox,
            keywords,
        }],
    };
    let done = b
        .deliver_batch(
            &Actor::system("test"),
            &[
                item(1, 100, vec!["$seen".into()]),
                item(2, 64 * 1024, vec![]),
                item(3, 10, vec![]),
            ],
        )
        .unwrap();
    assert_eq!(done.len(), 3);
    let uids: Vec<u32> = done.iter().map(|d| d[0].uid).collect();
    assert_eq!(uids, vec![1, 2, 3]);
    assert_eq!(b.messages(alice, inbox).unwrap().len(), 3);
    // One bad item: nothing of the batch is stored.
    let mut bad = item(5, 10, vec![]);
    bad.targets[0].mailbox = bulwark_core::MailboxId(999_999);
    assert!(
        b.deliver_batch(&Actor::system("test"), &[item(4, 10, vec![]), bad])
            .is_err()
    );
    assert_eq!(b.messages(alice, inbox).unwrap().len(), 3);
    let check = b.check_blobs().unwrap();
    assert!(
        check.miscounted.is_empty() && check.missing.is_empty(),
        "{check:?}"
    );
    assert!(
        b.deliver_batch(&Actor::system("test"), &[])
            .unwrap()
            .is_empty()
    );
}

fn changed_since(b: &dyn Backend) {
    domain(b, "example.com");
    let alice = user(b, "alice@example.com");
    let inbox = inbox(b, alice);
    for n in 0..3 {
        deliver_to(b, &message(n, 50), &meta(n), &[(alice, inbox)]);
    }
    let (all, mark) = b.messages_changed_since(alice, inbox, ModSeq(0)).unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all, b.messages(alice, inbox).unwrap());
    let (none, same) = b.messages_changed_since(alice, inbox, mark).unwrap();
    assert!(none.is_empty());
    assert_eq!(same, mark);
    let actor = Actor::system("test");
    b.update_keywords(
        &actor,
        alice,
        inbox,
        &[2],
        &KeywordUpdate::Add(vec!["$seen".into()]),
    )
    .unwrap();
    deliver_to(b, &message(9, 50), &meta(9), &[(alice, inbox)]);
    let (changed, later) = b.messages_changed_since(alice, inbox, mark).unwrap();
    let uids: Vec<u32> = changed.iter().map(|e| e.uid).collect();
    assert_eq!(uids, vec![2, 4], "the flagged one and the new one");
    assert!(later > mark);
    b.expunge(&actor, alice, inbox, &[1]).unwrap();
    let (changed, after) = b.messages_changed_since(alice, inbox, later).unwrap();
    assert!(changed.is_empty(), "removals are in the change log");
    assert!(after > later, "an expunge moves the mailbox's mark");
    let other = user(b, "bob@example.com");
    assert!(b.messages_changed_since(other, inbox, ModSeq(0)).is_err());
}

fn dav_object(name: &str, uid: &str, data: &str, spans: Option<TimeSpans>) -> NewDavObject {
    NewDavObject {
        name: name.into(),
        uid: uid.into(),
        component: "VEVENT".into(),
        data: data.into(),
        spans,
    }
}

fn dav_objects(b: &dyn Backend) {
    domain(b, "example.com");
    let alice = user(b, "alice@example.com");
    let bob = user(b, "bob@example.com");
    let me = Actor::user("alice@example.com", alice.0, "password", None, "test");
    let props = DavCollectionProps {
        display_name: "Work".into(),
        ..Default::default()
    };
    let cal = b
        .create_dav_collection(
            &me,
            alice,
            DavKind::Calendar,
            "work",
            &props,
            "VEVENT,VTODO",
        )
        .unwrap();
    assert!(matches!(
        b.create_dav_collection(&me, alice, DavKind::Calendar, "work", &props, ""),
        Err(Error::AlreadyExists { .. })
    ));
    // The same name may be used by another kind and another account.
    b.create_dav_collection(&me, alice, DavKind::AddressBook, "work", &props, "")
        .unwrap();
    let bob_cal = b
        .create_dav_collection(&admin(), bob, DavKind::Calendar, "work", &props, "")
        .unwrap();
    for bad in ["", "..", "a/b", "x\nY"] {
        assert!(
            b.create_dav_collection(&me, alice, DavKind::Calendar, bad, &props, "")
                .is_err()
        );
    }
    assert_eq!(
        b.dav_collections(alice, DavKind::Calendar).unwrap().len(),
        1
    );

    let put = b
        .put_dav_object(
            &me,
            alice,
            cal.id,
            &dav_object("a.ics", "uid-a", "DATA-A", None),
            DavPrecondition::Absent,
        )
        .unwrap();
    assert!(put.created);
    // If-None-Match: * on an existing name fails; If-Match with the old tag too.
    assert!(matches!(
        b.put_dav_object(
            &me,
            alice,
            cal.id,
            &dav_object("a.ics", "uid-a", "X", None),
            DavPrecondition::Absent
        ),
        Err(Error::PreconditionFailed(_))
    ));
    let second = b
        .put_dav_object(
            &me,
            alice,
            cal.id,
            &dav_object("a.ics", "uid-a", "DATA-A2", None),
            DavPrecondition::Matches(put.modseq),
        )
        .unwrap();
    assert!(!second.created && second.modseq > put.modseq);
    assert!(matches!(
        b.put_dav_object(
            &me,
            alice,
            cal.id,
            &dav_object("a.ics", "uid-a", "X", None),
            DavPrecondition::Matches(put.modseq)
        ),
        Err(Error::PreconditionFailed(_))
    ));
    // A UID lives once per collection.
    assert!(matches!(
        b.put_dav_object(
            &me,
            alice,
            cal.id,
            &dav_object("b.ics", "uid-a", "X", None),
            DavPrecondition::None
        ),
        Err(Error::Conflict(_))
    ));
    // A collection of another account is refused even with its id.
    assert!(matches!(
        b.put_dav_object(
            &me,
            alice,
            bob_cal.id,
            &dav_object("c.ics", "uid-c", "X", None),
            DavPrecondition::None
        ),
        Err(Error::NotFound { .. })
    ));
    assert!(b.dav_objects(bob_cal.id).unwrap().is_empty());

    let listed = b.dav_objects(cal.id).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].name.as_str(), listed[0].size, listed[0].modseq),
        ("a.ics", 7, second.modseq)
    );
    let got = b
        .dav_objects_named(cal.id, &["a.ics".into(), "missing.ics".into()])
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data, "DATA-A2");
    let by_uid = b
        .dav_objects_by_uid(alice, DavKind::Calendar, "uid-a")
        .unwrap();
    assert_eq!(by_uid.len(), 1);
    assert_eq!(
        (by_uid[0].0.name.as_str(), by_uid[0].1.data.as_str()),
        ("work", "DATA-A2")
    );
    assert!(
        b.dav_objects_by_uid(bob, DavKind::Calendar, "uid-a")
            .unwrap()
            .is_empty()
    );
    assert!(
        b.dav_objects_by_uid(alice, DavKind::AddressBook, "uid-a")
            .unwrap()
            .is_empty()
    );
    let after_put = b
        .dav_collection(alice, DavKind::Calendar, "work")
        .unwrap()
        .unwrap();
    assert_eq!(after_put.modseq, second.modseq);

    // Deleting leaves nothing listed; a second delete is NotFound.
    b.delete_dav_object(&me, alice, cal.id, "a.ics", DavPrecondition::None)
        .unwrap();
    assert!(b.dav_objects(cal.id).unwrap().is_empty());
    assert!(matches!(
        b.delete_dav_object(&me, alice, cal.id, "a.ics", DavPrecondition::None),
        Err(Error::NotFound { .. })
    ));
    // The name and the UID are free again.
    assert!(
        b.put_dav_object(
            &me,
            alice,
            cal.id,
            &dav_object("a.ics", "uid-a", "DATA-A3", None),
            DavPrecondition::Absent
        )
        .unwrap()
        .created
    );

    let updated = DavCollectionProps {
        display_name: "Office".into(),
        description: "Meetings".into(),
        color: Some("#112233".into()),
    };
    b.update_dav_collection(&me, alice, cal.id, &updated)
        .unwrap();
    assert_eq!(
        b.dav_collection(alice, DavKind::Calendar, "work")
            .unwrap()
            .unwrap()
            .props,
        updated
    );
    // Sizes and usage count bytes, not characters.
    b.put_dav_object(
        &me,
        alice,
        cal.id,
        &dav_object("e.ics", "uid-e", "é", None),
        DavPrecondition::None,
    )
    .unwrap();
    let sizes: Vec<u64> = b
        .dav_objects(cal.id)
        .unwrap()
        .iter()
        .map(|o| o.size)
        .collect();
    assert_eq!(sizes, [7, 2]);
    // Usage follows the stored data; deleting the collection releases it.
    let used = b.principal(alice).unwrap().unwrap().used_bytes;
    assert_eq!(used, 9);
    b.delete_dav_collection(&me, alice, cal.id).unwrap();
    assert_eq!(b.principal(alice).unwrap().unwrap().used_bytes, 0);
    assert!(
        b.dav_collection(alice, DavKind::Calendar, "work")
            .unwrap()
            .is_none()
    );
    // Bob's data was never touched; the admin's write to it was audited.
    assert!(
        b.audit_tail(50)
            .unwrap()
            .iter()
            .any(|r| r.event.operation == "dav.collection.create"
                && r.event.target.as_deref() == Some("bob@example.com"))
    );
}

fn dav_sync(b: &dyn Backend) {
    domain(b, "example.com");
    let alice = user(b, "alice@example.com");
    let me = Actor::user("alice@example.com", alice.0, "password", None, "test");
    let book = b
        .create_dav_collection(
            &me,
            alice,
            DavKind::AddressBook,
            "contacts",
            &DavCollectionProps::default(),
            "",
        )
        .unwrap();
    for i in 0..5 {
        let name = format!("{i}.vcf");
        b.put_dav_object(
            &me,
            alice,
            book.id,
            &dav_object(&name, &format!("u{i}"), "V", None),
            DavPrecondition::None,
        )
        .unwrap();
    }
    let token = b.dav_changes_since(book.id, ModSeq(0), 100).unwrap();
    assert_eq!(token.objects.len(), 5);
    assert!(!token.truncated);
    // A later sync names only what changed, deletions as tombstones.
    b.put_dav_object(
        &me,
        alice,
        book.id,
        &dav_object("1.vcf", "u1", "V2", None),
        DavPrecondition::None,
    )
    .unwrap();
    b.delete_dav_object(&me, alice, book.id, "3.vcf", DavPrecondition::None)
        .unwrap();
    let changes = b.dav_changes_since(book.id, token.modseq, 100).unwrap();
    let seen: Vec<(&str, bool)> = changes
        .objects
        .iter()
        .map(|o| (o.name.as_str(), o.deleted))
        .collect();
    assert_eq!(seen, [("1.vcf", false), ("3.vcf", true)]);
    assert!(changes.modseq > token.modseq);
    assert!(
        b.dav_changes_since(book.id, changes.modseq, 100)
            .unwrap()
            .objects
            .is_empty()
    );
    // Paging: a limit cuts the list and the token continues from it.
    let first = b.dav_changes_since(book.id, ModSeq(0), 2).unwrap();
    assert!(first.truncated);
    assert_eq!(first.objects.len(), 2);
    let rest = b.dav_changes_since(book.id, first.modseq, 100).unwrap();
    assert_eq!(first.objects.len() + rest.objects.len(), 5);
}

fn dav_time_ranges(b: &dyn Backend) {
    domain(b, "example.com");
    let alice = user(b, "alice@example.com");
    let me = Actor::user("alice@example.com", alice.0, "password", None, "test");
    let cal = b
        .create_dav_collection(
            &me,
            alice,
            DavKind::Calendar,
            "c",
            &DavCollectionProps::default(),
            "VEVENT",
        )
        .unwrap();
    let once = TimeSpans {
        instances: vec![(1000, 2000)],
        expanded_until: None,
    };
    let weekly = TimeSpans {
        instances: vec![(10_000, 10_100), (20_000, 20_100)],
        expanded_until: Some(20_000),
    };
    b.put_dav_object(
        &me,
        alice,
        cal.id,
        &dav_object("once.ics", "1", "O", Some(once)),
        DavPrecondition::None,
    )
    .unwrap();
    b.put_dav_object(
        &me,
        alice,
        cal.id,
        &dav_object("weekly.ics", "2", "W", Some(weekly)),
        DavPrecondition::None,
    )
    .unwrap();
    let names = |start, end| -> Vec<String> {
        let mut names: Vec<String> = b
            .dav_objects_in_range(cal.id, start, end)
            .unwrap()
            .into_iter()
            .map(|o| o.meta.name)
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(0, 999), Vec::<String>::new());
    assert_eq!(names(0, 1001), ["once.ics"]);
    assert_eq!(names(2000, 3000), Vec::<String>::new(), "end is exclusive");
    assert_eq!(names(10_050, 10_060), ["weekly.ics"]);
    // Matched by a stored instance: certain, not a candidate to expand.
    assert!(!b.dav_objects_in_range(cal.id, 20_000, 20_050).unwrap()[0].open_ended);
    // Past the stored instances the open-ended object is a candidate.
    let far = b.dav_objects_in_range(cal.id, 50_000, 60_000).unwrap();
    assert_eq!(far.len(), 1);
    assert!(far[0].open_ended);
    // Replacing an object replaces its spans.
    let moved = TimeSpans {
        instances: vec![(5000, 6000)],
        expanded_until: None,
    };
    b.put_dav_object(
        &me,
        alice,
        cal.id,
        &dav_object("once.ics", "1", "O2", Some(moved)),
        DavPrecondition::None,
    )
    .unwrap();
    assert_eq!(names(0, 3000), Vec::<String>::new());
    assert_eq!(names(5500, 5600), ["once.ics"]);
    // A long instance (a month-long event, an undated task) is found from
    // anywhere inside it.
    let month = TimeSpans {
        instances: vec![(100_000, 100_000 + 31 * 86_400)],
        expanded_until: None,
    };
    b.put_dav_object(
        &me,
        alice,
        cal.id,
        &dav_object("month.ics", "3", "M", Some(month)),
        DavPrecondition::None,
    )
    .unwrap();
    let inside = 100_000 + 20 * 86_400;
    // (weekly.ics comes too: past its stored instances it is a candidate.)
    assert_eq!(names(inside, inside + 60), ["month.ics", "weekly.ics"]);
    assert_eq!(
        names(inside - 86_400 * 30, inside - 86_400 * 29),
        Vec::<String>::new()
    );
    b.delete_dav_object(&me, alice, cal.id, "month.ics", DavPrecondition::None)
        .unwrap();
    b.delete_dav_object(&me, alice, cal.id, "weekly.ics", DavPrecondition::None)
        .unwrap();
    assert_eq!(names(0, 100_000), ["once.ics"]);
}

fn dav_rights(b: &dyn Backend) {
    domain(b, "example.com");
    let alice = user(b, "alice@example.com");
    let bob = user(b, "bob@example.com");
    let carol = user(b, "carol@example.com");
    let me = Actor::user("alice@example.com", alice.0, "password", None, "test");
    let props = DavCollectionProps::default();
    let work = b
        .create_dav_collection(&me, alice, DavKind::Calendar, "work", &props, "VEVENT")
        .unwrap();
    let home = b
        .create_dav_collection(&me, alice, DavKind::Calendar, "home", &props, "VEVENT")
        .unwrap();
    let before = b
        .dav_collection(alice, DavKind::Calendar, "work")
        .unwrap()
        .unwrap()
        .modseq;
    b.set_dav_rights(&me, alice, work.id, &[(bob, false), (carol, true)])
        .unwrap();
    assert_eq!(
        b.dav_rights(work.id).unwrap(),
        [(bob, false), (carol, true)]
    );
    assert!(b.dav_rights(home.id).unwrap().is_empty());
    let for_bob = b.dav_rights_granted_to(bob, DavKind::Calendar).unwrap();
    assert_eq!(for_bob.len(), 1);
    assert_eq!((for_bob[0].0.name.as_str(), for_bob[0].1), ("work", false));
    assert!(
        b.dav_rights_granted_to(bob, DavKind::AddressBook)
            .unwrap()
            .is_empty()
    );
    // A change of rights is a change of the collection.
    assert!(
        b.dav_collection(alice, DavKind::Calendar, "work")
            .unwrap()
            .unwrap()
            .modseq
            > before
    );
    // Setting replaces; the owner and unknown principals are refused.
    b.set_dav_rights(&me, alice, work.id, &[(carol, false)])
        .unwrap();
    assert_eq!(b.dav_rights(work.id).unwrap(), [(carol, false)]);
    assert!(
        b.set_dav_rights(&me, alice, work.id, &[(alice, true)])
            .is_err()
    );
    assert!(
        b.set_dav_rights(&me, alice, work.id, &[(PrincipalId(9999), true)])
            .is_err()
    );
    assert_eq!(b.dav_rights(work.id).unwrap(), [(carol, false)]);
    // Another account's collection id is refused.
    let bobs = Actor::user("bob@example.com", bob.0, "password", None, "test");
    assert!(
        b.set_dav_rights(&bobs, bob, work.id, &[(bob, true)])
            .is_err()
    );
    // Deleting the collection or the grantee removes the rights.
    b.remove_principal(&admin(), carol).unwrap();
    assert!(b.dav_rights(work.id).unwrap().is_empty());
    b.set_dav_rights(&me, alice, work.id, &[(bob, true)])
        .unwrap();
    b.delete_dav_collection(&me, alice, work.id).unwrap();
    assert!(
        b.dav_rights_granted_to(bob, DavKind::Calendar)
            .unwrap()
            .is_empty()
    );
}
