"""Substrate base-16 trie storage proofs (sp-trie NodeCodec, layouts V0 and V1).

Besides the real Polkadot-genesis proof, the properties build tries with an independent
reference encoder written here from sp-trie's ``node_header.rs`` / ``node_codec.rs``, so the
verifier is checked against a second implementation, not against itself.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fakes import unhex
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from reach import Reach

from light_clients.errors import (
    DecodeError,
    IncompleteProof,
    TrieProofError,
    VerificationError,
)
from light_clients.hashing import blake2_256
from light_clients.substrate.scale import encode_compact
from light_clients.substrate.trie import (
    EMPTY_TRIE_ROOT,
    DuplicateProofNode,
    InvalidStateRoot,
    InvalidTrieNode,
    NodeKind,
    TrieProof,
    decode_node,
    decode_storage_proof,
    read_storage,
    verify_storage_proof,
)

VECTORS = Path(__file__).parent / "vectors" / "substrate"
PROPERTY = settings(max_examples=200, deadline=None)


STORAGE = json.loads((VECTORS / "storage_proofs.json").read_text())
GENESIS = STORAGE["vectors"][0]
LARGE = STORAGE["vectors"][1]
GENESIS_ROOT = unhex(GENESIS["state_root"])
GENESIS_PROOF = decode_storage_proof(unhex(GENESIS["proof_scale"]))


# --- an independent reference codec and trie builder ---------------------------------------

LEAF, BRANCH, BRANCH_VALUE, HASHED_LEAF, HASHED_BRANCH = (
    (0x40, 6),
    (0x80, 6),
    (0xC0, 6),
    (0x20, 5),
    (0x10, 4),
)
V1_HASH_THRESHOLD = 33  # sp-core TRIE_VALUE_NODE_THRESHOLD: values this long are hashed


def ref_header(prefix_bits: tuple[int, int], nibble_count: int) -> bytes:
    """sp-trie ``size_and_prefix_iterator``."""
    prefix, bits = prefix_bits
    max_value = (1 << bits) - 1
    first = min(max_value - 1, nibble_count)
    if first == nibble_count:
        return bytes((prefix | nibble_count,))
    out = [prefix | max_value]
    rem = nibble_count - first
    while rem >= 256:
        out.append(255)
        rem -= 255
    out.append(rem - 1)
    return bytes(out)


def ref_partial(nibbles: str) -> bytes:
    return bytes.fromhex(("0" + nibbles) if len(nibbles) % 2 else nibbles)


@dataclass
class RefNode:
    partial: str
    value: bytes | None = None
    children: dict[int, RefNode] = field(default_factory=dict)
    encoded: bytes = b""
    value_hashed: bool = False


def ref_build(items: dict[str, bytes], depth: int = 0) -> RefNode:
    """A canonical trie over ``items`` (nibble-hex key -> value), all sharing ``[:depth]``."""
    keys = sorted(items)
    if len(keys) == 1:
        return RefNode(partial=keys[0][depth:], value=items[keys[0]])
    first, last = keys[0][depth:], keys[-1][depth:]
    common = 0
    while common < min(len(first), len(last)) and first[common] == last[common]:
        common += 1
    end = depth + common
    node = RefNode(partial=keys[0][depth:end])
    groups: dict[int, dict[str, bytes]] = {}
    for key in keys:
        if len(key) == end:
            node.value = items[key]
        else:
            groups.setdefault(int(key[end], 16), {})[key] = items[key]
    node.children = {index: ref_build(group, end + 1) for index, group in groups.items()}
    return node


def ref_encode(node: RefNode, v1: bool, db: dict[bytes, bytes]) -> bytes:
    """Encode bottom-up; every hash-referenced node (and hashed value) goes into ``db``."""
    value_part = b""
    hashed = node.value is not None and v1 and len(node.value) >= V1_HASH_THRESHOLD
    node.value_hashed = hashed
    if node.value is not None:
        if hashed:
            value_hash = blake2_256(node.value)
            db[value_hash] = node.value
            value_part = value_hash
        else:
            value_part = encode_compact(len(node.value)) + node.value
    partial = ref_partial(node.partial)
    if not node.children:
        kind = HASHED_LEAF if hashed else LEAF
        node.encoded = ref_header(kind, len(node.partial)) + partial + value_part
        return node.encoded
    kind = BRANCH if node.value is None else HASHED_BRANCH if hashed else BRANCH_VALUE
    bitmap = 0
    refs = b""
    for index in range(16):
        child = node.children.get(index)
        if child is None:
            continue
        bitmap |= 1 << index
        encoded = ref_encode(child, v1, db)
        if len(encoded) >= 32:
            child_hash = blake2_256(encoded)
            db[child_hash] = encoded
            refs += encode_compact(32) + child_hash
        else:
            refs += encode_compact(len(encoded)) + encoded
    node.encoded = (
        ref_header(kind, len(node.partial))
        + partial
        + bitmap.to_bytes(2, "little")
        + value_part
        + refs
    )
    return node.encoded


@dataclass
class RefTrie:
    root_hash: bytes
    root: RefNode | None
    db: dict[bytes, bytes]

    def proof_and_value(self, key: bytes) -> tuple[list[bytes], bytes | None]:
        """The minimal proof for ``key`` and its value (None if absent)."""
        if self.root is None:
            return [], None
        nibbles, position, node = key.hex(), 0, self.root
        proof = [node.encoded]
        while True:
            if not nibbles.startswith(node.partial, position):
                return proof, None
            position += len(node.partial)
            if position == len(nibbles):
                if node.value is not None and node.value_hashed:
                    proof.append(node.value)
                return proof, node.value
            child = node.children.get(int(nibbles[position], 16))
            if child is None:
                return proof, None
            position += 1
            if len(child.encoded) >= 32:
                proof.append(child.encoded)
            node = child


def ref_trie(items: dict[bytes, bytes], v1: bool) -> RefTrie:
    if not items:
        return RefTrie(EMPTY_TRIE_ROOT, None, {})
    root = ref_build({key.hex(): value for key, value in items.items()})
    db: dict[bytes, bytes] = {}
    encoded = ref_encode(root, v1, db)
    root_hash = blake2_256(encoded)
    db[root_hash] = encoded
    return RefTrie(root_hash, root, db)


def ref_decode(node: bytes) -> tuple[str, dict[int, bytes], bytes | None, bytes | None]:
    """Reference node decoder for walking the real proofs: partial, children, value, hash."""
    first = node[0]
    kind, bits = next(
        (name, bits)
        for (prefix, bits), name in zip(
            (LEAF, BRANCH, BRANCH_VALUE, HASHED_LEAF, HASHED_BRANCH),
            ("leaf", "branch", "branch_value", "hashed_leaf", "hashed_branch"),
            strict=True,
        )
        if first >> bits == prefix >> bits
    )
    count, pos = first & ((1 << bits) - 1), 1
    if count == (1 << bits) - 1:
        while node[pos] == 255:
            count, pos = count + 255, pos + 1
        count, pos = count + node[pos], pos + 1
    partial = node[pos : pos + (count + 1) // 2].hex()[count % 2 :]
    pos += (count + 1) // 2
    bitmap = 0
    if "branch" in kind:
        bitmap, pos = int.from_bytes(node[pos : pos + 2], "little"), pos + 2

    def compact() -> int:
        nonlocal pos
        mode = node[pos] & 3
        width = (1, 2, 4)[mode]
        value = int.from_bytes(node[pos : pos + width], "little") >> 2
        pos += width
        return value

    value = value_hash = None
    if kind.startswith("hashed"):
        value_hash, pos = node[pos : pos + 32], pos + 32
    elif kind != "branch":
        length = compact()
        value, pos = node[pos : pos + length], pos + length
    children = {}
    for index in range(16):
        if bitmap >> index & 1:
            length = compact()
            children[index], pos = node[pos : pos + length], pos + length
    assert pos == len(node)
    return partial, children, value, value_hash


def ref_enumerate(root: bytes, nodes: list[bytes]) -> dict[bytes, bytes]:
    """Every key whose value the proof fully contains, found with the reference decoder."""
    by_hash = {blake2_256(node): node for node in nodes}
    found: dict[bytes, bytes] = {}
    stack = [(by_hash[root], "")]
    while stack:
        encoded, prefix = stack.pop()
        partial, children, value, value_hash = ref_decode(encoded)
        path = prefix + partial
        if value_hash is not None and value_hash in by_hash:
            value = by_hash[value_hash]
        complete = value_hash is None or value_hash in by_hash
        if value is not None and len(path) % 2 == 0 and complete:
            found[bytes.fromhex(path)] = value
        for index, ref in children.items():
            child = by_hash.get(ref) if len(ref) == 32 else ref
            if child is not None:
                stack.append((child, path + format(index, "x")))
    return found


# --- the real Polkadot-genesis proof ------------------------------------------------------


def test_storage_proof_scale_matches_node_list() -> None:
    assert list(GENESIS_PROOF) == [unhex(node) for node in GENESIS["proof_nodes"]]


def test_genesis_proof_value() -> None:
    query = GENESIS["queries"][0]
    read = verify_storage_proof(GENESIS_ROOT, GENESIS_PROOF, unhex(query["key"]))
    assert read.value == unhex(query["expected_value"])
    assert not read.hashed_value
    assert read.node_hashes[0] == GENESIS_ROOT
    assert [step.kind for step in read.steps] == [NodeKind.BRANCH_NO_VALUE] * 5 + [NodeKind.LEAF]
    assert len(read.node_hashes) == 6  # every node of the proof is on this key's path
    assert read.steps[-1].depth + len(read.steps[-1].partial) == 2 * len(unhex(query["key"]))
    assert read_storage(GENESIS_ROOT, GENESIS_PROOF, unhex(query["key"])) == read.value


def test_genesis_proof_absence() -> None:
    query = GENESIS["queries"][1]
    assert query["expected_value"] is None
    read = verify_storage_proof(GENESIS_ROOT, GENESIS_PROOF, unhex(query["key"]))
    assert read.value is None
    assert read.steps[-1].kind is NodeKind.LEAF


def test_T1_key_not_covered_is_incomplete_not_absent() -> None:
    query = GENESIS["queries"][2]
    with pytest.raises(IncompleteProof, match="not in the proof"):
        verify_storage_proof(GENESIS_ROOT, GENESIS_PROOF, unhex(query["key"]))


def test_T1_zero_root_rejected() -> None:
    """The vector expects IncompleteProof; we reject the zero root before looking at nodes."""
    query = GENESIS["queries"][3]
    with pytest.raises(InvalidStateRoot, match="zero"):
        verify_storage_proof(unhex(query["root"]), GENESIS_PROOF, unhex(query["key"]))
    with pytest.raises(InvalidStateRoot):
        verify_storage_proof(GENESIS_ROOT[:31], GENESIS_PROOF, b"")


def test_T1_empty_proof_is_incomplete() -> None:
    with pytest.raises(IncompleteProof, match="root node"):
        verify_storage_proof(GENESIS_ROOT, [], b"\x00")


def test_genesis_proof_order_and_unused_nodes_do_not_matter() -> None:
    query = GENESIS["queries"][0]
    shuffled = [*GENESIS_PROOF[::-1], b"\x99" * 40]  # plus a node nothing references
    read = verify_storage_proof(GENESIS_ROOT, shuffled, unhex(query["key"]))
    assert read.value == unhex(query["expected_value"])


def test_T10_duplicate_proof_node_rejected() -> None:
    with pytest.raises(DuplicateProofNode, match="listed twice"):
        TrieProof([*GENESIS_PROOF, GENESIS_PROOF[2]])


def test_proof_input_types() -> None:
    with pytest.raises(DecodeError):
        TrieProof(b"\x00")  # type: ignore[arg-type]
    with pytest.raises(DecodeError):
        TrieProof(["00"])  # type: ignore[list-item]
    proof = TrieProof([bytearray(node) for node in GENESIS_PROOF])  # type: ignore[misc]
    assert len(proof) == 6 and GENESIS_ROOT in proof
    with pytest.raises(DecodeError):
        proof.read(GENESIS_ROOT, "key")  # type: ignore[arg-type]


def test_large_real_proof_against_reference_walker() -> None:
    nodes = list(decode_storage_proof(unhex(LARGE["proof_scale"])))
    assert len(nodes) == LARGE["n_nodes"]
    root = unhex(LARGE["state_root"])
    found = ref_enumerate(root, nodes)
    assert len(found) >= 10
    proof = TrieProof(nodes)
    for key, value in found.items():
        assert proof.read(root, key).value == value
    # Extending a proven key by a byte: proven absent or not covered, never a value.
    for key in found:
        with contextlib.suppress(IncompleteProof):
            assert proof.read(root, key + b"\x00").value is None


# --- crafted nodes: canonical encoding only -----------------------------------------------


def single_leaf_trie(key: bytes, value: bytes) -> tuple[bytes, bytes]:
    trie = ref_trie({key: value}, v1=False)
    assert trie.root is not None
    return trie.root_hash, trie.root.encoded


def test_T10_trailing_bytes_in_a_node_rejected() -> None:
    _, node = single_leaf_trie(b"\xab", b"value")
    forged = node + b"\x00"
    with pytest.raises(InvalidTrieNode, match="trailing"):
        verify_storage_proof(blake2_256(forged), [forged], b"\xab")


def test_T13_nonzero_padding_nibble_rejected() -> None:
    # Keys 0xa1 and 0xb2 give a root branch with two inline one-nibble leaves.
    trie = ref_trie({b"\xa1": b"x", b"\xb2": b"y"}, v1=False)
    assert trie.root is not None
    node = trie.root.encoded
    leaf = bytes.fromhex("410104") + b"x"
    assert leaf in node
    forged = node.replace(leaf, bytes.fromhex("41f104") + b"x")  # padding nibble 0xf
    assert verify_storage_proof(trie.root_hash, [node], b"\xa1").value == b"x"
    with pytest.raises(InvalidTrieNode, match="padding"):
        verify_storage_proof(blake2_256(forged), [forged], b"\xa1")


def test_T13_non_canonical_value_length_rejected() -> None:
    _, node = single_leaf_trie(b"\xab", b"")
    assert node == bytes.fromhex("42ab00")
    forged = bytes.fromhex("42ab0100")  # length 0 as a two-byte compact
    with pytest.raises(InvalidTrieNode, match="fits in 1"):
        verify_storage_proof(blake2_256(forged), [forged], b"\xab")


def test_T13_oversized_inline_child_rejected() -> None:
    """A 33-byte node must be referenced by its hash; inlining it is a second encoding."""
    big_leaf = bytes.fromhex("410b") + encode_compact(30) + b"v" * 30
    assert len(big_leaf) == 33
    node = bytes.fromhex("800004") + encode_compact(33) + big_leaf  # child 0xa
    with pytest.raises(InvalidTrieNode, match="inline reference of 33 bytes"):
        verify_storage_proof(blake2_256(node), [node], b"\xab")
    # A hash reference whose length 32 is written in the two-byte compact mode.
    two_byte_length = bytes.fromhex("8000048100") + blake2_256(big_leaf)
    with pytest.raises(InvalidTrieNode, match="not a one-byte compact"):
        verify_storage_proof(blake2_256(two_byte_length), [two_byte_length, big_leaf], b"\xab")
    canonical = bytes.fromhex("800004") + encode_compact(32) + blake2_256(big_leaf)
    assert verify_storage_proof(blake2_256(canonical), [canonical, big_leaf], b"\xab").value == (
        b"v" * 30
    )


@pytest.mark.parametrize(
    ("node", "reason"),
    [
        (bytes.fromhex("800000"), "empty child bitmap"),
        (bytes.fromhex("01"), "not a storage-proof node"),
        (bytes.fromhex("0f00"), "not a storage-proof node"),
        (bytes.fromhex("0000"), "trailing"),
        (bytes.fromhex("80"), "ends after its header"),
        (bytes.fromhex("c0ffff"), "input ends"),
        (bytes.fromhex("c0ffff04"), "need 1 bytes"),
        (bytes.fromhex("8000010000"), "empty inline reference"),
        (bytes.fromhex("8000"), "before its child bitmap"),
        (bytes.fromhex("800001"), "before its reference"),
        (bytes.fromhex("8000010801"), "past the node's end"),
        (bytes.fromhex("7f"), "inside its nibble count"),
        (bytes.fromhex("7fff"), "inside its nibble count"),
        (bytes.fromhex("4400"), "past the node's end"),
        (bytes.fromhex("20" + "00" * 31), "inside its value hash"),
        (bytes.fromhex("400000"), "1 trailing bytes"),
        (b"", "empty bytes"),
    ],
)
def test_T10_malformed_nodes_rejected(node: bytes, reason: str) -> None:
    with pytest.raises(InvalidTrieNode, match=reason):
        decode_node(node)


def test_empty_node_below_root_rejected() -> None:
    inline_empty = bytes.fromhex("800004") + encode_compact(1) + b"\x00"
    with pytest.raises(InvalidTrieNode, match="below the root"):
        verify_storage_proof(blake2_256(inline_empty), [inline_empty], b"\xab")
    hashed_empty = bytes.fromhex("800004") + encode_compact(32) + EMPTY_TRIE_ROOT
    with pytest.raises(InvalidTrieNode, match="below the root"):
        verify_storage_proof(blake2_256(hashed_empty), [hashed_empty, b"\x00"], b"\xab")


def test_empty_trie_root_proves_absence_without_nodes() -> None:
    read = verify_storage_proof(EMPTY_TRIE_ROOT, [], b"anything")
    assert read.value is None
    assert read.steps[0].kind is NodeKind.EMPTY


def test_single_child_branch_accepted_as_sp_trie_does() -> None:
    """sp-trie's codec decodes a value-less branch with one child; it is hash-committed, so we
    accept it too (documented in the module)."""
    leaf = bytes.fromhex("410b") + encode_compact(1) + b"z"
    node = bytes.fromhex("800004") + encode_compact(len(leaf)) + leaf
    assert verify_storage_proof(blake2_256(node), [node], b"\xab").value == b"z"


def test_v1_hashed_value_found_and_missing() -> None:
    value = b"h" * 40
    trie = ref_trie({b"\x01\x02": value, b"\x01\x03": b"short"}, v1=True)
    proof, expected = trie.proof_and_value(b"\x01\x02")
    assert expected == value and value in proof
    read = verify_storage_proof(trie.root_hash, proof, b"\x01\x02")
    assert read.value == value
    assert read.hashed_value and read.value_hash == blake2_256(value)
    assert read.steps[-1].kind is NodeKind.HASHED_VALUE_LEAF
    without_value = [node for node in proof if node != value]
    with pytest.raises(IncompleteProof, match="hashed value"):
        verify_storage_proof(trie.root_hash, without_value, b"\x01\x02")
    # The inline-valued neighbour needs no value node.
    assert verify_storage_proof(trie.root_hash, without_value, b"\x01\x03").value == b"short"


def test_long_partial_key_header_continuation() -> None:
    """Partial keys of 62, 63, 317 and 318 nibbles exercise the header's continuation bytes."""
    for key_len in (31, 32, 158, 159):
        key = bytes(range(1, key_len + 1))
        root, node = single_leaf_trie(key, b"v")
        read = verify_storage_proof(root, [node], key)
        assert read.value == b"v" and len(read.steps[0].partial) == 2 * key_len


