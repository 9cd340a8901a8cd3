//! What every HTTP endpoint of Bulwark shares: serving HTTP/1.1 (and, where
//! TLS negotiated it, HTTP/2) on a [`Connection`] with bounded request
//! heads and a graceful stop, and
//! answers built in memory with the headers that keep browsers from
//! guessing (`nosniff`) or caching (`no-store`).

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::server::Connection;

/// An in-memory answer.
pub type Reply = Response<Full<Bytes>>;

/// Bounds on the request head.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// How long a client may take to send a request's headers.
    pub read_timeout: Duration,
    /// Largest request head, bytes (at least hyper's 8 KiB minimum).
    pub max_bytes: usize,
    /// Most header fields.
    pub max_headers: usize,
}

/// Serves HTTP/1.1 on `conn`, answering each request with `respond`
/// (given the client's address), until the client leaves; on shutdown the
/// request in progress is finished first.
pub async fn serve_http1<F, Fut>(conn: Connection, limits: HeadLimits, respond: F)
where
    F: Fn(Request<Incoming>, IpAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    serve(conn, limits, respond, false).await;
}

/// Concurrent requests on one HTTP/2 connection.
const H2_MAX_STREAMS: u32 = 32;

/// Serves HTTP/2 when the TLS handshake chose it by ALPN, otherwise
/// HTTP/1.1 as [`serve_http1`] does.
pub async fn serve_http<F, Fut>(conn: Connection, limits: HeadLimits, respond: F)
where
    F: Fn(Request<Incoming>, IpAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    let h2 = conn
        .stream
        .get_ref()
        .tls_connection()
        .and_then(|tls| tls.alpn_protocol())
        == Some(b"h2".as_slice());
    serve(conn, limits, respond, h2).await;
}

async fn serve<F, Fut>(conn: Connection, limits: HeadLimits, respond: F, h2: bool)
where
    F: Fn(Request<Incoming>, IpAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    let ip = conn.info.peer.ip();
    let protocol = conn.info.protocol.name();
    let Connection {
        stream,
        mut shutdown,
        ..
    } = conn;
    let respond = Arc::new(respond);
    let service = hyper::service::service_fn(move |req| {
        let respond = Arc::clone(&respond);
        async move { Ok::<_, Infallible>(respond(req, ip).await) }
    });
    let io = TokioIo::new(stream);
    // Both kinds of connection stop alike: on shutdown, what is in
    // progress is finished first.
    macro_rules! drive {
        ($http:expr) => {{
            let http = $http;
            tokio::pin!(http);
            tokio::select! {
                result = http.as_mut() => result,
                () = shutdown.wait() => {
                    http.as_mut().graceful_shutdown();
                    http.await
                }
            }
        }};
    }
    let result = if h2 {
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(H2_MAX_STREAMS)
            .max_header_list_size(limits.max_bytes as u32)
            .keep_alive_interval(Some(Duration::from_secs(60)));
        drive!(builder.serve_connection(io, service))
    } else {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.read_timeout)
            .max_buf_size(limits.max_bytes)
            .max_headers(limits.max_headers);
        drive!(builder.serve_connection(io, service))
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, protocol, h2, "HTTP connection ended with an error");
    }
}

/// An answer with `body`, never cached, never content-sniffed.
pub fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// A plain-text answer.
pub fn text(status: StatusCode, body: &'static str) -> Reply {
    reply(status, "text/plain; charset=utf-8", body)
}

/// `response`, closing the connection after it (an unread body or an odd
/// method leaves the connection unusable).
pub fn closing(mut response: Reply) -> Reply {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
