//! iCalendar and vCard as CalDAV and CardDAV need them: validating what
//! clients store, finding when events occur, expanding recurrences for a
//! time range, and matching text filters.
//!
//! Recurrence expansion is always capped by a number of instances, so a
//! rule such as `FREQ=SECONDLY` with no end costs bounded work: at most
//! [`MAX_STORED_INSTANCES`] are indexed when an object is stored and at
//! most [`MAX_QUERY_INSTANCES`] are computed for one object in one query.
//! Instances beyond the query cap are not reported.

use bulwark_store::TimeSpans;
use calcard::common::PartialDateTime;
use calcard::common::timezone::Tz;
use calcard::icalendar::{
    ICalendar, ICalendarComponent, ICalendarComponentType, ICalendarProperty, ICalendarValue,
};
use calcard::{Entry, Parser};
use chrono::{Datelike, NaiveDateTime, TimeZone, Timelike, Utc};

/// Instances indexed per object when it is stored.
pub const MAX_STORED_INSTANCES: usize = 1000;
/// Instances computed per object while answering one query.
pub const MAX_QUERY_INSTANCES: usize = 20_000;
/// Components in one calendar object.
const MAX_COMPONENTS: usize = 2000;
/// The span given to objects without dates (tasks with no DTSTART or DUE
/// match every time range, RFC 4791 section 9.9).
const ALL_TIME: (i64, i64) = (i64::MIN / 4, i64::MAX / 4);

/// Why a calendar object or card was refused: the CalDAV/CardDAV
/// precondition element and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// Namespace of the precondition element.
    pub ns: &'static str,
    /// Its local name.
    pub condition: &'static str,
    /// What is wrong.
    pub message: String,
}

fn invalid(ns: &'static str, condition: &'static str, message: impl Into<String>) -> Invalid {
    Invalid {
        ns,
        condition,
        message: message.into(),
    }
}

/// What the store needs to know about a calendar object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalendarObject {
    /// The UID all its components share.
    pub uid: String,
    /// Its component type (`VEVENT`, `VTODO`, `VJOURNAL`).
    pub component: String,
    /// When it occurs.
    pub spans: TimeSpans,
}

/// Whether the text ends with the end line of `component`; the parser
/// forgives a missing one, but a truncated upload must not be stored.
fn ends_with_end(data: &str, component: &str) -> bool {
    let last = data
        .trim_end()
        .rsplit('\n')
        .next()
        .unwrap_or("")
        .trim()
        .as_bytes();
    // Bytes, not string slices: the line may hold any UTF-8.
    last.len() == 4 + component.len()
        && last[..4].eq_ignore_ascii_case(b"END:")
        && last[4..].eq_ignore_ascii_case(component.as_bytes())
}

/// Whether every BEGIN has its END in order; the parser forgives a
/// missing END, but a damaged upload must not be stored.
fn balanced(data: &str) -> bool {
    let mut open: Vec<String> = Vec::new();
    for (name, value) in properties(data) {
        match name.as_str() {
            "BEGIN" => {
                if open.len() >= 16 {
                    return false;
                }
                open.push(value.trim().to_ascii_uppercase());
            }
            "END" if open.pop().as_deref() != Some(value.trim().to_ascii_uppercase().as_str()) => {
                return false;
            }
            _ => {}
        }
    }
    open.is_empty()
}

fn parse_calendar(data: &str) -> Option<ICalendar> {
    if !ends_with_end(data, "VCALENDAR") || !balanced(data) {
        return None;
    }
    let mut parser = Parser::new(data);
    let Entry::ICalendar(ical) = parser.entry() else {
        return None;
    };
    matches!(parser.entry(), Entry::Eof).then_some(ical)
}

fn is_main(kind: &ICalendarComponentType) -> bool {
    matches!(
        kind,
        ICalendarComponentType::VEvent
            | ICalendarComponentType::VTodo
            | ICalendarComponentType::VJournal
            | ICalendarComponentType::VFreebusy
    )
}

/// What cannot travel in XML cannot be stored: every answer that carries
/// an object is XML (and carries it as CDATA, unescaped).
fn unfit_for_xml(data: &str, ns: &'static str, condition: &'static str) -> Option<Invalid> {
    crate::xml::has_forbidden_chars(data)
        .then(|| invalid(ns, condition, "control characters are not allowed"))
}

