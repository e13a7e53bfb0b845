"""GRANDPA finality proofs and read proofs fetched from a node (adapters/substrate/finality.py).

No GRANDPA node can run here (chopsticks has no GRANDPA and cannot serve read proofs, although
it lists ``state_getReadProof``: pinned below), so
the RPC paths are played by a small JSON-RPC server on 127.0.0.1 (a real websocket, answers
shaped as ``sc-consensus-grandpa`` and ``sc-rpc`` shape them) serving real data:

- smoldot's real justification (5 ed25519 precommits, set id 0, target #302592), wrapped in a
  ``FinalityProof`` envelope. No header of #302592 is public, so a stand-in
  :class:`SubstrateHeader` carries its hash and number (all a justification is about); its
  parent hash is made up. The trusted set is the 5 signers, weight 1 each (as in
  ``test_grandpa.py``).
- smoldot's real read proof of Polkadot's genesis state, served for the real Polkadot genesis
  header, rebuilt here from the vector's state root, the empty extrinsics root and no digest:
  it hashes to Polkadot's published genesis hash ``0x91b171bb…90c3`` (asserted).
- Polkadot #512271, a real header signalling a real 197-key ``ScheduledChange``.

What real data cannot give (headers linking a block to a later justification, set changes
enacted on the way, forks) uses synthetic headers and keys generated here, as in
``test_grandpa.py``. One test drives the module through a real :class:`SubstrateClient`:
connected to a proxy in front of chopsticks (chopsticks answers everything, including the
metadata substrate-interface needs on connect; the proxy adds the two proof methods).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio
from conftest import running_chopsticks
from ed25519_zebra import ed_from_seed, ed_sign
from fakes import FakeNode, MemoryRpc, WsRpc, serving, unhex
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.errors import AdapterError
from adapters.substrate.client import SubstrateClient
from adapters.substrate.finality import (
    GET_READ_PROOF,
    PROOF_METHODS,
    PROVE_FINALITY,
    SYSTEM_EVENTS_KEY,
    GrandpaFinality,
    NodeFinalityProof,
    NoFinalityProof,
    NotOnFinalizedChain,
    UnlinkedFinalityProof,
    UnprovenAuthoritySetChange,
    decode_finality_proof,
    encode_finality_proof,
    offered,
    parachain_head,
    paras_heads_key,
    read_proof,
    storage_key,
    twox128,
    verify_finality_proof,
    verify_read_proof,
)
from devnet.chopsticks import (
    ChopsticksProcess,
)
from light_clients.errors import (
    DecodeError,
    FinalityError,
    IncompleteProof,
    TrieProofError,
    VerificationError,
)
from light_clients.hashing import blake2_256
from light_clients.hexstr import to_hex
from light_clients.substrate.grandpa import (
    AuthoritySet,
    AuthoritySetTracker,
    Commit,
    InvalidAuthoritySignature,
    InvalidJustificationTarget,
    Justification,
    SignedPrecommit,
    TooLowCumulativeWeight,
    UnknownAuthorityVote,
    UnsupportedForcedChange,
    decode_justification,
    encode_justification,
    precommit_payload,
)
from light_clients.substrate.header import (
    GRANDPA_ENGINE_ID,
    DigestItem,
    DigestKind,
    ForcedChange,
    ScheduledChange,
    SubstrateHeader,
    decode_header,
    encode_grandpa_log,
    encode_header,
    grandpa_changes,
)
from light_clients.substrate.scale import encode_compact
from light_clients.substrate.trie import EMPTY_TRIE_ROOT, DuplicateProofNode, InvalidStateRoot

T = TypeVar("T")

VECTORS = Path(__file__).parent / "vectors" / "substrate"
PROPERTY = settings(max_examples=200, deadline=None)


# --- real data ----------------------------------------------------------------------------

SMOLDOT = json.loads((VECTORS / "grandpa_smoldot.json").read_text())["justification"]
REAL_RAW = unhex(SMOLDOT["hex"])
REAL = decode_justification(REAL_RAW)
REAL_HASH, REAL_NUMBER = unhex(SMOLDOT["target_hash"]), SMOLDOT["target_number"]
REAL_SIGNERS = tuple(p.authority for p in REAL.commit.precommits)
REAL_SET = AuthoritySet(0, tuple((key, 1) for key in REAL_SIGNERS))
STAND_IN_PARENT = blake2_256(b"stand-in parent of #302592")


def stand_in(block_hash: bytes, number: int, parent: bytes) -> SubstrateHeader:
    """A header known only by hash and number (its bytes are not public): see the docstring."""
    return SubstrateHeader(block_hash, parent, number, bytes(32), bytes(32), (), b"")


REAL_BLOCK = stand_in(REAL_HASH, REAL_NUMBER, STAND_IN_PARENT)
REAL_PROOF = encode_finality_proof(NodeFinalityProof(REAL_HASH, REAL_RAW, ()))

STORAGE = json.loads((VECTORS / "storage_proofs.json").read_text())["vectors"][0]
GENESIS_ROOT = unhex(STORAGE["state_root"])
GENESIS_NODES = [unhex(node) for node in STORAGE["proof_nodes"]]
QUERIES = STORAGE["queries"]
PRESENT_KEY, PRESENT_VALUE = unhex(QUERIES[0]["key"]), unhex(QUERIES[0]["expected_value"])
ABSENT_KEY = unhex(QUERIES[1]["key"])
UNCOVERED_KEY = unhex(QUERIES[2]["key"])
POLKADOT_GENESIS_HASH = unhex("91b171bb158e2d3848fa23a9f1c25182fb8e20313b2c1eb49219da7a70ce90c3")
POLKADOT_GENESIS = decode_header(encode_header(bytes(32), 0, GENESIS_ROOT, EMPTY_TRIE_ROOT))

REAL_HEADERS = {
    v["name"]: decode_header(unhex(v["scale"]))
    for v in json.loads((VECTORS / "headers.json").read_text())["vectors"]
}


# --- synthetic chains and keys ------------------------------------------------------------

KEYS = [ed_from_seed(blake2_256(b"passerelle finality test key %d" % i)) for i in range(12)]
PUBLIC = [public for _, public in KEYS]


def key_set(first: int, count: int, set_id: int) -> AuthoritySet:
    return AuthoritySet(set_id, tuple((PUBLIC[i], 1) for i in range(first, first + count)))


SET1 = key_set(0, 4, 1)
SET2 = key_set(4, 4, 2)


def make_header(
    parent: bytes, number: int, fork: bytes = b"", digest: tuple[DigestItem, ...] = ()
) -> SubstrateHeader:
    state_root = blake2_256(fork + number.to_bytes(4, "little"))
    return decode_header(encode_header(parent, number, state_root, bytes(32), digest))


def frnk(log: ScheduledChange | ForcedChange) -> DigestItem:
    return DigestItem(DigestKind.CONSENSUS, GRANDPA_ENGINE_ID, encode_grandpa_log(log))


def build_chain(
    base: SubstrateHeader,
    length: int,
    fork: bytes = b"",
    digests: dict[int, tuple[DigestItem, ...]] | None = None,
) -> list[SubstrateHeader]:
    headers, parent = [], base
    for _ in range(length):
        number = parent.number + 1
        parent = make_header(parent.hash, number, fork, (digests or {}).get(number, ()))
        headers.append(parent)
    return headers


BASE = make_header(bytes(32), 100)


def justification_for(
    target: SubstrateHeader, signers: Sequence[int], set_id: int, round_: int = 9
) -> bytes:
    precommits = []
    for signer in signers:
        payload = precommit_payload(target.hash, target.number, round_, set_id)
        signature = ed_sign(KEYS[signer][0], payload)
        precommits.append(SignedPrecommit(target.hash, target.number, signature, PUBLIC[signer]))
    commit = Commit(target.hash, target.number, tuple(precommits))
    return encode_justification(Justification(round_, commit, ()))


def proof_for(
    target: SubstrateHeader,
    unknown: Sequence[SubstrateHeader] = (),
    signers: Sequence[int] = (0, 1, 2, 3),
    set_id: int = 1,
) -> bytes:
    justification = justification_for(target, signers, set_id)
    return encode_finality_proof(NodeFinalityProof(target.hash, justification, tuple(unknown)))


# --- a JSON-RPC node on a websocket (tests/fakes.py) ------------------------------------------


@pytest.fixture
def node() -> Iterator[FakeNode]:
    """A FakeNode listening on a free port of 127.0.0.1, shut down afterwards."""
    with serving(FakeNode()) as fake:
        yield fake


@pytest.fixture
def rpc(node: FakeNode) -> Iterator[WsRpc]:
    client = WsRpc(node.url)
    try:
        yield client
    finally:
        client.close()


def run(function: Callable[..., Any], *args: Any) -> Any:
    return trio.run(function, *args)


def real_finality(authority_set: AuthoritySet = REAL_SET) -> GrandpaFinality:
    """Checkpoint: the stand-in parent of #302592, signed after by ``authority_set``."""
    return GrandpaFinality(authority_set, STAND_IN_PARENT, REAL_NUMBER - 1)


