"""What dApps and users do: send messages and token transfers, and ask where they are."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import trio
from eth_abi.abi import encode as abi_encode

from adapters.evm.chain import DISPATCH_TOPIC, selector
from adapters.evm.tx import MinedTx, SentTx, TxEngine
from light_clients.committee import address_of
from relayer.config import Config, ConfigError
from relayer.endpoints import bytes32, open_evm
from relayer.ledger import Ledger, MessageRecord

DISPATCH = selector("dispatch(uint32,bytes32,bytes)")
DELIVERED = selector("delivered(bytes32)")
APPROVE = selector("approve(address,uint256)")
TRANSFER_REMOTE = selector("transferRemote(address,uint256,uint32,bytes32)")
BALANCE_OF = selector("balanceOf(address)")


@dataclass(frozen=True)
class Sent:
    """A dispatched message: its id and nonce, and the transaction that dispatched it."""

    id: bytes
    nonce: int
    origin: int
    destination: int
    tx_hash: bytes
    block_number: int

    def as_json(self) -> dict[str, Any]:
        """For ``--json``."""
        return {
            "id": "0x" + self.id.hex(),
            "nonce": self.nonce,
            "origin": self.origin,
            "destination": self.destination,
            "tx": "0x" + self.tx_hash.hex(),
            "block": self.block_number,
        }


def _dispatched(mined: MinedTx, origin: int, destination: int) -> list[Sent]:
    out = []
    for entry in mined.logs:
        topics = entry.get("topics", [])
        if topics and bytes.fromhex(topics[0][2:]) == DISPATCH_TOPIC:
            nonce = int(entry["data"][2:66], 16)
            out.append(
                Sent(
                    bytes.fromhex(topics[1][2:]),
                    nonce,
                    origin,
                    destination,
                    mined.hash,
                    mined.block_number,
                )
            )
    return out


async def _send_all(engine: TxEngine, calls: Sequence[tuple[bytes, bytes]]) -> list[MinedTx]:
    """Broadcast every call back to back (consecutive nonces), then wait for all receipts."""
    sent: list[SentTx] = []
    for to, data in calls:
        sent.append(await engine.send(to, data))
    return [await engine.wait(s) for s in sent]


async def send_messages(
    config: Config,
    origin: str | int,
    destination: str | int,
    body: bytes,
    *,
    count: int = 1,
    recipient: bytes | None = None,
) -> list[Sent]:
    """Dispatch ``count`` messages with ``body`` from the client key; return their ids."""
    source, target = config.chain(origin), config.chain(destination)
    to = bytes32(recipient if recipient is not None else target.contract("ping"))
    if config.client_key is None:
        raise ConfigError("no [client] key configured: cannot send")
    async with open_evm(source) as evm:
        engine = TxEngine(
            evm.rpc, config.client_key.load(), await evm.chain_id(), escalate_after=30
        )
        data = DISPATCH + abi_encode(["uint32", "bytes32", "bytes"], [target.domain, to, body])
        mined = await _send_all(engine, [(source.contract("outbox"), data)] * count)
    return [s for m in mined for s in _dispatched(m, source.domain, target.domain)]


async def send_tokens(
    config: Config,
    origin: str | int,
    destination: str | int,
    amount: int,
    *,
    recipient: bytes | None = None,
) -> list[Sent]:
    """Bridge ``amount`` tokens: lock the home token (or burn the wrapped one) and dispatch."""
    source, target = config.chain(origin), config.chain(destination)
    if config.client_key is None:
        raise ConfigError("no [client] key configured: cannot send")
    token = source.contracts.get("token") or source.contracts.get("wrapped_token")
    if token is None:
        raise ConfigError(f"chain {source.name!r} has no token configured")
    bridge = source.contract("token_bridge")
    async with open_evm(source) as evm:
        engine = TxEngine(
            evm.rpc, config.client_key.load(), await evm.chain_id(), escalate_after=30
        )
        to = bytes32(recipient if recipient is not None else engine.address)
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
    return [s for m in mined for s in _dispatched(m, source.domain, target.domain)]


async def token_balance(config: Config, chain: str | int, owner: bytes | None = None) -> int:
    """The client's (or ``owner``'s) balance of the chain's home or wrapped token."""
    target = config.chain(chain)
    token = target.contracts.get("token") or target.contracts.get("wrapped_token")
    if token is None:
        raise ConfigError(f"chain {target.name!r} has no token configured")
    if owner is None:
        if config.client_key is None:
            raise ConfigError("no [client] key configured")
        owner = address_of(config.client_key.load())
    async with open_evm(target) as evm:
        result = await evm.call(token, BALANCE_OF + bytes32(owner))
    return int.from_bytes(result, "big")


async def delivered_on_chain(config: Config, records: Sequence[MessageRecord]) -> dict[str, bool]:
    """``delivered(id)`` on each message's destination inbox (the source of truth)."""
    flags: dict[str, bool] = {}
    by_destination: dict[int, list[MessageRecord]] = {}
    for record in records:
        by_destination.setdefault(record.destination, []).append(record)
    for domain, group in by_destination.items():
        try:
            chain = config.chain(domain)
        except ConfigError:
            continue
        if "inbox" not in chain.contracts:
            continue
        async with open_evm(chain) as evm:
            for record in group:
                raw = await evm.call(
                    chain.contract("inbox"), DELIVERED + bytes.fromhex(record.id[2:])
                )
                flags[record.id] = bool(int.from_bytes(raw, "big"))
    return flags


def status_rows(ledger: Ledger, message_id: str | None = None) -> list[MessageRecord]:
    """The ledger's messages (or the one with ``message_id``), by origin and nonce."""
    if message_id is not None:
        record = ledger.get(message_id)
        return [] if record is None else [record]
    rows: list[MessageRecord] = []
    after: tuple[int, int] | None = None
    while True:
        page = ledger.messages(after=after, limit=5_000)
        rows += page
        if len(page) < 5_000:
            return rows
        after = (page[-1].origin, page[-1].nonce)


async def wait_delivered(
    config: Config, ledger: Ledger, ids: Sequence[bytes], timeout: float
) -> bool:
    """Poll the ledger until every id is delivered (True) or ``timeout`` passes (False)."""
    wanted = {"0x" + i.hex() for i in ids}
    with trio.move_on_after(timeout):
        while True:
            done = {
                r.id
                for r in (ledger.get(i) for i in wanted)
                if r is not None and r.status == "delivered"
            }
            if done == wanted:
                return True
            await trio.sleep(0.5)
    return False


__all__ = [
    "Sent",
    "delivered_on_chain",
    "send_messages",
    "send_tokens",
    "status_rows",
    "token_balance",
    "wait_delivered",
]
