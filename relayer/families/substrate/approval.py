"""Approving deliveries to a Substrate chain: an attester's part of the committee's multisig.

For every Substrate destination an attester holds an sr25519 key of the committee's multisig and
approves the relayer's delivery proposals whose every message it finds under a root it signed
itself and a quorum signed too (:func:`approve_deliveries`). Each approval reserves a deposit of
its own, so what a relayer (or anyone writing the proposal store) can make it open is bounded,
and its turns and stale operations are timed by its own clock.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from adapters.errors import AdapterError
from adapters.redact import redact_url
from adapters.substrate.client import Call, Fee, Included, Submitted, SubstrateClient
from adapters.substrate.multisig import (
    MAX_CALLS_TOGETHER,
    NOT_RUN,
    DispatchFailed,
    MultisigCall,
    OpenOperation,
    Timepoint,
    approval_args,
    approval_timepoint,
    cancel,
    executed_ok,
    execution_args,
    held_operations,
    open_operation,
    outcomes,
    submit_together,
    wait_landed,
)
from light_clients.committee import Checkpoint
from light_clients.errors import VerificationError
from light_clients.message import decode_message, verify_message_inclusion
from relayer.checkpoints import CheckpointStore, CheckpointStoreError
from relayer.config import ATTESTER_POLL, ChainConfig, Config, ConfigError, SubstrateSettings
from relayer.families.substrate.batching import (
    EXECUTION_LENGTH_OVERHEAD,
    EXECUTION_WEIGHT_SHARE,
    BatchBudget,
    CostModel,
    SizingCache,
    batch_excess,
    message_cost,
    spec_version,
)
from relayer.families.substrate.calls import (
    REFUND_REASONS,
    Refund,
    best_block_hash,
    compose_batch,
    delivered_items,
    delivery_calls,
    refund_reason,
    token_bridges,
)
from relayer.families.substrate.connection import connected
from relayer.families.substrate.proposals import Proposal, ProposalKey, open_proposal_store
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
            context.signer.address,
            keypair,
            context.store,
            state=context.state,
            poll=context.poll,
        )
    ]


async def approve_deliveries(
    config: Config,
    chain: ChainConfig,
    member: bytes,
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
    in_flight = InFlight()
    async with connected(chain) as client, trio.open_nursery() as settling:
        # What one batch may hold and what each message costs here, measured by us (never
        # the relayer's word), once per connection and again after a runtime upgrade.
        sizes = SizingCache()
        while True:
            if in_flight.halted:
                # A submission (or a wait) failed: the client forgot its nonce count, and the
                # node's leaves out our extrinsics in a block being built. Nothing more is
                # submitted until everything in flight is included or given up.
                await in_flight.drain()
            await _read_block(client, chain, keypair, duty, state=state, halt=in_flight.halt)
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
            for stale in set(duty.sighted) - live:
                del duty.sighted[stale]
            for stale in set(duty.verified) - live:
                del duty.verified[stale]
            done &= live
            try:  # before the first proposal if we can: off its critical path
                sizing = await sizes.get(client, settings, chain.domain, bridges)
            except AdapterError as exc:
                state.errors += 1
                log.warning("%s: batch limits: %s", chain.name, exc)
                await trio.sleep(poll)
                continue
            duty.keep_fees({batch.hash for batch in batches.values()})
            # This round's calls go to the pool together (as few extrinsics as they fit) and
            # are waited for in the background (:class:`InFlight`): the next round goes on
            # meanwhile, so the opening of batch N+1 is submitted while batch N's execution is
            # being built, not after it landed. One block takes executions worth one
            # extrinsic's whole weight and length (the budget of each batch is its calls
            # only), those still in flight included.
            pipeline = in_flight.pipeline(sizing[0])
            # Each flush's extrinsics are waited for from the moment they went out, not from
            # the round's end: a turn is timed to its inclusion seen, and a round verifying a
            # burst's proposals lasts seconds (review REVIEW4 M1: the grace grew with it).
            pipeline.flushed = partial(in_flight.start, settling, pipeline, done, state)
            since = in_flight.generation
            await _round(
                config,
                chain,
                client,
                keypair,
                pending,
                store=store,
                member=member,
                bridges=bridges,
                sizing=sizing,
                batches=batches,
                done=done,
                duty=duty,
                state=state,
                pipeline=pipeline,
            )
            in_flight.start(settling, pipeline, done, state)
            await in_flight.settled_or(poll, since=since)


async def _read_block(
    client: SubstrateClient,
    chain: ChainConfig,
    keypair: Keypair,
    duty: DeliveryDuty,
    *,
    state: AttesterState,
    halt: Halt | None = None,
) -> None:
    """A poll's reads before its round: the best block's hash (:meth:`BlockReads.refresh`,
    what the multisig reads are kept for), then the operations whose deposit we hold and their
    stale cancels (:func:`_tend_held`). Each failure is one counted line and neither stops the
    other (review RRATE L3): a node failing or garbling ``chain_getBlockHash`` leaves nothing
    kept (every read then goes to the node), and the held operations are still read and
    tended — skipped, an attester just restarted (``duty.held`` empty) would count only its
    own new openings against :data:`MAX_OPEN_OPERATIONS`, and its stale deposits would stay
    locked, for as long as that node kept failing."""
    try:
        await duty.reads.refresh(client, time.monotonic())
    except AdapterError as exc:
        state.errors += 1
        log.warning("%s: best block: %s", chain.name, exc)
    try:
        await _tend_held(client, chain, keypair, duty, state=state, halt=halt)
    except AdapterError as exc:
        state.errors += 1
        log.warning("%s: open operations: %s", chain.name, exc)


async def _round(
    config: Config,
    chain: ChainConfig,
    client: SubstrateClient,
    keypair: Keypair,
    pending: Sequence[tuple[ProposalKey, Proposal]],
    *,
    store: CheckpointStore,
    member: bytes,
    bridges: dict[int, bytes],
    sizing: tuple[BatchBudget, CostModel],
    batches: dict[tuple[str, float], Call],
    done: set[tuple[str, float]],
    duty: DeliveryDuty,
    state: AttesterState,
    pipeline: Pipeline,
) -> None:
    """One round of :func:`approve_deliveries` over the ``pending`` proposals: check, verify
    and compose each new one (``batches`` keeps the result), and submit what is this
    attester's turn through ``pipeline`` (each flush hands its extrinsics to
    :meth:`InFlight.start` at once, :attr:`Pipeline.flushed`, which waits for each on its own).

    After a submission fails (:attr:`Pipeline.halted`) the round submits nothing more: the
    client has forgotten its nonce count, and the node's ``system_accountNextIndex`` leaves
    out our extrinsics already in a block being built (chopsticks empties its pool into it),
    so the next extrinsic would reuse one of their nonces, be dropped at block build, and hold
    the whole round for the inclusion timeout. The next round starts after everything of this
    one is included or given up, when the node's count is right again.

    The halt is shared with every round still in flight (:class:`Halt`): a wait of an earlier
    round that fails in the background while this one submits stops this one too, checked
    before every proposal here and again before every submission (:meth:`Pipeline.submit`).

    What is decided is queued and submitted together (:meth:`Pipeline.flush`): what is due on
    batches verified already, before any new proposal is verified (it does not wait behind a
    verification of seconds); then the new proposals, decided on and sent after each slice of
    verifying — half the grace, at least :data:`VERIFY_SLICE` — (the openings of a burst's
    proposals together, each decided about a slice after it was verified at most)."""
    settings = chain.settings()
    flush = partial(pipeline.flush, client, keypair, settings.multisig, chain=chain, state=state)
    pipeline.alone = duty.alone  # calls whose last attempt failed go in extrinsics of their own
    live = []
    for entry, proposal in pending:
        key_ = (entry.name, proposal.created)
        if key_ in done or key_ in pipeline.busy:
            continue  # finished, or our extrinsic for it is not settled yet (in flight)
        verified_as = duty.verified.get(key_)
        if verified_as is not None and verified_as is not proposal and verified_as != proposal:
            # The entry was rewritten in place (same name and ``created``) since we verified
            # it: nothing is done on what it says now — not even "already delivered", which
            # made us drop a genuine batch (review REVIEW1 L4) — until it is verified again.
            state.errors += 1
            log.warning(
                "proposal %s: rewritten since we verified it; verifying it again", entry.name
            )
            batches.pop(key_, None)
            del duty.verified[key_]
        live.append((entry, proposal, key_))

    async def step(entry: ProposalKey, key_: tuple[str, float], work: Awaitable[bool]) -> None:
        """Run ``work`` on behalf of one proposal: its refusal, a lost race and a node error
        are that proposal's (one line), never the round's."""
        try:
            finished = await work
        except VerificationError as exc:
            log.error("proposal %s refused: %s", entry.name, exc)
            finished = True
        except CheckpointStoreError as exc:
            # The signatures' store is down or busy (PostgreSQL, say): one line, this proposal
            # read again next round, never the end of the duty (review REVIEW4 L3).
            finished = False
            state.errors += 1
            log.warning("proposal %s: checkpoint store: %s", entry.name, exc)
        except (AdapterError, ConfigError) as exc:
            finished = False
            if any(race in str(exc) for race in MULTISIG_RACES):
                # Another attester approved or executed in between: read again.
                log.info("proposal %s: another signatory was first (%s)", entry.name, exc)
            else:
                state.errors += 1
                log.warning("proposal %s: %s", entry.name, exc)
        if finished:
            done.add(key_)

    async def act(entry: ProposalKey, proposal: Proposal, key_: tuple[str, float]) -> bool:
        return await _act_on(
            client,
            chain,
            keypair,
            proposal,
            batches[key_],
            state=state,
            duty=duty,
            pipeline=pipeline.for_proposal(entry.name, key_),
            sighted=duty.sighted.setdefault(key_, time.time()),
        )

    async def verify(proposal: Proposal, key_: tuple[str, float]) -> bool:
        # The free, local check first: a planted proposal of 1024 messages is refused
        # before it costs a refund query per token message and a 2048-call compose.
        _within_budget(settings, bridges, proposal, *sizing)
        batch = await _verified_batch(
            config, chain, client, proposal, store=store, member=member, bridges=bridges
        )
        if batch is not None:  # else not a checkpoint a quorum (with us) signed: not yet
            batches[key_] = batch
            duty.verified[key_] = proposal
            # Its opening turn starts now, when this attester could first act on it (see
            # DeliveryDuty.sighted).
            duty.sighted.setdefault(key_, time.time())
            verified.append(key_)
        return False

    # 1. Proposals whose batch we verified already, in the store's order: verifying a new
    # proposal of ~500 messages takes seconds on a loaded attester, and an opening or
    # execution that is our turn now should not wait behind it — sent before any (flush).
    # It also means proposals anyone plants in the store (costly to verify, refused in the
    # end) no longer delay our part in the batches we know to be good.
    for entry, proposal, key_ in live:
        if key_ in batches and not pipeline.halted:
            await step(entry, key_, act(entry, proposal, key_))
    await flush()
    # 2. The new ones verified, in slices of half the grace (VERIFY_SLICE); 3. after each slice,
    # the ones it verified decided on (on state read then) and sent together. Decided one by
    # one between verifications, a decision waited seconds for its submission (review REVIEW1
    # M3: another signatory could act meanwhile); decided only after a whole pass, an opener
    # holding more new proposals than the next-ranked signatory was stood in for (REVIEW3 M1).
    verified: list[tuple[str, float]] = []
    fresh = [(entry, proposal, key_) for entry, proposal, key_ in live if key_ not in batches]

    async def decide(slice_: Sequence[tuple[ProposalKey, Proposal, tuple[str, float]]]) -> None:
        for entry, proposal, key_ in slice_:
            if key_ in verified and key_ not in done and not pipeline.halted:
                await step(entry, key_, act(entry, proposal, key_))
        await flush()  # once halted it submits nothing

    begun, position = time.monotonic(), 0
    for index, (entry, proposal, key_) in enumerate(fresh):
        # Halted too: verified now, acted on after the drain.
        await step(entry, key_, verify(proposal, key_))
        if time.monotonic() - begun >= max(VERIFY_SLICE, duty.grace.seconds / 2):
            await decide(fresh[position : index + 1])
            begun, position = time.monotonic(), index + 1
    await decide(fresh[position:])
    # After everything due this round is submitted: the estimates for later executions.
    await _weigh_ahead(client, keypair, pipeline.ahead, duty, chain=chain, state=state)


def _within_budget(
    settings: SubstrateSettings,
    bridges: dict[int, bytes],
    proposal: Proposal,
    budget: BatchBudget,
    model: CostModel,
) -> None:
    """VerificationError if ``proposal``'s batch may not fit one extrinsic by this attester's
    own measure (:func:`batch_excess`): such a proposal — too large by mistake, or written by
    anyone to lock our deposits in operations nobody can execute — is refused before any
    operation is opened for it. Local: no round trip per proposal."""
    costs = [message_cost(model, decode_message(m), settings, bridges) for m in proposal.messages]
    excess = batch_excess(costs, budget)
    if excess is not None:
        raise VerificationError(f"too large for one extrinsic: {excess}")


Settle = Callable[[], Awaitable[bool]]
"""Waits for an extrinsic submitted in this round and does the bookkeeping; True once nothing
is left for this attester to do on its proposal."""


@dataclass(frozen=True)
class Wait:
    """One extrinsic of ours in flight: what waits for it (``settle``), on behalf of which
    proposal (``name``, ``key``) and call (``call``), and what it holds until it settled: the
    ``weight`` and ``length`` of an execution, or ``opened`` = 1 for an opening (a deposit
    about to be ours).

    Why per extrinsic: held per round, an opening included (its operation then read from the
    chain into :attr:`DeliveryDuty.held`) still counted against :data:`MAX_OPEN_OPERATIONS`
    until an execution submitted in the same round had landed and its events were decoded —
    the same deposit counted twice — and an execution's weight was held until the round's
    openings were in too: each of our extrinsics kept the next one waiting on another's
    block (issue #12: 12 openings against 3 executions early in a 6,000 burst, "2 operations
    of ours are open; not opening another yet")."""

    name: str
    key: tuple[str, float]
    call: bytes
    settle: Settle
    weight: int = 0
    length: int = 0
    opened: int = 0
    in_block: trio.Event | None = None
    """Set once the extrinsic is seen in a block (:attr:`Landing.in_block`): from then on its
    ``weight`` and ``length`` no longer fill a block to come (:meth:`InFlight.start`)."""


async def _settle_one(wait: Wait, done: set[tuple[str, float]], state: AttesterState) -> bool:
    """Wait for ``wait``; its proposal, if finished, is added to ``done``. A lost race is
    logged at info (the state is read again next round). True if the wait failed otherwise
    (counted in ``state.errors``): the client may have forgotten its nonce count."""
    try:
        if await wait.settle():
            done.add(wait.key)
    except SharedWaitFailed:
        return True  # counted with the call that waited first; halts all the same
    except DispatchFailed as exc:
        # In a block and failed there, or never run behind a call of ours that failed: its
        # nonce was used like any other, so nothing halts (REVIEW1 L2).
        if any(race in str(exc) for race in MULTISIG_RACES) or NOT_RUN in str(exc):
            log.info("proposal %s: %s", wait.name, exc)
        else:
            state.errors += 1
            log.warning("proposal %s: %s", wait.name, exc)
    except (AdapterError, ConfigError) as exc:
        if any(race in str(exc) for race in MULTISIG_RACES):
            log.info("proposal %s: another signatory was first (%s)", wait.name, exc)
            return False
        state.errors += 1
        log.warning("proposal %s: %s", wait.name, exc)
        return True
    return False


class SubmissionHalted(Exception):
    """:meth:`Pipeline.submit` refused to submit: a submission or a wait failed (this round's or
    one still in flight), so the client's nonce count is not to be trusted until everything in
    flight has settled. Not an error of the proposal: the round stops, and a round after
    :meth:`InFlight.drain` acts on it."""


@dataclass
class Halt:
    """Submit nothing more: one cell shared by an attester's :class:`InFlight` and every
    round's :class:`Pipeline` it hands out, so that whoever sees a failure (a submission, a
    wait settling in the background, a stale-operation cancel whose nonce is in doubt) stops
    every submission after it, those of the round going on included. A flag per round, read
    once at the round's start, let a wait of round N failing half-way through round N+1 leave
    N+1 submitting with a nonce taken from the node, which leaves out our extrinsics in a
    block being built: the nonce is reused, the extrinsic dropped, the round held for the
    inclusion timeout (review M1).

    Why a halt rather than keeping the client's nonce count while extrinsics are in flight:
    after a failed submission or wait we no longer know which of our nonces the chain will use
    (dropped? replaced? still in the pool?); any count we kept could be wrong, and a wrong
    nonce holds every later extrinsic of ours behind a gap until the inclusion timeout.
    Halting costs one drain and is right whatever happened.

    A failure that lands while a submission is already inside the client is the client's to
    handle (:meth:`~adapters.substrate.client.SubstrateClient.submit_call`): before the
    extrinsic went to the node it is refused (its nonce is unsure), after that it does not set
    the forgotten count again."""

    raised: bool = False


async def _still_due(group: Sequence[Queued], state: AttesterState) -> list[Queued]:
    """The calls of ``group`` whose operation is still what each was decided on, read from the
    node now, right before the submission (:attr:`Queued.unchanged`). A round decides its
    calls one by one — each decision reads the chain, some weigh a 100 KB call — and submits
    them together at its end: an operation another signatory opened, joined or executed in
    between would cost us a paid, failed call (a run measured two ``NoTimepoint`` and one
    ``UnexpectedTimepoint`` in a 6,000-message burst). The others are dropped (nothing was
    tried: an execution keeps its weight estimate) and decided afresh next round. A read that
    fails drops its call too, as one counted error."""
    kept = []
    for item in group:
        try:
            still = item.unchanged is None or await item.unchanged()
        except AdapterError as exc:
            state.errors += 1
            log.warning("proposal %s: reading its operation again: %s", item.name, exc)
            continue
        if still:
            kept.append(item)
        else:
            log.info("proposal %s: its multisig operation changed since decided", item.name)
    return kept


async def _unchanged(
    reads: BlockReads,
    client: SubstrateClient,
    multisig: bytes,
    call_hash: bytes,
    decided_on: OpenOperation | None,
) -> bool:
    """Is the operation of ``call_hash`` still ``decided_on`` (None: not open), on the node now?
    The read is kept (:meth:`BlockReads.fresh`): if it changed, the next round decides on it."""
    return await reads.fresh(client, multisig, call_hash) == decided_on


Landed = Callable[["Landing", int], Awaitable[bool]]
"""Settles one call of ours (by its index) in a submitted extrinsic (:class:`Landing`) and does
the bookkeeping; True once nothing is left for this attester to do on its proposal."""

CALL_WRAPPER_BYTES = 256
"""Bytes of one multisig call of ours besides the batch an execution carries and its other
signatories (32 bytes each, counted apart: a committee may have up to the pallet's
``MaxSignatories``): call index, threshold, timepoint, call hash, weight, with room to spare
(about 60). :meth:`Pipeline.together` counts it per call."""

TOGETHER_ENVELOPE_BYTES = 512
"""Bytes of an extrinsic of ours besides its calls: address, signature, extensions and the
``Utility.batch`` around them (about 120)."""


@dataclass(frozen=True)
class Queued:
    """A multisig call of ours decided in this round and not yet submitted (:meth:`Pipeline.queue`):
    what it is (``call``), on behalf of which proposal (``name``, ``key``), who settles it once
    submitted (``settle``), what it holds until then (as :class:`Wait`), and ``submitted``,
    told True once its extrinsic went to the node and False if the node refused it (a call
    never tried — halted, or dropped at the flush — is told nothing)."""

    name: str
    key: tuple[str, float]
    call: MultisigCall
    settle: Landed
    weight: int = 0
    length: int = 0
    opened: int = 0
    submitted: Callable[[bool], None] | None = None
    unchanged: Callable[[], Awaitable[bool]] | None = None
    """Reads the chain again at the flush: is the operation still what the call was decided
    on? (:func:`_unchanged`)"""


class SharedWaitFailed(AdapterError):
    """The wait for an extrinsic that carried this call and others failed; the failure is
    counted and logged with the call that waited first (:func:`_settle_one` only halts for
    the rest: the nonce is in doubt all the same)."""


@dataclass
class Landing:
    """One extrinsic of ours carrying one or more multisig calls (:func:`submit_together`),
    waited for once (:func:`wait_landed`) by whichever of their waits asks first, the others
    sharing what it found: the extrinsic and each call's outcome (:func:`outcomes`)."""

    client: SubstrateClient
    submitted: Submitted
    calls: tuple[MultisigCall, ...]
    multisig: bytes
    in_block: trio.Event = field(default_factory=trio.Event)
    """Set once the extrinsic is seen in a block (before its events are read), or once the
    wait ended otherwise."""
    _started: bool = False
    _done: trio.Event = field(default_factory=trio.Event)
    _result: tuple[Included, list[str | None]] | AdapterError | None = None

    async def outcome(self, index: int) -> tuple[Included, str | None]:
        """The extrinsic as included and why call ``index`` did not run (None: it ran).
        If the wait failed: AdapterError for the call whose wait asked first, and
        :class:`SharedWaitFailed` for the others (one failure, counted once)."""
        if not self._started:
            self._started = True
            try:
                included = await wait_landed(
                    self.client, self.submitted, on_block=self.in_block.set
                )
                self._result = (included, outcomes(included, self.calls, self.multisig))
            except AdapterError as exc:
                self._result = exc
            finally:
                if self._result is None:  # cancelled: the others must not wait for ever
                    self._result = AdapterError("the wait for our extrinsic was cancelled")
                self.in_block.set()
                self._done.set()
        else:
            await self._done.wait()
            if isinstance(self._result, AdapterError):
                raise SharedWaitFailed(str(self._result))
        result = self._result
        if isinstance(result, AdapterError) or result is None:
            raise result or AdapterError("no outcome")
        included, failures = result
        return included, failures[index]


@dataclass
class Pipeline:
    """One round of an attester's multisig calls: queued as they are decided (:meth:`queue`),
    submitted together — as few extrinsics as they fit (:meth:`flush`, :meth:`together`), the
    client giving them consecutive nonces — then waited for by :class:`InFlight`, each call on
    its own (:meth:`settle`, waiting for them together, is what tests use).

    Why together: chopsticks' Instant mode builds a block per extrinsic, so an attester's
    openings of three proposals and its execution of a fourth cost four blocks when sent
    apart and one when sent together (issue #12: each block costs ~0.4 s of the builder
    before any call in it runs); on a real chain, one extrinsic's base fee instead of four.

    The executions of one round stay within one extrinsic's weight (``block_weight``) and
    length (``block_length``) together: chopsticks in its batch build modes, like a real block
    author, drops an extrinsic that no longer fits the block it is building, and every later
    nonce of ours would then wait behind the gap. Best effort, and only for this attester's
    own executions: another signatory's extrinsics, and the ``as_multi`` wrapping around each
    call, share the block too (a real node keeps what did not fit in its pool for the next
    block; see docs/substrate.md, "Trust and limits")."""

    block_weight: int
    block_length: int
    settles: list[Wait] = field(default_factory=list)
    opened: int = 0
    """Operations this round opened (their deposits are ours once included)."""
    execution_weight: int = 0
    """Ref time of this round's executions so far."""
    execution_length: int = 0
    """Encoded length of this round's executed calls so far."""
    halt: Halt = field(default_factory=Halt)
    """Set when a submission or a wait failed (:attr:`halted`); shared with :class:`InFlight`
    when it made this pipeline."""
    carried_weight: int = 0
    """Ref time of executions of earlier rounds still in flight (:class:`InFlight`): they may
    be built into the same block as this round's."""
    carried_length: int = 0
    """Their encoded length."""
    carried_opened: int = 0
    """Operations opened by earlier rounds still in flight (deposits about to be ours)."""
    busy: frozenset[tuple[str, float]] = frozenset()
    """Proposals with an extrinsic of ours in flight: not acted on again until it settles (an
    operation we opened is not on chain yet: read now, it would look unopened)."""
    busy_calls: frozenset[bytes] = frozenset()
    """Call hashes with an extrinsic of ours in flight (earlier rounds): not submitted for again,
    whatever proposal names them. Keyed by the call, not by the proposal: anyone writing the
    store can republish the same messages under another ``created`` (a new proposal key, the
    same batch), and a relayer restart can re-propose a batch under its old name; acting on
    it again while our extrinsic is in flight opens the same operation twice (a paid, failed
    ``Multisig.NoTimepoint``, and one of :data:`MAX_OPENS_PER_CALL` used up) or executes it
    twice (a paid, failed ``UnexpectedTimepoint``) (review M2)."""
    calls: set[bytes] = field(default_factory=set)
    """Call hashes this round submitted for (added to :attr:`busy_calls` of later rounds)."""
    ahead: list[Call] = field(default_factory=list)
    """Batches we expect to execute and are to weigh ahead (:func:`_weigh_ahead`) once this
    round's due submissions went out."""
    queued: list[Queued] = field(default_factory=list)
    """Calls decided since the last :meth:`flush`, submitted by it."""
    flushed: Callable[[], None] | None = None
    """Called after each :meth:`flush` that submitted something: hands its waits to
    :class:`InFlight` at once (:func:`approve_deliveries`)."""
    alone: set[bytes] = field(default_factory=set)
    """Call hashes to submit in an extrinsic of their own (:attr:`DeliveryDuty.alone`, which
    :func:`_round` hands in); the calls of a group the node refused are added."""
    _current: tuple[str, tuple[str, float]] = ("", ("", 0.0))

    @property
    def halted(self) -> bool:
        """A submission or a wait failed (this round's or, through the shared :class:`Halt`,
        one still in flight): submit nothing more until everything in flight has settled."""
        return self.halt.raised

    def call_busy(self, call_hash: bytes) -> bool:
        """Is an extrinsic of ours for ``call_hash`` in flight, or submitted this round?"""
        return call_hash in self.busy_calls or call_hash in self.calls

    @classmethod
    def for_budget(cls, budget: BatchBudget) -> Pipeline:
        """A round whose executions fit one extrinsic's whole weight and length: ``budget``
        back to what :func:`~relayer.families.substrate.batching.budget_for` took off for the
        ``as_multi`` around each batch."""
        share, whole = EXECUTION_WEIGHT_SHARE
        return cls(
            block_weight=budget.weight * whole // share,
            block_length=budget.length + EXECUTION_LENGTH_OVERHEAD,
        )

    def room_for(self, weight: int, length: int) -> bool:
        """Does one more execution of ``weight`` and ``length`` fit this round (the first one
        always does, unless executions still in flight already hold the block: it was planned
        to fit an extrinsic on its own)? If so it is counted."""
        used_weight = self.carried_weight + self.execution_weight
        used_length = self.carried_length + self.execution_length
        if (used_weight or used_length) and (
            used_weight + weight > self.block_weight or used_length + length > self.block_length
        ):
            return False
        self.execution_weight += weight
        self.execution_length += length
        return True

    async def submit(self, send: Callable[[], Awaitable[Submitted]]) -> Submitted:
        """Submit an extrinsic with ``send``; if that fails, every submission after it is
        :attr:`halted` (and it raises). :class:`SubmissionHalted`, without sending, when
        halted already: checked here, right before the client is asked, because a wait
        settling in the background may have failed since the round last looked."""
        if self.halted:
            raise SubmissionHalted("a submission or a wait failed: submitting nothing more")
        try:
            return await send()
        except (AdapterError, ConfigError):
            self.halt.raised = True
            raise

    def queue(self, call: MultisigCall, settle: Landed, **holds: Any) -> None:
        """Submit ``call`` (on behalf of the current proposal) at the next :meth:`flush`, then
        wait for it with ``settle``; ``holds``: what it holds until then (:class:`Queued`).
        Its call hash counts as busy from now on (:meth:`call_busy`)."""
        name, key = self._current
        self.queued.append(Queued(name, key, call, settle, **holds))
        self.calls.add(call.call_hash)

    def together(self, queued: Sequence[Queued]) -> list[list[Queued]]:
        """``queued`` cut into the fewest extrinsics (:func:`submit_together`), executions
        first and otherwise in order, that each stay within :data:`MAX_CALLS_TOGETHER` calls,
        a batch's share of the weight (:data:`EXECUTION_WEIGHT_SHARE`: the approvals and
        ``as_multi`` wrappers, a fraction of a percent each, fit in the rest) and the block's
        length less
        :data:`TOGETHER_ENVELOPE_BYTES`, each call counted with its
        :data:`CALL_WRAPPER_BYTES`; a call in :attr:`alone` (its last attempt failed, or the
        node refused it with others) goes in an extrinsic of its own. An execution planned to
        fit an extrinsic alone (every proposal's batch) always fits one: at worst it goes
        alone."""
        share, whole = EXECUTION_WEIGHT_SHARE
        weight_limit = self.block_weight * share // whole
        length_limit = self.block_length - TOGETHER_ENVELOPE_BYTES
        groups: list[list[Queued]] = []
        group: list[Queued] = []
        weight = length = 0
        # Executions first: a call that fails stops the batch (Utility.batch), and an opening
        # that lost a race should not hold back an execution, whose batch is the one ready.
        for item in sorted(queued, key=lambda item: item.call.function != "as_multi"):
            others = item.call.args.get("other_signatories", ())
            more_length = item.length + CALL_WRAPPER_BYTES + 32 * len(others)
            if group and (
                item.call.call_hash in self.alone
                or group[-1].call.call_hash in self.alone
                or len(group) >= MAX_CALLS_TOGETHER
                or weight + item.weight > weight_limit
                or length + more_length > length_limit
            ):
                groups.append(group)
                group, weight, length = [], 0, 0
            group.append(item)
            weight += item.weight
            length += more_length
        if group:
            groups.append(group)
        return groups

    async def flush(
        self,
        client: SubstrateClient,
        keypair: Keypair,
        multisig: bytes,
        *,
        chain: ChainConfig,
        state: AttesterState,
    ) -> None:
        """Submit what was queued since the last flush, as few extrinsics as it fits
        (:meth:`together`), each waited for by :class:`InFlight` on behalf of every call in
        it (:class:`Wait`, one :class:`Landing` shared). A refused submission halts the
        pipeline (:meth:`submit`): one counted line, and each of its calls is told
        (``submitted(False)``: an execution's weight estimate is not used again). Once halted
        (then, or before) nothing more is submitted: the calls still queued are dropped, to be
        decided afresh in a round after the drain."""
        queued, self.queued = self.queued, []
        groups = self.together(queued)
        for group in groups:
            if self.halted:
                log.info("%s: a submission failed; the rest waits for the next round", chain.name)
                return
            due = await _still_due(group, state)
            if not due:
                continue
            calls = [item.call for item in due]
            try:
                submitted = await self.submit(partial(submit_together, client, keypair, calls))
            except SubmissionHalted:  # halted while the operations were read again
                log.info("%s: a submission failed; the rest waits for the next round", chain.name)
                return
            except (AdapterError, ConfigError) as exc:
                state.errors += 1
                names = ", ".join(sorted({item.name for item in due}))
                log.warning("proposal %s: %s", names, exc)
                if len(due) > 1:
                    # Refused together (too long or heavy for the node's pool, say): each goes
                    # alone from now on, so one refusal cannot repeat every round (REVIEW1 L1).
                    self.alone.update(call.call_hash for call in calls)
                for item in due:
                    if item.submitted is not None:
                        item.submitted(False)
                return
            landing = Landing(client, submitted, tuple(calls), multisig)
            for index, item in enumerate(due):
                if item.submitted is not None:
                    item.submitted(True)
                self.settles.append(
                    Wait(
                        item.name,
                        item.key,
                        item.call.call_hash,
                        partial(item.settle, landing, index),
                        item.weight,
                        item.length,
                        item.opened,
                        landing.in_block,
                    )
                )
            if self.flushed is not None:
                self.flushed()

    def for_proposal(self, name: str, key: tuple[str, float]) -> Pipeline:
        """This pipeline, its next submission being for proposal ``name`` (``key``)."""
        self._current = (name, key)
        return self

    async def settle(self, done: set[tuple[str, float]], state: AttesterState) -> bool:
        """Wait for every extrinsic of the round, at once (:func:`_settle_one`). True if a
        wait failed otherwise than by a lost race."""
        failed = False

        async def one(wait: Wait) -> None:
            nonlocal failed
            failed |= await _settle_one(wait, done, state)

        async with trio.open_nursery() as nursery:
            for wait in self.settles:
                nursery.start_soon(one, wait)
        self.settles.clear()
        return failed


@dataclass
class InFlight:
    """An attester's rounds whose extrinsics are submitted and not yet settled.

    Why: waiting for a round's extrinsics before the next round (as before) left the chain
    idle between batches. An executor whose batch N takes a block of 1.4–2.3 s to build on
    chopsticks could open batch N+1 only after N landed and it had polled again, so the two
    extrinsics of consecutive batches took two blocks one after the other. Now each round's
    waits run in the background and the next round goes on, within what the rounds in flight
    hold:

    * their proposals are skipped (:attr:`Pipeline.busy`), and so is any proposal whose batch
      has the call hash of one of them (:attr:`Pipeline.busy_calls`: the same batch under
      another proposal key): our approval or execution is not on chain yet, and read now the
      operation would look as if it still needed us;
    * their executions count against the block's weight and length (:meth:`Pipeline.room_for`):
      chopsticks drops an extrinsic that no longer fits the block it builds, and every later
      nonce of ours would wait behind the gap;
    * their openings count against :data:`MAX_OPEN_OPERATIONS`;
    * after a failed submission, a failed wait or a cancel refused or lost (:attr:`halted`, one
      :class:`Halt` shared with every round's pipeline, so the round going on stops at its
      next submission too) nothing more is submitted until everything in flight settled
      (:meth:`drain`): the client forgot its nonce count and the node's leaves out our
      extrinsics in a block being built.

    Nonces stay right meanwhile: one client numbers them and serialises its submissions, and
    counts on from its last accepted one while nothing failed; once something failed, nothing
    is submitted until the node's count is right again."""

    keys: set[tuple[str, float]] = field(default_factory=set)
    weight: int = 0
    length: int = 0
    opened: int = 0
    rounds: int = 0
    """Rounds with an extrinsic still in flight (:meth:`drain` waits for none)."""
    calls: set[bytes] = field(default_factory=set)
    """Call hashes of the extrinsics in flight (:attr:`Pipeline.busy_calls`)."""
    halt: Halt = field(default_factory=Halt)
    generation: int = 0
    """How many times something in flight settled or left its block (:meth:`settled_or`)."""
    _changed: trio.Event = field(default_factory=trio.Event)

    @property
    def halted(self) -> bool:
        """Something failed: submit nothing until :meth:`drain` returned."""
        return self.halt.raised

    def pipeline(self, budget: BatchBudget) -> Pipeline:
        """A new round's pipeline for ``budget``, carrying what is in flight."""
        pipeline = Pipeline.for_budget(budget)
        pipeline.carried_weight, pipeline.carried_length = self.weight, self.length
        pipeline.carried_opened, pipeline.busy = self.opened, frozenset(self.keys)
        pipeline.busy_calls, pipeline.halt = frozenset(self.calls), self.halt
        return pipeline

    def start(
        self,
        nursery: trio.Nursery,
        pipeline: Pipeline,
        done: set[tuple[str, float]],
        state: AttesterState,
    ) -> None:
        """Wait for each of ``pipeline``'s extrinsics in ``nursery`` (:func:`_settle_one`), what
        each holds (:class:`Wait`) held until IT settled, not until the whole round has: an
        included opening is read from the chain as one of our operations from then on, and an
        execution that landed no longer fills the block."""
        if pipeline.halt is not self.halt and pipeline.halted:  # not one of ours: copy
            self.halt.raised = True
        waits, pipeline.settles = list(pipeline.settles), []
        if not waits:
            return
        self.rounds += 1
        left = len(waits)

        def changed() -> None:
            self.generation += 1
            self._changed.set()
            self._changed = trio.Event()

        async def settle(wait: Wait, call_ours: bool) -> None:
            nonlocal left
            failed = True  # unless it returns: cancelled or broken counts as failed
            held = True  # its weight and length, until its block is seen (or it settled)

            def release() -> None:
                nonlocal held
                if held:
                    held = False
                    self.weight -= wait.weight
                    self.length -= wait.length

            async def release_in_block(in_block: trio.Event) -> None:
                # In a block, an execution can no longer share the one being built with our
                # next (Pipeline.room_for): released then, not only once its events are
                # decoded — at a burst's end, executions of one signatory follow each other.
                await in_block.wait()
                release()
                changed()

            try:
                async with trio.open_nursery() as watching:
                    if wait.in_block is not None and (wait.weight or wait.length):
                        watching.start_soon(release_in_block, wait.in_block)
                    failed = await _settle_one(wait, done, state)
                    watching.cancel_scope.cancel()
            finally:
                # A wait that failed (not a lost race) may have made the client forget its
                # nonce count, as a failed submission does.
                if failed:
                    self.halt.raised = True
                self.keys.discard(wait.key)
                if call_ours:
                    self.calls.discard(wait.call)
                release()
                self.opened -= wait.opened
                left -= 1
                if not left:
                    self.rounds -= 1
                changed()

        for wait in waits:
            # A call in flight from an earlier round is that round's to release (one
            # extrinsic per call is in flight: Pipeline.call_busy).
            call_ours = wait.call not in self.calls
            self.calls.add(wait.call)
            self.keys.add(wait.key)
            self.weight += wait.weight
            self.length += wait.length
            self.opened += wait.opened
            nursery.start_soon(settle, wait, call_ours)

    async def settled_or(self, seconds: float, *, since: int) -> None:
        """Sleep ``seconds``, or less: until one of our extrinsics settles (or leaves the
        block it held: :attr:`Wait.in_block`) after :attr:`generation` ``since`` — at once if
        that happened already, during the round (a wake-up is not lost). The round after it
        may then have an execution to send (ours, held by :meth:`Pipeline.room_for` until
        now), and at a burst's end, when only executions are left, a poll's wait between them
        was the chain's idle time (issue #12). Halted, it sleeps the whole ``seconds``: a wait
        that fails at once must not make the loop resubmit as fast as the node answers
        (review REVIEW3 L1)."""
        if self.halted:
            await trio.sleep(seconds)
            return
        with trio.move_on_after(seconds):
            while self.generation == since:
                await self._changed.wait()

    async def drain(self) -> None:
        """Wait until nothing is in flight; then submitting is safe again."""
        while self.rounds:
            await self._changed.wait()
        self.halt.raised = False


VERIFY_SLICE = 1.0
"""The least seconds of verifying new proposals after which a round decides on those it
verified and sends their calls (:func:`_round`); the slice is half the grace when that is
longer (2 s at its 4 s floor): a burst's proposals then open two or three together, and an
opening is decided at most half a grace after its proposal was verified (plus the
verification under way then: a long one after a quick one can hold a decision longer —
review REVIEW4 L1, not mended: estimating a verification before it runs)."""


MAX_OPEN_OPERATIONS = 8
"""Open multisig operations an attester holds at once (each reserves the pallet's
``DepositBase`` + ``DepositFactor`` × threshold of its own: about 0.0067 ROC on Rococo Asset
Hub); beyond it, it opens nothing until some execute or are cancelled. A relayer proposing
batch after batch that nobody else approves can lock at most this many deposits."""


MAX_OPENS_PER_CALL = 2
"""How often an attester opens an operation for one call: a batch that was opened and then
cancelled as stale twice is not opened by it again (the relayer bounds its retries too)."""

MAX_OPEN_ATTEMPTS = 2 * MAX_OPENS_PER_CALL
"""How often an attester submits an opening for one call at all, those that never ran
included: an opening that did not run behind a failed call of ours gives its
:data:`MAX_OPENS_PER_CALL` count back, on the word of the node's events, so a node lying
about them could otherwise make us submit it for ever (review REVIEW2 L1)."""


STALE_OPERATION = 300.0
"""Seconds (by the attester's own clock, from when it first saw the operation open) after which
it cancels an operation it opened (``cancel_as_multi``: the deposit comes back). Longer than the
relayer's ``confirm_timeout`` (120 s), after which the relayer has withdrawn the proposal."""


_REMEMBERED_CALLS = 4096
"""Bound of :attr:`DeliveryDuty.opens` (oldest entries dropped): memory a relayer cannot grow."""


ROLE_GRACE = 4.0
"""The least seconds each signatory waits per rank before doing what a higher-ranked one should
have (:class:`TurnGrace` lengthens it to what a turn is seen to take)."""

GRACE_FACTOR = 2.0
"""A rank's wait is this many times the longest recent turn (:class:`TurnGrace`): the other
signatory's turn also holds its own poll and round, and its verification may have started
later than ours."""

GRACE_MAX = 30.0
"""The most seconds a rank waits, however slow turns have been: what a signatory that is down
costs the others per rank (an operation's deposit stays bounded by :data:`STALE_OPERATION`)."""

GRACE_SAMPLES = 16
"""Turns remembered (:class:`TurnGrace`): a burst's blocks, so one slow block long ago no longer
counts but the last batch's does."""


@dataclass
class TurnGrace:
    """How long a signatory waits per rank before doing what a higher-ranked one should have:
    :data:`GRACE_FACTOR` × the longest of the last :data:`GRACE_SAMPLES` turns this attester
    took itself (from deciding to act to seeing its extrinsic included), never less than
    :data:`ROLE_GRACE` nor more than :data:`GRACE_MAX`.

    Why measured: the higher-ranked signatory's extrinsic is in a block only after the block
    is built, and a block of 500 mints on a loaded chopsticks takes longer than a fixed 4 s.
    A grace shorter than that makes the next signatory open the same operation (a failed,
    paid extrinsic, ``Multisig.NoTimepoint``) or execute it twice, and the loser's round waits
    for its failure. Our own turns are the same chain, the same blocks and the same load.

    Openings by another signatory that we waited for count too, in a window of their own
    (:attr:`openings`, :meth:`observe_opening`) and *not* multiplied by
    :data:`GRACE_FACTOR`: at a burst's start we have no turns of our own yet, and the first
    openings show how long a turn takes on this chain now.

    What someone who wants to hurt us can do with it: a slow RPC (or a chain slowed on
    purpose) stretches our samples, so we wait longer before standing in for a signatory that
    is down — at most :data:`GRACE_MAX` per rank, a delay, never a loss. Nothing can shorten
    it below :data:`ROLE_GRACE`. Our own samples are our own extrinsics timed by our own
    clock; an opening sample is another signatory's extrinsic timed by our clock, and only
    the rotation's first signatory's (:func:`_observe_opening`). That first signatory,
    opening as late as it can without being stood in for (just under our grace), gives a
    sample just under the grace: unmultiplied, it can hold the grace where it is, never
    raise it (multiplied, it doubled it every batch up to :data:`GRACE_MAX`, review M1). The
    two windows are apart so that openings, which we see for most batches, do not push a
    slow turn of our own out of its window sooner (review L4)."""

    turns: deque[float] = field(default_factory=lambda: deque(maxlen=GRACE_SAMPLES))
    openings: deque[float] = field(default_factory=lambda: deque(maxlen=GRACE_SAMPLES))
    """Recent openings by the rotation's first signatory: seconds from when we had verified the
    proposal to when we saw the operation open."""

    def observe(self, seconds: float) -> None:
        """One turn of ours took ``seconds`` (decided → included); nonsense is ignored."""
        if math.isfinite(seconds) and seconds >= 0:
            self.turns.append(min(seconds, GRACE_MAX))

    def observe_opening(self, seconds: float) -> None:
        """The first signatory's opening was seen ``seconds`` after we had verified its proposal;
        nonsense is ignored."""
        if math.isfinite(seconds) and seconds >= 0:
            self.openings.append(min(seconds, GRACE_MAX))

    @property
    def seconds(self) -> float:
        """The wait per rank now."""
        ours = GRACE_FACTOR * max(self.turns, default=0.0)
        return min(GRACE_MAX, max(ROLE_GRACE, ours, max(self.openings, default=0.0)))


BLOCK_READS_TTL = 5.0
"""Seconds a read of the multisig's state is reused while the best block stays the same
(:class:`BlockReads`): a bound on what a node that keeps answering the same best hash can keep
us believing."""


@dataclass
class BlockReads:
    """The multisig state an attester read, kept for as long as the best block's hash is the
    one read before it (at most :data:`BLOCK_READS_TTL`): the open operations of the pending
    proposals' calls and those whose deposit is ours.

    Why: every round (4 a second per attester) read each pending proposal's operation and all
    of the multisig's operations again, at the best block, though that state changes only
    with a block, one every 1-2 s in a burst on chopsticks; each read is several requests
    (substrate-interface asks for the head, and on a new head for its header and runtime
    version too) to a node that serves them on the same thread that builds the blocks. Now a
    round costs one request (the best hash) while nothing changed.

    Why it is right: the hash is read BEFORE the state, so a kept read is at least as new as
    the block it is kept for; a new block (ours or anyone's: every extrinsic is in one) is a
    new hash and everything is read again. Without :meth:`refresh` (``at`` None) nothing is
    kept. What someone who wants to hurt us can do with it: a node answering one hash for
    ever keeps a read for :data:`BLOCK_READS_TTL` — it could as well lie in the read itself;
    an unreadable hash keeps nothing."""

    at: bytes | None = None
    """The best block hash the reads are kept for; None: nothing is kept."""
    since: float = 0.0
    operations: dict[bytes, OpenOperation | None] = field(default_factory=dict)
    held: bool = False
    """Whether the operations whose deposit is ours were read at :attr:`at`."""

    def forget(self) -> None:
        """Keep nothing: the next reads go to the node."""
        self.at, self.operations, self.held = None, {}, False

    async def refresh(self, client: SubstrateClient, now: float) -> None:
        """Read the best block's hash; if it is another than :attr:`at` (or the reads are
        older than :data:`BLOCK_READS_TTL`), forget what was read. AdapterError (and nothing
        kept) if the node does not answer a hash."""
        try:
            answer = await client.rpc("chain_getBlockHash", [])
            best = best_block_hash(answer, redact_url(client.url))
        except AdapterError:
            self.forget()
            raise
        if best != self.at or now - self.since > BLOCK_READS_TTL:
            self.forget()
            self.at, self.since = best, now

    def kept(self, call_hash: bytes) -> bool:
        """Whether :meth:`operation` would answer ``call_hash`` from a kept read."""
        return self.at is not None and call_hash in self.operations

    async def operation(
        self, client: SubstrateClient, multisig: bytes, call_hash: bytes
    ) -> OpenOperation | None:
        """The open operation for ``call_hash`` (:func:`open_operation`), read once a block."""
        if self.kept(call_hash):
            return self.operations[call_hash]
        return await self.fresh(client, multisig, call_hash)

    async def fresh(
        self, client: SubstrateClient, multisig: bytes, call_hash: bytes
    ) -> OpenOperation | None:
        """The open operation for ``call_hash`` read from the node now (and kept, if
        anything is: the next :meth:`operation` at this block answers it)."""
        operation = await open_operation(client, multisig, call_hash)
        if self.at is not None:
            self.operations[call_hash] = operation
        return operation


@dataclass
class DeliveryDuty:
    """What an attester remembers about multisig operations, by its own clock."""

    held: dict[bytes, OpenOperation] = field(default_factory=dict)
    """Call hash → the open operations whose deposit is ours (read from the chain)."""
    first_seen: dict[tuple[bytes, Timepoint | None], float] = field(default_factory=dict)
    """(call hash, timepoint or None when not open) → when we first saw it in that state."""
    opens: dict[bytes, int] = field(default_factory=dict)
    """Call hash → how often we opened an operation for it."""
    tries: dict[bytes, int] = field(default_factory=dict)
    """Call hash → how often we submitted an opening for it, run or not."""
    grace: TurnGrace = field(default_factory=TurnGrace)
    """How long we wait per rank, from how long our own turns take."""
    verified: dict[tuple[str, float], Proposal] = field(default_factory=dict)
    """Live proposal (name, created) → what it said when we verified it. Anyone may write the
    store, the relayer's own entries included: one rewritten in place since (same name and
    ``created``) is verified again before anything is done on what it says now."""
    sighted: dict[tuple[str, float], float] = field(default_factory=dict)
    """Live proposal (name, created) → when this attester had verified it: the opening turn
    is timed from there.

    Why not from when it was first read (as before a round's calls went out together): a
    round verifies new proposals before it decides on them (so that their openings go out
    together), and a turn timed from the read waited for the verification of every proposal
    ahead of it in the round — k × seconds at a burst's start, past the 4 s grace, so the
    next-ranked signatories stood in for openers that were only verifying (review REVIEW2
    N1). Nor from the end of a whole verification pass: attesters' rounds are not in step, so
    their passes hold different proposals (REVIEW3 M1). Each proposal's own verification is
    the same work for every signatory, and a round decides on what it verified at most
    :data:`VERIFY_SLICE` later."""
    fees: dict[bytes, tuple[int, Fee]] = field(default_factory=dict)
    """Call hash → (runtime spec version, its weight and fee as our node estimated them under
    that runtime) (:func:`_weigh`), for the batches of live proposals only
    (:meth:`keep_fees`), until their execution settled. The signatory expected to execute a
    batch estimates it while the opening is being built (:func:`_weigh_ahead`), so the
    execution's critical path (operation seen open → execution submitted) no longer holds a
    ``payment_queryInfo`` of a 100 KB call: on a loaded attester that round trip waits for the
    process's one Substrate worker slot behind the origin scan."""
    weigh_failed: set[bytes] = field(default_factory=set)
    """Call hashes whose estimate ahead failed: not asked ahead again (the execution asks
    afresh), and counted in the attester's errors once, not every poll."""
    alone: set[bytes] = field(default_factory=set)
    """Call hashes whose last call of ours failed in its block (not a call that merely did not
    run): sent in an extrinsic of their own until one succeeds (:meth:`Pipeline.together`).
    In a ``Utility.batch`` a failing call stops the calls after it, so a call that keeps
    failing (a weight our node misjudges, say) would otherwise hold every opening of ours
    behind it round after round. Only live proposals' calls are kept (:meth:`keep_fees`)."""
    reads: BlockReads = field(default_factory=BlockReads)
    """The multisig state read at the best block, kept while it is the best (one request a
    round instead of one per pending proposal and the multisig's whole map)."""

    def keep_fees(self, live: set[bytes]) -> None:
        """Forget the estimates (and failed estimates) of calls no live proposal batches
        (``live``: their hashes). Bounded memory: what a relayer writing proposals can make us
        keep is one entry per live proposal, which it pays a whole verification for already.
        A runtime upgrade needs nothing here: each estimate names the spec version it was made
        under, and :func:`_weigh` uses none made under another."""
        for call_hash in set(self.fees) - live:
            del self.fees[call_hash]
        self.weigh_failed &= live
        self.alone &= live

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

    def outcome(self, call_hash: bytes, failure: str | None) -> None:
        """Note how our call for ``call_hash`` ended in its block (:attr:`alone`)."""
        if failure is None:
            self.alone.discard(call_hash)
        elif not failure.startswith(NOT_RUN):
            self.alone.add(call_hash)

    def tried(self, call_hash: bytes) -> None:
        """Count an opening we submitted for ``call_hash`` (never given back:
        :data:`MAX_OPEN_ATTEMPTS`)."""
        self.tries[call_hash] = self.tries.get(call_hash, 0) + 1
        while len(self.tries) > _REMEMBERED_CALLS:
            del self.tries[next(iter(self.tries))]

    def not_opened(self, call_hash: bytes) -> None:
        """Take back the count of an opening for ``call_hash`` that never ran (a call before it
        in our ``Utility.batch`` failed): nothing was attempted, no deposit taken, so it is
        not one of :data:`MAX_OPENS_PER_CALL`. An opening that ran and failed (a lost race)
        keeps its count: a paid attempt all the same."""
        count = self.opens.get(call_hash, 0) - 1
        if count > 0:
            self.opens[call_hash] = count
        else:
            self.opens.pop(call_hash, None)


async def _tend_held(
    client: SubstrateClient,
    chain: ChainConfig,
    keypair: Keypair,
    duty: DeliveryDuty,
    *,
    state: AttesterState,
    now: float | None = None,
    halt: Halt | None = None,
) -> None:
    """Read the operations whose deposit we hold and cancel those open for longer than
    :data:`STALE_OPERATION` (by our own clock: a proposal's ``created`` proves nothing).

    A cancel is a submission like any other: none is sent while ``halt`` (the attester's
    :class:`Halt`) is raised, and one whose nonce is in doubt (refused, or its wait timed out
    or broke: the client forgot its nonce count while other extrinsics of ours may be in
    flight) raises it and the error, so the round after it submits nothing either (review M1).
    A cancel included but failed on chain (:class:`DispatchFailed`, e.g. ``Multisig.NotFound``
    while our read of the operations lags) used its nonce normally: no halt, one counted line,
    and the other stale operations are still tended.

    Either way its operation is held off for another :data:`STALE_OPERATION` (its clock is
    re-armed): a cancel that keeps failing costs one attempt (and, if the nonce is in doubt,
    one halted round) per period, not every poll's approvals (second review, finding 2). No
    memory is added: the clock is the one :attr:`DeliveryDuty.first_seen` keeps for every
    operation we hold."""
    settings = chain.settings()
    me = bytes(keypair.public_key)
    if not duty.reads.held:
        # Once a block (BlockReads): what we opened or cancelled since is in duty.held already.
        duty.held = await held_operations(client, settings.multisig, me)
        duty.reads.held = duty.reads.at is not None
    now = time.time() if now is None else now
    others = [s for s in settings.signatories if s != me]
    for call_hash, operation in list(duty.held.items()):
        if now - duty.seen(call_hash, operation.timepoint, now) < STALE_OPERATION:
            continue
        if halt is not None and halt.raised:
            return  # cancelled after the drain: a deposit held one more poll is no loss
        try:
            await cancel(
                client,
                keypair,
                others,
                settings.multisig_threshold,
                call_hash,
                timepoint=operation.timepoint,
            )
        except DispatchFailed as exc:
            # Re-armed: tried again one STALE_OPERATION from now, not every poll (below too).
            duty.first_seen[(call_hash, operation.timepoint)] = now
            state.errors += 1
            log.warning("%s: open operations: %s; again in %g s", chain.name, exc, STALE_OPERATION)
            continue
        except (AdapterError, ConfigError):
            duty.first_seen[(call_hash, operation.timepoint)] = now
            if halt is not None:
                halt.raised = True
            raise
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
    member: bytes,
    bridges: dict[int, bytes],
) -> Call | None:
    """The proposal's ``batch_all``, if this attester (``member``, its committee address) and
    a quorum signed its checkpoint and every message verifies under it; None if not (yet) such
    a checkpoint.

    A quorum, not just this attester: the relayer could pin proposals to an index this attester
    signed while the others signed other indices (an operation nobody would ever join, holding
    our deposit). A token transfer that can never be minted (:func:`refund_reason`, read from
    the chain here) is delivered as a refund."""
    cp = proposal.checkpoint
    if not await trio.to_thread.run_sync(store.signed_by, cp, member):
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
        calls.extend(delivery_calls(message, settings, bridges, refund=refund))
    return await compose_batch(client, calls)


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


