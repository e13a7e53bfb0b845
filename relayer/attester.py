"""The attester: signs an origin's outbox checkpoints once the light clients accept them.

For every configured EVM origin, in a loop:

1. take the newest block the chain's finality policy accepts, its header hash recomputed by the
   Ethereum light client;
2. prove the outbox's 33 storage slots with ``eth_getProof`` against that header's state root
   and recompute the root from them (``adapters.evm.chain.EvmChain.outbox_state``);
3. if the count grew, sign ``(origin, outbox, root, count - 1)`` and publish it to the
   checkpoint store.

For every Substrate origin, the attester scans the remarks of its final blocks itself
(:func:`relayer.substrate_route.scan_remarks`: the same rules and nonces as the relayer's), keeps
its own copy of the accumulator and signs it the same way, with the chain's genesis hash as the
outbox. For every Substrate destination it holds an sr25519 key of the committee's multisig and
approves the relayer's delivery proposals whose every message it finds under a root it signed
itself (:func:`approve_deliveries`).

Nothing here trusts a ``root()`` call, a log or the relayer. An attester never signs two roots
for the same index (the store refuses, and the attester halts: that is a reorg below the
finality policy, anchors.md T21 — an operator must look).
"""

from __future__ import annotations

import logging
import time
from functools import partial
from typing import TYPE_CHECKING

import trio

from adapters.errors import AdapterError
from adapters.rpc import RpcError
from adapters.substrate.client import Call, SubstrateClient, keypair_from_seed
from adapters.substrate.multisig import approve, execute, executed_ok, open_operation
from light_clients.committee import Checkpoint, address_of, sign_checkpoint
from light_clients.errors import VerificationError
from light_clients.merkle import IncrementalMerkleTree
from light_clients.message import decode_message, verify_message_inclusion
from relayer.checkpoints import CheckpointStore, SignedCheckpoint
from relayer.config import ATTESTER_POLL, ChainConfig, Config, ConfigError, SubstrateSettings
from relayer.endpoints import open_evm
from relayer.substrate_route import (
    SCAN_CHUNK,
    Proposal,
    ProposalStore,
    connected,
    delivered_items,
    delivery_calls,
    escrow_routes,
    final_header,
    grandpa_follower,
    scan_remarks,
    token_bridges,
)

if TYPE_CHECKING:
    from substrateinterface import Keypair

log = logging.getLogger("passerelle.attester")

MULTISIG_RACES = (
    "Multisig.NoTimepoint",
    "Multisig.UnexpectedTimepoint",
    "Multisig.AlreadyApproved",
)
"""Errors of an approval that lost a race with another signatory's (harmless; re-read state)."""


class AttesterState:
    """Counters an operator watches (exported by ``passerelle attest --json`` on exit)."""

    def __init__(self) -> None:
        self.signed: dict[int, int] = {}  # origin → newest signed index
        self.errors = 0
        self.skipped_remarks = 0
        self.approvals = 0
        self.executions = 0


async def attest_origin(
    chain: ChainConfig,
    key: bytes,
    store: CheckpointStore,
    state: AttesterState,
    *,
    poll: float = ATTESTER_POLL,
) -> None:
    """Follow one origin forever, signing each new final outbox state."""
    outbox = chain.outbox_id
    last_index = _resume_index(store, chain, key)
    proven = b""  # hash of the last final header whose outbox state was proven
    async with open_evm(chain) as evm:
        while True:
            try:
                header = await evm.final_header()
                if header.hash == proven:  # nothing new is final: no proof to fetch
                    await trio.sleep(poll)
                    continue
                outbox_state = await evm.outbox_state(outbox, header)
                proven = header.hash
            except (RpcError, AdapterError) as exc:
                state.errors += 1
                log.warning("origin %s: %s", chain.name, exc)
                await trio.sleep(poll)
                continue
            if outbox_state.count - 1 > last_index:
                last_index = await _sign_newer(
                    store,
                    state,
                    key,
                    chain,
                    Checkpoint(
                        origin=chain.domain,
                        outbox=outbox,
                        root=outbox_state.root,
                        index=outbox_state.count - 1,
                    ),
                    last_index=last_index,
                    block_number=header.number,
                    block_hash=header.hash,
                )
            await trio.sleep(poll)


