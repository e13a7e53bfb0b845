"""Checkpoint attestations: a committee of Ethereum keys signs an outbox root.

Exactly docs/design.md, "Checkpoint attestation"::

    inner  = keccak256("PASSERELLE/v1/checkpoint" ‖ u32 origin ‖ bytes32 outbox
                       ‖ bytes32 root ‖ u32 index)
    digest = keccak256("\\x19Ethereum Signed Message:\\n32" ‖ inner)

A committee is an ordered set of distinct non-zero 20-byte addresses and a threshold
``0 < threshold <= n``. A valid attestation is at least ``threshold`` 65-byte signatures
``r ‖ s ‖ v`` (``v`` in {27, 28}, low-s), each recovering to a member, given in strictly ascending
signer-address order: duplicates are impossible by construction (docs/threats.md T4).

Nothing the caller supplies is taken on trust (T2): the digest is always recomputed from the
checkpoint, and every signature is recovered here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import coincurve

from light_clients.errors import AttestationError, DecodeError
from light_clients.hashing import keccak256
from light_clients.hexstr import to_hex
from light_clients.merkle import EMPTY_ROOT

__all__ = [
    "CHECKPOINT_TAG",
    "SECP256K1_N",
    "Attestation",
    "BelowThresholdError",
    "Checkpoint",
    "Committee",
    "DuplicateSignerError",
    "InvalidCheckpointError",
    "InvalidCommitteeError",
    "InvalidKeyError",
    "MalformedCheckpointError",
    "MalformedSignatureError",
    "UnknownSignerError",
    "UnorderedSignaturesError",
    "address_of",
    "recover_signer",
    "sign_checkpoint",
    "sign_digest",
    "verify_attestation",
]

CHECKPOINT_TAG = b"PASSERELLE/v1/checkpoint"
"""Protocol tag that domain-separates checkpoint digests from every other signed payload (T8)."""

EIP191_PREFIX = b"\x19Ethereum Signed Message:\n32"

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
"""Order of the secp256k1 group."""

_HALF_N = SECP256K1_N // 2  # low-s bound: s <= n/2 (EIP-2)

U32_MAX = 2**32 - 1
ADDRESS_SIZE = 20
SIGNATURE_SIZE = 65
_ZERO_ADDRESS = bytes(ADDRESS_SIZE)
_ZERO_HASH = bytes(32)


class MalformedCheckpointError(DecodeError):
    """A checkpoint field has the wrong type, size or range."""


class InvalidCheckpointError(AttestationError):
    """A well-formed checkpoint that can never be attested (its root commits to nothing, T1)."""


class InvalidCommitteeError(AttestationError):
    """The committee itself is unusable: empty, bad threshold, zero or duplicate member (T3, T5)."""


class InvalidKeyError(AttestationError):
    """A private key that is not a secp256k1 scalar in 1..n-1."""


class MalformedSignatureError(AttestationError):
    """A signature that is not strict 65-byte ``r ‖ s ‖ v`` or does not recover (T4, T5)."""


class UnknownSignerError(AttestationError):
    """A signature recovers to an address outside the committee (T6, T8)."""


class DuplicateSignerError(AttestationError):
    """The same committee member signed twice (T4)."""


class UnorderedSignaturesError(AttestationError):
    """Signatures are not in ascending signer-address order (T17)."""


class BelowThresholdError(AttestationError):
    """Fewer distinct member signatures than the committee threshold (or none at all, T3)."""


def _is_u32(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= U32_MAX


def _is_bytes(value: object, size: int) -> bool:
    return isinstance(value, bytes) and len(value) == size


def _describe(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return f"{len(value)} bytes"
    return type(value).__name__


# --------------------------------------------------------------------------- checkpoint


@dataclass(frozen=True)
class Checkpoint:
    """An outbox state a committee signs: ``root`` over leaves ``0..index`` of ``outbox``.

    ``index = count - 1``, so an empty outbox has no checkpoint. Construction raises
    :class:`MalformedCheckpointError` (a :class:`DecodeError`) for a field of the wrong type or
    size and :class:`InvalidCheckpointError` for a zero or empty-tree root (T1: such a root
    proves nothing).
    """

    origin: int
    outbox: bytes
    root: bytes
    index: int

    def __post_init__(self) -> None:
        """Validate every field (see the class docstring)."""
        if not _is_u32(self.origin):
            raise MalformedCheckpointError(f"checkpoint origin must be a u32, got {self.origin!r}")
        if not _is_u32(self.index):
            raise MalformedCheckpointError(f"checkpoint index must be a u32, got {self.index!r}")
        if not _is_bytes(self.outbox, 32):
            raise MalformedCheckpointError(
                f"checkpoint outbox must be 32 bytes, got {_describe(self.outbox)}"
            )
        if not _is_bytes(self.root, 32):
            raise MalformedCheckpointError(
                f"checkpoint root must be 32 bytes, got {_describe(self.root)}"
            )
        if self.root == _ZERO_HASH:
            raise InvalidCheckpointError("checkpoint root is the zero hash")
        if self.root == EMPTY_ROOT:
            raise InvalidCheckpointError(
                f"checkpoint root is the empty-tree root {to_hex(EMPTY_ROOT)}"
            )

    def encode(self) -> bytes:
        """The 96-byte preimage of :meth:`inner_hash` (tag ‖ origin ‖ outbox ‖ root ‖ index)."""
        return (
            CHECKPOINT_TAG
            + self.origin.to_bytes(4, "big")
            + self.outbox
            + self.root
            + self.index.to_bytes(4, "big")
        )

    def inner_hash(self) -> bytes:
        """``keccak256("PASSERELLE/v1/checkpoint" ‖ u32 origin ‖ outbox ‖ root ‖ u32 index)``."""
        return keccak256(self.encode())

    def digest(self) -> bytes:
        """EIP-191 digest: ``keccak256("\\x19Ethereum Signed Message:\\n32" ‖ inner)``."""
        return keccak256(EIP191_PREFIX + self.inner_hash())


# --------------------------------------------------------------------------- committee


@dataclass(frozen=True)
class Committee:
    """An ordered set of distinct, non-zero 20-byte signer addresses and a threshold.

    Raises :class:`InvalidCommitteeError` unless the set is non-empty, ``0 < threshold <= n``, no
    member is the zero address (T5: a failed ``ecrecover`` yields it) and no member repeats
    (T3/T4: a repeated member would let one key count twice). Member order is kept as given.
    """

    members: tuple[bytes, ...]
    threshold: int
    _member_set: frozenset[bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Validate the set and the threshold (see the class docstring)."""
        members = self.members
        if isinstance(members, bytes | bytearray | str) or not isinstance(members, Sequence):
            raise InvalidCommitteeError(
                f"committee members must be a sequence of addresses, got {type(members).__name__}"
            )
        members = tuple(members)
        object.__setattr__(self, "members", members)
        if not members:
            raise InvalidCommitteeError("committee is empty")
        threshold = self.threshold
        if not isinstance(threshold, int) or isinstance(threshold, bool):
            raise InvalidCommitteeError(
                f"threshold must be an integer, got {type(threshold).__name__}"
            )
        if not 0 < threshold <= len(members):
            raise InvalidCommitteeError(
                f"threshold {threshold} outside 1..{len(members)} (committee of {len(members)})"
            )
        seen: set[bytes] = set()
        for position, member in enumerate(members):
            if not _is_bytes(member, ADDRESS_SIZE):
                raise InvalidCommitteeError(
                    f"member {position} must be a 20-byte address, got {_describe(member)}"
                )
            if member == _ZERO_ADDRESS:
                raise InvalidCommitteeError(f"member {position} is the zero address")
            if member in seen:
                raise InvalidCommitteeError(f"duplicate committee member {to_hex(member)}")
            seen.add(member)
        object.__setattr__(self, "_member_set", frozenset(seen))

    def __contains__(self, address: object) -> bool:
        """True if ``address`` is a member."""
        return address in self._member_set

    def __len__(self) -> int:
        """Number of members."""
        return len(self.members)


