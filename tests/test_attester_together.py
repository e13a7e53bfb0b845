"""An attester's multisig calls submitted together (issue #12): what each call of one extrinsic
did (``adapters.substrate.multisig.outcomes``), how a round's calls are cut into extrinsics
(``Pipeline.together``), submitted (``Pipeline.flush``) and waited for once (``Landing``),
the round's two submission points (``_round``), and an opening that never ran giving its
count back (``DeliveryDuty.not_opened``).

Unit tests: the node is a stand-in that takes submissions (what a real Asset Hub does with
them is pinned by tests/test_multisig_together.py, on chopsticks).

What someone who wants to hurt us can try, and what each test pins:

* a node lying in events claims a call of ours ran, with an event about another call hash or
  another multisig, under another name or pallet, or with attributes that are no account →
  the call did not run (it is retried, its opening's count given back);
* a node sends a ``Utility.BatchInterrupted`` whose index is out of range, negative, a bool
  or not a number, or sends two → no call without its own event is taken to have run;
* a node refuses a submission → nothing more is submitted (the nonce is in doubt), one error
  is counted, and every call of that extrinsic is told it did not go out.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from functools import partial
from types import SimpleNamespace
from typing import Any, cast

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st
from substrateinterface import Keypair
from test_substrate_batching import HONEST, ROCOCO, _a_round, _round_setup, _StandInClient

from adapters.errors import AdapterError
from adapters.substrate import multisig as multisig_module
from adapters.substrate.client import (
    Call,
    Fee,
    Included,
    Submitted,
    SubstrateClient,
    SubstrateEvent,
)
from adapters.substrate.multisig import (
    MAX_CALLS_TOGETHER,
    NOT_RUN,
    ExtrinsicLimits,
    MultisigCall,
    OpenOperation,
    Timepoint,
    outcomes,
)
from light_clients.hexstr import to_hex
from relayer.attester import AttesterState
from relayer.checkpoints import CheckpointStoreError
from relayer.families.substrate import approval
from relayer.families.substrate.approval import (
    CALL_WRAPPER_BYTES,
    MAX_OPENS_PER_CALL,
    TOGETHER_ENVELOPE_BYTES,
    DeliveryDuty,
    Landing,
    Pipeline,
    Queued,
    _rank,
)
from relayer.families.substrate.batching import (
    EXECUTION_LENGTH_OVERHEAD,
    EXECUTION_WEIGHT_SHARE,
    budget_for,
)

MULTISIG = b"\x4d" * 32
ELSEWHERE = b"\x4e" * 32
OWN = {
    "approve_as_multi": ("NewMultisig", "MultisigApproval"),
    "as_multi": ("NewMultisig", "MultisigApproval", "MultisigExecuted"),
}
"""What shows a call of ours ran (adapters.substrate.multisig._OWN_EVENTS, written out again)."""
FUNCTIONS = tuple(OWN)


def _event(
    name: str, call_hash: bytes, multisig: bytes = MULTISIG, pallet: str = "Multisig"
) -> SubstrateEvent:
    """A ``pallet.name`` event about the operation (``multisig``, ``call_hash``)."""
    attributes = {"multisig": to_hex(multisig), "call_hash": to_hex(call_hash)}
    return SubstrateEvent(2, pallet, name, attributes)


def _interrupted(index: object, error: str = "Multisig.NoTimepoint") -> SubstrateEvent:
    return SubstrateEvent(2, "Utility", "BatchInterrupted", {"index": index}, error=error)


def _included(
    events: Sequence[SubstrateEvent], success: bool = True, error: str | None = None
) -> Included:
    return Included(b"\xbb" * 32, 9, 2, b"\xee" * 32, 0, success, error, tuple(events))


def _ran(call: MultisigCall, events: Sequence[SubstrateEvent], multisig: bytes = MULTISIG) -> bool:
    """Does ``events`` hold one of ``call``'s own events about its operation (the model)?"""
    own = (to_hex(multisig), to_hex(call.call_hash))
    return any(
        e.pallet == "Multisig"
        and e.name in OWN[call.function]
        and isinstance(e.attributes, dict)
        and (e.attributes.get("multisig"), e.attributes.get("call_hash")) == own
        for e in events
    )


CALLS = st.lists(
    st.tuples(st.sampled_from(FUNCTIONS), st.binary(min_size=32, max_size=32)),
    min_size=1,
    max_size=MAX_CALLS_TOGETHER,
    unique_by=lambda pair: pair[1],
).map(lambda pairs: [MultisigCall(f, {"call_hash": h}, h) for f, h in pairs])


# --------------------------------------------------------------------------- outcomes


@given(CALLS, st.data())
def test_an_honest_batch_ran_up_to_the_interrupted_call_and_nothing_after(
    calls: list[MultisigCall], data: st.DataObject
) -> None:
    """Every call before the interruption has its own event: it ran (None); the interrupted
    call fails with the event's error; every call after it did not run (:data:`NOT_RUN`).
    Without an interruption every call ran."""
    stop = data.draw(st.integers(0, len(calls)), label="interrupted at")
    events = [
        _event(data.draw(st.sampled_from(OWN[call.function])), call.call_hash)
        for call in calls[:stop]
    ]
    if stop < len(calls):
        events.append(_interrupted(stop, "Multisig.AlreadyApproved"))
    reasons = outcomes(_included(events), calls, MULTISIG)
    assert reasons[:stop] == [None] * stop
    if stop < len(calls):
        assert reasons[stop] == "Multisig.AlreadyApproved"
        assert all(r is not None and r.startswith(NOT_RUN) for r in reasons[stop + 1 :])


HOSTILE_INDEX = st.one_of(
    st.integers(-3, MAX_CALLS_TOGETHER + 3),
    st.booleans(),
    st.none(),
    st.text(max_size=2),
    st.floats(allow_nan=True),
)


