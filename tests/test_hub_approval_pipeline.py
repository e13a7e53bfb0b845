"""The attesters' approval pipeline to Asset Hub (issue #12, session 7): the signatory expected
to execute a batch weighs it while the opening is being built, so its execution goes out as
soon as it sees the operation open; a round acts on the batches it verified already before it
verifies new proposals; and the benchmark's sustained rate.

The node is a stand-in here (it answers the fee estimate and takes submissions; what a real
Asset Hub answers is pinned by tests/test_e2e_substrate.py): what is under test is who asks
for what and when.

What someone who wants to hurt us can try, and what each test pins:

* a relayer (or anyone writing the proposal store) plants verified proposals nobody opens →
  each costs one estimate, by one signatory only (the expected executor), never a second;
* a weight estimated for one call is never used for another (keyed by the call hash), nor
  after the runtime was measured again (an upgrade changes weights: a ``max_weight`` below
  the call's makes the execution fail, paid), nor kept once no live proposal batches it;
* plant proposals (named to sort first) that take seconds to verify → our opening or execution
  of a batch verified already is not held up behind them.
"""

from __future__ import annotations

import dataclasses
import logging
from functools import partial
from types import SimpleNamespace
from typing import Any, cast

import pytest
import trio
from substrateinterface import Keypair
from test_substrate_batching import (
    HONEST,
    HUB_SETTINGS,
    ROCOCO,
    _a_round,
    _round_setup,
    _SlowBlocks,
)

from adapters.errors import AdapterError
from adapters.substrate.client import Call, Fee, Included, Submitted, SubstrateClient
from adapters.substrate.multisig import OpenOperation, Timepoint, submit_together
from benchmarks.bench_relay.hub_chain import HubBlock
from benchmarks.bench_relay.hub_model import Floor, HubOutcome, HubPhase, HubResult
from benchmarks.bench_relay.hub_report import (
    hub_ceilings,
    openings_before,
    report_ceilings,
    sustained_ceiling,
)
from light_clients.committee import Checkpoint
from light_clients.hexstr import to_hex
from relayer.attester import AttesterState
from relayer.families.substrate import approval
from relayer.families.substrate.approval import (
    GRACE_MAX,
    ROLE_GRACE,
    DeliveryDuty,
    Pipeline,
    _act_on,
    _rank,
    _weigh_ahead,
)
from relayer.families.substrate.batching import budget_for
from relayer.families.substrate.proposals import new_proposal

COMMITTEE = [Keypair.create_from_uri(f"//PipeSigner{i}") for i in range(3)]
SETTINGS = dataclasses.replace(
    HUB_SETTINGS, signatories=tuple(sorted(bytes(k.public_key) for k in COMMITTEE))
)
CHAIN = cast(Any, SimpleNamespace(name="assethub", domain=1000, settings=lambda: SETTINGS))
PROPOSAL = new_proposal(1000, Checkpoint(1, b"\x11" * 32, b"\x33" * 32, 7), [], [])
WEIGHT = 123_456_789


class _Node:
    """A node that estimates every call at :attr:`weight` (counted) under runtime
    :attr:`version`, and takes submissions; :attr:`events` is the order it was asked in."""

    url = "ws://stand-in:9944"

    def __init__(self) -> None:
        self.estimates: list[bytes] = []
        self.submitted: list[tuple[str, dict[str, Any]]] = []
        self.events: list[str] = []
        self.version = 1
        self.weight = WEIGHT

    async def rpc(self, method: str, params: Any = ()) -> Any:
        assert method == "state_getRuntimeVersion"
        return {"specVersion": self.version}

    async def estimate_fee(self, keypair: Keypair, call: Call) -> Fee:
        self.estimates.append(call.hash)
        self.events.append("estimate")
        return Fee(partial_fee=1, weight=self.weight)

    def weight_arg(self, ref_time: int, proof_size: int = 0) -> int:
        return ref_time

    async def submit(self, keypair: Any, module: str, function: str, params: Any, **_: Any) -> Any:
        self.submitted.append((function, params))
        self.events.append(function)
        return Submitted(b"\xee" * 32, b"", len(self.submitted), 1, 64)


