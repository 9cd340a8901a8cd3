//! Header fields the server adds: `Return-Path` and `Received` (RFC 5321
//! section 4.4), and for submission `Date` and `Message-ID` when the client
//! left them out (RFC 6409 section 8).

use std::fmt::Write as _;
use std::net::IpAddr;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

/// An RFC 5322 date-time for `ms` milliseconds after the Unix epoch, in UTC.
pub(crate) fn rfc5322_date(ms: i64) -> String {
    let nanos = i128::from(ms).saturating_mul(1_000_000);
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&Rfc2822).ok())
        .unwrap_or_else(|| "Thu, 01 Jan 1970 00:00:00 +0000".to_string())
}

/// The address literal of `ip` as written in SMTP (RFC 5321 section 4.1.3).
pub(crate) fn address_literal(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("[{v4}]"),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("[{v4}]"),
            None => format!("[IPv6:{v6}]"),
        },
    }
}

/// Makes a client-supplied HELO/EHLO name safe to copy into a header: the
/// characters of domain names and address literals only, at most 255.
/// Anything else is replaced by `invalid`, so nothing a client types can
/// add a header line or change the Received field's syntax.
pub(crate) fn clean_helo(name: &str) -> String {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:[]".contains(&b));
    if ok {
        name.to_string()
    } else {
        "invalid".to_string()
    }
}

/// The facts a `Received` field records.
pub(crate) struct ReceivedFields<'a> {
    pub(crate) helo: &'a str,
    pub(crate) ip: IpAddr,
    pub(crate) hostname: &'a str,
    /// `SMTP`, `ESMTP`, `ESMTPS`, `ESMTPSA`, `UTF8SMTPS` ... (RFC 3848,
    /// RFC 6531 section 3.7.3).
    pub(crate) protocol: &'a str,
    pub(crate) id: &'a str,
    /// The recipient, named only when there is exactly one (naming several
    /// would disclose Bcc recipients to each other).
    pub(crate) single_recipient: Option<&'a str>,
    pub(crate) date_ms: i64,
}

/// `Return-Path: <reverse-path>` CRLF, added at final delivery
/// (RFC 5321 section 4.4).
pub(crate) fn return_path(reverse_path: &str) -> String {
    format!("Return-Path: <{reverse_path}>\r\n")
}

/// A `Received` field with its CRLF, folded onto short lines:
///
/// ```text
/// Received: from client.example ([192.0.2.1])
///         by mx.example.com (Bulwark) with ESMTPS id 5f2c-1
///         for <alice@example.com>;
///         Tue, 01 Jul 2025 10:00:00 +0000
/// ```
pub(crate) fn received(f: &ReceivedFields<'_>) -> String {
    let mut out = String::with_capacity(200);
    let _ = write!(
        out,
        "Received: from {} ({})\r\n\tby {} (Bulwark) with {} id {}",
        f.helo,
        address_literal(f.ip),
        f.hostname,
        f.protocol,
        f.id
    );
    if let Some(rcpt) = f.single_recipient {
        let _ = write!(out, "\r\n\tfor <{rcpt}>");
    }
    let _ = write!(out, ";\r\n\t{}\r\n", rfc5322_date(f.date_ms));
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc5322() {
        assert_eq!(
            rfc5322_date(1_751_364_000_000),
            "Tue, 01 Jul 2025 10:00:00 +0000"
        );
        assert_eq!(rfc5322_date(i64::MAX), "Thu, 01 Jan 1970 00:00:00 +0000");
    }

    #[test]
    fn literals() {
        assert_eq!(address_literal("192.0.2.1".parse().unwrap()), "[192.0.2.1]");
        assert_eq!(
            address_literal("2001:db8::1".parse().unwrap()),
            "[IPv6:2001:db8::1]"
        );
        assert_eq!(
            address_literal("::ffff:192.0.2.1".parse().unwrap()),
            "[192.0.2.1]"
        );
    }

    #[test]
    fn helo_names_cannot_inject() {
        assert_eq!(clean_helo("mail.example.com"), "mail.example.com");
        assert_eq!(clean_helo("[192.0.2.1]"), "[192.0.2.1]");
        assert_eq!(clean_helo("a\r\nX-Evil: 1"), "invalid");
        assert_eq!(clean_helo("a b"), "invalid");
        assert_eq!(clean_helo("(comment)"), "invalid");
        assert_eq!(clean_helo(""), "invalid");
    }

    #[test]
    fn received_field() {
        let text = received(&ReceivedFields {
            helo: "client.example",
            ip: "192.0.2.1".parse().unwrap(),
            hostname: "mx.example.com",
            protocol: "ESMTPS",
            id: "abc-1",
            single_recipient: Some("alice@example.com"),
            date_ms: 1_751_364_000_000,
        });
        assert_eq!(
            text,
            "Received: from client.example ([192.0.2.1])\r\n\tby mx.example.com (Bulwark) with ESMTPS id abc-1\r\n\tfor <alice@example.com>;\r\n\tTue, 01 Jul 2025 10:00:00 +0000\r\n"
        );
    }
}
