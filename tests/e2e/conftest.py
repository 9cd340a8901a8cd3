"""A running `bulwark quickstart` in a temporary directory, for end-to-end
tests with independent clients."""

import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

BIN = os.path.abspath(os.environ.get("BULWARK_BIN", "target/debug/bulwark"))


@dataclass
class Quickstart:
    proc: subprocess.Popen
    banner: str
    root: Path

    @property
    def data(self) -> Path:
        return self.root / "bulwark-data"

    @property
    def cert(self) -> Path:
        return self.data / "tls" / "cert.pem"

    def credentials(self) -> dict:
        lines = (self.data / "quickstart-credentials.txt").read_text().splitlines()
        return dict(line.split() for line in lines if "@" in line)

    def admin(self, *args: str) -> str:
        return subprocess.run(
            [BIN, "--config", str(self.data / "bulwark.toml"), *args],
            capture_output=True, text=True, check=True,
        ).stdout

    def log(self) -> str:
        """What the server has written to its log (standard error) so far."""
        return (self.root / "server.log").read_text(errors="replace")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


def start_quickstart(root: Path) -> Quickstart:
    env = {k: v for k, v in os.environ.items() if k != "BULWARK_CONFIG"}
    with open(root / "server.log", "ab") as log:
        proc = subprocess.Popen(
            [BIN, "quickstart"], cwd=root, stdout=subprocess.PIPE,
            stderr=log, text=True, env=env,
        )
    banner = []
    deadline = time.time() + 60
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        banner.append(line)
        if line.startswith("Stop with"):
            break
    return Quickstart(proc, "".join(banner), root)


@pytest.fixture()
def quickstart():
    with tempfile.TemporaryDirectory() as tmp:
        qs = start_quickstart(Path(tmp))
        yield qs
        if qs.proc.poll() is None:
            qs.proc.kill()
            qs.proc.wait()
