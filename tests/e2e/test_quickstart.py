"""The README's first command, as a newcomer runs it: `bulwark quickstart`
initialises a demo installation, prints how to log in and serves; the admin
plane answers on loopback; SIGTERM stops it cleanly. Uses only Python's
standard library as the client."""

import json
import signal
import subprocess
import urllib.error
import urllib.request

import pytest

from conftest import BIN, start_quickstart

ADMIN = "http://127.0.0.1:8080"


def get(path):
    try:
        with urllib.request.urlopen(ADMIN + path, timeout=10) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def test_quickstart_prints_logins_and_serves_admin(quickstart):
    proc, banner, tmp = quickstart.proc, quickstart.banner, quickstart.root
    assert proc.poll() is None, banner
    assert "alice@example.test" in banner and "bob@example.test" in banner
    assert "CalDAV, CardDAV): https://localhost:8443/" in banner
    creds = (tmp / "bulwark-data" / "quickstart-credentials.txt").read_text()
    assert len([l for l in creds.splitlines() if "@example.test" in l]) == 2
    mode = (tmp / "bulwark-data" / "quickstart-credentials.txt").stat().st_mode
    assert mode & 0o077 == 0, "credentials are private to their owner"

    status, _, body = get("/health")
    assert status == 200 and json.loads(body)["status"] == "ok"
    status, headers, body = get("/metrics")
    assert status == 200 and "bulwark_up 1" in body
    assert headers["Content-Type"].startswith("text/plain")
    assert get("/admin/../../etc/passwd")[0] == 404

    req = urllib.request.Request(ADMIN + "/health", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=10)
    assert refused.value.code in (405, 413)

    # An admin command against the running server's store.
    users = subprocess.run(
        [BIN, "--config", str(tmp / "bulwark-data" / "bulwark.toml"), "user", "list"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert "alice@example.test" in users

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_second_run_just_serves(quickstart):
    assert quickstart.stop() == 0
    second = start_quickstart(quickstart.root)
    again = second.proc
    try:
        text = second.banner
        assert "Initialised" not in text
        assert "quickstart-credentials.txt" in text
        assert get("/health")[0] == 200
        again.send_signal(signal.SIGTERM)
        assert again.wait(timeout=30) == 0
    finally:
        if again.poll() is None:
            again.kill()
