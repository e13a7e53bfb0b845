"""The Solidity contracts on a real anvil chain, checked against the Python reference formats.

Both "chains" of a route live on one automining anvil here: an Inbox only trusts checkpoints
signed by its committee for the outbox registered per origin domain, so two domains on one
chain exercise exactly the same code as two chains, much faster. Every rejection is checked
twice: ``eth_call`` must revert with the expected custom error (and arguments), and the same
call sent as a transaction must be mined with status 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import coincurve
import pytest
from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractCustomError, ContractLogicError
from web3.logs import DISCARD
from web3.types import RPCEndpoint, TxParams, TxReceipt

from adapters.evm.contracts import artifact_names, load_artifact
from devnet.anvil import DEV_ADDRESSES, DEV_PRIVATE_KEYS, AnvilProcess
from devnet.evm import DeployError, EvmDeployment, deploy_evm_chain, link_substrate_remote
from light_clients.committee import SECP256K1_N, Checkpoint, address_of, sign_checkpoint
from light_clients.ethereum.state import parse_get_proof, verify_get_proof
from light_clients.hashing import keccak256
from light_clients.merkle import EMPTY_ROOT, IncrementalMerkleTree, root_from_branch
from light_clients.message import MAX_BODY_BYTES, Message, decode_message
from light_clients.multiproof import build_multiproof, pack_messages, unpack_messages

pytestmark = pytest.mark.chain

A = 1000  # origin domain of most tests
B = 2000  # the inbox's domain
C = 3000  # a third domain nobody here serves

DEPLOYER = DEV_ADDRESSES[0]  # owns every contract
USER = DEV_ADDRESSES[1]
OTHER_USER = DEV_ADDRESSES[2]
ATTACKER = DEV_ADDRESSES[3]

# Four attester keys sorted by address: the first three are the committee (threshold 2), the
# fourth is an outsider.
KEYS = tuple(
    sorted((keccak256(b"passerelle test attester %d" % i) for i in range(4)), key=address_of)
)
COMMITTEE_KEYS = KEYS[:3]
OUTSIDER_KEY = KEYS[3]
THRESHOLD = 2
HANDLE_GAS = 500_000


def pad(address: str) -> bytes:
    """An EVM address as a 32-byte message party."""
    return bytes(12) + bytes.fromhex(address[2:])


def checksum(data: bytes) -> str:
    return Web3.to_checksum_address(data[-20:])


# --------------------------------------------------------------------------- web3 helpers


def deploy(w3: Web3, name: str, *args: object, sender: str = DEPLOYER) -> Contract:
    artifact = load_artifact(name)
    factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    receipt = w3.eth.wait_for_transaction_receipt(
        factory.constructor(*args).transact({"from": sender})
    )
    assert receipt["status"] == 1, f"deploying {name} failed"
    address = receipt["contractAddress"]
    assert address is not None
    return w3.eth.contract(address=address, abi=artifact.abi)


def send(fn: ContractFunction, sender: str = DEPLOYER, gas: int | None = None) -> TxReceipt:
    params: TxParams = {"from": sender}
    if gas is not None:
        params["gas"] = gas
    receipt = fn.w3.eth.wait_for_transaction_receipt(fn.transact(params))
    assert receipt["status"] == 1
    return receipt


@cache
def _errors() -> dict[bytes, tuple[str, list[str]]]:
    """Every custom error of every contract, by selector."""
    errors: dict[bytes, tuple[str, list[str]]] = {}
    for name in artifact_names():
        for item in load_artifact(name).abi:
            if item["type"] == "error":
                types = [entry["type"] for entry in item["inputs"]]
                signature = f"{item['name']}({','.join(types)})"
                errors[keccak256(signature.encode())[:4]] = (item["name"], types)
    errors[keccak256(b"Error(string)")[:4]] = ("Error", ["string"])
    return errors


def decode_error(data: bytes) -> tuple[str, tuple[Any, ...]]:
    """(name, arguments) of ABI-encoded revert data from any of our contracts."""
    if len(data) < 4 or data[:4] not in _errors():
        return (f"<unknown revert data 0x{data.hex()}>", ())
    name, types = _errors()[data[:4]]
    values = abi_decode(types, data[4:])
    return name, tuple(
        Web3.to_checksum_address(v) if t == "address" else v
        for t, v in zip(types, values, strict=True)
    )


def revert_data(fn: ContractFunction, sender: str, gas: int | None = None) -> bytes:
    params: TxParams = {"from": sender}
    if gas is not None:
        params["gas"] = gas
    try:
        fn.call(params)
    except (ContractCustomError, ContractLogicError) as error:
        data = error.data
        assert isinstance(data, str), f"no revert data: {error!r}"
        return bytes.fromhex(data.removeprefix("0x"))
    pytest.fail(f"{fn.fn_name} did not revert")


def assert_rejected(
    fn: ContractFunction,
    error: str | tuple[str, ...],
    *,
    sender: str = DEPLOYER,
    gas: int = 8_000_000,
    mine: bool = True,
) -> tuple[Any, ...]:
    """``fn`` reverts with custom error ``error`` (in eth_call and as a mined transaction)."""
    name, arguments = decode_error(revert_data(fn, sender, gas))
    expected = (error,) if isinstance(error, str) else error
    assert name in expected, f"expected {error}, got {name}{arguments}"
    if not mine:
        return arguments
    receipt = fn.w3.eth.wait_for_transaction_receipt(fn.transact({"from": sender, "gas": gas}))
    assert receipt["status"] == 0, f"{fn.fn_name} was mined successfully"
    return arguments


def is_delivered(inbox: Contract, message: bytes) -> bool:
    """The inbox's replay bit for ``message`` (its origin and nonce)."""
    decoded = Message.decode(message)
    return bool(inbox.functions.isDelivered(decoded.origin, decoded.nonce).call())


def failed_id(inbox: Contract, message: bytes) -> bytes:
    """The id in the inbox's failure record for ``message``'s (origin, trusted outbox, nonce):
    the first 24 bytes of the message's own id while it is parked for retry (the record is
    one packed word, Inbox.Failure), 24 zero bytes otherwise."""
    decoded = Message.decode(message)
    outbox = inbox.functions.outboxOf(decoded.origin).call()
    key = inbox.functions.failureKey(decoded.origin, outbox, decoded.nonce).call()
    return bytes(inbox.functions.failedMessage(key).call()[0])


def events(contract: Contract, name: str, receipt: TxReceipt) -> list[dict[str, Any]]:
    """Arguments of every ``name`` event ``contract`` emitted in ``receipt``, in order."""
    processed = getattr(contract.events, name)().process_receipt(receipt, errors=DISCARD)
    return [dict(event["args"]) for event in processed if event["address"] == contract.address]


# --------------------------------------------------------------------------- attestation


def sign_digest(key: bytes, digest: bytes) -> bytes:
    """65-byte r ‖ s ‖ v (v = 27/28) over a raw digest: for checkpoints Python refuses to build."""
    signature = coincurve.PrivateKey(key).sign_recoverable(digest, hasher=None)
    return signature[:64] + bytes((signature[64] + 27,))


def raw_digest(origin: int, outbox: bytes, root: bytes, index: int) -> bytes:
    inner = keccak256(
        b"PASSERELLE/v1/checkpoint"
        + origin.to_bytes(4, "big")
        + outbox
        + root
        + index.to_bytes(4, "big")
    )
    return keccak256(b"\x19Ethereum Signed Message:\n32" + inner)


