//! The HTTPS front end (listener `https`).
//!
//! # What this crate owns
//!
//! * Client autoconfiguration: Thunderbird's autoconfig
//!   (`/.well-known/autoconfig/mail/config-v1.1.xml`, and
//!   `/mail/config-v1.1.xml` for the `autoconfig.` host form), Outlook's
//!   POX Autodiscover (`POST /autodiscover/autodiscover.xml`) and an Apple
//!   configuration profile for the authenticated user (`GET /mobileconfig`,
//!   Basic authentication through the directory's rate limits and bans).
//! * The MTA-STS policy of our domains (`/.well-known/mta-sts.txt`).
//! * The door to CalDAV and CardDAV: `/.well-known/caldav` and
//!   `/.well-known/carddav` answer with a fixed redirect to `/dav/`, and
//!   everything under `/dav/` is authenticated here (Basic, through the
//!   directory's rate limits and bans, with a short-lived cache of proven
//!   credentials so a sync of thousands of requests does not run Argon2
//!   for each), its body read with a cap, then handed to `bulwark-dav`.
//! * The request discipline every later web route (DAV, JMAP) inherits:
//!   a fixed table of exact paths ([`Route`]), everything else 404; bodies
//!   refused where none is expected and capped where one is; XML read
//!   without DTDs or entity expansion ([`xml`]).
//!
//! # What it must not do
//!
//! * Proxy, forward or redirect a request anywhere, or build a URL, host or
//!   path from request data and follow it (DESIGN.md, the 2021 lessons).
//! * Serve files from disk: every answer is generated in memory.
//! * Tell an unknown account from a wrong password, or say whether an
//!   address exists (Autodiscover answers any address of our domains the
//!   same way).
//!
//! HTTP/2 is offered by ALPN on this listener only.

mod auth_cache;
pub mod profile;
pub mod xml;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use bulwark_core::EmailAddress;
use bulwark_dav::DavRequest;
use bulwark_directory::{AuthError, Directory};
use bulwark_server::http::{self, HeadLimits, Reply, closing, serve_http};
use bulwark_server::{Connection, ConnectionHandler};
use bulwark_store::Principal;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body as _, Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};

pub use bulwark_dav::{Dav, MailOut};
pub use profile::ClientSettings;

/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head, bytes.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most header fields in one request.
const MAX_HEADERS: usize = 64;
/// Largest Autodiscover request body; real ones are a few hundred bytes.
pub const MAX_AUTODISCOVER_BODY: usize = 16 * 1024;
/// The whole body must arrive within this.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(20);

const BUSY_REPLY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\nretry-after: 1\r\n\r\n";

/// The routes this front end serves. Paths match exactly; nothing is
/// derived from a path but the choice of route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Thunderbird autoconfig.
    Autoconfig,
    /// Outlook POX Autodiscover.
    Autodiscover,
    /// Apple configuration profile.
    MobileConfig,
    /// The MTA-STS policy of our domains (RFC 8461), served on the
    /// `mta-sts.` host names when they point here.
    MtaSts,
}

impl Route {
    /// The route of `path`, if any.
    pub fn of(path: &str) -> Option<Route> {
        match path {
            "/.well-known/autoconfig/mail/config-v1.1.xml" | "/mail/config-v1.1.xml" => {
                Some(Route::Autoconfig)
            }
            // Outlook capitalises it either way.
            "/autodiscover/autodiscover.xml" | "/Autodiscover/Autodiscover.xml" => {
                Some(Route::Autodiscover)
            }
            "/mobileconfig" => Some(Route::MobileConfig),
            "/.well-known/mta-sts.txt" => Some(Route::MtaSts),
            _ => None,
        }
    }

    fn methods(self) -> &'static str {
        match self {
            Route::Autoconfig | Route::MobileConfig | Route::MtaSts => "GET, HEAD",
            Route::Autodiscover => "POST",
        }
    }

    fn allows(self, method: &Method) -> bool {
        match self {
            Route::Autoconfig | Route::MobileConfig | Route::MtaSts => {
                method == Method::GET || method == Method::HEAD
            }
            Route::Autodiscover => method == Method::POST,
        }
    }
}

struct State {
    directory: Directory,
    settings: ClientSettings,
    dav: Dav,
    logins: auth_cache::AuthCache,
}

/// The HTTPS front end, for `Protocol::Https`.
#[derive(Clone)]
pub struct HttpHandler {
    state: Arc<State>,
}

impl std::fmt::Debug for HttpHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpHandler")
            .field("settings", &self.state.settings)
            .finish_non_exhaustive()
    }
}

impl HttpHandler {
    /// A front end answering from `directory`, telling clients `settings`,
    /// serving calendars and contacts through `dav`.
    pub fn new(directory: Directory, settings: ClientSettings, dav: Dav) -> HttpHandler {
        HttpHandler {
            state: Arc::new(State {
                directory,
                settings,
                dav,
                logins: auth_cache::AuthCache::new(),
            }),
        }
    }
}

