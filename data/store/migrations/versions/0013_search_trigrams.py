"""Trigram indexes for the tables' search box on Postgres: a search is a substring of a session
or user id in any case (lower(id) LIKE '%...%'), which no b-tree serves, so every search read
every conversation of the range (10M calls, 90 days: counting the matches of "user-01" took
244 ms over 790,000 rollup rows; with these indexes about 50 ms). Only the all-models rows
("*"), which the unfiltered tables read. The indexes are on lower(id), not on the id: pg_trgm
also serves `=`, and the planner then chose a trigram index on session_id for the equality
joins of the feedback page, at 6 ms a lookup (a 50 ms query took 13 s). pg_trgm ships with
Postgres and is a trusted extension (any database owner may create it); where it cannot be
created the search still works, without the index, and the migration says so.
SQLite has no such index and scans, as before.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""

import logging

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")

INDEXES = {
    "ix_rollup_sessions_session_trgm": ("rollup_sessions", "session_id"),
    "ix_rollup_sessions_user_trgm": ("rollup_sessions", "user_id"),
    "ix_rollup_users_user_trgm": ("rollup_users", "user_id"),
}


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    try:
        with bind.begin_nested():
            bind.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except sa.exc.DBAPIError as error:
        reason = str(getattr(error, "orig", error)).strip().splitlines()[0]
        log.warning(
            "pg_trgm is not available (%s): the tables' search works without its index", reason
        )
        return
    for name, (table, column) in INDEXES.items():
        op.execute(
            f"CREATE INDEX IF NOT EXISTS {name} ON {table} "
            f"USING gin (lower({column}) gin_trgm_ops) WHERE model = '*'"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name in INDEXES:
        op.execute(f"DROP INDEX IF EXISTS {name}")