/// Checks a calendar object resource (RFC 4791 section 4.1) and indexes it.
pub fn check_calendar(data: &str, accepted: &str) -> Result<CalendarObject, Invalid> {
    use crate::xml::CALDAV;
    if let Some(refused) = unfit_for_xml(data, CALDAV, "valid-calendar-data") {
        return Err(refused);
    }
    let ical = parse_calendar(data).ok_or_else(|| {
        invalid(
            CALDAV,
            "valid-calendar-data",
            "not a single iCalendar object",
        )
    })?;
    if ical.components.len() > MAX_COMPONENTS {
        return Err(invalid(
            CALDAV,
            "valid-calendar-data",
            "too many components",
        ));
    }
    let root = ical
        .components
        .first()
        .filter(|c| c.component_type == ICalendarComponentType::VCalendar)
        .ok_or_else(|| invalid(CALDAV, "valid-calendar-data", "no VCALENDAR"))?;
    if root.property(&ICalendarProperty::Method).is_some() {
        return Err(invalid(
            CALDAV,
            "valid-calendar-object-resource",
            "a stored calendar object carries no METHOD",
        ));
    }
    let mut uid: Option<&str> = None;
    let mut component: Option<&ICalendarComponentType> = None;
    for id in &root.component_ids {
        let Some(c) = ical.components.get(*id as usize) else {
            continue;
        };
        if !is_main(&c.component_type) {
            continue;
        }
        let this_uid = c.uid().ok_or_else(|| {
            invalid(
                CALDAV,
                "valid-calendar-object-resource",
                "a component has no UID",
            )
        })?;
        if uid.is_some_and(|u| u != this_uid) || component.is_some_and(|k| *k != c.component_type) {
            return Err(invalid(
                CALDAV,
                "valid-calendar-object-resource",
                "one object holds one event, task or journal (and its overrides)",
            ));
        }
        uid = Some(this_uid);
        component = Some(&c.component_type);
    }
    let (Some(uid), Some(kind)) = (uid, component) else {
        return Err(invalid(
            CALDAV,
            "valid-calendar-object-resource",
            "no event, task or journal",
        ));
    };
    let name = kind.as_str().to_string();
    if !accepted.is_empty() && !accepted.split(',').any(|c| c.eq_ignore_ascii_case(&name)) {
        return Err(invalid(
            CALDAV,
            "supported-calendar-component",
            format!("this calendar does not take {name}"),
        ));
    }
    let spans = spans_of(&ical, kind)?;
    Ok(CalendarObject {
        uid: uid.to_string(),
        component: name,
        spans,
    })
}

fn partial(dt: NaiveDateTime, with_time: bool) -> PartialDateTime {
    PartialDateTime {
        year: u16::try_from(dt.year()).ok(),
        month: Some(dt.month() as u8),
        day: Some(dt.day() as u8),
        hour: with_time.then_some(dt.hour() as u8),
        minute: with_time.then_some(dt.minute() as u8),
        second: with_time.then_some(dt.second() as u8),
        ..PartialDateTime::default()
    }
}

fn is_utc(p: &PartialDateTime) -> bool {
    p.tz_hour == Some(0) && p.tz_minute.unwrap_or(0) == 0 && !p.tz_minus
}

