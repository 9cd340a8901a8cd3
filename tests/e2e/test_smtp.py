"""Mail flow through the real binary started by `bulwark quickstart`:
Python's smtplib delivers and submits, imaplib reads (and idles)."""

import imaplib
import smtplib
import ssl
import time
import urllib.request

import pytest

from conftest import start_quickstart

HOST = "127.0.0.1"
MX, SUBMISSION, SUBMISSIONS, IMAPS = 2525, 5870, 4650, 9930


def tls_context(quickstart):
    ctx = ssl.create_default_context(cafile=str(quickstart.cert))
    ctx.check_hostname = False  # the demo certificate names "localhost"
    return ctx


def imap(quickstart, user):
    conn = imaplib.IMAP4_SSL(HOST, IMAPS, ssl_context=tls_context(quickstart))
    conn.login(user, quickstart.credentials()[user])
    return conn


def test_inbound_mail_reaches_inbox_and_wakes_idle(quickstart):
    bob = imap(quickstart, "bob@example.test")
    typ, data = bob.select("INBOX")
    assert int(data[0]) == 0
    tag = bob._new_tag()
    bob.send(tag + b" IDLE\r\n")
    assert bob.readline().startswith(b"+")

    body = (b"From: someone@elsewhere.test\r\nTo: bob@example.test\r\n"
            b"Subject: inbound e2e\r\nMessage-ID: <in-1@elsewhere.test>\r\n\r\nHi Bob.\r\n")
    with smtplib.SMTP(HOST, MX, timeout=30) as mx:
        refused = mx.sendmail("someone@elsewhere.test", ["bob@example.test"], body)
        assert refused == {}

    bob.sock.settimeout(2)  # the push must arrive within a second or so
    started = time.time()
    line = bob.readline()
    assert line.strip() == b"* 1 EXISTS", line
    assert time.time() - started < 2
    bob.sock.settimeout(30)
    bob.send(b"DONE\r\n")
    while not bob.readline().startswith(tag):
        pass

    typ, data = bob.fetch("1", "(BODY.PEEK[])")
    stored = data[0][1]
    assert stored.endswith(body), "the message is stored byte for byte after the trace headers"
    assert stored.startswith(b"Return-Path: <someone@elsewhere.test>\r\nReceived: ")
    bob.logout()


def test_inbound_refuses_relay_and_unknown_users(quickstart):
    with smtplib.SMTP(HOST, MX, timeout=30) as mx:
        mx.ehlo("client.elsewhere.test")
        assert mx.mail("someone@elsewhere.test")[0] == 250
        code, text = mx.rcpt("victim@elsewhere.test")
        assert code == 550, text
        code, text = mx.rcpt("nobody@example.test")
        assert code == 550 and b"5.1.1" in text


def test_postmaster_is_accepted_for_every_domain(quickstart):
    """RFC 5321 4.5.1: postmaster@ each domain, and a bare <postmaster>,
    reach a person; quickstart names its first demo user as postmaster."""
    admin_out = quickstart.admin("domain", "add", "example.org")
    assert "added domain example.org" in admin_out
    assert "reaches nobody" not in admin_out, admin_out
    with smtplib.SMTP(HOST, MX, timeout=30) as mx:
        mx.ehlo("client.elsewhere.test")
        for rcpt, subject in [("PostMaster@example.test", "pm one"),
                              ("postmaster@example.org", "pm two"),
                              ("postmaster", "pm three")]:
            assert mx.mail("reporter@elsewhere.test")[0] == 250
            code, text = mx.rcpt(rcpt)
            assert code == 250, (rcpt, text)
            body = (f"From: reporter@elsewhere.test\r\nTo: {rcpt}\r\n"
                    f"Subject: {subject}\r\n\r\nA report.\r\n").encode()
            code, text = mx.data(body)
            assert code == 250, text
        # Only the postmaster local part is special.
        assert mx.mail("reporter@elsewhere.test")[0] == 250
        code, text = mx.rcpt("postmasters@example.test")
        assert code == 550 and b"5.1.1" in text
        mx.rset()
    alice = imap(quickstart, "alice@example.test")
    alice.select("INBOX", readonly=True)
    for subject in ["pm one", "pm two", "pm three"]:
        typ, data = alice.search(None, f'SUBJECT "{subject}"')
        assert typ == "OK" and len(data[0].split()) == 1, (subject, data)
    alice.logout()
    bob = imap(quickstart, "bob@example.test")
    typ, data = bob.select("INBOX", readonly=True)
    assert int(data[0]) == 0, "postmaster mail goes to the postmaster only"
    bob.logout()


