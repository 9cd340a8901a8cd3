"""Delegated calendar and address book access and the global address
list, over the quickstart's HTTPS listener with Python's http.client as the
client: a grant from the CLI gives exactly the right it names, every
non-owner access lands in the audit log (and the chain still verifies),
and the read-only directory address book follows the directory."""

import base64
import http.client
import json
import ssl
import uuid
import xml.etree.ElementTree as ET

HOST = "127.0.0.1"
HTTPS = 8443
NS = {"D": "DAV:", "C": "urn:ietf:params:xml:ns:caldav", "CR": "urn:ietf:params:xml:ns:carddav"}


def call(quickstart, user, method, path, body=None, headers=None):
    ctx = ssl.create_default_context(cafile=str(quickstart.cert))
    ctx.check_hostname = False
    conn = http.client.HTTPSConnection(HOST, HTTPS, context=ctx, timeout=30)
    password = quickstart.credentials()[user]
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    all_headers = {"Authorization": f"Basic {auth}", **(headers or {})}
    if isinstance(body, str):
        body = body.encode()
    conn.request(method, path, body=body, headers=all_headers)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


def event(uid):
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//test//EN\r\n"
        f"BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20300101T000000Z\r\n"
        "DTSTART:20300105T090000Z\r\nDTEND:20300105T100000Z\r\nSUMMARY:Board meeting\r\n"
        "END:VEVENT\r\nEND:VCALENDAR\r\n"
    )


BOB_CAL = "/dav/calendars/bob@example.test/default/"
BOB_BOOK = "/dav/addressbooks/bob@example.test/default/"
LIST = '<D:propfind xmlns:D="DAV:"><D:prop><D:getetag/></D:prop></D:propfind>'


def hrefs(data):
    return [h.text for h in ET.fromstring(data).iter("{DAV:}href")]


def test_read_grant_gives_exactly_read(quickstart):
    """calendar-read lets alice list and read bob's calendar, not change it,
    and not see his contacts; each of her reads is audited."""
    uid = f"board-{uuid.uuid4()}"
    status, _ = call(quickstart, "bob@example.test", "PUT", f"{BOB_CAL}{uid}.ics", event(uid),
                     {"Content-Type": "text/calendar"})
    assert status == 201
    # Before the grant, bob's calendar does not exist for alice.
    status, data = call(quickstart, "alice@example.test", "GET", f"{BOB_CAL}{uid}.ics")
    assert status == 404 and b"Board meeting" not in data

    quickstart.admin("grant", "add", "--from", "bob@example.test", "--to", "alice@example.test",
                     "--right", "calendar-read")
    status, data = call(quickstart, "alice@example.test", "PROPFIND", BOB_CAL, LIST, {"Depth": "1"})
    assert status == 207 and f"{BOB_CAL}{uid}.ics" in hrefs(data)
    status, data = call(quickstart, "alice@example.test", "GET", f"{BOB_CAL}{uid}.ics")
    assert status == 200 and b"Board meeting" in data
    # Read only: no change, no delete, no new event, no new calendar.
    status, _ = call(quickstart, "alice@example.test", "PUT", f"{BOB_CAL}{uid}.ics",
                     event(uid).replace("Board meeting", "Cancelled"))
    assert status == 403
    status, _ = call(quickstart, "alice@example.test", "DELETE", f"{BOB_CAL}{uid}.ics")
    assert status == 403
    status, _ = call(quickstart, "alice@example.test", "PUT", f"{BOB_CAL}new.ics", event("new-by-alice"))
    assert status == 403
    status, _ = call(quickstart, "alice@example.test", "MKCALENDAR", "/dav/calendars/bob@example.test/x/")
    assert status in (403, 404)
    status, data = call(quickstart, "bob@example.test", "GET", f"{BOB_CAL}{uid}.ics")
    assert b"Board meeting" in data
    # Bob's calendar also appears in alice's own home, under a name that
    # says whose it is, with the same rights.
    status, data = call(quickstart, "alice@example.test", "PROPFIND", "/dav/calendars/alice@example.test/",
                        '<D:propfind xmlns:D="DAV:"><D:prop><D:displayname/></D:prop></D:propfind>',
                        {"Depth": "1"})
    shared = "/dav/calendars/alice@example.test/shared~bob@example.test~default/"
    assert status == 207 and shared in hrefs(data), hrefs(data)
    assert b"Bob Example: Calendar" in data
    status, data = call(quickstart, "alice@example.test", "GET", f"{shared}{uid}.ics")
    assert status == 200 and b"Board meeting" in data
    status, _ = call(quickstart, "alice@example.test", "PUT", f"{shared}{uid}.ics",
                     event(uid).replace("Board meeting", "Cancelled"))
    assert status == 403
    # Nobody reaches a collection through someone else's alias.
    status, _ = call(quickstart, "bob@example.test", "GET",
                     f"/dav/calendars/bob@example.test/shared~alice@example.test~default/x.ics")
    assert status == 404
    # The grant is for calendars only.
    status, _ = call(quickstart, "alice@example.test", "PROPFIND", BOB_BOOK, LIST, {"Depth": "1"})
    assert status == 404

    records = [json.loads(line) for line in
               quickstart.admin("audit", "tail", "-n", "50", "--json").splitlines() if line.strip()]
    alices = [r for r in records if r.get("actor") == "alice@example.test"
              and r.get("target") == "bob@example.test"]
    operations = {r.get("operation") for r in alices}
    assert {"dav.collection.list", "dav.object.get"} <= operations, operations
    assert all(r.get("logon_type") == "delegate" for r in alices), alices
    quickstart.admin("audit", "verify")


