"""The committee's ``pallet_multisig`` account: its address, approvals, execution, the outcome.

docs/design.md, "Substrate origin and destination", "Inbox": the committee's multisig executes
``Utility.batch_all([Uniques.mint(…, item = nonce, …), <delivery call>])``. The flow
(``docs/substrate-devnet.md``, shapes checked on the devnet runtime):

1. the first signer opens the operation with :func:`approve` (``approve_as_multi`` with the call
   hash); the block number and extrinsic index of that approval are the operation's
   :class:`Timepoint`, which every later approval must quote (others read it with
   :func:`pending`);
2. further signers approve with that timepoint, and the last one runs :func:`execute`
   (``as_multi`` with the call itself and a ``max_weight``);
3. the ``as_multi`` extrinsic succeeds even when the call it executes fails: read the call's own
   result with :func:`executed_ok` (``Multisig.MultisigExecuted.result``). A replayed delivery
   shows up there as ``Uniques.AlreadyExists``.

A signer's approvals and executions of several operations can go out as one extrinsic
(:func:`submit_together`, ``Utility.batch``); :func:`outcomes` then says what each call did.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

import trio
from substrateinterface import Keypair

from adapters.errors import AdapterError
from adapters.redact import redact_url
from adapters.substrate.client import (
    Call,
    Included,
    Submitted,
    SubstrateClient,
    SubstrateEvent,
    account_bytes,
)
from light_clients.errors import DecodeError
from light_clients.hexstr import parse_data, to_hex
from light_clients.substrate.multisig import MULTISIG_PREFIX, multisig_account

__all__ = [
    "MAX_CALLS_TOGETHER",
    "MULTISIG_PREFIX",
    "NOT_RUN",
    "DispatchFailed",
    "ExtrinsicLimits",
    "MultisigCall",
    "OpenOperation",
    "Timepoint",
    "approval_args",
    "approval_timepoint",
    "approve",
    "cancel",
    "execute",
    "executed_ok",
    "execution_args",
    "extrinsic_limits",
    "held_operations",
    "multisig_account",
    "open_operation",
    "outcomes",
    "pending",
    "submit_together",
    "wait_landed",
]


class DispatchFailed(AdapterError):
    """Our extrinsic is in a block and failed there (``System.ExtrinsicFailed``). Unlike a
    refused submission or a wait that timed out, its nonce was used like any other: the
    client's nonce count is still right, so a caller need not stop submitting over it."""


@dataclass(frozen=True)
class Timepoint:
    """Where an operation was opened: the first approval's block number and extrinsic index."""

    height: int
    index: int

    def as_param(self) -> dict[str, int]:
        """As ``maybe_timepoint`` takes it."""
        return {"height": self.height, "index": self.index}


def _others(keypair: Keypair, others: Sequence[bytes], threshold: int) -> tuple[list[str], bytes]:
    """``other_signatories`` (sorted ``0x``-hex, as the pallet requires) and the multisig id."""
    me = bytes(keypair.public_key)
    keys = [bytes(key) for key in others]
    if me in keys:
        raise ValueError("other signatories must not include the signer")
    account = multisig_account([me, *keys], threshold)
    return [to_hex(key) for key in sorted(keys)], account


@dataclass(frozen=True)
class OpenOperation:
    """A multisig operation awaiting approvals: where it was opened and who approved so far."""

    timepoint: Timepoint
    approvals: frozenset[bytes]
    depositor: bytes = b""
    """Who opened it and holds its deposit (the only one who can cancel it)."""


async def pending(client: SubstrateClient, multisig: bytes, call_hash: bytes) -> Timepoint | None:
    """The timepoint of the open operation ``(multisig, call_hash)``, None if none is open."""
    operation = await open_operation(client, multisig, call_hash)
    return None if operation is None else operation.timepoint