def _resume_index(store: CheckpointStore, chain: ChainConfig, key: bytes) -> int:
    """The newest index this attester signed for ``chain`` (-1 if none): it never signs an
    index twice, not even after a restart."""
    previous = store.latest_own(chain.domain, chain.outbox_id, address_of(key))
    return -1 if previous is None else previous.checkpoint.index


async def _sign_newer(
    store: CheckpointStore,
    state: AttesterState,
    key: bytes,
    chain: ChainConfig,
    checkpoint: Checkpoint,
    *,
    last_index: int,
    block_number: int,
    block_hash: bytes,
) -> int:
    """Sign and publish ``checkpoint`` if it is newer than ``last_index``; the new last index."""
    if checkpoint.index <= last_index:
        return last_index
    signed = SignedCheckpoint(
        checkpoint=checkpoint,
        signer=address_of(key),
        signature=sign_checkpoint(key, checkpoint),
        block_number=block_number,
        block_hash=block_hash,
    )
    await trio.to_thread.run_sync(store.publish, signed)  # writes and fsyncs
    log.info(
        "origin %s: signed index %d root 0x%s at block %d",
        chain.name,
        checkpoint.index,
        checkpoint.root.hex(),
        block_number,
    )
    state.signed[chain.domain] = checkpoint.index
    return checkpoint.index


async def attest_substrate_origin(
    config: Config,
    chain: ChainConfig,
    key: bytes,
    store: CheckpointStore,
    state: AttesterState,
    *,
    poll: float = ATTESTER_POLL,
) -> None:
    """Follow one Substrate origin forever: rebuild its accumulator from the remarks of its
    final blocks (from ``start_block``; nothing the relayer says is used) and sign each count."""
    outbox = chain.outbox_id
    last_index = _resume_index(store, chain, key)
    routes = escrow_routes(config, chain)
    tree = IncrementalMerkleTree()
    next_block = chain.start_block
    grandpa = grandpa_follower(chain)
    async with connected(chain) as client:
        while True:
            try:
                final = await final_header(client, chain, grandpa)
                if final.number < next_block:
                    await trio.sleep(poll)
                    continue
                end = min(final.number, next_block + SCAN_CHUNK - 1)
                scan = await scan_remarks(
                    client, chain, routes, range(next_block, end + 1), tree.count, grandpa=grandpa
                )
            except VerificationError as exc:
                state.errors += 1
                log.error("origin %s: the node served an invalid proof: %s", chain.name, exc)
                await trio.sleep(poll)
                continue
            except AdapterError as exc:
                state.errors += 1
                log.warning("origin %s: %s", chain.name, exc)
                await trio.sleep(poll)
                continue
            state.skipped_remarks += len(scan.skipped)
            for found in scan.messages:
                tree.append(found.id)
            next_block = end + 1
            if tree.count and end == final.number:
                checkpoint = Checkpoint(
                    origin=chain.domain, outbox=outbox, root=tree.root(), index=tree.count - 1
                )
                last_index = await _sign_newer(
                    store,
                    state,
                    key,
                    chain,
                    checkpoint,
                    last_index=last_index,
                    block_number=end,
                    block_hash=scan.last_hash,
                )
            if end == final.number:
                await trio.sleep(poll)


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
    the Substrate destination ``chain`` — only those this attester verified itself: it signed
    the proposal's checkpoint, and every message is under that root and addressed here."""
    settings = chain.settings()
    me = bytes(keypair.public_key)
    if me not in settings.signatories:
        raise ConfigError(f"attester substrate key 0x{me.hex()} is not a multisig signatory")
    proposals = ProposalStore(config.checkpoint_store)
    bridges = token_bridges(config)
    # Per proposal (by name *and* creation time: the relayer re-proposes a batch that did not
    # execute under the same name, and that one must be acted on afresh): the batch call once
    # verified and composed, and whether we are done with it.
    batches: dict[tuple[str, float], Call] = {}
    done: set[tuple[str, float]] = set()
    first_seen: dict[bytes, float] = {}  # call hash -> when we first saw its operation open
    async with connected(chain) as client:
        while True:
            pending = await trio.to_thread.run_sync(proposals.pending, chain.domain)
            live = {(path.name, proposal.created) for path, proposal in pending}
            for stale in set(batches) - live:
                del batches[stale]
            done &= live
            for path, proposal in pending:
                key_ = (path.name, proposal.created)
                if key_ in done:
                    continue
                try:
                    batch = batches.get(key_)
                    if batch is None:
                        batch = await _verified_batch(
                            config, chain, client, proposal, store=store, key=key, bridges=bridges
                        )
                    if batch is None:
                        continue  # not a checkpoint this attester signed (yet): others approve
                    batches[key_] = batch
                    finished = await _act_on(
                        client, chain, keypair, proposal, batch, state=state, first_seen=first_seen
                    )
                except VerificationError as exc:
                    log.error("proposal %s refused: %s", path.name, exc)
                    finished = True
                except (AdapterError, ConfigError) as exc:
                    finished = False
                    if any(race in str(exc) for race in MULTISIG_RACES):
                        # Another attester approved or executed in between: read again.
                        log.info("proposal %s: another signatory was first (%s)", path.name, exc)
                        continue
                    state.errors += 1
                    log.warning("proposal %s: %s", path.name, exc)
                if finished:
                    done.add(key_)
            await trio.sleep(poll)


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
    """The proposal's ``batch_all``, if this attester signed its checkpoint and every message
    verifies under it; None if the checkpoint is not one this attester signed."""
    if not await trio.to_thread.run_sync(store.signed_by, proposal.checkpoint, address_of(key)):
        return None
    _verify_proposal(config, chain, proposal)
    settings = chain.settings()
    calls = []
    for raw in proposal.messages:
        for call in delivery_calls(decode_message(raw), settings, bridges):
            calls.append(await client.compose(call.module, call.function, call.params))
    return await client.compose("Utility", "batch_all", {"calls": calls})


