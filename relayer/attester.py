"""The attester: signs an origin's outbox checkpoints once the light clients accept them.

Chain-neutral: every origin is read through its family's :class:`relayer.family.Origin`. For
every configured origin, in a loop:

1. take the newest block the chain's finality policy accepts, its hash checked by the family's
   light client (on EVM chains with ``rpc_quorum`` k, reported final with that hash by k
   distinct endpoints; on Substrate chains with a GRANDPA checkpoint, proven final);
2. check that the block of its last signed checkpoint is still canonical, halting with
   :class:`OriginReorged` if not (a reorg below the finality policy: the root it signed may be
   gone from the chain, and signing on would build on it);
3. have the family prove the outbox's count and root at that block
   (:meth:`~relayer.family.Origin.outbox_state`: on EVM chains from the outbox's storage under
   the header's state root; on Substrate chains from the attester's own scan of every final
   block's remarks, nothing the relayer says being used);
4. if the count grew, sign ``(origin, outbox, root, count - 1)`` and publish it to the
   checkpoint store.

A family may give an attester more to do (:meth:`~relayer.family.ChainFamily.attester_duties`):
a Substrate destination's multisig approvals live in :mod:`relayer.families.substrate.approval`.

Nothing here trusts a ``root()`` call, a log or the relayer. An attester never signs two roots
for the same index (the store refuses, and the attester halts: that is a reorg below the
finality policy, docs/threats.md T21 — an operator must look).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import partial

import trio

from adapters.errors import AdapterError
from adapters.rpc import EndpointHealth
from adapters.signing import SignerError, call_signer
from light_clients.committee import Checkpoint
from light_clients.errors import VerificationError
from relayer.checkpoints import (
    CheckpointStore,
    CheckpointStoreBusy,
    CheckpointStoreError,
    SignedCheckpoint,
    open_checkpoint_store,
)
from relayer.config import ATTESTER_POLL, ChainConfig, Config, ConfigError
from relayer.family import Origin, family_of
from relayer.metrics import loops_readiness, render_attester, serve_metrics
from relayer.signer import Signer, evm_signer, fixed_address

log = logging.getLogger("passerelle.attester")


@dataclass
class AttesterCounters:
    """What an attester has done since it started (``passerelle_attester_<field>_total``)."""

    signatures: int = 0
    """Checkpoints signed and published."""
    errors: int = 0
    """Polls that failed: a node down or lying, a proof the light clients refused, a signer
    that refused, hung or answered with another key's signature."""
    skipped_remarks: int = 0
    """Remarks of a Substrate origin its rules refused (attempted abuse shows here)."""
    approvals: int = 0
    """Multisig approvals it sent (Substrate destinations)."""
    executions: int = 0
    """Multisig operations it executed as the last signatory needed."""
    cancellations: int = 0
    """Stale multisig operations of its own it cancelled."""


class AttesterState(AttesterCounters):
    """An attester's counters, the newest index it signed per origin domain, and the health of
    the RPC endpoints it reads: what ``passerelle attest --metrics-port`` serves."""

    def __init__(self) -> None:
        super().__init__()
        self.signed: dict[int, int] = {}
        self.endpoints: dict[str, Sequence[EndpointHealth]] = {}

    def exposition(self, config: Config) -> str:
        """The Prometheus text of this attester (origins named as configured)."""
        names = {chain.domain: chain.name for chain in config.chains}
        counters = AttesterCounters(**{f.name: getattr(self, f.name) for f in fields(self)})
        signed = {names.get(domain, str(domain)): index for domain, index in self.signed.items()}
        return render_attester(counters, signed, self.endpoints)


class OriginReorged(CheckpointStoreError):
    """A block this attester signed a checkpoint from is no longer canonical: the origin
    reorganised below its finality policy. The signed root may not be the chain's any more, and
    every later signature would build on it, so the attester stops; an operator must look
    (docs/threats.md T21). A :class:`CheckpointStoreError`: the attester would contradict itself."""


@dataclass
class OriginProgress:
    """Where an attester stands on one origin."""

    last_index: int
    """The newest index it signed (-1: none)."""
    last_block: tuple[int, bytes] | None
    """(number, hash) of the block that checkpoint was read at, if provably its own (signed by
    it: the store is shared, and an edited block would make it halt for nothing)."""
    proven: bytes = b""
    """Hash of the last final header whose outbox state was proven (nothing new to prove)."""


