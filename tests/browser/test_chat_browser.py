"""The chat page the way people use it, in headless Chromium against `python app.py`: several
tabs of one user chatting at the same time on the embedded model, and a message that cannot be
sent while an answer is still coming (the Stop control cancels that answer cleanly)."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import Page as AsyncPage
from playwright.async_api import async_playwright
from playwright.async_api import expect as async_expect
from playwright.sync_api import Page, expect, sync_playwright

from tests.helpers.browser import ARTIFACTS, CHROMIUM_ARGS, chromium_path, served_app
from tests.helpers.fake_openai import FakeOpenAI, text

pytestmark = pytest.mark.browser
TABS = 4
TURNS = 3
# The usage caption under an answer once its turn is stored (the page reran after it).
CAPTION = re.compile(r"\d+ in · \d+ out tokens")
WORDS = " ".join(f"word{i}" for i in range(60))  # a slow answer: 0.1 s a word


def rows(data_dir: Path, query: str, *params: object) -> list[tuple]:  # type: ignore[type-arg]
    with sqlite3.connect(data_dir / "agent_chatbase.sqlite3") as db:
        return list(db.execute(query, params))


def question(turn: int) -> str:
    # The same words in every tab, as a customer repeats themself: conversations that look
    # alike (same title, same minute, same number of turns) must still be told apart.
    return f"Hello, question {turn + 1}: where is my order?"


async def chat_in_tab(page: AsyncPage, url: str, tab: int) -> tuple[str, list[str]]:
    """Three turns in one tab, each sent as soon as the previous answer is in; returns the
    conversation the tab names and what it shows as the customer's messages at the end."""
    await page.goto(f"{url}/support-chat")
    box = page.get_by_test_id("stChatInputTextArea")
    for turn in range(TURNS):
        await async_expect(box).to_be_enabled(timeout=120_000)
        await box.fill(question(turn))
        await box.press("Enter")
        await async_expect(page.get_by_text(CAPTION)).to_have_count(turn + 1, timeout=240_000)
    await async_expect(box).to_be_enabled(timeout=60_000)
    caption = await page.get_by_text(re.compile(r"^Session [0-9a-f]{32}$")).inner_text()
    shown = (
        page.get_by_test_id("stChatMessage")
        .filter(has=page.get_by_test_id("stChatMessageAvatarUser"))
        .get_by_test_id("stChatMessageContent")
    )
    await page.screenshot(path=str(ARTIFACTS / f"chat-tab-{tab}.png"), full_page=True)
    return caption.removeprefix("Session "), [t.strip() for t in await shown.all_inner_texts()]


async def four_tabs(url: str) -> list[tuple[str, list[str]]]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_path(), args=CHROMIUM_ARGS
        )
        try:
            # A context each: separate cookies, so four Streamlit sessions of the same user.
            contexts = [
                await browser.new_context(viewport={"width": 1200, "height": 900})
                for _ in range(TABS)
            ]
            pages = [await context.new_page() for context in contexts]
            return list(
                await asyncio.gather(*(chat_in_tab(p, url, i) for i, p in enumerate(pages)))
            )
        finally:
            await browser.close()


