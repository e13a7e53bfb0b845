"""Leases (relayer/leases.py) and fenced ledger writes (relayer/ledger.py ``fenced_by``), on
SQLite and on PostgreSQL (the ``backend`` fixture of tests/test_ledger.py).

The hostile cases: a relayer that paused past its lease writes with a stale token (refused,
nothing recorded, in the same transaction as the check); two relayers claim at the same instant
(never the same lease: on PostgreSQL a locked row is skipped, not waited for); a relayer whose
database stops answering (its tasks stop before its lease can expire); a relayer that grabs
everything while others are alive (it gives the surplus back).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
import trio
from test_ledger import ORIGIN, Backend, Clock, disc, msg_id
from test_ledger import backend as backend  # noqa: PLC0414 - fixtures: pytest finds them here
from test_ledger import fast_dir as fast_dir  # noqa: PLC0414
from test_ledger import postgres_admin as postgres_admin  # noqa: PLC0414
from test_substrate_route import config_toml

from relayer.config import ConfigError, load_config
from relayer.leases import (
    DEFAULT_LEASE_SECONDS,
    LeaseBoard,
    LeaseKeeper,
    LeaseSetupError,
    Round,
    lease_period,
)
from relayer.ledger import (
    Fence,
    LeaseLost,
    Ledger,
    LedgerBusy,
    LedgerError,
    MessageStatus,
    fenced_by,
    open_ledger,
)

NAMES = ("collect:1", "collect:2", "deliver:1", "deliver:2", "scan:1", "scan:2", "unpaid")
LEASE = 10.0


@pytest.fixture
def ledger(backend: Backend) -> Iterator[Ledger]:
    opened = open_ledger(backend.fresh("leases"))
    yield opened
    opened.close()


def board(ledger: Ledger, holder: str, clock: Clock | None = None, **kw: object) -> LeaseBoard:
    return LeaseBoard(ledger, NAMES, holder=holder, lease_seconds=LEASE, clock=clock, **kw)  # type: ignore[arg-type]


def held(result: Round, before: dict[str, Fence] | None = None) -> dict[str, Fence]:
    """What a relayer holds after ``result`` (starting from ``before``)."""
    now = dict(before or {})
    for fence in result.lost:
        now.pop(fence.name, None)
    now.update({claim.fence.name: claim.fence for claim in result.claimed})
    for fence in result.surplus:
        now.pop(fence.name, None)
    return now


def rows(ledger: Ledger, table: str) -> list[tuple[object, ...]]:
    with ledger.engine.connect() as connection:
        return [tuple(r) for r in connection.execute(sa.text(f"SELECT * FROM {table}"))]


# --------------------------------------------------------------------------------------------
# Claim, renew, expiry, takeover


def test_claim_renew_expire_and_take_over(ledger: Ledger) -> None:
    clock = Clock()
    a, b = board(ledger, "a", clock), board(ledger, "b", clock)
    first = a.round({})
    assert sorted(c.fence.name for c in first.claimed) == sorted(NAMES)  # alone: everything
    assert {c.fence.token for c in first.claimed} == {1}
    assert all(c.previous is None for c in first.claimed)
    mine = held(first)

    # b joins while a's leases are fresh: it takes nothing held, and a sees two relayers.
    clock.advance(LEASE / 4)
    assert b.round({}).claimed == ()
    again = a.round(mine)
    assert (again.live, again.share) == (2, 4)
    assert {f.name for f in again.renewed} == set(NAMES) and again.lost == ()
    assert len(again.surplus) == 3  # above its share of 4: three go back
    released = a.release(list(again.surplus))
    assert released == 3
    mine = held(again, mine)
    taken = b.round({})
    assert sorted(c.fence.name for c in taken.claimed) == sorted(f.name for f in again.surplus)
    assert all(c.previous is None and c.fence.token == 2 for c in taken.claimed)  # given back

    # a stops renewing (killed at its last round): b, renewing every quarter lease, takes a's
    # leases over (the next token each) within a lease period and a round of a's last round.
    last_round = clock.now
    ours, over = held(taken), []
    while len(ours) < len(NAMES):
        clock.advance(LEASE / 4)
        result = b.round(ours)
        assert result.lost == ()
        ours = held(result, ours)
        over += result.claimed
    assert clock.now - last_round <= LEASE + LEASE / 4
    assert sorted(c.fence.name for c in over) == sorted(mine)
    assert all(c.previous == "a" and c.fence.token == 2 for c in over)
    assert all(0 <= c.expired_for <= LEASE / 4 for c in over)
    # a comes back: everything it held is lost, nothing is renewed.
    back = a.round(mine)
    assert back.renewed == () and {f.name for f in back.lost} == set(mine)


def test_an_expired_lease_is_not_renewed_even_if_nobody_took_it(ledger: Ledger) -> None:
    clock = Clock()
    a = board(ledger, "a", clock)
    mine = held(a.round({}))
    clock.advance(LEASE)  # exactly at expiry: expired
    late = a.round(mine)
    assert late.renewed == () and {f.name for f in late.lost} == set(NAMES)
    # ...and taken again under the next token (its task restarts: a gap is never papered over).
    assert {c.fence.token for c in late.claimed} == {2}


def test_bad_setup_is_refused(ledger: Ledger) -> None:
    for names, holder, seconds in [
        ((), "a", 1.0),
        (("x", "x"), "a", 1.0),
        (("x" * 65,), "a", 1.0),
        (("x",), "", 1.0),
        (("x",), "a", 0.0),
        (("x",), "a", float("nan")),
    ]:
        with pytest.raises(LeaseSetupError):
            LeaseBoard(ledger, names, holder=holder, lease_seconds=seconds)


# --------------------------------------------------------------------------------------------
# Fencing


def test_a_stale_token_cannot_write_and_nothing_is_recorded(ledger: Ledger) -> None:
    """The relayer that paused past its lease: its writes after the takeover are refused whole
    (messages, audit rows, cursor), while its successor's go through."""
    clock = Clock()
    a, b = board(ledger, "a", clock), board(ledger, "b", clock)
    stale = held(a.round({}))["scan:1"]
    with fenced_by(stale):
        ledger.record_discovered([disc(ORIGIN, 0)])  # while it holds the lease: recorded
    clock.advance(LEASE + 1)
    fresh = held(b.round({}))["scan:1"]
    assert fresh.token == stale.token + 1
    before = {t: rows(ledger, t) for t in ("messages", "status_events", "scan_cursors")}

    with fenced_by(stale), pytest.raises(LeaseLost, match="scan:1") as lost:
        ledger.record_discovered([disc(ORIGIN, 1)])
    assert "\n" not in str(lost.value)
    with fenced_by(stale), pytest.raises(LeaseLost), ledger.atomic() as batch:
        batch.set_cursor(ORIGIN, 99, None)
    with fenced_by(stale), pytest.raises(LeaseLost):
        ledger.transition(
            [msg_id(disc(ORIGIN, 0).message)], MessageStatus.SKIPPED, reason="hostile"
        )
    assert {t: rows(ledger, t) for t in before} == before

    with fenced_by(fresh):
        ledger.record_discovered([disc(ORIGIN, 1)])
    assert len(ledger.messages()) == 2
    # A lease given back fences nothing either, even with the right token.
    b.release([fresh])
    with fenced_by(fresh), pytest.raises(LeaseLost):
        ledger.set_cursor(ORIGIN, 5, None)


