"""Budgets: management and history, exact spend from rollups and raw rows, the agent refusing a
scripted user at the limit, reservations under concurrency, the webhook and the metrics."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine, delete, func, insert, select, text

from agent.budget import BudgetExceeded
from agent.embedders import LocalEmbedder
from agent.embedding_base import Embedder
from agent.embeddings import CachedEmbedder, LRUVectorCache
from agent.knowledge import KnowledgeBase
from agent.ledger import TurnLedger
from data.analytics.rollups import refresh
from data.store.db import make_engine
from data.store.orm import AgentEvent, ModelCall
from data.store.orm_team import BudgetAlert, BudgetReservation
from data.store.recorder import EventRecorder, Recorder, TurnRecorder
from data.store.records import CallRecord
from data.workflows import budget_report, budget_rules, budget_spend, budgets
from data.workflows.budget_guard import Guard
from data.workflows.budget_rules import BudgetInputError
from tests.helpers.budgets import build_service, call_row


def _clear(engine: Engine) -> None:
    with engine.begin() as connection:
        for table in ("budget_alerts", "budget_reservations", "budget_changes", "budgets"):
            connection.execute(text(f"DELETE FROM {table}"))
    refresh(engine)
    budget_spend._invalidate()


@pytest.fixture
def db(engine: Engine) -> Iterator[Engine]:
    _clear(engine)
    yield engine
    _clear(engine)


def add_calls(engine: Engine, rows: list[dict[str, Any]]) -> None:
    with engine.begin() as connection:
        connection.execute(insert(ModelCall), rows)


def raw_spend(engine: Engine, where: Any, start: datetime) -> float:
    with engine.connect() as connection:
        return float(
            connection.execute(
                select(func.coalesce(func.sum(ModelCall.cost_usd), 0.0)).where(
                    where, ModelCall.ts >= start
                )
            ).scalar_one()
        )


def test_budgets_are_validated_and_every_change_is_recorded(db: Engine) -> None:
    with pytest.raises(BudgetInputError, match="user id"):
        budgets.create_budget(
            engine=db, scope_kind="user", scope_value=" ", period="day", limit_usd=1, actor="ann"
        )
    with pytest.raises(BudgetInputError, match="amount"):
        budgets.create_budget(
            engine=db, scope_kind="all", period="month", limit_usd=-3, actor="ann"
        )
    with pytest.raises(BudgetInputError, match="warning"):
        budgets.create_budget(
            engine=db, scope_kind="all", period="month", limit_usd=3, warn_fraction=1.5, actor="a"
        )
    with pytest.raises(BudgetInputError, match="Period"):
        budgets.create_budget(engine=db, scope_kind="all", period="week", limit_usd=3, actor="a")
    assert budgets.list_budgets(engine=db) == []  # nothing half-written

    team = budgets.create_budget(
        engine=db,
        scope_kind="prefix",
        scope_value="team-a-",
        period="month",
        limit_usd=50,
        actor="ann",
    )
    assert team.warn_fraction == budget_rules.DEFAULT_WARN_FRACTION
    assert team.scope == "prefix:team-a-"
    with pytest.raises(BudgetInputError, match="already"):
        budgets.create_budget(
            engine=db,
            scope_kind="prefix",
            scope_value="team-a-",
            period="month",
            limit_usd=9,
            actor="bob",
        )
    changed = budgets.update_budget(
        engine=db, budget_id=team.id, actor="bob", limit_usd=80, warn_fraction=0.9
    )
    assert (changed.limit_usd, changed.warn_fraction) == (80, 0.9)
    budgets.delete_budget(engine=db, budget_id=team.id, actor="cy")
    assert budgets.list_budgets(engine=db) == []
    with pytest.raises(BudgetInputError, match="does not exist"):
        budgets.update_budget(engine=db, budget_id=team.id, actor="cy", limit_usd=5)

    log = budgets.history(engine=db)
    assert list(log["action"]) == ["delete", "update", "create"]
    assert list(log["actor"]) == ["cy", "bob", "ann"]
    assert set(log["scope"]) == {"prefix:team-a-"}
    assert "limit_usd 50.0 → 80.0" in log["change"].iloc[1]


def test_spend_is_exact_across_rollups_dirty_hours_and_the_current_hour(db: Engine) -> None:
    now = datetime.now(UTC)
    hour = now.replace(minute=0, second=0, microsecond=0)
    day_start, _ = budget_rules.period_bounds("day", now)
    month_start, _ = budget_rules.period_bounds("month", now)
    rows = []
    # Calls this month: closed hours (rolled up), the current hour (raw), and users whose ids
    # hold LIKE wildcards, which a prefix must match literally.
    for i, age in enumerate((timedelta(days=40), timedelta(hours=30), timedelta(hours=5))):
        for user, cost in (("team_a-1", 0.25), ("team%b", 0.5), ("teamXa-2", 1.0)):
            rows.append(call_row(user, now - age, cost * (i + 1)))
    rows.append(call_row("team_a-1", hour + timedelta(seconds=1), 0.125, purpose="embedding"))
    rows.append(call_row("team_a-1", hour + timedelta(seconds=2), None))  # unpriced counts 0
    add_calls(db, rows)
    refresh(db)
    # A late row into a rolled-up hour marks it dirty again: still counted exactly.
    add_calls(db, [call_row("team_a-1", now - timedelta(hours=5), 2.0, purpose="summarize")])

    cases = [
        (
            budget_rules.BudgetRow(1, "prefix", "team_a", "month", 100, 0.8),
            ModelCall.user_id.like("team\\_a%", escape="\\"),
        ),
        (
            budget_rules.BudgetRow(2, "user", "team%b", "day", 100, 0.8),
            ModelCall.user_id == "team%b",
        ),
        (budget_rules.BudgetRow(3, "all", "", "month", 100, 0.8), ModelCall.id.is_not(None)),
    ]
    for budget, where in cases:
        start = day_start if budget.period == "day" else month_start
        with db.connect() as connection:
            for _ in range(2):  # the second read comes from the cache of closed hours
                got = budget_spend.recorded_spend(connection, budget, now)
                assert got == pytest.approx(raw_spend(db, where, start)), budget
    # After a refresh there is nothing dirty and the answer is the same.
    refresh(db)
    with db.connect() as connection:
        budget, where = cases[0]
        assert budget_spend.recorded_spend(connection, budget, now) == pytest.approx(
            raw_spend(db, where, month_start)
        )


def test_a_budget_stops_a_scripted_user_at_its_limit(
    db: Engine, tmp_path: Path, shared_embedder: Embedder, shared_knowledge: KnowledgeBase
) -> None:
    service, model = build_service(db, tmp_path, shared_embedder, shared_knowledge)
    limit = 0.0012
    budget = budgets.create_budget(
        engine=db,
        scope_kind="user",
        scope_value="scripted-1",
        period="day",
        limit_usd=limit,
        actor="admin",
    )
    refusals = (
        REGISTRY.get_sample_value("budget_refusals_total", {"period": "day", "scope_kind": "user"})
        or 0.0
    )
    # Another user is not covered by this budget.
    assert service.run_turn(user_id="other", session_id="o-1", message="Hi").text
    outcomes, refused = [], None
    for turn in range(1, 40):
        try:
            outcomes.append(
                service.run_turn(
                    user_id="scripted-1", session_id="b-1", message=f"Question number {turn}?"
                )
            )
        except BudgetExceeded as error:
            refused = error
            break
    assert refused is not None, "the budget never stopped the user"
    spent = raw_spend(db, ModelCall.user_id == "scripted-1", datetime.now(UTC) - timedelta(days=1))
    assert 0 < spent <= limit  # estimates cover the actual calls: no overshoot at all
    assert refused.body() == {
        "error": "budget_exceeded",
        "message": refused.message,
        "scope": "user:scripted-1",
        "period": "day",
        "spent_usd": refused.spent_usd,
        "limit_usd": limit,
    }
    assert refused.spent_usd > limit and "budget" in refused.message
    # Refused before any model call: no new prompt, no new row, and the refusal is an event.
    prompts, rows = len(model.prompts), _count(db, ModelCall)
    with pytest.raises(BudgetExceeded):
        service.run_turn(user_id="scripted-1", session_id="b-1", message="And now?")
    assert (len(model.prompts), _count(db, ModelCall)) == (prompts, rows)
    with db.connect() as connection:
        events = connection.execute(
            select(AgentEvent.status, AgentEvent.detail).where(
                AgentEvent.kind == "budget_refusal", AgentEvent.user_id == "scripted-1"
            )
        ).all()
    assert len(events) == 2 and all(status == "refused" for status, _ in events)
    assert json.loads(events[0][1])["scope"] == "user:scripted-1"
    # The turns past 80 % of the limit carried a warning; the first ones did not.
    assert not outcomes[0].warnings
    assert any("Budget warning: user:scripted-1" in w for o in outcomes for w in o.warnings)
    assert _count(db, BudgetReservation) == 0  # every reservation released
    after = REGISTRY.get_sample_value(
        "budget_refusals_total", {"period": "day", "scope_kind": "user"}
    )
    assert after == refusals + 2
    assert budget_report.scopes_past_warning(engine=db) == 1
    assert REGISTRY.get_sample_value("budget_scopes_past_warning") == 1
    # Raising the limit lets the user go on.
    budgets.update_budget(engine=db, budget_id=budget.id, actor="admin", limit_usd=1.0)
    assert service.run_turn(user_id="scripted-1", session_id="b-1", message="Thanks!").text


def test_a_turns_rows_are_written_together_before_its_reservation_is_released(
    db: Engine, tmp_path: Path, shared_embedder: Embedder, shared_knowledge: KnowledgeBase
) -> None:
    """The app's ledger holds a turn's calls and events and writes them in one transaction at
    the turn's end. Until then the call's spend is in no row, so its budget reservation must
    still count: it is released only after the write."""
    seen: list[tuple[int, int, int]] = []
    write = TurnRecorder(db)

    def watched(calls: Any, events: Any) -> None:
        # At the write: the turn's reservation is alive and none of its rows are written yet.
        seen.append(
            (
                _count(db, BudgetReservation),
                len(calls),
                _count_where(db, ModelCall, ModelCall.session_id == "held-1"),
            )
        )
        write(calls, events)

    ledger = TurnLedger(calls=Recorder(db), events=EventRecorder(db), write_turn=watched)
    service, _ = build_service(db, tmp_path, shared_embedder, shared_knowledge, ledger=ledger)
    budgets.create_budget(
        engine=db, scope_kind="user", scope_value="held", period="day", limit_usd=5.0, actor="a"
    )
    outcome = service.run_turn(user_id="held", session_id="held-1", message="Where is 4471?")
    assert seen == [(1, len(outcome.calls), 0)] and outcome.calls
    assert _count(db, BudgetReservation) == 0
    assert _count_where(db, ModelCall, ModelCall.session_id == "held-1") == len(outcome.calls)
    with db.connect() as connection:
        kinds = connection.execute(
            select(AgentEvent.kind).where(AgentEvent.session_id == "held-1")
        ).scalars()
        assert sorted(kinds) == sorted(e.kind for e in outcome.events)
    # A write that fails is logged, the turn's answer stands, and the reservation still goes.
    broken = TurnLedger(
        calls=Recorder(db),
        events=EventRecorder(db),
        write_turn=lambda calls, events: (_ for _ in ()).throw(RuntimeError("disk full")),
    )
    service, _ = build_service(db, tmp_path, shared_embedder, shared_knowledge, ledger=broken)
    outcome = service.run_turn(user_id="held", session_id="held-2", message="Thanks")
    assert outcome.text and outcome.calls
    assert _count(db, BudgetReservation) == 0
    assert _count_where(db, ModelCall, ModelCall.session_id == "held-2") == 0


def test_a_message_embedded_before_the_budget_check_is_recorded_only_if_the_turn_runs(
    db: Engine, tmp_path: Path
) -> None:
    """The chat service embeds the message while the agent sets up and checks the budget
    (MemoryMiddleware.warm). The call is recorded once, under its turn, when the turn goes
    ahead; a turn the budget refuses leaves no call, though its message was embedded."""
    embedder = CachedEmbedder(LocalEmbedder(sink=Recorder(db)), LRUVectorCache())
    knowledge = KnowledgeBase(embedder=embedder)
    knowledge.matrix()
    service, _ = build_service(db, tmp_path, embedder, knowledge, warm=True)

    def embedding_turns() -> list[int]:
        with db.connect() as connection:
            return list(
                connection.execute(
                    select(ModelCall.turn)
                    .where(ModelCall.session_id == "early-1", ModelCall.purpose == "embedding")
                    .order_by(ModelCall.turn)
                ).scalars()
            )

    first = service.run_turn(user_id="early", session_id="early-1", message="Where is 4471?")
    assert embedding_turns() == [first.turn]
    budgets.create_budget(
        engine=db,
        scope_kind="user",
        scope_value="early",
        period="day",
        limit_usd=0.000001,
        actor="admin",
    )
    text = "A question nobody asked before, about parcel 9912"
    with pytest.raises(BudgetExceeded):
        service.run_turn(user_id="early", session_id="early-1", message=text)
    key = embedder._key(text)
    deadline = time.monotonic() + 10
    while embedder.cache.get_many([key]) == [None] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert embedder.cache.get_many([key]) != [None], "the refused turn's message was embedded"
    assert embedding_turns() == [first.turn], "and its call was not recorded"


def _count(engine: Engine, table: Any) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


def _count_where(engine: Engine, table: Any, where: Any) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(select(func.count()).select_from(table).where(where)).scalar_one()
        )


def test_concurrent_turns_on_two_replicas_stay_within_the_limit(db: Engine, db_url: str) -> None:
    """Eight threads on two engines (two replicas) admit, 'call' and record as fast as they
    can: the recorded spend never passes the limit, and calls were refused."""
    second = make_engine(db_url)
    guards = [Guard(db), Guard(second)]
    estimate, limit = 0.01, 0.205
    budgets.create_budget(
        engine=db,
        scope_kind="prefix",
        scope_value="load-",
        period="day",
        limit_usd=limit,
        actor="admin",
    )
    admitted, refused = [], []
    lock = threading.Lock()

    def worker(index: int) -> None:
        guard, user = guards[index % 2], f"load-{index % 3}"
        recorder = Recorder(db if index % 2 == 0 else second)
        for _ in range(8):
            admission = guard.admit(user_id=user, estimate_usd=estimate)
            if admission.refused is not None:
                with lock:
                    refused.append(index)
                continue
            time.sleep(0.005)  # the model call in flight
            row = call_row(user, datetime.now(UTC), estimate)
            recorder(CallRecord(**row))
            guard.release(admission.reservation_id)
            with lock:
                admitted.append(index)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    second.dispose()
    spent = raw_spend(db, ModelCall.user_id.like("load-%"), datetime.now(UTC) - timedelta(days=1))
    assert spent <= limit + 1e-9
    assert refused and len(admitted) >= 1
    assert len(admitted) * estimate == pytest.approx(spent)
    assert _count(db, BudgetReservation) == 0


class Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_each_threshold_crossing_reaches_the_webhook_once(db: Engine) -> None:
    Hook.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        budget = budgets.create_budget(
            engine=db, scope_kind="all", period="month", limit_usd=1.0, actor="admin"
        )
        guards = [Guard(db, webhook_url=url), Guard(db, webhook_url=url)]
        now = datetime.now(UTC)
        add_calls(db, [call_row("u1", now, 0.5)])
        for guard in guards:  # 50 % + a small estimate: fine, nothing sent
            assert guard.admit(user_id="u1", estimate_usd=0.01).warnings == []
        add_calls(db, [call_row("u2", now, 0.35)])
        for guard in guards * 3:  # past 80 % on both replicas, several times
            admission = guard.admit(user_id="u2", estimate_usd=0.01)
            assert admission.refused is None and admission.warnings
            guard.release(admission.reservation_id)
        for guard in guards * 2:  # over the limit: refused, alerted once
            assert guard.admit(user_id="u3", estimate_usd=0.5).refused is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(Hook.received) < 2:
            time.sleep(0.05)
        time.sleep(0.3)  # anything sent twice would have arrived by now
        # Each alert is posted from a thread of its own: they may arrive in either order.
        assert sorted(m["level"] for m in Hook.received) == ["exceeded", "warning"]
        first = next(m for m in Hook.received if m["level"] == "warning")
        assert first["scope"] == "all" and first["budget_id"] == budget.id
        assert first["limit_usd"] == 1.0 and first["threshold_usd"] == pytest.approx(0.8)
        with db.connect() as connection:
            delivered = connection.execute(
                select(BudgetAlert.level, BudgetAlert.delivered_at, BudgetAlert.delivery_error)
            ).all()
        assert sorted(level for level, _, _ in delivered) == ["exceeded", "warning"]
        assert all(at is not None and err is None for _, at, err in delivered)
    finally:
        server.shutdown()
        server.server_close()
        with db.begin() as connection:
            connection.execute(delete(ModelCall))


def test_the_budget_report_forecasts_and_lists_users_near_or_over(db: Engine) -> None:
    now = datetime.now(UTC)
    start, end = budget_rules.period_bounds("month", now)
    add_calls(
        db,
        [
            call_row("acme-1", start + timedelta(minutes=1), 3.3),
            call_row("acme-2", start + timedelta(minutes=2), 0.5),
            call_row("solo", now - timedelta(seconds=5), 0.9),
        ],
    )
    budgets.create_budget(
        engine=db,
        scope_kind="prefix",
        scope_value="acme-",
        period="month",
        limit_usd=4.0,
        actor="admin",
    )
    budgets.create_budget(
        engine=db,
        scope_kind="user",
        scope_value="solo",
        period="month",
        limit_usd=1.0,
        actor="admin",
    )
    report = budget_report.budget_report(engine=db, now=now).set_index("scope")
    elapsed = (now - start).total_seconds() / (end - start).total_seconds()
    assert report.loc["prefix:acme-", "spent_usd"] == pytest.approx(3.8)
    assert report.loc["prefix:acme-", "forecast_usd"] == pytest.approx(3.8 / elapsed)
    assert report.loc["user:solo", "status"] == "warning"
    near = budget_report.users_near_or_over(engine=db, now=now)
    assert list(near["user_id"]) == ["solo", "acme-1"]
    assert list(near["status"]) == ["warning", "warning"]


def test_budgets_fail_open_when_their_database_is_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database error while checking lets the turn go ahead, with a warning that says so and
    travels with the turn."""
    from langchain_core.messages import HumanMessage

    from agent.budget import BudgetMiddleware
    from agent.context import TurnContext

    turn = TurnContext(user_id="solo", session_id="s-1", turn=2)
    monkeypatch.setattr("agent.budget.current_turn", lambda: turn)
    broken = make_engine(f"sqlite:///{tmp_path / 'empty.sqlite3'}")  # no tables at all
    middleware = BudgetMiddleware(guard=Guard(broken), estimate=lambda n: 0.01)
    assert middleware.admit([HumanMessage("hi")]) is None
    assert middleware.admit([HumanMessage("again")]) is None
    assert turn.warnings == ["Budgets could not be checked (the database is unavailable)."]
    broken.dispose()


def test_the_estimate_is_made_only_when_a_budget_covers_the_user(db: Engine) -> None:
    """Counting and pricing a request is most of a check's cost: a user with no budget pays
    none of it, and a covered user's reservation holds exactly the estimate."""
    asked: list[str] = []

    def estimate() -> float:
        asked.append("estimate")
        return 0.25

    guard = Guard(db)
    budgets.create_budget(
        engine=db,
        scope_kind="user",
        scope_value="covered",
        period="day",
        limit_usd=1.0,
        actor="admin",
    )
    uncovered = guard.admit(user_id="someone-else", estimate_usd=estimate)
    assert uncovered.reservation_id is None and asked == []
    covered = guard.admit(user_id="covered", estimate_usd=estimate)
    assert asked == ["estimate"] and covered.estimate_usd == 0.25
    with db.connect() as connection:
        held = connection.execute(
            select(BudgetReservation.amount_usd).where(
                BudgetReservation.id == covered.reservation_id
            )
        ).scalar_one()
    assert held == pytest.approx(0.25)
    guard.release(covered.reservation_id)
