"""Typed light-client objects, parsed strictly from the beacon API's JSON, and their roots.

The JSON is what ``/eth/v1/beacon/light_client/{bootstrap,updates,finality_update,
optimistic_update}`` serve (the ``data`` object, or the whole ``{"version", "data"}`` answer):
integers are decimal strings without leading zeros or signs, bytes are ``0x`` hex of the exact
size. Every field is checked and no unknown field is accepted, so two texts that parse
alike are the same object. Anything else raises :class:`MalformedBeaconData`.

The shape depends on the chain (:class:`~light_clients.beacon.config.BeaconConfig`, mainnet
unless given): the preset fixes the committee size, and the fork of a header's own slot fixes
its execution payload header (Deneb adds ``blob_gas_used`` and ``excess_blob_gas``; a Capella
header must not have them) and, for the attested header of an update (or a bootstrap's
header), the depth of the branches into its state (Electra: 7 and 6 instead of 6 and 5). A
header in a fork this client does not verify raises
:class:`~light_clients.beacon.config.UnsupportedFork` while parsing. ``*_to_json`` write the
same encoding back (the persisted store uses them).

Sync-committee public keys are decompressed (and subgroup-checked) once, when the committee is
parsed: a committee signs for a whole period (8192 slots), so this cost is not per update.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from light_clients.beacon.bls import PublicKey, Signature, decode_pubkey, decode_signature
from light_clients.beacon.config import (
    MAINNET,
    PRESETS,
    BeaconConfig,
    ForkLayout,
    UnsupportedFork,
)
from light_clients.beacon.ssz import (
    merkleize,
    mix_in_length,
    pack_bytes,
    uint64_root,
    uint256_root,
)
from light_clients.errors import DecodeError
from light_clients.hexstr import parse_data, to_hex

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
    "UnsupportedForkData",
    "header_to_json",
    "parse_bootstrap",
    "parse_finality_update",
    "parse_header",
    "parse_optimistic_update",
    "parse_sync_committee",
    "parse_update",
    "sync_committee_root",
    "sync_committee_to_json",
]

SYNC_COMMITTEE_SIZE = 512
"""Mainnet preset (SYNC_COMMITTEE_SIZE); the bitvector is 64 bytes. The minimal preset has 32:
use ``config.preset.sync_committee_size``."""

# Capella/Deneb generalized indices: depth = floorlog2(gindex), as in expected.json. Electra's
# are deeper; config.ForkLayout has every fork's.
SYNC_COMMITTEE_BRANCH_DEPTH = 5  # current 54, next 55
FINALITY_BRANCH_DEPTH = 6  # finalized_checkpoint.root 105
EXECUTION_BRANCH_DEPTH = 4  # execution_payload in the body 25
_COMMITTEE_SIZES = frozenset(preset.sync_committee_size for preset in PRESETS.values())
_SIZES_TEXT = " or ".join(str(size) for size in sorted(_COMMITTEE_SIZES))

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


class UnsupportedForkData(MalformedBeaconData, UnsupportedFork):
    """A header, met while parsing, in a fork whose shape this client does not know (before
    Capella, or Fulu). Both kinds of error at once, so that whoever catches parse failures
    (:class:`MalformedBeaconData`) and whoever catches fork failures (:class:`UnsupportedFork`)
    each catch it."""


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
    """Capella ``ExecutionPayloadHeader`` (15 fields, with ``withdrawals_root``) or, with the
    two blob-gas fields set, Deneb's (17 fields; Electra did not change it)."""

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
    blob_gas_used: int | None = None
    excess_blob_gas: int | None = None

    def __post_init__(self) -> None:
        """Both blob-gas fields (Deneb) or neither (Capella): there is no third shape."""
        if (self.blob_gas_used is None) != (self.excess_blob_gas is None):
            raise MalformedBeaconData("execution header has one blob-gas field without the other")

    def hash_tree_root(self) -> bytes:
        """SSZ root: ``logs_bloom`` is ByteVector[256], ``extra_data`` ByteList[32]; 15 fields
        pad to 16 leaves, Deneb's 17 to 32, so the shapes never share a root."""
        deneb = (
            [uint64_root(self.blob_gas_used), uint64_root(self.excess_blob_gas)]
            if self.blob_gas_used is not None and self.excess_blob_gas is not None
            else []
        )
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
                *deneb,
            ],
            32 if deneb else 16,
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
    """512 (mainnet) or 32 (minimal) BLS public keys and their aggregate; ``points`` are the
    keys decompressed (and subgroup-checked) once, at construction, so they cannot disagree
    with ``pubkeys``. The parser checks the size against the chain's preset."""

    pubkeys: tuple[bytes, ...]
    aggregate_pubkey: bytes
    points: tuple[PublicKey, ...] = field(init=False, repr=False, compare=False)
    root: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Decompress every key (raise :class:`MalformedBeaconData` for a bad one) and compute
        the root: once per committee, i.e. once per period, never per update (each update
        carries the next committee again: see :func:`_committee_points_and_root`)."""
        if len(self.pubkeys) not in _COMMITTEE_SIZES:
            raise MalformedBeaconData(
                f"pubkeys has {len(self.pubkeys)} keys, expected {_SIZES_TEXT} (a preset's)"
            )
        points, root = _committee_points_and_root(
            tuple(bytes(key) for key in self.pubkeys), bytes(self.aggregate_pubkey)
        )
        object.__setattr__(self, "points", points)
        object.__setattr__(self, "root", root)

    def hash_tree_root(self) -> bytes:
        """SSZ root: Vector[BLSPubkey, size] and the aggregate key (each key is two chunks),
        computed at construction."""
        return self.root


@functools.lru_cache(maxsize=8)
def _committee_points_and_root(
    pubkeys: tuple[bytes, ...], aggregate_pubkey: bytes
) -> tuple[tuple[PublicKey, ...], bytes]:
    """The keys decompressed and subgroup-checked, and the committee's root, remembered for the
    last few committees: every update of a period carries the same next committee, and
    decompressing 512 keys is ~36 ms of CPU (computing the root ~1 ms), so a follower polling
    updates, or a file of many updates, paid that each time. The key is the keys themselves:
    other bytes are never given another committee's points. A bad key raises each time (an
    exception is not remembered)."""
    points = tuple(_g1(key, f"pubkeys[{i}]") for i, key in enumerate(pubkeys))
    return points, sync_committee_root(pubkeys, aggregate_pubkey)


def sync_committee_root(pubkeys: tuple[bytes, ...], aggregate_pubkey: bytes) -> bytes:
    """``hash_tree_root(SyncCommittee)``: Vector[BLSPubkey, len(pubkeys)] and the aggregate
    key; ``len(pubkeys)`` is the preset's committee size, a power of two."""
    keys = merkleize([_pubkey_root(key) for key in pubkeys], len(pubkeys))
    return merkleize([keys, _pubkey_root(aggregate_pubkey)], 2)