async def attest_origin(
    config: Config,
    chain: ChainConfig,
    signer: Signer,
    store: CheckpointStore,
    state: AttesterState,
    *,
    poll: float = ATTESTER_POLL,
) -> None:
    """Follow one origin forever, signing each new final outbox state with ``signer``."""
    progress = await trio.to_thread.run_sync(_resume, store, chain, signer.address)
    if progress.last_index >= 0:  # the metric from the start, not from the next signature
        state.signed[chain.domain] = progress.last_index
    role = f"attester-0x{signer.address.hex()}"
    async with family_of(chain).open_origin(config, chain, role=role) as origin:
        state.endpoints[f"{chain.name}/attest"] = origin.endpoints
        while True:
            await attest_once(origin, chain, signer, store, state, progress=progress)
            await trio.sleep(poll)


async def attest_once(
    origin: Origin,
    chain: ChainConfig,
    signer: Signer,
    store: CheckpointStore,
    state: AttesterState,
    *,
    progress: OriginProgress,
) -> None:
    """One poll of an origin: sign its final outbox state if the count grew.

    A node that fails or lies costs a warning and a retry at the next poll (nothing is signed
    from an answer the light clients refuse), and so does a signer that refuses, hangs or
    answers with a signature that is not its own (nothing is published);
    :class:`OriginReorged` ends the attester.
    """
    try:
        head = await origin.final_head()
        if head.hash == progress.proven:  # nothing new is final: no proof to fetch
            return
        await _check_still_canonical(origin, chain, progress)
        outbox_state = await origin.outbox_state(head)
        progress.proven = head.hash
        state.skipped_remarks += outbox_state.skipped
    except VerificationError as exc:
        state.errors += 1
        log.error("origin %s: the node served an invalid proof: %s", chain.name, exc)
        return
    except AdapterError as exc:  # RpcError, MalformedAnswer too
        state.errors += 1
        log.warning("origin %s: %s", chain.name, exc)
        return
    if outbox_state.count - 1 > progress.last_index:
        try:
            progress.last_index = await _sign_newer(
                store,
                state,
                signer,
                chain,
                Checkpoint(
                    origin=chain.domain,
                    outbox=chain.outbox_id,
                    root=outbox_state.root,
                    index=outbox_state.count - 1,
                ),
                last_index=progress.last_index,
                block_number=head.number,
                block_hash=head.hash,
            )
        except (CheckpointStoreBusy, SignerError) as exc:
            # A held lock, a server or a signer that did not answer (or a signature that is
            # not ours): nothing was written; the next poll proves the state again and signs
            # it (the same root, or a newer one) — with the same key, there is no other.
            state.errors += 1
            progress.proven = b""
            log.warning("origin %s: %s; trying again at the next poll", chain.name, exc)
            return
        progress.last_block = (head.number, head.hash)


async def _check_still_canonical(
    origin: Origin, chain: ChainConfig, progress: OriginProgress
) -> None:
    """:class:`OriginReorged` if the block of the last signed checkpoint was replaced (as the
    origin's :meth:`~relayer.family.Origin.block_hash` vouches: agreed by the RPC quorum,
    or proven by GRANDPA); AdapterError if that cannot be told now."""
    if progress.last_block is None:
        return
    number, signed_hash = progress.last_block
    canonical = await origin.block_hash(number)
    if canonical is None:  # a lagging or resyncing node: no verdict either way
        raise AdapterError(f"cannot check block {number} (of index {progress.last_index}): absent")
    if canonical != signed_hash:
        raise OriginReorged(
            f"origin {chain.name}: block {number}, at which this attester signed index "
            f"{progress.last_index}, is now 0x{canonical.hex()} (was 0x{signed_hash.hex()}): "
            f"a reorg deeper than the finality policy {chain.finality}; not signing any more "
            "until an operator has looked"
        )


