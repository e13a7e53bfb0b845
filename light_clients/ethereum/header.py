"""Ethereum execution-layer block headers, Frontier to Prague.

A header is the RLP list of its fields and its hash is ``keccak256(rlp)``. Forks only ever
appended fields, so the field count names the fork family:

======  ==============================================  =========================
fields  added                                           fork
======  ==============================================  =========================
15      parentHash … nonce                              Frontier … Berlin
16      baseFeePerGas                                   London, Paris (the merge)
17      withdrawalsRoot                                 Shanghai
20      blobGasUsed, excessBlobGas,                     Cancun
        parentBeaconBlockRoot
21      requestsHash                                    Prague
======  ==============================================  =========================

:func:`header_rlp_from_json` rebuilds the RLP from an ``eth_getBlockByNumber`` object (picking
the fork from which fields are present), :func:`decode_header` parses RLP strictly, and
:func:`verify_header_hash` checks a header against the hash it is claimed to have.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from light_clients.errors import DecodeError, HeaderHashMismatch
from light_clients.ethereum.rlp import decode, decode_uint, encode, encode_uint
from light_clients.hashing import keccak256
from light_clients.hexstr import parse_data, parse_quantity

__all__ = [
    "EthHeader",
    "ParentHashMismatchError",
    "decode_header",
    "header_rlp_from_json",
    "verify_chain_link",
    "verify_header_hash",
]


class ParentHashMismatchError(HeaderHashMismatch):
    """A header does not extend the header claimed to be its parent."""


# ---------------------------------------------------------------------------------------------
# Field table, in RLP order: (JSON-RPC name, kind, size). FIXED is a byte string of exactly
# ``size`` bytes, DATA a byte string of any length, UINT a minimal big-endian integer of at
# most ``size`` bytes.

_FIXED, _DATA, _UINT = 0, 1, 2
_Field = tuple[str, int, int]

_BASE_FIELDS: tuple[_Field, ...] = (
    ("parentHash", _FIXED, 32),
    ("sha3Uncles", _FIXED, 32),
    ("miner", _FIXED, 20),
    ("stateRoot", _FIXED, 32),
    ("transactionsRoot", _FIXED, 32),
    ("receiptsRoot", _FIXED, 32),
    ("logsBloom", _FIXED, 256),
    ("difficulty", _UINT, 32),
    ("number", _UINT, 8),
    ("gasLimit", _UINT, 8),
    ("gasUsed", _UINT, 8),
    ("timestamp", _UINT, 8),
    ("extraData", _DATA, 0),
    ("mixHash", _FIXED, 32),
    ("nonce", _FIXED, 8),
)

# Each fork appends one group; a header carries a prefix of these groups and nothing else.
_FORK_GROUPS: tuple[tuple[str, tuple[_Field, ...]], ...] = (
    ("London", (("baseFeePerGas", _UINT, 32),)),
    ("Shanghai", (("withdrawalsRoot", _FIXED, 32),)),
    (
        "Cancun",
        (
            ("blobGasUsed", _UINT, 8),
            ("excessBlobGas", _UINT, 8),
            ("parentBeaconBlockRoot", _FIXED, 32),
        ),
    ),
    ("Prague", (("requestsHash", _FIXED, 32),)),
)

# Field layout by number of fork groups present (0 = Frontier-Berlin … 4 = Prague).
_LAYOUTS: tuple[tuple[_Field, ...], ...] = tuple(
    _BASE_FIELDS + tuple(field for _, group in _FORK_GROUPS[:groups] for field in group)
    for groups in range(len(_FORK_GROUPS) + 1)
)
_FIELD_COUNTS = {len(layout): groups for groups, layout in enumerate(_LAYOUTS)}
_ALL_FIELDS = len(_LAYOUTS[-1])


def _fork_name(groups: int, difficulty: int) -> str:
    """Name the fork family of a header with ``groups`` fork groups."""
    if groups == 0:
        return "Frontier-Berlin"
    if groups == 1:
        # Paris (the merge) added no field; it set difficulty to 0 for good.
        return "Paris" if difficulty == 0 else "London"
    return _FORK_GROUPS[groups - 1][0]


@dataclass(frozen=True, slots=True)
class EthHeader:
    """A decoded execution-layer header; fields introduced by later forks are ``None`` before."""

    hash: bytes
    parent_hash: bytes
    ommers_hash: bytes
    coinbase: bytes
    state_root: bytes
    transactions_root: bytes
    receipts_root: bytes
    logs_bloom: bytes
    difficulty: int
    number: int
    gas_limit: int
    gas_used: int
    timestamp: int
    extra_data: bytes
    mix_hash: bytes
    nonce: bytes
    base_fee_per_gas: int | None
    withdrawals_root: bytes | None
    blob_gas_used: int | None
    excess_blob_gas: int | None
    parent_beacon_block_root: bytes | None
    requests_hash: bytes | None
    fork: str
    """Fork family read from the field count: Frontier-Berlin, London, Paris, Shanghai,
    Cancun or Prague."""
    rlp: bytes


# ---------------------------------------------------------------------------------------------
# RLP -> header


def decode_header(rlp: bytes) -> EthHeader:
    """Decode a header from canonical RLP (15, 16, 17, 20 or 21 fields).

    Raises :class:`~light_clients.errors.DecodeError` for non-canonical RLP, a field count no
    fork uses, a hash/address/bloom/nonce of the wrong size, or a non-minimal integer. The
    hash is computed here, not checked: use :func:`verify_header_hash` for that.
    """
    if not isinstance(rlp, bytes):
        raise DecodeError(f"header RLP must be bytes, got {type(rlp).__name__}")
    return _decode_header(rlp, keccak256(rlp))


def _decode_header(rlp: bytes, block_hash: bytes) -> EthHeader:
    """Decode ``rlp`` whose keccak256 is already known to be ``block_hash``."""
    items = decode(rlp)
    if not isinstance(items, list):
        raise DecodeError("header RLP is a string, not a list")
    groups = _FIELD_COUNTS.get(len(items))
    if groups is None:
        raise DecodeError(
            f"header has {len(items)} fields; forks use 15, 16, 17, 20 or 21 "
            "(a partial fork group such as Cancun without parentBeaconBlockRoot is invalid)"
        )
    # Any: the table fixes each position's type; EthHeader's annotations document them.
    values: list[Any] = []
    for (name, kind, size), item in zip(_LAYOUTS[groups], items, strict=True):
        if type(item) is not bytes:
            raise DecodeError(f"header field {name} is a list, expected a byte string")
        if kind == _UINT:
            try:
                values.append(decode_uint(item, size))
            except DecodeError as error:
                raise DecodeError(f"header field {name}: {error}") from error
        elif kind == _FIXED and len(item) != size:
            raise DecodeError(f"header field {name} is {len(item)} bytes, expected {size}")
        else:
            values.append(item)
    values.extend([None] * (_ALL_FIELDS - len(values)))
    values += [_fork_name(groups, values[7]), rlp]
    return EthHeader(block_hash, *values)


def verify_header_hash(rlp: bytes, expected_hash: bytes) -> EthHeader:
    """Check that ``keccak256(rlp) == expected_hash`` and return the decoded header.

    Raises :class:`~light_clients.errors.HeaderHashMismatch` (showing both hashes) when the
    hashes differ, and :class:`~light_clients.errors.DecodeError` when the bytes hash
    correctly but are not a canonical header.
    """
    if not isinstance(rlp, bytes):
        raise DecodeError(f"header RLP must be bytes, got {type(rlp).__name__}")
    if not isinstance(expected_hash, bytes) or len(expected_hash) != 32:
        raise DecodeError("expected header hash must be 32 bytes")
    computed = keccak256(rlp)
    if computed != expected_hash:
        raise HeaderHashMismatch(
            f"header hashes to 0x{computed.hex()}, expected 0x{expected_hash.hex()}"
        )
    return _decode_header(rlp, computed)


def verify_chain_link(parent: EthHeader, child: EthHeader) -> None:
    """Check that ``child`` directly extends ``parent`` (parent hash and number + 1).

    Raises :class:`ParentHashMismatchError` otherwise.
    """
    if child.parent_hash != parent.hash:
        raise ParentHashMismatchError(
            f"block {child.number} has parentHash 0x{child.parent_hash.hex()}, but block "
            f"{parent.number} hashes to 0x{parent.hash.hex()}"
        )
    if child.number != parent.number + 1:
        raise ParentHashMismatchError(
            f"block {child.number} cannot follow block {parent.number}: numbers must be consecutive"
        )


# ---------------------------------------------------------------------------------------------
# JSON-RPC object -> RLP


def header_rlp_from_json(obj: Mapping[str, object]) -> bytes:
    """Build a header's RLP from an ``eth_getBlockByNumber`` result (camelCase, hex strings).

    The fork is chosen by which optional fields are present: baseFeePerGas (London) →
    withdrawalsRoot (Shanghai) → blobGasUsed, excessBlobGas, parentBeaconBlockRoot (Cancun) →
    requestsHash (Prague). A later group without every earlier one, or a partial group, is a
    :class:`~light_clients.errors.DecodeError`; so are missing base fields, non-string values,
    DATA that is not ``0x`` + an even number of hex digits of the right size, and QUANTITY with
    leading zeros (EIP-1474). Fields that are not header fields (``hash``, ``size``,
    ``transactions`` …) are ignored; a ``null`` optional field counts as absent.
    """
    if not isinstance(obj, Mapping):
        raise DecodeError(f"header must be a JSON object, got {type(obj).__name__}")
    groups = 0
    for position, (fork, group) in enumerate(_FORK_GROUPS):
        found = [name for name, _, _ in group if obj.get(name) is not None]
        if not found:
            continue
        if len(found) != len(group):
            missing = ", ".join(name for name, _, _ in group if name not in found)
            raise DecodeError(f"{fork} header fields incomplete: missing {missing}")
        if position != groups:
            raise DecodeError(
                f"header has {fork} fields ({found[0]}) but lacks the "
                f"{_FORK_GROUPS[groups][0]} ones"
            )
        groups += 1
    fields = [_json_field(obj, *field) for field in _LAYOUTS[groups]]
    return encode(fields)


def _json_field(obj: Mapping[str, object], name: str, kind: int, size: int) -> bytes:
    """Return one header field from JSON as its RLP string payload."""
    value = obj.get(name)
    if value is None:
        raise DecodeError(f"header field {name} is missing")
    what = f"header field {name}"
    if kind == _UINT:
        return encode_uint(parse_quantity(value, what, size))
    return parse_data(value, what, size if kind == _FIXED else None)
