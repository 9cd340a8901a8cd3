//! MTA-STS (RFC 8461): a recipient domain's published promise that its MX
//! hosts speak verified TLS.
//!
//! The domain announces a policy with a TXT record at `_mta-sts.DOMAIN`;
//! the policy itself is fetched over HTTPS from the fixed location
//! `https://mta-sts.DOMAIN/.well-known/mta-sts.txt` (certificate verified,
//! redirects never followed, at most [`MAX_POLICY_BYTES`]). Under
//! `mode: enforce`, mail goes only to MX hosts the policy names and only
//! over verified TLS; a policy that cannot be fetched is never a reason
//! to refuse delivery when none was cached (section 5).
//!
//! The host contacted is derived from the recipient domain by the RFC's
//! rule, like an MX host; nothing a message or a client supplies is ever
//! used as a URL.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::RootCertStore;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::dns::Dns;

/// RFC 8461 section 3.3: policies are small; 64 KiB is the suggested cap.
pub const MAX_POLICY_BYTES: usize = 64 * 1024;
/// Longest time a policy is cached, whatever its `max_age` says (one year,
/// the RFC's recommended maximum).
const MAX_AGE_CAP: u64 = 31_557_600;
/// The whole fetch (connect, handshake, request, response) gives up after this.
const FETCH_TIMEOUT: Duration = Duration::from_secs(20);
/// Domains whose policies are remembered; the oldest go first beyond it.
const MAX_CACHED: usize = 10_000;

/// What a policy asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Deliver only to listed MX hosts over verified TLS.
    Enforce,
    /// Report problems but deliver as usual.
    Testing,
    /// The domain withdrew its policy.
    None,
}

/// A parsed policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The mode.
    pub mode: Mode,
    /// MX host patterns: exact names or `*.` followed by a domain (one
    /// label of wildcard).
    pub mx: Vec<String>,
    /// Seconds the policy may be cached.
    pub max_age: u64,
}

impl Policy {
    /// Whether `host` (an MX host name) is one the policy allows.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.mx
            .iter()
            .any(|pattern| match pattern.strip_prefix("*.") {
                Some(parent) => host
                    .split_once('.')
                    .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
                None => host == *pattern,
            })
    }
}

/// Parses a policy file (section 3.2): `key: value` lines, CRLF or LF.
pub fn parse_policy(text: &str) -> Result<Policy, String> {
    let mut version = None;
    let mut mode = None;
    let mut max_age = None;
    let mut mx = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(format!("not a key: value line: {line:?}"));
        };
        let value = value.trim();
        match key.trim() {
            "version" => version = Some(value.to_string()),
            "mode" => {
                mode = Some(match value {
                    "enforce" => Mode::Enforce,
                    "testing" => Mode::Testing,
                    "none" => Mode::None,
                    other => return Err(format!("unknown mode {other:?}")),
                })
            }
            "max_age" => {
                let age: u64 = value
                    .parse()
                    .map_err(|_| format!("max_age is not a number: {value:?}"))?;
                max_age = Some(age.min(MAX_AGE_CAP));
            }
            "mx" => {
                let pattern = value.to_ascii_lowercase();
                let name = pattern.strip_prefix("*.").unwrap_or(&pattern);
                let valid = !name.is_empty()
                    && name.len() <= 253
                    && name.split('.').all(|label| {
                        !label.is_empty()
                            && label.len() <= 63
                            && label
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    });
                if !valid {
                    return Err(format!("invalid mx pattern {value:?}"));
                }
                if mx.len() < 100 {
                    mx.push(pattern);
                }
            }
            // Section 3.2: unknown keys are ignored.
            _ => {}
        }
    }
    if version.as_deref() != Some("STSv1") {
        return Err("version must be STSv1".into());
    }
    let mode = mode.ok_or("mode is missing")?;
    let max_age = max_age.ok_or("max_age is missing")?;
    if mode != Mode::None && mx.is_empty() {
        return Err("no mx patterns".into());
    }
    Ok(Policy { mode, mx, max_age })
}

/// The `id` of a `v=STSv1` TXT record, if the text is one.
fn record_id(txt: &str) -> Option<String> {
    let mut fields = txt.split(';').map(str::trim);
    if fields.next()? != "v=STSv1" {
        return None;
    }
    fields
        .find_map(|f| f.strip_prefix("id="))
        .filter(|id| {
            !id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_alphanumeric())
        })
        .map(str::to_string)
}

