"""What a message paid on an EVM origin: the Paymaster's ``paid``, ``rates`` and ``deliveryGas``
at the origin's final block (:func:`relayer.payments.read_payments`;
adapters/evm/contracts/Paymaster.sol).

Read by ``eth_call`` at the number of the final header the origin's RPC quorum agrees on, never
at ``latest``: a payment in a block that can still be reorged away must not get a message
delivered (the relayer would pay gas for a payment that then never happened). The answers
themselves are one endpoint's word, not proven: see relayer/payments.py for why that is the
trade-off taken.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Collection, Sequence
from dataclasses import replace

from eth_abi.abi import encode as abi_encode

from adapters.evm.chain import EvmChain, selector
from adapters.jsonrpc import MalformedAnswer, RpcCallError
from light_clients.hashing import keccak256
from light_clients.hexstr import to_hex
from relayer.config import ChainConfig
from relayer.family import Origin
from relayer.ledger import MessageRecord
from relayer.payments import DeliveryGas, GasRate, OriginPayments

PAID = selector("paid(bytes32,uint32)")
RATES = selector("rates(uint32)")
DELIVERY_GAS = selector("deliveryGas(uint32)")
MAX_GAS_OVERHEAD = 30_000_000
"""Paymaster.sol's ``MAX_GAS_OVERHEAD``: the contract refuses more."""
MAX_GAS_PER_BYTE = 1_000
"""Paymaster.sol's ``MAX_GAS_PER_BYTE``."""
QUOTE = selector("quote(uint32,uint256)")
GAS_PAYMENT = keccak256(b"GasPayment(bytes32,uint32,uint256,uint256,address)")
"""Topic of ``Paymaster.GasPayment``: a payment or top-up for message ``id`` (first topic)."""
log = logging.getLogger("passerelle.payments")

CALLS_PER_BATCH = 100
"""``eth_call`` per JSON-RPC batch (providers cap batches, often at 100 to 1,000 calls). Keep
it small for our own sake too: a batch of empty results is ~11 bytes per JSON value, under
:data:`adapters.rpc.MIN_BYTES_PER_TOKEN`, so one over 1 MiB (~25,000 calls) is refused."""


def paid_call(message_id: bytes, destination: int) -> bytes:
    """Calldata of ``Paymaster.paid(id, destination)``."""
    return PAID + abi_encode(["bytes32", "uint32"], [message_id, destination])


def rates_call(destination: int) -> bytes:
    """Calldata of ``Paymaster.rates(destination)``."""
    return RATES + abi_encode(["uint32"], [destination])


def delivery_gas_call(destination: int) -> bytes:
    """Calldata of ``Paymaster.deliveryGas(destination)``."""
    return DELIVERY_GAS + abi_encode(["uint32"], [destination])


def delivery_gas_of(answer: bytes, destination: int) -> DeliveryGas | None:
    """A ``deliveryGas(destination)`` answer; None if the oracle set none (overhead zero).
    Values the contract refuses to store (past its bounds) cannot come from it: an endpoint
    answering them is not reading the Paymaster, so MalformedAnswer rather than a price."""
    overhead, per_byte = words(answer, 2, f"Paymaster.deliveryGas({destination})")
    if overhead > MAX_GAS_OVERHEAD or per_byte > MAX_GAS_PER_BYTE:
        raise MalformedAnswer(
            f"Paymaster.deliveryGas({destination}): {overhead} + {per_byte}/byte is past the "
            "contract's bounds"
        )
    if overhead == 0:
        return None
    return DeliveryGas(overhead, per_byte)


def words(answer: bytes, count: int, what: str) -> list[int]:
    """``count`` uint256 words of an ``eth_call`` answer; MalformedAnswer if it is not exactly
    that long (a Paymaster answers exactly; anything else is not one)."""
    if len(answer) != 32 * count:
        raise MalformedAnswer(f"{what}: expected {32 * count} bytes, got {len(answer)}")
    return [int.from_bytes(answer[i : i + 32], "big") for i in range(0, len(answer), 32)]


def rate_of(answer: bytes, destination: int) -> GasRate | None:
    """A ``rates(destination)`` answer; None for an unpriced destination (both zero). A value
    above 128 bits cannot come from the contract: MalformedAnswer."""
    gas_price, exchange_rate = words(answer, 2, f"Paymaster.rates({destination})")
    if gas_price >= 2**128 or exchange_rate >= 2**128:
        raise MalformedAnswer(f"Paymaster.rates({destination}): not two uint128 values")
    if gas_price == 0 or exchange_rate == 0:
        return None
    return GasRate(gas_price, exchange_rate)