def test_a_looping_message_is_refused(quickstart):
    """RFC 5321 6.3: more than 100 Received fields means a mail loop."""
    def message(hops, subject):
        trace = "".join(f"Received: from relay{n}.elsewhere.test by relay{n + 1}.elsewhere.test;"
                        f" Thu, 26 Nov 2026 10:00:{n % 60:02d} +0000\r\n" for n in range(hops))
        return (trace + "From: a@elsewhere.test\r\nTo: bob@example.test\r\n"
                f"Subject: {subject}\r\n\r\nHello.\r\n").encode()
    with smtplib.SMTP(HOST, MX, timeout=30) as mx:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            mx.sendmail("a@elsewhere.test", ["bob@example.test"], message(101, "looping"))
        assert refused.value.smtp_code == 554
        assert refused.value.smtp_error.startswith(b"5.4.6"), refused.value.smtp_error
        # The session goes on, and 100 hops are still a message.
        assert mx.sendmail("a@elsewhere.test", ["bob@example.test"], message(100, "far")) == {}
    bob = imap(quickstart, "bob@example.test")
    typ, data = bob.select("INBOX", readonly=True)
    assert int(data[0]) == 1, "only the message within the limit is stored"
    typ, data = bob.search(None, 'SUBJECT "far"')
    assert data[0] == b"1"
    bob.logout()


def test_mail_log_names_envelopes_and_refusals(quickstart):
    body = (b"From: carol@elsewhere.test\r\nTo: bob@example.test\r\n"
            b"Subject: log e2e\r\n\r\nHi.\r\n")
    with smtplib.SMTP(HOST, MX, timeout=30) as mx:
        mx.ehlo("client.elsewhere.test")
        assert mx.mail("carol@elsewhere.test")[0] == 250
        assert mx.rcpt("nobody@example.test")[0] == 550
        assert mx.rcpt("bob@example.test")[0] == 250
        code, text = mx.data(body)
        assert code == 250, text
    # "OK id=<id> message stored": the log names the same transaction.
    transaction = text.decode().split("id=")[1].split()[0]
    delivered = [line for line in quickstart.log().splitlines() if "message delivered" in line]
    assert len(delivered) == 1, delivered
    assert f"id={transaction}" in delivered[0]
    assert "from=<carol@elsewhere.test>" in delivered[0]
    assert "to=<bob@example.test>" in delivered[0]
    assert "peer=127.0.0.1:" in delivered[0], "the client's address comes from the connection's span"
    refused = [line for line in quickstart.log().splitlines() if " refused " in line]
    assert any("550 5.1.1 <nobody@example.test>" in line for line in refused), refused


def test_submission_sends_as_self_and_refuses_spoofing(quickstart):
    creds = quickstart.credentials()
    with smtplib.SMTP_SSL(HOST, SUBMISSIONS, context=tls_context(quickstart), timeout=30) as sub:
        sub.login("alice@example.test", creds["alice@example.test"])
        msg = (b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: from alice\r\n\r\n"
               b"Submitted over implicit TLS.\r\n")
        assert sub.sendmail("alice@example.test", ["bob@example.test"], msg) == {}
        spoof = b"From: bob@example.test\r\nTo: bob@example.test\r\nSubject: spoof\r\n\r\nx\r\n"
        with pytest.raises((smtplib.SMTPSenderRefused, smtplib.SMTPDataError)):
            sub.sendmail("alice@example.test", ["bob@example.test"], spoof)

    with smtplib.SMTP(HOST, SUBMISSION, timeout=30) as plain:
        plain.ehlo()
        assert not plain.has_extn("auth"), "no AUTH before STARTTLS"
        plain.starttls(context=tls_context(quickstart))
        plain.ehlo()
        plain.login("bob@example.test", creds["bob@example.test"])

    bob = imap(quickstart, "bob@example.test")
    bob.select("INBOX")
    typ, data = bob.search(None, 'SUBJECT "from alice"')
    assert len(data[0].split()) == 1
    typ, data = bob.search(None, 'SUBJECT "spoof"')
    assert data[0] == b"", "a refused message is not stored"
    bob.logout()


