//! Command lines the client sends, built from caller data that is checked
//! first so nothing it holds can end a line or add a parameter.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::ehlo::Extensions;

/// Longest path including its angle brackets (RFC 5321 section
/// 4.5.3.1.3).
const MAX_PATH: usize = 256;

/// Longest `ENVID` value (RFC 3461 section 4.4), before xtext encoding.
const MAX_ENVID: usize = 100;

/// Why an address cannot go into a command.
pub(crate) fn check_address(address: &str, allow_empty: bool) -> Result<(), String> {
    if address.is_empty() {
        return if allow_empty {
            Ok(())
        } else {
            Err("empty address".into())
        };
    }
    if address.len() + 2 > MAX_PATH {
        return Err(format!("address longer than {} bytes", MAX_PATH - 2));
    }
    // CR, LF and other controls could end the command or hide a second
    // one; angle brackets could close the path and add parameters. No
    // valid mailbox contains any of them unquoted, and quoted ones are not
    // worth the risk.
    if let Some(c) = address
        .chars()
        .find(|&c| c.is_control() || c == '<' || c == '>')
    {
        return Err(format!("address contains {c:?}"));
    }
    Ok(())
}

/// Whether our EHLO name is fit for the command line: a domain or an
/// address literal, printable ASCII without spaces.
pub(crate) fn check_helo_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 255 || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("unusable EHLO name {name:?}"));
    }
    Ok(())
}

/// What MAIL FROM declares about the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MailParameters<'a> {
    pub(crate) size: u64,
    pub(crate) eight_bit: bool,
    pub(crate) smtputf8: bool,
    pub(crate) envelope_id: Option<&'a str>,
}

/// `MAIL FROM:<reverse-path> [parameters]` (RFC 5321 section 4.1.1.2),
/// with each parameter only where the server offered its extension. The
/// caller has already refused a message that needs SMTPUTF8 where it is
/// not offered.
pub(crate) fn mail_from(from: &str, parameters: &MailParameters<'_>, ext: &Extensions) -> String {
    let mut line = format!("MAIL FROM:<{from}>");
    if ext.size.is_some() {
        // RFC 1870 section 6.
        line.push_str(&format!(" SIZE={}", parameters.size));
    }
    if parameters.eight_bit && (ext.eight_bit_mime || ext.smtputf8) {
        // RFC 6152 section 3; RFC 6531 section 3.2 makes SMTPUTF8 imply
        // 8BITMIME, so the parameter is valid with either.
        line.push_str(" BODY=8BITMIME");
    }
    if parameters.smtputf8 && ext.smtputf8 {
        // RFC 6531 section 3.4.
        line.push_str(" SMTPUTF8");
    }
    if let Some(id) = parameters.envelope_id
        && ext.dsn
        && !id.is_empty()
        && id.len() <= MAX_ENVID
    {
        // RFC 3461 section 4.4. An identifier too long for the wire is
        // left out: the DSN then lacks it, the message still goes.
        line.push_str(" ENVID=");
        line.push_str(&xtext(id));
    }
    line.push_str("\r\n");
    line
}

/// `RCPT TO:<forward-path>` (RFC 5321 section 4.1.1.3).
pub(crate) fn rcpt_to(to: &str) -> String {
    format!("RCPT TO:<{to}>\r\n")
}

/// The initial response of AUTH PLAIN (RFC 4616 section 2): no
/// authorization identity, then the authentication identity and the
/// password, NUL-separated and base64-encoded (RFC 4954 section 4).
pub(crate) fn auth_plain(username: &str, password: &str) -> Result<String, String> {
    if username.contains('\0') || password.contains('\0') {
        return Err("credentials contain NUL, which AUTH PLAIN cannot carry".into());
    }
    let mut token = Vec::with_capacity(username.len() + password.len() + 2);
    token.push(0);
    token.extend_from_slice(username.as_bytes());
    token.push(0);
    token.extend_from_slice(password.as_bytes());
    Ok(format!("AUTH PLAIN {}\r\n", STANDARD.encode(&token)))
}

/// One base64 line of the AUTH LOGIN exchange.
pub(crate) fn base64_line(value: &str) -> String {
    format!("{}\r\n", STANDARD.encode(value.as_bytes()))
}

/// `xtext` (RFC 3461 section 4): `+` and `=`, and anything outside `!` to
/// `~`, written as `+` and two upper-case hex digits.
fn xtext(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value.as_bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn addresses_that_could_inject_are_refused() {
        assert!(check_address("", true).is_ok());
        assert!(check_address("", false).is_err());
        assert!(check_address("user@example.com", false).is_ok());
        assert!(check_address("\"john doe\"@example.com", false).is_ok());
        assert!(check_address("postmaster", false).is_ok());
        assert!(check_address("jöran@exämple.de", false).is_ok());
        for bad in [
            "a@b.c>\r\nRCPT TO:<x@y.z",
            "a@b.c\nDATA",
            "a@b.c> SIZE=1",
            "<a@b.c",
            "a\0@b.c",
            "a\t@b.c",
        ] {
            assert!(check_address(bad, false).is_err(), "{bad:?}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(check_address(&long, false).is_err());
    }

    #[test]
    fn helo_names() {
        assert!(check_helo_name("mail.example.com").is_ok());
        assert!(check_helo_name("[192.0.2.1]").is_ok());
        assert!(check_helo_name("").is_err());
        assert!(check_helo_name("a b").is_err());
        assert!(check_helo_name("a\r\nMAIL").is_err());
    }

    #[test]
    fn mail_parameters_follow_the_offer() {
        let parameters = MailParameters {
            size: 1234,
            eight_bit: true,
            smtputf8: true,
            envelope_id: Some("q+1=x y"),
        };
        assert_eq!(
            mail_from("a@b.c", &parameters, &Extensions::default()),
            "MAIL FROM:<a@b.c>\r\n"
        );
        let all = Extensions {
            size: Some(0),
            eight_bit_mime: true,
            smtputf8: true,
            dsn: true,
            ..Extensions::default()
        };
        assert_eq!(
            mail_from("", &parameters, &all),
            "MAIL FROM:<> SIZE=1234 BODY=8BITMIME SMTPUTF8 ENVID=q+2B1+3Dx+20y\r\n"
        );
        let long_id = "x".repeat(MAX_ENVID + 1);
        let parameters = MailParameters {
            envelope_id: Some(&long_id),
            eight_bit: false,
            ..parameters
        };
        assert_eq!(
            mail_from("a@b.c", &parameters, &all),
            "MAIL FROM:<a@b.c> SIZE=1234 SMTPUTF8\r\n"
        );
    }

    #[test]
    fn auth_plain_token() {
        // RFC 4616 section 4's example, without an authorization identity.
        assert_eq!(
            auth_plain("tim", "tanstaaftanstaaf").unwrap(),
            "AUTH PLAIN AHRpbQB0YW5zdGFhZnRhbnN0YWFm\r\n"
        );
        assert!(auth_plain("a\0b", "c").is_err());
        assert_eq!(base64_line("tim"), "dGlt\r\n");
    }
}
