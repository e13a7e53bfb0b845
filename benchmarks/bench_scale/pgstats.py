"""What PostgreSQL itself counts, read before and after a measured window.

The server's own counters, not the client's: ``pg_stat_database`` for the ledger's database
(transactions committed and rolled back, rows returned, fetched, inserted, updated and deleted,
and ``active_time``, the milliseconds its backends spent executing statements), the CPU seconds
of the server's processes (the postmaster and its children, from ``/proc`` through psutil) and
the size of the ledger's tables (``pg_total_relation_size``: heap, indexes and TOAST).

``pg_stat_statements`` would count statements too, but it needs ``shared_preload_libraries`` at
server start, and neither the devnet's server nor pgserver's binaries have it; the simulation
(:mod:`benchmarks.bench_scale.simulate`) counts statements on the client instead, where it runs
the ledger's code in its own processes. A backend reports its counters at most once a second
(PostgreSQL's ``PGSTAT_MIN_INTERVAL``) and when it goes idle, so a window's delta is shifted by
up to a second at both ends: windows here last tens of seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Final

import psutil
import sqlalchemy as sa

from relayer.ledger import LEDGER_TABLES

_COUNTERS = (
    "SELECT xact_commit, xact_rollback, tup_returned, tup_fetched, tup_inserted, tup_updated, "
    "tup_deleted, active_time FROM pg_stat_database WHERE datname = current_database()"
)


@dataclass(frozen=True)
class DbCounters:
    """One reading of ``pg_stat_database`` for the current database (``active_time`` in ms)."""

    xact_commit: int = 0
    xact_rollback: int = 0
    tup_returned: int = 0
    tup_fetched: int = 0
    tup_inserted: int = 0
    tup_updated: int = 0
    tup_deleted: int = 0
    active_time: float = 0.0

    def __sub__(self, other: DbCounters) -> DbCounters:
        return DbCounters(
            **{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)}
        )

    @property
    def transactions(self) -> int:
        return self.xact_commit + self.xact_rollback

    @property
    def rows_written(self) -> int:
        """Rows inserted, updated and deleted: the server's write work."""
        return self.tup_inserted + self.tup_updated + self.tup_deleted


def _engine(url: str) -> sa.Engine:
    # A fresh connection per reading: PostgreSQL caches the statistics a transaction has
    # looked at (stats_fetch_consistency = cache), a pooled session could show stale ones.
    return sa.create_engine(url, poolclass=sa.NullPool)


def counters(url: str) -> DbCounters:
    """The database's counters now (the reading itself is one more transaction)."""
    engine = _engine(url)
    try:
        with engine.connect() as connection:
            row = connection.execute(sa.text(_COUNTERS)).one()
    finally:
        engine.dispose()
    *whole, active = row
    commits, rollbacks, returned, fetched, inserted, updated, deleted = map(int, whole)
    return DbCounters(
        commits, rollbacks, returned, fetched, inserted, updated, deleted, float(active or 0)
    )


ROW_LOCKS: Final = frozenset({"transactionid", "tuple"})
"""The ``pg_locks`` types of a wait for a row another transaction changed or locks: it waits
on that transaction's id (``transactionid``), and a further waiter queues on the row itself
(``tuple``)."""


def lock_waiters(url: str) -> dict[str, int]:
    """Backends waiting now for a lock, by ``pg_locks.locktype``: ``advisory`` (the write
    locks: every ledger write on PostgreSQL takes the ledger-wide one, shared or exclusive, and
    a fenced one its domain's too, relayer/ledger.py ``write_domain``), row locks
    (:data:`ROW_LOCKS`: writers of different domains meeting on one row, e.g. a message at the
    hand-over), and any other kind, so that no wait goes unseen (review RL, M2)."""
    engine = _engine(url)
    try:
        with engine.connect() as connection:
            waiting = connection.execute(
                sa.text(
                    "SELECT locktype, count(*) FROM pg_locks WHERE NOT granted GROUP BY locktype"
                )
            )
            return {str(kind): int(count) for kind, count in waiting}
    finally:
        engine.dispose()


def ledger_bytes(url: str) -> tuple[dict[str, int], int]:
    """(bytes of each ledger table with its indexes and TOAST, rows in ``messages``)."""
    engine = _engine(url)
    try:
        with engine.connect() as connection:
            sizes = {
                table: int(
                    connection.execute(
                        sa.text("SELECT pg_total_relation_size(CAST(:t AS regclass))"),
                        {"t": table},
                    ).scalar_one()
                )
                for table in sorted(LEDGER_TABLES)
            }
            count = connection.execute(sa.text("SELECT count(*) FROM messages"))
            messages = int(count.scalar_one())
    finally:
        engine.dispose()
    return sizes, messages


def compact(url: str) -> None:
    """``VACUUM FULL`` the ledger's tables: what is left is the live rows' size, without the
    dead versions every update leaves until autovacuum makes their space reusable."""
    engine = sa.create_engine(url, poolclass=sa.NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("VACUUM FULL"))
    finally:
        engine.dispose()


def server_times(postmaster: int | None) -> dict[int, float]:
    """CPU seconds (user + system) so far of each of the server's processes: the postmaster and
    its children (backends, walwriter, checkpointer, autovacuum workers)."""
    if postmaster is None:
        return {}
    members: list[psutil.Process] = []
    for _ in range(5):
        try:
            root = psutil.Process(postmaster)
            members = [root, *root.children(recursive=True)]
            break
        except psutil.NoSuchProcess:
            # A backend exited while the tree was walked (the previous reading's own, often):
            # walk it again rather than report a server without its backends.
            continue
        except psutil.Error:
            return {}
    out: dict[int, float] = {}
    for process in members:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        out[process.pid] = times.user + times.system
    return out


def server_cpu_between(before: dict[int, float], after: dict[int, float]) -> float:
    """The server's CPU seconds between two :func:`server_times`: what each process still alive
    used since ``before`` (all of it for one started since). A process that exited in between
    takes its seconds with it, so the windows keep their connections open (the relayers' and
    the simulation's pools do); only short-lived ones (autovacuum, the readings' own backends)
    are missed."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())
