"""Conversation outcomes without a model: when a conversation ends (idle with a controlled
clock, or closed), the rules, sampling, unjudged verdicts, resuming and reopening, leases (two
workers, and two processes on one Postgres), the κ, and the page figures against SQL of their
own on both databases."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from dataclasses import replace
from datetime import timedelta
from typing import cast

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine, func, insert, select, text

from data.analytics import outcome_agreement, outcomes
from data.analytics.filters import Filters
from data.config.settings import load_settings
from data.config.topics import TopicsError, guess_topic, load_topics, parse_topics
from data.integrations.tickets import create_ticket
from data.store.orm import utcnow
from data.store.orm_outcomes import OUTCOMES, ConversationOutcome, OutcomeJob
from data.store.retention import apply_retention
from data.workers.outcome_judge import OutcomeWorker
from data.workflows import outcomes as flow
from tests.helpers.db import fresh_postgres
from tests.helpers.outcomes import (
    ScriptedJudge,
    cohen_kappa,
    converse,
    label_table,
    later,
    nominal_alpha,
    verdict,
)
from tests.helpers.servers import ROOT

ORDER_TALK = [("Where is my order A-1?", "It shipped yesterday."), ("Thanks!", "Glad to help.")]


def worker(engine: Engine, judge: object, minutes: float = 31, **options: object) -> OutcomeWorker:
    """A worker whose clock is `minutes` ahead: conversations are that long silent."""
    return OutcomeWorker(engine, judge, clock=lambda: later(minutes), **options)  # type: ignore[arg-type]


def current(engine: Engine, session_id: str) -> list[ConversationOutcome]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(ConversationOutcome)
                .where(ConversationOutcome.session_id == session_id)
                .order_by(ConversationOutcome.id)
            ).all()
        )


def test_a_conversation_ends_after_the_idle_time_and_is_judged_once(engine: Engine) -> None:
    converse(engine, "s-idle", ORDER_TALK)
    judge = ScriptedJudge("resolved")
    assert worker(engine, judge, minutes=29).run_once().enqueued == 0  # not silent long enough
    report = worker(engine, judge, minutes=31).run_once()
    assert (report.enqueued, report.judged) == (1, 1)
    assert [t.messages for t in judge.seen] == [
        (
            ("user", "Where is my order A-1?"),
            ("assistant", "It shipped yesterday."),
            ("user", "Thanks!"),
            ("assistant", "Glad to help."),
        )
    ]
    again = worker(engine, judge, minutes=60).run_once()
    assert (again.enqueued, again.judged, len(judge.seen)) == (0, 0, 1)
    (row,) = current(engine, "s-idle")
    assert (row.outcome, row.topic, row.decided_by, row.end_reason, row.current) == (
        "resolved",
        "order status",
        "judge",
        "idle",
        True,
    )


def test_closing_ends_a_conversation_at_once_and_only_for_its_owner(engine: Engine) -> None:
    converse(engine, "s-close", ORDER_TALK)
    assert flow.close_session(engine=engine, session_id="s-close", user_id="mallory") is None
    assert flow.close_session(engine=engine, session_id="nope", user_id="alice") is None
    judge = ScriptedJudge()
    assert worker(engine, judge, minutes=0).run_once().enqueued == 0
    assert flow.close_session(engine=engine, session_id="s-close", user_id="alice") is not None
    report = worker(engine, judge, minutes=0).run_once()
    assert report.judged == 1
    assert current(engine, "s-close")[0].end_reason == "closed"


def test_rules_decide_a_ticket_and_a_request_for_a_person(engine: Engine) -> None:
    converse(engine, "s-ticket", [("My parcel arrived broken, damaged box", "I opened a ticket.")])
    create_ticket(
        engine=engine,
        user_id="alice",
        session_id="s-ticket",
        turn=1,
        kind="ticket",
        subject="Damaged item on order A-1",
        body="The customer's parcel arrived broken.",
        levels=load_settings().service_levels(),
        notify=False,
    )
    converse(engine, "s-person", [("I want to speak to a human agent about my refund", "Sure.")])
    judge = ScriptedJudge("resolved")
    report = worker(engine, judge).run_once()
    assert (report.judged, report.by_rules, judge.seen) == (2, 2, [])
    ticket, person = current(engine, "s-ticket")[0], current(engine, "s-person")[0]
    assert (ticket.outcome, ticket.decided_by) == ("escalated", "rules")
    assert ticket.topic == "damaged item"
    assert ticket.reason.startswith("The agent opened ticket #")
    assert (person.outcome, person.decided_by, person.topic) == (
        "escalated",
        "rules",
        "returns and refunds",
    )
    assert person.quote == "I want to speak to a human agent about my refund"


def test_sampling_is_by_session_id_and_skips_the_rest(engine: Engine) -> None:
    ids = [f"s-{i}" for i in range(40)]
    picked = [s for s in ids if flow.sampled(s, 0.5)]
    assert picked == [s for s in ids if flow.sampled(s, 0.5)]  # the same on every call
    assert 8 < len(picked) < 32
    assert all(flow.sampled(s, 1.0) for s in ids) and not any(flow.sampled(s, 0) for s in ids)
    for session_id in ids[:10]:
        converse(engine, session_id, ORDER_TALK[:1])
    judge = ScriptedJudge()
    report = worker(engine, judge, sample_rate=0.5).run_once()
    assert sorted(t.session_id for t in judge.seen) == sorted(set(picked) & set(ids[:10]))
    assert report.skipped == 10 - len(judge.seen)
    with engine.connect() as connection:
        states = dict(
            connection.execute(
                select(OutcomeJob.state, func.count()).group_by(OutcomeJob.state)
            ).all()
        )
    assert states == {"done": len(judge.seen), "skipped": report.skipped}


def test_an_unjudged_verdict_keeps_its_reason(engine: Engine) -> None:
    converse(engine, "s-fail", ORDER_TALK)

    def failing(talk: flow.Conversation) -> flow.Verdict:
        return verdict("unjudged", None, decided_by="none", error="unusable answer: no JSON")

    assert worker(engine, failing).run_once().unjudged == 1
    converse(engine, "s-wait", ORDER_TALK)
    assert worker(engine, failing).run_once(limit=0).enqueued == 1  # found, not judged yet
    (row,) = current(engine, "s-fail")
    assert (row.outcome, row.topic, row.error) == ("unjudged", None, "unusable answer: no JSON")
    status = flow.judge_status(engine=engine)
    assert (status.pending, status.day_verdicts, status.day_unjudged) == (1, 1, 1)
    assert status.last_error == "unusable answer: no JSON" and status.oldest_pending is not None


def test_a_resumed_conversation_is_judged_again_and_a_quick_return_reopens(
    engine: Engine,
) -> None:
    converse(engine, "s-back", ORDER_TALK, at=utcnow() - timedelta(hours=5))
    judge = ScriptedJudge("resolved")
    assert worker(engine, judge, minutes=0).run_once().judged == 1
    # The customer comes back two hours later (within REOPEN_WINDOW_HOURS of the verdict).
    converse(engine, "s-back", [("It never came.", "Sorry, I will check.")], at=utcnow())
    report = worker(engine, judge, minutes=0).run_once()
    assert (report.reopened, report.judged) == (1, 0)  # not ended again yet
    judge.outcome = "unresolved"
    assert worker(engine, judge, minutes=31).run_once().judged == 1
    first, second = current(engine, "s-back")
    assert (first.outcome, first.reopened, first.current) == ("resolved", True, False)
    assert (second.outcome, second.reopened, second.current) == ("unresolved", False, True)
    history = flow.verdict_history(engine=engine, session_id="s-back")
    assert [h["outcome"] for h in history] == ["unresolved", "resolved"]


def test_a_return_after_the_window_does_not_reopen(engine: Engine) -> None:
    converse(engine, "s-late", ORDER_TALK, at=utcnow() - timedelta(hours=80))
    judge = ScriptedJudge("resolved")
    assert worker(engine, judge, minutes=0, backfill_days=30).run_once().judged == 1
    converse(engine, "s-late", [("Hello again", "Hi!")])
    assert worker(engine, judge, minutes=0).run_once().reopened == 0


def test_ends_older_than_the_backfill_are_left_alone(engine: Engine) -> None:
    converse(engine, "s-old", ORDER_TALK, at=utcnow() - timedelta(days=9))
    assert worker(engine, ScriptedJudge(), backfill_days=7).run_once().enqueued == 0
    assert worker(engine, ScriptedJudge(), backfill_days=0).run_once().judged == 1


def test_two_workers_never_lease_the_same_end(engine: Engine) -> None:
    for i in range(6):
        converse(engine, f"s-l{i}", ORDER_TALK[:1])
    with engine.begin() as connection:
        assert flow.detect_ends(connection, now=later(31), idle_minutes=30, backfill_days=7) == 6
    now = later(31)
    first = flow.lease(engine, now=now, limit=4)
    second = flow.lease(engine, now=now, limit=4)
    assert len(first) == 4 and len(second) == 2
    assert not {j.id for j in first} & {j.id for j in second}
    # A worker that outlived its lease loses the end to the one that took it over.
    stolen = flow.lease(engine, now=now + timedelta(seconds=flow.LEASE_S + 1), limit=1)
    assert stolen[0].id == first[0].id
    assert not flow.save_verdict(engine, first[0], verdict(), now=now)
    assert flow.save_verdict(engine, stolen[0], verdict(), now=now)


@pytest.mark.postgres
def test_two_processes_on_one_postgres_judge_every_end_once() -> None:
    sessions = 120
    with fresh_postgres("outcome_drill") as url:
        from data.store.db import make_engine

        engine = make_engine(url)
        try:
            for i in range(sessions):
                converse(engine, f"d-{i:03d}", ORDER_TALK[:1], at=utcnow() - timedelta(minutes=5))
            command = [sys.executable, "-m", "tests.helpers.outcomes", url, "60"]
            runs = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE) for _ in range(2)]
            judged = [json.loads(r.communicate(timeout=120)[0])["judged"] for r in runs]
            assert all(r.returncode == 0 for r in runs)
            assert all(judged), f"one process judged nothing: {[len(j) for j in judged]}"
            assert not set(judged[0]) & set(judged[1])
            assert len(judged[0]) + len(judged[1]) == sessions
            with engine.connect() as connection:
                per_session = connection.execute(
                    text("SELECT count(*), count(DISTINCT session_id) FROM conversation_outcomes")
                ).one()
            assert tuple(per_session) == (sessions, sessions)
        finally:
            engine.dispose()


def test_cohens_kappa_matches_a_hand_computed_example() -> None:
    # 50 items: both "yes" 20, A yes/B no 5, A no/B yes 10, both "no" 15.
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    # p_o = 35/50 = 0.7; p_e = 0.5*0.6 + 0.5*0.4 = 0.5; κ = (0.7 - 0.5) / 0.5 = 0.4
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(a, a) == pytest.approx(1.0)
    assert cohen_kappa(["x"] * 4, ["x"] * 4) is None
    assert nominal_alpha(a, a) == pytest.approx(1.0)


def test_alpha_from_the_counts_equals_the_krippendorff_package() -> None:
    rng = np.random.default_rng(7)
    labels = ["resolved", "escalated", "abandoned", "unresolved"]
    for size in (2, 5, 40, 400):
        a = [str(x) for x in rng.choice(labels, size)]
        # A second rater who agrees about two times in three.
        b = [x if rng.random() < 0.66 else str(rng.choice(labels)) for x in a]
        table = label_table(a, b)
        expected = nominal_alpha(a, b)
        assert outcome_agreement.alpha_of_table(table) == pytest.approx(expected)
    assert outcome_agreement.alpha_of_table(label_table(["x"] * 3, ["x"] * 3)) is None


def test_the_topic_file_is_checked_line_by_line(tmp_path: object) -> None:
    names = [t.name for t in load_topics()]
    assert names == [
        "order status",
        "returns and refunds",
        "damaged item",
        "payment",
        "account",
        "shipping address",
        "other",
    ]
    assert [t.name for t in parse_topics("billing: invoice\n")] == ["billing", "other"]
    with pytest.raises(TopicsError, match="line 2: 'billing' is listed twice"):
        parse_topics("billing\nbilling\n")
    with pytest.raises(TopicsError, match="line 1"):
        parse_topics("<script>: x\n")
    assert guess_topic("I want a refund, please refund me", load_topics()) == "returns and refunds"
    assert guess_topic("hello", load_topics()) == "other"


def test_page_figures_agree_with_sql_of_their_own(engine: Engine) -> None:
    plan = {"r1": "resolved", "r2": "resolved", "r3": "resolved", "e1": "escalated"}
    plan |= {"a1": "abandoned", "u1": "unresolved", "u2": "unresolved"}
    for session_id in plan:
        converse(engine, session_id, ORDER_TALK, user_id="bob" if session_id < "m" else "alice")
    worker(engine, ScriptedJudge(by_session=plan)).run_once()
    filters = Filters(start=utcnow() - timedelta(days=1), end=utcnow() + timedelta(days=1))
    s = outcomes.summary(engine=engine, filters=filters)
    with engine.connect() as connection:
        counts = dict(
            connection.execute(
                text(
                    "SELECT outcome, count(*) FROM conversation_outcomes WHERE current "
                    "GROUP BY outcome"
                )
            ).all()
        )
    assert s.ended == sum(counts.values()) == 7
    assert {o: s.counts[o] for o in counts} == counts
    assert s.rate("resolved") == pytest.approx(100 * 3 / 7)
    by_user = outcomes.summary(engine=engine, filters=replace(filters, user="bob"))
    assert by_user.ended == sum(1 for s_id in plan if s_id < "m")
    frame, total = outcomes.ended_conversations(engine=engine, filters=filters, limit=3)
    assert (len(frame), total) == (3, 7)
    only, total = outcomes.ended_conversations(engine=engine, filters=filters, outcome="unresolved")
    assert set(only["session_id"]) == {"u1", "u2"} and total == 2
    topics = outcomes.by(engine=engine, filters=filters, dimension="topic")
    assert topics["ended"].tolist() == [7]


def test_retention_keeps_verdicts_but_not_their_quotes_of_deleted_messages(
    engine: Engine,
) -> None:
    converse(engine, "s-ancient", ORDER_TALK, at=utcnow() - timedelta(days=10))
    converse(engine, "s-recent", ORDER_TALK, at=utcnow() - timedelta(hours=2))

    def quoting(talk: flow.Conversation) -> flow.Verdict:
        return verdict(quote="Thanks!", quote_found=True)

    assert worker(engine, quoting, backfill_days=0).run_once().judged == 2
    apply_retention(engine=engine, days=7)
    (old,), (new,) = current(engine, "s-ancient"), current(engine, "s-recent")
    assert (old.outcome, old.quote) == ("resolved", None)
    assert (new.outcome, new.quote) == ("resolved", "Thanks!")


def _independent(engine: Engine, filters: Filters) -> dict[str, object]:
    """The page's figures straight from conversation_outcomes, in pandas (no rollup)."""
    with engine.connect() as connection:
        rows = pd.DataFrame(
            connection.execute(
                select(ConversationOutcome.__table__)  # type: ignore[arg-type]
            )
            .mappings()
            .all()
        )
    rows["ended_at"] = pd.to_datetime(rows["ended_at"], utc=True)
    keep = (rows["ended_at"] >= filters.start) & (rows["ended_at"] < filters.end)
    if filters.models:
        keep &= rows["chat_model"].isin(filters.models)
    if filters.user:
        keep &= rows["user_id"] == filters.user
    every = rows[keep]
    now = every[every["current"].astype(bool)]
    judged = now[now["outcome"] != "unjudged"]
    resolved = every[every["outcome"] == "resolved"]
    cut = pd.cut(judged["peak_context_percent"], [0, 25, 50, 75, float("inf")], right=False)
    bands = cut.astype(object).where(cut.notna(), "nan").astype(str)  # no chat call
    return {
        "counts": now["outcome"].value_counts().to_dict(),
        "involved": int(judged["chat_model"].notna().sum()),
        "cost": float(judged["cost_usd"].sum()),
        "reopen": (len(resolved), int(resolved["reopened"].astype(bool).sum())),
        "by_day": judged.groupby(judged["ended_at"].dt.strftime("%Y-%m-%d")).size().to_dict(),
        "by_topic": judged.groupby(judged["topic"].fillna("(none)")).size().to_dict(),
        "by_band": bands.value_counts().to_dict(),
        "by_folds": judged["summarizations"].clip(upper=2).value_counts().to_dict(),
    }


