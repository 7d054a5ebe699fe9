"""Long-term memory on the real local embedder, on both backends: qdrant-client's local mode,
embedded on disk (one collection per user) and in memory with the server's layout (one shared
collection), and pgvector in the test run's Postgres (MEMORY_BACKEND=pgvector)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from qdrant_client import QdrantClient, models
from sqlalchemy import event, text

from agent.context import TurnContext
from agent.embedders import LocalEmbedder, OpenAIEmbedder
from agent.embeddings import CachedEmbedder, LRUVectorCache
from agent.memory import MemoryStore, make_memory_store
from agent.memory_pgvector import PgVectorStore
from agent.memory_records import MemoryUnavailable, memory_id, similarity
from data.config.settings import load_settings
from data.store.db import dispose_shared, make_engine
from data.store.records import CallRecord
from data.workers.status import check_all
from tests.helpers.db import PG_ADMIN_URL, fresh_postgres
from tests.helpers.embedders import Counting
from tests.helpers.servers import ROOT, free_port

# In local mode a payload index is only recorded; that is expected for the shared layout here.
pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning")

THRESHOLD = 0.7  # the settings' default (the seed allows 0.6 to 0.8)


@dataclass(frozen=True)
class Item:
    text: str
    kind: str = "fact"


class CountingClient(QdrantClient):
    """A real local-mode client that counts the search requests sent to it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.searches: list[str] = []

    def query_batch_points(self, *args: Any, **kwargs: Any) -> Any:
        self.searches.append("query_batch_points")
        return super().query_batch_points(*args, **kwargs)

    def query_points(self, *args: Any, **kwargs: Any) -> Any:
        self.searches.append("query_points")
        return super().query_points(*args, **kwargs)


@pytest.fixture(scope="session")
def local_embedder() -> LocalEmbedder:
    return LocalEmbedder()


@pytest.fixture
def embedder(local_embedder: LocalEmbedder) -> Counting:
    return Counting(local_embedder)