def attest(checkpoint: Checkpoint, keys: Sequence[bytes] = COMMITTEE_KEYS[:THRESHOLD]) -> bytes:
    """Signatures of ``keys`` over ``checkpoint``, concatenated in the order given."""
    return b"".join(sign_checkpoint(key, checkpoint) for key in keys)


def as_tuple(checkpoint: Checkpoint) -> tuple[int, bytes, bytes, int]:
    return (checkpoint.origin, checkpoint.outbox, checkpoint.root, checkpoint.index)


@dataclass
class Lane:
    """One outbox as a test relayer sees it: every message it dispatched, by nonce."""

    outbox: Contract
    domain: int
    messages: list[bytes] = field(default_factory=list)

    def dispatch(
        self, destination: int, recipient: bytes, body: bytes, sender: str = DEPLOYER
    ) -> tuple[bytes, TxReceipt]:
        receipt = send(self.outbox.functions.dispatch(destination, recipient, body), sender)
        return self.record(receipt), receipt

    def record(self, receipt: TxReceipt) -> bytes:
        """Pick up the Dispatch of a receipt (also one emitted via another contract)."""
        (dispatched,) = events(self.outbox, "Dispatch", receipt)
        message = bytes(dispatched["message"])
        assert decode_message(message).nonce == len(self.messages)  # the nonce is message[1:5]
        self.messages.append(message)
        return message

    def tree(self, count: int | None = None) -> IncrementalMerkleTree:
        tree = IncrementalMerkleTree()
        tree.extend([keccak256(m) for m in self.messages[: count or len(self.messages)]])
        return tree

    def checkpoint(self, count: int | None = None) -> Checkpoint:
        tree = self.tree(count)
        return Checkpoint(
            origin=self.domain,
            outbox=pad(self.outbox.address),
            root=tree.root(),
            index=tree.count - 1,
        )

    def batch(
        self,
        nonces: Sequence[int],
        keys: Sequence[bytes] = COMMITTEE_KEYS[:THRESHOLD],
        count: int | None = None,
    ) -> tuple[tuple[int, bytes, bytes, int], bytes, bytes, list[bytes]]:
        """Arguments of Inbox.process delivering ``nonces`` (ascending) under the latest
        checkpoint: the packed messages and their one multiproof."""
        tree = self.tree(count)
        checkpoint = self.checkpoint(count)
        return (
            as_tuple(checkpoint),
            attest(checkpoint, keys),
            pack_messages([self.messages[n] for n in nonces]),
            list(build_multiproof(tree, nonces)),
        )


@dataclass
class Route:
    """Outbox on domain A -> Inbox on domain B, with a Ping and a TestRecipient on B."""

    w3: Web3
    lane: Lane
    inbox: Contract
    ping: Contract
    flaky: Contract

    def ping_messages(self, count: int, sender: str = DEPLOYER) -> list[int]:
        """Dispatch ``count`` messages to Ping; return their nonces."""
        nonces = []
        for _ in range(count):
            message, _receipt = self.lane.dispatch(
                B, pad(self.ping.address), b"ping %d" % len(self.lane.messages), sender
            )
            nonces.append(int.from_bytes(message[1:5], "big"))
        return nonces

    def process(self, *args: Any, gas: int | None = None) -> TxReceipt:
        return send(self.inbox.functions.process(*args), gas=gas)


def make_route(w3: Web3) -> Route:
    outbox = deploy(w3, "Outbox", A)
    inbox = deploy(w3, "Inbox", B, DEPLOYER)
    send(inbox.functions.setCommittee([address_of(k) for k in COMMITTEE_KEYS], THRESHOLD))
    send(inbox.functions.setOrigin(A, pad(outbox.address)))
    return Route(
        w3=w3,
        lane=Lane(outbox, A),
        inbox=inbox,
        ping=deploy(w3, "Ping", inbox.address),
        flaky=deploy(w3, "TestRecipient"),
    )


@pytest.fixture(scope="module")
def w3(anvil: AnvilProcess) -> Web3:
    web3 = Web3(Web3.HTTPProvider(anvil.rpc_url, request_kwargs={"timeout": 30}))
    assert web3.is_connected()
    return web3


@pytest.fixture(scope="module")
def route(w3: Web3) -> Route:
    """Shared by the tests that do not change the Inbox's configuration."""
    return make_route(w3)


# --------------------------------------------------------------------------- outbox


def test_dispatch_matches_python_message_encoding(route: Route) -> None:
    outbox = route.lane.outbox
    bodies = [b"", b"hello", bytes(range(256)) * 4, b"\x00" * 33]
    for body in bodies:
        recipient = keccak256(body)  # any 32 bytes: a Substrate account is fine too
        nonce = outbox.functions.count().call()
        returned = outbox.functions.dispatch(C, recipient, body).call({"from": USER})
        message, receipt = route.lane.dispatch(C, recipient, body, sender=USER)
        expected = Message(
            version=1,
            nonce=nonce,
            origin=A,
            sender=pad(USER),
            destination=C,
            recipient=recipient,
            body=body,
        )
        assert message == expected.encode()
        (event,) = events(outbox, "Dispatch", receipt)
        assert event["id"] == expected.id == returned == keccak256(message)
        assert event["destination"] == C and bytes(event["message"]) == message
        assert "nonce" not in event  # only the message carries it (no copy to disagree)


def test_outbox_root_and_storage_slots_match_python_tree(w3: Web3) -> None:
    outbox = deploy(w3, "Outbox", A)
    lane = Lane(outbox, A)
    assert outbox.functions.root().call() == EMPTY_ROOT
    assert outbox.functions.count().call() == 0
    assert_rejected(outbox.functions.latestCheckpoint(), "EmptyOutbox")
    branch = [bytes(32)] * 32  # the deposit-contract branch, mirrored independently
    for n in range(1, 40):
        message, _ = lane.dispatch(B, pad(USER), b"m%d" % n)
        node, size = keccak256(message), n
        for height in range(32):
            if size & 1:
                branch[height] = node
                break
            node = keccak256(branch[height] + node)
            size >>= 1
        if n in (1, 2, 3, 4, 7, 8, 16, 31, 33, 39):
            tree = lane.tree()
            assert outbox.functions.root().call() == tree.root()
            assert outbox.functions.latestCheckpoint().call() == [tree.root(), n - 1]
            slots = [w3.eth.get_storage_at(outbox.address, slot) for slot in range(33)]
            assert [bytes(s) for s in slots[:32]] == branch
            assert int.from_bytes(slots[32], "big") == n
            assert list(outbox.functions.branch().call()) == branch
            assert root_from_storage([bytes(s) for s in slots]) == tree.root()


def root_from_storage(slots: Sequence[bytes]) -> bytes:
    """What an attester computes from the 33 proven Outbox slots."""
    return root_from_branch(slots[:32], int.from_bytes(slots[32], "big"))


def test_outbox_state_is_provable_with_eth_get_proof(w3: Web3) -> None:
    """What attesters do: prove slots 0..32 under a state root, then recompute the root."""
    outbox = deploy(w3, "Outbox", A)
    lane = Lane(outbox, A)
    for n in range(11):
        lane.dispatch(B, pad(USER), b"proof %d" % n)
    block = w3.eth.get_block("latest")
    slots = ["0x" + slot.to_bytes(32, "big").hex() for slot in range(33)]
    response = w3.provider.make_request(
        RPCEndpoint("eth_getProof"), [outbox.address, slots, hex(block["number"])]
    )
    verdict = verify_get_proof(bytes(block["stateRoot"]), parse_get_proof(response["result"]))
    proven = [slot.value.to_bytes(32, "big") for slot in verdict.storage]
    assert root_from_storage(proven) == lane.tree().root() == outbox.functions.root().call()
    assert int.from_bytes(proven[32], "big") == 11


