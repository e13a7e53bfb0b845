"""Strict canonical RLP (light_clients.ethereum.rlp): spec examples, the pyrlp oracle,
properties over arbitrary bytes, and the non-canonical encodings T10/T13 are built from."""

from __future__ import annotations

import pytest
import rlp as pyrlp  # test oracle only, never imported by light_clients
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from light_clients.errors import DecodeError
from light_clients.ethereum.rlp import (
    MAX_DEPTH,
    RLPEncodeError,
    RLPItem,
    decode,
    decode_uint,
    encode,
    encode_uint,
)

PROPERTY = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

items = st.recursive(
    st.binary(max_size=80),
    lambda children: st.lists(children, max_size=6),
    max_leaves=25,
)

# ---------------------------------------------------------------------------------------------
# Known encodings (Yellow Paper appendix B and the ethereum/tests RLP examples)

KNOWN: list[tuple[RLPItem, str]] = [
    (b"", "80"),
    (b"\x00", "00"),
    (b"\x7f", "7f"),
    (b"\x80", "8180"),
    (b"dog", "83646f67"),
    ([], "c0"),
    ([b"cat", b"dog"], "c88363617483646f67"),
    ([[], [[]], [[], [[]]]], "c7c0c1c0c3c0c1c0"),
    (b"\x04\x00", "820400"),
    (b"a" * 55, "b7" + "61" * 55),
    (b"a" * 56, "b838" + "61" * 56),
    (b"a" * 1024, "b90400" + "61" * 1024),
    ([b"a" * 54], "f7b6" + "61" * 54),
    ([b"a" * 55], "f838b7" + "61" * 55),
]


@pytest.mark.parametrize(("item", "hex_encoding"), KNOWN)
def test_known_encodings(item: RLPItem, hex_encoding: str) -> None:
    assert encode(item) == bytes.fromhex(hex_encoding)
    assert decode(bytes.fromhex(hex_encoding)) == item


def test_encode_accepts_tuples_bytearray_and_memoryview() -> None:
    assert encode((bytearray(b"cat"), memoryview(b"dog"))) == bytes.fromhex("c88363617483646f67")


