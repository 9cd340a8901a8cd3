//! The MIME structure of a stored message as byte ranges, for FETCH
//! sections and BODYSTRUCTURE. Sans-I/O.
//!
//! Section numbers (RFC 9051 section 6.4.5) address bytes of the stored
//! message exactly, so the tree is built here from raw offsets; header
//! values (Content-Type parameters, addresses, encoded words) are decoded
//! with `mail-parser`. Depth and part count are bounded.

use std::ops::Range;

use mail_parser::{HeaderValue, MessageParser};

/// Deepest nesting of multiparts and encapsulated messages followed.
pub(crate) const MAX_DEPTH: usize = 16;
/// Most parts in one message.
pub(crate) const MAX_PARTS: usize = 512;

/// One MIME entity.
#[derive(Debug, Clone)]
pub(crate) struct Entity {
    /// Header block, including the blank line that ends it (if any).
    pub header: Range<usize>,
    /// Body.
    pub body: Range<usize>,
    /// Lower-case media type and subtype.
    pub media: (String, String),
    /// Content-Type parameters, names lower-cased.
    pub params: Vec<(String, String)>,
    /// What the body holds.
    pub kind: Kind,
}

/// The body's shape.
#[derive(Debug, Clone)]
pub(crate) enum Kind {
    /// A leaf.
    Leaf,
    /// `multipart/*` children.
    Multipart(Vec<Entity>),
    /// `message/rfc822`: the encapsulated message.
    Message(Box<Entity>),
}

/// Where the header block of `raw[start..end]` ends (after the blank
/// line); `end` when there is no blank line.
pub(crate) fn header_end(raw: &[u8], start: usize, end: usize) -> usize {
    let slice = &raw[start..end];
    if slice.starts_with(b"\r\n") {
        return start + 2;
    }
    if slice.starts_with(b"\n") {
        return start + 1;
    }
    let mut i = 0;
    while let Some(p) = slice[i..].iter().position(|&b| b == b'\n') {
        let next = i + p + 1;
        if slice[next..].starts_with(b"\r\n") {
            return start + next + 2;
        }
        if slice[next..].starts_with(b"\n") {
            return start + next + 1;
        }
        i = next;
    }
    end
}

/// Header fields of a header block: `(name, raw value unfolded, field
/// range)`. The value keeps encoded words as sent.
pub(crate) fn fields(block: &[u8]) -> Vec<(String, String, Range<usize>)> {
    let mut out: Vec<(String, String, Range<usize>)> = Vec::new();
    let mut i = 0;
    while i < block.len() {
        let line_end = block[i..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(block.len(), |p| i + p + 1);
        let line = &block[i..line_end];
        let content = trim_eol(line);
        if content.is_empty() {
            break;
        }
        if (content[0] == b' ' || content[0] == b'\t') && !out.is_empty() {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(String::from_utf8_lossy(content).trim());
                last.2.end = line_end;
            }
        } else if let Some(colon) = content.iter().position(|&b| b == b':') {
            let name = String::from_utf8_lossy(&content[..colon])
                .trim()
                .to_string();
            let value = String::from_utf8_lossy(&content[colon + 1..])
                .trim()
                .to_string();
            out.push((name, value, i..line_end));
        }
        i = line_end;
    }
    out
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The first value of header `name` (case-insensitive), unfolded.
pub(crate) fn field<'a>(
    fields: &'a [(String, String, Range<usize>)],
    name: &str,
) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v, _)| v.as_str())
}

/// Parses the entity `raw[start..end]`.
pub(crate) fn parse(raw: &[u8]) -> Entity {
    let mut budget = MAX_PARTS;
    entity(raw, 0, raw.len(), 0, false, &mut budget)
}

