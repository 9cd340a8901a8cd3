//! The Bulwark configuration file: one TOML document, loaded into typed
//! structures and validated before anything starts.
//!
//! This crate owns the file format, its defaults and its validation. It must
//! not open sockets, touch storage or read anything but the configuration
//! file itself (and check that the files it names exist). Every key is
//! documented in `docs/configuration.md`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod locate;
mod parse;
mod render;
mod validate;

pub use render::render_default;

/// The largest accepted `storage.inline_blob_max_bytes` (1 MiB).
pub const MAX_INLINE_BLOB_BYTES: u64 = 1024 * 1024;

/// The whole configuration, after validation. Relative paths have been
/// resolved against the directory holding the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[server]`
    pub server: ServerSection,
    /// `[storage]`
    #[serde(default)]
    pub storage: StorageSection,
    /// `[tls]`
    #[serde(default)]
    pub tls: TlsSection,
    /// `[[listener]]`, one entry per socket.
    #[serde(default, rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    /// `[limits]`
    #[serde(default)]
    pub limits: LimitsSection,
    /// `[auth]`
    #[serde(default)]
    pub auth: AuthSection,
    /// `[admin]`
    #[serde(default)]
    pub admin: AdminSection,
    /// `[log]`
    #[serde(default)]
    pub log: LogSection,
    /// `[smtp]`
    #[serde(default)]
    pub smtp: SmtpSection,
    /// `[imap]`
    #[serde(default)]
    pub imap: ImapSection,
    /// `[queue]`
    #[serde(default)]
    pub queue: QueueSection,
    /// `[dns]`
    #[serde(default)]
    pub dns: DnsSection,
}

/// `[server]`: who this server is and where it keeps data.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Fully qualified host name used in greetings and certificates.
    pub hostname: String,
    /// Directory holding the database and blobs.
    pub data_dir: PathBuf,
    /// How long a graceful shutdown waits for sessions to finish, seconds.
    #[serde(default = "defaults::shutdown_grace_secs")]
    pub shutdown_grace_secs: u64,
}

/// `[storage]`: the metadata and blob backends.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    /// Metadata backend; only `sqlite` exists today.
    #[serde(default = "defaults::backend")]
    pub backend: StorageBackend,
    /// Blobs up to this size are kept inside the database (one fsync per
    /// group commit); larger ones go to the blob directory.
    #[serde(default = "defaults::inline_blob_max_bytes")]
    pub inline_blob_max_bytes: u64,
}

/// Metadata backend choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// Embedded SQLite in WAL mode inside `data_dir`.
    Sqlite,
}

/// `[tls]`: the certificate served on every TLS listener.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain.
    pub certificate: Option<PathBuf>,
    /// PEM private key.
    pub private_key: Option<PathBuf>,
}

/// One `[[listener]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Which protocol this socket speaks.
    pub protocol: Protocol,
    /// Address and port to bind.
    pub bind: SocketAddr,
}

/// The protocols a listener can speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// SMTP for incoming mail (MX), STARTTLS offered.
    Smtp,
    /// Mail submission with STARTTLS (port 587).
    Submission,
    /// Mail submission over implicit TLS (port 465).
    Submissions,
    /// IMAP with STARTTLS.
    Imap,
    /// IMAP over implicit TLS.
    Imaps,
    /// POP3 with STLS.
    Pop3,
    /// POP3 over implicit TLS.
    Pop3s,
    /// HTTPS: JMAP, CalDAV, CardDAV, autoconfiguration, web UI.
    Https,
    /// The administration plane (plain HTTP, loopback by default).
    Admin,
}

impl Protocol {
    /// The name used in the configuration file and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Smtp => "smtp",
            Protocol::Submission => "submission",
            Protocol::Submissions => "submissions",
            Protocol::Imap => "imap",
            Protocol::Imaps => "imaps",
            Protocol::Pop3 => "pop3",
            Protocol::Pop3s => "pop3s",
            Protocol::Https => "https",
            Protocol::Admin => "admin",
        }
    }

    /// Whether the connection starts with a TLS handshake.
    pub fn implicit_tls(self) -> bool {
        matches!(
            self,
            Protocol::Submissions | Protocol::Imaps | Protocol::Pop3s | Protocol::Https
        )
    }

    /// Whether the protocol needs a certificate (implicit TLS or STARTTLS).
    pub fn needs_certificate(self) -> bool {
        self != Protocol::Admin
    }
}

