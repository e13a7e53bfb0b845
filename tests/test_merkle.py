"""The outbox accumulator (light_clients.merkle): real vectors, properties, and T1/T12 attacks."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from Crypto.Hash import keccak as cryptodome_keccak
from fakes import unhex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reach import Reach

from light_clients import merkle
from light_clients.errors import MerkleProofError, VerificationError
from light_clients.hashing import keccak256
from light_clients.merkle import (
    EMPTY_ROOT,
    MAX_LEAVES,
    TREE_DEPTH,
    ZERO_HASHES,
    IncrementalMerkleTree,
    InvalidRootError,
    MalformedProofError,
    MerkleInclusion,
    RootMismatchError,
    TreeFullError,
    ZeroLeafError,
    _walk,
    _zero_hashes,
    branch_path,
    branch_root,
    verify_inclusion,
)

VECTORS = Path(__file__).parent / "vectors" / "merkle"
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _ethers_hash_message(text: str) -> bytes:
    """ethers' hashMessage: the Hyperlane vectors' leaves (see PROVENANCE.md)."""
    data = text.encode()
    return keccak256(b"\x19Ethereum Signed Message:\n" + str(len(data)).encode() + data)


def _leaves(seed: int, count: int) -> list[bytes]:
    """Distinct, non-zero, pseudo-random leaves (keccak outputs, like message ids)."""
    return [keccak256(seed.to_bytes(8, "big") + i.to_bytes(8, "big")) for i in range(count)]


def _reference_root(leaves: Sequence[bytes], hash_function: Callable[[bytes], bytes]) -> bytes:
    """A deliberately naive root: pad every level with that level's zero hash, pair up."""
    zeros = [bytes(32)]
    for _ in range(TREE_DEPTH):
        zeros.append(hash_function(zeros[-1] + zeros[-1]))
    layer = list(leaves)
    for height in range(TREE_DEPTH):
        if not layer:
            return zeros[TREE_DEPTH]
        if len(layer) % 2:
            layer.append(zeros[height])
        layer = [hash_function(layer[i] + layer[i + 1]) for i in range(0, len(layer), 2)]
    return layer[0]


def _tree(leaves: Sequence[bytes]) -> IncrementalMerkleTree:
    tree = IncrementalMerkleTree()
    for leaf in leaves:
        tree.append(leaf)
    return tree


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class _Sha256Tree(IncrementalMerkleTree):
    """Same shape with sha256 nodes: the deposit contract's tree (before its length mix-in)."""

    _hash = staticmethod(_sha256)
    _zeros = _zero_hashes(_sha256)


# --------------------------------------------------------------------------- constants


def test_zero_hashes_follow_the_recurrence() -> None:
    assert len(ZERO_HASHES) == TREE_DEPTH + 1 == 33
    assert ZERO_HASHES[0] == bytes(32)
    for height in range(TREE_DEPTH):
        assert ZERO_HASHES[height + 1] == keccak256(ZERO_HASHES[height] * 2)
    assert ZERO_HASHES[32] == EMPTY_ROOT
    assert MAX_LEAVES == 2**32 - 1


def test_empty_root_matches_hyperlane_no_leaves_vector() -> None:
    cases = json.loads((VECTORS / "hyperlane" / "merkle.json").read_text())
    (empty,) = [case for case in cases if not case["leaves"]]
    assert unhex(empty["expectedRoot"]) == EMPTY_ROOT
    assert IncrementalMerkleTree().root() == EMPTY_ROOT


# --------------------------------------------------------------------------- real vectors


