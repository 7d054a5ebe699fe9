"""A page view's independent reads, run at once.

An analyst page makes ten to twenty reads, most of them independent of each other: the KPIs,
the previous period's KPIs for the deltas, the series, the per-model table. Run one after the
other their times add up; each is a query the database runs on a core of its own while this
process waits on the socket, so on a machine with two cores or more most of them overlap.
`gather` runs them on a small shared pool of threads, each with its own pooled connection,
and returns their results in order. Measured at 10M calls on Postgres on the 2-core machine
(docs/performance.md has the figures): the cost page's figures over 7 days 184 -> 95 ms.

The other half, bringing a view's data up to date once before its reads, is
data.analytics.freshness.fresh_view.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

# Two cores and one interpreter lock: more threads than this only queue for the same cores
# (the database's and this process's) and hold more pooled connections. The engine's pool
# (data.store.db.make_engine: 5 + 5 overflow) stays larger than this, so a page view's reads never
# wait for a connection that another of its own reads holds.
WORKERS = 4

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_in_worker = threading.local()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="acb-read")
        return _pool


def _run(context: contextvars.Context, call: Callable[[], Any]) -> Any:
    _in_worker.active = True
    try:
        return context.run(call)
    finally:
        _in_worker.active = False


def gather(*calls: Callable[[], Any], inline: bool = False) -> list[Any]:
    """Run `calls` at once and return their results in order; the first exception raised by
    any of them is raised here (after every call has finished, so none is left running on a
    connection). Each runs in a copy of the caller's context (so fresh_view holds inside it).
    Called from one of the pool's own threads it runs them one after the other: a nested
    gather waiting on the pool it occupies could otherwise wait for itself. With `inline`, it
    runs them one after the other too: the tables' searches on SQLite, which runs inside this
    process, where two of its scans at once took 130 ms and one took 50 (measured at 1M calls on
    the 2-core machine; lighter reads, such as the feedback page's, still gain from running at
    once there)."""
    if len(calls) < 2 or inline or getattr(_in_worker, "active", False):
        return [call() for call in calls]
    pool = _executor()
    futures = [pool.submit(_run, contextvars.copy_context(), call) for call in calls[1:]]
    results: list[Any] = []
    error: BaseException | None = None
    try:
        results.append(calls[0]())  # the caller's own thread takes the first
    except BaseException as exc:  # re-raised once the others are done
        error = exc
    for future in futures:
        try:
            results.append(future.result())
        except BaseException as exc:  # the first one is raised below
            error = error or exc
    if error is not None:
        raise error
    return results
