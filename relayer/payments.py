"""Paid delivery, the relayer's side: what a message paid on its origin, against what its
delivery costs now (docs/design.md, "Paid delivery"; docs/relayer.md, "Relay policy").

A route whose policy is ``deliver = "paid"`` (:class:`relayer.config.RoutePayment`) delivers a
message only if the destination gas bought for it — for its id *and* its destination, at the
origin's final block — is at least the gas the route charges it
(:meth:`relayer.config.RoutePayment.gas_for`). Gas, not wei: the origin enforced its price when
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
    "RATE_SCALE",
    "GasRate",
    "OriginPayments",
    "Payment",
    "current_rate",
    "paid_since",
    "read_payments",
    "route_payments",
]

RATE_SCALE = 10**10
"""Fixed-point scale of an exchange rate (Paymaster.sol's ``RATE_SCALE``)."""


@dataclass(frozen=True)
class GasRate:
    """One destination's price on an origin: destination gas price (smallest destination unit
    per gas) and the exchange rate destination → origin unit, scaled by :data:`RATE_SCALE`."""

    gas_price: int
    exchange_rate: int

    def fee(self, gas: int) -> int:
        """``gas`` gas in the origin's smallest unit, rounded up: exactly ``Paymaster.quote``
        (tests/test_paid_delivery.py checks the two agree)."""
        return -(-gas * self.gas_price * self.exchange_rate // RATE_SCALE)

    def gas_bought(self, fee: int) -> int:
        """The most gas ``fee`` pays for at this rate: the largest ``gas`` with
        ``fee(gas) <= fee`` (the inverse of :meth:`fee`, rounding in the relayer's favour)."""
        return fee * RATE_SCALE // (self.gas_price * self.exchange_rate)


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
    """The destination gas the route charges this delivery (:meth:`RoutePayment.gas_for`)."""
    block: int
    """The origin's final block both were read at."""
    bought: int
    """The destination gas bought with ``paid``, at the price the origin enforced then."""
    final: bool = False
    """Whether this payment can never change (:attr:`OriginPayments.final`)."""

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
            f"needs (paid {self.paid}; the quote now {self.quote}; at {origin} block {self.block})"
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
    route (``rule(destination)``) charges a message of its size."""
    read = await read_payments(chain, origin, records, {r.destination for r in records})
    payments: dict[str, Payment] = {}
    for record in records:
        gas = rule(record.destination).gas_for(len(record.message) - HEADER_SIZE)
        rate = read.rates.get(record.destination)
        payments[record.id] = Payment(
            paid=read.paid.get(record.id, 0),
            quote=None if rate is None else rate.fee(gas),
            gas=gas,
            block=read.block,
            bought=read.bought.get(record.id, 0),
            final=read.final,
        )
    return payments
