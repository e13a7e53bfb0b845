"""``passerelle ledger rebuild``: a lost ledger recovered from the chains themselves.

The ledger is the relayer's memory, but not the truth about messages: every message is in its
origin's outbox (final blocks), and whether it arrived is in its destination's state. So an
operator who lost the database (a dead disk, a dropped PostgreSQL database) gets one back by
asking the chains, with the relayer's own code paths rather than a second implementation:

1. **scan** every origin from its ``start_block`` to its final head with
   :meth:`relayer.relay.Relayer._scan_once` — the very step a running relayer takes: the
   family's :meth:`~relayer.family.Origin.scan` (an EVM origin reconciles the logs with the
   outbox's storage proven under a quorum-agreed header, so an endpoint that drops, alters or
   invents a message makes the chunk fail instead of being recorded), each chunk recorded with
   the scan cursor in one ledger transaction, messages to a destination without a route set
   aside exactly as the relayer does;
2. **collect** the newest checkpoint a committee quorum signed over the rebuilt tree's root from
   the checkpoint store (:meth:`~relayer.relay.Relayer._collect_once`: every signature verified,
   a quorum for another root halts), so covered messages are ``attested`` again;
3. **read delivery** at every destination, in batches, and record as ``delivered`` what the
   destination shows delivered — from the strongest evidence its family gives
   (:func:`delivered_on`): an EVM Inbox's replay guard proven by ``eth_getProof`` under the
   destination's final header (the evidence the relayer's own delivery writes ``delivered``
   from), never an ``eth_call`` answer.

What a rebuild cannot recover, because no chain records it (docs/decisions.md, "ledger
rebuild"): ``failed`` and operator ``skipped`` statuses and their reasons, attempts, the
transactions the relayer sent, delivery transaction hashes, and the status history. Those
messages come back ``final``/``attested`` (their destination shows them undelivered), so a
relayer started on the rebuilt ledger tries them again — the relay policy still applies.

Only into a new ledger: a ledger that already holds messages or scan cursors is refused
(:class:`RebuildRefused`), since it knows more than the chains can tell (the history above),
and a rebuild writing over it would mix two pasts. The one exception is a rebuild's own
unfinished work, marked in ``ledger_meta`` (:data:`MARKER_KEY`): a rebuild that stopped (a chain
did not answer within ``timeout``) is resumed by running it again — scan cursors and each
batch of delivered flags were committed as they went, so no block is scanned twice (the
delivered flags of messages still undelivered are read again: they may have changed). Unless a
relayer has delivered from that ledger meanwhile (it holds transactions, or ``submitted`` or
``failed`` messages): its history is then one a rebuild must not mix with, and it is refused.

A rebuild holds the ledger's use lock exclusively (:meth:`~relayer.ledger.Ledger.in_use`), and
every relayer holds it shared: a second rebuild, or a relayer, on the same ledger is refused
in one line rather than scanning from a cursor the other one moved.

Memory does not grow with the history: delivered flags are read page by page of the ledger
(:data:`PAGE` messages), each page's waiting messages grouped by destination and recorded
before the next page is fetched.

A partial rebuild is safe to relay from, just slower: every prefix it leaves is what a relayer
that crashed while catching up would leave (gapless per origin, cursors matching), and a
message whose delivered flag was not read yet is checked by the relayer's delivery against the
destination's final state before anything is sent.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio
from sqlmodel import Session

from adapters.errors import AdapterError
from light_clients.errors import VerificationError
from relayer.checkpoints import CheckpointStoreError
from relayer.config import ChainConfig, Config
from relayer.families.evm.delivery import attested_leaf
from relayer.family import family_of
from relayer.ledger import Ledger, LedgerError, LedgerMeta, MessageRecord, MessageStatus
from relayer.relay import Lane, Relayer

log = logging.getLogger("passerelle.rebuild")

__all__ = [
    "DELIVERED_BATCH",
    "MARKER_KEY",
    "RebuildIncomplete",
    "RebuildRefused",
    "RebuildSummary",
    "RouteSummary",
    "delivered_on",
    "rebuild",
]

MARKER_KEY = "rebuild"
"""``ledger_meta`` key of a rebuild: ``{"state": "incomplete"|"complete", ...}`` as JSON."""
DELIVERED_BATCH = 256
"""Messages per read of a destination's delivered flags (and per ledger transaction)."""
PAGE = 5_000
"""Ledger rows per page when walking every message."""
RETRY_PAUSE = 1.0
"""Seconds between two tries of a chain step that failed (an RPC error, a chunk that did not
reconcile): the relayer retries those too, the rebuild only until its ``timeout``."""
_WAITING = (MessageStatus.DISCOVERED, MessageStatus.FINAL, MessageStatus.ATTESTED)


