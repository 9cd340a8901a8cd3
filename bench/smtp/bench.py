#!/usr/bin/env python3
"""Measuring side of bench/smtp/run: timing, process accounting, checks and
the result table. Standard library only; Linux only (/proc).

Subcommands (all called by bench/smtp/run):

  bulwark-config FILE --smtp A --imaps A --admin A
      Rewrite a configuration written by `bulwark init` for the benchmark:
      drop its listeners, add the three the benchmark uses, raise the per-IP
      connection limit, shorten the shutdown grace period, and apply
      BULWARK_LOG_LEVEL and BULWARK_SET (section.key=value ...).
  port-free HOST:PORT
      Fail if something already accepts connections there.
  wait-port HOST:PORT SECONDS
      Wait until a TCP port accepts connections.
  busy SECONDS
      Sleep, then print the machine's CPU use meanwhile (1.0 = one core).
  send [--maildir DIR --expect N --timeout S] [--cpu-root PID ...]
       [--pss-root PID ...] -- smtp-source ...
      Run the load generator and time it. With --maildir, the clock stops
      only once DIR/new holds N files. --cpu-root: account the CPU of these
      process trees; --pss-root: sample their summed PSS. Prints one JSON
      object.
  imap-exists HOST:PORT USER PASSWORD
      LOGIN over implicit TLS, SELECT INBOX, print EXISTS.
  metric HOST:PORT NAME LABEL
      Print the sum of the counters NAME{...LABEL...} from Bulwark's admin
      /metrics.
  record FILE key=value ...
      Append one result record (JSON line) to FILE.
  table FILE
      Print the result table and the verdict on the targets.
"""

import json
import os
import re
import resource
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- config


def bulwark_config(args):
    path = args[0]
    opts = dict(zip(args[1::2], args[2::2]))
    text = open(path, encoding="utf-8").read()

    # section -> key -> TOML value. smtp-source opens a new connection for
    # every message; 50 sessions from 127.0.0.1 plus connections still
    # closing must fit under the per-IP limit.
    settings = {
        "server": {"shutdown_grace_secs": "5"},
        "limits": {"max_connections_per_ip": "1000"},
    }
    if opts.get("--dns"):
        settings["dns"] = {"servers": json.dumps([opts["--dns"]])}
    if os.environ.get("BULWARK_LOG_LEVEL"):
        settings["log"] = {"level": json.dumps(os.environ["BULWARK_LOG_LEVEL"])}
    # BULWARK_SET="storage.inline_blob_max_bytes=131072 smtp.max_errors=20"
    for item in os.environ.get("BULWARK_SET", "").split():
        name, sep, value = item.partition("=")
        section, dot, key = name.partition(".")
        if not (sep and dot and section and key):
            sys.exit("bench.py: BULWARK_SET entry `%s` is not section.key=value" % item)
        settings.setdefault(section, {})[key] = value

    # Split into top-level blocks at every table header.
    blocks, current = [], []
    for line in text.splitlines(keepends=True):
        if line.startswith("["):
            blocks.append(current)
            current = []
        current.append(line)
    blocks.append(current)

    out, done = [], set()
    for block in blocks:
        header = block[0].strip() if block and block[0].startswith("[") else ""
        if header == "[[listener]]":
            continue
        section = header.strip("[]")
        for key, value in settings.get(section, {}).items():
            pattern = re.compile(r"^%s\s*=.*$" % re.escape(key))
            for i, line in enumerate(block):
                if pattern.match(line):
                    block[i] = "%s = %s\n" % (key, value)
                    done.add((section, key))
        out.extend(block)
    missing = [
        "%s.%s" % (sec, key) for sec, keys in settings.items() for key in keys if (sec, key) not in done
    ]
    if missing:
        sys.exit("bench.py: %s has no key %s to change" % (path, ", ".join(missing)))

    text = "".join(out).rstrip("\n") + "\n"
    for proto, key in (("smtp", "--smtp"), ("imaps", "--imaps"), ("admin", "--admin")):
        text += '\n[[listener]]\nprotocol = "%s"\nbind = "%s"\n' % (proto, opts[key])
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


# ---------------------------------------------------------------- ports


def split_addr(addr):
    host, _, port = addr.rpartition(":")
    return host, int(port)


def port_free(args):
    host, port = split_addr(args[0])
    try:
        with socket.create_connection((host, port), timeout=1):
            pass
    except OSError:
        return
    sys.exit("bench.py: %s:%d is already in use; choose another PORT_BASE" % (host, port))


def wait_port(args):
    host, port = split_addr(args[0])
    deadline = time.monotonic() + float(args[1])
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit("bench.py: nothing listens on %s:%d" % (host, port))


# ---------------------------------------------------------------- /proc


