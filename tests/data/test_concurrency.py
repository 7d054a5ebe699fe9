"""A page view's reads run at once (data.analytics.parallel_reads), and the collector's full passes
skip what a server holds for its whole life (data.config.heap)."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select

from data.analytics.freshness import ensure_fresh, fresh_view, is_fresh
from data.analytics.parallel_reads import gather
from data.analytics.rollups import refresh
from data.config import heap
from data.store.orm_rollups import RollupDirty
from data.store.recorder import record_calls
from tests.helpers.records import call


def test_gather_runs_its_calls_at_once_and_keeps_their_order() -> None:
    # Each call waits for the other two: one after the other, the barrier would break.
    barrier = threading.Barrier(3, timeout=10)

    def meet(value: int) -> int:
        barrier.wait()
        return value

    assert gather(lambda: meet(1), lambda: meet(2), lambda: meet(3)) == [1, 2, 3]


def test_gather_raises_the_first_error_once_every_call_has_finished() -> None:
    finished = threading.Event()

    def slow() -> str:
        time.sleep(0.2)
        finished.set()
        return "done"

    def broken() -> str:
        raise ValueError("the database said no")

    with pytest.raises(ValueError, match="the database said no"):
        gather(broken, slow)
    assert finished.is_set()  # nothing is left running on a connection


def test_a_gather_inside_a_gather_runs_in_line_instead_of_waiting_for_itself() -> None:
    # More nested gathers than the pool has threads: each would wait for a free thread held by
    # its own parent, if it did not run its calls in line.
    inner = [lambda: gather(lambda: 1, lambda: 2) for _ in range(12)]
    done: list[object] = []
    worker = threading.Thread(target=lambda: done.append(gather(*inner)), daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert done == [[[1, 2]] * 12]


def _dirty(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(RollupDirty)).scalar_one())


def test_a_view_refreshes_once_and_its_reads_skip_the_check(engine: Engine) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    record_calls(engine=engine, calls=[call(ts=now - timedelta(hours=1), session_id="s-1")])
    assert _dirty(engine) > 0
    with fresh_view(engine):
        assert _dirty(engine) == 0  # brought up to date on entry
        # A call that lands during the view is left for the next one: every read of this view
        # sees the same rollups, in this thread and in gather's.
        record_calls(engine=engine, calls=[call(ts=now - timedelta(hours=2), session_id="s-2")])
        ensure_fresh(engine)
        assert _dirty(engine) > 0
        assert gather(lambda: is_fresh(engine), lambda: is_fresh(engine)) == [True, True]
    assert not is_fresh(engine)
    ensure_fresh(engine)  # the next view refreshes
    assert _dirty(engine) == 0
    refresh(engine)


def test_an_inline_gather_runs_in_the_callers_thread() -> None:
    def where() -> str:
        return threading.current_thread().name

    here = where()
    assert gather(where, where, inline=True) == [here, here]
    names = gather(where, where, where)
    assert names[0] == here
    assert all(name.startswith("acb-read") for name in names[1:])


def test_settle_freezes_what_is_alive_and_garbage_is_still_collected() -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self  # a cycle: only the collector frees it

    old = Node()
    old_ref = weakref.ref(old)
    try:
        frozen = heap.settle(("json",))
        assert frozen == gc.get_freeze_count() > 10_000
        del old
        gc.collect()
        assert old_ref() is not None  # alive at the freeze: never walked, never freed
        new = Node()
        new_ref = weakref.ref(new)
        del new
        gc.collect()
        assert new_ref() is None  # made after it: collected as before
    finally:
        gc.unfreeze()
