#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulwark_audit::Actor;
use bulwark_core::{PrincipalId, PrincipalKind};
use bulwark_directory::{AuthError, AuthMethod, Directory, DirectoryError, LimitPolicy};
use bulwark_store::{NewPrincipal, SqliteBackend, SqliteOptions, Store};

const PASSWORD: &str = "a long enough password";

fn setup(policy: LimitPolicy) -> (tempfile::TempDir, Directory, PrincipalId) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(Arc::new(
        SqliteBackend::open(dir.path(), SqliteOptions::default()).unwrap(),
    ));
    let directory = Directory::new(store, policy);
    let admin = Actor::local_admin("test");
    directory
        .store()
        .create_domain(&admin, &"example.com".parse().unwrap())
        .unwrap();
    let alice = directory
        .add_user(
            &admin,
            &"alice@example.com".parse().unwrap(),
            "Alice",
            PASSWORD,
            0,
        )
        .unwrap();
    (dir, directory, alice)
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn principal(d: &Directory, address: &str, kind: PrincipalKind) -> PrincipalId {
    d.store()
        .create_principal(
            &Actor::local_admin("test"),
            &NewPrincipal {
                kind,
                address: address.parse().unwrap(),
                display_name: String::new(),
                password_hash: None,
                quota_bytes: 0,
            },
        )
        .unwrap()
}

#[test]
fn password_login_succeeds_and_fails() {
    let (_dir, d, alice) = setup(LimitPolicy::default());
    let now = Instant::now();
    let ok = d
        .authenticate("Alice@Example.com", PASSWORD, ip("192.0.2.1"), now)
        .unwrap();
    assert_eq!((ok.principal.id, ok.method), (alice, AuthMethod::Password));
    assert!(matches!(
        d.authenticate(
            "alice@example.com",
            "wrong password!!",
            ip("192.0.2.1"),
            now
        ),
        Err(AuthError::Failed)
    ));
    assert!(matches!(
        d.authenticate("alice@example.com", "", ip("192.0.2.1"), now),
        Err(AuthError::Failed)
    ));
    assert!(matches!(
        d.authenticate("alice@example.com", &"x".repeat(5000), ip("192.0.2.1"), now),
        Err(AuthError::Failed)
    ));
}

#[test]
fn unknown_accounts_look_like_wrong_passwords() {
    let (_dir, d, _) = setup(LimitPolicy::default());
    let now = Instant::now();
    let unknown = d
        .authenticate("nobody@example.com", PASSWORD, ip("192.0.2.1"), now)
        .unwrap_err();
    let wrong = d
        .authenticate(
            "alice@example.com",
            "wrong password!!",
            ip("192.0.2.2"),
            now,
        )
        .unwrap_err();
    assert_eq!(unknown.to_string(), wrong.to_string());
    assert!(matches!(
        d.authenticate("not an address", PASSWORD, ip("192.0.2.3"), now),
        Err(AuthError::Failed)
    ));
}

#[test]
fn only_people_log_in_and_only_by_primary_address() {
    let (_dir, d, alice) = setup(LimitPolicy::default());
    let admin = Actor::local_admin("test");
    d.store()
        .add_alias(&admin, alice, &"a@example.com".parse().unwrap())
        .unwrap();
    assert!(matches!(
        d.authenticate("a@example.com", PASSWORD, ip("192.0.2.1"), Instant::now()),
        Err(AuthError::Failed)
    ));
    let shared = principal(&d, "support@example.com", PrincipalKind::Shared);
    d.store()
        .set_password_hash(
            &admin,
            shared,
            &bulwark_directory::hash_password(PASSWORD).unwrap(),
        )
        .unwrap();
    assert!(matches!(
        d.authenticate(
            "support@example.com",
            PASSWORD,
            ip("192.0.2.1"),
            Instant::now()
        ),
        Err(AuthError::Failed)
    ));
}

#[test]
fn weak_passwords_are_refused() {
    let (_dir, d, alice) = setup(LimitPolicy::default());
    let admin = Actor::local_admin("test");
    assert!(matches!(
        d.set_password(&admin, alice, "short"),
        Err(DirectoryError::Refused(_))
    ));
    d.set_password(&admin, alice, "another long password")
        .unwrap();
    assert!(
        d.authenticate(
            "alice@example.com",
            "another long password",
            ip("192.0.2.1"),
            Instant::now()
        )
        .is_ok()
    );
}

