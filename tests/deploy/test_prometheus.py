"""The latency page on a real Prometheus (Debian's package), loaded with promtool backfill."""

from __future__ import annotations

import base64
import json
import random
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from data.integrations.metrics import LATENCY_BUCKETS
from data.integrations.prometheus import quantile_query
from tests.helpers.pages import run
from tests.helpers.servers import APP, free_port, wait_ready

MODELS = {"gpt-4o-mini": 0.8, "gpt-4o": 2.0}  # typical latency in seconds
# Backfilled history ends well before the server's head block (the last ~3 hours).
HISTORY_END = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=6)
HISTORY_START = HISTORY_END - timedelta(days=3)


def openmetrics_history(rng: random.Random) -> str:
    """model_latency_seconds as the exporter would have shown it, one scrape per minute."""
    lines = [
        "# TYPE model_latency_seconds histogram",
        "# HELP model_latency_seconds Model call latency",
    ]
    buckets = [*LATENCY_BUCKETS, float("inf")]
    for model, typical in MODELS.items():
        counts = [0] * len(buckets)
        total, observed = 0.0, 0
        t = HISTORY_START
        while t <= HISTORY_END:
            for _ in range(rng.randrange(2, 12)):  # calls during this minute
                value = rng.lognormvariate(np.log(typical), 0.6)
                observed += 1
                total += value
                for i, le in enumerate(buckets):
                    if value <= le:
                        counts[i] += 1
            stamp = f"{t.timestamp():.0f}"
            for le, count in zip(buckets, counts, strict=True):
                label = "+Inf" if le == float("inf") else repr(float(le))
                lines.append(
                    f'model_latency_seconds_bucket{{model="{model}",le="{label}"}} {count} {stamp}'
                )
            lines.append(f'model_latency_seconds_count{{model="{model}"}} {observed} {stamp}')
            lines.append(f'model_latency_seconds_sum{{model="{model}"}} {total} {stamp}')
            t += timedelta(minutes=1)
    # OpenMetrics wants each metric family's samples grouped and ordered by time per series.
    header, samples = lines[:2], lines[2:]
    samples.sort(key=lambda line: (line.rsplit(" ", 2)[0], int(line.rsplit(" ", 1)[1])))
    return "\n".join([*header, *samples, "# EOF", ""])


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    for tool in ("prometheus", "promtool"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing; `make test` installs Debian's prometheus package")
    work = tmp_path_factory.mktemp("prometheus")
    history = work / "history.om"
    history.write_text(openmetrics_history(random.Random(4)))
    storage = work / "data"
    subprocess.run(
        ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(history), str(storage)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    config = work / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1m\n")
    port = free_port()
    log = open(work / "prometheus.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={storage}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=30d",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(f"{url}/-/ready", server, work / "prometheus.log", timeout=30)
    yield url
    server.terminate()
    server.wait(timeout=15)
    log.close()


def chart_series(at: AppTest) -> dict[str, tuple[list[str], np.ndarray]]:
    """The traces of the page's first chart, as the browser receives them."""
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    out = {}
    for trace in spec["data"]:
        y = trace["y"]
        if isinstance(y, dict):  # plotly's typed-array encoding
            y = np.frombuffer(base64.b64decode(y["bdata"]), dtype=np.dtype(y["dtype"]))
        out[trace["name"]] = (trace["x"], np.asarray(y, dtype=float))
    return out


def instant(url: str, query: str, at: datetime) -> float:
    response = httpx.get(
        f"{url}/api/v1/query", params={"query": query, "time": at.timestamp()}, timeout=10
    ).json()
    return float(response["data"]["result"][0]["value"][1])


def test_latency_page_p99_equals_independent_promql(
    prometheus_url: str, app_env: str, monkeypatch: pytest.MonkeyPatch, demo
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PROMETHEUS_URL", prometheus_url)
    st.cache_data.clear()
    first = HISTORY_START.date() + timedelta(days=1)
    last = HISTORY_END.date() - timedelta(days=1)
    at = run(AppTest.from_file(APP, default_timeout=60))
    for key, value in {
        "range": "custom",
        "from": first.isoformat(),
        "to": last.isoformat(),
        "grain": "hour",
    }.items():
        at.query_params[key] = value
    at.switch_page("pages/latency.py")
    run(at)
    assert any(f"Source: Prometheus ({prometheus_url})" in m.value for m in at.markdown)
    series = chart_series(at)
    checked = 0
    for model in MODELS:
        xs, ys = series[f"{model}, p99"]
        assert len(xs) >= 24
        for x, y in list(zip(xs, ys, strict=True))[::7]:
            bucket_start = datetime.fromisoformat(x).replace(tzinfo=UTC)
            # Independent form: one series per model, no aggregation, evaluated at bucket end.
            query = (
                f"histogram_quantile(0.99, rate(model_latency_seconds_bucket"
                f'{{model="{model}"}}[1h]))'
            )
            expected = instant(prometheus_url, query, bucket_start + timedelta(hours=1))
            assert y == pytest.approx(expected * 1000, rel=1e-9), (model, x)
            checked += 1
    assert checked >= 8
    assert "model" in quantile_query("model", 0.99, "1h")
