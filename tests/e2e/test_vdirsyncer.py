"""Two-way synchronisation with vdirsyncer (from PyPI, run as a subprocess
from the same virtualenv as pytest) between a local filesystem storage and
alice's calendars, then her address books, on the quickstart's HTTPS
listener (8443).

vdirsyncer is given only the server's base URL, so it finds the
collections itself (current-user-principal or the well-known URI, home
sets) and syncs every one it finds, as a user's "from b" configuration
does; the checks are on the default collection. It verifies the server
against the quickstart's certificate. The server
side is checked with raw http.client requests: items made locally reach
the server, changes and new items made on the server reach the local
files, deletions on either side reach the other, and a sync with nothing
to do writes nothing on either side."""

import base64
import http.client
import json
import posixpath
import ssl
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import unquote, urlsplit

HOST = "127.0.0.1"
PORT = 8443
# The demo certificate names "localhost"; vdirsyncer checks host names.
BASE_URL = "https://localhost:8443"
ALICE = "alice@example.test"
VDIRSYNCER = Path(sys.executable).with_name("vdirsyncer")
NS = {"d": "DAV:", "c": "urn:ietf:params:xml:ns:caldav", "r": "urn:ietf:params:xml:ns:carddav"}


# ---------------------------------------------------------------- raw HTTP

def connect(quickstart):
    ctx = ssl.create_default_context(cafile=str(quickstart.cert))
    ctx.check_hostname = False  # the demo certificate names "localhost"
    return http.client.HTTPSConnection(HOST, PORT, context=ctx, timeout=30)


def dav(quickstart, method, path, body=None, headers=None):
    password = quickstart.credentials()[ALICE]
    all_headers = {"Authorization": "Basic " + base64.b64encode(f"{ALICE}:{password}".encode()).decode()}
    all_headers.update(headers or {})
    conn = connect(quickstart)
    try:
        conn.request(method, path, body=body.encode() if isinstance(body, str) else body, headers=all_headers)
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


def propfind(quickstart, path, props, depth):
    body = (f'<d:propfind xmlns:d="DAV:" xmlns:c="{NS["c"]}" xmlns:r="{NS["r"]}"><d:prop>'
            + "".join(f"<{p}/>" for p in props) + "</d:prop></d:propfind>")
    response, data = dav(quickstart, "PROPFIND", path, body,
                         {"Depth": depth, "Content-Type": "application/xml; charset=utf-8"})
    assert response.status == 207, (path, response.status, data)
    return {unquote(urlsplit(r.findtext("d:href", namespaces=NS).strip()).path): r
            for r in ET.fromstring(data).findall("d:response", NS)}


def home(quickstart, kind):
    """Alice's calendar or address book home, found from the well-known URI."""
    well_known = "/.well-known/caldav" if kind == "calendar" else "/.well-known/carddav"
    response, _ = dav(quickstart, "PROPFIND", well_known, headers={"Depth": "0"})
    context = urlsplit(response.getheader("Location")).path
    found = propfind(quickstart, context, ["d:current-user-principal"], "0")
    principal = next(iter(found.values())).findtext(".//d:current-user-principal/d:href", namespaces=NS)
    prop = "c:calendar-home-set" if kind == "calendar" else "r:addressbook-home-set"
    found = propfind(quickstart, urlsplit(principal.strip()).path, [prop], "0")
    return urlsplit(next(iter(found.values())).findtext(f".//{prop}/d:href", namespaces=NS).strip()).path


def server_collections(quickstart, kind):
    """{name: decoded path} of alice's calendars or address books."""
    tag = "{urn:ietf:params:xml:ns:caldav}calendar" if kind == "calendar" else \
        "{urn:ietf:params:xml:ns:carddav}addressbook"
    found = propfind(quickstart, home(quickstart, kind), ["d:resourcetype"], "1")
    return {posixpath.basename(href.rstrip("/")): href for href, r in found.items()
            if r.find(f".//d:resourcetype/{tag}", NS) is not None}


