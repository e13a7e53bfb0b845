"""Several relayers write one PostgreSQL ledger side by side (issue #12, session 6).

A write fenced by a lease with a domain (``scan:o`` / ``collect:o``: origin ``o``;
``deliver:d``: destination ``d``) takes the ledger-wide advisory lock SHARED plus its domain's
lock exclusively; every other write (an operator's, a migration's, the ``unpaid`` sweep's, which
spans routes) takes the ledger-wide lock EXCLUSIVE (relayer/ledger.py, ``write_domain``).

What is asserted is who holds and who waits for which lock, read from ``pg_locks`` while the
writers are held open inside their transactions — never elapsed time. Each writer is a thread
with its own connection, as another relayer process would be.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
import sqlalchemy as sa
from test_ledger import OUTBOX, ROOT_HASH, disc, msg_id, tx_for

from devnet.postgres import PostgresProcess
from light_clients.hashing import keccak256
from relayer.leases import LeaseBoard
from relayer.ledger import (
    _PG_DESTINATION_SPACE,
    _PG_LOCK_KEY,
    _PG_ORIGIN_SPACE,
    Fence,
    Ledger,
    LedgerBatch,
    LedgerBusy,
    LedgerDeadlock,
    MessageStatus,
    fenced_by,
    open_ledger,
    write_domain,
)

LEASES = ("scan:1", "collect:1", "deliver:2", "deliver:4", "unpaid")
GLOBAL = (1, _PG_LOCK_KEY >> 32, _PG_LOCK_KEY & 0xFFFFFFFF)  # (objsubid, classid, objid)
WAIT_LIMIT = 15.0  # seconds a condition may take to appear on a loaded machine


@pytest.fixture(scope="module")
def shared(postgres: PostgresProcess) -> Iterator[tuple[Ledger, dict[str, Fence], sa.Engine]]:
    """One ledger for the module (each test writes its own messages), every lease of
    :data:`LEASES` held by one relayer, and a plain engine that reads ``pg_locks``."""
    admin = sa.create_engine(postgres.url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql("CREATE DATABASE route_locks STRATEGY FILE_COPY")
    url = admin.url.set(database="route_locks").render_as_string(hide_password=False)
    ledger = open_ledger(url)
    board = LeaseBoard(ledger, LEASES, holder="relayer-a", lease_seconds=600)
    fences = {claim.fence.name: claim.fence for claim in board.round({}).claimed}
    assert set(fences) == set(LEASES)
    observer = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    try:
        yield ledger, fences, observer
    finally:
        observer.dispose()
        ledger.close()
        with admin.connect() as conn:
            conn.exec_driver_sql("DROP DATABASE route_locks WITH (FORCE)")
        admin.dispose()


@dataclass
class Writer:
    """``work(batch)`` inside one ``ledger.atomic()`` (fenced by ``fence`` unless None) in a
    thread, held open after the work until :attr:`release` is set."""

    ledger: Ledger
    fence: Fence | None
    work: Callable[[LedgerBatch], object]
    release: threading.Event = field(default_factory=threading.Event)
    inside: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    pid: int | None = None
    error: BaseException | None = None

    def start(self) -> Writer:
        threading.Thread(target=self._run, daemon=True).start()
        return self

    def _run(self) -> None:
        try:
            with contextlib.ExitStack() as stack:
                if self.fence is not None:
                    stack.enter_context(fenced_by(self.fence))
                with self.ledger.atomic() as batch:
                    connection = batch._session.connection()
                    self.pid = connection.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
                    self.work(batch)
                    self.inside.set()
                    self.release.wait(WAIT_LIMIT * 2)
        except BaseException as error:  # reported by done()
            self.error = error
        finally:
            self.inside.set()
            self.finished.set()

    def done(self) -> None:
        """Let it commit and wait until it has; its error, if any, is raised here."""
        self.release.set()
        assert self.finished.wait(WAIT_LIMIT), "a writer did not finish"
        if self.error is not None:
            raise self.error


Lock = tuple[int, int, int, str, bool]  # (objsubid, classid, objid, mode, granted)


def advisory(observer: sa.Engine) -> dict[int, set[Lock]]:
    """The advisory locks held or awaited in the ledger's database, by backend pid."""
    with observer.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT pid, objsubid, classid, objid, mode, granted FROM pg_locks "
                "WHERE locktype = 'advisory' AND database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())"
            )
        ).all()
    locks: dict[int, set[Lock]] = {}
    for pid, subid, classid, objid, mode, granted in rows:
        locks.setdefault(pid, set()).add((subid, classid, objid, mode, granted))
    return locks


