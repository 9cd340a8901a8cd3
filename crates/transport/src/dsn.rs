//! Delivery status notifications (RFC 3464 reports, RFC 3461 semantics)
//! for the senders of queued mail.
//!
//! A notice goes to the envelope sender with a null sender of its own
//! (RFC 5321 section 6.1 and 4.5.5), so it can never cause another one.

use std::fmt::Write;

/// Returned originals are cut to their header above this size even with
/// `RET=FULL`: a notice must not become a way to multiply big messages.
const MAX_RETURNED_BYTES: usize = 256 * 1024;

/// What the notice reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    /// Delivery failed for good.
    Failed,
    /// Delivery is late and still being tried.
    Delayed,
    /// Delivered into the recipient's mailbox (asked for with
    /// `NOTIFY=SUCCESS`).
    Delivered,
    /// Handed to a next hop that was not asked to report further
    /// (`NOTIFY=SUCCESS`; RFC 3461 section 6.2.1 "relayed").
    Relayed,
}

impl NoticeKind {
    /// The DSN `NOTIFY` keyword that asks for this kind of notice.
    pub fn notify_keyword(self) -> &'static str {
        match self {
            NoticeKind::Failed => "FAILURE",
            NoticeKind::Delayed => "DELAY",
            NoticeKind::Delivered | NoticeKind::Relayed => "SUCCESS",
        }
    }
}

/// One recipient's line in a notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientReport {
    /// The recipient.
    pub address: String,
    /// The DSN `ORCPT`, when the submitter gave one.
    pub original_recipient: Option<String>,
    /// The enhanced status code (RFC 3463), such as `5.1.1`.
    pub status: String,
    /// What the next hop (or we) said.
    pub diagnostic: String,
    /// The host that answered, if any.
    pub remote_mta: Option<String>,
}

/// Everything a notice says.
#[derive(Debug, Clone)]
pub struct Notice<'a> {
    /// Failure or delay.
    pub kind: NoticeKind,
    /// Our hostname (the reporting MTA).
    pub hostname: &'a str,
    /// Who gets the notice: the original envelope sender.
    pub to: &'a str,
    /// The original message's DSN envelope id.
    pub envelope_id: Option<&'a str>,
    /// When the original arrived, Unix milliseconds.
    pub arrival_ms: i64,
    /// Until when it is retried (delay notices), Unix milliseconds.
    pub retry_until_ms: Option<i64>,
    /// The recipients reported on.
    pub recipients: &'a [RecipientReport],
    /// The original message.
    pub original: &'a [u8],
    /// Whether the whole original is returned (`RET=FULL`) or its header.
    pub return_full: bool,
    /// A unique token for the boundary and Message-ID.
    pub token: &'a str,
    /// Now, Unix milliseconds.
    pub now_ms: i64,
}

/// The enhanced status code in a reply such as `550 5.1.1 No such user`,
/// or a generic one of the reply's class.
pub fn status_of(reply: &str, permanent: bool) -> String {
    let mut words = reply.split_whitespace();
    let code = words.next().unwrap_or("");
    let candidate = if code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()) {
        words.next().unwrap_or("")
    } else {
        code
    };
    let parts: Vec<&str> = candidate.split('.').collect();
    let valid = parts.len() == 3
        && matches!(parts[0], "2" | "4" | "5")
        && parts[1..]
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()));
    if valid {
        return candidate.to_string();
    }
    if permanent { "5.0.0" } else { "4.0.0" }.to_string()
}

/// Keeps a field value on one line of printable ASCII.
fn field(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(900)
        .collect()
}

fn header_end(message: &[u8]) -> usize {
    message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(message.len(), |p| p + 4)
}

