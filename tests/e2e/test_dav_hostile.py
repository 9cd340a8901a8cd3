"""Hostile and careless requests to the CalDAV/CardDAV server on the
quickstart's HTTPS listener (8443), with Python's http.client (and a raw
TLS socket for the oversized bodies) as the client: missing and wrong
credentials, XML with a DOCTYPE (entity expansion, external entities),
bodies of 50 MB, malformed iCalendar and vCard data, an endless SECONDLY
recurrence expanded over a year, PROPFIND with Depth: infinity, and paths
that climb out of the DAV tree. Every refusal must leave nothing stored
and the server answering the next request."""

import base64
import http.client
import socket
import ssl
import time
import xml.etree.ElementTree as ET
from urllib.parse import unquote, urlsplit

HOST = "127.0.0.1"
PORT = 8443
ALICE, BOB = "alice@example.test", "bob@example.test"
NS = {"d": "DAV:", "c": "urn:ietf:params:xml:ns:caldav", "r": "urn:ietf:params:xml:ns:carddav"}
XMLNS = " ".join(f'xmlns:{prefix}="{uri}"' for prefix, uri in NS.items())
BIG = 50 * 1024 * 1024


def connect(quickstart):
    ctx = ssl.create_default_context(cafile=str(quickstart.cert))
    ctx.check_hostname = False  # the demo certificate names "localhost"
    return http.client.HTTPSConnection(HOST, PORT, context=ctx, timeout=30)


def open_socket(quickstart):
    ctx = ssl.create_default_context(cafile=str(quickstart.cert))
    ctx.check_hostname = False
    return ctx.wrap_socket(socket.create_connection((HOST, PORT), timeout=30), server_hostname="localhost")


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def send(quickstart, method, path, body=None, headers=None, user=ALICE):
    """One request, as `user` unless user is None; returns (response, body)."""
    all_headers = {}
    if user:
        all_headers["Authorization"] = basic(user, quickstart.credentials()[user])
    if body is not None and "Content-Type" not in (headers or {}):
        all_headers["Content-Type"] = "application/xml; charset=utf-8"
    all_headers.update(headers or {})
    conn = connect(quickstart)
    try:
        conn.request(method, path, body=body.encode() if isinstance(body, str) else body, headers=all_headers)
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


def first_href(data, prop):
    element = ET.fromstring(data).find(f".//{prop}/d:href", NS)
    return urlsplit(element.text.strip()).path


def dav_paths(quickstart):
    """Alice's principal, homes and default collections, discovered from
    the well-known URIs; and the names of the default calendar's members."""
    paths = {}
    for kind, home_prop, resource in [("calendar", "c:calendar-home-set", "c:calendar"),
                                      ("addressbook", "r:addressbook-home-set", "r:addressbook")]:
        response, _ = send(quickstart, "PROPFIND", f"/.well-known/{'caldav' if kind == 'calendar' else 'carddav'}",
                           headers={"Depth": "0"})
        context = urlsplit(response.getheader("Location")).path
        response, data = send(quickstart, "PROPFIND", context,
                              f"<d:propfind {XMLNS}><d:prop><d:current-user-principal/></d:prop></d:propfind>",
                              {"Depth": "0"})
        paths["principal"] = first_href(data, "d:current-user-principal")
        response, data = send(quickstart, "PROPFIND", paths["principal"],
                              f"<d:propfind {XMLNS}><d:prop><{home_prop}/></d:prop></d:propfind>", {"Depth": "0"})
        home = paths[kind + "s"] = first_href(data, home_prop)
        response, data = send(quickstart, "PROPFIND", home,
                              f"<d:propfind {XMLNS}><d:prop><d:resourcetype/></d:prop></d:propfind>", {"Depth": "1"})
        assert response.status == 207
        found = [unquote(urlsplit(r.findtext("d:href", namespaces=NS).strip()).path)
                 for r in ET.fromstring(data).findall("d:response", NS)
                 if r.find(f".//d:resourcetype/{resource}", NS) is not None]
        named = [p for p in found if p.rstrip("/").endswith("/default")]
        assert named or len(found) == 1, found
        paths[kind] = (named or found)[0]
    return paths


