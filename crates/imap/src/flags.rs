//! IMAP flags and the store's keywords. Sans-I/O.
//!
//! The store keeps JMAP keywords, lower-case (RFC 8621 section 4.1.1); it
//! refuses backslashes, so the IMAP system flags (RFC 9051 section 2.3.2)
//! map to `$`-keywords. Other keywords pass through; IMAP keywords are
//! case-insensitive, so lower-casing them loses nothing.

use imap_codec::imap_types::flag::Flag;

/// `(system flag, keyword)` pairs.
const SYSTEM: [(&str, &str); 5] = [
    ("\\Seen", "$seen"),
    ("\\Answered", "$answered"),
    ("\\Flagged", "$flagged"),
    ("\\Deleted", "$deleted"),
    ("\\Draft", "$draft"),
];

/// Registered keywords in their canonical IMAP spelling (RFC 9051
/// section 2.3.2, IANA IMAP keyword registry of RFC 5788). The store keeps
/// them lower-cased; IMAP keywords are case-insensitive, but clients
/// compare these byte for byte (mbsync 1.4 maps only `$Forwarded` to the
/// Maildir `P` flag, and would drop a `$forwarded` as a removal).
const WELL_KNOWN: [&str; 8] = [
    "$Forwarded",
    "$MDNSent",
    "$Junk",
    "$NotJunk",
    "$Phishing",
    "$Important",
    "$SubmitPending",
    "$Submitted",
];

/// Keyword of `\Seen`.
pub(crate) const SEEN: &str = "$seen";
/// Keyword of `\Deleted`.
pub(crate) const DELETED: &str = "$deleted";
/// Keyword of `\Flagged`.
pub(crate) const FLAGGED: &str = "$flagged";
/// Keyword of `\Answered`.
pub(crate) const ANSWERED: &str = "$answered";
/// Keyword of `\Draft`.
pub(crate) const DRAFT: &str = "$draft";

/// The flags every mailbox announces in FLAGS and PERMANENTFLAGS.
pub(crate) const SYSTEM_FLAGS: &str = "\\Answered \\Flagged \\Deleted \\Seen \\Draft";

/// The store keyword for an IMAP flag; `None` for flags that cannot be
/// stored (unknown system flags such as `\Recent` or `\Foo`).
pub(crate) fn to_keyword(flag: &Flag<'_>) -> Option<String> {
    Some(match flag {
        Flag::Seen => SEEN.into(),
        Flag::Answered => ANSWERED.into(),
        Flag::Flagged => FLAGGED.into(),
        Flag::Deleted => DELETED.into(),
        Flag::Draft => DRAFT.into(),
        Flag::Keyword(atom) => atom.inner().to_ascii_lowercase(),
        Flag::Extension(_) => return None,
    })
}

/// The IMAP form of a stored keyword: system flags with a backslash,
/// registered keywords in their canonical case, others as stored.
pub(crate) fn to_imap(keyword: &str) -> &str {
    if let Some((flag, _)) = SYSTEM.iter().find(|(_, k)| *k == keyword) {
        return flag;
    }
    WELL_KNOWN
        .iter()
        .find(|k| k.eq_ignore_ascii_case(keyword))
        .map_or(keyword, |k| k)
}

/// `(\Seen $Forwarded)`: a parenthesised flag list for FETCH and FLAGS.
pub(crate) fn flag_list(keywords: &[String]) -> String {
    let mut out = Vec::new();
    write_flag_list(&mut out, keywords);
    String::from_utf8_lossy(&out).into_owned()
}

/// [`flag_list`], appended to a response being built.
pub(crate) fn write_flag_list(out: &mut Vec<u8>, keywords: &[String]) {
    out.push(b'(');
    for (i, k) in keywords.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(to_imap(k).as_bytes());
    }
    out.push(b')');
}

/// Whether a keyword is one of the mapped system flags.
pub(crate) fn is_system(keyword: &str) -> bool {
    SYSTEM.iter().any(|(_, k)| *k == keyword)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        assert_eq!(to_keyword(&Flag::Seen).as_deref(), Some("$seen"));
        assert_eq!(to_imap("$seen"), "\\Seen");
        assert_eq!(to_imap("$forwarded"), "$Forwarded");
        assert_eq!(to_imap("work"), "work");
        let kw = Flag::try_from("$Forwarded").expect("keyword");
        assert_eq!(to_keyword(&kw).as_deref(), Some("$forwarded"));
        let ext = Flag::try_from("\\Recent").expect("extension");
        assert_eq!(to_keyword(&ext), None);
        assert_eq!(
            flag_list(&["$deleted".into(), "work".into()]),
            "(\\Deleted work)"
        );
    }

    /// Registered keywords go out in their registered spelling, so a
    /// client comparing case-sensitively sees back what it stored
    /// (found with mbsync 1.4, which dropped its `P` flag on the next sync).
    #[test]
    fn registered_keywords_keep_their_canonical_case() {
        let stored = to_keyword(&Flag::try_from("$Forwarded").expect("keyword")).expect("stored");
        assert_eq!(stored, "$forwarded");
        assert_eq!(to_imap(&stored), "$Forwarded");
        assert_eq!(
            flag_list(&[
                "$seen".into(),
                stored,
                "$mdnsent".into(),
                "$junk".into(),
                "$notjunk".into()
            ]),
            "(\\Seen $Forwarded $MDNSent $Junk $NotJunk)"
        );
    }
}
