"""Approving deliveries to a Substrate chain: an attester's part of the committee's multisig.

For every Substrate destination an attester holds an sr25519 key of the committee's multisig and
approves the relayer's delivery proposals whose every message it finds under a root it signed
itself and a quorum signed too (:func:`approve_deliveries`). Each approval reserves a deposit of
its own, so what a relayer (or anyone writing the proposal store) can make it open is bounded,
and its turns and stale operations are timed by its own clock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import trio

from adapters.errors import AdapterError
from adapters.substrate.client import Call, SubstrateClient
from adapters.substrate.multisig import (
    OpenOperation,
    Timepoint,
    approve,
    cancel,
    execute,
    executed_ok,
    held_operations,
    open_operation,
)
from light_clients.committee import Checkpoint, address_of
from light_clients.errors import VerificationError
from light_clients.message import decode_message, verify_message_inclusion
from relayer.checkpoints import CheckpointStore, CheckpointStoreError
from relayer.config import ATTESTER_POLL, ChainConfig, Config, ConfigError, SubstrateSettings
from relayer.families.substrate.calls import (
    REFUND_REASONS,
    Refund,
    delivered_items,
    delivery_calls,
    refund_reason,
    token_bridges,
)
from relayer.families.substrate.connection import connected
from relayer.families.substrate.proposals import Proposal, open_proposal_store
from relayer.signer import as_keypair, substrate_signer

if TYPE_CHECKING:
    from substrateinterface import Keypair


from relayer.attester import AttesterContext, AttesterState

log = logging.getLogger("passerelle.attester")

MULTISIG_RACES = (
    "Multisig.NoTimepoint",
    "Multisig.UnexpectedTimepoint",
    "Multisig.AlreadyApproved",
)
"""Errors of an approval that lost a race with another signatory's (harmless; re-read state)."""


def approval_duties(
    chain: ChainConfig, context: AttesterContext
) -> list[Callable[[], Awaitable[None]]]:
    """The attester's approvals for ``chain``, if it has a ``substrate_key`` (else a warning:
    it still signs checkpoints, but the multisig waits for the other signatories)."""
    substrate_key = context.config.attester_substrate_keys[context.index]
    if substrate_key is None:
        log.warning(
            "attester %d has no substrate_key: not approving deliveries to %s",
            context.index,
            chain.name,
        )
        return []
    # Through the signer interface (relayer.signer): a seed or a Polkadot JS keystore today,
    # a remote signer tomorrow; the multisig code below only ever sees a Keypair's public half.
    keypair = as_keypair(substrate_signer(substrate_key))
    return [
        partial(
            approve_deliveries,
            context.config,
            chain,
            context.key,
            keypair,
            context.store,
            state=context.state,
            poll=context.poll,
        )
    ]