/// A copy of `ical` prepared for calcard's recurrence expansion:
///
/// * SEQUENCE is dropped, because the expansion matches overrides to their
///   instances only when master and override carry the same one (an
///   override with a newer SEQUENCE would otherwise be listed beside the
///   instance it replaces);
/// * a UTC `UNTIL` of a rule whose DTSTART has a time zone is turned into
///   that zone's wall-clock time, which is how the expansion compares it;
/// * with `stop` (Unix seconds), rules without COUNT end a day after it, so
///   a query never computes instances beyond what it asked about.
///
/// Component numbering is unchanged, so results index the original.
fn for_expansion(ical: &ICalendar, stop: Option<i64>) -> ICalendar {
    let resolver = ical.build_tz_resolver();
    let mut out = ical.clone();
    for component in &mut out.components {
        component
            .entries
            .retain(|e| e.name != ICalendarProperty::Sequence);
        let start = component
            .entries
            .iter()
            .find(|e| e.name == ICalendarProperty::Dtstart)
            .and_then(|e| {
                let value = e.values.first()?.as_partial_date_time()?.clone();
                let zone = e.tz_id().and_then(|id| resolver.resolve(id));
                Some((value, zone))
            });
        let Some((dtstart, zone)) = start else {
            continue;
        };
        let with_time = dtstart.has_time();
        // Wall-clock time of a UTC instant as the rule's DTSTART sees it.
        let wall = |ts: i64| -> Option<NaiveDateTime> {
            let utc = chrono::DateTime::<Utc>::from_timestamp(ts, 0)?.naive_utc();
            Some(match (zone, is_utc(&dtstart)) {
                (Some(tz), false) => tz.from_utc_datetime(&utc).naive_local(),
                _ => utc,
            })
        };
        for entry in &mut component.entries {
            if entry.name != ICalendarProperty::Rrule {
                continue;
            }
            for value in &mut entry.values {
                let ICalendarValue::RecurrenceRule(rule) = value else {
                    continue;
                };
                if zone.is_some()
                    && !is_utc(&dtstart)
                    && let Some(until) = rule.until.as_ref().filter(|u| is_utc(u))
                    && let Some(ts) = until.to_timestamp()
                    && let Some(local) = wall(ts)
                {
                    rule.until = Some(partial(local, true));
                }
                if let Some(stop) = stop
                    && rule.count.is_none()
                    && let Some(cap) = wall(stop.saturating_add(86_400))
                {
                    let later = rule
                        .until
                        .as_ref()
                        .and_then(|u| u.to_date_time())
                        .is_none_or(|u| u.date_time > cap);
                    if later {
                        rule.until = Some(if is_utc(&dtstart) {
                            let mut p = partial(cap, true);
                            p.tz_hour = Some(0);
                            p.tz_minute = Some(0);
                            p
                        } else {
                            partial(cap, with_time)
                        });
                    }
                }
            }
        }
    }
    out
}

/// The instances of `ical`, up to `limit`, as `[start, end)` seconds sorted
/// by start; the flag says the limit was reached.
fn instances(ical: &ICalendar, limit: usize) -> (Vec<(i64, i64)>, bool) {
    instances_until(ical, limit, None)
}

/// Like [`instances`], computing none that start after `stop`.
fn instances_until(ical: &ICalendar, limit: usize, stop: Option<i64>) -> (Vec<(i64, i64)>, bool) {
    let expanded = for_expansion(ical, stop).expand_dates(Tz::UTC, limit);
    let reached = expanded.events.len() >= limit;
    let mut out: Vec<(i64, i64)> = expanded
        .events
        .iter()
        .map(|e| {
            let (start, end) = e.timestamps();
            // A zero-length instance still occupies its start.
            (start, end.max(start + 1))
        })
        .collect();
    out.sort_unstable();
    (out, reached)
}

fn spans_of(ical: &ICalendar, kind: &ICalendarComponentType) -> Result<TimeSpans, Invalid> {
    use calcard::icalendar::dates::CalendarErrorType as E;
    // Dates that do not parse, or a rule that cannot be evaluated, make
    // an object no query could place in time: refuse it now. Only a task
    // or journal may go without a start.
    let problem = ical
        .expand_dates(Tz::UTC, 1)
        .errors
        .into_iter()
        .find(|e| match e.error {
            E::MissingDtStart => *kind == ICalendarComponentType::VEvent,
            _ => true,
        });
    if let Some(problem) = problem {
        return Err(invalid(
            crate::xml::CALDAV,
            "valid-calendar-data",
            problem.error.to_string(),
        ));
    }
    let (mut found, reached) = instances(ical, MAX_STORED_INSTANCES + 1);
    if found.is_empty() {
        return Ok(TimeSpans {
            instances: vec![ALL_TIME],
            expanded_until: None,
        });
    }
    let expanded_until = if reached || found.len() > MAX_STORED_INSTANCES {
        found.truncate(MAX_STORED_INSTANCES);
        found.last().map(|(start, _)| *start)
    } else {
        None
    };
    Ok(TimeSpans {
        instances: found,
        expanded_until,
    })
}

