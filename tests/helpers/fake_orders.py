"""A local HTTP server that speaks the orders-API contract of docs/agent.md, for
data.integrations.orders' HttpOrders: the team's order system is an edge the tests stand in for.

    GET /customers/{user_id}/orders/{order_number}  -> 200 order JSON, 404 {"error": ...}
    GET /customers/{user_id}/orders?limit=N         -> 200 {"orders": [...]}, newest first

It checks the bearer token when `token` is set (401 otherwise) and keeps every request. Switches
for the failure modes: `delay_s` (a slow answer), `status` (answer every request with it, e.g.
500), `malformed` (a 200 whose body is not JSON), `wrong_shape` (a 200 whose JSON misses
fields). `down()` / `up()` stop and restart listening on the same port."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.helpers.servers import free_port


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64


class FakeOrdersApi:
    def __init__(self, *, token: str | None = None, prefix: str = "/api/v1") -> None:
        self.orders: dict[str, dict[str, Any]] = {}
        self.token = token
        self.prefix = prefix
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}{prefix}"
        self.delay_s = 0.0
        self.status: int | None = None
        self.malformed = False
        self.wrong_shape = False
        self.requests: list[tuple[str, str | None]] = []  # (path, authorization header)
        self._lock = threading.Lock()
        self._server: _Server | None = None

    def add(self, **order: Any) -> dict[str, Any]:
        self.orders[order["order_number"]] = order
        return order

    def up(self) -> FakeOrdersApi:
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

    def __enter__(self) -> FakeOrdersApi:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    def answer(self, path: str, query: dict[str, list[str]], auth: str | None) -> tuple[int, Any]:
        if self.token is not None and auth != f"Bearer {self.token}":
            return 401, {"error": "unauthorized"}
        if self.status is not None:
            return self.status, {"error": "injected"}
        if not path.startswith(self.prefix):
            return 404, {"error": "not_found"}
        path = path[len(self.prefix) :]
        if match := re.fullmatch(r"/customers/([^/]+)/orders/([^/]+)", path):
            user, number = unquote(match[1]), unquote(match[2])
            order = self.orders.get(number)
            if order is None or order["user_id"] != user:
                return 404, {"error": "not_found"}
            if self.wrong_shape:
                return 200, {k: v for k, v in order.items() if k != "placed_at"}
            return 200, order
        if match := re.fullmatch(r"/customers/([^/]+)/orders", path):
            user = unquote(match[1])
            limit = int(query.get("limit", ["5"])[0])
            mine = sorted(
                (o for o in self.orders.values() if o["user_id"] == user),
                key=lambda o: o["placed_at"],
                reverse=True,
            )
            return 200, {"orders": mine[:limit]}
        return 404, {"error": "not_found"}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                auth = self.headers.get("Authorization")
                with fake._lock:
                    fake.requests.append((url.path, auth))
                time.sleep(fake.delay_s)
                status, payload = fake.answer(url.path, parse_qs(url.query), auth)
                data = (
                    b"<html>502 Bad Gateway</html>"
                    if fake.malformed
                    else json.dumps(payload).encode()
                )
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

        return Handler
