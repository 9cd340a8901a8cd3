//! Message data as sent after DATA (RFC 5321 section 4.1.1.4): CRLF line
//! ends, dot-stuffed (section 4.5.2), ending with CRLF and then `.` CRLF.
//!
//! Sans-I/O: the encoder fills a caller's buffer up to a limit, so a large
//! message is never copied whole.

/// Whether the message has bytes above 127, so needs `BODY=8BITMIME`
/// (RFC 6152) where the server offers it.
pub(crate) fn is_8bit(message: &[u8]) -> bool {
    !message.is_ascii()
}

/// The size of the message as the server will store it: line ends made
/// CRLF and a final CRLF added, as [`DataEncoder`] does, without the dots
/// added by stuffing (RFC 1870 section 4: the value of `SIZE=`).
pub(crate) fn message_size(message: &[u8]) -> u64 {
    let mut encoder = DataEncoder::new(message);
    encoder.count_only = true;
    encoder.fill(&mut Vec::new(), usize::MAX);
    encoder.counted
}

/// Turns a message into DATA bytes, a piece at a time.
///
/// Line ends are normalised: a bare LF or bare CR becomes CRLF, because
/// RFC 5321 section 2.3.8 forbids sending them and because a receiver that
/// reads them as line ends could otherwise see an end of data we did not
/// send (SMTP smuggling). Messages from our own queue are already CRLF,
/// so this changes nothing for them.
#[derive(Debug)]
pub(crate) struct DataEncoder<'a> {
    message: &'a [u8],
    position: usize,
    /// The last byte was a CR whose line end is not written yet.
    pending_cr: bool,
    /// The next byte starts a line (where a `.` must be doubled).
    line_start: bool,
    /// The terminating `.` CRLF has been written.
    finished: bool,
    /// For [`message_size`]: count message bytes instead of writing.
    count_only: bool,
    counted: u64,
}

impl<'a> DataEncoder<'a> {
    pub(crate) fn new(message: &'a [u8]) -> Self {
        Self {
            message,
            position: 0,
            pending_cr: false,
            line_start: true,
            finished: false,
            count_only: false,
            counted: 0,
        }
    }

    /// Appends encoded bytes to `out` until it holds at least `limit`
    /// bytes (it may exceed it by up to 4) or the data is complete.
    /// Returns `true` once the terminating `.` CRLF has been written.
    pub(crate) fn fill(&mut self, out: &mut Vec<u8>, limit: usize) -> bool {
        while !self.finished && out.len() < limit {
            let Some(&byte) = self.message.get(self.position) else {
                self.finish(out);
                break;
            };
            self.position += 1;
            match byte {
                b'\r' => {
                    if self.pending_cr {
                        self.line_end(out);
                    }
                    self.pending_cr = true;
                }
                b'\n' => {
                    self.pending_cr = false;
                    self.line_end(out);
                }
                _ => {
                    if self.pending_cr {
                        self.pending_cr = false;
                        self.line_end(out);
                    }
                    // RFC 5321 section 4.5.2: a line starting with "."
                    // gets one more, which the receiver removes.
                    if self.line_start && byte == b'.' && !self.count_only {
                        out.push(b'.');
                    }
                    self.emit(out, &[byte]);
                    self.line_start = false;
                }
            }
        }
        self.finished
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.pending_cr {
            self.pending_cr = false;
            self.line_end(out);
        }
        // The terminating sequence is CRLF "." CRLF, whose first CRLF
        // ends the last line: a message not ending in one gets it added.
        // An empty message needs none.
        if !self.line_start {
            self.line_end(out);
        }
        if !self.count_only {
            out.extend_from_slice(b".\r\n");
        }
        self.finished = true;
    }

    fn line_end(&mut self, out: &mut Vec<u8>) {
        self.emit(out, b"\r\n");
        self.line_start = true;
    }

    fn emit(&mut self, out: &mut Vec<u8>, bytes: &[u8]) {
        if self.count_only {
            self.counted += bytes.len() as u64;
        } else {
            out.extend_from_slice(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(message: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        assert!(DataEncoder::new(message).fill(&mut out, usize::MAX));
        out
    }

    /// Encoding in pieces of every size gives the same bytes.
    fn encode_in_pieces(message: &[u8], piece: usize) -> Vec<u8> {
        let mut encoder = DataEncoder::new(message);
        let mut all = Vec::new();
        let mut rounds = 0;
        loop {
            let mut out = Vec::new();
            let done = encoder.fill(&mut out, piece);
            assert!(out.len() <= piece + 4);
            all.extend_from_slice(&out);
            rounds += 1;
            assert!(rounds < 10_000);
            if done {
                return all;
            }
        }
    }

    #[test]
    fn known_answers() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b".\r\n"),
            (b"a\r\n", b"a\r\n.\r\n"),
            (b"a", b"a\r\n.\r\n"),
            (b".\r\n", b"..\r\n.\r\n"),
            (b"x\r\n.\r\ny\r\n", b"x\r\n..\r\ny\r\n.\r\n"),
            (b"x\r\n..two\r\n", b"x\r\n...two\r\n.\r\n"),
            (b"not.at.start\r\n", b"not.at.start\r\n.\r\n"),
            (b".", b"..\r\n.\r\n"),
            // Bare LF and bare CR become CRLF, and the stuffing sees the
            // line they start.
            (b"a\n.\nb", b"a\r\n..\r\nb\r\n.\r\n"),
            (b"a\r.\rb\r", b"a\r\n..\r\nb\r\n.\r\n"),
            (b"a\r\r\nb", b"a\r\n\r\nb\r\n.\r\n"),
            (b"\r\n\r\n", b"\r\n\r\n.\r\n"),
        ];
        for (input, expected) in cases {
            assert_eq!(
                encode(input),
                *expected,
                "{:?}",
                String::from_utf8_lossy(input)
            );
            for piece in [1, 2, 3, 5] {
                assert_eq!(encode_in_pieces(input, piece), *expected);
            }
        }
    }

    #[test]
    fn smuggling_sequences_cannot_end_the_data_early() {
        // Each of these ends the data for some lenient receiver if sent
        // as is; encoded, the only "." line is the final one.
        for input in [
            &b"a\r\n\n.\n\r\nb\r\n"[..],
            b"a\n.\r\nb\r\n",
            b"a\r\n.\nb\r\n",
            b"a\r.\r\nb\r\n",
        ] {
            let out = encode(input);
            let dot_lines = out.split(|&b| b == b'\n').filter(|l| *l == b".\r").count();
            assert_eq!(dot_lines, 1, "{:?}", String::from_utf8_lossy(&out));
            assert!(out.ends_with(b"\r\n.\r\n"));
            assert!(only_crlf(&out), "{:?}", String::from_utf8_lossy(&out));
        }
    }

    /// Every CR is followed by LF and every LF preceded by CR.
    fn only_crlf(bytes: &[u8]) -> bool {
        bytes.iter().enumerate().all(|(i, &b)| match b {
            b'\r' => bytes.get(i + 1) == Some(&b'\n'),
            b'\n' => i > 0 && bytes[i - 1] == b'\r',
            _ => true,
        })
    }

    #[test]
    fn size_counts_normalised_bytes_without_stuffing() {
        assert_eq!(message_size(b""), 0);
        assert_eq!(message_size(b"a\r\n"), 3);
        assert_eq!(message_size(b"a"), 3);
        assert_eq!(message_size(b"a\n.b\n"), 7);
    }

    #[test]
    fn eight_bit() {
        assert!(!is_8bit(b"plain ascii\r\n"));
        assert!(is_8bit("café".as_bytes()));
    }
}
