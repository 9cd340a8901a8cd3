//! Message data: the strict `DATA` decoder and the checks every message
//! passes, whether it came by `DATA` or `BDAT`.
//!
//! smtp-proto's `DataReceiver` is not used for `DATA`: it ends the data at
//! `CRLF . CR CR LF` too, a sequence other servers read as an ordinary line,
//! and that difference is exactly what SMTP smuggling exploits. Here the
//! only end of data is `CRLF . CRLF` (RFC 5321 section 4.1.1.4), and a
//! message holding any bare LF or bare CR is refused after its real end, so
//! whatever a lenient server upstream or downstream makes of such bytes,
//! Bulwark never stores or forwards them.

use crate::limits::SmtpLimits;

/// Why a message is refused after its data has been read to the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Problem {
    /// More data than `max_message_size`.
    TooBig,
    /// A line longer than `max_data_line`.
    LineTooLong,
    /// A LF not preceded by CR, or a CR not followed by LF.
    BareLineEnding,
    /// The header block is larger than `max_header_size`.
    HeaderTooLarge,
    /// More header fields than `max_headers`.
    TooManyHeaders,
    /// More `Received` fields than `max_received`: the message is most
    /// likely going round in a loop.
    TooManyHops,
}

/// Collects message bytes while checking them. Once a problem is found,
/// the bytes collected so far are dropped and the rest is only counted.
#[derive(Debug)]
pub(crate) struct MessageScanner {
    max_size: usize,
    max_line: usize,
    max_header_size: usize,
    max_headers: usize,
    max_received: usize,
    /// The message, while it is acceptable.
    buf: Vec<u8>,
    /// Bytes seen, kept or not.
    size: usize,
    /// Bytes of the current line so far, CR included.
    line_len: usize,
    /// The previous byte was a CR whose LF has not been seen yet.
    pending_cr: bool,
    /// The next byte starts a line.
    line_start: bool,
    /// Still inside the header block.
    in_header: bool,
    header_size: usize,
    header_count: usize,
    /// End of the header block (offset of the empty line's CRLF end), if seen.
    header_end: Option<usize>,
    problem: Option<Problem>,
}

impl MessageScanner {
    pub(crate) fn new(limits: &SmtpLimits) -> MessageScanner {
        MessageScanner {
            max_size: limits.max_message_size,
            max_line: limits.max_data_line,
            max_header_size: limits.max_header_size,
            max_headers: limits.max_headers,
            max_received: limits.max_received,
            buf: Vec::new(),
            size: 0,
            line_len: 0,
            pending_cr: false,
            line_start: true,
            in_header: true,
            header_size: 0,
            header_count: 0,
            header_end: None,
            problem: None,
        }
    }

    /// Bytes of message data received so far.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    fn fail(&mut self, problem: Problem) {
        if self.problem.is_none() {
            self.problem = Some(problem);
        }
        self.buf = Vec::new();
    }

    /// Takes the next bytes of the message.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.size = self.size.saturating_add(bytes.len());
        if self.problem.is_some() {
            return;
        }
        if self.size > self.max_size {
            self.fail(Problem::TooBig);
            return;
        }
        let mut i = 0;
        while i < bytes.len() {
            if self.pending_cr {
                self.pending_cr = false;
                if bytes[i] == b'\n' {
                    self.end_line();
                    i += 1;
                    continue;
                }
                self.fail(Problem::BareLineEnding);
                return;
            }
            // A run of ordinary bytes up to the next CR or LF, taken whole.
            let end = memchr::memchr2(b'\r', b'\n', &bytes[i..]).map_or(bytes.len(), |p| i + p);
            let counted = if end > i {
                // A line of the header that does not start with white
                // space starts a new field.
                if self.line_start && self.in_header && bytes[i] != b' ' && bytes[i] != b'\t' {
                    self.header_count += 1;
                    if self.header_count > self.max_headers {
                        self.fail(Problem::TooManyHeaders);
                        return;
                    }
                }
                end - i
            } else if bytes[i] == b'\n' {
                self.fail(Problem::BareLineEnding);
                return;
            } else {
                self.pending_cr = true;
                1
            };
            self.line_start = false;
            self.line_len += counted;
            i += counted;
            // The limit counts the CRLF, so a line may hold max_line - 2
            // bytes before its CR.
            if self.line_len > self.max_line.saturating_sub(1) {
                self.fail(Problem::LineTooLong);
                return;
            }
        }
        self.buf.extend_from_slice(bytes);
    }

    fn end_line(&mut self) {
        // line_len counts the CR but not the LF.
        let line_bytes = self.line_len + 1;
        if self.in_header {
            if self.line_len == 1 {
                self.in_header = false;
                self.header_end = Some(self.size_at_line_end());
            } else {
                self.header_size += line_bytes;
                if self.header_size > self.max_header_size {
                    self.fail(Problem::HeaderTooLarge);
                }
            }
        }
        self.line_len = 0;
        self.line_start = true;
    }

    /// Offset just past the line that ended; computed from what was kept.
    fn size_at_line_end(&self) -> usize {
        // Called from inside push() before the bytes are appended, so
        // recompute from the header size: every header line plus CRLF.
        self.header_size + 2
    }

    /// Ends the message: a CR at the very end has no LF and is bare.
    /// Returns the message or why it is refused.
    pub(crate) fn finish(mut self) -> Result<ScannedMessage, Problem> {
        if self.pending_cr && self.problem.is_none() {
            self.fail(Problem::BareLineEnding);
        }
        if self.in_header && self.header_size > self.max_header_size {
            self.fail(Problem::HeaderTooLarge);
        }
        let header_end = self.header_end.unwrap_or(self.buf.len());
        if self.problem.is_none() && received_fields(&self.buf[..header_end]) > self.max_received {
            self.fail(Problem::TooManyHops);
        }
        match self.problem {
            Some(problem) => Err(problem),
            None => Ok(ScannedMessage {
                header_end,
                bytes: self.buf,
            }),
        }
    }
}