@given(CALLS, st.data())
def test_whatever_a_node_says_no_call_without_its_own_event_ran(
    calls: list[MultisigCall], data: st.DataObject
) -> None:
    """Any events a node can send — own events of some calls, events about another multisig,
    another call hash, under another name or pallet, any number of ``BatchInterrupted`` with
    any index — a call is only ever taken to have run (None) if one of its own events about
    its operation is there. An interruption we cannot place (not exactly one, its index no
    int in range, or a bool) fails every call without its own event, and names none NOT_RUN."""
    hashes = [c.call_hash for c in calls] + [ELSEWHERE]
    noise = st.builds(
        _event,
        st.sampled_from(("NewMultisig", "MultisigApproval", "MultisigExecuted", "Cancelled")),
        st.sampled_from(hashes) | st.binary(min_size=32, max_size=32),
        st.sampled_from((MULTISIG, ELSEWHERE)),
        st.sampled_from(("Multisig", "Utility", "System")),
    )
    events = data.draw(st.lists(noise | st.builds(_interrupted, HOSTILE_INDEX), max_size=12))
    reasons = outcomes(_included(events), calls, MULTISIG)
    assert len(reasons) == len(calls)
    for call, reason in zip(calls, reasons, strict=True):
        if reason is None:
            assert _ran(call, events)
    interruptions = [e for e in events if (e.pallet, e.name) == ("Utility", "BatchInterrupted")]
    index = interruptions[0].attributes["index"] if len(interruptions) == 1 else None
    placeable = type(index) is int and 0 <= index < len(calls)
    if interruptions and not placeable:
        assert [r is None for r in reasons] == [_ran(c, events) for c in calls]
        assert not any(r is not None and r.startswith(NOT_RUN) for r in reasons)


@given(CALLS, st.data())
def test_an_event_about_another_operation_never_counts(
    calls: list[MultisigCall], data: st.DataObject
) -> None:
    """Each call's own events, but about another multisig, or about another call hash (one
    of the other calls' or any), or from another pallet: no call ran."""
    events = []
    for call in calls:
        name = data.draw(st.sampled_from(OWN[call.function]))
        other = data.draw(st.binary(min_size=32, max_size=32).filter(call.call_hash.__ne__))
        events += [
            _event(name, call.call_hash, ELSEWHERE),
            _event(name, other),
            _event(name, call.call_hash, pallet="Utility"),
        ]
    events = [e for e in events if not any(_ran(c, [e]) for c in calls)]  # another call's own
    reasons = outcomes(_included(events), calls, MULTISIG)
    assert all(reason is not None for reason in reasons)


@given(CALLS, st.data())
def test_a_failed_extrinsic_fails_every_call(
    calls: list[MultisigCall], data: st.DataObject
) -> None:
    """``System.ExtrinsicFailed`` (a lone call that failed, or the batch itself): whatever
    events come with it, no call ran, each with the extrinsic's error."""
    events = [_event(data.draw(st.sampled_from(OWN[c.function])), c.call_hash) for c in calls]
    error = data.draw(st.sampled_from(("Multisig.NoTimepoint", None)))
    reasons = outcomes(_included(events, success=False, error=error), calls, MULTISIG)
    assert reasons == [error or "the extrinsic failed"] * len(calls)


A, B, C = (MultisigCall("approve_as_multi", {}, bytes([n]) * 32) for n in (0xA, 0xB, 0xC))


def test_a_node_claiming_a_call_ran_with_an_event_about_another_hash_is_not_believed() -> None:
    """Two openings in one extrinsic; the node shows A's ``NewMultisig`` twice and nothing
    about B (or about B under another multisig): B did not run. An execution "shown" by
    another call's ``MultisigExecuted`` did not run either."""
    reasons = outcomes(
        _included(
            [_event("NewMultisig", A.call_hash)] * 2
            + [_event("NewMultisig", B.call_hash, ELSEWHERE)]
        ),
        [A, B],
        MULTISIG,
    )
    assert reasons == [None, f"no Multisig event about 0x{B.call_hash.hex()} in the extrinsic"]
    execution = MultisigCall("as_multi", {}, C.call_hash)
    shown = _included([_event("MultisigExecuted", A.call_hash)])
    assert outcomes(shown, [execution], MULTISIG) != [None]
    # An opening is not "run" by an execution's event name either.
    assert outcomes(_included([_event("MultisigExecuted", A.call_hash)]), [A], MULTISIG) != [None]


@pytest.mark.parametrize(
    "interruptions",
    [
        [_interrupted(3)],  # out of range: there are 3 calls
        [_interrupted(-1)],  # negative: Python would place it at the last call
        [_interrupted(True)],  # a bool is an int in Python: it would be call 1
        [_interrupted("1")],
        [_interrupted(1), _interrupted(2)],  # two: which one?
        [SubstrateEvent(2, "Utility", "BatchInterrupted", ["index", 1])],  # no attributes
    ],
)
def test_an_interruption_that_cannot_be_placed_runs_nothing_without_its_event(
    interruptions: list[SubstrateEvent],
) -> None:
    """A opened (its event is there), B and C have none: whatever index the node gives, B
    and C did not run — and neither is NOT_RUN (we do not know the batch stopped before it)."""
    reasons = outcomes(
        _included([_event("NewMultisig", A.call_hash), *interruptions]), [A, B, C], MULTISIG
    )
    assert reasons[0] is None
    assert reasons[1:] == [
        f"no Multisig event about 0x{call.call_hash.hex()} in the extrinsic" for call in (B, C)
    ]


@pytest.mark.parametrize(
    "attributes",
    [
        ["multisig", "call_hash"],
        {"multisig": "not an account", "call_hash": to_hex(A.call_hash)},
        {"multisig": to_hex(MULTISIG), "call_hash": to_hex(A.call_hash[:31])},
        {"multisig": to_hex(MULTISIG), "call_hash": A.call_hash},  # bytes, not 0x-hex
        {"multisig": to_hex(MULTISIG)},
    ],
)
def test_a_malformed_event_is_about_nothing_of_ours(attributes: Any) -> None:
    """Attributes that are no dict, no account or no 32-byte 0x-hex call hash: about nothing
    (and no exception out of ``outcomes``)."""
    event = SubstrateEvent(2, "Multisig", "NewMultisig", attributes)
    assert outcomes(_included([event]), [A], MULTISIG) != [None]


# --------------------------------------------------------------------------- together


async def _never(landing: Landing, index: int) -> bool:
    raise AssertionError("not settled in this test")


def _queued(n: int, function: str, weight: int = 0, length: int = 0, **holds: Any) -> Queued:
    call_hash = n.to_bytes(32, "big")
    call = MultisigCall(function, {"call_hash": call_hash}, call_hash)
    return Queued(f"p{n}", (f"p{n}", float(n)), call, _never, weight, length, **holds)


def _limits(pipeline: Pipeline) -> tuple[int, int]:
    share, whole = EXECUTION_WEIGHT_SHARE
    return pipeline.block_weight * share // whole, pipeline.block_length - TOGETHER_ENVELOPE_BYTES


