"""Storage-proof verification for Substrate's base-16 Patricia trie (sp-trie ``NodeCodec``).

A storage (read) proof is an unordered set of trie nodes — what ``state_getReadProof``
returns. Starting from the node whose blake2-256 is the state root, we follow the key's nibbles
down, each child reference either inline (< 32 bytes) or a 32-byte hash that must be in the
proof. Both trie layouts are accepted: V0 (values inline) and V1 (values of 33+ bytes stored
as their blake2-256 hash, with the value itself as a separate proof entry).

Node header byte (``sp_trie::node_header``), followed by the partial key nibbles:

======== =========================== =====================
prefix   node                        nibble-count bits
======== =========================== =====================
0x00     empty trie (root only)      —
01xxxxxx leaf                        6
10xxxxxx branch without value        6
11xxxxxx branch with value           6
001xxxxx leaf, hashed value (V1)     5
0001xxxx branch, hashed value (V1)   4
======== =========================== =====================

If the count bits are all ones, the count continues with bytes that are added up until one is
below 255. Branches then carry a u16 little-endian child bitmap, the value (compact length +
bytes, or a 32-byte hash) and one compact-length-prefixed reference per child.

Decisions (threat ids as in docs/threats.md):

* **Canonical only (T10, T13).** Every node must decode with no trailing bytes; the odd-length
  padding nibble must be zero; the bitmap must not be zero; child references longer than 32
  bytes, empty inline children and the empty node anywhere below the root are rejected.
  Header nibble counts are canonical by construction of the codec (each count has exactly one
  encoding). A value-less branch with a single child is *not* rejected: sp-trie's codec
  accepts it, and as every walked node is hash-linked to the state root such a node could
  only be there if the chain wrote it.
* **Unused nodes are allowed, duplicates are not.** One ``state_getReadProof`` answer covers
  many keys, so a proof holds nodes a single lookup never touches. Those nodes are hashed
  (to index them) but not decoded: a V1 proof also holds raw values, which are arbitrary
  bytes and not nodes. A node that is walked and fails to decode is rejected. The same node
  listed twice is rejected: no honest proof repeats a node (sp-trie stores proofs as sets).
* **Missing is not absent (T1).** A key the proof does not cover raises
  :class:`IncompleteProof`; ``None`` is only returned when the proof *shows* the key is not
  in the trie. A zero state root is rejected outright, and a hashed value whose preimage is
  not in the proof is :class:`IncompleteProof`.
* The root of the empty trie (blake2-256 of ``0x00``) proves every key absent without any
  proof node, as in sp-trie.
"""

# Exception names follow polkadot-sdk and light_clients.errors (no "Error" suffix).

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from light_clients.errors import DecodeError, IncompleteProof, TrieProofError
from light_clients.hashing import blake2_256
from light_clients.substrate.scale import ScaleReader

__all__ = [
    "EMPTY_TRIE_ROOT",
    "DuplicateProofNode",
    "InvalidStateRoot",
    "InvalidTrieNode",
    "NodeKind",
    "StorageRead",
    "TrieNode",
    "TrieProof",
    "TrieStep",
    "decode_node",
    "decode_storage_proof",
    "read_storage",
    "verify_storage_proof",
]

HASH_LEN = 32
EMPTY_NODE = b"\x00"
EMPTY_TRIE_ROOT = blake2_256(EMPTY_NODE)
_ZERO_HASH = bytes(HASH_LEN)
_NIBBLES = 16


class InvalidStateRoot(TrieProofError):
    """The state root is not a usable 32-byte hash (e.g. all zeros, T1)."""


class DuplicateProofNode(TrieProofError):
    """The same node appears twice in a proof."""


class InvalidTrieNode(TrieProofError, DecodeError):
    """A walked node is not a canonical sp-trie node encoding."""


class NodeKind(Enum):
    """The node variants of sp-trie's ``NodeHeader``."""

    EMPTY = "empty"
    LEAF = "leaf"
    BRANCH_NO_VALUE = "branch"
    BRANCH_WITH_VALUE = "branch+value"
    HASHED_VALUE_LEAF = "leaf+hashed-value"
    HASHED_VALUE_BRANCH = "branch+hashed-value"

    @property
    def is_branch(self) -> bool:
        """Whether the node has a child bitmap."""
        return self in _BRANCH_KINDS