struct Cached {
    id: String,
    policy: Policy,
    expires: Instant,
}

/// Finds and caches domains' policies.
#[derive(Clone)]
pub struct MtaSts {
    dns: Dns,
    roots: Arc<RootCertStore>,
    https_port: u16,
    cache: Arc<Mutex<HashMap<String, Cached>>>,
}

impl std::fmt::Debug for MtaSts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MtaSts")
            .field("https_port", &self.https_port)
            .finish_non_exhaustive()
    }
}

impl MtaSts {
    /// Policies looked up through `dns`, fetched over HTTPS verified
    /// against `roots` on `https_port` (443 except in tests).
    pub fn new(dns: Dns, roots: Arc<RootCertStore>, https_port: u16) -> MtaSts {
        MtaSts {
            dns,
            roots,
            https_port,
            cache: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn cached(&self, domain: &str) -> Option<(String, Policy)> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(domain)
            .filter(|c| c.expires > Instant::now())
            .map(|c| (c.id.clone(), c.policy.clone()))
    }

    /// The policy in force for `domain`, if any.
    pub async fn policy(&self, domain: &str) -> Option<Policy> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let cached = self.cached(&domain);
        let txt = self
            .dns
            .authenticator()
            .txt_raw_lookup(format!("_mta-sts.{domain}.").as_str())
            .await
            .ok()
            .map(|raw| String::from_utf8_lossy(&raw).into_owned());
        let Some(id) = txt.as_deref().and_then(record_id) else {
            // Section 5.1: without a record, a policy still cached stays in force.
            return cached.map(|(_, p)| p);
        };
        if let Some((cached_id, policy)) = &cached
            && *cached_id == id
        {
            return Some(policy.clone());
        }
        match self.fetch(&domain).await {
            Ok(policy) => {
                let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                if cache.len() >= MAX_CACHED {
                    let now = Instant::now();
                    cache.retain(|_, c| c.expires > now);
                    if cache.len() >= MAX_CACHED {
                        cache.clear();
                    }
                }
                cache.insert(
                    domain.clone(),
                    Cached {
                        id,
                        policy: policy.clone(),
                        expires: Instant::now() + Duration::from_secs(policy.max_age),
                    },
                );
                Some(policy)
            }
            Err(e) => {
                tracing::info!(%domain, error = %e, "MTA-STS policy not fetched");
                cached.map(|(_, p)| p)
            }
        }
    }

    /// Fetches and parses `https://mta-sts.DOMAIN/.well-known/mta-sts.txt`.
    async fn fetch(&self, domain: &str) -> Result<Policy, String> {
        tokio::time::timeout(FETCH_TIMEOUT, self.fetch_inner(domain))
            .await
            .map_err(|_| "policy fetch timed out".to_string())?
    }

    async fn fetch_inner(&self, domain: &str) -> Result<Policy, String> {
        let host = format!("mta-sts.{domain}");
        let ips = self.dns.addresses(&host).await.map_err(|e| e.to_string())?;
        let ip = *ips.first().ok_or("no address")?;
        let tcp = TcpStream::connect(SocketAddr::new(ip, self.https_port))
            .await
            .map_err(|e| format!("connect to {host}: {e}"))?;
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(Arc::clone(&self.roots))
        .with_no_client_auth();
        let name = ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {host}: {e}"))?;
        let request = format!(
            "GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Bulwark\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
        );
        tls.write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut response = Vec::new();
        let mut limited = (&mut tls).take((MAX_POLICY_BYTES + 8 * 1024) as u64);
        // A server that closes without TLS close_notify still sent what it sent.
        if let Err(e) = limited.read_to_end(&mut response).await
            && response.is_empty()
        {
            return Err(e.to_string());
        }
        parse_response(&response)
    }
}