/// Whether the object has an instance overlapping `[start, end)`,
/// computing at most [`MAX_QUERY_INSTANCES`].
pub fn occurs_in(data: &str, start: i64, end: i64) -> bool {
    let Some(ical) = parse_calendar(data) else {
        return false;
    };
    let (found, _) = instances_until(&ical, MAX_QUERY_INSTANCES, Some(end));
    if found.is_empty() {
        return true;
    }
    found.iter().any(|(s, e)| *s < end && *e > start)
}

fn utc(ts: i64) -> String {
    chrono::DateTime::<Utc>::from_timestamp(ts, 0)
        .map(|d| d.format("%Y%m%dT%H%M%SZ").to_string())
        .unwrap_or_default()
}

/// Parses a CalDAV UTC time (`20060104T000000Z`) to Unix seconds.
pub fn parse_utc(text: &str) -> Option<i64> {
    NaiveDateTime::parse_from_str(text.trim(), "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|d| d.and_utc().timestamp())
}

fn write_component(ical: &ICalendar, c: &ICalendarComponent, out: &mut String, depth: usize) {
    if depth > 8 {
        return;
    }
    out.push_str(&format!("BEGIN:{}\r\n", c.component_type.as_str()));
    for entry in &c.entries {
        let _ = entry.write_to(out);
    }
    for id in &c.component_ids {
        if let Some(child) = ical.components.get(*id as usize) {
            write_component(ical, child, out, depth + 1);
        }
    }
    out.push_str(&format!("END:{}\r\n", c.component_type.as_str()));
}

/// The object with its recurrences in `[start, end)` written out as
/// separate components in UTC, each with its RECURRENCE-ID (RFC 4791
/// section 9.6.5); objects without recurrence come back unchanged.
pub fn expand(data: &str, start: i64, end: i64) -> String {
    let Some(ical) = parse_calendar(data) else {
        return data.to_string();
    };
    let recurring = ical
        .components
        .iter()
        .any(|c| is_main(&c.component_type) && c.is_recurrent_or_override());
    if !recurring {
        return data.to_string();
    }
    let expanded = for_expansion(&ical, Some(end)).expand_dates(Tz::UTC, MAX_QUERY_INSTANCES);
    let resolver = ical.build_tz_resolver();
    let mut events: Vec<_> = expanded
        .events
        .iter()
        .filter_map(|e| {
            let (s, en) = e.timestamps();
            (s < end && en.max(s + 1) > start).then_some((s, en, e.comp_id))
        })
        .collect();
    events.sort_unstable();
    let mut out =
        String::from("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Bulwark//CalDAV//EN\r\n");
    for (s, e, comp_id) in events {
        let Some(c) = ical.components.get(comp_id as usize) else {
            continue;
        };
        let kind = c.component_type.as_str();
        out.push_str(&format!("BEGIN:{kind}\r\n"));
        for entry in &c.entries {
            let replaced = matches!(
                entry.name,
                ICalendarProperty::Dtstart
                    | ICalendarProperty::Dtend
                    | ICalendarProperty::Duration
                    | ICalendarProperty::Due
                    | ICalendarProperty::Rrule
                    | ICalendarProperty::Rdate
                    | ICalendarProperty::Exdate
                    | ICalendarProperty::Exrule
                    | ICalendarProperty::RecurrenceId
            );
            if !replaced {
                let _ = entry.write_to(&mut out);
            }
        }
        let recurrence_id = match c.property(&ICalendarProperty::RecurrenceId) {
            // An override keeps the instance it replaces, in UTC when we can.
            Some(rid) => rid
                .values
                .first()
                .and_then(|v| v.as_partial_date_time())
                .and_then(|p| {
                    let zone = rid.tz_id().and_then(|id| resolver.resolve(id));
                    match zone {
                        Some(tz) if p.tz_hour.is_none() => {
                            p.to_date_time_with_tz(tz).map(|d| d.timestamp())
                        }
                        _ => p.to_timestamp(),
                    }
                })
                .unwrap_or(s),
            None => s,
        };
        out.push_str(&format!(
            "DTSTART:{}\r\nDTEND:{}\r\nRECURRENCE-ID:{}\r\n",
            utc(s),
            utc(e.max(s)),
            utc(recurrence_id)
        ));
        for id in &c.component_ids {
            if let Some(child) = ical.components.get(*id as usize) {
                write_component(&ical, child, &mut out, 1);
            }
        }
        out.push_str(&format!("END:{kind}\r\n"));
    }
    out.push_str("END:VCALENDAR\r\n");
    out
}

/// The busy time of events in `[start, end)`, merged and clipped
/// (RFC 4791 section 7.10): transparent and cancelled events do not count.
pub fn busy_periods<'a>(
    objects: impl Iterator<Item = &'a str>,
    start: i64,
    end: i64,
) -> Vec<(i64, i64)> {
    let mut busy = Vec::new();
    for data in objects {
        let free = properties(data).any(|(name, value)| {
            (name == "TRANSP" && value.eq_ignore_ascii_case("TRANSPARENT"))
                || (name == "STATUS" && value.eq_ignore_ascii_case("CANCELLED"))
        });
        if free || !data.contains("BEGIN:VEVENT") {
            continue;
        }
        let Some(ical) = parse_calendar(data) else {
            continue;
        };
        let (found, _) = instances_until(&ical, MAX_QUERY_INSTANCES, Some(end));
        busy.extend(
            found
                .into_iter()
                .filter(|(s, e)| *s < end && *e > start)
                .map(|(s, e)| (s.max(start), e.min(end))),
        );
    }
    busy.sort_unstable();
    let mut merged: Vec<(i64, i64)> = Vec::with_capacity(busy.len());
    for (s, e) in busy {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    merged
}

/// A VFREEBUSY answer for `owner` over `[start, end)`.
pub fn freebusy_calendar(owner: &str, start: i64, end: i64, busy: &[(i64, i64)]) -> String {
    let mut out = format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Bulwark//CalDAV//EN\r\nBEGIN:VFREEBUSY\r\n\
         DTSTAMP:{}\r\nDTSTART:{}\r\nDTEND:{}\r\nORGANIZER:mailto:{owner}\r\n",
        utc(chrono::Utc::now().timestamp()),
        utc(start),
        utc(end)
    );
    for (s, e) in busy {
        out.push_str(&format!("FREEBUSY;FBTYPE=BUSY:{}/{}\r\n", utc(*s), utc(*e)));
    }
    out.push_str("END:VFREEBUSY\r\nEND:VCALENDAR\r\n");
    out
}

