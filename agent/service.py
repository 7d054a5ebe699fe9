"""One chat turn: validate, store the user's message, stream the agent's answer, store it."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import unicodedata
import uuid
from collections.abc import Callable, Generator
from contextlib import AbstractContextManager, closing
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import openai
import psycopg
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, HumanMessage
from langsmith import Client as LangSmithClient
from langsmith.run_helpers import tracing_context
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from agent.budget import BudgetExceeded
from agent.context import TurnContext
from agent.ledger import TurnLedger
from agent.middleware import EmptyAnswer
from agent.ratelimit import RateLimiter
from agent.window import ContextWindowExceeded, MessageTooLong, WindowCounter
from data.access.sanitize import is_blank
from data.store import conversations
from data.store.conversations import MAX_MESSAGE_CHARS
from data.store.recorder import record_event
from data.store.records import (
    CallRecord,
    CancelDetail,
    EventRecord,
    RecallDetail,
    WindowDetail,
)

log = logging.getLogger(__name__)


class ChatInputError(ValueError):
    """The user's message cannot be sent as it is (the text says why)."""


class RateLimited(ChatInputError):
    """The user has used their turns for now; `retry_after_s` says when to try again."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(
            f"Too many messages in a short time. Try again in {retry_after_s:.0f} seconds."
        )
        self.retry_after_s = retry_after_s


class SessionNotFound(ChatInputError):
    """The session belongs to another user (told apart from a missing one by nobody)."""


class SessionBusy(ChatInputError):
    """Another turn of the same session is still running."""


class DependencyError(RuntimeError):
    """A dependency (the model server or the database) is unavailable; the text names it.
    `dependency` is "model" or "database"; `timeout` is True when it did not answer in time."""

    def __init__(self, message: str, *, dependency: str = "model", timeout: bool = False) -> None:
        super().__init__(message)
        self.dependency = dependency
        self.timeout = timeout


class TurnFailed(RuntimeError):
    """The model gave no usable answer (empty, no generations, the window); the call is
    recorded as failed, the customer's message is kept and the next turn works."""


def clean_message(text: str | None) -> str:
    """Normalise a chat message or raise ChatInputError with the reason."""
    if text is None:
        raise ChatInputError("Type a message first.")
    text = unicodedata.normalize("NFC", text)
    # Control characters (other than newline and tab) break transcripts and exports.
    text = "".join(c for c in text if c in "\n\t" or unicodedata.category(c) != "Cc").strip()
    if is_blank(text):  # zero-width spaces, fillers and combining marks alone show nothing
        raise ChatInputError("The message is empty.")
    if len(text) > MAX_MESSAGE_CHARS:
        raise ChatInputError(
            f"The message has {len(text):,} characters; the limit is {MAX_MESSAGE_CHARS:,}."
        )
    return text


