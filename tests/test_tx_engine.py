"""The transaction engine on a real anvil: nonces are never burned, stuck transactions escalate."""

from __future__ import annotations

import pytest
import trio

from adapters.evm.tx import TxEngine, TxError
from adapters.jsonrpc import call_sync
from adapters.rpc import JsonRpcClient
from devnet.anvil import DEV_ADDRESSES, DEV_PRIVATE_KEYS, AnvilProcess
from light_clients.hexstr import parse_data
from relayer.signer import LocalSigner

pytestmark = pytest.mark.chain

SENDER = LocalSigner(parse_data(DEV_PRIVATE_KEYS[5], "dev key"))
RECIPIENT = parse_data(DEV_ADDRESSES[6], "dev address")
CHAIN_ID = 31337


def rpc(chain: AnvilProcess, method: str, params: list[object]) -> object:
    return call_sync(chain.rpc_url, method, params)


def test_failed_broadcast_does_not_burn_a_nonce(fresh_anvil: AnvilProcess) -> None:
    async def scenario() -> None:
        async with JsonRpcClient([fresh_anvil.rpc_url]) as client:
            engine = TxEngine(client, SENDER, CHAIN_ID)
            start = await engine.sync_nonce()
            # Below intrinsic gas: the node refuses the broadcast (not a revert, not a timeout).
            refusal = rf"^broadcast of nonce {start} failed: .*intrinsic gas too low"
            with pytest.raises(TxError, match=refusal) as refused:
                await engine.send(RECIPIENT, b"", gas=1_000)
            assert type(refused.value) is TxError
            assert engine.broadcast_errors == 1
            sent = await engine.send(RECIPIENT, b"", gas=21_000)
            assert sent.nonce == start
            mined = await engine.wait(sent, timeout=30)
            assert mined.nonce == start

    trio.run(scenario)


def test_fee_cap_below_base_fee_is_refused_without_burning(fresh_anvil: AnvilProcess) -> None:
    async def scenario() -> None:
        async with JsonRpcClient([fresh_anvil.rpc_url]) as client:
            capped = TxEngine(client, SENDER, CHAIN_ID, fee_cap=1)
            start = await capped.sync_nonce()
            refusal = rf"^broadcast of nonce {start} failed: .*max fee per gas less than block base"
            with pytest.raises(TxError, match=refusal) as refused:
                await capped.send(RECIPIENT, b"", gas=21_000)
            assert type(refused.value) is TxError
            assert await capped.sync_nonce() == start

    trio.run(scenario)


def test_stuck_transaction_is_replaced_with_higher_fees(fresh_anvil: AnvilProcess) -> None:
    rpc(fresh_anvil, "evm_setAutomine", [False])

    async def scenario() -> None:
        async with JsonRpcClient([fresh_anvil.rpc_url]) as client:
            engine = TxEngine(client, SENDER, CHAIN_ID, escalate_after=0.3)
            sent = await engine.send(RECIPIENT, b"", gas=21_000)
            first_fee = sent.max_fee
            async with trio.open_nursery() as nursery:

                async def mine_later() -> None:
                    await trio.sleep(1.5)
                    rpc(fresh_anvil, "evm_mine", [])

                nursery.start_soon(mine_later)
                mined = await engine.wait(sent, timeout=30, poll=0.1)
            assert engine.replacements >= 1
            assert len(sent.hashes) == engine.replacements + 1
            assert sent.max_fee > first_fee
            assert mined.hash == sent.hashes[-1]  # the pool kept the highest-fee replacement
            assert mined.nonce == sent.nonce

    trio.run(scenario)


def test_escalation_stops_at_the_fee_cap(fresh_anvil: AnvilProcess) -> None:
    rpc(fresh_anvil, "evm_setAutomine", [False])

    async def scenario() -> None:
        async with JsonRpcClient([fresh_anvil.rpc_url]) as client:
            probe = TxEngine(client, SENDER, CHAIN_ID)
            max_fee, _ = await probe.current_fees()
            engine = TxEngine(client, SENDER, CHAIN_ID, escalate_after=0.2, fee_cap=max_fee)
            sent = await engine.send(RECIPIENT, b"", gas=21_000)
            with pytest.raises(TxError, match="not mined"):
                await engine.wait(sent, timeout=1.5, poll=0.1)
            assert engine.replacements == 0
            assert sent.max_fee <= max_fee

    trio.run(scenario)
