//! Command forms imap-codec 2.0.0-alpha.10 does not parse: LIST with
//! selection and return options (LIST-EXTENDED, RFC 5258; LIST-STATUS,
//! RFC 5819; SPECIAL-USE, RFC 6154) and SEARCH with RETURN options
//! (ESEARCH, RFC 4731). Sans-I/O.
//!
//! Only these exact shapes are recognised; anything else goes to the
//! codec as before. Every list here is bounded.

use imap_codec::imap_types::status::StatusDataItemName;

/// Most mailbox patterns in one LIST.
const MAX_PATTERNS: usize = 16;

/// LIST-EXTENDED selection and return options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ListOptions {
    /// Selection `SUBSCRIBED` (every mailbox is subscribed here).
    pub subscribed: bool,
    /// Selection `SPECIAL-USE`: only mailboxes with a special use.
    pub special_use_only: bool,
    /// Return `SUBSCRIBED`: add `\Subscribed`.
    pub return_subscribed: bool,
    /// Return `SPECIAL-USE`.
    pub return_special_use: bool,
    /// Return `STATUS (...)` (RFC 5819).
    pub status: Option<Vec<StatusDataItemName>>,
    /// `MAILBOXID` among those STATUS items (RFC 8474 section 4.2).
    pub status_mailbox_id: bool,
}

/// A parsed extended LIST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExtendedList {
    pub reference: Vec<u8>,
    pub patterns: Vec<Vec<u8>>,
    pub options: ListOptions,
}

/// ESEARCH result options (RFC 4731 section 3.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SearchReturn {
    pub min: bool,
    pub max: bool,
    pub count: bool,
    pub all: bool,
    /// SEARCHRES (RFC 5182): keep the result for `$`.
    pub save: bool,
}

impl SearchReturn {
    /// Whether an ESEARCH response is due: not when SAVE is the only
    /// option (RFC 5182 section 2.4).
    pub(crate) fn answers(self) -> bool {
        self.min || self.max || self.count || self.all
    }
}

/// A tiny tokenizer over one command line: atoms, quoted strings and
/// parentheses. Literals are not accepted in these forms.
struct Tokens<'a> {
    input: &'a [u8],
}

#[derive(Debug, PartialEq, Eq)]
enum Token {
    Open,
    Close,
    Word(Vec<u8>),
    Quoted(Vec<u8>),
}

impl<'a> Tokens<'a> {
    fn skip_space(&mut self) {
        while let Some(b' ') = self.input.first() {
            self.input = &self.input[1..];
        }
    }

    fn next(&mut self) -> Result<Option<Token>, &'static str> {
        self.skip_space();
        let Some(&first) = self.input.first() else {
            return Ok(None);
        };
        match first {
            b'(' => {
                self.input = &self.input[1..];
                Ok(Some(Token::Open))
            }
            b')' => {
                self.input = &self.input[1..];
                Ok(Some(Token::Close))
            }
            b'{' => Err("literals are not accepted here"),
            b'"' => {
                let mut out = Vec::new();
                let mut i = 1;
                while i < self.input.len() {
                    match self.input[i] {
                        b'\\' => {
                            let next = *self.input.get(i + 1).ok_or("unterminated string")?;
                            if next != b'"' && next != b'\\' {
                                return Err("bad escape");
                            }
                            out.push(next);
                            i += 2;
                        }
                        b'"' => {
                            self.input = &self.input[i + 1..];
                            return Ok(Some(Token::Quoted(out)));
                        }
                        b'\r' | b'\n' | 0 => return Err("bad character in string"),
                        b => {
                            out.push(b);
                            i += 1;
                        }
                    }
                }
                Err("unterminated string")
            }
            _ => {
                let end = self
                    .input
                    .iter()
                    .position(|&b| b == b' ' || b == b'(' || b == b')')
                    .unwrap_or(self.input.len());
                let word = self.input[..end].to_vec();
                if word.iter().any(|&b| b < 0x21 || b == 0x7f || b == b'"') {
                    return Err("bad atom");
                }
                self.input = &self.input[end..];
                Ok(Some(Token::Word(word)))
            }
        }
    }

    /// The words of a parenthesised list, after its `(`.
    fn words_until_close(&mut self, max: usize) -> Result<Vec<Vec<u8>>, &'static str> {
        let mut out = Vec::new();
        loop {
            match self.next()? {
                Some(Token::Close) => return Ok(out),
                Some(Token::Word(w)) | Some(Token::Quoted(w)) if out.len() < max => out.push(w),
                Some(Token::Word(_)) | Some(Token::Quoted(_)) => return Err("list too long"),
                _ => return Err("unexpected token in list"),
            }
        }
    }
}