def _pubkey_root(key: bytes) -> bytes:
    """A BLSPubkey (ByteVector[48]) is two chunks: ``sha256(key ‖ 16 zero bytes)``."""
    return _sha256(key + _PUBKEY_PADDING).digest()


@dataclass(frozen=True)
class SyncAggregate:
    """The participation bitvector (one bit per committee member) and the aggregate signature
    of the participants."""

    bits: tuple[bool, ...]
    signature: Signature = field(compare=False)
    signature_bytes: bytes

    def __post_init__(self) -> None:
        """A bitvector of exactly one bit per committee member."""
        if len(self.bits) not in _COMMITTEE_SIZES:
            raise MalformedBeaconData(
                f"sync_committee_bits has {len(self.bits)} bits, expected {_SIZES_TEXT}"
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
    """``LightClientUpdate`` (from ``/updates``): finality and the next sync committee.

    Either part may be absent, as in the spec: the server sends the empty (all-zero)
    committee or header with an all-zero branch (``is_sync_committee_update`` /
    ``is_finality_update`` are false), parsed here as None. A server with no finality yet
    (a young chain) serves such updates."""

    attested_header: LightClientHeader
    next_sync_committee: SyncCommittee | None
    next_sync_committee_branch: tuple[bytes, ...]
    finalized_header: LightClientHeader | None
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
_DENEB_KEYS = ("blob_gas_used", "excess_blob_gas")


def _beacon_header(value: object, what: str) -> BeaconBlockHeader:
    obj = _object(value, what, _BEACON_KEYS)
    return BeaconBlockHeader(
        slot=_uint(obj["slot"], f"{what}.slot"),
        proposer_index=_uint(obj["proposer_index"], f"{what}.proposer_index"),
        parent_root=_bytes(obj["parent_root"], f"{what}.parent_root", 32),
        state_root=_bytes(obj["state_root"], f"{what}.state_root", 32),
        body_root=_bytes(obj["body_root"], f"{what}.body_root", 32),
    )


def _execution_header(value: object, what: str, layout: ForkLayout) -> ExecutionPayloadHeader:
    keys = _EXECUTION_KEYS + _DENEB_KEYS if layout.blob_gas else _EXECUTION_KEYS
    obj = _object(value, f"{what} ({layout.name})", keys)
    extra_data = _bytes(obj["extra_data"], f"{what}.extra_data", None)
    if len(extra_data) > _MAX_EXTRA_DATA:
        raise MalformedBeaconData(f"{what}.extra_data is longer than {_MAX_EXTRA_DATA} bytes")
    deneb = (
        {key: _uint(obj[key], f"{what}.{key}") for key in _DENEB_KEYS} if layout.blob_gas else {}
    )
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
        **deneb,
    )