def _from_page(engine: Engine, filters: Filters) -> dict[str, object]:
    s = outcomes.summary(engine=engine, filters=filters)
    day = outcomes.by(engine=engine, filters=filters, dimension="day")
    topic = outcomes.by(engine=engine, filters=filters, dimension="topic")
    context = outcomes.by_context(engine=engine, filters=filters)
    band = context[(context["by"] == "peak context") & (context["ended"] > 0)]
    folds = context[(context["by"] == "summarizations") & (context["ended"] > 0)]
    names = {"not summarized": 0, "summarized once": 1, "summarized 2+ times": 2}
    intervals = {"0–25 %": "[0.0, 25.0)", "25–50 %": "[25.0, 50.0)"}
    intervals |= {"50–75 %": "[50.0, 75.0)", "75 % +": "[75.0, inf)", "no chat call": "nan"}
    return {
        "counts": {o: n for o, n in s.counts.items() if n},
        "involved": s.involved,
        "cost": s.cost_usd,
        "reopen": (s.resolved_verdicts, s.reopened),
        "by_day": {
            d.strftime("%Y-%m-%d"): int(n)
            for d, n in zip(day["day"], day["ended"], strict=True)
            if n
        },
        "by_topic": {t: int(n) for t, n in zip(topic["topic"], topic["ended"], strict=True) if n},
        "by_band": {
            intervals[g]: int(n) for g, n in zip(band["group"], band["ended"], strict=True)
        },
        "by_folds": {names[g]: int(n) for g, n in zip(folds["group"], folds["ended"], strict=True)},
    }