def _verify_proposal(config: Config, chain: ChainConfig, proposal: Proposal) -> None:
    """Every message under the (own) checkpoint, from the configured outbox, addressed here."""
    cp = proposal.checkpoint
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
    first_seen: dict[bytes, float],
) -> bool:
    """Approve or execute ``proposal``'s batch when it is our turn; True once nothing is left
    for this attester."""
    settings = chain.settings()
    me = bytes(keypair.public_key)
    others = [s for s in settings.signatories if s != me]
    operation = await open_operation(client, settings.multisig, batch.hash)
    threshold = settings.multisig_threshold
    now = time.time()
    if operation is None:
        first_seen.pop(batch.hash, None)
        if now - proposal.created < _rank(settings, batch.hash, me, frozenset()) * ROLE_GRACE:
            return False  # the designated opener goes first
        if await _already_delivered(client, settings, proposal):
            return True
        await approve(client, keypair, others, threshold, batch)
        state.approvals += 1
        log.info("proposal %s: opened the multisig operation", proposal.name)
        return threshold == 1
    if me in operation.approvals:
        return False  # wait for the others (or for the proposal to be withdrawn)
    seen = first_seen.setdefault(batch.hash, now)
    if now - seen < _rank(settings, batch.hash, me, operation.approvals) * ROLE_GRACE:
        return False
    first_seen.pop(batch.hash, None)
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


async def run_attester(config: Config, index: int, *, poll: float = ATTESTER_POLL) -> None:
    """Run attester ``index`` of the configuration: sign every origin's checkpoints (EVM and
    Substrate) and, with a ``substrate_key``, approve deliveries to every Substrate chain."""
    if not 0 <= index < len(config.attester_keys):
        raise ConfigError(
            f"no attester {index}: the config has {len(config.attester_keys)} attester keys"
        )
    key = config.attester_keys[index].load()
    signer = address_of(key)
    if signer not in config.committee.members:
        raise ConfigError(f"attester {index} (0x{signer.hex()}) is not a committee member")
    store = CheckpointStore(config.checkpoint_store)
    state = AttesterState()
    substrate_key = config.attester_substrate_keys[index]
    async with trio.open_nursery() as nursery:
        for chain in config.chains:
            if chain.kind == "evm" and "outbox" in chain.contracts:
                nursery.start_soon(partial(attest_origin, chain, key, store, state, poll=poll))
            elif chain.kind == "substrate":
                nursery.start_soon(
                    partial(attest_substrate_origin, config, chain, key, store, state, poll=poll)
                )
                if substrate_key is None:
                    log.warning(
                        "attester %d has no substrate_key: not approving deliveries to %s",
                        index,
                        chain.name,
                    )
                    continue
                keypair = keypair_from_seed(substrate_key.load())
                nursery.start_soon(
                    partial(
                        approve_deliveries,
                        config,
                        chain,
                        key,
                        keypair,
                        store,
                        state=state,
                        poll=poll,
                    )
                )
