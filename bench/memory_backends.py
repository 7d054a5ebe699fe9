"""Long-term memory on both backends: recall latency and write rate of pgvector (the app's
Postgres, MEMORY_BACKEND=pgvector) beside embedded Qdrant (qdrant-client's local mode, one
collection per user), at each size of --sizes (memories:users).

Vectors are precomputed random unit vectors (384 floats, the local embedder's size), so the
numbers are the stores' alone. Per size and backend:

- `load_s`, `load_per_s`: the whole size written (pgvector: `load()` batches of 5,000 rows,
  the migrate tool's path, with the HNSW index built after the load, `index_s`; Qdrant:
  `remember()` of each user's memories in batches of 100);
- `write_p50_ms`, `write_p95_ms`, `writes_per_s`: `remember()` of one memory for an existing
  user, one at a time, as a chat turn stores a fact (pgvector with the HNSW index in place);
- `recall_p50_ms`, `recall_p95_ms`: `recall()` of one query (k=4) for a random user, through
  the store's whole path (the user check, then the ranked read);
- `plan`: how Postgres runs the ranked read (the index it uses).

A Qdrant server cannot run on this machine (no Docker engine, no server package in the
registries it reaches), so the server layout is not measured here.

    python bench/memory_backends.py [--sizes 10000:100,1000000:10000] [--queries 500]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qdrant_client import QdrantClient
from sqlalchemy import text

from agent.context import TurnContext
from agent.memory import MemoryStore
from agent.memory_pgvector import PgVectorStore
from data.store.db import make_engine

DIM = 384
ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class Item:
    text: str
    kind: str = "fact"


class Vectors:
    """A random unit vector per text, drawn on demand and kept: the bench times the stores."""

    model = "bench-random"
    provider = "bench"
    dim = DIM

    def __init__(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)
        self._known: dict[str, list[float]] = {}

    def draw(self, n: int) -> np.ndarray:
        raw = self._rng.standard_normal((n, DIM)).astype(np.float32)
        raw /= np.linalg.norm(raw, axis=1, keepdims=True)
        return raw

    def embed(self, texts: Sequence[str], *, ref: TurnContext | None = None) -> list[list[float]]:
        missing = [t for t in texts if t not in self._known]
        if missing:
            self._known.update(zip(missing, self.draw(len(missing)).tolist(), strict=True))
        return [self._known.pop(t) for t in texts]


def pct(values: list[float], q: int) -> float:
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 3)


def per_user(size: int, users: int) -> list[int]:
    base, extra = divmod(size, users)
    return [base + (1 if u < extra else 0) for u in range(users)]


def time_writes(store: MemoryStore | PgVectorStore, users: int, n: int) -> list[float]:
    out = []
    for i in range(n):
        started = time.perf_counter()
        store.remember(f"user-{i * 7919 % users}", [Item(f"single {i}")], session_id="bench")
        out.append((time.perf_counter() - started) * 1000)
    return out


def time_recalls(store: MemoryStore | PgVectorStore, users: int, n: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        user = f"user-{int(rng.integers(users))}"
        started = time.perf_counter()
        (hits,) = store.recall(user, [f"query {seed} {i}"], k=4, threshold=0.0)
        out.append((time.perf_counter() - started) * 1000)
        assert len(hits) == 4 and all(m.user_id == user for m in hits)
    return out


def bench_pgvector(size: int, users: int, queries: int) -> dict[str, object]:
    name = f"acb_bench_mem_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    engine = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
    try:
        vectors = Vectors(seed=size)
        store = PgVectorStore(engine, vectors)
        store.ensure()
        hnsw = f"{store.table.name}_hnsw"
        with engine.begin() as connection:
            connection.execute(text(f'DROP INDEX "{hnsw}"'))
        now = datetime.now(UTC)
        started = time.perf_counter()
        batch: list[dict[str, object]] = []
        for user, count in enumerate(per_user(size, users)):
            drawn = vectors.draw(count)
            for j in range(count):
                text_ = f"memory {j} of user {user}"
                batch.append(
                    {
                        "id": str(uuid.uuid5(uuid.NAMESPACE_OID, f"{user}/{text_}")),
                        "user_id": f"user-{user}",
                        "session_id": "bench",
                        "text": text_,
                        "kind": "fact",
                        "keys": [],
                        "created_at": now,
                        "embedding": drawn[j],
                    }
                )
            if len(batch) >= 5_000:
                store.load(batch)
                batch = []
        store.load(batch)
        load_s = time.perf_counter() - started
        started = time.perf_counter()
        with engine.begin() as connection:
            connection.execute(text("SET maintenance_work_mem = '2GB'"))
            connection.execute(text("SET max_parallel_maintenance_workers = 1"))
            next(i for i in store.table.indexes if i.name == hnsw).create(connection)
            connection.execute(text(f'ANALYZE "{store.table.name}"'))
        index_s = time.perf_counter() - started
        assert store.count() == size
        writes = time_writes(store, users, 200)
        recalls = time_recalls(store, users, queries, seed=1)
        probe = vectors.draw(1)[0].tolist()
        with engine.connect() as connection:
            plan = connection.execute(
                text(
                    f'EXPLAIN SELECT id FROM "{store.table.name}" WHERE user_id = :u '
                    "ORDER BY embedding <=> CAST(:v AS vector) LIMIT 4"
                ),
                {"u": "user-1", "v": str(probe)},
            ).scalars()
            plan_text = re.sub(r"'\[[^']*\]'", "'[…]'", " / ".join(line.strip() for line in plan))
            size_mb = connection.execute(
                text(f"SELECT pg_total_relation_size('\"{store.table.name}\"') / 1048576.0")
            ).scalar()
        return {
            "load_s": round(load_s, 2),
            "load_per_s": round(size / load_s),
            "index_s": round(index_s, 2),
            "write_p50_ms": pct(writes, 50),
            "write_p95_ms": pct(writes, 95),
            "writes_per_s": round(1000 / statistics.mean(writes)),
            "recall_p50_ms": pct(recalls, 50),
            "recall_p95_ms": pct(recalls, 95),
            "table_mb": round(float(size_mb or 0)),
            "plan": plan_text,
        }
    finally:
        engine.dispose()
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def bench_qdrant(size: int, users: int, queries: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as folder:
        vectors = Vectors(seed=size)
        store = MemoryStore(QdrantClient(path=folder), vectors)
        started = time.perf_counter()
        for user, count in enumerate(per_user(size, users)):
            for j in range(0, count, 100):
                items = [Item(f"memory {k} of user {user}") for k in range(j, min(j + 100, count))]
                store.remember(f"user-{user}", items, session_id="bench")
        load_s = time.perf_counter() - started
        writes = time_writes(store, users, 200)
        recalls = time_recalls(store, users, queries, seed=1)
        store.close()
    return {
        "load_s": round(load_s, 2),
        "load_per_s": round(size / load_s),
        "write_p50_ms": pct(writes, 50),
        "write_p95_ms": pct(writes, 95),
        "writes_per_s": round(1000 / statistics.mean(writes)),
        "recall_p50_ms": pct(recalls, 50),
        "recall_p95_ms": pct(recalls, 95),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000:100,1000000:10000")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--backends", default="pgvector,qdrant")
    args = parser.parse_args()
    result: dict[str, object] = {"load_1m": os.getloadavg()[0], "sizes": {}}
    for spec in args.sizes.split(","):
        size, users = (int(part) for part in spec.split(":"))
        found: dict[str, object] = {}
        for backend in args.backends.split(","):
            run = bench_pgvector if backend == "pgvector" else bench_qdrant
            found[backend] = run(size, users, args.queries)
            print(
                json.dumps({"size": size, "users": users, backend: found[backend]}), file=sys.stderr
            )
        result["sizes"][f"{size}:{users}"] = found  # type: ignore[index]
    result["load_1m_after"] = os.getloadavg()[0]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
