"""Delivery to a Substrate chain through the committee's multisig: the relayer proposes batches
(:mod:`relayer.families.substrate.proposals`), the attesters approve and execute them
(:mod:`relayer.families.substrate.approval`), and the relayer records what the chain's
replay-guard items show delivered or refunded.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import trio

from adapters.errors import AdapterError
from adapters.substrate.client import SubstrateClient
from light_clients.hashing import keccak256
from light_clients.message import decode_message
from relayer.checkpoints import CheckpointStoreError
from relayer.config import (
    SUBSTRATE_BATCH_SIZE,
    ChainConfig,
    ConfigError,
)
from relayer.families.substrate.batching import (
    BatchBudget,
    CostModel,
    SizingCache,
    message_cost,
    plan_batches,
)
from relayer.families.substrate.calls import (
    GUARD_DELIVERED,
    GUARD_REFUNDED,
    guard_items,
    token_bridges,
)
from relayer.families.substrate.connection import connected
from relayer.families.substrate.proposals import (
    Proposal,
    ProposalKey,
    ProposalStore,
    new_proposal,
    open_proposal_store,
)
from relayer.ledger import (
    IllegalTransition,
    InvalidReference,
    MessageRecord,
    MessageStatus,
    UnknownRecord,
)
from relayer.relay import (
    MAX_DELIVERY_ATTEMPTS,
    RETRY_BACKOFF,
    Lane,
    Relayer,
    failures_since_retry,
)

log = logging.getLogger("passerelle.relayer")


SLOW_ROUND = 2.0
"""Seconds: a delivery round that took longer logs where its time went (:class:`RoundSteps`)."""


@dataclass
class RoundSteps:
    """Where a delivery round's time goes, step by step (wall clock: waits on the chain, the
    ledger thread and the CPU all count). A slow round (:data:`SLOW_ROUND`) is logged as one
    line, so a delay between a checkpoint and its proposal can be read from the log."""

    clock: Callable[[], float] = time.monotonic
    spent: dict[str, float] = field(default_factory=dict)
    proposed: int = 0
    _began: float = field(init=False)
    _last: float = field(init=False)

    def __post_init__(self) -> None:
        self._began = self._last = self.clock()

    def lap(self, step: str) -> None:
        """The time since the previous lap was spent on ``step``."""
        now = self.clock()
        self.spent[step] = self.spent.get(step, 0.0) + now - self._last
        self._last = now

    def report(self, chain: str) -> None:
        """One line if the round was slow: its total and each step's share."""
        total = self.clock() - self._began
        if total < SLOW_ROUND:
            return
        parts = ", ".join(f"{step} {spent:.2f}" for step, spent in self.spent.items() if spent)
        log.info(
            "deliver to %s: a round of %.2f s (%d message(s) proposed): %s",
            chain,
            total,
            self.proposed,
            parts,
        )


