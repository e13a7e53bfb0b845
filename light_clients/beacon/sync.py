"""The sync-committee light client: bootstrap, then verify updates (Capella to Electra).

Follows the consensus spec's ``specs/altair/light-client/sync-protocol.md`` with the headers
and branches of Capella, Deneb and Electra (``specs/{capella,deneb,electra}/light-client/
sync-protocol.md``), for the mainnet or minimal preset and any fork schedule
(:class:`~light_clients.beacon.config.BeaconConfig`), as pure functions over a frozen
:class:`LightClientStore`: each call returns a new store and what it established, or raises
one of the errors below. Checks run cheapest first; the BLS pairing check is last.

Deliberate differences from the spec's store:

* an update that carries finality (``LightClientUpdate``, ``LightClientFinalityUpdate``) must
  have a 2/3 supermajority, or it is rejected (:class:`InsufficientParticipation`) before any
  BLS work; the spec would keep it as ``best_valid_update`` for a forced update after a
  timeout, which this client never does (no clock, no force update: safety over liveness);
* only headers of Capella, Deneb and Electra are accepted (:class:`UnsupportedFork`
  otherwise); each must have the shape of the fork its slot is in (:class:`ForkMismatch`),
  where the spec would also accept an older header upgraded to a newer container;
* the signature domain uses the version of whatever fork the config schedules at
  ``max(signature_slot, 1) - 1`` (``compute_fork_version``), as the spec does.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

from light_clients.beacon.bls import fast_aggregate_verify
from light_clients.beacon.config import (
    MAINNET,
    BeaconConfig,
    ForkLayout,
    LightClientError,
    UnsupportedFork,
)
from light_clients.beacon.ssz import is_valid_merkle_branch
from light_clients.beacon.types import (
    LightClientBootstrap,
    LightClientFinalityUpdate,
    LightClientHeader,
    LightClientOptimisticUpdate,
    LightClientUpdate,
    MalformedBeaconData,
    SyncAggregate,
    SyncCommittee,
)
from light_clients.errors import HeaderHashMismatch
from light_clients.hexstr import to_hex

__all__ = [
    "DOMAIN_SYNC_COMMITTEE",
    "MAINNET",
    "BeaconConfig",
    "BootstrapMismatch",
    "ConflictingSyncCommittee",
    "ForkMismatch",
    "InsufficientParticipation",
    "InvalidExecutionBranch",
    "InvalidFinalityBranch",
    "InvalidSyncCommitteeBranch",
    "InvalidSyncCommitteeSignature",
    "IrrelevantUpdate",
    "LightClientError",
    "LightClientStore",
    "SlotOrderError",
    "UnsupportedFork",
    "UpdateOutcome",
    "WrongSyncCommitteePeriod",
    "bootstrap",
    "check_header",
    "compute_domain",
    "compute_signing_root",
    "process_finality_update",
    "process_optimistic_update",
    "process_update",
    "sync_committee_period",
]

DOMAIN_SYNC_COMMITTEE = bytes.fromhex("07000000")
MIN_SYNC_COMMITTEE_PARTICIPANTS = 1


# --------------------------------------------------------------------------- errors


class BootstrapMismatch(HeaderHashMismatch):
    """The bootstrap header does not hash to the trusted block root."""


class ForkMismatch(LightClientError):
    """A header whose shape is not the one of the fork its slot is in (a Deneb-era header
    without the blob-gas fields, a Capella-era header with them)."""


class InvalidExecutionBranch(LightClientError):
    """The execution payload header is not the one in the beacon block's body."""


class InvalidSyncCommitteeBranch(LightClientError):
    """A sync committee is not the one in the header's state."""


class InvalidFinalityBranch(LightClientError):
    """The finalized header is not the one the attested state finalized."""


class InsufficientParticipation(LightClientError):
    """Too few sync-committee members signed (none, or under 2/3 for finality)."""


class SlotOrderError(LightClientError):
    """Not ``current >= signature slot > attested slot >= finalized slot``."""


class WrongSyncCommitteePeriod(LightClientError):
    """The update is signed in a period whose committee the store does not know."""


class IrrelevantUpdate(LightClientError):
    """The update attests nothing newer than the store's finalized header."""


class ConflictingSyncCommittee(LightClientError):
    """The update's next sync committee differs from the one the store already holds."""


class InvalidSyncCommitteeSignature(LightClientError):
    """The aggregate signature does not verify over the participants' keys."""


# --------------------------------------------------------------------------- config and store