# --- offered methods ----------------------------------------------------------------------


def test_offered_reads_rpc_methods(node: FakeNode, rpc: WsRpc) -> None:
    node.serve_proofs({})
    node.serve_read_proof(bytes(32), [])
    assert run(offered, rpc) == PROOF_METHODS
    assert node.calls == [("rpc_methods", [])]


def test_offered_without_the_methods_is_empty(node: FakeNode, rpc: WsRpc) -> None:
    node.on("chain_getHeader", lambda p: None)
    assert run(offered, rpc) == frozenset()


def test_offered_malformed_answer_is_adapter_error(node: FakeNode, rpc: WsRpc) -> None:
    node.on("rpc_methods", lambda p: {"methods": "grandpa_proveFinality"})
    with pytest.raises(AdapterError, match=f"rpc_methods on {node.url}: malformed"):
        run(offered, rpc)


# --- the real justification through the node ----------------------------------------------


def test_real_justification_accepted(node: FakeNode, rpc: WsRpc) -> None:
    node.serve_proofs({REAL_NUMBER: REAL_PROOF})
    finality = real_finality()
    assert run(finality.verify_final, rpc, REAL_BLOCK) is None
    assert node.proved() == [REAL_NUMBER]
    assert (finality.head_hash, finality.head_number) == (REAL_HASH, REAL_NUMBER)
    assert finality.final_hash(REAL_NUMBER) == REAL_HASH
    assert finality.authority_set == REAL_SET  # no set change signalled
    proof = finality.last_proof
    assert proof is not None
    assert (proof.target_hash, proof.target_number, proof.round) == (REAL_HASH, REAL_NUMBER, 439559)
    assert [key for key, _ in proof.signers] == list(REAL_SIGNERS)
    # Asking again needs no proof: the block is at the head.
    run(finality.verify_final, rpc, REAL_BLOCK)
    assert node.proved() == [REAL_NUMBER]


