"""A local HTTP server that speaks LangSmith's run-ingest and feedback endpoints, for the real
`langsmith` client. LangSmith cloud cannot run here; this is the edge the tests stand in for.

It answers `/info`, accepts runs through `/runs/multipart`, `/runs/batch`, `POST /runs` and
`PATCH /runs/{id}`, and keeps every run it was sent, keyed by id. For feedback it answers
`POST /feedback` (409 for an id it already holds, like the API), `PATCH /feedback/{id}`,
`GET /feedback/{id}`, `GET /feedback?run=...` (paginated with limit and offset) and
`GET /sessions?name=...` (the client's read_project), keeping every feedback by id.

Switches: `known_runs` + `reject_unknown_runs` answer 404 to feedback on any other run;
`fail_next` answers the next feedback writes with the given statuses (503, 429, ...);
`latency_s` delays every feedback answer. The server
can be down (not listening) and come up later on the same port: `down()` / `up()`."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import zstandard

UUID = r"[0-9a-f-]{36}"


@dataclass
class Received:
    """What the server was sent and holds: runs and feedback by id, every request line, and
    how many times each feedback id was created (a retry must never create one twice)."""

    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    api_keys: set[str] = field(default_factory=set)
    feedback: dict[str, dict[str, Any]] = field(default_factory=dict)
    feedback_creates: Counter[str] = field(default_factory=Counter)
    feedback_updates: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def merge(self, run: dict[str, Any]) -> None:
        run_id = str(run.get("id"))
        with self.lock:
            self.runs.setdefault(run_id, {}).update(run)

    def feedback_requests(self) -> list[tuple[str, str]]:
        with self.lock:
            return [r for r in self.requests if r[1].startswith("/feedback")]


def _multipart_runs(content_type: str, body: bytes) -> list[dict[str, Any]]:
    """Runs from a multipart body: parts named `post.<id>` / `patch.<id>` hold the run, and
    `post.<id>.inputs` / `.outputs` hold those fields separately."""
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    runs: dict[str, dict[str, Any]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition") or ""
        match = re.fullmatch(rf"(post|patch)\.({UUID})(?:\.(\w+))?", str(name))
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Server(ThreadingHTTPServer):
    # socketserver's backlog of 5 drops connections that concurrent clients open at once (the
    # client then waits a second to resend its SYN).
    request_queue_size = 128
    daemon_threads = True


class FakeLangSmith:
    """Start with `with FakeLangSmith() as server:`; point the client at `server.url`.

    Before `up()` (or the `with`) and after `down()` the URL refuses connections."""

    def __init__(self) -> None:
        self.received = Received()
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.projects: dict[str, str] = {}  # name -> id
        self.known_runs: set[str] = set()
        self.reject_unknown_runs = False
        self.fail_next: list[int] = []
        self.latency_s = 0.0  # added to every feedback answer, like a round trip to the cloud
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # Life cycle ---------------------------------------------------------------------------

    def up(self) -> None:
        """Listen on the server's port (the same one every time)."""
        if self._server is not None:
            return
        server = _Server(("127.0.0.1", self.port), self._handler())
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def down(self) -> None:
        """Stop listening: connections are refused, as when LangSmith is unreachable."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server = None

    def __enter__(self) -> FakeLangSmith:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def add_project(self, name: str) -> str:
        self.projects[name] = str(uuid.uuid4())
        return self.projects[name]

    # Feedback -----------------------------------------------------------------------------

    def _injected_failure(self) -> int | None:
        with self.received.lock:
            return self.fail_next.pop(0) if self.fail_next else None

    def create_feedback(self, body: dict[str, Any]) -> tuple[int, Any]:
        time.sleep(self.latency_s)
        if status := self._injected_failure():
            return status, {"detail": f"injected {status}"}
        feedback_id = str(body.get("id"))
        run_id = body.get("run_id")
        if self.reject_unknown_runs and run_id not in self.known_runs:
            return 404, {"detail": f"Run {run_id} not found"}
        with self.received.lock:
            if feedback_id in self.received.feedback:
                return 409, {"detail": f"Feedback {feedback_id} already exists"}
            self.received.feedback_creates[feedback_id] += 1
            now = datetime.now(UTC).isoformat()
            # The API answers with every field of its Feedback schema, null when unset.
            self.received.feedback[feedback_id] = {
                "run_id": None,
                "trace_id": None,
                **body,
                "id": feedback_id,
                "created_at": body.get("created_at") or now,
                "modified_at": now,
            }
        return 200, self.received.feedback[feedback_id]

    def update_feedback(self, feedback_id: str, body: dict[str, Any]) -> tuple[int, Any]:
        time.sleep(self.latency_s)
        if status := self._injected_failure():
            return status, {"detail": f"injected {status}"}
        with self.received.lock:
            stored = self.received.feedback.get(feedback_id)
            if stored is None:
                return 404, {"detail": f"Feedback {feedback_id} not found"}
            allowed = {"score", "value", "comment", "correction"}
            stored.update({k: v for k, v in body.items() if k in allowed})
            stored["modified_at"] = datetime.now(UTC).isoformat()
            self.received.feedback_updates[feedback_id] += 1
        return 200, stored

    def list_feedback(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        runs = set(query.get("run", []))
        keys = set(query.get("key", []))
        limit = int(query.get("limit", ["100"])[0])
        offset = int(query.get("offset", ["0"])[0])
        with self.received.lock:
            matching = [
                f
                for f in self.received.feedback.values()
                if (not runs or f.get("run_id") in runs) and (not keys or f.get("key") in keys)
            ]
        matching.sort(key=lambda f: (str(f["created_at"]), f["id"]))
        return matching[offset : offset + limit]

    # HTTP ---------------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self
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
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                if url.path == "/info":
                    self._reply(200, {"version": "0.10.0", "batch_ingest_config": {}})
                elif url.path == "/feedback":
                    self._reply(200, fake.list_feedback(query))
                elif match := re.fullmatch(rf"/feedback/({UUID})", url.path):
                    stored = received.feedback.get(match.group(1))
                    self._reply(200 if stored else 404, stored or {"detail": "not found"})
                elif url.path == "/sessions":
                    name = query.get("name", [""])[0]
                    project = fake.projects.get(name)
                    self._reply(
                        200,
                        []
                        if project is None
                        else [
                            {
                                "id": project,
                                "name": name,
                                "tenant_id": str(uuid.UUID(int=0)),
                                "reference_dataset_id": None,
                            }
                        ],
                    )
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
                elif path == "/feedback":
                    self._reply(*fake.create_feedback(json.loads(body)))
                    return
                else:
                    self._reply(404, {"detail": "not found"})
                    return
                self._reply(202, {})

            def do_PATCH(self) -> None:
                self._note()
                body = self._body()
                path = self.path.split("?")[0]
                if match := re.fullmatch(rf"/runs/({UUID})", path):
                    received.merge({"id": match.group(1), **json.loads(body)})
                    self._reply(202, {})
                elif match := re.fullmatch(rf"/feedback/({UUID})", path):
                    self._reply(*fake.update_feedback(match.group(1), json.loads(body)))
                else:
                    self._reply(404, {"detail": "not found"})

        return Handler