/// `[limits]`: connection limits shared by every listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Concurrent connections across all listeners.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: u32,
    /// Concurrent connections from one IP address.
    #[serde(default = "defaults::max_connections_per_ip")]
    pub max_connections_per_ip: u32,
    /// A connection with no incoming bytes for this long is closed, seconds.
    #[serde(default = "defaults::idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// Seconds a TLS handshake may take.
    #[serde(default = "defaults::tls_handshake_timeout_secs")]
    pub tls_handshake_timeout_secs: u64,
}

/// `[auth]`: brute-force protection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// Failed logins for one account within the window before it is banned.
    #[serde(default = "defaults::max_failures_per_account")]
    pub max_failures_per_account: u32,
    /// Failed logins from one IP within the window before it is banned.
    #[serde(default = "defaults::max_failures_per_ip")]
    pub max_failures_per_ip: u32,
    /// Window over which failures are counted, seconds.
    #[serde(default = "defaults::failure_window_secs")]
    pub failure_window_secs: u64,
    /// How long a ban lasts, seconds.
    #[serde(default = "defaults::ban_secs")]
    pub ban_secs: u64,
}

/// `[admin]`: the administration plane.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Allow an `admin` listener on a non-loopback address.
    #[serde(default)]
    pub allow_public_bind: bool,
}

/// `[log]`: diagnostics output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `text` or `json`.
    #[serde(default = "defaults::log_format")]
    pub format: LogFormat,
    /// A tracing filter such as `info` or `bulwark_store=debug,info`.
    #[serde(default = "defaults::log_level")]
    pub level: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

mod defaults {
    use super::*;
    pub fn max_message_bytes() -> u64 {
        50 * 1024 * 1024
    }
    pub fn max_recipients() -> u32 {
        100
    }
    pub fn max_errors() -> u32 {
        10
    }
    pub fn max_recipients_per_hour() -> u32 {
        1000
    }
    pub fn max_sessions_per_account() -> u32 {
        50
    }
    pub fn max_line_bytes() -> u32 {
        64 * 1024
    }
    pub fn shutdown_grace_secs() -> u64 {
        30
    }
    pub fn backend() -> StorageBackend {
        StorageBackend::Sqlite
    }
    /// Most messages (text, small attachments) ride on the group commit's
    /// one fsync instead of a file, an fsync and a directory fsync each;
    /// at 64 KiB that took the SMTP intake from ~1,100 to ~1,500 msgs/s
    /// (bench/README.md, smtp-bench).
    pub fn inline_blob_max_bytes() -> u64 {
        128 * 1024
    }
    pub fn max_connections() -> u32 {
        10_000
    }
    pub fn max_connections_per_ip() -> u32 {
        50
    }
    pub fn idle_timeout_secs() -> u64 {
        1800
    }
    pub fn tls_handshake_timeout_secs() -> u64 {
        10
    }
    pub fn max_failures_per_account() -> u32 {
        5
    }
    pub fn max_failures_per_ip() -> u32 {
        10
    }
    pub fn failure_window_secs() -> u64 {
        600
    }
    pub fn ban_secs() -> u64 {
        900
    }
    pub fn log_format() -> LogFormat {
        LogFormat::Text
    }
    pub fn yes() -> bool {
        true
    }
    pub fn smtp_port() -> u16 {
        25
    }
    pub fn submission_port() -> u16 {
        587
    }
    pub fn route_tls() -> super::RouteTls {
        super::RouteTls::Opportunistic
    }
    pub fn smarthost_tls() -> super::RouteTls {
        super::RouteTls::Required
    }
    pub fn queue_lifetime_secs() -> u64 {
        5 * 86_400
    }
    pub fn retry_initial_secs() -> u64 {
        300
    }
    pub fn retry_max_secs() -> u64 {
        4 * 3600
    }
    pub fn delay_notice_secs() -> u64 {
        4 * 3600
    }
    pub fn max_parallel() -> u32 {
        16
    }
    pub fn connect_timeout_secs() -> u64 {
        30
    }
    pub fn command_timeout_secs() -> u64 {
        300
    }
    pub fn log_level() -> String {
        "info".into()
    }
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            backend: defaults::backend(),
            inline_blob_max_bytes: defaults::inline_blob_max_bytes(),
        }
    }
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_connections: defaults::max_connections(),
            max_connections_per_ip: defaults::max_connections_per_ip(),
            idle_timeout_secs: defaults::idle_timeout_secs(),
            tls_handshake_timeout_secs: defaults::tls_handshake_timeout_secs(),
        }
    }
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            max_failures_per_account: defaults::max_failures_per_account(),
            max_failures_per_ip: defaults::max_failures_per_ip(),
            failure_window_secs: defaults::failure_window_secs(),
            ban_secs: defaults::ban_secs(),
        }
    }
}

