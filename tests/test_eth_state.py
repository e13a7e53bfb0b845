"""Merkle-Patricia walking (light_clients.ethereum.mpt) and eth_getProof verification
(light_clients.ethereum.state): the real mainnet proofs, absence proofs built from real nodes,
py-trie as an oracle on random tries, and the T1/T10/T13/T14 attacks."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import rlp as pyrlp  # test oracle only
from fakes import unhex
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from reach import Reach
from trie import HexaryTrie  # test oracle only

from light_clients.errors import DecodeError, IncompleteProof, VerificationError
from light_clients.ethereum.header import header_rlp_from_json, verify_header_hash
from light_clients.ethereum.mpt import (
    EMPTY_TRIE_ROOT,
    MalformedNodeError,
    NodeHashMismatchError,
    UnusedProofNodesError,
    ZeroRootError,
    verify_proof,
    walk_proof,
)
from light_clients.ethereum.rlp import RLPItem, decode, encode, encode_uint
from light_clients.ethereum.state import (
    EMPTY_CODE_HASH,
    AccountMismatchError,
    GetProof,
    StorageMismatchError,
    StorageProof,
    decode_account,
    parse_get_proof,
    verify_account,
    verify_get_proof,
)
from light_clients.hashing import keccak256

VECTORS = Path(__file__).parent / "vectors"
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _load(name: str) -> Any:
    return json.loads((VECTORS / "eth_state_proofs" / name).read_text())


MANIFEST = _load("vectors.json")
DEPOSIT_JSON = _load("helios_eth_getProof_deposit_contract_21925176.json")
MINER_JSON = _load("helios_eth_getProof_block_miner_21925176.json")
STATE_ROOT = unhex(MANIFEST["vectors"][0]["state_root"])
DEPOSIT = parse_get_proof(DEPOSIT_JSON)
MINER = parse_get_proof(MINER_JSON)
STORAGE = DEPOSIT.storage_proofs[0]

# keccak256 of this address starts 0x6fae96e: it shares the deposit contract's path (6fae969…)
# down to the 7th proof node, whose slot e is empty (see the eth_state_proofs PROVENANCE note).
ABSENT_ADDRESS = bytes.fromhex("000000000000000000000000000000000003a65f")


def _slot_with_prefix(prefix: str, start: int = 0) -> bytes:
    """The first slot number from ``start`` whose storage-trie key starts with ``prefix``."""
    for number in range(start, 1_000_000):
        slot = number.to_bytes(32, "big")
        if keccak256(slot).hex().startswith(prefix):
            return slot
    raise AssertionError(prefix)


def _absent_account(storage_hash: bytes, code_hash: bytes, **changes: Any) -> GetProof:
    fields: dict[str, Any] = {
        "address": ABSENT_ADDRESS,
        "balance": 0,
        "nonce": 0,
        "code_hash": code_hash,
        "storage_hash": storage_hash,
        "account_proof": DEPOSIT.account_proof[:7],
        "storage_proofs": (),
    }
    fields.update(changes)
    return GetProof(**fields)


def _with(get_proof: GetProof, **changes: Any) -> GetProof:
    fields = {name: getattr(get_proof, name) for name in GetProof.__slots__}
    fields.update(changes)
    return GetProof(**fields)


def _relink(proof: list[bytes], index: int, new_node: bytes) -> tuple[bytes, list[bytes]]:
    """Replace proof node ``index`` and fix every reference above it: a forged but
    hash-consistent proof, so only the walker's strictness can reject it."""
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


