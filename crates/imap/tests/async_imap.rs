//! Interoperability with an independent Rust client: `async-imap` (with
//! the `imap-proto` parser), on tokio, over TLS from tokio-rustls. Login,
//! select, fetch, store, search, GETQUOTAROOT and a short IDLE woken by a
//! delivery.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_imap::extensions::idle::IdleResponse;
use async_imap::types::QuotaResourceName;
use bulwark_audit::Actor;
use common::*;
use futures_util::TryStreamExt;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_imap_session() {
    let fx = start().await;
    fx.store
        .set_quota(&Actor::local_admin("test"), fx.alice, 1024 * 1024)
        .unwrap();
    fx.deliver(fx.alice, MESSAGE).await;

    let tcp = TcpStream::connect(fx.imaps).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(&fx.client_tls));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let mut client = async_imap::Client::new(tls);
    let greeting = client.read_response().await.unwrap().expect("greeting");
    assert!(
        format!("{:?}", greeting.parsed()).contains("Ok"),
        "{:?}",
        greeting.parsed()
    );
    let mut session = client
        .login(ALICE, PASSWORD)
        .await
        .map_err(|e| e.0)
        .unwrap();

    let caps = session.capabilities().await.unwrap();
    for cap in ["QUOTA", "SORT", "OBJECTID", "BINARY", "IDLE"] {
        assert!(caps.has_str(cap), "{cap}");
    }
    let mailbox = session.select("INBOX").await.unwrap();
    assert_eq!(mailbox.exists, 1);
    assert!(mailbox.uid_validity.is_some());

    let fetched: Vec<_> = session
        .fetch("1", "(FLAGS ENVELOPE BODY.PEEK[])")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(fetched.len(), 1);
    assert_eq!(fetched[0].body(), Some(MESSAGE));
    let subject = fetched[0]
        .envelope()
        .and_then(|e| e.subject.as_deref())
        .unwrap();
    assert_eq!(subject, b"Quarterly report");
    assert_eq!(fetched[0].flags().count(), 0);

    let stored: Vec<_> = session
        .store("1", "+FLAGS (\\Flagged)")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert!(
        stored[0]
            .flags()
            .any(|f| f == async_imap::types::Flag::Flagged)
    );
    let hits = session.search("FLAGGED").await.unwrap();
    assert_eq!(hits.into_iter().collect::<Vec<_>>(), vec![1]);
    assert!(session.search("UNFLAGGED").await.unwrap().is_empty());

    // imap-proto parses the QUOTA responses on its own.
    let (roots, quotas) = session.get_quota_root("INBOX").await.unwrap();
    assert_eq!(roots.len(), 1);
    assert_eq!(roots[0].mailbox_name, "INBOX");
    assert_eq!(roots[0].quota_root_names, vec![String::new()]);
    assert_eq!(quotas.len(), 1);
    let storage = &quotas[0].resources[0];
    assert_eq!(storage.name, QuotaResourceName::Storage);
    assert_eq!(storage.limit, 1024);
    assert_eq!(storage.usage, (MESSAGE.len() as u64).div_ceil(1024));

    // A short IDLE, woken by a delivery.
    let mut idle = session.idle();
    idle.init().await.unwrap();
    let waker = {
        let delivery = fx.delivery.clone();
        let alice = fx.alice;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            tokio::task::spawn_blocking(move || {
                delivery
                    .deliver(&message("wake"), &[alice], 1_751_364_000_000)
                    .unwrap();
            })
            .await
            .unwrap();
        })
    };
    let (wait, _stop) = idle.wait_with_timeout(SOON);
    let woke = wait.await.unwrap();
    waker.await.unwrap();
    match woke {
        IdleResponse::NewData(data) => {
            assert!(
                format!("{:?}", data.parsed()).contains("Exists(2)"),
                "{:?}",
                data.parsed()
            );
        }
        other => panic!("IDLE was not woken: {other:?}"),
    }
    let mut session = idle.done().await.unwrap();
    session.logout().await.unwrap();
}
