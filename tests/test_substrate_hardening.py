"""Issue #8, points 4, 7 and 10: Asset Hub delivery hardening.

- Point 4: the EVM TokenBridge refuses at dispatch what the Substrate route cannot honour
  (a token it does not wrap, an amount above u128); a token transfer is never delivered as a
  mere remark; the committee refunds a transfer that can never be delivered, and the bridge
  pays a refund once, to the sender, only on the escrow account's word. The chain-level round
  trip (chopsticks + anvil) is ``test_e2e_substrate.py::test_a_transfer_to_an_account_that_
  cannot_hold_the_asset_is_refunded_once``.
- Point 7: an attester approves only checkpoints a quorum signed, holds a bounded number of
  open multisig operations, and cancels its stale ones by its own clock (chopsticks).
- Point 10: a Substrate origin's messages may address only the recipients the config allows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import trio
from conftest import running_chopsticks
from eth_abi.abi import encode as abi_encode
from hypothesis import given
from hypothesis import strategies as st
from scalecodec.base import ScaleBytes
from substrateinterface import Keypair, SubstrateInterface
from substrateinterface.exceptions import SubstrateRequestException
from test_chopsticks import rpc
from test_contracts import (
    ESCROW_ACCOUNT,
    SUBSTRATE_USER,
    USER,
    A,
    B,
    C,
    assert_rejected,
    deploy,
    events,
    impersonating,
    make_bridge_pair,
    pad,
    relay,
    send,
)
from test_substrate_route import (
    ALPHA,
    ASSETHUB,
    BENEFICIARY,
    BETA,
    BRIDGES,
    GAMMA,
    HOME_TOKEN,
    KEYS,
    MULTISIG,
    SETTINGS,
    config_toml,
    load,
    message,
    token_body,
)
from web3 import Web3

from adapters.errors import AdapterError
from adapters.substrate.client import (
    MAX_CALL_DEPTH,
    RUNTIME_MAX_CALL_DEPTH,
    SubstrateClient,
    _decode_call,
    _remarks_in_call,
    keypair_from_seed,
)
from adapters.substrate.metadata import SharedMetadataInterface
from adapters.substrate.multisig import (
    OpenOperation,
    Timepoint,
    approve,
    cancel,
    execute,
    executed_ok,
    open_operation,
)
from devnet.anvil import DEV_ADDRESSES, AnvilProcess
from devnet.chopsticks import ChopsticksProcess
from devnet.substrate import (
    ASSET_ID,
    SubstrateSetupError,
    class_key,
    collection_id,
    grant_free_holding,
    setup_asset_hub,
)
from light_clients.committee import Checkpoint
from light_clients.errors import VerificationError
from light_clients.hashing import blake2_256, keccak256
from light_clients.merkle import IncrementalMerkleTree
from light_clients.message import Message
from light_clients.substrate.multisig import multisig_account
from light_clients.substrate.remark import (
    REMARK_PREFIX,
    CommitteeRemarkRejected,
    EscrowRoute,
    EventSenderMismatch,
    MessageSenderMismatch,
    RecipientNotAllowed,
    check_escrow,
    check_recipient,
    validate_remark,
)
from light_clients.substrate.scale import ScaleReader, encode_compact
from relayer.accounts import bytes32
from relayer.attester import AttesterState
from relayer.checkpoints import CheckpointStore, SignedCheckpoint
from relayer.config import ChainConfig
from relayer.families.substrate.approval import (
    MAX_OPEN_OPERATIONS,
    MAX_OPENS_PER_CALL,
    STALE_OPERATION,
    DeliveryDuty,
    _act_on,
    _quorum_signed,
    _tend_held,
    _verified_batch,
    _verify_proposal,
)
from relayer.families.substrate.calls import (
    GUARD_DELIVERED,
    GUARD_REFUNDED,
    REFUND_CANNOT_HOLD,
    REFUND_NO_CONSUMER_ROOM,
    REFUND_NOT_WRAPPED,
    NotDeliverable,
    Refund,
    RuntimeCall,
    compose_batch,
    delivery_calls,
    guard_items,
    refund_message,
    refund_reason,
)
from relayer.families.substrate.delivery import SubstrateDelivery
from relayer.families.substrate.proposals import DirectoryProposalStore, ProposalKey, new_proposal
from relayer.families.substrate.scan import escrow_routes, scan_remarks
from relayer.ledger import DiscoveredMessage, Ledger, MessageStatus, open_ledger
from relayer.relay import MAX_DELIVERY_ATTEMPTS, Relayer
from relayer.signer import LocalSigner

U128_MAX = 2**128 - 1
REFUND = 3
ATTESTER = b"\x5a" * 32  # whoever signed the as_multi that carried the committee's remark
ROUTES = [
    EscrowRoute(ALPHA, BRIDGES[ALPHA], bytes32(HOME_TOKEN), 5, MULTISIG),
    EscrowRoute(BETA, BRIDGES[BETA], None, None, MULTISIG),
]


def attested_in_ledger(ledger: Ledger, raw: bytes, *, checkpoint_index: int) -> None:
    """``raw`` (a message from ALPHA) recorded and attested under a stored checkpoint."""
    ids = ["0x" + keccak256(raw).hex()]
    ledger.record_discovered([DiscoveredMessage(raw, 1, b"\x01" * 32, b"\x02" * 32, 0)])
    ledger.transition(ids, MessageStatus.FINAL)
    checkpoint = ledger.save_checkpoint(
        ALPHA, b"\x11" * 32, b"\x33" * 32, checkpoint_index, block_number=1, block_hash=b"\x01" * 32
    )
    ledger.transition(ids, MessageStatus.ATTESTED, checkpoint_id=checkpoint)


def refund_body(message_id: bytes = b"\x11" * 32, amount: int = 1000, reason: int = 2) -> bytes:
    return abi_encode(
        ["uint8", "bytes32", "uint256", "bytes32"],
        [REFUND, message_id, amount, reason.to_bytes(32, "big")],
    )


def committee_message(**fields: Any) -> Message:
    base = {
        "origin": ASSETHUB,
        "sender": MULTISIG,
        "destination": ALPHA,
        "recipient": BRIDGES[ALPHA],
        "body": refund_body(),
    }
    return message(**{**base, **fields})


# --------------------------------------------------------------------------- point 4, EVM


@pytest.fixture(scope="module")
def w3(anvil: AnvilProcess) -> Web3:
    web3 = Web3(Web3.HTTPProvider(anvil.rpc_url, request_kwargs={"timeout": 30}))
    assert web3.is_connected()
    return web3


def escrow_pair(w3: Web3) -> tuple[Any, Any, Any]:
    """alpha (A) with an escrow remote B whose escrow account is ``escrow``, a home token of
    1000 units of USER's routed there and wrapped there, and an unwrapped second token."""
    home, _ = make_bridge_pair(w3)
    bridge = home.bridge.functions
    send(bridge.setRemote(B, ESCROW_ACCOUNT))
    send(bridge.setEscrowRemote(B, True))
    token = deploy(w3, "TestToken", "Test", "TST", 18)
    other = deploy(w3, "TestToken", "Other", "OTH", 18)
    for t in (token, other):
        send(bridge.registerHomeToken(t.address, B))
        send(t.functions.mint(USER, 2**130), sender=USER)
        send(t.functions.approve(home.bridge.address, 2**256 - 1), sender=USER)
    send(bridge.setRemoteWraps(B, token.address, True))
    return home, token, other


