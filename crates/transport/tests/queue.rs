//! The queue runner against a scripted next hop: per-recipient results,
//! retries with backoff, delay and failure notices, expiry, no notice for a
//! notice, and DKIM signatures on what leaves.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use bulwark_audit::Actor;
use common::{Answers, World, eventually, fast, next_hop, next_hop_on};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_recipient_gets_its_own_outcome_and_the_sender_hears_of_failures() {
    let answers: Answers = Arc::new(|address: &str| match address {
        "ok@remote.test" => "250 2.1.5 ok",
        "gone@remote.test" => "550 5.1.1 no such user",
        _ => "550 5.7.1 refused",
    });
    let (port, received) = next_hop(answers).await;
    let world = World::start(port, fast(Duration::from_secs(60), None)).await;
    let id = world.submit(
        "alice@example.com",
        &["ok@remote.test", "gone@remote.test"],
        None,
    );
    world.queue.wake();

    let notice = eventually("a failure notice", || {
        world
            .inbox()
            .into_iter()
            .find(|m| m.contains("Undelivered Mail"))
    })
    .await;
    assert!(notice.starts_with("Return-Path: <>\r\n"), "{notice}");
    assert!(notice.contains("Final-Recipient: rfc822; gone@remote.test"));
    assert!(notice.contains("Status: 5.1.1"));
    assert!(notice.contains("Original-Envelope-Id: env-42"));
    assert!(
        !notice.contains("ok@remote.test"),
        "only failures are reported"
    );
    eventually("the message to leave the queue", || {
        world.store.queued(id).unwrap().is_none().then_some(())
    })
    .await;

    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "one delivery: {got:?}");
    assert_eq!(got[0].0, vec!["ok@remote.test".to_string()]);
    let data = &got[0].1;
    assert!(data.starts_with("DKIM-Signature: "), "{data}");
    assert!(data.contains("d=example.com"));
    assert!(!data.contains("Return-Path"), "not carried onwards");
    assert!(
        data.contains("\n..starts with a dot\n"),
        "dot-stuffed on the wire"
    );
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_failures_are_retried_then_delayed_then_expired() {
    let answers: Answers = Arc::new(|_: &str| "451 4.3.0 try again later");
    let (port, received) = next_hop(answers).await;
    let world = World::start(
        port,
        fast(Duration::from_secs(3), Some(Duration::from_millis(500))),
    )
    .await;
    let id = world.submit("alice@example.com", &["later@remote.test"], None);
    world.queue.wake();

    let delayed = eventually("a delay notice", || {
        world
            .inbox()
            .into_iter()
            .find(|m| m.contains("Delayed Mail"))
    })
    .await;
    assert!(delayed.contains("Action: delayed"));
    assert!(delayed.contains("Will-Retry-Until: "));
    let shown = world.store.queued(id).unwrap().unwrap();
    assert!(shown.recipients[0].attempts >= 2, "{shown:?}");
    assert!(shown.recipients[0].delay_notified);
    assert_eq!(
        shown.recipients[0].last_error.as_deref(),
        Some("451 4.3.0 try again later")
    );

    let failed = eventually("a failure notice after expiry", || {
        world
            .inbox()
            .into_iter()
            .find(|m| m.contains("Undelivered Mail"))
    })
    .await;
    assert!(failed.contains("Status: 4.3.0") || failed.contains("Status: 5."));
    assert!(failed.contains("queued too long"));
    assert!(world.store.queued(id).unwrap().is_none());
    assert_eq!(
        world
            .inbox()
            .iter()
            .filter(|m| m.contains("Delayed Mail"))
            .count(),
        1,
        "the sender is told of the delay once"
    );
    assert!(received.lock().unwrap().is_empty());
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_are_never_bounced_and_never_asked_for_when_refused() {
    let answers: Answers = Arc::new(|_: &str| "550 5.1.1 no such user");
    let (port, _) = next_hop(answers).await;
    let world = World::start(port, fast(Duration::from_secs(60), None)).await;
    // A notice (null sender) that fails, and a message whose recipient
    // asked for no notices.
    let bounce = world.submit("", &["x@remote.test"], None);
    let quiet = world.submit("alice@example.com", &["y@remote.test"], Some("NEVER"));
    world.queue.wake();
    eventually("both to settle", || {
        (world.store.queued(bounce).unwrap().is_none()
            && world.store.queued(quiet).unwrap().is_none())
        .then_some(())
    })
    .await;
    // Give a wrongly queued notice time to arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(world.inbox().is_empty(), "{:?}", world.inbox());
    assert!(world.store.queue(10).unwrap().is_empty());
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_hop_is_retried_until_it_answers() {
    // Reserve a port, then free it: nothing listens there at first.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let world = World::start(port, fast(Duration::from_secs(60), None)).await;
    let id = world.submit("alice@example.com", &["ok@remote.test"], None);
    world.queue.wake();
    eventually("a failed attempt", || {
        let m = world.store.queued(id).unwrap()?;
        (m.recipients[0].attempts >= 1).then_some(())
    })
    .await;
    let error = world.store.queued(id).unwrap().unwrap().recipients[0]
        .last_error
        .clone()
        .unwrap();
    assert!(error.to_lowercase().contains("refused"), "{error}");

    // Now a server appears on that port; the next attempt delivers.
    let answers: Answers = Arc::new(|_: &str| "250 ok");
    let (_, received) = next_hop_on(port, answers).await;
    world
        .store
        .retry_queued(&Actor::local_admin("test"), id, 0)
        .unwrap();
    world.queue.wake();
    eventually("delivery once the hop answers", || {
        world.store.queued(id).unwrap().is_none().then_some(())
    })
    .await;
    assert_eq!(received.lock().unwrap().len(), 1);
    assert!(world.inbox().is_empty(), "no notice for a late success");
    world.stop().await;
}
