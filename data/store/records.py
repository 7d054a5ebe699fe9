"""Domain records that cross layers: one model call, as the agent measured it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

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
    detail: str | None = None  # JSON
    ts: datetime = field(default_factory=utcnow)

    def as_row(self) -> dict[str, Any]:
        return asdict(self)