def test_dispatch_to_an_escrow_remote_refuses_what_it_cannot_honour(w3: Web3) -> None:
    home, token, other = escrow_pair(w3)
    bridge = home.bridge.functions
    # A token the remote does not wrap, though registered for B: it would stay locked.
    assert assert_rejected(
        bridge.transferRemote(other.address, 5, B, SUBSTRATE_USER),
        "NotWrappedAtRemote",
        sender=USER,
    ) == (other.address, B)
    # More than a Substrate balance holds.
    assert assert_rejected(
        bridge.transferRemote(token.address, U128_MAX + 1, B, SUBSTRATE_USER),
        "AmountAboveU128",
        sender=USER,
    ) == (U128_MAX + 1,)
    assert bridge.locked(token.address, B).call() == 0
    # Exactly u128::MAX of the wrapped token goes.
    send(bridge.transferRemote(token.address, U128_MAX, B, SUBSTRATE_USER), sender=USER)
    assert bridge.locked(token.address, B).call() == U128_MAX
    # A route that is no escrow remote is not constrained by it.
    send(bridge.setRemote(C, pad(DEV_ADDRESSES[5])))
    send(other.functions.approve(home.bridge.address, 2**256 - 1), sender=USER)
    send(bridge.registerHomeToken(other.address, C))
    send(bridge.transferRemote(other.address, U128_MAX + 1, C, pad(USER)), sender=USER)
    # What a remote wraps is the owner's to say, for a remote domain only.
    assert assert_rejected(
        bridge.setRemoteWraps(B, other.address, True), "NotOwner", sender=USER
    ) == (USER,)
    assert assert_rejected(bridge.setRemoteWraps(A, other.address, True), "DomainIsLocal") == (A,)
    receipt = send(bridge.setRemoteWraps(B, token.address, False))
    assert events(home.bridge, "RemoteWrapsSet", receipt) == [
        {"domain": B, "token": token.address, "wraps": False}
    ]
    assert_rejected(
        bridge.transferRemote(token.address, 1, B, SUBSTRATE_USER),
        "NotWrappedAtRemote",
        sender=USER,
    )


def test_a_refund_pays_the_sender_once_and_only_on_the_escrow_accounts_word(w3: Web3) -> None:
    home, token, _ = escrow_pair(w3)
    bridge = home.bridge.functions
    start = token.functions.balanceOf(USER).call()
    receipt = send(bridge.transferRemote(token.address, 300, B, SUBSTRATE_USER), sender=USER)
    [sent] = events(home.bridge, "TransferRemote", receipt)
    message_id = bytes(sent["id"])
    assert bridge.refunds(message_id).call() == [token.address, USER, 300, B]
    assert token.functions.balanceOf(USER).call() == start - 300

    with impersonating(w3, home.inbox.address) as inbox:
        # A user's remark (any sender is accepted from an escrow remote, for UNLOCKs) is no
        # refund: only the escrow account itself — the committee's multisig — may refund.
        assert assert_rejected(
            bridge.handle(B, SUBSTRATE_USER, refund_body(message_id, 300)),
            "RefundNotFromEscrow",
            sender=inbox,
        ) == (B, SUBSTRATE_USER)
        # Not a remote that is no escrow remote, even through its registered bridge.
        send(bridge.setRemote(C, pad(DEV_ADDRESSES[5])))
        assert_rejected(
            bridge.handle(C, pad(DEV_ADDRESSES[5]), refund_body(message_id, 300)),
            "RefundNotFromEscrow",
            sender=inbox,
        )
        # Not another amount, not an unknown transfer.
        assert assert_rejected(
            bridge.handle(B, ESCROW_ACCOUNT, refund_body(message_id, 301)),
            "RefundMismatch",
            sender=inbox,
        ) == (message_id, 300, 301)
        assert_rejected(
            bridge.handle(B, ESCROW_ACCOUNT, refund_body(b"\x01" * 32, 300)),
            "UnknownRefund",
            sender=inbox,
        )
        receipt = send(bridge.handle(B, ESCROW_ACCOUNT, refund_body(message_id, 300)), sender=inbox)
        assert events(home.bridge, "Refunded", receipt) == [
            {
                "origin": B,
                "id": message_id,
                "sender": USER,
                "token": token.address,
                "amount": 300,
                "reason": (2).to_bytes(32, "big"),
            }
        ]
        assert token.functions.balanceOf(USER).call() == start
        assert bridge.locked(token.address, B).call() == 0
        # Once.
        assert_rejected(
            bridge.handle(B, ESCROW_ACCOUNT, refund_body(message_id, 300)),
            "UnknownRefund",
            sender=inbox,
        )


def test_only_the_remote_a_transfer_went_to_may_refund_it(w3: Web3) -> None:
    """Two escrow remotes (even with one escrow account): C cannot know whether B delivered a
    transfer sent to B, so C's refund of it — paid from what was locked towards C — would pay
    the sender twice (refund here, delivery on B). Only B may refund it."""
    home, token, _ = escrow_pair(w3)
    bridge = home.bridge.functions
    send(bridge.setRemote(C, ESCROW_ACCOUNT))
    send(bridge.setEscrowRemote(C, True))
    send(bridge.registerHomeToken(token.address, C))
    send(bridge.setRemoteWraps(C, token.address, True))
    receipt = send(bridge.transferRemote(token.address, 300, B, SUBSTRATE_USER), sender=USER)
    [sent] = events(home.bridge, "TransferRemote", receipt)
    send(bridge.transferRemote(token.address, 300, C, SUBSTRATE_USER), sender=USER)
    message_id = bytes(sent["id"])
    with impersonating(w3, home.inbox.address) as inbox:
        assert assert_rejected(
            bridge.handle(C, ESCROW_ACCOUNT, refund_body(message_id, 300)),
            "RefundFromOtherRemote",
            sender=inbox,
        ) == (message_id, B, C)
        assert bridge.locked(token.address, C).call() == 300
        send(bridge.handle(B, ESCROW_ACCOUNT, refund_body(message_id, 300)), sender=inbox)
    assert bridge.locked(token.address, B).call() == 0


