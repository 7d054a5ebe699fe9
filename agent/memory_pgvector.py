"""Per-user long-term memory on the app's own Postgres (`MEMORY_BACKEND=pgvector`): the same
behaviour as `agent.memory.MemoryStore` on Qdrant, in one table per embedding model.

The table (`memories_<model>`, as Qdrant's collections are named, so switching models starts a
fresh memory instead of mixing vector spaces) holds one row per memory: the user, the session
it came from, the text, its kind, its identifier keys and the embedding as `vector(dim)`.
Indexes:

- HNSW with cosine distance (`vector_cosine_ops`) on the embedding, for recalls over many
  memories;
- (user_id, created_at), so a recall reads only one user's rows, and a customer with a few
  hundred memories is ranked exactly;
- GIN on the keys, for the exact lookup of identifiers such as order numbers;
- (user_id, session_id), for the memories of one session after a fold.

A recall sends every query and key in one statement (one round trip, as Qdrant's batch does).
Every read is filtered by user_id in SQL, so another user's memory is never returned. Scores
are on the same 0-to-1 scale, `(1 + cosine) / 2`, and the same ids make `remember`
idempotent.

Errors: an empty user id or text raises ValueError; a Postgres that is down, or a missing
`vector` extension, raises `MemoryUnavailable` naming the database (never its password)."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    ARRAY,
    Column,
    Connection,
    DateTime,
    Engine,
    Index,
    MetaData,
    String,
    Table,
    Text,
    delete,
    func,
    literal,
    select,
    text,
)
from sqlalchemy.exc import SQLAlchemyError

from agent.context import TurnContext
from agent.embedding_base import Embedder
from agent.memory_records import (
    Memory,
    MemoryItem,
    MemoryUnavailable,
    _slug,
    _user,
    check_recall,
    embed_or_unavailable,
    fresh_items,
    similarity,
)
from data.store import pgvector
from data.store.db import describe, failure_reason

SCHEMA_LOCK = 0x6D656D6F726965  # "memorie": the advisory lock that serialises creating the table


def memory_table(model: str, dim: int) -> Table:
    """The memories of embedding model `model`, whose vectors have `dim` floats."""
    name = f"memories_{_slug(model).replace('-', '_')}"[:63]
    table = Table(
        name,
        MetaData(),
        Column("id", String(36), primary_key=True),
        Column("user_id", Text, nullable=False),
        Column("session_id", Text, nullable=False),
        Column("text", Text, nullable=False),
        Column("kind", Text, nullable=False),
        Column("keys", ARRAY(Text), nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("embedding", Vector(dim), nullable=False),
    )
    Index(f"{name}_user", table.c.user_id, table.c.created_at)
    Index(f"{name}_session", table.c.user_id, table.c.session_id)
    Index(f"{name}_keys", table.c["keys"], postgresql_using="gin")
    Index(
        f"{name}_hnsw",
        table.c.embedding,
        postgresql_using="hnsw",
        postgresql_ops={"embedding": "vector_cosine_ops"},
    )
    return table


def ensure_extension(engine: Engine) -> str:
    """The extension (created if the role may), its version; MemoryUnavailable in one line
    when Postgres has no pgvector or is down."""
    try:
        return pgvector.ensure(engine)
    except pgvector.VectorExtensionError as error:
        raise MemoryUnavailable(str(error)) from None
    except SQLAlchemyError as error:
        where = describe(engine.url.render_as_string(hide_password=True))
        raise MemoryUnavailable(
            f"pgvector in {where} is unavailable: {failure_reason(error)}"
        ) from None


class PgVectorStore:
    """Long-term memories of each user in Postgres, embedded with `embedder` (the same methods
    as agent.memory.MemoryStore)."""

    def __init__(
        self, engine: Engine, embedder: Embedder, *, top_k: int = 4, threshold: float = 0.7
    ) -> None:
        self.engine = engine
        self.embedder = embedder
        self.top_k = top_k
        self.threshold = threshold
        self.url = describe(engine.url.render_as_string(hide_password=True))
        self.table = memory_table(embedder.model, embedder.dim)
        self._name = f'"{self.table.name}"'  # a slug of the model's name: safe to quote in SQL
        self._ready = False
        self._ready_lock = threading.Lock()

    # Schema ---------------------------------------------------------------------------------

    def ensure(self) -> None:
        """The extension, the table and its indexes (once per store; idempotent in SQL, so
        replicas that start together do not conflict)."""
        if self._ready:
            return
        with self._ready_lock:
            if self._ready:
                return
            ensure_extension(self.engine)
            with self._db(), self.engine.begin() as connection:
                # One creator at a time across processes: CREATE ... IF NOT EXISTS races
                # on the catalog otherwise.
                connection.execute(select(func.pg_advisory_xact_lock(SCHEMA_LOCK)))
                self.table.metadata.create_all(connection, checkfirst=True)
            self._ready = True

    @contextmanager
    def _db(self) -> Iterator[None]:
        try:
            yield
        except SQLAlchemyError as error:
            raise MemoryUnavailable(
                f"pgvector in {self.url} is unavailable: {failure_reason(error)}"
            ) from None

    def ping(self) -> str:
        """The extension's version (for /ready and the Status page)."""
        self.ensure()
        return ensure_extension(self.engine)

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
        """Store `items` for `user_id`; returns how many were new. A text the user already has
        is skipped before it is embedded; new items are embedded in one call and inserted in
        one statement (a concurrent writer of the same fact wins, and it is not counted)."""
        user_id = _user(user_id)
        fresh = fresh_items(user_id, items)
        if not fresh:
            return 0
        self.ensure()
        t = self.table
        with self._db(), self._reading() as connection:
            known = connection.execute(select(t.c.id).where(t.c.id.in_(list(fresh)))).scalars()
            for found in known:
                fresh.pop(found, None)
        if not fresh:
            return 0
        texts = [getattr(item, "embed_text", None) or item.text for item in fresh.values()]
        unique = list(dict.fromkeys(texts))
        by_text = dict(zip(unique, self._embed(unique, ref), strict=True))
        now = datetime.now(UTC)
        rows = [
            {
                "id": point_id,
                "user_id": user_id,
                "session_id": session_id,
                "text": item.text,
                "kind": item.kind,
                "keys": [str(key) for key in getattr(item, "keys", ())],
                "created_at": now,
                "embedding": by_text[embed_text],
            }
            for (point_id, item), embed_text in zip(fresh.items(), texts, strict=True)
        ]
        return self.load(rows)

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
        first; then, for each of `keys`, the user's newest `k` memories stored with that key,
        scored 1.0. One connection: whether the user has memories (if not, nothing is
        embedded), then one statement for every query and key."""
        user_id = _user(user_id)
        check_recall(queries, keys)
        if not queries and not keys:
            return []
        k = self.top_k if k is None else k
        threshold = self.threshold if threshold is None else threshold
        self.ensure()
        found: list[list[Memory]] = [[] for _ in [*queries, *keys]]
        with self._db(), self._reading() as connection:
            if not self._has(connection, user_id):
                return found
            vectors = self._embed(list(queries), ref) if queries else []
            params: dict[str, Any] = {"user_id": user_id, "k": k}
            parts = []
            for i, vector in enumerate(vectors):
                params[f"q{i}"] = _vector_text(vector)
                distance = f"embedding <=> CAST(:q{i} AS vector)"
                parts.append(
                    f"(SELECT {i} AS slot, {_COLUMNS}, 1 - ({distance}) AS cosine"
                    f" FROM {self._name} WHERE user_id = :user_id ORDER BY {distance} LIMIT :k)"
                )
            for j, key in enumerate(keys, start=len(vectors)):
                params[f"key{j}"] = key
                parts.append(
                    f"(SELECT {j} AS slot, {_COLUMNS}, CAST(1.0 AS float8) AS cosine"
                    f" FROM {self._name} WHERE user_id = :user_id"
                    f" AND keys @> ARRAY[CAST(:key{j} AS text)]"
                    " ORDER BY created_at DESC, id DESC LIMIT :k)"  # as Qdrant's key index
                )
            rows = connection.execute(text(" UNION ALL ".join(parts)), params).mappings().all()
        floor = 2.0 * threshold - 1.0  # the threshold as a cosine
        for row in rows:
            if row["slot"] >= len(vectors) or row["cosine"] >= floor:
                found[row["slot"]].append(_memory(row))
        for hits in found:
            hits.sort(key=lambda m: -m.score)
        return found

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        """A connection for reads in autocommit: no BEGIN and ROLLBACK round trips (each is a
        third of a millisecond on this machine, more than the ranked read itself)."""
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            yield c

    def _has(self, connection: Connection, user_id: str) -> bool:
        return (
            connection.execute(
                text(f"SELECT 1 FROM {self._name} WHERE user_id = :user_id LIMIT 1"),
                {"user_id": user_id},
            ).first()
            is not None
        )

    def has_memories(self, user_id: str) -> bool:
        """Whether `user_id` has any memory (a recall for a new customer embeds nothing).
        Never raises."""
        try:
            user_id = _user(user_id)
            self.ensure()
            with self._reading() as connection:
                return self._has(connection, user_id)
        except (MemoryUnavailable, ValueError, SQLAlchemyError):
            return False

    def forget_user(self, user_id: str) -> int:
        """Delete every memory of `user_id`; returns how many there were."""
        user_id = _user(user_id)
        self.ensure()
        with self._db(), self.engine.begin() as connection:
            return len(
                connection.execute(
                    delete(self.table)
                    .where(self.table.c.user_id == user_id)
                    .returning(self.table.c.id)
                ).all()
            )

    def count(self, user_id: str | None = None) -> int:
        """Memories of `user_id`, or of all users."""
        self.ensure()
        query = select(func.count()).select_from(self.table)
        if user_id is not None:
            query = query.where(self.table.c.user_id == _user(user_id))
        with self._db(), self.engine.connect() as connection:
            return int(connection.execute(query).scalar_one())

    def session_memories(self, user_id: str, session_id: str, *, limit: int) -> list[Memory]:
        """The memories first taken from one session's messages, newest first (score 1.0)."""
        user_id = _user(user_id)
        self.ensure()
        t = self.table
        query = (
            select(
                t.c.id,
                t.c.user_id,
                t.c.session_id,
                t.c.text,
                t.c.kind,
                t.c.created_at,
                literal(1.0).label("cosine"),
            )
            .where(t.c.user_id == user_id, t.c.session_id == session_id)
            .order_by(t.c.created_at.desc(), t.c.id)
            .limit(limit)
        )
        with self._db(), self.engine.connect() as connection:
            return [_memory(row) for row in connection.execute(query).mappings()]

    def export(self, *, batch: int = 1_000) -> Iterator[list[dict[str, Any]]]:
        """Every memory with its vector, in batches (agent.memory_migrate)."""
        self.ensure()
        t = self.table
        last = ""
        while True:
            with self._db(), self.engine.connect() as connection:
                rows = [
                    dict(row)
                    for row in connection.execute(
                        select(t).where(t.c.id > last).order_by(t.c.id).limit(batch)
                    ).mappings()
                ]
            if not rows:
                return
            last = rows[-1]["id"]
            yield rows

    def load(self, rows: Sequence[dict[str, Any]]) -> int:
        """Insert memories with their vectors as they are (remember, agent.memory_migrate);
        returns how many were new. Up to LOAD_CHUNK rows: one statement, INSERT ... ON CONFLICT
        DO NOTHING, whose rows all land or none do, in autocommit (no BEGIN and COMMIT round
        trips); more go through COPY. The vectors go as pgvector's text form."""
        if not rows:
            return 0
        self.ensure()
        if len(rows) > LOAD_CHUNK:
            return self._copy(rows)
        values = []
        params: dict[str, Any] = {}
        for i, row in enumerate(rows):
            values.append(
                f"(:id{i}, :user{i}, :session{i}, :text{i}, :kind{i}, :at{i},"
                f" CAST(:keys{i} AS text[]), CAST(:vec{i} AS vector))"
            )
            params |= {
                f"id{i}": row["id"],
                f"user{i}": row["user_id"],
                f"session{i}": row["session_id"],
                f"text{i}": row["text"],
                f"kind{i}": row["kind"],
                f"keys{i}": [str(key) for key in row["keys"]],
                f"at{i}": row["created_at"],
                f"vec{i}": _vector_text(row["embedding"]),
            }
        statement = text(
            f"INSERT INTO {self._name} ({_COLUMNS}, keys, embedding) VALUES "
            + ", ".join(values)
            + " ON CONFLICT DO NOTHING RETURNING id"
        )
        with self._db(), self._reading() as connection:
            return len(connection.execute(statement, params).all())

    def _copy(self, rows: Sequence[dict[str, Any]]) -> int:
        """A large load (the migrate tool, the benchmark): COPY into a temporary table, then
        one INSERT ... SELECT that skips the ids already there, in one transaction."""
        columns = f"{_COLUMNS}, keys, embedding"
        with self._db(), self.engine.begin() as connection:
            cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
            cursor.execute(f"CREATE TEMP TABLE memories_load (LIKE {self._name}) ON COMMIT DROP")
            with cursor.copy(f"COPY memories_load ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(
                        (
                            row["id"],
                            row["user_id"],
                            row["session_id"],
                            row["text"],
                            row["kind"],
                            row["created_at"],
                            [str(key) for key in row["keys"]],
                            _vector_text(row["embedding"]),
                        )
                    )
            cursor.execute(
                f"INSERT INTO {self._name} ({columns}) SELECT {columns} FROM memories_load"
                " ON CONFLICT DO NOTHING RETURNING id"
            )
            return len(cursor.fetchall())

    def close(self) -> None:
        """Nothing to release: the engine is the app's (its pool outlives the store)."""


LOAD_CHUNK = 100  # up to this many rows in one INSERT; more go through COPY
_COLUMNS = "id, user_id, session_id, text, kind, created_at"  # keys, embedding: written only


def _vector_text(vector: Sequence[float]) -> str:
    """pgvector's text form, '[0.1,0.2,...]' (the SQLAlchemy type's own conversion goes
    through numpy and costs more than the ranked read)."""
    return "[" + ",".join(map(repr, map(float, vector))) + "]"


def _memory(row: Any) -> Memory:
    created = row["created_at"]
    created = created.replace(tzinfo=UTC) if created.tzinfo is None else created.astimezone(UTC)
    return Memory(
        text=str(row["text"]),
        kind=str(row["kind"]),
        score=similarity(float(row["cosine"])),
        user_id=str(row["user_id"]),
        session_id=str(row["session_id"]),
        created_at=created,
        id=str(row["id"]),
    )
