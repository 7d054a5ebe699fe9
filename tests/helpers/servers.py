"""Where things are and how a test reaches the servers it starts or uses: the checkout, the
app, the machine's Redis and Postgres, a free port, and waiting for a started server."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")
# The machine's Redis (started before the session on this kind of machine); tests use db 15.
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Wait for a server we started to answer 200 on `url`, or fail with its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    pytest.fail(f"{url} did not become ready:\n{log.read_text(errors='replace')[-4000:]}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
