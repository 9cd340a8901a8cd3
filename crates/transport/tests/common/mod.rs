//! Shared pieces of the transport tests: a scripted next hop, a small DNS
//! server, and a store with a queue runner.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulwark_audit::Actor;
use bulwark_core::{MailboxRole, PrincipalKind};
use bulwark_directory::{Directory, LimitPolicy};
use bulwark_mail::LocalDelivery;
use bulwark_store::{NewPrincipal, NewQueueRecipient, SqliteBackend, SqliteOptions, Store};
use bulwark_transport::client::TlsPolicy;
use bulwark_transport::dns::Dns;
use bulwark_transport::mta_sts::MtaSts;
use bulwark_transport::queue::{OutboundEnvelope, OutboundQueue, QueueRunner, QueueSettings};
use bulwark_transport::route::{NextHop, Routing};
use mail_auth::hickory_resolver::proto::op::{Message, OpCode, ResponseCode};
use mail_auth::hickory_resolver::proto::rr::rdata::{A, MX, TXT};
use mail_auth::hickory_resolver::proto::rr::{Name, RData, Record};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UdpSocket};

/// What the scripted next hop says to each RCPT, by address.
pub type Answers = Arc<dyn Fn(&str) -> &'static str + Send + Sync>;

/// A minimal SMTP server: answers RCPT per `answers`, records every
/// accepted message (envelope recipients and data).
pub async fn next_hop(answers: Answers) -> (u16, Arc<Mutex<Vec<(Vec<String>, String)>>>) {
    next_hop_on(0, answers).await
}

pub async fn next_hop_on(
    port: u16,
    answers: Answers,
) -> (u16, Arc<Mutex<Vec<(Vec<String>, String)>>>) {
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

pub struct World {
    _dir: tempfile::TempDir,
    pub store: Store,
    pub queue: OutboundQueue,
    pub alice: bulwark_core::PrincipalId,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    runner: Option<tokio::task::JoinHandle<()>>,
}

impl World {
    /// Mail for remote.test goes to 127.0.0.1:`port` in plain text.
    pub async fn start(port: u16, settings: QueueSettings) -> World {
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
        World::start_with(settings, routing, None, None).await
    }

    pub async fn start_with(
        settings: QueueSettings,
        routing: Routing,
        dns: Option<Dns>,
        mta_sts: Option<MtaSts>,
    ) -> World {
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
        let mut runner = QueueRunner::new(
            queue.clone(),
            LocalDelivery::new(directory),
            dns,
            routing,
            Arc::new(rustls::RootCertStore::empty()),
        );
        if let Some(sts) = mta_sts {
            runner = runner.with_mta_sts(sts);
        }
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

    pub fn submit(&self, from: &str, to: &[&str], notify: Option<&str>) -> bulwark_store::QueueId {
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
    pub fn inbox(&self) -> Vec<String> {
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

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(20), self.runner.take().unwrap())
            .await
            .expect("the runner stops")
            .unwrap();
    }
}

pub async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    for _ in 0..400 {
        if let Some(v) = check() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

pub fn fast(lifetime: Duration, delay_notice: Option<Duration>) -> QueueSettings {
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

/// A DNS server on 127.0.0.1 answering from `records` (name with trailing
/// dot, data); other questions get NXDOMAIN.
pub async fn dns_server(records: Vec<(&'static str, RData)>) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let Ok(request) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut response = Message::response(request.header().id(), OpCode::Query);
            response.set_recursion_desired(true);
            response.set_recursion_available(true);
            for query in request.queries() {
                response.add_query(query.clone());
                let asked = query.name().to_ascii().to_ascii_lowercase();
                for (name, data) in &records {
                    if *name == asked && data.record_type() == query.query_type() {
                        response.add_answer(Record::from_rdata(
                            Name::from_ascii(name).unwrap(),
                            60,
                            data.clone(),
                        ));
                    }
                }
            }
            if response.answers().is_empty() {
                response.set_response_code(ResponseCode::NXDomain);
            }
            let _ = socket.send_to(&response.to_vec().unwrap(), from).await;
        }
    });
    addr
}

pub fn txt(text: &str) -> RData {
    RData::TXT(TXT::new(vec![text.to_string()]))
}

pub fn mx(host: &str) -> RData {
    RData::MX(MX::new(10, Name::from_ascii(host).unwrap()))
}

pub fn a(ip: Ipv4Addr) -> RData {
    RData::A(A(ip))
}
