"""The ledger as Passerelle created it before migrations existed (``schema_version`` 1).

Revision ID: 0001
Revises: (none)

Exactly the tables, constraints, indexes and append-only triggers that ``open_ledger`` made
with ``SQLModel.metadata.create_all`` up to commit c5d2dfb. A ledger created by that code has
no ``alembic_version`` table but ``ledger_meta.schema_version = '1'``: opening it stamps it at
this revision without touching a table (``relayer.ledger``), so it is never recreated.

Every name and type is a literal here, not read from the model classes: this revision must
build the same schema for as long as it exists, whatever the models become.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Surrogate keys: BIGINT on PostgreSQL, INTEGER (the rowid alias, so it autoincrements) on SQLite.
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_HASH = sa.String(length=66)  # "0x" + 64 hex digits
_WEI = sa.String(length=78)  # an amount of up to 256 bits, as a decimal string
_MESSAGE_STATUSES = (
    "discovered",
    "final",
    "attested",
    "submitted",
    "delivered",
    "failed",
    "skipped",
)
_TX_STATUSES = ("pending", "confirmed", "failed", "replaced")

# The audit trail is append-only in the database itself. The statements are today's, verbatim
# (IF NOT EXISTS / OR REPLACE included), so that a new ledger and an old one store the same text.
_TRIGGERS = {
    "sqlite": (
        "CREATE TRIGGER IF NOT EXISTS status_events_no_update BEFORE UPDATE ON status_events "
        "BEGIN SELECT RAISE(ABORT, 'status_events is append-only'); END",
        "CREATE TRIGGER IF NOT EXISTS status_events_no_delete BEFORE DELETE ON status_events "
        "BEGIN SELECT RAISE(ABORT, 'status_events is append-only'); END",
    ),
    "postgresql": (
        "CREATE OR REPLACE FUNCTION passerelle_append_only() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'status_events is append-only'; END $$",
        "DROP TRIGGER IF EXISTS status_events_append_only ON status_events",
        "CREATE TRIGGER status_events_append_only BEFORE UPDATE OR DELETE ON status_events "
        "FOR EACH ROW EXECUTE FUNCTION passerelle_append_only()",
    ),
}


_STATUS = sa.String(length=16)  # a status is VARCHAR + a CHECK (no native PG enum to migrate)


def _one_of(column: str, values: tuple[str, ...], name: str) -> sa.CheckConstraint:
    # What SQLAlchemy's non-native Enum emits, written out so that the constraint takes its
    # place among the others (the order is part of the CREATE TABLE text SQLite stores).
    allowed = ", ".join(f"'{value}'" for value in values)
    return sa.CheckConstraint(f"{column} IN ({allowed})", name=name)


def upgrade() -> None:
    # Constraint order matters: SQLite stores the CREATE TABLE text, and it must be today's.
    op.create_table(
        "scan_cursors",
        sa.Column("domain", sa.BigInteger(), nullable=False),
        sa.Column("stream", sa.String(length=32), nullable=False),
        sa.Column("next_block", sa.BigInteger(), nullable=False),
        sa.Column("last_block_hash", _HASH, nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("domain", "stream"),
    )
    op.create_table(
        "checkpoints",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("origin", sa.BigInteger(), nullable=False),
        sa.Column("outbox", _HASH, nullable=False),
        sa.Column("root", _HASH, nullable=False),
        sa.Column("index", sa.BigInteger(), nullable=False),
        sa.Column("source_block_number", sa.BigInteger(), nullable=False),
        sa.Column("source_block_hash", _HASH, nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("origin", "outbox", "index", name="uq_checkpoints_origin_outbox_index"),
    )
    op.create_index("ix_checkpoints_source_block", "checkpoints", ["origin", "source_block_number"])
    op.create_table(
        "transactions",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("chain", sa.BigInteger(), nullable=False),
        sa.Column("hash", _HASH, nullable=False),
        sa.Column("sender", _HASH, nullable=False),
        sa.Column("nonce", sa.BigInteger(), nullable=False),
        sa.Column("gas_limit", sa.BigInteger(), nullable=True),
        sa.Column("max_fee_per_gas", _WEI, nullable=True),
        sa.Column("max_priority_fee_per_gas", _WEI, nullable=True),
        sa.Column("status", _STATUS, nullable=False),
        sa.Column("submitted_at", sa.Float(), nullable=False),
        sa.Column("confirmed_at", sa.Float(), nullable=True),
        sa.Column("block_number", sa.BigInteger(), nullable=True),
        sa.Column("gas_used", sa.BigInteger(), nullable=True),
        sa.Column("effective_gas_price", _WEI, nullable=True),
        sa.Column("fee_paid", _WEI, nullable=True),
        sa.Column("replaces", _HASH, nullable=True),
        sa.Column("replaced_by", _HASH, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("chain", "hash", name="uq_transactions_chain_hash"),
        _one_of("status", _TX_STATUSES, "ck_transactions_status"),
    )
    op.create_index("ix_transactions_chain_status", "transactions", ["chain", "status"])
    op.create_index(
        "ix_transactions_chain_sender_nonce", "transactions", ["chain", "sender", "nonce"]
    )
    op.create_table(
        "status_events",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("message_id", _HASH, nullable=False),
        sa.Column("from_status", _STATUS, nullable=True),
        sa.Column("to_status", _STATUS, nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("checkpoint_id", _ID, nullable=True),
        sa.Column("tx_hash", _HASH, nullable=True),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        _one_of("from_status", _MESSAGE_STATUSES, "ck_events_from"),
        _one_of("to_status", _MESSAGE_STATUSES, "ck_events_to"),
    )
    op.create_index("ix_status_events_message_id", "status_events", ["message_id"])
    op.create_table(
        "ledger_meta",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "messages",
        sa.Column("id", _HASH, nullable=False),
        sa.Column("origin", sa.BigInteger(), nullable=False),
        sa.Column("nonce", sa.BigInteger(), nullable=False),
        sa.Column("destination", sa.BigInteger(), nullable=False),
        sa.Column("sender", _HASH, nullable=False),
        sa.Column("recipient", _HASH, nullable=False),
        sa.Column("message", sa.LargeBinary(), nullable=False),
        sa.Column("status", _STATUS, nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("source_block_number", sa.BigInteger(), nullable=False),
        sa.Column("source_block_hash", _HASH, nullable=False),
        sa.Column("source_tx_hash", _HASH, nullable=False),
        sa.Column("log_index", sa.BigInteger(), nullable=False),
        sa.Column("checkpoint_id", _ID, nullable=True),
        sa.Column("delivery_tx_hash", _HASH, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.Float(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("origin", "nonce", name="uq_messages_origin_nonce"),
        _one_of("status", _MESSAGE_STATUSES, "ck_messages_status"),
        sa.ForeignKeyConstraint(
            ["checkpoint_id"], ["checkpoints.id"], name="fk_messages_checkpoint"
        ),
    )
    op.create_index(
        "ix_messages_status_lane", "messages", ["status", "destination", "origin", "nonce"]
    )
    op.create_index("ix_messages_retry", "messages", ["status", "next_attempt_at"])
    op.create_index("ix_messages_source_block", "messages", ["origin", "source_block_number"])
    op.create_table(
        "checkpoint_signatures",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("checkpoint_id", _ID, nullable=False),
        sa.Column("signer", sa.String(length=42), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("checkpoint_id", "signer", name="uq_signatures_checkpoint_signer"),
        sa.ForeignKeyConstraint(
            ["checkpoint_id"], ["checkpoints.id"], name="fk_signatures_checkpoint"
        ),
    )
    op.create_index(
        "ix_checkpoint_signatures_checkpoint_id", "checkpoint_signatures", ["checkpoint_id"]
    )
    op.create_table(
        "transaction_messages",
        sa.Column("transaction_id", _ID, nullable=False),
        sa.Column("message_id", _HASH, nullable=False),
        sa.ForeignKeyConstraint(
            ["transaction_id"], ["transactions.id"], name="fk_txmsg_transaction"
        ),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"], name="fk_txmsg_message"),
        sa.PrimaryKeyConstraint("transaction_id", "message_id"),
    )
    op.create_index("ix_transaction_messages_message_id", "transaction_messages", ["message_id"])
    for statement in _TRIGGERS.get(op.get_bind().dialect.name, ()):
        op.execute(statement)
    # Read by Passerelle releases older than these migrations: they refuse a ledger whose
    # version is above 1, so every later revision raises it (see relayer/migrations/__init__.py).
    op.execute("INSERT INTO ledger_meta (key, value) VALUES ('schema_version', '1')")
