"""The strict SCALE reader: canonical compact integers, bounds, trailing bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from light_clients.errors import DecodeError, VerificationError
from light_clients.substrate.scale import (
    U32_MAX,
    U64_MAX,
    NonCanonicalEncoding,
    ScaleReader,
    TrailingBytes,
    UnexpectedEnd,
    encode_compact,
    encode_length_prefixed,
    encode_u8,
    encode_u16,
    encode_u32,
    encode_u64,
    encode_vec,
)

PROPERTY = settings(max_examples=250, deadline=None)

# Known encodings from the SCALE specification (docs.substrate.io "SCALE codec") and
# parity-scale-codec's own tests.
COMPACT_VECTORS = [
    (0, "00"),
    (1, "04"),
    (42, "a8"),
    (63, "fc"),
    (64, "0101"),
    (69, "1501"),
    (16383, "fdff"),
    (16384, "02000100"),
    (65535, "feff0300"),
    (2**30 - 1, "feffffff"),
    (2**30, "0300000040"),
    (2**32 - 1, "03ffffffff"),
    (2**32, "070000000001"),
    (100000000000000, "0b00407a10f35a"),
    (U64_MAX, "13ffffffffffffffff"),
]


def read_compact(data: bytes) -> int:
    reader = ScaleReader(data)
    value = reader.compact()
    reader.finish()
    return value


@pytest.mark.parametrize(("value", "hex_"), COMPACT_VECTORS)
def test_compact_known_encodings(value: int, hex_: str) -> None:
    assert encode_compact(value).hex() == hex_
    assert read_compact(bytes.fromhex(hex_)) == value


@pytest.mark.parametrize(
    "hex_",
    [
        "0100",  # 0 in the two-byte mode
        "fd00",  # 63 in the two-byte mode
        "02000000",  # 0 in the four-byte mode
        "feff0000",  # 16383 in the four-byte mode
        "0300000000",  # 0 in the big-integer mode
        "03ffffff3f",  # 2**30 - 1 in the big-integer mode
        "07ffffffff00",  # 2**32 - 1 in five bytes (zero high byte)
        "13ffffffff00000000",  # 2**32 - 1 in eight bytes
    ],
)
def test_T13_non_canonical_compact_rejected(hex_: str) -> None:
    with pytest.raises(NonCanonicalEncoding):
        read_compact(bytes.fromhex(hex_))


def test_compact_u32_and_u64_bounds() -> None:
    assert ScaleReader(encode_compact(U32_MAX)).compact_u32() == U32_MAX
    with pytest.raises(DecodeError, match="u32"):
        ScaleReader(encode_compact(U32_MAX + 1)).compact_u32()
    assert ScaleReader(encode_compact(U64_MAX)).compact_u64() == U64_MAX
    with pytest.raises(DecodeError, match="u64"):
        ScaleReader(encode_compact(U64_MAX + 1)).compact_u64()


def test_fixed_width_integers_little_endian() -> None:
    reader = ScaleReader(bytes.fromhex("ff341278563412efcdab8967452301"))
    assert reader.u8() == 0xFF
    assert reader.u16() == 0x1234
    assert reader.u32() == 0x12345678
    assert reader.u64() == 0x0123456789ABCDEF
    assert reader.remaining == 0
    reader.finish()


@pytest.mark.parametrize("method", ["u8", "u16", "u32", "u64", "compact"])
def test_truncated_integer_raises_unexpected_end(method: str) -> None:
    with pytest.raises(UnexpectedEnd):
        getattr(ScaleReader(b""), method)()


def test_truncated_multibyte_compact() -> None:
    for data in (b"\x01", b"\x02\x00", b"\x03\x00\x00\x00", b"\x13" + b"\xff" * 7):
        with pytest.raises(UnexpectedEnd):
            ScaleReader(data).compact()


def test_T10_trailing_bytes_rejected() -> None:
    reader = ScaleReader(b"\x04\x00")
    assert reader.compact() == 1
    with pytest.raises(TrailingBytes, match="1 trailing"):
        reader.finish()


def test_length_prefixed_bounded_by_input() -> None:
    assert ScaleReader(b"\x0cabc").length_prefixed() == b"abc"
    with pytest.raises(UnexpectedEnd):
        ScaleReader(b"\x10abc").length_prefixed()
    with pytest.raises(DecodeError, match="exceeds the bound 2"):
        ScaleReader(b"\x0cabc").length_prefixed(max_len=2)


def test_vec_rejects_a_huge_count_before_reading_items() -> None:
    calls: list[int] = []

    def item(reader: ScaleReader) -> int:
        calls.append(1)
        return reader.u8()

    huge = encode_compact(U64_MAX) + b"\x00" * 16
    with pytest.raises(UnexpectedEnd, match="declares"):
        ScaleReader(huge).vec(item, min_item_size=1)
    assert calls == []
    with pytest.raises(DecodeError, match="exceeds the bound"):
        ScaleReader(b"\x0c\x01\x02\x03").vec(item, max_items=2)
    assert ScaleReader(b"\x0c\x01\x02\x03").vec(item) == (1, 2, 3)


def test_non_bytes_input_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="expected bytes"):
        ScaleReader("00")  # type: ignore[arg-type]
    assert ScaleReader(bytearray(b"\x04")).compact() == 1  # type: ignore[arg-type]
    assert ScaleReader(memoryview(b"\x04")).compact() == 1  # type: ignore[arg-type]


def test_encoders() -> None:
    assert encode_u8(7) == b"\x07"
    assert encode_u16(0x1234) == b"\x34\x12"
    assert encode_u32(1) == b"\x01\x00\x00\x00"
    assert encode_u64(1) == b"\x01" + b"\x00" * 7
    assert encode_length_prefixed(b"ab") == b"\x08ab"
    assert encode_vec([b"\x01", b"\x02"]) == b"\x08\x01\x02"
    for encoder, bad in (
        (encode_u8, 256),
        (encode_u16, -1),
        (encode_u32, U32_MAX + 1),
        (encode_u64, U64_MAX + 1),
        (encode_compact, -1),
        (encode_compact, 1 << 536),
    ):
        with pytest.raises(ValueError):
            encoder(bad)


@PROPERTY
@given(st.integers(min_value=0, max_value=(1 << 536) - 1))
def test_compact_roundtrip(value: int) -> None:
    encoded = encode_compact(value)
    assert read_compact(encoded) == value


@PROPERTY
@given(st.binary(max_size=80))
def test_compact_decoding_is_canonical(data: bytes) -> None:
    """Whatever bytes decode, they are exactly the canonical encoding of the value read."""
    reader = ScaleReader(data)
    try:
        value = reader.compact()
    except DecodeError:
        return
    assert data[: reader.offset] == encode_compact(value)


@PROPERTY
@given(
    st.binary(max_size=64),
    st.sampled_from(
        ["u8", "u16", "u32", "u64", "compact", "compact_u32", "compact_u64", "length_prefixed"]
    ),
)
def test_arbitrary_bytes_only_raise_decode_errors(data: bytes, method: str) -> None:
    reader = ScaleReader(data)
    try:
        while reader.remaining:
            getattr(reader, method)()
        reader.finish()
    except VerificationError as exc:
        assert isinstance(exc, DecodeError)
        assert "\n" not in str(exc)


@PROPERTY
@given(st.lists(st.binary(max_size=70), max_size=8))
def test_vec_of_byte_strings_roundtrip(items: list[bytes]) -> None:
    encoded = encode_vec(encode_length_prefixed(item) for item in items)
    reader = ScaleReader(encoded)
    assert reader.vec(ScaleReader.length_prefixed) == tuple(items)
    reader.finish()
