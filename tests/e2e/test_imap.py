"""IMAP against the real binary started by `bulwark quickstart`, with
Python's imaplib as the client: implicit TLS on 9930 and STARTTLS on 1430,
the demo users' generated passwords, per-user isolation."""

import imaplib
import ssl

import pytest

HOST = "127.0.0.1"
IMAPS = 9930
IMAP = 1430


def tls_context(quickstart):
    ctx = ssl.create_default_context(cafile=str(quickstart.cert))
    ctx.check_hostname = False  # the demo certificate names "localhost"
    return ctx


def login_imaps(quickstart, user):
    conn = imaplib.IMAP4_SSL(HOST, IMAPS, ssl_context=tls_context(quickstart))
    conn.login(user, quickstart.credentials()[user])
    return conn


def test_imaps_login_standard_folders_append_fetch(quickstart):
    alice = login_imaps(quickstart, "alice@example.test")
    typ, boxes = alice.list()
    assert typ == "OK"
    listing = b"\n".join(boxes)
    for name, use in [(b"INBOX", None), (b"Sent", b"\\Sent"), (b"Drafts", b"\\Drafts"),
                      (b"Trash", b"\\Trash"), (b"Junk", b"\\Junk"), (b"Archive", b"\\Archive")]:
        assert name in listing, listing
        if use:
            assert use in listing, listing

    message = (b"From: alice@example.test\r\nTo: alice@example.test\r\n"
               b"Subject: e2e imap\r\nMessage-ID: <e2e-1@example.test>\r\n\r\nHello over IMAPS.\r\n")
    typ, _ = alice.append("INBOX", r"(\Flagged)", None, message)
    assert typ == "OK"
    typ, data = alice.select("INBOX")
    assert typ == "OK" and int(data[0]) == 1
    typ, data = alice.fetch("1", "(FLAGS BODY.PEEK[])")
    assert typ == "OK"
    assert data[0][1] == message
    assert b"\\Flagged" in data[0][0]
    alice.store("1", "+FLAGS", r"(\Seen)")
    typ, data = alice.search(None, "SEEN")
    assert data[0].split() == [b"1"]
    typ, data = alice.search(None, 'SUBJECT "e2e imap"')
    assert data[0].split() == [b"1"]
    alice.logout()


def test_starttls_required_and_users_isolated(quickstart):
    plain = imaplib.IMAP4(HOST, IMAP)
    assert "LOGINDISABLED" in plain.capabilities
    with pytest.raises(imaplib.IMAP4.error):
        plain.login("bob@example.test", quickstart.credentials()["bob@example.test"])
    plain.starttls(ssl_context=tls_context(quickstart))
    plain.login("bob@example.test", quickstart.credentials()["bob@example.test"])

    alice = login_imaps(quickstart, "alice@example.test")
    alice.append("INBOX", None, None, b"Subject: private\r\n\r\nalice only\r\n")
    alice.logout()

    typ, data = plain.select("INBOX")
    assert typ == "OK" and int(data[0]) == 0, "bob sees nothing of alice's"
    typ, data = plain.search(None, "ALL")
    assert data[0] == b""
    typ, boxes = plain.list('""', "*")
    assert b"alice" not in b"".join(boxes).lower()
    plain.logout()


def test_wrong_password_is_refused_generically(quickstart):
    conn = imaplib.IMAP4_SSL(HOST, IMAPS, ssl_context=tls_context(quickstart))
    with pytest.raises(imaplib.IMAP4.error) as wrong:
        conn.login("alice@example.test", "not the password")
    with pytest.raises(imaplib.IMAP4.error) as unknown:
        conn.login("nobody@example.test", "not the password")
    assert str(wrong.value) == str(unknown.value)
    conn.logout()
