//! Per-account session limits: a runaway client cannot hold unbounded
//! sessions of one account, others are unaffected, and slots come back when
//! sessions end.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bulwark_imap::Limits;
use common::{ALICE, BOB, PASSWORD, start_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_per_account_are_limited() {
    let limits = Limits {
        max_sessions_per_account: 2,
        ..Limits::default()
    };
    let fx = start_with(Duration::from_secs(30), limits).await;
    let mut first = fx.login(ALICE).await;
    let second = fx.login(ALICE).await;
    let mut third = fx.tls().await;
    let refused = third.run(&format!("LOGIN {ALICE} \"{PASSWORD}\"")).await;
    assert!(
        refused.last().unwrap().contains("NO [LIMIT]"),
        "{refused:?}"
    );
    // The refusal is not a failed login: the session can still be used.
    assert!(third.run("NOOP").await.last().unwrap().contains("OK"));
    // Another account has its own allowance.
    let _bob = fx.login(BOB).await;
    // Ending a session frees its slot.
    assert!(first.run("LOGOUT").await.iter().any(|l| l.contains("OK")));
    drop(first);
    drop(second);
    let mut freed = None;
    for _ in 0..50 {
        let mut client = fx.tls().await;
        let reply = client.run(&format!("LOGIN {ALICE} \"{PASSWORD}\"")).await;
        if reply.last().unwrap().contains("OK") {
            freed = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(freed.is_some(), "slots are released when sessions end");
}
