"""What users do on an EVM chain: dispatch messages through the Outbox, bridge tokens through
the TokenBridge, read balances and the Inbox's ``delivered`` flags.

Paying for delivery (docs/design.md, "Paid delivery"): a message pays in its own transaction,
``Outbox.dispatchAndPay`` carrying the quote plus :data:`PAY_MARGIN` (the Paymaster keeps the
quote and refunds the rest in the same call, so the margin only guards against a rate raised
between our quote and the block). A token transfer pays with ``Paymaster.pay`` right after the
transfer is mined, for the id it dispatched (the TokenBridge has no paying entry point yet).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from eth_abi.abi import encode as abi_encode

from adapters.evm.chain import DISPATCH_TOPIC, EvmChain, dispatch_message, selector
from adapters.evm.tx import FeeModel, MinedTx, SentTx, TxEngine
from relayer.accounts import bytes32
from relayer.config import ChainConfig, Config, ConfigError
from relayer.families.evm.connection import open_evm
from relayer.families.evm.delivery import is_delivered_call
from relayer.families.evm.payments import rates_at
from relayer.signer import Signer, evm_signer
from relayer.user import Sent

DISPATCH = selector("dispatch(uint32,bytes32,bytes)")
DISPATCH_AND_PAY = selector("dispatchAndPay(uint32,bytes32,bytes,uint256,address)")
OUTBOX_PAYMASTER = selector("paymaster()")
APPROVE = selector("approve(address,uint256)")
TRANSFER_REMOTE = selector("transferRemote(address,uint256,uint32,bytes32)")
TRANSFER_REMOTE_AND_PAY = selector("transferRemoteAndPay(address,uint256,uint32,bytes32,uint256)")
BALANCE_OF = selector("balanceOf(address)")


def client_signer(config: Config) -> Signer:
    """The signer of the ``[client]`` key (secp256k1, :func:`relayer.signer.evm_signer`);
    ConfigError if none is configured or it does not load."""
    if config.client_key is None:
        raise ConfigError("no [client] key configured: cannot send")
    return evm_signer(config.client_key)


def client_address(config: Config) -> bytes:
    """The client's 20-byte address (a default recipient: ConfigError saying to give one)."""
    if config.client_key is None:
        raise ConfigError("give --recipient (no [client] key configured)")
    return client_signer(config).address


def _dispatched(
    mined: MinedTx, outbox: bytes, origin: int, destination: int, fee: int | None = None
) -> list[Sent]:
    """The messages ``mined`` dispatched: the ``Dispatch`` events of the outbox itself (any
    contract the transaction calls could emit a look-alike), each nonce read from its message
    (:func:`adapters.evm.chain.dispatch_message`)."""
    return [
        Sent(
            entry.topics[1],
            int.from_bytes(dispatch_message(entry.data)[1:5], "big"),  # the header's nonce
            origin,
            destination,
            mined.hash,
            mined.block_number,
            fee,
        )
        for entry in mined.logs
        if entry.address == outbox and len(entry.topics) >= 2 and entry.topics[0] == DISPATCH_TOPIC
    ]


PAY_MARGIN = 4
"""A paying transaction carries the quote plus a quarter (``quote // PAY_MARGIN``); the
Paymaster refunds all it does not keep in the same call."""


async def _send_all(
    engine: TxEngine, calls: Sequence[tuple[bytes, bytes]], value: int = 0
) -> list[MinedTx]:
    """Broadcast every call back to back (consecutive nonces), each carrying ``value`` wei,
    then wait for all receipts."""
    sent: list[SentTx] = []
    for to, data in calls:
        sent.append(await engine.send(to, data, value=value))
    return [await engine.wait(s) for s in sent]


async def delivery_fee(evm: EvmChain, source: ChainConfig, target: ChainConfig, gas: int) -> int:
    """The Paymaster's price on ``source`` now for ``gas`` on ``target`` (ConfigError, one
    line, if ``source`` has no paymaster, it prices no delivery to ``target``, or the Outbox
    pays another Paymaster than the config names: the ether would go where the relayer never
    looks, and the message would wait unpaid after paying)."""
    paymaster = source.contract("paymaster")
    (answer,) = await evm.call_many(source.contract("outbox"), [OUTBOX_PAYMASTER], "latest")
    if len(answer) != 32 or answer[12:] != paymaster[-20:]:
        raise ConfigError(
            f"the outbox of {source.name} pays the paymaster 0x{answer[-20:].hex()}, not the "
            f"configured 0x{paymaster[-20:].hex()}: not paying (check the config); --no-pay "
            "sends without paying"
        )
    rate = (await rates_at(evm, paymaster, [target.domain], "latest"))[target.domain]
    if rate is None:
        raise ConfigError(
            f"the paymaster of {source.name} prices no delivery to {target.name} (no gas rate "
            "set): nothing can be paid; --no-pay sends without paying"
        )
    return rate.fee(gas)


