"""A local HTTP server standing in for the team's helpdesk webhook receiver (a third-party
edge): it checks each delivery's HMAC-SHA256 signature itself (with hmac, independently of
data/workers/ticket_webhook.py), keeps every delivery and counts the ids it got.

Switches: `fail_next` answers the next deliveries with the given statuses; `down()` / `up()`
stop and restart listening on the same port."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.helpers.servers import free_port


@dataclass(frozen=True)
class Delivery:
    delivery_id: str
    event: str
    timestamp: str
    signature: str
    body: bytes
    valid_signature: bool

    @property
    def payload(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


class FakeHelpdesk:
    def __init__(self, secret: str) -> None:
        self.secret = secret.encode()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks/tickets"
        self.deliveries: list[Delivery] = []
        self.fail_next: list[int] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None

    def up(self) -> FakeHelpdesk:
        if self._server is None:
            self._server = _Server(("127.0.0.1", self.port), self._handler())
            threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            ).start()
        return self

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeHelpdesk:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    def counts(self) -> Counter[str]:
        with self._lock:
            return Counter(d.delivery_id for d in self.deliveries)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                timestamp = self.headers.get("X-Webhook-Timestamp", "")
                signature = self.headers.get("X-Webhook-Signature", "")
                expected = hmac.new(
                    fake.secret, f"{timestamp}.".encode() + body, hashlib.sha256
                ).hexdigest()
                with fake._lock:
                    status = fake.fail_next.pop(0) if fake.fail_next else 200
                    if status == 200:
                        fake.deliveries.append(
                            Delivery(
                                delivery_id=self.headers.get("X-Webhook-Id", ""),
                                event=self.headers.get("X-Webhook-Event", ""),
                                timestamp=timestamp,
                                signature=signature,
                                body=body,
                                valid_signature=hmac.compare_digest(
                                    f"sha256={expected}", signature
                                ),
                            )
                        )
                data = json.dumps({"ok": status == 200}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
