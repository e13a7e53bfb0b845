"""Inbox v2 on a real anvil chain: one multiproof per batch, nonce bitmaps as the replay guard.

The hostile cases of issue #11: a proof for other leaves, a proof that omits a leaf, a batch
that repeats (or reorders) a nonce, the bitmap word boundary (nonces 255/256), a recipient
re-entering with the batch that is calling it, and a replaced outbox whose nonces restart at
0. The safety properties v1 had (signatures, roots, origin, fork guard, stipend, revert-data
cap, retry) are tested in tests/test_contracts.py, unchanged in meaning.
"""

from __future__ import annotations

import pytest
import trio
from web3 import Web3
from web3.contract import Contract

from adapters.evm.chain import EvmChain
from adapters.rpc import JsonRpcClient
from devnet.anvil import AnvilProcess
from light_clients.hashing import keccak256
from light_clients.message import Message
from light_clients.multiproof import build_multiproof, pack_messages, unpack_messages
from relayer.families.evm.delivery import guard_slot, inbox_delivery_state
from tests.test_contracts import (
    USER,
    A,
    B,
    C,
    Lane,
    Route,
    as_tuple,
    assert_rejected,
    attest,
    deploy,
    events,
    is_delivered,
    make_route,
    pad,
    send,
)
from tests.test_multiproof import deploy_source

pytestmark = pytest.mark.chain


@pytest.fixture(scope="module")
def w3(anvil: AnvilProcess) -> Web3:
    web3 = Web3(Web3.HTTPProvider(anvil.rpc_url, request_kwargs={"timeout": 30}))
    assert web3.is_connected()
    return web3


@pytest.fixture(scope="module")
def route(w3: Web3) -> Route:
    return make_route(w3)


def dispatch_to(route: Route, destinations: list[int]) -> list[int]:
    """One Ping message per entry, to that domain; their nonces."""
    nonces = []
    for destination in destinations:
        message, _ = route.lane.dispatch(destination, pad(route.ping.address), b"hi")
        nonces.append(Message.decode(message).nonce)
    return nonces


def test_gaps_are_fine_an_interleaved_origin_delivers_one_destination(route: Route) -> None:
    """The origin interleaves B and C; the inbox on B gets B's nonces, gaps and all."""
    nonces = dispatch_to(route, [B, C, C, B, C, B, B, C])
    ours = [n for n, d in zip(nonces, [B, C, C, B, C, B, B, C], strict=True) if d == B]
    before = route.ping.functions.count().call()
    receipt = route.process(*route.lane.batch(ours))
    assert [e["nonce"] for e in events(route.inbox, "Delivered", receipt)] == ours
    assert route.ping.functions.count().call() == before + len(ours)


def test_a_proof_for_other_leaves_is_refused(route: Route) -> None:
    nonces = dispatch_to(route, [B] * 4)
    cp, sigs, _, _ = route.lane.batch(nonces)
    _, _, packed, _ = route.lane.batch(nonces[:2])
    _, _, _, other = route.lane.batch(nonces[2:])
    process = route.inbox.functions.process
    assert_rejected(
        process(cp, sigs, packed, other), ("InvalidProof", "UnusedProofHashes", "ProofTooShort")
    )
    assert not any(is_delivered(route.inbox, m) for m in unpack_messages(packed))


def test_a_proof_that_omits_a_leaf_is_refused(route: Route) -> None:
    """Proven: n, n+1, n+2. Sent: n and n+2. n+1's hash is in no message and no proof."""
    nonces = dispatch_to(route, [B] * 3)
    cp, sigs, packed, proof = route.lane.batch(nonces)
    messages = unpack_messages(packed)
    without = pack_messages([messages[0], messages[2]])
    process = route.inbox.functions.process
    assert_rejected(process(cp, sigs, without, proof), ("InvalidProof", "ProofTooShort"))
    assert_rejected(process(cp, sigs, packed, proof[:-1]), "ProofTooShort")
    # And the honest proof of exactly those two passes.
    _, _, _, honest = route.lane.batch([nonces[0], nonces[2]])
    route.process(cp, sigs, without, honest)
    assert [is_delivered(route.inbox, m) for m in messages] == [True, False, True]


