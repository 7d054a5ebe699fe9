"""Prometheus rules and the Grafana dashboard, checked with the real tools.

- `promtool check rules` and `promtool test rules` on deploy/prometheus.
- The committed dashboard JSON is what deploy/grafana/dashboard.py generates.
- A real Prometheus (Debian's) loads deploy/prometheus/alerts.yml and scrapes the app's real
  exporter while real agent turns run against a local OpenAI-compatible server (model names
  with hyphens, dots and slashes), a feedback sync pass runs against a local LangSmith and the
  dependency checks run. Every panel's expression then returns data, every rule's expression
  parses, and on backfilled incident history every alert's expression returns data.
- The latency page's model filter (data.integrations.prometheus) selects exactly the named model on
that
  Prometheus, where the old re.escape form is a parse error."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from langgraph.checkpoint.memory import InMemorySaver
from sqlalchemy import Engine

from agent.embedding_base import Embedder
from agent.judge import ModelJudge
from agent.knowledge import KnowledgeBase
from agent.models import ModelSpec, make_chat_model
from agent.runtime import assemble
from agent.service import ChatService, DependencyError
from agent.telemetry import CallTelemetry
from data.analytics.filters import Filters
from data.config.settings import load_settings
from data.config.topics import load_topics
from data.integrations.metrics import LATENCY_BUCKETS, PERCENT_BUCKETS, start_exporter
from data.integrations.prometheus import latency_over_time, model_selector, quantile_query
from data.store.db import make_engine
from data.store.migrate import upgrade
from data.store.orm import utcnow
from data.store.recorder import Recorder
from data.workers.langsmith_sync import SyncWorker, client_from_settings
from data.workers.outcome_judge import OutcomeWorker
from data.workers.status import check_all
from tests.helpers.fake_langsmith import FakeLangSmith
from tests.helpers.fake_openai import FakeOpenAI, Reply, error, text
from tests.helpers.servers import REDIS_URL, ROOT, free_port, wait_ready

PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "agent-metrics.json"
# Chat models (each its own agent) and the summarizer: hyphens, dots and a slash.
CHAT_MODELS = ("gpt-4o-mini", "meta-llama/Llama-3.1-8B-Instruct", "gpt-4o")
SUMMARY_MODEL = "gpt-4.1-nano"
JUDGE_MODEL = "gpt-4.1-mini"
SCRAPE_S = 1


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing; `make system-deps` installs Debian's prometheus")
    return path


# --- promtool ------------------------------------------------------------------------------


def test_promtool_checks_the_rules() -> None:
    result = subprocess.run(
        [tool("promtool"), "check", "rules", "alerts.yml"],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 9 rules found" in result.stdout


def test_promtool_checks_the_shipped_config() -> None:
    """prometheus.yml as docker-compose mounts it: valid, and it loads alerts.yml."""
    result = subprocess.run(
        [tool("promtool"), "check", "config", "prometheus.yml"],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout
    assert "SUCCESS: 9 rules found" in result.stdout


def test_promtool_unit_tests_every_alert() -> None:
    result = subprocess.run(
        [tool("promtool"), "test", "rules", "alerts.test.yml"],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", (PROMETHEUS_DIR / "alerts.test.yml").read_text()))
    assert tested == set(alert_exprs())


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """A wrong expectation fails promtool: the unit tests compare values and annotations."""
    shutil.copy(PROMETHEUS_DIR / "alerts.yml", tmp_path)
    broken = (PROMETHEUS_DIR / "alerts.test.yml").read_text().replace("6.00 USD", "7.00 USD")
    (tmp_path / "alerts.test.yml").write_text(broken)
    result = subprocess.run(
        [tool("promtool"), "test", "rules", "alerts.test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0


# --- the dashboard -------------------------------------------------------------------------


def test_dashboard_json_is_the_generated_one() -> None:
    result = subprocess.run(
        [sys.executable, "deploy/grafana/dashboard.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def panel_exprs() -> dict[str, str]:
    board = json.loads(DASHBOARD.read_text())
    return {
        f"{panel['title']} [{target['refId']}]": target["expr"]
        for panel in board["panels"]
        for target in panel["targets"]
    }


def test_dashboard_has_the_seed_panels_corrected_and_the_added_ones() -> None:
    board = json.loads(DASHBOARD.read_text())
    titles = [p["title"] for p in board["panels"]]
    assert titles[:4] == [
        "Agent calls",
        "Average context window usage",
        "Model latency p99",
        "Token usage (hourly)",
    ]
    for title in (
        "Time to first token",
        "Cost per hour by model",
        "Memory recall latency",
        "Summarization latency",
        "Error rate",
        "LangSmith feedback backlog",
        "Resolution rate",
        "Outcomes by type",
        "Judge calls",
    ):
        assert title in titles
    exprs = panel_exprs()
    context = exprs["Average context window usage [A]"]
    assert "rate(context_window_percent_sum[5m])" in context
    assert "rate(context_window_percent_count[5m])" in context
    assert "avg(context_window_percent)" not in " ".join(exprs.values())
    assert exprs["Model latency p99 [A]"] == (
        "histogram_quantile(0.99, sum by (le) (rate(model_latency_seconds_bucket[5m])))"
    )
    for expr in exprs.values():
        if "histogram_quantile" in expr:
            assert re.search(r"sum by \(le[,)]", expr) and "_bucket[" in expr, expr
    assert {p["datasource"]["uid"] for p in board["panels"]} == {"prometheus"}


def alert_exprs() -> dict[str, str]:
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    return {
        rule["alert"]: " ".join(rule["expr"].split())
        for group in rules["groups"]
        for rule in group["rules"]
    }


# --- a real Prometheus on the real exporter ------------------------------------------------


@dataclass
class Minute:
    """What the backfilled history holds at one minute (an incident in the last 90 minutes)."""

    cost: float
    slow: bool
    errors: bool
    context: float
    ready: int
    resolved: int  # of the minute's ten judged conversation ends


def openmetrics_history(end: datetime, minutes: int) -> str:
    """26 hours of exporter-shaped history ending at `end`: cheap and healthy until 90 minutes
    before `end`, then costly, slow, failing, near the context trigger, not ready, resolving no
    conversation and with a failing outcome judge."""
    start = end - timedelta(minutes=minutes)
    labels = 'job="agent-chatbase",instance="history:9464"'
    model = 'model="history-model"'
    families: dict[str, tuple[str, list[str]]] = {}

    def add(family: str, kind: str, sample: str, value: float, t: datetime) -> None:
        families.setdefault(family, (kind, []))[1].append(f"{sample} {value} {t.timestamp():.0f}")

    cost = calls_ok = calls_err = 0.0
    lat = [0] * (len(LATENCY_BUCKETS) + 1)
    lat_sum = 0.0
    ctx = [0] * (len(PERCENT_BUCKETS) + 1)
    ctx_sum = 0.0
    ends = dict.fromkeys(("resolved", "unresolved", "escalated", "unjudged"), 0)
    judge_calls = dict.fromkeys(("ok", "invalid", "error"), 0)
    for i in range(minutes + 1):
        t = start + timedelta(minutes=i)
        incident = i > minutes - 90
        state = Minute(
            cost=0.1 if incident else 0.01,
            slow=incident,
            errors=incident,
            context=78.0 if incident else 30.0,
            ready=0 if i > minutes - 15 else 1,
            resolved=0 if incident else 9,
        )
        cost += state.cost
        for _ in range(10):
            seconds = 20.0 if state.slow else 0.8
            lat_sum += seconds
            for b, le in enumerate([*LATENCY_BUCKETS, float("inf")]):
                lat[b] += seconds <= le
            ctx_sum += state.context
            for b, le in enumerate([*PERCENT_BUCKETS, float("inf")]):
                ctx[b] += state.context <= le
        calls_err += 2 if state.errors else 0
        calls_ok += 8 if state.errors else 10
        add("agent_cost_usd", "counter", f"agent_cost_usd_total{{{labels},{model}}}", cost, t)
        for status, value in (("ok", calls_ok), ("error", calls_err)):
            sample = f'agent_calls_total{{{labels},{model},purpose="chat",status="{status}"}}'
            add("agent_calls", "counter", sample, value, t)
        for name, counts, total, buckets in (
            ("model_latency_seconds", lat, lat_sum, LATENCY_BUCKETS),
            ("context_window_percent", ctx, ctx_sum, PERCENT_BUCKETS),
        ):
            for le, count in zip([*buckets, float("inf")], counts, strict=True):
                bound = "+Inf" if le == float("inf") else repr(float(le))
                sample = f'{name}_bucket{{{labels},{model},le="{bound}"}}'
                add(name, "histogram", sample, count, t)
            add(name, "histogram", f"{name}_count{{{labels},{model}}}", counts[-1], t)
            add(name, "histogram", f"{name}_sum{{{labels},{model}}}", total, t)
        add("agent_ready", "gauge", f"agent_ready{{{labels}}}", state.ready, t)
        for backlog_state, value in (
            ("pending", 150 if state.errors else 0),
            ("failed", 3 if state.errors else 0),
        ):
            sample = f'feedback_sync_backlog{{{labels},state="{backlog_state}"}}'
            add("feedback_sync_backlog", "gauge", sample, value, t)
        ends["resolved"] += state.resolved
        ends["unresolved"] += 9 - state.resolved
        ends["escalated"] += 1
        ends["unjudged"] += 1
        for outcome, value in ends.items():
            sample = (
                f'agent_conversations_ended_total{{{labels},outcome="{outcome}",topic="other"}}'
            )
            add("agent_conversations_ended", "counter", sample, value, t)
        judge_calls["ok"] += 2 if state.errors else 10
        judge_calls["invalid"] += 2 if state.errors else 0
        judge_calls["error"] += 6 if state.errors else 0
        for status, value in judge_calls.items():
            sample = f'agent_judge_calls_total{{{labels},status="{status}"}}'
            add("agent_judge_calls", "counter", sample, value, t)
    lines: list[str] = []
    for family, (kind, samples) in families.items():
        lines.append(f"# TYPE {family} {kind}")
        samples.sort(key=lambda s: (s.rsplit(" ", 2)[0], int(s.rsplit(" ", 1)[1])))
        lines += samples
    return "\n".join([*lines, "# EOF", ""])


@dataclass
class Stack:
    url: str
    exporter: str
    history_end: datetime
    engine: Engine


def query(url: str, expr: str, at: datetime | None = None) -> list[dict]:  # type: ignore[type-arg]
    params = {"query": expr}
    if at is not None:
        params["time"] = f"{at.timestamp():.3f}"
    body = httpx.get(f"{url}/api/v1/query", params=params, timeout=10).json()
    assert body["status"] == "success", (expr, body)
    return body["data"]["result"]  # type: ignore[no-any-return]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    pytest.fail(f"timed out waiting for {what}")


def build_service(
    engine: Engine,
    data_dir: Path,
    api: FakeOpenAI,
    model: str,
    embedder: Embedder,
    knowledge: KnowledgeBase,
) -> ChatService:
    """The app's agent (memory, summarization, recording) around real ChatOpenAI clients on the
    local OpenAI-compatible server; a small input window makes the later turns summarize."""
    settings = load_settings(
        data_dir=data_dir, metrics_port=0, model_max_retries=0, summary_keep_messages=2
    )
    recorder = Recorder(engine)

    def chat_model(name: str, purpose: str):  # type: ignore[no-untyped-def]
        spec = ModelSpec(
            provider="openai-compatible",
            model=name,
            base_url=api.url,
            context_window=400,
            max_tokens=64,
            timeout_s=10,
        )
        telemetry = CallTelemetry(spec=spec, purpose=purpose, sink=recorder)
        return make_chat_model(
            spec, settings=settings, purpose=purpose, callbacks=[telemetry], max_retries=0
        )

    parts = assemble(
        settings,
        engine=engine,
        chat_model=chat_model(model, "chat"),
        summary_model=chat_model(SUMMARY_MODEL, "summarize"),
        sink=recorder,
        retry_initial_delay_s=0.01,
        checkpointer=InMemorySaver(),
        embedder=embedder,
        knowledge=knowledge,
    )
    return ChatService(agent=parts.agent, engine=engine, model_label=model)


def build_judge(engine: Engine, api: FakeOpenAI) -> ModelJudge:
    """The app's outcome judge (agent/judge.py) around a real ChatOpenAI on the local
    OpenAI-compatible server, its calls recorded like the app's."""
    spec = ModelSpec(
        provider="openai-compatible",
        model=JUDGE_MODEL,
        base_url=api.url,
        context_window=8192,
        max_tokens=256,
        timeout_s=10,
    )
    settings = load_settings(metrics_port=0, model_max_retries=0)
    telemetry = CallTelemetry(spec=spec, purpose="judge", sink=Recorder(engine))
    model = make_chat_model(
        spec, settings=settings, purpose="judge", callbacks=[telemetry], max_retries=0
    )
    return ModelJudge(model, spec, load_topics())


