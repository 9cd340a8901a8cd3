"""Outbound mail between two Bulwark servers and to Postfix's smtp-sink.

Server A (a.test) and server B (b.test) run side by side on loopback with
a private DNS server (dnslib) that publishes exactly what
`bulwark domain dns` prints. A routes b.test to B (and B a.test to A)
through static routes, signs with its DKIM key; B checks SPF, DKIM and
DMARC through that DNS. Meeting invitations cross between them as iMIP
mail, saved and answered over CalDAV with http.client.
"""

import base64
import email
import http.client
import imaplib
import os
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from conftest import BIN

PASSWORD = "a long enough password 1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


def eventually(check, timeout: float = 40, what: str = "condition"):
    deadline = time.time() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def tls_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Server:
    def __init__(self, root: Path, domain: str):
        self.domain = domain
        self.hostname = f"mx.{domain}"
        self.data = root / domain
        self.config = self.data / "bulwark.toml"
        self.ports = {p: free_port() for p in ("smtp", "submission", "imaps", "https")}
        self.proc = None
        subprocess.run(
            [BIN, "init", "--data-dir", str(self.data), "--domain", domain,
             "--hostname", self.hostname],
            check=True, capture_output=True,
        )

    def configure(self, dns_port: int, extra: str) -> None:
        text = self.config.read_text()
        # Our own listeners replace the standard ones.
        kept, skipping = [], False
        for line in text.splitlines():
            if line == "[[listener]]":
                skipping = True
            elif skipping and not line.strip():
                skipping = False
            if not skipping:
                kept.append(line)
        text = "\n".join(kept) + "\n"
        text = text.replace("servers = []", f'servers = ["127.0.0.1:{dns_port}"]')
        text = text.replace("retry_initial_secs = 300", "retry_initial_secs = 1")
        text = text.replace("retry_max_secs = 14400", "retry_max_secs = 2")
        for protocol, port in self.ports.items():
            text += f'\n[[listener]]\nprotocol = "{protocol}"\nbind = "127.0.0.1:{port}"\n'
        text += extra
        self.config.write_text(text)

    def admin(self, *args: str, stdin: str | None = None) -> str:
        return subprocess.run(
            [BIN, "--config", str(self.config), *args],
            capture_output=True, text=True, check=True, input=stdin,
        ).stdout

    def add_user(self, local: str) -> str:
        address = f"{local}@{self.domain}"
        self.admin("user", "add", address, "--password-stdin", stdin=PASSWORD + "\n")
        return address

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [BIN, "--config", str(self.config), "serve"],
            stdout=subprocess.DEVNULL, stderr=open(self.data / "server.log", "ab"),
        )
        for port in self.ports.values():
            wait_port(port)

    def log(self) -> str:
        """What the server has written to its log (standard error) so far."""
        return (self.data / "server.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            assert self.proc.wait(timeout=30) == 0

    def send(self, sender: str, recipients: list[str], subject: str, body: str = "Hello.\r\n") -> None:
        message = (
            f"From: <{sender}>\r\nTo: {', '.join(recipients)}\r\nSubject: {subject}\r\n"
            f"\r\n{body}"
        )
        with smtplib.SMTP("127.0.0.1", self.ports["submission"], timeout=30) as c:
            c.starttls(context=tls_context())
            c.login(sender, PASSWORD)
            c.sendmail(sender, recipients, message)

    def inbox(self, user: str) -> list[email.message.Message]:
        with imaplib.IMAP4_SSL("127.0.0.1", self.ports["imaps"], ssl_context=tls_context()) as c:
            c.login(user, PASSWORD)
            c.select("INBOX", readonly=True)
            _, data = c.search(None, "ALL")
            found = []
            for num in data[0].split():
                _, parts = c.fetch(num, "(BODY.PEEK[])")
                found.append(email.message_from_bytes(parts[0][1]))
            return found

    def find(self, user: str, subject: str):
        for m in self.inbox(user):
            if subject in (m["Subject"] or ""):
                return m
        return None


def peer(name: str) -> str | None:
    found = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
    if found is None and os.environ.get("BULWARK_REQUIRE_PEERS") == "1":
        pytest.fail(f"{name} is required (BULWARK_REQUIRE_PEERS=1) but not installed")
    return found


@pytest.fixture(scope="module")
def world():
    root = Path(tempfile.mkdtemp())
    dns_port = free_port()
    sink_port = free_port()
    dead_port = free_port()
    a = Server(root, "a.test")
    b = Server(root, "b.test")
    a.configure(dns_port, f"""
[[smtp.route]]
domain = "b.test"
host = "127.0.0.1"
port = {b.ports['smtp']}
tls = "opportunistic"

[[smtp.route]]
domain = "sink.test"
host = "127.0.0.1"
port = {sink_port}
tls = "none"
""")
    b.configure(dns_port, f"""
[[smtp.route]]
domain = "a.test"
host = "127.0.0.1"
port = {a.ports['smtp']}
tls = "opportunistic"
""")
    # b asks a blocklist that lists 127.0.0.2 (and not 127.0.0.1, where a
    # sends from); its postmaster is bob.
    b.config.write_text(b.config.read_text()
                        .replace("dnsbl = []", 'dnsbl = ["bl.test"]')
                        .replace('# postmaster = "admin@example.com"', 'postmaster = "bob@b.test"'))
    # The zone holds what `bulwark domain dns` tells administrators to publish.
    zone = a.admin("domain", "dns", "a.test") + b.admin("domain", "dns", "b.test")
    zone += "mx.a.test.\tIN A 127.0.0.1\nmx.b.test.\tIN A 127.0.0.1\n"
    # A domain that forbids unauthenticated use of its name.
    zone += 'c.test.\tIN TXT "v=spf1 -all"\n_dmarc.c.test.\tIN TXT "v=DMARC1; p=reject"\n'
    zone += "2.0.0.127.bl.test.\tIN A 127.0.0.2\n"
    zone_file = root / "zone.txt"
    zone_file.write_text("\n".join(l for l in zone.splitlines() if not l.startswith(";")) + "\n")
    dns = subprocess.Popen(
        [sys.executable, "-m", "dnslib.zoneresolver", "--zone", str(zone_file),
         "--port", str(dns_port), "--address", "127.0.0.1", "--tcp", "--log=-request,-reply"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_port(dns_port)  # its TCP side; UDP is served by the same process
    users = {
        "alice": a.add_user("alice"),
        "bob": b.add_user("bob"),
    }
    try:
        a.start()
        b.start()
    except BaseException:
        for server in (a, b):
            if server.proc and server.proc.poll() is None:
                server.proc.kill()
        dns.kill()
        raise
    yield {"a": a, "b": b, "users": users, "root": root, "sink_port": sink_port,
           "dead_port": dead_port}
    for server in (a, b):
        if server.proc and server.proc.poll() is None:
            server.proc.kill()
    dns.kill()
    if not os.environ.get("BULWARK_KEEP_TEST_DATA"):
        shutil.rmtree(root, ignore_errors=True)


def test_mail_reaches_the_other_server_signed_and_verified(world):
    a, b, users = world["a"], world["b"], world["users"]
    subject = f"cross-server {uuid.uuid4()}"
    a.send(users["alice"], [users["bob"]], subject)
    got = eventually(lambda: b.find(users["bob"], subject), what="delivery to b.test")
    results = got["Authentication-Results"]
    assert results.startswith("mx.b.test"), results
    assert "dkim=pass" in results and "a.test" in results, results
    assert "spf=pass" in results, results
    assert "dmarc=pass" in results, results
    assert got["DKIM-Signature"] is not None
    assert "d=a.test" in got["DKIM-Signature"].replace(" ", "")
    assert got["Return-Path"] == f"<{users['alice']}>"
    assert "queue is empty" in eventually(
        lambda: "queue is empty" in a.admin("queue", "list") and a.admin("queue", "list"),
        what="empty queue")
    # The sender's mail log names the envelope, queued and then taken by
    # the other server; nothing was stored in a mailbox here.
    log = a.log().splitlines()
    assert any("message queued" in line and f"from=<{users['alice']}>" in line
               and f"to=<{users['bob']}>" in line for line in log), log
    assert any(" delivered relay=127.0.0.1" in line and f"from=<{users['alice']}>" in line
               and f"to=<{users['bob']}>" in line and "queue_id=" in line
               for line in log), log
    assert not any("message delivered" in line and f"<{users['bob']}>" in line for line in log)


def test_unknown_remote_recipient_bounces_to_the_sender(world):
    a, users = world["a"], world["users"]
    subject = f"to nobody {uuid.uuid4()}"
    a.send(users["alice"], ["nobody@b.test"], subject)
    notice = eventually(
        lambda: next((m for m in a.inbox(users["alice"])
                      if m["Subject"] == "Undelivered Mail Returned to Sender"
                      and subject in m.as_string()), None),
        what="failure notice")
    assert notice.get_content_type() == "multipart/report"
    assert notice.get_param("report-type") == "delivery-status"
    text = notice.as_string()
    assert "Final-Recipient: rfc822; nobody@b.test" in text
    assert "Status: 5.1.1" in text
    assert "Action: failed" in text
    assert notice["Return-Path"] == "<>"
    assert "queue is empty" in a.admin("queue", "list")
    # Both mail logs tell the story: b refused the recipient, a gave up on it.
    assert any("refused" in line and "5.1.1 <nobody@b.test>" in line
               for line in world["b"].log().splitlines())
    assert any("delivery failed" in line and "to=<nobody@b.test>" in line
               and f"from=<{users['alice']}>" in line for line in a.log().splitlines())


def test_dmarc_reject_is_refused_at_the_mx_and_not_stored(world):
    b, users = world["b"], world["users"]
    subject = f"spoofed {uuid.uuid4()}"
    message = f"From: <ceo@c.test>\r\nTo: <{users['bob']}>\r\nSubject: {subject}\r\n\r\npay now\r\n"
    with smtplib.SMTP("127.0.0.1", b.ports["smtp"], timeout=60) as c:
        c.ehlo("attacker.example")
        with pytest.raises(smtplib.SMTPDataError) as refused:
            c.sendmail("ceo@c.test", [users["bob"]], message)
    assert refused.value.smtp_code == 550
    assert b"DMARC" in refused.value.smtp_error
    assert b.find(users["bob"], subject) is None


def test_queue_retries_survives_restart_and_delivers_to_postfix(world):
    sink = peer("smtp-sink")
    if sink is None:
        pytest.skip("Postfix smtp-sink is not installed")
    a, users, port = world["a"], world["users"], world["sink_port"]
    subject = f"to the sink {uuid.uuid4()}"
    a.send(users["alice"], ["someone@sink.test"], subject)

    # Nothing listens yet: the recipient stays queued with the error.
    def deferred():
        out = a.admin("queue", "list")
        ids = [line.split()[0] for line in out.splitlines() if line.strip() and line.split()[0].isdigit()]
        for qid in ids:
            shown = a.admin("queue", "show", qid)
            if "someone@sink.test" in shown and "attempts=0" not in shown:
                return qid, shown
        return None
    qid, shown = eventually(deferred, what="a deferred attempt")
    assert "pending" in shown, shown

    # The queue is on disk: it survives a restart.
    a.stop()
    a.start()
    assert "someone@sink.test" in a.admin("queue", "show", qid)

    # smtp-sink drops privileges to nobody, which must reach the dump
    # directory (the test's own temporary root is private).
    dump = Path(tempfile.mkdtemp(prefix="bulwark-sink-"))
    os.chmod(dump, 0o777)
    proc = subprocess.Popen(
        [sink, "-u", "nobody", "-d", f"{dump}/%M.", f"127.0.0.1:{port}", "10"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        a.admin("queue", "retry", qid)
        eventually(lambda: "queue is empty" in a.admin("queue", "list"), what="delivery to smtp-sink")
        files = eventually(lambda: [p for p in dump.iterdir() if p.is_file()], what="a dumped message")
        dumped = b"".join(p.read_bytes() for p in files)
        assert subject.encode() in dumped
        assert b"DKIM-Signature:" in dumped
        assert proc.poll() is None, "smtp-sink stopped"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(dump, ignore_errors=True)
    # Exactly one copy was accepted, and the sender got no notice.
    assert dumped.count(subject.encode()) == 1
    assert not any("Undelivered" in (m["Subject"] or "") and subject in m.as_string()
                   for m in a.inbox(users["alice"]))


def test_dsn_success_notice_on_request(world):
    a, b, users = world["a"], world["b"], world["users"]
    subject = f"notify me {uuid.uuid4()}"
    message = f"From: <{users['alice']}>\r\nTo: <{users['bob']}>\r\nSubject: {subject}\r\n\r\nhi\r\n"
    with smtplib.SMTP("127.0.0.1", a.ports["submission"], timeout=30) as c:
        c.starttls(context=tls_context())
        c.ehlo()
        assert c.has_extn("dsn")
        c.login(users["alice"], PASSWORD)
        c.sendmail(users["alice"], [users["bob"]], message,
                   mail_options=["RET=HDRS", "ENVID=track-7"],
                   rcpt_options=["NOTIFY=SUCCESS,FAILURE"])
    eventually(lambda: b.find(users["bob"], subject), what="delivery")
    notice = eventually(
        lambda: next((m for m in a.inbox(users["alice"])
                      if m["Subject"] == "Successful Mail Delivery Report"
                      and subject in m.as_string()), None),
        what="a success notice")
    text = notice.as_string()
    assert "Action: relayed" in text
    assert f"Final-Recipient: rfc822; {users['bob']}" in text
    assert "Original-Envelope-Id: track-7" in text


def dav(server: Server, user: str, method: str, path: str, body: str | None = None):
    conn = http.client.HTTPSConnection("127.0.0.1", server.ports["https"], context=tls_context(), timeout=30)
    auth = base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()
    conn.request(method, path, body=body.encode() if body else None,
                 headers={"Authorization": f"Basic {auth}", "Content-Type": "text/calendar"})
    response = conn.getresponse()
    data = response.read().decode()
    conn.close()
    return response.status, data


def attendee_line(data: str, address: str) -> str:
    unfolded = data.replace("\r\n ", "")
    return next(line for line in unfolded.splitlines()
                if line.startswith("ATTENDEE") and line.lower().endswith(f"mailto:{address}"))


def test_invitation_to_another_server_is_applied_and_answered(world):
    """alice@a.test invites bob@b.test: the iMIP mail reaches B, B puts the
    meeting in bob's calendar, bob accepts there, and the iMIP reply makes
    alice's copy on A say so."""
    a, b, users = world["a"], world["b"], world["users"]
    alice, bob = users["alice"], users["bob"]
    uid = f"cross-{uuid.uuid4()}"
    event = (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//imip//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:{uid}\r\nDTSTAMP:20300101T000000Z\r\nDTSTART:20300610T090000Z\r\n"
        "DTEND:20300610T100000Z\r\nSUMMARY:Partner review\r\n"
        f"ORGANIZER:mailto:{alice}\r\nATTENDEE;PARTSTAT=ACCEPTED:mailto:{alice}\r\n"
        f"ATTENDEE;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:{bob}\r\n"
        "END:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    alices = f"/dav/calendars/{alice}/default/{uid}.ics"
    status, _ = dav(a, alice, "PUT", alices, event)
    assert status == 201
    _, data = dav(a, alice, "GET", alices)
    assert "SCHEDULE-STATUS=1.1" in attendee_line(data, bob)

    mail = eventually(lambda: b.find(bob, "Invitation: Partner review"), what="the iMIP invitation")
    part = next(p for p in mail.walk() if p.get_content_type() == "text/calendar")
    assert part.get_param("method") == "REQUEST"
    assert uid in part.get_payload(decode=True).decode()
    assert "dkim=pass" in mail["Authentication-Results"]

    bobs = f"/dav/calendars/{bob}/default/{uid}.ics"
    data = eventually(lambda: (lambda r: r[0] == 200 and r[1])(dav(b, bob, "GET", bobs)),
                      what="the invitation in bob's calendar")
    assert "PARTSTAT=NEEDS-ACTION" in attendee_line(data, bob)
    accepted = data.replace("\r\n ", "").replace(
        attendee_line(data, bob), attendee_line(data, bob).replace("NEEDS-ACTION", "ACCEPTED"))
    status, _ = dav(b, bob, "PUT", bobs, accepted)
    assert status == 204

    eventually(lambda: "PARTSTAT=ACCEPTED" in attendee_line(dav(a, alice, "GET", alices)[1], bob),
               what="bob's answer in alice's copy")
    # A forged answer (From: someone else) changes nothing.
    forged = (f"From: <mallory@b.test>\r\nTo: <{alice}>\r\nSubject: fake\r\n"
              "Content-Type: text/calendar; method=REPLY\r\n\r\n"
              + event.replace("VERSION:2.0", "VERSION:2.0\r\nMETHOD:REPLY")
              .replace(f"ATTENDEE;PARTSTAT=ACCEPTED:mailto:{alice}\r\n", "")
              .replace("NEEDS-ACTION;RSVP=TRUE", "DECLINED"))
    b.add_user("mallory")
    with smtplib.SMTP("127.0.0.1", b.ports["submission"], timeout=30) as c:
        c.starttls(context=tls_context())
        c.login("mallory@b.test", PASSWORD)
        c.sendmail("mallory@b.test", [alice], forged)
    eventually(lambda: a.find(alice, "fake"), what="the forged reply as mail")
    # Calendar mail is applied just after it is stored; give that its moment.
    time.sleep(1)
    assert "PARTSTAT=ACCEPTED" in attendee_line(dav(a, alice, "GET", alices)[1], bob)


def test_a_client_on_a_blocklist_reaches_only_postmaster(world):
    """RFC 5782: b asks bl.test about each client; a listed one may still
    write to postmaster (to ask to be let through), nobody else."""
    b, bob = world["b"], world["users"]["bob"]
    with smtplib.SMTP("127.0.0.1", b.ports["smtp"], timeout=30,
                      source_address=("127.0.0.2", 0)) as c:
        c.ehlo("listed.example")
        assert c.mail("someone@listed.example")[0] == 250
        code, text = c.rcpt(bob)
        assert code == 554 and text.startswith(b"5.7.1") and b"listed at bl.test" in text, text
        code, text = c.rcpt("postmaster@b.test")
        assert code == 250, text
        code, text = c.data(b"From: someone@listed.example\r\nSubject: please delist\r\n\r\nHi.\r\n")
        assert code == 250, text
    assert b.find(bob, "please delist") is not None
    listed = [line for line in b.log().splitlines() if "DNS blocklist" in line]
    assert any("ip=127.0.0.2" in line and "zone=bl.test" in line for line in listed), listed
    assert not any("ip=127.0.0.1" in line for line in listed), "a's address is not listed"