async def open_operation(
    client: SubstrateClient, multisig: bytes, call_hash: bytes
) -> OpenOperation | None:
    """The open operation ``(multisig, call_hash)`` with its approvals, None if none is open."""
    entry = await client.query("Multisig", "Multisigs", [to_hex(multisig), call_hash])
    if entry is None:
        return None
    return _operation(entry, redact_url(client.url))


def _operation(entry: object, url: str) -> OpenOperation:
    when = entry.get("when") if isinstance(entry, dict) else None
    approvals = entry.get("approvals") if isinstance(entry, dict) else None
    depositor = entry.get("depositor") if isinstance(entry, dict) else None
    if not isinstance(when, dict) or not isinstance(approvals, list) or depositor is None:
        raise AdapterError(f"malformed Multisig.Multisigs entry on {url}")
    height, index = when.get("height"), when.get("index")
    if (
        not isinstance(height, int)
        or not isinstance(index, int)
        or isinstance(height, bool)
        or isinstance(index, bool)
        or min(height, index) < 0
    ):
        # A node's answer: one line, never a KeyError/ValueError that ends the duty (REVIEW3 L6).
        raise AdapterError(f"malformed Multisig.Multisigs timepoint on {url}: {when!r:.80}")
    return OpenOperation(
        Timepoint(height=height, index=index),
        frozenset(account_bytes(a) for a in approvals),
        account_bytes(depositor),
    )


async def held_operations(
    client: SubstrateClient, multisig: bytes, depositor: bytes
) -> dict[bytes, OpenOperation]:
    """The open operations of ``multisig`` whose deposit ``depositor`` holds, by call hash: read
    from the chain, so an attester sees those it opened before a restart too."""
    found: dict[bytes, OpenOperation] = {}
    for key, entry in await client.query_map("Multisig", "Multisigs", [to_hex(multisig)]):
        operation = _operation(entry, redact_url(client.url))
        if operation.depositor != depositor:
            continue
        call_hash = key[0] if isinstance(key, list | tuple) and len(key) == 1 else key
        try:
            found[parse_data(call_hash, "call hash", 32)] = operation
        except DecodeError:
            raise AdapterError(
                f"malformed Multisig.Multisigs key on {redact_url(client.url)}: {key!r}"
            ) from None
    return found


async def cancel(
    client: SubstrateClient,
    keypair: Keypair,
    others: Sequence[bytes],
    threshold: int,
    call_hash: bytes,
    *,
    timepoint: Timepoint,
) -> None:
    """``cancel_as_multi``: close an operation this signer opened and get its deposit back.
    Raises :class:`DispatchFailed` if it was included and failed, :class:`AdapterError` if it
    was refused or its wait failed (then whether it lands is unknown)."""
    other_signatories, _ = _others(keypair, others, threshold)
    included = await client.submit(
        keypair,
        "Multisig",
        "cancel_as_multi",
        {
            "threshold": threshold,
            "other_signatories": other_signatories,
            "timepoint": timepoint.as_param(),
            "call_hash": call_hash,
        },
    )
    if not included.success:
        raise DispatchFailed(
            f"cancel_as_multi of 0x{call_hash.hex()} on {redact_url(client.url)} failed: "
            f"{included.error}"
        )


async def approve(
    client: SubstrateClient,
    keypair: Keypair,
    others: Sequence[bytes],
    threshold: int,
    call: Call,
    *,
    timepoint: Timepoint | None = None,
) -> Timepoint:
    """Approve ``call`` by its hash (``approve_as_multi``) and return the operation's timepoint.

    Without ``timepoint`` this opens the operation (the signer reserves the pallet's deposit)
    and the timepoint is this approval's own; with it, the approval joins that operation.
    Raises :class:`AdapterError` if the approval failed on chain.
    """
    approval = MultisigCall(
        "approve_as_multi",
        approval_args(client, keypair, others, threshold, call.hash, timepoint=timepoint),
        call.hash,
    )
    included = await wait_landed(client, await submit_together(client, keypair, [approval]))
    _, multisig = _others(keypair, others, threshold)
    [failure] = outcomes(included, [approval], multisig)
    what = f"approve_as_multi of 0x{call.hash.hex()} on {redact_url(client.url)}"
    if failure is not None:
        raise AdapterError(f"{what} failed: {failure}")
    if timepoint is not None:
        return timepoint
    opened = approval_timepoint(included, multisig, call.hash)
    if opened is None:
        raise AdapterError(f"{what}: no Multisig.NewMultisig event for 0x{multisig.hex()}")
    return opened