/// The notice as a complete message.
pub fn build(notice: &Notice<'_>) -> Vec<u8> {
    let date = crate::rfc5322_date(notice.now_ms);
    let boundary = format!("dsn-{}", notice.token);
    let (subject, action, summary) = match notice.kind {
        NoticeKind::Failed => (
            "Undelivered Mail Returned to Sender",
            "failed",
            "Your message could not be delivered to the recipients below. No further attempts will be made.",
        ),
        NoticeKind::Delayed => (
            "Delayed Mail (still being retried)",
            "delayed",
            "Your message has not been delivered yet to the recipients below. Delivery is still being attempted; you do not need to send it again.",
        ),
        NoticeKind::Delivered => (
            "Successful Mail Delivery Report",
            "delivered",
            "Your message was delivered to the mailboxes of the recipients below.",
        ),
        NoticeKind::Relayed => (
            "Successful Mail Delivery Report",
            "relayed",
            "Your message was handed to the recipients' mail servers below; they were not asked to report further.",
        ),
    };
    let mut out = String::new();
    let _ = write!(
        out,
        "From: Mail Delivery System <MAILER-DAEMON@{host}>\r\n\
         To: <{to}>\r\n\
         Subject: {subject}\r\n\
         Date: {date}\r\n\
         Message-ID: <{token}@{host}>\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\
         \r\n\
         This is the mail system at {host}.\r\n\r\n{summary}\r\n\r\n",
        host = notice.hostname,
        to = field(notice.to),
        token = notice.token,
    );
    for r in notice.recipients {
        let _ = write!(out, "<{}>: {}\r\n", field(&r.address), field(&r.diagnostic));
    }
    let _ = write!(
        out,
        "\r\n--{boundary}\r\n\
         Content-Type: message/delivery-status\r\n\
         \r\n\
         Reporting-MTA: dns; {}\r\n",
        notice.hostname
    );
    if let Some(envid) = notice.envelope_id {
        let _ = write!(out, "Original-Envelope-Id: {}\r\n", field(envid));
    }
    let _ = write!(
        out,
        "Arrival-Date: {}\r\n",
        crate::rfc5322_date(notice.arrival_ms)
    );
    for r in notice.recipients {
        let _ = write!(
            out,
            "\r\nFinal-Recipient: rfc822; {}\r\n",
            field(&r.address)
        );
        if let Some(orcpt) = &r.original_recipient {
            let _ = write!(out, "Original-Recipient: {}\r\n", field(orcpt));
        }
        let _ = write!(out, "Action: {action}\r\nStatus: {}\r\n", field(&r.status));
        if let Some(mta) = &r.remote_mta {
            let _ = write!(out, "Remote-MTA: dns; {}\r\n", field(mta));
        }
        let _ = write!(out, "Diagnostic-Code: smtp; {}\r\n", field(&r.diagnostic));
        if let (NoticeKind::Delayed, Some(until)) = (notice.kind, notice.retry_until_ms) {
            let _ = write!(out, "Will-Retry-Until: {}\r\n", crate::rfc5322_date(until));
        }
    }
    let full = notice.return_full && notice.original.len() <= MAX_RETURNED_BYTES;
    let (content_type, returned) = if full {
        ("message/rfc822", notice.original)
    } else {
        (
            "text/rfc822-headers",
            &notice.original[..header_end(notice.original)],
        )
    };
    let _ = write!(
        out,
        "\r\n--{boundary}\r\nContent-Type: {content_type}\r\n\r\n"
    );
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(returned);
    if !bytes.ends_with(b"\r\n") {
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    bytes
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_come_from_replies() {
        assert_eq!(status_of("550 5.1.1 No such user", true), "5.1.1");
        assert_eq!(status_of("452 4.2.2 Mailbox full", false), "4.2.2");
        assert_eq!(status_of("550 No such user", true), "5.0.0");
        assert_eq!(status_of("connection refused", false), "4.0.0");
        assert_eq!(status_of("550 9.9.9 nonsense", true), "5.0.0");
        assert_eq!(status_of("5.7.1 refused", true), "5.7.1");
    }

    #[test]
    fn failure_notice_is_a_delivery_report() {
        let original = b"From: a@example.com\r\nSubject: hi\r\n\r\nsecret body\r\n";
        let recipients = [RecipientReport {
            address: "x@remote.test".into(),
            original_recipient: Some("rfc822;x@remote.test".into()),
            status: "5.1.1".into(),
            diagnostic: "550 5.1.1 no such user\r\nInjected: header".into(),
            remote_mta: Some("mx.remote.test".into()),
        }];
        let notice = Notice {
            kind: NoticeKind::Failed,
            hostname: "mx.example.com",
            to: "a@example.com",
            envelope_id: Some("env-1"),
            arrival_ms: 0,
            retry_until_ms: None,
            recipients: &recipients,
            original,
            return_full: false,
            token: "abc",
            now_ms: 1000,
        };
        let text = String::from_utf8(build(&notice)).unwrap();
        assert!(text.contains("Content-Type: multipart/report; report-type=delivery-status;"));
        assert!(text.contains("Final-Recipient: rfc822; x@remote.test\r\n"));
        assert!(text.contains("Action: failed\r\nStatus: 5.1.1\r\n"));
        assert!(text.contains("Original-Envelope-Id: env-1\r\n"));
        assert!(text.contains("Remote-MTA: dns; mx.remote.test\r\n"));
        assert!(text.contains("Content-Type: text/rfc822-headers"));
        assert!(
            !text.contains("secret body"),
            "headers only without RET=FULL"
        );
        assert!(
            !text.contains("\r\nInjected: header"),
            "diagnostics cannot add fields"
        );
        assert!(text.ends_with("--dsn-abc--\r\n"));
        let parsed = mail_parser::MessageParser::default()
            .parse(text.as_bytes())
            .unwrap();
        assert_eq!(
            parsed.subject(),
            Some("Undelivered Mail Returned to Sender")
        );

        let full = Notice {
            return_full: true,
            kind: NoticeKind::Delayed,
            retry_until_ms: Some(5000),
            ..notice
        };
        let text = String::from_utf8(build(&full)).unwrap();
        assert!(text.contains("Content-Type: message/rfc822"));
        assert!(text.contains("secret body"));
        assert!(text.contains("Action: delayed"));
        assert!(text.contains("Will-Retry-Until: "));
    }
}