fn entity(
    raw: &[u8],
    start: usize,
    end: usize,
    depth: usize,
    digest: bool,
    budget: &mut usize,
) -> Entity {
    *budget = budget.saturating_sub(1);
    let hend = header_end(raw, start, end);
    let header = start..hend;
    let body = hend..end;
    let (media, params) = content_type(&raw[header.clone()], digest);
    let kind = if depth >= MAX_DEPTH || *budget == 0 {
        Kind::Leaf
    } else if media.0 == "multipart" {
        let boundary = params
            .iter()
            .find(|(n, _)| n == "boundary")
            .map(|(_, v)| v.clone());
        match boundary {
            Some(b) if !b.is_empty() => {
                let is_digest = media.1 == "digest";
                let children = split_multipart(raw, body.clone(), b.as_bytes())
                    .into_iter()
                    .map(|r| entity(raw, r.start, r.end, depth + 1, is_digest, budget))
                    .collect::<Vec<_>>();
                if children.is_empty() {
                    Kind::Leaf
                } else {
                    Kind::Multipart(children)
                }
            }
            _ => Kind::Leaf,
        }
    } else if media.0 == "message" && media.1 == "rfc822" && !encoded(&raw[header.clone()]) {
        Kind::Message(Box::new(entity(
            raw,
            body.start,
            body.end,
            depth + 1,
            false,
            budget,
        )))
    } else {
        Kind::Leaf
    };
    Entity {
        header,
        body,
        media,
        params,
        kind,
    }
}

/// Whether a Content-Transfer-Encoding other than 7bit/8bit/binary is set.
fn encoded(header: &[u8]) -> bool {
    let f = fields(header);
    field(&f, "Content-Transfer-Encoding").is_some_and(|v| {
        let v = v.to_ascii_lowercase();
        v != "7bit" && v != "8bit" && v != "binary"
    })
}

/// Media type and parameters (RFC 2045 section 5.2 defaults: text/plain;
/// charset=us-ascii, or message/rfc822 inside multipart/digest).
fn content_type(header: &[u8], digest: bool) -> ((String, String), Vec<(String, String)>) {
    let default = || {
        if digest {
            (("message".to_string(), "rfc822".to_string()), Vec::new())
        } else {
            (
                ("text".to_string(), "plain".to_string()),
                vec![("charset".to_string(), "us-ascii".to_string())],
            )
        }
    };
    let Some(parsed) = MessageParser::default().parse_headers(header) else {
        return default();
    };
    let Some(HeaderValue::ContentType(ct)) = parsed.header("Content-Type") else {
        return default();
    };
    let Some(subtype) = ct.c_subtype.as_ref() else {
        return default();
    };
    let media = (ct.c_type.to_ascii_lowercase(), subtype.to_ascii_lowercase());
    let params = ct
        .attributes
        .as_ref()
        .map(|attrs| {
            attrs
                .iter()
                .map(|a| (a.name.to_ascii_lowercase(), a.value.to_string()))
                .collect()
        })
        .unwrap_or_default();
    (media, params)
}

/// Body ranges of the parts of a multipart body (RFC 2046 section 5.1.1):
/// each part runs from after its delimiter line to before the CRLF that
/// precedes the next delimiter.
fn split_multipart(raw: &[u8], body: Range<usize>, boundary: &[u8]) -> Vec<Range<usize>> {
    let mut delimiters: Vec<(usize, usize, bool)> = Vec::new();
    let mut line_start = body.start;
    while line_start < body.end {
        let line_end = raw[line_start..body.end]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(body.end, |p| line_start + p + 1);
        let line = &raw[line_start..line_end];
        if let Some(rest) = line.strip_prefix(b"--")
            && let Some(after) = rest.strip_prefix(boundary)
        {
            let after = trim_eol(after);
            let closing = after.starts_with(b"--");
            let rest = if closing { &after[2..] } else { after };
            if rest.iter().all(|&b| b == b' ' || b == b'\t') {
                delimiters.push((line_start, line_end, closing));
                if closing {
                    break;
                }
            }
        }
        line_start = line_end;
    }
    let mut parts = Vec::new();
    for pair in delimiters.windows(2) {
        let (_, open_end, closing) = pair[0];
        if closing {
            break;
        }
        let (next_start, _, _) = pair[1];
        let mut end = next_start;
        if end > open_end && raw[end - 1] == b'\n' {
            end -= 1;
            if end > open_end && raw[end - 1] == b'\r' {
                end -= 1;
            }
        }
        parts.push(open_end..end.max(open_end));
    }
    parts
}

