//! The POP3 front end (RFC 1939) over the shared account data model: the
//! `pop3` (STLS) and `pop3s` (implicit TLS) listeners.
//!
//! What this module owns:
//! * [`Pop3Handler`], the [`bulwark_server::ConnectionHandler`] for both
//!   listeners;
//! * the POP3 session: line framing with a cap (`line`), command parsing
//!   (`command`), the state machine AUTHORIZATION → TRANSACTION → UPDATE
//!   (`session`, RFC 1939 sections 3 to 6) and the multi-line encoding of
//!   messages (`render`: CRLF line ends, byte-stuffing, TOP);
//! * the extensions CAPA and response codes (RFC 2449), STLS (RFC 2595
//!   section 4), AUTH PLAIN (RFC 5034 with RFC 4616) and the SYS/AUTH
//!   response codes (RFC 3206).
//!
//! What it must not do:
//! * keep mail of its own: the maildrop is the user's Inbox in the store,
//!   the same mailbox IMAP (and later JMAP) sees. POP3 only reads it and,
//!   on QUIT, expunges what the client deleted (RFC 1939 section 6);
//! * delete anything before QUIT: DELE only marks, a dropped connection
//!   or a server shutdown leaves the maildrop untouched;
//! * accept a password before TLS: USER, PASS and AUTH are refused with
//!   `-ERR [AUTH]` on a plaintext connection (RFC 2595 section 4 lets the
//!   server require STLS first), and USER/SASL PLAIN are advertised in
//!   CAPA only over TLS;
//! * decide who may log in or count failures itself: every attempt goes to
//!   [`bulwark_directory::Directory::authenticate`], which applies the rate
//!   limits and bans; replies never tell an unknown user from a wrong
//!   password (USER always answers `+OK`);
//! * reach another account's data: the only mailbox it resolves is the
//!   logged-in user's own Inbox;
//! * hold unbounded client input: see [`Pop3Limits`]. The idle timeout is
//!   the server runtime's (RFC 1939 section 3 asks for at least 10 minutes).
//!
//! # Design
//!
//! `line`, `command`, `render` and `session` are sans-I/O (DESIGN.md
//! "Protocol codecs are sans-I/O"): bytes go in with `Session::feed`,
//! `Session::poll` hands out the next thing the driver must do (start
//! TLS, check credentials, read a message, commit deletions, close) and
//! the driver hands the result back; replies accumulate in an output
//! buffer. `handler` is the thin async driver: it reads, writes, calls the
//! directory and the store, and contains no protocol decisions.
//!
//! # Maildrop semantics
//!
//! At login the session takes a snapshot of the Inbox listing; message
//! numbers and sizes stay fixed for the session (RFC 1939 section 5).
//! The store is shared with other sessions, so there is no exclusive lock
//! (RFC 1939 section 8 allows servers to skip it): a message expunged by
//! another session keeps its number but RETR and TOP answer
//! `-ERR no such message`. The driver learns of such expunges from the
//! account's change notices and re-lists the Inbox only when one arrived.
//! Unique ids (UIDL, RFC 1939 section 7) are `<uidvalidity>-<uid>`, stable
//! across sessions. Sizes are the stored sizes; messages arriving by SMTP
//! are stored with CRLF line ends, so they equal the octets sent.
//!
//! # Status
//!
//! Implemented: USER, PASS, QUIT, STAT, LIST, RETR, DELE, NOOP, RSET, TOP,
//! UIDL, CAPA, STLS, AUTH PLAIN (with initial response and with the `+ `
//! continuation; `AUTH` alone lists the mechanisms). Not offered: APOP
//! (needs the plaintext password on the server), the obsolete LAST and
//! RPOP, UTF8 and LANG (RFC 6856), LOGIN-DELAY and EXPIRE.

mod command;
mod handler;
mod line;
mod render;
mod session;

pub use handler::Pop3Handler;

/// Bounds on what one POP3 session may make the server hold or do
/// (DESIGN.md security rule 3). Every field has a safe default; the owner
/// wires configuration values in through [`Pop3Handler::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pop3Limits {
    /// Longest command line accepted, CRLF included. RFC 2449 section 4
    /// caps commands at 255 octets but RFC 5034 section 4 lets SASL lines
    /// grow, so the default is 8 KiB; values below 512 (RFC 1939's
    /// response line length) are raised to 512. A longer line is answered
    /// `-ERR line too long`, discarded, and counts as a bad command.
    pub max_line_bytes: usize,
    /// Bad commands (unknown, malformed, wrong state, too long) in one
    /// session before it is closed.
    pub max_bad_commands: u32,
    /// Failed authentications in one session before it is closed. The
    /// directory's own per-IP and per-account limits apply on top.
    pub max_auth_failures: u32,
}

impl Default for Pop3Limits {
    fn default() -> Self {
        Pop3Limits {
            max_line_bytes: 8 * 1024,
            max_bad_commands: 10,
            max_auth_failures: 3,
        }
    }
}
