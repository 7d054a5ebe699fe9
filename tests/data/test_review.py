"""The review queue on SQLite and Postgres: bad input writes nothing, N independent reviews,
blind scores, assignments, claim expiry, progress against our own tally, the candidates'
filters against pandas on the raw rows, a seeded sample that both databases agree on, and
reviewers claiming at the same moment from their own connections never sharing an item."""

from __future__ import annotations

import random
import threading
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine, insert, text, update

from data.analytics import feedback_report
from data.analytics.agreement import agreement
from data.analytics.feedback_report import (
    conversation_scores,
    local_feedback,
    score_by_context_bucket,
    score_by_summarized,
    score_distribution_by_model,
    thumbs_rate_over_time,
)
from data.analytics.filters import Filters
from data.store.db import make_engine
from data.store.feedback import MAX_COMMENT_CHARS, FeedbackInputError, set_thumbs
from data.store.orm import ChatSession, Message, ModelCall, utcnow
from data.store.orm_team import ReviewClaim
from data.workflows.review import (
    Claim,
    QueueFilters,
    ReviewInputError,
    assign,
    claim_next,
    enqueue,
    queue,
    release,
    save_score,
)
from data.workflows.review_candidates import candidates, count_candidates
from data.workflows.review_scores import item_scores, progress, scores_frame
from tests.helpers.db import truncate_all
from tests.helpers.feedback import add_conversations, answers

BASE = datetime(2026, 11, 2, tzinfo=UTC)
RANGE = QueueFilters(start=BASE, end=BASE + timedelta(days=5))
MODELS = ("gpt-4o-mini", "gpt-4.1-mini", "gpt-4o")


def history(engine: Engine, *, sessions: int = 80, seed: int = 11) -> None:
    """Conversations with model calls over four days: varied models, cost, latency and context,
    some summarized, some calls failed, and the customers' thumbs on some answers. The same
    seed gives the same rows on every database."""
    rng = random.Random(seed)
    chats, messages, calls = [], [], []
    for i in range(sessions):
        sid, user = f"h-{i:03d}", f"user-{i % 6}"
        model = MODELS[i % 3]
        start = BASE + timedelta(hours=i * 1.2, minutes=rng.randint(0, 50))
        chats.append({"id": sid, "user_id": user, "created_at": start, "updated_at": start})
        for turn in range(1, rng.randint(1, 5) + 1):
            at = start + timedelta(minutes=3 * turn)
            run_id = str(uuid.UUID(int=rng.getrandbits(128)))
            for role in ("user", "assistant"):
                messages.append(
                    {
                        "session_id": sid,
                        "turn": turn,
                        "role": role,
                        "content": role,
                        "created_at": at,
                        "run_id": run_id if role == "assistant" else None,
                    }
                )
            window = 128_000
            purposes = ["chat"] + (["summarize"] if rng.random() < 0.15 else [])
            for purpose in purposes:
                calls.append(
                    {
                        "ts": at + timedelta(seconds=len(calls) % 7),
                        "user_id": user,
                        "session_id": sid,
                        "turn": turn,
                        "purpose": purpose,
                        "provider": "openai",
                        "model": model if purpose == "chat" else "gpt-4o-mini",
                        "input_tokens": rng.randint(200, 9000),
                        "output_tokens": rng.randint(20, 400),
                        "cost_usd": round(rng.uniform(0.0005, 0.05), 6),
                        "cost_status": "priced",
                        "latency_ms": rng.uniform(150, 4000),
                        "context_tokens": rng.randint(500, 120_000),
                        "context_window": window,
                        "status": "error" if rng.random() < 0.05 else "ok",
                    }
                )
    with engine.begin() as connection:
        connection.execute(insert(ChatSession), chats)
        connection.execute(insert(Message), messages)
        connection.execute(insert(ModelCall), calls)
    owners = {c["id"]: c["user_id"] for c in chats}
    with engine.connect() as connection:
        first_answers = connection.execute(
            text(
                "SELECT session_id, min(id) FROM messages WHERE role = 'assistant' "
                "GROUP BY session_id ORDER BY session_id"
            )
        ).all()
    for index, (sid, message_id) in enumerate(first_answers):
        if index % 4 in (0, 1):
            set_thumbs(engine=engine, message_id=message_id, user_id=owners[sid], score=index % 4)