class RebuildRefused(LedgerError):
    """The target ledger is not a new one (nor an unfinished rebuild's): nothing was written."""


class RebuildIncomplete(Exception):
    """A chain did not answer (or kept answering wrongly) for ``timeout`` seconds: the rebuild
    stopped with what it had committed; running it again resumes it."""


@dataclass
class RouteSummary:
    """The rebuilt ledger's messages of one route, by what a relayer will do with them."""

    origin: str
    destination: str
    messages: int = 0
    delivered: int = 0
    pending: int = 0  # discovered, final or attested: a relayer delivers them
    skipped: int = 0  # no configured route to the destination

    def as_json(self) -> dict[str, Any]:
        """The route as one JSON object."""
        return {
            "origin": self.origin,
            "destination": self.destination,
            "messages": self.messages,
            "delivered": self.delivered,
            "pending": self.pending,
            "skipped": self.skipped,
        }


@dataclass
class RebuildSummary:
    """What a rebuild left in the ledger (``complete`` False: see ``error``)."""

    complete: bool
    ledger: str
    routes: list[RouteSummary] = field(default_factory=list)
    cursors: dict[str, int] = field(default_factory=dict)
    """Origin name → the first block a relayer started now scans."""
    evidence: dict[str, str] = field(default_factory=dict)
    """Destination name → what its delivered flags were read from."""
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The summary as one JSON object (``passerelle ledger rebuild --json``)."""
        return {
            "complete": self.complete,
            "ledger": self.ledger,
            "routes": [route.as_json() for route in self.routes],
            "messages": sum(r.messages for r in self.routes),
            "delivered": sum(r.delivered for r in self.routes),
            "pending": sum(r.pending for r in self.routes),
            "skipped": sum(r.skipped for r in self.routes),
            "cursors": self.cursors,
            "delivered_evidence": self.evidence,
            "error": self.error,
        }


# ------------------------------------------------------------------------------------ evidence


def evidence_of(chain: ChainConfig) -> str:
    """What :func:`delivered_on` reads ``chain``'s delivered flags from (for the summary)."""
    return family_of(chain).delivered_evidence


async def delivered_on(
    relayer: Relayer, chain: ChainConfig, messages: Sequence[bytes]
) -> list[bool]:
    """For each raw message to ``chain``: is it delivered there, on evidence ``delivered`` (a
    terminal status) may be written from? A false "delivered" is the dangerous lie: the message
    would never be sent again (a lost transfer), while a false "not delivered" costs one
    redundant delivery the destination skips as a replay. So it is read as the family's own
    delivery reads it before recording delivery (:meth:`ChainFamily.final_delivered`: on EVM
    the Inbox's replay guard proven under the final header, keyed by each lane's outbox), not
    as ``status`` reads it (:meth:`ChainFamily.delivered`, the latest state).

    Only a message that is the leaf at its nonce of its lane's attested tree is asked about
    (:func:`~relayer.families.evm.delivery.attested_leaf`); any other reads as not delivered:
    a flag keyed by (origin, outbox, nonce), as the EVM Inbox's is, says that *a* message with
    that nonce was accepted, and only the attested leaf says which one."""
    outboxes = {domain: lane.outbox for domain, lane in relayer.lanes.items()}
    leaves = [attested_leaf(relayer.lanes, message) for message in messages]
    asked = [message for message, leaf in zip(messages, leaves, strict=True) if leaf]
    answers = iter(
        await family_of(chain).final_delivered(relayer.config, chain, asked, outboxes)
        if asked
        else []
    )
    return [leaf and next(answers) for leaf in leaves]