class SubstrateDelivery:
    """The relayer's delivery to one Substrate destination (:class:`relayer.family.Delivery`)."""

    def __init__(self, chain: ChainConfig, relayer: Relayer) -> None:
        self.chain = chain
        self.relayer = relayer
        # Messages whose batch did not execute in time → the most messages a batch of theirs
        # may now have: half of the failed one, so one bad message is found in log2(n) rounds
        # while the other half goes through (in memory: after a restart a failing batch is
        # found out again the same way).
        self._suspects: dict[str, int] = {}
        # What one batch may hold and what each message costs on this chain: measured once per
        # connection and again after a runtime upgrade (:class:`SizingCache`).
        self._sizes = SizingCache()

    async def _sizing(self, client: SubstrateClient) -> tuple[BatchBudget, CostModel]:
        """The batch budget from the chain's extrinsic limits and the measured delivery costs
        (:mod:`relayer.families.substrate.batching`), for ``client``'s connection."""
        before = self._sizes.current
        budget, model = sizing = await self._sizes.get(
            client, self.chain.settings(), self.chain.domain, token_bridges(self.relayer.config)
        )
        if sizing is not before:
            log.info(
                "%s: a batch may weigh %s and be %d bytes long: about %d small messages",
                self.chain.name,
                f"{budget.weight:,}",
                budget.length,
                min(budget.messages, budget.weight // max(1, model.remark_short.weight)),
            )
        return budget, model

    async def run(self) -> None:
        """Deliver to the chain for ever (:meth:`_deliver_substrate_loop`)."""
        await self._deliver_substrate_loop(self.chain)

    async def _deliver_substrate_loop(self, chain: ChainConfig) -> None:
        """Deliver to a Substrate chain through the committee's multisig: propose batches (the
        attesters approve and execute them), and record what the chain shows delivered."""
        # Beside the signatures, where the attesters look: a directory, or the PostgreSQL
        # database when the checkpoint store is a URL (opening connects to nothing).
        proposals = open_proposal_store(self.relayer.config.checkpoint_location)
        async with connected(chain) as client:
            while True:
                try:
                    await self._deliver_substrate_once(chain, client, proposals)
                    # Measured before the first batch needs it (five runtime calls): off the
                    # first burst's critical path. Cached: a no-op once done.
                    await self._sizing(client)
                except (AdapterError, ConfigError) as exc:
                    self.relayer.metrics.rpc_errors += 1
                    log.warning("deliver to %s: %s", chain.name, exc)
                except CheckpointStoreError as exc:
                    # The proposal store cannot be read or written now (its database is down
                    # or busy, a disk is full): one line, and the next round tries again.
                    log.warning("deliver to %s: proposals: %s", chain.name, exc)
                except (UnknownRecord, IllegalTransition, InvalidReference) as exc:
                    # A move the ledger refuses (someone else moved the message): logged, the
                    # next round reads the ledger again; never the end of the relayer.
                    log.error("deliver to %s: not recorded: %s", chain.name, exc)
                await trio.sleep(self.relayer.poll)

    @staticmethod
    async def _delivered_items(
        client: SubstrateClient, chain: ChainConfig, messages: Sequence[bytes]
    ) -> list[str | None]:
        """For each message, what its replay-guard item on ``chain`` says: None (not handled
        yet), delivered, or refunded (:func:`~relayer.families.substrate.calls.guard_items`)."""
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
        for message_id in ids + refunded:
            self._suspects.pop(message_id, None)
        if ids:
            await self.relayer.db(
                self.relayer.ledger.transition,
                ids,
                MessageStatus.DELIVERED,
                reason=f"delivered on {chain.name}: its Uniques replay-guard item exists",
            )
            self.relayer.metrics.delivered += len(ids)
            self.relayer.last_delivered[chain.name] = time.time()
        if refunded:
            await self.relayer.db(self._record_refunded, chain, refunded)
            log.warning("%d message(s) to %s refunded by the committee", len(refunded), chain.name)

    async def _deliver_substrate_once(
        self, chain: ChainConfig, client: SubstrateClient, proposals: ProposalStore
    ) -> None:
        steps = RoundSteps()
        await self._deliver_round(chain, client, proposals, steps)
        steps.report(chain.name)  # a failed round is already one warning line: not two

    async def _deliver_round(
        self,
        chain: ChainConfig,
        client: SubstrateClient,
        proposals: ProposalStore,
        steps: RoundSteps,
    ) -> None:
        """One round of :meth:`_deliver_substrate_loop`, each step timed into ``steps``.

        Proposing comes first, checking the live proposals after (issue #12): the check reads
        their replay-guard items and records what executed (seconds a round in a burst), and
        when it came first it delayed every next proposal by that much while the chain had
        nothing queued. Nothing is lost by the order: every message of a live proposal of ours
        (timed out or not) is held back from this round's proposals (:meth:`_held_back`), so
        a message is proposed again only after the check has failed its proposal (a later
        round), exactly as before.

        The check runs whatever became of proposing (review L1): proposing can fail round
        after round (the sizing unmeasurable after a runtime upgrade, a hostile RPC answering
        it badly, the store refusing a publish), and executed proposals must still be recorded
        delivered, and timed-out ones failed and retried, meanwhile. And it leaves alone every
        key this round published (review L2): what it read there before is gone, replaced by
        our fresh proposal (another's entry under the same name: same origin, nonces and
        checkpoint index), and removing "it" would delete ours."""
        await self.relayer.db(self.relayer.requeue_due, chain.domain)
        outstanding = await trio.to_thread.run_sync(proposals.pending, chain.domain)
        steps.lap("read proposals")
        published: set[ProposalKey] = set()
        try:
            await self._propose_new(
                chain,
                client,
                proposals,
                steps,
                self._held_back(proposals, outstanding),
                published=published,
            )
        finally:
            await self._check_outstanding(
                chain,
                client,
                proposals,
                [(key, proposal) for key, proposal in outstanding if key not in published],
            )
            steps.lap("outstanding proposals")

    @staticmethod
    def _held_back(
        proposals: ProposalStore, outstanding: Sequence[tuple[ProposalKey, Proposal]]
    ) -> set[str]:
        """The ids of the messages in our live proposals: not proposed again this round.

        Ours only (:meth:`ProposalStore.ours`): anyone may write the store, and an entry we did
        not write must not hold messages back from our own proposals (a planted entry naming
        every pending message would stop delivery). Timed-out ones of ours included: their
        check (after this round's proposing) may still find them executed, and only a failed
        one's messages are proposed again, next round, in halves."""
        return {
            "0x" + keccak256(m).hex()
            for key, proposal in outstanding
            if proposals.ours(key, proposal)
            for m in proposal.messages
        }

    async def _check_outstanding(
        self,
        chain: ChainConfig,
        client: SubstrateClient,
        proposals: ProposalStore,
        outstanding: Sequence[tuple[ProposalKey, Proposal]],
    ) -> None:
        """What became of the proposals read at the start of the round: one guard-item read
        for all their messages, one ledger write of what executed (and one of what the
        committee refunded), then per proposal: removed when handled (or partly delivered
        elsewhere: its batch can no longer pass), dropped when not ours and old by our clock,
        failed and retried in halves when ours and not executed within ``confirm_timeout``."""
        if not outstanding:
            return
        messages = [m for _, proposal in outstanding for m in proposal.messages]
        flags = await self._delivered_items(client, chain, messages)
        per_proposal: list[Sequence[str | None]] = []
        at = 0
        for _, proposal in outstanding:
            per_proposal.append(flags[at : at + len(proposal.messages)])
            at += len(proposal.messages)
        # One write for the round however many proposals executed (each write is a ledger
        # transaction: the lock, its statements, a commit; one per proposal was most of the
        # check's seconds in a burst). Only our own proposals' messages: anyone may write the
        # store, and one planted entry naming a message the ledger does not know (its guard
        # item shown on chain) would fail the whole write, every round. A message of a proposal
        # that is not ours (ours before a restart, say) is still attested, so it is read and
        # recorded as a candidate (_propose_new's guard read) instead.
        ours = [
            (m, flag)
            for (key, proposal), mine in zip(outstanding, per_proposal, strict=True)
            if proposals.ours(key, proposal)
            for m, flag in zip(proposal.messages, mine, strict=True)
        ]
        await self._mark_delivered_on(chain, [m for m, _ in ours], [f for _, f in ours])
        for (key, proposal), mine in zip(outstanding, per_proposal, strict=True):
            ids = ["0x" + keccak256(m).hex() for m in proposal.messages]
            if any(mine):  # done, or partly delivered elsewhere: its batch can no longer pass
                await trio.to_thread.run_sync(proposals.remove, key)
            elif not proposals.ours(key, proposal):
                # Anyone may write the store, ``created`` included: an entry we did not write
                # (or that was rewritten) neither holds its messages back from our own
                # proposals nor counts as a failed attempt of theirs (five such files would
                # fail them for good); it is dropped after confirm_timeout by our own clock.
                if (
                    time.time() - proposals.first_seen(key, time.time())
                    > self.relayer.confirm_timeout
                ):
                    await trio.to_thread.run_sync(proposals.remove, key)
            elif time.time() - proposal.created > self.relayer.confirm_timeout:
                # Its batch failed on chain (one bad message fails a whole batch_all) or too
                # few signatories are up: retry with backoff, in batches of half its size, so
                # one that cannot be delivered soon holds up nobody else (halves, not singles:
                # a batch of 500 would otherwise cost the committee 500 operations for one bad
                # message); alone, at most MAX_DELIVERY_ATTEMPTS times, then it stays failed.
                # Checked against the chain just above: a batch executed late is recorded
                # delivered, never failed.
                await trio.to_thread.run_sync(proposals.remove, key)
                half = (len(ids) + 1) // 2
                self._suspects.update(dict.fromkeys(ids, half))
                await self.relayer.db(self._fail_undelivered, ids)
                log.warning(
                    "proposal %s not executed in time; retrying its messages in batches of %d",
                    key.name,
                    half,
                )

    async def _propose_new(
        self,
        chain: ChainConfig,
        client: SubstrateClient,
        proposals: ProposalStore,
        steps: RoundSteps,
        proposed: set[str],
        *,
        published: set[ProposalKey],
    ) -> None:
        """Propose the attested messages to ``chain`` not in ``proposed`` (held back: in a live
        proposal of ours), checked against the relay policy and the chain's guard items,
        in batches the chain can execute (:meth:`_plan`); each key written is added to
        ``published`` as it is written (so the caller knows them even if a later step
        raises)."""
        records = await self.relayer.db(
            self.relayer.ledger.by_status,
            MessageStatus.ATTESTED,
            # Two full batches a round: a backlog is proposed as fast as batches fill.
            2 * SUBSTRATE_BATCH_SIZE + len(proposed),
            destination=chain.domain,
        )
        by_origin: dict[int, list[MessageRecord]] = defaultdict(list)
        for record in records:
            if record.id not in proposed:
                by_origin[record.origin].append(record)
        steps.lap("attested from the ledger")
        for origin, candidates in by_origin.items():
            # The operator's policy first, as on the EVM path: a refused message costs no RPC
            # and is never proposed (the committee would spend its fees on it).
            group = await self.relayer.admitted(candidates)
            steps.lap("relay policy")
            if not group:
                continue
            flags = await self._delivered_items(client, chain, [r.message for r in group])
            await self._mark_delivered_on(chain, [r.message for r in group], flags)
            steps.lap("guard items of the new")
            todo = [r for r, flag in zip(group, flags, strict=True) if not flag]
            if not todo:
                continue
            batches = await self._plan(chain, client, todo)
            steps.lap("plan")
            for batch in batches:
                fresh = await self._propose(chain, self.relayer.lanes[origin], batch)
                steps.lap("prove")
                if fresh is not None:
                    published.add(await trio.to_thread.run_sync(proposals.publish, fresh))
                    steps.lap("publish")
                    steps.proposed += len(fresh.messages)
                    self.relayer.metrics.proposals += 1
                    log.info(
                        "proposed %d message(s) from %s to %s",
                        len(fresh.messages),
                        self.relayer.lanes[origin].chain.name,
                        chain.name,
                    )

    async def _plan(
        self, chain: ChainConfig, client: SubstrateClient, todo: Sequence[MessageRecord]
    ) -> list[list[MessageRecord]]:
        """``todo`` (in nonce order) cut into batches the chain can execute, each as full as
        its weight, length and proposal-file budgets allow (:func:`plan_batches`); suspects of
        a failed batch alone.

        A message too large for any batch cannot occur under an accepted sizing
        (:func:`~relayer.families.substrate.batching.check_sizing` makes sure the largest
        possible message fits). Should one turn up anyway, the sizing is what is wrong, not
        the message: nothing is written (it stays attested, is not proposed), the sizing is
        dropped and measured again next round. Never ``failed``: that would let one RPC answer
        refuse deliverable messages for good."""
        budget, model = await self._sizing(client)
        settings, bridges = chain.settings(), token_bridges(self.relayer.config)
        costs = [message_cost(model, decode_message(r.message), settings, bridges) for r in todo]
        planned, oversized = plan_batches(costs, budget)
        if oversized:
            self._sizes.drop()
            log.error(
                "%d message(s) to %s fit no batch by the measured limits: left attested, the "
                "limits are measured again next round",
                len(oversized),
                chain.name,
            )
        batches: list[list[MessageRecord]] = []
        for batch in planned:
            # Suspects in runs of at most their bound (any part of a planned batch fits the
            # budget too); the others together, as planned.
            rest: list[MessageRecord] = []
            run: list[MessageRecord] = []
            bound = 0
            for record in (todo[i] for i in batch):
                limit = self._suspects.get(record.id)
                if limit is None:
                    rest.append(record)
                    continue
                if run and (limit != bound or len(run) >= bound):
                    batches.append(run)
                    run = []
                run.append(record)
                bound = limit
            batches.extend(group for group in (run, rest) if group)
        return batches

    def _record_refunded(self, chain: ChainConfig, ids: Sequence[str]) -> None:
        """Refunded messages ``failed`` for good — those not set aside meanwhile (an operator's
        ``skip`` stays: the trail and the chain both say what happened)."""
        with self.relayer.ledger.atomic() as batch:
            batch.transition(
                batch.movable(ids, MessageStatus.FAILED),
                MessageStatus.FAILED,
                reason=f"cannot be delivered on {chain.name}: the committee refunded it (its "
                "replay-guard item is frozen; the refund is a message back to the origin)",
            )

    def _fail_undelivered(self, ids: Sequence[str]) -> None:
        """Mark messages whose proposal timed out ``failed``: to be retried after a backoff,
        or, once they failed :data:`MAX_DELIVERY_ATTEMPTS` times in a proposal of their own,
        for good (an operator can re-queue them). One write; messages moved meanwhile
        (skipped by an operator, delivered) are left as they are.

        A proposal of several messages failing does not count against each of them: one bad
        message fails the whole ``batch_all``, and the halving (:meth:`_plan`) would give up
        its innocent neighbours after five levels. It is bounded all the same: the halves
        reach single messages within log2(``SUBSTRATE_BATCH_SIZE``) = 10 failures."""
        reason = f"not delivered by the committee within {self.relayer.confirm_timeout:g} s"
        if len(ids) > 1:
            reason = f"its batch of {len(ids)} was {reason}: retried in halves"
        with self.relayer.ledger.atomic() as batch:
            for message_id in batch.movable(ids, MessageStatus.FAILED):
                failures = failures_since_retry(
                    batch.history(message_id), "not delivered by the committee"
                )
                if len(ids) == 1 and failures + 1 >= MAX_DELIVERY_ATTEMPTS:
                    batch.transition(
                        [message_id],
                        MessageStatus.FAILED,
                        reason=f"{reason}, {failures + 1} times: gave up",
                    )
                else:
                    backoff = RETRY_BACKOFF[min(failures + 1, len(RETRY_BACKOFF) - 1)]
                    batch.transition(
                        [message_id],
                        MessageStatus.FAILED,
                        reason=reason,
                        retry_at=time.time() + backoff,
                    )

    async def _propose(
        self, chain: ChainConfig, lane: Lane, group: Sequence[MessageRecord]
    ) -> Proposal | None:
        """A proposal for ``group`` under the lane's newest stored checkpoint, each message
        passed through the light client first (as the attesters will check it)."""
        checkpoint, _ = await self.relayer.db(self.relayer.checkpoint_for, lane)  # the gate
        proven = await self.relayer.proven(chain, lane, checkpoint, group)
        if not proven:
            return None
        return new_proposal(
            chain.domain,
            checkpoint,
            [record.message for record, _ in proven],
            [branch for _, branch in proven],
        )
