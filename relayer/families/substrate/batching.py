"""How many messages one multisig batch may carry: sized to what one extrinsic may weigh.

The committee executes a batch as one ``Multisig.as_multi`` extrinsic wrapping
``Utility.batch_all`` of every message's calls (:mod:`relayer.families.substrate.calls`). The
runtime refuses an extrinsic heavier than the normal class's ``max_extrinsic`` weight
(``System.BlockWeights``) or longer than its share of ``System.BlockLength``; such a batch is
never executable, and an operation opened for it only locks the opener's deposit until it is
cancelled. A fixed message count cannot respect those limits — a 64 KiB remark is 200 times
longer than a token mint — and wastes most of a block when the messages are small. So:

- :func:`plan_batches` (pure) cuts the messages, in order, into the fewest consecutive batches
  whose summed weight, length and proposal-file bytes each stay within a :class:`BatchBudget`,
  and names the messages that fit no batch even alone;
- the budget comes from the chain's own constants (:func:`budget_for` of
  :class:`~adapters.substrate.multisig.ExtrinsicLimits`) and the proposal store's file bound;
- each message's cost comes from a :class:`CostModel` measured once per connection with
  ``payment_queryInfo`` on the very calls :func:`~relayer.families.substrate.calls.delivery_calls`
  composes (:func:`measure_costs`), remark weights interpolated linearly in their length (FRAME
  benchmarks them as ``a + b·len``; the interpolation is rounded up, so it never undercounts).

The relayer plans its proposals with it; each attester checks every proposal against its own
measure before verifying or opening anything (:func:`batch_excess`, through
:func:`relayer.families.substrate.approval._within_budget`), so a proposal written by anyone
else cannot make it open an unexecutable one either.

A sizing is only accepted if the largest message there can be fits an empty batch
(:func:`check_sizing`): on any runtime we deliver to that is true by a wide margin, so a
sizing that says otherwise is a lying or broken RPC answer, and acting on it would refuse
deliverable messages.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from substrateinterface import Keypair

from adapters.errors import AdapterError
from adapters.redact import redact_url
from adapters.substrate.client import SubstrateClient
from adapters.substrate.multisig import ExtrinsicLimits, extrinsic_limits
from light_clients.merkle import TREE_DEPTH
from light_clients.message import MAX_BODY_BYTES, Message
from light_clients.substrate.remark import ACTION_MINT, U128_MAX
from relayer.accounts import bytes32
from relayer.config import SUBSTRATE_BATCH_SIZE, SubstrateSettings
from relayer.families.substrate.calls import (
    REFUND_REASONS,
    NotDeliverable,
    Refund,
    RuntimeCall,
    compose_batch,
    delivery_calls,
    token_transfer,
)
from relayer.families.substrate.proposals import MAX_PROPOSAL_BYTES

log = logging.getLogger("passerelle.substrate")

PROPOSAL_OVERHEAD_BYTES = 4096
"""A proposal's bytes besides its messages: the checkpoint and the JSON keys (generous)."""

EXECUTION_WEIGHT_SHARE = (9, 10)
"""The share of ``max_extrinsic`` a batch's calls may weigh: the rest is for the ``as_multi``
around them (measured 0.45-1.1 × 10⁹ of 349.9 × 10⁹ on Rococo Asset Hub for 25-500 messages;
it grows with the call's length, which the length budget caps)."""

EXECUTION_LENGTH_OVERHEAD = 1024
"""Bytes of the executing extrinsic besides the batch call: signature, extensions, the other
signatories, the timepoint (about 200 for three signatories; generous)."""


@dataclass(frozen=True)
class Cost:
    """What one message adds to a batch: dispatch weight (ref time, picoseconds), encoded call
    length (bytes) and its share of the proposal file (bytes)."""

    weight: int
    length: int
    proposal_bytes: int


@dataclass(frozen=True)
class BatchBudget:
    """What one batch may hold in total (each a sum over its messages), and at most how many."""

    weight: int
    length: int
    proposal_bytes: int
    messages: int


def budget_for(limits: ExtrinsicLimits, cap: int = SUBSTRATE_BATCH_SIZE) -> BatchBudget:
    """The budget of one batch on a chain with these extrinsic ``limits``: its calls within
    :data:`EXECUTION_WEIGHT_SHARE` of the weight and the length less the executing extrinsic's
    own bytes, its proposal within :data:`MAX_PROPOSAL_BYTES`, and at most ``cap`` messages
    (what one attester is asked to verify and compose at a time)."""
    share, whole = EXECUTION_WEIGHT_SHARE
    return BatchBudget(
        weight=limits.weight * share // whole,
        length=max(0, limits.length - EXECUTION_LENGTH_OVERHEAD),
        proposal_bytes=MAX_PROPOSAL_BYTES - PROPOSAL_OVERHEAD_BYTES,
        messages=cap,
    )


