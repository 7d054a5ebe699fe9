"""Dependency checks: the database, Qdrant, the model endpoint, Redis, Prometheus, LangSmith and
Sentry, each bounded by a timeout. The status page shows them, the API's /ready reuses them
(`check_all` and `is_ready`), and a background monitor publishes them on /metrics
(agent_dependency_up, agent_ready) so that Prometheus can alert on a dependency that is down.

Nothing here prints a credential: every URL goes through `redact_url`, error texts are scrubbed
of `user:password@` and of the secret values themselves."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from datetime import datetime
from importlib import metadata
from typing import Any
from urllib.parse import urlsplit

import httpx
import redis
from sqlalchemy import Engine, func, select, text

from data.config.settings import LOCAL_MODEL_NAME, Settings
from data.config.urls import redact_url
from data.integrations.metrics import DEPENDENCY_CHECK_SECONDS, DEPENDENCY_UP, READY
from data.store import pgvector
from data.store.db import describe, make_engine
from data.store.orm import utcnow
from data.workers.base import BackgroundWorker

log = logging.getLogger(__name__)

# The order of the status page. The first four are the /ready checks (the agent needs them).
NAMES = ("database", "memory", "model", "redis", "replica", "prometheus", "langsmith", "sentry")
LABELS = {
    "database": "Database",
    "replica": "Read replica (analyst pages)",
    "memory": "Qdrant (long-term memory)",
    "model": "Model endpoint",
    "redis": "Redis (caches)",
    "prometheus": "Prometheus",
    "langsmith": "LangSmith",
    "sentry": "Sentry",
}
REQUIRED = frozenset({"database", "memory", "model", "redis"})
MAX_ERROR_CHARS = 300


@dataclass(frozen=True, slots=True)
class Check:
    """One dependency as last seen. `ok` is None when it is not configured (nothing to check)."""

    name: str
    configured: bool
    target: str  # what is checked, credentials removed
    ok: bool | None
    latency_ms: float | None = None
    version: str | None = None
    error: str | None = None
    last_error: str | None = None  # the latest failure seen by this process, even if ok now
    last_error_at: datetime | None = None
    checked_at: datetime | None = None
    title: str | None = None  # the label, when it depends on the settings

    @property
    def label(self) -> str:
        return self.title or LABELS[self.name]

    @property
    def required(self) -> bool:
        return self.name in REQUIRED

    def as_ready_json(self) -> dict[str, Any]:
        """The shape of one entry of /ready's "checks"."""
        return {
            "ok": bool(self.ok) if self.configured else True,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 1),
            "error": self.error,
        }


class _Failed(Exception):
    """A check's own failure, with the message to show."""


_last_errors: dict[str, tuple[str, datetime]] = {}
_last_lock = threading.Lock()


def _secrets(settings: Settings) -> list[str]:
    values = []
    for secret in (
        settings.openai_api_key,
        settings.qdrant_api_key,
        settings.langsmith_api_key,
        settings.sentry_dsn,
    ):
        if secret is not None and secret.get_secret_value():
            values.append(secret.get_secret_value())
    for url in (settings.database_url, settings.redis_url):
        password = urlsplit(url).password if url else None
        if password:
            values.append(password)
    return values


_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://)([^/@\s:]*):([^/@\s]*)@", re.IGNORECASE)


def scrub(text: str, settings: Settings) -> str:
    """An error message with no password in a URL and no configured secret value in it."""
    text = _USERINFO.sub(lambda m: f"{m.group(1)}{m.group(2)}:***@", text)
    for secret in _secrets(settings):
        text = text.replace(secret, "***")
    return text[:MAX_ERROR_CHARS]


def _http_get(
    url: str, *, timeout_s: float, headers: dict[str, str] | None = None
) -> httpx.Response:
    try:
        return httpx.get(url, headers=headers, timeout=timeout_s, follow_redirects=False)
    except httpx.HTTPError as error:
        raise _Failed(f"{type(error).__name__}: {error}") from None


def _database(settings: Settings, timeout_s: float, engine: Engine | None) -> tuple[str | None]:
    own = engine is None
    engine = engine or make_engine(settings.sqlalchemy_url)
    try:
        with engine.connect() as connection:
            if engine.dialect.name == "sqlite":
                version = f"SQLite {connection.execute(select(func.sqlite_version())).scalar()}"
            else:
                full = str(connection.execute(select(func.version())).scalar())
                version = " ".join(full.split()[:2])  # "PostgreSQL 15.20"
    except Exception as error:
        reason = getattr(error, "orig", None) or error
        raise _Failed(f"{type(reason).__name__}: {reason}".strip()) from None
    finally:
        if own:
            engine.dispose()
    return (version,)