impl Entity {
    /// The entity a part path points to (RFC 9051 section 6.4.5): in a
    /// multipart, `n` is its n-th child; in a message/rfc822 part, numbers
    /// apply to the encapsulated message's body; a non-multipart body is
    /// part 1 of its message.
    pub(crate) fn part(&self, path: &[u32]) -> Option<&Entity> {
        let mut current = self;
        for &n in path {
            current = current.child(n)?;
        }
        Some(current)
    }

    fn child(&self, n: u32) -> Option<&Entity> {
        let n = n.checked_sub(1)? as usize;
        match &self.kind {
            Kind::Multipart(children) => children.get(n),
            Kind::Message(inner) => match &inner.kind {
                Kind::Multipart(children) => children.get(n),
                _ if n == 0 => Some(inner),
                _ => None,
            },
            Kind::Leaf if n == 0 => Some(self),
            Kind::Leaf => None,
        }
    }

    /// For HEADER/TEXT of a part: the encapsulated message of a
    /// message/rfc822 part.
    pub(crate) fn message(&self) -> Option<&Entity> {
        match &self.kind {
            Kind::Message(inner) => Some(inner),
            _ => None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    /// A multipart message with an encapsulated multipart message.
    pub(crate) const NESTED: &[u8] = b"From: a@example.com\r\nSubject: x\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\npreamble\r\n--XX\r\nContent-Type: text/plain\r\n\r\nhello\r\n--XX\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\nContent-Type: multipart/alternative; boundary=YY\r\n\r\n--YY\r\n\r\ninner text\r\n--YY\r\nContent-Type: text/html\r\n\r\n<p>hi</p>\r\n--YY--\r\n\r\n--XX--\r\nepilogue\r\n";
}

#[cfg(test)]
mod tests {
    use super::tests_support::NESTED;
    use super::*;

    fn text(raw: &[u8], r: &Range<usize>) -> String {
        String::from_utf8_lossy(&raw[r.clone()]).into_owned()
    }

    #[test]
    fn sections_of_a_nested_message() {
        let root = parse(NESTED);
        assert_eq!(root.media, ("multipart".into(), "mixed".into()));
        let p1 = root.part(&[1]).expect("1");
        assert_eq!(text(NESTED, &p1.body), "hello");
        let p2 = root.part(&[2]).expect("2");
        assert_eq!(p2.media, ("message".into(), "rfc822".into()));
        let inner = p2.message().expect("encapsulated");
        assert!(text(NESTED, &inner.header).starts_with("Subject: inner"));
        let p21 = root.part(&[2, 1]).expect("2.1");
        assert_eq!(text(NESTED, &p21.body), "inner text");
        assert_eq!(p21.media, ("text".into(), "plain".into()));
        let p22 = root.part(&[2, 2]).expect("2.2");
        assert_eq!(text(NESTED, &p22.body), "<p>hi</p>");
        assert!(root.part(&[3]).is_none());
        assert!(root.part(&[1, 2]).is_none());
        assert_eq!(
            root.part(&[1, 1]).map(|e| e.body.clone()),
            Some(p1.body.clone())
        );
    }

    #[test]
    fn simple_and_broken_messages() {
        let raw = b"Subject: s\r\n\r\nbody\r\n";
        let root = parse(raw);
        assert_eq!(text(raw, &root.header), "Subject: s\r\n\r\n");
        assert_eq!(text(raw, &root.part(&[1]).expect("1").body), "body\r\n");
        let no_body = parse(b"Subject: s\r\n");
        assert!(no_body.body.is_empty());
        let garbage = parse(b"\x00\xff");
        assert!(matches!(garbage.kind, Kind::Leaf));
        // A boundary that never appears leaves a leaf.
        let raw = b"Content-Type: multipart/mixed; boundary=Q\r\n\r\nno parts\r\n";
        assert!(matches!(parse(raw).kind, Kind::Leaf));
        let deep = "Content-Type: message/rfc822\r\n\r\n".repeat(100);
        let _ = parse(deep.as_bytes());
    }

    #[test]
    fn header_fields_unfold() {
        let f = fields(b"Subject: a\r\n b\r\nTo: c\r\n\r\nbody");
        assert_eq!(field(&f, "subject"), Some("a b"));
        assert_eq!(field(&f, "TO"), Some("c"));
        assert_eq!(f[0].2, 0..16);
    }
}
