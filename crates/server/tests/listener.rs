//! The listener runtime over real sockets on 127.0.0.1.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bulwark_server::{Metrics, Protocol, Server, TlsError};
use common::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

fn server_with(
    options: bulwark_server::ServerOptions,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> (Server, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let mut server = Server::new(options, tls, Arc::clone(&metrics));
    for protocol in [Protocol::Smtp, Protocol::Imap, Protocol::Imaps] {
        server.register(protocol, Arc::new(LineHandler));
    }
    (server, metrics)
}

#[tokio::test]
async fn implicit_tls_handshake_then_handler() {
    let cert = test_cert();
    let (server, metrics) = server_with(options(), Some(Arc::clone(&cert.server)));
    let running = start(server, &[listener(Protocol::Imaps)]).await;

    let tcp = TcpStream::connect(running.addr(Protocol::Imaps))
        .await
        .unwrap();
    let tls = tls_connect(&cert.client, tcp).await.unwrap();
    let mut client = Client::new(tls);
    assert_eq!(client.line().await.as_deref(), Some("HELLO imaps tls=true"));
    assert_eq!(client.command("PING").await.as_deref(), Some("PONG"));
    assert_eq!(client.command("QUIT").await.as_deref(), Some("BYE"));
    assert_eq!(metrics.accepted(Protocol::Imaps), 1);
    assert_eq!(metrics.tls_handshake_failures(Protocol::Imaps), 0);
    running.stop().await;
}

#[tokio::test]
async fn failed_handshake_closes_and_is_counted() {
    let cert = test_cert();
    let (server, metrics) = server_with(options(), Some(Arc::clone(&cert.server)));
    let running = start(server, &[listener(Protocol::Imaps)]).await;

    // A plaintext client on a TLS port.
    let mut client = connect(running.addr(Protocol::Imaps)).await;
    client.send("a1 LOGIN user password").await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(SOON, client.stream.read_to_end(&mut rest))
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&rest).contains("HELLO"));
    assert!(eventually(|| metrics.tls_handshake_failures(Protocol::Imaps) == 1).await);
    running.stop().await;
}

#[tokio::test]
async fn slow_handshake_times_out() {
    let cert = test_cert();
    let mut opts = options();
    opts.tls_handshake_timeout = Duration::from_millis(200);
    let (server, metrics) = server_with(opts, Some(Arc::clone(&cert.server)));
    let running = start(server, &[listener(Protocol::Imaps)]).await;

    // Connects and never sends a ClientHello.
    let mut silent = TcpStream::connect(running.addr(Protocol::Imaps))
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(SOON, silent.read_to_end(&mut buf))
        .await
        .expect("closed by the server");
    assert!(eventually(|| metrics.tls_handshake_failures(Protocol::Imaps) == 1).await);
    running.stop().await;
}

#[tokio::test]
async fn starttls_upgrades_a_plain_connection() {
    let cert = test_cert();
    let (server, metrics) = server_with(options(), Some(Arc::clone(&cert.server)));
    let running = start(server, &[listener(Protocol::Imap)]).await;

    let mut client = connect(running.addr(Protocol::Imap)).await;
    assert_eq!(client.line().await.as_deref(), Some("HELLO imap tls=false"));
    assert_eq!(client.command("PING").await.as_deref(), Some("PONG"));
    assert_eq!(client.command("STARTTLS").await.as_deref(), Some("GO"));
    assert!(client.stream.buffer().is_empty());
    let tls = tls_connect(&cert.client, client.stream.into_inner())
        .await
        .unwrap();
    let mut client = Client::new(tls);
    assert_eq!(client.line().await.as_deref(), Some("HELLO imap tls=true"));
    assert_eq!(client.command("PING").await.as_deref(), Some("PONG"));
    // A second STARTTLS is refused: the connection already uses TLS.
    assert_eq!(client.command("STARTTLS").await.as_deref(), Some("NOTLS"));
    assert_eq!(client.command("QUIT").await.as_deref(), Some("BYE"));
    assert_eq!(metrics.tls_handshake_failures(Protocol::Imap), 0);
    running.stop().await;
}

#[tokio::test]
async fn starttls_without_certificate_is_unavailable() {
    let (server, _metrics) = server_with(options(), None);
    let running = start(server, &[listener(Protocol::Imap)]).await;
    let mut client = connect(running.addr(Protocol::Imap)).await;
    assert_eq!(client.line().await.as_deref(), Some("HELLO imap tls=false"));
    assert_eq!(client.command("STARTTLS").await.as_deref(), Some("NOTLS"));
    running.stop().await;
}

#[tokio::test]
async fn implicit_tls_listener_without_certificate_is_a_bind_error() {
    let (server, _metrics) = server_with(options(), None);
    let err = server
        .bind(&[listener(Protocol::Imaps)])
        .await
        .err()
        .unwrap();
    let message = err.to_string();
    assert!(
        message.contains("imaps") && message.contains("127.0.0.1:0"),
        "{message}"
    );
}