def _rank(settings: SubstrateSettings, call_hash: bytes, me: bytes, skip: frozenset[bytes]) -> int:
    """My turn for an operation: signatories in a rotation picked by the call hash, those in
    ``skip`` left out. Rank 0 acts at once, rank r after r × the grace (:class:`TurnGrace`,
    at least :data:`ROLE_GRACE`) — so the usual case is one opener and one executor, not every
    attester racing (each loser pays a failed extrinsic), while a signatory that is down only
    delays the others."""
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
    pipeline: Pipeline | None = None,
    sighted: float | None = None,
) -> bool:
    """Approve or execute ``proposal``'s batch when it is our turn; True once nothing is left
    for this attester. Turns are timed from when *we* first saw the state (never from the
    proposal's ``created``) — the opening turn from ``sighted``, when we had verified the
    proposal, if given (:attr:`DeliveryDuty.sighted`); an operation is opened only within
    :data:`MAX_OPEN_OPERATIONS` and :data:`MAX_OPENS_PER_CALL`.

    With a ``pipeline``, nothing is done while an extrinsic of ours for the same call hash is
    in flight or queued (:meth:`Pipeline.call_busy`), and the call decided on is only queued
    here (:meth:`Pipeline.queue`: submitted with the round's others at its next flush, settled
    by :class:`InFlight`; this returns False: not finished yet); without, it is submitted
    alone and waited for (:func:`_decided`). Nothing else is decided differently: the same
    state read, the same turn, the same caps.

    The operation may come from a read kept for this best block (:class:`BlockReads`). Right
    before any submission (an opening, a join, an execution, a stand-in's) the operation is
    read from the node again, and the call goes out only if it is what the decision was made
    on (:func:`_still_due`, at the flush; review RRATE M1 for kept reads, REVIEW2 for the
    seconds a round's decisions can take before their flush): a kept read can predate a
    block that came while the round ran, with our own opening in it (acted on, we opened the
    same call again: a paid ``NoTimepoint``, and one of :data:`MAX_OPENS_PER_CALL` burnt) or
    another signatory's approval. One request per submitted call; a round at an unchanged
    block that submits nothing still costs none."""
    if pipeline is not None and pipeline.call_busy(batch.hash):
        # Our extrinsic for this very call is in flight (or went out this round) under another
        # proposal key: read now, the chain would not show it yet (review M2).
        return False
    settings = chain.settings()
    me = bytes(keypair.public_key)
    others = [s for s in settings.signatories if s != me]
    operation = await duty.reads.operation(client, settings.multisig, batch.hash)
    threshold = settings.multisig_threshold
    now = time.time() if now is None else now
    if operation is None:
        turn = duty.seen(batch.hash, None, now if sighted is None else min(sighted, now)) + (
            _rank(settings, batch.hash, me, frozenset()) * duty.grace.seconds
        )
        if now < turn:
            # The designated opener goes first. If we are the signatory expected to execute
            # once it has, weigh the call while its opening is being built — after this
            # round's due submissions (:attr:`Pipeline.ahead`): the execution then goes out
            # as soon as we see the operation open.
            if threshold >= 2 and _rank(settings, batch.hash, me, frozenset()) == threshold - 1:
                if pipeline is None:
                    await _weigh_ahead(client, keypair, [batch], duty, chain=chain, state=state)
                else:
                    pipeline.ahead.append(batch)
            return False
        started = _turn_started(now, turn)
        if await _already_delivered(client, settings, proposal):
            return True
        opens, tries = duty.opens.get(batch.hash, 0), duty.tries.get(batch.hash, 0)
        if opens >= MAX_OPENS_PER_CALL or tries >= MAX_OPEN_ATTEMPTS:
            log.warning(
                "proposal %s: opened %d times already (%d openings submitted), never executed; "
                "not opening it again",
                proposal.name,
                opens,
                tries,
            )
            return True
        opening = pipeline.opened + pipeline.carried_opened if pipeline else 0
        if len(duty.held) + opening >= MAX_OPEN_OPERATIONS:
            log.info(
                "proposal %s: %d operations of ours are open; not opening another yet",
                proposal.name,
                len(duty.held),
            )
            return False
        open_call = MultisigCall(
            "approve_as_multi",
            approval_args(client, keypair, others, threshold, batch.hash, timepoint=None),
            batch.hash,
        )

        async def opened(landing: Landing, index: int) -> bool:
            included, failure = await landing.outcome(index)
            duty.outcome(batch.hash, failure)
            what = f"approve_as_multi of 0x{batch.hash.hex()} on {redact_url(client.url)}"
            if failure is not None:
                if failure.startswith(NOT_RUN):
                    # Never ran (a call before it in our batch failed): no deposit, no paid
                    # attempt. A failure of its own (a lost race) stays one of the two: a node
                    # hiding the open operation must not make us pay again and again (REVIEW1 M2).
                    duty.not_opened(batch.hash)
                raise DispatchFailed(f"{what} failed: {failure}")
            timepoint = approval_timepoint(included, settings.multisig, batch.hash)
            if timepoint is None:
                raise AdapterError(f"{what}: no Multisig.NewMultisig event for it")
            duty.grace.observe(trio.current_time() - started)
            duty.held[batch.hash] = OpenOperation(timepoint, frozenset({me}), me)
            state.approvals += 1
            log.info("proposal %s: opened the multisig operation", proposal.name)
            return threshold == 1

        # Counted as decided, not as submitted: a submission that fails after the node took the
        # extrinsic still counts (review REVIEW4 L2); one dropped before it does too (a cap of
        # safety, not of deposits: MAX_OPENS_PER_CALL counts those).
        duty.tried(batch.hash)

        def count_open(submitted: bool) -> None:
            if submitted:
                duty.opened(batch.hash)

        if pipeline is not None:
            pipeline.opened += 1
        return await _decided(
            client,
            keypair,
            settings,
            open_call,
            opened,
            pipeline=pipeline,
            opened=1,
            submitted=count_open,
            reads=duty.reads,
            state=state,
        )
    # The clock of the unopened operation has served once it is seen open. Kept, a batch
    # proposed again after its operation was cancelled (a re-publish, a relayer restart) found
    # every rank's opening turn long past: all signatories opened at once, all but one paying a
    # failed ``NoTimepoint``. Now the new proposal's first read starts the turns again.
    unopened_since = duty.first_seen.pop((batch.hash, None), None)
    if me in operation.approvals:
        return False  # wait for the others (or for the proposal to be withdrawn)
    _observe_opening(duty, settings, batch.hash, operation, now, waited_since=unopened_since)
    turn = duty.seen(batch.hash, operation.timepoint, now) + (
        _rank(settings, batch.hash, me, operation.approvals) * duty.grace.seconds
    )
    if now < turn:
        return False
    started = _turn_started(now, turn)
    if len(operation.approvals) + 1 < threshold:
        join = MultisigCall(
            "approve_as_multi",
            approval_args(
                client, keypair, others, threshold, batch.hash, timepoint=operation.timepoint
            ),
            batch.hash,
        )

        async def approved(landing: Landing, index: int) -> bool:
            _, failure = await landing.outcome(index)
            duty.outcome(batch.hash, failure)
            if failure is not None:
                raise DispatchFailed(
                    f"approve_as_multi of 0x{batch.hash.hex()} on {redact_url(client.url)} "
                    f"failed: {failure}"
                )
            duty.grace.observe(trio.current_time() - started)
            state.approvals += 1
            return True

        return await _decided(
            client,
            keypair,
            settings,
            join,
            approved,
            pipeline=pipeline,
            decided_on=operation,
            reads=duty.reads,
            state=state,
        )
    fee = await _weigh(client, keypair, batch, duty)
    if pipeline is not None and not pipeline.room_for(fee.weight, len(batch.data)):
        return False  # this block is full of our executions: the next round
    execution = MultisigCall(
        "as_multi",
        execution_args(
            keypair,
            others,
            threshold,
            batch,
            timepoint=operation.timepoint,
            max_weight=client.weight_arg(fee.weight, fee.proof_size),
        ),
        batch.hash,
    )

    async def executed(landing: Landing, index: int) -> bool:
        try:
            included, failure = await landing.outcome(index)
        except BaseException:
            duty.fees.pop(batch.hash, None)  # given up: see below
            raise
        duty.outcome(batch.hash, failure)
        if failure is not None and failure.startswith(NOT_RUN):
            # A call before it in our batch failed: not finished, decided afresh next round
            # (returned True, the proposal was done with here for good: REVIEW1 M1). Its
            # estimate was never put to the test: kept for that retry (REVIEW2 L3).
            log.info("proposal %s: our execution did not run: %s", proposal.name, failure)
            return False
        # Settled or failed: the estimate has served. Kept, a wrong one (a node that lied
        # once) would weigh every later execution of the same call, under a re-proposal or
        # after a relayer restart (review L1); the next asks afresh.
        duty.fees.pop(batch.hash, None)
        duty.grace.observe(trio.current_time() - started)
        _report_execution(
            proposal, included, failure, about=(settings.multisig, batch.hash), state=state
        )
        return True

    def forget_weight(submitted: bool) -> None:
        if not submitted:
            duty.fees.pop(batch.hash, None)  # a wrong weight is not used again (review L1)

    return await _decided(
        client,
        keypair,
        settings,
        execution,
        executed,
        pipeline=pipeline,
        weight=fee.weight,
        length=len(batch.data),
        submitted=forget_weight,
        decided_on=operation,
        reads=duty.reads,
        state=state,
    )


