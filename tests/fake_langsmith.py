"""A local HTTP server that speaks LangSmith's run-ingest endpoints, for the real `langsmith`
client. LangSmith cloud cannot run here; this is the edge the tests stand in for.

It answers `/info`, accepts runs through `/runs/multipart`, `/runs/batch`, `POST /runs` and
`PATCH /runs/{id}`, and keeps every run it was sent, keyed by id."""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import zstandard


@dataclass
class Received:
    """What the server was sent: runs by id (post and patch merged), and every request line."""

    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    api_keys: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def merge(self, run: dict[str, Any]) -> None:
        run_id = str(run.get("id"))
        with self.lock:
            self.runs.setdefault(run_id, {}).update(run)


def _multipart_runs(content_type: str, body: bytes) -> list[dict[str, Any]]:
    """Runs from a multipart body: parts named `post.<id>` / `patch.<id>` hold the run, and
    `post.<id>.inputs` / `.outputs` hold those fields separately."""
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    runs: dict[str, dict[str, Any]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition") or ""
        match = re.fullmatch(r"(post|patch)\.([0-9a-f-]{36})(?:\.(\w+))?", str(name))
        if not match:
            continue
        payload = part.get_payload(decode=True)
        try:
            value = json.loads(payload) if payload else None
        except ValueError:
            continue
        run = runs.setdefault(match.group(2), {"id": match.group(2)})
        if match.group(3):
            run[match.group(3)] = value
        elif isinstance(value, dict):
            run.update(value)
    return list(runs.values())


class FakeLangSmith:
    """Start with `with FakeLangSmith() as server:`; point the client at `server.url`."""

    def __init__(self) -> None:
        self.received = Received()
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _body(self) -> bytes:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "zstd":
                    raw = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
                return raw

            def _reply(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _note(self) -> None:
                with received.lock:
                    received.requests.append((self.command, self.path))
                    if key := self.headers.get("x-api-key"):
                        received.api_keys.add(key)

            def do_GET(self) -> None:
                self._note()
                if self.path.startswith("/info"):
                    self._reply(200, {"version": "0.10.0", "batch_ingest_config": {}})
                else:
                    self._reply(404, {"detail": "not found"})

            def do_POST(self) -> None:
                self._note()
                body = self._body()
                path = self.path.split("?")[0]
                if path == "/runs/multipart":
                    for run in _multipart_runs(self.headers.get("Content-Type", ""), body):
                        received.merge(run)
                elif path == "/runs/batch":
                    batch = json.loads(body or b"{}")
                    for run in [*batch.get("post", []), *batch.get("patch", [])]:
                        received.merge(run)
                elif path == "/runs":
                    received.merge(json.loads(body))
                else:
                    self._reply(404, {"detail": "not found"})
                    return
                self._reply(202, {})

            def do_PATCH(self) -> None:
                self._note()
                body = self._body()
                match = re.fullmatch(r"/runs/([0-9a-f-]{36})", self.path.split("?")[0])
                if match:
                    received.merge({"id": match.group(1), **json.loads(body)})
                    self._reply(202, {})
                else:
                    self._reply(404, {"detail": "not found"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeLangSmith:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
