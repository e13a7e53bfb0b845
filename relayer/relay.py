"""The relayer: carries attested messages from each origin to its destination.

Three kinds of task run in one trio nursery (structured concurrency: if one fails for a reason
that must stop the relayer, all stop):

- ``scan`` (one per origin): Dispatch events from final blocks only, checked gapless by nonce
  (never trusting that every log arrived), recorded ``discovered → final`` with the scan cursor
  in one ledger transaction; the relayer's copy of the origin's accumulator grows with them.
- ``collect`` (one per origin): reads signed checkpoints from the store, keeps only signatures
  that recover to committee members over the checkpoint *whose root equals our own tree's root
  at that index*, and once ``threshold`` of them verify (``verify_attestation``) stores them
  and moves the covered messages to ``attested``. A quorum for another root halts the relayer.
- ``deliver`` (one per destination): batches attested messages, skips those the inbox already
  delivered, re-runs the inbox's whole check off chain (``verify_delivery``: the light client is
  the gatekeeper), dry-runs the call, records the transaction before broadcasting it, waits for
  the receipt (with fee escalation) and records the outcome.

The ledger is the source of truth for progress (a restarted relayer resumes from it, and
re-checks every transaction left pending); the destination chain is the source of truth for
delivery (``delivered(id)`` on chain always wins).
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
from eth_abi.abi import encode as abi_encode

from adapters.errors import AdapterError
from adapters.evm.chain import DispatchEvent, EvmChain, selector
from adapters.evm.tx import MinedTx, SentTx, TxEngine, TxError, TxReverted
from adapters.rpc import EndpointHealth, MalformedAnswer, RpcCallError, RpcError
from adapters.substrate.client import SubstrateClient
from adapters.substrate.finality import GrandpaFinality
from light_clients.committee import Checkpoint, recover_signer, verify_attestation
from light_clients.errors import VerificationError
from light_clients.ethereum.header import EthHeader
from light_clients.hashing import keccak256
from light_clients.merkle import IncrementalMerkleTree, frontier_append, root_from_branch
from light_clients.message import decode_message, verify_message_inclusion
from light_clients.substrate.remark import EscrowRoute
from relayer.checkpoints import CheckpointStore, SignedCheckpoint
from relayer.config import (
    RELAY_BATCH_SIZE,
    RELAY_MAX_INFLIGHT,
    RELAY_POLL,
    SUBSTRATE_BATCH_SIZE,
    ChainConfig,
    Config,
    ConfigError,
)
from relayer.endpoints import open_evm
from relayer.ledger import (
    DiscoveredMessage,
    IllegalTransition,
    InvalidReference,
    Ledger,
    MessageRecord,
    MessageStatus,
    NewTransaction,
    TxStatus,
    UnknownRecord,
)
from relayer.metrics import relay_readiness, render, serve_metrics
from relayer.substrate_route import (
    GUARD_DELIVERED,
    GUARD_REFUNDED,
    MAX_DELIVERY_ATTEMPTS,
    Proposal,
    ProposalStore,
    connected,
    escrow_routes,
    final_header,
    grandpa_follower,
    guard_items,
    new_proposal,
    scan_remarks,
)
from relayer.substrate_route import SCAN_CHUNK as SUBSTRATE_SCAN_CHUNK

log = logging.getLogger("passerelle.relayer")
T = TypeVar("T")

PROCESS = selector("process((uint32,bytes32,bytes32,uint32),bytes,bytes[],bytes32[32][])")
DELIVERED = selector("delivered(bytes32)")
TOPIC_DELIVERED = keccak256(b"Delivered(bytes32,uint32,uint32)")
TOPIC_ALREADY = keccak256(b"AlreadyDelivered(bytes32)")
TOPIC_HANDLE_FAILED = keccak256(b"HandleFailed(bytes32,bytes)")
SCAN_CHUNK = 1_000  # blocks recorded per ledger transaction while catching up
ALONE_REVERTS = "delivery reverts with this message alone in its batch"
RETRY_BACKOFF = (2.0, 5.0, 15.0, 60.0, 300.0)  # seconds, by attempt; then the last one
# The most gas one message's ``handle`` can cost the inbox: Inbox.HANDLE_GAS_NEEDED, that is
# HANDLE_GAS (500k) forwarded under EIP-150's 63/64 rule plus the call's own cost. Each message
# of a batch gets this on top of the estimate (see Relayer._submit).
STIPEND_GAS = 500_000 * 64 // 63 + 10_000


class RouteHalted(Exception):
    """Something the relayer must not paper over: an operator has to look (anchors.md T21)."""


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
        self.store = CheckpointStore(config.checkpoint_store)
        self.metrics = RelayerMetrics()
        self.lanes: dict[int, Lane] = {}
        self._db_limiter = trio.CapacityLimiter(1)
        self.max_inflight = max_inflight
        self.metrics_port = metrics_port
        self.endpoints: dict[str, Sequence[EndpointHealth]] = {}
        # Messages whose Substrate batch did not execute in time: proposed one by one from then
        # on (in memory: after a restart a failing batch is found out again the same way).
        self._suspects: set[str] = set()
        # The EVM path's counterpart: message id -> the largest batch it may go in, halved each
        # time a batch carrying it reverts on chain (in memory too; a restart re-bisects).
        self._batch_limit: dict[str, int] = {}
        # Destinations whose pending transactions were all settled once (at start-up); each
        # delivery loop has its own, or the first loop up would make the others skip theirs.
        self._settled: set[int] = set()

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
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
        """Run until cancelled, SIGINT/SIGTERM, or a :class:`RouteHalted`."""
        await self._db(self._load_lanes)
        async with trio.open_nursery() as nursery:
            await nursery.start(self._watch_signals, nursery.cancel_scope)
            if self.metrics_port is not None:
                # /readyz: the loops started below in this nursery run, and the ledger answers a
                # primary-key read (cheap; its result does not matter, only that it comes).
                ledger_probe = partial(self._db, self.ledger.get_cursor, 0)
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
                if lane.chain.kind == "substrate":
                    nursery.start_soon(self._scan_substrate_loop, lane)
                else:
                    nursery.start_soon(self._scan_loop, lane)
                nursery.start_soon(self._collect_loop, lane)
            for chain in self.config.chains:
                if chain.kind == "substrate":
                    nursery.start_soon(self._deliver_substrate_loop, chain)
                elif "inbox" in chain.contracts:
                    nursery.start_soon(self._deliver_loop, chain)

    async def metrics_text(self) -> str:
        """The Prometheus exposition of the counters, the ledger backlog and RPC health."""
        backlog = await self._db(self.ledger.counts_by_status)
        return render(self.metrics, {str(k): v for k, v in backlog.items()}, self.endpoints)

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
        async with open_evm(lane.chain) as evm:
            self.endpoints[f"{lane.chain.name}/scan"] = evm.rpc.endpoints
            while True:
                try:
                    caught_up = await self._scan_once(lane, evm)
                except (RpcError, AdapterError) as exc:
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
        cursor = await self._db(self.ledger.get_cursor, lane.chain.domain)
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

    async def _scan_once(self, lane: Lane, evm: EvmChain) -> bool:
        """Scan the next chunk of final blocks; True when there is nothing left to scan."""
        # The hash of the last block scanned by the endpoints' quorum, not the first answer:
        # one lying endpoint must not be able to stage a "reorg below finality" and halt us.
        next_block = await self._resume_point(lane, evm.agreed_block_hash)
        final = await evm.final_header()
        if final.number < next_block:
            return True
        end = min(final.number, next_block + SCAN_CHUNK - 1)
        events = await evm.dispatches(lane.outbox, next_block, end)
        # Agreed by the quorum like ``final``: its hash becomes the cursor's (see above) and its
        # state root proves the outbox count below.
        end_header = final if end == final.number else await evm.agreed_header(end)
        end_hash = end_header.hash
        self._check_gapless(lane, events)
        # Gapless is not complete: a backend that drops the *last* logs of the range passes
        # the nonce check (the cursor would move past messages never to be seen again), and one
        # that alters a message keeps nonces and count (our root would then differ from the
        # committee's and the relayer would halt). The outbox's own state at the range's end,
        # proven from its storage, must be exactly what these logs make of our tree.
        await self._reconcile(lane, evm, end_header, [e.id for e in events], next_block)
        found = [
            DiscoveredMessage(
                message=e.raw,
                block_number=e.block.number,
                block_hash=e.block.hash,
                tx_hash=e.tx_hash,
                log_index=e.log_index,
            )
            for e in events
        ]
        await self._db(self._record_scan, lane, found, end, end_hash)
        for event in events:
            lane.tree.append(event.id)
        self.metrics.scanned_blocks += end - next_block + 1
        self.metrics.discovered += len(events)
        return end == final.number

    @staticmethod
    async def _reconcile(
        lane: Lane, evm: EvmChain, end: EthHeader, ids: Sequence[bytes], first_block: int
    ) -> None:
        """AdapterError (the range is scanned again) unless the outbox's count and root proven
        at ``end`` equal our tree's after appending ``ids``."""
        state = await evm.outbox_state(lane.outbox, end, may_be_absent=True)
        frontier, count = frontier_append(lane.tree.frontier(), lane.tree.count, ids)
        if state.count != count or state.root != root_from_branch(frontier, count):
            raise AdapterError(
                f"origin {lane.chain.name}: the outbox holds {state.count} message(s) with root "
                f"0x{state.root.hex()} at block {end.number}, but the logs up to it give "
                f"{count} (logs missing, altered or invented); rescanning blocks "
                f"{first_block}..{end.number}"
            )

    async def _scan_substrate_loop(self, lane: Lane) -> None:
        grandpa = grandpa_follower(lane.chain)
        async with connected(lane.chain) as client:
            routes = escrow_routes(self.config, lane.chain)
            while True:
                try:
                    caught_up = await self._scan_substrate_once(lane, client, routes, grandpa)
                except VerificationError as exc:
                    self.metrics.rpc_errors += 1
                    log.error("scan %s: the node served an invalid proof: %s", lane.chain.name, exc)
                    caught_up = True
                except AdapterError as exc:
                    self.metrics.rpc_errors += 1
                    log.warning("scan %s: %s", lane.chain.name, exc)
                    caught_up = True
                if caught_up:
                    await trio.sleep(self.poll)

    async def _scan_substrate_once(
        self,
        lane: Lane,
        client: SubstrateClient,
        routes: Sequence[EscrowRoute],
        grandpa: GrandpaFinality | None,
    ) -> bool:
        """Scan the next chunk of final Substrate blocks for remarks (the attesters' rules and
        nonces: :func:`relayer.substrate_route.scan_remarks`)."""
        next_block = await self._resume_point(lane, client.block_hash)
        final = await final_header(client, lane.chain, grandpa)
        if final.number < next_block:
            return True
        end = min(final.number, next_block + SUBSTRATE_SCAN_CHUNK - 1)
        scan = await scan_remarks(
            client, lane.chain, routes, range(next_block, end + 1), lane.tree.count, grandpa=grandpa
        )
        found = [
            DiscoveredMessage(
                message=m.raw,
                block_number=m.block_number,
                block_hash=m.block_hash,
                tx_hash=m.extrinsic_hash,
                log_index=m.extrinsic_index,
            )
            for m in scan.messages
        ]
        await self._db(self._record_scan, lane, found, end, scan.last_hash)
        for message in scan.messages:
            lane.tree.append(message.id)
        self.metrics.scanned_blocks += end - next_block + 1
        self.metrics.discovered += len(scan.messages)
        self.metrics.skipped_remarks += len(scan.skipped)
        return end == final.number

    @staticmethod
    def _check_gapless(lane: Lane, events: Sequence[DispatchEvent]) -> None:
        """Nonces must continue the tree exactly: a missing log is an error, never skipped."""
        expected = lane.tree.count
        for event in events:
            if event.message.nonce != expected:
                raise AdapterError(
                    f"origin {lane.chain.name}: expected nonce {expected}, got "
                    f"{event.message.nonce} (missed or duplicated logs; rescanning)"
                )
            expected += 1

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
        indices = await trio.to_thread.run_sync(self.store.latest_indices, origin, lane.outbox)
        for index in indices:
            if index <= lane.checkpoint_index:
                break
            if index >= lane.tree.count:
                continue  # signed past what we scanned: wait for the scanner
            checkpoint = Checkpoint(
                origin=origin, outbox=lane.outbox, root=lane.tree.root(index + 1), index=index
            )
            published = await trio.to_thread.run_sync(
                self.store.signatures, origin, lane.outbox, index
            )
            signatures = self._quorum(checkpoint, published)
            if signatures is None:
                continue
            await self._db(self._record_checkpoint, checkpoint, signatures)
            lane.checkpoint_index = index
            self.metrics.checkpoints += 1
            log.info("origin %s: checkpoint %d attested", lane.chain.name, index)
            break
        if lane.checkpoint_index >= 0:
            await self._db(self._attach_final, lane)

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

    # ------------------------------------------------------------------ delivery

    async def _deliver_loop(self, chain: ChainConfig) -> None:
        """Deliver to ``chain`` forever: up to ``max_inflight`` batches at once, each one
        prepared, dry-run, sent and confirmed by its own task (the engine's lock keeps the
        nonces in order); ``claimed`` keeps a message in at most one batch at a time. Every
        round also records as delivered what the destination's final state shows delivered."""
        key = self._relayer_key()
        async with open_evm(chain) as evm:
            self.endpoints[f"{chain.name}/deliver"] = evm.rpc.endpoints
            engine = TxEngine(evm.rpc, key, chain.chain_id or await evm.chain_id())
            await self._settle_pending(chain, engine)
            slots = trio.Semaphore(self.max_inflight)
            claimed: set[str] = set()
            last_settle = trio.current_time()
            async with trio.open_nursery() as workers:
                while True:
                    try:
                        await self._finalize_deliveries(chain, evm)
                        batches = await self._next_batches(chain, claimed)
                        if trio.current_time() - last_settle > self.confirm_timeout:
                            await self._settle_pending(chain, engine)
                            last_settle = trio.current_time()
                    except AdapterError as exc:  # RpcError, TxError, MalformedAnswer too
                        self.metrics.rpc_errors += 1
                        log.warning("deliver to %s: %s", chain.name, exc)
                        batches = []
                    if not batches:
                        await trio.sleep(self.poll)
                    for origin, batch in batches:
                        await slots.acquire()
                        claimed.update(record.id for record in batch)
                        workers.start_soon(
                            partial(
                                self._deliver_batch,
                                chain,
                                evm,
                                engine,
                                self.lanes[origin],
                                batch,
                                done=partial(self._release, slots, claimed, batch),
                            )
                        )

    @staticmethod
    def _release(slots: trio.Semaphore, claimed: set[str], batch: Sequence[MessageRecord]) -> None:
        claimed.difference_update(record.id for record in batch)
        slots.release()

    def _relayer_key(self) -> bytes:
        if self.config.relayer_key is None:
            raise RouteHalted("no [relayer] key configured: cannot deliver")
        return self.config.relayer_key.load()

    async def _next_batches(
        self, chain: ChainConfig, claimed: set[str]
    ) -> list[tuple[int, list[MessageRecord]]]:
        """Attested messages for ``chain`` not already in a batch, cut into batches per origin.

        A message from a batch that reverted on chain is only batched with others of the same
        size limit (:attr:`_batch_limit`), so the bisection of that batch carries on."""
        await self._db(self._requeue_due, chain.domain)
        records = await self._db(
            self.ledger.by_status,
            MessageStatus.ATTESTED,
            self.batch_size * self.max_inflight + len(claimed),
            destination=chain.domain,
        )
        groups: dict[tuple[int, int], list[MessageRecord]] = defaultdict(list)
        for record in records:
            if record.id not in claimed:
                limit = self._batch_limit.get(record.id, self.batch_size)
                groups[(record.origin, limit)].append(record)
        return [
            (origin, group[start : start + limit])
            for (origin, limit), group in groups.items()
            for start in range(0, len(group), limit)
        ]

    def _requeue_due(self, destination: int) -> None:
        due = self.ledger.due_for_retry(limit=self.batch_size, destination=destination)
        if due:
            self.ledger.transition([m.id for m in due], MessageStatus.ATTESTED)

    async def _deliver_batch(
        self,
        chain: ChainConfig,
        evm: EvmChain,
        engine: TxEngine,
        lane: Lane,
        batch: Sequence[MessageRecord],
        *,
        done: Callable[[], None],
    ) -> None:
        """One batch from the ledger to a mined receipt; errors are logged, never raised
        (the messages stay in the ledger and the next round picks them up).

        A batch whose dry run reverts, or whose gas would not fit, is split in halves and the
        halves are tried at once: one message that cannot pass never holds up the others."""
        try:
            todo = [list(batch)]
            while todo:
                group = todo.pop()
                submission = await self._prepare(chain, evm, lane, group)
                if submission is not None:
                    todo += await self._submit(chain, evm, engine, submission)
        except AdapterError as exc:  # RpcError, TxError, MalformedAnswer too
            self.metrics.rpc_errors += 1
            log.warning("deliver to %s: %s", chain.name, exc)
        except (UnknownRecord, IllegalTransition, InvalidReference) as exc:
            # A receipt or a race the ledger refuses to record: this batch's messages stay
            # where they are and the next rounds settle them; the relayer goes on.
            log.error("deliver to %s: not recorded: %s", chain.name, exc)
        finally:
            done()

    async def _prepare(
        self, chain: ChainConfig, evm: EvmChain, lane: Lane, group: Sequence[MessageRecord]
    ) -> Submission | None:
        """Build one ``process`` call for ``group``; None if nothing is left to send.

        Messages the relay policy refuses are set aside (``skipped``, with its reason). Messages
        the inbox already delivered in its *final* state (proven storage) are recorded as
        delivered; ones an endpoint shows delivered only in newer blocks are sent anyway. The
        rest pass the light client exactly as the inbox will check them — the attestation once,
        each message's origin, destination, outbox, nonce and inclusion — and a message that
        fails is recorded as failed with the reason instead of being sent.
        """
        group = await self._admitted(group)
        if not group:
            return None
        inbox = chain.contract("inbox")
        checkpoint, signatures = await self._db(self._checkpoint_for, lane)  # the gate, once
        flags = await evm.call_many(inbox, [DELIVERED + bytes.fromhex(r.id[2:]) for r in group])
        seen = [r for r, flag in zip(group, flags, strict=True) if int.from_bytes(flag, "big")]
        final = await self._confirmed_delivered(chain, evm, [r.id for r in seen])
        if final:
            await self._db(
                self.ledger.transition,
                final,
                MessageStatus.DELIVERED,
                reason="already delivered on chain (final)",
            )
            self.metrics.already_delivered += len(final)
        # Only what is delivered in *final* (proven) state is left out. One shown delivered
        # only at latest is sent anyway: that flag is one endpoint's unproven word (holding a
        # message back on it would let a lying endpoint stall it for ever), and if it is true
        # the inbox skips the message as a replay (AlreadyDelivered: one redundant delivery).
        skip = set(final)
        proven = await self._proven(chain, lane, checkpoint, [r for r in group if r.id not in skip])
        sendable = [record for record, _ in proven]
        messages = [record.message for record in sendable]
        branches = [list(branch) for _, branch in proven]
        if not sendable:
            return None
        calldata = PROCESS + abi_encode(
            ["(uint32,bytes32,bytes32,uint32)", "bytes", "bytes[]", "bytes32[32][]"],
            [
                (checkpoint.origin, checkpoint.outbox, checkpoint.root, checkpoint.index),
                b"".join(signatures),
                messages,
                branches,
            ],
        )
        return Submission(inbox, calldata, sendable)

    async def _admitted(self, group: Sequence[MessageRecord]) -> list[MessageRecord]:
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
            await self._db(
                self.ledger.transition, ids, MessageStatus.SKIPPED, reason=f"relay policy: {reason}"
            )
        return admitted

    async def _confirmed_delivered(
        self, chain: ChainConfig, evm: EvmChain, ids: Sequence[str]
    ) -> list[str]:
        """The ids among ``ids`` that ``delivered(id)`` reads true for at the destination's
        final block (under its finality policy): only that state cannot be reorged away. Read
        from storage proven under that block's state root (:meth:`EvmChain.delivery_state`),
        as ``delivered`` is terminal: an endpoint's ``eth_call`` answer is not enough."""
        if not ids:
            return []
        final = await evm.final_header()
        state = await evm.delivery_state(
            chain.contract("inbox"), final, [bytes.fromhex(i[2:]) for i in ids]
        )
        return [i for i in ids if state[bytes.fromhex(i[2:])][0]]

    def _checkpoint_for(self, lane: Lane) -> tuple[Checkpoint, list[bytes]]:
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

    async def _fail(
        self, ids: Sequence[str], reason: str, records: Sequence[MessageRecord]
    ) -> None:
        attempts = max((r.attempts for r in records), default=0)
        delay = RETRY_BACKOFF[min(attempts, len(RETRY_BACKOFF) - 1)]
        log.warning("%d message(s) failed (%s); retry in %.0f s", len(ids), reason, delay)
        await self._db(
            self.ledger.transition,
            ids,
            MessageStatus.FAILED,
            reason=reason,
            retry_at=time.time() + delay,
        )

    async def _submit(
        self, chain: ChainConfig, evm: EvmChain, engine: TxEngine, submission: Submission
    ) -> list[list[MessageRecord]]:
        """Dry-run, record, broadcast, then wait for the receipt and record what it did.

        Returns the groups to try again at once: the two halves of a batch whose dry run
        reverted or whose gas would not fit in half a block (empty otherwise).

        The gas limit is the dry run's estimate with its margin *plus one full handle stipend
        per message*: the dry run cannot show what a recipient does in the real transaction (it
        may burn its whole stipend only then), and with that margin no recipient's behaviour
        can make the batch run out of gas. Unused gas is not paid for.
        """
        records = list(submission.records)
        ids = [r.id for r in records]
        fees = await engine.current_fees()
        try:
            estimate = await engine.estimate_gas(submission.inbox, submission.calldata, fees=fees)
        except RpcCallError as exc:
            self.metrics.dry_run_failures += 1
            if len(records) > 1:
                log.info(
                    "dry run of %d message(s) reverted (%s); trying each half on its own",
                    len(records),
                    exc.message,
                )
                return _halves(records)
            await self._fail(ids, f"dry run reverted: {exc.message}", records)
            return []
        gas = estimate + len(records) * STIPEND_GAS
        if len(records) > 1 and gas > await self._gas_ceiling(evm):
            return _halves(records)

        async def record(sent: SentTx, tx_hash: bytes) -> None:
            await self._db(
                self.ledger.record_transaction,
                NewTransaction(
                    chain=chain.domain,
                    hash=tx_hash,
                    sender=engine.address,
                    nonce=sent.nonce,
                    gas_limit=sent.gas,
                    max_fee_per_gas=sent.max_fee,
                    max_priority_fee_per_gas=sent.priority_fee,
                    replaces=sent.hashes[-1] if sent.hashes else None,
                ),
                ids,
            )

        try:
            sent = await engine.send(
                submission.inbox, submission.calldata, gas=gas, fees=fees, before_broadcast=record
            )
        except TxError as exc:
            await self._db(self._broadcast_failed, chain.domain, ids, str(exc))
            raise
        self.metrics.batches += 1
        try:
            mined = await engine.wait(sent, timeout=self.confirm_timeout, before_broadcast=record)
        except TxReverted as exc:
            await self._db(self._reverted, chain.domain, exc, ids)
        except TxError as exc:  # not mined in time: _settle_pending picks it up later
            log.warning("deliver to %s: %s", chain.name, exc)
        else:
            await self._db(self._apply_receipt, chain, mined, ids)
        return []

    @staticmethod
    async def _gas_ceiling(evm: EvmChain) -> int:
        """Half the gas limit of the destination's final block: the most one batch may ask
        for, so that a batch always fits in a block with room for others (a larger one is split
        instead). From the final header (hash-checked, agreed by the rpc quorum), not from the
        ``latest`` block's JSON: an endpoint inflating that would have batches the chain refuses
        at every broadcast, the same batch each round (a block's limit moves by at most 1/1024
        per block, so the final one is close enough)."""
        return (await evm.final_header()).gas_limit // 2

    def _reverted(self, domain: int, exc: TxReverted, ids: Sequence[str]) -> None:
        """A delivery that reverted on chain although its dry run passed.

        The batch is bisected: each half is retried at once, and only batched with messages of
        the same bisection from then on; a message that still reverts alone is the culprit and
        waits a backoff that grows with its own attempts, so the honest messages of the batch
        are delivered after at most ~log2(batch size) reverted transactions.
        """
        with self.ledger.atomic() as batch:
            batch.update_transaction(
                domain,
                exc.tx_hash,
                TxStatus.FAILED,
                block_number=exc.block_number,
                gas_used=exc.gas_used,
                error=str(exc),
            )
            records = [r for i in ids if (r := batch.get(i)) is not None]
            # A message already moved on (delivered elsewhere, re-queued) is left alone.
            waiting = [r for r in records if r.status == MessageStatus.SUBMITTED]
            if len(waiting) > 1:
                limit = (len(waiting) + 1) // 2
                for r in waiting:
                    self._batch_limit[r.id] = min(limit, self._batch_limit.get(r.id, limit))
                batch.transition(
                    [r.id for r in waiting],
                    MessageStatus.FAILED,
                    reason=f"{exc}; retrying in batches of at most {limit}",
                    retry_at=time.time(),
                )
            for r in waiting if len(waiting) == 1 else []:
                self._batch_limit[r.id] = 1
                reason = f"{ALONE_REVERTS} ({exc})"
                # Each try is a reverted transaction the relayer pays: bounded, counted in the
                # audit trail so that restarts do not reset it (an operator can re-queue).
                alone = sum(
                    1
                    for event in batch.history(r.id)
                    if event.to_status == MessageStatus.FAILED
                    and (event.reason or "").startswith(ALONE_REVERTS)
                )
                if alone + 1 >= MAX_DELIVERY_ATTEMPTS:
                    batch.transition(
                        [r.id], MessageStatus.FAILED, reason=f"{reason}, {alone + 1} times: gave up"
                    )
                    continue
                delay = RETRY_BACKOFF[min(r.attempts, len(RETRY_BACKOFF) - 1)]
                batch.transition(
                    [r.id], MessageStatus.FAILED, reason=reason, retry_at=time.time() + delay
                )

    def _broadcast_failed(self, domain: int, ids: Sequence[str], error: str) -> None:
        with self.ledger.atomic() as batch:
            for tx in batch.transactions(chain=domain, status=TxStatus.PENDING):
                linked = set(batch.transaction_messages(domain, tx.hash))
                if linked & set(ids):
                    batch.update_transaction(domain, tx.hash, TxStatus.FAILED, error=error)
            batch.transition(ids, MessageStatus.ATTESTED, reason=f"broadcast failed: {error}")

    def _apply_receipt(self, chain: ChainConfig, mined: MinedTx, ids: Sequence[str]) -> None:
        """Record a mined delivery transaction; its messages stay ``submitted`` until the
        block is final (:meth:`_finalize_deliveries`).

        The mined hash becomes each message's carrier (a fee bump may have sent several hashes
        for the nonce; the others are marked replaced). The receipt's logs only feed the
        metrics, and only logs the inbox itself emitted about this batch's ids count: a
        recipient runs inside the transaction and can emit look-alike events about any id.
        """
        outcome = _receipt_outcome(mined, chain.contract("inbox"), ids)
        domain = chain.domain
        with self.ledger.atomic() as batch:
            tx = batch.get_transaction(domain, mined.hash)
            # Read before the update below, which may change this very row object.
            was = None if tx is None else (tx.status, tx.nonce, tx.hash)
            batch.update_transaction(
                domain,
                mined.hash,
                TxStatus.CONFIRMED,
                block_number=mined.block_number,
                gas_used=mined.gas_used,
                effective_gas_price=mined.effective_gas_price,
                fee_paid=mined.fee_paid,
            )
            # Pending, or replaced: the hash a fee bump superseded is often the one mined,
            # and then it (not the newest hash, which can never be mined) carries the batch.
            if was is not None and was[0] in (TxStatus.PENDING, TxStatus.REPLACED):
                _, nonce, mined_hash = was
                carried = [
                    i
                    for i in ids
                    if (m := batch.get(i)) is not None
                    and m.status in (MessageStatus.SUBMITTED, MessageStatus.ATTESTED)
                ]
                batch.transition(
                    carried,
                    MessageStatus.SUBMITTED,
                    tx_hash=mined.hash,
                    reason=f"mined in block {mined.block_number}; waiting for it to be final",
                )
                for sibling in batch.transactions(chain=domain, status=TxStatus.PENDING):
                    if sibling.nonce == nonce and sibling.hash != mined_hash:
                        batch.update_transaction(
                            domain, sibling.hash, TxStatus.REPLACED, error="another hash mined"
                        )
        self.metrics.already_delivered += len(outcome.already)
        self.metrics.handle_failed += len(outcome.handle_failed)
        self.metrics.gas_used += mined.gas_used
        self.metrics.fees_paid += mined.fee_paid

    async def _finalize_deliveries(self, chain: ChainConfig, evm: EvmChain) -> None:
        """Record as ``delivered`` the submitted messages whose delivery transaction is mined
        at or below the destination's final block and that ``delivered(id)`` reads true for
        in that final state; ones it reads false for (their transaction was reorged away) go
        back to ``attested``. ``delivered`` is terminal, so it is only written for final
        state."""
        submitted = await self._db(
            self.ledger.by_status,
            MessageStatus.SUBMITTED,
            self.batch_size * self.max_inflight,
            destination=chain.domain,
        )
        carriers: dict[str, list[str]] = defaultdict(list)
        for record in submitted:
            if record.delivery_tx_hash is not None:
                carriers[record.delivery_tx_hash].append(record.id)
        mined: list[tuple[int, str, list[str]]] = []
        for tx_hash, ids in carriers.items():
            tx = await self._db(self.ledger.get_transaction, chain.domain, tx_hash)
            if tx is not None and tx.status == TxStatus.CONFIRMED and tx.block_number is not None:
                mined.append((tx.block_number, tx_hash, ids))
        if not mined:
            return
        final = await evm.final_header()
        settled = [(tx_hash, ids) for block, tx_hash, ids in mined if block <= final.number]
        if not settled:
            return
        ids = [i for _, group in settled for i in group]
        # Proven storage, not eth_call: a lying endpoint must neither have an undelivered
        # message recorded delivered (terminal) nor a delivered one sent again for ever.
        state = await evm.delivery_state(
            chain.contract("inbox"), final, [bytes.fromhex(i[2:]) for i in ids]
        )
        flags = {i: state[bytes.fromhex(i[2:])] for i in ids}
        await self._db(self._record_final, chain, final.number, settled, flags)

    def _record_final(
        self,
        chain: ChainConfig,
        final_block: int,
        settled: Sequence[tuple[str, Sequence[str]]],
        flags: dict[str, tuple[bool, bool]],
    ) -> None:
        with self.ledger.atomic() as batch:
            for tx_hash, ids in settled:
                handled = [i for i in ids if flags[i] == (True, False)]
                unhandled = [i for i in ids if flags[i] == (True, True)]
                lost = [i for i in ids if not flags[i][0]]
                batch.transition(
                    handled,
                    MessageStatus.DELIVERED,
                    tx_hash=tx_hash,
                    reason=f"delivered in final block {final_block} of {chain.name}",
                )
                batch.transition(
                    unhandled,
                    MessageStatus.DELIVERED,
                    tx_hash=tx_hash,
                    reason="accepted by the inbox, but the recipient's handle failed; anyone "
                    "can retry it on chain",
                )
                if lost:
                    batch.transition(
                        lost,
                        MessageStatus.ATTESTED,
                        reason=f"transaction {tx_hash} mined but not in the final chain "
                        f"(block {final_block}): delivering again",
                    )
                for i in handled + unhandled:
                    self._batch_limit.pop(i, None)
                self.metrics.delivered += len(handled) + len(unhandled)

    async def _settle_pending(self, chain: ChainConfig, engine: TxEngine) -> None:
        """Settle transactions the ledger has as pending for longer than ``confirm_timeout``
        (all of them at start-up): mined ones are recorded, unknown ones count as dropped.

        One transaction that cannot be settled is logged and skipped: it never stops the
        relayer (a receipt is chain data, and chain data is not trusted to be well-behaved)."""
        pending = await self._db(
            self.ledger.transactions, chain=chain.domain, status=TxStatus.PENDING
        )
        cutoff = time.time() - self.confirm_timeout
        for tx in pending:
            if chain.domain in self._settled and tx.submitted_at > cutoff:
                continue
            tx_hash = bytes.fromhex(tx.hash[2:])
            try:
                ids = await self._db(self.ledger.transaction_messages, chain.domain, tx.hash)
                try:
                    mined = await engine.receipt(tx_hash)
                except TxReverted as exc:
                    await self._db(self._reverted, chain.domain, exc, ids)
                    continue
                if mined is not None:
                    await self._db(self._apply_receipt, chain, mined, ids)
                else:
                    await self._db(self._dropped, chain.domain, tx.hash, ids)
            except (UnknownRecord, IllegalTransition, InvalidReference, MalformedAnswer) as exc:
                # A garbled receipt is a hostile or broken node's, not the ledger's fault: this
                # transaction stays pending (the next settle asks again), the others settle.
                log.error(
                    "deliver to %s: cannot settle transaction %s: %s", chain.name, tx.hash, exc
                )
        await engine.sync_nonce()
        self._settled.add(chain.domain)

    def _dropped(self, domain: int, tx_hash: str, ids: Sequence[str]) -> None:
        """A recorded transaction the chain does not know: its messages go back to attested.

        Only messages this very hash still carries move (after a fee bump the newer hash
        carries them). Delivering them again is safe: the inbox skips anything already
        delivered.
        """
        with self.ledger.atomic() as batch:
            current = batch.get_transaction(domain, tx_hash)
            if current is None or current.status != TxStatus.PENDING:
                return
            batch.update_transaction(
                domain, tx_hash, TxStatus.FAILED, error="not found after restart"
            )
            still = [
                i
                for i in ids
                if (m := batch.get(i)) is not None
                and m.status == MessageStatus.SUBMITTED
                and m.delivery_tx_hash == tx_hash
            ]
            if still:
                batch.transition(still, MessageStatus.ATTESTED, reason="transaction dropped")

    # ------------------------------------------------------------------ Substrate delivery

    async def _deliver_substrate_loop(self, chain: ChainConfig) -> None:
        """Deliver to a Substrate chain through the committee's multisig: propose batches (the
        attesters approve and execute them), and record what the chain shows delivered."""
        proposals = ProposalStore(self.config.checkpoint_store)
        async with connected(chain) as client:
            while True:
                try:
                    await self._deliver_substrate_once(chain, client, proposals)
                except (AdapterError, ConfigError) as exc:
                    self.metrics.rpc_errors += 1
                    log.warning("deliver to %s: %s", chain.name, exc)
                await trio.sleep(self.poll)

    @staticmethod
    async def _delivered_items(
        client: SubstrateClient, chain: ChainConfig, messages: Sequence[bytes]
    ) -> list[str | None]:
        """For each message, what its replay-guard item on ``chain`` says: None (not handled
        yet), delivered, or refunded (:func:`relayer.substrate_route.guard_items`)."""
        return await guard_items(
            client, chain.settings(), [decode_message(raw) for raw in messages]
        )

    async def _mark_delivered_on(
        self, chain: ChainConfig, messages: Sequence[bytes], flags: Sequence[str | None]
    ) -> None:
        """Record what the chain shows: a delivered message ``delivered``; a refunded one
        ``failed`` for good (the committee found it can never be delivered and sent the tokens
        back to the sender on its origin, as a message of ``chain``'s own)."""
        pairs = list(zip(messages, flags, strict=True))
        ids = ["0x" + keccak256(m).hex() for m, flag in pairs if flag == GUARD_DELIVERED]
        refunded = ["0x" + keccak256(m).hex() for m, flag in pairs if flag == GUARD_REFUNDED]
        self._suspects.difference_update(ids + refunded)
        if ids:
            await self._db(
                self.ledger.transition,
                ids,
                MessageStatus.DELIVERED,
                reason=f"delivered on {chain.name}: its Uniques replay-guard item exists",
            )
            self.metrics.delivered += len(ids)
        if refunded:
            await self._db(
                self.ledger.transition,
                refunded,
                MessageStatus.FAILED,
                reason=f"cannot be delivered on {chain.name}: the committee refunded it (its "
                "replay-guard item is frozen; the refund is a message back to the origin)",
            )
            log.warning("%d message(s) to %s refunded by the committee", len(refunded), chain.name)

    async def _deliver_substrate_once(
        self, chain: ChainConfig, client: SubstrateClient, proposals: ProposalStore
    ) -> None:
        await self._db(self._requeue_due, chain.domain)
        outstanding = await trio.to_thread.run_sync(proposals.pending, chain.domain)
        proposed: set[str] = set()
        for path, proposal in outstanding:
            flags = await self._delivered_items(client, chain, proposal.messages)
            await self._mark_delivered_on(chain, proposal.messages, flags)
            ids = ["0x" + keccak256(m).hex() for m in proposal.messages]
            if any(flags):  # done, or partly delivered elsewhere: its batch can no longer pass
                await trio.to_thread.run_sync(proposals.remove, path)
            elif not proposals.ours(path, proposal):
                # Anyone may write the store, ``created`` included: a file we did not write
                # (or that was rewritten) neither holds its messages back from our own
                # proposals nor counts as a failed attempt of theirs (five such files would
                # fail them for good); it is dropped after confirm_timeout by our own clock.
                if time.time() - proposals.first_seen(path, time.time()) > self.confirm_timeout:
                    await trio.to_thread.run_sync(proposals.remove, path)
            elif time.time() - proposal.created > self.confirm_timeout:
                # Its batch failed on chain (one bad message fails a whole batch_all) or too
                # few signatories are up: retry with backoff, each message on its own, so one
                # that cannot be delivered holds up nobody else — at most
                # MAX_DELIVERY_ATTEMPTS times, then it stays failed with its reason.
                await trio.to_thread.run_sync(proposals.remove, path)
                self._suspects.update(ids)
                await self._db(self._fail_undelivered, ids)
                log.warning(
                    "proposal %s not executed in time; retrying its messages singly", path.name
                )
            else:
                proposed.update(ids)
        records = await self._db(
            self.ledger.by_status,
            MessageStatus.ATTESTED,
            SUBSTRATE_BATCH_SIZE * self.max_inflight + len(proposed),
            destination=chain.domain,
        )
        by_origin: dict[int, list[MessageRecord]] = defaultdict(list)
        for record in records:
            if record.id not in proposed:
                by_origin[record.origin].append(record)
        for origin, candidates in by_origin.items():
            # The operator's policy first, as on the EVM path: a refused message costs no RPC
            # and is never proposed (the committee would spend its fees on it).
            group = await self._admitted(candidates)
            if not group:
                continue
            flags = await self._delivered_items(client, chain, [r.message for r in group])
            await self._mark_delivered_on(chain, [r.message for r in group], flags)
            todo = [r for r, flag in zip(group, flags, strict=True) if not flag]
            batches = [[r] for r in todo if r.id in self._suspects]
            todo = [r for r in todo if r.id not in self._suspects]
            batches += [
                todo[start : start + SUBSTRATE_BATCH_SIZE]
                for start in range(0, len(todo), SUBSTRATE_BATCH_SIZE)
            ]
            for batch in batches:
                fresh = await self._propose(chain, self.lanes[origin], batch)
                if fresh is not None:
                    await trio.to_thread.run_sync(proposals.publish, fresh)
                    self.metrics.proposals += 1
                    log.info(
                        "proposed %d message(s) from %s to %s",
                        len(fresh.messages),
                        self.lanes[origin].chain.name,
                        chain.name,
                    )

    def _fail_undelivered(self, ids: Sequence[str]) -> None:
        """Mark messages whose proposal timed out ``failed``: to be retried after a backoff,
        or, once they failed :data:`MAX_DELIVERY_ATTEMPTS` times, for good (an operator can
        re-queue them)."""
        reason = f"not delivered by the committee within {self.confirm_timeout:g} s"
        for message_id in ids:
            failures = sum(
                1
                for event in self.ledger.history(message_id)
                if event.to_status == MessageStatus.FAILED
                and (event.reason or "").startswith("not delivered by the committee")
            )
            if failures + 1 >= MAX_DELIVERY_ATTEMPTS:
                self.ledger.transition(
                    [message_id],
                    MessageStatus.FAILED,
                    reason=f"{reason}, {failures + 1} times: gave up",
                )
            else:
                self.ledger.transition(
                    [message_id],
                    MessageStatus.FAILED,
                    reason=reason,
                    retry_at=time.time() + RETRY_BACKOFF[min(failures + 1, len(RETRY_BACKOFF) - 1)],
                )

    async def _propose(
        self, chain: ChainConfig, lane: Lane, group: Sequence[MessageRecord]
    ) -> Proposal | None:
        """A proposal for ``group`` under the lane's newest stored checkpoint, each message
        passed through the light client first (as the attesters will check it)."""
        checkpoint, _ = await self._db(self._checkpoint_for, lane)  # the gate
        proven = await self._proven(chain, lane, checkpoint, group)
        if not proven:
            return None
        return new_proposal(
            chain.domain,
            checkpoint,
            [record.message for record, _ in proven],
            [branch for _, branch in proven],
        )

    async def _proven(
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
                await self._fail([record.id], f"light client rejected it: {exc}", [record])
                continue
            proven.append((record, branch))
        return proven


@dataclass(frozen=True)
class Submission:
    """One ``process`` call ready to send: the inbox, the calldata, the messages it carries."""

    inbox: bytes
    calldata: bytes
    records: Sequence[MessageRecord]


@dataclass
class ReceiptOutcome:
    """Which messages a delivery transaction delivered, skipped as replays, or failed to handle."""

    delivered: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    handle_failed: dict[str, str] = field(default_factory=dict)


def _receipt_outcome(mined: MinedTx, inbox: bytes, ids: Sequence[str]) -> ReceiptOutcome:
    """What the inbox's own events in ``mined`` say about the messages of this batch.

    A log counts only if the inbox emitted it (``address``) and it names one of ``ids``: the
    recipients' ``handle`` runs inside the same transaction and can emit an event with the
    inbox's signature about any id, so anything else in the receipt is noise, not evidence.
    """
    outcome = ReceiptOutcome()
    emitter = "0x" + inbox[-20:].hex()
    wanted = {i.lower() for i in ids}
    for entry in mined.logs:
        topics = entry.get("topics", [])
        address = entry.get("address")
        if len(topics) < 2 or not isinstance(address, str) or address.lower() != emitter:
            continue
        message_id = str(topics[1]).lower()
        if message_id not in wanted:
            continue
        topic0 = str(topics[0]).lower()
        if topic0 == "0x" + TOPIC_DELIVERED.hex():
            outcome.delivered.append(message_id)
        elif topic0 == "0x" + TOPIC_ALREADY.hex():
            outcome.already.append(message_id)
        elif topic0 == "0x" + TOPIC_HANDLE_FAILED.hex():
            outcome.handle_failed[message_id] = "recipient reverted"
    return outcome


def _halves(records: Sequence[MessageRecord]) -> list[list[MessageRecord]]:
    """``records`` cut in two (the later half first, so the earlier nonces go first off a
    stack)."""
    middle = (len(records) + 1) // 2
    return [list(records[middle:]), list(records[:middle])]
