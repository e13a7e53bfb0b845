"""Typed light-client objects, parsed strictly from the beacon API's JSON, and their roots.

The JSON is what ``/eth/v1/beacon/light_client/{bootstrap,updates,finality_update,
optimistic_update}`` serve (the ``data`` object, or the whole ``{"version", "data"}`` answer):
integers are decimal strings without leading zeros or signs, bytes are ``0x`` hex of the exact
size. Every field is checked and no unknown field is accepted, so two texts that parse
alike are the same object. Anything else raises :class:`MalformedBeaconData`.

Sync-committee public keys are decompressed (and subgroup-checked) once, when the committee is
parsed: a committee signs for a whole period (8192 slots), so this cost is not per update.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from light_clients.beacon.bls import PublicKey, Signature, decode_pubkey, decode_signature
from light_clients.beacon.ssz import (
    merkleize,
    mix_in_length,
    pack_bytes,
    uint64_root,
    uint256_root,
)
from light_clients.errors import DecodeError
from light_clients.hexstr import parse_data

__all__ = [
    "EXECUTION_BRANCH_DEPTH",
    "FINALITY_BRANCH_DEPTH",
    "SYNC_COMMITTEE_BRANCH_DEPTH",
    "SYNC_COMMITTEE_SIZE",
    "BeaconBlockHeader",
    "ExecutionPayloadHeader",
    "LightClientBootstrap",
    "LightClientFinalityUpdate",
    "LightClientHeader",
    "LightClientOptimisticUpdate",
    "LightClientUpdate",
    "MalformedBeaconData",
    "SyncAggregate",
    "SyncCommittee",
    "parse_bootstrap",
    "parse_finality_update",
    "parse_optimistic_update",
    "parse_update",
    "sync_committee_root",
]

SYNC_COMMITTEE_SIZE = 512
"""Mainnet preset (SYNC_COMMITTEE_SIZE); the bitvector is 64 bytes."""

# Capella generalized indices: depth = floorlog2(gindex), as in expected.json.
SYNC_COMMITTEE_BRANCH_DEPTH = 5  # current 54, next 55
FINALITY_BRANCH_DEPTH = 6  # finalized_checkpoint.root 105
EXECUTION_BRANCH_DEPTH = 4  # execution_payload in the body 25

_U64_MAX = 2**64 - 1
_U256_MAX = 2**256 - 1
_DECIMAL_RE = re.compile(r"0|[1-9][0-9]{0,77}")
_PUBKEY_SIZE = 48
_SIGNATURE_SIZE = 96
_PUBKEY_PADDING = bytes(64 - _PUBKEY_SIZE)
_sha256 = hashlib.sha256
_MAX_EXTRA_DATA = 32


class MalformedBeaconData(DecodeError):
    """Beacon API JSON that is not exactly a light-client object of the expected shape."""


# --------------------------------------------------------------------------- field parsers


def _object(value: object, what: str, keys: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise MalformedBeaconData(f"{what} must be an object, got {type(value).__name__}")
    if set(value) != set(keys):
        missing = sorted(set(keys) - set(value))
        extra = sorted(str(key) for key in set(value) - set(keys))
        raise MalformedBeaconData(f"{what} fields: missing {missing}, unexpected {extra}")
    return value


def _uint(value: object, what: str, maximum: int = _U64_MAX) -> int:
    if not isinstance(value, str) or _DECIMAL_RE.fullmatch(value) is None:
        raise MalformedBeaconData(f"{what} must be a decimal string, got {value!r:.80}")
    number = int(value)
    if number > maximum:
        raise MalformedBeaconData(f"{what} exceeds {maximum.bit_length()} bits")
    return number


def _bytes(value: object, what: str, size: int | None) -> bytes:
    try:
        return parse_data(value, what, size)
    except DecodeError as error:
        raise MalformedBeaconData(str(error)) from None


def _branch(value: object, what: str, depth: int) -> tuple[bytes, ...]:
    if not isinstance(value, list) or len(value) != depth:
        raise MalformedBeaconData(f"{what} must be a list of {depth} roots")
    return tuple(_bytes(item, f"{what}[{i}]", 32) for i, item in enumerate(value))


# --------------------------------------------------------------------------- containers


@dataclass(frozen=True)
class BeaconBlockHeader:
    """phase0 ``BeaconBlockHeader``; its ``hash_tree_root`` is the block root."""

    slot: int
    proposer_index: int
    parent_root: bytes
    state_root: bytes
    body_root: bytes

    def hash_tree_root(self) -> bytes:
        """The block root."""
        return merkleize(
            [
                uint64_root(self.slot),
                uint64_root(self.proposer_index),
                self.parent_root,
                self.state_root,
                self.body_root,
            ],
            8,
        )


@dataclass(frozen=True)
class ExecutionPayloadHeader:
    """Capella ``ExecutionPayloadHeader`` (15 fields, with ``withdrawals_root``)."""

    parent_hash: bytes
    fee_recipient: bytes
    state_root: bytes
    receipts_root: bytes
    logs_bloom: bytes
    prev_randao: bytes
    block_number: int
    gas_limit: int
    gas_used: int
    timestamp: int
    extra_data: bytes
    base_fee_per_gas: int
    block_hash: bytes
    transactions_root: bytes
    withdrawals_root: bytes

    def hash_tree_root(self) -> bytes:
        """SSZ root: ``logs_bloom`` is ByteVector[256], ``extra_data`` ByteList[32]."""
        return merkleize(
            [
                self.parent_hash,
                self.fee_recipient + bytes(12),
                self.state_root,
                self.receipts_root,
                merkleize(pack_bytes(self.logs_bloom), 8),
                self.prev_randao,
                uint64_root(self.block_number),
                uint64_root(self.gas_limit),
                uint64_root(self.gas_used),
                uint64_root(self.timestamp),
                mix_in_length(merkleize(pack_bytes(self.extra_data), 1), len(self.extra_data)),
                uint256_root(self.base_fee_per_gas),
                self.block_hash,
                self.transactions_root,
                self.withdrawals_root,
            ],
            16,
        )


@dataclass(frozen=True)
class LightClientHeader:
    """Capella ``LightClientHeader``: the beacon header, its execution payload header, and
    the branch from that payload header to the beacon block's ``body_root``."""

    beacon: BeaconBlockHeader
    execution: ExecutionPayloadHeader
    execution_branch: tuple[bytes, ...]


