"""Inbox v2 on a real anvil chain: one multiproof per batch, nonce bitmaps as the replay guard.

The hostile cases of issue #11: a proof for other leaves, a proof that omits a leaf, a batch
that repeats (or reorders) a nonce, the bitmap word boundary (nonces 255/256), a recipient
re-entering with the batch that is calling it, and a replaced outbox whose nonces restart at
0. The safety properties v1 had (signatures, roots, origin, fork guard, stipend, revert-data
cap, retry) are tested in tests/test_contracts.py, unchanged in meaning.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio
from web3 import Web3
from web3.contract import Contract

from adapters.evm.chain import EvmChain
from adapters.rpc import JsonRpcClient
from devnet.anvil import AnvilProcess
from light_clients.committee import Checkpoint, address_of
from light_clients.hashing import keccak256
from light_clients.merkle import IncrementalMerkleTree
from light_clients.message import MAX_MESSAGE_BYTES, Message
from light_clients.multiproof import build_multiproof, pack_messages, unpack_messages
from relayer import rebuild
from relayer.families.evm.delivery import EvmDelivery, guard_slot, inbox_delivery_state
from relayer.ledger import DiscoveredMessage, MessageStatus, NewTransaction, TxStatus, open_ledger
from relayer.relay import Lane as RelayerLane
from relayer.relay import RelayerMetrics
from tests.test_contracts import (
    ATTACKER,
    COMMITTEE_KEYS,
    DEPLOYER,
    OTHER_USER,
    THRESHOLD,
    USER,
    A,
    B,
    C,
    Lane,
    Route,
    as_tuple,
    assert_rejected,
    attest,
    checksum,
    decode_error,
    deploy,
    events,
    failed_id,
    is_delivered,
    make_route,
    pad,
    send,
)
from tests.test_ledger import (
    DEST,
    ORIGIN,
    OTHER_ORIGIN,
    OUTBOX,
    checkpoint_for,
    disc,
    drive,
    msg_id,
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
/// Re-enters the inbox from `handle` with a call prepared in advance (the batch itself); if
/// the inner call fails, `handle` fails with its revert data (and stays armed).
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
        bytes memory data;
        (innerOk, data) = inbox.call(call_);
        if (!innerOk) {
            assembly {
                revert(add(data, 32), mload(data))
            }
        }
    }
}
"""


def reenterer(w3: Web3) -> Contract:
    return deploy_source(w3, "Reenterer", {"Reenterer.sol": REENTERER})


def test_a_recipient_reentering_with_its_own_batch_delivers_nothing_twice(w3: Web3) -> None:
    """Message 0 goes to a recipient that re-submits the batch of messages 0 and 1 from
    `handle`; message 1 to an account without code (refused without a call).

    From `process` the re-entry gets nowhere: a handle's stipend (HANDLE_GAS) is below the
    MESSAGE_GAS_NEEDED any delivery needs before its first message, so the inner call reverts
    InsufficientGas and message 0 is parked with that reason. From `retry`, which forwards
    all its gas, the inner call runs: message 0's bit was set when it was accepted, so it
    skips it; it takes message 1 once; and a later batch of both skips both."""
    fresh = make_route(w3)
    hostile = reenterer(w3)
    first, _ = fresh.lane.dispatch(B, pad(hostile.address), b"re-enter")
    second, _ = fresh.lane.dispatch(B, pad(USER), b"to an account without code")
    both = fresh.lane.batch([0, 1])
    send(hostile.functions.arm(fresh.inbox.address, fresh.inbox.encode_abi("process", both)))
    receipt = fresh.process(*fresh.lane.batch([0]))
    (failed,) = events(fresh.inbox, "HandleFailed", receipt)
    assert failed["id"] == keccak256(first)
    assert decode_error(failed["reason"]) == ("InsufficientGas", ())
    assert not is_delivered(fresh.inbox, second)
    receipt = send(fresh.inbox.functions.retry(first), gas=3_000_000)
    assert hostile.functions.innerOk().call()
    failed_ids = [e["id"] for e in events(fresh.inbox, "HandleFailed", receipt)]
    assert failed_ids == [keccak256(second)]  # once, by the inner call
    skipped = [e["id"] for e in events(fresh.inbox, "AlreadyDelivered", receipt)]
    assert skipped == [keccak256(first)]  # the inner call skips 0
    assert [e["id"] for e in events(fresh.inbox, "Delivered", receipt)] == [keccak256(first)]
    again = fresh.process(*both)
    skipped = [e["id"] for e in events(fresh.inbox, "AlreadyDelivered", again)]
    assert skipped == [keccak256(first), keccak256(second)]
    assert not events(fresh.inbox, "Delivered", again)
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