def raw_sessions(engine: Engine, filters: QueueFilters = RANGE) -> pd.DataFrame:
    """Per-conversation figures from the raw rows, read with plain SQL and computed by pandas."""
    with engine.connect() as connection:
        df = pd.read_sql_query(text("SELECT * FROM model_calls"), connection)
    df["ts"] = pd.to_datetime(df["ts"], utc=True, format="mixed")
    df = df[(df["ts"] >= filters.start) & (df["ts"] < filters.end)]
    chat_ok = df[(df["purpose"] == "chat") & (df["status"] == "ok")]
    chat_ok = chat_ok.assign(pct=100 * chat_ok["context_tokens"] / chat_ok["context_window"])
    out = df.groupby("session_id").agg(
        user_id=("user_id", "min"),
        started=("ts", "min"),
        turns=("turn", "max"),
        cost_usd=("cost_usd", "sum"),
        summarized=("purpose", lambda p: bool((p == "summarize").any())),
    )
    out["peak_context_percent"] = chat_ok.groupby("session_id")["pct"].max()
    out["latency_p95_ms"] = chat_ok.groupby("session_id")["latency_ms"].quantile(0.95)
    out["model"] = (
        df[df["purpose"] == "chat"]
        .groupby("session_id")["model"]
        .agg(lambda m: sorted(Counter(m).items(), key=lambda kv: (-kv[1], kv[0]))[0][0])
    )
    return out


def snapshot(engine: Engine) -> dict[str, list[tuple[object, ...]]]:
    with engine.connect() as connection:
        return {
            table: [tuple(r) for r in connection.execute(text(f"SELECT * FROM {table}"))]
            for table in ("review_items", "review_claims", "review_scores", "feedback_thumbs")
        }


def expire(engine: Engine, claim: Claim) -> None:
    """Make a claim's time run out (instead of sleeping through a TTL)."""
    with engine.begin() as connection:
        connection.execute(
            update(ReviewClaim)
            .where(ReviewClaim.token == claim.token)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )


def test_bad_input_gets_a_clear_message_and_writes_nothing(engine: Engine) -> None:
    sessions = add_conversations(engine, 3)
    enqueue(engine=engine, session_ids=sessions, reviews_required=2, created_by="lead")
    alice = claim_next(engine=engine, reviewer="alice")
    bob = claim_next(engine=engine, reviewer="bob")
    carol = claim_next(engine=engine, reviewer="carol")
    assert alice and bob and carol
    expire(engine, carol)
    release(engine=engine, token=bob.token)
    done = claim_next(engine=engine, reviewer="dave")
    assert done is not None
    save_score(engine=engine, token=done.token, reviewer="dave", score=4)

    cases = [
        (dict(token=alice.token, reviewer="alice", score=0), "from 1 to 5"),
        (dict(token=alice.token, reviewer="alice", score=6), "from 1 to 5"),
        (dict(token=alice.token, reviewer="alice", score=3.5), "from 1 to 5"),
        (dict(token=alice.token, reviewer="alice", score=True), "from 1 to 5"),
        (
            dict(
                token=alice.token, reviewer="alice", score=3, comment="x" * (MAX_COMMENT_CHARS + 1)
            ),
            "the limit is 2,000",
        ),
        (dict(token="no-such-claim", reviewer="alice", score=3), "unknown"),
        (dict(token=alice.token, reviewer="mallory", score=3), "claimed by alice"),
        (dict(token=carol.token, reviewer="carol", score=3), "expired"),
        (dict(token=bob.token, reviewer="bob", score=3), "released"),
        (dict(token=done.token, reviewer="dave", score=3), "already saved"),
        (dict(token=alice.token, reviewer="  ", score=3), "name"),
    ]
    before = snapshot(engine)
    for kwargs, message in cases:
        with pytest.raises(ReviewInputError, match=message):
            save_score(engine=engine, **kwargs)  # type: ignore[arg-type]
        assert snapshot(engine) == before, kwargs
    for kwargs, message in [
        (dict(session_ids=["nope"], reviews_required=2, created_by="lead"), "Unknown"),
        (dict(session_ids=sessions, reviews_required=0, created_by="lead"), "1 to 5"),
        (dict(session_ids=sessions, reviews_required=6, created_by="lead"), "1 to 5"),
        (dict(session_ids=sessions, reviews_required=2, created_by=""), "name"),
    ]:
        with pytest.raises(ReviewInputError, match=message):
            enqueue(engine=engine, **kwargs)  # type: ignore[arg-type]
        assert snapshot(engine) == before, kwargs

    (answer, owner, _), *_ = answers(engine)
    with engine.connect() as connection:
        question = connection.execute(
            text("SELECT id FROM messages WHERE role = 'user' ORDER BY id")
        ).scalar()
    for kwargs, message in [
        (dict(message_id=answer, user_id=owner, score=2), "up \\(1\\) or down \\(0\\)"),
        (dict(message_id=answer, user_id=owner, score=True), "up \\(1\\) or down \\(0\\)"),
        (
            dict(message_id=answer, user_id=owner, score=1, comment="y" * 2001),
            "the limit is 2,000",
        ),
        (dict(message_id=10**9, user_id=owner, score=1), "no longer exists"),
        (dict(message_id=question, user_id=owner, score=1), "assistant"),
        (dict(message_id=answer, user_id="someone-else", score=1), "another user"),
    ]:
        with pytest.raises(FeedbackInputError, match=message):
            set_thumbs(engine=engine, **kwargs)  # type: ignore[arg-type]
        assert snapshot(engine) == before, kwargs
    # The limit itself is accepted.
    set_thumbs(engine=engine, message_id=answer, user_id=owner, score=1, comment="y" * 2000)


