"""Model-call rows for tests: one CallRecord with sensible values, changed by keyword."""

from __future__ import annotations

from typing import Any

from data.store.records import CallRecord


def call(**changes: Any) -> CallRecord:
    """A priced gpt-4o-mini chat call of user u1, session s1, turn 1; `changes` override."""
    base = dict(
        user_id="u1",
        session_id="s1",
        turn=1,
        purpose="chat",
        provider="openai",
        model="gpt-4o-mini",
        input_tokens=1000,
        cached_input_tokens=200,
        output_tokens=50,
        cost_usd=0.0001,
        cost_status="computed",
        latency_ms=420.0,
        ttft_ms=120.0,
        context_tokens=1000,
        context_window=128_000,
    )
    base.update(changes)
    return CallRecord(**base)  # type: ignore[arg-type]
