"""Delivery to an EVM chain: ``Inbox.process`` transactions, sent and settled by the relayer.

Each batch is prepared (the relay policy, the inbox's proven final state, the light client's
whole check off chain), dry-run, recorded before broadcast, confirmed with fee escalation and
recorded; up to ``max_inflight`` batches are in flight, one engine keeping the nonces in order.
``delivered`` is written only from the replay-guard bits and ``failedMessage`` slots proven
under the destination's final header (:func:`inbox_delivery_state`, docs/relayer.md), and only
for a message that is the leaf at its nonce of its lane's attested tree (:func:`attested_leaf`):
the bit says that *a* message with that nonce was accepted, the leaf says it was this one.

A batch is one ``Inbox.process`` call (docs/design.md, "Inbox"): the messages of one origin in
ascending nonce order, packed (:func:`light_clients.multiproof.pack_messages`), and ONE
multiproof of all of them under the checkpoint root
(:func:`light_clients.multiproof.build_multiproof`), instead of a 32-hash branch each.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import NamedTuple, Protocol

import trio
from eth_abi.abi import encode as abi_encode

from adapters.errors import AdapterError
from adapters.evm.chain import EvmChain, mapping_slot, quantity, selector
from adapters.evm.contracts import load_artifact
from adapters.evm.tx import (
    BroadcastHook,
    FeeModel,
    MinedTx,
    SentTx,
    TxEngine,
    TxError,
    TxReverted,
    parse_quantity,
    parse_receipt,
)
from adapters.rpc import MalformedAnswer, RpcCallError, RpcError
from adapters.text import ERROR_TEXT_LIMIT, one_line
from light_clients.errors import VerificationError
from light_clients.ethereum.header import EthHeader
from light_clients.hashing import keccak256
from light_clients.hexstr import to_hex
from light_clients.merkle import IncrementalMerkleTree
from light_clients.message import MAX_MESSAGE_BYTES, MalformedMessageError, decode_message
from light_clients.multiproof import build_multiproof, pack_messages, verify_multiproof
from relayer.config import ChainConfig
from relayer.families.evm.connection import open_evm
from relayer.families.evm.origin import local_domain
from relayer.ledger import (
    TRANSITIONS,
    IllegalTransition,
    InvalidReference,
    LedgerBatch,
    MessageRecord,
    MessageStatus,
    NewTransaction,
    TxStatus,
    UnknownRecord,
    WriteOutsideDomain,
)
from relayer.relay import (
    MAX_DELIVERY_ATTEMPTS,
    OPERATOR_RETRY,
    RETRY_BACKOFF,
    DomainCheck,
    Lane,
    Relayer,
    recent_failures,
)

log = logging.getLogger("passerelle.relayer")


PROCESS = selector("process((uint32,bytes32,bytes32,uint32),bytes,bytes,bytes32[])")
# Same arguments; cuts the batch before a message it cannot fund instead of reverting it (what
# the relayer sends; ``process``, all or nothing, is what it dry-runs: see EvmDelivery._submit).
PROCESS_OR_CUT = selector("processOrCut((uint32,bytes32,bytes32,uint32),bytes,bytes,bytes32[])")
IS_DELIVERED = selector("isDelivered(uint32,uint32)")
TOPIC_DELIVERED = keccak256(b"Delivered(bytes32,uint32,uint32)")
TOPIC_ALREADY = keccak256(b"AlreadyDelivered(bytes32)")
TOPIC_HANDLE_FAILED = keccak256(b"HandleFailed(bytes32,bytes)")
TOPIC_BATCH_CUT = keccak256(b"BatchCut(uint256,uint32)")
ALONE_REVERTS = "delivery reverts with this message alone in its batch"
# The most gas one message's ``handle`` can cost the inbox: Inbox.HANDLE_GAS_NEEDED, that is
# HANDLE_GAS (500k) forwarded under EIP-150's 63/64 rule plus the call's own cost. A batch gets
# this ONCE on top of its estimate (see EvmDelivery._submit).
STIPEND_GAS = 500_000 * 64 // 63 + 10_000
# What the inbox wants left before each message it starts: Inbox.MESSAGE_GAS_NEEDED, the stipend
# plus MESSAGE_OVERHEAD (90k: the worst message's calldata, guard word, failure record). A batch
# asks this once on top of its estimate: the estimate covers what the batch uses, and a node
# whose eth_estimateGas answers the gas USED rather than the least limit that succeeds
# (EthereumJS 0.10.5, the PoS devnet's) would otherwise leave less than this before the first
# message (InsufficientGas: every such delivery reverted).
MESSAGE_GAS_NEEDED = STIPEND_GAS + 90_000
# The most calldata one batch may carry. geth's pool refuses any transaction over 128 KiB
# (txMaxSize = 4 slots of 32 KiB, counted over the whole signed transaction: calldata plus
# ~110 bytes of envelope and signature), and a refused broadcast sends the same batch again
# every round. 120,000 bytes leaves ~11 KB for the envelope and the multiproof's growth; a
# lone message (at most 77 + 65,536 bytes, plus signatures and proof) always fits under it.
MAX_BATCH_CALLDATA = 120_000
# The reason a lone message whose delivery cannot fit in a block is failed with (the prefix
# its backoff is counted by, see EvmDelivery._too_big_for_a_block).
TOO_BIG_FOR_A_BLOCK = "its delivery alone needs more gas than a block holds"
# The reason a lone message whose dry run reverts is failed with (the prefix its backoff is
# counted by, see EvmDelivery._dry_run_reverted).
DRY_RUN_REVERTED = "dry run reverted"
UNSENT_COUNT_CAP = 16
"""The most prior failures :meth:`EvmDelivery._fail_unsent` counts: above both
:func:`dry_run_wait`'s last step (8) and :data:`RETRY_BACKOFF`'s (4), so every wait is exact
(the trail is read newest first until one more is found, within a bounded walk:
:meth:`relayer.ledger.Ledger.backoff_trail`)."""
DRY_RUN_FIRST_WAIT = 2.0
"""Seconds a lone message waits after its first reverted dry run; doubled at each one after."""
DRY_RUN_MAX_WAIT = 300.0
"""The most seconds a message waits between two dry runs (RETRY_BACKOFF's last step): what a
message that turns deliverable (its recipient fixed, the inbox unpaused) may wait at worst."""


def _naming(exc: WriteOutsideDomain, doing: str, ids: Sequence[str]) -> WriteOutsideDomain:
    """``exc`` with what the delivery was ``doing`` and the messages concerned, for the lease
    keeper's one error line: the ledger names the row it refused, but a transaction's row
    says nothing of the message the operator must look at (review of SEAM, L7)."""
    shown = ", ".join(ids[:3]) + (f" (+{len(ids) - 3} more)" if len(ids) > 3 else "")
    return WriteOutsideDomain(f"{exc} ({doing}: message(s) {shown or 'none known'})")


def dry_run_wait(reverted_before: int) -> float:
    """Seconds to wait after a dry run that reverted, given how many reverted before since
    the operator last retried: :data:`DRY_RUN_FIRST_WAIT` doubled each time, capped at
    :data:`DRY_RUN_MAX_WAIT`."""
    return min(DRY_RUN_FIRST_WAIT * 2.0 ** min(reverted_before, 32), DRY_RUN_MAX_WAIT)


def _inbox_slot(label: str) -> int:
    """The slot of the Inbox's state variable ``label``, from its compiled storage layout (so
    a change to the contract cannot silently move what the relayer proves)."""
    for entry in load_artifact("Inbox").storage_layout:
        if entry["label"] == label:
            return int(entry["slot"])
    raise RuntimeError(f"the Inbox artifact has no storage variable {label!r}")


def _inbox_field(label: str) -> tuple[int, int]:
    """(slot, byte offset) of the Inbox's packed state variable ``label``."""
    for entry in load_artifact("Inbox").storage_layout:
        if entry["label"] == label:
            return int(entry["slot"]), int(entry["offset"])
    raise RuntimeError(f"the Inbox artifact has no storage variable {label!r}")


GUARD_SLOT = _inbox_slot("delivered")
REVOKED_THROUGH = _inbox_field("revokedThrough")  # uint32, packed with epoch and threshold
CONSUMED = "nonce consumed by another message"
NO_EVIDENCE = (
    "A committee of this inbox was revoked, so the replay bit of the nonce does not prove "
    "that this message was accepted: check for its Delivered/HandleFailed event, then "
    "requeue or leave it (docs/relayer.md, recovery after a revocation)"
)
FAILED_SLOT = _inbox_slot("failedMessage")
OUTBOX_OF_SLOT = _inbox_slot("outboxOf")
PROOF_CHUNK = 100  # messages per eth_getProof (two slots each at most)
RECEIPT_BYTES_PER_GAS = 1.1
"""The most bytes of receipt JSON one gas can buy, with a margin: an empty ``LOG0`` costs 379
gas unrolled (``PUSH0 PUSH0 LOG0``) and writes ~380 bytes (anvil, geth); a batch's gas is
capped at the receipt cap over this (:meth:`EvmDelivery._gas_ceiling`)."""


def is_delivered_call(message: bytes) -> bytes:
    """Calldata of ``Inbox.isDelivered(origin, nonce)`` for a raw message (its replay bit under
    the origin's outbox the inbox trusts now): an endpoint's unproven answer, for ``status``.
    MalformedMessageError if ``message`` does not decode."""
    decoded = decode_message(message)
    return _is_delivered_call(decoded.origin, decoded.nonce)


def _is_delivered_call(origin: int, nonce: int) -> bytes:
    return IS_DELIVERED + abi_encode(["uint32", "uint32"], [origin, nonce])


def guard_slot(origin: int, outbox: bytes, nonce: int) -> int:
    """The storage slot of the replay-guard word holding ``nonce``'s bit:
    ``delivered[origin][outbox][nonce >> 8]`` in Solidity's nested-mapping layout."""
    base = mapping_slot(outbox, mapping_slot(origin.to_bytes(32, "big"), GUARD_SLOT))
    return mapping_slot((nonce >> 8).to_bytes(32, "big"), base)