# --------------------------------------------------------------------------- keys and signatures


def _private_key(private_key: bytes) -> coincurve.PrivateKey:
    if not _is_bytes(private_key, 32):
        raise InvalidKeyError(f"private key must be 32 bytes, got {_describe(private_key)}")
    scalar = int.from_bytes(private_key, "big")
    if not 0 < scalar < SECP256K1_N:
        raise InvalidKeyError("private key is not in 1..n-1")
    return coincurve.PrivateKey(private_key)


def _address_of_public(public_key: coincurve.PublicKey) -> bytes:
    # Ethereum address: last 20 bytes of keccak256 of the 64-byte uncompressed point (no 0x04).
    return keccak256(public_key.format(compressed=False)[1:])[12:]


def address_of(private_key: bytes) -> bytes:
    """Return the 20-byte Ethereum address of a 32-byte secp256k1 private key."""
    return _address_of_public(_private_key(private_key).public_key)


def sign_checkpoint(private_key: bytes, checkpoint: Checkpoint) -> bytes:
    """Sign ``checkpoint.digest()``: 65 bytes ``r ‖ s ‖ v``, ``v`` in {27, 28}, low-s.

    Deterministic (RFC 6979 nonces, so the same key never reuses ``k`` across digests, T9);
    libsecp256k1 always produces low-s signatures, so :func:`recover_signer` accepts them.
    """
    if not isinstance(checkpoint, Checkpoint):
        raise InvalidCheckpointError(f"expected a Checkpoint, got {type(checkpoint).__name__}")
    return sign_digest(private_key, checkpoint.digest())


