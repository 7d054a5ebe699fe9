"""Dependency checks and the status page: real Postgres/SQLite, Redis and Prometheus; local
servers speaking the OpenAI, Qdrant, LangSmith and Sentry wire formats. Each check is bounded by
its timeout, a failure is named with its last error, and no credential is ever shown."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import streamlit as st
from prometheus_client import REGISTRY
from streamlit.testing.v1 import AppTest

from data.config.settings import Settings, load_settings
from data.config.urls import redact_url
from data.workers.status import (
    NAMES,
    REQUIRED,
    check_all,
    checks_frame,
    is_ready,
    not_ready_reasons,
)
from tests.helpers.fake_langsmith import FakeLangSmith
from tests.helpers.fake_openai import FakeOpenAI
from tests.helpers.pages import run
from tests.helpers.servers import APP, REDIS_URL, ROOT, free_port, wait_ready

SECRET = "s3cr3t-Value-42"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://localhost:9090", "http://localhost:9090"),
        ("http://admin:s3cret@prom.internal:9090/x", "http://admin:***@prom.internal:9090/x"),
        ("https://:tok@qdrant.example.com", "https://:***@qdrant.example.com"),
        ("redis://user@cache:6379/0", "redis://user@cache:6379/0"),
        ("http://h/q?api_key=abc&x=1&Token=t", "http://h/q?api_key=***&x=1&Token=***"),
        ("http://[::1]:6333", "http://[::1]:6333"),
        ("postgresql://u:p%40ss@db/agent", "postgresql://u:***@db/agent"),
        ("http://h:notaport", "***"),
        ("user:pass@host", "***"),
        (None, ""),
    ],
)
def test_redact_url(url: str | None, shown: str) -> None:
    assert redact_url(url) == shown


class _Handler(BaseHTTPRequestHandler):
    routes: ClassVar[dict[str, tuple[int, dict[str, Any]]]] = {}
    need_header: tuple[str, str] | None = None
    delay_s = 0.0

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        time.sleep(self.delay_s)
        if self.need_header and self.headers.get(self.need_header[0]) != self.need_header[1]:
            status, payload = 401, {"status": {"error": "Must provide an API key"}}
        else:
            status, payload = self.routes.get(self.path, (404, {"detail": "not found"}))
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def qdrant() -> Iterator[str]:
    """Qdrant's root endpoint as a Qdrant server answers it, behind an API key."""
    handler = type(
        "Qdrant",
        (_Handler,),
        {
            "routes": {"/": (200, {"title": "qdrant - vector search engine", "version": "1.15.5"})},
            "need_header": ("api-key", SECRET),
        },
    )
    server, url = serve(handler)
    yield url
    server.shutdown()


@pytest.fixture
def sentry_host() -> Iterator[str]:
    handler = type("Sentry", (_Handler,), {"routes": {"/": (200, {"ok": True})}})
    server, url = serve(handler)
    yield url
    server.shutdown()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus is missing; `make system-deps` installs Debian's package")
    work = tmp_path_factory.mktemp("prom-status")
    (work / "prometheus.yml").write_text("global:\n  scrape_interval: 1m\n")
    port = free_port()
    log = (work / "log").open("wb")
    server = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(f"{url}/-/ready", server, work / "log", timeout=30)
    yield url
    server.terminate()
    server.wait(timeout=15)
    log.close()


@pytest.fixture
def hanging() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock.getsockname()[1]
    sock.close()


def with_password(url: str) -> str:
    """The same server URL with a password in it (the test servers use trust auth)."""
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{SECRET}@")


def full_settings(
    db_url: str,
    tmp_path: Path,
    *,
    model: str,
    qdrant: str,
    prometheus: str,
    sentry: str | None = None,
    **extra: Any,
) -> Settings:
    sentry = sentry or f"http://127.0.0.1:{free_port()}"
    return load_settings(
        database_url=with_password(db_url),
        data_dir=tmp_path / "data",
        openai_base_url=model,
        openai_api_key=SECRET,
        qdrant_url=qdrant.replace("http://", f"http://reader:{SECRET}@"),
        qdrant_api_key=SECRET,
        redis_url=REDIS_URL,
        prometheus_url=prometheus.replace("http://", f"http://admin:{SECRET}@"),
        sentry_dsn=sentry.replace("http://", f"http://{SECRET}@") + "/7",
        **extra,
    )