def test_the_fence_is_checked_in_the_write_transaction_itself(ledger: Ledger) -> None:
    """A write under way holds the lease row: a takeover cannot slip in between the check and
    the commit (PostgreSQL skips the row; SQLite waits for the file's write lock)."""
    clock = Clock()
    a, b = board(ledger, "a", clock), board(ledger, "b", clock)
    fence = held(a.round({}))["scan:1"]
    clock.advance(LEASE + 1)  # expired: b may take it, unless a write holds it right now
    inside, finish = threading.Event(), threading.Event()

    def slow_write() -> None:
        with fenced_by(fence), ledger.atomic() as batch:
            batch.record_discovered([disc(ORIGIN, 0)])
            inside.set()
            assert finish.wait(10)

    postgres = ledger.engine.dialect.name == "postgresql"
    with ThreadPoolExecutor(2) as pool:
        writing = pool.submit(slow_write)
        assert inside.wait(10)
        claiming = pool.submit(b.round, {})
        if postgres:
            # The claim returns while the write is still open: it skipped the row, not waited.
            result = claiming.result(timeout=10)
            assert not writing.done()
        finish.set()
        writing.result(timeout=10)
        if not postgres:  # the claim waits for the file's write lock, then takes the lease
            result = claiming.result(timeout=10)
    assert len(ledger.messages()) == 1  # the write that began under a valid token committed
    names = {c.fence.name for c in result.claimed}
    if postgres:
        assert "scan:1" not in names and len(names) == len(NAMES) - 1
    else:
        assert "scan:1" in names


