//! The built-in admin listener, spoken to with raw HTTP over TCP.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bulwark_server::{Metrics, Protocol, Server};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn admin_server(healthy: Arc<AtomicBool>) -> (Running, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let mut server = Server::new(options(), None, Arc::clone(&metrics));
    server.register(Protocol::Smtp, Arc::new(LineHandler));
    server.set_health_check(Arc::new(move || {
        if healthy.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err("database \"main\" unreachable".into())
        }
    }));
    let running = start(
        server,
        &[listener(Protocol::Admin), listener(Protocol::Smtp)],
    )
    .await;
    (running, metrics)
}

#[tokio::test]
async fn health_reports_the_check() {
    let healthy = Arc::new(AtomicBool::new(true));
    let (running, _metrics) = admin_server(Arc::clone(&healthy)).await;
    let addr = running.addr(Protocol::Admin);

    let response = http_get(addr, "/health").await;
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert_eq!(header(&response, "content-type"), Some("application/json"));
    assert_eq!(body(&response), r#"{"status":"ok"}"#);

    healthy.store(false, Ordering::SeqCst);
    let response = http_get(addr, "/health").await;
    assert!(response.starts_with("HTTP/1.1 503 "), "{response}");
    assert_eq!(
        body(&response),
        r#"{"status":"error","error":"database \"main\" unreachable"}"#
    );
    running.stop().await;
}

#[tokio::test]
async fn health_without_a_check_is_ok() {
    let metrics = Arc::new(Metrics::new());
    let server = Server::new(options(), None, metrics);
    let running = start(server, &[listener(Protocol::Admin)]).await;
    let response = http_get(running.addr(Protocol::Admin), "/health?verbose=1").await;
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert_eq!(body(&response), r#"{"status":"ok"}"#);
    running.stop().await;
}

#[tokio::test]
async fn metrics_in_prometheus_format() {
    let (running, metrics) = admin_server(Arc::new(AtomicBool::new(true))).await;
    let mut client = connect(running.addr(Protocol::Smtp)).await;
    assert!(client.line().await.is_some());
    let events = metrics
        .counter("bulwark_test_events_total", "Events seen by the test.")
        .unwrap();
    events.add(7);

    let response = http_get(running.addr(Protocol::Admin), "/metrics").await;
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert_eq!(
        header(&response, "content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = body(&response);
    assert!(
        text.contains(&format!(
            "bulwark_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    assert!(text.contains("\nbulwark_up 1\n"), "{text}");
    assert!(
        text.contains("# TYPE bulwark_connections_accepted_total counter\n"),
        "{text}"
    );
    assert!(
        text.contains("bulwark_connections_accepted_total{protocol=\"smtp\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("bulwark_connections_active{protocol=\"smtp\"} 1\n"),
        "{text}"
    );
    // This request itself is an admin connection.
    assert!(
        text.contains("bulwark_connections_active{protocol=\"admin\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("bulwark_tls_handshake_failures_total{protocol=\"imaps\"} 0\n"),
        "{text}"
    );
    assert!(text.contains("\nbulwark_test_events_total 7\n"), "{text}");
    // Every sample line is `name{labels} value` or `name value`.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (_, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<u64>().is_ok(), "{line}");
    }
    running.stop().await;
}

#[tokio::test]
async fn unknown_paths_are_404() {
    let (running, _metrics) = admin_server(Arc::new(AtomicBool::new(true))).await;
    let addr = running.addr(Protocol::Admin);
    for path in [
        "/",
        "/healthz",
        "/metrics/",
        "/../etc/passwd",
        "/health/../metrics",
    ] {
        let response = http_get(addr, path).await;
        assert!(response.starts_with("HTTP/1.1 404 "), "{path}: {response}");
    }
    // An absolute-form target naming another host is not followed.
    let response = http_raw(addr, "GET http://example.com/elsewhere HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 404 "), "{response}");
    running.stop().await;
}

#[tokio::test]
async fn other_methods_are_405() {
    let (running, _metrics) = admin_server(Arc::new(AtomicBool::new(true))).await;
    let addr = running.addr(Protocol::Admin);
    for method in ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"] {
        let response = http_raw(
            addr,
            &format!("{method} /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(
            response.starts_with("HTTP/1.1 405 "),
            "{method}: {response}"
        );
        assert_eq!(header(&response, "allow"), Some("GET, HEAD"));
    }
    // CONNECT asks for a tunnel: never.
    let response = http_raw(
        addr,
        "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    )
    .await;
    assert!(
        response.starts_with("HTTP/1.1 405 ") || response.starts_with("HTTP/1.1 400 "),
        "{response}"
    );
    running.stop().await;
}

#[tokio::test]
async fn head_has_no_body() {
    let (running, _metrics) = admin_server(Arc::new(AtomicBool::new(true))).await;
    let response = http_raw(
        running.addr(Protocol::Admin),
        "HEAD /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert_eq!(body(&response), "");
    running.stop().await;
}

#[tokio::test]
async fn request_bodies_are_refused() {
    let (running, _metrics) = admin_server(Arc::new(AtomicBool::new(true))).await;
    let addr = running.addr(Protocol::Admin);
    let response = http_raw(
        addr,
        "GET /health HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 413 "), "{response}");
    assert_eq!(header(&response, "connection"), Some("close"));
    let response = http_raw(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 413 "), "{response}");
    // An explicit empty body is fine.
    let response = http_raw(
        addr,
        "GET /health HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
    running.stop().await;
}

#[tokio::test]
async fn keep_alive_serves_several_requests() {
    let (running, _metrics) = admin_server(Arc::new(AtomicBool::new(true))).await;
    let mut stream = TcpStream::connect(running.addr(Protocol::Admin))
        .await
        .unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\nGET /nope HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tokio::time::timeout(SOON, stream.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.contains("HTTP/1.1 404 "), "{response}");
    running.stop().await;
}

#[tokio::test]
async fn oversized_headers_are_refused() {
    let (running, _metrics) = admin_server(Arc::new(AtomicBool::new(true))).await;
    let big = "a".repeat(64 * 1024);
    let mut stream = TcpStream::connect(running.addr(Protocol::Admin))
        .await
        .unwrap();
    // The server may close before taking everything; only the answer matters.
    let _ = stream
        .write_all(
            format!("GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: {big}\r\n\r\n").as_bytes(),
        )
        .await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(SOON, stream.read_to_end(&mut response))
        .await
        .unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(!response.starts_with("HTTP/1.1 200"), "{response}");
    running.stop().await;
}

#[tokio::test]
async fn shutdown_closes_idle_admin_connections() {
    let (mut running, _metrics) = admin_server(Arc::new(AtomicBool::new(true))).await;
    let mut stream = TcpStream::connect(running.addr(Protocol::Admin))
        .await
        .unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    stream.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    running.shutdown();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(SOON, stream.read_to_end(&mut rest))
        .await
        .expect("closed on shutdown");
    tokio::time::timeout(SOON, running.task)
        .await
        .unwrap()
        .unwrap();
}
