"""Strict, canonical RLP (Ethereum Yellow Paper, appendix B).

Every value has exactly one accepted encoding, so ``encode(decode(data)) == data`` for every
``data`` that :func:`decode` accepts. That bijection is what lets a verifier compare proven
bytes directly and is the defence against alternative encodings of the same value (T13:
Polygon's double exit came from a proof that stayed valid under a re-encoded path).

Rejected, each with a :class:`~light_clients.errors.DecodeError` naming the offset:

* trailing bytes after the top-level item, or after the last item of a list (T10);
* truncation: a length that runs past the end of its enclosing item;
* a single byte below ``0x80`` wrapped as a one-byte string (``0x81 0x05`` for ``0x05``);
* the long form (``0xb8``/``0xf8`` …) used for a payload shorter than 56 bytes;
* a length-of-length with leading zero bytes;
* lists nested deeper than :data:`MAX_DEPTH`.

Integers are big-endian byte strings without leading zeros (zero is the empty string);
:func:`decode_uint` enforces that, :func:`encode_uint` produces it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

from light_clients.errors import DecodeError

__all__ = [
    "MAX_DEPTH",
    "Encodable",
    "RLPEncodeError",
    "RLPItem",
    "decode",
    "decode_uint",
    "encode",
    "encode_uint",
]

RLPItem: TypeAlias = bytes | list["RLPItem"]
"""A decoded RLP value: a byte string or a list of RLP values."""

Encodable: TypeAlias = bytes | bytearray | memoryview | Sequence["Encodable"]
"""What :func:`encode` accepts: byte strings, and lists or tuples of encodables."""

MAX_DEPTH = 32
"""Deepest accepted list nesting. Ethereum structures stay below 6 (a receipt's topics sit at
depth 3, a transaction access list at 4); the bound keeps hostile input from exhausting the
Python stack."""

_SHORT_LIMIT = 56  # payloads shorter than this must use the short form


class RLPEncodeError(DecodeError):
    """A value that has no RLP encoding (a negative integer, a leaf that is not bytes)."""


# ---------------------------------------------------------------------------------------------
# Encoding


def _length_prefix(length: int, short_base: int) -> bytes:
    """Return the prefix for a payload of ``length`` bytes; ``short_base`` is 0x80 or 0xc0."""
    if length < _SHORT_LIMIT:
        return bytes((short_base + length,))
    length_bytes = length.to_bytes((length.bit_length() + 7) // 8, "big")
    # 0xb7 / 0xf7 plus the length-of-length: the long forms start right after the short range.
    return bytes((short_base + 55 + len(length_bytes),)) + length_bytes


def encode(item: Encodable) -> bytes:
    """Return the canonical RLP encoding of ``item`` (bytes, or a nested list/tuple of bytes).

    Raises :class:`RLPEncodeError` for anything else (``str``, ``int``, ``None`` …): integers
    must go through :func:`encode_uint` first so that their width is explicit.
    """
    if isinstance(item, bytes | bytearray | memoryview):
        data = bytes(item)
        if len(data) == 1 and data[0] < 0x80:
            return data
        return _length_prefix(len(data), 0x80) + data
    if isinstance(item, list | tuple):
        payload = b"".join([encode(child) for child in item])
        return _length_prefix(len(payload), 0xC0) + payload
    raise RLPEncodeError(f"cannot RLP-encode a {type(item).__name__}: only bytes and lists")


def encode_uint(value: int) -> bytes:
    """Return ``value`` as minimal big-endian bytes (the RLP string payload of an integer).

    Zero is the empty string; ``encode(encode_uint(n))`` is the RLP encoding of ``n``.
    Raises :class:`RLPEncodeError` for negative numbers and non-integers (``bool`` included).
    """
    if not isinstance(value, int) or isinstance(value, bool):
        raise RLPEncodeError(f"expected an int, got {type(value).__name__}")
    if value < 0:
        raise RLPEncodeError(f"negative integer {value} has no RLP encoding")
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


# ---------------------------------------------------------------------------------------------
# Decoding


def decode(data: bytes) -> RLPItem:
    """Decode one canonical RLP item that spans all of ``data``.

    Returns ``bytes`` for a string and ``list`` for a list (recursively). Raises
    :class:`DecodeError` on empty input, trailing bytes, truncation, any non-canonical length
    encoding, or nesting deeper than :data:`MAX_DEPTH`.
    """
    if not isinstance(data, bytes):
        raise DecodeError(f"RLP input must be bytes, got {type(data).__name__}")
    if not data:
        raise DecodeError("empty input is not an RLP item")
    item, end = _decode_at(data, 0, len(data), 0)
    if end != len(data):
        raise DecodeError(f"{len(data) - end} trailing byte(s) after the RLP item at offset {end}")
    return item


def _decode_at(data: bytes, pos: int, end: int, depth: int) -> tuple[RLPItem, int]:
    """Decode the item starting at ``pos`` that must finish by ``end``; return it and its end.

    ``end`` is the end of the enclosing item, so a child that claims more bytes than its parent
    holds is reported as truncated rather than read from the parent's sibling.
    """
    first = data[pos]
    if first < 0x80:
        return data[pos : pos + 1], pos + 1
    if first < 0xB8:
        start = pos + 1
        stop = start + first - 0x80
        _check_short_string(data, pos, start, stop, end)
        return data[start:stop], stop
    if first < 0xC0:
        start, stop = _long_payload(data, pos, end, first - 0xB7, "string")
        return data[start:stop], stop
    if first < 0xF8:
        start = pos + 1
        stop = start + first - 0xC0
    else:
        start, stop = _long_payload(data, pos, end, first - 0xF7, "list")
    if stop > end:
        raise DecodeError(f"list at offset {pos} runs {stop - end} byte(s) past its end")
    if depth >= MAX_DEPTH:
        raise DecodeError(f"RLP lists nested deeper than {MAX_DEPTH} at offset {pos}")
    items: list[RLPItem] = []
    append = items.append
    cursor = start
    while cursor < stop:
        # Hot path: trie nodes are lists of short strings (32-byte hashes, empty slots), so
        # those are decoded inline here instead of through a recursive call, with exactly the
        # checks of the general case above.
        first = data[cursor]
        if first < 0x80:
            append(data[cursor : cursor + 1])
            cursor += 1
        elif first < 0xB8:
            child_start = cursor + 1
            child_stop = child_start + first - 0x80
            if child_stop > stop or (first == 0x81 and data[child_start] < 0x80):
                _check_short_string(data, cursor, child_start, child_stop, stop)
            append(data[child_start:child_stop])
            cursor = child_stop
        else:
            child, cursor = _decode_at(data, cursor, stop, depth + 1)
            append(child)
    return items, stop


def _check_short_string(data: bytes, pos: int, start: int, stop: int, end: int) -> None:
    """Reject a short-form string that overruns ``end`` or wraps a single byte below 0x80."""
    if stop > end:
        raise DecodeError(f"string at offset {pos} runs {stop - end} byte(s) past its end")
    if stop - start == 1 and data[start] < 0x80:
        raise DecodeError(
            f"non-canonical RLP at offset {pos}: single byte 0x{data[start]:02x} wrapped "
            "as a one-byte string"
        )


def _long_payload(
    data: bytes, pos: int, end: int, length_of_length: int, what: str
) -> tuple[int, int]:
    """Parse a long-form length at ``pos``; return the payload's (start, stop) offsets."""
    start = pos + 1 + length_of_length
    if start > end:
        raise DecodeError(f"{what} length at offset {pos} is truncated")
    if data[pos + 1] == 0:
        raise DecodeError(f"non-canonical RLP at offset {pos}: {what} length has leading zeros")
    length = int.from_bytes(data[pos + 1 : start], "big")
    if length < _SHORT_LIMIT:
        raise DecodeError(
            f"non-canonical RLP at offset {pos}: long form used for a {length}-byte {what}"
        )
    stop = start + length
    if stop > end:
        raise DecodeError(f"{what} at offset {pos} runs {stop - end} byte(s) past its end")
    return start, stop


def decode_uint(data: RLPItem, max_bytes: int = 32) -> int:
    """Return the integer whose minimal big-endian encoding is ``data`` (an RLP string payload).

    ``data`` is typed as any RLP item so that decoded fields can be passed straight in.
    Raises :class:`DecodeError` if ``data`` is not bytes (a list), has a leading zero byte (a
    non-minimal integer; zero must be the empty string), or is longer than ``max_bytes``
    (32 for uint256, 8 for uint64 fields).
    """
    if not isinstance(data, bytes):
        raise DecodeError(f"expected an integer string, got an RLP {_kind(data)}")
    if len(data) > max_bytes:
        raise DecodeError(f"integer of {len(data)} bytes exceeds the {max_bytes}-byte limit")
    if data[:1] == b"\x00":
        raise DecodeError(f"non-minimal integer 0x{data.hex()} (leading zero byte)")
    return int.from_bytes(data, "big")


def _kind(item: object) -> str:
    """Name an RLP item's shape for error messages."""
    return "list" if isinstance(item, list) else type(item).__name__
