"""The ledger's workload of many relayers, replayed against one PostgreSQL without chains.

What it answers: how many database writes a second the shared ledger takes, and where it stops
scaling, with more relayers than this 2-core machine can run next to chains. Each simulated
relayer is a thread that does to the database exactly what ``passerelle relay`` does, through
the same API (:mod:`relayer.ledger`, :mod:`relayer.leases`), not hand-written SQL:

- a lease round every quarter lease (:meth:`LeaseBoard.round`: heartbeat, renew, balance,
  claim), over the leases of a topology of ``chains`` chains (``scan:<d>``, ``collect:<d>``,
  ``deliver:<d>`` for each), releasing what exceeds its share, every task's writes fenced
  (:func:`relayer.ledger.fenced_by`, ``require_fence`` on, as a leasing relayer sets it);
- ``scan:<o>``: every ``poll`` seconds, ``batch`` new messages of origin ``o`` to chain ``o+1``
  recorded with the cursor in one transaction (``record_discovered``, ``transition`` to
  ``final``, ``set_cursor``: ``Relayer._record_scan``);
- ``collect:<o>``: a checkpoint with two signatures in one transaction, then the final messages
  it covers to ``attested`` (``save_checkpoint``, ``add_signature``, ``latest_checkpoint``,
  ``by_status``, ``transition``: ``Relayer._record_checkpoint`` and ``_attach_final``);
- ``deliver:<d>``: retries due, the attested page, a delivery transaction recorded with its
  messages ``submitted`` (``record_transaction``), its receipt (``update_transaction``, the
  carried messages re-read and moved in one transaction: ``_apply_receipt``), then the final
  step (``by_status(submitted)``, ``get_transaction``, ``transition`` to ``delivered``:
  ``_finalize_deliveries``).

The load is closed-loop: each origin produces at most ``batch / poll`` messages a second (100/s
at 25 per 0.25 s), and its scanner skips a poll while ``backlog`` of its messages are recorded
but not yet delivered (counters in shared memory, no database query). Without that gate the
scanners, which have no back-pressure in the relayer either, record messages faster than the
other tasks move them when the offered rate exceeds what the database takes, and the window
would measure a pipeline filling up instead of its throughput. Each relayer is a
process of its own, as in production (forked, so nothing is imported again; past
:data:`PROCESSES` they would share processes as threads): threads in one process would make a
relayer that holds a write lock wait for the GIL behind its siblings, a convoy no
real deployment has. The client's CPU is measured apart from the server's, so the part a
bigger machine would change is visible.

The server is a fresh durable PostgreSQL (:func:`devnet.postgres.start_postgres` with
``durable=True``: fsync and synchronous commit on, unlike the devnet's), one new database per
relayer count. Statements are counted on the client (an SQLAlchemy ``before_cursor_execute``
listener in each worker), transactions, rows and milliseconds on the server
(:mod:`benchmarks.bench_scale.pgstats`).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import os
import secrets
import threading
import time
import traceback
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from benchmarks.bench_scale import pgstats
from light_clients.hashing import keccak256
from light_clients.message import Message
from relayer.leases import LeaseBoard, new_holder_name
from relayer.ledger import (
    DiscoveredMessage,
    Fence,
    LeaseLost,
    Ledger,
    LedgerError,
    MessageStatus,
    NewTransaction,
    TxStatus,
    fenced_by,
    migrate_ledger,
    open_ledger,
    write_domain,
)

PROCESSES = 64  # worker processes at most; relayers beyond that are more threads in them
OUTBOX = b"\x0b" * 32
SENDER = b"\x5e" * 32
RECIPIENT = b"\x7e" * 32
SIGNERS = (b"\x51" * 20, b"\x52" * 20)  # the committee's threshold: two signatures
RELAYER_ADDRESS = b"\xaa" * 20
GAS_PER_MESSAGE = 9_900  # Inbox v2 (docs/performance.md): only stored, never checked here
LOCK_SAMPLE = 0.25  # seconds between two looks at pg_locks during the window
READY_TIMEOUT = 120.0  # seconds for every simulated relayer to open its ledger


@dataclass(frozen=True)
class Workload:
    """One simulation run's shape."""

    relayers: int
    chains: int
    seconds: float  # the measured window
    warmup: float  # before it: every relayer heartbeats and the leases spread
    batch: int = 25  # messages per scan and per delivery transaction
    poll: float = 0.25  # seconds between two scans of an origin (and idle polls)
    lease_seconds: float = 4.0  # a round a second: the default 15 s renews 4× less often
    backlog: int = 25  # an origin's messages recorded and not yet delivered: its scan waits
    latency: float = 0.0
    """Seconds added to every statement and commit on the client: the round trip to a database
    on another machine (0: the local socket only). A waiting thread uses no CPU, so unlike
    the CPU of a shared 2-core machine this shows what the locks do to throughput: a round
    trip inside a lock lengthens its hold, on every writer it excludes."""

    @property
    def offered(self) -> float:
        """Messages a second the origins produce at most."""
        return self.chains * self.batch / self.poll

    def lease_names(self) -> list[str]:
        return [f"{kind}:{d}" for d in self.domains() for kind in ("scan", "collect", "deliver")]

    def domains(self) -> range:
        return range(1, self.chains + 1)

    def destination_of(self, origin: int) -> int:
        return origin % self.chains + 1


