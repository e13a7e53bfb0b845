"""The delivery ledger: each message's progress as an explicit, audited state machine.

One row per message, keyed by ``id = keccak256(message)`` and unique on ``(origin, nonce)``.
A message's status is always a stored value, never inferred from missing rows::

    discovered → final → attested → submitted → delivered
                                  ↘ failed(reason) ↗      skipped(reason)

:data:`TRANSITIONS` is the one table of allowed moves; anything else raises
:class:`IllegalTransition`. Beside messages the ledger keeps scan cursors per chain,
checkpoints with their signatures, the transactions the relayer submitted (linked to the
messages they carry), ``status_events``, an append-only audit trail with one row per change,
and the leases of relayers that share the ledger (``leases``, ``lease_holders``: written by
:mod:`relayer.leases`; every write of a leased task is fenced, :func:`fenced_by`).

Durability and concurrency
    Every public mutating call is exactly one database transaction, audit rows included;
    :meth:`Ledger.atomic` groups several calls into one. On SQLite each write transaction starts
    with ``BEGIN IMMEDIATE``, so two processes sharing the file serialise their read-check-write
    steps instead of racing; on PostgreSQL transaction-scoped advisory locks give the same
    guarantee per domain: a write fenced by a lease of one origin or destination excludes only
    the writes of that domain (the ledger-wide lock shared, the domain's exclusive), every
    other write excludes all (the ledger-wide lock exclusive; :func:`write_domain`). SQLite
    runs in WAL mode with ``synchronous=FULL``: a commit that returned is on disk, and a
    process killed at any instant (``kill -9``) leaves either all of a change or none of it.
    The file is checked with ``PRAGMA integrity_check`` when it is opened.

Encoding
    Ids, hashes and addresses are stored as lowercase ``0x``-prefixed hex strings of fixed
    length (readable in ``sqlite3`` and JSON, identical on every backend, and sorting them sorts
    the underlying bytes); every API accepts ``bytes`` or hex and normalises. Payloads (the raw
    message, 65-byte signatures) are stored as bytes. Amounts in wei (fees, gas prices) can
    exceed 64 bits, so they are stored as decimal strings and read back as ``int``.

Blocking
    All calls block (a commit is an fsync: well under a millisecond on a fast SSD, a few on a
    VM disk; batch messages per call to amortise it). From trio, call them through
    ``trio.to_thread.run_sync``; a :class:`Ledger` is safe to share between threads.
"""

import contextvars
import enum
import fcntl
import functools
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Final, TypeGuard

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.orm import registry
from sqlmodel import Field, Session, SQLModel, col, delete, func, select

from adapters.redact import redact_url
from light_clients.errors import VerificationError
from light_clients.message import HEADER_SIZE, decode_message
from relayer.family import DiscoveredMessage  # defined with the seam: origins make them

__all__ = [
    "HEADER_SIZE",
    "LEDGER_TABLES",
    "MIGRATIONS_DIR",
    "SCHEMA_VERSION",
    "TRANSITIONS",
    "TX_TRANSITIONS",
    "CheckpointRecord",
    "CursorRecord",
    "DiscoveredMessage",
    "Fence",
    "IllegalTransition",
    "InvalidReference",
    "LeaseHolderRecord",
    "LeaseLost",
    "LeaseRecord",
    "Ledger",
    "LedgerBatch",
    "LedgerBusy",
    "LedgerConflict",
    "LedgerCorrupt",
    "LedgerDeadlock",
    "LedgerError",
    "LedgerInUse",
    "LedgerMeta",
    "LedgerSchemaError",
    "MessageRecord",
    "MessageStatus",
    "Migrated",
    "NewTransaction",
    "SchemaVersion",
    "SignatureRecord",
    "StatusEvent",
    "TransactionMessageLink",
    "TransactionRecord",
    "TxStatus",
    "UnknownRecord",
    "WriteOutsideDomain",
    "fenced_by",
    "ledger_schema",
    "migrate_ledger",
    "open_ledger",
]

SCHEMA_VERSION: Final = 7
"""The schema revision this code reads and writes: the ordinal of the newest Alembic revision
in ``relayer/migrations/versions`` (``0001`` is 1; a test keeps them equal). Also stored in
``ledger_meta.schema_version``, which Passerelle releases older than Alembic check."""

MIGRATIONS_DIR: Final = Path(__file__).with_name("migrations")
"""The Alembic scripts, shipped inside the package (``env.py`` and ``versions/``)."""

_DEFAULT_STREAM = "outbox"
_IN_CHUNK = 500  # ids per ``IN (...)`` list, well under every backend's bind-parameter limit
_PG_LOCK_KEY = 0x70617373_65726C6C  # "passerll": the ledger-wide PG write lock (write_domain)
PG_IDLE_IN_TRANSACTION_SECONDS = 10.0
"""How long a ledger write transaction on PostgreSQL may sit idle before the server ends it
(``idle_in_transaction_session_timeout``): far above the gaps between one transaction's
statements, far below the hours a frozen relayer would otherwise hold the write lock and its
lease rows (:class:`Ledger`)."""
_PG_USE_KEY = 0x70617373_75736572  # "passuser": Ledger.in_use (another key: one key space)


# --------------------------------------------------------------------------------------------
# Errors


class LedgerError(Exception):
    """Base class of every error the ledger raises on purpose."""


class LedgerCorrupt(LedgerError):
    """The database file is damaged (``integrity_check`` failed, or it is not a database)."""


class LedgerSchemaError(LedgerError):
    """The file was written by a newer Passerelle, or needs a migration this code lacks."""


class LedgerBusy(LedgerError):
    """Another process held the write lock for longer than the busy timeout."""


class LedgerDeadlock(LedgerBusy):
    """PostgreSQL broke a cycle of writers waiting on each other's row locks by failing this
    one (SQLSTATE 40P01); nothing of it was written. A :class:`LedgerBusy`, so whatever copes
    with a busy ledger copes with it, but it says nothing about the database being slow: the
    lease keeper gives the lease up without the pause it takes after a lock timeout."""


class LedgerInUse(LedgerError):
    """Another process uses the ledger in a way that excludes this one (:meth:`Ledger.in_use`):
    a relayer while a rebuild or a migration is asked for, or the reverse. Nothing was done."""


class LeaseLost(LedgerError):
    """A write fenced by a lease (:func:`fenced_by`) whose holder no longer has it: another
    relayer took the lease over (its token moved on), or this one released it. Nothing of the
    write was recorded; the task that made it must stop (relayer/leases.py)."""

    def __init__(self, fence: "Fence") -> None:
        self.fence = fence
        super().__init__(
            f"lease {fence.name} (token {fence.token}) is no longer held by {fence.holder}: "
            "another relayer took it over; nothing was recorded"
        )


class LedgerConflict(LedgerError):
    """Stored state contradicts new information: halt and report, never overwrite (T16, T21).

    Raised for the same ``(origin, nonce)`` under two different ids, for a checkpoint whose root
    differs from an earlier one at the same index, and for a reorg that orphans work already
    attested or delivered. ``conflicts`` lists one human-readable line per offending record.
    """

    def __init__(self, message: str, conflicts: Sequence[str] = ()) -> None:
        self.conflicts: tuple[str, ...] = tuple(conflicts)
        detail = "; ".join(self.conflicts[:5])
        more = f" (+{len(self.conflicts) - 5} more)" if len(self.conflicts) > 5 else ""
        super().__init__(f"{message}: {detail}{more}" if detail else message)


class IllegalTransition(LedgerError):
    """A status change that the transition table does not allow; names the record and the move."""

    def __init__(
        self, item_id: str, from_status: str, to_status: str, kind: str = "message"
    ) -> None:
        self.kind = kind
        self.item_id = item_id
        self.from_status = from_status
        self.to_status = to_status
        super().__init__(f"illegal {kind} transition {from_status} -> {to_status} for {item_id}")


class UnknownRecord(LedgerError, LookupError):
    """A message, checkpoint or transaction that the ledger does not hold."""

    def __init__(self, kind: str, keys: Sequence[object]) -> None:
        self.kind = kind
        self.keys: tuple[object, ...] = tuple(keys)
        shown = ", ".join(str(k) for k in self.keys[:5])
        more = f" (+{len(self.keys) - 5} more)" if len(self.keys) > 5 else ""
        super().__init__(f"unknown {kind}: {shown}{more}")


class InvalidReference(LedgerError):
    """A transition names a checkpoint or transaction that cannot apply to the message."""


class WriteOutsideDomain(LedgerError):
    """A write fenced by a lease touched a row outside that lease's domain (:func:`lease_scope`):
    ``scan:9`` recording a message of origin 1, ``deliver:4`` moving a message bound for 5.
    Nothing was written. A relayer does this only when its configuration disagrees with the
    chains (a domain id that is not the chain's own), and the lease's write lock covers its
    domain's rows only, so the write would race the relayer that holds the right lease; the
    lease keeper stops that lease (relayer/leases.py) instead of letting it run. Not an
    :class:`InvalidReference`: the loops that log a refused move and retry it catch that, and
    this one must reach the lease keeper from every one of them."""


# --------------------------------------------------------------------------------------------
# Statuses and the transition tables


class MessageStatus(enum.StrEnum):
    """Where a message is on its way; stored as the lowercase value."""

    DISCOVERED = "discovered"  # seen in a scanned source block
    FINAL = "final"  # its source block passed the chain's finality policy
    ATTESTED = "attested"  # covered by a checkpoint; ready to submit
    UNPAID = "unpaid"  # attested, but paid less than its route's policy asks; waits for a top-up
    SUBMITTED = "submitted"  # carried by a pending delivery transaction
    DELIVERED = "delivered"  # the destination marked it delivered (by us or anyone)
    FAILED = "failed"  # a delivery attempt failed; ``reason`` says why, retry at next_attempt_at
    SKIPPED = "skipped"  # set aside (operator, or undeliverable); ``reason`` says why


class TxStatus(enum.StrEnum):
    """Life of a submitted transaction."""

    PENDING = "pending"  # recorded (before or at broadcast), not yet mined
    CONFIRMED = "confirmed"  # mined and succeeded
    FAILED = "failed"  # mined and reverted, or rejected for good
    REPLACED = "replaced"  # another transaction took its nonce (fee bump, cancel)


_S = MessageStatus
_STATUS_VALUES: Final = frozenset(status.value for status in MessageStatus)
TRANSITIONS: Final[Mapping[MessageStatus, frozenset[MessageStatus]]] = MappingProxyType(
    {
        _S.DISCOVERED: frozenset({_S.FINAL, _S.SKIPPED, _S.DELIVERED}),
        _S.FINAL: frozenset({_S.ATTESTED, _S.SKIPPED, _S.DELIVERED}),
        # attested -> failed: the pre-send dry run reverted (and is not "already delivered").
        # attested -> unpaid: its route delivers only paid messages and it is not (yet) paid.
        _S.ATTESTED: frozenset({_S.SUBMITTED, _S.FAILED, _S.UNPAID, _S.SKIPPED, _S.DELIVERED}),
        # unpaid -> attested: a top-up (or a policy that no longer asks for payment) arrived.
        # Never unpaid -> failed: lack of payment is waiting, not a failed delivery.
        _S.UNPAID: frozenset({_S.ATTESTED, _S.SKIPPED, _S.DELIVERED}),
        # submitted -> submitted: a replacement transaction (fee bump) now carries it;
        # submitted -> attested: its transaction was dropped or replaced without delivering it.
        _S.SUBMITTED: frozenset({_S.SUBMITTED, _S.DELIVERED, _S.FAILED, _S.ATTESTED, _S.SKIPPED}),
        # failed -> attested / submitted: a retry (back in the queue, or straight into a batch).
        _S.FAILED: frozenset({_S.ATTESTED, _S.SUBMITTED, _S.SKIPPED, _S.DELIVERED}),
        # skipped -> discovered: an operator re-queues it; it walks the whole pipeline again.
        _S.SKIPPED: frozenset({_S.DISCOVERED, _S.DELIVERED}),
        _S.DELIVERED: frozenset(),  # terminal
    }
)
"""Allowed message moves, ``from -> {to}``; the only place they are defined.

Every status may move to ``delivered``: the destination chain, not the ledger, is the source
of truth for delivery, so "already delivered on chain" wins from anywhere. A move to the
current status that is not listed here is an idempotent no-op (nothing written), so a call
repeated after a crash or by a second relayer is harmless; ``submitted -> submitted`` is
recorded only when a different transaction carries the message.
"""

TX_TRANSITIONS: Final[Mapping[TxStatus, frozenset[TxStatus]]] = MappingProxyType(
    {
        TxStatus.PENDING: frozenset({TxStatus.CONFIRMED, TxStatus.FAILED, TxStatus.REPLACED}),
        TxStatus.CONFIRMED: frozenset(),
        TxStatus.FAILED: frozenset(),
        # A fee bump does not make the older broadcast of the nonce go away: it may be the one
        # mined (or mined and reverted) after all.
        TxStatus.REPLACED: frozenset({TxStatus.CONFIRMED, TxStatus.FAILED}),
    }
)
"""Allowed transaction moves; a move to the current status updates receipt fields only."""

_REASON_REQUIRED: Final = frozenset({_S.FAILED, _S.SKIPPED, _S.DISCOVERED, _S.UNPAID})
# Reorg invalidation: rows in these states were never attested, so they can simply be dropped
# (and re-discovered from the new canonical chain). Anything else is a conflict.
_DROPPABLE: Final = frozenset({_S.DISCOVERED, _S.FINAL, _S.SKIPPED})


# --------------------------------------------------------------------------------------------
# Column types


class _Wei(sa.types.TypeDecorator[int]):
    """A non-negative integer of up to 256 bits, stored as a decimal string (portable, exact)."""

    impl = sa.String(78)
    cache_ok = True

    def process_bind_param(self, value: int | None, dialect: sa.Dialect) -> str | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**256:
            raise ValueError(f"amount must be an integer in [0, 2**256), got {value!r}")
        return str(value)

    def process_result_value(self, value: str | None, dialect: sa.Dialect) -> int | None:
        return None if value is None else int(value)


def _enum(enum_cls: type[enum.StrEnum], name: str) -> sa.Enum:
    # VARCHAR + CHECK on every backend (no native PG enum type to migrate), values not names.
    return sa.Enum(
        enum_cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        validate_strings=True,
        values_callable=lambda members: [m.value for m in members],
    )