@dataclass(frozen=True)
class LightClientStore:
    """What the light client trusts: the spec's ``LightClientStore`` without the force-update
    fields (``best_valid_update``)."""

    config: BeaconConfig
    finalized_header: LightClientHeader
    optimistic_header: LightClientHeader
    current_sync_committee: SyncCommittee
    next_sync_committee: SyncCommittee | None
    previous_max_active_participants: int = 0
    current_max_active_participants: int = 0

    @property
    def period(self) -> int:
        """The sync-committee period of the finalized header."""
        return self.config.period(self.finalized_header.beacon.slot)


@dataclass(frozen=True)
class UpdateOutcome:
    """What an accepted update established."""

    store: LightClientStore
    participants: int
    signing_root: bytes
    finalized_advanced: bool
    optimistic_advanced: bool
    next_sync_committee_learned: bool
    sync_committee_rotated: bool


def sync_committee_period(slot: int, config: BeaconConfig = MAINNET) -> int:
    """``compute_sync_committee_period_at_slot`` (of ``config``'s preset)."""
    return config.period(slot)


def compute_domain(fork_version: bytes, genesis_validators_root: bytes) -> bytes:
    """The sync committee's signature domain: type ‖ ``fork_data_root[:28]``."""
    fork_data_root = hashlib.sha256(fork_version + bytes(28) + genesis_validators_root).digest()
    return DOMAIN_SYNC_COMMITTEE + fork_data_root[:28]


def compute_signing_root(object_root: bytes, domain: bytes) -> bytes:
    """``hash_tree_root(SigningData(object_root, domain))``."""
    return hashlib.sha256(object_root + domain).digest()


# --------------------------------------------------------------------------- checks


def check_header(config: BeaconConfig, header: LightClientHeader, what: str) -> ForkLayout:
    """``is_valid_light_client_header``: a fork this client verifies, the shape of that fork,
    and the execution payload header in the beacon block's body. Returns the fork's layout
    (the depths of the branches into this header's state)."""
    layout = config.layout_at_slot(header.beacon.slot, what)
    if layout.blob_gas != (header.execution.blob_gas_used is not None):
        raise ForkMismatch(
            f"{what} slot {header.beacon.slot} is in {layout.name} but its execution header "
            f"{'lacks' if layout.blob_gas else 'has'} the blob-gas fields"
        )
    gindex = layout.execution_payload_gindex
    if not is_valid_merkle_branch(
        header.execution.hash_tree_root(),
        header.execution_branch,
        layout.depth(gindex),
        layout.index(gindex),
        header.beacon.body_root,
    ):
        raise InvalidExecutionBranch(
            f"{what} execution payload is not in body {to_hex(header.beacon.body_root)}"
        )
    return layout


def _check_committee_size(config: BeaconConfig, size: int, what: str) -> None:
    """An object parsed under another preset than the store's cannot be compared bit by bit."""
    expected = config.preset.sync_committee_size
    if size != expected:
        raise MalformedBeaconData(
            f"{what} has {size} members, the {config.preset.name} preset's committee {expected}"
        )


def bootstrap(
    data: LightClientBootstrap, trusted_block_root: bytes, config: BeaconConfig
) -> LightClientStore:
    """``initialize_light_client_store``: trust ``data`` only if its header is the checkpoint."""
    root = data.header.beacon.hash_tree_root()
    if root != trusted_block_root:
        raise BootstrapMismatch(
            f"bootstrap header root {to_hex(root)} is not the trusted {to_hex(trusted_block_root)}"
        )
    layout = check_header(config, data.header, "bootstrap header")
    committee = data.current_sync_committee
    _check_committee_size(config, len(committee.pubkeys), "bootstrap current sync committee")
    gindex = layout.current_sync_committee_gindex
    if not is_valid_merkle_branch(
        committee.hash_tree_root(),
        data.current_sync_committee_branch,
        layout.depth(gindex),
        layout.index(gindex),
        data.header.beacon.state_root,
    ):
        raise InvalidSyncCommitteeBranch(
            "bootstrap current sync committee is not in the header's state"
        )
    return LightClientStore(
        config=config,
        finalized_header=data.header,
        optimistic_header=data.header,
        current_sync_committee=data.current_sync_committee,
        next_sync_committee=None,
    )


@dataclass(frozen=True)
class _Update:
    """The three update kinds as one: absent parts are None."""

    attested_header: LightClientHeader
    next_sync_committee: SyncCommittee | None
    next_sync_committee_branch: tuple[bytes, ...]
    finalized_header: LightClientHeader | None
    finality_branch: tuple[bytes, ...]
    sync_aggregate: SyncAggregate
    signature_slot: int