@pytest.mark.parametrize(
    "case",
    json.loads((VECTORS / "hyperlane" / "merkle.json").read_text()),
    ids=lambda case: case["testName"],
)
def test_hyperlane_merkle_vectors(case: dict[str, object]) -> None:
    leaves = [_ethers_hash_message(text) for text in case["leaves"]]  # type: ignore[attr-defined]
    tree = _tree(leaves)
    expected_root = unhex(case["expectedRoot"])  # type: ignore[arg-type]
    assert tree.count == len(leaves)
    assert tree.root() == expected_root
    for proof in case["proofs"]:  # type: ignore[attr-defined]
        index = proof["index"]
        branch = tuple(unhex(node) for node in proof["path"])
        assert unhex(proof["leaf"]) == leaves[index]
        assert tree.proof(index) == branch
        inclusion = verify_inclusion(expected_root, leaves[index], index, branch)
        assert inclusion.root == expected_root
        assert inclusion.path[0] == leaves[index]
        assert inclusion.path[-1] == expected_root


def test_hyperlane_single_proof_vector() -> None:
    data = json.loads((VECTORS / "hyperlane" / "proof.json").read_text())
    root = unhex(data["root"])
    leaf = unhex(data["proof"]["leaf"])
    index = data["proof"]["index"]
    branch = [unhex(node) for node in data["proof"]["path"]]
    inclusion = verify_inclusion(root, leaf, index, branch)
    assert inclusion.index == index == 1
    assert len(inclusion.path) == TREE_DEPTH + 1
    assert branch_root(leaf, index, branch) == root
    with pytest.raises(RootMismatchError):
        verify_inclusion(root, leaf, index ^ 1, branch)


def _eip4881_cases() -> list[tuple[bytes, bytes, int]]:
    """(deposit_data_root, eth1_data.deposit_root, eth1_data.deposit_count) per case.

    PyYAML is not installed in the project venv, so this reads the three fields it needs from
    the file's fixed layout (a list of mappings, two-space indentation).
    """
    cases: list[tuple[bytes, bytes, int]] = []
    current: dict[str, str] = {}
    section = ""
    for raw in (VECTORS / "eip4881_deposit_tree" / "test_cases.yaml").read_text().splitlines():
        line = raw
        if raw.startswith("- "):
            if current:
                cases.append(_eip4881_case(current))
            current, section = {}, ""
            line = "  " + raw[2:]
        if line.startswith("  ") and not line.startswith("   "):
            key, _, value = line.strip().partition(":")
            section = key
            if value.strip():
                current[key] = value.strip().strip('"')
        elif line.startswith("    ") and not line.startswith("     ") and section == "eth1_data":
            key, _, value = line.strip().partition(":")
            current["eth1_data." + key] = value.strip().strip('"')
    cases.append(_eip4881_case(current))
    return cases


def _eip4881_case(fields: dict[str, str]) -> tuple[bytes, bytes, int]:
    return (
        unhex(fields["deposit_data_root"]),
        unhex(fields["eth1_data.deposit_root"]),
        int(fields["eth1_data.deposit_count"]),
    )


def test_eip4881_deposit_tree_structure_with_sha256() -> None:
    """512 cumulative deposit-contract roots: same tree shape, sha256 nodes, length mix-in."""
    cases = _eip4881_cases()
    assert len(cases) == 512
    tree = _Sha256Tree()
    for number, (leaf, deposit_root, count) in enumerate(cases, start=1):
        assert tree.append(leaf) == number - 1
        assert count == number
        mixed = _sha256(tree.root() + count.to_bytes(8, "little") + bytes(24))
        assert mixed == deposit_root, f"deposit {number}"
    # Every proof out of the sha256 tree walks to its root with the same branch code.
    root = tree.root()
    for index in (0, 1, 2, 255, 256, 510, 511):
        path = _walk(tree.leaf(index), index, tree.proof(index), _sha256)
        assert path[-1] == root


# --------------------------------------------------------------------------- T12 (merkly)


def _merkly() -> dict[str, object]:
    return json.loads((VECTORS / "merkly" / "merkly_vectors.json").read_text())  # type: ignore[no-any-return]


def _merkly_verify(leaf: bytes, proof: Sequence[tuple[str, bytes]], root: bytes) -> bool:
    """merkly's verification rule (variable length, leaves hashed like nodes)."""
    node = leaf
    for side, sibling in proof:
        node = keccak256(node + sibling) if side == "RIGHT" else keccak256(sibling + node)
    return node == root


