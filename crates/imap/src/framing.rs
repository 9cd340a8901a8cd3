//! Splitting client bytes into complete commands (lines plus literals),
//! with caps, before anything is parsed. Sans-I/O.
//!
//! RFC 9051 section 4.3 / RFC 3501 section 4.3: a literal is announced by
//! `{n}` (synchronizing: the server answers `+` before the client sends the
//! bytes, RFC 9051 section 7.5) or `{n+}` (non-synchronizing, LITERAL+,
//! RFC 7888). The framer decides on each announcement *before* any literal
//! byte is accepted: a synchronizing literal over the limit is refused
//! without being read; a non-synchronizing one over the limit is read and
//! thrown away without being kept, then the command is refused. Literal
//! bytes are never scanned for line ends, so literal data can never be
//! mistaken for a command.

use crate::limits::Limits;

/// Why a command was refused by the framer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reject {
    /// A line longer than [`Limits::max_line_bytes`].
    LineTooLong,
    /// A literal over the limit for its command.
    LiteralTooLarge {
        /// Whether the command is an APPEND (answered `NO [TOOBIG]`).
        append: bool,
    },
    /// The command as a whole is over [`Limits::max_command_bytes`].
    CommandTooLarge,
    /// Parentheses nested deeper than [`Limits::max_nesting`].
    TooDeep,
}

impl Reject {
    /// Text for the client.
    pub(crate) fn text(self) -> &'static str {
        match self {
            Reject::LineTooLong => "Command line too long",
            Reject::LiteralTooLarge { append: true } => "Message larger than APPENDLIMIT",
            Reject::LiteralTooLarge { append: false } => "Literal too large",
            Reject::CommandTooLarge => "Command too large",
            Reject::TooDeep => "Parentheses nested too deeply",
        }
    }
}

/// What the framer found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A complete command, as sent (lines and literal data).
    Command(Vec<u8>),
    /// The client announced an acceptable synchronizing literal: send a
    /// continuation request (`+ ...`) and keep reading.
    Continue,
    /// The command was refused and skipped; the stream is in sync again.
    Rejected {
        /// The command's tag, if one could be read.
        tag: Option<String>,
        /// Why.
        why: Reject,
    },
    /// The stream cannot be resynchronised: say BYE and close.
    Fatal(Reject),
    /// In line mode: one line without its line ending.
    Line(Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Line,
    Literal { remaining: u64 },
}

/// The command splitter.
#[derive(Debug)]
pub(crate) struct Framer {
    input: Vec<u8>,
    pos: usize,
    msg: Vec<u8>,
    state: State,
    /// Set when the current command is being skipped.
    discard: Option<Reject>,
    tag: Option<String>,
    append: bool,
    first_line: bool,
    /// Parenthesis depth so far in the current command.
    depth: usize,
    /// Bytes of the current command seen, kept or not.
    seen: u64,
    line_mode: bool,
    max_line: usize,
    max_literal: u64,
    max_append: u64,
    max_command: u64,
    max_nesting: usize,
}

impl Framer {
    pub(crate) fn new(limits: &Limits) -> Framer {
        Framer {
            input: Vec::new(),
            pos: 0,
            msg: Vec::new(),
            state: State::Line,
            discard: None,
            tag: None,
            append: false,
            first_line: true,
            depth: 0,
            seen: 0,
            line_mode: false,
            max_line: limits.max_line_bytes,
            max_literal: limits.max_literal_bytes,
            max_append: limits.max_append_bytes,
            max_command: limits.max_command_bytes,
            max_nesting: limits.max_nesting,
        }
    }

