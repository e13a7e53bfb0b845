"""The re-proof path for parked messages (issue #11): ``Inbox.retryProven`` on a real anvil,
and ``passerelle retry --on-chain`` driving it from the ledger and the checkpoint store.

An honest message whose recipient reverted is parked (its replay bit set, a failure record
holding its id, the epoch and origin era it was accepted under). Once that committee is
revoked, or the origin untrusted and trusted again, plain ``retry`` refuses it for good. What
may bring it back is a FRESH attestation by the committee trusted now: these tests check that
an honest message can be re-proven, and that what a revoked committee forged, what it signs
itself, a message never parked, a second re-proof and a forked chain cannot.

One route is deployed once for the whole module (the session ``anvil``); each test builds on
the state the previous assertions left, in order, rather than deploying again.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import pytest
import trio
from cli_runner import run_cli
from eth_abi.abi import encode as abi_encode
from web3 import Web3
from web3.contract import Contract
from web3.types import RPCEndpoint, TxParams, Wei

from adapters.errors import AdapterError
from adapters.evm import compile as solc
from adapters.evm.chain import EvmChain, selector
from adapters.evm.tx import MinedTx
from devnet.anvil import DEV_PRIVATE_KEYS, AnvilProcess
from light_clients.committee import Checkpoint, Committee, address_of
from light_clients.ethereum.receipt import Log
from light_clients.hashing import keccak256
from light_clients.merkle import IncrementalMerkleTree
from light_clients.message import Message
from light_clients.multiproof import build_multiproof, pack_messages
from relayer.checkpoints import DirectoryCheckpointStore, SignedCheckpoint
from relayer.families.evm.delivery import TOPIC_DELIVERED
from relayer.families.evm.reproof import (
    REVERT_LINE_LIMIT,
    SCAN_SLOTS,
    TOPIC_FAILED_DISCARDED,
    ReproofRefused,
    _require_delivered,
    inbox_committee,
    newest_attestation,
    removal_of,
    revert_line,
)
from relayer.ledger import DiscoveredMessage, MessageRecord, MessageStatus, open_ledger
from relayer.operator import REPROVEN
from relayer.signer import LocalSigner
from tests.test_contracts import (
    ATTACKER,
    COMMITTEE_KEYS,
    DEPLOYER,
    OTHER_USER,
    THRESHOLD,
    A,
    B,
    Lane,
    Route,
    as_tuple,
    assert_rejected,
    attest,
    decode_error,
    events,
    failed_id,
    make_route,
    pad,
    raw_digest,
    revert_data,
    send,
    sign_digest,
)

pytestmark = pytest.mark.chain

# The committee enacted after the revocation: keys that never served before, so that a
# signature of the revoked committee cannot pass as one of the new (same keys would: an
# ordinary rotation re-enables them).
NEW_KEYS = tuple(
    sorted((keccak256(b"passerelle reproof attester %d" % i) for i in range(3)), key=address_of)
)
# The committee after a second revocation (the CLI test).
THIRD_KEYS = tuple(
    sorted((keccak256(b"passerelle reproof third %d" % i) for i in range(3)), key=address_of)
)
CLIENT_KEY = DEV_PRIVATE_KEYS[5]  # a funded anvil account no other test module sends from
REFUSED = 1  # TestRecipient.Mode.Revert
ACCEPTS = 0


@pytest.fixture(scope="module")
def route(anvil: AnvilProcess) -> Route:
    """One route for the whole module, deployed once on the session anvil."""
    return make_route(Web3(Web3.HTTPProvider(anvil.rpc_url, request_kwargs={"timeout": 30})))


def members(keys: Sequence[bytes]) -> list[str]:
    return [Web3.to_checksum_address(address_of(k)) for k in keys]


def reproof(
    lane: Lane, nonce: int, keys: Sequence[bytes] = NEW_KEYS[:THRESHOLD]
) -> tuple[tuple[int, bytes, bytes, int], bytes, bytes, list[bytes]]:
    """Arguments of ``retryProven`` for the lane's message at ``nonce`` under a checkpoint
    of everything the lane dispatched, signed by ``keys``."""
    cp, sigs, packed, proof = lane.batch([nonce], keys)
    return cp, sigs, packed, proof


def test_an_honest_parked_message_is_re_proven_under_the_current_trust_only(
    route: Route, anvil: AnvilProcess
) -> None:
    inbox, flaky = route.inbox, route.flaky
    send(flaky.functions.setMode(REFUSED))
    honest, _ = route.lane.dispatch(B, pad(flaky.address), b"honest transfer")
    honest_nonce = Message.decode(honest).nonce
    # A "compromised" epoch-1 committee signs a root whose leaf at the next nonce is a
    # message the outbox never dispatched; it is parked too (its recipient refuses).
    forged = Message(
        1, honest_nonce + 1, A, pad(ATTACKER), B, pad(flaky.address), b"forged transfer"
    ).encode()
    forged_lane = Lane(route.lane.outbox, A, messages=[*route.lane.messages, forged])
    assert events(inbox, "HandleFailed", route.process(*route.lane.batch([honest_nonce])))
    assert events(inbox, "HandleFailed", route.process(*forged_lane.batch([honest_nonce + 1])))
    assert failed_id(inbox, forged) == keccak256(forged)[:24]

    # The leak is found: revoked at once; a new committee (new keys) through the delay.
    send(inbox.functions.revokeCommittee())
    send(inbox.functions.setCommittee(members(NEW_KEYS), THRESHOLD))
    send(flaky.functions.setMode(ACCEPTS))
    # The real next message of the outbox: the leaf at the forged one's nonce.
    real, _ = route.lane.dispatch(B, pad(flaky.address), b"the real next one")
    assert Message.decode(real).nonce == honest_nonce + 1
    retry_proven = inbox.functions.retryProven

    # Plain retry refuses both for good (the committee that attested them is revoked).
    assert assert_rejected(inbox.functions.retry(honest), "CommitteeRevokedSince") == (1, 1)
    # The revoked committee's own fresh signatures: not members of the current epoch.
    assert_rejected(
        retry_proven(*reproof(route.lane, honest_nonce, COMMITTEE_KEYS[:THRESHOLD])),
        "UnknownSigner",
    )
    # The forged message cannot be re-proven under an honest root: its leaf is not there,
    # whether with the proof of its nonce or with any other message's proof.
    cp, sigs, _, proof = reproof(route.lane, honest_nonce + 1)
    forged_proof = list(build_multiproof(forged_lane.tree(), [honest_nonce + 1]))
    for given in (proof, forged_proof):  # the honest leaf's siblings; the forged tree's
        assert_rejected(retry_proven(cp, sigs, pack_messages([forged]), given), "InvalidProof")
    # The honest outbox's real leaf at that nonce has no record (the forged one holds it).
    assert_rejected(retry_proven(*reproof(route.lane, honest_nonce + 1)), "NotFailed")
    assert failed_id(inbox, forged) == keccak256(forged)[:24]

    # Exactly what process checks, by the same code: threshold before recovery, ascending
    # distinct signers, the trusted outbox, one message only.
    cp, sigs, packed, proof = reproof(route.lane, honest_nonce)
    assert_rejected(retry_proven(cp, sigs[:65], packed, proof), "BelowThreshold", mine=False)
    assert_rejected(retry_proven(cp, sigs[65:] + sigs[:65], packed, proof), "SignersNotAscending")
    assert_rejected(retry_proven(cp, sigs[:65] * 2, packed, proof), "DuplicateSigner", mine=False)
    wrong = (cp[0], pad(ATTACKER), cp[2], cp[3])
    assert_rejected(retry_proven(wrong, sigs, packed, proof), "WrongOutbox", mine=False)
    two = route.lane.batch([honest_nonce, honest_nonce + 1], NEW_KEYS[:THRESHOLD])
    assert assert_rejected(retry_proven(*two), "NotOneMessage", mine=False) == (2,)

    # The recipient rules and revert data of retry: protected → refused before any call;
    # a recipient still failing → its own revert data, the record left as it was.
    send(inbox.functions.setProtected(flaky.address, True))
    assert_rejected(retry_proven(cp, sigs, packed, proof), "RecipientProtected", mine=False)
    send(inbox.functions.setProtected(flaky.address, False))
    send(flaky.functions.setMode(REFUSED))
    assert decode_error(revert_data(retry_proven(cp, sigs, packed, proof), OTHER_USER)) == (
        "Refused",
        ("TestRecipient refuses",),
    )
    assert failed_id(inbox, honest) == keccak256(honest)[:24]
    send(flaky.functions.setMode(ACCEPTS))

    # The fork guard: a chain with another id refuses (eth_call only: anvil's signers keep
    # the old id). Restored at once: the anvil is the session's.
    w3 = route.w3
    w3.provider.make_request(RPCEndpoint("anvil_setChainId"), [anvil.chain_id + 1])
    try:
        forked = revert_data(retry_proven(cp, sigs, packed, proof), OTHER_USER)
    finally:
        w3.provider.make_request(RPCEndpoint("anvil_setChainId"), [anvil.chain_id])
    assert decode_error(forked) == ("ForkedChain", (anvil.chain_id, anvil.chain_id + 1))

    # The honest one, re-attested by the new committee: anyone re-proves it, once.
    handled = flaky.functions.handled().call()
    receipt = send(retry_proven(cp, sigs, packed, proof), sender=OTHER_USER)
    assert events(inbox, "Delivered", receipt) == [
        {"id": keccak256(honest), "origin": A, "nonce": honest_nonce}
    ]
    assert flaky.functions.handled().call() == handled + 1
    assert flaky.functions.lastBody().call() == b"honest transfer"
    assert failed_id(inbox, honest) == bytes(24)
    assert receipt["gasUsed"] < 150_000, receipt["gasUsed"]
    assert assert_rejected(retry_proven(cp, sigs, packed, proof), "NotFailed") == (
        keccak256(honest),
    )
    assert_rejected(inbox.functions.retry(honest), "NotFailed")
    # And process skips it as a replay: delivered exactly once.
    replay = route.process(*reproof(route.lane, honest_nonce))
    assert events(inbox, "AlreadyDelivered", replay) == [{"id": keccak256(honest)}]
    assert flaky.functions.handled().call() == handled + 1


def test_after_untrust_and_re_trust_only_a_re_proof_brings_a_parked_message_back(
    route: Route,
) -> None:
    """The origin's era moved on (untrusted, then the same outbox trusted again): retry
    refuses with OriginChangedSince, retryProven under the new era delivers. A message never
    parked (delivered, or never accepted) has nothing to re-prove."""
    inbox, flaky = route.inbox, route.flaky
    outbox = pad(route.lane.outbox.address)
    send(flaky.functions.setMode(REFUSED))
    parked, _ = route.lane.dispatch(B, pad(flaky.address), b"parked in era 1")
    (ping,) = route.ping_messages(1)
    (never,) = route.ping_messages(1)
    nonce = Message.decode(parked).nonce
    route.process(*route.lane.batch([nonce, ping], NEW_KEYS[:THRESHOLD]))
    assert failed_id(inbox, parked) == keccak256(parked)[:24]
    send(flaky.functions.setMode(ACCEPTS))
    era = inbox.functions.originEra(A).call()
    send(inbox.functions.setOrigin(A, bytes(32)))
    assert_rejected(inbox.functions.retryProven(*reproof(route.lane, nonce)), "UnknownOrigin")
    send(inbox.functions.setOrigin(A, outbox))
    assert assert_rejected(inbox.functions.retry(parked), "OriginChangedSince") == (A, era)
    for other in (ping, never):  # delivered; proven but never accepted
        assert_rejected(inbox.functions.retryProven(*reproof(route.lane, other)), "NotFailed")
    # What process refuses, retryProven refuses by the same code: a zero root (even signed),
    # a checkpoint that does not reach the nonce, a message for another destination.
    cp, sigs, packed, proof = reproof(route.lane, nonce)
    zero = (cp[0], cp[1], bytes(32), cp[3])
    zero_sigs = b"".join(
        sign_digest(key, raw_digest(A, outbox, bytes(32), cp[3])) for key in NEW_KEYS[:THRESHOLD]
    )
    retry_proven = inbox.functions.retryProven
    assert_rejected(retry_proven(zero, zero_sigs, packed, proof), "InvalidRoot", mine=False)
    short = route.lane.checkpoint(nonce)  # index nonce - 1
    short_sigs = attest(short, NEW_KEYS[:THRESHOLD])
    assert assert_rejected(
        retry_proven(as_tuple(short), short_sigs, packed, []), "NonceBeyondCheckpoint", mine=False
    ) == (0, nonce, nonce - 1)
    elsewhere = Message(1, nonce, A, pad(ATTACKER), B + 1, pad(flaky.address), b"x").encode()
    other_lane = Lane(route.lane.outbox, A, messages=[*route.lane.messages[:nonce], elsewhere])
    assert assert_rejected(
        retry_proven(*other_lane.batch([nonce], NEW_KEYS[:THRESHOLD])),
        "WrongDestination",
        mine=False,
    ) == (0, B + 1)
    receipt = send(retry_proven(cp, sigs, packed, proof), sender=ATTACKER)
    assert [e["nonce"] for e in events(inbox, "Delivered", receipt)] == [nonce]
    assert failed_id(inbox, parked) == bytes(24)
    assert not inbox.functions.isDelivered(A, never).call()


def config_file(tmp_path: Path, anvil: AnvilProcess, route: Route) -> Path:
    """Origin A's Outbox and domain B's Inbox of ``route`` as two chains of one config (both
    on the session anvil: the inbox cannot tell), the [client] key, a ledger and a store."""
    common = f'kind = "evm"\nrpc = ["{anvil.rpc_url}"]\nchain_id = {anvil.chain_id}\n'
    common += 'finality = "devnet-instant"\n'
    text = f"""
