//! The server's EHLO reply: which service extensions it offers
//! (RFC 5321 section 4.1.1.1, `ehlo-ok-rsp`).

use super::reply::Reply;

/// The extensions the client uses, as offered by one EHLO reply. After
/// STARTTLS they are read again from the new EHLO reply (RFC 3207 section
/// 4.2): what the server said in plaintext counts for nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Extensions {
    /// STARTTLS (RFC 3207).
    pub(crate) starttls: bool,
    /// SIZE (RFC 1870): `None` when not offered, `Some(0)` when offered
    /// without a fixed limit, otherwise the largest message accepted.
    pub(crate) size: Option<u64>,
    /// PIPELINING (RFC 2920). Recorded only: commands are sent one at a
    /// time.
    pub(crate) pipelining: bool,
    /// 8BITMIME (RFC 6152).
    pub(crate) eight_bit_mime: bool,
    /// SMTPUTF8 (RFC 6531).
    pub(crate) smtputf8: bool,
    /// DSN (RFC 3461).
    pub(crate) dsn: bool,
    /// AUTH PLAIN offered (RFC 4954, RFC 4616).
    pub(crate) auth_plain: bool,
    /// AUTH LOGIN offered (draft-murchison-sasl-login).
    pub(crate) auth_login: bool,
}

impl Extensions {
    /// Reads the extensions from a 250 reply to EHLO. The first line is the
    /// server's name; each further line is `ehlo-keyword *( SP ehlo-param )`.
    /// Keywords are case-insensitive; unknown ones and malformed parameters
    /// are ignored, since an extension we cannot read is one we do not use.
    pub(crate) fn from_ehlo(reply: &Reply) -> Self {
        let mut extensions = Self::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            // Some servers still write `AUTH=LOGIN PLAIN`, the form of an
            // early draft of RFC 2554; read it like `AUTH LOGIN PLAIN`.
            let (keyword, first_param) = match keyword.split_once('=') {
                Some((keyword, param)) if keyword.eq_ignore_ascii_case("AUTH") => {
                    (keyword, Some(param))
                }
                _ => (keyword, None),
            };
            match keyword.to_ascii_uppercase().as_str() {
                "STARTTLS" => extensions.starttls = true,
                "PIPELINING" => extensions.pipelining = true,
                "8BITMIME" => extensions.eight_bit_mime = true,
                "SMTPUTF8" => extensions.smtputf8 = true,
                "DSN" => extensions.dsn = true,
                // RFC 1870 section 4: `"SIZE" [SP 1*DIGIT]`, where no
                // number or 0 means no fixed limit. A number we cannot
                // read is taken as no fixed limit too: the server will
                // still refuse an oversized message itself.
                "SIZE" => {
                    extensions.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0));
                }
                "AUTH" => {
                    for mechanism in first_param.into_iter().chain(words) {
                        if mechanism.eq_ignore_ascii_case("PLAIN") {
                            extensions.auth_plain = true;
                        } else if mechanism.eq_ignore_ascii_case("LOGIN") {
                            extensions.auth_login = true;
                        }
                    }
                }
                _ => {}
            }
        }
        extensions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ehlo(lines: &[&str]) -> Extensions {
        Extensions::from_ehlo(&Reply {
            code: 250,
            lines: lines.iter().map(|l| l.to_string()).collect(),
        })
    }

    #[test]
    fn reads_the_keywords_we_use() {
        let e = ehlo(&[
            "mx.example.net greets you",
            "size 35882577",
            "PIPELINING",
            "8BITMIME",
            "SMTPUTF8",
            "DSN",
            "AUTH LOGIN PLAIN XOAUTH2",
            "STARTTLS",
            "ENHANCEDSTATUSCODES",
            "CHUNKING",
        ]);
        assert_eq!(
            e,
            Extensions {
                starttls: true,
                size: Some(35_882_577),
                pipelining: true,
                eight_bit_mime: true,
                smtputf8: true,
                dsn: true,
                auth_plain: true,
                auth_login: true,
            }
        );
    }

    #[test]
    fn the_greeting_line_is_not_a_keyword() {
        // A server named "STARTTLS" does not offer STARTTLS.
        assert_eq!(ehlo(&["STARTTLS"]), Extensions::default());
    }

    #[test]
    fn size_without_limit_and_old_auth_form() {
        let e = ehlo(&["mx", "SIZE", "AUTH=LOGIN"]);
        assert_eq!(e.size, Some(0));
        assert!(e.auth_login);
        assert!(!e.auth_plain);
        assert_eq!(ehlo(&["mx", "SIZE 0"]).size, Some(0));
        assert_eq!(ehlo(&["mx", "SIZE lots"]).size, Some(0));
        assert_eq!(ehlo(&["mx", "SIZEX 10"]).size, None);
    }

    #[test]
    fn mechanisms_other_than_plain_and_login_are_ignored() {
        let e = ehlo(&["mx", "AUTH CRAM-MD5 XOAUTH2", ""]);
        assert!(!e.auth_plain && !e.auth_login);
    }
}
