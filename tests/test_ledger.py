"""The delivery ledger (relayer/ledger.py): lifecycle, the transition table, conflicts (T16,
T21), the audit trail, SQLite durability settings, corruption, crash safety and concurrency.

Every test that opens a ledger through the ``backend`` fixture runs twice: on SQLite files
(tmpfs, or tmp_path for the crash tests) and on PostgreSQL, one fresh database per ledger on the
session's throwaway server (the ``postgres`` fixture, tests/conftest.py), dropped afterwards.
The pragma, corruption and path tests are SQLite's alone. The crash and concurrency tests
drive real processes (tests/ledger_crash_worker.py) and check the database afterwards with
plain sqlite3 or psycopg, so they do not trust the code under test to judge itself.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from devnet.postgres import PostgresProcess
from light_clients.hashing import keccak256
from relayer.ledger import (
    SCHEMA_VERSION,
    TRANSITIONS,
    TX_TRANSITIONS,
    DiscoveredMessage,
    IllegalTransition,
    InvalidReference,
    Ledger,
    LedgerBusy,
    LedgerConflict,
    LedgerCorrupt,
    LedgerError,
    LedgerSchemaError,
    MessageStatus,
    NewTransaction,
    TxStatus,
    UnknownRecord,
    open_ledger,
)

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("ledger_crash_worker.py")

S = MessageStatus
ORIGIN, OTHER_ORIGIN, DEST = 1, 3, 2
OUTBOX = "0x" + "0b" * 32
ROOT_HASH = "0x" + "77" * 32
SENDER = b"\x5e" * 32
RECIPIENT = b"\x8e" * 32

# The transition table as specified (docs/design.md "The ledger", issue 3, research §4.1), written
# out independently of relayer/ledger.py so the code is checked against the spec.
SPEC_EDGES = {
    ("discovered", "final"),
    ("discovered", "skipped"),
    ("discovered", "delivered"),
    ("final", "attested"),
    ("final", "skipped"),
    ("final", "delivered"),
    ("attested", "submitted"),
    ("attested", "failed"),
    ("attested", "skipped"),
    ("attested", "delivered"),
    ("attested", "unpaid"),  # its route delivers paid messages only, and it is not paid enough
    ("unpaid", "attested"),  # a top-up arrived
    ("unpaid", "skipped"),
    ("unpaid", "delivered"),
    ("submitted", "submitted"),  # a replacement transaction carries it
    ("submitted", "delivered"),
    ("submitted", "failed"),
    ("submitted", "attested"),  # its transaction was dropped
    ("submitted", "skipped"),
    ("failed", "attested"),  # retry
    ("failed", "submitted"),  # retry straight into a batch
    ("failed", "skipped"),
    ("failed", "delivered"),
    ("skipped", "discovered"),  # operator re-queue
    ("skipped", "delivered"),
}
DROPPABLE = {"discovered", "final", "skipped"}
ILLEGAL = sorted(
    (a.value, b.value)
    for a in MessageStatus
    for b in MessageStatus
    if a != b and (a.value, b.value) not in SPEC_EDGES
)


# --------------------------------------------------------------------------------------------
# Helpers


class Clock:
    """A deterministic clock: returns ``now`` until told to advance."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def encode(origin: int, nonce: int, *, dest: int = DEST, body: bytes = b"ping") -> bytes:
    return struct.pack(">BII32sI32s", 1, nonce, origin, SENDER, dest, RECIPIENT) + body


def msg_id(message: bytes) -> str:
    return "0x" + keccak256(message).hex()


def disc(
    origin: int, nonce: int, *, block: int = 10, body: bytes = b"ping", dest: int = DEST
) -> DiscoveredMessage:
    return DiscoveredMessage(
        message=encode(origin, nonce, dest=dest, body=body),
        block_number=block,
        block_hash=keccak256(b"block %d" % block),
        tx_hash=keccak256(b"tx %d %d" % (origin, nonce)),
        log_index=nonce,
    )


def tx_for(chain: int = DEST, *, seed: int = 0, replaces: str | None = None) -> NewTransaction:
    return NewTransaction(
        chain=chain,
        hash=keccak256(b"delivery %d" % seed),
        sender=b"\x11" * 20,
        nonce=seed,
        gas_limit=300_000,
        max_fee_per_gas=30 * 10**9,
        max_priority_fee_per_gas=10**9,
        replaces=replaces,
    )


def hexed(data: bytes) -> str:
    return "0x" + data.hex()


_tx_serial = iter(range(10**9))


def move(ledger: Ledger, ids: list[str], to: MessageStatus, checkpoint: int) -> list[str]:
    """Perform a transition to ``to`` with whatever arguments that target needs."""
    if to is S.SUBMITTED:
        seed = next(_tx_serial) + 10**6
        ledger.record_transaction(tx_for(seed=seed), ids)
        return ids
    if to is S.ATTESTED:
        return ledger.transition(ids, to, checkpoint_id=checkpoint)
    if to is S.FAILED:
        return ledger.transition(ids, to, reason="reverted", retry_at=ledger.clock() + 30)
    if to in (S.SKIPPED, S.DISCOVERED):
        return ledger.transition(ids, to, reason="operator")
    if to is S.UNPAID:
        return ledger.transition(ids, to, reason="paid 0 < the quote 1")
    return ledger.transition(ids, to)


PATHS: dict[MessageStatus, list[MessageStatus]] = {
    S.DISCOVERED: [],
    S.FINAL: [S.FINAL],
    S.ATTESTED: [S.FINAL, S.ATTESTED],
    S.SUBMITTED: [S.FINAL, S.ATTESTED, S.SUBMITTED],
    S.DELIVERED: [S.FINAL, S.ATTESTED, S.SUBMITTED, S.DELIVERED],
    S.FAILED: [S.FINAL, S.ATTESTED, S.FAILED],
    S.SKIPPED: [S.SKIPPED],
    S.UNPAID: [S.FINAL, S.ATTESTED, S.UNPAID],
}


def drive(ledger: Ledger, ids: list[str], status: MessageStatus, checkpoint: int) -> None:
    for step in PATHS[status]:
        move(ledger, ids, step, checkpoint)
    assert all(ledger.get(i).status is status for i in ids)  # type: ignore[union-attr]


def checkpoint_for(ledger: Ledger, origin: int = ORIGIN, index: int = 100, block: int = 5) -> int:
    return ledger.save_checkpoint(
        origin, OUTBOX, ROOT_HASH, index, block_number=block, block_hash=keccak256(b"cp")
    )


def scratch_dir() -> Path:
    """A fresh directory, on tmpfs when there is one.

    ``synchronous=FULL`` makes every commit an fsync (about 4 ms on a VM disk). That matters for
    power loss, which no test can simulate, and not for a killed process (its writes are in the
    page cache either way), so the many-commit tests run on tmpfs to stay fast; the crash,
    concurrency, pragma and corruption tests use the real disk under tmp_path.
    """
    shm = Path("/dev/shm")
    base = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="passerelle-ledger-", dir=base))


@pytest.fixture
def fast_dir() -> Iterator[Path]:
    directory = scratch_dir()
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def clock() -> Clock:
    return Clock()


_serial = itertools.count()