def test_a_refund_through_the_inbox(w3: Web3) -> None:
    """The whole EVM path: B's "escrow account" is an EVM address here, so its Outbox can
    dispatch as it (on Asset Hub it is the multisig's remark)."""
    home, remote = make_bridge_pair(w3)
    escrow = DEV_ADDRESSES[6]
    bridge = home.bridge.functions
    send(bridge.setRemote(B, pad(escrow)))
    send(bridge.setEscrowRemote(B, True))
    token = deploy(w3, "TestToken", "Test", "TST", 18)
    send(bridge.registerHomeToken(token.address, B))
    send(bridge.setRemoteWraps(B, token.address, True))
    send(token.functions.mint(USER, 50), sender=USER)
    send(token.functions.approve(home.bridge.address, 50), sender=USER)
    receipt = send(bridge.transferRemote(token.address, 50, B, SUBSTRATE_USER), sender=USER)
    message_id = keccak256(home.lane.record(receipt))
    for _ in range(2):  # the same refund twice: paid once
        remote.lane.dispatch(A, pad(home.bridge.address), refund_body(message_id, 50), escrow)
    receipt = relay(remote, home, [0, 1])
    assert len(events(home.bridge, "Refunded", receipt)) == 1
    [failed] = events(home.inbox, "HandleFailed", receipt)
    assert token.functions.balanceOf(USER).call() == 50
    assert failed is not None


# --------------------------------------------------------------------------- point 4, rules


def test_a_committee_remark_is_accepted_from_the_configured_multisig_only() -> None:
    msg = committee_message()
    remark = REMARK_PREFIX + msg.encode()
    digest = blake2_256(remark)
    # Carried by an attester's as_multi: the event's sender is the multisig, not the signer.
    accepted = validate_remark(remark, ATTESTER, MULTISIG, digest, ASSETHUB, committee=MULTISIG)
    assert accepted == dataclasses.replace(msg, nonce=0)
    with pytest.raises(EventSenderMismatch):  # no committee configured: as before
        validate_remark(remark, ATTESTER, MULTISIG, digest, ASSETHUB)
    other = multisig_account([b"\x07" * 32, b"\x08" * 32], 1)  # anyone's own multisig
    with pytest.raises(EventSenderMismatch):
        validate_remark(remark, ATTESTER, other, digest, ASSETHUB, committee=MULTISIG)
    # The message must name the multisig as its sender.
    forged = REMARK_PREFIX + committee_message(sender=ATTESTER).encode()
    with pytest.raises(MessageSenderMismatch):
        validate_remark(
            forged, ATTESTER, MULTISIG, blake2_256(forged), ASSETHUB, committee=MULTISIG
        )


def test_a_committee_refund_needs_no_escrow_and_nothing_else_passes() -> None:
    check_escrow(committee_message(), [], ROUTES, set())
    refused = [
        committee_message(body=token_body(action=2, to=bytes(12) + b"\x01" * 20)),  # an UNLOCK
        committee_message(body=token_body(action=1)),
        committee_message(body=refund_body(amount=0)),
        committee_message(body=refund_body()[:127]),
        committee_message(body=b"hello"),
        committee_message(destination=BETA, recipient=BRIDGES[BETA]),  # no home there
        committee_message(recipient=b"\x01" * 32),  # not a bridge
        committee_message(destination=GAMMA),
    ]
    for msg in refused:
        with pytest.raises(CommitteeRemarkRejected):
            check_escrow(msg, [], ROUTES, set())


@given(body=st.binary(min_size=128, max_size=128), to_bridge=st.booleans())
def test_the_committee_rule_accepts_exactly_refunds_to_the_home_bridge(
    body: bytes, to_bridge: bool
) -> None:
    recipient = BRIDGES[ALPHA] if to_bridge else BRIDGES[BETA]
    destination = ALPHA if to_bridge else BETA
    msg = committee_message(body=body, recipient=recipient, destination=destination)
    action, amount = int.from_bytes(body[:32], "big"), int.from_bytes(body[64:96], "big")
    should = to_bridge and action == REFUND and amount > 0
    try:
        check_escrow(msg, [], ROUTES, set())
    except CommitteeRemarkRejected:
        assert not should
    else:
        assert should


def test_a_transfer_that_cannot_be_minted_is_refunded_never_remarked() -> None:
    mint = message(body=token_body(amount=777, to=BENEFICIARY))
    refund = Refund(ASSETHUB, REFUND_CANNOT_HOLD)
    calls = delivery_calls(mint, SETTINGS, BRIDGES, refund=refund)
    answer = refund_message(mint, SETTINGS, refund)
    assert calls == [
        RuntimeCall(
            "Uniques", "mint", {"class": 11, "instance": 7, "owner": "0x" + MULTISIG.hex()}
        ),
        RuntimeCall("Uniques", "freeze", {"class": 11, "instance": 7}),
        RuntimeCall("System", "remark_with_event", {"remark": REMARK_PREFIX + answer.encode()}),
    ]
    assert (answer.origin, answer.sender, answer.destination, answer.recipient) == (
        ASSETHUB,
        MULTISIG,
        ALPHA,
        BRIDGES[ALPHA],
    )
    assert answer.body == refund_body(keccak256(mint.encode()), 777, REFUND_CANNOT_HOLD)
    # The two sides agree: the refund remark passes the origin rules it will be scanned by.
    remark = calls[2].params["remark"]
    accepted = validate_remark(
        remark, ATTESTER, MULTISIG, blake2_256(remark), ASSETHUB, committee=MULTISIG
    )
    check_escrow(accepted, [], ROUTES, set())
    # Above u128 (as an old TokenBridge could send): no remark, only a refund.
    huge = message(body=token_body(amount=U128_MAX + 1))
    with pytest.raises(NotDeliverable):
        delivery_calls(huge, SETTINGS, BRIDGES)
    refunded = delivery_calls(huge, SETTINGS, BRIDGES, refund=Refund(ASSETHUB, REFUND_NOT_WRAPPED))
    assert [c.function for c in refunded] == ["mint", "freeze", "remark_with_event"]


# --------------------------------------------------------------------------- point 10


