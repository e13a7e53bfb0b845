"""Legacy (type-0) fees in the transaction engine, and eth_getLogs windows, on a real anvil.

anvil speaks both transaction types, so a legacy engine's transactions are checked as the node
stored them (``eth_getTransactionByHash``: type ``0x0``, the ``gasPrice`` the engine chose),
not as the engine says it sent them. The log-range cap is checked by counting the requests a
real :class:`JsonRpcClient` makes (a subclass that only records them) for Dispatch events of a
real Outbox spread over many blocks (``anvil_mine``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import pytest
import trio
from e2e_support import mined
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_utils.address import to_checksum_address
from hypothesis import given
from hypothesis import strategies as st

from adapters.evm.chain import MAX_LOG_RANGE, EvmChain, log_ranges, selector
from adapters.evm.contracts import load_artifact
from adapters.evm.tx import (
    REPLACEMENT_BUMP_PERCENT,
    MinedTx,
    SentTx,
    TxEngine,
    TxError,
    parse_quantity,
)
from adapters.jsonrpc import call_sync
from adapters.rpc import EndpointHealth, JsonRpcClient, MalformedAnswer, RpcCallError
from devnet.anvil import DEV_ADDRESSES, DEV_PRIVATE_KEYS, AnvilProcess
from light_clients.hexstr import parse_data, to_hex
from relayer.signer import LocalSigner

SENDER_KEY = parse_data(DEV_PRIVATE_KEYS[7], "dev key")
SENDER = LocalSigner(SENDER_KEY)
DEPLOYER = DEV_ADDRESSES[4]
RECIPIENT = parse_data(DEV_ADDRESSES[3], "dev address")
CHAIN_ID = 31337
DOMAIN = 1


def node_tx(chain: AnvilProcess, tx_hash: bytes) -> dict[str, Any]:
    """The transaction as the node stored it."""
    found = call_sync(chain.rpc_url, "eth_getTransactionByHash", [to_hex(tx_hash)])
    assert isinstance(found, dict), found
    return found


def suggested_price(chain: AnvilProcess) -> int:
    return parse_quantity(call_sync(chain.rpc_url, "eth_gasPrice"), "gas price")


def base_fee(chain: AnvilProcess) -> int:
    block = call_sync(chain.rpc_url, "eth_getBlockByNumber", ["pending", False])
    return parse_quantity(block["baseFeePerGas"], "base fee")


def legacy_engine(client: JsonRpcClient, **options: Any) -> TxEngine:
    return TxEngine(client, SENDER, CHAIN_ID, fee_model="legacy", **options)


# --------------------------------------------------------------------------- legacy fees


@pytest.mark.chain
def test_a_legacy_transaction_is_mined_as_type_0_at_the_price_chosen(
    fresh_anvil: AnvilProcess,
) -> None:
    suggested = suggested_price(fresh_anvil)

    async def scenario() -> tuple[SentTx, MinedTx, tuple[int, int]]:
        async with JsonRpcClient([fresh_anvil.rpc_url]) as client:
            engine = legacy_engine(client)
            fees = await engine.current_fees()
            sent = await engine.send(RECIPIENT, b"", gas=21_000)
            return sent, await engine.wait(sent, timeout=30, poll=0.05), fees

    sent, mined, fees = trio.run(scenario)
    assert fees == (suggested, suggested)  # the node's eth_gasPrice, the cap far above it
    assert sent.fee_model == mined.fee_model == "legacy"
    assert sent.gas_price == sent.max_fee == sent.priority_fee == suggested
    stored = node_tx(fresh_anvil, mined.hash)
    assert stored["type"] == "0x0"
    assert parse_quantity(stored["gasPrice"], "gasPrice") == suggested
    assert "maxFeePerGas" not in stored
    assert parse_quantity(stored["chainId"], "chainId") == CHAIN_ID  # EIP-155 signed
    assert mined.effective_gas_price == suggested  # a legacy price is paid in full
    assert mined.nonce == sent.nonce


@pytest.mark.chain
def test_the_default_engine_still_sends_type_2(fresh_anvil: AnvilProcess) -> None:
    """The default is the EIP-1559 engine of before, to the byte: the raw transaction it sends
    is the one signed from the type-2 fields it always used."""

    async def scenario() -> tuple[SentTx, MinedTx, list[bytes]]:
        async with CountingClient([fresh_anvil.rpc_url]) as client:
            engine = TxEngine(client, SENDER, CHAIN_ID)
            sent = await engine.send(RECIPIENT, b"\x01\x02", gas=25_000, value=7)
            return sent, await engine.wait(sent, timeout=30, poll=0.05), client.raw_transactions

    sent, mined, raw = trio.run(scenario)
    expected = Account.from_key(SENDER_KEY).sign_transaction(
        {
            "type": 2,
            "chainId": CHAIN_ID,
            "nonce": sent.nonce,
            "to": to_checksum_address(RECIPIENT),
            "data": "0x0102",
            "value": 7,
            "gas": 25_000,
            "maxFeePerGas": sent.max_fee,
            "maxPriorityFeePerGas": sent.priority_fee,
        }
    )
    assert raw == [bytes(expected.raw_transaction)]
    assert sent.fee_model == mined.fee_model == "eip1559"
    stored = node_tx(fresh_anvil, mined.hash)
    assert stored["type"] == "0x2"
    assert parse_quantity(stored["maxFeePerGas"], "maxFeePerGas") == sent.max_fee
    assert parse_quantity(stored["maxPriorityFeePerGas"], "tip") == sent.priority_fee


@pytest.mark.chain
def test_a_legacy_estimate_and_call_with_data_uses_the_gas_price(fresh_anvil: AnvilProcess) -> None:
    """No ``gas`` given: the dry run (``eth_estimateGas`` with ``gasPrice``) prices the call."""
    outbox = deploy_outbox(fresh_anvil)

    async def scenario() -> MinedTx:
        async with JsonRpcClient([fresh_anvil.rpc_url]) as client:
            engine = legacy_engine(client)
            sent = await engine.send(outbox, dispatch_call(b"estimated"))
            return await engine.wait(sent, timeout=30, poll=0.05)

    mined = trio.run(scenario)
    assert node_tx(fresh_anvil, mined.hash)["type"] == "0x0"
    assert len(mined.logs) == 1  # the Dispatch event


# Runtime: GASPRICE ISZERO PUSH1 6 JUMPI STOP JUMPDEST PUSH1 0 DUP1 REVERT (reverts at gas
# price 0, as a dry run without fee fields is priced); the init code returns it.
GAS_PRICE_ZERO_REVERTS = bytes.fromhex("600b600c600039600b6000f3" + "3a15600657005b600080fd")


@pytest.mark.chain
def test_the_legacy_dry_run_carries_the_gas_price(fresh_anvil: AnvilProcess) -> None:
    """The estimate sees the transaction's own ``tx.gasprice`` (issue #8), not 0."""
    target = deploy(fresh_anvil, GAS_PRICE_ZERO_REVERTS)
    unpriced = {"from": DEPLOYER, "to": to_hex(target), "data": "0x"}
    with pytest.raises(RpcCallError):  # the contract does tell a dry run at price 0
        call_sync(fresh_anvil.rpc_url, "eth_estimateGas", [unpriced])

    async def scenario() -> MinedTx:
        async with JsonRpcClient([fresh_anvil.rpc_url]) as client:
            engine = legacy_engine(client)
            sent = await engine.send(target, b"")  # estimated at the engine's gas price
            return await engine.wait(sent, timeout=30, poll=0.05)

    mined = trio.run(scenario)
    assert node_tx(fresh_anvil, mined.hash)["type"] == "0x0"


