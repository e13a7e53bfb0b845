"""A fenced write stays inside its lease's domain (review RL of the per-domain write locks).

On PostgreSQL a write fenced by ``scan:o`` / ``collect:o`` holds origin ``o``'s lock and one
fenced by ``deliver:d`` destination ``d``'s (relayer/ledger.py, ``write_domain``). Those locks
order the writers of ONE domain only, so they are safe only if every fenced write touches rows
of its own domain. A relayer whose configuration gives a chain the wrong domain id broke that
rule without noticing: its ``scan:9`` recorded origin 1's messages under origin 9's lock, racing
the relayer holding ``scan:1`` (a duplicate-key error that ended one of them). Now:

- the ledger refuses such a write (:class:`WriteOutsideDomain`, one line, nothing written), on
  SQLite as on PostgreSQL, for every operation that writes a domain's rows;
- the relayer's scan refuses a message whose origin is not its lane's domain (RouteHalted);
- the lease keeper stops that lease for good (one log line) and lives on, and gives a lease up
  without the lease-period pause when the database broke a deadlock (:class:`LedgerDeadlock`);
- writers of different domains count ``message_counts`` in slots of their own (revision 0006):
  ``collect:o`` and ``deliver:d`` no longer wait for each other on route (o, d)'s counter row.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import trio
from test_attester_hardening import DOMAIN, deploy_outbox
from test_attester_hardening import origin as origin_config
from test_leases import Counters
from test_leases_hostile import _holders, _load
from test_ledger import OUTBOX, ROOT_HASH, Backend, disc, msg_id, tx_for
from test_ledger import backend as backend  # noqa: PLC0414 - fixtures: pytest finds them here
from test_ledger import fast_dir as fast_dir  # noqa: PLC0414
from test_ledger import postgres_admin as postgres_admin  # noqa: PLC0414
from test_ledger_route_locks import WAIT_LIMIT, Writer, until
from test_ledger_route_locks import shared as shared  # noqa: PLC0414

from devnet.anvil import AnvilProcess
from light_clients.hashing import keccak256
from relayer.families.evm.connection import open_evm
from relayer.families.evm.origin import EvmOrigin
from relayer.leases import ROUNDS_PER_LEASE, LeaseBoard, LeaseKeeper, Round
from relayer.ledger import (
    Fence,
    Ledger,
    LedgerDeadlock,
    LedgerError,
    MessageStatus,
    TxStatus,
    WriteOutsideDomain,
    count_slot,
    fenced_by,
    lease_scope,
    open_ledger,
)
from relayer.relay import (
    DomainCheck,
    Relayer,
    RelayerMetrics,
    RouteHalted,
    check_outbox_domain,
)

LEASES = ("scan:1", "scan:9", "collect:9", "deliver:2", "deliver:5", "unpaid")


@pytest.fixture
def leased(backend: Backend) -> Iterator[tuple[Ledger, dict[str, Fence]]]:
    """A ledger with one message of each stage a fenced write could move (origin 1, destination
    2), a checkpoint of origin 1, a pending transaction on chain 2, and every lease of
    :data:`LEASES` held by one relayer."""
    ledger = open_ledger(backend.fresh("domains"))
    try:
        found = [disc(1, n, dest=2) for n in range(3)]
        ledger.record_discovered(found)
        ids = [msg_id(d.message) for d in found]
        ledger.transition(ids[1:], MessageStatus.FINAL)
        checkpoint = ledger.save_checkpoint(
            1, OUTBOX, ROOT_HASH, 5, block_number=5, block_hash=keccak256(b"cp")
        )
        ledger.transition(ids[2:], MessageStatus.ATTESTED, checkpoint_id=checkpoint)
        ledger.record_transaction(tx_for(2, seed=1))
        ledger.set_cursor(1, 11, keccak256(b"block 10"))
        board = LeaseBoard(ledger, LEASES, holder="relayer-a", lease_seconds=600)
        yield ledger, {claim.fence.name: claim.fence for claim in board.round({}).claimed}
    finally:
        ledger.close()


def snapshot(ledger: Ledger) -> dict[str, Any]:
    """Every row a refused write could have touched (the audit trail included)."""
    with ledger.engine.connect() as connection:
        return {
            table: sorted(map(tuple, connection.execute(sa.text(f"SELECT * FROM {table}"))))
            for table in (
                "messages",
                "status_events",
                "checkpoints",
                "checkpoint_signatures",
                "transactions",
                "transaction_messages",
                "scan_cursors",
                "message_counts",
            )
        }


def _checkpoint(ledger: Ledger) -> int:
    stored = ledger.latest_checkpoint(1, OUTBOX)
    assert stored is not None and stored.id is not None
    return stored.id


def _ids(ledger: Ledger) -> list[str]:
    return [m.id for m in ledger.messages()]  # nonce order: discovered, final, attested


# (lease, the write, what the refusal names). Each write is one its lease legitimately makes,
# but on another domain's row; the last ones cross sides (a delivery recording a message).
REFUSED: list[tuple[str, Callable[[Ledger], object], str]] = [
    ("scan:9", lambda lg: lg.record_discovered([disc(1, 7, dest=2)]), "has origin 1"),
    ("scan:9", lambda lg: lg.transition(_ids(lg)[:1], MessageStatus.FINAL), "has origin 1"),
    ("scan:9", lambda lg: lg.set_cursor(1, 20, keccak256(b"b")), "cursor of domain 1"),
    ("scan:9", lambda lg: lg.invalidate_above(1, 3, keccak256(b"a")), "origin 1's orphaned"),
    (
        "collect:9",
        lambda lg: lg.save_checkpoint(
            1, OUTBOX, ROOT_HASH, 9, block_number=9, block_hash=keccak256(b"c")
        ),
        "a checkpoint of origin 1",
    ),
    (
        "collect:9",
        lambda lg: lg.add_signature(_checkpoint(lg), b"\x01" * 20, b"\x02" * 65),
        "of origin 1",
    ),
    (
        "collect:9",
        lambda lg: lg.transition(_ids(lg)[1:2], MessageStatus.ATTESTED),
        "has origin 1",
    ),
    (
        "deliver:5",
        lambda lg: lg.transition(_ids(lg)[2:], MessageStatus.SKIPPED, reason="relay policy"),
        "has destination 2",
    ),
    ("deliver:5", lambda lg: lg.record_transaction(tx_for(2, seed=2)), "on chain 2"),
    (
        "deliver:5",
        lambda lg: lg.update_transaction(2, tx_for(2, seed=1).hash, TxStatus.CONFIRMED),
        "on chain 2",
    ),
    # A delivery's lease never writes an origin's rows, nor a scan's a destination's.
    ("deliver:2", lambda lg: lg.record_discovered([disc(1, 7, dest=2)]), "has origin 1"),
    ("deliver:2", lambda lg: lg.set_cursor(1, 20, keccak256(b"b")), "cursor of domain 1"),
    ("scan:1", lambda lg: lg.record_transaction(tx_for(2, seed=2)), "on chain 2"),
]


def test_a_fenced_write_outside_its_lease_domain_is_refused_and_writes_nothing(
    leased: tuple[Ledger, dict[str, Fence]],
) -> None:
    """Every operation that writes a domain's rows checks them against the lease's domain,
    alone and inside an atomic batch (which shares its transaction's domain); the refusal is
    one line naming the lease, the row and the likely cause, and nothing of the write stays."""
    ledger, fences = leased
    before = snapshot(ledger)
    for lease, write, named in REFUSED:
        with fenced_by(fences[lease]):
            with pytest.raises(WriteOutsideDomain) as refused:
                write(ledger)
            with pytest.raises(WriteOutsideDomain), ledger.atomic() as batch:
                write(batch)  # type: ignore[arg-type]
        text = str(refused.value)
        assert "\n" not in text and f"lease {lease}'s domain" in text and named in text, text
        assert "domain id in the configuration" in text
        assert snapshot(ledger) == before, lease


def test_writes_inside_the_domain_and_leases_without_one_go_through(
    leased: tuple[Ledger, dict[str, Fence]],
) -> None:
    """The check refuses only what is outside: the same operations under the right lease are
    written, and ``unpaid`` (no domain: it writes alone) may move any route's message."""
    ledger, fences = leased
    ids = _ids(ledger)
    with fenced_by(fences["scan:1"]):
        assert ledger.record_discovered([disc(1, 7, dest=2)]) == 1
        assert ledger.transition(ids[:1], MessageStatus.FINAL) == ids[:1]
        ledger.set_cursor(1, 20, keccak256(b"b"))
    with fenced_by(fences["deliver:2"]):
        ledger.record_transaction(tx_for(2, seed=2), ids[2:])
    with fenced_by(fences["unpaid"]):
        assert ledger.transition(ids[1:2], MessageStatus.SKIPPED, reason="any route") == ids[1:2]
    assert ledger.get(ids[2]).status is MessageStatus.SUBMITTED  # type: ignore[union-attr]
    assert ledger.verify_audit() == []


def test_a_constraint_the_database_enforces_is_refused_in_one_line(
    leased: tuple[Ledger, dict[str, Fence]],
) -> None:
    """A write the database refuses on a constraint (before the domain check, two relayers'
    scans racing on one message got this) is one line: PostgreSQL adds a DETAIL line, which
    the CLI and the lease keeper's log would have split (review RL, L2)."""
    ledger, _fences = leased
    with pytest.raises(LedgerError) as refused, ledger.atomic() as batch:
        batch._session.connection().execute(
            sa.text("INSERT INTO scan_cursors SELECT * FROM scan_cursors")  # the same key again
        )
    text = str(refused.value)
    assert text.startswith("constraint violated: ") and "\n" not in text, text


def test_lease_scopes_and_count_slots() -> None:
    """A scan and a collect of one origin share a scope and a slot; a delivery to the same
    number has another; names without a domain count in slot 0 and have no scope."""
    assert lease_scope("scan:7") == lease_scope("collect:7") == ("origin", 7)
    assert lease_scope("deliver:7") == ("destination", 7)
    assert count_slot("scan:7") == count_slot("collect:7") != count_slot("deliver:7")
    assert len({count_slot(f"deliver:{d}") for d in (0, 1, 2**31, 2**32 - 1)}) == 4
    assert 0 < count_slot("deliver:4294967295") < 2**63  # a BIGINT
    for name in ("unpaid", "scan:", "scan:4294967296", "key:0x11", None):
        assert count_slot(name) == 0
        assert name is None or lease_scope(name) is None


# --------------------------------------------------------------------------------------------
# PostgreSQL: the counters no longer make collect:o and deliver:d take turns


def test_collect_and_deliver_of_one_route_count_in_different_rows(
    shared: tuple[Ledger, dict[str, Fence], sa.Engine],
) -> None:
    """collect:1 attests a message of route (1, 2) and stays inside its transaction; deliver:2
    meanwhile sets another message of that route aside, out of ``attested``. Both change the
    route's ``attested`` count. With one counter row per (route, status) the delivery waited for
    the collect's row lock (review RL, M2); with a slot per writer domain it goes in and both
    hold their transactions at once, no lock of either waiting. The counts then add up."""
    ledger, fences, observer = shared
    a, b = disc(1, 3000, dest=2), disc(1, 3001, dest=2)
    ledger.record_discovered([a, b])
    ids = [msg_id(a.message), msg_id(b.message)]
    ledger.transition(ids, MessageStatus.FINAL)
    checkpoint = ledger.save_checkpoint(
        1, OUTBOX, ROOT_HASH, 4000, block_number=9, block_hash=keccak256(b"slots")
    )
    ledger.transition(ids[1:], MessageStatus.ATTESTED, checkpoint_id=checkpoint)
    before = ledger.counts_by_status(origin=1, destination=2)
    attest = Writer(
        ledger,
        fences["collect:1"],
        lambda x: x.transition(ids[:1], MessageStatus.ATTESTED, checkpoint_id=checkpoint),
    ).start()
    skip = Writer(
        ledger,
        fences["deliver:2"],
        lambda x: x.transition(ids[1:], MessageStatus.SKIPPED, reason="relay policy: slots"),
    )
    try:
        assert attest.inside.wait(WAIT_LIMIT)
        skip.start()
        until(skip.inside.is_set, "the delivery wrote while the collect holds its transaction")
        assert attest.error is None and skip.error is None
        with observer.connect() as connection:
            waiting = connection.execute(
                sa.text("SELECT locktype, mode FROM pg_locks WHERE NOT granted")
            ).all()
        assert waiting == []
    finally:
        attest.release.set()
        skip.release.set()
    attest.done()
    skip.done()
    after = ledger.counts_by_status(origin=1, destination=2)
    assert after[MessageStatus.ATTESTED] == before[MessageStatus.ATTESTED]  # +1 and -1
    assert after[MessageStatus.FINAL] == before[MessageStatus.FINAL] - 1
    assert after[MessageStatus.SKIPPED] == before[MessageStatus.SKIPPED] + 1
    with observer.connect() as connection:
        slots: dict[int, int] = dict(
            connection.execute(
                sa.text(
                    "SELECT slot, count FROM message_counts "
                    "WHERE origin = 1 AND destination = 2 AND status = 'attested'"
                )
            ).all()
        )
    # Each writer counted in its own row: +1 by the collect, -1 by the delivery.
    assert slots[count_slot("collect:1")] >= 1 and slots[count_slot("deliver:2")] <= -1
    assert sum(slots.values()) == after[MessageStatus.ATTESTED]


# --------------------------------------------------------------------------------------------
# The relayer: its scan, and the lease keeper


def test_a_scan_that_finds_another_origins_message_halts_and_records_nothing(
    tmp_path: Path,
) -> None:
    """Every message names the domain its outbox was deployed with. A scanned message whose
    origin is not the lane's configured domain means the configuration gives the chain a wrong
    id: the scan halts the route (one line) before writing, rather than recording under a lease
    whose lock does not cover those rows."""
    location = str(tmp_path / "scan.db")
    config = _load(tmp_path, location)
    with open_ledger(location) as ledger:
        relayer = Relayer(config, ledger)
        relayer._load_lanes()
        lane = next(iter(relayer.lanes.values()))
        wrong = lane.chain.domain + 1000
        with pytest.raises(RouteHalted) as halted:
            relayer._record_scan(lane, [disc(wrong, 0)], 10, keccak256(b"b10"))
        text = str(halted.value)
        assert "\n" not in text and f"origin {wrong}" in text and lane.chain.name in text
        assert ledger.messages() == [] and ledger.get_cursor(lane.chain.domain) is None


def test_the_keeper_stops_a_lease_that_writes_outside_its_domain_and_lives_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``scan:9`` writes origin 1's message: the ledger refuses, and the keeper stops that
    lease with one error line, gives it back (a relayer configured right may take it) and
    keeps it off for good itself, while its other lease keeps running."""
    ledger = open_ledger(str(tmp_path / "keeper.db"))
    wrong: list[float] = []
    right: list[float] = []

    async def misconfigured() -> None:
        wrong.append(trio.current_time())
        await trio.to_thread.run_sync(ledger.record_discovered, [disc(1, 0)])

    async def fine() -> None:
        while True:
            right.append(trio.current_time())
            await trio.sleep(0.05)

    board = LeaseBoard(ledger, ("scan:9", "scan:1"), holder="a", lease_seconds=0.8)
    seen: list[object] = []

    async def main() -> None:
        keeper = LeaseKeeper(board, {"scan:9": misconfigured, "scan:1": fine}, Counters())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(keeper.run)
            with trio.fail_after(WAIT_LIMIT):
                while not (wrong and right):
                    await trio.sleep(0.01)
                while (await trio.to_thread.run_sync(_holders, ledger))["scan:9"][0] is not None:
                    await trio.sleep(0.01)  # given back, not left to expire
                ran = len(right)
                while len(right) < ran + 3:  # the keeper, and its other lease, live on
                    await trio.sleep(0.01)
            seen.append(keeper._cooling.get("scan:9"))
            nursery.cancel_scope.cancel()

    try:
        with caplog.at_level(logging.ERROR, logger="passerelle.relayer.leases"):
            trio.run(main)
        assert seen == [math.inf] and len(wrong) == 1, (seen, wrong)  # never claimed again here
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "scan:9" in errors[0] and "\n" not in errors[0], errors
        assert "outside lease scan:9's domain" in errors[0]
        assert ledger.messages() == []
    finally:
        ledger.close()


class _ReleaseFailsOnce(LeaseBoard):
    """A board whose first give-back meets a database that does not answer in time (a
    lease-transaction timeout, a dropped connection); it counts its rounds."""

    releases_failed = 0
    rounds = 0

    def release(self, fences: Sequence[Fence]) -> int:
        if not self.releases_failed:
            self.releases_failed += 1
            raise LedgerError("lease transaction timed out (simulated)")
        return super().release(fences)

    def round(self, held: Mapping[str, Fence], avoid: Collection[str] = ()) -> Round:
        result = super().round(held, avoid)
        self.rounds += 1
        return result


def test_a_lease_stopped_for_good_is_dropped_even_when_its_give_back_fails(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Review R2a M1. The keeper kept a lease stopped for a write outside its domain in the
    leases it holds: when the give-back failed, every round renewed it with no task behind it
    and no relayer could ever take the route; when it worked, the next round logged a false
    "lost" warning. Now the lease leaves ``held`` at once: after one lease period without
    renewal another relayer claims it, and nothing says it was lost."""
    ledger = open_ledger(str(tmp_path / "give-back.db"))
    board = _ReleaseFailsOnce(ledger, ("scan:9", "scan:1"), holder="a", lease_seconds=0.8)
    counters = Counters()
    held: list[set[str]] = []
    taken: list[tuple[str, ...]] = []

    async def misconfigured() -> None:
        await trio.to_thread.run_sync(ledger.record_discovered, [disc(1, 0)])

    async def main() -> None:
        keeper = LeaseKeeper(
            board, {"scan:9": misconfigured, "scan:1": trio.sleep_forever}, counters
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(keeper.run)
            with trio.fail_after(WAIT_LIMIT):
                while not board.releases_failed:
                    await trio.sleep(0.01)
                held.append(set(keeper.held))
                # More than a lease period of rounds: had the keeper renewed scan:9 in any of
                # them, its row would still be unexpired and the claim below would find nothing.
                after = board.rounds + ROUNDS_PER_LEASE + 1
                while board.rounds < after:
                    await trio.sleep(0.01)
                held.append(set(keeper.held))
            other = LeaseBoard(ledger, ("scan:9",), holder="b", lease_seconds=0.8)
            result = await trio.to_thread.run_sync(other.round, {})
            taken.append(tuple(claim.fence.name for claim in result.claimed))
            nursery.cancel_scope.cancel()

    try:
        with caplog.at_level(logging.WARNING, logger="passerelle.relayer.leases"):
            trio.run(main)
        assert held == [{"scan:1"}, {"scan:1"}], held  # dropped before the give-back
        assert taken == [("scan:9",)], taken  # a relayer configured right takes it
        lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert counters.leases_lost == 0 and not [line for line in lines if "lost" in line]
        assert [line for line in lines if "could not give scan:9 back" in line], lines
    finally:
        ledger.close()


def test_a_deadlocked_write_gives_the_lease_up_without_the_busy_pause(tmp_path: Path) -> None:
    """A deadlock is the server failing one writer of a cycle, not a slow database path: the
    keeper gives the lease up (freed at once) but does not keep it off for a lease period as it
    does after a lock timeout (test_leases_hostile.py), so the next round may claim it again."""
    ledger = open_ledger(str(tmp_path / "deadlock.db"))
    runs: list[float] = []
    board = LeaseBoard(ledger, ("collect:1",), holder="a", lease_seconds=0.8)
    cooling: list[dict[str, float]] = []

    async def deadlocked() -> None:
        runs.append(trio.current_time())
        raise LedgerDeadlock("ledger write deadlocked with other writers (simulated)")

    async def main() -> None:
        keeper = LeaseKeeper(board, {"collect:1": deadlocked}, Counters())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(keeper.run)
            while not runs:
                await trio.sleep(0.01)
            while (await trio.to_thread.run_sync(_holders, ledger))["collect:1"][0] is not None:
                await trio.sleep(0.01)
            cooling.append(dict(keeper._cooling))
            with trio.fail_after(WAIT_LIMIT):
                while len(runs) < 2:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    finally:
        ledger.close()
    assert cooling == [{}]
    assert len(runs) >= 2


def test_an_outbox_deployed_for_another_domain_halts_the_scan_at_its_start(
    anvil: AnvilProcess,
) -> None:
    """The Outbox's ``localDomain`` is what every message says its origin is: a configuration
    that names the chain otherwise is refused when the scan starts (one line, RouteHalted ends
    the relayer non-zero), before a block is read; the right one passes."""
    wrong, right = deploy_outbox(anvil.rpc_url, DOMAIN + 1), deploy_outbox(anvil.rpc_url, DOMAIN)

    async def check(outbox: bytes) -> None:
        chain = origin_config([anvil.rpc_url], outbox)
        async with open_evm(chain) as evm:
            check = DomainCheck("outbox", chain, RelayerMetrics())
            await check_outbox_domain(check, EvmOrigin(chain, evm))

    with pytest.raises(RouteHalted) as halted:
        trio.run(check, wrong)
    text = str(halted.value)
    assert "\n" not in text and f"deployed for domain {DOMAIN + 1}" in text
    assert f"gives the chain domain {DOMAIN}" in text
    trio.run(check, right)
