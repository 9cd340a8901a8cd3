//! Writing responses. Sans-I/O.
//!
//! Status lines and simple data use imap-codec's types where they fit;
//! FETCH, LIST and ESEARCH are written here directly because message data
//! is large (imap-codec copies it to check which string form it allows) and
//! because imap-codec has no ESEARCH response. Strings are quoted only when
//! every byte is printable ASCII; anything else becomes a literal
//! (RFC 9051 section 4.3).

use std::fmt::Write as _;

/// Text after a status code: no CR, LF or other controls.
pub(crate) fn clean_text(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(400)
        .collect();
    if cleaned.trim().is_empty() {
        "done".into()
    } else {
        cleaned
    }
}

/// `tag KIND [code] text\r\n`, or untagged with `tag` = "*".
pub(crate) fn status(tag: &str, kind: &str, code: Option<&str>, text: &str) -> Vec<u8> {
    let mut line = String::with_capacity(64);
    line.push_str(tag);
    line.push(' ');
    line.push_str(kind);
    if let Some(code) = code {
        let _ = write!(line, " [{code}]");
    }
    line.push(' ');
    line.push_str(&clean_text(text));
    line.push_str("\r\n");
    line.into_bytes()
}

fn quotable(bytes: &[u8]) -> bool {
    bytes.len() <= 1024 && bytes.iter().all(|&b| (0x20..0x7f).contains(&b))
}

/// An IMAP string: quoted when possible, otherwise a literal.
pub(crate) fn string(out: &mut Vec<u8>, bytes: &[u8]) {
    if quotable(bytes) {
        out.push(b'"');
        for &b in bytes {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        literal(out, bytes);
    }
}

/// `{n}\r\n` and the bytes.
pub(crate) fn literal(out: &mut Vec<u8>, bytes: &[u8]) {
    let _ = write!(Wrap(out), "{{{}}}\r\n", bytes.len());
    out.extend_from_slice(bytes);
}

/// An nstring: `NIL` or a string.
pub(crate) fn nstring(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => string(out, b),
        None => out.extend_from_slice(b"NIL"),
    }
}

fn atom_char(b: u8) -> bool {
    (0x21..0x7f).contains(&b) && !b"(){ %*\"\\]".contains(&b)
}

/// An astring: an atom when every byte allows it, otherwise a string.
pub(crate) fn astring(out: &mut Vec<u8>, bytes: &[u8]) {
    if !bytes.is_empty() && bytes.iter().all(|&b| atom_char(b)) && bytes != b"NIL" {
        out.extend_from_slice(bytes);
    } else {
        string(out, bytes);
    }
}

/// Lets `write!` append to a byte buffer.
pub(crate) struct Wrap<'a>(pub &'a mut Vec<u8>);

impl std::fmt::Write for Wrap<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// A sequence set in compact form (`1:3,7`), from ascending numbers.
pub(crate) fn compact_set(numbers: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < numbers.len() {
        let start = numbers[i];
        let mut end = start;
        while i + 1 < numbers.len() && numbers[i + 1] == end.wrapping_add(1) {
            i += 1;
            end = numbers[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            let _ = write!(out, "{start}");
        } else {
            let _ = write!(out, "{start}:{end}");
        }
        i += 1;
    }
    out
}

/// `dd-Mon-yyyy hh:mm:ss +0000` (RFC 9051 `date-time`) for Unix
/// milliseconds, in UTC.
pub(crate) fn internal_date(ms: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{:02}-{}-{:04} {:02}:{:02}:{:02} +0000",
        d,
        MONTHS[(m - 1) as usize],
        y,
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's algorithm.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) to days since 1970-01-01.
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings() {
        let mut out = Vec::new();
        string(&mut out, b"a \"b\" \\");
        assert_eq!(out, b"\"a \\\"b\\\" \\\\\"");
        let mut out = Vec::new();
        string(&mut out, "caf\u{e9}".as_bytes());
        assert_eq!(out, b"{5}\r\ncaf\xc3\xa9");
        let mut out = Vec::new();
        astring(&mut out, b"INBOX");
        astring(&mut out, b" x");
        astring(&mut out, b"NIL");
        assert_eq!(out, b"INBOX\" x\"\"NIL\"");
    }

    #[test]
    fn sets_and_dates() {
        assert_eq!(compact_set(&[1, 2, 3, 7, 9, 10]), "1:3,7,9:10");
        assert_eq!(compact_set(&[]), "");
        assert_eq!(internal_date(0), "01-Jan-1970 00:00:00 +0000");
        assert_eq!(
            internal_date(1_751_364_000_000),
            "01-Jul-2025 10:00:00 +0000"
        );
        assert_eq!(days_from_civil(2025, 7, 1), 1_751_364_000 / 86_400);
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
        assert!(status("a", "OK", None, "x\r\ny").ends_with(b"x  y\r\n"));
    }
}