fn line_of(bytes: &[u8]) -> &[u8] {
    bytes
        .strip_suffix(b"\r\n")
        .or_else(|| bytes.strip_suffix(b"\n"))
        .unwrap_or(bytes)
}

/// Splits `tag VERB rest`; the verb upper-cased.
fn head(line: &[u8]) -> Option<(&[u8], Vec<u8>, &[u8])> {
    let space = line.iter().position(|&b| b == b' ')?;
    let (tag, rest) = (&line[..space], &line[space + 1..]);
    let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
    Some((tag, rest[..end].to_ascii_uppercase(), &rest[end..]))
}

fn status_item(word: &[u8]) -> Result<StatusDataItemName, &'static str> {
    Ok(match word.to_ascii_uppercase().as_slice() {
        b"MESSAGES" => StatusDataItemName::Messages,
        b"UIDNEXT" => StatusDataItemName::UidNext,
        b"UIDVALIDITY" => StatusDataItemName::UidValidity,
        b"UNSEEN" => StatusDataItemName::Unseen,
        b"DELETED" => StatusDataItemName::Deleted,
        b"SIZE" => StatusDataItemName::Size,
        b"RECENT" => StatusDataItemName::Recent,
        b"HIGHESTMODSEQ" => StatusDataItemName::HighestModSeq,
        _ => return Err("unknown STATUS item"),
    })
}

/// Recognises `tag LIST (selection) ref pattern(s) [RETURN (...)]` or
/// `tag LIST ref pattern RETURN (...)`. `None` for the basic form (the
/// codec parses it) and other commands.
pub(crate) fn parse_list(bytes: &[u8]) -> Option<Result<(String, ExtendedList), (String, String)>> {
    let line = line_of(bytes);
    let (tag, verb, rest) = head(line)?;
    if verb != b"LIST" {
        return None;
    }
    let upper = rest.to_ascii_uppercase();
    // The basic form has no parentheses (outside quoted names, which the
    // parser below also handles) and no RETURN.
    let has_return = upper.windows(8).any(|w| w == b" RETURN ");
    if !rest.contains(&b'(') && !has_return {
        return None;
    }
    let tag = String::from_utf8_lossy(tag).into_owned();
    let parsed = (|| -> Result<ExtendedList, &'static str> {
        let mut tokens = Tokens { input: rest };
        let mut options = ListOptions::default();
        let mut first = tokens.next()?.ok_or("missing arguments")?;
        if first == Token::Open {
            for word in tokens.words_until_close(8)? {
                match word.to_ascii_uppercase().as_slice() {
                    b"SUBSCRIBED" => options.subscribed = true,
                    b"SPECIAL-USE" => options.special_use_only = true,
                    // RFC 5258 section 3.1: valid, nothing to do here (no
                    // remote mailboxes; recursive match is implied as every
                    // mailbox is subscribed).
                    b"REMOTE" | b"RECURSIVEMATCH" => {}
                    _ => return Err("unknown selection option"),
                }
            }
            first = tokens.next()?.ok_or("missing reference")?;
        }
        let reference = match first {
            Token::Word(w) | Token::Quoted(w) => w,
            _ => return Err("bad reference"),
        };
        let patterns = match tokens.next()?.ok_or("missing pattern")? {
            Token::Word(w) | Token::Quoted(w) => vec![w],
            Token::Open => {
                let list = tokens.words_until_close(MAX_PATTERNS)?;
                if list.is_empty() {
                    return Err("empty pattern list");
                }
                list
            }
            Token::Close => return Err("bad pattern"),
        };
        match tokens.next()? {
            None => {}
            Some(Token::Word(w)) if w.eq_ignore_ascii_case(b"RETURN") => {
                if tokens.next()? != Some(Token::Open) {
                    return Err("RETURN needs a list");
                }
                loop {
                    match tokens.next()?.ok_or("unterminated RETURN list")? {
                        Token::Close => break,
                        Token::Word(w) => match w.to_ascii_uppercase().as_slice() {
                            b"SUBSCRIBED" => options.return_subscribed = true,
                            b"CHILDREN" => {}
                            b"SPECIAL-USE" => options.return_special_use = true,
                            b"STATUS" => {
                                if tokens.next()? != Some(Token::Open) {
                                    return Err("STATUS needs a list");
                                }
                                let mut items = Vec::new();
                                for word in tokens.words_until_close(10)? {
                                    if word.eq_ignore_ascii_case(b"MAILBOXID") {
                                        options.status_mailbox_id = true;
                                    } else {
                                        items.push(status_item(&word)?);
                                    }
                                }
                                options.status = Some(items);
                            }
                            _ => return Err("unknown return option"),
                        },
                        _ => return Err("bad RETURN list"),
                    }
                }
                if tokens.next()?.is_some() {
                    return Err("unexpected text after RETURN");
                }
            }
            Some(_) => return Err("unexpected arguments"),
        }
        Ok(ExtendedList {
            reference,
            patterns,
            options,
        })
    })();
    Some(match parsed {
        Ok(list) => Ok((tag, list)),
        Err(why) => Err((tag, format!("Syntax error in LIST: {why}"))),
    })
}

