"""Shared fixtures: fresh SQLite and Postgres databases, the local model server, settings."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
import streamlit as st
from sqlalchemy import Engine
from streamlit import config as st_config

from agent.embedding_base import Embedder
from agent.embeddings import make_embedder
from agent.knowledge import KnowledgeBase
from agent.live_turn import wait_for_running
from agent.runtime import release_shared
from data.config.settings import Settings, get_settings, load_settings
from data.store.db import dispose_shared, make_engine
from data.store.demo import generate
from data.store.migrate import upgrade
from tests.helpers.db import fresh_postgres, truncate_all
from tests.helpers.servers import REDIS_URL, free_port

# Settings a developer may have in their shell must not leak into the tests.
ENV_KEYS = [name.upper() for name in Settings.model_fields]


# What a test needs, from the fixtures it uses (see the markers in pyproject.toml), so that
# `pytest -m "not browser and not model"` is an honest fast loop.
NEEDS = {
    "postgres": {"postgres_server_url"},
    "model": {"local_model_port", "small_window_port"},
    "prometheus": {"prometheus_url", "prometheus", "stack"},
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for marker, fixtures in NEEDS.items():
            if used & fixtures:
                item.add_marker(marker)
        if "promtool" in item.name:
            item.add_marker("prometheus")


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No developer .env, secrets or variables: each test starts from the defaults."""
    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("LANGSMITH_TRACING", "false")
    # The outcome worker judges ended conversations in the background; the tests of outcomes
    # turn it on (or run its passes themselves) where they need it.
    monkeypatch.setenv("OUTCOME_WORKER", "false")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("data.config.settings.SECRETS_FILES", ())
    # AppTest serves nothing; it stands for the app on 127.0.0.1 (single-user local mode when
    # no user exists), as `make run` and the repository's .streamlit/config.toml serve it.
    before = st_config.get_option("server.address")
    st_config.set_option("server.address", "127.0.0.1")
    get_settings.cache_clear()
    yield
    st_config.set_option("server.address", before)
    get_settings.cache_clear()
    # A chat page's turn runs on a thread of its own (agent/live_turn.py): one still answering
    # would write its rows into the next test's database after that test emptied it.
    wait_for_running(timeout=60)
    # The pages and the API share one runtime and engine per settings and database: each test
    # has its own, which would otherwise stay for the whole run.
    release_shared()
    dispose_shared()


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A fresh, migrated Postgres database for this test run, dropped at the end.

    Postgres runs on every machine of this project's kind, so a missing server is a failure,
    never a skip."""
    with fresh_postgres("acb_test") as url:
        yield url


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    """The machine's Redis. With CI=true a missing Redis fails the test instead of skipping."""
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis is unreachable at {REDIS_URL}: {error}")
        pytest.skip(f"Redis is unreachable at {REDIS_URL}: {error}")
    yield client
    client.close()


@pytest.fixture(scope="session")
def sqlite_server_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'test.sqlite3'}"
    upgrade(url)
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The same test on SQLite and on Postgres, each starting empty."""
    url = request.getfixturevalue(f"{request.param}_server_url")
    engine = make_engine(url)
    truncate_all(engine)
    engine.dispose()
    yield url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def local_model_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The real embedded model server (SmolLM2 via llama-cpp-python), once per test run."""
    from agent.local_server import LocalServer

    port = free_port()
    log = tmp_path_factory.mktemp("model") / "server.log"
    server = LocalServer(port=port, n_ctx=4096, log_file=log).start(timeout=120)
    yield port
    server.stop()


@pytest.fixture(scope="session")
def shared_embedder() -> Embedder:
    """The app's local embedder (with its in-process cache, recording nothing), built once:
    for tests about something else than recording embedding calls."""
    return make_embedder(load_settings(openai_api_key=None, redis_url=None))


@pytest.fixture(scope="session")
def shared_knowledge(shared_embedder: Embedder) -> KnowledgeBase:
    """The shipped help center on the shared embedder, embedded once (about a second)."""
    knowledge = KnowledgeBase(embedder=shared_embedder)
    knowledge.matrix()
    return knowledge


@pytest.fixture
def local_settings(local_model_port: int, tmp_path: Path) -> Settings:
    return load_settings(
        data_dir=tmp_path / "data", local_model_port=local_model_port, metrics_port=0
    )


@pytest.fixture
def app_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, db_url: str, local_model_port: int
) -> Iterator[str]:
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LOCAL_MODEL_PORT", str(local_model_port))
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("METRICS_PORT", "0")
    st.cache_resource.clear()
    st.cache_data.clear()
    yield db_url
    st.cache_resource.clear()
    st.cache_data.clear()


@pytest.fixture
def demo(app_env: str) -> Iterator[Engine]:
    engine = make_engine(app_env)
    generate(
        engine=engine,
        days=10,
        users=20,
        sessions=100,
        calls=1_500,
        seed=5,
        end=datetime.now(UTC) - timedelta(days=3),
    )
    yield engine
    engine.dispose()
