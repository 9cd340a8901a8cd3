//! POP3 commands: the wire types and their parser.
//!
//! Grammar (RFC 1939 section 3, RFC 2449 section 3): a case-insensitive
//! keyword, then arguments separated by spaces. Message numbers are
//! `1*DIGIT`. The parser never echoes input back and never panics; what
//! it cannot read is a [`ParseError`] the session answers with `-ERR`.

use std::fmt;

/// A secret from the wire (a password or SASL response): hidden from
/// `Debug`, so it never reaches a log line.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn new(secret: impl Into<String>) -> Secret {
        Secret(secret.into())
    }

    /// The secret itself, for the directory.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A message number as the client sent it. Numbers too large for `u32`
/// saturate: they name no message either way.
pub(crate) type Msg = u32;

/// One command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// `CAPA` (RFC 2449 section 5).
    Capa,
    /// `STLS` (RFC 2595 section 4).
    Stls,
    /// `USER name` (RFC 1939 section 7).
    User(String),
    /// `PASS string`; the rest of the line, spaces included (RFC 1939
    /// section 7: "a POP3 server may treat spaces in the argument as part
    /// of the password").
    Pass(Secret),
    /// `AUTH [mechanism [initial-response]]` (RFC 5034 section 4).
    Auth {
        /// The SASL mechanism; `None` asks for the list.
        mechanism: Option<String>,
        /// The base64 initial response, `=` for an empty one.
        initial: Option<Secret>,
    },
    /// `QUIT` (RFC 1939 sections 4 and 6).
    Quit,
    /// `STAT` (RFC 1939 section 5).
    Stat,
    /// `LIST [msg]`.
    List(Option<Msg>),
    /// `RETR msg`.
    Retr(Msg),
    /// `DELE msg`.
    Dele(Msg),
    /// `NOOP`.
    Noop,
    /// `RSET`.
    Rset,
    /// `TOP msg n` (RFC 1939 section 7).
    Top {
        /// The message.
        msg: Msg,
        /// Body lines wanted; saturates like message numbers.
        lines: u32,
    },
    /// `UIDL [msg]` (RFC 1939 section 7).
    Uidl(Option<Msg>),
}

/// Why a line is not a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParseError {
    /// Not a keyword this server knows (APOP, LAST, RPOP, UTF8, ... too).
    Unknown,
    /// A known keyword with unusable arguments; the text says why.
    Syntax(&'static str),
}

/// `1*DIGIT`, saturating.
fn number(arg: &str) -> Result<u32, ParseError> {
    if arg.is_empty() || !arg.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::Syntax("invalid message number"));
    }
    Ok(arg.parse::<u32>().unwrap_or(u32::MAX))
}

/// Exactly `N` arguments.
fn args<'a, const N: usize>(
    rest: &'a str,
    usage: &'static str,
) -> Result<[&'a str; N], ParseError> {
    let mut out = [""; N];
    let mut words = rest.split_ascii_whitespace();
    for slot in &mut out {
        *slot = words.next().ok_or(ParseError::Syntax(usage))?;
    }
    if words.next().is_some() {
        return Err(ParseError::Syntax(usage));
    }
    Ok(out)
}

/// At most one argument.
fn optional<'a>(rest: &'a str, usage: &'static str) -> Result<Option<&'a str>, ParseError> {
    let mut words = rest.split_ascii_whitespace();
    let first = words.next();
    if words.next().is_some() {
        return Err(ParseError::Syntax(usage));
    }
    Ok(first)
}