@dataclass
class Backend:
    """Where one test's ledgers live: fresh SQLite files, or fresh PostgreSQL databases."""

    name: str  # "sqlite" or "postgresql"
    directory: Path  # SQLite files go here unless a test names another directory
    admin: sa.Engine | None = None  # PostgreSQL: AUTOCOMMIT, to create and drop databases
    databases: list[str] = field(default_factory=list)

    def fresh(
        self, stem: str = "ledger", directory: Path | None = None, *, template: str | None = None
    ) -> str:
        """The location of a new, empty ledger (a path, or a database URL); with ``template``
        (a PostgreSQL database), a new database that is a copy of it (see :class:`Templates`)."""
        if self.admin is None:
            return str((directory or self.directory) / f"{stem}-{next(_serial)}.db")
        name = f"{stem}_{next(_serial)}"
        copied = f" TEMPLATE {template}" if template is not None else ""
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}{copied} STRATEGY FILE_COPY")  # 2x faster
        self.databases.append(name)
        return self.admin.url.set(database=name).render_as_string(hide_password=False)

    def raw(self, location: str) -> Any:
        """A plain DB-API connection (sqlite3 or psycopg) to ``location``, for checks that
        must not go through the code under test."""
        if self.admin is None:
            return sqlite3.connect(location)
        import psycopg  # noqa: PLC0415 - needed by the PostgreSQL variants only

        return psycopg.connect(
            sa.make_url(location).set(drivername="postgresql").render_as_string(False)
        )

    def release(self, location: str) -> None:
        """Delete a ledger this backend made (its file, or its database) before the test ends."""
        if self.admin is None:
            Path(location).unlink(missing_ok=True)
            for suffix in ("-wal", "-shm"):
                Path(location + suffix).unlink(missing_ok=True)
            return
        name = str(sa.make_url(location).database)
        with self.admin.connect() as conn:  # FORCE: ends sessions a failed test left behind
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        self.databases.remove(name)

    def release_all(self) -> None:
        if self.admin is not None:
            for name in list(self.databases):
                self.release(self.admin.url.set(database=name).render_as_string(False))


@pytest.fixture(scope="module")
def postgres_admin(postgres: PostgresProcess) -> Iterator[sa.Engine]:
    engine = sa.create_engine(postgres.url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, fast_dir: Path) -> Iterator[Backend]:
    """Each test that takes it runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield Backend("sqlite", fast_dir)
        return
    chosen = Backend("postgresql", fast_dir, admin=request.getfixturevalue("postgres_admin"))
    try:
        yield chosen
    finally:
        chosen.release_all()


class Templates:
    """New ledgers already made at this code's schema, copied from one made once per backend.

    ``open_ledger`` makes an empty database into a ledger (the schema at the newest revision,
    stamped): ~45 ms of CPU on SQLite, ~90 ms on PostgreSQL (measured, 2026-12-07), for each of
    the ~90 ledgers this module opens through :func:`ledger` and the state machine; a copy
    and its opening cost ~4 ms and ~40 ms. What it writes depends on nothing but the code (no
    clock, no location: two tables hold the revision, ``0007`` and ``7``), so a byte copy of
    one it made (a file copy of the closed, checkpointed file; ``CREATE DATABASE … TEMPLATE``)
    is that same ledger, and opening it takes the path every reopened ledger takes. Making a
    ledger in an empty database stays tested: here by the template itself and by every test
    that opens :meth:`Backend.fresh` directly (illegal moves, reorgs of attested work, locks,
    schema, crash, race), and in tests/test_ledger_migrations.py."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._sqlite: str | None = None
        self._postgres: dict[str, tuple[sa.Engine, str]] = {}  # server URL -> (admin, name)

    def fresh(self, backend: Backend, stem: str = "ledger") -> str:
        """The location of a new ledger at this code's schema, on ``backend``."""
        if backend.admin is None:
            if self._sqlite is None:
                template = str(self.directory / "template.db")
                open_ledger(template).close()  # closing checkpoints the WAL into the file
                self._sqlite = template
            location = backend.fresh(stem)
            shutil.copyfile(self._sqlite, location)
            return location
        server = backend.admin.url.render_as_string(hide_password=False)
        if server not in self._postgres:
            made = backend.fresh("template")
            backend.databases.remove(str(sa.make_url(made).database))  # kept for the module
            open_ledger(made).close()  # no session left on it: a template must have none
            self._postgres[server] = (backend.admin, str(sa.make_url(made).database))
        return backend.fresh(stem, template=self._postgres[server][1])

    def drop(self) -> None:
        for admin, name in self._postgres.values():
            with admin.connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture(scope="module")
def templates() -> Iterator[Templates]:
    made = Templates(scratch_dir())
    yield made
    made.drop()


@pytest.fixture
def ledger(backend: Backend, clock: Clock, templates: Templates) -> Iterator[Ledger]:
    opened = open_ledger(templates.fresh(backend), clock=clock)
    yield opened
    opened.close()


# --------------------------------------------------------------------------------------------
# Lifecycle


def test_full_lifecycle(ledger: Ledger, clock: Clock) -> None:
    records = [disc(ORIGIN, n, block=10 + n) for n in range(3)]
    assert ledger.record_discovered(records) == 3
    ids = [msg_id(r.message) for r in records]
    row = ledger.get(ids[0])
    assert row is not None
    assert (row.origin, row.nonce, row.destination) == (ORIGIN, 0, DEST)
    assert (row.sender, row.recipient) == (hexed(SENDER), hexed(RECIPIENT))
    assert row.body == b"ping" and row.message == records[0].message
    assert row.source_block_number == 10 and row.source_block_hash == hexed(keccak256(b"block 10"))
    assert row.status is S.DISCOVERED and row.attempts == 0 and row.created_at == clock.now

    clock.advance(1)
    assert ledger.transition(ids, S.FINAL) == ids
    cp = checkpoint_for(ledger, index=2)
    for signer in (b"\x03" * 20, b"\x01" * 20, b"\x02" * 20):
        assert ledger.add_signature(cp, signer, signer[:1] * 65)
    signers = [s.signer for s in ledger.signatures(cp)]
    assert signers == [hexed(bytes([i]) * 20) for i in (1, 2, 3)]  # ascending, as inboxes want
    clock.advance(1)
    assert ledger.transition(ids, S.ATTESTED, checkpoint_id=cp) == ids

    clock.advance(1)
    tx = ledger.record_transaction(tx_for(seed=1), ids)
    assert tx.status is TxStatus.PENDING and tx.submitted_at == clock.now
    assert ledger.transaction_messages(DEST, tx.hash) == sorted(ids)
    assert [t.hash for t in ledger.transactions(status=TxStatus.PENDING)] == [tx.hash]

    clock.advance(12)
    with ledger.atomic() as batch:
        batch.update_transaction(
            DEST, tx.hash, TxStatus.CONFIRMED, block_number=99, gas_used=150_000, fee_paid=3**50
        )
        assert batch.transition(ids, S.DELIVERED, tx_hash=tx.hash) == ids

    confirmed = ledger.get_transaction(DEST, tx.hash)
    assert confirmed is not None and confirmed.status is TxStatus.CONFIRMED
    assert confirmed.confirmed_at == clock.now and confirmed.fee_paid == 3**50  # > 2**64
    done = ledger.get(ids[1])
    assert done is not None and done.status is S.DELIVERED
    assert done.checkpoint_id == cp and done.delivery_tx_hash == tx.hash and done.attempts == 1
    assert done.updated_at == clock.now and done.next_attempt_at is None
    assert [(e.from_status, e.to_status) for e in ledger.history(ids[1])] == [
        (None, S.DISCOVERED),
        (S.DISCOVERED, S.FINAL),
        (S.FINAL, S.ATTESTED),
        (S.ATTESTED, S.SUBMITTED),
        (S.SUBMITTED, S.DELIVERED),
    ]
    assert ledger.counts_by_status() == {s: 3 if s is S.DELIVERED else 0 for s in S}
    assert ledger.verify_audit() == []


