#!/usr/bin/env python3
"""Workload of bench/dav/run: a 10k-event calendar over CalDAV.

Usage: davbench.py COMMAND ARGS...

  bulwark-config FILE HTTPS_ADDR ADMIN_ADDR
      Rewrite a configuration written by `bulwark init`: one https and one
      admin listener on loopback, a short shutdown grace.
  radicale-config FILE ADDR ROOT HTPASSWD CERT KEY
      Write a Radicale configuration (filesystem storage under ROOT,
      htpasswd auth with plain passwords, TLS with CERT/KEY).
  wait-port HOST:PORT SECONDS     wait until a TCP port accepts connections
  port-free HOST:PORT             fail if something listens there already
  write-files DIR N               events 0..N-1 as .ics files plus the
                                  .Radicale.props of a calendar in DIR
  mkcalendar URL                  MKCALENDAR (201, or 405 if it exists)
  fill URL N THREADS              PUT events 0..N-1 (If-None-Match: *)
  put URL FIRST COUNT THREADS LABEL
                                  PUT extra events FIRST..FIRST+COUNT-1
                                  (dated 2030) into the calendar
  delete URL FIRST COUNT THREADS LABEL
                                  DELETE those extra events again
  count URL                       PROPFIND Depth 1: members of the calendar
  queries URL REPEAT N OUTDIR SERVER
                                  the calendar-query measurements
  sync URL REPEAT N CHANGES OUTDIR SERVER
                                  the sync-collection measurements
  table FILE OUTDIR               result table, comparisons and target lines

URL is the calendar collection (https://host:port/path/), the account is
$BENCH_USER / $BENCH_PASSWORD, the server certificate is $BENCH_CA
(verified, host name not checked). Every measuring command prints JSON
lines on stdout. Events are generated from their number, so both servers
hold identical calendars; `expected` below computes independently which
events and instances a time range must return.
"""

import base64
import datetime as dt
import http.client
import json
import os
import random
import re
import socket
import ssl
import statistics
import sys
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
from zoneinfo import ZoneInfo

USER = os.environ.get("BENCH_USER", "bench@bench.test")
PASSWORD = os.environ.get("BENCH_PASSWORD", "")
CA = os.environ.get("BENCH_CA", "")

UTC = dt.timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
YEAR0 = dt.date(2025, 1, 1)
# Unbounded rules are expanded this far by the oracle; every query range
# lies well before it.
HORIZON = dt.datetime(2027, 1, 1, tzinfo=UTC)

# The measured queries: name, range, properties asked for, expand?
QUERIES = [
    ("month", "20250601T000000Z", "20250701T000000Z", "data", False),
    ("month-expand", "20250601T000000Z", "20250701T000000Z", "data", True),
    ("week", "20250609T000000Z", "20250616T000000Z", "data", False),
    ("month-etag", "20250601T000000Z", "20250701T000000Z", "etag", False),
]

# ---------------------------------------------------------------- events

FIRST = ("Anna Ben Carla David Emma Felix Greta Hugo Ines Jonas Karin Lukas "
         "Marie Nils Olga Paul Rita Simon Tanja Uwe Vera Willem Xenia Yusuf").split()
LAST = ("Schmidt Meyer Novak Rossi Dubois Jansen Larsen Kowalski Berg Costa "
        "Fischer Weber Wagner Becker Hoffmann Keller Lang Moreau").split()
TOPIC = ("Budget review|Team meeting|Project sync|Planning|Council session|"
         "Site visit|Training|One-on-one|Supplier call|Retrospective|"
         "Board briefing|Workshop|Interview|Lunch|Dentist").split("|")
WORDS = ("agenda minutes draft report invoice contract review schedule "
         "quarterly annual proposal committee hearing permit licence tender "
         "procurement audit policy guideline staff training network backup "
         "migration archive records request citizen service office").split()

VTIMEZONE_BERLIN = [
    "BEGIN:VTIMEZONE", "TZID:Europe/Berlin",
    "BEGIN:DAYLIGHT", "TZOFFSETFROM:+0100", "TZOFFSETTO:+0200", "TZNAME:CEST",
    "DTSTART:19700329T020000", "RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU",
    "END:DAYLIGHT",
    "BEGIN:STANDARD", "TZOFFSETFROM:+0200", "TZOFFSETTO:+0100", "TZNAME:CET",
    "DTSTART:19701025T030000", "RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU",
    "END:STANDARD",
    "END:VTIMEZONE",
]


def fold(line):
    """RFC 5545 folding at 75 octets (our text is ASCII)."""
    out = []
    while len(line) > 75:
        out.append(line[:75])
        line = " " + line[75:]
    out.append(line)
    return out


