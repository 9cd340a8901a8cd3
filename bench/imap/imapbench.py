#!/usr/bin/env python3
"""Client side of bench/imap/run: the test mailbox, the IMAP load and the
result table. Standard library only (asyncio + ssl); Linux only (/proc).

Subcommands, all called by bench/imap/run:

  bulwark-config FILE IMAPS_ADDR ADMIN_ADDR
      Rewrite a configuration written by `bulwark init`: replace its
      listeners by one imaps and one admin listener on loopback and raise
      the limits that 1000+ sessions of one account from one address hit.
  wait-port HOST:PORT SECONDS        wait until a TCP port accepts connections
  port-free HOST:PORT                fail if something listens there already
  maildir DIR N                      write messages 1..N as Maildir files
  fill HOST:PORT N SESSIONS          APPEND messages 1..N over SESSIONS sessions
  first-select HOST:PORT N           time one SELECT INBOX, check EXISTS = N
  idle HOST:PORT SESSIONS PIDSPEC    memory of SESSIONS idle IDLE sessions
  single HOST:PORT N                 single-client measurements
  mixed HOST:PORT N CLIENTS SECS     multi-client mixed load (spawns workers)
  exists HOST:PORT                   print EXISTS of INBOX
  table FILE                         print the result table from JSON lines

Every measuring subcommand prints one JSON object on stdout. The account is
$BENCH_USER / $BENCH_PASSWORD. Messages are generated deterministically
from their number, so both servers hold byte-identical mailboxes.
"""

import asyncio
import json
import os
import random
import re
import resource
import socket
import ssl
import statistics
import sys
import time

USER = os.environ.get("BENCH_USER", "bench@bench.test")
PASSWORD = os.environ.get("BENCH_PASSWORD", "")
SEARCH_WORD = "zeppelin"  # in about 1% of the subjects, nowhere else
EPOCH0 = 1704067200  # 2024-01-01T00:00:00Z


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def addr(s):
    host, _, port = s.rpartition(":")
    return host, int(port)


# ---------------------------------------------------------------- messages

FIRST = ("Anna Ben Carla David Emma Felix Greta Hugo Ines Jonas Karin Lukas "
         "Marie Nils Olga Paul Rita Simon Tanja Uwe Vera Willem Xenia Yusuf "
         "Zoe Amir Birgit Chen Dana Erik Fatima Georg Hanna Ivan Julia").split()
LAST = ("Schmidt Meyer Novak Rossi Dubois Jansen Larsen Kowalski Berg Costa "
        "Fischer Weber Wagner Becker Hoffmann Keller Lang Moreau Peters Roth "
        "Silva Vogel Wolf Zimmermann Okafor Tanaka Nguyen Haddad").split()
DOMAINS = ("example.org example.net city-council.example partner.example "
           "supplier.example lists.example.com mail.example.edu "
           "helpdesk.example").split()
SUBJ = ("budget meeting minutes draft report invoice contract review "
        "schedule update project travel request approval agenda notes "
        "quarterly planning proposal feedback training policy reminder "
        "summary deadline workshop survey renewal audit procurement "
        "statement newsletter delivery order ticket incident release "
        "migration backup network printer holiday roster council tender "
        "question decision follow-up slides").split()
TEXT = ("the a of to and in for on with as at by from this that we you it "
        "is are be will can please note attached regards thanks meeting "
        "document office team week monday tuesday friday morning afternoon "
        "agree send review change update number figure result department "
        "colleague customer service system access account password network "
        "question answer issue plan next last first time date room floor "
        "building contract payment invoice order budget cost estimate "
        "report draft final version copy comment approval signature "
        "schedule deadline project task status open closed pending").split()
ENCODED_SUBJECTS = (
    "=?UTF-8?Q?Gr=C3=BC=C3=9Fe_aus_M=C3=BCnchen?=",
    "=?UTF-8?B?UsOpdW5pb24gZGUgbCfDqXF1aXBl?=",
    "=?ISO-8859-1?Q?Bestellbest=E4tigung_Nr=2E?=",
)

_lines = None


def text_lines():
    # A pool of body lines built once; messages pick from it.
    global _lines
    if _lines is None:
        r = random.Random(7)
        _lines = []
        for _ in range(4000):
            words, n = [], 0
            while n < 68:
                w = r.choice(TEXT)
                words.append(w)
                n += len(w) + 1
            line = " ".join(words)
            if r.random() < 0.1:
                line = line.capitalize() + "."
            _lines.append(line)
    return _lines


def person(r):
    f, l = r.choice(FIRST), r.choice(LAST)
    a = "%s.%s@%s" % (f.lower(), l.lower(), r.choice(DOMAINS))
    x = r.random()
    if x < 0.6:
        return "%s %s <%s>" % (f, l, a)
    if x < 0.8:
        return '"%s, %s" <%s>' % (l, f, a)
    return a


def subject(r, i):
    if r.random() < 0.05:
        s = r.choice(ENCODED_SUBJECTS)
    else:
        words = [r.choice(SUBJ) for _ in range(r.randint(2, 6))]
        s = " ".join(words).capitalize()
        if r.random() < 0.2:
            s += " %d" % r.randint(1, 9999)
    if has_search_word(i):
        s += " " + SEARCH_WORD.capitalize()
    p = r.random()
    if p < 0.25:
        s = "Re: " + s
    elif p < 0.3:
        s = "Fwd: " + s
    return s


