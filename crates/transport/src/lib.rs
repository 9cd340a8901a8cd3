//! Mail transport services: the outbound queue and its delivery to other
//! servers, DKIM signing of what we send, and authentication (SPF, DKIM,
//! ARC, DMARC) of what we receive.
//!
//! # What this crate owns
//!
//! * [`queue`]: the persistent outbound queue ([`queue::OutboundQueue`]
//!   to put mail in, [`queue::QueueRunner`] to deliver it) with per-recipient
//!   retries, expiry and delivery status notifications ([`dsn`]).
//! * [`client`]: the SMTP client that hands mail to the next hop.
//! * [`route`]: where mail for a domain goes: a static route, the
//!   smarthost, or the domain's MX hosts ([`dns`]), with TLS required where
//!   the domain publishes an MTA-STS policy ([`mta_sts`]).
//! * [`dkim`]: per-domain signing keys and signatures.
//! * [`verify`]: the checks of inbound mail, as an `Authentication-Results`
//!   field and a DMARC verdict.
//!
//! # What it must not do
//!
//! * Accept connections or speak a protocol as a server: front ends (SMTP
//!   submission, later JMAP and iMIP from CalDAV) put mail in the queue
//!   through [`queue::OutboundQueue`]; they never call the client.
//! * Contact anything a message names. The only hosts contacted are next
//!   hops found from recipient domains (static routes, MX, A/AAAA) and,
//!   for MTA-STS, the fixed `mta-sts.` host of a recipient domain.
//! * Lose or duplicate queued mail knowingly: a recipient is settled in the
//!   store only after the next hop's final reply, and a message leaves the
//!   queue in the same write as its last recipient. A crash between a next
//!   hop's acceptance and that write can deliver a recipient twice, the
//!   at-least-once behaviour every MTA has (RFC 5321 section 6.1).
//! * Send a notice about a notice: mail with a null sender is never bounced.

pub mod client;
pub mod dkim;
pub mod dns;
pub mod dsn;
pub mod mta_sts;
pub mod queue;
pub mod route;
pub mod verify;

/// An RFC 5322 date-time for a Unix time in milliseconds.
pub fn rfc5322_date(ms: i64) -> String {
    let nanos = i128::from(ms).saturating_mul(1_000_000);
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc2822)
                .ok()
        })
        .unwrap_or_else(|| "Thu, 01 Jan 1970 00:00:00 +0000".to_string())
}
