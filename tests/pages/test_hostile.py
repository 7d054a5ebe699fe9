"""Hostile inputs in AppTest: URL parameters on every page, chat messages, imported
conversations, customer and reviewer comments, and the sidebar filters. Each must end in a
page without a traceback, with a notice where a value was corrected, and with every piece of
untrusted text escaped (no live markup, image or link). The browser test checks the same
corpus in Chromium for dialogs and outside requests."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import Engine, text
from streamlit.testing.v1 import AppTest

from agent.service import clean_message
from data.access.sanitize import md
from data.store.conversations import add_assistant_message, start_turn
from data.store.feedback import set_thumbs
from data.workflows import review
from tests.helpers.hostile import PAYLOADS, URL_PARAMS, import_hostile, live_markup
from tests.helpers.pages import run
from tests.helpers.servers import APP

TEXT_KINDS = ("title", "markdown", "caption", "warning", "info", "error", "success", "toast")
ANALYST_PAGES = [
    "pages/cost.py",
    "pages/context.py",
    "pages/latency.py",
    "pages/feedback.py",
    "pages/conversation.py",
    "pages/audit.py",
]
FILTERED = ANALYST_PAGES[:4]  # the pages with the shared sidebar filters
SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def squash(text: str) -> str:
    """Markdown text without the trailing spaces of its lines (Streamlit trims them)."""
    return re.sub(r" +\n", "\n", text).strip()


def texts(at: AppTest) -> list[str]:
    out: list[str] = []
    for kind in TEXT_KINDS:
        out += [str(e.value) for e in getattr(at, kind)]
    out += [str(e.label) for e in at.expander]
    return out


def assert_inert(at: AppTest, what: object) -> None:
    assert not at.exception, (what, [e.value for e in at.exception])
    shown = texts(at)
    assert not any("Traceback" in t for t in shown), what
    live = [t for t in shown if live_markup(t)]
    assert not live, (what, live[:3])


def opened(page: str, params: dict[str, str | list[str]]) -> AppTest:
    at = run(AppTest.from_file(APP, default_timeout=120))
    for key, value in params.items():
        at.query_params[key] = value
    at.switch_page(page)
    at.run(timeout=120)
    return at


@SQLITE
@pytest.mark.parametrize("page", ANALYST_PAGES)
def test_url_parameters_on_every_page(demo: Engine, page: str) -> None:
    """Each link in turn in one session, as someone pasting links into the address bar: a URL
    that changed from outside wins over the sidebar's widgets, as on a first visit (one run
    per link instead of two)."""
    at = run(AppTest.from_file(APP, default_timeout=120))
    for params in URL_PARAMS:
        at.query_params.clear()
        at.query_params.update(params)
        at.switch_page(page)
        at.run(timeout=120)
        assert_inert(at, (page, params))
        assert [t.value for t in at.title] != [], (page, params)
        if page in FILTERED and params == URL_PARAMS[1]:  # the link took effect in this session
            assert any("it ends today" in w.value for w in at.warning), page


@SQLITE
def test_corrected_links_say_so(demo: Engine) -> None:
    """The two links from the issue: a range ending in 9999 and a page's own URL."""
    at = opened("pages/cost.py", {"range": "custom", "from": "2026-01-01", "to": "9999-12-31"})
    assert any("it ends today" in w.value for w in at.warning)
    assert at.title[0].value == "Token cost"
    at = opened("pages/cost.py", {"range": "custom", "from": "9999-01-01", "to": "9999-12-31"})
    assert any("starts after today" in w.value for w in at.warning)
    at = opened("pages/conversation.py", {"session": "x" * 500})
    assert any("longer than 128 characters" in w.value for w in at.warning)


