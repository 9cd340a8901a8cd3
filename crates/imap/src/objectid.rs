//! OBJECTID (RFC 8474): the ids this server gives mailboxes, emails and
//! threads, and the pre-parse that lets imap-codec handle commands naming
//! the new data items. Sans-I/O.
//!
//! Ids are the store's row ids with a letter in front (`M12`, `E345`,
//! `T67`): stable for the life of the object, unique within the account
//! (row ids are unique in the whole store), and within RFC 8474 section
//! 3.1's `objectid` syntax (1 to 255 of `A-Za-z0-9_-`).
//!
//! imap-codec 2.0.0-alpha.10 does not parse EMAILID and THREADID among
//! FETCH items (RFC 8474 section 5.1) nor MAILBOXID among STATUS items
//! (section 4.2), and rejects the whole command. [`take_items`] runs on the
//! framed command before imap-codec sees it: it removes those atoms from
//! the item list and reports them in [`Extras`], so the executor adds them
//! to its answer. The scan is one pass over the command's bytes that skips
//! quoted strings, literals and `[...]` sections, so an atom inside a
//! header name or a literal is never taken for an item. When the list
//! holds nothing else, a placeholder item (UID for FETCH, MESSAGES for
//! STATUS) keeps it valid and [`Extras::placeholder`] tells the executor
//! to leave it out of the answer.

/// Data items removed before parsing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Extras {
    /// FETCH EMAILID.
    pub email_id: bool,
    /// FETCH THREADID.
    pub thread_id: bool,
    /// STATUS MAILBOXID.
    pub mailbox_id: bool,
    /// The list held only removed items; its placeholder is not wanted.
    pub placeholder: bool,
}

/// `M` + the mailbox's row id (RFC 8474 section 4).
pub(crate) fn mailbox_id(id: i64) -> String {
    format!("M{id}")
}

/// `E` + the email's row id (RFC 8474 section 5.1).
pub(crate) fn email_id(id: i64) -> String {
    format!("E{id}")
}

/// `T` + the thread's row id (RFC 8474 section 5.2).
pub(crate) fn thread_id(id: i64) -> String {
    format!("T{id}")
}

fn find_ci(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// The command's words up to `want` of them, with the offset where the
/// rest starts (words are separated by one space).
fn words(bytes: &[u8], want: usize) -> Option<(Vec<&[u8]>, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while out.len() < want {
        let len = bytes[at..]
            .iter()
            .position(|&b| b == b' ' || b == b'\r' || b == b'\n')?;
        out.push(&bytes[at..at + len]);
        at += len;
        if bytes.get(at) != Some(&b' ') {
            return None;
        }
        at += 1;
    }
    Some((out, at))
}

/// If `bytes` starts a literal announcement (`{n}\r\n`, `{n+}\r\n`,
/// `~{n}\r\n`), the offset after the literal's data.
fn skip_literal(bytes: &[u8], at: usize) -> Option<usize> {
    let start = if bytes.get(at) == Some(&b'~') {
        at + 1
    } else {
        at
    };
    if bytes.get(start) != Some(&b'{') {
        return None;
    }
    let close = start + bytes[start..].iter().position(|&b| b == b'}')?;
    let digits = std::str::from_utf8(&bytes[start + 1..close]).ok()?;
    let n: usize = digits.trim_end_matches('+').parse().ok()?;
    let mut after = close + 1;
    if bytes.get(after) == Some(&b'\r') {
        after += 1;
    }
    if bytes.get(after) != Some(&b'\n') {
        return None;
    }
    Some((after + 1).saturating_add(n).min(bytes.len()))
}

/// The top-level items of the parenthesised list starting at `open`, as
/// byte ranges, and the offset of its closing parenthesis.
fn list_items(bytes: &[u8], open: usize) -> Option<(Vec<(usize, usize)>, usize)> {
    let mut items = Vec::new();
    let mut depth = 0usize;
    let mut brackets = 0usize;
    let mut item_start: Option<usize> = None;
    let mut i = open;
    while i < bytes.len() {
        let b = bytes[i];
        if let Some(after) = skip_literal(bytes, i) {
            item_start.get_or_insert(i);
            i = after;
            continue;
        }
        match b {
            b'"' => {
                item_start.get_or_insert(i);
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'[' => {
                item_start.get_or_insert(i);
                brackets += 1;
            }
            b']' => brackets = brackets.saturating_sub(1),
            b'(' => {
                if depth > 0 && brackets == 0 {
                    item_start.get_or_insert(i);
                }
                depth += 1;
            }
            b')' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    if let Some(s) = item_start.take() {
                        items.push((s, i));
                    }
                    return Some((items, i));
                }
            }
            b' ' if depth == 1 && brackets == 0 => {
                if let Some(s) = item_start.take() {
                    items.push((s, i));
                }
            }
            b'\r' | b'\n' if depth > 0 && brackets == 0 && item_start.is_none() => return None,
            _ => {
                item_start.get_or_insert(i);
            }
        }
        i += 1;
    }
    None
}