impl ConnectionHandler for HttpHandler {
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
    serve_http(conn, limits, move |req, ip| {
        let state = Arc::clone(&state);
        async move { respond(&state, req, ip).await }
    })
    .await;
}

/// An answer with the HTTPS headers on top of the common ones.
fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut response = http::reply(status, content_type, body);
    response.headers_mut().insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    response
}

fn text(status: StatusCode, body: &'static str) -> Reply {
    reply(status, "text/plain; charset=utf-8", body)
}

async fn respond(state: &State, req: Request<Incoming>, ip: IpAddr) -> Reply {
    let path = req.uri().path();
    if path == "/.well-known/caldav" || path == "/.well-known/carddav" {
        // A fixed target: nothing from the request goes into it.
        let mut response = text(StatusCode::MOVED_PERMANENTLY, "see /dav/\n");
        response
            .headers_mut()
            .insert(header::LOCATION, HeaderValue::from_static("/dav/"));
        return if req.body().is_end_stream() {
            response
        } else {
            closing(response)
        };
    }
    // Clients given only the server's address start discovery at `/`.
    let discovery_at_root = path == "/" && matches!(req.method().as_str(), "PROPFIND" | "OPTIONS");
    if path == "/dav" || path.starts_with("/dav/") || discovery_at_root {
        return dav(state, req, ip).await;
    }
    let Some(route) = Route::of(req.uri().path()) else {
        let has_body = !req.body().is_end_stream();
        let response = text(StatusCode::NOT_FOUND, "not found\n");
        return if has_body {
            closing(response)
        } else {
            response
        };
    };
    if !route.allows(req.method()) {
        let mut response = closing(text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"));
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(route.methods()));
        return response;
    }
    if route != Route::Autodiscover && !req.body().is_end_stream() {
        return closing(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request bodies are not accepted here\n",
        ));
    }
    match route {
        Route::Autoconfig => autoconfig(state, &req).await,
        Route::Autodiscover => autodiscover(state, req).await,
        Route::MobileConfig => mobileconfig(state, &req, ip).await,
        Route::MtaSts => reply(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            profile::mta_sts_policy(&state.settings),
        ),
    }
}

/// `%XX`-decoding of a query value; `None` for bad escapes or non-UTF-8.
fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The domain of `address` if it is one of ours.
async fn local_domain(state: &State, address: &str) -> Option<String> {
    let address: EmailAddress = address.trim().parse().ok()?;
    let domain = address.domain().clone();
    let store = state.directory.store().clone();
    store
        .run(move |b| b.domain(&domain))
        .await
        .ok()
        .flatten()
        .map(|d| d.name.to_string())
}

async fn autoconfig(state: &State, req: &Request<Incoming>) -> Reply {
    // Thunderbird sends the address being set up; only its domain is used,
    // and only when it is one of ours.
    let asked = req.uri().query().and_then(|q| {
        q.split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == "emailaddress")
            .and_then(|(_, v)| percent_decode(v))
    });
    let domain = match asked {
        Some(address) => local_domain(state, &address).await,
        None => None,
    };
    let domain = match domain {
        Some(d) => Some(d),
        None => {
            let store = state.directory.store().clone();
            store
                .run(|b| b.domains())
                .await
                .ok()
                .and_then(|d| d.into_iter().next())
                .map(|d| d.name.to_string())
        }
    };
    match domain {
        Some(domain) => reply(
            StatusCode::OK,
            "application/xml; charset=utf-8",
            profile::thunderbird(&state.settings, &domain),
        ),
        None => text(StatusCode::NOT_FOUND, "no mail domain is configured\n"),
    }
}

async fn autodiscover(state: &State, req: Request<Incoming>) -> Reply {
    const XML: &str = "text/xml; charset=utf-8";
    let collected = match read_body(req, MAX_AUTODISCOVER_BODY).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let request = match xml::autodiscover_request(&collected) {
        Ok(r) => r,
        Err(xml::XmlError(why)) => {
            tracing::debug!(why, "autodiscover request refused");
            return text(StatusCode::BAD_REQUEST, "malformed autodiscover request\n");
        }
    };
    if request
        .schema
        .as_deref()
        .is_some_and(|s| s != profile::OUTLOOK_SCHEMA)
    {
        return reply(
            StatusCode::OK,
            XML,
            profile::autodiscover_error(600, "Invalid Request"),
        );
    }
    let Some(email) = request.email else {
        return reply(
            StatusCode::OK,
            XML,
            profile::autodiscover_error(600, "Invalid Request"),
        );
    };
    // Every address of our domains gets the same settings, existing or not.
    match local_domain(state, &email).await {
        Some(_) => reply(
            StatusCode::OK,
            XML,
            profile::autodiscover(&state.settings, email.trim()),
        ),
        None => reply(
            StatusCode::OK,
            XML,
            profile::autodiscover_error(600, "Invalid Request"),
        ),
    }
}