async def _decided(
    client: SubstrateClient,
    keypair: Keypair,
    settings: SubstrateSettings,
    call: MultisigCall,
    settle: Landed,
    *,
    pipeline: Pipeline | None,
    weight: int = 0,
    length: int = 0,
    opened: int = 0,
    submitted: Callable[[bool], None] | None = None,
    decided_on: OpenOperation | None = None,
    reads: BlockReads,
    state: AttesterState,
) -> bool:
    """Do what :func:`_act_on` decided: queue ``call`` in ``pipeline`` (submitted at its next
    flush, settled by :class:`InFlight`; False: not finished yet) or, without one, submit it
    alone and wait (what ``settle`` returns)."""
    unchanged = partial(_unchanged, reads, client, settings.multisig, call.call_hash, decided_on)
    if pipeline is not None:
        pipeline.queue(
            call,
            settle,
            weight=weight,
            length=length,
            opened=opened,
            submitted=submitted,
            unchanged=unchanged,
        )
        return False
    if not await _still_due([Queued("", ("", 0.0), call, settle, unchanged=unchanged)], state):
        return False
    try:
        sent = await submit_together(client, keypair, [call])
    except (AdapterError, ConfigError):
        if submitted is not None:
            submitted(False)
        raise
    if submitted is not None:
        submitted(True)
    return await settle(Landing(client, sent, (call,), settings.multisig), 0)


