"""Long-term memory in the agent loop (seed 4.2, 6.3, 6.4).

`MemoryMiddleware` does two things:
- before each model call (`wrap_model_call`) it recalls the user's memories for the new message
  and puts them, with any context the providers add (an order found in the message, the best
  help-center entry), into that request only: its system message, or, for a small local model,
  next to the customer's question. The state is untouched, so the injected text is never
  summarized or stored twice.
- around the same model call it extracts the critical facts of the customer's message and of
  the answer (agent/facts.py) and stores them. That happens on the turn the fact appears, so
  every fact is in memory before SummarizationMiddleware can fold its message away.

Recall runs once per turn: the first model call recalls, later calls of the same turn (after
tool calls) reuse that result. The message is searched by meaning and each identifier in it
(order numbers, e-mail addresses) by exact key, with one embedding and one batched request.
Writes go to one background thread, so storing facts adds nothing to the turn; a recall first
waits for that user's pending writes, so a user always reads their own writes."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast

from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from agent.context import TurnContext, current_turn, outside_turn
from agent.facts import extract_facts, identifiers
from agent.memory import MemoryStore
from agent.memory_pgvector import PgVectorStore
from agent.memory_records import Memory, MemoryUnavailable
from agent.middleware import EventSink, emit
from data.store.records import MemoryItem, RecallDetail, ToolCallDetail

log = logging.getLogger(__name__)

# After a fold, at most this many of the session's own facts come back: the customer's
# identifiers first, then the newest of the rest (restore_order).
MAX_RESTORED_FACTS = 12


@dataclass(frozen=True)
class Provided:
    """A provider's block for the prompt, with details for the turn's recorded event (the
    help-center articles it came from, for instance)."""

    text: str
    detail: dict[str, Any] = field(default_factory=dict)


class ContextUnavailable(Exception):
    """A provider's source is down: `block` tells the model so (it still goes into the prompt,
    so the model says it cannot check rather than guessing), and the lookup is recorded as a
    failed tool call with the exception's message."""

    def __init__(self, message: str, *, block: str) -> None:
        super().__init__(message)
        self.block = block


# (user_id, message text) -> a block of text for the prompt, or None
ContextProvider = Callable[[str, str], "str | Provided | None"]
# Where recalled memories and provided context go: the system message of the request, or next
# to the customer's question in their message (better for small local models).
Placement = Literal["system", "user"]
KIND_ORDER = {
    kind: i for i, kind in enumerate(("order_number", "card", "email", "name", "phone", "promise"))
}
IDENTIFIER_KINDS = frozenset(("order_number", "card", "email", "name", "phone"))
USE_FACTS = "Answer the customer using the facts above where they help."

MEMORY_HEADER = (
    "What you remember about this customer from earlier messages and conversations. "
    "Use it, and do not ask again for anything listed here:"
)


def _background() -> None:
    """Lower the writer thread's CPU priority (Linux schedules threads one by one): storing
    facts is never urgent, and on a small machine it must not slow a customer's recall."""
    with contextlib.suppress(AttributeError, OSError):  # no per-thread priority on this OS
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 15)


def _latest_human(messages: Sequence[Any]) -> HumanMessage | None:
    for message in reversed(messages):
        if isinstance(message, HumanMessage) and not message.additional_kwargs.get("lc_source"):
            return message
    return None


class Prefetch(Protocol):
    def __call__(
        self, texts: Sequence[str], *, ref: TurnContext | None = None, hold: bool = False
    ) -> None: ...