def test_retry_after_failure(ledger: Ledger, clock: Clock) -> None:
    ledger.record_discovered([disc(ORIGIN, 0)])
    mid = msg_id(encode(ORIGIN, 0))
    cp = checkpoint_for(ledger)
    drive(ledger, [mid], S.SUBMITTED, cp)
    first = ledger.get(mid)
    assert first is not None and first.delivery_tx_hash is not None
    with ledger.atomic() as batch:
        batch.update_transaction(DEST, first.delivery_tx_hash, TxStatus.FAILED, error="revert")
        batch.transition([mid], S.FAILED, reason="recipient reverted", retry_at=clock.now + 60)
    row = ledger.get(mid)
    assert row is not None and row.reason == "recipient reverted"
    assert row.next_attempt_at == clock.now + 60
    assert ledger.due_for_retry() == []
    assert ledger.due_for_retry(clock.now + 59.9) == []
    clock.advance(60)
    assert [m.id for m in ledger.due_for_retry()] == [mid]
    assert [m.id for m in ledger.due_for_retry(destination=DEST + 1)] == []

    # Back in the queue: it keeps its checkpoint, so none is needed.
    assert ledger.transition([mid], S.ATTESTED) == [mid]
    ledger.record_transaction(tx_for(seed=2), [mid])
    row = ledger.get(mid)
    assert row is not None and row.attempts == 2 and row.next_attempt_at is None
    assert row.checkpoint_id == cp and row.reason is None
    assert ledger.due_for_retry(clock.now + 1e9) == []


def test_replacement_transaction(ledger: Ledger) -> None:
    ledger.record_discovered([disc(ORIGIN, n) for n in range(2)])
    ids = [msg_id(encode(ORIGIN, n)) for n in range(2)]
    drive(ledger, ids, S.ATTESTED, checkpoint_for(ledger))
    old = ledger.record_transaction(tx_for(seed=1), ids)
    new = ledger.record_transaction(tx_for(seed=2, replaces=old.hash), ids)
    assert new.replaces == old.hash
    replaced = ledger.get_transaction(DEST, old.hash)
    assert replaced is not None and replaced.status is TxStatus.REPLACED
    assert replaced.replaced_by == new.hash
    row = ledger.get(ids[0])
    assert row is not None and row.delivery_tx_hash == new.hash and row.attempts == 1
    assert [(e.from_status, e.to_status, e.tx_hash) for e in ledger.history(ids[0])][-2:] == [
        (S.ATTESTED, S.SUBMITTED, old.hash),
        (S.SUBMITTED, S.SUBMITTED, new.hash),
    ]
    # Recording the same transaction again is a no-op.
    again = ledger.record_transaction(tx_for(seed=2, replaces=old.hash), ids)
    assert again.id == new.id and len(ledger.history(ids[0])) == 5
    # A replaced transaction cannot carry anything while it is only replaced…
    with pytest.raises(InvalidReference, match="not pending or confirmed"):
        ledger.transition(ids, S.SUBMITTED, tx_hash=old.hash)
    # …but it may be the broadcast that is mined after all: then it is confirmed and carries
    # its messages again (a fee bump does not take the older hash out of the mempools).
    ledger.update_transaction(DEST, old.hash, TxStatus.CONFIRMED, block_number=9)
    assert ledger.transition(ids, S.SUBMITTED, tx_hash=old.hash) == ids
    row = ledger.get(ids[0])
    assert row is not None and row.delivery_tx_hash == old.hash
    with pytest.raises(IllegalTransition) as caught:
        ledger.update_transaction(DEST, old.hash, TxStatus.REPLACED)
    assert (caught.value.kind, caught.value.from_status, caught.value.to_status) == (
        "transaction",
        "confirmed",
        "replaced",
    )


def test_transaction_must_be_on_the_destination(ledger: Ledger) -> None:
    ledger.record_discovered([disc(ORIGIN, 0)])
    mid = msg_id(encode(ORIGIN, 0))
    drive(ledger, [mid], S.ATTESTED, checkpoint_for(ledger))
    with pytest.raises(InvalidReference, match="chain 2"):
        ledger.record_transaction(tx_for(chain=DEST + 5, seed=1), [mid])
    # All or nothing: the transaction was not recorded either.
    assert ledger.get_transaction(DEST + 5, keccak256(b"delivery 1")) is None
    with pytest.raises(InvalidReference, match="no recorded transaction"):
        ledger.transition([mid], S.SUBMITTED, tx_hash=keccak256(b"never recorded"))


# --------------------------------------------------------------------------------------------
# The transition table


def test_transition_table_is_the_spec() -> None:
    implemented = {(a.value, b.value) for a, targets in TRANSITIONS.items() for b in targets}
    assert implemented == SPEC_EDGES
    assert set(TRANSITIONS) == set(MessageStatus)
    assert TRANSITIONS[S.DELIVERED] == frozenset()
    assert all(S.DELIVERED in TRANSITIONS[s] for s in MessageStatus if s is not S.DELIVERED)
    non_terminal = [s for s in MessageStatus if s not in (S.DELIVERED, S.SKIPPED)]
    assert all(S.SKIPPED in TRANSITIONS[s] for s in non_terminal)
    assert {t for s, ts in TX_TRANSITIONS.items() for t in ts} == {
        TxStatus.CONFIRMED,
        TxStatus.FAILED,
        TxStatus.REPLACED,
    }


@pytest.mark.parametrize(("frm", "to"), ILLEGAL)
def test_illegal_transition_raises_and_writes_nothing(backend: Backend, frm: str, to: str) -> None:
    ledger = open_ledger(backend.fresh(), clock=Clock())
    try:
        ledger.record_discovered([disc(ORIGIN, 0), disc(ORIGIN, 1)])
        victim, bystander = msg_id(encode(ORIGIN, 0)), msg_id(encode(ORIGIN, 1))
        cp = checkpoint_for(ledger)
        drive(ledger, [victim], S(frm), cp)
        # The bystander comes first and its own move is legal: all or nothing still holds.
        legal_from = next(a for a in PATHS if a.value != to and (a.value, to) in SPEC_EDGES)
        drive(ledger, [bystander], legal_from, cp)
        before = {m.id: (m.status, m.updated_at) for m in ledger.messages()}
        events = len(ledger.history(victim)) + len(ledger.history(bystander))
        with pytest.raises(IllegalTransition) as caught:
            move(ledger, [bystander, victim], S(to), cp)
        error = caught.value
        assert (error.item_id, error.from_status, error.to_status) == (victim, frm, to)
        assert victim in str(error) and f"{frm} -> {to}" in str(error)
        assert isinstance(error, LedgerError)
        assert {m.id: (m.status, m.updated_at) for m in ledger.messages()} == before
        assert len(ledger.history(victim)) + len(ledger.history(bystander)) == events
        assert ledger.verify_audit() == []
    finally:
        ledger.close()


