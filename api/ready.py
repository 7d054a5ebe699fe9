"""Readiness: can this replica answer a chat turn? Each dependency is checked in parallel and the
whole answer comes within `DEADLINE_S`, even when one of them hangs."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable

import httpx
import redis
from sqlalchemy import Engine, text

from agent.runtime import Runtime
from api.schemas import Check, Readiness
from data.config.settings import Settings

DEADLINE_S = 1.8
_pool = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="ready")


def _database(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def _model(runtime: Runtime, settings: Settings) -> None:
    base = runtime.chat_spec.base_url or "https://api.openai.com/v1"
    headers = {}
    if settings.openai_api_key is not None:
        headers["Authorization"] = f"Bearer {settings.openai_api_key.get_secret_value()}"
    response = httpx.get(f"{base.rstrip('/')}/models", headers=headers, timeout=DEADLINE_S)
    if response.status_code >= 400:
        raise RuntimeError(f"GET /models answered HTTP {response.status_code}")


def _memory(runtime: Runtime) -> None:
    store = runtime.parts.memory
    if store is None:
        raise RuntimeError(runtime.parts.memory_error or "long-term memory is off")
    store.ping()


def _redis(url: str) -> None:
    client = redis.Redis.from_url(url, socket_timeout=DEADLINE_S, socket_connect_timeout=1.0)
    try:
        client.ping()
    finally:
        client.close()


def _reason(error: BaseException) -> str:
    text_ = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text_[:200]


def readiness(*, settings: Settings, engine: Engine, runtime: Runtime | None) -> Readiness:
    """Every dependency's check, by name: ok, latency, and the reason when not ok."""
    checks: dict[str, Callable[[], None]] = {"database": lambda: _database(engine)}
    if runtime is not None:
        checks["memory"] = lambda: _memory(runtime)
        checks["model"] = lambda: _model(runtime, settings)
    if settings.redis_url:
        url = settings.redis_url
        checks["redis"] = lambda: _redis(url)
    started = time.perf_counter()

    def timed(check: Callable[[], None]) -> Check:
        begun = time.perf_counter()
        try:
            check()
            return Check(ok=True, latency_ms=round((time.perf_counter() - begun) * 1000, 1))
        except Exception as error:  # each failure is reported by name, never raised
            return Check(
                ok=False,
                latency_ms=round((time.perf_counter() - begun) * 1000, 1),
                error=_reason(error),
            )

    futures = {name: _pool.submit(timed, check) for name, check in checks.items()}
    results: dict[str, Check] = {}
    for name, future in futures.items():
        left = max(0.0, DEADLINE_S - (time.perf_counter() - started))
        try:
            results[name] = future.result(timeout=left)
        except concurrent.futures.TimeoutError:
            results[name] = Check(
                ok=False, latency_ms=DEADLINE_S * 1000, error=f"no answer within {DEADLINE_S} s"
            )
    if runtime is None:
        results["model"] = Check(ok=False, latency_ms=0.0, error="the agent is not started")
    if not settings.redis_url:
        results["redis"] = Check(ok=True, latency_ms=0.0, configured=False)
    ready = all(check.ok for check in results.values())
    return Readiness(status="ready" if ready else "not_ready", checks=results)
