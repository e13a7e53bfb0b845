"""What dApps and users do: send messages and token transfers, and ask where they are.

From an EVM chain a message is an ``Outbox.dispatch`` (a token transfer a
``TokenBridge.transferRemote``); from a Substrate chain it is a signed
``System.remark_with_event(b"PSRL" ‖ message)`` (a token return a ``Utility.batch_all`` of the
wrapped asset's transfer to the bridge account and that remark), whose canonical nonce and id are
known once its block is final (:func:`relayer.substrate_route.scan_remarks`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio
from eth_abi.abi import encode as abi_encode

from adapters.errors import AdapterError
from adapters.evm.chain import DISPATCH_TOPIC, selector
from adapters.evm.tx import MinedTx, SentTx, TxEngine
from light_clients.committee import address_of
from light_clients.message import Message, decode_message
from light_clients.substrate.remark import ACTION_UNLOCK, REMARK_PREFIX
from relayer.config import ChainConfig, Config, ConfigError
from relayer.endpoints import bytes32, open_evm
from relayer.ledger import Ledger, MessageRecord, open_ledger

if TYPE_CHECKING:
    from substrateinterface import Keypair

    from adapters.substrate.client import Call, SubstrateClient

FINALITY_TIMEOUT = 120.0  # seconds `send` waits for a Substrate remark's block to be final

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


def finality_text(chain: ChainConfig) -> str:
    """The chain's finality policy, saying when a Substrate head is the node's word only."""
    text = str(chain.finality)
    if chain.substrate is not None and text == "finalized":
        text += " (GRANDPA-proven)" if chain.substrate.grandpa else " (node's word: no checkpoint)"
    return text


def policy_text(chain: ChainConfig) -> str:
    """What a message from ``chain`` rests on, in one phrase: ``finalized, rpc quorum 2 of 3``.

    Shown by ``send`` and ``status`` so an operator sees which chains run a devnet policy or
    trust a single endpoint (issue #8, point 3). Endpoint URLs never appear: they carry keys.
    """
    return f"{finality_text(chain)}, {chain.rpc_policy}"


def policy_json(chain: ChainConfig) -> dict[str, Any]:
    """:func:`policy_text` for ``--json``."""
    return {
        "chain": chain.name,
        "domain": chain.domain,
        "finality": finality_text(chain),
        "rpc_quorum": chain.rpc_quorum,
        "rpc_endpoints": len(chain.rpc),
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
    if recipient is None and target.kind == "substrate":
        recipient = bytes(client_keypair(config).public_key)  # a Substrate account: yourself
    to = bytes32(recipient if recipient is not None else target.contract("ping"))
    if source.kind == "substrate":
        messages = [_outgoing(config, source, target.domain, to, body) for _ in range(count)]
        return await _remark(config, source, messages)
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
    if source.kind == "substrate":
        return await _return_tokens(config, source, target, amount, recipient)
    if recipient is None and target.kind == "substrate":
        recipient = bytes(client_keypair(config).public_key)
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
    if target.kind == "substrate":
        return await _asset_balance(config, target, owner)
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


async def delivered_on_chain(
    config: Config,
    records: Sequence[MessageRecord],
    unreadable: dict[int, str] | None = None,
) -> dict[str, bool]:
    """``delivered(id)`` on each message's destination inbox (the source of truth).

    With ``unreadable`` given, a destination that cannot be asked — its nodes are down, or one
    of its endpoints serves another chain (a :class:`ConfigError` from :func:`open_evm`) — gets
    no flags and its one-line reason under its domain there, and the other destinations are
    still asked: one bad chain must not hide the state of every other (``status``). Without
    it, the first such error is raised.
    """
    flags: dict[str, bool] = {}
    by_destination: dict[int, list[MessageRecord]] = {}
    for record in records:
        by_destination.setdefault(record.destination, []).append(record)
    for domain, group in by_destination.items():
        try:
            chain = config.chain(domain)
        except ConfigError:
            continue
        try:
            flags.update(await _delivered_on(chain, group))
        except (ConfigError, AdapterError) as exc:
            if unreadable is None:
                raise
            unreadable[domain] = " ".join(str(exc).split())  # one line, whatever the node said
    return flags


async def _delivered_on(chain: ChainConfig, records: Sequence[MessageRecord]) -> dict[str, bool]:
    """Each message's delivered flag on its destination ``chain`` (none without an inbox)."""
    if chain.kind == "substrate":
        return await _delivered_on_substrate(chain, records)
    if "inbox" not in chain.contracts:
        return {}
    flags: dict[str, bool] = {}
    async with open_evm(chain) as evm:
        for record in records:
            raw = await evm.call(chain.contract("inbox"), DELIVERED + bytes.fromhex(record.id[2:]))
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


# --- Substrate ---------------------------------------------------------------------------


def client_keypair(config: Config) -> Keypair:
    """The client's sr25519 keypair: ``[client] substrate_uri`` (devnet) or its seed."""
    from substrateinterface import Keypair  # noqa: PLC0415 (heavy import, only when needed)

    from adapters.substrate.client import keypair_from_seed  # noqa: PLC0415

    if config.client_substrate_uri is not None:
        return Keypair.create_from_uri(config.client_substrate_uri)
    if config.client_substrate_key is None:
        raise ConfigError("no [client] substrate_key configured: cannot sign on Substrate")
    return keypair_from_seed(config.client_substrate_key.load())


def _outgoing(
    config: Config, source: ChainConfig, destination: int, recipient: bytes, body: bytes
) -> Message:
    """A message as the client remarks it; the nonce is the chain's to assign (0 here)."""
    return Message(
        version=1,
        nonce=0,
        origin=source.domain,
        sender=bytes(client_keypair(config).public_key),
        destination=destination,
        recipient=recipient,
        body=body,
    )


def _substrate(chain: ChainConfig) -> SubstrateClient:
    from adapters.substrate.client import SubstrateClient  # noqa: PLC0415 (heavy import)

    return SubstrateClient(chain.rpc[0])


async def _remark(
    config: Config,
    source: ChainConfig,
    messages: Sequence[Message],
    *,
    before: Sequence[tuple[str, str, dict[str, Any]]] = (),
) -> list[Sent]:
    """Submit the remarks (one ``Utility.batch_all`` when there are several, or calls to run
    first), wait for inclusion and finality, and return the canonical messages."""
    from relayer.substrate_route import check_genesis  # noqa: PLC0415

    keypair = client_keypair(config)
    async with _substrate(source) as sub:
        await check_genesis(sub, source)
        calls: list[Call] = [await sub.compose(m, f, p) for m, f, p in before]
        for message in messages:
            remark = REMARK_PREFIX + message.encode()
            calls.append(await sub.compose("System", "remark_with_event", {"remark": remark}))
        if len(calls) == 1:
            included = await sub.submit_call(keypair, calls[0])
        else:
            batch = await sub.compose("Utility", "batch_all", {"calls": calls})
            included = await sub.submit_call(keypair, batch)
        if not included.success:
            raise AdapterError(f"the extrinsic failed on {source.name}: {included.error}")
        return await _canonical(config, sub, source, included.block_number, included.extrinsic_hash)


async def _canonical(
    config: Config,
    sub: SubstrateClient,
    source: ChainConfig,
    block_number: int,
    extrinsic_hash: bytes,
) -> list[Sent]:
    """The canonical messages of one extrinsic, once its block is final: nonces counted from
    the ledger's last message of the origin before that block (or from the chain's start)."""
    from relayer.substrate_route import (  # noqa: PLC0415
        escrow_routes,
        final_header,
        grandpa_follower,
        scan_remarks,
    )

    grandpa = grandpa_follower(source)
    with trio.move_on_after(FINALITY_TIMEOUT) as waited:
        while (await final_header(sub, source, grandpa)).number < block_number:
            await trio.sleep(0.5)
    if waited.cancelled_caught:
        raise AdapterError(
            f"block {block_number} of {source.name} not final after {FINALITY_TIMEOUT:g} s"
        )
    with open_ledger(config.ledger) as ledger:
        last = ledger.last_before_block(source.domain, block_number)
    first = source.start_block if last is None else last.source_block_number + 1
    next_nonce = 0 if last is None else last.nonce + 1
    scan = await scan_remarks(
        sub,
        source,
        escrow_routes(config, source),
        range(first, block_number + 1),
        next_nonce,
        grandpa=grandpa,
    )
    sent = [
        Sent(
            m.id,
            m.message.nonce,
            m.message.origin,
            m.message.destination,
            extrinsic_hash,
            block_number,
        )
        for m in scan.messages
        if m.extrinsic_hash == extrinsic_hash
    ]
    if not sent:
        reasons = "; ".join(
            reason for seen, reason in scan.skipped if seen.extrinsic_hash == extrinsic_hash
        )
        raise AdapterError(f"the remark is not a valid message: {reasons or 'not found'}")
    return sent


async def _return_tokens(
    config: Config, source: ChainConfig, target: ChainConfig, amount: int, recipient: bytes | None
) -> list[Sent]:
    """Send the wrapped asset home: its transfer to the bridge account and the unlock remark,
    in one ``Utility.batch_all`` (the attesters accept the remark only if the transfer is in it)."""
    settings = source.settings()
    if settings.asset_id is None or settings.asset_home_token is None:
        raise ConfigError(f"chain {source.name!r} has no wrapped asset configured")
    if target.domain != settings.asset_home_domain:
        raise ConfigError(
            f"the wrapped asset of {source.name} goes home to domain "
            f"{settings.asset_home_domain} only"
        )
    if recipient is None:
        if config.client_key is None:
            raise ConfigError("give --recipient (no [client] key configured)")
        recipient = address_of(config.client_key.load())
    body = abi_encode(
        ["uint8", "bytes32", "uint256", "bytes32"],
        [ACTION_UNLOCK, bytes32(settings.asset_home_token), amount, bytes32(recipient)],
    )
    message = _outgoing(
        config, source, target.domain, bytes32(target.contract("token_bridge")), body
    )
    transfer = (
        "Assets",
        "transfer",
        {"id": settings.asset_id, "target": "0x" + settings.bridge_account.hex(), "amount": amount},
    )
    return await _remark(config, source, [message], before=[transfer])


async def _asset_balance(config: Config, chain: ChainConfig, owner: bytes | None) -> int:
    settings = chain.settings()
    if settings.asset_id is None:
        raise ConfigError(f"chain {chain.name!r} has no wrapped asset configured")
    who = owner if owner is not None else bytes(client_keypair(config).public_key)
    async with _substrate(chain) as sub:
        entry = await sub.query("Assets", "Account", [settings.asset_id, "0x" + who.hex()])
    return int(entry["balance"]) if isinstance(entry, dict) else 0


async def _delivered_on_substrate(
    chain: ChainConfig, records: Sequence[MessageRecord]
) -> dict[str, bool]:
    """Each message's replay-guard item on ``chain`` (it exists once delivered)."""
    from relayer.substrate_route import delivered_items  # noqa: PLC0415

    async with _substrate(chain) as sub:
        flags = await delivered_items(
            sub, chain.settings(), [decode_message(r.message) for r in records]
        )
    return {record.id: flag for record, flag in zip(records, flags, strict=True)}


__all__ = [
    "Sent",
    "client_keypair",
    "delivered_on_chain",
    "send_messages",
    "send_tokens",
    "status_rows",
    "token_balance",
    "wait_delivered",
]