def _raw_list(encoded_children: list[bytes]) -> bytes:
    """A canonical list header around children encoded by hand (possibly non-canonically)."""
    payload = b"".join(encoded_children)
    if len(payload) < 56:
        return bytes((0xC0 + len(payload),)) + payload
    size = len(payload).to_bytes((len(payload).bit_length() + 7) // 8, "big")
    return bytes((0xF7 + len(size),)) + size + payload


def _pytrie_proof(trie: HexaryTrie, key: bytes) -> list[bytes]:
    """py-trie lists embedded nodes as separate entries; eth_getProof (and we) do not."""
    encoded = [pyrlp.encode(node) for node in trie.get_proof(key)]
    return [node for i, node in enumerate(encoded) if i == 0 or len(node) >= 32]


# ---------------------------------------------------------------------------------------------
# The real mainnet proofs (block 21925176)


def test_state_root_is_the_verified_headers_state_root() -> None:
    block = _load("helios_block_21925176.json")
    header = verify_header_hash(
        header_rlp_from_json(block), unhex(MANIFEST["vectors"][0]["block_hash"])
    )
    assert header.state_root == STATE_ROOT


def test_deposit_contract_account_and_storage_verify() -> None:
    verdict = verify_get_proof(STATE_ROOT, DEPOSIT)
    assert verdict.account is not None
    assert verdict.account.nonce == 1
    assert verdict.account.balance == int(DEPOSIT_JSON["balance"], 16)
    assert verdict.account.storage_hash == unhex(DEPOSIT_JSON["storageHash"])
    assert verdict.storage_root == verdict.account.storage_hash
    (slot,) = verdict.storage
    assert slot.key == (1).to_bytes(32, "big")
    assert slot.trie_key == keccak256(slot.key)
    assert slot.value == int(DEPOSIT_JSON["storageProof"][0]["value"], 16)
    # The walk records each node: hash, position in the proof, depth and nibbles consumed.
    walk = verdict.account_walk
    assert walk.node_hashes == tuple(keccak256(node) for node in DEPOSIT.account_proof)
    assert walk.node_hashes[0] == STATE_ROOT
    assert [node.kind for node in walk.nodes] == ["branch"] * 7 + ["leaf"]
    assert [node.depth for node in walk.nodes] == list(range(8))
    assert "".join(node.path for node in walk.nodes) == keccak256(DEPOSIT.address).hex()
    assert walk.absence is None
    assert [node.proof_index for node in slot.walk.nodes] == [0, 1, 2]


def test_deposit_contract_code_hash_matches_its_code() -> None:
    account = verify_account(STATE_ROOT, DEPOSIT)
    helios = _load("helios_account_deposit_contract_21925176.json")
    assert account is not None
    assert account.code_hash == keccak256(unhex(helios["code"]))
    assert account.storage_hash == unhex(helios["account"]["storageRoot"])


def test_block_miner_account_without_storage_proofs() -> None:
    verdict = verify_get_proof(STATE_ROOT, MINER)
    assert verdict.account is not None
    assert verdict.account.nonce == int(MINER_JSON["nonce"], 16)
    assert verdict.account.code_hash == EMPTY_CODE_HASH
    assert verdict.account.storage_hash == EMPTY_TRIE_ROOT
    assert verdict.storage == ()
    assert len(verdict.account_walk.nodes) == 9


@pytest.mark.parametrize(
    "negative", MANIFEST["negative_vectors_derived_here"], ids=lambda v: v["name"]
)
def test_manifest_negative_vectors(negative: dict[str, Any]) -> None:
    expected: type[VerificationError] = {
        "deposit_contract_wrong_balance": AccountMismatchError,
        "deposit_contract_wrong_storage_value": StorageMismatchError,
        "deposit_contract_wrong_state_root": NodeHashMismatchError,
        "deposit_contract_truncated_account_proof": IncompleteProof,
    }[negative["name"]]
    with pytest.raises(expected):
        verify_get_proof(unhex(negative["state_root"]), parse_get_proof(negative["proof"]))


def test_wrong_balance_message_names_both_values() -> None:
    with pytest.raises(AccountMismatchError) as info:
        verify_account(STATE_ROOT, _with(DEPOSIT, balance=DEPOSIT.balance + 1))
    message = str(info.value)
    assert "proven balance" in message and str(DEPOSIT.balance + 1) in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("field", "value"),
    [("nonce", 2), ("storage_hash", EMPTY_TRIE_ROOT), ("code_hash", EMPTY_CODE_HASH)],
)
def test_every_claimed_account_field_is_checked(field: str, value: object) -> None:
    with pytest.raises(AccountMismatchError, match="proven"):
        verify_get_proof(STATE_ROOT, _with(DEPOSIT, **{field: value}))


def test_T1_zero_state_root_rejected() -> None:
    with pytest.raises(ZeroRootError, match="T1"):
        verify_get_proof(bytes(32), DEPOSIT)
    with pytest.raises(ZeroRootError):
        walk_proof(bytes(32), b"\x01", [])


# ---------------------------------------------------------------------------------------------
# Absence, from real nodes


@pytest.mark.parametrize(
    ("storage_hash", "code_hash"),
    [(EMPTY_TRIE_ROOT, EMPTY_CODE_HASH), (bytes(32), bytes(32))],
    ids=["reth-infura-convention", "geth-erigon-convention"],
)
def test_absent_account_proven_by_an_empty_branch_slot(
    storage_hash: bytes, code_hash: bytes
) -> None:
    slot = StorageProof((7).to_bytes(32, "big"), 0, ())
    verdict = verify_get_proof(
        STATE_ROOT, _absent_account(storage_hash, code_hash, storage_proofs=(slot,))
    )
    assert verdict.account is None
    assert verdict.account_walk.value is None
    assert verdict.account_walk.absence == "branch slot e at depth 6 is empty"
    assert verdict.storage_root == EMPTY_TRIE_ROOT
    assert verdict.storage[0].value == 0


def test_absent_account_claimed_with_balance_rejected() -> None:
    with pytest.raises(AccountMismatchError, match="proven absent"):
        verify_account(STATE_ROOT, _absent_account(EMPTY_TRIE_ROOT, EMPTY_CODE_HASH, balance=1))


def test_absent_account_with_mixed_hash_conventions_rejected() -> None:
    with pytest.raises(AccountMismatchError, match="proven absent"):
        verify_account(STATE_ROOT, _absent_account(bytes(32), EMPTY_CODE_HASH))


def test_absent_account_storage_claim_rejected() -> None:
    # Storage of an absent account can only be the empty trie: a nonzero claim, or a real
    # proof smuggled in from another account, fails.
    claim = StorageProof(STORAGE.key, 5, ())
    with pytest.raises(StorageMismatchError, match="proven absent"):
        verify_get_proof(STATE_ROOT, _absent_account(bytes(32), bytes(32), storage_proofs=(claim,)))
    with pytest.raises(UnusedProofNodesError, match="empty trie"):
        verify_get_proof(
            STATE_ROOT, _absent_account(bytes(32), bytes(32), storage_proofs=(STORAGE,))
        )