/// Checks a vCard (RFC 6352 section 5.1); returns its UID, or `fallback`
/// when it has none (vCard 3 makes UID optional).
pub fn check_card(data: &str, fallback: &str) -> Result<String, Invalid> {
    use crate::xml::CARDDAV;
    if let Some(refused) = unfit_for_xml(data, CARDDAV, "valid-address-data") {
        return Err(refused);
    }
    if !ends_with_end(data, "VCARD") || !balanced(data) {
        return Err(invalid(
            CARDDAV,
            "valid-address-data",
            "not a complete vCard",
        ));
    }
    let mut parser = Parser::new(data);
    let Entry::VCard(card) = parser.entry() else {
        return Err(invalid(CARDDAV, "valid-address-data", "not a vCard"));
    };
    if !matches!(parser.entry(), Entry::Eof) {
        return Err(invalid(
            CARDDAV,
            "valid-address-data",
            "one vCard per resource",
        ));
    }
    Ok(card.uid().unwrap_or(fallback).to_string())
}

/// Unfolded content lines as (property name without group, value).
pub fn properties(data: &str) -> impl Iterator<Item = (String, String)> + '_ {
    let mut lines: Vec<String> = Vec::new();
    for raw in data.split('\n') {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if let Some(rest) = raw.strip_prefix([' ', '\t']) {
            if let Some(last) = lines.last_mut() {
                last.push_str(rest);
            }
        } else if !raw.is_empty() {
            lines.push(raw.to_string());
        }
    }
    lines.into_iter().filter_map(|line| {
        let colon = line.find(':')?;
        let head = &line[..colon];
        let name = head.split(';').next()?;
        let name = name.rsplit('.').next()?.to_ascii_uppercase();
        Some((name, line[colon + 1..].to_string()))
    })
}