def test_submission_recipients_are_limited_per_user(quickstart):
    """smtp.max_recipients_per_hour bounds what one login (a stolen password,
    say) can send; another user's budget is untouched."""
    assert quickstart.stop() == 0
    config = quickstart.data / "bulwark.toml"
    text = config.read_text()
    assert "max_recipients_per_hour = 1000" in text
    config.write_text(text.replace("max_recipients_per_hour = 1000", "max_recipients_per_hour = 3"))
    qs = start_quickstart(quickstart.root)
    try:
        creds = qs.credentials()
        msg = b"From: alice@example.test\r\nSubject: budget\r\n\r\nHi.\r\n"
        with smtplib.SMTP_SSL(HOST, SUBMISSIONS, context=tls_context(qs), timeout=30) as sub:
            sub.login("alice@example.test", creds["alice@example.test"])
            assert sub.mail("alice@example.test")[0] == 250
            for rcpt in ["bob@example.test", "alice@example.test", "bob+a@example.test"]:
                assert sub.rcpt(rcpt)[0] == 250, rcpt
            code, reply = sub.rcpt("bob+b@example.test")
            assert code == 450 and reply.startswith(b"4.7.1"), reply
            code, reply = sub.data(msg)
            assert code == 250, reply
            # The three sent used the budget up.
            assert sub.mail("alice@example.test")[0] == 250
            code, reply = sub.rcpt("bob@example.test")
            assert code == 450, reply
            sub.rset()
        with smtplib.SMTP_SSL(HOST, SUBMISSIONS, context=tls_context(qs), timeout=30) as sub:
            sub.login("bob@example.test", creds["bob@example.test"])
            bob_msg = b"From: bob@example.test\r\nSubject: mine\r\n\r\nHi.\r\n"
            assert sub.sendmail("bob@example.test", ["alice@example.test"], bob_msg) == {}
        bob = imap(qs, "bob@example.test")
        typ, data = bob.select("INBOX", readonly=True)
        assert int(data[0]) == 1, "bob got the message once, for two of his addresses"
        bob.logout()
        refused = [line for line in qs.log().splitlines() if "hourly limit of recipients" in line]
        assert any("user=alice@example.test" in line for line in refused), refused
    finally:
        qs.stop()


def wait_for_messages(conn, mailbox, count, deadline=30):
    """Selects `mailbox` until it holds `count` messages (the outbound queue
    delivers notices in the background); answers the count."""
    end = time.time() + deadline
    while True:
        typ, data = conn.select(mailbox, readonly=True)
        if int(data[0]) >= count or time.time() > end:
            return int(data[0])
        time.sleep(0.2)