def test_messages_from_asset_hub_may_address_only_allowed_recipients(tmp_path: Path) -> None:
    config = load(tmp_path, config_toml())
    routes = escrow_routes(config, config.chain("assethub"))
    # gamma has no TokenBridge in this config: a bridge there is unknown, so unchecked by the
    # escrow rule — and therefore not addressable at all.
    unknown_bridge = bytes(12) + b"\xc3" * 20
    to_gamma = message(origin=ASSETHUB, sender=b"\x01" * 32, destination=GAMMA)
    to_gamma = dataclasses.replace(to_gamma, recipient=unknown_bridge, body=token_body(action=2))
    check_escrow(to_gamma, [], routes, set())  # the escrow rule alone lets it through
    with pytest.raises(RecipientNotAllowed):
        check_recipient(to_gamma, routes.allowed)
    # alpha's TokenBridge is addressable (and then escrow-checked); a domain that is not a
    # destination at all allows nothing.
    check_recipient(
        dataclasses.replace(to_gamma, destination=ALPHA, recipient=BRIDGES[ALPHA]), routes.allowed
    )
    with pytest.raises(RecipientNotAllowed):
        check_recipient(dataclasses.replace(to_gamma, destination=99), routes.allowed)


def test_scan_remarks_needs_the_allowed_recipients() -> None:
    chain = cast(ChainConfig, SimpleNamespace(settings=lambda: SETTINGS, finality=None))
    with pytest.raises(TypeError, match="allowed recipients"):
        trio.run(
            lambda: scan_remarks(cast(SubstrateClient, None), chain, list(ROUTES), range(0), 0)
        )


# --------------------------------------------------------------------------- bounded retries


def test_a_message_the_committee_never_executes_fails_for_good_after_bounded_attempts(
    tmp_path: Path,
) -> None:
    raw = message().encode()
    with open_ledger(tmp_path / "ledger.db") as ledger:
        ledger.record_discovered([DiscoveredMessage(raw, 1, b"\x01" * 32, b"\x02" * 32, 0)])
        ids = ["0x" + keccak256(raw).hex()]
        ledger.transition(ids, MessageStatus.FINAL)
        checkpoint = ledger.save_checkpoint(
            ALPHA, b"\x11" * 32, b"\x33" * 32, 7, block_number=1, block_hash=b"\x01" * 32
        )
        ledger.transition(ids, MessageStatus.ATTESTED, checkpoint_id=checkpoint)
        relayer = SimpleNamespace(ledger=ledger, confirm_timeout=120.0)
        delivery = SubstrateDelivery(cast(ChainConfig, None), cast(Relayer, relayer))
        for attempt in range(1, MAX_DELIVERY_ATTEMPTS + 1):
            delivery._fail_undelivered(ids)
            record = ledger.get(ids[0])
            assert record is not None and record.status == MessageStatus.FAILED
            if attempt < MAX_DELIVERY_ATTEMPTS:
                assert record.next_attempt_at is not None  # retried after a backoff
                ledger.transition(ids, MessageStatus.ATTESTED)  # what the requeue does
            else:
                assert record.next_attempt_at is None  # no retry scheduled any more
                assert record.reason is not None and "gave up" in record.reason


# --------------------------------------------------------------------------- point 7


def test_an_attester_approves_only_a_checkpoint_a_quorum_signed(tmp_path: Path) -> None:
    config = load(tmp_path, config_toml())
    store = CheckpointStore(config.checkpoint_store)
    cp = Checkpoint(origin=ALPHA, outbox=bytes(12) + b"\x11" * 20, root=b"\x33" * 32, index=4)
    other = dataclasses.replace(cp, index=5)
    mine, second = LocalSigner(KEYS[0]), LocalSigner(KEYS[1])
    store.publish(SignedCheckpoint.create(mine, cp, block_number=1, block_hash=b"\x01" * 32))
    # The others signed another index: a relayer pinning a proposal to ours gets nothing.
    store.publish(SignedCheckpoint.create(second, other, block_number=1, block_hash=b"\x01" * 32))
    assert not _quorum_signed(config, store, cp)
    proposal = new_proposal(ASSETHUB, cp, [message().encode()], [[bytes(32)] * 32])
    chain = config.chain("assethub")
    batch = trio.run(
        lambda: _verified_batch(
            config,
            chain,
            cast(SubstrateClient, None),  # never reached: refused before any chain I/O
            proposal,
            store=store,
            member=mine.address,
            bridges=BRIDGES,
        )
    )
    assert batch is None
    store.publish(SignedCheckpoint.create(second, cp, block_number=1, block_hash=b"\x01" * 32))
    assert _quorum_signed(config, store, cp)


def test_delivery_duty_memory_is_bounded() -> None:
    duty = DeliveryDuty()
    for i in range(5000):
        duty.opened(i.to_bytes(32, "big"))
        duty.seen(i.to_bytes(32, "big"), None, float(i))
    assert len(duty.opens) <= 4097 and len(duty.first_seen) <= 4097


def test_many_proposals_do_not_reset_the_clock_of_an_operation_we_hold() -> None:
    """Forgetting when we first saw a proposal only delays a role; forgetting when we first
    saw an operation we hold open would keep it from ever growing stale (never cancelled,
    its deposit locked) — a relayer needs only a few thousand proposals to do that."""
    held = b"\x01" * 32
    timepoint = Timepoint(7, 1)
    duty = DeliveryDuty()
    duty.held[held] = OpenOperation(timepoint, frozenset({b"\x02" * 32}), b"\x02" * 32)
    assert duty.seen(held, timepoint, 0.0) == 0.0
    for i in range(5000):
        duty.seen(i.to_bytes(32, "big"), None, 1.0)
    assert duty.seen(held, timepoint, STALE_OPERATION) == 0.0  # stale now: it gets cancelled
    assert len(duty.first_seen) <= 4097


COMMITTEE_SEEDS = [keccak256(b"hardening committee %d" % i) for i in range(3)]
COMMITTEE = [keypair_from_seed(seed) for seed in COMMITTEE_SEEDS]
SIGNATORIES = tuple(sorted(bytes(k.public_key) for k in COMMITTEE))
COMMITTEE_MULTISIG = multisig_account(SIGNATORIES, 2)
HUB_SETTINGS = dataclasses.replace(
    SETTINGS,
    multisig=COMMITTEE_MULTISIG,
    signatories=SIGNATORIES,
    collections={ALPHA: collection_id(ALPHA)},
    asset_id=ASSET_ID,
)
HUB = cast(ChainConfig, SimpleNamespace(name="hub", domain=ASSETHUB, settings=lambda: HUB_SETTINGS))


@pytest.fixture(scope="module")
def chopsticks() -> Iterator[ChopsticksProcess]:
    """Asset Hub with a committee of three (2 of 3) that owns collection ALPHA and asset 1."""
    accounts = [
        *SIGNATORIES,
        COMMITTEE_MULTISIG,
        bytes(Keypair.create_from_uri("//Alice").public_key),
    ]
    for process in running_chopsticks({"0x" + a.hex(): 10**18 for a in accounts}):
        setup_asset_hub(
            process.ws_url, committee_seeds=COMMITTEE_SEEDS, threshold=2, evm_origins=[ALPHA]
        )
        yield process


