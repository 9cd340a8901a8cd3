//! Authentication of inbound mail: SPF (RFC 7208), DKIM (RFC 6376), ARC
//! (RFC 8617) and DMARC (RFC 7489), recorded in an
//! `Authentication-Results` field (RFC 8601).
//!
//! The verdict is advice for the SMTP front end: it adds the header and,
//! when the sender's domain publishes `p=reject` and the message fails
//! DMARC, refuses the message at the end of data. DNS failures never turn
//! into a rejection: they are recorded as `temperror`.

use std::net::IpAddr;
use std::time::Duration;

use mail_auth::common::headers::HeaderWriter;
use mail_auth::dmarc::Policy;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{AuthenticatedMessage, AuthenticationResults, DkimResult, DmarcResult};

use crate::dns::Dns;

/// The whole check gives up after this long (each lookup has its own
/// shorter timeout); a slow DNS must not hold a session open forever.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(30);

/// What the SMTP session knows about the message being checked.
#[derive(Debug, Clone, Copy)]
pub struct Inbound<'a> {
    /// The client's address.
    pub ip: IpAddr,
    /// The name it gave in EHLO/HELO.
    pub helo: &'a str,
    /// The envelope sender (empty for a bounce).
    pub mail_from: &'a str,
    /// Our own name, the `authserv-id` of the results.
    pub hostname: &'a str,
}

/// The outcome of the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The `Authentication-Results` field, with its CRLF, to put at the top.
    pub header: String,
    /// Set when the message must be refused: the reply text.
    pub reject: Option<String>,
    /// The domains of the DKIM signatures that verified.
    pub dkim_pass: Vec<String>,
}

/// The organisational domain, approximated as the last two labels: without
/// the public suffix list, `a.example.co.uk` is treated as `co.uk`. The
/// error is towards leniency — relaxed alignment may pass where it should
/// not, a policy is never applied to a domain it does not cover — so it can
/// never reject good mail.
fn organisational_domain(domain: &str) -> &str {
    let mut dots = domain.rmatch_indices('.');
    dots.next();
    match dots.next() {
        Some((i, _)) => &domain[i + 1..],
        None => domain,
    }
}

/// Runs SPF, DKIM, ARC and DMARC over `message`.
pub async fn verify(dns: &Dns, inbound: Inbound<'_>, message: &[u8]) -> Verdict {
    match tokio::time::timeout(VERIFY_TIMEOUT, verify_inner(dns, inbound, message)).await {
        Ok(verdict) => verdict,
        Err(_) => Verdict {
            header: format!(
                "Authentication-Results: {}; dkim=temperror; spf=temperror; dmarc=temperror\r\n",
                inbound.hostname
            ),
            reject: None,
            dkim_pass: Vec::new(),
        },
    }
}