async def send_messages(
    config: Config,
    source: ChainConfig,
    target: ChainConfig,
    *,
    recipient: bytes,
    body: bytes,
    count: int,
    pay_gas: int | None = None,
    fee_model: FeeModel = "eip1559",
) -> list[Sent]:
    """``count`` × ``Outbox.dispatch(target, recipient, body)`` from the client key; with
    ``pay_gas``, ``Outbox.dispatchAndPay`` paying the quote for that much destination gas."""
    signer = client_signer(config)
    outbox = source.contract("outbox")
    async with open_evm(source) as evm:
        engine = TxEngine(
            evm.rpc, signer, await evm.chain_id(), escalate_after=30, fee_model=fee_model
        )
        args = [target.domain, bytes32(recipient), body]
        if pay_gas is None:
            fee = None
            data = DISPATCH + abi_encode(["uint32", "bytes32", "bytes"], args)
            mined = await _send_all(engine, [(outbox, data)] * count)
        else:
            fee = await delivery_fee(evm, source, target, pay_gas)
            data = DISPATCH_AND_PAY + abi_encode(
                ["uint32", "bytes32", "bytes", "uint256", "address"],
                [*args, pay_gas, signer.address],
            )
            mined = await _send_all(engine, [(outbox, data)] * count, fee + fee // PAY_MARGIN)
    return [s for m in mined for s in _dispatched(m, outbox, source.domain, target.domain, fee)]


async def send_tokens(
    config: Config,
    source: ChainConfig,
    target: ChainConfig,
    *,
    amount: int,
    recipient: bytes,
    pay_gas: int | None = None,
    fee_model: FeeModel = "eip1559",
) -> list[Sent]:
    """Approve the TokenBridge and ``transferRemote``: it locks the home token (or burns the
    wrapped one) and dispatches the transfer to ``recipient``; with ``pay_gas``,
    ``transferRemoteAndPay`` instead, which pays the Paymaster for that much destination gas in
    the same transaction (the quote plus :data:`PAY_MARGIN`, the change refunded). Every address
    (and the quote) is looked up before the first transaction: a config missing one must not
    fail after tokens moved."""
    signer = client_signer(config)
    token = source.contracts.get("token") or source.contracts.get("wrapped_token")
    if token is None:
        raise ConfigError(f"chain {source.name!r} has no token configured")
    bridge = source.contract("token_bridge")
    outbox = source.contract("outbox")
    async with open_evm(source) as evm:
        engine = TxEngine(
            evm.rpc, signer, await evm.chain_id(), escalate_after=30, fee_model=fee_model
        )
        to = bytes32(recipient)
        fee = None if pay_gas is None else await delivery_fee(evm, source, target, pay_gas)
        approve = (token, APPROVE + abi_encode(["address", "uint256"], [bridge, amount]))
        transfer = [token, amount, target.domain, to]
        if pay_gas is None or fee is None:
            types = ["address", "uint256", "uint32", "bytes32"]
            mined = await _send_all(
                engine, [approve, (bridge, TRANSFER_REMOTE + abi_encode(types, transfer))]
            )
        else:
            types = ["address", "uint256", "uint32", "bytes32", "uint256"]
            paid = (bridge, TRANSFER_REMOTE_AND_PAY + abi_encode(types, [*transfer, pay_gas]))
            mined = await _send_all(engine, [approve])
            mined += await _send_all(engine, [paid], fee + fee // PAY_MARGIN)
        sent = [s for m in mined for s in _dispatched(m, outbox, source.domain, target.domain)]
        if fee is not None:
            sent = [replace(s, fee=fee) for s in sent]
    return sent


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
(often at 100 to 1,000 calls), and ``status`` may ask about the whole ledger. Keep it small
for our own sake too: a batch over 1 MiB (~25,000 calls) could be refused as too dense
(:data:`adapters.rpc.MIN_BYTES_PER_TOKEN`)."""


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