devnet = true

[ledger]
location = "ledger.db"

[committee]
validators = [{", ".join(f'"0x{address_of(k).hex()}"' for k in COMMITTEE_KEYS)}]
threshold = {THRESHOLD}
checkpoint_store = "checkpoints"

[[chains]]
name = "alpha"
domain = {A}
{common}outbox = "{route.lane.outbox.address}"

[[chains]]
name = "beta"
domain = {B}
{common}inbox = "{route.inbox.address}"

[client]
key = "{CLIENT_KEY}"
"""
    path = tmp_path / "passerelle.toml"
    path.write_text(text)
    return path


def publish(store: DirectoryCheckpointStore, lane: Lane, keys: Sequence[bytes]) -> int:
    """``keys`` sign the lane's whole tree into ``store`` (as attesters do); its index."""
    checkpoint = lane.checkpoint()
    for key in keys:
        store.publish(
            SignedCheckpoint.create(
                LocalSigner(key), checkpoint, block_number=1, block_hash=bytes(32)
            )
        )
    return checkpoint.index


def test_passerelle_retry_on_chain_re_proves_a_parked_message_from_the_ledger(
    route: Route, anvil: AnvilProcess, tmp_path: Path
) -> None:
    """The command: it finds the message in the ledger, rebuilds the origin's tree, takes the
    newest stored checkpoint the inbox's CURRENT committee signed with a quorum (not the
    configured committee, which was revoked), sends retryProven from the client key and
    records the outcome. Bad input is one line and exit 2, nothing sent."""
    inbox, flaky = route.inbox, route.flaky
    send(flaky.functions.setMode(REFUSED))
    first, _ = route.lane.dispatch(B, pad(flaky.address), b"parked, ledger delivered")
    second, _ = route.lane.dispatch(B, pad(flaky.address), b"parked, ledger behind")
    nonces = [Message.decode(m).nonce for m in (first, second)]
    route.process(*route.lane.batch(nonces, NEW_KEYS[:THRESHOLD]))
    send(flaky.functions.setMode(ACCEPTS))
    send(inbox.functions.revokeCommittee())
    send(inbox.functions.setCommittee(members(THIRD_KEYS), THRESHOLD))
    assert_rejected(inbox.functions.retry(first), "CommitteeRevokedSince", mine=False)

    path = config_file(tmp_path, anvil, route)
    store = DirectoryCheckpointStore(tmp_path / "checkpoints")
    quorum = publish(store, route.lane, THIRD_KEYS[:THRESHOLD])
    publish(store, route.lane, NEW_KEYS)  # the revoked committee's: not the inbox's members
    (newest,) = route.ping_messages(1)
    assert publish(store, route.lane, THIRD_KEYS[:1]) == newest  # newer, below threshold
    ids = ["0x" + keccak256(m).hex() for m in route.lane.messages]
    with open_ledger(tmp_path / "ledger.db") as ledger:
        ledger.record_discovered(
            DiscoveredMessage(m, 1, bytes(32), n.to_bytes(32, "big"), 0)
            for n, m in enumerate(route.lane.messages)
        )
        parked_reason = "accepted by the inbox, but the recipient's handle failed"
        ledger.transition([ids[nonces[0]]], MessageStatus.DELIVERED, reason=parked_reason)
        ledger.transition([ids[nonces[1]]], MessageStatus.FINAL)

    def retry(*args: str) -> tuple[int, list[str], str]:
        result = run_cli("retry", *args, "--config", path)
        return result.returncode, result.stdout.splitlines(), result.stderr

    handled = flaky.functions.handled().call()
    code, out, err = retry(ids[nonces[0]], "--on-chain", "--json")
    assert code == 0, err
    (line,) = out
    done = json.loads(line)
    assert (done["id"], done["checkpoint_index"]) == (ids[nonces[0]], quorum)
    assert (done["was"], done["now"]) == ("delivered", "delivered")
    assert flaky.functions.handled().call() == handled + 1
    assert failed_id(inbox, first) == bytes(24)
    receipt = route.w3.eth.get_transaction_receipt(done["tx"])
    assert receipt["from"] == Web3.to_checksum_address(
        LocalSigner(bytes.fromhex(CLIENT_KEY[2:])).address
    )
    assert events(inbox, "Delivered", receipt)[0]["id"] == keccak256(first)

    code, out, err = retry(ids[nonces[1]], "--on-chain")
    assert code == 0, err
    assert "ledger final → delivered" in out[0]
    assert flaky.functions.handled().call() == handled + 2
    with open_ledger(tmp_path / "ledger.db") as ledger:
        trail = ledger.history(ids[nonces[1]])
        record = ledger.get(ids[nonces[1]])
        untouched = ledger.history(ids[nonces[0]])
    assert record is not None and record.status == MessageStatus.DELIVERED
    assert trail[-1].from_status == MessageStatus.FINAL
    assert trail[-1].reason is not None and trail[-1].reason.startswith(REPROVEN)
    assert trail[-1].tx_hash == record.delivery_tx_hash
    assert untouched[-1].reason == parked_reason  # terminal: left as it was

    # Bad input: one line each, exit 2, nothing sent.
    block = route.w3.eth.block_number
    for args, words in (
        ((ids[nonces[0]], "--on-chain"), "not parked on beta"),  # re-proven already
        ((ids[newest], "--on-chain"), "not parked on beta"),  # never accepted
        (("0x" + "ab" * 32, "--on-chain"), "no such message in the ledger"),
        (("nonsense", "--on-chain", "--json"), "nonsense"),
        ((ids[0], ids[1], "--on-chain"), "give exactly one id"),
    ):
        code, out, err = retry(*args)
        assert (code, out) == (2, []), (args, err)
        assert len(err.splitlines()) == 1 and words in err, (args, err)
    assert route.w3.eth.block_number == block