def test_T12_merkly_inner_node_as_leaf_forgery_rejected() -> None:
    """merkly accepts a 64-byte "leaf" a‖b with a proof one level shorter; we do not."""
    vectors = _merkly()
    hashes = {k: unhex(v) for k, v in vectors["leaf_hash_examples"].items()}  # type: ignore[attr-defined]
    a, b, c, d = (hashes[name] for name in "abcd")
    (root_vector,) = [
        v
        for v in vectors["root_vectors"]  # type: ignore[attr-defined]
        if v["leaves"] == ["a", "b", "c", "d"] and v["node_hash"] == "keccak256"
    ]
    (proof_vector,) = [
        v
        for v in vectors["proof_vectors"]  # type: ignore[attr-defined]
        if v["leaves"] == ["a", "b", "c", "d"] and v.get("leaf") == "a" and "expected_proof" in v
    ]
    merkly_root = unhex(root_vector["expected_root"])
    node_cd = unhex(proof_vector["expected_proof"][1]["data"])
    assert keccak256(keccak256(a + b) + node_cd) == merkly_root
    # The forgery under merkly's rules: leaf hash H(a‖b) is the inner node, proof [cd].
    assert _merkly_verify(keccak256(a + b), [("RIGHT", node_cd)], merkly_root)

    tree = _tree([a, b, c, d])
    root = tree.root()
    honest = tree.proof(0)
    verify_inclusion(root, a, 0, honest)
    inner_ab = keccak256(a + b)
    assert honest[1] == keccak256(c + d)
    # The 64-byte "leaf" a‖b itself: refused as not a 32-byte leaf.
    with pytest.raises(MalformedProofError, match="leaf must be 32 bytes"):
        verify_inclusion(root, a + b, 0, honest[1:])
    # Its hash (the real inner node) with the 31 remaining siblings: refused for length.
    with pytest.raises(MalformedProofError, match="31 hashes, need exactly 32"):
        verify_inclusion(root, inner_ab, 0, honest[1:])
    # Padded back to 32 siblings, the depth no longer lines up: wrong root.
    for pad in (ZERO_HASHES[31], ZERO_HASHES[0]):
        with pytest.raises(RootMismatchError):
            verify_inclusion(root, inner_ab, 0, (*honest[1:], pad))


@pytest.mark.parametrize("length", [0, 1, 31, 33, 64])
def test_T12_branch_of_wrong_length_rejected(length: int) -> None:
    leaves = _leaves(12, 5)
    tree = _tree(leaves)
    branch = (tree.proof(2) + tuple(ZERO_HASHES))[:length]
    with pytest.raises(MalformedProofError, match=f"{length} hashes"):
        verify_inclusion(tree.root(), leaves[2], 2, branch)
    with pytest.raises(MalformedProofError):
        branch_path(leaves[2], 2, branch)


# --------------------------------------------------------------------------- T1


def test_T1_empty_tree_root_rejected() -> None:
    # The "proof" of an empty slot in an empty tree walks to EMPTY_ROOT; it proves nothing.
    assert branch_root(ZERO_HASHES[0], 0, ZERO_HASHES[:32]) == EMPTY_ROOT
    some_leaf = _leaves(1, 1)[0]
    with pytest.raises(InvalidRootError, match="empty-tree root"):
        verify_inclusion(EMPTY_ROOT, some_leaf, 0, ZERO_HASHES[:32])


def test_T1_zero_root_rejected() -> None:
    leaf = _leaves(1, 1)[0]
    with pytest.raises(InvalidRootError, match="zero hash"):
        verify_inclusion(bytes(32), leaf, 0, ZERO_HASHES[:32])


