"""Receipts (light_clients.ethereum.receipt): decoding checked against the JSON-RPC receipts of
two mainnet blocks, receipts roots rebuilt and every receipt proven, the rlp(index) key quirk,
and the T1/T10/T13/T14 attacks."""

from __future__ import annotations

import contextlib
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import rlp as pyrlp  # test oracle only
from fakes import unhex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trie import HexaryTrie  # test oracle only

from light_clients.errors import DecodeError, IncompleteProof, VerificationError
from light_clients.ethereum.mpt import (
    MalformedNodeError,
    NodeHashMismatchError,
    UnusedProofNodesError,
    ZeroRootError,
    walk_proof,
)
from light_clients.ethereum.receipt import (
    Log,
    Receipt,
    ReceiptMismatchError,
    ReceiptNotFoundError,
    decode_receipt,
    find_log_positions,
    find_logs,
    receipt_key,
    verify_receipt,
)
from light_clients.ethereum.rlp import RLPItem, decode, encode, encode_uint
from light_clients.hashing import keccak256

VECTORS = Path(__file__).parent / "vectors" / "eth_receipts_tx_tries"
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TRANSFER = keccak256(b"Transfer(address,address,uint256)")
WETH_DEPOSIT = keccak256(b"Deposit(address,uint256)")
WETH = bytes.fromhex("c02aaa39b223fe8d0a0e5c4f27ead9083c756cc2")


def _load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text())


PROOFS = _load("receipts_21925176_proofs.json")
ROOT = unhex(PROOFS["receipts_root"])
ENCODED = [unhex(receipt) for receipt in PROOFS["all_receipts_encoded"]]
JSON_RECEIPTS: list[dict[str, Any]] = _load("helios_receipts_21925176.json")
VECTOR_PROOFS = {entry["index"]: entry for entry in PROOFS["proofs"]}


def _nodes(index: int) -> list[bytes]:
    return [unhex(node) for node in VECTOR_PROOFS[index]["proof_nodes"]]


def _pytrie_proof(trie: HexaryTrie, key: bytes) -> list[bytes]:
    """py-trie lists embedded nodes as separate entries; eth_getProof (and we) do not."""
    encoded = [pyrlp.encode(node) for node in trie.get_proof(key)]
    return [node for i, node in enumerate(encoded) if i == 0 or len(node) >= 32]


@cache
def _trie_21925176() -> HexaryTrie:
    trie = HexaryTrie(db={})
    for index, receipt in enumerate(ENCODED):
        trie[receipt_key(index)] = receipt
    return trie


def _encode_json_receipt(receipt: dict[str, Any]) -> bytes:
    """Consensus-encode a JSON-RPC receipt (the test's own writer, built on pyrlp)."""
    logs = [
        [unhex(log["address"]), [unhex(topic) for topic in log["topics"]], unhex(log["data"])]
        for log in receipt["logs"]
    ]
    status = b"\x01" if int(receipt["status"], 16) else b""
    body = pyrlp.encode(
        [status, int(receipt["cumulativeGasUsed"], 16), unhex(receipt["logsBloom"]), logs]
    )
    tx_type = int(receipt.get("type", "0x0"), 16)
    return body if tx_type == 0 else bytes((tx_type,)) + body


def _assert_matches_json(receipt: Receipt, expected: dict[str, Any]) -> None:
    assert receipt.tx_type == int(expected.get("type", "0x0"), 16)
    assert receipt.status == int(expected["status"], 16)
    assert receipt.post_state is None
    assert receipt.cumulative_gas_used == int(expected["cumulativeGasUsed"], 16)
    assert receipt.logs_bloom == unhex(expected["logsBloom"])
    assert receipt.logs == tuple(
        Log(unhex(log["address"]), tuple(unhex(t) for t in log["topics"]), unhex(log["data"]))
        for log in expected["logs"]
    )


# ---------------------------------------------------------------------------------------------
# Block 21925176 (Cancun): the vector proofs, all 202 receipts, the key quirk


@pytest.mark.parametrize("index", sorted(VECTOR_PROOFS))
def test_vector_receipt_proofs(index: int) -> None:
    vector = VECTOR_PROOFS[index]
    assert receipt_key(index) == unhex(vector["key_rlp"])
    inclusion = verify_receipt(ROOT, index, _nodes(index), unhex(vector["receipt_encoded"]))
    assert inclusion.index == index
    assert inclusion.receipts_root == ROOT
    assert inclusion.receipt.raw == ENCODED[index]
    _assert_matches_json(inclusion.receipt, JSON_RECEIPTS[index])
    assert inclusion.walk.node_hashes == tuple(keccak256(node) for node in _nodes(index))
    assert inclusion.walk.nodes[-1].kind == "leaf"