def _validate(store: LightClientStore, update: _Update, current_slot: int | None) -> bytes:
    """``validate_light_client_update``; returns the signing root that was verified."""
    config = store.config
    aggregate = update.sync_aggregate
    size = config.preset.sync_committee_size
    _check_committee_size(config, len(aggregate.bits), "sync aggregate")
    participants = aggregate.participants
    if participants < MIN_SYNC_COMMITTEE_PARTICIPANTS:
        raise InsufficientParticipation("no sync-committee member signed")
    finalized = update.finalized_header
    if finalized is not None and participants * 3 < size * 2:
        raise InsufficientParticipation(
            f"{participants} of {size} signers is under 2/3, needed for finality"
        )

    attested = update.attested_header
    attested_slot = attested.beacon.slot
    finalized_slot = attested_slot if finalized is None else finalized.beacon.slot
    if not update.signature_slot > attested_slot >= finalized_slot:
        raise SlotOrderError(
            f"signature slot {update.signature_slot} > attested slot {attested_slot} >= "
            f"finalized slot {finalized_slot} does not hold"
        )
    if current_slot is not None and update.signature_slot > current_slot:
        raise SlotOrderError(
            f"signature slot {update.signature_slot} is after the current slot {current_slot}"
        )
    layout = check_header(config, attested, "attested header")

    store_period = store.period
    signature_period = config.period(update.signature_slot)
    allowed = (
        (store_period,)
        if store.next_sync_committee is None
        else (
            store_period,
            store_period + 1,
        )
    )
    if signature_period not in allowed:
        raise WrongSyncCommitteePeriod(
            f"signature period {signature_period}, the store knows committees for {allowed}"
        )

    attested_period = config.period(attested_slot)
    learns_next = (
        store.next_sync_committee is None
        and update.next_sync_committee is not None
        and attested_period == store_period
    )
    if not (attested_slot > store.finalized_header.beacon.slot or learns_next):
        raise IrrelevantUpdate(
            f"attested slot {attested_slot} is not after the finalized slot "
            f"{store.finalized_header.beacon.slot}"
        )

    if finalized is not None:
        check_header(config, finalized, "finalized header")
        # The branch goes into the attested state, so its depth is the attested fork's.
        gindex = layout.finalized_root_gindex
        if not is_valid_merkle_branch(
            finalized.beacon.hash_tree_root(),
            update.finality_branch,
            layout.depth(gindex),
            layout.index(gindex),
            attested.beacon.state_root,
        ):
            raise InvalidFinalityBranch(
                f"finalized header at slot {finalized.beacon.slot} is not the attested "
                "state's finalized checkpoint"
            )

    if update.next_sync_committee is not None:
        _check_committee_size(
            config, len(update.next_sync_committee.pubkeys), "next sync committee"
        )
        if (
            attested_period == store_period
            and store.next_sync_committee is not None
            and update.next_sync_committee.root != store.next_sync_committee.root
        ):
            raise ConflictingSyncCommittee(
                f"next sync committee for period {store_period + 1} differs from the known one"
            )
        gindex = layout.next_sync_committee_gindex
        if not is_valid_merkle_branch(
            update.next_sync_committee.hash_tree_root(),
            update.next_sync_committee_branch,
            layout.depth(gindex),
            layout.index(gindex),
            attested.beacon.state_root,
        ):
            raise InvalidSyncCommitteeBranch(
                "next sync committee is not in the attested header's state"
            )

    # compute_fork_version(compute_epoch_at_slot(max(signature_slot, 1) - 1)): the committee
    # members sign during the slot before the block that includes their aggregate, so they
    # sign with the version of that earlier slot; a fork's first block carries a signature
    # under the previous fork's version.
    fork_version = config.fork_version_at_slot(
        max(update.signature_slot, 1) - 1, f"update signed at slot {update.signature_slot}:"
    )
    committee = (
        store.current_sync_committee
        if signature_period == store_period
        else store.next_sync_committee
    )
    assert committee is not None  # the period check above: next is known when used
    keys = [point for point, bit in zip(committee.points, aggregate.bits, strict=True) if bit]
    domain = compute_domain(fork_version, config.genesis_validators_root)
    signing_root = compute_signing_root(attested.beacon.hash_tree_root(), domain)
    if not fast_aggregate_verify(keys, signing_root, aggregate.signature):
        raise InvalidSyncCommitteeSignature(
            f"sync aggregate of {participants} signers does not verify for attested slot "
            f"{attested_slot} (signature period {signature_period})"
        )
    return signing_root


