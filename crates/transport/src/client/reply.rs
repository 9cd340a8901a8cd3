//! Server replies (RFC 5321 section 4.2), read sans-I/O with fixed bounds.
//!
//! The socket loop pushes bytes in ([`ReplyParser::push`], never more than
//! [`ReplyParser::room`]) and takes complete replies out
//! ([`ReplyParser::next_reply`]). The parser holds at most one partial line
//! of [`MAX_LINE`] bytes plus one read, and at most [`MAX_LINES`] finished
//! lines of the reply being assembled: whatever a server sends, that is all
//! it can make us keep.

use std::fmt;

/// Longest reply line, code and CRLF included (RFC 5321 section
/// 4.5.3.1.5).
pub(crate) const MAX_LINE: usize = 512;

/// Most lines in one reply. RFC 5321 sets no limit; EHLO replies, the
/// longest in practice, have a line per extension, so 100 is generous.
pub(crate) const MAX_LINES: usize = 100;

/// Longest reply text kept for outcomes, logs and DSNs.
pub(crate) const MAX_TEXT: usize = 512;

/// Bytes buffered at most: one partial line plus room for one read of at
/// least a whole line.
const BUFFER: usize = 2 * MAX_LINE;

/// One complete reply: its code and the text of each line, made printable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    /// The three-digit code, 200 to 559.
    pub(crate) code: u16,
    /// Each line's text after the code and separator, with every byte
    /// outside printable ASCII replaced by `?`.
    pub(crate) lines: Vec<String>,
}

impl Reply {
    /// The first digit: 2 completion, 3 intermediate, 4 transient failure,
    /// 5 permanent failure (RFC 5321 section 4.2.1).
    pub(crate) fn class(&self) -> u16 {
        self.code / 100
    }

    /// The reply on one line (`550 5.1.1 no such user`), lines joined by a
    /// space and cut at [`MAX_TEXT`] characters: what outcomes carry.
    pub(crate) fn text(&self) -> String {
        let mut text = self.code.to_string();
        for line in &self.lines {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            text.push(' ');
            text.push_str(line);
            if text.len() >= MAX_TEXT {
                break;
            }
        }
        // Only ASCII in here, so any byte index is a char boundary.
        text.truncate(MAX_TEXT);
        text
    }
}

/// Why the bytes from the server are not a reply. Each ends the session:
/// after one of these there is no telling where the next reply starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReplyError {
    /// A line longer than [`MAX_LINE`] bytes.
    LineTooLong,
    /// A reply with more than [`MAX_LINES`] lines.
    TooManyLines,
    /// A line that does not start with a valid code and separator, or a
    /// code that differs from the earlier lines of the same reply.
    Syntax(String),
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LineTooLong => write!(f, "reply line longer than {MAX_LINE} bytes"),
            Self::TooManyLines => write!(f, "reply longer than {MAX_LINES} lines"),
            Self::Syntax(line) => write!(f, "malformed reply line {line:?}"),
        }
    }
}

/// Splits the server's bytes into replies.
#[derive(Debug, Default)]
pub(crate) struct ReplyParser {
    /// Bytes not yet split into lines: at most one partial line after
    /// [`next_reply`](Self::next_reply) returns.
    buffer: Vec<u8>,
    /// The code of the reply being assembled, once its first line is in.
    code: Option<u16>,
    lines: Vec<String>,
}

impl ReplyParser {
    pub(crate) fn new() -> Self {
        Self {
            buffer: Vec::with_capacity(BUFFER),
            code: None,
            lines: Vec::new(),
        }
    }

    /// How many bytes [`push`](Self::push) takes now. After
    /// [`next_reply`](Self::next_reply) has returned `Ok(None)` this is at
    /// least [`MAX_LINE`], so the reader always makes progress.
    pub(crate) fn room(&self) -> usize {
        BUFFER.saturating_sub(self.buffer.len())
    }