def members(quickstart, collection):
    response, data = send(quickstart, "PROPFIND", collection,
                          f"<d:propfind {XMLNS}><d:prop><d:getetag/></d:prop></d:propfind>", {"Depth": "1"})
    assert response.status == 207, (collection, response.status)
    hrefs = {unquote(urlsplit(r.findtext("d:href", namespaces=NS).strip()).path)
             for r in ET.fromstring(data).findall("d:response", NS)}
    return {h for h in hrefs if h.rstrip("/") != collection.rstrip("/")}


def assert_still_serving(quickstart, paths):
    response, data = send(quickstart, "PROPFIND", paths["calendar"],
                          f"<d:propfind {XMLNS}><d:prop><d:displayname/></d:prop></d:propfind>", {"Depth": "0"})
    assert response.status == 207, (response.status, data)


def event(uid, extra=(), start="20300101T090000Z"):
    return "\r\n".join(["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//bulwark e2e//EN", "BEGIN:VEVENT",
                        f"UID:{uid}", "DTSTAMP:20300101T000000Z", f"DTSTART:{start}",
                        "DURATION:PT1H", "SUMMARY:hostile e2e", *extra, "END:VEVENT", "END:VCALENDAR", ""])


# ---------------------------------------------------------------- authentication

def test_requests_without_credentials_get_401(quickstart):
    """Every DAV method on every kind of DAV URL, without credentials,
    gets 401 with a Basic challenge, reveals nothing and stores nothing."""
    paths = dav_paths(quickstart)
    item = paths["calendar"] + "private.ics"
    assert send(quickstart, "PUT", item, event("private-e2e", ["DESCRIPTION:private-words"]),
                {"Content-Type": "text/calendar"})[0].status == 201
    propfind = f"<d:propfind {XMLNS}><d:prop><d:getetag/></d:prop></d:propfind>"
    query = (f'<c:calendar-query {XMLNS}><d:prop><c:calendar-data/></d:prop><c:filter>'
             '<c:comp-filter name="VCALENDAR"/></c:filter></c:calendar-query>')
    for path in [paths["principal"], paths["calendars"], paths["calendar"], paths["addressbook"], item]:
        for method, body, depth in [("PROPFIND", propfind, "0"), ("PROPFIND", propfind, "1"),
                                    ("REPORT", query, "1"), ("GET", None, None)]:
            response, data = send(quickstart, method, path, body, {"Depth": depth} if depth else {}, user=None)
            assert response.status == 401, (method, path, response.status)
            assert response.getheader("WWW-Authenticate", "").startswith("Basic"), (method, path)
            assert b"private-words" not in data
    for method, path, body in [("PUT", paths["calendar"] + "anon.ics", event("anon-e2e")),
                               ("DELETE", item, None), ("MKCALENDAR", paths["calendars"] + "anon/", None),
                               ("PROPPATCH", paths["calendar"],
                                f"<d:propertyupdate {XMLNS}><d:set><d:prop><d:displayname>anon</d:displayname>"
                                "</d:prop></d:set></d:propertyupdate>")]:
        response, _ = send(quickstart, method, path, body, user=None)
        assert response.status == 401, (method, path, response.status)
    assert members(quickstart, paths["calendar"]) == {unquote(item)}
    assert send(quickstart, "GET", item)[0].status == 200


