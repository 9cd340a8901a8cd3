"""CalDAV, and the CardDAV basics, over the quickstart's HTTPS listener
(8443).

Two kinds of client:
* the `caldav` library (python-caldav), for what a calendar app does:
  discover the principal, list and create calendars, add, change and delete
  events, search a time range with recurrences, keep tasks;
* raw http.client requests wherever the server's own answer is under test:
  recurrence expansion done by the server (the library may expand on its
  own side), ETag preconditions, multiget, PROPPATCH, sync-collection,
  CardDAV queries, and isolation between alice and bob whatever the
  spelling of the path.

URLs are discovered (well-known → principal → homes → collections) rather
than written in, except in the one test of Bulwark's documented layout."""

import base64
import http.client
import posixpath
import ssl
import uuid
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from urllib.parse import unquote, urlsplit

import caldav
import icalendar

HOST = "127.0.0.1"
PORT = 8443
# The demo certificate names "localhost": the libraries, which check host
# names, reach the same listener by that name.
BASE_URL = "https://localhost:8443"
ALICE, BOB = "alice@example.test", "bob@example.test"
NS = {"d": "DAV:", "c": "urn:ietf:params:xml:ns:caldav",
      "r": "urn:ietf:params:xml:ns:carddav", "a": "http://apple.com/ns/ical/"}
XMLNS = " ".join(f'xmlns:{prefix}="{uri}"' for prefix, uri in NS.items())
UTC = timezone.utc


# ---------------------------------------------------------------- raw HTTP

def connect(quickstart):
    ctx = ssl.create_default_context(cafile=str(quickstart.cert))
    ctx.check_hostname = False  # the demo certificate names "localhost"
    return http.client.HTTPSConnection(HOST, PORT, context=ctx, timeout=30)