def _light_client_header(
    value: object, what: str, config: BeaconConfig, container: ForkLayout | None = None
) -> tuple[LightClientHeader, ForkLayout]:
    """A header and the layout of the fork of its own slot.

    Its JSON has the shape of ``container``, the fork of the object that carries it (the
    attested header's, for an update's finalized header), or else of its own fork. The one
    difference that can arise is the spec's upgrade of an older header into a newer container
    (a Capella-era finalized header in a Deneb update, at the fork): the Deneb fields must then
    be zero, and the header is kept in its own (Capella) shape, whose root the execution branch
    proves (``get_lc_execution_root``).
    """
    obj = _object(value, what, ("beacon", "execution", "execution_branch"))
    beacon = _beacon_header(obj["beacon"], f"{what}.beacon")
    try:
        layout = config.layout_at_slot(beacon.slot, what)
    except UnsupportedFork as error:
        raise UnsupportedForkData(str(error)) from None
    shape = container or layout
    if layout.blob_gas and not shape.blob_gas:
        raise MalformedBeaconData(
            f"{what} slot {beacon.slot} is in {layout.name}, after the {shape.name} object "
            "that carries it"
        )
    execution = _execution_header(obj["execution"], f"{what}.execution", shape)
    if shape.blob_gas and not layout.blob_gas:
        if execution.blob_gas_used or execution.excess_blob_gas:
            raise MalformedBeaconData(
                f"{what} slot {beacon.slot} is in {layout.name}: its blob-gas fields must be 0"
            )
        execution = replace(execution, blob_gas_used=None, excess_blob_gas=None)
    header = LightClientHeader(
        beacon=beacon,
        execution=execution,
        execution_branch=_branch(
            obj["execution_branch"],
            f"{what}.execution_branch",
            layout.depth(layout.execution_payload_gindex),
        ),
    )
    return header, layout


def parse_header(value: object, config: BeaconConfig = MAINNET) -> LightClientHeader:
    """Parse a ``LightClientHeader`` (the shape of the fork of its slot)."""
    return _light_client_header(value, "header", config)[0]