/// How many `Received` fields a header block holds: each relay that
/// handled the message added one (RFC 5321 section 4.4).
fn received_fields(header: &[u8]) -> usize {
    const NAME: &[u8] = b"received:";
    header
        .split(|&b| b == b'\n')
        .filter(|line| line.len() >= NAME.len() && line[..NAME.len()].eq_ignore_ascii_case(NAME))
        .count()
}

/// A message that passed the checks.
#[derive(Debug)]
pub(crate) struct ScannedMessage {
    /// The message as the client sent it (unstuffed).
    pub(crate) bytes: Vec<u8>,
    /// Length of the header block including the empty line that ends it
    /// (the whole message if it has no body).
    pub(crate) header_end: usize,
}

/// Where the `DATA` decoder is within a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DotState {
    /// After CRLF (or right after the DATA command): a dot here is special.
    LineStart,
    /// A dot at the start of a line.
    Dot,
    /// `.` CR at the start of a line.
    DotCr,
    /// Anywhere else. `cr` is whether the last byte was a CR.
    Middle { cr: bool },
}

/// Reads the text after `DATA` up to `CRLF . CRLF`, undoing dot-stuffing
/// (RFC 5321 section 4.5.2) and passing the message bytes to a scanner.
#[derive(Debug)]
pub(crate) struct DataDecoder {
    state: DotState,
}

impl DataDecoder {
    /// A decoder positioned right after the `DATA` command's CRLF, which
    /// counts as the CRLF before a first line (so `.` CRLF at once is an
    /// empty message).
    pub(crate) fn new() -> DataDecoder {
        DataDecoder {
            state: DotState::LineStart,
        }
    }