def _ranked(rank: int) -> tuple[Keypair, Call]:
    """A signatory and a batch whose rotation puts that signatory at ``rank``."""
    for n in range(256):
        call = Call("Utility", "batch_all", b"\x00" * 40, bytes([n]) * 32, None)
        for keypair in COMMITTEE:
            me = bytes(keypair.public_key)
            if _rank(SETTINGS, call.hash, me, frozenset()) == rank:
                return keypair, call
    raise AssertionError("no such rotation")


def _opener(call: Call, rank: int = 0) -> bytes:
    """The signatory at ``rank`` (the first: the one to open) in ``call``'s rotation."""
    return next(
        s for s in SETTINGS.signatories if _rank(SETTINGS, call.hash, s, frozenset()) == rank
    )


def _opened_by(depositor: bytes, height: int = 9) -> OpenOperation:
    """An operation ``depositor`` opened (its only approval) in block ``height``."""
    return OpenOperation(Timepoint(height, 1), frozenset({depositor}), depositor)


def _operations(monkeypatch: pytest.MonkeyPatch) -> dict[bytes, OpenOperation]:
    """The open operations the node answers (``open_operation``): call hash → operation."""
    operation: dict[bytes, OpenOperation] = {}

    async def open_operation(client: Any, multisig: bytes, call_hash: bytes) -> Any:
        return operation.get(call_hash)

    monkeypatch.setattr(approval, "open_operation", open_operation)
    return operation


async def _act(
    node: _Node,
    keypair: Keypair,
    call: Call,
    duty: DeliveryDuty,
    now: float,
    *,
    sighted: float = 0.0,
    state: AttesterState | None = None,
) -> bool:
    """One proposal's part of a round, as :func:`approval._round` does it: act on it, submit
    what it decided (:meth:`Pipeline.flush`), then weigh ahead what it left to weigh once the
    round's submissions went out."""
    pipeline = Pipeline.for_budget(budget_for(ROCOCO))
    state = AttesterState() if state is None else state
    finished = await _act_on(
        cast(SubstrateClient, node),
        CHAIN,
        keypair,
        PROPOSAL,
        call,
        state=state,
        duty=duty,
        now=now,
        pipeline=pipeline,
        sighted=sighted,
    )
    # What was decided goes out at the round's flush (its waits are not under test here).
    await pipeline.flush(
        cast(SubstrateClient, node), keypair, SETTINGS.multisig, chain=CHAIN, state=state
    )
    await _weigh_ahead(
        cast(SubstrateClient, node), keypair, pipeline.ahead, duty, chain=CHAIN, state=state
    )
    return finished