def test_wrong_credentials_get_401(quickstart):
    """Wrong password, another account's password, unknown user, empty
    password and a mangled Authorization header are all refused."""
    paths = dav_paths(quickstart)
    creds = quickstart.credentials()
    body = f"<d:propfind {XMLNS}><d:prop><d:getetag/></d:prop></d:propfind>"
    wrong = [basic(ALICE, "wrong password"), basic(ALICE, creds[BOB]), basic("nobody@example.test", creds[ALICE]),
             basic(ALICE, ""), basic(ALICE, creds[ALICE] + "x"), basic(ALICE, creds[ALICE][:-1]),
             basic(ALICE.upper() + "x", creds[ALICE])]
    mangled = ["Basic !!!not-base64!!!", "Basic " + base64.b64encode(ALICE.encode()).decode(),
               "Basic", "Bearer " + creds[ALICE]]
    for authorization in wrong + mangled:
        response, data = send(quickstart, "PROPFIND", paths["calendar"], body,
                              {"Depth": "1", "Authorization": authorization}, user=None)
        allowed = (401,) if authorization in wrong else (400, 401)
        assert response.status in allowed, (authorization, response.status)
        if response.status == 401:
            assert response.getheader("WWW-Authenticate", "").startswith("Basic")
        assert b"getetag" not in data
    assert send(quickstart, "PROPFIND", paths["calendar"], body, {"Depth": "1"})[0].status == 207


# ---------------------------------------------------------------- XML

LAUGHS = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol0 "lol">'
          + "".join(f'<!ENTITY lol{i} "{("&lol%d;" % (i - 1)) * 10}">' for i in range(1, 10)) + "]>")
XXE = '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'


def test_xml_with_doctype_is_refused(quickstart):
    """PROPFIND, PROPPATCH, REPORT, MKCALENDAR and MKCOL bodies carrying a
    DOCTYPE (billion laughs, external entity to /etc/passwd) get 400,
    never any file contents, and change nothing."""
    paths = dav_paths(quickstart)
    requests = [
        ("PROPFIND", paths["calendar"], "<d:propfind {ns}><d:prop><d:displayname>{e}</d:displayname>"
                                        "</d:prop></d:propfind>"),
        ("PROPPATCH", paths["calendar"], "<d:propertyupdate {ns}><d:set><d:prop><d:displayname>{e}</d:displayname>"
                                         "</d:prop></d:set></d:propertyupdate>"),
        ("REPORT", paths["calendar"], '<c:calendar-query {ns}><d:prop><d:getetag/></d:prop><c:filter>'
                                      '<c:comp-filter name="VCALENDAR"><c:comp-filter name="VEVENT">'
                                      '<c:prop-filter name="SUMMARY"><c:text-match>{e}</c:text-match></c:prop-filter>'
                                      '</c:comp-filter></c:comp-filter></c:filter></c:calendar-query>'),
        ("REPORT", paths["calendar"], "<c:calendar-multiget {ns}><d:prop><c:calendar-data/></d:prop>"
                                      "<d:href>{e}</d:href></c:calendar-multiget>"),
        ("REPORT", paths["calendar"], "<d:sync-collection {ns}><d:sync-token>{e}</d:sync-token><d:sync-level>1"
                                      "</d:sync-level><d:prop><d:getetag/></d:prop></d:sync-collection>"),
        ("MKCALENDAR", paths["calendars"] + "doctype/", "<c:mkcalendar {ns}><d:set><d:prop><d:displayname>{e}"
                                                        "</d:displayname></d:prop></d:set></c:mkcalendar>"),
        ("MKCOL", paths["addressbooks"] + "doctype/", "<d:mkcol {ns}><d:set><d:prop><d:resourcetype><d:collection/>"
                                                      "<r:addressbook/></d:resourcetype><d:displayname>{e}"
                                                      "</d:displayname></d:prop></d:set></d:mkcol>"),
    ]
    for prolog, entity in [(LAUGHS, "&lol9;"), (XXE, "&xxe;")]:
        for method, path, template in requests:
            body = prolog + template.format(ns=XMLNS, e=entity)
            response, data = send(quickstart, method, path, body, {"Depth": "1" if method == "REPORT" else "0"})
            assert response.status == 400, (method, path, entity, response.status, data[:300])
            assert b"root:" not in data and b"lollol" not in data, (method, path)
    for kind in ["calendars", "addressbooks"]:
        response, _ = send(quickstart, "PROPFIND", paths[kind] + "doctype/", headers={"Depth": "0"})
        assert response.status == 404
    response, data = send(quickstart, "PROPFIND", paths["calendar"],
                          f"<d:propfind {XMLNS}><d:prop><d:displayname/></d:prop></d:propfind>", {"Depth": "0"})
    assert response.status == 207 and b"root:" not in data and b"lollol" not in data