def tampered_signature() -> bytes:
    precommits = list(REAL.commit.precommits)
    first = precommits[0]
    signature = bytes([first.signature[0] ^ 1]) + first.signature[1:]
    precommits[0] = SignedPrecommit(
        first.target_hash, first.target_number, signature, first.authority
    )
    commit = Commit(REAL.commit.target_hash, REAL.commit.target_number, tuple(precommits))
    justification = encode_justification(Justification(REAL.round, commit, ()))
    return encode_finality_proof(NodeFinalityProof(REAL_HASH, justification, ()))


@pytest.mark.parametrize(
    ("proof", "authority_set", "error", "reason"),
    [
        (tampered_signature(), REAL_SET, InvalidAuthoritySignature, "bad signature"),
        (
            REAL_PROOF,
            AuthoritySet(0, ((PUBLIC[0], 1), *((k, 1) for k in REAL_SIGNERS[1:]))),
            UnknownAuthorityVote,
            "not in set 0",
        ),
        (
            REAL_PROOF,
            AuthoritySet(0, (*REAL_SET.authorities, *((PUBLIC[i], 1) for i in range(3)))),
            TooLowCumulativeWeight,
            "weight 5 of 8, need 6",
        ),
        (REAL_PROOF, AuthoritySet(1, REAL_SET.authorities), InvalidAuthoritySignature, "set 1"),
    ],
    ids=["tampered-signature", "unknown-authority", "below-threshold", "wrong-set-id"],
)
def test_real_justification_rejected(
    node: FakeNode,
    rpc: WsRpc,
    proof: bytes,
    authority_set: AuthoritySet,
    error: type[FinalityError],
    reason: str,
) -> None:
    node.serve_proofs({REAL_NUMBER: proof})
    finality = real_finality(authority_set)
    with pytest.raises(error, match=reason) as raised:
        run(finality.verify_final, rpc, REAL_BLOCK)
    assert str(raised.value).startswith(f"{PROVE_FINALITY}({REAL_NUMBER}) on {node.url}: ")
    assert not isinstance(raised.value, AdapterError)
    assert finality.head_number == REAL_NUMBER - 1  # nothing was accepted
    assert finality.final_hash(REAL_NUMBER) is None


def test_justification_for_another_block_at_that_height_rejected(
    node: FakeNode, rpc: WsRpc
) -> None:
    node.serve_proofs({REAL_NUMBER: REAL_PROOF})
    other = stand_in(blake2_256(b"a fork block"), REAL_NUMBER, STAND_IN_PARENT)
    with pytest.raises(InvalidJustificationTarget, match="expected #302592"):
        run(real_finality().verify_final, rpc, other)


def test_proof_naming_another_block_than_its_justification_rejected(
    node: FakeNode, rpc: WsRpc
) -> None:
    lying = encode_finality_proof(NodeFinalityProof(bytes(32), REAL_RAW, ()))
    node.serve_proofs({REAL_NUMBER: lying})
    with pytest.raises(InvalidJustificationTarget, match="the proof names block 0x0000"):
        run(real_finality().verify_final, rpc, REAL_BLOCK)


