"""Substrate headers: strict decoding, blake2-256 hashing, GRANDPA consensus logs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from light_clients.errors import DecodeError, HeaderHashMismatch, VerificationError
from light_clients.hashing import blake2_256
from light_clients.substrate.header import (
    GRANDPA_ENGINE_ID,
    DigestItem,
    DigestKind,
    ForcedChange,
    OnDisabled,
    Pause,
    Resume,
    ScheduledChange,
    decode_grandpa_log,
    decode_header,
    encode_digest_item,
    encode_grandpa_log,
    encode_header,
    grandpa_changes,
    grandpa_logs,
    header_hash,
    verify_header_hash,
)
from light_clients.substrate.scale import NonCanonicalEncoding, TrailingBytes, encode_compact

VECTORS = Path(__file__).parent / "vectors" / "substrate"
PROPERTY = settings(max_examples=250, deadline=None)

KIND_NAMES = {
    "PreRuntime": DigestKind.PRE_RUNTIME,
    "Consensus": DigestKind.CONSENSUS,
    "Seal": DigestKind.SEAL,
    "Other": DigestKind.OTHER,
    "RuntimeEnvironmentUpdated": DigestKind.RUNTIME_ENVIRONMENT_UPDATED,
}


def load_vectors() -> dict[str, dict[str, Any]]:
    data = json.loads((VECTORS / "headers.json").read_text())
    return {vector["name"]: vector for vector in data["vectors"]}


HEADERS = load_vectors()


def raw_of(name: str) -> bytes:
    return bytes.fromhex(HEADERS[name]["scale"].removeprefix("0x"))


def hash_of(name: str) -> bytes:
    return bytes.fromhex(HEADERS[name]["blake2_256_hash"].removeprefix("0x"))


# --- real vectors -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(HEADERS))
def test_real_header_decodes_hashes_and_reencodes(name: str) -> None:
    vector = HEADERS[name]
    raw = raw_of(name)
    header = verify_header_hash(raw, hash_of(name))
    decoded = vector["decoded"]
    assert header.hash == hash_of(name) == header_hash(raw)
    assert header.number == decoded["number"]
    assert header.parent_hash.hex() == decoded["parent_hash"].removeprefix("0x")
    assert header.state_root.hex() == decoded["state_root"].removeprefix("0x")
    assert header.extrinsics_root.hex() == decoded["extrinsics_root"].removeprefix("0x")
    assert header.raw == raw
    assert [(item.kind, item.engine, len(item.data)) for item in header.digest] == [
        (KIND_NAMES[d["kind"]], d["engine"].encode(), d["data_len"]) for d in decoded["digest"]
    ]
    rebuilt = encode_header(
        header.parent_hash, header.number, header.state_root, header.extrinsics_root, header.digest
    )
    assert rebuilt == raw


def test_rococo_header_has_no_grandpa_logs() -> None:
    assert grandpa_logs(decode_header(raw_of("rococo-2021-04-08"))) == ()


@pytest.mark.parametrize(("name", "count"), [("polkadot-512271", 197), ("kusama-7472481", 900)])
def test_real_scheduled_change(name: str, count: int) -> None:
    (change,) = grandpa_changes(decode_header(raw_of(name)))
    assert isinstance(change, ScheduledChange)
    assert change.delay == 0
    assert len(change.next_authorities) == count
    assert len({key for key, _ in change.next_authorities}) == count
    assert all(len(key) == 32 and weight == 1 for key, weight in change.next_authorities)


def test_kusama_header_on_disabled_logs() -> None:
    logs = grandpa_logs(decode_header(raw_of("kusama-7472481")))
    assert [type(log) for log in logs] == [OnDisabled] * 11 + [ScheduledChange]


# --- rejections ---------------------------------------------------------------------------


def test_header_hash_mismatch_rejected() -> None:
    raw = bytearray(raw_of("rococo-2021-04-08"))
    raw[40] ^= 1  # inside the state root: still decodes, but is another block
    with pytest.raises(HeaderHashMismatch, match="expected 0xa61e7e1d"):
        verify_header_hash(bytes(raw), hash_of("rococo-2021-04-08"))
    with pytest.raises(HeaderHashMismatch):
        verify_header_hash(raw_of("rococo-2021-04-08"), bytes(32))
    with pytest.raises(DecodeError, match="32 bytes"):
        verify_header_hash(raw_of("rococo-2021-04-08"), b"\x00")


def test_T10_trailing_byte_after_header_rejected() -> None:
    with pytest.raises(TrailingBytes):
        decode_header(raw_of("rococo-2021-04-08") + b"\x00")


def test_T13_non_canonical_block_number_rejected() -> None:
    """The same header with its number in a longer compact mode is a second encoding with a
    different hash; the strict decoder refuses it."""
    header = decode_header(raw_of("rococo-2021-04-08"))
    canonical = encode_compact(header.number)
    assert canonical == bytes.fromhex("39b1")  # 11342 in the two-byte mode
    long_form = (header.number << 2 | 0b10).to_bytes(4, "little")
    raw = header.raw[:32] + long_form + header.raw[34:]
    with pytest.raises(NonCanonicalEncoding):
        decode_header(raw)


def test_block_number_above_u32_rejected() -> None:
    raw = bytes(32) + encode_compact(2**32) + bytes(64) + b"\x00"
    with pytest.raises(DecodeError, match="u32"):
        decode_header(raw)


@pytest.mark.parametrize("tag", [1, 2, 3, 7, 9, 255])
def test_T10_unknown_digest_item_rejected(tag: int) -> None:
    raw = bytes(32) + b"\x00" + bytes(64) + b"\x04" + bytes((tag,)) + b"\x00"
    with pytest.raises(DecodeError, match=f"unknown header digest item tag {tag}"):
        decode_header(raw)


def test_truncated_header_rejected() -> None:
    raw = raw_of("polkadot-512271")
    for cut in (0, 31, 33, 97, 200, len(raw) - 1):
        with pytest.raises(DecodeError):
            decode_header(raw[:cut])


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "u8"),
        (b"\x00", "variant 0"),
        (b"\x06\x00\x00\x00\x00", "variant 6"),
        (b"\x04\x01\x00\x00\x00\x00", "trailing"),
        (b"\x03\x01\x00\x00", "u64"),
        (b"\x01\x04" + bytes(32), "at least 40 bytes"),
        (b"\x01\x04" + bytes(40) + b"\x00", "need 4 bytes"),
    ],
)
def test_T10_malformed_grandpa_log_rejected(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_grandpa_log(payload)


def test_malformed_frnk_item_makes_grandpa_changes_raise() -> None:
    item = DigestItem(DigestKind.CONSENSUS, GRANDPA_ENGINE_ID, b"\x01\x04")
    header = decode_header(encode_header(bytes(32), 1, bytes(32), bytes(32), (item,)))
    with pytest.raises(DecodeError):
        grandpa_changes(header)


def test_grandpa_logs_of_other_engines_ignored() -> None:
    items = (
        DigestItem(DigestKind.CONSENSUS, b"BABE", b"\x01\x04"),  # not GRANDPA: not decoded
        DigestItem(DigestKind.PRE_RUNTIME, GRANDPA_ENGINE_ID, b"\xff"),  # not a consensus item
        DigestItem(DigestKind.CONSENSUS, GRANDPA_ENGINE_ID, encode_grandpa_log(Pause(3))),
    )
    header = decode_header(encode_header(bytes(32), 1, bytes(32), bytes(32), items))
    assert grandpa_logs(header) == (Pause(3),)
    assert grandpa_changes(header) == ()


def test_forced_change_decodes() -> None:
    change = ScheduledChange(((b"\x11" * 32, 5), (b"\x22" * 32, 7)), delay=10)
    log = ForcedChange(median=99, change=change)
    decoded = decode_grandpa_log(encode_grandpa_log(log))
    assert decoded == log
    assert isinstance(decoded, ForcedChange)
    assert decoded.next_authorities == change.next_authorities
    assert decoded.delay == 10


def test_encode_digest_item_requires_engine() -> None:
    with pytest.raises(ValueError):
        encode_digest_item(DigestItem(DigestKind.SEAL, None, b""))


# --- properties ---------------------------------------------------------------------------

hashes = st.binary(min_size=32, max_size=32)
engines = st.binary(min_size=4, max_size=4)
digest_items = st.one_of(
    st.builds(lambda d: DigestItem(DigestKind.OTHER, None, d), st.binary(max_size=40)),
    st.builds(
        DigestItem,
        st.sampled_from([DigestKind.CONSENSUS, DigestKind.SEAL, DigestKind.PRE_RUNTIME]),
        engines,
        st.binary(max_size=40),
    ),
    st.just(DigestItem(DigestKind.RUNTIME_ENVIRONMENT_UPDATED, None, b"")),
)
authority_lists = st.lists(st.tuples(hashes, st.integers(0, 2**64 - 1)), max_size=4).map(tuple)
scheduled = st.builds(ScheduledChange, authority_lists, st.integers(0, 2**32 - 1))
grandpa_log_values = st.one_of(
    scheduled,
    st.builds(ForcedChange, st.integers(0, 2**32 - 1), scheduled),
    st.builds(OnDisabled, st.integers(0, 2**64 - 1)),
    st.builds(Pause, st.integers(0, 2**32 - 1)),
    st.builds(Resume, st.integers(0, 2**32 - 1)),
)


@PROPERTY
@given(hashes, st.integers(0, 2**32 - 1), hashes, hashes, st.lists(digest_items, max_size=5))
def test_header_roundtrip(
    parent: bytes, number: int, state: bytes, extrinsics: bytes, digest: list[DigestItem]
) -> None:
    raw = encode_header(parent, number, state, extrinsics, tuple(digest))
    header = decode_header(raw)
    assert (header.parent_hash, header.number, header.state_root, header.extrinsics_root) == (
        parent,
        number,
        state,
        extrinsics,
    )
    assert header.digest == tuple(digest)
    assert header.hash == blake2_256(raw)


@PROPERTY
@given(grandpa_log_values)
def test_grandpa_log_roundtrip(log: ScheduledChange) -> None:
    assert decode_grandpa_log(encode_grandpa_log(log)) == log


@PROPERTY
@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_raise_decode_errors(data: bytes) -> None:
    for decoder in (decode_header, decode_grandpa_log):
        try:
            decoder(data)
        except VerificationError as exc:
            assert isinstance(exc, DecodeError)
            assert "\n" not in str(exc)


@PROPERTY
@given(st.data())
def test_mutated_real_header_never_passes_as_the_original(data: st.DataObject) -> None:
    raw = bytearray(raw_of("rococo-2021-04-08"))
    position = data.draw(st.integers(0, len(raw) - 1))
    raw[position] ^= data.draw(st.integers(1, 255))
    try:
        verify_header_hash(bytes(raw), hash_of("rococo-2021-04-08"))
    except HeaderHashMismatch:
        pass
    else:  # pragma: no cover - would be a blake2 collision
        pytest.fail("a mutated header verified against the original hash")
    try:
        header = decode_header(bytes(raw))
    except DecodeError:
        return
    assert header.hash != hash_of("rococo-2021-04-08")