def proposal_bytes(message_length: int) -> int:
    """An upper bound of what a message of ``message_length`` bytes adds to a proposal's JSON:
    ``"0x…"`` and a separator, and its branch of :data:`TREE_DEPTH` quoted 32-byte hashes."""
    return (2 * message_length + 6) + (TREE_DEPTH * (2 + 64 + 4) + 4)


def fits(cost: Cost, budget: BatchBudget) -> bool:
    """Does one message of ``cost`` fit an empty batch?"""
    return (
        budget.messages >= 1
        and cost.weight <= budget.weight
        and cost.length <= budget.length
        and cost.proposal_bytes <= budget.proposal_bytes
    )


def plan_batches(costs: Sequence[Cost], budget: BatchBudget) -> tuple[list[list[int]], list[int]]:
    """Cut messages (by index, in their order) into consecutive batches within ``budget``:
    ``(batches, oversized)``. Each batch takes as many messages as still fit, in order (a
    proposal's nonces must increase, so none is moved ahead of another); ``oversized`` are the
    messages that do not fit even an empty batch — no proposal can ever carry them, so they
    must not be proposed (an unexecutable operation would only lock a deposit)."""
    batches: list[list[int]] = []
    oversized: list[int] = []
    current: list[int] = []
    weight = length = size = 0
    for index, cost in enumerate(costs):
        if not fits(cost, budget):
            oversized.append(index)
            continue
        if current and (
            len(current) + 1 > budget.messages
            or weight + cost.weight > budget.weight
            or length + cost.length > budget.length
            or size + cost.proposal_bytes > budget.proposal_bytes
        ):
            batches.append(current)
            current, weight, length, size = [], 0, 0, 0
        current.append(index)
        weight += cost.weight
        length += cost.length
        size += cost.proposal_bytes
    if current:
        batches.append(current)
    return batches, oversized


def has_room(costs: Sequence[Cost], budget: BatchBudget) -> bool:
    """Could one more message, as dear in each measure as the dearest of ``costs``, still join
    them within ``budget``? A batch for which this is False is full: waiting for more messages
    to fill it gains nothing (:meth:`~relayer.families.substrate.delivery.SubstrateDelivery`'s
    tail rule). An empty batch has room."""
    if not costs:
        return budget.messages >= 1
    dearest = Cost(
        weight=max(c.weight for c in costs),
        length=max(c.length for c in costs),
        proposal_bytes=max(c.proposal_bytes for c in costs),
    )
    return batch_excess([*costs, dearest], budget) is None


def weighing_keypair() -> Keypair:
    """A key that only signs the dry extrinsics ``payment_queryInfo`` weighs (nothing is ever
    submitted with it, and it holds nothing): the relayer needs no Substrate key of its own."""
    return Keypair.create_from_uri("//passerelle-weighing")


def batch_excess(costs: Sequence[Cost], budget: BatchBudget) -> str | None:
    """Why messages of these ``costs`` cannot be one batch within ``budget`` (the first limit
    they break), or None if they can: what an attester asks of a proposal before it opens an
    operation, with its own measured costs — a proposal is anyone's to write."""
    totals = {
        "messages": (len(costs), budget.messages),
        "weight": (sum(c.weight for c in costs), budget.weight),
        "length": (sum(c.length for c in costs), budget.length),
        "proposal bytes": (sum(c.proposal_bytes for c in costs), budget.proposal_bytes),
    }
    for what, (total, limit) in totals.items():
        if total > limit:
            return f"its {what} come to {total:,}, over the {limit:,} one batch may have"
    return None


@dataclass(frozen=True)
class Shape:
    """Weight and length of one message's calls alone in a ``Utility.batch_all`` (so each
    carries the batch's own base cost once: an overcount, never an undercount)."""

    weight: int
    length: int


@dataclass(frozen=True)
class CostModel:
    """Measured costs of each kind of delivery on one chain (:func:`measure_costs`).

    ``remark_short`` / ``remark_long`` are a remark delivery of a message of ``short_length``
    / ``long_length`` bytes; ``token`` the dearer of a token transfer's two outcomes (a mint,
    or a refund: which one is the attesters' decision, from chain state read then), None when
    no token transfer can reach this chain."""

    short_length: int
    remark_short: Shape
    long_length: int
    remark_long: Shape
    token: Shape | None = None

    def remark(self, message_length: int) -> Shape:
        """A remark delivery of a ``message_length``-byte message: linear between the two
        measured points, rounded up, never below the short one."""
        span = max(1, self.long_length - self.short_length)
        extra = max(0, message_length - self.short_length)
        return Shape(
            weight=self.remark_short.weight
            + _ceil_div(max(0, self.remark_long.weight - self.remark_short.weight) * extra, span),
            length=self.remark_short.length
            + _ceil_div(max(0, self.remark_long.length - self.remark_short.length) * extra, span)
            # The SCALE length prefix of the remark grows by up to 3 bytes between the points.
            + (4 if extra else 0),
        )


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def message_cost(
    model: CostModel,
    message: Message,
    settings: SubstrateSettings,
    bridges: Mapping[int, bytes],
) -> Cost:
    """What ``message`` adds to a batch: a token transfer costs the dearer of its mint and its
    refund (which one is decided by the attesters later); anything else its remark."""
    encoded = len(message.encode())
    shape = model.remark(encoded)
    if model.token is not None and token_transfer(message, settings, bridges) is not None:
        shape = Shape(max(shape.weight, model.token.weight), max(shape.length, model.token.length))
    return Cost(shape.weight, shape.length, proposal_bytes(encoded))