# ------------------------------------------------------------------------------------ marker


def _read_marker(ledger: Ledger) -> dict[str, Any] | None:
    with Session(ledger.engine) as session:
        row = session.get(LedgerMeta, MARKER_KEY)
    if row is None:
        return None
    try:
        value = json.loads(row.value)
    except ValueError:
        return {"state": "unreadable"}
    return value if isinstance(value, dict) else {"state": "unreadable"}


def _write_marker(ledger: Ledger, value: dict[str, Any]) -> None:
    with Session(ledger.engine) as session, session.begin():
        row = session.get(LedgerMeta, MARKER_KEY)
        text = json.dumps(value, sort_keys=True)
        if row is None:
            session.add(LedgerMeta(key=MARKER_KEY, value=text))
        else:
            row.value = text
            session.add(row)


def _claim(ledger: Ledger, config: Config) -> bool:
    """Make sure ``ledger`` is ours to write and mark it as a rebuild in progress; True when an
    earlier unfinished rebuild is being resumed. :class:`RebuildRefused` otherwise."""
    marker = _read_marker(ledger)
    if marker is not None and marker.get("state") == "incomplete":
        relayed = ledger.transactions(limit=1) or any(
            ledger.counts_by_status().get(status, 0)
            for status in (MessageStatus.SUBMITTED, MessageStatus.FAILED)
        )
        if relayed:
            raise RebuildRefused(
                f"ledger {ledger.location} holds an unfinished rebuild, but a relayer has "
                "delivered from it since (it records transactions): it knows more than the "
                "chains can tell; keep using it, or move it away and rebuild into a new ledger"
            )
        return True
    held = ledger.messages(limit=1)
    scanned = [
        chain.name
        for chain in config.chains
        if chain.is_origin and ledger.get_cursor(chain.domain) is not None
    ]
    if held or scanned:
        counts = ledger.counts_by_status()
        what = f"{sum(counts.values())} message(s)" if held else f"scan cursors of {scanned}"
        done = " (a finished rebuild's)" if marker and marker.get("state") == "complete" else ""
        raise RebuildRefused(
            f"ledger {ledger.location} already holds {what}{done}; a rebuild writes only into a "
            "new, empty ledger: move the file away (or create an empty database) and run it again"
        )
    _write_marker(ledger, {"state": "incomplete", "started_at": time.time()})
    return False


# ------------------------------------------------------------------------------------ steps


class _Patience:
    """A deadline that moves ``timeout`` seconds ahead whenever a chain step succeeds: a chain
    may take as long as it likes in total, but not ``timeout`` seconds without progress."""

    def __init__(self, timeout: float, what: str) -> None:
        self.timeout = timeout
        self.what = what
        self.scope = trio.CancelScope(deadline=trio.current_time() + timeout)
        self.last_error: str | None = None

    def progressed(self) -> None:
        self.scope.deadline = trio.current_time() + self.timeout
        self.last_error = None

    async def failed(self, error: Exception) -> None:
        """Note a failed try (an AdapterError or a refused proof) and pause before the next."""
        self.last_error = str(error)
        log.warning("%s: %s; trying again", self.what, error)
        await trio.sleep(RETRY_PAUSE)

    def incomplete(self) -> RebuildIncomplete:
        why = f" (last error: {self.last_error})" if self.last_error else ""
        return RebuildIncomplete(
            f"{self.what}: no progress for {self.timeout:g} s{why}; the rebuild stopped with what "
            "it had recorded: run `passerelle ledger rebuild` again to resume"
        )