def approval_args(
    client: SubstrateClient,
    keypair: Keypair,
    others: Sequence[bytes],
    threshold: int,
    call_hash: bytes,
    *,
    timepoint: Timepoint | None,
) -> dict[str, Any]:
    """The arguments of ``Multisig.approve_as_multi`` for ``call_hash``: an opening without
    ``timepoint``, a join with it (:func:`approve`)."""
    other_signatories, _ = _others(keypair, others, threshold)
    return {
        "threshold": threshold,
        "other_signatories": other_signatories,
        "maybe_timepoint": None if timepoint is None else timepoint.as_param(),
        "call_hash": call_hash,
        # Only the executing approval is weighed.
        "max_weight": client.weight_arg(0),
    }


async def execute(
    client: SubstrateClient,
    keypair: Keypair,
    others: Sequence[bytes],
    threshold: int,
    call: Call,
    *,
    timepoint: Timepoint,
    max_weight: int | None = None,
) -> Included:
    """The last approval: ``as_multi`` with the call itself, which the runtime then dispatches
    as the multisig account.

    ``max_weight`` (ref time) defaults to the call's weight from a fee estimate. The returned
    extrinsic succeeding says nothing about the call: check :func:`executed_ok`.
    """
    if max_weight is None:
        fee = await client.estimate_fee(keypair, call)
        weight = client.weight_arg(fee.weight, fee.proof_size)
    else:
        weight = client.weight_arg(max_weight)
    execution = MultisigCall(
        "as_multi",
        execution_args(keypair, others, threshold, call, timepoint=timepoint, max_weight=weight),
        call.hash,
    )
    return await client.wait_included(await submit_together(client, keypair, [execution]))


def execution_args(
    keypair: Keypair,
    others: Sequence[bytes],
    threshold: int,
    call: Call,
    *,
    timepoint: Timepoint,
    max_weight: int | dict[str, int],
) -> dict[str, Any]:
    """The arguments of ``Multisig.as_multi`` executing ``call`` (:func:`execute`);
    ``max_weight`` as :meth:`~adapters.substrate.client.SubstrateClient.weight_arg` gives it."""
    other_signatories, _ = _others(keypair, others, threshold)
    return {
        "threshold": threshold,
        "other_signatories": other_signatories,
        "maybe_timepoint": timepoint.as_param(),
        "call": call,
        "store_call": False,
        "max_weight": max_weight,
    }


@dataclass(frozen=True)
class MultisigCall:
    """One ``Multisig`` call of ours for :func:`submit_together`: ``function`` (``approve_as_multi``
    or ``as_multi``) with ``args`` (:func:`approval_args`, :func:`execution_args`), about the
    operation of ``call_hash``."""

    function: str
    args: dict[str, Any]
    call_hash: bytes


MAX_CALLS_TOGETHER = 8
"""The most multisig calls :func:`submit_together` puts into one extrinsic. What bounds the
weight, measured on Rococo Asset Hub (tests/test_multisig_together.py): 8 approvals weigh
0.13 % of ``max_extrinsic`` together, and the ``as_multi`` wrappers around executions grow
with the length of the calls they carry, ~4.6 % around calls of a whole block's length (the
most :class:`relayer.families.substrate.approval.Pipeline` puts in one extrinsic): 5.6 % in
all, inside the 10 % a batch leaves free (``EXECUTION_WEIGHT_SHARE``)."""