def test_real_justification_for_a_lower_block_with_no_path_rejected(
    node: FakeNode, rpc: WsRpc
) -> None:
    """The real proof offered for #302591: nothing links it to #302592."""
    node.serve_proofs({REAL_NUMBER - 1: REAL_PROOF})
    parent = stand_in(STAND_IN_PARENT, REAL_NUMBER - 1, blake2_256(b"grandparent"))
    finality = GrandpaFinality(REAL_SET, parent.parent_hash, REAL_NUMBER - 2)
    with pytest.raises(
        UnlinkedFinalityProof, match=r"0 unknown headers, #302592\.\.#302592 needs 1"
    ):
        run(finality.verify_final, rpc, parent)


def test_justification_below_the_block_is_no_finality_proof(node: FakeNode, rpc: WsRpc) -> None:
    """A node's newest justification can lag its finalized head: not a bad proof, retry."""
    child = stand_in(blake2_256(b"child"), REAL_NUMBER + 1, REAL_HASH)
    node.serve_proofs({REAL_NUMBER + 1: REAL_PROOF})
    finality = GrandpaFinality(REAL_SET, REAL_HASH, REAL_NUMBER)
    with pytest.raises(NoFinalityProof, match="finalizes #302592, below #302593"):
        run(finality.verify_final, rpc, child)
    assert finality.head_number == REAL_NUMBER


def test_null_answer_is_no_finality_proof(node: FakeNode, rpc: WsRpc) -> None:
    node.serve_proofs({REAL_NUMBER: None})
    with pytest.raises(NoFinalityProof, match=f"on {node.url}: the node has no justification"):
        run(real_finality().verify_final, rpc, REAL_BLOCK)


def test_node_without_the_method_is_adapter_error(node: FakeNode, rpc: WsRpc) -> None:
    with pytest.raises(AdapterError, match="Method not found") as raised:
        run(real_finality().verify_final, rpc, REAL_BLOCK)
    assert not isinstance(raised.value, NoFinalityProof)


@pytest.mark.parametrize("answer", ["07b5", 1234, {"proof": "0x00"}, "0xzz"])
def test_malformed_answer_is_adapter_error(node: FakeNode, rpc: WsRpc, answer: Any) -> None:
    node.on(PROVE_FINALITY, lambda p: answer)
    with pytest.raises(AdapterError, match=f"on {node.url}: malformed finality proof"):
        run(real_finality().verify_final, rpc, REAL_BLOCK)


@pytest.mark.parametrize(
    "data", [REAL_PROOF[:-1], REAL_PROOF + b"\x00", REAL_PROOF[:32] + b"\xff" + REAL_PROOF[33:]]
)
def test_undecodable_proof_is_a_decode_error(node: FakeNode, rpc: WsRpc, data: bytes) -> None:
    node.serve_proofs({REAL_NUMBER: data})
    with pytest.raises(DecodeError, match=f"on {node.url}: "):
        run(real_finality().verify_final, rpc, REAL_BLOCK)


def test_finality_proof_codec_roundtrip() -> None:
    decoded = decode_finality_proof(REAL_PROOF)
    assert (decoded.block, decoded.justification, decoded.unknown_headers) == (
        REAL_HASH,
        REAL_RAW,
        (),
    )
    chain = build_chain(BASE, 3)
    data = proof_for(chain[-1], chain)
    assert encode_finality_proof(decode_finality_proof(data)) == data
    assert decode_finality_proof(data).unknown_headers == tuple(chain)


# --- descendants, headers by parent hash, forks (synthetic) -------------------------------


def test_descendant_justified_through_unknown_headers(node: FakeNode, rpc: WsRpc) -> None:
    chain = build_chain(BASE, 10)  # #101..#110
    node.serve_chain(chain)
    node.serve_proofs({105: proof_for(chain[9], chain[5:])})  # justifies #110, headers 106..110
    finality = GrandpaFinality(SET1, BASE.hash, BASE.number)
    run(finality.verify_final, rpc, chain[4])
    assert node.proved() == [105]
    fetched = [p[0] for m, p in node.calls if m == "chain_getHeader"]
    assert fetched == [to_hex(h.hash) for h in chain[3::-1]]  # #104..#101 by parent hash
    assert finality.head_number == 110
    assert [finality.final_hash(n) for n in range(100, 111)] == [BASE.hash] + [
        h.hash for h in chain
    ]
    run(finality.verify_final, rpc, chain[7])  # already covered: no new proof
    assert node.proved() == [105]
    fork = build_chain(chain[5], 2, fork=b"fork")  # #107', #108'
    with pytest.raises(NotOnFinalizedChain, match="conflicts with the block proven final"):
        run(finality.verify_final, rpc, fork[1])