/// The options and the rewritten command, or the tag and why it is refused.
type SplitSearch = Result<(SearchReturn, Vec<u8>), (String, String)>;

/// Takes `RETURN (...)` out of `tag [UID] SEARCH RETURN (...) criteria`,
/// giving the options and the command without them for the codec.
pub(crate) fn split_search_return(bytes: &[u8]) -> Option<SplitSearch> {
    let line = line_of(bytes);
    let (tag, verb, rest) = head(line)?;
    let (prefix_len, rest) = if verb == b"UID" {
        let rest = rest.strip_prefix(b" ")?;
        let end = rest.iter().position(|&b| b == b' ')?;
        if !rest[..end].eq_ignore_ascii_case(b"SEARCH") {
            return None;
        }
        (line.len() - rest.len() + end, &rest[end..])
    } else if verb == b"SEARCH" {
        (line.len() - rest.len(), rest)
    } else {
        return None;
    };
    let after = rest.strip_prefix(b" ")?;
    if after.len() < 7 || !after[..7].eq_ignore_ascii_case(b"RETURN ") {
        return None;
    }
    let tag = String::from_utf8_lossy(tag).into_owned();
    let mut tokens = Tokens { input: &after[7..] };
    let parsed = (|| -> Result<SearchReturn, &'static str> {
        if tokens.next()? != Some(Token::Open) {
            return Err("RETURN needs a list");
        }
        let mut options = SearchReturn::default();
        for word in tokens.words_until_close(8)? {
            match word.to_ascii_uppercase().as_slice() {
                b"MIN" => options.min = true,
                b"MAX" => options.max = true,
                b"COUNT" => options.count = true,
                b"ALL" => options.all = true,
                b"SAVE" => options.save = true,
                _ => return Err("unknown RETURN option"),
            }
        }
        // RFC 4731 section 3.1: an empty list means ALL.
        if options == SearchReturn::default() {
            options.all = true;
        }
        Ok(options)
    })();
    Some(match parsed {
        Ok(options) => {
            let mut command = line[..prefix_len].to_vec();
            command.extend_from_slice(tokens.input);
            command.extend_from_slice(b"\r\n");
            Ok((options, command))
        }
        Err(why) => Err((tag, format!("Syntax error in SEARCH RETURN: {why}"))),
    })
}