def test_same_status_is_an_idempotent_no_op(ledger: Ledger, clock: Clock) -> None:
    ledger.record_discovered([disc(ORIGIN, 0)])
    mid = msg_id(encode(ORIGIN, 0))
    cp = checkpoint_for(ledger)

    def repeat(to: MessageStatus, **kwargs: object) -> None:
        clock.advance(1)
        events = len(ledger.history(mid))
        assert ledger.transition([mid], to, **kwargs) == []  # type: ignore[arg-type]
        assert len(ledger.history(mid)) == events
        assert ledger.get(mid).updated_at < clock.now  # type: ignore[union-attr]

    repeat(S.DISCOVERED, reason="again")
    ledger.transition([mid], S.FINAL)
    repeat(S.FINAL)
    ledger.transition([mid], S.ATTESTED, checkpoint_id=cp)
    repeat(S.ATTESTED, checkpoint_id=cp)
    tx = ledger.record_transaction(tx_for(seed=7), [mid])
    repeat(S.SUBMITTED, tx_hash=tx.hash)  # the same carrier again: nothing to record
    assert ledger.record_transaction(tx_for(seed=7), [mid]).id == tx.id
    ledger.transition([mid], S.DELIVERED)
    repeat(S.DELIVERED, tx_hash=tx.hash)  # "already delivered" reported twice
    row = ledger.get(mid)
    assert row is not None and row.status is S.DELIVERED and row.attempts == 1


def test_transition_arguments_are_checked(ledger: Ledger) -> None:
    ledger.record_discovered([disc(ORIGIN, 0)])
    mid = msg_id(encode(ORIGIN, 0))
    tx = keccak256(b"x")
    for to, kwargs, match in [
        (S.FAILED, {}, "needs a reason"),
        (S.SKIPPED, {}, "needs a reason"),
        (S.DISCOVERED, {}, "needs a reason"),
        (S.SUBMITTED, {}, "needs the tx_hash"),
        (S.FINAL, {"checkpoint_id": 1}, "checkpoint_id applies only"),
        (S.FINAL, {"tx_hash": tx}, "tx_hash applies only"),
        (S.SKIPPED, {"reason": "x", "retry_at": 5.0}, "retry_at applies only"),
    ]:
        with pytest.raises(ValueError, match=match):
            ledger.transition([mid], to, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="32 bytes"):
        ledger.transition(["0x1234"], S.FINAL)
    with pytest.raises(UnknownRecord) as caught:
        ledger.transition([mid, hexed(keccak256(b"nope"))], S.FINAL)
    assert caught.value.kind == "message" and isinstance(caught.value, LookupError)
    assert ledger.get(mid).status is S.DISCOVERED  # type: ignore[union-attr]
    assert ledger.transition([], S.FINAL) == []


def test_attested_needs_a_covering_checkpoint(ledger: Ledger) -> None:
    ledger.record_discovered([disc(ORIGIN, 5), disc(OTHER_ORIGIN, 0)])
    mid, other = msg_id(encode(ORIGIN, 5)), msg_id(encode(OTHER_ORIGIN, 0))
    ledger.transition([mid, other], S.FINAL)
    with pytest.raises(InvalidReference, match="needs a checkpoint"):
        ledger.transition([mid], S.ATTESTED)
    with pytest.raises(UnknownRecord, match="checkpoint"):
        ledger.transition([mid], S.ATTESTED, checkpoint_id=12345)
    too_small = checkpoint_for(ledger, index=4)
    with pytest.raises(InvalidReference, match="cannot cover"):
        ledger.transition([mid], S.ATTESTED, checkpoint_id=too_small)
    covering = checkpoint_for(ledger, index=5)
    with pytest.raises(InvalidReference, match="cannot cover"):  # wrong origin
        ledger.transition([mid, other], S.ATTESTED, checkpoint_id=covering)
    assert ledger.transition([mid], S.ATTESTED, checkpoint_id=covering) == [mid]
    assert ledger.history(mid)[-1].checkpoint_id == covering


def test_operator_requeue_of_a_skipped_message(ledger: Ledger) -> None:
    ledger.record_discovered([disc(ORIGIN, 0)])
    mid = msg_id(encode(ORIGIN, 0))
    drive(ledger, [mid], S.FAILED, checkpoint_for(ledger))
    ledger.transition([mid], S.SKIPPED, reason="denied by operator")
    assert ledger.get(mid).checkpoint_id is not None  # type: ignore[union-attr]
    ledger.transition([mid], S.DISCOVERED, reason="operator retry")
    row = ledger.get(mid)
    assert row is not None and row.status is S.DISCOVERED and row.checkpoint_id is None
    assert row.reason == "operator retry"
    ledger.transition([mid], S.FINAL)
    with pytest.raises(InvalidReference):  # it must be attested afresh
        ledger.transition([mid], S.ATTESTED)


# --------------------------------------------------------------------------------------------
# Discovery: idempotence and conflicts (T16, T21)


def test_rediscovery_is_idempotent(ledger: Ledger, clock: Clock) -> None:
    records = [disc(ORIGIN, n) for n in range(4)]
    assert ledger.record_discovered(records) == 4
    assert ledger.record_discovered(records + records) == 0
    ids = [msg_id(r.message) for r in records]
    drive(ledger, ids[:1], S.DELIVERED, checkpoint_for(ledger))
    clock.advance(10)
    # Seen again (a re-scan after a restart, even from another block): nothing changes.
    assert ledger.record_discovered([disc(ORIGIN, n, block=11) for n in range(5)]) == 1
    row = ledger.get(ids[0])
    assert row is not None and row.status is S.DELIVERED and row.source_block_number == 10
    assert [e.to_status for e in ledger.history(ids[0])].count(S.DISCOVERED) == 1
    assert ledger.counts_by_status()[S.DISCOVERED] == 4


def test_same_origin_nonce_with_another_id_is_a_conflict(ledger: Ledger) -> None:
    ledger.record_discovered([disc(ORIGIN, 0), disc(ORIGIN, 1)])
    original = msg_id(encode(ORIGIN, 1))
    forged = disc(ORIGIN, 1, body=b"different body")
    with pytest.raises(LedgerConflict) as caught:
        # A fresh message rides in the same batch: it must not be written either.
        ledger.record_discovered([disc(ORIGIN, 2), forged])
    assert "nonce 1" in str(caught.value) and original in str(caught.value)
    assert msg_id(forged.message) in caught.value.conflicts[0]
    assert ledger.get(msg_id(forged.message)) is None
    assert ledger.get(msg_id(encode(ORIGIN, 2))) is None
    assert ledger.get(original).message == encode(ORIGIN, 1)  # type: ignore[union-attr]
    # Two claims within one batch.
    with pytest.raises(LedgerConflict, match="one batch"):
        ledger.record_discovered([disc(ORIGIN, 7), disc(ORIGIN, 7, body=b"x")])
    assert ledger.get(msg_id(encode(ORIGIN, 7))) is None
    # The same nonce on another origin is another message.
    assert ledger.record_discovered([disc(OTHER_ORIGIN, 1)]) == 1


