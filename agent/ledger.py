"""What one turn did, kept for its caller: every model call and agent event of the turn, as the
recorder wrote them, so the chat page and the API can answer with the turn's usage without
reading it back from the database."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from data.records import CallRecord, EventRecord

Key = tuple[str, int]  # (session_id, turn)
MAX_OPEN_TURNS = 10_000


@dataclass
class TurnRecords:
    calls: list[CallRecord] = field(default_factory=list)
    events: list[EventRecord] = field(default_factory=list)


class TurnLedger:
    """Passes each record on to its sink and keeps it under its turn until `take`. Turns nobody
    takes (scripts that call the agent directly) are dropped oldest first."""

    def __init__(
        self,
        *,
        calls: Callable[[CallRecord], None],
        events: Callable[[EventRecord], None],
    ) -> None:
        self._calls = calls
        self._events = events
        self._open: OrderedDict[Key, TurnRecords] = OrderedDict()
        self._lock = threading.Lock()

    def _records(self, key: Key) -> TurnRecords:
        with self._lock:
            found = self._open.get(key)
            if found is None:
                found = self._open[key] = TurnRecords()
                while len(self._open) > MAX_OPEN_TURNS:
                    self._open.popitem(last=False)
            return found

    def call(self, record: CallRecord) -> None:
        self._calls(record)
        self._records((record.session_id, record.turn)).calls.append(record)

    def event(self, record: EventRecord) -> None:
        self._events(record)
        self._records((record.session_id, record.turn)).events.append(record)

    def take(self, session_id: str, turn: int) -> TurnRecords:
        with self._lock:
            return self._open.pop((session_id, turn), None) or TurnRecords()
