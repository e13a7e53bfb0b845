"""The Substrate proposal store is shared and writable by others, in a directory or in PostgreSQL
(relayer/families/substrate/proposals.py): the same rules on both.

Each shared case runs on a directory store and on a PostgreSQL store (the ``place`` fixture: the
session's throwaway server from tests/conftest.py, one database per test), written behind the
store's back the way anyone with access would — a file, or a row in plain SQL. Then the cases
only PostgreSQL has (a held lock, a server that does not answer) and the config choosing the
store. The directory store's own cases (FIFOs, /dev/zero, file names): tests/test_substrate_route.py
and tests/test_delivery_hardening.py.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, cast

import pytest
import sqlalchemy as sa
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_checkpoint_store import fresh_database
from test_checkpoint_store import pg_admin as pg_admin  # noqa: PLC0414 - a fixture
from test_substrate_batching import HONEST, ROCOCO
from test_substrate_route import ASSETHUB, SIGNATORIES, config_toml, proposal
from test_substrate_route import load as load_config_at

from adapters.errors import AdapterError
from adapters.substrate.client import Call, Fee
from relayer import checkpoints, ledger
from relayer.attester import AttesterState
from relayer.checkpoints import CheckpointStoreBusy, CheckpointStoreError, open_checkpoint_store
from relayer.config import ChainConfig, Config, load_config
from relayer.families.substrate import approval as approval_module
from relayer.families.substrate import delivery as delivery_module
from relayer.families.substrate.batching import BatchBudget, CostModel, budget_for
from relayer.families.substrate.delivery import SubstrateDelivery
from relayer.families.substrate.proposals import (
    MAX_PROPOSAL_BYTES,
    DirectoryProposalStore,
    PostgresProposalStore,
    Proposal,
    ProposalKey,
    ProposalStore,
    open_proposal_store,
)
from relayer.ledger import open_ledger
from relayer.relay import Relayer

if TYPE_CHECKING:
    from substrateinterface import Keypair

OTHER_DESTINATION = 7


class Place:
    """A proposal store, a second one at the same location (another process, or this one after
    a restart), and ways to change the store behind their backs."""

    def __init__(
        self,
        store: ProposalStore,
        reopen: Callable[[], ProposalStore],
        plant: Callable[[int, str, str], None],
        delete: Callable[[int, str], None],
    ) -> None:
        self.store = store
        self.reopen = reopen
        self.plant = plant  # (destination, name, text): write an entry as anyone could
        self.delete = delete  # (destination, name): remove one as anyone could


@pytest.fixture(params=["directory", "postgresql"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    """Each test that takes it runs on a directory store and on a PostgreSQL store."""
    if request.param == "directory":
        root = tmp_path / "checkpoints"
        store = open_proposal_store(root)
        assert isinstance(store, DirectoryProposalStore)

        def write_file(destination: int, name: str, text: str) -> None:
            folder = root / "proposals" / str(destination)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)

        def delete_file(destination: int, name: str) -> None:
            (root / "proposals" / str(destination) / name).unlink()

        yield Place(store, lambda: open_proposal_store(root), write_file, delete_file)
        shutil.rmtree(root, ignore_errors=True)
        return
    url = fresh_database(request.getfixturevalue("pg_admin"))
    pg = open_proposal_store(url)
    assert isinstance(pg, PostgresProposalStore)
    assert pg.pending(ASSETHUB) == []  # opening connects to nothing; first use makes the table
    raw = sa.create_engine(url, poolclass=sa.NullPool)
    others: list[ProposalStore] = []

    def write_row(destination: int, name: str, text: str) -> None:
        with raw.begin() as connection:
            connection.execute(
                sa.text(
                    "INSERT INTO substrate_proposals (destination, name, content) "
                    "VALUES (:d, :n, :t) ON CONFLICT (destination, name) "
                    "DO UPDATE SET content = EXCLUDED.content"
                ),
                {"d": destination, "n": name, "t": text},
            )

    def delete_row(destination: int, name: str) -> None:
        with raw.begin() as connection:
            connection.execute(
                sa.text("DELETE FROM substrate_proposals WHERE destination = :d AND name = :n"),
                {"d": destination, "n": name},
            )

    def reopen() -> ProposalStore:
        others.append(open_proposal_store(url))
        return others[-1]

    try:
        yield Place(pg, reopen, write_row, delete_row)
    finally:
        for store in [pg, *others]:
            store.close()
        raw.dispose()


# --------------------------------------------------------------------------------------------
# The rules, on both stores


def test_publish_pending_ours_first_seen_and_remove(place: Place) -> None:
    store = place.store
    later, earlier = proposal((20, 21)), proposal((3,))
    later_key, earlier_key = store.publish(later), store.publish(earlier)
    assert later_key == ProposalKey(ASSETHUB, later.name)
    # Oldest name first, and only this destination's.
    assert store.pending(ASSETHUB) == [(earlier_key, earlier), (later_key, later)]
    assert store.pending(OTHER_DESTINATION) == []
    assert store.ours(earlier_key, earlier) and store.ours(later_key, later)
    # Another process (or this one after a restart) sees them, but they are not its own.
    other = place.reopen()
    assert other.pending(ASSETHUB) == store.pending(ASSETHUB)
    assert not other.ours(earlier_key, earlier)
    # The same batch again replaces the entry: the newer ``created`` is ours, the older not.
    again = proposal((3,), created=earlier.created + 60)
    assert store.publish(again) == earlier_key
    assert store.pending(ASSETHUB) == [(earlier_key, again), (later_key, later)]
    assert store.ours(earlier_key, again) and not store.ours(earlier_key, earlier)
    # The clock for what is not ours is the reader's own: the first time it listed the key.
    assert other.first_seen(later_key, 100.0) == 100.0
    assert other.first_seen(later_key, 500.0) == 100.0
    # Removing forgets it everywhere; a second remove is no error.
    other.remove(later_key)
    assert store.pending(ASSETHUB) == [(earlier_key, again)]
    assert other.first_seen(later_key, 900.0) == 900.0
    store.remove(earlier_key)
    store.remove(earlier_key)
    assert store.pending(ASSETHUB) == [] and not store.ours(earlier_key, again)


def test_an_entry_rewritten_by_someone_else_is_not_ours(place: Place) -> None:
    """A rewritten ``created`` must not make the relayer count our proposal as timed out."""
    store = place.store
    mine = proposal((4, 5))
    key = store.publish(mine)
    rewritten = dataclasses.replace(mine, created=0.0)  # "timed out" decades ago
    place.plant(ASSETHUB, mine.name, rewritten.to_json())
    assert store.pending(ASSETHUB) == [(key, rewritten)]
    assert not store.ours(key, rewritten)


def test_an_entry_that_is_not_what_its_key_names_is_skipped(place: Place) -> None:
    store = place.store
    genuine = proposal((3,))
    key = store.publish(genuine)
    copy_of = proposal((8, 9))
    # A genuine proposal copied under another name (attesters would act on it twice), and
    # one for another destination planted under this one.
    place.plant(ASSETHUB, genuine.name.replace("0000000003", "0000000004"), genuine.to_json())
    elsewhere = dataclasses.replace(copy_of, destination=OTHER_DESTINATION)
    place.plant(ASSETHUB, elsewhere.name, elsewhere.to_json())
    # Text that is no proposal: cut short, foreign JSON, a bad branch, not even UTF-8 text.
    place.plant(ASSETHUB, "0-corrupt.json", genuine.to_json()[:40])
    place.plant(ASSETHUB, "0-foreign.json", '{"hello": "world"}')
    place.plant(ASSETHUB, "0-null.json", "null")
    bad_branch = json.loads(copy_of.to_json())
    bad_branch["branches"][0] = bad_branch["branches"][0][:31]
    place.plant(ASSETHUB, copy_of.name, json.dumps(bad_branch))
    # A genuine proposal padded past the size limit: still valid JSON, never read whole.
    padded = copy_of.to_json() + " " * (MAX_PROPOSAL_BYTES + 1 - len(copy_of.to_json()))
    assert json.loads(padded) == json.loads(copy_of.to_json())
    place.plant(ASSETHUB, proposal((11,)).name, padded)
    assert store.pending(ASSETHUB) == [(key, genuine)]
    assert place.reopen().pending(ASSETHUB) == [(key, genuine)]


valid_names = st.sampled_from([proposal((n,)).name for n in (1, 2, 3)])
other_names = st.from_regex(r"[a-z0-9\-]{1,40}\.json", fullmatch=True)
texts = st.one_of(
    st.sampled_from([proposal((n,)).to_json() for n in (1, 2, 3)]),
    st.sampled_from([proposal((n,)).to_json() for n in (1, 2, 3)]).map(lambda t: t[: len(t) // 2]),
    st.text(max_size=200).filter(lambda t: "\x00" not in t),  # PostgreSQL text holds no NUL
    st.builds(json.dumps, st.dictionaries(st.text(max_size=8), st.integers(), max_size=4)),
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(entries=st.lists(st.tuples(st.one_of(valid_names, other_names), texts), max_size=6))
def test_whatever_anyone_writes_pending_returns_only_what_keys_name(
    place: Place, entries: list[tuple[str, str]]
) -> None:
    """Property: any names and texts planted, ``pending`` never raises, and each proposal it
    returns is exactly the one its key names (destination and name)."""
    other = place.reopen()
    for name, text in entries:
        place.plant(ASSETHUB, name, text)
    found = other.pending(ASSETHUB)
    assert all((p.destination, p.name) == (k.destination, k.name) for k, p in found)
    assert [k.name for k, _ in found] == sorted(k.name for k, _ in found)
    for key, _ in found:
        other.remove(key)
    for name, _ in entries:  # leave the store empty for the next example
        other.remove(ProposalKey(ASSETHUB, name))
    assert other.pending(ASSETHUB) == []


def test_memory_is_bounded_by_what_is_in_the_store(place: Place) -> None:
    """Anyone may add and remove entries without end: the reader remembers (``ours``, the
    ``first_seen`` clock) only keys still there, and forgets those removed behind its back."""
    store = place.store
    mine = proposal((1,))
    key = store.publish(mine)
    planted = [proposal((n,)) for n in range(10, 30)]
    for p in planted:
        place.plant(ASSETHUB, p.name, p.to_json())
    for listed, _ in store.pending(ASSETHUB):
        store.first_seen(listed, 1.0)
    for p in [mine, *planted]:
        place.delete(ASSETHUB, p.name)
    assert store.pending(ASSETHUB) == []
    assert (store._published, store._first_seen) == ({}, {})
    # Put back by someone else, word for word: no longer ours, and a fresh clock.
    place.plant(ASSETHUB, mine.name, mine.to_json())
    assert store.pending(ASSETHUB) == [(key, mine)]
    assert not store.ours(key, mine)
    assert store.first_seen(key, 2.0) == 2.0


# --------------------------------------------------------------------------------------------
# PostgreSQL only: a server that stops us


def test_a_server_that_does_not_answer_is_one_line_within_the_connect_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server that accepts the connection and then says nothing (a hung host, a half-open
    link): libpq's ``connect_timeout`` ends the wait (2 s here, its minimum), with one line
    naming the store and no password — the relayer and attesters log it and poll again."""
    # The store reads the ledger's connect arguments when it opens (relayer.checkpoints imports
    # the database code on first use): patched where they are defined.
    monkeypatch.setattr(ledger, "PG_CONNECT_ARGS", {"connect_timeout": 2})
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        store = open_proposal_store(f"postgresql+psycopg://relayer:hunter2@127.0.0.1:{port}/x")
        outcome: list[BaseException] = []

        def read() -> None:
            try:
                store.pending(ASSETHUB)
            except BaseException as error:  # handed to the test
                outcome.append(error)

        started = time.monotonic()
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(10)
        assert not reader.is_alive(), "pending() waits for ever on a silent server"
    assert time.monotonic() - started < 8
    assert len(outcome) == 1 and isinstance(outcome[0], CheckpointStoreError)
    text = str(outcome[0])
    assert text.startswith(f"checkpoint store postgresql+psycopg://relayer:***@127.0.0.1:{port}")
    assert "hunter2" not in text and "\n" not in text
    # Refused outright: publish and remove say so the same way.
    refused = open_proposal_store("postgresql+psycopg://relayer:hunter2@127.0.0.1:1/x")
    for call in (lambda: refused.publish(proposal()), lambda: refused.remove(ProposalKey(3, "a"))):
        with pytest.raises(CheckpointStoreError) as down:
            call()
        assert "hunter2" not in str(down.value) and "\n" not in str(down.value)


