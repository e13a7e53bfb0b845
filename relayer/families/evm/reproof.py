"""Re-proving a parked message on an EVM destination: ``Inbox.retryProven`` (issue #11).

A message whose recipient reverted is *parked* by the inbox: its replay bit is set and a
failure record holds its id with the committee epoch and origin era it was accepted under.
``Inbox.retry`` re-runs it only while that trust still holds; once the committee is revoked, or
the origin untrusted and trusted again, only a FRESH proof can bring it back:
``retryProven(checkpoint, signatures, message, proof)``, verified exactly as ``process`` verifies
a batch, under the committee and outbox the inbox trusts NOW (docs/design.md, "Inbox").

:func:`reprove` builds and sends that call for one ledger message (``passerelle retry ID
--on-chain``, :func:`relayer.operator.retry_on_chain`):

1. It reads what the inbox trusts now (``eth_call`` at ``latest``: the outbox of the message's
   origin, the committee and threshold, the failure record) and refuses, in one line and
   before anything is signed, a message that is not parked there under this id, an origin the
   inbox trusts under another outbox than the config names, or an inbox with no committee.
2. It rebuilds the origin's tree from the ledger (every message of the origin, gapless), and
   takes the newest checkpoint in the shared checkpoint store that covers the message and that
   a threshold of the inbox's CURRENT members signed over this tree's root. The store is
   hostile ground (anyone who can write it can plant files): each signature is recovered
   against the digest of the checkpoint computed here, and the chosen set passes
   :func:`light_clients.committee.verify_attestation` against the inbox's committee.
3. It checks the single-leaf multiproof off chain (:func:`verify_multiproof`), dry-runs the call
   (``eth_estimateGas``: a refusal is one line naming the inbox's error, nothing is sent), and
   sends it from the ``[client]`` key through the Signer interface (the transaction engine signs
   through :func:`adapters.signing.call_signer`). Not the relayer's key: a running relayer owns
   that key's nonces.
4. It reads the receipt: only the inbox's own ``Delivered(id)`` log counts (a recipient runs
   inside the transaction and can emit a look-alike). If the transaction reverted because the
   failure record was gone by then, the inbox's own logs between the dry run and the revert
   say why (:func:`removal_of`): ``Delivered(id)`` (someone else handed it over:
   HandledElsewhere) or ``FailedDiscarded`` of this record (the owner voided it:
   DiscardedByOwner); neither, the revert is raised as it is.

It is the EVM family's answer to :meth:`relayer.family.ChainFamily.reprove`; the outcomes
(:class:`Reproven`, :class:`ReproofRefused`, :class:`HandledElsewhere`) are the seam's, so the
operator's command never imports this module.

Nothing here trusts the RPC endpoint for safety: the inbox itself re-checks everything, so a
lying endpoint can at worst make the dry run fail or the transaction revert (paid by the
client, one line).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

import trio
from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_abi.exceptions import DecodingError

from adapters.errors import AdapterError
from adapters.evm.chain import EvmChain, selector
from adapters.evm.contracts import load_artifact
from adapters.evm.tx import FeeModel, MinedTx, TxEngine, TxReverted
from adapters.rpc import RpcCallError
from adapters.text import NODE_TEXT_LIMIT, one_line
from light_clients.committee import Checkpoint, Committee
from light_clients.errors import VerificationError
from light_clients.hashing import keccak256
from light_clients.hexstr import to_hex
from light_clients.merkle import IncrementalMerkleTree
from light_clients.message import decode_message
from light_clients.multiproof import build_multiproof, pack_messages, verify_multiproof
from relayer.checkpoints import CheckpointStore
from relayer.config import ChainConfig
from relayer.families.evm.delivery import TOPIC_DELIVERED, _receipt_outcome, failure_key
from relayer.family import HandledElsewhere, ReproofRefused, Reproven
from relayer.ledger import MessageRecord
from relayer.relay import select_quorum
from relayer.signer import Signer

__all__ = [
    "RETRY_PROVEN",
    "DiscardedByOwner",
    "HandledElsewhere",
    "Reproof",
    "ReproofRefused",
    "Reproven",
    "build_reproof",
    "newest_attestation",
    "removal_of",
    "reprove",
    "revert_line",
]


class DiscardedByOwner(AdapterError):
    """Our re-proof reverted because the inbox's owner discarded the failure record first
    (``discardFailed``: announced so that the message's owner can retry before it, and this
    re-proof lost that race). The message can never be delivered now; ``str()`` says so in
    one line (the CLI exits 1: the value is gone, nothing the operator wanted happened)."""


RETRY_PROVEN = selector("retryProven((uint32,bytes32,bytes32,uint32),bytes,bytes,bytes32[])")
OUTBOX_OF = selector("outboxOf(uint32)")
VALIDATORS = selector("validators()")
THRESHOLD = selector("threshold()")
FAILED_MESSAGE = selector("failedMessage(bytes32)")
TOPIC_FAILED_DISCARDED = keccak256(b"FailedDiscarded(bytes24,uint32,bytes32,uint32)")

SCAN_SLOTS = 64
"""Index slots of the store read below the newest index the ledger can prove, when no
member's newest signature is usable. Attesters sign every checkpoint they see and the relayer's
scan trails them by a poll or two, so a quorum the ledger can use sits a few indices below
the members' newest; the bound keeps a store full of planted indices from costing more than
this many directory reads."""

REVERT_LINE_LIMIT = NODE_TEXT_LIMIT
"""Characters of a decoded revert shown to the operator (the data is the recipient's)."""


@dataclass(frozen=True)
class Reproof:
    """The ``retryProven`` call for one message: what was chosen, and its calldata."""

    checkpoint: Checkpoint
    calldata: bytes


def newest_attestation(
    store: CheckpointStore,
    tree: IncrementalMerkleTree,
    committee: Committee,
    *,
    origin: int,
    outbox: bytes,
    nonce: int,
) -> tuple[Checkpoint, list[bytes]]:
    """The newest checkpoint of ``tree`` covering ``nonce`` that a threshold of ``committee``
    signed in ``store``, with exactly ``threshold`` signatures in ascending signer order.

    Only the committee's slots are read (the store is shared: see
    :meth:`CheckpointStore.latest_indices`), and the signatures are sorted by the relayer's own
    rule (:func:`relayer.relay.select_quorum`): one counts only if it recovers to its slot's
    member over the checkpoint its file states, and that checkpoint is the one computed HERE
    from the ledger's tree. ReproofRefused if no such checkpoint is stored: the committee has
    not signed this far yet, or it has but the ledger has not scanned that far (its own
    message, so the operator waits for the relayer rather than dispatching more). Where a
    threshold of the committee signed ANOTHER root at a candidate index, the refusal says that
    instead: then the ledger's messages are not the origin's there (the relayer halts on the
    same finding), and waiting will not help.

    Candidates, highest first: each member's newest index the ledger can prove, then every
    slot from the newest provable index down to ``nonce``, at most :data:`SCAN_SLOTS` of them.
    Members sign on their own polls and the ledger trails them, so their newest indices are
    often all past the ledger while a quorum one index lower covers the message. A dissenting
    quorum does not end the search: the ledger may agree with the committee below the index
    where they part, and a checkpoint there still covers the message."""
    latest = store.latest_indices(origin, outbox, committee.members)
    provable = tree.count - 1
    top = min(provable, latest[0]) if latest else provable
    candidates = dict.fromkeys(
        [i for i in latest if nonce <= i <= provable]
        + list(range(top, max(nonce, top - SCAN_SLOTS + 1) - 1, -1))
    )
    disagreed: int | None = None
    for index in sorted(candidates, reverse=True):
        checkpoint = Checkpoint(
            origin=origin, outbox=outbox, root=tree.root(index + 1), index=index
        )
        found = select_quorum(
            committee, checkpoint, store.signatures(origin, outbox, index, committee.members)
        )
        if found.signatures is not None:
            # Exactly ``threshold`` (ascending signers): each extra one costs gas and proves
            # nothing more.
            return checkpoint, [s.signature for s in found.signatures[: committee.threshold]]
        if disagreed is None and len(found.dissent) >= committee.threshold:
            disagreed = index
    if disagreed is not None:
        # Alone: waiting for the attesters or for the scan (the advice below) cannot help
        # where a quorum already signed another root than the ledger's (review R2SEAM, nit).
        raise ReproofRefused(
            f"no checkpoint covering nonce {nonce}: the inbox's committee and the ledger "
            f"disagree at index {disagreed} (a quorum of it signed another root than the "
            "ledger's messages give): the ledger is damaged (passerelle ledger rebuild), or "
            "the committee signed a root the origin never had"
        )
    if latest and latest[0] > provable >= nonce:
        raise ReproofRefused(
            f"the ledger is behind the checkpoint store: the inbox's committee signed up to "
            f"index {latest[0]} of origin {origin}, the ledger holds messages up to nonce "
            f"{provable} only, and no quorum at or below it covers nonce {nonce}: let the "
            f"relayer scan the origin, then run this again"
        )
    raise ReproofRefused(
        f"no checkpoint covering nonce {nonce} signed by the inbox's current committee is in "
        "the checkpoint store yet (its attesters sign new checkpoints only: dispatch any "
        "message from the origin, or wait for them)"
    )


def build_reproof(
    tree: IncrementalMerkleTree,
    checkpoint: Checkpoint,
    signatures: Sequence[bytes],
    message: bytes,
) -> Reproof:
    """The ``retryProven`` calldata for ``message`` under ``checkpoint``; its single-leaf
    multiproof is checked off chain first (a tree that disagrees with the checkpoint costs a
    line here, not a reverted transaction). ReproofRefused if it does not verify."""
    nonce = decode_message(message).nonce
    count = checkpoint.index + 1
    proof = build_multiproof(tree, [nonce], count)
    try:
        verify_multiproof(checkpoint.root, [(nonce, keccak256(message))], proof, count)
    except VerificationError as exc:
        raise ReproofRefused(f"the proof of nonce {nonce} does not verify: {exc}") from None
    calldata = RETRY_PROVEN + abi_encode(
        ["(uint32,bytes32,bytes32,uint32)", "bytes", "bytes", "bytes32[]"],
        [
            (checkpoint.origin, checkpoint.outbox, checkpoint.root, checkpoint.index),
            b"".join(signatures),
            pack_messages([message]),
            list(proof),
        ],
    )
    return Reproof(checkpoint, calldata)


async def inbox_committee(evm: EvmChain, inbox: bytes, where: str) -> Committee:
    """The committee the inbox trusts now (``validators()``, ``threshold()``); ReproofRefused
    if it has none (revoked and nothing enacted since) or answers something no inbox would."""
    members_word, threshold_word = await evm.call_many(inbox, [VALIDATORS, THRESHOLD])
    try:
        (members,) = abi_decode(["address[]"], members_word)
        (threshold,) = abi_decode(["uint8"], threshold_word)
    except (DecodingError, ValueError, TypeError, OverflowError) as exc:
        # DecodingError (eth_abi's, no ValueError): a short or malformed word from the endpoint.
        raise ReproofRefused(f"the inbox on {where} answered no usable committee: {exc}") from None
    if threshold == 0:
        raise ReproofRefused(
            f"the inbox on {where} trusts no committee (revoked, no new one enacted): "
            "nothing can be proven there now"
        )
    try:
        return Committee(tuple(bytes.fromhex(m[2:]) for m in members), threshold)
    except (ValueError, VerificationError) as exc:
        # VerificationError: Committee() refuses what no inbox holds (a zero or repeated
        # member, a threshold above the size): a lying endpoint, told in one line.
        raise ReproofRefused(f"the inbox on {where} answered no usable committee: {exc}") from None


async def check_parked(
    evm: EvmChain, target: ChainConfig, record: MessageRecord, outbox: bytes
) -> None:
    """ReproofRefused unless the inbox on ``target`` trusts ``outbox`` for the message's
    origin and holds a failure record with this message's id under it."""
    inbox = target.contract("inbox")
    trusted, failure = await evm.call_many(
        inbox,
        [
            OUTBOX_OF + abi_encode(["uint32"], [record.origin]),
            FAILED_MESSAGE + failure_key(record.origin, outbox, record.nonce),
        ],
    )
    if trusted != outbox:
        raise ReproofRefused(
            f"{record.id}: the inbox on {target.name} trusts outbox {to_hex(trusted)} for "
            f"origin {record.origin}, not the configured {to_hex(outbox)}: it cannot be proven"
        )
    if not _holds(failure, record.id):
        raise ReproofRefused(
            f"{record.id}: not parked on {target.name} (no failure record holds it: handled "
            "already, never accepted, or discarded): nothing to re-prove"
        )


def _holds(failure: bytes, message_id: str) -> bool:
    """Whether a ``failedMessage`` answer (its first word: the 24-byte id prefix) is this id's."""
    return failure[:24] == bytes.fromhex(message_id[2:])[:24]


def removal_of(
    delivered: Sequence[dict[str, object]],
    discarded: Sequence[dict[str, object]],
    inbox: bytes,
    record: MessageRecord,
    outbox: bytes,
) -> tuple[str, int] | None:
    """Why ``record``'s failure record disappeared, from ``eth_getLogs`` answers for the
    inbox's ``Delivered`` and ``FailedDiscarded`` logs: ``("delivered", block)`` for the inbox's
    ``Delivered(id)``, ``("discarded", block)`` for its ``FailedDiscarded`` of exactly this
    record (id prefix, origin, outbox, nonce), None if neither is there.

    Only a log the inbox emitted counts: a recipient runs inside some transaction of the
    window and can emit either event under its own address. A log whose shape is off is no
    evidence either way (skipped), so a babbling endpoint ends in None: the revert as it is,
    never a comforting "handed over"."""
    topic_id = to_hex(bytes.fromhex(record.id[2:]))
    topic_prefix = to_hex(bytes.fromhex(record.id[2:])[:24] + bytes(8))  # bytes24, left-aligned
    discard_data = to_hex(outbox + record.nonce.to_bytes(32, "big"))
    origin = to_hex(record.origin.to_bytes(32, "big"))
    wanted = (
        ("delivered", delivered, [to_hex(TOPIC_DELIVERED), topic_id], None),
        (
            "discarded",
            discarded,
            [to_hex(TOPIC_FAILED_DISCARDED), topic_prefix, origin],
            discard_data,
        ),
    )
    for what, logs, topics, data in wanted:
        for log in logs:
            address, found, number = log.get("address"), log.get("topics"), log.get("blockNumber")
            if (
                isinstance(address, str)
                and address.lower() == to_hex(inbox[-20:])
                and isinstance(found, list)
                and [t.lower() if isinstance(t, str) else t for t in found[: len(topics)]] == topics
                and (data is None or str(log.get("data", "")).lower() == data)
                and isinstance(number, str)
            ):
                try:
                    return what, int(number, 16)
                except ValueError:
                    continue
    return None


@cache
def _inbox_errors() -> dict[bytes, tuple[str, list[str]]]:
    """Selector → (name, argument types) of every error the Inbox ABI declares, and of
    Solidity's Error(string) and Panic(uint256)."""
    errors = {
        selector("Error(string)"): ("Error", ["string"]),
        selector("Panic(uint256)"): ("Panic", ["uint256"]),
    }
    for entry in load_artifact("Inbox").abi:
        if entry.get("type") == "error":
            types = [str(arg["type"]) for arg in entry.get("inputs", [])]
            errors[selector(f"{entry['name']}({','.join(types)})")] = (entry["name"], types)
    return errors


def revert_line(data: object, message: str) -> str:
    """The dry run's revert as one printable line: ``data`` (the JSON-RPC error's ``data``, the
    revert bytes in hex) decoded against the Inbox's errors, Error(string) and Panic; other
    bytes (a recipient's own error, passed through by ``retry``/``retryProven``) as bounded
    hex; ``message`` (the node's words) when there is no data. Everything in it may be chosen
    by a recipient or a lying endpoint, so every character is made printable."""
    raw: bytes | None = None
    if isinstance(data, dict):  # some nodes nest it: {"data": "0x…"}
        data = data.get("data")
    if isinstance(data, str) and data.startswith("0x"):
        try:
            raw = bytes.fromhex(data[2:])
        except ValueError:
            raw = None
    if not raw:
        return one_line(message, REVERT_LINE_LIMIT)
    known = _inbox_errors().get(raw[:4]) if len(raw) >= 4 else None
    if known is not None:
        name, types = known
        try:
            values = abi_decode(types, raw[4:])
        except (DecodingError, OverflowError, ValueError):
            values = None
        if values is not None:
            shown = ", ".join(to_hex(v) if isinstance(v, bytes) else repr(v) for v in values)
            return one_line(f"{name}({shown})", REVERT_LINE_LIMIT)
    return one_line(
        f"revert data {to_hex(raw[:64])}{'…' if len(raw) > 64 else ''}", REVERT_LINE_LIMIT
    )


async def reprove(
    evm: EvmChain,
    target: ChainConfig,
    signer: Signer,
    *,
    store: Callable[[], CheckpointStore],
    tree: Callable[[], IncrementalMerkleTree],
    record: MessageRecord,
    outbox: bytes,
    fee_model: FeeModel = "eip1559",
    timeout: float = 120.0,
) -> Reproven:
    """Re-prove the parked ``record`` on ``target`` (see the module docstring) from its
    origin's tree, built by ``tree`` (the ledger's, :func:`relayer.relay.ledger_tree`: it
    reads every message of the origin, so only once the cheap checks passed) and the
    checkpoint store ``store`` opens (likewise: a refused command opens nothing), and return
    what the receipt shows. ReproofRefused (one line, nothing sent) when it cannot or the
    dry run reverts; HandledElsewhere when the transaction reverted because someone else
    handed the message over first (the inbox logged its Delivered); DiscardedByOwner when it
    reverted because the owner discarded the record first; an AdapterError if the chain
    cannot be asked, or the mined transaction reverted otherwise (TxReverted)."""
    inbox = target.contract("inbox")
    await check_parked(evm, target, record, outbox)
    committee = await inbox_committee(evm, inbox, target.name)
    lane = tree()
    # The store is files or a database: opened and read off the event loop, as the relayer
    # reads it.
    checkpoint, signatures = await trio.to_thread.run_sync(
        lambda: newest_attestation(
            store(), lane, committee, origin=record.origin, outbox=outbox, nonce=record.nonce
        )
    )
    call = build_reproof(lane, checkpoint, signatures, record.message)
    # The configured id, as the relayer signs (delivery.py): the endpoint's answer is checked
    # against it when the connection opens, but the signature must not depend on what a node
    # says.
    chain_id = target.chain_id or await evm.chain_id()
    engine = TxEngine(evm.rpc, signer, chain_id, escalate_after=30, fee_model=fee_model)
    fees = await engine.current_fees()
    # The record is there at the dry run's block, which is at or after this one: a removal
    # that makes our transaction revert is logged from here to the revert's block.
    dry_run_block = await evm.latest_number()
    try:
        gas = await engine.estimate_gas(inbox, call.calldata, fees=fees)
    except RpcCallError as exc:
        raise ReproofRefused(
            f"{record.id}: the inbox on {target.name} refuses the re-proof: "
            + revert_line(exc.data, exc.message)
        ) from None
    sent = await engine.send(inbox, call.calldata, gas=gas, fees=fees)
    try:
        mined = await engine.wait(sent, timeout=timeout)
    except TxReverted as exc:
        # Between the dry run and the block someone else may have handed it over (anyone may
        # call retryProven or, if the trust held, retry), or the owner discarded the record
        # (discardFailed deletes it too, and its announcement invites exactly this race): a
        # missing record alone does not say which, so the inbox's own logs must.
        (failure,) = await evm.call_many(
            inbox, [FAILED_MESSAGE + failure_key(record.origin, outbox, record.nonce)]
        )
        if _holds(failure, record.id):
            raise
        window = (dry_run_block, exc.block_number)
        removal = removal_of(
            await evm.logs(inbox, TOPIC_DELIVERED, *window),
            await evm.logs(inbox, TOPIC_FAILED_DISCARDED, *window),
            inbox,
            record,
            outbox,
        )
        if removal is None:
            raise  # gone without the inbox saying why (or a lagging endpoint): as it is
        what, block = removal
        ours = (
            f"its transaction {to_hex(exc.tx_hash)} reverted in block {exc.block_number}, "
            f"{exc.gas_used:,} gas paid"
        )
        if what == "discarded":
            raise DiscardedByOwner(
                f"{record.id}: discarded by the inbox's owner on {target.name} in block "
                f"{block}, before this re-proof landed ({ours}): it can never be delivered now"
            ) from None
        raise HandledElsewhere(
            f"{record.id}: handed over on {target.name} by someone else in block {block}, "
            f"before this re-proof landed ({ours}); the failure record is gone"
        ) from None
    _require_delivered(mined, inbox, record.id, target.name)
    return Reproven(
        id=record.id,
        destination=target.name,
        checkpoint_index=checkpoint.index,
        tx_hash=to_hex(mined.hash),
        block_number=mined.block_number,
        gas_used=mined.gas_used,
    )


def _require_delivered(mined: MinedTx, inbox: bytes, message_id: str, where: str) -> None:
    """The inbox's own ``Delivered(id)`` must be in the receipt (what ``retryProven`` emits
    when ``handle`` succeeded; it reverts otherwise, so this only fails against a lying
    endpoint's receipt)."""
    if message_id.lower() not in _receipt_outcome(mined, inbox, [message_id]).delivered:
        raise AdapterError(
            f"{message_id}: transaction {to_hex(mined.hash)} on {where} was mined, but the "
            "inbox logged no Delivered for it (a lying endpoint's receipt?)"
        )