# --- properties against the reference trie ------------------------------------------------

keys = st.binary(min_size=0, max_size=4)
values = st.binary(min_size=0, max_size=48)
tries = st.tuples(st.dictionaries(keys, values, min_size=1, max_size=24), st.booleans())


@PROPERTY
@given(tries, st.lists(keys, max_size=4))
def test_values_and_absence_match_reference(
    trie_spec: tuple[dict[bytes, bytes], bool], others: list[bytes]
) -> None:
    items, v1 = trie_spec
    trie = ref_trie(items, v1)
    everything = list(trie.db.values())
    full = TrieProof(everything)
    for key in list(items) + others:
        proof, expected = trie.proof_and_value(key)
        assert expected == items.get(key)
        read = verify_storage_proof(trie.root_hash, proof, key)
        assert read.value == expected
        assert read.node_hashes[0] == trie.root_hash
        # Unused nodes are fine: the whole trie is a valid multi-key proof.
        assert full.read(trie.root_hash, key).value == expected


# Small tries with short values inline every node into the root (a child under 32 bytes is
# embedded, not hashed), so almost every proof is a lone root node and "a node in the middle
# is missing or changed" is never drawn. Values that do not fit, at least two keys, and a key
# on a stored path make proofs of two to five nodes the common case.
deep_values = st.one_of(st.binary(min_size=32, max_size=48), st.binary(max_size=8))


