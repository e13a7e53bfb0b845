"""Merkle-Patricia trie proof walking (Ethereum Yellow Paper, appendix D).

A proof is the list of trie nodes on the path from the root to a key, root first, exactly as
``eth_getProof`` returns it: every node that its parent references by keccak-256 (encodings of
32 bytes or more, plus the root itself). Nodes shorter than 32 bytes are embedded in their
parent and never appear on their own.

The walk is strict, because a proof format that tolerates slack lets one fact be presented in
several byte forms (T13) or lets bytes ride along outside the hash (T10):

* the proof must be consumed exactly, in order: a node that does not hash to the reference the
  walk is following, a duplicate, or a node left over at the end is rejected;
* every node is canonical RLP, a branch has 17 items, an extension or leaf 2;
* the hex-prefix path encoding is canonical: flag nibble 0–3, a zero padding nibble for even
  paths, a non-empty extension path;
* references are a 32-byte hash or an embedded node whose encoding is under 32 bytes; a branch
  holds at least two entries, an extension leads to a branch, a leaf holds a non-empty value
  (a canonical trie never contains anything else);
* a key the proof does not reach is :class:`~light_clients.errors.IncompleteProof`, never
  "absent": absence is returned only when the walk itself shows the key's path leaving the
  trie (an empty branch slot, a leaf or extension whose path diverges from the key);
* the all-zero root is rejected outright (T1: Nomad accepted the zero root as proven).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from light_clients.errors import DecodeError, IncompleteProof, TrieProofError
from light_clients.ethereum.rlp import RLPItem, decode, encode
from light_clients.hashing import keccak256

__all__ = [
    "EMPTY_TRIE_ROOT",
    "MalformedNodeError",
    "MptNode",
    "MptWalk",
    "NodeHashMismatchError",
    "UnusedProofNodesError",
    "ZeroRootError",
    "verify_proof",
    "walk_proof",
]

EMPTY_TRIE_ROOT = bytes.fromhex("56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421")
"""keccak256(rlp(b"")): the root of the empty trie (empty storage, no receipts)."""

_ZERO_ROOT = bytes(32)
_HASH_LEN = 32
_NIBBLE = {c: i for i, c in enumerate("0123456789abcdef")}

NodeKind = Literal["branch", "extension", "leaf"]


class ZeroRootError(TrieProofError):
    """The all-zero hash was given as a trie root (T1): no trie has it, a default value does."""


class NodeHashMismatchError(TrieProofError):
    """A proof node does not hash to the reference the walk is following."""


class MalformedNodeError(TrieProofError, DecodeError):
    """A proof node that is not a canonical trie node (bad RLP, arity, hex-prefix, reference)."""


class UnusedProofNodesError(TrieProofError):
    """The proof carries nodes that the walk never used: extras or duplicates (T10)."""


@dataclass(frozen=True, slots=True)
class MptNode:
    """One node visited by a walk, as ``passerelle proof inspect`` prints it."""

    kind: NodeKind
    hash: bytes | None
    """keccak256 of the encoding; ``None`` for a node embedded in its parent (< 32 bytes)."""
    encoding: bytes
    proof_index: int | None
    """Position in the proof list; ``None`` for an embedded node."""
    depth: int
    """Key nibbles already consumed when the walk entered this node."""
    path: str
    """Nibbles (hex digits) this node consumed: one for a branch slot, the path of an
    extension or leaf, empty where the key ended or diverged."""


@dataclass(frozen=True, slots=True)
class MptWalk:
    """What a proof established about one key under one root."""

    root: bytes
    key: bytes
    value: bytes | None
    """The value stored at ``key``, or ``None`` when the proof shows the key is absent."""
    nodes: tuple[MptNode, ...]
    absence: str | None
    """Why the key is absent (``None`` when a value was found)."""

    @property
    def node_hashes(self) -> tuple[bytes, ...]:
        """The hashes of the proof nodes walked, root first (embedded nodes have none)."""
        return tuple(node.hash for node in self.nodes if node.hash is not None)


def verify_proof(root: bytes, key: bytes, proof: Sequence[bytes]) -> bytes | None:
    """Return the value at ``key`` under ``root``, or ``None`` if the proof shows it absent.

    Shorthand for ``walk_proof(root, key, proof).value``; raises what :func:`walk_proof` does.
    """
    return walk_proof(root, key, proof).value


def walk_proof(root: bytes, key: bytes, proof: Sequence[bytes]) -> MptWalk:
    """Walk ``proof`` from ``root`` along ``key`` and return what it proves.

    ``root`` is the 32-byte trie root, ``key`` the raw trie key (``keccak256(address)`` for the
    state trie, ``rlp(index)`` for receipts), ``proof`` the node encodings, root first.

    Raises :class:`ZeroRootError` for the all-zero root, :class:`NodeHashMismatchError` when a
    node is not the one referenced, :class:`MalformedNodeError` for a non-canonical node,
    :class:`~light_clients.errors.IncompleteProof` when the proof stops before the key's path
    is settled, :class:`UnusedProofNodesError` for extra or duplicate nodes, and
    :class:`~light_clients.errors.DecodeError` for arguments of the wrong type or length.
    """
    _check_arguments(root, key, proof)
    if root == _ZERO_ROOT:
        raise ZeroRootError(
            "trie root is 0x00…00: the zero hash is a default value, not a root (T1)"
        )
    if root == EMPTY_TRIE_ROOT:
        # The empty trie's root alone proves every key absent. Nodes differ in what they send:
        # geth sends no node, anvil and erigon send the root node itself, rlp(b"") = 0x80, whose
        # keccak *is* the empty root. Both are accepted; anything else is an unused node (T10).
        if list(proof) not in ([], [EMPTY_NODE]):
            raise UnusedProofNodesError(
                f"the empty trie is proven by no node or by its root node 0x80, got {len(proof)} "
                "node(s) (T10)"
            )
        return MptWalk(root, key, None, (), "the trie is empty")
    return _Walker(root, key, proof).run()


EMPTY_NODE = b"\x80"
"""The root node of the empty trie (``rlp(b"")``); ``keccak256(EMPTY_NODE) == EMPTY_TRIE_ROOT``."""


def _check_arguments(root: object, key: object, proof: object) -> None:
    """Reject arguments of the wrong type or shape before touching them."""
    if not isinstance(root, bytes) or len(root) != _HASH_LEN:
        raise DecodeError("trie root must be 32 bytes")
    if not isinstance(key, bytes):
        raise DecodeError(f"trie key must be bytes, got {type(key).__name__}")
    if isinstance(proof, bytes | str) or not isinstance(proof, Sequence):
        raise DecodeError("proof must be a sequence of node encodings")
    for index, node in enumerate(proof):
        if not isinstance(node, bytes):
            raise DecodeError(f"proof node {index} must be bytes, got {type(node).__name__}")
    if len(set(proof)) != len(proof):
        seen: dict[bytes, int] = {}
        for index, node in enumerate(proof):
            if node in seen:
                raise UnusedProofNodesError(
                    f"proof node {index} duplicates node {seen[node]} (T10)"
                )
            seen[node] = index


_Outcome = tuple[NodeKind, RLPItem | None, bytes | None, str | None]
"""What one node decided: its kind, then the child reference to follow, or (when that is
``None``) the value found or the reason the key is absent. A plain tuple: this is the hot path."""


class _Walker:
    """State of one walk: the key's nibbles, how many are consumed, the proof cursor."""

    __slots__ = ("key", "nibbles", "nodes", "pos", "proof", "proof_cursor", "root")

    def __init__(self, root: bytes, key: bytes, proof: Sequence[bytes]) -> None:
        self.root = root
        self.key = key
        # Hex digits double as nibbles: slicing and comparing strings is much faster in Python
        # than building tuples of ints.
        self.nibbles = key.hex()
        self.pos = 0
        self.proof = proof
        self.proof_cursor = 0
        self.nodes: list[MptNode] = []

    def run(self) -> MptWalk:
        """Follow references from the root until the key's value or absence is settled."""
        reference: RLPItem = self.root
        after_extension = False
        while True:
            items, node_hash, encoding, index = self._resolve(reference)
            depth = self.pos
            if len(items) == 17:
                kind, child, value, absence = self._branch(items, index)
            elif len(items) == 2:
                if after_extension:
                    raise MalformedNodeError(
                        f"{_where(index)}: an extension must lead to a branch node"
                    )
                kind, child, value, absence = self._short_node(items, index)
            else:
                raise MalformedNodeError(
                    f"{_where(index)}: trie node has {len(items)} items (expected 17 or 2)"
                )
            self.nodes.append(
                MptNode(kind, node_hash, encoding, index, depth, self.nibbles[depth : self.pos])
            )
            if child is None:
                return self._finish(value, absence)
            reference = child
            after_extension = kind == "extension"

    def _resolve(self, reference: RLPItem) -> tuple[list[RLPItem], bytes | None, bytes, int | None]:
        """Turn a reference into a decoded node: a hash consumes the next proof node."""
        if isinstance(reference, list):
            # Embedded node: already decoded inside its (hash-checked) parent, and its size was
            # checked when the parent was parsed.
            return reference, None, encode(reference), None
        index = self.proof_cursor
        if index >= len(self.proof):
            raise IncompleteProof(
                f"proof ends after {index} node(s) at key nibble {self.pos}: node "
                f"0x{reference.hex()} is missing, so the key is neither proven present nor absent"
            )
        encoding = self.proof[index]
        node_hash = keccak256(encoding)
        if node_hash != reference:
            expected = "the root" if index == 0 else f"the child referenced by node {index - 1}"
            raise NodeHashMismatchError(
                f"proof node {index} hashes to 0x{node_hash.hex()}, but the walk expects "
                f"0x{reference.hex()} ({expected})"
            )
        self.proof_cursor = index + 1
        try:
            items = decode(encoding)
        except DecodeError as error:
            raise MalformedNodeError(f"proof node {index}: {error}") from error
        if not isinstance(items, list):
            raise MalformedNodeError(f"proof node {index} is an RLP string, not a trie node")
        return items, node_hash, encoding, index

    def _branch(self, items: list[RLPItem], index: int | None) -> _Outcome:
        """Check a 17-item branch node and take the slot for the next nibble."""
        occupied = 0
        for slot in range(16):
            child = items[slot]
            if child == b"":
                continue
            occupied += 1
            # Inline test for the common case, a 32-byte hash; anything else (an embedded
            # node, a bad size) gets the full check and its message from _check_reference.
            if type(child) is not bytes or len(child) != _HASH_LEN:
                _check_reference(child, f"{_where(index)}: branch slot {slot:x}")
        value = items[16]
        if not isinstance(value, bytes):
            raise MalformedNodeError(f"{_where(index)}: branch value slot holds a list")
        if value:
            occupied += 1
        if occupied < 2:
            # A branch with a single entry would have been collapsed into an extension or leaf.
            raise MalformedNodeError(
                f"{_where(index)}: branch node has {occupied} entry, a canonical branch has >= 2"
            )
        if self.pos == len(self.nibbles):
            if value:
                return "branch", None, value, None
            return "branch", None, None, "the key ends at a branch node with an empty value slot"
        nibble = self.nibbles[self.pos]
        self.pos += 1
        child = items[_NIBBLE[nibble]]
        if child == b"":
            return "branch", None, None, f"branch slot {nibble} at depth {self.pos - 1} is empty"
        return "branch", child, None, None

    def _short_node(self, items: list[RLPItem], index: int | None) -> _Outcome:
        """Check an extension or leaf node and match its path against the key."""
        encoded_path, second = items
        if not isinstance(encoded_path, bytes):
            raise MalformedNodeError(f"{_where(index)}: node path is a list, not a byte string")
        is_leaf, path = _hex_prefix(encoded_path, index)
        remaining = self.nibbles[self.pos :]
        if is_leaf:
            if not isinstance(second, bytes) or not second:
                raise MalformedNodeError(f"{_where(index)}: leaf value must be a non-empty string")
            if remaining == path:
                self.pos = len(self.nibbles)
                return "leaf", None, second, None
            absence = (
                f"leaf path {path or '(empty)'} diverges from key nibbles {remaining or '(none)'}"
            )
            return "leaf", None, None, absence
        if not path:
            raise MalformedNodeError(f"{_where(index)}: extension node with an empty path")
        if second == b"":
            raise MalformedNodeError(f"{_where(index)}: extension node without a child")
        _check_reference(second, f"{_where(index)}: extension child")
        if not remaining.startswith(path):
            absence = f"extension path {path} diverges from key nibbles {remaining or '(none)'}"
            return "extension", None, None, absence
        self.pos += len(path)
        return "extension", second, None, None

    def _finish(self, value: bytes | None, absence: str | None) -> MptWalk:
        """Require that the whole proof was used, then report the outcome."""
        unused = len(self.proof) - self.proof_cursor
        if unused:
            raise UnusedProofNodesError(
                f"proof has {unused} node(s) after the walk ended at node "
                f"{self.proof_cursor - 1} (T10)"
            )
        return MptWalk(self.root, self.key, value, tuple(self.nodes), absence)