def _replica(settings: Settings, timeout_s: float) -> tuple[str | None]:
    """The analyst pages' read replica: reachable, a standby, and how far behind it is. Not a
    /ready check: the pages fall back to the primary without it."""
    assert settings.sqlalchemy_read_url is not None
    engine = make_engine(settings.sqlalchemy_read_url)
    try:
        with engine.connect() as connection:
            full = str(connection.execute(select(func.version())).scalar())
            standby, caught_up, lag_s = connection.execute(
                text(
                    "SELECT pg_is_in_recovery(),"
                    " pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn(),"
                    " extract(epoch FROM now() - pg_last_xact_replay_timestamp())"
                )
            ).one()
    except Exception as error:
        reason = getattr(error, "orig", None) or error
        raise _Failed(f"{type(reason).__name__}: {reason}".strip()) from None
    finally:
        engine.dispose()
    if not standby:
        raise _Failed(
            "not a standby (pg_is_in_recovery() is false): a promoted replica takes writes that "
            "DATABASE_URL does not see"
        )
    version = " ".join(full.split()[:2])
    if caught_up:
        return (f"{version}, standby, replayed all it received",)
    return (f"{version}, standby, last replayed commit {float(lag_s or 0):.0f} s ago",)


def _pgvector(settings: Settings) -> tuple[str | None]:
    """MEMORY_BACKEND=pgvector: the extension in the app's Postgres (not created here: the
    migrate step does that)."""
    engine = make_engine(settings.sqlalchemy_url)
    try:
        with engine.connect() as connection:
            version = pgvector.version(connection)
            available = pgvector.available(connection)
    except Exception as error:
        reason = getattr(error, "orig", None) or error
        raise _Failed(f"{type(reason).__name__}: {reason}".strip()) from None
    finally:
        engine.dispose()
    if version is None:
        where = describe(settings.sqlalchemy_url)
        if not available:
            raise _Failed(pgvector.MISSING.format(where=where))
        raise _Failed(
            f"the vector extension is available but not created in {where}: run "
            "python -m data.store.migrate with MEMORY_BACKEND=pgvector"
        )
    return (f"pgvector {version}",)


def _memory(settings: Settings, timeout_s: float) -> tuple[str | None]:
    if settings.memory_backend == "pgvector":
        return _pgvector(settings)
    if settings.qdrant_url is None:
        path = settings.data_dir / "qdrant"
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / ".status-probe"
            probe.write_text("ok")
            probe.unlink()
        except OSError as error:
            raise _Failed(f"embedded storage at {path} is not writable: {error}") from None
        return (f"qdrant-client {metadata.version('qdrant-client')} (local mode)",)
    url = str(settings.qdrant_url).rstrip("/")
    key = settings.qdrant_api_key
    headers = {"api-key": key.get_secret_value()} if key else {}
    response = _http_get(f"{url}/", timeout_s=timeout_s, headers=headers)
    if response.status_code != 200:
        raise _Failed(f"HTTP {response.status_code} from Qdrant (check QDRANT_API_KEY)")
    version = response.json().get("version")
    return (f"Qdrant {version}" if version else None,)


def _model(settings: Settings, timeout_s: float) -> tuple[str | None]:
    if settings.uses_local_model:
        base = f"http://127.0.0.1:{settings.local_model_port}/v1"
        headers: dict[str, str] = {}
    else:
        base = (
            str(settings.openai_base_url).rstrip("/")
            if settings.openai_base_url
            else "https://api.openai.com/v1"
        )
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else ""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = _http_get(f"{base}/models", timeout_s=timeout_s, headers=headers)
    if response.status_code in (401, 403):
        raise _Failed(f"HTTP {response.status_code}: the key was refused (check OPENAI_API_KEY)")
    if response.status_code != 200:
        raise _Failed(f"HTTP {response.status_code} from {redact_url(base)}/models")
    if settings.uses_local_model:
        return (f"llama-cpp-python {metadata.version('llama-cpp-python')}",)
    server = response.headers.get("server") or ""
    return (server if "/" in server and not server.lower().startswith("python") else None,)


def _redis(settings: Settings, timeout_s: float) -> tuple[str | None]:
    assert settings.redis_url is not None
    client = redis.Redis.from_url(
        settings.redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
    )
    try:
        info = client.info("server")
    except redis.RedisError as error:
        raise _Failed(f"{type(error).__name__}: {error}") from None
    finally:
        client.close()
    return (f"Redis {info.get('redis_version')}",)