@dataclass(frozen=True)
class SyncCommittee:
    """512 BLS public keys and their aggregate; ``points`` are the keys decompressed (and
    subgroup-checked) once, at construction, so they cannot disagree with ``pubkeys``."""

    pubkeys: tuple[bytes, ...]
    aggregate_pubkey: bytes
    points: tuple[PublicKey, ...] = field(init=False, repr=False, compare=False)
    root: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Decompress every key (raise :class:`MalformedBeaconData` for a bad one) and compute
        the root: both once per committee, i.e. once per period, never per update."""
        if len(self.pubkeys) != SYNC_COMMITTEE_SIZE:
            raise MalformedBeaconData(
                f"pubkeys has {len(self.pubkeys)} keys, expected {SYNC_COMMITTEE_SIZE}"
            )
        points = tuple(_g1(key, f"pubkeys[{i}]") for i, key in enumerate(self.pubkeys))
        object.__setattr__(self, "points", points)
        object.__setattr__(self, "root", sync_committee_root(self.pubkeys, self.aggregate_pubkey))

    def hash_tree_root(self) -> bytes:
        """SSZ root: Vector[BLSPubkey, 512] and the aggregate key (each key is two chunks),
        computed at construction."""
        return self.root


def sync_committee_root(pubkeys: tuple[bytes, ...], aggregate_pubkey: bytes) -> bytes:
    """``hash_tree_root(SyncCommittee)``: Vector[BLSPubkey, 512] and the aggregate key."""
    keys = merkleize([_pubkey_root(key) for key in pubkeys], SYNC_COMMITTEE_SIZE)
    return merkleize([keys, _pubkey_root(aggregate_pubkey)], 2)


def _pubkey_root(key: bytes) -> bytes:
    """A BLSPubkey (ByteVector[48]) is two chunks: ``sha256(key ‖ 16 zero bytes)``."""
    return _sha256(key + _PUBKEY_PADDING).digest()


@dataclass(frozen=True)
class SyncAggregate:
    """The participation bitvector (512 bits) and the aggregate signature of the participants."""

    bits: tuple[bool, ...]
    signature: Signature = field(compare=False)
    signature_bytes: bytes

    def __post_init__(self) -> None:
        """A bitvector of exactly one bit per committee member."""
        if len(self.bits) != SYNC_COMMITTEE_SIZE:
            raise MalformedBeaconData(
                f"sync_committee_bits has {len(self.bits)} bits, expected {SYNC_COMMITTEE_SIZE}"
            )

    @property
    def participants(self) -> int:
        """How many committee members signed."""
        return sum(self.bits)


@dataclass(frozen=True)
class LightClientBootstrap:
    """``LightClientBootstrap``: a header, its state's current sync committee and the branch."""

    header: LightClientHeader
    current_sync_committee: SyncCommittee
    current_sync_committee_branch: tuple[bytes, ...]


