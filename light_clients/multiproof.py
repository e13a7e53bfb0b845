"""Batch proofs: one Merkle multiproof for any set of leaves of the outbox accumulator.

A batch delivered to an Inbox v2 carries ONE proof for all its messages instead of a 32-hash
branch each (docs/design.md, "Batch proof"). The leaves are the message ids at their nonces,
in strictly ascending nonce order; gaps are fine (an origin interleaves destinations, so a
destination's nonces are rarely consecutive). The tree is the depth-32 incremental tree of
:mod:`light_clients.merkle`, proven against the root of a checkpoint over ``count`` leaves.

The walk, shared bit for bit with ``MerkleLib.multiRoot`` on chain: level by level from the
leaves up, left to right, each node meets its sibling

* as the next node of the set (both were proven: nothing to supply),
* else, when the sibling's subtree starts at or past ``count``, as the zero hash of that
  height (an empty subtree of the checkpointed tree: the verifier knows it, so it is not sent),
* else as the next hash of the proof.

After 32 levels one node is left: the root. A proof is valid only if the walk uses every hash
exactly (an unused hash means the proof was built for other leaves). Because the depth is
fixed and the leaf positions are the nonces the messages carry, a leaf cannot be moved, added,
dropped or repeated without changing the root (T12, T13).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from light_clients.committee import Attestation, Checkpoint, Committee, verify_attestation
from light_clients.errors import MessageError
from light_clients.hashing import keccak256
from light_clients.hexstr import to_hex
from light_clients.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    MAX_LEAVES,
    TREE_DEPTH,
    ZERO_HASHES,
    IncrementalMerkleTree,
    InvalidRootError,
    MalformedProofError,
    RootMismatchError,
    ZeroLeafError,
)
from light_clients.message import (
    HEADER_SIZE,
    MAX_BODY_BYTES,
    MAX_MESSAGE_BYTES,
    Message,
    NonceBeyondCheckpointError,
    WrongDestinationError,
    WrongOriginError,
    WrongOutboxError,
    decode_message,
)

__all__ = [
    "BatchDelivery",
    "BatchEncodingError",
    "LeafOutOfRangeError",
    "LeavesNotAscendingError",
    "ProofTooShortError",
    "UnusedProofHashesError",
    "build_multiproof",
    "multiproof_root",
    "pack_messages",
    "unpack_messages",
    "verify_batch_delivery",
    "verify_multiproof",
]


LENGTH_PREFIX = 3
"""Bytes of the big-endian length before each message of a packed batch (``Inbox.process``)."""


class BatchEncodingError(MalformedProofError):
    """A packed batch of messages is truncated or has a length prefix that cannot be."""


class LeavesNotAscendingError(MalformedProofError):
    """The leaf indices are not strictly ascending (repeated or out of order)."""


class LeafOutOfRangeError(MalformedProofError):
    """A leaf index is at or past the tree's count: no such leaf under this root."""


class ProofTooShortError(MalformedProofError):
    """The walk needed more proof hashes than the proof has."""


class UnusedProofHashesError(MalformedProofError):
    """The walk reached the root with proof hashes left over: a proof for other leaves."""

    def __init__(self, used: int, given: int) -> None:
        super().__init__(f"the walk used {used} of {given} proof hashes: a proof for other leaves")
        self.used = used
        self.given = given


def _check_leaves(leaves: Sequence[tuple[int, bytes]], count: int) -> None:
    """Shape of a leaf set: non-empty, 32-byte leaves, indices strictly ascending below
    ``count``, and ``count`` a possible tree size."""
    if isinstance(count, bool) or not isinstance(count, int) or not 0 < count <= MAX_LEAVES:
        raise MalformedProofError(f"count must be an integer in 1..{MAX_LEAVES}, got {count!r}")
    if not leaves:
        raise MalformedProofError("a multiproof proves at least one leaf")
    previous = -1
    for position, (index, leaf) in enumerate(leaves):
        if isinstance(index, bool) or not isinstance(index, int):
            raise MalformedProofError(f"leaf {position}: index must be an integer")
        if not isinstance(leaf, bytes) or len(leaf) != HASH_SIZE:
            raise MalformedProofError(f"leaf {position} must be {HASH_SIZE} bytes")
        if index <= previous:
            raise LeavesNotAscendingError(
                f"leaf {position}: index {index} does not follow {previous} (strictly ascending)"
            )
        if index >= count:
            raise LeafOutOfRangeError(
                f"leaf {position}: index {index} is not in a tree of {count} leaves"
            )
        previous = index