@pytest.fixture(params=["per_user", "shared", pytest.param("pgvector", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, embedder: Counting, tmp_path: Path) -> Iterator[Any]:
    """Embedded on disk with its own layout, the server's layout in memory, and pgvector (its
    table dropped after each test)."""
    if request.param == "pgvector":
        engine = make_engine(request.getfixturevalue("postgres_server_url"))
        vectors = PgVectorStore(engine, embedder)
        yield vectors
        with engine.begin() as connection:
            vectors.table.drop(connection, checkfirst=True)
        engine.dispose()
        return
    if request.param == "per_user":
        client = CountingClient(path=str(tmp_path / "qdrant"))
    else:
        client = CountingClient(":memory:")
    store = MemoryStore(client, embedder, layout=request.param)
    yield store
    store.close()


ORDER = Item("Order A-1234 arrived damaged", "problem")
EMAIL = Item("My email is bob@example.com", "email")


def test_recall_finds_a_paraphrase_and_not_unrelated_text(store: Any) -> None:
    assert store.remember("alice", [ORDER, EMAIL], session_id="s1") == 2
    broken, weather = store.recall(
        "alice", ["my package was broken", "what is the weather today"], k=4, threshold=THRESHOLD
    )
    assert [m.text for m in broken] == [ORDER.text]
    (hit,) = broken
    assert (hit.kind, hit.user_id, hit.session_id) == ("problem", "alice", "s1")
    assert hit.id == memory_id("alice", ORDER.text)
    assert hit.created_at.tzinfo is not None
    assert weather == []
    # The score is (1 + cosine) / 2 of the two texts' vectors, computed here independently.
    query, stored = np.array(store.embedder.embed(["my package was broken", ORDER.text]))
    assert hit.score == pytest.approx(similarity(float(query @ stored)), abs=1e-4)
    assert hit.score >= THRESHOLD


def test_a_user_never_recalls_another_users_memories(store: Any) -> None:
    query = "order A-1234 damaged"
    store.remember("alice", [ORDER], session_id="s1")
    store.remember("bob", [Item(query)], session_id="s2")  # a perfect match, but Bob's
    (alice,) = store.recall("alice", [query], k=1, threshold=0.5)
    (bob,) = store.recall("bob", [query], k=5, threshold=0.5)
    assert [(m.user_id, m.text) for m in alice] == [("alice", ORDER.text)]
    assert [(m.user_id, m.text) for m in bob] == [("bob", query)]
    assert bob[0].score == pytest.approx(1.0, abs=1e-5)
    assert store.recall("carol", [query], k=5, threshold=0.0) == [[]]


def test_k_and_threshold(store: Any) -> None:
    facts = [
        "Order A-1234 arrived damaged",
        "Order A-1234 was a blue kettle",
        "We will refund order A-1234 within 5 days",
        "The customer's name is Bob Smith",
        "The customer cannot log in to the app",
    ]
    store.remember("alice", [Item(text) for text in facts], session_id="s1")
    (every,) = store.recall("alice", ["order A-1234"], k=5, threshold=0.0)
    assert len(every) == 5
    scores = [m.score for m in every]
    assert scores == sorted(scores, reverse=True)
    (two,) = store.recall("alice", ["order A-1234"], k=2, threshold=0.0)
    assert two == every[:2]
    cut = (scores[1] + scores[2]) / 2
    (strict,) = store.recall("alice", ["order A-1234"], k=5, threshold=cut)
    assert strict == every[:2]
    assert all(m.score >= cut for m in strict)


def test_remember_is_idempotent(store: Any, embedder: Counting) -> None:
    assert store.remember("alice", [ORDER, ORDER], session_id="s1") == 1
    assert len(embedder.calls) == 1
    same = Item("  order a-1234   ARRIVED damaged ", "problem")
    assert store.remember("alice", [same], session_id="s2") == 0
    assert len(embedder.calls) == 1, "a known fact is not embedded again"
    assert store.remember("alice", [same, EMAIL], session_id="s2") == 1
    assert embedder.calls[-1] == [EMAIL.text]
    assert store.count("alice") == 2
    assert store.remember("bob", [ORDER], session_id="s3") == 1, "the same text, another user"
    assert store.count() == 3


def test_recall_embeds_once_and_searches_once(store: Any, embedder: Counting) -> None:
    store.remember("alice", [ORDER, EMAIL], session_id="s1")
    embedder.calls.clear()
    queries = ["my package was broken", "order number A-1234", "what's my email?"]
    if isinstance(store, PgVectorStore):
        statements: list[str] = []

        def seen(*args: Any) -> None:
            statements.append(args[2])

        event.listen(store.engine, "before_cursor_execute", seen)
        hits = store.recall("alice", queries, k=3, threshold=THRESHOLD)
        event.remove(store.engine, "before_cursor_execute", seen)
        # One statement ranks every query (the other asks whether Alice has memories).
        assert [s.count("<=>") > 0 for s in statements] == [False, True]
    else:
        client = store.client
        assert isinstance(client, CountingClient)
        client.searches.clear()
        hits = store.recall("alice", queries, k=3, threshold=THRESHOLD)
        assert client.searches == ["query_batch_points"]
    assert embedder.calls == [queries]
    assert [m.text for m in hits[1]][:1] == [ORDER.text]
    assert [m.text for m in hits[2]][:1] == [EMAIL.text]
    assert store.recall("alice", [], k=3, threshold=THRESHOLD) == []


def test_forget_user_and_count(store: Any) -> None:
    store.remember("alice", [ORDER, EMAIL], session_id="s1")
    store.remember("bob", [ORDER], session_id="s2")
    assert (store.count("alice"), store.count("bob"), store.count()) == (2, 1, 3)
    assert store.forget_user("alice") == 2
    assert store.forget_user("alice") == 0
    assert (store.count("alice"), store.count()) == (0, 1)
    assert store.recall("alice", ["order A-1234"], k=3, threshold=0.0) == [[]]
    assert store.remember("alice", [ORDER], session_id="s3") == 1


def test_bad_input_is_a_value_error(store: Any) -> None:
    for user in ["", "   "]:
        with pytest.raises(ValueError, match="user_id"):
            store.remember(user, [ORDER], session_id="s1")
        with pytest.raises(ValueError, match="user_id"):
            store.recall(user, ["hi"])
    with pytest.raises(ValueError, match="text"):
        store.remember("alice", [ORDER, Item("  ")], session_id="s1")
    with pytest.raises(ValueError, match="kind"):
        store.remember("alice", [Item("fine", "")], session_id="s1")
    with pytest.raises(ValueError, match="query"):
        store.recall("alice", ["fine", ""])
    assert store.count() == 0, "nothing of a bad batch is stored"


def test_recall_records_one_embedding_call(local_embedder: LocalEmbedder, tmp_path: Path) -> None:
    records: list[CallRecord] = []
    embedder = CachedEmbedder(LocalEmbedder(sink=records.append), LRUVectorCache())
    store = MemoryStore(QdrantClient(path=str(tmp_path / "q")), embedder)
    ref = TurnContext(user_id="alice", session_id="s1", turn=2)
    store.remember("alice", [ORDER, EMAIL], session_id="s1", ref=ref)
    store.recall("alice", ["my package was broken", "my email"], ref=ref)
    store.recall("alice", ["my package was broken"], ref=ref)  # cached: no call
    assert [(r.purpose, r.user_id, r.turn) for r in records] == [("embedding", "alice", 2)] * 2
    store.close()


def test_writes_are_on_disk_when_remember_returns(embedder: Counting, tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data")
    store = make_memory_store(settings, embedder)
    assert (store.layout, store.top_k, store.threshold) == ("per_user", 4, 0.7)
    store.remember("alice", [ORDER, EMAIL], session_id="s1")
    # Read the committed rows with a separate SQLite connection while the store is open.
    (storage,) = (tmp_path / "data" / "qdrant").glob("collection/*/storage.sqlite")
    with sqlite3.connect(storage) as connection:
        assert connection.execute("SELECT count(*) FROM points").fetchone() == (2,)
        # Write-ahead logging, as MemoryStore._fast_writes sets it (1.3 -> 0.09 ms a point).
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)

    with pytest.raises(MemoryUnavailable, match="Qdrant embedded storage"):
        make_memory_store(settings, embedder)  # the folder is locked by the open store
    store.close()
    reopened = make_memory_store(settings, embedder)
    (hits,) = reopened.recall("alice", ["my package was broken"])
    assert [m.text for m in hits] == [ORDER.text]
    # A collection loaded from disk gets the same setting on its own connection.
    (name,) = reopened.client._client.collections  # type: ignore[attr-defined]
    connection = reopened.client._client.collections[name].storage.storage  # type: ignore[attr-defined]
    assert connection.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
    reopened.close()


@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
def test_threads_take_turns_on_the_embedded_store(embedder: Counting, tmp_path: Path) -> None:
    """The app's chat threads and the memory writer share one embedded store."""
    store = make_memory_store(load_settings(data_dir=tmp_path), embedder)
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(15):
                user = f"user-{i % 3}"
                store.remember(user, [Item(f"fact {i} from worker {worker}")], session_id="s")
                store.recall(user, [f"fact {i}"], k=2, threshold=0.0)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.count() == 60 and store.count("user-0") == 20
    store.close()


class HeldDiskClient(QdrantClient):
    """A real local-mode client whose writes wait, once `hold` is cleared, until it is set
    again (a slow disk under a commit, without a clock); `writing` is set while one waits."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hold = threading.Event()
        self.hold.set()
        self.writing = threading.Event()

    def upsert(self, *args: Any, **kwargs: Any) -> Any:
        if not self.hold.is_set():
            self.writing.set()
            self.hold.wait(timeout=30)
        return super().upsert(*args, **kwargs)


def test_one_users_write_does_not_hold_up_another_users_recall(
    embedder: Counting, tmp_path: Path
) -> None:
    """Embedded, each user's collection has its own lock: a recall waits only for writes to
    its own user's memories (read-your-writes), never for everyone's. Checked by holding
    alice's write on the disk, not by timing it."""
    client = HeldDiskClient(path=str(tmp_path / "qdrant"))
    store = MemoryStore(client, embedder)
    store.remember("alice", [ORDER], session_id="s")
    store.remember("bob", [EMAIL], session_id="s")
    store.recall("bob", ["email"], threshold=0.0)  # embedded once, so the next one is a hit
    client.hold.clear()
    writer = threading.Thread(
        target=store.remember,
        args=("alice", [Item("Alice moved to Oslo")]),
        kwargs={"session_id": "s"},
    )
    writer.start()
    assert client.writing.wait(timeout=10), "alice's write reached the disk"
    found: list[Any] = []
    bob = threading.Thread(
        target=lambda: found.append(store.recall("bob", ["email"], threshold=0.0))
    )
    bob.start()
    bob.join(timeout=10)
    assert not bob.is_alive() and writer.is_alive(), "bob's recall ended while alice's write held"
    assert [m.text for m in found[0][0]] == [EMAIL.text]
    own: list[Any] = []
    alice = threading.Thread(
        target=lambda: own.append(store.recall("alice", ["where does Alice live"], threshold=0.0))
    )
    alice.start()
    alice.join(timeout=0.5)
    assert alice.is_alive(), "alice's own recall waits for her write"
    client.hold.set()
    writer.join(timeout=10)
    alice.join(timeout=10)
    assert "Alice moved to Oslo" in [m.text for m in own[0][0]], "and then sees it"
    store.close()


@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
def test_qdrant_down_is_memory_unavailable(embedder: Counting, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    settings = load_settings(data_dir=tmp_path, qdrant_url=url, qdrant_api_key="qd-secret-key")
    store = make_memory_store(settings, embedder)
    assert store.layout == "shared"
    started = time.perf_counter()
    for call in (
        lambda: store.recall("alice", ["my package was broken"]),
        lambda: store.remember("alice", [ORDER], session_id="s1"),
        lambda: store.count(),
    ):
        with pytest.raises(MemoryUnavailable) as raised:
            call()
        message = str(raised.value)
        assert "Qdrant" in message and url in message and "qd-secret-key" not in message
    assert time.perf_counter() - started < 3
    assert embedder.calls == [], "nothing is embedded for a store that cannot answer"


def test_embeddings_down_is_memory_unavailable(tmp_path: Path) -> None:
    down = OpenAIEmbedder(
        api_key="sk-x", base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=0
    )
    store = MemoryStore(QdrantClient(path=str(tmp_path / "q")), down)
    with pytest.raises(MemoryUnavailable, match="embeddings"):
        store.remember("alice", [ORDER], session_id="s1")
    store.close()


@dataclass(frozen=True)
class Keyed:
    text: str
    kind: str
    keys: tuple[str, ...]


def _by_filter(store: Any, user_id: str, key: str) -> set[str]:
    """What Qdrant's own payload filter (or plain SQL) finds for `key` (the reference for the
    key index)."""
    if isinstance(store, PgVectorStore):
        with store.engine.connect() as connection:
            found = connection.execute(
                text(f"SELECT text FROM {store.table.name} WHERE user_id = :u AND :k = ANY(keys)"),
                {"u": user_id, "k": key},
            ).scalars()
            return set(found)
    must = [models.FieldCondition(key="keys", match=models.MatchAny(any=[key]))]
    must += [models.FieldCondition(key="user_id", match=models.MatchValue(value=user_id))]
    points, _ = store.client.scroll(
        store._collection(user_id), scroll_filter=models.Filter(must=must), limit=1_000
    )
    return {str(p.payload["text"]) for p in points if p.payload}


def test_recall_by_key_matches_qdrants_filter_through_writes_and_forgetting(
    store: Any,
) -> None:
    """Embedded, identifiers are looked up in the store's key index, not by a payload filter
    over every point: it must find what the filter finds, also after later writes (the index
    is built on first use) and after a user is forgotten, and never another user's."""
    store.remember("alice", [Keyed("Order A-1 is late", "order_number", ("A-1",))], session_id="s")
    store.remember("bob", [Keyed("Bob's A-1 note", "order_number", ("A-1",))], session_id="s")
    first = store.recall("alice", [], keys=["A-1", "A-2"], k=5)
    assert [{m.text for m in hits} for hits in first] == [{"Order A-1 is late"}, set()]
    store.remember(
        "alice",
        [
            Keyed("A-1 arrived broken", "problem", ("A-1",)),
            Keyed("A-2 and A-1 in one box", "problem", ("A-1", "A-2")),
        ],
        session_id="s",
    )
    for key in ("A-1", "A-2", "A-3"):
        (hits,) = store.recall("alice", [], keys=[key], k=5)
        assert {m.text for m in hits} == _by_filter(store, "alice", key), key
        assert all(m.score == 1.0 and m.user_id == "alice" for m in hits)
    (two,) = store.recall("alice", [], keys=["A-1"], k=2)
    assert len(two) == 2, "k limits each key"
    assert {m.text for m in store.recall("bob", [], keys=["A-1"], k=5)[0]} == {"Bob's A-1 note"}
    store.forget_user("alice")
    assert store.recall("alice", [], keys=["A-1"], k=5) in ([], [[]])
    store.remember("alice", [Keyed("New A-1 fact", "order_number", ("A-1",))], session_id="t")
    assert [m.text for m in store.recall("alice", [], keys=["A-1"], k=5)[0]] == ["New A-1 fact"]


@pytest.mark.postgres
def test_pgvector_that_cannot_be_used_is_named_in_one_line(
    embedder: Counting, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A role that may not create the extension (pgvector is not a trusted extension), and a
    server without pgvector's files: the store, the migrate command and the Status check say
    so in one line; once a superuser creates it, all three work."""
    role = f"acb_plain_{uuid.uuid4().hex[:8]}"
    with fresh_postgres("acb_vec", migrate=False) as admin_url:
        database = admin_url.rsplit("/", 1)[1]
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE ROLE "{role}" LOGIN')
            conn.execute(f'ALTER DATABASE "{database}" OWNER TO "{role}"')
        try:
            url = f"postgresql://{role}@127.0.0.1:5432/{database}"
            settings = load_settings(
                data_dir=tmp_path, memory_backend="pgvector", database_url=url, metrics_port=0
            )
            where = f"Postgres (127.0.0.1:5432/{database})"
            with pytest.raises(MemoryUnavailable) as caught:
                make_memory_store(settings, embedder)
            message = str(caught.value)
            assert message.startswith(f"cannot create the pgvector extension in {where}: ")
            assert "permission denied" in message and "\n" not in message
            for key, value in {"MEMORY_BACKEND": "pgvector", "DATABASE_URL": url}.items():
                monkeypatch.setenv(key, value)
            migrate = subprocess.run(
                [sys.executable, "-m", "data.store.migrate"],
                capture_output=True,
                text=True,
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                timeout=120,
            )
            assert migrate.returncode == 2, migrate.stderr
            assert migrate.stderr.startswith("error: cannot create the pgvector extension in ")
            assert len(migrate.stderr.strip().splitlines()) == 1, migrate.stderr
            check = check_all(settings, timeout_s=10, names=("memory",))["memory"]
            assert check.ok is False and check.label == "pgvector (long-term memory)"
            assert check.error is not None and "not created" in check.error
            # A server without pgvector's files at all.
            monkeypatch.setattr("data.store.pgvector.available", lambda connection: False)
            with pytest.raises(MemoryUnavailable, match="is not installed in Postgres"):
                make_memory_store(settings, embedder)
            monkeypatch.undo()
            # A superuser creates it once; then everything works for the plain role.
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute("CREATE EXTENSION vector")
            store = make_memory_store(settings, embedder)
            assert isinstance(store, PgVectorStore)
            assert store.remember("alice", [ORDER], session_id="s1") == 1
            assert store.ping().startswith("0.")
            check = check_all(settings, timeout_s=10, names=("memory",))["memory"]
            assert check.ok and check.version == f"pgvector {store.ping()}"
        finally:
            dispose_shared()
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f'DROP OWNED BY "{role}" CASCADE')
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'ALTER DATABASE "{database}" OWNER TO postgres')
                conn.execute(f'DROP ROLE "{role}"')
