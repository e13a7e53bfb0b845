"""The lease review's findings, attacked (relayer/leases.py, relayer/relay.py, the EVM delivery's
settle, relayer/ledger.py's timeouts, migration 0004), on SQLite and PostgreSQL where both apply.

Who attacks: a database member that writes garbage into the lease tables (a token at BIGINT's
end, an expiry of Infinity, heartbeats from the future, a holder name that forges log lines);
a relayer frozen inside a transaction (its row locks must not stall the others' rounds and
writes); an operator who starts a second relayer on a key that is already sending; and a
takeover, which must not count its predecessor's transactions in flight as dropped (every one
of them would be sent again).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, cast

import pytest
import sqlalchemy as sa
import trio
import trio.testing
from eth_account import Account
from hexbytes import HexBytes
from test_leases import NAMES, Counters, held, run_until
from test_leases import ledger as ledger  # noqa: PLC0414 - a fixture
from test_ledger import ORIGIN, Backend, Clock, checkpoint_for, disc, drive, msg_id, tx_for
from test_ledger import backend as backend  # noqa: PLC0414 - fixtures: pytest finds them here
from test_ledger import fast_dir as fast_dir  # noqa: PLC0414
from test_ledger import postgres_admin as postgres_admin  # noqa: PLC0414
from test_ledger_migrations import passerelle, query, run_statements, upgrade_to
from test_substrate_route import KEYS, config_toml
from web3 import Web3
from web3.types import RPCEndpoint

from adapters.errors import AdapterError
from adapters.evm.tx import MinedTx, TxEngine
from adapters.jsonrpc import RpcError
from devnet.anvil import AnvilProcess
from light_clients.committee import address_of
from relayer.config import ChainConfig, Config, RelayPolicy, load_config
from relayer.families.evm.delivery import EvmDelivery
from relayer.leases import (
    FROM_THE_FUTURE,
    KeyInUse,
    LeaseBoard,
    LeaseKeeper,
    key_lease_name,
    leasing,
    pin_key,
    shown_holder,
)
from relayer.ledger import (
    SCHEMA_VERSION,
    Fence,
    LeaseLost,
    Ledger,
    LedgerBusy,
    MessageStatus,
    TxStatus,
    fenced_by,
    migrate_ledger,
    open_ledger,
)
from relayer.relay import Relayer
from relayer.signer import LocalSigner

LEASE = 10.0


def board(ledger: Ledger, holder: str, clock: Clock | None = None) -> LeaseBoard:
    return LeaseBoard(ledger, NAMES, holder=holder, lease_seconds=LEASE, clock=clock)


def execute(ledger: Ledger, sql: str, **params: Any) -> None:
    """Write as a hostile database member does: plain SQL, around the code under test."""
    with ledger.engine.begin() as connection:
        connection.execute(sa.text(sql), params)


# --------------------------------------------------------------------------------------------
# 3. Rows no relayer writes


GARBAGE = {
    "a token at BIGINT's end": (
        "INSERT INTO leases VALUES ('scan:9', 'x', 9223372036854775807, 1, 1, 1)"
    ),
    "a negative token": "INSERT INTO leases VALUES ('scan:9', 'x', -1, 1, 1, 1)",
    "an expiry of Infinity": "INSERT INTO leases VALUES ('scan:9', 'x', 1, {inf}, 1, 1)",
    "an expiry of NaN": "INSERT INTO leases VALUES ('scan:9', 'x', 1, {nan}, 1, 1)",
    "a negative time": "INSERT INTO leases VALUES ('scan:9', 'x', 1, 1, -5, 1)",
    "an empty lease name": "INSERT INTO leases VALUES ('', 'x', 1, 1, 1, 1)",
    "a holder of 129 characters": "INSERT INTO leases VALUES ('scan:9', '{long}', 1, 1, 1, 1)",
    "an empty holder": "INSERT INTO lease_holders VALUES ('', 1, 1)",
    "a heartbeat at Infinity": "INSERT INTO lease_holders VALUES ('x', {inf}, 1)",
}


def _literal(backend: Backend, sql: str) -> str:
    postgres = backend.name == "postgresql"
    return sql.format(
        inf="'Infinity'::float8" if postgres else "1e999",
        nan="'NaN'::float8" if postgres else "(0.0 / 0.0)",
        long="h" * 129,
    )


@pytest.mark.parametrize("what", sorted(GARBAGE))
def test_rows_no_relayer_writes_are_refused_by_the_database(
    backend: Backend, ledger: Ledger, what: str
) -> None:
    sql = _literal(backend, GARBAGE[what])
    with pytest.raises(sa.exc.DBAPIError):  # IntegrityError (CHECK, NOT NULL), or on PG a
        execute(ledger, sql)  # StringDataRightTruncation for the over-long holder
    # ... while an honest row of the same shape goes in.
    execute(ledger, "INSERT INTO leases VALUES ('scan:9', 'x', 1, 2000000000, 1, 1)")


def test_migration_0004_drops_garbage_rows_and_keeps_the_tokens_of_the_others(
    backend: Backend,
) -> None:
    location = backend.fresh("m0004")
    upgrade_to(location, "0003")
    inf = "'Infinity'::float8" if backend.name == "postgresql" else "1e999"
    run_statements(
        backend,
        location,
        [
            "INSERT INTO leases VALUES ('scan:1', 'relayer-a', 41, 1000, 900, 950)",
            "INSERT INTO leases VALUES ('scan:2', 'evil', 9223372036854775807, 1000, 1, 1)",
            f"INSERT INTO leases VALUES ('scan:3', 'evil', 1, {inf}, 1, 1)",
            "INSERT INTO leases VALUES ('deliver:1', NULL, 7, 500, 400, 500)",
            "INSERT INTO lease_holders VALUES ('relayer-a', 990, 900)",
            f"INSERT INTO lease_holders VALUES ('ghost', {inf}, 1)",
        ],
    )
    # To the newest revision (0005 and later change no lease table).
    assert migrate_ledger(location).after == f"{SCHEMA_VERSION:04d}"
    assert sorted(query(backend, location, "SELECT name, holder, token FROM leases")) == [
        ("deliver:1", None, 7),
        ("scan:1", "relayer-a", 41),
    ]
    assert query(backend, location, "SELECT holder FROM lease_holders") == [("relayer-a",)]
    with open_ledger(location) as migrated:  # a working ledger, its CHECKs in place
        with pytest.raises(sa.exc.DBAPIError):
            execute(migrated, "UPDATE leases SET token = -1 WHERE name = 'scan:1'")
        fence = held(board(migrated, "b", Clock(5_000.0)).round({}))["scan:1"]
        assert fence.token == 42  # fencing goes on from the kept token


def test_a_lease_held_beyond_any_lease_period_is_taken_with_one_line(
    ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    """An expiry a century away passes the CHECK (a finite time) but no relayer renews for
    longer than the longest lease: taken as expired, said in one line, the holder's name (a
    forged log line, a terminal escape) shown harmless."""
    clock = Clock(10_000.0)
    board(ledger, "a", clock).round({})  # the rows exist
    forged = "evil\n2026-12-07 WARNING leases: all fine\x1b[2J" + "z" * 300
    execute(
        ledger,
        "UPDATE leases SET holder = :h, expires_at = :e WHERE name = 'scan:1'",
        h=forged[:128],
        e=clock.now + FROM_THE_FUTURE + 3600 * 24 * 365 * 100,
    )
    keeper = LeaseKeeper(
        board(ledger, "b", clock), dict.fromkeys(NAMES, _idle), counters := Counters()
    )
    with caplog.at_level(logging.INFO, logger="passerelle.relayer.leases"):
        trio.run(run_until, keeper, lambda: "scan:1" in keeper.held, 10.0)
    assert counters.lease_takeovers == 1
    lines = [r.getMessage() for r in caplog.records]
    said = [line for line in lines if "beyond any lease" in line]
    assert len(said) == 1 and "\n" not in said[0] and "\x1b" not in said[0]
    took = [line for line in lines if "took scan:1 over" in line]
    assert len(took) == 1 and "\n" not in took[0] and "\x1b" not in took[0], took
    assert all("\n" not in line for line in lines)


def test_a_holder_name_is_shown_printable_and_bounded() -> None:
    assert shown_holder("host/12/ab") == "host/12/ab"
    shown = shown_holder("a\nb\x1b[31m" + "c" * 500)
    assert shown.startswith("a?b?[31m") and len(shown) == 129 and shown.isprintable()
    assert shown_holder(None) == "None"


def test_heartbeats_from_the_future_do_not_shrink_the_shares(ledger: Ledger) -> None:
    """A member plants 50 "relayers" seen a day from now: counted live, they would cut every
    real relayer's share to one lease and leave the others unheld for as long as they stay."""
    clock = Clock(10_000.0)
    for n in range(50):
        execute(
            ledger,
            "INSERT INTO lease_holders VALUES (:h, :t, :t)",
            h=f"ghost-{n}",
            t=clock.now + 86_400,
        )
    result = board(ledger, "a", clock).round({})
    assert (result.live, len(result.claimed)) == (1, len(NAMES))
    assert [r[0] for r in _rows(ledger, "SELECT holder FROM lease_holders")] == ["a"]