@pytest.mark.parametrize("bad", ["text", 5, None, [b"ok", 1.5], {b"a": b"b"}])
def test_encode_rejects_non_bytes_leaves(bad: object) -> None:
    with pytest.raises(RLPEncodeError):
        encode(bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Integers


@pytest.mark.parametrize(
    ("value", "payload"), [(0, ""), (1, "01"), (127, "7f"), (128, "80"), (256, "0100")]
)
def test_uint_round_trip(value: int, payload: str) -> None:
    assert encode_uint(value) == bytes.fromhex(payload)
    assert decode_uint(bytes.fromhex(payload)) == value


def test_T13_uint_with_leading_zero_rejected() -> None:
    with pytest.raises(DecodeError, match="leading zero"):
        decode_uint(b"\x00\x01")
    with pytest.raises(DecodeError, match="leading zero"):
        decode_uint(b"\x00")  # zero is the empty string, never 0x00


def test_uint_width_limit_and_type() -> None:
    assert decode_uint(b"\xff" * 8, 8) == 2**64 - 1
    with pytest.raises(DecodeError, match="exceeds the 8-byte limit"):
        decode_uint(b"\x01" + b"\x00" * 8, 8)
    with pytest.raises(DecodeError, match="list"):
        decode_uint([b"\x01"])


@pytest.mark.parametrize("bad", [-1, True, 1.0, "1"])
def test_encode_uint_rejects_negative_and_non_int(bad: object) -> None:
    with pytest.raises(RLPEncodeError):
        encode_uint(bad)  # type: ignore[arg-type]


@PROPERTY
@given(st.integers(min_value=0, max_value=2**256 - 1))
def test_uint_property_round_trip(value: int) -> None:
    payload = encode_uint(value)
    assert decode_uint(payload) == value
    assert encode(payload) == pyrlp.encode(value)


# ---------------------------------------------------------------------------------------------
# Non-canonical and malformed input: every rejection is a DecodeError naming why


def test_T13_single_byte_wrapped_as_string_rejected() -> None:
    with pytest.raises(DecodeError, match="single byte 0x05"):
        decode(b"\x81\x05")
    assert decode(b"\x81\x80") == b"\x80"  # 0x80 and above do need the wrapper


def test_T13_long_form_for_short_string_rejected() -> None:
    with pytest.raises(DecodeError, match="long form used for a 3-byte string"):
        decode(b"\xb8\x03dog")
    with pytest.raises(DecodeError, match="long form used for a 55-byte string"):
        decode(b"\xb8\x37" + b"a" * 55)


def test_T13_long_form_for_short_list_rejected() -> None:
    with pytest.raises(DecodeError, match="long form used for a 4-byte list"):
        decode(b"\xf8\x04\x83dog")


def test_T13_length_with_leading_zeros_rejected() -> None:
    with pytest.raises(DecodeError, match="leading zeros"):
        decode(b"\xb9\x00\x38" + b"a" * 56)
    with pytest.raises(DecodeError, match="leading zeros"):
        decode(b"\xf9\x00\x38" + b"\xb7" + b"a" * 55)


def test_T10_trailing_bytes_rejected() -> None:
    with pytest.raises(DecodeError, match="1 trailing byte"):
        decode(b"\x83dog\x00")
    with pytest.raises(DecodeError, match="trailing"):
        decode(encode([b"cat"]) + encode(b"dog"))


@pytest.mark.parametrize(
    "truncated",
    [
        b"\x83do",  # short string
        b"\xb8",  # long string: length missing
        b"\xb9\x01",  # long string: length-of-length cut
        b"\xb8\x38" + b"a" * 55,  # long string: payload cut
        b"\xc8\x83cat\x83do",  # list payload cut
        b"\xf8",  # long list: length missing
        b"\xf8\x38" + b"\x00" * 10,  # long list: payload cut
    ],
)
def test_truncation_rejected(truncated: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(truncated)


def test_T10_child_overrunning_its_list_rejected() -> None:
    # The list claims 2 payload bytes, its child claims 3: without the parent bound the child
    # would swallow the following byte.
    with pytest.raises(DecodeError, match="past its end"):
        decode(b"\xc2\x83do" + b"g")


def test_nesting_depth_limit() -> None:
    deep: RLPItem = []
    for _ in range(MAX_DEPTH - 1):
        deep = [deep]
    assert decode(encode(deep)) == deep
    with pytest.raises(DecodeError, match="nested deeper"):
        decode(encode([deep]))
    # 5000 levels, built iteratively: without the bound this would exhaust the Python stack.
    nested = b"\xc0"
    for _ in range(5000):
        length = len(nested)
        if length < 56:
            nested = bytes((0xC0 + length,)) + nested
        else:
            size = length.to_bytes((length.bit_length() + 7) // 8, "big")
            nested = bytes((0xF7 + len(size),)) + size + nested
    with pytest.raises(DecodeError, match="nested deeper"):
        decode(nested)


def test_empty_and_non_bytes_input_rejected() -> None:
    with pytest.raises(DecodeError, match="empty"):
        decode(b"")
    with pytest.raises(DecodeError, match="must be bytes"):
        decode(bytearray(b"\x80"))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Properties


@PROPERTY
@given(items)
def test_round_trip_and_agreement_with_pyrlp(item: RLPItem) -> None:
    encoded = encode(item)
    assert decode(encoded) == item
    assert encoded == pyrlp.encode(item)


def assert_pyrlp_refuses(data: bytes, refused: DecodeError) -> None:
    """What we refuse, strict pyrlp refuses too — ours is exactly as strict, no more — except
    nesting deeper than MAX_DEPTH, a limit of ours that pyrlp does not have."""
    if "deeper than" in str(refused):
        return
    with pytest.raises(pyrlp.exceptions.DecodingError):
        pyrlp.decode(data, strict=True)


@PROPERTY
@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_canonically_or_raise(data: bytes) -> None:
    # Canonical means bijective: whatever is accepted re-encodes to exactly the input, and the
    # independent pyrlp decoder agrees on it.
    # And the other way round: what strict pyrlp accepts, we accept (no stricter than it).
    try:
        item = decode(data)
    except DecodeError as refused:
        assert_pyrlp_refuses(data, refused)
        return
    assert encode(item) == data
    assert pyrlp.decode(data, strict=True) == item


@PROPERTY
@given(items, st.data())
def test_mutated_encodings_decode_canonically_or_raise(item: RLPItem, data: st.DataObject) -> None:
    encoded = bytearray(encode(item))
    position = data.draw(st.integers(0, len(encoded) - 1))
    encoded[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(encoded)))
    for candidate in (bytes(encoded), bytes(encoded[:cut]), bytes(encoded) + b"\x00"):
        try:
            decoded = decode(candidate)
        except DecodeError as refused:
            assert_pyrlp_refuses(candidate, refused)
            continue
        assert encode(decoded) == candidate


@PROPERTY
@given(st.binary(max_size=40))
def test_decode_uint_accepts_exactly_the_minimal_forms(data: bytes) -> None:
    try:
        value = decode_uint(data)
    except DecodeError:
        assert data[:1] == b"\x00" or len(data) > 32
        return
    assert encode_uint(value) == data