def test_the_rollup_agrees_with_the_verdicts_through_every_change(engine: Engine) -> None:
    """Whole days come from rollup_outcomes, partial ones from the verdicts: after verdicts are
    written, superseded, reopened and deleted (each queues its day through the triggers), every
    figure equals a pandas computation over conversation_outcomes, for ranges that start and
    end mid-day, with a model and a user filter."""
    rng = random.Random(29)
    now = utcnow().replace(microsecond=0)
    rows = []
    for i in range(400):
        outcome = rng.choice((*OUTCOMES, "unjudged"))
        rows.append(
            dict(
                session_id=f"s-{i}",
                user_id=rng.choice(("ann", "bob", "cy")),
                ended_at=now - timedelta(minutes=rng.randint(0, 12 * 24 * 60)),
                end_reason="idle",
                outcome=outcome,
                topic=None if outcome == "unjudged" else rng.choice(("payment", "account")),
                decided_by="none" if outcome == "unjudged" else "judge",
                rubric_version="outcome-v1",
                judge_model="j",
                reopened=outcome == "resolved" and rng.random() < 0.2,
                chat_model=rng.choice(("m-a", "m-b", None)),
                cost_usd=round(rng.uniform(0, 0.01), 6),
                peak_context_percent=None if rng.random() < 0.1 else rng.uniform(0, 99),
                summarizations=rng.choice((0, 0, 1, 2, 3)),
            )
        )
    with engine.begin() as connection:
        connection.execute(insert(ConversationOutcome), rows)
    ranges = [
        Filters(start=now - timedelta(days=7, hours=5), end=now - timedelta(hours=3)),
        Filters(start=now - timedelta(days=30), end=now + timedelta(days=1)),
        Filters(start=now - timedelta(days=9, minutes=7), end=now, models=["m-a"]),
        Filters(start=now - timedelta(days=9), end=now, user="bob"),
        Filters(start=now - timedelta(hours=20), end=now),
    ]

    def check() -> None:
        for filters in ranges:
            page, expected = _from_page(engine, filters), _independent(engine, filters)
            _, total = outcomes.ended_conversations(engine=engine, filters=filters, limit=0)
            assert total == sum(cast(dict[str, int], expected["counts"]).values())
            assert page.pop("cost") == pytest.approx(expected.pop("cost"))
            assert page == expected, filters

    check()
    table = ConversationOutcome.__table__
    with engine.begin() as connection:
        # A conversation judged again (its old verdict no longer current), a resolved one
        # reopened, a verdict deleted, one moved to another day.
        connection.execute(table.update().where(table.c.session_id == "s-1").values(current=False))
        connection.execute(
            insert(ConversationOutcome),
            [{**rows[1], "outcome": "escalated", "ended_at": now - timedelta(hours=1)}],
        )
        connection.execute(
            table.update()
            .where(table.c.outcome == "resolved", ~table.c.reopened)
            .values(reopened=True)
            .execution_options(synchronize_session=False)
        )
        connection.execute(table.delete().where(table.c.session_id.in_(["s-2", "s-3"])))
        connection.execute(
            table.update()
            .where(table.c.session_id == "s-4")
            .values(ended_at=now - timedelta(days=5, hours=2))
        )
    check()
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM rollup_outcome_dirty")).scalar() == 0
        assert connection.execute(text("SELECT count(*) FROM rollup_outcomes")).scalar()