def _walk(
    leaves: Sequence[tuple[int, bytes]],
    count: int,
    sibling_of: Callable[[int, int], bytes],
) -> bytes:
    """The shared walk (see the module docstring); ``sibling_of(height, index)`` supplies a
    sibling that is neither in the set nor an empty subtree."""
    nodes = [(index, leaf) for index, leaf in leaves]
    for height in range(TREE_DEPTH):
        parents: list[tuple[int, bytes]] = []
        at = 0
        while at < len(nodes):
            index, node = nodes[at]
            if index & 1:
                # The left sibling is not in the set (it would have taken this node as its pair)
                # and lies before this node, so below count: always supplied.
                pair = sibling_of(height, index - 1) + node
                at += 1
            elif at + 1 < len(nodes) and nodes[at + 1][0] == index + 1:
                pair = node + nodes[at + 1][1]
                at += 2
            else:
                sibling = index + 1
                right = (
                    ZERO_HASHES[height]
                    if sibling << height >= count
                    else sibling_of(height, sibling)
                )
                pair = node + right
                at += 1
            parents.append((index >> 1, keccak256(pair)))
        nodes = parents
    return nodes[0][1]


class _FromTree:
    """Siblings read from an accumulator at ``count`` (building a proof), recorded in order."""

    def __init__(self, tree: IncrementalMerkleTree, count: int) -> None:
        self.tree = tree
        self.count = count
        self.used: list[bytes] = []

    def __call__(self, height: int, index: int) -> bytes:
        # Node `index` at `height` is the sibling, on that level, of every leaf under its
        # neighbour `index ^ 1`, which holds a leaf of the set (so its first leaf is below
        # count): that leaf's branch has it at `height`.
        value = self.tree.proof((index ^ 1) << height, self.count)[height]
        self.used.append(value)
        return value


class _FromProof:
    """Siblings taken from a proof, in order (verifying)."""

    def __init__(self, proof: Sequence[bytes]) -> None:
        self.proof = proof
        self.next = 0

    def __call__(self, height: int, index: int) -> bytes:
        if self.next >= len(self.proof):
            raise ProofTooShortError(
                f"the proof ends before the walk does ({len(self.proof)} hashes, more needed "
                f"at height {height})"
            )
        value = self.proof[self.next]
        if not isinstance(value, bytes) or len(value) != HASH_SIZE:
            raise MalformedProofError(f"proof hash {self.next} must be {HASH_SIZE} bytes")
        self.next += 1
        return value


def build_multiproof(
    tree: IncrementalMerkleTree, indices: Sequence[int], count: int | None = None
) -> tuple[bytes, ...]:
    """The multiproof of leaves ``indices`` (strictly ascending) of ``tree`` under its root at
    ``count`` (default: all its leaves), in the order the walk consumes it.

    Raises :class:`MalformedProofError` (or a subclass) for indices that are not strictly
    ascending below ``count``, or a ``count`` the tree never had.
    """
    count = tree.count if count is None else count
    if isinstance(count, bool) or not isinstance(count, int) or not 0 < count <= tree.count:
        raise MalformedProofError(f"count {count!r} outside 1..{tree.count}")
    leaves = [(index, _leaf_at(tree, index, count)) for index in indices]
    _check_leaves(leaves, count)
    siblings = _FromTree(tree, count)
    _walk(leaves, count, siblings)
    return tuple(siblings.used)


def _leaf_at(tree: IncrementalMerkleTree, index: object, count: int) -> bytes:
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
        raise LeafOutOfRangeError(f"index {index!r} is not in a tree of {count} leaves")
    return tree.leaf(index)


def multiproof_root(
    leaves: Sequence[tuple[int, bytes]], proof: Sequence[bytes], count: int
) -> bytes:
    """The root implied by ``leaves`` ((index, leaf) pairs, indices strictly ascending below
    ``count``) and ``proof``; raises :class:`ProofTooShortError` if the proof runs out,
    :class:`UnusedProofHashesError` if hashes are left over, :class:`MalformedProofError` (or
    a subclass) for a misshapen leaf set or hash."""
    if isinstance(proof, bytes | bytearray | str):
        raise MalformedProofError("proof must be a sequence of 32-byte hashes, not a string")
    _check_leaves(leaves, count)
    siblings = _FromProof(proof)
    root = _walk(leaves, count, siblings)
    if siblings.next != len(proof):
        raise UnusedProofHashesError(siblings.next, len(proof))
    return root


def verify_multiproof(
    root: bytes, leaves: Sequence[tuple[int, bytes]], proof: Sequence[bytes], count: int
) -> None:
    """Check that every ``(index, leaf)`` of ``leaves`` is leaf ``index`` of the tree of
    ``count`` leaves whose root is ``root``, exactly as ``Inbox.process`` does.

    Raises :class:`InvalidRootError` for the zero or empty-tree root (T1),
    :class:`ZeroLeafError` for a zero leaf, :class:`RootMismatchError` when the leaves and the
    proof imply another root, and the errors of :func:`multiproof_root`.
    """
    if not isinstance(root, bytes) or len(root) != HASH_SIZE:
        raise MalformedProofError(f"root must be {HASH_SIZE} bytes")
    if root == ZERO_HASHES[0]:
        raise InvalidRootError("root is the zero hash")
    if root == EMPTY_ROOT:
        raise InvalidRootError(f"root is the empty-tree root {to_hex(EMPTY_ROOT)}")
    for position, (_, leaf) in enumerate(leaves):
        if leaf == ZERO_HASHES[0]:
            raise ZeroLeafError(f"leaf {position} is the zero hash (an empty slot, not a message)")
    computed = multiproof_root(leaves, proof, count)
    if computed != root:
        raise RootMismatchError(
            f"the batch proof implies root {to_hex(computed)}, not the claimed {to_hex(root)}"
        )