@dataclass(frozen=True)
class LightClientUpdate:
    """``LightClientUpdate`` (from ``/updates``): finality and the next sync committee."""

    attested_header: LightClientHeader
    next_sync_committee: SyncCommittee
    next_sync_committee_branch: tuple[bytes, ...]
    finalized_header: LightClientHeader
    finality_branch: tuple[bytes, ...]
    sync_aggregate: SyncAggregate
    signature_slot: int


@dataclass(frozen=True)
class LightClientFinalityUpdate:
    """``LightClientFinalityUpdate``: an update without the next sync committee."""

    attested_header: LightClientHeader
    finalized_header: LightClientHeader
    finality_branch: tuple[bytes, ...]
    sync_aggregate: SyncAggregate
    signature_slot: int


@dataclass(frozen=True)
class LightClientOptimisticUpdate:
    """``LightClientOptimisticUpdate``: a signed attested header, nothing finalized."""

    attested_header: LightClientHeader
    sync_aggregate: SyncAggregate
    signature_slot: int


# --------------------------------------------------------------------------- parsers

_BEACON_KEYS = ("slot", "proposer_index", "parent_root", "state_root", "body_root")
_EXECUTION_KEYS = (
    "parent_hash",
    "fee_recipient",
    "state_root",
    "receipts_root",
    "logs_bloom",
    "prev_randao",
    "block_number",
    "gas_limit",
    "gas_used",
    "timestamp",
    "extra_data",
    "base_fee_per_gas",
    "block_hash",
    "transactions_root",
    "withdrawals_root",
)


def _beacon_header(value: object, what: str) -> BeaconBlockHeader:
    obj = _object(value, what, _BEACON_KEYS)
    return BeaconBlockHeader(
        slot=_uint(obj["slot"], f"{what}.slot"),
        proposer_index=_uint(obj["proposer_index"], f"{what}.proposer_index"),
        parent_root=_bytes(obj["parent_root"], f"{what}.parent_root", 32),
        state_root=_bytes(obj["state_root"], f"{what}.state_root", 32),
        body_root=_bytes(obj["body_root"], f"{what}.body_root", 32),
    )


