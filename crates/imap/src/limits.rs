//! Bounds on what one IMAP session may make the server hold or do
//! (DESIGN.md security rule 3).

use std::time::Duration;

/// Per-session limits. Every field has a safe default; the owner wires
/// configuration values in through [`crate::ImapHandler::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest command line (one line, without its literals). Longer lines
    /// end the session with `* BYE`: the rest of the line cannot be told
    /// apart from literal data, so resynchronising would be guesswork.
    pub max_line_bytes: usize,
    /// Largest message APPEND accepts; advertised as `APPENDLIMIT=` (RFC 7889).
    pub max_append_bytes: u64,
    /// Largest literal any other command accepts (LOGIN passwords, search
    /// strings, mailbox names).
    pub max_literal_bytes: u64,
    /// Largest command other than APPEND, lines and literals together.
    pub max_command_bytes: u64,
    /// Most elements in one sequence set (`1,3,5:9` has three).
    pub max_sequence_items: usize,
    /// Deepest parenthesis nesting accepted in a command.
    pub max_nesting: usize,
    /// Longest LIST pattern, and most wildcards in it.
    pub max_list_pattern_bytes: usize,
    /// Wildcards (`*`, `%`) allowed in one LIST pattern.
    pub max_list_wildcards: usize,
    /// Failed authentications in one session before `* BYE`.
    pub max_auth_failures: u32,
    /// Consecutive BAD commands before `* BYE`.
    pub max_bad_commands: u32,
    /// How long an IDLE command may wait without client data (RFC 9051
    /// section 5.4: at least 30 minutes).
    pub idle_timeout: Duration,
    /// Concurrent logged-in sessions of one account (a client opens a few
    /// per device; hundreds means a runaway client or an attack).
    pub max_sessions_per_account: usize,
    /// Message bytes a FETCH renders before writing them out, so a FETCH
    /// over many large messages never holds them all at once.
    pub max_fetch_chunk_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line_bytes: 64 * 1024,
            max_append_bytes: 50 * 1024 * 1024,
            max_literal_bytes: 64 * 1024,
            max_command_bytes: 1024 * 1024,
            max_sequence_items: 16 * 1024,
            max_nesting: 8,
            max_list_pattern_bytes: 1024,
            max_list_wildcards: 16,
            max_auth_failures: 3,
            max_bad_commands: 20,
            idle_timeout: Duration::from_secs(30 * 60),
            max_fetch_chunk_bytes: 4 * 1024 * 1024,
            max_sessions_per_account: 50,
        }
    }
}
