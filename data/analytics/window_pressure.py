"""Where the model's input window pushed back: requests cut short by it, messages refused for
their length, and summarizations that kept fewer messages than configured."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
from sqlalchemy import Engine, and_, or_, select

from data.analytics.filters import Filters
from data.analytics.source import to_frame
from data.analytics.timebucket import bucket
from data.store.orm import AgentEvent, ModelCall

E = AgentEvent.__table__.c
C = ModelCall.__table__.c

KINDS = {
    "cut_short": "Request cut short by the window",
    "refused": "Message refused for its length",
    "kept_fewer": "Summarization kept fewer messages",
}
COLUMNS = ["ts", "bucket", "kind", "user", "session", "turn", "tokens", "reason"]
# How a provider says a request did not fit (OpenAI, llama.cpp, vLLM).
CONTEXT_ERRORS = ("%context length%", "%context_length%", "%context window%")


def _events(engine: Engine, filters: Filters) -> Any:
    kinds = E.kind.in_(["context_guard", "summarization"])
    parts = [E.ts >= filters.start, E.ts < filters.end, kinds]
    if filters.user:
        parts.append(E.user_id == filters.user)
    if filters.session:
        parts.append(E.session_id == filters.session)
    return select(
        E.ts,
        bucket(E.ts, dialect=engine.dialect.name, unit=filters.unit),
        E.kind,
        E.name,
        E.user_id,
        E.session_id,
        E.turn,
        E.tokens_before,
        E.error,
        E.detail,
    ).where(and_(*parts))


def window_incidents(*, engine: Engine, filters: Filters) -> pd.DataFrame:
    """One row per incident in the range, newest first: `kind` is one of KINDS, `tokens` the
    request's (or the message's) size, `reason` what happened."""
    events = to_frame(
        engine,
        _events(engine, filters),
        ["ts", "bucket", "k", "name", "user", "session", "turn", "tokens", "error", "detail"],
    )
    rows: list[dict[str, Any]] = []
    for e in events.itertuples():
        if e.k == "context_guard":
            kind = "refused" if e.name == "refused" else "cut_short"
            reason = str(e.error or "")
        else:
            detail = json.loads(str(e.detail)) if e.detail else {}
            if not detail.get("keep_reduced"):
                continue
            kind = "kept_fewer"
            reason = (
                f"kept {detail.get('kept_messages')} messages; configured "
                f"{detail.get('configured_keep')}"
            )
        rows.append(
            {
                "ts": e.ts,
                "bucket": e.bucket,
                "kind": kind,
                "user": e.user,
                "session": e.session,
                "turn": e.turn,
                "tokens": e.tokens,
                "reason": reason,
            }
        )
    failed = to_frame(
        engine,
        select(
            C.ts,
            bucket(C.ts, dialect=engine.dialect.name, unit=filters.unit),
            C.user_id,
            C.session_id,
            C.turn,
            C.context_tokens,
            C.error,
        ).where(
            filters.conditions(),
            C.purpose == "chat",
            C.status == "error",
            or_(*(C.error.ilike(p) for p in CONTEXT_ERRORS)),
        ),
        ["ts", "bucket", "user", "session", "turn", "tokens", "reason"],
    )
    frame = pd.concat(
        [pd.DataFrame(rows, columns=COLUMNS), failed.assign(kind="cut_short")[COLUMNS]],
        ignore_index=True,
    )
    return frame.sort_values("ts", ascending=False, kind="stable").reset_index(drop=True)


def window_counts(incidents: pd.DataFrame) -> dict[str, int]:
    """Incidents per kind (every kind present, zero when none)."""
    counts = incidents["kind"].value_counts()
    return {kind: int(counts.get(kind, 0)) for kind in KINDS}
