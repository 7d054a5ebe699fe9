"""The long conversation of tests/files/long_conversation.json and what must hold after it on
the embedded model: the test (a small window) and `bench/long_conversation.py` (the full
window, `make bench-long`) run the same checks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from langchain_core.messages import BaseMessage
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from agent.telemetry import CallTelemetry
from data.store.orm import AgentEvent, ModelCall

CORPUS = Path(__file__).resolve().parent.parent / "files" / "long_conversation.json"
# The facts planted in the first messages, which must reach the model after the folds.
PLANTED = {"order": "A-10234", "card": "4242", "damage": "cracked screen"}
FINAL_QUESTION = "Before we finish: which order was it, which card did I pay with, and what broke?"


def corpus() -> list[str]:
    """30+ customer messages of about 800 characters; the facts are in the first three."""
    messages = json.loads(CORPUS.read_text())
    assert len(messages) >= 30 and min(len(m) for m in messages) >= 600
    return list(messages)


@contextmanager
def requests_sent() -> Iterator[list[list[BaseMessage]]]:
    """The chat model's requests as sent (after folds and memory), one list per call."""
    sent: list[list[BaseMessage]] = []
    original = CallTelemetry.on_chat_model_start

    def capture(self: CallTelemetry, serialized: Any, messages: Any, **kw: Any) -> None:
        if self.purpose == "chat" and (kw.get("metadata") or {}).get("lc_source") is None:
            sent.append(list(messages[0]))
        original(self, serialized, messages, **kw)

    CallTelemetry.on_chat_model_start = capture  # type: ignore[method-assign]
    try:
        yield sent
    finally:
        CallTelemetry.on_chat_model_start = original  # type: ignore[method-assign]


def rows(engine: Engine, model: type[Any], session_id: str) -> list[Any]:
    with Session(engine) as session:
        return list(
            session.scalars(select(model).where(model.session_id == session_id).order_by(model.id))
        )


def folds(engine: Engine, session_id: str) -> list[AgentEvent]:
    return [e for e in rows(engine, AgentEvent, session_id) if e.kind == "summarization"]


def chat_calls(engine: Engine, session_id: str) -> list[ModelCall]:
    return [c for c in rows(engine, ModelCall, session_id) if c.purpose == "chat"]


def check(
    *,
    engine: Engine,
    session_id: str,
    window: int,
    turns: int,
    sent: list[list[BaseMessage]],
    under_trigger: bool = True,
    facts: tuple[str, ...] = tuple(PLANTED),
) -> dict[str, Any]:
    """Assert what a long conversation on the embedded model must show, and return its
    figures: every turn answered, summarized before any request passes the trigger (counted by
    the server's own tokenizer), none past the window, and the planted facts in the last
    request after the folds (`facts`, by name: all of them unless told). With
    `under_trigger`, also that no request after a fold passes the trigger: true on the full
    window, where the memories recalled after a fold are small beside it; on a small window
    they can take a request a few tokens past it."""
    calls = chat_calls(engine, session_id)
    events = folds(engine, session_id)
    assert events, "the conversation was summarized"
    detail = json.loads(str(events[0].detail))
    limit = detail["trigger_tokens"]
    assert detail["counted_by"] == "server tokenizer"
    ok = [c for c in calls if c.status == "ok"]
    assert len(ok) == turns, f"every turn answered: {len(ok)} of {turns}"
    peak = max(c.context_tokens for c in ok)
    assert peak <= window, f"no request passes the window ({peak} > {window})"
    if under_trigger:
        assert peak < limit, f"every request stays under the trigger ({peak} >= {limit})"
    first_fold_turn = min(e.turn for e in events)
    assert all(c.context_tokens < limit for c in ok if c.turn <= first_fold_turn)
    final = "\n".join(str(m.text) for m in sent[-1])
    missing = [PLANTED[name] for name in facts if PLANTED[name] not in final]
    assert not missing, (
        f"the planted facts reach the model after the folds; missing {missing} in:\n{final}"
    )
    return {
        "turns": turns,
        "summarizations": len(events),
        "first_fold_turn": first_fold_turn,
        "trigger_tokens": limit,
        "window_tokens": window,
        "peak_context_tokens": peak,
        "peak_context_percent": round(100 * peak / window, 1),
    }