def _prometheus(settings: Settings, timeout_s: float) -> tuple[str | None]:
    url = str(settings.prometheus_url).rstrip("/")
    response = _http_get(f"{url}/api/v1/status/buildinfo", timeout_s=timeout_s)
    if response.status_code != 200:
        raise _Failed(f"HTTP {response.status_code} from Prometheus")
    version = response.json().get("data", {}).get("version")
    return (f"Prometheus {version}" if version else None,)


def _langsmith(settings: Settings, timeout_s: float) -> tuple[str | None]:
    url = str(settings.langsmith_endpoint).rstrip("/")
    assert settings.langsmith_api_key is not None
    headers = {"x-api-key": settings.langsmith_api_key.get_secret_value()}
    response = _http_get(f"{url}/info", timeout_s=timeout_s, headers=headers)
    if response.status_code != 200:
        raise _Failed(f"HTTP {response.status_code} from LangSmith")
    version = response.json().get("version")
    return (f"LangSmith {version}" if version else None,)


def sentry_target(dsn: str) -> str:
    """A DSN without its key: scheme, host and project (`https://o1.ingest.sentry.io/42`)."""
    parts = urlsplit(dsn)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _sentry(settings: Settings, timeout_s: float) -> tuple[str | None]:
    assert settings.sentry_dsn is not None
    parts = urlsplit(settings.sentry_dsn.get_secret_value())
    port = f":{parts.port}" if parts.port else ""
    # Any HTTP answer from the ingest host means events can get there.
    _http_get(f"{parts.scheme}://{parts.hostname}{port}/", timeout_s=timeout_s)
    try:
        import sentry_sdk

        version = f"sentry-sdk {sentry_sdk.VERSION}"
    except ImportError:
        version = None
    return (version,)


def _targets(settings: Settings) -> dict[str, tuple[bool, str]]:
    """name -> (configured, what is checked) for every dependency."""
    if settings.uses_local_model:
        model = f"embedded {LOCAL_MODEL_NAME} on 127.0.0.1:{settings.local_model_port}"
    elif settings.openai_base_url:
        model = f"{settings.chat_model} at {redact_url(settings.openai_base_url)}"
    else:
        model = f"{settings.chat_model} at OpenAI"
    return {
        "database": (True, describe(settings.sqlalchemy_url)),
        "memory": (
            True,
            f"vector extension in {describe(settings.sqlalchemy_url)}"
            if settings.memory_backend == "pgvector"
            else redact_url(settings.qdrant_url)
            if settings.qdrant_url
            else f"embedded storage in {settings.data_dir / 'qdrant'}",
        ),
        "model": (True, model),
        "redis": (
            settings.redis_url is not None,
            redact_url(settings.redis_url) if settings.redis_url else "in-process caches",
        ),
        "replica": (
            settings.sqlalchemy_read_url is not None,
            describe(settings.sqlalchemy_read_url)
            if settings.sqlalchemy_read_url
            else "DATABASE_READ_URL",
        ),
        "prometheus": (
            settings.prometheus_url is not None,
            redact_url(settings.prometheus_url) if settings.prometheus_url else "PROMETHEUS_URL",
        ),
        "langsmith": (
            settings.langsmith_api_key is not None,
            f"{redact_url(settings.langsmith_endpoint)} (project {settings.langsmith_project})",
        ),
        "sentry": (
            settings.sentry_dsn is not None,
            sentry_target(settings.sentry_dsn.get_secret_value())
            if settings.sentry_dsn
            else "SENTRY_DSN",
        ),
    }


def _run(
    name: str, settings: Settings, timeout_s: float, engine: Engine | None
) -> tuple[float, str | None]:
    started = time.perf_counter()
    functions: dict[str, Callable[[], tuple[str | None]]] = {
        "database": lambda: _database(settings, timeout_s, engine),
        "memory": lambda: _memory(settings, timeout_s),
        "model": lambda: _model(settings, timeout_s),
        "redis": lambda: _redis(settings, timeout_s),
        "replica": lambda: _replica(settings, timeout_s),
        "prometheus": lambda: _prometheus(settings, timeout_s),
        "langsmith": lambda: _langsmith(settings, timeout_s),
        "sentry": lambda: _sentry(settings, timeout_s),
    }
    (version,) = functions[name]()
    return (time.perf_counter() - started) * 1000, version