def _sample_messages(
    settings: SubstrateSettings, domain: int, bridges: Mapping[int, bytes]
) -> tuple[Message, Message, Message | None]:
    """Messages of each delivery shape to measure: a remark of the shortest and the longest
    message, and a token transfer from the wrapped asset's home bridge — or, without one, from
    any other TokenBridge that can reach this chain: its transfers are all refunded, and a
    refund (guard, freeze, refund remark) costs more than a remark (None if no TokenBridge
    reaches here). Nonces and amounts are the largest encodable, so no compact integer is
    shorter. Without any collection (no origin can deliver here) the remarks are from domain
    0: see :func:`measure_costs`."""
    origin = min(settings.collections, default=0)
    short = Message(1, 2**32 - 1, origin, b"\x01" * 32, domain, b"\x02" * 32, b"")
    long = Message(
        1, 2**32 - 1, origin, b"\x01" * 32, domain, b"\x02" * 32, b"\xff" * MAX_BODY_BYTES
    )
    senders = sorted(set(bridges) & set(settings.collections))
    home = settings.asset_home_domain if settings.asset_home_domain in senders else None
    if home is None and senders:
        home = senders[0]
    token = None
    if home is not None:
        body = b"".join(
            (
                ACTION_MINT.to_bytes(32, "big"),
                bytes32(settings.asset_home_token or bytes(20)),
                U128_MAX.to_bytes(32, "big"),
                b"\x03" * 32,
            )
        )
        token = Message(1, 2**32 - 1, home, bridges[home], domain, settings.bridge_account, body)
    return short, long, token


async def _shape(client: SubstrateClient, keypair: Keypair, calls: Sequence[RuntimeCall]) -> Shape:
    batch = await compose_batch(client, calls)
    fee = await client.estimate_fee(keypair, batch)
    return Shape(weight=fee.weight, length=len(batch.data))


async def measure_costs(
    client: SubstrateClient,
    settings: SubstrateSettings,
    domain: int,
    bridges: Mapping[int, bytes],
    keypair: Keypair,
) -> CostModel:
    """Measure each delivery shape on the chain (four ``payment_queryInfo`` at most, once per
    connection: the weights are the runtime's, not the messages'). ``keypair`` only signs the
    dry extrinsics the runtime weighs; nothing is submitted."""
    if not settings.collections:
        # A chain no origin delivers to (no replay-guard collection configured) still gets a
        # sizing, so the loops that ask for one run on quietly: its remark shapes are weighed
        # with a stand-in collection 0 (``Uniques.mint`` weighs the same for every collection,
        # and payment_queryInfo only weighs, it does not dispatch).
        settings = replace(settings, collections={0: 0})
    short, long, token = _sample_messages(settings, domain, bridges)
    model = CostModel(
        short_length=len(short.encode()),
        remark_short=await _shape(client, keypair, delivery_calls(short, settings, bridges)),
        long_length=len(long.encode()),
        remark_long=await _shape(client, keypair, delivery_calls(long, settings, bridges)),
    )
    if token is None:
        return model
    refund = Refund(domain, max(REFUND_REASONS))
    shapes = [
        await _shape(client, keypair, delivery_calls(token, settings, bridges, refund=refund))
    ]
    # Without a wrapped asset to mint here, every token transfer is refunded: no mint shape.
    with contextlib.suppress(NotDeliverable):
        shapes.append(await _shape(client, keypair, delivery_calls(token, settings, bridges)))
    return CostModel(
        short_length=model.short_length,
        remark_short=model.remark_short,
        long_length=model.long_length,
        remark_long=model.remark_long,
        token=Shape(max(s.weight for s in shapes), max(s.length for s in shapes)),
    )


class ImplausibleSizing(AdapterError):
    """The chain's limits and measured costs say the largest possible message fits no batch:
    an RPC answer to distrust (measure again later), never a verdict on any message."""


