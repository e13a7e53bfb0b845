"""What an operator does to messages by hand: ``passerelle retry`` and ``passerelle skip``.

Both are ledger moves, audited like every other (the transition and its reason stay in the
message's trail), and all or nothing: one id that is unknown or cannot move refuses the whole
command before anything is written, so a typo in a list of ids never half-applies it.

- **retry** puts a message back on its way: a ``failed`` one (given up after
  :data:`~relayer.relay.MAX_DELIVERY_ATTEMPTS`, or waiting for its backoff) to ``attested`` at
  once, with a fresh attempt budget (:func:`~relayer.relay.failures_since_retry` counts from
  here); a ``skipped`` one (no route, the relay policy, an operator) back to ``final``, as
  scanned — the relayer attaches it to the next checkpoint covering it. Its block was final
  when it was scanned, so nothing is trusted here that the scan did not already check.
- **skip** sets a message aside with the operator's reason (from any status but
  ``delivered``): the relayer no longer sends it. One already in a pending transaction may
  still land; the chain's word (``delivered``) then wins, as always.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from relayer.ledger import Ledger, MessageStatus
from relayer.relay import OPERATOR_RETRY

OPERATOR_SKIP = "skipped by the operator"
"""Prefix of the reason a ``passerelle skip`` records (followed by the operator's words)."""

_S = MessageStatus
RETRYABLE = (_S.FAILED, _S.SKIPPED)
SKIPPABLE = (
    MessageStatus.DISCOVERED,
    MessageStatus.FINAL,
    MessageStatus.ATTESTED,
    MessageStatus.SUBMITTED,
    MessageStatus.FAILED,
)


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


def _statuses(ledger: Ledger, ids: Sequence[str], allowed: Sequence[MessageStatus]) -> list[Moved]:
    """Each id's current status, checked against ``allowed``; OperatorRefused otherwise."""
    problems: list[str] = []
    found: list[Moved] = []
    for message_id in dict.fromkeys(i.lower() for i in ids):
        try:
            record = ledger.get(message_id)
        except ValueError as exc:  # not 0x + 64 hex digits
            problems.append(f"{message_id}: {exc}")
            continue
        if record is None:
            problems.append(f"{message_id}: no such message in the ledger")
        elif record.status not in allowed:
            problems.append(f"{message_id}: is {record.status}")
        else:
            found.append(Moved(record.id, record.status, record.status))
    if problems:
        raise OperatorRefused("\n".join(problems))
    return found


def retry(ledger: Ledger, ids: Sequence[str]) -> list[Moved]:
    """Put failed and skipped messages back on their way (see the module docstring)."""
    found = _statuses(ledger, ids, RETRYABLE)
    failed = [m.id for m in found if m.was == MessageStatus.FAILED]
    skipped = [m.id for m in found if m.was == MessageStatus.SKIPPED]
    with ledger.atomic() as batch:
        batch.transition(failed, MessageStatus.ATTESTED, reason=OPERATOR_RETRY)
        batch.transition(skipped, MessageStatus.DISCOVERED, reason=OPERATOR_RETRY)
        batch.transition(
            skipped, MessageStatus.FINAL, reason=f"{OPERATOR_RETRY}: its block was final"
        )
    back = {
        MessageStatus.FAILED: MessageStatus.ATTESTED,
        MessageStatus.SKIPPED: MessageStatus.FINAL,
    }
    return [Moved(m.id, m.was, back[m.was]) for m in found]


def skip(ledger: Ledger, ids: Sequence[str], reason: str) -> list[Moved]:
    """Set messages aside with the operator's ``reason`` (see the module docstring)."""
    words = " ".join(reason.split())
    if not words:
        raise OperatorRefused("give a --reason: it is recorded in each message's trail")
    found = _statuses(ledger, ids, SKIPPABLE)
    ledger.transition(
        [m.id for m in found], MessageStatus.SKIPPED, reason=f"{OPERATOR_SKIP}: {words}"
    )
    return [Moved(m.id, m.was, MessageStatus.SKIPPED) for m in found]