def test_existing_account_cannot_pass_as_absent() -> None:
    with pytest.raises(AccountMismatchError, match="proven nonce 1, claimed 0"):
        verify_account(
            STATE_ROOT,
            _with(DEPOSIT, nonce=0, balance=0, storage_hash=bytes(32), code_hash=bytes(32)),
        )


def test_absent_storage_slot_via_empty_root_slot() -> None:
    # The deposit contract's storage root branch has slot 5 empty.
    slot = _slot_with_prefix("5")
    proof = (STORAGE.proof[0],)
    verdict = verify_get_proof(
        STATE_ROOT, _with(DEPOSIT, storage_proofs=(StorageProof(slot, 0, proof),))
    )
    assert verdict.storage[0].value == 0
    assert verdict.storage[0].walk.absence == "branch slot 5 at depth 0 is empty"
    with pytest.raises(StorageMismatchError, match="proven absent"):
        verify_get_proof(STATE_ROOT, _with(DEPOSIT, storage_proofs=(StorageProof(slot, 1, proof),)))


def test_absent_storage_slot_via_diverging_leaf() -> None:
    # Slot 1's key is b10e2d…; any other key under b1 reaches the same leaf and diverges.
    slot = _slot_with_prefix("b1", start=2)
    walk = walk_proof(DEPOSIT.storage_hash, keccak256(slot), STORAGE.proof)
    assert walk.value is None
    assert walk.absence is not None and walk.absence.startswith("leaf path 0e2d5276")
    assert [node.kind for node in walk.nodes] == ["branch", "branch", "leaf"]


def test_present_slot_claimed_zero_rejected() -> None:
    with pytest.raises(StorageMismatchError, match="claimed 0"):
        verify_get_proof(
            STATE_ROOT,
            _with(DEPOSIT, storage_proofs=(StorageProof(STORAGE.key, 0, STORAGE.proof),)),
        )


# ---------------------------------------------------------------------------------------------
# T14: a storage proof valid for another account


def test_T14_storage_proof_from_another_account_rejected() -> None:
    # The miner's storage is the empty trie: the deposit contract's real storage proof cannot
    # be attached to it.
    with pytest.raises(UnusedProofNodesError, match="empty trie"):
        verify_get_proof(STATE_ROOT, _with(MINER, storage_proofs=(STORAGE,)))


def test_T14_claiming_another_accounts_storage_root_rejected() -> None:
    forged = _with(MINER, storage_hash=DEPOSIT.storage_hash, storage_proofs=(STORAGE,))
    with pytest.raises(AccountMismatchError, match="storageHash"):
        verify_get_proof(STATE_ROOT, forged)


def test_T14_storage_proof_under_a_different_populated_root_rejected() -> None:
    trie = HexaryTrie(db={})
    for number in range(40):
        trie[keccak256(number.to_bytes(32, "big"))] = pyrlp.encode(number + 1)
    with pytest.raises(NodeHashMismatchError, match="the root"):
        walk_proof(trie.root_hash, keccak256(STORAGE.key), STORAGE.proof)


# ---------------------------------------------------------------------------------------------
# T10: every proof node must be used exactly once, in order


def test_T10_extra_node_appended_rejected() -> None:
    proof = (*DEPOSIT.account_proof, MINER.account_proof[-1])
    with pytest.raises(UnusedProofNodesError, match="1 node"):
        verify_account(STATE_ROOT, _with(DEPOSIT, account_proof=proof))


def test_T10_extra_node_inserted_rejected() -> None:
    proof = list(DEPOSIT.account_proof)
    proof.insert(3, MINER.account_proof[3])
    with pytest.raises(NodeHashMismatchError, match="proof node 3"):
        verify_account(STATE_ROOT, _with(DEPOSIT, account_proof=tuple(proof)))


def test_T10_duplicate_node_rejected() -> None:
    proof = (*DEPOSIT.account_proof[:4], DEPOSIT.account_proof[3], *DEPOSIT.account_proof[4:])
    with pytest.raises(UnusedProofNodesError, match="proof node 4 duplicates node 3"):
        verify_account(STATE_ROOT, _with(DEPOSIT, account_proof=proof))


def test_T10_storage_proof_with_unused_node_rejected() -> None:
    extra = StorageProof(STORAGE.key, STORAGE.value, (*STORAGE.proof, DEPOSIT.account_proof[-1]))
    with pytest.raises(UnusedProofNodesError, match="T10"):
        verify_get_proof(STATE_ROOT, _with(DEPOSIT, storage_proofs=(extra,)))


def test_T10_reordered_proof_rejected() -> None:
    proof = list(DEPOSIT.account_proof)
    proof[1], proof[2] = proof[2], proof[1]
    with pytest.raises(NodeHashMismatchError):
        walk_proof(STATE_ROOT, keccak256(DEPOSIT.address), proof)