/// Replaces a `$` sequence set (RFC 5182 section 2.1) with the saved
/// UIDs. A command using `$` by message number becomes its UID form, so
/// the saved UIDs keep pointing at the same messages whatever was expunged
/// meanwhile; `SEARCH $` becomes `SEARCH UID <set>`. `None` when the
/// command has no `$`.
pub(crate) fn substitute_saved(bytes: &[u8], saved: &[u32]) -> Option<Vec<u8>> {
    // Where `$` stands alone as an argument, outside quoted strings and
    // literal data.
    let mut positions = Vec::new();
    let mut i = 0;
    let mut quoted = false;
    while i < bytes.len() {
        let b = bytes[i];
        if quoted {
            match b {
                b'\\' => i += 1,
                b'"' => quoted = false,
                _ => {}
            }
        } else if b == b'"' {
            quoted = true;
        } else if b == b'{' {
            // `{n}` or `{n+}` then CRLF, then n bytes of data.
            if let Some(close) = bytes[i..].iter().position(|&c| c == b'}') {
                let digits = &bytes[i + 1..i + close];
                let digits = digits.strip_suffix(b"+").unwrap_or(digits);
                if let Some(n) = std::str::from_utf8(digits)
                    .ok()
                    .and_then(|d| d.parse::<usize>().ok())
                    && bytes.get(i + close + 1..i + close + 3) == Some(b"\r\n")
                {
                    i += close + 3 + n;
                    continue;
                }
            }
        } else if b == b'$'
            && i > 0
            && matches!(bytes[i - 1], b' ' | b'(')
            && matches!(bytes.get(i + 1), Some(b' ' | b')' | b'\r' | b'\n') | None)
        {
            positions.push(i);
        }
        i += 1;
    }
    if positions.is_empty() {
        return None;
    }
    // An empty result matches nothing: a UID no message can have.
    let set = if saved.is_empty() {
        "4294967295".to_string()
    } else {
        crate::out::compact_set(saved)
    };
    let space = bytes.iter().position(|&b| b == b' ')?;
    let tag_end = space + 1;
    let rest = &bytes[tag_end..];
    let verb_end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
    let verb = rest[..verb_end].to_ascii_uppercase();
    // In SEARCH (UID or not) a bare set means message numbers, so `$`
    // becomes the UID search key.
    let is_search = verb == b"SEARCH"
        || (verb == b"UID"
            && rest[verb_end..]
                .trim_ascii_start()
                .get(..6)
                .is_some_and(|w| w.eq_ignore_ascii_case(b"SEARCH")));
    // Only arguments are substituted: a `$` inside the tag or the command
    // name (hostile input) is left for the parser to refuse.
    positions.retain(|&p| p > tag_end + verb_end);
    if positions.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() + set.len());
    let mut last = 0;
    if verb != b"UID" && !is_search {
        // FETCH/STORE/COPY/MOVE by number with `$`: the UID form.
        out.extend_from_slice(&bytes[..tag_end]);
        out.extend_from_slice(b"UID ");
        last = tag_end;
    }
    for pos in positions {
        out.extend_from_slice(&bytes[last..pos]);
        if is_search {
            out.extend_from_slice(b"UID ");
        }
        out.extend_from_slice(set.as_bytes());
        last = pos + 1;
    }
    out.extend_from_slice(&bytes[last..]);
    Some(out)
}

/// One message of a MULTIAPPEND.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AppendItem {
    /// Store keywords of the flag list.
    pub keywords: Vec<String>,
    /// The internal date, Unix milliseconds, when given.
    pub received_at: Option<i64>,
    pub message: Vec<u8>,
}

/// Most messages in one MULTIAPPEND; the framer already bounds their
/// total size by APPENDLIMIT plus a line.
const MAX_APPEND_ITEMS: usize = 1000;

/// A flag as a store keyword: system flags by name, keywords lower-cased;
/// `None` for flags that cannot be stored (`\Recent`, unknown `\X`).
fn keyword_of(flag: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(flag).ok()?;
    if let Some(system) = text.strip_prefix('\\') {
        return Some(
            match system.to_ascii_lowercase().as_str() {
                "seen" => crate::flags::SEEN,
                "answered" => crate::flags::ANSWERED,
                "flagged" => crate::flags::FLAGGED,
                "deleted" => crate::flags::DELETED,
                "draft" => crate::flags::DRAFT,
                _ => return None,
            }
            .to_string(),
        );
    }
    let atom = !text.is_empty()
        && text
            .bytes()
            .all(|b| b > 0x20 && b < 0x7f && !b"(){%*\"\\]".contains(&b));
    atom.then(|| text.to_ascii_lowercase())
}