def test_proof_for_an_unrelated_block_rejected(node: FakeNode, rpc: WsRpc) -> None:
    chain = build_chain(BASE, 6)
    fork = build_chain(chain[1], 4, fork=b"fork")  # #103'..#106'
    node.serve_chain(chain)
    node.serve_proofs({104: proof_for(fork[-1], fork[2:])})  # #105', #106' justified
    finality = GrandpaFinality(SET1, BASE.hash, BASE.number)
    with pytest.raises(UnlinkedFinalityProof, match="is not the child of #104"):
        run(finality.verify_final, rpc, chain[3])
    assert finality.head_number == 100


@pytest.mark.parametrize(
    ("unknown", "reason"),
    [
        (slice(5, 9), "4 unknown headers, #106..#110 needs 5"),
        (slice(4, 10), "6 unknown headers"),
        (slice(6, 10), "needs 5"),
    ],
)
def test_unknown_headers_must_be_exactly_the_gap(
    node: FakeNode, rpc: WsRpc, unknown: slice, reason: str
) -> None:
    chain = build_chain(BASE, 10)
    node.serve_chain(chain)
    node.serve_proofs({105: proof_for(chain[9], chain[unknown])})
    with pytest.raises(UnlinkedFinalityProof, match=reason):
        run(GrandpaFinality(SET1, BASE.hash, BASE.number).verify_final, rpc, chain[4])


def test_header_not_descending_from_the_checkpoint_rejected(node: FakeNode, rpc: WsRpc) -> None:
    other = build_chain(make_header(bytes(32), 100, fork=b"other"), 3)
    node.serve_chain(other)
    finality = GrandpaFinality(SET1, BASE.hash, BASE.number)
    with pytest.raises(NotOnFinalizedChain, match="does not descend from the last proven"):
        run(finality.verify_final, rpc, other[2])
    assert node.proved() == []


def test_far_target_reached_in_bounded_steps(node: FakeNode, rpc: WsRpc) -> None:
    chain = build_chain(BASE, 10)
    node.serve_chain(chain)
    node.serve_proofs({h.number: proof_for(h) for h in chain})
    finality = GrandpaFinality(SET1, BASE.hash, BASE.number, max_segment=4)
    run(finality.verify_final, rpc, chain[9])
    assert node.proved() == [104, 108, 110]
    assert finality.head_hash == chain[9].hash


def test_blocks_below_the_window_are_checked_by_parent_hash(node: FakeNode, rpc: WsRpc) -> None:
    chain = build_chain(BASE, 10)
    node.serve_chain([BASE, *chain])
    node.serve_proofs({110: proof_for(chain[9])})
    finality = GrandpaFinality(SET1, BASE.hash, BASE.number, history=3)
    run(finality.verify_final, rpc, chain[9])
    assert finality.final_hash(107) is None and finality.final_hash(108) == chain[7].hash
    run(finality.verify_final, rpc, chain[0])  # walks down from #108
    with pytest.raises(NotOnFinalizedChain):
        run(finality.verify_final, rpc, make_header(BASE.hash, 101, fork=b"fork"))


def test_forced_change_in_the_headers_stops(node: FakeNode, rpc: WsRpc) -> None:
    forced = ForcedChange(100, ScheduledChange(SET2.authorities, 0))
    chain = build_chain(BASE, 3, digests={102: (frnk(forced),)})
    node.serve_chain(chain)
    node.serve_proofs({103: proof_for(chain[2])})
    with pytest.raises(UnsupportedForcedChange, match=f"headers from {node.url}"):
        run(GrandpaFinality(SET1, BASE.hash, BASE.number).verify_final, rpc, chain[2])


# --- authority-set changes ----------------------------------------------------------------


def scheduled_chain() -> list[SubstrateHeader]:
    """#101..#110; #103 schedules SET2 with delay 2: #105 is set 1's last block."""
    change = ScheduledChange(SET2.authorities, 2)
    return build_chain(BASE, 10, digests={103: (frnk(change),)})


def test_set_change_proven_block_by_block(node: FakeNode, rpc: WsRpc) -> None:
    chain = scheduled_chain()
    node.serve_chain(chain)
    # What a node answers: for #105 (set 1) the justification of set 1's last block, #105;
    # for #110 (the latest set) its newest justification, signed by set 2.
    node.serve_proofs(
        {105: proof_for(chain[4]), 110: proof_for(chain[9], signers=(4, 5, 6, 7), set_id=2)}
    )
    finality = GrandpaFinality(SET1, BASE.hash, BASE.number)
    run(finality.verify_final, rpc, chain[9])
    assert node.proved() == [105, 110]
    assert finality.authority_set == SET2
    assert finality.head_number == 110 and finality.pending is None


