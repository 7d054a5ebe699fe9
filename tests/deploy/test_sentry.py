"""SENTRY_DSN: the real sentry-sdk sends its envelopes to a local server that speaks Sentry's
ingest endpoint, and what arrives carries the process tag and no personal data."""

from __future__ import annotations

import gzip
import json
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import sentry_sdk

from data.config.settings import load_settings
from data.integrations import observability
from data.integrations.observability import init_sentry

# Kept far from the code that fails, so Sentry's source context lines do not show it.
CHAT_TEXT = "my card number is 4111 1111 1111 1111"


def answer(message: str) -> None:
    """A failing call with chat text in a local variable, which must not travel."""
    words = message.split()  # noqa: F841
    raise RuntimeError("the model endpoint answered 500")


class Ingest:
    """POST /api/<project>/envelope/ as Sentry answers it; keeps every envelope's items."""

    def __init__(self) -> None:
        self.items: list[tuple[dict[str, Any], dict[str, Any]]] = []
        self.auth: list[str] = []
        self.arrived = threading.Event()
        ingest = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                ingest.auth.append(self.headers.get("X-Sentry-Auth", ""))
                lines = body.split(b"\n")
                i = 1  # the envelope header comes first
                while i + 1 < len(lines):
                    header = json.loads(lines[i])
                    payload = json.loads(lines[i + 1]) if lines[i + 1].startswith(b"{") else {}
                    ingest.items.append((header, payload))
                    i += 2
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"id": "0"}')
                ingest.arrived.set()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[dict[str, Any]]:
        return [payload for header, payload in self.items if header.get("type") == "event"]


@pytest.fixture
def ingest() -> Iterator[Ingest]:
    server = Ingest()
    yield server
    sentry_sdk.get_client().close(timeout=2)
    sentry_sdk.init(dsn=None)
    observability._state.update(dsn=None, processes=set())
    server.server.shutdown()


def test_no_dsn_no_sentry() -> None:
    assert init_sentry(load_settings(), "ui") is False
    assert not sentry_sdk.get_client().is_active()


def test_an_error_reaches_sentry_without_personal_data(ingest: Ingest) -> None:
    dsn = f"http://publickey123@127.0.0.1:{ingest.port}/42"
    settings = load_settings(sentry_dsn=dsn, environment="staging")
    assert init_sentry(settings, "ui") is True
    assert init_sentry(settings, "api") is True  # the API in the same process: one client
    sentry_sdk.set_user({"id": "customer-7"})  # what a careless caller might do
    try:
        answer(CHAT_TEXT)
    except RuntimeError:
        sentry_sdk.capture_exception()
    sentry_sdk.flush(timeout=5)
    assert ingest.arrived.wait(5)
    (event,) = ingest.events()
    assert event["environment"] == "staging"
    assert event["tags"]["process"] == "api+ui"
    assert event["exception"]["values"][0]["value"] == "the model endpoint answered 500"
    raw = json.dumps(event)
    assert CHAT_TEXT not in raw
    assert all(
        "vars" not in frame for frame in event["exception"]["values"][0]["stacktrace"]["frames"]
    )
    assert "ip_address" not in json.dumps(event.get("user", {}))
    assert "sentry_key=publickey123" in ingest.auth[0]


def test_logged_errors_are_sent(ingest: Ingest) -> None:
    import logging

    settings = load_settings(sentry_dsn=f"http://k@127.0.0.1:{ingest.port}/1")
    init_sentry(settings, "ui")
    logging.getLogger("agent.test").error("feedback sync pass failed")
    sentry_sdk.flush(timeout=5)
    assert ingest.arrived.wait(5)
    (event,) = ingest.events()
    assert event["logentry"]["message"] == "feedback sync pass failed"
    assert event["tags"]["process"] == "ui"