def test_four_tabs_of_one_user_chat_at_once_on_the_embedded_model(
    local_model_port: int, tmp_path: Path
) -> None:
    """`make run` in local mode (user guest); four tabs send the same three messages, all at
    the same time. Every turn is stored once, in its own tab's conversation, and answered;
    each tab names its own conversation and shows its three messages."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with served_app(tmp_path, {"LOCAL_MODEL_PORT": str(local_model_port)}) as url:
        tabs = asyncio.run(four_tabs(url))
    own = [question(turn) for turn in range(TURNS)]
    assert len({session for session, _ in tabs}) == TABS, "four tabs, four conversations"
    for session, shown in tabs:
        assert shown == own, "the tab shows its own three messages"
        turns = rows(
            tmp_path,
            "SELECT turn, role, content FROM messages WHERE session_id = ? ORDER BY turn, id",
            session,
        )
        expected = [(t + 1, "user", own[t]) for t in range(TURNS)]
        assert [m for m in turns if m[1] == "user"] == expected, (session, turns)
        assert [m[0] for m in turns if m[1] == "assistant"] == [1, 2, 3], "each one answered"
    sessions = rows(tmp_path, "SELECT DISTINCT session_id FROM messages")
    assert len(sessions) == TABS, "no turn went anywhere else"
    log = (tmp_path / "streamlit.log").read_text(errors="replace")
    assert "Traceback" not in log and "created with a default value" not in log, log[-3000:]


@pytest.fixture
def slow_model() -> Iterator[FakeOpenAI]:
    """An OpenAI-compatible model whose answers take seconds to stream."""
    with FakeOpenAI(default=text("Your parcel left the warehouse today.")) as model:
        model.script(text(WORDS, word_delay=0.1))
        yield model


@pytest.fixture
def page() -> Iterator[Page]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield browser.new_page(viewport={"width": 1200, "height": 900})
        browser.close()


def test_no_message_can_be_sent_mid_answer_and_stop_cancels_cleanly(
    slow_model: FakeOpenAI, page: Page, tmp_path: Path
) -> None:
    """While an answer streams the input is off and a Stop control is shown. Stop ends the
    turn as cancelled with the reason recorded and shown; the model's stream is closed; the
    next message goes to the same conversation and is answered."""
    env = {
        "OPENAI_BASE_URL": slow_model.url,
        "OPENAI_API_KEY": "sk-test-not-a-real-key",
        "AGENT_TOOLS": "off",
    }
    with served_app(tmp_path, env) as url:
        page.goto(f"{url}/support-chat")
        box = page.get_by_test_id("stChatInputTextArea")
        box.fill("First question: where is my parcel?")
        box.press("Enter")
        expect(page.get_by_text("word3", exact=False)).to_be_visible(timeout=60_000)
        expect(box).to_be_disabled()
        page.screenshot(path=str(ARTIFACTS / "chat-mid-answer.png"), full_page=True)
        page.get_by_role("button", name="Stop answering").click()
        expect(page.get_by_text("Stopped. Your message is kept")).to_be_visible(timeout=30_000)
        expect(
            page.get_by_text("No answer: stopped before the answer was complete.")
        ).to_be_visible()
        expect(box).to_be_enabled()
        for _ in range(50):  # the model saw its stream closed, not read to the end
            if slow_model.disconnects:
                break
            time.sleep(0.1)
        assert slow_model.disconnects == 1
        box.fill("Second question: and when does it arrive?")
        box.press("Enter")
        expect(page.get_by_text("Your parcel left the warehouse today.")).to_be_visible(
            timeout=60_000
        )
        expect(page.get_by_text(CAPTION)).to_have_count(1, timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "chat-after-stop.png"), full_page=True)
        # A click elsewhere on the page while an answer streams (a thumb on the earlier
        # answer reruns the page) leaves that answer running to its end.
        slow_model.script(text(WORDS, word_delay=0.1))
        box.fill("Third question: can you check again?")
        box.press("Enter")
        expect(page.get_by_text("word3", exact=False)).to_be_visible(timeout=60_000)
        page.get_by_test_id("stFeedbackButton").first.click()  # thumbs up
        expect(page.get_by_text(CAPTION)).to_have_count(2, timeout=60_000)
        expect(page.get_by_text("word59", exact=False)).to_be_visible()
        expect(box).to_be_enabled()
    messages = rows(tmp_path, "SELECT session_id, turn, role, content FROM messages ORDER BY id")
    assert len({m[0] for m in messages}) == 1, "one conversation throughout"
    assert [(turn, role) for _, turn, role, _ in messages] == [
        (1, "user"),
        (2, "user"),
        (2, "assistant"),
        (3, "user"),
        (3, "assistant"),
    ]
    assert messages[-1][3] == WORDS, "the answer clicked over ran to its end"
    assert rows(tmp_path, "SELECT score FROM feedback_thumbs") == [(1,)]
    cancelled = rows(
        tmp_path, "SELECT turn, status, error FROM agent_events WHERE kind = 'turn_cancelled'"
    )
    assert cancelled == [(1, "cancelled", "stopped before the answer was complete")]
