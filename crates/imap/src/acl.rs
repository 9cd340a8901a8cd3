//! Access to other people's mailboxes: rights (RFC 4314), the "Other
//! Users" and "Shared Folders" namespaces (RFC 2342), and the ACL commands,
//! which imap-codec does not parse. Sans-I/O.
//!
//! A user reaches another principal's mailbox in two ways:
//! * a `full-access` delegation grant (`bulwark grant add`) gives every
//!   mailbox of the grantor with [`Rights::full_access`] — everything but
//!   changing who else has access (`a`);
//! * a per-mailbox entry set by the owner with SETACL gives the letters it
//!   names.
//!
//! Foreign mailboxes appear as `Other Users/<owner address>/<name>` for
//! people and `Shared Folders/<address>/<name>` for shared mailboxes and
//! resources. A mailbox the user has no right on does not exist for them:
//! every refusal reads like a missing mailbox, so nothing is learned about
//! other accounts by probing.

use bulwark_core::PrincipalKind;

/// The namespace of people's mailboxes shared with the user.
pub(crate) const OTHER_USERS: &str = "Other Users";
/// The namespace of shared mailboxes and resources.
pub(crate) const SHARED_FOLDERS: &str = "Shared Folders";

/// The rights letters of RFC 4314 section 2.1, in canonical order.
const LETTERS: &[u8] = b"lrswipkxtea";

/// A set of RFC 4314 rights.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Rights(u16);

impl Rights {
    fn bit(letter: u8) -> Option<u16> {
        LETTERS.iter().position(|&l| l == letter).map(|p| 1 << p)
    }

    /// What an owner has in their own mailboxes.
    pub(crate) fn all() -> Rights {
        Rights((1 << LETTERS.len()) - 1)
    }

    /// What a `full-access` delegate has: all but administering rights.
    pub(crate) fn full_access() -> Rights {
        Rights::all().without(Rights::parse("a").unwrap_or_default())
    }

    /// Parses rights letters. The obsolete `c` and `d` of RFC 2086 map to
    /// their RFC 4314 equivalents (section 2.1.1); anything else unknown is
    /// refused.
    pub(crate) fn parse(text: &str) -> Result<Rights, char> {
        let mut bits = 0;
        for c in text.chars() {
            let letter = u8::try_from(c).map_err(|_| c)?;
            bits |= match letter {
                b'c' => Rights::bit(b'k').unwrap_or(0) | Rights::bit(b'x').unwrap_or(0),
                b'd' => Rights::bit(b'e').unwrap_or(0) | Rights::bit(b't').unwrap_or(0),
                other => Rights::bit(other).ok_or(c)?,
            };
        }
        Ok(Rights(bits))
    }

    /// Whether the set holds `letter`.
    pub(crate) fn has(self, letter: u8) -> bool {
        Rights::bit(letter).is_some_and(|b| self.0 & b != 0)
    }

    pub(crate) fn union(self, other: Rights) -> Rights {
        Rights(self.0 | other.0)
    }

    pub(crate) fn without(self, other: Rights) -> Rights {
        Rights(self.0 & !other.0)
    }

    pub(crate) fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether the mailbox can be opened read-write: some right that
    /// changes it (RFC 4314 section 4: STORE, EXPUNGE and APPEND need them).
    pub(crate) fn writes(self) -> bool {
        [b's', b'w', b't', b'e'].iter().any(|&l| self.has(l))
    }
}

impl std::fmt::Display for Rights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for &l in LETTERS {
            if self.has(l) {
                write!(f, "{}", char::from(l))?;
            }
        }
        Ok(())
    }
}

/// The namespace a principal's mailboxes appear under for others.
pub(crate) fn namespace_of(kind: PrincipalKind) -> &'static str {
    match kind {
        PrincipalKind::Individual => OTHER_USERS,
        _ => SHARED_FOLDERS,
    }
}

/// Where a client's mailbox name points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Place<'a> {
    /// The user's own mailbox of that stored name.
    Own(&'a str),
    /// `path` in the account whose address is `owner`, under `namespace`.
    Foreign {
        namespace: &'static str,
        owner: &'a str,
        path: &'a str,
    },
    /// A namespace root or an owner level: listed, never selectable.
    Virtual,
}