    /// Adds bytes read from the server; anything beyond [`room`](Self::room)
    /// is refused as an overlong line, so the buffer stays bounded even if
    /// the caller errs.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Result<(), ReplyError> {
        if bytes.len() > self.room() {
            return Err(ReplyError::LineTooLong);
        }
        self.buffer.extend_from_slice(bytes);
        Ok(())
    }

    /// Whether bytes are waiting that no reply has consumed yet. Checked
    /// after the reply to STARTTLS: anything the server sent after it
    /// arrived in plaintext and must not be read as if it came over TLS
    /// (the STARTTLS command injection of CVE-2011-0411, from the server's
    /// side).
    pub(crate) fn has_pending(&self) -> bool {
        !self.buffer.is_empty() || self.code.is_some()
    }

    /// The next complete reply, `Ok(None)` if more bytes are needed.
    pub(crate) fn next_reply(&mut self) -> Result<Option<Reply>, ReplyError> {
        loop {
            let Some(end) = self.buffer.iter().position(|&b| b == b'\n') else {
                // No line end yet: the partial line must still be able to
                // end within the limit.
                if self.buffer.len() >= MAX_LINE {
                    return Err(ReplyError::LineTooLong);
                }
                return Ok(None);
            };
            if end + 1 > MAX_LINE {
                return Err(ReplyError::LineTooLong);
            }
            // Servers end lines with CRLF; a bare LF is read the same way,
            // which costs nothing in a reply (unlike in message data).
            let mut line = &self.buffer[..end];
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            let (code, last, text) = reply_line(line)?;
            match self.code {
                None => self.code = Some(code),
                Some(first) if first != code => {
                    return Err(ReplyError::Syntax(printable(line)));
                }
                Some(_) => {}
            }
            if self.lines.len() == MAX_LINES {
                return Err(ReplyError::TooManyLines);
            }
            self.lines.push(text);
            self.buffer.drain(..=end);
            if last {
                self.code = None;
                return Ok(Some(Reply {
                    code,
                    lines: std::mem::take(&mut self.lines),
                }));
            }
        }
    }
}

/// `Reply-line = *( Reply-code "-" [ textstring ] CRLF )
///               Reply-code [ SP textstring ] CRLF`
/// and `Reply-code = %x32-35 %x30-35 %x30-39` (RFC 5321 section 4.2), for
/// one line without its line end. Returns the code, whether this is the
/// last line, and the text.
fn reply_line(line: &[u8]) -> Result<(u16, bool, String), ReplyError> {
    let syntax = || ReplyError::Syntax(printable(line));
    let (code, rest) = match line {
        [a @ b'2'..=b'5', b @ b'0'..=b'5', c @ b'0'..=b'9', rest @ ..] => (
            u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'),
            rest,
        ),
        _ => return Err(syntax()),
    };
    match rest {
        [] => Ok((code, true, String::new())),
        [b' ', text @ ..] => Ok((code, true, printable(text))),
        [b'-', text @ ..] => Ok((code, false, printable(text))),
        _ => Err(syntax()),
    }
}