class Event:
    """One calendar object: what its text says, in a form the oracle can
    expand. `tz` is "utc", "berlin" or "date" (all-day, floating)."""

    def __init__(self, i, extra=False, variant=0):
        self.i = i
        self.variant = variant
        r = random.Random(i * 7919 + 17)
        self.rule = None        # (freq, interval, count, until_utc)
        self.exdates = []       # local start datetimes removed
        self.override = None    # (index of the moved instance, shift)
        self.override_seq = 0   # SEQUENCE of the override above the master's
        self.use_duration = i % 11 == 0
        if extra:
            # Extra events for the PUT measurements: far away from every
            # query range (2030).
            self.tz = "utc"
            self.start = dt.datetime(2030, 1, 1, 8) + dt.timedelta(
                days=r.randrange(365), hours=r.randrange(10))
            self.dur = dt.timedelta(minutes=60)
        elif i % 5 == 4:
            # A fifth recur.
            self.tz = "berlin" if i % 7 == 0 else "utc"
            day = YEAR0 + dt.timedelta(days=r.randrange(-60, 330))
            self.start = dt.datetime.combine(day, dt.time(r.randrange(7, 19), r.choice((0, 15, 30))))
            self.dur = dt.timedelta(minutes=r.choice((30, 45, 60, 90)))
            j = i // 5
            kind = j % 10
            if kind <= 3:
                self.rule = ("WEEKLY", 1, r.randrange(4, 53), None)
                if j % 3 == 0:
                    # The second instance moved by two hours; half of the
                    # overrides carry a higher SEQUENCE than the master.
                    self.override = (1, dt.timedelta(hours=2))
                    self.override_seq = (j // 3) % 2
            elif kind == 4:
                self.rule = ("DAILY", 1, r.randrange(3, 31), None)
            elif kind == 5:
                until = self.start + dt.timedelta(days=r.randrange(5, 60), hours=1)
                self.rule = ("DAILY", 1, None, self.utc(until))
                self.exdates = [self.start + dt.timedelta(days=2)]
            elif kind == 6:
                until = self.start + dt.timedelta(days=r.randrange(30, 200), hours=1)
                self.rule = ("WEEKLY", 1, None, self.utc(until))
            elif kind == 7:
                self.start = self.start.replace(day=min(self.start.day, 28))
                self.rule = ("MONTHLY", 1, 12, None)
            elif kind == 8:
                self.rule = ("WEEKLY", 1, None, None)   # never ends
            else:
                self.rule = ("WEEKLY", 2, 26, None)
        elif i % 25 == 3:
            self.tz = "date"
            self.start = YEAR0 + dt.timedelta(days=r.randrange(365))
            self.dur = dt.timedelta(days=r.choice((1, 1, 1, 2, 3)))
        else:
            self.tz = "berlin" if i % 7 == 0 else "utc"
            day = YEAR0 + dt.timedelta(days=r.randrange(365))
            self.start = dt.datetime.combine(day, dt.time(r.randrange(7, 19), r.choice((0, 15, 30, 45))))
            self.dur = dt.timedelta(minutes=r.choice((15, 30, 30, 60, 60, 60, 90, 120)))
        self.summary = "%s %d" % (r.choice(TOPIC), i)
        self.location = "Room %d.%02d" % (r.randrange(1, 6), r.randrange(1, 40))
        self.description = " ".join(r.choice(WORDS) for _ in range(r.randrange(8, 40)))
        self.people = [(r.choice(FIRST), r.choice(LAST)) for _ in range(r.randrange(1, 5))]

    @property
    def name(self):
        return "ev%05d.ics" % self.i

    @property
    def uid(self):
        return "dav-bench-%05d@bench.test" % self.i

    def utc(self, local):
        """A local start as an aware UTC datetime."""
        if self.tz == "berlin":
            return local.replace(tzinfo=BERLIN).astimezone(UTC)
        if self.tz == "date":
            return dt.datetime.combine(local, dt.time(0), tzinfo=UTC)
        return local.replace(tzinfo=UTC)

    def fmt(self, local):
        """DTSTART-style parameter and value for a local start."""
        if self.tz == "date":
            return ";VALUE=DATE", local.strftime("%Y%m%d")
        if self.tz == "berlin":
            return ";TZID=Europe/Berlin", local.strftime("%Y%m%dT%H%M%S")
        return "", local.strftime("%Y%m%dT%H%M%SZ")

    def local_starts(self):
        """The recurrence set's local starts (before EXDATE), up to the
        oracle's horizon."""
        if not self.rule:
            return [self.start]
        freq, interval, count, until = self.rule
        out, k = [], 0
        while True:
            if count is not None and k >= count:
                break
            if freq == "DAILY":
                s = self.start + dt.timedelta(days=k * interval)
            elif freq == "WEEKLY":
                s = self.start + dt.timedelta(weeks=k * interval)
            else:
                m = self.start.month - 1 + k * interval
                s = self.start.replace(year=self.start.year + m // 12, month=m % 12 + 1)
            u = self.utc(s)
            if until is not None and u > until:
                break
            if u >= HORIZON:
                break
            out.append(s)
            k += 1
        return out

    def instances(self):
        """(start, end) of every instance in UTC, overrides applied."""
        out = []
        for k, s in enumerate(self.local_starts()):
            if s in self.exdates:
                continue
            if self.override and self.override[0] == k:
                s = s + self.override[1]
            out.append((self.utc(s), self.utc(s + self.dur)))
        return out

    def vevent(self, start, recurrence_id=None):
        p, v = self.fmt(start)
        lines = ["BEGIN:VEVENT", "UID:" + self.uid, "DTSTAMP:20241201T000000Z"]
        if recurrence_id is not None:
            rp, rv = self.fmt(recurrence_id)
            lines.append("RECURRENCE-ID%s:%s" % (rp, rv))
        lines.append("DTSTART%s:%s" % (p, v))
        if self.use_duration and self.tz != "date":
            lines.append("DURATION:PT%dM" % (self.dur.total_seconds() // 60))
        else:
            ep, ev = self.fmt(start + self.dur)
            lines.append("DTEND%s:%s" % (ep, ev))
        if self.rule and recurrence_id is None:
            freq, interval, count, until = self.rule
            rr = "FREQ=" + freq
            if interval != 1:
                rr += ";INTERVAL=%d" % interval
            if freq == "MONTHLY":
                rr += ";BYMONTHDAY=%d" % self.start.day
            if count is not None:
                rr += ";COUNT=%d" % count
            if until is not None:
                rr += ";UNTIL=" + until.strftime("%Y%m%dT%H%M%SZ")
            lines.append("RRULE:" + rr)
            for x in self.exdates:
                xp, xv = self.fmt(x)
                lines.append("EXDATE%s:%s" % (xp, xv))
        lines.append("SEQUENCE:%d" % (self.variant + (self.override_seq if recurrence_id is not None else 0)))
        summary = self.summary + (" (changed %d)" % self.variant if self.variant else "")
        if recurrence_id is not None:
            summary += " (moved)"
        lines.append("SUMMARY:" + summary)
        lines.append("LOCATION:" + self.location)
        lines.append("DESCRIPTION:" + self.description)
        (of, ol) = self.people[0]
        lines.append("ORGANIZER;CN=%s %s:mailto:%s.%s@example.org" % (of, ol, of.lower(), ol.lower()))
        for f, l in self.people[1:]:
            lines.append("ATTENDEE;CN=%s %s;PARTSTAT=ACCEPTED;ROLE=REQ-PARTICIPANT:"
                         "mailto:%s.%s@example.org" % (f, l, f.lower(), l.lower()))
        lines.append("TRANSP:OPAQUE" if self.tz != "date" else "TRANSP:TRANSPARENT")
        lines.append("END:VEVENT")
        return lines

    def ics(self):
        lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//Bulwark bench//dav-bench//EN",
                 "CALSCALE:GREGORIAN"]
        if self.tz == "berlin":
            lines += VTIMEZONE_BERLIN
        lines += self.vevent(self.start)
        if self.override:
            k, shift = self.override
            orig = self.local_starts()[k]
            lines += self.vevent(orig + shift, recurrence_id=orig)
        lines.append("END:VCALENDAR")
        out = []
        for line in lines:
            out += fold(line)
        return ("\r\n".join(out) + "\r\n").encode()


def parse_utc(s):
    return dt.datetime.strptime(s, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def expected(n, start, end, pairs=False):
    """The oracle: {name: instances overlapping [start, end)} for events
    0..n-1 (RFC 4791 9.9: an instance overlaps when it starts before the
    end and ends after the start). With `pairs`, {name: sorted
    "RECURRENCE-ID/DTSTART" strings in UTC} of the recurring ones: what an
    expanded answer must hold."""
    s, e = parse_utc(start), parse_utc(end)
    out = {}
    for i in range(n):
        ev = Event(i)
        if pairs:
            if not ev.rule:
                continue
            got = []
            for k, orig in enumerate(ev.local_starts()):
                if orig in ev.exdates:
                    continue
                st = orig + ev.override[1] if ev.override and ev.override[0] == k else orig
                if ev.utc(st) < e and ev.utc(st + ev.dur) > s:
                    got.append("%s/%s" % (ev.utc(orig).strftime("%Y%m%dT%H%M%SZ"),
                                          ev.utc(st).strftime("%Y%m%dT%H%M%SZ")))
            if got:
                out[ev.name] = sorted(got)
            continue
        k = sum(1 for a, b in ev.instances() if a < e and b > s)
        if k:
            out[ev.name] = k
    return out


def utc_value(line):
    """A DTSTART or RECURRENCE-ID content line's value in UTC."""
    head, _, value = line.partition(":")
    tzid = re.search(r";TZID=([^;:]+)", head, re.I)
    value = value.strip()
    if value.endswith("Z") or len(value) == 8:
        return value
    try:
        t = dt.datetime.strptime(value, "%Y%m%dT%H%M%S")
        if tzid:
            t = t.replace(tzinfo=ZoneInfo(tzid.group(1).strip('"'))).astimezone(UTC)
        return t.strftime("%Y%m%dT%H%M%SZ")
    except (ValueError, KeyError):
        return value


def instance_pairs(text):
    """Sorted "RECURRENCE-ID/DTSTART" (UTC) of the VEVENTs of calendar
    data that carry a RECURRENCE-ID."""
    lines = re.sub(r"\r?\n[ \t]", "", text).splitlines()
    out, rid, start, depth = [], None, None, 0
    for l in lines:
        u = l.strip().upper()
        if u == "BEGIN:VEVENT":
            rid, start, depth = None, None, 1
        elif u.startswith("BEGIN:") and depth:
            depth += 1
        elif u == "END:VEVENT":
            if rid is not None:
                out.append("%s/%s" % (rid, start))
            depth = 0
        elif u.startswith("END:") and depth:
            depth -= 1
        elif depth == 1 and u.startswith("RECURRENCE-ID"):
            rid = utc_value(l)
        elif depth == 1 and u.startswith("DTSTART"):
            start = utc_value(l)
    return sorted(out)


# ---------------------------------------------------------------- HTTP

def ssl_context():
    ctx = ssl.create_default_context(cafile=CA or None)
    ctx.check_hostname = False
    return ctx


class Client:
    """One HTTPS connection with Basic auth, kept alive when the server
    allows it, reopened when the server closes it."""

    def __init__(self, url):
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname, u.port
        self.path = u.path
        self.ctx = ssl_context()
        self.auth = "Basic " + base64.b64encode(("%s:%s" % (USER, PASSWORD)).encode()).decode()
        self.conn = None
        self.connects = 0

    def request(self, method, path, body=None, headers=None):
        h = {"Authorization": self.auth}
        if headers:
            h.update(headers)
        for attempt in (0, 1):
            fresh = self.conn is None
            if fresh:
                self.conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=900)
                self.connects += 1
            try:
                self.conn.request(method, path, body, h)
                r = self.conn.getresponse()
                data = r.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    ssl.SSLEOFError):
                # A kept-alive connection the server had closed: retry once
                # on a new one (never for a fresh connection).
                self.close()
                if fresh or attempt:
                    raise
                continue
            if r.will_close:
                self.close()
            return r.status, r.headers, data
        raise RuntimeError("unreachable")

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def check(status, want, what, data=b""):
    if status not in want:
        sys.exit("%s: HTTP %d (wanted %s): %s" % (what, status, "/".join(map(str, want)),
                                                   data[:500].decode("utf-8", "replace")))


def cpu_now():
    t = os.times()
    return t.user + t.system


def run_pool(url, items, threads, fn):
    """Run fn(client, item) for every item over `threads` connections;
    returns (wall seconds, client CPU seconds, per-item latencies)."""
    lock = threading.Lock()
    it = iter(items)
    lat, errors = [], []

    def worker():
        c = Client(url)
        try:
            while True:
                with lock:
                    try:
                        x = next(it)
                    except StopIteration:
                        return
                t0 = time.perf_counter()
                fn(c, x)
                t1 = time.perf_counter()
                with lock:
                    lat.append(t1 - t0)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            c.close()

    ws = [threading.Thread(target=worker) for _ in range(threads)]
    c0, t0 = cpu_now(), time.perf_counter()
    for w in ws:
        w.start()
    for w in ws:
        w.join()
    t1, c1 = time.perf_counter(), cpu_now()
    if errors:
        e = errors[0]
        sys.exit("%s (and %d more errors)" % (e, len(errors) - 1) if not isinstance(e, SystemExit)
                 else "%s (and %d more errors)" % (e.code, len(errors) - 1))
    return t1 - t0, c1 - c0, lat


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else 0


def put_events(url, events, threads, label, if_none_match=True):
    path = urllib.parse.urlsplit(url).path
    bodies = [(e.name, e.ics()) for e in events]

    def put(c, x):
        name, body = x
        h = {"Content-Type": "text/calendar; charset=utf-8"}
        if if_none_match:
            h["If-None-Match"] = "*"
        st, _, data = c.request("PUT", path + name, body, h)
        check(st, (201, 204) if not if_none_match else (201,), "PUT " + name, data)

    secs, cpu, lat = run_pool(url, bodies, threads, put)
    n = len(bodies)
    print(json.dumps({"phase": label, "events": n, "threads": threads, "secs": round(secs, 3),
                      "rate": round(n / secs, 1), "p50_ms": round(pct(lat, 50) * 1e3, 2),
                      "p99_ms": round(pct(lat, 99) * 1e3, 2),
                      "max_ms": round(max(lat) * 1e3, 1), "client_cpu": round(cpu / secs, 2)}), flush=True)


def delete_events(url, names, threads, label):
    path = urllib.parse.urlsplit(url).path

    def delete(c, name):
        st, _, data = c.request("DELETE", path + name)
        check(st, (200, 204), "DELETE " + name, data)

    secs, cpu, lat = run_pool(url, names, threads, delete)
    n = len(names)
    print(json.dumps({"phase": label, "events": n, "threads": threads, "secs": round(secs, 3),
                      "rate": round(n / secs, 1), "p50_ms": round(pct(lat, 50) * 1e3, 2),
                      "p99_ms": round(pct(lat, 99) * 1e3, 2),
                      "max_ms": round(max(lat) * 1e3, 1), "client_cpu": round(cpu / secs, 2)}), flush=True)


# ---------------------------------------------------------------- reports

D = "{DAV:}"
C = "{urn:ietf:params:xml:ns:caldav}"


def query_body(start, end, props, expand):
    if props == "etag":
        prop = "<D:getetag/>"
    elif expand:
        prop = '<D:getetag/><C:calendar-data><C:expand start="%s" end="%s"/></C:calendar-data>' % (start, end)
    else:
        prop = "<D:getetag/><C:calendar-data/>"
    return ('<?xml version="1.0" encoding="utf-8"?>\n'
            '<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
            "<D:prop>%s</D:prop>"
            '<C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">'
            '<C:time-range start="%s" end="%s"/>'
            "</C:comp-filter></C:comp-filter></C:filter></C:calendar-query>"
            % (prop, start, end)).encode()


def sync_body(token):
    tok = "<D:sync-token>%s</D:sync-token>" % token if token else "<D:sync-token/>"
    return ('<?xml version="1.0" encoding="utf-8"?>\n'
            '<D:sync-collection xmlns:D="DAV:">%s<D:sync-level>1</D:sync-level>'
            "<D:prop><D:getetag/></D:prop></D:sync-collection>" % tok).encode()


def parse_multistatus(data):
    """{name: (status-ish, number of VEVENTs in its calendar-data, the
    "RECURRENCE-ID/DTSTART" pairs of those)} and the sync-token, from a
    multistatus."""
    root = ET.fromstring(data)
    out = {}
    for resp in root.iter(D + "response"):
        href = resp.findtext(D + "href") or ""
        name = urllib.parse.unquote(href.rstrip("/").rsplit("/", 1)[-1])
        status = resp.findtext(D + "status")
        vevents, pairs = 0, []
        if status is None:
            ok = False
            for ps in resp.iter(D + "propstat"):
                st = ps.findtext(D + "status") or ""
                if " 200 " in st:
                    ok = True
                    cd = ps.find(D + "prop/" + C + "calendar-data")
                    if cd is not None and cd.text:
                        vevents = sum(1 for l in cd.text.splitlines() if l.strip().upper() == "BEGIN:VEVENT")
                        pairs = instance_pairs(cd.text)
            status = "200" if ok else "no-200"
        else:
            status = status.split()[1] if len(status.split()) > 1 else status
        if name in out:
            sys.exit("href %s answered twice" % href)
        out[name] = (status, vevents, pairs)
    return out, root.findtext(D + "sync-token")


def report(c, path, body):
    t0 = time.perf_counter()
    st, _, data = c.request("REPORT", path, body, {"Depth": "1", "Content-Type": "application/xml; charset=utf-8"})
    t1 = time.perf_counter()
    check(st, (207,), "REPORT", data)
    return t1 - t0, data


def summary(times):
    return {"median_ms": round(statistics.median(times) * 1e3, 2),
            "min_ms": round(min(times) * 1e3, 2), "max_ms": round(max(times) * 1e3, 2),
            "runs": len(times)}


def cmd_queries(url, repeat, n, outdir, server):
    c = Client(url)
    path = urllib.parse.urlsplit(url).path
    # The connection is opened (and the credentials proven) outside the
    # timings, with a request that touches no event.
    st, _, data = c.request("PROPFIND", path, b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop>'
                            b"<D:resourcetype/></D:prop></D:propfind>", {"Depth": "0"})
    check(st, (207,), "PROPFIND", data)
    first = True
    for name, start, end, props, expand in QUERIES:
        body = query_body(start, end, props, expand)
        times, answers = [], []
        runs = repeat + (1 if first else 0)
        for k in range(runs):
            secs, data = report(c, path, body)
            if first and k == 0:
                # The first query after the server started: Radicale builds
                # its item cache here.
                got, _ = parse_multistatus(data)
                print(json.dumps({"phase": "first-query", "query": name, "ms": round(secs * 1e3, 1),
                                  "hrefs": len(got)}), flush=True)
                continue
            times.append(secs)
            answers.append(data)
        first = False
        got, _ = parse_multistatus(answers[-1])
        for a in answers[:-1]:
            if parse_multistatus(a)[0] != got:
                sys.exit("query %s: answers differ between runs" % name)
        bad = {k: v for k, v in got.items() if v[0] != "200"}
        res = {"phase": "query", "query": name, "range": "%s/%s" % (start, end), "props": props,
               "expand": expand, "hrefs": len(got), "not_ok": len(bad),
               "instances": sum(v[1] for v in got.values()) if props == "data" else None,
               "bytes": len(answers[-1])}
        res.update(summary(times))
        with open(os.path.join(outdir, "%s-%s.json" % (server, name)), "w") as f:
            json.dump({k: v[1] for k, v in got.items()}, f, sort_keys=True)
        if expand:
            with open(os.path.join(outdir, "%s-%s-pairs.json" % (server, name)), "w") as f:
                json.dump({k: v[2] for k, v in got.items() if v[2]}, f, sort_keys=True)
        print(json.dumps(res), flush=True)
    c.close()


def cmd_sync(url, repeat, n, changes, outdir, server):
    c = Client(url)
    path = urllib.parse.urlsplit(url).path
    st, _, data = c.request("PROPFIND", path, b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop>'
                            b"<D:resourcetype/></D:prop></D:propfind>", {"Depth": "0"})
    check(st, (207,), "PROPFIND", data)

    def timed_sync(token, label, extra):
        times, last = [], None
        if not token:
            # The first sync: Radicale records the history of every item
            # here. Reported, not part of the median.
            secs, _ = report(c, path, sync_body(token))
            print(json.dumps({"phase": "first-sync", "ms": round(secs * 1e3, 1)}), flush=True)
        for _ in range(repeat):
            secs, data = report(c, path, sync_body(token))
            times.append(secs)
            last = data
        got, tok = parse_multistatus(last)
        if not tok:
            sys.exit("sync-collection (%s) answered without a sync-token" % label)
        statuses = {}
        for st_, _, _ in got.values():
            statuses[st_] = statuses.get(st_, 0) + 1
        res = {"phase": "sync", "sync": label, "hrefs": len(got), "statuses": statuses}
        res.update(extra)
        res.update(summary(times))
        print(json.dumps(res), flush=True)
        with open(os.path.join(outdir, "%s-sync-%s.json" % (server, label)), "w") as f:
            json.dump({k: v[0] for k, v in got.items()}, f, sort_keys=True)
        return tok, got

    t0, got0 = timed_sync("", "initial", {"expected": n})
    # CHANGES changes: 60% modified, 20% deleted, 20% new, spread over the
    # calendar and made over HTTP, one after the other.
    n_del = changes // 5
    n_new = changes // 5
    n_mod = changes - n_del - n_new
    step = max(1, n // (n_mod + n_del))
    picks = [(k * step + 1) % n for k in range(n_mod + n_del)]
    mods, dels = picks[:n_mod], picks[n_mod:]
    news = [n + k for k in range(n_new)]
    ops = [("mod", i) for i in mods] + [("del", i) for i in dels] + [("new", i) for i in news]
    lat = []
    w0 = time.perf_counter()
    for op, i in ops:
        a = time.perf_counter()
        if op == "del":
            st, _, data = c.request("DELETE", path + Event(i).name)
            check(st, (200, 204), "DELETE", data)
        else:
            ev = Event(i, variant=1 if op == "mod" else 0)
            h = {"Content-Type": "text/calendar; charset=utf-8"}
            h["If-Match" if op == "mod" else "If-None-Match"] = "*"
            st, _, data = c.request("PUT", path + ev.name, ev.ics(), h)
            check(st, (204, 201, 200) if op == "mod" else (201,), "PUT", data)
        lat.append(time.perf_counter() - a)
    w1 = time.perf_counter()
    print(json.dumps({"phase": "changes", "changes": len(ops), "modified": n_mod, "deleted": n_del,
                      "created": n_new, "secs": round(w1 - w0, 3), "rate": round(len(ops) / (w1 - w0), 1),
                      "p50_ms": round(pct(lat, 50) * 1e3, 2)}), flush=True)
    t1, got1 = timed_sync(t0, "after-changes", {"expected": len(ops), "expected_deleted": n_del})
    want = {Event(i).name for _, i in ops}
    if set(got1) != want:
        sys.exit("sync after %d changes: got %d hrefs, %d of them not changed, %d changes missing"
                 % (len(ops), len(got1), len(set(got1) - want), len(want - set(got1))))
    t2, got2 = timed_sync(t1, "no-changes", {"expected": 0})
    c.close()


def cmd_table(results, outdir):
    rs = [json.loads(l) for l in open(results) if l.strip()]

    def get(server, **kw):
        for r in rs:
            if r.get("server") == server and all(r.get(k) == v for k, v in kw.items()):
                return r
        return None

    servers = [s for s in ("bulwark", "radicale") if any(r.get("server") == s for r in rs)]
    meta = get("run", phase="meta") or {}
    n = meta.get("events", 0)
    failures = []
    notes = []
    lines = []
    out = lines.append

    def ms(r, key="median_ms"):
        return "%.1f" % r[key] if r else "-"

    def fx(x):
        return "-" if not x else ("%.1fx" % x if x < 10 else "%.0fx" % x)

    def ratio(b, rd, key="median_ms"):
        if b and rd and b[key] > 0:
            return rd[key] / b[key]
        return None

    # ---- queries
    out("Warm queries, median of REPEAT runs (Bulwark %s, Radicale %s); ratio = Radicale / Bulwark"
        % (meta.get("repeat", "?"), meta.get("radicale_repeat", "?")))
    out("| query | range | asks for | hrefs | instances | bulwark ms | radicale ms | ratio | bytes bulwark / radicale |")
    out("|---|---|---|--:|--:|--:|--:|--:|--:|")
    oracle = {}
    targets = []
    for name, start, end, props, expand in QUERIES:
        b, rd = get("bulwark", phase="query", query=name), get("radicale", phase="query", query=name)
        want = oracle.setdefault((start, end), expected(n, start, end))
        hrefs = b["hrefs"] if b else (rd["hrefs"] if rd else "-")
        inst = (b or rd or {}).get("instances")
        # Compare answers with each other and with the oracle.
        answers = {}
        for s in servers:
            p = os.path.join(outdir, "%s-%s.json" % (s, name))
            if os.path.exists(p):
                answers[s] = json.load(open(p))
        for s, a in answers.items():
            if set(a) != set(want):
                failures.append("%s %s: %d hrefs, oracle %d (%d missing, %d extra; e.g. missing %s extra %s)" % (
                    s, name, len(a), len(want), len(set(want) - set(a)), len(set(a) - set(want)),
                    sorted(set(want) - set(a))[:5], sorted(set(a) - set(want))[:5]))
            elif expand:
                diff = sorted(k for k in want if a[k] != want[k])
                if diff:
                    failures.append("%s %s: number of expanded instances differs from the oracle for %d events "
                                    "(got/expected), e.g. %s" % (
                                        s, name, len(diff), ", ".join("%s %d/%d" % (k, a[k], want[k]) for k in diff[:5])))
                pp = os.path.join(outdir, "%s-%s-pairs.json" % (s, name))
                wp = expected(n, start, end, pairs=True)
                gp = json.load(open(pp)) if os.path.exists(pp) else {}
                bad = sorted(k for k in wp if gp.get(k) != wp[k])
                if bad:
                    k = bad[0]
                    failures.append("%s %s: RECURRENCE-ID/DTSTART (UTC) of expanded instances differ from the "
                                    "oracle for %d recurring events, e.g. %s: got %s, expected %s" % (
                                        s, name, len(bad), k, gp.get(k), wp[k]))
        if len(answers) == 2:
            a, z = answers["bulwark"], answers["radicale"]
            if set(a) != set(z):
                failures.append("%s: Bulwark and Radicale disagree: %d vs %d hrefs" % (name, len(a), len(z)))
            elif expand and a != z:
                failures.append("%s: Bulwark and Radicale disagree on expanded instances of %d events" % (
                    name, sum(1 for k in a if a[k] != z[k])))
        for s, r in (("bulwark", b), ("radicale", rd)):
            if r and r["not_ok"]:
                failures.append("%s %s: %d hrefs without a 200 propstat" % (s, name, r["not_ok"]))
        x = ratio(b, rd)
        out("| %s | %s | %s | %s | %s | %s | %s | %s | %s / %s |" % (
            name, start[:8] + "–" + end[:8], ("etag+data, expand" if expand else
                                             ("etag+data" if props == "data" else "etag")),
            hrefs, inst if inst is not None else "-", ms(b), ms(rd),
            fx(x), b["bytes"] if b else "-", rd["bytes"] if rd else "-"))
        if props == "data":
            targets.append(("time-range query %s" % name, x, 100))
    fq = [(s, get(s, phase="first-query")) for s in servers]
    out("")
    out("First query after the server started (%s): %s" % (
        QUERIES[0][0], ", ".join("%s %.0f ms" % (s, r["ms"]) for s, r in fq if r)))

    # ---- sync
    out("")
    out("sync-collection (DAV:getetag only), median; 'after-changes' is from the token of the initial sync")
    out("| sync | hrefs | bulwark ms | radicale ms | ratio |")
    out("|---|--:|--:|--:|--:|")
    for label in ("initial", "after-changes", "no-changes"):
        b, rd = get("bulwark", phase="sync", sync=label), get("radicale", phase="sync", sync=label)
        for s, r in (("bulwark", b), ("radicale", rd)):
            live = r["statuses"].get("200", 0) if r else 0
            if r and label == "initial" and live == r["expected"] and r["hrefs"] > live:
                notes.append("%s lists %d deleted members (404) in an initial sync, besides the %d that exist" % (
                    s, r["hrefs"] - live, live))
            elif r and r["hrefs"] != r["expected"]:
                failures.append("%s sync %s: %d hrefs, expected %d (%s)" % (
                    s, label, r["hrefs"], r["expected"], r["statuses"]))
            if r and label == "after-changes" and r["statuses"].get("404", 0) != r["expected_deleted"]:
                failures.append("%s sync after changes: %s, expected %d deleted (404)" % (
                    s, r["statuses"], r["expected_deleted"]))
        x = ratio(b, rd)
        hs = sorted({r["hrefs"] for r in (b, rd) if r})
        hrefs = " / ".join("%s %d" % (s, r["hrefs"]) for s, r in (("bulwark", b), ("radicale", rd))
                           if r) if len(hs) > 1 else (hs[0] if hs else "-")
        out("| %s | %s | %s | %s | %s |" % (label, hrefs, ms(b), ms(rd), fx(x)))
    fs = [(s, get(s, phase="first-sync")) for s in servers]
    out("")
    out("First sync-collection (empty token), not in the median: " + ", ".join(
        "%s %.0f ms" % (s, r["ms"]) for s, r in fs if r))
    for note in notes:
        out("Note: " + note)
    ch = {s: get(s, phase="changes") for s in servers}
    out("")
    out("The changes themselves (serial, one connection): " + "; ".join(
        "%s %d in %.2f s (%.0f/s, p50 %.1f ms)" % (s, r["changes"], r["secs"], r["rate"], r["p50_ms"])
        for s, r in ch.items() if r))

    # ---- PUT
    out("")
    out("PUT / DELETE (events/s = events / wall time)")
    out("| server | what | connections | events | secs | events/s | p50 ms | p99 ms | server cpu | server µs/event | client cpu |")
    out("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r in rs:
        if r.get("phase", "").startswith(("fill", "put", "delete")):
            cpu = r.get("server_cpu_s")
            out("| %s | %s | %d | %d | %.2f | %.0f | %.2f | %.2f | %s | %s | %d%% |" % (
                r["server"], r["phase"], r["threads"], r["events"], r["secs"], r["rate"],
                r["p50_ms"], r["p99_ms"], "%d%%" % (100 * cpu / r["secs"]) if cpu is not None else "-",
                "%.0f" % (1e6 * cpu / r["events"]) if cpu is not None else "-", r["client_cpu"] * 100))
    out("(cpu: CPU seconds per wall second, 100% = one core; client = the Python load generator)")
    for label in ("fill", "put-pool"):
        r = get("bulwark", phase=label)
        if r:
            targets.append(("PUT %s, %d connections (events/s)" % (label, r["threads"]), r["rate"], 1000))

    # ---- memory
    out("")
    mem = [r for r in rs if r.get("phase") == "rss"]
    out("Peak RSS (VmHWM): " + "; ".join("%s %s %.1f MiB" % (r["server"], r["when"], r["kib"] / 1024) for r in mem))
    busy = [r for r in rs if r.get("phase") == "busy"]
    if busy:
        out("Machine CPU busy before phases (cores): " + ", ".join(
            "%s/%s %.2f" % (r["server"], r["when"], r["cores"]) for r in busy))

    # ---- targets
    out("")
    for what, x, goal in targets:
        if x is None:
            out("target %-45s >= %g: not measured" % (what, goal))
        else:
            out("target %-45s >= %g: %10.1f  %s" % (what, goal, x, "MET" if x >= goal else "MISSED"))
    b0, b1, bi = (get("bulwark", phase="sync", sync=l) for l in ("no-changes", "after-changes", "initial"))
    if b0 and b1 and bi:
        k = b1["hrefs"]
        budget = 3 * k / max(1, bi["hrefs"]) * bi["median_ms"]
        extra = b1["median_ms"] - b0["median_ms"]
        out("target %-45s : %.2f ms for %d changes vs %.2f ms for none and %.2f ms for all %d; "
            "the %d changes cost %.2f ms, allowed 3 x %d/%d of the full sync = %.2f ms  %s" % (
                "sync-collection proportional to changes", b1["median_ms"], k, b0["median_ms"],
                bi["median_ms"], bi["hrefs"], k, extra, k, bi["hrefs"], budget,
                "MET" if extra <= budget else "MISSED"))
    out("")
    if failures:
        out("CORRECTNESS PROBLEMS:")
        for f in failures:
            out("  - " + f)
    else:
        out("answers: every query returned the same hrefs (and expanded instances) on both servers, "
            "equal to the independent expectation; sync answers had the expected hrefs")
    print("\n".join(lines))
    return 1 if failures else 0


# ---------------------------------------------------------------- setup

def cmd_bulwark_config(path, https, admin):
    text = open(path, encoding="utf-8").read()
    out, skip = [], False
    for line in text.splitlines():
        h = re.match(r"^\s*(\[\[?)([A-Za-z_.]+)\]\]?\s*$", line)
        if h:
            skip = h.group(1) == "[[" and h.group(2) == "listener"
            if skip:
                continue
        elif skip:
            continue
        if re.match(r"^\s*shutdown_grace_secs\s*=", line):
            line = "shutdown_grace_secs = 5"
        if os.environ.get("BULWARK_LOG_LEVEL") and re.match(r"^\s*level\s*=", line):
            line = "level = %s" % json.dumps(os.environ["BULWARK_LOG_LEVEL"])
        out.append(line)
    # Listeners last: nothing may follow an array-of-tables block.
    out.append('\n[[listener]]\nprotocol = "https"\nbind = "%s"\n' % https)
    out.append('[[listener]]\nprotocol = "admin"\nbind = "%s"\n' % admin)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")


def cmd_radicale_config(path, addr, root, htpasswd, cert, key):
    extra = os.environ.get("RADICALE_STORAGE_EXTRA", "")
    with open(path, "w") as f:
        f.write("""# Private Radicale for bench/dav/run: defaults except where noted.
[server]
hosts = %s
ssl = True
certificate = %s
key = %s

[auth]
type = htpasswd
htpasswd_filename = %s
htpasswd_encryption = plain

[storage]
type = multifilesystem
filesystem_folder = %s
%s

[logging]
level = %s
""" % (addr, cert, key, htpasswd, root, extra.replace(";", "\n"), os.environ.get("RADICALE_LOG_LEVEL", "info")))


def cmd_write_files(d, n):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, ".Radicale.props"), "w") as f:
        json.dump({"C:supported-calendar-component-set": "VEVENT", "D:displayname": "dav-bench",
                   "tag": "VCALENDAR"}, f)
    t0 = time.perf_counter()
    size = 0
    for i in range(n):
        ev = Event(i)
        data = ev.ics()
        size += len(data)
        with open(os.path.join(d, ev.name), "wb") as f:
            f.write(data)
    print(json.dumps({"phase": "write-files", "events": n, "bytes": size,
                      "secs": round(time.perf_counter() - t0, 2)}), flush=True)


def addr(s):
    host, _, port = s.rpartition(":")
    return host, int(port)


def cmd_wait_port(a, secs):
    deadline = time.time() + float(secs)
    while time.time() < deadline:
        try:
            socket.create_connection(addr(a), timeout=1).close()
            return 0
        except OSError:
            time.sleep(0.1)
    return 1


def cmd_port_free(a):
    try:
        socket.create_connection(addr(a), timeout=1).close()
    except OSError:
        return
    sys.exit("something already listens on %s" % a)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    c, a = sys.argv[1], sys.argv[2:]
    if c == "bulwark-config":
        cmd_bulwark_config(*a)
    elif c == "radicale-config":
        cmd_radicale_config(*a)
    elif c == "wait-port":
        sys.exit(cmd_wait_port(*a))
    elif c == "port-free":
        cmd_port_free(*a)
    elif c == "write-files":
        cmd_write_files(a[0], int(a[1]))
    elif c == "mkcalendar":
        cl = Client(a[0])
        st, _, data = cl.request("MKCALENDAR", cl.path)
        check(st, (201,), "MKCALENDAR", data)
    elif c == "count":
        cl = Client(a[0])
        st, _, data = cl.request("PROPFIND", cl.path, b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:">'
                                 b"<D:prop><D:getetag/></D:prop></D:propfind>", {"Depth": "1"})
        check(st, (207,), "PROPFIND", data)
        got, _ = parse_multistatus(data)
        print(len(got) - 1)
    elif c == "fill":
        n, threads = int(a[1]), int(a[2])
        put_events(a[0], [Event(i) for i in range(n)], threads, "fill")
    elif c == "put":
        first, count, threads = int(a[1]), int(a[2]), int(a[3])
        put_events(a[0], [Event(i, extra=True) for i in range(first, first + count)], threads, a[4])
    elif c == "delete":
        first, count, threads = int(a[1]), int(a[2]), int(a[3])
        delete_events(a[0], [Event(i, extra=True).name for i in range(first, first + count)], threads, a[4])
    elif c == "queries":
        cmd_queries(a[0], int(a[1]), int(a[2]), a[3], a[4])
    elif c == "sync":
        cmd_sync(a[0], int(a[1]), int(a[2]), int(a[3]), a[4], a[5])
    elif c == "table":
        sys.exit(cmd_table(a[0], a[1]))
    elif c == "ics":
        sys.stdout.write(Event(int(a[0])).ics().decode())
    elif c == "expected":
        got = expected(int(a[0]), a[1], a[2])
        print(len(got), sum(got.values()))
    else:
        sys.exit("unknown command %s\n%s" % (c, __doc__))


if __name__ == "__main__":
    main()
