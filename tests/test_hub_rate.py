"""alpha → Asset Hub at the rate of issue #12 (session 8): full batches, and an attester's
extrinsics held in flight one by one.

* The relayer proposes every full batch at once and holds a last batch with room left while
  more is coming (a proposal of ours to the destination is live, messages to the destination
  from any origin are discovered or final, or the attested read stopped at its limit), for at
  most ``FILL_WAIT`` per message by its own clock (``SubstrateDelivery._fill_or_go``), kept
  while the message is an attested candidate read, held that round or not. Before,
  each checkpoint's messages were proposed at its boundary: 771 a block became 494 + 277, and
  6,000 messages took 16 batches where 13 do (two extrinsics, two Asset Hub blocks, each).
  Hostile: an origin that never stops sending (or messages that never get attested) cannot
  hold a message past the bound, nor can messages joining the held batch restart its clock; a
  lone message with nothing else coming goes at once; a suspect of a failed batch is never held.
* An attester's extrinsics in flight hold what they hold (an opening's deposit, an
  execution's weight and length, their proposal and call) until EACH settles, not until its
  whole round has (``InFlight.start``): an opening seen included counted twice against
  ``MAX_OPEN_OPERATIONS`` while an execution of the same round was still landing, and an
  execution that had landed still filled the block until the round's openings were in.
* An attester reads the multisig's state (each pending proposal's operation, the operations
  whose deposit is ours) once per best block, not once per round (``BlockReads``): a round
  at an unchanged block costs the node one request. Hostile: a node answering one hash for
  ever keeps a read at most ``BLOCK_READS_TTL``; a hash that is no hash keeps nothing (and
  the held operations are still read). A kept read only decides to do nothing: before any
  submission the operation is read again (review RRATE M1).
* A Substrate origin's final head, polled 4 times a second by each attester and the relayer,
  costs one request while the node's finalized hash is unchanged (``SubstrateOrigin``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st
from test_hub_pipeline import Round, mid, nonces_of, proposal, raw, status
from test_hub_pipeline import ledger as ledger  # noqa: PLC0414 - fixtures: pytest finds them here
from test_ledger import ORIGIN, Backend, disc
from test_ledger import backend as backend  # noqa: PLC0414 - fixtures: pytest finds them here
from test_ledger import fast_dir as fast_dir  # noqa: PLC0414
from test_ledger import postgres_admin as postgres_admin  # noqa: PLC0414
from test_substrate_batching import (
    HONEST,
    HUB_SETTINGS,
    ROCOCO,
    _a_round,
    _round_setup,
    _StandInClient,
)
from test_substrate_route import ASSETHUB

from adapters.errors import AdapterError
from adapters.substrate.client import SubstrateClient
from adapters.substrate.multisig import OpenOperation, Timepoint
from relayer.attester import AttesterState
from relayer.config import ChainConfig
from relayer.families.substrate import approval
from relayer.families.substrate import batching as batching_module
from relayer.families.substrate import delivery as delivery_module
from relayer.families.substrate.approval import (
    BLOCK_READS_TTL,
    MAX_OPEN_OPERATIONS,
    DeliveryDuty,
    InFlight,
    Pipeline,
    Wait,
)
from relayer.families.substrate.batching import (
    BatchBudget,
    Cost,
    batch_excess,
    budget_for,
    has_room,
    plan_batches,
)
from relayer.families.substrate.calls import GUARD_DELIVERED
from relayer.families.substrate.delivery import FILL_WAIT, SubstrateDelivery
from relayer.families.substrate.origin import SubstrateOrigin
from relayer.families.substrate.scan import OriginRoutes
from relayer.ledger import DiscoveredMessage, Ledger, MessageRecord, MessageStatus, open_ledger

S = MessageStatus
BATCH = 4
"""Messages a batch may hold in these tests (the chain's weight, in the devnet: 494)."""

HUB = cast(
    ChainConfig,
    SimpleNamespace(name="hub", domain=ASSETHUB, settings=lambda: HUB_SETTINGS),
)


class _Clock:
    """The relayer's clock for held batches, moved by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _rounds(
    tmp_path: Path, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> tuple[Round, _Clock]:
    """A relayer's delivery to Asset Hub over the ledger's messages 1-6 (attested), its plan
    cutting batches of :data:`BATCH` (every other step as in test_hub_pipeline's ``Round``)."""
    r = Round(tmp_path, ledger, monkeypatch)

    async def plan(
        _chain: Any, _client: Any, todo: Sequence[MessageRecord]
    ) -> list[list[MessageRecord]]:
        return [list(todo[i : i + BATCH]) for i in range(0, len(todo), BATCH)]

    budget = BatchBudget(weight=10**15, length=10**9, proposal_bytes=10**9, messages=BATCH)

    monkeypatch.setattr(r.delivery, "_plan", plan)
    # What the real _plan leaves measured: the sizing it planned with.
    monkeypatch.setattr(r.delivery._sizes, "_sizing", (budget, HONEST))
    clock = _Clock()
    r.delivery._clock = clock
    return r, clock


def _run(r: Round) -> list[tuple[int, ...]]:
    """One delivery round; the batches it published, in order."""
    r.events.clear()
    trio.run(r.delivery._deliver_substrate_once, HUB, cast(Any, None), r.store)
    return [nonces for what, nonces in r.events if what == "publish"]


def _count_costings(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The nonces the delivery decodes and costs (``message_cost``), in order, as it does."""
    costed: list[int] = []
    real = batching_module.message_cost

    def counting(model: Any, message: Any, *args: Any) -> Cost:
        costed.append(message.nonce)
        return real(model, message, *args)

    monkeypatch.setattr(delivery_module, "message_cost", counting)
    return costed


def _discover(ledger: Ledger, nonces: Sequence[int]) -> None:
    """Messages of the same route seen on the origin, not final yet: more are coming."""
    ledger.record_discovered(
        [DiscoveredMessage(raw(n), n, b"\x01" * 32, b"\x02" * 32, 0) for n in nonces]
    )


def _attest(ledger: Ledger, nonces: Sequence[int]) -> None:
    ids = [mid(n) for n in nonces]
    ledger.transition(ids, S.FINAL)
    checkpoint = ledger.save_checkpoint(
        1, b"\x11" * 32, b"\x44" * 32, 100 + max(nonces), block_number=2, block_hash=b"\x02" * 32
    )
    ledger.transition(ids, S.ATTESTED, checkpoint_id=checkpoint)


@pytest.fixture
def coming(ledger: Ledger) -> Iterator[Ledger]:
    """The ledger's messages 1-6 attested, and 7 and 8 of the same route discovered."""
    _discover(ledger, [7, 8])
    yield ledger


def test_a_batch_with_room_waits_for_the_next_checkpoints_messages_and_goes_full(
    tmp_path: Path, coming: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1-6 attested, 7 and 8 on their way: the full batch (1-4) goes at once, 5 and 6 wait
    (they would be a batch of two, costing the committee as many extrinsics as a full one).
    Once 7 and 8 are attested, 5-8 go as one full batch: two batches where the checkpoint
    boundary made three."""
    r, clock = _rounds(tmp_path, coming, monkeypatch)
    assert _run(r) == [(1, 2, 3, 4)]
    assert [status(coming, n) for n in (5, 6)] == [S.ATTESTED] * 2  # held, not lost
    clock.now += 0.5
    assert _run(r) == []  # still nothing new attested: still waiting
    _attest(coming, [7, 8])
    clock.now += 0.5
    assert _run(r) == [(5, 6, 7, 8)]
    assert r.delivery._filling == {}  # nothing held: no clock kept


def test_a_held_message_goes_within_fill_wait_however_much_keeps_coming(
    tmp_path: Path, coming: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hostile: the origin never stops sending (7, 8, then 9 ... discovered and never attested)
    and a message joins the held batch meanwhile. 5 and 6 are held at most FILL_WAIT from the
    round that first held them; 9, joining later, does not restart their clock and goes with
    them."""
    r, clock = _rounds(tmp_path, coming, monkeypatch)
    assert _run(r) == [(1, 2, 3, 4)]
    held_at = clock.now
    clock.now = held_at + FILL_WAIT / 2
    _discover(coming, [9, 10])
    _attest(coming, [9])  # attested out of order: 7 and 8 still are not
    assert _run(r) == []
    clock.now = held_at + FILL_WAIT - 0.01
    _discover(coming, [11])
    assert _run(r) == []
    clock.now = held_at + FILL_WAIT
    assert _run(r) == [(5, 6, 9)]


def test_a_held_batch_is_costed_once_not_every_round(
    tmp_path: Path, coming: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A held batch is judged every round until it goes; its messages are decoded and costed
    the first time only (the relayer's largest new CPU item otherwise, ~500 messages five
    times a second), and again under another sizing (a runtime upgrade re-measures it)."""
    r, clock = _rounds(tmp_path, coming, monkeypatch)
    costed = _count_costings(monkeypatch)
    assert _run(r) == [(1, 2, 3, 4)]
    assert sorted(costed) == [5, 6]
    for _ in range(3):
        clock.now += 0.2
        assert _run(r) == []
    assert sorted(costed) == [5, 6]
    budget, model = r.delivery._sizes.current or (None, None)
    monkeypatch.setattr(r.delivery._sizes, "_sizing", (budget, model))  # measured again
    clock.now += 0.2
    assert _run(r) == []
    assert sorted(costed) == [5, 5, 6, 6]


def test_with_nothing_coming_a_lone_batch_goes_at_once(
    tmp_path: Path, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch with room but nothing else of its route on the way goes at once: holding it
    would only delay it (the rule's other bound)."""
    r, _ = _rounds(tmp_path, ledger, monkeypatch)
    assert _run(r) == [(1, 2, 3, 4), (5, 6)]


def test_a_suspect_of_a_failed_batch_is_never_held(
    tmp_path: Path, coming: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever is coming, a batch holding a suspect of a failed batch goes at once: its
    halving is how a bad message is found, and waiting would slow that search."""
    r, _ = _rounds(tmp_path, coming, monkeypatch)
    r.delivery._suspects[mid(6)] = BATCH
    assert _run(r) == [(1, 2, 3, 4), (5, 6)]


def test_a_failed_round_keeps_the_clocks_of_the_batches_it_held(
    tmp_path: Path, coming: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round that fails (the node's guard read, here) forgets no held batch's clock: pruned,
    rounds failing every other time would restart the wait for ever."""
    r, clock = _rounds(tmp_path, coming, monkeypatch)
    assert _run(r) == [(1, 2, 3, 4)]
    held_at = clock.now
    reads = r.delivery._delivered_items

    async def broken(*_args: Any) -> list[str | None]:
        raise AdapterError("state_queryStorageAt on ws://stand-in: connection reset")

    monkeypatch.setattr(r.delivery, "_delivered_items", broken)
    clock.now = held_at + FILL_WAIT / 2
    with pytest.raises(AdapterError):  # the loop logs it as one line; nothing proposed
        _run(r)
    assert r.events == []
    monkeypatch.setattr(r.delivery, "_delivered_items", reads)
    clock.now = held_at + FILL_WAIT
    assert _run(r) == [(5, 6)]


def test_messages_attested_just_after_the_read_still_count_as_coming(
    tmp_path: Path, coming: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """7 and 8 are attested (the collect task) right after the round read the attested
    messages: counted after the read, nothing was on its way any more and 5, 6 went as a
    batch of two while 7 and 8 waited for the next round (measured: 446 + 66 where 494 + 18
    do). Counted before the read, 7 and 8 are coming: 5 and 6 wait, and 5-8 go next round as
    one full batch. One count statement a round, for the whole destination."""
    r, clock = _rounds(tmp_path, coming, monkeypatch)
    asked: list[tuple[Any, ...]] = []
    counts, by_status = coming.counts_by_status, coming.by_status

    def counting(**kwargs: Any) -> dict[MessageStatus, int]:
        asked.append(tuple(sorted(kwargs.items())))
        return counts(**kwargs)

    def read_then_attested(*args: Any, **kwargs: Any) -> list[MessageRecord]:
        read = by_status(*args, **kwargs)
        if coming.get(mid(7)).status == S.DISCOVERED:  # type: ignore[union-attr]
            _attest(coming, [7, 8])
        return read

    monkeypatch.setattr(coming, "counts_by_status", counting)
    monkeypatch.setattr(coming, "by_status", read_then_attested)
    assert _run(r) == [(1, 2, 3, 4)]
    assert asked == [(("destination", ASSETHUB),)]
    clock.now += 0.2
    assert _run(r) == [(5, 6, 7, 8)]
    assert len(asked) == 1  # a proposal of ours is live: reason enough, nothing counted


def test_while_a_proposal_of_ours_is_live_a_part_full_batch_waits_its_bound(
    tmp_path: Path, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing is seen coming (the relayer scans an origin's final blocks only, so the next
    checkpoint's messages are unknown until just before they are attested), but our proposal
    of 1 is still live: the chain has our work queued, and 6, a batch of one, waits — at most
    FILL_WAIT — for company instead of queueing behind it as an extra batch."""
    r, clock = _rounds(tmp_path, ledger, monkeypatch)
    r.store.publish(proposal(1))  # ours, not executed yet
    assert _run(r) == [(2, 3, 4, 5)]
    clock.now += FILL_WAIT - 0.01
    assert _run(r) == []
    clock.now += 0.01
    assert _run(r) == [(6,)]


@given(
    weight=st.integers(1, 10**6),
    length=st.integers(1, 10**4),
    count=st.integers(1, 3_000),
    cap=st.integers(1, 1_024),
)
def test_every_batch_but_the_last_of_a_uniform_stream_is_full(
    weight: int, length: int, count: int, cap: int
) -> None:
    """``has_room`` and ``plan_batches`` agree: of a stream of like messages, every batch but
    the last has no room left (so the rule never holds a full batch), and whatever has room
    takes one more like its dearest within the budget."""
    budget = BatchBudget(weight=10**8, length=10**6, proposal_bytes=10**7, messages=cap)
    costs = [Cost(weight, length, 300)] * count
    batches, oversized = plan_batches(costs, budget)
    assert oversized == []
    for batch in batches[:-1]:
        assert not has_room([costs[i] for i in batch], budget)
    last = [costs[i] for i in batches[-1]]
    if has_room(last, budget):
        assert batch_excess([*last, last[0]], budget) is None


# --------------------------------------------------------------------------- the attesters


def test_each_extrinsic_in_flight_releases_what_it_holds_when_it_settles() -> None:
    """One round opens p0 and executes p1 (a whole extrinsic's weight). The opening lands
    first: its deposit is ours on chain now (read into ``DeliveryDuty.held``), so it no
    longer counts as in flight against MAX_OPEN_OPERATIONS, while the execution still holds
    the block. Then the execution lands: the block is free although a third extrinsic of the
    round (p2's opening) is still in flight, and the attester may execute again."""
    budget = budget_for(ROCOCO)
    in_flight, state, done = InFlight(), AttesterState(), set[tuple[str, float]]()
    landed = {name: trio.Event() for name in ("p0", "p1", "p2")}

    def lands(name: str) -> Any:
        async def wait() -> bool:
            await landed[name].wait()
            return name == "p1"  # executed: done with it

        return wait

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            round_ = in_flight.pipeline(budget)
            round_.opened += 2
            round_.settles.append(Wait("p0", ("p0", 1.0), b"\x00" * 32, lands("p0"), opened=1))
            assert round_.room_for(round_.block_weight, 1)
            round_.settles.append(
                Wait("p1", ("p1", 1.0), b"\x01" * 32, lands("p1"), round_.block_weight, 1)
            )
            round_.settles.append(Wait("p2", ("p2", 1.0), b"\x02" * 32, lands("p2"), opened=1))
            in_flight.start(nursery, round_, done, state)
            assert in_flight.opened == 2 and in_flight.rounds == 1

            landed["p0"].set()
            await trio.testing.wait_all_tasks_blocked()
            after = in_flight.pipeline(budget)
            assert after.carried_opened == 1  # p2's only: p0's deposit is read from the chain
            assert after.busy == {("p1", 1.0), ("p2", 1.0)}
            assert after.busy_calls == {b"\x01" * 32, b"\x02" * 32}
            assert not after.room_for(10**9, 100)  # p1's execution still holds the block

            landed["p1"].set()
            await trio.testing.wait_all_tasks_blocked()
            after = in_flight.pipeline(budget)
            assert after.room_for(after.block_weight, 1)  # free, p2 still in flight
            assert done == {("p1", 1.0)} and in_flight.rounds == 1

            landed["p2"].set()
            with trio.fail_after(5):
                await in_flight.drain()
            assert (in_flight.rounds, in_flight.opened, in_flight.weight) == (0, 0, 0)
            assert in_flight.keys == set() and in_flight.calls == set()

    trio.run(scenario)
    assert state.errors == 0 and not in_flight.halted


def test_a_failed_wait_halts_at_once_and_openings_stay_within_the_cap() -> None:
    """A wait that fails halts submitting as soon as it fails (not after the rest of its round
    settled); and the openings in flight and those held still add up against the cap."""
    budget = budget_for(ROCOCO)
    in_flight, state, done = InFlight(), AttesterState(), set[tuple[str, float]]()
    slow, failing = trio.Event(), trio.Event()

    async def never() -> bool:
        await slow.wait()
        return True

    async def fails() -> bool:
        await failing.wait()
        raise AdapterError("extrinsic dropped or replaced")

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            round_ = in_flight.pipeline(budget)
            round_.opened = MAX_OPEN_OPERATIONS
            for n in range(MAX_OPEN_OPERATIONS):
                settle = fails if n == 0 else never
                round_.settles.append(
                    Wait(f"p{n}", (f"p{n}", 1.0), bytes([n]) * 32, settle, opened=1)
                )
            in_flight.start(nursery, round_, done, state)
            assert in_flight.pipeline(budget).carried_opened == MAX_OPEN_OPERATIONS
            failing.set()
            await trio.testing.wait_all_tasks_blocked()
            assert in_flight.halted  # the others are still in flight
            assert in_flight.pipeline(budget).carried_opened == MAX_OPEN_OPERATIONS - 1
            slow.set()
            with trio.fail_after(5):
                await in_flight.drain()

    trio.run(scenario)
    assert state.errors == 1


class _CountingNode:
    """A node that counts what it is asked: the best hash, each operation, the whole map."""

    url = "ws://stand-in:9944"

    def __init__(self) -> None:
        self.best: object = "0x" + "01" * 32
        self.asked: list[str] = []

    async def rpc(self, method: str, params: Sequence[Any] = ()) -> object:
        self.asked.append(method)
        return self.best

    async def query(self, module: str, function: str, params: Any, block_hash: Any = None) -> Any:
        self.asked.append(f"{module}.{function}")
        return None  # not open

    async def query_map(self, module: str, function: str, params: Any) -> list[Any]:
        self.asked.append(f"{module}.{function} map")
        return []


def test_the_multisig_state_is_read_once_a_block_and_again_on_a_new_one() -> None:
    """Four rounds at one best block ask the node for the hash four times and for each
    operation and the held map ONCE (before: every round, each of them); a new hash reads
    again; so does a hash kept past BLOCK_READS_TTL (a node answering one hash for ever).
    Hostile: a hash that is no hash is one AdapterError line and nothing is kept, so every
    read goes to the node again."""
    node = _CountingNode()
    client = cast(SubstrateClient, node)
    keypair, chain, _, _ = _round_setup(1)
    duty, state = DeliveryDuty(), AttesterState()
    multisig = chain.settings().multisig
    calls = [b"\xc1" * 32, b"\xc2" * 32]

    async def rounds(count: int, now: float) -> None:
        for _ in range(count):
            await duty.reads.refresh(client, now)
            await approval._tend_held(client, chain, keypair, duty, state=state, now=now)
            for call in calls:
                assert await duty.reads.operation(client, multisig, call) is None

    trio.run(rounds, 4, 0.0)
    assert sorted(node.asked) == sorted(
        ["chain_getBlockHash"] * 4 + ["Multisig.Multisigs"] * 2 + ["Multisig.Multisigs map"]
    )
    node.asked.clear()
    node.best = "0x" + "02" * 32
    trio.run(rounds, 2, 1.0)
    assert node.asked.count("Multisig.Multisigs") == 2  # a new block: read again, once
    node.asked.clear()
    trio.run(rounds, 1, 1.0 + BLOCK_READS_TTL + 0.1)
    assert node.asked.count("Multisig.Multisigs") == 2  # same hash, too old: read again

    node.best = "0x" + "zz" * 32
    refused = r"^chain_getBlockHash on ws://stand-in:9944: best block hash is not "
    with pytest.raises(AdapterError, match=refused):
        trio.run(duty.reads.refresh, client, 2.0)
    node.asked.clear()

    async def unkept() -> None:
        for _ in range(2):
            await duty.reads.operation(client, multisig, calls[0])

    trio.run(unkept)
    assert node.asked == ["Multisig.Multisigs"] * 2  # nothing kept without a hash


class _Finalizing:
    """A node whose finalized head is ``hash`` (block ``number``); counts what it is asked."""

    url = "ws://stand-in:9944"

    def __init__(self) -> None:
        self.number, self.hash = 7, b"\x07" * 32
        self.answer: object = None  # what chain_getFinalizedHead says; None: the true hash
        self.asked: list[str] = []

    async def rpc(self, method: str, params: Sequence[Any] = ()) -> object:
        self.asked.append(method)
        return "0x" + self.hash.hex() if self.answer is None else self.answer

    async def finalized_head(self) -> Any:
        self.asked.append("finalized head in full")
        return SimpleNamespace(number=self.number, hash=self.hash)

    async def best_number(self) -> int:
        self.asked.append("best number")
        return self.number + 3

    async def block_hash(self, number: int) -> bytes:
        return bytes([number]) * 32

    async def header(self, block_hash: bytes) -> Any:
        self.asked.append("header")
        return SimpleNamespace(number=block_hash[0], hash=block_hash)


def test_an_unchanged_final_head_costs_one_request_a_poll() -> None:
    """Five polls of an Asset Hub origin's final head at one finalized block: the head is read
    in full once, then one request a poll (before: two each). A new finalized hash is read in
    full. Hostile: an answer that is not the same hash (anything a node says) is read in full,
    never taken as the head; a ``confirmations`` policy (no node-finalized hash) keeps nothing."""
    node = _Finalizing()
    chain = SimpleNamespace(
        name="hub", start_block=0, finality=SimpleNamespace(name="devnet-instant")
    )
    origin = SubstrateOrigin(
        cast(ChainConfig, chain), cast(SubstrateClient, node), OriginRoutes([], {}), None
    )

    async def polls(count: int) -> list[tuple[int, bytes]]:
        return [((h := await origin.final_head()).number, h.hash) for _ in range(count)]

    assert trio.run(polls, 5) == [(7, b"\x07" * 32)] * 5
    assert node.asked == ["finalized head in full"] + ["chain_getFinalizedHead"] * 4
    node.asked.clear()
    node.number, node.hash = 8, b"\x08" * 32
    assert trio.run(polls, 2) == [(8, b"\x08" * 32)] * 2
    new_head = ["chain_getFinalizedHead", "finalized head in full"]
    assert node.asked == [*new_head, "chain_getFinalizedHead"]
    for lie in ("0x" + "08" * 31, 8, None, "0x" + "08" * 32 + "00"):
        node.answer = lie if lie is not None else ["0x" + "08" * 32]
        node.asked.clear()
        trio.run(polls, 1)
        assert node.asked == new_head

    chain.finality = SimpleNamespace(name="confirmations", depth=3)
    node.asked.clear()
    assert trio.run(polls, 2) == [(8, bytes([8]) * 32)] * 2
    assert "chain_getFinalizedHead" not in node.asked and node.asked.count("header") == 2


# ------------------------------------------------- session 8, FRATE: the hostile review's cases


def _lying_every_other_round(r: Round, clock: _Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """The best-block guard read says "handled" for 5 and 6 in every other round (a lying
    node, or a best block flipping between two forks, one carrying another relayer's
    delivery of them); the final head never shows them."""
    honest = r.delivery._delivered_items

    async def guard_read(client: Any, chain: Any, messages: Sequence[bytes]) -> list[str | None]:
        flags = await honest(client, chain, messages)
        if round(clock.now * 4) % 2 == 0:  # rounds are a quarter second apart
            flags = [
                GUARD_DELIVERED if n in (5, 6) else f
                for n, f in zip(nonces_of(messages), flags, strict=True)
            ]
        return flags

    monkeypatch.setattr(r.delivery, "_delivered_items", guard_read)
    monkeypatch.setattr(delivery_module, "time", SimpleNamespace(time=clock, monotonic=clock))


def test_a_best_block_saying_handled_every_other_round_holds_a_message_fill_wait_at_most(
    tmp_path: Path, coming: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review RRATE M2. Hostile: more is always coming (7 and 8 never attested), and the best
    block says 5 and 6 are handled every other round. Their fill clock used to be pruned in
    each lying round (not held then) and restarted in the next honest one: never proposed,
    and no line said so (the best-block clock restarted too). Now both clocks are kept while
    5 and 6 are candidates read: they go in the first honest round from FILL_WAIT after the
    round that first held them, and the best-block clock runs from the first round that
    showed them handled (never restarted, forgotten once they are proposed)."""
    r, clock = _rounds(tmp_path, coming, monkeypatch)
    _lying_every_other_round(r, clock, monkeypatch)
    clock.now = 100.25  # an honest round: 5 and 6 held to fill
    assert _run(r) == [(1, 2, 3, 4)]
    held_at = clock.now
    published: list[tuple[int, ...]] = []
    shown_at: set[float] = set()
    while clock.now < held_at + 4 * FILL_WAIT and not published:
        clock.now += 0.25
        published += _run(r)
        if mid(5) in r.delivery._held_since:
            shown_at.add(r.delivery._held_since[mid(5)])
        if not published:
            assert r.delivery._filling[mid(5)] == held_at  # kept in lying rounds too
    assert published == [(5, 6)]
    assert held_at + FILL_WAIT <= clock.now <= held_at + FILL_WAIT + 0.5  # + one lying round
    assert shown_at == {held_at + 0.25}  # one best-block clock, from the first lying round
    assert mid(5) not in r.delivery._held_since and mid(5) not in r.delivery._filling


def test_a_round_that_could_not_propose_a_due_batch_does_not_restart_its_clock(
    tmp_path: Path, coming: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review RRATE M2: 5 and 6 are due (FILL_WAIT since first held) but their proposal
    cannot be made this round (``_propose`` gives None: the checkpoint is not proven yet).
    Their clock is kept: the next round proposes them at once, not FILL_WAIT later."""
    r, clock = _rounds(tmp_path, coming, monkeypatch)
    assert _run(r) == [(1, 2, 3, 4)]
    held_at = clock.now
    propose = r.delivery._propose

    async def unproven(chain: Any, lane: Any, group: Sequence[MessageRecord]) -> Any:
        return None

    monkeypatch.setattr(r.delivery, "_propose", unproven)
    clock.now = held_at + FILL_WAIT
    assert _run(r) == []
    assert r.delivery._filling == {mid(5): held_at, mid(6): held_at}
    monkeypatch.setattr(r.delivery, "_propose", propose)
    clock.now += 0.25
    assert _run(r) == [(5, 6)]


def test_a_round_failing_after_it_held_a_batch_keeps_that_clock(
    tmp_path: Path, coming: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review RRATE L4 (b): the round that first holds 5 and 6 fails afterwards (publishing
    the full batch 1-4, here). The clock it started is kept: FILL_WAIT later both batches go
    (forgotten, 5 and 6 would be held FILL_WAIT again from then)."""
    r, clock = _rounds(tmp_path, coming, monkeypatch)
    publish = r.store.publish

    def broken(_fresh: Any) -> Any:
        raise OSError("proposal store: disk full")

    monkeypatch.setattr(r.store, "publish", broken)
    with pytest.raises(OSError, match="disk full"):
        _run(r)
    assert r.delivery._filling == {mid(5): clock.now, mid(6): clock.now}
    monkeypatch.setattr(r.store, "publish", publish)
    clock.now += FILL_WAIT
    assert _run(r) == [(1, 2, 3, 4), (5, 6)]


def test_an_attested_read_stopped_at_its_limit_holds_the_last_batch(
    tmp_path: Path, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review RRATE L4 (c): nothing is seen coming and nothing of ours is live, but the read
    of attested messages stopped at its limit (two batches' worth; here 6): the origin has
    more attested, so its part-full last batch waits for them (at most FILL_WAIT). Under the
    limit, it goes at once: test_with_nothing_coming_a_lone_batch_goes_at_once."""
    monkeypatch.setattr(delivery_module, "SUBSTRATE_BATCH_SIZE", 3)
    r, clock = _rounds(tmp_path, ledger, monkeypatch)
    assert _run(r) == [(1, 2, 3, 4)]  # 6 read, the limit: 5 and 6 wait
    clock.now += FILL_WAIT
    assert _run(r) == [(5, 6)]


def test_the_cost_memo_hits_through_the_real_plan(
    tmp_path: Path, coming: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review RRATE M3: through the real ``_plan`` (the sizing as the SizingCache returns it:
    the same object while unchanged), each candidate is costed once: the first round costs 1-6
    once each (not 5 and 6 again for the fill check), a held round costs nothing, and a new
    sizing (a runtime upgrade re-measured it) costs the held messages once more."""
    r, clock = _rounds(tmp_path, coming, monkeypatch)
    monkeypatch.setattr(r.delivery, "_plan", SubstrateDelivery._plan.__get__(r.delivery))
    budget = BatchBudget(weight=10**15, length=10**9, proposal_bytes=10**9, messages=BATCH)
    monkeypatch.setattr(r.delivery._sizes, "_sizing", (budget, HONEST))

    async def get(*_args: Any) -> Any:
        return r.delivery._sizes.current  # the SizingCache's own object, as measured

    monkeypatch.setattr(r.delivery._sizes, "get", get)
    costed = _count_costings(monkeypatch)
    assert _run(r) == [(1, 2, 3, 4)]
    assert sorted(costed) == [1, 2, 3, 4, 5, 6]
    for _ in range(3):
        costed.clear()
        clock.now += 0.2
        assert _run(r) == []
        assert costed == []
    monkeypatch.setattr(r.delivery._sizes, "_sizing", (budget, HONEST))  # measured again
    clock.now += 0.2
    assert _run(r) == []
    assert sorted(costed) == [5, 6]


class _Multisig(_StandInClient):
    """An attester's node: one best hash, the multisig's operations as ``open`` says, each
    operation read counted."""

    def __init__(self) -> None:
        super().__init__(fail_at=0)
        self.best = "0x" + "01" * 32
        self.open: dict[bytes, Any] = {}
        self.reads = 0

    async def rpc(self, method: str, params: Any = ()) -> Any:
        if method == "chain_getBlockHash":
            return self.best
        return await super().rpc(method, params)

    async def query(self, module: str, function: str, params: Any, block_hash: Any = None) -> Any:
        if function != "Multisigs":
            return None
        self.reads += 1
        return self.open.get(bytes(params[1]))

    async def query_map(self, *_args: Any, **_kw: Any) -> list[Any]:
        return []


def test_a_kept_read_never_submits_without_reading_the_operation_again() -> None:
    """Review RRATE M1. Round 1 reads the operation (none open), opens it (our turn). Round 2
    is at the same best hash, so the read is kept; our opening lands meanwhile (its wait
    settled: the pipeline no longer holds the call). Acting on the kept "none open", the
    attester opened the same call again: a paid NoTimepoint and one of MAX_OPENS_PER_CALL
    burnt. Now the kept read only decides; right before submitting (at the round's flush),
    the operation is read again, shows ours open, and nothing is submitted. Round 3 decides
    on that read (approved by us: nothing to do) without asking the node. Round 1 reads
    twice: to decide, and again right before its submission (the round's other decisions can
    take seconds between the two)."""
    keypair, chain, pending, batches = _round_setup(1)
    duty, state, done = DeliveryDuty(), AttesterState(), set[tuple[str, float]]()
    for key, proposal_ in pending:
        duty.sighted[(key.name, proposal_.created)] = 0.0  # every rank's turn is past
    node = _Multisig()
    sizing = (budget_for(ROCOCO), HONEST)
    [call] = [batch.hash for batch in batches.values()]
    me = bytes(keypair.public_key)

    async def rounds() -> None:
        def round_() -> Any:
            return _a_round(
                node,
                keypair,
                chain,
                pending,
                sizing,
                batches=batches,
                done=done,
                duty=duty,
                state=state,
                pipeline=Pipeline.for_budget(sizing[0]),
                settle=False,
            )

        await duty.reads.refresh(cast(SubstrateClient, node), 1.0)
        await round_()
        assert (node.submitted, node.reads) == ([call], 2)  # decided, then read at the flush
        await duty.reads.refresh(cast(SubstrateClient, node), 1.3)  # same best hash: kept
        opened = OpenOperation(Timepoint(2, 1), frozenset({me}), me)
        node.open[call] = {
            "when": {"height": 2, "index": 1},
            "approvals": ["0x" + me.hex()],
            "depositor": "0x" + me.hex(),
        }
        duty.held[call] = opened  # what the settled wait recorded
        await round_()
        assert node.submitted == [call] and duty.opens == {call: 1}
        assert node.reads == 3 and duty.reads.operations[call] == opened
        await round_()
        assert node.submitted == [call] and node.reads == 3  # decided on the kept read

    trio.run(rounds)
    assert state.errors == 0


def test_a_failing_best_hash_read_still_tends_the_held_operations() -> None:
    """Review RRATE L3, L4 (m): the poll's reads (``_read_block``) read the best hash, then
    the operations we hold. Twice at one hash, the held map is read once (the hash is what
    keeps it). A node that garbles ``chain_getBlockHash`` is one counted line: nothing is
    kept, and the held operations are still read each poll (skipped, a restarted attester
    counted none of its deposits against MAX_OPEN_OPERATIONS for as long as that lasted)."""
    node = _CountingNode()
    client = cast(SubstrateClient, node)
    keypair, chain, _, _ = _round_setup(1)
    duty, state = DeliveryDuty(), AttesterState()

    async def polls(count: int) -> None:
        for _ in range(count):
            await approval._read_block(client, chain, keypair, duty, state=state)

    trio.run(polls, 2)
    assert node.asked == ["chain_getBlockHash", "Multisig.Multisigs map", "chain_getBlockHash"]
    assert duty.reads.at == b"\x01" * 32 and state.errors == 0
    node.best = "0xnot-a-hash"
    node.asked.clear()
    trio.run(polls, 2)
    assert node.asked == ["chain_getBlockHash", "Multisig.Multisigs map"] * 2
    assert duty.reads.at is None and state.errors == 2


# ------------------------------------------------- session 8, FINTA: the integration review


def _best_block_says_handled(r: Round, lie: set[int], monkeypatch: pytest.MonkeyPatch) -> None:
    """The best-block guard read says "handled" for the nonces in ``lie`` (read at each call:
    the caller clears it to end the lie); the final head's read stays honest."""
    honest = r.delivery._delivered_items

    async def lying(client: Any, chain: Any, messages: Sequence[bytes]) -> list[str | None]:
        flags = await honest(client, chain, messages)
        return [
            GUARD_DELIVERED if n in lie else f
            for n, f in zip(nonces_of(messages), flags, strict=True)
        ]

    monkeypatch.setattr(r.delivery, "_delivered_items", lying)


def test_messages_held_by_the_best_block_never_hide_those_behind_them(
    tmp_path: Path, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review RINTA M1. Hostile: the best block says 1-4 are handled (a lying node, or 2,048
    messages executed in best blocks while finality stalls); the final head does not. The
    attested read's limit is 2 x SUBSTRATE_BATCH_SIZE = 4: the four held used to fill it
    every round, and 5 and 6 were never read (40 rounds published nothing). Now the held are
    left out of the read and re-checked on their own, SUBSTRATE_BATCH_SIZE a round, in one
    statement each: 5 and 6 are read and go, as they would with no lie; once the final head
    shows 1 and 2 they are recorded (from the final head's read only), and 3 and 4, no longer
    shown by the best block, are released into the read and proposed."""
    monkeypatch.setattr(delivery_module, "SUBSTRATE_BATCH_SIZE", 2)
    r, clock = _rounds(tmp_path, ledger, monkeypatch)
    lie = {1, 2, 3, 4}
    _best_block_says_handled(r, lie, monkeypatch)
    rechecks: list[int] = []
    read = ledger.messages

    def counting(**kwargs: Any) -> list[MessageRecord]:
        if kwargs.get("ids") is not None:  # the re-check's read of the held
            rechecks.append(len(list(kwargs["ids"])))
        return read(**kwargs)

    monkeypatch.setattr(ledger, "messages", counting)
    published: list[tuple[int, ...]] = []
    start = clock.now
    while clock.now < start + FILL_WAIT + 0.5 and not published:  # 5, 6 alone: may wait
        clock.now += 0.25
        published += _run(r)
    assert published == [(5, 6)]  # was []: never read
    assert set(r.delivery._held) == {mid(n) for n in (1, 2, 3, 4)}
    assert rechecks and max(rechecks) <= 2  # bounded by the batch, whatever is held
    assert r.delivered_writes == []  # the best block's word is never recorded
    assert all(status(ledger, n) is S.ATTESTED for n in (1, 2, 3, 4))

    # The final head now shows 1 and 2; the best block no longer shows 3 and 4.
    r.on_chain |= {raw(1), raw(2)}
    lie.clear()
    for _ in range(2):  # two a round: every held message re-checked once, in turn
        clock.now += 0.25
        published += _run(r)
    assert status(ledger, 1) is S.DELIVERED and status(ledger, 2) is S.DELIVERED
    assert sorted(w for ws in r.delivered_writes for w in ws) == sorted([mid(1), mid(2)])
    assert r.delivery._held == {} and mid(1) not in r.delivery._held_since
    released = clock.now
    while clock.now < released + FILL_WAIT + 0.5 and len(published) < 2:  # (5, 6) is live
        clock.now += 0.25
        published += _run(r)
    assert published == [(5, 6), (3, 4)]


def test_the_held_re_check_reads_only_the_ids_asked_in_one_parameter(backend: Backend) -> None:
    """``Ledger.messages(ids=…)``, the re-check's read, on SQLite and PostgreSQL: only those
    ids, still filtered by status; ``excluding`` taken out of them. One JSON parameter either
    way, so no number of held ids meets a bind limit (40,000 here, above SQLite's 32,766). One
    id given as a string, or an id not 32 bytes of hex, is one ValueError line."""
    with open_ledger(backend.fresh("held")) as ledger:
        ledger.record_discovered([disc(ORIGIN, n) for n in range(6)])
        ids = [record.id for record in ledger.messages(origin=ORIGIN)]
        unknown = ["0x" + n.to_bytes(32, "big").hex() for n in range(40_000)]
        read = ledger.messages(
            ids=[ids[1], ids[4], *unknown], status=S.DISCOVERED, excluding=[ids[4]]
        )
        assert [record.id for record in read] == [ids[1]]
        assert ledger.messages(ids=[ids[0]], status=S.DELIVERED) == []
        assert ledger.messages(ids=[]) == []
        with pytest.raises(ValueError, match=r"^ids must be a collection of message ids"):
            ledger.messages(ids=ids[0])
        with pytest.raises(ValueError, match="message id"):
            ledger.messages(ids=["0x1234"])


# ------------------------------------------------- session 8, FINTA2: the review RFINA


def test_the_held_queue_is_bounded_and_what_does_not_fit_stays_in_the_read(
    tmp_path: Path,
    ledger: Ledger,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Review RFINA L1. Hostile: the best block says 1-5 are handled and the final head does
    not (a liar of the best state, or a long finality stall). The held queue used to take
    every one of them, and ship them all to the database as the read's exclusion each round:
    the whole attested backlog. Now it keeps at most HELD_CAP (here 3); 4 and 5 stay in the
    ordinary read, are checked there each round and never proposed, one line says the queue
    is full (once, not once a round), 6 still goes, and once the final head shows 1-5 every
    one of them is recorded, each written once."""
    monkeypatch.setattr(delivery_module, "SUBSTRATE_BATCH_SIZE", 2)
    monkeypatch.setattr(delivery_module, "HELD_CAP", 3)
    r, clock = _rounds(tmp_path, ledger, monkeypatch)
    lie = {1, 2, 3, 4, 5}
    _best_block_says_handled(r, lie, monkeypatch)
    excluded: list[int] = []
    by_status = ledger.by_status

    def counting(*args: Any, **kwargs: Any) -> list[MessageRecord]:
        excluded.append(len(kwargs.get("excluding") or ()))
        return by_status(*args, **kwargs)

    monkeypatch.setattr(ledger, "by_status", counting)
    caplog.set_level("WARNING", logger="passerelle.relayer")
    published: list[tuple[int, ...]] = []
    for _ in range(12):  # 3 s: past FILL_WAIT, so 6 goes alone
        clock.now += 0.25
        published += _run(r)
        assert len(r.delivery._held) <= 3
    assert published == [(6,)]
    assert len(r.delivery._held) == 3 and max(excluded) <= 3 + 1  # held + 6's live proposal
    full = [m for m in caplog.messages if "more stay in the ordinary read" in m]
    assert len(full) == 1, caplog.messages
    assert r.delivered_writes == []  # the best block's word is never recorded
    assert all(status(ledger, n) is S.ATTESTED for n in (1, 2, 3, 4, 5))

    r.on_chain |= {raw(n) for n in (1, 2, 3, 4, 5)}  # the final head now shows them
    for _ in range(3):  # 4, 5 from the read at once; 1-3 re-checked two a round
        clock.now += 0.25
        published += _run(r)
    assert all(status(ledger, n) is S.DELIVERED for n in (1, 2, 3, 4, 5))
    writes = sorted(w for ws in r.delivered_writes for w in ws)
    assert writes == sorted(mid(n) for n in (1, 2, 3, 4, 5))
    assert r.delivery._held == {} and published == [(6,)]


def test_a_live_proposals_messages_are_decoded_once_while_it_lives(
    tmp_path: Path, coming: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check asks about every message of every live proposal each 0.2 s poll: each is
    decoded once while its proposal lives (decoding them all again each poll was ~15 % of the
    relayer's CPU in a 6,000-message burst), and forgotten once no live proposal holds it."""
    r, _clock = _rounds(tmp_path, coming, monkeypatch)
    real = delivery_module.decode_message
    decoded: list[bytes] = []

    def counting(data: bytes) -> Any:
        decoded.append(data)
        return real(data)

    monkeypatch.setattr(delivery_module, "decode_message", counting)
    raws = [raw(n) for n in (1, 2, 3)]
    assert r.delivery._decoded(raws) == [real(b) for b in raws]
    assert r.delivery._decoded(raws[::-1]) == [real(b) for b in raws[::-1]]
    assert decoded == raws  # once each
    live = [(cast(Any, "key"), proposal(1, 2))]
    trio.run(
        r.delivery._check_outstanding, HUB, cast(Any, None), r.store, []
    )  # nothing live: all forgotten
    decoded.clear()
    r.delivery._decoded(raws)
    assert decoded == raws
    monkeypatch.setattr(r.delivery, "_delivered_items", _none_handled)
    trio.run(r.delivery._check_outstanding, HUB, cast(Any, None), r.store, live)
    assert set(r.delivery._decoded_messages) == {raw(1), raw(2)}  # 3 is in no live proposal


async def _none_handled(_client: Any, _chain: Any, messages: Sequence[bytes]) -> list[Any]:
    return [None] * len(messages)