/// `dd-Mon-yyyy hh:mm:ss +zzzz` (RFC 9051 date-time) as Unix milliseconds.
fn date_time(text: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(text).ok()?.trim_start();
    let (date, rest) = text.split_once(' ')?;
    let (time, zone) = rest.split_once(' ')?;
    let mut d = date.split('-');
    let day: u32 = d.next()?.parse().ok()?;
    let month = match d.next()?.to_ascii_lowercase().as_str() {
        "jan" => 1,
        "feb" => 2,
        "mar" => 3,
        "apr" => 4,
        "may" => 5,
        "jun" => 6,
        "jul" => 7,
        "aug" => 8,
        "sep" => 9,
        "oct" => 10,
        "nov" => 11,
        "dec" => 12,
        _ => return None,
    };
    let year: i64 = d.next()?.parse().ok()?;
    let mut t = time.split(':');
    let (h, m, sec): (i64, i64, i64) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
    );
    if !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 || zone.len() != 5 {
        return None;
    }
    let sign = match zone.as_bytes()[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let zh: i64 = zone[1..3].parse().ok()?;
    let zm: i64 = zone[3..5].parse().ok()?;
    let days = crate::out::days_from_civil(year, month, day);
    let seconds = days * 86_400 + h * 3600 + m * 60 + sec - sign * (zh * 3600 + zm * 60);
    seconds.checked_mul(1000)
}

/// A MULTIAPPEND: tag, mailbox and messages; or the tag and why it was
/// refused.
type MultiAppend = Result<(String, Vec<u8>, Vec<AppendItem>), (String, String)>;