def sign_digest(private_key: bytes, digest: bytes) -> bytes:
    """The signature :func:`sign_checkpoint` makes, over any 32-byte ``digest`` the caller
    built under its own domain tag (an attester's attested-block digest, say), so that
    :func:`recover_signer` checks both alike."""
    signature = _private_key(private_key).sign_recoverable(digest, hasher=None)
    return signature[:64] + bytes((signature[64] + 27,))


def recover_signer(digest: bytes, signature: bytes) -> bytes:
    """Return the 20-byte address that produced ``signature`` over the 32-byte ``digest``.

    Strict, like Ethereum's ``ecrecover`` plus EIP-2: exactly 65 bytes, ``v`` in {27, 28},
    ``0 < r < n``, ``0 < s <= n/2`` (a high-s copy is a second encoding of the same vote, T4).
    Anything else, or a failed recovery, raises :class:`MalformedSignatureError` (T5).
    """
    if not _is_bytes(digest, 32):
        raise MalformedSignatureError(f"digest must be 32 bytes, got {_describe(digest)}")
    if not isinstance(signature, bytes):
        raise MalformedSignatureError(f"signature must be bytes, got {type(signature).__name__}")
    if len(signature) != SIGNATURE_SIZE:
        raise MalformedSignatureError(f"signature is {len(signature)} bytes, need {SIGNATURE_SIZE}")
    v = signature[64]
    if v not in (27, 28):
        raise MalformedSignatureError(f"signature v is {v}, need 27 or 28")
    r = int.from_bytes(signature[0:32], "big")
    if not 0 < r < SECP256K1_N:
        raise MalformedSignatureError("signature r is 0 or not below the curve order")
    s = int.from_bytes(signature[32:64], "big")
    if s == 0:
        raise MalformedSignatureError("signature s is 0")
    if s > _HALF_N:
        raise MalformedSignatureError(
            "signature s is in the upper half of the curve order (malleable)"
        )
    try:
        public_key = coincurve.PublicKey.from_signature_and_message(
            signature[:64] + bytes((v - 27,)), digest, hasher=None
        )
    except ValueError:
        raise MalformedSignatureError("signature does not recover to a public key") from None
    address = _address_of_public(public_key)
    if address == _ZERO_ADDRESS:  # pragma: no cover - needs a keccak preimage
        raise MalformedSignatureError("signature recovers to the zero address")
    return address


