//! SEARCH criteria evaluated against one message (RFC 9051 section
//! 6.4.4). Sans-I/O: the caller loads the cached header facts or the
//! message bytes when [`needs`] says the criteria use them.

use bulwark_store::EmailMeta;
use imap_codec::imap_types::datetime::NaiveDate;
use imap_codec::imap_types::search::SearchKey;
use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};
use mail_parser::MessageParser;

use crate::flags;
use crate::listing::Entry;
use crate::mime;
use crate::out;

/// What evaluating the criteria needs besides the mailbox listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Need {
    /// Flags, UIDs, sizes and dates only.
    Listing,
    /// The cached header facts (subject, from, to, sent date).
    Meta,
    /// The message bytes.
    Raw,
}

/// The most any key in the tree needs.
pub(crate) fn needs(key: &SearchKey<'_>) -> Need {
    match key {
        SearchKey::And(keys) => keys
            .as_ref()
            .iter()
            .map(needs)
            .max()
            .unwrap_or(Need::Listing),
        SearchKey::Not(k) => needs(k),
        SearchKey::Or(a, b) => needs(a).max(needs(b)),
        SearchKey::Header(name, value) if is_subject_search(name.as_ref(), value.as_ref()) => {
            Need::Meta
        }
        SearchKey::Subject(_)
        | SearchKey::From(_)
        | SearchKey::To(_)
        | SearchKey::SentBefore(_)
        | SearchKey::SentOn(_)
        | SearchKey::SentSince(_) => Need::Meta,
        SearchKey::Bcc(_)
        | SearchKey::Cc(_)
        | SearchKey::Header(..)
        | SearchKey::Body(_)
        | SearchKey::Text(_) => Need::Raw,
        _ => Need::Listing,
    }
}

/// One message as SEARCH sees it.
pub(crate) struct Candidate<'a> {
    /// Its sequence number.
    pub msn: u32,
    /// Its listing entry.
    pub entry: &'a Entry,
    /// Cached header facts, when loaded.
    pub meta: Option<&'a EmailMeta>,
    /// Message bytes, when loaded.
    pub raw: Option<&'a [u8]>,
    /// What has been looked up: keys needing more are undecided. With
    /// [`Need::Raw`] everything is known (a missing record or message then
    /// reads as empty).
    pub loaded: Need,
}

/// The mailbox-wide facts `*` refers to.
pub(crate) struct Scope {
    /// EXISTS.
    pub exists: u32,
    /// The highest UID.
    pub last_uid: u32,
}

pub(crate) fn in_set(set: &SequenceSet, value: u32, star: u32) -> bool {
    set.0.as_ref().iter().any(|s| {
        let v = |x: &SeqOrUid| match x {
            SeqOrUid::Value(n) => n.get(),
            SeqOrUid::Asterisk => star,
        };
        match s {
            Sequence::Single(x) => v(x) == value,
            Sequence::Range(a, b) => {
                let (lo, hi) = if v(a) <= v(b) {
                    (v(a), v(b))
                } else {
                    (v(b), v(a))
                };
                (lo..=hi).contains(&value)
            }
        }
    })
}