def test_T1_zero_leaf_rejected() -> None:
    # A tree whose slot 0 really holds zero bytes: the proof is arithmetically right, still refused.
    tree = _tree([bytes(32), *_leaves(2, 2)])
    with pytest.raises(ZeroLeafError):
        verify_inclusion(tree.root(), bytes(32), 0, tree.proof(0))
    # ...while the non-zero neighbours of the same tree verify.
    verify_inclusion(tree.root(), tree.leaf(1), 1, tree.proof(1))


def test_T1_empty_slot_after_last_leaf_rejected() -> None:
    # The zero leaf right of the newest one has a valid-looking path; the zero-leaf rule stops it.
    tree = _tree(_leaves(3, 3))
    branch = tree.proof(2)
    sibling_path = (tree.leaf(2), *branch[1:])
    assert branch_root(bytes(32), 3, sibling_path) == tree.root()
    with pytest.raises(ZeroLeafError):
        verify_inclusion(tree.root(), bytes(32), 3, sibling_path)


# --------------------------------------------------------------------------- the accumulator


def test_append_returns_indices_and_counts() -> None:
    tree = IncrementalMerkleTree()
    assert tree.count == 0 == len(tree)
    for expected, leaf in enumerate(_leaves(4, 9)):
        assert tree.append(leaf) == expected
        assert tree.count == expected + 1
    assert tree.extend(_leaves(5, 3)) == 12


def test_root_is_cached_and_invalidated_by_append() -> None:
    leaves = _leaves(6, 7)
    tree = _tree(leaves[:6])
    first = tree.root()
    assert tree.root() == first == _reference_root(leaves[:6], keccak256)
    tree.append(leaves[6])
    assert tree.root() != first
    assert tree.root() == _reference_root(leaves, keccak256)


@pytest.mark.parametrize("bad", [b"", bytes(31), bytes(33), "00" * 32, 7, None, bytearray(32)])
def test_append_rejects_non_32_byte_leaf(bad: object) -> None:
    tree = IncrementalMerkleTree()
    with pytest.raises(MalformedProofError):
        tree.append(bad)  # type: ignore[arg-type]
    assert tree.count == 0


@pytest.mark.parametrize("index", [-1, 3, 2**32, True, "0", 1.0])
def test_proof_index_out_of_range_rejected(index: object) -> None:
    tree = _tree(_leaves(7, 3))
    with pytest.raises(MalformedProofError):
        tree.proof(index)  # type: ignore[arg-type]
    with pytest.raises(MalformedProofError):
        IncrementalMerkleTree().proof(0)


def test_tree_full_raises() -> None:
    tree = IncrementalMerkleTree()
    tree.append(_leaves(8, 1)[0])
    # Appending four billion leaves is out of reach for a unit test: jump the counter instead.
    tree._count = MAX_LEAVES
    with pytest.raises(TreeFullError, match="full"):
        tree.append(_leaves(8, 2)[1])


@PROPERTY
@given(size=st.integers(min_value=1, max_value=300), seed=st.integers(0, 2**32), data=st.data())
def test_every_proof_verifies(size: int, seed: int, data: st.DataObject) -> None:
    leaves = _leaves(seed, size)
    tree = _tree(leaves)
    root = tree.root()
    assert root == _reference_root(leaves, keccak256)
    indices = (
        range(size) if size <= 40 else data.draw(st.lists(st.integers(0, size - 1), max_size=20))
    )
    for index in indices:
        branch = tree.proof(index)
        assert len(branch) == TREE_DEPTH
        inclusion = verify_inclusion(root, leaves[index], index, branch)
        assert inclusion == MerkleInclusion(root, leaves[index], index, inclusion.path, branch)
        assert inclusion.path == branch_path(leaves[index], index, branch)
        assert inclusion.path[-1] == branch_root(leaves[index], index, branch) == root