@st.composite
def deep_proofs(draw: st.DrawFn) -> tuple[RefTrie, bytes, list[bytes], bytes | None]:
    """A reference trie, a key (stored, an extension of a stored one, or any) and its proof."""
    items = draw(st.dictionaries(keys, deep_values, min_size=2, max_size=24))
    trie = ref_trie(items, draw(st.booleans()))
    stored = st.sampled_from(sorted(items))
    key = draw(
        st.one_of(stored, stored, stored.flatmap(lambda k: st.binary(max_size=2).map(k.__add__)))
    )
    proof, expected = trie.proof_and_value(key)
    return trie, key, proof, expected


def _position(index: int) -> str:
    return "root node" if index == 0 else "inner node"


def test_T1_missing_node_is_incomplete_never_absent() -> None:
    reach = Reach("root node", "inner node")

    @PROPERTY
    @given(deep_proofs(), st.data())
    def check(case: tuple[RefTrie, bytes, list[bytes], bytes | None], data: st.DataObject) -> None:
        trie, key, proof, _ = case
        dropped = data.draw(st.integers(0, len(proof) - 1), label="dropped")
        reach.hit(_position(dropped))
        with pytest.raises(IncompleteProof):
            verify_storage_proof(trie.root_hash, proof[:dropped] + proof[dropped + 1 :], key)

    check()
    reach.assert_reached()


