"""The HTTP API over real HTTP (uvicorn on 127.0.0.1), on SQLite and Postgres, with the model
served in the OpenAI wire format by tests/helpers/fake_openai.py: the seed's calls as written, the
transcript, health and readiness, keys, bad input, rate limits, one turn per session, model
faults and timeouts, streaming, hostile bodies and a graceful stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from api.server import BindRefused, check_bind
from data.config.settings import load_settings
from data.store.orm import AgentEvent, Message, ModelCall
from data.workers.outcome_judge import stop_shared
from tests.helpers.api import ServedApi, api_settings, serve_api
from tests.helpers.fake_openai import FakeOpenAI, drop, error, text, tool_call
from tests.helpers.servers import ROOT, free_port

ANSWER = "Hello! How can I help you today?"


def counts(engine: Engine) -> tuple[int, int]:
    with Session(engine) as session:
        messages = session.scalar(select(func.count()).select_from(Message)) or 0
        calls = session.scalar(
            select(func.count()).select_from(ModelCall).where(ModelCall.purpose == "chat")
        )
        return int(messages), int(calls or 0)


@pytest.fixture
def model() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(default=text(ANSWER)) as server:
        yield server


@pytest.fixture
def served(model: FakeOpenAI, tmp_path: Path, db_url: str) -> Iterator[ServedApi]:
    with serve_api(api_settings(model, tmp_path, db_url), free_port()) as api:
        yield api


def test_the_seeds_calls_work_as_written(served: ServedApi, engine: Engine) -> None:
    # Seed section 9: curl -X POST http://localhost:8000/chat -d '{"message": "Hello"}'
    response = served.client.post(
        "/chat", content=b'{"message": "Hello"}', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["reply"] == ANSWER and body["user_id"] == "anonymous" and body["turn"] == 1
    assert len(body["session_id"]) == 32
    assert body["usage"]["input_tokens"] > 0 and body["usage"]["output_tokens"] > 0
    assert body["cost_status"] == "computed" and body["cost_usd"] > 0
    assert body["latency_ms"] > 0 and body["ttft_ms"] is not None
    assert 0 < body["context_percent"] < 1 and body["run_id"] is None
    # Seed section 2.3: a known user and an unknown session id start that session.
    first = served.chat(user_id="user_123", session_id="test_session", message="Where is it?")
    second = served.chat(user_id="user_123", session_id="test_session", message="And now?")
    assert (first.json()["turn"], second.json()["turn"]) == (1, 2)
    assert first.json()["session_id"] == "test_session"
    # What was answered is what was recorded: 3 turns, 6 messages, 3 chat calls.
    assert counts(engine) == (6, 3)
    with Session(engine) as session:
        recorded = session.scalars(
            select(ModelCall).where(ModelCall.session_id == "test_session")
        ).all()
    chat_calls = [c for c in recorded if c.purpose == "chat"]
    assert [c.input_tokens for c in chat_calls[:1]] == [first.json()["usage"]["input_tokens"]]
    total = sum(c.cost_usd or 0 for c in recorded if c.turn == 1)
    assert first.json()["cost_usd"] == pytest.approx(total)


def test_a_tool_calling_turn_answers_with_its_tools_and_records_them_once(
    model: FakeOpenAI, tmp_path: Path, db_url: str, engine: Engine
) -> None:
    """With tools on, the model looks an order up: the answer lists the tool call, and the
    turn's rows (two chat calls, the tool call) are written once, as the answer says."""
    model.script(
        tool_call("lookup_order", order_number="A-10001"),
        text("Your order A-10001 shipped."),
    )
    settings = api_settings(model, tmp_path, db_url, agent_tools="on")
    with serve_api(settings, free_port()) as api:
        response = api.chat(user_id="tool-user", session_id="s-tools", message="Where is A-10001?")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["reply"] == "Your order A-10001 shipped."
    assert [t["name"] for t in body["tools"]] == ["lookup_order"]
    with Session(engine) as session:
        events = session.scalars(
            select(AgentEvent).where(
                AgentEvent.session_id == "s-tools", AgentEvent.kind == "tool_call"
            )
        ).all()
        chat_calls = session.scalar(
            select(func.count())
            .select_from(ModelCall)
            .where(ModelCall.session_id == "s-tools", ModelCall.purpose == "chat")
        )
    assert [(e.name, e.status) for e in events] == [(t["name"], t["status"]) for t in body["tools"]]
    assert chat_calls == 2


