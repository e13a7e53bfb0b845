"""The batch proof (light_clients/multiproof.py): round trips, every way to forge one, and
agreement with the on-chain verifier (MerkleLib.multiRoot) on the same vectors.

A multiproof proves any strictly ascending set of leaves of the depth-32 incremental tree
against the root at a count; siblings of empty subtrees are never sent. What an attacker can
try: a proof built for other leaves, one that leaves a leaf out, a repeated or reordered leaf,
a hash too many or too few, a leaf past the count. Each must be refused with its own error.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from web3 import Web3
from web3.contract import Contract

from adapters.evm.compile import CONTRACTS_DIR, compile_sources, settings
from devnet.anvil import DEV_ADDRESSES, AnvilProcess
from light_clients.committee import Checkpoint, Committee
from light_clients.errors import AttestationError, MessageError
from light_clients.hashing import keccak256
from light_clients.merkle import (
    EMPTY_ROOT,
    MAX_LEAVES,
    ZERO_HASHES,
    IncrementalMerkleTree,
    InvalidRootError,
    MalformedProofError,
    RootMismatchError,
    ZeroLeafError,
)
from light_clients.message import (
    MAX_MESSAGE_BYTES,
    MalformedMessageError,
    Message,
    NonceBeyondCheckpointError,
    WrongDestinationError,
    WrongOriginError,
    WrongOutboxError,
)
from light_clients.multiproof import (
    BatchEncodingError,
    LeafOutOfRangeError,
    LeavesNotAscendingError,
    ProofTooShortError,
    UnusedProofHashesError,
    build_multiproof,
    multiproof_root,
    pack_messages,
    unpack_messages,
    verify_batch_delivery,
    verify_multiproof,
)
from relayer import proof_files

Leaves = list[tuple[int, bytes]]


@cache
def tree_of(size: int) -> IncrementalMerkleTree:
    tree = IncrementalMerkleTree()
    tree.extend([keccak256(b"leaf %d" % i) for i in range(size)])
    return tree


@st.composite
def batches(draw: st.DrawFn, max_size: int = 70) -> tuple[IncrementalMerkleTree, int, list[int]]:
    """A tree, a checkpoint count within it and a non-empty ascending set of its leaves."""
    size = draw(st.integers(1, max_size))
    count = draw(st.integers(1, size))
    indices = sorted(draw(st.sets(st.integers(0, count - 1), min_size=1, max_size=count)))
    return tree_of(size), count, indices


def leaves_of(tree: IncrementalMerkleTree, indices: Sequence[int]) -> Leaves:
    return [(index, tree.leaf(index)) for index in indices]


FORGERY = (RootMismatchError, ProofTooShortError, UnusedProofHashesError)


# --------------------------------------------------------------------------- round trips


@given(batches())
def test_any_leaf_set_of_any_tree_round_trips(batch: tuple[Any, int, list[int]]) -> None:
    tree, count, indices = batch
    proof = build_multiproof(tree, indices, count)
    leaves = leaves_of(tree, indices)
    assert multiproof_root(leaves, proof, count) == tree.root(count)
    verify_multiproof(tree.root(count), leaves, proof, count)


@given(batches())
def test_a_proof_never_carries_more_than_the_branches_it_replaces(
    batch: tuple[Any, int, list[int]],
) -> None:
    """One leaf's multiproof is its branch without the empty subtrees right of the count; a
    set's is never longer than the sum of those (shared siblings are sent once)."""
    tree, count, indices = batch
    single = [
        [
            sibling
            for height, sibling in enumerate(tree.proof(index, count))
            if ((index >> height) ^ 1) << height < count
        ]
        for index in indices
    ]
    if len(indices) == 1:
        assert list(build_multiproof(tree, indices, count)) == single[0]
    assert len(build_multiproof(tree, indices, count)) <= sum(map(len, single))


def test_consecutive_leaves_share_their_proof() -> None:
    """100 consecutive leaves at the end of a tree of 1,000: a handful of hashes, not 3,200."""
    tree = tree_of(1_000)
    indices = list(range(900, 1_000))
    proof = build_multiproof(tree, indices)
    assert len(proof) <= 10
    verify_multiproof(tree.root(), leaves_of(tree, indices), proof, 1_000)


