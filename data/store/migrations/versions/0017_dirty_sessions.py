"""The sessions a write touched in each dirty hour (rollup_dirty_sessions), so that a refresh
after one chat turn recomputes that turn's session, models and users in its hour instead of
every session of the hour (data.analytics.rollups: the narrow path). The same triggers on
model_calls fill it beside rollup_dirty. An hour in rollup_dirty with no sessions here (a
migration's backfill, a queue entry from before this revision) is recomputed whole, as before.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
PG_HOUR = "date_trunc('hour', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"

PG_FUNCTION = f"""
CREATE OR REPLACE FUNCTION mark_rollup_dirty() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    INSERT INTO rollup_dirty (hour) SELECT DISTINCT {PG_HOUR} FROM new_rows
    ON CONFLICT DO NOTHING;
    INSERT INTO rollup_dirty_sessions (hour, session_id)
    SELECT DISTINCT {PG_HOUR}, session_id FROM new_rows ON CONFLICT DO NOTHING;
  END IF;
  IF TG_OP IN ('DELETE', 'UPDATE') THEN
    INSERT INTO rollup_dirty (hour) SELECT DISTINCT {PG_HOUR} FROM old_rows
    ON CONFLICT DO NOTHING;
    INSERT INTO rollup_dirty_sessions (hour, session_id)
    SELECT DISTINCT {PG_HOUR}, session_id FROM old_rows ON CONFLICT DO NOTHING;
  END IF;
  RETURN NULL;
END $$
"""
PG_FUNCTION_0002 = f"""
CREATE OR REPLACE FUNCTION mark_rollup_dirty() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    INSERT INTO rollup_dirty (hour) SELECT DISTINCT {PG_HOUR} FROM new_rows
    ON CONFLICT DO NOTHING;
  END IF;
  IF TG_OP IN ('DELETE', 'UPDATE') THEN
    INSERT INTO rollup_dirty (hour) SELECT DISTINCT {PG_HOUR} FROM old_rows
    ON CONFLICT DO NOTHING;
  END IF;
  RETURN NULL;
END $$
"""
SQLITE_HOUR = "strftime('%Y-%m-%d %H:00:00.000000', {row}.ts)"


def _marks(row: str, sessions: bool) -> str:
    hour = SQLITE_HOUR.format(row=row)
    out = f"INSERT OR IGNORE INTO rollup_dirty (hour) VALUES ({hour}); "
    if sessions:
        out += (
            "INSERT OR IGNORE INTO rollup_dirty_sessions (hour, session_id) "
            f"VALUES ({hour}, {row}.session_id); "
        )
    return out


def _sqlite_triggers(sessions: bool) -> list[str]:
    return [
        "CREATE TRIGGER model_calls_dirty_insert AFTER INSERT ON model_calls BEGIN "
        f"{_marks('NEW', sessions)}END",
        "CREATE TRIGGER model_calls_dirty_update AFTER UPDATE ON model_calls BEGIN "
        f"{_marks('NEW', sessions)}{_marks('OLD', sessions)}END",
        "CREATE TRIGGER model_calls_dirty_delete AFTER DELETE ON model_calls BEGIN "
        f"{_marks('OLD', sessions)}END",
    ]


def _triggers(sessions: bool) -> None:
    if op.get_bind().dialect.name == "postgresql":
        # The statement triggers call the function by name: replacing it is enough.
        op.execute(PG_FUNCTION if sessions else PG_FUNCTION_0002)
        return
    for name in ("insert", "update", "delete"):
        op.execute(f"DROP TRIGGER IF EXISTS model_calls_dirty_{name}")
    for statement in _sqlite_triggers(sessions):
        op.execute(statement)


def upgrade() -> None:
    op.create_table(
        "rollup_dirty_sessions",
        sa.Column("hour", TS, nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("hour", "session_id"),
    )
    _triggers(sessions=True)


def downgrade() -> None:
    _triggers(sessions=False)
    op.drop_table("rollup_dirty_sessions")
