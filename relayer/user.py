"""What dApps and users do: send messages and token transfers, and ask where they are.

Chain-neutral: each chain's family does the sending its way (an ``Outbox.dispatch`` on an EVM
chain, a signed remark on a Substrate chain: :meth:`relayer.family.ChainFamily.send_messages`)
and says what its destination shows delivered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import trio

from adapters.errors import AdapterError
from relayer.accounts import bytes32
from relayer.config import ChainConfig, Config, ConfigError, takes_payment
from relayer.family import family_of
from relayer.ledger import Ledger, MessageRecord
from relayer.payments import charged_gas, current_rate


@dataclass(frozen=True)
class Sent:
    """A dispatched message: its id and nonce, and the transaction that dispatched it."""

    id: bytes
    nonce: int
    origin: int
    destination: int
    tx_hash: bytes
    block_number: int
    fee: int | None = None
    """What was paid for its delivery (the quote, in the origin's smallest unit); None: unpaid."""

    def as_json(self) -> dict[str, Any]:
        """For ``--json``."""
        return {
            "id": "0x" + self.id.hex(),
            "nonce": self.nonce,
            "origin": self.origin,
            "destination": self.destination,
            "tx": "0x" + self.tx_hash.hex(),
            "block": self.block_number,
            "fee": self.fee,
        }


@dataclass(frozen=True)
class Quote:
    """What delivering one message from ``origin`` to ``destination`` costs now (``quote``)."""

    origin: str
    destination: str
    gas: int
    """The destination gas its delivery is charged (:func:`relayer.payments.charged_gas`: the
    origin's on-chain number for this body length, never under the route's floor)."""
    fee: int
    """The origin's price for ``gas``, in its smallest native unit (``unit``)."""
    unit: str
    deliver: str
    """The route's policy in this config (``all``: delivered paid or not)."""

    def as_json(self) -> dict[str, Any]:
        """For ``--json``."""
        return {
            "origin": self.origin,
            "destination": self.destination,
            "gas": self.gas,
            "fee": self.fee,
            "unit": self.unit,
            "deliver": self.deliver,
        }

    def text(self) -> str:
        """One line for a terminal."""
        return (
            f"{self.origin} → {self.destination}: {self.fee} {self.unit} for {self.gas} gas "
            f"(route policy: deliver {self.deliver})"
        )


TOKEN_BODY_SIZE = 128
"""A token transfer's message body (TokenBridge: abi.encode of four words)."""


async def delivery_gas(
    config: Config, source: ChainConfig, target: ChainConfig, body_size: int
) -> int:
    """The destination gas a ``body_size``-byte message on the route ``source`` → ``target``
    is charged now: :func:`relayer.payments.charged_gas` over the origin's current rate (on
    an EVM origin, the Paymaster's ``deliveryGas`` read from the node's latest state) and the
    route's floor in this config. What ``send`` pays for, and what the relayer checks at the
    origin's final block: the same function on the same on-chain numbers. Without a rate
    there, the floor (the family's send then refuses to pay, saying why)."""
    rule = config.relay_policy.route_payment(source.domain, target.domain)
    return charged_gas(rule, await current_rate(source, target), body_size)


async def quote(
    config: Config, origin: str | int, destination: str | int, *, body_size: int
) -> Quote:
    """The price on ``origin`` now of delivering a ``body_size``-byte message to
    ``destination`` (ConfigError, one line, if ``origin`` takes no payment or prices no
    delivery there)."""
    source, target = config.chain(origin), config.chain(destination)
    if source.domain == target.domain:
        # Before any chain is asked: the Outbox refuses such a message (DestinationIsLocal).
        raise ConfigError(f"{source.name} → {target.name}: no route from a chain to itself")
    if not takes_payment(source):
        raise ConfigError(
            f"{source.name} takes no payment for delivery (no paymaster or fee_account configured)"
        )
    rate = await current_rate(source, target)
    if rate is None:
        raise ConfigError(
            f"{source.name} prices no delivery to {target.name} (no gas rate set for domain "
            f"{target.domain})"
        )
    rule = config.relay_policy.route_payment(source.domain, target.domain)
    gas = charged_gas(rule, rate, body_size)
    unit = "wei" if source.substrate is None else "planck"
    return Quote(source.name, target.name, gas, rate.fee(gas), unit, rule.deliver)


def finality_text(chain: ChainConfig) -> str:
    """The chain's finality policy, saying what its final head rests on (a Substrate head
    proven by GRANDPA, or the node's word only)."""
    return family_of(chain).finality_text(chain)


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
        "kind": chain.kind,
        "finality": finality_text(chain),
        "rpc_quorum": chain.rpc_quorum,
        "rpc_endpoints": len(chain.rpc),
    }


