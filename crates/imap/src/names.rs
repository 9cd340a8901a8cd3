//! Mailbox names: from the client's form to the stored form and back, and
//! LIST pattern matching. Sans-I/O.
//!
//! Stored names are UTF-8 with `/` as the hierarchy delimiter, and the
//! Inbox is stored as `INBOX`. IMAP4rev1 clients send and receive modified
//! UTF-7 (RFC 3501 section 5.1.3); after `ENABLE IMAP4rev2` names are
//! UTF-8 on the wire (RFC 9051 section 5.1).

/// The hierarchy delimiter announced in LIST and NAMESPACE.
pub(crate) const DELIMITER: char = '/';

/// Longest stored name, in bytes (the store's own bound).
pub(crate) const MAX_NAME_BYTES: usize = 1024;
/// Most hierarchy levels in a name.
pub(crate) const MAX_DEPTH: usize = 32;

/// Why a mailbox name was refused; the text is shown to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameError {
    /// Not valid modified UTF-7 (IMAP4rev1) or not UTF-8 (IMAP4rev2).
    Encoding,
    /// Empty, too long, too deep, an empty or `.`/`..` level, control
    /// characters or wildcards.
    Invalid,
}

impl NameError {
    pub(crate) fn text(self) -> &'static str {
        match self {
            NameError::Encoding => "Mailbox name is not valid modified UTF-7 or UTF-8",
            NameError::Invalid => "Invalid mailbox name",
        }
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

fn b64_value(c: u8) -> Option<u32> {
    B64.iter().position(|&x| x == c).map(|p| p as u32)
}

/// Decodes modified UTF-7 (RFC 3501 section 5.1.3). Strict: printable
/// ASCII must not be encoded, shifts must end with `-`, padding bits must be
/// zero and the UTF-16 must be well formed.
pub(crate) fn decode_mutf7(input: &str) -> Result<String, NameError> {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !(0x20..=0x7e).contains(&b) {
            return Err(NameError::Encoding);
        }
        if b != b'&' {
            out.push(char::from(b));
            i += 1;
            continue;
        }
        let end = bytes[i + 1..]
            .iter()
            .position(|&c| c == b'-')
            .map(|p| i + 1 + p)
            .ok_or(NameError::Encoding)?;
        let encoded = &bytes[i + 1..end];
        i = end + 1;
        if encoded.is_empty() {
            out.push('&');
            continue;
        }
        let mut units = Vec::new();
        let mut acc: u32 = 0;
        let mut bits = 0u32;
        for &c in encoded {
            acc = (acc << 6) | b64_value(c).ok_or(NameError::Encoding)?;
            bits += 6;
            if bits >= 16 {
                bits -= 16;
                units.push(((acc >> bits) & 0xffff) as u16);
                acc &= (1 << bits) - 1;
            }
        }
        if bits >= 6 || acc != 0 || units.is_empty() {
            return Err(NameError::Encoding);
        }
        for decoded in char::decode_utf16(units) {
            let c = decoded.map_err(|_| NameError::Encoding)?;
            if (' '..='~').contains(&c) || c.is_control() {
                return Err(NameError::Encoding);
            }
            out.push(c);
        }
    }
    Ok(out)
}

/// Encodes modified UTF-7 (RFC 3501 section 5.1.3).
pub(crate) fn encode_mutf7(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    let mut pending: Vec<u16> = Vec::new();
    let flush = |pending: &mut Vec<u16>, out: &mut String| {
        if pending.is_empty() {
            return;
        }
        out.push('&');
        let mut acc: u32 = 0;
        let mut bits = 0u32;
        for unit in pending.drain(..) {
            acc = (acc << 16) | u32::from(unit);
            bits += 16;
            while bits >= 6 {
                bits -= 6;
                out.push(char::from(B64[((acc >> bits) & 0x3f) as usize]));
            }
            acc &= (1 << bits) - 1;
        }
        if bits > 0 {
            out.push(char::from(B64[((acc << (6 - bits)) & 0x3f) as usize]));
        }
        out.push('-');
    };
    for c in input.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut pending, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut buf = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush(&mut pending, &mut out);
    out
}

/// The client's bytes as text: UTF-8 under IMAP4rev2, modified UTF-7
/// under IMAP4rev1. Wildcards pass through untouched.
pub(crate) fn decode_wire(raw: &[u8], utf8: bool) -> Result<String, NameError> {
    let text = std::str::from_utf8(raw).map_err(|_| NameError::Encoding)?;
    if utf8 && !text.is_ascii() {
        return Ok(text.to_string());
    }
    decode_mutf7(text)
}

/// `INBOX` is case-insensitive (RFC 9051 section 5.1): its first level is
/// stored upper-case.
pub(crate) fn canonical_inbox(name: &str) -> String {
    let first = name.split(DELIMITER).next().unwrap_or_default();
    if first.eq_ignore_ascii_case("INBOX") && first != "INBOX" {
        format!("INBOX{}", &name[first.len()..])
    } else {
        name.to_string()
    }
}

/// A client's mailbox argument as a stored name, checked.
pub(crate) fn from_client(raw: &[u8], utf8: bool) -> Result<String, NameError> {
    let name = canonical_inbox(&decode_wire(raw, utf8)?);
    validate(&name)?;
    Ok(name)
}

/// Checks a stored-form name.
pub(crate) fn validate(name: &str) -> Result<(), NameError> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(NameError::Invalid);
    }
    let mut depth = 0;
    for level in name.split(DELIMITER) {
        depth += 1;
        if level.is_empty()
            || level == "."
            || level == ".."
            || level
                .chars()
                .any(|c| c.is_control() || c == '*' || c == '%')
        {
            return Err(NameError::Invalid);
        }
    }
    if depth > MAX_DEPTH {
        return Err(NameError::Invalid);
    }
    Ok(())
}