def test_bad_messages_are_refused(ledger: Ledger) -> None:
    good = disc(ORIGIN, 0)

    def record(message: bytes, block_hash: bytes | str = good.block_hash) -> None:
        ledger.record_discovered([DiscoveredMessage(message, 1, block_hash, good.tx_hash, 0)])

    with pytest.raises(ValueError, match="shorter than the 77-byte header"):
        record(b"\x01" * 76)
    with pytest.raises(ValueError, match="version 2"):
        record(b"\x02" + good.message[1:])
    with pytest.raises(ValueError, match="block hash"):
        record(good.message, b"\x00" * 31)
    with pytest.raises(ValueError, match="hex"):
        record(good.message, "0xzz" * 16)
    assert ledger.messages() == []


def test_ids_accept_bytes_or_hex(ledger: Ledger) -> None:
    ledger.record_discovered([disc(ORIGIN, 0)])
    raw = keccak256(encode(ORIGIN, 0))
    assert ledger.get(raw) is not None
    assert ledger.get("0x" + raw.hex().upper()[0:64]) is not None
    assert ledger.transition([raw], S.FINAL) == [hexed(raw)]


# --------------------------------------------------------------------------------------------
# Checkpoints, signatures, cursors


def test_checkpoints_and_signatures(ledger: Ledger) -> None:
    cp = checkpoint_for(ledger, index=9)
    assert checkpoint_for(ledger, index=9, block=6) == cp  # identical: idempotent
    with pytest.raises(LedgerConflict, match="index 9"):
        ledger.save_checkpoint(
            ORIGIN, OUTBOX, "0x" + "66" * 32, 9, block_number=7, block_hash=keccak256(b"b")
        )
    later = checkpoint_for(ledger, index=12)
    latest = ledger.latest_checkpoint(ORIGIN, OUTBOX)
    assert latest is not None and latest.id == later and latest.index == 12
    assert ledger.latest_checkpoint(OTHER_ORIGIN) is None
    stored = ledger.get_checkpoint(cp)
    assert stored is not None and (stored.root, stored.outbox) == (ROOT_HASH, OUTBOX)

    signer = b"\xaa" * 20
    assert ledger.add_signature(cp, signer, b"\x01" * 65)
    assert not ledger.add_signature(cp, signer, b"\x02" * 65)  # first one kept
    assert [s.signature for s in ledger.signatures(cp)] == [b"\x01" * 65]
    with pytest.raises(ValueError, match="65 bytes"):
        ledger.add_signature(cp, b"\xbb" * 20, b"\x01" * 64)
    with pytest.raises(UnknownRecord):
        ledger.add_signature(999, b"\xbb" * 20, b"\x01" * 65)


def test_scan_cursor(ledger: Ledger, clock: Clock) -> None:
    assert ledger.get_cursor(ORIGIN) is None
    ledger.set_cursor(ORIGIN, 101, keccak256(b"block 100"))
    ledger.set_cursor(ORIGIN, 7, None, stream="inbox")
    cursor = ledger.get_cursor(ORIGIN)
    assert cursor is not None and cursor.next_block == 101
    assert cursor.last_block_hash == hexed(keccak256(b"block 100"))
    assert cursor.updated_at == clock.now
    assert ledger.get_cursor(ORIGIN, stream="inbox").next_block == 7  # type: ignore[union-attr]
    assert ledger.get_cursor(DEST) is None
    # Scanning and advancing the cursor belong in one commit.
    with ledger.atomic() as batch:
        batch.record_discovered([disc(ORIGIN, 0, block=101)])
        batch.set_cursor(ORIGIN, 102, keccak256(b"block 101"))
    assert ledger.get_cursor(ORIGIN).next_block == 102  # type: ignore[union-attr]


# --------------------------------------------------------------------------------------------
# Reorgs (T21)


def test_reorg_drops_unattested_messages_and_rewinds(ledger: Ledger) -> None:
    ledger.record_discovered([disc(ORIGIN, n, block=10 + n) for n in range(5)])
    ledger.record_discovered([disc(OTHER_ORIGIN, 9, block=50)])
    ids = [msg_id(encode(ORIGIN, n)) for n in range(5)]
    cp = checkpoint_for(ledger, index=1, block=11)
    drive(ledger, ids[:2], S.DELIVERED, cp)  # blocks 10, 11: stay canonical
    ledger.transition(ids[3:4], S.FINAL)
    ledger.transition(ids[4:5], S.SKIPPED, reason="spam")
    ledger.set_cursor(ORIGIN, 20, keccak256(b"block 19"))
    ledger.save_checkpoint(  # unsigned, proven at an orphaned block: simply dropped
        ORIGIN, OUTBOX, "0x" + "55" * 32, 4, block_number=14, block_hash=keccak256(b"14")
    )

    ancestor = keccak256(b"block 11")
    removed = ledger.invalidate_above(ORIGIN, 11, ancestor)
    assert removed == ids[2:]
    assert [m.id for m in ledger.messages(origin=ORIGIN)] == ids[:2]
    assert ledger.get(msg_id(encode(OTHER_ORIGIN, 9))) is not None
    assert ledger.latest_checkpoint(ORIGIN).index == 1  # type: ignore[union-attr]
    cursor = ledger.get_cursor(ORIGIN)
    assert cursor is not None
    assert (cursor.next_block, cursor.last_block_hash) == (12, hexed(ancestor))
    trail = ledger.history(ids[3])
    assert (trail[-1].from_status, trail[-1].to_status) == (S.FINAL, None)
    assert "reorg" in (trail[-1].reason or "")
    assert ledger.verify_audit() == []
    # The new canonical chain has a different message at nonce 2: no conflict now.
    assert ledger.record_discovered([disc(ORIGIN, 2, block=13, body=b"new history")]) == 1
    assert ledger.verify_audit() == []
    # A shallower rewind never moves the cursor forward.
    assert ledger.invalidate_above(ORIGIN, 30, keccak256(b"block 30")) == []
    assert ledger.get_cursor(ORIGIN).next_block == 12  # type: ignore[union-attr]


@pytest.mark.parametrize("status", [S.ATTESTED, S.SUBMITTED, S.FAILED, S.DELIVERED])
def test_reorg_of_attested_work_halts(backend: Backend, status: MessageStatus) -> None:
    ledger = open_ledger(backend.fresh(), clock=Clock())
    try:
        ledger.record_discovered([disc(ORIGIN, 0, block=10), disc(ORIGIN, 1, block=20)])
        ids = [msg_id(encode(ORIGIN, n)) for n in range(2)]
        drive(ledger, ids[1:], status, checkpoint_for(ledger, block=5))
        ledger.set_cursor(ORIGIN, 30, keccak256(b"29"))
        with pytest.raises(LedgerConflict, match="halting") as caught:
            ledger.invalidate_above(ORIGIN, 15, keccak256(b"15"))
        assert ids[1] in caught.value.conflicts[0] and str(status) in caught.value.conflicts[0]
        assert len(ledger.messages()) == 2  # nothing changed
        assert ledger.get_cursor(ORIGIN).next_block == 30  # type: ignore[union-attr]
    finally:
        ledger.close()