@SQLITE
def test_chat_messages_are_shown_as_typed(app_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Short answers: what is typed is tested here; the answers' own corpus is the browser's.
    monkeypatch.setenv("LOCAL_MODEL_MAX_TOKENS", "16")
    at = run(AppTest.from_file(APP, default_timeout=120))
    chosen = [p for p in PAYLOADS if len(p) < 300][:14]
    for payload in chosen:
        at.chat_input[0].set_value(payload)
        at.run(timeout=120)
        assert_inert(at, payload)
        if not payload.replace("\x00", "").strip():
            assert at.warning[0].value == "The message is empty."
            continue
        users = [m for m in at.chat_message if m.name == "user"]
        assert squash(users[-1].markdown[0].value) == squash(md(clean_message(payload)))


@SQLITE
def test_imported_conversation_and_comments_are_inert(app_env: str) -> None:
    from data.store.db import make_engine

    engine = make_engine(app_env)
    answers = import_hostile(engine, session_id="hostile-1", user_id="<b>cust</b>")
    comments = [p for p in PAYLOADS if p.strip()][: len(answers)]
    for message_id, comment in zip(answers, comments, strict=False):
        set_thumbs(
            engine=engine,
            message_id=message_id,
            user_id="<b>cust</b>",
            score=0,
            comment=comment[:2000],
            sync_enabled=False,
        )
    review.enqueue(engine=engine, session_ids=["hostile-1"], reviews_required=5, created_by="x")
    # The conversation page.
    at = opened("pages/conversation.py", {"session": "hostile-1"})
    assert_inert(at, "conversation")
    bodies = [m.markdown[0].value for m in at.chat_message]
    assert md(PAYLOADS[0]) in bodies  # the image is shown as its text
    # The review viewer, with the customers' comments under the answers, and reviewers'
    # comments through the score form.
    for n, comment in enumerate(PAYLOADS[:5]):  # five reviews wanted, five reviewers
        at = run(AppTest.from_file(APP, default_timeout=120))
        at.switch_page("pages/review.py")
        run(at)
        at.sidebar.text_input(key="reviewer_input").set_value(f"rev{n}")
        run(at)
        next(b for b in at.button if b.label == "Claim next").click()
        at.run(timeout=120)
        assert_inert(at, ("review", n))
        if n == 0:
            captions = [c.value for c in at.caption]
            assert any(c.startswith("Customer: 👎 ") for c in captions)
        at.radio(key="score").set_value(3)
        at.radio(key="score_outcome").set_value("unresolved")
        at.selectbox(key="score_topic").set_value("other")
        at.text_input(key="score_comment").set_value(comment[:2000])
        next(b for b in at.button if b.label == "Save and next").click()
        at.run(timeout=120)
        assert_inert(at, ("score", comment))
    # The feedback page lists those comments (in tables, which show text as text).
    at = opened("pages/feedback.py", {"range": "24h"})
    assert_inert(at, "feedback")
    engine.dispose()


@SQLITE
def test_sidebar_filter_values(demo: Engine) -> None:
    at = opened("pages/cost.py", {"range": "30d"})
    for payload in PAYLOADS[:20]:
        at.sidebar.text_input(key="f_user").set_value(payload[:128])
        at.run(timeout=120)
        assert_inert(at, payload)
        at.sidebar.text_input(key="f_session").set_value(payload[:128])
        at.run(timeout=120)
        assert_inert(at, payload)


@SQLITE
def test_pii_masking_on_the_conversation_page_and_review_viewer(
    app_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from data.store.db import make_engine

    engine = make_engine(app_env)
    said = "I am ann.lee@example.com, call +44 20 7946 0958, card 4111 1111 1111 1111"
    turn = start_turn(engine=engine, session_id="pii-1", user_id="ann.lee@example.com", text=said)
    add_assistant_message(
        engine=engine, session_id="pii-1", turn=turn, text="Thanks ann.lee@example.com", run_id=None
    )
    review.enqueue(engine=engine, session_ids=["pii-1"], reviews_required=1, created_by="x")
    monkeypatch.setenv("PII_MASKING", "true")
    at = opened("pages/conversation.py", {"session": "pii-1"})
    shown = " ".join(texts(at))
    assert "ann.lee@example.com" not in shown and "4111 1111" not in shown and "7946" not in shown
    assert md("[card ••••1111]") in shown and md("[email a…]") in shown
    at = run(AppTest.from_file(APP, default_timeout=120))
    at.switch_page("pages/review.py")
    run(at)
    at.sidebar.text_input(key="reviewer_input").set_value("rita")
    run(at)
    next(b for b in at.button if b.label == "Claim next").click()
    run(at)
    shown = " ".join(texts(at))
    assert "pii-1" in shown and "ann.lee@example.com" not in shown and "4111 1111" not in shown
    # The stored text is unchanged.
    with engine.connect() as connection:
        stored = connection.execute(
            text("SELECT content FROM messages WHERE session_id = 'pii-1' ORDER BY id")
        ).scalars()
        assert next(iter(stored)) == said
    engine.dispose()