def test_a_sparse_tree_near_capacity() -> None:
    """Counts up to 2^32 - 1 walk the same 32 levels (the indices are u32 nonces)."""
    leaf = keccak256(b"alone")
    for count in (1, 2**31, MAX_LEAVES):
        index = count - 1
        # The root of a tree whose only non-zero leaf is `leaf` at `index`.
        node = leaf
        for height in range(32):
            node = (
                keccak256(ZERO_HASHES[height] + node)
                if (index >> height) & 1
                else keccak256(node + ZERO_HASHES[height])
            )
        # Left siblings are zero subtrees here but below the count: they must be sent.
        proof = [ZERO_HASHES[h] for h in range(32) if (index >> h) & 1]
        verify_multiproof(node, [(index, leaf)], proof, count)


# --------------------------------------------------------------------------- forgeries


@given(batches(), st.data())
def test_a_proof_for_other_leaves_is_refused(
    batch: tuple[Any, int, list[int]], data: st.DataObject
) -> None:
    tree, count, indices = batch
    others = sorted(data.draw(st.sets(st.integers(0, count - 1), min_size=1, max_size=count)))
    if others == indices:
        return
    proof = build_multiproof(tree, others, count)
    with pytest.raises(FORGERY):
        verify_multiproof(tree.root(count), leaves_of(tree, indices), proof, count)


@given(batches(), st.data())
def test_a_proof_that_omits_a_leaf_is_refused(
    batch: tuple[Any, int, list[int]], data: st.DataObject
) -> None:
    """The relayer proves n leaves but delivers n - 1: the missing leaf's hash is nowhere."""
    tree, count, indices = batch
    if len(indices) < 2:
        return
    proof = build_multiproof(tree, indices, count)
    dropped = data.draw(st.integers(0, len(indices) - 1))
    kept = indices[:dropped] + indices[dropped + 1 :]
    with pytest.raises(FORGERY):
        verify_multiproof(tree.root(count), leaves_of(tree, kept), proof, count)


@given(batches(), st.data())
def test_a_repeated_or_reordered_leaf_is_refused(
    batch: tuple[Any, int, list[int]], data: st.DataObject
) -> None:
    tree, count, indices = batch
    proof = build_multiproof(tree, indices, count)
    leaves = leaves_of(tree, indices)
    at = data.draw(st.integers(0, len(leaves) - 1))
    repeated = [*leaves[: at + 1], leaves[at], *leaves[at + 1 :]]
    with pytest.raises(LeavesNotAscendingError, match="strictly ascending"):
        verify_multiproof(tree.root(count), repeated, proof, count)
    if len(leaves) > 1:
        swapped = [leaves[1], leaves[0], *leaves[2:]]
        with pytest.raises(LeavesNotAscendingError):
            verify_multiproof(tree.root(count), swapped, proof, count)


@given(batches(), st.data())
def test_an_extra_or_missing_hash_is_refused(
    batch: tuple[Any, int, list[int]], data: st.DataObject
) -> None:
    tree, count, indices = batch
    proof = list(build_multiproof(tree, indices, count))
    leaves = leaves_of(tree, indices)
    extra = data.draw(st.binary(min_size=32, max_size=32))
    with pytest.raises(UnusedProofHashesError, match=f"used {len(proof)} of {len(proof) + 1}"):
        verify_multiproof(tree.root(count), leaves, [*proof, extra], count)
    if proof:
        at = data.draw(st.integers(0, len(proof) - 1))
        with pytest.raises((ProofTooShortError, RootMismatchError)):
            verify_multiproof(tree.root(count), leaves, proof[:at] + proof[at + 1 :], count)
        with pytest.raises(ProofTooShortError):
            verify_multiproof(tree.root(count), leaves, proof[:-1], count)


@given(batches(), st.data())
def test_a_changed_leaf_or_hash_is_refused(
    batch: tuple[Any, int, list[int]], data: st.DataObject
) -> None:
    tree, count, indices = batch
    proof = list(build_multiproof(tree, indices, count))
    leaves = leaves_of(tree, indices)
    at = data.draw(st.integers(0, len(leaves) - 1))
    forged = list(leaves)
    forged[at] = (leaves[at][0], keccak256(leaves[at][1]))
    with pytest.raises(RootMismatchError, match="implies root"):
        verify_multiproof(tree.root(count), forged, proof, count)
    if proof:
        which = data.draw(st.integers(0, len(proof) - 1))
        proof[which] = keccak256(proof[which])
        with pytest.raises(RootMismatchError):
            verify_multiproof(tree.root(count), leaves, proof, count)


