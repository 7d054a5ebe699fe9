"""The API's drills (issue 9) over real HTTP on 127.0.0.1: a load drill (20 clients x 10 turns on
Postgres, the model served by tests/helpers/fake_openai.py at a realistic delay; and 4 x 3 turns
on the real embedded model), and a database restart drill on a throwaway Postgres cluster that
the test starts, kills in the middle of a turn and starts again."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import Engine, func, select

from data.analytics.cost import page_data
from data.analytics.filters import Filters
from data.analytics.sessions import all_sessions
from data.config.settings import load_settings
from data.store.db import make_engine
from data.store.migrate import upgrade
from data.store.orm import Message, ModelCall
from tests.helpers.api import api_settings, serve_api
from tests.helpers.db import fresh_postgres
from tests.helpers.fake_openai import FakeOpenAI, text
from tests.helpers.servers import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
ANSWER = "Thanks for waiting! Your parcel left our warehouse this morning."
QUESTIONS = [
    "Where is my order A-{n}?",
    "How long does shipping to Canada take?",
    "Can I return an opened item?",
    "Please change my delivery address.",
    "Has my refund for A-{n} been processed?",
]


@pytest.fixture
def fresh_pg_url() -> Iterator[str]:
    """A database of its own on the machine's Postgres, migrated, dropped at the end: the
    dashboards' rollups of other tests' rows must not count in this drill's totals."""
    with fresh_postgres("acb_drill") as url:
        yield url


@dataclass
class Result:
    user_id: str
    session_id: str
    turn: int
    status: int
    body: dict[str, Any]


def run_clients(url: str, *, clients: int, turns: int, timeout: float) -> list[Result]:
    """`clients` threads, each a user with one session sending `turns` messages in a row."""

    def client(index: int) -> list[Result]:
        user, session = f"load-user-{index}", f"load-{index}-{uuid.uuid4().hex[:8]}"
        out = []
        with httpx.Client(base_url=url, timeout=timeout) as http:
            for n in range(turns):
                message = QUESTIONS[n % len(QUESTIONS)].format(n=10_000 + index * 100 + n)
                try:
                    response = http.post(
                        "/chat", json={"user_id": user, "session_id": session, "message": message}
                    )
                    body = response.json()
                    out.append(Result(user, session, n + 1, response.status_code, body))
                except (httpx.HTTPError, ValueError) as error:
                    out.append(Result(user, session, n + 1, 0, {"error": repr(error)}))
        return out

    with ThreadPoolExecutor(max_workers=clients) as pool:
        return [r for rs in pool.map(client, range(clients)) for r in rs]


def per_session_counts(engine: Engine) -> dict[str, tuple[int, int]]:
    """session -> (messages, chat model calls)."""
    with engine.connect() as connection:
        messages = dict(
            connection.execute(
                select(Message.session_id, func.count()).group_by(Message.session_id)
            ).all()
        )
        chat = dict(
            connection.execute(
                select(ModelCall.session_id, func.count())
                .where(ModelCall.purpose == "chat")
                .group_by(ModelCall.session_id)
            ).all()
        )
    return {s: (int(messages[s]), int(chat.get(s, 0))) for s in messages}


def duplicates(engine: Engine) -> list[tuple[Any, ...]]:
    """(session, turn, role) written more than once, and chat calls recorded twice."""
    with engine.connect() as connection:
        twice = connection.execute(
            select(Message.session_id, Message.turn, Message.role)
            .group_by(Message.session_id, Message.turn, Message.role)
            .having(func.count() > 1)
        ).all()
        calls = connection.execute(
            select(ModelCall.session_id, ModelCall.turn)
            .where(ModelCall.purpose == "chat", ModelCall.status == "ok")
            .group_by(ModelCall.session_id, ModelCall.turn)
            .having(func.count() > 1)
        ).all()
    return [tuple(r) for r in [*twice, *calls]]


def chat_view(start: datetime, end: datetime) -> Filters:
    """The Cost page's custom view of the chat model over the whole hours around a run."""
    first = start.replace(minute=0, second=0, microsecond=0)
    last = end.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return Filters(
        start=first,
        end=last,
        preset="custom",
        models=("gpt-4o-mini",),
        unit="hour",
        unit_auto=False,
    )


