//! The queue runner against a scripted next hop: per-recipient results,
//! retries with backoff, delay and failure notices, expiry, no notice for a
//! notice, and DKIM signatures on what leaves.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulwark_audit::Actor;
use bulwark_core::{MailboxRole, PrincipalKind};
use bulwark_directory::{Directory, LimitPolicy};
use bulwark_mail::LocalDelivery;
use bulwark_store::{NewPrincipal, NewQueueRecipient, SqliteBackend, SqliteOptions, Store};
use bulwark_transport::client::TlsPolicy;
use bulwark_transport::queue::{OutboundEnvelope, OutboundQueue, QueueRunner, QueueSettings};
use bulwark_transport::route::{NextHop, Routing};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// What the scripted next hop says to each RCPT, by address.
type Answers = Arc<dyn Fn(&str) -> &'static str + Send + Sync>;

/// A minimal SMTP server: answers RCPT per `answers`, records every
/// accepted message (envelope recipients and data).
async fn next_hop(answers: Answers) -> (u16, Arc<Mutex<Vec<(Vec<String>, String)>>>) {
    next_hop_on(0, answers).await
}

async fn next_hop_on(port: u16, answers: Answers) -> (u16, Arc<Mutex<Vec<(Vec<String>, String)>>>) {
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(Mutex::new(Vec::new()));
    let store = Arc::clone(&received);
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let answers = Arc::clone(&answers);
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"220 hop.test ESMTP\r\n").await.unwrap();
                let mut accepted = Vec::new();
                while let Ok(Some(line)) = lines.next_line().await {
                    let upper = line.to_ascii_uppercase();
                    let reply: String = if upper.starts_with("EHLO") {
                        "250-hop.test\r\n250 PIPELINING".into()
                    } else if upper.starts_with("MAIL") {
                        accepted.clear();
                        "250 ok".into()
                    } else if upper.starts_with("RCPT") {
                        let address = line
                            .split(['<', '>'])
                            .nth(1)
                            .unwrap_or_default()
                            .to_string();
                        let answer = answers(&address);
                        if answer.starts_with('2') {
                            accepted.push(address);
                        }
                        answer.into()
                    } else if upper == "DATA" {
                        write.write_all(b"354 go on\r\n").await.unwrap();
                        let mut data = String::new();
                        while let Ok(Some(l)) = lines.next_line().await {
                            if l == "." {
                                break;
                            }
                            data.push_str(&l);
                            data.push('\n');
                        }
                        store.lock().unwrap().push((accepted.clone(), data));
                        "250 queued".into()
                    } else if upper == "QUIT" {
                        write.write_all(b"221 bye\r\n").await.unwrap();
                        return;
                    } else {
                        "250 ok".into()
                    };
                    write
                        .write_all(format!("{reply}\r\n").as_bytes())
                        .await
                        .unwrap();
                }
            });
        }
    });
    (port, received)
}

struct World {
    _dir: tempfile::TempDir,
    store: Store,
    queue: OutboundQueue,
    alice: bulwark_core::PrincipalId,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    runner: Option<tokio::task::JoinHandle<()>>,
}

impl World {
    async fn start(port: u16, settings: QueueSettings) -> World {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(Arc::new(
            SqliteBackend::open(dir.path(), SqliteOptions::default()).unwrap(),
        ));
        let admin = Actor::local_admin("test");
        let domain = "example.com".parse().unwrap();
        let id = store.create_domain(&admin, &domain).unwrap();
        store
            .add_dkim_key(
                &admin,
                id,
                &bulwark_transport::dkim::generate_key("sel1").unwrap(),
            )
            .unwrap();
        let alice = store
            .create_principal(
                &admin,
                &NewPrincipal {
                    kind: PrincipalKind::Individual,
                    address: "alice@example.com".parse().unwrap(),
                    display_name: "Alice".into(),
                    password_hash: None,
                    quota_bytes: 0,
                },
            )
            .unwrap();
        let directory = Directory::new(store.clone(), LimitPolicy::default());
        let queue = OutboundQueue::new(store.clone(), settings);
        let mut routing = Routing::default();
        routing.routes.insert(
            "remote.test".into(),
            NextHop {
                host: "127.0.0.1".into(),
                port,
                tls: TlsPolicy::Disabled,
                auth: None,
            },
        );
        let runner = QueueRunner::new(
            queue.clone(),
            LocalDelivery::new(directory),
            None,
            routing,
            Arc::new(rustls::RootCertStore::empty()),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runner = runner.spawn(async move {
            let _ = stopped.await;
        });
        World {
            _dir: dir,
            store,
            queue,
            alice,
            stop: Some(stop),
            runner: Some(runner),
        }
    }

    fn submit(&self, from: &str, to: &[&str], notify: Option<&str>) -> bulwark_store::QueueId {
        let message = format!(
            "Return-Path: <{from}>\r\nFrom: Alice <alice@example.com>\r\nTo: x\r\nSubject: hello\r\n\r\nbody line\r\n.starts with a dot\r\n"
        );
        self.queue
            .submit(
                &Actor::system("test"),
                message.as_bytes(),
                &OutboundEnvelope {
                    return_path: from.into(),
                    envelope_id: Some("env-42".into()),
                    return_full: false,
                    recipients: to
                        .iter()
                        .map(|a| NewQueueRecipient {
                            address: (*a).into(),
                            notify: notify.map(Into::into),
                            original_recipient: None,
                        })
                        .collect(),
                },
            )
            .unwrap()
    }

    /// Messages in alice's Inbox, as text.
    fn inbox(&self) -> Vec<String> {
        let Some(inbox) = self
            .store
            .mailboxes(self.alice)
            .unwrap()
            .into_iter()
            .find(|m| m.role == Some(MailboxRole::Inbox))
        else {
            return Vec::new();
        };
        self.store
            .messages(self.alice, inbox.id)
            .unwrap()
            .into_iter()
            .map(|entry| {
                let email = self.store.email(self.alice, entry.email).unwrap().unwrap();
                String::from_utf8(self.store.read_blob(&email.blob).unwrap()).unwrap()
            })
            .collect()
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(20), self.runner.take().unwrap())
            .await
            .expect("the runner stops")
            .unwrap();
    }
}

async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    for _ in 0..400 {
        if let Some(v) = check() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn fast(lifetime: Duration, delay_notice: Option<Duration>) -> QueueSettings {
    QueueSettings {
        hostname: "mx.example.com".into(),
        lifetime,
        retry_initial: Duration::from_millis(200),
        retry_max: Duration::from_millis(400),
        delay_notice_after: delay_notice,
        connect_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(5),
        data_timeout: Duration::from_secs(5),
        ..QueueSettings::default()
    }
}

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
