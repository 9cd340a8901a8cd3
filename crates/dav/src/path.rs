//! Request paths as typed resource references.
//!
//! Every DAV path is parsed here into a [`Resource`]; anything that does not
//! parse is 404. Segments are percent-decoded one at a time, so an encoded
//! slash cannot split a segment and `.`/`..` (plain or encoded) are refused
//! rather than resolved: nothing here walks a tree.

use bulwark_store::DavKind;

/// Where DAV lives.
pub const DAV_ROOT: &str = "/dav/";
/// Longest path accepted, bytes.
const MAX_PATH: usize = 1024;
/// Longest segment after decoding.
const MAX_SEGMENT: usize = 255;

/// A DAV resource named by a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// `/dav/`: where clients start discovery.
    Root,
    /// `/dav/principals/`: the principal collection.
    Principals,
    /// `/dav/principals/{owner}/`.
    Principal(String),
    /// `/dav/calendars/{owner}/` or `/dav/addressbooks/{owner}/`.
    Home(DavKind, String),
    /// A calendar or address book.
    Collection(DavKind, String, String),
    /// An event, task or card.
    Object(DavKind, String, String, String),
}

impl Resource {
    /// The resource `path` names (the path only, no query), if any.
    pub fn parse(path: &str) -> Option<Resource> {
        if path.len() > MAX_PATH {
            return None;
        }
        let rest = path.strip_prefix(DAV_ROOT).or_else(|| {
            // `/dav` alone is the root too, and so is `/` for discovery.
            (path == "/dav" || path == "/").then_some("")
        })?;
        let trailing_slash = rest.is_empty() || rest.ends_with('/');
        let trimmed = rest.strip_suffix('/').unwrap_or(rest);
        let segments: Vec<String> = if trimmed.is_empty() {
            Vec::new()
        } else {
            trimmed
                .split('/')
                .map(decode_segment)
                .collect::<Option<Vec<_>>>()?
        };
        let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
        let home_kind = |s: &str| match s {
            "calendars" => Some(DavKind::Calendar),
            "addressbooks" => Some(DavKind::AddressBook),
            _ => None,
        };
        let owner = |s: &str| s.to_ascii_lowercase();
        Some(match segs.as_slice() {
            [] => Resource::Root,
            ["principals"] => Resource::Principals,
            ["principals", who] if is_address(who) => Resource::Principal(owner(who)),
            [home, who] if is_address(who) => Resource::Home(home_kind(home)?, owner(who)),
            [home, who, coll] if is_address(who) => {
                Resource::Collection(home_kind(home)?, owner(who), coll.to_string())
            }
            [home, who, coll, object] if is_address(who) && !trailing_slash => Resource::Object(
                home_kind(home)?,
                owner(who),
                coll.to_string(),
                object.to_string(),
            ),
            _ => return None,
        })
    }

    /// The canonical path of this resource (collections end in `/`).
    pub fn href(&self) -> String {
        match self {
            Resource::Root => DAV_ROOT.to_string(),
            Resource::Principals => format!("{DAV_ROOT}principals/"),
            Resource::Principal(who) => format!("{DAV_ROOT}principals/{}/", encode(who)),
            Resource::Home(kind, who) => {
                format!("{DAV_ROOT}{}/{}/", home_segment(*kind), encode(who))
            }
            Resource::Collection(kind, who, coll) => format!(
                "{DAV_ROOT}{}/{}/{}/",
                home_segment(*kind),
                encode(who),
                encode(coll)
            ),
            Resource::Object(kind, who, coll, object) => format!(
                "{DAV_ROOT}{}/{}/{}/{}",
                home_segment(*kind),
                encode(who),
                encode(coll),
                encode(object)
            ),
        }
    }

    /// The owner named in the path, if any.
    pub fn owner(&self) -> Option<&str> {
        match self {
            Resource::Root | Resource::Principals => None,
            Resource::Principal(who)
            | Resource::Home(_, who)
            | Resource::Collection(_, who, _)
            | Resource::Object(_, who, _, _) => Some(who),
        }
    }
}