def test_n_independent_reviews_with_blind_scores(engine: Engine) -> None:
    (session,) = add_conversations(engine, 1)
    assert enqueue(engine=engine, session_ids=[session], reviews_required=3, created_by="lead") == 1
    assert enqueue(engine=engine, session_ids=[session], reviews_required=3, created_by="lead") == 0

    a = claim_next(engine=engine, reviewer="alice")
    assert a is not None and a.session_id == session
    assert claim_next(engine=engine, reviewer="alice") == a  # the same claim, not a second one
    assert claim_next(engine=engine, reviewer="bob") is None  # under alice's live claim
    save_score(engine=engine, token=a.token, reviewer="alice", score=2, comment="vague")
    assert claim_next(engine=engine, reviewer="alice") is None  # alice has scored it

    b = claim_next(engine=engine, reviewer="bob")
    assert b is not None and b.item_id == a.item_id and b.token != a.token
    assert item_scores(engine=engine, item_id=a.item_id, reviewer="bob").empty  # blind
    assert item_scores(engine=engine, item_id=a.item_id, reviewer="alice").empty  # nobody else
    save_score(engine=engine, token=b.token, reviewer="bob", score=4)
    seen_by_bob = item_scores(engine=engine, item_id=a.item_id, reviewer="bob")
    assert seen_by_bob[["reviewer", "score", "comment"]].values.tolist() == [["alice", 2, "vague"]]
    seen_by_alice = item_scores(engine=engine, item_id=a.item_id, reviewer="alice")
    assert seen_by_alice[["reviewer", "score"]].values.tolist() == [["bob", 4]]
    assert item_scores(engine=engine, item_id=a.item_id, reviewer="carol").empty

    c = claim_next(engine=engine, reviewer="carol")
    assert c is not None
    save_score(engine=engine, token=c.token, reviewer="carol", score=5)
    assert claim_next(engine=engine, reviewer="dave") is None  # three reviews: done
    (row,) = queue(engine=engine).itertuples()
    assert (row.reviews_required, row.reviews_done, row.claimed_by) == (3, 3, None)