def test_mutated_proof_never_proves_something_else() -> None:
    reach = Reach("root node", "inner node")

    @PROPERTY
    @given(deep_proofs(), st.data())
    def check(case: tuple[RefTrie, bytes, list[bytes], bytes | None], data: st.DataObject) -> None:
        trie, key, proof, expected = case
        index = data.draw(st.integers(0, len(proof) - 1), label="changed node")
        node = bytearray(proof[index])
        assume(node)
        position = data.draw(st.integers(0, len(node) - 1))
        node[position] ^= data.draw(st.integers(1, 255))
        mutated = [*proof[:index], bytes(node), *proof[index + 1 :]]
        reach.hit(_position(index))
        try:
            read = verify_storage_proof(trie.root_hash, mutated, key)
        except VerificationError as exc:
            assert "\n" not in str(exc)
            return
        assert read.value == expected

    check()
    reach.assert_reached()


@PROPERTY
@given(st.binary(max_size=120))
def test_decode_node_arbitrary_bytes(data: bytes) -> None:
    try:
        node = decode_node(data)
    except VerificationError as exc:
        assert isinstance(exc, DecodeError)
        return
    assert len(node.children) == 16
    assert all(c is None or 0 < len(c) <= 32 for c in node.children)
    assert node.kind.is_branch == any(c is not None for c in node.children)


@PROPERTY
@given(
    st.binary(min_size=32, max_size=32),
    st.lists(st.binary(max_size=60), max_size=5),
    st.binary(max_size=6),
)
def test_arbitrary_proofs_only_raise_verification_errors(
    root: bytes, nodes: list[bytes], key: bytes
) -> None:
    # Make the first node the root so the walk actually decodes attacker bytes.
    if nodes:
        root = blake2_256(nodes[0])
    try:
        verify_storage_proof(root, nodes, key)
    except VerificationError as exc:
        assert isinstance(exc, TrieProofError | DecodeError)
        assert "\n" not in str(exc)
