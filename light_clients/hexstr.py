"""Hex strings, once for the whole project: ``to_hex`` and the strict parsers of JSON-RPC's
DATA and QUANTITY (EIP-1474), checked before conversion.

``bytes.fromhex`` skips whitespace and ``int(text, 16)`` accepts underscores and signs, so
both are only called on text that a regular expression has already accepted.
"""

from __future__ import annotations

import re

from light_clients.errors import DecodeError

_DATA_RE = re.compile(r"0x(?:[0-9a-fA-F]{2})*")
_QUANTITY_RE = re.compile(r"0x(?:0|[1-9a-fA-F][0-9a-fA-F]*)")
_LOOSE_UINT_RE = re.compile(r"0x[0-9a-fA-F]+")


def to_hex(data: bytes) -> str:
    """``0x`` and lower-case hex: how Passerelle writes bytes in JSON, logs and files."""
    return "0x" + data.hex()


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise DecodeError(f"{what} must be a hex string, got {type(value).__name__}")
    return value


def parse_data(value: object, what: str, size: int | None = None) -> bytes:
    """Parse DATA: ``0x`` and whole bytes of hex; exactly ``size`` bytes when given."""
    text = _text(value, what)
    if _DATA_RE.fullmatch(text) is None:
        raise DecodeError(f"{what} is not 0x-prefixed hex of whole bytes: {text!r:.80}")
    data = bytes.fromhex(text[2:])
    if size is not None and len(data) != size:
        raise DecodeError(f"{what} is {len(data)} bytes, expected {size}")
    return data


def parse_quantity(value: object, what: str, max_bytes: int) -> int:
    """Parse a QUANTITY strictly: ``0x0`` or ``0x`` and hex digits without a leading zero."""
    text = _text(value, what)
    if _QUANTITY_RE.fullmatch(text) is None:
        raise DecodeError(
            f"{what} is not a hex quantity (0x0, or 0x without leading zeros): {text!r:.80}"
        )
    return _bounded(int(text[2:], 16), what, max_bytes)


def parse_loose_uint(value: object, what: str, max_bytes: int) -> int:
    """Parse an unsigned integer given as QUANTITY or as zero-padded DATA (``0x05``, ``0x0…01``).

    Clients disagree on the form of some fields (eth_getProof storage keys and values); only
    the integer is used afterwards, so the choice of text form cannot change what is proven.
    """
    text = _text(value, what)
    if _LOOSE_UINT_RE.fullmatch(text) is None:
        raise DecodeError(f"{what} is not a 0x-prefixed hex integer: {text!r:.80}")
    if len(text) - 2 > 2 * max_bytes:
        raise DecodeError(f"{what} has more than {2 * max_bytes} hex digits")
    return int(text[2:], 16)


def _bounded(number: int, what: str, max_bytes: int) -> int:
    if number.bit_length() > 8 * max_bytes:
        raise DecodeError(f"{what} exceeds {max_bytes} bytes")
    return number