# ---------------------------------------------------------------- size

def refused_upload(quickstart, head, chunks):
    """Sends a request head then body chunks on a raw socket. Returns the
    status line the server answered, None if it cut the connection
    (reset, broken pipe, close) without answering, or "stalled" if it
    neither answered nor closed within the socket timeout."""
    with open_socket(quickstart) as conn:
        try:
            conn.sendall(head)
            for chunk in chunks:
                conn.sendall(chunk)
        except socket.timeout:
            pass  # the server stopped reading: its answer may be waiting
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass
        reply = b""
        try:
            while b"\r\n" not in reply:
                more = conn.recv(4096)
                if not more:
                    break
                reply += more
        except socket.timeout:
            return "stalled"
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            pass
    return reply.split(b"\r\n")[0] or None


def test_oversized_put_is_refused(quickstart):
    """A 50 MB PUT, announced by Content-Length or sent chunked, gets 413
    (or the connection is cut); nothing is stored and the server goes on
    answering."""
    paths = dav_paths(quickstart)
    creds = quickstart.credentials()
    auth = basic(ALICE, creds[ALICE]).encode()
    ics = event("big-e2e", ["DESCRIPTION:" + "x" * 70]).encode()
    filler = (b" " + b"y" * 72 + b"\r\n") * (1024 * 1024 // 75)  # folded DESCRIPTION continuation lines
    head = ics.split(b"END:VEVENT")[0].rstrip(b"\r\n") + b"\r\n"
    body_chunks = [head] + [filler] * (BIG // len(filler) + 1) + [b"END:VEVENT\r\nEND:VCALENDAR\r\n"]
    total = sum(len(c) for c in body_chunks)
    assert total > BIG

    path = paths["calendar"] + "big.ics"
    request_head = (f"PUT {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/calendar\r\n"
                    f"Content-Length: {total}\r\n").encode() + b"Authorization: " + auth + b"\r\n\r\n"
    status = refused_upload(quickstart, request_head, body_chunks)
    assert status != "stalled", "neither an answer nor a closed connection"
    assert status is None or status.split()[1] == b"413", status
    assert send(quickstart, "GET", path)[0].status == 404
    assert_still_serving(quickstart, paths)

    path = paths["calendar"] + "big-chunked.ics"
    request_head = (f"PUT {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/calendar\r\n"
                    "Transfer-Encoding: chunked\r\n").encode() + b"Authorization: " + auth + b"\r\n\r\n"
    chunked = [b"%x\r\n%s\r\n" % (len(c), c) for c in body_chunks] + [b"0\r\n\r\n"]
    status = refused_upload(quickstart, request_head, chunked)
    assert status != "stalled", "neither an answer nor a closed connection"
    assert status is None or status.split()[1] in (b"413", b"411", b"400"), status
    assert send(quickstart, "GET", path)[0].status == 404
    assert_still_serving(quickstart, paths)
    assert members(quickstart, paths["calendar"]) == set()


# ---------------------------------------------------------------- bad data

CAL_PRECONDITIONS = [b"valid-calendar-data", b"valid-calendar-object-resource", b"supported-calendar-data",
                     b"supported-calendar-component"]
CARD_PRECONDITIONS = [b"valid-address-data", b"supported-address-data"]


def assert_bad_data_refused(response, data, preconditions, what):
    assert response.status in (400, 403, 415), (what, response.status, data[:300])
    if response.status == 403:
        assert any(p in data for p in preconditions), (what, data[:300])


def test_malformed_icalendar_is_refused(quickstart):
    """PUTs of data that is not one valid iCalendar object resource are
    refused (400, 415, or 403 with a CalDAV precondition) and nothing is
    stored."""
    paths = dav_paths(quickstart)
    good = event("fine-e2e")
    cases = {
        "text": b"this is not a calendar\r\n",
        "empty": b"",
        "binary": bytes(range(256)) * 4,
        "truncated": good[: len(good) // 2].encode(),
        "unclosed-vevent": good.replace("END:VEVENT\r\n", "").encode(),
        "no-vcalendar": good.replace("BEGIN:VCALENDAR\r\n", "").replace("END:VCALENDAR\r\n", "").encode(),
        "bad-date": good.replace("DTSTART:20300101T090000Z", "DTSTART:yesterday-ish").encode(),
        "two-uids": good.replace("END:VCALENDAR", "\r\n".join(
            ["BEGIN:VEVENT", "UID:other-e2e", "DTSTAMP:20300101T000000Z",
             "DTSTART:20300102T090000Z", "END:VEVENT", "END:VCALENDAR"])).encode(),
        "vcard": b"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:card-e2e\r\nFN:Card\r\nEND:VCARD\r\n",
    }
    for name, body in cases.items():
        path = f"{paths['calendar']}{name}.ics"
        response, data = send(quickstart, "PUT", path, body, {"Content-Type": "text/calendar; charset=utf-8"})
        assert_bad_data_refused(response, data, CAL_PRECONDITIONS, name)
        assert send(quickstart, "GET", path)[0].status == 404, name
    assert members(quickstart, paths["calendar"]) == set()
    # Invalid UTF-8 in a text value: refused, or stored and served as UTF-8.
    path = paths["calendar"] + "bad-utf8.ics"
    body = good.replace("SUMMARY:hostile e2e", "SUMMARY:caf\udce9").replace("UID:fine-e2e", "UID:utf8-e2e")
    body = body.encode("utf-8", "surrogateescape")
    response, data = send(quickstart, "PUT", path, body, {"Content-Type": "text/calendar; charset=utf-8"})
    if response.status in (201, 204):
        response, data = send(quickstart, "GET", path)
        data.decode("utf-8")
    else:
        assert_bad_data_refused(response, data, CAL_PRECONDITIONS, "bad-utf8")
    assert send(quickstart, "PUT", paths["calendar"] + "fine.ics", good,
                {"Content-Type": "text/calendar"})[0].status == 201
    assert send(quickstart, "GET", paths["calendar"] + "fine.ics")[0].status == 200


def test_malformed_vcard_is_refused(quickstart):
    """The same for vCards in the address book (400, 415, or 403 with a
    CardDAV precondition)."""
    paths = dav_paths(quickstart)
    good = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:fine-card-e2e\r\nFN:Fine Card\r\nN:Card;Fine;;;\r\nEND:VCARD\r\n"
    cases = {
        "text": b"this is not a card\r\n",
        "empty": b"",
        "binary": bytes(range(256)) * 4,
        "truncated": good[: len(good) // 2].encode(),
        "unclosed": good.replace("END:VCARD\r\n", "").encode(),
        "icalendar": event("cal-in-book-e2e").encode(),
    }
    for name, body in cases.items():
        path = f"{paths['addressbook']}{name}.vcf"
        response, data = send(quickstart, "PUT", path, body, {"Content-Type": "text/vcard; charset=utf-8"})
        assert_bad_data_refused(response, data, CARD_PRECONDITIONS, name)
        assert send(quickstart, "GET", path)[0].status == 404, name
    assert members(quickstart, paths["addressbook"]) == set()
    assert send(quickstart, "PUT", paths["addressbook"] + "fine.vcf", good,
                {"Content-Type": "text/vcard"})[0].status == 201


# ---------------------------------------------------------------- expansion

def read_capped(response, limit=64 * 1024 * 1024, seconds=120):
    """Reads a response body, failing rather than hanging if the server
    streams an unbounded expansion."""
    data, deadline = b"", time.monotonic() + seconds
    while chunk := response.read(1024 * 1024):
        data += chunk
        assert len(data) <= limit, f"more than {limit} bytes of answer"
        assert time.monotonic() < deadline, "answer still streaming"
    return data


def test_unbounded_secondly_recurrence_is_contained(quickstart):
    """An event repeating every second for ever is either refused or
    stored; a year-long time-range query on it, expanded or not, gets
    a bounded answer (207, or a 4xx/507 refusal) and the server keeps
    serving."""
    paths = dav_paths(quickstart)
    path = paths["calendar"] + "secondly.ics"
    response, data = send(quickstart, "PUT", path, event("secondly-e2e", ["RRULE:FREQ=SECONDLY"]),
                          {"Content-Type": "text/calendar"})
    assert response.status in (201, 204) or 400 <= response.status < 500, (response.status, data[:300])
    for expand in ['<c:expand start="20300101T000000Z" end="20310101T000000Z"/>', ""]:
        body = (f'<c:calendar-query {XMLNS}><d:prop><d:getetag/><c:calendar-data>{expand}</c:calendar-data>'
                '</d:prop><c:filter><c:comp-filter name="VCALENDAR"><c:comp-filter name="VEVENT">'
                '<c:time-range start="20300101T000000Z" end="20310101T000000Z"/>'
                "</c:comp-filter></c:comp-filter></c:filter></c:calendar-query>")
        conn = connect(quickstart)
        try:
            conn.request("REPORT", paths["calendar"], body.encode(),
                         {"Authorization": basic(ALICE, quickstart.credentials()[ALICE]), "Depth": "1",
                          "Content-Type": "application/xml; charset=utf-8"})
            response = conn.getresponse()
            read_capped(response)
        finally:
            conn.close()
        assert response.status in (207, 507) or 400 <= response.status < 500, (expand, response.status)
        assert_still_serving(quickstart, paths)


# ---------------------------------------------------------------- depth, paths

def test_propfind_depth_infinity_is_refused(quickstart):
    """PROPFIND with Depth: infinity gets 403 with DAV:propfind-finite-depth
    on the DAV root, the principal, the homes and a collection."""
    paths = dav_paths(quickstart)
    response, _ = send(quickstart, "PROPFIND", "/.well-known/caldav", headers={"Depth": "0"})
    context = urlsplit(response.getheader("Location")).path
    for path in [context, paths["principal"], paths["calendars"], paths["calendar"], paths["addressbooks"],
                 paths["addressbook"]]:
        for body in [None, f"<d:propfind {XMLNS}><d:allprop/></d:propfind>"]:
            response, data = send(quickstart, "PROPFIND", path, body, {"Depth": "infinity"})
            assert response.status == 403, (path, response.status)
            root = ET.fromstring(data)
            assert root.tag == "{DAV:}error" and root.find("d:propfind-finite-depth", NS) is not None, data


def test_paths_cannot_climb_out_of_the_dav_tree(quickstart):
    """Dot-dot segments, plain or encoded, in DAV paths never reach files
    of the host; PUT to such names stores nothing outside the calendar."""
    paths = dav_paths(quickstart)
    calendar = paths["calendar"]
    depth = calendar.count("/") + 3
    for tail in ["../" * depth + "etc/passwd", "%2e%2e/" * depth + "etc/passwd",
                 "..%2f" * depth + "etc%2fpasswd", "..%5c" * depth + "etc%5cpasswd",
                 "%252e%252e/" * depth + "etc/passwd", "....//" * depth + "etc/passwd"]:
        for method in ["GET", "PROPFIND"]:
            response, data = send(quickstart, method, calendar + tail, headers={"Depth": "0"})
            assert response.status in (400, 403, 404), (method, tail, response.status)
            assert b"root:" not in data, (method, tail)
    for tail in ["..%2f..%2fplanted.ics", "%2e%2e%2fplanted.ics", "sub%2fplanted.ics"]:
        response, _ = send(quickstart, "PUT", calendar + tail, event("planted-e2e"),
                           {"Content-Type": "text/calendar"})
        assert response.status in (400, 403, 404, 409) or response.status in (201, 204), response.status
        if response.status in (201, 204):
            # Accepted only as a plain member name of this calendar.
            assert send(quickstart, "GET", calendar + tail)[0].status == 200
    for home in ["calendars", "addressbooks"]:
        listed = members(quickstart, paths[home])
        assert not any(p.endswith(".ics") for p in listed), listed