def test_the_expected_executor_weighs_while_the_opening_is_built_and_executes_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: the executor asked ``payment_queryInfo`` of the 100 KB call only after it saw
    the operation open, on the critical path. Now the rank-1 signatory (the executor once rank
    0 has opened, threshold 2) weighs it while waiting for the opening; when the operation
    shows, its execution is submitted with that weight and nothing is estimated again."""
    keypair, call = _ranked(1)
    operation = _operations(monkeypatch)
    node, duty = _Node(), DeliveryDuty()

    async def scenario() -> None:
        assert not await _act(node, keypair, call, duty, now=0.5)  # rank 0's turn still
        assert node.estimates == [call.hash] and node.submitted == []
        assert not await _act(node, keypair, call, duty, now=0.75)  # the next poll
        assert node.estimates == [call.hash]  # a planted, never-opened batch: one estimate
        operation[call.hash] = _opened_by(_opener(call))
        assert not await _act(node, keypair, call, duty, now=1.0)  # submitted, in flight
        assert node.estimates == [call.hash]  # the execution used the estimate made ahead
        [(function, params)] = node.submitted
        assert function == "as_multi" and params["max_weight"] == WEIGHT
        assert params["maybe_timepoint"] == {"height": 9, "index": 1}

    trio.run(scenario)


@pytest.mark.parametrize("rank", [0, 2])
def test_only_the_expected_executor_weighs_ahead(
    monkeypatch: pytest.MonkeyPatch, rank: int
) -> None:
    """The opener (rank 0, acting at once) and the signatory after the executor (rank 2,
    waiting two graces) do not estimate a batch that is not open: a planted proposal costs
    the committee one estimate, not three."""
    keypair, call = _ranked(rank)

    _operations(monkeypatch)  # none is open
    monkeypatch.setattr(approval, "_already_delivered", lambda *a: _false())
    node, duty = _Node(), DeliveryDuty()
    trio.run(_act, node, keypair, call, duty, 0.5)
    assert node.estimates == [] and duty.fees == {}
    # The opener opened (the node took it), the one after the executor did nothing.
    assert [function for function, _ in node.submitted] == (
        ["approve_as_multi"] if rank == 0 else []
    )


async def _false() -> bool:
    return False


def test_an_estimate_is_kept_only_while_a_proposal_batches_its_call() -> None:
    """Estimates (and failed estimates) live as long as a live proposal batches their call:
    what anyone writing the store can make us keep is bounded by the live proposals."""
    duty = DeliveryDuty()
    duty.fees.update({b"a" * 32: (1, Fee(1, 10)), b"b" * 32: (1, Fee(1, 20))})
    duty.weigh_failed.update({b"a" * 32, b"d" * 32})
    duty.keep_fees({b"a" * 32, b"c" * 32})
    assert duty.fees == {b"a" * 32: (1, Fee(1, 10))}  # b's proposal is gone
    assert duty.weigh_failed == {b"a" * 32}


def test_another_call_is_weighed_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """The estimate is the call's own: another batch (another hash) asks the node again."""
    keypair, call = _ranked(1)
    other = next(
        c
        for c in (
            Call("Utility", "batch_all", b"\x01" * 40, bytes([n]) * 32, None) for n in range(256)
        )
        if c.hash != call.hash
        and _rank(SETTINGS, c.hash, bytes(keypair.public_key), frozenset()) == 1
    )

    _operations(monkeypatch)  # none is open
    node, duty = _Node(), DeliveryDuty()

    async def scenario() -> None:
        await _act(node, keypair, call, duty, 0.5)
        await _act(node, keypair, other, duty, 0.5)

    trio.run(scenario)
    assert node.estimates == [call.hash, other.hash]


def test_the_sustained_rate_leaves_out_the_first_delivery_block() -> None:
    """The hub leg's sustained rate is the EVM legs': messages after the first delivery
    block over the time from that block to the last one (the pipeline's start-up left out)."""
    result = HubResult(HubPhase("burst", from_hub=False, messages=1000))
    for nonce in range(1000):
        block = 10 if nonce < 400 else (11 if nonce < 700 else 12)
        result.delivery_block[nonce] = block
        result.delivered_time[nonce] = {10: 100.0, 11: 102.0, 12: 106.0}[block]
    assert result.per_block == [(10, 400), (11, 300), (12, 300)]
    assert result.sustained == pytest.approx(600 / 6.0)
    one = HubResult(HubPhase("burst", from_hub=False, messages=5))
    one.delivery_block = dict.fromkeys(range(5), 3)
    one.delivered_time = dict.fromkeys(range(5), 1.0)
    assert one.sustained is None  # one block: no span to rate


def test_a_verified_batch_is_acted_on_before_new_proposals_are_verified(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: a round went through the proposals in the store's order, so a new proposal (a
    few seconds of verification for ~500 messages on a loaded attester) held up the opening or
    execution of a batch verified in an earlier round — and anyone writing the store could
    name planted proposals to sort first. Now the verified ones are acted on first; the new
    ones are still all verified, in the store's order, before anything is done for them."""
    keypair, chain, pending, batches = _round_setup(4)
    known = {(pending[k][0].name, pending[k][1].created) for k in (1, 3)}
    batches = {key: call for key, call in batches.items() if key in known}
    order: list[tuple[str, str]] = []

    async def verified(config: Any, chain_: Any, client: Any, proposal: Any, **_: Any) -> None:
        order.append(("verify", next(k.name for k, p in pending if p is proposal)))
        return None  # not (yet) a checkpoint a quorum signed: nothing to act on

    async def act_on(
        client: Any, chain_: Any, keypair_: Any, proposal: Any, batch: Call, **_: Any
    ) -> bool:
        order.append(("act", next(k.name for k, p in pending if p is proposal)))
        return False

    monkeypatch.setattr(approval, "_verified_batch", verified)
    monkeypatch.setattr(approval, "_act_on", act_on)
    monkeypatch.setattr(approval, "_within_budget", lambda *a: None)
    trio.run(
        partial(
            _a_round,
            _Node(),
            keypair,
            chain,
            pending,
            (budget_for(ROCOCO), HONEST),
            batches=batches,
            done=set(),
            duty=DeliveryDuty(),
            state=AttesterState(),
        )
    )
    assert order == [("act", "p1"), ("act", "p3"), ("verify", "p0"), ("verify", "p2")]