def _rows(ledger: Ledger, sql: str) -> list[tuple[Any, ...]]:
    with ledger.engine.connect() as connection:
        return [tuple(r) for r in connection.execute(sa.text(sql))]


async def _idle() -> None:
    await trio.sleep_forever()


# --------------------------------------------------------------------------------------------
# 2. A frozen relayer: bounded writes, cleanup that skips locked rows, LedgerBusy in a task


def _hold_row_lock(
    location: str, sql: str, inside: threading.Event, release: threading.Event
) -> None:
    """Another relayer frozen inside its transaction: a row lock held until ``release``."""
    engine = sa.create_engine(location, poolclass=sa.NullPool)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text(sql))
            inside.set()
            release.wait(20)
    finally:
        engine.dispose()


def test_a_round_skips_the_locked_row_of_a_frozen_relayer(backend: Backend) -> None:
    """PostgreSQL: the heartbeat cleanup meets the row of a long-silent relayer that a frozen
    transaction still locks. It used to wait for it (the whole round, up to the lock timeout,
    and again every round); it skips it now and the round goes on."""
    if backend.name != "postgresql":
        pytest.skip("SQLite's one write lock is the file's: no row to skip")
    location = backend.fresh("skip")
    with open_ledger(location, busy_timeout=3.0) as ledger:
        clock = Clock(100_000.0)
        execute(ledger, "INSERT INTO lease_holders VALUES ('frozen', 1, 1)")  # silent for ages
        inside, release = threading.Event(), threading.Event()
        frozen = threading.Thread(
            target=_hold_row_lock,
            args=(
                location,
                "SELECT * FROM lease_holders WHERE holder = 'frozen' FOR UPDATE",
                inside,
                release,
            ),
        )
        frozen.start()
        try:
            assert inside.wait(10)
            started = time.monotonic()
            result = board(ledger, "a", clock).round({})
            took = time.monotonic() - started
        finally:
            release.set()
            frozen.join(20)
        assert took < 1.5, f"the round waited {took:.1f} s for a locked row"
        assert len(result.claimed) == len(NAMES)
        # Not locked any more: the next round deletes it.
        board(ledger, "a", clock).round({})
        assert ("frozen",) not in _rows(ledger, "SELECT holder FROM lease_holders")


