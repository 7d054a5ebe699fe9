"""Demo outcomes: one current verdict per ended demo conversation, at the promised rates, with
the conversation's own figures (checked against plain SQL on its calls), reviewer labels that
mostly agree, and `--remove` takes them all away."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from sqlalchemy import Engine, delete, insert, text

from data.config.topics import topic_names
from data.store import demo, demo_outcomes
from data.store.orm import ChatSession
from data.store.orm_outcomes import OUTCOMES, VERDICTS, ConversationOutcome, OutcomeJob
from data.store.orm_support import Order
from data.store.orm_team import ReviewItem, ReviewScore

END = datetime(2026, 11, 20, tzinfo=UTC)
MEDIUM = dict(days=20, users=80, sessions=800, calls=12_000, seed=7, end=END)
SMALL = dict(days=10, users=20, sessions=100, calls=1_500, seed=5, end=END)


@pytest.fixture
def empty(engine: Engine) -> Iterator[Engine]:
    """The shared fixtures empty the call, session, review and outcome tables; orders are left
    to the tests that write them. The demo rows go afterwards too."""
    with engine.begin() as connection:
        connection.execute(delete(Order))
    yield engine
    demo.remove(engine=engine)


def _rows(engine: Engine, query: str, **params: object) -> pd.DataFrame:
    with engine.connect() as connection:
        return pd.read_sql_query(text(query), connection, params=params)


def _times(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    for column in columns:
        frame[column] = pd.to_datetime(frame[column], utc=True, format="mixed")
    return frame


def test_demo_questions_have_topics_of_the_taxonomy() -> None:
    names = set(topic_names())
    for ask, _tools in demo.ASKS:
        assert any(ask.startswith(start) for start, _ in demo_outcomes.SUBJECTS), ask
    assert {topic for _, topic in demo_outcomes.SUBJECTS} <= names
    assert set(demo_outcomes.TOPIC_ODDS) == names


def test_every_ended_demo_conversation_has_one_current_verdict(empty: Engine) -> None:
    written = demo.generate(engine=empty, outcomes=True, **MEDIUM)  # type: ignore[arg-type]
    verdicts = _times(_rows(empty, "SELECT * FROM conversation_outcomes"), "ended_at", "judged_at")
    sessions = _times(
        _rows(empty, "SELECT id, user_id, updated_at, closed_at FROM chat_sessions"),
        "updated_at",
        "closed_at",
    )
    # Ended as the end detector decides: silent for the idle time at the demo's end.
    ended = sessions[sessions["updated_at"] <= END - demo_outcomes.IDLE]
    assert len(ended) > 0.95 * len(sessions)
    current = verdicts[verdicts["current"].astype(bool)]
    assert written["outcomes"] == len(current)
    assert current["session_id"].is_unique
    assert set(current["session_id"]) == set(ended["id"])
    assert verdicts["demo"].astype(bool).all() and set(verdicts["outcome"]) == set(VERDICTS)

    # The promised rates, and what moves them.
    rates = current["outcome"].value_counts(normalize=True)
    assert 0.52 <= rates["resolved"] <= 0.68
    assert 0.13 <= rates["escalated"] <= 0.27
    assert 0.05 <= rates["abandoned"] <= 0.16
    assert 0.04 <= rates["unresolved"] <= 0.13
    assert 0.005 <= rates["unjudged"] <= 0.05
    judged = current[current["outcome"] != "unjudged"]
    resolved = judged["outcome"].eq("resolved")
    by_topic = resolved.groupby(judged["topic"]).mean()
    assert by_topic["order status"] > by_topic["payment"] + 0.1
    assert by_topic.max() - by_topic.min() > 0.1
    by_model = resolved.groupby(judged["chat_model"]).mean()
    assert by_model["gpt-4o-mini"] < by_model["gpt-4o"]
    folded = judged["summarizations"] > 0
    assert resolved[folded].mean() < resolved[~folded].mean() - 0.1
    crowded = judged["peak_context_percent"] >= 75
    assert resolved[crowded].mean() < resolved[judged["peak_context_percent"] < 25].mean() - 0.1

    # Who decided, and how a verdict of each kind looks.
    unjudged = current[current["outcome"] == "unjudged"]
    assert (unjudged["decided_by"] == "none").all() and unjudged["topic"].isna().all()
    assert unjudged["error"].str.len().gt(0).all() and unjudged["confidence"].isna().all()
    by_rules = judged[judged["decided_by"] == "rules"]
    assert set(by_rules["outcome"]) == {"escalated"}
    assert 0.3 <= len(by_rules) / (judged["outcome"] == "escalated").sum() <= 0.7
    by_judge = verdicts[verdicts["decided_by"] == "judge"]
    assert set(by_judge["rubric_version"]) == {"outcome-v0", "outcome-v1"}
    assert 0.1 <= (by_judge["rubric_version"] == "outcome-v0").mean() <= 0.45
    assert by_judge["confidence"].between(0.5, 0.99).all()
    assert set(by_judge["judge_model"]) == {demo.SUMMARY_MODEL.name}
    assert by_judge["quote_found"].astype(bool).all() and by_judge["reason"].str.len().gt(10).all()
    assert set(judged["topic"]) <= set(topic_names())
    assert set(current["end_reason"]) == {"idle", "closed"}
    assert 0.6 <= (current["end_reason"] == "idle").mean() <= 0.95

    # Every quote is copied from the conversation's own messages.
    messages = _times(
        _rows(empty, "SELECT session_id, turn, content, created_at FROM messages"), "created_at"
    )
    texts = messages.groupby("session_id")["content"].apply(list)
    quoted = verdicts[verdicts["quote"].notna()]
    assert len(quoted) > 0.8 * len(verdicts)
    for session_id, quote in zip(quoted["session_id"], quoted["quote"], strict=True):
        assert any(quote in content for content in texts[session_id]), (session_id, quote)

    # Times: a verdict ends at the conversation's last message and is judged after it.
    last = messages.groupby("session_id")["created_at"].max()
    assert (current["ended_at"].to_numpy() == last[current["session_id"]].to_numpy()).all()
    assert (current["judged_at"] > current["ended_at"]).all()
    assert (current["judged_at"] <= END).all()
    closed = current[current["end_reason"] == "closed"].merge(
        sessions, left_on="session_id", right_on="id"
    )
    assert (closed["closed_at"] >= closed["updated_at"]).all()

    # A few conversations keep an earlier verdict, on an earlier end; resolved ones reopened.
    earlier = verdicts[~verdicts["current"].astype(bool)]
    assert 3 <= earlier["session_id"].nunique() == len(earlier)
    later = current.set_index("session_id").loc[earlier["session_id"]]
    assert (earlier["ended_at"].to_numpy() < later["ended_at"].to_numpy()).all()
    assert (earlier["id"].to_numpy() < later["id"].to_numpy()).all()
    assert (earlier["reopened"].astype(bool) == (earlier["outcome"] == "resolved")).all()
    assert not current["reopened"].astype(bool).any()
    all_resolved = verdicts[verdicts["outcome"] == "resolved"]
    assert 0.02 <= all_resolved["reopened"].astype(bool).mean() <= 0.1


# The figures of each conversation, from its calls, in plain SQL: judge calls left out.
FIGURES = """
SELECT session_id,
       SUM(cost_usd) AS cost_usd,
       MAX(CASE WHEN purpose = 'chat' AND status = 'ok'
                THEN 100.0 * context_tokens / context_window END) AS peak_context_percent,
       SUM(CASE WHEN purpose = 'summarize' THEN 1 ELSE 0 END) AS summarizations,
       MAX(turn) AS turns