async def approve_deliveries(
    config: Config,
    chain: ChainConfig,
    key: bytes,
    keypair: Keypair,
    store: CheckpointStore,
    *,
    state: AttesterState,
    poll: float = ATTESTER_POLL,
) -> None:
    """Approve (or, as the last signatory needed, execute) the relayer's delivery proposals for
    the Substrate destination ``chain`` — only those this attester verified itself: a quorum
    signed the proposal's checkpoint, this attester among them, and every message is under that
    root and addressed here. Each approval reserves a deposit of this attester's: it holds at
    most :data:`MAX_OPEN_OPERATIONS` open operations, opens one call at most
    :data:`MAX_OPENS_PER_CALL` times, and cancels its operations that stay open longer than
    :data:`STALE_OPERATION` seconds by its own clock (the proposal's ``created`` is the
    relayer's to write, so it never decides anything here)."""
    settings = chain.settings()
    me = bytes(keypair.public_key)
    if me not in settings.signatories:
        raise ConfigError(f"attester substrate key 0x{me.hex()} is not a multisig signatory")
    proposals = open_proposal_store(config.checkpoint_location)  # where the relayer writes
    bridges = token_bridges(config)
    # Per proposal (by name *and* creation time: the relayer re-proposes a batch that did not
    # execute under the same name, and that one must be acted on afresh): the batch call once
    # verified and composed, and whether we are done with it.
    batches: dict[tuple[str, float], Call] = {}
    done: set[tuple[str, float]] = set()
    duty = DeliveryDuty()
    async with connected(chain) as client:
        while True:
            try:
                await _tend_held(client, chain, keypair, duty, state=state)
            except AdapterError as exc:
                state.errors += 1
                log.warning("%s: open operations: %s", chain.name, exc)
            try:
                pending = await trio.to_thread.run_sync(proposals.pending, chain.domain)
            except CheckpointStoreError as exc:
                # Its database is down or busy: one line, and the next poll reads again.
                state.errors += 1
                log.warning("%s: proposals: %s", chain.name, exc)
                await trio.sleep(poll)
                continue
            live = {(key.name, proposal.created) for key, proposal in pending}
            for stale in set(batches) - live:
                del batches[stale]
            done &= live
            for entry, proposal in pending:
                key_ = (entry.name, proposal.created)
                if key_ in done:
                    continue
                try:
                    batch = batches.get(key_)
                    if batch is None:
                        batch = await _verified_batch(
                            config, chain, client, proposal, store=store, key=key, bridges=bridges
                        )
                    if batch is None:
                        continue  # not a checkpoint a quorum (with us) signed: not yet, or never
                    batches[key_] = batch
                    finished = await _act_on(
                        client, chain, keypair, proposal, batch, state=state, duty=duty
                    )
                except VerificationError as exc:
                    log.error("proposal %s refused: %s", entry.name, exc)
                    finished = True
                except (AdapterError, ConfigError) as exc:
                    finished = False
                    if any(race in str(exc) for race in MULTISIG_RACES):
                        # Another attester approved or executed in between: read again.
                        log.info("proposal %s: another signatory was first (%s)", entry.name, exc)
                        continue
                    state.errors += 1
                    log.warning("proposal %s: %s", entry.name, exc)
                if finished:
                    done.add(key_)
            await trio.sleep(poll)


MAX_OPEN_OPERATIONS = 8
"""Open multisig operations an attester holds at once (each reserves the pallet's
``DepositBase`` + ``DepositFactor`` × threshold of its own: about 0.0067 ROC on Rococo Asset
Hub); beyond it, it opens nothing until some execute or are cancelled. A relayer proposing
batch after batch that nobody else approves can lock at most this many deposits."""


MAX_OPENS_PER_CALL = 2
"""How often an attester opens an operation for one call: a batch that was opened and then
cancelled as stale twice is not opened by it again (the relayer bounds its retries too)."""


STALE_OPERATION = 300.0
"""Seconds (by the attester's own clock, from when it first saw the operation open) after which
it cancels an operation it opened (``cancel_as_multi``: the deposit comes back). Longer than the
relayer's ``confirm_timeout`` (120 s), after which the relayer has withdrawn the proposal."""


_REMEMBERED_CALLS = 4096
"""Bound of :attr:`DeliveryDuty.opens` (oldest entries dropped): memory a relayer cannot grow."""


@dataclass
class DeliveryDuty:
    """What an attester remembers about multisig operations, by its own clock."""

    held: dict[bytes, OpenOperation] = field(default_factory=dict)
    """Call hash → the open operations whose deposit is ours (read from the chain)."""
    first_seen: dict[tuple[bytes, Timepoint | None], float] = field(default_factory=dict)
    """(call hash, timepoint or None when not open) → when we first saw it in that state."""
    opens: dict[bytes, int] = field(default_factory=dict)
    """Call hash → how often we opened an operation for it."""

    def seen(self, call_hash: bytes, timepoint: Timepoint | None, now: float) -> float:
        """When we first saw ``call_hash`` in this state (now, if never before)."""
        if len(self.first_seen) > _REMEMBERED_CALLS:
            # Bounded memory: forgetting a role's clock only delays it by a grace period. Not
            # so the clocks of the operations we hold: reset, they would never grow stale (a
            # relayer proposing a few thousand batches in time would keep our deposits locked
            # and us at MAX_OPEN_OPERATIONS for good).
            self.first_seen = {k: t for k, t in self.first_seen.items() if k[0] in self.held}
        return self.first_seen.setdefault((call_hash, timepoint), now)

    def opened(self, call_hash: bytes) -> None:
        """Count an operation we opened for ``call_hash``."""
        self.opens[call_hash] = self.opens.get(call_hash, 0) + 1
        while len(self.opens) > _REMEMBERED_CALLS:
            del self.opens[next(iter(self.opens))]


