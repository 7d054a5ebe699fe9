"""Exact rollups for the analyst pages, kept fresh through a dirty-hour queue fed by triggers.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)

# Every write to model_calls (insert, late arrival, correction, delete) marks its UTC hour
# dirty; data.analytics.rollups.refresh() recomputes exactly those hours from the raw rows.
PG_FUNCTION = """
CREATE FUNCTION mark_rollup_dirty() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    INSERT INTO rollup_dirty (hour)
    SELECT DISTINCT date_trunc('hour', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' FROM new_rows
    ON CONFLICT DO NOTHING;
  END IF;
  IF TG_OP IN ('DELETE', 'UPDATE') THEN
    INSERT INTO rollup_dirty (hour)
    SELECT DISTINCT date_trunc('hour', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' FROM old_rows
    ON CONFLICT DO NOTHING;
  END IF;
  RETURN NULL;
END $$
"""
PG_TRIGGERS = [
    "CREATE TRIGGER model_calls_dirty_insert AFTER INSERT ON model_calls "
    "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION mark_rollup_dirty()",
    "CREATE TRIGGER model_calls_dirty_update AFTER UPDATE ON model_calls "
    "REFERENCING NEW TABLE AS new_rows OLD TABLE AS old_rows FOR EACH STATEMENT "
    "EXECUTE FUNCTION mark_rollup_dirty()",
    "CREATE TRIGGER model_calls_dirty_delete AFTER DELETE ON model_calls "
    "REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION mark_rollup_dirty()",
]
# SQLite stores our timestamps as 'YYYY-MM-DD HH:MM:SS.ffffff' UTC text
# (data.store.orm.UTCDateTime).
SQLITE_HOUR = "strftime('%Y-%m-%d %H:00:00.000000', {row}.ts)"
SQLITE_TRIGGERS = [
    "CREATE TRIGGER model_calls_dirty_insert AFTER INSERT ON model_calls BEGIN "
    f"INSERT OR IGNORE INTO rollup_dirty (hour) VALUES ({SQLITE_HOUR.format(row='NEW')}); END",
    "CREATE TRIGGER model_calls_dirty_update AFTER UPDATE ON model_calls BEGIN "
    f"INSERT OR IGNORE INTO rollup_dirty (hour) VALUES ({SQLITE_HOUR.format(row='NEW')}); "
    f"INSERT OR IGNORE INTO rollup_dirty (hour) VALUES ({SQLITE_HOUR.format(row='OLD')}); END",
    "CREATE TRIGGER model_calls_dirty_delete AFTER DELETE ON model_calls BEGIN "
    f"INSERT OR IGNORE INTO rollup_dirty (hour) VALUES ({SQLITE_HOUR.format(row='OLD')}); END",
]


def upgrade() -> None:
    op.create_table("rollup_dirty", sa.Column("hour", TS, primary_key=True))
    op.create_table(
        "rollup_hourly",
        sa.Column("hour", TS, nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("cost_status", sa.String(16), nullable=False),
        sa.Column("calls", sa.BigInteger(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cached_input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("hour", "model", "provider", "purpose", "status", "cost_status"),
    )
    op.create_table(
        "rollup_session_hourly",
        sa.Column("hour", TS, nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("calls", sa.BigInteger(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("unpriced_calls", sa.BigInteger(), nullable=False),
        sa.Column("summarizations", sa.BigInteger(), nullable=False),
        sa.Column("max_turn", sa.Integer(), nullable=False),
        sa.Column("first_call", TS, nullable=False),
        sa.Column("last_call", TS, nullable=False),
        sa.Column("peak_context_percent", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("hour", "session_id", "model"),
    )
    op.create_table(
        "rollup_context_bins",
        sa.Column("hour", TS, nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("bin", sa.Integer(), nullable=False),
        sa.Column("calls", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("hour", "model", "bin"),
    )
    # Percentiles do not add up, so each bucket's are computed exactly from its raw rows, per
    # model and for all models together (model = '*'), at hour and at day granularity.
    op.create_table(
        "rollup_percentiles",
        sa.Column("unit", sa.String(8), nullable=False),
        sa.Column("bucket", TS, nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("metric", sa.String(24), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("p50", sa.Float(), nullable=True),
        sa.Column("p95", sa.Float(), nullable=True),
        sa.Column("p99", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("unit", "metric", "bucket", "model"),
    )
    # The unpriced-call list and the slowest-call list read raw rows through these.
    op.create_index("ix_model_calls_cost_status_ts", "model_calls", ["cost_status", "ts"])
    op.create_index("ix_model_calls_latency", "model_calls", ["latency_ms"])
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute(PG_FUNCTION)
        for statement in PG_TRIGGERS:
            op.execute(statement)
    else:
        for statement in SQLITE_TRIGGERS:
            op.execute(statement)
    # Existing rows: every hour that has calls starts dirty.
    if bind.dialect.name == "postgresql":
        op.execute(
            "INSERT INTO rollup_dirty (hour) SELECT DISTINCT date_trunc('hour', ts AT "
            "TIME ZONE 'UTC') AT TIME ZONE 'UTC' FROM model_calls"
        )
    else:
        op.execute(
            "INSERT OR IGNORE INTO rollup_dirty (hour) SELECT DISTINCT "
            f"{SQLITE_HOUR.format(row='model_calls')} FROM model_calls"
        )


def downgrade() -> None:
    for name in ("insert", "update", "delete"):
        op.execute(
            f"DROP TRIGGER IF EXISTS model_calls_dirty_{name}"
            + (" ON model_calls" if op.get_bind().dialect.name == "postgresql" else "")
        )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION mark_rollup_dirty()")
    op.drop_index("ix_model_calls_latency", "model_calls")
    op.drop_index("ix_model_calls_cost_status_ts", "model_calls")
    for table in (
        "rollup_percentiles",
        "rollup_context_bins",
        "rollup_session_hourly",
        "rollup_hourly",
        "rollup_dirty",
    ):
        op.drop_table(table)
