"""The relayer: carries attested messages from each origin to its destination.

Chain-neutral: every chain is reached through its family (:mod:`relayer.family`). Three kinds
of task run in one trio nursery (structured concurrency: if one fails for a reason that must
stop the relayer, all stop):

- ``scan`` (one per origin): the family's :meth:`~relayer.family.Origin.scan` of final blocks
  only, its nonces continuing the relayer's tree exactly (never trusting that every log
  arrived), recorded ``discovered → final`` with the scan cursor in one ledger transaction; the
  relayer's copy of the origin's accumulator grows with them.
- ``collect`` (one per origin): reads signed checkpoints from the store, keeps only signatures
  that recover to committee members over the checkpoint *whose root equals our own tree's root
  at that index*, and once ``threshold`` of them verify (``verify_attestation``) stores them
  and moves the covered messages to ``attested``. A quorum for another root halts the relayer.
- ``deliver`` (one per destination): the family's :class:`~relayer.family.Delivery`, which
  takes attested messages from the ledger, passes each through the gate this module keeps for
  every family — the relay policy (:meth:`Relayer.admitted`), the stored attestation verified
  against the committee (:meth:`Relayer.checkpoint_for`) and the light client's whole check of
  each message (:meth:`Relayer.proven`) — and delivers them the way its chains take them.
- ``unpaid`` (one, if some route delivers paid messages only or the ledger holds ``unpaid``
  messages): every :data:`UNPAID_POLL` seconds, messages waiting ``unpaid`` whose payment now
  covers their delivery (a top-up, a policy that no longer asks) go back to ``attested``, and
  ones someone else delivered are recorded ``delivered`` (:meth:`Relayer.recheck_unpaid`).

The ledger is the source of truth for progress (a restarted relayer resumes from it, and
re-checks every transaction left pending); the destination chain's final state is the source
of truth for delivery.

Several relayers on one ledger (:mod:`relayer.leases`): each task above is a lease
(``scan:<origin domain>``, ``collect:<origin domain>``, ``deliver:<destination domain>``,
``unpaid``), and a relayer runs only the tasks whose lease it holds, every ledger write of
them fenced by the lease's token. Its lanes then follow what the other relayers record: the
accumulator and the newest checkpoint are brought up to the ledger before a scan, a collect and
each delivery batch (:meth:`Relayer.follow`).
"""

from __future__ import annotations

import logging
import math
import signal
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import trio

from adapters.errors import AdapterError
from adapters.rpc import EndpointHealth
from adapters.text import ERROR_TEXT_LIMIT, one_line
from light_clients.committee import Checkpoint, Committee, recover_signer, verify_attestation
from light_clients.errors import VerificationError
from light_clients.hashing import keccak256
from light_clients.merkle import IncrementalMerkleTree
from light_clients.message import decode_message, verify_message_inclusion
from relayer.checkpoints import SignedCheckpoint, open_checkpoint_store
from relayer.config import (
    RELAY_BATCH_SIZE,
    RELAY_MAX_INFLIGHT,
    RELAY_POLL,
    ChainConfig,
    Config,
    takes_payment,
)
from relayer.family import Origin, family_of
from relayer.leases import (
    LeaseBoard,
    LeaseKeeper,
    key_lease_name,
    lease_period,
    leasing,
    new_holder_name,
    pin_key,
)
from relayer.ledger import (
    DiscoveredMessage,
    IllegalTransition,
    InvalidReference,
    Ledger,
    LedgerError,
    MessageRecord,
    MessageStatus,
    StatusEvent,
    UnknownRecord,
)
from relayer.metrics import (
    ReadyLimits,
    RouteProgress,
    relay_readiness,
    render,
    route_progress,
    serve_metrics,
)
from relayer.payments import Payment, paid_since, route_payments
from relayer.signer import Signer, evm_signer

log = logging.getLogger("passerelle.relayer")
T = TypeVar("T")

RETRY_BACKOFF = (2.0, 5.0, 15.0, 60.0, 300.0)  # seconds, by attempt; then the last one
UNPAID_POLL = 2.0
"""Seconds between two checks of the messages waiting ``unpaid`` (each check reads their
payments on the origin: one batch of calls per origin)."""
UNPAID_PAGE = 500
"""``unpaid`` messages a sweep checks per origin and round (:meth:`Relayer.recheck_unpaid`); the
next round goes on after the last one."""
UNPAID_SWEEP = 600.0
"""Seconds from the end of one sweep of an origin's ``unpaid`` messages to the start of the
next: the backstop for what no payment log announces (a delivery by someone else, a log an
endpoint left out). Top-ups do not wait for it: their logs bring them in the next round."""
MAX_DELIVERY_ATTEMPTS = 5
"""Failed deliveries of one message (reverting alone on chain, or a proposal never executed)
before the relayer leaves it ``failed`` for good (an operator can re-queue it). A transfer a
committee can show undeliverable is refunded on the first one; this bounds everything else."""
ATTACH_PAGE = 10_000
"""``final`` messages of one origin :meth:`Relayer._attach_final` reads at a time."""
ATTACH_RECHECK = 5.0
"""Seconds after which the collect loop reads an origin's ``final`` messages again although
neither its newest checkpoint nor its tree changed (:attr:`Lane.attached`): a message can turn
``final`` without either, when an operator retries a skipped one from another process. In a
burst the read was the collect loop's whole cost: thousands of ``final`` rows waiting for the
next checkpoint, loaded five times a second and none of them covered (session 5, issue #11)."""
OPERATOR_RETRY = "retried by the operator"
"""Reason of a ``passerelle retry``: the attempts counted towards the limit start again."""


def recent_failures(history: Sequence[StatusEvent], prefix: str, cap: int) -> int:
    """How often the message failed with a reason starting with ``prefix`` since an operator
    last retried it (the ledger's audit trail: restarts do not reset the count, ``passerelle
    retry`` does), counted from the NEWEST end of ``history`` (oldest first, as
    :meth:`Ledger.backoff_trail` returns the events a backoff counts) and stopped at
    ``cap``: exact as long as ``history`` holds the newest ``cap`` such events (or all of
    them). For a backoff that stops growing at ``cap`` prior failures, so that its count reads
    a bounded slice of a trail that only grows (one message stuck for a year has ~200k
    events; reading them all, inside the write transaction, stalled the ledger: review of
    SEAM, M2)."""
    count = 0
    for event in reversed(history):
        reason = event.reason or ""
        if reason.startswith(OPERATOR_RETRY) or count >= cap:
            break
        if event.to_status == MessageStatus.FAILED and reason.startswith(prefix):
            count += 1
    return count


class RouteHalted(Exception):
    """Something the relayer must not paper over: an operator has to look (docs/threats.md T21)."""