async def _tend_held(
    client: SubstrateClient,
    chain: ChainConfig,
    keypair: Keypair,
    duty: DeliveryDuty,
    *,
    state: AttesterState,
    now: float | None = None,
) -> None:
    """Read the operations whose deposit we hold and cancel those open for longer than
    :data:`STALE_OPERATION` (by our own clock: a proposal's ``created`` proves nothing)."""
    settings = chain.settings()
    me = bytes(keypair.public_key)
    duty.held = await held_operations(client, settings.multisig, me)
    now = time.time() if now is None else now
    others = [s for s in settings.signatories if s != me]
    for call_hash, operation in list(duty.held.items()):
        if now - duty.seen(call_hash, operation.timepoint, now) < STALE_OPERATION:
            continue
        await cancel(
            client,
            keypair,
            others,
            settings.multisig_threshold,
            call_hash,
            timepoint=operation.timepoint,
        )
        del duty.held[call_hash]
        state.cancellations += 1
        log.warning(
            "%s: cancelled the stale multisig operation 0x%s (open > %g s)",
            chain.name,
            call_hash.hex(),
            STALE_OPERATION,
        )


def _quorum_signed(config: Config, store: CheckpointStore, checkpoint: Checkpoint) -> bool:
    """Did at least the committee threshold of members sign exactly ``checkpoint``? Each
    signature is recovered from its file (the store is writable by others)."""
    committee = config.committee
    signers = sum(1 for member in committee.members if store.signed_by(checkpoint, member))
    return signers >= committee.threshold


async def _verified_batch(
    config: Config,
    chain: ChainConfig,
    client: SubstrateClient,
    proposal: Proposal,
    *,
    store: CheckpointStore,
    key: bytes,
    bridges: dict[int, bytes],
) -> Call | None:
    """The proposal's ``batch_all``, if this attester and a quorum signed its checkpoint and
    every message verifies under it; None if not (yet) such a checkpoint.

    A quorum, not just this attester: the relayer could pin proposals to an index this attester
    signed while the others signed other indices (an operation nobody would ever join, holding
    our deposit). A token transfer that can never be minted (:func:`refund_reason`, read from
    the chain here) is delivered as a refund."""
    cp = proposal.checkpoint
    if not await trio.to_thread.run_sync(store.signed_by, cp, address_of(key)):
        return None
    if not await trio.to_thread.run_sync(_quorum_signed, config, store, cp):
        return None
    _verify_proposal(config, chain, proposal)
    settings = chain.settings()
    calls = []
    for raw in proposal.messages:
        message = decode_message(raw)
        reason = await refund_reason(client, settings, message, bridges)
        refund = None
        if reason is not None:
            refund = Refund(chain.domain, reason)
            log.warning(
                "proposal %s: message %d/%d will be refunded: %s",
                proposal.name,
                message.origin,
                message.nonce,
                REFUND_REASONS[reason],
            )
        for call in delivery_calls(message, settings, bridges, refund=refund):
            calls.append(await client.compose(call.module, call.function, call.params))
    return await client.compose("Utility", "batch_all", {"calls": calls})


def _verify_proposal(config: Config, chain: ChainConfig, proposal: Proposal) -> None:
    """Every message under the (own) checkpoint, from the configured outbox, addressed here,
    in strictly increasing nonce order (as the relayer proposes them).

    The order is checked because a proposal is anyone's to write: the same message twice mints
    its replay-guard item twice, so the batch is sure to fail on chain, and every repetition
    or permutation is another call hash — an endless supply of operations to open and execute
    at the committee's expense for as long as one message is pending."""
    cp = proposal.checkpoint
    nonces = [decode_message(raw).nonce for raw in proposal.messages]
    if nonces != sorted(set(nonces)):
        raise VerificationError(f"proposal nonces {nonces} are not strictly increasing")
    origin = config.chain(cp.origin)
    for message, branch in zip(proposal.messages, proposal.branches, strict=True):
        verify_message_inclusion(
            message, cp, branch, local_domain=chain.domain, outbox=origin.outbox_id
        )


