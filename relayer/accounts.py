"""How accounts of every family appear in messages and checkpoints: as 32 bytes."""

from __future__ import annotations


def bytes32(address: bytes) -> bytes:
    """An account left-padded to 32 bytes (an EVM address's 20, a Substrate account's 32), as
    messages and checkpoints carry it."""
    return address.rjust(32, b"\0")