def test_the_summary_prints_both_rates_and_every_ceiling_the_issues_first(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Nothing is picked to pass: send → all delivered and the sustained rate, then the
    issue's ceiling (2 floor blocks a weight-sized batch), the phase's own blocks and
    chopsticks' own, each with its definition; and a caution when most openings were built
    before the first delivery (the sustained span then holds about one block a batch)."""
    burst = HubResult(HubPhase("burst", from_hub=False, messages=988), complete=True)
    burst.started_at = 0.0
    labels = {11: "approve_as_multi: opened", 12: "approve_as_multi: opened"}
    labels |= {13: "as_multi: executed, 494 delivered", 14: "as_multi: executed, 494 delivered"}
    burst.blocks = [
        HubBlock(n, 10.0 + (n - 11), [label], [], build=1.0 if n > 12 else 0.3)
        for n, label in labels.items()
    ]
    for nonce in range(988):
        block = 13 if nonce < 494 else 14
        burst.delivery_block[nonce] = block
        burst.delivered_time[nonce] = 10.0 + (block - 11)
    outcome = HubOutcome(
        floor=Floor(appeared=[0.5], builds=[0.3]), batch_messages=494, batch_note="note"
    )
    assert openings_before(burst) == 2
    report_ceilings(outcome, burst)
    lines = capsys.readouterr().out.splitlines()
    assert "send → all delivered 76.00/s; sustained 494.00/s" in lines[0]
    # The span: block 14's 494 messages at its 1.0 s build.
    assert lines[1].startswith("  ceiling over the same span: 494.0 messages/s; sustained = 1.00x")
    assert "caution: 2 of the openings" in lines[2]
    ceilings = [line for line in lines if line.startswith("  ceiling, ")]
    assert [line.split(":")[0] for line in ceilings] == [
        "  ceiling, issue #12's",
        "  ceiling, the phase's own blocks",
        "  ceiling, chopsticks' own, openings overlapped",
        "  ceiling, chopsticks' own, serial",
    ]
    assert ceilings[0].startswith("  ceiling, issue #12's: 494.0 messages/s; sustained = 1.00x")
    assert "2 floor blocks per weight-sized batch (2 of up to 494)" in ceilings[0]


def _third(call: Call) -> Keypair:
    """The signatory ranked last in ``call``'s rotation: the executor's stand-in."""
    return next(
        k
        for k in COMMITTEE
        if _rank(SETTINGS, call.hash, bytes(k.public_key), frozenset()) == len(COMMITTEE) - 1
    )


def test_the_first_signatorys_slow_opening_lengthens_the_grace_before_standing_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Measured (session 7): at a burst's start an attester has no turns of its own yet, so
    it waited the 4 s minimum; the first execution's block took longer to build and the
    next-ranked attester executed too (paid ``UnexpectedTimepoint``s). Now the first
    signatory's opening it waited for counts: opened 5 s after we read the proposal → a 5 s
    grace (not doubled: review M1), so 4.5 s after seeing it open (the old 4 s passed) we still
    leave the execution to its executor, and stand in only once 5 s have passed."""
    _, call = _ranked(0)
    standin = _third(call)
    operation = _operations(monkeypatch)
    node, duty = _Node(), DeliveryDuty()

    async def scenario() -> None:
        assert not await _act(node, standin, call, duty, now=0.0)  # rank 2: not its turn
        operation[call.hash] = _opened_by(_opener(call))
        assert not await _act(node, standin, call, duty, now=5.0)  # seen open: 5 s a turn
        assert duty.grace.seconds == pytest.approx(5.0)
        assert not await _act(node, standin, call, duty, now=9.5)
        assert node.submitted == []  # before: executed here (5 + 4 s), racing the executor
        assert not await _act(node, standin, call, duty, now=10.5)
        assert [function for function, _ in node.submitted] == ["as_multi"]

    trio.run(scenario)


@pytest.mark.parametrize("opened_after", [0.5, GRACE_MAX + 1.0])
def test_an_opening_never_shortens_the_grace_and_a_wait_past_the_longest_grace_is_no_turn(
    monkeypatch: pytest.MonkeyPatch, opened_after: float
) -> None:
    """A quick opening leaves the grace at its least (:data:`ROLE_GRACE`): nothing a
    co-signatory does makes us stand in sooner. An operation seen open only after the longest
    grace (it was cancelled and opened again, or our clock for it was forgotten) was no turn,
    and does not hold every later stand-in at :data:`GRACE_MAX`. Seen open again later, it is
    not sampled twice."""
    _, call = _ranked(0)
    standin = _third(call)
    operation = _operations(monkeypatch)
    node, duty = _Node(), DeliveryDuty()

    async def scenario() -> None:
        await _act(node, standin, call, duty, now=0.0)
        operation[call.hash] = _opened_by(_opener(call))
        await _act(node, standin, call, duty, now=opened_after)
        await _act(node, standin, call, duty, now=opened_after + 1.0)

    trio.run(scenario)
    assert duty.grace.seconds == ROLE_GRACE
    assert list(duty.grace.openings) == ([0.5] if opened_after < GRACE_MAX else [])
    assert list(duty.grace.turns) == []  # an opening is not a turn of ours


class _Committee:
    """The multisig as the stand-in node shows it at :attr:`now` (the attesters' clock): an
    opening submitted by a simulated attester, or planted with :meth:`open_at`, shows as open
    ``build`` seconds after it went out, its submitter the depositor."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, build: float = 1.0) -> None:
        self.operation: dict[bytes, OpenOperation] = {}
        self.opening: dict[bytes, tuple[float, bytes]] = {}
        self.build = build
        self.now = 0.0

        async def open_operation(client: Any, multisig: bytes, call_hash: bytes) -> Any:
            due = self.opening.get(call_hash)
            if due is not None and due[0] <= self.now:
                self.operation[call_hash] = _opened_by(due[1])
            return self.operation.get(call_hash)

        async def submitting(client: Any, keypair: Keypair, calls: Any) -> Submitted:
            for call in calls:
                if call.function == "approve_as_multi":
                    when = (self.now + self.build, bytes(keypair.public_key))
                    self.opening.setdefault(call.call_hash, when)
            return await submit_together(client, keypair, calls)  # the node takes it

        monkeypatch.setattr(approval, "open_operation", open_operation)
        monkeypatch.setattr(approval, "submit_together", submitting)
        monkeypatch.setattr(approval, "_already_delivered", lambda *a: _false())

    def open_at(self, call: Call, when: float, depositor: bytes) -> None:
        """``depositor`` (not one of the attesters simulated) opens ``call`` at ``when``."""
        self.opening[call.hash] = (when, depositor)


def _first_down_batches() -> tuple[bytes, Keypair, Keypair, list[Call]]:
    """A signatory that is down, the next two in rotation, and three batches it opens first."""
    calls = [Call("Utility", "batch_all", b"\x02" * 40, bytes([n]) * 32, None) for n in range(256)]
    down = bytes(COMMITTEE[0].public_key)
    firsts = [c for c in calls if _opener(c) == down][:3]
    second, third = (
        next(k for k in COMMITTEE if bytes(k.public_key) == _opener(firsts[0], rank))
        for rank in (1, 2)
    )
    assert all(_opener(c, 1) == bytes(second.public_key) for c in firsts)
    return down, second, third, firsts


def test_a_stand_ins_opening_is_no_sample_so_a_signatory_down_leaves_the_grace_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review M1: the opening of a stand-in (rank 1, after a whole grace waiting for a first
    signatory that is down) was sampled too: grace + block, doubled — the third signatory's
    grace went 4 → 10 s after one batch, and roles rotating fed the graces into each other
    up to :data:`GRACE_MAX`. Now only the first signatory's opening is a sample: three
    batches with the first signatory down leave the third's grace at most 2 × ROLE_GRACE."""
    _, second, third, batches = _first_down_batches()
    committee = _Committee(monkeypatch)
    node = _Node()
    duties = {bytes(k.public_key): DeliveryDuty() for k in (second, third)}

    async def scenario() -> None:
        for n, call in enumerate(batches):
            start = 100.0 * n
            for tick in range(12):
                committee.now = start + tick
                for keypair in (second, third):
                    duty = duties[bytes(keypair.public_key)]
                    await _act(node, keypair, call, duty, committee.now, sighted=start)
            assert call.hash in committee.operation  # the second stood in and opened it
            assert committee.operation[call.hash].depositor == bytes(second.public_key)

    trio.run(scenario)
    assert duties[bytes(third.public_key)].grace.seconds <= 2 * ROLE_GRACE
    assert list(duties[bytes(third.public_key)].grace.openings) == []


def test_a_first_signatory_opening_just_under_the_grace_cannot_ratchet_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review M1: a hostile first signatory opening just before the second would stand in
    (just under its grace, so nobody does) made that a sample, doubled: the grace doubled
    every batch up to :data:`GRACE_MAX`, and so did the delay it can put on every batch it
    opens. A sample is no longer multiplied: five such batches leave the grace where it was."""
    hostile, second, _, batches = _first_down_batches()
    committee = _Committee(monkeypatch)
    node, duty = _Node(), DeliveryDuty()
    graces = []

    async def scenario() -> None:
        for n in range(5):
            call = batches[n % len(batches)]
            committee.operation.clear()
            committee.opening.clear()
            duty.first_seen.clear()
            start = 100.0 * n
            committee.open_at(call, start + duty.grace.seconds - 0.5, hostile)
            for tick in range(0, 4 * int(GRACE_MAX)):
                committee.now = start + tick / 4
                await _act(node, second, call, duty, committee.now, sighted=start)
                if call.hash in committee.operation:
                    break  # seen open (and executed: the second is the executor now)
            assert committee.opening[call.hash][1] == hostile  # the second never stood in
            graces.append(duty.grace.seconds)

    trio.run(scenario)
    assert [function for function, _ in node.submitted] == ["as_multi"] * 5
    assert graces == [ROLE_GRACE] * 5


def _landing(monkeypatch: pytest.MonkeyPatch, outcomes: list[bool]) -> None:
    """``wait_landed`` stand-in: each wait lands (True) or times out (False), in turn."""

    async def wait_landed(client: Any, submitted: Submitted, **_: Any) -> Included:
        if not outcomes.pop(0):
            raise AdapterError("as_multi not included within 60 s")
        return Included(b"\xbb" * 32, 9, 1, submitted.extrinsic_hash, 0, True, None, ())

    monkeypatch.setattr(approval, "wait_landed", wait_landed)


async def _execute(node: _Node, keypair: Keypair, call: Call, duty: DeliveryDuty) -> bool:
    """Execute ``call`` (open: our turn) and wait for it, as an attester without a pipeline."""
    return await _act_on(
        cast(SubstrateClient, node),
        CHAIN,
        keypair,
        _round_setup(1)[2][0][1],  # a proposal of one message (its name is logged)
        call,
        state=AttesterState(),
        duty=duty,
        now=1.0,
    )


def test_a_lying_estimate_is_refused_at_zero_and_never_outlives_its_execution(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review L1: a node that once answers a wrong weight had it reused for every later
    execution of the same call (a re-proposal, a relayer restart) while a live proposal
    batched it; a weight of 0 was taken too. Now 0 is refused (ahead: one count, asked no
    more; at the execution: nothing submitted), and an estimate goes when its execution
    settles or its wait fails: the next execution asks the node afresh."""
    keypair, call = _ranked(1)
    operation = _operations(monkeypatch)
    _landing(monkeypatch, [False, True, True])
    node, duty, state = _Node(), DeliveryDuty(), AttesterState()
    node.weight = 0

    async def scenario() -> None:
        await _act(node, keypair, call, duty, 0.5, state=state)  # rank 0's turn: weigh ahead
        await _act(node, keypair, call, duty, 0.75, state=state)  # the next poll
        assert node.estimates == [call.hash] and state.errors == 1  # refused once, not kept
        assert duty.fees == {}
        operation[call.hash] = _opened_by(_opener(call))
        with pytest.raises(AdapterError, match="at 0"):
            await _execute(node, keypair, call, duty)  # asked afresh, refused again
        assert node.submitted == []
        node.weight = 7  # a wrong weight, once: the execution's wait fails
        with pytest.raises(AdapterError, match="not included"):
            await _execute(node, keypair, call, duty)
        node.weight = WEIGHT  # re-proposed: the node answers honestly now
        assert await _execute(node, keypair, call, duty)
        assert await _execute(node, keypair, call, duty)  # and again: asked again
        assert duty.fees == {}

    trio.run(scenario)
    assert [params["max_weight"] for _, params in node.submitted] == [7, WEIGHT, WEIGHT]
    assert len(node.estimates) == 5


def test_an_estimate_made_under_another_runtime_is_never_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review L1: an estimate made ahead under the old runtime, the operation opened after an
    upgrade that raised weights: the execution took the old weight (a paid
    ``MaxWeightTooLow``), for up to a minute until the sizing read the spec version again.
    Now each estimate names its spec version, and the execution uses none of another."""
    keypair, call = _ranked(1)
    operation = _operations(monkeypatch)
    node, duty = _Node(), DeliveryDuty()

    async def scenario() -> None:
        await _act(node, keypair, call, duty, 0.5)  # weighed ahead under spec version 1
        assert node.estimates == [call.hash]
        node.version, node.weight = 2, 2 * WEIGHT  # the runtime upgraded; weights rose
        operation[call.hash] = _opened_by(_opener(call))
        await _act(node, keypair, call, duty, 1.0)

    trio.run(scenario)
    [(function, params)] = node.submitted
    assert function == "as_multi" and params["max_weight"] == 2 * WEIGHT
    assert node.estimates == [call.hash, call.hash]


class _Unweighable(_SlowBlocks):
    """A node whose fee estimate times out; :attr:`events` is what it was asked, in order."""

    def __init__(self, keypair: Keypair, others: list[bytes], multisig: bytes) -> None:
        super().__init__(keypair, others, build=0.0)
        self.events: list[str] = []
        self.multisig = multisig  # the configured one (the test's settings, not the keys')

    async def estimate_fee(self, keypair: Keypair, call: Call) -> Fee:
        self.events.append("estimate")
        raise AdapterError("payment_queryInfo on ws://stand-in:9944: timed out")

    async def submit(self, keypair: Any, module: str, function: str, params: Any, **kw: Any) -> Any:
        self.events.append(function)
        return await super().submit(keypair, module, function, params, **kw)

    async def wait_included(self, submitted: Submitted, **_: Any) -> Any:
        """The opening's block, its ``NewMultisig`` naming the operation it opened (the call
        hash of the submission: ``outcomes`` counts no event about another operation)."""
        included = await super().wait_included(submitted)
        call_hash = self.submitted[submitted.nonce - 1]
        [event] = included.events
        about = {"multisig": to_hex(self.multisig), "call_hash": to_hex(call_hash)}
        return dataclasses.replace(included, events=(dataclasses.replace(event, attributes=about),))


def test_weighing_ahead_waits_for_the_due_submissions_and_a_failure_is_no_warning_per_poll(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Review L3: the weigh-ahead ran inline, so our due opening of a batch later in the store
    waited behind a ``payment_queryInfo`` for a batch that was not our turn yet; and a failing
    one was a warning and an error counted every poll. Now it runs after the round's due
    submissions, and a failure is one info line and one count per call."""
    keypair, chain, pending, batches = _round_setup(8)
    me = bytes(keypair.public_key)
    settings = chain.settings()

    def ranked(rank: int) -> Any:
        return next(
            entry
            for entry in pending
            if _rank(settings, batches[(entry[0].name, entry[1].created)].hash, me, frozenset())
            == rank
        )

    ahead, due = ranked(1), ranked(0)  # store order: the one to weigh first, then our turn

    _operations(monkeypatch)  # none is open
    node = _Unweighable(keypair, [s for s in settings.signatories if s != me], settings.multisig)
    duty, state = DeliveryDuty(), AttesterState()

    def a_round(entries: list[Any]) -> None:
        trio.run(
            partial(
                _a_round,
                node,
                keypair,
                chain,
                entries,
                (budget_for(ROCOCO), HONEST),
                batches=batches,
                done=set(),
                duty=duty,
                state=state,
            )
        )

    with caplog.at_level(logging.INFO, logger="passerelle.attester"):
        a_round([ahead, due])
        assert node.events == ["approve_as_multi", "estimate"]
        a_round([ahead])  # the next poll: not asked again, not counted again
    assert node.events == ["approve_as_multi", "estimate"]
    assert state.errors == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("weighing 0x" in r.getMessage() for r in caplog.records)


