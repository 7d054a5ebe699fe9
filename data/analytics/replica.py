"""Where an analyst view reads: the primary, or a streaming replica (`DATABASE_READ_URL`).

A view writes before it reads: the rollup refresh recomputes the hours that calls made dirty,
and the outcome rollup its queued days. Those writes always go to the primary
(`data.store.db.writer`). The view then reads the replica only when the replica's figures are
exact:

- it has replayed the primary's WAL up to just after that refresh (the usual case: streaming
  replication replays in milliseconds; the view waits up to `max_wait_s` for it), so it shows
  what the primary would; or
- it is further behind, but its own snapshot holds no unrefreshed hour or outcome day. Its
  rollups then match its raw rows exactly, and the view shows them "as of" the last commit it
  replayed, with how far behind that is;
- otherwise (behind, with hours its rollups do not hold yet) the view reads the primary, and
  says why. A lagging replica never shows a wrong number.

A replica that cannot be reached sends the view to the primary with a banner, and is not tried
again for `retry_s` (a blackholed host would otherwise cost the connect timeout on every
rerun)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, exists, select, text
from sqlalchemy.exc import SQLAlchemyError

from data.analytics import outcomes
from data.analytics.freshness import ensure_fresh
from data.store.db import describe, failure_reason
from data.store.orm_outcomes import RollupOutcomeDirty
from data.store.orm_rollups import RollupDirty

log = logging.getLogger(__name__)

_down: dict[str, tuple[float, str]] = {}  # replica URL -> (retry after, monotonic; reason)
_down_lock = threading.Lock()


@dataclass(frozen=True)
class Reading:
    """Where one view reads, and what the page says about it."""

    engine: Engine
    on_replica: bool
    as_of: datetime | None = None  # a replica behind the primary: its last replayed commit
    lag_s: float | None = None
    problem: str | None = None  # why the view reads the primary instead of the replica

    @property
    def key(self) -> str:
        """A cache key part: results read at different points in time never mix."""
        if not self.on_replica:
            return "primary"
        return f"replica@{self.as_of.isoformat()}" if self.as_of else "replica"


def lag_text(seconds: float | None) -> str:
    """42 s, 12 min, 3.5 h."""
    seconds = seconds or 0.0
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def choose(
    primary: Engine, replica: Engine, *, max_wait_s: float = 0.5, retry_s: float = 30.0
) -> Reading:
    """Refresh the rollups on the primary, then pick where the view reads (see the module).
    A primary that fails raises, as it would without a replica."""
    ensure_fresh(primary)
    outcomes.refresh(primary)
    where = describe(replica.url.render_as_string(hide_password=True))
    key = replica.url.render_as_string(hide_password=True)
    with _down_lock:
        down = _down.get(key)
    if down is not None and time.monotonic() < down[0]:
        return Reading(primary, False, problem=_unavailable(where, down[1]))
    with primary.connect() as connection:
        target = connection.execute(text("SELECT pg_current_wal_flush_lsn()::text")).scalar_one()
    deadline = time.monotonic() + max_wait_s
    try:
        with replica.connect() as connection:
            while True:
                standby, caught_up, replayed_at, lag_s = connection.execute(
                    text(
                        "SELECT pg_is_in_recovery(),"
                        " coalesce(pg_last_wal_replay_lsn() >= CAST(:target AS pg_lsn), true),"
                        " pg_last_xact_replay_timestamp(),"
                        " extract(epoch FROM now() - pg_last_xact_replay_timestamp())"
                    ),
                    {"target": target},
                ).one()
                connection.rollback()  # hold no snapshot open on the standby between polls
                if not standby or caught_up:
                    return Reading(replica, True)
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.02)
            pending = connection.execute(
                select(exists().select_from(RollupDirty), exists().select_from(RollupOutcomeDirty))
            ).one()
            connection.rollback()
    except SQLAlchemyError as error:
        reason = failure_reason(error)
        log.warning("the read replica %s is unavailable: %s", where, reason)
        with _down_lock:
            _down[key] = (time.monotonic() + retry_s, reason)
        return Reading(primary, False, problem=_unavailable(where, reason))
    with _down_lock:
        _down.pop(key, None)
    lag = float(lag_s or 0.0)
    if not any(pending):
        return Reading(replica, True, as_of=replayed_at, lag_s=lag)
    return Reading(
        primary,
        False,
        lag_s=lag,
        problem=(
            f"The read replica {where} is {lag_text(lag)} behind and has not replayed the latest "
            "rollup refresh yet, so this view reads the primary."
        ),
    )


def _unavailable(where: str, reason: str) -> str:
    return f"The read replica {where} is unavailable ({reason}), so this view reads the primary."


def forget_failures() -> None:
    """Try every replica again at the next view (tests, and an operator's restart)."""
    with _down_lock:
        _down.clear()