@dataclass
class TurnOutcome:
    """Filled in while a turn streams; complete once the stream is exhausted. `calls` and
    `events` are what the turn recorded (model calls of every purpose, recalls, tool calls,
    folds), also when it failed."""

    session_id: str
    turn: int = 0
    text: str = ""
    run_id: str | None = None
    wall_ms: float = 0.0
    chunks: list[str] = field(default_factory=list)
    calls: list[CallRecord] = field(default_factory=list)
    events: list[EventRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Set when the caller stopped reading the answer before it ended (recorded with the turn).
    cancelled: bool = False
    cancel_reason: str = "stopped before the answer was complete"

    @property
    def chat_calls(self) -> list[CallRecord]:
        return [c for c in self.calls if c.purpose == "chat"]

    def tokens(self) -> dict[str, int]:
        """The turn's chat-model usage: input (cached included), cached input, output."""
        chat = self.chat_calls
        return {
            "input_tokens": sum(c.input_tokens for c in chat),
            "cached_input_tokens": sum(c.cached_input_tokens for c in chat),
            "output_tokens": sum(c.output_tokens for c in chat),
        }

    @property
    def cost_usd(self) -> float | None:
        """What the turn cost, the summarizer's and the embedder's calls included; None when
        any call is unpriced."""
        if any(c.cost_usd is None for c in self.calls):
            return None
        return sum(c.cost_usd or 0.0 for c in self.calls)

    @property
    def cost_status(self) -> str:
        statuses = {c.cost_status for c in self.calls}
        if "unknown" in statuses or any(c.cost_usd is None for c in self.calls):
            return "unknown"
        return "provided" if "provided" in statuses else "computed"

    @property
    def ttft_ms(self) -> float | None:
        return next((c.ttft_ms for c in self.chat_calls if c.ttft_ms is not None), None)

    @property
    def context_percent(self) -> float | None:
        found = [p for c in self.chat_calls if (p := c.context_percent) is not None]
        return max(found, default=None)

    def memories(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for event in self.events:
            if event.kind == "memory_recall" and event.detail:
                out += [dict(m) for m in cast(RecallDetail, event.detail)["memories"]]
        return out

    def tools(self) -> list[dict[str, Any]]:
        return [
            {"name": e.name, "status": e.status, "latency_ms": round(e.latency_ms, 1)}
            for e in self.events
            if e.kind == "tool_call"
        ]


@dataclass(frozen=True)
class Tracing:
    """Where agent runs are traced: a LangSmith client and project, or nowhere (client None)."""

    client: LangSmithClient | None
    project: str

    def context(self) -> AbstractContextManager[None]:
        # enabled=False is explicit: with LangSmith unconfigured the agent makes no call to it,
        # whatever LANGSMITH_TRACING says in the process environment.
        if self.client is None:
            return tracing_context(enabled=False)
        return tracing_context(enabled=True, client=self.client, project_name=self.project)


NO_TRACING = Tracing(client=None, project="")


class ChatService:
    """The chat page's only entry point to the agent."""

    def __init__(
        self,
        *,
        agent: Any,
        engine: Engine,
        model_label: str,
        tracing: Tracing = NO_TRACING,
        counter: WindowCounter | None = None,
        ledger: TurnLedger | None = None,
        limiter: RateLimiter | None = None,
        session_wait_s: float = 30.0,
        model_timeout_s: float = 60.0,
        warm: Callable[[TurnContext, str], None] | None = None,
    ) -> None:
        self.agent = agent
        self.engine = engine
        self.model_label = model_label
        self.tracing = tracing
        self.counter = counter
        self.ledger = ledger
        self.limiter = limiter
        self.session_wait_s = session_wait_s
        self.model_timeout_s = model_timeout_s
        # Called with the stored message before the agent runs (MemoryMiddleware.warm: the
        # message is embedded while the graph sets up and checks the budget).
        self.warm = warm
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def _check_size(self, *, user_id: str, session_id: str, text: str) -> None:
        """Refuse, before anything is stored or sent, a message that alone would take more
        than its share of the model's window (recorded as a `context_guard` event)."""
        if self.counter is None:
            return
        try:
            self.counter.check_message(text)
        except MessageTooLong as error:
            try:
                record_event(
                    engine=self.engine,
                    event=EventRecord(
                        user_id=user_id,
                        session_id=session_id,
                        turn=0,
                        kind="context_guard",
                        name="refused",
                        latency_ms=0.0,
                        status="error",
                        error="message longer than its share of the window",
                        tokens_before=error.tokens,
                        detail=WindowDetail(limit=error.limit, window=self.counter.window),
                    ),
                )
            except SQLAlchemyError:
                log.warning("could not record a refused message")
            raise ChatInputError(str(error)) from None

    def _session_lock(self, session_id: str) -> threading.Lock:
        with self._locks_guard:
            lock = self._locks.get(session_id)
            if lock is None:
                lock = self._locks[session_id] = threading.Lock()
            return lock

    def stream_turn(
        self, *, user_id: str, session_id: str, message: str, outcome: TurnOutcome
    ) -> Generator[str, None, None]:
        """Yield the answer's text as it streams. Raises ChatInputError (RateLimited,
        SessionNotFound, SessionBusy among them), DependencyError or TurnFailed.

        Checked before anything is written: the message, its size against the window, the
        user's rate limit. One turn per session at a time: a second one waits up to
        SESSION_WAIT_S for the first, then gets SessionBusy, so a transcript never
        interleaves two turns."""
        text = clean_message(message)
        user_id = user_id.strip()
        if not user_id:
            raise ChatInputError("Enter a user id first.")
        self._check_size(user_id=user_id, session_id=session_id, text=text)
        if self.limiter is not None:
            wait = self.limiter.check(user_id)
            if wait is not None:
                raise RateLimited(wait)
        lock = self._session_lock(session_id)
        if not lock.acquire(timeout=self.session_wait_s):
            raise SessionBusy(
                "Another message of this conversation is still being answered; "
                "try again when it is done."
            )
        try:
            yield from self._turn(
                user_id=user_id, session_id=session_id, text=text, outcome=outcome
            )
        finally:
            lock.release()

    def _turn(
        self, *, user_id: str, session_id: str, text: str, outcome: TurnOutcome
    ) -> Generator[str, None, None]:
        started = time.perf_counter()
        try:
            turn = conversations.start_turn(
                engine=self.engine, session_id=session_id, user_id=user_id, text=text
            )
        except PermissionError:
            raise SessionNotFound(
                f"No conversation {session_id} belongs to this user; start a new one."
            ) from None
        except SQLAlchemyError as error:
            raise DependencyError(
                f"The database is unavailable: {_reason(error)}", dependency="database"
            ) from None
        if self.ledger is not None:
            # The turn's calls and events are written together when it ends (TurnLedger).
            self.ledger.open(session_id, turn)
        context = TurnContext(user_id=user_id, session_id=session_id, turn=turn)
        if self.warm is not None:
            try:
                self.warm(context, text)
            except Exception:  # only a head start: the recall embeds the message itself
                log.exception("could not start embedding the message early")
        run_id = uuid.uuid4()
        outcome.turn, outcome.run_id = turn, str(run_id)
        config = {
            "configurable": {"thread_id": session_id},
            # For the LangSmith trace only; the agent reads who is calling from the context.
            "metadata": {"user_id": user_id, "session_id": session_id, "turn": turn},
            "run_id": run_id,
            "run_name": "support_turn",
        }
        stop = threading.Event()  # set when the caller stops reading: the turn is cancelled
        # The model call runs on LangGraph's worker thread: closing our stream alone would let
        # it generate to the end. This handler ends the model's stream at its next token.
        config["callbacks"] = [StopWhenSet(stop)]
        try:
            with (
                self.tracing.context(),
                closing(
                    # durability="exit": the conversation state is checkpointed once, when the
                    # turn ends, instead of after every step of the graph. A turn that fails
                    # midway leaves the previous state (the user's message is in our own table).
                    self.agent.stream(
                        {"messages": [HumanMessage(text)]},
                        config=config,
                        context=context,
                        stream_mode="messages",
                        durability="exit",
                    )
                ) as stream,
            ):
                for chunk, meta in stream:
                    # Streamed tokens arrive as chunks; an answer that was not streamed (a
                    # response-cache hit) arrives whole, as one AIMessage.
                    if (
                        isinstance(chunk, AIMessage)
                        and meta.get("langgraph_node") == "model"
                        and chunk.text
                        and not chunk.tool_calls
                    ):
                        outcome.chunks.append(chunk.text)
                        try:
                            yield chunk.text
                        except GeneratorExit:  # before `closing` waits for the model call
                            stop.set()
                            raise
        except (openai.APITimeoutError, httpx.TimeoutException):
            raise DependencyError(
                f"The chat model ({self.model_label}) did not answer within "
                f"{self.model_timeout_s:g} s. Your message is saved; send it again.",
                timeout=True,
            ) from None
        except (openai.APIConnectionError, httpx.HTTPError) as error:
            raise DependencyError(
                f"The chat model ({self.model_label}) is unreachable: {_reason(error)}. "
                "Your message is saved; send it again when the model is back."
            ) from None
        except openai.APIStatusError as error:
            if _is_context_length(error):
                raise TurnFailed(
                    f"The chat model ({self.model_label}) refused the request: the "
                    "conversation no longer fits its input window. Your message is saved; "
                    "send it again and the conversation will be summarized first."
                ) from None
            raise DependencyError(
                f"The chat model ({self.model_label}) answered HTTP {error.status_code}. "
                "Your message is saved; try again."
            ) from None
        except BudgetExceeded:
            raise  # refused before any model call; the page and the API say why
        except (SQLAlchemyError, psycopg.Error, sqlite3.Error) as error:
            # The conversation state (the checkpointer) could not be read or written.
            raise DependencyError(
                f"The database is unavailable: {_reason(error)}. Your message is saved; "
                "send it again.",
                dependency="database",
            ) from None
        except (ContextWindowExceeded, EmptyAnswer) as error:
            raise TurnFailed(
                f"The chat model ({self.model_label}) gave no answer: {error}. "
                "Your message is saved; send it again."
            ) from None
        except Exception as error:
            # Anything else from the model's side ("No generations found in stream", a
            # malformed response): one clear line here, the traceback in the log.
            log.exception("turn %s of session %s failed", turn, session_id)
            raise TurnFailed(
                f"The chat model ({self.model_label}) gave no usable answer "
                f"({type(error).__name__}: {_reason(error)}). Your message is saved; "
                "send it again."
            ) from None
        finally:
            if stop.is_set():
                # The caller stopped reading (the chat page's Stop, an API client gone): the
                # agent's stream is closed above (no checkpoint: the next turn starts from the
                # previous state) and the reason is recorded.
                self._record_cancelled(context, outcome, started)
            outcome.warnings = list(context.warnings)
            if self.ledger is not None:
                records = self.ledger.take(session_id, turn)
                outcome.calls, outcome.events = records.calls, records.events
        outcome.text = "".join(outcome.chunks).strip()
        try:
            conversations.add_assistant_message(
                engine=self.engine,
                session_id=session_id,
                turn=turn,
                text=outcome.text,
                run_id=outcome.run_id,
            )
        except SQLAlchemyError as error:
            raise DependencyError(
                f"The answer could not be saved; the database is unavailable: {_reason(error)}",
                dependency="database",
            ) from None
        outcome.wall_ms = (time.perf_counter() - started) * 1000

    def _record_cancelled(self, context: TurnContext, outcome: TurnOutcome, started: float) -> None:
        """A `turn_cancelled` event with the reason: the customer's message then has a
        recorded reason instead of no answer (it goes with the turn's other records)."""
        outcome.cancelled = True
        event = EventRecord(
            user_id=context.user_id,
            session_id=context.session_id,
            turn=context.turn,
            kind="turn_cancelled",
            name="cancelled",
            latency_ms=(time.perf_counter() - started) * 1000,
            status="cancelled",
            error=outcome.cancel_reason,
            detail=CancelDetail(streamed_chars=sum(len(c) for c in outcome.chunks)),
        )
        try:
            if self.ledger is not None:
                self.ledger.event(event)
            else:
                record_event(engine=self.engine, event=event)
        except Exception:  # the turn is over either way; the log keeps what was lost
            log.exception("could not record the cancelled turn %s", context.turn)

    def run_turn(self, *, user_id: str, session_id: str, message: str) -> TurnOutcome:
        """The same turn without streaming to a caller (tests, scripts)."""
        outcome = TurnOutcome(session_id=session_id)
        for _ in self.stream_turn(
            user_id=user_id, session_id=session_id, message=message, outcome=outcome
        ):
            pass
        return outcome


class TurnStopped(Exception):
    """Raised in the model's stream when its turn was cancelled (the caller stopped reading)."""


class StopWhenSet(BaseCallbackHandler):
    """Ends a model call at its next token once `stop` is set (raise_error: LangChain passes
    the exception on instead of logging it, so the HTTP stream is closed)."""

    raise_error = True

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop

    def on_llm_new_token(self, token: Any, **kwargs: Any) -> None:  # type: ignore[override]
        if self.stop.is_set():
            raise TurnStopped("the turn was cancelled")


def _is_context_length(error: openai.APIStatusError) -> bool:
    if error.status_code != 400:
        return False
    text = f"{getattr(error, 'code', '')} {error.message}".lower()
    signs = ("context_length", "context length", "context window", "too long")
    return any(sign in text for sign in signs)


def _reason(error: BaseException) -> str:
    orig = getattr(error, "orig", None) or error.__cause__ or error
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return text[:200].rstrip(".")
