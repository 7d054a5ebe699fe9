"""An embedder that counts: passes calls through to a real one and keeps what each asked."""

from __future__ import annotations

from collections.abc import Sequence

from agent.context import TurnContext
from agent.embedding_base import Embedder


class Counting:
    """Passes calls through to a real embedder and keeps what each call asked for."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.model, self.provider, self.dim = inner.model, inner.provider, inner.dim
        self.calls: list[list[str]] = []

    def embed(self, texts: Sequence[str], *, ref: TurnContext | None = None) -> list[list[float]]:
        self.calls.append(list(texts))
        return self.inner.embed(texts, ref=ref)
