"""Substrate block headers (``sp_runtime::generic::Header<u32, BlakeTwo256>``) and GRANDPA logs.

A header is SCALE ``parent_hash [32] ‖ number Compact<u32> ‖ state_root [32] ‖
extrinsics_root [32] ‖ digest Vec<DigestItem>``; its hash is blake2-256 of exactly those bytes.
Decoding is strict (canonical compact, known digest tags only, no trailing bytes), so one
header has one encoding and therefore one hash.

GRANDPA signals authority-set changes in ``Consensus(b"FRNK", ConsensusLog)`` digest items;
:func:`grandpa_logs` decodes them, :func:`grandpa_changes` keeps the two kinds that change the
set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from light_clients.errors import DecodeError, HeaderHashMismatch
from light_clients.hashing import blake2_256
from light_clients.substrate.scale import (
    ScaleReader,
    encode_compact,
    encode_length_prefixed,
    encode_u32,
    encode_u64,
    encode_vec,
)

__all__ = [
    "GRANDPA_ENGINE_ID",
    "DigestItem",
    "DigestKind",
    "ForcedChange",
    "GrandpaLog",
    "OnDisabled",
    "Pause",
    "Resume",
    "ScheduledChange",
    "SubstrateHeader",
    "decode_grandpa_log",
    "decode_header",
    "encode_digest_item",
    "encode_grandpa_log",
    "encode_header",
    "grandpa_changes",
    "grandpa_logs",
    "header_hash",
    "read_header",
    "verify_header_hash",
]

GRANDPA_ENGINE_ID = b"FRNK"

HASH_LEN = 32
ENGINE_ID_LEN = 4
ED25519_PUBLIC_LEN = 32
# parent hash, 1-byte compact number, two roots, 1-byte empty digest vector.
MIN_HEADER_LEN = 3 * HASH_LEN + 2
# One (ed25519 public key, u64 weight) entry of an authority list.
_AUTHORITY_ENTRY_LEN = ED25519_PUBLIC_LEN + 8


class DigestKind(IntEnum):
    """The SCALE variant index of ``sp_runtime::DigestItem``.

    Indices 1, 2, 3 and 7 (removed ``ChangesTrieRoot``/``ChangesTrieSignal`` and unused ones)
    are not accepted: no current chain emits them and a header carrying one is rejected.
    """

    OTHER = 0
    CONSENSUS = 4
    SEAL = 5
    PRE_RUNTIME = 6
    RUNTIME_ENVIRONMENT_UPDATED = 8


@dataclass(frozen=True)
class DigestItem:
    """One header digest item: its kind, the 4-byte engine id (for engine items) and payload."""

    kind: DigestKind
    engine: bytes | None
    data: bytes


@dataclass(frozen=True)
class SubstrateHeader:
    """A decoded header; ``hash`` is blake2-256 of ``raw``, the exact bytes decoded."""

    hash: bytes
    parent_hash: bytes
    number: int
    state_root: bytes
    extrinsics_root: bytes
    digest: tuple[DigestItem, ...] = field(repr=False)
    raw: bytes = field(repr=False)


@dataclass(frozen=True)
class ScheduledChange:
    """GRANDPA ``ScheduledChange``: the next authorities, enacted ``delay`` blocks later."""

    next_authorities: tuple[tuple[bytes, int], ...]
    delay: int


@dataclass(frozen=True)
class ForcedChange:
    """GRANDPA ``ForcedChange(median, ScheduledChange)``: a change that needs no finality.

    ``median`` is the median last-finalized block the voters reported; the change takes effect
    once the signalling block plus ``delay`` is *imported*, not finalized.
    """

    median: int
    change: ScheduledChange

    @property
    def next_authorities(self) -> tuple[tuple[bytes, int], ...]:
        """The authorities of the forced set."""
        return self.change.next_authorities

    @property
    def delay(self) -> int:
        """Blocks after the signalling block at which the forced set takes over."""
        return self.change.delay


@dataclass(frozen=True)
class OnDisabled:
    """GRANDPA ``OnDisabled(authority_index)``: an authority was disabled (informational)."""

    authority_index: int


@dataclass(frozen=True)
class Pause:
    """GRANDPA ``Pause(delay)``: voting pauses ``delay`` blocks after this one."""

    delay: int


@dataclass(frozen=True)
class Resume:
    """GRANDPA ``Resume(delay)``: voting resumes ``delay`` blocks after this one."""

    delay: int


GrandpaLog = ScheduledChange | ForcedChange | OnDisabled | Pause | Resume


_DIGEST_KINDS = {kind.value: kind for kind in DigestKind}


def _read_digest_item(reader: ScaleReader) -> DigestItem:
    tag = reader.u8()
    kind = _DIGEST_KINDS.get(tag)
    if kind is None:
        raise DecodeError(f"unknown header digest item tag {tag}")
    if kind is DigestKind.RUNTIME_ENVIRONMENT_UPDATED:
        return DigestItem(kind, None, b"")
    if kind is DigestKind.OTHER:
        return DigestItem(kind, None, reader.length_prefixed())
    engine = reader.fixed(ENGINE_ID_LEN, "digest engine id")
    return DigestItem(kind, engine, reader.length_prefixed())


def read_header(reader: ScaleReader) -> SubstrateHeader:
    """Read one header from ``reader`` (e.g. inside a justification) and hash its bytes."""
    start = reader.offset
    parent_hash = reader.fixed(HASH_LEN, "parent hash")
    number = reader.compact_u32()
    state_root = reader.fixed(HASH_LEN, "state root")
    extrinsics_root = reader.fixed(HASH_LEN, "extrinsics root")
    # The smallest item is RuntimeEnvironmentUpdated: one tag byte.
    digest = reader.vec(_read_digest_item, min_item_size=1)
    raw = reader.data[start : reader.offset]
    return SubstrateHeader(
        hash=blake2_256(raw),
        parent_hash=parent_hash,
        number=number,
        state_root=state_root,
        extrinsics_root=extrinsics_root,
        digest=digest,
        raw=raw,
    )


def decode_header(data: bytes) -> SubstrateHeader:
    """Decode a SCALE header; trailing bytes, unknown digest tags or bad encodings raise."""
    reader = ScaleReader(data)
    header = read_header(reader)
    reader.finish()
    return header


def header_hash(data: bytes) -> bytes:
    """Return the block hash of SCALE header bytes: blake2-256, no decoding."""
    return blake2_256(bytes(data))


def verify_header_hash(data: bytes, expected_hash: bytes) -> SubstrateHeader:
    """Decode a header and check that it is the block ``expected_hash``.

    The hash is compared before decoding, so bytes that are not the claimed block are turned
    away without being parsed.
    """
    if not isinstance(expected_hash, bytes) or len(expected_hash) != HASH_LEN:
        raise DecodeError("expected header hash must be 32 bytes")
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"header must be bytes, got {type(data).__name__}")
    actual = header_hash(data)
    if actual != expected_hash:
        raise HeaderHashMismatch(
            f"header hashes to 0x{actual.hex()}, expected 0x{expected_hash.hex()}"
        )
    return decode_header(bytes(data))


def encode_digest_item(item: DigestItem) -> bytes:
    """Encode one digest item (the inverse of the decoder's digest reader)."""
    tag = bytes((int(item.kind),))
    if item.kind is DigestKind.RUNTIME_ENVIRONMENT_UPDATED:
        return tag
    if item.kind is DigestKind.OTHER:
        return tag + encode_length_prefixed(item.data)
    if item.engine is None or len(item.engine) != ENGINE_ID_LEN:
        raise ValueError(f"{item.kind.name} digest item needs a 4-byte engine id")
    return tag + item.engine + encode_length_prefixed(item.data)


def encode_header(
    parent_hash: bytes,
    number: int,
    state_root: bytes,
    extrinsics_root: bytes,
    digest: tuple[DigestItem, ...] = (),
) -> bytes:
    """Encode a header from its fields (for tests and tools; the chain's bytes are canonical)."""
    for name, value in (
        ("parent_hash", parent_hash),
        ("state_root", state_root),
        ("extrinsics_root", extrinsics_root),
    ):
        if len(value) != HASH_LEN:
            raise ValueError(f"{name} must be 32 bytes")
    # Block numbers are u32 on every chain we follow.
    encode_u32(number)
    return (
        parent_hash
        + encode_compact(number)
        + state_root
        + extrinsics_root
        + encode_vec(encode_digest_item(item) for item in digest)
    )


def _read_authority(reader: ScaleReader) -> tuple[bytes, int]:
    return reader.fixed(ED25519_PUBLIC_LEN, "authority id"), reader.u64()


def _read_scheduled_change(reader: ScaleReader) -> ScheduledChange:
    authorities = reader.vec(_read_authority, min_item_size=_AUTHORITY_ENTRY_LEN)
    return ScheduledChange(next_authorities=authorities, delay=reader.u32())


def decode_grandpa_log(data: bytes) -> GrandpaLog:
    """Decode the payload of a ``Consensus(b"FRNK", …)`` item (a GRANDPA ``ConsensusLog``).

    Unknown variants and trailing bytes raise :class:`DecodeError`: the header is
    authenticated by its hash, so a GRANDPA log we cannot read means something we do not
    understand happened to the authority set, and silently skipping it would be unsafe.
    """
    reader = ScaleReader(data)
    variant = reader.u8()
    log: GrandpaLog
    if variant == 1:
        log = _read_scheduled_change(reader)
    elif variant == 2:
        median = reader.u32()
        log = ForcedChange(median=median, change=_read_scheduled_change(reader))
    elif variant == 3:
        log = OnDisabled(authority_index=reader.u64())
    elif variant == 4:
        log = Pause(delay=reader.u32())
    elif variant == 5:
        log = Resume(delay=reader.u32())
    else:
        raise DecodeError(f"unknown GRANDPA consensus log variant {variant}")
    reader.finish()
    return log


def _encode_scheduled_change(change: ScheduledChange) -> bytes:
    return encode_vec(key + encode_u64(weight) for key, weight in change.next_authorities) + (
        encode_u32(change.delay)
    )


def encode_grandpa_log(log: GrandpaLog) -> bytes:
    """Encode a GRANDPA ``ConsensusLog`` (the payload of a ``FRNK`` consensus digest item)."""
    if isinstance(log, ScheduledChange):
        return b"\x01" + _encode_scheduled_change(log)
    if isinstance(log, ForcedChange):
        return b"\x02" + encode_u32(log.median) + _encode_scheduled_change(log.change)
    if isinstance(log, OnDisabled):
        return b"\x03" + encode_u64(log.authority_index)
    if isinstance(log, Pause):
        return b"\x04" + encode_u32(log.delay)
    return b"\x05" + encode_u32(log.delay)


def grandpa_logs(header: SubstrateHeader) -> tuple[GrandpaLog, ...]:
    """Every GRANDPA consensus log of ``header``, in digest order."""
    return tuple(
        decode_grandpa_log(item.data)
        for item in header.digest
        if item.kind is DigestKind.CONSENSUS and item.engine == GRANDPA_ENGINE_ID
    )


def grandpa_changes(header: SubstrateHeader) -> tuple[ScheduledChange | ForcedChange, ...]:
    """The GRANDPA authority-set changes (scheduled or forced) signalled by ``header``."""
    return tuple(
        log for log in grandpa_logs(header) if isinstance(log, ScheduledChange | ForcedChange)
    )