# --------------------------------------------------------------------------- review fixes

RECIPIENTS = Path(__file__).parent / "contracts" / "ReproofRecipients.sol"


@pytest.fixture(scope="module")
def swallower(route: Route) -> Contract:
    """``Swallower`` (tests/contracts/ReproofRecipients.sol), compiled with the project's
    pinned solc and deployed on the module's chain: a recipient that catches its own inner
    out-of-gas, and whose refusal is a hostile Error(string)."""
    compiler_input = {
        "language": "Solidity",
        "sources": {RECIPIENTS.name: {"content": RECIPIENTS.read_text()}},
        # Neither the optimizer nor viaIR: a test recipient's gas does not matter, and
        # solcjs compiles it in a fraction of the time.
        "settings": solc.settings() | {"viaIR": False, "optimizer": {"enabled": False}},
    }
    _, output = solc.compile_sources(compiler_input)
    built = output["contracts"][RECIPIENTS.name]["Swallower"]
    w3 = route.w3
    factory = w3.eth.contract(abi=built["abi"], bytecode="0x" + built["evm"]["bytecode"]["object"])
    receipt = w3.eth.wait_for_transaction_receipt(
        factory.constructor().transact({"from": DEPLOYER})
    )
    address = receipt["contractAddress"]
    assert address is not None
    return w3.eth.contract(address=address, abi=built["abi"])