/// The bytes as text with everything outside printable ASCII replaced by
/// `?`: reply text goes into logs and DSNs, where control characters and
/// stray encodings do harm.
pub(crate) fn printable(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parse_all(input: &[u8]) -> Result<Vec<Reply>, ReplyError> {
        let mut parser = ReplyParser::new();
        let mut replies = Vec::new();
        for chunk in input.chunks(7) {
            parser.push(chunk)?;
            while let Some(reply) = parser.next_reply()? {
                replies.push(reply);
            }
        }
        Ok(replies)
    }

    #[test]
    fn single_and_multi_line_replies() {
        let replies = parse_all(
            b"220 mx.example ESMTP\r\n250-mx.example\r\n250-SIZE 1000\r\n250 8BITMIME\r\n",
        )
        .unwrap();
        assert_eq!(replies.len(), 2);
        assert_eq!(replies[0].code, 220);
        assert_eq!(replies[0].lines, ["mx.example ESMTP"]);
        assert_eq!(replies[1].code, 250);
        assert_eq!(replies[1].lines, ["mx.example", "SIZE 1000", "8BITMIME"]);
        assert_eq!(replies[1].text(), "250 mx.example SIZE 1000 8BITMIME");
    }

    #[test]
    fn code_alone_and_bare_lf() {
        let replies = parse_all(b"250\r\n354 go\n250 \r\n").unwrap();
        let codes: Vec<u16> = replies.iter().map(|r| r.code).collect();
        assert_eq!(codes, [250, 354, 250]);
        assert_eq!(replies[0].text(), "250");
        assert_eq!(replies[2].text(), "250");
    }

    #[test]
    fn bad_codes_are_syntax_errors() {
        for input in [
            &b"199 x\r\n"[..],
            b"600 x\r\n",
            b"260 x\r\n",
            b"25 x\r\n",
            b"2500 x\r\n",
            b"25a x\r\n",
            b"250x\r\n",
            b"\r\n",
            b"hello\r\n",
        ] {
            assert!(
                matches!(parse_all(input), Err(ReplyError::Syntax(_))),
                "{input:?}"
            );
        }
    }

    #[test]
    fn code_must_not_change_within_a_reply() {
        assert!(matches!(
            parse_all(b"250-one\r\n550 two\r\n"),
            Err(ReplyError::Syntax(_))
        ));
    }

    #[test]
    fn line_length_limit_includes_crlf() {
        let mut ok = b"250 ".to_vec();
        ok.resize(MAX_LINE - 2, b'x');
        ok.extend_from_slice(b"\r\n");
        assert_eq!(parse_all(&ok).unwrap().len(), 1);

        let mut long = b"250 ".to_vec();
        long.resize(MAX_LINE - 1, b'x');
        long.extend_from_slice(b"\r\n");
        assert_eq!(parse_all(&long), Err(ReplyError::LineTooLong));
    }

    #[test]
    fn endless_line_is_refused_with_the_buffer_bounded() {
        let mut parser = ReplyParser::new();
        let chunk = [b'x'; 100];
        let mut fed = 0;
        let error = loop {
            let n = parser.room().min(chunk.len());
            assert!(n > 0, "parser stopped taking input without an error");
            parser.push(&chunk[..n]).unwrap();
            fed += n;
            assert!(parser.buffer.len() <= BUFFER);
            match parser.next_reply() {
                Ok(None) => {}
                Ok(Some(_)) => panic!("a reply out of an endless line"),
                Err(e) => break e,
            }
        };
        assert_eq!(error, ReplyError::LineTooLong);
        assert!(fed <= MAX_LINE + chunk.len());
        // Pushing past the room is refused rather than buffered.
        assert_eq!(
            parser.push(&[b'x'; BUFFER + 1]),
            Err(ReplyError::LineTooLong)
        );
    }

    #[test]
    fn too_many_lines() {
        let mut input = Vec::new();
        for _ in 0..MAX_LINES {
            input.extend_from_slice(b"250-x\r\n");
        }
        input.extend_from_slice(b"250 last\r\n");
        assert_eq!(parse_all(&input), Err(ReplyError::TooManyLines));

        let mut input = Vec::new();
        for _ in 0..MAX_LINES - 1 {
            input.extend_from_slice(b"250-x\r\n");
        }
        input.extend_from_slice(b"250 last\r\n");
        assert_eq!(parse_all(&input).unwrap()[0].lines.len(), MAX_LINES);
    }

    #[test]
    fn text_is_printable_and_bounded() {
        let replies = parse_all(b"550-bad \x1b[31m\xff\r\n550 end\tx\r\n").unwrap();
        assert_eq!(replies[0].text(), "550 bad ?[31m? end?x");

        let mut input = Vec::new();
        for _ in 0..20 {
            input.extend_from_slice(b"451-");
            input.extend_from_slice(&[b'y'; 100]);
            input.extend_from_slice(b"\r\n");
        }
        input.extend_from_slice(b"451 end\r\n");
        assert_eq!(parse_all(&input).unwrap()[0].text().len(), MAX_TEXT);
    }

    #[test]
    fn pending_bytes_are_visible() {
        let mut parser = ReplyParser::new();
        parser.push(b"220 go ahead\r\n250 injected\r\n").unwrap();
        assert_eq!(parser.next_reply().unwrap().unwrap().code, 220);
        assert!(parser.has_pending());

        let mut parser = ReplyParser::new();
        parser.push(b"220 go ahead\r\n").unwrap();
        parser.next_reply().unwrap().unwrap();
        assert!(!parser.has_pending());
    }
}