def test_a_session_belongs_to_its_user(served: ServedApi, engine: Engine) -> None:
    assert served.chat(user_id="ann", session_id="s-ann", message="Hi").status_code == 200
    before = counts(engine)
    stolen = served.chat(user_id="bob", session_id="s-ann", message="Show me her orders")
    assert stolen.status_code == 404 and stolen.json()["error"] == "not_found"
    assert counts(engine) == before, "nothing is written"
    mine = served.client.get("/sessions/s-ann", params={"user_id": "ann"})
    assert mine.status_code == 200
    assert [(m["role"], m["content"]) for m in mine.json()["messages"]] == [
        ("user", "Hi"),
        ("assistant", ANSWER),
    ]
    assert served.client.get("/sessions/s-ann", params={"user_id": "bob"}).status_code == 404
    assert served.client.get("/sessions/nope", params={"user_id": "ann"}).status_code == 404
    assert served.client.get("/sessions/s-ann").status_code == 422


def test_health_ready_metrics_and_docs(served: ServedApi, model: FakeOpenAI) -> None:
    assert served.client.get("/health").json() == {"status": "ok"}
    ready = served.client.get("/ready")
    assert ready.status_code == 200, ready.text
    checks = ready.json()["checks"]
    assert {k: v["ok"] for k, v in checks.items()} == {
        "database": True,
        "memory": True,
        "model": True,
        "redis": True,
    }
    assert checks["redis"]["configured"] is False
    served.chat(message="Hello")
    metrics = served.client.get("/metrics").text
    assert "agent_calls_total" in metrics and "model_latency_seconds_bucket" in metrics
    docs = served.client.get("/openapi.json").json()
    for path in ("/chat", "/chat/stream", "/sessions/{session_id}", "/health", "/ready"):
        assert path in docs["paths"]
    assert docs["components"]["schemas"]["ChatRequest"]["examples"]
    # A model endpoint that fails, then one that hangs: 503 naming it, within 2 s.
    model.models_delay = None
    failing = served.client.get("/ready")
    assert failing.status_code == 503 and failing.json()["checks"]["model"]["ok"] is False
    assert "503" in failing.json()["checks"]["model"]["error"]
    model.models_delay = 10.0
    started = time.monotonic()
    hanging = served.client.get("/ready")
    assert time.monotonic() - started < 2.5
    assert (
        hanging.status_code == 503
        and "no answer within" in hanging.json()["checks"]["model"]["error"]
    )
    model.models_delay = 0.0


def test_streaming_sends_deltas_then_the_usage(served: ServedApi) -> None:
    for request in (
        lambda: served.client.post("/chat/stream", json={"message": "Hi"}),
        lambda: served.client.post(
            "/chat", json={"message": "Hi"}, headers={"Accept": "text/event-stream"}
        ),
    ):
        response = request()
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [block.split("\n", 1) for block in response.text.strip().split("\n\n")]
        names = [e[0].removeprefix("event: ") for e in events]
        data = [json.loads(e[1].removeprefix("data: ")) for e in events]
        assert names[-1] == "done" and set(names[:-1]) == {"delta"}
        assert "".join(d["text"] for d in data[:-1]) == ANSWER == data[-1]["reply"]
        assert data[-1]["usage"]["output_tokens"] > 0


def test_a_client_that_leaves_mid_stream_frees_its_session(
    model: FakeOpenAI, served: ServedApi, engine: Engine
) -> None:
    """The client reads the first delta of a slow answer and hangs up: the turn ends, recorded
    as cancelled with the reason, and the same session's next turn is answered at once (not a
    409 after SESSION_WAIT_S)."""
    model.script(text(" ".join(f"w{i}" for i in range(80)), word_delay=0.05))
    body = {"message": "Hi", "session_id": "s-leave"}
    with served.client.stream("POST", "/chat/stream", json=body) as response:
        assert next(response.iter_lines()).startswith("event: delta")
    started = time.monotonic()
    for _ in range(100):  # the server notices the closed connection at its next write
        with Session(engine) as db:
            cancelled = db.scalars(
                select(AgentEvent).where(AgentEvent.kind == "turn_cancelled")
            ).all()
        if cancelled:
            break
        time.sleep(0.05)
    assert [(e.session_id, e.turn, e.error) for e in cancelled] == [
        ("s-leave", 1, "the client disconnected before the answer was complete")
    ]
    again = served.chat(**body)
    assert again.status_code == 200 and again.json()["turn"] == 2
    assert time.monotonic() - started < 10, "the session was free, not waited for"
    with Session(engine) as db:
        roles = db.scalars(
            select(Message.role).where(Message.session_id == "s-leave").order_by(Message.id)
        ).all()
    assert roles == ["user", "user", "assistant"]


