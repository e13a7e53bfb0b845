"""The Paymaster and the Outbox's ``dispatchAndPay`` on the session anvil (issue #11, "Paid
delivery"; docs/design.md "Paid delivery").

Each test deploys its own Paymaster (cheap) so none depends on another's payments. Rejections
go through ``assert_rejected`` of tests/test_contracts.py: the custom error in ``eth_call`` and
status 0 as a mined transaction.
"""

from __future__ import annotations

import pytest
from test_contracts import (
    ATTACKER,
    DEPLOYER,
    OTHER_USER,
    USER,
    assert_rejected,
    decode_error,
    deploy,
    events,
    send,
)
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractCustomError, ContractLogicError
from web3.types import RPCEndpoint, TxParams, TxReceipt, Wei

from devnet.anvil import AnvilProcess
from light_clients.hashing import keccak256

pytestmark = pytest.mark.chain

HERE, THERE, ELSEWHERE = 1000, 2000, 3000  # the origin's domain, a priced and an unpriced one
ORACLE = OTHER_USER
GAS_PRICE = 3 * 10**9  # 3 gwei on the destination
RATE = 2 * 10**10  # one destination unit is worth two origin units (RATE_SCALE = 1e10)
ID = keccak256(b"a message")
OTHER_ID = keccak256(b"another message")
PAYMASTER_SLOT = 0x5BDC87DDA614D9C699FA032A57E2FDF3E5B73D2886B7621AB97676B4EE3BAD00
"""Outbox: keccak256(abi.encode(uint256(keccak256("passerelle.outbox.paymaster")) - 1)) & ~0xff."""


@pytest.fixture(scope="module")
def w3(anvil: AnvilProcess) -> Web3:
    web3 = Web3(Web3.HTTPProvider(anvil.rpc_url, request_kwargs={"timeout": 30}))
    assert web3.is_connected()
    return web3


@pytest.fixture
def paymaster(w3: Web3) -> Contract:
    """A Paymaster owned by DEPLOYER (also its first beneficiary), ORACLE pricing THERE."""
    contract = deploy(w3, "Paymaster", DEPLOYER, DEPLOYER)
    send(contract.functions.setOracle(ORACLE))
    send(contract.functions.setGasRate(THERE, GAS_PRICE, RATE), sender=ORACLE)
    return contract


