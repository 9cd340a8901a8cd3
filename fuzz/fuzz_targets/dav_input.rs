//! Everything a DAV client sends that the server parses, over arbitrary
//! bytes: request paths, XML bodies, iCalendar and vCard data, iTIP edits
//! and time-range expansion. Never panics; accepted paths round-trip
//! through their canonical href; expansion stays within its caps.
#![no_main]

use bulwark_dav::ical;
use bulwark_dav::itip::Itip;
use bulwark_dav::path::Resource;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = bulwark_dav::xml::parse(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(resource) = Resource::parse(text) {
        let href = resource.href();
        assert_eq!(Resource::parse(&href), Some(resource), "{href:?} does not round-trip");
    }
    let _ = ical::check_card(text, "fallback.vcf");
    if let Ok(object) = ical::check_calendar(text, "") {
        assert!(object.spans.instances.len() <= ical::MAX_STORED_INSTANCES);
        let year = 365 * 86_400;
        let expanded = ical::expand(text, 0, 80 * year);
        assert!(expanded.matches("BEGIN:").count() <= ical::MAX_QUERY_INSTANCES * 4 + 16);
        let _ = ical::occurs_in(text, 0, 80 * year);
        let _ = ical::busy_periods(std::iter::once(text), 0, 80 * year);
        let mut itip = Itip::parse(text);
        let people = itip.attendees();
        if let Some(first) = people.first() {
            itip.set_attendee_param(&first.address, "PARTSTAT", "ACCEPTED");
            assert_eq!(itip.partstat_of(&first.address).as_deref(), Some("ACCEPTED"));
            itip.keep_only_attendee(&first.address);
        }
        itip.set_method(Some("REQUEST"));
        itip.cancel();
        assert_eq!(Itip::parse(&itip.render()).method().as_deref(), Some("REQUEST"));
    }
});
