//! The built-in `admin` listener: plain HTTP/1.1 with two read-only
//! resources.
//!
//! * `GET /health`: `200 {"status":"ok"}`, or `503` with the health check's
//!   error.
//! * `GET /metrics`: `200`, [`Metrics::render`] in the Prometheus text
//!   format.
//!
//! Anything else is `404`; methods other than `GET` and `HEAD` get `405`.
//! Request bodies are never read: a request that announces one gets `413`
//! and the connection is closed. Headers are capped in size and count and
//! must arrive within [`HEADER_READ_TIMEOUT`]. Responses are built in memory;
//! nothing is read from disk and nothing is forwarded anywhere.

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::{Body as _, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};

use crate::http::{HeadLimits, Reply, closing, reply, serve_http1, text};
use crate::metrics::Metrics;
use crate::server::{Connection, ConnectionHandler, HealthCheck};

/// How long a client may take to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the health check may take before `/health` reports failure.
pub const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest request head accepted, in bytes (hyper's minimum buffer).
const MAX_HEAD_BYTES: usize = 8 * 1024;

/// Most header fields accepted in one request.
const MAX_HEADERS: usize = 32;

/// The reply to a connection refused for load.
const BUSY_REPLY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\nretry-after: 1\r\n\r\n";

struct State {
    metrics: Arc<Metrics>,
    health: Option<HealthCheck>,
}

/// The admin endpoint as a [`ConnectionHandler`]. [`crate::Server`] installs
/// one for `admin` listeners unless another handler is registered.
#[derive(Clone)]
pub struct AdminHandler {
    state: Arc<State>,
}

impl std::fmt::Debug for AdminHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminHandler")
            .field("health_check", &self.state.health.is_some())
            .finish()
    }
}

impl AdminHandler {
    /// An endpoint reporting `metrics` and, on `/health`, the result of
    /// `health` (always ok when `None`).
    pub fn new(metrics: Arc<Metrics>, health: Option<HealthCheck>) -> Self {
        AdminHandler {
            state: Arc::new(State { metrics, health }),
        }
    }
}

impl ConnectionHandler for AdminHandler {
    fn handle(&self, conn: Connection) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        Box::pin(serve(conn, Arc::clone(&self.state)))
    }

    fn busy_reply(&self) -> Option<&'static [u8]> {
        Some(BUSY_REPLY)
    }
}

async fn serve(conn: Connection, state: Arc<State>) {
    let limits = HeadLimits {
        read_timeout: HEADER_READ_TIMEOUT,
        max_bytes: MAX_HEAD_BYTES,
        max_headers: MAX_HEADERS,
    };
    serve_http1(conn, limits, move |req, _ip| {
        let state = Arc::clone(&state);
        async move { respond(&state, req).await }
    })
    .await;
}

async fn respond(state: &State, req: Request<Incoming>) -> Reply {
    let has_body = !req.body().is_end_stream();
    let mut response = if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        response
    } else if has_body {
        text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request bodies are not accepted\n",
        )
    } else {
        match req.uri().path() {
            "/health" => health(state).await,
            "/metrics" => reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                state.metrics.render(),
            ),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    };
    if has_body || response.status() == StatusCode::METHOD_NOT_ALLOWED {
        // An unread body leaves the connection unusable; a strange method
        // (CONNECT asks for a tunnel) ends it too.
        response = closing(response);
    }
    response
}

async fn health(state: &State) -> Reply {
    let result = match &state.health {
        None => Ok(()),
        Some(check) => {
            let check = Arc::clone(check);
            match tokio::time::timeout(
                HEALTH_CHECK_TIMEOUT,
                tokio::task::spawn_blocking(move || check()),
            )
            .await
            {
                Ok(Ok(result)) => result,
                Ok(Err(e)) => Err(format!("health check failed: {e}")),
                Err(_) => Err("health check timed out".to_owned()),
            }
        }
    };
    match result {
        Ok(()) => reply(StatusCode::OK, "application/json", r#"{"status":"ok"}"#),
        Err(error) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "application/json",
            format!(r#"{{"status":"error","error":{}}}"#, json_string(&error)),
        ),
    }
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escaping() {
        assert_eq!(json_string("a\"b\\c\nd\u{1}"), r#""a\"b\\c\nd\u0001""#);
        assert_eq!(json_string("plain"), r#""plain""#);
    }
}