def seed_ledger(path: Path, lane: Lane, count: int | None = None) -> list[str]:
    """A ledger holding the lane's first ``count`` messages (all by default) as ``final``
    (scanned, not delivered: the CLI then records its re-proof); their ids by nonce."""
    messages = lane.messages[: len(lane.messages) if count is None else count]
    with open_ledger(path) as ledger:
        ledger.record_discovered(
            DiscoveredMessage(m, 1, bytes(32), n.to_bytes(32, "big"), 0)
            for n, m in enumerate(messages)
        )
        ids = ["0x" + keccak256(m).hex() for m in messages]
        ledger.transition(ids, MessageStatus.FINAL)
    return ids


def test_a_re_proof_always_gives_the_recipient_what_process_gives_it(
    route: Route, anvil: AnvilProcess, tmp_path: Path, swallower: Contract
) -> None:
    """M1: a recipient that swallows its own out-of-gas must not be handed a parked message
    with less gas than ``process`` gives (its effect would be lost, the record gone). A
    direct ``retryProven`` or ``retry`` with ~150k gas reverts InsufficientGas and keeps the
    record; the CLI's own estimate then includes the stipend, so the inner effect happens.
    L1: the dry run's refusal is the recipient's Error(string) decoded into one printable
    line (its NUL, newline and ESC replaced), nothing sent."""
    inbox = route.inbox
    message, _ = route.lane.dispatch(B, pad(swallower.address), b"credit me")
    nonce = Message.decode(message).nonce
    route.process(*route.lane.batch([nonce], THIRD_KEYS[:THRESHOLD]))  # parked: refusing
    assert failed_id(inbox, message) == keccak256(message)[:24]
    send(swallower.functions.setRefusing(False))

    args = reproof(route.lane, nonce, THIRD_KEYS[:THRESHOLD])
    for starved in (inbox.functions.retryProven(*args), inbox.functions.retry(message)):
        assert_rejected(starved, "InsufficientGas", sender=OTHER_USER, gas=150_000)
    assert failed_id(inbox, message) == keccak256(message)[:24]
    assert swallower.functions.handled().call() == 0

    path = config_file(tmp_path, anvil, route)
    store = DirectoryCheckpointStore(tmp_path / "checkpoints")
    publish(store, route.lane, THIRD_KEYS[:THRESHOLD])
    ids = seed_ledger(tmp_path / "ledger.db", route.lane)

    send(swallower.functions.setRefusing(True))
    block = route.w3.eth.block_number
    result = run_cli("retry", ids[nonce], "--on-chain", "--config", path)
    assert (result.returncode, result.stdout) == (2, "")
    (line,) = result.stderr.splitlines()
    assert line.isprintable() and "\x00" not in result.stderr and "\x1b" not in result.stderr
    assert "refuses the re-proof: Error(" in line and "FORGED LINE" in line, line
    assert route.w3.eth.block_number == block

    send(swallower.functions.setRefusing(False))
    result = run_cli("retry", ids[nonce], "--on-chain", "--json", "--config", path)
    assert result.returncode == 0, result.stderr
    done = json.loads(result.stdout)
    assert (done["was"], done["now"]) == ("final", "delivered")
    assert swallower.functions.handled().call() == 1
    assert swallower.functions.credited().call() == 1  # the inner effect was not starved
    assert failed_id(inbox, message) == bytes(24)


