//! The commented configuration file that `bulwark init` writes.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

use crate::{LogFormat, MAX_INLINE_BLOB_BYTES, Protocol, StorageBackend, defaults};

/// Renders a complete, commented configuration file that
/// [`Config::from_toml_str`](crate::Config::from_toml_str) accepts (provided
/// the certificate and key exist and the values passed in are valid).
///
/// Every section is present with its default values, and a comment above
/// each key says what it does. Paths are written as given; relative ones
/// are resolved against the directory the file is saved in. Paths that are
/// not valid UTF-8 are written lossily.
pub fn render_default(
    hostname: &str,
    data_dir: &Path,
    cert: &Path,
    key: &Path,
    listeners: &[(Protocol, SocketAddr)],
) -> String {
    let mut out = String::new();
    let backend = match defaults::backend() {
        StorageBackend::Sqlite => "sqlite",
    };
    let format = match defaults::log_format() {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    };

    // `write!` into a String cannot fail.
    let _ = write!(
        out,
        r#"# Bulwark configuration.
#
# Every key is described in docs/configuration.md. A bad value stops the
# server from starting, with an error naming the key and this file.
# Relative paths are resolved against the directory holding this file.

[server]
# Fully qualified host name, used in protocol greetings and for the
# certificate.
hostname = {hostname}
# Directory holding the database and blobs. It holds data only.
data_dir = {data_dir}
# Seconds a graceful shutdown waits for open sessions to finish.
shutdown_grace_secs = {grace}

[storage]
# Metadata backend. Only "sqlite" (embedded, inside data_dir) exists today.
backend = "{backend}"
# Blobs up to this many bytes are kept inside the database; larger ones go
# to the blob directory. At most {max_inline} (1 MiB).
inline_blob_max_bytes = {inline}

[tls]
# PEM certificate chain served on every TLS and STARTTLS listener.
certificate = {cert}
# PEM private key of that certificate.
private_key = {key}

# One [[listener]] block per socket. protocol is one of: smtp, submission,
# submissions, imap, imaps, pop3, pop3s, https, admin. bind is an address
# and port such as "0.0.0.0:25" or "[::]:993".
"#,
        hostname = toml_string(hostname),
        data_dir = toml_string(&data_dir.to_string_lossy()),
        grace = defaults::shutdown_grace_secs(),
        max_inline = MAX_INLINE_BLOB_BYTES,
        inline = defaults::inline_blob_max_bytes(),
        cert = toml_string(&cert.to_string_lossy()),
        key = toml_string(&key.to_string_lossy()),
    );

    if listeners.is_empty() {
        out.push_str("# No listener is configured yet, for example:\n");
        out.push_str("# [[listener]]\n# protocol = \"imaps\"\n# bind = \"0.0.0.0:993\"\n");
    }
    for (protocol, bind) in listeners {
        let _ = write!(
            out,
            "\n[[listener]]\n# {}\nprotocol = \"{}\"\nbind = {}\n",
            describe(*protocol),
            protocol.name(),
            toml_string(&bind.to_string()),
        );
    }

    let _ = write!(
        out,
        r#"
[limits]
# Concurrent connections across all listeners.
max_connections = {max_connections}
# Concurrent connections from one IP address (at most max_connections).
max_connections_per_ip = {per_ip}
# A connection that sends nothing for this many seconds is closed.
idle_timeout_secs = {idle}
# Seconds a TLS handshake may take.
tls_handshake_timeout_secs = {handshake}

[auth]
# Failed logins for one account within failure_window_secs before the
# account is temporarily banned.
max_failures_per_account = {per_account}
# Failed logins from one IP address within failure_window_secs before the
# address is temporarily banned.
max_failures_per_ip = {fail_per_ip}
# Window over which failed logins are counted, seconds.
failure_window_secs = {window}
# How long a ban lasts, seconds.
ban_secs = {ban}

[smtp]
# Largest message accepted, in bytes (announced with the SIZE extension).
max_message_bytes = {max_message}
# Recipients accepted per message.
max_recipients = {max_rcpt}
# Protocol errors tolerated per session before it is closed.
max_errors = {max_errors}
# Recipients one user may send to per hour through submission, local and
# remote alike; refilled evenly over the hour. A stolen password can send
# no more spam than this.
max_recipients_per_hour = {per_hour}
# Whether authenticated users may send to other domains (through the
# outbound queue). The MX listener never relays, whatever this says.
relay = true
# Check inbound mail with SPF, DKIM, ARC and DMARC; the results go into an
# Authentication-Results field, and DMARC p=reject failures are refused.
verify_inbound = true
# DNS blocklists (RFC 5782) the MX asks about every client; recipients of a
# listed client are refused with 554 5.7.1, except postmaster. Lookups that
# fail never refuse. Mind each list's terms of use.
dnsbl = []
# Who reads mail for postmaster@ every domain that has no such address of
# its own (RFC 5321 requires every domain to accept it; DMARC and TLS
# reports go there). A local address: a user, an alias or a group.
# postmaster = "admin@example.com"

# Fixed next hops per destination domain (otherwise MX records decide):
# [[smtp.route]]
# domain = "partner.example"
# host = "10.0.0.5"
# port = 25
# tls = "opportunistic"   # or "required", "implicit", "none"
#
# A provider's relay for all other remote mail:
# [smtp.smarthost]
# host = "smtp.provider.example"
# port = 587
# tls = "required"
# username = "account"
# password = "secret"

[queue]
# How long a message is retried before it bounces, seconds.
lifetime_secs = 432000
# Wait after the first failed attempt, seconds; doubles after each one.
retry_initial_secs = 300
# Longest wait between attempts, seconds.
retry_max_secs = 14400
# Tell the sender once when mail is this late, seconds (0: never).
delay_notice_secs = 14400
# Messages delivered at the same time.
max_parallel = 16
# Timeouts towards next hops, seconds.
connect_timeout_secs = 30
command_timeout_secs = 300
# DKIM-sign outgoing mail with the key of its From: domain.
dkim_sign = true

[dns]
# Resolvers as "ip:port"; empty means those of /etc/resolv.conf.
servers = []

[imap]
# Largest message APPEND accepts, in bytes (announced as APPENDLIMIT).
max_append_bytes = {max_message}
# Longest command line, in bytes.
max_line_bytes = {max_line}
# Concurrent logged-in sessions of one account.
max_sessions_per_account = {max_sessions}

[admin]
# The admin listener is loopback-only by default. Setting this to true
# allows it on another address; do so only behind a firewall you control.
allow_public_bind = false

[log]
# "text" for human-readable lines, "json" for one JSON object per line.
format = "{format}"
# Tracing filter: a level (error, warn, info, debug, trace), optionally with
# per-crate directives such as "bulwark_store=debug,info".
level = {level}
"#,
        max_connections = defaults::max_connections(),
        per_ip = defaults::max_connections_per_ip(),
        idle = defaults::idle_timeout_secs(),
        handshake = defaults::tls_handshake_timeout_secs(),
        per_account = defaults::max_failures_per_account(),
        fail_per_ip = defaults::max_failures_per_ip(),
        window = defaults::failure_window_secs(),
        ban = defaults::ban_secs(),
        level = toml_string(&defaults::log_level()),
        max_message = defaults::max_message_bytes(),
        max_rcpt = defaults::max_recipients(),
        max_errors = defaults::max_errors(),
        per_hour = defaults::max_recipients_per_hour(),
        max_line = defaults::max_line_bytes(),
        max_sessions = defaults::max_sessions_per_account(),
    );
    out
}