def dav(quickstart, user, method, path, body=None, headers=None):
    """One request as `user` (Basic auth); returns (response, body bytes)."""
    password = quickstart.credentials()[user]
    all_headers = {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    if isinstance(body, str):
        body = body.encode()
    if body is not None:
        all_headers["Content-Type"] = "application/xml; charset=utf-8"
    all_headers.update(headers or {})
    conn = connect(quickstart)
    try:
        conn.request(method, path, body=body, headers=all_headers)
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


def q(name):
    """'d:getetag' → '{DAV:}getetag'."""
    prefix, local = name.split(":")
    return f"{{{NS[prefix]}}}{local}"


def norm(href):
    """The decoded path of an href, which a server may send absolute or encoded."""
    return unquote(urlsplit(href.strip()).path)


def multistatus(data):
    """{decoded href: (status of the whole response or None, {prop: element} found with 200)}."""
    found = {}
    for response in ET.fromstring(data).findall("d:response", NS):
        status = response.findtext("d:status", namespaces=NS)
        props = {}
        for propstat in response.findall("d:propstat", NS):
            if propstat.findtext("d:status", namespaces=NS).split()[1] == "200":
                props.update((prop.tag, prop) for prop in propstat.find("d:prop", NS))
        code = int(status.split()[1]) if status else None
        found[norm(response.findtext("d:href", namespaces=NS))] = (code, props)
    return found


def propfind(quickstart, user, path, props, depth="0"):
    body = (f'<?xml version="1.0" encoding="utf-8"?><d:propfind {XMLNS}><d:prop>'
            + "".join(f"<{p}/>" for p in props) + "</d:prop></d:propfind>")
    response, data = dav(quickstart, user, "PROPFIND", path, body, {"Depth": depth})
    assert response.status == 207, (path, response.status, data)
    return multistatus(data)


def href_prop(props, name):
    element = props[q(name)]
    return urlsplit(element.findtext("d:href", namespaces=NS).strip()).path


def discover(quickstart, user):
    """well-known → context path → current-user-principal → homes."""
    response, _ = dav(quickstart, user, "PROPFIND", "/.well-known/caldav",
                      f'<d:propfind {XMLNS}><d:prop><d:current-user-principal/></d:prop></d:propfind>',
                      {"Depth": "0"})
    assert response.status in (301, 302, 307, 308), response.status
    context = urlsplit(response.getheader("Location")).path
    (_, props), = propfind(quickstart, user, context, ["d:current-user-principal"]).values()
    principal = href_prop(props, "d:current-user-principal")
    (_, props), = propfind(quickstart, user, principal,
                           ["c:calendar-home-set", "r:addressbook-home-set",
                            "c:calendar-user-address-set"]).values()
    addresses = [e.text.strip() for e in props[q("c:calendar-user-address-set")].findall("d:href", NS)]
    return {"context": context, "principal": principal,
            "calendars": href_prop(props, "c:calendar-home-set"),
            "addressbooks": href_prop(props, "r:addressbook-home-set"), "addresses": addresses}


def collections(quickstart, user, home, kind):
    """Decoded paths of the collections of `kind` (c:calendar, r:addressbook) in a home."""
    found = propfind(quickstart, user, home, ["d:resourcetype", "d:displayname"], depth="1")
    return {href: props for href, (_, props) in found.items()
            if q("d:resourcetype") in props and props[q("d:resourcetype")].find(q(kind)) is not None}


def default_collection(quickstart, user, kind):
    """The account's default calendar or address book: the one named
    "default", else the only one in its home."""
    homes = discover(quickstart, user)
    home = homes["calendars"] if kind == "c:calendar" else homes["addressbooks"]
    found = collections(quickstart, user, home, kind)
    named = [href for href in found if href.rstrip("/").endswith("/default")]
    if named:
        return named[0]
    assert len(found) == 1, found
    return next(iter(found))


def report(quickstart, user, path, body, depth="1"):
    response, data = dav(quickstart, user, "REPORT", path, body, {"Depth": depth})
    assert response.status == 207, (path, response.status, data)
    return data


def put(quickstart, user, path, text, headers=None):
    content_type = "text/vcard; charset=utf-8" if path.endswith(".vcf") else "text/calendar; charset=utf-8"
    return dav(quickstart, user, "PUT", path, text.replace("\n", "\r\n"),
               {"Content-Type": content_type, **(headers or {})})


def get(quickstart, user, path):
    return dav(quickstart, user, "GET", path)


def member_names(quickstart, user, collection):
    """Names of the resources directly inside a collection."""
    found = propfind(quickstart, user, collection, ["d:getetag"], depth="1")
    return {posixpath.basename(href) for href in found if href.rstrip("/") != norm(collection).rstrip("/")}


# ---------------------------------------------------------------- content

def vevent(uid, start, end, summary="e2e event", extra=()):
    return "\n".join(["BEGIN:VEVENT", f"UID:{uid}", "DTSTAMP:20300101T000000Z",
                      f"DTSTART:{start}", f"DTEND:{end}", f"SUMMARY:{summary}", *extra, "END:VEVENT"])


def vcalendar(*components):
    return "\n".join(["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//bulwark e2e//EN",
                      *components, "END:VCALENDAR", ""])


def vcard(uid, name, email):
    return "\n".join(["BEGIN:VCARD", "VERSION:3.0", f"UID:{uid}", f"FN:{name}",
                      f"N:{name.split()[-1]};{name.split()[0]};;;", f"EMAIL;TYPE=INTERNET:{email}",
                      "END:VCARD", ""])


def utc(text):
    return datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def as_utc(value):
    return value.astimezone(UTC) if isinstance(value, datetime) else value


# The recurring fixtures of the time-range tests: a weekly meeting of ten
# (Mondays from 2030-01-07, its 2030-02-11 instance moved to 14:00), a daily
# stand-up with no end (2030-02-05 cancelled), and a one-off in 2031.
WEEKLY = vcalendar(
    vevent("weekly-e2e", "20300107T100000Z", "20300107T110000Z", "Weekly",
           ["RRULE:FREQ=WEEKLY;COUNT=10"]),
    vevent("weekly-e2e", "20300211T140000Z", "20300211T150000Z", "Weekly, moved",
           ["RECURRENCE-ID:20300211T100000Z"]))
DAILY = vcalendar(vevent("daily-e2e", "20300101T080000Z", "20300101T083000Z", "Daily",
                         ["RRULE:FREQ=DAILY", "EXDATE:20300205T080000Z"]))
ONE_OFF = vcalendar(vevent("oneoff-e2e", "20310101T120000Z", "20310101T130000Z", "One-off"))
FEB_1, FEB_15 = "20300201T000000Z", "20300215T000000Z"
# (UID, RECURRENCE-ID, DTSTART) of every instance between FEB_1 and FEB_15.
FEB_INSTANCES = (
    {("weekly-e2e", utc("20300204T100000Z"), utc("20300204T100000Z")),
     ("weekly-e2e", utc("20300211T100000Z"), utc("20300211T140000Z"))}
    | {("daily-e2e", utc(f"203002{d:02}T080000Z"), utc(f"203002{d:02}T080000Z"))
       for d in range(1, 15) if d != 5})


def put_recurring_fixtures(quickstart, calendar):
    for name, text in [("weekly.ics", WEEKLY), ("daily.ics", DAILY), ("oneoff.ics", ONE_OFF)]:
        response, data = put(quickstart, ALICE, calendar + name, text)
        assert response.status in (201, 204), (name, response.status, data)


def calendar_query(start, end, expand=False):
    data = (f'<c:calendar-data><c:expand start="{start}" end="{end}"/></c:calendar-data>'
            if expand else "<c:calendar-data/>")
    return (f'<?xml version="1.0" encoding="utf-8"?><c:calendar-query {XMLNS}>'
            f"<d:prop><d:getetag/>{data}</d:prop>"
            '<c:filter><c:comp-filter name="VCALENDAR"><c:comp-filter name="VEVENT">'
            f'<c:time-range start="{start}" end="{end}"/>'
            "</c:comp-filter></c:comp-filter></c:filter></c:calendar-query>")


# ---------------------------------------------------------------- library

def library_client(quickstart, user):
    """python-caldav pointed at the DAV context the well-known URI gives."""
    context = discover(quickstart, user)["context"]
    return caldav.DAVClient(url=BASE_URL + context, username=user,
                            password=quickstart.credentials()[user],
                            ssl_verify_cert=str(quickstart.cert), timeout=30,
                            enable_rfc6764=False)


def library_calendar(client, path):
    """The library's Calendar object for a discovered calendar path."""
    for calendar in client.principal().calendars():
        if norm(str(calendar.url)) == norm(path):
            return calendar
    raise AssertionError(f"{path} not among the principal's calendars")


# ---------------------------------------------------------------- discovery

def test_discovery_from_well_known_to_homes(quickstart):
    """Both well-known URIs redirect to the DAV context; from there
    current-user-principal leads to a principal with both homes, each
    holding the account's default collection."""
    for well_known in ["/.well-known/caldav", "/.well-known/carddav"]:
        for method in ["GET", "PROPFIND"]:
            response, _ = dav(quickstart, ALICE, method, well_known, headers={"Depth": "0"})
            assert response.status == 301, (well_known, method, response.status)
            assert response.getheader("Location"), well_known
    homes = discover(quickstart, ALICE)
    (_, props), = propfind(quickstart, ALICE, homes["principal"], ["d:resourcetype"]).values()
    assert props[q("d:resourcetype")].find(q("d:principal")) is not None
    assert collections(quickstart, ALICE, homes["calendars"], "c:calendar")
    assert collections(quickstart, ALICE, homes["addressbooks"], "r:addressbook")
    response, _ = dav(quickstart, ALICE, "OPTIONS", homes["calendars"])
    assert response.status in (200, 204)
    classes = {c.strip() for c in response.getheader("DAV", "").split(",")}
    assert {"1", "calendar-access", "addressbook"} <= classes, classes


def test_bulwark_url_layout(quickstart):
    """Bulwark's documented layout: /dav/ context, principal and homes
    named by the address, mailto: calendar user address, "default"
    calendar and address book present on first use."""
    homes = discover(quickstart, ALICE)
    assert homes["context"] == "/dav/"
    assert norm(homes["principal"]) == f"/dav/principals/{ALICE}/"
    assert norm(homes["calendars"]) == f"/dav/calendars/{ALICE}/"
    assert norm(homes["addressbooks"]) == f"/dav/addressbooks/{ALICE}/"
    assert f"mailto:{ALICE}" in homes["addresses"]
    assert f"/dav/calendars/{ALICE}/default/" in collections(quickstart, ALICE, homes["calendars"], "c:calendar")
    assert f"/dav/addressbooks/{ALICE}/default/" in collections(
        quickstart, ALICE, homes["addressbooks"], "r:addressbook")
    (_, props), = propfind(quickstart, ALICE, "/dav/", ["d:current-user-principal"]).values()
    assert norm(href_prop(props, "d:current-user-principal")) == f"/dav/principals/{ALICE}/"


def test_library_finds_principal_and_default_calendar(quickstart):
    """python-caldav, given the DAV context URL, finds alice's principal
    and lists her default calendar."""
    default = default_collection(quickstart, ALICE, "c:calendar")
    with library_client(quickstart, ALICE) as client:
        principal = client.principal()
        assert norm(str(principal.url)) == norm(discover(quickstart, ALICE)["principal"])
        assert norm(default) in {norm(str(c.url)) for c in principal.calendars()}


# ---------------------------------------------------------------- events

def test_library_calendar_and_event_lifecycle(quickstart):
    """MKCALENDAR through the library, then one event created, changed and
    deleted; every step is checked with a raw GET too."""
    with library_client(quickstart, ALICE) as client:
        principal = client.principal()
        calendar = principal.make_calendar(name="Work e2e", cal_id="work-e2e")
        listed = {norm(str(c.url)): c for c in principal.calendars()}
        assert norm(str(calendar.url)) in listed
        assert listed[norm(str(calendar.url))].get_display_name() == "Work e2e"

        event = calendar.add_event(vcalendar(vevent(
            "lifecycle-e2e", "20300301T090000Z", "20300301T100000Z", "Planning")))
        path = urlsplit(str(event.url)).path
        assert norm(path).startswith(norm(str(calendar.url)))
        response, data = get(quickstart, ALICE, path)
        assert response.status == 200 and b"SUMMARY:Planning" in data
        assert response.getheader("Content-Type").startswith("text/calendar")
        assert [norm(str(e.url)) for e in calendar.events()] == [norm(path)]

        event.load()
        event.icalendar_component["SUMMARY"] = "Planning, moved"
        event.save()
        again = calendar.event_by_url(event.url)
        again.load()
        assert str(again.icalendar_component["SUMMARY"]) == "Planning, moved"
        response, data = get(quickstart, ALICE, path)
        assert b"SUMMARY:Planning, moved" in data.replace(b"\\,", b",")

        event.delete()
        assert calendar.events() == []
        response, _ = get(quickstart, ALICE, path)
        assert response.status == 404


def test_library_time_range_search_with_recurrences(quickstart):
    """A time-range search returns the recurring events whose instances
    fall in range, and their instances are the right ones, whether
    expanded by the library or asked of the server; a weekly series
    past its COUNT no longer matches."""
    default = default_collection(quickstart, ALICE, "c:calendar")
    put_recurring_fixtures(quickstart, default)
    with library_client(quickstart, ALICE) as client:
        calendar = library_calendar(client, default)
        for server_expand in [False, True]:
            found = calendar.search(start=utc(FEB_1), end=utc(FEB_15), event=True,
                                    expand=True, server_expand=server_expand)
            instances = {(str(e.icalendar_component["UID"]),
                          as_utc(e.icalendar_component["DTSTART"].dt)) for e in found}
            assert instances == {(uid, start) for uid, _, start in FEB_INSTANCES}, server_expand
        found = calendar.search(start=utc("20300401T000000Z"), end=utc("20300403T000000Z"), event=True)
        assert {str(e.icalendar_component["UID"]) for e in found} == {"daily-e2e"}


def test_calendar_query_time_range_matches_recurrence_sets(quickstart):
    """Raw calendar-query without expand: the server returns whole
    resources (master with RRULE) for series with an instance in range,
    nothing for series that ended or events outside it."""
    default = default_collection(quickstart, ALICE, "c:calendar")
    put_recurring_fixtures(quickstart, default)
    found = multistatus(report(quickstart, ALICE, default, calendar_query(FEB_1, FEB_15)))
    assert {posixpath.basename(h) for h in found} == {"weekly.ics", "daily.ics"}
    for href, (_, props) in found.items():
        assert "RRULE:" in props[q("c:calendar-data")].text, href
        assert props[q("d:getetag")].text
    found = multistatus(report(quickstart, ALICE, default,
                               calendar_query("20300401T000000Z", "20300403T000000Z")))
    assert {posixpath.basename(h) for h in found} == {"daily.ics"}
    found = multistatus(report(quickstart, ALICE, default,
                               calendar_query("20301231T000000Z", "20310102T000000Z")))
    assert {posixpath.basename(h) for h in found} == {"daily.ics", "oneoff.ics"}


def test_server_expands_recurrences_in_calendar_query(quickstart):
    """calendar-query with <C:expand>: the server itself returns one VEVENT
    per instance in range, each with a RECURRENCE-ID and no RRULE/EXDATE,
    honouring the moved instance and the cancelled one."""
    default = default_collection(quickstart, ALICE, "c:calendar")
    put_recurring_fixtures(quickstart, default)
    found = multistatus(report(quickstart, ALICE, default, calendar_query(FEB_1, FEB_15, expand=True)))
    assert {posixpath.basename(h) for h in found} == {"weekly.ics", "daily.ics"}
    instances = set()
    for href, (_, props) in found.items():
        text = props[q("c:calendar-data")].text
        assert "RRULE" not in text and "EXDATE" not in text, text
        for component in icalendar.Calendar.from_ical(text).walk("VEVENT"):
            assert "RECURRENCE-ID" in component, (href, component.to_ical())
            instances.add((str(component["UID"]), as_utc(component["RECURRENCE-ID"].dt),
                           as_utc(component["DTSTART"].dt)))
    assert instances == FEB_INSTANCES


def test_calendar_multiget_returns_requested_objects(quickstart):
    """calendar-multiget returns each requested object's data and ETag as
    GET gives them, and 404 for an href that does not exist."""
    default = default_collection(quickstart, ALICE, "c:calendar")
    put_recurring_fixtures(quickstart, default)
    hrefs = [default + name for name in ["weekly.ics", "oneoff.ics", "missing.ics"]]
    body = (f'<?xml version="1.0" encoding="utf-8"?><c:calendar-multiget {XMLNS}>'
            "<d:prop><d:getetag/><c:calendar-data/></d:prop>"
            + "".join(f"<d:href>{h}</d:href>" for h in hrefs) + "</c:calendar-multiget>")
    found = multistatus(report(quickstart, ALICE, default, body))
    assert set(found) == {norm(h) for h in hrefs}
    for href in hrefs[:2]:
        response, data = get(quickstart, ALICE, href)
        _, props = found[norm(href)]
        assert props[q("d:getetag")].text == response.getheader("ETag")
        got = icalendar.Calendar.from_ical(props[q("c:calendar-data")].text)
        assert got == icalendar.Calendar.from_ical(data)
    status, props = found[norm(hrefs[2])]
    assert status == 404 and q("c:calendar-data") not in props


def test_etag_preconditions(quickstart):
    """If-None-Match: * refuses to overwrite, If-Match with a stale ETag
    refuses to change or delete (412), and the object is untouched by a
    refused request."""
    default = default_collection(quickstart, ALICE, "c:calendar")
    path = default + "etag-e2e.ics"
    first = vcalendar(vevent("etag-e2e", "20300401T090000Z", "20300401T100000Z", "First"))
    response, _ = put(quickstart, ALICE, path, first, {"If-None-Match": "*"})
    assert response.status == 201
    put_etag = response.getheader("ETag")
    response, data = get(quickstart, ALICE, path)
    etag = response.getheader("ETag")
    assert etag and (put_etag is None or put_etag == etag)

    second = first.replace("SUMMARY:First", "SUMMARY:Second")
    response, _ = put(quickstart, ALICE, path, second, {"If-None-Match": "*"})
    assert response.status == 412
    response, _ = put(quickstart, ALICE, path, second, {"If-Match": '"not-the-etag"'})
    assert response.status == 412
    response, _ = put(quickstart, ALICE, default + "absent-e2e.ics", second, {"If-Match": etag})
    assert response.status == 412
    response, now = get(quickstart, ALICE, path)
    assert now == data and response.getheader("ETag") == etag
    assert get(quickstart, ALICE, default + "absent-e2e.ics")[0].status == 404

    response, _ = put(quickstart, ALICE, path, second, {"If-Match": etag})
    assert response.status in (200, 204)
    response, data = get(quickstart, ALICE, path)
    new_etag = response.getheader("ETag")
    assert b"SUMMARY:Second" in data and new_etag != etag

    response, _ = dav(quickstart, ALICE, "DELETE", path, headers={"If-Match": etag})
    assert response.status == 412
    assert get(quickstart, ALICE, path)[0].status == 200
    response, _ = dav(quickstart, ALICE, "DELETE", path, headers={"If-Match": new_etag})
    assert response.status in (200, 204)
    assert get(quickstart, ALICE, path)[0].status == 404


def test_library_todo_round_trip(quickstart):
    """A VTODO is stored, found by a todo search (and events are not),
    completed, and deleted."""
    default = default_collection(quickstart, ALICE, "c:calendar")
    put(quickstart, ALICE, default + "event-e2e.ics",
        vcalendar(vevent("event-e2e", "20300501T090000Z", "20300501T100000Z")))
    with library_client(quickstart, ALICE) as client:
        calendar = library_calendar(client, default)
        todo = calendar.add_todo("\n".join([
            "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//bulwark e2e//EN", "BEGIN:VTODO",
            "UID:todo-e2e", "DTSTAMP:20300101T000000Z", "DUE:20300510T170000Z",
            "SUMMARY:File the report", "PRIORITY:1", "STATUS:NEEDS-ACTION",
            "END:VTODO", "END:VCALENDAR", ""]))
        path = urlsplit(str(todo.url)).path
        response, data = get(quickstart, ALICE, path)
        assert response.status == 200 and b"BEGIN:VTODO" in data and b"SUMMARY:File the report" in data

        found = calendar.search(todo=True, include_completed=True)
        assert [str(t.icalendar_component["UID"]) for t in found] == ["todo-e2e"]

        todo.complete()
        response, data = get(quickstart, ALICE, path)
        assert b"STATUS:COMPLETED" in data and b"COMPLETED:" in data
        todo.delete()
        assert get(quickstart, ALICE, path)[0].status == 404


def test_proppatch_calendar_properties(quickstart):
    """MKCALENDAR with a display name, PROPPATCH of displayname,
    calendar-color and calendar-description, read back by PROPFIND; a
    second MKCALENDAR on the same URL fails."""
    home = discover(quickstart, ALICE)["calendars"]
    path = home + "patched-e2e/"
    body = (f'<?xml version="1.0" encoding="utf-8"?><c:mkcalendar {XMLNS}><d:set><d:prop>'
            "<d:displayname>Before</d:displayname></d:prop></d:set></c:mkcalendar>")
    response, data = dav(quickstart, ALICE, "MKCALENDAR", path, body)
    assert response.status == 201, data
    response, _ = dav(quickstart, ALICE, "MKCALENDAR", path, body)
    assert 400 <= response.status < 500
    wanted = {"d:displayname": "After", "a:calendar-color": "#FF8800FF",
              "c:calendar-description": "Patched by the e2e test"}
    body = (f'<?xml version="1.0" encoding="utf-8"?><d:propertyupdate {XMLNS}><d:set><d:prop>'
            + "".join(f"<{k}>{v}</{k}>" for k, v in wanted.items())
            + "</d:prop></d:set></d:propertyupdate>")
    response, data = dav(quickstart, ALICE, "PROPPATCH", path, body)
    assert response.status == 207
    (_, props), = multistatus(data).values()
    assert set(props) == {q(k) for k in wanted}, data
    (_, props), = propfind(quickstart, ALICE, path, list(wanted) + ["d:resourcetype"]).values()
    assert {k: props[q(k)].text for k in wanted} == wanted
    assert props[q("d:resourcetype")].find(q("c:calendar")) is not None


def test_sync_collection_reports_changes_and_deletions(quickstart):
    """RFC 6578: an initial sync lists every member with a token; after
    one change and one deletion, a sync from that token returns exactly
    the changed href (200, new ETag) and the deleted one (404); a sync
    from the newest token returns nothing; a made-up token is refused."""
    home = discover(quickstart, ALICE)["calendars"]
    calendar = home + "sync-e2e/"
    response, data = dav(quickstart, ALICE, "MKCALENDAR", calendar)
    assert response.status == 201, data
    for name in ["a", "b", "c"]:
        response, _ = put(quickstart, ALICE, f"{calendar}{name}.ics",
                          vcalendar(vevent(f"sync-{name}", "20300601T090000Z", "20300601T100000Z")))
        assert response.status == 201

    def sync(token):
        body = (f'<?xml version="1.0" encoding="utf-8"?><d:sync-collection {XMLNS}>'
                f"<d:sync-token>{token}</d:sync-token><d:sync-level>1</d:sync-level>"
                "<d:prop><d:getetag/></d:prop></d:sync-collection>")
        data = report(quickstart, ALICE, calendar, body, depth="0")
        return multistatus(data), ET.fromstring(data).findtext("d:sync-token", namespaces=NS)

    found, token = sync("")
    assert token
    assert {posixpath.basename(h) for h in found} == {"a.ics", "b.ics", "c.ics"}
    assert all(q("d:getetag") in props for _, props in found.values())

    response, _ = put(quickstart, ALICE, calendar + "b.ics",
                      vcalendar(vevent("sync-b", "20300602T090000Z", "20300602T100000Z", "changed")))
    assert response.status in (200, 204)
    response, _ = dav(quickstart, ALICE, "DELETE", calendar + "c.ics")
    assert response.status in (200, 204)

    found, newer = sync(token)
    assert newer and newer != token
    assert {posixpath.basename(h): status for h, (status, _) in found.items()} == {"b.ics": None, "c.ics": 404}
    b_etag = get(quickstart, ALICE, calendar + "b.ics")[0].getheader("ETag")
    assert found[norm(calendar + "b.ics")][1][q("d:getetag")].text == b_etag

    found, newest = sync(newer)
    assert found == {}
    response, data = dav(quickstart, ALICE, "REPORT", calendar,
                         f'<d:sync-collection {XMLNS}><d:sync-token>{BASE_URL}/made-up-token</d:sync-token>'
                         "<d:sync-level>1</d:sync-level><d:prop><d:getetag/></d:prop></d:sync-collection>",
                         {"Depth": "0"})
    assert response.status in (403, 409) and b"valid-sync-token" in data, (response.status, data)


# ---------------------------------------------------------------- CardDAV

def test_carddav_mkcol_query_and_multiget(quickstart):
    """Extended MKCOL makes an address book; vCards PUT into it are listed,
    found by addressbook-query (text-match on EMAIL) and returned by
    addressbook-multiget."""
    home = discover(quickstart, ALICE)["addressbooks"]
    book = home + "friends-e2e/"
    body = (f'<?xml version="1.0" encoding="utf-8"?><d:mkcol {XMLNS}><d:set><d:prop>'
            "<d:resourcetype><d:collection/><r:addressbook/></d:resourcetype>"
            "<d:displayname>Friends</d:displayname></d:prop></d:set></d:mkcol>")
    response, data = dav(quickstart, ALICE, "MKCOL", book, body)
    assert response.status == 201, data
    assert norm(book) in collections(quickstart, ALICE, home, "r:addressbook")
    for name, email in [("Carol Jones", "carol@example.org"), ("Dave Smith", "dave@example.org")]:
        first = name.split()[0].lower()
        response, _ = put(quickstart, ALICE, f"{book}{first}.vcf", vcard(f"{first}-e2e", name, email))
        assert response.status == 201
    found = propfind(quickstart, ALICE, book, ["d:getetag", "d:getcontenttype"], depth="1")
    cards = {posixpath.basename(h): props for h, (_, props) in found.items() if h.endswith(".vcf")}
    assert set(cards) == {"carol.vcf", "dave.vcf"}
    assert all(p[q("d:getcontenttype")].text.startswith("text/vcard") for p in cards.values())

    body = (f'<?xml version="1.0" encoding="utf-8"?><r:addressbook-query {XMLNS}>'
            "<d:prop><d:getetag/><r:address-data/></d:prop><r:filter>"
            '<r:prop-filter name="EMAIL"><r:text-match collation="i;unicode-casemap" '
            'match-type="contains">carol@</r:text-match></r:prop-filter></r:filter></r:addressbook-query>')
    found = multistatus(report(quickstart, ALICE, book, body))
    assert [posixpath.basename(h) for h in found] == ["carol.vcf"]
    assert "FN:Carol Jones" in next(iter(found.values()))[1][q("r:address-data")].text

    body = (f'<?xml version="1.0" encoding="utf-8"?><r:addressbook-multiget {XMLNS}>'
            "<d:prop><d:getetag/><r:address-data/></d:prop>"
            f"<d:href>{book}dave.vcf</d:href><d:href>{book}nobody.vcf</d:href></r:addressbook-multiget>")
    found = multistatus(report(quickstart, ALICE, book, body))
    assert "FN:Dave Smith" in found[norm(book + "dave.vcf")][1][q("r:address-data")].text
    assert found[norm(book + "nobody.vcf")][0] == 404


# ---------------------------------------------------------------- isolation

SECRET = "bob-secret-" + uuid.uuid4().hex


def bobs_data(quickstart):
    """Bob's event and card, holding SECRET; returns bob's paths (decoded)."""
    homes = discover(quickstart, BOB)
    calendar = norm(default_collection(quickstart, BOB, "c:calendar"))
    book = norm(default_collection(quickstart, BOB, "r:addressbook"))
    event, card = calendar + "secret.ics", book + "secret.vcf"
    response, _ = put(quickstart, BOB, event, vcalendar(vevent(
        "bob-event-" + SECRET, "20300701T090000Z", "20300701T100000Z", SECRET)))
    assert response.status == 201
    response, _ = put(quickstart, BOB, card, vcard("bob-card-" + SECRET, f"{SECRET} Bob", "secret@example.org"))
    assert response.status == 201
    return {"principal": norm(homes["principal"]), "calendars": norm(homes["calendars"]),
            "addressbooks": norm(homes["addressbooks"]), "calendar": calendar, "book": book,
            "event": event, "card": card}


def spellings(target, via):
    """Ways of writing bob's `target` path (decoded, absolute): as is, then
    climbing out of alice's own `via` collection with `..` (plain and
    percent-encoded), with encoded slashes, doubled slashes, the address
    in other cases or with an encoded @."""
    rel = posixpath.relpath(target, via.rstrip("/")) + ("/" if target.endswith("/") else "")
    assert rel.startswith("..")
    return [
        target,
        via + rel,
        via + "./" + rel,
        via + rel.replace("..", "%2e%2e"),
        via + rel.replace("..", "%2E%2E").replace("/", "%2F"),
        via + rel.replace("/", "%2f"),
        via + rel.replace("../", "..%5c"),
        target.replace("/", "//"),
        "/" + target,
        target.replace(BOB, BOB.upper()),
        target.replace(BOB, "Bob@Example.Test"),
        target.replace("@", "%40"),
        target.replace(BOB, "%62%6f%62%40example.test"),
    ]


def assert_refused(response, data, what):
    assert response.status in (400, 403, 404), (what, response.status, data[:500])
    assert SECRET.encode() not in data, what


def test_alice_cannot_read_bobs_objects_by_any_path_spelling(quickstart):
    """GET and PROPFIND of bob's event and card, and of his principal,
    however the path is spelled, are refused (403/404) and never
    carry his data."""
    bob = bobs_data(quickstart)
    alice = discover(quickstart, ALICE)
    alice_calendar = norm(default_collection(quickstart, ALICE, "c:calendar"))
    alice_book = norm(default_collection(quickstart, ALICE, "r:addressbook"))
    for target, via in [(bob["event"], alice_calendar), (bob["event"], norm(alice["calendars"])),
                        (bob["card"], alice_book), (bob["card"], norm(alice["addressbooks"]))]:
        for path in spellings(target, via):
            response, data = get(quickstart, ALICE, path)
            assert_refused(response, data, ("GET", path))
            response, data = dav(quickstart, ALICE, "PROPFIND", path,
                                 f'<d:propfind {XMLNS}><d:allprop/></d:propfind>', {"Depth": "0"})
            assert_refused(response, data, ("PROPFIND", path))
    for path in spellings(bob["principal"], norm(alice["principal"])):
        response, data = dav(quickstart, ALICE, "PROPFIND", path,
                             f'<d:propfind {XMLNS}><d:prop><c:calendar-home-set/><d:displayname/>'
                             "</d:prop></d:propfind>", {"Depth": "0"})
        assert_refused(response, data, ("PROPFIND", path))
    # Bob, the owner, still reads it.
    response, data = get(quickstart, BOB, bob["event"])
    assert response.status == 200 and SECRET.encode() in data


def test_alice_cannot_list_or_query_bobs_collections(quickstart):
    """PROPFIND Depth 1, calendar-query, sync-collection and
    addressbook-query on bob's homes and collections are refused."""
    bob = bobs_data(quickstart)
    alice = discover(quickstart, ALICE)
    alice_calendar = norm(default_collection(quickstart, ALICE, "c:calendar"))
    alice_book = norm(default_collection(quickstart, ALICE, "r:addressbook"))
    listing = f'<d:propfind {XMLNS}><d:prop><d:getetag/><d:displayname/></d:prop></d:propfind>'
    sync = (f'<d:sync-collection {XMLNS}><d:sync-token/><d:sync-level>1</d:sync-level>'
            "<d:prop><d:getetag/></d:prop></d:sync-collection>")
    cal_query = calendar_query("20300101T000000Z", "20310101T000000Z")
    card_query = (f'<r:addressbook-query {XMLNS}><d:prop><r:address-data/></d:prop>'
                  '<r:filter><r:prop-filter name="FN"/></r:filter></r:addressbook-query>')
    checks = [
        (bob["calendars"], norm(alice["calendars"]), [("PROPFIND", listing, "1")]),
        (bob["addressbooks"], norm(alice["addressbooks"]), [("PROPFIND", listing, "1")]),
        (bob["calendar"], alice_calendar, [("PROPFIND", listing, "1"), ("REPORT", cal_query, "1"),
                                           ("REPORT", sync, "0")]),
        (bob["book"], alice_book, [("PROPFIND", listing, "1"), ("REPORT", card_query, "1"),
                                   ("REPORT", sync, "0")]),
    ]
    for target, via, requests in checks:
        for path in spellings(target, via):
            for method, body, depth in requests:
                response, data = dav(quickstart, ALICE, method, path, body, {"Depth": depth})
                assert_refused(response, data, (method, path, body[:30]))


def test_alice_cannot_write_or_delete_in_bobs_collections(quickstart):
    """PUT, DELETE, PROPPATCH, MKCALENDAR and MOVE aimed at bob's data,
    however spelled, fail with 4xx and change nothing of his."""
    bob = bobs_data(quickstart)
    alice = discover(quickstart, ALICE)
    alice_calendar = norm(default_collection(quickstart, ALICE, "c:calendar"))
    event_etag = get(quickstart, BOB, bob["event"])[0].getheader("ETag")
    card_etag = get(quickstart, BOB, bob["card"])[0].getheader("ETag")
    calendar_before = member_names(quickstart, BOB, bob["calendar"])
    book_before = member_names(quickstart, BOB, bob["book"])
    home_before = member_names(quickstart, BOB, bob["calendars"])

    def refused(response, what):
        assert 400 <= response.status < 500, (what, response.status)

    for i, path in enumerate(spellings(bob["calendar"] + "planted.ics", alice_calendar)):
        response, _ = put(quickstart, ALICE, path, vcalendar(vevent(
            f"planted-{i}", "20300801T090000Z", "20300801T100000Z", "planted")))
        refused(response, ("PUT", path))
    for path in spellings(bob["book"] + "planted.vcf", norm(alice["addressbooks"])):
        refused(put(quickstart, ALICE, path, vcard("planted", "Planted Card", "p@example.org"))[0], path)
    for target, via in [(bob["event"], alice_calendar), (bob["card"], norm(alice["addressbooks"]))]:
        for path in spellings(target, via):
            refused(dav(quickstart, ALICE, "DELETE", path)[0], ("DELETE", path))
    patch = (f'<d:propertyupdate {XMLNS}><d:set><d:prop><d:displayname>pwned</d:displayname>'
             "</d:prop></d:set></d:propertyupdate>")
    for path in spellings(bob["calendar"], alice_calendar):
        refused(dav(quickstart, ALICE, "PROPPATCH", path, patch)[0], ("PROPPATCH", path))
    for path in spellings(bob["calendars"] + "planted/", norm(alice["calendars"])):
        refused(dav(quickstart, ALICE, "MKCALENDAR", path)[0], ("MKCALENDAR", path))
    for path in spellings(bob["calendar"], alice_calendar):
        refused(dav(quickstart, ALICE, "DELETE", path)[0], ("DELETE collection", path))

    # MOVE of alice's own event into bob's calendar.
    mine = alice_calendar + "mine.ics"
    assert put(quickstart, ALICE, mine, vcalendar(vevent(
        "mine-e2e", "20300801T090000Z", "20300801T100000Z")))[0].status == 201
    conn = connect(quickstart)
    origin = f"{'https' if isinstance(conn, http.client.HTTPSConnection) else 'http'}://{conn.host}:{conn.port}"
    for path in spellings(bob["calendar"] + "moved.ics", alice_calendar):
        response, _ = dav(quickstart, ALICE, "MOVE", mine,
                          headers={"Destination": origin + path, "Overwrite": "T"})
        assert not 200 <= response.status < 300, ("MOVE", path, response.status)
    assert get(quickstart, ALICE, mine)[0].status == 200

    assert get(quickstart, BOB, bob["event"])[0].getheader("ETag") == event_etag
    assert get(quickstart, BOB, bob["card"])[0].getheader("ETag") == card_etag
    assert member_names(quickstart, BOB, bob["calendar"]) == calendar_before
    assert member_names(quickstart, BOB, bob["book"]) == book_before
    assert member_names(quickstart, BOB, bob["calendars"]) == home_before
    (_, props), = propfind(quickstart, BOB, bob["calendar"], ["d:displayname"]).values()
    assert q("d:displayname") not in props or props[q("d:displayname")].text != "pwned"


def test_multiget_in_own_collection_does_not_leak_other_accounts(quickstart):
    """calendar-multiget and addressbook-multiget sent to alice's own
    collections but naming bob's hrefs (in every spelling) never return
    his data."""
    bob = bobs_data(quickstart)
    alice_calendar = norm(default_collection(quickstart, ALICE, "c:calendar"))
    alice_book = norm(default_collection(quickstart, ALICE, "r:addressbook"))
    for own, target, kind, data_prop in [(alice_calendar, bob["event"], "c:calendar-multiget", "c:calendar-data"),
                                         (alice_book, bob["card"], "r:addressbook-multiget", "r:address-data")]:
        hrefs = "".join(f"<d:href>{p}</d:href>" for p in spellings(target, own))
        body = (f'<?xml version="1.0" encoding="utf-8"?><{kind} {XMLNS}>'
                f"<d:prop><d:getetag/><{data_prop}/></d:prop>{hrefs}</{kind}>")
        response, data = dav(quickstart, ALICE, "REPORT", own, body, {"Depth": "1"})
        assert response.status in (207, 400, 403, 404), (kind, response.status)
        assert SECRET.encode() not in data, kind
        if response.status == 207:
            for href, (status, props) in multistatus(data).items():
                assert q(data_prop) not in props and q("d:getetag") not in props, (href, data)
