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
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, replace

import trio
from substrateinterface import Keypair

from adapters.errors import AdapterError
from adapters.redact import redact_url
from adapters.substrate.client import (
    Call,
    Fee,
    Included,
    Submitted,
    SubstrateClient,
    account_bytes,
)
from light_clients.errors import DecodeError
from light_clients.hexstr import parse_data, to_hex
from light_clients.substrate.multisig import MULTISIG_PREFIX, multisig_account

__all__ = [
    "MULTISIG_PREFIX",
    "DispatchFailed",
    "ExtrinsicLimits",
    "OpenOperation",
    "Timepoint",
    "approval_included",
    "approve",
    "cancel",
    "execute",
    "executed_ok",
    "extrinsic_limits",
    "held_operations",
    "multisig_account",
    "open_operation",
    "pending",
    "submit_approval",
    "submit_execution",
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
    return OpenOperation(
        Timepoint(height=int(when["height"]), index=int(when["index"])),
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
    submitted = await submit_approval(client, keypair, others, threshold, call, timepoint=timepoint)
    return await approval_included(
        client, keypair, others, threshold, call, submitted=submitted, timepoint=timepoint
    )


async def submit_approval(
    client: SubstrateClient,
    keypair: Keypair,
    others: Sequence[bytes],
    threshold: int,
    call: Call,
    *,
    timepoint: Timepoint | None = None,
) -> Submitted:
    """:func:`approve`'s extrinsic, submitted and not waited for: several can then go into one
    block back to back (the client numbers their nonces); :func:`approval_included` waits."""
    other_signatories, _ = _others(keypair, others, threshold)
    return await client.submit(
        keypair,
        "Multisig",
        "approve_as_multi",
        {
            "threshold": threshold,
            "other_signatories": other_signatories,
            "maybe_timepoint": None if timepoint is None else timepoint.as_param(),
            "call_hash": call.hash,
            # Only the executing approval is weighed.
            "max_weight": client.weight_arg(0),
        },
        wait_for_inclusion=False,
    )


async def approval_included(
    client: SubstrateClient,
    keypair: Keypair,
    others: Sequence[bytes],
    threshold: int,
    call: Call,
    *,
    submitted: Submitted,
    timepoint: Timepoint | None = None,
) -> Timepoint:
    """Wait for an approval :func:`submit_approval` sent and return the operation's timepoint;
    AdapterError if it failed on chain or recorded no approval of this multisig."""
    _, multisig = _others(keypair, others, threshold)
    included = await wait_landed(client, submitted)
    what = f"approve_as_multi of 0x{call.hash.hex()} on {redact_url(client.url)}"
    if not included.success:
        raise AdapterError(f"{what} failed: {included.error}")
    expected = "NewMultisig" if timepoint is None else "MultisigApproval"
    events = included.named("Multisig", expected)
    if len(events) != 1 or account_bytes(events[0].attributes.get("multisig")) != multisig:
        raise AdapterError(f"{what}: no Multisig.{expected} event for 0x{multisig.hex()}")
    if timepoint is None:
        return Timepoint(height=included.block_number, index=included.extrinsic_index)
    return timepoint


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
    submitted = await submit_execution(
        client, keypair, others, threshold, call, timepoint=timepoint, max_weight=max_weight
    )
    return await client.wait_included(submitted)


async def submit_execution(
    client: SubstrateClient,
    keypair: Keypair,
    others: Sequence[bytes],
    threshold: int,
    call: Call,
    *,
    timepoint: Timepoint,
    max_weight: int | None = None,
    fee: Fee | None = None,
) -> Submitted:
    """:func:`execute`'s extrinsic, submitted and not waited for (``client.wait_included``
    waits). ``fee``: the call's estimate if the caller has it already (it weighed the call
    to see whether the block has room), so it is not asked for twice."""
    other_signatories, _ = _others(keypair, others, threshold)
    if max_weight is None:
        fee = fee or await client.estimate_fee(keypair, call)
        weight = client.weight_arg(fee.weight, fee.proof_size)
    else:
        weight = client.weight_arg(max_weight)
    return await client.submit(
        keypair,
        "Multisig",
        "as_multi",
        {
            "threshold": threshold,
            "other_signatories": other_signatories,
            "maybe_timepoint": timepoint.as_param(),
            "call": call,
            "store_call": False,
            "max_weight": weight,
        },
        wait_for_inclusion=False,
    )


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
    client: SubstrateClient, submitted: Submitted, *, check_every: float = NONCE_CHECK
) -> Included:
    """``client.wait_included(submitted)``, given up early once it can no longer succeed: the
    signer's on-chain nonce at the best block has passed ``submitted.nonce`` and the extrinsic
    is in none of the blocks up to that one. Its nonce went to another extrinsic (a reuse after
    a failed submission: chopsticks' ``system_accountNextIndex`` leaves out extrinsics in a
    block being built, and drops the loser at block build without a word), so it never will
    be included. Without this the wait takes the full inclusion timeout (120 s), holding an
    attester's whole round. AdapterError (one line) then, as for any other failed wait.

    The nonce is only read every ``check_every`` seconds; a read that fails is ignored (the
    plain wait still runs, and ends by its own timeout or the extrinsic's mortality)."""
    outcome: Included | AdapterError | None = None

    async def plain(cancel: trio.CancelScope) -> None:
        nonlocal outcome
        outcome = await _settled(client.wait_included(submitted))
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
            outcome = await _settled(client.wait_included(cut))
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


def executed_ok(included: Included) -> tuple[bool, str | None]:
    """Did the multisig call itself succeed? ``(True, None)`` or ``(False, reason)``.

    The reason is the outer extrinsic's error if ``as_multi`` itself failed, the call's
    ``DispatchError`` (e.g. ``Uniques.AlreadyExists``) if it ran and failed, or a note that
    the threshold was not reached (only an approval was recorded).
    """
    if not included.success:
        return False, included.error or "as_multi failed"
    executed = included.named("Multisig", "MultisigExecuted")
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
