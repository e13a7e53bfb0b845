"""Leases: several relayers share one ledger (issue #12): ``schema_version`` 3.

Revision ID: 0003
Revises: 0002

Two new tables, nothing else changes (relayer/leases.py; docs/relayer.md, "Several relayers"):

- ``leases``: one row per share of the relaying work (``scan:<domain>``,
  ``collect:<domain>``, ``deliver:<domain>``, ``unpaid``): its holder, when the holding expires
  (the database's clock), and a fencing token that grows by one for each new holder. Every
  ledger write a relayer's task makes checks, in its own transaction, that the row still has
  the task's holder and token.
- ``lease_holders``: the relayer processes taking part, with when each was last seen; the ones
  seen within a lease period divide the leases between them.

Rows are created by the relayers as they need them: an empty table is a ledger nobody has
leased yet, and a single relayer on SQLite never writes here at all.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_HOLDER = sa.String(length=128)


def upgrade() -> None:
    # Every name and type is a literal (as in 0001): this revision must build the same tables
    # for as long as it exists, whatever the models become.
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", _HOLDER, nullable=True),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("claimed_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "lease_holders",
        sa.Column("holder", _HOLDER, nullable=False),
        sa.Column("seen_at", sa.Float(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("holder"),
    )
