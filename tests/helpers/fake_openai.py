"""A scripted OpenAI-compatible server for tests: the real wire format, no network.

`POST /v1/embeddings` answers with deterministic vectors (see `_embeddings`); `GET /v1/models`
lists `models` (401 unless the bearer key is `api_key`, when one is given).
`POST /v1/chat/completions` answers from a queue of scripted replies, streaming (SSE `data:`
chunks, then a usage chunk when the request sets `stream_options.include_usage`, then
`data: [DONE]`) or not, as the request asks. A reply is plain text, tool calls, an HTTP error
(429/500/503, optionally with Retry-After), a delay, a dropped connection, or a recorded
stream replayed verbatim (`replay`); every request is recorded. Usage:

    with FakeOpenAI([tool_call("lookup_order", order_number="A-10234"), text("Shipped.")]) as api:
        model = ChatOpenAI(base_url=api.url, api_key="test", model="gpt-4o-mini")
        ...
        assert api.bodies[1]["messages"][-1]["role"] == "tool"

A reply may also be a function of the request body (for answers that depend on the prompt), and
`default` answers once the queue is empty; without one, an unscripted request gets HTTP 400 (a
status the OpenAI client does not retry), so the test fails instead of hanging."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Usage:
    """Token usage as the server reports it; `cached_tokens` goes to prompt_tokens_details."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        }


@dataclass(frozen=True)
class ToolCall:
    name: str
    args: dict[str, Any]
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:12]}")


@dataclass(frozen=True)
class Reply:
    """One scripted answer. `status` other than 200 sends an OpenAI error body instead; `delay`
    waits before answering (for client timeouts); `drop` closes the connection unanswered."""

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage | None = None  # None: estimated from the request and the answer
    status: int = 200
    retry_after: float | None = None
    delay: float = 0.0
    word_delay: float = 0.0  # a pause before each streamed word (an answer still coming)
    drop: bool = False
    error: str = ""
    recorded: str | None = None  # a recorded SSE stream, replayed byte for byte


def replay(path: str | Path) -> Reply:
    """A recorded streaming response (an `.sse` file of `data:` lines), sent back verbatim."""
    return Reply(recorded=Path(path).read_text())


def text(
    content: str, *, usage: Usage | None = None, delay: float = 0.0, word_delay: float = 0.0
) -> Reply:
    return Reply(text=content, usage=usage, delay=delay, word_delay=word_delay)


def tool_call(name: str, /, **args: Any) -> Reply:
    """An answer that calls one tool (see `tool_calls` for several at once)."""
    return Reply(tool_calls=(ToolCall(name, args),))


def tool_calls(*calls: ToolCall, usage: Usage | None = None) -> Reply:
    return Reply(tool_calls=calls, usage=usage)


def error(status: int, *, retry_after: float | None = None, message: str = "") -> Reply:
    return Reply(status=status, retry_after=retry_after, error=message or f"scripted {status}")


def drop() -> Reply:
    return Reply(drop=True)


Script = Reply | Callable[[dict[str, Any]], Reply]