def _fits(pipeline: Pipeline, group: Sequence[Queued]) -> bool:
    weight_limit, length_limit = _limits(pipeline)
    return (
        len(group) <= MAX_CALLS_TOGETHER
        and sum(q.weight for q in group) <= weight_limit
        and sum(q.length + CALL_WRAPPER_BYTES for q in group) <= length_limit
    )


@given(
    st.integers(10**6, 10**13),
    st.integers(EXECUTION_LENGTH_OVERHEAD + 1, 5 * 10**6),
    st.data(),
)
def test_together_cuts_executions_first_into_the_fewest_extrinsics_that_fit(
    weight: int, length: int, data: st.DataObject
) -> None:
    """Any queue under any chain's limits: every call in exactly one group, executions first
    and otherwise in the queue's order; each group of more than one call within the count,
    weight and length limits, and no group could have taken the next group's first call
    (approvals count no weight: theirs fits in the 10 % a batch leaves free, measured in
    tests/test_multisig_together.py)."""
    budget = budget_for(ExtrinsicLimits(weight=weight, length=length))
    pipeline = Pipeline.for_budget(budget)
    specs = data.draw(
        st.lists(
            st.tuples(
                st.sampled_from(FUNCTIONS),
                st.integers(0, budget.weight) | st.just(budget.weight),
                st.integers(0, budget.length) | st.just(budget.length),
            ),
            max_size=3 * MAX_CALLS_TOGETHER,
        )
    )
    queued = [
        _queued(n, f, w if f == "as_multi" else 0, ln if f == "as_multi" else 0)
        for n, (f, w, ln) in enumerate(specs)
    ]
    groups = pipeline.together(queued)
    flat = [q for group in groups for q in group]
    expected = [q for q in queued if q.call.function == "as_multi"]
    expected += [q for q in queued if q.call.function != "as_multi"]
    assert [id(q) for q in flat] == [id(q) for q in expected]  # nothing lost or doubled
    for group in groups:
        assert group and (len(group) == 1 or _fits(pipeline, group))
    for group, after in itertools.pairwise(groups):
        assert not _fits(pipeline, [*group, after[0]])  # the fewest: none cut too soon


