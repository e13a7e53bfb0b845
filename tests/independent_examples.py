"""The Passerelle-native proof examples (merkle, committee, message), built without light_clients.

``docs/examples/generate.py`` writes ``docs/examples/{merkle,committee,message}.json`` with the
light clients themselves, and the CLI tests use those files as known-valid inputs. Fixtures made
by the code under test prove nothing about it, so this module rebuilds the same three files from
the same demo inputs with other implementations only:

- keccak-256 from pycryptodome;
- the message layout with :mod:`struct` (``>B I I 32s I 32s`` then the body, docs/design.md);
- the outbox root and branch from a naive full-tree computation (every level padded with that
  level's zero hash, depth 32), not the incremental tree;
- the checkpoint digest as ``Inbox.sol``'s ``checkpointDigest`` spells it: ``keccak256(
  abi.encodePacked(bytes24 tag, uint32 origin, bytes32 outbox, bytes32 root, uint32 index))``,
  packed by eth-abi;
- the signatures by eth-account's EIP-191 ``sign_message`` (RFC 6979, so deterministic).

A test compares these objects with the shipped files field by field and runs the CLI on them.
"""

from __future__ import annotations

import struct
from typing import Any

from Crypto.Hash import keccak
from eth_abi.packed import encode_packed
from eth_account import Account
from eth_account.messages import encode_defunct

DEPTH = 32
ORIGIN, DESTINATION = 1, 2
CHOSEN = 3  # the message the merkle and message examples prove


def keccak256(data: bytes) -> bytes:
    """keccak-256 by pycryptodome."""
    return keccak.new(digest_bits=256, data=data).digest()


def hex0x(data: bytes) -> str:
    return "0x" + data.hex()


# The demo inputs, restated from docs/examples/generate.py (public strings, worthless keys).
DEMO_KEYS = [keccak256(f"passerelle demo attester {i}".encode()) for i in range(3)]
OUTBOX = bytes(12) + keccak256(b"passerelle demo outbox")[:20]
SENDER = bytes(12) + keccak256(b"passerelle demo sender")[:20]
RECIPIENT = bytes(12) + keccak256(b"passerelle demo recipient")[:20]


def demo_messages() -> list[bytes]:
    """Five packed messages from origin 1 to destination 2, nonces 0..4."""
    return [
        struct.pack(">BII32sI32s", 1, nonce, ORIGIN, SENDER, DESTINATION, RECIPIENT)
        + f"hello #{nonce}".encode()
        for nonce in range(5)
    ]


def root_and_branch(leaves: list[bytes], index: int) -> tuple[bytes, list[bytes]]:
    """The depth-32 root over ``leaves`` and the 32 siblings of leaf ``index``, level by level."""
    zero = bytes(32)
    layer, position, branch = list(leaves), index, []
    for _ in range(DEPTH):
        if len(layer) % 2:
            layer.append(zero)
        branch.append(layer[position ^ 1])
        layer = [keccak256(layer[i] + layer[i + 1]) for i in range(0, len(layer), 2)]
        position //= 2
        zero = keccak256(zero + zero)
    return layer[0], branch


def checkpoint_inner_hash(origin: int, outbox: bytes, root: bytes, index: int) -> bytes:
    """``Inbox.checkpointDigest``'s inner hash, packed as Solidity packs it."""
    return keccak256(
        encode_packed(
            ["bytes24", "uint32", "bytes32", "bytes32", "uint32"],
            [b"PASSERELLE/v1/checkpoint", origin, outbox, root, index],
        )
    )


def committee_fields(inner: bytes) -> dict[str, Any]:
    """The three demo attesters (ascending address), threshold 2, the two lowest signing."""
    accounts = sorted((Account.from_key(key) for key in DEMO_KEYS), key=lambda a: a.address.lower())
    signatures = [
        bytes(account.sign_message(encode_defunct(primitive=inner)).signature)
        for account in accounts[:2]
    ]
    return {
        "validators": [account.address.lower() for account in accounts],
        "threshold": 2,
        "signatures": [hex0x(signature) for signature in signatures],
    }


def native_examples() -> dict[str, dict[str, Any]]:
    """``{kind: example object}`` for merkle, committee and message."""
    messages = demo_messages()
    root, branch = root_and_branch([keccak256(m) for m in messages], CHOSEN)
    index = len(messages) - 1
    checkpoint = {"origin": ORIGIN, "outbox": hex0x(OUTBOX), "root": hex0x(root), "index": index}
    committee = committee_fields(checkpoint_inner_hash(ORIGIN, OUTBOX, root, index))
    branch_hex = [hex0x(sibling) for sibling in branch]
    return {
        "merkle": {
            "kind": "merkle",
            "root": hex0x(root),
            "index": CHOSEN,
            "branch": branch_hex,
            "message": hex0x(messages[CHOSEN]),
        },
        "committee": {"kind": "committee", "checkpoint": checkpoint, **committee},
        "message": {
            "kind": "message",
            "message": hex0x(messages[CHOSEN]),
            "checkpoint": checkpoint,
            "branch": branch_hex,
            **committee,
            "destination": DESTINATION,
        },
    }