def test_a_recipient_refused_after_others_accepted_gets_a_failure_notice(quickstart):
    """A message answered 250 because alice took it while bob's mailbox was
    full must not vanish for bob unseen: the sender gets a failure DSN."""
    quickstart.admin("user", "quota", "bob@example.test", "1K")
    creds = quickstart.credentials()
    body = "".join(f"line {n} of a message larger than bob's quota\r\n" for n in range(100))
    msg = (f"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: too big for bob\r\n"
           f"Message-ID: <full-1@example.test>\r\n\r\n{body}").encode()
    with smtplib.SMTP_SSL(HOST, SUBMISSIONS, context=tls_context(quickstart), timeout=30) as sub:
        sub.login("alice@example.test", creds["alice@example.test"])
        assert sub.sendmail("alice@example.test", ["alice@example.test", "bob@example.test"], msg) == {}
        # NOTIFY=NEVER for bob: no failure notice; SUCCESS for alice: one
        # success notice, queued (and logged) before the 250.
        assert sub.mail("alice@example.test")[0] == 250
        assert sub.rcpt("alice@example.test", ["NOTIFY=SUCCESS"])[0] == 250
        assert sub.rcpt("bob@example.test", ["NOTIFY=NEVER"])[0] == 250
        code, reply = sub.data(msg.replace(b"full-1@", b"full-2@"))
        assert code == 250, reply
        second = reply.decode().split("id=")[1].split()[0]
    notices = [line for line in quickstart.log().splitlines()
               if "delivery notice queued" in line and f"id={second}" in line]
    assert len(notices) == 1 and "SUCCESS" in notices[0], notices

    bob = imap(quickstart, "bob@example.test")
    typ, data = bob.select("INBOX", readonly=True)
    assert int(data[0]) == 0
    bob.logout()
    alice = imap(quickstart, "alice@example.test")
    # Her two copies, the failure notice for bob and the success notice.
    assert wait_for_messages(alice, "INBOX", 4) == 4
    typ, data = alice.search(None, "HEADER", "Content-Type", "report-type=delivery-status")
    found = data[0].split()
    assert len(found) == 2, found
    reports = []
    for n in found:
        typ, fetched = alice.fetch(n, "(BODY.PEEK[])")
        reports.append(fetched[0][1])
    failed = [r for r in reports if b"Action: failed" in r]
    assert len(failed) == 1, reports
    assert b"Final-Recipient: rfc822; bob@example.test" in failed[0]
    assert b"Status: 5.2.2" in failed[0]
    assert b"full-1@example.test" in failed[0], "the notice names the original"
    assert b"Final-Recipient: rfc822; alice@example.test" not in failed[0]
    delivered = [r for r in reports if b"Action: delivered" in r]
    assert len(delivered) == 1, reports
    assert b"Final-Recipient: rfc822; alice@example.test" in delivered[0]
    assert b"Final-Recipient: rfc822; bob@example.test" not in delivered[0]
    alice.logout()


def metrics() -> dict:
    """The admin listener's /metrics as name -> value (unlabelled samples),
    with the declared type of each under "# TYPE name"."""
    with urllib.request.urlopen("http://127.0.0.1:8080/metrics", timeout=10) as r:
        text = r.read().decode()
    found = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            found[f"# TYPE {name}"] = kind
        elif line and not line.startswith("#") and "{" not in line:
            name, value = line.split()
            found[name] = int(value)
    return found


def test_mail_flow_is_counted_on_metrics(quickstart):
    before = metrics()
    assert before["bulwark_smtp_inbound_messages_total"] == 0
    assert before["# TYPE bulwark_queue_messages"] == "gauge"
    assert before["# TYPE bulwark_queue_failed_total"] == "counter"
    with smtplib.SMTP(HOST, MX, timeout=30) as mx:
        mx.ehlo("client.elsewhere.test")
        assert mx.mail("carol@elsewhere.test")[0] == 250
        assert mx.rcpt("nobody@example.test")[0] == 550
        assert mx.rcpt("bob@example.test")[0] == 250
        assert mx.data(b"Subject: counted\r\n\r\nHi.\r\n")[0] == 250
    creds = quickstart.credentials()
    with smtplib.SMTP_SSL(HOST, SUBMISSIONS, context=tls_context(quickstart), timeout=30) as sub:
        sub.login("alice@example.test", creds["alice@example.test"])
        msg = b"From: alice@example.test\r\nSubject: away\r\n\r\nHi.\r\n"
        assert sub.sendmail("alice@example.test", ["someone@remote.invalid"], msg) == {}
    after = metrics()
    assert after["bulwark_smtp_inbound_messages_total"] == 1
    assert after["bulwark_smtp_inbound_refusals_total"] == 1
    assert after["bulwark_smtp_submission_messages_total"] == 1
    assert after["bulwark_smtp_submission_refusals_total"] == 0
    # The queue tries the remote recipient in the background. It cannot be
    # reached: with no such domain it fails, and the bounce to alice is
    # delivered from the queue, which then is empty; with no DNS here it
    # is deferred and stays queued.
    def settled(m):
        bounced = (m["bulwark_queue_failed_total"] == 1 and m["bulwark_queue_delivered_total"] == 1
                   and m["bulwark_queue_messages"] == 0 and m["bulwark_queue_recipients"] == 0)
        waiting = (m["bulwark_queue_deferred_total"] >= 1 and m["bulwark_queue_failed_total"] == 0
                   and m["bulwark_queue_messages"] == 1 and m["bulwark_queue_recipients"] == 1)
        return bounced or waiting
    deadline = time.time() + 30
    now = metrics()
    while not settled(now) and time.time() < deadline:
        time.sleep(0.2)
        now = metrics()
    assert settled(now), now