/// `[smtp]`: limits of the SMTP listeners (inbound and submission).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSection {
    /// Largest message accepted, bytes (announced with SIZE).
    #[serde(default = "defaults::max_message_bytes")]
    pub max_message_bytes: u64,
    /// Recipients accepted per message.
    #[serde(default = "defaults::max_recipients")]
    pub max_recipients: u32,
    /// Protocol errors tolerated per session before it is closed.
    #[serde(default = "defaults::max_errors")]
    pub max_errors: u32,
    /// Recipients one authenticated user may send to per hour (submission).
    #[serde(default = "defaults::max_recipients_per_hour")]
    pub max_recipients_per_hour: u32,
    /// Whether authenticated users may send to other domains (through the
    /// outbound queue). Inbound (MX) never relays.
    #[serde(default = "defaults::yes")]
    pub relay: bool,
    /// Whether inbound mail is checked with SPF, DKIM, ARC and DMARC.
    #[serde(default = "defaults::yes")]
    pub verify_inbound: bool,
    /// DNS blocklists (zones, RFC 5782) that the MX asks about each
    /// client; a listed client's recipients are refused.
    #[serde(default)]
    pub dnsbl: Vec<String>,
    /// The local address that receives mail for `postmaster@` every domain
    /// without such an address of its own (RFC 5321 requires one).
    #[serde(default)]
    pub postmaster: Option<String>,
    /// `[[smtp.route]]`: fixed next hops per destination domain.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// `[smtp.smarthost]`: the next hop for every other remote domain.
    #[serde(default)]
    pub smarthost: Option<SmarthostConfig>,
}

impl Default for SmtpSection {
    fn default() -> Self {
        SmtpSection {
            max_message_bytes: defaults::max_message_bytes(),
            max_recipients: defaults::max_recipients(),
            max_errors: defaults::max_errors(),
            max_recipients_per_hour: defaults::max_recipients_per_hour(),
            relay: true,
            verify_inbound: true,
            dnsbl: Vec::new(),
            postmaster: None,
            routes: Vec::new(),
            smarthost: None,
        }
    }
}

/// How TLS is used towards a configured next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteTls {
    /// STARTTLS when offered, certificate not checked.
    Opportunistic,
    /// STARTTLS required, certificate verified.
    Required,
    /// TLS from the first byte (port 465 style), certificate verified.
    Implicit,
    /// Plain text (loopback relays and tests).
    None,
}

/// `[[smtp.route]]`: mail for `domain` goes to `host:port`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The destination domain.
    pub domain: String,
    /// Host name or IP address of the next hop.
    pub host: String,
    /// Its port.
    #[serde(default = "defaults::smtp_port")]
    pub port: u16,
    /// TLS towards it.
    #[serde(default = "defaults::route_tls")]
    pub tls: RouteTls,
}

/// `[smtp.smarthost]`: a provider's relay that takes all other mail.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmarthostConfig {
    /// Host name or IP address.
    pub host: String,
    /// Its port.
    #[serde(default = "defaults::submission_port")]
    pub port: u16,
    /// TLS towards it.
    #[serde(default = "defaults::smarthost_tls")]
    pub tls: RouteTls,
    /// AUTH user name, if the relay wants one.
    #[serde(default)]
    pub username: Option<String>,
    /// AUTH password (this file is kept 0600).
    #[serde(default)]
    pub password: Option<String>,
}