KEYS = tuple(
    sorted((keccak256(b"passerelle unit attester %d" % i) for i in range(3)), key=address_of)
)
REVOKED = tuple(
    sorted((keccak256(b"passerelle unit revoked %d" % i) for i in range(3)), key=address_of)
)
OUTBOX = bytes(12) + b"\x0b" * 20


def unit_tree(count: int) -> IncrementalMerkleTree:
    """A ledger's tree of ``count`` messages (their ids only matter)."""
    tree = IncrementalMerkleTree()
    tree.extend([keccak256(b"message %d" % n) for n in range(count)])
    return tree


def sign_into(
    store: DirectoryCheckpointStore, tree: IncrementalMerkleTree, index: int, keys: Sequence[bytes]
) -> None:
    """``keys`` sign the checkpoint of ``tree``'s first ``index + 1`` leaves into ``store``."""
    checkpoint = Checkpoint(origin=A, outbox=OUTBOX, root=tree.root(index + 1), index=index)
    for key in keys:
        store.publish(
            SignedCheckpoint.create(
                LocalSigner(key), checkpoint, block_number=1, block_hash=bytes(32)
            )
        )


def test_the_cli_finds_a_quorum_below_the_members_newest_index_and_says_when_the_ledger_lags(
    tmp_path: Path,
) -> None:
    """M3: the members signed one index past what the ledger scanned: the quorum one index
    lower (covering the nonce) is used. A revoked committee's quorum at a NEWER index is never
    read. With nothing provable signed, "the ledger is behind" is its own message. And a store
    full of planted indices costs at most SCAN_SLOTS slot reads below the newest."""
    committee = Committee(tuple(address_of(k) for k in KEYS), THRESHOLD)
    ledger_tree = unit_tree(4)  # nonces 0..3 scanned
    chain_tree = unit_tree(6)  # the outbox is further on; the attesters saw it

    store = DirectoryCheckpointStore(tmp_path / "lagging")
    sign_into(store, chain_tree, 3, KEYS[:THRESHOLD])
    sign_into(store, chain_tree, 4, KEYS)  # newest of every member: the ledger lacks index 4
    sign_into(store, chain_tree, 5, REVOKED)  # not members: never counted
    found, signatures = newest_attestation(
        store, ledger_tree, committee, origin=A, outbox=OUTBOX, nonce=2
    )
    assert (found.index, found.root, len(signatures)) == (3, ledger_tree.root(4), THRESHOLD)

    behind = DirectoryCheckpointStore(tmp_path / "behind")
    sign_into(behind, chain_tree, 5, KEYS)
    sign_into(behind, ledger_tree, 3, REVOKED)  # a revoked quorum the ledger could prove
    with pytest.raises(ReproofRefused, match=r"ledger is behind the checkpoint store.*index 5"):
        newest_attestation(behind, ledger_tree, committee, origin=A, outbox=OUTBOX, nonce=2)

    # A quorum deep below the members' newest: beyond the bound, not searched.
    deep = DirectoryCheckpointStore(tmp_path / "deep")
    long_tree = unit_tree(SCAN_SLOTS + 10)
    sign_into(deep, long_tree, 1, KEYS[:THRESHOLD])
    # Every member's newest: a root the ledger does not have (planted, or another fork).
    planted = IncrementalMerkleTree()
    planted.extend([keccak256(b"planted %d" % n) for n in range(SCAN_SLOTS + 10)])
    sign_into(deep, planted, SCAN_SLOTS + 9, KEYS)
    reads: list[int] = []
    counting = deep.signatures

    def signatures_of(origin: int, outbox: bytes, index: int, members: Any = None) -> Any:
        reads.append(index)
        return counting(origin, outbox, index, members)

    deep.signatures = signatures_of  # type: ignore[method-assign]
    with pytest.raises(ReproofRefused, match="no checkpoint covering nonce 1"):
        newest_attestation(deep, long_tree, committee, origin=A, outbox=OUTBOX, nonce=1)
    assert len(reads) == SCAN_SLOTS and 1 not in reads