@pytest.fixture(scope="module")
def substrate(chopsticks: ChopsticksProcess) -> Iterator[SubstrateInterface]:
    """One substrate-interface connection to the module's chopsticks, for the tests that build
    raw extrinsics or storage values with it (its metadata decode shared with the adapter's
    clients: adapters/substrate/metadata.py). Shared safely: what they use it for reads the
    chain afresh each time (account nonces, storage keys) and keeps no state of a test's."""
    connection = SharedMetadataInterface(url=chopsticks.ws_url)
    try:
        yield connection
    finally:
        connection.close()


def test_the_committees_refund_remark_is_read_back_as_a_message(
    chopsticks: ChopsticksProcess,
) -> None:
    """The refund batch runs on chain as the multisig (inside an as_multi, whose call is an
    OpaqueCall on this runtime), and the origin side finds its remark and accepts it."""
    mint = message(
        nonce=31, recipient=COMMITTEE_MULTISIG, body=token_body(amount=777, to=b"\x42" * 32)
    )
    refund = Refund(ASSETHUB, REFUND_CANNOT_HOLD)
    opener, executor = COMMITTEE[0], COMMITTEE[1]

    async def scenario() -> None:
        async with SubstrateClient(chopsticks.ws_url) as client:
            assert await refund_reason(client, HUB_SETTINGS, mint, BRIDGES) == REFUND_CANNOT_HOLD
            calls = [
                await client.compose(c.module, c.function, c.params)
                for c in delivery_calls(mint, HUB_SETTINGS, BRIDGES, refund=refund)
            ]
            batch = await client.compose("Utility", "batch_all", {"calls": calls})
            others = lambda me: [s for s in SIGNATORIES if s != bytes(me.public_key)]  # noqa: E731
            timepoint = await approve(client, opener, others(opener), 2, batch)
            included = await execute(
                client, executor, others(executor), 2, batch, timepoint=timepoint
            )
            assert executed_ok(included) == (True, None)
            [seen] = await client.remarks(included.block_hash)
            assert seen.event_sender == COMMITTEE_MULTISIG
            assert seen.signer == bytes(executor.public_key)
            found = seen.validate(ASSETHUB, committee=COMMITTEE_MULTISIG)
            assert found == dataclasses.replace(refund_message(mint, HUB_SETTINGS, refund), nonce=0)
            routes = [dataclasses.replace(r, escrow=COMMITTEE_MULTISIG) for r in ROUTES]
            check_escrow(found, [], routes, set())
            assert await guard_items(client, HUB_SETTINGS, [mint]) == [GUARD_REFUNDED]
            # Not without the committee configured: a multisig's remark is no one's message.
            with pytest.raises(EventSenderMismatch):
                seen.validate(ASSETHUB)

    trio.run(scenario)


def test_stale_operations_are_cancelled_and_open_ones_capped(chopsticks: ChopsticksProcess) -> None:
    alice = COMMITTEE[0]
    signatories, multisig, chain = SIGNATORIES, COMMITTEE_MULTISIG, HUB
    me = bytes(alice.public_key)
    others = [s for s in signatories if s != me]
    state = AttesterState()

    async def scenario() -> None:
        async with SubstrateClient(chopsticks.ws_url) as client:
            reserved = await _reserved(client, me)
            call = await client.compose("System", "remark_with_event", {"remark": b"stale op"})
            await approve(client, alice, others, 2, call)
            assert await _reserved(client, me) > reserved  # the deposit is ours
            duty = DeliveryDuty()
            await _tend_held(client, chain, alice, duty, state=state, now=1000.0)
            assert set(duty.held) == {call.hash}  # found on chain, not in memory
            await _tend_held(
                client, chain, alice, duty, state=state, now=1000.0 + STALE_OPERATION - 1
            )
            assert await open_operation(client, multisig, call.hash) is not None
            await _tend_held(client, chain, alice, duty, state=state, now=1000.0 + STALE_OPERATION)
            assert await open_operation(client, multisig, call.hash) is None
            assert duty.held == {} and state.cancellations == 1
            assert await _reserved(client, me) == reserved

            # At the cap, nothing more is opened (our turn or not), however many proposals.
            proposal = new_proposal(
                ASSETHUB,
                Checkpoint(
                    origin=ALPHA, outbox=bytes(12) + b"\x11" * 20, root=b"\x33" * 32, index=0
                ),
                [message(nonce=424242).encode()],
                [[bytes(32)] * 32],
            )
            batch = await client.compose("System", "remark_with_event", {"remark": b"capped"})
            full = DeliveryDuty()
            fake = OpenOperation(Timepoint(1, 1), frozenset({me}), me)
            full.held = {i.to_bytes(32, "big"): fake for i in range(MAX_OPEN_OPERATIONS)}
            full.first_seen[(batch.hash, None)] = 0.0  # long past every grace period
            assert not await _act_on(
                client, chain, alice, proposal, batch, state=state, duty=full, now=10_000.0
            )
            assert await open_operation(client, multisig, batch.hash) is None
            # Below the cap it opens; a call opened MAX_OPENS_PER_CALL times is not again.
            full.held = {}
            full.opens[batch.hash] = MAX_OPENS_PER_CALL
            assert await _act_on(
                client, chain, alice, proposal, batch, state=state, duty=full, now=10_000.0
            )
            assert await open_operation(client, multisig, batch.hash) is None
            full.opens.clear()
            assert not await _act_on(
                client, chain, alice, proposal, batch, state=state, duty=full, now=10_000.0
            )
            assert await open_operation(client, multisig, batch.hash) is not None
            assert full.opens[batch.hash] == 1 and batch.hash in full.held

    trio.run(scenario)


async def _reserved(client: SubstrateClient, who: bytes) -> int:
    account = await client.query("System", "Account", ["0x" + who.hex()])
    return int(account["data"]["reserved"])


def _signed_with_raw_call(substrate: SubstrateInterface, keypair: Keypair, call: bytes) -> bytes:
    """An extrinsic of ``keypair`` carrying ``call`` exactly as given (substrate-interface
    cannot encode a call it cannot decode): signed for ``call``, then spliced into the
    extrinsic substrate-interface builds for a placeholder call with the same signature.
    ``call`` is never decoded here (signing needs its bytes only), so it may be garbage or
    nested deeper than this process could decode."""
    placeholder = substrate.compose_call("System", "remark", {"remark": b""})
    carried = substrate.runtime_config.create_scale_object(
        "Call", data=ScaleBytes(call), metadata=substrate.metadata
    )
    nonce = substrate.get_account_nonce(keypair.ss58_address)
    payload = substrate.generate_signature_payload(call=carried, era="00", nonce=nonce)
    extrinsic = substrate.create_signed_extrinsic(
        call=placeholder, keypair=keypair, era="00", nonce=nonce, signature=keypair.sign(payload)
    )
    encoded = bytes(extrinsic.data.data)
    reader = ScaleReader(encoded)
    reader.compact_u32()
    body = encoded[reader.offset :]
    stub = bytes(placeholder.data.data)
    assert body.endswith(stub)
    body = body[: -len(stub)] + call
    return encode_compact(len(body)) + body