def test_a_write_stuck_behind_a_frozen_writer_fails_fast_as_busy(backend: Backend) -> None:
    """PostgreSQL, a leasing relayer (``write_timeout``): a write queued behind a writer frozen
    inside its transaction fails as LedgerBusy after about the statement timeout, not after the
    30 s lock timeout (a lease is 15 s: the task would have outlived its lease)."""
    if backend.name != "postgresql":
        pytest.skip("SQLite's busy_timeout is the bound there")
    location = backend.fresh("stuck")
    frozen = open_ledger(location)
    waiting = open_ledger(location, busy_timeout=30.0)
    waiting.write_timeout = 0.5
    inside, release = threading.Event(), threading.Event()

    def freeze() -> None:
        with frozen._writing():
            inside.set()
            release.wait(20)

    worker = threading.Thread(target=freeze)
    worker.start()
    try:
        assert inside.wait(10)
        started = time.monotonic()
        with pytest.raises(LedgerBusy) as busy:
            waiting.set_cursor(ORIGIN, 7, None)
        took = time.monotonic() - started
        with pytest.raises(LedgerBusy), waiting.lease_transaction() as connection:  # a round
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(1)"))
            connection.execute(sa.text("SELECT pg_sleep(5)"))
    finally:
        release.set()
        worker.join(20)
        frozen.close()
        waiting.close()
    assert 0.4 < took < 3.0, took
    assert "\n" not in str(busy.value)
    # Said by SQLSTATE (57014): a timeout, which a slow read also meets, not "the write lock".
    assert "cancelled after its time bound" in str(busy.value), busy.value


@pytest.mark.parametrize(
    ("lease", "write", "idle"),
    [(1.0, 2.0, 2.0), (4.0, 2.0, 4.0), (60.0, 15.0, 10.0)],  # both floored at 2 s
)
def test_leasing_bounds_the_ledger_by_the_lease_and_puts_it_back(
    ledger: Ledger, lease: float, write: float, idle: float
) -> None:
    """What a leasing relayer's ledger runs under (relayer.leases.leasing), and after: the idle
    bound falls to a lease period (floored) but never rises above the ledger's own 10 s."""
    assert (ledger.require_fence, ledger.write_timeout, ledger.idle_timeout) == (False, None, 10.0)
    with leasing(ledger, lease):
        assert (ledger.require_fence, ledger.write_timeout, ledger.idle_timeout) == (
            True,
            write,
            idle,
        )
    assert (ledger.require_fence, ledger.write_timeout, ledger.idle_timeout) == (False, None, 10.0)
    with pytest.raises(RuntimeError), leasing(ledger, lease):
        raise RuntimeError("a relayer's tasks ended badly")
    assert (ledger.require_fence, ledger.write_timeout, ledger.idle_timeout) == (False, None, 10.0)


def test_a_relayer_frozen_inside_a_fenced_write_is_taken_over_within_a_lease(
    backend: Backend,
) -> None:
    """PostgreSQL: a relayer SIGSTOPped in the middle of a fenced write holds its lease row's
    lock (the fence check is an UPDATE), and a claim skips locked rows. Its successor took the
    lease only once the server ended the frozen session: after 10 s, the default idle bound,
    with leases of 2 s (tests/test_relayers_shared.py missed its 10 s that way on CI). Under
    ``leasing`` the bound is the lease: the takeover comes within about a lease and a round."""
    if backend.name != "postgresql":
        pytest.skip("SQLite's one write lock is the file's: no row lock to outlive a lease")
    lease = 2.0
    location = backend.fresh("frozen_fence")
    frozen, successor = open_ledger(location), open_ledger(location)
    names = ("deliver:1",)
    mine = LeaseBoard(frozen, names, holder="frozen", lease_seconds=lease).round({})
    fence = mine.claimed[0].fence
    inside, release = threading.Event(), threading.Event()
    ended: list[BaseException | None] = []

    def freeze() -> None:
        try:
            with leasing(frozen, lease), fenced_by(fence), frozen._writing():
                inside.set()  # the fence row is locked from here; then the process stops
                release.wait(20)
            ended.append(None)
        except BaseException as error:  # the server ended the session under it
            ended.append(error)

    worker = threading.Thread(target=freeze)
    worker.start()
    try:
        assert inside.wait(10)
        frozen_at = time.monotonic()
        board_b = LeaseBoard(successor, names, holder="successor", lease_seconds=lease)
        claimed: tuple[Any, ...] = ()
        while not claimed and time.monotonic() - frozen_at < 15:
            time.sleep(lease / 4)
            claimed = board_b.round({}).claimed
        took = time.monotonic() - frozen_at
    finally:
        release.set()
        worker.join(20)
        successor.close()
    try:
        _woken_after_the_takeover(frozen, fence, ended)
    finally:
        frozen.close()
    assert took < lease + 2.0, f"taken over after {took:.1f} s (a lease is {lease} s)"
    assert claimed and claimed[0].fence.token == fence.token + 1, claimed