def test_T10_embedded_nodes_listed_separately_rejected() -> None:
    # py-trie's own get_proof lists embedded (< 32 byte) nodes as entries of their own.
    trie = HexaryTrie(db={})
    for key, value in [(b"\x01", b"a"), (b"\x01\x02", b"b"), (b"\x01\x03", b"c")]:
        trie[key] = value
    raw = [pyrlp.encode(node) for node in trie.get_proof(b"\x01\x02")]
    assert any(len(node) < 32 for node in raw[1:])
    with pytest.raises(UnusedProofNodesError):
        walk_proof(trie.root_hash, b"\x01\x02", raw)
    assert walk_proof(trie.root_hash, b"\x01\x02", _pytrie_proof(trie, b"\x01\x02")).value == b"b"


def test_incomplete_proofs_are_never_absence() -> None:
    key = keccak256(DEPOSIT.address)
    for cut in range(len(DEPOSIT.account_proof)):
        with pytest.raises(IncompleteProof, match="neither proven present nor absent"):
            walk_proof(STATE_ROOT, key, DEPOSIT.account_proof[:cut])


# ---------------------------------------------------------------------------------------------
# T13: alternative encodings of the same path or node, made hash-consistent by relinking


def test_T13_hex_prefix_padding_nibble_rejected() -> None:
    leaf = decode(STORAGE.proof[-1])
    assert isinstance(leaf, list) and isinstance(leaf[0], bytes) and leaf[0][0] == 0x20
    forged_leaf = encode([bytes((0x25,)) + leaf[0][1:], leaf[1]])
    root, proof = _relink(list(STORAGE.proof), 2, forged_leaf)
    with pytest.raises(MalformedNodeError, match="padding nibble is 5"):
        walk_proof(root, keccak256(STORAGE.key), proof)
    # The untouched relink is accepted: only the padding nibble is at fault.
    root, proof = _relink(list(STORAGE.proof), 2, STORAGE.proof[2])
    assert walk_proof(root, keccak256(STORAGE.key), proof).value is not None


@pytest.mark.parametrize("flag", [4, 5, 8, 0xF])
def test_T13_hex_prefix_flag_nibble_rejected(flag: int) -> None:
    leaf = decode(DEPOSIT.account_proof[-1])
    assert isinstance(leaf, list) and isinstance(leaf[0], bytes) and leaf[0][0] >> 4 == 3
    path = bytes(((flag << 4) | (leaf[0][0] & 0x0F),)) + leaf[0][1:]
    root, proof = _relink(list(DEPOSIT.account_proof), 7, encode([path, leaf[1]]))
    with pytest.raises(MalformedNodeError, match=f"flag nibble {flag:x}"):
        walk_proof(root, keccak256(DEPOSIT.address), proof)


def test_T13_leaf_flag_turned_into_extension_rejected() -> None:
    leaf = decode(STORAGE.proof[-1])
    assert isinstance(leaf, list) and isinstance(leaf[0], bytes)
    as_extension = encode([b"\x00" + leaf[0][1:], leaf[1]])
    root, proof = _relink(list(STORAGE.proof), 2, as_extension)
    with pytest.raises(MalformedNodeError):
        walk_proof(root, keccak256(STORAGE.key), proof)


@pytest.mark.parametrize(
    ("slot", "rewrite", "reason"),
    [
        (0, lambda item: b"\xb8\x00", "length has leading zeros"),  # empty slot, long form
        (1, lambda item: b"\xb8\x20" + item, "long form used for a 32-byte string"),
        (1, lambda item: b"\xb9\x00\x20" + item, "length has leading zeros"),
    ],
)
def test_T13_noncanonical_rlp_inside_a_node_rejected(
    slot: int, rewrite: Callable[[bytes], bytes], reason: str
) -> None:
    # The same branch, one slot written in a non-canonical RLP form that a lenient decoder
    # would read as the same value.
    branch = decode(STORAGE.proof[1])
    assert isinstance(branch, list) and isinstance(branch[slot], bytes)
    children = [encode(item) for item in branch]
    children[slot] = rewrite(branch[slot])  # type: ignore[arg-type]
    root, proof = _relink(list(STORAGE.proof), 1, _raw_list(children))
    with pytest.raises(MalformedNodeError, match=reason):
        walk_proof(root, keccak256(STORAGE.key), proof)


def test_T13_large_node_embedded_instead_of_hashed_rejected() -> None:
    branch = decode(STORAGE.proof[1])
    leaf = decode(STORAGE.proof[2])
    assert isinstance(branch, list)
    index = branch.index(keccak256(STORAGE.proof[2]))
    branch[index] = leaf
    root, proof = _relink(list(STORAGE.proof[:2]), 1, encode(branch))
    with pytest.raises(MalformedNodeError, match="embeds a 69-byte node"):
        walk_proof(root, keccak256(STORAGE.key), proof)


def test_T13_noncanonical_key_is_a_different_key() -> None:
    # The account cannot be reached through a differently encoded key: padded, truncated or
    # shifted keys are proven absent or not covered, never given the account's value.
    key = keccak256(DEPOSIT.address)
    outcomes: list[object] = []
    for other in (key + b"\x00", key[:-1], b"\x00" + key):
        try:
            outcomes.append(verify_proof(STATE_ROOT, other, DEPOSIT.account_proof))
        except VerificationError as error:
            outcomes.append(type(error))
    assert outcomes == [None, None, NodeHashMismatchError]