async def submit_together(
    client: SubstrateClient, keypair: Keypair, calls: Sequence[MultisigCall]
) -> Submitted:
    """Submit ``calls`` as ONE extrinsic of ours, not waited for: a single call as itself,
    several as ``Utility.batch`` (every runtime we deliver to has it; Rococo Asset Hub has no
    ``force_batch``): each dispatches with our own origin, as it would alone, and if one fails
    the batch stops there — the calls before it stay done (``batch_all`` would undo them), the
    calls after it do not run, and the next round decides on them again. Why together: on a
    chain that builds one block per extrinsic (chopsticks' Instant mode) each extrinsic costs
    a block, and on any chain its own base fee; an attester's openings and execution of one
    round need not be apart (issue #12). :func:`outcomes` reads what each call did."""
    if not calls or len(calls) > MAX_CALLS_TOGETHER:
        raise ValueError(f"{len(calls)} calls: submit 1 to {MAX_CALLS_TOGETHER} together")
    if len(calls) == 1:
        [only] = calls
        return await client.submit(
            keypair, "Multisig", only.function, only.args, wait_for_inclusion=False
        )
    batched = [
        {"call_module": "Multisig", "call_function": c.function, "call_args": c.args} for c in calls
    ]
    return await client.submit(
        keypair, "Utility", "batch", {"calls": batched}, wait_for_inclusion=False
    )


_OWN_EVENTS = {
    "approve_as_multi": ("NewMultisig", "MultisigApproval"),
    "as_multi": ("NewMultisig", "MultisigApproval", "MultisigExecuted"),
}
"""The ``Multisig`` events that show a call of ours ran (whatever it did then)."""

OUTCOME_EVENTS: Final = frozenset(
    {("Utility", "BatchInterrupted")}
    | {("Multisig", name) for names in _OWN_EVENTS.values() for name in names}
)
"""Every event :func:`outcomes`, :func:`executed_ok` and :func:`approval_timepoint` read: what
:func:`wait_landed` has decoded (an execution's thousands of per-message events are not)."""


NOT_RUN = "not run"
"""How :func:`outcomes` begins the reason of a call that never ran because one before it in
the same ``Utility.batch`` failed: nothing of it happened on chain (no deposit taken)."""


def _about(event: SubstrateEvent, multisig: bytes, call_hash: bytes) -> bool:
    """Is ``event`` (a ``Multisig`` event) about the operation ``(multisig, call_hash)``?"""
    attributes = event.attributes if isinstance(event.attributes, dict) else {}
    try:
        return (
            account_bytes(attributes.get("multisig")) == multisig
            and parse_data(attributes.get("call_hash"), "call hash", 32) == call_hash
        )
    except (AdapterError, DecodeError, ValueError, TypeError):
        return False  # a node's malformed event is about nothing of ours


def outcomes(
    included: Included, calls: Sequence[MultisigCall], multisig: bytes
) -> list[str | None]:
    """What each of ``calls``, submitted together (:func:`submit_together`) and now
    ``included``, did: None if it ran (one of its own ``Multisig`` events, about its
    operation, is there: read what it did with :func:`executed_ok` or
    :func:`approval_timepoint`), else why not.

    A lone call fails with the extrinsic (``System.ExtrinsicFailed``). In a ``Utility.batch``
    the extrinsic succeeds and ``Utility.BatchInterrupted {index, error}`` names the call that
    failed: the calls before it ran, the calls after it did not (their reason starts with
    :data:`NOT_RUN`). An index we cannot place (a node's lie) leaves every call without its
    own event failed, with no error named: nothing a node says makes us believe a call ran
    without its event."""
    if not included.success:
        return [included.error or "the extrinsic failed"] * len(calls)
    stop, error = len(calls), ""
    interrupted = included.named("Utility", "BatchInterrupted")
    if interrupted:
        attributes = interrupted[0].attributes
        index = attributes.get("index") if isinstance(attributes, dict) else None
        stop = -1  # unplaceable: every call without its own event failed
        if len(interrupted) == 1 and isinstance(index, int) and not isinstance(index, bool):
            stop = index if 0 <= index < len(calls) else -1
        error = interrupted[0].error or "Utility.BatchInterrupted"
    reasons: list[str | None] = []
    for position, call in enumerate(calls):
        ran = any(
            _about(event, multisig, call.call_hash)
            for name in _OWN_EVENTS.get(call.function, ())
            for event in included.named("Multisig", name)
        )
        if position == stop:
            reasons.append(error)
        elif 0 <= stop < position:
            reasons.append(f"{NOT_RUN}: call {stop} of the batch before it failed ({error})")
        elif ran:
            reasons.append(None)
        else:
            reasons.append(f"no Multisig event about 0x{call.call_hash.hex()} in the extrinsic")
    return reasons


