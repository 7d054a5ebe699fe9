"""Copy a team's long-term memories between the two backends, vectors and all:

    python -m agent.memory_migrate --to pgvector     # Qdrant (QDRANT_URL or embedded) -> Postgres
    python -m agent.memory_migrate --to qdrant       # and back

The source and target are the configured ones (DATABASE_URL, QDRANT_URL, DATA_DIR) for the
embedding model in use, whatever MEMORY_BACKEND says. Nothing is embedded again: each memory
keeps its id, user, session, text, kind, keys, time and vector, so a copy recalls exactly what
the source did. A memory the target already has (same id) is left as it is, so a copy can be
run again after an interruption. Stop the app first when the source is embedded Qdrant (its
folder is locked by the process that opened it).

At the end the counts are checked: for every user copied, the target holds at least as many
memories as the source, and every id read from the source is in the target. Exit status 0
when they match, 1 when not, 2 for a setting or a backend that cannot be used."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from qdrant_client import models
from sqlalchemy import select
from tqdm import tqdm

from agent.embeddings import make_embedder
from agent.memory import MemoryStore, make_memory_store
from agent.memory_pgvector import PgVectorStore
from agent.memory_records import MemoryUnavailable
from data.config.settings import SettingsError, get_settings

Row = dict[str, Any]


def qdrant_rows(store: MemoryStore, *, batch: int = 1_000) -> Iterator[list[Row]]:
    """Every memory of `store`'s embedding model, with its vector, in batches."""
    with store._qdrant():
        names = [
            c.name
            for c in store.client.get_collections().collections
            if c.name == store.prefix or c.name.startswith(f"{store.prefix}__")
        ]
    for name in names:
        offset: Any = None
        while True:
            with store._qdrant(name):
                points, offset = store.client.scroll(
                    name, limit=batch, offset=offset, with_payload=True, with_vectors=True
                )
            rows = []
            for point in points:
                payload = point.payload or {}
                rows.append(
                    {
                        "id": str(point.id),
                        "user_id": str(payload["user_id"]),
                        "session_id": str(payload.get("session_id", "")),
                        "text": str(payload["text"]),
                        "kind": str(payload["kind"]),
                        "keys": [str(k) for k in payload.get("keys") or []],
                        "created_at": datetime.fromisoformat(payload["created_at"]),
                        "embedding": list(point.vector),  # type: ignore[arg-type]
                    }
                )
            if rows:
                yield rows
            if offset is None:
                break


def load_qdrant(store: MemoryStore, rows: list[Row]) -> int:
    """Upsert `rows` into `store` (ids it already has are skipped); returns how many were new."""
    by_collection: dict[str, list[Row]] = {}
    for row in rows:
        by_collection.setdefault(store._collection(row["user_id"]), []).append(row)
    new = 0
    for name, group in by_collection.items():
        with store._qdrant(name):
            store._ensure(name)
            known = {
                str(p.id)
                for p in store.client.retrieve(
                    name, ids=[r["id"] for r in group], with_payload=False, with_vectors=False
                )
            }
            points = [
                models.PointStruct(
                    id=row["id"],
                    vector=list(row["embedding"]),
                    payload={
                        "user_id": row["user_id"],
                        "session_id": row["session_id"],
                        "text": row["text"],
                        "kind": row["kind"],
                        "keys": list(row["keys"]),
                        "created_at": row["created_at"].isoformat(),
                    },
                )
                for row in group
                if row["id"] not in known
            ]
            if points:
                store.client.upsert(name, points=points, wait=True)
            store._key_index.pop(name, None)  # rebuilt with the new keys on the next lookup
        new += len(points)
    return new


def _has_ids(target: MemoryStore | PgVectorStore, user_id: str, ids: list[str]) -> set[str]:
    if isinstance(target, PgVectorStore):
        t = target.table
        with target.engine.connect() as connection:
            return set(connection.execute(select(t.c.id).where(t.c.id.in_(ids))).scalars())
    name = target._collection(user_id)
    with target._qdrant(name):
        found = target.client.retrieve(name, ids=ids, with_payload=False, with_vectors=False)
    return {str(p.id) for p in found}


def copy(
    source: MemoryStore | PgVectorStore,
    target: MemoryStore | PgVectorStore,
    *,
    batch: int = 1_000,
    progress: bool = True,
) -> dict[str, int]:
    """Copy every memory from `source` to `target` and check the counts. Returns read,
    copied (new in the target), users, and mismatched (users whose memories are not all in the
    target: 0 when the copy is complete)."""
    total = source.count()
    rows_of = (
        source.export(batch=batch)
        if isinstance(source, PgVectorStore)
        else qdrant_rows(source, batch=batch)
    )
    read = copied = 0
    ids_by_user: dict[str, list[str]] = {}
    with tqdm(total=total, unit="memory", disable=not progress, file=sys.stderr) as bar:
        for rows in rows_of:
            copied += (
                target.load(rows)
                if isinstance(target, PgVectorStore)
                else load_qdrant(target, rows)
            )
            for row in rows:
                ids_by_user.setdefault(row["user_id"], []).append(row["id"])
            read += len(rows)
            bar.update(len(rows))
    mismatched = 0
    for user_id, ids in ids_by_user.items():
        present = set()
        for i in range(0, len(ids), 1_000):
            present |= _has_ids(target, user_id, ids[i : i + 1_000])
        if len(present) != len(set(ids)) or target.count(user_id) < source.count(user_id):
            mismatched += 1
    return {"read": read, "copied": copied, "users": len(ids_by_user), "mismatched": mismatched}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Copy long-term memories between Qdrant and pgvector, vectors and all."
    )
    parser.add_argument("--to", choices=("pgvector", "qdrant"), required=True)
    parser.add_argument("--batch", type=int, default=1_000, help="memories per read and write")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if not 1 <= args.batch <= 50_000:
        print("error: --batch must be between 1 and 50000", file=sys.stderr)
        return 2
    try:
        settings = get_settings()
        embedder = make_embedder(settings)
        backends = {
            name: settings.model_copy(update={"memory_backend": name})
            for name in ("qdrant", "pgvector")
        }
        if not settings.is_postgres:
            raise SettingsError("pgvector needs DATABASE_URL to be a Postgres")
        source_name = "qdrant" if args.to == "pgvector" else "pgvector"
        source = make_memory_store(backends[source_name], embedder)
        target = make_memory_store(backends[args.to], embedder)
    except (SettingsError, MemoryUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        result = copy(source, target, batch=args.batch, progress=not args.quiet)
    except MemoryUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        source.close()
        target.close()
    print(
        f"{source_name} -> {args.to}: read {result['read']:,} memories of {result['users']:,} "
        f"users, {result['copied']:,} new in the target"
        + (
            "; counts checked: every memory is in the target"
            if not result["mismatched"]
            else f"; MISMATCH: {result['mismatched']:,} users are missing memories in the target"
        )
    )
    return 0 if not result["mismatched"] else 1


if __name__ == "__main__":
    sys.exit(main())