# A failure record is one word (Inbox.Failure): the first 24 bytes of the parked message's id
# in its low 192 bits (the struct's first member sits at offset 0), then epoch and era.
FAILURE_ID_BITS = 192


def failure_key(origin: int, outbox: bytes, nonce: int) -> bytes:
    """``Inbox.failureKey(origin, outbox, nonce)``, ``keccak256(abi.encode(origin, outbox,
    nonce))``: the key of a parked message's failure record, read by ``failedMessage(key)``
    (reproof) or as a proven storage slot (:func:`failure_slot`). ``abi.encode`` puts each
    value in one 32-byte word; a 20-byte outbox (an address) is widened as its
    ``outbox_id`` is, on the left."""
    return keccak256(
        origin.to_bytes(32, "big") + outbox.rjust(32, b"\0") + nonce.to_bytes(32, "big")
    )


def failure_slot(origin: int, outbox: bytes, nonce: int) -> int:
    """The storage slot of ``failedMessage[failureKey(origin, outbox, nonce)]``: the one-word
    failure record whose low 192 bits are the first 24 bytes of the id of the message parked
    there (zero if none; :func:`parked_id_matches`)."""
    return mapping_slot(failure_key(origin, outbox, nonce), FAILED_SLOT)


def parked_id_matches(record_word: int, message_id: bytes) -> bool:
    """Whether the failure record ``record_word`` (see :func:`failure_slot`) is that of the
    message ``message_id``: its id field is the id's first 24 bytes. An empty record matches
    nothing."""
    stored = record_word & ((1 << FAILURE_ID_BITS) - 1)
    return stored != 0 and stored == int.from_bytes(message_id[: FAILURE_ID_BITS // 8], "big")


async def latest_accepted(
    evm: EvmChain, inbox: bytes, outbox: bytes, records: Sequence[MessageRecord]
) -> list[MessageRecord]:
    """The ``records`` (one origin's, from ``outbox``) whose replay-guard bit is set in
    ``inbox``'s *latest* state: which of them are worth a proven read, no more.

    One ``eth_getStorageAt`` per guard word, in one JSON-RPC batch: a word holds 256 nonces, so
    a batch of 100 consecutive nonces is one or two reads instead of one ``isDelivered``
    ``eth_call`` (an EVM execution on the node, and a request and answer to encode and parse
    here) per message. ``isDelivered(origin, nonce)`` reads this very bit under the outbox the
    inbox trusts for ``origin``; a batch is only built for an origin whose trusted outbox is the
    lane's (:meth:`EvmDelivery._held_origins`), so this is the same flag.

    An endpoint's word, never evidence: a lying "set" only buys a proven read that shows the
    truth (:meth:`EvmDelivery._confirmed_delivered`), a lying "clear" one redundant delivery
    (the inbox skips a replay). MalformedAnswer if an answer is not a 32-byte word."""
    words = {r.id: guard_slot(r.origin, outbox, r.nonce) for r in records}
    slots = sorted(set(words.values()))
    if not slots:
        return []
    target = to_hex(inbox[-20:])
    answers = await evm.rpc.call_batch(
        [("eth_getStorageAt", [target, quantity(slot), "latest"]) for slot in slots]
    )
    values = {
        slot: parse_quantity(answer, "guard word")
        for slot, answer in zip(slots, answers, strict=True)
    }
    return [r for r in records if values[words[r.id]] >> (r.nonce & 0xFF) & 1]


class AttestedLane(Protocol):
    """What :func:`attested_leaf` needs of an origin's lane (:class:`relayer.relay.Lane`)."""

    @property
    def outbox(self) -> bytes: ...

    @property
    def tree(self) -> IncrementalMerkleTree: ...

    @property
    def checkpoint_index(self) -> int: ...


def attested_leaf(lanes: Mapping[int, AttestedLane], message: bytes) -> bool:
    """Whether ``message`` is the leaf at its nonce in its origin lane's *attested* tree: the
    leaves 0..``checkpoint_index`` whose root a committee quorum signed for that outbox.

    The only evidence that a replay-guard bit (or any "nonce n was accepted" flag) is about
    THIS message: the inbox accepts at nonce n only the leaf at n under an attested root, so
    if the message is that leaf, the accepted one was this message. A record that is not (the
    bytes of another outbox, a lying origin endpoint's invention, a message orphaned by an
    origin reorg) reads as not delivered; it is then never recorded ``delivered`` (terminal)
    on another message's bit. False for bytes that are no message and for unknown origins."""
    try:
        decoded = decode_message(message)
    except MalformedMessageError:
        return False
    lane = lanes.get(decoded.origin)
    if lane is None or decoded.nonce > lane.checkpoint_index or decoded.nonce >= lane.tree.count:
        return False
    return lane.tree.leaf(decoded.nonce) == keccak256(message)


async def inbox_delivery_state(
    evm: EvmChain,
    inbox: bytes,
    header: EthHeader,
    messages: Sequence[bytes],
    outboxes: Mapping[int, bytes],
) -> dict[bytes, tuple[bool, bool]]:
    """For each raw message, by id: ``(nonce accepted, handle failed)`` in ``inbox`` at
    ``header``, from the replay-guard word and the failure record proven by ``eth_getProof``
    under the header's state root, never from an ``eth_call`` answer.

    ``outboxes`` is the outbox (32 bytes) of each origin domain as configured: the guard is
    kept per outbox, so a message of an origin not in it reads as not accepted (and is then
    sent again, which the inbox answers as a replay or refuses; never recorded delivered).

    The first flag is the guard bit of the message's (origin, outbox, nonce): it says that
    *some* message with that nonce from that outbox was accepted, not that this one was. A
    caller recording ``delivered`` — terminal — from it must also know that the message is the
    attested leaf at its nonce (:func:`attested_leaf`; :meth:`EvmDelivery._delivery_state`
    does both). The second is bound to the message: the failure record at (origin, outbox,
    nonce) holds this message's id. An RPC endpoint's word alone could have a message recorded
    delivered that never was (lost for good), or one delivered read as not (delivered again
    and again, at the relayer's expense)."""
    keys: dict[bytes, tuple[int | None, int, int | None]] = {}
    for message in messages:
        message_id = keccak256(message)
        word, bit, failed = None, 0, None
        try:
            decoded = decode_message(message)
        except MalformedMessageError:
            decoded = None  # no inbox accepts it: it reads as not accepted
        outbox = None if decoded is None else outboxes.get(decoded.origin)
        if decoded is not None and outbox is not None:
            word = guard_slot(decoded.origin, outbox, decoded.nonce)
            bit = 1 << (decoded.nonce & 0xFF)
            failed = failure_slot(decoded.origin, outbox, decoded.nonce)
        keys[message_id] = (word, bit, failed)
    state: dict[bytes, tuple[bool, bool]] = {}
    unique = list(keys)
    for start in range(0, len(unique), PROOF_CHUNK):
        chunk = unique[start : start + PROOF_CHUNK]
        slots = {s for i in chunk for s in (keys[i][0], keys[i][2]) if s is not None}
        values = (
            await evm.proven_slots(inbox, header, sorted(slots), "inbox delivery") if slots else {}
        )
        for i in chunk:
            word, bit, failed = keys[i]
            accepted = word is not None and values[word] & bit != 0
            parked = failed is not None and parked_id_matches(values[failed], i)
            state[i] = (accepted, parked)
    return state


RECEIPT_POLL = 0.25
"""Seconds between two reads of a destination's block number while batches wait for their
receipts: its own constant, not the operator's ``--poll`` (which paces idle rounds and may be
set high on a paid RPC; the receipt gate paced by it made every batch wait ``--poll`` seconds or
the whole ``escalate_after``). 0.25 s is what ``TxEngine.wait`` polls receipts at."""

GATE_WAIT = 2.0
"""The longest a batch waits for the block number to change before asking for its receipt
anyway: a frozen or lying number degrades the gate to one receipt every 2 s, never to one wait
of ``escalate_after``."""

CLOCK_READ_BOUND = 2.0
"""The longest a broadcast waits for the block number it is stamped with (:meth:`EvmDelivery.
_submit`): a slow ``eth_blockNumber`` must not hold a batch back; without it the receipt is
polled from the start."""


class BlockClock:
    """A destination's latest block number, read at most once per ``every`` seconds however
    many batches ask: the ``max_inflight`` batches waiting for their receipts share it.

    Each batch used to poll ``eth_getTransactionReceipt`` every 0.25 s from its broadcast on,
    ~4 empty answers per 1-second block per batch in flight (16 in a burst) before the one
    that counts. A batch now asks when the block number CHANGES (:meth:`EvmDelivery._mined`).

    An endpoint's block number is a hint of WHEN to look, never of what is mined. It is shared
    and cached, so one lie reaches every batch in flight: any change (up or down) triggers the
    asks, so a bogus high number costs one early ask and the next honest answer (lower) another
    one, not a wait until that height; a number that never moves costs one ask per
    :data:`GATE_WAIT`; an unreadable one hands the batch to ``TxEngine.wait``'s polling."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.number = -1
        self._read_at = -float("inf")
        self._lock = trio.Lock()

    @classmethod
    def for_receipts(cls, poll: float) -> BlockClock:
        """The clock of a delivery loop whose idle rounds are ``poll`` seconds apart: read every
        :data:`RECEIPT_POLL` seconds (or ``poll`` if shorter), whatever ``--poll`` is."""
        return cls(min(poll, RECEIPT_POLL))

    async def latest(self, evm: EvmChain) -> int:
        """The latest block number, read again if the last read is older than ``every``
        (one read at a time: the others wait for it and take its answer)."""
        async with self._lock:
            if trio.current_time() - self._read_at >= self.every:
                self.number = await evm.latest_number()
                self._read_at = trio.current_time()
        return self.number

    async def changed(self, evm: EvmChain, number: int, bound: float) -> bool:
        """Wait until the latest block number is other than ``number`` (higher OR lower), for
        ``bound`` seconds at most; False at once if the number cannot be read (an RPC error
        here must not keep a sent batch from its receipt), True otherwise: then it is time to
        ask for the receipt."""
        with trio.move_on_after(bound):
            try:
                while await self.latest(evm) == number:
                    await trio.sleep(self.every)
            except AdapterError as exc:  # RpcError, MalformedAnswer too
                log.debug("block number unreadable (%s): polling the receipt at once", exc)
                return False
        return True


class EvmDelivery:
    """The relayer's delivery to one EVM destination (:class:`relayer.family.Delivery`)."""

    def __init__(
        self, chain: ChainConfig, relayer: Relayer, *, fee_model: FeeModel = "eip1559"
    ) -> None:
        self.chain = chain
        self.relayer = relayer
        self.fee_model: FeeModel = fee_model
        # Message id -> the largest batch it may go in, halved each time a batch carrying it
        # reverts on chain (in memory: a restart re-bisects).
        self._batch_limit: dict[str, int] = {}
        # Whether this destination's pending transactions were all settled once (at start-up).
        self._settled = False
        # Hashes of pending transactions younger than confirm_timeout that the node still has
        # (a predecessor's in flight at a takeover): settled again every round until mined.
        self._watched: set[str] = set()
        # Whether the engine's next nonce must be read from the chain again at the end of a
        # settle: at the first one, and after one that dropped or reverted a transaction.
        self._nonce_stale = True
        # Origin domain -> the refusal last logged for it (see _trusted_only): logged once per
        # change, not every round.
        self._refused: dict[int, str] = {}
        # When to start asking for a sent batch's receipt (see BlockClock): one per delivery
        # loop (:meth:`_deliver_loop`); without one, a receipt is polled from the broadcast on.
        self._blocks: BlockClock | None = None
        # Receipts applied so far, and (that count, the final block number) at the last
        # finalization round that left nothing settleable: until one of the two changes, a
        # round reads no ledger (see _finalize_deliveries).
        self._receipts_applied = 0
        self._looked: tuple[int, int] | None = None
        # The inbox's localDomain() against the configured domain (a mismatch halts). Asked
        # at the start of a round until it was read, after a growing wait: a node down when
        # the lease was taken must not leave a wrong domain id unnoticed for the lease's whole
        # life (review of SEAM, L1), nor one lying endpoint flood the log (of FSEAM, M1).
        self._domain = DomainCheck("inbox", chain, relayer.metrics)

    async def run(self) -> None:
        """Deliver to the chain for ever (:meth:`_deliver_loop`)."""
        await self._deliver_loop(self.chain)

    async def _deliver_loop(self, chain: ChainConfig) -> None:
        """Deliver to ``chain`` forever: up to ``max_inflight`` batches at once, each one
        prepared, dry-run, sent and confirmed by its own task (the engine's lock keeps the
        nonces in order); ``claimed`` keeps a message in at most one batch at a time. Every
        round also records as delivered what the destination's final state shows delivered."""
        signer = self.relayer.relayer_signer()
        async with open_evm(chain, role="relayer-deliver") as evm:
            self.relayer.endpoints[f"{chain.name}/deliver"] = evm.rpc.endpoints
            engine = TxEngine(
                evm.rpc, signer, chain.chain_id or await evm.chain_id(), fee_model=self.fee_model
            )
            slots = trio.Semaphore(self.relayer.max_inflight)
            claimed: set[str] = set()
            self._blocks = BlockClock.for_receipts(self.relayer.poll)
            last_settle = trio.current_time()
            async with trio.open_nursery() as workers:
                while True:
                    try:
                        await self._check_domain(chain, evm)
                        # First, before anything below reads a lane (leasing: another relayer
                        # may have scanned and collected since; docs/relayer.md, leases).
                        await self.relayer.follow_origins(chain.domain)
                        if not self._settled or self._watched:
                            # Before anything is sent, and inside the try: a destination RPC
                            # down at start-up is retried next round, not the relayer's end.
                            # Then each round while a young transaction is still on its way.
                            await self._settle_pending(chain, engine)
                            last_settle = trio.current_time()
                        await self._finalize_deliveries(chain, evm)
                        batches = await self._next_batches(chain, evm, claimed)
                        if trio.current_time() - last_settle > self.relayer.confirm_timeout:
                            await self._settle_pending(chain, engine)
                            last_settle = trio.current_time()
                    except AdapterError as exc:  # RpcError, TxError, MalformedAnswer too
                        self.relayer.metrics.rpc_errors += 1
                        log.warning(
                            "deliver to %s: %s", chain.name, one_line(str(exc), ERROR_TEXT_LIMIT)
                        )
                        batches = []
                    except (UnknownRecord, IllegalTransition, InvalidReference) as exc:
                        # A move the ledger refuses (someone else moved a message between our
                        # read and our write): logged; the next round reads the ledger again.
                        log.error("deliver to %s: not recorded: %s", chain.name, exc)
                        batches = []
                    if not batches:
                        await trio.sleep(self.relayer.poll)
                    for origin, batch in batches:
                        await slots.acquire()
                        claimed.update(record.id for record in batch)
                        workers.start_soon(
                            partial(
                                self._deliver_batch,
                                chain,
                                evm,
                                engine,
                                self.relayer.lanes[origin],
                                batch,
                                done=partial(self._release, slots, claimed, batch),
                            )
                        )

    async def _check_domain(self, chain: ChainConfig, evm: EvmChain) -> None:
        """The inbox's ``localDomain()`` against the configured domain, on the delivery's own
        connection, if it is due (:class:`relayer.relay.DomainCheck`, which decides, and
        counts an attempt that cannot read it in ``rpc_errors``): RouteHalted if the
        endpoints settle on another one (such a relayer would dry-run every message sent to
        the configured domain into a revert, and skip every one sent to the real domain).
        Delivery goes on while it is unread (:attr:`DomainCheck.read`): the inbox refuses
        whatever is not addressed to it."""
        stated = partial(
            local_domain, evm, chain.contract("inbox"), f"{chain.name}: the inbox", chain.domain
        )
        await self._domain.ask(stated)

    @staticmethod
    def _release(slots: trio.Semaphore, claimed: set[str], batch: Sequence[MessageRecord]) -> None:
        claimed.difference_update(record.id for record in batch)
        slots.release()

    async def _next_batches(
        self, chain: ChainConfig, evm: EvmChain, claimed: set[str]
    ) -> list[tuple[int, list[MessageRecord]]]:
        """Attested messages for ``chain`` not already in a batch, of origins the inbox trusts
        as configured (:meth:`_held_origins`), cut into batches per origin.

        Held origins are decided BEFORE the page of records is chosen: the ledger hands out
        the oldest nonces of the lowest origin first, so a held origin's backlog as large as
        the page would otherwise fill it round after round and no other origin would ever be
        delivered to this chain (review of the governance fixes, finding 2). When the first
        page shows a held origin, the page is read again from the trusted origins only.

        A message from a batch that reverted on chain is only batched with others of the same
        size limit (:attr:`_batch_limit`), so the bisection of that batch carries on."""
        await self.relayer.db(self.relayer.requeue_due, chain.domain)
        limit = self.relayer.batch_size * self.relayer.max_inflight + len(claimed)
        records = await self.relayer.db(
            self.relayer.ledger.by_status,
            MessageStatus.ATTESTED,
            limit,
            destination=chain.domain,
        )
        if not records:
            return []  # an idle round proves nothing
        paged = {record.origin for record in records}
        held = await self._held_origins(chain, evm, paged)
        for origin, reason in sorted(held.items()):
            # Reported only for an origin with messages waiting for this chain: a lane that
            # does not route here is held silently.
            waiting: list[MessageRecord] = (
                records
                if origin in paged
                else await self.relayer.db(
                    self.relayer.ledger.by_status,
                    MessageStatus.ATTESTED,
                    1,
                    origin=origin,
                    destination=chain.domain,
                )
            )
            if waiting:
                self._report_held(chain, origin, reason)
        if held.keys() & paged:
            trusted = sorted(set(self.relayer.lanes) - held.keys() - {chain.domain})
            records = []
            for origin in trusted:  # each its own query: no origin's backlog hides another
                records += await self.relayer.db(
                    self.relayer.ledger.by_status,
                    MessageStatus.ATTESTED,
                    limit,
                    origin=origin,
                    destination=chain.domain,
                )
            records = records[:limit]  # ascending origin as before, same bound on the page
        groups: dict[tuple[int, int], list[MessageRecord]] = defaultdict(list)
        for record in records:
            if record.id not in claimed and record.origin not in held:
                limit_of = self._batch_limit.get(record.id, self.relayer.batch_size)
                groups[(record.origin, limit_of)].append(record)
        return [
            (origin, group[start : start + size])
            for (origin, size), group in groups.items()
            for start in range(0, len(group), size)
        ]

    async def _held_origins(
        self, chain: ChainConfig, evm: EvmChain, waiting: set[int]
    ) -> dict[int, str]:
        """The origin domains (of the relayer's lanes, and ``waiting``) whose outbox the inbox
        does not trust as the relayer's lane does, each with the reason: ``outboxOf`` of all
        of them in ONE ``eth_getProof`` under the final header (an endpoint's unproven word
        must not be able to hold a route back).

        The ledger keys messages by (origin, nonce), so a relayer follows ONE outbox per
        origin domain; when the inbox trusts another (an outbox replaced on chain) or none
        (the origin untrusted), every batch of it would revert. Nothing of it is sent and
        nothing is recorded: its messages stay ``attested`` (and :meth:`_report_held` says
        why) until the configuration and the inbox agree again (docs/relayer.md, "Replacing
        an outbox"). An origin with no lane is always held (no outbox is known for it)."""
        origins = sorted((set(self.relayer.lanes) | waiting) - {chain.domain})
        slots = {o: mapping_slot(o.to_bytes(32, "big"), OUTBOX_OF_SLOT) for o in origins}
        header = await evm.final_header()
        values = (
            await evm.proven_slots(
                chain.contract("inbox"), header, sorted(slots.values()), "inbox origins"
            )
            if slots
            else {}
        )
        held: dict[int, str] = {}
        for origin in origins:
            lane = self.relayer.lanes.get(origin)
            trusted = values[slots[origin]].to_bytes(32, "big")
            if lane is not None and trusted == lane.outbox:
                self._refused.pop(origin, None)
            elif lane is None:
                held[origin] = f"the relayer has no lane for origin domain {origin}"
            elif trusted == bytes(32):
                held[origin] = (
                    f"the inbox on {chain.name} does not trust origin {lane.chain.name} "
                    f"(domain {origin})"
                )
            else:
                held[origin] = (
                    f"the inbox on {chain.name} trusts outbox {to_hex(trusted)} for origin "
                    f"{lane.chain.name}, not the configured {to_hex(lane.outbox)} (a replaced "
                    "outbox needs a new origin domain id, docs/relayer.md)"
                )
        return held

    def _report_held(self, chain: ChainConfig, origin: int, reason: str) -> None:
        """One ERROR line per held origin with messages waiting, once per change of reason
        (not every round)."""
        if self._refused.get(origin) != reason:
            self._refused[origin] = reason
            lane = self.relayer.lanes.get(origin)
            name = str(origin) if lane is None else lane.chain.name
            log.error("deliver to %s: not delivering from %s: %s", chain.name, name, reason)

    async def _deliver_batch(
        self,
        chain: ChainConfig,
        evm: EvmChain,
        engine: TxEngine,
        lane: Lane,
        batch: Sequence[MessageRecord],
        *,
        done: Callable[[], None],
    ) -> None:
        """One batch from the ledger to a mined receipt; errors are logged, never raised
        (the messages stay in the ledger and the next round picks them up).

        A batch whose dry run reverts, or whose gas would not fit, is split in halves and the
        halves are tried at once: one message that cannot pass never holds up the others."""
        try:
            todo = [list(batch)]
            while todo:
                group = todo.pop()
                submission = await self._prepare(chain, evm, lane, group)
                if submission is not None:
                    todo += await self._submit(chain, evm, engine, submission)
        except AdapterError as exc:  # RpcError, TxError, MalformedAnswer too
            self.relayer.metrics.rpc_errors += 1
            # A node's words inside (a refused broadcast's): one bounded line (review L5).
            log.warning("deliver to %s: %s", chain.name, one_line(str(exc), ERROR_TEXT_LIMIT))
        except WriteOutsideDomain as exc:
            # The lease must end for good (see _deliver_loop), not this batch only.
            raise _naming(exc, "delivering", [r.id for r in batch]) from None
        except (UnknownRecord, IllegalTransition, InvalidReference) as exc:
            # A receipt or a race the ledger refuses to record: this batch's messages stay
            # where they are and the next rounds settle them; the relayer goes on.
            log.error("deliver to %s: not recorded: %s", chain.name, exc)
        finally:
            done()

    async def _prepare(
        self, chain: ChainConfig, evm: EvmChain, lane: Lane, group: Sequence[MessageRecord]
    ) -> Submission | None:
        """Build one ``process`` call for ``group``; None if nothing is left to send.

        Messages the relay policy refuses are set aside (``skipped``, with its reason). Messages
        the inbox already delivered in its *final* state (proven storage) are recorded as
        delivered; ones an endpoint shows delivered only in newer blocks are sent anyway. The
        rest pass the light client exactly as the inbox will check them — the attestation once,
        each message's origin, destination, outbox, nonce and inclusion — and a message that
        fails is recorded as failed with the reason instead of being sent.
        """
        group = await self._set_aside_oversized(group)
        group = await self.relayer.admitted(group)
        if not group:
            return None
        inbox = chain.contract("inbox")
        checkpoint, signatures = await self.relayer.db(
            self.relayer.checkpoint_for, lane
        )  # the gate, once
        # The unproven hint of which to prove: the guard words (one per 256 nonces) at latest,
        # not one ``isDelivered`` eth_call per message (the same bit, docs/decisions.md).
        seen = await latest_accepted(evm, inbox, lane.outbox, group)
        final, consumed = await self._confirmed_delivered(chain, evm, seen)
        if consumed:
            await self.relayer.db(
                self.relayer.ledger.transition,
                consumed,
                MessageStatus.SKIPPED,
                reason=f"{CONSUMED}? {NO_EVIDENCE}",
            )
        if final:
            await self.relayer.db(
                self.relayer.ledger.transition,
                final,
                MessageStatus.DELIVERED,
                reason="already delivered on chain (final)",
            )
            self.relayer.metrics.already_delivered += len(final)
        # Only what is delivered in *final* (proven) state is left out. One shown delivered
        # only at latest is sent anyway: that flag is one endpoint's unproven word (holding a
        # message back on it would let a lying endpoint stall it for ever), and if it is true
        # the inbox skips the message as a replay (AlreadyDelivered: one redundant delivery).
        skip = set(final)
        proven = await self.relayer.proven(
            chain, lane, checkpoint, [r for r in group if r.id not in skip]
        )
        sendable = _one_per_nonce([record for record, _ in proven])
        if not sendable:
            return None
        count = checkpoint.index + 1
        nonces = [record.nonce for record in sendable]
        proof = build_multiproof(lane.tree, nonces, count)
        try:
            # What the inbox checks of the batch proof, off chain first: a tree that disagrees
            # with the checkpoint costs a log line here, not a reverted transaction.
            verify_multiproof(
                checkpoint.root,
                [(r.nonce, bytes.fromhex(r.id[2:])) for r in sendable],
                proof,
                count,
            )
        except VerificationError as exc:
            await self.relayer.fail(
                [r.id for r in sendable], f"batch proof rejected: {exc}", sendable
            )
            return None
        calldata = PROCESS + abi_encode(
            ["(uint32,bytes32,bytes32,uint32)", "bytes", "bytes", "bytes32[]"],
            [
                (checkpoint.origin, checkpoint.outbox, checkpoint.root, checkpoint.index),
                b"".join(signatures),
                pack_messages([record.message for record in sendable]),
                list(proof),
            ],
        )
        return Submission(inbox, calldata, sendable)

    async def _set_aside_oversized(self, group: Sequence[MessageRecord]) -> list[MessageRecord]:
        """``group`` without the messages longer than the Inbox accepts (77 + 65,536 bytes),
        which are recorded ``skipped`` (undeliverable, with the reason). An EVM origin's Outbox
        never dispatches one, but an origin whose outbox does not cap bodies could; the Inbox
        reverts a whole batch on it (``MalformedMessage``), so it must never be batched."""
        oversized = [r for r in group if len(r.message) > MAX_MESSAGE_BYTES]
        if oversized:
            await self.relayer.db(
                self.relayer.ledger.transition,
                [r.id for r in oversized],
                MessageStatus.SKIPPED,
                reason=f"undeliverable: longer than the {MAX_MESSAGE_BYTES} bytes the Inbox "
                "accepts (it would revert every batch carrying it)",
            )
        return [r for r in group if len(r.message) <= MAX_MESSAGE_BYTES]

    async def _confirmed_delivered(
        self, chain: ChainConfig, evm: EvmChain, records: Sequence[MessageRecord]
    ) -> tuple[list[str], list[str]]:
        """The ids of the ``records`` the inbox shows accepted at the destination's final
        block (under its finality policy): only that state cannot be reorged away. Read from
        storage proven under that block's state root (:func:`inbox_delivery_state`), as
        ``delivered`` is terminal: an endpoint's ``eth_call`` answer is not enough.

        Second list: those whose acceptance is no evidence (:meth:`_bit_is_evidence`): this
        relayer never sent them, so it has no receipt naming them either; they are set aside
        for the operator instead of being recorded delivered."""
        if not records:
            return [], []
        final = await evm.final_header()
        state = await self._delivery_state(chain, evm, final, [r.message for r in records])
        flags = {r.id: state[bytes.fromhex(r.id[2:])] for r in records}
        accepted = [r.id for r in records if flags[r.id][0]]
        if any(flags[i] == (True, False) for i in accepted) and not await self._bit_is_evidence(
            chain, evm, final
        ):
            return [i for i in accepted if flags[i][1]], [i for i in accepted if not flags[i][1]]
        return accepted, []

    async def _bit_is_evidence(self, chain: ChainConfig, evm: EvmChain, header: EthHeader) -> bool:
        """Whether a replay-guard bit at an attested leaf's nonce proves that THIS message was
        accepted: true while no committee of the inbox was ever revoked (``revokedThrough``
        proven 0 at ``header``).

        The bit belongs to the nonce. Only a committee quorum can get a leaf accepted, so the
        attested leaf is the accepted one unless a committee signed another root for the same
        outbox: a compromised one, which its revocation says there was. After a revocation
        the forged leaves it had accepted may hold the nonces of honest messages (review of
        the governance fixes, finding 4): the bit alone then proves nothing, and ``delivered``
        needs the inbox's own ``Delivered(id)``/``HandleFailed(id)`` in the receipt of the
        transaction that carried the message, or the failure record bound to the id."""
        slot, offset = REVOKED_THROUGH
        inbox = chain.contract("inbox")
        (word,) = (await evm.proven_slots(inbox, header, [slot], "inbox revocation")).values()
        return (word >> (8 * offset)) & 0xFFFFFFFF == 0

    async def _carried(
        self, evm: EvmChain, inbox: bytes, tx_hash: str, ids: Sequence[str]
    ) -> set[str]:
        """The ``ids`` that the inbox's own logs in the receipt of ``tx_hash`` name as
        delivered or parked (not as replays): this transaction is where they were accepted."""
        answer = await evm.rpc.call("eth_getTransactionReceipt", [tx_hash])
        mined = parse_receipt(bytes.fromhex(tx_hash[2:]), answer)
        if mined is None:
            raise AdapterError(f"the receipt of {tx_hash} is gone (a final transaction)")
        outcome = _receipt_outcome(mined, inbox, ids)
        return set(outcome.delivered) | set(outcome.handle_failed)

    async def _delivery_state(
        self, chain: ChainConfig, evm: EvmChain, header: EthHeader, messages: Sequence[bytes]
    ) -> dict[bytes, tuple[bool, bool]]:
        """:func:`inbox_delivery_state` of ``messages`` at ``header``, where a message counts
        as accepted (and parked) only if it is the attested leaf at its nonce
        (:func:`attested_leaf`): a guard bit set by another message with the same nonce must
        not have this one recorded delivered."""
        lanes = self.relayer.lanes
        outboxes = {domain: lane.outbox for domain, lane in lanes.items()}
        state = await inbox_delivery_state(evm, chain.contract("inbox"), header, messages, outboxes)
        for message in messages:
            if not attested_leaf(lanes, message):
                state[keccak256(message)] = (False, False)
        return state

    async def _submit(
        self, chain: ChainConfig, evm: EvmChain, engine: TxEngine, submission: Submission
    ) -> list[list[MessageRecord]]:
        """Dry-run, record, broadcast, then wait for the receipt and record what it did.

        Returns the groups to try again at once: the two halves of a batch whose calldata is
        above :data:`MAX_BATCH_CALLDATA`, whose dry run reverted or whose gas would not fit in
        half a block (empty otherwise).

        The dry run is ``process`` (all or nothing, so its estimate is the gas of the whole
        batch); what is sent is ``processOrCut`` with the same arguments and a gas limit of that
        estimate with its margin *plus ONE full handle stipend*. The dry run cannot show what a
        recipient does in the real transaction (it may burn its whole stipend only then). Such
        a recipient costs ~500k plus its failure record (~28k), a little more than the stipend:
        the stipend and the estimate's margin together absorb one (with no margin, one cuts the
        batch's last message); with more, the inbox cuts the batch before the first message it
        cannot fund (``BatchCut``) instead of reverting it, and those messages go back to
        ``attested`` for the next batch (:meth:`_apply_receipt`). Issue #8 asked a stipend per
        message here, which capped a batch at ~20 messages and a block at the gas asked, not
        used (docs/performance.md). Unused gas is not paid for.

        A lone message gets no stipend: the inbox funds message 0's worst case before starting
        it (``MESSAGE_GAS_NEEDED`` is in the estimate), and nothing comes after it to cut. Its
        ask is held against a whole block instead of half of one (there is nothing to split):
        above it, the un-margined estimate is sent if that fits, and if even that does not,
        the message fails with a backoff (:meth:`_too_big_for_a_block`) rather than being
        dry-run and refused at every round.
        """
        records = list(submission.records)
        ids = [r.id for r in records]
        if len(records) > 1 and len(submission.calldata) > MAX_BATCH_CALLDATA:
            return _halves(records)  # a pool refuses it whatever its gas (before any RPC)
        fees = await engine.current_fees()
        try:
            estimate = await engine.estimate_gas(submission.inbox, submission.calldata, fees=fees)
        except RpcCallError as exc:
            self.relayer.metrics.dry_run_failures += 1
            if len(records) > 1:
                log.info(
                    "dry run of %d message(s) reverted (%s); trying each half on its own",
                    len(records),
                    one_line(exc.message),
                )
                return _halves(records)
            if not exc.reverted:
                # The node refused to run it (a rate limit, a bad request): nothing about the
                # message, so no growing wait; the first step of the usual backoff.
                self.relayer.metrics.rpc_errors += 1
                refusal = f"error {exc.code}: {one_line(exc.message)}"  # no URL in a reason
                await self.relayer.fail(ids, f"dry run refused by the node: {refusal}", records)
                return []
            error = one_line(exc.message)  # a hostile node's words: one bounded line
            if await self.relayer.db(self._dry_run_reverted, records[0], error):
                self.relayer.metrics.dry_run_backoffs += 1
            return []
        gas = estimate + MESSAGE_GAS_NEEDED
        if len(records) > 1:
            if gas > await self._gas_ceiling(evm):
                return _halves(records)
        else:
            # A lone message keeps the stipend too: the inbox needs MESSAGE_GAS_NEEDED left
            # before it, and a node whose eth_estimateGas answers the gas USED rather than the
            # least limit that succeeds (EthereumJS 0.10.5, the PoS devnet's) gives an estimate
            # far below that (each such delivery reverted: InsufficientGas). Only a message
            # whose estimate plus stipend is above the block does without it, sized against the
            # whole block (its estimate already covers its worst case on an honest node).
            block = (await evm.final_header()).gas_limit
            if gas > block:
                gas = estimate if estimate <= block else _unmargined(estimate, engine)
            if gas > block:
                await self.relayer.db(
                    self._too_big_for_a_block, chain.domain, records[0], gas, block
                )
                return []

        async def record(sent: SentTx, tx_hash: bytes) -> None:
            await self.relayer.db(
                self.relayer.ledger.record_transaction,
                NewTransaction(
                    chain=chain.domain,
                    hash=tx_hash,
                    sender=engine.address,
                    nonce=sent.nonce,
                    gas_limit=sent.gas,
                    max_fee_per_gas=sent.max_fee,
                    max_priority_fee_per_gas=sent.priority_fee,
                    replaces=sent.hashes[-1] if sent.hashes else None,
                ),
                ids,
            )

        sent_at_block = await self._stamp(evm)
        try:
            sent = await engine.send(
                submission.inbox,
                PROCESS_OR_CUT + submission.calldata[len(PROCESS) :],
                gas=gas,
                fees=fees,
                before_broadcast=record,
            )
        except TxError as exc:
            await self.relayer.db(self._broadcast_failed, chain.domain, ids, str(exc))
            raise
        self.relayer.metrics.batches += 1
        try:
            mined = await self._mined(evm, engine, sent, sent_at_block, record)
        except TxReverted as exc:
            await self.relayer.db(self._reverted, chain.domain, exc, ids)
        except TxError as exc:  # not mined in time: _settle_pending picks it up later
            log.warning("deliver to %s: %s", chain.name, one_line(str(exc), ERROR_TEXT_LIMIT))
        else:
            await self.relayer.db(self._apply_receipt, chain, mined, ids, known=records)
        return []

    async def _stamp(self, evm: EvmChain) -> int | None:
        """The destination's latest block number as a batch is broadcast, where its receipt
        gate starts (:meth:`_mined`); None (no gate: the receipt is polled from the start, as
        before) without a clock, if it cannot be read, or if reading it takes longer than
        :data:`CLOCK_READ_BOUND`: a slow ``eth_blockNumber`` must not delay the broadcast."""
        if self._blocks is None:
            return None
        with trio.move_on_after(CLOCK_READ_BOUND):
            try:
                return await self._blocks.latest(evm)
            except AdapterError:
                return None
        return None

    async def _mined(
        self,
        evm: EvmChain,
        engine: TxEngine,
        sent: SentTx,
        sent_at_block: int | None,
        record: BroadcastHook,
    ) -> MinedTx:
        """``sent`` once mined (TxReverted if it reverted, TxError if not mined within
        ``confirm_timeout``).

        Its receipt is asked for each time the destination's block number changes
        (:class:`BlockClock`, shared by every batch in flight), not every 0.25 s: until
        ``escalate_after`` has passed, a transaction not mined in the first block after its
        broadcast waits for the next one, not for four more empty answers. A number that does
        not change for :data:`GATE_WAIT` seconds gets an ask anyway, so a frozen or lying
        clock costs at most that per ask. Then, or at once if the block number cannot be read
        (or there is no clock: ``_submit`` called on its own), ``TxEngine.wait`` polls and
        bumps the fees of a stuck transaction exactly as before, given what is left of
        ``confirm_timeout`` but at least one more ask (:data:`RECEIPT_POLL`): a transaction
        mined in the gate's last moments is not failed as "not mined" unasked."""
        started = trio.current_time()
        blocks = self._blocks
        if blocks is not None and sent_at_block is not None:
            bound = min(engine.escalate_after, self.relayer.confirm_timeout)
            seen = sent_at_block
            while (left := bound - (trio.current_time() - started)) > 0:
                if not await blocks.changed(evm, seen, min(left, GATE_WAIT)):
                    break  # an unreadable number: TxEngine.wait from here
                seen = blocks.number
                for tx_hash in reversed(sent.hashes):
                    try:
                        found = await engine.receipt(tx_hash)
                    except RpcError:  # as TxEngine.wait: no answer, ask again later
                        found = None
                    if found is not None:
                        return replace(found, nonce=sent.nonce, fee_model=sent.fee_model)
        left = self.relayer.confirm_timeout - (trio.current_time() - started)
        return await engine.wait(sent, timeout=max(left, RECEIPT_POLL), before_broadcast=record)

    @staticmethod
    async def _gas_ceiling(evm: EvmChain) -> int:
        """Half the gas limit of the destination's final block: the most one batch may ask
        for, so that a batch always fits in a block with room for others (a larger one is split
        instead). From the final header (hash-checked, agreed by the rpc quorum), not from the
        ``latest`` block's JSON: an endpoint inflating that would have batches the chain refuses
        at every broadcast, the same batch each round (a block's limit moves by at most 1/1024
        per block, so the final one is close enough).

        And no more than the receipt cap allows (:data:`RECEIPT_BYTES_PER_GAS`): recipients may
        spend their gas on empty logs, each byte of receipt JSON for about a gas, so a batch
        of half a 72M-gas block could write a receipt over the 32 MiB cap, which no endpoint
        would then be read for: ``TxEngine.wait`` polled until its timeout and a carrier that
        succeeded became a TxError. Binds only where half the block limit is above
        cap / 1.1 (at the default cap, blocks over ~61M gas)."""
        receipt_cap = evm.rpc.cap_of("eth_getTransactionReceipt")
        half_block = (await evm.final_header()).gas_limit // 2
        return min(half_block, int(receipt_cap / RECEIPT_BYTES_PER_GAS))

    def _too_big_for_a_block(
        self, domain: int, record: MessageRecord, gas: int, block: int
    ) -> None:
        """Fail a lone ``record`` whose delivery needs ``gas`` (the dry run's, un-margined)
        where the destination's final block holds ``block``: no node would take it. It waits
        the usual backoff (:data:`RETRY_BACKOFF`) by how often this happened since the
        operator last retried it (:meth:`_fail_unsent`: a block limit can rise)."""
        self._fail_unsent(
            record,
            TOO_BIG_FOR_A_BLOCK,
            f"{gas:,} gas where the destination's final block holds {block:,} (domain {domain})",
            lambda before: RETRY_BACKOFF[min(before, len(RETRY_BACKOFF) - 1)],
        )

    def _dry_run_reverted(self, record: MessageRecord, error: str) -> bool:
        """Fail a lone ``record`` whose dry run reverted (``error``: the node's words, one
        bounded line), to be dry-run again after :func:`dry_run_wait` of the reverted dry runs
        since the operator last retried it (:meth:`_fail_unsent`); False if it moved on.

        Such a message was never submitted, so its ``attempts`` (the usual backoff's count)
        never grows: it was dry-run every 2 s for ever, one ``eth_estimateGas`` each time, and
        a flood of messages an inbox refuses (a recipient that always reverts, a destination
        domain the inbox is not) kept the relayer busy with nothing else. It may turn
        deliverable (its recipient fixed, the inbox unpaused)."""
        return self._fail_unsent(record, DRY_RUN_REVERTED, error, dry_run_wait)

    def _fail_unsent(
        self, record: MessageRecord, prefix: str, detail: str, wait: Callable[[int], float]
    ) -> bool:
        """Fail a lone ``record`` that was never sent (no fee paid, so never given up) with
        reason ``prefix: detail``, to be tried again after ``wait(n)`` seconds, ``n`` being how
        often it failed with ``prefix`` before since the operator last retried it: counted from
        the audit trail, so restarts do not reset it, and ``passerelle retry`` starts it over.
        False if it moved on meanwhile (an operator's skip, another relayer).

        The count reads the trail newest first, a page at a time, only until it has
        :data:`UNSENT_COUNT_CAP` + 1 failures with ``prefix`` (both waits stop growing well
        below it) or the operator's newest retry (:meth:`Ledger.backoff_trail`, bounded): a
        message stuck for months has a trail of tens of thousands of events, and this runs
        inside the write transaction (on SQLite the whole ledger's lock; review of SEAM,
        M2)."""
        with self.relayer.ledger.atomic() as batch:
            if batch.movable([record.id], MessageStatus.FAILED) != [record.id]:
                return False
            recent = batch.backoff_trail(
                record.id, prefix, reset=OPERATOR_RETRY, newest=UNSENT_COUNT_CAP + 1
            )
            before = recent_failures(recent, prefix, UNSENT_COUNT_CAP)
            delay = wait(before)
            times = f"{before + 1}" if before < UNSENT_COUNT_CAP else f"over {UNSENT_COUNT_CAP}"
            reason = f"{prefix}: {detail}; {times} time(s), next try in {delay:.0f} s"
            log.warning("message %s: %s", record.id, reason)
            batch.transition(
                [record.id], MessageStatus.FAILED, reason=reason, retry_at=time.time() + delay
            )
        return True

    def _reverted(self, domain: int, exc: TxReverted, ids: Sequence[str]) -> None:
        """A delivery that reverted on chain although its dry run passed.

        The batch is bisected: each half is retried at once, and only batched with messages of
        the same bisection from then on; a message that still reverts alone is the culprit and
        waits a backoff that grows with its own attempts, so the honest messages of the batch
        are delivered after at most ~log2(batch size) reverted transactions.
        """
        with self.relayer.ledger.atomic() as batch:
            batch.update_transaction(
                domain,
                exc.tx_hash,
                TxStatus.FAILED,
                block_number=exc.block_number,
                gas_used=exc.gas_used,
                error=str(exc),
            )
            records = [r for i in ids if (r := batch.get(i)) is not None]
            # A message already moved on (delivered elsewhere, re-queued) is left alone.
            waiting = [r for r in records if r.status == MessageStatus.SUBMITTED]
            if len(waiting) > 1:
                limit = (len(waiting) + 1) // 2
                for r in waiting:
                    self._batch_limit[r.id] = min(limit, self._batch_limit.get(r.id, limit))
                batch.transition(
                    [r.id for r in waiting],
                    MessageStatus.FAILED,
                    reason=f"{exc}; retrying in batches of at most {limit}",
                    retry_at=time.time(),
                )
            for r in waiting if len(waiting) == 1 else []:
                self._batch_limit[r.id] = 1
                reason = f"{ALONE_REVERTS} ({exc})"
                # Each try is a reverted transaction the relayer pays: bounded, counted in the
                # audit trail so that restarts do not reset it (an operator can re-queue). Read
                # bounded (Ledger.backoff_trail: the newest such failures, back to the
                # operator's retry at most), as _fail_unsent reads it: this runs inside the
                # write transaction and a trail only grows (review RFINAL, L5). Counted up to
                # what the decision needs, so one given up says MAX_DELIVERY_ATTEMPTS times.
                recent = batch.backoff_trail(
                    r.id, ALONE_REVERTS, reset=OPERATOR_RETRY, newest=MAX_DELIVERY_ATTEMPTS
                )
                alone = recent_failures(recent, ALONE_REVERTS, MAX_DELIVERY_ATTEMPTS - 1)
                if alone + 1 >= MAX_DELIVERY_ATTEMPTS:
                    batch.transition(
                        [r.id], MessageStatus.FAILED, reason=f"{reason}, {alone + 1} times: gave up"
                    )
                    continue
                delay = RETRY_BACKOFF[min(r.attempts, len(RETRY_BACKOFF) - 1)]
                batch.transition(
                    [r.id], MessageStatus.FAILED, reason=reason, retry_at=time.time() + delay
                )

    def _broadcast_failed(self, domain: int, ids: Sequence[str], error: str) -> None:
        """Back to ``attested`` after a broadcast the node refused (``error``: its words
        inside ours), the pending rows of ``ids`` failed: the error stored as one bounded
        line (a forged second line in ``status``, a terminal escape: review of FSEAM, L5)."""
        error = one_line(error, ERROR_TEXT_LIMIT)
        with self.relayer.ledger.atomic() as batch:
            for tx in batch.transactions(chain=domain, status=TxStatus.PENDING):
                linked = set(batch.transaction_messages(domain, tx.hash))
                if linked & set(ids):
                    batch.update_transaction(domain, tx.hash, TxStatus.FAILED, error=error)
            batch.transition(ids, MessageStatus.ATTESTED, reason=f"broadcast failed: {error}")

    def _apply_receipt(
        self,
        chain: ChainConfig,
        mined: MinedTx,
        ids: Sequence[str],
        *,
        known: Sequence[MessageRecord] = (),
    ) -> None:
        """Record a mined delivery transaction; its messages stay ``submitted`` until the
        block is final (:meth:`_finalize_deliveries`).

        ``known`` are the batch's records as the relayer last read them (the submit path has
        them; a settle after a restart does not): only a hint of where to read the batch's
        rows in ONE query (:func:`_current_rows`), never trusted for their status.

        The mined hash becomes each message's carrier (a fee bump may have sent several hashes
        for the nonce; the others are marked replaced). Only logs the inbox itself emitted
        about this batch count: a recipient runs inside the transaction and can emit
        look-alike events about any id. They feed the metrics, and the inbox's ``BatchCut``
        sends the messages it did not start (nonce at or above the cut) back to ``attested``
        at once, for the next batch, neither failed nor waiting for finality (each re-send
        counts one more ``attempts``, as any entry into ``submitted`` does). A cut counts only
        if it matches the batch (:meth:`ReceiptOutcome.cut_nonce`). Believing a lying
        endpoint's cut costs one redundant delivery of those messages (the inbox skips a
        replay). After a committee revocation it can cost more: a guard bit is then no
        evidence, the redundant transaction becomes the carrier of messages that were in fact
        delivered, its receipt shows them only ``AlreadyDelivered``, and they are set aside
        for the operator (:meth:`_confirmed_delivered`), as a fake "dropped" answer could
        already do. Delivery itself is still recorded only from proven state.
        """
        outcome = _receipt_outcome(mined, chain.contract("inbox"), ids)
        domain = chain.domain
        with self.relayer.ledger.atomic() as batch:
            tx = batch.get_transaction(domain, mined.hash)
            # Read before the update below, which may change this very row object.
            was = None if tx is None else (tx.status, tx.nonce, tx.hash)
            sender = None if tx is None else tx.sender
            batch.update_transaction(
                domain,
                mined.hash,
                TxStatus.CONFIRMED,
                block_number=mined.block_number,
                gas_used=mined.gas_used,
                effective_gas_price=mined.effective_gas_price,
                fee_paid=mined.fee_paid,
            )
            # Pending, or replaced: the hash a fee bump superseded is often the one mined,
            # and then it (not the newest hash, which can never be mined) carries the batch.
            if was is not None and was[0] in (TxStatus.PENDING, TxStatus.REPLACED):
                _, nonce, mined_hash = was
                # Each message's status and nonce as this transaction reads them before the
                # moves below (which never touch a message both moves: see the cut below).
                rows = _current_rows(batch, ids, known)
                carried = [
                    i
                    for i in ids
                    if (m := rows[i]) is not None
                    and m.status in (MessageStatus.SUBMITTED, MessageStatus.ATTESTED)
                ]
                cut_from = outcome.cut_nonce([m.nonce for i in ids if (m := rows[i]) is not None])
                if outcome.cut is not None and cut_from is None:
                    log.warning(
                        "delivery %s: ignoring a BatchCut%s that does not match its batch",
                        to_hex(mined.hash),
                        outcome.cut,
                    )
                cut = (
                    []
                    if cut_from is None
                    else [i for i in carried if (m := rows[i]) and m.nonce >= cut_from]
                )
                batch.transition(
                    [i for i in carried if i not in cut],
                    MessageStatus.SUBMITTED,
                    tx_hash=mined.hash,
                    reason=f"mined in block {mined.block_number}; waiting for it to be final",
                )
                # Only the ones that actually move: one already back in ``attested`` (a
                # broadcast refused, then mined after all) was not cut by this receipt. Their
                # status read above is still current, so no second read is needed: the move to
                # ``submitted`` left them out, and past ``attested`` this destination's messages
                # are moved only under its deliver: lease, which this transaction holds (the
                # ledger refuses a fenced write outside its domain), or by writers that hold
                # the whole ledger. Its own lock is the destination's, not the ledger's; should
                # one move anyway, transition() re-reads them locked and refuses a bad move.
                cut = [
                    i
                    for i in cut
                    if (m := rows[i]) is not None
                    and m.status != MessageStatus.ATTESTED
                    and MessageStatus.ATTESTED in TRANSITIONS[m.status]
                ]
                if cut:
                    batch.transition(
                        cut,
                        MessageStatus.ATTESTED,
                        reason=f"the inbox cut transaction {to_hex(mined.hash)}'s batch before "
                        f"nonce {cut_from} for want of gas (BatchCut): in the next batch",
                    )
                self.relayer.metrics.cut_messages += len(cut)
                # The other broadcasts of THIS key's nonce can never be mined now. Only this
                # key's: several relayers deliver to one chain (leases; a takeover watches its
                # predecessor's transactions), each key with its own nonces, and another key's
                # transaction at the same nonce number is still on its way. A sibling that
                # carried another batch (not a fee bump of this one, whose messages moved to
                # the newer hash when it was recorded) gives its messages back to ``attested``:
                # left ``submitted`` on a replaced carrier, nothing would ever settle them.
                for sibling in batch.transactions(chain=domain, status=TxStatus.PENDING):
                    if (
                        sibling.nonce == nonce
                        and sibling.sender == sender
                        and sibling.hash != mined_hash
                    ):
                        batch.update_transaction(
                            domain, sibling.hash, TxStatus.REPLACED, error="another hash mined"
                        )
                        orphans = [
                            i
                            for i in batch.transaction_messages(domain, sibling.hash)
                            if (orphan := batch.get(i)) is not None
                            and orphan.status == MessageStatus.SUBMITTED
                            and orphan.delivery_tx_hash == sibling.hash
                        ]
                        if orphans:
                            batch.transition(
                                orphans,
                                MessageStatus.ATTESTED,
                                reason=f"its transaction's nonce was taken by {to_hex(mined.hash)}",
                            )
        self._receipts_applied += 1  # something may be settleable: the next round looks
        self.relayer.metrics.redundant_deliveries += len(outcome.already)
        self.relayer.metrics.handle_failed += len(outcome.handle_failed)
        self.relayer.metrics.gas_used += mined.gas_used
        self.relayer.metrics.fees_paid += mined.fee_paid

    async def _finalize_deliveries(self, chain: ChainConfig, evm: EvmChain) -> None:
        """Record as ``delivered`` the submitted messages whose delivery transaction is mined
        at or below the destination's final block and that ``delivered(id)`` reads true for
        in that final state; ones it reads false for (their transaction was reorged away) go
        back to ``attested``. ``delivered`` is terminal, so it is only written for final
        state."""
        # Two reads of what changed (submitted messages whose carrier is mined, then those at
        # or below the final block), not a page of every submitted row and each carrier on
        # its own; the final block is only asked of a node once something can be final.
        # Both reads cost in proportion to the not-yet-final backlog (~230k rows at 300 msg/s
        # behind Ethereum's ~13 min finality), so they are skipped while neither a receipt
        # was applied here nor the final block moved since a round that left nothing to
        # settle (one final-header read instead). In memory only: a restart costs one full
        # look; another relayer's carrier on this chain (leases) waits at most for the next
        # final block here, and that relayer settles it itself. With nothing mined there is
        # no backlog, and the lowest-block read is as cheap as it gets: it is done each round.
        ledger = self.relayer.ledger
        applied = self._receipts_applied
        final = None
        if self._looked is not None and self._looked[0] == applied:
            final = await evm.final_header()
            if final.number == self._looked[1]:
                return
        lowest = await self.relayer.db(ledger.lowest_mined_delivery, chain.domain)
        if lowest is None:
            self._looked = None
            return
        if final is None:
            final = await evm.final_header()
        if lowest > final.number:
            self._looked = (applied, final.number)
            return
        limit = self.relayer.batch_size * self.relayer.max_inflight
        rows = await self.relayer.db(ledger.settled_deliveries, chain.domain, final.number, limit)
        # A full page may hide more behind it: look again next round whatever happens.
        self._looked = None
        carriers: dict[str, list[str]] = defaultdict(list)
        messages: dict[str, bytes] = {}
        for tx_hash, message_id, message in rows:
            carriers[tx_hash].append(message_id)
            messages[message_id] = message
        settled = list(carriers.items())
        if not settled:  # its carrier moved on between the two reads
            return
        ids = [i for _, group in settled for i in group]
        # Proven storage, not eth_call: a lying endpoint must neither have an undelivered
        # message recorded delivered (terminal) nor a delivered one sent again for ever.
        state = await self._delivery_state(chain, evm, final, [messages[i] for i in ids])
        flags = {i: state[bytes.fromhex(i[2:])] for i in ids}
        consumed: set[str] = set()
        doubtful = {
            tx_hash: [i for i in group if flags[i] == (True, False)] for tx_hash, group in settled
        }
        if any(doubtful.values()) and not await self._bit_is_evidence(chain, evm, final):
            inbox = chain.contract("inbox")
            for tx_hash, group in doubtful.items():
                if group:
                    consumed |= set(group) - await self._carried(evm, inbox, tx_hash, group)
        await self.relayer.db(self._record_final, chain, final.number, settled, flags, consumed)
        if len(rows) < limit:  # recorded: all that was settleable at this final block
            self._looked = (applied, final.number)

    def _record_final(
        self,
        chain: ChainConfig,
        final_block: int,
        settled: Sequence[tuple[str, Sequence[str]]],
        flags: dict[str, tuple[bool, bool]],
        consumed: Collection[str] = (),
    ) -> None:
        """Record what the final state shows (see :meth:`_finalize_deliveries`); ``consumed``
        are accepted nonces with no evidence that this message was the one accepted
        (:meth:`_bit_is_evidence`): set aside, never ``delivered``."""
        with self.relayer.ledger.atomic() as batch:
            for tx_hash, carried in settled:
                doubtful = [i for i in carried if i in consumed]
                if doubtful:
                    batch.transition(
                        doubtful,
                        MessageStatus.SKIPPED,
                        reason=f"{CONSUMED}: transaction {tx_hash} found it already accepted "
                        f"(AlreadyDelivered) on {chain.name}. {NO_EVIDENCE}",
                    )
                    for i in doubtful:
                        self._batch_limit.pop(i, None)
                ids = [i for i in carried if i not in consumed]
                handled = [i for i in ids if flags[i] == (True, False)]
                unhandled = [i for i in ids if flags[i] == (True, True)]
                # Back to attested only what is still ours to move (not set aside meanwhile).
                lost = batch.movable([i for i in ids if not flags[i][0]], MessageStatus.ATTESTED)
                batch.transition(
                    handled,
                    MessageStatus.DELIVERED,
                    tx_hash=tx_hash,
                    reason=f"delivered in final block {final_block} of {chain.name}",
                )
                batch.transition(
                    unhandled,
                    MessageStatus.DELIVERED,
                    tx_hash=tx_hash,
                    reason="accepted by the inbox, but the recipient's handle failed; anyone "
                    "can retry it on chain",
                )
                if lost:
                    batch.transition(
                        lost,
                        MessageStatus.ATTESTED,
                        reason=f"transaction {tx_hash} mined but not in the final chain "
                        f"(block {final_block}): delivering again",
                    )
                for i in handled + unhandled:
                    self._batch_limit.pop(i, None)
                self.relayer.metrics.delivered += len(handled) + len(unhandled)
                if handled or unhandled:
                    self.relayer.last_delivered[chain.name] = time.time()

    async def _settle_pending(self, chain: ChainConfig, engine: TxEngine) -> None:
        """Settle transactions the ledger has as pending for longer than ``confirm_timeout``
        (all of them at start-up, and the young ones being watched): mined ones are recorded,
        unknown ones count as dropped.

        A young transaction (sent less than ``confirm_timeout`` ago) that is not mined yet is
        called dropped only if the node does not know it (:meth:`_in_pool`). At a takeover
        the predecessor's last batches are exactly that, on their way from its key: calling
        them dropped would send every message again (each an ``AlreadyDelivered`` once the
        first is mined). They are watched instead, settled again every round until mined, or
        dropped once old. A node that lies either way costs a redundant delivery (the inbox
        skips the replay) or a wait of ``confirm_timeout``, never a message.

        One transaction that cannot be settled is logged and skipped: it never stops the
        relayer (a receipt is chain data, and chain data is not trusted to be well-behaved)."""
        pending = await self.relayer.db(
            self.relayer.ledger.transactions, chain=chain.domain, status=TxStatus.PENDING
        )
        cutoff = time.time() - self.relayer.confirm_timeout
        watched, self._watched = self._watched, set()
        examined: set[str] = set()
        try:
            for tx in pending:
                young = tx.submitted_at > cutoff
                if self._settled and young and tx.hash not in watched:
                    continue
                await self._settle_one(chain, engine, tx.hash, young=young)
                examined.add(tx.hash)
        finally:
            # A settle cut short (an RPC error leaves the loop) keeps watching what it did not
            # get to: those are skipped as young otherwise, until the next periodic settle.
            # (Only hashes still pending: one settled elsewhere is not watched for ever.)
            self._watched |= ({tx.hash for tx in pending} & watched) - examined
        if self._nonce_stale:
            # Only at the first settle, or when a nonce was given back (dropped) or used up
            # (reverted): a read of the pending count races this relayer's own sends, so it
            # is not done every round while young transactions are watched.
            await engine.sync_nonce()
            self._nonce_stale = False
        self._settled = True

    async def _settle_one(
        self, chain: ChainConfig, engine: TxEngine, hex_hash: str, *, young: bool
    ) -> None:
        """Settle one pending transaction (:meth:`_settle_pending`)."""
        ids: list[str] = []
        try:
            ids = await self.relayer.db(
                self.relayer.ledger.transaction_messages, chain.domain, hex_hash
            )
            try:
                mined = await engine.receipt(bytes.fromhex(hex_hash[2:]))
            except TxReverted as exc:
                self._nonce_stale = True
                await self.relayer.db(self._reverted, chain.domain, exc, ids)
                return
            if mined is not None:
                await self.relayer.db(self._apply_receipt, chain, mined, ids)
            elif young and await self._in_pool(engine, hex_hash):
                self._watched.add(hex_hash)
            else:
                self._nonce_stale = True
                await self.relayer.db(self._dropped, chain.domain, hex_hash, ids)
        except WriteOutsideDomain as exc:
            # The lease must end for good (see _deliver_loop), not be retried each round.
            raise _naming(exc, f"settling transaction {hex_hash}", ids) from None
        except (UnknownRecord, IllegalTransition, InvalidReference, MalformedAnswer) as exc:
            # A garbled receipt is a hostile or broken node's, not the ledger's fault: this
            # transaction stays pending (the next settle asks again), the others settle.
            if young:
                self._watched.add(hex_hash)
            log.error("deliver to %s: cannot settle transaction %s: %s", chain.name, hex_hash, exc)

    @staticmethod
    async def _in_pool(engine: TxEngine, tx_hash: str) -> bool:
        """Whether the node knows ``tx_hash`` (``eth_getTransactionByHash`` answers an object:
        it waits in the pool). No answer (null) is "never broadcast, or evicted"."""
        answer = await engine.rpc.call("eth_getTransactionByHash", [tx_hash])
        if answer is not None and not isinstance(answer, dict):
            raise MalformedAnswer(f"eth_getTransactionByHash answered {type(answer).__name__}")
        return answer is not None

    def _dropped(self, domain: int, tx_hash: str, ids: Sequence[str]) -> None:
        """A recorded transaction the chain does not know: its messages go back to attested.

        Only messages this very hash still carries move (after a fee bump the newer hash
        carries them). Delivering them again is safe: the inbox skips anything already
        delivered.
        """
        with self.relayer.ledger.atomic() as batch:
            current = batch.get_transaction(domain, tx_hash)
            if current is None or current.status != TxStatus.PENDING:
                return
            batch.update_transaction(
                domain, tx_hash, TxStatus.FAILED, error="not found after restart"
            )
            still = [
                i
                for i in ids
                if (m := batch.get(i)) is not None
                and m.status == MessageStatus.SUBMITTED
                and m.delivery_tx_hash == tx_hash
            ]
            if still:
                batch.transition(still, MessageStatus.ATTESTED, reason="transaction dropped")


@dataclass(frozen=True)
class Submission:
    """One ``process`` call ready to send: the inbox, the calldata, the messages it carries."""

    inbox: bytes
    calldata: bytes
    records: Sequence[MessageRecord]


@dataclass
class ReceiptOutcome:
    """Which messages a delivery transaction delivered, skipped as replays, or failed to
    handle, and the nonce before which the inbox cut the batch (``BatchCut``), if it did."""

    delivered: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    handle_failed: dict[str, str] = field(default_factory=dict)
    # (position, nonce) of the inbox's LAST ``BatchCut``: the outer batch's, as the inbox
    # returns right after emitting it (an inner batch re-entered from a recipient could only
    # come earlier; none can cut today, a handle's 500k being below MESSAGE_GAS_NEEDED).
    cut: tuple[int, int] | None = None

    def cut_nonce(self, nonces: Collection[int]) -> int | None:
        """The nonce the inbox cut the batch before, if its ``BatchCut`` is this batch's:
        the batch (``nonces``, its messages' nonces) holds that nonce at that position in
        ascending order, the order the inbox numbers them in. Otherwise None: a cut that
        disagrees with the batch names nothing it carried, and moving messages on it could
        send back ones that were delivered."""
        if self.cut is None:
            return None
        position, nonce = self.cut
        ordered = sorted(set(nonces))
        if position < len(ordered) and ordered[position] == nonce:
            return nonce
        return None


def _receipt_outcome(mined: MinedTx, inbox: bytes, ids: Sequence[str]) -> ReceiptOutcome:
    """What the inbox's own events in ``mined`` say about the messages of this batch.

    A log counts only if the inbox emitted it (``address``) and it names one of ``ids``: the
    recipients' ``handle`` runs inside the same transaction and can emit an event with the
    inbox's signature about any id, so anything else in the receipt is noise, not evidence.
    """
    outcome = ReceiptOutcome()
    wanted = {i.lower() for i in ids}
    for entry in mined.logs:
        if entry.address != inbox[-20:] or not entry.topics:
            continue
        if entry.topics[0] == TOPIC_BATCH_CUT and len(entry.data) == 64:
            # (uint256 position, uint32 nonce); the last one counts (ReceiptOutcome.cut).
            outcome.cut = (
                int.from_bytes(entry.data[:32], "big"),
                int.from_bytes(entry.data[32:], "big"),
            )
            continue
        if len(entry.topics) < 2:
            continue
        message_id = to_hex(entry.topics[1])
        if message_id not in wanted:
            continue
        if entry.topics[0] == TOPIC_DELIVERED:
            outcome.delivered.append(message_id)
        elif entry.topics[0] == TOPIC_ALREADY:
            outcome.already.append(message_id)
        elif entry.topics[0] == TOPIC_HANDLE_FAILED:
            outcome.handle_failed[message_id] = "recipient reverted"
    return outcome


# A range read of a batch's rows is used while the batch's nonces are this dense (span at most
# this many times its size): a bisected batch is contiguous, and a sparse one (messages of
# another batch or relayer in between) is cheaper read id by id than its whole range.
RANGE_READ_SPREAD = 4


class RowState(NamedTuple):
    """What :meth:`EvmDelivery._apply_receipt` needs of a message's row."""

    status: MessageStatus
    nonce: int


def _current_rows(
    batch: LedgerBatch, ids: Sequence[str], known: Sequence[MessageRecord]
) -> dict[str, RowState | None]:
    """The status and nonce of each of ``ids`` as ``batch`` reads them now (None for an
    unknown id): one range query per origin of ``known`` instead of one query per message.

    Copies, not the ORM rows: a row object kept alive in the batch's session is re-read
    (one SELECT each) by every later ``transition`` that moves it, which costs as much as
    the per-message reads this replaces.

    ``known`` (records read earlier, e.g. the batch as prepared) only says WHERE to look: the
    ``(origin, nonce)`` range each origin's ids lie in. What is returned is always the row read
    now, matched by id. A hint that is stale or wrong (a record of another id, a nonce that
    does not match) therefore cannot put a wrong row in the answer: an id the range does not
    hold is read on its own, exactly as without a hint."""
    wanted = set(ids)
    spans: dict[int, tuple[int, int, int]] = {}  # origin -> (lowest nonce, highest, count)
    for record in known:
        if record.id in wanted:
            low, high, count = spans.get(record.origin, (record.nonce, record.nonce, 0))
            spans[record.origin] = (min(low, record.nonce), max(high, record.nonce), count + 1)
    rows: dict[str, RowState | None] = {}
    for origin, (low, high, count) in spans.items():
        width = high - low + 1
        if width > RANGE_READ_SPREAD * count:
            continue
        # (origin, nonce) is unique, so the range holds at most ``width`` rows.
        for row in batch.messages(origin=origin, after=(origin, low - 1), limit=width):
            if row.id in wanted:
                rows[row.id] = RowState(row.status, row.nonce)
    for message_id in ids:
        if message_id not in rows:
            alone = batch.get(message_id)
            rows[message_id] = None if alone is None else RowState(alone.status, alone.nonce)
    return rows


def _unmargined(estimate: int, engine: TxEngine) -> int:
    """The dry run's own gas, from ``estimate`` = it plus the engine's margin
    (:meth:`TxEngine.estimate_gas` rounds down, so this rounds up: never below the dry run)."""
    return -(-estimate * 100 // (100 + engine.gas_margin_percent))


def _one_per_nonce(records: Sequence[MessageRecord]) -> list[MessageRecord]:
    """``records`` (one origin's) in ascending nonce order, as the inbox requires, keeping the
    first of any that share a nonce: only one of them can be the leaf at that index, and a
    repeated leaf would revert the whole batch. The others wait for a later batch."""
    ordered = sorted(records, key=lambda record: record.nonce)
    return [r for at, r in enumerate(ordered) if at == 0 or ordered[at - 1].nonce != r.nonce]


def _halves(records: Sequence[MessageRecord]) -> list[list[MessageRecord]]:
    """``records`` cut in two (the later half first, so the earlier nonces go first off a
    stack)."""
    middle = (len(records) + 1) // 2
    return [list(records[middle:]), list(records[:middle])]