def test_assignments_reserve_items(engine: Engine) -> None:
    sessions = add_conversations(engine, 4)
    enqueue(engine=engine, session_ids=sessions[:2], reviews_required=2, created_by="lead")
    enqueue(
        engine=engine,
        session_ids=sessions[2:],
        reviews_required=2,
        created_by="lead",
        assigned_to="alice",
    )
    items = queue(engine=engine)
    reserved = items[items["assigned_to"] == "alice"]["item_id"].tolist()
    open_ = items[items["assigned_to"].isna()]["item_id"].tolist()
    # Alice gets her own items first, although older open items exist.
    first = claim_next(engine=engine, reviewer="alice")
    assert first is not None and first.item_id == reserved[0]
    # Bob never gets alice's items: only the open ones.
    bobs = []
    while (claim := claim_next(engine=engine, reviewer="bob")) is not None:
        bobs.append(claim.item_id)
        save_score(engine=engine, token=claim.token, reviewer="bob", score=3)
    assert bobs == open_
    # Once alice has scored a reserved item, it is open to the second reviewer.
    save_score(engine=engine, token=first.token, reviewer="alice", score=4)
    second = claim_next(engine=engine, reviewer="bob")
    assert second is not None and second.item_id == reserved[0]
    release(engine=engine, token=second.token)
    # The other reserved item goes to bob: carol finishes everything else but not that one.
    assert assign(engine=engine, item_ids=[reserved[1], 10**9], reviewer="bob") == 1
    carols = []
    while (claim := claim_next(engine=engine, reviewer="carol")) is not None:
        carols.append(claim.item_id)
        save_score(engine=engine, token=claim.token, reviewer="carol", score=2)
    assert carols == [*open_, reserved[0]]
    assert claim_next(engine=engine, reviewer="dave") is None
    # Opened to all again.
    assert assign(engine=engine, item_ids=[reserved[1]], reviewer=None) == 1
    dave = claim_next(engine=engine, reviewer="dave")
    assert dave is not None and dave.item_id == reserved[1]


def test_claims_expire(engine: Engine) -> None:
    sessions = add_conversations(engine, 2)
    enqueue(engine=engine, session_ids=sessions, reviews_required=1, created_by="lead")
    a = claim_next(engine=engine, reviewer="alice", ttl_s=60)
    assert a is not None
    assert a.expires_at - utcnow() == pytest.approx(timedelta(seconds=60), abs=timedelta(seconds=5))
    b = claim_next(engine=engine, reviewer="bob")
    assert b is not None and b.item_id != a.item_id
    expire(engine, a)
    c = claim_next(engine=engine, reviewer="carol")
    assert c is not None and c.item_id == a.item_id  # free again once alice's claim ran out
    with pytest.raises(ReviewInputError, match="expired"):
        save_score(engine=engine, token=a.token, reviewer="alice", score=3)
    with engine.connect() as connection:
        reasons = dict(
            connection.execute(text("SELECT token, ended_reason FROM review_claims")).all()
        )
    assert reasons == {a.token: "expired", b.token: None, c.token: None}
    assert claim_next(engine=engine, reviewer="alice") is None  # nothing else is open


def test_progress_matches_our_own_tally(engine: Engine) -> None:
    sessions = add_conversations(engine, 30)
    enqueue(engine=engine, session_ids=sessions[:24], reviews_required=2, created_by="lead")
    enqueue(
        engine=engine,
        session_ids=sessions[24:],
        reviews_required=2,
        created_by="lead",
        assigned_to="erin",
    )
    rng = random.Random(3)
    tally: Counter[str] = Counter()
    saved: list[tuple[str, int]] = []
    for _ in range(40):
        reviewer = rng.choice(["alice", "bob", "carol"])
        claim = claim_next(engine=engine, reviewer=reviewer)
        if claim is None:
            continue
        score_id = save_score(
            engine=engine, token=claim.token, reviewer=reviewer, score=rng.randint(1, 5)
        )
        tally[reviewer] += 1
        saved.append((reviewer, score_id))
    # Some of the work was done yesterday.
    yesterday = [score_id for _, score_id in saved[::3]]
    earlier = Counter(reviewer for reviewer, _ in saved[::3])
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE review_scores SET created_at = :at WHERE id = :id"),
            [{"at": utcnow() - timedelta(days=1), "id": score_id} for score_id in yesterday],
        )
    held = {r: claim_next(engine=engine, reviewer=r) for r in ("alice", "dave")}
    erin = claim_next(engine=engine, reviewer="erin")
    assert erin is not None
    save_score(engine=engine, token=erin.token, reviewer="erin", score=5)
    tally["erin"] += 1

    now = utcnow()
    # The start of "today" is a parameter: an hour ago separates the rows moved to yesterday
    # from the ones just written at any time of day (a midnight boundary could fall between).
    today = now - timedelta(hours=1)
    frame = progress(
        engine=engine, day_start=today, start=now - timedelta(days=7), end=now + timedelta(hours=1)
    ).set_index("reviewer")
    for reviewer in ("alice", "bob", "carol", "erin"):
        assert frame.loc[reviewer, "done_in_range"] == tally[reviewer]
        assert frame.loc[reviewer, "done_today"] == tally[reviewer] - earlier[reviewer]
    assert frame.loc["dave", "claimed"] == (held["dave"] is not None)
    assert frame.loc["alice", "claimed"] == (held["alice"] is not None)
    assert frame.loc["erin", "pending"] == 5  # six reserved for erin, one done
    assert frame["claimed"].sum() == sum(c is not None for c in held.values())