    /// Consumes bytes from `input`. Returns how many were consumed and
    /// whether the end-of-data line was reached (it is consumed, not
    /// passed on).
    pub(crate) fn decode(&mut self, input: &[u8], out: &mut MessageScanner) -> (usize, bool) {
        let mut i = 0;
        // Start of the span of bytes to pass on unchanged.
        let mut span = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                DotState::LineStart => {
                    if b == b'.' {
                        out.push(&input[span..i]);
                        self.state = DotState::Dot;
                        i += 1;
                        span = i;
                    } else {
                        self.state = DotState::Middle { cr: false };
                        // Reprocess b as an ordinary byte.
                    }
                }
                DotState::Dot => {
                    if b == b'\r' {
                        self.state = DotState::DotCr;
                        i += 1;
                        span = i;
                    } else {
                        // A stuffed dot: it is dropped and the line goes on
                        // with b, which is ordinary even if it is a dot.
                        self.state = DotState::Middle { cr: false };
                    }
                }
                DotState::DotCr => {
                    if b == b'\n' {
                        self.state = DotState::LineStart;
                        return (i + 1, true);
                    }
                    // `.` CR then something else: the dot was stuffing and
                    // the CR is data (a bare one, which the scanner refuses).
                    out.push(b"\r");
                    self.state = DotState::Middle { cr: true };
                    span = i;
                }
                DotState::Middle { cr } => {
                    // Fast path: run to the next LF.
                    match memchr::memchr(b'\n', &input[i..]) {
                        Some(offset) => {
                            let lf = i + offset;
                            let before = if offset == 0 {
                                cr
                            } else {
                                input[lf - 1] == b'\r'
                            };
                            i = lf + 1;
                            // Only CRLF starts a new line: after a bare LF a
                            // dot is ordinary data, so `\n.\n` and
                            // `\r\n.\n` never end the message.
                            self.state = if before {
                                DotState::LineStart
                            } else {
                                DotState::Middle { cr: false }
                            };
                        }
                        None => {
                            let last = input[input.len() - 1];
                            self.state = DotState::Middle { cr: last == b'\r' };
                            i = input.len();
                        }
                    }
                }
            }
        }
        out.push(&input[span..i]);
        (i, false)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn limits() -> SmtpLimits {
        SmtpLimits {
            max_message_size: 1000,
            max_data_line: 100,
            max_header_size: 200,
            max_headers: 5,
            ..SmtpLimits::default()
        }
    }

    /// Feeds `chunks` to a decoder; returns the message (or problem) and
    /// the bytes left after the end of data, or None if it never ended.
    type Decoded = (Result<Vec<u8>, Problem>, Vec<u8>);

    fn decode(chunks: &[&[u8]]) -> Option<Decoded> {
        let mut decoder = DataDecoder::new();
        let mut scanner = MessageScanner::new(&limits());
        for (n, chunk) in chunks.iter().enumerate() {
            let (used, done) = decoder.decode(chunk, &mut scanner);
            if done {
                let mut rest = chunk[used..].to_vec();
                for later in &chunks[n + 1..] {
                    rest.extend_from_slice(later);
                }
                return Some((scanner.finish().map(|m| m.bytes), rest));
            }
            assert_eq!(used, chunk.len());
        }
        None
    }

    #[test]
    fn a_message_with_too_many_received_fields_is_a_loop() {
        let limits = SmtpLimits {
            max_received: 3,
            ..SmtpLimits::default()
        };
        let scan = |received: usize| {
            let mut scanner = MessageScanner::new(&limits);
            let mut message = String::new();
            for hop in 0..received {
                // Mixed case, and a folded continuation line that must not count.
                message.push_str(&format!(
                    "{}: from h{hop}\r\n\tby next\r\n",
                    ["Received", "RECEIVED"][hop % 2]
                ));
            }
            message
                .push_str("X-Received: not a hop\r\nSubject: s\r\n\r\nReceived: in the body\r\n");
            scanner.push(message.as_bytes());
            scanner.finish().map(|m| m.bytes.len())
        };
        assert!(scan(3).is_ok());
        assert_eq!(scan(4), Err(Problem::TooManyHops));
    }

    #[test]
    fn plain_message_and_unstuffing() {
        let (msg, rest) = decode(&[b"Subject: x\r\n\r\nhi\r\n..dot\r\n.\r\nQUIT\r\n"]).unwrap();
        assert_eq!(msg.unwrap(), b"Subject: x\r\n\r\nhi\r\n.dot\r\n");
        assert_eq!(rest, b"QUIT\r\n");
    }

    #[test]
    fn empty_message() {
        let (msg, rest) = decode(&[b".\r\n"]).unwrap();
        assert_eq!(msg.unwrap(), b"");
        assert!(rest.is_empty());
    }

    #[test]
    fn end_split_across_every_boundary() {
        let wire: &[u8] = b"A: b\r\n\r\nline\r\n..\r\n.\r\nNOOP\r\n";
        for cut in 0..wire.len() {
            let (msg, rest) = decode(&[&wire[..cut], &wire[cut..]]).unwrap();
            assert_eq!(msg.unwrap(), b"A: b\r\n\r\nline\r\n.\r\n", "cut at {cut}");
            assert_eq!(rest, b"NOOP\r\n", "cut at {cut}");
        }
        // One byte at a time.
        let singles: Vec<&[u8]> = wire.chunks(1).collect();
        let (msg, rest) = decode(&singles).unwrap();
        assert_eq!(msg.unwrap(), b"A: b\r\n\r\nline\r\n.\r\n");
        assert_eq!(rest, b"NOOP\r\n");
    }

    /// Regression: SMTP smuggling (CVE-2023-51764 and friends). None of
    /// these sequences may end the data, and each makes the message bad.
    #[test]
    fn smuggling_sequences_do_not_end_data() {
        for smuggle in [
            &b"\n.\n"[..],
            b"\r\n.\n",
            b"\n.\r\n",
            b"\r.\r\n",
            b"\r\n.\r\r\n",
            b"\r\n.\r",
        ] {
            let mut wire = b"A: b\r\n\r\nbody".to_vec();
            wire.extend_from_slice(smuggle);
            wire.extend_from_slice(b"MAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\n");
            let chunks = [&wire[..]];
            assert!(
                decode(&chunks).is_none(),
                "{smuggle:?} ended the data early"
            );
            wire.extend_from_slice(b"\r\n.\r\n");
            let (msg, rest) = decode(&[&wire[..]]).unwrap();
            assert_eq!(msg, Err(Problem::BareLineEnding), "{smuggle:?}");
            assert!(rest.is_empty());
        }
    }

    #[test]
    fn limits_are_enforced_but_data_is_read_to_its_end() {
        let long_line = format!("A: b\r\n\r\n{}\r\n.\r\nNOOP\r\n", "x".repeat(150));
        let (msg, rest) = decode(&[long_line.as_bytes()]).unwrap();
        assert_eq!(msg, Err(Problem::LineTooLong));
        assert_eq!(rest, b"NOOP\r\n");

        // Exactly at the line limit (98 bytes + CRLF = 100) is fine.
        let ok_line = format!("A: b\r\n\r\n{}\r\n.\r\n", "x".repeat(98));
        assert!(decode(&[ok_line.as_bytes()]).unwrap().0.is_ok());
        let over = format!("A: b\r\n\r\n{}\r\n.\r\n", "x".repeat(99));
        assert_eq!(
            decode(&[over.as_bytes()]).unwrap().0,
            Err(Problem::LineTooLong)
        );

        let big: String = (0..30).map(|_| format!("{}\r\n", "y".repeat(50))).collect();
        let wire = format!("\r\n{big}.\r\n");
        assert_eq!(decode(&[wire.as_bytes()]).unwrap().0, Err(Problem::TooBig));

        let flood: String = (0..6).map(|i| format!("X-{i}: v\r\n")).collect();
        let wire = format!("{flood}\r\nbody\r\n.\r\n");
        assert_eq!(
            decode(&[wire.as_bytes()]).unwrap().0,
            Err(Problem::TooManyHeaders)
        );
        // Folded continuation lines are one field.
        let folded = "A: 1\r\n 2\r\n 3\r\n\t4\r\n 5\r\n 6\r\nB: x\r\n\r\n.\r\n";
        assert!(decode(&[folded.as_bytes()]).unwrap().0.is_ok());

        let fat: String = (0..4)
            .map(|_| format!("H: {}\r\n", "z".repeat(60)))
            .collect();
        let wire = format!("{fat}\r\nbody\r\n.\r\n");
        assert_eq!(
            decode(&[wire.as_bytes()]).unwrap().0,
            Err(Problem::HeaderTooLarge)
        );
    }

    #[test]
    fn header_end_is_found() {
        let mut scanner = MessageScanner::new(&limits());
        scanner.push(b"A: b\r\nC: d\r\n\r\nbody\r\n");
        let msg = scanner.finish().unwrap();
        assert_eq!(&msg.bytes[..msg.header_end], b"A: b\r\nC: d\r\n\r\n");

        let mut scanner = MessageScanner::new(&limits());
        for b in b"A: b\r\n\r\nbody\r\n" {
            scanner.push(&[*b]);
        }
        let msg = scanner.finish().unwrap();
        assert_eq!(&msg.bytes[..msg.header_end], b"A: b\r\n\r\n");
    }

    #[test]
    fn trailing_cr_is_bare() {
        let mut scanner = MessageScanner::new(&limits());
        scanner.push(b"A: b\r\n\r\nbody\r");
        assert_eq!(scanner.finish().err(), Some(Problem::BareLineEnding));
    }

    /// However a message is cut into pushes, the scanner reaches the same
    /// verdict: the same problem, or the same bytes and header end.
    #[test]
    fn scanning_does_not_depend_on_how_bytes_arrive() {
        let pieces: [&[u8]; 9] = [
            b"Subject: x\r\n",
            b" folded\r\n",
            b"\r\n",
            b"body line\r\n",
            b"bare\nLF",
            b"bare\rCR",
            b"\r",
            b"\n",
            b"a fairly long line of body text that goes on and on and on and on and on\r\n",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let scan = |message: &[u8], cuts: &[usize]| {
            let mut scanner = MessageScanner::new(&limits());
            let mut last = 0;
            for &cut in cuts.iter().chain(std::iter::once(&message.len())) {
                scanner.push(&message[last..cut]);
                last = cut;
            }
            scanner.finish().map(|m| (m.bytes, m.header_end))
        };
        for _ in 0..3000 {
            let mut message = Vec::new();
            for _ in 0..next(14) {
                message.extend_from_slice(pieces[next(pieces.len() as u64) as usize]);
            }
            let whole = scan(&message, &[]);
            let mut cuts: Vec<usize> = (0..next(6))
                .map(|_| next(message.len() as u64 + 1) as usize)
                .collect();
            cuts.sort_unstable();
            assert_eq!(
                scan(&message, &cuts),
                whole,
                "{:?}",
                String::from_utf8_lossy(&message)
            );
            let bytewise: Vec<usize> = (1..message.len()).collect();
            assert_eq!(scan(&message, &bytewise), whole);
        }
    }
}