# ---------------------------------------------------------------------------------------------
# Canonical node shapes (built by hand, hash-consistent)


def _single(node: RLPItem) -> tuple[bytes, list[bytes]]:
    encoded = encode(node)
    return keccak256(encoded), [encoded]


def test_branch_with_a_single_entry_rejected() -> None:
    branch: list[RLPItem] = [b""] * 17
    branch[3] = keccak256(b"child")
    root, proof = _single(branch)
    with pytest.raises(MalformedNodeError, match="1 entry"):
        walk_proof(root, b"\x30", proof)


def test_node_with_wrong_arity_rejected() -> None:
    for node in ([b"\x20", b"v", b"x"], [b""] * 16, [b""] * 18, []):
        root, proof = _single(node)
        with pytest.raises(MalformedNodeError, match="items"):
            walk_proof(root, b"\x01", proof)


def test_node_that_is_a_string_rejected() -> None:
    root, proof = _single(b"x" * 40)
    with pytest.raises(MalformedNodeError, match="RLP string"):
        walk_proof(root, b"\x01", proof)


def test_extension_must_lead_to_a_branch() -> None:
    leaf = encode([b"\x20" + b"\x11" * 31, b"v" * 40])
    extension = [b"\x00\x01", keccak256(leaf)]
    root, proof = _single(extension)
    with pytest.raises(MalformedNodeError, match="lead to a branch"):
        walk_proof(root, b"\x01" + b"\x11" * 31, [*proof, leaf])


def test_extension_with_empty_path_or_child_rejected() -> None:
    for node, reason in (
        ([b"\x00", keccak256(b"x")], "empty path"),
        ([b"\x11", b""], "without a child"),
        ([b"\x11", b"\x01" * 20], "20-byte string"),
        ([b"", keccak256(b"x")], "hex-prefix path is empty"),
        ([[b"\x11"], keccak256(b"x")], "path is a list"),
    ):
        root, proof = _single(node)
        with pytest.raises(MalformedNodeError, match=reason):
            walk_proof(root, b"\x12", proof)


def test_leaf_with_empty_or_list_value_rejected() -> None:
    for value in (b"", [b"v"]):
        root, proof = _single([b"\x20\x01", value])
        with pytest.raises(MalformedNodeError, match="non-empty"):
            walk_proof(root, b"\x01", proof)


def test_branch_slot_of_wrong_size_rejected() -> None:
    branch: list[RLPItem] = [b""] * 17
    branch[1] = keccak256(b"a")
    branch[2] = b"\x01" * 31
    root, proof = _single(branch)
    with pytest.raises(MalformedNodeError, match="branch slot 2 is a 31-byte string"):
        walk_proof(root, b"\x10", proof)


def test_branch_value_slot_must_be_a_string() -> None:
    branch: list[RLPItem] = [b""] * 17
    branch[1] = keccak256(b"a")
    branch[2] = keccak256(b"b")
    branch[16] = [b"x"]
    root, proof = _single(branch)
    with pytest.raises(MalformedNodeError, match="value slot"):
        walk_proof(root, b"\x10", proof)


def test_extensions_embedded_nodes_and_branch_values() -> None:
    # Short keys and values: an extension at the root, embedded (< 32 byte) nodes, and a key
    # (0x01) that ends at a branch holding its value.
    trie = HexaryTrie(db={})
    for key, value in [(b"\x01", b"a"), (b"\x01\x02", b"b"), (b"\x01\x03", b"c")]:
        trie[key] = value
    trie[b"\x02"] = b"d" * 40

    walk = walk_proof(trie.root_hash, b"\x01\x02", _pytrie_proof(trie, b"\x01\x02"))
    assert walk.value == b"b"
    kinds = [(node.kind, node.proof_index, node.path) for node in walk.nodes]
    assert kinds == [
        ("extension", 0, "0"),
        ("branch", 1, "1"),
        ("branch", 2, "0"),
        ("branch", None, "2"),  # embedded in its parent: no hash, no proof position
        ("leaf", None, ""),
    ]
    assert walk.nodes[3].hash is None and len(walk.nodes[3].encoding) < 32
    assert walk.node_hashes == tuple(keccak256(n) for n in _pytrie_proof(trie, b"\x01\x02"))

    at_branch = walk_proof(trie.root_hash, b"\x01", _pytrie_proof(trie, b"\x01"))
    assert at_branch.value == b"a" and at_branch.nodes[-1].kind == "branch"

    empty_value = walk_proof(trie.root_hash, b"\x01\x04", _pytrie_proof(trie, b"\x01\x04"))
    assert empty_value.value is None
    assert empty_value.absence == "branch slot 4 at depth 3 is empty"

    diverging = walk_proof(trie.root_hash, b"\x11", _pytrie_proof(trie, b"\x11"))
    assert diverging.value is None
    assert diverging.absence == "extension path 0 diverges from key nibbles 11"

    ends_early = walk_proof(trie.root_hash, b"", _pytrie_proof(trie, b""))
    assert ends_early.absence == "extension path 0 diverges from key nibbles (none)"


