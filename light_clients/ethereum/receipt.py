"""Transaction receipts and their inclusion under a block's ``receiptsRoot``.

The receipts trie maps ``rlp(index)`` to the consensus encoding of the receipt: for a legacy
transaction ``rlp([status, cumulativeGasUsed, logsBloom, logs])``, for a typed one (EIP-2718)
``type_byte ‖ rlp([...])`` with type 1 (EIP-2930), 2 (EIP-1559), 3 (EIP-4844) or 4
(EIP-7702). Before Byzantium the first field was the 32-byte post-transaction state root
instead of a status.

Key quirk: ``rlp(0) = 0x80``, ``rlp(1..127)`` is one byte, ``rlp(128) = 0x8180`` — so index 0
sorts after 1..127 in the trie. :func:`receipt_key` is the only way an index becomes a key,
which is what keeps a receipt from being claimed at a second, differently encoded index (T13).

Logs are matched by emitter *and* topic (:func:`find_logs`): an event with the right
signature from another contract is not the event (T14, pNetwork; T15, THORChain).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from light_clients.errors import DecodeError, TrieProofError
from light_clients.ethereum.mpt import MptWalk, walk_proof
from light_clients.ethereum.rlp import RLPItem, decode, decode_uint, encode, encode_uint

__all__ = [
    "RECEIPT_TYPES",
    "Log",
    "Receipt",
    "ReceiptInclusion",
    "ReceiptMismatchError",
    "ReceiptNotFoundError",
    "decode_receipt",
    "find_log_positions",
    "find_logs",
    "receipt_key",
    "verify_receipt",
]

RECEIPT_TYPES = frozenset({1, 2, 3, 4})
"""Typed-receipt type bytes accepted after the legacy form (0): access-list, dynamic-fee,
blob and set-code transactions. Unknown types are rejected rather than guessed at."""

_MAX_TOPICS = 4  # LOG0 … LOG4


class ReceiptNotFoundError(TrieProofError):
    """The proof shows that no receipt exists at the index."""


class ReceiptMismatchError(TrieProofError):
    """The receipt proven at the index is not the receipt given."""


@dataclass(frozen=True, slots=True)
class Log:
    """One event: the emitting contract, its topics (topic0 = event signature) and data."""

    address: bytes
    topics: tuple[bytes, ...]
    data: bytes


@dataclass(frozen=True, slots=True)
class Receipt:
    """A decoded receipt. Exactly one of ``status`` and ``post_state`` is set."""

    tx_type: int
    status: int | None
    """1 success, 0 failure (Byzantium and later)."""
    post_state: bytes | None
    """The 32-byte state root after the transaction (before Byzantium)."""
    cumulative_gas_used: int
    logs_bloom: bytes
    logs: tuple[Log, ...]
    raw: bytes


@dataclass(frozen=True, slots=True)
class ReceiptInclusion:
    """A receipt proven at ``index`` under ``receipts_root``."""

    receipts_root: bytes
    index: int
    receipt: Receipt
    walk: MptWalk


def receipt_key(index: int) -> bytes:
    """Return the receipts-trie key of transaction ``index``: ``rlp(index)``.

    Raises :class:`~light_clients.errors.DecodeError` for a negative or non-integer index.
    """
    return encode(encode_uint(index))


def decode_receipt(raw: bytes) -> Receipt:
    """Decode a consensus-encoded receipt (legacy RLP list, or type byte ‖ RLP list).

    Raises :class:`~light_clients.errors.DecodeError` for an unknown type byte, non-canonical
    RLP or trailing bytes, a field count other than 4, a status other than 0/1 (or a 32-byte
    state root on a legacy receipt), a bloom that is not 256 bytes, or a malformed log
    (address not 20 bytes, more than 4 topics, a topic not 32 bytes).
    """
    if not isinstance(raw, bytes):
        raise DecodeError(f"receipt must be bytes, got {type(raw).__name__}")
    if not raw:
        raise DecodeError("receipt is empty")
    if raw[0] >= 0xC0:
        tx_type, body = 0, raw
    elif raw[0] in RECEIPT_TYPES:
        tx_type, body = raw[0], raw[1:]
    else:
        raise DecodeError(f"unknown receipt type 0x{raw[0]:02x} (legacy list, or types 1-4)")
    try:
        items = decode(body)
    except DecodeError as error:
        raise DecodeError(f"receipt body: {error}") from error
    if not isinstance(items, list) or len(items) != 4:
        raise DecodeError("receipt body is not a list of 4 fields")
    outcome, gas, bloom, logs = items
    status, post_state = _decode_outcome(outcome, tx_type)
    if not isinstance(bloom, bytes) or len(bloom) != 256:
        raise DecodeError("receipt logsBloom is not 256 bytes")
    try:
        cumulative_gas_used = decode_uint(gas, 8)
    except DecodeError as error:
        raise DecodeError(f"receipt cumulativeGasUsed: {error}") from error
    if not isinstance(logs, list):
        raise DecodeError("receipt logs field is not a list")
    return Receipt(
        tx_type,
        status,
        post_state,
        cumulative_gas_used,
        bloom,
        tuple(_decode_log(log, i) for i, log in enumerate(logs)),
        raw,
    )


def _decode_outcome(item: RLPItem, tx_type: int) -> tuple[int | None, bytes | None]:
    """Status (0x80 = 0, 0x01 = 1) or, for legacy receipts before Byzantium, a state root."""
    if item == b"":
        return 0, None
    if item == b"\x01":
        return 1, None
    if isinstance(item, bytes) and len(item) == 32 and tx_type == 0:
        return None, item
    raise DecodeError("receipt status is not 0 or 1 (nor a pre-Byzantium state root)")


def _decode_log(item: RLPItem, position: int) -> Log:
    """A log is [address (20 bytes), [topic (32 bytes) …≤4], data]."""
    if not isinstance(item, list) or len(item) != 3:
        raise DecodeError(f"log {position} is not a list of 3 fields")
    address, topics, data = item
    if not isinstance(address, bytes) or len(address) != 20:
        raise DecodeError(f"log {position} address is not 20 bytes")
    if not isinstance(topics, list) or len(topics) > _MAX_TOPICS:
        raise DecodeError(f"log {position} topics are not a list of at most {_MAX_TOPICS}")
    checked: list[bytes] = []
    for topic in topics:
        if not isinstance(topic, bytes) or len(topic) != 32:
            raise DecodeError(f"log {position} has a topic that is not 32 bytes")
        checked.append(topic)
    if not isinstance(data, bytes):
        raise DecodeError(f"log {position} data is a list, not bytes")
    return Log(address, tuple(checked), data)


def verify_receipt(
    receipts_root: bytes, index: int, proof: Sequence[bytes], receipt: bytes
) -> ReceiptInclusion:
    """Prove that ``receipt`` (raw consensus bytes) is at ``index`` under ``receipts_root``.

    The value proven at ``rlp(index)`` must equal ``receipt`` byte for byte. Raises
    :class:`ReceiptNotFoundError` when the proof shows no receipt at the index,
    :class:`ReceiptMismatchError` when it shows a different one, a
    :class:`~light_clients.errors.DecodeError` for a malformed receipt, and the trie errors of
    :func:`~light_clients.ethereum.mpt.walk_proof`.
    """
    if not isinstance(receipt, bytes):
        raise DecodeError(f"receipt must be bytes, got {type(receipt).__name__}")
    walk = walk_proof(receipts_root, receipt_key(index), proof)
    if walk.value is None:
        raise ReceiptNotFoundError(f"no receipt at index {index}: {walk.absence}")
    if walk.value != receipt:
        raise ReceiptMismatchError(
            f"the receipt proven at index {index} ({len(walk.value)} bytes) differs from the "
            f"one given ({len(receipt)} bytes)"
        )
    return ReceiptInclusion(receipts_root, index, decode_receipt(receipt), walk)


def find_logs(receipt: Receipt, emitter: bytes, topic0: bytes) -> tuple[Log, ...]:
    """Return the logs of ``receipt`` emitted by ``emitter`` whose first topic is ``topic0``.

    Both the contract and the event signature must match: an event with the right topic from
    another address is never returned (T14). Raises
    :class:`~light_clients.errors.DecodeError` if ``emitter`` is not 20 bytes or ``topic0``
    not 32.
    """
    return tuple(receipt.logs[i] for i in find_log_positions(receipt, emitter, topic0))


def find_log_positions(receipt: Receipt, emitter: bytes, topic0: bytes) -> tuple[int, ...]:
    """Like :func:`find_logs`, but return the logs' positions within the receipt.

    A position, with the block hash and transaction index, names the event uniquely; use it
    (never proof bytes) as the replay key (T13).
    """
    if not isinstance(emitter, bytes) or len(emitter) != 20:
        raise DecodeError("emitter must be a 20-byte address")
    if not isinstance(topic0, bytes) or len(topic0) != 32:
        raise DecodeError("topic0 must be 32 bytes")
    return tuple(
        position
        for position, log in enumerate(receipt.logs)
        if log.address == emitter and log.topics[:1] == (topic0,)
    )