def test_a_batch_that_repeats_or_reorders_a_nonce_is_refused(route: Route) -> None:
    """A repeated leaf would be delivered once and counted twice in the proof; the inbox
    requires strictly ascending nonces, whatever the proof."""
    nonces = dispatch_to(route, [B] * 2)
    cp, sigs, packed, proof = route.lane.batch(nonces)
    first, second = unpack_messages(packed)
    process = route.inbox.functions.process
    assert assert_rejected(
        process(cp, sigs, pack_messages([first, first, second]), proof), "NoncesNotAscending"
    ) == (1, nonces[0])
    assert assert_rejected(
        process(cp, sigs, pack_messages([second, first]), proof), "NoncesNotAscending"
    ) == (1, nonces[0])
    assert not is_delivered(route.inbox, first)


def test_the_bitmap_word_boundary_at_nonces_255_and_256(w3: Web3) -> None:
    """Nonces 254..257 straddle two guard words; each bit is where the relayer's proof of
    delivery (relayer.families.evm.delivery.guard_slot) reads it."""
    fresh = make_route(w3)
    nonces = fresh.ping_messages(258)
    assert nonces[-1] == 257
    batch = [254, 255, 256, 257]
    receipt = fresh.process(*fresh.lane.batch(batch))
    assert [e["nonce"] for e in events(fresh.inbox, "Delivered", receipt)] == batch
    outbox = pad(fresh.lane.outbox.address)
    words = {
        word: int.from_bytes(
            w3.eth.get_storage_at(fresh.inbox.address, guard_slot(A, outbox, word * 256)), "big"
        )
        for word in (0, 1)
    }
    assert words == {0: (1 << 254) | (1 << 255), 1: 0b11}
    assert [fresh.inbox.functions.delivered(A, outbox, w).call() for w in (0, 1)] == [
        words[0],
        words[1],
    ]
    assert [is_delivered(fresh.inbox, fresh.lane.messages[n]) for n in (253, 258 - 1)] == [
        False,
        True,
    ]
    # A replay across the boundary is skipped bit by bit; the undelivered neighbour goes in.
    receipt = fresh.process(*fresh.lane.batch([253, 255, 256]))
    assert [e["nonce"] for e in events(fresh.inbox, "Delivered", receipt)] == [253]
    skipped = [e["id"] for e in events(fresh.inbox, "AlreadyDelivered", receipt)]
    assert skipped == [keccak256(fresh.lane.messages[n]) for n in (255, 256)]


def test_a_new_outbox_restarts_nonces_without_reading_as_replays(w3: Web3) -> None:
    """The guard is kept per outbox: when the owner moves an origin to a new outbox, its
    nonce 0 is a new message, not the old outbox's nonce 0 again."""
    fresh = make_route(w3)
    (old_nonce,) = fresh.ping_messages(1)
    fresh.process(*fresh.lane.batch([old_nonce]))
    replacement = Lane(deploy(w3, "Outbox", A), A)
    send(fresh.inbox.functions.setOrigin(A, pad(replacement.outbox.address)))
    message, _ = replacement.dispatch(B, pad(fresh.ping.address), b"new outbox")
    assert Message.decode(message).nonce == old_nonce == 0
    before = fresh.ping.functions.count().call()
    receipt = fresh.process(*replacement.batch([0]))
    assert [e["id"] for e in events(fresh.inbox, "Delivered", receipt)] == [keccak256(message)]
    assert fresh.ping.functions.count().call() == before + 1


REENTERER = """
// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.30;
/// Re-enters the inbox from `handle` with a call prepared in advance (the batch itself).
contract Reenterer {
    address public inbox;
    bytes public payload;
    bool public innerOk;
    function arm(address inbox_, bytes calldata payload_) external {
        inbox = inbox_;
        payload = payload_;
    }
    function handle(uint32, bytes32, bytes calldata) external {
        if (msg.sender != inbox || payload.length == 0) return;
        bytes memory call_ = payload;
        delete payload;
        (innerOk, ) = inbox.call(call_);
    }
}
"""


def reenterer(w3: Web3) -> Contract:
    return deploy_source(w3, "Reenterer", {"Reenterer.sol": REENTERER})


