"""AppTest of the review and feedback pages and of the chat page's thumbs, on SQLite and
Postgres with the real model server and the demo history."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, insert, text
from streamlit.testing.v1 import AppTest

from data.store.conversations import add_assistant_message, start_turn
from data.store.feedback import MAX_COMMENT_CHARS
from data.store.orm import utcnow
from data.store.orm_outcomes import ConversationOutcome
from data.workflows import review
from tests.helpers.pages import run, session_box_of
from tests.helpers.servers import APP


def rows(engine: Engine, query: str, **params: object) -> list[tuple]:  # type: ignore[type-arg]
    with engine.connect() as connection:
        return [tuple(r) for r in connection.execute(text(query), params)]


@pytest.fixture
def queued(demo: Engine) -> Iterator[list[str]]:
    """Two demo conversations in the queue, two reviews wanted for each."""
    sessions = [r[0] for r in rows(demo, "SELECT id FROM chat_sessions ORDER BY id LIMIT 2")]
    review.enqueue(engine=demo, session_ids=sessions, reviews_required=2, created_by="lead")
    yield sessions


def review_page(name: str) -> AppTest:
    """The review page, signed in as `name` (typed into the sidebar)."""
    at = run(AppTest.from_file(APP, default_timeout=60))
    at.switch_page("pages/review.py")
    run(at)
    assert at.title[0].value == "Review"
    assert "Type your name" in at.info[0].value  # nothing works before a name is given
    at.sidebar.text_input(key="reviewer_input").set_value(name)
    return run(at)


def button(at: AppTest, label: str):  # type: ignore[no-untyped-def]
    return next(b for b in at.button if b.label == label)


def claim(at: AppTest) -> AppTest:
    button(at, "Claim next").click()
    return run(at)


def test_claim_score_save_and_next_then_progress(demo: Engine, queued: list[str]) -> None:
    at = claim(review_page("alice"))
    first = queued[0]
    assert any(first in c.value for c in at.caption)
    messages = rows(demo, "SELECT count(*) FROM messages WHERE session_id = :s", s=first)[0][0]
    assert len(at.chat_message) == messages > 0  # the whole transcript
    assert any(" out tokens · $" in c.value for c in at.caption)  # per-answer usage
    at.radio(key="score").set_value(4)
    at.radio(key="score_outcome").set_value("escalated")
    at.selectbox(key="score_topic").set_value("damaged item")
    at.text_input(key="score_comment").set_value("Right answer, a bit curt.")
    button(at, "Save and next").click()
    run(at)
    saved = rows(
        demo, "SELECT session_id, reviewer, score, comment, outcome, topic FROM review_scores"
    )
    assert saved == [(first, "alice", 4, "Right answer, a bit curt.", "escalated", "damaged item")]
    assert at.toast[0].value == f"Saved 4/5 for {first}."
    # The next conversation is claimed and shown, its form empty again.
    assert any(queued[1] in c.value for c in at.caption)
    assert at.radio(key="score").value is None and at.text_input(key="score_comment").value == ""
    assert at.radio(key="score_outcome").value is None
    assert at.selectbox(key="score_topic").value is None
    at.session_state["review_tab"] = "Progress"
    run(at)
    progress = at.dataframe[0].value.set_index("reviewer")
    assert progress.loc["alice", "done_today"] == 1
    assert progress.loc["alice", "claimed"] == 1
    assert {m.label: m.value for m in at.metric}["Scores today"] == "1"


def test_missing_score_and_expired_claim_write_nothing(demo: Engine, queued: list[str]) -> None:
    at = claim(review_page("alice"))
    button(at, "Save and next").click()
    run(at)
    assert at.error[0].value == "Choose a score from 1 to 5, the outcome and the topic, then save."
    at.radio(key="score").set_value(2)
    button(at, "Save and next").click()
    run(at)
    assert at.error[0].value.startswith("Choose a score from 1 to 5, the outcome")
    at.radio(key="score_outcome").set_value("resolved")
    at.selectbox(key="score_topic").set_value("payment")
    # Comments are clipped at the data layer's limit by the widget itself.
    assert at.text_input(key="score_comment").proto.max_chars == MAX_COMMENT_CHARS
    with demo.begin() as connection:
        connection.execute(text("UPDATE review_claims SET expires_at = claimed_at"))
    at.text_input(key="score_comment").set_value("fine")
    button(at, "Save and next").click()
    run(at)
    assert at.error[0].value.startswith("Your claim expired at ")
    assert rows(demo, "SELECT count(*) FROM review_scores") == [(0,)]
    # "Claim again" gives a fresh claim; the draft score is still there and now saves.
    button(at, "Claim again").click()
    run(at)
    button(at, "Save and next").click()
    run(at)
    assert rows(demo, "SELECT reviewer, score, comment FROM review_scores") == [
        ("alice", 2, "fine")
    ]


def test_other_scores_stay_hidden_until_the_reviewer_scored(
    demo: Engine, queued: list[str]
) -> None:
    held = review.claim_next(engine=demo, reviewer="bob")
    assert held is not None and held.session_id == queued[0]
    review.save_score(engine=demo, token=held.token, reviewer="bob", score=1, comment="wrong")
    # The judge's verdict on it is not shown either: reviewers label the outcome blind.
    with demo.begin() as connection:
        connection.execute(
            insert(ConversationOutcome).values(
                session_id=queued[0],
                user_id="u",
                ended_at=utcnow(),
                end_reason="idle",
                outcome="resolved",
                topic="payment",
                reason="JUDGE-SAYS-RESOLVED",
                decided_by="judge",
                rubric_version="outcome-v1",
            )
        )
    at = claim(review_page("alice"))
    assert any(queued[0] in c.value for c in at.caption)
    shown = " ".join(e.value for e in [*at.markdown, *at.caption, *at.info] if e.value)
    assert "bob" not in shown and not at.dataframe
    assert "JUDGE-SAYS" not in shown
    at.radio(key="score").set_value(5)
    at.radio(key="score_outcome").set_value("unresolved")
    at.selectbox(key="score_topic").set_value("other")
    button(at, "Save and next").click()
    run(at)
    revealed = at.expander[0]
    assert revealed.label == f"Other reviewers' scores of {queued[0]} (1)"
    others = revealed.dataframe[0].value
    assert others[["reviewer", "score", "comment"]].values.tolist() == [["bob", 1, "wrong"]]


def test_release_gives_the_item_back(demo: Engine, queued: list[str]) -> None:
    at = claim(review_page("alice"))
    button(at, "Skip and release").click()
    run(at)
    assert rows(demo, "SELECT ended_reason FROM review_claims") == [("released",)]
    assert button(at, "Claim next")


def queue_page(seed: int) -> AppTest:
    at = review_page("lead")
    at.session_state["review_tab"] = "Queue"
    at.query_params["range"] = "30d"
    run(at)
    at.number_input(key="q_sample").set_value(5)
    at.number_input(key="q_seed").set_value(seed)
    return run(at)


def test_lead_queues_a_seeded_sample_and_assigns_it(demo: Engine) -> None:
    at = queue_page(seed=3)
    shown = at.dataframe[0].value
    assert len(shown) == 5
    # Two leads with the same seed get the same sample.
    assert sorted(queue_page(seed=3).dataframe[0].value["session_id"]) == sorted(
        shown["session_id"]
    )
    at.number_input(key="q_required").set_value(3)
    at.text_input(key="q_assignee").set_value("carol")
    button(at, "Add 5 to the queue").click()
    run(at)
    queued = rows(
        demo, "SELECT session_id, reviews_required, assigned_to, created_by FROM review_items"
    )
    assert sorted(r[0] for r in queued) == sorted(shown["session_id"])
    assert {r[1:] for r in queued} == {(3, "carol", "lead")}
    # The queue table lists them; reassign the first two to dave.
    items = at.dataframe[1].value
    assert len(items) == 5
    at.session_state["queue_items"] = {"selection": {"rows": [0, 1], "columns": [], "cells": []}}
    run(at)
    at.text_input(key="assign_to").set_value("dave")
    button(at, "Assign 2 selected").click()
    run(at)
    assigned = rows(demo, "SELECT id, assigned_to FROM review_items ORDER BY id")
    assert [a for _, a in assigned] == ["dave", "dave", "carol", "carol", "carol"]


def test_chat_thumbs_are_saved_and_changed(app_env: str) -> None:
    from data.store.db import make_engine

    engine = make_engine(app_env)
    turn = start_turn(engine=engine, session_id="s-thumbs", user_id="guest", text="Hi")
    add_assistant_message(
        engine=engine, session_id="s-thumbs", turn=turn, text="Hello!", run_id=None
    )
    answer = rows(engine, "SELECT id FROM messages WHERE role = 'assistant'")[0][0]
    at = run(AppTest.from_file(APP, default_timeout=120))
    session_box_of(at).set_value("s-thumbs")
    run(at)
    thumbs = at.get("feedback")[0]
    thumbs.set_value(0)
    run(at)
    stored = "SELECT score, comment, sync_state FROM feedback_thumbs"
    assert rows(engine, stored) == [(0, None, "local")]
    at.text_area(key=f"fbc-{answer}").set_value("It did not answer my question.")
    button(at, "Save comment").click()
    run(at)
    assert rows(engine, stored) == [(0, "It did not answer my question.", "local")]
    at.get("feedback")[0].set_value(1)  # changed later: the latest wins, the comment stays
    run(at)
    assert rows(engine, stored) == [(1, "It did not answer my question.", "local")]
    assert at.text_area(key=f"fbc-{answer}").proto.max_chars == MAX_COMMENT_CHARS
    engine.dispose()


def score_round(engine: Engine, sessions: list[str], scores: dict[str, list[int]]) -> None:
    """Each reviewer scores `sessions` in order (claims take the oldest open item first)."""
    review.enqueue(
        engine=engine, session_ids=sessions, reviews_required=len(scores), created_by="lead"
    )
    for reviewer, given in scores.items():
        for session, score in zip(sessions, given, strict=True):
            claim = review.claim_next(engine=engine, reviewer=reviewer)
            assert claim is not None and claim.session_id == session
            review.save_score(engine=engine, token=claim.token, reviewer=reviewer, score=score)


def feedback_page() -> AppTest:
    at = run(AppTest.from_file(APP, default_timeout=60))
    at.query_params["range"] = "30d"
    at.switch_page("pages/feedback.py")
    return run(at)


def test_feedback_page_scores_agreement_and_local_sync(demo: Engine) -> None:
    import krippendorff
    import numpy as np

    sessions = [r[0] for r in rows(demo, "SELECT id FROM chat_sessions ORDER BY id LIMIT 3")]
    score_round(demo, sessions, {"alice": [1, 4, 5], "bob": [3, 4, 2]})
    at = feedback_page()
    assert at.title[0].value == "Feedback"
    assert len(at.get("plotly_chart")) == 5  # over time, by model, context, summarized, cost
    metrics = {m.label: m.value for m in at.metric}
    expected = krippendorff.alpha(
        reliability_data=np.array([[1, 4, 5], [3, 4, 2]]), level_of_measurement="ordinal"
    )
    assert metrics["Krippendorff's α (ordinal)"] == f"{expected:.3f}"
    assert metrics["Items with 2+ scores"] == "3" and metrics["Reviewers"] == "2"
    assert any("LangSmith is not configured" in i.value for i in at.info)
    assert metrics["Local"] == "6" and metrics["Pending"] == "0"
    pairs = at.dataframe[0].value
    assert pairs[["reviewer_a", "reviewer_b", "items"]].values.tolist() == [["alice", "bob", 3]]
    spread = at.dataframe[1].value
    assert spread[["session_id", "spread"]].values.tolist() == [
        [sessions[2], 3],
        [sessions[0], 2],
        [sessions[1], 0],
    ]
    # A disagreement opens its conversation.
    at.session_state["disagreements"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    run(at)
    assert at.title[0].value == "Conversation"
    assert at.query_params["session"] in (sessions[2], [sessions[2]])


def test_feedback_page_without_scores_says_what_to_do(demo: Engine) -> None:
    at = feedback_page()
    infos = [i.value for i in at.info]
    assert any(i.startswith("No scores in this range yet: open **Review**") for i in infos)
    assert any(i.startswith("No item has two scores yet") for i in infos)
    assert any(i.startswith("No thumbs from customers in this range") for i in infos)


def test_feedback_page_with_langsmith(demo: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    from langsmith import Client

    from tests.helpers.fake_langsmith import FakeLangSmith

    with FakeLangSmith() as server:
        monkeypatch.setenv("LANGSMITH_API_KEY", "test-key")
        monkeypatch.setenv("LANGSMITH_ENDPOINT", server.url)
        monkeypatch.setenv("FEEDBACK_SYNC_INTERVAL_S", "1")
        session = rows(demo, "SELECT id FROM chat_sessions ORDER BY id LIMIT 1")[0][0]
        run_id = "6f1c3a52-8d5e-4e8b-9a4f-3f0a1c2b7d90"
        with demo.begin() as connection:
            connection.execute(
                text(
                    "UPDATE messages SET run_id = :r WHERE id = (SELECT max(id) FROM messages"
                    " WHERE session_id = :s AND role = 'assistant')"
                ),
                {"r": run_id, "s": session},
            )
        score_round(demo, [session], {"alice": [2]})  # pending: it has a run id
        Client(api_url=server.url, api_key="test-key").create_feedback(
            run_id,
            key="correctness",
            score=0,
            comment="from an evaluator",
            session_id=server.add_project("agent_chatbase"),
        )
        at = feedback_page()
        assert not any("LangSmith is not configured" in i.value for i in at.info)
        both = at.dataframe[-1].value
        assert sorted(both["source"]) == ["langsmith", "local"]
        theirs = both[both["source"] == "langsmith"].iloc[0]
        assert (theirs["key"], theirs["comment"]) == ("correctness", "from an evaluator")
        # The worker the page started pushes the score.
        for _ in range(50):
            if rows(demo, "SELECT sync_state FROM review_scores") == [("synced",)]:
                break
            time.sleep(0.2)
        assert rows(demo, "SELECT sync_state FROM review_scores") == [("synced",)]
        button(at, "Retry now").click()
        run(at)
        assert at.toast[0].value == "0 items will be pushed on the next sync."
        assert {m.label: m.value for m in at.metric}["Synced"] == "1"


def test_viewer_shows_where_a_conversation_was_summarized(demo: Engine) -> None:

    from data.store.recorder import record_event
    from data.store.records import EventRecord

    session = rows(demo, "SELECT id FROM chat_sessions ORDER BY id LIMIT 1")[0][0]
    user, turn = rows(
        demo,
        "SELECT user_id, max(turn) FROM messages JOIN chat_sessions s ON s.id = session_id"
        " WHERE session_id = :s GROUP BY user_id",
        s=session,
    )[0]
    summary = "The customer's parcel was damaged; a replacement was promised."
    record_event(
        engine=demo,
        event=EventRecord(
            user_id=user,
            session_id=session,
            turn=turn,
            kind="summarization",
            name="summarizer",
            latency_ms=800.0,
            tokens_before=9000,
            tokens_after=700,
            messages_folded=12,
            detail={"summary": summary},
        ),
    )
    review.enqueue(engine=demo, session_ids=[session], reviews_required=1, created_by="lead")
    at = claim(review_page("alice"))
    notices = [i.value for i in at.info]
    assert f"Before turn {turn} the older messages were summarized: {summary}" in notices
    assert any(
        "Summarized** before this answer: 12 messages folded" in m.value for m in at.markdown
    )