@pytest.mark.parametrize(
    ("index", "key"),
    [(0, "80"), (1, "01"), (127, "7f"), (128, "8180"), (201, "81c9"), (256, "820100")],
)
def test_receipt_key_is_rlp_of_the_index(index: int, key: str) -> None:
    assert receipt_key(index) == bytes.fromhex(key)


@pytest.mark.parametrize("bad", [-1, True, "1", 1.0])
def test_receipt_key_rejects_non_indices(bad: object) -> None:
    with pytest.raises(DecodeError):
        receipt_key(bad)  # type: ignore[arg-type]


def test_all_202_receipts_decode_as_their_json() -> None:
    assert len(ENCODED) == len(JSON_RECEIPTS) == 202
    types = set()
    for raw, expected in zip(ENCODED, JSON_RECEIPTS, strict=True):
        receipt = decode_receipt(raw)
        _assert_matches_json(receipt, expected)
        assert _encode_json_receipt(expected) == raw
        types.add(receipt.tx_type)
    assert types == {0, 2}


def test_receipts_root_rebuilt_and_every_receipt_proven() -> None:
    trie = _trie_21925176()
    assert trie.root_hash == ROOT
    for index, receipt in enumerate(ENCODED):
        proof = _pytrie_proof(trie, receipt_key(index))
        if index in VECTOR_PROOFS:
            assert proof == _nodes(index)
        assert verify_receipt(ROOT, index, proof, receipt).receipt.raw == receipt


def test_index_past_the_last_receipt_is_proven_absent() -> None:
    trie = _trie_21925176()
    proof = _pytrie_proof(trie, receipt_key(202))
    with pytest.raises(ReceiptNotFoundError, match="no receipt at index 202"):
        verify_receipt(ROOT, 202, proof, ENCODED[201])
    with pytest.raises(IncompleteProof):
        verify_receipt(ROOT, 202, proof[:1], ENCODED[201])


# ---------------------------------------------------------------------------------------------
# Block 11408438 (Muir Glacier): 130 legacy receipts and a transaction proof


def test_block_11408438_legacy_receipts_rebuilt_and_proven() -> None:
    tries = _load("block_11408438_tries.json")
    header = _load("snowbridge_header11408438.json")
    root = unhex(tries["receipts_root"])
    assert root == unhex(header["receiptsRoot"])
    receipts = _load("snowbridge_receipts11408438.json")
    encoded = [_encode_json_receipt(receipt) for receipt in receipts]
    trie = HexaryTrie(db={})
    for index, raw in enumerate(encoded):
        trie[receipt_key(index)] = raw
    assert trie.root_hash == root
    statuses = set()
    for index, raw in enumerate(encoded):
        inclusion = verify_receipt(root, index, _pytrie_proof(trie, receipt_key(index)), raw)
        _assert_matches_json(inclusion.receipt, receipts[index])
        statuses.add(inclusion.receipt.status)
    assert statuses == {0, 1}


def test_block_11408438_transaction_inclusion() -> None:
    tries = _load("block_11408438_tries.json")
    example = tries["example_tx_proof"]
    nodes = [unhex(node) for node in example["proof_nodes"]]
    key = receipt_key(example["index"])  # the transactions trie uses the same rlp(index) keys
    assert key == unhex(example["key_rlp"])
    walk = walk_proof(unhex(tries["transactions_root"]), key, nodes)
    assert walk.value == unhex(example["value"]) == unhex(tries["transactions_encoded"][5])


# ---------------------------------------------------------------------------------------------
# T13: one receipt, one index, one encoding


def test_T13_receipt_cannot_be_claimed_at_another_index() -> None:
    proof, receipt = _nodes(1), ENCODED[1]
    for index in range(300):
        if index == 1:
            continue
        # Another index is another key: the walk leaves index 1's path at the first branch
        # whose slot differs, where the next proof node is not the node that slot references.
        with pytest.raises(NodeHashMismatchError, match=r"proof node [12] hashes to 0x"):
            verify_receipt(ROOT, index, proof, receipt)