def test_candidates_against_the_raw_rows(engine: Engine) -> None:
    history(engine)
    raw = raw_sessions(engine)
    frame = candidates(engine=engine, filters=RANGE).set_index("session_id")
    assert sorted(frame.index) == sorted(raw.index)
    joined = frame.merge(raw, left_index=True, right_index=True, suffixes=("", "_raw"))
    for column in ("cost_usd", "latency_p95_ms", "peak_context_percent"):
        assert np.allclose(joined[column], joined[f"{column}_raw"], equal_nan=True), column
    for column in ("user_id", "model", "turns", "summarized"):
        assert (joined[column] == joined[f"{column}_raw"]).all(), column
    assert (joined["started"] == joined["started_raw"]).all()
    assert frame["summarized"].any() and not frame["summarized"].all()

    def only(**kwargs: object) -> list[str]:
        chosen = candidates(engine=engine, filters=QueueFilters(**{**vars_of(RANGE), **kwargs}))
        return sorted(chosen["session_id"])

    with engine.connect() as connection:
        down = {
            r[0]
            for r in connection.execute(
                text("SELECT session_id FROM feedback_thumbs WHERE score = 0")
            )
        }
    assert down and only(thumbs_down=True) == sorted(down)
    assert only(summarized=True) == sorted(raw.index[raw["summarized"]])
    assert only(models=("gpt-4o",)) == sorted(raw.index[raw["model"] == "gpt-4o"])
    assert only(user="user-2") == sorted(raw.index[raw["user_id"] == "user-2"])
    for pct in (50, 80, 95):
        cost_cut = raw["cost_usd"].quantile(pct / 100)
        assert only(cost_above_pct=pct) == sorted(raw.index[raw["cost_usd"] > cost_cut])
        lat_cut = raw["latency_p95_ms"].quantile(pct / 100)
        assert only(latency_above_pct=pct) == sorted(raw.index[raw["latency_p95_ms"] > lat_cut])
    # Filters combine; thresholds are taken over the range before the other filters.
    both = only(summarized=True, cost_above_pct=50)
    assert both == sorted(
        raw.index[raw["summarized"] & (raw["cost_usd"] > raw["cost_usd"].quantile(0.5))]
    )
    # Not yet scored: a queued and scored conversation drops out, a queued one does not.
    enqueue(engine=engine, session_ids=["h-000", "h-001"], reviews_required=2, created_by="lead")
    claim = claim_next(engine=engine, reviewer="alice")
    assert claim is not None and claim.session_id == "h-000"
    save_score(engine=engine, token=claim.token, reviewer="alice", score=3)
    assert "h-000" not in only(not_scored=True) and "h-001" in only(not_scored=True)
    row = candidates(engine=engine, filters=RANGE).set_index("session_id").loc["h-000"]
    assert (row["queued"], row["reviews_done"]) == (True, 1)
    # The count the page shows above the list is the number of conversations in it.
    for kwargs in (
        {},
        {"user": "user-2"},
        {"models": ("gpt-4o",)},
        {"summarized": True},
        {"thumbs_down": True},
        {"not_scored": True},
        {"cost_above_pct": 80},
        {"user": "user-2", "summarized": True},
    ):
        view = QueueFilters(**{**vars_of(RANGE), **kwargs})
        assert count_candidates(engine=engine, filters=view) == len(only(**kwargs)), kwargs
    with pytest.raises(ReviewInputError):
        candidates(engine=engine, filters=QueueFilters(**{**vars_of(RANGE), "cost_above_pct": 101}))