def pack_messages(messages: Sequence[bytes]) -> bytes:
    """The ``messages`` argument of ``Inbox.process``: each message prefixed by its length as
    3 big-endian bytes. ABI ``bytes[]`` would spend 64-71 more calldata bytes per message on an
    offset, a length word and padding.

    :class:`BatchEncodingError` for a message longer than :data:`MAX_MESSAGE_BYTES` (77 +
    65,536): the Inbox reverts the WHOLE batch on one (``MalformedMessage``), so such a message
    (from an origin whose outbox does not cap bodies as the EVM Outbox does) must never be
    packed with others."""
    out = bytearray()
    for message in messages:
        if len(message) > MAX_MESSAGE_BYTES:
            raise BatchEncodingError(
                f"a message of {len(message)} bytes cannot be packed: the Inbox accepts at most "
                f"{MAX_MESSAGE_BYTES} ({HEADER_SIZE}-byte header, {MAX_BODY_BYTES}-byte body)"
            )
        out += len(message).to_bytes(LENGTH_PREFIX, "big") + message
    return bytes(out)


def unpack_messages(packed: bytes) -> list[bytes]:
    """Inverse of :func:`pack_messages`; :class:`BatchEncodingError` names the first message
    whose prefix or bytes are cut short (what the Inbox reverts with ``TruncatedBatch``)."""
    messages: list[bytes] = []
    at = 0
    while at < len(packed):
        if len(packed) - at < LENGTH_PREFIX:
            raise BatchEncodingError(f"message {len(messages)}: length prefix cut short")
        length = int.from_bytes(packed[at : at + LENGTH_PREFIX], "big")
        at += LENGTH_PREFIX
        if len(packed) - at < length:
            raise BatchEncodingError(
                f"message {len(messages)}: {length} bytes announced, {len(packed) - at} left"
            )
        messages.append(bytes(packed[at : at + length]))
        at += length
    return messages


@dataclass(frozen=True)
class BatchDelivery:
    """What :func:`verify_batch_delivery` established: every message of ``messages`` may be
    delivered under ``attestation.checkpoint``, proven by one multiproof."""

    messages: tuple[Message, ...]
    attestation: Attestation


def verify_batch_delivery(
    messages: Sequence[bytes],
    checkpoint: Checkpoint,
    proof: Sequence[bytes],
    committee: Committee,
    signatures: Sequence[bytes],
    *,
    local_domain: int | None = None,
    outbox: bytes | None = None,
) -> BatchDelivery:
    """Everything ``Inbox.process`` checks before delivering a batch, in its order.

    Per message (``message {i}: ...`` in the error): it decodes (MalformedMessageError), its
    origin is the checkpoint's (WrongOriginError), its destination is ``local_domain`` when
    given (WrongDestinationError), its nonce is at most the checkpoint index
    (NonceBeyondCheckpointError) and above the previous message's
    (:class:`LeavesNotAscendingError`). Then the checkpoint's outbox is ``outbox`` when given
    (WrongOutboxError), the committee attested the checkpoint (AttestationError), and the
    multiproof holds (:func:`verify_multiproof`'s errors).
    """
    if isinstance(messages, bytes | bytearray | str) or not messages:
        raise MalformedProofError("a batch is a non-empty sequence of messages")
    if not isinstance(checkpoint, Checkpoint):
        raise MessageError(f"expected a Checkpoint, got {type(checkpoint).__name__}")
    decoded: list[Message] = []
    for position, raw in enumerate(messages):
        message = decode_message(raw)
        where = f"message {position}"
        if message.origin != checkpoint.origin:
            raise WrongOriginError(
                f"{where}: origin {message.origin} is not the checkpoint's {checkpoint.origin}"
            )
        if local_domain is not None and message.destination != local_domain:
            raise WrongDestinationError(
                f"{where}: for domain {message.destination}, this is domain {local_domain}"
            )
        if message.nonce > checkpoint.index:
            raise NonceBeyondCheckpointError(
                f"{where}: nonce {message.nonce} is beyond checkpoint index {checkpoint.index}"
            )
        if decoded and message.nonce <= decoded[-1].nonce:
            raise LeavesNotAscendingError(
                f"{where}: nonce {message.nonce} does not follow {decoded[-1].nonce} "
                "(strictly ascending)"
            )
        decoded.append(message)
    if outbox is not None and checkpoint.outbox != outbox:
        raise WrongOutboxError(f"checkpoint is for outbox {to_hex(checkpoint.outbox)}")
    attestation = verify_attestation(committee, checkpoint, signatures)
    leaves = [(message.nonce, message.id) for message in decoded]
    verify_multiproof(checkpoint.root, leaves, proof, checkpoint.index + 1)
    return BatchDelivery(messages=tuple(decoded), attestation=attestation)