def test_write_grant_allows_changes_and_they_are_audited(quickstart):
    """contacts-write lets alice add and delete a card in bob's book."""
    quickstart.admin("grant", "add", "--from", "bob@example.test", "--to", "alice@example.test",
                     "--right", "contacts-write")
    card = ("BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Carla Client\r\nUID:carla-1\r\n"
            "EMAIL:carla@customer.example\r\nEND:VCARD\r\n")
    status, _ = call(quickstart, "alice@example.test", "PUT", f"{BOB_BOOK}carla.vcf", card,
                     {"Content-Type": "text/vcard", "If-None-Match": "*"})
    assert status == 201
    status, data = call(quickstart, "bob@example.test", "GET", f"{BOB_BOOK}carla.vcf")
    assert status == 200 and b"Carla Client" in data
    status, _ = call(quickstart, "alice@example.test", "DELETE", f"{BOB_BOOK}carla.vcf")
    assert status == 204
    # A delegate may not delete the collection itself.
    status, _ = call(quickstart, "alice@example.test", "DELETE", BOB_BOOK)
    assert status == 403
    tail = quickstart.admin("audit", "tail", "-n", "20", "--json")
    writes = [json.loads(line) for line in tail.splitlines() if line.strip()]
    assert any(r.get("operation") == "dav.object.put" and r.get("actor") == "alice@example.test"
               for r in writes)
    assert any(r.get("operation") == "dav.object.delete" and r.get("actor") == "alice@example.test"
               for r in writes)


QUERY = ('<CR:addressbook-query xmlns:D="DAV:" xmlns:CR="urn:ietf:params:xml:ns:carddav">'
         '<D:prop><D:getetag/><CR:address-data/></D:prop>'
         '<CR:filter><CR:prop-filter name="EMAIL"><CR:text-match>{needle}</CR:text-match>'
         '</CR:prop-filter></CR:filter></CR:addressbook-query>')
GAL = "/dav/addressbooks/alice@example.test/directory/"


