"""Summarization replay: what recorded conversations would have cost, and how full their
context would have been, under another chat model and other summarization settings.

Each session's recorded chat calls are turned back into the conversation the agent held: the
first request, then per call the previous answer (its recorded output tokens) and what came
with the next request (a user message, or tool results within a turn), sized so that the
recorded request sizes are reproduced once the recorded folds are taken out again (a fold
removed `tokens_before - tokens_after` of its event, or else its summarizer call's input minus
its output), less what the request carried besides the conversation (system prompt, injected
memories: the recorded request after a fold minus the conversation the fold kept).

That conversation is replayed call by call, and before each call the agent's own decision is
made: `RecordedSummarization.plan_fold` (agent/middleware.py), the same method the agent's
fold calls, on an instance built exactly as agent/graph.py builds it (trigger, keep,
the fixed overhead of system prompt and recall reserve, the keep budget, the summary reserve)
for the setting under test, with a token counter that reads the recorded sizes. It rides on
LangChain's SummarizationMiddleware (`_should_summarize`, `_determine_cutoff_index`, which keeps
AI/tool pairs together). A fold replaces the messages before the cut point by a summary whose
size is the recorded summary size per folded token (data.analytics.replay_sessions.summary_ratio).

Costs are priced with genai-prices (data/integrations/prices.py) per call: the simulated request's
input tokens (the recorded cached share kept, never more than the request), the recorded output
tokens, and each simulated summarizer call."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from statistics import median
from typing import Any, Literal

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, SystemMessage, ToolMessage

from agent.middleware import RecordedSummarization
from agent.prompts import SYSTEM_PROMPT
from agent.scripted import ScriptedChatModel
from agent.window import WindowCounter
from data.analytics.replay_sessions import Trace
from data.config.settings import Settings
from data.integrations.prices import Rate, linear_rate

TriggerKind = Literal["fraction", "tokens", "messages"]
KeepKind = Literal["messages", "tokens"]
# (sessions done, sessions in all) -> keep going?
Progress = Callable[[int, int], bool]

TRIGGER_GRID = (0.6, 0.65, 0.7, 0.75, 0.8)
KEEP_GRID = (20, 30, 40, 50)


class ReplayError(ValueError):
    """A replay cannot run as asked (the text says why)."""


@dataclass(frozen=True, slots=True)
class Setting:
    """A chat model and summarization settings to replay under. `model` None replays each
    session on the model it was recorded with (and that model's recorded input window)."""

    model: str | None = None
    window: int | None = None
    trigger_kind: TriggerKind = "fraction"
    trigger_value: float = 0.75
    keep_kind: KeepKind = "messages"
    keep_value: int = 50
    summary_model: str | None = None
    provider: str = "openai"
    # As the agent has them (SUMMARY_KEEP_BUDGET_FRACTION, the summarizer's MAX_OUTPUT_TOKENS)
    # and any further triggers (SUMMARY_TRIGGER_TOKENS, SUMMARY_TRIGGER_MESSAGES).
    keep_budget_fraction: float = 0.4
    summary_max_tokens: int = 512
    also: tuple[tuple[str, float | int], ...] = ()

    @property
    def label(self) -> str:
        trigger = (
            f"{self.trigger_value:.0%}"
            if self.trigger_kind == "fraction"
            else f"{int(self.trigger_value):,} {self.trigger_kind}"
        )
        more = "".join(f" or {int(v):,} {k}" for k, v in self.also)
        return f"trigger {trigger}{more} · keep {self.keep_value:,} {self.keep_kind}"

    @classmethod
    def of_agent(
        cls,
        settings: Settings,
        *,
        model: str | None = None,
        window: int | None = None,
        summary_model: str | None = None,
    ) -> Setting:
        """The agent's current summarization settings (SUMMARY_* in Settings)."""
        (kind, value), *more = settings.summary_trigger
        keep_kind, keep_value = settings.summary_keep
        return cls(
            model=model,
            window=window,
            trigger_kind=kind,  # type: ignore[arg-type]
            trigger_value=float(value),
            keep_kind=keep_kind,  # type: ignore[arg-type]
            keep_value=int(keep_value),
            summary_model=summary_model,
            keep_budget_fraction=settings.summary_keep_budget_fraction,
            summary_max_tokens=settings.max_output_tokens,
            also=tuple(more),
        )

    def middleware(self, window: int) -> RecordedSummarization:
        """The agent's summarization middleware for a model with this input window, built as
        agent/graph.py builds it, counting the recorded sizes."""
        return _middleware(self, window)

    def window_for(self, trace: Trace) -> int:
        window = self.window if self.model is not None else trace.window
        if not window:
            raise ReplayError(
                f"Session {trace.session_id} has no recorded input window; pick a chat model."
            )
        return window


class RecordedSizes(WindowCounter):
    """A window counter that reads each replayed message's recorded size. The middleware counts
    the whole conversation before every call; a conversation is always a run of the same
    message objects, so a run's total is remembered and the next one adds only its new last
    message (one replayer, one thread; `reset` between sessions)."""

    def __init__(self, *, window: int) -> None:
        super().__init__(window=window)
        self._memo: dict[tuple[int, int, int], int] = {}

    def reset(self) -> None:
        self._memo.clear()

    def __call__(self, messages: Sequence[Any]) -> int:
        n = len(messages)
        if n == 0:
            return 0
        key = (id(messages[0]), id(messages[-1]), n)
        found = self._memo.get(key)
        if found is not None:
            return found
        first = id(messages[0])
        total = None
        for back in (1, 2, 3):  # a step adds one to three messages
            if n > back:
                before = self._memo.get((first, id(messages[-back - 1]), n - back))
                if before is not None:
                    total = before + count(messages[-back:])
                    break
        if total is None:
            total = count(messages)
        self._memo[key] = total
        return total

    @property
    def method(self) -> str:
        return "recorded sizes"


def agent_overhead(window: int) -> int:
    """What the agent adds to every counted request (agent/graph.py): its system prompt and the
    reserve for what recall injects."""
    counter = WindowCounter(window=window)
    return int(counter([SystemMessage(SYSTEM_PROMPT)])) + counter.inject_tokens


@cache
def _middleware(setting: Setting, window: int) -> RecordedSummarization:
    """One shared instance per setting and window, for reading its limits (never run)."""
    return build_middleware(setting, window)


def build_middleware(setting: Setting, window: int) -> RecordedSummarization:
    value: float | int = (
        float(setting.trigger_value)
        if setting.trigger_kind == "fraction"
        else int(setting.trigger_value)
    )
    try:
        return RecordedSummarization(
            ScriptedChatModel(window=window),
            trigger=[(setting.trigger_kind, value), *setting.also],
            keep=(setting.keep_kind, int(setting.keep_value)),
            counter=RecordedSizes(window=window),
            overhead_tokens=agent_overhead(window),
            keep_budget_tokens=int(window * setting.keep_budget_fraction),
            summary_reserve_tokens=setting.summary_max_tokens + 30,
        )
    except ValueError as error:
        raise ReplayError(f"Invalid summarization setting: {error}") from None


def count(messages: Sequence[Any]) -> int:
    """The token counter the replayed middleware uses: the recorded size of each message."""
    return sum(m.response_metadata["n"] for m in messages)


def actual_overhead(trace: Trace) -> int:
    """Request tokens that are not conversation messages (system prompt, injected context), as
    the recorded folds show it: the request right after a fold minus the conversation the fold
    kept (the event's tokens after, less the agent's fixed overhead where the event counts it).
    0 when no fold event was recorded."""
    seen = []
    for call in trace.calls:
        fold = call.fold_before
        if fold is None or fold.tokens_after is None:
            continue
        kept = fold.tokens_after
        if fold.counts_overhead:
            kept -= agent_overhead(fold.window or call.window or trace.window or 1)
        seen.append(call.input_tokens - kept)
    return max(int(median(seen)), 0) if seen else 0


_TEMPLATES: dict[type, Any] = {
    HumanMessage: HumanMessage(content="", response_metadata={"n": 0}),
    AIMessage: AIMessage(content="", response_metadata={"n": 0}),
}


def _message(kind: type[AnyMessage], n: int, **kwargs: Any) -> Any:
    """A message of the recorded size `n` (plain ones copied from a template: faster than
    validating a new one, and a session has hundreds)."""
    metadata = {"n": max(int(n), 0)}
    template = None if kwargs else _TEMPLATES.get(kind)
    if template is not None:
        return template.model_copy(update={"response_metadata": metadata})
    return kind(content="", response_metadata=metadata, **kwargs)


@dataclass(slots=True)
class Conversation:
    """A recorded session as messages: `steps[i]` is what was added before call i."""

    trace: Trace
    overhead: int
    steps: list[list[Any]]


def conversation(trace: Trace) -> Conversation:
    """Rebuild the messages so that, before call i, the conversation (with every recorded fold
    taken out again) holds exactly the recorded request minus the request's overhead. A step
    whose request shrank (less context injected that turn) adds an empty message and the next
    steps make up for it, so the running total never drifts."""
    overhead = actual_overhead(trace)
    steps: list[list[Any]] = []
    previous = None
    removed = held = 0  # tokens the recorded folds took out; tokens of the messages so far
    for index, call in enumerate(trace.calls):
        if call.fold_before is not None:
            removed += call.fold_before.removed
        target = call.input_tokens + removed - overhead  # the unfolded conversation's tokens
        if previous is None:
            size = max(target, 0)
            steps.append([_message(HumanMessage, size)])
        else:
            size = max(target - held - previous.output_tokens, 0)
            if call.turn == previous.turn:  # a tool round within the turn
                tool_id = f"t{index}"
                answer = _message(
                    AIMessage,
                    previous.output_tokens,
                    tool_calls=[{"id": tool_id, "name": "tool", "args": {}}],
                )
                steps.append([answer, _message(ToolMessage, size, tool_call_id=tool_id)])
            else:
                steps.append(
                    [_message(AIMessage, previous.output_tokens), _message(HumanMessage, size)]
                )
            size += previous.output_tokens
        held += size
        previous = call
    return Conversation(trace=trace, overhead=overhead, steps=steps)


@dataclass(slots=True)
class SessionResult:
    session_id: str
    calls: int
    folds: int
    input_tokens: int  # chat requests + summarizer inputs
    cost_usd: float | None
    context_percent: list[float]
    at_trigger: int
    fold_calls: tuple[int, ...] = ()  # the calls (0-based) that a fold came before


def _cost(rate: Rate | None, tokens: int, cached: int, output: int) -> float | None:
    if rate is None:
        return None
    cached_rate = rate.input if rate.cached_input is None else rate.cached_input
    return ((tokens - cached) * rate.input + cached * cached_rate + output * rate.output) / 1e6


class Replayer:
    """One setting, ready to replay many sessions."""

    def __init__(self, setting: Setting, ratio: float) -> None:
        self.setting = setting
        self.ratio = ratio
        self._middleware: dict[int, RecordedSummarization] = {}
        if setting.model is not None and setting.window:
            self.middleware(setting.window)  # a bad setting fails before any session

    def middleware(self, window: int) -> RecordedSummarization:
        """This replayer's own instance (its counter remembers totals, so it is not shared)."""
        found = self._middleware.get(window)
        if found is None:
            found = self._middleware[window] = build_middleware(self.setting, window)
        return found

    def run(self, convo: Conversation) -> SessionResult:
        trace = convo.trace
        window = self.setting.window_for(trace)
        model = self.setting.model or trace.model
        provider = self.setting.provider if self.setting.model else _provider(trace)
        rate = linear_rate(provider, model)
        summary_rate = linear_rate(provider, self.setting.summary_model or model)
        middleware = self.middleware(window)
        counter = middleware.counter
        if isinstance(counter, RecordedSizes):
            counter.reset()
        state: list[Any] = []
        folds = billed = at = 0
        cost: float | None = 0.0
        percents: list[float] = []
        fold_calls: list[int] = []
        for index, (call, added) in enumerate(zip(trace.calls, convo.steps, strict=True)):
            state.extend(added)
            plan = middleware.plan_fold(state)  # the agent's own decision
            if plan is not None:
                folded = count(state[: plan.cutoff])
                summary = round(self.ratio * folded)
                marker = _message(
                    HumanMessage, summary, additional_kwargs={"lc_source": "summarization"}
                )
                state = [marker, *state[plan.cutoff :]]
                folds += 1
                fold_calls.append(index)
                billed += folded
                spent = _cost(summary_rate, folded, 0, summary)
                cost = None if cost is None or spent is None else cost + spent
            total = counter(state)
            request = convo.overhead + total
            billed += request
            spent = _cost(rate, request, min(call.cached_tokens, request), call.output_tokens)
            cost = None if cost is None or spent is None else cost + spent
            percents.append(100.0 * request / window)
            at += at_trigger(middleware, state, total)
        return SessionResult(
            trace.session_id, len(percents), folds, billed, cost, percents, at, tuple(fold_calls)
        )


def at_trigger(middleware: RecordedSummarization, messages: list[Any], tokens: int) -> bool:
    """Is a request of these messages at or above the trigger, as the agent counts it?"""
    counted = middleware.overhead_tokens + tokens
    return counted >= middleware.limit_tokens or middleware._should_summarize(messages, counted)


def _provider(trace: Trace) -> str:
    # genai-prices knows OpenAI-compatible gateways' models under their vendor's names.
    return "openai" if trace.provider in ("openai-compatible", "") else trace.provider


def recorded(trace: Trace, setting: Setting) -> SessionResult:
    """The same figures for what was recorded (cost as billed; at or above the setting's
    token trigger as the agent counts a request: its fixed overhead plus the conversation)."""
    window = setting.window_for(trace)
    middleware = setting.middleware(window)
    overhead = actual_overhead(trace)
    billed = sum(c.input_tokens for c in trace.calls)
    billed += sum(c.fold_before.folded_tokens or 0 for c in trace.calls if c.fold_before)
    cost = sum(c.cost_usd for c in trace.calls)
    cost += sum(c.fold_before.cost_usd for c in trace.calls if c.fold_before)
    percents = [100.0 * c.input_tokens / (c.window or window) for c in trace.calls]
    at = sum(
        middleware.overhead_tokens + c.input_tokens - overhead >= middleware.limit_tokens
        for c in trace.calls
    )
    folds = tuple(i for i, c in enumerate(trace.calls) if c.fold_before is not None)
    return SessionResult(
        trace.session_id, len(trace.calls), trace.folds, billed, cost, percents, at, folds
    )


def trigger_percent(setting: Setting, trace: Trace) -> float:
    """Where the trigger sits on this session's context curve: the request, in % of the window,
    at which the agent's count (its fixed overhead plus the conversation) reaches the trigger."""
    window = setting.window_for(trace)
    middleware = setting.middleware(window)
    tokens = middleware.limit_tokens - middleware.overhead_tokens + actual_overhead(trace)
    return 100.0 * tokens / window


def replay(
    conversations: Sequence[Conversation],
    setting: Setting,
    *,
    ratio: float,
    progress: Progress | None = None,
    every: int = 200,
) -> list[SessionResult] | None:
    """Replay every conversation under `setting`. None when `progress` asked to stop."""
    replayer = Replayer(setting, ratio)
    out: list[SessionResult] = []
    for index, convo in enumerate(conversations):
        if progress is not None and index % every == 0 and not progress(index, len(conversations)):
            return None
        out.append(replayer.run(convo))
    if progress is not None:
        progress(len(conversations), len(conversations))
    return out


# -- figures for the page ------------------------------------------------------------------