#[test]
fn app_passwords_work_until_revoked() {
    let (_dir, d, alice) = setup(LimitPolicy::default());
    let admin = Actor::local_admin("test");
    let (id, secret) = d.add_app_password(&admin, alice, "phone").unwrap();
    let now = Instant::now();
    let ok = d
        .authenticate("alice@example.com", secret.expose(), ip("192.0.2.1"), now)
        .unwrap();
    assert_eq!(ok.method, AuthMethod::AppPassword(id));
    // The stored form is a digest, never the secret.
    let stored = d.store().app_password_hashes(alice).unwrap();
    assert!(!stored[0].1.contains(secret.expose()));
    d.store().revoke_app_password(&admin, alice, id).unwrap();
    assert!(
        d.authenticate("alice@example.com", secret.expose(), ip("192.0.2.1"), now)
            .is_err()
    );
    assert!(d.add_app_password(&admin, alice, "").is_err());
}

#[test]
fn repeated_failures_ban_the_account_until_expiry() {
    let policy = LimitPolicy {
        max_failures_per_account: 3,
        max_failures_per_ip: 100,
        window: Duration::from_secs(60),
        ban: Duration::from_secs(300),
    };
    let (_dir, d, _) = setup(policy);
    let t0 = Instant::now();
    for i in 0..3 {
        // Different addresses: the per-account limit is what trips.
        let from = ip(&format!("198.51.100.{i}"));
        assert!(matches!(
            d.authenticate("alice@example.com", "wrong password!!", from, t0),
            Err(AuthError::Failed)
        ));
    }
    // Banned: even the right password is refused, from anywhere.
    let banned = d.authenticate(
        "alice@example.com",
        PASSWORD,
        ip("203.0.113.9"),
        t0 + Duration::from_secs(1),
    );
    assert!(matches!(banned, Err(AuthError::TemporarilyBlocked)));
    assert_eq!(d.limiter().banned_counts(t0).0, 1);
    // The ban expires.
    let later = t0 + Duration::from_secs(301);
    assert!(
        d.authenticate("alice@example.com", PASSWORD, ip("203.0.113.9"), later)
            .is_ok()
    );
}

#[test]
fn repeated_failures_ban_the_address() {
    let policy = LimitPolicy {
        max_failures_per_account: 100,
        max_failures_per_ip: 4,
        window: Duration::from_secs(60),
        ban: Duration::from_secs(120),
    };
    let (_dir, d, _) = setup(policy);
    let attacker = ip("2001:db8:1:2::1");
    let t0 = Instant::now();
    for i in 0..4 {
        // Spraying different (even unknown) accounts from one /64.
        let _ = d.authenticate(
            &format!("user{i}@example.com"),
            "guess guess guess",
            attacker,
            t0,
        );
    }
    let same_net = ip("2001:db8:1:2::ffff");
    assert!(matches!(
        d.authenticate("alice@example.com", PASSWORD, same_net, t0),
        Err(AuthError::TemporarilyBlocked)
    ));
    assert!(
        d.authenticate("alice@example.com", PASSWORD, ip("192.0.2.50"), t0)
            .is_ok(),
        "others are unaffected"
    );
    assert!(
        d.authenticate(
            "alice@example.com",
            PASSWORD,
            same_net,
            t0 + Duration::from_secs(121)
        )
        .is_ok()
    );
}

#[test]
fn group_expansion_survives_loops_and_dedups() {
    let (_dir, d, alice) = setup(LimitPolicy::default());
    let admin = Actor::local_admin("test");
    let bob = d
        .add_user(
            &admin,
            &"bob@example.com".parse().unwrap(),
            "Bob",
            PASSWORD,
            0,
        )
        .unwrap();
    let room = principal(&d, "room@example.com", PrincipalKind::Room);
    let all = principal(&d, "all@example.com", PrincipalKind::Group);
    let team = principal(&d, "team@example.com", PrincipalKind::Group);
    let sub = principal(&d, "sub@example.com", PrincipalKind::Group);
    d.add_member(&admin, all, team).unwrap();
    d.add_member(&admin, all, alice).unwrap();
    d.add_member(&admin, team, sub).unwrap();
    d.add_member(&admin, team, alice).unwrap();
    d.add_member(&admin, sub, bob).unwrap();
    d.add_member(&admin, sub, room).unwrap();
    // The directory refuses to close a loop ...
    assert!(matches!(
        d.add_member(&admin, sub, all),
        Err(DirectoryError::Refused(_))
    ));
    assert!(matches!(
        d.add_member(&admin, team, team),
        Err(DirectoryError::Refused(_))
    ));
    // ... and expansion copes with one written straight into the store.
    d.store().add_member(&admin, sub, all).unwrap();
    let mut members = d.expand_recipients(all).unwrap();
    members.sort();
    let mut expected = vec![alice, bob, room];
    expected.sort();
    assert_eq!(members, expected, "each member once, loop cut");
    assert_eq!(d.expand_recipients(alice).unwrap(), vec![alice]);
    let empty = principal(&d, "empty@example.com", PrincipalKind::Group);
    assert!(d.expand_recipients(empty).unwrap().is_empty());
}
