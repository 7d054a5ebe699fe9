"""The optional response cache (seed 4.2): the same model and messages return the stored answer.

It plugs into LangChain's own cache hook (`BaseChatModel(cache=...)`, the seed's
`llm_cache = RedisCache(...)`), so a hit skips the HTTP call inside the model and LangChain marks
the hit by zeroing `usage_metadata["total_cost"]`, which telemetry records as a cache hit at $0.

Written here rather than taken from `langchain-redis`: that package brings redisvl and hf-xet for
vector search we do not use, and neither its cache nor `InMemoryCache` drops the stored message
id. A replayed id would make LangGraph's `add_messages` overwrite the earlier answer it came from,
so a hit here always comes back without one."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from langchain_core._api import LangChainBetaWarning
from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
from langchain_core.load import Serializable, dumps, loads
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, Generation

log = logging.getLogger(__name__)

PREFIX = "acb:response:"
ALLOWED: list[type[Serializable]] = [
    ChatGeneration,
    ChatGenerationChunk,
    Generation,
    AIMessage,
    AIMessageChunk,
]


def _key(prompt: str, llm_string: str) -> str:
    # llm_string carries the model and its parameters; prompt is the serialised messages.
    return PREFIX + hashlib.sha256(f"{llm_string}\x00{prompt}".encode()).hexdigest()


def _without_ids(generations: Sequence[Generation]) -> list[Generation]:
    out: list[Generation] = []
    for generation in generations:
        if isinstance(generation, ChatGeneration) and generation.message.id is not None:
            message = generation.message.model_copy(update={"id": None})
            generation = ChatGeneration(message=message, generation_info=generation.generation_info)
        out.append(generation)
    return out


class ResponseCache(BaseCache):
    """Redis when a client is given, else a bounded in-process LRU; entries expire after `ttl_s`.

    A Redis failure never fails a turn: the lookup is a miss and the warning is logged once."""

    def __init__(self, *, ttl_s: int, redis: Any = None, max_entries: int = 2_000) -> None:
        self.ttl_s = ttl_s
        self.redis = redis
        self.max_entries = max_entries
        self._local: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._lock = threading.Lock()
        self._warned = False

    @property
    def backend(self) -> str:
        return "redis" if self.redis is not None else "in-process"

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        key = _key(prompt, llm_string)
        raw: str | None
        if self.redis is not None:
            try:
                value = self.redis.get(key)
            except Exception as error:  # redis.RedisError and socket errors alike
                self._warn(error)
                return None
            raw = value.decode() if isinstance(value, bytes) else value
        else:
            with self._lock:
                entry = self._local.get(key)
                if entry is not None and entry[0] < time.monotonic():
                    del self._local[key]
                    entry = None
                if entry is not None:
                    self._local.move_to_end(key)
                raw = entry[1] if entry else None
        if raw is None:
            return None
        try:
            with warnings.catch_warnings():
                # load/dumps are marked beta; they are what LangChain's own caches use.
                warnings.simplefilter("ignore", LangChainBetaWarning)
                # Only generations and messages: a cache entry can never construct anything
                # else (Redis may be shared with other software).
                return _without_ids(loads(raw, allowed_objects=ALLOWED))
        except Exception:  # an entry from another version: treat as a miss
            log.warning("dropping an unreadable response-cache entry")
            return None

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        # Failed or empty answers are never cached.
        if not return_val or not any(g.text for g in return_val):
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LangChainBetaWarning)
            key, raw = _key(prompt, llm_string), dumps(list(return_val))
        if self.redis is not None:
            try:
                self.redis.set(key, raw, ex=self.ttl_s)
            except Exception as error:
                self._warn(error)
            return
        with self._lock:
            self._local[key] = (time.monotonic() + self.ttl_s, raw)
            self._local.move_to_end(key)
            while len(self._local) > self.max_entries:
                self._local.popitem(last=False)

    def clear(self, **kwargs: Any) -> None:
        if self.redis is not None:
            for key in self.redis.scan_iter(match=PREFIX + "*", count=500):
                self.redis.delete(key)
        with self._lock:
            self._local.clear()

    def _warn(self, error: BaseException) -> None:
        if not self._warned:
            self._warned = True
            log.warning("response cache: Redis is unavailable (%s); answering uncached", error)


def make_response_cache(*, ttl_s: int, redis_url: str | None) -> ResponseCache:
    """The cache for the configured backend. The Redis client connects lazily, so an unreachable
    Redis shows up as logged misses, not as a failed start."""
    if redis_url is None:
        return ResponseCache(ttl_s=ttl_s)
    import redis  # only needed with REDIS_URL
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # No retries: redis-py retries a refused connection with backoff for seconds, which a
    # turn would wait for; a miss only costs one model call.
    client = redis.Redis.from_url(
        redis_url,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
    )
    return ResponseCache(ttl_s=ttl_s, redis=client)
