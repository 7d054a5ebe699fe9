"""The Outcomes page's rollup: verdict counts and cost per UTC day (rollup_outcomes), and the
queue of days to recompute (rollup_outcome_dirty), filled by triggers on conversation_outcomes
so every writer (the judge worker, reopening, the demo, retention, a bulk load) queues its days;
and an index for the page's user filter, which reads the verdicts themselves.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
PG_DAY = "to_char({row}.ended_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
SQLITE_DAY = "substr({row}.ended_at, 1, 10)"  # stored as 'YYYY-MM-DD HH:MM:SS' UTC


def upgrade() -> None:
    op.create_table(
        "rollup_outcomes",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("chat_model", sa.String(128), nullable=True),
        sa.Column("key", sa.String(128), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("current", sa.Boolean(), nullable=False),
        sa.Column("reopened", sa.Boolean(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
    )
    op.create_index("ix_rollup_outcomes_kind_day", "rollup_outcomes", ["kind", "day"])
    op.create_index(
        "ix_conversation_outcomes_user_ended", "conversation_outcomes", ["user_id", "ended_at"]
    )
    op.create_table(
        "rollup_outcome_dirty",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("day", sa.String(10), nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        new, old = PG_DAY.format(row="NEW"), PG_DAY.format(row="OLD")
        op.execute(
            f"""
            CREATE FUNCTION queue_outcome_day() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF TG_OP IN ('UPDATE', 'DELETE') THEN
                INSERT INTO rollup_outcome_dirty (day) VALUES ({old});
              END IF;
              IF TG_OP IN ('INSERT', 'UPDATE') THEN
                INSERT INTO rollup_outcome_dirty (day) VALUES ({new});
              END IF;
              RETURN NULL;
            END $$
            """
        )
        op.execute(
            "CREATE TRIGGER conversation_outcomes_queue_day AFTER INSERT OR UPDATE OR DELETE "
            "ON conversation_outcomes FOR EACH ROW EXECUTE FUNCTION queue_outcome_day()"
        )
        day = PG_DAY.format(row="conversation_outcomes")
    else:
        new, old = SQLITE_DAY.format(row="NEW"), SQLITE_DAY.format(row="OLD")
        for event, values in (
            ("INSERT", f"({new})"),
            ("UPDATE", f"({old}), ({new})"),
            ("DELETE", f"({old})"),
        ):
            op.execute(
                f"CREATE TRIGGER conversation_outcomes_queue_day_{event.lower()} AFTER {event} "
                f"ON conversation_outcomes BEGIN "
                f"INSERT INTO rollup_outcome_dirty (day) VALUES {values}; END"
            )
        day = SQLITE_DAY.format(row="conversation_outcomes")
    op.execute(
        f"INSERT INTO rollup_outcome_dirty (day) SELECT DISTINCT {day} FROM conversation_outcomes"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER conversation_outcomes_queue_day ON conversation_outcomes")
        op.execute("DROP FUNCTION queue_outcome_day()")
    else:
        for event in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER conversation_outcomes_queue_day_{event}")
    op.drop_table("rollup_outcome_dirty")
    op.drop_index("ix_conversation_outcomes_user_ended", "conversation_outcomes")
    op.drop_index("ix_rollup_outcomes_kind_day", "rollup_outcomes")
    op.drop_table("rollup_outcomes")
