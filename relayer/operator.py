"""What an operator does to messages by hand: ``passerelle retry`` and ``passerelle skip``.

Both are ledger moves, audited like every other (the transition and its reason stay in the
message's trail), and all or nothing: one id that is unknown or cannot move refuses the whole
command before anything is written, so a typo in a list of ids never half-applies it. The
check and the moves are one ledger transaction (the write lock held throughout), so a relayer
running beside the command cannot move a message between the check and the write.

- **retry** puts a message back on its way: a ``failed`` one (given up after
  :data:`~relayer.relay.MAX_DELIVERY_ATTEMPTS`, or waiting for its backoff) to ``attested`` at
  once, with a fresh give-up budget (:func:`~relayer.relay.failures_since_retry` counts from
  here; the backoff between attempts keeps growing); a ``skipped`` one (no route, the relay
  policy, an operator) back to ``final``, as scanned — the relayer attaches it to the newest
  stored checkpoint that covers it. Its block was final when it was scanned, so nothing is
  trusted here that the scan did not already check. A message to a destination the config
  does not route is refused: it would wait for ever.
- **skip** sets aside a message that is neither delivered nor in a pending delivery
  transaction (one in flight may still land: wait for its outcome), with the operator's
  reason: the relayer no longer sends it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from relayer.ledger import Ledger, LedgerBatch, MessageStatus
from relayer.relay import OPERATOR_RETRY

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

    def as_json(self) -> dict[str, str]:
        """For ``--json``."""
        return {"id": self.id, "was": str(self.was), "now": str(self.now)}


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