def read_stat(pid):
    """(ppid, own cpu ticks, reaped children's cpu ticks) or None."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = data[data.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state) of proc(5)
    ppid = int(fields[1])
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return ppid, utime + stime, cutime + cstime


def process_tree(roots):
    """Every live process below (and including) the given root PIDs."""
    parents = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = read_stat(int(name))
            if st:
                parents[int(name)] = st[0]
    tree = {r for r in roots if r in parents}
    changed = True
    while changed:
        changed = False
        for pid, ppid in parents.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                changed = True
    return tree


def tree_cpu_ticks(roots):
    """CPU ticks of a process tree: the roots' own and reaped children's
    time, plus the own time of every live descendant. The difference of two
    readings is the tree's CPU use in between, as long as the roots reap
    their children (Postfix's master and Dovecot's master do)."""
    total = 0
    for pid in process_tree(roots):
        st = read_stat(pid)
        if st:
            total += st[1]
            if pid in roots:
                total += st[2]
    return total


def pss_kib(pid):
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def machine_ticks():
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    vals = [int(x) for x in parts]
    idle = vals[3] + vals[4]
    return sum(vals[:8]) - idle, sum(vals[:8])


class PssSampler(threading.Thread):
    """Samples the summed PSS of process trees; keeps the peak."""

    def __init__(self, roots, interval=0.5):
        super().__init__(daemon=True)
        self.roots, self.interval = roots, interval
        self.peak = 0
        self.stop = threading.Event()

    def sample(self):
        total = sum(pss_kib(p) for p in process_tree(self.roots))
        self.peak = max(self.peak, total)

    def run(self):
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(self.interval)


def busy(args):
    """Sleep, then print the machine's CPU use meanwhile (1.0 = one core)."""
    m0 = machine_ticks()
    time.sleep(float(args[0]))
    m1 = machine_ticks()
    print(round((m1[0] - m0[0]) / max(1, m1[1] - m0[1]) * os.cpu_count(), 3))


# ---------------------------------------------------------------- send


def count_new(maildir):
    # Dovecot writes into tmp/ and renames into new/; only new/ counts.
    try:
        return len(os.listdir(os.path.join(maildir, "new")))
    except FileNotFoundError:
        return 0


def send(args):
    maildir, expect, roots, pss_roots, timeout = None, 0, [], [], 600.0
    while args and args[0] != "--":
        opt, val, args = args[0], args[1], args[2:]
        if opt == "--maildir":
            maildir = val
        elif opt == "--expect":
            expect = int(val)
        elif opt == "--cpu-root":
            roots.append(int(val))
        elif opt == "--pss-root":
            pss_roots.append(int(val))
        elif opt == "--timeout":
            timeout = float(val)
        else:
            sys.exit("bench.py send: unknown option " + opt)
    cmd = args[1:]

    sampler = PssSampler(pss_roots) if pss_roots else None
    if sampler:
        sampler.start()
    cpu0 = tree_cpu_ticks(roots) if roots else 0
    m0 = machine_ticks()
    gen0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    t_source = time.monotonic() - t0
    delivered, timed_out = None, False
    if maildir is not None:
        deadline = t0 + timeout
        while True:
            delivered = count_new(maildir)
            if delivered >= expect:
                break
            if time.monotonic() > deadline:
                timed_out = True
                break
            time.sleep(0.02)
    t_total = time.monotonic() - t0
    cpu1 = tree_cpu_ticks(roots) if roots else 0
    m1 = machine_ticks()
    gen1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if sampler:
        sampler.stop.set()
        sampler.join()
        sampler.sample()

    output = proc.stdout.decode("utf-8", "replace").strip().splitlines()
    gen_cpu = (gen1.ru_utime + gen1.ru_stime) - (gen0.ru_utime + gen0.ru_stime)
    result = {
        "rc": proc.returncode,
        "source_secs": round(t_source, 4),
        "total_secs": round(t_total, 4),
        "delivered": delivered,
        "timed_out": timed_out,
        "server_cpu": round((cpu1 - cpu0) / CLK_TCK / t_total, 3) if roots else None,
        "loadgen_cpu": round(gen_cpu / t_total, 3),
        "machine_cpu": round((m1[0] - m0[0]) / max(1, m1[1] - m0[1]) * os.cpu_count(), 3),
        "peak_pss_kib": sampler.peak if sampler else None,
        "messages": output[-5:],
    }
    print(json.dumps(result))


# ---------------------------------------------------------------- checks