def test_reorg_of_a_signed_checkpoint_halts(ledger: Ledger) -> None:
    ledger.record_discovered([disc(ORIGIN, 0, block=10)])
    cp = checkpoint_for(ledger, index=0, block=20)
    ledger.add_signature(cp, b"\x01" * 20, b"\x01" * 65)
    with pytest.raises(LedgerConflict, match="1 signatures"):
        ledger.invalidate_above(ORIGIN, 15, keccak256(b"15"))
    assert ledger.get_checkpoint(cp) is not None


# --------------------------------------------------------------------------------------------
# Atomicity and the audit trail


def test_atomic_batch_is_all_or_nothing(ledger: Ledger) -> None:
    ledger.record_discovered([disc(ORIGIN, 0), disc(ORIGIN, 1)])
    a, b = msg_id(encode(ORIGIN, 0)), msg_id(encode(ORIGIN, 1))
    with pytest.raises(RuntimeError), ledger.atomic() as batch:
        held = batch.get(a)
        batch.transition([a], S.FINAL)
        assert held is not None and held.status is S.FINAL  # objects it handed out follow
        assert batch.get(a).status is S.FINAL  # type: ignore[union-attr]  # reads its own writes
        raise RuntimeError("crash in the middle")
    assert ledger.get(a).status is S.DISCOVERED  # type: ignore[union-attr]

    # Swallowing a failed operation does not let the rest commit.
    with pytest.raises(LedgerError, match="rolled back"), ledger.atomic() as batch:
        batch.transition([a], S.FINAL)
        with pytest.raises(IllegalTransition):
            batch.transition([b], S.SUBMITTED, tx_hash=keccak256(b"t"))
    assert ledger.get(a).status is S.DISCOVERED  # type: ignore[union-attr]
    with ledger.atomic() as batch:
        pass
    with pytest.raises(LedgerError, match="ended"):
        batch.transition([a], S.FINAL)


def test_audit_trail_is_append_only(ledger: Ledger, clock: Clock) -> None:
    ledger.record_discovered([disc(ORIGIN, 0)])
    mid = msg_id(encode(ORIGIN, 0))
    clock.advance(5)
    ledger.transition([mid], S.SKIPPED, reason="operator: spam")
    trail = ledger.history(mid)
    assert [(e.from_status, e.to_status, e.reason, e.at) for e in trail] == [
        (None, S.DISCOVERED, None, 1_000.0),
        (S.DISCOVERED, S.SKIPPED, "operator: spam", 1_005.0),
    ]
    with ledger.engine.connect() as conn:
        for statement in ("UPDATE status_events SET reason = 'x'", "DELETE FROM status_events"):
            with pytest.raises(sa.exc.DatabaseError, match="append-only"):
                conn.exec_driver_sql(statement)
            conn.rollback()
    assert len(ledger.history(mid)) == 2


def test_verify_audit_detects_tampering(ledger: Ledger) -> None:
    ledger.record_discovered([disc(ORIGIN, 0)])
    mid = msg_id(encode(ORIGIN, 0))
    assert ledger.verify_audit() == []
    with ledger.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE messages SET status = 'delivered'")
    assert ledger.verify_audit() == [f"{mid}: status delivered but last event says discovered"]


def test_queries(ledger: Ledger) -> None:
    ledger.record_discovered([disc(ORIGIN, n) for n in range(6)])
    ledger.record_discovered([disc(OTHER_ORIGIN, n, dest=DEST + 1) for n in range(3)])
    ids = [msg_id(encode(ORIGIN, n)) for n in range(6)]
    ledger.transition(ids[:4], S.FINAL)
    assert [m.nonce for m in ledger.by_status(S.FINAL, 2)] == [0, 1]
    assert ledger.by_status(S.FINAL, origin=OTHER_ORIGIN) == []
    assert len(ledger.by_status(S.DISCOVERED)) == 5
    assert len(ledger.by_status(S.DISCOVERED, destination=DEST + 1)) == 3
    assert ledger.counts_by_status(origin=ORIGIN)[S.FINAL] == 4
    assert ledger.counts_by_status(destination=DEST + 1) == {
        s: 3 if s is S.DISCOVERED else 0 for s in S
    }
    page = ledger.messages(limit=4)
    rest = ledger.messages(after=(page[-1].origin, page[-1].nonce))
    assert [(m.origin, m.nonce) for m in page + rest] == [(ORIGIN, n) for n in range(6)] + [
        (OTHER_ORIGIN, n) for n in range(3)
    ]


# --------------------------------------------------------------------------------------------
# Opening: pragmas, locking, integrity, schema version


def test_sqlite_durability_settings(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path / "ledger.db")
    with ledger.engine.connect() as conn:

        def pragma(name: str) -> object:
            return conn.exec_driver_sql(f"PRAGMA {name}").scalar()

        assert pragma("journal_mode") == "wal"
        assert pragma("synchronous") == 2  # FULL
        assert pragma("foreign_keys") == 1
        assert pragma("busy_timeout") == 30_000
        with pytest.raises(sa.exc.IntegrityError):  # foreign keys are enforced
            conn.exec_driver_sql("INSERT INTO transaction_messages VALUES (42, '0x00')")
    ledger.close()
    raw = sqlite3.connect(tmp_path / "ledger.db")
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)  # stored in the file
        version = raw.execute("SELECT value FROM ledger_meta WHERE key = 'schema_version'")
        assert version.fetchone() == (str(SCHEMA_VERSION),)
    finally:
        raw.close()


def test_writers_take_the_lock_up_front(backend: Backend, tmp_path: Path) -> None:
    location = backend.fresh("lock", tmp_path)
    first = open_ledger(location)
    second = open_ledger(location, busy_timeout=0.2)
    waiter = ThreadPoolExecutor(1)
    try:
        first.record_discovered([disc(ORIGIN, 0)])
        mid = msg_id(encode(ORIGIN, 0))
        with first.atomic() as batch:
            # Only a read so far, yet the write lock is held (SQLite: BEGIN IMMEDIATE;
            # PostgreSQL: the advisory lock, taken when the write transaction begins), and a
            # second writer gets LedgerBusy after its busy_timeout on both (PostgreSQL: the
            # transaction's lock_timeout) instead of waiting for ever.
            batch.get(mid)
            started = time.monotonic()
            # Bounded: a writer that would wait for ever fails the test (TimeoutError), and the
            # batch's rollback then releases it.
            refused = waiter.submit(second.transition, [mid], S.FINAL).exception(timeout=10)
            assert isinstance(refused, LedgerBusy), refused
            assert time.monotonic() - started >= 0.15
            assert second.get(mid) is not None  # readers are never blocked (WAL; MVCC)
            batch.transition([mid], S.FINAL)
        assert second.get(mid).status is S.FINAL  # type: ignore[union-attr]
    finally:
        waiter.shutdown(wait=True)
        first.close()
        second.close()