/// Removes OBJECTID items imap-codec cannot parse from a FETCH or STATUS
/// command; `None` when there is nothing to remove (the command goes to
/// imap-codec unchanged).
pub(crate) fn take_items(bytes: &[u8]) -> Option<(Vec<u8>, Extras)> {
    if !(find_ci(bytes, b"EMAILID") || find_ci(bytes, b"THREADID") || find_ci(bytes, b"MAILBOXID"))
    {
        return None;
    }
    let (first, _) = words(bytes, 2)?;
    let (count, verb) = if first[1].eq_ignore_ascii_case(b"UID") {
        (3, words(bytes, 3)?.0[2])
    } else {
        (2, first[1])
    };
    if verb.eq_ignore_ascii_case(b"FETCH") {
        // tag [UID] FETCH set items [modifiers]
        let (_, at) = words(bytes, count + 1)?;
        take_fetch(bytes, at)
    } else if verb.eq_ignore_ascii_case(b"STATUS") {
        take_status(bytes)
    } else {
        None
    }
}

fn take_fetch(bytes: &[u8], at: usize) -> Option<(Vec<u8>, Extras)> {
    let mut extras = Extras::default();
    let mut mark = |item: &[u8]| {
        if item.eq_ignore_ascii_case(b"EMAILID") {
            extras.email_id = true;
            true
        } else if item.eq_ignore_ascii_case(b"THREADID") {
            extras.thread_id = true;
            true
        } else {
            false
        }
    };
    if bytes.get(at) != Some(&b'(') {
        // A single item: `FETCH 1 EMAILID`.
        let len = bytes[at..]
            .iter()
            .position(|&b| b == b' ' || b == b'\r' || b == b'\n')?;
        if !mark(&bytes[at..at + len]) {
            return None;
        }
        let mut out = bytes[..at].to_vec();
        out.extend_from_slice(b"UID");
        out.extend_from_slice(&bytes[at + len..]);
        extras.placeholder = true;
        return Some((out, extras));
    }
    let (items, close) = list_items(bytes, at)?;
    let kept: Vec<&[u8]> = items
        .iter()
        .map(|&(s, e)| &bytes[s..e])
        .filter(|item| !mark(item))
        .collect();
    if kept.len() == items.len() {
        return None;
    }
    let mut out = bytes[..at].to_vec();
    out.push(b'(');
    if kept.is_empty() {
        out.extend_from_slice(b"UID");
        extras.placeholder = true;
    }
    out.extend_from_slice(&kept.join(&b' '));
    out.extend_from_slice(&bytes[close..]);
    Some((out, extras))
}

/// `tag STATUS mailbox (items)`: the item list is the last parenthesised
/// group, at the very end of the command (a mailbox name before it may
/// itself hold parentheses).
fn take_status(bytes: &[u8]) -> Option<(Vec<u8>, Extras)> {
    let body = bytes
        .strip_suffix(b"\r\n")
        .or_else(|| bytes.strip_suffix(b"\n"))?;
    let end = body.len().checked_sub(1)?;
    if body[end] != b')' {
        return None;
    }
    let open = body.iter().rposition(|&b| b == b'(')?;
    let inner = &body[open + 1..end];
    let items: Vec<&[u8]> = inner
        .split(|&b| b == b' ')
        .filter(|i| !i.is_empty())
        .collect();
    let kept: Vec<&[u8]> = items
        .iter()
        .copied()
        .filter(|i| !i.eq_ignore_ascii_case(b"MAILBOXID"))
        .collect();
    if kept.len() == items.len() {
        return None;
    }
    let mut extras = Extras {
        mailbox_id: true,
        ..Extras::default()
    };
    let mut out = body[..=open].to_vec();
    if kept.is_empty() {
        out.extend_from_slice(b"MESSAGES");
        extras.placeholder = true;
    }
    out.extend_from_slice(&kept.join(&b' '));
    out.extend_from_slice(&bytes[end..]);
    Some((out, extras))
}