async def _landed(
    client: SubstrateClient, substrate: SubstrateInterface, extrinsic: bytes
) -> bytes:
    """Submit a raw ``extrinsic`` to this module's chopsticks (one block per extrinsic) and
    wait for the block it lands in; that block's hash."""
    before = (await client.finalized_head()).number
    answer = substrate.rpc_request("author_submitExtrinsic", ["0x" + extrinsic.hex()])
    assert isinstance(answer["result"], str)
    with trio.fail_after(30):
        while (head := await client.finalized_head()).number == before:
            await trio.sleep(0.2)
    return head.hash


def test_an_as_multi_whose_opaque_call_is_garbage_does_not_stall_the_scan(
    chopsticks: ChopsticksProcess, substrate: SubstrateInterface
) -> None:
    """An ``OpaqueCall`` is bytes the runtime keeps undecoded until the operation executes, so
    anyone can put garbage on chain in one (one cheap extrinsic: the first approval of a
    multisig of their own). Batched after a remark of their own, the extrinsic is read by the
    scan; its as_multi must be skipped — not stop ``remarks`` of that block, and with it every
    attester's and the relayer's scan of this origin, for ever."""
    alice = Keypair.create_from_uri("//Alice")
    bob = "0x" + bytes(Keypair.create_from_uri("//Bob").public_key).hex()

    async def scenario() -> None:
        async with SubstrateClient(chopsticks.ws_url) as client:
            # With the prefix, or the scan would not decode the extrinsic at all (it holds no
            # PSRL otherwise: SubstrateClient.remarks' prefilter) and never meet the garbage.
            mine = REMARK_PREFIX + b" mine"
            remark = await client.compose("System", "remark_with_event", {"remark": mine})
            # A remark_with_event whose length prefix promises more bytes than follow.
            garbage = remark.data[:2] + encode_compact(100) + b"abc"
            honest = substrate.compose_call(
                "Multisig",
                "as_multi",
                {
                    "threshold": 2,
                    "other_signatories": [bob],
                    "maybe_timepoint": None,
                    "call": remark.generic,
                    "store_call": False,
                    "max_weight": client.weight_arg(0),
                },
            )
            opaque = encode_compact(len(remark.data)) + remark.data
            as_multi = bytes(honest.data.data).replace(
                opaque, encode_compact(len(garbage)) + garbage
            )
            batch = await client.compose("Utility", "batch", {"calls": [remark]})
            call = batch.data[:2] + encode_compact(2) + remark.data + as_multi
            landed = await _landed(client, substrate, _signed_with_raw_call(substrate, alice, call))
            events = await client.events(landed)
            assert ("Utility", "BatchCompleted") in {(e.pallet, e.name) for e in events}
            [seen] = await client.remarks(landed)
            assert seen.remark == mine and seen.signer == bytes(alice.public_key)

    trio.run(scenario)


DEEPEST_EXECUTED: int = 225
"""The deepest ``Utility.batch`` nesting chopsticks' executor runs on this runtime (measured):
from 226 on it traps while building the block ("out of bounds memory access") and drops the
extrinsic, though its pool takes up to :data:`RUNTIME_MAX_CALL_DEPTH` (256), as a real node's
executor may."""


def test_the_deepest_nesting_the_runtime_takes_does_not_stall_the_scan(
    chopsticks: ChopsticksProcess, substrate: SubstrateInterface
) -> None:
    """Anyone can put a ``Utility.batch`` nested as deep as the runtime takes on chain for a
    fee, with ``PSRL`` inside so the scan decodes it. scalecodec decodes it recursively, and
    under Python's default recursion limit every attempt raised ``RecursionError``: the
    block's ``remarks()`` failed for ever, and with it the relayer's and every attester's scan
    of this origin. Now it decodes (in every process alike: the limit covers the runtime's own
    bound), and reports nothing: the remark lies deeper than ``MAX_CALL_DEPTH``, so it is no
    message."""
    alice = Keypair.create_from_uri("//Alice")
    deep = REMARK_PREFIX + b" under 225 batches"

    async def scenario() -> None:
        async with SubstrateClient(chopsticks.ws_url) as client:
            remark = await client.compose("System", "remark_with_event", {"remark": deep})
            batch = (await client.compose("Utility", "batch", {"calls": []})).data[:2]

            def nested(depth: int) -> bytes:
                call = remark.data
                for _ in range(depth):
                    call = batch + encode_compact(1) + call
                return call

            # The runtime's bound, checked: one level deeper is refused by the pool (its
            # decode fails inside validate_transaction, a wasm trap).
            too_deep = _signed_with_raw_call(substrate, alice, nested(RUNTIME_MAX_CALL_DEPTH + 1))
            with pytest.raises(SubstrateRequestException, match="unreachable"):
                substrate.rpc_request("author_submitExtrinsic", ["0x" + too_deep.hex()])
            extrinsic = _signed_with_raw_call(substrate, alice, nested(DEEPEST_EXECUTED))
            landed = await _landed(client, substrate, extrinsic)
            names = [(e.pallet, e.name) for e in await client.events(landed)]
            assert names.count(("Utility", "BatchCompleted")) == DEEPEST_EXECUTED
            assert names.count(("System", "Remarked")) == 1  # executed, prefix and all
            assert await client.remarks(landed) == []  # was: RecursionError, every time

            # The deepest call the pool takes (a real node may include it) decodes as well,
            # in the worker thread where every scan runs; its remark is found down to
            # MAX_CALL_DEPTH batches, not below.
            def remarks_under(depth: int) -> Callable[[Any], list[tuple[bytes, bool]]]:
                return lambda s: _remarks_in_call(s, _decode_call(s, nested(depth)))

            assert await client._run("deepest", remarks_under(RUNTIME_MAX_CALL_DEPTH)) == []
            assert await client._run("at the limit", remarks_under(MAX_CALL_DEPTH)) == [
                (deep, False)
            ]
            assert await client._run("past it", remarks_under(MAX_CALL_DEPTH + 1)) == []

    trio.run(scenario)