def approval_timepoint(included: Included, multisig: bytes, call_hash: bytes) -> Timepoint | None:
    """The timepoint of the operation an approval of ours in ``included`` opened (its own
    ``NewMultisig``: the extrinsic's block and index), None if it opened none."""
    opened = [
        e for e in included.named("Multisig", "NewMultisig") if _about(e, multisig, call_hash)
    ]
    if len(opened) != 1:
        return None
    return Timepoint(height=included.block_number, index=included.extrinsic_index)


NONCE_CHECK = 6.0
"""Seconds between two reads of the signer's on-chain nonce while :func:`wait_landed` waits
(about two blocks: an extrinsic included in time never needs one)."""


async def _settled(wait: Awaitable[Included]) -> Included | AdapterError:
    try:
        return await wait
    except AdapterError as exc:
        return exc


async def _account_nonce(client: SubstrateClient, account: bytes, block_hash: bytes) -> int:
    entry = await client.query("System", "Account", [to_hex(account)], block_hash=block_hash)
    nonce = entry.get("nonce") if isinstance(entry, dict) else None
    if not isinstance(nonce, int) or isinstance(nonce, bool) or nonce < 0:
        raise AdapterError(f"malformed System.Account entry on {redact_url(client.url)}")
    return nonce


async def wait_landed(
    client: SubstrateClient,
    submitted: Submitted,
    *,
    check_every: float = NONCE_CHECK,
    on_block: Callable[[], None] | None = None,
) -> Included:
    """``client.wait_included(submitted)``, given up early once it can no longer succeed: the
    signer's on-chain nonce at the best block has passed ``submitted.nonce`` and the extrinsic
    is in none of the blocks up to that one. Its nonce went to another extrinsic (a reuse after
    a failed submission: chopsticks' ``system_accountNextIndex`` leaves out extrinsics in a
    block being built, and drops the loser at block build without a word), so it never will
    be included. Without this the wait takes the full inclusion timeout (120 s), holding an
    attester's whole round. AdapterError (one line) then, as for any other failed wait.

    The nonce is only read every ``check_every`` seconds; a read that fails is ignored (the
    plain wait still runs, and ends by its own timeout or the extrinsic's mortality).
    ``on_block``: as :meth:`~adapters.substrate.client.SubstrateClient.wait_included` takes it."""
    outcome: Included | AdapterError | None = None

    async def plain(cancel: trio.CancelScope) -> None:
        nonlocal outcome
        outcome = await _settled(
            client.wait_included(submitted, on_block=on_block, kinds=OUTCOME_EVENTS)
        )
        cancel.cancel()

    async def watch(cancel: trio.CancelScope) -> None:
        nonlocal outcome
        while True:
            await trio.sleep(check_every)
            try:
                best = await client.best_number()
                block_hash = await client.block_hash(best)
                if block_hash is None:
                    continue
                nonce = await _account_nonce(client, submitted.signer, block_hash)
            except AdapterError:
                continue
            if nonce <= submitted.nonce:
                continue
            # Included by block ``best`` or never: the same wait, its mortality cut to there.
            cut = replace(submitted, valid_until=min(submitted.valid_until, best))
            outcome = await _settled(
                client.wait_included(cut, on_block=on_block, kinds=OUTCOME_EVENTS)
            )
            if isinstance(outcome, AdapterError):
                outcome = AdapterError(
                    f"extrinsic {to_hex(submitted.extrinsic_hash)} (nonce {submitted.nonce}) "
                    f"is not in any block up to {best} on {redact_url(client.url)}, where the "
                    f"account's nonce is already {nonce}: dropped or replaced"
                )
            cancel.cancel()
            return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(plain, nursery.cancel_scope)
        nursery.start_soon(watch, nursery.cancel_scope)
    if outcome is None:  # unreachable: the nursery ends only once one of them set it
        raise AdapterError(f"no outcome for extrinsic {to_hex(submitted.extrinsic_hash)}")
    if isinstance(outcome, AdapterError):
        raise outcome
    return outcome