def test_the_first_candidates_are_the_head_of_the_whole_list(engine: Engine) -> None:
    """A limited list reads only the newest conversations off the rollup: it must be exactly
    the head of the whole list, for every filter and for limits around the list's size."""
    history(engine)
    raw = raw_sessions(engine)
    for kwargs in ({}, {"user": "user-2"}, {"models": ("gpt-4o",)}, {"summarized": True}):
        view = QueueFilters(**{**vars_of(RANGE), **kwargs})
        everything = candidates(engine=engine, filters=view)
        assert list(everything["started"]) == sorted(everything["started"], reverse=True)
        if not kwargs:
            assert len(everything) == len(raw)
        for limit in (1, 2, 5, len(everything) - 1, len(everything), len(everything) + 3):
            if limit < 1:
                continue
            head = candidates(engine=engine, filters=view, limit=limit)
            assert list(head["session_id"]) == list(everything["session_id"][:limit]), (
                kwargs,
                limit,
            )


def vars_of(filters: QueueFilters) -> dict[str, object]:
    return {name: getattr(filters, name) for name in QueueFilters.__dataclass_fields__}


@pytest.mark.postgres
def test_a_seeded_sample_is_the_same_on_both_databases(
    sqlite_server_url: str, postgres_server_url: str
) -> None:
    samples = {}
    for url in (sqlite_server_url, postgres_server_url):
        engine = make_engine(url)
        truncate_all(engine)
        history(engine)
        samples[engine.dialect.name] = {
            seed: list(
                candidates(
                    engine=engine,
                    filters=QueueFilters(start=RANGE.start, end=RANGE.end, sample=12, seed=seed),
                )["session_id"]
            )
            for seed in (0, 1, 42)
        }
        again = candidates(
            engine=engine,
            filters=QueueFilters(start=RANGE.start, end=RANGE.end, sample=12, seed=42),
        )
        assert list(again["session_id"]) == samples[engine.dialect.name][42]
        truncate_all(engine)
        engine.dispose()
    assert samples["sqlite"] == samples["postgresql"]
    assert all(len(s) == 12 for s in samples["sqlite"].values())
    assert samples["sqlite"][0] != samples["sqlite"][1]  # the seed matters
    # The sample is what random.Random(seed) draws from the sorted ids: reproducible anywhere.
    ids = sorted(f"h-{i:03d}" for i in range(80))
    assert set(samples["sqlite"][42]) == set(random.Random(42).sample(ids, 12))