class MemoryMiddleware(AgentMiddleware):  # type: ignore[type-arg]
    """Recall into the prompt, facts into memory. See the module docstring. With no store
    (memory unavailable at start-up) it still adds the providers' context."""

    def __init__(
        self,
        store: MemoryStore | PgVectorStore | None,
        *,
        k: int,
        threshold: float,
        events: EventSink | None = None,
        providers: Mapping[str, ContextProvider] | None = None,
        placement: Placement = "system",
        inject_tokens: int | None = None,
        prefetch: Prefetch | None = None,
        embeds_every_message: bool = False,
        warm_early: bool = False,
    ) -> None:
        super().__init__()
        # Embedding the customer's message is the largest part of what a turn adds (about 5 ms
        # on the local model, a round trip on an API). With `warm_early`, the chat service
        # calls `warm` as soon as the message is stored, before the graph starts:
        # `prefetch` (CachedEmbedder.prefetch) embeds it on another thread while the graph
        # sets up and checks the budget, and the recall then takes the vector instead of
        # waiting for a fresh embedding. Only when this turn will embed the message anyway
        # (the user has memories, or a provider, the help center, embeds every message), and
        # only for an embedder that costs nothing (the local model): the call is held until
        # the recall uses it, and a turn that the budget refuses drops it. An API embedder
        # embeds in the recall, after the budget check.
        self.prefetch = prefetch
        self.embeds_every_message = embeds_every_message
        self.warm_early = warm_early and prefetch is not None
        # Summarization reserves this much of the window for what recall adds to a request
        # (agent/window.py), at the approximate counter's 4 characters a token; the request
        # actually sent is counted again before it goes out.
        self.inject_chars = None if inject_tokens is None else inject_tokens * 4
        self.store = store
        self.k = k
        self.threshold = threshold
        self.events = events
        self.providers = dict(providers or {})
        self.placement = placement
        self._recalled: dict[tuple[str, int], tuple[str, list[Memory]]] = {}
        self._provided: dict[tuple[str, int], tuple[str, list[str]]] = {}
        self._stored: set[tuple[str, int, str]] = set()
        self._pending: dict[str, list[Future[int]]] = {}
        self._lock = threading.Lock()
        self._writer = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="memory-writer", initializer=_background
        )

    # Recall ---------------------------------------------------------------------------------

    def _embeds(self, user_id: str) -> bool:
        """Whether this turn will embed the customer's message."""
        return self.embeds_every_message or (
            self.store is not None and self.store.has_memories(user_id)
        )

    def warm(self, ref: TurnContext, text: str) -> None:
        """Start embedding a stored message before the agent runs (with `warm_early`; see
        __init__). The chat service calls it; for any other caller of the agent the recall
        embeds the message itself."""
        if not self.warm_early or self.prefetch is None or not self._embeds(ref.user_id):
            return
        self.prefetch([text], ref=ref, hold=True)

    def wrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]
    ) -> ModelResponse:
        human = _latest_human(request.messages)
        if human is None:
            return handler(request)
        turn = current_turn() or outside_turn()
        text = str(human.text)
        folded = any(
            m.additional_kwargs.get("lc_source") == "summarization" for m in request.messages
        )
        # The providers first: the order lookup needs no embedding, so it runs while the
        # message is still being embedded (warm); the help-center search then waits for the
        # same vector the recall uses.
        provided = self._provide_once(turn, text)
        memories: list[Memory] = []
        if self.store is not None:
            memories = self._recall_once(turn, text, folded=folded)
            # The customer's facts are written while the model runs (after the recall, so
            # this message never recalls itself).
            self._remember(turn, text, role="user")
        blocks = []
        if memories:
            # Identifiers first: they are short and what a customer must never be asked for
            # twice; when the block has to be cut to its share of the window, the long
            # problem and promise sentences go first.
            ranked = sorted(memories, key=lambda m: KIND_ORDER.get(m.kind, len(KIND_ORDER)))
            blocks.append("\n".join([MEMORY_HEADER, *(f"- {m.text}" for m in ranked)]))
        blocks = fit_blocks([*blocks, *provided], self.inject_chars)
        if not blocks:
            sent = request
        elif self.placement == "user":
            # Small local models follow facts placed next to the question far better than
            # facts in the system message (checked with SmolLM2-135M on an order question).
            messages = list(request.messages)
            at = max(i for i, m in enumerate(messages) if m is human)
            messages[at] = HumanMessage(
                "\n\n".join([*blocks, f"{USE_FACTS}\nCustomer: {text}"]), id=human.id
            )
            sent = request.override(messages=messages)
        else:
            base = request.system_message.text if request.system_message else ""
            system = SystemMessage("\n\n".join([base, *blocks]).strip())
            sent = request.override(system_message=system)
        response = handler(sent)
        if self.store is not None:
            answers = getattr(response, "result", None) or [response]
            answer = next((m for m in reversed(answers) if isinstance(m, AIMessage)), None)
            if answer is not None and answer.text and not answer.tool_calls:
                self._remember(turn, str(answer.text), role="assistant")
        return response

    def _provide_once(self, turn: TurnContext, text: str) -> list[str]:
        """The providers' blocks for this turn, computed on its first model call. Each block
        a provider found is recorded as a tool call under the provider's name: for a model
        without tools, the middleware is what looked the order or the article up."""
        key = (turn.session_id, turn.turn)
        with self._lock:
            done = self._provided.get(key)
        if done is not None and done[0] == text:
            return done[1]
        blocks = []
        for name, provider in self.providers.items():
            started = time.perf_counter()
            status, error, block = "ok", None, None
            extra: dict[str, Any] = {}
            try:
                found = provider(turn.user_id, text)
                if isinstance(found, Provided):
                    block, extra = found.text, found.detail
                else:
                    block = found
            except ContextUnavailable as failure:
                log.warning("context provider %s: %s", name, failure)
                status, error, block = "error", str(failure)[:500], failure.block
            except Exception as failure:  # a context provider never breaks the turn
                log.exception("context provider %s failed", name)
                status, error = "error", f"{type(failure).__name__}: {failure}"[:500]
            if block is None and status == "ok":
                continue  # nothing to look up in this message
            emit(
                self.events,
                "tool_call",
                name,
                (time.perf_counter() - started) * 1000,
                status=status,
                error=error,
                detail=cast(
                    ToolCallDetail,
                    {
                        "args": {"message": text[:200]},
                        "result": (block or "")[:300],
                        "injected": True,
                        **extra,
                    },
                ),
            )
            if block:
                blocks.append(block)
        with self._lock:
            self._provided = {k: v for k, v in self._provided.items() if k[0] != turn.session_id}
            self._provided[key] = (text, blocks)
        return blocks

    def _recall_once(self, turn: TurnContext, text: str, *, folded: bool) -> list[Memory]:
        """The memories for this turn: the top-k semantic hits for the message and, once the
        conversation has been summarized, the facts taken from this session's own messages
        (the summary may have dropped them; these are what the folded messages said)."""
        assert self.store is not None
        key = (turn.session_id, turn.turn)
        with self._lock:
            done = self._recalled.get(key)
        if done is not None and done[0] == text:
            return done[1]
        self.flush(turn.user_id)
        # The message by meaning, and each identifier in it (order numbers, e-mail addresses)
        # exactly: one embedding, one batched request.
        queries, keys = [text], identifiers(text)
        started = time.perf_counter()
        status, error = "ok", None
        memories: list[Memory] = []
        restored: list[Memory] = []
        try:
            hits = self.store.recall(
                turn.user_id,
                queries,
                keys=keys,
                k=self.k,
                threshold=self.threshold,
                ref=turn,
            )
            memories = _merge(hits, self.k)
            if folded:
                seen = {m.id for m in memories}
                restored = restore_order(
                    [
                        m
                        for m in self.store.session_memories(
                            turn.user_id, turn.session_id, limit=1_000
                        )
                        if m.id not in seen
                    ]
                )[:MAX_RESTORED_FACTS]
        except MemoryUnavailable as failure:
            status, error = "error", str(failure)
            log.warning("memory recall skipped: %s", failure)
        latency_ms = (time.perf_counter() - started) * 1000
        emit(
            self.events,
            "memory_recall",
            "memory",
            latency_ms,
            status=status,
            error=error,
            hits=len(memories),
            top_score=max((m.score for m in memories), default=None),
            detail=RecallDetail(
                queries=len(queries) + len(keys),
                memories=[
                    MemoryItem(text=m.text, kind=m.kind, score=round(m.score, 4)) for m in memories
                ],
                restored=[MemoryItem(text=m.text, kind=m.kind) for m in restored],
            ),
        )
        with self._lock:
            # Only the current turn of each session is needed; drop the rest.
            self._recalled = {k: v for k, v in self._recalled.items() if k[0] != turn.session_id}
            self._recalled[key] = (text, memories + restored)
        return memories + restored

    # Facts ----------------------------------------------------------------------------------

    def _remember(self, turn: TurnContext, text: str, *, role: str) -> None:
        """Queue the facts of one message for storage, once per turn and role. Done inside
        the model call rather than in an `after_model` hook: a hook is one more graph step
        per call, and this way the customer's facts are embedded while the model answers."""
        if not self._first_time(turn, role):
            return
        facts = extract_facts(text, role=role)
        if facts:
            self._write(turn, facts)

    def _first_time(self, turn: TurnContext, role: str) -> bool:
        key = (turn.session_id, turn.turn, role)
        with self._lock:
            if key in self._stored:
                return False
            self._stored = {k for k in self._stored if k[0] != turn.session_id or k[1] == turn.turn}
            self._stored.add(key)
            return True

    def _write(self, turn: TurnContext, facts: list[Any]) -> None:
        store_ = self.store
        assert store_ is not None

        def store() -> int:
            try:
                return store_.remember(turn.user_id, facts, session_id=turn.session_id, ref=turn)
            except Exception:  # logged; the conversation goes on without the fact
                log.exception("could not store %d facts for a user", len(facts))
                return 0

        future = self._writer.submit(store)
        with self._lock:
            pending = [f for f in self._pending.get(turn.user_id, []) if not f.done()]
            self._pending[turn.user_id] = [*pending, future]

    def flush(self, user_id: str | None = None, timeout: float = 10.0) -> None:
        """Wait for pending writes (of one user, or all): read-your-writes before a recall."""
        with self._lock:
            if user_id is None:
                futures = [f for fs in self._pending.values() for f in fs]
            else:
                futures = self._pending.pop(user_id, [])
        deadline = time.monotonic() + timeout
        for future in futures:
            try:
                future.result(timeout=max(0.0, deadline - time.monotonic()))
            except FuturesTimeout:
                # A stuck write must not stall the conversation: recall without it.
                log.warning("a memory write is still running after %.0f s", timeout)
                return