def test_a_write_whose_connection_the_server_ends_is_busy_not_the_end_of_the_relayer(
    backend: Backend,
) -> None:
    """PostgreSQL ends a writer's session mid-transaction (an operator's
    ``pg_terminate_backend``, a restart; or the idle bound, when the client then sees only
    "server closed the connection unexpectedly"): the write fails as LedgerBusy, which a
    leasing relayer's keeper handles (a generic LedgerError ended the relayer: a CI-like run
    lost a frozen-then-woken relayer that way), and the next write works on a new connection."""
    if backend.name != "postgresql":
        pytest.skip("SQLite has no server to end a session")
    location = backend.fresh("ended")
    with open_ledger(location) as writer, open_ledger(location) as operator:
        inside, release = threading.Event(), threading.Event()
        ended: list[BaseException | None] = []
        backend_pid: list[int] = []

        def write() -> None:
            try:
                with writer._writing() as session:
                    backend_pid.append(
                        session.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
                    )
                    inside.set()
                    release.wait(20)
                    session.execute(sa.text("SELECT 1"))
                ended.append(None)
            except BaseException as error:
                ended.append(error)

        worker = threading.Thread(target=write)
        worker.start()
        try:
            assert inside.wait(10)
            with operator.engine.connect() as connection:
                connection.execute(
                    sa.text("SELECT pg_terminate_backend(:p)"), {"p": backend_pid[0]}
                )
        finally:
            release.set()
            worker.join(20)
        assert len(ended) == 1 and isinstance(ended[0], LedgerBusy), ended
        assert "connection lost" in str(ended[0]) and "\n" not in str(ended[0])
        writer.set_cursor(ORIGIN, 7, None)  # a new connection: the ledger goes on
        cursor = writer.get_cursor(ORIGIN)
        assert cursor is not None and cursor.next_block == 7


def _woken_after_the_takeover(
    frozen: Ledger, fence: Fence, ended: list[BaseException | None]
) -> None:
    """Woken, the frozen relayer's write fails as one LedgerBusy line (its keeper gives the
    lease up and the relayer goes on; the driver's InternalError went through untranslated and
    ended it), nothing of it written; its next fenced write, on a fresh connection of the same
    ledger, finds the successor's token."""
    assert len(ended) == 1 and isinstance(ended[0], LedgerBusy), ended
    assert "idle past its bound" in str(ended[0]) and "\n" not in str(ended[0])
    with fenced_by(fence), pytest.raises(LeaseLost):
        frozen.set_cursor(ORIGIN, 7, None)


def test_a_task_meeting_a_busy_ledger_gives_its_lease_up_and_the_relayer_lives(
    ledger: Ledger,
) -> None:
    """LedgerBusy in a task under leases used to end the keeper, and with it the relayer. Now
    it is handled like LeaseLost: that task stops, the lease is given up, and a later round
    claims it again (next token), while the other tasks never stopped."""
    runs: list[int] = []
    others_stopped: list[str] = []

    async def flaky() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise LedgerBusy("ledger is busy (simulated): a write waited past its bound")
        await trio.sleep_forever()

    async def steady() -> None:
        try:
            await trio.sleep_forever()
        finally:
            others_stopped.append("scan:1")

    lease = 0.8
    names = ("collect:1", "scan:1")
    keeper = LeaseKeeper(
        LeaseBoard(ledger, names, holder="a", lease_seconds=lease),
        {"collect:1": flaky, "scan:1": steady},
        counters := Counters(),
    )
    trio.run(run_until, keeper, lambda: len(runs) == 2, 10.0)
    assert counters.leases_lost == 1 and counters.leases_claimed == 3
    assert others_stopped == ["scan:1"]  # once, at the end of the test, not before


# --------------------------------------------------------------------------------------------
# 4. One key, one relay