async def _scan_origin(
    relayer: Relayer, lane: Lane, timeout: float, progress: Callable[[str], None]
) -> None:
    """Scan ``lane``'s origin to its final head through the relayer's own scan step."""
    chain = lane.chain
    patience = _Patience(timeout, f"origin {chain.name}")
    with patience.scope:
        async with family_of(chain).open_origin(relayer.config, chain) as origin:
            patience.progressed()
            while True:
                before = lane.tree.count
                try:
                    # Raises RouteHalted (not retried) if the block an unfinished rebuild
                    # stopped at is no longer canonical: a reorg below the finality policy.
                    caught_up = await relayer._scan_once(lane, origin)
                except (AdapterError, VerificationError) as error:
                    # Includes the reconciliation's "logs missing, altered or invented":
                    # nothing of that chunk was recorded; it is scanned again.
                    await patience.failed(error)
                    continue
                patience.progressed()
                cursor = await relayer.db(relayer.ledger.get_cursor, chain.domain)
                scanned_to = "-" if cursor is None else cursor.next_block - 1
                progress(
                    f"from {chain.name}: scanned to block {scanned_to}, "
                    f"{lane.tree.count - before} new message(s), {lane.tree.count} in all"
                )
                if caught_up:
                    return
    raise patience.incomplete()


async def _mark_delivered(
    relayer: Relayer, timeout: float, progress: Callable[[str], None]
) -> None:
    """Record as delivered every waiting message its destination shows delivered: one page of
    the ledger at a time, so memory stays bounded by :data:`PAGE` whatever the history."""
    config, ledger = relayer.config, relayer.ledger
    destinations = {c.domain: c for c in config.chains if c.is_destination}
    found: dict[int, int] = defaultdict(int)
    read: dict[int, int] = defaultdict(int)
    after: tuple[int, int] | None = None
    while True:
        page = await relayer.db(ledger.messages, after=after, limit=PAGE)
        waiting: dict[int, list[MessageRecord]] = defaultdict(list)
        for record in page:
            if record.status in _WAITING and record.destination in destinations:
                waiting[record.destination].append(record)
        for domain, records in waiting.items():
            chain = destinations[domain]
            found[domain] += await _mark_page(relayer, chain, records, timeout)
            read[domain] += len(records)
            progress(f"to {chain.name}: {found[domain]} of {read[domain]} message(s) delivered")
        if len(page) < PAGE:
            break
        after = (page[-1].origin, page[-1].nonce)


async def _mark_page(
    relayer: Relayer, chain: ChainConfig, records: Sequence[MessageRecord], timeout: float
) -> int:
    """Read ``records``' delivered flags on ``chain`` in batches and record the delivered ones;
    how many were. :class:`RebuildIncomplete` after ``timeout`` seconds without progress."""
    patience = _Patience(timeout, f"destination {chain.name}")
    found = 0
    with patience.scope:
        start = 0
        while start < len(records):
            batch = records[start : start + DELIVERED_BATCH]
            try:
                flags = await delivered_on(relayer, chain, [r.message for r in batch])
            except (AdapterError, VerificationError) as error:
                await patience.failed(error)
                continue
            patience.progressed()
            ids = [r.id for r, flag in zip(batch, flags, strict=True) if flag]
            await relayer.db(
                relayer.ledger.transition,
                ids,
                MessageStatus.DELIVERED,
                reason=f"delivered on {chain.name} (ledger rebuild: {evidence_of(chain)})",
            )
            found += len(ids)
            start += len(batch)
    if patience.scope.cancelled_caught:
        raise patience.incomplete()
    return found


def _attach_all_final(relayer: Relayer, lane: Lane) -> None:
    """The relayer's :meth:`~relayer.relay.Relayer._attach_final` until it moves nothing: one
    call moves at most 10,000 messages (a running relayer calls it every poll; a rebuild once),
    and the rebuilt statuses must be what the lost ledger held, ``attested`` included."""
    ledger = relayer.ledger
    while True:
        before = ledger.counts_by_status().get(MessageStatus.ATTESTED, 0)
        relayer._attach_final(lane)
        if ledger.counts_by_status().get(MessageStatus.ATTESTED, 0) == before:
            return