def test_integrity_check_refuses_a_corrupt_file(tmp_path: Path) -> None:
    good = tmp_path / "good.db"
    with open_ledger(good) as ledger:
        ledger.record_discovered([disc(ORIGIN, n, body=b"x" * 300) for n in range(400)])
    assert not Path(f"{good}-wal").exists()  # closing checkpointed the WAL into the file
    size = good.stat().st_size
    page = 4096
    assert size > 40 * page

    header = tmp_path / "header.db"
    shutil.copy(good, header)
    with header.open("r+b") as f:
        f.write(b"garbage!" * 16)
    interior = tmp_path / "interior.db"
    shutil.copy(good, interior)
    with interior.open("r+b") as f:
        # A page in the middle of the messages, not a fixed number: the first pages are the
        # tables' root pages, and an empty table's has nothing at this offset to damage.
        f.seek((size // page // 2) * page + 100)
        f.write(b"\x00\x13\xff\x01" * 200)

    for corrupt in (header, interior):
        before = corrupt.read_bytes()
        with pytest.raises(LedgerCorrupt) as caught:
            open_ledger(corrupt)
        assert str(corrupt) in str(caught.value) and "\n" not in str(caught.value)
        assert corrupt.read_bytes() == before  # refused without touching it
    with pytest.raises(LedgerCorrupt, match="integrity_check"):
        open_ledger(interior)
    with open_ledger(good) as ledger:  # the original is fine
        assert len(ledger.messages()) == 400


def test_newer_schema_is_refused(backend: Backend) -> None:
    location = backend.fresh("schema")
    open_ledger(location).close()
    raw = backend.raw(location)
    try:
        raw.execute("UPDATE ledger_meta SET value = '99' WHERE key = 'schema_version'")
        raw.commit()
    finally:
        raw.close()
    with pytest.raises(LedgerSchemaError, match="99 is newer"):
        open_ledger(location)


def test_opening_errors(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="does not exist"):
        open_ledger(tmp_path / "missing" / "l.db")
    with pytest.raises(LedgerError, match="directory"):
        open_ledger(tmp_path)
    with pytest.raises(LedgerError, match="in-memory"):
        open_ledger(":memory:")
    with pytest.raises(LedgerError, match="in-memory"):
        open_ledger("sqlite://")
    url_ledger = open_ledger(f"sqlite:///{tmp_path / 'url.db'}")
    assert url_ledger.location.endswith("url.db")
    url_ledger.close()


# --------------------------------------------------------------------------------------------
# Model-based: random legal and illegal moves against a model


@dataclass
class ModelMessage:
    status: MessageStatus
    origin: int
    block: int
    attested: bool = False  # has a checkpoint reference


ORIGINS = (ORIGIN, OTHER_ORIGIN)
candidate = st.tuples(
    st.sampled_from(ORIGINS), st.integers(0, 4), st.integers(0, 1), st.integers(1, 6)
)


class LedgerMachine(RuleBasedStateMachine):
    """Drives the ledger with random batches and compares it with a dict-based model.

    ``backend`` (set by the test) gives each example a fresh ledger on its backend."""

    backend: Backend
    templates: Templates

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock(0.0)
        self.location = self.templates.fresh(self.backend, "machine")
        self.ledger = open_ledger(self.location, clock=self.clock)
        self.model: dict[str, ModelMessage] = {}
        self.keys: dict[tuple[int, int], str] = {}
        self.events = 0
        self.checkpoints: dict[int, int] = {}

    @initialize()
    def checkpoints_exist(self) -> None:
        for origin in ORIGINS:  # proven at block 0: never orphaned by the reorgs below
            self.checkpoints[origin] = self.ledger.save_checkpoint(
                origin, OUTBOX, ROOT_HASH, 1_000, block_number=0, block_hash=keccak256(b"0")
            )

    def teardown(self) -> None:
        self.ledger.close()
        self.backend.release(self.location)

    @rule(batch=st.lists(candidate, min_size=1, max_size=4))
    def discover(self, batch: list[tuple[int, int, int, int]]) -> None:
        self.clock.advance(1)
        records = [disc(o, n, block=b, body=bytes([v])) for o, n, v, b in batch]
        seen: dict[tuple[int, int], str] = {}
        conflict = False
        fresh: dict[str, ModelMessage] = {}
        fresh_keys: dict[str, tuple[int, int]] = {}
        for (origin, nonce, _, block), record in zip(batch, records, strict=True):
            mid = msg_id(record.message)
            key = (origin, nonce)
            if seen.setdefault(key, mid) != mid or self.keys.get(key, mid) != mid:
                conflict = True
            if mid not in self.model and mid not in fresh:
                fresh[mid] = ModelMessage(S.DISCOVERED, origin, block)
                fresh_keys[mid] = key
        if conflict:
            with pytest.raises(LedgerConflict):
                self.ledger.record_discovered(records)
            return
        assert self.ledger.record_discovered(records) == len(fresh)
        for mid, message in fresh.items():
            self.model[mid] = message
            self.keys[fresh_keys[mid]] = mid
        self.events += len(fresh)

    @rule(data=st.data(), to=st.sampled_from(list(MessageStatus)), unknown=st.booleans())
    def transition(self, data: st.DataObject, to: MessageStatus, unknown: bool) -> None:
        if not self.model:
            return
        ids = data.draw(
            st.lists(st.sampled_from(sorted(self.model)), min_size=1, max_size=3, unique=True)
        )
        if unknown and data.draw(st.integers(0, 4)) == 0:
            ids.insert(data.draw(st.integers(0, len(ids))), hexed(keccak256(b"unknown")))
        self.clock.advance(1)
        cp_origin = self.model[ids[0]].origin if ids[0] in self.model else ORIGIN
        expected: type[Exception] | None = None
        changed: list[str] = []
        if any(i not in self.model for i in ids):
            expected = UnknownRecord
        else:
            for mid in ids:
                message = self.model[mid]
                if message.status is to and to is not S.SUBMITTED:
                    continue
                if (message.status.value, to.value) not in SPEC_EDGES:
                    expected = IllegalTransition
                    break
                if to is S.ATTESTED and message.origin != cp_origin:
                    expected = InvalidReference
                    break
                changed.append(mid)
        if expected is not None:
            with pytest.raises(expected):
                move(self.ledger, ids, to, self.checkpoints[cp_origin])
            return
        move(self.ledger, ids, to, self.checkpoints[cp_origin])
        for mid in changed:
            self.model[mid].status = to
            if to is S.ATTESTED:
                self.model[mid].attested = True
            elif to is S.DISCOVERED:
                self.model[mid].attested = False
        self.events += len(changed)

    @rule(data=st.data())
    def advance(self, data: st.DataObject) -> None:
        """A legal move for messages that share a status (random moves are mostly illegal)."""
        if not self.model:
            return
        status = data.draw(st.sampled_from(sorted({m.status for m in self.model.values()})))
        same = sorted(mid for mid, m in self.model.items() if m.status is status)
        ids = data.draw(st.lists(st.sampled_from(same), min_size=1, max_size=3, unique=True))
        origin = self.model[ids[0]].origin
        ids = [mid for mid in ids if self.model[mid].origin == origin]
        targets = sorted(S(b) for a, b in SPEC_EDGES if a == status.value)
        if not targets:
            return
        to = data.draw(st.sampled_from(targets))
        self.clock.advance(1)
        assert move(self.ledger, ids, to, self.checkpoints[origin]) == ids
        for mid in ids:
            self.model[mid].status = to
            if to is S.ATTESTED:
                self.model[mid].attested = True
            elif to is S.DISCOVERED:
                self.model[mid].attested = False
        self.events += len(ids)

    @rule(origin=st.sampled_from(ORIGINS), block=st.integers(1, 7))
    def reorg(self, origin: int, block: int) -> None:
        self.clock.advance(1)
        orphans = [mid for mid, m in self.model.items() if m.origin == origin and m.block > block]
        halt = any(
            self.model[mid].status.value not in DROPPABLE or self.model[mid].attested
            for mid in orphans
        )
        if halt:
            with pytest.raises(LedgerConflict):
                self.ledger.invalidate_above(origin, block, keccak256(b"%d" % block))
            return
        removed = self.ledger.invalidate_above(origin, block, keccak256(b"%d" % block))
        assert sorted(removed) == sorted(orphans)
        for mid in orphans:
            del self.model[mid]
        self.keys = {k: v for k, v in self.keys.items() if v in self.model}
        self.events += len(orphans)

    @invariant()
    def ledger_matches_model(self) -> None:
        rows = {m.id: m for m in self.ledger.messages(limit=10_000)}
        assert {i: r.status for i, r in rows.items()} == {
            i: m.status for i, m in self.model.items()
        }
        assert {i: r.checkpoint_id is not None for i, r in rows.items()} == {
            i: m.attested for i, m in self.model.items()
        }
        expected_counts = Counter(m.status for m in self.model.values())
        assert self.ledger.counts_by_status() == {s: expected_counts[s] for s in S}
        with self.ledger.engine.connect() as conn:
            events = conn.exec_driver_sql("SELECT count(*) FROM status_events").scalar()
        assert events == self.events
        assert self.ledger.verify_audit() == []


def test_ledger_state_machine(backend: Backend, templates: Templates) -> None:
    machine = type(
        f"LedgerMachine_{backend.name}",
        (LedgerMachine,),
        {"backend": backend, "templates": templates},
    )
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=25,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


# --------------------------------------------------------------------------------------------
# Crash safety and concurrency, with real processes


def prepare_shared_ledger(location: str, messages: int) -> None:
    with open_ledger(location) as ledger:
        ledger.record_discovered([disc(ORIGIN, n) for n in range(messages)])
        ledger.save_checkpoint(
            ORIGIN, OUTBOX, ROOT_HASH, messages - 1, block_number=1, block_hash=keccak256(b"1")
        )


def spawn(location: str, seed: int, mode: str, seconds: float = 0.0) -> subprocess.Popen[str]:
    """Start a worker and wait until it has imported everything (it then waits for ``go``)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), location, str(seed), mode, str(seconds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    expect_line(proc, "loaded")
    return proc


def go(*procs: subprocess.Popen[str]) -> None:
    """Tell workers to start (all at once), then wait until each has opened the ledger."""
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    for proc in procs:
        expect_line(proc, "ready")


def expect_line(proc: subprocess.Popen[str], expected: str) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != expected:
        proc.kill()
        _, err = proc.communicate(timeout=10)
        pytest.fail(f"worker said {line!r}, not {expected!r}: {err}")


def check_database(backend: Backend, location: str) -> int:
    """Check a ledger with plain sqlite3 or psycopg; return the number of audit events.

    Every message's status must equal the ``to`` of its last audit event (its last committed
    transition), every recorded move must be in the spec, consecutive events must chain, and
    every submitted message must sit in a recorded transaction that lists it. SQLite files must
    also pass ``integrity_check``.
    """
    raw = backend.raw(location)
    mark = "?" if backend.name == "sqlite" else "%s"  # the drivers' placeholders
    try:
        if backend.name == "sqlite":
            assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        statuses = dict(raw.execute("SELECT id, status FROM messages").fetchall())
        last: dict[str, str | None] = {}
        events = 0
        for mid, frm, to in raw.execute(
            "SELECT message_id, from_status, to_status FROM status_events ORDER BY id"
        ).fetchall():
            events += 1
            assert frm == last.get(mid), f"{mid}: event from {frm} after {last.get(mid)}"
            assert (frm is None and to == "discovered") or (frm, to) in SPEC_EDGES, (frm, to)
            last[mid] = to
        assert statuses == last, "a status differs from its last committed transition"
        for mid, status, tx_hash, checkpoint in raw.execute(
            "SELECT id, status, delivery_tx_hash, checkpoint_id FROM messages"
        ).fetchall():
            if status in ("attested", "submitted", "failed"):
                assert checkpoint is not None, (mid, status)
            if status == "submitted":
                linked = raw.execute(
                    "SELECT t.status FROM transactions t JOIN transaction_messages l "
                    f"ON l.transaction_id = t.id WHERE l.message_id = {mark} AND t.hash = {mark}",
                    (mid, tx_hash),
                ).fetchall()
                assert len(linked) == 1, (mid, tx_hash)
        return events
    finally:
        raw.close()


def test_crash_safety_under_sigkill(backend: Backend, tmp_path: Path) -> None:
    location = backend.fresh("crash", tmp_path)
    prepare_shared_ledger(location, 120)
    rng = random.Random(20240611)
    events = [check_database(backend, location)]
    rounds = 6
    # Every worker imports up front, in parallel; each round then costs little more than the
    # random time its worker is allowed to live before SIGKILL.
    workers = [spawn(location, seed=round_ + 1, mode="crash") for round_ in range(rounds)]
    for worker in workers:
        go(worker)
        time.sleep(rng.uniform(0.1, 0.4))
        os.kill(worker.pid, signal.SIGKILL)
        worker.communicate(timeout=10)
        assert worker.returncode == -signal.SIGKILL
        # Opening runs integrity_check on SQLite; on PostgreSQL the server has rolled back the
        # killed client's open transaction and released its advisory lock.
        with open_ledger(location) as ledger:
            assert ledger.verify_audit() == []
        events.append(check_database(backend, location))
    progressed = sum(after > before for before, after in itertools.pairwise(events))
    assert progressed >= rounds // 2, events  # the workers really were mid-flight when killed


def test_two_processes_never_interleave_illegally(backend: Backend, tmp_path: Path) -> None:
    location = backend.fresh("race", tmp_path)
    prepare_shared_ledger(location, 10)
    procs = [spawn(location, seed=seed, mode="race", seconds=1.5) for seed in (11, 12)]
    go(*procs)
    for proc in procs:  # both have opened the ledger: start their clocks together
        assert proc.stdin is not None
        proc.stdin.write("start\n")
        proc.stdin.flush()
    stats = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        stats.append(json.loads(out.strip().splitlines()[-1]))
    assert all(s["moved"] > 0 for s in stats), stats
    (a, b) = stats
    assert a["start"] < b["end"] and b["start"] < a["end"], "the workers did not overlap"
    # Some moves were chosen from a status the other worker had already changed, and the
    # ledger refused them under its write lock (instead of recording an illegal sequence).
    assert a["refused"] + b["refused"] > 0, stats
    check_database(backend, location)
    with open_ledger(location) as ledger:
        assert ledger.verify_audit() == []
        assert len(ledger.messages()) == 10