_BRANCH_KINDS = frozenset(
    {NodeKind.BRANCH_NO_VALUE, NodeKind.BRANCH_WITH_VALUE, NodeKind.HASHED_VALUE_BRANCH}
)


@dataclass(frozen=True)
class TrieNode:
    """A decoded node.

    ``partial`` holds the node's partial key as lowercase hex digits, one per nibble (so it
    compares directly with ``key.hex()``). ``children`` has 16 entries: ``None``, a 32-byte
    hash, or a shorter inline node encoding.
    """

    kind: NodeKind
    partial: str
    value: bytes | None
    value_hash: bytes | None
    children: tuple[bytes | None, ...]


_NO_CHILDREN: tuple[bytes | None, ...] = (None,) * _NIBBLES
_EMPTY = TrieNode(NodeKind.EMPTY, "", None, None, _NO_CHILDREN)


def _header(first: int) -> tuple[NodeKind, int]:
    """Map a header byte to its node kind and the number of nibble-count bits it holds."""
    top = first >> 6
    if top == 0b01:
        return NodeKind.LEAF, 6
    if top == 0b10:
        return NodeKind.BRANCH_NO_VALUE, 6
    if top == 0b11:
        return NodeKind.BRANCH_WITH_VALUE, 6
    if first >> 5 == 0b001:
        return NodeKind.HASHED_VALUE_LEAF, 5
    if first >> 4 == 0b0001:
        return NodeKind.HASHED_VALUE_BRANCH, 4
    # 0x01 is the escape header of compact proofs; 0x02-0x0f are unassigned.
    raise InvalidTrieNode(f"node header byte 0x{first:02x} is not a storage-proof node")


def decode_node(data: bytes) -> TrieNode:
    """Decode one node, strictly (see the module docstring for what is rejected).

    Every failure is an :class:`InvalidTrieNode` (both a ``TrieProofError`` and a
    ``DecodeError``).
    """
    try:
        return _decode_node(data)
    except InvalidTrieNode:
        raise
    except DecodeError as exc:  # truncation or non-canonical compact inside the node
        raise InvalidTrieNode(str(exc)) from exc


def _decode_node(data: bytes) -> TrieNode:
    # Direct indexing rather than a reader per field: a full branch has 16 child references
    # and every walked node is decoded, so this is the hot loop of proof verification.
    if not isinstance(data, bytes):
        if not isinstance(data, bytearray | memoryview):
            raise InvalidTrieNode(f"a trie node must be bytes, got {type(data).__name__}")
        data = bytes(data)
    size = len(data)
    if size == 0:
        raise InvalidTrieNode("a trie node cannot be empty bytes")
    first = data[0]
    if first == 0:
        if size != 1:
            raise InvalidTrieNode("empty-trie node with trailing bytes")
        return _EMPTY
    kind, bits = _header(first)
    mask = (1 << bits) - 1
    count = first & mask
    pos = 1
    if count == mask:
        # Continuation bytes are summed until one is below 255 (each count has one encoding).
        while True:
            if pos >= size:
                raise InvalidTrieNode("node ends inside its nibble count")
            byte = data[pos]
            pos += 1
            count += byte
            if byte < 255:
                break
    if pos >= size:
        raise InvalidTrieNode(f"{kind.value} node ends after its header")
    odd = count & 1
    if odd and data[pos] & 0xF0:
        raise InvalidTrieNode("nonzero padding nibble in partial key")
    end = pos + (count + 1) // 2
    if end > size:
        raise InvalidTrieNode(f"partial key of {count} nibbles runs past the node's end")
    partial = data[pos:end].hex()[odd:]
    pos = end
    bitmap = 0
    if kind.is_branch:
        if pos + 2 > size:
            raise InvalidTrieNode("branch node ends before its child bitmap")
        bitmap = data[pos] | data[pos + 1] << 8
        pos += 2
        if bitmap == 0:
            raise InvalidTrieNode("branch node with an empty child bitmap")
    value_hash: bytes | None = None
    value: bytes | None = None
    if kind is NodeKind.HASHED_VALUE_LEAF or kind is NodeKind.HASHED_VALUE_BRANCH:
        end = pos + HASH_LEN
        if end > size:
            raise InvalidTrieNode("node ends inside its value hash")
        value_hash = data[pos:end]
        pos = end
    elif kind is not NodeKind.BRANCH_NO_VALUE:
        reader = ScaleReader(data, pos)
        value = reader.fixed(reader.compact_u32(), "inline value")
        pos = reader.offset
    if not bitmap:
        if pos != size:
            raise InvalidTrieNode(f"{size - pos} trailing bytes after the node")
        return TrieNode(kind, partial, value, value_hash, _NO_CHILDREN)
    slots: list[bytes | None] = [None] * _NIBBLES
    for index in range(_NIBBLES):
        if not bitmap >> index & 1:
            continue
        if pos >= size:
            raise InvalidTrieNode(f"child {index:x}: node ends before its reference")
        length_byte = data[pos]
        # References are at most 32 bytes, so their compact length always fits the one-byte
        # mode; a longer mode is an oversized or non-canonical length.
        if length_byte & 0b11:
            raise InvalidTrieNode(f"child {index:x}: reference length is not a one-byte compact")
        length = length_byte >> 2
        if length > HASH_LEN:
            # A node of 32+ bytes is always referenced by its hash: inlining it would be a
            # second encoding of the same subtrie.
            raise InvalidTrieNode(f"child {index:x}: inline reference of {length} bytes")
        if length == 0:
            raise InvalidTrieNode(f"child {index:x}: empty inline reference")
        end = pos + 1 + length
        if end > size:
            raise InvalidTrieNode(f"child {index:x}: reference runs past the node's end")
        slots[index] = data[pos + 1 : end]
        pos = end
    if pos != size:
        raise InvalidTrieNode(f"{size - pos} trailing bytes after the node")
    return TrieNode(kind, partial, value, value_hash, tuple(slots))