def test_T13_index_0_is_key_0x80_not_0x00() -> None:
    # A builder that keys by raw integer bytes would look up 0x00 for index 0.
    walk = walk_proof(ROOT, b"\x00", _pytrie_proof(_trie_21925176(), b"\x00"))
    assert walk.value is None
    assert verify_receipt(ROOT, 0, _nodes(0), ENCODED[0]).index == 0


def test_T13_noncanonical_index_keys_are_not_the_receipt() -> None:
    # 0x8101 (non-minimal rlp of 1) and 0x820080 (rlp(128) with a leading zero) are other keys.
    trie = _trie_21925176()
    for key in (b"\x81\x01", b"\x82\x00\x80", b"\x01\x00"):
        assert walk_proof(ROOT, key, _pytrie_proof(trie, key)).value is None


@pytest.mark.parametrize(
    ("first_byte", "error", "reason"),
    [
        (0x21, MalformedNodeError, "padding nibble is 1"),
        (0x2F, MalformedNodeError, "padding nibble is f"),
        (0x60, MalformedNodeError, "flag nibble 6"),
        (0x00, MalformedNodeError, "extension node with an empty path"),
        # An odd leaf path "0" is a different key (0x010): absent, never the receipt.
        (0x30, ReceiptNotFoundError, "leaf path 0 diverges"),
    ],
)
def test_T13_alternative_hex_prefix_of_the_leaf_rejected(
    first_byte: int, error: type[VerificationError], reason: str
) -> None:
    # The leaf of index 1 has an empty remaining path, hex-prefix 0x20. Re-encode it and fix
    # every hash above it, so that only the walker's strictness stands in the way.
    proof = _nodes(1)
    leaf = decode(proof[-1])
    assert isinstance(leaf, list) and leaf[0] == b"\x20"
    forged = encode([bytes((first_byte,)), leaf[1]])
    root, relinked = _relink(proof, len(proof) - 1, forged)
    with pytest.raises(error, match=reason):
        verify_receipt(root, 1, relinked, ENCODED[1])
    # Control: the relinked proof with the original leaf still proves the receipt.
    root, relinked = _relink(proof, len(proof) - 1, proof[-1])
    assert verify_receipt(root, 1, relinked, ENCODED[1]).receipt.raw == ENCODED[1]


def _relink(proof: list[bytes], index: int, new_node: bytes) -> tuple[bytes, list[bytes]]:
    """Replace proof node ``index`` and fix every hash reference above it."""
    nodes = list(proof)
    old_hash, nodes[index] = keccak256(nodes[index]), new_node
    new_hash = keccak256(new_node)
    for parent in range(index - 1, -1, -1):
        items = decode(nodes[parent])
        assert isinstance(items, list)
        items = [new_hash if item == old_hash else item for item in items]
        old_hash = keccak256(nodes[parent])
        nodes[parent] = encode(items)
        new_hash = keccak256(nodes[parent])
    return keccak256(nodes[0]), nodes


# ---------------------------------------------------------------------------------------------
# T10, T1 and mismatches


def test_T10_extra_node_appended_rejected() -> None:
    with pytest.raises(UnusedProofNodesError, match="T10"):
        verify_receipt(ROOT, 128, [*_nodes(128), _nodes(0)[-1]], ENCODED[128])


def test_T10_duplicate_node_rejected() -> None:
    proof = _nodes(128)
    with pytest.raises(UnusedProofNodesError, match="duplicates"):
        verify_receipt(ROOT, 128, [*proof[:2], proof[1], *proof[2:]], ENCODED[128])


def test_T10_node_from_another_path_inserted_rejected() -> None:
    proof = _nodes(128)
    proof.insert(3, _nodes(201)[3])  # index 201 shares nodes 0-2 with 128, not node 3
    with pytest.raises(NodeHashMismatchError, match="proof node 3"):
        verify_receipt(ROOT, 128, proof, ENCODED[128])


def test_T1_zero_receipts_root_rejected() -> None:
    with pytest.raises(ZeroRootError):
        verify_receipt(bytes(32), 0, _nodes(0), ENCODED[0])


def test_other_receipt_at_a_proven_index_rejected() -> None:
    with pytest.raises(ReceiptMismatchError, match="index 1"):
        verify_receipt(ROOT, 1, _nodes(1), ENCODED[0])