@dataclass(frozen=True)
class Request:
    """One request as received; header names are lower-cased."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]


def _estimate_usage(body: dict[str, Any], reply: Reply) -> Usage:
    """About 4 characters a token, so that a test without a usage block still sees usage."""
    prompt = sum(len(json.dumps(m.get("content") or "")) for m in body.get("messages", []))
    answer = len(reply.text) + sum(len(json.dumps(c.args)) for c in reply.tool_calls)
    return Usage(prompt_tokens=prompt // 4 + 1, completion_tokens=answer // 4 + 1)


class FakeOpenAI:
    """The server; a context manager that starts it on a free port of 127.0.0.1."""

    def __init__(
        self,
        replies: Iterable[Script] = (),
        *,
        default: Script | None = None,
        api_key: str | None = None,
        models: Iterable[str] = ("gpt-4o-mini",),
    ) -> None:
        self._queue: deque[Script] = deque(replies)
        self.default = default
        self.api_key = api_key  # GET /v1/models answers 401 to another key
        self.models = list(models)
        self.requests: list[Request] = []
        # GET /v1/models (what readiness checks): its delay, or None to answer 503.
        self.models_delay: float | None = 0.0
        self.disconnects = 0  # streams the client closed before their end
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        """The base URL for `ChatOpenAI(base_url=...)` / `OpenAI(base_url=...)`."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [r.body for r in self.requests]

    def script(self, *replies: Script) -> None:
        """Queue more replies, answered in order after the ones already queued."""
        with self._lock:
            self._queue.extend(replies)

    @property
    def pending(self) -> int:
        """Scripted replies not used yet (a test usually expects 0 at the end)."""
        return len(self._queue)

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _next(self, body: dict[str, Any]) -> Reply | None:
        with self._lock:
            script = self._queue.popleft() if self._queue else self.default
        if script is None:
            return None
        return script if isinstance(script, Reply) else script(body)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like the real API

            def log_message(self, format: str, *args: Any) -> None:  # quiet test output
                pass

            def do_GET(self) -> None:
                # GET /v1/models, as the readiness and status checks call it.
                if self.path.rstrip("/") != "/v1/models":
                    return self._json(404, {"error": {"message": f"no route {self.path}"}})
                if server.models_delay is None:
                    return self._json(503, {"error": {"message": "scripted 503"}})
                time.sleep(server.models_delay)
                given = self.headers.get("Authorization", "")
                if server.api_key is not None and given != f"Bearer {server.api_key}":
                    return self._json(401, {"error": {"message": "Incorrect API key provided"}})
                models = [{"id": m, "object": "model", "owned_by": "fake"} for m in server.models]
                return self._json(200, {"object": "list", "data": models})

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.loads(raw or b"{}")
                with server._lock:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    server.requests.append(Request(self.path, headers, body))
                if self.path.rstrip("/") == "/v1/embeddings":
                    status, payload = _embeddings(body)
                    return self._json(status, payload)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    return self._json(404, {"error": {"message": f"no route {self.path}"}})
                reply = server._next(body)
                if reply is None:
                    return self._json(
                        400, {"error": {"message": "fake_openai: no scripted reply left"}}
                    )
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.drop:
                    self.close_connection = True
                    return
                if reply.status != 200:
                    headers = {}
                    if reply.retry_after is not None:
                        headers["Retry-After"] = f"{reply.retry_after:g}"
                    kind = "rate_limit_error" if reply.status == 429 else "server_error"
                    payload = {"error": {"message": reply.error, "type": kind, "code": None}}
                    return self._json(reply.status, payload, headers)
                if reply.recorded is not None:
                    return self._raw_stream(reply.recorded.encode())
                usage = reply.usage or _estimate_usage(body, reply)
                model = body.get("model", "gpt-4o-mini")
                if body.get("stream"):
                    include = bool((body.get("stream_options") or {}).get("include_usage"))
                    chunks = _chunks(reply, model, usage if include else None)
                    return self._stream(chunks, pause=reply.word_delay)
                return self._json(200, _completion(reply, model, usage))

            def _json(
                self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
            ) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def _raw_stream(self, data: bytes) -> None:
                self.close_connection = True
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()

            def _stream(self, chunks: Iterator[dict[str, Any]], pause: float = 0.0) -> None:
                # No Content-Length: the body ends when the connection closes.
                self.close_connection = True
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                try:
                    for chunk in chunks:
                        if pause:
                            time.sleep(pause)
                        self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                        self.wfile.flush()
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    server.disconnects += 1  # the client stopped reading (a cancelled turn)

        return Handler


def _embeddings(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """POST /v1/embeddings: one deterministic vector per input (seeded by the text, not unit
    length, so a client must normalise), float or base64 as asked, listed in reverse order (a
    client must sort by index), usage.prompt_tokens = words. An input "boom" answers 500."""
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    if "boom" in inputs:
        return 500, {"error": {"message": "server exploded", "type": "server_error"}}
    dim = 3072 if body["model"] == "text-embedding-3-large" else 1536
    data = []
    for i, text in enumerate(inputs):
        seed = int.from_bytes(text.encode()[:8].ljust(8, b"\0"), "little")
        vector = np.random.default_rng(seed).normal(size=dim).astype(np.float32) * 3
        encoded: Any = vector.tolist()
        if body.get("encoding_format") == "base64":
            encoded = base64.b64encode(vector.tobytes()).decode()
        data.append({"object": "embedding", "index": i, "embedding": encoded})
    tokens = sum(len(text.split()) for text in inputs)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return 200, {"object": "list", "data": data[::-1], "model": body["model"], "usage": usage}


def _message(reply: Reply) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.args)},
            }
            for c in reply.tool_calls
        ]
    return message


def _finish_reason(reply: Reply) -> str:
    return "tool_calls" if reply.tool_calls else "stop"


def _completion(reply: Reply, model: str, usage: Usage) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": _message(reply),
                "logprobs": None,
                "finish_reason": _finish_reason(reply),
            }
        ],
        "usage": usage.as_json(),
    }


def _chunks(reply: Reply, model: str, usage: Usage | None) -> Iterator[dict[str, Any]]:
    """The SSE chunks of one answer: role, text in word pieces, each tool call's name and then
    its arguments in two pieces (as the API splits them), the finish reason, the usage."""
    base = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**base, "choices": [choice]}

    yield chunk({"role": "assistant", "content": ""})
    words = reply.text.split(" ")
    for i, word in enumerate(words if reply.text else []):
        yield chunk({"content": word if i == len(words) - 1 else word + " "})
    for index, call in enumerate(reply.tool_calls):
        head = {"index": index, "id": call.id, "type": "function"}
        yield chunk({"tool_calls": [{**head, "function": {"name": call.name, "arguments": ""}}]})
        arguments = json.dumps(call.args)
        middle = len(arguments) // 2
        for piece in (arguments[:middle], arguments[middle:]):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield chunk({}, _finish_reason(reply))
    if usage is not None:
        yield {**base, "choices": [], "usage": usage.as_json()}