def server_items(quickstart, collection):
    """{UID: (href, ETag, body text)} of the objects in a server collection."""
    items = {}
    for href in propfind(quickstart, collection, ["d:getetag"], "1"):
        if href.rstrip("/") == collection.rstrip("/"):
            continue
        response, data = dav(quickstart, "GET", href)
        assert response.status == 200, href
        text = data.decode()
        items[uid_of(text)] = (href, response.getheader("ETag"), text)
    return items


def sync_token(quickstart, collection):
    found = propfind(quickstart, collection, ["d:sync-token"], "0")
    return next(iter(found.values())).findtext(".//d:sync-token", namespaces=NS)


# ---------------------------------------------------------------- content

def uid_of(text):
    return next(line[4:].strip() for line in text.splitlines() if line.startswith("UID:"))


def event(uid, summary):
    return "\r\n".join(["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//bulwark e2e//EN", "BEGIN:VEVENT",
                        f"UID:{uid}", "DTSTAMP:20300101T000000Z", "DTSTART:20300301T090000Z",
                        "DTEND:20300301T100000Z", f"SUMMARY:{summary}", "END:VEVENT", "END:VCALENDAR", ""])


def card(uid, summary):
    return "\r\n".join(["BEGIN:VCARD", "VERSION:3.0", f"UID:{uid}", f"FN:{summary}",
                        f"N:{summary};;;;", "EMAIL:someone@example.org", "END:VCARD", ""])


KINDS = {
    "calendar": {"storage": "caldav", "ext": ".ics", "make": event, "summary": "SUMMARY:"},
    "addressbook": {"storage": "carddav", "ext": ".vcf", "make": card, "summary": "FN:"},
}


# ---------------------------------------------------------------- vdirsyncer

def write_config(quickstart, tmp, kind):
    """A pair syncing every collection of alice's `kind` with local folders."""
    spec = KINDS[kind]
    config = tmp / "config"
    config.write_text("\n".join([
        "[general]",
        f"status_path = {json.dumps(str(tmp / 'status') + '/')}",
        "",
        "[pair e2e]",
        'a = "local"',
        'b = "remote"',
        'collections = ["from b"]',
        'implicit = "create"',
        "",
        "[storage local]",
        'type = "filesystem"',
        f"path = {json.dumps(str(tmp / 'local') + '/')}",
        f"fileext = {json.dumps(spec['ext'])}",
        "",
        "[storage remote]",
        f"type = {json.dumps(spec['storage'])}",
        f"url = {json.dumps(BASE_URL + '/')}",
        f"username = {json.dumps(ALICE)}",
        f"password = {json.dumps(quickstart.credentials()[ALICE])}",
        f"verify = {json.dumps(str(quickstart.cert))}",
        "",
    ]))
    return config


def vdirsyncer(tmp, *args):
    """Runs vdirsyncer non-interactively; returns its log (stderr + stdout)."""
    assert VDIRSYNCER.exists(), f"{VDIRSYNCER} missing: pip install -r tests/requirements.txt"
    env = {"PATH": str(VDIRSYNCER.parent) + ":/usr/bin:/bin", "HOME": str(tmp), "LANG": "C.UTF-8"}
    done = subprocess.run([str(VDIRSYNCER), "-c", str(tmp / "config"), *args],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, env=env)
    log = done.stderr + done.stdout
    assert done.returncode == 0, log
    assert "error" not in log.lower(), log
    return log


def local_items(folder, ext):
    """{UID: (path, text, mtime_ns)} of the local files."""
    items = {}
    for path in folder.glob("*" + ext):
        text = path.read_text()
        items[uid_of(text)] = (path, text, path.stat().st_mtime_ns)
    return items


def actions(log, name):
    """The item actions vdirsyncer logged for collection `name`."""
    return {line for line in log.splitlines()
            if line.startswith(("Copying", "Deleting item")) and line.endswith(f"/{name}")}


