"""The load generator: the messages each leg sends, made before its clock starts.

EVM: pre-signed ``Outbox.dispatch`` transactions from the client key with consecutive nonces
and a fixed gas limit, broadcast in JSON-RPC batches of :data:`SEND_BATCH` (a burst of 2,000
lands in 2-4 alpha blocks: sending speed is not what is measured) or in paced chunks. Asset
Hub: the client's ``PSRL`` remarks as ``passerelle send`` makes them (one
``remark_with_event`` per message, wrapped in one ``Utility.batch_all`` for a burst).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_utils.address import to_checksum_address

from adapters.evm.chain import selector
from adapters.substrate.client import SubstrateClient
from benchmarks.bench_relay.chains import EvmRpc
from light_clients.hexstr import to_hex
from light_clients.message import Message
from light_clients.substrate.remark import REMARK_PREFIX
from relayer.config import ChainConfig, Config

BODY = b"bench %06d"  # 12-byte bodies: the message is 89 bytes
HUB_BODY = b"hub %06d"
DISPATCH = selector("dispatch(uint32,bytes32,bytes)")
DISPATCH_GAS = 100_000  # a dispatch uses 50-71k; a fixed limit lets us pre-sign in bulk
DISPATCH_MAX_FEE = 50 * 10**9
DISPATCH_TIP = 10**9
SEND_BATCH = 200  # raw transactions per JSON-RPC batch request


def sign_dispatches(
    config: Config,
    alpha: ChainConfig,
    rpc: EvmRpc,
    count: int,
    first: int,
    *,
    destination: int,
    recipient: bytes,
) -> list[str]:
    """Pre-signed raw dispatch transactions with consecutive nonces, from the client key, to
    ``recipient`` (32 bytes: an EVM address left-padded, or a Substrate account) on
    ``destination``; bodies :data:`BODY` numbered from ``first`` (each body is unique)."""
    assert config.client_key is not None, "the devnet config has a [client] key"
    account = Account.from_key(config.client_key.load())
    nonce = int(rpc.call("eth_getTransactionCount", [account.address, "pending"]), 16)
    outbox = to_checksum_address(alpha.contract("outbox"))
    raw = []
    for k in range(count):
        data = DISPATCH + abi_encode(
            ["uint32", "bytes32", "bytes"], [destination, recipient, BODY % (first + k)]
        )
        signed = account.sign_transaction(
            {
                "type": 2,
                "chainId": alpha.chain_id,
                "nonce": nonce + k,
                "to": outbox,
                "data": to_hex(data),
                "value": 0,
                "gas": DISPATCH_GAS,
                "maxFeePerGas": DISPATCH_MAX_FEE,
                "maxPriorityFeePerGas": DISPATCH_TIP,
            }
        )
        raw.append(to_hex(signed.raw_transaction))
    return raw


def chunks(raw: list[str], size: int) -> list[list[str]]:
    """``raw`` in pieces of ``size``: one JSON-RPC batch (or one paced send) each."""
    return [raw[start : start + size] for start in range(0, len(raw), size)]


def send_raw(rpc: EvmRpc, txs: list[str]) -> None:
    """Broadcast signed transactions in one JSON-RPC batch."""
    rpc.batch([("eth_sendRawTransaction", [tx]) for tx in txs])


def broadcast(rpc: EvmRpc, raw: list[str], *, pace: int, interval: float, started: float) -> None:
    """All of ``raw`` at once (``pace`` 0), or ``pace`` transactions every ``interval`` seconds
    from ``started`` (``time.monotonic()``)."""
    for k, chunk in enumerate(chunks(raw, pace or SEND_BATCH)):
        if pace:
            time.sleep(max(0.0, started + k * interval - time.monotonic()))
        send_raw(rpc, chunk)


def hub_messages(
    hub: ChainConfig, alpha: ChainConfig, sender: bytes, first_nonce: int, count: int, first: int
) -> list[Message]:
    """The messages Asset Hub → alpha the client's remarks will carry, to alpha's Ping, with
    canonical nonces from ``first_nonce`` and bodies :data:`HUB_BODY` numbered from ``first``."""
    recipient = alpha.contract("ping").rjust(32, b"\0")
    return [
        Message(
            version=1,
            nonce=first_nonce + k,
            origin=hub.domain,
            sender=sender,
            destination=alpha.domain,
            recipient=recipient,
            body=HUB_BODY % (first + k),
        )
        for k in range(count)
    ]


async def compose_remarks(
    sub: SubstrateClient, messages: list[Message], *, one_batch: bool
) -> list[Any]:
    """The calls that send ``messages``: one ``remark_with_event`` each, or all of them in one
    ``batch_all``. The remark's nonce field is 0 (it is ignored: the canonical nonce is the
    remark's position among the origin's accepted remarks)."""
    calls = [
        await sub.compose(
            "System", "remark_with_event", {"remark": REMARK_PREFIX + replace(m, nonce=0).encode()}
        )
        for m in messages
    ]
    if one_batch:
        calls = [await sub.compose("Utility", "batch_all", {"calls": calls})]
    return calls
