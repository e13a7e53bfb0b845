"""Governance of the contracts (issue #11): two-step ownership of Inbox, Outbox and
TokenBridge, and the Inbox's announced-then-delayed committee, origin and delay changes.

What someone holding (or having stolen) the owner key must not be able to do any more: move
an origin to a forged outbox or install a committee of its own *at once* — with a delay
configured, every such change is announced (an event with the time it takes effect) and can
only be enacted after that time, exactly as announced. What a typo must not do: hand a
contract to an address nobody controls (the new owner has to accept).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractCustomError

from devnet.anvil import AnvilProcess
from light_clients.committee import address_of
from light_clients.hashing import keccak256
from tests.test_contracts import (
    ATTACKER,
    COMMITTEE_KEYS,
    DEPLOYER,
    OTHER_USER,
    A,
    B,
    C,
    assert_rejected,
    checksum,
    deploy,
    events,
    make_bridge_pair,
    make_route,
    pad,
    send,
)

pytestmark = pytest.mark.chain

DELAY = 3_600
# keccak256(abi.encode(uint256(keccak256("passerelle.owned")) - 1)) & ~0xff (Owned.sol).
OWNED_SLOT = (
    int.from_bytes(
        keccak256((int.from_bytes(keccak256(b"passerelle.owned"), "big") - 1).to_bytes(32, "big")),
        "big",
    )
    & ~0xFF
)


def chain_of(anvil: AnvilProcess) -> Web3:
    w3 = Web3(Web3.HTTPProvider(anvil.rpc_url, request_kwargs={"timeout": 30}))
    assert w3.is_connected()
    return w3


def members(count: int = 3) -> list[str]:
    return sorted(
        (checksum(address_of(key)) for key in COMMITTEE_KEYS[:count]), key=lambda a: int(a, 16)
    )


def later(w3: Web3, seconds: int) -> None:
    """Move the chain's clock on by ``seconds`` and mine a block there."""
    w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
    w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]


def now(w3: Web3) -> int:
    return int(w3.eth.get_block("latest")["timestamp"])


def with_delay(w3: Web3) -> Contract:
    """A fresh Inbox whose owner configured a change delay of DELAY seconds."""
    inbox = deploy(w3, "Inbox", B, DEPLOYER)
    send(inbox.functions.setCommittee(members(), 2))  # delay 0: no announcement needed
    receipt = send(inbox.functions.announceChangeDelay(DELAY))
    (announced,) = events(inbox, "ChangeDelayAnnounced", receipt)
    assert announced["delay"] == DELAY
    assert announced["notBefore"] == now(w3)  # the current delay (0) applies to this change
    send(inbox.functions.setChangeDelay(DELAY))
    assert inbox.functions.changeDelay().call() == DELAY
    return inbox


def test_an_origin_change_is_enacted_only_as_announced_and_after_the_delay(
    fresh_anvil: AnvilProcess,
) -> None:
    w3 = chain_of(fresh_anvil)
    inbox = with_delay(w3)
    key = inbox.functions.originChangeKey(A).call()
    outbox, forged = pad(OTHER_USER), pad(ATTACKER)
    # Not announced: refused even for the owner.
    assert assert_rejected(inbox.functions.setOrigin(A, outbox), "ChangeNotAnnounced") == (key,)
    receipt = send(inbox.functions.announceOrigin(A, outbox))
    (announced,) = events(inbox, "OriginAnnounced", receipt)
    due = now(w3) + DELAY
    assert (announced["origin"], announced["outbox"], announced["notBefore"]) == (A, outbox, due)
    # Too early, by a full delay and by a second.
    assert assert_rejected(inbox.functions.setOrigin(A, outbox), "ChangeNotDue") == (key, due)
    later(w3, DELAY - 5)
    assert_rejected(inbox.functions.setOrigin(A, outbox), "ChangeNotDue", mine=False)
    # Other arguments than announced: not this change.
    later(w3, 10)
    assert_rejected(inbox.functions.setOrigin(A, forged), "ChangeNotAnnounced")
    assert inbox.functions.outboxOf(A).call() == bytes(32)
    receipt = send(inbox.functions.setOrigin(A, outbox))
    assert events(inbox, "OriginSet", receipt) == [{"origin": A, "outbox": outbox}]
    assert inbox.functions.outboxOf(A).call() == outbox
    # An announcement is used once.
    assert_rejected(inbox.functions.setOrigin(A, outbox), "ChangeNotAnnounced")