# --------------------------------------------------------------------------- attestation


@dataclass(frozen=True)
class Attestation:
    """What :func:`verify_attestation` established.

    ``signers[i]`` is the committee member recovered from ``signatures[i]`` (strictly
    ascending); ``digest`` was computed here from ``checkpoint`` (``inner`` is its EIP-191
    payload), never taken from the caller.
    """

    checkpoint: Checkpoint
    inner: bytes
    digest: bytes
    signers: tuple[bytes, ...]
    signatures: tuple[bytes, ...]
    threshold: int
    committee_size: int


def verify_attestation(
    committee: Committee, checkpoint: Checkpoint, signatures: Sequence[bytes]
) -> Attestation:
    """Check that at least ``committee.threshold`` distinct members signed ``checkpoint``.

    Every supplied signature must be strict (:func:`recover_signer`) and recover to a member,
    and the signers must be strictly ascending by address. Raises :class:`MalformedSignatureError`,
    :class:`UnknownSignerError` (also what a signature over another origin, outbox, root or index
    yields: T6/T8), :class:`DuplicateSignerError`, :class:`UnorderedSignaturesError` or
    :class:`BelowThresholdError`.
    """
    if not isinstance(committee, Committee):
        raise InvalidCommitteeError(f"expected a Committee, got {type(committee).__name__}")
    if not isinstance(checkpoint, Checkpoint):
        raise InvalidCheckpointError(f"expected a Checkpoint, got {type(checkpoint).__name__}")
    if isinstance(signatures, bytes | bytearray | str) or not isinstance(signatures, Sequence):
        raise MalformedSignatureError(
            f"signatures must be a sequence of 65-byte signatures, got {type(signatures).__name__}"
        )
    count = len(signatures)
    if count == 0:
        raise BelowThresholdError(f"no signatures (threshold {committee.threshold})")
    if count > len(committee.members):
        # Distinct ascending members cannot outnumber the committee; refuse before any ecrecover.
        raise MalformedSignatureError(
            f"more signatures ({count}) than committee members ({len(committee.members)})"
        )
    if count < committee.threshold:
        # Every supplied signature must be valid, so too few is final: no ecrecover needed.
        raise BelowThresholdError(f"below threshold: {count} of {committee.threshold}")
    # T2: the digest is derived here from the checkpoint's fields through the base-class
    # encoder, so neither a caller-supplied digest nor an overriding subclass can steer it.
    inner = keccak256(Checkpoint.encode(checkpoint))
    digest = keccak256(EIP191_PREFIX + inner)
    signers: list[bytes] = []
    previous: bytes | None = None
    for position, signature in enumerate(signatures):
        try:
            signer = recover_signer(digest, signature)
        except MalformedSignatureError as error:
            raise MalformedSignatureError(f"signature {position}: {error}") from None
        if signer not in committee:
            raise UnknownSignerError(
                f"signature {position} recovers to {to_hex(signer)}, not a committee member"
            )
        if previous is not None:
            if signer == previous:
                raise DuplicateSignerError(f"duplicate signer {to_hex(signer)}")
            if signer < previous:
                raise UnorderedSignaturesError(
                    f"signatures not in ascending signer order (signature {position}: "
                    f"{to_hex(signer)} after {to_hex(previous)})"
                )
        signers.append(signer)
        previous = signer
    return Attestation(
        checkpoint=checkpoint,
        inner=inner,
        digest=digest,
        signers=tuple(signers),
        signatures=tuple(signatures),
        threshold=committee.threshold,
        committee_size=len(committee.members),
    )
