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