#[tokio::test]
async fn bind_failure_names_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let (server, _metrics) = server_with(options(), None);
    let listeners = [
        listener(Protocol::Smtp),
        bulwark_server::ListenerConfig {
            protocol: Protocol::Imap,
            bind: addr,
        },
    ];
    let err = server.bind(&listeners).await.err().unwrap();
    let message = err.to_string();
    assert!(
        message.contains(&addr.to_string()) && message.contains("imap"),
        "{message}"
    );
}

#[tokio::test]
async fn per_ip_limit_refuses_with_busy_reply() {
    let mut opts = options();
    opts.max_connections_per_ip = 2;
    let (server, metrics) = server_with(opts, None);
    let running = start(server, &[listener(Protocol::Smtp)]).await;
    let addr = running.addr(Protocol::Smtp);

    let mut first = connect(addr).await;
    assert_eq!(first.line().await.as_deref(), Some("HELLO smtp tls=false"));
    let mut second = connect(addr).await;
    assert_eq!(second.line().await.as_deref(), Some("HELLO smtp tls=false"));

    let mut third = connect(addr).await;
    assert_eq!(third.line().await.as_deref(), Some("BUSY try later"));
    assert_eq!(third.line().await, None, "closed after the busy reply");
    assert_eq!(metrics.refused(Protocol::Smtp), 1);
    assert!(
        metrics
            .render()
            .contains("bulwark_connections_refused_total{protocol=\"smtp\",limit=\"per_ip\"} 1\n")
    );

    // Closing one frees its slot.
    assert_eq!(first.command("QUIT").await.as_deref(), Some("BYE"));
    drop(first);
    assert!(eventually(|| metrics.active(Protocol::Smtp) == 1).await);
    let mut fourth = connect(addr).await;
    assert_eq!(fourth.line().await.as_deref(), Some("HELLO smtp tls=false"));
    assert_eq!(second.command("PING").await.as_deref(), Some("PONG"));
    running.stop().await;
}

#[tokio::test]
async fn global_limit_refuses_across_listeners_but_not_admin() {
    let mut opts = options();
    opts.max_connections = 1;
    let (server, metrics) = server_with(opts, None);
    let running = start(
        server,
        &[
            listener(Protocol::Smtp),
            listener(Protocol::Imap),
            listener(Protocol::Admin),
        ],
    )
    .await;

    let mut first = connect(running.addr(Protocol::Smtp)).await;
    assert_eq!(first.line().await.as_deref(), Some("HELLO smtp tls=false"));
    let mut refused = connect(running.addr(Protocol::Imap)).await;
    assert_eq!(refused.line().await.as_deref(), Some("BUSY try later"));
    assert_eq!(refused.line().await, None);
    assert_eq!(metrics.refused(Protocol::Imap), 1);
    assert!(
        metrics
            .render()
            .contains("bulwark_connections_refused_total{protocol=\"imap\",limit=\"global\"} 1\n")
    );

    // The admin plane has its own allowance.
    let response = common::http_get(running.addr(Protocol::Admin), "/health").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(first.command("PING").await.as_deref(), Some("PONG"));
    running.stop().await;
}

#[tokio::test]
async fn idle_timeout_closes_a_silent_connection() {
    let mut opts = options();
    opts.idle_timeout = Duration::from_millis(200);
    let (server, metrics) = server_with(opts, None);
    let running = start(server, &[listener(Protocol::Smtp)]).await;
    let addr = running.addr(Protocol::Smtp);

    // A talking client outlives the timeout several times over.
    let mut talker = connect(addr).await;
    assert!(talker.line().await.is_some());
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(talker.command("PING").await.as_deref(), Some("PONG"));
    }

    let started = Instant::now();
    let mut silent = connect(addr).await;
    assert!(silent.line().await.is_some());
    assert_eq!(silent.line().await, None, "closed by the idle timeout");
    assert!(started.elapsed() >= Duration::from_millis(150));
    // The talker has been silent since its last PING: it goes the same way.
    assert_eq!(talker.line().await, None);
    assert!(eventually(|| metrics.active(Protocol::Smtp) == 0).await);
    running.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_lets_a_session_finish() {
    let (server, metrics) = server_with(options(), None);
    let mut running = start(server, &[listener(Protocol::Smtp)]).await;
    let addr = running.addr(Protocol::Smtp);

    let mut idle = connect(addr).await;
    assert!(idle.line().await.is_some());
    let mut busy = connect(addr).await;
    assert!(busy.line().await.is_some());
    assert_eq!(busy.command("SLOW 700").await.as_deref(), Some("WORKING"));

    running.shutdown();

    // A waiting session is told at once.
    assert_eq!(idle.line().await.as_deref(), Some("SHUTDOWN"));
    assert_eq!(idle.line().await, None);

    // New connections are refused once the listener is closed.
    let refused = eventually_async(|| async {
        match TcpStream::connect(addr).await {
            Err(_) => true,
            Ok(stream) => {
                // Accepted just before shutdown was seen: it is told to go.
                let mut client = common::Client::new(stream);
                let _ = client.line().await;
                false
            }
        }
    })
    .await;
    assert!(refused, "listener still accepting after shutdown");

    // The command in flight completes, then the session says goodbye.
    assert_eq!(busy.line().await.as_deref(), Some("DONE"));
    assert_eq!(busy.line().await.as_deref(), Some("SHUTDOWN"));
    assert_eq!(busy.line().await, None);

    tokio::time::timeout(SOON, running.task)
        .await
        .expect("serve returns")
        .unwrap();
    assert_eq!(metrics.active(Protocol::Smtp), 0);
}