/// Days since the epoch of a search date (dates ignore time and zone,
/// RFC 9051 section 6.4.4).
fn date_days(date: &NaiveDate) -> i64 {
    let text = date.as_ref().to_string();
    let mut parts = text.split('-').map(|p| p.parse::<i64>().unwrap_or(0));
    let (y, m, d) = (
        parts.next().unwrap_or(1970),
        parts.next().unwrap_or(1),
        parts.next().unwrap_or(1),
    );
    out::days_from_civil(
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

fn ms_days(ms: i64) -> i64 {
    ms.div_euclid(86_400_000)
}

fn contains(haystack: &str, needle: &[u8]) -> bool {
    let needle = String::from_utf8_lossy(needle).to_lowercase();
    haystack.to_lowercase().contains(&needle)
}

fn header_text(raw: &[u8], name: &str) -> String {
    let end = mime::header_end(raw, 0, raw.len());
    let block = &raw[..end];
    let mut text = String::new();
    for (n, value, _) in mime::fields(block) {
        if n.eq_ignore_ascii_case(name) {
            text.push_str(&value);
            text.push('\n');
        }
    }
    // Decoded forms too, so encoded words match what people typed.
    if let Some(parsed) = MessageParser::default().parse_headers(block) {
        for header in parsed.headers() {
            if header.name().eq_ignore_ascii_case(name) {
                if let Some(t) = header.value().as_text() {
                    text.push_str(t);
                    text.push('\n');
                }
                if let Some(a) = header.value().as_address() {
                    for addr in a.iter() {
                        text.push_str(addr.name().unwrap_or_default());
                        text.push(' ');
                        text.push_str(addr.address().unwrap_or_default());
                        text.push('\n');
                    }
                }
            }
        }
    }
    text
}

fn body_text(raw: &[u8]) -> String {
    let mut text = String::new();
    if let Some(message) = MessageParser::default().parse(raw) {
        for i in 0..message.text_body_count() {
            if let Some(t) = message.body_text(i) {
                text.push_str(&t);
                text.push('\n');
            }
        }
    }
    if text.is_empty() {
        let end = mime::header_end(raw, 0, raw.len());
        text = String::from_utf8_lossy(&raw[end..]).into_owned();
    }
    text
}

/// `HEADER SUBJECT text` asks what `SUBJECT text` asks (RFC 9051 section
/// 6.4.4), so it is answered from the cached, decoded subject instead of
/// the message bytes. An empty text asks whether the field exists at all,
/// which only the bytes tell.
fn is_subject_search(name: &[u8], value: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"subject") && !value.is_empty()
}

/// Whether the message matches `key`, with everything loaded.
pub(crate) fn matches(key: &SearchKey<'_>, c: &Candidate<'_>, scope: &Scope) -> bool {
    decide(key, c, scope).unwrap_or(false)
}

/// Whether the message matches `key` as far as what is loaded tells:
/// `None` while a key that needs more than [`Candidate::loaded`] could
/// still change the answer. Lets a search look up header facts or bytes
/// only for the messages the cheap keys (sequence sets, flags, sizes,
/// dates) leave in.
pub(crate) fn decide(key: &SearchKey<'_>, c: &Candidate<'_>, scope: &Scope) -> Option<bool> {
    match key {
        SearchKey::And(keys) => {
            let mut all = Some(true);
            for k in keys.as_ref() {
                match decide(k, c, scope) {
                    Some(false) => return Some(false),
                    Some(true) => {}
                    None => all = None,
                }
            }
            all
        }
        SearchKey::Or(a, b) => match (decide(a, c, scope), decide(b, c, scope)) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
        SearchKey::Not(k) => decide(k, c, scope).map(|m| !m),
        leaf if needs(leaf) > c.loaded => None,
        leaf => Some(leaf_matches(leaf, c, scope)),
    }
}

/// A key that is not a combination of others, with what it needs loaded.
fn leaf_matches(key: &SearchKey<'_>, c: &Candidate<'_>, scope: &Scope) -> bool {
    let has = |k: &str| c.entry.keywords.iter().any(|x| x == k);
    let meta_text = |field: fn(&EmailMeta) -> Option<&String>| {
        c.meta.and_then(field).cloned().unwrap_or_default()
    };
    let raw = c.raw.unwrap_or_default();
    match key {
        SearchKey::All => true,
        SearchKey::And(_) | SearchKey::Or(..) | SearchKey::Not(_) => {
            decide(key, c, scope).unwrap_or(false)
        }
        SearchKey::SequenceSet(set) => in_set(set, c.msn, scope.exists),
        SearchKey::Uid(set) => in_set(set, c.entry.uid, scope.last_uid),
        SearchKey::Answered => has(flags::ANSWERED),
        SearchKey::Unanswered => !has(flags::ANSWERED),
        SearchKey::Deleted => has(flags::DELETED),
        SearchKey::Undeleted => !has(flags::DELETED),
        SearchKey::Draft => has(flags::DRAFT),
        SearchKey::Undraft => !has(flags::DRAFT),
        SearchKey::Flagged => has(flags::FLAGGED),
        SearchKey::Unflagged => !has(flags::FLAGGED),
        SearchKey::Seen | SearchKey::Old => has(flags::SEEN),
        SearchKey::Unseen => !has(flags::SEEN),
        // No message is \Recent (IMAP4rev2 removed it).
        SearchKey::Recent => false,
        SearchKey::New => false,
        SearchKey::Keyword(k) => has(&k.inner().to_ascii_lowercase()),
        SearchKey::Unkeyword(k) => !has(&k.inner().to_ascii_lowercase()),
        SearchKey::Larger(n) => c.entry.size > u64::from(*n),
        SearchKey::Smaller(n) => c.entry.size < u64::from(*n),
        SearchKey::Before(d) => ms_days(c.entry.received_at) < date_days(d),
        SearchKey::On(d) => ms_days(c.entry.received_at) == date_days(d),
        SearchKey::Since(d) => ms_days(c.entry.received_at) >= date_days(d),
        SearchKey::SentBefore(d) => c
            .meta
            .and_then(|m| m.sent_at)
            .is_some_and(|t| ms_days(t) < date_days(d)),
        SearchKey::SentOn(d) => c
            .meta
            .and_then(|m| m.sent_at)
            .is_some_and(|t| ms_days(t) == date_days(d)),
        SearchKey::SentSince(d) => c
            .meta
            .and_then(|m| m.sent_at)
            .is_some_and(|t| ms_days(t) >= date_days(d)),
        SearchKey::Subject(s) => contains(&meta_text(|m| m.subject.as_ref()), s.as_ref()),
        SearchKey::From(s) => contains(&meta_text(|m| m.from.as_ref()), s.as_ref()),
        SearchKey::To(s) => contains(&meta_text(|m| m.to.as_ref()), s.as_ref()),
        SearchKey::Cc(s) => contains(&header_text(raw, "Cc"), s.as_ref()),
        SearchKey::Bcc(s) => contains(&header_text(raw, "Bcc"), s.as_ref()),
        SearchKey::Header(name, value) if is_subject_search(name.as_ref(), value.as_ref()) => {
            contains(&meta_text(|m| m.subject.as_ref()), value.as_ref())
        }
        SearchKey::Header(name, value) => {
            let name = String::from_utf8_lossy(name.as_ref()).into_owned();
            let fields = mime::fields(&raw[..mime::header_end(raw, 0, raw.len())]);
            let present = fields.iter().any(|(n, _, _)| n.eq_ignore_ascii_case(&name));
            present && contains(&header_text(raw, &name), value.as_ref())
        }
        SearchKey::Body(s) => contains(&body_text(raw), s.as_ref()),
        SearchKey::Text(s) => {
            let end = mime::header_end(raw, 0, raw.len());
            contains(&String::from_utf8_lossy(&raw[..end]), s.as_ref())
                || contains(&body_text(raw), s.as_ref())
        }
        // RFC 7162 section 3.1.5: entry names are accepted; every
        // metadata item shares the message's one mod-sequence.
        SearchKey::ModSequence { modseq, .. } => c.entry.modseq.0 >= *modseq,
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

/// Whether the criteria use MODSEQ, so the answer carries the highest
/// mod-sequence of the hits (RFC 7162 section 3.1.5).
pub(crate) fn uses_modseq(key: &SearchKey<'_>) -> bool {
    match key {
        SearchKey::ModSequence { .. } => true,
        SearchKey::And(keys) => keys.as_ref().iter().any(uses_modseq),
        SearchKey::Not(k) => uses_modseq(k),
        SearchKey::Or(a, b) => uses_modseq(a) || uses_modseq(b),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_core::{BlobId, EmailId, ModSeq};
    use imap_codec::CommandCodec;
    use imap_codec::decode::Decoder;
    use imap_codec::imap_types::command::CommandBody;

    fn criteria(text: &str) -> SearchKey<'static> {
        let line = format!("a SEARCH {text}\r\n");
        let (_, cmd) = CommandCodec::default()
            .decode(line.as_bytes())
            .expect("parses");
        let CommandBody::Search { criteria, .. } = cmd.body else {
            panic!("not a search")
        };
        let keys: Vec<SearchKey<'_>> = criteria.into_iter().collect();
        imap_codec::imap_types::IntoStatic::into_static(SearchKey::And(
            keys.try_into().expect("non-empty"),
        ))
    }

    #[test]
    fn flags_sets_and_text() {
        let entry = Entry {
            uid: 10,
            email: EmailId(1),
            modseq: ModSeq(1),
            keywords: vec!["$flagged".to_string()].into(),
            size: 100,
            received_at: 1_751_364_000_000,
            blob: BlobId([0; 32]),
        };
        let meta = EmailMeta {
            subject: Some("Quarterly Report".into()),
            from: Some("Alice <alice@example.com>".into()),
            ..EmailMeta::default()
        };
        let raw = b"Cc: carol@example.com\r\n\r\nThe body text\r\n";
        let c = Candidate {
            msn: 2,
            entry: &entry,
            meta: Some(&meta),
            raw: Some(raw),
            loaded: Need::Raw,
        };
        let scope = Scope {
            exists: 3,
            last_uid: 12,
        };
        let yes = |q: &str| matches(&criteria(q), &c, &scope);
        assert!(yes("ALL"));
        assert!(yes("FLAGGED UNSEEN"));
        assert!(!yes("SEEN"));
        assert!(yes("2"));
        assert!(yes("2:*"));
        assert!(!yes("3:*"));
        assert!(yes("UID 10"));
        assert!(!yes("UID 11:*"));
        assert!(yes("SUBJECT report"));
        assert!(yes("FROM ALICE"));
        assert!(!yes("FROM bob"));
        assert!(yes("OR SEEN FLAGGED"));
        assert!(yes("NOT DELETED"));
        assert!(yes("CC carol"));
        assert!(yes("BODY \"body text\""));
        assert!(yes("HEADER CC example"));
        assert!(yes("HEADER SUBJECT quarterly"));
        assert!(!yes("HEADER SUBJECT annual"));
        assert_eq!(needs(&criteria("HEADER SUBJECT x")), Need::Meta);
        assert_eq!(needs(&criteria("HEADER SUBJECT \"\"")), Need::Raw);
        assert!(!yes("HEADER X-Missing \"\""));
        assert!(yes("LARGER 99 SMALLER 101"));
        assert!(yes("ON 1-Jul-2025"));
        assert!(yes("SINCE 30-Jun-2025 BEFORE 2-Jul-2025"));
        // With only the listing, flag and sequence keys decide alone.
        let listing_only = Candidate {
            meta: None,
            raw: None,
            loaded: Need::Listing,
            ..c
        };
        let partly = |q: &str| decide(&criteria(q), &listing_only, &scope);
        assert_eq!(partly("SEEN SUBJECT report"), Some(false));
        assert_eq!(partly("FLAGGED SUBJECT report"), None);
        assert_eq!(partly("OR FLAGGED BODY x"), Some(true));
        assert_eq!(partly("NOT BODY x"), None);
        assert_eq!(partly("3:* BODY x"), Some(false));
        assert_eq!(needs(&criteria("SUBJECT x")), Need::Meta);
        assert_eq!(needs(&criteria("OR SEEN BODY x")), Need::Raw);
        assert_eq!(needs(&criteria("1:* SEEN")), Need::Listing);
    }

    #[test]
    fn modseq_criterion() {
        // RFC 7162 section 3.1.5: MODSEQ matches entries at or above it.
        let entry = Entry {
            uid: 4,
            email: EmailId(1),
            modseq: ModSeq(620162338),
            keywords: Vec::new().into(),
            size: 10,
            received_at: 0,
            blob: BlobId([0; 32]),
        };
        let c = Candidate {
            msn: 1,
            entry: &entry,
            meta: None,
            raw: None,
            loaded: Need::Raw,
        };
        let scope = Scope {
            exists: 1,
            last_uid: 4,
        };
        let yes = |q: &str| matches(&criteria(q), &c, &scope);
        assert!(yes("MODSEQ 620162338"));
        assert!(yes("MODSEQ \"/flags/\\\\draft\" all 620162000"));
        assert!(!yes("MODSEQ 620162339"));
        assert!(yes("OR NOT MODSEQ 720162338 LARGER 50000"));
        assert!(uses_modseq(&criteria("OR NOT MODSEQ 7 LARGER 5")));
        assert!(!uses_modseq(&criteria("LARGER 5")));
    }
}
