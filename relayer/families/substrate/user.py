"""What users do on a Substrate chain: remark messages (signed ``System.remark_with_event``),
send the wrapped asset home, read balances and replay-guard items.

A remark's canonical nonce and id are known once its block is final: :func:`_canonical` scans
its block range with the attesters' own rules
(:func:`~relayer.families.substrate.scan.scan_remarks`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import trio
from eth_abi.abi import encode as abi_encode

from adapters.errors import AdapterError
from adapters.text import ERROR_TEXT_LIMIT, one_line
from light_clients.errors import VerificationError
from light_clients.message import Message, decode_message
from light_clients.substrate.remark import ACTION_UNLOCK, REMARK_PREFIX
from relayer.accounts import bytes32
from relayer.config import ChainConfig, Config, ConfigError, SubstrateSettings
from relayer.families.substrate.calls import (
    GUARD_DELIVERED,
    GuardReads,
    delivered_items,
    proves_storage,
    shared_follower,
)
from relayer.families.substrate.connection import check_genesis, final_header, grandpa_follower
from relayer.families.substrate.payments import configured_rate
from relayer.families.substrate.scan import escrow_routes, scan_remarks
from relayer.ledger import open_ledger
from relayer.user import Sent

if TYPE_CHECKING:
    from substrateinterface import Keypair

    from adapters.substrate.client import Call, SubstrateClient

FINALITY_TIMEOUT = 120.0  # seconds `send` waits for a remark's block to be final


async def send_messages(
    config: Config,
    source: ChainConfig,
    target: ChainConfig,
    *,
    recipient: bytes,
    body: bytes,
    count: int,
    pay_gas: int | None = None,
) -> list[Sent]:
    """``count`` remarks of a message from the client's account (one ``batch_all``), each
    right after its fee transfer with ``pay_gas``."""
    fee = _fee(source, target, pay_gas)
    keypair = client_keypair(config)
    sender = bytes(keypair.public_key)
    messages = [_outgoing(sender, source, target.domain, recipient, body) for _ in range(count)]
    return await _remark(config, source, keypair, messages, fee=fee)


def _fee(source: ChainConfig, target: ChainConfig, pay_gas: int | None) -> int | None:
    """What paying for ``pay_gas`` gas to ``target`` costs on ``source`` (None: not paying);
    ConfigError, one line, if ``source`` prices no delivery there."""
    if pay_gas is None:
        return None
    rate = configured_rate(source, target.domain)
    if rate is None:
        raise ConfigError(
            f"{source.name} prices no delivery to {target.name} (no fee_rates entry for "
            f"{target.domain}): nothing can be paid; --no-pay sends without paying"
        )
    return rate.fee(pay_gas)


def _fee_transfer(settings: SubstrateSettings, fee: int) -> tuple[str, str, dict[str, Any]]:
    """The call paying ``fee`` plancks to the fee account (keep-alive: never reaps the sender)."""
    assert settings.fee_account is not None  # _fee found a rate, so the account is configured
    return (
        "Balances",
        "transfer_keep_alive",
        {"dest": "0x" + settings.fee_account.hex(), "value": fee},
    )


def client_keypair(config: Config) -> Keypair:
    """The client's sr25519 signer (``[client] substrate_uri`` on a devnet, its seed, or its
    Polkadot JS keystore) as the ``Keypair`` the Substrate adapters sign with. A keystore is
    decrypted on every call (scrypt): call it once per command."""
    from relayer.signer import as_keypair, client_substrate_signer  # noqa: PLC0415 (heavy)

    return as_keypair(client_substrate_signer(config))


def _outgoing(
    sender: bytes, source: ChainConfig, destination: int, recipient: bytes, body: bytes
) -> Message:
    """A message as the client remarks it; the nonce is the chain's to assign (0 here)."""
    return Message(
        version=1,
        nonce=0,
        origin=source.domain,
        sender=sender,
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
    keypair: Keypair,
    messages: Sequence[Message],
    *,
    before: Sequence[tuple[str, str, dict[str, Any]]] = (),
    fee: int | None = None,
) -> list[Sent]:
    """Submit the remarks, signed by ``keypair`` (the client's: one ``Utility.batch_all`` when
    there are several, or calls to run first; with ``fee``, each remark right after its own
    transfer of ``fee`` to the fee account, which pays for its delivery), wait for inclusion
    and finality, and return the canonical messages."""
    async with _substrate(source) as sub:
        await check_genesis(sub, source)
        calls: list[Call] = [await sub.compose(m, f, p) for m, f, p in before]
        for message in messages:
            if fee is not None:
                calls.append(await sub.compose(*_fee_transfer(source.settings(), fee)))
            remark = REMARK_PREFIX + message.encode()
            calls.append(await sub.compose("System", "remark_with_event", {"remark": remark}))
        if len(calls) == 1:
            included = await sub.submit_call(keypair, calls[0])
        else:
            batch = await sub.compose("Utility", "batch_all", {"calls": calls})
            included = await sub.submit_call(keypair, batch)
        if not included.success:
            raise AdapterError(f"the extrinsic failed on {source.name}: {included.error}")
        sent = await _canonical(config, sub, source, included.block_number, included.extrinsic_hash)
    return [replace(s, fee=fee) for s in sent]