DOMAIN_RECHECK_FIRST = 5.0
"""Seconds after a domain check that could not be read before it is asked again; doubled
after each one that could not be read either, up to :data:`DOMAIN_RECHECK_MAX`."""
DOMAIN_RECHECK_MAX = 300.0
"""The longest wait between two attempts of an unread domain check."""


class DomainCheck:
    """A chain's own word on its domain, asked until it is read: RouteHalted, one line, if the
    domain its ``side`` ("outbox" or "inbox") says it stamps into its messages or takes
    messages for is not the one the configuration gives ``chain``.

    The stated domain must be settled against the configured one (AdapterError unless the
    endpoints settle it: :func:`relayer.families.evm.origin.local_domain`): a halt stops every
    relayer that takes the route's lease, so one lying endpoint must not be able to call it
    (review of SEAM, M1). What it guards against is a wrong domain id in the configuration;
    either contract already refuses what is not addressed to it, so the caller goes on while
    the domain cannot be read.

    An unread domain is asked again only after a growing wait (:data:`DOMAIN_RECHECK_FIRST`
    doubling to :data:`DOMAIN_RECHECK_MAX`), warned about at its first failure and whenever
    what went wrong changes (the repeats at debug): asked every round, one lying endpoint
    (or a provider refusing ``eth_call``) made a warning, an ``rpc_errors`` and an
    ``eth_call`` per endpoint five times a second, for ever (review of FSEAM, M1)."""

    def __init__(self, side: str, chain: ChainConfig, metrics: RelayerMetrics) -> None:
        self.side = side
        self.chain = chain
        self.read = False
        self._metrics = metrics
        self._failures = 0
        self._due = -math.inf  # trio clock
        self._problem: str | None = None

    async def ask(self, stated: Callable[[], Awaitable[int | None]]) -> bool:
        """Ask ``stated()`` (its domain, None if the chain states none) unless it is read
        already or its wait is not over: this is the one place that decides, so callers call
        it every round. True once the domain is read (now or before), False while it is not;
        an attempt that could not read it counts one ``rpc_errors`` here, the one place that
        knows an attempt was made."""
        if self.read or trio.current_time() < self._due:
            return self.read
        whose = f"{'origin' if self.side == 'outbox' else 'destination'} {self.chain.name}"
        try:
            deployed = await stated()
        except AdapterError as exc:
            self._failures += 1
            wait = min(DOMAIN_RECHECK_FIRST * 2 ** (self._failures - 1), DOMAIN_RECHECK_MAX)
            self._due = trio.current_time() + wait
            problem = one_line(str(exc), ERROR_TEXT_LIMIT)
            log.log(
                logging.WARNING if problem != self._problem else logging.DEBUG,
                "%s: its %s's domain cannot be read now (asking again in %.0f s): %s",
                whose,
                self.side,
                wait,
                problem,
            )
            self._problem = problem
            self._metrics.rpc_errors += 1
            return False
        if deployed is not None and deployed != self.chain.domain:
            raise RouteHalted(
                f"{whose}: its {self.side} was deployed for domain {deployed}, but the "
                f"configuration gives the chain domain {self.chain.domain}; fix the chain's "
                "domain id"
            )
        if self._problem is not None:
            log.info("%s: its %s's domain is read now, as configured", whose, self.side)
        self.read = True
        return True


async def check_outbox_domain(check: DomainCheck, origin: Origin) -> bool:
    """Ask ``check`` (the scan task's one :class:`DomainCheck` of its chain's outbox) for
    :meth:`Origin.stamped_domain`, on the connection the scan reads with, if it is due: a
    wrong domain id in the configuration would record another origin's rows under this
    lease's lock (review RL, M1), so it is RouteHalted. True once read; False if not due or
    if it cannot be read now (the node down, no contract there yet, the endpoints
    disagreeing). The caller asks again every scan round with the SAME check, whose wait
    between attempts grows from 5 s to 5 min (review RFINAL, L1: a fresh check each time
    asked once, at the start, and never again); meanwhile :meth:`Relayer._record_scan`
    refuses every message stamped with another domain before anything is written."""
    return await check.ask(origin.stamped_domain)


class LedgerGap(RouteHalted):
    """The ledger's messages of an origin skip a nonce: no tree, hence no proof, can be built
    above it (``passerelle ledger rebuild`` restores the missing rows)."""


LEDGER_PAGE = 5_000
"""Messages read per ledger query while an origin's tree is rebuilt from the ledger."""


def grow_tree(tree: IncrementalMerkleTree, leaves: Sequence[tuple[int, bytes]], name: str) -> None:
    """Append ``(nonce, id)`` leaves to ``tree`` in nonce order, skipping nonces it already
    has; :class:`LedgerGap` (naming origin ``name``) at the first nonce that does not continue
    it. The one way an origin's accumulator grows from the ledger: the relayer's lanes at
    start-up and when they follow other relayers, and an operator's re-proof."""
    for nonce, message_id in leaves:
        if nonce < tree.count:
            continue
        if nonce != tree.count:
            raise LedgerGap(f"ledger for origin {name} has a gap at nonce {tree.count}")
        tree.append(message_id)


def ledger_tree(ledger: Ledger, origin: int, name: str) -> IncrementalMerkleTree:
    """The tree of every message of origin domain ``origin`` the ledger holds, by nonce, read
    :data:`LEDGER_PAGE` rows at a time (blocking: run it off the event loop in async code).
    :class:`LedgerGap` if the ledger skips a nonce: it is gapless by construction, so a gap
    is damage an operator must see, never something to build over."""
    tree = IncrementalMerkleTree()
    after: tuple[int, int] | None = None
    while True:
        page = ledger.messages(origin=origin, after=after, limit=LEDGER_PAGE)
        grow_tree(tree, [(r.nonce, bytes.fromhex(r.id[2:])) for r in page], name)
        if len(page) < LEDGER_PAGE:
            return tree
        after = (origin, page[-1].nonce)


@dataclass(frozen=True)
class QuorumFound:
    """What the store holds for one checkpoint (:func:`select_quorum`)."""

    signatures: list[SignedCheckpoint] | None
    """Distinct members' signatures over exactly the checkpoint asked about, ascending by
    signer, once they reach the committee's threshold (None below it)."""
    dissent: frozenset[bytes]
    """Members whose valid signature at this index is over ANOTHER checkpoint (another root,
    or outbox): at threshold, the committee disagrees with the tree the caller built."""