    /// Adds received bytes. The caller reads more only when [`Framer::next`]
    /// returns `None`, so what is buffered stays bounded by one line (or
    /// one literal, which goes straight into the command).
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
    }

    /// Line mode reads bare lines (AUTHENTICATE responses, IDLE's DONE),
    /// with no literal detection.
    pub(crate) fn set_line_mode(&mut self, on: bool) {
        self.line_mode = on;
    }

    /// Drops everything buffered: after STARTTLS, plaintext pipelined
    /// behind the command must not be read as if it came over TLS
    /// (RFC 9051 section 6.2.1; CVE-2011-0411).
    pub(crate) fn discard_buffered(&mut self) {
        self.input.clear();
        self.pos = 0;
        self.reset();
    }

    /// Bytes held for the current command and not yet consumed input.
    #[cfg(test)]
    pub(crate) fn buffered_bytes(&self) -> usize {
        self.msg.len() + self.input.len()
    }

    /// Whether bytes of a next command are already buffered.
    pub(crate) fn has_buffered(&self) -> bool {
        self.pos < self.input.len()
    }

    fn reset(&mut self) {
        self.msg = Vec::new();
        self.state = State::Line;
        self.discard = None;
        self.tag = None;
        self.append = false;
        self.first_line = true;
        self.depth = 0;
        self.seen = 0;
    }

    fn compact(&mut self) {
        if self.pos > 0 {
            self.input.drain(..self.pos);
            self.pos = 0;
        }
    }

    fn finish(&mut self) -> Frame {
        let frame = match self.discard {
            Some(why) => Frame::Rejected {
                tag: self.tag.take(),
                why,
            },
            None => Frame::Command(std::mem::take(&mut self.msg)),
        };
        self.reset();
        frame
    }

    fn reject_now(&mut self, why: Reject) -> Frame {
        self.discard = Some(why);
        self.finish()
    }

    /// The next complete frame, or `None` when more bytes are needed.
    #[allow(clippy::should_implement_trait)]
    pub(crate) fn next(&mut self) -> Option<Frame> {
        loop {
            match self.state {
                State::Literal { remaining } => {
                    let available = (self.input.len() - self.pos) as u64;
                    let take = available.min(remaining);
                    // `take` fits in usize: it is at most the buffered length.
                    let end = self.pos + take as usize;
                    if self.discard.is_none() {
                        self.msg.extend_from_slice(&self.input[self.pos..end]);
                    }
                    self.pos = end;
                    if take < remaining {
                        self.state = State::Literal {
                            remaining: remaining - take,
                        };
                        self.compact();
                        return None;
                    }
                    self.state = State::Line;
                }
                State::Line => {
                    let Some(lf) = self.input[self.pos..].iter().position(|&b| b == b'\n') else {
                        if self.input.len() - self.pos > self.max_line {
                            return Some(Frame::Fatal(Reject::LineTooLong));
                        }
                        self.compact();
                        return None;
                    };
                    let start = self.pos;
                    let end = start + lf + 1;
                    self.pos = end;
                    if end - start > self.max_line {
                        return Some(Frame::Fatal(Reject::LineTooLong));
                    }
                    if self.line_mode {
                        let line = trim_eol(&self.input[start..end]).to_vec();
                        self.compact();
                        return Some(Frame::Line(line));
                    }
                    let line = self.input[start..end].to_vec();
                    if let Some(frame) = self.take_line(&line) {
                        return Some(frame);
                    }
                }
            }
        }
    }

    /// Handles one command line; returns a frame when the command ends or
    /// needs the server's attention.
    fn take_line(&mut self, line: &[u8]) -> Option<Frame> {
        if self.first_line {
            self.first_line = false;
            let mut words = line.split(|&b| b == b' ');
            let tag = words.next().unwrap_or_default();
            self.tag = std::str::from_utf8(tag)
                .ok()
                .filter(|t| !t.is_empty() && imap_codec::imap_types::core::Tag::validate(t).is_ok())
                .map(str::to_string);
            self.append = words
                .next()
                .is_some_and(|w| trim_eol(w).eq_ignore_ascii_case(b"APPEND"));
        }
        self.seen += line.len() as u64;
        if self.discard.is_none() {
            self.track_depth(line);
        }
        if self.discard.is_none() && self.seen > self.command_cap() {
            self.discard = Some(Reject::CommandTooLarge);
        }
        if self.discard.is_none() {
            self.msg.extend_from_slice(line);
        }
        let Some((length, sync)) = literal_announcement(line) else {
            return Some(self.finish());
        };
        let limit = if self.append {
            self.max_append
        } else {
            self.max_literal
        };
        if self.discard.is_none() && length > limit {
            self.discard = Some(Reject::LiteralTooLarge {
                append: self.append,
            });
        }
        self.seen = self.seen.saturating_add(length);
        if self.discard.is_none() && self.seen > self.command_cap() {
            self.discard = Some(Reject::CommandTooLarge);
        }
        if let Some(why) = self.discard {
            if sync {
                // The client waits for our go-ahead, which never comes: the
                // literal is not sent, and the command ends here
                // (RFC 9051 section 7.5).
                return Some(self.reject_now(why));
            }
            // LITERAL+: the bytes come anyway; read and drop them.
            self.state = State::Literal { remaining: length };
            return None;
        }
        self.state = State::Literal { remaining: length };
        sync.then_some(Frame::Continue)
    }

    /// The most bytes the current command may have: one message plus a
    /// line for APPEND, the command cap for anything else.
    fn command_cap(&self) -> u64 {
        if self.append {
            self.max_append.saturating_add(self.max_line as u64)
        } else {
            self.max_command
        }
    }

    /// Counts parenthesis depth outside quoted strings; the depth check
    /// runs before any parser recursion.
    fn track_depth(&mut self, line: &[u8]) {
        let mut in_quote = false;
        let mut escaped = false;
        for &b in line {
            if in_quote {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_quote = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_quote = true,
                b'(' | b'[' => {
                    self.depth += 1;
                    if self.depth > self.max_nesting {
                        self.discard = Some(Reject::TooDeep);
                        return;
                    }
                }
                b')' | b']' => self.depth = self.depth.saturating_sub(1),
                _ => {}
            }
        }
    }
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// `{n}` or `{n+}` (or `~{n}` for literal8) at the end of a line:
/// RFC 9051 `literal = "{" number64 ["+"] "}" CRLF`.
fn literal_announcement(line: &[u8]) -> Option<(u64, bool)> {
    let line = trim_eol(line);
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let spec = &inner[open + 1..];
    let (digits, sync) = match spec.strip_suffix(b"+") {
        Some(d) => (d, false),
        None => (spec, true),
    };
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some((n, sync))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framer() -> Framer {
        Framer::new(&Limits {
            max_line_bytes: 100,
            max_literal_bytes: 10,
            max_append_bytes: 50,
            max_command_bytes: 200,
            ..Limits::default()
        })
    }

    #[test]
    fn lines_and_pipelining() {
        let mut f = framer();
        f.feed(b"a NOOP\r\nb CAPA");
        assert_eq!(f.next(), Some(Frame::Command(b"a NOOP\r\n".to_vec())));
        assert_eq!(f.next(), None);
        f.feed(b"BILITY\r\n");
        assert_eq!(f.next(), Some(Frame::Command(b"b CAPABILITY\r\n".to_vec())));
        assert_eq!(f.next(), None);
    }

    #[test]
    fn sync_literal_asks_for_continuation() {
        let mut f = framer();
        f.feed(b"a LOGIN {5}\r\n");
        assert_eq!(f.next(), Some(Frame::Continue));
        assert_eq!(f.next(), None);
        f.feed(b"al\r\nc {3+}\r\npw!\r\n");
        assert_eq!(
            f.next(),
            Some(Frame::Command(
                b"a LOGIN {5}\r\nal\r\nc {3+}\r\npw!\r\n".to_vec()
            ))
        );
    }

    #[test]
    fn oversized_sync_literal_is_refused_unread() {
        let mut f = framer();
        f.feed(b"a1 APPEND INBOX {100000000}\r\na2 NOOP\r\n");
        assert_eq!(
            f.next(),
            Some(Frame::Rejected {
                tag: Some("a1".into()),
                why: Reject::LiteralTooLarge { append: true }
            })
        );
        assert_eq!(f.next(), Some(Frame::Command(b"a2 NOOP\r\n".to_vec())));
    }

    #[test]
    fn oversized_non_sync_literal_is_skipped_unkept() {
        let mut f = framer();
        f.feed(b"a1 LOGIN {20+}\r\n");
        assert_eq!(f.next(), None);
        f.feed(b"0123456789");
        assert_eq!(f.next(), None);
        assert!(f.msg.len() < 20);
        f.feed(b"a2 NOOP\r\n\r\na3 NOOP\r\n");
        assert_eq!(
            f.next(),
            Some(Frame::Rejected {
                tag: Some("a1".into()),
                why: Reject::LiteralTooLarge { append: false }
            })
        );
        assert_eq!(f.next(), Some(Frame::Command(b"a3 NOOP\r\n".to_vec())));
    }

    #[test]
    fn literal_data_is_never_a_command() {
        let mut f = framer();
        f.feed(b"a1 LOGIN {9+}\r\nb NOOP\r\n x\r\n");
        assert_eq!(
            f.next(),
            Some(Frame::Command(
                b"a1 LOGIN {9+}\r\nb NOOP\r\n x\r\n".to_vec()
            ))
        );
    }

    #[test]
    fn long_line_is_fatal() {
        let mut f = framer();
        f.feed(&[b'x'; 150]);
        assert_eq!(f.next(), Some(Frame::Fatal(Reject::LineTooLong)));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut f = framer();
        f.feed(b"a SEARCH ((((((((((ALL))))))))))\r\nb NOOP\r\n");
        assert_eq!(
            f.next(),
            Some(Frame::Rejected {
                tag: Some("a".into()),
                why: Reject::TooDeep
            })
        );
        assert_eq!(f.next(), Some(Frame::Command(b"b NOOP\r\n".to_vec())));
        // Parentheses inside quoted strings do not count.
        f.feed(b"c SEARCH SUBJECT \"((((((((((((\"\r\n");
        assert!(matches!(f.next(), Some(Frame::Command(_))));
    }

    #[test]
    fn line_mode_and_discard() {
        let mut f = framer();
        f.set_line_mode(true);
        f.feed(b"DONE {5}\r\n");
        assert_eq!(f.next(), Some(Frame::Line(b"DONE {5}".to_vec())));
        f.set_line_mode(false);
        f.feed(b"a STARTTLS\r\nb LOGIN x y\r\n");
        assert!(matches!(f.next(), Some(Frame::Command(_))));
        f.discard_buffered();
        assert_eq!(f.next(), None);
    }

    #[test]
    fn announcements() {
        assert_eq!(literal_announcement(b"x {12}\r\n"), Some((12, true)));
        assert_eq!(literal_announcement(b"x {12+}\r\n"), Some((12, false)));
        assert_eq!(literal_announcement(b"x ~{3}\r\n"), Some((3, true)));
        assert_eq!(literal_announcement(b"x {}\r\n"), None);
        assert_eq!(literal_announcement(b"x {1a}\r\n"), None);
        assert_eq!(literal_announcement(b"x {99999999999999999999}\r\n"), None);
    }
}