/// The policy in an HTTP/1.x response: status 200 only (section 3.3: no
/// redirects), `text/plain`, body by `Content-Length`, chunks or close.
fn parse_response(response: &[u8]) -> Result<Policy, String> {
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no complete HTTP header")?;
    let head = std::str::from_utf8(&response[..end]).map_err(|_| "header is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status.split_whitespace().nth(1).unwrap_or_default();
    if !status.starts_with("HTTP/1.") || code != "200" {
        return Err(format!("policy fetch answered {status:?}"));
    }
    let mut length = None;
    let mut chunked = false;
    let mut plain = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse::<usize>().ok(),
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "content-type" => {
                plain = value
                    .split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/plain"))
            }
            _ => {}
        }
    }
    if !plain {
        return Err("policy is not text/plain".into());
    }
    let raw = &response[end + 4..];
    let body = if chunked {
        dechunk(raw)?
    } else if let Some(length) = length {
        raw.get(..length).ok_or("policy body cut short")?.to_vec()
    } else {
        raw.to_vec()
    };
    if body.len() > MAX_POLICY_BYTES {
        return Err("policy too large".into());
    }
    parse_policy(std::str::from_utf8(&body).map_err(|_| "policy is not UTF-8")?)
}

fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let eol = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("chunk size line cut short")?;
        let size_text = std::str::from_utf8(&raw[..eol]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "bad chunk size")?;
        raw = &raw[eol + 2..];
        if size == 0 {
            return Ok(body);
        }
        if size > MAX_POLICY_BYTES || body.len() + size > MAX_POLICY_BYTES {
            return Err("policy too large".into());
        }
        let chunk = raw.get(..size).ok_or("chunk cut short")?;
        body.extend_from_slice(chunk);
        raw = raw.get(size + 2..).ok_or("chunk cut short")?;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse() {
        let p = parse_policy(
            "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 86400\r\n",
        )
        .unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.max_age, 86400);
        assert!(p.allows("mail.example.com"));
        assert!(p.allows("MAIL.example.com."));
        assert!(p.allows("mx1.example.net"));
        assert!(!p.allows("a.b.example.net"), "one label of wildcard only");
        assert!(!p.allows("example.net"));
        assert!(!p.allows("evil.example.com"));

        assert!(parse_policy("mode: enforce\nmx: a.b\nmax_age: 1\n").is_err());
        assert!(parse_policy("version: STSv1\nmode: strict\nmx: a.b\nmax_age: 1\n").is_err());
        assert!(parse_policy("version: STSv1\nmode: enforce\nmax_age: 1\n").is_err());
        assert!(parse_policy("version: STSv1\nmode: enforce\nmx: a b\nmax_age: 1\n").is_err());
        assert!(parse_policy("version: STSv1\nmode: none\nmax_age: 1\n").is_ok());
        let capped = parse_policy(
            "version: STSv1\nmode: testing\nmx: a.b\nmax_age: 99999999999\nextra: ignored\n",
        )
        .unwrap();
        assert_eq!(capped.max_age, MAX_AGE_CAP);
    }

    #[test]
    fn records_carry_an_id() {
        assert_eq!(
            record_id("v=STSv1; id=20240101T00").as_deref(),
            Some("20240101T00")
        );
        assert_eq!(record_id("v=STSv1;id=abc;").as_deref(), Some("abc"));
        assert_eq!(record_id("v=spf1 -all"), None);
        assert_eq!(record_id("v=STSv1; id=bad id"), None);
    }

    #[test]
    fn responses_are_strict() {
        let policy = "version: STSv1\r\nmode: testing\r\nmx: a.example\r\nmax_age: 60\r\n";
        let ok = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{policy}",
            policy.len()
        );
        assert_eq!(parse_response(ok.as_bytes()).unwrap().mode, Mode::Testing);
        let chunked = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{policy}\r\n0\r\n\r\n",
            policy.len()
        );
        assert_eq!(
            parse_response(chunked.as_bytes()).unwrap().mx,
            vec!["a.example"]
        );
        let redirect = "HTTP/1.1 301 Moved\r\nLocation: https://elsewhere/\r\nContent-Type: text/plain\r\n\r\n";
        assert!(
            parse_response(redirect.as_bytes()).is_err(),
            "redirects are not followed"
        );
        let html = format!("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n{policy}");
        assert!(parse_response(html.as_bytes()).is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain").is_err());
        let huge = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
            MAX_POLICY_BYTES + 1
        );
        assert!(parse_response(huge.as_bytes()).is_err());
    }
}
