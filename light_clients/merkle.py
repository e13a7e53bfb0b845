"""The outbox accumulator: a depth-32 incremental Merkle tree of message ids.

This is the Ethereum deposit-contract / Hyperlane ``MerkleLib`` shape (docs/design.md, "Outbox
accumulator"): ``zero[0]`` is 32 zero bytes, ``zero[i+1] = keccak256(zero[i] ‖ zero[i])``, an inner
node is ``keccak256(left ‖ right)``, and the root covers the first ``count`` leaves with
zero-subtrees to their right. There is no length mix-in.

Why a *fixed* depth matters (docs/threats.md T12): leaves and inner nodes hash the same way, so a
64-byte "leaf" ``left ‖ right`` hashes to a real inner node. A proof of any other length than
:data:`TREE_DEPTH` is therefore refused outright, and a leaf is a 32-byte id, never raw data: a
forged leaf would have to be a keccak preimage of an inner node.

Two halves:

* :class:`IncrementalMerkleTree` mirrors an outbox (the relayer and devnet build proofs with it);
* :func:`branch_path` / :func:`branch_root` / :func:`verify_inclusion` check a proof, bytes in,
  verdict out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from light_clients.errors import MerkleProofError
from light_clients.hashing import keccak256
from light_clients.hexstr import to_hex

__all__ = [
    "EMPTY_ROOT",
    "MAX_LEAVES",
    "TREE_DEPTH",
    "ZERO_HASHES",
    "IncrementalMerkleTree",
    "InvalidRootError",
    "MalformedProofError",
    "MerkleInclusion",
    "RootMismatchError",
    "TreeFullError",
    "ZeroLeafError",
    "branch_path",
    "branch_root",
    "frontier_append",
    "root_from_branch",
    "verify_inclusion",
]

TREE_DEPTH = 32
"""Levels between a leaf and the root; a proof has exactly this many siblings."""

MAX_LEAVES = 2**TREE_DEPTH - 1
"""Capacity of the tree, as in the deposit contract and Hyperlane (the count must fit a u32)."""

HASH_SIZE = 32

Hasher = Callable[[bytes], bytes]


class MalformedProofError(MerkleProofError):
    """The proof is not shaped like one: wrong branch length, node size or index range."""


class InvalidRootError(MerkleProofError):
    """The claimed root can never be a checkpoint root (zero hash or empty-tree root, T1)."""


class ZeroLeafError(MerkleProofError):
    """The leaf is the zero hash: that is the value of an empty slot, not a message id (T1)."""


class RootMismatchError(MerkleProofError):
    """The branch does not lead from the leaf to the claimed root."""


class TreeFullError(MerkleProofError):
    """The accumulator already holds :data:`MAX_LEAVES` leaves."""


def _zero_hashes(hash_function: Hasher) -> tuple[bytes, ...]:
    """Roots of the all-zero subtrees of height 0..TREE_DEPTH under ``hash_function``."""
    zeros = [bytes(HASH_SIZE)]
    for _ in range(TREE_DEPTH):
        zeros.append(hash_function(zeros[-1] + zeros[-1]))
    return tuple(zeros)


ZERO_HASHES: tuple[bytes, ...] = _zero_hashes(keccak256)
"""``ZERO_HASHES[h]`` is the root of an empty subtree of height ``h`` (``h`` = 0..32)."""

EMPTY_ROOT: bytes = ZERO_HASHES[TREE_DEPTH]
"""Root of the empty tree (0x27ae5ba0…): never a valid checkpoint root."""

_ZERO = ZERO_HASHES[0]


# --------------------------------------------------------------------------- accumulator


class IncrementalMerkleTree:
    """An append-only depth-32 Merkle tree that can prove any of its leaves, now or at any
    earlier count.

    Every *complete* subtree's root is kept (``levels[h][i]`` is the root of leaves
    ``i·2^h … (i+1)·2^h - 1`` once they all exist; it never changes afterwards), so memory is
    about two hashes per leaf and appending costs one hash amortised (at most 32). The right
    edge for a given count — the one partial subtree per level, holding the newest leaf — is
    computed lazily (at most 32 hashes) the first time :meth:`root` or :meth:`proof` needs it,
    then cached. A proof is then 32 list look-ups.

    Proofs and roots at an earlier count are what a relayer needs: the committee signed a
    checkpoint at ``index = count - 1`` and the outbox has grown since.
    """

    # A test can subclass with another hash (e.g. sha256 for the EIP-4881 vectors): the tree
    # shape is the same, only the public accumulator is fixed to keccak.
    _hash: Hasher = staticmethod(keccak256)
    _zeros: tuple[bytes, ...] = ZERO_HASHES

    _EDGE_CACHE = 8  # right edges kept (the current count plus a few checkpoints)

    def __init__(self) -> None:
        """Create an empty tree (its root is :data:`EMPTY_ROOT`)."""
        self._levels: list[list[bytes]] = [[] for _ in range(TREE_DEPTH + 1)]
        self._count = 0
        # count -> nodes at heights 0..32 on the path of leaf count-1. Complete subtrees never
        # change, so an edge stays valid forever; the dict is only bounded for memory.
        self._edges: dict[int, list[bytes]] = {}

    @property
    def count(self) -> int:
        """Number of leaves appended so far."""
        return self._count

    def __len__(self) -> int:
        """Number of leaves appended so far."""
        return self._count

    def append(self, leaf: bytes) -> int:
        """Append a 32-byte leaf and return its index.

        Any 32-byte value is accepted, so the tree mirrors the on-chain outbox exactly.
        Raises :class:`TreeFullError` past :data:`MAX_LEAVES` and :class:`MalformedProofError`
        for a leaf that is not 32 bytes.
        """
        if not isinstance(leaf, bytes) or len(leaf) != HASH_SIZE:
            raise MalformedProofError(f"leaf must be {HASH_SIZE} bytes, got {_describe(leaf)}")
        index = self._count
        if index >= MAX_LEAVES:
            raise TreeFullError(f"tree is full ({MAX_LEAVES} leaves)")
        hash_function = self._hash
        levels = self._levels
        node = bytes(leaf)
        position = index
        levels[0].append(node)
        height = 0
        # A right child completes its parent's subtree: fold upward while that keeps happening.
        while position & 1:
            node = hash_function(levels[height][position - 1] + node)
            height += 1
            position >>= 1
            levels[height].append(node)
        self._count = index + 1
        return index

    def extend(self, leaves: Sequence[bytes]) -> int:
        """Append every leaf in order; return the new count."""
        for leaf in leaves:
            self.append(leaf)
        return self._count

    def leaf(self, index: int) -> bytes:
        """Return the leaf at ``index`` (MalformedProofError if out of range)."""
        self._check_index(index, self._count)
        return self._levels[0][index]

    def frontier(self) -> tuple[bytes, ...]:
        """The 32-hash frontier an on-chain tree stores (see :func:`root_from_branch`).

        ``frontier[i]`` is the last completed left subtree at height ``i`` when bit ``i`` of
        :attr:`count` is set; other entries are never read and are zero here.
        """
        count = self._count
        return tuple(
            self._levels[height][(count >> height) - 1] if (count >> height) & 1 else bytes(32)
            for height in range(TREE_DEPTH)
        )

    def root(self, count: int | None = None) -> bytes:
        """Return the root over the first ``count`` leaves (default: all of them).

        :data:`EMPTY_ROOT` for a count of 0; MalformedProofError if ``count`` exceeds
        :attr:`count`.
        """
        count = self._check_count(count)
        if count == 0:
            return self._zeros[TREE_DEPTH]
        return self._edge(count)[TREE_DEPTH]

    def proof(self, index: int, count: int | None = None) -> tuple[bytes, ...]:
        """Return the 32 siblings proving leaf ``index`` under :meth:`root` of ``count``.

        ``count`` defaults to :attr:`count`; ``index`` must be below it (a checkpoint with
        ``index = count - 1`` proves leaves ``0..index``).
        """
        count = self._check_count(count)
        self._check_index(index, count)
        edge = self._edge(count)
        levels = self._levels
        zeros = self._zeros
        last = count - 1
        siblings = []
        for height in range(TREE_DEPTH):
            sibling = (index >> height) ^ 1
            newest = last >> height
            if sibling < newest:  # a complete subtree left of the newest leaf's path
                siblings.append(levels[height][sibling])
            elif sibling == newest:  # the (possibly partial) subtree holding the newest leaf
                siblings.append(edge[height])
            else:  # entirely right of the newest leaf: empty
                siblings.append(zeros[height])
        return tuple(siblings)

    def _check_count(self, count: int | None) -> int:
        if count is None:
            return self._count
        if not isinstance(count, int) or isinstance(count, bool):
            raise MalformedProofError(f"count must be an integer, got {type(count).__name__}")
        if not 0 <= count <= self._count:
            raise MalformedProofError(f"count {count} outside 0..{self._count}")
        return count

    @staticmethod
    def _check_index(index: int, count: int) -> None:
        if not isinstance(index, int) or isinstance(index, bool):
            raise MalformedProofError(f"index must be an integer, got {type(index).__name__}")
        if not 0 <= index < count:
            raise MalformedProofError(f"index {index} out of range for a tree of {count} leaves")

    def _edge(self, count: int) -> list[bytes]:
        """Nodes at heights 0..32 on the path of leaf ``count - 1`` in the tree of ``count``."""
        edge = self._edges.get(count)
        if edge is not None:
            return edge
        hash_function = self._hash
        levels = self._levels
        zeros = self._zeros
        last = count - 1
        node = levels[0][last]
        edge = [node]
        for height in range(TREE_DEPTH):
            position = last >> height
            if position & 1 and (position + 1) << height <= count:
                # The parent's subtree is complete at this count: stored already, no hashing.
                node = levels[height + 1][position >> 1]
            elif position & 1:
                node = hash_function(levels[height][position - 1] + node)
            else:
                node = hash_function(node + zeros[height])
            edge.append(node)
        if len(self._edges) >= self._EDGE_CACHE:
            self._edges.clear()
        self._edges[count] = edge
        return edge


# --------------------------------------------------------------------------- verification


@dataclass(frozen=True)
class MerkleInclusion:
    """What :func:`verify_inclusion` established: ``leaf`` is leaf number ``index`` under ``root``.

    ``path`` holds the 33 nodes from the leaf (``path[0]``) to the root (``path[32]``);
    ``branch`` the 32 siblings used. At level ``h`` the walked node was the right child iff bit
    ``h`` of ``index`` is set.
    """

    root: bytes
    leaf: bytes
    index: int
    path: tuple[bytes, ...]
    branch: tuple[bytes, ...]


def _describe(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return f"{len(value)} bytes"
    return type(value).__name__


def _check_shape(leaf: bytes, index: int, branch: Sequence[bytes]) -> None:
    if not isinstance(leaf, bytes) or len(leaf) != HASH_SIZE:
        raise MalformedProofError(f"leaf must be {HASH_SIZE} bytes, got {_describe(leaf)}")
    if not isinstance(index, int) or isinstance(index, bool):
        raise MalformedProofError(f"index must be an integer, got {type(index).__name__}")
    if not 0 <= index < 2**TREE_DEPTH:
        raise MalformedProofError(f"index {index} outside 0..2^{TREE_DEPTH}-1")
    if isinstance(branch, bytes | bytearray | str):
        # A flat 1024-byte string is not a list of 32 hashes (and iterating it yields ints).
        raise MalformedProofError("branch must be a sequence of 32-byte hashes, got a flat string")
    try:
        length = len(branch)
    except TypeError:
        raise MalformedProofError(
            f"branch must be a sequence of hashes, got {type(branch).__name__}"
        ) from None
    if length != TREE_DEPTH:
        # T12: a shorter proof is how an inner node is passed off as a leaf.
        raise MalformedProofError(f"branch has {length} hashes, need exactly {TREE_DEPTH}")


def _walk(leaf: bytes, index: int, branch: Sequence[bytes], hash_function: Hasher) -> list[bytes]:
    """Hash from the leaf to the root; the shape (except sibling sizes) is already checked."""
    node = leaf
    path = [leaf]
    append = path.append
    bits = index
    for sibling in branch:
        # Checked here rather than in a separate pass: this loop is the hot path.
        if not isinstance(sibling, bytes) or len(sibling) != HASH_SIZE:
            raise MalformedProofError(
                f"sibling {len(path) - 1} must be {HASH_SIZE} bytes, got {_describe(sibling)}"
            )
        node = hash_function(sibling + node) if bits & 1 else hash_function(node + sibling)
        append(node)
        bits >>= 1
    return path


def branch_path(leaf: bytes, index: int, branch: Sequence[bytes]) -> tuple[bytes, ...]:
    """Return the 33 nodes from ``leaf`` (first) up to the root it implies (last).

    Raises :class:`MalformedProofError` unless ``leaf`` is 32 bytes, ``0 <= index < 2**32`` and
    ``branch`` is exactly 32 hashes of 32 bytes each. This only computes; it does not judge the
    root (see :func:`verify_inclusion`).
    """
    _check_shape(leaf, index, branch)
    return tuple(_walk(leaf, index, branch, keccak256))


def branch_root(leaf: bytes, index: int, branch: Sequence[bytes]) -> bytes:
    """Return the root implied by ``leaf`` at ``index`` with siblings ``branch`` (32 keccaks)."""
    _check_shape(leaf, index, branch)
    return _walk(leaf, index, branch, keccak256)[-1]


def verify_inclusion(
    root: bytes, leaf: bytes, index: int, branch: Sequence[bytes]
) -> MerkleInclusion:
    """Check that ``leaf`` is leaf number ``index`` of the tree whose root is ``root``.

    Raises :class:`InvalidRootError` for the zero hash or :data:`EMPTY_ROOT` (T1: neither can
    commit to a message), :class:`ZeroLeafError` for a zero leaf, :class:`MalformedProofError`
    for a misshapen proof (T12) and :class:`RootMismatchError` when the computed root differs.
    """
    if not isinstance(root, bytes) or len(root) != HASH_SIZE:
        raise MalformedProofError(f"root must be {HASH_SIZE} bytes, got {_describe(root)}")
    if root == _ZERO:
        raise InvalidRootError("root is the zero hash")
    if root == EMPTY_ROOT:
        raise InvalidRootError(f"root is the empty-tree root {to_hex(EMPTY_ROOT)}")
    _check_shape(leaf, index, branch)
    if leaf == _ZERO:
        raise ZeroLeafError("leaf is the zero hash (an empty slot, not a message id)")
    path = _walk(leaf, index, branch, keccak256)
    computed = path[-1]
    if computed != root:
        raise RootMismatchError(
            f"computed root {to_hex(computed)} != claimed root {to_hex(root)} (leaf index {index})"
        )
    return MerkleInclusion(
        root=root, leaf=leaf, index=index, path=tuple(path), branch=tuple(branch)
    )


# --------------------------------------------------------------------------- outbox state


def frontier_append(
    branch: Sequence[bytes], count: int, leaves: Sequence[bytes]
) -> tuple[tuple[bytes, ...], int]:
    """The stored frontier and count of an outbox after it inserts ``leaves`` (in order).

    This is the on-chain insertion (``MerkleLib.insert``) run off chain: a new leaf completes
    subtrees upward while the count's low bits are set, and the first height whose bit is
    clear stores the folded node. The relayer uses it to say what the outbox's state must be
    at the end of a scanned range *if* the logs it got are exactly the messages dispatched —
    then :func:`root_from_branch` of the result is compared with the state proven there, so
    a node that drops, reorders or alters logs is caught (not only one that changes their
    number). ``branch`` entries whose count bit is clear are never read, as on chain.
    Raises :class:`MalformedProofError` for a malformed branch or leaf, :class:`TreeFullError`
    past :data:`MAX_LEAVES`.
    """
    root_from_branch(branch, count)  # the same shape checks, one place
    frontier = list(branch)
    for leaf in leaves:
        if not isinstance(leaf, bytes) or len(leaf) != HASH_SIZE:
            raise MalformedProofError(f"leaf must be {HASH_SIZE} bytes, got {_describe(leaf)}")
        if count >= MAX_LEAVES:
            raise TreeFullError(f"tree is full ({MAX_LEAVES} leaves)")
        count += 1
        node, size, height = leaf, count, 0
        while not size & 1:  # ends below TREE_DEPTH: 0 < count < 2**TREE_DEPTH
            node = keccak256(frontier[height] + node)
            size >>= 1
            height += 1
        frontier[height] = node
    return tuple(frontier), count


def root_from_branch(branch: Sequence[bytes], count: int) -> bytes:
    """The root of an outbox whose stored frontier is ``branch`` after ``count`` insertions.

    On chain an incremental tree keeps only ``branch[i]``, the last completed left subtree at
    height ``i``, and ``count``; this is the tree's ``root()`` recomputed off chain, so that an
    attester can prove those 33 storage slots with ``eth_getProof`` and derive the root itself
    instead of trusting a ``root()`` call. Raises :class:`MalformedProofError` for a branch that
    is not 32 hashes of 32 bytes or a count out of range.
    """
    if len(branch) != TREE_DEPTH or any(
        not isinstance(node, bytes) or len(node) != HASH_SIZE for node in branch
    ):
        raise MalformedProofError(f"an outbox frontier is {TREE_DEPTH} hashes of 32 bytes")
    if not 0 <= count <= MAX_LEAVES:
        raise MalformedProofError(f"count {count} out of range")
    node = ZERO_HASHES[0]
    for height in range(TREE_DEPTH):
        if (count >> height) & 1:
            node = keccak256(branch[height] + node)
        else:
            node = keccak256(node + ZERO_HASHES[height])
    return node
