"""The test databases emptied between tests: every table a test writes, children first."""

from __future__ import annotations

from sqlalchemy import Engine, text


def truncate_all(engine: Engine) -> None:
    with engine.begin() as connection:
        for table in (
            "maintenance_runs",
            "auth_failures",
            "users",
            "budget_alerts",
            "budget_reservations",
            "budget_changes",
            "budgets",
            "review_scores",
            "review_claims",
            "review_items",
            "feedback_thumbs",
            "agent_events",
            "model_calls",
            "messages",
            "chat_sessions",
        ):
            connection.execute(text(f"DELETE FROM {table}"))
