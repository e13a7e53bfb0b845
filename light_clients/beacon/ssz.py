"""SSZ merkleization for exactly the light-client containers, and the branch check.

Only ``hash_tree_root`` is needed (a light client never decodes SSZ bytes: the beacon API
serves JSON), and only for fixed shapes: every container here has a constant number of
fields, every vector a constant length. The general rules of the SSZ spec reduce to
:func:`merkleize` over a power-of-two number of 32-byte chunks, zero chunks padding the right.

Hand-written rather than taken from ``ssz`` or ``remerkleable``: on a 512-key SyncCommittee,
the one large container, this is faster than both (numbers in docs/performance.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = [
    "ZERO_CHUNK",
    "is_valid_merkle_branch",
    "merkleize",
    "mix_in_length",
    "pack_bytes",
    "uint64_root",
    "uint256_root",
]

ZERO_CHUNK = bytes(32)
_sha256 = hashlib.sha256


def _hash_pair(left: bytes, right: bytes) -> bytes:
    return _sha256(left + right).digest()


def merkleize(chunks: Sequence[bytes], width: int) -> bytes:
    """Root of ``chunks`` padded with zero chunks to ``width`` leaves (a power of two).

    Callers pass fixed shapes only (``len(chunks) <= width``), so no limit check is needed.
    """
    layer = list(chunks)
    zero = ZERO_CHUNK
    while width > 1:
        if len(layer) % 2:
            layer.append(zero)
        layer = [_sha256(layer[i] + layer[i + 1]).digest() for i in range(0, len(layer), 2)]
        zero = _hash_pair(zero, zero)
        width //= 2
    return layer[0] if layer else zero


def pack_bytes(data: bytes) -> list[bytes]:
    """Split ``data`` into 32-byte chunks, the last one right-padded with zeros."""
    padded = data + bytes(-len(data) % 32)
    return [padded[i : i + 32] for i in range(0, len(padded), 32)]


def mix_in_length(root: bytes, length: int) -> bytes:
    """The root of a list: its contents' root hashed with its length (uint256 little-endian)."""
    return _hash_pair(root, length.to_bytes(32, "little"))


def uint64_root(value: int) -> bytes:
    """The chunk of a uint64: eight little-endian bytes, zero-padded to 32."""
    return value.to_bytes(8, "little") + bytes(24)


def uint256_root(value: int) -> bytes:
    """The chunk of a uint256: 32 little-endian bytes."""
    return value.to_bytes(32, "little")


def is_valid_merkle_branch(
    leaf: bytes, branch: Sequence[bytes], depth: int, index: int, root: bytes
) -> bool:
    """The consensus spec's ``is_valid_merkle_branch``: ``leaf`` is at ``index`` under ``root``.

    ``branch`` must hold exactly ``depth`` siblings, bottom first; any other length is False.
    """
    if len(branch) != depth:
        return False
    value = leaf
    for level, sibling in enumerate(branch):
        right = (index >> level) & 1
        value = _hash_pair(sibling, value) if right else _hash_pair(value, sibling)
    return value == root