def test_together_in_numbers() -> None:
    """On Rococo Asset Hub's limits: executions go first; nine openings are eight and one; a
    whole-budget execution takes one opening along (the extrinsic's own bytes were reserved
    for it, less than they were), the next opening goes in the next extrinsic; two executions
    of 60 % of a batch's weight each go apart."""
    budget = budget_for(ROCOCO)
    pipeline = Pipeline.for_budget(budget)
    mixed = [_queued(0, "approve_as_multi"), _queued(1, "approve_as_multi")]
    mixed += [
        _queued(2, "as_multi", 10),
        _queued(3, "approve_as_multi"),
        _queued(4, "as_multi", 10),
    ]
    assert [[q.name for q in g] for g in pipeline.together(mixed)] == [
        ["p2", "p4", "p0", "p1", "p3"]
    ]
    nine = [_queued(n, "approve_as_multi") for n in range(9)]
    assert [len(g) for g in pipeline.together(nine)] == [8, 1]
    whole = _queued(9, "as_multi", budget.weight, budget.length)
    assert pipeline.together([whole]) == [[whole]]
    assert pipeline.together([*nine[:2], whole]) == [[whole, nine[0]], [nine[1]]]
    heavy = [_queued(n, "as_multi", budget.weight * 6 // 10, 100) for n in range(2)]
    assert [len(g) for g in pipeline.together(heavy)] == [1, 1]
    assert pipeline.together([]) == []


# --------------------------------------------------------------------------- flush and landing


KEYPAIR = Keypair.create_from_uri("//Together")
CHAIN = cast(Any, SimpleNamespace(name="assethub"))


def _carried(module: str, function: str, params: Any) -> list[tuple[str, bytes]]:
    """The calls an extrinsic of ours carries, as (function, call hash)."""
    if (module, function) == ("Utility", "batch"):
        calls = [(c["call_function"], c["call_args"]) for c in params["calls"]]
    else:
        calls = [(function, params)]
    return [
        (f, args["call_hash"] if "call_hash" in args else args["call"].hash) for f, args in calls
    ]


class _Node:
    """Takes submissions (refusing the ``refuse``-th ones); :attr:`extrinsics`: the calls each
    carried."""

    url = "ws://stand-in:9944"

    def __init__(self, refuse: frozenset[int] = frozenset()) -> None:
        self.refuse = refuse
        self.attempts = 0
        self.extrinsics: list[list[tuple[str, bytes]]] = []

    def weight_arg(self, ref_time: int, proof_size: int = 0) -> int:
        return ref_time

    async def submit(self, keypair: Any, module: str, function: str, params: Any, **kw: Any) -> Any:
        assert kw == {"wait_for_inclusion": False}
        self.attempts += 1
        if self.attempts in self.refuse:
            raise AdapterError("author_submitExtrinsic on ws://stand-in:9944: Invalid Transaction")
        self.extrinsics.append(_carried(module, function, params))
        return Submitted(bytes([self.attempts]) * 32, b"", self.attempts, 1, 64)


def _queue(
    pipeline: Pipeline, n: int, function: str, told: dict[int, list[bool]], **holds: Any
) -> None:
    """Queue call ``n`` for proposal ``p{n}``; what its ``submitted`` is told goes to ``told``."""
    call_hash = n.to_bytes(32, "big")
    told[n] = []
    pipeline.for_proposal(f"p{n}", (f"p{n}", float(n))).queue(
        MultisigCall(function, {"call_hash": call_hash}, call_hash),
        _never,
        submitted=told[n].append,
        **holds,
    )


async def _flush(pipeline: Pipeline, node: _Node, state: AttesterState) -> None:
    await pipeline.flush(cast(SubstrateClient, node), KEYPAIR, MULTISIG, chain=CHAIN, state=state)


def test_a_flush_sends_one_extrinsic_waited_for_once_and_each_call_gets_its_own_outcome(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two openings and an execution queued: one ``Utility.batch``, the execution first; one
    wait for it (``wait_landed`` once, however many calls ask); each call's wait holds what
    it held when queued, and gets its own outcome — the execution and an opening ran, the
    other opening was interrupted."""
    pipeline, node, state = Pipeline.for_budget(budget_for(ROCOCO)), _Node(), AttesterState()
    told: dict[int, list[bool]] = {}
    _queue(pipeline, 1, "approve_as_multi", told, opened=1)
    _queue(pipeline, 2, "approve_as_multi", told, opened=1)
    _queue(pipeline, 3, "as_multi", told, weight=5, length=10)
    waited: list[Submitted] = []
    got: dict[bytes, str | None] = {}

    async def wait_landed(client: Any, submitted: Submitted, **_: Any) -> Included:
        waited.append(submitted)
        await trio.sleep(0)  # the other waits ask meanwhile
        h = [n.to_bytes(32, "big") for n in (1, 2, 3)]
        events = [_event("MultisigExecuted", h[2]), _event("NewMultisig", h[0])]
        return _included([*events, _interrupted(2, "Multisig.AlreadyApproved")])

    async def settle(landing: Landing, index: int) -> bool:
        _, failure = await landing.outcome(index)
        got[landing.calls[index].call_hash] = failure
        return failure is None

    pipeline.queued = [
        Queued(q.name, q.key, q.call, settle, q.weight, q.length, q.opened, q.submitted)
        for q in pipeline.queued
    ]
    monkeypatch.setattr(approval, "wait_landed", wait_landed)
    done: set[tuple[str, float]] = set()

    async def scenario() -> None:
        await _flush(pipeline, node, state)
        assert node.extrinsics == [
            [("as_multi", (3).to_bytes(32, "big"))]
            + [("approve_as_multi", n.to_bytes(32, "big")) for n in (1, 2)]
        ]
        assert told == {1: [True], 2: [True], 3: [True]} and pipeline.queued == []
        holds = [(w.name, w.call[-1], w.weight, w.length, w.opened) for w in pipeline.settles]
        assert holds == [("p3", 3, 5, 10, 0), ("p1", 1, 0, 0, 1), ("p2", 2, 0, 0, 1)]
        assert not await pipeline.settle(done, state)

    trio.run(scenario)
    assert len(waited) == 1
    assert got == {
        (3).to_bytes(32, "big"): None,
        (1).to_bytes(32, "big"): None,
        (2).to_bytes(32, "big"): "Multisig.AlreadyApproved",
    }
    assert done == {("p3", 3.0), ("p1", 1.0)}


@pytest.mark.parametrize("refused", [1, 2])
def test_a_refused_submission_halts_the_flush_and_counts_one_error(refused: int) -> None:
    """Nine openings: two extrinsics (eight and one). The node refuses the ``refused``-th:
    one error counted, the pipeline halted, every call of that extrinsic told it did not go
    out; nothing is submitted after it (those calls are dropped, untold: never tried); what
    went out before it is waited for."""
    pipeline, node, state = (
        Pipeline.for_budget(budget_for(ROCOCO)),
        _Node(frozenset({refused})),
        AttesterState(),
    )
    told: dict[int, list[bool]] = {}
    for n in range(9):
        _queue(pipeline, n, "approve_as_multi", told, opened=1)
    trio.run(_flush, pipeline, node, state)
    assert node.attempts == refused and pipeline.halted and state.errors == 1
    first, second = list(range(8)), [8]
    if refused == 1:
        assert [told[n] for n in first] == [[False]] * 8 and told[8] == []
        assert node.extrinsics == [] and pipeline.settles == []
        # Refused together: each of them goes alone from now on (review REVIEW1 L1: the same
        # group, refused every round, would wedge them all), the one never tried does not.
        assert pipeline.alone == {n.to_bytes(32, "big") for n in first}
    else:
        assert [told[n] for n in first] == [[True]] * 8 and [told[n] for n in second] == [[False]]
        assert len(node.extrinsics) == 1 and [w.name for w in pipeline.settles] == [
            f"p{n}" for n in first
        ]
        assert pipeline.alone == set()  # a lone call refused: nothing to split
    assert pipeline.queued == []  # decided afresh in a later round


def test_a_flush_when_halted_already_submits_nothing() -> None:
    """A wait of an earlier round failed (the shared halt is up): nothing is submitted, no
    call is told anything (none was tried: an execution keeps its weight estimate), and it is
    no error of this round's."""
    pipeline, node, state = Pipeline.for_budget(budget_for(ROCOCO)), _Node(), AttesterState()
    told: dict[int, list[bool]] = {}
    for n in range(3):
        _queue(pipeline, n, "approve_as_multi", told)
    pipeline.halt.raised = True
    trio.run(_flush, pipeline, node, state)
    assert node.attempts == 0 and state.errors == 0 and pipeline.settles == []
    assert told == {0: [], 1: [], 2: []}


def _landing(calls: int = 3) -> Landing:
    return Landing(
        cast(SubstrateClient, _Node()),
        Submitted(b"\xee" * 32, b"", 1, 1, 64),
        tuple(MultisigCall("approve_as_multi", {}, bytes([n]) * 32) for n in range(calls)),
        MULTISIG,
    )


def test_a_failed_wait_fails_every_call_of_the_extrinsic(monkeypatch: pytest.MonkeyPatch) -> None:
    """The extrinsic was not included (dropped, timed out): each of its calls' waits raises
    the same AdapterError, from one wait."""
    waits: list[Submitted] = []

    async def wait_landed(client: Any, submitted: Submitted, **_: Any) -> Included:
        waits.append(submitted)
        await trio.sleep(0)
        raise AdapterError("extrinsic 0xee… not included within 60 s")

    monkeypatch.setattr(approval, "wait_landed", wait_landed)
    landing, raised = _landing(), []

    async def one(index: int) -> None:
        with pytest.raises(AdapterError, match="not included") as caught:
            await landing.outcome(index)
        raised.append(str(caught.value))

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            for index in range(3):
                nursery.start_soon(one, index)

    trio.run(scenario)
    assert len(waits) == 1 and len(raised) == 3 and len(set(raised)) == 1


def test_a_cancelled_first_waiter_leaves_no_other_waiting_for_ever(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The call whose wait asked the node first is cancelled (its round torn down): the waits
    of the other calls sharing the extrinsic end with an AdapterError instead of waiting on
    an answer nobody will give; so does a wait that asks afterwards."""

    async def wait_landed(client: Any, submitted: Submitted, **_: Any) -> Included:
        await trio.sleep_forever()
        raise AssertionError

    monkeypatch.setattr(approval, "wait_landed", wait_landed)
    landing, ended = _landing(), []

    async def other(index: int) -> None:
        with pytest.raises(AdapterError, match="cancelled"):
            await landing.outcome(index)
        ended.append(index)

    async def scenario() -> None:
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                first = trio.CancelScope()

                async def asks_first() -> None:
                    with first:
                        await landing.outcome(0)

                nursery.start_soon(asks_first)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(other, 1)
                await trio.testing.wait_all_tasks_blocked()
                first.cancel()
            await other(2)

    trio.run(scenario)
    assert ended == [1, 2]


# --------------------------------------------------------------------------- the round


class _Chain(_StandInClient):
    """An attester's node for a round (no operation open unless a test patches
    ``open_operation``, no item delivered), recording its submissions as :class:`_Node` does;
    ``verified``: when each new proposal's verification started, as the number of extrinsics
    submitted by then."""

    def __init__(self) -> None:
        super().__init__(fail_at=0)
        self.extrinsics: list[list[tuple[str, bytes]]] = []
        self.verified: dict[str, int] = {}

    async def rpc(self, method: str, params: Any = ()) -> Any:
        if method == "state_getRuntimeVersion":  # the runtime an execution's weight is for
            return {"specVersion": 1}
        return await super().rpc(method, params)

    async def estimate_fee(self, keypair: Keypair, call: Call) -> Fee:
        return Fee(partial_fee=1, weight=10**9)

    async def submit(self, keypair: Any, module: str, function: str, params: Any, **kw: Any) -> Any:
        self.extrinsics.append(_carried(module, function, params))
        return Submitted(b"\xee" * 32, b"", len(self.extrinsics), 1, 64)


def _our_turn(duty: DeliveryDuty, batches: dict[tuple[str, float], Call]) -> None:
    for batch in batches.values():
        duty.first_seen[(batch.hash, None)] = 0.0  # every grace long past: ours to open


def _round(
    node: _Chain,
    keypair: Keypair,
    chain: Any,
    pending: list[Any],
    batches: dict[tuple[str, float], Call],
    duty: DeliveryDuty,
    state: AttesterState | None = None,
    settle: bool = False,
    done: set[tuple[str, float]] | None = None,
) -> None:
    trio.run(
        partial(
            _a_round,
            node,
            keypair,
            chain,
            pending,
            (budget_for(ROCOCO), HONEST),
            batches=batches,
            done=set() if done is None else done,
            duty=duty,
            state=AttesterState() if state is None else state,
            settle=settle,
        )
    )


def test_what_is_due_goes_out_before_new_proposals_are_verified_and_their_openings_together(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """p1 is verified already and ours to open; p0, p2 and p3 are new. The round submits p1's
    opening before it starts verifying the new ones (seconds each on a loaded attester), and
    opens the three new ones in the same round, together in one extrinsic at its end."""
    keypair, chain, pending, every = _round_setup(4)
    duty, node = DeliveryDuty(), _Chain()
    _our_turn(duty, every)
    key = {entry[0].name: (entry[0].name, entry[1].created) for entry in pending}
    batches = {key["p1"]: every[key["p1"]]}

    async def verified(_config: Any, _chain: Any, _client: Any, proposal: Any, **_: Any) -> Call:
        name = next(k.name for k, p in pending if p is proposal)
        node.verified[name] = len(node.extrinsics)
        return every[key[name]]

    monkeypatch.setattr(approval, "_verified_batch", verified)
    _round(node, keypair, chain, pending, batches, duty)
    assert node.verified == {"p0": 1, "p2": 1, "p3": 1}  # after p1's opening went out
    opening = "approve_as_multi"
    assert node.extrinsics == [
        [(opening, every[key["p1"]].hash)],
        [(opening, every[key[name]].hash) for name in ("p0", "p2", "p3")],
    ]
    # Nothing due before the first new proposal: no extrinsic then, one at the end.
    fresh, node = DeliveryDuty(), _Chain()
    _our_turn(fresh, every)
    _round(node, keypair, chain, pending, {}, fresh)
    assert node.verified == {"p0": 0, "p1": 0, "p2": 0, "p3": 0}
    assert node.extrinsics == [[(opening, every[key[f"p{n}"]].hash) for n in range(4)]]


def test_an_execution_and_the_openings_of_one_round_go_out_in_one_extrinsic_execution_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """p2's operation is open (another signatory opened it) and ours to execute; p0 and p1 are
    ours to open. One extrinsic: the execution first (should an opening fail, it does not stop
    the batch whose messages are ready), then the openings in the store's order."""
    keypair, chain, pending, batches = _round_setup(4)
    settings, me = chain.settings(), bytes(keypair.public_key)
    duty, node = DeliveryDuty(), _Chain()
    _our_turn(duty, batches)
    hashes = [batches[(k.name, p.created)].hash for k, p in pending]
    # A batch whose executor, once another signatory opened it, is us (the others: openings).
    executed, opener = next(
        (h, s)
        for h in reversed(hashes)
        for s in settings.signatories
        if s != me and _rank(settings, h, me, frozenset({s})) == 0
    )
    operation = OpenOperation(Timepoint(7, 1), frozenset({opener}), opener)

    async def open_operation(client: Any, multisig: bytes, call_hash: bytes) -> Any:
        return operation if call_hash == executed else None

    monkeypatch.setattr(approval, "open_operation", open_operation)
    _round(node, keypair, chain, pending, batches, duty)
    openings = [("approve_as_multi", h) for h in hashes if h != executed]
    assert executed != hashes[0]  # the store's order alone would not put it first
    assert node.extrinsics == [[("as_multi", executed), *openings]]


# --------------------------------------------------------------------------- not_opened


def test_not_opened_takes_back_one_count_and_never_goes_below_none() -> None:
    duty, h = DeliveryDuty(), b"\x07" * 32
    duty.opened(h)
    duty.opened(h)
    duty.not_opened(h)
    assert duty.opens == {h: 1}
    duty.not_opened(h)
    assert duty.opens == {}
    duty.not_opened(h)  # a count we never had is not made negative (nor one to spare)
    assert duty.opens == {}


def test_only_an_opening_that_never_ran_gives_its_count_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One opening left of :data:`MAX_OPENS_PER_CALL` for each of two calls, opened together.
    The first fails in its block (a lost race, as a node hiding the open operation can make
    it look every round): a paid attempt, so its count stays and it is not opened a third
    time. The second never ran (the batch stopped before it): no attempt, no deposit, so its
    count comes back and the next round opens it again (review REVIEW1 M2: giving back every
    failed opening's count let a lying node make us pay for openings without end)."""
    keypair, chain, pending, batches = _round_setup(2)
    duty, node, state = DeliveryDuty(), _Chain(), AttesterState()
    _our_turn(duty, batches)
    first, second = (batches[(k.name, p.created)].hash for k, p in pending)
    for call_hash in (first, second):
        duty.opens[call_hash] = MAX_OPENS_PER_CALL - 1

    async def wait_landed(client: Any, submitted: Submitted, **_: Any) -> Included:
        return _included([_interrupted(0, "Multisig.NoTimepoint")])

    monkeypatch.setattr(approval, "wait_landed", wait_landed)
    _round(node, keypair, chain, pending, batches, duty, state, settle=True)
    assert node.extrinsics == [[("approve_as_multi", first), ("approve_as_multi", second)]]
    assert duty.opens == {first: MAX_OPENS_PER_CALL, second: MAX_OPENS_PER_CALL - 1}
    assert state.errors == 0  # a lost race and a call that did not run: info lines, no halt
    _round(node, keypair, chain, pending, batches, duty, state)
    assert node.extrinsics[1:] == [[("approve_as_multi", second)]]


def test_a_call_whose_last_attempt_failed_goes_alone_until_it_succeeds() -> None:
    """In a ``Utility.batch`` a failing call stops the calls after it: a call that failed in
    its block (a weight our node misjudges, say) would otherwise hold every opening queued
    with it, round after round. So it goes in an extrinsic of its own until it succeeds; a
    call that merely did not run (``NOT_RUN``) is no such call; and what is remembered is
    bounded by the live proposals."""
    duty, call_hash = DeliveryDuty(), (1).to_bytes(32, "big")
    duty.outcome(call_hash, f"{NOT_RUN}: call 0 of the batch before it failed (Multisig.X)")
    assert call_hash not in duty.alone
    duty.outcome(call_hash, "Multisig.MaxWeightTooLow")
    assert call_hash in duty.alone
    pipeline = Pipeline.for_budget(budget_for(ROCOCO))
    pipeline.alone = duty.alone  # as _round hands it in
    queued = [_queued(0, "approve_as_multi"), _queued(1, "as_multi", 10)]
    queued += [_queued(2, "approve_as_multi"), _queued(3, "as_multi", 10)]
    groups = [[q.name for q in group] for group in pipeline.together(queued)]
    assert groups == [["p1"], ["p3", "p0", "p2"]]  # alone, then the rest, executions first
    duty.outcome(call_hash, None)
    assert call_hash not in duty.alone
    duty.outcome(call_hash, "Multisig.MaxWeightTooLow")
    duty.keep_fees({(2).to_bytes(32, "big")})  # its proposal is gone
    assert duty.alone == set()


def test_an_execution_that_never_ran_is_not_done_with(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two executions of ours in one extrinsic; the first fails in its block (another signatory
    executed it first), so the batch stopped and the second never ran. The first is done with
    (its batch was executed); the second is not, and the next round executes it (review
    REVIEW1 M1: it was taken as done, and this attester never executed it again — a stand-in
    paid for it after a grace, or, with that one down, the lane waited for a re-proposal)."""
    keypair, chain, pending, batches = _round_setup(8)
    settings, me = chain.settings(), bytes(keypair.public_key)
    ours = []  # (entry, call hash, the other signatory whose opening makes us its executor)
    for key, proposal in pending:
        call_hash = batches[(key.name, proposal.created)].hash
        opener = next(
            (
                s
                for s in settings.signatories
                if s != me and _rank(settings, call_hash, me, frozenset({s})) == 0
            ),
            None,
        )
        if opener is not None:
            ours.append(((key, proposal), call_hash, opener))
    (entry1, hash1, opener1), (entry2, hash2, opener2) = ours[:2]
    operations = {
        hash1: OpenOperation(Timepoint(7, 1), frozenset({opener1}), opener1),
        hash2: OpenOperation(Timepoint(7, 2), frozenset({opener2}), opener2),
    }

    async def open_operation(client: Any, multisig: bytes, call_hash: bytes) -> Any:
        return operations.get(call_hash)

    async def wait_landed(client: Any, submitted: Submitted, **_: Any) -> Included:
        return _included([_interrupted(0, "Multisig.UnexpectedTimepoint")])

    monkeypatch.setattr(approval, "open_operation", open_operation)
    monkeypatch.setattr(approval, "wait_landed", wait_landed)
    node, duty, state, done = _Chain(), DeliveryDuty(), AttesterState(), set[tuple[str, float]]()

    def a_round() -> None:
        _round(node, keypair, chain, [entry1, entry2], batches, duty, state, True, done)

    a_round()
    assert node.extrinsics == [[("as_multi", hash1), ("as_multi", hash2)]]
    key1, key2 = ((e[0].name, e[1].created) for e in (entry1, entry2))
    assert key1 in done and key2 not in done and state.errors == 0
    # The estimate of the one that never ran is kept for its retry; the other has served.
    assert hash2 in duty.fees and hash1 not in duty.fees
    del operations[hash1]  # executed by the other signatory
    a_round()
    assert node.extrinsics[1:] == [[("as_multi", hash2)]]


def test_a_long_verification_pass_makes_no_stand_in_open_at_a_bursts_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Six new proposals, 1.5 s to verify each (a loaded attester's ~500 messages), no turn
    sampled yet (the grace is its 4 s floor). Timed from when each was read, a turn waited
    for the verifications ahead of it in the round, and this attester, next-ranked for some
    of them, would have stood in for openers that were only verifying (paid ``NoTimepoint``
    failures: review REVIEW2 N1). Timed from its own verification of each, and decided at
    most a slice (:data:`VERIFY_SLICE`) after it, it opens exactly the proposals whose opener
    it is."""
    keypair, chain, pending, every = _round_setup(6)
    settings, me = chain.settings(), bytes(keypair.public_key)
    clock = [1000.0]
    monkeypatch.setattr(
        approval, "time", SimpleNamespace(time=lambda: clock[0], monotonic=lambda: clock[0])
    )

    async def verified(_config: Any, _chain: Any, _client: Any, proposal: Any, **_: Any) -> Call:
        clock[0] += 1.5
        return every[next((k.name, p.created) for k, p in pending if p is proposal)]

    monkeypatch.setattr(approval, "_verified_batch", verified)
    duty, node = DeliveryDuty(), _Chain()
    _round(node, keypair, chain, pending, {}, duty)
    ours = {c.hash for c in every.values() if _rank(settings, c.hash, me, frozenset()) == 0}
    assert ours and len(ours) < len(every)  # the test means something: both kinds are here
    sent = [h for extrinsic in node.extrinsics for _, h in extrinsic]
    assert sent == _in_store_order(pending, every, ours)


def _in_store_order(
    pending: list[Any], every: dict[tuple[str, float], Call], hashes: set[bytes]
) -> list[bytes]:
    ordered = [every[(k.name, p.created)].hash for k, p in pending]
    return [h for h in ordered if h in hashes]


def test_a_node_that_says_every_opening_never_ran_gets_a_bounded_number_of_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An opening that never ran (behind a failed call of our batch) gives its count back —
    on the word of the node's events. A node that says so of every opening of ours (while
    they ran, or while it hides the operation) gets them resubmitted, but only up to
    :data:`MAX_OPEN_ATTEMPTS` in all, never for ever (review REVIEW2 L1)."""
    keypair, chain, pending, batches = _round_setup(2)
    duty, node, state = DeliveryDuty(), _Chain(), AttesterState()
    _our_turn(duty, batches)
    hashes = [batches[(k.name, p.created)].hash for k, p in pending]

    async def never_ran(self: Landing, index: int) -> tuple[Included, str | None]:
        return _included([]), f"{NOT_RUN}: call 0 of the batch before it failed (a lie)"

    monkeypatch.setattr(Landing, "outcome", never_ran)
    for _ in range(3 * approval.MAX_OPEN_ATTEMPTS):
        _round(node, keypair, chain, pending, batches, duty, state, settle=True)
    assert node.extrinsics == [[("approve_as_multi", h) for h in hashes]] * (
        approval.MAX_OPEN_ATTEMPTS
    )
    assert duty.opens == {}  # every count given back: the cap that held is the attempts'


def test_a_failed_wait_is_counted_once_for_the_calls_it_carried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three calls rode in one extrinsic whose wait failed: the nonce is in doubt, so each
    call's wait halts the attester, but it is one failure — one error, one warning line
    (review REVIEW2 L2: it was counted once per call)."""
    in_flight, state, done = approval.InFlight(), AttesterState(), set[tuple[str, float]]()
    pipeline = in_flight.pipeline(budget_for(ROCOCO))

    async def never_lands(client: Any, submitted: Submitted, **_: Any) -> Included:
        raise AdapterError("extrinsic 0x… (nonce 7) not included on ws://stand-in within 120 s")

    async def scenario() -> None:
        calls = tuple(MultisigCall("approve_as_multi", {}, n.to_bytes(32, "big")) for n in range(3))
        landing = Landing(cast(SubstrateClient, None), cast(Submitted, None), calls, MULTISIG)

        async def settle(index: int) -> bool:
            await landing.outcome(index)
            return True

        for n in range(3):
            pipeline.settles.append(
                approval.Wait(f"p{n}", (f"p{n}", float(n)), calls[n].call_hash, partial(settle, n))
            )
        async with trio.open_nursery() as nursery:
            in_flight.start(nursery, pipeline, done, state)

    monkeypatch.setattr(approval, "wait_landed", never_lands)
    trio.run(scenario)
    assert state.errors == 1 and in_flight.halted and done == set()


def test_an_execution_seen_in_a_block_frees_its_block_before_its_events_are_read() -> None:
    """At a burst's end only executions are left, and the same signatory often executes
    consecutive batches: its next one waits until the one in flight no longer fills a block
    to come (``Pipeline.room_for``). That is once it is *in* a block — not once its ~1,500
    events are read and decoded, nor at the next poll: the attester's loop wakes at once
    (``InFlight.settled_or``), while the wait itself goes on (issue #12)."""
    in_flight, state, done = approval.InFlight(), AttesterState(), set[tuple[str, float]]()
    pipeline = in_flight.pipeline(budget_for(ROCOCO))
    in_block, decoded = trio.Event(), trio.Event()

    async def settle() -> bool:
        await decoded.wait()
        return True

    weight = budget_for(ROCOCO).weight
    pipeline.settles.append(
        approval.Wait("p0", ("p0", 0.0), b"\x01" * 32, settle, weight, 100, 0, in_block)
    )

    async def scenario() -> None:
        async with trio.open_nursery() as nursery:
            in_flight.start(nursery, pipeline, done, state)
            assert (in_flight.weight, in_flight.length) == (weight, 100)
            assert not in_flight.pipeline(budget_for(ROCOCO)).room_for(weight, 100)
            with trio.fail_after(5):
                async with trio.open_nursery() as waking:
                    waking.start_soon(
                        partial(in_flight.settled_or, 600.0, since=in_flight.generation)
                    )
                    await trio.testing.wait_all_tasks_blocked()
                    in_block.set()  # seen in a block; its events not read yet
            assert (in_flight.weight, in_flight.length, in_flight.rounds) == (0, 0, 1)
            assert in_flight.pipeline(budget_for(ROCOCO)).room_for(weight, 100)
            decoded.set()
        assert in_flight.rounds == 0 and done == {("p0", 0.0)}
        assert (in_flight.weight, in_flight.length) == (0, 0)  # released once, not twice

    trio.run(scenario)


def test_a_call_whose_operation_changed_before_the_flush_is_not_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A round decides its calls one by one — each decision reads the chain, some weigh a
    100 KB call — and sends them together at its end. Here p0 and p1 are ours to open; while
    the round is deciding, another signatory's opening of p0 lands. Right before the flush
    each operation is read again: p0's is open now, so its opening is not sent (it would
    fail, paid: ``NoTimepoint``) nor counted; p1's goes out."""
    keypair, chain, pending, batches = _round_setup(2)
    settings, me = chain.settings(), bytes(keypair.public_key)
    duty, node = DeliveryDuty(), _Chain()
    _our_turn(duty, batches)
    first, second = (batches[(k.name, p.created)].hash for k, p in pending)
    other = next(s for s in settings.signatories if s != me)
    reads = {first: 0}

    async def open_operation(client: Any, multisig: bytes, call_hash: bytes) -> Any:
        if call_hash != first:
            return None
        reads[first] += 1
        opened = OpenOperation(Timepoint(9, 1), frozenset({other}), other)
        return None if reads[first] == 1 else opened  # landed after our decision

    monkeypatch.setattr(approval, "open_operation", open_operation)
    _round(node, keypair, chain, pending, batches, duty)
    assert node.extrinsics == [[("approve_as_multi", second)]]
    assert reads[first] == 2 and first not in duty.opens and duty.opens[second] == 1


def test_an_opening_goes_out_a_slice_after_its_verification_however_long_the_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The opener of the first of eight new proposals (1.5 s to verify each). Attesters'
    rounds are not in step, so the next-ranked signatory may have verified that proposal
    alone and started its clock then; decided only after its whole 12 s pass, our opening
    would come long after that clock's 4 s grace (review REVIEW3 M1). Decided and sent at
    most a slice (half the grace) and the verification under way after its own, it goes out
    in time."""
    keypair, chain, pending, every = _round_setup(8)
    settings, me = chain.settings(), bytes(keypair.public_key)
    ours = [
        (k, p)
        for k, p in pending
        if _rank(settings, every[(k.name, p.created)].hash, me, frozenset()) == 0
    ]
    first = ours[0]
    order = [first, *[e for e in pending if e is not first]]  # ours first in the store's order
    clock = [1000.0]
    monkeypatch.setattr(
        approval, "time", SimpleNamespace(time=lambda: clock[0], monotonic=lambda: clock[0])
    )
    verified_at: dict[bytes, float] = {}
    sent_at: dict[bytes, float] = {}

    async def verified(_config: Any, _chain: Any, _client: Any, proposal: Any, **_: Any) -> Call:
        clock[0] += 1.5
        batch = every[next((k.name, p.created) for k, p in pending if p is proposal)]
        verified_at[batch.hash] = clock[0]
        return batch

    class _Timed(_Chain):
        async def submit(
            self, keypair: Any, module: str, function: str, params: Any, **kw: Any
        ) -> Any:
            submitted = await super().submit(keypair, module, function, params, **kw)
            for _, call_hash in self.extrinsics[-1]:
                sent_at.setdefault(call_hash, clock[0])
            return submitted

    monkeypatch.setattr(approval, "_verified_batch", verified)
    node = _Timed()
    _round(node, keypair, chain, order, {}, DeliveryDuty())
    call_hash = every[(first[0].name, first[1].created)].hash
    bound = max(approval.VERIFY_SLICE, DeliveryDuty().grace.seconds / 2) + 1.5  # + one more
    assert sent_at[call_hash] - verified_at[call_hash] <= bound
    assert max(verified_at.values()) - verified_at[call_hash] >= 10.0  # the pass was long


@given(
    st.one_of(
        st.none(),
        st.integers(),
        st.text(max_size=8),
        st.dictionaries(
            st.sampled_from(["height", "index", "other"]),
            st.one_of(st.none(), st.booleans(), st.integers(-5, 2**40), st.text(max_size=4)),
            max_size=3,
        ),
    )
)
def test_a_malformed_timepoint_from_a_node_is_one_adapter_error(when: Any) -> None:
    """A ``Multisig.Multisigs`` entry is a node's answer: whatever its ``when`` holds, the
    parse gives an operation with a sound timepoint or one AdapterError line — never a
    KeyError or ValueError, which would end the attester's duty (review REVIEW3 L6)."""
    me = "0x" + "11" * 32
    entry = {"when": when, "approvals": [me], "depositor": me}
    try:
        operation = multisig_module._operation(entry, "ws://node")
    except AdapterError as exc:
        assert "\n" not in str(exc)
        return
    point = operation.timepoint
    assert isinstance(point.height, int) and isinstance(point.index, int)
    assert not isinstance(point.height, bool) and min(point.height, point.index) >= 0


def test_a_flush_hands_its_waits_over_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each flush's extrinsics are waited for from the moment they went out (the hook
    ``approve_deliveries`` sets: ``InFlight.start``), not from the round's end: a turn is
    timed to its inclusion seen, and a round verifying a burst's proposals lasts seconds
    (review REVIEW4 M1: the grace grew with the round)."""
    pipeline, node, state = Pipeline.for_budget(budget_for(ROCOCO)), _Node(), AttesterState()
    handed: list[int] = []
    pipeline.flushed = lambda: handed.append(len(pipeline.settles))
    told: dict[int, list[bool]] = {}
    _queue(pipeline, 0, "approve_as_multi", told)
    trio.run(_flush, pipeline, node, state)
    assert handed == [1]
    trio.run(_flush, pipeline, node, state)  # nothing queued: nothing to hand over
    assert handed == [1]


def test_a_checkpoint_store_that_fails_is_one_line_not_the_end_of_the_duty(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Verifying a proposal reads the signatures' store; a store that is down or busy
    (PostgreSQL, say) raises CheckpointStoreError. It is that proposal's error — one counted
    line, read again next round — never one that leaves the round and ends the attester's
    duty (review REVIEW4 L3)."""
    keypair, chain, pending, _ = _round_setup(2)

    async def down(*_args: Any, **_kw: Any) -> Call:
        raise CheckpointStoreError("the checkpoint store on postgresql://… is unreachable")

    monkeypatch.setattr(approval, "_verified_batch", down)
    state, node = AttesterState(), _Chain()
    _round(node, keypair, chain, pending, {}, DeliveryDuty(), state)
    assert state.errors == 2 and node.extrinsics == []


def test_a_proposal_rewritten_in_place_is_verified_again_before_anything_is_done_with_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Anyone may write the store, the relayer's entries included. Rewritten in place (same
    name, same ``created``) after we verified it, an entry used to be acted on as it read now
    with the batch verified before — its messages' "already delivered" check included, so a
    rewrite naming delivered messages made us drop a genuine batch (review REVIEW1 L4). Now it
    is verified again first (one counted warning), and while that fails nothing is sent."""
    keypair, chain, pending, every = _round_setup(1)
    (entry, genuine), batch = pending[0], next(iter(every.values()))
    rewritten = dataclasses.replace(genuine, messages=(genuine.messages[0] + b"!",))
    verifications: list[Any] = []
    answer: list[Call | None] = [batch]

    async def verified(_c: Any, _ch: Any, _cl: Any, proposal: Any, **_: Any) -> Call | None:
        verifications.append(proposal)
        return answer[0]

    monkeypatch.setattr(approval, "_verified_batch", verified)
    duty, node, state, batches = DeliveryDuty(), _Chain(), AttesterState(), {}
    _round(node, keypair, chain, [(entry, genuine)], batches, duty, state)
    _round(node, keypair, chain, [(entry, genuine)], batches, duty, state)
    assert verifications == [genuine] and state.errors == 0  # verified once, as it was
    sent = len(node.extrinsics)
    answer[0] = None  # the rewritten one does not verify
    _round(node, keypair, chain, [(entry, rewritten)], batches, duty, state)
    assert verifications == [genuine, rewritten] and state.errors == 1
    assert batches == {} and duty.verified == {}
    assert len(node.extrinsics) == sent  # nothing done on what it says now