def quote(gas: int, gas_price: int = GAS_PRICE, rate: int = RATE) -> int:
    """The reference formula: gas × price × rate / 1e10, rounded up."""
    return -(-gas * gas_price * rate // 10**10)


def pay(
    paymaster: Contract,
    gas: int,
    value: int,
    *,
    sender: str = USER,
    message_id: bytes = ID,
    destination: int = THERE,
    refund_to: str | None = None,
) -> TxReceipt:
    """``paymaster.pay`` as ``sender`` with ``value`` wei; the refund to the sender by default."""
    fn = paymaster.functions.pay(message_id, destination, gas, refund_to or sender)
    return transact(fn, sender, value=value)


# --------------------------------------------------------------------------- quotes and rates


def test_quote_is_gas_times_price_times_rate_rounded_up_and_refuses_what_it_cannot_price(
    paymaster: Contract,
) -> None:
    for gas in (1, 21_000, 100_000, 2**64):
        assert paymaster.functions.quote(THERE, gas).call() == quote(gas)
    # Rounded up, never down: a price of 1 wei/gas at a rate of 1/3 still costs 1 wei for 1 gas.
    send(paymaster.functions.setGasRate(ELSEWHERE, 1, 10**10 // 3), sender=ORACLE)
    assert paymaster.functions.quote(ELSEWHERE, 1).call() == 1
    assert paymaster.functions.quote(ELSEWHERE, 3).call() == 1  # 3 × 3333333333 / 1e10 = 0.99…
    # An unpriced destination has no quote (rather than a quote of zero).
    assert_rejected(paymaster.functions.quote(HERE, 1), "NoRate", mine=False)
    # Overflow is an error, never a small number after wrapping.
    send(paymaster.functions.setGasRate(ELSEWHERE, 2**128 - 1, 2**128 - 1), sender=ORACLE)
    assert_rejected(paymaster.functions.quote(ELSEWHERE, 2), "QuoteOverflow", mine=False)
    assert_rejected(paymaster.functions.pay(ID, ELSEWHERE, 2, USER), "QuoteOverflow", sender=USER)


def test_only_the_oracle_sets_rates_and_only_the_owner_names_it(paymaster: Contract) -> None:
    for who in (DEPLOYER, ATTACKER, USER):  # not even the owner: it names the oracle instead
        assert_rejected(paymaster.functions.setGasRate(THERE, 1, 1), "NotOracle", sender=who)
    assert_rejected(paymaster.functions.setOracle(ATTACKER), "NotOwner", sender=ATTACKER)
    assert_rejected(paymaster.functions.setBeneficiary(ATTACKER), "NotOwner", sender=ATTACKER)
    # A zero price or rate would make delivery free: refused, the old rate stays.
    for price, rate in ((0, RATE), (GAS_PRICE, 0)):
        assert_rejected(
            paymaster.functions.setGasRate(THERE, price, rate), "ZeroRate", sender=ORACLE
        )
    assert paymaster.functions.rates(THERE).call() == [GAS_PRICE, RATE]
    # A new oracle replaces the old one entirely.
    send(paymaster.functions.setOracle(USER))
    assert_rejected(paymaster.functions.setGasRate(THERE, 1, 1), "NotOracle", sender=ORACLE)
    receipt = send(paymaster.functions.setGasRate(THERE, 5, 7), sender=USER)
    assert events(paymaster, "GasRateSet", receipt) == [
        {"destination": THERE, "gasPrice": 5, "exchangeRate": 7}
    ]


# --------------------------------------------------------------------------- paying


def test_underpayment_is_refused_and_overpayment_refunded_in_the_same_call(
    w3: Web3, paymaster: Contract
) -> None:
    gas = 150_000
    price = quote(gas)
    pay_fn = paymaster.functions.pay(ID, THERE, gas, USER)
    assert rejected(pay_fn, "Underpaid", USER, value=price - 1) == (price, price - 1)
    assert paymaster.functions.paid(ID, THERE).call() == [0, 0]
    zero_gas = paymaster.functions.pay(ID, THERE, 0, USER)
    assert rejected(zero_gas, "ZeroGas", USER, value=price) == ()

    before = balance(w3, USER)
    receipt = pay(paymaster, gas, price * 10)  # 9 × the quote too much
    assert balance(w3, USER) == before - price - spent(receipt)
    assert balance(w3, paymaster.address) == price
    assert paymaster.functions.paid(ID, THERE).call() == [price, gas]
    assert events(paymaster, "GasPayment", receipt) == [
        {"id": ID, "destination": THERE, "gasAmount": gas, "payment": price, "payer": USER}
    ]
    assert events(paymaster, "RefundHeld", receipt) == []


def test_top_ups_accumulate_per_id_and_destination_and_nowhere_else(
    paymaster: Contract,
) -> None:
    send(paymaster.functions.setGasRate(ELSEWHERE, GAS_PRICE, RATE), sender=ORACLE)
    pay(paymaster, 100_000, quote(100_000))
    pay(paymaster, 50_000, quote(50_000), sender=OTHER_USER)  # anyone may top up
    assert paymaster.functions.paid(ID, THERE).call() == [quote(100_000) + quote(50_000), 150_000]
    # Paying for another id, or for this id to another destination, buys this message nothing.
    pay(paymaster, 70_000, quote(70_000), message_id=OTHER_ID)
    pay(paymaster, 90_000, quote(90_000), destination=ELSEWHERE)
    assert paymaster.functions.paid(ID, THERE).call() == [quote(100_000) + quote(50_000), 150_000]
    assert paymaster.functions.paid(OTHER_ID, THERE).call() == [quote(70_000), 70_000]
    assert paymaster.functions.paid(ID, ELSEWHERE).call() == [quote(90_000), 90_000]


def test_a_refund_to_that_reverts_cannot_block_the_payment_and_keeps_its_change(
    w3: Web3, paymaster: Contract
) -> None:
    """A refundTo whose receive reverts (or needs more than the stipend) must not make the
    payment revert: the change is held for it, not kept as fees, and it can withdraw later."""
    wallet = Web3.to_checksum_address(keccak256(b"a wallet that refuses ether")[:20])
    rpc(w3, "anvil_setBalance", wallet, hex(10**18))
    rpc(w3, "anvil_setCode", wallet, "0x60006000fd")  # PUSH1 0 PUSH1 0 REVERT
    gas = 80_000
    receipt = pay(paymaster, gas, quote(gas) + 12_345, refund_to=wallet)
    assert paymaster.functions.paid(ID, THERE).call() == [quote(gas), gas]
    assert events(paymaster, "RefundHeld", receipt) == [{"refundTo": wallet, "amount": 12_345}]
    assert paymaster.functions.refunds(wallet).call() == 12_345
    assert paymaster.functions.refundsOwed().call() == 12_345
    # The fees are claimable, the held change is not.
    before = balance(w3, DEPLOYER)
    claim = send(paymaster.functions.claim(), sender=ATTACKER)
    assert balance(w3, DEPLOYER) == before + quote(gas)
    assert events(paymaster, "Claimed", claim) == [{"beneficiary": DEPLOYER, "amount": quote(gas)}]
    assert balance(w3, paymaster.address) == 12_345
    # Once it can take ether, the wallet withdraws its change (and only once).
    rpc(w3, "anvil_setCode", wallet, "0x")
    rpc(w3, "anvil_impersonateAccount", wallet)
    try:
        held = balance(w3, wallet)
        receipt = send(paymaster.functions.withdrawRefund(), sender=wallet)
        assert balance(w3, wallet) == held + 12_345 - spent(receipt)
        assert rejected(paymaster.functions.withdrawRefund(), "NothingToWithdraw", wallet) == ()
    finally:
        rpc(w3, "anvil_stopImpersonatingAccount", wallet)
    assert paymaster.functions.refundsOwed().call() == 0


def test_fees_go_only_to_the_beneficiary_the_owner_named(w3: Web3, paymaster: Contract) -> None:
    pay(paymaster, 60_000, quote(60_000))
    assert_rejected(paymaster.functions.setBeneficiary(ATTACKER), "NotOwner", sender=ATTACKER)
    assert_rejected(paymaster.functions.setBeneficiary(ZERO), "ZeroAddress")
    send(paymaster.functions.setBeneficiary(OTHER_USER))
    before = {who: balance(w3, who) for who in (OTHER_USER, DEPLOYER)}
    receipt = send(paymaster.functions.claim(), sender=ATTACKER)  # anyone may trigger it
    assert balance(w3, OTHER_USER) == before[OTHER_USER] + quote(60_000)
    assert balance(w3, DEPLOYER) == before[DEPLOYER]
    assert events(paymaster, "Claimed", receipt) == [
        {"beneficiary": OTHER_USER, "amount": quote(60_000)}
    ]
    assert balance(w3, paymaster.address) == 0
    assert rejected(paymaster.functions.claim(), "NothingToWithdraw", ATTACKER) == ()


# --------------------------------------------------------------------------- Outbox.dispatchAndPay


def test_dispatch_and_pay_is_one_transaction_and_moves_no_outbox_slot(
    w3: Web3, paymaster: Contract
) -> None:
    outbox = deploy(w3, "Outbox", HERE)
    recipient = bytes(12) + bytes.fromhex(USER[2:])
    gas = 120_000
    call = outbox.functions.dispatchAndPay(THERE, recipient, b"paid", gas, USER)
    assert rejected(call, "NoPaymaster", USER, value=quote(gas)) == ()
    assert_rejected(outbox.functions.setPaymaster(paymaster.address), "NotOwner", sender=ATTACKER)
    receipt = send(outbox.functions.setPaymaster(paymaster.address))
    assert events(outbox, "PaymasterSet", receipt) == [{"paymaster": paymaster.address}]
    assert outbox.functions.paymaster().call() == paymaster.address
    # Underpaid: the whole call reverts, so no message is dispatched unpaid by mistake.
    assert rejected(call, "Underpaid", USER, value=quote(gas) - 1) == (quote(gas), quote(gas) - 1)
    assert outbox.functions.count().call() == 0

    before = balance(w3, USER)
    receipt = transact(call, USER, value=quote(gas) + 10**15)
    (dispatched,) = events(outbox, "Dispatch", receipt)
    assert dispatched["message"][1:5] == bytes(4) and dispatched["destination"] == THERE
    message_id = dispatched["id"]
    assert message_id == keccak256(dispatched["message"])
    assert paymaster.functions.paid(message_id, THERE).call() == [quote(gas), gas]
    assert balance(w3, USER) == before - quote(gas) - spent(receipt)  # change refunded
    # The Paymaster's address lives in its namespaced slot; slots 0..32 are the tree's alone.
    assert storage(w3, outbox, PAYMASTER_SLOT)[12:] == bytes.fromhex(paymaster.address[2:])
    assert int.from_bytes(storage(w3, outbox, 32), "big") == 1  # the count
    assert storage(w3, outbox, 0) == message_id  # branch[0] holds the first leaf
    # Plain dispatch still works and pays nothing.
    transact(outbox.functions.dispatch(THERE, recipient, b"unpaid"), USER)
    assert outbox.functions.count().call() == 2


def test_naming_a_paymaster_is_announced_and_delayed_switching_it_off_is_not(
    w3: Web3, paymaster: Contract
) -> None:
    """Hostile review of paid delivery, finding 8: the Paymaster receives every paying user's
    ether, so naming one adds trust and waits out the Outbox's ``changeDelay`` (Governed.sol);
    zero (paying switched off) takes trust away and applies at once."""
    outbox = deploy(w3, "Outbox", HERE)
    delay = 60
    send(outbox.functions.setChangeDelay(delay))  # a zero delay lets anything through
    key = outbox.functions.PAYMASTER_CHANGE().call()
    assert rejected(
        outbox.functions.setPaymaster(paymaster.address), "ChangeNotAnnounced", DEPLOYER
    )
    assert_rejected(
        outbox.functions.announcePaymaster(paymaster.address), "NotOwner", sender=ATTACKER
    )
    receipt = send(outbox.functions.announcePaymaster(paymaster.address))
    (announced,) = events(outbox, "PaymasterAnnounced", receipt)
    assert announced["paymaster"] == paymaster.address
    assert rejected(outbox.functions.setPaymaster(paymaster.address), "ChangeNotDue", DEPLOYER)
    rpc(w3, "evm_increaseTime", delay + 1)
    rpc(w3, "evm_mine")
    # Only the announced address, even once due.
    assert rejected(outbox.functions.setPaymaster(USER), "ChangeNotAnnounced", DEPLOYER) == (key,)
    assert outbox.functions.paymaster().call() == ZERO
    send(outbox.functions.setPaymaster(paymaster.address))
    assert outbox.functions.paymaster().call() == paymaster.address
    assert outbox.functions.pendingChange(key).call()[0] == bytes(32)  # consumed
    send(outbox.functions.setPaymaster(ZERO))  # off at once, no announcement
    assert outbox.functions.paymaster().call() == ZERO


# --------------------------------------------------------------------------- helpers


ZERO = "0x" + "00" * 20


def rpc(w3: Web3, method: str, *params: object) -> None:
    response = w3.provider.make_request(RPCEndpoint(method), list(params))
    assert "error" not in response, response


def storage(w3: Web3, contract: Contract, slot: int) -> bytes:
    return bytes(w3.eth.get_storage_at(contract.address, slot)).rjust(32, b"\0")


def spent(receipt: TxReceipt) -> int:
    """What a transaction's gas cost its sender."""
    return int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])


def params(sender: str, value: int) -> TxParams:
    return {"from": Web3.to_checksum_address(sender), "value": Wei(value)}


def balance(w3: Web3, who: str) -> int:
    return w3.eth.get_balance(Web3.to_checksum_address(who))


def transact(fn: ContractFunction, sender: str, *, value: int = 0) -> TxReceipt:
    receipt = fn.w3.eth.wait_for_transaction_receipt(fn.transact(params(sender, value)))
    assert receipt["status"] == 1
    return receipt


def rejected(
    fn: ContractFunction, error: str, sender: str, *, value: int = 0
) -> tuple[object, ...]:
    """``fn`` carrying ``value`` reverts with ``error`` in eth_call and as a mined transaction;
    the error's arguments."""
    try:
        fn.call(params(sender, value))
    except (ContractCustomError, ContractLogicError) as exc:
        assert isinstance(exc.data, str), f"no revert data: {exc!r}"
        name, arguments = decode_error(bytes.fromhex(exc.data.removeprefix("0x")))
    else:
        pytest.fail(f"{fn.fn_name} did not revert")
    assert name == error, f"expected {error}, got {name}{arguments}"
    receipt = fn.w3.eth.wait_for_transaction_receipt(
        fn.transact({**params(sender, value), "gas": 2_000_000})
    )
    assert receipt["status"] == 0
    return arguments
