"""The append-only audit log: who signed in (or failed to), scored, claimed, assigned, exported,
changed a user, a role, a price or a budget. `record` is the one writer; the table's triggers
refuse UPDATE and DELETE."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.exc import SQLAlchemyError

from data.store.db import failure_reason
from data.store.orm import utcnow
from data.store.orm_team import AuditEntry

log = logging.getLogger(__name__)

# The actions the app writes (other modules may add their own; the page lists what is stored).
ACTIONS = (
    "sign_in",
    "sign_in_failed",
    "sign_out",
    "user_added",
    "password_changed",
    "role_changed",
    "user_disabled",
    "user_enabled",
    "score_saved",
    "claim",
    "claim_released",
    "queue_added",
    "assigned",
    "export",
    "price_changed",
    "budget_changed",
)
COLUMNS = ["id", "ts", "actor", "action", "target", "detail"]
A = AuditEntry.__table__.c


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def record(
    *,
    engine: Engine,
    actor: str,
    action: str,
    target: str = "",
    detail: Mapping[str, Any] | None = None,
) -> None:
    """Append one entry. Raises SQLAlchemyError if the database refuses it, so a caller that
    must not act unaudited can stop; `try_record` is the variant that only logs."""
    with engine.begin() as connection:
        connection.execute(
            insert(AuditEntry).values(
                ts=utcnow(),
                actor=_clip(actor or "anonymous", 128),
                action=_clip(action, 48),
                target=_clip(target or "", 256),
                detail=None
                if not detail
                else json.dumps(dict(detail), ensure_ascii=False, default=str, sort_keys=True),
            )
        )


def try_record(
    *,
    engine: Engine,
    actor: str,
    action: str,
    target: str = "",
    detail: Mapping[str, Any] | None = None,
) -> bool:
    """`record`, but a database error is logged (action and reason, no detail) instead of
    raised: for actions that already happened, such as a download."""
    try:
        record(engine=engine, actor=actor, action=action, target=target, detail=detail)
    except SQLAlchemyError as error:
        reason = failure_reason(error)
        log.warning("audit entry %s by %s not written: %s", action, actor, reason)
        return False
    return True


@dataclass(frozen=True, slots=True)
class AuditQuery:
    start: datetime
    end: datetime
    actor: str | None = None
    actions: tuple[str, ...] = ()
    target: str | None = None  # substring, case-insensitive
    limit: int = 5_000


def entries(*, engine: Engine, query: AuditQuery) -> pd.DataFrame:
    """Entries with start <= ts < end, newest first, filtered by actor, actions and a target
    substring, at most `limit` rows."""
    where = [A.ts >= query.start, A.ts < query.end]
    if query.actor:
        where.append(A.actor == query.actor)
    if query.actions:
        where.append(A.action.in_(query.actions))
    if query.target:
        # Bound as a parameter; LIKE's own wildcards in the text are escaped.
        escaped = query.target.lower().replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_")
        where.append(func.lower(A.target).like(f"%{escaped}%", escape="\\"))
    statement = (
        select(A.id, A.ts, A.actor, A.action, A.target, A.detail)
        .where(*where)
        .order_by(A.ts.desc(), A.id.desc())
        .limit(query.limit)
    )
    with engine.connect() as connection:
        rows = connection.execute(statement).all()
    return pd.DataFrame([tuple(r) for r in rows], columns=COLUMNS)


def known(*, engine: Engine) -> tuple[list[str], list[str]]:
    """The actors and the actions that occur in the log, sorted (for the page's filters)."""
    with engine.connect() as connection:
        actors = connection.execute(select(A.actor).distinct().order_by(A.actor)).scalars()
        actions = connection.execute(select(A.action).distinct().order_by(A.action)).scalars()
        return list(actors), list(actions)


def count(*, engine: Engine, actions: Sequence[str] = ()) -> int:
    statement = select(func.count()).select_from(AuditEntry.__table__)
    if actions:
        statement = statement.where(A.action.in_(actions))
    with engine.connect() as connection:
        return int(connection.execute(statement).scalar_one())
