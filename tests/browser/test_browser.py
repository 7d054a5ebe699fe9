"""End to end in headless Chromium against the served app (`python app.py`, as `make run` does):
chat, then see the call counted."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.helpers.browser import ARTIFACTS, CHROMIUM_ARGS, chromium_path, served_app
from tests.helpers.servers import free_port

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The served app's DATA_DIR (its SQLite database lives there)."""
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="module")
def app_url(local_model_port: int, data_dir: Path) -> Iterator[str]:
    metrics_port = free_port()
    env = {"LOCAL_MODEL_PORT": str(local_model_port), "METRICS_PORT": str(metrics_port)}
    with served_app(data_dir, env, timeout=60) as url:
        # The run command exports /metrics before anyone opens a page, so Prometheus can scrape.
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        for name, kind in [
            ("agent_calls_total", "counter"),  # the seed's six names (section 5.1), exactly
            ("token_usage_total", "counter"),
            ("context_window_percent", "histogram"),
            ("summarization_latency_seconds", "histogram"),
            ("model_latency_seconds", "histogram"),
            ("memory_retrieval_latency_seconds", "histogram"),
            ("model_time_to_first_token_seconds", "histogram"),
            ("agent_cost_usd_total", "counter"),
        ]:
            assert f"# TYPE {name} {kind}" in metrics, name
        yield url


@pytest.fixture(scope="module")
def page() -> Iterator[Page]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        yield page
        browser.close()


def test_chat_then_cost(app_url: str, page: Page, data_dir: Path) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # A shared link to a page is the first request this server sees: app.py must still route it.
    page.goto(f"{app_url}/costs")
    expect(page.get_by_role("heading", name="Token cost")).to_be_visible(timeout=30_000)
    expect(page.get_by_text("Database: SQLite")).to_be_visible()
    expect(page.get_by_text("No model calls are recorded yet")).to_be_visible()
    expect(page.get_by_text("Page not found")).to_have_count(0)
    page.get_by_role("link", name="Open the chat").click()
    expect(page.get_by_role("heading", name="Support chat")).to_be_visible(timeout=30_000)
    box = page.get_by_test_id("stChatInputTextArea")
    box.fill("Hello, I need help with my order")
    box.press("Enter")
    # The streamed answer lands in an assistant message, captioned with its usage.
    caption = page.get_by_text(re.compile(r"\d+ in · \d+ out tokens · \$0\.000000"))
    expect(caption).to_be_visible(timeout=60_000)
    messages = page.get_by_test_id("stChatMessage")
    expect(messages).to_have_count(2)
    assert len(messages.nth(1).inner_text().strip()) > 20
    page.screenshot(path=str(ARTIFACTS / "chat.png"), full_page=True)

    # The chat call and the turn's embedding calls (help-center search, storing facts, which
    # happens on a background writer just after the answer): wait until the rows settle.
    stored: dict[str, int] = {}
    for _ in range(40):
        with sqlite3.connect(data_dir / "agent_chatbase.sqlite3") as db:
            now = dict(db.execute("SELECT purpose, count(*) FROM model_calls GROUP BY purpose"))
        if now == stored:
            break
        stored = now
        time.sleep(0.5)
    page.get_by_test_id("stSidebarNavItems").get_by_role("link", name="Cost").click()
    expect(page.get_by_role("heading", name="Token cost")).to_be_visible(timeout=30_000)
    assert stored.get("chat") == 1 and stored.get("embedding", 0) >= 1, stored
    calls = page.get_by_test_id("stMetric").filter(has_text="Model calls")
    expect(calls).to_contain_text(re.compile(rf"Model calls\s*{sum(stored.values())}(?!\d)"))
    expect(page.locator(".js-plotly-plot").first).to_be_visible(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "cost.png"), full_page=True)