class AnsweringInbox:
    """An endpoint's answers to ``validators()`` / ``threshold()``: what a lying one says."""

    def __init__(self, members: list[str], threshold: int) -> None:
        self.words = [abi_encode(["address[]"], [members]), abi_encode(["uint8"], [threshold])]

    async def call_many(self, to: bytes, calls: Sequence[bytes]) -> list[bytes]:
        return list(self.words)


@pytest.mark.parametrize(
    ("members", "threshold"),
    [
        (["0x" + "00" * 20], 1),  # the zero address (a failed ecrecover)
        (["0x" + "11" * 20], 2),  # threshold above the size
        (["0x" + "11" * 20, "0x" + "11" * 20], 1),  # a repeated member
    ],
)
def test_an_impossible_committee_answer_is_a_one_line_refusal(
    members: list[str], threshold: int
) -> None:
    """L4: the committee a lying endpoint reports is refused in one line (exit 2 through the
    CLI's OperatorRefused), not an internal error."""
    endpoint = cast(EvmChain, AnsweringInbox(members, threshold))
    with pytest.raises(ReproofRefused, match="answered no usable committee") as refused:
        trio.run(inbox_committee, endpoint, bytes(20), "beta")
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("words", [[bytes(31), bytes(32)], [bytes(64), b"\x01"], [b"", b""]])
def test_a_malformed_committee_word_is_a_one_line_refusal(words: list[bytes]) -> None:
    """A short or garbled ``validators()``/``threshold()`` word (eth_abi's DecodingError, no
    ValueError) is refused in one line too, not a traceback."""
    endpoint = AnsweringInbox([], 1)
    endpoint.words = words
    with pytest.raises(ReproofRefused, match="answered no usable committee") as refused:
        trio.run(inbox_committee, cast(EvmChain, endpoint), bytes(20), "beta")
    assert "\n" not in str(refused.value)