def test_outbox_storage_layout_is_the_documented_one() -> None:
    layout = load_artifact("Outbox").storage_layout
    assert layout == [{"label": "tree", "slot": 0, "offset": 0, "type": "struct MerkleLib.Tree"}]


def test_outbox_rejects_bad_dispatches(route: Route) -> None:
    outbox = route.lane.outbox
    assert_rejected(outbox.functions.dispatch(A, pad(USER), b"x"), "DestinationIsLocal")
    assert_rejected(outbox.functions.dispatch(B, bytes(32), b"x"), "ZeroRecipient")
    too_big = bytes(MAX_BODY_BYTES + 1)
    assert assert_rejected(outbox.functions.dispatch(B, pad(USER), too_big), "BodyTooLarge") == (
        MAX_BODY_BYTES + 1,
        MAX_BODY_BYTES,
    )
    before = outbox.functions.count().call()
    route.lane.dispatch(C, pad(USER), bytes(MAX_BODY_BYTES))  # the maximum itself is fine
    assert outbox.functions.count().call() == before + 1


# --------------------------------------------------------------------------- delivery


def test_checkpoint_digest_matches_python(route: Route) -> None:
    route.ping_messages(1)
    checkpoint = route.lane.checkpoint()
    digest = route.inbox.functions.checkpointDigest(as_tuple(checkpoint)).call()
    assert digest == checkpoint.digest()


def test_valid_batch_delivers_and_calls_ping(route: Route) -> None:
    nonces = route.ping_messages(3)
    before = route.ping.functions.count().call()
    receipt = route.process(*route.lane.batch(nonces))
    assert route.ping.functions.count().call() == before + 3
    delivered = events(route.inbox, "Delivered", receipt)
    assert [(e["origin"], e["nonce"]) for e in delivered] == [(A, n) for n in nonces]
    pinged = events(route.ping, "Pinged", receipt)
    for event, nonce in zip(pinged, nonces, strict=True):
        message = Message.decode(route.lane.messages[nonce])
        assert (event["origin"], event["sender"], event["body"]) == (A, pad(DEPLOYER), message.body)
    for nonce in nonces:
        assert is_delivered(route.inbox, route.lane.messages[nonce])
        assert failed_id(route.inbox, route.lane.messages[nonce]) == bytes(24)
    # Every committee subset of threshold size works, and so does the full committee.
    more = route.ping_messages(2)
    route.process(*route.lane.batch(more[:1], keys=[COMMITTEE_KEYS[0], COMMITTEE_KEYS[2]]))
    route.process(*route.lane.batch(more[1:], keys=COMMITTEE_KEYS))
    assert route.ping.functions.count().call() == before + 5


def test_older_checkpoint_still_proves_its_messages(route: Route) -> None:
    first = route.ping_messages(2)
    route.ping_messages(3)
    count = first[-1] + 1  # a checkpoint taken before the last three
    route.process(*route.lane.batch(first, count=count))
    assert all(is_delivered(route.inbox, route.lane.messages[n]) for n in first)


def test_replayed_message_is_skipped_not_handled_twice(route: Route) -> None:
    nonces = route.ping_messages(2)
    route.process(*route.lane.batch(nonces[:1]))
    before = route.ping.functions.count().call()
    # A racing relayer's overlapping batch: the old one is skipped, the new one delivered.
    receipt = route.process(*route.lane.batch(nonces))
    replayed = keccak256(route.lane.messages[nonces[0]])
    assert events(route.inbox, "AlreadyDelivered", receipt) == [{"id": replayed}]
    assert [e["nonce"] for e in events(route.inbox, "Delivered", receipt)] == [nonces[1]]
    assert route.ping.functions.count().call() == before + 1
    # The exact same batch again: nothing happens, and nothing reverts.
    receipt = route.process(*route.lane.batch(nonces))
    assert len(events(route.inbox, "AlreadyDelivered", receipt)) == 2
    assert events(route.inbox, "Delivered", receipt) == []
    assert route.ping.functions.count().call() == before + 1


