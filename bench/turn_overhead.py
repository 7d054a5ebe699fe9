"""What the agent adds to a chat turn, with the model's own time taken out.

The agent is assembled exactly as the app assembles it (agent.runtime.assemble): memory recall
and fact storage on embedded Qdrant with the local embedder, context injection, summarization,
retry middleware, the LangGraph checkpointer, call and event recording, and the Prometheus
metrics. Only the chat model is replaced by the scripted instant model, whose own time is
measured and subtracted. Each user's memory starts with --memories facts, so recall searches a
realistic store; the turns mix plain questions with messages that carry facts (orders, e-mail
addresses, problems), so facts are extracted and written too.

Prints one JSON object: overhead_p50_ms and overhead_p95_ms over --turns turns (after a warm-up),
the worst turn, and how long seeding the users' memories took.

    python bench/turn_overhead.py [--db URL] [--turns 200] [--users 20] [--memories 100]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from langchain_core.messages import AIMessage, BaseMessage
from sqlalchemy import text

from agent.models import ModelSpec
from agent.runtime import assemble, make_ledger
from agent.scripted import ScriptedChatModel
from agent.service import ChatService
from agent.telemetry import CallTelemetry
from data.config.settings import load_settings
from data.config.urls import to_sqlalchemy_url
from data.store.db import describe, make_engine
from data.store.migrate import upgrade

MESSAGES = [
    "Hi, can you tell me how long shipping takes to Canada?",
    "My order A-{n} arrived with a cracked screen, what can I do?",
    "What is your returns policy for opened items?",
    "Please send updates to customer{n}@example.com from now on.",
    "Has my refund for A-{n} been processed yet?",
    "How do I change the delivery address on an order?",
    "The package for order A-{n} never arrived and the tracking has not moved.",
    "Thanks, that is all for today.",
]


@dataclass(frozen=True)
class Fact:
    text: str
    kind: str = "fact"


class TimedModel(ScriptedChatModel):
    """The scripted model, timing itself so that its time can be taken out."""

    spent_ms: float = 0.0

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return super()._generate(messages, *args, **kwargs)
        finally:
            self.spent_ms += (time.perf_counter() - started) * 1000


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="database URL (default: a fresh SQLite file)")
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--memories", type=int, default=100, help="stored facts per user")
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="acb-overhead-"))
    url = to_sqlalchemy_url(args.db) if args.db else f"sqlite:///{workdir / 'bench.sqlite3'}"
    upgrade(url)
    engine = make_engine(url)
    with engine.begin() as connection:  # bench rows only
        for table in ("agent_events", "model_calls", "messages", "chat_sessions"):
            column = "id" if table == "chat_sessions" else "session_id"
            connection.execute(text(f"DELETE FROM {table} WHERE {column} LIKE 'ovh-%'"))
    settings = load_settings(
        data_dir=workdir / "data", database_url=url, metrics_port=0, openai_api_key=None
    )
    # The app's sinks: a turn's calls and events are written together at its end.
    ledger = make_ledger(engine)
    # The app's per-call telemetry is a callback on the model: the scripted one gets it too.
    spec = ModelSpec(
        provider="local",
        model="scripted",
        base_url=None,
        context_window=8_000,
        max_tokens=256,
        timeout_s=60,
    )
    model = TimedModel(
        responses=[AIMessage("Thanks, I have noted that. I will look into it.")],
        callbacks=[CallTelemetry(spec=spec, purpose="chat", sink=ledger.call)],
    )
    parts = assemble(
        settings,
        engine=engine,
        chat_model=model,
        summary_model=ScriptedChatModel(),
        ledger=ledger,
    )
    assert parts.memory is not None, parts.memory_error
    parts.knowledge.matrix()

    # Each user's existing memory: --memories facts, embedded once, in batches.
    started = time.perf_counter()
    for u in range(args.users):
        facts = [
            Fact(f"Customer note {i} of user {u}: prefers delivery window {i % 7} and topic {i}.")
            for i in range(args.memories)
        ]
        parts.memory.remember(f"ovh-user-{u}", facts, session_id="ovh-seed")
    seeded_s = time.perf_counter() - started

    service = ChatService(
        agent=parts.agent,
        engine=engine,
        model_label="scripted",
        ledger=ledger,
        warm=parts.middleware.warm,
    )
    overheads: list[float] = []
    for i in range(args.warmup + args.turns):
        user = f"ovh-user-{i % args.users}"
        session = f"ovh-{i % args.users}-{i // (args.users * 10)}"
        message = MESSAGES[i % len(MESSAGES)].format(n=10_000 + i)
        before = model.spent_ms
        started = time.perf_counter()
        service.run_turn(user_id=user, session_id=session, message=message)
        wall = (time.perf_counter() - started) * 1000
        if i >= args.warmup:
            overheads.append(wall - (model.spent_ms - before))
    parts.middleware.flush()

    print(
        json.dumps(
            {
                "database": describe(url),
                "turns": args.turns,
                "users": args.users,
                "memories": parts.memory.count(),
                "overhead_p50_ms": round(statistics.median(overheads), 2),
                "overhead_p95_ms": round(percentile(overheads, 95), 2),
                "overhead_max_ms": round(max(overheads), 2),
                "seed_memories_s": round(seeded_s, 2),
                "goal_p95_ms": 15,
            }
        )
    )


if __name__ == "__main__":
    main()
