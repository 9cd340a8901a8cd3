"""POP3 against the real binary started by `bulwark quickstart`: mail
delivered over SMTP is read and deleted with Python's poplib."""

import poplib
import smtplib
import ssl

import pytest

HOST = "127.0.0.1"
MX, POP3, POP3S = 2525, 1100, 9950


def tls_context(quickstart):
    ctx = ssl.create_default_context(cafile=str(quickstart.cert))
    ctx.check_hostname = False  # the demo certificate names "localhost"
    return ctx


def test_pop3_reads_and_deletes_delivered_mail(quickstart):
    body = (b"From: someone@elsewhere.test\r\nTo: alice@example.test\r\nSubject: pop3 e2e\r\n\r\n"
            b"line one\r\n.leading dot\r\n")
    with smtplib.SMTP(HOST, MX, timeout=30) as mx:
        assert mx.sendmail("someone@elsewhere.test", ["alice@example.test"], body) == {}

    password = quickstart.credentials()["alice@example.test"]
    plain = poplib.POP3(HOST, POP3, timeout=30)
    with pytest.raises(poplib.error_proto):
        plain.user("alice@example.test")  # no passwords before STLS
        plain.pass_(password)
    plain.stls(context=tls_context(quickstart))
    plain.user("alice@example.test")
    plain.pass_(password)
    count, _ = plain.stat()
    assert count == 1
    _, lines, _ = plain.retr(1)
    stored = b"\r\n".join(lines) + b"\r\n"
    assert stored.endswith(body), "byte-exact after the trace headers, dot-stuffing undone"
    plain.dele(1)
    plain.quit()

    again = poplib.POP3_SSL(HOST, POP3S, context=tls_context(quickstart), timeout=30)
    again.user("alice@example.test")
    again.pass_(password)
    assert again.stat()[0] == 0, "deleted at QUIT"
    again.quit()
