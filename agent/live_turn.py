"""A chat turn that runs on a thread of its own while pages follow it: the answer does not depend
on the page run that asked for it.

Streamlit reruns a page for every click, and with fast reruns it starts the new run at once,
while the old run is still unwinding. An answer streamed inside a page run was cut off by any
click (a thumb on an earlier answer, another page) and raced the new run over the page's state.
Here the turn runs to its end (or to Stop) whatever the pages do; any run can follow it from
its first chunk, and exactly one run collects its result."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from agent.budget import BudgetExceeded
from agent.service import ChatInputError, ChatService, DependencyError, TurnFailed, TurnOutcome

log = logging.getLogger(__name__)

_running: weakref.WeakSet[LiveTurn] = weakref.WeakSet()


def wait_for_running(timeout: float = 30.0) -> int:
    """Wait until every turn still answering in this process has ended (or `timeout` passed):
    for a process that is about to close the stores its turns write to, such as the test suite
    between tests. The number still running afterwards."""
    deadline = time.monotonic() + timeout
    for turn in list(_running):
        turn.wait(max(0.0, deadline - time.monotonic()))
    return sum(1 for turn in list(_running) if not turn.done)


@dataclass(frozen=True, slots=True)
class Notice:
    """What a turn ended with, for the page to show once: `kind` is a Streamlit call name."""

    kind: str  # "info" | "warning" | "error"
    text: str


@dataclass(eq=False)
class LiveTurn:
    """One customer message being answered. `start` runs it; `follow` yields its text so far
    and then as it comes; `stop` asks it to end at its next chunk (recorded as cancelled);
    `collect` hands its result over once."""

    user_id: str
    session_id: str
    message: str
    outcome: TurnOutcome = field(init=False)
    notice: Notice | None = None
    # Before the turn stores the message: a transcript drawn up to here leaves the turn out.
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    chunks: list[str] = field(default_factory=list)
    _done: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _collected: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.outcome = TurnOutcome(session_id=self.session_id)

    def start(self, service: ChatService) -> LiveTurn:
        _running.add(self)
        threading.Thread(
            target=self._run, args=(service,), name=f"turn-{self.session_id[:8]}", daemon=True
        ).start()
        return self

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()

    def wait(self, timeout: float) -> bool:
        return self._done.wait(timeout)

    def _run(self, service: ChatService) -> None:
        stream = service.stream_turn(
            user_id=self.user_id,
            session_id=self.session_id,
            message=self.message,
            outcome=self.outcome,
        )
        try:
            for chunk in stream:
                self.chunks.append(chunk)  # one append: readers see whole chunks only
                if self._stop.is_set():
                    break
        except BudgetExceeded as error:  # refused before any model call
            self.notice = Notice("error", error.message)
        except ChatInputError as error:  # the service's own words, no customer text in them
            self.notice = Notice("warning", str(error))
        except (DependencyError, TurnFailed) as error:
            self.notice = Notice("error", str(error))
        except Exception:
            log.exception("turn of session %s failed", self.session_id)
            self.notice = Notice(
                "error", "The answer failed unexpectedly; your message is saved, send it again."
            )
        finally:
            # After a break (Stop) the service sees its stream closed and records the turn
            # as cancelled; otherwise this does nothing.
            stream.close()
            if self.outcome.cancelled and self.notice is None:
                self.notice = Notice(
                    "info",
                    "Stopped. Your message is kept, marked as not answered; send it again or "
                    "ask something else.",
                )
            self._done.set()

    def follow(self, poll_s: float = 0.03) -> Iterator[str]:
        """The answer's chunks from the first, then as they come, until the turn ends or is
        stopped. Several page runs may follow the same turn."""
        shown = 0
        while True:
            finished = self._done.is_set() or self._stop.is_set()
            while shown < len(self.chunks):
                yield self.chunks[shown]
                shown += 1
            if finished:
                return
            time.sleep(poll_s)

    def collect(self) -> bool:
        """True for the one caller that takes the ended turn's result; False for any other
        or while it runs."""
        with self._lock:
            if not self._done.is_set() or self._collected:
                return False
            self._collected = True
            return True
