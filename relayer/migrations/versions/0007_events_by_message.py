"""A message's audit trail is read newest first through one index: ``schema_version`` 7.

Revision ID: 0007
Revises: 0006

A lone message that keeps failing without being sent (its dry run reverts, its delivery needs
more gas than a block holds) waits a backoff counted from its audit trail, inside the write
transaction: ``Ledger.backoff_trail`` reads that message's newest events, a page at a time
(``ORDER BY message_id DESC, id DESC LIMIT 64``). With the index on ``message_id`` alone,
PostgreSQL walked the primary key backwards instead, filtering every other message's events
out: for a message stuck for weeks on a busy destination, hundreds of thousands of rows per
count (review of FSEAM, L4). ``(message_id, id)`` makes it a walk of that message's entries
newest first, stopping at the limit, on both databases.

It replaces ``ix_status_events_message_id``, which it covers (every lookup by ``message_id``
can use its first column), so each audit event still updates one secondary index. Building it
reads the whole table once, inside this migration's transaction, with writes held off: on a
large PostgreSQL ledger, run ``passerelle ledger migrate`` while the relayers are stopped, as
for every revision.
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# Literal statements (as in 0001, 0005 and 0006): this revision must build the same schema for
# as long as it exists, whatever the models become. The same text on both databases.
_STATEMENTS = (
    "CREATE INDEX ix_status_events_message_id_id ON status_events (message_id, id)",
    "DROP INDEX ix_status_events_message_id",
)


def upgrade() -> None:
    for statement in _STATEMENTS:
        op.execute(statement)