# Autoincrementing surrogate keys: BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite.
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_HASH = 66  # "0x" + 64 hex digits
_ADDRESS = 42  # "0x" + 40 hex digits (EVM signer addresses)


def _id_column() -> Any:
    return Field(default=None, sa_column=sa.Column(_ID, primary_key=True, autoincrement=True))


def _column(type_: Any, *args: Any, **kwargs: Any) -> Any:
    return Field(sa_column=sa.Column(type_, *args, nullable=False, **kwargs))


def _optional(type_: Any, *args: Any, **kwargs: Any) -> Any:
    return Field(default=None, sa_column=sa.Column(type_, *args, nullable=True, **kwargs))


# --------------------------------------------------------------------------------------------
# Tables


class _LedgerModel(SQLModel, registry=registry()):
    """Base of the ledger tables: a registry of their own, so only they are created here."""


class MessageRecord(_LedgerModel, table=True):
    """One cross-chain message and where it is (table ``messages``)."""

    __tablename__ = "messages"
    __table_args__ = (
        sa.UniqueConstraint("origin", "nonce", name="uq_messages_origin_nonce"),
        sa.Index("ix_messages_status_lane", "status", "destination", "origin", "nonce"),
        # by_status(status, origin=...): one origin's messages in one status, in nonce order,
        # without walking that origin's delivered history (revision 0005).
        sa.Index("ix_messages_status_origin", "status", "origin", "nonce"),
        sa.Index("ix_messages_retry", "status", "next_attempt_at"),
        sa.Index("ix_messages_source_block", "origin", "source_block_number"),
    )

    id: str = _column(sa.String(_HASH), primary_key=True)  # keccak256(message)
    origin: int = _column(sa.BigInteger)
    nonce: int = _column(sa.BigInteger)
    destination: int = _column(sa.BigInteger)
    sender: str = _column(sa.String(_HASH))
    recipient: str = _column(sa.String(_HASH))
    message: bytes = _column(sa.LargeBinary)  # the packed message; body = message[77:]
    status: MessageStatus = _column(_enum(MessageStatus, "ck_messages_status"))
    reason: str | None = _optional(sa.Text)  # why it reached its current status
    source_block_number: int = _column(sa.BigInteger)
    source_block_hash: str = _column(sa.String(_HASH))
    source_tx_hash: str = _column(sa.String(_HASH))
    log_index: int = _column(sa.BigInteger)  # position of the event within its block
    checkpoint_id: int | None = _optional(
        _ID, sa.ForeignKey("checkpoints.id", name="fk_messages_checkpoint")
    )
    delivery_tx_hash: str | None = _optional(sa.String(_HASH))  # latest carrier, or deliverer
    attempts: int = _column(sa.Integer, default=0)  # times it entered ``submitted``
    next_attempt_at: float | None = _optional(sa.Float)  # set only while ``failed``
    created_at: float = _column(sa.Float)
    updated_at: float = _column(sa.Float)

    @property
    def body(self) -> bytes:
        """The application payload (the message after its 77-byte header)."""
        return self.message[HEADER_SIZE:]


class CursorRecord(_LedgerModel, table=True):
    """How far a chain has been scanned (table ``scan_cursors``), per domain and stream."""

    __tablename__ = "scan_cursors"

    domain: int = _column(sa.BigInteger, primary_key=True)
    stream: str = _column(sa.String(32), primary_key=True)  # "outbox", or another event feed
    next_block: int = _column(sa.BigInteger)  # first block not yet scanned
    last_block_hash: str | None = _optional(sa.String(_HASH))  # hash of block next_block - 1
    updated_at: float = _column(sa.Float)


class CheckpointRecord(_LedgerModel, table=True):
    """An outbox checkpoint ``(origin, outbox, root, index)`` (table ``checkpoints``)."""

    __tablename__ = "checkpoints"
    __table_args__ = (
        sa.UniqueConstraint("origin", "outbox", "index", name="uq_checkpoints_origin_outbox_index"),
        sa.Index("ix_checkpoints_source_block", "origin", "source_block_number"),
    )

    id: int | None = _id_column()
    origin: int = _column(sa.BigInteger)
    outbox: str = _column(sa.String(_HASH))
    root: str = _column(sa.String(_HASH))
    index: int = _column(sa.BigInteger)  # count - 1
    source_block_number: int = _column(sa.BigInteger)  # block whose state proved root/count
    source_block_hash: str = _column(sa.String(_HASH))
    created_at: float = _column(sa.Float)


class SignatureRecord(_LedgerModel, table=True):
    """One attester's signature over a checkpoint (table ``checkpoint_signatures``)."""

    __tablename__ = "checkpoint_signatures"
    __table_args__ = (
        sa.UniqueConstraint("checkpoint_id", "signer", name="uq_signatures_checkpoint_signer"),
    )

    id: int | None = _id_column()
    checkpoint_id: int = _column(
        _ID, sa.ForeignKey("checkpoints.id", name="fk_signatures_checkpoint"), index=True
    )
    signer: str = _column(sa.String(_ADDRESS))
    signature: bytes = _column(sa.LargeBinary)  # r ‖ s ‖ v, 65 bytes
    created_at: float = _column(sa.Float)


class TransactionRecord(_LedgerModel, table=True):
    """A delivery transaction the relayer submitted (table ``transactions``)."""

    __tablename__ = "transactions"
    __table_args__ = (
        sa.UniqueConstraint("chain", "hash", name="uq_transactions_chain_hash"),
        sa.Index("ix_transactions_chain_status", "chain", "status"),
        sa.Index("ix_transactions_chain_sender_nonce", "chain", "sender", "nonce"),
    )

    id: int | None = _id_column()
    chain: int = _column(sa.BigInteger)  # destination domain
    hash: str = _column(sa.String(_HASH))
    sender: str = _column(sa.String(_HASH))
    nonce: int = _column(sa.BigInteger)
    gas_limit: int | None = _optional(sa.BigInteger)
    max_fee_per_gas: int | None = _optional(_Wei())
    max_priority_fee_per_gas: int | None = _optional(_Wei())
    status: TxStatus = _column(_enum(TxStatus, "ck_transactions_status"))
    submitted_at: float = _column(sa.Float)
    confirmed_at: float | None = _optional(sa.Float)  # when its outcome was recorded
    block_number: int | None = _optional(sa.BigInteger)
    gas_used: int | None = _optional(sa.BigInteger)
    effective_gas_price: int | None = _optional(_Wei())
    fee_paid: int | None = _optional(_Wei())
    replaces: str | None = _optional(sa.String(_HASH))
    replaced_by: str | None = _optional(sa.String(_HASH))
    error: str | None = _optional(sa.Text)
    updated_at: float = _column(sa.Float)


class MessageCount(_LedgerModel, table=True):
    """How many messages a route has in a status (table ``message_counts``, revision 0005).

    Kept by triggers on ``messages`` inside the transaction that changes them, so whoever
    writes (a relayer, an operator's command, a migration) keeps it right; nothing in Python
    writes it. :meth:`Ledger.counts_by_status` reads it instead of counting every message,
    which at a ledger of billions of delivered rows no poll or /metrics scrape could afford.
    """

    __tablename__ = "message_counts"

    origin: int = _column(sa.BigInteger, primary_key=True, autoincrement=False)
    destination: int = _column(sa.BigInteger, primary_key=True, autoincrement=False)
    status: str = _column(sa.String(16), primary_key=True)
    slot: int = _column(
        sa.BigInteger, primary_key=True, autoincrement=False, server_default=sa.text("0")
    )
    """Which writer counted here (revision 0006, :func:`count_slot`): a fenced write of one
    domain counts in its own slot, so writers of different domains never wait on one counter
    row. A slot's count may be negative (deliver:d counts the messages leaving ``attested``
    that collect:o counted in); only the sum over slots is a number of messages."""
    count: int = _column(sa.BigInteger)


class TransactionMessageLink(_LedgerModel, table=True):
    """Which messages a transaction carries (table ``transaction_messages``)."""

    __tablename__ = "transaction_messages"

    transaction_id: int = _column(
        _ID, sa.ForeignKey("transactions.id", name="fk_txmsg_transaction"), primary_key=True
    )
    message_id: str = _column(
        sa.String(_HASH),
        sa.ForeignKey("messages.id", name="fk_txmsg_message"),
        primary_key=True,
        index=True,
    )


class StatusEvent(_LedgerModel, table=True):
    """One status change (table ``status_events``): append-only, never updated or deleted.

    ``from_status`` is ``None`` when the message was first recorded, ``to_status`` is ``None``
    when a reorg removed it. There is deliberately no foreign key to ``messages``: the trail
    outlives the rows it describes.
    """

    __tablename__ = "status_events"
    # One message's trail newest first, as the backoffs read it (revision 0007).
    __table_args__ = (sa.Index("ix_status_events_message_id_id", "message_id", "id"),)

    id: int | None = _id_column()
    message_id: str = _column(sa.String(_HASH))
    from_status: MessageStatus | None = _optional(_enum(MessageStatus, "ck_events_from"))
    to_status: MessageStatus | None = _optional(_enum(MessageStatus, "ck_events_to"))
    reason: str | None = _optional(sa.Text)
    checkpoint_id: int | None = _optional(_ID)
    tx_hash: str | None = _optional(sa.String(_HASH))
    at: float = _column(sa.Float)


class LedgerMeta(_LedgerModel, table=True):
    """Key/value facts about the file itself (table ``ledger_meta``), e.g. ``schema_version``."""

    __tablename__ = "ledger_meta"

    key: str = _column(sa.String(64), primary_key=True)
    value: str = _column(sa.Text)


class LeaseRecord(_LedgerModel, table=True):
    """One share of the relaying work that several relayers divide (table ``leases``): who
    holds it, until when, and its fencing token (relayer/leases.py; docs/relayer.md, "Several
    relayers"). Times are the database's clock, so relayers on several machines agree."""

    __tablename__ = "leases"
    # Revision 0004: rows no relayer writes (a hostile database member's) are refused.
    __table_args__ = (
        sa.CheckConstraint("token >= 0 AND token < 9007199254740991", name="ck_leases_token"),
        sa.CheckConstraint("length(name) BETWEEN 1 AND 64", name="ck_leases_name"),
        sa.CheckConstraint(
            "holder IS NULL OR length(holder) BETWEEN 1 AND 128", name="ck_leases_holder"
        ),
        sa.CheckConstraint(
            "expires_at >= 0 AND expires_at < 100000000000 AND claimed_at >= 0 AND "
            "claimed_at < 100000000000 AND updated_at >= 0 AND updated_at < 100000000000",
            name="ck_leases_times",
        ),
    )

    name: str = _column(sa.String(64), primary_key=True)  # "scan:<domain>", "deliver:<domain>"…
    holder: str | None = _optional(sa.String(128))  # the relayer process holding it; None: free
    token: int = _column(sa.BigInteger)  # +1 for each new holder: what fences its writes
    expires_at: float = _column(sa.Float)  # free for the taking from then on, unless renewed
    claimed_at: float = _column(sa.Float)  # when the current token was handed out
    updated_at: float = _column(sa.Float)


class LeaseHolderRecord(_LedgerModel, table=True):
    """A relayer process taking part in leasing and when it last said so (table
    ``lease_holders``): the ones seen within a lease period divide the leases between them."""

    __tablename__ = "lease_holders"
    __table_args__ = (
        sa.CheckConstraint("length(holder) BETWEEN 1 AND 128", name="ck_lease_holders_holder"),
        sa.CheckConstraint(
            "seen_at >= 0 AND seen_at < 100000000000 AND started_at >= 0 AND "
            "started_at < 100000000000",
            name="ck_lease_holders_times",
        ),
    )

    holder: str = _column(sa.String(128), primary_key=True)
    seen_at: float = _column(sa.Float)
    started_at: float = _column(sa.Float)


_METADATA: Final = _LedgerModel.metadata
_MESSAGES: Final[sa.Table] = _METADATA.tables["messages"]
_EVENTS: Final[sa.Table] = _METADATA.tables["status_events"]
_LINKS: Final[sa.Table] = _METADATA.tables["transaction_messages"]
_LEASES: Final[sa.Table] = _METADATA.tables["leases"]

LEDGER_TABLES: Final = frozenset(_METADATA.tables)
"""The ledger's tables. Another store (the PostgreSQL checkpoint store) may share the database:
its tables are neither the ledger's business nor a sign that the database is not empty.
The tables, their constraints and the append-only triggers on ``status_events`` are created by
the Alembic revisions in :data:`MIGRATIONS_DIR`, never from these models directly."""

_V1_TABLES: Final = LEDGER_TABLES - {"leases", "lease_holders", "message_counts"}
"""Revision 0001's tables: exactly what a ledger made before migrations holds."""


# --------------------------------------------------------------------------------------------
# Fencing: writes that count only while their writer holds a lease


@dataclass(frozen=True, slots=True)
class Fence:
    """The lease a relayer's task holds (relayer/leases.py): its ``name``, the ``holder`` (the
    relayer process) and the ``token`` handed out when that holder took it."""

    name: str
    holder: str
    token: int


_FENCE: Final[contextvars.ContextVar[Fence | None]] = contextvars.ContextVar(
    "passerelle_ledger_fence", default=None
)


@contextmanager
def fenced_by(fence: Fence) -> Iterator[None]:
    """Fence every ledger write made in this context by ``fence``: each write transaction first
    checks, inside itself, that the lease row still has ``fence``'s holder and token, and raises
    :class:`LeaseLost` (writing nothing) if not. So a relayer that paused past its lease — a
    stop of the process, a stalled thread, a network partition — cannot record over the
    relayer that took the lease over.

    A context variable, not an argument, so that no write of the task can forget it: trio gives
    each task a copy of its parent's context and ``trio.to_thread.run_sync`` runs the function
    in a copy of the caller's, so the writes of the task, of the tasks it starts and of the
    worker threads they call are all fenced — including the chain families' own writes, which
    know nothing of leases. A relayer that leases sets :attr:`Ledger.require_fence` too: a write
    from outside every lease then fails instead of slipping through unfenced."""
    token = _FENCE.set(fence)
    try:
        yield
    finally:
        _FENCE.reset(token)


