//! Message bytes as a POP3 multi-line response (RFC 1939 section 3).
//!
//! Every line leaves with CRLF whatever the stored line end (a bare LF
//! becomes CRLF; a last line without one gets one), a line starting with
//! `.` gets a second `.` (byte-stuffing), and the response ends with
//! `.` CRLF. TOP (RFC 1939 section 7) sends the header section, the blank
//! line after it and the first `n` body lines.

/// Appends `raw` to `out` as a multi-line response body and its
/// terminator. `body_lines` limits the body for TOP; `None` sends all.
pub(crate) fn multiline(raw: &[u8], body_lines: Option<u32>, out: &mut Vec<u8>) {
    out.reserve(raw.len() + raw.len() / 64 + 8);
    let mut in_body = false;
    let mut sent_body_lines: u32 = 0;
    let mut rest = raw;
    while !rest.is_empty() {
        if in_body && body_lines.is_some_and(|max| sent_body_lines >= max) {
            break;
        }
        let (line, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(end) => (&rest[..end], &rest[end + 1..]),
            None => (rest, &[][..]),
        };
        rest = next;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
        if in_body {
            sent_body_lines = sent_body_lines.saturating_add(1);
        } else if line.is_empty() {
            in_body = true;
        }
    }
    out.extend_from_slice(b".\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(raw: &[u8], lines: Option<u32>) -> Vec<u8> {
        let mut out = Vec::new();
        multiline(raw, lines, &mut out);
        out
    }

    const MSG: &[u8] =
        b"Subject: hi\r\nFrom: a@b\r\n\r\nline 1\r\n.line 2\r\n..line 3\r\n.\r\nlast\r\n";

    #[test]
    fn retr_is_byte_stuffed_and_terminated() {
        assert_eq!(
            render(MSG, None),
            b"Subject: hi\r\nFrom: a@b\r\n\r\nline 1\r\n..line 2\r\n...line 3\r\n..\r\nlast\r\n.\r\n"
        );
    }

    #[test]
    fn bare_lf_and_a_missing_final_line_end_become_crlf() {
        assert_eq!(
            render(b"A: b\n\nbody\nend", None),
            b"A: b\r\n\r\nbody\r\nend\r\n.\r\n"
        );
        assert_eq!(render(b"", None), b".\r\n");
        // A lone CR inside a line is data, not a line end.
        assert_eq!(render(b"a\rb\r\n", None), b"a\rb\r\n.\r\n");
    }

    #[test]
    fn top_sends_headers_blank_line_and_n_body_lines() {
        assert_eq!(
            render(MSG, Some(0)),
            b"Subject: hi\r\nFrom: a@b\r\n\r\n.\r\n"
        );
        assert_eq!(
            render(MSG, Some(2)),
            b"Subject: hi\r\nFrom: a@b\r\n\r\nline 1\r\n..line 2\r\n.\r\n"
        );
        assert_eq!(render(MSG, Some(u32::MAX)), render(MSG, None));
        // No header/body separator: everything is header.
        assert_eq!(render(b"A: b\r\nC: d", Some(0)), b"A: b\r\nC: d\r\n.\r\n");
    }

    /// Undoes the encoding as a client does (RFC 1939 section 3).
    fn unstuff(wire: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let body = wire.strip_suffix(b".\r\n").expect("terminated");
        for line in body.split_inclusive(|&b| b == b'\n') {
            out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        }
        out
    }

    #[test]
    fn round_trip_of_crlf_messages_is_byte_exact() {
        for raw in [MSG, b"x\r\n", b".\r\n..\r\n", b"\r\n\r\n.\r\n"] {
            assert_eq!(unstuff(&render(raw, None)), raw);
        }
    }
}
