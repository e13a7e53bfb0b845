"""Writers of different domains count in rows of their own (review M2): ``schema_version`` 6.

Revision ID: 0006
Revises: 0005

Since per-domain write locks (docs/decisions.md, session 6), ``collect:o`` and ``deliver:d``
write the ledger side by side. Both change one ``message_counts`` row: route ``(o, d)`` in
``attested`` (collect counts messages in, deliver counts them out). The trigger's upsert held
that row's lock until commit, so the two writers still took turns there, and four relayers on
crossing routes could deadlock on such rows.

This revision adds ``slot`` to the counters' key. The PostgreSQL trigger counts in the slot the
writing transaction names in its setting ``passerelle.count_slot`` (set by the ledger with its
domain lock: ``relayer.ledger.count_slot``, one value per domain; unset, as for operators,
migrations and writers holding the whole ledger, it is 0). Writers of different domains thus
never touch the same counter row. A slot's count may go negative (deliver's slot counts out what
collect's counted in); readers sum over slots, which ``counts_by_status`` already did.

SQLite has one writer at a time: its row triggers count in slot 0, as before. Its primary key
can only change by rebuilding the table, which is done here with the triggers dropped and made
again around it. The counts already there become slot 0's, in this one transaction.
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# Literal statements (as in 0001 and 0005): this revision must build the same schema for as
# long as it exists, whatever the models become.
_ROUTE_STATUS = (
    "origin = {row}.origin AND destination = {row}.destination AND status = {row}.status"
)


def _sqlite_add(row: str, sign: str) -> str:
    return (
        "INSERT OR IGNORE INTO message_counts (origin, destination, status, slot, count) "
        f"VALUES ({row}.origin, {row}.destination, {row}.status, 0, 0); "
        f"UPDATE message_counts SET count = count {sign} 1 "
        f"WHERE {_ROUTE_STATUS.format(row=row)} AND slot = 0;"
    )


_SQLITE_TRIGGERS = (
    "CREATE TRIGGER messages_count_insert AFTER INSERT ON messages "
    f"BEGIN {_sqlite_add('new', '+')} END",
    "CREATE TRIGGER messages_count_delete AFTER DELETE ON messages "
    f"BEGIN {_sqlite_add('old', '-')} END",
    "CREATE TRIGGER messages_count_update AFTER UPDATE OF status, origin, destination ON messages "
    "WHEN old.status IS NOT new.status OR old.origin IS NOT new.origin "
    "OR old.destination IS NOT new.destination "
    f"BEGIN {_sqlite_add('old', '-')} {_sqlite_add('new', '+')} END",
)
_SQLITE = (
    "DROP TRIGGER messages_count_insert",
    "DROP TRIGGER messages_count_delete",
    "DROP TRIGGER messages_count_update",
    "CREATE TABLE message_counts_0006 (origin BIGINT NOT NULL, destination BIGINT NOT NULL, "
    "status VARCHAR(16) NOT NULL, slot BIGINT DEFAULT 0 NOT NULL, count BIGINT NOT NULL, "
    "PRIMARY KEY (origin, destination, status, slot))",
    "INSERT INTO message_counts_0006 (origin, destination, status, slot, count) "
    "SELECT origin, destination, status, 0, count FROM message_counts",
    "DROP TABLE message_counts",
    "ALTER TABLE message_counts_0006 RENAME TO message_counts",
    *_SQLITE_TRIGGERS,
)

# The slot of this transaction: set_config(..., true) by the ledger, so it ends with the
# transaction; '' once a transaction-local value ended on this connection, NULL if never set.
_PG_SLOT = (
    "CAST(COALESCE(NULLIF(current_setting('passerelle.count_slot', true), ''), '0') AS bigint)"
)
_PG_DELTA = (
    "INSERT INTO message_counts AS c (origin, destination, status, slot, count) "
    f"SELECT origin, destination, status, {_PG_SLOT}, sum(d) FROM ({{rows}}) AS moved "
    "GROUP BY origin, destination, status HAVING sum(d) <> 0 "
    "ON CONFLICT (origin, destination, status, slot) "
    "DO UPDATE SET count = c.count + excluded.count;"
)
_PG_NEW = "SELECT origin, destination, status, 1 AS d FROM new_rows"
_PG_OLD = "SELECT origin, destination, status, -1 AS d FROM old_rows"
_POSTGRESQL = (
    "ALTER TABLE message_counts ADD COLUMN slot BIGINT DEFAULT 0 NOT NULL",
    "ALTER TABLE message_counts DROP CONSTRAINT message_counts_pkey",
    "ALTER TABLE message_counts ADD CONSTRAINT message_counts_pkey "
    "PRIMARY KEY (origin, destination, status, slot)",
    # The triggers of 0005 call this function by name: replacing it changes all three.
    "CREATE OR REPLACE FUNCTION passerelle_count_messages() RETURNS trigger LANGUAGE plpgsql "
    "AS $$ BEGIN "
    f"IF TG_OP = 'INSERT' THEN {_PG_DELTA.format(rows=_PG_NEW)} "
    f"ELSIF TG_OP = 'DELETE' THEN {_PG_DELTA.format(rows=_PG_OLD)} "
    f"ELSE {_PG_DELTA.format(rows=_PG_OLD + ' UNION ALL ' + _PG_NEW)} "
    "END IF; RETURN NULL; END $$",
)


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    for statement in _POSTGRESQL if dialect == "postgresql" else _SQLITE:
        op.execute(statement)