def two_way_sync(quickstart, tmp, kind):
    spec = KINDS[kind]
    make, ext, summary = spec["make"], spec["ext"], spec["summary"]
    write_config(quickstart, tmp, kind)
    remote = server_collections(quickstart, kind)
    assert remote, f"alice has no {kind} on the server"
    name = "default" if "default" in remote else sorted(remote)[0]
    collection = remote[name]

    log = vdirsyncer(tmp, "discover")
    folder = tmp / "local" / name
    assert folder.is_dir(), (log, list((tmp / "local").iterdir()))

    # Made locally → uploaded.
    (folder / f"one{ext}").write_text(make(f"one-{kind}-e2e", "One local"))
    (folder / f"two{ext}").write_text(make(f"two-{kind}-e2e", "Two local"))
    log = vdirsyncer(tmp, "sync")
    assert actions(log, name) == {f"Copying (uploading) item {uid}-{kind}-e2e to remote/{name}"
                                  for uid in ["one", "two"]}, log
    on_server = server_items(quickstart, collection)
    assert set(on_server) == {f"one-{kind}-e2e", f"two-{kind}-e2e"}
    assert f"{summary}One local" in on_server[f"one-{kind}-e2e"][2]

    # Changed and made on the server → downloaded.
    href, etag, text = on_server[f"one-{kind}-e2e"]
    response, _ = dav(quickstart, "PUT", href, text.replace("One local", "One changed on server"),
                      {"If-Match": etag, "Content-Type": "text/calendar" if ext == ".ics" else "text/vcard"})
    assert response.status in (200, 204)
    response, _ = dav(quickstart, "PUT", collection + f"three{ext}", make(f"three-{kind}-e2e", "Three remote"),
                      {"If-None-Match": "*", "Content-Type": "text/calendar" if ext == ".ics" else "text/vcard"})
    assert response.status == 201
    log = vdirsyncer(tmp, "sync")
    assert actions(log, name) == {f"Copying (updating) item one-{kind}-e2e to local/{name}",
                                  f"Copying (uploading) item three-{kind}-e2e to local/{name}"}, log
    local = local_items(folder, ext)
    assert set(local) == {f"one-{kind}-e2e", f"two-{kind}-e2e", f"three-{kind}-e2e"}, log
    assert f"{summary}One changed on server" in local[f"one-{kind}-e2e"][1]
    assert f"{summary}Three remote" in local[f"three-{kind}-e2e"][1]

    # Deleted on each side → deleted on the other.
    local[f"two-{kind}-e2e"][0].unlink()
    href, etag, _ = server_items(quickstart, collection)[f"one-{kind}-e2e"]
    response, _ = dav(quickstart, "DELETE", href, headers={"If-Match": etag})
    assert response.status in (200, 204)
    log = vdirsyncer(tmp, "sync")
    assert actions(log, name) == {f"Deleting item one-{kind}-e2e from local/{name}",
                                  f"Deleting item two-{kind}-e2e from remote/{name}"}, log
    assert set(server_items(quickstart, collection)) == {f"three-{kind}-e2e"}
    assert set(local_items(folder, ext)) == {f"three-{kind}-e2e"}

    # Nothing to do → nothing written on either side.
    token, etags = sync_token(quickstart, collection), server_items(quickstart, collection)
    before = local_items(folder, ext)
    log = vdirsyncer(tmp, "sync")
    assert "Copying" not in log and "Deleting" not in log and "conflict" not in log, log
    assert sync_token(quickstart, collection) == token
    assert server_items(quickstart, collection) == etags
    assert local_items(folder, ext) == before


def test_vdirsyncer_calendar_two_way(quickstart, tmp_path):
    """Events go both ways between local .ics files and alice's default
    calendar: uploads, server-side changes and new events, deletions on
    both sides, and an idle sync that writes nothing."""
    two_way_sync(quickstart, tmp_path, "calendar")


def test_vdirsyncer_addressbook_two_way(quickstart, tmp_path):
    """The same for vCards between local .vcf files and alice's default
    address book."""
    two_way_sync(quickstart, tmp_path, "addressbook")