/// One line describing a listener protocol.
fn describe(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Smtp => {
            "SMTP for incoming mail from other servers (MX, usually port 25), STARTTLS offered."
        }
        Protocol::Submission => "Mail submission by users with STARTTLS (usually port 587).",
        Protocol::Submissions => "Mail submission by users over implicit TLS (usually port 465).",
        Protocol::Imap => "IMAP with STARTTLS (usually port 143).",
        Protocol::Imaps => "IMAP over implicit TLS (usually port 993).",
        Protocol::Pop3 => "POP3 with STLS (usually port 110).",
        Protocol::Pop3s => "POP3 over implicit TLS (usually port 995).",
        Protocol::Https => {
            "HTTPS: JMAP, CalDAV, CardDAV, autoconfiguration and web UI (usually port 443)."
        }
        Protocol::Admin => {
            "Administration plane: plain HTTP serving /health and /metrics; keep it on loopback."
        }
    }
}

/// A TOML basic string holding `s`.
pub(crate) fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
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
    fn strings_are_escaped() {
        let quoted = toml_string("C:\\certs\\\"a\"\n\u{1}");
        let table: toml::Table = format!("x = {quoted}").parse().expect("valid TOML");
        assert_eq!(table["x"].as_str(), Some("C:\\certs\\\"a\"\n\u{1}"));
    }
}