@settings(max_examples=60, deadline=None)
@given(size=st.integers(min_value=1, max_value=70), seed=st.integers(0, 2**32))
def test_checkpoint_roots_and_proofs_at_earlier_counts(size: int, seed: int) -> None:
    """Root after every append equals the naive root; the grown tree reproduces it and proves
    leaves under it (a relayer proves against the checkpoint the committee signed)."""
    leaves = _leaves(seed, size)
    tree = IncrementalMerkleTree()
    snapshots = []
    for count, leaf in enumerate(leaves, start=1):
        tree.append(leaf)
        root = tree.root()
        assert root == _reference_root(leaves[:count], keccak256)
        snapshots.append((root, tree.proof(count - 1), tree.proof(0)))
    assert tree.root(0) == EMPTY_ROOT
    for count, (root, last_proof, first_proof) in enumerate(snapshots, start=1):
        assert tree.root(count) == root
        assert tree.proof(count - 1, count) == last_proof
        assert tree.proof(0, count=count) == first_proof
        middle = count // 2
        verify_inclusion(root, leaves[middle], middle, tree.proof(middle, count))
        verify_inclusion(root, leaves[count - 1], count - 1, last_proof)


@pytest.mark.parametrize("count", [-1, 4, True, "2", 2.0])
def test_bad_historical_count_rejected(count: object) -> None:
    tree = _tree(_leaves(9, 3))
    with pytest.raises(MalformedProofError):
        tree.root(count)  # type: ignore[arg-type]
    with pytest.raises(MalformedProofError):
        tree.proof(0, count)  # type: ignore[arg-type]


def test_proof_index_must_be_below_historical_count() -> None:
    tree = _tree(_leaves(10, 5))
    with pytest.raises(MalformedProofError, match="index 3 out of range for a tree of 3 leaves"):
        tree.proof(3, count=3)
    with pytest.raises(MalformedProofError):
        tree.proof(0, count=0)


_MUTATIONS = [
    "leaf_bit",
    "sibling_bit",
    "root_bit",
    "index_bit",
    "index_high",
    "drop_sibling",
    "extra_sibling",
    "short_sibling",
    "long_sibling",
    "swap_siblings",
    "zero_root",
    "empty_root",
    "index_negative",
]


