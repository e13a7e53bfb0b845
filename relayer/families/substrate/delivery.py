"""Delivery to a Substrate chain through the committee's multisig: the relayer proposes batches
(:mod:`relayer.families.substrate.proposals`), the attesters approve and execute them
(:mod:`relayer.families.substrate.approval`), and the relayer records what the chain's
replay-guard items show delivered or refunded.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence

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
from relayer.families.substrate.calls import GUARD_DELIVERED, GUARD_REFUNDED, guard_items
from relayer.families.substrate.connection import connected
from relayer.families.substrate.proposals import (
    Proposal,
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


class SubstrateDelivery:
    """The relayer's delivery to one Substrate destination (:class:`relayer.family.Delivery`)."""

    def __init__(self, chain: ChainConfig, relayer: Relayer) -> None:
        self.chain = chain
        self.relayer = relayer
        # Messages whose batch did not execute in time: proposed one by one from then on (in
        # memory: after a restart a failing batch is found out again the same way).
        self._suspects: set[str] = set()

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
        self._suspects.difference_update(ids + refunded)
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
        await self.relayer.db(self.relayer.requeue_due, chain.domain)
        outstanding = await trio.to_thread.run_sync(proposals.pending, chain.domain)
        proposed: set[str] = set()
        for key, proposal in outstanding:
            flags = await self._delivered_items(client, chain, proposal.messages)
            await self._mark_delivered_on(chain, proposal.messages, flags)
            ids = ["0x" + keccak256(m).hex() for m in proposal.messages]
            if any(flags):  # done, or partly delivered elsewhere: its batch can no longer pass
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
                # few signatories are up: retry with backoff, each message on its own, so one
                # that cannot be delivered holds up nobody else — at most
                # MAX_DELIVERY_ATTEMPTS times, then it stays failed with its reason.
                await trio.to_thread.run_sync(proposals.remove, key)
                self._suspects.update(ids)
                await self.relayer.db(self._fail_undelivered, ids)
                log.warning(
                    "proposal %s not executed in time; retrying its messages singly", key.name
                )
            else:
                proposed.update(ids)
        records = await self.relayer.db(
            self.relayer.ledger.by_status,
            MessageStatus.ATTESTED,
            SUBSTRATE_BATCH_SIZE * self.relayer.max_inflight + len(proposed),
            destination=chain.domain,
        )
        by_origin: dict[int, list[MessageRecord]] = defaultdict(list)
        for record in records:
            if record.id not in proposed:
                by_origin[record.origin].append(record)
        for origin, candidates in by_origin.items():
            # The operator's policy first, as on the EVM path: a refused message costs no RPC
            # and is never proposed (the committee would spend its fees on it).
            group = await self.relayer.admitted(candidates)
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
                fresh = await self._propose(chain, self.relayer.lanes[origin], batch)
                if fresh is not None:
                    await trio.to_thread.run_sync(proposals.publish, fresh)
                    self.relayer.metrics.proposals += 1
                    log.info(
                        "proposed %d message(s) from %s to %s",
                        len(fresh.messages),
                        self.relayer.lanes[origin].chain.name,
                        chain.name,
                    )

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
        or, once they failed :data:`MAX_DELIVERY_ATTEMPTS` times, for good (an operator can
        re-queue them). One write; messages moved meanwhile (skipped by an operator,
        delivered) are left as they are."""
        reason = f"not delivered by the committee within {self.relayer.confirm_timeout:g} s"
        with self.relayer.ledger.atomic() as batch:
            for message_id in batch.movable(ids, MessageStatus.FAILED):
                failures = failures_since_retry(
                    batch.history(message_id), "not delivered by the committee"
                )
                if failures + 1 >= MAX_DELIVERY_ATTEMPTS:
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