def test_failed_logins_are_logged_with_protocol_client_and_user(quickstart):
    """Every protocol's failed login is one log line naming the protocol,
    the client and the name tried (escaped), for fail2ban and for people."""
    import base64
    import poplib
    import urllib.error
    ctx = tls_context(quickstart)
    with pytest.raises(imaplib.IMAP4.error):
        imaplib.IMAP4_SSL(HOST, IMAPS, ssl_context=ctx).login("alice@example.test", "wrong-password")
    pop = poplib.POP3_SSL(HOST, 9950, context=ctx)
    pop.user("alice@example.test")
    with pytest.raises(poplib.error_proto):
        pop.pass_("wrong-password")
    pop.quit()
    with smtplib.SMTP_SSL(HOST, SUBMISSIONS, context=ctx, timeout=30) as sub:
        with pytest.raises(smtplib.SMTPAuthenticationError):
            sub.login("alice@example.test", "wrong-password")
        # A name carrying a terminal escape must not reach the log raw.
        plain = base64.b64encode(b"\0evil\x1b[31m@example.test\0wrong-password").decode()
        assert sub.docmd("AUTH", "PLAIN " + plain)[0] == 535
    request = urllib.request.Request("https://127.0.0.1:8443/dav/", method="PROPFIND", headers={
        "Authorization": "Basic " + base64.b64encode(b"alice@example.test:wrong-password").decode(),
        "Depth": "0"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, context=ctx, timeout=10)
    assert refused.value.code == 401

    failed = [line for line in quickstart.log().splitlines() if "authentication failed" in line]
    for protocol in ["imaps", "pop3s", "submissions", "https"]:
        mine = [line for line in failed if f'protocol="{protocol}"' in line]
        assert len(mine) >= 1, (protocol, failed)
        assert 'user="alice@example.test"' in mine[0] and "peer=127.0.0.1:" in mine[0], mine
    assert "\x1b" not in quickstart.log()
    assert any('user="evil\\u{1b}[31m@example.test"' in line for line in failed), failed


def test_a_full_mailbox_is_refused_at_rcpt(quickstart):
    """A mailbox already at its quota is refused at RCPT (552 5.2.2), so the
    sending server reports it; the other recipients still get the message."""
    bob = imap(quickstart, "bob@example.test")
    filler = b"Subject: filler\r\n\r\n" + b"x" * 2000 + b"\r\n"
    typ, _ = bob.append("INBOX", None, None, filler)
    assert typ == "OK"
    bob.logout()
    quickstart.admin("user", "quota", "bob@example.test", "1K")
    with smtplib.SMTP(HOST, MX, timeout=30) as mx:
        mx.ehlo("client.elsewhere.test")
        assert mx.mail("carol@elsewhere.test")[0] == 250
        code, text = mx.rcpt("bob@example.test")
        assert code == 552 and text.startswith(b"5.2.2"), text
        assert mx.rcpt("alice@example.test")[0] == 250
        code, text = mx.data(b"From: carol@elsewhere.test\r\nSubject: for both\r\n\r\nHi.\r\n")
        assert code == 250, text
        transaction = text.decode().split("id=")[1].split()[0]
    bob = imap(quickstart, "bob@example.test")
    typ, data = bob.select("INBOX", readonly=True)
    assert int(data[0]) == 1, "only the filler"
    bob.logout()
    alice = imap(quickstart, "alice@example.test")
    typ, data = alice.select("INBOX", readonly=True)
    assert int(data[0]) == 1
    alice.logout()
    assert not any("delivery notice queued" in line and transaction in line
                   for line in quickstart.log().splitlines()), "refused at RCPT: no notice from us"