def test_the_ceiling_over_the_sustained_span_counts_that_spans_own_blocks() -> None:
    """Review L5: the per-batch ceilings assume equal batches at the median full build, while
    the sustained span holds only the later batches, whatever their sizes. With batches of
    494/494/494/18 the span holds two full blocks and a small one, and the sustained rate came
    out above the "overlapped" ceiling. The span's own ceiling counts those very blocks, each
    at its own build time (chopsticks' log), back to back."""
    sizes = {13: 494, 14: 494, 15: 494, 16: 18}
    builds = {13: 1.49, 14: 1.49, 15: 1.49, 16: 0.3}
    burst = HubResult(HubPhase("burst", from_hub=False, messages=sum(sizes.values())))
    appeared = {13: 20.0, 14: 22.2, 15: 24.4, 16: 25.4}  # as the head watcher saw them
    burst.blocks = [
        HubBlock(n, appeared[n], ["as_multi: executed, 1 delivered"], [], build=b)
        for n, b in builds.items()
    ]
    nonce = 0
    for block, size in sizes.items():
        for _ in range(size):
            burst.delivery_block[nonce] = block
            burst.delivered_time[nonce] = appeared[block]
            nonce += 1
    outcome = HubOutcome(floor=Floor(appeared=[0.7], builds=[0.2]), batch_messages=494)
    span, sustained = sustained_ceiling(burst), burst.sustained
    assert span is not None and sustained is not None
    assert span == pytest.approx((494 + 494 + 18) / (1.49 + 1.49 + 0.3))
    assert sustained == pytest.approx(1006 / 5.4)
    assert sustained < span  # like for like: below its own span's ceiling
    overlapped = {name: rate for name, rate, _ in hub_ceilings(outcome, burst)}
    assert sustained > overlapped["chopsticks' own, openings overlapped"]  # the old pair
    burst.blocks[2].build = None  # a block the log did not time: no figure, not a guess
    assert sustained_ceiling(burst) is None


