"""What users do on an EVM chain: dispatch messages through the Outbox, bridge tokens through
the TokenBridge, read balances and the Inbox's ``delivered`` flags."""

from __future__ import annotations

from collections.abc import Sequence

from eth_abi.abi import encode as abi_encode

from adapters.evm.chain import DISPATCH_TOPIC, selector
from adapters.evm.tx import FeeModel, MinedTx, SentTx, TxEngine
from light_clients.committee import address_of
from relayer.accounts import bytes32
from relayer.config import ChainConfig, Config, ConfigError
from relayer.families.evm.connection import open_evm
from relayer.families.evm.delivery import is_delivered_call
from relayer.user import Sent

DISPATCH = selector("dispatch(uint32,bytes32,bytes)")
APPROVE = selector("approve(address,uint256)")
TRANSFER_REMOTE = selector("transferRemote(address,uint256,uint32,bytes32)")
BALANCE_OF = selector("balanceOf(address)")


def client_key(config: Config) -> bytes:
    """The ``[client]`` key (secp256k1); ConfigError if none is configured."""
    if config.client_key is None:
        raise ConfigError("no [client] key configured: cannot send")
    return config.client_key.load()


def client_address(config: Config) -> bytes:
    """The client's 20-byte address (a default recipient: ConfigError saying to give one)."""
    if config.client_key is None:
        raise ConfigError("give --recipient (no [client] key configured)")
    return address_of(config.client_key.load())


def _dispatched(mined: MinedTx, outbox: bytes, origin: int, destination: int) -> list[Sent]:
    """The messages ``mined`` dispatched: the ``Dispatch`` events of the outbox itself (any
    contract the transaction calls could emit a look-alike)."""
    return [
        Sent(
            entry.topics[1],
            int.from_bytes(entry.data[:32], "big"),  # the first word of Dispatch's data
            origin,
            destination,
            mined.hash,
            mined.block_number,
        )
        for entry in mined.logs
        if entry.address == outbox
        and len(entry.topics) >= 2
        and entry.topics[0] == DISPATCH_TOPIC
        and len(entry.data) >= 32
    ]


async def _send_all(engine: TxEngine, calls: Sequence[tuple[bytes, bytes]]) -> list[MinedTx]:
    """Broadcast every call back to back (consecutive nonces), then wait for all receipts."""
    sent: list[SentTx] = []
    for to, data in calls:
        sent.append(await engine.send(to, data))
    return [await engine.wait(s) for s in sent]


async def send_messages(
    config: Config,
    source: ChainConfig,
    target: ChainConfig,
    *,
    recipient: bytes,
    body: bytes,
    count: int,
    fee_model: FeeModel = "eip1559",
) -> list[Sent]:
    """``count`` × ``Outbox.dispatch(target, recipient, body)`` from the client key."""
    key = client_key(config)
    outbox = source.contract("outbox")
    async with open_evm(source) as evm:
        engine = TxEngine(
            evm.rpc, key, await evm.chain_id(), escalate_after=30, fee_model=fee_model
        )
        data = DISPATCH + abi_encode(
            ["uint32", "bytes32", "bytes"], [target.domain, bytes32(recipient), body]
        )
        mined = await _send_all(engine, [(outbox, data)] * count)
    return [s for m in mined for s in _dispatched(m, outbox, source.domain, target.domain)]


async def send_tokens(
    config: Config,
    source: ChainConfig,
    target: ChainConfig,
    *,
    amount: int,
    recipient: bytes,
    fee_model: FeeModel = "eip1559",
) -> list[Sent]:
    """Approve the TokenBridge and ``transferRemote``: it locks the home token (or burns the
    wrapped one) and dispatches the transfer to ``recipient``. Every address is looked up
    before the first transaction: a config missing one must not fail after tokens moved."""
    key = client_key(config)
    token = source.contracts.get("token") or source.contracts.get("wrapped_token")
    if token is None:
        raise ConfigError(f"chain {source.name!r} has no token configured")
    bridge = source.contract("token_bridge")
    outbox = source.contract("outbox")
    async with open_evm(source) as evm:
        engine = TxEngine(
            evm.rpc, key, await evm.chain_id(), escalate_after=30, fee_model=fee_model
        )
        to = bytes32(recipient)
        calls = [(token, APPROVE + abi_encode(["address", "uint256"], [bridge, amount]))]
        calls.append(
            (
                bridge,
                TRANSFER_REMOTE
                + abi_encode(
                    ["address", "uint256", "uint32", "bytes32"], [token, amount, target.domain, to]
                ),
            )
        )
        mined = await _send_all(engine, calls)
    return [s for m in mined for s in _dispatched(m, outbox, source.domain, target.domain)]


async def token_balance(config: Config, chain: ChainConfig, owner: bytes | None) -> int:
    """The client's (or ``owner``'s) balance of the chain's home or wrapped token."""
    token = chain.contracts.get("token") or chain.contracts.get("wrapped_token")
    if token is None:
        raise ConfigError(f"chain {chain.name!r} has no token configured")
    who = owner if owner is not None else client_address(config)
    async with open_evm(chain) as evm:
        result = await evm.call(token, BALANCE_OF + bytes32(who))
    return int.from_bytes(result, "big")


STATUS_BATCH = 100
"""``eth_call`` per JSON-RPC batch when ``status`` reads delivered flags: providers cap batches
(often at 100 to 1,000 calls), and ``status`` may ask about the whole ledger."""


async def delivered(chain: ChainConfig, messages: Sequence[bytes]) -> list[bool]:
    """``isDelivered(origin, nonce)`` of the Inbox at the latest block (the replay bit under
    the origin's outbox it trusts now), for each raw message, in batches of
    :data:`STATUS_BATCH` calls (ConfigError without an Inbox)."""
    inbox = chain.contract("inbox")
    flags: list[bytes] = []
    async with open_evm(chain) as evm:
        for start in range(0, len(messages), STATUS_BATCH):
            part = messages[start : start + STATUS_BATCH]
            flags += await evm.call_many(inbox, [is_delivered_call(m) for m in part])
    return [bool(int.from_bytes(flag, "big")) for flag in flags]