def _summary(relayer: Relayer, complete: bool, error: str | None) -> RebuildSummary:
    """Count the rebuilt ledger's messages per route (blocking: run in a worker thread)."""
    config, ledger = relayer.config, relayer.ledger
    names = {c.domain: c.name for c in config.chains}
    routes: dict[tuple[int, int], RouteSummary] = {}
    after: tuple[int, int] | None = None
    while True:
        page = ledger.messages(after=after, limit=PAGE)
        for record in page:
            key = (record.origin, record.destination)
            route = routes.get(key)
            if route is None:
                route = routes[key] = RouteSummary(
                    names.get(record.origin, str(record.origin)),
                    names.get(record.destination, str(record.destination)),
                )
            route.messages += 1
            if record.status == MessageStatus.DELIVERED:
                route.delivered += 1
            elif record.status == MessageStatus.SKIPPED:
                route.skipped += 1
            else:
                route.pending += 1
        if len(page) < PAGE:
            break
        after = (page[-1].origin, page[-1].nonce)
    cursors = {}
    for chain in config.chains:
        cursor = ledger.get_cursor(chain.domain) if chain.is_origin else None
        if cursor is not None:
            cursors[chain.name] = cursor.next_block
    return RebuildSummary(
        complete=complete,
        ledger=ledger.location,
        routes=[routes[key] for key in sorted(routes)],
        cursors=cursors,
        evidence={c.name: evidence_of(c) for c in config.chains if c.is_destination},
        error=error,
    )


async def rebuild(
    config: Config,
    ledger: Ledger,
    *,
    timeout: float = 60.0,
    progress: Callable[[str], None] = log.info,
) -> RebuildSummary:
    """Rebuild ``ledger`` (new and empty, or an unfinished rebuild's) from ``config``'s chains.

    Returns the summary; with ``complete`` False when a chain made no progress for ``timeout``
    seconds (its ``error`` says which and why: what was committed stays, a second run resumes).
    Raises :class:`RebuildRefused` for a ledger that is not a rebuild's to write,
    :class:`~relayer.ledger.LedgerInUse` while a relayer (or another rebuild, or a migration)
    uses it, and
    :class:`~relayer.relay.RouteHalted` for what a relayer would halt on (a scanned block no
    longer canonical, a committee quorum over another root than the chain's).
    """
    with ledger.in_use(exclusive=True, by="a ledger rebuild"):
        return await _rebuild(config, ledger, timeout, progress)


async def _rebuild(
    config: Config, ledger: Ledger, timeout: float, progress: Callable[[str], None]
) -> RebuildSummary:
    relayer = Relayer(config, ledger)
    resumed = await relayer.db(_claim, ledger, config)
    progress(f"{'resuming the rebuild of' if resumed else 'rebuilding'} {ledger.location}")
    # The lanes' trees from what is already recorded (empty, or an unfinished rebuild's).
    await relayer.db(relayer._load_lanes)
    try:
        for lane in relayer.lanes.values():
            await _scan_origin(relayer, lane, timeout, progress)
        for lane in relayer.lanes.values():
            try:
                await relayer._collect_once(lane)
            except CheckpointStoreError as error:
                # Only a head start: a relayer collects checkpoints itself when it starts.
                progress(f"{lane.chain.name}: checkpoint store not read ({error})")
            else:
                await relayer.db(_attach_all_final, relayer, lane)
        await _mark_delivered(relayer, timeout, progress)
    except RebuildIncomplete as error:
        return await relayer.db(_summary, relayer, False, str(error))
    await relayer.db(_write_marker, ledger, {"state": "complete", "finished_at": time.time()})
    return await relayer.db(_summary, relayer, True, None)