def test_a_leasing_relayer_refuses_writes_outside_every_lease(ledger: Ledger) -> None:
    ledger.require_fence = True
    with pytest.raises(LedgerError, match="outside every lease"):
        ledger.record_discovered([disc(ORIGIN, 0)])
    assert ledger.messages() == []
    ledger.require_fence = False
    ledger.record_discovered([disc(ORIGIN, 0)])  # operator commands: no fence needed


# --------------------------------------------------------------------------------------------
# Claiming at once


def test_two_claimers_never_get_the_same_lease(ledger: Ledger) -> None:
    """Eight relayers claim at the same instant, many times over, on the database's clock: every
    token is handed out once, and every lease ends with exactly one holder."""
    boards = [LeaseBoard(ledger, NAMES, holder=f"r{i}", lease_seconds=0.2) for i in range(8)]
    mine: list[dict[str, Fence]] = [{} for _ in boards]
    handed: Counter[tuple[str, int]] = Counter()
    barrier = threading.Barrier(len(boards))

    def play(index: int) -> None:
        for _ in range(6):
            barrier.wait(timeout=30)
            result = boards[index].round(mine[index])
            handed.update((c.fence.name, c.fence.token) for c in result.claimed)
            mine[index] = held(result, mine[index])
            boards[index].release(list(result.surplus))
            time.sleep(0.05)

    with ThreadPoolExecutor(len(boards)) as pool:
        for done in [pool.submit(play, i) for i in range(len(boards))]:
            done.result(timeout=60)
    assert handed and max(handed.values()) == 1, handed.most_common(3)
    holders = Counter(name for owned in mine for name in owned)
    assert max(holders.values(), default=0) <= 1  # no lease believed held by two relayers
    stored = {name: token for name, _, token, *_ in rows(ledger, "leases")}
    for name in NAMES:  # every claim moved the token by one, and only claims did
        assert stored[name] == sum(n for (lease, _), n in handed.items() if lease == name)


@pytest.fixture
def pg_ledger(postgres_admin: sa.Engine, fast_dir: Path) -> Iterator[Ledger]:
    """A ledger on PostgreSQL only (what SKIP LOCKED is about; SQLite serialises writes)."""
    databases = Backend("postgresql", fast_dir, admin=postgres_admin)
    opened = open_ledger(databases.fresh("skip"))
    try:
        yield opened
    finally:
        opened.close()
        databases.release_all()


def test_postgres_skips_a_locked_lease_instead_of_waiting(pg_ledger: Ledger) -> None:
    ledger = pg_ledger
    a = board(ledger, "a")
    a.leave(list(held(a.round({})).values()))  # the rows exist, all free, nobody live
    with ledger.engine.connect() as other:
        other.execute(sa.text("SELECT name FROM leases WHERE name = 'deliver:1' FOR UPDATE"))
        began = time.monotonic()
        result = board(ledger, "b").round({})  # would wait 30 s (lock_timeout) without SKIP
        assert time.monotonic() - began < 5
        other.rollback()
    assert {c.fence.name for c in result.claimed} == set(NAMES) - {"deliver:1"}