@PROPERTY
@given(st.sampled_from(sorted(VECTOR_PROOFS)), st.data())
def test_any_receipt_bit_flip_rejected(index: int, data: st.DataObject) -> None:
    receipt = bytearray(ENCODED[index])
    bit = data.draw(st.integers(0, len(receipt) * 8 - 1))
    receipt[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(ReceiptMismatchError):
        verify_receipt(ROOT, index, _nodes(index), bytes(receipt))


@PROPERTY
@given(st.sampled_from(sorted(VECTOR_PROOFS)), st.data())
def test_any_proof_byte_mutation_rejected(index: int, data: st.DataObject) -> None:
    proof = _nodes(index)
    node_index = data.draw(st.integers(0, len(proof) - 1))
    node = bytearray(proof[node_index])
    node[data.draw(st.integers(0, len(node) - 1))] ^= data.draw(st.integers(1, 255))
    proof[node_index] = bytes(node)
    with pytest.raises(VerificationError):
        verify_receipt(ROOT, index, proof, ENCODED[index])


@PROPERTY
@given(
    st.sampled_from(sorted(VECTOR_PROOFS)),
    st.sampled_from(sorted(VECTOR_PROOFS)),
    st.integers(0, 400),
)
def test_proofs_only_prove_their_own_index(proof_of: int, receipt_of: int, index: int) -> None:
    try:
        inclusion = verify_receipt(ROOT, index, _nodes(proof_of), ENCODED[receipt_of])
    except VerificationError:
        return
    assert index == proof_of == receipt_of
    assert inclusion.receipt.raw == ENCODED[index]


# ---------------------------------------------------------------------------------------------
# T14: logs are matched by emitter and topic


def test_T14_event_with_the_right_topic_from_another_emitter_not_matched() -> None:
    receipt = decode_receipt(ENCODED[0])
    pair = bytes.fromhex("045a9ea27dab8c0dd724b5da222358d0ec699988")
    # Both WETH and the 0x045a… token emit Transfer in this receipt.
    assert find_log_positions(receipt, WETH, TRANSFER) == (1,)
    assert find_log_positions(receipt, pair, TRANSFER) == (2, 3)
    # WETH's Deposit topic, but claimed from the other token: nothing.
    assert find_logs(receipt, pair, WETH_DEPOSIT) == ()
    assert find_logs(receipt, WETH, WETH_DEPOSIT) == (receipt.logs[0],)
    assert find_logs(receipt, bytes(20), TRANSFER) == ()


def test_T14_topic_in_a_later_position_is_not_topic0() -> None:
    emitter = b"\x11" * 20
    log = [emitter, [b"\x22" * 32, TRANSFER], b""]
    receipt = decode_receipt(
        b"\x02" + encode([b"\x01", b"\x01", bytes(256), [log, [emitter, [], b""]]])
    )
    assert find_logs(receipt, emitter, TRANSFER) == ()
    assert find_logs(receipt, emitter, b"\x22" * 32) == (receipt.logs[0],)


def test_find_logs_rejects_malformed_arguments() -> None:
    receipt = decode_receipt(ENCODED[0])
    with pytest.raises(DecodeError, match="20-byte"):
        find_logs(receipt, WETH[:19], TRANSFER)
    with pytest.raises(DecodeError, match="32 bytes"):
        find_logs(receipt, WETH, TRANSFER.hex())  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# The receipt codec


def _receipt_items(**changes: RLPItem) -> list[RLPItem]:
    log: RLPItem = [b"\x11" * 20, [b"\x22" * 32], b"data"]
    fields: dict[str, RLPItem] = {
        "status": b"\x01",
        "gas": encode_uint(21000),
        "bloom": bytes(256),
        "logs": [log],
    }
    fields.update(changes)
    return list(fields.values())


@pytest.mark.parametrize("tx_type", [1, 2, 3, 4])
def test_typed_receipts_decode(tx_type: int) -> None:
    receipt = decode_receipt(bytes((tx_type,)) + encode(_receipt_items()))
    assert receipt.tx_type == tx_type
    assert receipt.status == 1
    assert receipt.cumulative_gas_used == 21000
    assert receipt.logs[0].data == b"data"


def test_pre_byzantium_receipt_with_state_root() -> None:
    root = keccak256(b"post-state")
    receipt = decode_receipt(encode(_receipt_items(status=root)))
    assert receipt.post_state == root and receipt.status is None and receipt.tx_type == 0
    with pytest.raises(DecodeError, match="status"):
        decode_receipt(b"\x02" + encode(_receipt_items(status=root)))


def test_failed_transaction_status_zero() -> None:
    assert decode_receipt(encode(_receipt_items(status=b""))).status == 0


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty"),
        (b"\x05" + encode(_receipt_items()), "unknown receipt type 0x05"),
        (b"\x00" + encode(_receipt_items()), "unknown receipt type 0x00"),
        (b"\x7f" + encode(_receipt_items()), "unknown receipt type 0x7f"),
        (b"\x02" + encode(_receipt_items()) + b"\x00", "trailing"),
        (b"\x02" + encode(_receipt_items())[:-1], "receipt body"),
        (b"\x02" + encode(b"not a list"), "not a list of 4"),
        (encode(_receipt_items()[:3]), "not a list of 4"),
        (encode([*_receipt_items(), b""]), "not a list of 4"),
        (encode(_receipt_items(status=b"\x02")), "status"),
        (encode(_receipt_items(status=[b"\x01"])), "status"),
        (encode(_receipt_items(gas=b"\x00\x01")), "leading zero"),
        (encode(_receipt_items(gas=b"\x01" * 9)), "8-byte limit"),
        (encode(_receipt_items(bloom=bytes(255))), "logsBloom is not 256"),
        (encode(_receipt_items(logs=b"")), "logs field is not a list"),
        (encode(_receipt_items(logs=[[b"\x11" * 19, [], b""]])), "address is not 20"),
        (encode(_receipt_items(logs=[[b"\x11" * 20, [b"\x22" * 31], b""]])), "topic"),
        (encode(_receipt_items(logs=[[b"\x11" * 20, [b"\x22" * 32] * 5, b""]])), "at most 4"),
        (encode(_receipt_items(logs=[[b"\x11" * 20, b"", b""]])), "topics"),
        (encode(_receipt_items(logs=[[b"\x11" * 20, [], [b""]]])), "data is a list"),
        (encode(_receipt_items(logs=[[b"\x11" * 20, []]])), "not a list of 3"),
    ],
)
def test_malformed_receipts_rejected(raw: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_receipt(raw)


def test_receipt_argument_types() -> None:
    with pytest.raises(DecodeError, match="must be bytes"):
        decode_receipt(ENCODED[0].hex())  # type: ignore[arg-type]
    with pytest.raises(DecodeError, match="must be bytes"):
        verify_receipt(ROOT, 0, _nodes(0), bytearray(ENCODED[0]))  # type: ignore[arg-type]


_logs = st.lists(
    st.tuples(
        st.binary(min_size=20, max_size=20),
        st.lists(st.binary(min_size=32, max_size=32), max_size=4),
        st.binary(max_size=100),
    ),
    max_size=5,
)


@PROPERTY
@given(
    st.sampled_from([0, 1, 2, 3, 4]),
    st.sampled_from([b"", b"\x01"]),
    st.integers(0, 2**64 - 1),
    st.binary(min_size=256, max_size=256),
    _logs,
)
def test_generated_receipts_round_trip(
    tx_type: int,
    status: bytes,
    gas: int,
    bloom: bytes,
    logs: list[tuple[bytes, list[bytes], bytes]],
) -> None:
    body = pyrlp.encode([status, gas, bloom, [[a, t, d] for a, t, d in logs]])
    raw = body if tx_type == 0 else bytes((tx_type,)) + body
    receipt = decode_receipt(raw)
    assert (receipt.tx_type, receipt.status, receipt.cumulative_gas_used) == (
        tx_type,
        int(status == b"\x01"),
        gas,
    )
    assert receipt.logs == tuple(Log(a, tuple(t), d) for a, t, d in logs)


@PROPERTY
@given(st.binary(max_size=400))
def test_arbitrary_bytes_decode_or_raise_decode_error(raw: bytes) -> None:
    with contextlib.suppress(DecodeError):
        assert decode_receipt(raw).raw == raw


@PROPERTY
@given(st.sampled_from(ENCODED[:40]), st.data())
def test_mutated_real_receipts_decode_or_raise_decode_error(
    raw: bytes, data: st.DataObject
) -> None:
    mutated = bytearray(raw)
    mutated[data.draw(st.integers(0, len(mutated) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(mutated)))
    for candidate in (bytes(mutated), bytes(mutated[:cut])):
        with contextlib.suppress(DecodeError):
            assert decode_receipt(candidate).raw == candidate