def imap_exists(args):
    import imaplib

    host, port = split_addr(args[0])
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the benchmark's self-signed certificate
    imap = imaplib.IMAP4_SSL(host, port, ssl_context=ctx, timeout=30)
    try:
        imap.login(args[1], args[2])
        typ, data = imap.select("INBOX", readonly=True)
        if typ != "OK":
            sys.exit("bench.py: SELECT INBOX failed: %r" % data)
        print(int(data[0]))
    finally:
        try:
            imap.logout()
        except Exception:
            pass


def metric(args):
    with urllib.request.urlopen("http://%s/metrics" % args[0], timeout=10) as r:
        body = r.read().decode()
    total = 0
    for line in body.splitlines():
        if line.startswith(args[1]) and args[2] in line:
            total += int(float(line.split()[-1]))
    print(total)


# ---------------------------------------------------------------- results


def record(args):
    rec = {}
    for kv in args[1:]:
        k, _, v = kv.partition("=")
        rec[k] = v
    with open(args[0], "a", encoding="utf-8") as f:
        f.write(json.dumps(rec) + "\n")


FAILED = float("nan")  # marks a run that did not pass its checks


def median_run(rs):
    """The run with the median rate (the lower of the middle two for an
    even count, so it is a run that happened)."""
    ordered = sorted(rs, key=lambda r: float(r["rate"]))
    return ordered[(len(ordered) - 1) // 2]


def fmt_size(n):
    n = int(n)
    return "%d KiB" % (n // 1024) if n % 1024 == 0 else "%d B" % n


def table(args):
    recs = [json.loads(l) for l in open(args[0], encoding="utf-8") if l.strip()]
    runs = {}
    for r in recs:
        key = (int(r["size"]), int(r["sessions"]))
        runs.setdefault(key, {}).setdefault(r["target"], []).append(r)
    # Each target stands for its median run (of rounds run interleaved with
    # the other targets, so every target meets the same spells of a noisy
    # machine); a round that failed its checks fails the target.
    rows = {}
    for key, targets in runs.items():
        for target, rs in targets.items():
            bad = [r for r in rs if r.get("ok") != "1"]
            rows.setdefault(key, {})[target] = bad[0] if bad else median_run(rs)

    def rate(r):
        if r is None:
            return None
        if r.get("ok") != "1":
            return FAILED
        return float(r["rate"])

    def show(v, fmt="%.0f"):
        if v is None:
            return "-"
        return "FAILED" if v is FAILED else fmt % v

    def ratio(a, b):
        if a is None or b is None:
            return None
        if a is FAILED or b is FAILED or b == 0:
            return FAILED
        return a / b

    print()
    print("msgs/s: Bulwark and smtp-sink: messages / wall time of smtp-source (Bulwark answers 250")
    print("only after the store's commit); Postfix→Dovecot: messages / time until all are in the")
    print("Dovecot Maildir's new/. PSS: sum over all Postfix and Dovecot processes, sampled.")
    hdr = (
        "| size   | sessions | bulwark msgs/s | postfix→dovecot msgs/s | smtp-sink msgs/s "
        "| bulwark / postfix→dovecot | bulwark / sink | bulwark peak RSS | postfix+dovecot peak PSS |"
    )
    print(hdr)
    print("|--------|---------:|---------------:|-----------------------:|-----------------:"
          "|--------------------------:|---------------:|-----------------:|-------------------------:|")
    verdicts = []
    for (size, sessions) in sorted(rows):
        row = rows[(size, sessions)]
        b, p, s = (rate(row.get(t)) for t in ("bulwark", "postfix-dovecot", "smtp-sink"))
        rp, rs = ratio(b, p), ratio(b, s)
        rss = row.get("bulwark", {}).get("rss_kib")
        pss = row.get("postfix-dovecot", {}).get("pss_kib")
        print(
            "| %-6s | %8d | %14s | %22s | %16s | %25s | %14s | %16s | %24s |"
            % (
                fmt_size(size),
                sessions,
                show(b),
                show(p),
                show(s),
                show(rp, "%.2fx"),
                show(rs, "%.2fx"),
                "%.1f MiB" % (int(rss) / 1024) if rss else "-",
                "%.1f MiB" % (int(pss) / 1024) if pss else "-",
            )
        )
        label = "%s, %d sessions" % (fmt_size(size), sessions)
        verdicts.append(("bulwark >= 5x postfix→dovecot", label, rp, 5.0))
        if size == 4096:
            verdicts.append(("bulwark >= 0.5x smtp-sink", label, rs, 0.5))

    if any(len(rs) > 1 for targets in runs.values() for rs in targets.values()):
        print()
        print("Every round's msgs/s, in the order run (the table above shows each median):")
        for (size, sessions) in sorted(runs):
            for t in ("bulwark", "postfix-dovecot", "smtp-sink"):
                rs = runs[(size, sessions)].get(t)
                if rs:
                    shown = [r["rate"] if r.get("ok") == "1" else "FAILED" for r in rs]
                    print("  %-6s %3d sessions  %-15s %s"
                          % (fmt_size(size), sessions, t, " / ".join(shown)))

    print()
    print("CPU per wall second (100%% = one core busy; this machine has %d00%%; the median run of each):"
          % os.cpu_count())
    print("| size   | sessions | target          | machine before | server cpu | server µs/msg | smtp-source cpu | machine cpu | other cpu | notes")
    print("|--------|---------:|-----------------|---------------:|-----------:|--------------:|----------------:|------------:|----------:|------")
    busiest = 0.0
    for (size, sessions) in sorted(rows):
        for t in ("bulwark", "postfix-dovecot", "smtp-sink"):
            r = rows[(size, sessions)].get(t)
            if not r:
                continue
            val = lambda k: float(r[k]) if r.get(k) not in (None, "", "None") else None
            pct = lambda v: "-" if v is None else "%.0f%%" % (100 * v)
            server, loadgen, machine = val("server_cpu"), val("loadgen_cpu"), val("machine_cpu")
            before = val("machine_before")
            if before is not None:
                busiest = max(busiest, before)
            # Whatever else ran on the machine: kernel threads (writeback),
            # the benchmark's own polling, and anyone else's processes.
            other = None
            if None not in (server, loadgen, machine):
                other = max(0.0, machine - server - loadgen)
            per_msg = "-"
            if server is not None and r.get("ok") == "1" and float(r["rate"]) > 0:
                per_msg = "%.0f" % (server / float(r["rate"]) * 1e6)
            print(
                "| %-6s | %8d | %-15s | %14s | %10s | %13s | %15s | %11s | %9s | %s"
                % (fmt_size(size), sessions, t, pct(before), pct(server), per_msg, pct(loadgen),
                   pct(machine), pct(other), r.get("note", ""))
            )
    if busiest >= 0.25:
        print("WARNING: the machine was busy with other work (up to %.0f%% of a core) just before"
              " a run; the numbers are lower than on a quiet machine (QUIET_WAIT helps)."
              % (100 * busiest))

    print()
    met_all = True
    for name, label, value, goal in verdicts:
        if value is None or value is FAILED:
            met_all = False
            why = "a run failed" if value is FAILED else "not run"
            print("target %-30s %-22s NOT EVALUATED (%s)" % (name, label + ":", why))
        else:
            ok = value >= goal
            met_all &= ok
            print("target %-30s %-22s %.2fx  %s" % (name, label + ":", value, "MET" if ok else "MISSED"))
    verdict = "all targets met" if met_all else "not all targets met"
    if busiest >= 0.25:
        verdict += " (on a busy machine: measure again on a quiet one before trusting this)"
    print(verdict)
    failed = [r for r in recs if r.get("ok") != "1"]
    if failed:
        print("%d run(s) failed their checks; their numbers are not reported" % len(failed))
        sys.exit(1)


def dns_stub(args):
    """dns-stub ADDR: answer every DNS query over UDP at ADDR with NXDOMAIN,
    at once. Bulwark's SPF, DKIM and DMARC checks of the load's made-up
    domains then cost their lookups and parsing without depending on the
    machine's resolver (a shared or rate-limited one turned some lookups
    into 5-second timeouts)."""
    import socket
    host, port = args[0].rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, int(port)))
    while True:
        query, peer = sock.recvfrom(4096)
        if len(query) < 12:
            continue
        # The question: its name's labels up to the root, then type and class.
        end = 12
        while end < len(query) and query[end] != 0:
            end += query[end] + 1
        question = query[12:end + 5]
        # QR, the client's RD, RA, rcode 3 (NXDOMAIN); the question back and,
        # as real servers do, an SOA whose minimum (300 s) lets the
        # resolver cache the answer.
        flags = 0x8000 | ((query[2] & 0x01) << 8) | 0x0080 | 3
        soa = b"\x00" + (6).to_bytes(2, "big") + (1).to_bytes(2, "big") + (300).to_bytes(4, "big")
        soa += (22).to_bytes(2, "big") + b"\x00\x00" + b"".join(
            n.to_bytes(4, "big") for n in (1, 3600, 600, 86400, 300)
        )
        counts = b"\x00\x01\x00\x00\x00\x01\x00\x00"
        sock.sendto(query[:2] + flags.to_bytes(2, "big") + counts + question + soa, peer)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    {
        "bulwark-config": bulwark_config,
        "dns-stub": dns_stub,
        "busy": busy,
        "port-free": port_free,
        "wait-port": wait_port,
        "send": send,
        "imap-exists": imap_exists,
        "metric": metric,
        "record": record,
        "table": table,
    }[cmd](args)


if __name__ == "__main__":
    main()