@pytest.mark.chain
def test_a_stuck_legacy_transaction_is_replaced_with_a_bumped_gas_price(
    fresh_anvil: AnvilProcess,
) -> None:
    call_sync(fresh_anvil.rpc_url, "evm_setAutomine", [False])

    async def scenario() -> tuple[SentTx, MinedTx, TxEngine, int]:
        async with JsonRpcClient([fresh_anvil.rpc_url]) as client:
            engine = legacy_engine(client, escalate_after=0.3)
            sent = await engine.send(RECIPIENT, b"", gas=21_000)
            first = sent.gas_price
            async with trio.open_nursery() as nursery:

                async def mine_later() -> None:
                    await trio.sleep(1.5)
                    await trio.to_thread.run_sync(call_sync, fresh_anvil.rpc_url, "evm_mine")

                nursery.start_soon(mine_later)
                mined = await engine.wait(sent, timeout=30, poll=0.05)
            return sent, mined, engine, first

    sent, mined, engine, first = trio.run(scenario)
    assert engine.replacements >= 1
    assert len(sent.hashes) == engine.replacements + 1
    # Each replacement is at least the sent price raised by the replacement bump.
    assert sent.gas_price >= first * REPLACEMENT_BUMP_PERCENT**engine.replacements // (
        100**engine.replacements
    )
    assert sent.max_fee == sent.priority_fee == sent.gas_price
    assert mined.hash == sent.hashes[-1]  # the pool kept the highest-priced replacement
    stored = node_tx(fresh_anvil, mined.hash)
    assert stored["type"] == "0x0"
    assert parse_quantity(stored["gasPrice"], "gasPrice") == sent.gas_price
    assert mined.effective_gas_price == sent.gas_price