def select_quorum(
    committee: Committee, checkpoint: Checkpoint, published: Sequence[SignedCheckpoint]
) -> QuorumFound:
    """Sort the signatures ``published`` for ``checkpoint``'s index into a quorum over exactly
    ``checkpoint`` and dissent (:class:`QuorumFound`).

    The checkpoint store is hostile ground: anyone who can write it can plant files. A
    signature counts only if it recovers, over the checkpoint its file states, to the signer
    the file names, and that signer is a member of ``committee``; it is for ``checkpoint``
    only if that stated checkpoint is ``checkpoint`` (computed by the caller from its own
    tree, never read from the file). A quorum found passes
    :func:`light_clients.committee.verify_attestation` (the gate) before it is returned.
    Used by the relayer's collect loop (against the configured committee) and by an
    operator's re-proof (against the committee an inbox trusts now)."""
    digest = checkpoint.digest()
    good: dict[bytes, SignedCheckpoint] = {}
    dissent: set[bytes] = set()
    for signed in published:
        stated = signed.checkpoint.digest()
        try:
            signer = recover_signer(stated, signed.signature)
        except VerificationError:
            continue
        if signer != signed.signer or signer not in committee.members:
            continue
        if stated == digest:
            good[signer] = signed
        else:
            dissent.add(signer)
    if len(good) < committee.threshold:
        return QuorumFound(None, frozenset(dissent))
    chosen = [good[s] for s in sorted(good)]
    verify_attestation(committee, checkpoint, [s.signature for s in chosen])  # the gate
    return QuorumFound(chosen, frozenset(dissent))


@dataclass
class Lane:
    """One origin as the relayer sees it: its accumulator and its newest stored checkpoint."""

    chain: ChainConfig
    outbox: bytes
    tree: IncrementalMerkleTree = field(default_factory=IncrementalMerkleTree)
    checkpoint_index: int = -1
    attached: tuple[int, int, float] | None = None
    """(stored checkpoint id, tree count, ``time.monotonic()``) when :meth:`Relayer._attach_final`
    last read the origin's ``final`` messages: while neither of the first two changes nothing
    new can be covered, and the read (every ``final`` row of the origin, each a full ORM
    object, every collect round) is skipped until :data:`ATTACH_RECHECK` has passed."""


@dataclass
class RelayerMetrics:
    """Operator-facing numbers (``passerelle relay`` logs them; tests read them)."""

    scanned_blocks: int = 0
    discovered: int = 0
    checkpoints: int = 0
    batches: int = 0
    delivered: int = 0
    already_delivered: int = 0
    redundant_deliveries: int = 0
    """Messages a mined delivery carried that the inbox had already accepted (its
    ``AlreadyDelivered`` in the receipt): gas paid for nothing, e.g. two relayers racing
    (issue #12). ``already_delivered`` counts the ones found delivered before sending."""
    cut_messages: int = 0
    """Messages a mined delivery carried but the inbox did not start for want of gas
    (``BatchCut``): back to ``attested`` for the next batch (docs/design.md, "Cut batches")."""
    handle_failed: int = 0
    dry_run_failures: int = 0
    dry_run_backoffs: int = 0
    """Lone messages whose dry run reverted, failed to be dry-run again after a wait that
    doubles with each such revert (relayer/families/evm/delivery.py, ``dry_run_wait``)."""
    skipped_remarks: int = 0
    proposals: int = 0
    rpc_errors: int = 0
    gas_used: int = 0
    fees_paid: int = 0
    leases_claimed: int = 0
    lease_takeovers: int = 0
    leases_lost: int = 0


@dataclass
class UnpaidWatch:
    """What the re-check of one origin's ``unpaid`` messages remembers between rounds."""

    sweeping: bool = True
    """A sweep (every ``unpaid`` message of the origin, a page a round) is under way; one runs
    at start, as the policy, the rates or payments may have changed while the relayer was
    down."""
    cursor: tuple[int, int] | None = None
    """Where the sweep goes on: after this (origin, nonce)."""
    next_sweep: float = 0.0
    """When (``time.monotonic``) the next sweep starts."""
    logs_after: int | None = None
    """The origin's final block up to which payment logs were read (None: not started)."""


