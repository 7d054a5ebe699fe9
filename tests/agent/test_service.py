"""Chat input rules: every message has a defined outcome, and a turn its reader stops is
cancelled on record."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import text as sql

from agent.runtime import build_runtime
from agent.service import ChatInputError, TurnOutcome, clean_message
from data.config.settings import load_settings
from data.store.db import make_engine
from tests.helpers.fake_openai import FakeOpenAI, text


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Hello  ", "Hello"),
        ("line one\nline two", "line one\nline two"),
        ("bell\x07 and nul\x00 removed", "bell and nul removed"),
        ("Cafe\u0301", "Café"),  # NFC
        ("x" * 8000, "x" * 8000),
    ],
)
def test_clean_message_accepts(raw: str, expected: str) -> None:
    assert clean_message(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "Type a message first."),
        ("", "The message is empty."),
        (" \n\t\x00", "The message is empty."),
        ("x" * 8001, "The message has 8,001 characters; the limit is 8,000."),
    ],
)
def test_clean_message_rejects(raw: str | None, reason: str) -> None:
    with pytest.raises(ChatInputError) as caught:
        clean_message(raw)
    assert str(caught.value) == reason


@pytest.mark.parametrize("blank", ["\u200b\u200b", "\u2060 \ufeff", "\u3164\u115f", "\u0301"])
def test_clean_message_refuses_what_shows_nothing(blank: str) -> None:
    """Zero-width spaces, joiners, BOMs, fillers and lone combining marks are a blank message."""
    with pytest.raises(ChatInputError, match=r"^The message is empty\.$"):
        clean_message(blank)


@pytest.mark.parametrize("kept", ["a\u200bb", "👍🏽", "e\u0301", "\u202eevil"])
def test_clean_message_keeps_invisible_characters_around_visible_ones(kept: str) -> None:
    assert clean_message(kept)


def test_a_turn_whose_reader_stops_is_cancelled_on_record_and_the_model_stopped(
    db_url: str, tmp_path: Path
) -> None:
    """The chat page's Stop closes the turn's stream: the model's stream is closed at its next
    token (the server sees the client go), the turn is recorded as cancelled with its reason,
    no answer is stored, and the next turn of the same session is answered."""
    words = " ".join(f"w{i}" for i in range(60))
    with FakeOpenAI(default=text("Your parcel is on its way.")) as model:
        model.script(text(words, word_delay=0.05))
        settings = load_settings(
            data_dir=tmp_path / "data",
            metrics_port=0,
            database_url=db_url,
            openai_base_url=model.url,
            openai_api_key="sk-test-not-a-real-key",
            agent_tools="off",
        )
        engine = make_engine(db_url)
        service = build_runtime(settings, engine=engine).service
        outcome = TurnOutcome(session_id="s-stop")
        stream = service.stream_turn(
            user_id="ann", session_id="s-stop", message="Where is my parcel?", outcome=outcome
        )
        assert [next(stream) for _ in range(3)] == ["w0 ", "w1 ", "w2 "]
        stream.close()
        assert outcome.cancelled
        for _ in range(50):
            if model.disconnects:
                break
            time.sleep(0.05)
        assert model.disconnects == 1, "the model's stream was closed, not read to its end"
        assert model.pending == 0
        after = service.run_turn(user_id="ann", session_id="s-stop", message="And now?")
    assert after.turn == 2 and after.text == "Your parcel is on its way."
    with engine.connect() as connection:
        messages = connection.execute(
            sql("SELECT turn, role FROM messages WHERE session_id = 's-stop' ORDER BY id")
        ).all()
        events = connection.execute(
            sql("SELECT turn, status, error FROM agent_events WHERE kind = 'turn_cancelled'")
        ).all()
        chat = connection.execute(
            sql("SELECT turn, status, error FROM model_calls WHERE purpose = 'chat' ORDER BY id")
        ).all()
    engine.dispose()
    assert [tuple(m) for m in messages] == [(1, "user"), (2, "user"), (2, "assistant")]
    assert [tuple(e) for e in events] == [
        (1, "cancelled", "stopped before the answer was complete")
    ]
    assert [(t, s) for t, s, _ in chat] == [(1, "error"), (2, "ok")]
    assert "cancelled" in chat[0][2]
