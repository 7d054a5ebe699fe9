"""The loop every background worker shares: one pass (`run_once`) every `interval_s` seconds on
a daemon thread until `stop()`. A failed pass is logged and the next one tries again (the
database or the receiver may be briefly down)."""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from typing import Any, Self

from sqlalchemy import Connection, func, select

log = logging.getLogger(__name__)


class BackgroundWorker(ABC):
    """Subclasses set `thread_name` and `interval_s` and define `run_once`; one that holds a
    client closes it in its own `stop`, after this one."""

    thread_name = "worker"
    interval_s: float

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @abstractmethod
    def run_once(self) -> object:
        """One pass: deliver, sync or check what is due now."""

    def start(self) -> Self:
        """Run passes on a daemon thread until stop(); a second start while running does
        nothing."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:
                log.exception("%s pass failed", self.thread_name)
            self._stop.wait(self.interval_s)


def count_sync_states(connection: Connection, columns: Any, counts: dict[str, int]) -> None:
    """Add an outbox table's rows per sync state to `counts` (pending, synced, failed, local),
    and to "retrying" the pending ones that already failed at least once (waiting out a
    backoff). `columns` is the table's `.c`; both outboxes (feedback, tickets) share the shape."""
    rows = connection.execute(
        select(
            columns.sync_state,
            func.count(),
            func.sum((columns.attempts > 0).cast(columns.attempts.type)),
        ).group_by(columns.sync_state)
    ).all()
    for state, count, retried in rows:
        counts[state] = counts.get(state, 0) + int(count)
        if state == "pending":
            counts["retrying"] += int(retried or 0)