/// The stored name as the client sees it.
pub(crate) fn to_client(name: &str, utf8: bool) -> String {
    if utf8 {
        name.to_string()
    } else {
        encode_mutf7(name)
    }
}

/// The names of the levels above `name`, outermost first.
pub(crate) fn parents(name: &str) -> Vec<&str> {
    name.char_indices()
        .filter(|&(_, c)| c == DELIMITER)
        .map(|(i, _)| &name[..i])
        .collect()
}

/// A LIST pattern (RFC 9051 section 6.3.9): `*` matches anything, `%`
/// anything but the delimiter. Matching costs at most pattern × name steps.
#[derive(Debug, Clone)]
pub(crate) struct Pattern {
    chars: Vec<char>,
}

impl Pattern {
    /// The pattern for `reference` + `pattern`, both already decoded.
    pub(crate) fn new(reference: &str, pattern: &str) -> Pattern {
        let joined = canonical_inbox(&format!("{reference}{pattern}"));
        let mut chars: Vec<char> = Vec::with_capacity(joined.len());
        for c in joined.chars() {
            // "**" matches what "*" matches; collapsing bounds the work.
            if c == '*' && chars.last() == Some(&'*') {
                continue;
            }
            chars.push(c);
        }
        Pattern { chars }
    }

    /// Wildcards in the pattern.
    pub(crate) fn wildcards(&self) -> usize {
        self.chars.iter().filter(|&&c| c == '*' || c == '%').count()
    }

    /// Whether `name` matches.
    pub(crate) fn matches(&self, name: &str) -> bool {
        let name: Vec<char> = name.chars().collect();
        // reachable[j]: the pattern so far can consume exactly name[..j].
        let mut reachable = vec![false; name.len() + 1];
        reachable[0] = true;
        for &p in &self.chars {
            let mut next = vec![false; name.len() + 1];
            match p {
                '*' | '%' => {
                    let mut on = false;
                    for j in 0..=name.len() {
                        if reachable[j] {
                            on = true;
                        }
                        next[j] = on;
                        if p == '%' && j < name.len() && name[j] == DELIMITER {
                            // `%` cannot run past a delimiter.
                            on = false;
                        }
                    }
                }
                c => {
                    for j in 0..name.len() {
                        if reachable[j] && name[j] == c {
                            next[j + 1] = true;
                        }
                    }
                }
            }
            reachable = next;
            if !reachable.iter().any(|&r| r) {
                return false;
            }
        }
        reachable[name.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutf7_examples_from_rfc_3501() {
        // RFC 3501 section 5.1.3.
        let name = "~peter/mail/\u{53f0}\u{5317}/\u{65e5}\u{672c}\u{8a9e}";
        let wire = "~peter/mail/&U,BTFw-/&ZeVnLIqe-";
        assert_eq!(encode_mutf7(name), wire);
        assert_eq!(decode_mutf7(wire).as_deref(), Ok(name));
        assert_eq!(encode_mutf7("a&b"), "a&-b");
        assert_eq!(decode_mutf7("a&-b").as_deref(), Ok("a&b"));
        assert_eq!(decode_mutf7("Entw&APw-rfe").as_deref(), Ok("Entwürfe"));
        assert_eq!(encode_mutf7("Entwürfe"), "Entw&APw-rfe");
        assert_eq!(encode_mutf7("😀"), "&2D3eAA-");
        assert_eq!(decode_mutf7("&2D3eAA-").as_deref(), Ok("😀"));
    }

    #[test]
    fn bad_mutf7_is_refused() {
        for bad in [
            "&",
            "&U,BTFw",
            "&AGE-",
            "&Jjo!-",
            "&2D0-",
            "caf\u{e9}",
            "&AAA-",
            "&U,BTF-",
        ] {
            assert_eq!(decode_mutf7(bad), Err(NameError::Encoding), "{bad:?}");
        }
    }

    #[test]
    fn client_names() {
        assert_eq!(from_client(b"inbox", false).as_deref(), Ok("INBOX"));
        assert_eq!(from_client(b"Inbox/Sub", false).as_deref(), Ok("INBOX/Sub"));
        assert_eq!(from_client(b"InboxX", false).as_deref(), Ok("InboxX"));
        assert_eq!(
            from_client("Entwürfe".as_bytes(), true).as_deref(),
            Ok("Entwürfe")
        );
        assert_eq!(
            from_client("Entwürfe".as_bytes(), false),
            Err(NameError::Encoding)
        );
        for bad in [
            "", "/a", "a/", "a//b", "../x", "a/./b", "a*", "a%b", "a\u{7}",
        ] {
            assert!(from_client(bad.as_bytes(), true).is_err(), "{bad:?}");
        }
        assert!(from_client(&[0xff, 0xfe], true).is_err());
        assert_eq!(parents("a/b/c"), vec!["a", "a/b"]);
    }

    #[test]
    fn patterns() {
        let p = Pattern::new("", "*");
        assert!(p.matches("INBOX") && p.matches("a/b/c"));
        let p = Pattern::new("", "%");
        assert!(p.matches("a") && !p.matches("a/b"));
        let p = Pattern::new("a/", "%");
        assert!(p.matches("a/b") && !p.matches("a/b/c") && !p.matches("a"));
        let p = Pattern::new("", "inbox");
        assert!(p.matches("INBOX"));
        let p = Pattern::new("", "S*t");
        assert!(p.matches("Sent") && !p.matches("Sentx"));
        let p = Pattern::new("../", "*");
        assert!(!p.matches("INBOX") && !p.matches("Sent"));
        let p = Pattern::new("", &"*".repeat(1000));
        assert_eq!(p.wildcards(), 1);
        assert!(p.matches("x"));
    }
}