def test_directory_address_book_follows_the_directory(quickstart):
    """Everyone in the domain is in alice's read-only directory book, and a
    room added from the CLI appears in it at once."""
    status, data = call(quickstart, "alice@example.test", "PROPFIND",
                        "/dav/addressbooks/alice@example.test/", LIST, {"Depth": "1"})
    assert status == 207 and GAL in hrefs(data)
    status, data = call(quickstart, "alice@example.test", "REPORT", GAL,
                        QUERY.format(needle="bob@"), {"Depth": "1"})
    assert status == 207
    cards = [e.text for e in ET.fromstring(data).iter("{urn:ietf:params:xml:ns:carddav}address-data")]
    assert len(cards) == 1 and "FN:Bob Example" in cards[0]

    ctag = '<D:propfind xmlns:D="DAV:"><D:prop><D:sync-token/></D:prop></D:propfind>'
    _, before = call(quickstart, "alice@example.test", "PROPFIND", GAL, ctag, {"Depth": "0"})
    quickstart.admin("resource", "add", "--kind", "room", "boardroom@example.test")
    _, after = call(quickstart, "alice@example.test", "PROPFIND", GAL, ctag, {"Depth": "0"})
    assert before != after
    status, data = call(quickstart, "alice@example.test", "REPORT", GAL,
                        QUERY.format(needle="boardroom"), {"Depth": "1"})
    assert b"X-BULWARK-KIND:room" in data

    # Read-only, whatever the client tries.
    card = "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Fake\r\nUID:fake\r\nEND:VCARD\r\n"
    status, _ = call(quickstart, "alice@example.test", "PUT", f"{GAL}fake.vcf", card)
    assert status == 403
    name = hrefs(data)[0]
    status, _ = call(quickstart, "alice@example.test", "DELETE", name)
    assert status == 403
    status, _ = call(quickstart, "alice@example.test", "DELETE", GAL)
    assert status == 403
    status, _ = call(quickstart, "alice@example.test", "MKCOL", GAL)
    assert status == 405


def test_http2_is_offered_and_serves_dav(quickstart):
    """An HTTP/2 client (httpx with h2) negotiates h2 by ALPN and gets the
    same DAV answers, several requests multiplexed on one connection."""
    import httpx

    password = quickstart.credentials()["alice@example.test"]
    with httpx.Client(http2=True, verify=ssl.create_default_context(cafile=str(quickstart.cert)), auth=("alice@example.test", password),
                      base_url="https://localhost:8443", timeout=30) as h2:
        r = h2.request("PROPFIND", "/dav/calendars/alice@example.test/", headers={"Depth": "1"},
                       content=LIST)
        assert r.http_version == "HTTP/2" and r.status_code == 207
        assert "/dav/calendars/alice@example.test/default/" in hrefs(r.content)
        uid = f"h2-{uuid.uuid4()}"
        path = f"/dav/calendars/alice@example.test/default/{uid}.ics"
        assert h2.put(path, content=event(uid), headers={"If-None-Match": "*"}).status_code == 201
        assert "Board meeting" in h2.get(path).text
        # Bad credentials and oversized bodies are refused the same way.
        assert h2.get(path, auth=("alice@example.test", "wrong")).status_code == 401
        # The server may answer 413 before reading the body and reset the
        # stream, which some clients report as an error of their own.
        try:
            assert h2.put(path, content=b"x" * (3 * 1024 * 1024)).status_code == 413
        except httpx.HTTPError:
            pass
    with httpx.Client(http2=True, verify=ssl.create_default_context(cafile=str(quickstart.cert)), auth=("alice@example.test", password),
                      base_url="https://localhost:8443", timeout=30) as h2:
        again = h2.get(path)
        assert again.http_version == "HTTP/2" and "Board meeting" in again.text


def acl(*aces):
    body = '<D:acl xmlns:D="DAV:">'
    for principal, privileges in aces:
        grants = "".join(f"<D:privilege><D:{p}/></D:privilege>" for p in privileges)
        body += (f"<D:ace><D:principal><D:href>{principal}</D:href></D:principal>"
                 f"<D:grant>{grants}</D:grant></D:ace>")
    return body + "</D:acl>"