def has_search_word(i):
    return random.Random(i * 7919 + 13).random() < 0.01


def message_date(i):
    r = random.Random(i * 31 + 5)
    return EPOCH0 + i * 600 + r.randint(0, 590)


def message_flags(i):
    """IMAP flags of message i (Maildir letters follow from them)."""
    r = random.Random(i * 17 + 3)
    flags = []
    if r.random() < 0.10:
        flags.append("\\Answered")
    if r.random() < 0.03:
        flags.append("\\Flagged")
    if r.random() < 0.70:
        flags.append("\\Seen")
    return flags


def maildir_letters(flags):
    m = {"\\Answered": "R", "\\Flagged": "F", "\\Seen": "S"}
    return "".join(sorted(m[f] for f in flags))


def message(i):
    """Message number i as bytes with LF line ends, 2-8 KiB."""
    r = random.Random(i)
    lines = text_lines()
    target = int(2048 + (8192 - 2048) * r.random() ** 1.5)
    date = message_date(i)
    hdr = [
        "Return-Path: <bounces+%d@%s>" % (i, r.choice(DOMAINS)),
        "Received: from mx%d.%s (mx%d.%s [192.0.2.%d])\n\tby mx.bench.test with ESMTPS id B%08X\n\tfor <%s>; %s"
        % (r.randint(1, 9), r.choice(DOMAINS), r.randint(1, 9), r.choice(DOMAINS),
           r.randint(1, 254), i, USER, time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(date))),
        "Date: " + time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(date)),
        "From: " + person(r),
        "To: " + ("Bench User <%s>" % USER if r.random() < 0.7 else "team@bench.test"),
    ]
    if r.random() < 0.3:
        hdr.append("Cc: %s, %s" % (person(r), person(r)))
    hdr.append("Subject: " + subject(r, i))
    hdr.append("Message-ID: <%d.%08x@%s>" % (i, r.getrandbits(32), r.choice(DOMAINS)))
    if r.random() < 0.3:
        hdr.append("In-Reply-To: <%d.%08x@%s>" % (max(1, i - r.randint(1, 50)), r.getrandbits(32), r.choice(DOMAINS)))
    hdr.append("MIME-Version: 1.0")

    def body_text(n):
        out, size = [], 0
        while size < n:
            line = r.choice(lines)
            out.append(line)
            size += len(line) + 1
        return "\n".join(out)

    kind = r.random()
    head_len = sum(len(h) + 1 for h in hdr) + 120
    room = max(400, target - head_len)
    if kind < 0.75:
        hdr.append("Content-Type: text/plain; charset=utf-8")
        hdr.append("Content-Transfer-Encoding: 7bit")
        body = body_text(room)
    elif kind < 0.9:
        b = "=_alt_%d" % i
        hdr.append('Content-Type: multipart/alternative; boundary="%s"' % b)
        t = body_text(room * 4 // 10)
        html = "<html><body>\n" + "\n".join("<p>%s</p>" % l for l in t.split("\n")) + "\n</body></html>"
        body = ("This is a multi-part message in MIME format.\n\n--%s\nContent-Type: text/plain; charset=utf-8\n\n%s\n"
                "\n--%s\nContent-Type: text/html; charset=utf-8\n\n%s\n\n--%s--\n" % (b, t, b, html, b))
    else:
        import base64
        b = "=_mix_%d" % i
        hdr.append('Content-Type: multipart/mixed; boundary="%s"' % b)
        t = body_text(min(600, room // 3))
        raw = r.randbytes(max(200, (room - len(t) - 300) * 3 // 4))
        enc = base64.b64encode(raw).decode()
        enc = "\n".join(enc[k:k + 76] for k in range(0, len(enc), 76))
        body = ("--%s\nContent-Type: text/plain; charset=utf-8\n\n%s\n\n--%s\nContent-Type: application/pdf; name=\"scan-%d.pdf\"\n"
                "Content-Disposition: attachment; filename=\"scan-%d.pdf\"\nContent-Transfer-Encoding: base64\n\n%s\n--%s--\n"
                % (b, t, b, i, i, enc, b))
    return ("\n".join(hdr) + "\n\n" + body + "\n").encode()


def crlf(msg):
    return msg.replace(b"\n", b"\r\n")


def internaldate(i):
    return time.strftime("%d-%b-%Y %H:%M:%S +0000", time.gmtime(message_date(i)))


def expected_search(n):
    return sum(1 for i in range(1, n + 1) if has_search_word(i))


# ---------------------------------------------------------------- IMAP client

_LIT = re.compile(rb"\{(\d+)\}\r\n$")


class ImapError(Exception):
    pass


def tls_context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


CTX = None


class Imap:
    """A minimal IMAP client over implicit TLS: tagged commands, literals,
    untagged responses collected or only counted."""

    def __init__(self):
        self.n = 0
        self.r = self.w = None
        self.caps = b""

    async def connect(self, hostport, timeout=60):
        global CTX
        if CTX is None:
            CTX = tls_context()
        host, port = addr(hostport)
        self.r, self.w = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=CTX, limit=1 << 24), timeout)
        g = await self.r.readline()
        if not g.startswith(b"* OK"):
            raise ImapError("greeting: %r" % g[:200])
        return self

    async def login(self):
        await self.ok(b'LOGIN "%s" "%s"' % (USER.encode(), PASSWORD.encode()))
        st, unt = await self.cmd(b"CAPABILITY")
        for u in unt:
            if u.startswith(b"* CAPABILITY"):
                self.caps = u.upper()
        return self

    def tag(self):
        self.n += 1
        return b"T%d" % self.n

    async def read(self, tag, keep=True):
        """Read up to the tagged response. Returns (status line, untagged
        responses or None, literal bytes, untagged count)."""
        unt = [] if keep else None
        lit = count = 0
        r = self.r
        while True:
            line = await r.readline()
            if not line:
                raise ImapError("connection closed by server")
            first = line
            if line.endswith(b"}\r\n"):
                parts = [line]
                m = _LIT.search(line)
                while m:
                    n = int(m.group(1))
                    data = await r.readexactly(n)
                    lit += n
                    line = await r.readline()
                    if keep:
                        parts.append(data)
                        parts.append(line)
                    m = _LIT.search(line)
                whole = b"".join(parts) if keep else first
            else:
                whole = line
            if first.startswith(tag + b" "):
                return first, unt, lit, count
            if first.startswith(b"+"):
                return first, unt, lit, count
            count += 1
            if keep:
                unt.append(whole)

    async def cmd(self, c, keep=True):
        t = self.tag()
        self.w.write(t + b" " + c + b"\r\n")
        st, unt, lit, count = await self.read(t, keep)
        return st[len(t) + 1:].rstrip(), unt

    async def ok(self, c, keep=True):
        t = self.tag()
        self.w.write(t + b" " + c + b"\r\n")
        st, unt, lit, count = await self.read(t, keep)
        if not st[len(t) + 1:].startswith(b"OK"):
            raise ImapError("%s -> %s" % (c[:80].decode(errors="replace"), st.decode(errors="replace").strip()))
        return unt, lit, count

    async def append(self, msg, flags, date, mailbox=b"INBOX"):
        t = self.tag()
        head = b'%s APPEND %s (%s) "%s" ' % (t, mailbox, " ".join(flags).encode(), date.encode())
        if b"LITERAL+" in self.caps:
            self.w.write(head + b"{%d+}\r\n" % len(msg) + msg + b"\r\n")
        else:
            self.w.write(head + b"{%d}\r\n" % len(msg))
            st, _, _, _ = await self.read(t, False)
            if not st.startswith(b"+"):
                raise ImapError("APPEND refused: %r" % st[:200])
            self.w.write(msg + b"\r\n")
        st, _, _, _ = await self.read(t, False)
        if not st[len(t) + 1:].startswith(b"OK"):
            raise ImapError("APPEND -> %s" % st.decode(errors="replace").strip())

    async def select(self, mailbox=b"INBOX"):
        unt, _, _ = await self.ok(b"SELECT " + mailbox)
        exists = None
        for u in unt:
            m = re.match(rb"\* (\d+) EXISTS", u)
            if m:
                exists = int(m.group(1))
        return exists

    async def close(self):
        if self.w is None:
            return
        try:
            self.w.write(b"Z LOGOUT\r\n")
            await asyncio.wait_for(self.w.drain(), 5)
        except Exception:
            pass
        self.w.close()
        try:
            await asyncio.wait_for(self.w.wait_closed(), 5)
        except Exception:
            pass
        self.w = None


async def session(hostport):
    c = Imap()
    await c.connect(hostport)
    await c.login()
    return c


def emit(obj):
    print(json.dumps(obj))
    sys.stdout.flush()


# ---------------------------------------------------------------- memory


def proc_tree(root):
    """root and all its descendants (by PPid)."""
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                s = f.read()
            ppid = int(s[s.rfind(")") + 2:].split()[1])
        except OSError:
            continue
        kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, ()))
    return out


def memory(pidspec):
    """pidspec "tree:PID" (PID and descendants) or "pid:PID". Returns RSS and
    PSS sums in KiB and the number of processes."""
    kind, _, pid = pidspec.partition(":")
    pids = proc_tree(int(pid)) if kind == "tree" else [int(pid)]
    rss = pss = n = 0
    for p in pids:
        try:
            with open("/proc/%d/smaps_rollup" % p) as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
            n += 1
        except OSError:
            pass
    return {"rss_kib": rss, "pss_kib": pss, "procs": n}


# ---------------------------------------------------------------- fill


def cmd_maildir(args):
    d, n = args[0], int(args[1])
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    t0 = time.time()
    total = 0
    for i in range(1, n + 1):
        m = message(i)
        total += len(m)
        # S= file size, W= size with CRLF line ends: what Dovecot's own
        # delivery writes, so it need not open files to learn sizes.
        name = "%d.M%06dP1.bench,S=%d,W=%d:2,%s" % (
            message_date(i), i, len(m), len(m) + m.count(b"\n"), maildir_letters(message_flags(i)))
        p = os.path.join(d, "cur", name)
        with open(p, "wb") as f:
            f.write(m)
        os.utime(p, (message_date(i), message_date(i)))
    emit({"phase": "fill", "method": "maildir", "messages": n, "bytes": total,
          "secs": round(time.time() - t0, 2)})


async def fill(hostport, n, sessions):
    q = list(range(n, 0, -1))
    done = [0]
    total = [0]

    async def worker():
        c = await session(hostport)
        while q:
            i = q.pop()
            m = crlf(message(i))
            total[0] += len(m)
            await c.append(m, message_flags(i), internaldate(i))
            done[0] += 1
        await c.close()

    t0 = time.time()
    await asyncio.gather(*(worker() for _ in range(sessions)))
    secs = time.time() - t0
    emit({"phase": "fill", "method": "imap-append", "sessions": sessions, "messages": done[0],
          "bytes": total[0], "secs": round(secs, 2), "rate": round(done[0] / secs, 1)})


# ---------------------------------------------------------------- first select


async def first_select(hostport, n):
    c = await session(hostport)
    t0 = time.perf_counter()
    exists = await c.select()
    secs = time.perf_counter() - t0
    await c.close()
    emit({"phase": "first_select", "secs": round(secs, 4), "exists": exists, "ok": exists == n})


async def exists_only(hostport):
    c = await session(hostport)
    e = await c.select()
    await c.close()
    print(e)


# ---------------------------------------------------------------- idle


async def idle(hostport, count, pidspec):
    raise_nofile()
    par = int(os.environ.get("IDLE_CONNECT_PARALLEL", "20"))
    limit_kib = int(os.environ.get("IDLE_MAX_MB", "4000")) * 1024
    fresh = memory(pidspec)
    sem = asyncio.Semaphore(par)
    errors = []

    async def one(conns):
        async with sem:
            try:
                c = await session(hostport)
                await c.select()
                t = c.tag()
                c.w.write(t + b" IDLE\r\n")
                st, _, _, _ = await asyncio.wait_for(c.read(t, False), 30)
                if not st.startswith(b"+"):
                    raise ImapError("IDLE refused: %r" % st[:100])
                c.idle_tag = t
                conns.append(c)
            except Exception as e:  # noqa: BLE001 - counted and reported
                errors.append(repr(e)[:200])

    async def finish(conns):
        ok = 0

        async def f(c):
            nonlocal ok
            try:
                c.w.write(b"DONE\r\n")
                st, _, _, _ = await asyncio.wait_for(c.read(c.idle_tag, False), 60)
                if st[len(c.idle_tag) + 1:].startswith(b"OK"):
                    ok += 1
            except Exception as e:  # noqa: BLE001
                errors.append("DONE: " + repr(e)[:200])
            await c.close()

        await asyncio.gather(*(f(c) for c in conns))
        return ok

    # Warm-up: a round of sessions opened exactly as below, then closed, so
    # that what the server keeps after logins and SELECTs at this
    # concurrency (caches, the allocator's high-water mark) is in the
    # baseline rather than in the per-connection figure.
    warm = []
    await asyncio.gather(*(one(warm) for _ in range(min(count, 4 * par))))
    await finish(warm)
    await asyncio.sleep(3)
    before = memory(pidspec)
    errors.clear()
    conns = []
    t0 = time.time()
    stopped = None
    left = count
    while left > 0:
        batch = min(left, 50)
        await asyncio.gather(*(one(conns) for _ in range(batch)))
        left -= batch
        # PSS, not RSS: Dovecot's processes share their mapped index files,
        # which RSS counts once per process.
        m = memory(pidspec)
        if m["pss_kib"] - before["pss_kib"] > limit_kib:
            stopped = "stopped after %d sessions: server PSS grew by %d MiB (IDLE_MAX_MB=%d)" % (
                len(conns), (m["pss_kib"] - before["pss_kib"]) // 1024, limit_kib // 1024)
            break
    setup = time.time() - t0
    await asyncio.sleep(3)
    after = memory(pidspec)
    n = len(conns)
    # Leave IDLE properly: the server must still answer every session.
    done_ok = await finish(conns)
    emit({"phase": "idle", "sessions": n, "wanted": count, "errors": len(errors),
          "error_sample": errors[:3], "setup_secs": round(setup, 2), "done_ok": done_ok,
          "stopped": stopped, "fresh": fresh, "before": before, "after": after,
          "rss_kib_per_conn": round((after["rss_kib"] - before["rss_kib"]) / max(n, 1), 1),
          "pss_kib_per_conn": round((after["pss_kib"] - before["pss_kib"]) / max(n, 1), 1),
          "rss_kib_per_conn_from_fresh": round((after["rss_kib"] - fresh["rss_kib"]) / max(n, 1), 1),
          "ok": n == count and done_ok == n and not errors})


# ---------------------------------------------------------------- single client


async def timed(c, command, keep=False):
    t0 = time.perf_counter()
    unt, lit, count = await c.ok(command, keep)
    return time.perf_counter() - t0, unt, lit, count


async def single(hostport, n):
    reps = int(os.environ.get("REPEAT", "3"))
    out = {"phase": "single", "checks": []}
    c = await session(hostport)

    sel = []
    for _ in range(reps + 2):
        t0 = time.perf_counter()
        e = await c.select()
        sel.append(time.perf_counter() - t0)
        if e != n:
            out["checks"].append("SELECT EXISTS %s, expected %d" % (e, n))
    out["select"] = sel

    runs = []
    for _ in range(reps):
        s, _, _, count = await timed(c, b"UID FETCH 1:* (FLAGS)")
        runs.append(s)
        if count != n:
            out["checks"].append("UID FETCH FLAGS returned %d, expected %d" % (count, n))
    out["uid_fetch_flags"] = runs

    # The same FETCH with the response taken as bytes, not parsed line by
    # line: the time the server needs, without the client's (this
    # client's line loop alone costs about a microsecond per line).
    runs = []
    for _ in range(reps):
        tag = c.tag()
        t0 = time.perf_counter()
        c.w.write(tag + b" UID FETCH 1:* (FLAGS)\r\n")
        end, tail, got = b"\r\n" + tag + b" OK", b"", 0
        mark = b" FETCH ("
        # Until the tagged line is in, whole.
        while end not in tail or not tail[tail.find(end):].endswith(b"\r\n"):
            chunk = await c.r.read(1 << 20)
            if not chunk:
                raise ImapError("connection closed by server")
            # A mark cut by a chunk boundary is counted once: the carried
            # bytes are too few to hold a whole one.
            got += (tail[-(len(mark) - 1):] + chunk).count(mark)
            tail = tail[-(len(end) + 64):] + chunk
        runs.append(time.perf_counter() - t0)
        if got < n:
            out["checks"].append("UID FETCH FLAGS (bytes) returned %d, expected %d" % (got, n))
    out["uid_fetch_flags_bytes"] = runs

    env_range = os.environ.get("ENVELOPE_RANGE", "1:*").encode()
    runs = []
    for _ in range(reps):
        s, _, _, count = await timed(c, b"FETCH " + env_range + b" (ENVELOPE)")
        runs.append(s)
    out["envelope"] = runs
    out["envelope_count"] = count

    bc = min(int(os.environ.get("BODY_COUNT", "3000")), n)
    lo = max(1, n // 2 - bc // 2)
    rng = b"%d:%d" % (lo, lo + bc - 1)
    runs, mbs = [], []
    for _ in range(reps):
        s, _, lit, count = await timed(c, b"FETCH " + rng + b" (BODY.PEEK[])")
        runs.append(s)
        mbs.append(lit / s / 1e6)
        if count != bc:
            out["checks"].append("body FETCH returned %d, expected %d" % (count, bc))
    out["body_fetch"] = runs
    out["body_mbps"] = mbs
    out["body_bytes"] = lit
    out["body_count"] = bc

    want = expected_search(n)
    runs = []
    for _ in range(reps):
        s, unt, _, _ = await timed(c, b"SEARCH HEADER SUBJECT " + SEARCH_WORD.encode(), True)
        runs.append(s)
        hits = sum(len(u.split()) - 2 for u in unt if u.startswith(b"* SEARCH"))
        if hits != want:
            out["checks"].append("SEARCH found %d, expected %d" % (hits, want))
    out["search"] = runs
    out["search_hits"] = want

    # APPEND: one client, one message at a time, each acknowledged before
    # the next is sent. Message numbers above n, so all are new.
    k = int(os.environ.get("APPEND_COUNT", "2000"))
    msgs = [(crlf(message(n + 1_000_000 + j)), message_flags(j), internaldate(n + j)) for j in range(k)]
    t0 = time.perf_counter()
    for m, f, d in msgs:
        await c.append(m, f, d)
    s = time.perf_counter() - t0
    out["append_secs"] = s
    out["append_count"] = k
    out["append_rate"] = k / s
    e = await c.select()
    if e != n + k:
        out["checks"].append("after APPEND EXISTS %s, expected %d" % (e, n + k))
    await c.close()
    out["ok"] = not out["checks"]
    emit(out)


# ---------------------------------------------------------------- mixed load

OPS = (("noop", 15), ("fetch_flags", 20), ("fetch_envelope", 10), ("fetch_body", 20),
       ("store", 15), ("search", 5), ("append", 10), ("select", 5))


async def mixed_worker(hostport, n, clients, secs, wid):
    raise_nofile()
    names = [o for o, _ in OPS]
    weights = [w for _, w in OPS]
    counts = {o: 0 for o in names}
    errors = {o: 0 for o in names}
    lat = []
    samples = []
    start = asyncio.Event()
    ready = [0]

    async def client(k):
        r = random.Random(wid * 1000 + k)
        c = await session(hostport)
        await c.select()
        ready[0] += 1
        await start.wait()
        deadline = t_end
        seq = 0
        while time.perf_counter() < deadline:
            op = r.choices(names, weights)[0]
            s = r.randint(1, max(1, n - 200))
            try:
                t0 = time.perf_counter()
                if op == "noop":
                    await c.ok(b"NOOP", False)
                elif op == "fetch_flags":
                    await c.ok(b"FETCH %d:%d (FLAGS)" % (s, s + 99), False)
                elif op == "fetch_envelope":
                    await c.ok(b"FETCH %d:%d (ENVELOPE)" % (s, s + 19), False)
                elif op == "fetch_body":
                    await c.ok(b"FETCH %d (BODY.PEEK[])" % s, False)
                elif op == "store":
                    sign = b"+" if r.random() < 0.5 else b"-"
                    await c.ok(b"STORE %d %sFLAGS.SILENT (\\Flagged)" % (s, sign), False)
                elif op == "search":
                    await c.ok(b"SEARCH %d:%d HEADER SUBJECT %s" % (s, min(n, s + 999), SEARCH_WORD.encode()), False)
                elif op == "append":
                    seq += 1
                    i = 2_000_000 + wid * 100_000 + k * 10_000 + seq
                    await c.append(crlf(message(i)), [], internaldate(i % 100_000 + 1))
                elif op == "select":
                    await c.ok(b"SELECT INBOX", False)
                lat.append(time.perf_counter() - t0)
                counts[op] += 1
            except ImapError as e:
                errors[op] += 1
                if len(samples) < 3:
                    samples.append(str(e)[:200])
            except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError) as e:
                errors[op] += 1
                if len(samples) < 3:
                    samples.append(repr(e)[:200])
                c = await session(hostport)
                await c.select()
        await c.close()

    tasks = [asyncio.create_task(client(k)) for k in range(clients)]
    # Start together once every client is logged in and has selected.
    global t_end
    deadline = time.time() + 300
    while time.time() < deadline and ready[0] + sum(t.done() for t in tasks) < clients:
        await asyncio.sleep(0.05)
    t_end = time.perf_counter() + secs
    t0 = time.perf_counter()
    start.set()
    res = await asyncio.gather(*tasks, return_exceptions=True)
    wall = time.perf_counter() - t0
    dead = [repr(x)[:200] for x in res if isinstance(x, BaseException)]
    emit({"counts": counts, "errors": errors, "dead": dead, "samples": samples,
          "lat": sorted(lat)[::max(1, len(lat) // 2000)], "wall": wall})


t_end = 0.0


async def mixed(hostport, n, clients, secs, pidspec):
    procs = int(os.environ.get("MIXED_PROCS", "2"))
    per = [clients // procs + (1 if k < clients % procs else 0) for k in range(procs)]
    ps = []
    for k, cnt in enumerate(per):
        if cnt:
            ps.append(await asyncio.create_subprocess_exec(
                sys.executable, __file__, "mixed-worker", hostport, str(n), str(cnt), str(secs), str(k),
                stdout=asyncio.subprocess.PIPE))
    cpu0 = cpu_ticks(pidspec)
    t0 = time.time()
    outs = [json.loads((await p.communicate())[0]) for p in ps]
    wall = time.time() - t0
    cpu1 = cpu_ticks(pidspec)
    counts, errors = {}, {}
    lat, dead, samples = [], [], []
    for o in outs:
        for k, v in o["counts"].items():
            counts[k] = counts.get(k, 0) + v
        for k, v in o["errors"].items():
            errors[k] = errors.get(k, 0) + v
        lat += o["lat"]
        dead += o["dead"]
        samples += o["samples"]
    lat.sort()
    total = sum(counts.values())
    nerr = sum(errors.values()) + len(dead)
    emit({"phase": "mixed", "clients": clients, "secs": secs, "commands": total,
          "cmds_per_sec": total / secs, "errors": nerr, "per_op": counts, "errors_per_op": errors,
          "dead_clients": dead, "error_sample": samples[:5],
          "p50_ms": 1000 * lat[len(lat) // 2] if lat else None,
          "p99_ms": 1000 * lat[int(len(lat) * 0.99)] if lat else None,
          "appended": counts.get("append", 0),
          "server_cpu": (cpu1 - cpu0) / os.sysconf("SC_CLK_TCK") / wall if cpu0 is not None else None,
          "ok": nerr == 0})


def cpu_ticks(pidspec):
    if not pidspec:
        return None
    kind, _, pid = pidspec.partition(":")
    pids = proc_tree(int(pid)) if kind == "tree" else [int(pid)]
    t = 0
    for p in pids:
        try:
            with open("/proc/%d/stat" % p) as f:
                s = f.read()
            fields = s[s.rfind(")") + 2:].split()
            t += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
        except OSError:
            pass
    return t


# ---------------------------------------------------------------- table


def med(xs):
    return statistics.median(xs) if xs else None


def cmd_table(path):
    res = {}
    for line in open(path):
        line = line.strip()
        if line:
            r = json.loads(line)
            res.setdefault(r["server"], {})[r["phase"]] = r
    b, d = res.get("bulwark", {}), res.get("dovecot", {})

    def get(srv, key):
        s, f = srv.get("single"), srv.get("first_select")
        i, m = srv.get("idle"), srv.get("mixed")
        try:
            return {
                "fill": lambda: srv["fill"]["secs"],
                "first_select": lambda: 1000 * f["secs"],
                "select": lambda: 1000 * med(s["select"][1:]),
                "uid_fetch_flags": lambda: 1000 * med(s["uid_fetch_flags"]),
                "uid_fetch_flags_bytes": lambda: 1000 * med(s["uid_fetch_flags_bytes"]),
                "envelope_first": lambda: 1000 * s["envelope"][0],
                "envelope": lambda: 1000 * med(s["envelope"][1:] or s["envelope"]),
                "body_mbps": lambda: med(s["body_mbps"]),
                "search_first": lambda: 1000 * s["search"][0],
                "search": lambda: 1000 * med(s["search"][1:] or s["search"]),
                "append": lambda: s["append_rate"],
                "idle_rss": lambda: i["rss_kib_per_conn"],
                "idle_pss": lambda: i["pss_kib_per_conn"],
                "idle_fresh": lambda: i["rss_kib_per_conn_from_fresh"],
                "mixed": lambda: m["cmds_per_sec"],
                "mixed_errors": lambda: m["errors"],
                "mixed_p99": lambda: m["p99_ms"],
            }[key]()
        except (KeyError, TypeError, IndexError):
            return None

    # (label, key, unit, better, target description, target check on (b, d))
    rows = [
        ("fill (how: see notes)", "fill", "s", "low", "-", None),
        ("first SELECT after fill", "first_select", "ms", "low", "-", None),
        ("SELECT INBOX (warm, median)", "select", "ms", "low", "ratio <= 1", lambda x, y: x <= y),
        # Parsed line by line, this Python client needs about a microsecond
        # per response line whichever server sends it, so that row measures
        # the client (~1.0 either way); the target is judged on the server's
        # time, taken with the response read as bytes and its FETCH
        # responses counted.
        ("UID FETCH 1:* (FLAGS), response as bytes", "uid_fetch_flags_bytes", "ms", "low", "ratio <= 1", lambda x, y: x <= y),
        ("UID FETCH 1:* (FLAGS), parsed line by line", "uid_fetch_flags", "ms", "low", "- (client-bound)", None),
        ("FETCH ENVELOPE, first run", "envelope_first", "ms", "low", "-", None),
        ("FETCH ENVELOPE (warm)", "envelope", "ms", "low", "ratio <= 1", lambda x, y: x <= y),
        ("body FETCH BODY.PEEK[]", "body_mbps", "MB/s", "high", "ratio >= 1", lambda x, y: x >= y),
        ("SEARCH HEADER SUBJECT, first", "search_first", "ms", "low", "-", None),
        ("SEARCH HEADER SUBJECT (warm)", "search", "ms", "low", "-", None),
        ("APPEND, 1 client, serial", "append", "msg/s", "high", "ratio >= 5", lambda x, y: x >= 5 * y),
        ("idle IDLE conn, RSS increase", "idle_rss", "KiB", "low", "< 64 KB (Bulwark)", "abs"),
        ("idle IDLE conn, PSS increase", "idle_pss", "KiB", "low", "-", None),
        ("idle IDLE conn, RSS from fresh start", "idle_fresh", "KiB", "low", "-", None),
        ("mixed load", "mixed", "cmd/s", "high", "ratio >= 1.5", lambda x, y: x >= 1.5 * y),
        ("mixed load errors", "mixed_errors", "", "low", "0 (Bulwark)", "zero"),
        ("mixed load p99 latency", "mixed_p99", "ms", "low", "-", None),
    ]

    def fmt(v, unit):
        if v is None:
            return "-"
        if unit == "":
            return "%d" % v
        return "%.1f" % v if abs(v) < 10000 else "%.0f" % v

    print("| measurement | unit | Bulwark | Dovecot | Bulwark / Dovecot | target | met |")
    print("|---|---|---:|---:|---:|---|---|")
    for label, key, unit, better, tdesc, check in rows:
        x, y = get(b, key), get(d, key)
        ratio = "-"
        if x is not None and y is not None and unit and x > 0 and y > 0 and key != "fill":
            ratio = "%.2f" % (x / y)
        met = ""
        if check == "abs" and x is not None:
            met = "yes" if x * 1024 < 64 * 1000 else "NO"
        elif check == "zero" and x is not None:
            met = "yes" if x == 0 else "NO"
        elif callable(check) and x is not None and y is not None:
            met = "yes" if check(x, y) else "NO"
        elif check:
            met = "n/a"
        print("| %s | %s | %s | %s | %s | %s | %s |" % (label, unit, fmt(x, unit), fmt(y, unit), ratio, tdesc, met))
    # Checks and notes
    for name, srv in (("Bulwark", b), ("Dovecot", d)):
        if not srv:
            continue
        notes = []
        for ph in ("fill", "first_select", "idle", "single", "mixed", "final"):
            r = srv.get(ph)
            if r is None:
                notes.append("%s: missing" % ph)
            elif r.get("ok") is False:
                notes.append("%s: FAILED %s" % (ph, {k: r.get(k) for k in ("checks", "error_sample", "exists", "expected", "errors", "sessions", "stopped", "dead_clients") if r.get(k)}))
        f, i, m, s = srv.get("fill", {}), srv.get("idle", {}), srv.get("mixed", {}), srv.get("single", {})
        print()
        print("%s: fill %s messages (%s) in %ss (%s msgs/s)"
              % (name, f.get("messages"), f.get("method"), f.get("secs"), f.get("rate", "-")))
        if i:
            print("  idle: %s of %s sessions up in %ss, %s processes; RSS fresh %s, baseline %s, with sessions %s KiB; PSS baseline %s, with sessions %s KiB%s"
                  % (i["sessions"], i["wanted"], i["setup_secs"], i["after"]["procs"], i["fresh"]["rss_kib"],
                     i["before"]["rss_kib"], i["after"]["rss_kib"], i["before"]["pss_kib"], i["after"]["pss_kib"],
                     "; " + i["stopped"] if i.get("stopped") else ""))
        if m:
            print("  mixed: %d commands in %ss by %d clients, per op %s, errors %s, p50 %.1f ms, server CPU %.2f cores"
                  % (m["commands"], m["secs"], m["clients"], m["per_op"], m["errors_per_op"], m["p50_ms"] or 0, m["server_cpu"] or 0))
        if s:
            print("  single: SELECT runs %s ms; UID FETCH FLAGS %s ms (as bytes %s ms); ENVELOPE %s ms; body %s MB/s over %d messages (%d bytes); SEARCH %s ms (%d hits); APPEND %d in %.1fs"
                  % ([round(v * 1000, 1) for v in s["select"]], [round(v * 1000, 1) for v in s["uid_fetch_flags"]],
                     [round(v * 1000, 1) for v in s.get("uid_fetch_flags_bytes", [])],
                     [round(v * 1000, 1) for v in s["envelope"]], [round(v, 1) for v in s["body_mbps"]], s["body_count"],
                     s["body_bytes"], [round(v * 1000, 1) for v in s["search"]], s["search_hits"], s["append_count"], s["append_secs"]))
        busy = ["%s %s/%s" % (ph, srv[ph].get("busy_before"), srv[ph].get("machine_cpu"))
                for ph in ("fill", "first_select", "idle", "single", "mixed") if ph in srv and "busy_before" in srv[ph]]
        if busy:
            print("  machine CPU in cores, before/during each phase: " + ", ".join(busy))
        print("  checks: " + ("; ".join(notes) if notes else "all passed"))


# ---------------------------------------------------------------- config, ports


def cmd_bulwark_config(args):
    path, imaps, admin = args
    text = open(path, encoding="utf-8").read()
    want = {
        "server": {"shutdown_grace_secs": "5"},
        "limits": {"max_connections": "20000", "max_connections_per_ip": "10000"},
        "imap": {"max_sessions_per_account": "10000"},
    }
    if os.environ.get("BULWARK_LOG_LEVEL"):
        want["log"] = {"level": json.dumps(os.environ["BULWARK_LOG_LEVEL"])}
    out, section, seen = [], None, set()
    skip = False
    for line in text.splitlines():
        h = re.match(r"^\s*(\[\[?)([A-Za-z_.]+)\]\]?\s*$", line)
        if h:
            if section in want:
                for k, v in want[section].items():
                    if (section, k) not in seen:
                        out.append("%s = %s" % (k, v))
            section = h.group(2)
            skip = h.group(1) == "[[" and section == "listener"
            if skip:
                continue
        elif skip:
            continue
        else:
            kv = re.match(r"^\s*([A-Za-z_]+)\s*=", line)
            if kv and section in want and kv.group(1) in want[section]:
                seen.add((section, kv.group(1)))
                line = "%s = %s" % (kv.group(1), want[section][kv.group(1)])
        out.append(line)
    if section in want:
        for k, v in want[section].items():
            if (section, k) not in seen:
                out.append("%s = %s" % (k, v))
    for s in want:
        if not re.search(r"^\[%s\]" % s, text, re.M):
            out.append("[%s]" % s)
            out += ["%s = %s" % kv for kv in want[s].items()]
    out.append('\n[[listener]]\nprotocol = "imaps"\nbind = "%s"\n' % imaps)
    out.append('[[listener]]\nprotocol = "admin"\nbind = "%s"\n' % admin)
    # Array-of-tables blocks must not swallow plain keys: listeners go last
    # and nothing follows them.
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")


def cmd_wait_port(a, secs):
    host, port = addr(a)
    deadline = time.time() + float(secs)
    while time.time() < deadline:
        try:
            socket.create_connection((host, port), 1).close()
            return 0
        except OSError:
            time.sleep(0.1)
    return 1


def cmd_port_free(a):
    host, port = addr(a)
    try:
        socket.create_connection((host, port), 1).close()
    except OSError:
        return 0
    sys.exit("bench/imap: something already listens on %s" % a)


def main():
    raise_nofile()
    a = sys.argv[1:]
    if not a:
        sys.exit(__doc__)
    c, a = a[0], a[1:]
    if c == "bulwark-config":
        cmd_bulwark_config(a)
    elif c == "wait-port":
        sys.exit(cmd_wait_port(*a))
    elif c == "port-free":
        cmd_port_free(*a)
    elif c == "maildir":
        cmd_maildir(a)
    elif c == "fill":
        asyncio.run(fill(a[0], int(a[1]), int(a[2])))
    elif c == "first-select":
        asyncio.run(first_select(a[0], int(a[1])))
    elif c == "exists":
        asyncio.run(exists_only(a[0]))
    elif c == "idle":
        asyncio.run(idle(a[0], int(a[1]), a[2]))
    elif c == "single":
        asyncio.run(single(a[0], int(a[1])))
    elif c == "mixed":
        asyncio.run(mixed(a[0], int(a[1]), int(a[2]), float(a[3]), a[4] if len(a) > 4 else ""))
    elif c == "mixed-worker":
        asyncio.run(mixed_worker(a[0], int(a[1]), int(a[2]), float(a[3]), int(a[4])))
    elif c == "table":
        cmd_table(a[0])
    elif c == "tree":
        print(" ".join(map(str, proc_tree(int(a[0])))))
    elif c == "sample":
        sys.stdout.buffer.write(message(int(a[0])))
    else:
        sys.exit("unknown subcommand " + c)


if __name__ == "__main__":
    main()
