"""A strict reader (and the few encoders we need) for SCALE, Substrate's wire codec.

Strict means: every read is bounds-checked, compact integers must use their canonical (shortest)
mode, a declared length can never exceed the bytes that are actually left, and :meth:`finish`
refuses trailing bytes. Two byte strings that decode to the same value are therefore always
equal (exploit classes T10 and T13 in ``docs/threats.md``: no byte may escape the hash,
no value may have a second encoding).

Every failure is a :class:`~light_clients.errors.DecodeError` subclass. The encoders are for
building signing payloads and test data from trusted integers; they raise :class:`ValueError`
on out-of-range arguments, which is a programming error rather than untrusted input.
"""

# Exception names follow polkadot-sdk and light_clients.errors (no "Error" suffix).

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from typing import TypeVar

from light_clients.errors import DecodeError

__all__ = [
    "U32_MAX",
    "U64_MAX",
    "NonCanonicalEncoding",
    "ScaleReader",
    "TrailingBytes",
    "UnexpectedEnd",
    "encode_compact",
    "encode_length_prefixed",
    "encode_u8",
    "encode_u16",
    "encode_u32",
    "encode_u64",
    "encode_vec",
]

T = TypeVar("T")

U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

# Lower bounds of compact modes 0b01, 0b10, 0b11: a value below the bound fits a smaller mode.
_MODE1_MIN = 1 << 6
_MODE2_MIN = 1 << 14
_MODE3_MIN = 1 << 30
# Mode 0b11 carries 4 + (first byte >> 2) bytes, so at most 67 (a 536-bit integer).
_COMPACT_MAX_BYTES = 4 + 63


class UnexpectedEnd(DecodeError):
    """The input ends before the value being read is complete."""


class TrailingBytes(DecodeError):
    """Bytes are left over after the complete value was read."""


class NonCanonicalEncoding(DecodeError):
    """A value is encoded in a longer form than SCALE's canonical one (a second encoding)."""


class ScaleReader:
    """A cursor over SCALE-encoded bytes that only ever moves forward.

    >>> r = ScaleReader(bytes.fromhex("0c0102ff07"))
    >>> r.length_prefixed(), r.u8()
    (b'\\x01\\x02\\xff', 7)
    >>> r.finish()
    """

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes, offset: int = 0) -> None:
        """Wrap ``data``, starting at ``offset``; other bytes-likes are copied to bytes."""
        if not isinstance(data, bytes):
            if not isinstance(data, bytearray | memoryview):
                raise DecodeError(f"expected bytes, got {type(data).__name__}")
            data = bytes(data)
        if not 0 <= offset <= len(data):
            raise UnexpectedEnd(f"start offset {offset} is outside {len(data)} bytes")
        self._data = data
        self._pos = offset

    @property
    def data(self) -> bytes:
        """The whole input, including what has already been read."""
        return self._data

    @property
    def offset(self) -> int:
        """How many bytes have been consumed."""
        return self._pos

    @property
    def remaining(self) -> int:
        """How many bytes are left."""
        return len(self._data) - self._pos

    def _take(self, count: int, what: str) -> bytes:
        end = self._pos + count
        if end > len(self._data):
            raise UnexpectedEnd(
                f"{what}: need {count} bytes at offset {self._pos}, only {self.remaining} left"
            )
        out = self._data[self._pos : end]
        self._pos = end
        return out

    def u8(self) -> int:
        """Read one byte."""
        if self._pos >= len(self._data):
            raise UnexpectedEnd(f"u8: input ends at offset {self._pos}")
        value = self._data[self._pos]
        self._pos += 1
        return value

    def u16(self) -> int:
        """Read a little-endian u16."""
        return int(_U16.unpack(self._take(2, "u16"))[0])

    def u32(self) -> int:
        """Read a little-endian u32."""
        return int(_U32.unpack(self._take(4, "u32"))[0])

    def u64(self) -> int:
        """Read a little-endian u64."""
        return int(_U64.unpack(self._take(8, "u64"))[0])

    def fixed(self, count: int, what: str = "bytes") -> bytes:
        """Read exactly ``count`` raw bytes (a ``[u8; count]``)."""
        return self._take(count, what)

    def compact(self) -> int:
        """Read a ``Compact<uN>`` and insist on its canonical (shortest) mode."""
        first = self.u8()
        mode = first & 0b11
        if mode == 0b00:
            return first >> 2
        if mode == 0b01:
            value = (first | self.u8() << 8) >> 2
            if value < _MODE1_MIN:
                raise NonCanonicalEncoding(f"compact {value} encoded in 2 bytes, fits in 1")
            return value
        if mode == 0b10:
            value = (first | int.from_bytes(self._take(3, "compact"), "little") << 8) >> 2
            if value < _MODE2_MIN:
                raise NonCanonicalEncoding(f"compact {value} encoded in 4 bytes, fits in 2")
            return value
        length = (first >> 2) + 4
        raw = self._take(length, "compact")
        value = int.from_bytes(raw, "little")
        # Big-integer mode: at least 2**30, and no zero high byte (it would fit a shorter length).
        if value < _MODE3_MIN or (length > 4 and raw[-1] == 0):
            raise NonCanonicalEncoding(f"compact {value} encoded in {1 + length} bytes")
        return value

    def compact_u32(self) -> int:
        """Read a canonical ``Compact<u32>``."""
        value = self.compact()
        if value > U32_MAX:
            raise DecodeError(f"compact {value} does not fit in u32")
        return value

    def compact_u64(self) -> int:
        """Read a canonical ``Compact<u64>``."""
        value = self.compact()
        if value > U64_MAX:
            raise DecodeError(f"compact {value} does not fit in u64")
        return value

    def length_prefixed(self, max_len: int | None = None) -> bytes:
        """Read a ``Vec<u8>``: a compact length, then that many bytes.

        The length is bounded by what is left of the input (and by ``max_len`` if given), so a
        forged length can never make us allocate or wait for data that is not there.
        """
        length = self.compact()
        if max_len is not None and length > max_len:
            raise DecodeError(f"byte string of {length} bytes exceeds the bound {max_len}")
        return self._take(length, "length-prefixed bytes")

    def vec(
        self,
        read_item: Callable[[ScaleReader], T],
        *,
        min_item_size: int = 1,
        max_items: int | None = None,
    ) -> tuple[T, ...]:
        """Read a ``Vec<T>``: a compact count, then ``count`` items read by ``read_item``.

        ``min_item_size`` (the smallest encoding of one item) bounds the count by the bytes
        left before anything is read, so a huge declared count fails at once.
        """
        count = self.compact()
        if max_items is not None and count > max_items:
            raise DecodeError(f"vector of {count} items exceeds the bound {max_items}")
        if count * max(min_item_size, 0) > self.remaining:
            raise UnexpectedEnd(
                f"vector declares {count} items of at least {min_item_size} bytes, "
                f"only {self.remaining} bytes left"
            )
        return tuple(read_item(self) for _ in range(count))

    def finish(self) -> None:
        """Insist that the whole input was consumed."""
        if self._pos != len(self._data):
            raise TrailingBytes(
                f"{self.remaining} trailing bytes after offset {self._pos} (of {len(self._data)})"
            )