def waiting_pids(observer: sa.Engine, known: set[int]) -> dict[int, set[Lock]]:
    """Backends other than ``known`` with an advisory lock request (granted or not)."""
    return {pid: held for pid, held in advisory(observer).items() if pid not in known}


def new_pid(observer: sa.Engine, known: set[int], what: str) -> int:
    """The backend, not in ``known``, that asked for an advisory lock (waits until one has);
    added to ``known``."""
    found = until(lambda: waiting_pids(observer, known), what)
    assert isinstance(found, dict) and len(found) == 1, found
    pid: int = next(iter(found))
    known.add(pid)
    return pid


def until(condition: Callable[[], object], what: str) -> object:
    """Poll ``condition`` until it is truthy (a state to reach, not a delay to sit out)."""
    deadline = time.monotonic() + WAIT_LIMIT
    while not (value := condition()):
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.02)
    return value


def shared_global(granted: bool = True) -> Lock:
    return (*GLOBAL, "ShareLock", granted)


def exclusive_global(granted: bool) -> Lock:
    return (*GLOBAL, "ExclusiveLock", granted)


def domain_lock(space: int, key: int, granted: bool = True) -> Lock:
    return (2, space, key, "ExclusiveLock", granted)


def record(origin: int, nonce: int, dest: int) -> Callable[[LedgerBatch], object]:
    return lambda batch: batch.record_discovered([disc(origin, nonce, dest=dest)])


# --------------------------------------------------------------------------------------------


def test_lease_names_map_to_domains_and_the_rest_is_exclusive() -> None:
    """Only a well-formed ``scan|collect|deliver:<uint32>`` has a domain; a scan and a collect
    of one origin share it (a reorg's delete and an attestation meet on the same rows)."""
    assert write_domain("scan:7") == write_domain("collect:7") == (_PG_ORIGIN_SPACE, 7)
    assert write_domain("deliver:7") == (_PG_DESTINATION_SPACE, 7)
    assert write_domain("deliver:4294967295") == (_PG_DESTINATION_SPACE, -1)  # int4 is signed
    for name in (
        "unpaid",
        "key:0x" + "11" * 20,
        "scan:",
        "scan:-1",
        "scan:²",
        "scan:4294967296",
        "deliver:1:2",
        "rebuild:1",
        "",
    ):
        assert write_domain(name) is None, name


def test_fenced_writers_of_different_domains_hold_their_locks_at_once(
    shared: tuple[Ledger, dict[str, Fence], sa.Engine],
) -> None:
    """A scan of origin 1 and a delivery to destination 4, each inside its write transaction:
    both hold the ledger-wide lock shared and their own domain lock, at the same moment. (With
    one write lock per ledger the second waited for the first to commit.)"""
    ledger, fences, observer = shared
    scan = Writer(ledger, fences["scan:1"], record(1, 100, 2)).start()
    deliver = Writer(
        ledger, fences["deliver:4"], lambda b: b.record_transaction(tx_for(4, seed=100))
    )
    scanning = {shared_global(), domain_lock(_PG_ORIGIN_SPACE, 1)}
    delivering = {shared_global(), domain_lock(_PG_DESTINATION_SPACE, 4)}

    def both_granted() -> bool:
        # The state itself, read at one moment: each backend holds exactly its two locks,
        # granted. (Waiting for "the delivery got in or asked" and then asserting raced the
        # delivery's own progress between its locks and its first write: review RL, M3.)
        locks = advisory(observer)
        others = [held for pid, held in locks.items() if pid != scan.pid]
        return locks.get(scan.pid or 0) == scanning and others == [delivering]

    try:
        assert scan.inside.wait(WAIT_LIMIT)
        deliver.start()
        until(both_granted, "the scan and the delivery hold their locks at the same moment")
    finally:
        scan.release.set()
        deliver.release.set()
    scan.done()
    deliver.done()
    assert ledger.get(msg_id(disc(1, 100).message)) is not None
    assert ledger.get_transaction(4, tx_for(4, seed=100).hash) is not None