@dataclass
class Tally:
    """What one simulated relayer (or, summed, a run) did inside the measured window."""

    delivered: int = 0
    scanned: int = 0
    statements: int = 0
    lease_rounds: int = 0
    leases_lost: int = 0
    busy: int = 0
    lock_held: float = 0.0  # seconds a write transaction held its locks, acquired → COMMIT sent
    domain_held: dict[str, float] = field(default_factory=dict)
    """Those seconds by the lock that excludes other writers: a fenced write's domain
    (``origin 3``, ``destination 4``: :func:`relayer.ledger.write_domain`), else ``ledger``
    (the ledger-wide lock taken exclusive). The busiest one is the ledger's ceiling."""
    failures: list[str] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        self.lock_held += other.lock_held
        for lock, held in other.domain_held.items():
            self.domain_held[lock] = self.domain_held.get(lock, 0.0) + held
        self.delivered += other.delivered
        self.scanned += other.scanned
        self.statements += other.statements
        self.lease_rounds += other.lease_rounds
        self.leases_lost += other.leases_lost
        self.busy += other.busy
        self.failures += other.failures


@dataclass
class RunResult:
    """One relayer count's measurement."""

    workload: Workload
    tally: Tally
    db: pgstats.DbCounters
    server_cpu: float
    client_cpu: float
    window: float
    ledger_bytes: dict[str, int]  # per table, indexes included
    compact_bytes: dict[str, int]  # the same after VACUUM FULL: the live rows only
    messages_stored: int
    lock_waiters: dict[str, float]  # backends waiting for a lock, on average, by pg_locks type

    @property
    def advisory_waiters(self) -> float:
        """Backends waiting for a write lock (advisory), on average over the window."""
        return self.lock_waiters.get("advisory", 0.0)

    @property
    def row_waiters(self) -> float:
        """Backends waiting for a row another writer holds, on average over the window."""
        return sum(self.lock_waiters.get(kind, 0.0) for kind in pgstats.ROW_LOCKS)

    @property
    def other_waiters(self) -> float:
        """Backends waiting for any other lock (a relation's, say), on average."""
        seen = {"advisory", *pgstats.ROW_LOCKS}
        return sum(n for kind, n in self.lock_waiters.items() if kind not in seen)

    @property
    def rate(self) -> float:
        return self.tally.delivered / self.window

    def per_message(self, value: float) -> float | None:
        return value / self.tally.delivered if self.tally.delivered else None


_local = threading.local()