# ------------------------------------------------------------------ hostile review of Inbox v2


def test_a_parked_message_is_retried_only_while_its_committee_is_trusted(w3: Web3) -> None:
    """The review's PoC, both variants. Plain (protect, process, unprotect, retry): the
    message was attested by a committee still trusted, so it is retried — a parked message
    is not lost. Revoked in between: what the revoked committee attested is never retried,
    whoever asks; the owner can also void a record (discardFailed)."""
    fresh = make_route(w3)
    inbox, ping = fresh.inbox, fresh.ping
    outbox = pad(fresh.lane.outbox.address)
    send(inbox.functions.setProtected(ping.address, True))
    (plain,) = fresh.ping_messages(1)
    assert events(inbox, "HandleFailed", fresh.process(*fresh.lane.batch([plain])))
    send(inbox.functions.setProtected(ping.address, False))
    before = ping.functions.count().call()
    send(inbox.functions.retry(fresh.lane.messages[plain]), sender=OTHER_USER)
    assert ping.functions.count().call() == before + 1
    # Protect, park a message "forged" by a bad committee, revoke that committee at once.
    send(inbox.functions.setProtected(ping.address, True))
    (forged,) = fresh.ping_messages(1)
    fresh.process(*fresh.lane.batch([forged]))
    message = fresh.lane.messages[forged]
    assert inbox.functions.failedMessage(
        inbox.functions.failureKey(A, outbox, forged).call()
    ).call() == [keccak256(message)[:24], 1, 1]
    send(inbox.functions.revokeCommittee())
    assert_rejected(inbox.functions.process(*fresh.lane.batch([forged])), "NoCommittee")
    send(inbox.functions.setCommittee([address_of(k) for k in COMMITTEE_KEYS], THRESHOLD))
    send(inbox.functions.setProtected(ping.address, False))  # service resumes
    assert assert_rejected(
        inbox.functions.retry(message), "CommitteeRevokedSince", sender=OTHER_USER
    ) == (1, 1)
    assert ping.functions.count().call() == before + 1
    # The owner voids the record for good (at once: this inbox has no change delay).
    receipt = send(inbox.functions.discardFailed(A, outbox, forged))
    assert events(inbox, "FailedDiscarded", receipt) == [
        {"id": keccak256(message)[:24], "origin": A, "outbox": outbox, "nonce": forged}
    ]
    assert failed_id(inbox, message) == bytes(24)
    assert_rejected(inbox.functions.retry(message), "NotFailed")
    assert_rejected(inbox.functions.discardFailed(A, outbox, forged), "NotFailed")