/// Whether some property `name` contains `needle`, ignoring case.
pub fn property_contains(data: &str, name: &str, needle: &str, match_type: &str) -> bool {
    let needle = needle.to_lowercase();
    properties(data).any(|(n, v)| {
        if !n.eq_ignore_ascii_case(name) {
            return false;
        }
        let v = v.to_lowercase();
        match match_type {
            "equals" => v == needle,
            "starts-with" => v.starts_with(&needle),
            "ends-with" => v.ends_with(&needle),
            _ => v.contains(&needle),
        }
    })
}

/// Whether the object has a property `name` at all.
pub fn has_property(data: &str, name: &str) -> bool {
    properties(data).any(|(n, _)| n.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(extra: &str) -> String {
        format!(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\nBEGIN:VEVENT\r\nUID:e1\r\n\
             DTSTAMP:20240101T000000Z\r\nDTSTART:20240101T100000Z\r\nDTEND:20240101T110000Z\r\n\
             SUMMARY:Standup\r\n{extra}END:VEVENT\r\nEND:VCALENDAR\r\n"
        )
    }

    #[test]
    fn single_event_spans() {
        let obj = check_calendar(&event(""), "VEVENT,VTODO").expect("valid");
        assert_eq!(obj.uid, "e1");
        assert_eq!(obj.component, "VEVENT");
        let start = parse_utc("20240101T100000Z").expect("time");
        assert_eq!(obj.spans.instances, vec![(start, start + 3600)]);
        assert_eq!(obj.spans.expanded_until, None);
    }

    #[test]
    fn recurrence_is_capped_and_expandable() {
        let weekly = event("RRULE:FREQ=WEEKLY;COUNT=10\r\n");
        let obj = check_calendar(&weekly, "").expect("valid");
        assert_eq!(obj.spans.instances.len(), 10);
        assert_eq!(obj.spans.expanded_until, None);
        let jan = (
            parse_utc("20240101T000000Z").unwrap_or(0),
            parse_utc("20240201T000000Z").unwrap_or(0),
        );
        let expanded = expand(&weekly, jan.0, jan.1);
        assert_eq!(expanded.matches("BEGIN:VEVENT").count(), 5, "{expanded}");
        assert!(expanded.contains("RECURRENCE-ID:20240108T100000Z"));
        assert!(!expanded.contains("RRULE"));

        let bomb = event("RRULE:FREQ=SECONDLY\r\n");
        let obj = check_calendar(&bomb, "").expect("valid");
        assert_eq!(obj.spans.instances.len(), MAX_STORED_INSTANCES);
        assert!(obj.spans.expanded_until.is_some());
        // A year later is beyond the query cap: bounded work, no match.
        let later = parse_utc("20250101T000000Z").unwrap_or(0);
        assert!(!occurs_in(&bomb, later, later + 86400));
        assert!(occurs_in(&bomb, jan.0, jan.1));
    }

    fn berlin(rrule: &str, extra: &str) -> String {
        format!(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\nBEGIN:VEVENT\r\nUID:b1\r\n\
             DTSTAMP:19960101T000000Z\r\nDTSTART;TZID=Europe/Berlin:19960601T100000\r\n\
             DURATION:PT1H\r\n{rrule}SEQUENCE:0\r\nSUMMARY:Daily\r\nEND:VEVENT\r\n{extra}END:VCALENDAR\r\n"
        )
    }

    #[test]
    fn utc_until_with_a_zoned_start_keeps_the_last_instance() {
        let data = berlin("RRULE:FREQ=DAILY;UNTIL=19960603T080000Z\r\n", "");
        let obj = check_calendar(&data, "").expect("valid");
        assert_eq!(obj.spans.instances.len(), 3, "{:?}", obj.spans.instances);
        let third = parse_utc("19960603T080000Z").unwrap_or(0);
        assert!(occurs_in(&data, third, third + 60));
    }

    #[test]
    fn overrides_replace_their_instance_whatever_their_sequence() {
        let over = "BEGIN:VEVENT\r\nUID:b1\r\nDTSTAMP:19960101T000000Z\r\n\
            RECURRENCE-ID;TZID=Europe/Berlin:19960602T100000\r\n\
            DTSTART;TZID=Europe/Berlin:19960602T120000\r\nDURATION:PT1H\r\nSEQUENCE:3\r\n\
            SUMMARY:Moved\r\nEND:VEVENT\r\n";
        let data = berlin("RRULE:FREQ=DAILY;COUNT=3\r\n", over);
        let from = parse_utc("19960601T000000Z").unwrap_or(0);
        let expanded = expand(&data, from, from + 5 * 86_400);
        assert_eq!(expanded.matches("BEGIN:VEVENT").count(), 3, "{expanded}");
        // The override's RECURRENCE-ID is its Berlin time in UTC.
        assert_eq!(
            expanded.matches("RECURRENCE-ID:19960602T080000Z").count(),
            1,
            "{expanded}"
        );
        assert!(expanded.contains("DTSTART:19960602T100000Z"), "{expanded}");
    }

    #[test]
    fn open_ended_rules_expand_only_up_to_the_range() {
        let weekly = event("RRULE:FREQ=WEEKLY\r\n");
        let jan = parse_utc("20240101T000000Z").unwrap_or(0);
        let expanded = expand(&weekly, jan, jan + 31 * 86_400);
        assert_eq!(expanded.matches("BEGIN:VEVENT").count(), 5, "{expanded}");
        let ical = parse_calendar(&weekly).expect("parses");
        let (found, _) = instances_until(&ical, MAX_QUERY_INSTANCES, Some(jan + 31 * 86_400));
        assert!(found.len() <= 6, "{}", found.len());
    }

    #[test]
    fn bad_objects_are_refused() {
        for (data, condition) in [
            ("garbage", "valid-calendar-data"),
            (
                "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nEND:VCALENDAR\r\n",
                "valid-calendar-object-resource",
            ),
            (
                &*event("").replace("VERSION:2.0", "VERSION:2.0\r\nMETHOD:REQUEST"),
                "valid-calendar-object-resource",
            ),
            (
                &*event("").replace("UID:e1\r\n", ""),
                "valid-calendar-object-resource",
            ),
        ] {
            let refused = check_calendar(data, "").expect_err(data);
            assert_eq!(refused.condition, condition, "{data}");
        }
        let todo = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VTODO\r\nUID:t\r\nSUMMARY:x\r\nEND:VTODO\r\nEND:VCALENDAR\r\n";
        assert_eq!(
            check_calendar(todo, "VEVENT")
                .expect_err("component")
                .condition,
            "supported-calendar-component"
        );
        let undated = check_calendar(todo, "VTODO").expect("valid");
        assert_eq!(undated.spans.instances, vec![ALL_TIME]);
    }

    #[test]
    fn cards_and_text() {
        let card = "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Alice Example\r\nitem1.EMAIL:alice@example.com\r\nUID:c1\r\nEND:VCARD\r\n";
        assert_eq!(check_card(card, "x").expect("card"), "c1");
        assert!(check_card("BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n", "x").is_err());
        assert!(check_card(&card[..card.len() / 2], "x").is_err());
        assert!(check_card(&card.replace("FN:Alice", "FN:Al\u{1}ice"), "x").is_err());
        assert!(check_calendar(&event("").replace("Standup", "Stand\u{0}up"), "").is_err());
        // Found by fuzzing: a multi-byte character where END: would be.
        assert!(check_calendar("BEGIN:VCALENDAR\r\nENDɩCALENDAR\r\n", "").is_err());
        assert!(check_card("BEGIN:VCARD\r\nEND:VCARɩ\r\n", "x").is_err());
        assert!(check_calendar(&event("")[..100], "").is_err());
        assert!(property_contains(card, "EMAIL", "ALICE@", "contains"));
        assert!(property_contains(card, "fn", "alice example", "equals"));
        assert!(!property_contains(card, "FN", "bob", "contains"));
        assert!(has_property(card, "UID") && !has_property(card, "TEL"));
    }
}