def test_key_ending_at_a_branch_without_value_is_absent() -> None:
    trie = HexaryTrie(db={})
    for key in (b"\x01\x02", b"\x01\x13"):  # they branch right after the nibbles 0, 1
        trie[key] = b"v" * 40
    walk = walk_proof(trie.root_hash, b"\x01", _pytrie_proof(trie, b"\x01"))
    assert walk.value is None
    assert walk.absence == "the key ends at a branch node with an empty value slot"


def test_empty_trie_root_proves_absence_with_no_nodes_or_its_root_node() -> None:
    """geth sends no node for an empty trie; anvil and erigon send the root node 0x80 itself."""
    for proof in ([], [b"\x80"]):
        walk = walk_proof(EMPTY_TRIE_ROOT, keccak256(b"anything"), proof)
        assert walk.value is None and walk.nodes == () and walk.absence == "the trie is empty"
    for extra in ([b"\x80", b"\x80"], [b"\xc0"], [b"\x80", b"\x01"]):
        with pytest.raises(UnusedProofNodesError, match="T10"):
            walk_proof(EMPTY_TRIE_ROOT, b"\x01", extra)


def test_walk_argument_types() -> None:
    key = keccak256(DEPOSIT.address)
    for root, walk_key, proof in (
        (STATE_ROOT[:31], key, DEPOSIT.account_proof),
        (STATE_ROOT, key.hex(), DEPOSIT.account_proof),
        (STATE_ROOT, key, DEPOSIT.account_proof[0]),
        (STATE_ROOT, key, [node.hex() for node in DEPOSIT.account_proof]),
        (STATE_ROOT, key, None),
    ):
        with pytest.raises(DecodeError):
            walk_proof(root, walk_key, proof)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Properties: py-trie as the oracle on random tries, and mutated real proofs

trie_contents = st.dictionaries(
    st.binary(min_size=1, max_size=4), st.binary(min_size=1, max_size=40), min_size=1, max_size=40
)


@PROPERTY
@given(trie_contents, st.binary(min_size=1, max_size=4))
def test_walk_agrees_with_pytrie_on_random_tries(
    contents: dict[bytes, bytes], probe: bytes
) -> None:
    # Short keys of varying length give extensions, embedded nodes and branch values.
    trie = HexaryTrie(db={})
    for key, value in contents.items():
        trie[key] = value
    for key in (probe, next(iter(contents))):
        walk = walk_proof(trie.root_hash, key, _pytrie_proof(trie, key))
        assert walk.value == (trie.get(key) or None)
        assert (walk.absence is None) == (walk.value is not None)


@PROPERTY
@given(
    st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=30, unique=True),
    st.integers(0, 10_000),
)
def test_storage_style_tries_round_trip(keys: list[bytes], seed: int) -> None:
    trie = HexaryTrie(db={})
    for number, key in enumerate(keys):
        trie[key] = pyrlp.encode(number + seed + 1)
    key = keys[seed % len(keys)]
    value = verify_proof(trie.root_hash, key, _pytrie_proof(trie, key))
    assert value == pyrlp.encode(keys.index(key) + seed + 1)
    absent = keccak256(key)
    assume(absent not in keys)
    assert verify_proof(trie.root_hash, absent, _pytrie_proof(trie, absent)) is None


@PROPERTY
@given(st.sampled_from(["account", "storage"]), st.data())
def test_T10_any_byte_mutation_of_a_real_proof_is_rejected(kind: str, data: st.DataObject) -> None:
    if kind == "account":
        root, key, proof = STATE_ROOT, keccak256(DEPOSIT.address), list(DEPOSIT.account_proof)
    else:
        root, key, proof = DEPOSIT.storage_hash, keccak256(STORAGE.key), list(STORAGE.proof)
    index = data.draw(st.integers(0, len(proof) - 1))
    node = bytearray(proof[index])
    position = data.draw(st.integers(0, len(node) - 1))
    node[position] ^= data.draw(st.integers(1, 255))
    proof[index] = bytes(node)
    # Every node is hash-linked, so the changed node itself is the one refused: by the root
    # hash for node 0, by its parent's reference for the others.
    with pytest.raises(NodeHashMismatchError, match=f"proof node {index} hashes to 0x"):
        walk_proof(root, key, proof)


def _pytrie_answer(root: bytes, key: bytes, proof: list[bytes]) -> bytes | None:
    """What py-trie (a second implementation) says ``proof`` proves: the value, or None."""
    found = HexaryTrie.get_from_proof(root, key, [pyrlp.decode(node) for node in proof])
    return found or None  # py-trie answers b"" for an absent key; no stored value is empty


def _refused_or_as_pytrie(reach: Reach, root: bytes, key: bytes, proof: list[bytes]) -> None:
    """Walk ``proof``: a VerificationError, or exactly the value (or absence) py-trie reads."""
    try:
        walk = walk_proof(root, key, proof)
    except VerificationError:
        reach.hit("refused")
        return
    reach.hit("proves")
    assert walk.value == _pytrie_answer(root, key, proof)