def _config(
    tmp_path: Path, name: str, location: str, keys: list[bytes], lease: float = LEASE
) -> Path:
    """The route tests' config on ``location`` with leases and these relayer ``keys``."""
    text = config_toml().replace('location = "ledger.db"', f'location = "{location}"')
    listed = ", ".join(f'{{ key = "0x{key.hex()}" }}' for key in keys)
    text = text.replace(f'key = "0x{KEYS[0].hex()}"', f"keys = [{listed}]\nlease_seconds = {lease}")
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_second_relay_on_the_same_key_refuses_to_start_until_the_first_died(
    backend: Backend, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A relayer lives with key K0 (``--index 0`` of its config). Another ``relay`` with the
    same index, or with another config whose ``--index 1`` is K0 too (an operator's copy with
    the keys in another order), refuses to start: one line, exit 1, nothing taken. Once the
    first died and its key lease expired, the next one starts."""
    location = str(tmp_path / "ledger.db") if backend.name == "sqlite" else backend.fresh("key")
    # A short lease: a start waits up to a round to see the first renew (pin_key).
    lease = 2.0
    mine = _config(tmp_path, "mine.toml", location, [KEYS[0], KEYS[1]], lease)
    copy = _config(tmp_path, "copy.toml", location, [KEYS[1], KEYS[0]], lease)
    config = load_config(mine)
    key = key_lease_name(address_of(KEYS[0]))
    with open_ledger(location) as ledger:
        # The first relayer: alive, holding its key's lease and renewing it (the database's
        # real clock: the relays below read it too).
        first = LeaseBoard(ledger, ("scan:99",), holder="host/1/first", lease_seconds=lease)
        first.pin(key)
        stop = threading.Event()
        alive = _renewing(first, stop)
        try:
            # A second on the same key (the same index, or another aliasing it): one line,
            # exit 1.
            for path, index in ((mine, "0"), (copy, "1")):
                code, _, err = passerelle(capsys, "relay", "--config", str(path), "--index", index)
                last = err.strip().splitlines()[-1]
                assert code == 1, err
                assert last.startswith(
                    "passerelle: another relayer (host/1/first) is running with this key"
                ), err
                assert "Traceback" not in err
            # In process too, and it took nothing: no lease row names it.
            second = Relayer(replace(config, relayer_key=config.relayer_keys[0]), ledger)
            with pytest.raises(BaseExceptionGroup) as refused:  # out of the relayer's nursery
                trio.run(second.run)
            assert refused.value.subgroup(KeyInUse) is not None, refused.value
            assert not any(r.holder == second.holder for r in first.holdings())
        finally:
            stop.set()
            alive.join(10)
        # The first dies and renews nothing: its key lease as it is a lease period later.
        execute(ledger, "UPDATE leases SET expires_at = expires_at - 20 WHERE name = :n", n=key)
        taken = LeaseBoard(ledger, NAMES, holder="b", lease_seconds=LEASE).pin(key)
        assert taken.token == 2
        # Had the first only been frozen, its next round finds the key taken: it must stop.
        assert [fence.name for fence in first.round({}).pinned_lost] == [key]


# --------------------------------------------------------------------------------------------
# 1. A takeover's first settle: the predecessor's transactions in flight are not "dropped"


class _Pool:
    """The two node answers a settle asks about a transaction: its receipt, and whether the
    node has it (``eth_getTransactionByHash``)."""

    def __init__(self, mined: dict[bytes, MinedTx], pooled: set[str]) -> None:
        self.mined, self.pooled = mined, pooled
        self.rpc = self

    async def receipt(self, tx_hash: bytes) -> MinedTx | None:
        return self.mined.get(tx_hash)

    async def call(self, method: str, params: list[Any]) -> Any:
        assert method == "eth_getTransactionByHash", method
        return {"hash": params[0]} if params[0] in self.pooled else None

    async def sync_nonce(self) -> None:
        return None


def test_a_takeover_does_not_call_its_predecessors_transactions_in_flight_dropped(
    tmp_path: Path,
) -> None:
    """Two transactions recorded by the relayer that just died, a second ago: one still in the
    node's pool (on its way), one the node never saw (it died before the broadcast). The first
    settle used to call both dropped and send both batches again — the first one twice on
    chain, an AlreadyDelivered each. Now the first is watched until mined, the second dropped."""
    config = _load(tmp_path, str(tmp_path / "settle.db"))
    beta = config.chain("beta")
    with open_ledger(tmp_path / "settle.db") as ledger:
        ids = _attested(ledger, beta.domain, 2)
        flying = ledger.record_transaction(tx_for(beta.domain, seed=61), [ids[0]])
        unsent = ledger.record_transaction(tx_for(beta.domain, seed=62), [ids[1]])
        pool = _Pool({}, {flying.hash})
        delivery = EvmDelivery(beta, Relayer(config, ledger))
        trio.run(delivery._settle_pending, beta, cast(TxEngine, pool))
        assert _status(ledger, beta.domain, flying.hash) == TxStatus.PENDING
        assert _status(ledger, beta.domain, unsent.hash) == TxStatus.FAILED
        assert [ledger.get(i).status for i in ids] == [  # type: ignore[union-attr]
            MessageStatus.SUBMITTED,
            MessageStatus.ATTESTED,
        ]
        # Next round: mined now, recorded from its receipt (its messages wait to be final).
        pool.mined[bytes.fromhex(flying.hash[2:])] = MinedTx(
            bytes.fromhex(flying.hash[2:]), 61, 9, 90_000, 10**9, []
        )
        trio.run(delivery._settle_pending, beta, cast(TxEngine, pool))
        assert _status(ledger, beta.domain, flying.hash) == TxStatus.CONFIRMED
        assert not delivery._watched


def _load(tmp_path: Path, location: str) -> Config:
    path = tmp_path / "settle.toml"
    path.write_text(config_toml().replace('location = "ledger.db"', f'location = "{location}"'))
    return load_config(path)


def _attested(ledger: Ledger, destination: int, count: int) -> list[str]:
    """``count`` messages from ORIGIN to ``destination``, attested; their ids."""
    found = [disc(ORIGIN, n, dest=destination) for n in range(count)]
    ledger.record_discovered(found)
    ids = [msg_id(d.message) for d in found]
    drive(ledger, ids, MessageStatus.ATTESTED, checkpoint_for(ledger))
    return ids


def _status(ledger: Ledger, chain: int, tx_hash: str) -> TxStatus:
    tx = ledger.get_transaction(chain, tx_hash)
    assert tx is not None
    return tx.status


def test_a_delivery_round_follows_every_origin_lane_first(tmp_path: Path) -> None:
    """A relayer that took a ``deliver:`` lease over, holding no lease of the origins: its
    lanes stay as old as its start unless the delivery round follows them, and on a stale lane
    every message its predecessor delivered reads "not the attested leaf" and is sent again."""
    location = str(tmp_path / "follow.db")
    config = _load(tmp_path, location)
    beta = config.chain("beta")
    with open_ledger(location) as ledger:
        relayer = Relayer(config, ledger)
        relayer._load_lanes()  # at start: nothing in the ledger yet
        found = [disc(ORIGIN, n, dest=beta.domain) for n in range(3)]
        ledger.record_discovered(found)  # meanwhile, another relayer's scan
        lane = relayer.lanes[ORIGIN]
        ledger.save_checkpoint(  # and its collect (the root is not checked here)
            ORIGIN, lane.outbox, b"\x77" * 32, 2, block_number=5, block_hash=b"\x05" * 32
        )
        relayer.keeper = cast(LeaseKeeper, object())  # leasing (follow is a no-op otherwise)
        trio.run(relayer.follow_origins, beta.domain)
        assert relayer.lanes[ORIGIN].tree.count == 3
        assert relayer.lanes[ORIGIN].checkpoint_index == 2
        assert relayer.lanes[beta.domain].tree.count == 0  # its own lane is not read


# --------------------------------------------------------------------------------------------
# The review of the above (R1): each finding, attacked again


def _holders(ledger: Ledger) -> dict[str, tuple[Any, int]]:
    return {r[0]: (r[1], r[2]) for r in _rows(ledger, "SELECT name, holder, token FROM leases")}


def test_a_token_one_step_below_the_limit_costs_that_lease_only(
    backend: Backend, ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    """R1 #1. The CHECK admits token 2**53 - 2; a claim of that row wrote 2**53 - 1, which the
    CHECK refuses, and as the round is one transaction every renewal in it rolled back: every
    round, at every relayer that wanted the row, until the relay stopped. Now the row is
    skipped with one line and the other leases are renewed; the key lease of such a row is a
    one-line refusal, not a raw constraint error."""
    clock = Clock(10_000.0)
    honest = board(ledger, "honest", clock)
    mine = held(honest.round({}))
    execute(
        ledger, "UPDATE leases SET holder = NULL, token = 9007199254740990 WHERE name = 'scan:1'"
    )
    del mine["scan:1"]
    with caplog.at_level(logging.WARNING, logger="passerelle.relayer.leases"):
        for _ in range(3):
            clock.advance(2.5)
            result = honest.round(mine)
            assert sorted(f.name for f in result.renewed) == sorted(mine)
            assert not result.claimed and not result.lost
    said = [r.getMessage() for r in caplog.records if "scan:1" in r.getMessage()]
    assert len(said) == 1 and "9007199254740990" in said[0], said
    assert _holders(ledger)["scan:1"] == (None, 9007199254740990)
    execute(ledger, "UPDATE leases SET token = 9007199254740990 WHERE name = 'deliver:1'")
    key = LeaseBoard(ledger, ("other",), holder="k", lease_seconds=LEASE, clock=clock)
    execute(ledger, "INSERT INTO leases VALUES ('key:0xab', NULL, 9007199254740990, 1, 1, 1)")
    with pytest.raises(KeyInUse, match="unusable"):
        key.pin("key:0xab")


_REFUSE_SCAN_1 = {
    "sqlite": [
        "CREATE TRIGGER refuse BEFORE UPDATE OF holder ON leases "
        "WHEN NEW.name = 'scan:1' AND NEW.holder IS NOT NULL "
        "BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "RAISE EXCEPTION USING ERRCODE = '23514', MESSAGE = 'refused by a trigger'; END $$",
        "CREATE TRIGGER refuse BEFORE UPDATE ON leases FOR EACH ROW "
        "WHEN (NEW.name = 'scan:1' AND NEW.holder IS NOT NULL) EXECUTE FUNCTION refuse()",
    ],
}


def test_a_claim_the_database_refuses_costs_that_claim_only(
    backend: Backend, ledger: Ledger
) -> None:
    """R1 #1, in general: whatever makes the database refuse one claim (here a member's
    trigger) rolls back that claim's SAVEPOINT only: the round still claims the others and
    renews what it holds."""
    clock = Clock(10_000.0)
    honest = board(ledger, "honest", clock)
    honest.round({})  # the rows exist, all held
    for sql in _REFUSE_SCAN_1[backend.name]:
        execute(ledger, sql)
    execute(ledger, "UPDATE leases SET holder = NULL WHERE name IN ('scan:1', 'scan:2')")
    fresh = board(ledger, "fresh", clock)
    clock.advance(LEASE + 1)  # every lease of "honest" expired: "fresh" wants them all
    result = fresh.round({})
    assert sorted(c.fence.name for c in result.claimed) == sorted(set(NAMES) - {"scan:1"})


def _renewing(board: LeaseBoard, stop: threading.Event) -> threading.Thread:
    """``board``'s relayer, alive: its rounds renew its pinned lease every 0.1 s."""

    def rounds() -> None:
        while not stop.wait(0.1):
            board.round({})

    thread = threading.Thread(target=rounds)
    thread.start()
    return thread