def test_rejects_bad_signatures(route: Route) -> None:
    (nonce,) = route.ping_messages(1)
    checkpoint_args, good, messages, branches = route.lane.batch([nonce])
    checkpoint = route.lane.checkpoint()
    process = route.inbox.functions.process
    member0, member1, member2 = COMMITTEE_KEYS

    def reject(signatures: bytes, error: str | tuple[str, ...]) -> tuple[Any, ...]:
        return assert_rejected(process(checkpoint_args, signatures, messages, branches), error)

    # A signature over another checkpoint (another root) recovers to some unrelated address.
    other = Checkpoint(A, checkpoint.outbox, keccak256(b"another root"), checkpoint.index)
    position, signer = reject(sign_checkpoint(member0, other) + good[65:], "UnknownSigner")
    assert position == 0 and signer != checksum(address_of(member0))
    # Corrupted r: recovers to a stranger or to nothing, depending on the bytes.
    for flipped in range(0, 8):
        corrupted = bytearray(good)
        corrupted[flipped] ^= 0xFF
        assert reject(bytes(corrupted), ("UnknownSigner", "InvalidSignature"))[0] == 0
    # Duplicate signer, exact copy (T4).
    one = sign_checkpoint(member0, checkpoint)
    assert reject(one + one, "DuplicateSigner") == (checksum(address_of(member0)),)
    # Signer outside the committee (T6).
    outsider = attest(checkpoint, [member0, OUTSIDER_KEY])
    assert reject(outsider, "UnknownSigner") == (1, checksum(address_of(OUTSIDER_KEY)))
    # Out of order.
    assert reject(attest(checkpoint, [member1, member0]), "SignersNotAscending") == (1,)
    # Below threshold, including no signature at all (T3).
    assert reject(one, "BelowThreshold") == (1, THRESHOLD)
    assert reject(b"", "BelowThreshold") == (0, THRESHOLD)
    # High-s twin of a valid signature: same signer, second encoding (T4).
    second = sign_checkpoint(member1, checkpoint)
    s = int.from_bytes(second[32:64], "big")
    high = second[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes((55 - second[64],))
    assert reject(one + high, "InvalidSignature") == (1,)
    # v outside {27, 28}, r = 0, s = 0 (T5).
    assert reject(one + second[:64] + bytes((second[64] - 27,)), "InvalidSignature") == (1,)
    assert reject(one + bytes(32) + second[32:], "InvalidSignature") == (1,)
    assert reject(one + second[:32] + bytes(32) + second[64:], "InvalidSignature") == (1,)
    # Not a multiple of 65 bytes.
    assert reject(good + b"\x00", "MalformedSignatures") == (131,)
    # More signatures than members can only mean a duplicate or an outsider.
    four = attest(checkpoint, [member0, member1, member2, OUTSIDER_KEY])
    assert reject(four, "UnknownSigner")[0] == 3
    # ...and the good ones still work.
    route.process(checkpoint_args, good, messages, branches)


def test_rejects_wrong_destination_origin_and_malformed_messages(route: Route) -> None:
    lane = route.lane
    wrong, _ = lane.dispatch(C, pad(route.ping.address), b"for C")  # to a domain not ours (T8)
    (good,) = route.ping_messages(1)
    wrong_nonce = int.from_bytes(wrong[1:5], "big")
    process = route.inbox.functions.process
    assert assert_rejected(process(*lane.batch([wrong_nonce, good])), "WrongDestination") == (0, C)
    # A message of another origin under this origin's checkpoint.
    cp, sigs, packed, proof = lane.batch([good])
    (message,) = unpack_messages(packed)
    foreign = Message.decode(message)
    forged = Message(1, foreign.nonce, C, foreign.sender, B, foreign.recipient, foreign.body)
    assert assert_rejected(
        process(cp, sigs, pack_messages([forged.encode()]), proof), "WrongOrigin"
    ) == (0, C)
    # Version 2, and a message shorter than its header.
    v2 = pack_messages([b"\x02" + message[1:]])
    assert assert_rejected(process(cp, sigs, v2, proof), "UnsupportedVersion") == (0, 2)
    short = pack_messages([message[:76]])
    assert assert_rejected(process(cp, sigs, short, proof), "MalformedMessage") == (0, 76)
    # Batch shape: nothing, a cut-off message or prefix, a hash too many.
    assert_rejected(process(cp, sigs, b"", proof), "EmptyBatch")
    assert assert_rejected(process(cp, sigs, packed[:-1], proof), "TruncatedBatch") == (0,)
    assert assert_rejected(process(cp, sigs, packed + b"\x00", proof), "TruncatedBatch") == (1,)
    assert assert_rejected(
        process(cp, sigs, packed, [*proof, keccak256(b"extra")]), "UnusedProofHashes"
    ) == (len(proof), len(proof) + 1)


def test_rejects_bad_proofs(route: Route) -> None:
    lane = route.lane
    nonces = route.ping_messages(3)
    cp, sigs, packed, proof = lane.batch(nonces)
    messages = unpack_messages(packed)
    process = route.inbox.functions.process
    # A message with the proof of another nonce (T13).
    _, _, _, other = lane.batch(nonces[1:2])
    assert_rejected(process(cp, sigs, pack_messages(messages[:1]), other), "InvalidProof")
    # The message re-encoded with another nonce but the original proof.
    original = Message.decode(messages[2])
    renumbered = Message(1, nonces[0], A, original.sender, B, original.recipient, original.body)
    _, _, _, own = lane.batch(nonces[2:])
    assert_rejected(process(cp, sigs, pack_messages([renumbered.encode()]), own), "InvalidProof")
    # A tampered sibling.
    tampered = list(proof)
    tampered[-1] = keccak256(b"x")
    assert_rejected(process(cp, sigs, packed, tampered), "InvalidProof")
    # A message past the checkpoint: an older checkpoint cannot contain it.
    older_cp, older_sigs, _, _ = lane.batch([0], count=nonces[0] + 1)
    assert assert_rejected(
        process(older_cp, older_sigs, pack_messages(messages[1:2]), proof), "NonceBeyondCheckpoint"
    ) == (0, nonces[1], nonces[0])
    # One bad message reverts the whole batch: none of the good ones was delivered.
    assert not any(is_delivered(route.inbox, m) for m in messages)


def test_rejects_invalid_roots_even_when_signed(route: Route) -> None:
    (nonce,) = route.ping_messages(1)
    _, _, messages, branches = route.lane.batch([nonce])
    outbox = pad(route.lane.outbox.address)
    process = route.inbox.functions.process
    for root in (EMPTY_ROOT, bytes(32)):  # T1: both proven by a genuine quorum
        index = nonce
        signatures = b"".join(
            sign_digest(key, raw_digest(A, outbox, root, index)) for key in COMMITTEE_KEYS
        )
        assert assert_rejected(
            process((A, outbox, root, index), signatures, messages, branches), "InvalidRoot"
        ) == (root,)


def test_rejects_unknown_origin_and_outbox(route: Route, w3: Web3) -> None:
    (nonce,) = route.ping_messages(1)
    process = route.inbox.functions.process
    _, _, messages, branches = route.lane.batch([nonce])
    tree = route.lane.tree()
    # Same tree, claimed for an origin the inbox does not know (T14).
    unknown = Checkpoint(C, pad(route.lane.outbox.address), tree.root(), tree.count - 1)
    assert assert_rejected(
        process(as_tuple(unknown), attest(unknown), messages, branches), "UnknownOrigin"
    ) == (C,)
    # Same origin, another outbox contract (a look-alike deployed by anyone).
    impostor = deploy(w3, "Outbox", A, sender=ATTACKER)
    other = Checkpoint(A, pad(impostor.address), tree.root(), tree.count - 1)
    assert assert_rejected(
        process(as_tuple(other), attest(other), messages, branches), "WrongOutbox"
    ) == (A, pad(impostor.address))


def test_no_committee_verifies_nothing(w3: Web3, route: Route) -> None:
    inbox = deploy(w3, "Inbox", B, DEPLOYER)
    send(inbox.functions.setOrigin(A, pad(route.lane.outbox.address)))
    (nonce,) = route.ping_messages(1)
    assert_rejected(inbox.functions.process(*route.lane.batch([nonce])), "NoCommittee")
    assert inbox.functions.validators().call() == []
    assert not inbox.functions.isValidator(address_of(COMMITTEE_KEYS[0])).call()


def test_inbox_on_a_forked_chain_refuses_everything(fresh_anvil: AnvilProcess) -> None:
    """After a chain split the fork's copy of the inbox sees another chain id (T8)."""
    w3 = Web3(Web3.HTTPProvider(fresh_anvil.rpc_url))
    route = make_route(w3)
    send(route.flaky.functions.setMode(1))
    message, _ = route.lane.dispatch(B, pad(route.flaky.address), b"failed before the fork")
    ping = route.ping_messages(1)
    route.process(*route.lane.batch([0]))
    assert route.inbox.functions.deployedChainId().call() == fresh_anvil.chain_id
    send(route.flaky.functions.setMode(0))
    w3.provider.make_request(RPCEndpoint("anvil_setChainId"), [fresh_anvil.chain_id + 1])
    # eth_call only: anvil's dev signers keep signing for the old chain id.
    assert assert_rejected(
        route.inbox.functions.process(*route.lane.batch(ping)), "ForkedChain", mine=False
    ) == (fresh_anvil.chain_id, fresh_anvil.chain_id + 1)
    assert_rejected(route.inbox.functions.retry(message), "ForkedChain", mine=False)


# --------------------------------------------------------------------------- failures


def test_reverting_recipient_is_recorded_and_retried(route: Route) -> None:
    inbox, flaky = route.inbox, route.flaky
    send(flaky.functions.setMode(1))  # Revert
    message, _ = route.lane.dispatch(B, pad(flaky.address), b"try me")
    nonce = int.from_bytes(message[1:5], "big")
    (ping_nonce,) = route.ping_messages(1)
    receipt = route.process(*route.lane.batch([nonce, ping_nonce]))
    message_id = keccak256(message)
    (failed,) = events(inbox, "HandleFailed", receipt)
    assert failed["id"] == message_id
    assert decode_error(failed["reason"]) == ("Refused", ("TestRecipient refuses",))
    # The lane is not blocked: the Ping after it was delivered in the same batch.
    assert [e["nonce"] for e in events(inbox, "Delivered", receipt)] == [ping_nonce]
    assert is_delivered(inbox, message)
    assert failed_id(inbox, message) == message_id[:24]
    # Still failing: retry reverts with the recipient's own error and the record stays.
    assert_rejected(inbox.functions.retry(message), "Refused", sender=ATTACKER)
    assert failed_id(inbox, message) == message_id[:24]
    # Fixed: anyone can retry, once.
    send(flaky.functions.setMode(0))
    receipt = send(inbox.functions.retry(message), sender=OTHER_USER)
    assert events(inbox, "Delivered", receipt) == [{"id": message_id, "origin": A, "nonce": nonce}]
    assert flaky.functions.lastBody().call() == b"try me"
    assert failed_id(inbox, message) == bytes(24)
    assert assert_rejected(inbox.functions.retry(message), "NotFailed") == (message_id,)
    # A proven-but-never-failed message, or junk, cannot be "retried" either.
    assert_rejected(inbox.functions.retry(route.lane.messages[ping_nonce]), "NotFailed")
    assert_rejected(inbox.functions.retry(b"junk"), "NotFailed")
    # And process does not deliver it a second time.
    receipt = route.process(*route.lane.batch([nonce]))
    assert events(inbox, "AlreadyDelivered", receipt) == [{"id": message_id}]
    assert flaky.functions.handled().call() == 1


def test_gas_burning_and_return_bomb_recipients_are_bounded(route: Route) -> None:
    inbox, flaky = route.inbox, route.flaky
    for mode, reason_size in ((2, 0), (3, 256)):  # BurnGas, ReturnBomb
        send(flaky.functions.setMode(mode))
        message, _ = route.lane.dispatch(B, pad(flaky.address), b"mode %d" % mode)
        receipt = route.process(*route.lane.batch([int.from_bytes(message[1:5], "big")]))
        (failed,) = events(inbox, "HandleFailed", receipt)
        assert len(failed["reason"]) == reason_size
        assert receipt["gasUsed"] < HANDLE_GAS + 150_000
    send(flaky.functions.setMode(0))


def test_underfunded_delivery_reverts_instead_of_failing_the_recipient(route: Route) -> None:
    (nonce,) = route.ping_messages(1)
    args = route.lane.batch([nonce])
    # Too little gas to give handle its stipend: the whole call reverts (so a relayer cannot
    # starve a recipient into a recorded failure), nothing is marked delivered. processOrCut
    # would cut before the first message, having done nothing: it reverts the same way.
    for process in (route.inbox.functions.process, route.inbox.functions.processOrCut):
        assert_rejected(process(*args), "InsufficientGas", gas=300_000)
    assert not is_delivered(route.inbox, route.lane.messages[nonce])
    # eth_estimateGas finds a limit that delivers for real.
    estimate = route.inbox.functions.process(*args).estimate_gas({"from": DEPLOYER})
    receipt = route.process(*args, gas=estimate)
    assert events(route.inbox, "Delivered", receipt) and not events(
        route.inbox, "HandleFailed", receipt
    )


def test_privileged_and_invalid_recipients_are_never_called(route: Route, w3: Web3) -> None:
    inbox = route.inbox
    lane = route.lane
    # T20: a message to the Inbox itself (whose "handle" could be anything) and to an address
    # the owner protected; plus an EOA and a 32-byte id that is no EVM address.
    protected = deploy(w3, "Ping", inbox.address)
    send(inbox.functions.setProtected(protected.address, True))
    targets = [
        (pad(inbox.address), ("RecipientProtected", (inbox.address,))),
        (pad(protected.address), ("RecipientProtected", (protected.address,))),
        (pad(OTHER_USER), ("RecipientNotContract", (OTHER_USER,))),
        (b"\x01" * 32, ("RecipientNotAddress", (b"\x01" * 32,))),
    ]
    # The body an attacker would love the inbox to execute: a committee of one, its own key.
    takeover = bytes.fromhex(inbox.encode_abi("setCommittee", args=[[ATTACKER], 1])[2:])
    nonces = []
    for recipient, _ in targets:
        message, _ = lane.dispatch(B, recipient, takeover)
        nonces.append(int.from_bytes(message[1:5], "big"))
    receipt = route.process(*lane.batch(nonces))
    failures = events(inbox, "HandleFailed", receipt)
    assert [decode_error(f["reason"]) for f in failures] == [reason for _, reason in targets]
    assert protected.functions.count().call() == 0
    # Nothing reached the admin surface.
    assert inbox.functions.epoch().call() == 1
    assert inbox.functions.validators().call() == [checksum(address_of(k)) for k in COMMITTEE_KEYS]
    # Retry refuses too, with the same reason.
    assert_rejected(inbox.functions.retry(lane.messages[nonces[0]]), "RecipientProtected")
    assert_rejected(inbox.functions.retry(lane.messages[nonces[1]]), "RecipientProtected")


# --------------------------------------------------------------------------- administration


def test_committee_and_origin_are_owner_only_and_validated(w3: Web3, route: Route) -> None:
    inbox = deploy(w3, "Inbox", B, DEPLOYER)
    members = [address_of(k) for k in COMMITTEE_KEYS]
    set_committee = inbox.functions.setCommittee
    assert assert_rejected(set_committee(members, 2), "NotOwner", sender=ATTACKER) == (ATTACKER,)
    assert_rejected(inbox.functions.setOrigin(A, pad(ATTACKER)), "NotOwner", sender=ATTACKER)
    assert_rejected(inbox.functions.setProtected(ATTACKER, True), "NotOwner", sender=ATTACKER)
    assert_rejected(inbox.functions.transferOwnership(ATTACKER), "NotOwner", sender=ATTACKER)
    assert_rejected(set_committee([], 1), "EmptyCommittee")
    assert assert_rejected(set_committee(members, 0), "InvalidThreshold") == (0, 3)
    assert assert_rejected(set_committee(members, 4), "InvalidThreshold") == (4, 3)
    assert assert_rejected(set_committee([bytes(20), *members], 2), "ZeroValidator") == (0,)
    assert assert_rejected(set_committee(members[::-1], 2), "ValidatorsNotAscending") == (1,)
    duplicated = [members[0], members[0], members[1]]
    assert assert_rejected(set_committee(duplicated, 2), "ValidatorsNotAscending") == (1,)
    assert assert_rejected(inbox.functions.setOrigin(B, pad(USER)), "OriginIsLocal") == (B,)
    assert inbox.functions.epoch().call() == 0

    receipt = send(set_committee(members, 2))
    (event,) = events(inbox, "CommitteeSet", receipt)
    assert (event["epoch"], event["threshold"]) == (1, 2)
    assert inbox.functions.validators().call() == [checksum(m) for m in members]
    assert inbox.functions.threshold().call() == 2
    assert all(inbox.functions.isValidator(m).call() for m in members)


def test_rotated_out_signers_are_rejected(w3: Web3, route: Route) -> None:
    inbox = deploy(w3, "Inbox", B, DEPLOYER)
    send(inbox.functions.setOrigin(A, pad(route.lane.outbox.address)))
    send(inbox.functions.setCommittee([address_of(k) for k in COMMITTEE_KEYS], 2))
    # Rotate: member 0 is replaced by the former outsider.
    rotated = sorted([*COMMITTEE_KEYS[1:], OUTSIDER_KEY], key=address_of)
    send(inbox.functions.setCommittee([address_of(k) for k in rotated], 2))
    assert not inbox.functions.isValidator(address_of(COMMITTEE_KEYS[0])).call()
    (nonce,) = route.ping_messages(1)
    args = route.lane.batch([nonce], keys=COMMITTEE_KEYS[:2])
    _position, signer = assert_rejected(inbox.functions.process(*args), "UnknownSigner")
    assert signer == checksum(address_of(COMMITTEE_KEYS[0]))
    send(inbox.functions.process(*route.lane.batch([nonce], keys=rotated[:2])))


# --------------------------------------------------------------------------- token bridge


@dataclass
class Side:
    domain: int
    lane: Lane
    inbox: Contract
    bridge: Contract


def relay(source: Side, target: Side, nonces: Sequence[int]) -> TxReceipt:
    return send(target.inbox.functions.process(*source.lane.batch(nonces)))


def make_bridge_pair(w3: Web3) -> tuple[Side, Side]:
    sides = []
    for domain in (A, B):
        outbox = deploy(w3, "Outbox", domain)
        inbox = deploy(w3, "Inbox", domain, DEPLOYER)
        send(inbox.functions.setCommittee([address_of(k) for k in COMMITTEE_KEYS], THRESHOLD))
        bridge = deploy(w3, "TokenBridge", outbox.address, inbox.address, domain, DEPLOYER)
        sides.append(Side(domain, Lane(outbox, domain), inbox, bridge))
    home, remote = sides
    for this, that in ((home, remote), (remote, home)):
        send(this.inbox.functions.setOrigin(that.domain, pad(that.lane.outbox.address)))
        send(this.bridge.functions.setRemote(that.domain, pad(that.bridge.address)))
    return home, remote


def test_token_round_trip_lock_mint_burn_unlock(w3: Web3) -> None:
    home, remote = make_bridge_pair(w3)
    token = deploy(w3, "TestToken", "Test", "TST", 18)
    wrapped = deploy(w3, "WrappedToken", "Wrapped Test", "wTST", 18, remote.bridge.address)
    send(home.bridge.functions.registerHomeToken(token.address, B))
    send(remote.bridge.functions.registerWrappedToken(A, pad(token.address), wrapped.address))

    send(token.functions.mint(USER, 1000), sender=USER)
    send(token.functions.approve(home.bridge.address, 2**256 - 1), sender=USER)
    receipt = send(
        home.bridge.functions.transferRemote(token.address, 400, B, pad(OTHER_USER)), sender=USER
    )
    message = home.lane.record(receipt)
    body = Message.decode(message).body
    assert body == abi_encode(
        ["uint8", "bytes32", "uint256", "bytes32"], [1, pad(token.address), 400, pad(OTHER_USER)]
    )
    assert token.functions.balanceOf(USER).call() == 600
    assert token.functions.balanceOf(home.bridge.address).call() == 400
    assert home.bridge.functions.locked(token.address, B).call() == 400

    receipt = relay(home, remote, [0])
    assert events(remote.inbox, "HandleFailed", receipt) == []
    assert wrapped.functions.balanceOf(OTHER_USER).call() == 400
    assert wrapped.functions.totalSupply().call() == 400

    receipt = send(
        remote.bridge.functions.transferRemote(wrapped.address, 150, A, pad(USER)),
        sender=OTHER_USER,
    )
    remote.lane.record(receipt)
    assert wrapped.functions.balanceOf(OTHER_USER).call() == 250
    assert wrapped.functions.totalSupply().call() == 250
    relay(remote, home, [0])
    assert token.functions.balanceOf(USER).call() == 750
    assert token.functions.balanceOf(home.bridge.address).call() == 250
    assert home.bridge.functions.locked(token.address, B).call() == 250

    # Wrapped tokens only go home; unregistered tokens go nowhere.
    assert_rejected(
        remote.bridge.functions.transferRemote(wrapped.address, 1, C, pad(USER)),
        "UnknownRemote",
        sender=OTHER_USER,
    )
    stray = deploy(w3, "TestToken", "Stray", "STR", 18)
    assert_rejected(
        home.bridge.functions.transferRemote(stray.address, 1, B, pad(USER)), "UnregisteredToken"
    )
    assert_rejected(
        home.bridge.functions.transferRemote(token.address, 0, B, pad(USER)), "ZeroAmount"
    )


def test_bridge_rejects_messages_not_from_the_remote_bridge(w3: Web3) -> None:
    home, remote = make_bridge_pair(w3)
    token = deploy(w3, "TestToken", "Test", "TST", 18)
    wrapped = deploy(w3, "WrappedToken", "Wrapped Test", "wTST", 18, remote.bridge.address)
    send(remote.bridge.functions.registerWrappedToken(A, pad(token.address), wrapped.address))
    # An attacker dispatches a perfectly formed MINT from its own account on the home outbox.
    body = abi_encode(
        ["uint8", "bytes32", "uint256", "bytes32"], [1, pad(token.address), 10**24, pad(ATTACKER)]
    )
    home.lane.dispatch(B, pad(remote.bridge.address), body, sender=ATTACKER)
    receipt = relay(home, remote, [0])
    (failed,) = events(remote.inbox, "HandleFailed", receipt)
    assert decode_error(failed["reason"]) == ("UnknownSender", (A, pad(ATTACKER)))
    assert wrapped.functions.totalSupply().call() == 0
    # Nor can anyone call handle directly.
    assert_rejected(
        remote.bridge.functions.handle(A, pad(home.bridge.address), body),
        "NotInbox",
        sender=ATTACKER,
    )


def test_bridge_rejects_bad_transfers_from_the_trusted_path(w3: Web3, anvil: AnvilProcess) -> None:
    """What a compromised or buggy remote bridge could send (T15), as the Inbox would call."""
    home, remote = make_bridge_pair(w3)
    token = deploy(w3, "TestToken", "Test", "TST", 18)
    inbox = remote.inbox.address
    w3.provider.make_request(RPCEndpoint("anvil_impersonateAccount"), [inbox])
    w3.provider.make_request(RPCEndpoint("anvil_setBalance"), [inbox, hex(10**18)])
    sender = pad(home.bridge.address)

    def reject(body: bytes, error: str) -> tuple[Any, ...]:
        return assert_rejected(remote.bridge.functions.handle(A, sender, body), error, sender=inbox)

    def transfer(action: int, home_token: bytes, amount: int, recipient: bytes) -> bytes:
        return abi_encode(
            ["uint8", "bytes32", "uint256", "bytes32"], [action, home_token, amount, recipient]
        )

    assert reject(transfer(1, bytes(32), 5, pad(USER)), "UnregisteredToken") == (bytes(32), A)
    unknown = pad(token.address)
    assert reject(transfer(1, unknown, 5, pad(USER)), "UnregisteredToken") == (unknown, A)
    reject(transfer(1, unknown, 0, pad(USER)), "ZeroAmount")
    reject(transfer(1, unknown, 5, bytes(32)), "InvalidRecipient")
    reject(transfer(1, unknown, 5, b"\x01" * 32), "InvalidRecipient")
    reject(transfer(9, unknown, 5, pad(USER)), "UnknownAction")
    reject(transfer(1, unknown, 5, pad(USER)) + bytes(32), "MalformedBody")
    # UNLOCK of more than was ever locked towards that domain (here: nothing).
    reject(transfer(2, pad(token.address), 5, pad(USER)), "InsufficientLocked")
    reject(transfer(2, bytes(32), 5, pad(USER)), "InsufficientLocked")
    # From the right inbox but another domain's "bridge".
    assert_rejected(
        remote.bridge.functions.handle(C, sender, transfer(1, unknown, 5, pad(USER))),
        "UnknownSender",
        sender=inbox,
    )
    w3.provider.make_request(RPCEndpoint("anvil_stopImpersonatingAccount"), [inbox])


def test_bridge_admin_is_owner_only(w3: Web3) -> None:
    home, _remote = make_bridge_pair(w3)
    token = deploy(w3, "TestToken", "Test", "TST", 18)
    bridge = home.bridge.functions
    assert_rejected(bridge.setRemote(B, pad(ATTACKER)), "NotOwner", sender=ATTACKER)
    assert_rejected(bridge.registerHomeToken(token.address, B), "NotOwner", sender=ATTACKER)
    assert_rejected(bridge.registerHomeToken(USER, B), "NotAContract")
    assert_rejected(bridge.setRemote(A, pad(USER)), "DomainIsLocal")
    foreign = deploy(w3, "WrappedToken", "W", "W", 18, USER)  # minted by someone else
    assert_rejected(
        bridge.registerWrappedToken(B, pad(token.address), foreign.address), "NotOurWrappedToken"
    )
    wrapped = deploy(w3, "WrappedToken", "W", "W", 18, home.bridge.address)
    assert_rejected(wrapped.functions.mint(ATTACKER, 1), "NotBridge", sender=ATTACKER)
    send(bridge.registerWrappedToken(B, pad(token.address), wrapped.address))
    assert_rejected(
        bridge.registerWrappedToken(B, pad(token.address), wrapped.address), "AlreadyRegistered"
    )


# --------------------------------------------------------------------------- escrow remotes

# An escrow remote stands for a chain without contracts (Asset Hub): its "bridge" is an escrow
# account (a 32-byte AccountId32, no EVM address), and a token return is a message whose sender
# is whoever signed the remark. Domain B's Outbox plays that chain's remarks here: the Inbox
# checks exactly the same things whatever the origin chain is.
ESCROW_ACCOUNT = keccak256(b"passerelle test escrow account")
SUBSTRATE_USER = keccak256(b"passerelle test substrate user")
MINT, UNLOCK = 1, 2


def token_body(action: int, home_token: bytes, amount: int, recipient: bytes) -> bytes:
    return abi_encode(
        ["uint8", "bytes32", "uint256", "bytes32"], [action, home_token, amount, recipient]
    )


@contextmanager
def impersonating(w3: Web3, address: str) -> Iterator[str]:
    """Send transactions as ``address`` (e.g. an Inbox calling ``handle``)."""
    w3.provider.make_request(RPCEndpoint("anvil_impersonateAccount"), [address])
    w3.provider.make_request(RPCEndpoint("anvil_setBalance"), [address, hex(10**18)])
    try:
        yield address
    finally:
        w3.provider.make_request(RPCEndpoint("anvil_stopImpersonatingAccount"), [address])


def unlock_from(source: Side, target: Side, sender: str, token: Contract, amount: int) -> bytes:
    """``sender`` posts an UNLOCK of ``amount`` to ``target``'s bridge; return the message."""
    message, _ = source.lane.dispatch(
        target.domain,
        pad(target.bridge.address),
        token_body(UNLOCK, pad(token.address), amount, pad(sender)),
        sender=sender,
    )
    return message


def failures(side: Side, receipt: TxReceipt) -> list[tuple[str, tuple[Any, ...]]]:
    return [decode_error(f["reason"]) for f in events(side.inbox, "HandleFailed", receipt)]


def test_escrow_remote_unlocks_from_any_sender_up_to_what_was_locked(w3: Web3) -> None:
    home, remote = make_bridge_pair(w3)
    bridge = home.bridge.functions
    send(bridge.setRemote(B, ESCROW_ACCOUNT))
    send(bridge.setEscrowRemote(B, True))
    send(bridge.setRemote(C, pad(ATTACKER)))  # another route, with tokens of its own locked
    token = deploy(w3, "TestToken", "Test", "TST", 18)
    send(bridge.registerHomeToken(token.address, B))
    send(bridge.setRemoteWraps(B, token.address, True))  # what B wraps
    send(bridge.registerHomeToken(token.address, C))
    send(token.functions.mint(USER, 1000), sender=USER)
    send(token.functions.approve(home.bridge.address, 2**256 - 1), sender=USER)

    # Toward an escrow remote nothing changes: lock here, MINT addressed to the escrow account.
    receipt = send(bridge.transferRemote(token.address, 300, B, SUBSTRATE_USER), sender=USER)
    sent = Message.decode(home.lane.record(receipt))
    assert (sent.destination, sent.recipient) == (B, ESCROW_ACCOUNT)
    assert sent.body == token_body(MINT, pad(token.address), 300, SUBSTRATE_USER)
    home.lane.record(send(bridge.transferRemote(token.address, 200, C, pad(USER)), sender=USER))
    assert bridge.locked(token.address, B).call() == 300
    assert bridge.locked(token.address, C).call() == 200

    # A return signed by a user, not by the escrow account, is accepted.
    unlock_from(remote, home, OTHER_USER, token, 120)
    receipt = relay(remote, home, [0])
    assert failures(home, receipt) == []
    assert events(home.bridge, "TransferReceived", receipt) == [
        {"origin": B, "token": token.address, "recipient": OTHER_USER, "amount": 120}
    ]
    assert token.functions.balanceOf(OTHER_USER).call() == 120
    assert bridge.locked(token.address, B).call() == 180
    # Any 32-byte sender (an AccountId32), as the Inbox would pass it.
    with impersonating(w3, home.inbox.address) as inbox:
        send(
            bridge.handle(B, SUBSTRATE_USER, token_body(UNLOCK, pad(token.address), 30, pad(USER))),
            sender=inbox,
        )
    assert token.functions.balanceOf(USER).call() == 1000 - 300 - 200 + 30
    assert bridge.locked(token.address, B).call() == 150

    # One more than what is left locked towards B fails, though the bridge holds 350.
    unlock_from(remote, home, USER, token, 151)
    receipt = relay(remote, home, [1])
    assert failures(home, receipt) == [("InsufficientLocked", (token.address, B, 150, 151))]
    assert token.functions.balanceOf(home.bridge.address).call() == 350
    # Exactly what is left succeeds; after that B can release nothing, C's 200 stay locked.
    unlock_from(remote, home, ATTACKER, token, 150)
    unlock_from(remote, home, ATTACKER, token, 1)
    receipt = relay(remote, home, [2, 3])
    assert failures(home, receipt) == [("InsufficientLocked", (token.address, B, 0, 1))]
    assert token.functions.balanceOf(ATTACKER).call() == 150
    assert bridge.locked(token.address, B).call() == 0
    assert bridge.locked(token.address, C).call() == 200
    assert token.functions.balanceOf(home.bridge.address).call() == 200


def test_escrow_remote_cannot_mint(w3: Web3) -> None:
    home, remote = make_bridge_pair(w3)
    # Home of the token is B: its bridge locks it and sends MINT to A, whose wrapped token is
    # properly registered, so the escrow flag is the only reason to refuse.
    token = deploy(w3, "TestToken", "Test", "TST", 18)
    wrapped = deploy(w3, "WrappedToken", "Wrapped Test", "wTST", 18, home.bridge.address)
    send(remote.bridge.functions.registerHomeToken(token.address, A))
    send(home.bridge.functions.registerWrappedToken(B, pad(token.address), wrapped.address))
    receipt = send(home.bridge.functions.setEscrowRemote(B, True))
    assert events(home.bridge, "EscrowRemoteSet", receipt) == [{"domain": B, "escrow": True}]
    send(token.functions.mint(USER, 100), sender=USER)
    send(token.functions.approve(remote.bridge.address, 100), sender=USER)
    receipt = send(
        remote.bridge.functions.transferRemote(token.address, 100, A, pad(USER)), sender=USER
    )
    from_bridge = remote.lane.record(receipt)
    forged, _ = remote.lane.dispatch(
        A,
        pad(home.bridge.address),
        token_body(MINT, pad(token.address), 10**24, pad(ATTACKER)),
        sender=ATTACKER,
    )
    receipt = relay(remote, home, [0, 1])
    assert failures(home, receipt) == [("MintFromEscrowRemote", (B,))] * 2
    assert wrapped.functions.totalSupply().call() == 0
    assert_rejected(home.inbox.functions.retry(from_bridge), "MintFromEscrowRemote")

    # Once B is an ordinary remote again, its bridge's MINT goes through, the forgery does not.
    receipt = send(home.bridge.functions.setEscrowRemote(B, False))
    assert events(home.bridge, "EscrowRemoteSet", receipt) == [{"domain": B, "escrow": False}]
    send(home.inbox.functions.retry(from_bridge), sender=OTHER_USER)
    assert wrapped.functions.balanceOf(USER).call() == 100
    assert_rejected(home.inbox.functions.retry(forged), "UnknownSender")
    assert wrapped.functions.totalSupply().call() == 100


def test_set_escrow_remote_is_owner_only_and_not_for_the_local_domain(w3: Web3) -> None:
    home, _remote = make_bridge_pair(w3)
    bridge = home.bridge.functions
    assert assert_rejected(bridge.setEscrowRemote(B, True), "NotOwner", sender=ATTACKER) == (
        ATTACKER,
    )
    assert assert_rejected(bridge.setEscrowRemote(A, True), "DomainIsLocal") == (A,)
    assert assert_rejected(bridge.setEscrowRemote(A, False), "DomainIsLocal") == (A,)
    assert not bridge.escrowRemote(B).call()
    assert not bridge.escrowRemote(A).call()
    receipt = send(bridge.setEscrowRemote(C, True))
    assert events(home.bridge, "EscrowRemoteSet", receipt) == [{"domain": C, "escrow": True}]
    assert bridge.escrowRemote(C).call()
    assert not bridge.escrowRemote(B).call()
    send(bridge.transferOwnership(OTHER_USER))
    send(bridge.acceptOwnership(), sender=OTHER_USER)
    assert_rejected(bridge.setEscrowRemote(C, False), "NotOwner")
    send(bridge.setEscrowRemote(C, False), sender=OTHER_USER)
    assert not bridge.escrowRemote(C).call()


def test_non_escrow_remote_still_requires_its_bridge(w3: Web3) -> None:
    home, remote = make_bridge_pair(w3)
    bridge = home.bridge.functions
    send(bridge.setEscrowRemote(C, True))  # escrow elsewhere, and with no remote registered
    token = deploy(w3, "TestToken", "Test", "TST", 18)
    send(bridge.registerHomeToken(token.address, B))
    send(token.functions.mint(USER, 100), sender=USER)
    send(token.functions.approve(home.bridge.address, 100), sender=USER)
    send(bridge.transferRemote(token.address, 100, B, pad(USER)), sender=USER)

    unlock_from(remote, home, ATTACKER, token, 100)
    receipt = relay(remote, home, [0])
    assert failures(home, receipt) == [("UnknownSender", (B, pad(ATTACKER)))]
    assert bridge.locked(token.address, B).call() == 100
    body = token_body(UNLOCK, pad(token.address), 100, pad(ATTACKER))
    with impersonating(w3, home.inbox.address) as inbox:
        for origin, sender in ((B, SUBSTRATE_USER), (C, SUBSTRATE_USER), (C, bytes(32))):
            arguments = assert_rejected(
                bridge.handle(origin, sender, body), "UnknownSender", sender=inbox
            )
            assert arguments == (origin, sender)
        # The registered bridge itself still can.
        send(bridge.handle(B, pad(remote.bridge.address), body), sender=inbox)
    assert token.functions.balanceOf(ATTACKER).call() == 100


def test_link_substrate_remote_makes_an_escrow_remote(anvil: AnvilProcess, w3: Web3) -> None:
    key = bytes.fromhex(DEV_PRIVATE_KEYS[0][2:])
    committee = [address_of(k) for k in COMMITTEE_KEYS]
    genesis = keccak256(b"passerelle test asset hub genesis")
    substrate = 4000
    for home_token in (True, False):
        contracts = deploy_evm_chain(
            anvil.rpc_url,
            domain=A,
            deployer_key=key,
            committee=committee,
            threshold=THRESHOLD,
            home_token=home_token,
            client=bytes.fromhex(USER[2:]),
        )
        evm = EvmDeployment(anvil.rpc_url, A, contracts)
        link_substrate_remote(
            evm, domain=substrate, outbox=genesis, bridge_account=ESCROW_ACCOUNT, deployer_key=key
        )
        inbox = w3.eth.contract(
            address=checksum(contracts["inbox"]), abi=load_artifact("Inbox").abi
        )
        bridge = w3.eth.contract(
            address=checksum(contracts["token_bridge"]), abi=load_artifact("TokenBridge").abi
        )
        assert inbox.functions.outboxOf(substrate).call() == genesis
        assert bridge.functions.remoteBridge(substrate).call() == ESCROW_ACCOUNT
        assert bridge.functions.escrowRemote(substrate).call()
        if not home_token:
            assert "token" not in contracts
            continue
        token = w3.eth.contract(
            address=checksum(contracts["token"]), abi=load_artifact("TestToken").abi
        )
        assert bridge.functions.homeTokenRoute(token.address, substrate).call()
        assert bridge.functions.remoteWraps(substrate, token.address).call()
        send(token.functions.approve(bridge.address, 5), sender=USER)
        receipt = send(
            bridge.functions.transferRemote(token.address, 5, substrate, SUBSTRATE_USER),
            sender=USER,
        )
        outbox = w3.eth.contract(
            address=checksum(contracts["outbox"]), abi=load_artifact("Outbox").abi
        )
        sent = Message.decode(Lane(outbox, A).record(receipt))
        assert (sent.destination, sent.recipient) == (substrate, ESCROW_ACCOUNT)
        assert bridge.functions.locked(token.address, substrate).call() == 5

    with pytest.raises(DeployError, match="to itself"):
        link_substrate_remote(
            evm, domain=A, outbox=genesis, bridge_account=ESCROW_ACCOUNT, deployer_key=key
        )
    with pytest.raises(DeployError, match="bridge account must be 32 non-zero bytes"):
        link_substrate_remote(
            evm, domain=substrate, outbox=genesis, bridge_account=pad(USER)[12:], deployer_key=key
        )
    with pytest.raises(DeployError, match="outbox must be 32 non-zero bytes"):
        link_substrate_remote(
            evm, domain=substrate, outbox=bytes(32), bridge_account=ESCROW_ACCOUNT, deployer_key=key
        )
    with pytest.raises(DeployError, match="NotOwner"):
        link_substrate_remote(
            evm,
            domain=substrate,
            outbox=genesis,
            bridge_account=ESCROW_ACCOUNT,
            deployer_key=bytes.fromhex(DEV_PRIVATE_KEYS[3][2:]),
        )


# --------------------------------------------------------------------------- gas


def test_delivery_gas_per_message(
    route: Route, record_property: Callable[[str, object], None]
) -> None:
    singles = route.ping_messages(5)
    single_gas = [route.process(*route.lane.batch([n]))["gasUsed"] for n in singles]
    batch = route.ping_messages(50)
    receipt = route.process(*route.lane.batch(batch))
    assert len(events(route.inbox, "Delivered", receipt)) == 50
    unbatched = sum(single_gas) / len(single_gas)
    batched = receipt["gasUsed"] / 50
    record_property("gas_per_message_unbatched", unbatched)
    record_property("gas_per_message_batched_50", batched)
    print(
        f"\ndelivery gas per Ping message: unbatched {unbatched:,.0f}, batch of 50 {batched:,.0f}"
    )
    assert batched <= 60_000
