"""The relayer's delivery round to Asset Hub keeps the chain busy (issue #12): it proposes new
batches before it checks its live proposals, reads all their guard items at once, and records
what executed in one ledger write a round — and none of that weakens what the check protects.

The chain's answer is a stand-in here (``_delivered_items``: the replay-guard items a real
Asset Hub shows; tests/test_substrate_hardening.py and test_e2e_substrate.py read them from
chopsticks): what is under test is the relayer's order and bookkeeping, against a real ledger
and a real proposal store.

What someone who wants to hurt us can try, and what each test pins:

* plant a proposal whose messages the ledger does not know, "delivered" on chain → our own
  executed proposals are still recorded (only ours are written from the check);
* plant a proposal naming every pending message → it holds nothing back (only ours do);
* a proposal of ours times out but did execute → recorded delivered, never failed, and its
  messages are not proposed again in the round that checks it.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import trio
import trio.testing
from test_substrate_batching import (
    HONEST,
    HUB_SETTINGS,
    ROCOCO,
    _a_round,
    _item_details,
    _round_setup,
    _StandInClient,
    _Storage,
)
from test_substrate_route import ALPHA, ASSETHUB, config_toml, load, message

from adapters.errors import AdapterError
from adapters.substrate.client import Included, Submitted, SubstrateClient
from adapters.substrate.multisig import OpenOperation, Timepoint
from benchmarks.bench_relay.hub_chain import HubBlock
from benchmarks.bench_relay.hub_model import Floor
from benchmarks.bench_relay.hub_report import full_batch_block
from light_clients.committee import Checkpoint
from light_clients.hashing import keccak256
from light_clients.hexstr import to_hex
from light_clients.message import Message, decode_message
from relayer.attester import AttesterState
from relayer.config import ChainConfig
from relayer.families.substrate import approval
from relayer.families.substrate.approval import DeliveryDuty, InFlight, Wait
from relayer.families.substrate.batching import budget_for
from relayer.families.substrate.calls import GUARD_DELIVERED, guard_items, guard_key
from relayer.families.substrate.delivery import SubstrateDelivery
from relayer.families.substrate.proposals import (
    DirectoryProposalStore,
    Proposal,
    ProposalStore,
    new_proposal,
)
from relayer.ledger import DiscoveredMessage, Ledger, MessageRecord, MessageStatus, open_ledger
from relayer.relay import Relayer

HUB = cast(ChainConfig, SimpleNamespace(name="hub", domain=ASSETHUB, settings=lambda: None))
CHECKPOINT = Checkpoint(origin=ALPHA, outbox=bytes(12) + b"\x11" * 20, root=b"\x33" * 32, index=99)


def raw(nonce: int) -> bytes:
    return message(nonce=nonce).encode()


def mid(nonce: int) -> str:
    return "0x" + keccak256(raw(nonce)).hex()


def proposal(*nonces: int, created: float | None = None) -> Proposal:
    fresh = new_proposal(
        ASSETHUB, CHECKPOINT, [raw(n) for n in nonces], [[bytes(32)] * 32] * len(nonces)
    )
    return fresh if created is None else dataclasses.replace(fresh, created=created)


class Round:
    """One relayer's Substrate delivery, its chain stand-in and what it did, in order."""

    def __init__(self, tmp_path: Path, ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
        relayer = Relayer(load(tmp_path, config_toml()), ledger)
        relayer.lanes = cast(Any, {ALPHA: SimpleNamespace(chain=SimpleNamespace(name="alpha"))})
        self.delivery = SubstrateDelivery(HUB, relayer)
        self.store = DirectoryProposalStore(tmp_path / "store")
        self.on_chain: set[bytes] = set()  # messages whose replay-guard item exists
        self.events: list[tuple[str, tuple[int, ...]]] = []
        self.delivered_writes: list[list[str]] = []

        async def guard_read(
            _client: Any, _chain: Any, messages: Sequence[bytes]
        ) -> list[str | None]:
            self.events.append(("guard read", nonces_of(messages)))
            return [GUARD_DELIVERED if m in self.on_chain else None for m in messages]

        async def plan(
            _chain: Any, _client: Any, todo: Sequence[MessageRecord]
        ) -> list[list[MessageRecord]]:
            return [list(todo)]  # one batch: sizing is the chain's, tested elsewhere

        async def propose(_chain: Any, _lane: Any, group: Sequence[MessageRecord]) -> Proposal:
            return proposal(*nonces_of([r.message for r in group]))  # proofs: tested elsewhere

        publish = self.store.publish

        def publishing(fresh: Proposal) -> Any:
            self.events.append(("publish", nonces_of(fresh.messages)))
            return publish(fresh)

        transition = ledger.transition

        def counting(ids: Any, to: MessageStatus, **kwargs: Any) -> list[str]:
            if to is MessageStatus.DELIVERED:
                self.delivered_writes.append(sorted(ids))
            return transition(ids, to, **kwargs)

        async def final_read(
            _client: Any, _chain: Any, messages: Sequence[bytes]
        ) -> list[str | None]:
            # The recording read, at the final head: here every block is final at once, as
            # on chopsticks (the best block differing from it: test_hub_relayer_rounds).
            return [GUARD_DELIVERED if m in self.on_chain else None for m in messages]

        monkeypatch.setattr(self.delivery, "_delivered_items", guard_read)
        monkeypatch.setattr(self.delivery, "_final_items", final_read)
        monkeypatch.setattr(self.delivery, "_plan", plan)
        monkeypatch.setattr(self.delivery, "_propose", propose)
        monkeypatch.setattr(self.store, "publish", publishing)
        monkeypatch.setattr(ledger, "transition", counting)

    def run(self, store: ProposalStore | None = None) -> None:
        async def once() -> None:
            await self.delivery._deliver_substrate_once(HUB, cast(Any, None), store or self.store)

        trio.run(once)


def nonces_of(messages: Sequence[bytes]) -> tuple[int, ...]:
    return tuple(decode_message(m).nonce for m in messages)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    """Messages 1-6 from ALPHA to Asset Hub, attested under one stored checkpoint."""
    with open_ledger(tmp_path / "ledger.db") as opened:
        opened.record_discovered(
            [DiscoveredMessage(raw(n), n, b"\x01" * 32, b"\x02" * 32, 0) for n in range(1, 7)]
        )
        ids = [mid(n) for n in range(1, 7)]
        opened.transition(ids, MessageStatus.FINAL)
        checkpoint = opened.save_checkpoint(
            ALPHA, b"\x11" * 32, b"\x33" * 32, 99, block_number=1, block_hash=b"\x01" * 32
        )
        opened.transition(ids, MessageStatus.ATTESTED, checkpoint_id=checkpoint)
        yield opened


def status(ledger: Ledger, nonce: int) -> MessageStatus:
    record = ledger.get(mid(nonce))
    assert record is not None
    return MessageStatus(record.status)


def test_new_batches_are_proposed_before_live_ones_are_checked_and_recorded_in_one_write(
    tmp_path: Path, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three live proposals of ours executed on chain; messages 5 and 6 are new. The new batch
    is written first (the chain gets its next batch without waiting for the bookkeeping), then
    one guard read covers all three live proposals and one write records them delivered."""
    r = Round(tmp_path, ledger, monkeypatch)
    for nonces in ((1, 2), (3,), (4,)):
        r.store.publish(proposal(*nonces))
    r.on_chain = {raw(n) for n in (1, 2, 3, 4)}
    r.events.clear()
    r.run()
    assert r.events == [
        ("guard read", (5, 6)),  # the new candidates, before proposing them (as before)
        ("publish", (5, 6)),
        ("guard read", (1, 2, 3, 4)),  # every live proposal at once, after
    ]
    assert r.delivered_writes == [sorted(mid(n) for n in (1, 2, 3, 4))]
    assert [status(ledger, n) for n in range(1, 7)] == [MessageStatus.DELIVERED] * 4 + [
        MessageStatus.ATTESTED
    ] * 2
    assert [p.messages for _, p in r.store.pending(ASSETHUB)] == [(raw(5), raw(6))]


def test_a_planted_proposal_neither_blocks_the_record_nor_holds_messages_back(
    tmp_path: Path, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone writes the store: a proposal of a message the ledger has never seen (shown
    delivered: its guard item exists), named to sort before ours, and one naming message 5.
    Our executed proposal is still recorded and message 5 is still proposed by us."""
    r = Round(tmp_path, ledger, monkeypatch)
    r.store.publish(proposal(3, 4))
    unknown = message(nonce=0, body=b"not in our ledger").encode()
    planted = new_proposal(ASSETHUB, CHECKPOINT, [unknown], [[bytes(32)] * 32])
    theirs = DirectoryProposalStore(tmp_path / "store")
    theirs.publish(planted)
    theirs.publish(proposal(5))
    r.on_chain = {raw(3), raw(4), unknown}
    r.events.clear()
    r.run()
    assert [status(ledger, n) for n in (3, 4)] == [MessageStatus.DELIVERED] * 2
    assert ("publish", (1, 2, 5, 6)) in r.events  # 5 not held back by their entry
    assert ledger.get("0x" + keccak256(unknown).hex()) is None


def test_a_timed_out_proposal_is_checked_before_it_is_failed_and_held_back_meanwhile(
    tmp_path: Path, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two proposals of ours past ``confirm_timeout``: (1, 2) did execute (late), (3, 4) did
    not. The first is recorded delivered, never failed; the second failed (retried in
    halves); neither's messages are in this round's new proposal."""
    r = Round(tmp_path, ledger, monkeypatch)
    r.store.publish(proposal(1, 2, created=1.0))
    r.store.publish(proposal(3, 4, created=1.0))
    r.on_chain = {raw(1), raw(2)}
    r.events.clear()
    r.run()
    assert [e for e in r.events if e[0] == "publish"] == [("publish", (5, 6))]
    assert [status(ledger, n) for n in range(1, 5)] == [MessageStatus.DELIVERED] * 2 + [
        MessageStatus.FAILED
    ] * 2
    assert not [
        e for n in (1, 2) for e in ledger.history(mid(n)) if e.to_status == MessageStatus.FAILED
    ]
    assert r.delivery._suspects == {mid(3): 1, mid(4): 1}
    assert [p.messages for _, p in r.store.pending(ASSETHUB)] == [(raw(5), raw(6))]


# --------------------------------------------------------------------------- the attesters


class _SlowChain(_StandInClient):
    """What an attester's round asks of a node when every operation is new (none open, no
    item delivered); each extrinsic is accepted at once and then stays in flight until
    ``land`` is set, when its wait fails (counted: the round's bookkeeping is not under test).
    :attr:`extrinsics`: the call hashes each extrinsic carried (one call, or a round's calls
    together in a ``Utility.batch``); :attr:`submitted`: all of them, in order."""

    def __init__(self) -> None:
        super().__init__(fail_at=0)  # no submission is refused
        self.land = trio.Event()
        self.extrinsics: list[list[bytes]] = []

    async def submit(self, keypair: Any, module: str, function: str, params: Any, **kw: Any) -> Any:
        together = params["calls"] if (module, function) == ("Utility", "batch") else [params]
        hashes = [call.get("call_args", call)["call_hash"] for call in together]
        self.extrinsics.append(hashes)
        self.submitted.extend(hashes)
        return Submitted(b"\xee" * 32, b"", len(self.extrinsics), 1, 64)

    async def wait_included(self, submitted: Submitted, **_: Any) -> Any:
        await self.land.wait()
        return await super().wait_included(submitted)


class _Attester:
    """One attester over ``count`` verified proposals (every grace period long past: each is
    ours to act on), its rounds' waits going in flight as :func:`approve_deliveries` does."""

    def __init__(self, node: _SlowChain, count: int) -> None:
        self.node = node
        self.keypair, self.chain, self.pending, self.batches = _round_setup(count)
        self.duty = DeliveryDuty()
        for batch in self.batches.values():
            self.duty.first_seen[(batch.hash, None)] = 0.0
        self.state, self.in_flight = AttesterState(), InFlight()
        self.done: set[tuple[str, float]] = set()
        self.sizing = (budget_for(ROCOCO), HONEST)

    async def round(self, nursery: trio.Nursery, entries: list[Any]) -> None:
        """A round over ``entries``; its waits go in flight in ``nursery``."""
        pipeline = await _a_round(
            self.node,
            self.keypair,
            self.chain,
            entries,
            self.sizing,
            batches=self.batches,
            done=self.done,
            duty=self.duty,
            state=self.state,
            pipeline=self.in_flight.pipeline(self.sizing[0]),
            settle=False,  # what approve_deliveries does now: the waits go in flight
        )
        self.in_flight.start(nursery, pipeline, self.done, self.state)


def test_an_attester_opens_the_next_batch_while_its_last_extrinsic_is_in_flight() -> None:
    """Round 1 opens p0; its extrinsic is still being built when p1 is proposed. Round 2 goes on
    without waiting for it (before, a round waited for all of its extrinsics first): p0 is
    skipped (ours is in flight: read now, the operation would look unopened, and a second
    opening would be a paid, failed extrinsic), p1 is opened. Once p0's wait fails, nothing
    more is submitted until everything in flight has settled."""
    a = _Attester(_SlowChain(), 3)
    node, in_flight, state = a.node, a.in_flight, a.state

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            await a.round(nursery, a.pending[:1])
            await a.round(nursery, a.pending[:2])
            assert node.submitted == [bytes([0]) * 32, bytes([1]) * 32]  # p0 not again
            assert in_flight.rounds == 2 and in_flight.opened == 2 and not node.land.is_set()
            node.land.set()
            with trio.fail_after(5):
                await in_flight.drain()
            assert in_flight.rounds == 0 and in_flight.keys == set() and in_flight.opened == 0

    trio.run(scenario)
    assert state.errors == 2 and not in_flight.halted  # drained: submitting is safe again


def test_executions_in_flight_hold_the_block_and_a_failure_stops_submitting() -> None:
    """An execution of a whole extrinsic's weight still in flight leaves no room for another
    in the next round (chopsticks would drop it from the block and every later nonce of ours
    would wait behind the gap); its room comes back once it settled. A failed wait marks the
    attester halted until it drained."""
    budget = budget_for(ROCOCO)
    in_flight, state, done = InFlight(), AttesterState(), set[tuple[str, float]]()
    landed = trio.Event()

    async def fails() -> bool:
        await landed.wait()
        raise AdapterError("dropped or replaced")

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            first = in_flight.pipeline(budget)
            assert first.room_for(first.block_weight, 1)  # one whole extrinsic: fits alone
            # The execution's weight and length are held by its wait, until it settled.
            first.settles.append(
                Wait("p0", ("p0", 1.0), b"\x00" * 32, fails, first.block_weight, 1)
            )
            in_flight.start(nursery, first, done, state)
            second = in_flight.pipeline(budget)
            assert second.busy == {("p0", 1.0)}
            assert not second.room_for(10**9, 100)  # the block is taken by what is in flight
            landed.set()
            await trio.testing.wait_all_tasks_blocked()
            assert in_flight.halted and in_flight.rounds == 0  # the loop drains, then goes on
            await in_flight.drain()
            assert in_flight.pipeline(budget).room_for(second.block_weight, 1)

    trio.run(scenario)
    assert state.errors == 1


# --------------------------------------------------------------------------- the ceiling


def test_a_full_batch_block_is_the_floor_overhead_plus_the_execution_build() -> None:
    """The benchmark's own ceiling counts a full batch's block as what it costs chopsticks:
    the floor's submit → announced less the floor's build, plus the median build of the
    blocks that executed a batch (openings and remarks do not count)."""
    floor = Floor(appeared=[1.4, 1.5, 1.6], builds=[0.9, 1.0, 1.1])
    blocks = [
        HubBlock(1, 0.0, ["approve_as_multi: opened"], [], build=0.3),
        HubBlock(2, 1.0, ["as_multi: executed, 494 delivered"], [], build=2.0),
        HubBlock(
            3, 2.0, ["approve_as_multi: opened", "as_multi: executed, 494 delivered"], [], 1.6
        ),
        HubBlock(4, 3.0, ["as_multi: executed, 12 delivered"], [], build=None),
    ]
    assert full_batch_block(floor, blocks) == pytest.approx(0.5 + 1.8)
    assert full_batch_block(floor, blocks[:1]) is None  # no execution built: no figure
    assert full_batch_block(Floor(), blocks) is None


def test_ours_compares_the_text_read_without_serialising_and_a_rewrite_is_not_ours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The relayer asks ``ours`` of every live proposal each round: it must not serialise a
    1 MB proposal again each time. What it read is compared with what it wrote, as text; an
    entry someone rewrote with the same content (other spacing) is not ours any more."""
    store = DirectoryProposalStore(tmp_path / "store")
    key = store.publish(proposal(1, 2))
    [(read_key, read)] = store.pending(ASSETHUB)
    serialised: list[Proposal] = []
    to_json = Proposal.to_json

    def counting(self: Proposal) -> str:
        serialised.append(self)
        return to_json(self)

    monkeypatch.setattr(Proposal, "to_json", counting)
    assert store.ours(read_key, read) and serialised == []
    assert store.ours(key, dataclasses.replace(read)) and len(serialised) == 1  # not as read
    path = store.path(key)
    path.write_text(path.read_text().replace(", ", ",  "))
    [(_, reread)] = store.pending(ASSETHUB)
    assert reread == read and not store.ours(key, reread)


# --------------------------------------------------------------------------- review fixes (FA)


class _FailsInTheBackground(_SlowChain):
    """Round 1's extrinsic stays in flight; its wait fails right ``when`` round 2 submits its
    first extrinsic ("submitted": what was due, before a new proposal's verification) or
    reads the chain for its last proposal ("reading": after the round looked at the halt for
    it, before the round's last submission)."""

    def __init__(self, when: str) -> None:
        super().__init__()
        self.when = when

    async def _fail_round_1(self) -> None:
        if not self.land.is_set():
            self.land.set()  # round 1's wait fails now, in the background
            await trio.testing.wait_all_tasks_blocked()

    async def submit(self, keypair: Any, module: str, function: str, params: Any, **kw: Any) -> Any:
        submitted = await super().submit(keypair, module, function, params, **kw)
        if self.when == "submitted" and len(self.extrinsics) == 2:
            await self._fail_round_1()
        return submitted

    async def query(self, *args: Any, **kw: Any) -> None:
        if self.when == "reading" and args[2][1] == bytes([3]) * 32:  # p3's operation
            await self._fail_round_1()
        return await super().query(*args, **kw)


@pytest.mark.parametrize("when", ["submitted", "reading"])
def test_a_wait_failing_in_the_background_stops_the_round_in_progress(
    when: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review M1: round 1's wait fails while round 2 is submitting. The client has forgotten its
    nonce count, and the node's leaves out our extrinsics in a block being built: a further
    submission would reuse a nonce and hold the attester for the inclusion timeout. Round 2
    submits twice: what was due on p1 and p2 (verified already) before it verifies the new
    p3, then p3's opening. Nothing is submitted after the failure, whether it lands during
    the first submission or while the last proposal is read (after the round looked at the
    halt for it, so the submission itself must refuse); the attester is halted until it
    drained."""
    a = _Attester(_FailsInTheBackground(when), 4)
    node, in_flight = a.node, a.in_flight
    new_key = (a.pending[3][0].name, a.pending[3][1].created)
    new_batch = a.batches.pop(new_key)  # p3 is new: verified in round 2

    async def verified(*_args: Any, **_kw: Any) -> Any:
        return new_batch

    monkeypatch.setattr(approval, "_verified_batch", verified)

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            await a.round(nursery, a.pending[:1])  # p0, in flight
            await a.round(nursery, a.pending)  # p1, p2 submitted; round 1 fails; p3 must wait
            assert node.extrinsics == [[bytes([0]) * 32], [bytes([1]) * 32, bytes([2]) * 32]]
            assert in_flight.halted and new_key in a.batches  # p3 verified, not submitted
            node.land.set()
            with trio.fail_after(5):
                await in_flight.drain()
            await a.round(nursery, a.pending)  # drained: all go out (p0, p1 settled, failed)
            assert node.extrinsics[2:] == [[bytes([n]) * 32 for n in range(4)]]  # together
            nursery.cancel_scope.cancel()

    trio.run(scenario)


def test_a_failed_cancel_halts_submitting_and_none_is_sent_while_halted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review M1, the other source: a stale-operation cancel is a submission too. One that
    fails while other extrinsics of ours are in flight raises the attester's halt (the round
    after it submits nothing until drained), and no cancel is sent while the halt is up."""
    a = _Attester(_SlowChain(), 1)
    keypair, chain, duty = a.keypair, a.chain, a.duty
    me = bytes(keypair.public_key)
    stale = {b"\xca" * 32: OpenOperation(Timepoint(1, 1), frozenset({me}), me)}
    sent: list[bytes] = []
    duty.first_seen[(b"\xca" * 32, Timepoint(1, 1))] = 0.0  # open since long ago: stale

    async def held(*_args: Any) -> dict[bytes, OpenOperation]:
        return dict(stale)

    async def cancel(
        _client: Any, _kp: Any, _others: Any, _t: int, call_hash: bytes, **_: Any
    ) -> None:
        sent.append(call_hash)
        raise AdapterError("extrinsic 0x… (nonce 7) not included on ws://stand-in within 120 s")

    monkeypatch.setattr(approval, "held_operations", held)
    monkeypatch.setattr(approval, "cancel", cancel)
    in_flight, state = InFlight(), AttesterState()

    async def tend() -> None:
        await approval._tend_held(
            cast(Any, None), chain, keypair, duty, state=state, now=1e9, halt=in_flight.halt
        )

    with pytest.raises(AdapterError, match="not included"):
        trio.run(tend)
    assert in_flight.halted and sent == [b"\xca" * 32]
    # Halted, and stale again (its clock was re-armed by the failure): still nothing is sent.
    duty.first_seen[(b"\xca" * 32, Timepoint(1, 1))] = 0.0
    trio.run(tend)  # halted: the stale operation waits for the drain, nothing is sent
    assert sent == [b"\xca" * 32] and state.cancellations == 0
    assert in_flight.pipeline(budget_for(ROCOCO)).halted  # the round after it submits nothing


class _CancelFails(_SlowChain):
    """Our stale operation's ``cancel_as_multi`` never succeeds: ``refused`` — the node
    refuses the submission (its nonce is in doubt) — or, if not, it is included and fails on
    chain (``Multisig.NotFound``, as while our read of the operations lags). Openings go
    through :class:`_SlowChain` (in flight until ``land``)."""

    def __init__(self, refused: bool) -> None:
        super().__init__()
        self.refused = refused
        self.cancels: list[bytes] = []

    async def submit(self, keypair: Any, module: str, function: str, params: Any, **kw: Any) -> Any:
        if function != "cancel_as_multi":
            return await super().submit(keypair, module, function, params, **kw)
        self.cancels.append(params["call_hash"])
        if self.refused:
            raise AdapterError("author_submitExtrinsic on ws://stand-in:9944: Invalid Transaction")
        return Included(b"\x01" * 32, 5, 2, b"\xcc" * 32, 7, False, "Multisig.NotFound", ())


@pytest.mark.parametrize("refused", [False, True])
def test_a_cancel_that_keeps_failing_stops_no_approvals_and_is_retried_once_a_period(
    refused: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Second review, finding 2: a stale operation of ours whose cancel always fails. Polls
    as :func:`approve_deliveries` makes them (drain if halted, tend the held operations, one
    round), a new proposal each poll, 10 s apart.

    Included but failed on chain, the cancel used its nonce normally: it halts nothing, and
    every poll's proposal is opened (before, the halt it raised stopped every round at its
    first proposal for as long as the cancel failed). Refused, its nonce is in doubt: that
    poll's round still submits nothing. Either way the operation is held off: tried again one
    STALE_OPERATION later, not every poll."""
    polls = 5
    node = _CancelFails(refused)
    a = _Attester(node, polls)
    in_flight, state, duty = a.in_flight, a.state, a.duty
    me = bytes(a.keypair.public_key)
    stale_hash, timepoint = b"\xca" * 32, Timepoint(1, 1)
    duty.first_seen[(stale_hash, timepoint)] = 0.0  # open since long ago: stale

    async def held(*_args: Any) -> dict[bytes, OpenOperation]:
        return {stale_hash: OpenOperation(timepoint, frozenset({me}), me)}

    monkeypatch.setattr(approval, "held_operations", held)
    start = 1e6

    async def poll(nursery: trio.Nursery, n: int, now: float) -> None:
        if in_flight.halted:
            node.land.set()  # let what is in flight settle, as the loop's drain waits for
            with trio.fail_after(5):
                await in_flight.drain()
        with contextlib.suppress(AdapterError):  # the loop logs it
            await approval._tend_held(
                cast(Any, node), a.chain, a.keypair, duty, state=state, now=now, halt=in_flight.halt
            )
        await a.round(nursery, a.pending[: n + 1])

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            for n in range(polls):
                await poll(nursery, n, start + 10 * n)
                if n == 0:
                    assert in_flight.halted is refused
                    assert node.submitted == ([] if refused else [bytes([0]) * 32])
            assert node.cancels == [stale_hash]  # one attempt in 40 s, not one a poll
            if not refused:  # never halted: each poll opened its new proposal, nothing twice
                assert not in_flight.halted and state.errors == 1  # the failed cancel's line
                assert node.submitted == [bytes([n]) * 32 for n in range(polls)]
            else:  # halted once, drained; later polls opened every proposal again
                assert node.submitted[-polls:] == [bytes([n]) * 32 for n in range(polls)]
            await poll(nursery, polls - 1, start + approval.STALE_OPERATION)
            assert node.cancels == [stale_hash] * 2  # the period is over: tried again
            nursery.cancel_scope.cancel()

    trio.run(scenario)
    assert state.cancellations == 0 and stale_hash in duty.held


def test_the_same_batch_under_another_proposal_key_is_not_submitted_again_while_in_flight() -> None:
    """Review M2: anyone writing the store republishes our live proposal with another
    ``created`` (a new proposal key, the same messages: the same call hash), every poll; a
    relayer restart can do the same. While our opening of that call is in flight the chain
    does not show it yet: acting again would open it twice (a paid, failed
    ``Multisig.NoTimepoint``, and one of the two openings allowed used up). Neither in the next
    round nor in the same one is it submitted again; it is still verified (the batch is
    composed) and, once ours has settled, acted on as usual."""
    a = _Attester(_SlowChain(), 1)
    node, in_flight = a.node, a.in_flight
    key, p0 = a.pending[0]
    rewritten = [dataclasses.replace(p0, created=p0.created + n) for n in (1, 2)]
    for copy in rewritten:
        a.batches[(key.name, copy.created)] = a.batches[(key.name, p0.created)]

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            # The same round: ours and a rewrite of it, side by side.
            await a.round(nursery, [(key, p0), (key, rewritten[0])])
            # The next rounds: another rewrite, while ours is still in flight.
            await a.round(nursery, [(key, rewritten[1])])
            await a.round(nursery, [(key, p0), (key, rewritten[0]), (key, rewritten[1])])
            assert node.submitted == [bytes([0]) * 32]
            assert in_flight.calls == {bytes([0]) * 32}
            node.land.set()
            with trio.fail_after(5):
                await in_flight.drain()
            assert in_flight.calls == set()
            nursery.cancel_scope.cancel()

    trio.run(scenario)


def test_live_proposals_are_checked_even_when_proposing_fails(
    tmp_path: Path, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review L1: proposing can fail round after round (the batch limits unmeasurable after a
    runtime upgrade, or a hostile RPC answering the measurement badly). The check of the live
    proposals still runs: our executed proposal is recorded delivered and removed, and the
    round still fails with proposing's one line."""
    r = Round(tmp_path, ledger, monkeypatch)
    r.store.publish(proposal(1, 2))
    r.on_chain = {raw(1), raw(2)}

    async def unmeasurable(*_args: Any) -> list[list[MessageRecord]]:
        raise AdapterError("batch limits on ws://hub: the runtime's answer is not a weight")

    monkeypatch.setattr(r.delivery, "_plan", unmeasurable)
    with pytest.raises(AdapterError, match="batch limits"):
        r.run()
    assert [status(ledger, n) for n in (1, 2)] == [MessageStatus.DELIVERED] * 2
    assert r.store.pending(ASSETHUB) == []  # handled: removed


def test_the_check_never_removes_the_proposal_this_round_published_under_the_same_name(
    tmp_path: Path, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review L2: an entry we did not write sits under the very name of our next batch (same
    origin, nonces and checkpoint index), listed for longer than ``confirm_timeout``. We publish
    our batch over it; the check, looking at what it read there before, must not remove the
    key: that would delete our fresh proposal."""
    r = Round(tmp_path, ledger, monkeypatch)
    theirs = DirectoryProposalStore(tmp_path / "store")
    key = theirs.publish(proposal(1, 2, 3, 4, 5, 6, created=5.0))
    r.store.first_seen(key, 0.0)  # listed by us since long ago: old by our clock
    r.run()
    assert ("publish", (1, 2, 3, 4, 5, 6)) in r.events
    [(read_key, ours)] = r.store.pending(ASSETHUB)
    assert read_key == key and r.store.ours(read_key, ours) and ours.created != 5.0


def test_guard_items_are_read_in_bounded_chunks() -> None:
    """Review L3: the check reads the guard items of every live proposal at once, planted
    entries included (up to about 1,000 messages each). A node refuses a request past its size
    limit; one read of them all would then fail every round. 5,000 messages against a node
    refusing more than 4,096 keys a request: read in chunks, every answer where it belongs."""
    messages = [
        Message(1, n, ALPHA, b"\x5e" * 32, ASSETHUB, b"\x8e" * 32, b"x") for n in range(5000)
    ]
    delivered = to_hex(_item_details(None, False, 1))
    present = {to_hex(guard_key(1, n)) for n in (0, 2047, 2048, 4999)}

    def limited(keys: list[str]) -> Any:
        if len(keys) > 4096:
            raise AdapterError("state_queryStorageAt on ws://stand-in:9944: request too large")
        return [{"changes": [[k, delivered if k in present else None] for k in keys]}]

    node = _Storage(limited)
    read = trio.run(guard_items, cast(SubstrateClient, node), HUB_SETTINGS, messages)
    assert [n for n, item in enumerate(read) if item == GUARD_DELIVERED] == [0, 2047, 2048, 4999]
    assert len(read) == 5000 and read.count(None) == 4996
    assert [len(keys) for keys in node.asked] == [2048, 2048, 904]  # bounded, each key once
