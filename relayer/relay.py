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

The ledger is the source of truth for progress (a restarted relayer resumes from it, and
re-checks every transaction left pending); the destination chain's final state is the source
of truth for delivery.
"""

from __future__ import annotations

import logging
import signal
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import trio

from adapters.errors import AdapterError
from adapters.rpc import EndpointHealth
from light_clients.committee import Checkpoint, recover_signer, verify_attestation
from light_clients.errors import VerificationError
from light_clients.hashing import keccak256
from light_clients.merkle import IncrementalMerkleTree
from light_clients.message import decode_message, verify_message_inclusion
from relayer.checkpoints import SignedCheckpoint, open_checkpoint_store
from relayer.config import RELAY_BATCH_SIZE, RELAY_MAX_INFLIGHT, RELAY_POLL, ChainConfig, Config
from relayer.family import Origin, family_of
from relayer.ledger import (
    DiscoveredMessage,
    Ledger,
    MessageRecord,
    MessageStatus,
    StatusEvent,
)
from relayer.metrics import relay_readiness, render, serve_metrics

log = logging.getLogger("passerelle.relayer")
T = TypeVar("T")

RETRY_BACKOFF = (2.0, 5.0, 15.0, 60.0, 300.0)  # seconds, by attempt; then the last one
MAX_DELIVERY_ATTEMPTS = 5
"""Failed deliveries of one message (reverting alone on chain, or a proposal never executed)
before the relayer leaves it ``failed`` for good (an operator can re-queue it). A transfer a
committee can show undeliverable is refunded on the first one; this bounds everything else."""
OPERATOR_RETRY = "retried by the operator"
"""Reason of a ``passerelle retry``: the attempts counted towards the limit start again."""


def failures_since_retry(history: Sequence[StatusEvent], prefix: str) -> int:
    """How often the message failed with a reason starting with ``prefix`` since an operator
    last retried it (oldest-first ``history``, the ledger's audit trail: restarts do not reset
    the count, ``passerelle retry`` does)."""
    count = 0
    for event in history:
        reason = event.reason or ""
        if reason.startswith(OPERATOR_RETRY):
            count = 0
        elif event.to_status == MessageStatus.FAILED and reason.startswith(prefix):
            count += 1
    return count


class RouteHalted(Exception):
    """Something the relayer must not paper over: an operator has to look (docs/threats.md T21)."""


@dataclass
class Lane:
    """One origin as the relayer sees it: its accumulator and its newest stored checkpoint."""

    chain: ChainConfig
    outbox: bytes
    tree: IncrementalMerkleTree = field(default_factory=IncrementalMerkleTree)
    checkpoint_index: int = -1


@dataclass
class RelayerMetrics:
    """Operator-facing numbers (``passerelle relay`` logs them; tests read them)."""

    scanned_blocks: int = 0
    discovered: int = 0
    checkpoints: int = 0
    batches: int = 0
    delivered: int = 0
    already_delivered: int = 0
    handle_failed: int = 0
    dry_run_failures: int = 0
    skipped_remarks: int = 0
    proposals: int = 0
    rpc_errors: int = 0
    gas_used: int = 0
    fees_paid: int = 0


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

    async def db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking ledger call in a worker thread (one at a time)."""
        return await trio.to_thread.run_sync(partial(fn, *args, **kwargs), limiter=self._db_limiter)

    # ------------------------------------------------------------------ startup

    def _load_lanes(self) -> None:
        """Rebuild each origin's accumulator from the ledger (gapless by construction)."""
        for chain in self.config.chains:
            if not chain.is_origin:
                continue
            lane = Lane(chain=chain, outbox=chain.outbox_id)
            after: tuple[int, int] | None = None
            while True:
                page = self.ledger.messages(origin=chain.domain, after=after, limit=5_000)
                for record in page:
                    if record.nonce != lane.tree.count:
                        raise RouteHalted(
                            f"ledger for origin {chain.name} has a gap at nonce {lane.tree.count}"
                        )
                    lane.tree.append(bytes.fromhex(record.id[2:]))
                if len(page) < 5_000:
                    break
                after = (chain.domain, page[-1].nonce)
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
                    partial(relay_readiness, nursery, ledger_probe),
                )
            log.info(
                "relaying: origins %s, destinations %s",
                [lane.chain.name for lane in self.lanes.values()],
                [c.name for c in self.config.chains if c.is_destination],
            )
            for lane in self.lanes.values():
                nursery.start_soon(self._scan_loop, lane)
                nursery.start_soon(self._collect_loop, lane)
            for chain in self.config.chains:
                if chain.is_destination:
                    nursery.start_soon(self._deliver_loop, chain)

    async def _deliver_loop(self, chain: ChainConfig) -> None:
        """Run the delivery of ``chain``'s family (a task named ``*_loop``, for /readyz)."""
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
            while True:
                try:
                    caught_up = await self._scan_once(lane, origin)
                except VerificationError as exc:
                    self.metrics.rpc_errors += 1
                    log.error("scan %s: the node served an invalid proof: %s", lane.chain.name, exc)
                    caught_up = True
                except AdapterError as exc:  # RpcError, MalformedAnswer too
                    self.metrics.rpc_errors += 1
                    log.warning("scan %s: %s", lane.chain.name, exc)
                    caught_up = True
                if caught_up:
                    await trio.sleep(self.poll)

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
        next_block = await self._resume_point(lane, origin.block_hash)
        final = await origin.final_head()
        if final.number < next_block:
            self.scan_lag[lane.chain.name] = 0
            return True
        scanned = await origin.scan(lane.tree, next_block, final)
        await self.db(self._record_scan, lane, scanned.messages, scanned.end, scanned.end_hash)
        for message_id in scanned.ids:
            lane.tree.append(message_id)
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
        destinations = {keccak256(d.message): decode_message(d.message).destination for d in found}
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
        """Signatures of distinct members over exactly ``checkpoint``, if they reach threshold."""
        committee = self.config.committee
        digest = checkpoint.digest()
        good: dict[bytes, SignedCheckpoint] = {}
        dissent: set[bytes] = set()
        for signed in published:
            try:
                signer = recover_signer(signed.checkpoint.digest(), signed.signature)
            except VerificationError:
                continue
            if signer != signed.signer or signer not in committee.members:
                continue
            if signed.checkpoint.digest() == digest:
                good[signer] = signed
            else:
                dissent.add(signer)
        if len(dissent) >= committee.threshold:
            raise RouteHalted(
                f"a committee quorum signed a different root at index {checkpoint.index} of origin "
                f"{checkpoint.origin} than this relayer computed from the chain: not relaying"
            )
        if dissent:
            log.error(
                "attesters %s signed another root at index %d", sorted(dissent), checkpoint.index
            )
        if len(good) < committee.threshold:
            return None
        chosen = [good[s] for s in sorted(good)]
        verify_attestation(committee, checkpoint, [s.signature for s in chosen])  # the gate
        return chosen

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
        """Move final messages covered by the newest checkpoint to ``attested``."""
        latest = self.ledger.latest_checkpoint(lane.chain.domain, lane.outbox)
        if latest is None or latest.id is None:
            return
        finals = self.ledger.by_status(MessageStatus.FINAL, limit=10_000, origin=lane.chain.domain)
        covered = [m.id for m in finals if m.nonce <= latest.index]
        if covered:
            self.ledger.transition(covered, MessageStatus.ATTESTED, checkpoint_id=latest.id)

    # ------------------------------------------------------------------ for every delivery
    # A family's Delivery (relayer.family) runs the delivery to its chains its own way, but
    # through these: the ledger, the relay policy, the attestation gate and the light client.

    def relayer_key(self) -> bytes:
        """The ``[relayer]`` key deliveries are paid with; RouteHalted without one."""
        if self.config.relayer_key is None:
            raise RouteHalted("no [relayer] key configured: cannot deliver")
        return self.config.relayer_key.load()

    def requeue_due(self, destination: int) -> None:
        """Failed messages to ``destination`` whose retry time has come go back to attested."""
        due = self.ledger.due_for_retry(limit=self.batch_size, destination=destination)
        if due:
            self.ledger.transition([m.id for m in due], MessageStatus.ATTESTED)

    async def admitted(self, group: Sequence[MessageRecord]) -> list[MessageRecord]:
        """``group`` without what the operator's relay policy refuses; those are recorded as
        ``skipped`` with the policy's reason (an operator re-queues them after changing it)."""
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
        return admitted

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
