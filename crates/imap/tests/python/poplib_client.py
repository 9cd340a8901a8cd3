"""Drives the Bulwark POP3 server with Python's standard poplib.

Arguments: pop3_port pop3s_port cafile user password message1 message2
message1 and message2 are the files holding the two messages delivered to
the user's Inbox, in order. Exits non-zero (with an assertion message) on
the first unexpected answer; prints "all checks passed" at the end.
The Rust test then checks the store: message 1 is gone, message 2 stays.
"""
import poplib
import ssl
import sys

pop3_port, pop3s_port, cafile, user, password, m1_file, m2_file = sys.argv[1:8]
m1 = open(m1_file, "rb").read()
m2 = open(m2_file, "rb").read()
ctx = ssl.create_default_context(cafile=cafile)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def expect_error(fn, *args):
    try:
        resp = fn(*args)
    except poplib.error_proto as e:
        return e.args[0]
    raise AssertionError("expected -ERR from %s, got %r" % (fn.__name__, resp))


def joined(lines):
    return b"".join(line + b"\r\n" for line in lines)


# --- port pop3: no password before STLS --------------------------------
p = poplib.POP3("localhost", int(pop3_port), timeout=10)
check(p.getwelcome().startswith(b"+OK"), p.getwelcome())
caps = p.capa()
check("STLS" in caps and "USER" not in caps and "SASL" not in caps, caps)
err = expect_error(p.user, user)
check(err.startswith(b"-ERR [AUTH]"), err)
p.stls(context=ctx)
caps = p.capa()
check("STLS" not in caps, caps)
check("USER" in caps and caps.get("SASL") == ["PLAIN"], caps)
for cap in ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]:
    check(cap in caps, (cap, caps))
p.user(user)
resp = p.pass_(password)
check(resp.startswith(b"+OK"), resp)

count, size = p.stat()
check((count, size) == (2, len(m1) + len(m2)), (count, size))
resp, listing, _ = p.list()
check(listing == [b"1 %d" % len(m1), b"2 %d" % len(m2)], listing)
check(p.list(2) == b"+OK 2 %d" % len(m2), p.list(2))
resp, uids, _ = p.uidl()
check(len(uids) == 2, uids)
ids = [u.split()[1] for u in uids]
check(len(set(ids)) == 2 and all(0 < len(i) <= 70 for i in ids), ids)
check(p.uidl(1) == b"+OK " + uids[0], p.uidl(1))

# RETR is byte-exact once poplib has undone the dot-stuffing.
resp, lines, octets = p.retr(1)
check(resp == b"+OK %d octets" % len(m1), resp)
check(joined(lines) == m1, (joined(lines), m1))
resp, lines, _ = p.retr(2)
check(joined(lines) == m2, "message 2 differs")
# TOP: headers, the blank line, n body lines.
head, _, body = m1.partition(b"\r\n\r\n")
resp, lines, _ = p.top(1, 0)
check(joined(lines) == head + b"\r\n\r\n", lines)
resp, lines, _ = p.top(1, 2)
check(joined(lines) == head + b"\r\n\r\n" + b"".join(body.split(b"\r\n")[i] + b"\r\n" for i in range(2)), lines)
err = expect_error(p.retr, 3)
check(err.startswith(b"-ERR"), err)

# DELE then RSET: nothing is deleted.
p.dele(1)
check(p.stat() == (1, len(m2)), p.stat())
err = expect_error(p.retr, 1)
check(b"deleted" in err, err)
resp = p.rset()
check(p.stat() == (2, len(m1) + len(m2)), p.stat())
p.noop()
resp = p.quit()
check(resp.startswith(b"+OK"), resp)

# --- port pop3s: wrong password, then DELE + QUIT ------------------------
s = poplib.POP3_SSL("localhost", int(pop3s_port), context=ctx, timeout=10)
s.user(user)
err = expect_error(s.pass_, "not the password")
check(err.startswith(b"-ERR [AUTH]"), err)
s.user("nobody@example.com")
err2 = expect_error(s.pass_, "not the password")
check(err2 == err, (err, err2))
s.user(user)
s.pass_(password)
resp, uids_again, _ = s.uidl()
check(uids_again == uids, ("UIDL not stable across sessions", uids, uids_again))
s.dele(1)
resp = s.quit()
check(resp.startswith(b"+OK") and b"1 messages left" in resp, resp)

# A new session sees only message 2, with the same unique id as before.
s = poplib.POP3_SSL("localhost", int(pop3s_port), context=ctx, timeout=10)
s.user(user)
s.pass_(password)
check(s.stat() == (1, len(m2)), s.stat())
resp, uids_after, _ = s.uidl()
check(uids_after == [b"1 " + ids[1]], (uids_after, ids))
resp, lines, _ = s.retr(1)
check(joined(lines) == m2, "message 2 differs after the expunge")
s.quit()

print("all checks passed")
