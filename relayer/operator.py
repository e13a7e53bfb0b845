"""What an operator does to messages by hand: ``passerelle retry`` and ``passerelle skip``.

Both are ledger moves, audited like every other (the transition and its reason stay in the
message's trail), and all or nothing: one id that is unknown or cannot move refuses the whole
command before anything is written, so a typo in a list of ids never half-applies it. The
check and the moves are one ledger transaction (the write lock held throughout), so a relayer
running beside the command cannot move a message between the check and the write.

- **retry** puts a message back on its way: a ``failed`` one (given up after
  :data:`~relayer.relay.MAX_DELIVERY_ATTEMPTS`, or waiting for its backoff) to ``attested`` at
  once, with a fresh give-up budget (:func:`~relayer.relay.recent_failures` counts from
  here; the backoff between attempts keeps growing); a ``skipped`` one (no route, the relay
  policy, an operator) back to ``final``, as scanned — the relayer attaches it to the newest
  stored checkpoint that covers it. Its block was final when it was scanned, so nothing is
  trusted here that the scan did not already check. A message to a destination the config
  does not route is refused: it would wait for ever.
- **retry --on-chain** re-proves ONE message parked on its destination (accepted, its
  recipient's ``handle`` reverted) under the trust the destination holds now. Whether and how
  is the destination family's answer (:meth:`relayer.family.ChainFamily.reprove`; this module
  never asks which family it is): an EVM inbox takes ``Inbox.retryProven`` with the newest
  stored checkpoint the inbox's CURRENT committee signed (:mod:`relayer.families.evm.reproof`),
  sent from the ``[client]`` key; a Substrate destination parks nothing, and the command
  refuses in one line naming the family and why (exit 2). What a revoked
  committee attested, or what was parked before its origin was untrusted and trusted again,
  plain ``Inbox.retry`` refuses for good; this brings an honest message back. The ledger
  already has such a message ``delivered`` (accepted: terminal), and keeps it so; a message
  still in another status (the ledger not caught up) is recorded ``delivered`` with the
  re-proof's transaction, as the inbox's own ``Delivered`` log in its receipt shows. If
  someone else hands the message over between the dry run and the block (anyone may call
  ``retryProven``), our transaction reverts; the command then reads the failure record again
  and, finding it gone, says "handled by someone else" and exits 0: the message was handed
  over once, which is what the operator asked for (the reverted transaction's gas is named).
  The ledger is left as it is: the relayer's next delivery of a row not yet ``delivered``
  finds it AlreadyDelivered and records that itself.
- **skip** sets aside a message that is neither delivered nor in a pending delivery
  transaction (one in flight may still land: wait for its outcome), with the operator's
  reason: the relayer no longer sends it.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio

from light_clients.merkle import IncrementalMerkleTree
from relayer.checkpoints import (
    CheckpointStore,
    open_checkpoint_store,
)
from relayer.config import Config, ConfigError
from relayer.family import HandledElsewhere, ReproofRefused, Reproven, family_of
from relayer.ledger import Ledger, LedgerBatch, MessageStatus
from relayer.relay import OPERATOR_RETRY, LedgerGap, ledger_tree

OPERATOR_SKIP = "skipped by the operator"
"""Prefix of the reason a ``passerelle skip`` records (followed by the operator's words)."""

_S = MessageStatus
RETRYABLE = (_S.FAILED, _S.SKIPPED)
SKIPPABLE = (_S.DISCOVERED, _S.FINAL, _S.ATTESTED, _S.UNPAID, _S.FAILED)


class OperatorRefused(ValueError):
    """The command cannot apply to every id given; ``str()`` lists why, one line per id."""


@dataclass(frozen=True)
class Moved:
    """One message an operator command moved."""

    id: str
    was: MessageStatus
    now: MessageStatus

    def as_json(self) -> dict[str, object]:
        """For ``--json``."""
        return {"id": self.id, "was": str(self.was), "now": str(self.now)}

    def text(self) -> str:
        """One line for the terminal."""
        return f"{self.id}  {self.was} → {self.now}"


def _statuses(
    batch: LedgerBatch,
    ids: Sequence[str],
    allowed: Sequence[MessageStatus],
    routed: Collection[int] | None = None,
) -> list[Moved]:
    """Each id's current status (read under the batch's write lock), checked against
    ``allowed`` and, if given, its destination against ``routed``; OperatorRefused otherwise."""
    problems: list[str] = []
    found: list[Moved] = []
    for message_id in dict.fromkeys(i.lower() for i in ids):
        try:
            record = batch.get(message_id)
        except ValueError as exc:  # not 0x + 64 hex digits
            problems.append(f"{message_id}: {exc}")
            continue
        if record is None:
            problems.append(f"{message_id}: no such message in the ledger")
        elif record.status not in allowed:
            problems.append(f"{message_id}: is {record.status}")
        elif routed is not None and record.destination not in routed:
            problems.append(
                f"{message_id}: its destination {record.destination} has no route in the config"
            )
        else:
            found.append(Moved(record.id, record.status, record.status))
    if problems:
        raise OperatorRefused("\n".join(problems))
    return found


def retry(ledger: Ledger, ids: Sequence[str], *, routed: Collection[int]) -> list[Moved]:
    """Put failed and skipped messages to a ``routed`` destination back on their way (see the
    module docstring)."""
    with ledger.atomic() as batch:
        found = _statuses(batch, ids, RETRYABLE, routed)
        failed = [m.id for m in found if m.was == MessageStatus.FAILED]
        skipped = [m.id for m in found if m.was == MessageStatus.SKIPPED]
        batch.transition(failed, MessageStatus.ATTESTED, reason=OPERATOR_RETRY)
        batch.transition(skipped, MessageStatus.DISCOVERED, reason=OPERATOR_RETRY)
        batch.transition(
            skipped, MessageStatus.FINAL, reason=f"{OPERATOR_RETRY}: its block was final"
        )
    back = {_S.FAILED: _S.ATTESTED, _S.SKIPPED: _S.FINAL}
    return [Moved(m.id, m.was, back[m.was]) for m in found]


def skip(ledger: Ledger, ids: Sequence[str], reason: str) -> list[Moved]:
    """Set messages aside with the operator's ``reason`` (see the module docstring)."""
    words = " ".join(reason.split())
    if not words:
        raise OperatorRefused("give a --reason: it is recorded in each message's trail")
    with ledger.atomic() as batch:
        found = _statuses(batch, ids, SKIPPABLE)
        batch.transition(
            [m.id for m in found], MessageStatus.SKIPPED, reason=f"{OPERATOR_SKIP}: {words}"
        )
    return [Moved(m.id, m.was, MessageStatus.SKIPPED) for m in found]


REPROVEN = "handled on chain by a re-proof"
"""Prefix of the reason a ``retry --on-chain`` records for a message not yet ``delivered``."""


@dataclass(frozen=True)
class RetriedOnChain(Moved):
    """A ``retry --on-chain`` that the inbox accepted: the ledger's status around it (``was``
    equals ``now`` for a row already ``delivered``) and the re-proof's transaction."""

    reproven: Reproven

    def as_json(self) -> dict[str, object]:
        """For ``--json``."""
        return self.reproven.as_json() | super().as_json()

    def text(self) -> str:
        """One line for the terminal."""
        done = self.reproven
        return (
            f"{done.id}  re-proven on {done.destination} under checkpoint "
            f"{done.checkpoint_index}: tx {done.tx_hash} (block {done.block_number}, "
            f"{done.gas_used:,} gas); ledger {self.was} → {self.now}"
        )


@dataclass(frozen=True)
class ReprovenElsewhere(Moved):
    """A ``retry --on-chain`` whose transaction reverted because the message had been handed
    over by someone else first (``was`` equals ``now``: the ledger is not touched)."""

    why: str

    def as_json(self) -> dict[str, object]:
        """For ``--json``."""
        return super().as_json() | {"handled_elsewhere": self.why}

    def text(self) -> str:
        """One line for the terminal."""
        return f"{self.why}; ledger {self.now} (unchanged)"


class _StoreOpener:
    """Opens the checkpoint store at ``location`` when first called, and gives that store on
    every later call; :meth:`close` closes it if it was opened (a PostgreSQL store's engine).

    What ``retry --on-chain`` hands the family as ``store``: a family refuses (a Substrate
    destination parks nothing; an EVM one whose message is not parked there) before it reads
    the store, and a refused command has no side effect, not even opening the store (a
    database engine, an error about a store location the command never needed). A callable,
    not a store that opens itself on first use: such a store had to stand in for every
    method of :class:`CheckpointStore` through its private layout, and one added later
    that bypassed those would have read an unopened store without a word."""

    def __init__(self, location: str | Path) -> None:
        self._location = location
        self._store: CheckpointStore | None = None
        self._opening = threading.Lock()  # the family reads the store in worker threads

    def __call__(self) -> CheckpointStore:
        with self._opening:
            if self._store is None:
                self._store = open_checkpoint_store(self._location)
            return self._store

    def close(self) -> None:
        """Close the store if it was opened and has something to close (a directory store
        holds nothing open; a PostgreSQL one its connection pool)."""
        with self._opening:
            store, self._store = self._store, None
        close = getattr(store, "close", None)
        if callable(close):
            close()


def retry_on_chain(
    config: Config, ledger: Ledger, message_id: str
) -> RetriedOnChain | ReprovenElsewhere:
    """Re-prove the parked message ``message_id`` on its destination (see the module
    docstring): its family's :meth:`~relayer.family.ChainFamily.reprove`, the one place that
    knows whether and how that kind of chain parks messages. OperatorRefused (one line,
    nothing sent) for a message unknown to the ledger, of an unconfigured origin or
    destination, to a chain that takes no messages or whose family has no re-proof (the line
    names the family and why), not parked there, with no covering checkpoint of the inbox's
    committee, or refused by the dry run."""
    with ledger.atomic() as batch:  # read only: _statuses's checks and one-line refusals
        (found,) = _statuses(batch, [message_id], tuple(MessageStatus))
        record = batch.get(found.id)
    if record is None:  # removed in between (an origin reorg's rescan)
        raise OperatorRefused(f"{message_id}: no such message in the ledger")
    try:
        target, source = config.chain(record.destination), config.chain(record.origin)
    except ConfigError as exc:
        raise OperatorRefused(f"{record.id}: {exc}") from None
    if not target.is_destination:
        raise OperatorRefused(
            f"{record.id}: its destination {target.name} takes no messages in the "
            "configuration: nothing can be parked there"
        )
    # Opened by the family's first read of it: after every cheap check, and never for a
    # refused command (no side effect); closed below, whatever the outcome.
    store = _StoreOpener(config.checkpoint_location)

    def tree() -> IncrementalMerkleTree:
        # The relayer's accumulator, rebuilt the same way (relayer.relay.ledger_tree); called
        # by the family only once its cheap checks passed: it reads every message of the
        # origin, bodies included.
        try:
            return ledger_tree(ledger, record.origin, source.name)
        except LedgerGap as exc:
            raise ReproofRefused(
                f"{exc}: no proof can be built above it (ledger rebuild)"
            ) from None

    reprove = partial(
        family_of(target).reprove,
        config,
        target,
        record,
        outbox=source.outbox_id,
        store=store,
        tree=tree,
    )
    try:
        reproven: Reproven = trio.run(reprove)
    except ReproofRefused as exc:
        raise OperatorRefused(str(exc)) from None
    except HandledElsewhere as exc:
        return ReprovenElsewhere(record.id, record.status, record.status, str(exc))
    finally:
        store.close()
    # Delivered from anywhere is allowed (the chain is the source of truth), and a row already
    # delivered (how the relayer records a parked message: accepted) is left as it is.
    with ledger.atomic() as batch:
        current = batch.get(record.id)
        was = record.status if current is None else current.status
        if current is not None:
            batch.transition(
                [record.id],
                MessageStatus.DELIVERED,
                tx_hash=reproven.tx_hash,
                reason=f"{REPROVEN} in block {reproven.block_number} of {target.name}",
            )
    now = MessageStatus.DELIVERED if current is not None else was
    return RetriedOnChain(record.id, was, now, reproven)