def test_a_new_announcement_replaces_the_pending_one(fresh_anvil: AnvilProcess) -> None:
    w3 = chain_of(fresh_anvil)
    inbox = with_delay(w3)
    first, second = pad(OTHER_USER), pad(ATTACKER)
    send(inbox.functions.announceOrigin(C, first))
    later(w3, DELAY // 2)
    send(inbox.functions.announceOrigin(C, second))  # restarts the clock, forgets `first`
    later(w3, DELAY // 2 + 1)
    assert_rejected(inbox.functions.setOrigin(C, first), "ChangeNotAnnounced")
    assert_rejected(inbox.functions.setOrigin(C, second), "ChangeNotDue")
    later(w3, DELAY)
    send(inbox.functions.setOrigin(C, second))
    # The committee: the same rule, and the announced shape is checked when announced.
    assert_rejected(inbox.functions.announceCommittee([], 1), "EmptyCommittee")
    assert_rejected(inbox.functions.announceCommittee(members()[::-1], 2), "ValidatorsNotAscending")
    send(inbox.functions.announceCommittee(members(), 3))
    send(inbox.functions.announceCommittee(members(2), 2))
    later(w3, DELAY)
    assert_rejected(inbox.functions.setCommittee(members(), 3), "ChangeNotAnnounced")
    receipt = send(inbox.functions.setCommittee(members(2), 2))
    (installed,) = events(inbox, "CommitteeSet", receipt)
    assert (installed["epoch"], installed["threshold"]) == (2, 2)
    assert inbox.functions.validators().call() == members(2)


def test_a_cancelled_change_and_a_shorter_delay_wait_out_the_current_delay(
    fresh_anvil: AnvilProcess,
) -> None:
    w3 = chain_of(fresh_anvil)
    inbox = with_delay(w3)
    send(inbox.functions.announceOrigin(A, pad(ATTACKER)))
    key = inbox.functions.originChangeKey(A).call()
    receipt = send(inbox.functions.cancelChange(key))
    assert events(inbox, "ChangeCancelled", receipt) == [{"key": key}]
    later(w3, DELAY + 1)
    assert_rejected(inbox.functions.setOrigin(A, pad(ATTACKER)), "ChangeNotAnnounced")
    # Dropping the delay to zero is itself a change under the current delay.
    send(inbox.functions.announceChangeDelay(0))
    assert_rejected(inbox.functions.setChangeDelay(0), "ChangeNotDue")
    limit = inbox.functions.MAX_CHANGE_DELAY().call()
    assert assert_rejected(inbox.functions.announceChangeDelay(limit + 1), "DelayTooLong") == (
        limit + 1,
        limit,
    )
    later(w3, DELAY)
    send(inbox.functions.setChangeDelay(0))
    send(inbox.functions.setOrigin(A, pad(OTHER_USER)))  # immediate again


def test_governance_is_owner_only(w3: Web3) -> None:
    inbox = deploy(w3, "Inbox", B, DEPLOYER)
    functions = inbox.functions
    attempts: list[Callable[[], Any]] = [
        lambda: functions.announceCommittee(members(), 2),
        lambda: functions.announceOrigin(A, pad(ATTACKER)),
        lambda: functions.announceChangeDelay(0),
        lambda: functions.setChangeDelay(0),
        lambda: functions.cancelChange(bytes(32)),
        lambda: functions.setCommittee(members(), 2),
        lambda: functions.setOrigin(A, pad(ATTACKER)),
    ]
    for attempt in attempts:
        assert assert_rejected(attempt(), "NotOwner", sender=ATTACKER, mine=False) == (ATTACKER,)


@pytest.fixture(scope="module")
def w3(anvil: AnvilProcess) -> Web3:
    return chain_of(anvil)


@pytest.mark.parametrize("name", ["Inbox", "Outbox", "TokenBridge"])
def test_ownership_moves_in_two_steps_to_the_pending_owner_only(w3: Web3, name: str) -> None:
    contract = owned(w3, name)
    functions = contract.functions
    assert functions.owner().call() == DEPLOYER
    assert assert_rejected(functions.transferOwnership(ATTACKER), "NotOwner", sender=ATTACKER) == (
        ATTACKER,
    )
    receipt = send(functions.transferOwnership(OTHER_USER))
    assert events(contract, "OwnershipTransferStarted", receipt) == [
        {"previousOwner": DEPLOYER, "newOwner": OTHER_USER}
    ]
    # Named, not yet owner: the old owner is still in charge; nobody else can accept.
    assert functions.owner().call() == DEPLOYER
    assert functions.pendingOwner().call() == OTHER_USER
    assert assert_rejected(functions.acceptOwnership(), "NotPendingOwner", sender=ATTACKER) == (
        ATTACKER,
    )
    assert_rejected(functions.acceptOwnership(), "NotPendingOwner", sender=DEPLOYER)
    receipt = send(functions.acceptOwnership(), sender=OTHER_USER)
    assert events(contract, "OwnershipTransferred", receipt) == [
        {"previousOwner": DEPLOYER, "newOwner": OTHER_USER}
    ]
    assert (functions.owner().call(), functions.pendingOwner().call()) == (
        OTHER_USER,
        "0x" + "00" * 20,
    )
    # The old owner lost it; naming zero cancels a transfer in progress.
    assert_rejected(functions.transferOwnership(DEPLOYER), "NotOwner", sender=DEPLOYER)
    send(functions.transferOwnership(ATTACKER), sender=OTHER_USER)
    send(functions.transferOwnership("0x" + "00" * 20), sender=OTHER_USER)
    assert_rejected(functions.acceptOwnership(), "NotPendingOwner", sender=ATTACKER)
    # The owner lives in its namespaced slot, never in the slots a contract lays out itself
    # (the Outbox's 0..32 are the accumulator attesters prove).
    stored = w3.eth.get_storage_at(contract.address, OWNED_SLOT)
    assert stored[-20:] == bytes.fromhex(OTHER_USER[2:])


def owned(w3: Web3, name: str) -> Contract:
    if name == "TokenBridge":
        home, _ = make_bridge_pair(w3)
        return home.bridge
    return deploy(w3, name, *((A,) if name == "Outbox" else (B, DEPLOYER)))


def test_a_zero_owner_is_refused_at_deployment(w3: Web3) -> None:
    zero_owner = "0x" + keccak256(b"ZeroOwner()")[:4].hex()
    with pytest.raises(ContractCustomError, match=zero_owner):
        deploy(w3, "Inbox", B, "0x" + "00" * 20)


# ------------------------------------------------------------------ hostile review, finding 1

MONTH = 30 * 24 * 3_600
GRACE = 7 * 24 * 3_600
ZERO = b"\0" * 32


def test_a_sleeper_announced_under_a_short_delay_is_void_once_the_delay_is_raised(
    fresh_anvil: AnvilProcess,
) -> None:
    """The review's scenario: a hostile outbox announced while the delay was 0 (the deployment
    window), then the delay raised to 30 days. Users now expect 30 days of notice; the sleeper
    must not be enactable at once — not now, not a year later."""
    w3 = chain_of(fresh_anvil)
    inbox = deploy(w3, "Inbox", B, DEPLOYER)
    send(inbox.functions.setCommittee(members(), 2))
    send(inbox.functions.setOrigin(A, pad(OTHER_USER)))  # the honest outbox
    send(inbox.functions.announceOrigin(A, pad(ATTACKER)))  # the sleeper, due at once
    key = inbox.functions.originChangeKey(A).call()
    assert inbox.functions.pendingChange(key).call()[0] == pad(ATTACKER)
    send(inbox.functions.announceChangeDelay(MONTH))
    receipt = send(inbox.functions.setChangeDelay(MONTH))
    assert assert_rejected(inbox.functions.setOrigin(A, pad(ATTACKER)), "ChangeNotAnnounced") == (
        key,
    )
    assert events(inbox, "PendingChangesVoided", receipt) == [{"generation": 1}]
    assert inbox.functions.pendingChange(key).call() == [ZERO, 0, 0]
    later(w3, 365 * 24 * 3_600)
    assert_rejected(inbox.functions.setOrigin(A, pad(ATTACKER)), "ChangeNotAnnounced")
    assert inbox.functions.outboxOf(A).call() == pad(OTHER_USER)
    # Announced afresh, it waits the full month like any other change.
    send(inbox.functions.announceOrigin(A, pad(ATTACKER)))
    due = now(w3) + MONTH
    assert assert_rejected(inbox.functions.setOrigin(A, pad(ATTACKER)), "ChangeNotDue") == (
        key,
        due,
    )


def test_an_announcement_expires_a_grace_period_after_it_became_due(
    fresh_anvil: AnvilProcess,
) -> None:
    """Enactable from notBefore to notBefore + CHANGE_GRACE (7 days), both ends included;
    after that it is gone and must be announced (and waited for) again."""
    w3 = chain_of(fresh_anvil)
    inbox = with_delay(w3)
    key = inbox.functions.originChangeKey(A).call()
    send(inbox.functions.announceOrigin(A, pad(OTHER_USER)))
    due = now(w3) + DELAY
    later(w3, DELAY + GRACE + 1)
    assert assert_rejected(
        inbox.functions.setOrigin(A, pad(OTHER_USER)), "ChangeExpired", mine=False
    ) == (key, due + GRACE)
    assert inbox.functions.CHANGE_GRACE().call() == GRACE
    assert inbox.functions.pendingChange(key).call() == [pad(OTHER_USER), due, due + GRACE]
    # Within the window (its last minutes), the same change passes.
    send(inbox.functions.announceOrigin(A, pad(OTHER_USER)))
    later(w3, DELAY + GRACE - 60)
    send(inbox.functions.setOrigin(A, pad(OTHER_USER)))
    assert inbox.functions.outboxOf(A).call() == pad(OTHER_USER)


def test_a_new_owner_inherits_no_pending_announcement(fresh_anvil: AnvilProcess) -> None:
    """What the old key announced (a stolen key included) is void once ownership moves."""
    w3 = chain_of(fresh_anvil)
    inbox = with_delay(w3)
    send(inbox.functions.announceOrigin(A, pad(ATTACKER)))
    send(inbox.functions.announceCommittee(members(2), 2))
    send(inbox.functions.transferOwnership(OTHER_USER))
    later(w3, DELAY)
    receipt = send(inbox.functions.acceptOwnership(), sender=OTHER_USER)
    assert_rejected(
        inbox.functions.setOrigin(A, pad(ATTACKER)), "ChangeNotAnnounced", sender=OTHER_USER
    )
    assert_rejected(
        inbox.functions.setCommittee(members(2), 2), "ChangeNotAnnounced", sender=OTHER_USER
    )
    (voided,) = events(inbox, "PendingChangesVoided", receipt)
    assert voided["generation"] == inbox.functions.changeGeneration().call()
    assert inbox.functions.validators().call() == members()


def test_removing_trust_is_immediate_and_revoking_leaves_no_committee(
    fresh_anvil: AnvilProcess,
) -> None:
    """Untrusting an origin and revoking the committee only remove trust: no delay protects
    anyone from them. A revoked committee signs nothing the inbox accepts, and no committee
    comes back without the delay."""
    w3 = chain_of(fresh_anvil)
    inbox = with_delay(w3)
    send(inbox.functions.announceOrigin(A, pad(OTHER_USER)))
    later(w3, DELAY)
    send(inbox.functions.setOrigin(A, pad(OTHER_USER)))
    assert inbox.functions.originEra(A).call() == 1
    receipt = send(inbox.functions.setOrigin(A, ZERO))  # unannounced, at once
    assert events(inbox, "OriginSet", receipt) == [{"origin": A, "outbox": ZERO}]
    assert inbox.functions.originEra(A).call() == 2
    receipt = send(inbox.functions.revokeCommittee())
    assert events(inbox, "CommitteeRevoked", receipt) == [{"revokedThrough": 1}]
    assert (inbox.functions.epoch().call(), inbox.functions.threshold().call()) == (2, 0)
    assert inbox.functions.validators().call() == []
    assert inbox.functions.revokedThrough().call() == 1
    assert not any(inbox.functions.isValidator(m).call() for m in members())
    assert_rejected(inbox.functions.revokeCommittee(), "NoCommittee")
    assert_rejected(inbox.functions.setCommittee(members(), 2), "ChangeNotAnnounced")
    send(inbox.functions.announceCommittee(members(), 2))
    later(w3, DELAY)
    receipt = send(inbox.functions.setCommittee(members(), 2))
    assert events(inbox, "CommitteeSet", receipt)[0]["epoch"] == 3


def test_a_remote_bridge_is_trusted_only_through_the_delay(fresh_anvil: AnvilProcess) -> None:
    """TokenBridge shares the Inbox's governance (Governed): trusting a remote bridge or
    making a domain an escrow remote (any sender there may then unlock) waits the delay,
    a sleeper is voided by a longer delay, forgetting either is immediate."""
    w3 = chain_of(fresh_anvil)
    home, _ = make_bridge_pair(w3)
    bridge = home.bridge.functions
    send(bridge.announceRemote(C, pad(ATTACKER)))  # a sleeper at delay 0
    send(bridge.announceChangeDelay(DELAY))
    send(bridge.setChangeDelay(DELAY))
    key = bridge.remoteChangeKey(C).call()
    assert assert_rejected(bridge.setRemote(C, pad(ATTACKER)), "ChangeNotAnnounced") == (key,)
    assert assert_rejected(bridge.setEscrowRemote(C, True), "ChangeNotAnnounced") == (
        bridge.escrowChangeKey(C).call(),
    )
    receipt = send(bridge.announceRemote(C, pad(OTHER_USER)))
    (announced,) = events(home.bridge, "RemoteAnnounced", receipt)
    assert (announced["domain"], announced["notBefore"]) == (C, now(w3) + DELAY)
    send(bridge.announceEscrowRemote(C))
    assert_rejected(bridge.setRemote(C, pad(OTHER_USER)), "ChangeNotDue")
    later(w3, DELAY)
    send(bridge.setRemote(C, pad(OTHER_USER)))
    send(bridge.setEscrowRemote(C, True))
    assert bridge.remoteBridge(C).call() == pad(OTHER_USER) and bridge.escrowRemote(C).call()
    send(bridge.setEscrowRemote(C, False))  # immediate
    send(bridge.setRemote(C, ZERO))  # immediate
    assert bridge.remoteBridge(C).call() == ZERO and not bridge.escrowRemote(C).call()


def test_the_new_levers_are_owner_only(w3: Web3) -> None:
    inbox = deploy(w3, "Inbox", B, DEPLOYER)
    home, _ = make_bridge_pair(w3)
    attempts: list[Callable[[], Any]] = [
        inbox.functions.revokeCommittee,
        lambda: inbox.functions.discardFailed(A, pad(ATTACKER), 0),
        lambda: inbox.functions.announceDiscard(A, pad(ATTACKER), 0),
        lambda: inbox.functions.setOrigin(A, ZERO),
        lambda: home.bridge.functions.announceRemote(C, pad(ATTACKER)),
        lambda: home.bridge.functions.announceEscrowRemote(C),
        lambda: home.bridge.functions.announceChangeDelay(0),
        lambda: home.bridge.functions.cancelChange(ZERO),
    ]
    for attempt in attempts:
        assert assert_rejected(attempt(), "NotOwner", sender=ATTACKER, mine=False) == (ATTACKER,)


# ------------------------------------------------------ review of the governance fixes

# keccak256(abi.encode(uint256(keccak256("passerelle.governed")) - 1)) & ~0xff (Governed.sol).
GOVERNED_SLOT = (
    int.from_bytes(
        keccak256(
            (int.from_bytes(keccak256(b"passerelle.governed"), "big") - 1).to_bytes(32, "big")
        ),
        "big",
    )
    & ~0xFF
)


def test_governance_state_lives_in_its_namespaced_slot(w3: Web3) -> None:
    """Pinned like OWNED_SLOT: the delay (uint64, low bytes) and the generation (next uint64)
    are in the ERC-7201 slot of "passerelle.governed", so a typo in the constant, which
    would put them where an inheriting contract lays out its own state, is caught."""
    inbox = with_delay(w3)  # raising the delay from 0 voided once: generation 1
    word = int.from_bytes(w3.eth.get_storage_at(inbox.address, GOVERNED_SLOT), "big")
    assert word == (1 << 64) | DELAY
    assert inbox.functions.changeGeneration().call() == 1


def test_a_lowered_delay_does_not_shorten_an_announced_change(fresh_anvil: AnvilProcess) -> None:
    """The review's sound-check (the `pending.delay` side of max()): a change announced under
    a 2 h delay still waits its 2 h after the delay is lowered to 1 h."""
    w3 = chain_of(fresh_anvil)
    inbox = deploy(w3, "Inbox", B, DEPLOYER)
    send(inbox.functions.setChangeDelay(7_200))
    send(inbox.functions.announceChangeDelay(3_600))
    later(w3, 100)
    receipt = send(inbox.functions.announceOrigin(A, pad(ATTACKER)))
    (announced,) = events(inbox, "OriginAnnounced", receipt)
    due = announced["notBefore"]
    later(w3, 7_200 - 50)
    send(inbox.functions.setChangeDelay(3_600))  # due: announced 7,200 s before
    assert now(w3) < due
    assert assert_rejected(inbox.functions.setOrigin(A, pad(ATTACKER)), "ChangeNotDue") == (
        inbox.functions.originChangeKey(A).call(),
        due,
    )
    later(w3, 60)
    send(inbox.functions.setOrigin(A, pad(ATTACKER)))
    assert inbox.functions.outboxOf(A).call() == pad(ATTACKER)


def enact_at(w3: Web3, timestamp: int, inbox: Contract, outbox: bytes) -> int:
    """``setOrigin(A, outbox)`` mined in a block of exactly ``timestamp``; its status."""
    w3.provider.make_request("evm_setNextBlockTimestamp", [timestamp])  # type: ignore[arg-type]
    tx = inbox.functions.setOrigin(A, outbox).transact({"from": DEPLOYER, "gas": 500_000})
    return int(w3.eth.wait_for_transaction_receipt(tx)["status"])


def test_the_enactment_window_is_exactly_from_due_to_due_plus_grace(
    fresh_anvil: AnvilProcess,
) -> None:
    """Both ends, to the second: refused at due - 1 and at due + GRACE + 1, enacted at due and
    at due + GRACE (each enactment consumes its announcement, so each case announces anew)."""
    w3 = chain_of(fresh_anvil)
    inbox = with_delay(w3)
    outbox = pad(OTHER_USER)

    def announce() -> int:
        receipt = send(inbox.functions.announceOrigin(A, outbox))
        return int(events(inbox, "OriginAnnounced", receipt)[0]["notBefore"])

    due = announce()
    assert enact_at(w3, due - 1, inbox, outbox) == 0
    assert enact_at(w3, due, inbox, outbox) == 1
    due = announce()
    assert enact_at(w3, due + GRACE, inbox, outbox) == 1
    due = announce()
    assert enact_at(w3, due + GRACE + 1, inbox, outbox) == 0
    assert assert_rejected(inbox.functions.setOrigin(A, outbox), "ChangeExpired", mine=False)[
        1
    ] == (due + GRACE)


def test_discarding_a_parked_message_is_announced_and_waits_the_delay(
    fresh_anvil: AnvilProcess,
) -> None:
    """Finding 3: a discard only destroys a user's parked message (for the bridge: value
    locked or burned on the origin), so it is announced and waits the change delay like a
    change that adds trust; meanwhile the message's owner can still retry it, after which
    the discard finds nothing."""
    w3 = chain_of(fresh_anvil)
    route = make_route(w3)
    inbox, flaky = route.inbox, route.flaky
    send(flaky.functions.setMode(1))  # Revert
    for body in (b"kept", b"dropped"):
        route.lane.dispatch(B, pad(flaky.address), body)
    route.process(*route.lane.batch([0, 1]))
    send(inbox.functions.announceChangeDelay(DELAY))
    send(inbox.functions.setChangeDelay(DELAY))
    outbox = pad(route.lane.outbox.address)
    keys = [inbox.functions.failureKey(A, outbox, n).call() for n in (0, 1)]
    change_keys = [inbox.functions.discardChangeKey(k).call() for k in keys]
    assert assert_rejected(inbox.functions.discardFailed(A, outbox, 0), "ChangeNotAnnounced") == (
        change_keys[0],
    )
    for nonce in (0, 1):
        receipt = send(inbox.functions.announceDiscard(A, outbox, nonce))
        assert events(inbox, "DiscardAnnounced", receipt) == [
            {"key": keys[nonce], "notBefore": now(w3) + DELAY}
        ]
    assert_rejected(inbox.functions.discardFailed(A, outbox, 1), "ChangeNotDue")
    send(flaky.functions.setMode(0))
    send(inbox.functions.retry(route.lane.messages[0]), sender=OTHER_USER)  # the user acts
    later(w3, DELAY)
    assert_rejected(inbox.functions.discardFailed(A, outbox, 0), "NotFailed")
    receipt = send(inbox.functions.discardFailed(A, outbox, 1))
    assert events(inbox, "FailedDiscarded", receipt) == [
        {"id": keccak256(route.lane.messages[1])[:24], "origin": A, "outbox": outbox, "nonce": 1}
    ]
    assert assert_rejected(inbox.functions.retry(route.lane.messages[1]), "NotFailed")
    assert flaky.functions.handled().call() == 1
