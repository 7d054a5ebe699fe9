"""The 32-message conversation of tests/data/long_conversation.json on the embedded model:
each turn's context %, where it was summarized, and how far LangChain's approximate token
counter is from the server's own tokenizer on the requests actually sent. Prints JSON.

    .venv/bin/python bench/long_conversation.py [--db URL]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from langchain_core.messages import BaseMessage
from langchain_core.messages.utils import count_tokens_approximately
from sqlalchemy import select
from sqlalchemy.orm import Session

from agent import local_server
from agent.runtime import build_runtime
from agent.telemetry import CallTelemetry
from data.db import make_engine
from data.migrate import upgrade
from data.models import AgentEvent, ModelCall
from data.settings import load_settings

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "data" / "long_conversation.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", help="database URL (default: a fresh SQLite file)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="acb-long-"))
    url = args.db or f"sqlite:///{work / 'bench.sqlite3'}"
    upgrade(url)
    settings = load_settings(data_dir=work / "data", metrics_port=0, database_url=url)
    engine = make_engine(settings.sqlalchemy_url)

    sent: list[list[BaseMessage]] = []
    original = CallTelemetry.on_chat_model_start

    def capture(self: CallTelemetry, serialized: Any, messages: Any, **kw: Any) -> None:
        if self.purpose == "chat" and (kw.get("metadata") or {}).get("lc_source") is None:
            sent.append(list(messages[0]))
        original(self, serialized, messages, **kw)

    CallTelemetry.on_chat_model_start = capture  # type: ignore[method-assign]
    runtime = build_runtime(settings, engine=engine)
    session = f"bench-{uuid.uuid4().hex[:8]}"
    failed = 0
    for message in json.loads(CORPUS.read_text()):
        try:
            runtime.service.run_turn(user_id="bench", session_id=session, message=message)
        except Exception as error:  # counted, and the conversation goes on
            failed += 1
            print(f"turn failed: {error}", file=sys.stderr)
    runtime.parts.middleware.flush()
    with Session(engine) as db:
        calls = db.scalars(
            select(ModelCall)
            .where(ModelCall.session_id == session, ModelCall.purpose == "chat")
            .order_by(ModelCall.id)
        ).all()
        folds = db.scalars(
            select(AgentEvent)
            .where(AgentEvent.session_id == session, AgentEvent.kind == "summarization")
            .order_by(AgentEvent.id)
        ).all()
    folded = {e.turn: e for e in folds}
    turns = [
        {
            "turn": c.turn,
            "status": c.status,
            "context_tokens": c.context_tokens,
            "context_percent": round(100 * c.context_tokens / (c.context_window or 1), 1),
            "summarized_before": c.turn in folded,
            **(
                {
                    "kept_messages": json.loads(str(folded[c.turn].detail))["kept_messages"],
                    "keep_reduced": json.loads(str(folded[c.turn].detail))["keep_reduced"],
                }
                if c.turn in folded
                else {}
            ),
        }
        for c in calls
    ]
    port = settings.local_model_port
    exact = [
        local_server.count_tokens(
            port, local_server.chatml([(_role(m), str(m.text)) for m in messages])
        )
        for messages in sent
    ]
    approx = [int(count_tokens_approximately(messages)) for messages in sent]
    ratio = [a / e for a, e in zip(approx, exact, strict=True) if e]
    print(
        json.dumps(
            {
                "turns": turns,
                "failed_turns": failed,
                "summarizations": len(folds),
                "max_context_percent": max(t["context_percent"] for t in turns),
                "trigger_percent": 100 * settings.summary_trigger_fraction,
                "approx_over_exact": {
                    "requests": len(ratio),
                    "mean": round(statistics.mean(ratio), 3),
                    "min": round(min(ratio), 3),
                    "max": round(max(ratio), 3),
                },
            },
            indent=1,
        )
    )
    runtime.server and runtime.server.stop()


def _role(message: BaseMessage) -> str:
    return {"human": "user", "ai": "assistant"}.get(message.type, message.type)


if __name__ == "__main__":
    main()