def test_set_change_inside_a_proof_rejected(node: FakeNode, rpc: WsRpc) -> None:
    """A proof for #102 by the new set, spanning the change: set 1 never finalized #105."""
    chain = scheduled_chain()
    node.serve_chain(chain)
    node.serve_proofs({102: proof_for(chain[9], chain[2:], signers=(4, 5, 6, 7), set_id=2)})
    finality = GrandpaFinality(SET1, BASE.hash, BASE.number)
    with pytest.raises(UnprovenAuthoritySetChange, match="set 1 ends before #110"):
        run(finality.verify_final, rpc, chain[1])
    assert finality.authority_set == SET1 and finality.head_number == 100


def test_enacting_block_signed_by_the_new_set_rejected(node: FakeNode, rpc: WsRpc) -> None:
    chain = scheduled_chain()
    node.serve_chain(chain)
    node.serve_proofs({105: proof_for(chain[4], signers=(4, 5, 6, 7), set_id=2)})
    with pytest.raises(UnknownAuthorityVote, match="not in set 1"):
        run(GrandpaFinality(SET1, BASE.hash, BASE.number).verify_final, rpc, chain[9])


def test_real_polkadot_scheduled_change_followed(node: FakeNode, rpc: WsRpc) -> None:
    """Real header #512271 signals Polkadot's next 197 authorities (delay 0); a synthetic set 5
    finalizes it, and from then on the real set is the one that must sign."""
    header = REAL_HEADERS["polkadot-512271"]
    node.serve_proofs({header.number: proof_for(header, set_id=5)})
    finality = GrandpaFinality(key_set(0, 4, 5), header.parent_hash, header.number - 1)
    run(finality.verify_final, rpc, header)
    [change] = grandpa_changes(header)
    assert finality.authority_set == AuthoritySet(6, change.next_authorities)
    assert len(finality.authority_set.authorities) == 197


# --- read proofs --------------------------------------------------------------------------


def test_polkadot_genesis_header_is_real() -> None:
    assert POLKADOT_GENESIS.hash == POLKADOT_GENESIS_HASH
    assert POLKADOT_GENESIS.state_root == GENESIS_ROOT


def test_read_proof_real_values(node: FakeNode, rpc: WsRpc) -> None:
    node.serve_read_proof(POLKADOT_GENESIS_HASH, GENESIS_NODES)
    values = run(read_proof, rpc, [PRESENT_KEY, ABSENT_KEY, PRESENT_KEY], POLKADOT_GENESIS)
    assert values == {PRESENT_KEY: PRESENT_VALUE, ABSENT_KEY: None}
    assert node.calls == [
        (GET_READ_PROOF, [[to_hex(PRESENT_KEY), to_hex(ABSENT_KEY)], to_hex(POLKADOT_GENESIS_HASH)])
    ]
    assert run(read_proof, rpc, [], POLKADOT_GENESIS) == {}
    assert len(node.calls) == 1  # no keys, no call


def test_read_proof_uncovered_key_is_incomplete_not_absent(node: FakeNode, rpc: WsRpc) -> None:
    node.serve_read_proof(POLKADOT_GENESIS_HASH, GENESIS_NODES)
    with pytest.raises(IncompleteProof, match=f"{GET_READ_PROOF} at #0 on {node.url}: node 0x"):
        run(read_proof, rpc, [PRESENT_KEY, UNCOVERED_KEY], POLKADOT_GENESIS)


def test_read_proof_tampered_node_rejected(node: FakeNode, rpc: WsRpc) -> None:
    nodes = list(GENESIS_NODES)
    nodes[3] = nodes[3][:-1] + bytes([nodes[3][-1] ^ 1])
    node.serve_read_proof(POLKADOT_GENESIS_HASH, nodes)
    with pytest.raises(IncompleteProof, match="is not in the proof"):
        run(read_proof, rpc, [PRESENT_KEY], POLKADOT_GENESIS)


def test_read_proof_under_another_root_rejected(node: FakeNode, rpc: WsRpc) -> None:
    rococo = REAL_HEADERS["rococo-2021-04-08"]  # a real header with another state root
    node.serve_read_proof(rococo.hash, GENESIS_NODES)
    with pytest.raises(IncompleteProof, match="root node 0x6661afb7"):
        run(read_proof, rpc, [PRESENT_KEY], rococo)


