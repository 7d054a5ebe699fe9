"""When the rollups are read: a view brings them up to date once (`fresh_view`, `ensure_fresh`: the
dirty hours refreshed, queued days settled in the background), and every read inside the view
skips its own check (two queries and a connection checkout each), so every read of one view
sees the same refreshed rollups."""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    Engine,
    exists,
    literal,
    select,
)

from data.analytics.rollups import refresh_hours, settle_days
from data.store.db import writer
from data.store.orm_rollups import RollupDirty, RollupDirtyDays, RollupDirtyPercentileHours

log = logging.getLogger(__name__)

_settling: set[str] = set()  # engines whose queued days a background thread is settling
_settling_lock = threading.Lock()


def _settle_in_background(engine: Engine) -> None:
    key = engine.url.render_as_string(hide_password=True)
    with _settling_lock:
        if key in _settling:
            return
        _settling.add(key)

    def run() -> None:
        try:
            settle_days(engine)
        except Exception:  # a page view never fails for it; the next one tries again
            log.exception("settling day percentiles failed")
        finally:
            with _settling_lock:
                _settling.discard(key)

    threading.Thread(target=run, name="settle-days", daemon=True).start()


def ensure_fresh(engine: Engine) -> None:
    """Refresh the dirty hours (one indexed lookup when nothing is dirty; an hour's work when a
    call arrived) and settle queued days and hours in a background thread: a reader of a
    queued day or hour computes its percentiles from the raw rows meanwhile
    (data.analytics.source.stored_percentiles). Inside fresh_view, which did this once for the
    whole view, it returns. On a read replica the refresh runs on its primary
    (data.analytics.replica chose the replica for the view only if it had replayed the
    primary's refreshed rollups, or holds no unrefreshed hour of its own)."""
    if is_fresh(engine):
        return
    primary = writer(engine)
    if primary is not engine:
        ensure_fresh(primary)
        return
    with engine.connect() as connection:
        dirty = connection.execute(select(literal(1)).select_from(RollupDirty).limit(1)).first()
        queued = any(
            connection.execute(
                select(
                    exists().select_from(RollupDirtyDays),
                    exists().select_from(RollupDirtyPercentileHours),
                )
            ).one()
        )
    if dirty is not None:
        refresh_hours(engine)
    if dirty is not None or queued:
        _settle_in_background(engine)


_fresh: contextvars.ContextVar[frozenset[int]] = contextvars.ContextVar(
    "acb_fresh_engines", default=frozenset()
)


def is_fresh(engine: object) -> bool:
    """Whether the current view already brought `engine`'s rollups up to date."""
    return id(engine) in _fresh.get()


@contextmanager
def fresh_view(engine: Any) -> Iterator[None]:
    """Bring the rollups up to date once, then read the view inside the block without checking
    again (ensure_fresh returns at once there)."""
    from data.analytics.freshness import ensure_fresh

    ensure_fresh(engine)
    token = _fresh.set(_fresh.get() | {id(engine)})
    try:
        yield
    finally:
        _fresh.reset(token)