@pytest.mark.parametrize("reviewers", [2, 4])
def test_reviewers_claiming_at_once_never_share_an_item(
    db_url: str, engine: Engine, reviewers: int
) -> None:
    """Each reviewer is a thread with its own engine and connection; a barrier starts their
    claims together, round after round."""
    rounds = 150 if engine.dialect.name == "postgresql" else 60
    sessions = add_conversations(engine, rounds * reviewers)
    enqueue(engine=engine, session_ids=sessions, reviews_required=1, created_by="lead")
    barrier = threading.Barrier(reviewers)
    claimed: list[list[int | None]] = [[] for _ in range(reviewers)]
    errors: list[BaseException] = []

    def reviewer(index: int) -> None:
        own = make_engine(db_url)
        name = f"r{index}"
        try:
            for _ in range(rounds):
                barrier.wait(timeout=30)
                claim = claim_next(engine=own, reviewer=name)
                claimed[index].append(None if claim is None else claim.item_id)
                barrier.wait(timeout=30)
                if claim is not None:
                    save_score(engine=own, token=claim.token, reviewer=name, score=3)
        except BaseException as error:
            errors.append(error)
            barrier.abort()
        finally:
            own.dispose()

    threads = [threading.Thread(target=reviewer, args=(i,)) for i in range(reviewers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    for round_ in range(rounds):
        got = [claimed[i][round_] for i in range(reviewers)]
        held = [item for item in got if item is not None]
        assert len(held) == len(set(held)), (round_, got)
    every = [item for per in claimed for item in per if item is not None]
    assert len(every) == len(set(every)) == rounds * reviewers  # nobody went without
    with engine.connect() as connection:
        per_item = connection.execute(
            text("SELECT item_id, count(*) FROM review_scores GROUP BY item_id HAVING count(*) > 1")
        ).all()
    assert per_item == []
    print(f"\n[{engine.dialect.name}] {reviewers} reviewers x {rounds} rounds: no item shared")


def test_analytics_against_pandas(engine: Engine) -> None:
    history(engine)
    sessions = list(candidates(engine=engine, filters=RANGE)["session_id"])
    enqueue(engine=engine, session_ids=sessions, reviews_required=2, created_by="lead")
    rng = random.Random(5)
    for _ in range(90):
        reviewer = rng.choice(["alice", "bob", "carol"])
        claim = claim_next(engine=engine, reviewer=reviewer)
        if claim is not None:
            save_score(engine=engine, token=claim.token, reviewer=reviewer, score=rng.randint(1, 5))
    filters = Filters(start=RANGE.start, end=RANGE.end)
    raw = raw_sessions(engine)
    with engine.connect() as connection:
        scores = pd.read_sql_query(text("SELECT session_id, score FROM review_scores"), connection)
        thumbs = pd.read_sql_query(
            text(
                "SELECT m.created_at, t.score FROM feedback_thumbs t "
                "JOIN messages m ON m.id = t.message_id"
            ),
            connection,
        )
    scored = scores.join(raw, on="session_id")
    assert len(
        scores_frame(engine=engine, start=RANGE.start, end=RANGE.end, by="conversation")
    ) == len(scored)

    by_model = score_distribution_by_model(engine=engine, filters=filters)
    expected = scored.groupby(["model", "score"]).size()
    assert by_model.set_index(["model", "score"])["count"].to_dict() == expected.to_dict()

    summarized = score_by_summarized(engine=engine, filters=filters).set_index("summarized")
    for flag, group in scored.groupby("summarized"):
        assert summarized.loc[flag, "scores"] == len(group)
        assert summarized.loc[flag, "mean_score"] == pytest.approx(group["score"].mean())

    context = score_by_context_bucket(engine=engine, filters=filters).set_index("bucket")
    edges = [0, 25, 50, 75, 90, float("inf")]
    for low, high, label in zip(edges, edges[1:], context.index, strict=False):
        inside = scored[
            (scored["peak_context_percent"] >= low) & (scored["peak_context_percent"] < high)
        ]
        assert context.loc[label, "scores"] == len(inside), label
        if len(inside):
            assert context.loc[label, "mean_score"] == pytest.approx(inside["score"].mean())

    rate = thumbs_rate_over_time(engine=engine, filters=filters)
    thumbs["day"] = pd.to_datetime(thumbs["created_at"], utc=True, format="mixed").dt.floor("D")
    daily = thumbs.groupby("day")["score"].agg(["sum", "size"])
    assert rate.set_index("bucket")["up"].to_dict() == daily["sum"].to_dict()
    assert (rate.set_index("bucket")["down"] == daily["size"] - daily["sum"]).all()

    # Thumbs by model: the model of the turn's last successful chat call (a turn whose chat
    # call failed has none), counted by hand from the raw rows.
    with engine.connect() as connection:
        given = pd.read_sql_query(
            text(
                "SELECT t.session_id, t.turn, t.score FROM feedback_thumbs t "
                "JOIN messages m ON m.id = t.message_id"
            ),
            connection,
        )
        ok_calls = pd.read_sql_query(
            text(
                "SELECT session_id, turn, model, ts, id FROM model_calls "
                "WHERE purpose = 'chat' AND status = 'ok'"
            ),
            connection,
        )
    last = ok_calls.sort_values(["ts", "id"]).groupby(["session_id", "turn"])["model"].last()
    given["model"] = [
        last.get((s, t)) for s, t in zip(given["session_id"], given["turn"], strict=True)
    ]
    for name in MODELS:
        by_model = thumbs_rate_over_time(
            engine=engine, filters=Filters(start=RANGE.start, end=RANGE.end, models=(name,))
        )
        mine = given[given["model"] == name]
        assert int(by_model["up"].sum()) == int(mine["score"].sum()), name
        assert int((by_model["up"] + by_model["down"]).sum()) == len(mine), name
    assert len(given[given["model"].isna()]) < len(given)

    # The model and user filters, chosen in the database, against the same filters by hand.
    model, user = scored["model"].mode()[0], scored["user_id"].mode()[0]
    for view, expected in (
        (Filters(start=RANGE.start, end=RANGE.end, models=(model,)), scored["model"] == model),
        (Filters(start=RANGE.start, end=RANGE.end, user=user), scored["user_id"] == user),
    ):
        chosen = conversation_scores(engine=engine, filters=view)
        assert sorted(chosen["score"]) == sorted(scored[expected]["score"])
        assert 0 < len(chosen) < len(scored)

    # The local feedback list: every thumbs and score, or the newest `limit` of them.
    everything = local_feedback(engine=engine, filters=filters)
    assert len(everything) == len(thumbs) + len(scored)
    newest = local_feedback(engine=engine, filters=filters, limit=7)
    assert newest["created_at"].tolist() == (
        everything["created_at"].sort_values(ascending=False).head(7).tolist()
    )

    # The page's one read of all of it (its reads run at once) gives the same figures.
    view = feedback_report.page_data(engine=engine, filters=filters, local_limit=7)
    figures = {"engine": engine, "filters": filters}
    pd.testing.assert_frame_equal(view.by_model, score_distribution_by_model(**figures))
    pd.testing.assert_frame_equal(view.summarized, score_by_summarized(**figures))
    pd.testing.assert_frame_equal(view.context, score_by_context_bucket(**figures))
    pd.testing.assert_frame_equal(view.thumbs, rate)
    pd.testing.assert_frame_equal(view.local, newest)
    assert len(view.scores) == len(scored)
    # The scores given in the range, and the reviewers' agreement over them: given just now.
    today = Filters(start=utcnow() - timedelta(days=1), end=utcnow() + timedelta(hours=1))
    view = feedback_report.page_data(engine=engine, filters=today, local_limit=7)
    given_today = scores_frame(engine=engine, start=today.start, end=today.end)
    pd.testing.assert_frame_equal(view.given, given_today)
    # Each score given carries its conversation's facts, as the raw rows give them.
    facts = given_today.join(raw, on="session_id", suffixes=("", "_raw"))
    assert len(facts) == len(given_today) > 0
    for name in ("user_id", "model", "summarized"):
        assert facts[name].tolist() == facts[f"{name}_raw"].tolist(), name
    for name in ("cost_usd", "peak_context_percent"):
        assert facts[name].to_numpy() == pytest.approx(facts[f"{name}_raw"].to_numpy()), name
    assert (facts["started"] == facts["started_raw"]).all()
    # A score whose conversation has no calls (they were deleted) keeps its row, without facts.
    lone = given_today["session_id"].iloc[0]
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM model_calls WHERE session_id = :s"), {"s": lone})
    after = scores_frame(engine=engine, start=today.start, end=today.end)
    assert len(after) == len(given_today)
    gone = after[after["session_id"] == lone]
    assert gone["user_id"].isna().all() and gone["summarized"].isna().all()
    assert gone["cost_usd"].isna().all() and gone["started"].isna().all()
    kept = after[after["session_id"] != lone]
    assert kept["summarized"].tolist() == facts[facts["session_id"] != lone]["summarized"].tolist()
    report = agreement(given_today)
    assert view.agreement.items == report.items > 0
    assert view.agreement.alpha == report.alpha
    pd.testing.assert_frame_equal(view.agreement.pairs, report.pairs)
