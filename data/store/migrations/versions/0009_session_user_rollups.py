"""Per-session and per-user rollups (one row per session or user and model, '*' for all models)
and a queue of days whose percentiles wait to be recomputed, so that the analyst pages read one
row per session at ten million calls and a new call's refresh stays within an hour's work.

Revision ID: 0010 (step 0009: ids came out of order and are kept for existing databases)
Revises: 0011
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0011"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
# The per-session tables sort by any of these server-side; each gets (model, column, session_id)
# so that a page of the top rows is an index range scan, not a sort of every session. Spelled
# out here, not imported: a migration must not change when the models do.
SESSION_SORTS = (
    "user_id",
    "first_call",
    "last_call",
    "max_turn",
    "calls",
    "tokens",
    "cost_usd",
    "unpriced_calls",
    "peak_context_percent",
)


def upgrade() -> None:
    op.add_column(
        "rollup_session_hourly",
        sa.Column("chat_calls", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.create_index(
        "ix_rollup_session_hourly_session", "rollup_session_hourly", ["session_id", "hour"]
    )
    op.create_table(
        "rollup_sessions",
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("chat_model", sa.String(128), nullable=True),
        sa.Column("calls", sa.BigInteger(), nullable=False),
        sa.Column("chat_calls", sa.BigInteger(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("unpriced_calls", sa.BigInteger(), nullable=False),
        sa.Column("summarizations", sa.BigInteger(), nullable=False),
        sa.Column("max_turn", sa.Integer(), nullable=False),
        sa.Column("first_call", TS, nullable=False),
        sa.Column("last_call", TS, nullable=False),
        sa.Column("peak_context_percent", sa.Float(), nullable=True),
        sa.Column("latency_p95_ms", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("session_id", "model"),
    )
    for column in SESSION_SORTS:
        op.create_index(
            f"ix_rollup_sessions_{column}", "rollup_sessions", ["model", column, "session_id"]
        )
    op.create_index("ix_rollup_sessions_user", "rollup_sessions", ["user_id", "model"])
    # Counting a range's sessions reads this index only.
    op.create_index(
        "ix_rollup_sessions_span", "rollup_sessions", ["model", "first_call", "last_call"]
    )
    # Finding the sessions that straddle a range's start reads this index only.
    op.create_index(
        "ix_rollup_sessions_span_end",
        "rollup_sessions",
        ["model", "last_call", "first_call", "session_id"],
    )
    op.create_table(
        "rollup_users",
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("sessions", sa.BigInteger(), nullable=False),
        sa.Column("calls", sa.BigInteger(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("unpriced_calls", sa.BigInteger(), nullable=False),
        sa.Column("first_call", TS, nullable=False),
        sa.Column("last_call", TS, nullable=False),
        sa.PrimaryKeyConstraint("user_id", "model"),
    )
    op.create_index("ix_rollup_users_model_first", "rollup_users", ["model", "first_call"])
    op.create_table("rollup_dirty_days", sa.Column("day", TS, primary_key=True))
    # "Does this range hold demo rows?" is one probe of this index, however many rows there are.
    op.create_index(
        "ix_model_calls_demo_ts",
        "model_calls",
        ["ts"],
        sqlite_where=sa.text("demo = 1"),
        postgresql_where=sa.text("demo"),
    )
    # Every hour is recomputed once, which fills the new columns and tables.
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute(
            "INSERT INTO rollup_dirty (hour) SELECT DISTINCT hour FROM rollup_session_hourly "
            "ON CONFLICT DO NOTHING"
        )
    else:
        op.execute(
            "INSERT OR IGNORE INTO rollup_dirty (hour) SELECT DISTINCT hour FROM "
            "rollup_session_hourly"
        )


def downgrade() -> None:
    op.drop_index("ix_model_calls_demo_ts", "model_calls")
    op.drop_table("rollup_dirty_days")
    op.drop_table("rollup_users")
    op.drop_table("rollup_sessions")
    op.drop_index("ix_rollup_session_hourly_session", "rollup_session_hourly")
    with op.batch_alter_table("rollup_session_hourly") as batch:
        batch.drop_column("chat_calls")