def _execution_header(value: object, what: str) -> ExecutionPayloadHeader:
    obj = _object(value, what, _EXECUTION_KEYS)
    extra_data = _bytes(obj["extra_data"], f"{what}.extra_data", None)
    if len(extra_data) > _MAX_EXTRA_DATA:
        raise MalformedBeaconData(f"{what}.extra_data is longer than {_MAX_EXTRA_DATA} bytes")
    return ExecutionPayloadHeader(
        parent_hash=_bytes(obj["parent_hash"], f"{what}.parent_hash", 32),
        fee_recipient=_bytes(obj["fee_recipient"], f"{what}.fee_recipient", 20),
        state_root=_bytes(obj["state_root"], f"{what}.state_root", 32),
        receipts_root=_bytes(obj["receipts_root"], f"{what}.receipts_root", 32),
        logs_bloom=_bytes(obj["logs_bloom"], f"{what}.logs_bloom", 256),
        prev_randao=_bytes(obj["prev_randao"], f"{what}.prev_randao", 32),
        block_number=_uint(obj["block_number"], f"{what}.block_number"),
        gas_limit=_uint(obj["gas_limit"], f"{what}.gas_limit"),
        gas_used=_uint(obj["gas_used"], f"{what}.gas_used"),
        timestamp=_uint(obj["timestamp"], f"{what}.timestamp"),
        extra_data=extra_data,
        base_fee_per_gas=_uint(obj["base_fee_per_gas"], f"{what}.base_fee_per_gas", _U256_MAX),
        block_hash=_bytes(obj["block_hash"], f"{what}.block_hash", 32),
        transactions_root=_bytes(obj["transactions_root"], f"{what}.transactions_root", 32),
        withdrawals_root=_bytes(obj["withdrawals_root"], f"{what}.withdrawals_root", 32),
    )


def _light_client_header(value: object, what: str) -> LightClientHeader:
    obj = _object(value, what, ("beacon", "execution", "execution_branch"))
    return LightClientHeader(
        beacon=_beacon_header(obj["beacon"], f"{what}.beacon"),
        execution=_execution_header(obj["execution"], f"{what}.execution"),
        execution_branch=_branch(
            obj["execution_branch"], f"{what}.execution_branch", EXECUTION_BRANCH_DEPTH
        ),
    )


def _sync_committee(value: object, what: str) -> SyncCommittee:
    obj = _object(value, what, ("pubkeys", "aggregate_pubkey"))
    raw = obj["pubkeys"]
    if not isinstance(raw, list):
        raise MalformedBeaconData(f"{what}.pubkeys must be a list of {SYNC_COMMITTEE_SIZE} keys")
    pubkeys = tuple(_bytes(key, f"{what}.pubkeys[{i}]", _PUBKEY_SIZE) for i, key in enumerate(raw))
    aggregate = _bytes(obj["aggregate_pubkey"], f"{what}.aggregate_pubkey", _PUBKEY_SIZE)
    try:
        return SyncCommittee(pubkeys=pubkeys, aggregate_pubkey=aggregate)
    except MalformedBeaconData as error:
        raise MalformedBeaconData(f"{what}.{error}") from None


def _g1(key: bytes, what: str) -> PublicKey:
    point = decode_pubkey(key)
    if point is None:
        raise MalformedBeaconData(f"{what} is not a BLS12-381 public key (or is infinity)")
    return point


