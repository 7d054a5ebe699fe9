"""What the HTTP API adds to a chat turn, and how many turns a second it serves.

Three processes, as in production: the app's API (api.main.create_app with its own runtime, as
`uvicorn api.main:app` runs it) served by uvicorn on 127.0.0.1 in a process of its own; the
scripted instant model (tests/helpers/fake_openai.py speaking the OpenAI wire format with no
delay, for the chat model and the embeddings) in another; the clients in this one. So the API's
interpreter lock serves only the API, as it would behind a real model and real callers. A
turn's overhead is its wall time over HTTP (measured by the client) minus the model's own time,
taken from the latency_ms of the turn's model_calls rows (chat and embedding), so the model's
time counts out however long the fake server takes.

Prints one JSON object: api_overhead_p50_ms / api_overhead_p95_ms over --turns sequential turns
(after a warm-up), turns_per_s with --clients concurrent clients sending --per-client turns
each, errors (non-200 answers, either phase), the API process's CPU time per sequential turn,
and the load average when each phase started.

    python bench/api.py [--db URL] [--turns 200] [--clients 20] [--per-client 25]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from sqlalchemy import func, select

from data.config.urls import to_sqlalchemy_url
from data.store.db import describe, make_engine
from data.store.migrate import upgrade
from data.store.orm import ModelCall
from tests.helpers.api import api_settings, serve_api
from tests.helpers.fake_openai import FakeOpenAI, text
from tests.helpers.servers import free_port

ANSWER = "Your parcel left our warehouse this morning; it should arrive within 3 days."
MESSAGES = [
    "Where is my order A-{n}?",
    "How long does shipping to Canada take?",
    "Can I return an opened item?",
    "Please send updates to customer{n}@example.com from now on.",
    "Has my refund for A-{n} been processed yet?",
]


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def load() -> float:
    return round(os.getloadavg()[0], 2)


def model_ms(engine: Any, run: str) -> dict[tuple[str, int], float]:
    """(session, turn) -> the model's own time in the turn (every call of this run)."""
    c = ModelCall.__table__.c
    query = (
        select(c.session_id, c.turn, func.sum(c.latency_ms))
        .where(c.session_id.like(f"{run}-%"))
        .group_by(c.session_id, c.turn)
    )
    with engine.connect() as connection:
        return {(s, int(t)): float(ms) for s, t, ms in connection.execute(query)}


def _serve_model(urls: Queue[str], stop: Event) -> None:  # type: ignore[type-arg]
    with FakeOpenAI(default=text(ANSWER)) as model:
        urls.put(model.url)
        stop.wait()


def _serve_api(
    model_url: str,
    tmp: Path,
    url: str,
    port: int,
    cpu: Queue[float],  # type: ignore[type-arg]
    measure: Event,
    stop: Event,
) -> None:
    settings = api_settings(model_url, tmp, url, rate_limit_per_minute=10_000)
    with serve_api(settings, port):
        measure.wait()
        started = time.process_time()
        measure.clear()
        cpu.put(0.0)
        measure.wait()  # the sequential phase is over
        cpu.put(time.process_time() - started)
        stop.wait()
    # serve_api has waited for the memory writer: every turn's facts are stored.


def _wait_up(url: str, process: BaseProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.is_alive():
            raise SystemExit(f"the API process exited with {process.exitcode}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("the API did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="database URL (default: a new SQLite file)")
    parser.add_argument("--turns", type=int, default=200, help="sequential turns for overhead")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--per-client", type=int, default=25)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-api-"))
    url = to_sqlalchemy_url(args.db) if args.db else f"sqlite:///{tmp / 'bench.sqlite3'}"
    upgrade(url)
    run = uuid.uuid4().hex[:8]  # this run's sessions, apart from anything already stored
    errors = 0
    spawn = multiprocessing.get_context("spawn")
    stop, measure = spawn.Event(), spawn.Event()
    urls: Queue[str] = spawn.Queue()  # type: ignore[assignment]
    cpu: Queue[float] = spawn.Queue()  # type: ignore[assignment]
    model = spawn.Process(target=_serve_model, args=(urls, stop), name="fake-model")
    model.start()
    port = free_port()
    api_url = f"http://127.0.0.1:{port}"
    api = spawn.Process(
        target=_serve_api,
        args=(urls.get(timeout=60), tmp, url, port, cpu, measure, stop),
        name="api",
    )
    api.start()
    try:
        _wait_up(api_url, api)
        http = httpx.Client(base_url=api_url, timeout=60)

        def turn(client: httpx.Client, user: int, session: str, n: int) -> float | None:
            body = {
                "user_id": f"bench-user-{user}",
                "session_id": session,
                "message": MESSAGES[n % len(MESSAGES)].format(n=10_000 + n),
            }
            started = time.perf_counter()
            response = client.post("/chat", json=body)
            wall = (time.perf_counter() - started) * 1000
            return wall if response.status_code == 200 else None

        # Sequential: 20 users taking turns, each in a session of their own.
        for n in range(args.warmup):
            turn(http, n % 20, f"warm{run}-{n % 20}", n)
        load_sequential = load()
        measure.set()
        cpu.get(timeout=30)
        walls: dict[tuple[str, int], float] = {}
        turns_seen: dict[str, int] = {}
        for n in range(args.turns):
            session = f"{run}-seq-{n % 20}"
            wall = turn(http, n % 20, session, n)
            turns_seen[session] = turns_seen.get(session, 0) + 1
            if wall is None:
                errors += 1
            else:
                walls[(session, turns_seen[session])] = wall
        measure.set()
        cpu_sequential = cpu.get(timeout=30)
        http.close()

        # Concurrent: --clients users at once, each sending --per-client turns in a row.
        def client(index: int) -> int:
            failed = 0
            with httpx.Client(base_url=api_url, timeout=60) as own:
                for n in range(args.per_client):
                    session = f"{run}-load-{index}"
                    if turn(own, 100 + index, session, n) is None:
                        failed += 1
            return failed

        load_concurrent = load()
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.clients) as pool:
            errors += sum(pool.map(client, range(args.clients)))
        elapsed = time.perf_counter() - started
    finally:
        stop.set()
        measure.set()
        for process in (api, model):
            process.join(timeout=60)
            if process.is_alive():
                process.kill()

    engine = make_engine(url)
    spent = model_ms(engine, run)
    engine.dispose()
    overheads = [wall - spent.get(key, 0.0) for key, wall in walls.items()]
    concurrent_turns = args.clients * args.per_client
    print(
        json.dumps(
            {
                "db": url.split(":", 1)[0].split("+")[0],
                "where": describe(url),
                "api_overhead_p50_ms": round(statistics.median(overheads), 2),
                "api_overhead_p95_ms": round(percentile(overheads, 95), 2),
                "model_p50_ms": round(statistics.median(spent[k] for k in walls), 2),
                # The API process's CPU time per sequential turn: on a loaded shared machine,
                # the figure that does not depend on how much of a core the process got.
                "api_cpu_ms_per_turn": round(cpu_sequential * 1000 / max(args.turns, 1), 2),
                "turns_per_s": round(concurrent_turns / elapsed, 1),
                "errors": errors,
                "sequential_turns": len(walls),
                "concurrent_turns": concurrent_turns,
                "clients": args.clients,
                "load_avg_sequential": load_sequential,
                "load_avg_concurrent": load_concurrent,
                "cpus": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
