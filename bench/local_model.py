"""The embedded model server's own speed: time to first text and generation tokens per second,
as the app starts it (llama-cpp-python's default threads and OpenMP's default waiting) or with
`--threads N` and `--wait ACTIVE|PASSIVE` (OMP_WAIT_POLICY), alone or beside `--busy N`
processes that keep a core each busy (the app's own work). Prints JSON.

    .venv/bin/python bench/local_model.py [--requests 8] [--busy 1] [--threads 2] [--wait PASSIVE]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from agent import local_server
from agent.prompts import SYSTEM_PROMPT
from data.config.settings import LOCAL_MODEL_NAME

QUESTIONS = (
    "Hello, my order A-10234 has not arrived yet. Where is it?",
    "The screen of the phone I received is cracked. What can I do?",
    "How long does a refund take once you have the parcel back?",
    "Can I change the delivery address of an order that has shipped?",
)


def burn(stop_at: float) -> None:
    while time.monotonic() < stop_at:
        pass


def one(client: httpx.Client, url: str, question: str, max_tokens: int) -> dict[str, float]:
    body = {
        "model": LOCAL_MODEL_NAME,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": question},
        ],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    started = time.perf_counter()
    first = None
    text = []
    with client.stream("POST", f"{url}/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            delta = json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
            if delta and first is None:
                first = time.perf_counter()
            text.append(delta)
    ended = time.perf_counter()
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    tokens = local_server.count_tokens(port, "".join(text))
    first = first or ended
    return {
        "ttft_ms": (first - started) * 1000,
        "tokens": tokens,
        "tokens_per_s": (tokens - 1) / (ended - first) if ended > first and tokens > 1 else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--busy", type=int, default=0, help="processes keeping a core busy")
    parser.add_argument("--threads", type=int, help="threads to give the server instead")
    parser.add_argument("--wait", choices=("ACTIVE", "PASSIVE"), help="OMP_WAIT_POLICY instead")
    args = parser.parse_args()
    port = _free_port()
    server = local_server.LocalServer(port=port, n_ctx=4096)
    command = server.command()
    env = dict(os.environ)
    if args.threads:
        command += ["--n_threads", str(args.threads), "--n_threads_batch", str(args.threads)]
    if args.wait:
        env["OMP_WAIT_POLICY"] = args.wait
    log = Path(tempfile.mkdtemp(prefix="acb-llm-")) / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 120
        while not local_server.is_serving(port):
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit(f"the server did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)
        url = local_server.base_url(port)
        with httpx.Client(timeout=120) as client:
            one(client, url, QUESTIONS[0], 8)  # warm-up
            burners = [
                multiprocessing.Process(target=burn, args=(time.monotonic() + 600,), daemon=True)
                for _ in range(args.busy)
            ]
            for burner in burners:
                burner.start()
            try:
                runs = [
                    one(client, url, QUESTIONS[i % len(QUESTIONS)], args.max_tokens)
                    for i in range(args.requests)
                ]
            finally:
                for burner in burners:
                    burner.terminate()
    finally:
        process.terminate()
        process.wait(timeout=15)
    print(
        json.dumps(
            {
                "threads": args.threads or "default (half the cores)",
                "omp_wait_policy": env.get("OMP_WAIT_POLICY", "default"),
                "cores": os.cpu_count(),
                "busy_processes": args.busy,
                "requests": args.requests,
                "ttft_ms_median": round(statistics.median(r["ttft_ms"] for r in runs), 1),
                "tokens_per_s_median": round(statistics.median(r["tokens_per_s"] for r in runs), 1),
                "tokens_median": statistics.median(r["tokens"] for r in runs),
            }
        )
    )


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    main()