def test_one_domain_serialises_and_an_unfenced_write_excludes_every_domain(
    shared: tuple[Ledger, dict[str, Fence], sa.Engine],
) -> None:
    """A collect of origin 1 waits for the scan of origin 1 on the origin's lock (holding the
    ledger-wide one shared); an operator's write, unfenced, waits for the ledger-wide lock
    EXCLUSIVE while they hold it shared, and a delivery that asks after the operator queues
    behind it (an operator is never starved by a stream of relayer writes). Then each proceeds
    in turn, and every write is there."""
    ledger, fences, observer = shared
    ledger.record_discovered([disc(1, 200, dest=2)])
    ledger.transition([msg_id(disc(1, 200).message)], MessageStatus.FINAL)
    checkpoint = ledger.save_checkpoint(
        1, OUTBOX, ROOT_HASH, 500, block_number=5, block_hash=keccak256(b"cp 500")
    )
    scan = Writer(ledger, fences["scan:1"], record(1, 201, 2)).start()
    started = [scan]  # every writer, released in the finally whatever fails (review RL, L5)
    assert scan.inside.wait(WAIT_LIMIT)
    attest = Writer(
        ledger,
        fences["collect:1"],
        lambda b: b.transition(
            [msg_id(disc(1, 200).message)], MessageStatus.ATTESTED, checkpoint_id=checkpoint
        ),
    ).start()
    started.append(attest)
    known = {scan.pid or 0}
    try:
        collect_pid = new_pid(observer, known, "the collect asked for its locks")
        until(
            lambda: (
                advisory(observer).get(collect_pid)
                == {shared_global(), domain_lock(_PG_ORIGIN_SPACE, 1, granted=False)}
            ),
            "the collect holds the ledger-wide lock shared and waits for origin 1's",
        )
        assert not attest.inside.is_set()
        operator = Writer(ledger, None, record(3, 300, 4)).start()
        started.append(operator)
        operator_pid = new_pid(observer, known, "the operator asked for its lock")
        until(
            lambda: advisory(observer).get(operator_pid) == {exclusive_global(granted=False)},
            "the operator waits for the ledger-wide lock exclusive",
        )
        late = Writer(
            ledger, fences["deliver:2"], lambda b: b.record_transaction(tx_for(2, seed=300))
        ).start()
        started.append(late)
        late_pid = new_pid(observer, known, "the late delivery asked for its lock")
        until(
            lambda: advisory(observer).get(late_pid) == {shared_global(granted=False)},
            "a delivery asking after the operator queues behind it",
        )
        scan.done()
        assert attest.inside.wait(WAIT_LIMIT)  # the origin's lock is free: the collect runs
        assert not operator.inside.is_set()  # ... while the operator still waits for it
        attest.done()
        assert operator.inside.wait(WAIT_LIMIT)
        assert advisory(observer).get(operator_pid) == {exclusive_global(granted=True)}
        assert not late.inside.is_set()
        operator.done()
        late.done()
    finally:
        for writer in started:
            writer.release.set()
    assert ledger.get(msg_id(disc(1, 200).message)).status is MessageStatus.ATTESTED  # type: ignore[union-attr]
    assert ledger.get(msg_id(disc(3, 300, dest=4).message)) is not None
    assert ledger.verify_audit() == []


def test_a_lease_without_a_domain_writes_alone(
    shared: tuple[Ledger, dict[str, Fence], sa.Engine],
) -> None:
    """``unpaid`` moves messages of every route: its fenced writes take the ledger-wide lock
    exclusive, so they wait for a delivery that holds it shared."""
    ledger, fences, observer = shared
    deliver = Writer(
        ledger, fences["deliver:2"], lambda b: b.record_transaction(tx_for(2, seed=400))
    ).start()
    assert deliver.inside.wait(WAIT_LIMIT)
    sweep = Writer(ledger, fences["unpaid"], record(3, 400, 4)).start()
    try:
        sweep_pid = new_pid(observer, {deliver.pid or 0}, "the sweep asked for its lock")
        until(
            lambda: advisory(observer).get(sweep_pid) == {exclusive_global(granted=False)},
            "the unpaid sweep waits for the ledger-wide lock exclusive",
        )
    finally:
        deliver.release.set()
        sweep.release.set()
    deliver.done()
    sweep.done()