async def _canonical(
    config: Config,
    sub: SubstrateClient,
    source: ChainConfig,
    block_number: int,
    extrinsic_hash: bytes,
) -> list[Sent]:
    """The canonical messages of one extrinsic, once its block is final: nonces counted from
    the ledger's last message of the origin before that block (or from the chain's start)."""
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


async def return_tokens(
    config: Config,
    source: ChainConfig,
    target: ChainConfig,
    amount: int,
    recipient: bytes,
    *,
    pay_gas: int | None = None,
) -> list[Sent]:
    """Send the wrapped asset home: its transfer to the bridge account and the unlock remark,
    in one ``Utility.batch_all`` (the attesters accept the remark only if the transfer is in it)."""
    fee = _fee(source, target, pay_gas)
    settings = source.settings()
    if settings.asset_id is None or settings.asset_home_token is None:
        raise ConfigError(f"chain {source.name!r} has no wrapped asset configured")
    if target.domain != settings.asset_home_domain:
        raise ConfigError(
            f"the wrapped asset of {source.name} goes home to domain "
            f"{settings.asset_home_domain} only"
        )
    body = abi_encode(
        ["uint8", "bytes32", "uint256", "bytes32"],
        [ACTION_UNLOCK, bytes32(settings.asset_home_token), amount, bytes32(recipient)],
    )
    keypair = client_keypair(config)
    message = _outgoing(
        bytes(keypair.public_key),
        source,
        target.domain,
        bytes32(target.contract("token_bridge")),
        body,
    )
    transfer = (
        "Assets",
        "transfer",
        {"id": settings.asset_id, "target": "0x" + settings.bridge_account.hex(), "amount": amount},
    )
    return await _remark(config, source, keypair, [message], before=[transfer], fee=fee)


async def asset_balance(config: Config, chain: ChainConfig, owner: bytes | None) -> int:
    settings = chain.settings()
    if settings.asset_id is None:
        raise ConfigError(f"chain {chain.name!r} has no wrapped asset configured")
    who = owner if owner is not None else bytes(client_keypair(config).public_key)
    async with _substrate(chain) as sub:
        entry = await sub.query("Assets", "Account", [settings.asset_id, "0x" + who.hex()])
    return int(entry["balance"]) if isinstance(entry, dict) else 0


async def delivered(chain: ChainConfig, messages: Sequence[bytes]) -> list[bool]:
    """Each message's replay-guard item on ``chain`` at the node's best block (it exists once
    delivered or refunded): ``status``'s latest state, never what a terminal status is written
    from (:func:`final_delivered` is)."""
    async with _substrate(chain) as sub:
        return await delivered_items(sub, chain.settings(), [decode_message(m) for m in messages])


async def final_delivered(
    config: Config, chain: ChainConfig, messages: Sequence[bytes]
) -> list[bool]:
    """For each message: delivered on ``chain``, read as the relayer's delivery reads what it
    records (:meth:`SubstrateDelivery._final_items`): at the final head its finality policy
    accepts (GRANDPA-proven with a checkpoint, through the follower ``config`` shares:
    :func:`~relayer.families.substrate.calls.shared_follower`), the guard items proven under
    that head's state root by the delivery's rule,
    :func:`~relayer.families.substrate.calls.proves_storage` (required with a checkpoint).

    Refunded is NOT delivered (False): the delivery records a refunded message ``failed`` (the
    committee sent its tokens back), so what asks here, the unpaid sweep and ``ledger
    rebuild``, leaves it where it is; once attested, the delivery's own guard read finds the
    frozen item and records it refunded. The endpoint's genesis is checked first (T8): a node of
    another chain is refused. AdapterError, one line, for anything the node does wrong (it does
    not answer, serves another chain, offers no finality proof, or no read proof under a
    checkpoint, its proof does not prove), so the unpaid sweep (which catches AdapterError
    only) logs it and goes on; ConfigError only for a bad checkpoint."""
    if not messages:
        return []
    follower = shared_follower(config, chain)
    async with _substrate(chain) as sub:
        try:
            await check_genesis(sub, chain)
            proving = await proves_storage(sub, chain)  # AdapterError as it is
            head = await final_header(sub, chain, follower)
        except (ConfigError, VerificationError) as exc:  # the node's doing, not the config's
            # The node's words (ConfigError, VerificationError quote what it sent): one line.
            text = one_line(str(exc), ERROR_TEXT_LIMIT)
            raise AdapterError(f"{chain.name}: final head: {text}") from None
        states = await GuardReads().items(
            sub, chain.settings(), [decode_message(m) for m in messages], at=head, proven=proving
        )
    return [state == GUARD_DELIVERED for state in states]