/// Parses one line (without its CRLF).
pub(crate) fn parse(line: &[u8]) -> Result<Command, ParseError> {
    let (keyword, rest) = match line.iter().position(|&b| b == b' ') {
        Some(space) => (&line[..space], &line[space + 1..]),
        None => (line, &[][..]),
    };
    // RFC 2449 section 3: keywords are 3 or 4 characters; 8 leaves room.
    if keyword.is_empty() || keyword.len() > 8 || !keyword.iter().all(u8::is_ascii_alphanumeric) {
        return Err(ParseError::Unknown);
    }
    let keyword = keyword.to_ascii_uppercase();
    let text =
        || std::str::from_utf8(rest).map_err(|_| ParseError::Syntax("arguments must be UTF-8"));
    match keyword.as_slice() {
        b"CAPA" => args::<0>(text()?, "CAPA takes no arguments").map(|_| Command::Capa),
        b"STLS" => args::<0>(text()?, "STLS takes no arguments").map(|_| Command::Stls),
        b"QUIT" => args::<0>(text()?, "QUIT takes no arguments").map(|_| Command::Quit),
        b"STAT" => args::<0>(text()?, "STAT takes no arguments").map(|_| Command::Stat),
        b"NOOP" => args::<0>(text()?, "NOOP takes no arguments").map(|_| Command::Noop),
        b"RSET" => args::<0>(text()?, "RSET takes no arguments").map(|_| Command::Rset),
        b"USER" => {
            let name = text()?.trim();
            if name.is_empty() {
                return Err(ParseError::Syntax("usage: USER name"));
            }
            Ok(Command::User(name.to_string()))
        }
        b"PASS" => {
            let secret = text()?;
            if secret.is_empty() {
                return Err(ParseError::Syntax("usage: PASS password"));
            }
            Ok(Command::Pass(Secret::new(secret)))
        }
        b"AUTH" => {
            let usage = "usage: AUTH mechanism [initial-response]";
            let mut words = text()?.split_ascii_whitespace();
            let mechanism = words.next().map(str::to_string);
            let initial = words.next().map(Secret::new);
            if words.next().is_some() {
                return Err(ParseError::Syntax(usage));
            }
            Ok(Command::Auth { mechanism, initial })
        }
        b"LIST" => optional(text()?, "usage: LIST [msg]")?
            .map(number)
            .transpose()
            .map(Command::List),
        b"UIDL" => optional(text()?, "usage: UIDL [msg]")?
            .map(number)
            .transpose()
            .map(Command::Uidl),
        b"RETR" => {
            let [msg] = args::<1>(text()?, "usage: RETR msg")?;
            Ok(Command::Retr(number(msg)?))
        }
        b"DELE" => {
            let [msg] = args::<1>(text()?, "usage: DELE msg")?;
            Ok(Command::Dele(number(msg)?))
        }
        b"TOP" => {
            let [msg, lines] = args::<2>(text()?, "usage: TOP msg lines")?;
            let msg = number(msg)?;
            let lines = number(lines).map_err(|_| ParseError::Syntax("invalid line count"))?;
            Ok(Command::Top { msg, lines })
        }
        _ => Err(ParseError::Unknown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers() {
        let table: &[(&[u8], Result<Command, ParseError>)] = &[
            (b"CAPA", Ok(Command::Capa)),
            (b"capa", Ok(Command::Capa)),
            (b"STLS", Ok(Command::Stls)),
            (b"USER mrose", Ok(Command::User("mrose".into()))),
            (b"USER  mrose ", Ok(Command::User("mrose".into()))),
            (
                b"PASS secret with spaces ",
                Ok(Command::Pass(Secret::new("secret with spaces "))),
            ),
            (b"STAT", Ok(Command::Stat)),
            (b"LIST", Ok(Command::List(None))),
            (b"LIST 2", Ok(Command::List(Some(2)))),
            (b"list 99999999999999", Ok(Command::List(Some(u32::MAX)))),
            (b"RETR 1", Ok(Command::Retr(1))),
            (b"DELE 1", Ok(Command::Dele(1))),
            (b"NOOP", Ok(Command::Noop)),
            (b"RSET", Ok(Command::Rset)),
            (b"QUIT", Ok(Command::Quit)),
            (b"TOP 1 10", Ok(Command::Top { msg: 1, lines: 10 })),
            (b"TOP 1 0", Ok(Command::Top { msg: 1, lines: 0 })),
            (b"UIDL", Ok(Command::Uidl(None))),
            (b"UIDL 3", Ok(Command::Uidl(Some(3)))),
            (
                b"AUTH",
                Ok(Command::Auth {
                    mechanism: None,
                    initial: None,
                }),
            ),
            (
                b"AUTH PLAIN",
                Ok(Command::Auth {
                    mechanism: Some("PLAIN".into()),
                    initial: None,
                }),
            ),
            (
                b"AUTH PLAIN AHRlc3QAdGVzdA==",
                Ok(Command::Auth {
                    mechanism: Some("PLAIN".into()),
                    initial: Some(Secret::new("AHRlc3QAdGVzdA==")),
                }),
            ),
            (b"", Err(ParseError::Unknown)),
            (
                b"APOP mrose c4c9334bac560ecc979e58001b3e22fb",
                Err(ParseError::Unknown),
            ),
            (b"LAST", Err(ParseError::Unknown)),
            (b"\xff\xfe", Err(ParseError::Unknown)),
            (b"RETR", Err(ParseError::Syntax("usage: RETR msg"))),
            (b"RETR 1 2", Err(ParseError::Syntax("usage: RETR msg"))),
            (
                b"RETR -1",
                Err(ParseError::Syntax("invalid message number")),
            ),
            (
                b"RETR +1",
                Err(ParseError::Syntax("invalid message number")),
            ),
            (
                b"DELE one",
                Err(ParseError::Syntax("invalid message number")),
            ),
            (b"TOP 1", Err(ParseError::Syntax("usage: TOP msg lines"))),
            (b"TOP 1 x", Err(ParseError::Syntax("invalid line count"))),
            (
                b"STAT 1",
                Err(ParseError::Syntax("STAT takes no arguments")),
            ),
            (b"LIST 1 2", Err(ParseError::Syntax("usage: LIST [msg]"))),
            (b"USER", Err(ParseError::Syntax("usage: USER name"))),
            (b"USER ", Err(ParseError::Syntax("usage: USER name"))),
            (b"PASS", Err(ParseError::Syntax("usage: PASS password"))),
            (
                b"PASS \xff",
                Err(ParseError::Syntax("arguments must be UTF-8")),
            ),
            (
                b"AUTH PLAIN a b",
                Err(ParseError::Syntax(
                    "usage: AUTH mechanism [initial-response]",
                )),
            ),
        ];
        for (line, want) in table {
            assert_eq!(&parse(line), want, "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let cmd = parse(b"PASS hunter2").expect("parses");
        assert!(!format!("{cmd:?}").contains("hunter2"));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap stand-in for the fuzz target: every short byte string
        // over a small alphabet that covers the grammar's edges.
        let alphabet = b"TOP 1\xff\r\0 ";
        let mut line = Vec::new();
        for n in 0..(alphabet.len().pow(5)) {
            line.clear();
            let mut k = n;
            for _ in 0..5 {
                line.push(alphabet[k % alphabet.len()]);
                k /= alphabet.len();
            }
            let _ = parse(&line);
        }
    }
}
