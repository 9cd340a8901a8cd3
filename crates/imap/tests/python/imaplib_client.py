"""Drives the Bulwark IMAP server with Python's standard imaplib.

Arguments: imap_port imaps_port cafile user password expected_message_file
Exits non-zero (with an assertion message) on the first unexpected answer.
"""
import imaplib
import ssl
import sys
import time

imap_port, imaps_port, cafile, user, password, message_file = sys.argv[1:7]
expected = open(message_file, "rb").read()
ctx = ssl.create_default_context(cafile=cafile)
# Python 3.11's imaplib knows neither MOVE nor IDLE.
imaplib.Commands.setdefault("MOVE", ("SELECTED",))
imaplib.Commands.setdefault("IDLE", ("AUTH", "SELECTED"))


def check(cond, what):
    if not cond:
        raise AssertionError(what)


# STARTTLS on the plain port: no login before TLS.
plain = imaplib.IMAP4("localhost", int(imap_port))
check("LOGINDISABLED" in plain.capabilities, plain.capabilities)
try:
    plain.login(user, password)
    raise AssertionError("login before TLS succeeded")
except imaplib.IMAP4.error:
    pass
plain.starttls(ssl_context=ctx)
check("AUTH=PLAIN" in plain.capabilities, plain.capabilities)
typ, _ = plain.login(user, password)
check(typ == "OK", typ)
plain.logout()

# Implicit TLS.
m = imaplib.IMAP4_SSL("localhost", int(imaps_port), ssl_context=ctx)
typ, _ = m.login(user, password)
check(typ == "OK", typ)
typ, boxes = m.list()
names = b"\n".join(boxes)
for want in [b'"/" INBOX', b"\\Sent", b"\\Drafts", b"\\Trash", b"\\Junk", b"\\Archive"]:
    check(want in names, (want, boxes))

typ, data = m.select("INBOX")
check(typ == "OK" and data == [b"1"], (typ, data))
typ, data = m.fetch("1", "(BODY.PEEK[] RFC822.SIZE)")
check(typ == "OK", typ)
check(data[0][1] == expected, "BODY[] is not byte-exact")
check(b"RFC822.SIZE %d" % len(expected) in data[1], data)
typ, data = m.fetch("1", "(ENVELOPE FLAGS)")
check(b'"Quarterly report"' in data[0] and b"FLAGS ()" in data[0], data)
typ, data = m.fetch("1", "(BODY[HEADER.FIELDS (SUBJECT)])")
check(data[0][1] == b"Subject: Quarterly report\r\n\r\n", data)

typ, data = m.store("1", "+FLAGS", "(\\Flagged)")
check(typ == "OK" and b"\\Flagged" in data[0] and b"\\Seen" in data[0], data)
typ, data = m.search(None, "FLAGGED")
check(data == [b"1"], data)
typ, data = m.search(None, "UNFLAGGED")
check(data == [b""], data)
typ, data = m.search(None, '(SUBJECT "quarterly")')
check(data == [b"1"], data)

typ, data = m.append("Drafts", "(\\Draft)", imaplib.Time2Internaldate(time.time()),
                     b"Subject: from python\r\n\r\nhello\r\n")
check(typ == "OK" and b"APPENDUID" in data[0], data)
typ, data = m.status("Drafts", "(MESSAGES UNSEEN)")
check(b"MESSAGES 1" in data[0] and b"UNSEEN 1" in data[0], data)

typ, data = m.copy("1", "Archive")
check(typ == "OK" and b"COPYUID" in data[0], data)
typ, data = m.uid("MOVE", "1", "Trash")
check(typ == "OK", (typ, data))
typ, data = m.select("Trash")
check(data == [b"1"], data)
typ, data = m.fetch("1", "(BODY.PEEK[])")
check(data[0][1] == expected, "moved message changed")
m.store("1", "+FLAGS", "(\\Deleted)")
typ, data = m.expunge()
check(typ == "OK" and data == [b"1"], data)
typ, data = m.select("Archive", readonly=True)
check(data == [b"1"], data)

# IDLE in a second session; an APPEND from the first wakes it.
idler = imaplib.IMAP4_SSL("localhost", int(imaps_port), ssl_context=ctx)
idler.login(user, password)
typ, data = idler.select("INBOX")
check(data == [b"0"], data)
tag = idler._new_tag()
idler.send(tag + b" IDLE\r\n")
check(idler.readline().startswith(b"+"), "no IDLE continuation")
started = time.monotonic()
m.append("INBOX", None, None, b"Subject: wake up\r\n\r\nhi\r\n")
idler.sock.settimeout(1.0)
line = idler.readline()
check(line == b"* 1 EXISTS\r\n", line)
check(time.monotonic() - started < 1.0, "IDLE too slow")
idler.send(b"DONE\r\n")
line = idler.readline()
check(line.startswith(tag + b" OK"), line)
idler.sock.settimeout(None)
idler.logout()
m.logout()
print("imaplib: all checks passed")
