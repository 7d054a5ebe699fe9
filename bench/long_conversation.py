"""The 33-turn conversation of tests/files/long_conversation.json on the embedded model and its
full window: each turn's context %, where it was summarized, how far LangChain's approximate
token counter is from the server's own tokenizer on the requests actually sent, and the same
checks as the test suite's small-window fold test (folded before the trigger, never past the
window, the planted facts recalled). Prints JSON; exits 1, saying which check failed, when one
does. `make bench-long` runs it (about 10 to 20 minutes on two cores).

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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from langchain_core.messages import BaseMessage
from langchain_core.messages.utils import count_tokens_approximately

from agent import local_server
from agent.runtime import build_runtime
from data.config.settings import load_settings
from data.store.db import make_engine
from data.store.migrate import upgrade
from tests.helpers.long_conversation import (
    FINAL_QUESTION,
    chat_calls,
    check,
    corpus,
    folds,
    requests_sent,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="database URL (default: a fresh SQLite file)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="acb-long-"))
    url = args.db or f"sqlite:///{work / 'bench.sqlite3'}"
    upgrade(url)
    settings = load_settings(data_dir=work / "data", metrics_port=0, database_url=url)
    engine = make_engine(settings.sqlalchemy_url)
    runtime = build_runtime(settings, engine=engine)
    session = f"bench-{uuid.uuid4().hex[:8]}"
    messages = [*corpus(), FINAL_QUESTION]
    failed = 0
    try:
        with requests_sent() as sent:
            for number, message in enumerate(messages, 1):
                try:
                    outcome = runtime.service.run_turn(
                        user_id="bench", session_id=session, message=message
                    )
                    print(
                        f"turn {number}/{len(messages)}: context "
                        f"{outcome.context_percent or 0:.1f} %",
                        file=sys.stderr,
                        flush=True,
                    )
                except Exception as error:  # counted; the checks below then fail
                    failed += 1
                    print(f"turn {number} failed: {error}", file=sys.stderr)
        runtime.parts.middleware.flush()
        folded = {e.turn: e for e in folds(engine, session)}
        turns = [
            {
                "turn": c.turn,
                "status": c.status,
                "context_tokens": c.context_tokens,
                "context_percent": round(100 * c.context_tokens / (c.context_window or 1), 1),
                "summarized_before": c.turn in folded,
            }
            for c in chat_calls(engine, session)
        ]
        port = settings.local_model_port
        exact = [
            local_server.count_tokens(
                port, local_server.chatml([(_role(m), str(m.text)) for m in request])
            )
            for request in sent
        ]
        approx = [int(count_tokens_approximately(request)) for request in sent]
        ratio = [a / e for a, e in zip(approx, exact, strict=True) if e]
        result: dict[str, object] = {
            "turns": turns,
            "failed_turns": failed,
            "approx_over_exact": {
                "requests": len(ratio),
                "mean": round(statistics.mean(ratio), 3),
                "min": round(min(ratio), 3),
                "max": round(max(ratio), 3),
            },
        }
        try:
            result["checks"] = check(
                engine=engine,
                session_id=session,
                window=runtime.chat_spec.context_window,
                turns=len(messages),
                sent=sent,
            )
            result["passed"] = True
        except AssertionError as error:
            result["passed"], result["failed_check"] = False, str(error)
        print(json.dumps(result, indent=1))
        return 0 if result["passed"] else 1
    finally:
        if runtime.server is not None:
            runtime.server.stop()


def _role(message: BaseMessage) -> str:
    return {"human": "user", "ai": "assistant"}.get(message.type, message.type)


if __name__ == "__main__":
    sys.exit(main())
