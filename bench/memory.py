"""Long-term memory: recall and write latency of the embedded store, and the local embedder.

Prints one JSON object. The store is measured with precomputed random unit vectors, so the
numbers are the store's alone: recall of one user's memories (k=4, one query) at 1k and 10k
memories across 100 users, in embedded mode on disk (`recall_p50_ms`, `recall_p95_ms` at 10k,
`recall_1k_*` at 1k), and writes (`write_ms_per_memory`: remember() calls of --batch memories;
`single_write_*`: one memory per call; `new_user_first_write_ms`: a user's first memory, which
creates their collection). For comparison, `shared_layout_recall_*` is the same recall on one
collection with a user_id filter, the server layout, in local mode. The local embedder is
measured separately: `embedder_startup_s` (imports and model load) and
`embedder_sentences_per_s` (batches of 32 support messages of 20 to 50 tokens).

    python bench/memory.py [--users N] [--queries N] [--batch N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qdrant_client import QdrantClient

from agent.context import TurnContext
from agent.memory import MemoryStore

DIM = 384


@dataclass(frozen=True)
class Item:
    text: str
    kind: str = "fact"


class PrecomputedEmbedder:
    """Returns a random unit vector per text, drawn once: the bench times the store only."""

    model = "bench-random"
    provider = "bench"
    dim = DIM

    def __init__(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)
        self._vectors: dict[str, list[float]] = {}

    def prepare(self, texts: Sequence[str]) -> None:
        raw = self._rng.standard_normal((len(texts), DIM)).astype(np.float32)
        raw /= np.linalg.norm(raw, axis=1, keepdims=True)
        self._vectors.update(zip(texts, raw.tolist(), strict=True))

    def embed(self, texts: Sequence[str], *, ref: TurnContext | None = None) -> list[list[float]]:
        return [self._vectors[text] for text in texts]


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def fill(
    store: MemoryStore,
    embedder: PrecomputedEmbedder,
    *,
    users: int,
    start: int,
    end: int,
    batch: int,
) -> float:
    """Memories start..end-1, spread evenly over the users; returns ms per memory."""
    texts = [f"memory {i} of user {i % users}" for i in range(start, end)]
    embedder.prepare(texts)
    per_user: dict[int, list[Item]] = {}
    for i, text in zip(range(start, end), texts, strict=True):
        per_user.setdefault(i % users, []).append(Item(text))
    started = time.perf_counter()
    for user, items in per_user.items():
        for j in range(0, len(items), batch):
            store.remember(f"user-{user}", items[j : j + batch], session_id="bench")
    return (time.perf_counter() - started) * 1000 / (end - start)


def time_recalls(
    store: MemoryStore, embedder: PrecomputedEmbedder, *, users: int, queries: int, seed: int
) -> list[float]:
    rng = np.random.default_rng(seed)
    texts = [f"query {seed}-{i}" for i in range(queries)]
    embedder.prepare(texts)
    timings = []
    for text in texts:
        user = f"user-{rng.integers(users)}"
        started = time.perf_counter()
        hits = store.recall(user, [text], k=4, threshold=0.0)
        timings.append((time.perf_counter() - started) * 1000)
        assert len(hits[0]) == 4 and all(m.user_id == user for m in hits[0])
    return timings


def bench_embedder(sentences: int) -> dict[str, float]:
    started = time.perf_counter()
    from agent.embedders import LocalEmbedder

    embedder = LocalEmbedder()
    startup = time.perf_counter() - started
    texts = [
        f"Customer {i}: my order A-{1000 + i} "
        + "arrived damaged and I would like a replacement or a refund " * (1 + i % 3)
        for i in range(sentences)
    ]
    embedder.embed(texts[:32])  # warm-up
    started = time.perf_counter()
    embedder.embed(texts)
    rate = sentences / (time.perf_counter() - started)
    single = []
    for text in texts[:100]:
        started = time.perf_counter()
        embedder.embed([text])
        single.append((time.perf_counter() - started) * 1000)
    return {
        "embedder_startup_s": round(startup, 3),
        "embedder_sentences_per_s": round(rate),
        "embedder_single_p50_ms": round(statistics.median(single), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--queries", type=int, default=500, help="recalls timed per size")
    parser.add_argument("--batch", type=int, default=5, help="memories per remember() call")
    parser.add_argument("--singles", type=int, default=200, help="one-memory writes timed")
    parser.add_argument("--sentences", type=int, default=512, help="for the embedder rate")
    args = parser.parse_args()
    # The machine may be shared: the load says how much the numbers can be trusted.
    result: dict[str, object] = {
        "layout": "per_user",
        "users": args.users,
        "load_1m": os.getloadavg()[0],
    }

    with tempfile.TemporaryDirectory(prefix="bench-memory-") as folder:
        embedder = PrecomputedEmbedder(seed=1)
        store = MemoryStore(QdrantClient(path=folder), embedder)
        write_1k = fill(store, embedder, users=args.users, start=0, end=1_000, batch=args.batch)
        recall_1k = time_recalls(store, embedder, users=args.users, queries=args.queries, seed=2)
        write_10k = fill(
            store, embedder, users=args.users, start=1_000, end=10_000, batch=args.batch
        )
        recall_10k = time_recalls(store, embedder, users=args.users, queries=args.queries, seed=3)
        assert store.count() == 10_000

        texts = [f"single write {i}" for i in range(args.singles + 20)]
        embedder.prepare(texts)
        singles = []
        for i, text in enumerate(texts[: args.singles]):
            started = time.perf_counter()
            store.remember(f"user-{i % args.users}", [Item(text)], session_id="bench")
            singles.append((time.perf_counter() - started) * 1000)
        firsts = []
        for i, text in enumerate(texts[args.singles :]):
            started = time.perf_counter()
            store.remember(f"new-user-{i}", [Item(text)], session_id="bench")
            firsts.append((time.perf_counter() - started) * 1000)
        store.close()
        started = time.perf_counter()
        QdrantClient(path=folder).close()
        reopen_s = time.perf_counter() - started

    shared_embedder = PrecomputedEmbedder(seed=1)
    shared = MemoryStore(QdrantClient(":memory:"), shared_embedder, layout="shared")
    fill(shared, shared_embedder, users=args.users, start=0, end=10_000, batch=100)
    shared_recall = time_recalls(shared, shared_embedder, users=args.users, queries=20, seed=4)

    result.update(
        {
            "recall_p50_ms": round(percentile(recall_10k, 50), 3),
            "recall_p95_ms": round(percentile(recall_10k, 95), 3),
            "recall_1k_p50_ms": round(percentile(recall_1k, 50), 3),
            "recall_1k_p95_ms": round(percentile(recall_1k, 95), 3),
            "write_ms_per_memory": round((write_1k * 1_000 + write_10k * 9_000) / 10_000, 3),
            "write_batch": args.batch,
            "single_write_p50_ms": round(percentile(singles, 50), 3),
            "single_write_p95_ms": round(percentile(singles, 95), 3),
            "new_user_first_write_ms": round(statistics.median(firsts), 3),
            "reopen_10k_s": round(reopen_s, 3),
            "shared_layout_recall_p50_ms": round(statistics.median(shared_recall), 1),
            "recalls_timed": args.queries,
        }
    )
    result.update(bench_embedder(args.sentences))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
