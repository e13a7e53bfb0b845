"""Delivery to a Substrate chain through the committee's multisig: the relayer proposes batches
(:mod:`relayer.families.substrate.proposals`), the attesters approve and execute them
(:mod:`relayer.families.substrate.approval`), and the relayer records what the chain's
replay-guard items show delivered or refunded AT ITS FINAL HEAD, proven under that head's
state root by the rule :func:`~relayer.families.substrate.calls.proves_storage` sets (required
with a GRANDPA checkpoint; never on chopsticks). The best block only decides what
not to propose again: a best block can still be orphaned, and a delivery recorded from one that
is would never be delivered (the ledger says ``delivered``; nothing proposes it again).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import trio

from adapters.errors import AdapterError
from adapters.substrate.client import SubstrateClient
from adapters.text import ERROR_TEXT_LIMIT, one_line
from light_clients.errors import VerificationError
from light_clients.hashing import keccak256
from light_clients.message import Message, decode_message
from light_clients.substrate.header import SubstrateHeader
from relayer.checkpoints import CheckpointStoreError
from relayer.config import (
    SUBSTRATE_BATCH_SIZE,
    ChainConfig,
    ConfigError,
)
from relayer.families.substrate.batching import (
    BatchBudget,
    Cost,
    CostModel,
    SizingCache,
    has_room,
    message_cost,
    plan_batches,
)
from relayer.families.substrate.calls import (
    GUARD_DELIVERED,
    GUARD_REFUNDED,
    GuardReads,
    proves_storage,
    shared_follower,
    token_bridges,
)
from relayer.families.substrate.connection import connected, final_header
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
    OPERATOR_RETRY,
    RETRY_BACKOFF,
    Lane,
    Relayer,
    recent_failures,
)

log = logging.getLogger("passerelle.relayer")


UNDELIVERED = "not delivered by the committee"
"""How a timed-out proposal's lone message's failure reason starts: what its attempts count."""
UNDELIVERED_COUNT_CAP = max(MAX_DELIVERY_ATTEMPTS, len(RETRY_BACKOFF))
"""The most prior failures :meth:`SubstrateDelivery._fail_undelivered` counts: enough for the
last attempt (:data:`MAX_DELIVERY_ATTEMPTS`) and the longest backoff to be exact; more would only
read more of a trail that grows for ever while the final head cannot be read (review RFINAL,
LOW 5)."""
HELD_CAP = 4 * SUBSTRATE_BATCH_SIZE
"""The most messages :attr:`SubstrateDelivery._held` keeps (review RFINA L1). Unbounded, a best
state that lies "handled" (or a long finality stall) put the destination's whole attested
backlog there, and every round shipped all of it to the database as the read's exclusion
(100k ids: 7 MB of JSON and 0.17 CPU s a round). Past the cap a message is simply not held:
it stays in the ordinary attested read, checked and dropped there as before the queue
existed, so the read can fill with such messages again only beyond this many."""
HELD_IDS_SHOWN = 5
"""Message ids named in one "held back" warning line (:meth:`SubstrateDelivery._warn_held`)."""

SLOW_ROUND = 2.0
"""Seconds: a delivery round that took longer logs where its time went (:class:`RoundSteps`)."""

FILL_WAIT = 2.0
"""The longest (seconds, by the relayer's own clock, from the first round that held it) an
attested message waits in a batch with room left, while more messages are on their way or
proposals of ours to the same chain are still live (:meth:`SubstrateDelivery._fill_or_go`),
before it is proposed as it is.

Why wait at all: messages become attested a checkpoint at a time, and a burst's checkpoints
come an origin block apart (alpha: 1 s). Proposed at each checkpoint's boundary, a block of
771 messages became batches of 494 and 277: 6,000 messages took 16 batches where 13 do, and
each batch costs the committee two extrinsics, each one of Asset Hub's blocks. Why this
bound: two origin blocks of alpha, so the next checkpoint's messages usually join in time.

What a message can lose is this plus one poll, once per relayer process: its clock starts in
the first round that holds it and is kept while it stays an attested candidate read (held or
not: a best block saying "handled" every other round, a round whose proposal could not be
proven, a failed round), so nothing that arrives later, hostile or not, restarts it. The
clocks are in memory: a successor (after a restart, a SIGKILL or a lease hand-over) starts
new ones, so the bound is per process; nothing is written while a batch is held, so a
successor only re-plans what is still attested (exactly-once is not at stake).

"More is coming" is counted for the whole destination (any origin), not per route: a message
to this chain stuck before attestation on any origin (a paused origin, hostile spam) makes a
part-full batch wait, but never longer than this bound. A message goes at once only when
nothing to its destination is on its way and no proposal of ours to it is live."""


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
        # The replay-guard items read at Asset Hub's best block (and at its final head), kept
        # per block hash: the check reads every live proposal's items each poll, the chain
        # changes per block.
        self._guards = GuardReads()
        # Each live proposal's messages decoded once, not at every poll (_decoded): the check
        # asks about every message of every live proposal each 0.2 s, thousands in a burst,
        # and decoding them again each time was ~15 % of the relayer's CPU (issue #12).
        # Pruned to the live proposals' messages once a round (_check_outstanding).
        self._decoded_messages: dict[bytes, Message] = {}
        # The final head of the running round, read at most once a round (review R2 L4; the
        # chain's GRANDPA follower is shared with the unpaid sweep: shared_follower), and
        # whether it was read yet (read and None: it could not be, nothing is final this round).
        self._final: SubstrateHeader | None = None
        self._final_read = False
        # What of the final read failed this round (None: nothing did), for the lines that
        # say why a proposal waits (R3 L7) and so that no message is given up for good
        # without the final head's word (R3 L6).
        self._final_missing: str | None = None
        # Whether this round's final items are read with proofs (proves_storage, asked with
        # the final head: its answer is cached per endpoint there).
        self._proving = False
        # Kept proposals (executed at best, not final yet): when each was last seen executed
        # at best (its timeout counts from then, review R2 L2), and those already warned about
        # as waiting longer than confirm_timeout (R2 L3). Live keys only: pruned each check.
        self._shown_at: dict[ProposalKey, float] = {}
        self._warned: set[ProposalKey] = set()
        # Attested messages in no kept proposal of ours that the best block shows handled and
        # the final head does not (a proposal not ours, ours removed from the store, a stale or
        # lying best read): id -> when first seen so, and those already warned about (RFINAL
        # LOW 3: held silently, they showed only in the route-age metric). Pruned each round
        # to the candidates read and the held: a bound whatever the best block claims.
        self._held_since: dict[str, float] = {}
        self._held_warned: set[str] = set()
        # The messages held so now, left out of the attested read by the database as the
        # proposed are (review RINTA M1: read, they could fill its whole limit, and those
        # behind them were never read), re-checked SUBSTRATE_BATCH_SIZE a round in this
        # order, each moved to the end once re-checked (_recheck_held): a queue, so every
        # held message is re-checked in turn however many are held.
        self._held: dict[str, None] = {}
        # Whether the "held queue full" line was logged since _held was last below HELD_CAP:
        # one line per time it fills, not one a round (_hold).
        self._held_full = False
        # Attested messages held back in a batch with room left (_fill_or_go): id -> when a
        # round first held them (self._clock). Kept while a candidate read (_propose_new).
        self._filling: dict[str, float] = {}
        self._clock: Callable[[], float] = time.monotonic
        # What each candidate costs in a batch under the sizing in use (_costs): a held batch
        # is planned and judged again every round, its messages decoded and costed once.
        self._cost_memo: dict[str, Cost] = {}
        self._cost_sizing: tuple[BatchBudget, CostModel] | None = None

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
        # The cache's own object, not a new tuple of its parts: _costs keeps its memo while
        # the sizing is the same object (a new measurement, after a runtime upgrade or a
        # drop, is a new one and resets it). A new tuple every call reset it every round.
        return sizing

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
                except Exception as exc:
                    if not self._logged(chain, exc):
                        raise
                await trio.sleep(self.relayer.poll)

    def _logged(self, chain: ChainConfig, exc: Exception, step: str = "") -> bool:
        """Log a failed round's error as one line (``step`` naming where it happened, if
        given) and say True when the next round simply tries again; False, nothing logged,
        for an error that must end the task (the caller re-raises it).

        A write outside this lease's domain (:class:`WriteOutsideDomain`) is such an error:
        this relayer's configuration disagrees with the chains, every round would do the same,
        and only the lease keeper, seeing it, stops the lease for good and gives it back to a
        relayer configured right (relayer/leases.py); logged and retried here, it held the
        route for ever. It is no :class:`InvalidReference`, so nothing below logs it."""
        where = f"deliver to {chain.name}: {step}"
        # A node's words, a store file's, a database's: one bounded printable line (RFINAL L6).
        text = one_line(str(exc), ERROR_TEXT_LIMIT)
        if isinstance(exc, (AdapterError, ConfigError)):
            self.relayer.metrics.rpc_errors += 1
            log.warning("%s%s", where, text)
        elif isinstance(exc, CheckpointStoreError):
            # The proposal store cannot be read or written now (its database is down or busy,
            # a disk is full): one line, and the next round tries again.
            log.warning("%sproposals: %s", where, text)
        elif isinstance(exc, (UnknownRecord, IllegalTransition, InvalidReference)):
            # A move the ledger refuses (someone else moved the message): logged, the next
            # round reads the ledger again; never the end of the relayer.
            log.error("%snot recorded: %s", where, text)
        else:
            return False
        return True

    async def _delivered_items(
        self, client: SubstrateClient, chain: ChainConfig, messages: Sequence[bytes]
    ) -> list[str | None]:
        """For each message, what its replay-guard item on ``chain`` says: None (not handled
        yet), delivered, or refunded, at Asset Hub's BEST block now
        (:class:`~relayer.families.substrate.calls.GuardReads`: read again once its hash
        changed). Safe for what is not proposed again, or not failed: never recorded."""
        return await self._guards.items(client, chain.settings(), self._decoded(messages))

    def _decoded(self, messages: Sequence[bytes]) -> list[Message]:
        """``decode_message`` of each (a pure function of the bytes), remembered."""
        memo = self._decoded_messages
        decoded: list[Message] = []
        for raw in messages:
            message = memo.get(raw)
            if message is None:
                message = memo[raw] = decode_message(raw)
            decoded.append(message)
        return decoded

    async def _final_items(
        self, client: SubstrateClient, chain: ChainConfig, messages: Sequence[bytes]
    ) -> list[str | None]:
        """:meth:`_delivered_items` at ``chain``'s final head, the block its finality policy
        accepts (:func:`~relayer.families.substrate.connection.final_header`: the node's
        finalized head, its hash GRANDPA-proven with a checkpoint; chopsticks finalizes every
        block it builds), read once a round. The only read the ledger's ``delivered`` /
        refunded ``failed`` is written from: those are for good, a best block is not.

        The items themselves are PROVEN under that head's state root by the rule of
        :func:`~relayer.families.substrate.calls.proves_storage` (required with a GRANDPA
        checkpoint; wherever the node offers proofs otherwise, a warning once per endpoint
        where it does not; never under ``devnet-instant``, where they are the node's word); an
        unproven read at the best block is never reused for it.

        A final head or a proof that cannot be had (a node error, a GRANDPA justification
        missing or wrong, a proof that does not prove, a checkpointed node that offers no read
        proofs, an ``rpc_methods`` that fails) is one warning line and "nothing final
        yet" for the rest of the round (every item None), review R2 L1: what a best block
        shows is then neither recorded nor proposed again (it waits, as when finality lags),
        while everything else goes on: proposals the best block does not show still time
        out, messages it does not show are still proposed."""
        unknown: list[str | None] = [None] * len(messages)
        if not messages:
            return unknown
        head = await self._final_head(client, chain)
        if head is None:
            return unknown
        try:
            return await self._guards.items(
                client,
                chain.settings(),
                self._decoded(messages),
                at=head,
                proven=self._proving,
            )
        except (AdapterError, VerificationError) as exc:
            self._final = None  # nothing more asked at it this round: one line a round
            self._unreadable(chain, f"the guard items at the final head #{head.number}", exc)
            return unknown

    async def _final_head(
        self, client: SubstrateClient, chain: ChainConfig
    ) -> SubstrateHeader | None:
        """The round's final head (read on first use in the round; see :meth:`_final_items`),
        or None if it could not be read. Whether its items are read with proofs is decided
        first (R3 M1): a checkpointed node that cannot prove them fails the read here, as one
        without GRANDPA justifications does."""
        if not self._final_read:
            self._final_read = True
            try:
                self._proving = await proves_storage(client, chain)
                follower = shared_follower(self.relayer.config, chain)
                self._final = await final_header(client, chain, follower)
            except (AdapterError, ConfigError, VerificationError) as exc:
                self._unreadable(chain, "the final head", exc)
        return self._final

    def _unreadable(self, chain: ChainConfig, what: str, exc: Exception) -> None:
        """One warning line: ``what`` could not be read, so nothing is final this round."""
        self._final_missing = what
        self.relayer.metrics.rpc_errors += 1
        log.warning(
            "deliver to %s: %s not read, nothing recorded delivered this round: %s",
            chain.name,
            what,
            one_line(str(exc), ERROR_TEXT_LIMIT),
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
        # One final head a round, read if needed (and what of it failed, if anything).
        self._final, self._final_read, self._final_missing = None, False, None
        await self.relayer.db(self.relayer.requeue_due, chain.domain)
        outstanding = await trio.to_thread.run_sync(proposals.pending, chain.domain)
        steps.lap("read proposals")
        published: set[ProposalKey] = set()
        proposing: Exception | None = None
        try:
            await self._propose_new(
                chain,
                client,
                proposals,
                steps,
                self._held_back(proposals, outstanding),
                published=published,
            )
        except Exception as exc:
            proposing = exc
            raise
        finally:
            try:
                await self._check_outstanding(
                    chain,
                    client,
                    proposals,
                    [(key, proposal) for key, proposal in outstanding if key not in published],
                )
            except Exception as checking:
                if proposing is None:
                    raise
                # Both failed: raised from here, the check's error would replace proposing's
                # and hide it (review R2b). One line each: one logged here, one raised.
                raise self._both_failed(chain, proposing, checking) from None
            steps.lap("outstanding proposals")

    def _both_failed(
        self, chain: ChainConfig, proposing: Exception, checking: Exception
    ) -> Exception:
        """Proposing and the check of live proposals both failed this round: log one error,
        one line, and return the other for the caller to raise (the loop logs it, or it ends
        the task). Proposing's is logged here unless it must end the task (a write outside
        the lease's domain): then it is the one raised and the check's is logged."""
        if self._logged(chain, proposing, "proposing: "):
            return checking
        if not self._logged(chain, checking, "checking live proposals: "):
            log.error(
                "deliver to %s: checking live proposals: %s: %s",
                chain.name,
                type(checking).__name__,
                one_line(str(checking), ERROR_TEXT_LIMIT),
            )
        return proposing

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
        failed and retried in halves when ours and not executed within ``confirm_timeout``.
        "Handled" and recorded at the chain's final head (:meth:`_final_items`); handled in the
        best block only, a proposal is kept as it is until one or the other: its timeout then
        counts from when the best block last showed it executed, not from its creation (its
        final approval, orphaned with the block, usually executes again a block later), and a
        warning line says once that it waits longer than ``confirm_timeout`` for finality."""
        live = {key for key, _ in outstanding}
        self._shown_at = {k: t for k, t in self._shown_at.items() if k in live}
        self._warned &= live
        messages = [m for _, proposal in outstanding for m in proposal.messages]
        live_messages = set(messages)
        self._decoded_messages = {
            raw: m for raw, m in self._decoded_messages.items() if raw in live_messages
        }
        if not outstanding:
            return
        per_proposal = _split(await self._delivered_items(client, chain, messages), outstanding)
        # What a best block shows is recorded only once the final head shows it too (a best
        # block can be orphaned): read there only for the proposals the best block shows
        # handled, nothing else can be final. On chopsticks both are one block: from memory.
        shown = [i for i, best in enumerate(per_proposal) if any(best)]
        # And before a message alone in a proposal of ours is failed, perhaps for good (review
        # R3 L6): a best read that hides a delivered item (a lying node, a proxy's stale
        # cache) would otherwise give it up after MAX_DELIVERY_ATTEMPTS. The final head's read
        # (proven where proofs are used) has the last word: delivered there, it is recorded
        # delivered. Rare (a timeout of a single message), so no cost in a burst.
        # The clock is read ONCE for the whole check (review RFINAL, M1): read again below, a
        # proposal crossing its timeout between the two readings (the final read, the ledger
        # write, the removals take seconds in a burst) was failed without its final read.
        now = time.time()
        last_chance = [
            i
            for i, (key, proposal) in enumerate(outstanding)
            if not any(per_proposal[i])
            and len(proposal.messages) == 1
            and proposals.ours(key, proposal)
            and self._timed_out(key, proposal, now)
        ]
        asked = shown + last_chance
        final: list[Sequence[str | None]] = [[None] * len(p.messages) for _, p in outstanding]
        if asked:
            flags = await self._final_items(
                client, chain, [m for i in asked for m in outstanding[i][1].messages]
            )
            for i, done in zip(asked, _split(flags, [outstanding[i] for i in asked]), strict=True):
                final[i] = done
        # One write for the round however many proposals executed (each write is a ledger
        # transaction: the lock, its statements, a commit; one per proposal was most of the
        # check's seconds in a burst). Only our own proposals' messages: anyone may write the
        # store, and one planted entry naming a message the ledger does not know (its guard
        # item shown on chain) would fail the whole write, every round. A message of a proposal
        # that is not ours (ours before a restart, say) is still attested, so it is read and
        # recorded as a candidate (_propose_new's guard read) instead.
        ours = [
            (m, flag)
            for (key, proposal), done in zip(outstanding, final, strict=True)
            if proposals.ours(key, proposal)
            for m, flag in zip(proposal.messages, done, strict=True)
        ]
        await self._mark_delivered_on(chain, [m for m, _ in ours], [f for _, f in ours])
        read_final = set(last_chance)
        for i, ((key, proposal), mine, done) in enumerate(
            zip(outstanding, per_proposal, final, strict=True)
        ):
            ids = ["0x" + keccak256(m).hex() for m in proposal.messages]
            if any(done):  # done, or partly delivered elsewhere: its batch can no longer pass
                await trio.to_thread.run_sync(proposals.remove, key)
            elif any(mine):
                # Executed in a best block, not final yet: kept (its messages held back from
                # proposing), neither failed nor dropped, until the final head shows it (then
                # recorded and removed) or the block is orphaned (then the rules below apply,
                # the clock starting from now).
                self._shown_at[key] = now
                self._warn_waiting(chain, key, proposal, proposals, now)
            elif not proposals.ours(key, proposal):
                # Anyone may write the store, ``created`` included: an entry we did not write
                # (or that was rewritten) neither holds its messages back from our own
                # proposals nor counts as a failed attempt of theirs (five such files would
                # fail them for good); it is dropped after confirm_timeout by our own clock.
                since = max(proposals.first_seen(key, now), self._shown_at.get(key, 0.0))
                if now - since > self.relayer.confirm_timeout:
                    await trio.to_thread.run_sync(proposals.remove, key)
            elif self._timed_out(key, proposal, now):
                # Its batch failed on chain (one bad message fails a whole batch_all) or too
                # few signatories are up: retry with backoff, in batches of half its size, so
                # one that cannot be delivered soon holds up nobody else (halves, not singles:
                # a batch of 500 would otherwise cost the committee 500 operations for one bad
                # message); alone, at most MAX_DELIVERY_ATTEMPTS times, then it stays failed.
                # Checked against the chain just above: a batch executed late is recorded
                # delivered, never failed; a message alone, at the final head too. Given up
                # for good only if that final read was had for THIS proposal (review R3 L6,
                # RFINAL M1): asked this round (last_chance) and read without error; else one
                # more retry after the longest backoff.
                await trio.to_thread.run_sync(proposals.remove, key)
                half = (len(ids) + 1) // 2
                self._suspects.update(dict.fromkeys(ids, half))
                await self.relayer.db(
                    self._fail_undelivered,
                    ids,
                    give_up=i in read_final and self._final_missing is None,
                )
                log.warning(
                    "proposal %s not executed in time; retrying its messages in batches of %d",
                    key.name,
                    half,
                )

    def _timed_out(self, key: ProposalKey, proposal: Proposal, now: float) -> bool:
        """Whether our ``proposal`` has had ``confirm_timeout`` to execute: counted from its
        creation, or from when the best block last showed it executed (review R2 L2)."""
        since = max(proposal.created, self._shown_at.get(key, 0.0))
        return now - since > self.relayer.confirm_timeout

    def _warn_waiting(
        self,
        chain: ChainConfig,
        key: ProposalKey,
        proposal: Proposal,
        proposals: ProposalStore,
        now: float,
    ) -> None:
        """Once per kept proposal: a warning line when it has waited longer than
        ``confirm_timeout`` (since its creation, or since we first saw it if not ours) for the
        final head to show what the best block shows. Nothing bounds that wait but finality
        itself (a stalled finality gadget; ``confirmations:N`` on a chain that builds blocks
        only for transactions never reaches the block): its messages are held back, and the
        line says why."""
        born = proposal.created if proposals.ours(key, proposal) else proposals.first_seen(key, now)
        if key in self._warned or now - born <= self.relayer.confirm_timeout:
            return
        self._warned.add(key)
        final = self._final_says("it")
        log.warning(
            "deliver to %s: proposal %s (%.0f s old) executed in the best block, %s: waiting "
            "for finality (its %d message(s) held back until the final head shows it or the "
            "block is orphaned)",
            chain.name,
            key.name,
            now - born,
            final,
            len(proposal.messages),
        )

    def _final_says(self, what: str) -> str:
        """What this round's final read said of ``what`` (the best block shows it handled), or
        which part of that read failed (review R3 L7: the head may have been read and its items
        not)."""
        if self._final_missing is None and self._final is not None:
            return f"the final head (#{self._final.number}) does not show {what} yet"
        return f"{self._final_missing or 'the final head'} could not be read this round"

    def _warn_held(
        self, chain: ChainConfig, held: Sequence[str], released: Sequence[str], now: float
    ) -> None:
        """Once per message, one line a round: the attested messages in ``held`` (the best
        block shows them handled, the final head does not, and no kept proposal of ours holds
        them) held longer than ``confirm_timeout`` since first seen so. They are neither
        proposed (the best block has them) nor recorded (the final head has not) until one or
        the other changes: nothing else says so (RFINAL LOW 3). ``released`` are recorded
        delivered: their clocks stop. A message the best block shows handled no more keeps its
        clock while it is still a candidate read or held (pruned in :meth:`_propose_new` to
        those, as the fill clocks are): reset there, a best block that says
        "handled" every other round (a lying node, two forks) restarted it each time and the
        line never came (review RRATE M2)."""
        for message_id in released:
            self._held_since.pop(message_id, None)
            self._held_warned.discard(message_id)
        late = []
        for message_id in held:
            since = self._held_since.setdefault(message_id, now)
            if now - since > self.relayer.confirm_timeout and message_id not in self._held_warned:
                self._held_warned.add(message_id)
                late.append(message_id)
        if not late:
            return
        named = ", ".join(late[:HELD_IDS_SHOWN])
        more = f" and {len(late) - HELD_IDS_SHOWN} more" if len(late) > HELD_IDS_SHOWN else ""
        log.warning(
            "deliver to %s: %d attested message(s) handled in the best block for over %g s, in "
            "no proposal of ours, %s: held (not proposed again) until the final head shows "
            "them or the best block no longer does: %s%s",
            chain.name,
            len(late),
            self.relayer.confirm_timeout,
            self._final_says("them"),
            named,
            more,
        )

    async def _record_final(
        self, chain: ChainConfig, client: SubstrateClient, shown: Sequence[MessageRecord]
    ) -> tuple[list[str], list[str]]:
        """``shown`` (attested, handled in the best block) read at the final head and recorded
        where it shows them (:meth:`_mark_delivered_on`: the only way a best block's "handled"
        reaches the ledger); the ids it does not show (held) and those it does (recorded)."""
        held: list[str] = []
        recorded: list[str] = []
        if shown:
            final = await self._final_items(client, chain, [r.message for r in shown])
            await self._mark_delivered_on(chain, [r.message for r in shown], final)
            for record, flag in zip(shown, final, strict=True):
                (recorded if flag else held).append(record.id)
        return held, recorded

    def _hold(self, chain: ChainConfig, held: Sequence[str]) -> None:
        """Queue ``held`` (attested, shown handled by the best block only) in :attr:`_held`,
        so the attested read leaves them out, while it has room (:data:`HELD_CAP`). Those that
        do not fit are not lost: they stay attested, the ordinary read takes them again and
        checks them as at any round. The first time the queue fills, one line says so."""
        room = HELD_CAP - len(self._held)
        fresh = [m for m in held if m not in self._held]
        self._held.update(dict.fromkeys(fresh[: max(room, 0)]))
        if len(fresh) <= room:
            self._held_full = len(self._held) >= HELD_CAP and self._held_full
            return
        if not self._held_full:
            self._held_full = True
            log.warning(
                "%s: %d messages held (the best block shows them handled, the final head "
                "does not); %d more stay in the ordinary read until some are recorded",
                chain.name,
                len(self._held),
                len(fresh) - max(room, 0),
            )

    async def _recheck_held(self, chain: ChainConfig, client: SubstrateClient, now: float) -> None:
        """Re-check up to ``SUBSTRATE_BATCH_SIZE`` of the held messages (:attr:`_held`, those
        first re-checked longest ago) with the guard reads only, the main read leaving them
        out (review RINTA M1):

        - no longer attested (recorded, skipped by an operator): forgotten;
        - the final head shows them handled: recorded (:meth:`_mark_delivered_on`, the final
          head's read as every ``delivered`` the ledger gets from this chain);
        - the best block no longer shows them handled: released, so this round's read takes
          them as candidates again (their clocks kept: :meth:`_propose_new`);
        - else still held, to the end of the queue, and :meth:`_warn_held`'s line once due.

        The ids are read in one statement, one JSON parameter (``Ledger.messages(ids=…)``),
        so the cost is bounded by the batch, not by what a lying best block added."""
        due = list(itertools.islice(self._held, SUBSTRATE_BATCH_SIZE))
        if not due:
            return
        records = await self.relayer.db(
            self.relayer.ledger.messages,
            ids=due,
            status=MessageStatus.ATTESTED,
            destination=chain.domain,
            limit=len(due),
        )
        held: list[str] = []
        recorded: list[str] = []
        if records:
            flags = await self._delivered_items(client, chain, [r.message for r in records])
            shown = [r for r, flag in zip(records, flags, strict=True) if flag]
            held, recorded = await self._record_final(chain, client, shown)
        # Only once every read answered: a round failing above leaves the queue as it was,
        # and the same messages are re-checked first next round.
        attested = {record.id for record in records}
        for message_id in due:
            del self._held[message_id]  # released, recorded or gone; the held go back below
            if message_id not in attested:
                self._held_since.pop(message_id, None)
                self._held_warned.discard(message_id)
        self._held.update(dict.fromkeys(held))
        self._warn_held(chain, held, recorded, now)

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
        limit = 2 * SUBSTRATE_BATCH_SIZE  # two full batches a round: a backlog goes as they fill
        # Whether a part-full batch may wait for more (_fill_or_go): while proposals of ours
        # to this chain are live, the committee and the chain have work of ours queued, and a
        # batch proposed now would only queue behind it (the relayer scans an origin's FINAL
        # blocks, so the next checkpoint's messages are unknown until about 0.3 s before they
        # are attested: measured, a burst's 277-message tails went out alone although the next
        # 729 were attested a second later); or while messages to this chain are on their way
        # (seen on an origin, not attested), counted BEFORE the attested are read (counted
        # after, those attested in between were neither read nor counted: measured 446 + 66
        # where 494 + 18 do). One small statement (message_counts rows of this destination),
        # all origins together: a batch may wait for another origin's messages, within
        # FILL_WAIT all the same.
        coming = bool(proposed)
        if not coming:
            counts = await self.relayer.db(
                self.relayer.ledger.counts_by_status, destination=chain.domain
            )
            coming = counts[MessageStatus.DISCOVERED] + counts[MessageStatus.FINAL] > 0
        now = time.time()
        # Before the read: what the re-check releases (the best block shows it handled no
        # more) is a candidate of this very read, not the next round's.
        await self._recheck_held(chain, client, now)
        steps.lap("held re-checked")
        records = await self.relayer.db(
            self.relayer.ledger.by_status,
            MessageStatus.ATTESTED,
            limit,
            destination=chain.domain,
            # Left out by the database: loading the held back only to drop them here was
            # about 2,500 rows every 0.2 s in a burst, a tenth of the relayer's CPU. The held
            # by the best block too: read, they filled the limit while the best block said
            # "handled" and the final head did not, and nothing behind them was ever read
            # (review RINTA M1); _recheck_held tends them instead. One JSON parameter still.
            excluding=proposed | set(self._held),
        )
        by_origin: dict[int, list[MessageRecord]] = defaultdict(list)
        for record in records:
            by_origin[record.origin].append(record)
        # Hold clocks of the candidates read this round and of the held (the rest left
        # attested, or are held back in a proposal of ours, which _warn_waiting speaks for).
        # A held message keeps its clock while held, released or read again: its line comes
        # confirm_timeout after the best block first said "handled" (review RRATE M2).
        read = {record.id for record in records}
        kept = read | set(self._held)
        self._held_since = {k: t for k, t in self._held_since.items() if k in kept}
        self._held_warned &= kept
        steps.lap("attested from the ledger")
        # The read stopped at its limit: the last origin read has more attested messages.
        cut = records[-1].origin if len(records) >= limit else None
        filling: dict[str, float] = {}  # this round's held tails (_fill_or_go)
        try:
            await self._propose_origins(
                chain,
                client,
                proposals,
                steps,
                by_origin,
                now=now,
                coming=coming,
                cut=cut,
                filling=filling,
                published=published,
            )
        finally:
            # A clock is kept while its message is an attested candidate read this round,
            # held or not (review RRATE M2), as _held_since is: pruned to this round's held
            # tails, a round where the message was not held (the best block said "handled",
            # a _propose that gave None, a round failing before its origin) restarted its
            # wait, and such rounds every other time held it for ever. Dropped once the
            # message is proposed (then excluded from the read), recorded or no longer read.
            self._filling = {k: t for k, t in (self._filling | filling).items() if k in kept}

    async def _propose_origins(
        self,
        chain: ChainConfig,
        client: SubstrateClient,
        proposals: ProposalStore,
        steps: RoundSteps,
        by_origin: dict[int, list[MessageRecord]],
        *,
        now: float,
        coming: bool,
        cut: int | None,
        filling: dict[str, float],
        published: set[ProposalKey],
    ) -> None:
        """The per-origin part of :meth:`_propose_new`: ``by_origin``'s attested candidates
        admitted, checked against the guard items, planned and proposed (a partial last batch
        perhaps held, into ``filling``: :meth:`_fill_or_go`)."""
        for origin, candidates in by_origin.items():
            # The operator's policy first, as on the EVM path: a refused message costs no RPC
            # and is never proposed (the committee would spend its fees on it).
            group = await self.relayer.admitted(candidates)
            steps.lap("relay policy")
            if not group:
                continue
            flags = await self._delivered_items(client, chain, [r.message for r in group])
            # Handled in the best block: not proposed again; recorded once final (until then
            # it stays attested and is read again next round; held past confirm_timeout, a
            # line says so: _warn_held).
            shown = [r for r, flag in zip(group, flags, strict=True) if flag]
            todo = [r for r, flag in zip(group, flags, strict=True) if not flag]
            held, released = await self._record_final(chain, client, shown)
            self._hold(chain, held)  # read no more: _recheck_held's now (up to HELD_CAP)
            self._warn_held(chain, held, released, now)
            steps.lap("guard items of the new")
            if not todo:
                continue
            batches = await self._plan(chain, client, todo)
            steps.lap("plan")
            batches = self._fill_or_go(
                chain, batches, more=coming or origin == cut, filling=filling
            )
            steps.lap("fill")
            for batch in batches:
                fresh = await self._propose(chain, self.relayer.lanes[origin], batch)
                steps.lap("prove")
                if fresh is not None:
                    published.add(await trio.to_thread.run_sync(proposals.publish, fresh))
                    steps.lap("publish")
                    self._forget_clocks(batch, fresh)
                    steps.proposed += len(fresh.messages)
                    self.relayer.metrics.proposals += 1
                    log.info(
                        "proposed %d message(s) from %s to %s",
                        len(fresh.messages),
                        self.relayer.lanes[origin].chain.name,
                        chain.name,
                    )

    def _forget_clocks(self, batch: Sequence[MessageRecord], proposed: Proposal) -> None:
        """Stop the clocks (held by the best block, :meth:`_warn_held`; held to fill,
        :meth:`_fill_or_go`) of ``batch``'s messages that ``proposed`` carries: their wait is
        over (the next rounds read them no more while the proposal is live). Those of the
        batch it does not carry (not proven this round) keep theirs."""
        carried = set(proposed.messages)
        for record in batch:
            if record.message in carried:
                self._held_since.pop(record.id, None)
                self._held_warned.discard(record.id)
                self._filling.pop(record.id, None)

    def _fill_or_go(
        self,
        chain: ChainConfig,
        batches: list[list[MessageRecord]],
        *,
        more: bool,
        filling: dict[str, float],
    ) -> list[list[MessageRecord]]:
        """``batches`` (planned, in nonce order: all but the last are full) less the last one
        while it is worth waiting to fill it, its messages then recorded in ``filling``; the
        rule (docs/decisions.md, session 8, "Full batches to Asset Hub"):

        the last batch waits if it has room for another message like its dearest
        (:func:`~relayer.families.substrate.batching.has_room`), it is worth waiting (``more``:
        a proposal of ours to this chain is live, so the batch would only queue behind it; or
        the ledger counted messages to this chain discovered or final, not yet attested,
        before this round's attested were read; or that read stopped at its limit inside this
        origin), it
        holds no suspect of a failed batch (those go in their halves at once: the halving is
        how a bad message is found), the sizing :meth:`_plan` used is known (no judging room
        without it), and none of its messages has waited :data:`FILL_WAIT`
        since a round first held it.

        The clocks are per message and kept across rounds (``self._filling``) while the
        message is an attested candidate read, held or not (:meth:`_propose_new`): a message
        joins the held tail's front (a retried lower nonce) or its back without restarting
        anyone's clock, and a round that does not hold it does not restart its own, so nobody
        — an origin chain full of spam, messages stuck before attestation, a flood of
        retries, a best block that says "handled" every other round — can hold one message
        longer than :data:`FILL_WAIT` plus a round (per relayer process: see there).
        The checks go from cheap to dear: ``more``, the suspects, the clocks, then the room
        (the tail's messages costed by the sizing, in process)."""
        if not batches or not more:
            return batches
        tail = batches[-1]
        if any(record.id in self._suspects for record in tail):
            return batches
        now = self._clock()
        since = [self._filling.get(record.id, now) for record in tail]
        if now - min(since) >= FILL_WAIT:
            return batches
        sizing = self._sizes.current  # what _plan just planned with; None: nothing to judge
        if sizing is None:
            return batches
        budget, _ = sizing
        if not has_room(self._costs(chain, tail, sizing), budget):
            return batches
        filling.update((record.id, at) for record, at in zip(tail, since, strict=True))
        log.debug(
            "deliver to %s: %d message(s) wait up to %g s to fill their batch",
            chain.name,
            len(tail),
            FILL_WAIT - (now - min(since)),
        )
        return batches[:-1]

    def _costs(
        self,
        chain: ChainConfig,
        records: Sequence[MessageRecord],
        sizing: tuple[BatchBudget, CostModel],
    ) -> list[Cost]:
        """What each of ``records`` costs in a batch under ``sizing`` (:func:`message_cost`),
        remembered by message id for as long as the sizing is the same object and the message
        is among the last records costed (a bound: one round's candidates). Why: a batch held
        to fill (:meth:`_fill_or_go`) is planned and judged every round (5 a second) until it
        goes: each of its up to ~500 messages decoded and costed again each time was the
        relayer's largest new CPU item."""
        if sizing is not self._cost_sizing:
            self._cost_memo, self._cost_sizing = {}, sizing
        model = sizing[1]
        settings, bridges = chain.settings(), token_bridges(self.relayer.config)
        memo, costs = self._cost_memo, []
        for record in records:
            cost = memo.get(record.id)
            if cost is None:
                cost = message_cost(model, decode_message(record.message), settings, bridges)
            costs.append(cost)
        self._cost_memo = {r.id: c for r, c in zip(records, costs, strict=True)} | (
            {k: memo[k] for k in self._filling if k in memo}
        )
        return costs

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
        sizing = await self._sizing(client)
        planned, oversized = plan_batches(self._costs(chain, todo, sizing), sizing[0])
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

    def _fail_undelivered(self, ids: Sequence[str], *, give_up: bool = True) -> None:
        """Mark messages whose proposal timed out ``failed``: to be retried after a backoff,
        or, once they failed :data:`MAX_DELIVERY_ATTEMPTS` times in a proposal of their own,
        for good (an operator can re-queue them) — if ``give_up``: the caller read the final
        head and it does not show the message either (review R3 L6); else retried after the
        longest backoff. One write; messages moved meanwhile (skipped by an operator,
        delivered) are left as they are.

        A proposal of several messages failing does not count against each of them: one bad
        message fails the whole ``batch_all``, and the halving (:meth:`_plan`) would give up
        its innocent neighbours after five levels. It is bounded all the same: the halves
        reach single messages within log2(``SUBSTRATE_BATCH_SIZE``) = 10 failures.

        The count reads each message's trail newest first, only until it has
        :data:`UNDELIVERED_COUNT_CAP` + 1 such failures or the operator's newest retry
        (:meth:`~relayer.ledger.Ledger.backoff_trail`, bounded, as the EVM delivery's
        ``_fail_unsent``): this runs inside the write transaction, for up to a whole batch's
        messages, and the trail of a message retried while the final head cannot be read only
        grows (review RFINAL, LOW 5: it read every message's whole trail)."""
        reason = f"{UNDELIVERED} within {self.relayer.confirm_timeout:g} s"
        if len(ids) > 1:
            reason = f"its batch of {len(ids)} was {reason}: retried in halves"
        with self.relayer.ledger.atomic() as batch:
            for message_id in batch.movable(ids, MessageStatus.FAILED):
                trail = batch.backoff_trail(
                    message_id, UNDELIVERED, reset=OPERATOR_RETRY, newest=UNDELIVERED_COUNT_CAP + 1
                )
                failures = recent_failures(trail, UNDELIVERED, UNDELIVERED_COUNT_CAP)
                times = (
                    f"{failures + 1}"
                    if failures < UNDELIVERED_COUNT_CAP
                    else f"over {UNDELIVERED_COUNT_CAP}"
                )
                last = len(ids) == 1 and failures + 1 >= MAX_DELIVERY_ATTEMPTS
                if last and give_up:
                    batch.transition(
                        [message_id],
                        MessageStatus.FAILED,
                        reason=f"{reason}, {times} times: gave up",
                    )
                else:
                    backoff = RETRY_BACKOFF[min(failures + 1, len(RETRY_BACKOFF) - 1)]
                    batch.transition(
                        [message_id],
                        MessageStatus.FAILED,
                        reason=f"{reason}, {times} times: not given up, the final head "
                        "could not be read"
                        if last
                        else reason,
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


def _split(
    flags: Sequence[str | None], proposals: Sequence[tuple[ProposalKey, Proposal]]
) -> list[Sequence[str | None]]:
    """``flags`` (one per message of ``proposals``, in order) cut into one list per proposal."""
    parts: list[Sequence[str | None]] = []
    at = 0
    for _, proposal in proposals:
        parts.append(flags[at : at + len(proposal.messages)])
        at += len(proposal.messages)
    return parts