@PROPERTY
@given(
    size=st.integers(min_value=2, max_value=200),
    seed=st.integers(0, 2**32),
    mutation=st.sampled_from(_MUTATIONS),
    data=st.data(),
)
def test_any_mutation_is_rejected(size: int, seed: int, mutation: str, data: st.DataObject) -> None:
    leaves = _leaves(seed, size)
    tree = _tree(leaves)
    index = data.draw(st.integers(0, size - 1), label="index")
    root, leaf, branch = tree.root(), leaves[index], list(tree.proof(index))
    bit = data.draw(st.integers(0, 255), label="bit")
    level = data.draw(st.integers(0, TREE_DEPTH - 1), label="level")

    def flip(value: bytes) -> bytes:
        mutable = bytearray(value)
        mutable[bit // 8] ^= 1 << (bit % 8)
        return bytes(mutable)

    expected: type[MerkleProofError] = RootMismatchError
    if mutation == "leaf_bit":
        leaf = flip(leaf)
    elif mutation == "sibling_bit":
        branch[level] = flip(branch[level])
    elif mutation == "root_bit":
        root = flip(root)
    elif mutation == "index_bit":
        # Leaves are distinct, so no other slot (real or empty) holds this leaf.
        index ^= 1 << level
    elif mutation == "index_high":
        index += 2**32
        expected = MalformedProofError
    elif mutation == "index_negative":
        index = -1 - index
        expected = MalformedProofError
    elif mutation == "drop_sibling":
        del branch[level]
        expected = MalformedProofError
    elif mutation == "extra_sibling":
        branch.insert(level, ZERO_HASHES[level])
        expected = MalformedProofError
    elif mutation == "short_sibling":
        branch[level] = branch[level][:31]
        expected = MalformedProofError
    elif mutation == "long_sibling":
        branch[level] = branch[level] + b"\x00"
        expected = MalformedProofError
    elif mutation == "swap_siblings":
        other = data.draw(st.integers(0, TREE_DEPTH - 1).filter(lambda o: o != level))
        if branch[other] == branch[level]:  # two equal zero hashes cannot happen; be explicit
            return
        branch[level], branch[other] = branch[other], branch[level]
    elif mutation == "zero_root":
        root = bytes(32)
        expected = InvalidRootError
    elif mutation == "empty_root":
        root = EMPTY_ROOT
        expected = InvalidRootError
    with pytest.raises(expected):
        verify_inclusion(root, leaf, index, branch)


_junk = st.one_of(
    st.binary(max_size=40),
    st.binary(min_size=32, max_size=32),
    st.integers(),
    st.none(),
    st.text(max_size=40),
    st.lists(st.binary(min_size=32, max_size=32), max_size=3),
)


def _cryptodome_keccak(data: bytes) -> bytes:
    return cryptodome_keccak.new(digest_bits=256, data=data).digest()


def _reference_fold(leaf: bytes, index: int, branch: Sequence[bytes]) -> bytes:
    """The root a branch implies, by the contract's loop with another keccak implementation:
    bit ``d`` of the index says whether the level-``d`` sibling is on the left."""
    node = leaf
    for depth, sibling in enumerate(branch):
        pair = sibling + node if (index >> depth) & 1 else node + sibling
        node = _cryptodome_keccak(pair)
    return node


@st.composite
def _genuine_or_junk(draw: st.DrawFn) -> tuple[object, object, object, object]:
    """Half the time a genuine (root, leaf, index, branch) of a real tree, with each part
    replaced by junk with probability 1/4; otherwise junk throughout."""
    if draw(st.booleans()):
        leaves = _leaves(draw(st.integers(0, 2**16)), draw(st.integers(1, 9)))
        index = draw(st.integers(0, len(leaves) - 1))
        genuine: list[object] = [
            _tree(leaves).root(),
            leaves[index],
            index,
            list(_tree(leaves).proof(index)),
        ]
    else:
        genuine = [None, None, None, None]
    junk = (
        st.one_of(st.binary(min_size=32, max_size=32), _junk),
        st.one_of(st.binary(min_size=32, max_size=32), _junk),
        st.one_of(st.integers(-(2**40), 2**40), _junk),
        st.one_of(
            st.lists(st.binary(min_size=32, max_size=32), min_size=32, max_size=32),
            st.lists(
                st.one_of(st.binary(min_size=30, max_size=34), _junk), min_size=30, max_size=34
            ),
            _junk,
        ),
    )
    root, leaf, index, branch = (
        part if part is not None and draw(st.integers(0, 3)) else draw(strategy)
        for part, strategy in zip(genuine, junk, strict=True)
    )
    return root, leaf, index, branch


def test_arbitrary_input_only_raises_merkle_proof_error() -> None:
    """Any input is refused with a MerkleProofError or accepted, and an acceptance is exactly
    a branch that folds to the root by an independent keccak."""
    reach = Reach("accepted", "refused")

    @PROPERTY
    @given(_genuine_or_junk())
    def check(case: tuple[object, object, object, object]) -> None:
        root, leaf, index, branch = case
        try:
            inclusion = verify_inclusion(root, leaf, index, branch)  # type: ignore[arg-type]
        except MerkleProofError:
            reach.hit("refused")
            return
        except VerificationError as error:  # pragma: no cover - the failure reports it
            pytest.fail(f"wrong error type {type(error).__name__}: {error}")
        reach.hit("accepted")
        assert isinstance(index, int) and isinstance(leaf, bytes)
        assert _reference_fold(leaf, index, inclusion.branch) == root
        assert inclusion.branch == tuple(branch)  # type: ignore[arg-type]

    check()
    reach.assert_reached()


@PROPERTY
@given(
    leaf=st.one_of(st.binary(min_size=32, max_size=32), _junk),
    index=st.one_of(st.integers(-(2**40), 2**40), _junk),
    branch=st.one_of(
        st.lists(st.binary(min_size=32, max_size=32), min_size=32, max_size=32),
        _junk,
    ),
)
def test_branch_path_shape_and_errors(leaf: object, index: object, branch: object) -> None:
    try:
        path = branch_path(leaf, index, branch)  # type: ignore[arg-type]
    except MerkleProofError:
        return
    assert len(path) == TREE_DEPTH + 1
    assert path[0] == leaf
    assert path[-1] == branch_root(leaf, index, branch)  # type: ignore[arg-type]
    # Each node is the hash of the previous node and its sibling, on the side the index says.
    for height in range(TREE_DEPTH):
        sibling = branch[height]  # type: ignore[index]
        pair = sibling + path[height] if index >> height & 1 else path[height] + sibling  # type: ignore[operator]
        assert path[height + 1] == keccak256(pair)


# --------------------------------------------------------------------------- outbox frontier


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=0, max_value=300))
def test_root_from_frontier_matches_tree(count: int) -> None:
    """The attester's off-chain root from the 33 proven slots equals the tree's root."""
    tree = IncrementalMerkleTree()
    for i in range(count):
        tree.append(keccak256(i.to_bytes(8, "big")))
    assert merkle.root_from_branch(tree.frontier(), count) == tree.root()