def _where(index: int | None) -> str:
    """Name a node in error messages."""
    return "embedded node" if index is None else f"proof node {index}"


def _check_reference(child: RLPItem, what: str) -> None:
    """A child reference is a 32-byte hash or an embedded node encoded in under 32 bytes."""
    if isinstance(child, bytes):
        if len(child) != _HASH_LEN:
            raise MalformedNodeError(f"{what} is a {len(child)}-byte string, not a 32-byte hash")
        return
    size = len(encode(child))
    if size >= _HASH_LEN:
        # Nodes of 32 bytes or more are always stored by hash; embedding one is a second,
        # non-canonical encoding of the same trie.
        raise MalformedNodeError(f"{what} embeds a {size}-byte node (>= 32 must be hashed)")


def _hex_prefix(encoded: bytes, index: int | None) -> tuple[bool, str]:
    """Decode a hex-prefix path; return (is_leaf, nibbles as hex digits).

    The first nibble is the flag: bit 1 = leaf, bit 0 = odd length. An even path carries a
    zero padding nibble. Any other form is a second encoding of the same path (T13).
    """
    if not encoded:
        raise MalformedNodeError(
            f"{_where(index)}: hex-prefix path is empty (it always holds at least the flag)"
        )
    digits = encoded.hex()
    flag = _NIBBLE[digits[0]]
    if flag > 3:
        raise MalformedNodeError(
            f"{_where(index)}: hex-prefix flag nibble {flag:x} is not 0-3 (T13)"
        )
    if flag & 1:
        return flag >= 2, digits[1:]
    if digits[1] != "0":
        raise MalformedNodeError(
            f"{_where(index)}: hex-prefix padding nibble is {digits[1]}, must be 0 for an even "
            "path (T13)"
        )
    return flag >= 2, digits[2:]