def test_read_proof_zero_root_rejected(node: FakeNode, rpc: WsRpc) -> None:
    """chopsticks' blocks have all-zero state roots: nothing can be proven under them."""
    zero = decode_header(encode_header(blake2_256(b"parent"), 1, bytes(32), bytes(32)))
    node.serve_read_proof(zero.hash, GENESIS_NODES)
    with pytest.raises(InvalidStateRoot, match="zero"):
        run(read_proof, rpc, [PRESENT_KEY], zero)


def test_read_proof_duplicate_node_rejected(node: FakeNode, rpc: WsRpc) -> None:
    node.serve_read_proof(POLKADOT_GENESIS_HASH, [*GENESIS_NODES, GENESIS_NODES[0]])
    with pytest.raises(DuplicateProofNode):
        run(read_proof, rpc, [PRESENT_KEY], POLKADOT_GENESIS)


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ({"at": to_hex(bytes(32)), "proof": []}, "the proof is at block 0x0000"),
        ({"at": to_hex(POLKADOT_GENESIS_HASH)}, "malformed answer"),
        ({"at": "0x12", "proof": []}, "malformed block hash"),
        ({"at": to_hex(POLKADOT_GENESIS_HASH), "proof": ["zz"]}, "malformed proof node"),
        (None, "malformed answer"),
    ],
)
def test_read_proof_malformed_answer_is_adapter_error(
    node: FakeNode, rpc: WsRpc, answer: Any, reason: str
) -> None:
    node.on(GET_READ_PROOF, lambda p: answer)
    with pytest.raises(AdapterError, match=reason) as raised:
        run(read_proof, rpc, [PRESENT_KEY], POLKADOT_GENESIS)
    assert node.url in str(raised.value)


def test_storage_keys() -> None:
    from substrateinterface.utils.hasher import two_x64_concat, xxh128  # noqa: PLC0415

    # The well-known key of System.Events (every Substrate chain).
    assert (
        unhex("26aa394eea5630e07c48ae0c9558cef780d41e5e16056765bc8461851072c9d7")
        == SYSTEM_EVENTS_KEY
    )
    assert bytes(xxh128(b"System")) + bytes(xxh128(b"Events")) == SYSTEM_EVENTS_KEY
    assert twox128(b"Paras") == bytes(xxh128(b"Paras"))
    assert storage_key("Paras", "Heads") == unhex(
        "cd710b30bd2eab0352ddcc26417aa1941b3c252fcb29d88eff4f3de5de4476c3"
    )
    assert paras_heads_key(1000) == storage_key("Paras", "Heads") + bytes(
        two_x64_concat((1000).to_bytes(4, "little"))
    )


def test_parachain_head_from_head_data() -> None:
    header = REAL_HEADERS["rococo-2021-04-08"]
    assert parachain_head(encode_compact(len(header.raw)) + header.raw) == header
    with pytest.raises(DecodeError):
        parachain_head(encode_compact(len(header.raw)) + header.raw + b"\x00")
    with pytest.raises(DecodeError, match="head data is not a header"):
        parachain_head(encode_compact(3) + b"\x00\x01\x02")


# --- property tests: mutated proofs -------------------------------------------------------


def mutate(data: bytes, draw: st.DataObject) -> bytes:
    kind = draw.draw(st.sampled_from(["flip", "truncate", "insert", "delete", "splice"]))
    at = draw.draw(st.integers(0, len(data) - 1))
    if kind == "flip":
        return data[:at] + bytes([data[at] ^ draw.draw(st.integers(1, 255))]) + data[at + 1 :]
    if kind == "truncate":
        return data[:at]
    if kind == "insert":
        return data[:at] + draw.draw(st.binary(min_size=1, max_size=40)) + data[at:]
    if kind == "delete":
        return data[:at] + data[at + draw.draw(st.integers(1, 40)) :]
    return data[:at] + draw.draw(st.binary(min_size=1, max_size=40))


@PROPERTY
@given(st.data())
def test_mutated_finality_proof_never_accepts_something_else(data: st.DataObject) -> None:
    mutated = mutate(REAL_PROOF, data)
    tracker = AuthoritySetTracker(REAL_SET, STAND_IN_PARENT, REAL_NUMBER - 1)
    try:
        finalized = verify_finality_proof(mutated, REAL_BLOCK, tracker)
    except (VerificationError, NoFinalityProof):
        assert tracker.head_number == REAL_NUMBER - 1  # never modified
        return
    # Accepted only if it still proves exactly the real block with the real votes.
    assert finalized.justified == REAL_BLOCK
    assert (finalized.proof.target_hash, finalized.proof.target_number) == (REAL_HASH, REAL_NUMBER)
    assert [key for key, _ in finalized.proof.signers] == list(REAL_SIGNERS)