def test_only_the_inbox_s_own_delivered_log_proves_a_re_proof() -> None:
    """L7: ``_require_delivered`` refuses a receipt without the inbox's Delivered(id): none
    at all, one a recipient emitted with the inbox's signature, one about another id."""
    inbox, message_id = b"\x0a" * 20, "0x" + "ab" * 32
    other = "0x" + "cd" * 32

    def mined(*logs: Log) -> MinedTx:
        return MinedTx(b"\x01" * 32, 0, 7, 21_000, 1, list(logs))

    def delivered(address: bytes, about: str) -> Log:
        return Log(address, (TOPIC_DELIVERED, bytes.fromhex(about[2:]), bytes(32)), bytes(32))

    for receipt in (
        mined(),
        mined(delivered(b"\x0c" * 20, message_id)),
        mined(delivered(inbox, other)),
    ):
        with pytest.raises(AdapterError, match="logged no Delivered"):
            _require_delivered(receipt, inbox, message_id, "beta")
    _require_delivered(mined(delivered(inbox, message_id)), inbox, message_id, "beta")


def test_the_dry_run_refusal_names_the_inbox_error_in_one_printable_line() -> None:
    """L1: revert data decoded against the Inbox's errors and Error(string); anything else as
    bounded hex; every character the recipient or endpoint chose made printable."""
    not_failed = "0x" + (selector("NotFailed(bytes32)") + b"\xab" * 32).hex()
    assert revert_line(not_failed, "execution reverted") == "NotFailed(0x" + "ab" * 32 + ")"
    hostile = selector("Error(string)") + abi_encode(["string"], ["a\x00b\nc\x1b[2J"])
    line = revert_line({"data": "0x" + hostile.hex()}, "")
    assert line.isprintable() and line.startswith("Error(") and "c" in line
    unknown = revert_line("0x" + "ee" * 300, "")
    assert (
        unknown.startswith("revert data 0x" + "ee" * 64) and len(unknown) <= REVERT_LINE_LIMIT + 1
    )
    assert (
        revert_line(None, "execution reverted\n\x1b[31mforged") == "execution reverted??[31mforged"
    )
    assert revert_line("0xzz", "no data") == "no data"


Rival = Callable[[Route, int], Any]
"""Builds the rival's call (a web3 contract function) for the lane's message at a nonce."""


def race(route: Route, anvil: AnvilProcess, tmp_path: Path, rival: Rival, sender: str) -> Any:
    """The CLI's ``retry --on-chain`` of a freshly parked message, and ``rival`` sent by
    ``sender`` with a higher tip once the CLI's transaction is in the pool, both mined in one
    block (automining off for the race, restored in ``finally``: the anvil is the session's).
    Returns the CLI's result, having checked the rival succeeded, our transaction was mined
    (and reverted: the recipient saw at most the rival's call) and the ledger is untouched."""
    inbox, flaky = route.inbox, route.flaky
    send(flaky.functions.setMode(REFUSED))
    message, _ = route.lane.dispatch(B, pad(flaky.address), b"raced")
    nonce = Message.decode(message).nonce
    route.process(*route.lane.batch([nonce], THIRD_KEYS[:THRESHOLD]))
    send(flaky.functions.setMode(ACCEPTS))
    path = config_file(tmp_path, anvil, route)
    publish(DirectoryCheckpointStore(tmp_path / "checkpoints"), route.lane, THIRD_KEYS[:THRESHOLD])
    ids = seed_ledger(tmp_path / "ledger.db", route.lane)
    client = Web3.to_checksum_address(LocalSigner(bytes.fromhex(CLIENT_KEY[2:])).address)
    w3 = route.w3
    sent_before = w3.eth.get_transaction_count(client)

    outcome: list[Any] = []
    w3.provider.make_request(RPCEndpoint("evm_setAutomine"), [False])
    try:
        cli = threading.Thread(
            target=lambda: outcome.append(
                run_cli("retry", ids[nonce], "--on-chain", "--config", path)
            )
        )
        cli.start()
        deadline = time.monotonic() + 60
        while w3.eth.get_transaction_count(client, "pending") == sent_before:
            assert cli.is_alive() and time.monotonic() < deadline, outcome
            time.sleep(0.05)
        tip = Wei(50 * 10**9)
        fees: TxParams = {
            "from": sender,
            "maxPriorityFeePerGas": tip,
            "maxFeePerGas": Wei(2 * tip),
        }
        rival_hash = rival(route, nonce).transact(fees)
        w3.provider.make_request(RPCEndpoint("evm_mine"), [])
    finally:
        w3.provider.make_request(RPCEndpoint("evm_setAutomine"), [True])
    cli.join(timeout=60)
    (result,) = outcome
    assert w3.eth.get_transaction_receipt(rival_hash)["status"] == 1
    assert w3.eth.get_transaction_count(client) == sent_before + 1  # ours was mined, reverted
    assert failed_id(inbox, message) == bytes(24)
    with open_ledger(tmp_path / "ledger.db") as ledger:
        record = ledger.get(ids[nonce])
    assert record is not None and record.status == MessageStatus.FINAL
    return result


