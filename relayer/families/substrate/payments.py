"""What a message paid on a Substrate origin (:func:`relayer.payments.read_payments`): the
balance transfers to the chain's ``fee_account`` in the same extrinsic as its remark, right
before it, priced by the chain's ``fee_rates`` (docs/design.md, "Paid delivery").

A sender pays with ``Balances.transfer_keep_alive(fee_account, fee)`` immediately before the
``System.remark_with_event`` of the message, in one ``Utility.batch_all``
(:func:`relayer.families.substrate.user.send_messages`): the batch is all or nothing, so the
payment exists exactly when the message does, and like the escrow transfer of a token return
(:func:`light_clients.substrate.remark.check_escrow`) it is read from the events of the
remark's own extrinsic. A remark's payment is the sum of the ``Balances.Transfer`` events from
the extrinsic's signer to the fee account after the previous ``Remarked`` event of that
extrinsic and before its own (:attr:`adapters.substrate.client.RemarkSeen.balance_transfers`):
one transfer pays for one message, never two.

Remarks of one extrinsic that carry the same message (``send --count N``) differ only by the
nonce the scan gives them, which the remark does not contain; each is credited the smallest
payment among them, so a message is never credited more than it could have paid.

There is no top-up on a Substrate origin: what the extrinsic paid is what the message paid.
The events are read from the message's own (final) block through the relayer's endpoint, not
proven: as on EVM origins, a lying endpoint can only make the relayer deliver unpaid.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import replace

from adapters.substrate.client import RemarkSeen, SubstrateClient
from light_clients.message import decode_message
from light_clients.substrate.remark import RemarkRejected
from relayer.config import ChainConfig
from relayer.family import Origin
from relayer.ledger import MessageRecord
from relayer.payments import GasRate, OriginPayments


def configured_rate(chain: ChainConfig, destination: int) -> GasRate | None:
    """``chain``'s ``fee_rates`` entry for ``destination``; None if it prices no delivery
    there (or takes no payment at all)."""
    rate = chain.settings().fee_rates.get(destination)
    return None if rate is None else GasRate(*rate)


def remark_fee(seen: RemarkSeen, fee_account: bytes) -> int:
    """What the transfers right before ``seen`` paid the fee account, from its own signer."""
    return sum(
        t.amount
        for t in seen.balance_transfers
        if t.target == fee_account and t.source == seen.signer
    )


def message_fee(record: MessageRecord, remarks: Sequence[RemarkSeen], chain: ChainConfig) -> int:
    """What ``record`` paid: the smallest fee among the remarks of its extrinsic that carry
    its message (any nonce), 0 if none does (see the module docstring)."""
    settings = chain.settings()
    if settings.fee_account is None:
        return 0
    wanted = decode_message(record.message)
    fees = []
    for seen in remarks:
        if seen.extrinsic_index != record.log_index:
            continue
        try:
            message = seen.validate(chain.domain, settings.multisig)
        except RemarkRejected:
            continue
        if replace(message, nonce=wanted.nonce) == wanted:
            fees.append(remark_fee(seen, settings.fee_account))
    return min(fees, default=0)


async def read_payments(
    chain: ChainConfig,
    origin: Origin,
    records: Sequence[MessageRecord],
    destinations: Collection[int],
) -> OriginPayments:
    """:func:`relayer.payments.read_payments` for a Substrate origin: each message's fee from
    its own block's events, the rates from the config (AdapterError if a block cannot be read
    now)."""
    client = getattr(origin, "client", None)
    if not isinstance(client, SubstrateClient):
        raise TypeError(f"not a Substrate origin: {origin!r}")
    block = (await origin.final_head()).number
    by_block: dict[str, list[MessageRecord]] = defaultdict(list)
    for record in records:
        by_block[record.source_block_hash].append(record)
    paid: dict[str, int] = {}
    bought: dict[str, int] = {}
    rates = {d: configured_rate(chain, d) for d in destinations}
    fee_account = chain.settings().fee_account
    for block_hash, group in by_block.items():
        remarks = await client.remarks(bytes.fromhex(block_hash[2:]), fee_account=fee_account)
        for record in group:
            paid[record.id] = message_fee(record, remarks, chain)
            rate = rates.get(record.destination) or configured_rate(chain, record.destination)
            bought[record.id] = 0 if rate is None else rate.gas_bought(paid[record.id])
    # A final block's events never change and there are no top-ups here: decided once.
    return OriginPayments(block=block, paid=paid, rates=rates, bought=bought, final=True)
