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


def test_sharing_with_acl_and_a_shared_mailbox_is_enforced_and_audited(quickstart):
    """Alice shares her Inbox read-only with imaplib's SETACL; the
    administrator gives bob full access to a shared mailbox; bob's reads
    and writes are limited to what was granted and appear in the audit log,
    whose chain `bulwark audit verify` still accepts."""
    quickstart.admin("shared", "add", "support@example.test")
    quickstart.admin("grant", "add", "--from", "support@example.test",
                     "--to", "bob@example.test", "--right", "full-access")
    alice = login_imaps(quickstart, "alice@example.test")
    bob = login_imaps(quickstart, "bob@example.test")
    alice.append("INBOX", None, None, b"Subject: private\r\n\r\nfor alice\r\n")

    alice_inbox = '"Other Users/alice@example.test/INBOX"'
    typ, _ = bob.select(alice_inbox, readonly=True)
    assert typ == "NO"
    typ, _ = alice.setacl("INBOX", "bob@example.test", "lr")
    assert typ == "OK"
    typ, data = alice.getacl("INBOX")
    assert typ == "OK" and b"bob@example.test lr" in data[0], data

    typ, boxes = bob.list()
    listing = b"\n".join(boxes)
    assert b"Other Users/alice@example.test/INBOX" in listing, listing
    assert b"Shared Folders/support@example.test/INBOX" in listing, listing
    assert b"alice@example.test/Sent" not in listing, listing
    typ, data = bob.myrights(alice_inbox)
    assert typ == "OK" and data[0].endswith(b" lr"), data
    try:
        bob.select(alice_inbox)
        raise AssertionError("SELECT with only `lr` must open read-only")
    except imaplib.IMAP4.readonly:
        pass
    typ, data = bob.select(alice_inbox, readonly=True)
    assert typ == "OK"
    typ, data = bob.fetch("1", "(BODY.PEEK[])")
    assert b"for alice" in data[0][1]
    typ, data = bob.store("1", "+FLAGS", r"(\Deleted)")
    assert typ == "NO", data

    shared = '"Shared Folders/support@example.test/INBOX"'
    typ, _ = bob.append(shared, None, None, b"Subject: for the team\r\n\r\nhi\r\n")
    assert typ == "OK"
    typ, data = bob.select(shared)
    assert typ == "OK" and data[0] == b"1"
    typ, _ = alice.select(shared)
    assert typ == "NO", "alice holds no grant on the shared mailbox"

    tail = quickstart.admin("audit", "tail", "-n", "200")
    bob_lines = [l for l in tail.splitlines() if "bob@example.test" in l]
    assert any("mailbox.select" in l and "alice@example.test" in l for l in bob_lines), tail
    assert any("mail.fetch" in l for l in bob_lines), tail
    assert any("email.append" in l and "support@example.test" in l for l in bob_lines), tail
    assert "intact" in quickstart.admin("audit", "verify")
    for conn in (alice, bob):
        conn.logout()