def test_failure_records_are_per_outbox_and_die_with_the_origin_trust(w3: Web3) -> None:
    """Two byte-identical messages (same sender, recipient, body and nonce 0) from two outboxes
    of one origin get two records, and retrying one leaves the other. A record made before the
    origin was untrusted (even if trusted again since, same outbox) is never retried."""
    fresh = make_route(w3)
    inbox, flaky = fresh.inbox, fresh.flaky
    send(flaky.functions.setMode(1))  # Revert
    old_outbox = pad(fresh.lane.outbox.address)
    first, _ = fresh.lane.dispatch(B, pad(flaky.address), b"same bytes")
    fresh.process(*fresh.lane.batch([0]))
    replacement = Lane(deploy(w3, "Outbox", A), A)
    new_outbox = pad(replacement.outbox.address)
    send(inbox.functions.setOrigin(A, new_outbox))
    second, _ = replacement.dispatch(B, pad(flaky.address), b"same bytes")
    assert second == first
    fresh.process(*replacement.batch([0]))
    keys = [inbox.functions.failureKey(A, o, 0).call() for o in (old_outbox, new_outbox)]
    assert keys[0] != keys[1]
    assert [inbox.functions.failedMessage(k).call()[0] for k in keys] == [keccak256(first)[:24]] * 2
    send(flaky.functions.setMode(0))
    send(inbox.functions.retry(second))
    assert [inbox.functions.failedMessage(k).call()[0] for k in keys] == [
        keccak256(first)[:24],
        bytes(24),
    ]
    # Parked under the new outbox, then the origin untrusted (at once) and trusted again.
    send(flaky.functions.setMode(1))
    parked, _ = replacement.dispatch(B, pad(flaky.address), b"parked")
    fresh.process(*replacement.batch([1]))
    send(flaky.functions.setMode(0))
    era = inbox.functions.originEra(A).call()
    send(inbox.functions.setOrigin(A, bytes(32)))
    assert assert_rejected(inbox.functions.retry(parked), "UnknownOrigin") == (A,)
    send(inbox.functions.setOrigin(A, new_outbox))
    assert assert_rejected(inbox.functions.retry(parked), "OriginChangedSince") == (A, era)
    assert flaky.functions.handled().call() == 1  # only the one retried above


def test_a_checkpoint_index_past_the_largest_tree_is_refused(route: Route) -> None:
    """Index 2**32 - 1 would mean 2**32 leaves, more than any Outbox (and the Python verifier)
    can hold: refused before anything else is read, as light_clients/multiproof.py does."""
    (nonce,) = route.ping_messages(1)
    checkpoint = Checkpoint(
        origin=A, outbox=pad(route.lane.outbox.address), root=keccak256(b"x"), index=2**32 - 1
    )
    packed = pack_messages([route.lane.messages[nonce]])
    assert assert_rejected(
        route.inbox.functions.process(as_tuple(checkpoint), attest(checkpoint), packed, []),
        "IndexTooLarge",
        mine=False,
    ) == (2**32 - 1,)


def lanes_of(outbox: bytes, messages: Sequence[bytes], attested: int) -> dict[int, RelayerLane]:
    """The relayer's view of origin A: its tree of ``messages``, attested up to ``attested``."""
    tree = IncrementalMerkleTree()
    tree.extend([keccak256(m) for m in messages])
    return {A: RelayerLane(chain=None, outbox=outbox, tree=tree, checkpoint_index=attested)}  # type: ignore[arg-type]


def impostor(message: bytes) -> bytes:
    """Same origin and nonce as ``message``, another body: never dispatched anywhere."""
    real = Message.decode(message)
    return Message(1, real.nonce, real.origin, real.sender, B, real.recipient, b"never").encode()