def test_a_restart_waits_for_a_dead_holders_key_lease_and_refuses_a_live_one(
    ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    """R1 #2. A relayer restarted right after SIGKILL found its dead self's key lease and
    exited at once (a supervisor's start limit then gives up for good). Now it waits, saying so
    in one line: a holder that never renews is dead, and its lease is taken at expiry; one that
    renews meanwhile is alive, and the start is refused (KeyInUse, one line)."""
    key = key_lease_name(b"\x11" * 20)
    # Long enough that the restart's first look comes before the dead lease expires even on
    # a loaded machine (at 1.2 s, a CI run once stalled past it and the restart rightly took
    # the lease at once, with nothing to wait for).
    lease = 3.0
    dead = LeaseBoard(ledger, ("scan:7",), holder="host/1/dead", lease_seconds=lease)
    pinned_at = time.monotonic()
    dead.pin(key)  # ... and SIGKILLed: never renews
    restart = LeaseBoard(ledger, NAMES, holder="restart", lease_seconds=lease)
    limiter = trio.CapacityLimiter(1)
    with caplog.at_level(logging.WARNING, logger="passerelle.relayer.leases"):
        fence = trio.run(pin_key, restart, key, limiter)
    took = time.monotonic() - pinned_at  # taken at the dead lease's expiry, not before
    assert fence.token == 2 and restart.pinned == {key: fence}
    assert lease - 0.1 < took < lease + restart.round_seconds + 1.0, took
    waiting = [r.getMessage() for r in caplog.records if "waiting" in r.getMessage()]
    assert len(waiting) == 1 and "host/1/dead" in waiting[0], waiting
    # A live holder (the restart, now renewing): a third start is refused within a round.
    stop = threading.Event()
    alive = _renewing(restart, stop)
    try:
        third = LeaseBoard(ledger, NAMES, holder="third", lease_seconds=lease)
        with pytest.raises(KeyInUse, match=r"another relayer \(restart\) is running") as refused:
            trio.run(pin_key, third, key, limiter)
        assert "\n" not in str(refused.value)
    finally:
        stop.set()
        alive.join(10)
    assert _holders(ledger)[key] == ("restart", 2)


def test_a_start_up_that_fails_after_taking_the_key_gives_it_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """R1 #3. Start-up failed between the key lease and the keeper (an origin RPC down for the
    payments connection): the key lease stayed held by the dead process, and its restart was
    refused as "another relayer" for a lease period. Now it is given back on the way out."""
    location = str(tmp_path / "ledger.db")
    config = load_config(_config(tmp_path, "mine.toml", location, [KEYS[0], KEYS[1]]))
    monkeypatch.setattr(RelayPolicy, "any_paid", property(lambda self: True))

    async def origin_down(self: Relayer, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        raise AdapterError("origin alpha: connection refused")

    monkeypatch.setattr(Relayer, "_payment_origins", origin_down)
    tasks: dict[str, Callable[[], Awaitable[None]]] = dict.fromkeys(NAMES, _idle)
    with open_ledger(location) as ledger:
        relayer = Relayer(replace(config, relayer_key=config.relayer_keys[0]), ledger)
        with pytest.raises(BaseExceptionGroup) as failed:  # out of the start-up's nursery
            trio.run(relayer._lease_loop, tasks, LEASE)
        assert failed.value.subgroup(AdapterError) is not None, failed.value
        key = key_lease_name(address_of(KEYS[0]))
        assert _holders(ledger)[key] == (None, 1)
        assert LeaseBoard(ledger, NAMES, holder="restart", lease_seconds=LEASE).pin(key).token == 2


def test_a_round_that_finds_its_key_taken_claims_and_renews_nothing(ledger: Ledger) -> None:
    """R1 #5. A relayer frozen past its key lease, whose key another process took: its next
    round still claimed up to its share of task leases, which its keeper (about to stop with
    KeyLeaseLost) never ran nor gave back: held by a dead holder for a lease period."""
    clock = Clock(10_000.0)
    key = key_lease_name(b"\x22" * 20)
    first = board(ledger, "first", clock)
    first.pin(key)
    clock.advance(30)
    board(ledger, "second", clock).pin(key)
    result = first.round({})
    assert [f.name for f in result.pinned_lost] == [key]
    assert not result.claimed and not result.renewed
    assert [n for n, (h, _) in _holders(ledger).items() if h == "first"] == []


def test_a_lease_given_up_on_a_busy_ledger_is_freed_and_not_claimed_again_at_once(
    ledger: Ledger,
) -> None:
    """R1 #7. A task that met LedgerBusy gave its lease up but left the row held, and the next
    round (a quarter lease later) claimed it again: on a slow database path the lease flapped
    for ever (a new connection, signer and settle each time) while no relayer that writes in
    time could get it. Now the row is freed at once and not claimed here for a lease period."""
    lease = 0.8
    runs: list[float] = []
    freed: list[bool] = []
    board_ = LeaseBoard(ledger, ("collect:1",), holder="a", lease_seconds=lease)

    async def busy() -> None:
        runs.append(trio.current_time())
        raise LedgerBusy("ledger is busy (simulated)")

    async def main() -> None:
        keeper = LeaseKeeper(board_, {"collect:1": busy}, Counters())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(keeper.run)
            while not runs:
                await trio.sleep(0.01)
            await trio.sleep(lease / 2)  # before any expiry: only a release frees it
            row = await trio.to_thread.run_sync(_holders, ledger)
            freed.append(row["collect:1"][0] is None)
            await trio.sleep(lease)
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert freed == [True]
    assert len(runs) == 2 and runs[1] - runs[0] >= lease, runs


class _CountingPool(_Pool):
    def __init__(self, mined: dict[bytes, MinedTx], pooled: set[str]) -> None:
        super().__init__(mined, pooled)
        self.syncs = 0
        self.fail_receipts: set[bytes] = set()

    async def receipt(self, tx_hash: bytes) -> MinedTx | None:
        if tx_hash in self.fail_receipts:
            raise RpcError("node went away mid-settle")
        return await super().receipt(tx_hash)

    async def sync_nonce(self) -> None:
        self.syncs += 1


def test_a_watched_settle_resyncs_the_nonce_only_when_needed_and_keeps_what_it_missed(
    tmp_path: Path,
) -> None:
    """R1 #4 and #6, the settle's side. While young transactions were watched, every round's
    settle re-read the pending nonce count, racing this relayer's own sends (a nonce handed out
    twice); now only the first settle and one that dropped something do. And a settle cut
    short by an RPC error forgot the watched hashes it had not reached: they were skipped as
    young until the periodic settle. Now they stay watched."""
    config = _load(tmp_path, str(tmp_path / "settle.db"))
    beta = config.chain("beta")
    with open_ledger(tmp_path / "settle.db") as ledger:
        ids = _attested(ledger, beta.domain, 3)
        txs = [
            ledger.record_transaction(tx_for(beta.domain, seed=71 + n), [ids[n]]) for n in range(3)
        ]
        pool = _CountingPool({}, {tx.hash for tx in txs})
        delivery = EvmDelivery(beta, Relayer(config, ledger))
        settle = partial(trio.run, delivery._settle_pending, beta, cast(TxEngine, pool))
        settle()
        assert pool.syncs == 1 and delivery._watched == {tx.hash for tx in txs}
        for _ in range(3):  # rounds while they wait in the pool: no resync
            settle()
        assert pool.syncs == 1
        # The node fails on the second one's receipt: the others are still watched after.
        pool.fail_receipts.add(bytes.fromhex(txs[1].hash[2:]))
        with pytest.raises(RpcError):
            settle()
        assert delivery._watched == {tx.hash for tx in txs}
        pool.fail_receipts.clear()
        pool.pooled.discard(txs[2].hash)  # evicted: dropped, its nonce given back
        settle()
        assert pool.syncs == 2
        assert _status(ledger, beta.domain, txs[2].hash) == TxStatus.FAILED


class _SlowCountRpc:
    """A node whose ``eth_getTransactionCount`` answer is overtaken by a broadcast on another
    connection: the count is read when asked, the answer arrives after ``release``."""

    def __init__(self) -> None:
        self.pool = 0
        self.asked, self.release = trio.Event(), trio.Event()

    async def call(self, method: str, params: list[Any]) -> Any:
        if method == "eth_getTransactionCount":
            count = self.pool
            self.asked.set()
            await self.release.wait()
            return hex(count)
        assert method == "eth_sendRawTransaction", method
        self.pool += 1
        return "0x" + "00" * 32


def test_a_nonce_resync_never_hands_a_nonce_out_twice() -> None:
    """R1 #4, the engine's side: a settle's resync running beside a worker's send used to write
    back a count read before the send's broadcast, and the next send reused its nonce
    ([0, 0]). sync_nonce now holds the engine's lock, as the send does."""
    rpc = _SlowCountRpc()
    engine = TxEngine(rpc, LocalSigner(b"\x01" * 32), 1)  # type: ignore[arg-type]
    engine._next_nonce = 0
    nonces: list[int] = []

    async def send() -> None:
        sent = await engine.send(b"\x22" * 20, b"", gas=21_000, fees=(10**9, 10**9))
        nonces.append(sent.nonce)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(engine.sync_nonce)  # the settle's resync
            await rpc.asked.wait()
            nursery.start_soon(send)  # a worker's send, meanwhile
            await trio.testing.wait_all_tasks_blocked()
            rpc.release.set()
        await send()

    trio.run(main)
    assert nonces == [0, 1]


def _queued_forever(url: str) -> bytes:
    """A real transaction that anvil keeps in its pool and never mines: from a fresh account
    (funded by a cheat code) at a nonce with a gap before it. Nobody else sends from it."""
    account = Account.create()
    web3 = Web3(Web3.HTTPProvider(url))
    web3.provider.make_request(RPCEndpoint("anvil_setBalance"), [account.address, hex(10**20)])
    signed = account.sign_transaction(
        {
            "to": account.address,
            "value": 0,
            "gas": 21_000,
            "maxFeePerGas": 10**10,
            "maxPriorityFeePerGas": 10**9,
            "nonce": 3,
            "chainId": web3.eth.chain_id,
            "type": 2,
        }
    )
    tx_hash = bytes(web3.eth.send_raw_transaction(signed.raw_transaction))
    assert web3.eth.get_transaction(HexBytes(tx_hash))["blockNumber"] is None  # waiting
    return tx_hash


@pytest.mark.chain
def test_the_deliver_loop_follows_the_lanes_first_and_settles_while_watching(
    anvil: AnvilProcess, tmp_path: Path
) -> None:
    """R1 #10: the deliver loop itself, against a real node. A relayer that took ``deliver:``
    over (its lanes as old as its start) finds its predecessor's batch still in the node's
    pool. Each round must follow the lanes BEFORE judging deliveries (else every message the
    predecessor delivered reads as not attested and is sent again), and must settle again
    while the transaction is watched (else it is judged only a ``confirm_timeout`` later).
    Removing ``follow_origins`` or ``or self._watched`` from the loop fails this test."""
    location = str(tmp_path / "loop.db")
    config = _load(tmp_path, location)
    beta = replace(config.chain("beta"), rpc=(anvil.rpc_url,), chain_id=anvil.chain_id)
    config = replace(config, chains=tuple(beta if c.name == "beta" else c for c in config.chains))
    in_pool = _queued_forever(anvil.rpc_url)
    with open_ledger(location) as ledger:
        relayer = Relayer(config, ledger, poll=0.05)
        relayer._load_lanes()  # the successor starts: nothing in the ledger yet
        relayer.keeper = cast(LeaseKeeper, object())  # leasing (follow is a no-op otherwise)
        # Meanwhile the predecessor scanned, collected and sent a batch, then died.
        ids = _attested(ledger, beta.domain, 3)
        flying = replace(tx_for(beta.domain, seed=81), hash=in_pool)
        ledger.record_transaction(flying, ids)
        delivery = EvmDelivery(beta, relayer)
        lane_seen: list[int] = []  # the origin lane's size when each round judges deliveries
        settles: list[set[str]] = []
        finalize, settle = delivery._finalize_deliveries, delivery._settle_pending

        async def spy_finalize(chain: ChainConfig, evm: Any) -> None:
            lane_seen.append(relayer.lanes[ORIGIN].tree.count)
            await finalize(chain, evm)

        async def spy_settle(chain: ChainConfig, engine: TxEngine) -> None:
            await settle(chain, engine)
            settles.append(set(delivery._watched))

        delivery._finalize_deliveries = spy_finalize  # type: ignore[method-assign]
        delivery._settle_pending = spy_settle  # type: ignore[method-assign]

        async def main() -> None:
            with trio.fail_after(20):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(delivery._deliver_loop, beta)
                    while len(lane_seen) < 3:
                        await trio.sleep(0.01)
                    nursery.cancel_scope.cancel()

        trio.run(main)
        assert lane_seen[0] == 3, lane_seen  # followed before the first judgement
        watched = "0x" + in_pool.hex()
        assert len(settles) >= 3 and all(w == {watched} for w in settles[:3]), settles
        assert _status(ledger, beta.domain, watched) == TxStatus.PENDING
        assert {ledger.get(i).status for i in ids} == {MessageStatus.SUBMITTED}  # type: ignore[union-attr]