def test_a_move_across_domains_checks_the_row_as_it_is_when_it_writes(
    shared: tuple[Ledger, dict[str, Fence], sa.Engine],
) -> None:
    """Two domains meet on a message at the hand-over: a collect attests it while a delivery
    (another domain, not waiting for the collect's lock) sets it aside. The delivery's read of
    the row waits for the collect's commit (``FOR UPDATE``), so its audit row says it moved
    the message from ``attested``, as it did; read without the row lock it said ``final``,
    and the trail no longer chained."""
    ledger, fences, _observer = shared
    message = msg_id(disc(1, 500).message)
    ledger.record_discovered([disc(1, 500)])
    ledger.transition([message], MessageStatus.FINAL)
    checkpoint = ledger.save_checkpoint(
        1, OUTBOX, ROOT_HASH, 600, block_number=6, block_hash=keccak256(b"cp 600")
    )
    attest = Writer(
        ledger,
        fences["collect:1"],
        lambda b: b.transition([message], MessageStatus.ATTESTED, checkpoint_id=checkpoint),
    ).start()
    assert attest.inside.wait(WAIT_LIMIT)
    skip = Writer(
        ledger,
        fences["deliver:2"],
        lambda b: b.transition([message], MessageStatus.SKIPPED, reason="relay policy: test"),
    ).start()
    try:
        with ledger.engine.connect() as conn:
            until(
                lambda: conn.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype <> 'advisory'"
                    )
                ).scalar_one(),
                "the delivery waits for the message's row",
            )
    finally:
        attest.release.set()
        skip.release.set()
    attest.done()
    skip.done()
    events = [(e.from_status, e.to_status) for e in ledger.history(message)]
    assert events[-2:] == [
        (MessageStatus.FINAL, MessageStatus.ATTESTED),
        (MessageStatus.ATTESTED, MessageStatus.SKIPPED),
    ]
    assert ledger.verify_audit() == []


def test_writers_of_two_domains_that_deadlock_get_ledger_busy(
    shared: tuple[Ledger, dict[str, Fence], sa.Engine],
) -> None:
    """Writers of different domains run side by side, so they can meet on shared rows in
    opposite orders (four relayers on crossing routes can on the per-route counters). The
    server breaks the circle by failing one; the ledger reports that as LedgerBusy (the lease
    keeper gives the lease up and the relayer lives on), not as an error that ends it."""
    ledger, fences, _observer = shared
    ledger.record_discovered([disc(1, 700, dest=2), disc(3, 700, dest=4)])
    bump = "UPDATE message_counts SET count = count WHERE origin = :o AND destination = :d"
    first_done = [threading.Event(), threading.Event()]

    def crossing(mine: int, other: int, me: int) -> Callable[[LedgerBatch], object]:
        def work(batch: LedgerBatch) -> None:
            connection = batch._session.connection()
            connection.execute(sa.text(bump), {"o": mine, "d": mine + 1})
            first_done[me].set()
            assert first_done[1 - me].wait(WAIT_LIMIT)
            connection.execute(sa.text(bump), {"o": other, "d": other + 1})

        return work

    one = Writer(ledger, fences["scan:1"], crossing(1, 3, 0)).start()
    two = Writer(ledger, fences["deliver:4"], crossing(3, 1, 1)).start()
    outcomes = []
    try:
        for writer in (one, two):
            try:
                writer.done()
                outcomes.append("committed")
            except LedgerDeadlock as busy:  # a LedgerBusy: whatever copes with busy copes
                assert isinstance(busy, LedgerBusy)
                assert "deadlock" in str(busy) and "\n" not in str(busy)
                outcomes.append("busy")
    finally:
        one.release.set()
        two.release.set()
    assert sorted(outcomes) == ["busy", "committed"]