def _sync_aggregate(value: object, what: str) -> SyncAggregate:
    obj = _object(value, what, ("sync_committee_bits", "sync_committee_signature"))
    packed = _bytes(obj["sync_committee_bits"], f"{what}.sync_committee_bits", 64)
    signature = _bytes(
        obj["sync_committee_signature"], f"{what}.sync_committee_signature", _SIGNATURE_SIZE
    )
    point = decode_signature(signature)
    if point is None:
        raise MalformedBeaconData(
            f"{what}.sync_committee_signature is not a BLS12-381 G2 signature"
        )
    bits = tuple(bool(packed[i // 8] >> (i % 8) & 1) for i in range(SYNC_COMMITTEE_SIZE))
    return SyncAggregate(bits=bits, signature=point, signature_bytes=signature)


def _data(value: object, what: str) -> object:
    """Accept the API's whole answer ``{"version", "data"}`` (Capella only) or ``data`` alone."""
    if isinstance(value, dict) and "version" in value:
        obj = _object(value, what, ("version", "data"))
        if obj["version"] != "capella":
            raise MalformedBeaconData(f"{what} is for fork {obj['version']!r:.40}, not capella")
        return obj["data"]
    return value


def parse_bootstrap(value: object) -> LightClientBootstrap:
    """Parse a ``LightClientBootstrap``."""
    what = "bootstrap"
    obj = _object(
        _data(value, what),
        what,
        ("header", "current_sync_committee", "current_sync_committee_branch"),
    )
    return LightClientBootstrap(
        header=_light_client_header(obj["header"], f"{what}.header"),
        current_sync_committee=_sync_committee(
            obj["current_sync_committee"], f"{what}.current_sync_committee"
        ),
        current_sync_committee_branch=_branch(
            obj["current_sync_committee_branch"],
            f"{what}.current_sync_committee_branch",
            SYNC_COMMITTEE_BRANCH_DEPTH,
        ),
    )


_UPDATE_KEYS = (
    "attested_header",
    "next_sync_committee",
    "next_sync_committee_branch",
    "finalized_header",
    "finality_branch",
    "sync_aggregate",
    "signature_slot",
)


def parse_update(value: object) -> LightClientUpdate:
    """Parse a ``LightClientUpdate`` (one element of the ``/updates`` answer)."""
    what = "update"
    obj = _object(_data(value, what), what, _UPDATE_KEYS)
    return LightClientUpdate(
        attested_header=_light_client_header(obj["attested_header"], f"{what}.attested_header"),
        next_sync_committee=_sync_committee(
            obj["next_sync_committee"], f"{what}.next_sync_committee"
        ),
        next_sync_committee_branch=_branch(
            obj["next_sync_committee_branch"],
            f"{what}.next_sync_committee_branch",
            SYNC_COMMITTEE_BRANCH_DEPTH,
        ),
        finalized_header=_light_client_header(obj["finalized_header"], f"{what}.finalized_header"),
        finality_branch=_branch(
            obj["finality_branch"], f"{what}.finality_branch", FINALITY_BRANCH_DEPTH
        ),
        sync_aggregate=_sync_aggregate(obj["sync_aggregate"], f"{what}.sync_aggregate"),
        signature_slot=_uint(obj["signature_slot"], f"{what}.signature_slot"),
    )


def parse_finality_update(value: object) -> LightClientFinalityUpdate:
    """Parse a ``LightClientFinalityUpdate``."""
    what = "finality update"
    obj = _object(
        _data(value, what),
        what,
        (
            "attested_header",
            "finalized_header",
            "finality_branch",
            "sync_aggregate",
            "signature_slot",
        ),
    )
    return LightClientFinalityUpdate(
        attested_header=_light_client_header(obj["attested_header"], f"{what}.attested_header"),
        finalized_header=_light_client_header(obj["finalized_header"], f"{what}.finalized_header"),
        finality_branch=_branch(
            obj["finality_branch"], f"{what}.finality_branch", FINALITY_BRANCH_DEPTH
        ),
        sync_aggregate=_sync_aggregate(obj["sync_aggregate"], f"{what}.sync_aggregate"),
        signature_slot=_uint(obj["signature_slot"], f"{what}.signature_slot"),
    )


def parse_optimistic_update(value: object) -> LightClientOptimisticUpdate:
    """Parse a ``LightClientOptimisticUpdate``."""
    what = "optimistic update"
    obj = _object(_data(value, what), what, ("attested_header", "sync_aggregate", "signature_slot"))
    return LightClientOptimisticUpdate(
        attested_header=_light_client_header(obj["attested_header"], f"{what}.attested_header"),
        sync_aggregate=_sync_aggregate(obj["sync_aggregate"], f"{what}.sync_aggregate"),
        signature_slot=_uint(obj["signature_slot"], f"{what}.signature_slot"),
    )
