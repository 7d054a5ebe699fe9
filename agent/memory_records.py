"""What a long-term memory is: a fact of a customer's with its kind, session and time, the
similarity scale recalls are scored on, and its stable id."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from qdrant_client import models

from agent.context import TurnContext
from agent.embedding_base import Embedder, EmbeddingError

# Fixed, so the same user and text give the same point id in every process and release.
_NAMESPACE = uuid.UUID("5b0c3f0e-7d1a-4c57-9a8e-2f6d4c1b9e21")


class MemoryUnavailable(RuntimeError):
    """Long-term memory cannot be used right now (Qdrant or the embeddings are down)."""


class MemoryItem(Protocol):
    """What `remember` stores: a short text and its kind ("order_number", "email", "name",
    "promise", "problem", "fact", ...). `agent.facts.Fact` is one. Optional attributes:
    `keys` (identifiers to recall it by exactly) and `embed_text` (what to embed, if not
    the text)."""

    @property
    def text(self) -> str: ...

    @property
    def kind(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Memory:
    """One recalled memory. `score` is its similarity to the query on a 0-to-1 scale,
    `(1 + cosine) / 2` (see `similarity`)."""

    text: str
    kind: str
    score: float
    user_id: str
    session_id: str
    created_at: datetime
    id: str


def similarity(cosine: float) -> float:
    """The 0-to-1 similarity that `recall`'s threshold and `Memory.score` use: (1 + cosine) / 2.

    The seed asks for a similarity threshold between 0.6 and 0.8. On raw cosine that would only
    recall near-verbatim repeats: with MiniLM a paraphrase of a stored fact ("my package was
    broken" for "Order A-1234 arrived damaged") scores 0.4 to 0.7 and unrelated text 0.0 to 0.3.
    On this scale 0.6 to 0.8 means cosine 0.2 to 0.6, and the default 0.7 (cosine 0.4) separates
    the two."""
    return (1.0 + cosine) / 2.0


def normalise(text: str) -> str:
    """The form two texts share when they say the same thing: case-folded, single spaces."""
    return " ".join(text.casefold().split())


def memory_id(user_id: str, text: str) -> str:
    """The point id of a memory: the same user and (normalised) text always give the same id,
    which is what makes `remember` idempotent."""
    return str(uuid.uuid5(_NAMESPACE, f"{user_id}\x00{normalise(text)}"))


def fresh_items(user_id: str, items: Iterable[MemoryItem]) -> dict[str, MemoryItem]:
    """`items` by memory id, the first of each; ValueError for an item with no text or kind
    (before anything is stored). Both stores' `remember` starts here."""
    fresh: dict[str, MemoryItem] = {}
    for item in items:
        if not isinstance(item.text, str) or not item.text.strip():
            raise ValueError("a memory's text must be a non-empty string")
        if not isinstance(item.kind, str) or not item.kind.strip():
            raise ValueError(f"the memory {item.text!r} needs a kind")
        fresh.setdefault(memory_id(user_id, item.text), item)
    return fresh


def check_recall(queries: Sequence[str], keys: Sequence[str]) -> None:
    """TypeError for one string instead of a sequence, ValueError for an empty query or key:
    both stores' `recall` starts here."""
    if isinstance(queries, str) or isinstance(keys, str):
        raise TypeError("recall() takes sequences of queries and keys, not one string")
    for query in [*queries, *keys]:
        if not isinstance(query, str) or not query.strip():
            raise ValueError("a recall query or key must be a non-empty string")


def embed_or_unavailable(
    embedder: Embedder, texts: list[str], ref: TurnContext | None
) -> list[list[float]]:
    """The embedder's vectors, or MemoryUnavailable when the embedding provider fails."""
    try:
        return embedder.embed(texts, ref=ref)
    except EmbeddingError as error:
        raise MemoryUnavailable(f"memory embeddings are unavailable: {error}") from None


def _user(user_id: str) -> str:
    if not isinstance(user_id, str) or not user_id.strip():
        raise ValueError("user_id must be a non-empty string")
    return user_id


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _memory(point: models.ScoredPoint) -> Memory:
    payload = point.payload or {}
    return Memory(
        text=str(payload["text"]),
        kind=str(payload["kind"]),
        score=similarity(float(point.score)),
        user_id=str(payload["user_id"]),
        session_id=str(payload.get("session_id", "")),
        created_at=datetime.fromisoformat(payload["created_at"]),
        id=str(point.id),
    )