fn home_segment(kind: DavKind) -> &'static str {
    match kind {
        DavKind::Calendar => "calendars",
        DavKind::AddressBook => "addressbooks",
    }
}

/// An owner segment looks like an address; the directory decides the rest.
fn is_address(s: &str) -> bool {
    s.len() <= 254
        && s.split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.'))
}

/// Percent-decodes one segment; `None` for bad escapes, non-UTF-8, empty
/// or dot segments, slashes or control characters.
fn decode_segment(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let text = String::from_utf8(out).ok()?;
    let bad = text.is_empty()
        || text.len() > MAX_SEGMENT
        || text == "."
        || text == ".."
        || text
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control());
    (!bad).then_some(text)
}

/// Percent-encodes a segment for an href.
pub fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        let keep = b.is_ascii_alphanumeric() || b"-._~@+=,;:!$&'()*".contains(&b);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The path part of an href a client sent in a body (absolute URL or path).
pub fn href_path(href: &str) -> &str {
    let href = href.trim();
    if let Some(rest) = href
        .strip_prefix("https://")
        .or_else(|| href.strip_prefix("http://"))
    {
        return rest.find('/').map_or("/", |i| &rest[i..]);
    }
    href
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_paths() {
        let cal =
            |c: &str| Resource::Collection(DavKind::Calendar, "alice@example.com".into(), c.into());
        assert_eq!(Resource::parse("/dav/"), Some(Resource::Root));
        assert_eq!(Resource::parse("/dav"), Some(Resource::Root));
        assert_eq!(
            Resource::parse("/dav/principals/Alice@Example.com/"),
            Some(Resource::Principal("alice@example.com".into()))
        );
        assert_eq!(
            Resource::parse("/dav/calendars/alice@example.com/work/"),
            Some(cal("work"))
        );
        assert_eq!(
            Resource::parse("/dav/calendars/alice%40example.com/work"),
            Some(cal("work"))
        );
        assert_eq!(
            Resource::parse("/dav/addressbooks/alice@example.com/default/x%20y.vcf"),
            Some(Resource::Object(
                DavKind::AddressBook,
                "alice@example.com".into(),
                "default".into(),
                "x y.vcf".into()
            ))
        );
        assert_eq!(Resource::parse("/"), Some(Resource::Root));
        for bad in [
            "//",
            "/dav/calendars/",
            "/dav/calendars/alice@example.com/../bob@example.com/",
            "/dav/calendars/alice@example.com/%2e%2e/x.ics",
            "/dav/calendars/alice@example.com/a%2Fb/x.ics",
            "/dav/calendars//alice@example.com/",
            "/dav/calendars/alice@example.com//x.ics",
            "/dav/calendars/alice@example.com/work/x.ics/",
            "/dav/calendars/alice@example.com/work/x/y.ics",
            "/dav/mail/alice@example.com/",
            "/dav/calendars/nobody/",
            "/dav/calendars/alice@example.com/%zz/",
            "/dav/calendars/alice@example.com/%00/",
            "/dav/calendars/alice@example.com/.//",
            "/dav/../etc/passwd",
            "/dav/calendars/alice@example.com/a%5Cb/",
        ] {
            assert_eq!(Resource::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn hrefs_round_trip() {
        for r in [
            Resource::Root,
            Resource::Principal("a@example.com".into()),
            Resource::Home(DavKind::Calendar, "a@example.com".into()),
            Resource::Collection(
                DavKind::AddressBook,
                "a@example.com".into(),
                "My book".into(),
            ),
            Resource::Object(
                DavKind::Calendar,
                "a@example.com".into(),
                "w".into(),
                "é?#.ics".into(),
            ),
        ] {
            assert_eq!(Resource::parse(&r.href()), Some(r.clone()), "{}", r.href());
        }
        assert_eq!(href_path("https://h:8443/dav/x"), "/dav/x");
        assert_eq!(href_path("/dav/x"), "/dav/x");
    }
}