OLD_PAYMASTER_RECHECK = 600.0
"""Seconds a Paymaster found without ``deliveryGas`` is read with the rates alone before the
full batch is tried again (:func:`rates_at`)."""

_OLD_PAYMASTERS: dict[tuple[str, bytes], float] = {}
"""(an endpoint's URL, Paymaster) -> until when (:func:`time.monotonic`) that endpoint's
answers are taken to say the Paymaster has no ``deliveryGas``: remembered for the endpoint
that answered the revert, not for every endpoint of the chain (one endpoint's revert, through
failover, made the honest ones read rates-only too)."""


def _first_asked(evm: EvmChain) -> str | None:
    """The URL of the endpoint the next call goes to first (None: none usable)."""
    ordered = evm.rpc.ordered()
    return ordered[0].target if ordered else None


def _answered(evm: EvmChain, error: RpcCallError) -> list[str]:
    """The URLs of the endpoint that answered with ``error`` (it names the endpoint by its
    redacted URL: two endpoints redacted alike, the same provider with two keys, are both
    remembered, which errs on the side of reading the rates alone)."""
    return [e.target for e in evm.rpc.endpoints if e.url == error.endpoint]


async def rates_at(
    evm: EvmChain, paymaster: bytes, destinations: Collection[int], block: int | str
) -> dict[int, GasRate | None]:
    """Each destination's rate on ``paymaster`` at ``block``, with the gas a message must buy
    there (``deliveryGas``), all in one JSON-RPC batch at the same block.

    A Paymaster deployed before session 6 has no ``deliveryGas`` (and no fallback), so that
    call reverts, and one revert fails the whole batch. If the rates alone then read fine, the
    origin states no delivery gas: every rate comes back with ``delivery=None``, the relayer's
    floor alone is charged (:func:`relayer.payments.charged_gas`) and one warning says so.
    That is safe: the floor is what protects the relayer, and an endpoint could already
    answer ``(0, 0)``, which means the same. Without this, every paid route of such an origin
    would never decide a message, and ``quote``/``send --pay`` would fail.

    Such a Paymaster is then remembered, for the endpoint that answered the revert, as one
    without ``deliveryGas`` for :data:`OLD_PAYMASTER_RECHECK` seconds: while that endpoint is
    the one asked first, reads are the rates alone, not a batch that reverts first at every
    payments read. Per endpoint: a revert is only that endpoint's word, so it must not make
    the others (whose answer may differ) read rates-only. And only for that long: a
    Paymaster redeployed must get its on-chain number back, so the full batch is tried again
    then, and whatever it answers decides anew."""
    ordered = sorted(destinations)
    first = _first_asked(evm)
    if _OLD_PAYMASTERS.get((first or "", paymaster), -math.inf) > time.monotonic():
        return await _rates_only(evm, paymaster, ordered, block)
    calls = [c for d in ordered for c in (rates_call(d), delivery_gas_call(d))]
    try:
        answers = await evm.call_many(paymaster, calls, block)
    except RpcCallError as exc:
        if not exc.reverted:
            raise  # a node refusing the request (a rate limit…) says nothing about the contract
        # The rates alone: if these revert too, it is not a Paymaster (or not at this block),
        # and that error is the one to report (and nothing is remembered).
        rates = await _rates_only(evm, paymaster, ordered, block)
        for url in _answered(evm, exc):
            _OLD_PAYMASTERS[url, paymaster] = time.monotonic() + OLD_PAYMASTER_RECHECK
        _warn_no_delivery_gas(paymaster)
        return rates
    # A full answer (from the first endpoint, or from the one failover reached): whatever the
    # first endpoint said before has run out or was never said.
    _OLD_PAYMASTERS.pop((first or "", paymaster), None)
    found: dict[int, GasRate | None] = {}
    for i, d in enumerate(ordered):
        rate = rate_of(answers[2 * i], d)
        delivery = delivery_gas_of(answers[2 * i + 1], d)
        found[d] = None if rate is None else replace(rate, delivery=delivery)
    return found