def test_root_from_frontier_rejects_malformed() -> None:
    with pytest.raises(MerkleProofError):
        merkle.root_from_branch([bytes(32)] * 31, 1)
    with pytest.raises(MerkleProofError):
        merkle.root_from_branch([bytes(32)] * 32, 2**32)
    with pytest.raises(MerkleProofError):
        merkle.root_from_branch([bytes(31)] * 32, 1)


# --------------------------------------------------------------------------- frontier_append
# The relayer's scan reconciliation: the outbox's stored frontier after inserting the logged
# messages must be exactly what the chain's storage proves.


@given(
    batches=st.lists(
        st.lists(st.binary(min_size=32, max_size=32), max_size=9), min_size=1, max_size=12
    )
)
def test_frontier_append_is_the_on_chain_insertion(batches: list[list[bytes]]) -> None:
    """Batch after batch, the frontier and count equal the reference tree's, and the root
    recomputed from them is the tree's root (the same state an outbox proves)."""
    tree = IncrementalMerkleTree()
    frontier, count = tree.frontier(), 0
    for leaves in batches:
        frontier, count = merkle.frontier_append(frontier, count, leaves)
        tree.extend(leaves)
        assert count == tree.count
        assert merkle.root_from_branch(frontier, count) == tree.root()


def test_frontier_append_differs_for_an_altered_or_missing_leaf() -> None:
    """What the reconciliation relies on: another last leaf, or one fewer, is another root."""
    leaves = [keccak256(bytes([i])) for i in range(5)]
    start = IncrementalMerkleTree().frontier()
    honest = merkle.root_from_branch(*merkle.frontier_append(start, 0, leaves))
    altered = merkle.root_from_branch(
        *merkle.frontier_append(start, 0, [*leaves[:-1], keccak256(b"forged")])
    )
    fewer = merkle.frontier_append(start, 0, leaves[:-1])
    assert altered != honest
    assert fewer[1] == 4 and merkle.root_from_branch(*fewer) != honest


def test_frontier_append_rejects_a_malformed_leaf() -> None:
    with pytest.raises(MalformedProofError, match="leaf must be 32 bytes, got 31 bytes"):
        merkle.frontier_append(IncrementalMerkleTree().frontier(), 0, [bytes(31)])


def test_frontier_append_rejects_a_malformed_frontier() -> None:
    with pytest.raises(MalformedProofError, match="frontier is 32 hashes"):
        merkle.frontier_append([bytes(32)] * 31, 0, [bytes(32)])


def test_frontier_append_stops_at_capacity() -> None:
    full = [keccak256(bytes([i])) for i in range(merkle.TREE_DEPTH)]
    with pytest.raises(TreeFullError, match="full"):
        merkle.frontier_append(full, merkle.MAX_LEAVES, [bytes(32)])