FROM model_calls
WHERE purpose <> 'judge'
GROUP BY session_id
"""
CHAT_MODELS = """
SELECT session_id, model, COUNT(*) AS calls
FROM model_calls
WHERE purpose = 'chat'
GROUP BY session_id, model
"""


def test_verdict_figures_are_the_conversations_own(empty: Engine) -> None:
    demo.generate(engine=empty, outcomes=True, **SMALL)  # type: ignore[arg-type]
    current = _rows(empty, "SELECT * FROM conversation_outcomes WHERE current = :yes", yes=True)
    assert len(current) > 90
    expected = _rows(empty, FIGURES).set_index("session_id").loc[current["session_id"]]
    models = _rows(empty, CHAT_MODELS).sort_values(
        ["session_id", "calls", "model"], ascending=[True, False, True]
    )
    top = models.drop_duplicates("session_id").set_index("session_id")["model"]
    assert current["chat_model"].tolist() == top[current["session_id"]].tolist()
    for column in ("cost_usd", "peak_context_percent"):
        assert current[column].to_numpy() == pytest.approx(
            expected[column].astype(float).to_numpy(), rel=1e-9
        )
    for column in ("summarizations", "turns"):
        assert current[column].tolist() == expected[column].astype(int).tolist()
    assert current["summarizations"].gt(0).any()


def test_reviewer_labels_mostly_agree_with_the_verdicts(empty: Engine) -> None:
    written = demo.generate(engine=empty, outcomes=True, **MEDIUM)  # type: ignore[arg-type]
    scores = _rows(
        empty,
        "SELECT s.*, o.outcome AS verdict, o.topic AS verdict_topic, o.decided_by,"
        " i.reviews_required,"
        " i.session_id AS item_session FROM review_scores s"
        " JOIN review_items i ON i.id = s.item_id"
        " JOIN conversation_outcomes o ON o.session_id = s.session_id AND o.current = :yes",
        yes=True,
    )
    assert written["review labels"] == len(scores)
    assert scores["session_id"].nunique() >= 70  # a tenth of the ended conversations
    assert (scores["session_id"] == scores["item_session"]).all()
    assert set(scores["reviewer"]) == set(demo_outcomes.REVIEWERS)
    assert scores["score"].between(1, 5).all() and scores["score"].nunique() == 5
    assert set(scores["outcome"]) <= set(OUTCOMES) and set(scores["topic"]) <= set(topic_names())
    assert (scores["decided_by"] == "judge").all()  # what the calibration compares
    per_item = scores.groupby("item_id").size()
    assert set(per_item) == {1, 2}
    assert (per_item <= scores.groupby("item_id")["reviews_required"].first()).all()
    assert scores["feedback_uuid"].is_unique
    assert (scores["sync_state"] == "local").all() and (scores["attempts"] == 0).all()
    assert scores["run_id"].isna().all()
    agree = scores["outcome"] == scores["verdict"]
    assert 0.6 <= agree.mean() <= 0.9 and (~agree).sum() >= 3
    same_topic = scores["topic"] == scores["verdict_topic"]
    assert 0.6 <= same_topic.mean() <= 0.95 and (~same_topic).sum() >= 3
    # Reviewers who saw a good end score higher.
    mean = scores.groupby("outcome")["score"].mean()
    assert mean["resolved"] > mean.drop("resolved").max()


def test_outcomes_are_deterministic_and_leave_the_calls_alone(empty: Engine) -> None:
    calls = "SELECT session_id, turn, purpose, model, cost_usd, ts FROM model_calls ORDER BY id"
    verdicts = "SELECT * FROM conversation_outcomes ORDER BY id"
    scores = "SELECT * FROM review_scores ORDER BY id"
    demo.generate(engine=empty, **SMALL)  # type: ignore[arg-type]
    plain = _rows(empty, calls)
    assert _rows(empty, "SELECT count(*) AS n FROM conversation_outcomes")["n"][0] == 0
    assert _rows(empty, "SELECT count(*) AS n FROM review_items")["n"][0] == 0
    demo.remove(engine=empty)
    demo.generate(engine=empty, outcomes=True, **SMALL)  # type: ignore[arg-type]
    pd.testing.assert_frame_equal(_rows(empty, calls), plain)
    first = (_rows(empty, verdicts), _rows(empty, scores))
    demo.remove(engine=empty)
    demo.generate(engine=empty, outcomes=True, **SMALL)  # type: ignore[arg-type]
    for before, after in zip(first, (_rows(empty, verdicts), _rows(empty, scores)), strict=True):
        pd.testing.assert_frame_equal(
            after.drop(columns=["id", "item_id"], errors="ignore"),
            before.drop(columns=["id", "item_id"], errors="ignore"),
        )
    with pytest.raises(ValueError, match="messages"):
        demo.generate(engine=empty, outcomes=True, messages=False, **SMALL)  # type: ignore[arg-type]


def test_loader_plants_outcomes_and_remove_takes_only_them(
    empty: Engine, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--db", db_url, "--calls", "1500", "--sessions", "100", "--users", "20"]
    assert demo.main([*args, "--days", "10", "--seed", "5"]) == 0
    out = capsys.readouterr().out
    assert " outcomes, " in out and " review labels" in out
    planted = _counts(empty)
    assert planted["outcomes"] >= 90 and planted["reviewed"] >= 30 and planted["scores"] >= 30
    # A live conversation with a verdict and a review, and an outcome job of a demo one.
    now = datetime.now(UTC)
    with empty.begin() as connection:
        connection.execute(
            insert(ChatSession), [dict(id="live-1", user_id="alice", title="", demo=False)]
        )
        connection.execute(insert(ConversationOutcome), [_live_verdict(now)])
        item = connection.execute(
            insert(ReviewItem)
            .values(session_id="live-1", reviews_required=1, created_by="lead")
            .returning(ReviewItem.id)
        ).scalar_one()
        connection.execute(
            insert(ReviewScore),
            [
                dict(
                    item_id=item,
                    session_id="live-1",
                    reviewer="ana",
                    score=4,
                    outcome="resolved",
                    topic="payment",
                    feedback_uuid="00000000-0000-4000-8000-000000000001",
                    sync_state="local",
                )
            ],
        )
        demo_session = connection.execute(
            text("SELECT id, user_id FROM chat_sessions WHERE demo = :yes LIMIT 1"), {"yes": True}
        ).one()
        connection.execute(
            insert(OutcomeJob),
            [
                dict(
                    session_id=demo_session.id,
                    user_id=demo_session.user_id,
                    last_message_at=now - timedelta(days=1),
                    end_reason="idle",
                )
            ],
        )
    assert demo.main(["--db", db_url, "--remove"]) == 0
    assert _counts(empty) == {"outcomes": 1, "reviewed": 1, "scores": 1, "jobs": 0}
    assert _rows(empty, "SELECT session_id FROM conversation_outcomes")["session_id"][0] == (
        "live-1"
    )


def _counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        one = lambda query: int(connection.execute(text(query)).scalar_one())  # noqa: E731
        return {
            "outcomes": one("SELECT count(*) FROM conversation_outcomes"),
            "reviewed": one("SELECT count(*) FROM review_items"),
            "scores": one("SELECT count(*) FROM review_scores"),
            "jobs": one("SELECT count(*) FROM outcome_jobs"),
        }


def _live_verdict(now: datetime) -> dict[str, object]:
    return dict(
        session_id="live-1",
        user_id="alice",
        ended_at=now - timedelta(hours=1),
        end_reason="idle",
        judged_at=now,
        outcome="resolved",
        topic="payment",
        confidence=0.9,
        reason="Answered.",
        decided_by="judge",
        judge_model="gpt-4o-mini",
        rubric_version="outcome-v1",
        demo=False,
    )