@pytest.mark.chain
def test_the_legacy_price_never_exceeds_the_cap(fresh_anvil: AnvilProcess) -> None:
    """A cap below the node's suggestion is the price; escalation stops at it (no
    replacement at all: the first price is the cap), and the node mines it at the cap."""
    suggested, floor = suggested_price(fresh_anvil), base_fee(fresh_anvil)
    assert suggested > floor + 1, (suggested, floor)  # room for a cap between the two
    cap = (suggested + floor) // 2
    call_sync(fresh_anvil.rpc_url, "evm_setAutomine", [False])

    async def scenario() -> tuple[SentTx, TxEngine]:
        async with JsonRpcClient([fresh_anvil.rpc_url]) as client:
            engine = legacy_engine(client, fee_cap=cap, escalate_after=0.1)
            assert await engine.current_fees() == (cap, cap)
            sent = await engine.send(RECIPIENT, b"", gas=21_000)
            with pytest.raises(TxError, match="not mined"):
                await engine.wait(sent, timeout=1.0, poll=0.05)
            return sent, engine

    sent, engine = trio.run(scenario)
    assert engine.replacements == 0 and len(sent.hashes) == 1
    assert sent.gas_price == cap
    call_sync(fresh_anvil.rpc_url, "evm_mine")
    stored = node_tx(fresh_anvil, sent.hashes[0])
    assert stored["type"] == "0x0" and stored["blockNumber"] is not None
    assert parse_quantity(stored["gasPrice"], "gasPrice") == cap


@pytest.mark.chain
def test_a_replacement_is_capped_not_skipped(fresh_anvil: AnvilProcess) -> None:
    """A cap between the first price and a full bump: the one replacement is at the cap."""
    suggested = suggested_price(fresh_anvil)
    cap = suggested * 110 // 100  # above the first price, below 125 % of it
    call_sync(fresh_anvil.rpc_url, "evm_setAutomine", [False])

    async def scenario() -> tuple[SentTx, TxEngine]:
        async with JsonRpcClient([fresh_anvil.rpc_url]) as client:
            engine = legacy_engine(client, fee_cap=cap, escalate_after=0.2)
            sent = await engine.send(RECIPIENT, b"", gas=21_000)
            assert sent.gas_price == suggested
            with pytest.raises(TxError, match="not mined"):
                await engine.wait(sent, timeout=1.5, poll=0.05)
            return sent, engine

    sent, engine = trio.run(scenario)
    assert engine.replacements == 1 and len(sent.hashes) == 2  # then nothing left to bump
    assert sent.gas_price == cap
    call_sync(fresh_anvil.rpc_url, "evm_mine")
    stored = node_tx(fresh_anvil, sent.hashes[-1])
    assert stored["blockNumber"] is not None
    assert parse_quantity(stored["gasPrice"], "gasPrice") == cap


def test_an_unknown_fee_model_is_refused() -> None:
    async def scenario() -> None:
        async with JsonRpcClient(["http://127.0.0.1:9"]) as client:
            with pytest.raises(ValueError, match="fee_model 'eip2930'"):
                TxEngine(client, SENDER, CHAIN_ID, fee_model="eip2930")  # type: ignore[arg-type]

    trio.run(scenario)


# The pattern parse_quantity had before it used light_clients.hexstr: the replacement must
# accept and refuse exactly the same texts.
_OLD_QUANTITY = re.compile(r"0x[0-9a-fA-F]{1,64}")
HEXISH = st.text(alphabet="0x123456789abcdefABCDEFX_ +-", max_size=70)


@given(st.one_of(HEXISH, HEXISH.map(lambda text: "0x" + text), st.integers(), st.none()))
def test_parse_quantity_accepts_what_it_always_accepted(value: object) -> None:
    if isinstance(value, str) and _OLD_QUANTITY.fullmatch(value):
        assert parse_quantity(value, "q") == int(value, 16)
    else:
        with pytest.raises(MalformedAnswer, match="malformed q"):
            parse_quantity(value, "q")


# --------------------------------------------------------------------------- eth_getLogs windows


Window = tuple[int, int]


class CountingClient(JsonRpcClient):
    """The real client, recording the parameters of every eth_getLogs and
    eth_sendRawTransaction it sends."""

    def __init__(self, urls: Sequence[str]) -> None:
        super().__init__(urls)
        self.get_logs: list[dict[str, Any]] = []
        self.raw_transactions: list[bytes] = []

    async def call(self, method: str, params: Sequence[Any] = ()) -> Any:
        if method == "eth_getLogs":
            self.get_logs.append(dict(params[0]))
        if method == "eth_sendRawTransaction":
            self.raw_transactions.append(parse_data(params[0], "raw transaction"))
        return await super().call(method, params)

    async def call_from(
        self, method: str, params: Sequence[Any] = (), **options: Any
    ) -> tuple[Any, EndpointHealth]:
        # EvmChain.logs asks through call_from (it learns which endpoint answered).
        if method == "eth_getLogs":
            self.get_logs.append(dict(params[0]))
        return await super().call_from(method, params, **options)

    def windows(self) -> list[Window]:
        return [
            (parse_quantity(q["fromBlock"], "from"), parse_quantity(q["toBlock"], "to"))
            for q in self.get_logs
        ]


