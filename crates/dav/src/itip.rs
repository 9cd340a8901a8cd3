//! iTIP (RFC 5546) edits of iCalendar text: who organises and attends,
//! participation status, scheduling status, METHOD, cancellation; and
//! iMIP (RFC 6047) messages carrying them by mail.
//!
//! Edits work on content lines, so everything the server does not touch
//! (including properties it does not know) is kept as the client wrote it.

/// One content line: `NAME;PARAM=VALUE:value`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    name: String,
    params: Vec<(String, String)>,
    value: String,
}

/// Splits on `sep` outside double quotes.
fn split_unquoted(text: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in text.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            out.push(&text[start..i]);
            start = i + c.len_utf8();
        }
    }
    out.push(&text[start..]);
    out
}

fn parse_line(text: &str) -> Option<Line> {
    let mut quoted = false;
    let colon = text.char_indices().find_map(|(i, c)| {
        if c == '"' {
            quoted = !quoted;
        }
        (c == ':' && !quoted).then_some(i)
    })?;
    let head = &text[..colon];
    let mut parts = split_unquoted(head, ';').into_iter();
    let name = parts.next()?.trim().to_ascii_uppercase();
    let params = parts
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((k.trim().to_ascii_uppercase(), v.to_string()))
        })
        .collect();
    Some(Line {
        name,
        params,
        value: text[colon + 1..].to_string(),
    })
}

/// Folds a line at 75 octets (RFC 5545 section 3.1) and ends it with CRLF.
fn fold(line: &str, out: &mut String) {
    let mut width = 0;
    for c in line.chars() {
        if width + c.len_utf8() > 75 {
            out.push_str("\r\n ");
            width = 1;
        }
        out.push(c);
        width += c.len_utf8();
    }
    out.push_str("\r\n");
}

impl Line {
    fn render(&self) -> String {
        let mut text = self.name.clone();
        for (k, v) in &self.params {
            text.push(';');
            text.push_str(k);
            text.push('=');
            text.push_str(v);
        }
        text.push(':');
        text.push_str(&self.value);
        text
    }

    fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.trim_matches('"'))
    }

    fn set_param(&mut self, key: &str, value: &str) {
        match self.params.iter_mut().find(|(k, _)| k == key) {
            Some(p) => p.1 = value.to_string(),
            None => self.params.push((key.to_string(), value.to_string())),
        }
    }
}

/// The address of a calendar user URI (`mailto:`), lower case.
pub fn address_of(uri: &str) -> Option<String> {
    let uri = uri.trim();
    let rest = uri
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case("mailto:"))
        .map(|_| &uri[7..])?;
    let rest = rest.trim();
    (rest.contains('@') && !rest.contains(char::is_whitespace)).then(|| rest.to_ascii_lowercase())
}

/// An attendee as the organizer listed them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attendee {
    /// Lower-case address.
    pub address: String,
    /// `PARTSTAT`, upper case (`NEEDS-ACTION` when absent).
    pub partstat: String,
    /// `CUTYPE`, upper case (`INDIVIDUAL` when absent).
    pub cutype: String,
    /// Whether the server schedules for them (`SCHEDULE-AGENT` absent or `SERVER`).
    pub server_agent: bool,
}

/// An iCalendar object as editable lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Itip {
    /// Raw unfolded lines; `None` where a line did not parse (kept as is).
    lines: Vec<(String, Option<Line>)>,
}

const MAIN: [&str; 4] = ["VEVENT", "VTODO", "VJOURNAL", "VFREEBUSY"];

impl Itip {
    /// Reads `data` (already validated as iCalendar).
    pub fn parse(data: &str) -> Itip {
        let mut raw: Vec<String> = Vec::new();
        for piece in data.split('\n') {
            let piece = piece.strip_suffix('\r').unwrap_or(piece);
            if let Some(rest) = piece.strip_prefix([' ', '\t']) {
                if let Some(last) = raw.last_mut() {
                    last.push_str(rest);
                }
            } else if !piece.is_empty() {
                raw.push(piece.to_string());
            }
        }
        Itip {
            lines: raw
                .into_iter()
                .map(|r| {
                    let parsed = parse_line(&r);
                    (r, parsed)
                })
                .collect(),
        }
    }

