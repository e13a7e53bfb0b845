"""Ethereum headers (light_clients.ethereum.header): 18 real headers Frontier→Prague verified
from RLP and from JSON-RPC objects, chain linking, the two negative vectors, bit flips, and
malformed or inconsistent JSON."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import rlp as pyrlp  # test oracle only
from fakes import unhex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from light_clients.errors import DecodeError, HeaderHashMismatch
from light_clients.ethereum.header import (
    ParentHashMismatchError,
    decode_header,
    header_rlp_from_json,
    verify_chain_link,
    verify_header_hash,
)
from light_clients.ethereum.rlp import decode, encode
from light_clients.hashing import keccak256
from light_clients.hexstr import to_hex

VECTORS = Path(__file__).parent / "vectors"
PROPERTY = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

MAINNET_GENESIS = bytes.fromhex("d4e56740f876aef8c010b86a40d5f56745a118d0906a34e69aec8c0db1cb8fa3")


def _load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text())


HEADERS: list[dict[str, Any]] = _load("eth_headers/headers.json")["vectors"]
NEGATIVES: list[dict[str, Any]] = _load("eth_headers/headers_negative.json")["vectors"]
BY_NAME = {vector["name"]: vector for vector in HEADERS}
CANCUN = BY_NAME["mainnet-21925176-cancun"]
PRAGUE = BY_NAME["mainnet-23513000-prague"]

EXPECTED_FORK = {15: "Frontier-Berlin", 17: "Shanghai", 20: "Cancun", 21: "Prague"}

_JSON_NAMES = (
    ("parentHash", "parent_hash"),
    ("sha3Uncles", "ommers_hash"),
    ("miner", "coinbase"),
    ("stateRoot", "state_root"),
    ("transactionsRoot", "transactions_root"),
    ("receiptsRoot", "receipts_root"),
    ("logsBloom", "logs_bloom"),
    ("difficulty", "difficulty"),
    ("number", "number"),
    ("gasLimit", "gas_limit"),
    ("gasUsed", "gas_used"),
    ("timestamp", "timestamp"),
    ("extraData", "extra_data"),
    ("mixHash", "mix_hash"),
    ("nonce", "nonce"),
    ("baseFeePerGas", "base_fee_per_gas"),
    ("withdrawalsRoot", "withdrawals_root"),
    ("blobGasUsed", "blob_gas_used"),
    ("excessBlobGas", "excess_blob_gas"),
    ("parentBeaconBlockRoot", "parent_beacon_block_root"),
    ("requestsHash", "requests_hash"),
)


# Header fields that JSON-RPC writes as quantities (minimal hex); the rest are data (bytes).
_QUANTITIES = {
    "difficulty",
    "number",
    "gasLimit",
    "gasUsed",
    "timestamp",
    "baseFeePerGas",
    "blobGasUsed",
    "excessBlobGas",
}


def _json_from_rlp(raw: bytes) -> dict[str, str]:
    """An eth_getBlockByNumber object for a header, read by py-rlp (not by the decoder under
    test): the RLP list's items in the yellow paper's field order, as many as the fork has."""
    items = pyrlp.decode(raw)
    assert isinstance(items, list) and len(items) <= len(_JSON_NAMES)
    out: dict[str, str] = {}
    for (json_name, _), item in zip(_JSON_NAMES, items, strict=False):
        assert isinstance(item, bytes)
        out[json_name] = (
            hex(int.from_bytes(item, "big")) if json_name in _QUANTITIES else to_hex(item)
        )
    return out


def _cancun_json() -> dict[str, str]:
    return dict(CANCUN["fields"])


# ---------------------------------------------------------------------------------------------
# The real vectors


@pytest.mark.parametrize("vector", HEADERS, ids=[v["name"] for v in HEADERS])
def test_vector_verifies_from_rlp(vector: dict[str, Any]) -> None:
    raw = unhex(vector["rlp"])
    header = verify_header_hash(raw, unhex(vector["hash"]))
    assert header.hash == unhex(vector["hash"])
    assert header.number == vector["number"]
    assert header.rlp == raw
    field_count = len(decode(raw))
    if field_count == 16:
        assert header.fork == ("Paris" if header.difficulty == 0 else "London")
    else:
        assert header.fork == EXPECTED_FORK[field_count]
    # Every decoded field against the vector's JSON, or (the vectors that have none) against
    # py-rlp's reading of the same bytes.
    fields = vector.get("fields") or _json_from_rlp(raw)
    if fields:
        for json_name, attribute in _JSON_NAMES:
            if json_name in fields:
                expected = fields[json_name]
                actual = getattr(header, attribute)
                if isinstance(actual, int):
                    assert actual == int(expected, 16), json_name
                else:
                    assert actual == unhex(expected), json_name
            else:
                assert getattr(header, attribute) is None, attribute


@pytest.mark.parametrize("vector", HEADERS, ids=[v["name"] for v in HEADERS])
def test_vector_rebuilds_from_json(vector: dict[str, Any]) -> None:
    raw = unhex(vector["rlp"])
    # Vectors without JSON fields (the Shanghai payloads, Prague) get theirs from py-rlp, so
    # the expected object never comes from the decoder this checks.
    fields = vector.get("fields") or _json_from_rlp(raw)
    rebuilt = header_rlp_from_json(fields)
    assert rebuilt == raw
    assert verify_header_hash(rebuilt, unhex(vector["hash"])).number == vector["number"]


def test_full_rpc_block_object_with_extra_fields() -> None:
    # A real eth_getBlockByNumber result: hash, size, transactions, uncles … are ignored.
    block = _load("eth_state_proofs/helios_block_21925176.json")
    assert {"hash", "size", "transactions", "uncles"} <= block.keys()
    header = verify_header_hash(header_rlp_from_json(block), unhex(block["hash"]))
    assert header.state_root == unhex(block["stateRoot"])
    assert header.fork == "Cancun"


def test_snowbridge_rpc_header_with_total_difficulty() -> None:
    block = _load("eth_receipts_tx_tries/snowbridge_header11408438.json")
    header = verify_header_hash(header_rlp_from_json(block), unhex(block["hash"]))
    assert header.receipts_root == unhex(block["receiptsRoot"])
    assert header.number == 11408438


def test_chain_linking_of_blocks_1_to_5() -> None:
    chain = [
        verify_header_hash(
            unhex(BY_NAME[f"mainnet-{n}-frontier"]["rlp"]),
            unhex(BY_NAME[f"mainnet-{n}-frontier"]["hash"]),
        )
        for n in range(1, 6)
    ]
    assert chain[0].parent_hash == MAINNET_GENESIS
    for parent, child in itertools.pairwise(chain):
        verify_chain_link(parent, child)


def test_chain_link_rejects_a_gap_and_a_swap() -> None:
    one, two, three = (
        decode_header(unhex(BY_NAME[f"mainnet-{n}-frontier"]["rlp"])) for n in (1, 2, 3)
    )
    with pytest.raises(ParentHashMismatchError, match="block 3 has parentHash"):
        verify_chain_link(one, three)
    with pytest.raises(ParentHashMismatchError):
        verify_chain_link(two, one)
    with pytest.raises(ParentHashMismatchError, match="numbers must be consecutive"):
        verify_chain_link(one, dataclasses.replace(two, number=3))
    assert isinstance(ParentHashMismatchError("x"), HeaderHashMismatch)


def test_uncle_hash_of_block_9515350() -> None:
    uncle = unhex(BY_NAME["mainnet-9515348-istanbul-uncle"]["rlp"])
    block = decode_header(unhex(BY_NAME["mainnet-9515350-istanbul-with-uncle"]["rlp"]))
    assert block.ommers_hash == keccak256(encode([decode(uncle)]))


def test_paris_has_post_merge_fields() -> None:
    header = decode_header(unhex(BY_NAME["mainnet-15571241-paris"]["rlp"]))
    assert header.fork == "Paris"
    assert header.difficulty == 0
    assert header.nonce == bytes(8)
    assert header.base_fee_per_gas is not None


def test_prague_requests_hash() -> None:
    header = verify_header_hash(unhex(PRAGUE["rlp"]), unhex(PRAGUE["hash"]))
    assert header.requests_hash is not None and len(header.requests_hash) == 32
    assert header.parent_beacon_block_root is not None


# ---------------------------------------------------------------------------------------------
# Negative vectors and hash mismatches


@pytest.mark.parametrize("vector", NEGATIVES, ids=[v["name"] for v in NEGATIVES])
def test_negative_vectors_rejected(vector: dict[str, Any]) -> None:
    with pytest.raises(HeaderHashMismatch, match="expected 0x92dabfa3"):
        verify_header_hash(unhex(vector["rlp"]), unhex(vector["claimed_hash"]))


def test_cancun_without_parent_beacon_root_does_not_decode() -> None:
    missing = next(v for v in NEGATIVES if "missing" in v["name"])
    with pytest.raises(DecodeError, match="19 fields"):
        decode_header(unhex(missing["rlp"]))


def test_hash_mismatch_message_shows_both_hashes() -> None:
    raw = unhex(CANCUN["rlp"])
    wrong = bytes(32)
    with pytest.raises(HeaderHashMismatch) as info:
        verify_header_hash(raw, wrong)
    message = str(info.value)
    assert "\n" not in message
    assert keccak256(raw).hex() in message and wrong.hex() in message


@PROPERTY
@given(
    st.sampled_from(HEADERS),
    st.data(),
)
def test_any_bit_flip_is_rejected(vector: dict[str, Any], data: st.DataObject) -> None:
    raw = bytearray(unhex(vector["rlp"]))
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    # The hash is compared before anything is parsed: a flip anywhere, even one that leaves
    # well-formed RLP, is a hash mismatch naming the claimed hash.
    with pytest.raises(
        HeaderHashMismatch, match=f"header hashes to 0x[0-9a-f]{{64}}, expected {vector['hash']}"
    ):
        verify_header_hash(bytes(raw), unhex(vector["hash"]))
    # Decoding alone may accept the flipped bytes (a different, well-formed header) but must
    # never fail with anything but a DecodeError.
    with contextlib.suppress(DecodeError):
        decode_header(bytes(raw))


@PROPERTY
@given(st.binary(max_size=700))
def test_arbitrary_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    try:
        header = decode_header(data)
    except DecodeError:
        return
    assert header.rlp == data


@PROPERTY
@given(st.sampled_from(HEADERS), st.data())
def test_mutated_header_items_decode_or_raise(vector: dict[str, Any], data: st.DataObject) -> None:
    items = decode(unhex(vector["rlp"]))
    assert isinstance(items, list)
    index = data.draw(st.integers(0, len(items) - 1))
    items[index] = data.draw(
        st.one_of(st.binary(max_size=300), st.lists(st.binary(max_size=4), max_size=3))
    )
    try:
        header = decode_header(encode(items))
    except DecodeError:
        return
    assert header.rlp == encode(items)


# ---------------------------------------------------------------------------------------------
# Non-canonical RLP and wrong shapes


def test_T13_noncanonical_integer_rejected_even_when_hash_matches() -> None:
    items = decode(unhex(BY_NAME["mainnet-1-frontier"]["rlp"]))
    assert isinstance(items, list)
    items[8] = b"\x00\x01"  # block number 1 with a leading zero byte
    forged = encode(items)
    with pytest.raises(DecodeError, match=r"number.*leading zero"):
        verify_header_hash(forged, keccak256(forged))


def test_T13_noncanonical_rlp_length_rejected_even_when_hash_matches() -> None:
    raw = unhex(BY_NAME["mainnet-1-frontier"]["rlp"])
    # extraData is 25 bytes: short form 0x99. Re-encode it with the long form 0xb8 0x19.
    extra = bytes.fromhex("476574682f76312e302e302f6c696e75782f676f312e342e32")
    short = b"\x99" + extra
    assert raw.count(short) == 1
    body = raw[3:].replace(short, b"\xb8\x19" + extra)
    forged = b"\xf9" + len(body).to_bytes(2, "big") + body
    with pytest.raises(DecodeError, match="long form"):
        verify_header_hash(forged, keccak256(forged))


@pytest.mark.parametrize(
    ("index", "value", "reason"),
    [
        (0, b"\x01" * 31, "parentHash is 31 bytes"),
        (2, b"\x01" * 21, "miner is 21 bytes"),
        (6, b"\x00" * 255, "logsBloom is 255 bytes"),
        (14, b"\x00" * 9, "nonce is 9 bytes"),
        (8, b"\x01" * 9, "number: integer of 9 bytes"),
        (3, [b"\x01"], "stateRoot is a list"),
    ],
)
def test_wrong_field_shapes_rejected(index: int, value: Any, reason: str) -> None:
    items = decode(unhex(BY_NAME["mainnet-1-frontier"]["rlp"]))
    assert isinstance(items, list)
    items[index] = value
    with pytest.raises(DecodeError, match=reason):
        decode_header(encode(items))


@pytest.mark.parametrize("count", [14, 18, 19, 22])
def test_field_counts_no_fork_uses_rejected(count: int) -> None:
    items = decode(unhex(PRAGUE["rlp"]))
    assert isinstance(items, list)
    items = (items + [b"\x01"] * 5)[:count]
    with pytest.raises(DecodeError, match=f"{count} fields"):
        decode_header(encode(items))


def test_header_that_is_a_string_rejected() -> None:
    with pytest.raises(DecodeError, match="not a list"):
        decode_header(encode(b"header"))


def test_bad_argument_types() -> None:
    with pytest.raises(DecodeError, match="32 bytes"):
        verify_header_hash(unhex(CANCUN["rlp"]), b"\x00" * 31)
    with pytest.raises(DecodeError, match="must be bytes"):
        verify_header_hash(CANCUN["rlp"], unhex(CANCUN["hash"]))
    with pytest.raises(DecodeError, match="JSON object"):
        header_rlp_from_json(["not", "an", "object"])  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# JSON: inconsistent fork groups, missing fields, malformed hex


@pytest.mark.parametrize(
    ("drop", "reason"),
    [
        (("parentBeaconBlockRoot",), "Cancun header fields incomplete: missing parentBeacon"),
        (("blobGasUsed", "excessBlobGas", "parentBeaconBlockRoot"), None),  # -> Shanghai
        (("withdrawalsRoot",), "has Cancun fields .* lacks the Shanghai ones"),
        (("baseFeePerGas",), "has Shanghai fields .* lacks the London ones"),
        (("stateRoot",), "stateRoot is missing"),
        (("nonce",), "nonce is missing"),
    ],
)
def test_json_field_combinations(drop: tuple[str, ...], reason: str | None) -> None:
    fields = _cancun_json()
    for name in drop:
        del fields[name]
    if reason is None:
        # A consistent Shanghai-shaped object builds (and of course no longer hashes right).
        rebuilt = header_rlp_from_json(fields)
        assert decode_header(rebuilt).fork == "Shanghai"
        with pytest.raises(HeaderHashMismatch):
            verify_header_hash(rebuilt, unhex(CANCUN["hash"]))
    else:
        with pytest.raises(DecodeError, match=reason):
            header_rlp_from_json(fields)


def test_json_requests_hash_without_cancun_fields_rejected() -> None:
    fields = _cancun_json()
    for name in ("blobGasUsed", "excessBlobGas", "parentBeaconBlockRoot"):
        del fields[name]
    fields["requestsHash"] = "0x" + "11" * 32
    with pytest.raises(DecodeError, match=r"has Prague fields .* lacks the Cancun ones"):
        header_rlp_from_json(fields)


def test_json_null_optional_field_counts_as_absent() -> None:
    fields = dict(BY_NAME["mainnet-1-frontier"]["fields"])
    fields["baseFeePerGas"] = None
    fields["withdrawalsRoot"] = None
    assert header_rlp_from_json(fields) == unhex(BY_NAME["mainnet-1-frontier"]["rlp"])


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("number", "0x014e8d38", "not a hex quantity"),
        ("number", "14e8d38", "not a hex quantity"),
        ("number", "0x", "not a hex quantity"),
        ("number", "0x 14e8d38", "not a hex quantity"),
        ("number", "0x1_4e8d38", "not a hex quantity"),
        ("number", "0x-1", "not a hex quantity"),
        ("number", 21925176, "must be a hex string, got int"),
        ("number", "0x1" + "0" * 16, "exceeds 8 bytes"),
        ("gasUsed", "0xg", "not a hex quantity"),
        ("stateRoot", "0x7b3d", "stateRoot is 2 bytes, expected 32"),
        ("stateRoot", "0x" + "7" * 63, "not 0x-prefixed hex of whole bytes"),
        ("extraData", "0xabc", "not 0x-prefixed hex of whole bytes"),
        ("extraData", "0xab cd", "not 0x-prefixed hex of whole bytes"),
        ("miner", "0x" + "00" * 32, "miner is 32 bytes, expected 20"),
        ("nonce", "0x0", "nonce is not 0x-prefixed hex"),
        ("logsBloom", ["0x00"], "must be a hex string, got list"),
    ],
)
def test_json_malformed_values_rejected(name: str, value: object, reason: str) -> None:
    fields: dict[str, object] = dict(_cancun_json())
    fields[name] = value
    with pytest.raises(DecodeError, match=reason):
        header_rlp_from_json(fields)


def test_json_uppercase_hex_accepted() -> None:
    fields = _cancun_json()
    fields["stateRoot"] = "0x" + fields["stateRoot"][2:].upper()
    fields["number"] = "0x" + fields["number"][2:].upper()
    assert header_rlp_from_json(fields) == unhex(CANCUN["rlp"])


@PROPERTY
@given(
    st.sampled_from([v for v in HEADERS if v.get("fields")]),
    st.data(),
)
def test_json_mutations_build_or_raise_decode_error(
    vector: dict[str, Any], data: st.DataObject
) -> None:
    fields: dict[str, object] = dict(vector["fields"])
    name = data.draw(st.sampled_from([*sorted(fields), "requestsHash", "blobGasUsed"]))
    fields[name] = data.draw(
        st.one_of(
            st.none(),
            st.integers(),
            st.text(alphabet="0x123456789abcdefABCDEF _-g", max_size=70),
            st.binary(max_size=40).map(lambda b: "0x" + b.hex()),
        )
    )
    try:
        raw = header_rlp_from_json(fields)
    except DecodeError:
        return
    header = decode_header(raw)  # whatever builds must decode
    assert header.rlp == raw
