"""BLS12-381 for the sync committee: key and signature decoding and ``FastAggregateVerify``.

Through pyblst, bindings to supranational's blst (the library the Ethereum consensus clients
verify with): ``uncompress`` rejects bad encodings and points outside the prime-order
subgroup, ``hash_to_group`` is hash-to-curve on G2 with the ciphersuite's DST. On top of that
this module only adds the two lines of the IETF draft's ``FastAggregateVerify`` (the
proof-of-possession scheme Ethereum uses): aggregate the keys, compare two pairings.
Measured here for 512 keys: about 1.1–1.7 ms, the same as blspy, whose wheels stop at
Python 3.12.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce
from operator import add
from typing import TypeAlias

from pyblst import BlstP1Element, BlstP2Element, final_verify, miller_loop

__all__ = [
    "DST",
    "PublicKey",
    "Signature",
    "decode_pubkey",
    "decode_signature",
    "fast_aggregate_verify",
]

PublicKey: TypeAlias = BlstP1Element
Signature: TypeAlias = BlstP2Element

DST = b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_"
"""Ethereum's ciphersuite: BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_."""

_G1_GENERATOR = BlstP1Element.uncompress(
    bytes.fromhex(
        "97f1d3a73197d7942695638c4fa9ac0fc3688c4f9774b905a14e3a3f171bac58"
        "6c55e83ff97a1aeffb3af00adb22c6bb"
    )
)
_G1_INFINITY = BlstP1Element()
_G2_INFINITY = BlstP2Element()


def decode_pubkey(data: bytes) -> PublicKey | None:
    """The G1 point of a 48-byte compressed key, or None: bad encoding, outside the subgroup,
    or the point at infinity (the IETF draft's ``KeyValidate``)."""
    try:
        point = BlstP1Element.uncompress(data)
    except ValueError:
        return None
    return None if point == _G1_INFINITY else point


def decode_signature(data: bytes) -> Signature | None:
    """The G2 point of a 96-byte compressed signature (infinity included), or None."""
    try:
        return BlstP2Element.uncompress(data)
    except ValueError:
        return None


def fast_aggregate_verify(keys: Sequence[PublicKey], message: bytes, signature: Signature) -> bool:
    """``FastAggregateVerify``: ``e(sum(keys), H(message)) == e(g1, signature)``.

    False for no keys or the infinity signature (which only an empty aggregate could have).
    """
    if not keys or signature == _G2_INFINITY:
        return False
    aggregate = reduce(add, keys)
    hashed = BlstP2Element.hash_to_group(message, DST)
    return bool(final_verify(miller_loop(aggregate, hashed), miller_loop(_G1_GENERATOR, signature)))