def _count_statement(*_: Any) -> None:
    """The ``before_cursor_execute`` listener: one statement of the calling relayer's thread,
    counted only inside the measured window."""
    tally: Tally | None = getattr(_local, "tally", None)
    if tally is not None and _local.start <= time.monotonic() < _local.end:
        tally.statements += 1


def _lock_taken(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
    """``after_cursor_execute``: a write transaction's advisory locks (``pg_advisory_xact_lock``,
    the ledger-wide one shared plus its domain's, or the ledger-wide one exclusive) are held
    from now until the transaction ends; which one excludes others is the fence's domain."""
    if "pg_advisory_xact_lock" in statement:
        _local.locked_at = time.monotonic()
        _local.lock = _lock_name(getattr(_local, "fence", None))


def _lock_name(fence: Fence | None) -> str:
    """The lock that excludes other writers for a write fenced by ``fence``: its domain's
    (scan and collect of one origin share one), or the ledger-wide one taken exclusive."""
    if fence is None or write_domain(fence.name) is None:
        return "ledger"
    kind, _, domain = fence.name.partition(":")
    return f"{'destination' if kind == 'deliver' else 'origin'} {domain}"


def _transaction_ended(*_: Any) -> None:
    """``commit``/``rollback``: the write lock is released with the transaction."""
    locked_at: float | None = getattr(_local, "locked_at", None)
    tally: Tally | None = getattr(_local, "tally", None)
    if locked_at is not None:
        _local.locked_at = None
        if tally is not None and _local.start <= locked_at < _local.end:
            held = time.monotonic() - locked_at
            tally.lock_held += held
            tally.domain_held[_local.lock] = tally.domain_held.get(_local.lock, 0.0) + held


def _round_trip(latency: float, *_: Any) -> None:
    """Listener: one network round trip to a remote database server (:attr:`Workload.latency`)."""
    time.sleep(latency)


def _rand32() -> bytes:
    return secrets.token_bytes(32)


class Flow:
    """Per origin, messages recorded and messages delivered, shared by every worker process
    (``multiprocessing`` arrays, created before the fork): the scanners' gate."""

    def __init__(self, chains: int) -> None:
        context = multiprocessing.get_context("fork")
        self.scanned = context.Array("q", chains + 1)
        self.delivered = context.Array("q", chains + 1)

    def waiting(self, origin: int) -> int:
        return int(self.scanned[origin]) - int(self.delivered[origin])

    @staticmethod
    def add(counts: Any, by_origin: Mapping[int, int]) -> None:
        with counts.get_lock():
            for origin, n in by_origin.items():
                counts[origin] += n


class SimRelayer:
    """One simulated relayer: its own ledger connection pool, lease board and tasks."""

    def __init__(self, url: str, work: Workload, flow: Flow) -> None:
        self.work, self.flow = work, flow
        self.start = self.end = 0.0  # the measured window, set once every relayer is ready
        self.tally = Tally()
        self.ledger: Ledger = open_ledger(url)
        self.ledger.require_fence = True  # as a relayer that leases: no unfenced write
        self.board = LeaseBoard(
            self.ledger,
            work.lease_names(),
            holder=new_holder_name(),
            lease_seconds=work.lease_seconds,
        )
        self.held: dict[str, Fence] = {}
        self.due: dict[str, float] = {}
        self.checkpointed: dict[int, int] = {}
        self.tx_nonce = 0
        self.next_round = 0.0

    def in_window(self) -> bool:
        return self.start <= time.monotonic() < self.end

    def run(self) -> None:
        """Until the end of the window: each held task when due, and a lease round whenever
        one is due, between any two steps (the relayer runs its rounds in a task of their own:
        a long sweep over many tasks must not let its leases expire)."""
        _local.tally, _local.start, _local.end = self.tally, self.start, self.end
        self.next_round = time.monotonic()
        try:
            while (now := time.monotonic()) < self.end:
                self.round_if_due()
                ready = sorted(name for name in self.held if self.due.get(name, 0.0) <= now)
                for name in ready:
                    if name in self.held:  # a round in between may have lost it
                        self.step(name)
                    self.round_if_due()
                waits = [self.due.get(name, 0.0) for name in self.held]
                time.sleep(max(0.0, min(*waits, self.next_round, self.end) - time.monotonic()))
        finally:
            self.ledger.close()

    def round_if_due(self) -> None:
        if time.monotonic() >= self.next_round:
            self.lease_round()
            self.next_round = time.monotonic() + self.board.round_seconds

    def lease_round(self) -> None:
        """:meth:`LeaseBoard.round`, then what the relayer's keeper does with its answer: drop
        the lost leases, start the claimed ones, stop and release the surplus."""
        try:
            done = self.board.round(self.held)
            for fence in done.lost:
                self.held.pop(fence.name, None)
                self.tally.leases_lost += self.in_window()
            for claim in done.claimed:
                self.held[claim.fence.name] = claim.fence
            if done.surplus:
                for fence in done.surplus:
                    self.held.pop(fence.name, None)
                self.board.release(done.surplus)
        except LedgerError as error:  # retried at the next round, as the relayer does
            self._failed("lease round", error)
            return
        self.tally.lease_rounds += self.in_window()

    def _failed(self, what: str, error: LedgerError) -> None:
        self.tally.busy += 1
        if len(self.tally.failures) < 5:  # a few examples, not one line per failed round
            self.tally.failures.append(f"{what}: {error}")

    def step(self, name: str) -> None:
        kind, _, domain_text = name.partition(":")
        domain = int(domain_text)
        fence = self.held[name]
        task = {"scan": self._scan, "collect": self._collect, "deliver": self._deliver}[kind]
        try:
            _local.fence = fence  # for the lock accounting (_lock_taken)
            with fenced_by(fence):
                busy = task(domain)
        except LeaseLost:
            self.held.pop(name, None)
            self.tally.leases_lost += self.in_window()
            return
        except LedgerError as error:  # LedgerBusy and kin: the task's next poll retries
            self._failed(name, error)
            busy = False
        # A scan waits for the next "block" (poll); other tasks go on while they find work.
        self.due[name] = time.monotonic() + (0.0 if busy and kind != "scan" else self.work.poll)

    # ---- the three tasks, as relayer/relay.py and the EVM family write them ----------------

    def _scan(self, origin: int) -> bool:
        if self.flow.waiting(origin) >= self.work.backlog:
            return False
        cursor = self.ledger.get_cursor(origin)
        first = 0 if cursor is None else cursor.next_block  # the next nonce, in this model
        destination = self.work.destination_of(origin)
        found = [
            DiscoveredMessage(
                message=Message(
                    version=1,
                    nonce=nonce,
                    origin=origin,
                    sender=SENDER,
                    destination=destination,
                    recipient=RECIPIENT,
                    body=b"sim %08d" % nonce,
                ).encode(),
                block_number=first,
                block_hash=_rand32(),
                tx_hash=_rand32(),
                log_index=nonce - first,
            )
            for nonce in range(first, first + self.work.batch)
        ]
        with self.ledger.atomic() as batch:
            batch.record_discovered(found)
            batch.transition([keccak256(d.message) for d in found], MessageStatus.FINAL)
            batch.set_cursor(origin, first + self.work.batch, _rand32())
        self.flow.add(self.flow.scanned, {origin: self.work.batch})
        self.tally.scanned += self.work.batch if self.in_window() else 0
        return True

    def _collect(self, origin: int) -> bool:
        cursor = self.ledger.get_cursor(origin)
        top = -1 if cursor is None else cursor.next_block - 1
        if top <= self.checkpointed.get(origin, -1):
            return False
        with self.ledger.atomic() as batch:
            # The root is a function of the tree, so a relayer that takes this lease over
            # computes the same one for the same index (a different one is a conflict).
            root = keccak256(b"root" + origin.to_bytes(4, "big") + top.to_bytes(4, "big"))
            checkpoint_id = batch.save_checkpoint(
                origin, OUTBOX, root, top, block_number=top, block_hash=root
            )
            for signer in SIGNERS:
                batch.add_signature(checkpoint_id, signer, secrets.token_bytes(65))
        self.checkpointed[origin] = top
        latest = self.ledger.latest_checkpoint(origin, OUTBOX)
        if latest is None or latest.id is None:
            return False
        finals = self.ledger.by_status(MessageStatus.FINAL, limit=10_000, origin=origin)
        covered = [m.id for m in finals if m.nonce <= latest.index]
        if covered:
            self.ledger.transition(covered, MessageStatus.ATTESTED, checkpoint_id=latest.id)
        return bool(covered)

    def _deliver(self, destination: int) -> bool:
        due = self.ledger.due_for_retry(limit=self.work.batch, destination=destination)
        if due:
            self.ledger.transition([m.id for m in due], MessageStatus.ATTESTED)
        records = self.ledger.by_status(
            MessageStatus.ATTESTED, self.work.batch * 16, destination=destination
        )
        if not records:
            return False
        ids = [r.id for r in records[: self.work.batch]]
        tx_hash = _rand32()
        self.tx_nonce += 1
        self.ledger.record_transaction(
            NewTransaction(
                chain=destination,
                hash=tx_hash,
                sender=RELAYER_ADDRESS,
                nonce=self.tx_nonce,
                gas_limit=GAS_PER_MESSAGE * len(ids),
                max_fee_per_gas=2 * 10**9,
                max_priority_fee_per_gas=10**9,
            ),
            ids,
        )
        with self.ledger.atomic() as batch:  # the receipt (_apply_receipt)
            tx = batch.get_transaction(destination, tx_hash)
            batch.update_transaction(
                destination,
                tx_hash,
                TxStatus.CONFIRMED,
                block_number=self.tx_nonce,
                gas_used=GAS_PER_MESSAGE * len(ids),
                effective_gas_price=10**9,
                fee_paid=GAS_PER_MESSAGE * len(ids) * 10**9,
            )
            if tx is not None:
                carried = [
                    i
                    for i in ids
                    if (m := batch.get(i)) is not None and m.status == MessageStatus.SUBMITTED
                ]
                batch.transition(carried, MessageStatus.SUBMITTED, tx_hash=tx_hash, reason="mined")
                batch.transactions(chain=destination, status=TxStatus.PENDING)
        # The final step (_finalize_deliveries and _record_final).
        submitted = self.ledger.by_status(
            MessageStatus.SUBMITTED, self.work.batch * 16, destination=destination
        )
        origins = {r.id: r.origin for r in submitted}
        mine = [r.id for r in submitted if r.delivery_tx_hash == "0x" + tx_hash.hex()]
        confirmed = self.ledger.get_transaction(destination, tx_hash)
        if confirmed is None or confirmed.status != TxStatus.CONFIRMED:
            return True
        with self.ledger.atomic() as batch:
            batch.movable([], MessageStatus.ATTESTED)
            moved = batch.transition(
                mine, MessageStatus.DELIVERED, tx_hash=tx_hash, reason="delivered in final block"
            )
        self.flow.add(self.flow.delivered, Counter(origins[i] for i in moved))
        self.tally.delivered += len(moved) if self.in_window() else 0
        return True


def _worker(
    url: str,
    work: Workload,
    count: int,
    flow: Flow,
    barrier: multiprocessing.synchronize.Barrier,
    results: Any,
) -> None:
    """A worker process: ``count`` simulated relayers as threads; puts one summary on
    ``results``: (Tally, client CPU seconds inside the window)."""
    event.listen(Engine, "before_cursor_execute", _count_statement)
    if work.latency:
        event.listen(Engine, "before_cursor_execute", partial(_round_trip, work.latency))
        event.listen(Engine, "commit", partial(_round_trip, work.latency))
    event.listen(Engine, "after_cursor_execute", _lock_taken)
    event.listen(Engine, "commit", _transaction_ended)
    event.listen(Engine, "rollback", _transaction_ended)
    relayers: list[SimRelayer] = []
    failed: list[str] = []
    try:
        # Ledgers opened before the clocks start: 64 of them take seconds of CPU here.
        relayers = [SimRelayer(url, work, flow) for _ in range(count)]
        barrier.wait(READY_TIMEOUT)  # every worker's relayers are ready
        released = time.monotonic()
        window = (released + work.warmup, released + work.warmup + work.seconds)
        for relayer in relayers:
            relayer.start, relayer.end = window
        threads = [threading.Thread(target=_guarded, args=(r, failed)) for r in relayers]
        for thread in threads:
            thread.start()
        time.sleep(max(0.0, window[0] - time.monotonic()))
        cpu_start = time.process_time()
        time.sleep(max(0.0, window[1] - time.monotonic()))
        cpu = time.process_time() - cpu_start
        for thread in threads:
            thread.join()
    except Exception as error:  # reported by the parent, with the others' numbers
        results.put((Tally(failures=[f"worker {os.getpid()}: {error!r}"]), 0.0))
        return
    total = Tally()
    for relayer in relayers:
        total.add(relayer.tally)
    total.failures += failed
    results.put((total, cpu))


def _guarded(relayer: SimRelayer, failed: list[str]) -> None:
    try:
        relayer.run()
    except Exception:  # one line per relayer; the run is reported as incomplete
        failed.append(traceback.format_exc(limit=3).strip().splitlines()[-1])


def run_workload(url: str, work: Workload, postmaster: int | None) -> RunResult:
    """Migrate a fresh ledger at ``url``, run ``work`` and measure it."""
    migrate_ledger(url)
    context = multiprocessing.get_context("fork")
    processes = min(work.relayers, PROCESSES)
    shares = [len(range(k, work.relayers, processes)) for k in range(processes)]
    barrier = context.Barrier(processes + 1)
    flow = Flow(work.chains)
    results = context.Queue()
    workers = [
        context.Process(target=_worker, args=(url, work, share, flow, barrier, results))
        for share in shares
    ]
    for worker in workers:
        worker.start()
    barrier.wait(READY_TIMEOUT)
    released = time.monotonic()
    time.sleep(max(0.0, released + work.warmup - time.monotonic()))
    db_before, cpu_before = pgstats.counters(url), pgstats.server_times(postmaster)
    end = released + work.warmup + work.seconds
    waiters: list[dict[str, int]] = []
    while time.monotonic() < end - LOCK_SAMPLE:
        waiters.append(pgstats.lock_waiters(url))
        time.sleep(LOCK_SAMPLE)
    time.sleep(max(0.0, end - time.monotonic()))
    db_after = pgstats.counters(url)
    server_cpu = pgstats.server_cpu_between(cpu_before, pgstats.server_times(postmaster))
    tally, client_cpu = Tally(), 0.0
    for _ in workers:
        part, cpu = results.get(timeout=READY_TIMEOUT)
        tally.add(part)
        client_cpu += cpu
    for worker in workers:
        worker.join(READY_TIMEOUT)
    size, stored = pgstats.ledger_bytes(url)
    pgstats.compact(url)
    compacted, _ = pgstats.ledger_bytes(url)
    return RunResult(
        work,
        tally,
        db_after - db_before,
        server_cpu,
        client_cpu,
        work.seconds,
        size,
        compacted,
        stored,
        {
            kind: sum(sample.get(kind, 0) for sample in waiters) / len(waiters)
            for kind in {kind for sample in waiters for kind in sample}
        },
    )


def status_counts(url: str) -> Counter[str]:
    """Messages per status at the end of a run (the backlog left)."""
    with open_ledger(url, check_integrity=False) as ledger:
        return Counter({str(k): v for k, v in ledger.counts_by_status().items()})