def test_owner_shares_one_calendar_with_the_acl_method(quickstart):
    """alice shares her "work" calendar (only that one) with bob, first
    read-only, then read-write, then not at all; each change is audited."""
    work = "/dav/calendars/alice@example.test/work/"
    status, _ = call(quickstart, "alice@example.test", "MKCALENDAR", work)
    assert status == 201
    uid = f"work-{uuid.uuid4()}"
    assert call(quickstart, "alice@example.test", "PUT", f"{work}{uid}.ics", event(uid))[0] == 201
    assert call(quickstart, "bob@example.test", "GET", f"{work}{uid}.ics")[0] == 404

    status, _ = call(quickstart, "alice@example.test", "ACL", work,
                     acl(("/dav/principals/bob@example.test/", ["read"])))
    assert status == 200
    status, data = call(quickstart, "bob@example.test", "GET", f"{work}{uid}.ics")
    assert status == 200 and b"Board meeting" in data
    assert call(quickstart, "bob@example.test", "PUT", f"{work}{uid}.ics", event(uid))[0] == 403
    # Only that calendar: alice's default stays hers.
    assert call(quickstart, "bob@example.test", "PROPFIND", "/dav/calendars/alice@example.test/default/",
                LIST, {"Depth": "1"})[0] == 404
    status, data = call(quickstart, "bob@example.test", "PROPFIND", "/dav/calendars/bob@example.test/",
                        LIST, {"Depth": "1"})
    assert "/dav/calendars/bob@example.test/shared~alice@example.test~work/" in hrefs(data)
    assert not any("~default" in h for h in hrefs(data))
    # bob cannot reshare or change the ACL of alice's calendar.
    status, _ = call(quickstart, "bob@example.test", "ACL", work,
                     acl(("mailto:bob@example.test", ["all"])))
    assert status == 403

    status, _ = call(quickstart, "alice@example.test", "ACL", work,
                     acl(("mailto:bob@example.test", ["read", "write"])))
    assert status == 200
    # The owner reads the ACL back; the sharee does not get to.
    acl_query = '<D:propfind xmlns:D="DAV:"><D:prop><D:acl/></D:prop></D:propfind>'
    status, data = call(quickstart, "alice@example.test", "PROPFIND", work, acl_query, {"Depth": "0"})
    aces = ET.fromstring(data).findall(".//{DAV:}ace")
    granted = {ace.find("{DAV:}principal/{DAV:}href").text:
               {p.tag.split("}")[1] for p in ace.find("{DAV:}grant").iter() if p.tag != "{DAV:}grant"
                and p.tag != "{DAV:}privilege"}
               for ace in aces}
    assert granted == {"/dav/principals/alice@example.test/": {"all"},
                       "/dav/principals/bob@example.test/": {"read", "write"}}, granted
    status, data = call(quickstart, "bob@example.test", "PROPFIND", work, acl_query, {"Depth": "0"})
    assert status == 207 and b"<D:ace>" not in data
    other = f"bobs-{uuid.uuid4()}"
    assert call(quickstart, "bob@example.test", "PUT",
                f"/dav/calendars/bob@example.test/shared~alice@example.test~work/{other}.ics",
                event(other))[0] == 201
    assert call(quickstart, "alice@example.test", "GET", f"{work}{other}.ics")[0] == 200

    # Refusals: deny ACEs, unknown principals, groups of everyone.
    assert call(quickstart, "alice@example.test", "ACL", work,
                '<D:acl xmlns:D="DAV:"><D:ace><D:principal><D:href>mailto:bob@example.test</D:href>'
                '</D:principal><D:deny><D:privilege><D:read/></D:privilege></D:deny></D:ace></D:acl>')[0] == 403
    assert call(quickstart, "alice@example.test", "ACL", work,
                acl(("mailto:nobody@example.test", ["read"])))[0] == 403
    assert call(quickstart, "alice@example.test", "ACL", work,
                '<D:acl xmlns:D="DAV:"><D:ace><D:principal><D:all/></D:principal>'
                '<D:grant><D:privilege><D:read/></D:privilege></D:grant></D:ace></D:acl>')[0] == 403
    assert call(quickstart, "bob@example.test", "GET", f"{work}{uid}.ics")[0] == 200

    # An empty ACL unshares.
    assert call(quickstart, "alice@example.test", "ACL", work, acl())[0] == 200
    assert call(quickstart, "bob@example.test", "GET", f"{work}{uid}.ics")[0] == 404
    records = [json.loads(line) for line in
               quickstart.admin("audit", "tail", "-n", "80", "--json").splitlines() if line.strip()]
    shares = [r for r in records if r.get("operation") == "dav.collection.share"]
    assert len(shares) == 3, shares
    assert any("bob@example.test:read-write" in " ".join(r["object_ids"]) for r in shares)
    quickstart.admin("audit", "verify")
