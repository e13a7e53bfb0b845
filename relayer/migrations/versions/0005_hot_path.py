"""Hot-path reads stop growing with the ledger (issue #12, scale): ``schema_version`` 5.

Revision ID: 0005
Revises: 0004

A relayer polls the ledger several times a second for ever, while ``messages`` only grows
(delivered messages stay). Two reads of that poll used to cost rows proportional to the table:

- ``counts_by_status`` (the ``passerelle_messages`` gauges on every /metrics scrape, and the
  unpaid re-check each round) was ``SELECT status, count(*) ... GROUP BY status``: every row.
  This revision adds ``message_counts``: one row per (origin, destination, status) with the
  number of messages there, kept by triggers on ``messages`` in the same transaction as the
  change (so every writer keeps it right: the relayer, an operator's command, a migration).
  Reading it costs the number of routes times the eight statuses, whatever the history.
- ``by_status(status, origin=...)`` (the collect loop's ``final`` messages of one origin) had
  no index starting with (status, origin): the planner walked the whole ``(origin, nonce)``
  index of that origin, delivered history included. ``ix_messages_status_origin`` (status,
  origin, nonce) reads exactly that origin's messages in that status, already in nonce order.

The counters are filled from the rows already there inside this migration's one transaction
(a single scan, once). PostgreSQL counts per statement (transition tables: one upsert per
status change of a whole batch); SQLite has row triggers only, one small upsert per row.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Every statement is a literal (as in 0001): this revision must build the same schema for as
# long as it exists, whatever the models become.
_ROUTE_STATUS = (
    "origin = {row}.origin AND destination = {row}.destination AND status = {row}.status"
)


def _sqlite_add(row: str, sign: str) -> str:
    # INSERT OR IGNORE then UPDATE rather than an UPSERT: the simplest form SQLite accepts in
    # a trigger body on every version Python ships with.
    return (
        "INSERT OR IGNORE INTO message_counts (origin, destination, status, count) "
        f"VALUES ({row}.origin, {row}.destination, {row}.status, 0); "
        f"UPDATE message_counts SET count = count {sign} 1 WHERE {_ROUTE_STATUS.format(row=row)};"
    )


_SQLITE = (
    "CREATE TRIGGER messages_count_insert AFTER INSERT ON messages "
    f"BEGIN {_sqlite_add('new', '+')} END",
    "CREATE TRIGGER messages_count_delete AFTER DELETE ON messages "
    f"BEGIN {_sqlite_add('old', '-')} END",
    # Only a change of what is counted fires: the attempts / reason / tx updates cost nothing.
    "CREATE TRIGGER messages_count_update AFTER UPDATE OF status, origin, destination ON messages "
    "WHEN old.status IS NOT new.status OR old.origin IS NOT new.origin "
    "OR old.destination IS NOT new.destination "
    f"BEGIN {_sqlite_add('old', '-')} {_sqlite_add('new', '+')} END",
)

# One function for the three statement triggers: each statement's rows leave (old_rows) and
# arrive (new_rows) as a whole, so a batch of 25 messages moving together is one upsert. A
# branch refers only to the transition tables its trigger has (plpgsql plans a branch when it
# first runs it).
_PG_DELTA = (
    "INSERT INTO message_counts AS c (origin, destination, status, count) "
    "SELECT origin, destination, status, sum(d) FROM ({rows}) AS moved "
    "GROUP BY origin, destination, status HAVING sum(d) <> 0 "
    "ON CONFLICT (origin, destination, status) DO UPDATE SET count = c.count + excluded.count;"
)
_PG_NEW = "SELECT origin, destination, status, 1 AS d FROM new_rows"
_PG_OLD = "SELECT origin, destination, status, -1 AS d FROM old_rows"
_POSTGRESQL = (
    "CREATE FUNCTION passerelle_count_messages() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    f"IF TG_OP = 'INSERT' THEN {_PG_DELTA.format(rows=_PG_NEW)} "
    f"ELSIF TG_OP = 'DELETE' THEN {_PG_DELTA.format(rows=_PG_OLD)} "
    f"ELSE {_PG_DELTA.format(rows=_PG_OLD + ' UNION ALL ' + _PG_NEW)} "
    "END IF; RETURN NULL; END $$",
    "CREATE TRIGGER messages_count_insert AFTER INSERT ON messages "
    "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT "
    "EXECUTE FUNCTION passerelle_count_messages()",
    "CREATE TRIGGER messages_count_delete AFTER DELETE ON messages "
    "REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT "
    "EXECUTE FUNCTION passerelle_count_messages()",
    "CREATE TRIGGER messages_count_update AFTER UPDATE ON messages "
    "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT "
    "EXECUTE FUNCTION passerelle_count_messages()",
)


def upgrade() -> None:
    op.create_index(
        "ix_messages_status_origin", "messages", ["status", "origin", "nonce"], unique=False
    )
    op.create_table(
        "message_counts",
        sa.Column("origin", sa.BigInteger(), nullable=False),
        sa.Column("destination", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("origin", "destination", "status"),
    )
    op.execute(
        "INSERT INTO message_counts (origin, destination, status, count) "
        "SELECT origin, destination, status, count(*) FROM messages "
        "GROUP BY origin, destination, status"
    )
    dialect = op.get_bind().dialect.name
    for statement in _POSTGRESQL if dialect == "postgresql" else _SQLITE:
        op.execute(statement)
