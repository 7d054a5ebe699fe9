"""The feedback outbox against the real `langsmith` client and a local server that speaks
LangSmith's feedback endpoints: nothing is lost while LangSmith is down, nothing arrives twice,
rejected items fail with their reason and are not retried, a changed thumb updates the same
LangSmith feedback, and with no LangSmith configured nothing leaves the database."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine, select, update

from data.config.settings import load_settings
from data.store.feedback import set_thumbs, thumbs_for_session
from data.store.orm import utcnow
from data.store.orm_team import FeedbackThumbs, ReviewScore
from data.workers.langsmith_sync import (
    QUALITY_KEY,
    THUMBS_KEY,
    SyncWorker,
    client_from_settings,
    pull_feedback,
    retry_now,
    sync_problems,
    sync_status,
)
from data.workflows.review import claim_next, enqueue, save_score
from tests.helpers.fake_langsmith import FakeLangSmith
from tests.helpers.feedback import add_conversations, answers

PROJECT = "support-prod"


def score_everything(engine: Engine, sessions: list[str], *, sync_enabled: bool = True) -> None:
    """Queue the conversations for one review each and score them all through the reviewer's
    own path: claim the next item, save the score."""
    enqueue(engine=engine, session_ids=sessions, reviews_required=1, created_by="lead")
    for n in range(len(sessions)):
        claim = claim_next(engine=engine, reviewer="rita")
        assert claim is not None
        save_score(
            engine=engine,
            token=claim.token,
            reviewer="rita",
            score=1 + n % 5,
            comment=f"note {n}",
            sync_enabled=sync_enabled,
        )
    assert claim_next(engine=engine, reviewer="rita") is None


@pytest.fixture
def server() -> Iterator[FakeLangSmith]:
    with FakeLangSmith() as fake:
        fake.add_project(PROJECT)
        yield fake


def worker(engine: Engine, fake: FakeLangSmith, **kwargs: object) -> SyncWorker:
    """The worker as the app builds it: the shipped client configuration, from settings."""
    settings = load_settings(langsmith_api_key="ls-test-key", langsmith_endpoint=fake.url)
    client = client_from_settings(settings)
    assert client is not None
    return SyncWorker(engine, client, project_name=PROJECT, **kwargs)  # type: ignore[arg-type]


def outbox_rows(engine: Engine, table: type[FeedbackThumbs] | type[ReviewScore]) -> list:  # type: ignore[type-arg]
    with engine.connect() as connection:
        return list(connection.execute(select(table.__table__).order_by(table.id)))


def test_scores_saved_during_an_outage_arrive_exactly_once(engine: Engine) -> None:
    fake = FakeLangSmith()  # not listening yet
    project = fake.add_project(PROJECT)
    sessions = add_conversations(engine, 1000)
    score_everything(engine, sessions)
    assert sync_status(engine=engine)["pending"] == 1000

    sync = worker(engine, fake, batch=200, interval_s=0.2)
    # Down: connection refused. The pushes in flight fail and wait out their backoff, the pass
    # stops, and nothing is lost.
    outcome = sync.run_once()
    assert outcome["synced"] == outcome["failed"] == 0
    assert 1 <= outcome["retrying"] <= sync.concurrency
    rows = outbox_rows(engine, ReviewScore)
    tried = [r for r in rows if r.attempts]
    assert len(tried) == outcome["retrying"]
    assert all("Connection" in (r.last_error or "") for r in tried)
    assert all(r.next_attempt_at > utcnow() + timedelta(seconds=1) for r in tried)
    assert {r.sync_state for r in rows} == {"pending"}

    with fake:
        began = time.monotonic()
        sync.start()
        deadline = began + 60
        while sync_status(engine=engine)["synced"] < 1000 and time.monotonic() < deadline:
            time.sleep(0.02)
        elapsed = time.monotonic() - began
        sync.stop()
    print(
        f"\n[{engine.dialect.name}] 1,000 scores synced {elapsed:.2f} s after LangSmith came up "
        f"({len(tried)} of them waited out a 2 s backoff)"
    )

    status = sync_status(engine=engine)
    assert status["synced"] == 1000 and status["pending"] == 0 and status["failed"] == 0
    rows = outbox_rows(engine, ReviewScore)
    received = fake.received
    # Exactly once: each of our feedback ids was created once, one feedback per run and key.
    assert set(received.feedback) == {r.feedback_uuid for r in rows}
    assert set(received.feedback_creates.values()) == {1}
    assert received.feedback_updates == Counter()
    per_run_key = Counter((f["run_id"], f["key"]) for f in received.feedback.values())
    assert len(per_run_key) == 1000 and set(per_run_key.values()) == {1}
    for row in rows:
        sent = received.feedback[row.feedback_uuid]
        assert (sent["run_id"], sent["key"], sent["score"], sent["comment"]) == (
            row.run_id,
            QUALITY_KEY,
            row.score,
            row.comment,
        )
        assert sent["session_id"] == project
    # The backed-off items arrived too, within their backoff plus a pass.
    assert elapsed < 20


def test_a_lost_acknowledgement_does_not_duplicate(engine: Engine, server: FakeLangSmith) -> None:
    """LangSmith stored a create but its answer was lost: the retry is the same feedback id,
    which LangSmith answers with 409, and the worker turns it into an update."""
    score_everything(engine, add_conversations(engine, 3))
    sync = worker(engine, server)
    assert sync.run_once()["synced"] == 3
    with engine.begin() as connection:
        connection.execute(
            update(ReviewScore).values(
                sync_state="pending", next_attempt_at=utcnow(), synced_at=None
            )
        )
    assert sync.run_once()["synced"] == 3
    assert len(server.received.feedback) == 3
    assert set(server.received.feedback_creates.values()) == {1}
    assert set(server.received.feedback_updates.values()) == {1}


@pytest.mark.parametrize("status", [503, 429, 500])
def test_transient_answers_back_off_and_keep_the_error(
    engine: Engine, server: FakeLangSmith, status: int
) -> None:
    score_everything(engine, add_conversations(engine, 2))
    server.fail_next = [status]
    sync = worker(engine, server, concurrency=1)  # one at a time: which item fails is known
    assert sync.run_once() == {"synced": 0, "retrying": 1, "failed": 0}
    first = outbox_rows(engine, ReviewScore)
    tried = [r for r in first if r.attempts == 1]
    assert len(tried) == 1 and str(status) in tried[0].last_error
    waiting_until = tried[0].next_attempt_at
    # The untried item was handed back at once; the failed one waits out its backoff (2 s).
    assert sync.run_once() == {"synced": 1, "retrying": 0, "failed": 0}
    assert sync.run_once() == {"synced": 0, "retrying": 0, "failed": 0}
    assert waiting_until - utcnow() > timedelta(seconds=1)
    assert sync_status(engine=engine)["retrying"] == 1
    # A second failure doubles the wait.
    assert retry_now(engine=engine) == 1
    server.fail_next = [status]
    assert sync.run_once()["retrying"] == 1
    row = next(r for r in outbox_rows(engine, ReviewScore) if r.sync_state == "pending")
    assert row.attempts == 1  # retry_now started a fresh round
    assert retry_now(engine=engine) == 1
    assert sync.run_once()["synced"] == 1
    assert len(server.received.feedback) == 2
    assert set(server.received.feedback_creates.values()) == {1}


def test_a_rejected_run_id_fails_with_its_reason_and_is_not_retried(
    engine: Engine, server: FakeLangSmith
) -> None:
    sessions = add_conversations(engine, 3)
    score_everything(engine, sessions)
    rows = outbox_rows(engine, ReviewScore)
    server.reject_unknown_runs = True
    server.known_runs = {rows[0].run_id, rows[2].run_id}
    sync = worker(engine, server)
    assert sync.run_once() == {"synced": 2, "retrying": 0, "failed": 1}
    failed = [r for r in outbox_rows(engine, ReviewScore) if r.sync_state == "failed"]
    assert [r.run_id for r in failed] == [rows[1].run_id]
    assert (
        "404" in failed[0].last_error and f"Run {rows[1].run_id} not found" in failed[0].last_error
    )
    assert failed[0].next_attempt_at is None
    # The page lists it with its reason.
    problems = sync_problems(engine=engine)
    assert list(problems["run_id"]) == [rows[1].run_id]
    assert problems.iloc[0]["sync_state"] == "failed" and "404" in problems.iloc[0]["last_error"]

    requests_before = len(server.received.feedback_requests())
    for _ in range(3):
        assert sync.run_once() == {"synced": 0, "retrying": 0, "failed": 0}
    assert len(server.received.feedback_requests()) == requests_before
    assert sync_status(engine=engine)["failed"] == 1
    # "Retry now" tries it again, once.
    assert retry_now(engine=engine) == 1
    assert sync.run_once() == {"synced": 0, "retrying": 0, "failed": 1}
    assert len(server.received.feedback_requests()) == requests_before + 1


def test_a_changed_thumb_updates_the_same_feedback(engine: Engine, server: FakeLangSmith) -> None:
    add_conversations(engine, 1, turns=2)
    (message, user, run_id), _ = answers(engine)
    sync = worker(engine, server)
    set_thumbs(engine=engine, message_id=message, user_id=user, score=1, comment="fast")
    assert sync.run_once()["synced"] == 1
    (feedback_id,) = server.received.feedback
    assert server.received.feedback[feedback_id]["key"] == THUMBS_KEY
    assert server.received.feedback[feedback_id]["run_id"] == run_id

    thumbs = set_thumbs(engine=engine, message_id=message, user_id=user, score=0, comment="wrong")
    assert thumbs.sync_state == "pending"
    assert sync.run_once()["synced"] == 1
    set_thumbs(engine=engine, message_id=message, user_id=user, score=1)
    assert sync.run_once()["synced"] == 1

    assert list(server.received.feedback) == [feedback_id]
    sent = server.received.feedback[feedback_id]
    assert (sent["score"], sent["comment"]) == (1, "")  # the comment was removed
    assert server.received.feedback_creates[feedback_id] == 1
    assert server.received.feedback_updates[feedback_id] == 2
    (row,) = outbox_rows(engine, FeedbackThumbs)
    assert (row.feedback_uuid, row.sync_state, row.version) == (feedback_id, "synced", 3)


def test_a_thumb_changed_while_it_is_pushed_is_pushed_again(
    engine: Engine, server: FakeLangSmith
) -> None:
    add_conversations(engine, 1)
    ((message, user, _),) = answers(engine)
    sync = worker(engine, server)
    set_thumbs(engine=engine, message_id=message, user_id=user, score=1)
    items = sync._lease()
    set_thumbs(engine=engine, message_id=message, user_id=user, score=0)  # during the push
    sync._record(sync._push(items))
    (row,) = outbox_rows(engine, FeedbackThumbs)
    assert row.sync_state == "pending" and row.synced_at is not None
    assert sync.run_once()["synced"] == 1
    (sent,) = server.received.feedback.values()
    assert sent["score"] == 0
    assert thumbs_for_session(engine=engine, session_id="c-00000")[message].sync_state == "synced"


def test_without_langsmith_everything_stays_local(engine: Engine, server: FakeLangSmith) -> None:
    settings = load_settings()
    assert client_from_settings(settings) is None
    sessions = add_conversations(engine, 2)
    score_everything(engine, sessions, sync_enabled=settings.langsmith_feedback_enabled)
    message, user, _ = answers(engine)[0]
    thumbs = set_thumbs(
        engine=engine,
        message_id=message,
        user_id=user,
        score=0,
        sync_enabled=settings.langsmith_feedback_enabled,
    )
    assert thumbs.sync_state == "local"
    assert sync_status(engine=engine) == {
        "pending": 0,
        "synced": 0,
        "failed": 0,
        "local": 3,
        "retrying": 0,
    }
    # Answers that were never traced have no run to attach to: local even with LangSmith on.
    untraced = add_conversations(engine, 1, prefix="u", traced=False)
    score_everything(engine, untraced)
    assert sync_status(engine=engine)["local"] == 4
    assert worker(engine, server).run_once() == {"synced": 0, "retrying": 0, "failed": 0}
    assert server.received.requests == []


def test_pull_feedback_lists_what_others_wrote(engine: Engine, server: FakeLangSmith) -> None:
    score_everything(engine, add_conversations(engine, 2))
    sync = worker(engine, server)
    sync.run_once()
    ours = outbox_rows(engine, ReviewScore)
    run_ids = [r.run_id for r in ours]
    other = sync.client.create_feedback(
        run_ids[0],
        key="correctness",
        score=0.5,
        comment="judge",
        session_id=server.projects[PROJECT],
        stop_after_attempt=1,
    )
    pulled = pull_feedback(client=sync.client, run_ids=run_ids, engine=engine)
    assert list(pulled["feedback_id"]) == [str(other.id)]
    assert pulled.iloc[0][["run_id", "key", "score", "comment", "source"]].tolist() == [
        run_ids[0],
        "correctness",
        0.5,
        "judge",
        "langsmith",
    ]
    assert len(pull_feedback(client=sync.client, run_ids=run_ids)) == 3
