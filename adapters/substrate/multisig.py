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

from collections.abc import Sequence
from dataclasses import dataclass

from substrateinterface import Keypair

from adapters.errors import AdapterError
from adapters.redact import redact_url
from adapters.substrate.client import Call, Included, SubstrateClient, account_bytes
from light_clients.errors import DecodeError
from light_clients.hexstr import parse_data, to_hex
from light_clients.substrate.multisig import MULTISIG_PREFIX, multisig_account

__all__ = [
    "MULTISIG_PREFIX",
    "OpenOperation",
    "Timepoint",
    "approve",
    "cancel",
    "execute",
    "executed_ok",
    "held_operations",
    "multisig_account",
    "open_operation",
    "pending",
]


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
    Raises :class:`AdapterError` if the chain refused."""
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
        raise AdapterError(
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
    other_signatories, multisig = _others(keypair, others, threshold)
    included = await client.submit(
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
    )
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
    other_signatories, _ = _others(keypair, others, threshold)
    if max_weight is None:
        fee = await client.estimate_fee(keypair, call)
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
    )


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