def test_every_configured_dependency_is_checked(
    db_url: str, tmp_path: Path, qdrant: str, prometheus: str, sentry_host: str
) -> None:
    with FakeOpenAI(api_key=SECRET) as api, FakeLangSmith() as langsmith:
        settings = full_settings(
            db_url,
            tmp_path,
            model=api.url,
            qdrant=qdrant,
            prometheus=prometheus,
            langsmith_api_key=SECRET,
            langsmith_endpoint=langsmith.url,
            sentry=sentry_host,
        )
        checks = check_all(settings, timeout_s=5)
    assert list(checks) == list(NAMES)
    # The read replica needs a real standby: tests/data/test_replica.py checks it.
    assert not checks.pop("replica").configured
    failed = {n: c.error for n, c in checks.items() if not c.ok}
    assert not failed
    assert is_ready(checks) and not not_ready_reasons(checks)
    assert all(c.configured and c.latency_ms and c.latency_ms > 0 for c in checks.values())
    versions = {n: c.version or "" for n, c in checks.items()}
    assert versions["database"].startswith(
        "SQLite 3." if db_url.startswith("sqlite") else "PostgreSQL 15"
    )
    assert versions["memory"] == "Qdrant 1.15.5"
    assert versions["redis"].startswith("Redis 7")
    assert versions["prometheus"].startswith("Prometheus 2.")
    assert versions["langsmith"] == "LangSmith 0.10.0"
    assert versions["sentry"].startswith("sentry-sdk 2.")
    # The gauges Prometheus alerts on.
    for name in checks:
        assert REGISTRY.get_sample_value("agent_dependency_up", {"dependency": name}) == 1
    assert REGISTRY.get_sample_value("agent_ready") == 1
    shown = checks_frame(checks).to_csv()
    assert SECRET not in shown and SECRET.lower() not in shown.lower()
    assert "admin:***@" in shown and "reader:***@" in shown


def test_unconfigured_dependencies_are_named_not_failed(tmp_path: Path) -> None:
    checks = check_all(load_settings(data_dir=tmp_path / "data", local_model_port=free_port()))
    assert {n for n, c in checks.items() if not c.configured} == {
        "redis",
        "replica",
        "prometheus",
        "langsmith",
        "sentry",
    }
    assert checks["database"].ok and checks["memory"].ok
    assert checks["memory"].version and "local mode" in checks["memory"].version
    # Nothing listens on the embedded model's port: the model is named as not ready.
    assert checks["model"].ok is False and not is_ready(checks)
    assert not_ready_reasons(checks)[0].startswith("Model endpoint: ConnectError")


def test_a_hanging_dependency_costs_the_timeout_and_no_more(
    db_url: str, tmp_path: Path, hanging: int
) -> None:
    settings = load_settings(
        database_url=db_url,
        data_dir=tmp_path / "data",
        openai_base_url=f"http://127.0.0.1:{hanging}/v1",
        openai_api_key="k",
        prometheus_url=f"http://127.0.0.1:{hanging}",
        redis_url=f"redis://127.0.0.1:{hanging}/0",
    )
    started = time.perf_counter()
    checks = check_all(settings, timeout_s=1.0)
    # Three dependencies hang for the whole 1 s timeout: checked at once, the round costs one
    # timeout (one after the other it would be three).
    assert time.perf_counter() - started < 2.5
    for name in ("model", "prometheus", "redis"):
        assert checks[name].ok is False, name
        assert checks[name].error, name
    assert checks["database"].ok
    assert not is_ready(checks)
    reasons = " ".join(not_ready_reasons(checks))
    assert "Model endpoint" in reasons and "Redis" in reasons and "Prometheus" not in reasons
    assert REGISTRY.get_sample_value("agent_ready") == 0
    assert REGISTRY.get_sample_value("agent_dependency_up", {"dependency": "redis"}) == 0


def test_the_last_error_stays_after_recovery(
    db_url: str, tmp_path: Path, qdrant: str, prometheus: str
) -> None:
    with FakeOpenAI(api_key="other-key") as api:
        settings = full_settings(
            db_url, tmp_path, model=api.url, qdrant=qdrant, prometheus=prometheus
        )
        refused = check_all(settings, timeout_s=3, names=("model",))["model"]
        assert refused.ok is False
        assert refused.error == "HTTP 401: the key was refused (check OPENAI_API_KEY)"
        api.api_key = SECRET
        recovered = check_all(settings, timeout_s=3, names=("model",))["model"]
    assert recovered.ok and recovered.error is None
    assert recovered.last_error == refused.error
    assert recovered.last_error_at == refused.checked_at
    assert {"database", "memory", "model", "redis"} == REQUIRED


def test_errors_are_scrubbed_of_secrets(db_url: str, tmp_path: Path) -> None:
    port = free_port()
    settings = load_settings(
        database_url=db_url,
        data_dir=tmp_path / "data",
        redis_url=f"redis://:{SECRET}@127.0.0.1:{port}/0",
        prometheus_url=f"http://admin:{SECRET}@127.0.0.1:{port}",
        openai_base_url=f"http://key:{SECRET}@127.0.0.1:{port}/v1",
        openai_api_key=SECRET,
    )
    checks = check_all(settings, timeout_s=2)
    text = checks_frame(checks).to_csv()
    assert "ConnectError" in text or "ConnectionError" in text
    assert SECRET not in text