def decode_storage_proof(data: bytes) -> tuple[bytes, ...]:
    """Decode a SCALE ``Vec<Vec<u8>>`` of proof nodes (sp-trie's ``StorageProof`` encoding)."""
    reader = ScaleReader(data)
    nodes = reader.vec(ScaleReader.length_prefixed, min_item_size=1)
    reader.finish()
    return nodes


@dataclass(frozen=True)
class TrieStep:
    """One node on the path of a lookup.

    ``node_hash`` is ``None`` for a node inlined in its parent. ``depth`` is how many key
    nibbles were consumed before the node; ``child`` is the nibble followed out of it
    (``None`` at the last node).
    """

    node_hash: bytes | None
    kind: NodeKind
    partial: str
    depth: int
    child: int | None


@dataclass(frozen=True)
class StorageRead:
    """What a storage proof established for one key under one state root.

    ``value`` is ``None`` only when the proof shows the key is absent. ``value_hash`` is set
    when the trie stored the value by hash (state version 1) and the preimage was found.
    """

    state_root: bytes
    key: bytes
    value: bytes | None
    value_hash: bytes | None
    steps: tuple[TrieStep, ...]

    @property
    def node_hashes(self) -> tuple[bytes, ...]:
        """Hashes of the proof nodes walked, root first (inline nodes have none)."""
        return tuple(step.node_hash for step in self.steps if step.node_hash is not None)

    @property
    def hashed_value(self) -> bool:
        """Whether the value was stored as a separate, hash-referenced proof entry."""
        return self.value_hash is not None