def _sync_committee(value: object, what: str, config: BeaconConfig) -> SyncCommittee:
    size = config.preset.sync_committee_size
    obj = _object(value, what, ("pubkeys", "aggregate_pubkey"))
    raw = obj["pubkeys"]
    if not isinstance(raw, list) or len(raw) != size:
        raise MalformedBeaconData(
            f"{what}.pubkeys must be a list of {size} keys ({config.preset.name} preset)"
        )
    pubkeys = tuple(_bytes(key, f"{what}.pubkeys[{i}]", _PUBKEY_SIZE) for i, key in enumerate(raw))
    aggregate = _bytes(obj["aggregate_pubkey"], f"{what}.aggregate_pubkey", _PUBKEY_SIZE)
    try:
        return SyncCommittee(pubkeys=pubkeys, aggregate_pubkey=aggregate)
    except MalformedBeaconData as error:
        raise MalformedBeaconData(f"{what}.{error}") from None


def parse_sync_committee(value: object, config: BeaconConfig = MAINNET) -> SyncCommittee:
    """Parse a ``SyncCommittee`` of the preset's size."""
    return _sync_committee(value, "sync committee", config)


def _g1(key: bytes, what: str) -> PublicKey:
    point = decode_pubkey(key)
    if point is None:
        raise MalformedBeaconData(f"{what} is not a BLS12-381 public key (or is infinity)")
    return point