def test_load_drill_20_clients_x_10_turns(tmp_path: Path, fresh_pg_url: str) -> None:
    """20 clients at once, 10 turns each: every turn answered, numbered in order and recorded
    once, and the Cost page's figures add up. (50 turns each added time, not shape; turns per
    second are bench/api.py's.)"""
    clients, turns = 20, 10
    with FakeOpenAI(default=text(ANSWER, delay=0.05)) as model:
        settings = api_settings(
            model,
            tmp_path,
            fresh_pg_url,
            # 200 turns from 20 users in seconds: far below these limits.
            rate_limit_per_minute=10_000,
            rate_limit_burst=10_000,
            model_timeout_s=30.0,
        )
        started = datetime.now(UTC)
        with serve_api(settings, free_port()) as api:
            results = run_clients(api.url, clients=clients, turns=turns, timeout=60)
            api.runtime.parts.middleware.flush()
        ended = datetime.now(UTC)

    errors = [(r.status, r.body) for r in results if r.status != 200]
    assert errors == [], f"{len(errors)} errors, first: {errors[:3]}"
    assert len(results) == clients * turns
    assert all(r.body["reply"] == ANSWER for r in results)
    # Each session's turns are numbered 1..10 in the order they were sent.
    assert all(r.body["turn"] == r.turn and r.body["session_id"] == r.session_id for r in results)

    engine = make_engine(fresh_pg_url)
    try:
        counts = per_session_counts(engine)
        sessions = {r.session_id for r in results}
        # Every turn recorded exactly once: 2 messages and 1 chat call a turn, per session.
        assert counts == {s: (2 * turns, turns) for s in sessions}
        assert duplicates(engine) == []
        # The dashboards: the Cost page's own figures over a view covering the run.
        view = page_data(engine=engine, filters=chat_view(started, ended))
        assert view.totals.calls == clients * turns
        assert view.totals.errors == 0
        assert view.totals.sessions == clients and view.totals.users == clients
        assert int(view.by_model["calls"].sum()) == clients * turns
        assert int(view.over_time["calls"].sum()) == clients * turns
        per_session = all_sessions(engine=engine, filters=chat_view(started, ended))
        assert sorted(per_session["calls"].astype(int)) == [turns] * clients
        # The tokens the API answered with are the tokens the page adds up.
        answered = sum(r.body["usage"]["output_tokens"] for r in results)
        assert view.totals.output_tokens == answered
    finally:
        engine.dispose()


def test_load_drill_on_the_embedded_model(
    tmp_path: Path, fresh_pg_url: str, local_model_port: int
) -> None:
    """4 clients x 3 turns on the real local model (SmolLM2 via llama-cpp-python): four
    conversations queued on the one server at once, each turn answered and recorded once."""
    clients, turns = 4, 3
    settings = load_settings(
        data_dir=tmp_path / "data",
        local_model_port=local_model_port,
        local_model_max_tokens=32,  # the queueing and the records are tested, not the answers
        metrics_port=0,
        database_url=fresh_pg_url,
        rate_limit_per_minute=10_000,
        rate_limit_burst=10_000,
        model_timeout_s=300.0,
    )
    with serve_api(settings, free_port()) as api:
        results = run_clients(api.url, clients=clients, turns=turns, timeout=600)
        api.runtime.parts.middleware.flush()

    errors = [(r.status, r.body) for r in results if r.status != 200]
    assert errors == [], f"{len(errors)} errors, first: {errors[:3]}"
    assert len(results) == clients * turns
    assert all(r.body["reply"].strip() for r in results), "every turn answered"
    assert all(r.body["turn"] == r.turn for r in results)
    engine = make_engine(fresh_pg_url)
    try:
        sessions = {r.session_id for r in results}
        assert per_session_counts(engine) == {s: (2 * turns, turns) for s in sessions}
        assert duplicates(engine) == []
    finally:
        engine.dispose()