# The two-key advisory lock space (``pg_advisory_xact_lock(int4, int4)``, shown in pg_locks
# with objsubid 2) is disjoint from the one-bigint space of _PG_LOCK_KEY and _PG_USE_KEY, so a
# domain lock can never be mistaken for the ledger-wide one.
_PG_ORIGIN_SPACE: Final = 0x70736F72  # "psor": the rows of one origin (scan:, collect:)
_PG_DESTINATION_SPACE: Final = 0x70736465  # "psde": the rows of one destination (deliver:)
_LOCK_SPACES: Final[Mapping[str, int]] = MappingProxyType(
    {"scan": _PG_ORIGIN_SPACE, "collect": _PG_ORIGIN_SPACE, "deliver": _PG_DESTINATION_SPACE}
)


def lease_scope(lease_name: str) -> tuple[str, int] | None:
    """The rows a write fenced by lease ``lease_name`` may touch: ``("origin", o)`` for
    ``scan:o`` and ``collect:o``, ``("destination", d)`` for ``deliver:d``; None for a lease
    without a domain (``unpaid``, or a name this code does not know), whose writes take the
    whole ledger (:func:`write_domain`) and may touch any row.

    The ledger enforces it (:class:`WriteOutsideDomain`): the domain locks below serialise a
    domain's writers only, so a write outside its domain — a relayer whose configuration gives
    a chain the wrong domain id — would race the writer that holds the right lease."""
    kind, colon, domain = lease_name.partition(":")
    if kind not in _LOCK_SPACES or not colon or not (domain.isascii() and domain.isdigit()):
        return None
    value = int(domain)
    if value >= 2**32:
        return None
    return ("destination" if kind == "deliver" else "origin"), value


def count_slot(lease_name: str | None) -> int:
    """The ``message_counts`` slot (revision 0006) the writes of lease ``lease_name`` count in:
    its domain lock's two keys as one bigint, unique per domain; 0 for writes without a domain
    (unfenced, ``unpaid``), which hold the ledger-wide lock exclusively anyway.

    Why slots: collect:o and deliver:d both change the count of route (o, d) in ``attested``.
    Counted in one row, the two writers' transactions met on that row's lock and took turns
    (and four of them on crossing routes could deadlock); each counting in its own slot, they
    never touch the same counter row, and a reader sums the slots."""
    scope = None if lease_name is None else lease_scope(lease_name)
    if scope is None:
        return 0
    kind = "deliver" if scope[0] == "destination" else "scan"
    return _LOCK_SPACES[kind] * 2**32 + scope[1]


def write_domain(lease_name: str) -> tuple[int, int] | None:
    """The advisory lock (two int4 keys) a PostgreSQL write fenced by lease ``lease_name``
    takes exclusively, beside the ledger-wide lock taken SHARED; None when the lease has no
    domain of its own (``unpaid``, which moves messages of every route, or any name this code
    does not know), and its writes take the ledger-wide lock EXCLUSIVE like an unfenced one.

    Why these domains: a task writes only its own domain's rows (relayer/relay.py): ``scan:o``
    inserts origin ``o``'s messages and moves them to ``final`` (``invalidate_above`` deletes
    them and ``o``'s unsigned checkpoints), ``collect:o`` stores ``o``'s checkpoints and moves
    its ``final`` messages to ``attested``, ``deliver:d`` moves destination ``d``'s
    ``attested`` / ``submitted`` / ``failed`` messages on and writes chain ``d``'s transactions.
    Scan and collect of one origin share rows (a reorg's delete against an attestation), so they
    share one lock; a destination's rows meet an origin's only at the hand-over (``attested``),
    which row locks order (the message rows are read ``FOR UPDATE`` in
    :func:`_apply_transition`). Two names of one domain (``scan:1``, ``scan:01``) share a lock:
    more waiting, never less safety. A domain outside uint32 gets no lock of its own."""
    scope = lease_scope(lease_name)
    if scope is None:
        return None
    space = _LOCK_SPACES["deliver" if scope[0] == "destination" else "scan"]
    value = scope[1]
    return space, value - 2**32 if value >= 2**31 else value  # int4 is signed


def _pg_write_locks(connection: sa.Connection, fence: Fence | None) -> None:
    """Take a PostgreSQL write transaction's advisory locks, in ONE round trip (it is on every
    write's path): the ledger-wide lock shared plus the fence's domain lock, or the ledger-wide
    lock exclusive (unfenced writes: operators, migrations; and leases without a domain).

    Always in that order, global before domain, and one domain per transaction: a writer
    holding a domain lock while queued for the global one could wait behind an exclusive
    writer that waits for it. The order is forced by the derived table (``OFFSET 0`` keeps the
    planner from merging it): the outer lock is evaluated only on the row the inner one
    produced, whereas the order of a select list's items is not something SQL promises.

    The same statement sets the transaction's ``passerelle.count_slot`` (:func:`count_slot`),
    which the ``message_counts`` trigger reads: no extra round trip. Writes without a domain
    leave it unset (a transaction-local setting ends with its transaction): slot 0."""
    domain = None if fence is None else write_domain(fence.name)
    if domain is None or fence is None:
        connection.execute(sa.select(func.pg_advisory_xact_lock(_PG_LOCK_KEY)))
        return
    connection.execute(
        sa.text(
            "SELECT pg_advisory_xact_lock(CAST(:space AS integer), CAST(:key AS integer)), "
            "set_config('passerelle.count_slot', CAST(:slot AS text), true) "
            "FROM (SELECT pg_advisory_xact_lock_shared(CAST(:ledger AS bigint)) OFFSET 0) "
            "AS ledger_wide"
        ),
        {
            "space": domain[0],
            "key": domain[1],
            "ledger": _PG_LOCK_KEY,
            "slot": str(count_slot(fence.name)),
        },
    )


_SCOPE_INFO: Final = "passerelle_write_scope"
"""``Session.info`` key: (lease name, its :func:`lease_scope`) of a fenced write transaction."""


def _in_domain(session: Session, side: str, domain: int, what: str) -> None:
    """:class:`WriteOutsideDomain` unless this write transaction's lease may write rows whose
    ``side`` ("origin" or "destination") is ``domain``; ``what`` names the row, for the one
    line. Unfenced writes and leases without a domain may write anything (they hold the whole
    ledger)."""
    scope = _transition_scope(session)
    if scope is not None and scope[1:] != (side, domain):
        raise WriteOutsideDomain(
            f"write outside lease {scope[0]}'s domain ({scope[1]} {scope[2]}): {what}; "
            "is a chain's domain id in the configuration not the chain's own?"
        )


def _transition_scope(session: Session) -> tuple[str, str, int] | None:
    """(lease name, side, domain) a transition's rows must match: a message's origin for
    scan/collect, its destination for deliver; None when any row may move."""
    fenced: tuple[str, tuple[str, int] | None] | None = session.info.get(_SCOPE_INFO)
    if fenced is None or fenced[1] is None:
        return None
    return fenced[0], fenced[1][0], fenced[1][1]


def _check_fence(connection: sa.Connection, fence: Fence) -> None:
    """Inside the write transaction: still ``fence``'s lease, or :class:`LeaseLost`.

    An UPDATE rather than a SELECT: it takes the lease row's lock until the transaction ends,
    so on PostgreSQL a takeover (which locks the row to hand out the next token) either
    happened before — and this matches no row — or waits until this write has committed. On
    SQLite the write lock (``BEGIN IMMEDIATE``) already orders the two."""
    lease = _LEASES.c
    matched = connection.execute(
        sa.update(_LEASES)
        .where(
            lease.name == fence.name,
            lease.holder == fence.holder,
            lease.token == fence.token,
        )
        .values(token=lease.token)
    ).rowcount
    if matched != 1:
        raise LeaseLost(fence)


# --------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True, slots=True)
class NewTransaction:
    """A delivery transaction to record (before broadcasting it: see ``record_transaction``)."""

    chain: int
    hash: bytes | str
    sender: bytes | str
    nonce: int
    gas_limit: int | None = None
    max_fee_per_gas: int | None = None
    max_priority_fee_per_gas: int | None = None
    replaces: bytes | str | None = None  # hash of the pending transaction this one replaces


# --------------------------------------------------------------------------------------------
# Helpers


def _hex(value: bytes | bytearray | memoryview | str, size: int | None, what: str) -> str:
    """Normalise bytes or 0x-hex to lowercase 0x-hex, checking the byte length if given."""
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
    elif isinstance(value, str):
        if not value.startswith(("0x", "0X")):
            raise ValueError(f"{what} must be 0x-prefixed hex, got {value!r}")
        try:
            raw = bytes.fromhex(value[2:])
        except ValueError:
            raise ValueError(f"{what} is not valid hex: {value!r}") from None
    else:
        raise TypeError(f"{what} must be bytes or a hex string, not {type(value).__name__}")
    if size is not None and len(raw) != size:
        raise ValueError(f"{what} must be {size} bytes, got {len(raw)}")
    if not raw:
        raise ValueError(f"{what} is empty")
    return "0x" + raw.hex()


def _uint(value: int, what: str, bits: int = 63) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**bits:
        raise ValueError(f"{what} must be an integer in [0, 2**{bits}), got {value!r}")
    return value


def _wei(value: int | None, what: str) -> int | None:
    return None if value is None else _uint(value, what, 256)