def _process(store: LightClientStore, update: _Update, current_slot: int | None) -> UpdateOutcome:
    """``process_light_client_update`` without ``best_valid_update``."""
    signing_root = _validate(store, update, current_slot)
    participants = update.sync_aggregate.participants
    current_max = max(store.current_max_active_participants, participants)
    # get_safety_threshold: half the larger of the two periods' high-water marks (not their
    # mean: with the mean, a full committee of 512 would need 513 signers to move it).
    safety_threshold = max(store.previous_max_active_participants, current_max) // 2
    attested = update.attested_header
    optimistic = store.optimistic_header
    optimistic_advanced = (
        participants > safety_threshold and attested.beacon.slot > optimistic.beacon.slot
    )
    if optimistic_advanced:
        optimistic = attested
    new = replace(store, optimistic_header=optimistic, current_max_active_participants=current_max)

    finalized = update.finalized_header
    learned = rotated = advanced = False
    # A finality-carrying update has a supermajority (checked in _validate).
    if finalized is not None:
        finalized_period = new.config.period(finalized.beacon.slot)
        learns_next = (
            new.next_sync_committee is None
            and update.next_sync_committee is not None
            and finalized_period == new.config.period(attested.beacon.slot)
        )
        advanced = finalized.beacon.slot > new.finalized_header.beacon.slot
        if advanced or learns_next:
            new, learned, rotated = _apply(new, update, finalized, finalized_period)
    return UpdateOutcome(
        store=new,
        participants=participants,
        signing_root=signing_root,
        finalized_advanced=advanced,
        optimistic_advanced=optimistic_advanced,
        next_sync_committee_learned=learned,
        sync_committee_rotated=rotated,
    )


def _apply(
    store: LightClientStore,
    update: _Update,
    finalized: LightClientHeader,
    finalized_period: int,
) -> tuple[LightClientStore, bool, bool]:
    """``apply_light_client_update``; returns the store, committee learned, rotated."""
    learned = rotated = False
    if store.next_sync_committee is None:
        # _validate: signed in the store's period, so finalized_period == store period.
        store = replace(store, next_sync_committee=update.next_sync_committee)
        learned = update.next_sync_committee is not None
    elif finalized_period == store.period + 1:
        store = replace(
            store,
            current_sync_committee=store.next_sync_committee,
            next_sync_committee=update.next_sync_committee,
            previous_max_active_participants=store.current_max_active_participants,
            current_max_active_participants=0,
        )
        rotated = True
        learned = update.next_sync_committee is not None
    if finalized.beacon.slot > store.finalized_header.beacon.slot:
        store = replace(store, finalized_header=finalized)
        if finalized.beacon.slot > store.optimistic_header.beacon.slot:
            store = replace(store, optimistic_header=finalized)
    return store, learned, rotated


def process_update(
    store: LightClientStore, update: LightClientUpdate, *, current_slot: int | None = None
) -> UpdateOutcome:
    """Verify a ``LightClientUpdate`` (finality and next sync committee) and apply it."""
    return _process(
        store,
        _Update(
            attested_header=update.attested_header,
            next_sync_committee=update.next_sync_committee,
            next_sync_committee_branch=update.next_sync_committee_branch,
            finalized_header=update.finalized_header,
            finality_branch=update.finality_branch,
            sync_aggregate=update.sync_aggregate,
            signature_slot=update.signature_slot,
        ),
        current_slot,
    )


def process_finality_update(
    store: LightClientStore,
    update: LightClientFinalityUpdate,
    *,
    current_slot: int | None = None,
) -> UpdateOutcome:
    """Verify a ``LightClientFinalityUpdate`` and apply it."""
    return _process(
        store,
        _Update(
            attested_header=update.attested_header,
            next_sync_committee=None,
            next_sync_committee_branch=(),
            finalized_header=update.finalized_header,
            finality_branch=update.finality_branch,
            sync_aggregate=update.sync_aggregate,
            signature_slot=update.signature_slot,
        ),
        current_slot,
    )


def process_optimistic_update(
    store: LightClientStore,
    update: LightClientOptimisticUpdate,
    *,
    current_slot: int | None = None,
) -> UpdateOutcome:
    """Verify a ``LightClientOptimisticUpdate``: it can only move the optimistic header."""
    return _process(
        store,
        _Update(
            attested_header=update.attested_header,
            next_sync_committee=None,
            next_sync_committee_branch=(),
            finalized_header=None,
            finality_branch=(),
            sync_aggregate=update.sync_aggregate,
            signature_slot=update.signature_slot,
        ),
        current_slot,
    )
