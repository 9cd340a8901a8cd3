//! Access to other accounts' mailboxes: ACL entries set by owners
//! (RFC 4314), full-access delegation to a shared mailbox, the shared
//! namespaces, exact enforcement of each right, and the audit trail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bulwark_audit::{Actor, LogonType};
use bulwark_core::{PrincipalKind, Right};
use bulwark_store::{Grant, NewPrincipal};
use common::{joined, message, ok};

const ALICE_INBOX: &str = "\"Other Users/alice@example.com/INBOX\"";

fn audit_ops(fx: &common::Fixture, actor: &str) -> Vec<String> {
    fx.store
        .audit_records(0, 10_000)
        .unwrap()
        .into_iter()
        .filter(|r| r.event.actor == actor)
        .map(|r| r.event.operation)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_entries_grant_exactly_what_they_say() {
    let fx = common::start().await;
    fx.deliver(fx.alice, &message("first")).await;
    fx.deliver(fx.alice, &message("second")).await;
    let mut alice = fx.login("alice@example.com").await;
    let mut bob = fx.login("bob@example.com").await;

    // Without an entry, alice's mailboxes do not exist for bob, by any form.
    assert!(!joined(&bob.run("LIST \"\" *").await).contains("Other Users"));
    for command in [
        format!("SELECT {ALICE_INBOX}"),
        format!("EXAMINE {ALICE_INBOX}"),
        format!("STATUS {ALICE_INBOX} (MESSAGES)"),
        format!("MYRIGHTS {ALICE_INBOX}"),
        format!("GETACL {ALICE_INBOX}"),
        "SELECT \"Other Users/ALICE@example.com/INBOX\"".to_string(),
        "SELECT \"Other Users/alice@example.com/../bob@example.com/INBOX\"".to_string(),
        "SELECT \"Shared Folders/alice@example.com/INBOX\"".to_string(),
        "SELECT \"Other Users/alice@example.com\"".to_string(),
    ] {
        let r = bob.run(&command).await;
        assert!(
            r.last().unwrap().contains("NO") || r.last().unwrap().contains("BAD"),
            "{command}: {r:?}"
        );
        assert!(!joined(&r).contains("EXISTS"), "{command}: {r:?}");
    }
    let r = bob
        .run(&format!("APPEND {ALICE_INBOX} {{5+}}\r\nhello"))
        .await;
    assert!(!ok(&r), "{r:?}");

    // Alice shares her Inbox read-only.
    assert!(ok(&alice.run("SETACL INBOX bob@example.com lr").await));
    let r = alice.run("GETACL INBOX").await;
    assert!(
        joined(&r).contains("* ACL INBOX alice@example.com lrswipkxtea bob@example.com lr"),
        "{r:?}"
    );
    assert!(!ok(&alice.run("SETACL INBOX bob@example.com lz").await));
    assert!(!ok(&alice.run("SETACL INBOX nobody@example.com lr").await));

    let r = bob.run("LIST \"\" *").await;
    let listing = joined(&r);
    assert!(
        listing.contains("(\\Noselect \\HasChildren) \"/\" \"Other Users\""),
        "{r:?}"
    );
    assert!(listing.contains(ALICE_INBOX), "{r:?}");
    assert!(
        !listing.contains("alice@example.com/Sent"),
        "only what is shared: {r:?}"
    );
    let r = bob.run(&format!("MYRIGHTS {ALICE_INBOX}")).await;
    assert!(
        joined(&r).contains(&format!("* MYRIGHTS {ALICE_INBOX} lr")),
        "{r:?}"
    );
    assert!(
        !ok(&bob.run(&format!("GETACL {ALICE_INBOX}")).await),
        "no `a` right"
    );
    assert!(!ok(&bob
        .run(&format!("SETACL {ALICE_INBOX} bob@example.com lrswi"))
        .await));

    // Read-only: reading works, changing does not, and \Seen is not set.
    let r = bob.run(&format!("SELECT {ALICE_INBOX}")).await;
    assert!(r.last().unwrap().contains("[READ-ONLY]"), "{r:?}");
    assert!(joined(&r).contains("* 2 EXISTS"), "{r:?}");
    let r = bob.run("FETCH 1 (BODY[])").await;
    assert!(joined(&r).contains("Hello first"), "{r:?}");
    let r = bob.run("FETCH 1 (FLAGS)").await;
    assert!(
        !joined(&r).contains("\\Seen"),
        "no `s` right, no implicit \\Seen: {r:?}"
    );
    assert!(!ok(&bob.run("STORE 1 +FLAGS (\\Flagged)").await));
    assert!(!ok(&bob.run("EXPUNGE").await));
    assert!(!ok(&bob
        .run(&format!("APPEND {ALICE_INBOX} {{5+}}\r\nhello"))
        .await));
    // Copying out to his own Inbox needs only `r`; moving out needs more.
    let r = bob.run("COPY 2 INBOX").await;
    assert!(ok(&r), "{r:?}");
    assert!(!ok(&bob.run("MOVE 1 INBOX").await));
    assert!(!ok(&bob.run(&format!("DELETE {ALICE_INBOX}")).await));
    assert!(!ok(&bob.run(&format!("RENAME {ALICE_INBOX} Mine")).await));
    assert!(!ok(&bob
        .run("CREATE \"Other Users/alice@example.com/New\"")
        .await));
    let r = bob.run("STATUS INBOX (MESSAGES)").await;
    assert!(
        joined(&r).contains("MESSAGES 1"),
        "the copy is bob's own: {r:?}"
    );

    // More rights: flags he holds rights for change, others do not.
    assert!(ok(&alice.run("SETACL INBOX bob@example.com +ste").await));
    let r = bob.run(&format!("SELECT {ALICE_INBOX}")).await;
    assert!(r.last().unwrap().contains("[READ-WRITE]"), "{r:?}");
    let r = bob.run("STORE 1 +FLAGS (\\Flagged)").await;
    assert!(
        r.last().unwrap().contains("NOPERM"),
        "`w` is missing: {r:?}"
    );
    assert!(ok(&bob.run("STORE 1 +FLAGS (\\Seen)").await));
    assert!(ok(&bob.run("STORE 1 +FLAGS (\\Deleted)").await));
    let r = bob.run("EXPUNGE").await;
    assert!(ok(&r) && joined(&r).contains("* 1 EXPUNGE"), "{r:?}");
    let r = alice.run("STATUS INBOX (MESSAGES)").await;
    assert!(joined(&r).contains("MESSAGES 1"), "{r:?}");

    // Taken back: gone again, even while selected elsewhere.
    assert!(ok(&alice.run("DELETEACL INBOX bob@example.com").await));
    assert!(!ok(&bob.run(&format!("SELECT {ALICE_INBOX}")).await));
    assert!(!joined(&bob.run("LIST \"\" *").await).contains("Other Users"));

    // Every access by bob to alice's data is in the audit log.
    let ops = audit_ops(&fx, "bob@example.com");
    for op in ["mailbox.select", "mail.fetch", "mail.copy-out"] {
        assert!(ops.iter().any(|o| o == op), "{op} not audited: {ops:?}");
    }
    let records = fx.store.audit_records(0, 10_000).unwrap();
    let delegate_writes: Vec<_> = records
        .iter()
        .filter(|r| r.event.actor == "bob@example.com" && r.event.logon_type == LogonType::Delegate)
        .map(|r| r.event.operation.clone())
        .collect();
    assert!(
        delegate_writes.iter().any(|o| o.contains("expunge")),
        "{delegate_writes:?}"
    );
    assert!(audit_ops(&fx, "alice@example.com").contains(&"mailbox.rights.set".to_string()));
    bulwark_audit::verify(&records, fx.store.audit_head().unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_access_reaches_a_shared_mailbox() {
    let fx = common::start().await;
    let admin = Actor::local_admin("test");
    let support = fx
        .store
        .create_principal(
            &admin,
            &NewPrincipal {
                kind: PrincipalKind::Shared,
                address: "support@example.com".parse().unwrap(),
                display_name: "Support".into(),
                password_hash: None,
                quota_bytes: 0,
            },
        )
        .unwrap();
    fx.deliver(support, &message("ticket 1")).await;
    fx.store
        .add_grant(
            &admin,
            &Grant {
                grantor: support,
                grantee: fx.bob,
                right: Right::FullAccess,
            },
        )
        .unwrap();
    let shared = "\"Shared Folders/support@example.com/INBOX\"";
    // Bob's own quota must not be reported for the shared mailbox.
    fx.store
        .set_quota(&admin, fx.bob, 10 * 1024 * 1024)
        .unwrap();

    let mut alice = fx.login("alice@example.com").await;
    assert!(!joined(&alice.run("LIST \"\" *").await).contains("support@"));
    assert!(!ok(&alice.run(&format!("SELECT {shared}")).await));

    let mut bob = fx.login("bob@example.com").await;
    let r = bob.run("LIST \"\" \"Shared Folders/*\"").await;
    assert!(joined(&r).contains(shared), "{r:?}");
    let r = bob.run(&format!("MYRIGHTS {shared}")).await;
    assert!(joined(&r).contains("lrswipkxte\r\n"), "{r:?}");
    let r = bob.run(&format!("SELECT {shared}")).await;
    assert!(r.last().unwrap().contains("[READ-WRITE]"), "{r:?}");
    assert!(ok(&bob.run("STORE 1 +FLAGS (\\Flagged)").await));
    let r = bob
        .run(&format!(
            "APPEND {shared} {{22+}}\r\nSubject: reply\r\n\r\nok\r\n"
        ))
        .await;
    assert!(ok(&r) && joined(&r).contains("APPENDUID"), "{r:?}");
    let r = [r, bob.run("NOOP").await].concat();
    assert!(
        joined(&r).contains("* 2 EXISTS"),
        "the selected view follows: {r:?}"
    );
    // A delivery to the shared mailbox reaches the delegate idling on it.
    bob.write(b"i1 IDLE\r\n").await;
    assert!(bob.line().await.starts_with("+ "));
    fx.deliver(support, &message("ticket 2")).await;
    let pushed = bob
        .line_within(std::time::Duration::from_secs(5))
        .await
        .expect("an untagged EXISTS while idling");
    assert_eq!(pushed, "* 3 EXISTS\r\n");
    bob.write(b"DONE\r\n").await;
    assert!(ok(&bob.until("i1").await));
    // Administering access stays with the owner (no `a`).
    let r = bob.run(&format!("GETQUOTAROOT {shared}")).await;
    assert!(ok(&r) && !joined(&r).contains("* QUOTA "), "{r:?}");
    assert!(!ok(&bob.run(&format!("GETACL {shared}")).await));
    assert!(!ok(&bob
        .run(&format!("SETACL {shared} alice@example.com lr"))
        .await));
    // The grant does not reach bob's colleagues or other principals.
    let r = bob
        .run("SELECT \"Other Users/alice@example.com/INBOX\"")
        .await;
    assert!(!ok(&r), "{r:?}");
}