def verdict_reply(outcome: str) -> Reply:
    answer = {
        "outcome": outcome,
        "topic": "order status",
        "confidence": 0.9,
        "reason": f"The conversation ended {outcome}.",
        "quote": "",
    }
    return text(json.dumps(answer))


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    shared_embedder: Embedder,
    shared_knowledge: KnowledgeBase,
) -> Iterator[Stack]:
    tool("promtool")
    work = tmp_path_factory.mktemp("observability")
    # History for the alert expressions, well before the server's head block.
    history_end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=6)
    history = work / "history.om"
    history.write_text(openmetrics_history(history_end, 26 * 60))
    storage = work / "tsdb"
    subprocess.run(
        [tool("promtool"), "tsdb", "create-blocks-from", "openmetrics", str(history), str(storage)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    # The app's exporter, serving the process-wide registry the recorder updates.
    exporter_port = free_port()
    assert start_exporter(host="127.0.0.1", port=exporter_port)
    exporter = f"127.0.0.1:{exporter_port}"
    shipped = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    job = shipped["scrape_configs"][0]
    job["static_configs"] = [{"targets": [exporter]}]
    job["scrape_interval"] = f"{SCRAPE_S}s"
    config = {
        "global": {"scrape_interval": f"{SCRAPE_S}s", "evaluation_interval": f"{SCRAPE_S}s"},
        "rule_files": [str(PROMETHEUS_DIR / "alerts.yml")],
        "scrape_configs": [job],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log_path = work / "prometheus.log"
    log = log_path.open("wb")
    server = subprocess.Popen(
        [
            tool("prometheus"),
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={storage}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=30d",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(f"{url}/-/ready", server, log_path, timeout=30)

    db_path = work / "app.sqlite3"
    db_url = f"sqlite:///{db_path}"
    upgrade(db_url)
    engine = make_engine(db_url)

    def scraped(expr: str) -> bool:
        return bool(query(url, expr))

    wait_for(lambda: scraped(f'up{{instance="{exporter}"}} == 1'), "the first scrape")
    with (
        FakeOpenAI(default=text("Your order A-10234 has shipped and arrives on Friday.")) as api,
        FakeOpenAI(default=verdict_reply("resolved")) as judge_api,
    ):
        # Judges each round's conversations as if they had been silent for an hour.
        outcome_worker = OutcomeWorker(
            engine, build_judge(engine, judge_api), clock=lambda: utcnow() + timedelta(hours=1)
        )
        services = {
            model: build_service(
                engine, work / f"data-{i}", api, model, shared_embedder, shared_knowledge
            )
            for i, model in enumerate(CHAT_MODELS)
        }
        messages = (
            "Hi, my order A-10234 has not arrived yet and I am getting worried about it.",
            "I paid for express shipping, so it should have been here by Tuesday at the latest.",
            "Can you check where it is and tell me when it will arrive at my address in Lyon?",
            "Thanks. If it is lost, I would like a refund to my card instead of a new parcel.",
            "Please also send me the tracking link by e-mail, my address is on the account.",
        )
        # Two rounds with scrapes between, so every counter and bucket has a rate.
        for round_number in range(2):
            for model, service in services.items():
                for turn, message in enumerate(messages):
                    service.run_turn(
                        user_id=f"user-{round_number}",
                        session_id=f"{model}-{round_number}",
                        message=f"{message} (turn {turn})",
                    )
            api.script(error(400))
            with pytest.raises(DependencyError):
                services[CHAT_MODELS[0]].run_turn(
                    user_id="user-x", session_id=f"fail-{round_number}", message="Hello?"
                )
            # A judge call fails (round 0) or answers outside the schema (round 1), and its
            # retry says unresolved; then one escalated (round 1), the rest resolved. A series
            # first seen at 1 has no rate yet, so unresolved comes in both rounds.
            judge_api.script(
                error(500) if round_number == 0 else text("Resolved, I think."),
                verdict_reply("unresolved"),
                *([verdict_reply("escalated")] if round_number == 1 else []),
            )
            assert outcome_worker.run_once().judged >= len(CHAT_MODELS)
            time.sleep(SCRAPE_S * 2.5)
    with FakeLangSmith() as langsmith:
        settings = load_settings(langsmith_api_key="ls-key", langsmith_endpoint=langsmith.url)
        client = client_from_settings(settings)
        assert client is not None
        SyncWorker(engine, client).run_once()
    check_all(
        load_settings(
            database_url=db_url,
            data_dir=work / "status",
            redis_url=REDIS_URL,
            prometheus_url=url,
            openai_base_url=f"http://127.0.0.1:{free_port()}/v1",
        ),
        timeout_s=3,
    )
    time.sleep(SCRAPE_S * 2.5)
    wait_for(
        lambda: scraped("sum(rate(summarization_latency_seconds_count[5m])) > 0"),
        "summarization calls in Prometheus",
    )
    yield Stack(url=url, exporter=exporter, history_end=history_end, engine=engine)
    server.terminate()
    server.wait(timeout=15)
    log.close()
    engine.dispose()


def test_every_panel_expression_returns_data(stack: Stack) -> None:
    empty = [title for title, expr in panel_exprs().items() if not query(stack.url, expr)]
    assert not empty, f"panels without data: {empty}"


def test_panels_show_the_recorded_models(stack: Stack) -> None:
    calls = query(stack.url, panel_exprs()["Agent calls [A]"])
    seen = {(s["metric"]["model"], s["metric"]["purpose"]) for s in calls}
    for model in CHAT_MODELS:
        assert (model, "chat") in seen
    assert (SUMMARY_MODEL, "summarize") in seen
    errors = {
        s["metric"]["model"]: float(s["value"][1])
        for s in query(stack.url, panel_exprs()["Error rate [A]"])
    }
    assert errors[CHAT_MODELS[0]] > 0
    assert errors[CHAT_MODELS[2]] == 0  # shown as 0, not as "no data"
    deps = {
        s["metric"]["dependency"]: float(s["value"][1])
        for s in query(stack.url, panel_exprs()["Dependencies up [A]"])
    }
    assert deps["database"] == 1 and deps["redis"] == 1 and deps["prometheus"] == 1
    assert deps["model"] == 0  # nothing listens on that base URL
    assert float(query(stack.url, panel_exprs()["Dependencies up [B]"])[0]["value"][1]) == 0


def test_outcome_panels_show_the_judged_conversations(stack: Stack) -> None:
    exprs = panel_exprs()
    outcomes = {s["metric"]["outcome"] for s in query(stack.url, exprs["Outcomes by type [A]"])}
    assert {"resolved", "unresolved", "escalated"} <= outcomes
    statuses = {s["metric"]["status"] for s in query(stack.url, exprs["Judge calls [A]"])}
    assert statuses == {"ok", "invalid", "error"}
    for ref in ("A", "B"):
        (rate,) = query(stack.url, exprs[f"Resolution rate [{ref}]"])
        assert 0 < float(rate["value"][1]) < 1, ref


def test_every_rule_expression_parses_live_and_fires_on_the_incident(stack: Stack) -> None:
    at = stack.history_end
    silent = []
    for name, expr in alert_exprs().items():
        query(stack.url, expr)  # parses and runs on the live series
        if not query(stack.url, expr, at):
            silent.append(name)
    assert not silent, f"alerts whose expression returned nothing on the incident: {silent}"
    # ... and not before the incident began.
    calm = at - timedelta(hours=3)
    for name, expr in alert_exprs().items():
        assert not query(stack.url, expr, calm), name


def test_prometheus_loaded_and_evaluates_the_rules(stack: Stack) -> None:
    def healthy() -> bool:
        body = httpx.get(f"{stack.url}/api/v1/rules", timeout=10).json()
        rules = [r for g in body["data"]["groups"] for r in g["rules"]]
        return len(rules) == 9 and all(r["health"] == "ok" for r in rules)

    wait_for(healthy, "the rules to be evaluated")


def test_every_metric_the_rules_and_panels_use_is_exported(stack: Stack) -> None:
    names = set(
        httpx.get(
            f"{stack.url}/api/v1/label/__name__/values",
            params={"match[]": f'{{instance="{stack.exporter}"}}'},
            timeout=10,
        ).json()["data"]
    )
    used: set[str] = set()
    for expr in [*panel_exprs().values(), *alert_exprs().values()]:
        used |= set(
            re.findall(
                r"\b([a-z_]+(?:_total|_bucket|_sum|_count|_percent|_up|_ready|"
                r"_backlog|_seconds))\b(?=[\[{ )])",
                expr,
            )
        )
    used.discard("up")
    assert used, "no metric names found"
    assert used <= names, used - names


@pytest.mark.parametrize("model", [*CHAT_MODELS, SUMMARY_MODEL])
def test_model_filter_selects_exactly_that_model(stack: Stack, model: str) -> None:
    series = httpx.get(
        f"{stack.url}/api/v1/series",
        params={"match[]": f"model_latency_seconds_count{model_selector((model,))}"},
        timeout=10,
    ).json()
    assert series["status"] == "success", series
    assert {s["model"] for s in series["data"]} == {model}


def test_the_old_re_escape_filter_was_a_parse_error(stack: Stack) -> None:
    broken = '{model=~"' + re.escape("gpt-4o-mini") + '"}'
    body = httpx.get(
        f"{stack.url}/api/v1/query",
        params={"query": f"model_latency_seconds_count{broken}"},
        timeout=10,
    ).json()
    assert body["status"] == "error" and body["errorType"] == "bad_data"


def test_latency_page_reads_prometheus_with_a_model_filter(stack: Stack) -> None:
    now = datetime.now(UTC)
    hour = now.replace(minute=0, second=0, microsecond=0)
    for models in [(CHAT_MODELS[1],), (CHAT_MODELS[0], CHAT_MODELS[2])]:
        filters = Filters(
            start=hour - timedelta(hours=1),
            end=hour + timedelta(hours=1),
            preset="custom",
            models=models,
            unit="hour",
            unit_auto=False,
        )
        frame = latency_over_time(url=stack.url, filters=filters, metric="model")
        assert set(frame["model"]) == set(models)
        assert (frame["p99"] > 0).all()
    assert "model=~" in quantile_query("model", 0.99, "1h", (SUMMARY_MODEL,))


def test_latency_page_uses_prometheus_for_a_model_with_hyphens_dots_and_slashes(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The page itself: with a model filter it reads Prometheus (no fallback banner)."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from tests.helpers.pages import run
    from tests.helpers.servers import APP

    monkeypatch.setenv("DATABASE_URL", str(stack.engine.url))
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("METRICS_PORT", "0")
    monkeypatch.setenv("PROMETHEUS_URL", stack.url)
    st.cache_data.clear()
    st.cache_resource.clear()
    today = datetime.now(UTC).date()
    at = run(AppTest.from_file(APP, default_timeout=60))
    for key, value in {
        "range": "custom",
        "from": today.isoformat(),
        "to": today.isoformat(),
        "grain": "hour",
        "model": f"{CHAT_MODELS[1]},{SUMMARY_MODEL}",
    }.items():
        at.query_params[key] = value
    at.switch_page("pages/latency.py")
    run(at)
    assert not at.warning, [w.value for w in at.warning]
    assert any(f"Source: Prometheus ({stack.url})" in m.value for m in at.markdown)
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    names = {trace["name"].split(",")[0] for trace in spec["data"]}
    assert names == {CHAT_MODELS[1], SUMMARY_MODEL}
    st.cache_data.clear()
    st.cache_resource.clear()


def test_a_prometheus_error_is_told_apart_from_an_unreachable_one(tmp_path: Path) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    from data.integrations.prometheus import PrometheusUnavailable

    class Overloaded(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            body = b'{"status":"error","errorType":"unavailable","error":"too many queries"}'
            self.send_response(503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

    server = ThreadingHTTPServer(("127.0.0.1", 0), Overloaded)
    Thread(target=server.serve_forever, daemon=True).start()
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    filters = Filters(start=hour - timedelta(hours=2), end=hour, preset="custom", unit="hour")
    secret_url = f"http://admin:pw-123@127.0.0.1:{server.server_address[1]}"
    with pytest.raises(PrometheusUnavailable) as answered:
        latency_over_time(url=secret_url, filters=filters, metric="model")
    server.shutdown()
    assert answered.value.answered is True
    with pytest.raises(PrometheusUnavailable) as refused:
        latency_over_time(url=f"http://127.0.0.1:{free_port()}", filters=filters, metric="model")
    assert refused.value.answered is False
    assert "pw-123" not in str(answered.value)