def test_a_batch_proposed_again_after_its_operation_was_cancelled_is_opened_in_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The unopened operation's clock (``first_seen[(hash, None)]``) was never reset: once the
    operation was cancelled (stale) and the same batch proposed again (a re-publish, a relayer
    restart), every rank's opening turn was long past, and all signatories opened at once —
    all but one paying a failed ``NoTimepoint``. Now the clock goes once the operation is seen
    open, and the new proposal's first read starts the turns again: the last-ranked signatory
    waits its two graces."""
    _, call = _ranked(0)
    last = _third(call)
    committee = _Committee(monkeypatch)
    node, duty = _Node(), DeliveryDuty()

    async def scenario() -> None:
        await _act(node, last, call, duty, 0.0, sighted=0.0)
        committee.open_at(call, 1.0, _opener(call))
        committee.now = 1.0
        await _act(node, last, call, duty, 1.0, sighted=0.0)  # seen open, executed by others
        committee.operation.clear()  # cancelled as stale
        committee.opening.clear()
        committee.now = 400.0  # proposed again, read now
        await _act(node, last, call, duty, 400.0, sighted=400.0)
        assert committee.opening == {}  # before: opened at once, racing the first signatory
        committee.now = 400.0 + 2 * duty.grace.seconds + 0.5
        await _act(node, last, call, duty, committee.now, sighted=400.0)
        assert committee.opening[call.hash][1] == bytes(last.public_key)  # the first is down

    trio.run(scenario)