def executed_ok(
    included: Included, about: tuple[bytes, bytes] | None = None
) -> tuple[bool, str | None]:
    """Did the multisig call itself succeed? ``(True, None)`` or ``(False, reason)``.

    The reason is the outer extrinsic's error if ``as_multi`` itself failed, the call's
    ``DispatchError`` (e.g. ``Uniques.AlreadyExists``) if it ran and failed, or a note that
    the threshold was not reached (only an approval was recorded). ``about`` — ``(multisig,
    call hash)`` — looks only at that operation's events: an extrinsic of several calls
    (:func:`submit_together`) can execute several.
    """
    if not included.success:
        return False, included.error or "as_multi failed"
    executed = included.named("Multisig", "MultisigExecuted")
    if about is not None:
        executed = [e for e in executed if _about(e, *about)]
    if not executed:
        return False, "not executed: approval recorded, threshold not reached"
    if len(executed) != 1:
        return False, f"{len(executed)} MultisigExecuted events in one extrinsic"
    attributes = executed[0].attributes
    result = attributes.get("result") if isinstance(attributes, dict) else None
    if isinstance(result, dict) and "Ok" in result:
        return True, None
    return False, executed[0].error or f"unexpected MultisigExecuted result {result!r}"


@dataclass(frozen=True)
class ExtrinsicLimits:
    """What one normal-class extrinsic may be on a chain: ``weight`` (ref time, the
    ``max_extrinsic`` of ``System.BlockWeights``) and ``length`` (bytes, the normal share of
    ``System.BlockLength``). An ``as_multi`` beyond either is refused by the runtime whatever
    its approvals: the operation could never execute."""

    weight: int
    length: int


def _positive(value: object, what: str, url: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise AdapterError(f"{what} on {url} is {str(value)[:60]!r}, not a positive integer")
    return value


async def extrinsic_limits(client: SubstrateClient) -> ExtrinsicLimits:
    """Read :class:`ExtrinsicLimits` from the runtime's constants (the metadata already loaded:
    no round trip). A v2 weight's ``ref_time`` is taken; its proof size is not limited here
    (the devnet's runtime has none; a parachain's PoV limit would be a third budget).
    AdapterError if the constants are missing or malformed."""
    url = redact_url(client.url)

    def read(substrate: object) -> tuple[object, object]:
        # substrate-interface decodes constants from the metadata the client loaded at connect.
        weights = substrate.get_constant("System", "BlockWeights")  # type: ignore[attr-defined]
        length = substrate.get_constant("System", "BlockLength")  # type: ignore[attr-defined]
        if weights is None or length is None:
            raise AdapterError("System.BlockWeights or System.BlockLength is not in the metadata")
        return weights.value, length.value

    # The package's own worker-thread runner: every failure becomes one AdapterError line.
    weights, length = await client._run("extrinsic limits", read)
    try:
        normal = weights["per_class"]["normal"]["max_extrinsic"]  # type: ignore[index]
        if isinstance(normal, dict):
            normal = normal.get("ref_time")
        max_length = length["max"]["normal"]  # type: ignore[index]
    except (KeyError, TypeError):
        raise AdapterError(f"malformed System.BlockWeights/BlockLength on {url}") from None
    return ExtrinsicLimits(
        weight=_positive(normal, "the normal max_extrinsic weight", url),
        length=_positive(max_length, "the normal block length", url),
    )