/// Splits a stored-form name into its place.
pub(crate) fn place(name: &str) -> Place<'_> {
    for namespace in [OTHER_USERS, SHARED_FOLDERS] {
        let Some(rest) = name.strip_prefix(namespace) else {
            continue;
        };
        if rest.is_empty() {
            return Place::Virtual;
        }
        let Some(rest) = rest.strip_prefix('/') else {
            continue;
        };
        return match rest.split_once('/') {
            Some((owner, path)) if !owner.is_empty() && !path.is_empty() => Place::Foreign {
                namespace,
                owner,
                path,
            },
            _ => Place::Virtual,
        };
    }
    Place::Own(name)
}

/// Whether `name` is one an owner may not give their own mailbox: it would
/// be taken for a foreign one.
pub(crate) fn reserved(name: &str) -> bool {
    !matches!(place(name), Place::Own(_))
}

/// How a foreign mailbox is named for the user.
pub(crate) fn foreign_name(namespace: &str, owner: &str, path: &str) -> String {
    format!("{namespace}/{owner}/{path}")
}

/// An ACL command (RFC 4314 section 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AclCommand {
    SetAcl {
        mailbox: Vec<u8>,
        identifier: String,
        rights: String,
    },
    DeleteAcl {
        mailbox: Vec<u8>,
        identifier: String,
    },
    GetAcl {
        mailbox: Vec<u8>,
    },
    ListRights {
        mailbox: Vec<u8>,
        identifier: String,
    },
    MyRights {
        mailbox: Vec<u8>,
    },
}

/// Reads an astring (atom or quoted string) at the start of `input`;
/// returns it and the rest.
fn astring(input: &[u8]) -> Result<(Vec<u8>, &[u8]), &'static str> {
    match input.first() {
        Some(b'"') => {
            let mut out = Vec::new();
            let mut i = 1;
            while i < input.len() {
                match input[i] {
                    b'\\' => {
                        let next = *input.get(i + 1).ok_or("unterminated quoted string")?;
                        if next != b'"' && next != b'\\' {
                            return Err("bad escape in quoted string");
                        }
                        out.push(next);
                        i += 2;
                    }
                    b'"' => return Ok((out, &input[i + 1..])),
                    b'\r' | b'\n' | 0 => return Err("bad character in quoted string"),
                    b => {
                        out.push(b);
                        i += 1;
                    }
                }
            }
            Err("unterminated quoted string")
        }
        Some(b'{') => Err("literals are not accepted in ACL commands; use a quoted string"),
        Some(_) => {
            let end = input.iter().position(|&b| b == b' ').unwrap_or(input.len());
            let atom = &input[..end];
            let ok = atom
                .iter()
                .all(|&b| b > 0x20 && b < 0x7f && !b"(){%*\"\\".contains(&b));
            if atom.is_empty() || !ok {
                return Err("bad atom");
            }
            Ok((atom.to_vec(), &input[end..]))
        }
        None => Err("missing argument"),
    }
}

/// Parses `count` space-separated astrings that end the line.
fn arguments(mut input: &[u8], count: usize) -> Result<Vec<Vec<u8>>, &'static str> {
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        input = input.strip_prefix(b" ").ok_or("missing argument")?;
        let (value, rest) = astring(input)?;
        out.push(value);
        input = rest;
    }
    if !input.is_empty() {
        return Err("too many arguments");
    }
    Ok(out)
}

fn text(bytes: Vec<u8>) -> Result<String, &'static str> {
    String::from_utf8(bytes).map_err(|_| "not UTF-8")
}

/// Recognises an ACL command line (`tag VERB args CRLF`). `None` when the
/// line is some other command; `Err((tag, why))` for a malformed one.
pub(crate) fn parse_command(line: &[u8]) -> Option<Result<(String, AclCommand), (String, String)>> {
    let line = line
        .strip_suffix(b"\r\n")
        .or_else(|| line.strip_suffix(b"\n"))
        .unwrap_or(line);
    let space = line.iter().position(|&b| b == b' ')?;
    let (tag, rest) = (&line[..space], &line[space + 1..]);
    let verb_end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
    let verb = rest[..verb_end].to_ascii_uppercase();
    let args = &rest[verb_end..];
    let arity = match verb.as_slice() {
        b"SETACL" => 3,
        b"DELETEACL" | b"LISTRIGHTS" => 2,
        b"GETACL" | b"MYRIGHTS" => 1,
        _ => return None,
    };
    let tag = String::from_utf8_lossy(tag).into_owned();
    let valid_tag = !tag.is_empty()
        && tag.len() <= 64
        && tag
            .bytes()
            .all(|b| b > 0x20 && b < 0x7f && !b"(){%*\"\\+".contains(&b));
    if !valid_tag {
        return None;
    }
    let parsed = (|| -> Result<AclCommand, &'static str> {
        let mut a = arguments(args, arity)?.into_iter();
        let mut next = || a.next().ok_or("missing argument");
        Ok(match verb.as_slice() {
            b"SETACL" => AclCommand::SetAcl {
                mailbox: next()?,
                identifier: text(next()?)?,
                rights: text(next()?)?,
            },
            b"DELETEACL" => AclCommand::DeleteAcl {
                mailbox: next()?,
                identifier: text(next()?)?,
            },
            b"LISTRIGHTS" => AclCommand::ListRights {
                mailbox: next()?,
                identifier: text(next()?)?,
            },
            b"GETACL" => AclCommand::GetAcl { mailbox: next()? },
            _ => AclCommand::MyRights { mailbox: next()? },
        })
    })();
    Some(match parsed {
        Ok(command) => Ok((tag, command)),
        Err(why) => Err((tag, format!("Syntax error: {why}"))),
    })
}

