"""pallet_multisig's account derivation (pure): who the committee's multisig is.

The config checks a configured ``multisig`` against its ``signatories`` and threshold with this,
and :mod:`adapters.substrate.multisig` signs approvals for it.
"""

from __future__ import annotations

from collections.abc import Sequence

from light_clients.hashing import blake2_256
from light_clients.substrate.scale import encode_compact

__all__ = ["MULTISIG_PREFIX", "multisig_account"]

MULTISIG_PREFIX = b"modlpy/utilisuba"
"""pallet_multisig's derivation prefix for multi-account ids."""

_ACCOUNT_LEN = 32
_MAX_SIGNATORIES = 2**16 - 1


def _check_signatories(signatories: Sequence[bytes], threshold: int) -> list[bytes]:
    keys = [bytes(key) for key in signatories]
    if any(len(key) != _ACCOUNT_LEN for key in keys):
        raise ValueError("every signatory must be a 32-byte account id")
    if len(set(keys)) != len(keys):
        raise ValueError("signatories must be distinct")
    if not 1 <= len(keys) <= _MAX_SIGNATORIES:
        raise ValueError(f"need 1 to {_MAX_SIGNATORIES} signatories, got {len(keys)}")
    if isinstance(threshold, bool) or not 1 <= threshold <= len(keys):
        raise ValueError(f"threshold must be in 1..{len(keys)}, got {threshold!r}")
    return sorted(keys)


def multisig_account(signatories: Sequence[bytes], threshold: int) -> bytes:
    """The multisig's account id: ``blake2_256(b"modlpy/utilisuba" ‖ Compact(n) ‖ sorted
    signatories ‖ threshold as u16 LE)``. Raises ValueError for duplicates or a bad threshold."""
    ordered = _check_signatories(signatories, threshold)
    return blake2_256(
        MULTISIG_PREFIX
        + encode_compact(len(ordered))
        + b"".join(ordered)
        + threshold.to_bytes(2, "little")
    )