def deploy_outbox(chain: AnvilProcess) -> bytes:
    """A fresh Outbox of ``DOMAIN``."""
    return deploy(chain, load_artifact("Outbox").bytecode + abi_encode(["uint32"], [DOMAIN]))


def deploy(chain: AnvilProcess, code: bytes) -> bytes:
    """``code`` deployed from an unlocked dev account; the contract's address."""
    receipt = mined(chain.rpc_url, {"from": DEPLOYER, "data": to_hex(code)})
    assert receipt["status"] == "0x1", receipt
    return parse_data(receipt["contractAddress"], "contract address", 20)


def dispatch_call(body: bytes) -> bytes:
    return selector("dispatch(uint32,bytes32,bytes)") + abi_encode(
        ["uint32", "bytes32", "bytes"], [9, b"\x01" * 32, body]
    )


@pytest.mark.chain
def test_a_log_scan_over_the_cap_is_split_and_concatenated_in_order(
    fresh_anvil: AnvilProcess,
) -> None:
    outbox = deploy_outbox(fresh_anvil)
    cap = 500

    async def scenario() -> tuple[list[int], int, list[Window], list[Window], list[Any], list[Any]]:
        async with CountingClient([fresh_anvil.rpc_url]) as client:
            engine = legacy_engine(client)
            blocks = []
            for body in (b"first", b"second", b"third"):
                sent = await engine.send(outbox, dispatch_call(body))
                blocks.append((await engine.wait(sent, timeout=30, poll=0.05)).block_number)
                # 700 empty blocks: the next Dispatch lands in another window
                await client.call("anvil_mine", [hex(700)])
            latest = parse_quantity(await client.call("eth_blockNumber"), "head")
            capped = EvmChain(client, domain=DOMAIN, finality="devnet-instant", max_log_range=cap)
            split = await capped.dispatches(outbox, 0, latest)
            capped_windows = client.windows()
            client.get_logs.clear()
            default = EvmChain(client, domain=DOMAIN, finality="devnet-instant")
            whole = await default.dispatches(outbox, 0, latest)
            return blocks, latest, capped_windows, client.windows(), split, whole

    blocks, latest, capped_windows, default_windows, split, whole = trio.run(scenario)
    assert latest >= 3 * 700  # over the cap several times over
    # The capped scan: ceil(n / cap) requests, consecutive, none over the cap, covering it all.
    assert len(capped_windows) == math.ceil((latest + 1) / cap)
    assert capped_windows[0][0] == 0 and capped_windows[-1][1] == latest
    assert all(end - start + 1 <= cap for start, end in capped_windows)
    assert all(b[0] == a[1] + 1 for a, b in pairwise(capped_windows))
    assert capped_windows == log_ranges(0, latest, cap)
    # Each Dispatch sits in another window, and the results come back in chain order.
    assert len({block // cap for block in blocks}) == 3
    assert [event.message.body for event in split] == [b"first", b"second", b"third"]
    assert [event.block.number for event in split] == blocks
    # The default is unchanged: windows of MAX_LOG_RANGE blocks, and the same events.
    assert default_windows == log_ranges(0, latest, MAX_LOG_RANGE)
    assert len(default_windows) == math.ceil((latest + 1) / MAX_LOG_RANGE) == 2
    assert whole == split


@pytest.mark.parametrize("cap", [0, -1])
def test_a_log_range_cap_below_one_block_is_refused(cap: int) -> None:
    async def scenario() -> None:
        async with JsonRpcClient(["http://127.0.0.1:9"]) as client:
            with pytest.raises(ValueError, match="max_log_range"):
                EvmChain(client, domain=DOMAIN, finality="devnet-instant", max_log_range=cap)

    trio.run(scenario)


@given(
    st.integers(min_value=0, max_value=10**7),
    st.integers(min_value=-5, max_value=10**5),
    st.integers(min_value=1, max_value=5_000),
)
def test_log_ranges_cover_the_range_exactly_in_order(start: int, length: int, span: int) -> None:
    end = start + length - 1
    windows = log_ranges(start, end, span)
    if length <= 0:
        assert windows == []
        return
    assert windows[0][0] == start and windows[-1][1] == end
    assert all(s <= e and e - s + 1 <= span for s, e in windows)
    assert all(b[0] == a[1] + 1 for a, b in pairwise(windows))
    assert len(windows) == math.ceil(length / span)  # as few requests as the cap allows


def test_log_ranges_refuse_an_empty_window() -> None:
    with pytest.raises(ValueError, match="at least one block"):
        log_ranges(0, 10, 0)