class TrieProof:
    """A set of proof nodes indexed by blake2-256, for reading one or many keys.

    Building it hashes every node once; each :meth:`read` then only decodes the nodes on the
    key's path. Duplicate nodes are rejected here.
    """

    __slots__ = ("_by_hash",)

    def __init__(self, nodes: Sequence[bytes]) -> None:
        """Index ``nodes``; raises :class:`DuplicateProofNode` if one is listed twice."""
        by_hash: dict[bytes, bytes] = {}
        if isinstance(nodes, bytes | bytearray | str):
            raise DecodeError("a proof is a sequence of nodes, not a single byte string")
        for position, entry in enumerate(nodes):
            if isinstance(entry, bytes):
                node = entry
            elif isinstance(entry, bytearray | memoryview):
                node = bytes(entry)
            else:
                raise DecodeError(f"proof node #{position} is {type(entry).__name__}")
            node_hash = blake2_256(node)
            if node_hash in by_hash:
                raise DuplicateProofNode(
                    f"proof node #{position} (0x{node_hash.hex()}) is listed twice"
                )
            by_hash[node_hash] = node
        self._by_hash = by_hash

    def __len__(self) -> int:
        """Number of distinct nodes in the proof."""
        return len(self._by_hash)

    def __contains__(self, node_hash: object) -> bool:
        """Whether a node with this blake2-256 hash is in the proof."""
        return node_hash in self._by_hash

    def read(self, state_root: bytes, key: bytes) -> StorageRead:
        """Prove the value of ``key`` (or its absence) under ``state_root``."""
        if isinstance(state_root, bytearray | memoryview):
            state_root = bytes(state_root)
        if not isinstance(state_root, bytes) or len(state_root) != HASH_LEN:
            raise InvalidStateRoot("state root must be 32 bytes")
        if state_root == _ZERO_HASH:
            raise InvalidStateRoot("state root is zero: no trie has this root")
        if not isinstance(key, bytes | bytearray | memoryview):
            raise DecodeError(f"storage key must be bytes, got {type(key).__name__}")
        key = bytes(key)
        nibbles = key.hex()
        steps: list[TrieStep] = []

        node_hash: bytes | None = state_root
        encoded = self._by_hash.get(state_root)
        if encoded is None:
            if state_root != EMPTY_TRIE_ROOT:
                raise IncompleteProof(f"root node 0x{state_root.hex()} is not in the proof")
            encoded = EMPTY_NODE
        node = _decode_walked(encoded, node_hash)
        if node.kind is NodeKind.EMPTY:
            steps.append(TrieStep(node_hash, node.kind, "", 0, None))
            return StorageRead(state_root, key, None, None, tuple(steps))

        depth = 0
        while True:
            partial = node.partial
            if not nibbles.startswith(partial, depth):
                # The key leaves the trie inside this node's partial key: proven absent.
                steps.append(TrieStep(node_hash, node.kind, partial, depth, None))
                return StorageRead(state_root, key, None, None, tuple(steps))
            here = depth + len(partial)
            if here == len(nibbles):
                steps.append(TrieStep(node_hash, node.kind, partial, depth, None))
                value, value_hash = self._value_of(node)
                return StorageRead(state_root, key, value, value_hash, tuple(steps))
            if not node.kind.is_branch:
                steps.append(TrieStep(node_hash, node.kind, partial, depth, None))
                return StorageRead(state_root, key, None, None, tuple(steps))
            index = int(nibbles[here], 16)
            child = node.children[index]
            if child is None:
                steps.append(TrieStep(node_hash, node.kind, partial, depth, None))
                return StorageRead(state_root, key, None, None, tuple(steps))
            steps.append(TrieStep(node_hash, node.kind, partial, depth, index))
            depth = here + 1
            if len(child) == HASH_LEN:
                node_hash = child
                found = self._by_hash.get(child)
                if found is None:
                    raise IncompleteProof(
                        f"node 0x{child.hex()} (key nibble {depth}) is not in the proof"
                    )
                encoded = found
            else:
                node_hash = None
                encoded = child
            node = _decode_walked(encoded, node_hash)
            if node.kind is NodeKind.EMPTY:
                raise InvalidTrieNode("empty-trie node below the root")

    def _value_of(self, node: TrieNode) -> tuple[bytes | None, bytes | None]:
        if node.value_hash is None:
            return node.value, None
        value = self._by_hash.get(node.value_hash)
        if value is None:
            raise IncompleteProof(f"hashed value 0x{node.value_hash.hex()} is not in the proof")
        return value, node.value_hash


def _decode_walked(encoded: bytes, node_hash: bytes | None) -> TrieNode:
    try:
        return decode_node(encoded)
    except InvalidTrieNode as exc:  # say which node failed
        where = "inline node" if node_hash is None else f"node 0x{node_hash.hex()}"
        raise InvalidTrieNode(f"{where}: {exc}") from exc


def verify_storage_proof(state_root: bytes, proof: Sequence[bytes], key: bytes) -> StorageRead:
    """Verify ``proof`` for ``key`` under ``state_root`` and say what it established.

    Raises :class:`InvalidStateRoot` (zero or malformed root), :class:`DuplicateProofNode`,
    :class:`InvalidTrieNode` (a walked node is not canonical), or :class:`IncompleteProof`
    (the proof neither contains the value nor shows it absent).
    """
    return TrieProof(proof).read(state_root, key)


def read_storage(state_root: bytes, proof: Sequence[bytes], key: bytes) -> bytes | None:
    """The proven value of ``key`` under ``state_root``, or ``None`` if proven absent."""
    return verify_storage_proof(state_root, proof, key).value
