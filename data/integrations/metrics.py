"""The Prometheus metrics of seed section 5.1 (names kept exactly) and the /metrics exporter."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server

from data.store.records import CallRecord

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 30, 60, 120)
PERCENT_BUCKETS = (5, 10, 20, 30, 40, 50, 60, 70, 75, 80, 90, 95, 100)

AGENT_CALLS = Counter(
    "agent_calls_total", "Model calls made by the agent", ["model", "purpose", "status"]
)
TOKEN_USAGE = Counter(
    "token_usage_total", "Tokens used, by type (input, cached_input, output)", ["model", "type"]
)
CONTEXT_WINDOW = Histogram(
    "context_window_percent",
    "Request input tokens as a percentage of the model's input window",
    ["model"],
    buckets=PERCENT_BUCKETS,
)
SUMMARIZATION_LATENCY = Histogram(
    "summarization_latency_seconds",
    "Summarization model call time",
    ["model"],
    buckets=LATENCY_BUCKETS,
)
MODEL_LATENCY = Histogram(
    "model_latency_seconds", "Model call latency", ["model"], buckets=LATENCY_BUCKETS
)
MEMORY_RETRIEVAL_LATENCY = Histogram(
    "memory_retrieval_latency_seconds", "Long-term memory search time", buckets=LATENCY_BUCKETS
)
TTFT = Histogram(
    "model_time_to_first_token_seconds",
    "Time to the first streamed token",
    ["model"],
    buckets=LATENCY_BUCKETS,
)
COST = Counter("agent_cost_usd_total", "Priced model cost in USD", ["model"])

# Operations (issue 11). The backlog is a database count, the same from every replica: alert on
# max(), never sum().
FEEDBACK_BACKLOG = Gauge(
    "feedback_sync_backlog",
    "Thumbs and review scores not yet in LangSmith, by outbox state (pending, retrying, failed)",
    ["state"],
)
DEPENDENCY_UP = Gauge(
    "agent_dependency_up",
    "1 when the last check of a configured dependency succeeded, 0 when it failed",
    ["dependency"],
)
DEPENDENCY_CHECK_SECONDS = Gauge(
    "agent_dependency_check_seconds", "How long the last check of a dependency took", ["dependency"]
)
# Conversation outcomes (issue 29): one per verdict, and one per judge model call by how it went
# (ok; invalid: an answer that did not fit the schema; error: the call failed).
CONVERSATIONS_ENDED = Counter(
    "agent_conversations_ended",
    "Ended conversations given a verdict, by outcome (or unjudged) and topic",
    ["outcome", "topic"],
)
JUDGE_CALLS = Counter(
    "agent_judge_calls", "Outcome judge model calls, by status (ok, invalid, error)", ["status"]
)
READY = Gauge(
    "agent_ready", "1 when every dependency the agent needs (the /ready checks) answered, else 0"
)


def observe_call(call: CallRecord) -> None:
    """Update every metric that one model call touches."""
    AGENT_CALLS.labels(call.model, call.purpose, call.status).inc()
    uncached = max(call.input_tokens - call.cached_input_tokens, 0)
    TOKEN_USAGE.labels(call.model, "input").inc(uncached)
    TOKEN_USAGE.labels(call.model, "cached_input").inc(call.cached_input_tokens)
    TOKEN_USAGE.labels(call.model, "output").inc(call.output_tokens)
    if call.cost_usd:
        COST.labels(call.model).inc(call.cost_usd)
    seconds = call.latency_ms / 1000
    if call.purpose in ("embedding", "judge"):
        # Not a customer's request: counted and priced above, kept out of the latency
        # histograms the latency page reads (the database path selects chat and summarize
        # calls the same way).
        return
    MODEL_LATENCY.labels(call.model).observe(seconds)
    if call.purpose == "summarize":
        SUMMARIZATION_LATENCY.labels(call.model).observe(seconds)
    if call.ttft_ms is not None:
        TTFT.labels(call.model).observe(call.ttft_ms / 1000)
    percent = call.context_percent
    if percent is not None and call.status == "ok" and call.purpose == "chat":
        CONTEXT_WINDOW.labels(call.model).observe(percent)


for _status in ("ok", "invalid", "error"):
    JUDGE_CALLS.labels(_status)  # at 0 from the start, so rate() sees the first failure


def declare_outcomes(outcomes: Sequence[str], topics: Sequence[str]) -> None:
    """Every outcome and topic series at 0 before the first verdict (the outcome worker calls
    this with its taxonomy), so rate() and increase() count the first one of each."""
    for outcome in outcomes:
        for topic in [*topics, "none"]:
            CONVERSATIONS_ENDED.labels(outcome, topic)


def observe_outcome(outcome: str, topic: str | None) -> None:
    CONVERSATIONS_ENDED.labels(outcome, topic or "none").inc()


def observe_judge_call(status: str) -> None:
    JUDGE_CALLS.labels(status).inc()


def observe_feedback_backlog(counts: dict[str, int]) -> None:
    """Publish the outbox counts of data.workers.langsmith_sync.sync_status()."""
    for state in ("pending", "retrying", "failed"):
        FEEDBACK_BACKLOG.labels(state).set(counts.get(state, 0))


_lock = threading.Lock()
_started: dict[tuple[str, int], bool] = {}


def start_exporter(*, host: str, port: int) -> bool:
    """Serve /metrics once per process. Returns False when disabled or the port is taken."""
    if port == 0:
        return False
    with _lock:
        key = (host, port)
        if key in _started:
            return _started[key]
        try:
            start_http_server(port, addr=host, registry=REGISTRY)
            _started[key] = True
            log.info("metrics exporter on http://%s:%d/metrics", host, port)
        except OSError as error:
            # Another process (an earlier app run, a second replica) holds the port: the app
            # still works; its metrics are then only in the database.
            log.warning("metrics exporter not started on %s:%d: %s", host, port, error)
            _started[key] = False
        return _started[key]
