"""Drives the Bulwark IMAP server with IMAPClient (PyPI `imapclient`), an
independent client library: login, select, fetch, then the extensions
SORT, THREAD, QUOTA and OBJECTID as IMAPClient sends and parses them.

Arguments: imaps_port cafile user password quota_kib
The server holds five messages in INBOX (see python_clients.rs).
Exits non-zero (with an assertion message) on the first unexpected answer.
"""
import ssl
import sys

from imapclient import IMAPClient

imaps_port, cafile, user, password, quota_kib = sys.argv[1:6]
ctx = ssl.create_default_context(cafile=cafile)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


c = IMAPClient("localhost", port=int(imaps_port), ssl=True, ssl_context=ctx)
c.login(user, password)
caps = c.capabilities()
for cap in [b"SORT", b"THREAD=REFERENCES", b"THREAD=ORDEREDSUBJECT", b"QUOTA",
            b"OBJECTID", b"BINARY"]:
    check(cap in caps, (cap, caps))

info = c.select_folder("INBOX")
check(info[b"EXISTS"] == 5, info)
# UIDs (IMAPClient uses UID FETCH, UID SORT and UID THREAD).
data = c.fetch("1:*", ["FLAGS", "ENVELOPE", "RFC822.SIZE"])
check(sorted(data) == [1, 2, 3, 4, 5], data)
check(data[1][b"ENVELOPE"].subject == b"Lunch", data[1])
body = c.fetch([3], ["BODY.PEEK[]"])[3][b"BODY[]"]
check(b"Subject: Re: Lunch" in body, body)
check(c.search(["SUBJECT", "lunch"]) == [1, 3, 4], "search")

check(c.sort(["DATE"]) == [5, 2, 1, 3, 4], c.sort(["DATE"]))
check(c.sort(["REVERSE DATE"]) == [4, 3, 1, 2, 5], "reverse date")
check(c.sort(["SUBJECT", "DATE"]) == [5, 2, 1, 3, 4], c.sort(["SUBJECT", "DATE"]))
check(c.sort("ARRIVAL", ["SUBJECT", "lunch"]) == [1, 3, 4], "sort with criteria")

threads = c.thread("REFERENCES")
# The original (2) takes the reply (5) by subject, though 5 was sent first.
check(threads == ((2, 5), (1, 3, 4)), threads)
threads = c.thread("ORDEREDSUBJECT")
check(threads == ((5, 2), (1, (3,), (4,))), threads)

roots, quotas = c.get_quota_root("INBOX")
check(roots.mailbox == "INBOX" and roots.quota_roots == [""], roots)
check(len(quotas) == 1, quotas)
q = quotas[0]
check(q.quota_root == "" and q.resource == "STORAGE", q)
check(q.limit == int(quota_kib) and 0 < q.usage < q.limit, q)

# OBJECTID items pass through IMAPClient's fetch unchanged.
ids = c.fetch("1:*", ["EMAILID", "THREADID"])
emails = {uid: d[b"EMAILID"] for uid, d in ids.items()}
threads = {uid: d[b"THREADID"] for uid, d in ids.items()}
check(all(isinstance(v, tuple) and v[0].startswith(b"E") for v in emails.values()), ids)
check(len(set(emails.values())) == 5, emails)
check(threads[1] == threads[3] == threads[4] and threads[1] != threads[2], threads)

c.add_flags([1], [b"\\Flagged"])
check(c.search(["FLAGGED"]) == [1], "flag")
c.logout()
print("imapclient: all checks passed")