# --------------------------------------------------------------------------------------------
# Balance


def test_relayers_share_the_leases_and_take_a_dead_ones_share(ledger: Ledger) -> None:
    clock = Clock()
    boards = {name: board(ledger, name, clock) for name in ("a", "b", "c")}
    mine: dict[str, dict[str, Fence]] = {name: {} for name in boards}

    def rounds(names: list[str], times: int = 3) -> dict[str, int]:
        for _ in range(times):
            for name in names:
                result = boards[name].round(mine[name])
                boards[name].release(list(result.surplus))
                mine[name] = held(result, mine[name])
            clock.advance(LEASE / 4)
        everything = Counter(lease for n in names for lease in mine[n])
        assert set(everything) == set(NAMES) and max(everything.values()) == 1
        return {name: len(mine[name]) for name in names}

    assert rounds(["a"]) == {"a": 7}  # alone, it works every route
    assert sorted(rounds(["a", "b", "c"]).values()) == [1, 3, 3]  # ceil(7 / 3) at most each
    boards["d"] = board(ledger, "d", clock)
    mine["d"] = {}
    assert sorted(rounds(["a", "b", "c", "d"]).values()) == [1, 2, 2, 2]
    # d dies (renews nothing): after a lease period its share is taken by the others.
    clock.advance(LEASE)
    assert sorted(rounds(["a", "b", "c"]).values()) == [1, 3, 3]


# --------------------------------------------------------------------------------------------
# The keeper: tasks run exactly while their lease is held


async def run_until(keeper: LeaseKeeper, done: Callable[[], bool], limit: float) -> None:
    """Run ``keeper`` until ``done()`` (checked every 10 ms), then stop it; fail after ``limit``."""
    with trio.fail_after(limit):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(keeper.run)
            while not done():
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()


@dataclass
class Counters:
    leases_claimed: int = 0
    lease_takeovers: int = 0
    leases_lost: int = 0


class Unreachable(LeaseBoard):
    """A board whose database stops answering after the first round."""

    rounds = 0

    def round(self, held: Mapping[str, Fence], avoid: Collection[str] = ()) -> Round:
        self.rounds += 1
        if self.rounds > 1:
            raise LedgerBusy("ledger is busy (simulated): no answer")
        return super().round(held, avoid)


def test_a_relayer_that_cannot_renew_stops_its_tasks_before_the_lease_expires(
    ledger: Ledger,
) -> None:
    # 3 s (a round of 0.75 s): with 0.8 s, a loaded fresh-clone run stalled the keeper past the
    # 0.1 s the assertion below then allowed, and the task stopped 0.11 s after the expiry.
    lease = 3.0
    keeper_board = Unreachable(ledger, ("scan:1",), holder="a", lease_seconds=lease)
    stopped: list[float] = []
    counters = Counters()

    async def task() -> None:
        try:
            await trio.sleep_forever()
        finally:
            stopped.append(time.time())

    keeper = LeaseKeeper(keeper_board, {"scan:1": task}, counters)

    async def main() -> None:
        await run_until(keeper, lambda: bool(stopped), lease * 2)

    trio.run(main)
    (record,) = [r for r in keeper_board.holdings() if r.name == "scan:1"]
    assert len(stopped) == 1 and counters.leases_lost == 1
    # Stopped a round before the expiry the database holds (its own clock, same machine).
    expiry = record.claimed_at + lease
    assert stopped[0] < expiry - keeper.margin / 2, (stopped[0], expiry)