def _dedupe(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _chunks(items: Sequence[Any], size: int = _IN_CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _is_corruption(error: BaseException) -> bool:
    text = str(error).lower()
    return any(
        marker in text for marker in ("not a database", "malformed", "corrupt", "disk image")
    )


def _is_busy(error: BaseException) -> bool:
    """SQLite's "database is locked"/"busy", or PostgreSQL's lock timeout (SQLSTATE 55P03) or
    statement timeout (57014: :attr:`Ledger.write_timeout`, a write that waited too long)."""
    text = str(error).lower()
    if getattr(getattr(error, "orig", None), "sqlstate", None) in ("55P03", "57014"):
        return True
    return "locked" in text or "busy" in text or "lock timeout" in text


# --------------------------------------------------------------------------------------------
# Operations shared by the ledger and by an atomic batch


def _id_set(ids: Sequence[str], *, postgres: bool) -> sa.Select[tuple[str]]:
    """``SELECT value FROM <ids>``: message ids as a set the database builds from one bound
    parameter (a JSON array of strings), for ``id NOT IN (...)`` whatever their number.

    Every element is a string, never NULL: ``x NOT IN (a set with a NULL)`` is never true,
    and one NULL would silently hide every row."""
    array = sa.bindparam("excluded_ids", json.dumps(list(ids)), type_=sa.String)
    if postgres:
        unpacked = func.jsonb_array_elements_text(sa.cast(array, postgresql.JSONB))
    else:
        unpacked = func.json_each(array)
    values = unpacked.table_valued("value")
    return sa.select(values.c.value)


class _Operations:
    """Every ledger operation, written once against "a write session" and "a read session".

    :class:`Ledger` opens one transaction per call; :class:`LedgerBatch` runs every call inside
    the single transaction of :meth:`Ledger.atomic`.
    """

    clock: Callable[[], float]
    _postgres: bool

    def _writing(self) -> AbstractContextManager[Session]:
        raise NotImplementedError

    def _reading(self) -> AbstractContextManager[Session]:
        raise NotImplementedError

    # ---- messages --------------------------------------------------------------------------

    def record_discovered(self, records: Iterable[DiscoveredMessage]) -> int:
        """Insert newly seen messages; return how many were new.

        Idempotent: a message whose id is already stored is ignored, whatever its status. The
        same ``(origin, nonce)`` under a different id (in the ledger or within ``records``) is a
        reorg or an equivocating source: :class:`LedgerConflict` is raised and nothing is
        written, because overwriting would silently drop a message (T16, T21).
        """
        parsed: dict[str, dict[str, Any]] = {}
        by_key: dict[tuple[int, int], str] = {}
        conflicts: list[str] = []
        now = self.clock()
        for record in records:
            row = _parse_discovery(record, now)
            key = (row["origin"], row["nonce"])
            if by_key.setdefault(key, row["id"]) != row["id"]:
                conflicts.append(
                    f"origin {key[0]} nonce {key[1]}: {by_key[key]} and {row['id']} in one batch"
                )
            parsed.setdefault(row["id"], row)
        if conflicts:
            raise LedgerConflict("two messages claim one (origin, nonce)", conflicts)
        if not parsed:
            return 0
        with self._writing() as session:
            for row in parsed.values():
                _in_domain(
                    session,
                    "origin",
                    row["origin"],
                    f"message {row['id']} has origin {row['origin']}",
                )
            existing: set[str] = set()
            for chunk in _chunks(list(parsed)):
                existing.update(
                    session.exec(select(MessageRecord.id).where(col(MessageRecord.id).in_(chunk)))
                )
            fresh = [row for mid, row in parsed.items() if mid not in existing]
            nonces_by_origin: dict[int, list[int]] = {}
            for row in fresh:
                nonces_by_origin.setdefault(row["origin"], []).append(row["nonce"])
            for origin, nonces in nonces_by_origin.items():
                for chunk in _chunks(nonces):
                    stored = session.exec(
                        select(MessageRecord.nonce, MessageRecord.id).where(
                            MessageRecord.origin == origin, col(MessageRecord.nonce).in_(chunk)
                        )
                    )
                    for nonce, stored_id in stored:
                        conflicts.append(
                            f"origin {origin} nonce {nonce}: stored {stored_id}, "
                            f"new {by_key[(origin, nonce)]}"
                        )
            if conflicts:
                raise LedgerConflict("two messages claim one (origin, nonce)", conflicts)
            if fresh:
                connection = session.connection()
                connection.execute(sa.insert(_MESSAGES), fresh)
                connection.execute(
                    sa.insert(_EVENTS),
                    [
                        {
                            "message_id": row["id"],
                            "from_status": None,
                            "to_status": MessageStatus.DISCOVERED,
                            "reason": None,
                            "checkpoint_id": None,
                            "tx_hash": None,
                            "at": now,
                        }
                        for row in fresh
                    ],
                )
            return len(fresh)

    def transition(
        self,
        ids: Iterable[bytes | str],
        to: MessageStatus,
        *,
        reason: str | None = None,
        checkpoint_id: int | None = None,
        tx_hash: bytes | str | None = None,
        retry_at: float | None = None,
    ) -> list[str]:
        """Move messages to status ``to`` in one transaction; return the ids that changed.

        All or nothing: if any id is unknown (:class:`UnknownRecord`), any move is not in
        :data:`TRANSITIONS` (:class:`IllegalTransition`) or a reference does not fit
        (:class:`InvalidReference`), nothing is written. Ids already in ``to`` are skipped
        (idempotent). What each target needs:

        - ``attested``: ``checkpoint_id`` of a stored checkpoint of the message's origin whose
          index covers its nonce (optional when the message already has one, e.g. on retry);
        - ``submitted``: ``tx_hash`` of a recorded pending transaction on the message's
          destination (see :meth:`record_transaction`, which does both in one step);
        - ``delivered``: optionally the ``tx_hash`` that delivered it (ours or anyone's);
        - ``failed``: a ``reason``, and ``retry_at`` (clock time) if it should be retried
          automatically (see :meth:`due_for_retry`);
        - ``skipped``, and ``discovered`` (an operator re-queueing a skipped message): a reason.
        """
        target = MessageStatus(to)
        wanted = _dedupe(_hex(i, 32, "message id") for i in ids)
        tx = None if tx_hash is None else _hex(tx_hash, 32, "transaction hash")
        _check_transition_arguments(target, reason, checkpoint_id, tx, retry_at)
        if not wanted:
            return []
        with self._writing() as session:
            return _apply_transition(
                session,
                now=self.clock(),
                ids=wanted,
                to=target,
                reason=reason,
                checkpoint_id=checkpoint_id,
                tx_hash=tx,
                retry_at=retry_at,
            )

    def invalidate_above(
        self,
        origin: int,
        block_number: int,
        block_hash: bytes | str,
        *,
        stream: str = _DEFAULT_STREAM,
        reason: str | None = None,
    ) -> list[str]:
        """Forget what came from orphaned blocks of ``origin``; return the removed message ids.

        ``block_number`` is the newest block still canonical (the common ancestor) and
        ``block_hash`` its hash. In one transaction: messages from later blocks that were never
        attested (discovered, final, or skipped before attestation) are deleted, with an audit
        row each, so a re-scan records the new canonical messages afresh; unsigned checkpoints
        proven at later blocks are deleted; the ``stream`` cursor is rewound to
        ``block_number + 1`` if it was beyond.

        If anything from those blocks was already attested, submitted, failed (after attestation)
        or delivered, or a later checkpoint carries signatures or is referenced, nothing is
        changed and :class:`LedgerConflict` is raised: the committee has signed, or the
        destination acted on, history that no longer exists. That is the "halt and report"
        case of T21: only a person can decide what to do about it.
        """
        _uint(origin, "origin", 32)
        _uint(block_number, "block number")
        anchor = _hex(block_hash, 32, "block hash")
        why = reason or f"reorg: origin {origin} blocks after {block_number} ({anchor}) orphaned"
        now = self.clock()
        with self._writing() as session:
            _in_domain(session, "origin", origin, f"forgetting origin {origin}'s orphaned blocks")
            orphans = session.exec(
                select(MessageRecord).where(
                    MessageRecord.origin == origin,
                    col(MessageRecord.source_block_number) > block_number,
                )
            ).all()
            checkpoints = session.exec(
                select(CheckpointRecord).where(
                    CheckpointRecord.origin == origin,
                    col(CheckpointRecord.source_block_number) > block_number,
                )
            ).all()
            conflicts = [
                f"message {row.id} (nonce {row.nonce}, block {row.source_block_number}) "
                f"is {row.status}" + ("" if row.checkpoint_id is None else " and attested")
                for row in orphans
                if row.status not in _DROPPABLE or row.checkpoint_id is not None
            ]
            for cp in checkpoints:
                signed = session.exec(
                    select(func.count()).where(SignatureRecord.checkpoint_id == cp.id)
                ).one()
                used = session.exec(
                    select(func.count()).where(MessageRecord.checkpoint_id == cp.id)
                ).one()
                if signed or used:
                    conflicts.append(
                        f"checkpoint {cp.id} (index {cp.index}, root {cp.root}, block "
                        f"{cp.source_block_number}) has {signed} signatures, {used} messages"
                    )
            if conflicts:
                raise LedgerConflict(
                    f"reorg of origin {origin} below block {block_number + 1} orphans "
                    "attested state; halting",
                    conflicts,
                )
            removed = [row.id for row in orphans]
            for chunk in _chunks(removed):
                session.exec(
                    delete(TransactionMessageLink).where(
                        col(TransactionMessageLink.message_id).in_(chunk)
                    )
                )
            for row in orphans:
                session.add(
                    StatusEvent(
                        message_id=row.id,
                        from_status=row.status,
                        to_status=None,
                        reason=why,
                        at=now,
                    )
                )
                session.delete(row)
            for cp in checkpoints:
                session.delete(cp)
            cursor = session.get(CursorRecord, (origin, stream))
            if cursor is not None and cursor.next_block > block_number + 1:
                cursor.next_block = block_number + 1
                cursor.last_block_hash = anchor
                cursor.updated_at = now
                session.add(cursor)
            session.flush()
            return removed

    # ---- checkpoints -----------------------------------------------------------------------

    def save_checkpoint(
        self,
        origin: int,
        outbox: bytes | str,
        root: bytes | str,
        index: int,
        *,
        block_number: int,
        block_hash: bytes | str,
    ) -> int:
        """Store a checkpoint (or find the identical one); return its id.

        A different root at the same ``(origin, outbox, index)`` raises :class:`LedgerConflict`:
        two histories of one outbox means a reorg below finality or an equivocating committee.
        """
        row = CheckpointRecord(
            origin=_uint(origin, "origin", 32),
            outbox=_hex(outbox, 32, "outbox"),
            root=_hex(root, 32, "root"),
            index=_uint(index, "index", 32),
            source_block_number=_uint(block_number, "block number"),
            source_block_hash=_hex(block_hash, 32, "block hash"),
            created_at=self.clock(),
        )
        with self._writing() as session:
            _in_domain(session, "origin", row.origin, f"a checkpoint of origin {row.origin}")
            stored = session.exec(
                select(CheckpointRecord).where(
                    CheckpointRecord.origin == row.origin,
                    CheckpointRecord.outbox == row.outbox,
                    CheckpointRecord.index == row.index,
                )
            ).first()
            if stored is not None:
                if stored.root != row.root:
                    raise LedgerConflict(
                        f"checkpoint conflict for origin {row.origin} outbox {row.outbox} "
                        f"index {row.index}",
                        [f"stored root {stored.root}, new root {row.root}"],
                    )
                assert stored.id is not None
                return stored.id
            session.add(row)
            session.flush()
            assert row.id is not None
            return row.id

    def add_signature(self, checkpoint_id: int, signer: bytes | str, signature: bytes) -> bool:
        """Store one attester's 65-byte signature; return False if that signer already has one.

        The ledger does not verify signatures: store only what the committee light client
        accepted. The first signature stored for a signer is kept.
        """
        signer_hex = _hex(signer, 20, "signer address")
        if not isinstance(signature, bytes | bytearray) or len(signature) != 65:
            raise ValueError("a signature is exactly 65 bytes (r ‖ s ‖ v)")
        with self._writing() as session:
            checkpoint = session.get(CheckpointRecord, checkpoint_id)
            if checkpoint is None:
                raise UnknownRecord("checkpoint", [checkpoint_id])
            _in_domain(
                session,
                "origin",
                checkpoint.origin,
                f"a signature on checkpoint {checkpoint_id} of origin {checkpoint.origin}",
            )
            stored = session.exec(
                select(SignatureRecord.id).where(
                    SignatureRecord.checkpoint_id == checkpoint_id,
                    SignatureRecord.signer == signer_hex,
                )
            ).first()
            if stored is not None:
                return False
            session.add(
                SignatureRecord(
                    checkpoint_id=checkpoint_id,
                    signer=signer_hex,
                    signature=bytes(signature),
                    created_at=self.clock(),
                )
            )
            session.flush()
            return True

    # ---- transactions ----------------------------------------------------------------------

    def record_transaction(
        self, tx: NewTransaction, message_ids: Iterable[bytes | str] = ()
    ) -> TransactionRecord:
        """Record a delivery transaction and move ``message_ids`` to ``submitted`` in it.

        One database transaction, so there is never a pending transaction without its messages
        or a submitted message without its transaction. Record it before broadcasting (its hash
        is known once signed): after a crash the relayer then finds it and asks the chain,
        instead of forgetting a transaction that may land. Idempotent for the same
        ``(chain, hash)``. With ``tx.replaces``, the replaced transaction is marked ``replaced``.
        A transaction recorded again after it was marked ``failed`` without a block (its
        broadcast refused) is ``pending`` again: the same signed bytes are being sent once more.
        """
        chain = _uint(tx.chain, "chain", 32)
        tx_hash = _hex(tx.hash, 32, "transaction hash")
        replaces = None if tx.replaces is None else _hex(tx.replaces, 32, "replaced hash")
        if replaces == tx_hash:
            raise ValueError("a transaction cannot replace itself")
        ids = _dedupe(_hex(i, 32, "message id") for i in message_ids)
        now = self.clock()
        with self._writing() as session:
            _in_domain(session, "destination", chain, f"a transaction on chain {chain}")
            row = _find_tx(session, chain, tx_hash)
            if row is None:
                if replaces is not None:
                    old = _find_tx(session, chain, replaces)
                    if old is None:
                        raise UnknownRecord("transaction", [f"{chain}:{replaces}"])
                    _move_tx(old, TxStatus.REPLACED, now)
                    old.replaced_by = tx_hash
                    session.add(old)
                row = TransactionRecord(
                    chain=chain,
                    hash=tx_hash,
                    sender=_hex(tx.sender, None, "sender"),
                    nonce=_uint(tx.nonce, "nonce"),
                    gas_limit=None if tx.gas_limit is None else _uint(tx.gas_limit, "gas limit"),
                    max_fee_per_gas=_wei(tx.max_fee_per_gas, "max fee per gas"),
                    max_priority_fee_per_gas=_wei(tx.max_priority_fee_per_gas, "priority fee"),
                    status=TxStatus.PENDING,
                    submitted_at=now,
                    replaces=replaces,
                    updated_at=now,
                )
                session.add(row)
                session.flush()
            elif row.status is TxStatus.FAILED and row.block_number is None:
                # Refused at broadcast (or not found after a restart), never in a block: its
                # nonce is unused, and the next round signs the same batch at the same nonce and,
                # on a quiet chain, the same fees: byte for byte this transaction again. It is
                # pending once more; refusing it here wedged the lane until the fees moved.
                row.status = TxStatus.PENDING
                row.error = None
                row.confirmed_at = None
                row.submitted_at = now
                row.updated_at = now
                session.add(row)
                session.flush()
            if ids:
                _apply_transition(
                    session,
                    now=now,
                    ids=ids,
                    to=MessageStatus.SUBMITTED,
                    reason=None,
                    checkpoint_id=None,
                    tx_hash=tx_hash,
                    retry_at=None,
                )
            return row

    def update_transaction(
        self,
        chain: int,
        tx_hash: bytes | str,
        status: TxStatus,
        *,
        block_number: int | None = None,
        gas_used: int | None = None,
        effective_gas_price: int | None = None,
        fee_paid: int | None = None,
        error: str | None = None,
        replaced_by: bytes | str | None = None,
    ) -> TransactionRecord:
        """Record a transaction's outcome (status per :data:`TX_TRANSITIONS`, receipt fields).

        Messages are not moved here: a batch can deliver some and fail others, so move them with
        :meth:`transition`, inside the same :meth:`Ledger.atomic` block to keep it one commit.
        """
        target = TxStatus(status)
        chain = _uint(chain, "chain", 32)
        hash_hex = _hex(tx_hash, 32, "transaction hash")
        now = self.clock()
        with self._writing() as session:
            _in_domain(session, "destination", chain, f"a transaction on chain {chain}")
            row = _find_tx(session, chain, hash_hex)
            if row is None:
                raise UnknownRecord("transaction", [f"{chain}:{hash_hex}"])
            _move_tx(row, target, now)
            if block_number is not None:
                row.block_number = _uint(block_number, "block number")
            if gas_used is not None:
                row.gas_used = _uint(gas_used, "gas used")
            if effective_gas_price is not None:
                row.effective_gas_price = _wei(effective_gas_price, "effective gas price")
            if fee_paid is not None:
                row.fee_paid = _wei(fee_paid, "fee paid")
            if error is not None:
                row.error = error
            if replaced_by is not None:
                row.replaced_by = _hex(replaced_by, 32, "replacement hash")
            session.add(row)
            session.flush()
            return row

    # ---- cursors ---------------------------------------------------------------------------

    def set_cursor(
        self,
        domain: int,
        next_block: int,
        last_block_hash: bytes | str | None,
        *,
        stream: str = _DEFAULT_STREAM,
    ) -> None:
        """Record that ``domain`` is scanned up to ``next_block - 1``, whose hash is given.

        Keep the hash: a later scan that finds a different hash at that height has found a
        reorg below the cursor (call :meth:`invalidate_above`). Call this in the same
        :meth:`Ledger.atomic` block as the :meth:`record_discovered` of those blocks.
        """
        _uint(domain, "domain", 32)
        _uint(next_block, "next block")
        last = None if last_block_hash is None else _hex(last_block_hash, 32, "block hash")
        with self._writing() as session:
            _in_domain(session, "origin", domain, f"the {stream} cursor of domain {domain}")
            row = session.get(CursorRecord, (domain, stream))
            if row is None:
                row = CursorRecord(domain=domain, stream=stream, next_block=0, updated_at=0.0)
            row.next_block = next_block
            row.last_block_hash = last
            row.updated_at = self.clock()
            session.add(row)
            session.flush()

    def get_cursor(self, domain: int, *, stream: str = _DEFAULT_STREAM) -> CursorRecord | None:
        """Return the scan cursor of ``domain`` (and ``stream``), or None if never scanned."""
        with self._reading() as session:
            return session.get(CursorRecord, (domain, stream))

    # ---- queries ---------------------------------------------------------------------------

    def get(self, message_id: bytes | str) -> MessageRecord | None:
        """Return one message, or None."""
        with self._reading() as session:
            return session.get(MessageRecord, _hex(message_id, 32, "message id"))

    def by_status(
        self,
        status: MessageStatus,
        limit: int = 100,
        *,
        origin: int | None = None,
        destination: int | None = None,
        excluding: Iterable[str] = (),
    ) -> list[MessageRecord]:
        """Return up to ``limit`` messages in ``status``, oldest nonce first per origin, none of
        whose ids is in ``excluding``.

        ``excluding`` is left out by the database, not here: the Substrate delivery holds back
        every message of its live proposals (thousands in a burst), and reading them only to
        drop them was a tenth of the relayer's CPU (issue #12). The ids travel as ONE bound
        parameter, a JSON array the database unpacks (:func:`_id_set`), so no number of them
        meets a bind-parameter limit (SQLite's 32,766, PostgreSQL's 65,535), and the
        ``NOT IN`` over that set is a hash (PostgreSQL's hashed SubPlan) or a temporary
        b-tree (SQLite), built once per statement: linear in the set, never rows × set."""
        return self.messages(
            status=MessageStatus(status),
            origin=origin,
            destination=destination,
            limit=limit,
            excluding=excluding,
        )

    def due_for_retry(
        self, now: float | None = None, limit: int = 100, *, destination: int | None = None
    ) -> list[MessageRecord]:
        """Return failed messages whose ``next_attempt_at`` has come, the most overdue first."""
        when = self.clock() if now is None else now
        query = select(MessageRecord).where(
            MessageRecord.status == MessageStatus.FAILED,
            col(MessageRecord.next_attempt_at).is_not(None),
            col(MessageRecord.next_attempt_at) <= when,
        )
        if destination is not None:
            query = query.where(MessageRecord.destination == destination)
        query = query.order_by(col(MessageRecord.next_attempt_at), col(MessageRecord.id))
        with self._reading() as session:
            return list(session.exec(query.limit(limit)).all())

    def counts_by_status(
        self, *, origin: int | None = None, destination: int | None = None
    ) -> dict[MessageStatus, int]:
        """Return the number of messages in every status (zeros included), for metrics.

        Read from ``message_counts`` (:class:`MessageCount`): one row per route and status,
        so the cost is the number of routes, not of messages ever relayed."""
        query = select(MessageCount.status, func.sum(MessageCount.count)).group_by(
            col(MessageCount.status)
        )
        if origin is not None:
            query = query.where(MessageCount.origin == origin)
        if destination is not None:
            query = query.where(MessageCount.destination == destination)
        counts = dict.fromkeys(MessageStatus, 0)
        with self._reading() as session:
            for status, count in session.exec(query):
                if status in _STATUS_VALUES:  # a row no trigger writes is not a status we show
                    counts[MessageStatus(status)] = int(count)
        return counts

    def pending_by_route(self) -> list[tuple[int, int, int, float]]:
        """``(origin, destination, count, oldest created_at)`` of the messages not yet delivered
        or set aside (discovered, final, attested, submitted, failed), per route: the backlog and
        its age an operator alerts on."""
        waiting = (_S.DISCOVERED, _S.FINAL, _S.ATTESTED, _S.SUBMITTED, _S.FAILED)
        query = (
            select(
                MessageRecord.origin,
                MessageRecord.destination,
                func.count(),
                func.min(MessageRecord.created_at),
            )
            .where(col(MessageRecord.status).in_(waiting))
            .group_by(col(MessageRecord.origin), col(MessageRecord.destination))
        )
        with self._reading() as session:
            return [(int(o), int(d), int(n), float(t)) for o, d, n, t in session.exec(query)]

    def last_before_block(self, origin: int, block_number: int) -> MessageRecord | None:
        """The highest-nonce message of ``origin`` seen in a block below ``block_number``."""
        query = (
            select(MessageRecord)
            .where(MessageRecord.origin == origin)
            .where(col(MessageRecord.source_block_number) < block_number)
            .order_by(col(MessageRecord.nonce).desc())
            .limit(1)
        )
        with self._reading() as session:
            return session.exec(query).first()

    def messages(
        self,
        *,
        origin: int | None = None,
        destination: int | None = None,
        status: MessageStatus | None = None,
        after: tuple[int, int] | None = None,
        limit: int = 1000,
        excluding: Iterable[str] = (),
        ids: Iterable[str] | None = None,
    ) -> list[MessageRecord]:
        """List messages ordered by ``(origin, nonce)``, filtered; ``after`` pages by that key;
        none whose id is in ``excluding`` (left out by the database: :meth:`by_status`; ids as
        bytes or 0x-hex of 32 bytes, anything else one ValueError or TypeError line); with
        ``ids``, only those (the Substrate delivery's re-check of the messages it holds:
        one statement, the ids ONE bound JSON array as ``excluding``'s, whatever their
        number; ``excluding`` is then taken out of ``ids`` here, so it stays one parameter)."""
        query = select(MessageRecord)
        if isinstance(excluding, str | bytes):  # one id, which would be read char by char
            raise ValueError("excluding must be a collection of message ids, not one id")
        if isinstance(ids, str | bytes):
            raise ValueError("ids must be a collection of message ids, not one id")
        # Normalised as every other id the ledger takes: bytes or any-case hex match the stored
        # lowercase hex, and only ASCII hex reaches the JSON (SQLite and PostgreSQL alike).
        held = sorted({_hex(message_id, 32, "excluded message id") for message_id in excluding})
        if ids is not None:
            wanted = {_hex(message_id, 32, "message id") for message_id in ids}.difference(held)
            if not wanted:
                return []
            query = query.where(
                col(MessageRecord.id).in_(_id_set(sorted(wanted), postgres=self._postgres))
            )
        elif held:
            query = query.where(
                col(MessageRecord.id).not_in(_id_set(held, postgres=self._postgres))
            )
        if origin is not None:
            query = query.where(MessageRecord.origin == origin)
        if destination is not None:
            query = query.where(MessageRecord.destination == destination)
        if status is not None:
            query = query.where(MessageRecord.status == MessageStatus(status))
        if after is not None:
            after_origin, after_nonce = after
            if origin == after_origin:
                # The common page (one origin's next messages): a plain range on the nonce,
                # which every planner turns into an index range. The general OR below made
                # SQLite walk all of the origin's history on every follow() round.
                query = query.where(col(MessageRecord.nonce) > after_nonce)
            else:
                # A row-value comparison: one index range on (origin, nonce) on both databases.
                query = query.where(
                    sa.tuple_(col(MessageRecord.origin), col(MessageRecord.nonce))
                    > sa.tuple_(sa.literal(after_origin), sa.literal(after_nonce))
                )
        query = query.order_by(col(MessageRecord.origin), col(MessageRecord.nonce)).limit(limit)
        with self._reading() as session:
            return list(session.exec(query).all())

    def history(self, message_id: bytes | str) -> list[StatusEvent]:
        """Return the audit trail of one message, oldest first (it survives the message row)."""
        mid = _hex(message_id, 32, "message id")
        with self._reading() as session:
            return list(
                session.exec(
                    select(StatusEvent)
                    .where(StatusEvent.message_id == mid)
                    .order_by(col(StatusEvent.id))
                ).all()
            )

    def backoff_trail(
        self,
        message_id: bytes | str,
        failed_with: str,
        *,
        reset: str,
        newest: int,
        page: int = 64,
        walk: int = 1_024,
    ) -> list[StatusEvent]:
        """The events of one message's trail that a backoff counts, oldest first: its newest
        ``newest`` moves to ``failed`` whose reason starts with ``failed_with``, back to (and
        with) the newest event whose reason starts with ``reset`` (an operator's retry: the
        count starts over there), among the newest ``walk`` events of the trail.

        The trail is read newest first in pages of ``page`` events, ``WHERE message_id
        BETWEEN ? AND ? ORDER BY message_id DESC, id DESC LIMIT page`` (then ``AND id < (the
        page's last)``), and judged here, by the same exact ``startswith`` as the count
        (:func:`relayer.relay.recent_failures`). No reason in the SQL, because that made the
        plan the statistics' choice: with the filter, PostgreSQL estimated few matches and
        bitmap-read and sorted the message's whole trail (20,064 rows for one stuck a few
        weeks) at every count, inside the write transaction (review of F2SEAM, L1). A page in
        the order of the ``(message_id, id)`` index (revision 0007) is a backward walk of it
        on both databases, stopping at the limit, with fresh statistics or stale ones.

        Bounded: a trail only grows, and the count runs inside the write transaction (review
        of SEAM, M2). The usual trail alternates a counted failure with its re-queue, so one
        page holds 17 of them; other events between them (a node refusing the dry run, the
        old "newest 64 of any kind" missed reverts behind a minute of those: review of FSEAM,
        L2) take more pages, up to ``walk`` events. Past that the count is what those events
        hold, a lower bound: a message failing otherwise that often is already tried that
        often, so a shorter wait costs nothing more (where a node refusing every dry run
        writes ~2 events per 2 s, an unbounded walk read a day of them per count)."""
        if newest < 1 or page < 1 or walk < 1:
            raise ValueError(f"newest, page and walk must be at least 1: {newest}, {page}, {walk}")
        mid = _hex(message_id, 32, "message id")
        found: list[StatusEvent] = []
        read, last = 0, None
        with self._reading() as session:
            while read < walk:
                # ``BETWEEN mid AND mid``, not ``= mid``, and ordered by both of the index's
                # columns: with ``=``, PostgreSQL knows ``message_id`` is one value, drops it
                # from the order, and ``id DESC`` is the primary key's order too; with fresh
                # statistics it then walked the primary key back through every newer event of
                # the others (20,000 for a message 4 % of the table). A range keeps
                # ``message_id`` in the order, which only the ``(message_id, id)`` index gives
                # without sorting the whole trail (or the whole table).
                query = select(StatusEvent).where(col(StatusEvent.message_id).between(mid, mid))
                if last is not None:
                    query = query.where(col(StatusEvent.id) < last)
                limit = min(page, walk - read)
                newest_first = (col(StatusEvent.message_id).desc(), col(StatusEvent.id).desc())
                rows = session.exec(query.order_by(*newest_first).limit(limit)).all()
                for event in rows:
                    reason = event.reason or ""
                    if reason.startswith(reset):
                        found.append(event)
                        return found[::-1]
                    if event.to_status == MessageStatus.FAILED and reason.startswith(failed_with):
                        found.append(event)
                        if len(found) == newest:
                            return found[::-1]
                if len(rows) < limit:
                    break  # the trail's start
                read, last = read + len(rows), rows[-1].id
        return found[::-1]

    def get_checkpoint(self, checkpoint_id: int) -> CheckpointRecord | None:
        """Return one checkpoint, or None."""
        with self._reading() as session:
            return session.get(CheckpointRecord, checkpoint_id)

    def latest_checkpoint(
        self, origin: int, outbox: bytes | str | None = None
    ) -> CheckpointRecord | None:
        """Return the checkpoint of ``origin`` (and ``outbox``) with the highest index."""
        query = select(CheckpointRecord).where(CheckpointRecord.origin == origin)
        if outbox is not None:
            query = query.where(CheckpointRecord.outbox == _hex(outbox, 32, "outbox"))
        query = query.order_by(col(CheckpointRecord.index).desc()).limit(1)
        with self._reading() as session:
            return session.exec(query).first()

    def signatures(self, checkpoint_id: int) -> list[SignatureRecord]:
        """Return a checkpoint's signatures in ascending signer order (as inboxes require)."""
        with self._reading() as session:
            return list(
                session.exec(
                    select(SignatureRecord)
                    .where(SignatureRecord.checkpoint_id == checkpoint_id)
                    .order_by(col(SignatureRecord.signer))
                ).all()
            )

    def get_transaction(self, chain: int, tx_hash: bytes | str) -> TransactionRecord | None:
        """Return one recorded transaction, or None."""
        with self._reading() as session:
            return _find_tx(session, chain, _hex(tx_hash, 32, "transaction hash"))

    def transactions(
        self, *, chain: int | None = None, status: TxStatus | None = None, limit: int = 1000
    ) -> list[TransactionRecord]:
        """List recorded transactions, oldest first (e.g. the pending ones to re-check on start)."""
        query = select(TransactionRecord)
        if chain is not None:
            query = query.where(TransactionRecord.chain == chain)
        if status is not None:
            query = query.where(TransactionRecord.status == TxStatus(status))
        query = query.order_by(col(TransactionRecord.id)).limit(limit)
        with self._reading() as session:
            return list(session.exec(query).all())

    def transaction_messages(self, chain: int, tx_hash: bytes | str) -> list[str]:
        """Return the ids of the messages a recorded transaction carries."""
        hash_hex = _hex(tx_hash, 32, "transaction hash")
        with self._reading() as session:
            row = _find_tx(session, chain, hash_hex)
            if row is None:
                raise UnknownRecord("transaction", [f"{chain}:{hash_hex}"])
            return list(
                session.exec(
                    select(TransactionMessageLink.message_id)
                    .where(TransactionMessageLink.transaction_id == row.id)
                    .order_by(col(TransactionMessageLink.message_id))
                ).all()
            )

    def _mined_submitted(self, destination: int) -> sa.Select[Any]:
        """``submitted`` messages to ``destination`` joined to their carrier (the transaction
        of ``delivery_tx_hash`` on that chain) once it is ``confirmed`` (mined, recorded)."""
        tx = sa.inspect(TransactionRecord).local_table
        return (
            sa.select()
            .select_from(_MESSAGES)
            .join(
                tx,
                sa.and_(
                    tx.c.chain == _MESSAGES.c.destination,
                    tx.c.hash == _MESSAGES.c.delivery_tx_hash,
                ),
            )
            .where(
                _MESSAGES.c.status == _S.SUBMITTED,
                _MESSAGES.c.destination == destination,
                tx.c.status == TxStatus.CONFIRMED,
                tx.c.block_number.is_not(None),
            )
        )

    def lowest_mined_delivery(self, destination: int) -> int | None:
        """The lowest block holding the mined carrier of a ``submitted`` message to
        ``destination`` (None if no such message has one): whether anything can be final yet,
        in one aggregate, before the final block is asked of a node."""
        tx = sa.inspect(TransactionRecord).local_table
        query = self._mined_submitted(destination).add_columns(sa.func.min(tx.c.block_number))
        with self._reading() as session:
            lowest = session.connection().execute(query).scalar()
        return None if lowest is None else int(lowest)

    def settled_deliveries(
        self, destination: int, final_block: int, limit: int
    ) -> list[tuple[str, str, bytes]]:
        """``(carrier hash, message id, raw message)`` of up to ``limit`` ``submitted``
        messages to ``destination`` whose carrier is mined at or below ``final_block``, in
        ``(origin, nonce)`` order: what a delivery round may record final, and nothing else.

        Plain tuples from one join, not ORM rows: a round used to read a page of every
        ``submitted`` row (mostly in flight or not final yet) and then each carrier on its
        own."""
        tx = sa.inspect(TransactionRecord).local_table
        query = (
            self._mined_submitted(destination)
            .add_columns(tx.c.hash, _MESSAGES.c.id, _MESSAGES.c.message)
            .where(tx.c.block_number <= final_block)
            .order_by(_MESSAGES.c.origin, _MESSAGES.c.nonce)
            .limit(limit)
        )
        with self._reading() as session:
            rows = session.connection().execute(query).all()
        return [(str(h), str(i), bytes(m)) for h, i, m in rows]

    def verify_audit(self) -> list[str]:
        """Check the audit trail against the rows; return one line per problem (empty = sound).

        Each message's events must chain (``from`` = previous ``to``), follow
        :data:`TRANSITIONS` (plus recording, and removal of never-attested rows by a reorg),
        and end at the row's current status; a row must not exist without events.
        """
        problems: list[str] = []
        with self._reading() as session:
            current = dict(session.exec(select(MessageRecord.id, MessageRecord.status)).all())
            events = session.exec(
                select(StatusEvent.message_id, StatusEvent.from_status, StatusEvent.to_status)
                .order_by(col(StatusEvent.message_id), col(StatusEvent.id))
                .execution_options(yield_per=2000)
            )
            last: dict[str, MessageStatus | None] = {}
            for mid, raw_from, raw_to in events:
                frm, to = _status_or_none(raw_from), _status_or_none(raw_to)
                prev = last.get(mid)
                if frm != prev:
                    problems.append(f"{mid}: event from {frm} but previous state was {prev}")
                if not _audit_edge_ok(frm, to):
                    problems.append(f"{mid}: illegal recorded move {frm} -> {to}")
                last[mid] = to
        for mid, status in current.items():
            if mid not in last:
                problems.append(f"{mid}: status {status} with no audit events")
            elif last[mid] != status:
                problems.append(f"{mid}: status {status} but last event says {last[mid]}")
        problems.extend(
            f"{mid}: last event says {to} but the row is gone"
            for mid, to in last.items()
            if to is not None and mid not in current
        )
        return problems


def _status_or_none(value: str | None) -> MessageStatus | None:
    return None if value is None else MessageStatus(value)


def _audit_edge_ok(frm: MessageStatus | None, to: MessageStatus | None) -> bool:
    if frm is None:
        return to is MessageStatus.DISCOVERED
    if to is None:
        return frm in _DROPPABLE
    return to in TRANSITIONS[frm]


def _parse_discovery(record: DiscoveredMessage, now: float) -> dict[str, Any]:
    raw = bytes(record.message)
    try:
        message = decode_message(raw)  # the one codec: the row cannot disagree with its bytes
    except VerificationError as exc:
        raise ValueError(str(exc)) from None
    return {
        "id": "0x" + message.id.hex(),
        "origin": message.origin,
        "nonce": message.nonce,
        "destination": message.destination,
        "sender": "0x" + message.sender.hex(),
        "recipient": "0x" + message.recipient.hex(),
        "message": raw,
        "status": MessageStatus.DISCOVERED,
        "reason": None,
        "source_block_number": _uint(record.block_number, "block number"),
        "source_block_hash": _hex(record.block_hash, 32, "block hash"),
        "source_tx_hash": _hex(record.tx_hash, 32, "transaction hash"),
        "log_index": _uint(record.log_index, "log index"),
        "checkpoint_id": None,
        "delivery_tx_hash": None,
        "attempts": 0,
        "next_attempt_at": None,
        "created_at": now,
        "updated_at": now,
    }


def _check_transition_arguments(
    to: MessageStatus,
    reason: str | None,
    checkpoint_id: int | None,
    tx_hash: str | None,
    retry_at: float | None,
) -> None:
    if to in _REASON_REQUIRED and not reason:
        raise ValueError(f"a move to {to} needs a reason")
    if checkpoint_id is not None and to is not MessageStatus.ATTESTED:
        raise ValueError("checkpoint_id applies only to a move to attested")
    if to is MessageStatus.SUBMITTED and tx_hash is None:
        raise ValueError("a move to submitted needs the tx_hash of a recorded transaction")
    if tx_hash is not None and to not in (MessageStatus.SUBMITTED, MessageStatus.DELIVERED):
        raise ValueError("tx_hash applies only to a move to submitted or delivered")
    if retry_at is not None and to is not MessageStatus.FAILED:
        raise ValueError("retry_at applies only to a move to failed")


@dataclass(slots=True)
class _State:
    """What a transition needs to know about a message (read without building ORM objects)."""

    id: str
    status: MessageStatus
    origin: int
    nonce: int
    destination: int
    checkpoint_id: int | None
    delivery_tx_hash: str | None


def _apply_transition(
    session: Session,
    *,
    now: float,
    ids: Sequence[str],
    to: MessageStatus,
    reason: str | None,
    checkpoint_id: int | None,
    tx_hash: str | None,
    retry_at: float | None,
) -> list[str]:
    """Validate every move first, then apply them all (so a failure changes nothing).

    The hot path of the relayer, so it runs as a few set-based statements (one UPDATE per
    chunk of ids, one multi-row INSERT of audit rows) rather than through ORM objects.
    """
    m = _MESSAGES.c
    states: dict[str, _State] = {}
    session.flush()  # Core statements below must see this session's pending ORM changes
    connection = session.connection()
    for chunk in _chunks(sorted(ids)):
        # FOR NO KEY UPDATE (PostgreSQL; SQLite's one writer needs nothing): the rows stay as
        # read until this transaction ends, so a writer of another domain (write_domain) cannot
        # move one between this check and the UPDATE below. The lock the UPDATE takes anyway,
        # not FOR UPDATE's: it does not block the KEY SHARE locks of foreign-key checks (a
        # transaction_messages link to the row). Locked in id order: two transactions that meet
        # on several rows take them in the same order and cannot deadlock on them.
        for row in connection.execute(
            sa.select(
                m.id,
                m.status,
                m.origin,
                m.nonce,
                m.destination,
                m.checkpoint_id,
                m.delivery_tx_hash,
            )
            .where(m.id.in_(chunk))
            .order_by(m.id)
            .with_for_update(key_share=True)
        ):
            states[row.id] = _State(*row)
    missing = [i for i in ids if i not in states]
    if missing:
        raise UnknownRecord("message", missing)
    scope = _transition_scope(session)
    if scope is not None:
        # The domain lock covers these rows only if they are the lease's: scan/collect move
        # their origin's messages, deliver its destination's (the hand-over is ``attested``).
        side = scope[1]
        for state in states.values():
            value = state.origin if side == "origin" else state.destination
            _in_domain(session, side, value, f"message {state.id} has {side} {value}")

    checkpoint = None
    if checkpoint_id is not None:
        checkpoint = session.get(CheckpointRecord, checkpoint_id)
        if checkpoint is None:
            raise UnknownRecord("checkpoint", [checkpoint_id])
    carriers: dict[int, TransactionRecord] = {}
    if to is MessageStatus.SUBMITTED:
        # By (chain, hash), the unique key: the hash alone has no index, and looking it up
        # read every transaction ever recorded on each submit.
        chains = sorted({states[mid].destination for mid in ids})
        carriers = {
            tx.chain: tx
            for tx in session.exec(
                select(TransactionRecord).where(
                    col(TransactionRecord.chain).in_(chains), TransactionRecord.hash == tx_hash
                )
            ).all()
        }

    moving: list[_State] = []
    for mid in ids:
        state = states[mid]
        frm = MessageStatus(state.status)
        if frm == to and not (to is MessageStatus.SUBMITTED and state.delivery_tx_hash != tx_hash):
            continue  # already there: idempotent
        if to not in TRANSITIONS[frm]:
            raise IllegalTransition(mid, frm.value, to.value)
        if to is MessageStatus.ATTESTED:
            if checkpoint is not None:
                if checkpoint.origin != state.origin or state.nonce > checkpoint.index:
                    raise InvalidReference(
                        f"checkpoint {checkpoint.id} (origin {checkpoint.origin}, index "
                        f"{checkpoint.index}) cannot cover message {mid} (origin "
                        f"{state.origin}, nonce {state.nonce})"
                    )
            elif state.checkpoint_id is None:
                raise InvalidReference(f"message {mid} needs a checkpoint to become attested")
        if to is MessageStatus.SUBMITTED:
            carrier = carriers.get(state.destination)
            if carrier is None:
                raise InvalidReference(
                    f"no recorded transaction {tx_hash} on chain {state.destination} "
                    f"(the destination of {mid})"
                )
            # Confirmed too: the mined one of a nonce's broadcasts carries its messages until
            # the block is final (its row is confirmed first, the replaced one possibly).
            if carrier.status not in (TxStatus.PENDING, TxStatus.CONFIRMED):
                raise InvalidReference(
                    f"transaction {tx_hash} is {carrier.status}, not pending or confirmed; it "
                    f"cannot carry {mid}"
                )
        moving.append(state)
    if not moving:
        return []

    values: dict[str, Any] = {
        "status": to,
        "reason": reason,
        "updated_at": now,
        "next_attempt_at": retry_at if to is MessageStatus.FAILED else None,
    }
    if to is MessageStatus.ATTESTED and checkpoint is not None:
        values["checkpoint_id"] = checkpoint.id
    elif to is MessageStatus.DISCOVERED:
        values["checkpoint_id"] = None  # re-queued from scratch: it must be attested again
    if tx_hash is not None:
        values["delivery_tx_hash"] = tx_hash
    if to is MessageStatus.SUBMITTED:
        # Counted in the same UPDATE (one round trip less while the write lock is held): the
        # right-hand side reads the row as it was, so only a message entering ``submitted``
        # counts an attempt, not a replacement transaction's ``submitted -> submitted``.
        values["attempts"] = sa.case(
            (m.status == MessageStatus.SUBMITTED.value, m.attempts), else_=m.attempts + 1
        )
    moving_ids = [state.id for state in moving]
    for chunk in _chunks(moving_ids):
        connection.execute(sa.update(_MESSAGES).where(m.id.in_(chunk)).values(**values))
    if to is MessageStatus.SUBMITTED:
        _link(connection, carriers, moving)

    connection.execute(
        sa.insert(_EVENTS),
        [
            {
                "message_id": state.id,
                "from_status": state.status,
                "to_status": to,
                "reason": reason,
                "checkpoint_id": (
                    values.get("checkpoint_id", state.checkpoint_id)
                    if to is MessageStatus.ATTESTED
                    else None
                ),
                "tx_hash": tx_hash,
                "at": now,
            }
            for state in moving
        ],
    )
    # Message objects already loaded in this session (inside ledger.atomic()) see the change.
    for mid in moving_ids:
        loaded = session.identity_map.get(session.identity_key(MessageRecord, mid))
        if loaded is not None:
            session.refresh(loaded)
    return moving_ids


def _link(
    connection: sa.Connection, carriers: Mapping[int, TransactionRecord], moving: Sequence[_State]
) -> None:
    """Record which transaction carries each message (once per pair).

    One ``INSERT ... ON CONFLICT DO NOTHING`` (both databases have it): a pair already there
    (the same transaction carrying the message again after a crash) is left as it is, without
    a SELECT first, which was one more round trip while the write lock is held."""
    wanted: set[tuple[int, str]] = set()
    for state in moving:
        carrier_id = carriers[state.destination].id
        assert carrier_id is not None
        wanted.add((carrier_id, state.id))
    if not wanted:
        return
    dialect_insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    connection.execute(
        dialect_insert(_LINKS).on_conflict_do_nothing(),
        [{"transaction_id": c, "message_id": mid} for c, mid in sorted(wanted)],
    )


def _find_tx(session: Session, chain: int, tx_hash: str) -> TransactionRecord | None:
    return session.exec(
        select(TransactionRecord).where(
            TransactionRecord.chain == chain, TransactionRecord.hash == tx_hash
        )
    ).first()


def _move_tx(row: TransactionRecord, to: TxStatus, now: float) -> None:
    if row.status == to:
        return
    if to not in TX_TRANSITIONS[row.status]:
        raise IllegalTransition(row.hash, row.status.value, to.value, kind="transaction")
    row.status = to
    if to in (TxStatus.CONFIRMED, TxStatus.FAILED):
        row.confirmed_at = now
    row.updated_at = now


# --------------------------------------------------------------------------------------------
# The ledger and its atomic batches


class LedgerBatch(_Operations):
    """The operations of a :class:`Ledger`, all inside one database transaction.

    Obtained from :meth:`Ledger.atomic`. If any operation raises, the whole batch is rolled
    back, even if the caller catches the exception inside the block.
    """

    def __init__(self, session: Session, clock: Callable[[], float], postgres: bool) -> None:
        self.clock = clock
        self._postgres = postgres
        self._session = session
        self._closed = False
        self.poisoned = False

    def movable(self, ids: Iterable[bytes | str], to: MessageStatus) -> list[str]:
        """The ids whose current status may move to ``to`` (:data:`TRANSITIONS`), as this batch
        reads them now. For a writer that must not fail a whole write because someone else — an
        operator's ``skip``, another relayer, the chain — moved some of them meanwhile: it moves
        these and leaves the rest as they are.

        A plain read, not a locking one: on PostgreSQL a fenced batch holds only its domain's
        lock (:func:`write_domain`). The answer stays current because nobody else moves these
        rows: a destination's messages past ``attested`` are moved only by its ``deliver:``
        lease (the ledger refuses a fenced write outside its domain: :class:`WriteOutsideDomain`)
        or by writers that hold the whole ledger (operators, ``unpaid``). And should one have
        moved anyway, :meth:`transition` re-reads the rows it moves ``FOR NO KEY UPDATE`` and
        refuses an illegal move rather than making it."""
        ready = []
        for message_id in ids:
            record = self.get(message_id)
            if record is not None and (record.status == to or to in TRANSITIONS[record.status]):
                ready.append(record.id)
        return ready

    @contextmanager
    def _writing(self) -> Iterator[Session]:
        if self._closed:
            raise LedgerError("this atomic batch has already ended")
        if self.poisoned:
            raise LedgerError("an earlier operation in this atomic batch failed")
        try:
            yield self._session
        except BaseException:
            self.poisoned = True
            raise

    _reading = _writing


class Ledger(_Operations):
    """The delivery ledger; obtain one with :func:`open_ledger` and close it when done."""

    _WRITE_OPTION: ClassVar[str] = "passerelle_ledger_write"

    def __init__(
        self,
        engine: Engine,
        clock: Callable[[], float] = time.time,
        *,
        busy_timeout: float = 30.0,
        idle_timeout: float = PG_IDLE_IN_TRANSACTION_SECONDS,
    ) -> None:
        """Wrap an engine prepared by :func:`open_ledger` (use that, not this)."""
        self.clock = clock
        self._engine = engine
        self._write_engine = engine.execution_options(**{self._WRITE_OPTION: True})
        self._postgres = engine.dialect.name == "postgresql"
        self.require_fence = False
        """Refuse every write not fenced by a lease (:func:`fenced_by`): set by a relayer that
        shares its routes with others through leases, where such a write is a bug."""
        self.write_timeout: float | None = None
        """PostgreSQL: the ``statement_timeout`` (seconds) of every statement of a write or a
        lease round, waiting for locks included; past it the write fails as
        :class:`LedgerBusy`. Set by a leasing relayer to about a quarter lease: a task whose
        write is stuck behind a frozen writer then gives its lease up (relayer/leases.py)
        long before the lease could expire, instead of waiting ``busy_timeout``. None: writes
        are bounded by ``busy_timeout`` (lock waits) only, as without leases."""
        # SQLite applies it per connection (PRAGMA busy_timeout); PostgreSQL per transaction,
        # as the lock_timeout of the advisory lock every writer takes (see _writing).
        self._busy_ms = max(1, int(busy_timeout * 1000))
        self.idle_timeout = idle_timeout
        """PostgreSQL: a write transaction or lease round left idle this long (seconds: its
        process frozen, its network cut) is ended by the server, which releases its locks (the
        ledger's write locks, lease rows): otherwise they stay held until the server's keepalive
        notices, hours, and no other relayer can write or take its leases over. A leasing
        relayer lowers it to a lease period (:func:`relayer.leases.leasing`)."""

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for inspection and tests; write through the API)."""
        return self._engine

    @property
    def location(self) -> str:
        """Where the ledger lives (the URL, passwords hidden: :func:`shown_database_url`)."""
        return shown_database_url(self._engine.url)

    def close(self) -> None:
        """Close every pooled connection (on SQLite this also checkpoints the WAL)."""
        self._engine.dispose()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def in_use(self, *, exclusive: bool, by: str) -> Iterator[None]:
        """Hold the ledger's use lock for the block: shared (relayers, any number at once) or
        exclusive (``ledger rebuild``, ``ledger migrate``: alone). ``by`` names the holder in
        the refusal. Never waits: if the lock cannot be had now, :class:`LedgerInUse`.

        Why: a rebuild keeps each origin's message tree in memory and a relayer does too, so
        two of them writing one ledger each scan from a cursor the other moved (an EVM origin
        then fails its gapless check for ever; a Substrate one numbers remarks from a stale
        count and halts on a "conflict"); and a relayer across a migration meets tables it does
        not know. The lock turns "stop the relayers first" into a refusal.

        SQLite: ``flock`` on ``<ledger file>.lock`` (created beside it, mode 0600), released when
        the process ends however it ends. PostgreSQL: a session advisory lock
        (``pg_try_advisory_lock[_shared]``) on a connection held for the block, released when
        that connection closes — also if the process dies or the server drops it. Any role that
        can connect can take that lock too: like a stuck writer, that stops rebuilds and
        migrations (with this one line), never a running relayer.
        """
        kind = "exclusive" if exclusive else "shared"
        others = "a relayer, a rebuild or a migration" if exclusive else "a rebuild or a migration"
        refusal = (
            f"ledger {self.location} is in use by another process ({others}): {by} needs it "
            f"{kind}; stop that process first, or wait for it to finish"
        )
        if self._postgres:
            with self._pg_use_lock(exclusive, refusal):
                yield
            return
        database = self._engine.url.database
        assert database, "open_ledger refuses an in-memory SQLite ledger"
        try:
            fd = os.open(f"{database}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise LedgerError(f"cannot open {database}.lock: {exc.strerror}") from None
        try:
            try:
                fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LedgerInUse(refusal) from None
            yield
        finally:
            os.close(fd)  # releases the flock

    @contextmanager
    def _pg_use_lock(self, exclusive: bool, refusal: str) -> Iterator[None]:
        take = func.pg_try_advisory_lock if exclusive else func.pg_try_advisory_lock_shared
        try:
            connection = self._engine.connect()
        except sa_exc.DBAPIError as error:
            raise _translate(error) from error
        try:
            try:
                got = connection.execute(sa.select(take(_PG_USE_KEY))).scalar_one()
                connection.commit()  # a session lock: it outlives this transaction
            except sa_exc.DBAPIError as error:
                raise _translate(error) from error
            if not got:
                raise LedgerInUse(refusal)
            yield
        finally:
            # Closed, not returned to the pool: a pooled connection would keep the lock.
            connection.invalidate()
            connection.close()

    @contextmanager
    def atomic(self) -> Iterator[LedgerBatch]:
        """Run several operations as ONE database transaction: all of them commit, or none.

        Example: a receipt that delivered some messages of a batch and failed others::

            with ledger.atomic() as batch:
                batch.update_transaction(chain, tx, TxStatus.CONFIRMED, gas_used=...)
                batch.transition(ok_ids, MessageStatus.DELIVERED, tx_hash=tx)
                batch.transition(bad_ids, MessageStatus.FAILED, reason=..., retry_at=...)

        Keep the block short and free of network I/O: it holds its write locks throughout (on
        PostgreSQL, fenced: its domain's; otherwise the whole ledger's).
        """
        with self._writing() as session:
            batch = LedgerBatch(session, self.clock, self._postgres)
            try:
                yield batch
                if batch.poisoned:
                    raise LedgerError(
                        "an operation inside ledger.atomic() failed; the batch was rolled back"
                    )
            finally:
                batch._closed = True

    @contextmanager
    def _writing(self) -> Iterator[Session]:
        try:
            with Session(self._write_engine, expire_on_commit=False) as session, session.begin():
                if self._postgres:
                    # Without a lock_timeout a writer behind a stuck one would wait for ever;
                    # with it, it gets LedgerBusy after busy_timeout, as on SQLite.
                    connection = session.connection()
                    set_local_timeouts(
                        connection,
                        lock_ms=self._busy_ms,
                        idle_ms=self._idle_ms(),
                        statement_ms=self._write_statement_ms(),
                    )
                    # Fenced writes of different domains proceed side by side; the rest alone
                    # (write_domain says which is which).
                    _pg_write_locks(connection, _FENCE.get())
                fence = _FENCE.get()
                if fence is not None:
                    _check_fence(session.connection(), fence)
                    # What the operations may touch (_in_domain): the domain the locks above
                    # were taken for, kept with the transaction (an atomic batch shares it).
                    session.info[_SCOPE_INFO] = (fence.name, lease_scope(fence.name))
                elif self.require_fence:
                    raise LedgerError(
                        "a ledger write outside every lease in a relayer that shares its routes "
                        "through leases: refused, it could record over another relayer's work"
                    )
                yield session
        except (sa_exc.OperationalError, sa_exc.InternalError) as error:
            # InternalError: PostgreSQL's class 25 (the server ended an idle transaction) too.
            raise _translate(error) from error
        except sa_exc.IntegrityError as error:
            raise LedgerError(f"constraint violated: {_one_line(error.orig)}") from error

    def _write_statement_ms(self) -> int | None:
        return None if self.write_timeout is None else max(1, int(self.write_timeout * 1000))

    def _idle_ms(self) -> int:
        return max(1, int(self.idle_timeout * 1000))

    @contextmanager
    def lease_transaction(self) -> Iterator[sa.Connection]:
        """One write transaction on the lease tables only (relayer/leases.py).

        On PostgreSQL it takes none of the ledger's write locks (the advisory locks every other
        write takes): lease rows are claimed with ``SELECT … FOR UPDATE SKIP LOCKED``, so two
        relayers claiming at once each skip the rows the other has locked, and a claim never
        waits behind a long message write. On SQLite it is ``BEGIN IMMEDIATE`` like every write
        (the file's one write lock serialises claims)."""
        try:
            with self._write_engine.begin() as connection:
                if self._postgres:
                    set_local_timeouts(
                        connection,
                        lock_ms=self._busy_ms,
                        idle_ms=self._idle_ms(),
                        statement_ms=self._write_statement_ms(),
                    )
                yield connection
        except sa_exc.IntegrityError as error:
            raise LedgerError(f"constraint violated: {_one_line(error.orig)}") from error
        except sa_exc.DBAPIError as error:
            # Any database failure, a dropped connection included: a lease round that fails
            # is retried at the next one (its tasks stop on their deadlines meanwhile), so it
            # must never end the relayer.
            raise _translate(error) from error

    @contextmanager
    def _reading(self) -> Iterator[Session]:
        try:
            with Session(self._engine, expire_on_commit=False) as session, session.begin():
                if self._postgres:
                    set_local_timeouts(session.connection(), statement_ms=PG_READ_TIMEOUT_MS)
                yield session
        except sa_exc.OperationalError as error:
            raise _translate(error) from error


def _translate(error: sa_exc.DBAPIError) -> LedgerError:
    if getattr(error.orig, "sqlstate", None) == "57014":
        # A statement timeout (or pg_cancel_backend): it says how long, not who held what.
        return LedgerBusy(
            f"ledger statement cancelled after its time bound: {_one_line(error.orig)}"
        )
    if getattr(error.orig, "sqlstate", None) == "40P01":
        # Relayers on different domains write side by side (write_domain). Their message rows
        # are disjoint but for the hand-over, locked in id order, and their counters live in
        # slots of their own (count_slot), so no cycle is known; should one happen anyway (an
        # operator's raw SQL, a future shared row), the server breaks it by failing one.
        # Nothing was written: the database refused this round, not a bug that should end the
        # relayer (LedgerDeadlock: the lease keeper gives the lease up without a pause).
        return LedgerDeadlock(
            f"ledger write deadlocked with other writers (the database cancelled this one, "
            f"nothing was written): {_one_line(error.orig)}"
        )
    if getattr(error.orig, "sqlstate", None) == "25P03":
        # idle_in_transaction_session_timeout: this process stalled (SIGSTOP, a paused VM, no
        # CPU) inside its transaction and the server ended the session, freeing its locks for
        # the others (Ledger.idle_timeout). Rolled back whole; like a write that came too late,
        # the lease keeper gives the task's lease up (LedgerBusy) and the relayer goes on.
        return LedgerBusy(
            "ledger transaction ended by the server after sitting idle past its bound (this "
            f"process stalled); nothing of it was written: {_one_line(error.orig)}"
        )
    if _is_busy(error):
        return LedgerBusy(
            f"ledger is busy (another process holds the write lock): {_one_line(error.orig)}"
        )
    if error.connection_invalidated:
        # The connection died under us (the server ended the session — an idle bound, an
        # operator, a restart — or the network dropped it): SQLAlchemy drops it from the pool
        # and the next call opens another. Like a write that came too late: a leasing
        # relayer's keeper gives the task's lease up and reads the ledger again, instead of
        # the whole relayer ending on it (a relayer frozen past its idle bound did).
        return LedgerBusy(
            "ledger connection lost mid-call (the server ended the session, or the network "
            f"dropped it); the ledger is read again: {_one_line(error.orig)}"
        )
    if _is_corruption(error):
        return LedgerCorrupt(f"ledger database is corrupt: {_one_line(error.orig)}")
    return LedgerError(f"ledger database error: {_one_line(error.orig)}")


def _one_line(reason: object) -> str:
    """A driver's message on one line: PostgreSQL's run over several (DETAIL, HINT, "Is the
    server running…"), and the CLI shows every error as one line."""
    return " ".join(str(reason).split())


# --------------------------------------------------------------------------------------------
# PostgreSQL connections (the ledger's and the checkpoint store's: one policy, here)

PG_CONNECT_ARGS: Final[Mapping[str, int]] = MappingProxyType(
    {
        # Without these, a server that stopped answering (a failover, a half-open TCP
        # connection after a network cut) holds a worker thread for ever: libpq waits for a
        # connection with no limit, and a dead peer is only noticed by TCP keepalives.
        "connect_timeout": 10,
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }
)
"""libpq connection parameters of every PostgreSQL engine Passerelle opens."""

PG_READ_TIMEOUT_MS: Final = 60_000
"""``statement_timeout`` of the ledger's reads on PostgreSQL: the relayer runs them one at a
time, so one stuck read would stall every loop (writes are bounded by their lock_timeout;
migrations, which may legitimately run long, are not bounded)."""


def set_local_timeouts(
    connection: sa.Connection,
    *,
    lock_ms: int | None = None,
    statement_ms: int | None = None,
    idle_ms: int | None = None,
) -> None:
    """Bound the current PostgreSQL transaction: ``lock_timeout`` (waiting for any lock,
    advisory ones included), ``statement_timeout`` and ``idle_in_transaction_session_timeout``
    (the server ends the session of a transaction left idle that long, releasing its locks), all
    local (``set_config(..., true)``, as ``SET LOCAL``) so they end with the transaction and
    never leak into a pooled connection's next user. One statement for all three: every ledger
    write transaction starts with this, and each round trip lengthens it."""
    settings = {
        "lock_timeout": lock_ms,
        "statement_timeout": statement_ms,
        "idle_in_transaction_session_timeout": idle_ms,
    }
    chosen = {name: f"{max(1, int(ms))}" for name, ms in settings.items() if ms is not None}
    if chosen:
        connection.execute(
            sa.select(*(func.set_config(name, value, True) for name, value in chosen.items()))
        )


def shown_database_url(location: str | sa.URL) -> str:
    """A database URL as it may be shown (output, logs, errors): the userinfo password hidden,
    and every query-string value too — libpq also takes ``?password=…`` and ``sslpassword``,
    and a value hidden for nothing costs less than a password shown. Text that is not a URL
    goes through :func:`adapters.redact.redact_url` (which hides even more)."""
    try:
        url = sa.make_url(location)
    except (sa_exc.ArgumentError, ValueError):  # ValueError: a port that is not a number
        return redact_url(str(location))
    shown = url.set(query={}).render_as_string(hide_password=True)
    if url.query:
        shown += "?" + "&".join(f"{name}=***" for name in url.query)
    return shown


# --------------------------------------------------------------------------------------------
# Opening


def open_ledger(
    location: str | Path,
    *,
    clock: Callable[[], float] = time.time,
    busy_timeout: float = 30.0,
    idle_timeout: float = PG_IDLE_IN_TRANSACTION_SECONDS,
    check_integrity: bool = True,
) -> Ledger:
    """Open the ledger at ``location`` (creating it in an empty database) and return it.

    ``location`` is a file path for SQLite, or a database URL (``postgresql+psycopg://…``;
    ``sqlite:///path`` also works). SQLite files get ``journal_mode=WAL``, ``synchronous=FULL``,
    ``foreign_keys=ON`` and a busy timeout of ``busy_timeout`` seconds on every connection, and
    are checked with ``PRAGMA integrity_check`` first: a damaged file raises
    :class:`LedgerCorrupt` and is left untouched (restore it, or move it away and run
    ``passerelle ledger rebuild``). ``clock`` supplies every timestamp (seconds).

    The schema must be this code's (:data:`SCHEMA_VERSION`), and opening never migrates it:
    several relayers may share the database, and a schema changed under a running one is a
    schema it does not know. So an empty database is created at the newest revision (nobody can
    be using it), a ledger made before migrations existed is recognised and stamped (its tables
    are revision 0001's), and any other version raises :class:`LedgerSchemaError` with one line:
    an older one names ``passerelle ledger migrate``, a newer one asks for a newer Passerelle.
    """
    engine, location_text = _engine(location, busy_timeout, check_integrity)
    ledger = Ledger(engine, clock, busy_timeout=busy_timeout, idle_timeout=idle_timeout)
    try:
        with ledger._writing() as session:
            connection = session.connection()
            state = _schema_state(connection, location_text)
            if state.state == "empty" or (state.legacy and state.head == _LEGACY_REVISION):
                _upgrade(connection, state)
            elif state.state != "current":
                raise LedgerSchemaError(state.refusal())
    except sa_exc.DBAPIError as error:
        engine.dispose()
        if _is_corruption(error):
            raise LedgerCorrupt(f"ledger {location_text} is corrupt: {error.orig}") from error
        raise _translate(error) from error
    except BaseException:
        engine.dispose()
        raise
    return ledger


@dataclass(frozen=True, slots=True)
class SchemaVersion:
    """Which schema revision a ledger database holds, against the one this code needs."""

    location: str  # where (the URL with its password hidden, or the file)
    current: str | None  # the revision stored in the database; None: no ledger there yet
    head: str  # the revision this Passerelle reads and writes
    legacy: bool = False  # made before migrations: ``ledger_meta`` only, no ``alembic_version``
    known: bool = True  # ``current`` is one of this Passerelle's revisions (or None)

    @property
    def state(self) -> str:
        """``empty``, ``current``, ``behind`` (run ``passerelle ledger migrate``) or ``ahead``
        (written by a newer Passerelle)."""
        if self.current is None:
            return "empty"
        if not self.known:
            return "ahead"
        return "current" if self.current == self.head else "behind"

    def refusal(self) -> str:
        """The one line that explains why a relayer may not use this database."""
        if self.state == "ahead":
            return (
                f"ledger {self.location}: schema version {self.current} is newer than this "
                f"Passerelle's ({self.head}), or not one of its own: upgrade Passerelle"
            )
        return (
            f"ledger {self.location}: schema version {self.current} is older than this "
            f"Passerelle's ({self.head}): stop the relayers, back the ledger up, and run "
            "`passerelle ledger migrate --config FILE`"
        )

    def as_json(self) -> dict[str, object]:
        """For ``passerelle ledger version --json``."""
        return {
            "location": self.location,
            "current": self.current,
            "head": self.head,
            "state": self.state,
            "legacy": self.legacy,
        }


@dataclass(frozen=True, slots=True)
class Migrated:
    """What :func:`migrate_ledger` did: ``before`` is None for a database it created."""

    location: str
    before: str | None
    after: str

    def as_json(self) -> dict[str, object]:
        """For ``passerelle ledger migrate --json``."""
        return {"location": self.location, "before": self.before, "after": self.after}


def migrate_ledger(
    location: str | Path, *, busy_timeout: float = 30.0, check_integrity: bool = True
) -> Migrated:
    """Bring the ledger at ``location`` to this code's schema (``passerelle ledger migrate``).

    Creates it in an empty database, stamps a ledger made before migrations, applies the missing
    revisions in order, and refuses (:class:`LedgerSchemaError`) a database written by a newer
    Passerelle or holding tables that are not a ledger's. Everything runs in ONE transaction
    under the ledger's write lock: a failing revision leaves the database exactly as it was, on
    PostgreSQL (transactional DDL) and on SQLite (which rolls DDL back too, because the ledger
    issues ``BEGIN IMMEDIATE`` itself and the sqlite3 module never commits implicitly), and two
    ``migrate`` runs at once serialise (the second finds nothing to do). It holds the ledger's
    use lock exclusively (:meth:`Ledger.in_use`): while a relayer runs on the ledger (it would
    meet tables it does not know) or a rebuild does, it raises :class:`LedgerInUse`.
    """
    engine, location_text = _engine(location, busy_timeout, check_integrity)
    ledger = Ledger(engine, busy_timeout=busy_timeout)
    try:
        with ledger.in_use(exclusive=True, by="a migration"), ledger._writing() as session:
            connection = session.connection()
            state = _schema_state(connection, location_text)
            if state.state == "ahead":
                raise LedgerSchemaError(state.refusal())
            if state.state != "current" or state.legacy:
                try:
                    _upgrade(connection, state)
                except sa_exc.DBAPIError as error:
                    raise LedgerError(
                        f"ledger {location_text}: migrating from {state.current or 'none'} to "
                        f"{state.head} failed and changed nothing: {_one_line(error.orig)}"
                    ) from error
            return Migrated(location_text, state.current, state.head)
    except sa_exc.DBAPIError as error:
        raise _translate(error) from error
    finally:
        engine.dispose()


def ledger_schema(location: str | Path, *, busy_timeout: float = 30.0) -> SchemaVersion:
    """The schema version of the ledger at ``location``, read without changing anything (a
    missing SQLite file is reported empty, not created)."""
    file = _sqlite_path(location)
    if file is not None and not Path(file).exists():
        return SchemaVersion(file, None, _head())
    engine, location_text = _engine(location, busy_timeout, check_integrity=False)
    try:
        with engine.connect() as connection:
            return _schema_state(connection, location_text)
    except sa_exc.DBAPIError as error:
        raise _translate(error) from error
    finally:
        engine.dispose()


_LEGACY_REVISION: Final = "0001"  # what a ledger made before migrations holds

VERSION_TABLE: Final = "passerelle_alembic_version"
"""Where Alembic records the ledger's revision (relayer/migrations/env.py uses it too). Not
Alembic's default ``alembic_version``: the database may be shared (a checkpoint store, another
application with migrations of its own), and two applications in one version table would
each read the other's revision as theirs."""


def _sqlite_path(location: str | Path) -> str | None:
    """The file of a SQLite location (a path or ``sqlite:///``), None for another database."""
    if isinstance(location, str) and "://" in location:
        try:
            url = sa.make_url(location)
        except (sa_exc.ArgumentError, ValueError):  # ValueError: a port that is not a number
            return None  # not a URL at all: _engine says so in one line
        return url.database if url.get_backend_name() == "sqlite" else None
    return str(location)


def _engine(location: str | Path, busy_timeout: float, check_integrity: bool) -> tuple[Engine, str]:
    """An engine for ``location`` with the ledger's connection settings, and the location as
    it may be shown (password hidden). Bad locations raise :class:`LedgerError`."""
    if isinstance(location, str) and "://" in location:
        try:
            url = sa.make_url(location)
        except (sa_exc.ArgumentError, ValueError):  # ValueError: a port that is not a number
            # Not the library's text: it may quote the URL, password included.
            raise LedgerError(
                f"ledger location {shown_database_url(location)} is not a database URL"
            ) from None
    else:
        path = Path(location)
        if str(location) == ":memory:":
            raise LedgerError("the ledger must be a file, not an in-memory database")
        if not path.parent.is_dir():
            raise LedgerError(f"ledger directory {path.parent} does not exist")
        if path.is_dir():
            raise LedgerError(f"ledger path {path} is a directory")
        url = sa.URL.create("sqlite+pysqlite", database=str(path))
    sqlite = url.get_backend_name() == "sqlite"
    if sqlite and url.database in (None, "", ":memory:"):
        raise LedgerError("the ledger must be a file, not an in-memory database")
    shown = url.database if sqlite and url.database else shown_database_url(url)
    try:
        if sqlite:
            engine = sa.create_engine(
                url, connect_args={"timeout": busy_timeout, "check_same_thread": False}
            )
            _prepare_sqlite(engine, busy_timeout)
        else:
            connect_args = dict(PG_CONNECT_ARGS) if url.get_backend_name() == "postgresql" else {}
            engine = sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    except (sa_exc.ArgumentError, ImportError) as error:  # unknown dialect or missing driver
        raise LedgerError(f"cannot use ledger {shown}: {error}") from None
    if sqlite and check_integrity:
        assert url.database is not None
        try:
            _check_integrity(url.database, busy_timeout)
        except BaseException:
            engine.dispose()
            raise
    return engine, shown


@functools.cache
def _scripts_at(directory: Path) -> Any:
    """Alembic's view of the revisions in ``directory`` (parsed once per process)."""
    from alembic.config import Config as AlembicConfig  # noqa: PLC0415 - alembic is slow to import
    from alembic.script import ScriptDirectory  # noqa: PLC0415

    config = AlembicConfig()
    config.set_main_option("script_location", str(directory))
    return ScriptDirectory.from_config(config)


def _scripts() -> Any:
    return _scripts_at(MIGRATIONS_DIR)


def _head() -> str:
    head = _scripts().get_current_head()
    assert isinstance(head, str), "relayer/migrations/versions holds no revision"
    return head


def _schema_state(connection: sa.Connection, location: str) -> SchemaVersion:
    """Read which revision the database holds (see :class:`SchemaVersion`)."""
    from alembic.migration import MigrationContext  # noqa: PLC0415
    from alembic.script.revision import RevisionError  # noqa: PLC0415
    from alembic.util import CommandError  # noqa: PLC0415

    scripts = _scripts()
    head = _head()
    tables = set(sa.inspect(connection).get_table_names())
    try:
        current = MigrationContext.configure(
            connection, opts={"version_table": VERSION_TABLE}
        ).get_current_revision()
    except CommandError as error:  # several rows in the version table: no linear history
        raise LedgerSchemaError(
            f"ledger {location} has an unusable schema version: {error}"
        ) from None
    if current is None:
        ours = tables & LEDGER_TABLES
        if not ours:
            return SchemaVersion(location, None, head)
        stored = _stored_schema_version(connection) if "ledger_meta" in ours else None
        if stored == "1" and ours == _V1_TABLES:
            return SchemaVersion(location, _LEGACY_REVISION, head, legacy=True)
        if _is_number(stored) and int(stored) > 1:
            return SchemaVersion(location, stored, head, legacy=True, known=False)
        raise LedgerSchemaError(
            f"{location} holds tables of a ledger ({', '.join(sorted(ours))}) but no schema "
            "version Passerelle can recognise: not a ledger, or a damaged one; use another "
            "database, or move this one away and run `passerelle ledger rebuild`"
        )
    try:
        # Exactly: get_revision also resolves a unique prefix ("00" would find "0001").
        known = getattr(scripts.get_revision(current), "revision", None) == current
    except (CommandError, RevisionError):
        known = False
    if known:
        # Passerelle releases older than Alembic read only ledger_meta; a newer one that
        # rewrote it (or a hand edit) must not pass for this version either.
        stored = _stored_schema_version(connection)
        if _is_number(stored) and int(stored) > int(head):
            return SchemaVersion(location, stored, head, known=False)
    return SchemaVersion(location, current, head, known=known)


def _is_number(stored: str | None) -> TypeGuard[str]:
    """Whether a stored schema version is a plain decimal number. Not ``str.isdigit()``
    alone: it is true of ``'²'`` and other digits ``int()`` refuses."""
    return stored is not None and stored.isascii() and stored.isdigit() and len(stored) <= 9


def _stored_schema_version(connection: sa.Connection) -> str | None:
    meta = LedgerMeta.__table__  # type: ignore[attr-defined]
    value = connection.execute(
        sa.select(meta.c.value).where(meta.c.key == "schema_version")
    ).scalar_one_or_none()
    return None if value is None else str(value)


def _upgrade(connection: sa.Connection, state: SchemaVersion) -> None:
    """Stamp a legacy ledger, apply every missing revision, record the version in
    ``ledger_meta``: inside the caller's transaction, so all of it or none of it happens."""
    from alembic import command  # noqa: PLC0415
    from alembic.config import Config as AlembicConfig  # noqa: PLC0415

    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection  # relayer/migrations/env.py runs on it
    if state.legacy:
        command.stamp(config, _LEGACY_REVISION)
    command.upgrade(config, "head")
    meta = LedgerMeta.__table__  # type: ignore[attr-defined]
    connection.execute(
        meta.update().where(meta.c.key == "schema_version").values(value=str(int(state.head)))
    )


def _prepare_sqlite(engine: Engine, busy_timeout: float) -> None:
    write_option = Ledger._WRITE_OPTION

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module: we emit BEGIN ourselves.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            mode = cursor.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise LedgerError(f"SQLite refused WAL mode (journal_mode is {mode})")
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        # IMMEDIATE takes the write lock up front, so a read-check-write cannot interleave with
        # another process's; readers use a plain (deferred) BEGIN and never block on WAL.
        if connection.get_execution_options().get(write_option):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.exec_driver_sql("BEGIN")


def _check_integrity(database: str, busy_timeout: float) -> None:
    """Run ``PRAGMA integrity_check`` on a plain connection, before anything writes the file."""
    if not Path(database).exists():
        return  # a new ledger
    try:
        connection = sqlite3.connect(database, timeout=busy_timeout, isolation_level=None)
        try:
            rows = [str(r[0]) for r in connection.execute("PRAGMA integrity_check").fetchall()]
        finally:
            connection.close()
    except sqlite3.DatabaseError as error:
        if _is_corruption(error):
            raise LedgerCorrupt(f"ledger {database} is corrupt: {error}") from error
        if _is_busy(error):
            raise LedgerBusy(f"ledger {database} is locked: {error}") from error
        raise LedgerError(f"cannot read ledger {database}: {error}") from error
    if rows != ["ok"]:
        problems = [" ".join(row.split()) for row in rows]
        shown = "; ".join(problems[:3]) + ("; …" if len(problems) > 3 else "")
        raise LedgerCorrupt(
            f"ledger {database} failed integrity_check ({len(problems)} problems; restore it or "
            f"move it away and rebuild): {shown}"
        )