/// The SEARCH keys EMAILID and THREADID (RFC 8474 section 6), taken out
/// of a SEARCH before imap-codec sees it and applied by the executor on
/// top of the rest of the criteria.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct IdFilter {
    /// Row ids the EMAILID keys name (-1 for an id this server never gives).
    pub emails: Vec<i64>,
    /// Row ids the THREADID keys name.
    pub threads: Vec<i64>,
}

/// The command without the keys and the keys; or the tag and why refused.
pub(crate) type SplitIds = Result<(Vec<u8>, IdFilter), (String, String)>;

/// The row id in `E12`/`T34` form, or -1 (matches nothing).
fn row_id(value: &[u8], letter: u8) -> i64 {
    match value.split_first() {
        Some((first, digits)) if first.eq_ignore_ascii_case(&letter) => std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse::<i64>().ok())
            .filter(|n| *n >= 0)
            .unwrap_or(-1),
        _ => -1,
    }
}

/// Takes EMAILID/THREADID keys out of `tag [UID] SEARCH criteria`. They
/// are supported where they AND with the rest (at the top level); inside
/// parentheses or with OR/NOT in the same command they are refused.
pub(crate) fn take_search_ids(bytes: &[u8]) -> Option<SplitIds> {
    let line = bytes
        .strip_suffix(b"\r\n")
        .or_else(|| bytes.strip_suffix(b"\n"))
        .unwrap_or(bytes);
    let upper = line.to_ascii_uppercase();
    if !(upper.windows(7).any(|w| w == b"EMAILID") || upper.windows(8).any(|w| w == b"THREADID")) {
        return None;
    }
    // Top-level atoms as (start, end, depth).
    let mut atoms = Vec::new();
    let (mut i, mut depth) = (0usize, 0usize);
    while i < line.len() {
        match line[i] {
            b'"' => {
                i += 1;
                while i < line.len() && line[i] != b'"' {
                    if line[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'{' => {
                let close = line[i..].iter().position(|&b| b == b'}')? + i;
                let digits = &line[i + 1..close];
                let digits = digits.strip_suffix(b"+").unwrap_or(digits);
                let n: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
                i = close + 3 + n;
            }
            b'(' => {
                depth += 1;
                i += 1;
            }
            b')' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b' ' => i += 1,
            _ => {
                let start = i;
                while i < line.len() && !matches!(line[i], b' ' | b'(' | b')') {
                    i += 1;
                }
                atoms.push((start, i, depth));
            }
        }
    }
    let word = |a: &(usize, usize, usize)| line[a.0..a.1].to_ascii_uppercase();
    let verb_at = atoms.iter().position(|a| word(a) == b"SEARCH")?;
    if verb_at > 2 {
        return None;
    }
    let tag = String::from_utf8_lossy(&line[atoms.first()?.0..atoms.first()?.1]).into_owned();
    let criteria = &atoms[verb_at + 1..];
    let mut filter = IdFilter::default();
    let mut removed: Vec<(usize, usize)> = Vec::new();
    let mut k = 0;
    while k < criteria.len() {
        let w = word(&criteria[k]);
        if w == b"EMAILID" || w == b"THREADID" {
            let (start, _, depth) = criteria[k];
            let Some(value) = criteria.get(k + 1) else {
                return Some(Err((
                    tag,
                    format!("{} needs an object id", String::from_utf8_lossy(&w)),
                )));
            };
            if depth > 0
                || criteria
                    .iter()
                    .any(|a| matches!(word(a).as_slice(), b"OR" | b"NOT"))
            {
                return Some(Err((
                    tag,
                    "EMAILID and THREADID are supported only at the top level, without OR or NOT"
                        .into(),
                )));
            }
            let raw = &line[value.0..value.1];
            if w == b"EMAILID" {
                filter.emails.push(row_id(raw, b'E'));
            } else {
                filter.threads.push(row_id(raw, b'T'));
            }
            removed.push((start, value.1));
            k += 2;
        } else {
            k += 1;
        }
    }
    if removed.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(line.len());
    let mut last = 0;
    for (start, end) in &removed {
        out.extend_from_slice(&line[last..*start]);
        last = *end;
    }
    out.extend_from_slice(&line[last..]);
    let mut text = String::from_utf8_lossy(&out)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    // Nothing else to match on: everything, narrowed by the ids.
    if text.to_ascii_uppercase().ends_with("SEARCH") {
        text.push_str(" ALL");
    }
    text.push_str("\r\n");
    Some(Ok((text.into_bytes(), filter)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(line: &str) -> Option<(String, Extras)> {
        take_items(line.as_bytes()).map(|(b, e)| (String::from_utf8(b).expect("utf-8"), e))
    }

    #[test]
    fn fetch_items_are_taken_out() {
        let (line, e) = take("a FETCH 1:* (FLAGS EMAILID THREADID)\r\n").expect("taken");
        assert_eq!(line, "a FETCH 1:* (FLAGS)\r\n");
        assert!(e.email_id && e.thread_id && !e.placeholder && !e.mailbox_id);
        let (line, e) = take("a uid fetch 1 (emailid) (CHANGEDSINCE 5)\r\n").expect("taken");
        assert_eq!(line, "a uid fetch 1 (UID) (CHANGEDSINCE 5)\r\n");
        assert!(e.email_id && !e.thread_id && e.placeholder);
        let (line, e) = take("a FETCH 2 THREADID\r\n").expect("taken");
        assert_eq!(line, "a FETCH 2 UID\r\n");
        assert!(e.thread_id && e.placeholder);
        let (line, _) =
            take("a FETCH 1 (BODY.PEEK[HEADER.FIELDS (EMAILID X)] EMAILID BODY[]<0.5> UID)\r\n")
                .expect("taken");
        assert_eq!(
            line,
            "a FETCH 1 (BODY.PEEK[HEADER.FIELDS (EMAILID X)] BODY[]<0.5> UID)\r\n"
        );
    }

    #[test]
    fn look_alikes_are_left_alone() {
        // In a header name, a literal or a quoted string: not an item.
        assert!(take("a FETCH 1 (BODY[HEADER.FIELDS (EMAILID)])\r\n").is_none());
        assert!(take("a FETCH 1 (BODY[HEADER.FIELDS ({7}\r\nEMAILID)])\r\n").is_none());
        assert!(take("a SEARCH SUBJECT EMAILID\r\n").is_none());
        assert!(take("a FETCH 1 (FLAGS)\r\n").is_none());
        assert!(take("a FETCH 1 (EMAILIDX)\r\n").is_none());
        // Malformed: handed on unchanged for imap-codec to reject.
        assert!(take("a FETCH 1 (EMAILID\r\n").is_none());
        assert!(take("EMAILID\r\n").is_none());
    }

    #[test]
    fn status_items_are_taken_out() {
        let (line, e) = take("a STATUS INBOX (MESSAGES MAILBOXID UIDNEXT)\r\n").expect("taken");
        assert_eq!(line, "a STATUS INBOX (MESSAGES UIDNEXT)\r\n");
        assert!(e.mailbox_id && !e.placeholder);
        let (line, e) = take("a STATUS \"a (b)\" (mailboxid)\r\n").expect("taken");
        assert_eq!(line, "a STATUS \"a (b)\" (MESSAGES)\r\n");
        assert!(e.mailbox_id && e.placeholder);
        assert!(take("a STATUS MAILBOXID (MESSAGES)\r\n").is_none());
    }

    #[test]
    fn ids_follow_the_objectid_syntax() {
        // RFC 8474 section 3.1: 1 to 255 of ALPHA / DIGIT / "_" / "-".
        for id in [mailbox_id(1), email_id(i64::MAX), thread_id(0)] {
            assert!((1..=255).contains(&id.len()));
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod search_id_tests {
    use super::*;

    #[test]
    fn ids_are_taken_out_of_searches() {
        let (rest, f) = take_search_ids(b"a SEARCH EMAILID E12\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(rest, b"a SEARCH ALL\r\n".to_vec());
        assert_eq!(f.emails, vec![12]);
        let (rest, f) =
            take_search_ids(b"b UID SEARCH UNSEEN THREADID T7 SUBJECT \"EMAILID x\"\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(
            rest,
            b"b UID SEARCH UNSEEN SUBJECT \"EMAILID x\"\r\n".to_vec()
        );
        assert_eq!(f.threads, vec![7]);
        let (_, f) = take_search_ids(b"c SEARCH EMAILID M3\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(f.emails, vec![-1], "a mailbox id names no email");
        assert!(
            take_search_ids(b"d SEARCH OR EMAILID E1 SEEN\r\n")
                .unwrap()
                .is_err()
        );
        assert!(
            take_search_ids(b"e SEARCH (EMAILID E1)\r\n")
                .unwrap()
                .is_err()
        );
        assert!(take_search_ids(b"f SEARCH EMAILID\r\n").unwrap().is_err());
        assert!(take_search_ids(b"g SEARCH SUBJECT \"EMAILID E1\"\r\n").is_none());
        assert!(take_search_ids(b"h FETCH 1 (EMAILID)\r\n").is_none());
    }
}