@PROPERTY
@given(st.data())
def test_mutated_proof_through_the_node_leaves_the_state_alone(data: st.DataObject) -> None:
    fake = FakeNode()
    fake.serve_proofs({REAL_NUMBER: mutate(REAL_PROOF, data)})
    finality = real_finality()
    try:
        run(finality.verify_final, MemoryRpc(fake), REAL_BLOCK)
    except (VerificationError, AdapterError):
        assert (finality.head_number, finality.last_proof) == (REAL_NUMBER - 1, None)
        return
    assert finality.head_hash == REAL_HASH


@PROPERTY
@given(st.data())
def test_mutated_read_proof_never_proves_another_value(data: st.DataObject) -> None:
    nodes = list(GENESIS_NODES)
    action = data.draw(st.sampled_from(["mutate", "drop", "duplicate", "add"]))
    index = data.draw(st.integers(0, len(nodes) - 1))
    if action == "mutate":
        nodes[index] = mutate(nodes[index], data)
    elif action == "drop":
        del nodes[index]
    elif action == "duplicate":
        nodes.append(nodes[index])
    else:
        nodes.insert(index, data.draw(st.binary(max_size=80)))
    try:
        values = verify_read_proof(GENESIS_ROOT, nodes, [PRESENT_KEY, ABSENT_KEY])
    except (TrieProofError, DecodeError):
        return
    assert values == {PRESENT_KEY: PRESENT_VALUE, ABSENT_KEY: None}


# --- chopsticks, and a real SubstrateClient -----------------------------------------------


@pytest.fixture(scope="module")
def chopsticks() -> Iterator[ChopsticksProcess]:
    """One chopsticks for these tests (nobody funded), always stopped."""
    yield from running_chopsticks({})


async def connected_scenario(url: str, scenario: Callable[[SubstrateClient], Any]) -> Any:
    async with SubstrateClient(url) as client:
        return await scenario(client)


@pytest.mark.chain
def test_chopsticks_proves_nothing(chopsticks: ChopsticksProcess) -> None:
    """chopsticks 1.5.1 has no GRANDPA, and *lists* ``state_getReadProof`` without being able
    to serve it (no upstream node; its state roots are zero anyway): listing is not offering,
    which is why its finality policy is the named ``devnet-instant``."""

    async def scenario(client: SubstrateClient) -> tuple[frozenset[str], list[AdapterError]]:
        methods = await offered(client)
        head = await client.finalized_head()
        errors = []
        with pytest.raises(AdapterError) as raised:
            await real_finality().verify_final(client, REAL_BLOCK)
        errors.append(raised.value)
        with pytest.raises(AdapterError) as raised:
            await read_proof(client, [SYSTEM_EVENTS_KEY], head)
        errors.append(raised.value)
        with pytest.raises(InvalidStateRoot):  # what a served proof would meet
            verify_read_proof(head.state_root, [], [SYSTEM_EVENTS_KEY])
        return methods, errors

    methods, errors = trio.run(connected_scenario, chopsticks.ws_url, scenario)
    assert methods == frozenset({GET_READ_PROOF})
    assert str(errors[0]).startswith(f"{PROVE_FINALITY} on {chopsticks.ws_url}: ")
    assert "Method not found" in str(errors[0])
    assert str(errors[1]).startswith(f"{GET_READ_PROOF} on {chopsticks.ws_url}: ")


@pytest.mark.chain
def test_substrate_client_through_a_proving_proxy(
    chopsticks: ChopsticksProcess, node: FakeNode
) -> None:
    """SubstrateClient (metadata and all from chopsticks) against a node that adds the proofs."""
    node.upstream = chopsticks.ws_url
    node.extra_methods = sorted(PROOF_METHODS)
    node.serve_proofs({REAL_NUMBER: REAL_PROOF})
    node.serve_read_proof(POLKADOT_GENESIS_HASH, GENESIS_NODES)

    async def scenario(client: SubstrateClient) -> None:
        assert await offered(client) == PROOF_METHODS
        finality = real_finality()
        await finality.verify_final(client, REAL_BLOCK)
        assert finality.head_hash == REAL_HASH
        with pytest.raises(InvalidAuthoritySignature, match=f"on {node.url}: precommit #0"):
            await real_finality(AuthoritySet(1, REAL_SET.authorities)).verify_final(
                client, REAL_BLOCK
            )
        values = await read_proof(client, [PRESENT_KEY, ABSENT_KEY], POLKADOT_GENESIS)
        assert values == {PRESENT_KEY: PRESENT_VALUE, ABSENT_KEY: None}
        with pytest.raises(IncompleteProof, match=node.url):
            await read_proof(client, [UNCOVERED_KEY], POLKADOT_GENESIS)

    trio.run(connected_scenario, node.url, scenario)
    assert (PROVE_FINALITY, [REAL_NUMBER]) in node.calls