def test_a_task_whose_write_meets_a_successor_stops_and_writes_nothing(ledger: Ledger) -> None:
    keeper_board = LeaseBoard(ledger, ("scan:1",), holder="a", lease_seconds=5.0)
    counters = Counters()
    written: list[int] = []
    stolen = threading.Event()

    async def scan() -> None:
        for block in range(1, 1000):
            if block == 5:
                # Another relayer took the lease while this one was paused (the next token).
                with ledger.engine.begin() as connection:
                    connection.execute(sa.text("UPDATE leases SET token = token + 1, holder = 'b'"))
                stolen.set()
            await trio.to_thread.run_sync(ledger.set_cursor, ORIGIN, block, None)
            written.append(block)
            await trio.sleep(0.01)

    keeper = LeaseKeeper(keeper_board, {"scan:1": scan}, counters)

    async def main() -> None:
        await run_until(keeper, lambda: stolen.is_set() and not keeper.held, 5.0)

    trio.run(main)
    assert stolen.is_set() and written == [1, 2, 3, 4]
    cursor = ledger.get_cursor(ORIGIN)
    assert cursor is not None and cursor.next_block == 4  # the refused write left nothing
    assert counters.leases_lost == 1 and keeper.held == {}
    assert [(r.holder, r.token) for r in keeper_board.holdings()] == [("b", 2)]  # b's, intact