/// Recognises an APPEND of more than one message (MULTIAPPEND, RFC 3502
/// section 6.3.11) and any APPEND with the `UTF8 (~{n}...)` data item
/// (RFC 6855 section 4, RFC 9051's `append-data`). A single plain message,
/// a literal mailbox name or a bare binary literal are left to the codec
/// (`None`).
pub(crate) fn parse_multiappend(bytes: &[u8]) -> Option<MultiAppend> {
    let (tag, verb, rest) = head(bytes)?;
    if verb != b"APPEND" {
        return None;
    }
    let tag = String::from_utf8_lossy(tag).into_owned();
    let mut tokens = Tokens { input: rest };
    let mailbox = match tokens.next() {
        Ok(Some(Token::Word(w))) | Ok(Some(Token::Quoted(w))) => w,
        _ => return None,
    };
    let mut items = Vec::new();
    let mut utf8_data = false;
    loop {
        tokens.skip_space();
        let mut keywords = Vec::new();
        if tokens.input.first() == Some(&b'(') {
            let Ok(Some(Token::Open)) = tokens.next() else {
                return None;
            };
            let Ok(flags) = tokens.words_until_close(64) else {
                return Some(Err((tag, "Bad flag list".into())));
            };
            for flag in flags {
                match keyword_of(&flag) {
                    Some(k) => keywords.push(k),
                    None => return Some(Err((tag, "Unknown system flag".into()))),
                }
            }
            tokens.skip_space();
        }
        let mut received_at = None;
        if tokens.input.first() == Some(&b'"') {
            let Ok(Some(Token::Quoted(date))) = tokens.next() else {
                return None;
            };
            match date_time(&date) {
                Some(ms) => received_at = Some(ms),
                None => return Some(Err((tag, "Bad date-time".into()))),
            }
            tokens.skip_space();
        }
        // `UTF8 (~{n}` ... `)`: the message as a binary literal, said to
        // carry UTF-8 headers; stored as given.
        let mut input = tokens.input;
        let utf8 = input.len() >= 8 && input[..8].eq_ignore_ascii_case(b"UTF8 (~{");
        if utf8 {
            utf8_data = true;
            input = &input[7..];
        }
        // `{n}` or `{n+}`, CRLF, n bytes (the framer collected them).
        if input.first() != Some(&b'{') {
            return None;
        }
        let close = input.iter().position(|&b| b == b'}')?;
        let digits = &input[1..close];
        let digits = digits.strip_suffix(b"+").unwrap_or(digits);
        let n: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
        let data_start = close + 3;
        if input.get(close + 1..data_start) != Some(b"\r\n") {
            return None;
        }
        let message = input.get(data_start..data_start + n)?.to_vec();
        items.push(AppendItem {
            keywords,
            received_at,
            message,
        });
        if items.len() > MAX_APPEND_ITEMS {
            return Some(Err((tag, "Too many messages in one APPEND".into())));
        }
        let mut after = &input[data_start + n..];
        if utf8 {
            match after.strip_prefix(b")") {
                Some(rest) => after = rest,
                None => return Some(Err((tag, "Syntax error in APPEND UTF8 data".into()))),
            }
        }
        if after.is_empty() || after == b"\r\n" || after == b"\n" {
            break;
        }
        match after.strip_prefix(b" ") {
            Some(next) => tokens.input = next,
            None => return Some(Err((tag, "Syntax error in APPEND".into()))),
        }
    }
    (items.len() > 1 || utf8_data).then_some(Ok((tag, mailbox, items)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn extended_lists_parse() {
        // RFC 5258 section 5 examples.
        let (tag, l) = parse_list(b"A02 LIST (SUBSCRIBED) \"\" \"*\"\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(tag, "A02");
        assert!(l.options.subscribed);
        assert_eq!(l.patterns, vec![b"*".to_vec()]);
        let (_, l) = parse_list(b"A03 LIST () \"\" \"%\" RETURN (CHILDREN)\r\n")
            .unwrap()
            .unwrap();
        assert!(!l.options.subscribed);
        let (_, l) = parse_list(
            b"A05 LIST \"\" (\"INBOX\" \"Drafts\") RETURN (STATUS (MESSAGES UNSEEN))\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(l.patterns.len(), 2);
        assert!(l.options.status.is_some());
        let (_, l) = parse_list(
            b"A04 LIST (SPECIAL-USE) \"\" (\"INBOX\" \"Sent\") RETURN (STATUS (MESSAGES UNSEEN) SPECIAL-USE)\r\n",
        )
        .unwrap()
        .unwrap();
        assert!(l.options.special_use_only && l.options.return_special_use);
        assert_eq!(l.patterns.len(), 2);
        assert_eq!(
            l.options.status,
            Some(vec![
                StatusDataItemName::Messages,
                StatusDataItemName::Unseen
            ])
        );
        assert!(
            parse_list(b"A06 LIST \"\" *\r\n").is_none(),
            "basic form for the codec"
        );
        assert!(parse_list(b"A07 LIST (BOGUS) \"\" *\r\n").unwrap().is_err());
        assert!(
            parse_list(b"A08 LIST () \"\" * RETURN (STATUS (NOPE))\r\n")
                .unwrap()
                .is_err()
        );
        assert!(parse_list(b"A09 LIST () {3}\r\n").unwrap().is_err());
        let many = format!("A10 LIST () \"\" ({})\r\n", "x ".repeat(40));
        assert!(parse_list(many.as_bytes()).unwrap().is_err());
    }

    #[test]
    fn search_return_is_split_off() {
        let (opts, rest) =
            split_search_return(b"A282 SEARCH RETURN (MIN COUNT) FLAGGED SINCE 1-Feb-1994\r\n")
                .unwrap()
                .unwrap();
        assert!(opts.min && opts.count && !opts.max && !opts.all);
        assert_eq!(rest, b"A282 SEARCH FLAGGED SINCE 1-Feb-1994\r\n".to_vec());
        let (opts, rest) = split_search_return(b"A3 UID SEARCH RETURN () ALL\r\n")
            .unwrap()
            .unwrap();
        assert!(opts.all);
        assert_eq!(rest, b"A3 UID SEARCH ALL\r\n".to_vec());
        assert!(split_search_return(b"A4 SEARCH ALL\r\n").is_none());
        let (opts, _) = split_search_return(b"A5 SEARCH RETURN (SAVE) ALL\r\n")
            .unwrap()
            .unwrap();
        assert!(opts.save && !opts.answers());
        assert!(split_search_return(b"A6 FETCH 1 FLAGS\r\n").is_none());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod saved_tests {
    use super::substitute_saved;

    #[test]
    fn dollar_becomes_the_saved_uids() {
        let s = |line: &str| {
            substitute_saved(line.as_bytes(), &[3, 4, 5, 9]).map(|v| String::from_utf8(v).unwrap())
        };
        assert_eq!(
            s("A1 UID FETCH $ (FLAGS)\r\n").unwrap(),
            "A1 UID FETCH 3:5,9 (FLAGS)\r\n"
        );
        assert_eq!(
            s("A2 FETCH $ (FLAGS)\r\n").unwrap(),
            "A2 UID FETCH 3:5,9 (FLAGS)\r\n"
        );
        assert_eq!(
            s("A3 SEARCH $ SMALLER 4\r\n").unwrap(),
            "A3 SEARCH UID 3:5,9 SMALLER 4\r\n"
        );
        assert_eq!(
            s("A4 SEARCH OR $ 1:3\r\n").unwrap(),
            "A4 SEARCH OR UID 3:5,9 1:3\r\n"
        );
        assert_eq!(
            s("A4 UID SEARCH $\r\n").unwrap(),
            "A4 UID SEARCH UID 3:5,9\r\n"
        );
        assert_eq!(
            s("A5 STORE $ +FLAGS (\\Seen)\r\n").unwrap(),
            "A5 UID STORE 3:5,9 +FLAGS (\\Seen)\r\n"
        );
        assert!(
            s("A6 SEARCH SUBJECT \"$\"\r\n").is_none(),
            "quoted dollars stay"
        );
        assert!(
            s("A7 SEARCH SUBJECT {1+}\r\n$\r\n").is_none(),
            "literal dollars stay"
        );
        assert!(s("A8 FETCH 1 (FLAGS)\r\n").is_none());
        // Found by fuzzing: a `$` inside the tag is not an argument.
        assert!(substitute_saved(b"[W\xff%00=($ AD\r\n", &[1]).is_none());
        assert!(s("A($ FETCH 1 (FLAGS)\r\n").is_none());
        assert_eq!(
            String::from_utf8(substitute_saved(b"A9 UID COPY $ Trash\r\n", &[]).unwrap()).unwrap(),
            "A9 UID COPY 4294967295 Trash\r\n"
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod append_tests {
    use super::*;

    #[test]
    fn multiappend_parses() {
        // RFC 3502 section 6.3.11's example, shortened.
        let cmd = b"A003 APPEND saved-messages (\\Seen) \"15-Nov-1997 10:01:32 +0100\" {5}\r\nfirst (\\Flagged $Work) {6+}\r\nsecond\r\n";
        let (tag, mailbox, items) = parse_multiappend(cmd).unwrap().unwrap();
        assert_eq!(tag, "A003");
        assert_eq!(mailbox, b"saved-messages");
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].keywords, vec!["$seen".to_string()]);
        assert_eq!(items[0].received_at, Some(879_584_492_000));
        assert_eq!(items[0].message, b"first");
        assert_eq!(
            items[1].keywords,
            vec!["$flagged".to_string(), "$work".to_string()]
        );
        assert_eq!(items[1].message, b"second");
        // One message: the codec's.
        assert!(parse_multiappend(b"A1 APPEND INBOX {5}\r\nhello\r\n").is_none());
        assert!(
            parse_multiappend(b"A1 APPEND INBOX (\\Recent) {1}\r\na {1}\r\nb\r\n")
                .unwrap()
                .is_err()
        );
        assert!(
            parse_multiappend(
                b"A1 APPEND INBOX \"32-Jan-2020 00:00:00 +0000\" {1}\r\na {1}\r\nb\r\n"
            )
            .unwrap()
            .is_err()
        );
        assert!(
            parse_multiappend(b"A1 APPEND INBOX {1}\r\naX{1}\r\nb\r\n")
                .unwrap()
                .is_err()
        );
    }

    #[test]
    fn utf8_append_data_parses() {
        // RFC 6855 section 4: `UTF8 (` literal8 `)`, alone or in a MULTIAPPEND.
        let subject = "Subject: caf\u{e9}\r\n\r\nx";
        let cmd = format!(
            "A1 APPEND INBOX (\\Seen) UTF8 (~{{{}}}\r\n{subject})\r\n",
            subject.len()
        );
        let (_, mailbox, items) = parse_multiappend(cmd.as_bytes()).unwrap().unwrap();
        assert_eq!(mailbox, b"INBOX");
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].message, subject.as_bytes());
        assert_eq!(items[0].keywords, vec!["$seen".to_string()]);
        let two = b"A2 APPEND INBOX utf8 (~{1+}\r\na) {1}\r\nb\r\n";
        let (_, _, items) = parse_multiappend(two).unwrap().unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].message, b"a");
        assert_eq!(items[1].message, b"b");
        // The closing parenthesis is required.
        assert!(
            parse_multiappend(b"A3 APPEND INBOX UTF8 (~{1}\r\na\r\n")
                .unwrap()
                .is_err()
        );
    }
}