/// A rights modification of SETACL: `+` adds, `-` removes, else replaces
/// (RFC 4314 section 3.1).
pub(crate) fn apply_modification(current: Rights, spec: &str) -> Result<Rights, char> {
    if let Some(add) = spec.strip_prefix('+') {
        Ok(current.union(Rights::parse(add)?))
    } else if let Some(remove) = spec.strip_prefix('-') {
        Ok(current.without(Rights::parse(remove)?))
    } else {
        Rights::parse(spec)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rights_round_trip() {
        assert_eq!(Rights::all().to_string(), "lrswipkxtea");
        assert_eq!(Rights::full_access().to_string(), "lrswipkxte");
        assert_eq!(Rights::parse("rl").unwrap().to_string(), "lr");
        assert_eq!(Rights::parse("cd").unwrap().to_string(), "kxte");
        assert_eq!(Rights::parse("lz"), Err('z'));
        assert!(Rights::parse("").unwrap().is_empty());
        assert!(!Rights::parse("lr").unwrap().writes());
        assert!(Rights::parse("lrs").unwrap().writes());
        let lr = Rights::parse("lr").unwrap();
        assert_eq!(apply_modification(lr, "+wi").unwrap().to_string(), "lrwi");
        assert_eq!(apply_modification(lr, "-r").unwrap().to_string(), "l");
        assert_eq!(apply_modification(lr, "ie").unwrap().to_string(), "ie");
    }

    #[test]
    fn places() {
        assert_eq!(place("INBOX"), Place::Own("INBOX"));
        assert_eq!(place("Other Users"), Place::Virtual);
        assert_eq!(place("Other Users/bob@example.com"), Place::Virtual);
        assert_eq!(
            place("Other Users/bob@example.com/INBOX/Sub"),
            Place::Foreign {
                namespace: OTHER_USERS,
                owner: "bob@example.com",
                path: "INBOX/Sub"
            }
        );
        assert_eq!(
            place("Shared Folders/support@example.com/INBOX"),
            Place::Foreign {
                namespace: SHARED_FOLDERS,
                owner: "support@example.com",
                path: "INBOX"
            }
        );
        assert_eq!(place("Other Usersx"), Place::Own("Other Usersx"));
        assert!(reserved("Other Users/x"));
        assert!(!reserved("Others"));
    }

    #[test]
    fn acl_commands_parse() {
        let (tag, cmd) = parse_command(b"a1 SETACL INBOX bob@example.com +lr\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(tag, "a1");
        assert_eq!(
            cmd,
            AclCommand::SetAcl {
                mailbox: b"INBOX".to_vec(),
                identifier: "bob@example.com".into(),
                rights: "+lr".into()
            }
        );
        let (_, cmd) = parse_command(b"b getacl \"My \\\"Box\\\"\"\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            cmd,
            AclCommand::GetAcl {
                mailbox: b"My \"Box\"".to_vec()
            }
        );
        assert!(parse_command(b"c FETCH 1 FLAGS\r\n").is_none());
        assert!(parse_command(b"d MYRIGHTS\r\n").unwrap().is_err());
        assert!(parse_command(b"e MYRIGHTS a b\r\n").unwrap().is_err());
        assert!(
            parse_command(b"f MYRIGHTS {5}\r\nINBOX\r\n")
                .unwrap()
                .is_err()
        );
        assert!(
            parse_command(b"g LISTRIGHTS INBOX \"unterminated\r\n")
                .unwrap()
                .is_err()
        );
    }
}