def test_a_re_proof_front_run_by_someone_else_ends_as_handled_elsewhere(
    route: Route, anvil: AnvilProcess, tmp_path: Path
) -> None:
    """L8: between the CLI's dry run and its block, someone else re-proves the message (a
    higher tip puts theirs first in the block). The CLI's transaction reverts with NotFailed;
    it finds the record gone and the inbox's Delivered(id) in between, and ends with one line
    saying so, exit 0 (what the operator wanted happened), the ledger untouched."""
    handled = route.flaky.functions.handled().call()

    def rival(route: Route, nonce: int) -> Any:
        return route.inbox.functions.retryProven(
            *reproof(route.lane, nonce, THIRD_KEYS[:THRESHOLD])
        )

    result = race(route, anvil, tmp_path, rival, OTHER_USER)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    (line,) = result.stdout.splitlines()
    assert "by someone else" in line and "reverted" in line and "(unchanged)" in line, line
    assert route.flaky.functions.handled().call() == handled + 1


def test_a_re_proof_beaten_by_the_owner_s_discard_is_not_reported_as_handed_over(
    route: Route, anvil: AnvilProcess, tmp_path: Path
) -> None:
    """R2b #1: the owner's discard (announced so that the message's owner may retry first;
    zero delay on this inbox) lands one place before the CLI's re-proof in the same block.
    The failure record is gone just as after a hand-over, but the message was destroyed, not
    delivered: one line naming the discard, exit 1, the recipient never called, the ledger
    untouched. Before the fix this said "handed over by someone else", exit 0."""
    handled = route.flaky.functions.handled().call()
    outbox = pad(route.lane.outbox.address)

    def rival(route: Route, nonce: int) -> Any:
        return route.inbox.functions.discardFailed(A, outbox, nonce)

    result = race(route, anvil, tmp_path, rival, DEPLOYER)
    assert (result.returncode, result.stdout) == (1, ""), (result.stdout, result.stderr)
    (line,) = result.stderr.splitlines()
    assert "discarded by the inbox's owner" in line and "reverted" in line, line
    assert "someone else" not in line, line
    assert route.flaky.functions.handled().call() == handled


def test_only_the_inbox_s_own_log_of_this_record_explains_its_removal() -> None:
    """:func:`removal_of` on hostile ``eth_getLogs`` answers: a recipient's look-alike (its
    own address), a discard of another record (other nonce or outbox), a log with a bad
    shape are no evidence (None: the revert is raised as it is); the inbox's own logs are."""
    inbox, outbox = b"\x11" * 20, b"\x22" * 32
    message_id = "0x" + keccak256(b"parked").hex()
    record = MessageRecord(id=message_id, origin=A, nonce=7)

    def log(address: bytes, topics: Sequence[bytes], data: bytes = b"", block: int = 9) -> Any:
        return {
            "address": "0x" + address.hex(),
            "topics": ["0x" + t.hex() for t in topics],
            "data": "0x" + data.hex(),
            "blockNumber": hex(block),
        }

    word = bytes.fromhex(message_id[2:])
    origin = A.to_bytes(32, "big")
    discard = [TOPIC_FAILED_DISCARDED, word[:24] + bytes(8), origin]
    ours = outbox + (7).to_bytes(32, "big")
    assert removal_of([], [], inbox, record, outbox) is None
    assert (
        removal_of([log(b"\x33" * 20, [TOPIC_DELIVERED, word, origin])], [], inbox, record, outbox)
        is None
    )
    assert removal_of([], [log(b"\x33" * 20, discard, ours)], inbox, record, outbox) is None
    other_nonce = outbox + (8).to_bytes(32, "big")
    other_outbox = b"\x44" * 32 + (7).to_bytes(32, "big")
    assert (
        removal_of(
            [],
            [log(inbox, discard, other_nonce), log(inbox, discard, other_outbox)],
            inbox,
            record,
            outbox,
        )
        is None
    )
    assert (
        removal_of([{"address": 5, "topics": None}], [{"topics": "x"}], inbox, record, outbox)
        is None
    )
    assert removal_of(
        [log(inbox, [TOPIC_DELIVERED, word, origin], block=12)], [], inbox, record, outbox
    ) == ("delivered", 12)
    assert removal_of([], [log(inbox, discard, ours, block=13)], inbox, record, outbox) == (
        "discarded",
        13,
    )