/// `[queue]`: outbound delivery.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSection {
    /// How long a message is retried before it bounces, seconds.
    #[serde(default = "defaults::queue_lifetime_secs")]
    pub lifetime_secs: u64,
    /// Wait after the first failed attempt, seconds; doubles each time.
    #[serde(default = "defaults::retry_initial_secs")]
    pub retry_initial_secs: u64,
    /// Longest wait between attempts, seconds.
    #[serde(default = "defaults::retry_max_secs")]
    pub retry_max_secs: u64,
    /// Tell the sender once after this long undelivered, seconds; 0: never.
    #[serde(default = "defaults::delay_notice_secs")]
    pub delay_notice_secs: u64,
    /// Messages delivered at the same time.
    #[serde(default = "defaults::max_parallel")]
    pub max_parallel: u32,
    /// Timeout for connecting to a next hop, seconds.
    #[serde(default = "defaults::connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// Timeout for each reply of a next hop, seconds.
    #[serde(default = "defaults::command_timeout_secs")]
    pub command_timeout_secs: u64,
    /// Whether outgoing mail is DKIM-signed with its domain's key.
    #[serde(default = "defaults::yes")]
    pub dkim_sign: bool,
}

impl Default for QueueSection {
    fn default() -> Self {
        QueueSection {
            lifetime_secs: defaults::queue_lifetime_secs(),
            retry_initial_secs: defaults::retry_initial_secs(),
            retry_max_secs: defaults::retry_max_secs(),
            delay_notice_secs: defaults::delay_notice_secs(),
            max_parallel: defaults::max_parallel(),
            connect_timeout_secs: defaults::connect_timeout_secs(),
            command_timeout_secs: defaults::command_timeout_secs(),
            dkim_sign: true,
        }
    }
}

/// `[dns]`: the resolver for MX lookups and SPF/DKIM/DMARC.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSection {
    /// Resolvers as `ip:port`; empty means those of `/etc/resolv.conf`.
    #[serde(default)]
    pub servers: Vec<SocketAddr>,
}

/// `[imap]`: limits of the IMAP listeners.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImapSection {
    /// Largest message APPEND accepts (APPENDLIMIT), bytes.
    #[serde(default = "defaults::max_message_bytes")]
    pub max_append_bytes: u64,
    /// Longest command line, bytes.
    #[serde(default = "defaults::max_line_bytes")]
    pub max_line_bytes: u32,
    /// Concurrent logged-in sessions of one account.
    #[serde(default = "defaults::max_sessions_per_account")]
    pub max_sessions_per_account: u32,
}

impl Default for ImapSection {
    fn default() -> Self {
        ImapSection {
            max_append_bytes: defaults::max_message_bytes(),
            max_line_bytes: defaults::max_line_bytes(),
            max_sessions_per_account: defaults::max_sessions_per_account(),
        }
    }
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            format: defaults::log_format(),
            level: defaults::log_level(),
        }
    }
}

/// A configuration that could not be loaded. The message names the file and
/// the offending key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The configuration file.
    pub file: PathBuf,
    /// The dotted key path, such as `listener[1].bind`, when known.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{}: key `{key}`: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads, parses and validates the file at `path`.
    ///
    /// Relative paths inside the file (`server.data_dir`, `tls.certificate`,
    /// `tls.private_key`) are resolved against the directory holding the
    /// file; when `path` itself is relative, that directory is first made
    /// absolute against the current directory, so the result holds absolute
    /// paths.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            key: None,
            message: format!("cannot read the configuration file: {e}"),
        })?;
        let file = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        Config::from_toml_str(&text, &file)
    }

    /// Parses and validates `text`, the contents of the configuration file
    /// `file`. `file` is used in error messages and its directory is the base
    /// for relative paths; the file itself is not read, but the certificate
    /// and key it names must exist.
    pub fn from_toml_str(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let mut config = parse::parse(text, file)?;
        let base = file.parent().unwrap_or(Path::new(""));
        validate::check_paths_set(&config, file)?;
        config.resolve_paths(base);
        validate::validate(&config, file)?;
        Ok(config)
    }

    /// Joins relative `server.data_dir`, `tls.certificate` and
    /// `tls.private_key` onto `base`.
    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.server.data_dir);
        if let Some(p) = self.tls.certificate.as_mut() {
            resolve(p);
        }
        if let Some(p) = self.tls.private_key.as_mut() {
            resolve(p);
        }
    }
}