def test_status_page_lists_dependencies_maintenance_and_the_sop(
    app_env: str, monkeypatch: pytest.MonkeyPatch, prometheus: str
) -> None:
    monkeypatch.setenv("PROMETHEUS_URL", prometheus.replace("http://", f"http://admin:{SECRET}@"))
    monkeypatch.setenv("REDIS_URL", REDIS_URL.replace("redis://", f"redis://:{SECRET}@"))
    monkeypatch.setenv("QDRANT_URL", f"http://reader:{SECRET}@127.0.0.1:{free_port()}")
    st.cache_data.clear()
    at = run(AppTest.from_file(APP, default_timeout=60))
    at.switch_page("pages/status.py")
    run(at)
    assert at.title[0].value == "Status"
    frame = at.dataframe[0].value
    assert list(frame["dependency"]) == [
        "Database",
        "Qdrant (long-term memory)",
        "Model endpoint",
        "Redis (caches)",
        "Read replica (analyst pages)",
        "Prometheus",
        "LangSmith",
        "Sentry",
    ]
    by_name = frame.set_index("dependency")
    assert by_name.loc["Read replica (analyst pages)", "target"] == "DATABASE_READ_URL"
    assert by_name.loc["Prometheus", "reachable"] == "yes"
    assert by_name.loc["Qdrant (long-term memory)", "reachable"] == "NO"
    assert by_name.loc["LangSmith", "configured"] == "no"
    assert "reader:***@" in by_name.loc["Qdrant (long-term memory)", "target"]
    assert any("Not ready: Qdrant (long-term memory)" in e.value for e in at.error)
    # Never run here yet: the page says what to run.
    assert any("python -m data.store.maintain" in i.value for i in at.info)
    links = [link.proto.page for link in at.get("page_link")]
    # The pages' URL paths (app.py's navigation).
    assert {"latency-report", "costs", "feedback-report", "context-window"} <= set(links)
    codes = [c.value for c in at.code]
    assert (
        "python -m data.store.maintain" in codes
        and "python -m data.store.backup check FILE" in codes
    )
    everything = json.dumps(
        [str(e.proto) for e in at.main] + [str(e.proto) for e in at.sidebar], default=str
    )
    assert SECRET not in everything
    assert SECRET not in frame.to_csv()
    sidebar = " ".join(c.value for c in at.sidebar.caption)
    assert "Qdrant at http://reader:***@127.0.0.1" in sidebar
    judge = {m.label: m.value for m in at.metric}
    assert judge["Ended, waiting for a verdict"] == "0" and judge["Unjudged, last 24 h"] == "0"


def test_the_served_app_publishes_its_readiness(tmp_path: Path) -> None:
    """`python app.py` (the image's command) checks its dependencies in the background from the
    start, so Prometheus sees agent_ready go to 0 when the model endpoint goes away."""
    metrics_port = free_port()
    api = FakeOpenAI()
    api.__enter__()
    env = {
        **{k: v for k, v in os.environ.items() if k.upper() not in ("DATABASE_URL", "REDIS_URL")},
        "DATA_DIR": str(tmp_path / "data"),
        "OPENAI_BASE_URL": api.url,
        "OPENAI_API_KEY": "test-key",
        "CHAT_MODEL_CONTEXT_WINDOW": "128000",
        "METRICS_PORT": str(metrics_port),
        "API_PORT": str(free_port()),  # never the default 8000 (another run may hold it)
        "STATUS_CHECK_INTERVAL_S": "5",
        "STATUS_CHECK_TIMEOUT_S": "2",
        "PYTHONPATH": str(ROOT),
    }
    log = (tmp_path / "app.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "app.py"),
            "--server.port",
            str(free_port()),
            "--server.address",
            "127.0.0.1",
            "--server.headless",
            "true",
        ],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def ready_value() -> float | None:
        try:
            text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).text
        except httpx.HTTPError:
            return None
        for line in text.splitlines():
            if line.startswith("agent_ready "):
                return float(line.split()[1])
        return None

    def wait_for(value: float, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            if ready_value() == value:
                return
            time.sleep(0.25)
        pytest.fail(f"agent_ready never became {value}:\n{(tmp_path / 'app.log').read_text()}")

    try:
        try:
            wait_for(1.0, 60)
        finally:
            api.__exit__(None, None, None)  # the model endpoint goes away
        wait_for(0.0, 20)
    finally:
        process.terminate()
        process.wait(timeout=15)
        log.close()
