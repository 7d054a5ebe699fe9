"""Copying memories between embedded Qdrant and pgvector (python -m agent.memory_migrate), both
ways, on the real local embedder: every memory arrives with its id, keys and vector, recalls
give the same answers on both sides, a second run copies nothing, and the counts are checked."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient
from sqlalchemy import Engine

from agent.embedders import LocalEmbedder
from agent.memory import MemoryStore
from agent.memory_migrate import copy
from agent.memory_pgvector import LOAD_CHUNK, PgVectorStore
from data.store.db import make_engine
from tests.helpers.servers import ROOT

pytestmark = pytest.mark.postgres


@dataclass(frozen=True)
class Fact:
    text: str
    kind: str = "fact"
    keys: tuple[str, ...] = ()


FACTS = {
    "alice": [
        Fact("Order A-1234 arrived damaged", "problem", ("A-1234",)),
        Fact("My email is alice@example.com", "email"),
        Fact("We promised a refund for A-1234 within 5 days", "promise", ("A-1234",)),
    ],
    "bob": [Fact("Bob's kettle B-77 leaks", "problem", ("B-77",))],
    "carol": [Fact(f"Carol's note number {i}") for i in range(12)],
}
QUERIES = ["my package was broken", "what is my email", "kettle leaking", "note"]


@pytest.fixture
def pg(postgres_server_url: str) -> Iterator[Engine]:
    engine = make_engine(postgres_server_url)
    yield engine
    with engine.begin() as connection:
        PgVectorStore(engine, LocalEmbedder()).table.drop(connection, checkfirst=True)
    engine.dispose()


def fill(store: MemoryStore | PgVectorStore) -> int:
    return sum(store.remember(user, facts, session_id=f"s-{user}") for user, facts in FACTS.items())


def answers(store: MemoryStore | PgVectorStore) -> dict[str, list[list[tuple[str, str, float]]]]:
    return {
        user: [
            [(m.id, m.text, round(m.score, 4)) for m in hits]
            for hits in store.recall(user, QUERIES, keys=["A-1234", "B-77"], k=5, threshold=0.6)
        ]
        for user in FACTS
    }


def test_qdrant_to_pgvector_and_back(pg: Engine, tmp_path: Path) -> None:
    embedder = LocalEmbedder()
    qdrant = MemoryStore(QdrantClient(path=str(tmp_path / "q1")), embedder)
    assert fill(qdrant) == 16
    vectors = PgVectorStore(pg, embedder)
    result = copy(qdrant, vectors, batch=5, progress=False)
    assert result == {"read": 16, "copied": 16, "users": 3, "mismatched": 0}
    assert vectors.count() == 16 and vectors.count("carol") == 12
    assert answers(vectors) == answers(qdrant)
    assert copy(qdrant, vectors, progress=False)["copied"] == 0, "a second run copies nothing"
    # And back, into an empty embedded Qdrant.
    back = MemoryStore(QdrantClient(path=str(tmp_path / "q2")), embedder)
    assert copy(vectors, back, batch=7, progress=False) == result
    assert answers(back) == answers(qdrant)
    # A memory lost in the target since is copied again by the next run.
    vectors.forget_user("bob")
    assert copy(qdrant, vectors, progress=False)["copied"] == 1
    qdrant.close()
    back.close()


def test_the_command_copies_with_checked_counts(pg: Engine, tmp_path: Path) -> None:
    embedder = LocalEmbedder()
    qdrant = MemoryStore(QdrantClient(path=str(tmp_path / "data" / "qdrant")), embedder)
    fill(qdrant)
    qdrant.close()  # the command opens the embedded folder itself
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_", "MEMORY_", "QDRANT_", "OPENAI_"))
    }
    env |= {
        "PYTHONPATH": str(ROOT),
        "DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": pg.url.render_as_string(hide_password=False),
    }
    run = subprocess.run(
        [sys.executable, "-m", "agent.memory_migrate", "--to", "pgvector"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == (
        "qdrant -> pgvector: read 16 memories of 3 users, 16 new in the target; "
        "counts checked: every memory is in the target"
    )
    assert "16/16" in run.stderr  # the progress bar
    assert PgVectorStore(pg, embedder).count() == 16
    bad = subprocess.run(
        [sys.executable, "-m", "agent.memory_migrate", "--to", "pgvector", "--batch", "0"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    assert bad.returncode == 2 and bad.stderr == "error: --batch must be between 1 and 50000\n"


def test_a_large_load_goes_through_copy_and_skips_known_ids(pg: Engine) -> None:
    """Past LOAD_CHUNK rows, load() copies into a temporary table and inserts what is new."""
    store = PgVectorStore(pg, LocalEmbedder())
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((250, store.embedder.dim))
    rows = [
        {
            "id": str(uuid.uuid4()),
            "user_id": f"u{i % 5}",
            "session_id": "s",
            "text": f"fact {i}, with a comma and a 'quote'\ttab",
            "kind": "fact",
            "keys": [f"K-{i}", "shared key"],
            "created_at": datetime.now(UTC),
            "embedding": list(vectors[i] / np.linalg.norm(vectors[i])),
        }
        for i in range(250)
    ]
    assert len(rows) > LOAD_CHUNK
    assert store.load(rows) == 250
    assert store.load(rows[:150]) == 0
    assert store.count() == 250 and store.count("u3") == 50
    (hit,) = store.recall("u3", [], keys=["K-3"], k=5)[0]
    assert hit.text == "fact 3, with a comma and a 'quote'\ttab"