class Cluster:
    """A throwaway Postgres cluster in a temporary directory: its own port on 127.0.0.1, its
    socket inside the directory, run as the postgres OS user (initdb refuses root)."""

    def __init__(self, root: Path, port: int) -> None:
        self.root, self.port = root, port
        self.data, self.log = root / "data", root / "server.log"
        self.url = f"postgresql://postgres@127.0.0.1:{port}/drill"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run(
            [*as_postgres, *args], capture_output=True, text=True, timeout=60, check=check
        )

    def init(self) -> None:
        self._run(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
            "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        done = self._run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
            "-w", "-t", "30", "start", check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {done.stderr}\n{self.log.read_text()}")

    def kill(self) -> None:
        """Stop at once, as a crash would: no checkpoint, every connection cut."""
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")

    def running(self) -> bool:
        return (
            self._run(
                str(PG_BIN / "pg_ctl"), "-D", str(self.data), "status", check=False
            ).returncode
            == 0
        )


@pytest.fixture
def throwaway_pg() -> Iterator[Cluster]:
    """A migrated database on a cluster of its own, stopped and deleted at the end, always."""
    if not (PG_BIN / "initdb").exists():
        pytest.fail(f"{PG_BIN / 'initdb'} is missing: run `make system-deps`")
    root = Path(tempfile.mkdtemp(prefix="acb-pg-"))
    cluster = Cluster(root, free_port())
    try:
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
        cluster.init()
        cluster.start()
        with psycopg.connect(
            f"host=127.0.0.1 port={cluster.port} user=postgres dbname=postgres", autocommit=True
        ) as conn:
            conn.execute("CREATE DATABASE drill")
        upgrade(cluster.url)
        yield cluster
    finally:
        if cluster.running():
            cluster.kill()
        shutil.rmtree(root, ignore_errors=True)


def test_database_restart_drill(tmp_path: Path, throwaway_pg: Cluster) -> None:
    with FakeOpenAI(default=text(ANSWER, delay=1.5)) as model:
        settings = api_settings(model, tmp_path, throwaway_pg.url, model_timeout_s=10.0)
        with serve_api(settings, free_port()) as api:
            first = api.chat(user_id="ann", session_id="drill", message="Where is my parcel?")
            assert first.status_code == 200, first.text

            # The database dies half a second into a turn, while the model is answering.
            answer: dict[str, httpx.Response] = {}
            during = threading.Thread(
                target=lambda: answer.update(
                    r=api.chat(user_id="ann", session_id="drill", message="And my refund?")
                )
            )
            during.start()
            time.sleep(0.5)
            throwaway_pg.kill()
            during.join(timeout=30)
            failed = answer["r"]
            assert failed.status_code == 503, failed.text
            body = failed.json()
            assert body["error"] == "database_unavailable"
            assert (
                body["message"].startswith("The ") and "database is unavailable" in body["message"]
            )
            assert "Traceback" not in failed.text and 'File "' not in failed.text
            # Liveness stays up; readiness names the database.
            assert api.client.get("/health").status_code == 200
            ready = api.client.get("/ready")
            assert ready.status_code == 503 and ready.json()["checks"]["database"]["ok"] is False

            throwaway_pg.start()
            model.default = text(ANSWER, delay=0.05)
            # The very next request works, on the same API process.
            after = api.chat(user_id="ann", session_id="drill", message="Are you back?")
            assert after.status_code == 200, after.text
            assert after.json()["reply"] == ANSWER
            assert api.client.get("/ready").status_code == 200
            api.runtime.parts.middleware.flush()

            # A restart between two turns, with no request in flight: every pooled connection
            # is dead, and nothing has touched one yet; the next turn still works.
            throwaway_pg.kill()
            throwaway_pg.start()
            again = api.chat(user_id="ann", session_id="drill", message="Still there?")
            assert again.status_code == 200, again.text
            api.runtime.parts.middleware.flush()

    engine = make_engine(throwaway_pg.url)
    try:
        assert duplicates(engine) == []
        with engine.connect() as connection:
            rows = connection.execute(
                select(Message.turn, Message.role).where(Message.session_id == "drill")
            ).all()
        by_turn: dict[int, set[str]] = {}
        for turn, role in rows:
            by_turn.setdefault(turn, set()).add(role)
        # No answer without its question; the failed turn keeps the customer's message only.
        assert all("user" in roles for roles in by_turn.values()), by_turn
        assert by_turn[1] == {"user", "assistant"}
        assert by_turn[max(by_turn)] == {"user", "assistant"}
        assert again.json()["turn"] == max(by_turn) == after.json()["turn"] + 1
        assert sum(roles == {"user", "assistant"} for roles in by_turn.values()) == 3
    finally:
        engine.dispose()
