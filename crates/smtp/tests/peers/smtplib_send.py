"""Sends one message with Python's smtplib, as the tests ask, and prints
what happened as one JSON object.

Input (standard input): a JSON object with
  host, port       where to connect
  mode             "plain", "starttls" or "ssl" (implicit TLS)
  cafile           the test certificate, trusted for TLS
  user, password   log in first (optional)
  mechanism        "PLAIN" (default, with initial response) or "LOGIN"
  initial_response whether LOGIN sends the user name with AUTH (default true)
  sender, to       envelope
  message          the message text (CRLF line ends)

Prints {"ok": true, "refused": {...}, "features": {...}} or
{"ok": false, "code": N, "message": "...", "stage": "..."}.
"""

import json
import smtplib
import ssl
import sys


def main():
    cfg = json.loads(sys.stdin.read())
    out = {"ok": False}
    stage = "connect"
    try:
        ctx = None
        if cfg.get("cafile"):
            ctx = ssl.create_default_context(cafile=cfg["cafile"])
        if cfg["mode"] == "ssl":
            client = smtplib.SMTP_SSL(cfg["host"], cfg["port"], context=ctx, timeout=20)
        else:
            client = smtplib.SMTP(cfg["host"], cfg["port"], timeout=20)
        stage = "ehlo"
        client.ehlo("python.test")
        if cfg["mode"] == "starttls":
            stage = "starttls"
            client.starttls(context=ctx)
            client.ehlo("python.test")
        out["features"] = dict(client.esmtp_features)
        if cfg.get("user"):
            stage = "auth"
            if cfg.get("mechanism", "PLAIN") == "LOGIN":
                client.user, client.password = cfg["user"], cfg["password"]
                client.auth(
                    "LOGIN",
                    client.auth_login,
                    initial_response_ok=cfg.get("initial_response", True),
                )
            else:
                client.user, client.password = cfg["user"], cfg["password"]
                client.auth("PLAIN", client.auth_plain)
        stage = "send"
        refused = client.sendmail(cfg["sender"], cfg["to"], cfg["message"].encode())
        out["refused"] = {k: [v[0], v[1].decode(errors="replace")] for k, v in refused.items()}
        out["ok"] = True
        client.quit()
    except smtplib.SMTPRecipientsRefused as e:
        out["refused"] = {
            k: [v[0], v[1].decode(errors="replace")] for k, v in e.recipients.items()
        }
        first = next(iter(e.recipients.values()))
        out["code"] = first[0]
        out["message"] = first[1].decode(errors="replace")
    except smtplib.SMTPResponseException as e:
        out["code"] = e.smtp_code
        msg = e.smtp_error
        out["message"] = msg.decode(errors="replace") if isinstance(msg, bytes) else str(msg)
    except smtplib.SMTPNotSupportedError as e:
        out["not_supported"] = str(e)
    except (smtplib.SMTPException, OSError) as e:
        out["exception"] = repr(e)
    out["stage"] = stage
    print(json.dumps(out))


if __name__ == "__main__":
    main()
