//! MTA-STS end to end: policies found through DNS, fetched over verified
//! HTTPS, and honoured by MX delivery (no plain text and no unlisted MX
//! host under `enforce`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::Ipv4Addr;
use std::sync::Arc;

use bulwark_transport::dns::Dns;
use bulwark_transport::mta_sts::{Mode, MtaSts};
use bulwark_transport::route::Routing;
use common::{Answers, World, a, dns_server, eventually, fast, mx, next_hop, txt};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const LOCAL: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// An HTTPS server for `mta-sts.*.test` answering each host's policy;
/// returns its port and the root that verifies it.
async fn policy_server(
    policies: Vec<(&'static str, &'static str)>,
) -> (u16, rustls::RootCertStore) {
    let names: Vec<String> = policies.iter().map(|(host, _)| host.to_string()).collect();
    let generated = rcgen::generate_simple_self_signed(names).unwrap();
    let cert = CertificateDer::from(generated.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(generated.key_pair.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let policies = policies.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let request = String::from_utf8_lossy(&request).to_ascii_lowercase();
                let policy = policies
                    .iter()
                    .find(|(host, _)| request.contains(&format!("host: {host}\r\n")))
                    .map(|(_, p)| *p);
                let response = match policy {
                    Some(body) if request.starts_with("get /.well-known/mta-sts.txt ") => format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    ),
                    _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_string(),
                };
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    (port, roots)
}

const ENFORCE_MATCHING: &str = "version: STSv1\nmode: enforce\nmx: mx.sts.test\nmax_age: 600\n";
const ENFORCE_OTHER: &str = "version: STSv1\nmode: enforce\nmx: *.elsewhere.test\nmax_age: 600\n";
const TESTING: &str = "version: STSv1\nmode: testing\nmx: mx.testing.test\nmax_age: 600\n";

async fn setup() -> (MtaSts, Dns) {
    let (https_port, roots) = policy_server(vec![
        ("mta-sts.sts.test", ENFORCE_MATCHING),
        ("mta-sts.strict.test", ENFORCE_OTHER),
        ("mta-sts.testing.test", TESTING),
    ])
    .await;
    let mut records = Vec::new();
    for domain in ["sts", "strict", "testing", "open"] {
        let (apex, mx_host, sts_host, record) = match domain {
            "sts" => (
                "sts.test.",
                "mx.sts.test.",
                "mta-sts.sts.test.",
                "_mta-sts.sts.test.",
            ),
            "strict" => (
                "strict.test.",
                "mx.strict.test.",
                "mta-sts.strict.test.",
                "_mta-sts.strict.test.",
            ),
            "testing" => (
                "testing.test.",
                "mx.testing.test.",
                "mta-sts.testing.test.",
                "_mta-sts.testing.test.",
            ),
            _ => (
                "open.test.",
                "mx.open.test.",
                "mta-sts.open.test.",
                "_mta-sts.open.test.",
            ),
        };
        records.push((apex, mx(mx_host)));
        records.push((mx_host, a(LOCAL)));
        if domain != "open" {
            records.push((sts_host, a(LOCAL)));
            records.push((record, txt("v=STSv1; id=20261125")));
        }
    }
    let dns = Dns::with_servers(&[dns_server(records).await]).unwrap();
    (MtaSts::new(dns.clone(), Arc::new(roots), https_port), dns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_are_found_fetched_and_cached() {
    let (sts, _) = setup().await;
    let policy = sts.policy("sts.test").await.expect("a policy");
    assert_eq!(policy.mode, Mode::Enforce);
    assert!(policy.allows("mx.sts.test"));
    assert_eq!(
        sts.policy("testing.test").await.unwrap().mode,
        Mode::Testing
    );
    assert!(
        sts.policy("open.test").await.is_none(),
        "no record, no policy"
    );
    // Cached: the same id does not fetch again, and still answers.
    assert_eq!(sts.policy("STS.test.").await.unwrap(), policy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforce_refuses_plain_text_and_unlisted_hosts() {
    let (sts, dns) = setup().await;
    let answers: Answers = Arc::new(|_: &str| "250 ok");
    // A next hop without STARTTLS, where every MX points.
    let (port, received) = next_hop(answers).await;
    let mut settings = fast(std::time::Duration::from_secs(60), None);
    settings.mx_port = port;
    let world = World::start_with(settings, Routing::default(), Some(dns), Some(sts)).await;

    let enforced = world.submit("alice@example.com", &["x@sts.test"], None);
    let unlisted = world.submit("alice@example.com", &["x@strict.test"], None);
    let testing = world.submit("alice@example.com", &["x@testing.test"], None);
    let open = world.submit("alice@example.com", &["x@open.test"], None);
    world.queue.wake();

    // Testing mode and no policy: delivered as usual (plain text here).
    eventually("delivery without enforcement", || {
        (world.store.queued(testing).unwrap().is_none()
            && world.store.queued(open).unwrap().is_none())
        .then_some(())
    })
    .await;
    let error_of = |id| {
        let m = world.store.queued(id).unwrap()?;
        m.recipients[0].last_error.clone()
    };
    let plain = eventually("a refused plain-text attempt", || error_of(enforced)).await;
    assert!(plain.to_ascii_uppercase().contains("TLS"), "{plain}");
    let other = eventually("a refused unlisted host", || error_of(unlisted)).await;
    assert!(other.contains("MTA-STS"), "{other}");

    let got = received.lock().unwrap().clone();
    let recipients: Vec<String> = got.iter().flat_map(|(r, _)| r.clone()).collect();
    assert!(recipients.contains(&"x@testing.test".to_string()));
    assert!(recipients.contains(&"x@open.test".to_string()));
    assert!(
        !recipients
            .iter()
            .any(|r| r.ends_with("sts.test") || r.ends_with("strict.test")),
        "nothing went out against an enforced policy: {recipients:?}"
    );
    world.stop().await;
}