def check_all(
    settings: Settings,
    *,
    timeout_s: float | None = None,
    engine: Engine | None = None,
    names: tuple[str, ...] = NAMES,
) -> dict[str, Check]:
    """Check every configured dependency at once; each gets `timeout_s` (STATUS_CHECK_TIMEOUT_S
    by default) and one that has not answered by then is reported as failed, so this returns
    within about `timeout_s` whatever the network does. Also updates agent_dependency_up and
    agent_ready. Pass the app's `engine` to check its pool; otherwise a short-lived one is used."""
    timeout = settings.status_check_timeout_s if timeout_s is None else timeout_s
    targets = _targets(settings)
    pool = ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="status-check")
    futures: dict[str, Future[tuple[float, str | None]]] = {}
    now = utcnow()
    for name in names:
        if targets[name][0]:
            futures[name] = pool.submit(_run, name, settings, timeout, engine)
    deadline = time.monotonic() + timeout
    results: dict[str, Check] = {}
    for name in names:
        _, target = targets[name]
        if name not in futures:
            results[name] = Check(name=name, configured=False, target=target, ok=None)
            continue
        check = Check(name=name, configured=True, target=target, ok=True, checked_at=now)
        try:
            latency_ms, version = futures[name].result(
                timeout=max(deadline - time.monotonic(), 0.0)
            )
            check = replace(check, latency_ms=latency_ms, version=version)
        except FutureTimeout:
            check = replace(
                check, ok=False, latency_ms=timeout * 1000, error=f"no answer within {timeout:g} s"
            )
        except _Failed as error:
            check = replace(check, ok=False, error=scrub(str(error), settings))
        except Exception as error:  # a check must never take the page or /ready down
            log.warning("status check %s failed unexpectedly", name, exc_info=True)
            check = replace(
                check, ok=False, error=scrub(f"{type(error).__name__}: {error}", settings)
            )
        results[name] = _with_last_error(check, now)
    for name, check in results.items():
        if name == "memory" and settings.memory_backend == "pgvector":
            results[name] = replace(check, title="pgvector (long-term memory)")
    pool.shutdown(wait=False, cancel_futures=True)
    _publish(results)
    return results


def _with_last_error(check: Check, now: datetime) -> Check:
    with _last_lock:
        if check.error:
            _last_errors[check.name] = (check.error, now)
        last = _last_errors.get(check.name)
    if last is None:
        return check
    return replace(check, last_error=last[0], last_error_at=last[1])


def is_ready(checks: dict[str, Check]) -> bool:
    """What /ready answers: every configured dependency the agent needs answered."""
    return all(c.ok for c in checks.values() if c.required and c.configured)


def _publish(checks: dict[str, Check]) -> None:
    for check in checks.values():
        if not check.configured:
            continue
        DEPENDENCY_UP.labels(check.name).set(1 if check.ok else 0)
        if check.latency_ms is not None:
            DEPENDENCY_CHECK_SECONDS.labels(check.name).set(check.latency_ms / 1000)
    if all(name in checks for name in REQUIRED):
        READY.set(1 if is_ready(checks) else 0)


class Monitor(BackgroundWorker):
    """Runs check_all every STATUS_CHECK_INTERVAL_S on a daemon thread, so /metrics always has
    fresh agent_dependency_up and agent_ready values for Prometheus' readiness alert."""

    thread_name = "status-monitor"

    def __init__(self, settings: Settings, *, engine: Engine | None = None) -> None:
        super().__init__()
        self.interval_s = settings.status_check_interval_s
        self.settings = settings
        self.engine = engine
        self.latest: dict[str, Check] = {}

    def run_once(self) -> dict[str, Check]:
        self.latest = check_all(self.settings, engine=self.engine)
        return self.latest


CHECK_COLUMNS = [
    "dependency",
    "configured",
    "reachable",
    "latency_ms",
    "error",
    "last_error",
    "last_error_at",
    "version",
    "target",
]


def checks_frame(checks: dict[str, Check]) -> Any:
    """The status page's table: one row per dependency, in NAMES order."""
    import pandas as pd

    rows = []
    for name in NAMES:
        if name not in checks:
            continue
        c = checks[name]
        rows.append(
            {
                "dependency": c.label,
                "configured": "yes" if c.configured else "no",
                "reachable": "—" if c.ok is None else ("yes" if c.ok else "NO"),
                "latency_ms": c.latency_ms,
                "version": c.version or "",
                "target": c.target,
                "error": c.error or "",
                "last_error": c.last_error or "",
                "last_error_at": c.last_error_at,
            }
        )
    frame = pd.DataFrame(rows, columns=CHECK_COLUMNS)
    # Not checked (not configured) is NaN, shown blank rather than "None".
    frame["latency_ms"] = pd.to_numeric(frame["latency_ms"], errors="coerce")
    return frame


def not_ready_reasons(checks: dict[str, Check], *, required: bool = True) -> list[str]:
    """`Label: error` for each failing dependency the agent needs (or, with required=False,
    each failing optional one: the app works without it, with less)."""
    return [
        f"{c.label}: {c.error}"
        for c in checks.values()
        if c.required == required and c.configured and not c.ok
    ]