async fn eventually_async<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + SOON;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn shutdown_grace_period_ends_stuck_sessions() {
    let mut opts = options();
    opts.shutdown_grace = Duration::from_millis(300);
    let (server, metrics) = server_with(opts, None);
    let mut running = start(server, &[listener(Protocol::Smtp)]).await;

    let mut stuck = connect(running.addr(Protocol::Smtp)).await;
    assert!(stuck.line().await.is_some());
    assert_eq!(
        stuck.command("SLOW 60000").await.as_deref(),
        Some("WORKING")
    );
    running.shutdown();
    tokio::time::timeout(SOON, running.task)
        .await
        .expect("serve returns after the grace period")
        .unwrap();
    assert_eq!(
        stuck.line().await,
        None,
        "closed when the grace period ran out"
    );
    assert_eq!(metrics.active(Protocol::Smtp), 0);
}

#[tokio::test]
async fn a_panicking_handler_releases_its_slot() {
    let mut opts = options();
    opts.max_connections_per_ip = 1;
    let (server, metrics) = server_with(opts, None);
    let running = start(server, &[listener(Protocol::Smtp)]).await;
    let addr = running.addr(Protocol::Smtp);

    let mut client = connect(addr).await;
    assert!(client.line().await.is_some());
    client.send("PANIC").await;
    assert_eq!(client.line().await, None);
    assert!(eventually(|| metrics.active(Protocol::Smtp) == 0).await);
    let mut again = connect(addr).await;
    assert_eq!(again.line().await.as_deref(), Some("HELLO smtp tls=false"));
    running.stop().await;
}

#[tokio::test]
async fn protocol_without_handler_is_not_bound() {
    let (server, _metrics) = server_with(options(), None);
    let bound = server
        .bind(&[
            listener(Protocol::Pop3),
            listener(Protocol::Smtp),
            listener(Protocol::Admin),
            listener(Protocol::Https),
        ])
        .await
        .unwrap();
    let protocols: Vec<Protocol> = bound.local_addrs().iter().map(|(p, _)| *p).collect();
    assert_eq!(protocols, [Protocol::Smtp, Protocol::Admin]);
    assert!(bound.local_addrs().iter().all(|(_, a)| a.port() != 0));
}

#[tokio::test]
async fn run_serves_until_shutdown() {
    let (server, _metrics) = server_with(options(), None);
    // Nothing to connect to (port unknown): this checks run's shape and that
    // it returns when shutdown resolves.
    tokio::time::timeout(
        SOON,
        server.run(
            &[listener(Protocol::Smtp)],
            tokio::time::sleep(Duration::from_millis(50)),
        ),
    )
    .await
    .expect("run returns")
    .unwrap();
}

#[test]
fn tls_config_errors_name_the_files() {
    let cert = test_cert();
    let other = test_cert();
    // The key of another certificate.
    let err = bulwark_server::tls::load_server_config(&cert.cert_path, &other.key_path)
        .err()
        .unwrap();
    assert!(matches!(err, TlsError::Rejected { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&*cert.cert_path.to_string_lossy()),
        "{message}"
    );
    assert!(
        message.contains(&*other.key_path.to_string_lossy()),
        "{message}"
    );
    // A certificate where the key should be.
    let err = bulwark_server::tls::load_server_config(&cert.cert_path, &cert.cert_path)
        .err()
        .unwrap();
    assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err:?}");
    assert!(err.to_string().contains(&*cert.cert_path.to_string_lossy()));
}

#[tokio::test]
async fn an_ended_session_gives_its_slot_back_before_closing() {
    let mut opts = options();
    opts.max_connections_per_ip = 1;
    let (server, _metrics) = server_with(opts, None);
    let running = start(server, &[listener(Protocol::Smtp)]).await;
    let addr = running.addr(Protocol::Smtp);

    let mut first = connect(addr).await;
    assert!(first.line().await.is_some());
    // Still open and counted: a second connection is refused.
    let mut refused = connect(addr).await;
    assert_eq!(refused.line().await.as_deref(), Some("BUSY try later"));
    // Its session ends, the socket lingers: a reconnect is let in at once.
    assert_eq!(first.command("LINGER").await.as_deref(), Some("BYE"));
    let mut again = connect(addr).await;
    assert_eq!(again.line().await.as_deref(), Some("HELLO smtp tls=false"));
    running.stop().await;
}
