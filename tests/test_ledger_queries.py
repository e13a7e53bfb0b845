"""What one relayer poll costs the ledger must not grow with its delivered history (issue #12).

A relayer polls for ever while ``messages`` only grows: at the seed's scale (a ledger of billions
of delivered rows) any statement of the poll that reads rows in proportion to the table is a
wall. These tests build a ledger on SQLite and on PostgreSQL (the ``backend`` fixture of
tests/test_ledger.py) with a long delivered history and a short backlog, run the ledger calls a
relayer makes per round (relay.py's follow / collect / metrics, the EVM family's delivery round
and its move to ``submitted``), capture every SELECT they send, and measure what each reads:

- PostgreSQL: ``EXPLAIN (ANALYZE, FORMAT JSON)`` of the statement as sent, summing the rows
  every plan node produced or threw away (``Rows Removed by Filter``): rows examined.
- SQLite: the statement as sent, run on a plain ``sqlite3`` connection with a progress handler
  counting virtual-machine instructions (each row visited costs several); and its
  ``EXPLAIN QUERY PLAN`` must not scan a growing table.

Before revision 0005 the counts (/metrics, unpaid re-check) read every message, the collect
loop's ``final`` page and ``follow()``'s next page walked the origin's whole history, and the
move to ``submitted`` looked its carrier up by hash alone, reading every transaction.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from test_ledger import DEST, ORIGIN, OTHER_ORIGIN, Backend, disc, tx_for
from test_ledger import backend as backend  # noqa: PLC0414 - fixtures: pytest finds them here
from test_ledger import fast_dir as fast_dir  # noqa: PLC0414
from test_ledger import postgres_admin as postgres_admin  # noqa: PLC0414
from test_ledger_migrations import config_for, legacy_ledger, passerelle, run_statements

from light_clients.hashing import keccak256
from relayer.ledger import Ledger, MessageStatus, TxStatus, open_ledger

S = MessageStatus
OUTBOX = b"\x0b" * 32
HISTORY = 2_000
"""Delivered messages before the backlog: far more than any bound below allows reading."""
BACKLOG = 10
"""Messages per waiting status (discovered, final, attested)."""
OLD_TRANSACTIONS = 150
"""Delivery transactions already confirmed: the table grows with history too."""

# The bounds: a poll of this backlog examines a few rows per waiting message plus a constant
# per statement (measured: at most 37 rows on PostgreSQL, 730 steps on SQLite); the old
# code examined at least HISTORY (2,000) rows in several statements.
PG_ROWS_PER_STATEMENT = 100
SQLITE_STEPS_PER_STATEMENT = 2_000


def fill(ledger: Ledger) -> None:
    """HISTORY delivered messages ORIGIN -> DEST, then BACKLOG each discovered, final and
    attested (under a checkpoint), and OLD_TRANSACTIONS confirmed delivery transactions."""
    for start in range(0, HISTORY, 1_000):
        ledger.record_discovered([disc(ORIGIN, n) for n in range(start, start + 1_000)])
        after = (ORIGIN, start - 1) if start else None
        page = ledger.messages(origin=ORIGIN, after=after, limit=1_000)
        ledger.transition([m.id for m in page], S.DELIVERED)
    for seed in range(OLD_TRANSACTIONS):
        ledger.record_transaction(tx_for(DEST, seed=seed))
        ledger.update_transaction(DEST, keccak256(b"delivery %d" % seed), TxStatus.CONFIRMED)
    waiting = range(HISTORY, HISTORY + 3 * BACKLOG)
    ledger.record_discovered([disc(ORIGIN, n) for n in waiting])
    page = ledger.messages(origin=ORIGIN, after=(ORIGIN, HISTORY - 1), limit=3 * BACKLOG)
    ledger.transition([m.id for m in page[BACKLOG:]], S.FINAL)
    checkpoint = ledger.save_checkpoint(
        ORIGIN,
        OUTBOX,
        keccak256(b"root"),
        HISTORY + 3 * BACKLOG - 1,
        block_number=10,
        block_hash=keccak256(b"block 10"),
    )
    ledger.transition([m.id for m in page[2 * BACKLOG :]], S.ATTESTED, checkpoint_id=checkpoint)


def poll(ledger: Ledger) -> None:
    """The ledger calls of one relayer round on this route, with the arguments relay.py and
    relayer/families/evm/delivery.py pass, ending with one batch moved to ``submitted``."""
    tip = HISTORY + 3 * BACKLOG - 1
    ledger.get_cursor(ORIGIN)
    ledger.latest_checkpoint(ORIGIN, OUTBOX)  # follow()
    ledger.messages(origin=ORIGIN, after=(ORIGIN, tip - 2), limit=5_000)
    ledger.by_status(S.FINAL, limit=10_000, origin=ORIGIN)  # _attach_final
    ledger.due_for_retry(limit=25, destination=DEST)  # requeue_due
    attested = ledger.by_status(S.ATTESTED, 100, destination=DEST)
    ledger.by_status(S.SUBMITTED, 100, destination=DEST)  # _finalize_deliveries
    ledger.transactions(chain=DEST, status=TxStatus.PENDING)
    ledger.counts_by_status()  # /metrics, and the unpaid re-check's end
    ledger.pending_by_route()  # /metrics and /readyz
    carrier = tx_for(DEST, seed=OLD_TRANSACTIONS)
    ledger.record_transaction(carrier)
    ledger.transition([m.id for m in attested], S.SUBMITTED, tx_hash=carrier.hash)


def captured(ledger: Ledger, action: Callable[[Ledger], None]) -> list[tuple[str, Any]]:
    """Every SELECT ``action`` sends, with its parameters, as the driver received them."""
    sent: list[tuple[str, Any]] = []

    def keep(_c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            sent.append((statement, params))

    sa.event.listen(ledger.engine, "before_cursor_execute", keep)
    try:
        action(ledger)
    finally:
        sa.event.remove(ledger.engine, "before_cursor_execute", keep)
    return sent


def pg_rows_examined(plan: dict[str, Any]) -> int:
    """Rows a plan node and its children produced or filtered out (all loops)."""
    loops = int(plan.get("Actual Loops", 1))
    own = int(plan.get("Actual Rows", 0)) * loops
    own += int(plan.get("Rows Removed by Filter", 0)) + int(
        plan.get("Rows Removed by Index Recheck", 0)
    )
    return own + sum(pg_rows_examined(child) for child in plan.get("Plans", ()))


def sqlite_steps(connection: sqlite3.Connection, statement: str, params: Any) -> int:
    """Virtual-machine instructions SQLite runs for ``statement`` (counted in steps of 10)."""
    steps = 0

    def tick() -> int:
        nonlocal steps
        steps += 10
        return 0  # 0: carry on

    connection.set_progress_handler(tick, 10)
    try:
        connection.execute(statement, params).fetchall()
    finally:
        connection.set_progress_handler(None, 10)
    return steps


@pytest.fixture
def busy_ledger(backend: Backend) -> Iterator[tuple[Backend, str, Ledger]]:
    location = backend.fresh("history")
    ledger = open_ledger(location)
    try:
        fill(ledger)
        if backend.admin is not None:
            # Autovacuum would have by now on a real ledger; the planner needs statistics.
            run_statements(backend, location, ["ANALYZE"])
        yield backend, location, ledger
    finally:
        ledger.close()


def test_a_relayer_poll_reads_the_backlog_not_the_history(
    busy_ledger: tuple[Backend, str, Ledger],
) -> None:
    backend, location, ledger = busy_ledger
    statements = captured(ledger, poll)
    assert len(statements) >= 12  # every call above sent its query (none served from a cache)
    raw = backend.raw(location)
    costs: list[tuple[int, str]] = []
    if backend.admin is not None:
        # On tables this small a sequential scan can be the cheapest plan, and the planner
        # takes it now and then; at a billion rows it would not. Seq scans only where no index
        # can serve the query: what this test is about.
        raw.execute("SET enable_seqscan = off")
    try:
        for statement, params in statements:
            if backend.admin is None:
                plan = raw.execute(f"EXPLAIN QUERY PLAN {statement}", params).fetchall()
                scans = [row[-1] for row in plan if str(row[-1]).startswith("SCAN ")]
                # A full pass over a table (or over all of one of its indexes) grows with it.
                assert not [s for s in scans if "message_counts" not in s], (statement, scans)
                cost = sqlite_steps(raw, statement, params)
                bound = SQLITE_STEPS_PER_STATEMENT
            else:
                # ANALYZE runs the SELECT; every one here is read-only.
                (explained,) = raw.execute(
                    f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", params
                ).fetchone()
                tree = explained if isinstance(explained, list) else json.loads(explained)
                cost = pg_rows_examined(tree[0]["Plan"])
                bound = PG_ROWS_PER_STATEMENT
            costs.append((cost, " ".join(statement.split())[:120]))
            assert cost <= bound, (cost, statement)
        raw.rollback()
    finally:
        raw.close()
    # And the poll did its work: the batch moved, the counts are the real ones.
    counts = ledger.counts_by_status()
    assert counts[S.DELIVERED] == HISTORY and counts[S.SUBMITTED] == BACKLOG
    assert counts[S.FINAL] == counts[S.DISCOVERED] == BACKLOG
    print(f"{backend.name}: costliest statements", sorted(costs, reverse=True)[:3])


def real_counts(backend: Backend, location: str) -> dict[str, int]:
    raw = backend.raw(location)
    try:
        rows = raw.execute("SELECT status, count(*) FROM messages GROUP BY status").fetchall()
    finally:
        raw.close()
    return {str(status): int(n) for status, n in rows}


def shown(ledger: Ledger) -> dict[str, int]:
    return {str(s): n for s, n in ledger.counts_by_status().items() if n}


def test_the_counters_are_filled_by_the_migration_and_kept_by_any_writer(
    backend: Backend, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    """Revision 0005 counts what an older ledger holds; then every write keeps the counters
    right, also one that bypasses Passerelle (an operator's SQL) and a deletion."""
    location = legacy_ledger(backend)  # revision 0001, messages at several stages
    code, _, err = passerelle(
        capsys, "ledger", "migrate", "--config", str(config_for(tmp_path, location))
    )
    assert (code, err) == (0, "")
    with open_ledger(location) as ledger:
        assert shown(ledger) == real_counts(backend, location) and sum(shown(ledger).values()) == 4
        ledger.record_discovered([disc(ORIGIN, 4), disc(ORIGIN, 5, dest=DEST + 1)])
        ledger.transition([ledger.messages(origin=ORIGIN)[-1].id], S.FINAL)
        # Not through the ledger's API: the triggers still count it.
        run_statements(
            backend,
            location,
            [
                "UPDATE messages SET status = 'skipped', reason = 'by hand' "
                "WHERE status = 'discovered'",
                "UPDATE messages SET attempts = attempts + 1",  # no status change: no count
            ],
        )
        assert shown(ledger) == real_counts(backend, location)
        assert ledger.counts_by_status(destination=DEST + 1) == {
            s: 1 if s is S.FINAL else 0 for s in S
        }
        # A reorg below what was taken as final drops the unattested messages it orphaned.
        ledger.record_discovered([disc(OTHER_ORIGIN, n, block=50) for n in range(3)])
        assert len(ledger.invalidate_above(OTHER_ORIGIN, 49, keccak256(b"block 49"))) == 3
        assert shown(ledger) == real_counts(backend, location)
        assert ledger.counts_by_status(origin=OTHER_ORIGIN) == dict.fromkeys(S, 0)


def test_a_forged_counter_row_cannot_invent_a_status(backend: Backend) -> None:
    """``message_counts`` is as writable as the rest of the database: a row with a status no
    message can have is left out of the counts, never a KeyError in /metrics."""
    location = backend.fresh()
    with open_ledger(location) as ledger:
        ledger.record_discovered([disc(ORIGIN, 0)])
        run_statements(
            backend,
            location,
            [
                "INSERT INTO message_counts (origin, destination, status, count) "
                "VALUES (1, 2, 'x', 7)"
            ],
        )
        assert ledger.counts_by_status() == {s: 1 if s is S.DISCOVERED else 0 for s in S}