def check_sizing(
    budget: BatchBudget,
    model: CostModel,
    settings: SubstrateSettings,
    domain: int,
    bridges: Mapping[int, bytes],
) -> None:
    """:class:`ImplausibleSizing` unless a message of the largest possible cost — the longest
    remark delivery and, where token transfers reach this chain, the dearer token shape — fits
    an empty batch under ``budget``.

    Every message costs at most that (remark costs grow with the length and stop at
    :data:`MAX_BODY_BYTES`; a token transfer is the dearer of its remark and token shapes), so
    after this check no message is ever "too large for any batch". Why check at all: the limits
    come from the metadata and the costs from ``payment_queryInfo`` of one unverified RPC; a
    tiny ``max_extrinsic`` or a huge sample weight would otherwise mark every message
    undeliverable. On Rococo Asset Hub the largest message takes under 4 % of each budget."""
    _, long, token = _sample_messages(settings, domain, bridges)
    largest = [message_cost(model, long, settings, bridges)]
    if token is not None:
        largest.append(message_cost(model, token, settings, bridges))
    for cost in largest:
        if not fits(cost, budget):
            raise ImplausibleSizing(
                f"implausible batch limits: one largest message (weight {cost.weight:,}, "
                f"{cost.length:,} bytes) would not fit a batch of weight {budget.weight:,} and "
                f"{budget.length:,} bytes; not trusted, measured again next round"
            )


async def chain_sizing(
    client: SubstrateClient,
    chain_settings: SubstrateSettings,
    domain: int,
    bridges: Mapping[int, bytes],
) -> tuple[BatchBudget, CostModel]:
    """The batch budget from the chain's extrinsic limits and the measured delivery costs: what
    the relayer plans with and each attester checks against (read once per connection, and
    again when the runtime's spec version changes). :class:`ImplausibleSizing` (an
    AdapterError: the caller keeps nothing and asks again next round) if the answer cannot be
    an honest chain's (:func:`check_sizing`)."""
    limits = await extrinsic_limits(client)
    model = await measure_costs(client, chain_settings, domain, bridges, weighing_keypair())
    budget = budget_for(limits)
    check_sizing(budget, model, chain_settings, domain, bridges)
    return budget, model


SIZING_RECHECK = 60.0
"""Seconds between two reads of the runtime's spec version (:class:`SizingCache`): one cheap
RPC a minute, so a sizing outlives a runtime upgrade by at most that long."""


async def spec_version(client: SubstrateClient) -> int:
    """The runtime's ``specVersion`` now (``state_getRuntimeVersion``): it changes with every
    runtime upgrade, and with it the weights and limits a sizing was measured under."""
    answer = await client.rpc("state_getRuntimeVersion")
    version = answer.get("specVersion") if isinstance(answer, dict) else None
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise AdapterError(
            f"state_getRuntimeVersion on {redact_url(client.url)}: no specVersion in "
            f"{str(answer)[:80]!r}"
        )
    return version


class SizingCache:
    """One chain's sizing (:func:`chain_sizing`) for one connection: measured when first asked
    for, again when the runtime's spec version has changed (read every
    :data:`SIZING_RECHECK` seconds: a runtime upgrade changes weights and limits without a
    reconnect), and again after :meth:`drop`. A refused or failed measurement keeps nothing:
    the next :meth:`get` measures again."""

    def __init__(
        self, *, recheck: float = SIZING_RECHECK, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.recheck = recheck
        self._clock = clock
        self._client: SubstrateClient | None = None
        self._sizing: tuple[BatchBudget, CostModel] | None = None
        self._version = -1
        self._checked = 0.0

    async def get(
        self,
        client: SubstrateClient,
        chain_settings: SubstrateSettings,
        domain: int,
        bridges: Mapping[int, bytes],
    ) -> tuple[BatchBudget, CostModel]:
        """The sizing for ``client``'s chain; AdapterError (one line) if it cannot be had now."""
        now = self._clock()
        version: int | None = None
        if self._sizing is not None and self._client is client:
            if now - self._checked < self.recheck:
                return self._sizing
            version = await spec_version(client)
            self._checked = now
            if version == self._version:
                return self._sizing
            log.info(
                "the runtime at %s is now spec version %d (was %d): batch limits measured again",
                redact_url(client.url),
                version,
                self._version,
            )
        self._sizing = None
        if version is None:
            version = await spec_version(client)
        sizing = await chain_sizing(client, chain_settings, domain, bridges)
        self._client, self._sizing, self._version, self._checked = client, sizing, version, now
        return sizing

    @property
    def current(self) -> tuple[BatchBudget, CostModel] | None:
        """The sizing :meth:`get` last returned; None before it measured or after a drop."""
        return self._sizing

    def drop(self) -> None:
        """Forget the sizing: the next :meth:`get` measures again."""
        self._sizing = None
