"""Multisig calls submitted together (adapters/substrate/multisig.py :func:`submit_together`)
against a real runtime: Rococo Asset Hub under chopsticks (one process for the module,
``Instant`` block mode, always stopped), and the websocket options every Substrate connection
uses (adapters/substrate/client.py ``WS_OPTIONS``) against a node that sends invalid UTF-8.

What is pinned here, each on the chain itself rather than on our reading of it:

- several openings in ONE ``Utility.batch`` each open their operation, at the extrinsic's own
  timepoint (what every later approval must quote);
- an execution and an opening in one extrinsic both happen;
- a call that fails stops the batch there: :func:`outcomes` names its error, the calls after
  it are :data:`NOT_RUN` and indeed left nothing on chain, the calls before it stay done;
- the weight claim behind :data:`MAX_CALLS_TOGETHER`, measured with the runtime's own weights
  (``payment_queryInfo``);
- a text frame that is not UTF-8 fails that one call as one AdapterError line, although
  websocket-client no longer validates frames (``skip_utf8_validation``).

Every operation is the committee's 2-of-3 multisig of //Alice, //Bob and //Charlie; each test
uses calls of its own (remarks no other test makes), so the tests do not depend on their order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import trio
from conftest import running_chopsticks
from fakes import FakeNode, serving
from substrateinterface import Keypair
from test_substrate_adapter import ALICE_ID, ALICE_KEY, BOB_ID, BOB_KEY, CHARLIE_ID, run

from adapters.errors import AdapterError
from adapters.substrate.client import (
    Call,
    Included,
    SubstrateClient,
    SubstrateEvent,
    account_bytes,
)
from adapters.substrate.multisig import (
    MAX_CALLS_TOGETHER,
    NOT_RUN,
    MultisigCall,
    OpenOperation,
    Timepoint,
    approval_args,
    approval_timepoint,
    executed_ok,
    execution_args,
    extrinsic_limits,
    multisig_account,
    open_operation,
    outcomes,
    submit_together,
    wait_landed,
)
from devnet.chopsticks import ALICE, DEV_BALANCE, ChopsticksProcess
from light_clients.hexstr import to_hex
from relayer.families.substrate.batching import budget_for

pytestmark = pytest.mark.chain


THRESHOLD = 2
MULTISIG = multisig_account([ALICE_ID, BOB_ID, CHARLIE_ID], THRESHOLD)
OTHERS = {
    ALICE_ID: [BOB_ID, CHARLIE_ID],
    BOB_ID: [ALICE_ID, CHARLIE_ID],
}


@pytest.fixture(scope="module")
def chain() -> Iterator[ChopsticksProcess]:
    """One chopsticks for the module (//Alice and //Bob funded: they sign), always stopped."""
    yield from running_chopsticks({ALICE: DEV_BALANCE, to_hex(BOB_ID): DEV_BALANCE})


@pytest.fixture(scope="module")
def client(chain: ChopsticksProcess) -> Iterator[SubstrateClient]:
    """One connected client for the module (each test drives it from its own ``trio.run``)."""
    connected = SubstrateClient(chain.ws_url)
    trio.run(connected.connect)
    try:
        yield connected
    finally:
        trio.run(connected.aclose)


async def remark(client: SubstrateClient, text: bytes) -> Call:
    """A call for the multisig to execute: nothing but an event, so it needs no funds."""
    return await client.compose("System", "remark_with_event", {"remark": text})


def opening(client: SubstrateClient, signer: Keypair, call_hash: bytes) -> MultisigCall:
    """``signer``'s ``approve_as_multi`` without a timepoint: opens ``call_hash``."""
    others = OTHERS[bytes(signer.public_key)]
    args = approval_args(client, signer, others, THRESHOLD, call_hash, timepoint=None)
    return MultisigCall("approve_as_multi", args, call_hash)


async def execution(
    client: SubstrateClient, signer: Keypair, call: Call, timepoint: Timepoint
) -> MultisigCall:
    """``signer``'s ``as_multi`` executing ``call`` at ``timepoint``, weighed as the attester
    weighs it (the call's own ``payment_queryInfo`` weight)."""
    fee = await client.estimate_fee(signer, call)
    args = execution_args(
        signer,
        OTHERS[bytes(signer.public_key)],
        THRESHOLD,
        call,
        timepoint=timepoint,
        max_weight=client.weight_arg(fee.weight, fee.proof_size),
    )
    return MultisigCall("as_multi", args, call.hash)


async def together(client: SubstrateClient, signer: Keypair, calls: list[MultisigCall]) -> Included:
    """``calls`` submitted as one extrinsic of ``signer``'s, once it is in a block."""
    return await wait_landed(client, await submit_together(client, signer, calls))


async def operations(client: SubstrateClient, *calls: Call) -> list[OpenOperation | None]:
    """What the chain holds for each call's operation now (None: not open)."""
    return [await open_operation(client, MULTISIG, call.hash) for call in calls]


def every_named(
    client: SubstrateClient, included: Included, pallet: str, name: str
) -> list[SubstrateEvent]:
    """``pallet.name`` events of the extrinsic from ALL its events: ``wait_landed`` keeps only
    those the multisig outcome reads (``OUTCOME_EVENTS``)."""
    events = trio.run(client.events, included.block_hash)
    return [
        e
        for e in events
        if e.extrinsic_index == included.extrinsic_index and (e.pallet, e.name) == (pallet, name)
    ]


def here(included: Included) -> Timepoint:
    """The timepoint an opening in ``included`` gives its operation: the extrinsic's place."""
    return Timepoint(height=included.block_number, index=included.extrinsic_index)


# --- on chain --------------------------------------------------------------------------------


def test_two_openings_in_one_extrinsic_open_both_at_its_timepoint(
    client: SubstrateClient,
) -> None:
    async def scenario() -> tuple[Included, list[MultisigCall], list[OpenOperation | None]]:
        first = await remark(client, b"together: first opening")
        second = await remark(client, b"together: second opening")
        calls = [opening(client, ALICE_KEY, first.hash), opening(client, ALICE_KEY, second.hash)]
        included = await together(client, ALICE_KEY, calls)
        return included, calls, await operations(client, first, second)

    included, calls, stored = run(scenario)
    assert included.success, included.error
    assert len(every_named(client, included, "Utility", "BatchCompleted")) == 1  # both calls
    assert included.named("Utility", "BatchCompleted") == []  # not an outcome: not decoded
    assert outcomes(included, calls, MULTISIG) == [None, None]
    for call, operation in zip(calls, stored, strict=True):
        assert approval_timepoint(included, MULTISIG, call.call_hash) == here(included)
        assert operation is not None, f"0x{call.call_hash.hex()} is not open on chain"
        assert operation.timepoint == here(included)  # what later approvals must quote
        assert (operation.approvals, operation.depositor) == (frozenset({ALICE_ID}), ALICE_ID)


def test_an_execution_and_an_opening_in_one_extrinsic_both_happen(
    client: SubstrateClient,
) -> None:
    async def scenario() -> dict[str, Any]:
        x = await remark(client, b"together: executed with an opening")
        y = await remark(client, b"together: opened with an execution")
        opened = await together(client, ALICE_KEY, [opening(client, ALICE_KEY, x.hash)])
        timepoint = approval_timepoint(opened, MULTISIG, x.hash)
        assert timepoint is not None, "Alice's lone opening opened nothing"
        calls = [await execution(client, BOB_KEY, x, timepoint), opening(client, BOB_KEY, y.hash)]
        included = await together(client, BOB_KEY, calls)
        return {"x": x, "y": y, "calls": calls, "included": included}

    out = run(scenario)
    x, y, included = out["x"], out["y"], out["included"]
    assert included.success, included.error
    assert outcomes(included, out["calls"], MULTISIG) == [None, None]
    assert executed_ok(included, about=(MULTISIG, x.hash)) == (True, None)
    # X's call ran, as the multisig (a delivered message's event: wait_landed leaves it out).
    [remarked] = every_named(client, included, "System", "Remarked")
    assert included.named("System", "Remarked") == []
    assert account_bytes(remarked.attributes["sender"]) == MULTISIG
    # Y was opened, not executed: nothing about it ran but its approval.
    assert executed_ok(included, about=(MULTISIG, y.hash))[0] is False
    assert approval_timepoint(included, MULTISIG, y.hash) == here(included)
    stored_x, stored_y = run(lambda: operations(client, x, y))
    assert stored_x is None  # executed: the operation is closed, the deposit returned
    assert stored_y is not None and stored_y.timepoint == here(included)
    assert stored_y.depositor == BOB_ID


def test_a_failing_call_stops_the_batch_and_the_calls_after_it_do_nothing(
    client: SubstrateClient,
) -> None:
    async def scenario() -> dict[str, Any]:
        x = await remark(client, b"together: opened by Alice, then misused by Bob")
        z = await remark(client, b"together: never opened (after a failure)")
        w = await remark(client, b"together: opened before a failure")
        await together(client, ALICE_KEY, [opening(client, ALICE_KEY, x.hash)])
        # X is open: opening it again without its timepoint is Multisig.NoTimepoint.
        first = [opening(client, BOB_KEY, x.hash), opening(client, BOB_KEY, z.hash)]
        failed_first = await together(client, BOB_KEY, first)
        after_first = await operations(client, x, z)
        # An execution quoting a timepoint that is not X's is Multisig.WrongTimepoint.
        wrong = Timepoint(height=1, index=0)
        second = [
            opening(client, BOB_KEY, w.hash),
            await execution(client, BOB_KEY, x, wrong),
            opening(client, BOB_KEY, z.hash),
        ]
        failed_second = await together(client, BOB_KEY, second)
        return {
            "first": (first, failed_first, after_first),
            "second": (second, failed_second, await operations(client, x, z, w)),
        }

    out = run(scenario)
    calls, included, (x_open, z_open) = out["first"]
    assert included.success, included.error  # Utility.batch itself succeeds …
    reasons = outcomes(included, calls, MULTISIG)
    assert reasons[0] == "Multisig.NoTimepoint"  # … and names the call that failed
    assert reasons[1] is not None and reasons[1].startswith(NOT_RUN), reasons
    assert included.named("Multisig", "NewMultisig") == []  # Z's opening never ran
    assert z_open is None
    assert x_open is not None and x_open.approvals == {ALICE_ID}  # Bob's approval not counted

    calls, included, (x_open, z_open, w_open) = out["second"]
    assert included.success, included.error
    reasons = outcomes(included, calls, MULTISIG)
    assert reasons[:2] == [None, "Multisig.WrongTimepoint"], reasons
    assert reasons[2] is not None and reasons[2].startswith(NOT_RUN), reasons
    # Utility.batch, not batch_all: the opening before the failure stays done.
    assert w_open is not None and w_open.timepoint == here(included)
    assert approval_timepoint(included, MULTISIG, calls[0].call_hash) == here(included)
    assert z_open is None
    assert x_open is not None and x_open.approvals == {ALICE_ID}
    assert executed_ok(included, about=(MULTISIG, calls[1].call_hash))[0] is False


# --- weight ----------------------------------------------------------------------------------


def test_the_calls_around_a_batch_fit_in_the_weight_it_leaves_free(
    client: SubstrateClient,
) -> None:
    """The claim behind MAX_CALLS_TOGETHER, with this runtime's own weights: what a batch's
    share of ``max_extrinsic`` leaves free holds :data:`MAX_CALLS_TOGETHER` approvals in one
    ``Utility.batch`` (its own overhead included) plus the ``as_multi`` wrapper around the
    longest call a batch may be. The wrapper's weight grows with its call's length (the
    pallet's benchmark has a per-byte term), so it is weighed around a call of the whole
    length budget. Nothing is submitted: ``payment_queryInfo`` weighs the calls."""

    async def scenario() -> dict[str, Any]:
        limits = await extrinsic_limits(client)
        budget = budget_for(limits)
        approvals = [
            await client.compose(
                "Multisig",
                "approve_as_multi",
                approval_args(
                    client,
                    ALICE_KEY,
                    OTHERS[ALICE_ID],
                    THRESHOLD,
                    bytes([n]) * 32,
                    timepoint=None,
                ),
            )
            for n in range(MAX_CALLS_TOGETHER)
        ]
        batch = await client.compose("Utility", "batch", {"calls": approvals})
        longest = await client.compose(
            "System", "remark", {"remark": bytes(budget.length - 8)}
        )  # the call: SCALE bytes of up to the length budget
        call_fee = await client.estimate_fee(ALICE_KEY, longest)
        wrapped = await client.compose(
            "Multisig",
            "as_multi",
            execution_args(
                ALICE_KEY,
                OTHERS[ALICE_ID],
                THRESHOLD,
                longest,
                timepoint=Timepoint(height=1, index=0),
                max_weight=client.weight_arg(call_fee.weight, call_fee.proof_size),
            ),
        )
        return {
            "limits": limits,
            "budget": budget,
            "length": len(longest.data),
            "approvals": (await client.estimate_fee(ALICE_KEY, batch)).weight,
            "call": call_fee.weight,
            "as_multi": (await client.estimate_fee(ALICE_KEY, wrapped)).weight,
        }

    out = run(scenario)
    limits, budget = out["limits"], out["budget"]
    assert out["length"] <= budget.length
    free = limits.weight - budget.weight
    wrapper = out["as_multi"] - out["call"]
    measured = (
        f"max_extrinsic {limits.weight:,}, a batch's budget {budget.weight:,}, free {free:,}; "
        f"{MAX_CALLS_TOGETHER} approvals in a Utility.batch {out['approvals']:,}; as_multi "
        f"{out['as_multi']:,} around a call of {out['length']:,} bytes weighing "
        f"{out['call']:,}: wrapper {wrapper:,}"
    )
    assert out["approvals"] > 0 and wrapper > 0, measured  # weighed, not zero
    assert out["approvals"] + wrapper <= free, measured


# --- the websocket against a node that sends invalid UTF-8 ------------------------------------


@pytest.fixture
def node() -> Iterator[FakeNode]:
    """A FakeNode listening on a free port of 127.0.0.1, shut down afterwards."""
    with serving(FakeNode()) as fake:
        yield fake


def test_invalid_utf8_from_a_node_fails_that_call_as_one_line(
    chain: ChopsticksProcess, client: SubstrateClient, node: FakeNode
) -> None:
    """websocket-client no longer checks that a text frame is UTF-8 (``WS_OPTIONS``); its
    ``recv`` still decodes the frame, so the call fails. ``system_chain`` is asked because its
    result is free text that nothing else of ours checks: a decode that let the bytes through
    (replaced or as they are) would pass here unnoticed, where a block hash would still be
    refused as malformed hex."""
    node.upstream = chain.ws_url  # everything else from the real chain, metadata and all
    garbled = [b'"Rococo \xff\xfe Asset Hub"']  # one answer, then the node is honest again

    def answer(params: list[Any]) -> bytes | None:
        return garbled.pop() if garbled else None

    async def scenario() -> tuple[AdapterError, str, str]:
        async with SubstrateClient(node.url) as lied_to:
            node.answer_raw("system_chain", answer)
            with pytest.raises(AdapterError) as raised:
                await lied_to.rpc("system_chain")
        async with SubstrateClient(node.url) as fresh:
            return raised.value, await fresh.rpc("system_chain"), await client.rpc("system_chain")

    error, through_the_node, direct = run(scenario)
    assert ("system_chain", []) in node.calls  # the invalid bytes were sent
    message = str(error)
    assert message.startswith(f"system_chain on {node.url}: "), message
    assert "\n" not in message, message
    assert error.__cause__ is None and error.__suppress_context__  # no chained traceback
    assert through_the_node == direct  # the next answer, on a fresh client, is the chain's
