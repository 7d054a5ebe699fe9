"""What one turn did, kept for its caller: every model call and agent event of the turn, so the
chat page and the API can answer with the turn's usage without reading it back from the
database.

A turn the chat service has opened (`open`) keeps its records in memory and writes them all at
its end (`take`), in one transaction: a turn makes five or six of them (the message's
embedding, the recall, the order and help-center lookups, the model call), and one committed
statement each cost about 0.4 ms of the turn's own time, where one transaction for all of them
costs about as much as two. The rows of a turn are then written together or not at all. Records
for a turn nobody opened (scripts that call the agent directly, the memory writer storing facts
after its turn ended) are written at once, one by one, as before."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from data.store.recorder import check_event
from data.store.records import CallRecord, EventRecord

log = logging.getLogger(__name__)

Key = tuple[str, int]  # (session_id, turn)
# A turn is taken when it ends, whatever happened; this only bounds a caller that never takes.
MAX_OPEN_TURNS = 10_000


@dataclass
class TurnRecords:
    calls: list[CallRecord] = field(default_factory=list)
    events: list[EventRecord] = field(default_factory=list)
    # Run once the records are written (see TurnLedger.after_write).
    after: list[Callable[[], None]] = field(default_factory=list)


class TurnLedger:
    """Holds an open turn's records until `take` writes them in one call of `write_turn`; a
    record of any other turn goes to its sink (`calls`, `events`) at once."""

    def __init__(
        self,
        *,
        calls: Callable[[CallRecord], None],
        events: Callable[[EventRecord], None],
        write_turn: Callable[[Sequence[CallRecord], Sequence[EventRecord]], None],
    ) -> None:
        self._calls = calls
        self._events = events
        self._write_turn = write_turn
        self._open: OrderedDict[Key, TurnRecords] = OrderedDict()
        self._lock = threading.Lock()

    def open(self, session_id: str, turn: int) -> None:
        """Hold this turn's records until `take`."""
        dropped = []
        with self._lock:
            self._open[(session_id, turn)] = TurnRecords()
            while len(self._open) > MAX_OPEN_TURNS:
                dropped.append(self._open.popitem(last=False))
        for key, records in dropped:
            log.warning("turn %s was never taken; its records are written now", key)
            self._write(records)

    def _hold(self, session_id: str, turn: int, add: Callable[[TurnRecords], None]) -> bool:
        """Add to the turn's held records if it is open (True); False if it is not."""
        with self._lock:
            held = self._open.get((session_id, turn))
            if held is not None:
                add(held)
        return held is not None

    def call(self, record: CallRecord) -> None:
        if not self._hold(record.session_id, record.turn, lambda held: held.calls.append(record)):
            self._calls(record)

    def event(self, record: EventRecord) -> None:
        check_event(record)  # the event sink's own check, before the event is held
        if not self._hold(record.session_id, record.turn, lambda held: held.events.append(record)):
            self._events(record)

    def after_write(self, session_id: str, turn: int, action: Callable[[], None]) -> bool:
        """Run `action` once this turn's records are written, if they are being held (True);
        False when the turn is not open (its records are written as they come), so the
        caller runs it now. A budget reservation is released this way: only once the call's
        row is committed does the spend it reserved show in the rows."""
        return self._hold(session_id, turn, lambda held: held.after.append(action))

    def take(self, session_id: str, turn: int) -> TurnRecords:
        """The turn's records (none if it was not opened), written first. A failed write is
        logged (the turn's answer is not lost for it) and the records are still returned."""
        with self._lock:
            held = self._open.pop((session_id, turn), None)
        if held is None:
            return TurnRecords()
        self._write(held)
        return held

    def _write(self, records: TurnRecords) -> None:
        try:
            if records.calls or records.events:
                self._write_turn(records.calls, records.events)
        except Exception:
            log.exception(
                "could not record a turn's %d model calls and %d events",
                len(records.calls),
                len(records.events),
            )
        finally:
            for action in records.after:
                try:
                    action()
                except Exception:
                    log.exception("an action after a turn's records failed")