def _observe_opening(
    duty: DeliveryDuty,
    settings: SubstrateSettings,
    call_hash: bytes,
    operation: OpenOperation,
    now: float,
    *,
    waited_since: float | None,
) -> None:
    """Count the rotation's first signatory's opening of ``call_hash`` as an opening sample
    (:meth:`TurnGrace.observe_opening`) when we see it open for the first time: from
    ``waited_since``, when our own clock for the unopened operation started (when we first
    verified its proposal: :attr:`DeliveryDuty.sighted`; None if it was open when we first
    looked), to now, by our clock.

    Why: our grace grew only with our own turns, and at a burst's start we have none, so it
    was :data:`ROLE_GRACE`; the first execution's block (hundreds of mints) took longer than
    that to build on a loaded chopsticks, and the next-ranked signatory executed too (a paid
    ``UnexpectedTimepoint``; three lost races in one measured burst). How long the opener took
    — verifying, submitting, its block — is the chain's and the committee's pace now.

    Only the first signatory's opening (``operation.depositor`` at rank 0): any other opener
    stood in for it, after a whole grace of its own, so its opening measures that grace, not
    a turn. Counted, one signatory that is down made every stand-in's opening a sample of
    grace + block, the observers' graces doubled batch after batch (roles rotate, so they fed
    each other) and stayed at :data:`GRACE_MAX` (review M1).

    What someone who wants to hurt us can do with it: the first signatory, or a node answering
    late, lengthens the sample up to just under our grace (later, the second signatory opens
    in its place and nothing is sampled), and a sample is not multiplied: the grace is held,
    never raised, and never shortened below :data:`ROLE_GRACE`. An operation we opened
    ourselves is never sampled here (we are its depositor: ``me in operation.approvals``
    returns before this is called)."""
    if (call_hash, operation.timepoint) in duty.first_seen:
        return  # seen open before: sampled then, or it was open when we first looked
    if operation.depositor not in settings.signatories:
        return  # not an opening we can place in the rotation (a node's answer is anyone's)
    if _rank(settings, call_hash, operation.depositor, frozenset()) != 0:
        return  # a stand-in's opening: it waited a grace for a first signatory that was down
    # A wait longer than the longest grace was no turn (the operation was cancelled and opened
    # again, or our clock for it was forgotten): not a sample.
    if waited_since is not None and now - waited_since <= GRACE_MAX:
        duty.grace.observe_opening(now - waited_since)