@pytest.mark.parametrize(
    ("path", "heading", "charts"),
    [
        ("costs?range=30d&model=SmolLM2-135M-Instruct&grain=hour", "Token cost", 2),
        ("context-window?range=7d", "Context window", 3),
        ("latency-report?range=24h&grain=hour&user=guest", "Latency", 2),
    ],
)
def test_shared_links_render_each_page(
    app_url: str, page: Page, path: str, heading: str, charts: int
) -> None:
    """Runs after the chat test, so the database holds that turn."""
    page.goto(f"{app_url}/{path}")
    expect(page.get_by_role("heading", name=heading)).to_be_visible(timeout=30_000)
    expect(page.locator(".js-plotly-plot")).to_have_count(charts, timeout=30_000)
    expect(page.get_by_text("Page not found")).to_have_count(0)
    body = page.inner_text("body")
    assert "Traceback" not in body and "Error:" not in body
    # The filters from the link are the ones applied (and kept in the URL).
    assert path.split("?")[1].split("&")[0] in page.url
    page.screenshot(path=str(ARTIFACTS / f"{path.split('?')[0]}.png"), full_page=True)


def test_one_review_from_start_to_finish(app_url: str, page: Page, data_dir: Path) -> None:
    """A lead queued a conversation; a reviewer types their name, claims it, reads it, scores
    it with the keyboard (Enter saves) and the score is in the database."""
    from data.store.conversations import add_assistant_message, start_turn
    from data.store.db import make_engine
    from data.store.migrate import upgrade
    from data.workflows.review import enqueue

    url = f"sqlite:///{data_dir / 'agent_chatbase.sqlite3'}"
    upgrade(url)
    engine = make_engine(url)
    turn = start_turn(engine=engine, session_id="e2e-review", user_id="rita", text="Refund?")
    add_assistant_message(
        engine=engine,
        session_id="e2e-review",
        turn=turn,
        text="Refunds reach your account 5 to 10 working days after the return arrives.",
        run_id=None,
    )
    enqueue(engine=engine, session_ids=["e2e-review"], reviews_required=1, created_by="lead")
    engine.dispose()

    page.goto(f"{app_url}/review-queue")
    expect(page.get_by_role("heading", name="Review")).to_be_visible(timeout=30_000)
    name = page.get_by_role("textbox", name="Reviewer")
    name.fill("erin")
    name.press("Enter")
    page.get_by_role("button", name="Claim next").click()
    expect(page.get_by_text("Refunds reach your account 5 to 10")).to_be_visible(timeout=30_000)
    expect(page.get_by_text("Conversation e2e-review")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "review.png"), full_page=True)
    page.get_by_test_id("stRadio").get_by_text("4", exact=True).click()
    page.get_by_test_id("stRadio").get_by_text("Resolved", exact=True).click()
    page.get_by_role("combobox", name="Topic").click()
    page.get_by_role("option", name="returns and refunds").click()
    comment = page.get_by_role("textbox", name="Comment")
    comment.fill("Right, but say how to send the parcel back.")
    comment.press("Enter")
    expect(page.get_by_text("Saved 4/5 for e2e-review.")).to_be_visible(timeout=30_000)
    expect(page.get_by_text("Nothing to review")).to_be_visible()
    with sqlite3.connect(data_dir / "agent_chatbase.sqlite3") as db:
        scores = db.execute(
            "SELECT session_id, reviewer, score, outcome, topic, comment FROM review_scores"
        ).fetchall()
    assert scores == [
        (
            "e2e-review",
            "erin",
            4,
            "resolved",
            "returns and refunds",
            "Right, but say how to send the parcel back.",
        )
    ]


def test_every_page_after_one_chat(app_url: str, page: Page) -> None:
    """A fresh `make run` after one chat (runs after the chat test): every page of the
    navigation opens without an exception box or a traceback. The screenshots
    (artifacts/tour-*.png) are the ones the docs show."""
    from tests.helpers.browser import tour

    assert page.context.browser is not None
    tall = page.context.browser.new_page(viewport={"width": 1400, "height": 2400})
    try:
        assert tour(tall, app_url, ARTIFACTS, "tour") == {}
    finally:
        tall.close()
