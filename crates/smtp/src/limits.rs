//! The bounds every SMTP session enforces (DESIGN.md security rule 3).

use std::time::Duration;

/// Longest AUTH command or SASL response line, CRLF included
/// (RFC 4954 section 4: "12288 octets"). Fixed, not configurable: it only
/// has to fit a PLAIN response with the longest password the directory
/// accepts.
pub const MAX_AUTH_LINE: usize = 12_288;

/// Limits of one SMTP session. Every field has a safe default; the
/// configuration maps its `[smtp]` settings onto a copy of
/// [`SmtpLimits::default`].
///
/// A client that breaks a limit gets the reply named on the field and
/// nothing of the offending message is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpLimits {
    /// Largest message accepted, in bytes of message data as the client
    /// sends it (after dot-unstuffing, before the headers we add).
    /// Announced in the EHLO `SIZE` keyword (RFC 1870). `MAIL FROM ...
    /// SIZE=n` above it gets `552 5.3.4` at once; a message that turns out
    /// larger is read to its end, discarded and answered `552 5.3.4`.
    /// Default 50 MiB.
    pub max_message_size: usize,
    /// Recipients per transaction; the next `RCPT` gets `452 4.5.3`
    /// (RFC 5321 section 4.5.3.1.10: the client retries the rest later).
    /// Default 100.
    pub max_recipients: usize,
    /// Longest command line, CRLF included. RFC 5321 section 4.5.3.1.4 sets
    /// 512 as the minimum a server must take; extensions (SIZE, DSN) make
    /// lines longer, so the default is 1000. A longer line gets
    /// `500 5.5.2` and is discarded up to its end.
    pub max_command_line: usize,
    /// Longest line inside message data, CRLF included. RFC 5322 section
    /// 2.1.1 caps lines at 998 characters, but real mail breaks that, so
    /// the default is a lenient 64 KiB. Longer: `554 5.6.0` after the end
    /// of the data, nothing stored.
    pub max_data_line: usize,
    /// Largest header block (every header field up to the empty line).
    /// Larger: `552 5.3.4`, nothing stored. Default 1 MiB.
    pub max_header_size: usize,
    /// Most header fields in a message. More: `552 5.3.4`, nothing stored.
    /// Default 5000.
    pub max_headers: usize,
    /// Most `Received` fields in a message; more means it is going round in
    /// a loop: `554 5.4.6`, nothing stored. RFC 5321 section 6.3 asks for
    /// a threshold of at least 100, the default.
    pub max_received: usize,
    /// Failed commands (replies 5xx) before the session is closed with
    /// `421 4.7.0`. Default 10.
    pub max_errors: u32,
    /// Longest a session may last, however busy; then it is closed with
    /// `421 4.4.2` when it next waits for the client. The server's idle
    /// timeout covers silent clients; this covers slow drip-feeders.
    /// Default one hour.
    pub max_session_duration: Duration,
}

impl Default for SmtpLimits {
    fn default() -> Self {
        SmtpLimits {
            max_message_size: 50 * 1024 * 1024,
            max_recipients: 100,
            max_command_line: 1000,
            max_data_line: 64 * 1024,
            max_header_size: 1024 * 1024,
            max_headers: 5000,
            max_received: 100,
            max_errors: 10,
            max_session_duration: Duration::from_secs(3600),
        }
    }
}