class Relayer:
    """Relays every route of a configuration."""

    def __init__(
        self,
        config: Config,
        ledger: Ledger,
        *,
        poll: float = RELAY_POLL,
        batch_size: int = RELAY_BATCH_SIZE,
        confirm_timeout: float = 120.0,
        max_inflight: int = RELAY_MAX_INFLIGHT,
        metrics_port: int | None = None,
        ready_limits: ReadyLimits | None = None,
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.poll = poll
        self.batch_size = batch_size
        self.confirm_timeout = confirm_timeout
        self.store = open_checkpoint_store(config.checkpoint_location)
        self.metrics = RelayerMetrics()
        self.lanes: dict[int, Lane] = {}
        self._db_limiter = trio.CapacityLimiter(1)
        self.max_inflight = max_inflight
        self.metrics_port = metrics_port
        self.endpoints: dict[str, Sequence[EndpointHealth]] = {}
        self.scan_lag: dict[str, int] = {}
        """Origin name → final blocks not scanned yet, at its last scan (a metric)."""
        self.last_delivered: dict[str, float] = {}
        """Destination name → when deliveries were last recorded there (a metric)."""
        self.last_scan: dict[str, float] = {}
        """Origin name → when it was last scanned successfully (a metric, and /readyz)."""
        self.ready_limits = ready_limits or ReadyLimits()
        self.started_at = time.time()
        self.origins: dict[int, Origin] = {}
        """Origin domain → the scan's open connection to it, shared to read payments (when
        leasing with paid routes, a connection of its own: :meth:`_payment_origins`)."""
        self.lease_seconds = lease_period(config.lease_seconds, ledger)
        """The leases' length when this relayer shares the routes with others (None: alone)."""
        self.holder = new_holder_name()
        """This process's name in the lease tables."""
        self.keeper: LeaseKeeper | None = None
        """Runs the tasks under their leases, once :meth:`run` started (leasing only)."""
        self.unpaid_poll = UNPAID_POLL
        self.unpaid_sweep = UNPAID_SWEEP
        self._unpaid: dict[int, UnpaidWatch] = {}
        """Origin domain → what the re-check of its ``unpaid`` messages remembers."""
        self._reread: set[str] = set()
        """Ids to read again next round: their payment could not be read (their origin
        failing; until it can), or they have just become ``unpaid`` (once: a top-up's log may
        have been read before, while they were still ``attested``)."""
        self._fixed: dict[str, Payment] = {}
        """Payments that can never change (:attr:`Payment.final`: a Substrate origin), read
        once per message, not every round (hostile review of paid delivery, finding 5)."""

    async def db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking ledger call in a worker thread (one at a time)."""
        return await trio.to_thread.run_sync(partial(fn, *args, **kwargs), limiter=self._db_limiter)

    # ------------------------------------------------------------------ startup

    def _load_lanes(self) -> None:
        """Rebuild each origin's accumulator from the ledger (gapless by construction)."""
        for chain in self.config.chains:
            if not chain.is_origin:
                continue
            tree = ledger_tree(self.ledger, chain.domain, chain.name)
            lane = Lane(chain=chain, outbox=chain.outbox_id, tree=tree)
            latest = self.ledger.latest_checkpoint(chain.domain, lane.outbox)
            lane.checkpoint_index = -1 if latest is None else latest.index
            self.lanes[chain.domain] = lane

    async def run(self) -> None:
        """Run until cancelled, SIGINT/SIGTERM, or a :class:`RouteHalted`; LedgerInUse (one
        line) while a rebuild or a migration holds the ledger (:meth:`Ledger.in_use`)."""
        with self.ledger.in_use(exclusive=False, by="a relayer"):
            await self._run()

    async def _run(self) -> None:
        await self.db(self._load_lanes)
        async with trio.open_nursery() as nursery:
            await nursery.start(self._watch_signals, nursery.cancel_scope)
            if self.metrics_port is not None:
                # /readyz: the loops started below in this nursery run, and the ledger answers a
                # primary-key read (cheap; its result does not matter, only that it comes).
                ledger_probe = partial(self.db, self.ledger.get_cursor, 0)
                await nursery.start(
                    serve_metrics,
                    self.metrics_port,
                    self.metrics_text,
                    partial(
                        relay_readiness,
                        nursery,
                        ledger_probe,
                        progress=self.route_progress,
                        limits=self.ready_limits,
                        started=self.started_at,
                    ),
                )
            log.info(
                "relaying: origins %s, destinations %s",
                [lane.chain.name for lane in self.lanes.values()],
                [c.name for c in self.config.chains if c.is_destination],
            )
            # Also without a paid route: unpaid messages left from when one was (the policy
            # went back to "all") must go back to attested, or they would wait for ever.
            unpaid = (await self.db(self.ledger.counts_by_status))[MessageStatus.UNPAID]
            tasks = self.tasks(recheck_unpaid=bool(self.config.relay_policy.any_paid or unpaid))
            if self.lease_seconds is not None:
                nursery.start_soon(self._lease_loop, tasks, self.lease_seconds)
                return
            for name, task in tasks.items():
                nursery.start_soon(task, name=f"{name}_loop")  # *_loop: for /readyz

    def tasks(self, *, recheck_unpaid: bool) -> dict[str, Callable[[], Awaitable[None]]]:
        """Every task of this configuration by name — the leases relayers divide when they
        share the ledger: ``scan:`` and ``collect:`` per origin domain, ``deliver:`` per
        destination domain, and ``unpaid`` with ``recheck_unpaid``."""
        tasks: dict[str, Callable[[], Awaitable[None]]] = {}
        for lane in self.lanes.values():
            tasks[f"scan:{lane.chain.domain}"] = partial(self._scan_loop, lane)
            tasks[f"collect:{lane.chain.domain}"] = partial(self._collect_loop, lane)
        for chain in self.config.chains:
            if chain.is_destination:
                tasks[f"deliver:{chain.domain}"] = partial(self._deliver_loop, chain)
        if recheck_unpaid:
            tasks["unpaid"] = self._unpaid_loop
        return tasks

    async def _lease_loop(
        self, tasks: dict[str, Callable[[], Awaitable[None]]], lease_seconds: float
    ) -> None:
        """Run each task while this relayer holds its lease (:class:`LeaseKeeper`). Every
        ledger write is fenced from here on: one from outside a lease is refused.

        First the lease of its key (``key:<address>``), held for the process's whole life:
        while another live relayer sends with the same key (the same ``--index``, or another
        index the config aliases to the same key), this one refuses to start with
        :class:`KeyInUse` (one line), as two processes on one key take each other's nonces. A
        holder that may have just died (this very relayer before a quick restart) is waited
        for: :func:`relayer.leases.pin_key`. Once taken, the key lease is given back however
        start-up ends (an origin down, a signal), so a restart is not refused by it.
        The ledger is bounded for sharing meanwhile (:func:`relayer.leases.leasing`): writes
        fenced, a write stuck behind a frozen writer failing as ``LedgerBusy`` after a quarter
        lease, a frozen writer's session ended after a lease period. With short leases (under
        8 s) the write bound's floor reaches a quarter lease or more, and fencing is what keeps
        a late write out."""
        board = LeaseBoard(
            self.ledger, list(tasks), holder=self.holder, lease_seconds=lease_seconds
        )
        if self.config.relayer_key is not None:
            address = self.relayer_signer().address
            await pin_key(board, key_lease_name(address), self._db_limiter)
            log.info("holding the lease of key 0x%s for this relayer's life", address.hex())
        try:
            self.keeper = LeaseKeeper(board, tasks, self.metrics)
            log.info(
                "sharing %d task(s) with the relayers on this ledger as %s (leases of %g s)",
                len(tasks),
                self.holder,
                lease_seconds,
            )
            with leasing(self.ledger, lease_seconds):
                async with trio.open_nursery() as nursery:
                    if self.config.relay_policy.any_paid:
                        await nursery.start(self._payment_origins)
                    await self.keeper.run()
        finally:
            # keeper.run() gives everything back when it ran (its leave() empties pinned);
            # start-up that failed before it (an origin RPC down, SIGTERM while connecting)
            # must not leave the key lease to refuse this relayer's own restart.
            pinned = list(board.pinned.values())
            if pinned:
                with trio.CancelScope(shield=True):
                    try:
                        await trio.to_thread.run_sync(
                            board.release, pinned, limiter=self._db_limiter
                        )
                        board.pinned.clear()
                    except LedgerError as exc:
                        log.warning("could not give the key lease back: %s", exc)

    async def _payment_origins(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Leasing with paid routes: a connection to every origin in :attr:`origins`, to read
        payments. Without leases the scan's connection serves, but a leasing relayer delivers
        (and re-checks ``unpaid``) messages of origins that another relayer scans."""
        async with AsyncExitStack() as stack:
            opened: dict[int, Origin] = {}
            for lane in self.lanes.values():
                connecting = family_of(lane.chain).open_origin(
                    self.config, lane.chain, role="relayer-payments"
                )
                opened[lane.chain.domain] = await stack.enter_async_context(connecting)
            self.origins.update(opened)  # before any task: their scans then keep these
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                for domain, origin in opened.items():
                    if self.origins.get(domain) is origin:
                        del self.origins[domain]

    async def follow(self, lane: Lane) -> None:
        """Leasing only: bring ``lane`` up to the ledger — the newest checkpoint and the
        messages that other relayers' scan and collect recorded (this relayer may hold neither
        lease of the origin, or took them over). Gapless as at start-up (RouteHalted if not).

        The checkpoint is read first: the messages it covers were in the ledger before it was,
        so after the messages are read the tree always covers ``checkpoint_index``."""
        if self.keeper is None:
            return
        domain = lane.chain.domain
        latest = await self.db(self.ledger.latest_checkpoint, domain, lane.outbox)
        while True:
            after = (domain, lane.tree.count - 1) if lane.tree.count else None
            page = await self.db(
                self.ledger.messages, origin=domain, after=after, limit=LEDGER_PAGE
            )
            # Another task of this relayer may have grown the tree meanwhile: skip what it has.
            grow_tree(
                lane.tree, [(r.nonce, bytes.fromhex(r.id[2:])) for r in page], lane.chain.name
            )
            if len(page) < LEDGER_PAGE:
                break
        if latest is not None and latest.index > lane.checkpoint_index:
            lane.checkpoint_index = latest.index

    async def follow_origins(self, destination: int) -> None:
        """Leasing only: :meth:`follow` every lane that can route to ``destination`` (all but
        its own), at the start of each delivery round.

        A relayer that took a ``deliver:`` lease over may hold no lease of those origins: its
        lanes are then as old as its start. The delivery judges "delivered" by the attested
        leaf at each nonce (:func:`relayer.families.evm.delivery.attested_leaf`); on a stale
        lane every message the predecessor delivered reads as not attested, so it would be
        moved back to ``attested`` and sent again (an ``AlreadyDelivered`` each, paid for)."""
        if self.keeper is None:
            return
        for domain, lane in self.lanes.items():
            if domain != destination:
                await self.follow(lane)

    async def _deliver_loop(self, chain: ChainConfig) -> None:
        """Run the delivery of ``chain``'s family (a task named ``*_loop``, for /readyz). A
        family whose destination states the domain it takes messages for checks it on its
        own connection (:class:`DomainCheck`, "inbox"), until it was read."""
        await family_of(chain).delivery(chain, self).run()

    async def metrics_text(self) -> str:
        """The Prometheus exposition: counters, the ledger backlog, each route's backlog and
        age, each origin's scan lag, each destination's last delivery, and RPC health."""
        backlog = await self.db(self.ledger.counts_by_status)
        pending = await self.db(self.ledger.pending_by_route)
        names = {chain.domain: chain.name for chain in self.config.chains}
        now = time.time()
        routes = [
            (names.get(o, str(o)), names.get(d, str(d)), count, max(0.0, now - oldest))
            for o, d, count, oldest in pending
        ]
        return render(
            self.metrics,
            {str(k): v for k, v in backlog.items()},
            self.endpoints,
            routes=routes,
            scan_lag=self.scan_lag,
            last_delivered=self.last_delivered,
            last_scan=self.last_scan,
            leases_held=None if self.keeper is None else self.keeper.holding(),
        )

    async def route_progress(self) -> list[RouteProgress]:
        """Each route's progress, for /readyz (:func:`relayer.metrics.route_progress`)."""
        pending = await self.db(self.ledger.pending_by_route)
        scans = delivers = None
        if self.keeper is not None:  # sharing the routes: judge only this relayer's share
            scans = self.keeper.held_domains("scan")
            delivers = self.keeper.held_domains("deliver")
        return route_progress(
            self.config.chains,
            pending,
            self.scan_lag,
            self.last_scan,
            now=time.time(),
            scans=scans,
            delivers=delivers,
        )

    @staticmethod
    async def _watch_signals(
        scope: trio.CancelScope, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for signum in signals:
                log.info("received %s, shutting down", signal.Signals(signum).name)
                scope.cancel()
                return

    # ------------------------------------------------------------------ scanning

    async def _scan_loop(self, lane: Lane) -> None:
        async with family_of(lane.chain).open_origin(
            self.config, lane.chain, role="relayer-scan"
        ) as origin:
            self.endpoints[f"{lane.chain.name}/scan"] = origin.endpoints
            # One per scan task: its back-off too.
            outbox = DomainCheck("outbox", lane.chain, self.metrics)
            self.origins.setdefault(lane.chain.domain, origin)  # a payments' one stays
            try:
                while True:
                    # Each round: the check's own wait decides whether it asks (and counts
                    # one rpc_errors per attempt that could not read the domain).
                    await check_outbox_domain(outbox, origin)
                    try:
                        caught_up = await self._scan_once(lane, origin)
                        self.last_scan[lane.chain.name] = time.time()
                    except VerificationError as exc:
                        self.metrics.rpc_errors += 1
                        log.error(
                            "scan %s: the node served an invalid proof: %s", lane.chain.name, exc
                        )
                        caught_up = True
                    except AdapterError as exc:  # RpcError, MalformedAnswer too
                        self.metrics.rpc_errors += 1
                        log.warning("scan %s: %s", lane.chain.name, exc)
                        caught_up = True
                    if caught_up:
                        await trio.sleep(self.poll)
            finally:
                if self.origins.get(lane.chain.domain) is origin:
                    del self.origins[lane.chain.domain]

    async def _resume_point(
        self, lane: Lane, block_hash: Callable[[int], Awaitable[bytes | None]]
    ) -> int:
        """The next block to scan; RouteHalted if the last block scanned is no longer canonical
        (a reorg below the finality policy: nothing recorded may be trusted to stand)."""
        cursor = await self.db(self.ledger.get_cursor, lane.chain.domain)
        next_block = lane.chain.start_block if cursor is None else cursor.next_block
        if cursor is not None and cursor.last_block_hash and next_block > 0:
            canonical = await block_hash(next_block - 1)
            if canonical is not None and "0x" + canonical.hex() != cursor.last_block_hash:
                raise RouteHalted(
                    f"origin {lane.chain.name}: block {next_block - 1} changed after it was final "
                    f"({cursor.last_block_hash} → 0x{canonical.hex()}); the finality policy "
                    f"{lane.chain.finality} was violated, not resuming"
                )
        return next_block

    async def _scan_once(self, lane: Lane, origin: Origin) -> bool:
        """Scan the next chunk of final blocks; True when there is nothing left to scan.

        The family finds the messages and vouches for their nonces (:meth:`Origin.scan`); the
        relayer records them with the cursor in one ledger transaction, then grows its tree."""
        # The hash of the last block scanned as the origin's trusted endpoints agree on it, not
        # one answer: one lying endpoint must not be able to stage a "reorg below finality".
        await self.follow(lane)
        next_block = await self._resume_point(lane, origin.block_hash)
        final = await origin.final_head()
        if final.number < next_block:
            self.scan_lag[lane.chain.name] = 0
            return True
        first = lane.tree.count
        scanned = await origin.scan(lane.tree, next_block, final)
        await self.db(self._record_scan, lane, scanned.messages, scanned.end, scanned.end_hash)
        # Through grow_tree: another task's follow() may have appended these from the ledger
        # between the record and here.
        grow_tree(
            lane.tree, [(first + at, mid) for at, mid in enumerate(scanned.ids)], lane.chain.name
        )
        self.scan_lag[lane.chain.name] = final.number - scanned.end
        self.metrics.scanned_blocks += scanned.end - next_block + 1
        self.metrics.discovered += len(scanned.ids)
        self.metrics.skipped_remarks += scanned.skipped
        return scanned.end == final.number

    def _record_scan(
        self,
        lane: Lane,
        found: Sequence[DiscoveredMessage],
        end: int,
        end_hash: bytes | None,
    ) -> None:
        routed = {c.domain for c in self.config.chains if c.is_destination}
        destinations: dict[bytes, int] = {}
        for discovered in found:
            message = decode_message(discovered.message)
            if message.origin != lane.chain.domain:
                # The chain's outbox stamps its own domain into every message: a different one
                # means the configuration gave this chain another chain's domain id. Recording
                # would write rows of another origin, which another lease covers.
                raise RouteHalted(
                    f"origin {lane.chain.name}: its outbox sent a message of origin "
                    f"{message.origin}, but the configuration gives it domain "
                    f"{lane.chain.domain}; fix the chain's domain id"
                )
            destinations[keccak256(discovered.message)] = message.destination
        with self.ledger.atomic() as batch:
            batch.record_discovered(found)
            final = [i for i, dest in destinations.items() if dest in routed]
            unrouted = [i for i, dest in destinations.items() if dest not in routed]
            batch.transition(final, MessageStatus.FINAL)
            if unrouted:
                batch.transition(
                    unrouted, MessageStatus.SKIPPED, reason="no configured route to destination"
                )
            batch.set_cursor(lane.chain.domain, end + 1, end_hash)

    # ------------------------------------------------------------------ checkpoints

    async def _collect_loop(self, lane: Lane) -> None:
        while True:
            await self._collect_once(lane)
            await trio.sleep(self.poll)

    async def _collect_once(self, lane: Lane) -> None:
        """Adopt the newest checkpoint a committee quorum signed over our own root."""
        await self.follow(lane)
        origin = lane.chain.domain
        # The store is a directory: read it in a worker thread, never on the event loop.
        members = self.config.committee.members  # only their slots: others may plant thousands
        indices = await trio.to_thread.run_sync(
            self.store.latest_indices, origin, lane.outbox, members
        )
        for index in indices:
            if index <= lane.checkpoint_index:
                break
            if index >= lane.tree.count:
                continue  # signed past what we scanned: wait for the scanner
            checkpoint = Checkpoint(
                origin=origin, outbox=lane.outbox, root=lane.tree.root(index + 1), index=index
            )
            published = await trio.to_thread.run_sync(
                self.store.signatures, origin, lane.outbox, index, members
            )
            signatures = self._quorum(checkpoint, published)
            if signatures is None:
                continue
            await self.db(self._record_checkpoint, checkpoint, signatures)
            lane.checkpoint_index = index
            self.metrics.checkpoints += 1
            log.info("origin %s: checkpoint %d attested", lane.chain.name, index)
            break
        if lane.checkpoint_index >= 0:
            await self.db(self._attach_final, lane)

    def _quorum(
        self, checkpoint: Checkpoint, published: Sequence[SignedCheckpoint]
    ) -> list[SignedCheckpoint] | None:
        """Signatures of distinct members over exactly ``checkpoint``, if they reach threshold
        (:func:`select_quorum`); RouteHalted if a quorum signed another root there."""
        committee = self.config.committee
        found = select_quorum(committee, checkpoint, published)
        dissent = found.dissent
        if len(dissent) >= committee.threshold:
            raise RouteHalted(
                f"a committee quorum signed a different root at index {checkpoint.index} of origin "
                f"{checkpoint.origin} than this relayer computed from the chain: not relaying"
            )
        if dissent:
            log.error(
                "attesters %s signed another root at index %d", sorted(dissent), checkpoint.index
            )
        return found.signatures

    def _record_checkpoint(
        self, checkpoint: Checkpoint, signatures: Sequence[SignedCheckpoint]
    ) -> None:
        first = signatures[0]
        with self.ledger.atomic() as batch:
            checkpoint_id = batch.save_checkpoint(
                checkpoint.origin,
                checkpoint.outbox,
                checkpoint.root,
                checkpoint.index,
                block_number=first.block_number,
                block_hash=first.block_hash,
            )
            for signed in signatures:
                batch.add_signature(checkpoint_id, signed.signer, signed.signature)

    def _attach_final(self, lane: Lane) -> None:
        """Move final messages covered by the newest checkpoint to ``attested``.

        Only when there can be some not moved yet (:attr:`Lane.attached`): a new checkpoint,
        new messages in the lane's tree (this relayer's scan, or another's through
        :meth:`follow`), or :data:`ATTACH_RECHECK` seconds since the last read."""
        latest = self.ledger.latest_checkpoint(lane.chain.domain, lane.outbox)
        if latest is None or latest.id is None:
            return
        # Taken before the read: a scan that records and grows the tree meanwhile changes the
        # count, so the next round reads again.
        seen, now = (latest.id, lane.tree.count), time.monotonic()
        last = lane.attached
        if last is not None and last[:2] == seen and now - last[2] < ATTACH_RECHECK:
            return
        finals = self.ledger.by_status(
            MessageStatus.FINAL, limit=ATTACH_PAGE, origin=lane.chain.domain
        )
        covered = [m.id for m in finals if m.nonce <= latest.index]
        if covered:
            self.ledger.transition(covered, MessageStatus.ATTESTED, checkpoint_id=latest.id)
        # A full page may have left covered messages behind it: the next round reads again.
        lane.attached = (*seen, now) if len(finals) < ATTACH_PAGE else None

    # ------------------------------------------------------------------ for every delivery
    # A family's Delivery (relayer.family) runs the delivery to its chains its own way, but
    # through these: the ledger, the relay policy, the attestation gate and the light client.

    def relayer_signer(self) -> Signer:
        """The signer of the ``[relayer]`` key deliveries are paid with
        (:func:`relayer.signer.evm_signer`: no key bytes leave it); RouteHalted without one."""
        if self.config.relayer_key is None:
            raise RouteHalted("no [relayer] key configured: cannot deliver")
        return evm_signer(self.config.relayer_key)

    def requeue_due(self, destination: int) -> None:
        """Failed messages to ``destination`` whose retry time has come go back to attested."""
        due = self.ledger.due_for_retry(limit=self.batch_size, destination=destination)
        if due:
            self.ledger.transition([m.id for m in due], MessageStatus.ATTESTED)

    async def admitted(self, group: Sequence[MessageRecord]) -> list[MessageRecord]:
        """``group`` without what the operator's relay policy refuses; those are recorded as
        ``skipped`` with the policy's reason (an operator re-queues them after changing it).

        On a route that delivers paid messages only, a message whose payment does not cover
        its delivery now — or cannot be read now (its origin not connected yet, or failing) —
        is recorded ``unpaid`` (never failed: it waits for a top-up, or for its origin, which
        :meth:`_unpaid_loop` notices)."""
        policy = self.config.relay_policy
        refused: dict[str, list[str]] = defaultdict(list)
        admitted: list[MessageRecord] = []
        for record in group:
            reason = policy.refusal(decode_message(record.message))
            if reason is None:
                admitted.append(record)
            else:
                refused[reason].append(record.id)
        for reason, ids in refused.items():
            log.info("relay policy refuses %d message(s): %s", len(ids), reason)
            await self.db(
                self.ledger.transition, ids, MessageStatus.SKIPPED, reason=f"relay policy: {reason}"
            )
        if not policy.any_paid:
            return admitted
        payments = await self.payments(admitted)
        unpaid: dict[str, list[str]] = defaultdict(list)
        paid: list[MessageRecord] = []
        for record in admitted:
            rule = policy.route_payment(record.origin, record.destination)
            if not rule.paid_only:
                paid.append(record)
            elif record.id not in payments:
                # Not readable now: waiting here (re-read every unpaid_poll) rather than staying
                # attested, which would have the delivery pick it up, and fail to decide it,
                # in every round.
                origin = self.config.chain(record.origin).name
                unpaid[f"its payment cannot be read on {origin} now"].append(record.id)
            elif payments[record.id].covers:
                paid.append(record)
            else:
                unpaid[self._describe(record, payments[record.id])].append(record.id)
        for reason, ids in unpaid.items():
            log.info("%d message(s) wait unpaid: %s", len(ids), reason)
            await self.db(self.ledger.transition, ids, MessageStatus.UNPAID, reason=reason)
            self._reread.update(ids)
        return paid

    async def payments(self, records: Sequence[MessageRecord]) -> dict[str, Payment]:
        """The payments of those ``records`` whose route delivers paid messages only, read on
        their origins (:func:`relayer.payments.read_payments`). An origin that cannot be read
        now (not connected yet, its nodes failing) gives no entries: those messages are not
        decided this round, and :meth:`recheck_unpaid` re-reads them every round. A payment
        that can never change (:attr:`Payment.final`) is read once and remembered."""
        policy = self.config.relay_policy
        by_origin: dict[int, list[MessageRecord]] = defaultdict(list)
        found: dict[str, Payment] = {}
        for record in records:
            if not policy.route_payment(record.origin, record.destination).paid_only:
                continue
            if record.id in self._fixed:
                found[record.id] = self._fixed[record.id]
                self._reread.discard(record.id)
            else:
                by_origin[record.origin].append(record)
        for domain, group in by_origin.items():
            origin = self.origins.get(domain)
            chain = self.config.chain(domain)
            rule = partial(policy.route_payment, domain)
            read: dict[str, Payment] = {}
            if origin is not None:  # else the scan has not connected yet
                try:
                    read = await route_payments(chain, origin, group, rule)
                except AdapterError as exc:
                    self.metrics.rpc_errors += 1
                    log.warning("payments on %s: %s", chain.name, exc)
            for record in group:
                if record.id not in read:
                    self._reread.add(record.id)
                    continue
                self._reread.discard(record.id)
                payment = found[record.id] = read[record.id]
                if payment.final and not payment.covers:
                    self._fixed[record.id] = payment
        return found

    def _describe(self, record: MessageRecord, payment: Payment) -> str:
        names = {c.domain: c.name for c in self.config.chains}
        return payment.describe(
            names.get(record.origin, str(record.origin)),
            names.get(record.destination, str(record.destination)),
        )

    async def _unpaid_loop(self) -> None:
        """Every :attr:`unpaid_poll` seconds, :meth:`recheck_unpaid`. An origin or destination
        that cannot be read (counted in ``rpc_errors``), or a message someone else (an
        operator's ``skip``, another relayer) moved meanwhile, is logged, and the next round
        tries again. A write outside its lease's domain (:class:`WriteOutsideDomain`) is
        raised: the lease keeper stops the lease for good (unreachable today, as the
        ``unpaid`` lease has no domain; kept for a scoped one). Ends once no route is paid and
        no message waits ``unpaid`` (nothing can become unpaid any more)."""
        while True:
            try:
                await self.recheck_unpaid()
                if not self.config.relay_policy.any_paid:
                    counts = await self.db(self.ledger.counts_by_status)
                    if not counts[MessageStatus.UNPAID]:
                        log.info("no unpaid message left and no paid route: re-check ends")
                        return
            except AdapterError as exc:
                self.metrics.rpc_errors += 1
                log.warning("unpaid re-check: %s", exc)
            except (UnknownRecord, IllegalTransition, InvalidReference) as exc:
                # As _deliver_loop: someone moved a message between our read and our write.
                log.error("unpaid re-check: not recorded: %s", exc)
            await trio.sleep(self.unpaid_poll)

    async def recheck_unpaid(self) -> int:
        """One round over the ``unpaid`` messages of every origin; the number moved.

        Which ones are read (hostile review of paid delivery, findings 5-7):

        - paid or topped up since the last round: the origin's payment logs between the final
          block last read and the final block now (:func:`relayer.payments.paid_since`), so a
          top-up is seen in the next round however many unpaid messages wait;
        - those whose payment could not be read before (their origin was failing), and those
          that just became ``unpaid``, once;
        - a sweep's page (:data:`UNPAID_PAGE`): every ``unpaid`` message of the origin, at
          start and then every :attr:`unpaid_sweep` seconds. It records ``delivered`` those the
          destination shows delivered in its final state (someone else carried them), moves
          those whose route no longer asks for payment, and re-reads the rest, except payments
          that can never change (:attr:`relayer.payments.Payment.final`), read once.

        A message whose payment now covers its delivery goes back to ``attested``; the delivery
        checks the payment once more, at its own time, before sending. Only messages still
        ``unpaid`` when written are moved (an operator may ``skip`` one meanwhile)."""
        moved = 0
        for lane in self.lanes.values():
            watch = self._unpaid.setdefault(lane.chain.domain, UnpaidWatch())
            candidates = await self._paid_since(lane.chain, watch)
            if not watch.sweeping and time.monotonic() >= watch.next_sweep:
                watch.sweeping = True
            if watch.sweeping:
                page, delivered = await self._sweep_page(lane.chain, watch)
                moved += delivered
                candidates |= {r.id: r for r in page}
            moved += await self._release_covered(list(candidates.values()))
        return moved

    async def _paid_since(self, chain: ChainConfig, watch: UnpaidWatch) -> dict[str, MessageRecord]:
        """The ``unpaid`` messages of ``chain`` paid or topped up since the last round, and
        those whose payment could not be read; an origin that cannot be read now keeps its
        block, so no payment log is skipped."""
        ids = set(self._reread)
        origin = self.origins.get(chain.domain)
        if origin is not None and takes_payment(chain):
            try:
                seen = await paid_since(chain, origin, watch.logs_after)
            except AdapterError as exc:
                self.metrics.rpc_errors += 1
                log.warning("payment logs on %s: %s", chain.name, exc)
            else:
                if seen is not None:
                    watch.logs_after, paid = seen
                    ids |= paid
        if not ids:
            return {}
        records = await self.db(lambda: [self.ledger.get(i) for i in sorted(ids)])
        found: dict[str, MessageRecord] = {}
        for message_id, record in zip(sorted(ids), records, strict=True):
            if record is None or record.status != MessageStatus.UNPAID:
                self._reread.discard(message_id)  # moved on: nothing left to re-read
            elif record.origin == chain.domain:
                found[message_id] = record
        return found

    async def _sweep_page(
        self, chain: ChainConfig, watch: UnpaidWatch
    ) -> tuple[list[MessageRecord], int]:
        """The sweep's next page of ``chain``'s ``unpaid`` messages, without those the
        destination shows delivered (recorded ``delivered``: the second number)."""
        domain = chain.domain
        page = await self.db(
            self.ledger.messages,
            origin=domain,
            status=MessageStatus.UNPAID,
            after=watch.cursor,
            limit=UNPAID_PAGE,
        )
        if len(page) == UNPAID_PAGE:
            watch.cursor = (domain, page[-1].nonce)
        else:  # the sweep is done: the next one starts from the oldest, later
            watch.sweeping, watch.cursor = False, None
            watch.next_sweep = time.monotonic() + self.unpaid_sweep
        delivered: set[str] = set()
        by_destination: dict[int, list[MessageRecord]] = defaultdict(list)
        for record in page:
            by_destination[record.destination].append(record)
        outboxes = {d: lane.outbox for d, lane in self.lanes.items()}
        for destination, group in by_destination.items():
            target = self.config.chain(destination)
            try:
                flags = await family_of(target).final_delivered(
                    self.config, target, [r.message for r in group], outboxes
                )
            except AdapterError as exc:
                self.metrics.rpc_errors += 1
                log.warning("delivered flags on %s: %s", target.name, exc)
                continue
            delivered |= {r.id for r, flag in zip(group, flags, strict=True) if flag}
        if delivered:
            reason = "delivered on its destination by someone else (final)"
            moved = await self._move_unpaid(sorted(delivered), MessageStatus.DELIVERED, reason)
            self.metrics.already_delivered += moved
        else:
            moved = 0
        return [r for r in page if r.id not in delivered], moved

    async def _release_covered(self, records: Sequence[MessageRecord]) -> int:
        """Move back to ``attested`` those of ``records`` (all ``unpaid``) whose route no longer
        asks for payment or whose payment now covers their delivery; the number moved."""
        if not records:
            return 0
        policy = self.config.relay_policy
        payments = await self.payments(records)
        due: dict[str, list[str]] = defaultdict(list)
        for record in records:
            if not policy.route_payment(record.origin, record.destination).paid_only:
                due["its route no longer asks for payment"].append(record.id)
            elif record.id in payments and payments[record.id].covers:
                due[self._describe(record, payments[record.id])].append(record.id)
        moved = 0
        for reason, ids in due.items():
            log.info("%d unpaid message(s) to deliver: %s", len(ids), reason)
            moved += await self._move_unpaid(ids, MessageStatus.ATTESTED, reason)
        return moved

    async def _move_unpaid(self, ids: Sequence[str], to: MessageStatus, reason: str) -> int:
        """Move those of ``ids`` that are still ``unpaid`` to ``to``, in one transaction (an
        operator's ``skip`` between our read and this write leaves that one skipped); the
        number moved."""
        moved = await self.db(self._move_still_unpaid, ids, to, reason)
        for message_id in moved:
            self._fixed.pop(message_id, None)
            self._reread.discard(message_id)
        return len(moved)

    def _move_still_unpaid(self, ids: Sequence[str], to: MessageStatus, reason: str) -> list[str]:
        with self.ledger.atomic() as batch:
            # Read under the batch's write lock (as LedgerBatch.movable does), but narrower:
            # only ``unpaid`` ones, so a message already moved on is never moved back.
            still = [
                message_id
                for message_id in ids
                if (record := batch.get(message_id)) is not None
                and record.status == MessageStatus.UNPAID
            ]
            if still:
                batch.transition(still, to, reason=reason)
        return still

    def checkpoint_for(self, lane: Lane) -> tuple[Checkpoint, list[bytes]]:
        """The newest stored checkpoint of ``lane`` and its signatures in signer order, passed
        through ``verify_attestation`` against the configured committee (the light client is
        the gate before anything is sent). RouteHalted, one line, if it no longer verifies: the
        ledger holds signatures of another committee (the configuration changed under it) and
        nothing should be delivered until an operator has looked."""
        record = self.ledger.latest_checkpoint(lane.chain.domain, lane.outbox)
        if record is None or record.id is None:
            raise RouteHalted(f"attested messages of {lane.chain.name} but no checkpoint stored")
        checkpoint = Checkpoint(
            origin=record.origin,
            outbox=bytes.fromhex(record.outbox[2:]),
            root=bytes.fromhex(record.root[2:]),
            index=record.index,
        )
        # Exactly ``threshold`` signatures (in ascending signer order): each extra one costs
        # ~3.3k gas on chain and proves nothing more.
        stored = self.ledger.signatures(record.id)[: self.config.committee.threshold]
        signatures = [s.signature for s in stored]
        try:
            verify_attestation(self.config.committee, checkpoint, signatures)
        except VerificationError as exc:
            raise RouteHalted(
                f"the stored checkpoint {checkpoint.index} of origin {lane.chain.name} does not "
                f"verify against the configured committee ({exc}); was the committee changed? "
                "not delivering"
            ) from None
        return checkpoint, signatures

    async def fail(self, ids: Sequence[str], reason: str, records: Sequence[MessageRecord]) -> None:
        """Record ``ids`` failed with ``reason``, retried after a backoff that grows with the
        records' attempts (:data:`RETRY_BACKOFF`)."""
        attempts = max((r.attempts for r in records), default=0)
        delay = RETRY_BACKOFF[min(attempts, len(RETRY_BACKOFF) - 1)]
        log.warning("%d message(s) failed (%s); retry in %.0f s", len(ids), reason, delay)
        await self.db(
            self.ledger.transition,
            ids,
            MessageStatus.FAILED,
            reason=reason,
            retry_at=time.time() + delay,
        )

    async def proven(
        self,
        chain: ChainConfig,
        lane: Lane,
        checkpoint: Checkpoint,
        records: Sequence[MessageRecord],
    ) -> list[tuple[MessageRecord, Sequence[bytes]]]:
        """Each record with its branch under ``checkpoint``, checked exactly as the destination
        will check it; one that fails is recorded as failed with the reason, and left out."""
        # Leasing: the checkpoint may be another relayer's, newer than this lane has seen.
        await self.follow(lane)
        proven: list[tuple[MessageRecord, Sequence[bytes]]] = []
        for record in records:
            branch = lane.tree.proof(record.nonce, checkpoint.index + 1)
            try:
                verify_message_inclusion(
                    record.message,
                    checkpoint,
                    branch,
                    local_domain=chain.domain,
                    outbox=lane.outbox,
                )
            except VerificationError as exc:
                await self.fail([record.id], f"light client rejected it: {exc}", [record])
                continue
            proven.append((record, branch))
        return proven
