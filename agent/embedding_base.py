"""What every embedder shares: the Embedder protocol, its error, the dimensions and token limits,
unit-length vectors, and recording an embedding call against the chat turn it belongs to."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Protocol

import numpy as np

from agent.context import TurnContext
from data.integrations.prices import Rate, price_call
from data.store.records import CallRecord

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

Sink = Callable[[CallRecord], None]


LOCAL_EMBEDDING_DIM = 384


# sentence-transformers truncates this model at 256 tokens (its positions go to 512, but it was
# trained on 256), so 256 is the input window the vectors are good for.
LOCAL_MAX_TOKENS = 256


OPENAI_MAX_TOKENS = 8191


OPENAI_DIMS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}


# The OpenAI API takes at most 2048 inputs per request.
OPENAI_BATCH = 2048


class EmbeddingError(RuntimeError):
    """The embedding provider failed. The message names provider, model and URL, never a key."""


class Embedder(Protocol):
    """Turns texts into L2-normalised vectors of `dim` floats, one per text, in order.

    `embed` raises ValueError for an empty or blank text and EmbeddingError when the provider
    fails; with `ref` it records each model call it makes (cache hits make none)."""

    @property
    def model(self) -> str: ...

    @property
    def provider(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed(
        self, texts: Sequence[str], *, ref: TurnContext | None = None
    ) -> list[list[float]]: ...


def _checked(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("embed() takes a sequence of texts, not one string")
    for text in texts:
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"cannot embed an empty text (got {text!r})")
    return list(texts)


def _normalised(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.clip(norms, 1e-12, None)).astype(np.float32)


# Set by CachedEmbedder.prefetch(hold=True) on its own thread: the calls made there are kept in
# this list, with their sinks, instead of being recorded (see `CachedEmbedder`).
_HELD: ContextVar[list[tuple[Sink, CallRecord]] | None] = ContextVar("held_calls", default=None)


MAX_HELD = 1_000


def _deliver(sink: Sink, record: CallRecord) -> None:
    try:
        sink(record)
    except Exception:
        log.exception("could not record an embedding call")


class _Recorder:
    """Builds the CallRecord of one embedding call and hands it to the sink (or, on a holding
    prefetch's thread, to the prefetch, which records it once the turn uses the vector).

    A sink that fails is logged and ignored: recording never breaks a chat turn."""

    def __init__(
        self,
        *,
        provider: str,
        model: str,
        window: int,
        sink: Sink | None,
        price_overrides: dict[str, Rate] | None,
    ) -> None:
        self.provider = provider
        self.model = model
        self.window = window
        self.sink = sink
        self.price_overrides = price_overrides

    def __call__(
        self,
        ref: TurnContext | None,
        *,
        texts: int,
        input_tokens: int,
        latency_ms: float,
        usage_source: str,
        error: str | None = None,
    ) -> None:
        if ref is None or self.sink is None:
            return
        price = price_call(
            provider=self.provider,
            model=self.model,
            input_tokens=input_tokens,
            cached_input_tokens=0,
            output_tokens=0,
            overrides=self.price_overrides,
        )
        record = CallRecord(
            user_id=ref.user_id,
            session_id=ref.session_id,
            turn=ref.turn,
            purpose="embedding",
            provider=self.provider,
            model=self.model,
            input_tokens=input_tokens,
            cached_input_tokens=0,
            output_tokens=0,
            cost_usd=price.cost_usd,
            cost_status=price.status,
            latency_ms=latency_ms,
            ttft_ms=None,
            context_tokens=input_tokens,
            # Each text has its own input window: the ratio means something for one text only.
            context_window=self.window if texts == 1 else None,
            status="ok" if error is None else "error",
            error=error,
            usage_source=usage_source,
        )
        held = _HELD.get()
        if held is not None:
            held.append((self.sink, record))
            return
        _deliver(self.sink, record)