def _resume(store: CheckpointStore, chain: ChainConfig, member: bytes) -> OriginProgress:
    """Where the attester of address ``member`` left ``chain``: it never signs an index twice,
    not even after a restart, and checks that the block of its last signature is still
    canonical."""
    previous = store.latest_own(chain.domain, chain.outbox_id, member)
    if previous is None:
        return OriginProgress(last_index=-1, last_block=None)
    block = None
    if previous.block_is_signed():
        block = (previous.block_number, previous.block_hash)
    else:
        log.warning(
            "origin %s: the block of index %d carries no block signature of ours: "
            "no reorg check below it until the next signature",
            chain.name,
            previous.checkpoint.index,
        )
    return OriginProgress(last_index=previous.checkpoint.index, last_block=block)


async def _sign_newer(
    store: CheckpointStore,
    state: AttesterState,
    signer: Signer,
    chain: ChainConfig,
    checkpoint: Checkpoint,
    *,
    last_index: int,
    block_number: int,
    block_hash: bytes,
) -> int:
    """Sign and publish ``checkpoint`` if it is newer than ``last_index``; the new last index.
    SignerError (nothing published) if the signer refuses, hangs past
    ``adapters.signing.SIGN_TIMEOUT`` or answers with a signature that is not its own."""
    if checkpoint.index <= last_index:
        return last_index
    create = partial(
        SignedCheckpoint.create,
        signer,
        checkpoint,
        block_number=block_number,
        block_hash=block_hash,
    )
    signed = await call_signer(signer, create)
    await trio.to_thread.run_sync(store.publish, signed)  # writes and fsyncs
    log.info(
        "origin %s: signed index %d root 0x%s at block %d",
        chain.name,
        checkpoint.index,
        checkpoint.root.hex(),
        block_number,
    )
    state.signed[chain.domain] = checkpoint.index
    state.signatures += 1
    return checkpoint.index


@dataclass(frozen=True)
class AttesterContext:
    """What a family's extra attester duties may use (:meth:`ChainFamily.attester_duties`)."""

    config: Config
    index: int
    """This attester's position in ``[[attesters]]`` (its keys of other kinds are there too)."""
    signer: Signer
    """Its committee signer (secp256k1), address fixed at start (:func:`attester_signer`):
    ``signer.address`` is what its checkpoint signatures recover to."""
    store: CheckpointStore
    state: AttesterState
    poll: float


def attester_signer(config: Config, index: int) -> Signer:
    """The committee signer of attester ``index``, its address fixed now
    (:func:`relayer.signer.fixed_address`) and checked to be a committee member: every
    signature it publishes from then on must recover to that address. ConfigError (one line)
    if there is no such attester, its key does not load, or it is not a member."""
    if not 0 <= index < len(config.attester_keys):
        raise ConfigError(
            f"no attester {index}: the config has {len(config.attester_keys)} attester keys"
        )
    try:
        signer = fixed_address(evm_signer(config.attester_keys[index]))
    except ValueError as exc:  # a signer whose address is no address
        raise ConfigError(f"attester {index}: {exc}") from None
    if signer.address not in config.committee.members:
        raise ConfigError(f"attester {index} (0x{signer.address.hex()}) is not a committee member")
    return signer


async def run_attester(
    config: Config, index: int, *, poll: float = ATTESTER_POLL, metrics_port: int | None = None
) -> None:
    """Run attester ``index`` of the configuration: sign every origin's checkpoints, and do
    what each chain's family adds (approving deliveries to a Substrate chain). With
    ``metrics_port``, serve ``/metrics``, ``/healthz`` and ``/readyz`` on 127.0.0.1."""
    signer = attester_signer(config, index)
    store = open_checkpoint_store(config.checkpoint_location)
    state = AttesterState()
    context = AttesterContext(config, index, signer, store, state, poll)
    async with trio.open_nursery() as nursery:
        if metrics_port is not None:

            async def snapshot() -> str:
                return state.exposition(config)

            async def ready() -> str | None:
                return loops_readiness(nursery)

            await nursery.start(serve_metrics, metrics_port, snapshot, ready)
        for chain in config.chains:
            if chain.is_origin:
                nursery.start_soon(
                    partial(attest_origin, config, chain, signer, store, state, poll=poll),
                    name=f"{chain.name}_attest_loop",
                )
            for duty in family_of(chain).attester_duties(chain, context):
                nursery.start_soon(duty, name=f"{chain.name}_duty_loop")
