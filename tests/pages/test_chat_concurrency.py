"""Several people chatting at once as the same user: each chat page keeps its own conversation
whatever sessions the others start, and an empty answer is never a silent success."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from streamlit.testing.v1 import AppTest

from data.store.db import make_engine
from tests.helpers.fake_openai import FakeOpenAI
from tests.helpers.fake_openai import text as reply
from tests.helpers.pages import run, session_box_of
from tests.helpers.servers import APP


@pytest.fixture
def fake_model(app_env: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    with FakeOpenAI(default=reply("Noted, thank you.")) as model:
        monkeypatch.setenv("OPENAI_BASE_URL", model.url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
        monkeypatch.setenv("AGENT_TOOLS", "off")
        monkeypatch.setenv("RATE_LIMIT_BURST", "1000")
        monkeypatch.setenv("RATE_LIMIT_PER_MINUTE", "1000")
        yield model


def say(at: AppTest, message: str) -> None:
    at.chat_input[0].set_value(message)
    run(at)


def sessions_by_message(engine: Engine) -> dict[str, str]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT content, session_id FROM messages WHERE role = 'user'")
        ).all()
    return {content: session for content, session in rows}


def test_each_page_keeps_its_own_conversation(fake_model: FakeOpenAI, app_env: str) -> None:
    pages = [run(AppTest.from_file(APP, default_timeout=60)) for _ in range(3)]
    for round_ in range(3):
        for i, at in enumerate(pages):
            say(at, f"page {i} turn {round_}")
    engine = make_engine(app_env)
    where = sessions_by_message(engine)
    engine.dispose()
    for i in range(3):
        own = {where[f"page {i} turn {r}"] for r in range(3)}
        assert len(own) == 1, f"page {i}'s turns all went to its own conversation: {own}"
        assert session_box_of(pages[i]).value == own.pop()
    assert len(set(where.values())) == 3, "three pages, three conversations"


def test_an_empty_answer_is_asked_again_then_explained(
    fake_model: FakeOpenAI, app_env: str
) -> None:
    at = run(AppTest.from_file(APP, default_timeout=60))
    fake_model.script(reply(""), reply(""))
    say(at, "Hello?")
    assert any("empty answer" in e.value for e in at.error), [e.value for e in at.error]
    engine = make_engine(app_env)
    with engine.connect() as connection:
        statuses = connection.execute(
            text("SELECT status, error FROM model_calls WHERE purpose = 'chat' ORDER BY id")
        ).all()
    engine.dispose()
    assert [s for s, _ in statuses] == ["error", "error"]
    assert all("empty completion" in str(e) for _, e in statuses)
    say(at, "Hello again")
    engine = make_engine(app_env)
    with engine.connect() as connection:
        answers = (
            connection.execute(text("SELECT content FROM messages WHERE role = 'assistant'"))
            .scalars()
            .all()
        )
    engine.dispose()
    assert answers == ["Noted, thank you."], "the next turn works"