def test_a_recipient_reentering_with_its_own_batch_delivers_nothing_twice(w3: Web3) -> None:
    """Message 0 goes to a recipient that re-submits the whole batch from `handle`; message 1
    to an account without code (refused without a call, so the inner call needs no stipend).
    Message 0's bit is set before the call, so the inner call skips it; the inner call takes
    message 1 (same guard word), and the outer one, reading the word afresh, skips it."""
    fresh = make_route(w3)
    hostile = reenterer(w3)
    first, _ = fresh.lane.dispatch(B, pad(hostile.address), b"re-enter")
    second, _ = fresh.lane.dispatch(B, pad(USER), b"to an account without code")
    args = fresh.lane.batch([0, 1])
    send(hostile.functions.arm(fresh.inbox.address, fresh.inbox.encode_abi("process", args)))
    receipt = fresh.process(*args)
    assert hostile.functions.innerOk().call()
    failed = [e["id"] for e in events(fresh.inbox, "HandleFailed", receipt)]
    assert failed == [keccak256(second)]  # once, by the inner call
    skipped = [e["id"] for e in events(fresh.inbox, "AlreadyDelivered", receipt)]
    assert skipped == [keccak256(first), keccak256(second)]  # inner skips 0, outer skips 1
    assert [e["id"] for e in events(fresh.inbox, "Delivered", receipt)] == [keccak256(first)]
    assert is_delivered(fresh.inbox, first) and is_delivered(fresh.inbox, second)


def test_an_older_checkpoint_and_the_zero_subtrees_it_implies(route: Route) -> None:
    """Siblings right of the checkpoint's count are zero subtrees the inbox fills in: a proof
    carrying them explicitly is one with unused hashes, refused."""
    nonces = dispatch_to(route, [B] * 3)
    count = nonces[0] + 1
    tree = route.lane.tree(count)
    checkpoint = route.lane.checkpoint(count)
    honest = list(build_multiproof(tree, [nonces[0]]))
    padded = list(tree.proof(nonces[0]))  # the full 32-hash branch, zero subtrees included
    assert len(padded) > len(honest)
    message = pack_messages([route.lane.messages[nonces[0]]])
    process = route.inbox.functions.process
    assert_rejected(
        process(as_tuple(checkpoint), attest(checkpoint), message, padded), "UnusedProofHashes"
    )
    route.process(as_tuple(checkpoint), attest(checkpoint), message, honest)
    assert is_delivered(route.inbox, route.lane.messages[nonces[0]])


def test_the_relayer_reads_delivery_from_proven_guard_words(w3: Web3, anvil: AnvilProcess) -> None:
    """``inbox_delivery_state`` (what the relayer records ``delivered`` from) proves the guard
    word and ``failedMessage`` slot of each message with ``eth_getProof``: delivered, handled
    or failed as the chain says; a message of an origin it does not know, or bytes that are no
    message, read as not accepted (never recorded delivered)."""
    fresh = make_route(w3)
    send(fresh.flaky.functions.setMode(1))  # Revert
    (ok,) = fresh.ping_messages(1)
    failing, _ = fresh.lane.dispatch(B, pad(fresh.flaky.address), b"fails")
    (waiting,) = fresh.ping_messages(1)
    fresh.process(*fresh.lane.batch([ok, Message.decode(failing).nonce]))
    delivered, pending = fresh.lane.messages[ok], fresh.lane.messages[waiting]
    stranger = Message.decode(delivered)
    foreign = Message(1, stranger.nonce, C, stranger.sender, B, stranger.recipient, b"x").encode()
    junk = b"\x01" * 10
    outbox = pad(fresh.lane.outbox.address)
    inbox = bytes.fromhex(fresh.inbox.address[2:])

    async def read() -> dict[bytes, tuple[bool, bool]]:
        async with JsonRpcClient([anvil.rpc_url]) as client:
            evm = EvmChain(client, domain=B, finality="devnet-instant")
            header = await evm.final_header()
            messages = [delivered, failing, pending, foreign, junk]
            return await inbox_delivery_state(evm, inbox, header, messages, {A: outbox})

    state = trio.run(read)
    assert state == {
        keccak256(delivered): (True, False),
        keccak256(failing): (True, True),
        keccak256(pending): (False, False),
        keccak256(foreign): (False, False),
        keccak256(junk): (False, False),
    }