ROLE_GRACE = 4.0
"""Seconds each signatory waits per rank before doing what a higher-ranked one should have."""


def _rank(settings: SubstrateSettings, call_hash: bytes, me: bytes, skip: frozenset[bytes]) -> int:
    """My turn for an operation: signatories in a rotation picked by the call hash, those in
    ``skip`` left out. Rank 0 acts at once, rank r after r × :data:`ROLE_GRACE` — so the usual
    case is one opener and one executor, not every attester racing (each loser pays a failed
    extrinsic), while a signatory that is down only delays the others."""
    order = list(settings.signatories)
    start = int.from_bytes(call_hash[:8], "big") % len(order)
    rotation = [s for s in order[start:] + order[:start] if s not in skip]
    return rotation.index(me)


async def _act_on(
    client: SubstrateClient,
    chain: ChainConfig,
    keypair: Keypair,
    proposal: Proposal,
    batch: Call,
    *,
    state: AttesterState,
    duty: DeliveryDuty,
    now: float | None = None,
) -> bool:
    """Approve or execute ``proposal``'s batch when it is our turn; True once nothing is left
    for this attester. Turns are timed from when *we* first saw the state (never from the
    proposal's ``created``); an operation is opened only within :data:`MAX_OPEN_OPERATIONS`
    and :data:`MAX_OPENS_PER_CALL`."""
    settings = chain.settings()
    me = bytes(keypair.public_key)
    others = [s for s in settings.signatories if s != me]
    operation = await open_operation(client, settings.multisig, batch.hash)
    threshold = settings.multisig_threshold
    now = time.time() if now is None else now
    if operation is None:
        seen = duty.seen(batch.hash, None, now)
        if now - seen < _rank(settings, batch.hash, me, frozenset()) * ROLE_GRACE:
            return False  # the designated opener goes first
        if await _already_delivered(client, settings, proposal):
            return True
        if duty.opens.get(batch.hash, 0) >= MAX_OPENS_PER_CALL:
            log.warning(
                "proposal %s: opened %d times already, never executed; not opening it again",
                proposal.name,
                MAX_OPENS_PER_CALL,
            )
            return True
        if len(duty.held) >= MAX_OPEN_OPERATIONS:
            log.info(
                "proposal %s: %d operations of ours are open; not opening another yet",
                proposal.name,
                len(duty.held),
            )
            return False
        timepoint = await approve(client, keypair, others, threshold, batch)
        duty.opened(batch.hash)
        duty.held[batch.hash] = OpenOperation(timepoint, frozenset({me}), me)
        state.approvals += 1
        log.info("proposal %s: opened the multisig operation", proposal.name)
        return threshold == 1
    if me in operation.approvals:
        return False  # wait for the others (or for the proposal to be withdrawn)
    seen = duty.seen(batch.hash, operation.timepoint, now)
    if now - seen < _rank(settings, batch.hash, me, operation.approvals) * ROLE_GRACE:
        return False
    if len(operation.approvals) + 1 < threshold:
        await approve(client, keypair, others, threshold, batch, timepoint=operation.timepoint)
        state.approvals += 1
        return True
    included = await execute(
        client, keypair, others, threshold, batch, timepoint=operation.timepoint
    )
    ok, reason = executed_ok(included)
    state.executions += 1
    if ok:
        log.info(
            "proposal %s: delivered %d message(s) in block %d",
            proposal.name,
            len(proposal.messages),
            included.block_number,
        )
    elif reason is not None and any(race in reason for race in MULTISIG_RACES):
        log.info("proposal %s: another signatory executed it first", proposal.name)
    else:
        log.warning("proposal %s: the batch failed on chain: %s", proposal.name, reason)
    return True


async def _already_delivered(
    client: SubstrateClient, settings: SubstrateSettings, proposal: Proposal
) -> bool:
    """Is any message of ``proposal`` delivered already (its replay-guard item exists)? Then
    the batch would fail as a whole: leave it to the relayer to propose the rest again."""
    messages = [decode_message(raw) for raw in proposal.messages]
    return any(await delivered_items(client, settings, messages))