def test_malformed_inputs_are_refused_with_one_line() -> None:
    tree = tree_of(8)
    proof = build_multiproof(tree, [2, 5])
    leaves = leaves_of(tree, [2, 5])
    root = tree.root()
    cases: list[tuple[type[Exception], str, Any]] = [
        (InvalidRootError, "zero hash", lambda: verify_multiproof(bytes(32), leaves, proof, 8)),
        (InvalidRootError, "empty-tree", lambda: verify_multiproof(EMPTY_ROOT, leaves, proof, 8)),
        (MalformedProofError, "root must be", lambda: verify_multiproof(b"x", leaves, proof, 8)),
        (
            ZeroLeafError,
            "leaf 1 is the zero hash",
            lambda: verify_multiproof(root, [leaves[0], (5, bytes(32))], proof, 8),
        ),
        (
            LeafOutOfRangeError,
            "index 8",
            lambda: verify_multiproof(root, [(8, leaves[0][1])], [], 8),
        ),
        (MalformedProofError, "count", lambda: verify_multiproof(root, leaves, proof, 0)),
        (MalformedProofError, "count", lambda: verify_multiproof(root, leaves, proof, True)),
        (MalformedProofError, "count", lambda: multiproof_root(leaves, proof, MAX_LEAVES + 1)),
        (MalformedProofError, "at least one", lambda: verify_multiproof(root, [], proof, 8)),
        (
            MalformedProofError,
            "index must be an integer",
            lambda: multiproof_root([(True, leaves[0][1])], proof, 8),
        ),
        (MalformedProofError, "must be 32 bytes", lambda: multiproof_root([(2, b"x")], proof, 8)),
        (
            MalformedProofError,
            "proof hash 1",
            lambda: multiproof_root(leaves, [proof[0], b"short", *proof[2:]], 8),
        ),
        (MalformedProofError, "not a string", lambda: multiproof_root(leaves, b"".join(proof), 8)),  # type: ignore[arg-type]
        (LeafOutOfRangeError, "not in a tree", lambda: build_multiproof(tree, [9])),
        (LeafOutOfRangeError, "not in a tree", lambda: build_multiproof(tree, ["1"])),  # type: ignore[list-item]
        (LeavesNotAscendingError, "ascending", lambda: build_multiproof(tree, [3, 3])),
        (MalformedProofError, "count 9", lambda: build_multiproof(tree, [1], 9)),
    ]
    for error, words, attempt in cases:
        with pytest.raises(error, match=words) as caught:
            attempt()
        assert "\n" not in str(caught.value)


# --------------------------------------------------------------------------- packed batches


@given(st.lists(st.binary(max_size=300), max_size=8))
def test_packed_messages_round_trip(messages: list[bytes]) -> None:
    packed = pack_messages(messages)
    assert len(packed) == sum(3 + len(m) for m in messages)
    assert unpack_messages(packed) == messages


@given(st.lists(st.binary(min_size=1, max_size=100), min_size=1, max_size=5), st.data())
def test_a_cut_batch_is_refused(messages: list[bytes], data: st.DataObject) -> None:
    packed = pack_messages(messages)
    cut = data.draw(st.integers(1, len(packed) - 1)) if len(packed) > 1 else 0
    if cut and unpack_messages_ok(packed[:cut]):
        return  # cut exactly between two messages: a shorter, valid batch
    with pytest.raises(BatchEncodingError, match="message"):
        unpack_messages(packed[:cut] if cut else packed[:1] + b"\xff\xff")


def unpack_messages_ok(packed: bytes) -> bool:
    try:
        unpack_messages(packed)
    except BatchEncodingError:
        return False
    return True


def test_an_unpackable_message_is_refused() -> None:
    with pytest.raises(BatchEncodingError, match="cannot be packed"):
        pack_messages([bytes(1 << 24)])


def test_a_message_the_inbox_would_refuse_is_never_packed() -> None:
    """The Inbox reverts a whole batch on a message above 77 + 65,536 bytes: the largest
    message it accepts packs, one byte more is refused (one line), whatever its neighbours."""
    largest = bytes(MAX_MESSAGE_BYTES)
    assert unpack_messages(pack_messages([largest])) == [largest]
    with pytest.raises(BatchEncodingError, match=f"at most {MAX_MESSAGE_BYTES}") as caught:
        pack_messages([b"\x01" * 80, largest + b"\0"])
    assert "\n" not in str(caught.value)