async def _weigh(client: SubstrateClient, keypair: Keypair, batch: Call, duty: DeliveryDuty) -> Fee:
    """``batch``'s weight and fee (``payment_queryInfo``) for its execution: the estimate made
    ahead (:func:`_weigh_ahead`) if it was made under the runtime the node runs now, else asked
    afresh (and kept, until the execution settled).

    Why the spec version, read now: the same call on the same runtime weighs the same, but an
    upgrade between the estimate and the execution changes weights, and an execution whose
    ``max_weight`` is below its call's weight fails, paid (``Multisig.MaxWeightTooLow``); the
    sizing notices an upgrade only up to a minute later. ``state_getRuntimeVersion`` is a
    small answer; the estimate it spares runs the runtime over the 100 KB call."""
    version = await spec_version(client)
    kept = duty.fees.get(batch.hash)
    if kept is not None and kept[0] == version:
        return kept[1]
    return await _estimate(client, keypair, batch, duty, version)


async def _weigh_ahead(
    client: SubstrateClient,
    keypair: Keypair,
    batches: Sequence[Call],
    duty: DeliveryDuty,
    *,
    chain: ChainConfig,
    state: AttesterState,
) -> None:
    """Estimate ``batches`` (those we expect to execute, not yet open) ahead of their
    execution, after the round's due submissions went out: an opening or execution that is our
    turn now does not wait behind a ``payment_queryInfo`` for one that is not (review L3).

    Once per call: a call estimated already (under whatever runtime: :func:`_weigh` checks at
    the execution) or whose estimate failed is not asked again. A failure is no failure of
    anything due — the execution asks afresh — so it is one info line and one count in
    ``state.errors`` per call, not a warning every poll."""
    version: int | None = None  # read once a round, before the first estimate
    for batch in batches:
        if batch.hash in duty.fees or batch.hash in duty.weigh_failed:
            continue
        try:
            if version is None:
                version = await spec_version(client)
            await _estimate(client, keypair, batch, duty, version)
        except AdapterError as exc:
            duty.weigh_failed.add(batch.hash)
            state.errors += 1
            log.info("%s: weighing 0x%s ahead: %s", chain.name, batch.hash.hex(), exc)


