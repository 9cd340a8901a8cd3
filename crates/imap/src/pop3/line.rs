//! Splitting client input into command lines, with a cap.
//!
//! RFC 1939 section 3: commands are lines ending in CRLF. A bare LF is
//! accepted too (lenient, and harmless: POP3 commands carry no data that
//! could be smuggled past a line end). Memory stays bounded: a line longer
//! than the cap is dropped as it arrives, never buffered whole. It is
//! answered once (so replies stay in step with the client's commands), and
//! every further cap's worth of it is reported as [`Line::Overflow`] so a
//! client that never ends its line runs into the bad-command limit.

/// The smallest cap accepted: RFC 1939's 512-octet response line.
const MIN_LINE_BYTES: usize = 512;

/// One unit of input.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// A complete line without its CRLF (or LF).
    Complete(Vec<u8>),
    /// A line over the cap; its bytes were discarded. Answered.
    TooLong,
    /// Another cap's worth of a line already reported: counted, not
    /// answered.
    Overflow,
}

/// Buffers input and hands out lines.
#[derive(Debug)]
pub(crate) struct LineReader {
    buf: Vec<u8>,
    /// Start of the unread part of `buf`.
    start: usize,
    /// Longest line accepted, line end included.
    max: usize,
    /// Inside an over-long line that was already reported.
    skipping: bool,
    /// Bytes of that line dropped since it was last reported.
    skipped: usize,
}

impl LineReader {
    /// A reader accepting lines of up to `max` bytes, CRLF included.
    pub(crate) fn new(max: usize) -> LineReader {
        LineReader {
            buf: Vec::new(),
            start: 0,
            max: max.max(MIN_LINE_BYTES),
            skipping: false,
            skipped: 0,
        }
    }

    /// Appends bytes read from the client. The caller reads again only
    /// when [`LineReader::next_line`] has returned `None`, so the buffer
    /// never holds more than one partial line plus one read.
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Forgets everything buffered: after STLS, nothing received in
    /// plaintext may be read as if it came over TLS (RFC 2595 section 4,
    /// the STARTTLS command injection flaw of RFC 3207 section 4.2).
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
        self.skipping = false;
        self.skipped = 0;
    }

    /// The next line, or `None` when more input is needed.
    pub(crate) fn next_line(&mut self) -> Option<Line> {
        loop {
            let pending = self.buf.get(self.start..).unwrap_or_default();
            match pending.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    let mut line = &pending[..end];
                    if let Some(stripped) = line.strip_suffix(b"\r") {
                        line = stripped;
                    }
                    let too_long = end + 1 > self.max;
                    let line = line.to_vec();
                    self.start += end + 1;
                    if self.skipping {
                        // The end of a line already answered.
                        self.skipping = false;
                        self.skipped = 0;
                        continue;
                    }
                    return Some(if too_long {
                        Line::TooLong
                    } else {
                        Line::Complete(line)
                    });
                }
                None => {
                    let len = pending.len();
                    if len < self.max {
                        return None;
                    }
                    // No line end within the cap: drop what we have.
                    self.buf.clear();
                    self.start = 0;
                    if !self.skipping {
                        self.skipping = true;
                        self.skipped = 0;
                        return Some(Line::TooLong);
                    }
                    self.skipped += len;
                    if self.skipped >= self.max {
                        self.skipped = 0;
                        return Some(Line::Overflow);
                    }
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(reader: &mut LineReader) -> Vec<Line> {
        std::iter::from_fn(|| reader.next_line()).collect()
    }

    #[test]
    fn splits_crlf_and_lf_lines_across_reads() {
        let mut r = LineReader::new(512);
        r.feed(b"STAT\r\nLIS");
        assert_eq!(lines(&mut r), vec![Line::Complete(b"STAT".to_vec())]);
        r.feed(b"T 1\r");
        assert_eq!(lines(&mut r), vec![]);
        r.feed(b"\nNOOP\n\r\n");
        assert_eq!(
            lines(&mut r),
            vec![
                Line::Complete(b"LIST 1".to_vec()),
                Line::Complete(b"NOOP".to_vec()),
                Line::Complete(Vec::new()),
            ]
        );
    }

    #[test]
    fn a_line_of_exactly_the_cap_passes_one_more_byte_does_not() {
        let mut r = LineReader::new(512);
        let mut ok = vec![b'a'; 510];
        ok.extend_from_slice(b"\r\n");
        r.feed(&ok);
        assert_eq!(lines(&mut r), vec![Line::Complete(vec![b'a'; 510])]);
        let mut long = vec![b'a'; 511];
        long.extend_from_slice(b"\r\nNOOP\r\n");
        r.feed(&long);
        assert_eq!(
            lines(&mut r),
            vec![Line::TooLong, Line::Complete(b"NOOP".to_vec())]
        );
    }

    #[test]
    fn an_endless_line_is_reported_per_cap_and_never_buffered() {
        let mut r = LineReader::new(512);
        let mut reports = Vec::new();
        for _ in 0..100 {
            r.feed(&[b'x'; 256]);
            reports.extend(lines(&mut r));
            assert!(r.buf.len() <= 512 + 256);
        }
        // 25,600 bytes: answered once at 512, then counted per 512 more.
        assert_eq!(reports.first(), Some(&Line::TooLong));
        assert!(reports[1..].iter().all(|l| *l == Line::Overflow));
        assert!(reports.len() >= 40, "{}", reports.len());
        r.feed(b"tail\r\nQUIT\r\n");
        assert_eq!(lines(&mut r), vec![Line::Complete(b"QUIT".to_vec())]);
    }

    #[test]
    fn clear_drops_pipelined_plaintext() {
        let mut r = LineReader::new(512);
        r.feed(b"STLS\r\nUSER evil\r\n");
        assert_eq!(r.next_line(), Some(Line::Complete(b"STLS".to_vec())));
        r.clear();
        assert_eq!(r.next_line(), None);
    }

    #[test]
    fn small_caps_are_raised_to_the_rfc_minimum() {
        let mut r = LineReader::new(4);
        r.feed(b"CAPA\r\n");
        assert_eq!(r.next_line(), Some(Line::Complete(b"CAPA".to_vec())));
    }
}