def test_a_clean_stop_gives_every_lease_back(ledger: Ledger) -> None:
    """SIGTERM: the tasks stop, their leases are freed and the relayer leaves the live ones,
    so the others take its share at their next round rather than a lease period later."""
    keeper_board = LeaseBoard(ledger, ("scan:1", "deliver:2"), holder="a", lease_seconds=5.0)
    started: list[str] = []

    def task(name: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            started.append(name)
            await trio.sleep_forever()

        return run

    keeper = LeaseKeeper(
        keeper_board, {name: task(name) for name in keeper_board.names}, Counters()
    )

    async def main() -> None:
        await run_until(keeper, lambda: len(started) == 2, 5.0)

    trio.run(main)
    assert sorted(started) == ["deliver:2", "scan:1"]
    assert [(r.holder, r.token) for r in keeper_board.holdings()] == [(None, 1), (None, 1)]
    assert rows(ledger, "lease_holders") == []


# --------------------------------------------------------------------------------------------
# When a relayer leases, and how long


def test_postgres_leases_by_default_and_sqlite_only_when_asked(ledger: Ledger) -> None:
    postgres = ledger.engine.dialect.name == "postgresql"
    assert lease_period(None, ledger) == (DEFAULT_LEASE_SECONDS if postgres else None)
    assert lease_period(4.0, ledger) == 4.0


@pytest.mark.parametrize("value", ["0", "0.5", "3601", "true", '"15"', "nan", "inf", "[15]"])
def test_a_lease_period_that_cannot_work_is_one_line(tmp_path: Path, value: str) -> None:
    path = tmp_path / "passerelle.toml"
    with_lease = config_toml().replace("[relayer]\n", f"[relayer]\nlease_seconds = {value}\n")
    path.write_text(with_lease)
    with pytest.raises(ConfigError, match=r"relayer\.lease_seconds") as refused:
        load_config(path)
    assert "\n" not in str(refused.value)
    path.write_text(with_lease.replace(f"lease_seconds = {value}", "lease_seconds = 2.5"))
    assert load_config(path).lease_seconds == 2.5


def test_a_relayer_that_joins_gets_its_share_and_no_task_ever_runs_twice(ledger: Ledger) -> None:
    """Two keepers on one ledger: the first runs everything, the second joins; the first gives
    its surplus back (stopping those tasks first), the second starts them — and at no sample is
    a task running in both."""
    names = ("collect:1", "deliver:2", "scan:1", "unpaid")
    running: dict[str, set[str]] = {"a": set(), "b": set()}
    overlaps: list[str] = []

    def task(relayer: str, name: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            if name in running["b" if relayer == "a" else "a"]:
                overlaps.append(name)
            running[relayer].add(name)
            try:
                await trio.sleep_forever()
            finally:
                running[relayer].discard(name)

        return run

    keepers = {
        relayer: LeaseKeeper(
            LeaseBoard(ledger, names, holder=relayer, lease_seconds=0.4),
            {name: task(relayer, name) for name in names},
            Counters(),
        )
        for relayer in ("a", "b")
    }

    async def main() -> None:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(keepers["a"].run)
                while len(running["a"]) < len(names):
                    await trio.sleep(0.01)
                nursery.start_soon(keepers["b"].run)
                while sorted(map(len, running.values())) != [2, 2]:
                    await trio.sleep(0.01)
                nursery.cancel_scope.cancel()

    trio.run(main)
    assert overlaps == []


def test_a_task_with_nothing_left_to_do_is_held_idle_not_restarted(ledger: Ledger) -> None:
    """The unpaid re-check returns once nothing can be unpaid: its lease stays held (renewed),
    and it is neither started again here nor by another relayer each round."""
    keeper_board = LeaseBoard(ledger, ("unpaid",), holder="a", lease_seconds=0.4)
    runs: list[float] = []

    async def once() -> None:
        runs.append(time.monotonic())

    counters = Counters()
    keeper = LeaseKeeper(keeper_board, {"unpaid": once}, counters)
    expiries: set[float] = set()

    async def main() -> None:
        def renewed_twice() -> bool:
            expiries.update(r.expires_at for r in keeper_board.holdings() if r.holder == "a")
            return len(expiries) >= 3  # claimed, then renewed twice: several rounds

        await run_until(keeper, renewed_twice, 5.0)

    trio.run(main)
    assert len(runs) == 1 and counters.leases_claimed == 1


def test_a_writer_frozen_inside_a_transaction_loses_its_locks_not_the_others(
    backend: Backend,
) -> None:
    """A relayer stopped (SIGSTOP, a paused VM) or cut off INSIDE a write transaction: on
    PostgreSQL the server ends its session after the idle bound, so the ledger's write lock and
    its rows come free and the other relayers go on (without the bound they waited until
    their lock timeout and failed, for as long as the server's keepalive took: hours)."""
    if backend.name != "postgresql":
        pytest.skip("SQLite has no server to end a session; its lock is the file's")
    location = backend.fresh("frozen")
    # The schema first, without the short bound: creating it runs every migration in one
    # transaction, and on a loaded machine the client's own work between two of its statements
    # can exceed half a second (the server then ended THAT session, failing the open).
    other = open_ledger(location, busy_timeout=5.0)
    frozen = open_ledger(location, idle_timeout=0.5)
    try:
        inside = threading.Event()
        outcome: list[BaseException | None] = []

        def freeze() -> None:
            try:
                with frozen._writing():  # holds the write lock, then goes silent
                    inside.set()
                    time.sleep(2.0)
                outcome.append(None)
            except BaseException as exc:  # the session ended under it
                outcome.append(exc)

        worker = threading.Thread(target=freeze)
        worker.start()
        assert inside.wait(10)
        started = time.monotonic()
        other.set_cursor(ORIGIN, 7, None)  # waits for the write lock, then gets it
        waited = time.monotonic() - started
        worker.join(10)
        assert waited < 2.0, f"the other writer waited {waited:.1f} s: the lock was not freed"
        assert outcome and outcome[0] is not None  # the frozen transaction did not commit
        cursor = other.get_cursor(ORIGIN)
        assert cursor is not None and cursor.next_block == 7
    finally:
        frozen.close()
        other.close()


def test_a_keeper_names_the_domains_it_holds_by_kind(ledger: Ledger) -> None:
    """What `/readyz` judges a leasing relayer on: only the origins it scans and the
    destinations it delivers to now (relayer.relay.Relayer.route_progress)."""

    async def idle() -> None:
        await trio.sleep_forever()

    keeper = LeaseKeeper(board(ledger, "a"), dict.fromkeys(NAMES, idle), Counters())
    assert keeper.held_domains("scan") == set()
    first = held(board(ledger, "a").round(dict(keeper.held)))
    keeper.held = {name: fence for name, fence in first.items() if name != "scan:2"}
    assert keeper.held_domains("scan") == {1}
    assert keeper.held_domains("deliver") == {1, 2}
    assert keeper.held_domains("unpaid") == set()  # no domain in that lease's name