def test_a_lock_held_by_someone_else_is_busy_within_the_lock_timeout(
    pg_admin: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Anyone who can connect can lock the table (or one row) and keep it: the readers and the
    publisher give up after the lock timeout with :class:`CheckpointStoreBusy`, nothing lost."""
    monkeypatch.setattr(checkpoints, "PG_LOCK_TIMEOUT_MS", 500)
    url = fresh_database(pg_admin)
    store = PostgresProposalStore(url)
    key = store.publish(proposal())
    hostile = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with hostile.connect() as connection:
            connection.exec_driver_sql("LOCK TABLE substrate_proposals IN ACCESS EXCLUSIVE MODE")
            for call in (
                lambda: store.pending(ASSETHUB),
                lambda: store.publish(proposal()),
                lambda: store.remove(key),
            ):
                started = time.monotonic()
                with pytest.raises(CheckpointStoreBusy, match="held by another session"):
                    call()
                assert time.monotonic() - started < 5
            connection.rollback()
        assert store.pending(ASSETHUB) == [(key, proposal())]  # and it works again
    finally:
        store.close()
        hostile.dispose()


# --------------------------------------------------------------------------------------------
# The config chooses


def test_the_config_chooses_the_store_the_relayer_and_attesters_share(
    tmp_path: Path, pg_admin: sa.Engine
) -> None:
    """``[committee] checkpoint_store``: a URL puts the proposals in that database (where an
    attester on another machine finds the relayer's), a directory in ``<it>/proposals``."""

    def load(store: str) -> ProposalStore:
        committee = "[committee]\n"
        text = config_toml().replace(
            committee, f"{committee}checkpoint_store = {json.dumps(store)}\n"
        )
        path = tmp_path / "passerelle.toml"
        path.write_text(text)
        return open_proposal_store(load_config(path).checkpoint_location)

    url = fresh_database(pg_admin)
    relayer_side, attester_side = load(url), load(url)
    try:
        assert isinstance(relayer_side, PostgresProposalStore)
        key = relayer_side.publish(proposal())
        assert attester_side.pending(ASSETHUB) == [(key, proposal())]
        assert not (tmp_path / "checkpoints" / "proposals").exists()  # not in the directory
    finally:
        relayer_side.close()
        attester_side.close()
    directory = load("shared")
    assert isinstance(directory, DirectoryProposalStore)
    assert directory.path(directory.publish(proposal())).parent == (
        tmp_path / "shared" / "proposals" / str(ASSETHUB)
    )


# --------------------------------------------------------------------------------------------
# The relayer's and attesters' loops outlive a store they cannot use


def _approval_loop(
    config: Config, chain: ChainConfig, state: AttesterState
) -> Callable[[], Awaitable[None]]:
    """The attesters' approval loop for ``chain``, polling every 10 ms, as the first
    signatory (its public half only: the attester signs nothing here)."""
    keypair = cast("Keypair", SimpleNamespace(public_key=SIGNATORIES[0]))
    return partial(
        approval_module.approve_deliveries,
        config,
        chain,
        b"\x11" * 32,
        keypair,
        open_checkpoint_store(config.checkpoint_location),
        state=state,
        poll=0.01,
    )


def test_a_store_that_cannot_be_read_is_a_warning_each_poll_not_the_end_of_a_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Anyone who can write the directory can put a file where a destination's folder goes
    (and a database can be down): listing it fails. That used to escape the relayer's delivery
    loop and the attesters' approval loop, ending the process; now it is one warning per poll
    and each loop goes on."""
    config = load_config_at(tmp_path, config_toml())
    chain = config.chain("assethub")
    folder = config.checkpoint_store / "proposals" / str(chain.domain)
    folder.parent.mkdir(parents=True)
    folder.write_text("not a folder")

    class Untouchable:  # the relayer never asks the chain: nothing was read to ask it about
        def __getattr__(self, name: str) -> object:
            raise AssertionError(f"the chain was asked ({name})")

    class Down:  # the attester tends its operations first: the node is down for it
        def __getattr__(self, name: str) -> object:
            raise AdapterError(f"the node is down ({name})")

    def client(stand_in: type) -> Callable[[object], AbstractAsyncContextManager[object]]:
        @asynccontextmanager
        async def connected(_chain: object) -> AsyncIterator[object]:
            yield stand_in()

        return connected

    async def warns_twice(loop: Callable[[], Awaitable[None]], warning: str) -> None:
        caplog.clear()
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(loop)
                while sum(warning in r.getMessage() for r in caplog.records) < 2:
                    await trio.sleep(0.01)  # the loop goes on: a second poll warns again
                nursery.cancel_scope.cancel()

    monkeypatch.setattr(delivery_module, "connected", client(Untouchable))
    monkeypatch.setattr(approval_module, "connected", client(Down))
    state = AttesterState()
    approvals = _approval_loop(config, chain, state)  # every chain call fails
    with open_ledger(tmp_path / "ledger.db") as ledger, caplog.at_level(logging.WARNING):
        delivery = SubstrateDelivery(chain, Relayer(config, ledger, poll=0.01))
        trio.run(warns_twice, delivery.run, "deliver to assethub: proposals: cannot list")
        trio.run(warns_twice, approvals, "assethub: proposals: cannot list")
    assert state.errors >= 2
    assert folder.read_text() == "not a folder"


def test_the_approval_loop_forgets_an_estimate_once_no_proposal_batches_its_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two polls of the attesters' loop (review L2, session 7): the first round weighs a
    verified batch ahead (an estimate kept for its execution) and the relayer then withdraws
    the proposal; the second round starts with the estimate gone — the loop's ``keep_fees``
    before each round. Without it an estimate outlived its proposals: memory anyone writing
    proposals could grow, and a wrong weight kept for a re-proposal of the same call."""
    config = load_config_at(tmp_path, config_toml())
    chain = config.chain("assethub")
    store = open_proposal_store(config.checkpoint_location)
    key = store.publish(proposal())
    call = Call("Utility", "batch_all", b"", b"\xca" * 32, None)
    rounds: list[tuple[list[str], dict[bytes, object]]] = []
    stop = trio.CancelScope()  # the second round ends the loop

    class Sizes:  # measured once, the same object every poll (no runtime upgrade)
        async def get(self, *args: object) -> tuple[BatchBudget, CostModel]:
            return budget_for(ROCOCO), HONEST

    class Node:  # the loop asks for the best block's hash each poll (BlockReads)
        url = "ws://stand-in:9944"

        async def rpc(self, method: str, params: object = ()) -> str:
            assert method == "chain_getBlockHash"
            return "0x" + "ab" * 32

    @asynccontextmanager
    async def connected(_chain: object) -> AsyncIterator[object]:
        yield Node()

    async def tend_held(*args: object, **kw: object) -> None:
        return None

    async def a_round(
        config_: object,
        chain_: object,
        client: object,
        keypair_: object,
        pending: list[tuple[ProposalKey, Proposal]],
        *,
        batches: dict[tuple[str, float], Call],
        duty: approval_module.DeliveryDuty,
        **_: object,
    ) -> None:
        rounds.append(([k.name for k, _ in pending], dict(duty.fees)))
        if len(rounds) == 1:
            for k, p in pending:
                batches[(k.name, p.created)] = call  # verified
            duty.fees[call.hash] = (1, Fee(partial_fee=1, weight=10))  # weighed ahead
            store.remove(key)  # executed by others, or withdrawn by the relayer
        else:
            stop.cancel()

    monkeypatch.setattr(approval_module, "connected", connected)
    monkeypatch.setattr(approval_module, "_tend_held", tend_held)
    monkeypatch.setattr(approval_module, "SizingCache", Sizes)
    monkeypatch.setattr(approval_module, "_round", a_round)
    loop = _approval_loop(config, chain, AttesterState())

    async def two_polls() -> None:
        with trio.fail_after(10), stop:
            await loop()

    trio.run(two_polls)
    assert rounds == [([key.name], {}), ([], {})]
