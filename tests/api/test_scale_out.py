"""Scale out: two API replicas (two processes, `python -m api`) on one Postgres and one Redis,
under concurrent load, with conversations whose turns alternate between the replicas. No turn is
lost or duplicated, every turn's model call is recorded once, and the rollups the analyst pages
read equal the raw rows."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from data.analytics.cost import cost_totals
from data.analytics.filters import Filters
from data.store.db import make_engine
from data.store.orm import Message, ModelCall
from tests.helpers.db import fresh_postgres
from tests.helpers.fake_openai import FakeOpenAI, text
from tests.helpers.servers import REDIS_URL, ROOT, free_port, wait_ready

TOKEN = "replica-test-token-0123456789"
SESSIONS = 12
TURNS = 4  # per session, alternating replicas


@pytest.fixture
def database() -> Iterator[str]:
    with fresh_postgres("acb_scale") as url:
        yield url


@pytest.fixture
def replicas(database: str, tmp_path: Path) -> Iterator[list[str]]:
    with FakeOpenAI(default=text("Your order has shipped.")) as api:
        urls, processes, logs = [], [], []
        for i in range(2):
            port = free_port()
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "API_"))},
                "DATABASE_URL": database,
                "REDIS_URL": REDIS_URL,
                "DATA_DIR": str(tmp_path / f"replica-{i}"),
                "OPENAI_BASE_URL": api.url,
                "OPENAI_API_KEY": "test-key",
                "CHAT_MODEL_CONTEXT_WINDOW": "128000",
                "API_HOST": "127.0.0.1",
                "API_PORT": str(port),
                "API_KEYS": TOKEN,
                "METRICS_PORT": "0",
                "RATE_LIMIT_PER_MINUTE": "1000",
                "RATE_LIMIT_BURST": "100",
                "PYTHONPATH": str(ROOT),
            }
            log_path = tmp_path / f"replica-{i}.log"
            log = log_path.open("wb")
            process = subprocess.Popen(
                [sys.executable, "-m", "api"],
                cwd=tmp_path,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            wait_ready(f"http://127.0.0.1:{port}/health", process, log_path, timeout=90)
            urls.append(f"http://127.0.0.1:{port}")
            processes.append(process)
            logs.append(log)
        yield urls
        for process in processes:
            process.terminate()
            process.wait(timeout=30)
        for log in logs:
            log.close()


def test_two_replicas_lose_and_duplicate_no_turn(replicas: list[str], database: str) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def conversation(n: int) -> list[int]:
        statuses = []
        with httpx.Client(timeout=60, headers=headers) as client:
            for turn in range(TURNS):
                url = replicas[(n + turn) % 2]  # each turn on the other replica
                response = client.post(
                    f"{url}/chat",
                    json={
                        "user_id": f"user-{n % 4}",
                        "session_id": f"scale-{n}",
                        "message": f"Where is my order? (turn {turn + 1})",
                    },
                )
                statuses.append(response.status_code)
        return statuses

    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = [s for result in pool.map(conversation, range(SESSIONS)) for s in result]
    assert statuses == [200] * (SESSIONS * TURNS)

    engine = make_engine(database)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(Message.session_id, Message.turn, Message.role, func.count()).group_by(
                    Message.session_id, Message.turn, Message.role
                )
            ).all()
            chat_calls = connection.execute(
                select(func.count()).where(ModelCall.purpose == "chat", ModelCall.status == "ok")
            ).scalar_one()
            all_calls = connection.execute(select(func.count()).select_from(ModelCall)).scalar()
        expected = {
            (f"scale-{n}", turn, role)
            for n in range(SESSIONS)
            for turn in range(1, TURNS + 1)
            for role in ("user", "assistant")
        }
        assert {(s, t, r) for s, t, r, _ in rows} == expected  # none lost
        assert all(count == 1 for *_, count in rows)  # none duplicated
        assert chat_calls == SESSIONS * TURNS
        now = datetime.now(UTC)
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        # Yesterday and today: a run across midnight UTC still sees every call.
        filters = Filters(
            start=day - timedelta(days=1), end=day + timedelta(days=1), preset="custom", unit="hour"
        )
        totals = cost_totals(engine=engine, filters=filters)
        assert totals.calls == all_calls
        assert totals.sessions == SESSIONS and totals.users == 4
    finally:
        engine.dispose()
