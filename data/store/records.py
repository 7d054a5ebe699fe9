"""Domain records that cross layers: one model call and one agent event, as the agent measured
them, and the typed detail of each kind of event (stored as JSON in agent_events.detail)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, NotRequired, TypedDict

from data.store.orm import utcnow


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One model call. `cost_usd` is None exactly when `cost_status == "unknown"`."""

    user_id: str
    session_id: str
    turn: int
    purpose: str
    provider: str
    model: str
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    cost_usd: float | None
    cost_status: str
    latency_ms: float
    ttft_ms: float | None
    context_tokens: int
    context_window: int | None
    status: str = "ok"
    error: str | None = None
    usage_source: str = "provider"
    run_id: str | None = None
    ts: datetime = field(default_factory=utcnow)
    demo: bool = False

    @property
    def context_percent(self) -> float | None:
        if not self.context_window:
            return None
        return 100.0 * self.context_tokens / self.context_window

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


class MemoryItem(TypedDict):
    text: str
    kind: str
    score: NotRequired[float]


class RecallDetail(TypedDict):
    """memory_recall: how many queries were embedded, the memories found, and (after a fold)
    the facts restored from the session's own folded messages."""

    queries: int
    memories: list[MemoryItem]
    restored: NotRequired[list[MemoryItem]]


class ToolCallDetail(TypedDict, total=False):
    """tool_call: the arguments, the start of the result, whether the middleware injected it
    into the prompt (a model without tools), and what the tool adds (the help-center articles
    behind an answer, an order's number, a ticket's id)."""

    args: dict[str, Any]
    result: str
    injected: bool
    articles: list[dict[str, Any]]


class SummarizationDetail(TypedDict):
    """summarization: the summary, how many messages were kept of how many configured, and the
    trigger and window it was measured against."""

    summary: str
    kept_messages: int
    configured_keep: str  # as configured, e.g. "messages:50"
    keep_reduced: bool
    trigger_tokens: int
    window: int
    counted_by: str


class WindowDetail(TypedDict):
    """context_guard: the window a request or a message did not fit, and (for a message) the
    limit of its share."""

    window: int | None
    counted_by: NotRequired[str]
    limit: NotRequired[int]


class BudgetRefusalDetail(TypedDict):
    """budget_refusal: the refusal as the API returns it, and the call's estimate."""

    error: str
    message: str
    scope: str
    period: str
    spent_usd: float
    limit_usd: float
    estimate_usd: float


class CancelDetail(TypedDict):
    """turn_cancelled: how much of the answer had been streamed."""

    streamed_chars: int


EventDetail = (
    RecallDetail
    | ToolCallDetail
    | SummarizationDetail
    | WindowDetail
    | BudgetRefusalDetail
    | CancelDetail
)


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A memory recall, a tool call or a summarization, as the agent timed it."""

    user_id: str
    session_id: str
    turn: int
    kind: str  # "memory_recall" | "tool_call" | "summarization"
    name: str
    latency_ms: float
    status: str = "ok"
    error: str | None = None
    hits: int | None = None
    top_score: float | None = None
    model: str | None = None
    tokens_before: int | None = None
    tokens_after: int | None = None
    messages_folded: int | None = None
    detail: EventDetail | None = None
    ts: datetime = field(default_factory=utcnow)

    def as_row(self) -> dict[str, Any]:
        row = asdict(self)
        if self.detail is not None:
            row["detail"] = json.dumps(self.detail, default=str)
        return row
