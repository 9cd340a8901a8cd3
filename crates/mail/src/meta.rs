//! The header facts cached with each email for listing and threading.

use bulwark_store::EmailMeta;
use std::sync::LazyLock;

use mail_parser::{HeaderName, HeaderValue, MessageParser};

/// Longest subject or address list kept in the index; the full header stays
/// in the stored message.
pub const MAX_INDEXED_HEADER_CHARS: usize = 998;

/// Message ids kept from `References` (the newest ones matter for threading).
const MAX_REFERENCES: usize = 64;

fn bounded(text: &str) -> String {
    text.chars().take(MAX_INDEXED_HEADER_CHARS).collect()
}

fn ids(value: &HeaderValue<'_>) -> Vec<String> {
    match value {
        HeaderValue::Text(id) => vec![id.to_string()],
        HeaderValue::TextList(list) => list.iter().map(|id| id.to_string()).collect(),
        _ => Vec::new(),
    }
}

fn addresses(address: Option<&mail_parser::Address<'_>>) -> Option<String> {
    let address = address?;
    let list: Vec<String> = address
        .iter()
        .map(|a| match (a.name(), a.address()) {
            (Some(name), Some(addr)) => format!("{name} <{addr}>"),
            (None, Some(addr)) => addr.to_string(),
            (Some(name), None) => name.to_string(),
            (None, None) => String::new(),
        })
        .filter(|s| !s.is_empty())
        .collect();
    (!list.is_empty()).then(|| bounded(&list.join(", ")))
}

/// Parses the headers the index keeps and skips the rest: every delivery
/// runs this, and a full parse spends most of its time on `Received`,
/// `DKIM-Signature` and `Authentication-Results` lines nothing here reads.
static INDEXED_HEADERS: LazyLock<MessageParser> = LazyLock::new(|| {
    MessageParser::new()
        .header_id(HeaderName::MessageId)
        .header_id(HeaderName::InReplyTo)
        .header_id(HeaderName::References)
        .header_text(HeaderName::Subject)
        .header_address(HeaderName::From)
        .header_address(HeaderName::To)
        .header_date(HeaderName::Date)
        .default_header_ignore()
});

/// Extracts the indexed facts. Only headers are parsed; a message without
/// recognisable headers still gets a record with its arrival time.
pub fn parse_meta(raw: &[u8], received_at: i64) -> EmailMeta {
    let mut meta = EmailMeta {
        received_at,
        ..EmailMeta::default()
    };
    let Some(message) = INDEXED_HEADERS.parse_headers(raw) else {
        return meta;
    };
    meta.message_id = message.message_id().map(bounded);
    meta.subject = message.subject().map(bounded);
    meta.from = addresses(message.from());
    meta.to = addresses(message.to());
    meta.sent_at = message
        .date()
        .map(|d| d.to_timestamp().saturating_mul(1000));
    let mut references = ids(message.references());
    references.extend(ids(message.in_reply_to()));
    if references.len() > MAX_REFERENCES {
        references.drain(..references.len() - MAX_REFERENCES);
    }
    meta.references = references.iter().map(|r| bounded(r)).collect();
    meta
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_headers() {
        let raw = b"Received: from a.example (a.example [192.0.2.1]) by mx.example; Tue, 1 Jul 2025 10:00:01 +0000\r\n\
DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=s1; h=from:to; bh=AAAA; b=BBBB\r\n\
From: \"Alice A.\" <alice@example.com>\r\nTo: bob@example.com, carol@example.com\r\n\
Subject: =?utf-8?q?caf=C3=A9?=\r\nMessage-ID: <m1@example.com>\r\nIn-Reply-To: <m0@example.com>\r\n\
References: <r1@example.com> <m0@example.com>\r\nDate: Tue, 1 Jul 2025 10:00:00 +0000\r\n\r\nbody\r\n";
        let meta = parse_meta(raw, 5);
        assert_eq!(meta.received_at, 5);
        assert_eq!(meta.message_id.as_deref(), Some("m1@example.com"));
        assert_eq!(meta.subject.as_deref(), Some("café"));
        assert_eq!(meta.from.as_deref(), Some("Alice A. <alice@example.com>"));
        assert_eq!(
            meta.to.as_deref(),
            Some("bob@example.com, carol@example.com")
        );
        assert_eq!(meta.sent_at, Some(1_751_364_000_000));
        assert!(meta.references.contains(&"r1@example.com".to_string()));
        assert!(meta.references.contains(&"m0@example.com".to_string()));
    }

    #[test]
    fn garbage_and_huge_headers_are_bounded() {
        assert_eq!(parse_meta(b"", 1).subject, None);
        assert_eq!(
            parse_meta(b"\x00\xff\xfe not a message", 1).message_id,
            None
        );
        let long = format!("Subject: {}\r\n\r\n", "x".repeat(100_000));
        assert_eq!(
            parse_meta(long.as_bytes(), 1).subject.map(|s| s.len()),
            Some(MAX_INDEXED_HEADER_CHARS)
        );
        let refs: String = (0..500)
            .map(|i| format!("<{i}@x>"))
            .collect::<Vec<_>>()
            .join(" ");
        let meta = parse_meta(format!("References: {refs}\r\n\r\n").as_bytes(), 1);
        assert_eq!(meta.references.len(), 64);
        assert_eq!(meta.references.last().map(String::as_str), Some("499@x"));
    }
}