# --------------------------------------------------------------------------- on chain

HARNESS = """
// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.30;
import {MerkleLib} from "./MerkleLib.sol";
contract MultiproofHarness {
    function root(uint256[] calldata indices, bytes32[] calldata leaves,
                  bytes32[] calldata proof, uint256 count)
        external pure returns (bytes32 computed, uint256 used)
    {
        uint256 n = indices.length;
        uint256 nodes;
        assembly { nodes := mload(0x40) mstore(0x40, add(nodes, shl(6, n))) }
        for (uint256 i; i < n; ++i) {
            uint256 index = indices[i];
            bytes32 leaf = leaves[i];
            assembly {
                mstore(add(nodes, shl(6, i)), index)
                mstore(add(nodes, add(shl(6, i), 0x20)), leaf)
            }
        }
        return MerkleLib.multiRoot(nodes, n, proof, count);
    }
}
"""


def deploy_source(w3: Web3, name: str, sources: dict[str, str]) -> Contract:
    """Compile ``sources`` (file name -> Solidity) with the project's solcjs and settings and
    deploy contract ``name`` (from ``name.sol``) from the first dev account."""
    compiler_input = {
        "language": "Solidity",
        "sources": {file: {"content": text} for file, text in sources.items()},
        "settings": settings("cancun"),
    }
    _, output = compile_sources(compiler_input)
    built = output["contracts"][f"{name}.sol"][name]
    factory = w3.eth.contract(abi=built["abi"], bytecode=built["evm"]["bytecode"]["object"])
    tx = factory.constructor().transact({"from": DEV_ADDRESSES[0]})
    address = w3.eth.wait_for_transaction_receipt(tx)["contractAddress"]
    assert address is not None
    return w3.eth.contract(address=address, abi=built["abi"])


@pytest.fixture(scope="module")
def harness(anvil: AnvilProcess) -> Contract:
    """MerkleLib.multiRoot behind an external function (the library itself, unchanged)."""
    w3 = Web3(Web3.HTTPProvider(anvil.rpc_url, request_kwargs={"timeout": 30}))
    library = (CONTRACTS_DIR / "MerkleLib.sol").read_text()
    return deploy_source(
        w3, "MultiproofHarness", {"MerkleLib.sol": library, "MultiproofHarness.sol": HARNESS}
    )


@pytest.mark.chain
@given(batches(max_size=40), st.data())
def test_the_chain_and_python_agree_on_the_same_vectors(
    harness: Contract, batch: tuple[Any, int, list[int]], data: st.DataObject
) -> None:
    """The same (leaves, proof, count) to both: the same root and the same hashes used, for
    genuine proofs and for a proof of other leaves / a leaf left out."""
    tree, count, indices = batch
    mode = data.draw(st.sampled_from(["genuine", "other leaves", "omitted leaf"]))
    proven = indices
    if mode == "other leaves":
        proven = sorted(data.draw(st.sets(st.integers(0, count - 1), min_size=1)))
    elif mode == "omitted leaf" and len(indices) > 1:
        proven = sorted({*indices, data.draw(st.sampled_from(indices))} - {indices[0]})
        proven, indices = indices, proven
    proof = list(build_multiproof(tree, proven, count))
    leaves = leaves_of(tree, indices)
    try:
        expected: tuple[bytes, int] | None = (multiproof_root(leaves, proof, count), len(proof))
    except ProofTooShortError:
        expected = None
    except UnusedProofHashesError as exc:
        expected = (b"", exc.used)  # the root is not compared: hashes were left over
    call = harness.functions.root(indices, [leaf for _, leaf in leaves], proof, count)
    computed, used = call.call()
    if expected is None:
        assert used > len(proof)  # what the Inbox refuses as ProofTooShort
        return
    assert used == expected[1]
    if expected[0]:
        assert computed == expected[0]
        assert (computed == tree.root(count)) == (mode == "genuine" or proven == indices)


# --------------------------------------------------------------------------- a whole batch

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "evm-batch-delivery.json"