async def _estimate(
    client: SubstrateClient, keypair: Keypair, batch: Call, duty: DeliveryDuty, version: int
) -> Fee:
    """Ask the node for ``batch``'s fee and weight under runtime ``version`` (read before it,
    so an upgrade in between makes the estimate look older, never newer) and keep it.
    AdapterError for a weight of 0: a node that says so would have every execution of the
    call fail (``max_weight`` 0), and an estimate is kept for later executions too."""
    fee = await client.estimate_fee(keypair, batch)
    if fee.weight <= 0:
        raise AdapterError(f"{redact_url(client.url)} weighs call 0x{batch.hash.hex()} at 0")
    duty.fees[batch.hash] = (version, fee)
    return fee


def _turn_started(now: float, turn: float) -> float:
    """When our turn (due at ``turn`` by the ``now`` clock) began, on trio's clock: a turn is
    timed from then to its inclusion seen (:meth:`TurnGrace.observe`), which is what another
    signatory waiting for us lives through — the rounds we let pass after it came (a block
    already full of our executions) included."""
    return trio.current_time() - max(0.0, now - turn)


def _report_execution(
    proposal: Proposal,
    included: Included,
    failure: str | None = None,
    *,
    about: tuple[bytes, bytes] | None = None,
    state: AttesterState,
) -> None:
    """Count and log what an execution of ``proposal``'s batch did on chain: ``failure``, why
    our ``as_multi`` did not run (:func:`outcomes`), else what the call did
    (:func:`executed_ok`, looking only at the operation ``about``)."""
    ok, reason = (False, failure) if failure is not None else executed_ok(included, about)
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


async def _already_delivered(
    client: SubstrateClient, settings: SubstrateSettings, proposal: Proposal
) -> bool:
    """Is any message of ``proposal`` delivered already (its replay-guard item exists)? Then
    the batch would fail as a whole: leave it to the relayer to propose the rest again."""
    messages = [decode_message(raw) for raw in proposal.messages]
    return any(await delivered_items(client, settings, messages))