def test_a_message_sharing_a_delivered_nonce_is_not_recorded_delivered(
    w3: Web3, anvil: AnvilProcess
) -> None:
    """The review's impostor: the guard bit of (origin, outbox, nonce) is set by the message
    the inbox accepted there; a record with that nonce but other bytes (another outbox's
    message, a lying origin endpoint's, one orphaned by a reorg) must read as not delivered,
    and so must a genuine message above the attested checkpoint."""
    fresh = make_route(w3)
    send(fresh.flaky.functions.setMode(1))
    (ok,) = fresh.ping_messages(1)
    failing, _ = fresh.lane.dispatch(B, pad(fresh.flaky.address), b"fails")
    fresh.process(*fresh.lane.batch([ok, 1]))
    delivered = fresh.lane.messages[ok]
    outbox = pad(fresh.lane.outbox.address)
    inbox = bytes.fromhex(fresh.inbox.address[2:])
    messages = [delivered, failing, impostor(delivered), impostor(failing)]

    async def read(attested: int) -> dict[bytes, tuple[bool, bool]]:
        relayer = SimpleNamespace(
            lanes=lanes_of(outbox, fresh.lane.messages, attested), metrics=RelayerMetrics()
        )
        chain = SimpleNamespace(contract=lambda _: inbox)
        delivery = EvmDelivery(chain, relayer)  # type: ignore[arg-type]
        async with JsonRpcClient([anvil.rpc_url]) as client:
            evm = EvmChain(client, domain=B, finality="devnet-instant")
            header = await evm.final_header()
            raw = await inbox_delivery_state(evm, inbox, header, messages, {A: outbox})
            # The raw bit is the nonce's, not the message's; the failure record binds the id.
            assert raw[keccak256(impostor(delivered))] == (True, False)
            assert raw[keccak256(impostor(failing))] == (True, False)
            return await delivery._delivery_state(chain, evm, header, messages)  # type: ignore[arg-type]

    assert trio.run(read, 1) == {
        keccak256(delivered): (True, False),
        keccak256(failing): (True, True),
        keccak256(impostor(delivered)): (False, False),
        keccak256(impostor(failing)): (False, False),
    }
    # Attested only up to nonce 0: nonce 1 is not known to be that message yet.
    assert trio.run(read, 0)[keccak256(failing)] == (False, False)


