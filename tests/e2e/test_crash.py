"""Durability across SIGKILL: the server started by `bulwark quickstart`
is killed in the middle of concurrent SMTP deliveries; after a restart
every message that got a 250 is in its recipient's Inbox exactly once
(read with imaplib)."""

import imaplib
import signal
import smtplib
import ssl
import threading
import time

from conftest import start_quickstart

HOST = "127.0.0.1"
MX, IMAPS = 2525, 9930
SENDERS = 8


def test_acknowledged_mail_survives_sigkill(quickstart):
    acked = []  # (recipient, token) pairs that got 250
    lock = threading.Lock()
    stop = threading.Event()

    def sender(n):
        i = 0
        while not stop.is_set():
            rcpt = ("alice", "bob")[i % 2] + "@example.test"
            token = f"crash-{n}-{i}"
            body = (f"From: load@elsewhere.test\r\nTo: {rcpt}\r\nSubject: {token}\r\n\r\n"
                    + "x" * (200 + 37 * i % 3000) + "\r\n").encode()
            try:
                with smtplib.SMTP(HOST, MX, timeout=10) as mx:
                    if mx.sendmail("load@elsewhere.test", [rcpt], body) == {}:
                        with lock:
                            acked.append((rcpt, token))
            except (OSError, smtplib.SMTPException):
                if stop.is_set():
                    return
                time.sleep(0.01)
            i += 1

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(SENDERS)]
    for t in threads:
        t.start()
    deadline = time.time() + 60
    while len(acked) < 150 and time.time() < deadline:
        time.sleep(0.05)
    quickstart.proc.send_signal(signal.SIGKILL)
    quickstart.proc.wait(timeout=30)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert len(acked) >= 150, "the load did not get going"

    restarted = start_quickstart(quickstart.root)
    try:
        ctx = ssl.create_default_context(cafile=str(quickstart.cert))
        ctx.check_hostname = False
        creds = quickstart.credentials()
        for user in ("alice@example.test", "bob@example.test"):
            conn = imaplib.IMAP4_SSL(HOST, IMAPS, ssl_context=ctx)
            conn.login(user, creds[user])
            conn.select("INBOX", readonly=True)
            typ, data = conn.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            subjects = [part[1].decode().split(":", 1)[1].strip()
                        for part in data if isinstance(part, tuple)]
            for rcpt, token in acked:
                if rcpt == user:
                    assert subjects.count(token) == 1, f"{token} for {user}: {subjects.count(token)} copies"
            assert len(subjects) == len(set(subjects)), "no message stored twice"
            conn.logout()
        assert restarted.stop() == 0
    finally:
        if restarted.proc.poll() is None:
            restarted.proc.kill()


def test_acknowledged_submissions_are_queued_exactly_once_after_sigkill(quickstart):
    """Submissions for another domain go to the outbound queue; killed
    mid-load, the restarted server holds every acknowledged one exactly
    once (read with `bulwark queue`)."""
    import socket

    # Route the remote domain to a port where nothing listens, so every
    # message stays queued (attempts fail temporarily).
    with socket.socket() as s:
        s.bind((HOST, 0))
        dead = s.getsockname()[1]
    assert quickstart.stop() == 0
    config = quickstart.data / "bulwark.toml"
    config.write_text(config.read_text() + (
        f'\n[[smtp.route]]\ndomain = "elsewhere.test"\nhost = "127.0.0.1"\nport = {dead}\ntls = "none"\n'))
    server = start_quickstart(quickstart.root)
    creds = quickstart.credentials()
    alice = "alice@example.test"
    ctx = ssl.create_default_context(cafile=str(quickstart.cert))
    ctx.check_hostname = False
    acked = []
    lock = threading.Lock()
    stop = threading.Event()

    def sender(n):
        i = 0
        while not stop.is_set():
            rcpt = f"r{n}x{i}@elsewhere.test"
            body = (f"From: {alice}\r\nTo: {rcpt}\r\nSubject: queued {n} {i}\r\n\r\n"
                    + "y" * (100 + 53 * i % 2000) + "\r\n").encode()
            try:
                with smtplib.SMTP(HOST, 5870, timeout=10) as c:
                    c.starttls(context=ctx)
                    c.login(alice, creds[alice])
                    if c.sendmail(alice, [rcpt], body) == {}:
                        with lock:
                            acked.append(rcpt)
            except (OSError, smtplib.SMTPException):
                if stop.is_set():
                    return
                time.sleep(0.01)
            i += 1

    try:
        threads = [threading.Thread(target=sender, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        deadline = time.time() + 60
        while len(acked) < 60 and time.time() < deadline:
            time.sleep(0.05)
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(timeout=30)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        assert len(acked) >= 60, "the load did not get going"
    finally:
        if server.proc.poll() is None:
            server.proc.kill()

    listing = quickstart.admin("queue", "list")
    ids = [line.split()[0] for line in listing.splitlines() if line.split() and line.split()[0].isdigit()]
    queued = []
    for qid in ids:
        shown = quickstart.admin("queue", "show", qid)
        queued += [line.split()[0] for line in shown.splitlines() if line.startswith("  ")]
    for rcpt in acked:
        assert queued.count(rcpt) == 1, f"{rcpt}: {queued.count(rcpt)} copies queued"
    assert len(queued) == len(set(queued)), "nothing queued twice"