@st.composite
def _one_leaf_proofs(draw: st.DrawFn) -> tuple[list[bytes], bytes]:
    """A one-node trie (a leaf over a whole key, hex-prefix flag 0x20) and a key that is that
    leaf's key, extends it, shares a prefix with it, or not: proofs of a value and of absence."""
    leaf_key = draw(st.binary(min_size=1, max_size=33))
    value = draw(st.binary(min_size=1, max_size=40))
    key = draw(
        st.one_of(
            st.just(leaf_key),
            st.binary(max_size=33),
            # Longer than the leaf's path, or sharing all but its last byte: a walker that
            # compared paths loosely would report the leaf's value for these.
            st.binary(min_size=1, max_size=2).map(lambda tail: leaf_key + tail),
            st.binary(max_size=2).map(lambda tail: leaf_key[:-1] + tail),
        )
    )
    return [pyrlp.encode([b"\x20" + leaf_key, value])], key


def test_arbitrary_proofs_raise_only_verification_errors() -> None:
    """Arbitrary bytes, and small well-formed tries, either fail with a VerificationError or
    prove exactly what py-trie reads from the same nodes."""
    reach = Reach("proves", "refused")

    @PROPERTY
    @given(
        st.one_of(
            st.tuples(st.lists(st.binary(max_size=120), max_size=4), st.binary(max_size=33)),
            _one_leaf_proofs(),
        )
    )
    def check(case: tuple[list[bytes], bytes]) -> None:
        proof, key = case
        # With the first node's own hash as the root, the walk gets past the hash check and
        # must judge the bytes on their shape.
        root = keccak256(proof[0]) if proof else STATE_ROOT
        _refused_or_as_pytrie(reach, root, key, proof)

    check()
    reach.assert_reached()


def _rewritten_node(node: bytes) -> st.SearchStrategy[bytes]:
    """``node`` (a branch or leaf) with one item replaced: a value, a child reference, a path."""
    items = decode(node)
    assert isinstance(items, list)
    # An emptied slot or another 32-byte reference keeps the node well-formed, so a change off
    # the key's path leaves a valid (forged but consistent) proof: the "proves" half.
    item = st.one_of(st.just(b""), st.binary(min_size=32, max_size=32), st.binary(max_size=40))
    return st.tuples(st.integers(0, len(items) - 1), item).map(
        lambda change: encode([change[1] if i == change[0] else it for i, it in enumerate(items)])
    )


def test_relinked_arbitrary_node_raises_only_verification_errors() -> None:
    """A node replaced and every hash above it fixed (a forgery only the walker's strictness
    can catch): refused, or what py-trie reads from the same forged nodes."""
    reach = Reach("proves", "refused")

    @PROPERTY
    @given(st.data())
    def check(data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(STORAGE.proof) - 1))
        replacement = data.draw(
            st.one_of(
                st.binary(max_size=120),
                st.lists(st.one_of(st.binary(max_size=40), st.just(b"")), max_size=18).map(encode),
                _rewritten_node(STORAGE.proof[index]),
                _rewritten_node(STORAGE.proof[index]),
            )
        )
        root, proof = _relink(list(STORAGE.proof), index, replacement)
        _refused_or_as_pytrie(reach, root, keccak256(STORAGE.key), proof)

    check()
    reach.assert_reached()


# ---------------------------------------------------------------------------------------------
# Parsing eth_getProof JSON


def test_parse_real_response() -> None:
    assert DEPOSIT.address == unhex(DEPOSIT_JSON["address"])
    assert DEPOSIT.nonce == 1
    assert len(DEPOSIT.account_proof) == 8
    assert STORAGE.key == (1).to_bytes(32, "big")
    assert len(STORAGE.proof) == 3


@pytest.mark.parametrize("key_text", ["0x1", "0x01", "0x" + "00" * 31 + "01"])
def test_storage_key_forms_from_different_clients(key_text: str) -> None:
    response = copy.deepcopy(DEPOSIT_JSON)
    response["storageProof"][0]["key"] = key_text
    verdict = verify_get_proof(STATE_ROOT, parse_get_proof(response))
    assert verdict.storage[0].key == (1).to_bytes(32, "big")