def test_errors_of_the_delivery_route_never_show_the_rpc_key(chopsticks: ChopsticksProcess) -> None:
    """An RPC URL may carry an API key (``?apikey=``): an error naming the node redacts it."""
    secret = "S3CRETKEY"
    mint = message(recipient=COMMITTEE_MULTISIG, body=token_body(amount=5))
    unknown_asset = dataclasses.replace(HUB_SETTINGS, asset_id=987654)

    async def scenario() -> None:
        async with SubstrateClient(f"{chopsticks.ws_url}/?apikey={secret}") as client:
            with pytest.raises(AdapterError) as asset:
                await refund_reason(client, unknown_asset, mint, BRIDGES)
            me = COMMITTEE[2]
            others = [s for s in SIGNATORIES if s != bytes(me.public_key)]
            with pytest.raises(AdapterError, match="cancel_as_multi") as cancelled:
                await cancel(client, me, others, 2, b"\x01" * 32, timepoint=Timepoint(1, 1))
        for error in (asset.value, cancelled.value):
            assert "?***" in str(error) and secret not in str(error)

    trio.run(scenario)


def test_proposals_someone_else_wrote_never_fail_a_message(
    chopsticks: ChopsticksProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Anyone who can write the checkpoint store can write proposals, ``created`` included.
    One that claims to have timed out long ago must not count as a failed attempt of its
    messages (MAX_DELIVERY_ATTEMPTS of them would fail a message for good in seconds), nor
    keep the relayer from proposing them itself."""
    raw = message(nonce=909).encode()
    ids = ["0x" + keccak256(raw).hex()]
    config = load(tmp_path, config_toml())
    proposed: list[list[str]] = []

    async def propose(_chain: Any, _lane: Any, group: Any) -> None:
        proposed.append([record.id for record in group])

    with open_ledger(tmp_path / "ledger.db") as ledger:
        attested_in_ledger(ledger, raw, checkpoint_index=909)
        relayer = Relayer(config, ledger)
        relayer.lanes = cast(Any, {ALPHA: None})
        delivery = SubstrateDelivery(HUB, relayer)
        monkeypatch.setattr(delivery, "_propose", propose)
        ours, theirs = (
            DirectoryProposalStore(tmp_path / "store"),
            DirectoryProposalStore(tmp_path / "store"),
        )
        forged = dataclasses.replace(
            new_proposal(
                ASSETHUB,
                Checkpoint(
                    origin=ALPHA, outbox=bytes(12) + b"\x11" * 20, root=b"\x33" * 32, index=909
                ),
                [raw],
                [[bytes(32)] * 32],
            ),
            created=0.0,  # "timed out" decades ago
        )

        async def scenario() -> None:
            async with SubstrateClient(chopsticks.ws_url) as client:
                for _ in range(MAX_DELIVERY_ATTEMPTS + 1):
                    theirs.publish(forged)
                    await delivery._deliver_substrate_once(HUB, client, ours)

        trio.run(scenario)
        record = ledger.get(ids[0])
        assert record is not None and record.status == MessageStatus.ATTESTED
        assert not [e for e in ledger.history(ids[0]) if e.to_status == MessageStatus.FAILED]
        assert proposed == [ids] * (MAX_DELIVERY_ATTEMPTS + 1)  # not held back by the file
        assert [p for p, _ in ours.pending(ASSETHUB)] == [ProposalKey(ASSETHUB, forged.name)]


def test_a_proposal_with_a_message_twice_is_refused(tmp_path: Path) -> None:
    """Anyone may write proposals. A message twice (or messages out of order) passes every
    inclusion proof, but the batch is sure to fail on chain (its guard item minted twice), and
    each repetition is a new call hash: operations without end at the committee's expense."""
    config = load(tmp_path, config_toml())
    chain = config.chain("assethub")
    first, second = message(nonce=0).encode(), message(nonce=1).encode()
    tree = IncrementalMerkleTree()
    for raw in (first, second):
        tree.append(keccak256(raw))
    cp = Checkpoint(origin=ALPHA, outbox=config.chain(ALPHA).outbox_id, root=tree.root(), index=1)
    branch = {first: tree.proof(0, 2), second: tree.proof(1, 2)}

    def proposal(*messages: bytes) -> Any:
        return new_proposal(ASSETHUB, cp, messages, [branch[m] for m in messages])

    _verify_proposal(config, chain, proposal(first, second))  # the relayer's order
    for forged in ((first, first), (second, first), (first, second, second)):
        with pytest.raises(VerificationError, match="not strictly increasing"):
            _verify_proposal(config, chain, proposal(*forged))


def _set_account(
    substrate: SubstrateInterface, who: bytes, *, providers: int, consumers: int
) -> None:
    """Chopsticks' ``dev_setStorage`` of ``System.Account``: an account holding native balance
    whose consumer references (assets held, locks, …) are ``consumers``."""
    function = substrate.get_metadata_storage_function("System", "Account")
    value = substrate.runtime_config.create_scale_object(
        function.get_value_type_string(), metadata=substrate.metadata
    )
    encoded = value.encode(
        {
            "nonce": 0,
            "consumers": consumers,
            "providers": providers,
            "sufficients": 0,
            "data": {"free": 10**15, "reserved": 0, "misc_frozen": 0, "fee_frozen": 0},
        }
    )
    key = substrate.create_storage_key("System", "Account", ["0x" + who.hex()])
    substrate.rpc_request("dev_setStorage", [[[key.to_hex(), str(encoded)]]])


def test_a_beneficiary_without_room_for_a_consumer_is_refunded(
    chopsticks: ChopsticksProcess, substrate: SubstrateInterface
) -> None:
    """An account with native balance but no room for another consumer reference (anyone can
    fill their own account with 16 assets) cannot hold the non-sufficient wrapped asset: the
    mint fails ``Token.CannotCreate`` on every try. The committee refunds it at once rather
    than retrying it until the relayer gives up with the tokens still locked."""
    full, roomy = b"\x44" * 32, b"\x45" * 32
    _set_account(substrate, full, providers=1, consumers=16)
    _set_account(substrate, roomy, providers=1, consumers=3)
    to_full = message(nonce=61, recipient=COMMITTEE_MULTISIG, body=token_body(amount=10, to=full))
    to_roomy = message(nonce=62, recipient=COMMITTEE_MULTISIG, body=token_body(amount=10, to=roomy))
    opener, executor = COMMITTEE[0], COMMITTEE[1]

    async def scenario() -> None:
        async with SubstrateClient(chopsticks.ws_url) as client:
            assert await refund_reason(client, HUB_SETTINGS, to_roomy, BRIDGES) is None
            assert (
                await refund_reason(client, HUB_SETTINGS, to_full, BRIDGES)
                == REFUND_NO_CONSUMER_ROOM
            )
            # What the chain says of the plain mint: it can never succeed.
            calls = [
                await client.compose(c.module, c.function, c.params)
                for c in delivery_calls(to_full, HUB_SETTINGS, BRIDGES)
            ]
            batch = await client.compose("Utility", "batch_all", {"calls": calls})
            others = lambda me: [s for s in SIGNATORIES if s != bytes(me.public_key)]  # noqa: E731
            timepoint = await approve(client, opener, others(opener), 2, batch)
            included = await execute(
                client, executor, others(executor), 2, batch, timepoint=timepoint
            )
            assert executed_ok(included) == (False, "Token.CannotCreate")

    trio.run(scenario)


class _StateOf:
    """A node answering ``query`` from a table: what a lying or broken node can decode."""

    url = "ws://127.0.0.1:9944"

    def __init__(self, state: dict[tuple[str, str], Any]) -> None:
        self.state = state

    async def query(self, module: str, item: str, params: Any = None) -> Any:
        return self.state.get((module, item))


@pytest.mark.parametrize(
    "asset, account",
    [
        ({"supply": "lots", "min_balance": 1, "is_sufficient": False}, None),
        ({"supply": 0, "min_balance": [1], "is_sufficient": False}, None),
        ({"supply": 0, "min_balance": 1, "is_sufficient": False}, {"providers": -1}),
        ({"supply": 0, "min_balance": 1, "is_sufficient": False}, {"consumers": True}),
    ],
)
def test_refund_reason_on_garbled_chain_state_is_an_adapter_error(
    asset: dict[str, Any], account: dict[str, Any] | None
) -> None:
    """The refund decision reads Asset Hub state: a malformed answer is one AdapterError (the
    attester logs it and asks again), never a ValueError or TypeError ending its task."""
    mint = message(
        nonce=71, recipient=COMMITTEE_MULTISIG, body=token_body(amount=10, to=b"\x46" * 32)
    )
    node = _StateOf(
        {("Assets", "Asset"): asset, ("System", "Account"): account or {"providers": 1}}
    )

    async def decide() -> Any:
        return await refund_reason(cast(SubstrateClient, node), HUB_SETTINGS, mint, BRIDGES)

    with pytest.raises(AdapterError, match="not a count"):
        trio.run(decide)


def test_free_holding_guards_lock_no_deposit_and_still_refuse_a_replay(
    chopsticks: ChopsticksProcess,
) -> None:
    """HUBPROF, session 8: the devnet's guard collections are free holding, so a delivery locks
    none of the multisig's balance (an EVM sender cannot drain it message by message) and its
    block carries no ``Balances.Reserved``; the guard itself is unchanged — a replay of the
    same message fails whole, refused by the guard (``Uniques.AlreadyExists``). Setting it up
    again writes nothing (the raw ``Uniques.Class`` bytes and the head are the same), and the
    devnet refuses to rewrite a collection that does not exist.

    The deposit-paying configuration a real chain has without a governance grant still runs
    here once (FPROF): collection BETA is set up without free holding, and a delivery into it
    reserves the item deposit of the multisig's balance, exactly what the item records."""

    delivered = message(nonce=8101, sender=b"\x77" * 32, body=b"free holding")
    paying = message(nonce=8102, origin=BETA, sender=b"\x77" * 32, body=b"deposit paid")
    settings = dataclasses.replace(
        HUB_SETTINGS, collections={ALPHA: collection_id(ALPHA), BETA: collection_id(BETA)}
    )
    opener, executor = COMMITTEE[0], COMMITTEE[1]
    multisig = "0x" + COMMITTEE_MULTISIG.hex()
    alpha_class = "0x" + class_key(ALPHA).hex()

    def others(me: Keypair) -> list[bytes]:
        return [s for s in SIGNATORIES if s != bytes(me.public_key)]

    async def deliver(client: SubstrateClient, delivering: Message) -> Any:
        batch = await compose_batch(client, delivery_calls(delivering, settings, BRIDGES))
        timepoint = await approve(client, opener, others(opener), 2, batch)
        return await execute(client, executor, others(executor), 2, batch, timepoint=timepoint)

    async def reserved(client: SubstrateClient) -> int:
        return int((await client.query("System", "Account", [multisig]))["data"]["reserved"])

    def alpha_and_head() -> tuple[Any, Any]:
        head = rpc(chopsticks, "chain_getHead")["result"]
        return rpc(chopsticks, "state_getStorage", [alpha_class, head])["result"], head

    # BETA as a real chain has it: created by the multisig, no free holding granted.
    setup_asset_hub(
        chopsticks.ws_url,
        committee_seeds=COMMITTEE_SEEDS,
        threshold=2,
        evm_origins=[ALPHA, BETA],
        free_holding=False,
    )

    async def scenario() -> None:
        async with SubstrateClient(chopsticks.ws_url) as client:
            assert (await client.query("Uniques", "Class", [ALPHA]))["free_holding"] is True
            assert (await client.query("Uniques", "Class", [BETA]))["free_holding"] is False
            before = await reserved(client)
            first = await deliver(client, delivered)
            assert executed_ok(first) == (True, None)
            assert first.named("Uniques", "Issued") and not first.named("Balances", "Reserved")
            item = await client.query("Uniques", "Asset", [ALPHA, delivered.nonce])
            assert item["deposit"] == 0
            assert await reserved(client) == before
            replay = await deliver(client, delivered)
            assert executed_ok(replay) == (False, "Uniques.AlreadyExists")
            assert replay.named("System", "Remarked") == []
            assert await guard_items(client, settings, [delivered]) == [GUARD_DELIVERED]

            paid = await deliver(client, paying)
            assert executed_ok(paid) == (True, None)
            assert paid.named("Uniques", "Issued") and paid.named("Balances", "Reserved")
            deposit = (await client.query("Uniques", "Asset", [BETA, paying.nonce]))["deposit"]
            assert deposit > 0 and await reserved(client) == before + deposit
            assert await guard_items(client, settings, [paying]) == [GUARD_DELIVERED]
            # The nonce the client now reads from storage (FPROF) is this runtime's: the raw
            # u32 it decodes is the nonce substrate-interface decodes with the metadata.
            account = await client.query("System", "Account", ["0x" + opener.public_key.hex()])
            assert await client.on_chain_nonce(bytes(opener.public_key)) == account["nonce"] > 0
            # Not a collection that does not exist (one held by anyone else: the unit tests of
            # free_holding_details in tests/test_hub_block_cost.py).
            with pytest.raises(SubstrateSetupError, match="does not exist"):
                await grant_free_holding(client, [8_103], COMMITTEE_MULTISIG)

    trio.run(scenario)
    class_before, head_before = alpha_and_head()
    again = setup_asset_hub(
        chopsticks.ws_url, committee_seeds=COMMITTEE_SEEDS, threshold=2, evm_origins=[ALPHA]
    )
    assert again["collections"] == {str(ALPHA): collection_id(ALPHA)}
    assert alpha_and_head() == (class_before, head_before)
