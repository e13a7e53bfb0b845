"""The gas a message must buy is on chain (issue #11's Paymaster overhead; docs/design.md "Paid
delivery"): ``Paymaster.setDeliveryGas`` / ``deliveryGasFor`` / ``quoteDispatch``, and the
relayer and ``passerelle quote``/``send`` pricing with the same on-chain number
(:func:`relayer.payments.charged_gas`) instead of each party's config.

Hostile cases: an oracle setting an absurd overhead (refused on chain; an RPC answering one is
refused by the relayer), a quote that would overflow, a body length lie (the relayer prices the
real message), a message paid under the old overhead after a raise (waits unpaid, a top-up
delivers it). The chain tests share the session anvil; the relayer case reuses
tests/test_paid_delivery.py's route (its own deployment for this module).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from test_contracts import DEPLOYER, USER, assert_rejected, deploy, send
from test_paid_delivery import (
    DEPLOYER_KEY,
    GAS_PRICE,
    RATE,
    A,
    B,
    Route,
    h,
    inbox_events,
    pay,
    sign_checkpoints,
    until,
)
from test_paid_delivery import route as route  # noqa: PLC0414 - the fixture, for this module
from test_paymaster import ORACLE, THERE
from test_paymaster import w3 as w3  # noqa: PLC0414 - the fixture
from web3 import Web3
from web3.contract import Contract

from adapters.evm.chain import EvmChain, selector
from adapters.jsonrpc import MalformedAnswer, RpcCallError
from adapters.rpc import JsonRpcClient
from devnet.anvil import AnvilProcess
from devnet.evm import DEVNET_GAS_OVERHEAD, DEVNET_GAS_PER_BYTE
from light_clients.hashing import keccak256
from light_clients.message import HEADER_SIZE
from relayer import payments as relayer_payments
from relayer import user
from relayer.config import CALLDATA_GAS_PER_BYTE, EVM_MIN_DELIVERY_GAS, RoutePayment
from relayer.families.evm import payments as evm_payments
from relayer.families.evm.origin import EvmOrigin
from relayer.families.evm.payments import (
    MAX_GAS_OVERHEAD,
    MAX_GAS_PER_BYTE,
    delivery_gas_of,
    rates_at,
)
from relayer.ledger import MessageRecord, open_ledger
from relayer.payments import (
    FROM_CHAIN,
    FROM_FLOOR,
    DeliveryGas,
    GasRate,
    Payment,
    charged_gas,
    route_payments,
)
from relayer.relay import Relayer

MAX_BODY = 64 * 1024


def words(*values: int) -> bytes:
    return b"".join(v.to_bytes(32, "big") for v in values)


# --------------------------------------------------------------------------- pure


def test_an_rpc_answering_an_overhead_the_contract_cannot_hold_is_refused() -> None:
    assert delivery_gas_of(words(0, 0), THERE) is None  # the oracle set none
    assert delivery_gas_of(words(650_000, 40), THERE) == DeliveryGas(650_000, 40)
    assert delivery_gas_of(words(MAX_GAS_OVERHEAD, MAX_GAS_PER_BYTE), THERE) == DeliveryGas(
        MAX_GAS_OVERHEAD, MAX_GAS_PER_BYTE
    )
    for answer in (
        words(MAX_GAS_OVERHEAD + 1, 0),  # past the bound the contract enforces
        words(1, MAX_GAS_PER_BYTE + 1),
        words(2**256 - 1, 2**256 - 1),
        words(650_000),  # not two words
        words(650_000, 40, 0),
    ):
        with pytest.raises(MalformedAnswer, match="deliveryGas"):
            delivery_gas_of(answer, THERE)


def test_the_contract_bounds_are_the_relayers_and_the_devnet_asks_the_default_floor() -> None:
    """The relayer's copies of the contract's constants are the contract's (checked against
    its source), and the devnet sets what a default config's floor asks, so a devnet sender
    paying the on-chain quote is never short of a default relayer's floor."""
    from adapters.evm.compile import CONTRACTS_DIR  # noqa: PLC0415

    source = (CONTRACTS_DIR / "Paymaster.sol").read_text(encoding="utf-8")
    assert f"MAX_GAS_OVERHEAD = {MAX_GAS_OVERHEAD:_};" in source
    assert f"MAX_GAS_PER_BYTE = {MAX_GAS_PER_BYTE:_};" in source
    assert (DEVNET_GAS_OVERHEAD, DEVNET_GAS_PER_BYTE) == (
        EVM_MIN_DELIVERY_GAS,
        CALLDATA_GAS_PER_BYTE,
    )