/// The credentials of a `Basic` Authorization header (RFC 7617).
fn basic_credentials(req: &Request<Incoming>) -> Option<(String, String)> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("Basic") || encoded.len() > 1024 {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

fn unauthorized() -> Reply {
    let mut response = text(StatusCode::UNAUTHORIZED, "authentication required\n");
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"Bulwark\", charset=\"UTF-8\""),
    );
    response
}

/// The principal behind the request's Basic credentials, or the answer
/// to send instead.
async fn authenticate(
    state: &State,
    req: &Request<Incoming>,
    ip: IpAddr,
) -> Result<Principal, Reply> {
    let Some((login, password)) = basic_credentials(req) else {
        return Err(unauthorized());
    };
    if let Some(principal) = state.logins.get(&login, &password) {
        return Ok(principal);
    }
    let directory = state.directory.clone();
    let (login_copy, password_copy) = (login.clone(), password.clone());
    let span = tracing::Span::current();
    let checked = tokio::task::spawn_blocking(move || {
        let _connection = span.enter();
        directory.authenticate(&login_copy, &password_copy, ip, Instant::now())
    })
    .await;
    match checked {
        Ok(Ok(auth)) => {
            state
                .logins
                .insert(&login, &password, auth.principal.clone());
            Ok(auth.principal)
        }
        // The directory logs failures and bans.
        Ok(Err(AuthError::Failed | AuthError::TemporarilyBlocked)) => Err(unauthorized()),
        Ok(Err(AuthError::Unavailable(e))) => {
            tracing::warn!(error = %e, "directory unavailable for authentication");
            Err(text(StatusCode::SERVICE_UNAVAILABLE, "try again later\n"))
        }
        Err(e) => {
            tracing::error!(error = %e, "authentication task failed");
            Err(text(StatusCode::SERVICE_UNAVAILABLE, "try again later\n"))
        }
    }
}

/// Reads a body of at most `max` bytes; the answer to send if it is
/// larger or too slow.
async fn read_body(req: Request<Incoming>, max: usize) -> Result<Bytes, Reply> {
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > max as u64) {
        return Err(closing(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large\n",
        )));
    }
    let body = Limited::new(req.into_body(), max);
    match tokio::time::timeout(BODY_READ_TIMEOUT, body.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(_)) => Err(closing(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large\n",
        ))),
        Err(_) => Err(closing(text(
            StatusCode::REQUEST_TIMEOUT,
            "request body too slow\n",
        ))),
    }
}

async fn dav(state: &State, req: Request<Incoming>, ip: IpAddr) -> Reply {
    let principal = match authenticate(state, &req, ip).await {
        Ok(p) => p,
        Err(response) => {
            return if req.body().is_end_stream() {
                response
            } else {
                closing(response)
            };
        }
    };
    let header_text = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let mut request = DavRequest {
        method: req.method().as_str().to_ascii_uppercase(),
        path: req.uri().path().to_string(),
        depth: header_text("depth"),
        if_match: header_text("if-match"),
        if_none_match: header_text("if-none-match"),
        body: Vec::new(),
    };
    let head = request.method == "HEAD";
    request.body = match read_body(req, bulwark_dav::MAX_BODY).await {
        Ok(body) => body.to_vec(),
        Err(response) => return response,
    };
    let answer = state.dav.handle(&principal, ip, request).await;
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = if head { Vec::new() } else { answer.body };
    let mut response = reply(status, answer.content_type, body);
    for (name, value) in answer.headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

async fn mobileconfig(state: &State, req: &Request<Incoming>, ip: IpAddr) -> Reply {
    let principal = match authenticate(state, req, ip).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    let address = principal.address.to_string();
    let uuid = format!("bulwark-{}-{}", principal.id, principal.created_at);
    let mut response = reply(
        StatusCode::OK,
        "application/x-apple-aspen-config",
        profile::apple_profile(&state.settings, &address, &principal.display_name, &uuid),
    );
    response.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"bulwark.mobileconfig\""),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_exactly() {
        assert_eq!(
            Route::of("/.well-known/autoconfig/mail/config-v1.1.xml"),
            Some(Route::Autoconfig)
        );
        assert_eq!(
            Route::of("/Autodiscover/Autodiscover.xml"),
            Some(Route::Autodiscover)
        );
        for path in [
            "/",
            "/mobileconfig/",
            "/autodiscover/../mobileconfig",
            "//mobileconfig",
            "/%6dobileconfig",
            "/.well-known/autoconfig/mail/config-v1.1.xml/../../etc/passwd",
            "/autodiscover/autodiscover.json",
        ] {
            assert_eq!(Route::of(path), None, "{path}");
        }
    }

    #[test]
    fn query_values_decode() {
        assert_eq!(
            percent_decode("alice%40example.com").as_deref(),
            Some("alice@example.com")
        );
        assert_eq!(percent_decode("a+b").as_deref(), Some("a b"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
    }
}