    /// The text, folded.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (raw, parsed) in &self.lines {
            match parsed {
                Some(line) => fold(&line.render(), &mut out),
                None => fold(raw, &mut out),
            }
        }
        out
    }

    /// Indexes of lines directly inside an event, task or journal.
    fn main_lines(&self) -> Vec<usize> {
        let mut stack: Vec<String> = Vec::new();
        let mut out = Vec::new();
        for (i, (_, line)) in self.lines.iter().enumerate() {
            let Some(line) = line else { continue };
            match line.name.as_str() {
                "BEGIN" => stack.push(line.value.trim().to_ascii_uppercase()),
                "END" => {
                    stack.pop();
                }
                _ => {
                    if stack.last().is_some_and(|c| MAIN.contains(&c.as_str())) {
                        out.push(i);
                    }
                }
            }
        }
        out
    }

    fn main_named(&self, name: &str) -> Vec<usize> {
        self.main_lines()
            .into_iter()
            .filter(|i| self.lines[*i].1.as_ref().is_some_and(|l| l.name == name))
            .collect()
    }

    fn value_of(&self, name: &str) -> Option<String> {
        self.main_named(name)
            .first()
            .and_then(|i| self.lines[*i].1.as_ref())
            .map(|l| l.value.clone())
    }

    /// The METHOD of the VCALENDAR, upper case.
    pub fn method(&self) -> Option<String> {
        let mut depth = 0usize;
        for (_, line) in &self.lines {
            let Some(line) = line else { continue };
            match line.name.as_str() {
                "BEGIN" => depth += 1,
                "END" => depth = depth.saturating_sub(1),
                "METHOD" if depth == 1 => return Some(line.value.trim().to_ascii_uppercase()),
                _ => {}
            }
        }
        None
    }

    /// The organizer's address.
    pub fn organizer(&self) -> Option<String> {
        self.value_of("ORGANIZER").and_then(|v| address_of(&v))
    }

    /// The UID.
    pub fn uid(&self) -> Option<String> {
        self.value_of("UID")
    }

    /// The SUMMARY, for mail subjects.
    pub fn summary(&self) -> Option<String> {
        self.value_of("SUMMARY")
    }

    /// A date-time property of the main component in UTC form, if it is one.
    pub fn utc_time(&self, name: &str) -> Option<i64> {
        self.value_of(name).and_then(|v| crate::ical::parse_utc(&v))
    }

    /// Every attendee, once each, in order.
    pub fn attendees(&self) -> Vec<Attendee> {
        let mut out: Vec<Attendee> = Vec::new();
        for i in self.main_named("ATTENDEE") {
            let Some(line) = &self.lines[i].1 else {
                continue;
            };
            let Some(address) = address_of(&line.value) else {
                continue;
            };
            if out.iter().any(|a| a.address == address) {
                continue;
            }
            out.push(Attendee {
                partstat: line
                    .param("PARTSTAT")
                    .unwrap_or("NEEDS-ACTION")
                    .to_ascii_uppercase(),
                cutype: line
                    .param("CUTYPE")
                    .unwrap_or("INDIVIDUAL")
                    .to_ascii_uppercase(),
                server_agent: line
                    .param("SCHEDULE-AGENT")
                    .is_none_or(|a| a.eq_ignore_ascii_case("SERVER")),
                address,
            });
        }
        out
    }

    /// `PARTSTAT` of one attendee.
    pub fn partstat_of(&self, address: &str) -> Option<String> {
        self.attendees()
            .into_iter()
            .find(|a| a.address == address)
            .map(|a| a.partstat)
    }

    /// Sets a parameter on every ATTENDEE line of `address`.
    pub fn set_attendee_param(&mut self, address: &str, key: &str, value: &str) {
        for i in self.main_named("ATTENDEE") {
            if let Some(line) = &mut self.lines[i].1
                && address_of(&line.value).as_deref() == Some(address)
            {
                line.set_param(key, value);
            }
        }
    }

    /// Adds `address` as an attendee invited through the group `group`
    /// (RFC 5545 MEMBER) to every event, task or journal that lacks it.
    pub fn add_group_member(&mut self, address: &str, group: &str) {
        let line = Line {
            name: "ATTENDEE".into(),
            params: vec![
                ("CUTYPE".into(), "INDIVIDUAL".into()),
                ("PARTSTAT".into(), "NEEDS-ACTION".into()),
                ("RSVP".into(), "TRUE".into()),
                ("MEMBER".into(), format!("\"mailto:{group}\"")),
            ],
            value: format!("mailto:{address}"),
        };
        self.insert_where_missing(&MAIN[..3], &line, |l| {
            l.name == "ATTENDEE" && address_of(&l.value).as_deref() == Some(address)
        });
    }

    /// Puts `line` before the END of every component named in `components`
    /// that has no line of its own for which `present` holds.
    fn insert_where_missing(
        &mut self,
        components: &[&str],
        line: &Line,
        present: impl Fn(&Line) -> bool,
    ) {
        let mut stack: Vec<(String, bool)> = Vec::new();
        let mut inserts = Vec::new();
        for (i, (_, l)) in self.lines.iter().enumerate() {
            let Some(l) = l else { continue };
            match l.name.as_str() {
                "BEGIN" => stack.push((l.value.trim().to_ascii_uppercase(), false)),
                "END" => {
                    if let Some((name, found)) = stack.pop()
                        && components.contains(&name.as_str())
                        && !found
                    {
                        inserts.push(i);
                    }
                }
                _ if present(l) => {
                    if let Some(top) = stack.last_mut() {
                        top.1 = true;
                    }
                }
                _ => {}
            }
        }
        for i in inserts.into_iter().rev() {
            self.lines.insert(i, (line.render(), Some(line.clone())));
        }
    }

    /// Removes a parameter from every ATTENDEE and ORGANIZER line.
    pub fn strip_param(&mut self, key: &str) {
        for i in self.main_lines() {
            if let Some(line) = &mut self.lines[i].1
                && (line.name == "ATTENDEE" || line.name == "ORGANIZER")
            {
                line.params.retain(|(k, _)| k != key);
            }
        }
    }

    /// Keeps only `address`'s ATTENDEE lines (an iTIP REPLY names only the replier).
    pub fn keep_only_attendee(&mut self, address: &str) {
        let drop: Vec<usize> = self
            .main_named("ATTENDEE")
            .into_iter()
            .filter(|i| {
                self.lines[*i]
                    .1
                    .as_ref()
                    .is_some_and(|l| address_of(&l.value).as_deref() != Some(address))
            })
            .collect();
        for i in drop.into_iter().rev() {
            self.lines.remove(i);
        }
    }

    /// Sets METHOD on the VCALENDAR (`None` removes it).
    pub fn set_method(&mut self, method: Option<&str>) {
        self.lines
            .retain(|(_, l)| l.as_ref().is_none_or(|l| l.name != "METHOD"));
        if let Some(method) = method {
            let at = self
                .lines
                .iter()
                .position(|(_, l)| {
                    l.as_ref().is_some_and(|l| {
                        l.name == "BEGIN" && l.value.trim().eq_ignore_ascii_case("VCALENDAR")
                    })
                })
                .map_or(0, |i| i + 1);
            let line = Line {
                name: "METHOD".into(),
                params: Vec::new(),
                value: method.into(),
            };
            self.lines.insert(at, (line.render(), Some(line)));
        }
    }

    /// Marks every event, task or journal cancelled.
    pub fn cancel(&mut self) {
        for i in self.main_named("STATUS") {
            if let Some(line) = &mut self.lines[i].1 {
                line.value = "CANCELLED".into();
            }
        }
        // Components without a STATUS get one before their END.
        let line = Line {
            name: "STATUS".into(),
            params: Vec::new(),
            value: "CANCELLED".into(),
        };
        self.insert_where_missing(&MAIN, &line, |l| l.name == "STATUS");
    }
}