@given(
    floor=st.integers(1, 30_000_000),
    overhead=st.integers(1, MAX_GAS_OVERHEAD),
    per_byte=st.integers(0, MAX_GAS_PER_BYTE),
    body=st.integers(0, MAX_BODY),
)
def test_the_charge_is_the_on_chain_number_never_under_the_floor(
    floor: int, overhead: int, per_byte: int, body: int
) -> None:
    rule = RoutePayment("paid", floor)
    stated = GasRate(GAS_PRICE, RATE, DeliveryGas(overhead, per_byte))
    charged = charged_gas(rule, stated, body)
    assert charged == max(rule.gas_for(body), overhead + per_byte * body)
    assert charged >= rule.gas_for(body)
    # An origin stating nothing (a Substrate origin; an unset destination): the floor alone.
    assert charged_gas(rule, GasRate(GAS_PRICE, RATE), body) == rule.gas_for(body)
    assert charged_gas(rule, None, body) == rule.gas_for(body)


# --------------------------------------------------------------------------- the contract


@pytest.mark.chain
def test_only_the_oracle_sets_delivery_gas_within_bounds_and_quotes_cannot_overflow(
    w3: Web3,
) -> None:
    paymaster: Contract = deploy(w3, "Paymaster", DEPLOYER, DEPLOYER)
    send(paymaster.functions.setOracle(ORACLE))
    send(paymaster.functions.setGasRate(THERE, GAS_PRICE, RATE), sender=ORACLE)
    set_gas = paymaster.functions.setDeliveryGas
    # Not set yet: nothing to quote (not zero gas: that would buy delivery for nothing).
    assert_rejected(paymaster.functions.deliveryGasFor(THERE, 0), "NoDeliveryGas")
    assert_rejected(paymaster.functions.quoteDispatch(THERE, 0), "NoDeliveryGas")
    for who in (USER, DEPLOYER):  # not even the owner: the oracle prices
        assert_rejected(set_gas([THERE], [650_000], [40]), "NotOracle", sender=who)
    for overhead, per_byte in ((0, 40), (MAX_GAS_OVERHEAD + 1, 0), (1, MAX_GAS_PER_BYTE + 1)):
        assert_rejected(
            set_gas([THERE], [overhead], [per_byte]), "DeliveryGasOutOfRange", sender=ORACLE
        )
    assert_rejected(set_gas([THERE], [650_000], []), "LengthMismatch", sender=ORACLE)
    receipt = send(set_gas([THERE], [650_000], [40]), sender=ORACLE)
    (event,) = paymaster.events.DeliveryGasSet().process_receipt(receipt)
    assert (event["args"]["destination"], event["args"]["gasOverhead"]) == (THERE, 650_000)
    assert paymaster.functions.deliveryGas(THERE).call() == [650_000, 40]

    stated = GasRate(GAS_PRICE, RATE, DeliveryGas(650_000, 40))
    for body in (0, 1, 89, MAX_BODY):
        gas = paymaster.functions.deliveryGasFor(THERE, body).call()
        assert gas == stated.delivery.gas_for(body)  # type: ignore[union-attr]
        assert paymaster.functions.quoteDispatch(THERE, body).call() == [stated.fee(gas), gas]
    # A body no message can have: one clear error, not an arithmetic panic.
    for body in (MAX_BODY + 1, 2**256 - 1):
        assert_rejected(paymaster.functions.quoteDispatch(THERE, body), "BodyTooLarge")
    # The largest overhead at the largest price: the wei would not fit 256 bits.
    send(set_gas([THERE], [MAX_GAS_OVERHEAD], [MAX_GAS_PER_BYTE]), sender=ORACLE)
    send(paymaster.functions.setGasRate(THERE, 2**128 - 1, 2**128 - 1), sender=ORACLE)
    assert_rejected(paymaster.functions.quoteDispatch(THERE, MAX_BODY), "QuoteOverflow")