async def send_messages(
    config: Config,
    origin: str | int,
    destination: str | int,
    body: bytes,
    *,
    count: int = 1,
    recipient: bytes | None = None,
    pay: bool = True,
) -> list[Sent]:
    """Dispatch ``count`` messages with ``body`` from the client's account on ``origin``;
    return their ids. Without ``recipient``, the destination family's default (an EVM
    chain's Ping contract, a Substrate account's own). With ``pay``, each pays for its
    delivery in the same transaction when ``origin`` takes payment (:func:`delivery_gas`)."""
    source, target = config.chain(origin), config.chain(destination)
    to = recipient
    if to is None:
        to = family_of(target).default_message_recipient(config, target)
    gas = None
    if pay and takes_payment(source):
        gas = await delivery_gas(config, source, target, len(body))
    return await family_of(source).send_messages(
        config, source, target, recipient=bytes32(to), body=body, count=count, pay_gas=gas
    )


async def send_tokens(
    config: Config,
    origin: str | int,
    destination: str | int,
    amount: int,
    *,
    recipient: bytes | None = None,
    pay: bool = True,
) -> list[Sent]:
    """Bridge ``amount`` tokens: lock the home token (or burn the wrapped one) and dispatch;
    to the client's own account on the destination without ``recipient``. With ``pay``, the
    transfer pays for its delivery when ``origin`` takes payment."""
    source, target = config.chain(origin), config.chain(destination)
    to = recipient
    if to is None:
        to = family_of(target).client_account(config)
    gas = None
    if pay and takes_payment(source):
        gas = await delivery_gas(config, source, target, TOKEN_BODY_SIZE)
    return await family_of(source).send_tokens(
        config, source, target, amount=amount, recipient=to, pay_gas=gas
    )


async def token_balance(config: Config, chain: str | int, owner: bytes | None = None) -> int:
    """The client's (or ``owner``'s) balance of the chain's home or wrapped token."""
    target = config.chain(chain)
    return await family_of(target).token_balance(config, target, owner)


async def delivered_on_chain(
    config: Config,
    records: Sequence[MessageRecord],
    unreadable: dict[int, str] | None = None,
) -> dict[str, bool]:
    """Each message's delivered flag as its destination shows it (the source of truth).

    With ``unreadable`` given, a destination that cannot be asked — its nodes are down, or one
    of its endpoints serves another chain (a :class:`ConfigError`) — gets no flags and its
    one-line reason under its domain there, and the other destinations are still asked: one bad
    chain must not hide the state of every other (``status``). Without it, the first such error
    is raised.
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
        if not chain.is_destination:
            continue  # no flag to read: such a message is never delivered (``skipped``)
        try:
            shown = await family_of(chain).delivered(config, chain, [r.message for r in group])
        except (ConfigError, AdapterError) as exc:
            if unreadable is None:
                raise
            unreadable[domain] = " ".join(str(exc).split())  # one line, whatever the node said
            continue
        flags.update((r.id, flag) for r, flag in zip(group, shown, strict=True))
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
    "Quote",
    "Sent",
    "delivered_on_chain",
    "delivery_gas",
    "quote",
    "send_messages",
    "send_tokens",
    "status_rows",
    "token_balance",
    "wait_delivered",
]