def encode_u8(value: int) -> bytes:
    """Encode one byte."""
    if not 0 <= value <= 0xFF:
        raise ValueError(f"u8 out of range: {value}")
    return bytes((value,))


def encode_u16(value: int) -> bytes:
    """Encode a little-endian u16."""
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"u16 out of range: {value}")
    return _U16.pack(value)


def encode_u32(value: int) -> bytes:
    """Encode a little-endian u32."""
    if not 0 <= value <= U32_MAX:
        raise ValueError(f"u32 out of range: {value}")
    return _U32.pack(value)


def encode_u64(value: int) -> bytes:
    """Encode a little-endian u64."""
    if not 0 <= value <= U64_MAX:
        raise ValueError(f"u64 out of range: {value}")
    return _U64.pack(value)


def encode_compact(value: int) -> bytes:
    """Encode a non-negative integer (< 2**536) in SCALE's canonical compact form."""
    if value < 0:
        raise ValueError(f"compact cannot encode a negative number: {value}")
    if value < _MODE1_MIN:
        return bytes((value << 2,))
    if value < _MODE2_MIN:
        return _U16.pack(value << 2 | 0b01)
    if value < _MODE3_MIN:
        return _U32.pack(value << 2 | 0b10)
    length = max(4, (value.bit_length() + 7) // 8)
    if length > _COMPACT_MAX_BYTES:
        raise ValueError(f"compact cannot encode a {value.bit_length()}-bit number")
    return bytes(((length - 4) << 2 | 0b11,)) + value.to_bytes(length, "little")


def encode_length_prefixed(data: bytes) -> bytes:
    """Encode a ``Vec<u8>``: compact length, then the bytes."""
    return encode_compact(len(data)) + data


def encode_vec(encoded_items: Iterable[bytes]) -> bytes:
    """Encode a ``Vec<T>`` from items that are already SCALE-encoded."""
    items = list(encoded_items)
    return encode_compact(len(items)) + b"".join(items)