async def _rates_only(
    evm: EvmChain, paymaster: bytes, ordered: Sequence[int], block: int | str
) -> dict[int, GasRate | None]:
    """The rates of ``ordered`` destinations, without ``deliveryGas``: what a Paymaster from
    before session 6 states."""
    answers = await evm.call_many(paymaster, [rates_call(d) for d in ordered], block)
    return {d: rate_of(a, d) for d, a in zip(ordered, answers, strict=True)}


_NO_DELIVERY_GAS_WARNED: set[bytes] = set()
"""Paymasters already warned about (:func:`_warn_no_delivery_gas`): once per process each."""


def _warn_no_delivery_gas(paymaster: bytes) -> None:
    """One warning per Paymaster, not one per round: an old deployment stays old."""
    if paymaster in _NO_DELIVERY_GAS_WARNED:
        return
    _NO_DELIVERY_GAS_WARNED.add(paymaster)
    log.warning(
        "Paymaster %s has no deliveryGas (deployed before session 6?): charging the "
        "relayer's delivery_gas floor only; redeploy it to state the gas on chain",
        to_hex(paymaster[-20:]),
    )


def _evm_of(origin: Origin) -> EvmChain:
    evm = getattr(origin, "evm", None)
    if not isinstance(evm, EvmChain):
        raise TypeError(f"not an EVM origin: {origin!r}")
    return evm


def paid_ids(logs: object, paymaster: bytes) -> set[str]:
    """The message ids of an ``eth_getLogs`` answer for ``GasPayment`` of ``paymaster``;
    MalformedAnswer for anything else (a log of another contract or event, a bad shape): an
    endpoint that answers that is not answering this question."""
    if not isinstance(logs, list):
        raise MalformedAnswer("eth_getLogs (GasPayment): not a list")
    ids: set[str] = set()
    for entry in logs:
        if not isinstance(entry, dict):
            raise MalformedAnswer("eth_getLogs (GasPayment): a log is not an object")
        if entry.get("removed"):
            continue
        topics = entry.get("topics")
        address = entry.get("address")
        if (
            not isinstance(address, str)
            or address.lower() != to_hex(paymaster[-20:]).lower()
            or not isinstance(topics, list)
            or len(topics) != 4
            or not all(isinstance(t, str) for t in topics)
            or topics[0].lower() != to_hex(GAS_PAYMENT)
            or len(topics[1]) != 66
        ):
            raise MalformedAnswer("eth_getLogs (GasPayment): not a GasPayment log of the paymaster")
        ids.add("0x" + topics[1][2:].lower())
    return ids


async def paid_since(chain: ChainConfig, origin: Origin, after: int | None) -> tuple[int, set[str]]:
    """The origin's final block now, and the ids of the messages paid or topped up after block
    ``after`` up to it (``GasPayment`` logs of the chain's Paymaster); no ids when ``after`` is
    None (the caller's first look: it sweeps everything once instead). AdapterError if the
    origin cannot be read now: the caller keeps ``after`` and asks again, so no log is lost."""
    evm = _evm_of(origin)
    block = (await origin.final_head()).number
    if after is None or after >= block:
        return block, set()
    paymaster = chain.contract("paymaster")
    logs = await evm.logs(paymaster, GAS_PAYMENT, after + 1, block)
    return block, paid_ids(logs, paymaster)


async def read_payments(
    chain: ChainConfig,
    origin: Origin,
    records: Sequence[MessageRecord],
    destinations: Collection[int],
) -> OriginPayments:
    """:func:`relayer.payments.read_payments` for an EVM origin (ConfigError without a
    ``paymaster``; AdapterError if the origin cannot be read now)."""
    evm = _evm_of(origin)
    paymaster = chain.contract("paymaster")
    block = (await origin.final_head()).number
    rates = await rates_at(evm, paymaster, destinations, block)
    answers: list[bytes] = []
    for start in range(0, len(records), CALLS_PER_BATCH):
        part = records[start : start + CALLS_PER_BATCH]
        answers += await evm.call_many(
            paymaster, [paid_call(bytes.fromhex(r.id[2:]), r.destination) for r in part], block
        )
    paid: dict[str, int] = {}
    bought: dict[str, int] = {}
    for record, answer in zip(records, answers, strict=True):
        paid[record.id], bought[record.id] = words(answer, 2, f"Paymaster.paid({record.id})")
    return OriginPayments(block=block, paid=paid, rates=rates, bought=bought)