def example_batch() -> tuple[list[bytes], Checkpoint, list[bytes], Committee, list[bytes]]:
    """The shipped ``evm-batch-delivery`` example (made and delivered on anvil), parsed."""
    obj = json.loads(EXAMPLE.read_text())
    cp = obj["checkpoint"]
    checkpoint = Checkpoint(
        cp["origin"], bytes.fromhex(cp["outbox"][2:]), bytes.fromhex(cp["root"][2:]), cp["index"]
    )
    committee = Committee(
        members=tuple(bytes.fromhex(v[2:]) for v in obj["validators"]),
        threshold=obj["threshold"],
    )
    return (
        [bytes.fromhex(m[2:]) for m in obj["messages"]],
        checkpoint,
        [bytes.fromhex(h[2:]) for h in obj["proof"]],
        committee,
        [bytes.fromhex(s[2:]) for s in obj["signatures"]],
    )


def test_a_batch_is_checked_as_the_inbox_checks_it() -> None:
    messages, checkpoint, proof, committee, signatures = example_batch()
    batch = verify_batch_delivery(
        messages, checkpoint, proof, committee, signatures, local_domain=2, outbox=checkpoint.outbox
    )
    assert [m.nonce for m in batch.messages] == [0, 2, 4, 6]  # gaps: another destination's
    assert len(batch.attestation.signers) == 2

    def refused(error: type[Exception], words: str, **change: Any) -> None:
        """Each change of the valid batch is refused with ``error``, one line naming it."""
        args: dict[str, Any] = {
            "messages": messages,
            "checkpoint": checkpoint,
            "proof": proof,
            "committee": committee,
            "signatures": signatures,
            "local_domain": 2,
        } | change
        with pytest.raises(error, match=words) as caught:
            verify_batch_delivery(**args)
        assert "\n" not in str(caught.value)

    first = Message.decode(messages[0])
    renamed = dataclasses.replace(first, origin=9).encode()
    older = dataclasses.replace(checkpoint, index=3)
    refused(MalformedProofError, "non-empty", messages=[])
    refused(MalformedProofError, "non-empty", messages=messages[0])
    refused(MessageError, "expected a Checkpoint", checkpoint="cp")
    refused(MalformedMessageError, "shorter than the 77-byte header", messages=[b"\x01" * 10])
    refused(WrongOriginError, "message 0: origin 9", messages=[renamed, *messages[1:]])
    refused(WrongDestinationError, "message 0: for domain 2, this is domain 3", local_domain=3)
    refused(NonceBeyondCheckpointError, "message 2: nonce 4 is beyond", checkpoint=older)
    refused(LeavesNotAscendingError, "message 1: nonce 0", messages=[messages[0], *messages])
    refused(LeavesNotAscendingError, "message 1: nonce 0", messages=messages[1::-1])
    refused(WrongOutboxError, "checkpoint is for outbox", outbox=bytes(32))
    refused(AttestationError, "below threshold: 1 of 2", signatures=signatures[:1])
    refused(RootMismatchError, "implies root", messages=[messages[0], *messages[2:]])
    refused(ProofTooShortError, "ends before", messages=messages[:3], proof=proof[:1])
    refused(UnusedProofHashesError, "used", proof=[*proof, proof[0]])


def test_the_proof_file_kind_names_what_is_wrong(tmp_path: Path) -> None:
    """``passerelle proof verify`` on evm-batch-delivery files: the example is valid; a message
    left out, a repeated one, another leaf set's proof are invalid with one line each."""
    obj = json.loads(EXAMPLE.read_text())
    assert proof_files.check_file(EXAMPLE).valid

    def verdict(**change: Any) -> str:
        path = tmp_path / "batch.json"
        path.write_text(json.dumps(obj | change))
        report = proof_files.check_file(path)
        assert report.valid is False, report.reason
        assert "\n" not in report.reason
        return report.reason

    messages, proof = obj["messages"], obj["proof"]
    assert "nonce" in verdict(messages=[messages[0], *messages])  # a repeated message
    assert "implies root" in verdict(messages=messages[:3])  # one left out
    assert "proof hashes" in verdict(proof=[*proof, proof[0]])  # a hash too many
    assert "ends before" in verdict(proof=proof[:2])  # a hash too few
    unusable = tmp_path / "short.json"
    unusable.write_text(json.dumps(obj | {"proof": ["0x12"]}))
    assert proof_files.check_file(unusable).valid is None  # not 32 bytes: exit 2