async fn verify_inner(dns: &Dns, inbound: Inbound<'_>, message: &[u8]) -> Verdict {
    let auth = dns.authenticator();
    let Some(parsed) = AuthenticatedMessage::parse(message) else {
        return Verdict {
            header: format!(
                "Authentication-Results: {}; none (message not parseable)\r\n",
                inbound.hostname
            ),
            reject: None,
            dkim_pass: Vec::new(),
        };
    };
    let helo = if inbound.helo.is_empty() {
        "unknown"
    } else {
        inbound.helo
    };
    // RFC 7208 section 2.4: with a null sender, the HELO identity is checked.
    let spf = if inbound.mail_from.is_empty() {
        auth.verify_spf(dns.with_records(SpfParameters::verify_ehlo(
            inbound.ip,
            helo,
            inbound.hostname,
        )))
        .await
    } else {
        auth.verify_spf(dns.with_records(SpfParameters::verify_mail_from(
            inbound.ip,
            helo,
            inbound.hostname,
            inbound.mail_from,
        )))
        .await
    };
    let dkim = auth.verify_dkim(dns.with_records(&parsed)).await;
    let arc = auth.verify_arc(dns.with_records(&parsed)).await;
    let mail_from_domain = inbound.mail_from.rsplit_once('@').map_or(helo, |(_, d)| d);
    let dmarc = auth
        .verify_dmarc(
            dns.with_records(
                DmarcParameters::new(&parsed, &dkim, mail_from_domain, &spf)
                    .with_domain_suffix_fn(organisational_domain),
            ),
        )
        .await;

    let from = parsed.from();
    let mut results = AuthenticationResults::new(inbound.hostname).with_dkim_results(&dkim, from);
    results = if inbound.mail_from.is_empty() {
        results.with_spf_ehlo_result(&spf, inbound.ip, helo)
    } else {
        results.with_spf_mailfrom_result(&spf, inbound.ip, inbound.mail_from, helo)
    };
    let results = results
        .with_arc_result(&arc, inbound.ip)
        .with_dmarc_result(&dmarc);

    // RFC 7489 section 6.6.2: DMARC passes when an aligned SPF or DKIM
    // result passes. A lookup that failed temporarily is not a failure.
    let outcomes = [dmarc.dkim_result(), dmarc.spf_result()];
    let passed = outcomes.iter().any(|r| matches!(r, DmarcResult::Pass));
    let unsure = outcomes
        .iter()
        .any(|r| matches!(r, DmarcResult::TempError(_)));
    let failed = !passed && !unsure;
    let reject = (failed && dmarc.policy() == Policy::Reject).then(|| {
        format!(
            "5.7.1 Message refused: it fails the DMARC policy of {}",
            dmarc.domain()
        )
    });
    let dkim_pass = dkim
        .iter()
        .filter(|d| d.result() == &DkimResult::Pass)
        .filter_map(|d| d.signature().map(|s| s.d.to_string()))
        .collect();
    Verdict {
        header: results.to_header(),
        reject,
        dkim_pass,
    }
}

/// Removes `Authentication-Results` fields that claim to come from us
/// (`authserv-id` equal to `hostname`): RFC 8601 section 5 says a receiver
/// must not let a sender forge its own verdicts. Other servers' fields stay.
pub fn strip_forged_results(message: &mut Vec<u8>, hostname: &str) {
    let header_end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(message.len(), |p| p + 2);
    // Field boundaries: a line that does not start with white space starts a field.
    let mut fields = Vec::new();
    let mut start = 0;
    let mut pos = 0;
    while pos < header_end {
        let eol = message[pos..header_end]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(header_end, |p| pos + p + 2);
        let next_is_continuation = message.get(eol).is_some_and(|b| *b == b' ' || *b == b'\t');
        if !next_is_continuation || eol >= header_end {
            fields.push((start, eol));
            start = eol;
        }
        pos = eol;
    }
    let ours = |field: &[u8]| -> bool {
        let text = String::from_utf8_lossy(field);
        let Some((name, value)) = text.split_once(':') else {
            return false;
        };
        if !name.trim().eq_ignore_ascii_case("Authentication-Results") {
            return false;
        }
        let id = value
            .trim_start()
            .split(|c: char| c == ';' || c.is_whitespace())
            .next()
            .unwrap_or_default();
        id.eq_ignore_ascii_case(hostname)
    };
    let forged: Vec<(usize, usize)> = fields
        .into_iter()
        .filter(|(a, b)| ours(&message[*a..*b]))
        .collect();
    for (a, b) in forged.into_iter().rev() {
        message.drain(a..b);
    }
}

#[cfg(test)]
mod tests {
    use super::organisational_domain;

    #[test]
    fn forged_results_are_removed() {
        let mut m = b"Received: x\r\nAuthentication-Results: mx.example.com;\r\n\tdkim=pass\r\nAuthentication-Results: other.example; spf=fail\r\nauthentication-results: MX.EXAMPLE.COM; dmarc=pass\r\nSubject: s\r\n\r\nAuthentication-Results: mx.example.com; body stays\r\n".to_vec();
        super::strip_forged_results(&mut m, "mx.example.com");
        assert_eq!(
            String::from_utf8(m).expect("still text"),
            "Received: x\r\nAuthentication-Results: other.example; spf=fail\r\nSubject: s\r\n\r\nAuthentication-Results: mx.example.com; body stays\r\n"
        );
    }

    #[test]
    fn organisational_domains() {
        assert_eq!(organisational_domain("mail.example.com"), "example.com");
        assert_eq!(organisational_domain("example.com"), "example.com");
        assert_eq!(organisational_domain("com"), "com");
        assert_eq!(organisational_domain("a.b.example.org"), "example.org");
    }
}