def _sync_aggregate(value: object, what: str, config: BeaconConfig) -> SyncAggregate:
    size = config.preset.sync_committee_size
    obj = _object(value, what, ("sync_committee_bits", "sync_committee_signature"))
    packed = _bytes(obj["sync_committee_bits"], f"{what}.sync_committee_bits", size // 8)
    signature = _bytes(
        obj["sync_committee_signature"], f"{what}.sync_committee_signature", _SIGNATURE_SIZE
    )
    point = decode_signature(signature)
    if point is None:
        raise MalformedBeaconData(
            f"{what}.sync_committee_signature is not a BLS12-381 G2 signature"
        )
    bits = tuple(bool(packed[i // 8] >> (i % 8) & 1) for i in range(size))
    return SyncAggregate(bits=bits, signature=point, signature_bytes=signature)


def _data(value: object, what: str) -> tuple[object, str | None]:
    """Accept the API's whole answer ``{"version", "data"}`` or ``data`` alone; returns the data
    and the version it claims (checked by the caller against the header's fork)."""
    if isinstance(value, dict) and "version" in value:
        obj = _object(value, what, ("version", "data"))
        version = obj["version"]
        if not isinstance(version, str):
            raise MalformedBeaconData(f"{what}.version must be a fork name, got {version!r:.40}")
        return obj["data"], version
    return value, None


def _check_version(version: str | None, layout: ForkLayout, what: str) -> None:
    """The answer's ``version`` must name the fork its (attested) header is in: the version
    is what a client would pick the container type by, so a mismatch means a confused or
    lying server."""
    if version is not None and version != layout.name:
        raise MalformedBeaconData(
            f"{what} is labelled fork {version!r:.40} but its header is in {layout.name}"
        )


def parse_bootstrap(value: object, config: BeaconConfig = MAINNET) -> LightClientBootstrap:
    """Parse a ``LightClientBootstrap`` (branch depth of its header's fork)."""
    what = "bootstrap"
    data, version = _data(value, what)
    obj = _object(data, what, ("header", "current_sync_committee", "current_sync_committee_branch"))
    header, layout = _light_client_header(obj["header"], f"{what}.header", config)
    _check_version(version, layout, what)
    return LightClientBootstrap(
        header=header,
        current_sync_committee=_sync_committee(
            obj["current_sync_committee"], f"{what}.current_sync_committee", config
        ),
        current_sync_committee_branch=_branch(
            obj["current_sync_committee_branch"],
            f"{what}.current_sync_committee_branch",
            layout.depth(layout.current_sync_committee_gindex),
        ),
    )


@dataclass(frozen=True)
class _UpdateParts:
    """The fields every update kind shares, parsed; ``layout`` is the attested header's."""

    obj: Mapping[str, Any]
    attested_header: LightClientHeader
    layout: ForkLayout
    sync_aggregate: SyncAggregate
    signature_slot: int


def _update_parts(
    value: object, what: str, keys: tuple[str, ...], config: BeaconConfig
) -> _UpdateParts:
    data, version = _data(value, what)
    obj = _object(data, what, keys)
    attested, layout = _light_client_header(
        obj["attested_header"], f"{what}.attested_header", config
    )
    _check_version(version, layout, what)
    return _UpdateParts(
        obj=obj,
        attested_header=attested,
        layout=layout,
        sync_aggregate=_sync_aggregate(obj["sync_aggregate"], f"{what}.sync_aggregate", config),
        signature_slot=_uint(obj["signature_slot"], f"{what}.signature_slot"),
    )


def _finality_branch(parts: _UpdateParts, what: str) -> tuple[bytes, ...]:
    """The finality branch: the depth of the attested header's fork, since the branch goes
    into the attested state."""
    return _branch(
        parts.obj["finality_branch"],
        f"{what}.finality_branch",
        parts.layout.depth(parts.layout.finalized_root_gindex),
    )


def _finalized_header(parts: _UpdateParts, what: str, config: BeaconConfig) -> LightClientHeader:
    """The finalized header, in the attested header's container."""
    return _light_client_header(
        parts.obj["finalized_header"], f"{what}.finalized_header", config, parts.layout
    )[0]


_UPDATE_KEYS = (
    "attested_header",
    "next_sync_committee",
    "next_sync_committee_branch",
    "finalized_header",
    "finality_branch",
    "sync_aggregate",
    "signature_slot",
)
_FINALITY_UPDATE_KEYS = (
    "attested_header",
    "finalized_header",
    "finality_branch",
    "sync_aggregate",
    "signature_slot",
)


def _zero_header_json(layout: ForkLayout) -> dict[str, Any]:
    """``LightClientHeader()`` of a fork, in the API's encoding: every field zero."""
    execution = dict.fromkeys(
        _EXECUTION_KEYS + _DENEB_KEYS if layout.blob_gas else _EXECUTION_KEYS, "0"
    )
    sizes = {"fee_recipient": 20, "logs_bloom": 256, "extra_data": 0}
    for key in ("parent_hash", "fee_recipient", "state_root", "receipts_root", "logs_bloom",
                "prev_randao", "extra_data", "block_hash", "transactions_root",
                "withdrawals_root"):  # fmt: skip
        execution[key] = to_hex(bytes(sizes.get(key, 32)))
    beacon = dict.fromkeys(_BEACON_KEYS, to_hex(bytes(32))) | {"slot": "0", "proposer_index": "0"}
    depth = layout.depth(layout.execution_payload_gindex)
    return {
        "beacon": beacon,
        "execution": execution,
        "execution_branch": [to_hex(bytes(32))] * depth,
    }


def _absent(branch: tuple[bytes, ...], value: object, empty: object, what: str) -> bool:
    """Whether an optional part of an update is absent: its branch all zero (the spec's
    ``is_sync_committee_update`` / ``is_finality_update``), and then the part itself must be
    the empty value, so that an update has one reading only."""
    if any(any(node) for node in branch):
        return False
    if value != empty:
        raise MalformedBeaconData(f"{what} has an all-zero branch but is not empty")
    return True


def parse_update(value: object, config: BeaconConfig = MAINNET) -> LightClientUpdate:
    """Parse a ``LightClientUpdate`` (one element of the ``/updates`` answer); an absent next
    sync committee or finalized header (all-zero branch, empty value) is None."""
    what = "update"
    parts = _update_parts(value, what, _UPDATE_KEYS, config)
    layout = parts.layout
    committee_branch = _branch(
        parts.obj["next_sync_committee_branch"],
        f"{what}.next_sync_committee_branch",
        layout.depth(layout.next_sync_committee_gindex),
    )
    size = config.preset.sync_committee_size
    empty_committee = {
        "pubkeys": [to_hex(bytes(_PUBKEY_SIZE))] * size,
        "aggregate_pubkey": to_hex(bytes(_PUBKEY_SIZE)),
    }
    raw_committee = parts.obj["next_sync_committee"]
    next_committee = (
        None
        if _absent(committee_branch, raw_committee, empty_committee, f"{what}.next_sync_committee")
        else _sync_committee(raw_committee, f"{what}.next_sync_committee", config)
    )
    finality_branch = _finality_branch(parts, what)
    raw_finalized = parts.obj["finalized_header"]
    finalized = (
        None
        if _absent(
            finality_branch, raw_finalized, _zero_header_json(layout), f"{what}.finalized_header"
        )
        else _finalized_header(parts, what, config)
    )
    return LightClientUpdate(
        attested_header=parts.attested_header,
        next_sync_committee=next_committee,
        next_sync_committee_branch=committee_branch,
        finalized_header=finalized,
        finality_branch=finality_branch,
        sync_aggregate=parts.sync_aggregate,
        signature_slot=parts.signature_slot,
    )


def parse_finality_update(
    value: object, config: BeaconConfig = MAINNET
) -> LightClientFinalityUpdate:
    """Parse a ``LightClientFinalityUpdate``."""
    what = "finality update"
    parts = _update_parts(value, what, _FINALITY_UPDATE_KEYS, config)
    return LightClientFinalityUpdate(
        attested_header=parts.attested_header,
        finalized_header=_finalized_header(parts, what, config),
        finality_branch=_finality_branch(parts, what),
        sync_aggregate=parts.sync_aggregate,
        signature_slot=parts.signature_slot,
    )


def parse_optimistic_update(
    value: object, config: BeaconConfig = MAINNET
) -> LightClientOptimisticUpdate:
    """Parse a ``LightClientOptimisticUpdate``."""
    what = "optimistic update"
    parts = _update_parts(
        value, what, ("attested_header", "sync_aggregate", "signature_slot"), config
    )
    return LightClientOptimisticUpdate(
        attested_header=parts.attested_header,
        sync_aggregate=parts.sync_aggregate,
        signature_slot=parts.signature_slot,
    )


# --------------------------------------------------------------------------- writers


def header_to_json(header: LightClientHeader) -> dict[str, Any]:
    """A ``LightClientHeader`` in the beacon API's encoding; :func:`parse_header` reads it back."""
    beacon, execution = header.beacon, header.execution
    fields: dict[str, Any] = {
        "parent_hash": to_hex(execution.parent_hash),
        "fee_recipient": to_hex(execution.fee_recipient),
        "state_root": to_hex(execution.state_root),
        "receipts_root": to_hex(execution.receipts_root),
        "logs_bloom": to_hex(execution.logs_bloom),
        "prev_randao": to_hex(execution.prev_randao),
        "block_number": str(execution.block_number),
        "gas_limit": str(execution.gas_limit),
        "gas_used": str(execution.gas_used),
        "timestamp": str(execution.timestamp),
        "extra_data": to_hex(execution.extra_data),
        "base_fee_per_gas": str(execution.base_fee_per_gas),
        "block_hash": to_hex(execution.block_hash),
        "transactions_root": to_hex(execution.transactions_root),
        "withdrawals_root": to_hex(execution.withdrawals_root),
    }
    if execution.blob_gas_used is not None:
        fields["blob_gas_used"] = str(execution.blob_gas_used)
        fields["excess_blob_gas"] = str(execution.excess_blob_gas)
    return {
        "beacon": {
            "slot": str(beacon.slot),
            "proposer_index": str(beacon.proposer_index),
            "parent_root": to_hex(beacon.parent_root),
            "state_root": to_hex(beacon.state_root),
            "body_root": to_hex(beacon.body_root),
        },
        "execution": fields,
        "execution_branch": [to_hex(node) for node in header.execution_branch],
    }


def sync_committee_to_json(committee: SyncCommittee) -> dict[str, Any]:
    """A ``SyncCommittee`` in the beacon API's encoding."""
    return {
        "pubkeys": [to_hex(key) for key in committee.pubkeys],
        "aggregate_pubkey": to_hex(committee.aggregate_pubkey),
    }