/// A safe object name for a UID (`.ics` added).
pub fn object_name(uid: &str) -> String {
    let mut name: String = uid
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(200)
        .collect();
    if name.is_empty() || name.starts_with('.') {
        name.insert(0, 'x');
    }
    name.push_str(".ics");
    name
}

/// An iMIP message (RFC 6047) carrying `ical` with `method`.
pub fn imip_message(from: &str, to: &str, method: &str, ical: &str, message_id: &str) -> Vec<u8> {
    let summary = Itip::parse(ical).summary().unwrap_or_default();
    let subject_word = match method {
        "REQUEST" => "Invitation",
        "CANCEL" => "Cancelled",
        "REPLY" => "Reply",
        _ => "Calendar",
    };
    // Header values are built from addresses we checked and a summary
    // stripped of line breaks, so nothing can inject header lines.
    let summary: String = summary
        .replace("\\n", " ")
        .replace("\\,", ",")
        .replace("\\;", ";")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    let subject = if summary.is_ascii() {
        format!("{subject_word}: {summary}")
    } else {
        format!(
            "{subject_word}: =?utf-8?B?{}?=",
            base64_encode(summary.as_bytes())
        )
    };
    let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S +0000");
    let body = format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nDate: {date}\r\n\
         Message-ID: <{message_id}>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/calendar; charset=utf-8; method={method}\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n"
    );
    let mut out = body.into_bytes();
    let encoded = base64_encode(ical.as_bytes());
    for chunk in encoded.as_bytes().chunks(76) {
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn base64_encode(data: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(TABLE[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:m1\r\n\
        DTSTART:20300105T090000Z\r\nDTEND:20300105T100000Z\r\nSUMMARY:Planning\r\n\
        ORGANIZER;CN=Alice:mailto:Alice@Example.test\r\n\
        ATTENDEE;CN=\"Bob; the builder\";PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:bob@example.test\r\n\
        ATTENDEE;CUTYPE=ROOM;SCHEDULE-AGENT=CLIENT:mailto:room@example.test\r\n\
        BEGIN:VALARM\r\nACTION:EMAIL\r\nATTENDEE:mailto:x@example.test\r\nEND:VALARM\r\n\
        END:VEVENT\r\nEND:VCALENDAR\r\n";

    #[test]
    fn reads_people() {
        let itip = Itip::parse(INVITE);
        assert_eq!(itip.organizer().as_deref(), Some("alice@example.test"));
        let people = itip.attendees();
        assert_eq!(people.len(), 2, "alarm recipients are not attendees");
        assert_eq!(people[0].address, "bob@example.test");
        assert_eq!(people[0].partstat, "NEEDS-ACTION");
        assert!(people[0].server_agent);
        assert_eq!(people[1].cutype, "ROOM");
        assert!(!people[1].server_agent);
        assert_eq!(
            itip.utc_time("DTSTART"),
            crate::ical::parse_utc("20300105T090000Z")
        );
    }

    #[test]
    fn edits_keep_the_rest() {
        let mut itip = Itip::parse(INVITE);
        itip.set_attendee_param("bob@example.test", "PARTSTAT", "ACCEPTED");
        itip.set_attendee_param("bob@example.test", "SCHEDULE-STATUS", "1.2");
        assert_eq!(
            itip.partstat_of("bob@example.test").as_deref(),
            Some("ACCEPTED")
        );
        let text = itip.render();
        assert!(text.contains("CN=\"Bob; the builder\""), "{text}");
        assert!(text.contains("ATTENDEE:mailto:x@example.test"));
        itip.strip_param("SCHEDULE-STATUS");
        itip.set_method(Some("REQUEST"));
        itip.set_method(Some("REPLY"));
        let text = itip.render();
        assert_eq!(text.matches("METHOD:").count(), 1);
        assert!(text.starts_with("BEGIN:VCALENDAR\r\nMETHOD:REPLY\r\n"));
        assert_eq!(Itip::parse(&text).method().as_deref(), Some("REPLY"));
        assert_eq!(Itip::parse(INVITE).method(), None);
        // Found by fuzzing: trailing blanks after VCALENDAR.
        let mut odd = Itip::parse(&INVITE.replacen("VCALENDAR\r\n", "VCALENDAR\t\r\n", 1));
        odd.set_method(Some("REQUEST"));
        assert_eq!(
            Itip::parse(&odd.render()).method().as_deref(),
            Some("REQUEST")
        );
        assert!(!text.contains("SCHEDULE-STATUS"));
        itip.keep_only_attendee("bob@example.test");
        assert_eq!(itip.attendees().len(), 1);
        itip.cancel();
        let text = itip.render();
        assert!(text.contains("STATUS:CANCELLED\r\nEND:VEVENT"), "{text}");
        assert!(crate::ical::check_calendar(&text.replace("METHOD:REPLY\r\n", ""), "").is_ok());
    }

    #[test]
    fn group_members_join_once() {
        let mut itip = Itip::parse(INVITE);
        itip.add_group_member("carol@example.test", "team@example.test");
        itip.add_group_member("carol@example.test", "team@example.test");
        itip.add_group_member("bob@example.test", "team@example.test");
        let people = itip.attendees();
        assert_eq!(people.len(), 3, "{people:?}");
        let unfolded = itip.render().replace("\r\n ", "");
        assert!(unfolded.contains("MEMBER=\"mailto:team@example.test\":mailto:carol@example.test"));
    }

    #[test]
    fn long_lines_fold_and_names_are_safe() {
        let mut out = String::new();
        fold(&"x".repeat(200), &mut out);
        assert!(out.split("\r\n").all(|l| l.len() <= 75));
        assert_eq!(object_name("a/b..c"), "a_b..c.ics");
        assert_eq!(object_name(".."), "x...ics");
        assert_eq!(
            address_of("MAILTO:Bob@Example.Test"),
            Some("bob@example.test".into())
        );
        assert_eq!(address_of("urn:x"), None);
        assert_eq!(base64_encode(b"hello"), "aGVsbG8=");
    }

    #[test]
    fn imip_headers_cannot_be_injected() {
        let ical = INVITE.replace("SUMMARY:Planning", "SUMMARY:Hi\\nBcc: evil@x");
        let msg = String::from_utf8(imip_message(
            "alice@example.test",
            "bob@example.test",
            "REQUEST",
            &ical,
            "m@x",
        ))
        .unwrap_or_default();
        let head = msg.split("\r\n\r\n").next().unwrap_or_default();
        assert!(!head.lines().any(|l| l.starts_with("Bcc:")), "{head}");
        assert!(head.contains("method=REQUEST"));
    }
}