# --------------------------------------------------------------------------- the relayer


def set_delivery_gas(route: Route, overhead: int, per_byte: int) -> None:
    """The devnet oracle (the deployer) sets A's Paymaster's delivery gas for B."""
    paymaster = route.w3.eth.contract(
        address=Web3.to_checksum_address(route.origin["paymaster"]),
        abi=[{"name": "setDeliveryGas", "type": "function", "stateMutability": "nonpayable",
              "inputs": [{"type": "uint32[]", "name": ""}, {"type": "uint64[]", "name": ""},
                         {"type": "uint64[]", "name": ""}], "outputs": []}],
    )  # fmt: skip
    oracle = Web3.to_checksum_address(route.w3.eth.account.from_key(DEPLOYER_KEY).address)
    tx = paymaster.functions.setDeliveryGas([B], [overhead], [per_byte]).transact({"from": oracle})
    assert route.w3.eth.wait_for_transaction_receipt(tx)["status"] == 1


@pytest.mark.chain
def test_quote_send_and_the_relayer_charge_the_on_chain_overhead(route: Route) -> None:
    """A raise on chain is seen by ``quote``, ``send`` and the relayer alike; a message paid
    under the old overhead waits unpaid until topped up; a sender that pays for a shorter body
    than it sent bought too little (the relayer prices the real message)."""
    config = route.config
    rule = config.relay_policy.route_payment(A, B)
    body = b"paid under the old overhead"
    before = trio.run(lambda: user.quote(config, A, B, body_size=len(body)))
    assert before.gas == DEVNET_GAS_OVERHEAD + DEVNET_GAS_PER_BYTE * len(body)
    (old,) = trio.run(lambda: user.send_messages(config, A, B, body))
    assert old.fee == before.fee

    raised = DeliveryGas(DEVNET_GAS_OVERHEAD + 100_000, DEVNET_GAS_PER_BYTE + 10)
    set_delivery_gas(route, raised.overhead, raised.per_byte)
    after = trio.run(lambda: user.quote(config, A, B, body_size=len(body)))
    assert after.gas == raised.gas_for(len(body)) > rule.gas_for(len(body))  # not the config's
    assert after.fee == GasRate(GAS_PRICE, RATE).fee(after.gas)
    (new,) = trio.run(lambda: user.send_messages(config, A, B, b"paid under the new one"))
    # The lie: 2,000 bytes sent, the gas of an empty body paid (with ``pay`` directly).
    long_body = bytes(range(250)) * 8
    (liar,) = trio.run(lambda: user.send_messages(config, A, B, long_body, pay=False))
    short = raised.gas_for(0)
    pay(route, liar.id, B, short, GasRate(GAS_PRICE, RATE).fee(short))
    sign_checkpoints(route)

    with open_ledger(config.ledger) as ledger:
        relayer = Relayer(config, ledger, poll=0.05)
        relayer.unpaid_poll = 0.1

        def status(sent: user.Sent) -> str | None:
            record = ledger.get(h(sent.id))
            return None if record is None else record.status

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(relayer.run)
                await until(lambda: status(new) == "delivered", "the new payment's delivery")
                await until(lambda: status(old) == "unpaid", "the old payment to wait")
                await until(lambda: status(liar) == "unpaid", "the short payment to wait")
                reason = ledger.get(h(old.id)).reason  # type: ignore[union-attr]
                owed = raised.gas_for(len(body))
                assert reason is not None and f"bought {before.gas} gas < the {owed}" in reason
                reason = ledger.get(h(liar.id)).reason  # type: ignore[union-attr]
                owed_long = raised.gas_for(len(long_body))
                assert reason is not None and f"bought {short} gas < the {owed_long}" in reason
                assert inbox_events(route, old.id) == [] and inbox_events(route, liar.id) == []
                top_up = owed - before.gas  # what the raise added, nothing more
                pay(route, old.id, B, top_up, GasRate(GAS_PRICE, RATE).fee(top_up))
                await until(lambda: status(old) == "delivered", "delivery after the top-up")
                assert status(liar) == "unpaid"
                nursery.cancel_scope.cancel()

        trio.run(main)
    assert len(inbox_events(route, old.id)) == 1 and inbox_events(route, liar.id) == []
    set_delivery_gas(route, DEVNET_GAS_OVERHEAD, DEVNET_GAS_PER_BYTE)  # as the module found it


