"""Per-user long-term memory on Qdrant: remember facts, recall them by meaning.

The same `MemoryStore` runs on qdrant-client's embedded local mode (the default, under
`DATA_DIR/qdrant`) and on a Qdrant server (`QDRANT_URL`, `QDRANT_API_KEY`). Only the layout of
the points differs, because the two engines have opposite costs:

- Embedded ("per_user"): one collection per user. Local mode is brute force in Python, and a
  payload filter is checked point by point in a Python loop: a `user_id` filter over 10k points
  took about 200 ms, while the same query over one user's own collection of 100 points takes
  under 1 ms. Isolation is then structural (another user's points are not in the collection).
  Local mode is not thread-safe, so the store serialises the calls on each collection with
  that collection's lock, and whatever changes the set of collections with one more lock.
  The collections of two users share no state in local mode, so one user's write (a SQLite
  commit per point) does not hold up another user's recall.
- Server ("shared"): one collection with a keyword payload index on `user_id` marked
  `is_tenant`, the layout Qdrant recommends for many tenants (a collection per user does not
  scale on a server); every request carries the `user_id` filter.

In both layouts a hit is also checked against the `user_id` in its payload, so a recall never
returns another user's memory. Collection names carry the embedding model, so switching models
starts a fresh memory instead of mixing vector spaces.

Scores and thresholds are on a 0-to-1 scale, `(1 + cosine) / 2`: see `similarity` for why.

Durability: `remember` returns after Qdrant has stored the points. In embedded mode each point
is committed to SQLite (one commit per point, which is what a write costs: about 1 ms here); on
a server the upsert waits for the write to be applied (`wait=True`).

Errors: an empty user id or text raises ValueError; an unreachable or failing Qdrant, or a
failing embedding provider, raises `MemoryUnavailable`, whose message names the service and its
URL (never a key), so that the agent can say memory is unavailable and go on."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse
from sqlalchemy import Engine

from agent.context import TurnContext
from agent.embedding_base import Embedder
from agent.memory_pgvector import PgVectorStore
from agent.memory_records import (
    Memory,
    MemoryItem,
    MemoryUnavailable,
    _memory,
    _slug,
    _user,
    check_recall,
    embed_or_unavailable,
    fresh_items,
    similarity,
)
from data.config.settings import Settings
from data.store.db import shared_engine

log = logging.getLogger(__name__)

Layout = Literal["per_user", "shared"]

_TRANSPORT_ERRORS = (
    ResponseHandlingException,
    UnexpectedResponse,
    httpx.HTTPError,
    ConnectionError,
    TimeoutError,
)


class MemoryStore:
    """Long-term memories of each user, on `client`, embedded with `embedder`.

    `layout` defaults to "per_user" for an embedded client and "shared" for a server (see the
    module docstring); `top_k` and `threshold` are the defaults of `recall`. `url` is what error
    messages name (the server URL, or the embedded storage path)."""

    def __init__(
        self,
        client: QdrantClient,
        embedder: Embedder,
        *,
        layout: Layout | None = None,
        top_k: int = 4,
        threshold: float = 0.7,
        url: str | None = None,
    ) -> None:
        options = client.init_options
        embedded = bool(options.get("path")) or options.get("location") == ":memory:"
        self.client = client
        self.embedder = embedder
        self.layout: Layout = layout or ("per_user" if embedded else "shared")
        self.top_k = top_k
        self.threshold = threshold
        self.url = url or str(options.get("url") or options.get("path") or ":memory:")
        self.prefix = f"memories_{_slug(embedder.model)}"
        self._embedded = embedded
        # Embedded: `_lock` guards the set of collections, `_locks` each collection's points.
        self._lock: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if embedded else contextlib.nullcontext()
        )
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._known: set[str] = set()
        # Embedded: each collection's identifier keys -> [(created_at, user_id, point id)], built
        # on first use (see `_by_keys`).
        self._key_index: dict[str, dict[str, list[tuple[str, str, str]]]] = {}

    # Layout ---------------------------------------------------------------------------------

    def _collection(self, user_id: str) -> str:
        if self.layout == "shared":
            return self.prefix
        return f"{self.prefix}__{hashlib.sha256(user_id.encode()).hexdigest()[:32]}"

    def _scope(self, user_id: str | None) -> models.Filter | None:
        """The filter that limits a request to one user: none is needed in a user's own
        collection (or to count everyone)."""
        if self.layout == "per_user" or user_id is None:
            return None
        return _user_filter(user_id)

    def _exists(self, name: str) -> bool:
        if name not in self._known and self.client.collection_exists(name):
            self._fast_writes(name)
            self._known.add(name)
        return name in self._known

    def _fast_writes(self, name: str) -> None:
        """Embedded Qdrant keeps each collection's points in a SQLite file of its own and
        commits every point with SQLite's default rollback journal and full fsync: 1.3 ms a
        point here, on the thread that writes a turn's facts while the next turn runs (a
        third of that thread's time in bench/turn_overhead.py). Write-ahead logging with
        synchronous=NORMAL, what the app's own SQLite database uses, takes 0.09 ms; a power
        cut may lose the last writes, never the file. qdrant-client has no option for it, so
        this reaches its collection's connection; if that ever moves, writes stay as they
        were and the log says so (tests/test_memory.py checks the mode)."""
        if not self._embedded or self.client.init_options.get("location") == ":memory:":
            return
        try:
            storage = self.client._client.collections[name].storage  # type: ignore[attr-defined]
            connection = getattr(storage, "storage", None)
            if not isinstance(connection, sqlite3.Connection):
                raise TypeError(f"unexpected storage {type(storage).__name__}")
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
        except (AttributeError, KeyError, TypeError, sqlite3.Error) as error:
            log.warning("embedded Qdrant storage keeps its slow commits: %s", error)

    def _ensure(self, name: str) -> None:
        if self._exists(name):
            return
        try:
            with self._lock:
                self.client.create_collection(
                    name,
                    vectors_config=models.VectorParams(
                        size=self.embedder.dim, distance=models.Distance.COSINE
                    ),
                )
        except UnexpectedResponse as error:
            if error.status_code != 409:  # 409: another replica or thread created it first
                raise
        with self._lock:
            self._fast_writes(name)
        if self.layout == "shared":
            self.client.create_payload_index(
                name,
                "user_id",
                field_schema=models.KeywordIndexParams(
                    type=models.KeywordIndexType.KEYWORD, is_tenant=True
                ),
            )
            self.client.create_payload_index(
                name, "keys", field_schema=models.PayloadSchemaType.KEYWORD
            )
        self._known.add(name)

    def _lock_of(self, name: str | None) -> contextlib.AbstractContextManager[Any]:
        if not self._embedded:
            return contextlib.nullcontext()
        if name is None:
            return self._lock
        with self._locks_guard:
            lock = self._locks.get(name)
            if lock is None:
                lock = self._locks[name] = threading.Lock()
            return lock

    @contextlib.contextmanager
    def _qdrant(self, name: str | None = None) -> Iterator[None]:
        """Around every Qdrant call: in embedded mode the lock of collection `name` (or, with
        no name, the lock of the set of collections), and MemoryUnavailable for a server that
        cannot be reached or fails. Embedding happens outside, so a slow embeddings API never
        holds a lock. Order: a collection's lock, then the set's, never the other way."""
        try:
            with self._lock_of(name):
                yield
        except _TRANSPORT_ERRORS as error:
            raise MemoryUnavailable(
                f"Qdrant at {self.url} is unavailable: {type(error).__name__}: {error}"
            ) from None

    def _embed(self, texts: list[str], ref: TurnContext | None) -> list[list[float]]:
        return embed_or_unavailable(self.embedder, texts, ref)

    # API ------------------------------------------------------------------------------------

    def remember(
        self,
        user_id: str,
        items: Iterable[MemoryItem],
        *,
        session_id: str,
        ref: TurnContext | None = None,
    ) -> int:
        """Store `items` for `user_id`; returns how many were new.

        A text the user already has (after `normalise`) is skipped before it is embedded, so
        remembering the same fact again costs one lookup and stores nothing. All new items are
        embedded in one call and written in one upsert."""
        user_id = _user(user_id)
        fresh = fresh_items(user_id, items)
        if not fresh:
            return 0
        name = self._collection(user_id)
        with self._qdrant(name):
            if self._exists(name):
                stored = self.client.retrieve(
                    name, ids=list(fresh), with_payload=False, with_vectors=False
                )
                for point in stored:
                    fresh.pop(str(point.id), None)
        if not fresh:
            return 0
        # An item may name the text to embed (`embed_text`): a fact is embedded as the
        # sentence it came from, which the recall of that same message has usually just
        # embedded, so the embedding cache answers and storing the fact costs no model run.
        texts = [getattr(item, "embed_text", None) or item.text for item in fresh.values()]
        vectors = self._embed(list(dict.fromkeys(texts)), ref)
        by_text = dict(zip(dict.fromkeys(texts), vectors, strict=True))
        vectors = [by_text[text] for text in texts]
        now = datetime.now(UTC).isoformat()
        points = [
            models.PointStruct(
                id=point_id,
                vector=vector,
                payload={
                    "user_id": user_id,
                    "session_id": session_id,
                    "text": item.text,
                    "kind": item.kind,
                    "keys": [str(key) for key in getattr(item, "keys", ())],
                    "created_at": now,
                },
            )
            for (point_id, item), vector in zip(fresh.items(), vectors, strict=True)
        ]
        with self._qdrant(name):
            self._ensure(name)
            self.client.upsert(name, points=points, wait=True)
            index = self._key_index.get(name)
            if index is not None:
                for struct in points:
                    for key in (struct.payload or {})["keys"]:
                        index.setdefault(key, []).append((now, user_id, str(struct.id)))
        return len(fresh)

    def recall(
        self,
        user_id: str,
        queries: Sequence[str],
        *,
        keys: Sequence[str] = (),
        k: int | None = None,
        threshold: float | None = None,
        ref: TurnContext | None = None,
    ) -> list[list[Memory]]:
        """For each query, the user's `k` best memories scoring at least `threshold`, best
        first; then, for each of `keys` (an identifier such as an order number), the memories
        stored with that key, scored 1.0 (an exact match needs no embedding).

        All queries are embedded in one call, and queries and keys go to Qdrant in one batched
        request. A user with no memories yet costs no embedding at all in the embedded layout."""
        user_id = _user(user_id)
        check_recall(queries, keys)
        if not queries and not keys:
            return []
        k = self.top_k if k is None else k
        threshold = self.threshold if threshold is None else threshold
        name = self._collection(user_id)
        with self._qdrant(name):
            if not self._exists(name):
                return [[] for _ in [*queries, *keys]]
        vectors = self._embed(list(queries), ref) if queries else []
        scope = self._scope(user_id)
        requests = [
            models.QueryRequest(
                query=vector,
                filter=scope,
                limit=k,
                score_threshold=2.0 * threshold - 1.0,  # as a cosine
                with_payload=True,
            )
            for vector in vectors
        ]
        # Embedded, identifiers go to the key index (`_by_keys`); a server filters by them.
        filtered = [] if self._embedded else list(keys)
        for key in filtered:
            match = models.FieldCondition(key="keys", match=models.MatchAny(any=[key]))
            must = [match, *(scope.must if scope is not None and scope.must else [])]
            requests.append(
                models.QueryRequest(
                    filter=models.Filter(must=must),  # type: ignore[arg-type]
                    limit=k,
                    with_payload=True,
                )
            )
        with self._qdrant(name):
            responses = self.client.query_batch_points(name, requests=requests) if requests else []
        found = [
            [
                _memory(point)
                for point in response.points
                if point.payload
                and point.payload.get("user_id") == user_id
                and similarity(point.score) >= threshold
            ]
            for response in responses[: len(queries)]
        ]
        if self._embedded:
            return found + (self._by_keys(name, user_id, list(keys), k) if keys else [])
        for response in responses[len(queries) :]:
            found.append(
                [
                    replace(_memory(point), score=1.0)
                    for point in response.points
                    if point.payload and point.payload.get("user_id") == user_id
                ]
            )
        return found

    def _by_keys(self, name: str, user_id: str, keys: list[str], k: int) -> list[list[Memory]]:
        """For each key, the user's newest `k` memories stored with it (embedded mode).

        Embedded Qdrant evaluates a payload filter in Python on every point of the collection:
        2 ms for one identifier over a customer's 110 memories here, in the turn's critical
        path. The store is the only writer of its embedded storage (the folder is locked to
        one client), so it keeps each collection's keys in memory instead: read once with a
        scroll, extended by `remember`, dropped by `forget_user`; the points themselves are
        then fetched by id."""
        with self._qdrant(name):
            index = self._key_index.get(name)
            if index is None:
                index = self._key_index[name] = self._read_keys(name)
            wanted = []
            for key in keys:
                newest = sorted(index.get(key, []), reverse=True)
                wanted.append([pid for _, who, pid in newest if who == user_id][:k])
            ids = list(dict.fromkeys(pid for per_key in wanted for pid in per_key))
            points = (
                self.client.retrieve(name, ids=ids, with_payload=True, with_vectors=False)
                if ids
                else []
            )
        # Scored 1.0, an exact match, as by the filter (and as session_memories does).
        by_id = {
            str(p.id): _memory(models.ScoredPoint(id=p.id, version=0, score=1.0, payload=p.payload))
            for p in points
            if p.payload and p.payload.get("user_id") == user_id
        }
        return [[by_id[pid] for pid in per_key if pid in by_id] for per_key in wanted]

    def _read_keys(self, name: str) -> dict[str, list[tuple[str, str, str]]]:
        index: dict[str, list[tuple[str, str, str]]] = {}
        offset: Any = None
        while True:
            points, offset = self.client.scroll(
                name,
                limit=1_000,
                offset=offset,
                with_payload=["keys", "user_id", "created_at"],
                with_vectors=False,
            )
            for point in points:
                payload = point.payload or {}
                for key in payload.get("keys") or []:
                    entry = (str(payload.get("created_at", "")), str(payload.get("user_id")))
                    index.setdefault(str(key), []).append((*entry, str(point.id)))
            if offset is None:
                return index

    def has_memories(self, user_id: str) -> bool:
        """Whether a recall for `user_id` would search (and so embed its queries): false for
        a user with no memories yet in the per-user layout. Never raises."""
        try:
            with self._qdrant(name := self._collection(_user(user_id))):
                return self._exists(name)
        except (MemoryUnavailable, ValueError):
            return False

    def forget_user(self, user_id: str) -> int:
        """Delete every memory of `user_id`; returns how many there were."""
        user_id = _user(user_id)
        name = self._collection(user_id)
        with self._qdrant(name):
            if not self._exists(name):
                return 0
            count = self._count(name, user_id)
            if self.layout == "per_user":
                with self._lock:
                    self.client.delete_collection(name)
                self._known.discard(name)
            else:
                self.client.delete(
                    name,
                    points_selector=models.FilterSelector(filter=_user_filter(user_id)),
                    wait=True,
                )
            self._key_index.pop(name, None)
        return count

    def count(self, user_id: str | None = None) -> int:
        """Memories of `user_id`, or of all users."""
        if user_id is not None:
            name = self._collection(_user(user_id))
            with self._qdrant(name):
                return self._count(name, user_id) if self._exists(name) else 0
        with self._qdrant():
            names = [
                c.name
                for c in self.client.get_collections().collections
                if c.name == self.prefix or c.name.startswith(f"{self.prefix}__")
            ]
        total = 0
        for name in names:
            with self._qdrant(name):
                if self.client.collection_exists(name):  # not deleted meanwhile
                    total += self._count(name, None)
        return total

    def session_memories(self, user_id: str, session_id: str, *, limit: int) -> list[Memory]:
        """The memories first taken from one session's messages, newest first, by payload
        filter rather than by meaning: after a fold, these are what the folded messages said.
        No embedding is needed; `score` is 1.0 (an exact match on the session). The newest
        facts are kept when there are more than `limit`."""
        user_id = _user(user_id)
        name = self._collection(user_id)
        condition = models.FieldCondition(
            key="session_id", match=models.MatchValue(value=session_id)
        )
        scope = self._scope(user_id)
        must = [condition, *(scope.must if scope is not None and scope.must else [])]
        with self._qdrant(name):
            if not self._exists(name):
                return []
            points, _ = self.client.scroll(
                name,
                scroll_filter=models.Filter(must=must),  # type: ignore[arg-type]
                limit=1_000,
                with_payload=True,
                with_vectors=False,
            )
        found = [
            _memory(models.ScoredPoint(id=p.id, version=0, score=1.0, payload=p.payload))
            for p in points
            if p.payload and p.payload.get("user_id") == user_id
        ]
        found.sort(key=lambda m: m.created_at, reverse=True)
        return found[:limit]

    def _count(self, name: str, user_id: str | None) -> int:
        return self.client.count(name, count_filter=self._scope(user_id), exact=True).count

    def ping(self) -> str:
        """Reach Qdrant (for /ready): the number of collections, as text."""
        with self._qdrant():
            return str(len(self.client.get_collections().collections))

    def close(self) -> None:
        """Release the client (in embedded mode, the storage folder's lock)."""
        self.client.close()


def _user_filter(user_id: str) -> models.Filter:
    return models.Filter(
        must=[models.FieldCondition(key="user_id", match=models.MatchValue(value=user_id))]
    )


def make_memory_store(
    settings: Settings, embedder: Embedder, *, engine: Engine | None = None
) -> MemoryStore | PgVectorStore:
    """The store for `settings`: with MEMORY_BACKEND=pgvector, the app's Postgres (`engine`, or
    the process's shared engine for DATABASE_URL); otherwise the Qdrant server at `QDRANT_URL`
    when set, else embedded storage under `DATA_DIR/qdrant`.

    Build one per process (`st.cache_resource`): embedded storage is locked by the client that
    opened it, and a second client (or process) gets MemoryUnavailable. A server is contacted
    only on first use, so a server that is down does not stop the app from starting."""
    common: dict[str, Any] = {
        "top_k": settings.memory_top_k,
        "threshold": settings.memory_threshold,
    }
    if settings.memory_backend == "pgvector":
        store = PgVectorStore(engine or shared_engine(settings.sqlalchemy_url), embedder, **common)
        store.ensure()  # the extension and the table, or MemoryUnavailable in one line
        return store
    if settings.qdrant_url is not None:
        url = str(settings.qdrant_url).rstrip("/")
        key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
        # check_compatibility would query the server from a thread at start-up and only warn;
        # failures surface as MemoryUnavailable on use instead.
        client = QdrantClient(url=url, api_key=key, timeout=5, check_compatibility=False)
        return MemoryStore(client, embedder, url=url, **common)
    path = settings.data_dir / "qdrant"
    path.mkdir(parents=True, exist_ok=True)
    try:
        # The store serialises its calls, so SQLite's same-thread check (on where the SQLite
        # build asks for it) would only stop the app's threads from taking turns.
        client = QdrantClient(path=str(path), force_disable_check_same_thread=True)
    except RuntimeError as error:  # the folder is locked by another client
        raise MemoryUnavailable(f"Qdrant embedded storage at {path}: {error}") from None
    return MemoryStore(client, embedder, url=str(path), **common)
