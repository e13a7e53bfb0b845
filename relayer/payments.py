"""Paid delivery, the relayer's side: what a message paid on its origin, against what its
delivery costs now (docs/design.md, "Paid delivery"; docs/relayer.md, "Relay policy").

A route whose policy is ``deliver = "paid"`` (:class:`relayer.config.RoutePayment`) delivers a
message only if the destination gas bought for it — for its id *and* its destination, at the
origin's final block — is at least the gas its delivery is charged (:func:`charged_gas`): what
the origin itself states on chain for a message of its real body length (an EVM origin's
``Paymaster.deliveryGasFor``: the oracle's per-destination overhead and per-byte gas), and never
less than the relayer's own floor (``delivery_gas``, :meth:`relayer.config.RoutePayment.gas_for`;
the only number on an origin that states none: a Substrate origin). ``passerelle quote`` and
``send`` use the same function on the same on-chain numbers, so a sender pays for what the
relayer asks; raising the price is done on chain, and a message paid before a raise waits
``unpaid`` until topped up. Gas, not wei: the origin enforced its price when
the gas was bought, so a rate that rises afterwards never strands a message that paid exactly
the quote (the quote now is only shown, in the reason). What was paid and bought and the
destination's rate are read through the origin connection the relayer's scan already holds, by
each family's own ``payments`` module:

- EVM origin: ``Paymaster.paid(id, destination)`` (wei paid and gas bought) and
  ``Paymaster.rates(destination)`` by ``eth_call`` at the quorum-agreed final block
  (relayer/families/evm/payments.py). Top-ups add gas later: ``GasPayment`` logs say which.
- Substrate origin: the balance transfer to the configured fee account in the same
  ``utility.batch_all`` as the message's remark, read from the message's own final block, and
  bought at the configured rate (relayer/families/substrate/payments.py). No top-ups: what a
  message paid there is decided once (:attr:`OriginPayments.final`).

Trust: the relayer believes its own origin RPC about payments, without a storage proof. A lying
endpoint can then only make it deliver a message that did not pay — spend its own gas, which
it would have spent anyway under ``deliver = "all"`` — never lose or corrupt a message; the
destination's checks do not depend on payments at all. The opposite lies (a paid message shown
unpaid, a ``GasPayment`` log left out) only delay it: it waits ``unpaid`` and is read again at
the next sweep (:meth:`relayer.relay.Relayer.recheck_unpaid`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from light_clients.message import HEADER_SIZE
from relayer.family import family_of

if TYPE_CHECKING:
    from relayer.config import ChainConfig, RoutePayment
    from relayer.family import Origin
    from relayer.ledger import MessageRecord

__all__ = [
    "FROM_CHAIN",
    "FROM_FLOOR",
    "RATE_SCALE",
    "Charge",
    "DeliveryGas",
    "GasRate",
    "OriginPayments",
    "Payment",
    "charge",
    "charged_gas",
    "current_rate",
    "paid_since",
    "read_payments",
    "route_payments",
]

log = logging.getLogger("passerelle.payments")

RATE_SCALE = 10**10
"""Fixed-point scale of an exchange rate (Paymaster.sol's ``RATE_SCALE``)."""


@dataclass(frozen=True)
class DeliveryGas:
    """The destination gas one message must buy, as its origin states it on chain
    (``Paymaster.deliveryGas(destination)``): ``overhead`` plus ``per_byte`` per body byte."""

    overhead: int
    per_byte: int

    def gas_for(self, body_size: int) -> int:
        """Gas for a ``body_size``-byte body: exactly ``Paymaster.deliveryGasFor``."""
        return self.overhead + self.per_byte * body_size


@dataclass(frozen=True)
class GasRate:
    """One destination's price on an origin: destination gas price (smallest destination unit
    per gas) and the exchange rate destination → origin unit, scaled by :data:`RATE_SCALE`;
    and the gas a message must buy there if the origin states it (None: it does not)."""

    gas_price: int
    exchange_rate: int
    delivery: DeliveryGas | None = None

    def fee(self, gas: int) -> int:
        """``gas`` gas in the origin's smallest unit, rounded up: exactly ``Paymaster.quote``
        (tests/test_paid_delivery.py checks the two agree)."""
        return -(-gas * self.gas_price * self.exchange_rate // RATE_SCALE)

    def gas_bought(self, fee: int) -> int:
        """The most gas ``fee`` pays for at this rate: the largest ``gas`` with
        ``fee(gas) <= fee`` (the inverse of :meth:`fee`, rounding in the relayer's favour)."""
        return fee * RATE_SCALE // (self.gas_price * self.exchange_rate)


FROM_FLOOR = "the relayer's delivery_gas floor"
FROM_CHAIN = "the origin's on-chain deliveryGas"


@dataclass(frozen=True)
class Charge:
    """The destination gas a delivery is charged (:func:`charge`), and where that number
    came from, decided together so the reason shown can never name the other source."""

    gas: int
    source: str
    """:data:`FROM_CHAIN` or :data:`FROM_FLOOR`: the number an operator must change."""
    stated: int | None
    """What the origin states on chain for this length (None: it states nothing)."""


def charge(rule: RoutePayment, rate: GasRate | None, body_size: int) -> Charge:
    """What a ``body_size``-byte message's delivery is charged: the origin's own on-chain
    number for that length (``rate.delivery``) if it states one, but never less than the
    route's floor in the config (``rule``: ``delivery_gas`` and 40 gas a body byte). The floor
    guards the relayer against an oracle that sets too little; it is also the whole charge
    where the origin states nothing (a Substrate origin, or a destination whose
    ``deliveryGas`` the oracle has not set). A tie is the chain's: the floor adds nothing."""
    floor = rule.gas_for(body_size)
    if rate is None or rate.delivery is None:
        return Charge(floor, FROM_FLOOR, None)
    stated = rate.delivery.gas_for(body_size)
    if stated >= floor:
        return Charge(stated, FROM_CHAIN, stated)
    return Charge(floor, FROM_FLOOR, stated)


def charged_gas(rule: RoutePayment, rate: GasRate | None, body_size: int) -> int:
    """The destination gas of :func:`charge`. Both ``quote``/``send`` and the relayer's paid
    check charge through :func:`charge`, so they agree whenever they read the same block."""
    return charge(rule, rate, body_size).gas


_FLOOR_ABOVE_CHAIN_WARNED: set[tuple[int, int]] = set()
"""Routes (origin, destination) already warned about by :func:`_warn_floor_above_chain`."""


def _warn_floor_above_chain(origin: int, destination: int, floor: int, stated: int) -> None:
    """One warning per route per process (review RC2 L5): a config floor above what the origin
    states on chain charges more than ``quote``/``send`` make a sender pay, so every message
    that pays exactly the quote waits ``unpaid`` until topped up. Legal (the floor protects the
    relayer), but almost always a forgotten config value after the oracle lowered the price."""
    if (origin, destination) in _FLOOR_ABOVE_CHAIN_WARNED:
        return
    _FLOOR_ABOVE_CHAIN_WARNED.add((origin, destination))
    log.warning(
        "route %d -> %d: the relayer's delivery_gas floor (%d gas here) is above the origin's "
        "on-chain deliveryGas (%d): senders paying the quote will wait unpaid; lower the floor "
        "or raise deliveryGas on chain",
        origin,
        destination,
        floor,
        stated,
    )


@dataclass(frozen=True)
class OriginPayments:
    """What a family reads on an origin at one final block: each message's payment for its own
    destination, and each destination's rate (None: the origin prices no delivery there)."""

    block: int
    paid: Mapping[str, int]
    rates: Mapping[int, GasRate | None]
    bought: Mapping[str, int]
    """Each message's destination gas bought with what it paid."""
    final: bool = False
    """Whether these payments can never change while the relayer runs (no top-ups on this
    origin, rates from the config): the relayer then reads each message's payment once."""


@dataclass(frozen=True)
class Payment:
    """What one message paid, against what its delivery costs now, at one origin block."""

    paid: int
    """Paid for the message's id and destination, in the origin's smallest native unit."""
    quote: int | None
    """The origin's price now for ``gas`` on the destination; None if it prices no delivery
    there (no rate set: nothing can be paid enough)."""
    gas: int
    """The destination gas this delivery is charged (:func:`charged_gas`)."""
    block: int
    """The origin's final block both were read at."""
    bought: int
    """The destination gas bought with ``paid``, at the price the origin enforced then."""
    final: bool = False
    """Whether this payment can never change (:attr:`OriginPayments.final`)."""
    gas_from: str = FROM_FLOOR
    """Where ``gas`` came from (:attr:`Charge.source`): the relayer's floor or the origin's
    on-chain number. An operator reading an ``unpaid`` reason must know which one to change."""

    @property
    def covers(self) -> bool:
        """Whether the gas bought covers the gas the delivery is charged (never the wei against
        today's quote: see the module docstring)."""
        return self.bought >= self.gas

    def describe(self, origin: str, destination: str) -> str:
        """One line for the ledger's reason and the log."""
        if self.quote is None and not self.covers:
            return (
                f"paid {self.paid}; {origin} prices no delivery to {destination} "
                f"(no gas rate, at {origin} block {self.block})"
            )
        verdict = "≥" if self.covers else "<"
        return (
            f"bought {self.bought} gas {verdict} the {self.gas} its delivery to {destination} "
            f"needs ({self.gas_from}; paid {self.paid}; the quote now {self.quote}; "
            f"at {origin} block {self.block})"
        )


async def read_payments(
    chain: ChainConfig,
    origin: Origin,
    records: Sequence[MessageRecord],
    destinations: Collection[int],
) -> OriginPayments:
    """Read, on ``chain`` through its open ``origin`` at one final block, what each record paid
    and the rate of each of ``destinations``. AdapterError if the chain cannot be read now (the
    caller tries again later); ConfigError if it has nothing to pay to."""
    return await family_of(chain).read_payments(chain, origin, records, destinations)


async def paid_since(
    chain: ChainConfig, origin: Origin, after: int | None
) -> tuple[int, set[str]] | None:
    """Which messages were paid or topped up on ``chain`` after its block ``after``: the final
    block read up to and their ids (:meth:`relayer.family.ChainFamily.paid_since`); None if no
    payment there can change after its message, so there is nothing to watch. AdapterError if
    the origin cannot be read now."""
    return await family_of(chain).paid_since(chain, origin, after)


async def current_rate(chain: ChainConfig, destination: ChainConfig) -> GasRate | None:
    """``chain``'s price for delivery to ``destination`` now (for ``quote`` and ``send``: the
    node's latest state), None if it prices none; ConfigError if ``chain`` takes no payment."""
    return await family_of(chain).current_rate(chain, destination)


async def route_payments(
    chain: ChainConfig,
    origin: Origin,
    records: Sequence[MessageRecord],
    rule: Callable[[int], RoutePayment],
) -> dict[str, Payment]:
    """Each record's :class:`Payment` (by message id) from ``chain``, priced for the gas its
    delivery is charged (:func:`charged_gas`: the origin's on-chain number, over the floor of
    its route ``rule(destination)``) for the record's real body length, whatever length its
    sender paid for."""
    read = await read_payments(chain, origin, records, {r.destination for r in records})
    payments: dict[str, Payment] = {}
    for record in records:
        rate = read.rates.get(record.destination)
        charged = charge(rule(record.destination), rate, len(record.message) - HEADER_SIZE)
        if charged.source == FROM_FLOOR and charged.stated is not None:
            _warn_floor_above_chain(chain.domain, record.destination, charged.gas, charged.stated)
        payments[record.id] = Payment(
            paid=read.paid.get(record.id, 0),
            quote=None if rate is None else rate.fee(charged.gas),
            gas=charged.gas,
            block=read.block,
            bought=read.bought.get(record.id, 0),
            final=read.final,
            gas_from=charged.source,
        )
    return payments