def test_ledger_rebuild_asks_only_about_attested_leaves(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ledger rebuild`` restores ``delivered`` only for a message that is the attested leaf
    at its nonce, whatever the destination family answers about its nonce."""
    sender, recipient = pad(USER), pad(OTHER_USER)
    genuine = [Message(1, n, A, sender, B, recipient, b"m%d" % n).encode() for n in range(3)]
    asked: list[bytes] = []

    class NonceFlags:
        async def final_delivered(
            self, config: object, chain: object, messages: Sequence[bytes], outboxes: Mapping
        ) -> list[bool]:
            asked.extend(messages)
            return [True] * len(messages)  # every nonce's bit is set

    monkeypatch.setattr(rebuild, "family_of", lambda chain: NonceFlags())
    relayer = SimpleNamespace(config=None, lanes=lanes_of(pad(USER), genuine, 1))
    foreign = Message(1, 0, C, sender, B, recipient, b"m0").encode()
    batch = [genuine[0], impostor(genuine[1]), genuine[2], foreign, b"junk", genuine[1]]
    flags = trio.run(rebuild.delivered_on, relayer, None, batch)
    assert flags == [True, False, False, False, False, True]
    assert asked == [genuine[0], genuine[1]]


class RecordingLedger:
    """The two ledger calls the tests below reach: moves are recorded, not applied."""

    def __init__(self) -> None:
        self.moves: list[tuple[list[str], MessageStatus, str | None]] = []

    def transition(
        self, ids: Sequence[str], to: MessageStatus, *, reason: str | None = None
    ) -> list[str]:
        self.moves.append((list(ids), to, reason))
        return list(ids)


class StubRelayer:
    def __init__(self, lanes: Mapping[int, RelayerLane] | None = None) -> None:
        self.ledger = RecordingLedger()
        self.lanes = lanes or {}
        self.admitted_groups: list[list[str]] = []
        self.metrics = RelayerMetrics()

    async def db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    async def admitted(self, group: Sequence[Any]) -> list[Any]:
        self.admitted_groups.append([r.id for r in group])
        return []  # stop there: only what reached the policy matters here


def test_a_message_the_inbox_would_refuse_is_set_aside_not_batched() -> None:
    """One message above 77 + 65,536 bytes (from an origin whose outbox does not cap bodies)
    would revert every batch carrying it: it is recorded skipped as undeliverable, with the
    reason, and its neighbours go on."""
    sender, recipient = pad(USER), pad(OTHER_USER)
    small = Message(1, 0, A, sender, B, recipient, b"ok").encode()
    big = small[:77] + bytes(MAX_MESSAGE_BYTES - 77 + 1)
    records = [SimpleNamespace(id=f"0x{n:02x}", message=m) for n, m in enumerate([big, small])]
    relayer = StubRelayer()
    delivery = EvmDelivery(None, relayer)  # type: ignore[arg-type]
    assert trio.run(delivery._prepare, None, None, None, records) is None
    ((ids, status, reason),) = relayer.ledger.moves
    assert (ids, status) == (["0x00"], MessageStatus.SKIPPED)
    assert reason is not None and f"{MAX_MESSAGE_BYTES} bytes" in reason
    assert relayer.admitted_groups == [["0x01"]]


def test_a_held_origin_never_starves_the_others_and_is_reported_once(
    w3: Web3, anvil: AnvilProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The ledger follows one outbox per origin domain. When the inbox trusts another one (or
    none), nothing of that origin is sent (every batch would revert), nothing is recorded and
    one line says why, once. Review of the governance fixes, finding 2: the held origin sorts
    first and its backlog (3) is larger than a round's page (batch 2 x 1 in flight), yet the
    trusted origin's message is batched every round; an origin with a lane but nothing
    waiting is held silently."""
    inbox = deploy(w3, "Inbox", DEST, DEPLOYER)
    outbox = bytes.fromhex(OUTBOX[2:])
    send(inbox.functions.setOrigin(OTHER_ORIGIN, outbox))  # ORIGIN is not trusted
    ledger = open_ledger(str(tmp_path / "ledger.db"))
    held = [disc(ORIGIN, n) for n in range(3)]
    good = [disc(OTHER_ORIGIN, 0)]
    ledger.record_discovered(held + good)
    for origin, records in ((ORIGIN, held), (OTHER_ORIGIN, good)):
        ids = [msg_id(r.message) for r in records]
        drive(ledger, ids, MessageStatus.ATTESTED, checkpoint_for(ledger, origin))
    lanes = {
        ORIGIN: RelayerLane(chain=SimpleNamespace(name="alpha"), outbox=outbox),  # type: ignore[arg-type]
        OTHER_ORIGIN: RelayerLane(chain=SimpleNamespace(name="gamma"), outbox=outbox),  # type: ignore[arg-type]
        7: RelayerLane(chain=SimpleNamespace(name="idle"), outbox=outbox),  # type: ignore[arg-type]
    }
    relayer = SimpleNamespace(
        ledger=ledger,
        lanes=lanes,
        batch_size=2,
        max_inflight=1,
        requeue_due=lambda _: 0,
        metrics=RelayerMetrics(),
    )

    async def db(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    relayer.db = db
    raw = bytes.fromhex(inbox.address[2:])
    chain = SimpleNamespace(name="beta", domain=DEST, contract=lambda _: raw)

    async def rounds() -> list[list[tuple[int, list[str]]]]:
        delivery = EvmDelivery(chain, relayer)  # type: ignore[arg-type]
        out = []
        async with JsonRpcClient([anvil.rpc_url]) as client:
            evm = EvmChain(client, domain=DEST, finality="devnet-instant")
            for round_ in range(3):
                if round_ == 2:  # the trusted origin's outbox is replaced on chain
                    send(inbox.functions.setOrigin(OTHER_ORIGIN, pad(OTHER_USER)))
                batches = await delivery._next_batches(chain, evm, set())  # type: ignore[arg-type]
                out.append([(o, [r.id for r in batch]) for o, batch in batches])
        return out

    with caplog.at_level("ERROR", logger="passerelle.relayer"):
        first, again, replaced = trio.run(rounds)
    assert first == again == [(OTHER_ORIGIN, [msg_id(good[0].message)])]
    assert replaced == []
    assert [r.getMessage() for r in caplog.records] == [
        "deliver to beta: not delivering from alpha: the inbox on beta does not trust origin "
        f"alpha (domain {ORIGIN})",
        "deliver to beta: not delivering from gamma: the inbox on beta trusts outbox "
        f"0x{pad(OTHER_USER).hex()} for origin gamma, not the configured {OUTBOX} "
        "(a replaced outbox needs a new origin domain id, docs/relayer.md)",
    ]
    # Held means untouched: every message is still attested, nothing was sent or recorded.
    for record in held + good:
        assert ledger.get(msg_id(record.message)).status is MessageStatus.ATTESTED  # type: ignore[union-attr]


# ------------------------------------------------------------ review of the governance fixes


def committee_of(keys: Sequence[bytes]) -> list[str]:
    """``keys``' addresses, ascending (as setCommittee wants)."""
    return sorted((checksum(address_of(k)) for k in keys), key=lambda a: int(a, 16))


def forged_lane(route: Route, body: bytes) -> Lane:
    """Leaf 0 of the REAL trusted outbox as a compromised committee signs it: never
    dispatched (the outbox's own nonce 0 is another message)."""
    message = Message(1, 0, A, pad(ATTACKER), B, pad(route.ping.address), body).encode()
    return Lane(route.lane.outbox, A, messages=[message])


def test_a_revocation_voids_what_every_earlier_committee_parked(w3: Web3) -> None:
    """The review's PoC (finding 1): committee epoch 1 is compromised and parks a forged
    message on the protected Ping; an ordinary rotation (epoch 2, the same keys) happens
    before the leak is found; revoking then must void epoch 1's parked message too, whoever
    retries it once service resumes. What a committee enacted after the revocation parks is
    retried as usual."""
    fresh = make_route(w3)
    inbox, ping = fresh.inbox, fresh.ping
    send(inbox.functions.setProtected(ping.address, True))
    forged = forged_lane(fresh, b"forged by epoch 1")
    assert events(inbox, "HandleFailed", fresh.process(*forged.batch([0])))
    send(inbox.functions.setCommittee(committee_of(COMMITTEE_KEYS), THRESHOLD))  # rotation
    receipt = send(inbox.functions.revokeCommittee())
    assert events(inbox, "CommitteeRevoked", receipt) == [{"revokedThrough": 2}]
    assert inbox.functions.revokedThrough().call() == 2
    send(inbox.functions.setCommittee(committee_of(COMMITTEE_KEYS), THRESHOLD))  # epoch 4
    fresh.ping_messages(1)  # the outbox's real nonce 0: never delivered (nonce consumed)
    (later_nonce,) = fresh.ping_messages(1)
    fresh.process(*fresh.lane.batch([later_nonce]))  # parked under epoch 4 (still protected)
    send(inbox.functions.setProtected(ping.address, False))  # service resumes
    before = ping.functions.count().call()
    assert assert_rejected(
        inbox.functions.retry(forged.messages[0]), "CommitteeRevokedSince", sender=ATTACKER
    ) == (1, 2)
    assert ping.functions.count().call() == before
    send(inbox.functions.retry(fresh.lane.messages[later_nonce]), sender=OTHER_USER)
    assert ping.functions.count().call() == before + 1


def test_gas_per_message_delivered_and_parked_stays_bounded(route: Route) -> None:
    """Finding 5: a parked message costs one fresh storage word (the record is packed), as
    at b1906d0 (36.5k); anyone can make the relayer pay it by dispatching to a reverting
    recipient. Measured gasUsed of whole batches: 100 Pings, then 20 reverting recipients."""
    nonces = route.ping_messages(100)
    receipt = route.process(*route.lane.batch(nonces))
    assert len(events(route.inbox, "Delivered", receipt)) == 100
    assert receipt["gasUsed"] / 100 <= 12_000
    send(route.flaky.functions.setMode(1))  # Revert
    failing = [
        Message.decode(route.lane.dispatch(B, pad(route.flaky.address), b"f%d" % n)[0]).nonce
        for n in range(20)
    ]
    receipt = route.process(*route.lane.batch(failing))
    send(route.flaky.functions.setMode(0))
    assert len(events(route.inbox, "HandleFailed", receipt)) == 20
    assert receipt["gasUsed"] / 20 <= 40_000


def test_a_nonce_a_revoked_committee_consumed_is_set_aside_not_recorded_delivered(
    w3: Web3, anvil: AnvilProcess, tmp_path: Path
) -> None:
    """The review's PoC (finding 4): a compromised committee got a forged leaf accepted at
    nonce 0 of the real outbox, then was revoked and replaced. The honest message at nonce 0
    IS the attested leaf now, but the inbox only answers AlreadyDelivered: the relayer must
    not record it delivered (terminal, and nobody alerted); it sets it aside with the
    reason. The honest nonce 1 of the same batch, with its Delivered in the receipt, is
    recorded delivered; the seen path (no receipt of its own) sets aside both kinds."""
    fresh = make_route(w3)
    inbox = fresh.inbox
    assert events(inbox, "Delivered", fresh.process(*forged_lane(fresh, b"forged").batch([0])))
    send(inbox.functions.revokeCommittee())
    send(inbox.functions.setCommittee(committee_of(COMMITTEE_KEYS), THRESHOLD))
    honest = fresh.ping_messages(2)
    receipt = fresh.process(*fresh.lane.batch(honest))
    messages = [fresh.lane.messages[n] for n in honest]
    ids = ["0x" + keccak256(m).hex() for m in messages]
    assert [e["id"] for e in events(inbox, "AlreadyDelivered", receipt)] == [keccak256(messages[0])]
    assert [e["nonce"] for e in events(inbox, "Delivered", receipt)] == [honest[1]]
    # The ledger of the relayer that carried this batch: submitted, its transaction mined.
    ledger = open_ledger(str(tmp_path / "ledger.db"))
    ledger.record_discovered(
        [
            DiscoveredMessage(m, 10, keccak256(b"block"), keccak256(b"tx%d" % n), n)
            for n, m in enumerate(messages)
        ]
    )
    drive(ledger, ids, MessageStatus.ATTESTED, checkpoint_for(ledger, A))
    tx_hash = bytes(receipt["transactionHash"])
    ledger.record_transaction(
        NewTransaction(
            chain=B,
            hash=tx_hash,
            sender=bytes.fromhex(DEPLOYER[2:]),
            nonce=0,
            gas_limit=1_000_000,
            max_fee_per_gas=10**9,
            max_priority_fee_per_gas=1,
        ),
        ids,
    )
    ledger.update_transaction(
        B, tx_hash, TxStatus.CONFIRMED, block_number=receipt["blockNumber"], gas_used=1
    )

    async def db(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    relayer = SimpleNamespace(
        ledger=ledger,
        lanes=lanes_of(pad(fresh.lane.outbox.address), fresh.lane.messages, max(honest)),
        batch_size=20,
        max_inflight=1,
        db=db,
        metrics=SimpleNamespace(delivered=0),
        last_delivered={},
    )
    raw = bytes.fromhex(inbox.address[2:])
    chain = SimpleNamespace(name="beta", domain=B, contract=lambda _: raw)

    async def relay() -> tuple[list[str], list[str]]:
        delivery = EvmDelivery(chain, relayer)  # type: ignore[arg-type]
        async with JsonRpcClient([anvil.rpc_url]) as client:
            evm = EvmChain(client, domain=B, finality="devnet-instant")
            seen = await delivery._confirmed_delivered(chain, evm, [ledger.get(i) for i in ids])  # type: ignore[arg-type, misc]
            await delivery._finalize_deliveries(chain, evm)  # type: ignore[arg-type]
            return seen

    assert trio.run(relay) == ([], ids)
    consumed, delivered = (ledger.get(i) for i in ids)
    assert consumed is not None and consumed.status is MessageStatus.SKIPPED
    assert consumed.reason is not None and consumed.reason.startswith(
        "nonce consumed by another message: transaction 0x"
    )
    assert delivered is not None and delivered.status is MessageStatus.DELIVERED