def test_api_keys(model: FakeOpenAI, tmp_path: Path, db_url: str) -> None:
    key = "k" * 24
    with serve_api(api_settings(model, tmp_path, db_url, api_keys=key), free_port()) as api:
        assert api.chat(message="Hi").status_code == 401
        wrong = api.client.post(
            "/chat", json={"message": "Hi"}, headers={"Authorization": "Bearer " + "x" * 24}
        )
        assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"] == "Bearer"
        assert key not in wrong.text
        right = api.client.post(
            "/chat", json={"message": "Hi"}, headers={"Authorization": f"Bearer {key}"}
        )
        assert right.status_code == 200
        assert api.client.get("/health").status_code == 200  # probes need no key


def test_no_keys_means_this_machine_only() -> None:
    with pytest.raises(BindRefused, match="API_KEYS"):
        check_bind(load_settings(api_host="0.0.0.0"))
    check_bind(load_settings(api_host="0.0.0.0", api_keys="a" * 20))
    check_bind(load_settings(api_host="127.0.0.1"))
    env = {**os.environ, "API_HOST": "0.0.0.0", "API_KEYS": ""}
    done = subprocess.run(
        [sys.executable, "-m", "api"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: refusing to serve the API on 0.0.0.0 without API_KEYS: set API_KEYS, or "
        "API_HOST=127.0.0.1"
    ]


BAD_BODIES: list[tuple[Any, str]] = [
    ({}, "message"),
    ({"message": 12}, "message"),
    ({"message": ""}, "message"),
    ({"message": "   "}, "message"),
    ({"message": "x" * 8001}, "message"),
    ({"message": "hi\x00there"}, "message"),
    ({"message": "bell\x07"}, "message"),
    ({"message": "hi", "user_id": "u" * 129}, "user_id"),
    ({"message": "hi", "user_id": "ann smith"}, "user_id"),
    ({"message": "hi", "user_id": ""}, "user_id"),
    ({"message": "hi", "session_id": "s" * 65}, "session_id"),
    ({"message": "hi", "session_id": "../etc/passwd"}, "session_id"),
    ({"message": "hi", "user_id": None}, "user_id"),
    ({"message": "hi", "extra": 1}, "extra"),
    ({"message": ["a"]}, "message"),
]


@pytest.mark.parametrize(("body", "field"), BAD_BODIES)
def test_bad_input_is_a_422_naming_the_field_and_writes_nothing(
    served: ServedApi, engine: Engine, body: Any, field: str
) -> None:
    response = served.chat(**body)
    assert response.status_code == 422, response.text
    assert field in [f["field"] for f in response.json()["fields"]]
    assert counts(engine) == (0, 0)


def test_rate_limit_refuses_with_retry_after_and_writes_nothing(
    model: FakeOpenAI, tmp_path: Path, db_url: str, engine: Engine
) -> None:
    settings = api_settings(model, tmp_path, db_url, rate_limit_per_minute=3)
    with serve_api(settings, free_port()) as api:
        assert [api.chat(user_id="ann", message="hi").status_code for _ in range(3)] == [200] * 3
        before = counts(engine)
        refused = api.chat(user_id="ann", message="hi again")
        assert refused.status_code == 429 and refused.json()["error"] == "rate_limited"
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert counts(engine) == before
        assert api.chat(user_id="bob", message="hi").status_code == 200  # per user


def test_the_rate_limit_is_shared_through_redis(
    model: FakeOpenAI, tmp_path: Path, db_url: str, redis_client: Any
) -> None:
    from tests.helpers.servers import REDIS_URL

    # A user of its own, not a flushed database: Redis is shared with every other test (and
    # with a parallel run's), and the counters of this user are all this test reads.
    user = f"cara-{uuid.uuid4().hex[:8]}"
    settings = api_settings(model, tmp_path, db_url, rate_limit_per_minute=4, redis_url=REDIS_URL)
    other = settings.model_copy(update={"data_dir": tmp_path / "replica2"})
    with serve_api(settings, free_port()) as one, serve_api(other, free_port()) as two:
        codes = [api.chat(user_id=user, message="hi").status_code for api in (one, two) * 3]
    assert codes == [200, 200, 200, 200, 429, 429]


def test_one_turn_per_session_at_a_time(
    model: FakeOpenAI, tmp_path: Path, db_url: str, engine: Engine
) -> None:
    model.default = text(ANSWER, delay=0.6)
    results: dict[str, list[int]] = {}
    for wait, name in ((0.1, "busy"), (10.0, "queued")):
        settings = api_settings(model, tmp_path, db_url, session_wait_s=wait)
        with serve_api(settings, free_port()) as api:
            codes: list[int] = []
            barrier = threading.Barrier(2)

            def send(
                api: ServedApi = api,
                codes: list[int] = codes,
                barrier: threading.Barrier = barrier,
                name: str = name,
            ) -> None:
                barrier.wait()
                codes.append(
                    api.chat(user_id="dan", session_id=f"s-{name}", message="hi").status_code
                )

            threads = [threading.Thread(target=send) for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            results[name] = sorted(codes)
            transcript = api.client.get(f"/sessions/s-{name}", params={"user_id": "dan"}).json()
            roles = [(m["turn"], m["role"]) for m in transcript["messages"]]
            expected = [
                (t, r)
                for t in range(1, results[name].count(200) + 1)
                for r in ("user", "assistant")
            ]
            assert roles == expected, "turns never interleave"
    assert results == {"busy": [200, 409], "queued": [200, 200]}


def test_model_faults_and_timeouts(
    model: FakeOpenAI, tmp_path: Path, db_url: str, engine: Engine
) -> None:
    settings = api_settings(model, tmp_path, db_url, model_max_retries=2, model_timeout_s=1.0)
    with serve_api(settings, free_port()) as api:
        model.script(error(429, retry_after=0), error(500), text("Recovered."))
        ok = api.chat(user_id="eve", session_id="s-faults", message="hi")
        assert ok.status_code == 200 and ok.json()["reply"] == "Recovered."
        model.script(error(500), error(503), drop())
        failed = api.chat(user_id="eve", session_id="s-faults", message="hi again")
        assert failed.status_code == 503 and failed.json()["error"] == "model_unavailable"
        assert "Traceback" not in failed.text
        model.script(*[text("late", delay=3.0)] * 3)
        slow = api.chat(user_id="eve", session_id="s-slow", message="hurry")
        assert slow.status_code == 504 and "did not answer within 1 s" in slow.json()["message"]
    with Session(engine) as session:
        statuses = [
            (c.session_id, c.status)
            for c in session.scalars(
                select(ModelCall).where(ModelCall.purpose == "chat").order_by(ModelCall.id)
            )
        ]
    faults = [s for sid, s in statuses if sid == "s-faults"]
    assert faults == ["error", "error", "ok", "error", "error", "error"], "every attempt recorded"
    assert [s for sid, s in statuses if sid == "s-slow"] == ["error"] * 3


HOSTILE: list[tuple[bytes, str]] = [
    (b"", "application/json"),
    (b"{", "application/json"),
    (b"null", "application/json"),
    (b"[]", "application/json"),
    (b"42", "application/json"),
    (b'"message"', "application/json"),
    (b'{"message": "hi"', "application/json"),
    (b'{"message": "hi"}', "text/plain"),
    (b'{"message": "hi"}', "application/x-www-form-urlencoded"),
    (b"message=hi", "application/x-www-form-urlencoded"),
    (b'{"message": "hi"}', "multipart/form-data; boundary=x"),
    (b"\xff\xfe\x00{", "application/json"),
    (b'{"message": "\\ud800"}', "application/json"),
    (b'{"message": "\\u0000"}', "application/json"),
    (b'{"message": {"$ne": null}}', "application/json"),
    (b'{"message": true}', "application/json"),
    (b'{"message": 1e999}', "application/json"),
    (b'{"message": "hi", "message": 3}', "application/json"),
    (b'{"message": "hi", "user_id": {"a": 1}}', "application/json"),
    (b'{"message": "hi", "session_id": 5}', "application/json"),
    (b'{"message": "hi", "user_id": "\\u202eevil"}', "application/json"),
    (b'{"message": "hi", "user_id": "a\\u200bb"}', "application/json"),
    (b'{"message": "hi", "user_id": "\\uff41dmin"}', "application/json"),
    (b'{"message": "hi", "user_id": "admin\'--"}', "application/json"),
    (b'{"message": "hi", "user_id": "1; DROP TABLE messages"}', "application/json"),
    (b'{"message": "hi", "session_id": "x\' OR 1=1 --"}', "application/json"),
    (b'{"message": "hi", "user_id": "<script>alert(1)</script>"}', "application/json"),
    (b'{"message": "hi", "session_id": "<img src=x onerror=alert(1)>"}', "application/json"),
    (b'{"message": "hi", "user_id": "%00"}', "application/json"),
    (b'{"message": "hi", "user_id": "..\\\\..\\\\win"}', "application/json"),
    (b'{"message": "' + b"a" * 70_000 + b'"}', "application/json"),
    (b"[" * 10_000 + b"]" * 10_000, "application/json"),
    (b'{"a":' * 5_000 + b"1" + b"}" * 5_000, "application/json"),
    (b'{"message": "hi", "user_id": "' + b"u" * 10_000 + b'"}', "application/json"),
    (b"\x00" * 100, "application/json"),
    (b"<?xml version='1.0'?><message>hi</message>", "application/xml"),
    (b"<html><body>hi</body></html>", "text/html"),
    (b'{"message": "hi"}\n{"message": "again"}', "application/json"),
    (b'{"message": "hi", "session_id": null, "user_id": null}', "application/json"),
    (b'{"MESSAGE": "hi"}', "application/json"),
    (b'{"message": "\\t\\n"}', "application/json"),
    # Only characters that show nothing: zero-width spaces, a word joiner, BOM, fillers.
    (b'{"message": "\\u200b\\u200b\\u200b"}', "application/json"),
    (b'{"message": "\\u2060\\ufeff \\u200d"}', "application/json"),
    (b'{"message": "\\u3164\\u115f\\u2800"}', "application/json"),
    (b'{"message": "hi\\u001b[31mred"}', "application/json"),
    (b'{"message": "hi", "session_id": "\\n"}', "application/json"),
    (b'{"message": "hi", "user_id": " ann"}', "application/json"),
    (b'{"message": "hi", "user_id": "ann\\r\\nSet-Cookie: x=1"}', "application/json"),
    (b'{"message": "hi", "session_id": "' + b"\xe2\x80\xae" * 10 + b'"}', "application/json"),
    (b'{"message": 0.1, "user_id": 1}', "application/json"),
    (b'{"message": "hi", "user_id": []}', "application/json"),
    (b'{"message": "hi", "session_id": {}}', "application/json"),
    (b"\xef\xbb\xbf{}", "application/json"),
    (b'{"message":"' + "é".encode() * 9000 + b'"}', "application/json"),
]
SAFE_MESSAGES = [
    "<script>alert(1)</script>",
    "'; DROP TABLE messages; --",
    "![x](https://evil.example/pixel.png)",
    "[click](javascript:alert(1))",
    "\u202eevil",
    "👍🏽 z̷a̷l̷g̷o̷",
]


def test_hostile_bodies_never_get_a_500(served: ServedApi, engine: Engine) -> None:
    assert len(HOSTILE) + len(SAFE_MESSAGES) >= 50
    for raw, content_type in HOSTILE:
        response = served.client.post("/chat", content=raw, headers={"Content-Type": content_type})
        assert response.status_code in (400, 413, 422), (raw[:60], response.status_code)
        assert "Traceback" not in response.text and response.json()["error"]
    assert counts(engine) == (0, 0), "nothing is written for a bad body"
    for message in SAFE_MESSAGES:
        response = served.chat(message=message)
        assert response.status_code == 200, (message, response.text)
        stored = served.client.get(
            f"/sessions/{response.json()['session_id']}", params={"user_id": "anonymous"}
        ).json()["messages"][0]["content"]
        assert stored == message, "stored as text, unchanged"
    for path in ("/chat/stream", "/sessions/x", "/nowhere", "/health"):
        response = served.client.post(path, content=b"{", headers={"Content-Type": "text/plain"})
        assert response.status_code in (404, 405, 413, 422) and "Traceback" not in response.text


def test_sigterm_lets_the_turn_in_flight_finish(
    model: FakeOpenAI, tmp_path: Path, sqlite_server_url: str
) -> None:
    """`python -m api`, SIGTERM in the middle of a slow answer: the answer arrives, the process
    stops accepting and exits cleanly."""
    model.default = text(ANSWER, delay=2.0)
    port = free_port()
    env = {
        **os.environ,
        "OPENAI_API_KEY": "sk-test-not-a-real-key",
        "OPENAI_BASE_URL": model.url,
        "DATABASE_URL": sqlite_server_url,
        "DATA_DIR": str(tmp_path / "data"),
        "API_PORT": str(port),
        "METRICS_PORT": "0",
        "AGENT_TOOLS": "off",
        "SHUTDOWN_GRACE_S": "20",
    }
    log = (tmp_path / "api.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "api"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and process.poll() is None, (
                tmp_path / "api.log"
            ).read_text()
            time.sleep(0.1)
        result: dict[str, Any] = {}

        def send() -> None:
            result["response"] = httpx.post(
                f"http://127.0.0.1:{port}/chat", json={"message": "slow one"}, timeout=30
            )

        sender = threading.Thread(target=send)
        sender.start()
        time.sleep(0.8)
        process.send_signal(signal.SIGTERM)
        sender.join(timeout=30)
        assert result["response"].status_code == 200
        assert result["response"].json()["reply"] == ANSWER
        # uvicorn re-raises SIGTERM once it has shut down, so the exit status is the signal's.
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
    finally:
        if process.poll() is None:
            process.kill()
        log.close()


def test_close_then_the_verdict_and_its_history(
    model: FakeOpenAI, tmp_path: Path, db_url: str, engine: Engine
) -> None:
    """POST /sessions/{id}/close ends the conversation; the API's own outcome worker judges it
    (the judge is the model server too) and GET /sessions/{id} returns the verdict."""
    verdict = {
        "outcome": "resolved",
        "topic": "order status",
        "confidence": 0.8,
        "reason": "The customer said thanks.",
        "quote": "Thanks",
    }
    model.default = lambda body: text(json.dumps(verdict) if "response_format" in body else ANSWER)
    settings = api_settings(model, tmp_path, db_url).model_copy(
        update={"outcome_worker": True, "judge_interval_s": 1}
    )
    try:
        with serve_api(settings, free_port()) as api:
            assert api.chat(user_id="ann", session_id="s-done", message="Thanks").status_code == 200
            before = api.client.get("/sessions/s-done", params={"user_id": "ann"}).json()
            assert (before["outcome"], before["outcome_history"]) == (None, [])
            assert (
                api.client.post("/sessions/s-done/close", params={"user_id": "bob"}).status_code
                == 404
            )
            assert (
                api.client.post("/sessions/nope/close", params={"user_id": "ann"}).status_code
                == 404
            )
            assert api.client.post("/sessions/s-done/close").status_code == 422
            closed = api.client.post("/sessions/s-done/close", params={"user_id": "ann"})
            assert closed.status_code == 200 and closed.json()["session_id"] == "s-done"
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                body = api.client.get("/sessions/s-done", params={"user_id": "ann"}).json()
                if body["outcome"] is not None:
                    break
                time.sleep(0.2)
            assert body["closed_at"] == closed.json()["closed_at"]
            assert body["outcome"]["outcome"] == "resolved"
            assert body["outcome"]["end_reason"] == "closed"
            assert body["outcome"]["decided_by"] == "judge"
            assert body["outcome"]["quote"] == "Thanks"
            assert [v["outcome"] for v in body["outcome_history"]] == ["resolved"]
            assert "/sessions/{session_id}/close" in api.client.get("/openapi.json").json()["paths"]
            metrics = api.client.get("/metrics").text
            assert 'agent_conversations_ended_total{outcome="resolved",topic="order status"}' in (
                metrics
            )
    finally:
        stop_shared()
    with Session(engine) as session:
        purposes = session.scalars(
            select(ModelCall.purpose).where(ModelCall.purpose != "embedding").order_by(ModelCall.id)
        ).all()
    assert purposes == ["chat", "judge"]
