"""model_calls in monthly partitions on Postgres (data/store/partitions.py): the existing table
is converted in place. Its indexes, triggers and the views on it are read from the catalog and
made again on the partitioned table (so a later migration's index comes along without naming
it here), the
id sequence carries on, the months that have calls and the next AHEAD_MONTHS get a partition,
and the rows are copied across before the triggers exist (the rollups already count them).
SQLite keeps one table.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

from datetime import UTC

from alembic import op
from sqlalchemy import text

from data.store import partitions

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

OLD = "model_calls_unpartitioned"


def _catalog(table: str) -> tuple[list[tuple[str, str]], list[str], str]:
    """(index name, definition) of the table's indexes but its primary key, its own triggers'
    definitions, and its id sequence."""
    bind = op.get_bind()
    indexes = bind.execute(
        text(
            "SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x "
            "JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = to_regclass(:t) "
            "AND NOT x.indisprimary ORDER BY i.relname"
        ),
        {"t": table},
    ).all()
    triggers = bind.execute(
        text(
            "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = to_regclass(:t) "
            "AND NOT tgisinternal ORDER BY tgname"
        ),
        {"t": table},
    ).scalars()
    sequence = bind.execute(text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": table}).scalar()
    return [(str(n), str(d)) for n, d in indexes], list(triggers), str(sequence)


def _views(table: str) -> list[tuple[str, str]]:
    """(name, definition) of the views that read the table."""
    rows = (
        op.get_bind()
        .execute(
            text(
                "SELECT DISTINCT v.relname, pg_get_viewdef(v.oid) FROM pg_depend d "
                "JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class "
                "WHERE d.refobjid = to_regclass(:t) AND v.relkind = 'v' ORDER BY v.relname"
            ),
            {"t": table},
        )
        .all()
    )
    return [(str(n), str(d)) for n, d in rows]


def _set_aside() -> tuple[list[tuple[str, str]], list[str], str, list[tuple[str, str]]]:
    """model_calls' indexes, triggers, sequence and views, the views dropped (they hold the
    table) until _restore makes them again."""
    indexes, triggers, sequence = _catalog("model_calls")
    views = _views("model_calls")
    for name, _ in views:
        op.execute(f'DROP VIEW "{name}"')
    return indexes, triggers, sequence, views


def _restore(triggers: list[str], views: list[tuple[str, str]]) -> None:
    for definition in triggers:
        op.execute(definition)
    for name, definition in views:
        op.execute(f'CREATE VIEW "{name}" AS {definition}')


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql" or partitions.is_partitioned(bind):
        return
    indexes, triggers, sequence, views = _set_aside()
    op.execute(f"ALTER TABLE model_calls RENAME TO {OLD}")
    for name, _ in indexes:
        op.execute(f'ALTER INDEX "{name}" RENAME TO "{name[:50]}_unpartitioned"')
    op.execute("ALTER INDEX model_calls_pkey RENAME TO model_calls_unpartitioned_pkey")
    op.execute(f"CREATE TABLE model_calls (LIKE {OLD} INCLUDING DEFAULTS) PARTITION BY RANGE (ts)")
    # A partitioned table's primary key holds its partition key.
    op.execute("ALTER TABLE model_calls ADD CONSTRAINT model_calls_pkey PRIMARY KEY (id, ts)")
    op.execute(f"ALTER SEQUENCE {sequence} OWNED BY model_calls.id")
    for _, definition in indexes:
        op.execute(definition)
    op.execute(f"CREATE TABLE {partitions.DEFAULT} PARTITION OF model_calls DEFAULT")
    months = bind.execute(
        text(f"SELECT DISTINCT date_trunc('month', ts AT TIME ZONE 'UTC') FROM {OLD}")
    ).scalars()
    for month in sorted(months):
        partitions.create_month(bind, month.replace(tzinfo=UTC))
    partitions.ensure_in(bind)
    op.execute(f"INSERT INTO model_calls SELECT * FROM {OLD}")
    op.execute(f"DROP TABLE {OLD}")
    _restore(triggers, views)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql" or not partitions.is_partitioned(bind):
        return
    indexes, triggers, sequence, views = _set_aside()
    op.execute(f"CREATE TABLE {OLD} (LIKE model_calls INCLUDING DEFAULTS)")
    op.execute(f"INSERT INTO {OLD} SELECT * FROM model_calls")
    op.execute(f"ALTER SEQUENCE {sequence} OWNED BY {OLD}.id")
    op.execute("DROP TABLE model_calls")  # its partitions, indexes and triggers with it
    op.execute(f"ALTER TABLE {OLD} RENAME TO model_calls")
    op.execute("ALTER TABLE model_calls ADD CONSTRAINT model_calls_pkey PRIMARY KEY (id)")
    for _, definition in indexes:
        op.execute(definition.replace(" ON ONLY ", " ON "))
    _restore(triggers, views)