# ------------------------------------------------------------------- review fixes (RC2 L2, L5, L6)


def old_paymaster_code() -> bytes:
    """Runtime code of a Paymaster from before ``deliveryGas`` existed, as far as the relayer
    can tell: ``rates(uint32)`` answers (GAS_PRICE, RATE) and every other selector reverts
    with no data (the old contract has no fallback). Hand-assembled, so the test does not
    depend on an old artifact or on git history."""
    rates = selector("rates(uint32)")
    return (
        bytes.fromhex("600035" "60e01c" "63") + rates  # selector = calldata[0:4]
        + bytes.fromhex("14" "6014" "57")  # == rates? jump to 0x14
        + bytes.fromhex("6000" "6000" "fd")  # else revert(0, 0)
        + bytes.fromhex("5b" "7f") + GAS_PRICE.to_bytes(32, "big")  # 0x14: mstore(0, price)
        + bytes.fromhex("6000" "52" "7f") + RATE.to_bytes(32, "big")  # mstore(32, rate)
        + bytes.fromhex("6020" "52" "6040" "6000" "f3")  # return(0, 64)
    )  # fmt: skip


@pytest.mark.chain
def test_a_paymaster_without_delivery_gas_charges_the_floor_with_one_warning(
    w3: Web3,
    anvil: AnvilProcess,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review RC2 L2: an origin whose Paymaster predates ``deliveryGas`` reverts that call,
    and one revert failed the whole batch: no paid message of that origin was ever decided,
    ``quote`` and ``send --pay`` failed. Now it states no number: the floor alone applies,
    and one warning (not one per round) says so. A contract that answers nothing is still an
    error: the fallback only forgives the missing ``deliveryGas``."""
    monkeypatch.setattr(evm_payments, "_NO_DELIVERY_GAS_WARNED", set())
    old = keccak256(b"a Paymaster from before session 6")[-20:]
    nothing = keccak256(b"a contract that reverts everything")[-20:]
    w3.provider.make_request("anvil_setCode", ["0x" + old.hex(), "0x" + old_paymaster_code().hex()])  # type: ignore[arg-type]
    w3.provider.make_request("anvil_setCode", ["0x" + nothing.hex(), "0x60006000fd"])  # type: ignore[arg-type]
    evm = EvmChain(JsonRpcClient([anvil.rpc_url]), domain=1000, finality="devnet-instant")

    async def main() -> list[dict[int, GasRate | None]]:
        read = [await rates_at(evm, old, [THERE, THERE + 1], "latest") for _ in range(3)]
        with pytest.raises(RpcCallError):
            await rates_at(evm, nothing, [THERE], "latest")
        return read

    with caplog.at_level("WARNING", logger="passerelle.payments"):
        reads = trio.run(main)
    assert reads == [{THERE: GasRate(GAS_PRICE, RATE), THERE + 1: GasRate(GAS_PRICE, RATE)}] * 3
    warned = [r.getMessage() for r in caplog.records if "has no deliveryGas" in r.getMessage()]
    assert len(warned) == 1 and "0x" + old.hex() in warned[0] and "\n" not in warned[0]
    rule = RoutePayment("paid", EVM_MIN_DELIVERY_GAS)
    assert charged_gas(rule, reads[0][THERE], 89) == rule.gas_for(89)  # the floor alone


def test_a_node_refusing_the_read_is_no_old_paymaster() -> None:
    """Review R2b: only a REVERT of the batch means "this Paymaster has no deliveryGas". A node
    that refuses the request (a rate limit, an unknown block) says nothing about the contract:
    the error reaches the caller (the payment is decided next round), it is never read as
    "no on-chain price" with the floor alone charged and a warning blaming the deployment."""
    refused = RpcCallError("node", "eth_call", -32005, "daily request limit exceeded")
    reverted = RpcCallError("node", "eth_call", 3, "execution reverted", "0x")
    assert not refused.reverted and reverted.reverted
    assert RpcCallError("node", "eth_call", -32000, "execution reverted").reverted

    class Refusing:
        calls = 0
        rpc = SimpleNamespace(endpoints=[], ordered=list)  # the old-Paymaster memory's keys

        async def call_many(self, *_: object) -> list[bytes]:
            self.calls += 1
            raise refused

    node = Refusing()
    with pytest.raises(RpcCallError) as raised:
        trio.run(rates_at, node, b"\x11" * 20, [THERE], "latest")
    assert raised.value is refused and node.calls == 1  # no second, rates-only read


@pytest.mark.chain
def test_payments_are_read_at_the_final_block_and_the_reason_names_the_charges_source(
    route: Route,
    anvil: AnvilProcess,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review RC2 L6: a payment and an oracle raise that are in the chain but not yet final
    must not count (a reorg could take the payment away after the relayer paid the gas).
    Every other test runs ``devnet-instant`` (final = latest), so reading at ``latest`` went
    unnoticed. Here the origin is read with ``confirmations:2``.

    Review RC2 L5: the unpaid reason says whether the charge is the relayer's floor or the
    origin's on-chain number, and a floor above the on-chain number warns once per route."""
    monkeypatch.setattr(relayer_payments, "_FLOOR_ABOVE_CHAIN_WARNED", set())
    chain = route.config.chain(A)
    evm = EvmChain(JsonRpcClient([anvil.rpc_url]), domain=A, finality="confirmations", depth=2)
    origin = EvmOrigin(chain, evm)
    message_id = keccak256(b"paid in a block that is not final yet")
    body_size = 10
    record = MessageRecord(id=h(message_id), destination=B, message=bytes(HEADER_SIZE + body_size))
    raised = DeliveryGas(DEVNET_GAS_OVERHEAD + 50_000, DEVNET_GAS_PER_BYTE)
    floor = RoutePayment("paid", DEVNET_GAS_OVERHEAD)
    high_floor = RoutePayment("paid", raised.overhead + 1_000)

    async def read(rule: RoutePayment) -> Payment:
        return (await route_payments(chain, origin, [record], lambda _: rule))[record.id]

    for _ in range(2):  # what earlier tests left at latest is final before we start
        route.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    before = trio.run(read, floor)
    set_delivery_gas(route, raised.overhead, raised.per_byte)  # one block
    pay(route, message_id, B, raised.gas_for(body_size), 10**15)  # and another
    not_final = trio.run(read, floor)
    assert (not_final.bought, not_final.gas) == (0, before.gas) != (0, raised.gas_for(body_size))
    for _ in range(2):
        route.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    final = trio.run(read, floor)
    assert final.bought >= raised.gas_for(body_size) == final.gas and final.covers
    assert final.gas_from == FROM_CHAIN and FROM_CHAIN in final.describe("alpha", "beta")

    with caplog.at_level("WARNING", logger="passerelle.payments"):
        short = [trio.run(read, high_floor) for _ in range(2)]
    assert short[0].gas == high_floor.gas_for(body_size) > short[0].bought
    assert short[0].gas_from == FROM_FLOOR and FROM_FLOOR in short[0].describe("alpha", "beta")
    warned = [r.getMessage() for r in caplog.records if "above the origin's" in r.getMessage()]
    assert len(warned) == 1 and f"{A} -> {B}" in warned[0]
    set_delivery_gas(route, DEVNET_GAS_OVERHEAD, DEVNET_GAS_PER_BYTE)  # as the module found it