def restore_order(memories: list[Memory]) -> list[Memory]:
    """A folded session's facts in the order they are restored (`memories` newest first): the
    customer's identifiers first, however old (an order number given in the first message must
    not be pushed out by the agent's later promises), then the rest, newest first."""
    return sorted(memories, key=lambda m: m.kind not in IDENTIFIER_KINDS)


def fit_blocks(blocks: list[str], max_chars: int | None) -> list[str]:
    """The blocks cut to `max_chars` in all: whole lines first (the memories are listed best
    first), the last line that does not fit cut with an ellipsis."""
    if max_chars is None or sum(len(b) for b in blocks) <= max_chars:
        return blocks
    out: list[str] = []
    left = max_chars
    for block in blocks:
        lines: list[str] = []
        for line in block.split("\n"):
            if len(line) + 1 <= left:
                lines.append(line)
                left -= len(line) + 1
            elif left > 40:
                lines.append(line[: left - 2] + "…")
                left = 0
        if lines:
            out.append("\n".join(lines))
        if left <= 40:
            break
    return out


def _merge(hits: list[list[Memory]], k: int) -> list[Memory]:
    """One list from the per-query hits: each memory once (its best score), best first."""
    best: dict[str, Memory] = {}
    for per_query in hits:
        for memory in per_query:
            known = best.get(memory.id)
            if known is None or memory.score > known.score:
                best[memory.id] = memory
    return sorted(best.values(), key=lambda m: m.score, reverse=True)[:k]