def _mutate(response: dict[str, Any], path: tuple[Any, ...], value: object) -> dict[str, Any]:
    mutated = copy.deepcopy(response)
    target: Any = mutated
    for step in path[:-1]:
        target = target[step]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return mutated


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        (("address",), "0x" + "00" * 19, "address is 19 bytes"),
        (("address",), _DELETE, "address is missing"),
        (("balance",), "0x", "not a 0x-prefixed hex integer"),
        (("balance",), "12", "not a 0x-prefixed hex integer"),
        (("balance",), 12, "must be a hex string"),
        (("balance",), "0x" + "f" * 65, "more than 64 hex digits"),
        (("nonce",), "0x" + "1" * 17, "more than 16 hex digits"),
        (("codeHash",), "0x1234", "codeHash is 2 bytes"),
        (("storageHash",), None, "must be a hex string"),
        (("accountProof",), "0xf9", "accountProof must be a list"),
        (("accountProof", 0), "0xf9021", "accountProof\\[0\\] is not 0x-prefixed hex"),
        (("storageProof",), {}, "storageProof must be a list"),
        (("storageProof", 0), "0x01", "storageProof\\[0\\] must be an object"),
        (("storageProof", 0, "key"), "0x" + "01" * 33, "key has more than 64 hex digits"),
        (("storageProof", 0, "value"), _DELETE, "storageProof\\[0\\] field value is missing"),
        (("storageProof", 0, "proof"), ["0xzz"], "proof\\[0\\] is not 0x-prefixed hex"),
    ],
)
def test_malformed_responses_rejected(path: tuple[Any, ...], value: object, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        parse_get_proof(_mutate(DEPOSIT_JSON, path, value))


@pytest.mark.parametrize(
    ("text", "value"),
    [("0x0", 0), ("0x00", 0), ("0x0413", 0x413), ("0x413", 0x413), ("0x" + "00" * 31 + "05", 5)],
)
def test_storage_value_forms_from_different_clients(text: str, value: int) -> None:
    # Nethermind has returned zero-padded values (0x0413…, 0x00); the integer is what counts.
    response = copy.deepcopy(DEPOSIT_JSON)
    response["storageProof"][0]["value"] = text
    assert parse_get_proof(response).storage_proofs[0].value == value


@pytest.mark.parametrize(
    "changes",
    [
        {"address": DEPOSIT.address[:19]},
        {"storage_hash": DEPOSIT.storage_hash.hex()},
        {"code_hash": b""},
        {"storage_proofs": (StorageProof(b"\x01", 0, ()),)},
        {"storage_proofs": ("0x01",)},
    ],
)
def test_hand_built_get_proof_shapes_checked(changes: dict[str, Any]) -> None:
    with pytest.raises(DecodeError):
        verify_get_proof(STATE_ROOT, _with(DEPOSIT, **changes))


def test_parse_rejects_non_objects() -> None:
    with pytest.raises(DecodeError, match="must be an object"):
        parse_get_proof([DEPOSIT_JSON])  # type: ignore[arg-type]


_json_values = st.one_of(
    st.none(),
    st.integers(-5, 2**70),
    st.text(alphabet="0x123456789abcdefABCDEF", max_size=70),
    st.binary(max_size=40).map(lambda b: "0x" + b.hex()),
    st.lists(st.binary(max_size=8).map(lambda b: "0x" + b.hex()), max_size=3),
)
_paths = st.sampled_from(
    [
        ("address",),
        ("balance",),
        ("nonce",),
        ("codeHash",),
        ("storageHash",),
        ("accountProof",),
        ("accountProof", 7),
        ("storageProof",),
        ("storageProof", 0, "key"),
        ("storageProof", 0, "value"),
        ("storageProof", 0, "proof"),
        ("storageProof", 0, "proof", 2),
    ]
)


@PROPERTY
@given(_paths, _json_values)
def test_mutated_responses_parse_and_verify_or_raise(path: tuple[Any, ...], value: object) -> None:
    try:
        parsed = parse_get_proof(_mutate(DEPOSIT_JSON, path, value))
        verdict = verify_get_proof(STATE_ROOT, parsed)
    except VerificationError:
        return
    # A mutation that still verifies changed only the text form (or dropped storage proofs),
    # never the facts.
    assert _with(parsed, storage_proofs=()) == _with(DEPOSIT, storage_proofs=())
    assert set(parsed.storage_proofs) <= set(DEPOSIT.storage_proofs)
    assert verdict.account == verify_account(STATE_ROOT, DEPOSIT)


# ---------------------------------------------------------------------------------------------
# The account leaf codec


def test_decode_account_strictness() -> None:
    good = [encode_uint(1), encode_uint(5), EMPTY_TRIE_ROOT, EMPTY_CODE_HASH]
    assert decode_account(encode(good)).balance == 5
    cases: list[tuple[Callable[[list[RLPItem]], list[RLPItem]], str]] = [
        (lambda items: items[:3], "4 items"),
        (lambda items: [b"\x00\x01", *items[1:]], "leading zero"),
        (lambda items: [b"\x01" * 9, *items[1:]], "8-byte limit"),
        (lambda items: [*items[:2], b"\x01" * 31, items[3]], "storage root is not 32"),
        (lambda items: [*items[:3], [b"\x01"]], "code hash is not 32"),
    ]
    for change, reason in cases:
        with pytest.raises(DecodeError, match=reason):
            decode_account(encode(change(list(good))))


def test_storage_leaf_holding_zero_rejected() -> None:
    trie = HexaryTrie(db={})
    trie[keccak256(bytes(32))] = pyrlp.encode(0)  # 0x80: a stored zero, never canonical
    trie[keccak256((1).to_bytes(32, "big"))] = pyrlp.encode(1)
    get_proof = _with(
        DEPOSIT,
        storage_proofs=(
            StorageProof(bytes(32), 0, tuple(_pytrie_proof(trie, keccak256(bytes(32))))),
        ),
    )
    account = encode([encode_uint(1), encode_uint(0), trie.root_hash, EMPTY_CODE_HASH])
    state = HexaryTrie(db={})
    state[keccak256(DEPOSIT.address)] = account
    forged = _with(
        get_proof,
        balance=0,
        storage_hash=trie.root_hash,
        code_hash=EMPTY_CODE_HASH,
        account_proof=tuple(_pytrie_proof(state, keccak256(DEPOSIT.address))),
    )
    with pytest.raises(DecodeError, match="stores zero"):
        verify_get_proof(state.root_hash, forged)
